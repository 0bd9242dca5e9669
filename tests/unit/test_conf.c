/* test_conf.c - unit tests of the configuration loader (src/conf.c). */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lambdagate/apikey.h"
#include "lambdagate/buf.h"
#include "lambdagate/conf.h"
#include "lambdagate/jwks.h"
#include "lambdagate/router.h"

/* Inline configs are loaded as if they were this file, so that relative
 * paths in them resolve against tests/data/conf like the files there. */
#define CONF_DIR LG_TEST_DATA "/conf"

/* A file loaded by path gets its absolute, normalized name (realpath), and
 * relative paths in it resolve against that: CONF_DIR may hold "..". */
static const char *real(const char *suffix)
{
    static char out[4][4096];
    static int next;
    char *dir = realpath(CONF_DIR, NULL);
    ck_assert_ptr_nonnull(dir);
    char *buf = out[next++ % 4];
    snprintf(buf, sizeof(out[0]), "%s%s", dir, suffix);
    free(dir);
    return buf;
}
#define INLINE_PATH CONF_DIR "/inline.json"
#define EXAMPLE     LG_TEST_DATA "/../../config/lambdagate.example.json"

/* The two lines that make a config valid, so that a test adds only the
 * line it is about. HEAD is lines 1-2; the test's own lines start at 3. */
#define HEAD                                                                                       \
    "{\n"                                                                                          \
    "  \"listen\": [ { \"address\": \"127.0.0.1:8080\" } ],\n"
#define ROUTES "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\" } ]\n"

static struct lg_conf *load(const char *text, struct lg_conf_errors *errors)
{
    return lg_conf_load_text(INLINE_PATH, text, strlen(text), errors);
}

/* Print the errors of a failed expectation, to see what happened instead. */
static void dump(const struct lg_conf_errors *e)
{
    lg_conf_errors_print(e, "conf", stderr);
}

/* Load a file that must load; fail with its errors otherwise. Caller
 * releases with lg_conf_unref(). */
static struct lg_conf *load_ok_file(const char *path)
{
    struct lg_conf_errors e;
    struct lg_conf *c = lg_conf_load(path, &e);
    if (c == NULL)
        dump(&e);
    ck_assert_msg(c != NULL, "%s did not load", path);
    ck_assert_uint_eq(e.count, 0);
    lg_conf_errors_free(&e);
    return c;
}

static struct lg_conf *load_ok(const char *text)
{
    struct lg_conf_errors e;
    struct lg_conf *c = load(text, &e);
    if (c == NULL)
        dump(&e);
    ck_assert_msg(c != NULL, "config did not load:\n%s", text);
    ck_assert_uint_eq(e.count, 0);
    lg_conf_errors_free(&e);
    return c;
}

struct expected {
    int line;
    const char *message;
};

/* Loading text must fail with exactly these errors, in this order. */
static void expect_errors(const char *text, const struct expected *exp, size_t n)
{
    struct lg_conf_errors e;
    struct lg_conf *c = load(text, &e);
    if (c != NULL)
        lg_conf_unref(c);
    ck_assert_msg(c == NULL, "config loaded but should not:\n%s", text);
    if (e.count != n)
        dump(&e);
    ck_assert_uint_eq(e.count, n);
    for (size_t i = 0; i < n; i++) {
        if (e.items[i].line != exp[i].line || strcmp(e.items[i].message, exp[i].message) != 0)
            dump(&e);
        ck_assert_int_eq(e.items[i].line, exp[i].line);
        ck_assert_str_eq(e.items[i].message, exp[i].message);
    }
    lg_conf_errors_free(&e);
}

static void expect_error(const char *text, int line, const char *message)
{
    struct expected exp = {line, message};
    expect_errors(text, &exp, 1);
}

static int port_of(const struct lg_conf_address *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

/* ------------------------------------------------------------------------
 * Valid files
 * ------------------------------------------------------------------------ */

START_TEST(test_minimal_defaults)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/minimal.json");
    ck_assert_int_eq(c->refcount, 1);
    ck_assert_str_eq(c->path, real("/minimal.json"));

    ck_assert_uint_eq(c->nlisten, 1);
    const struct lg_conf_listen *l = &c->listen[0];
    ck_assert_str_eq(l->address.text, "127.0.0.1:8080");
    ck_assert_int_eq(l->address.sa.ss_family, AF_INET);
    ck_assert_uint_eq(l->address.salen, sizeof(struct sockaddr_in));
    ck_assert_int_eq(port_of(&l->address), 8080);
    ck_assert(!l->tls);
    ck_assert_ptr_null(l->certificate);
    ck_assert_ptr_null(l->private_key);
    ck_assert_ptr_null(l->ssl_ctx);
    ck_assert_int_eq(l->line, 2);

    ck_assert(!c->admin_set);
    ck_assert_ptr_null(c->admin.text);
    ck_assert_int_eq(c->workers, 0);
    ck_assert_int_eq(c->shutdown_timeout_ms, 30000);
    ck_assert_str_eq(c->access_log, "-");

    const struct lg_conf_lambda *la = &c->lambda;
    ck_assert_str_eq(la->region, "us-east-1");
    ck_assert(!la->endpoint_set);
    ck_assert_str_eq(la->endpoint.url, "https://lambda.us-east-1.amazonaws.com");
    ck_assert(la->endpoint.tls);
    ck_assert_str_eq(la->endpoint.host, "lambda.us-east-1.amazonaws.com");
    ck_assert_uint_eq(la->endpoint.port, 443);
    ck_assert_str_eq(la->endpoint.authority, "lambda.us-east-1.amazonaws.com");
    ck_assert(!la->credentials_set);
    ck_assert_ptr_null(la->access_key_id);
    ck_assert_ptr_null(la->secret_access_key);
    ck_assert_ptr_null(la->session_token);
    ck_assert_ptr_null(la->ca_file);
    ck_assert_int_eq(la->timeout_ms, 29000);
    ck_assert_int_eq(la->max_connections, 64);
    ck_assert_ptr_nonnull(la->ssl_ctx);

    ck_assert_str_eq(c->redis.host, "127.0.0.1");
    ck_assert_int_eq(c->redis.port, 6379);
    ck_assert_ptr_null(c->redis.password);
    ck_assert_int_eq(c->redis.db, 0);
    ck_assert_int_eq(c->redis.timeout_ms, 100);
    ck_assert_str_eq(c->redis.prefix, "lg:");

    const struct lg_conf_limits *li = &c->limits;
    ck_assert_int_eq(li->max_connections, 10000);
    ck_assert_int_eq(li->max_connections_per_ip, 256);
    ck_assert_int_eq(li->max_header_bytes, 16384);
    ck_assert_int_eq(li->max_body_bytes, 6291456);
    ck_assert_int_eq(li->header_timeout_ms, 10000);
    ck_assert_int_eq(li->body_timeout_ms, 30000);
    ck_assert_int_eq(li->idle_timeout_ms, 60000);
    ck_assert_int_eq(li->max_inflight, 1024);
    ck_assert(li->per_ip_enabled);
    ck_assert_double_eq(li->per_ip.rate, 100);
    ck_assert_int_eq(li->per_ip.burst, 200);
    ck_assert_ptr_null(li->allow);
    ck_assert_uint_eq(li->nallow, 0);
    ck_assert_ptr_null(li->deny);
    ck_assert_uint_eq(li->ndeny, 0);

    ck_assert_ptr_null(c->auth.jwt);
    ck_assert_ptr_null(c->auth.api_keys_file);

    ck_assert_int_eq(c->throttle.store, LG_STORE_LOCAL);
    ck_assert(c->throttle.default_enabled);
    ck_assert_double_eq(c->throttle.default_rate.rate, 10);
    ck_assert_int_eq(c->throttle.default_rate.burst, 20);
    ck_assert(!c->throttle.global_enabled);

    ck_assert_int_eq(c->cache.store, LG_STORE_LOCAL);
    ck_assert_int_eq(c->cache.max_bytes, 67108864);
    ck_assert_int_eq(c->cache.ttl_s, 300);
    ck_assert_int_eq(c->cache.invalidation, LG_INVALIDATE_AUTHENTICATED);

    ck_assert_uint_eq(c->nroutes, 1);
    const struct lg_conf_route *r = &c->routes[0];
    ck_assert_str_eq(r->method, "GET");
    ck_assert_str_eq(r->path, "/hello");
    ck_assert_str_eq(r->route_key, "GET /hello");
    ck_assert_str_eq(r->function, "hello");
    ck_assert_str_eq(r->function_path, "hello");
    ck_assert_str_eq(r->invoke_path, "/2015-03-31/functions/hello/invocations");
    ck_assert_ptr_null(r->invoke_query);
    ck_assert_ptr_null(r->qualifier);
    ck_assert_str_eq(r->region, "us-east-1");
    ck_assert_ptr_null(r->account_id);
    ck_assert_int_eq(r->invocation, LG_INVOKE_SYNC);
    ck_assert_int_eq(r->payload_format, LG_PAYLOAD_V2);
    ck_assert_int_eq(r->auth, LG_AUTH_NONE);
    ck_assert_ptr_null(r->scopes);
    ck_assert_uint_eq(r->nscopes, 0);
    ck_assert_int_eq(r->throttle_presence, LG_CONF_ABSENT);
    ck_assert_ptr_null(r->cache);
    ck_assert_int_eq(r->timeout_ms, 29000);
    ck_assert_ptr_null(r->cors);
    ck_assert_uint_eq(r->index, 0);
    ck_assert_int_eq(r->line, 3);

    ck_assert_uint_eq(c->nendpoints, 1);
    ck_assert_str_eq(c->endpoints[0].url, "https://lambda.us-east-1.amazonaws.com");
    ck_assert_ptr_eq(r->endpoint, &c->endpoints[0]);

    ck_assert_ptr_nonnull(c->router);
    struct lg_router_match m;
    ck_assert_int_eq(lg_router_match(c->router, "GET", "/hello", 6, &m), LG_ROUTER_FOUND);
    ck_assert_ptr_eq(m.route, r);
    lg_router_match_clear(&m);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_full_config)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/full.json");

    ck_assert_uint_eq(c->nlisten, 2);
    ck_assert(!c->listen[0].tls);
    const struct lg_conf_listen *l = &c->listen[1];
    ck_assert_str_eq(l->address.text, "[::1]:8443");
    ck_assert_int_eq(l->address.sa.ss_family, AF_INET6);
    ck_assert_uint_eq(l->address.salen, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(port_of(&l->address), 8443);
    ck_assert(l->tls);
    /* Relative paths resolve against the config file's directory. */
    ck_assert_str_eq(l->certificate, real("/../tls/cert.pem"));
    ck_assert_str_eq(l->private_key, real("/../tls/key.pem"));
    ck_assert_ptr_nonnull(l->ssl_ctx);
    ck_assert_int_eq(l->line, 4);

    ck_assert(c->admin_set);
    ck_assert_str_eq(c->admin.text, "127.0.0.1:9100");
    ck_assert_int_eq(port_of(&c->admin), 9100);
    ck_assert_int_eq(c->workers, 4);
    ck_assert_int_eq(c->shutdown_timeout_ms, 5000);
    ck_assert_str_eq(c->access_log, "off");

    const struct lg_conf_lambda *la = &c->lambda;
    ck_assert_str_eq(la->region, "eu-west-1");
    ck_assert(la->endpoint_set);
    /* Normalised: no trailing slash, so that Invoke paths can be appended. */
    ck_assert_str_eq(la->endpoint.url, "https://lambda.eu-west-1.amazonaws.com:8443");
    ck_assert(la->endpoint.tls);
    ck_assert_str_eq(la->endpoint.host, "lambda.eu-west-1.amazonaws.com");
    ck_assert_uint_eq(la->endpoint.port, 8443);
    ck_assert_str_eq(la->endpoint.authority, "lambda.eu-west-1.amazonaws.com:8443");
    ck_assert(la->credentials_set);
    ck_assert_str_eq(la->access_key_id, "AKIDTEST");
    ck_assert_str_eq(la->secret_access_key, "test-secret");
    ck_assert_str_eq(la->session_token, "test-token");
    ck_assert_str_eq(la->ca_file, real("/../tls/cert.pem"));
    ck_assert_int_eq(la->timeout_ms, 20000);
    ck_assert_int_eq(la->max_connections, 32);
    ck_assert_ptr_nonnull(la->ssl_ctx);

    ck_assert_str_eq(c->redis.host, "redis.internal");
    ck_assert_int_eq(c->redis.port, 6380);
    ck_assert_str_eq(c->redis.password, "test-redis-password");
    ck_assert_int_eq(c->redis.db, 3);
    ck_assert_int_eq(c->redis.timeout_ms, 250);
    ck_assert_str_eq(c->redis.prefix, "gw:");

    const struct lg_conf_limits *li = &c->limits;
    ck_assert_int_eq(li->max_connections, 5000);
    ck_assert_int_eq(li->max_connections_per_ip, 100);
    ck_assert_int_eq(li->max_header_bytes, 8192);
    ck_assert_int_eq(li->max_body_bytes, 1048576);
    ck_assert_int_eq(li->header_timeout_ms, 5000);
    ck_assert_int_eq(li->body_timeout_ms, 15000);
    ck_assert_int_eq(li->idle_timeout_ms, 30000);
    ck_assert_int_eq(li->max_inflight, 512);
    ck_assert(li->per_ip_enabled);
    ck_assert_double_eq(li->per_ip.rate, 2.5);
    ck_assert_int_eq(li->per_ip.burst, 50);
    ck_assert_uint_eq(li->nallow, 2);
    ck_assert_int_eq(li->allow[0].family, AF_INET);
    ck_assert_int_eq(li->allow[0].prefix, 8);
    ck_assert_int_eq(li->allow[1].family, AF_INET6);
    ck_assert_int_eq(li->allow[1].prefix, 32);
    ck_assert_uint_eq(li->ndeny, 1);
    ck_assert_int_eq(li->deny[0].prefix, 16);
    ck_assert_uint_eq(li->deny[0].addr[1], 66);

    const struct lg_conf_jwt *j = c->auth.jwt;
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(j->issuer, "https://issuer.example.com/");
    ck_assert_uint_eq(j->naudience, 2);
    ck_assert_str_eq(j->audience[0], "client-a");
    ck_assert_str_eq(j->audience[1], "client-b");
    ck_assert_str_eq(j->jwks_file, real("/jwks.json"));
    ck_assert_ptr_null(j->jwks_url);
    ck_assert_int_eq(j->leeway_s, 30);
    ck_assert_str_eq(j->identity_claim, "email");
    ck_assert_str_eq(c->auth.api_keys_file, real("/api_keys.json"));

    ck_assert_int_eq(c->throttle.store, LG_STORE_REDIS);
    ck_assert(c->throttle.default_enabled);
    ck_assert_double_eq(c->throttle.default_rate.rate, 20);
    ck_assert_int_eq(c->throttle.default_rate.burst, 40);
    ck_assert(c->throttle.global_enabled);
    ck_assert_double_eq(c->throttle.global.rate, 1000);
    ck_assert_int_eq(c->throttle.global.burst, 2000);

    ck_assert_int_eq(c->cache.store, LG_STORE_REDIS);
    ck_assert_int_eq(c->cache.max_bytes, 1048576);
    ck_assert_int_eq(c->cache.ttl_s, 120);
    ck_assert_int_eq(c->cache.invalidation, LG_INVALIDATE_NEVER);

    ck_assert_uint_eq(c->nroutes, 3);
    const struct lg_conf_route *r = &c->routes[0];
    ck_assert_str_eq(r->route_key, "GET /users/{id}");
    ck_assert_str_eq(r->qualifier, "live");
    ck_assert_str_eq(r->invoke_query, "Qualifier=live");
    ck_assert_str_eq(r->region, "us-west-2");
    ck_assert_str_eq(r->account_id, "123456789012");
    ck_assert_int_eq(r->invocation, LG_INVOKE_SYNC);
    ck_assert_int_eq(r->payload_format, LG_PAYLOAD_V1);
    ck_assert_int_eq(r->auth, LG_AUTH_JWT);
    ck_assert_uint_eq(r->nscopes, 2);
    ck_assert_str_eq(r->scopes[0], "users/read");
    ck_assert_str_eq(r->scopes[1], "admin");
    ck_assert_int_eq(r->throttle_presence, LG_CONF_SET);
    ck_assert_double_eq(r->throttle.rate, 5);
    ck_assert_int_eq(r->throttle.burst, 10);
    ck_assert_ptr_nonnull(r->cache);
    ck_assert_int_eq(r->cache->ttl_s, 60);
    ck_assert_uint_eq(r->cache->nkey_query, 1);
    ck_assert_str_eq(r->cache->key_query[0], "lang");
    ck_assert_uint_eq(r->cache->nkey_headers, 1);
    ck_assert_str_eq(r->cache->key_headers[0], "accept-language");
    ck_assert(r->cache->per_user);
    ck_assert_int_eq(r->cache->stale_if_error_s, 30);
    ck_assert_int_eq(r->timeout_ms, 10000);
    const struct lg_conf_cors *cors = r->cors;
    ck_assert_ptr_nonnull(cors);
    ck_assert(!cors->any_origin);
    ck_assert_uint_eq(cors->nallow_origins, 2);
    ck_assert_str_eq(cors->allow_origins[0], "https://app.example.com");
    ck_assert_str_eq(cors->allow_origins[1], "http://localhost:3000");
    ck_assert_str_eq(cors->allow_methods, "GET, POST");
    ck_assert_uint_eq(cors->nmethods, 2);
    ck_assert_str_eq(cors->methods[1], "POST");
    ck_assert_str_eq(cors->allow_headers, "authorization, content-type");
    ck_assert_str_eq(cors->expose_headers, "X-Request-Id, ETag");
    ck_assert_int_eq(cors->max_age_s, 600);
    ck_assert(cors->allow_credentials);
    ck_assert_int_eq(r->line, 45);

    r = &c->routes[1];
    ck_assert_int_eq(r->invocation, LG_INVOKE_ASYNC);
    ck_assert_int_eq(r->auth, LG_AUTH_API_KEY);
    ck_assert_int_eq(r->throttle_presence, LG_CONF_NULL);
    ck_assert_str_eq(r->region, "eu-west-1");
    /* An empty route cache takes its TTL from cache.ttl_s. */
    ck_assert_ptr_nonnull(r->cache);
    ck_assert_int_eq(r->cache->ttl_s, 120);
    ck_assert(!r->cache->per_user);
    ck_assert_int_eq(r->cache->stale_if_error_s, 0);
    ck_assert_int_eq(r->timeout_ms, 20000);

    r = &c->routes[2];
    ck_assert_str_eq(r->method, "ANY");
    ck_assert(r->cors->any_origin);
    ck_assert_str_eq(r->cors->allow_methods, "*");
    ck_assert_ptr_null(r->cors->allow_headers);
    ck_assert_ptr_null(r->cors->expose_headers);
    ck_assert_int_eq(r->cors->max_age_s, 0);
    ck_assert(!r->cors->allow_credentials);

    /* lambda.endpoint serves every route, whatever its region. */
    ck_assert_uint_eq(c->nendpoints, 1);
    for (size_t i = 0; i < c->nroutes; i++)
        ck_assert_ptr_eq(c->routes[i].endpoint, &c->endpoints[0]);
    ck_assert_str_eq(c->endpoints[0].url, "https://lambda.eu-west-1.amazonaws.com:8443");
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_comments)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/comments.json");
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_int_eq(c->listen[0].line, 6);
    ck_assert_int_eq(c->workers, 0); /* the commented-out key is not read */
    ck_assert_str_eq(c->access_log, "/var/log/lambdagate//access.log");
    ck_assert_uint_eq(c->nroutes, 1);
    ck_assert_int_eq(c->routes[0].line, 10);
    ck_assert_str_eq(c->routes[0].function, "hello");
    ck_assert_int_eq(c->routes[0].timeout_ms, 1500);
    lg_conf_unref(c);

    /* Lines still count inside and after comments. */
    expect_error("/* one\n"
                 "   two */ {\n"
                 "  \"listen\": [ { \"address\": \"127.0.0.1:8080\" } ], // three\n"
                 "  // four\n"
                 "  \"workers\": -1,\n" ROUTES "}\n",
                 5, "\"workers\" must be an integer from 0 to 256, got -1");
}
END_TEST

START_TEST(test_example_config)
{
    struct lg_conf *c = load_ok_file(EXAMPLE);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0].address.text, "127.0.0.1:8080");
    ck_assert(!c->listen[0].tls);
    ck_assert(!c->admin_set);
    ck_assert_ptr_null(c->auth.jwt);
    ck_assert_ptr_null(c->auth.api_keys_file);
    ck_assert(c->lambda.endpoint_set);
    ck_assert_str_eq(c->lambda.endpoint.url, "http://127.0.0.1:9001");
    ck_assert(!c->lambda.endpoint.tls);
    ck_assert_uint_eq(c->lambda.endpoint.port, 9001);
    ck_assert(c->lambda.credentials_set);
    ck_assert_str_eq(c->lambda.access_key_id, "AKIDLAMBDAGATEDEMO");
    ck_assert_str_eq(c->lambda.secret_access_key, "lambdagate-demo-secret");
    ck_assert_ptr_null(c->lambda.session_token);
    ck_assert_int_eq(c->throttle.store, LG_STORE_LOCAL);
    ck_assert_int_eq(c->cache.store, LG_STORE_LOCAL);

    static const struct {
        const char *key, *function;
        enum lg_invocation invocation;
        enum lg_payload_format format;
    } want[] = {
        {"GET /hello", "hello", LG_INVOKE_SYNC, LG_PAYLOAD_V2},
        {"ANY /echo/{proxy+}", "echo", LG_INVOKE_SYNC, LG_PAYLOAD_V2},
        {"GET /users/{id}", "users", LG_INVOKE_SYNC, LG_PAYLOAD_V2},
        {"POST /binary", "binary", LG_INVOKE_SYNC, LG_PAYLOAD_V2},
        {"POST /v1/echo", "echo", LG_INVOKE_SYNC, LG_PAYLOAD_V1},
        {"POST /events", "async_sink", LG_INVOKE_ASYNC, LG_PAYLOAD_V2},
    };
    ck_assert_uint_eq(c->nroutes, LG_ARRAY_LEN(want));
    for (size_t i = 0; i < LG_ARRAY_LEN(want); i++) {
        ck_assert_str_eq(c->routes[i].route_key, want[i].key);
        ck_assert_str_eq(c->routes[i].function, want[i].function);
        ck_assert_int_eq(c->routes[i].invocation, want[i].invocation);
        ck_assert_int_eq(c->routes[i].payload_format, want[i].format);
        ck_assert_ptr_eq(c->routes[i].endpoint, &c->endpoints[0]);
    }
    const struct lg_conf_route *users = &c->routes[2];
    ck_assert_int_eq(users->throttle_presence, LG_CONF_SET);
    ck_assert_ptr_nonnull(users->cors);
    ck_assert_uint_eq(users->cors->nallow_origins, 1);
    ck_assert_str_eq(users->cors->allow_origins[0], "https://app.example.com");
    ck_assert_int_eq(c->routes[0].throttle_presence, LG_CONF_ABSENT);
    ck_assert_ptr_null(c->routes[0].cors);
    lg_conf_unref(c);
}
END_TEST

/* null turns per_ip and throttle.default off; a route's throttle is
 * absent, null or set. */
START_TEST(test_null_settings)
{
    struct lg_conf *c =
        load_ok(HEAD "  \"limits\": { \"per_ip\": null },\n"
                     "  \"throttle\": { \"default\": null, \"global\": null },\n"
                     "  \"lambda\": { \"ca_file\": null, \"endpoint\": null,\n"
                     "              \"credentials\": null, \"timeout_ms\": 900000 },\n"
                     "  \"admin\": null,\n"
                     "  \"auth\": { \"jwt\": null, \"api_keys\": null },\n"
                     "  \"routes\": [\n"
                     "    { \"method\": \"GET\", \"path\": \"/a\", \"function\": \"a\" },\n"
                     "    { \"method\": \"GET\", \"path\": \"/b\", \"function\": \"b\",\n"
                     "      \"throttle\": null, \"cache\": null, \"cors\": null,\n"
                     "      \"qualifier\": null },\n"
                     "    { \"method\": \"GET\", \"path\": \"/c\", \"function\": \"c\",\n"
                     "      \"throttle\": { \"rate\": 0.5, \"burst\": 1 } }\n"
                     "  ]\n"
                     "}\n");
    ck_assert(!c->limits.per_ip_enabled);
    ck_assert(!c->throttle.default_enabled);
    ck_assert(!c->throttle.global_enabled);
    ck_assert(!c->lambda.endpoint_set);
    ck_assert(!c->lambda.credentials_set);
    ck_assert(!c->admin_set);
    ck_assert_ptr_null(c->auth.jwt);
    ck_assert_int_eq(c->routes[0].throttle_presence, LG_CONF_ABSENT);
    ck_assert_int_eq(c->routes[1].throttle_presence, LG_CONF_NULL);
    ck_assert_ptr_null(c->routes[1].cache);
    ck_assert_ptr_null(c->routes[1].cors);
    ck_assert_ptr_null(c->routes[1].qualifier);
    ck_assert_int_eq(c->routes[2].throttle_presence, LG_CONF_SET);
    ck_assert_double_eq(c->routes[2].throttle.rate, 0.5);
    ck_assert_int_eq(c->routes[2].throttle.burst, 1);
    /* Route timeouts default to lambda.timeout_ms. */
    ck_assert_int_eq(c->routes[0].timeout_ms, 900000);
    lg_conf_unref(c);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors, one class at a time
 * ------------------------------------------------------------------------ */

START_TEST(test_error_unknown_key)
{
    expect_error(HEAD "  \"lisen\": [],\n" ROUTES "}\n", 3, "unknown key \"lisen\" in top level");
    expect_error(HEAD "  \"routes\": [\n"
                      "    { \"method\": \"GET\", \"path\": \"/a\", \"function\": \"a\" },\n"
                      "    { \"method\": \"GET\", \"path\": \"/b\", \"function\": \"b\" },\n"
                      "    { \"method\": \"GET\", \"path\": \"/c\", \"function\": \"c\",\n"
                      "      \"throttle\": { \"rate\": 1,\n"
                      "                    \"burst\": 2, \"burts\": 3 } }\n"
                      "  ]\n"
                      "}\n",
                 8, "unknown key \"burts\" in routes[2].throttle");
    expect_error(HEAD "  \"lambda\": { \"credentials\": { \"access_key_id\": \"a\",\n"
                      "      \"secret_access_key\": \"b\", \"token\": \"c\" } },\n" ROUTES "}\n",
                 4, "unknown key \"token\" in lambda.credentials");
}
END_TEST

START_TEST(test_error_type)
{
    expect_error(HEAD "  \"lambda\": {\n"
                      "    \"timeout_ms\": \"abc\"\n"
                      "  },\n" ROUTES "}\n",
                 4, "\"timeout_ms\" must be an integer from 1 to 900000, got \"abc\"");
    expect_error(HEAD "  \"access_log\": false,\n" ROUTES "}\n", 3,
                 "\"access_log\" must be \"-\", \"off\" or a file path, got false");
    expect_error(HEAD "  \"limits\": { \"allow\": \"10.0.0.0/8\" },\n" ROUTES "}\n", 3,
                 "\"allow\" must be an array of at most 10000 CIDR strings, got \"10.0.0.0/8\"");
    expect_error(HEAD "  \"redis\": [],\n" ROUTES "}\n", 3, "\"redis\" must be an object, got []");
    expect_error(HEAD "  \"throttle\": { \"store\": \"Redis\" },\n" ROUTES "}\n", 3,
                 "\"store\" must be one of \"local\", \"redis\", got \"Redis\"");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"payload_format\": 2.0 } ]\n"
                 "}\n",
                 4, "\"payload_format\" must be one of \"2.0\", \"1.0\", got 2.0");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cache\": { \"per_user\": \"yes\" } } ]\n"
                 "}\n",
                 4, "\"per_user\" must be true or false, got \"yes\"");
    expect_error(HEAD "  \"routes\": [ \"GET /\" ]\n"
                      "}\n",
                 3, "\"routes[0]\" must be an object, got \"GET /\"");
    expect_error("[ 1 ]\n", 1, "the top level must be an object, got an array of 1 value");
    /* A key's error is reported at the key's line, not its value's. */
    expect_error(HEAD "  \"workers\":\n"
                      "     \"abc\",\n" ROUTES "}\n",
                 3, "\"workers\" must be an integer from 0 to 256, got \"abc\"");
    expect_error(HEAD "  \"limits\": { \"allow\": [\n"
                      "     \"10.0.0.0/8\",\n"
                      "     \"10.0.0.1/8\"\n"
                      "  ] },\n" ROUTES "}\n",
                 5,
                 "\"allow[1]\" must be a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", got "
                 "\"10.0.0.1/8\" (host bits are set; the network is \"10.0.0.0/8\")");
}
END_TEST

START_TEST(test_error_range)
{
    /* Integers must be JSON integers. */
    expect_error(HEAD "  \"workers\": 1.0,\n" ROUTES "}\n", 3,
                 "\"workers\" must be an integer from 0 to 256, got 1.0");
    expect_error(HEAD "  \"workers\": 257,\n" ROUTES "}\n", 3,
                 "\"workers\" must be an integer from 0 to 256, got 257");
    expect_error(HEAD "  \"cache\": { \"ttl_s\": 99999999999999999999 },\n" ROUTES "}\n", 3,
                 "\"ttl_s\" must be an integer from 0 to 3600, got 99999999999999999999");
    expect_error(HEAD "  \"limits\": { \"per_ip\": { \"rate\": 0, \"burst\": 1 } },\n" ROUTES "}\n",
                 3, "\"rate\" must be a number from 0.001 to 1000000, got 0");
    expect_error(HEAD "  \"throttle\": { \"global\": { \"rate\": 1.5, \"burst\": 0.5 } },\n" ROUTES
                      "}\n",
                 3, "\"burst\" must be an integer from 1 to 1000000, got 0.5");
    expect_error(HEAD "  \"redis\": { \"port\": 65536 },\n" ROUTES "}\n", 3,
                 "\"port\" must be an integer from 1 to 65535, got 65536");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"timeout_ms\": 0 } ]\n"
                 "}\n",
                 4, "\"timeout_ms\" must be an integer from 1 to 900000, got 0");
    expect_error(HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"jwks_file\": \"jwks.json\",\n"
                      "    \"audience\": [] } },\n" ROUTES "}\n",
                 4, "\"audience\" must be an array of 1 to 50 strings, got []");
}
END_TEST

START_TEST(test_error_address)
{
    expect_error("{\n  \"listen\": [ { \"address\": \"localhost:8080\" } ],\n" ROUTES "}\n", 2,
                 "\"address\" must be IPv4:port or [IPv6]:port, got \"localhost:8080\" (not a "
                 "numeric IPv4 address (host names are not accepted))");
    expect_error("{\n  \"listen\": [ { \"address\": \"127.0.0.1\" } ],\n" ROUTES "}\n", 2,
                 "\"address\" must be IPv4:port or [IPv6]:port, got \"127.0.0.1\" (no \":port\" "
                 "after the address)");
    expect_error("{\n  \"listen\": [ { \"address\": \"::1:80\" } ],\n" ROUTES "}\n", 2,
                 "\"address\" must be IPv4:port or [IPv6]:port, got \"::1:80\" (an IPv6 address "
                 "goes in brackets, as \"[::1]:8080\")");
    expect_error(HEAD "  \"admin\": { \"address\": \"[::1]:0\" },\n" ROUTES "}\n", 3,
                 "\"address\" must be IPv4:port or [IPv6]:port, got \"[::1]:0\" (the port must "
                 "be a number from 1 to 65535)");
    /* Duplicates, also with the admin listener. */
    expect_error("{\n  \"listen\": [ { \"address\": \"127.0.0.1:8080\" },\n"
                 "    { \"address\": \"127.0.0.1:8080\" } ],\n" ROUTES "}\n",
                 3, "duplicate listen address \"127.0.0.1:8080\" (also listen[0])");
    expect_error(HEAD "  \"admin\": { \"address\": \"127.0.0.1:8080\" },\n" ROUTES "}\n", 3,
                 "admin address \"127.0.0.1:8080\" is also the address of listen[0]");
}
END_TEST

START_TEST(test_error_cidr)
{
    static const struct expected exp[] = {
        {3, "\"deny[1]\" must be a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", got "
            "\"10.1.2.3/8\" (host bits are set; the network is \"10.0.0.0/8\")"},
        {4, "\"allow[0]\" must be a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", got "
            "\"::/129\" (the prefix length must be a number from 0 to 128)"},
        {4, "\"allow[1]\" must be a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", got "
            "\"example.com\" (not an IPv4 or IPv6 address)"},
    };
    expect_errors(HEAD "  \"limits\": { \"deny\": [\"192.0.2.0/24\", \"10.1.2.3/8\"],\n"
                       "              \"allow\": [\"::/129\", \"example.com\"] },\n" ROUTES "}\n",
                  exp, LG_ARRAY_LEN(exp));
}
END_TEST

START_TEST(test_error_unreadable_file)
{
    static const struct expected exp[] = {
        {3, "\"certificate\" file \"/nonexistent/lambdagate/cert.pem\" is not readable: No such "
            "file or directory"},
        {4, "\"private_key\" file \"/nonexistent/lambdagate/key.pem\" is not readable: No such "
            "file or directory"},
        {5, "\"ca_file\" file \"/nonexistent/lambdagate/ca.pem\" is not readable: No such file "
            "or directory"},
        {6, "\"jwks_file\" file \"/nonexistent/lambdagate/jwks.json\" is not readable: No such "
            "file or directory"},
        {8, "\"file\" file \"/\" is not a regular file"},
    };
    expect_errors("{\n  \"listen\": [ { \"address\": \"127.0.0.1:8443\", \"tls\": {\n"
                  "    \"certificate\": \"/nonexistent/lambdagate/cert.pem\",\n"
                  "    \"private_key\": \"/nonexistent/lambdagate/key.pem\" } } ],\n"
                  "  \"lambda\": { \"ca_file\": \"/nonexistent/lambdagate/ca.pem\" },\n"
                  "  \"auth\": { \"jwt\": { \"jwks_file\": \"/nonexistent/lambdagate/jwks.json\",\n"
                  "                     \"issuer\": \"i\", \"audience\": [\"a\"] },\n"
                  "            \"api_keys\": { \"file\": \"/\" } },\n" ROUTES "}\n",
                  exp, LG_ARRAY_LEN(exp));
    expect_error(HEAD "  \"auth\": { \"api_keys\": {\n"
                      "    \"file\": \"/nonexistent/lambdagate/keys.json\" } },\n" ROUTES "}\n",
                 4,
                 "\"file\" file \"/nonexistent/lambdagate/keys.json\" is not readable: No such "
                 "file or directory");
    /* A relative path is resolved against the config file's directory. */
    struct lg_conf_errors e;
    ck_assert_ptr_null(load(
        HEAD "  \"auth\": { \"api_keys\": { \"file\": \"no-such.json\" } },\n" ROUTES "}\n", &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 3);
    ck_assert_ptr_nonnull(strstr(e.items[0].message, CONF_DIR "/no-such.json"));
    lg_conf_errors_free(&e);
}
END_TEST

START_TEST(test_error_method)
{
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"get\", \"path\": \"/\", \"function\": \"f\" } ]\n"
                 "}\n",
                 3,
                 "\"method\" must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY, "
                 "got \"get\"");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"*\"], \"allow_methods\": [\"GET\", "
                 "\"ANY\"] } } ]\n"
                 "}\n",
                 4,
                 "\"allow_methods[1]\" must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS "
                 "or *, got \"ANY\"");
}
END_TEST

START_TEST(test_error_template)
{
    expect_error(HEAD "  \"routes\": [ { \"method\": \"GET\", \"function\": \"f\",\n"
                      "    \"path\": \"/a//b\" } ]\n"
                      "}\n",
                 4, "path template \"/a//b\": segment 2 is empty (\"//\")");
    expect_error(HEAD "  \"routes\": [ { \"method\": \"GET\", \"function\": \"f\",\n"
                      "    \"path\": \"users\" } ]\n"
                      "}\n",
                 4, "path template \"users\": must start with '/'");
}
END_TEST

START_TEST(test_error_duplicate_route)
{
    expect_error(HEAD
                 "  \"routes\": [\n"
                 "    { \"method\": \"GET\", \"path\": \"/users/{id}\", \"function\": \"a\" },\n"
                 "    { \"method\": \"POST\", \"path\": \"/users/{id}\", \"function\": \"b\" },\n"
                 "    { \"method\": \"GET\", \"function\": \"c\",\n"
                 "      \"path\": \"/users/{name}\" }\n"
                 "  ]\n"
                 "}\n",
                 7, "route \"GET /users/{name}\" duplicates route \"GET /users/{id}\"");
}
END_TEST

START_TEST(test_error_function)
{
    expect_error(HEAD "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\",\n"
                      "    \"function\": \"my function\" } ]\n"
                      "}\n",
                 4,
                 "\"function\" must be a function name, name:alias, or partial or full ARN, got "
                 "\"my function\"");
    expect_error(HEAD "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\",\n"
                      "    \"function\": \"f:v1:v2\" } ]\n"
                      "}\n",
                 4,
                 "\"function\" must be a function name, name:alias, or partial or full ARN, got "
                 "\"f:v1:v2\"");
    /* 65 characters of name. */
    expect_error(
        HEAD "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\",\n"
             "    \"function\": "
             "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" } ]\n"
             "}\n",
        4,
        "\"function\" must be a function name, name:alias, or partial or full ARN, got "
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" (the name "
        "is longer than 64 characters)");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"qualifier\": \"v 1\" } ]\n"
                 "}\n",
                 4,
                 "\"qualifier\" must be a version or alias ([a-zA-Z0-9$_-], 1 to 128 characters), "
                 "got \"v 1\"");
}
END_TEST

START_TEST(test_error_double_qualifier)
{
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\",\n"
                 "    \"function\": \"arn:aws:lambda:us-east-1:123456789012:function:f:live\",\n"
                 "    \"qualifier\": \"v2\" } ]\n"
                 "}\n",
                 5,
                 "\"qualifier\" \"v2\" given, but \"function\" \"arn:aws:lambda:us-east-1:"
                 "123456789012:function:f:live\" already names a qualifier");
}
END_TEST

START_TEST(test_error_auth_requirements)
{
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"scopes\": [\"read\"] } ]\n"
                 "}\n",
                 4, "\"scopes\" needs \"auth\": \"jwt\" (this route's auth is \"none\")");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"auth\": \"jwt\" } ]\n"
                 "}\n",
                 4, "\"auth\" is \"jwt\" but auth.jwt is not configured");
    expect_error(HEAD
                 "  \"auth\": { \"jwt\": null },\n"
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"auth\": \"api_key\" } ]\n"
                 "}\n",
                 5, "\"auth\" is \"api_key\" but auth.api_keys is not configured");
    /* auth.jwt: exactly one key source, https only, a non-empty issuer. */
    expect_error(HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"],\n"
                      "    \"jwks_file\": \"jwks.json\",\n"
                      "    \"jwks_url\": \"https://example.com/jwks.json\" } },\n" ROUTES "}\n",
                 5, "\"jwks_file\" and \"jwks_url\" cannot both be set in auth.jwt");
    expect_error(HEAD "  \"auth\": {\n"
                      "    \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"] } },\n" ROUTES "}\n",
                 4, "auth.jwt needs \"jwks_file\" or \"jwks_url\"");
    expect_error(HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"\", \"audience\": [\"a\"],\n"
                      "    \"jwks_url\": \"https://example.com/jwks.json\" } },\n" ROUTES "}\n",
                 3, "\"issuer\" must be a non-empty string, got \"\"");
}
END_TEST

START_TEST(test_error_jwks_url)
{
    expect_error(HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"],\n"
                      "    \"jwks_url\": \"http://example.com/jwks.json\" } },\n" ROUTES "}\n",
                 4,
                 "\"jwks_url\" must be an https:// URL, got \"http://example.com/jwks.json\" (key "
                 "sets are fetched over HTTPS only)");
}
END_TEST

START_TEST(test_error_cors)
{
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"*\"],\n"
                 "              \"allow_credentials\": true } } ]\n"
                 "}\n",
                 5,
                 "\"allow_credentials\" cannot be true with \"allow_origins\": [\"*\"]: browsers "
                 "refuse credentials for a wildcard origin");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"https://a.example.com/app\"] } } ]\n"
                 "}\n",
                 4,
                 "\"allow_origins[0]\" must be \"*\" or an origin such as "
                 "\"https://app.example.com\", got \"https://a.example.com/app\" (an origin has "
                 "no path)");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"*\", \"https://a.example.com\"] } } ]\n"
                 "}\n",
                 4, "\"allow_origins\" holding \"*\" must hold nothing else");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"*\"],\n"
                 "      \"allow_headers\": [\"x-ok\", \"bad header\"] } } ]\n"
                 "}\n",
                 5, "\"allow_headers[1]\" must be an HTTP header name, got \"bad header\"");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { } } ]\n"
                 "}\n",
                 4, "missing required key \"allow_origins\" in routes[0].cors");
}
END_TEST

START_TEST(test_error_duplicate_key)
{
    expect_error(HEAD "  \"workers\": 1,\n"
                      "  \"workers\": 2,\n" ROUTES "}\n",
                 4, "duplicate key \"workers\" in top level (first at line 3)");
    expect_error(HEAD
                 "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
                 "    \"cors\": { \"allow_origins\": [\"*\"],\n"
                 "              \"allow_origins\": [\"*\"] } } ]\n"
                 "}\n",
                 5, "duplicate key \"allow_origins\" in routes[0].cors (first at line 4)");
}
END_TEST

START_TEST(test_error_missing_required)
{
    static const struct expected exp[] = {
        {2, "missing required key \"listen\" in top level"},
        {2, "missing required key \"routes\" in top level"},
    };
    expect_errors("\n{\n  \"workers\": 1\n}\n", exp, LG_ARRAY_LEN(exp));
    expect_error("{\n  \"listen\": [],\n" ROUTES "}\n", 2,
                 "\"listen\" must be an array of 1 to 64 listener objects, got []");
    expect_error(HEAD "  \"routes\": []\n}\n", 3,
                 "\"routes\" must be an array of 1 to 10000 route objects, got []");
    expect_error(HEAD "  \"routes\": [\n"
                      "    { \"method\": \"GET\",\n"
                      "      \"path\": \"/\" } ]\n"
                      "}\n",
                 4, "missing required key \"function\" in routes[0]");
    expect_error(HEAD "  \"limits\": { \"per_ip\": { \"rate\": 1 } },\n" ROUTES "}\n", 3,
                 "missing required key \"burst\" in limits.per_ip");
}
END_TEST

START_TEST(test_error_syntax)
{
    expect_error("{\n"
                 "  \"listen\": [ { \"address\": \"127.0.0.1:8080\" } ]\n"
                 "  \"routes\": []\n"
                 "}\n",
                 3, "JSON syntax error: after key and value, inside map, I expect ',' or '}'");
    /* A trailing comma: found at the '}' that follows it. */
    expect_error(HEAD ROUTES ",\n"
                             "}\n",
                 5, "JSON syntax error: invalid object key (must be a string)");
    expect_error(HEAD "  \"workers\": 12\n"
                      "\n"
                      "  \"access_log\": \"-\"\n",
                 5, "JSON syntax error: after key and value, inside map, I expect ',' or '}'");
    expect_error(HEAD "  \"routes\": [\n"
                      "\n",
                 3, "JSON syntax error: premature EOF");
    expect_error(HEAD "  \"workers\": tru,\n" ROUTES "}\n", 3,
                 "JSON syntax error: invalid string in json text.");
    expect_error(HEAD ROUTES "}\n"
                             "{}\n",
                 5, "JSON syntax error: trailing garbage");
    expect_error("", 1, "JSON syntax error: premature EOF");
    /* Errors found before a syntax error are kept. */
    static const struct expected exp[] = {
        {3, "duplicate key \"listen\" in top level (first at line 2)"},
        {4, "JSON syntax error: invalid char in json text."},
    };
    expect_errors(HEAD "  \"listen\": 1,\n"
                       "  \"routes\": x\n"
                       "}\n",
                  exp, LG_ARRAY_LEN(exp));
}
END_TEST

START_TEST(test_error_limits)
{
    /* Nesting deeper than 32 levels. */
    char deep[256];
    size_t o = (size_t)snprintf(deep, sizeof(deep), "{\n\"x\":\n");
    for (int i = 0; i < 40; i++)
        deep[o++] = '[';
    deep[o] = '\0';
    expect_error(deep, 3, "JSON nesting deeper than 32 levels");

    /* More than 1 MiB. */
    size_t big = 1024 * 1024 + 1;
    char *text = malloc(big);
    ck_assert_ptr_nonnull(text);
    memset(text, ' ', big);
    struct lg_conf_errors e;
    ck_assert_ptr_null(lg_conf_load_text(INLINE_PATH, text, big, &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 0);
    ck_assert_str_eq(e.items[0].message, "the file is larger than 1048576 bytes");
    lg_conf_errors_free(&e);
    free(text);

    /* A NUL byte, which yajl would otherwise stop at. */
    static const char nul[] = "{\n\n  \"workers\": 1\0\n}\n";
    ck_assert_ptr_null(lg_conf_load_text(INLINE_PATH, nul, sizeof(nul) - 1, &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 3);
    ck_assert_str_eq(e.items[0].message, "the file contains a NUL byte");
    lg_conf_errors_free(&e);

    /* A flood of errors is cut after 500, with a marker last. */
    struct lg_buf flood;
    lg_buf_init(&flood, 0);
    ck_assert_int_eq(lg_buf_puts(&flood, HEAD ROUTES ", "), 0);
    for (int i = 0; i < 600; i++)
        ck_assert_int_eq(lg_buf_printf(&flood, "\"k%d\": %d,\n", i, i), 0);
    ck_assert_int_eq(lg_buf_puts(&flood, "\"workers\": 0 }\n"), 0);
    ck_assert_ptr_null(load(lg_buf_cstr(&flood), &e));
    lg_buf_free(&flood);
    ck_assert_uint_eq(e.count, 501);
    ck_assert_int_eq(e.items[0].line, 4);
    ck_assert_str_eq(e.items[0].message, "unknown key \"k0\" in top level");
    ck_assert_int_eq(e.items[499].line, 503);
    ck_assert_str_eq(e.items[500].message, "too many errors, giving up after 500");
    lg_conf_errors_free(&e);

    /* A \u0000 escape in a string. */
    expect_error(HEAD "  \"access_log\": \"a\\u0000b\",\n" ROUTES "}\n", 3,
                 "\"access_log\" must not contain a NUL character");
}
END_TEST

/* Secrets are named, never quoted. */
START_TEST(test_error_no_secrets)
{
    static const struct expected exp[] = {
        {3, "\"secret_access_key\" must be a non-empty string"},
        {4, "\"session_token\" must be a non-empty string or null"},
        {5, "\"access_key_id\" must be at most 128 bytes long"},
        {6, "\"password\" must be a non-empty string or null"},
    };
    char key[201];
    memset(key, 'S', sizeof(key) - 1);
    memcpy(key, "AKID424242", 10);
    key[sizeof(key) - 1] = '\0';
    char text[1024];
    snprintf(text, sizeof(text),
             HEAD "  \"lambda\": { \"credentials\": { \"secret_access_key\": 424242,\n"
                  "    \"session_token\": [\"tok-424242\"],\n"
                  "    \"access_key_id\": \"%s\" } },\n"
                  "  \"redis\": { \"password\": 424242 },\n" ROUTES "}\n",
             key);
    expect_errors(text, exp, LG_ARRAY_LEN(exp));

    /* Not even in a syntax error inside a secret. */
    struct lg_conf_errors e;
    ck_assert_ptr_null(
        load(HEAD "  \"redis\": { \"password\": \"pw424242\\q\" },\n" ROUTES "}\n", &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 3);
    ck_assert_ptr_null(strstr(e.items[0].message, "424242"));
    lg_conf_errors_free(&e);
}
END_TEST

START_TEST(test_many_errors)
{
    static const struct expected exp[] = {
        {2, "\"address\" must be IPv4:port or [IPv6]:port, got \"127.0.0.1:80800\" (the port must "
            "be a number from 1 to 65535)"},
        {3, "unknown key \"workerz\" in top level"},
        {5, "\"timeout_ms\" must be an integer from 1 to 900000, got \"abc\""},
        {7, "\"deny[0]\" must be a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", got "
            "\"10.1.2.3/8\" (host bits are set; the network is \"10.0.0.0/8\")"},
        {9, "\"method\" must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY, got "
            "\"FETCH\""},
        {10, "path template \"/b/{x\": segment 2 \"{x\" mixes a parameter and text"},
        {11, "unknown key \"burts\" in routes[2].throttle"},
        {11, "missing required key \"burst\" in routes[2].throttle"},
    };
    struct lg_conf_errors e;
    ck_assert_ptr_null(lg_conf_load(CONF_DIR "/errors.json", &e));
    if (e.count != LG_ARRAY_LEN(exp))
        dump(&e);
    ck_assert_uint_eq(e.count, LG_ARRAY_LEN(exp));
    for (size_t i = 0; i < LG_ARRAY_LEN(exp); i++) {
        ck_assert_int_eq(e.items[i].line, exp[i].line);
        ck_assert_str_eq(e.items[i].message, exp[i].message);
    }
    lg_conf_errors_free(&e);
}
END_TEST

/* ------------------------------------------------------------------------
 * Derived fields
 * ------------------------------------------------------------------------ */

START_TEST(test_function_paths)
{
    static const struct {
        const char *function, *qualifier;
        const char *function_path, *invoke_query, *region, *account;
    } cases[] = {
        {"hello", NULL, "hello", NULL, "eu-west-1", NULL},
        {"hello", "live", "hello", "Qualifier=live", "eu-west-1", NULL},
        {"hello:live", NULL, "hello%3Alive", NULL, "eu-west-1", NULL},
        {"hello", "$LATEST", "hello", "Qualifier=%24LATEST", "eu-west-1", NULL},
        {"123456789012:function:hello", NULL, "123456789012%3Afunction%3Ahello", NULL, "eu-west-1",
         "123456789012"},
        {"123456789012:function:hello:$LATEST", NULL, "123456789012%3Afunction%3Ahello%3A%24LATEST",
         NULL, "eu-west-1", "123456789012"},
        {"arn:aws:lambda:us-west-2:123456789012:function:my.fn_1-x:prod", NULL,
         "arn%3Aaws%3Alambda%3Aus-west-2%3A123456789012%3Afunction%3Amy.fn_1-x%3Aprod", NULL,
         "us-west-2", "123456789012"},
        {"arn:aws-us-gov:lambda:us-gov-west-1:210987654321:function:g", "7",
         "arn%3Aaws-us-gov%3Alambda%3Aus-gov-west-1%3A210987654321%3Afunction%3Ag", "Qualifier=7",
         "us-gov-west-1", "210987654321"},
    };
    char text[2048];
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        char qual[64] = "";
        if (cases[i].qualifier)
            snprintf(qual, sizeof(qual), ", \"qualifier\": \"%s\"", cases[i].qualifier);
        snprintf(text, sizeof(text),
                 HEAD "  \"lambda\": { \"region\": \"eu-west-1\" },\n"
                      "  \"routes\": [ { \"method\": \"POST\", \"path\": \"/x\",\n"
                      "                \"function\": \"%s\"%s } ]\n}\n",
                 cases[i].function, qual);
        struct lg_conf *c = load_ok(text);
        const struct lg_conf_route *r = &c->routes[0];
        char invoke[512];
        snprintf(invoke, sizeof(invoke), "/2015-03-31/functions/%s/invocations",
                 cases[i].function_path);
        ck_assert_str_eq(r->function, cases[i].function);
        ck_assert_str_eq(r->function_path, cases[i].function_path);
        ck_assert_str_eq(r->invoke_path, invoke);
        if (cases[i].invoke_query)
            ck_assert_str_eq(r->invoke_query, cases[i].invoke_query);
        else
            ck_assert_ptr_null(r->invoke_query);
        if (cases[i].qualifier)
            ck_assert_str_eq(r->qualifier, cases[i].qualifier);
        else
            ck_assert_ptr_null(r->qualifier);
        ck_assert_str_eq(r->region, cases[i].region);
        if (cases[i].account)
            ck_assert_str_eq(r->account_id, cases[i].account);
        else
            ck_assert_ptr_null(r->account_id);
        ck_assert_str_eq(r->route_key, "POST /x");
        lg_conf_unref(c);
    }
}
END_TEST

START_TEST(test_endpoints_per_region)
{
    struct lg_conf *c = load_ok(
        HEAD "  \"lambda\": { \"region\": \"eu-central-1\" },\n"
             "  \"routes\": [\n"
             "    { \"method\": \"GET\", \"path\": \"/a\",\n"
             "      \"function\": \"arn:aws:lambda:us-west-2:123456789012:function:a\" },\n"
             "    { \"method\": \"GET\", \"path\": \"/b\", \"function\": \"b\" },\n"
             "    { \"method\": \"GET\", \"path\": \"/c\",\n"
             "      \"function\": \"arn:aws:lambda:us-west-2:123456789012:function:c\" },\n"
             "    { \"method\": \"GET\", \"path\": \"/d\",\n"
             "      \"function\": \"arn:aws-cn:lambda:cn-north-1:123456789012:function:d\" }\n"
             "  ]\n}\n");
    ck_assert_uint_eq(c->nendpoints, 3);
    ck_assert_str_eq(c->endpoints[0].url, "https://lambda.us-west-2.amazonaws.com");
    ck_assert_str_eq(c->endpoints[1].url, "https://lambda.eu-central-1.amazonaws.com");
    ck_assert_str_eq(c->endpoints[2].url, "https://lambda.cn-north-1.amazonaws.com.cn");
    ck_assert_str_eq(c->endpoints[2].host, "lambda.cn-north-1.amazonaws.com.cn");
    ck_assert_uint_eq(c->endpoints[2].port, 443);
    ck_assert(c->endpoints[2].tls);
    ck_assert_ptr_eq(c->routes[0].endpoint, &c->endpoints[0]);
    ck_assert_ptr_eq(c->routes[1].endpoint, &c->endpoints[1]);
    ck_assert_ptr_eq(c->routes[2].endpoint, &c->endpoints[0]);
    ck_assert_ptr_eq(c->routes[3].endpoint, &c->endpoints[2]);
    /* lambda.endpoint holds lambda.region's endpoint. */
    ck_assert(!c->lambda.endpoint_set);
    ck_assert_str_eq(c->lambda.endpoint.url, "https://lambda.eu-central-1.amazonaws.com");
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_endpoint_override)
{
    struct lg_conf *c =
        load_ok(HEAD "  \"lambda\": { \"endpoint\": \"http://[::1]:9001/\" },\n"
                     "  \"routes\": [\n"
                     "    { \"method\": \"GET\", \"path\": \"/a\",\n"
                     "      \"function\": \"arn:aws:lambda:us-west-2:123456789012:function:a\" },\n"
                     "    { \"method\": \"GET\", \"path\": \"/b\", \"function\": \"b\" }\n"
                     "  ]\n}\n");
    ck_assert(c->lambda.endpoint_set);
    ck_assert_uint_eq(c->nendpoints, 1);
    const struct lg_conf_endpoint *e = &c->endpoints[0];
    ck_assert_str_eq(e->url, "http://[::1]:9001");
    ck_assert(!e->tls);
    ck_assert_str_eq(e->host, "::1");
    ck_assert_uint_eq(e->port, 9001);
    ck_assert_str_eq(e->authority, "[::1]:9001");
    ck_assert_ptr_eq(c->routes[0].endpoint, e);
    ck_assert_ptr_eq(c->routes[1].endpoint, e);
    /* The region still comes from the ARN (it is signed into the request). */
    ck_assert_str_eq(c->routes[0].region, "us-west-2");
    ck_assert_str_eq(c->routes[1].region, "us-east-1");
    lg_conf_unref(c);

    expect_error(
        HEAD "  \"lambda\": { \"endpoint\": \"https://example.com/prefix\" },\n" ROUTES "}\n", 3,
        "\"endpoint\" must be an http:// or https:// URL without a path, or null, got "
        "\"https://example.com/prefix\" (an endpoint has no path or query)");
    expect_error(HEAD "  \"lambda\": { \"endpoint\": \"ftp://example.com\" },\n" ROUTES "}\n", 3,
                 "\"endpoint\" must be an http:// or https:// URL without a path, or null, got "
                 "\"ftp://example.com\" (URL must start with http:// or https://)");
}
END_TEST

START_TEST(test_region)
{
    static const char *const good[] = {"us-east-1",     "eu-west-3",     "us-gov-west-1",
                                       "cn-north-1",    "us-iso-east-1", "us-isob-east-1",
                                       "ap-southeast-4"};
    char text[512];
    for (size_t i = 0; i < LG_ARRAY_LEN(good); i++) {
        snprintf(text, sizeof(text), HEAD "  \"lambda\": { \"region\": \"%s\" },\n" ROUTES "}\n",
                 good[i]);
        struct lg_conf *c = load_ok(text);
        ck_assert_str_eq(c->routes[0].region, good[i]);
        lg_conf_unref(c);
    }
    expect_error(HEAD "  \"lambda\": { \"region\": \"us-east-10\" },\n" ROUTES "}\n", 3,
                 "\"region\" must be an AWS region such as \"us-east-1\", got \"us-east-10\"");
}
END_TEST

START_TEST(test_lowercasing)
{
    struct lg_conf *c = load_ok(
        HEAD
        "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": \"f\",\n"
        "    \"cache\": { \"key_headers\": [\"X-Tenant\", \"Accept\"], \"key_query\": [\"Q\"] },\n"
        "    \"cors\": { \"allow_origins\": [\"HTTPS://WWW.Example.COM:8443\"],\n"
        "              \"allow_headers\": [\"X-Custom-Header\"],\n"
        "              \"expose_headers\": [\"X-Trace\"] } } ]\n}\n");
    const struct lg_conf_route *r = &c->routes[0];
    ck_assert_str_eq(r->cache->key_headers[0], "x-tenant");
    ck_assert_str_eq(r->cache->key_headers[1], "accept");
    ck_assert_str_eq(r->cache->key_query[0], "Q"); /* query names are case-sensitive */
    ck_assert_int_eq(r->cache->ttl_s, 300);
    ck_assert_str_eq(r->cors->allow_origins[0], "https://www.example.com:8443");
    ck_assert_str_eq(r->cors->allow_headers, "x-custom-header");
    ck_assert_str_eq(r->cors->expose_headers, "X-Trace");
    ck_assert_ptr_null(r->cors->allow_methods);
    ck_assert_uint_eq(r->cors->nmethods, 0);
    lg_conf_unref(c);
}
END_TEST

/* ------------------------------------------------------------------------
 * TLS
 * ------------------------------------------------------------------------ */

START_TEST(test_tls_listener)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/tls.json");
    ck_assert(c->listen[0].tls);
    ck_assert_ptr_nonnull(c->listen[0].ssl_ctx);
    ck_assert_str_eq(c->listen[0].certificate, real("/../tls/cert.pem"));
    lg_conf_unref(c);

    struct lg_conf_errors e;
    ck_assert_ptr_null(lg_conf_load(CONF_DIR "/tls-mismatch.json", &e));
    if (e.count != 1)
        dump(&e);
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 4); /* the line of "tls" */
    char prefix[4200];
    snprintf(prefix, sizeof(prefix), "cannot set up TLS: cannot load private key %s", real(""));
    ck_assert_msg(strncmp(e.items[0].message, prefix, strlen(prefix)) == 0, "got: %s",
                  e.items[0].message);
    ck_assert_ptr_nonnull(strstr(e.items[0].message, "other-key.pem"));
    lg_conf_errors_free(&e);

    /* A readable file that is not a certificate, as the Lambda CA file. */
    ck_assert_ptr_null(load(HEAD "  \"lambda\": {\n"
                                 "    \"ca_file\": \"jwks.json\" },\n" ROUTES "}\n",
                            &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 4);
    /* Text loaded with a path (not from a file) resolves against it as given. */
    snprintf(prefix, sizeof(prefix), "%s",
             "cannot set up TLS for Lambda: cannot load CA file " CONF_DIR "/jwks.json");
    ck_assert_msg(strncmp(e.items[0].message, prefix, strlen(prefix)) == 0, "got: %s",
                  e.items[0].message);
    lg_conf_errors_free(&e);
}
END_TEST

/* ------------------------------------------------------------------------
 * Printing, loading, reference counting
 * ------------------------------------------------------------------------ */

START_TEST(test_errors_print)
{
    struct lg_conf_errors e;
    ck_assert_ptr_null(load(HEAD "  \"lisen\": 1,\n"
                                 "  \"workers\": -1,\n" ROUTES "}\n",
                            &e));
    char buf[1024] = "";
    FILE *fp = fmemopen(buf, sizeof(buf) - 1, "w");
    ck_assert_ptr_nonnull(fp);
    lg_conf_errors_print(&e, "/etc/lambdagate/lambdagate.json", fp);
    fclose(fp);
    ck_assert_str_eq(buf, "/etc/lambdagate/lambdagate.json:3: unknown key \"lisen\" in top level\n"
                          "/etc/lambdagate/lambdagate.json:4: \"workers\" must be an integer "
                          "from 0 to 256, got -1\n");
    lg_conf_errors_free(&e);

    /* An error without a line. */
    ck_assert_ptr_null(lg_conf_load("/nonexistent/lambdagate.json", &e));
    memset(buf, 0, sizeof(buf));
    fp = fmemopen(buf, sizeof(buf) - 1, "w");
    ck_assert_ptr_nonnull(fp);
    lg_conf_errors_print(&e, "/nonexistent/lambdagate.json", fp);
    fclose(fp);
    ck_assert_str_eq(buf, "/nonexistent/lambdagate.json: cannot open: No such file or directory\n");
    lg_conf_errors_free(&e);
    lg_conf_errors_free(&e); /* twice is harmless */
}
END_TEST

/* Write text to a new temporary file; returns its path (static buffer). */
static const char *temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/lg-test-conf-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

START_TEST(test_auth_files_loaded)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/full.json");
    ck_assert_ptr_nonnull(c->auth.jwt->keys);
    ck_assert_uint_eq(c->auth.jwt->keys->nkeys, 1);
    ck_assert_str_eq(c->auth.jwt->keys->keys[0].kid, "conf-test");
    ck_assert_ptr_null(c->auth.jwt->ssl_ctx); /* jwks_file: nothing fetched */
    ck_assert_ptr_null(c->auth.jwt->token_use);
    ck_assert_ptr_nonnull(c->auth.api_keys);
    ck_assert_uint_eq(c->auth.api_keys->nkeys, 1);
    /* The digest in api_keys.json is SHA-256("test"). */
    const struct lg_apikey *k = lg_apikeys_find(c->auth.api_keys, "test", 4);
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->id, "test-app");
    ck_assert_ptr_null(lg_apikeys_find(c->auth.api_keys, "tesT", 4));
    lg_conf_unref(c);

    c = load_ok(HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"],\n"
                     "    \"jwks_url\": \"https://example.com/jwks.json\", \"token_use\": "
                     "\"access\" } },\n" ROUTES "}\n");
    ck_assert_str_eq(c->auth.jwt->token_use, "access");
    ck_assert_ptr_null(c->auth.jwt->keys);
    ck_assert_ptr_nonnull(c->auth.jwt->ssl_ctx);
    lg_conf_unref(c);

    expect_error(
        HEAD
        "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"],\n"
        "    \"jwks_url\": \"https://example.com/jwks.json\", \"token_use\": \"both\" } },\n" ROUTES
        "}\n",
        4, "\"token_use\" must be \"id\", \"access\" or null, got \"both\"");
}
END_TEST

START_TEST(test_auth_file_errors)
{
    /* A key set without one usable key: reported at the jwks_file line. */
    char text[1024];
    const char *jwks = temp_file("{ \"keys\": [ { \"kty\": \"oct\", \"k\": \"c2VjcmV0\" } ] }\n");
    snprintf(text, sizeof(text),
             HEAD "  \"auth\": { \"jwt\": { \"issuer\": \"i\", \"audience\": [\"a\"],\n"
                  "    \"jwks_file\": \"%s\" } },\n" ROUTES "}\n",
             jwks);
    struct lg_conf_errors e;
    ck_assert_ptr_null(load(text, &e));
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 4);
    ck_assert_ptr_null(e.items[0].file);
    ck_assert_msg(strncmp(e.items[0].message, "auth.jwt.jwks_file: ", 20) == 0, "%s",
                  e.items[0].message);
    lg_conf_errors_free(&e);
    unlink(jwks);

    /* Errors in the API keys file name that file and its lines. */
    const char *keys = temp_file("{ \"keys\": [\n"
                                 "  { \"id\": \"a\", \"sha256\": \"xyz\" },\n"
                                 "  { \"id\": \"b\", \"sha256\": \"9f86d081884c7d659a2feaa0c55ad015"
                                 "a3bf4f1b2b0b822cd15d6c15b0f00a08\", \"bogus\": 1 }\n"
                                 "] }\n");
    char keys_path[64];
    snprintf(keys_path, sizeof(keys_path), "%s", keys);
    snprintf(text, sizeof(text),
             HEAD "  \"lisen\": 1,\n"
                  "  \"auth\": { \"api_keys\": { \"file\": \"%s\" } },\n" ROUTES "}\n",
             keys_path);
    ck_assert_ptr_null(load(text, &e));
    /* The config's own error first: the keys file is read only when the
     * config is otherwise valid. */
    ck_assert_uint_eq(e.count, 1);
    ck_assert_int_eq(e.items[0].line, 3);
    lg_conf_errors_free(&e);
    snprintf(text, sizeof(text),
             HEAD "  \"auth\": { \"api_keys\": { \"file\": \"%s\" } },\n" ROUTES "}\n", keys_path);
    ck_assert_ptr_null(load(text, &e));
    ck_assert_uint_eq(e.count, 2);
    ck_assert_str_eq(e.items[0].file, keys_path);
    ck_assert_int_eq(e.items[0].line, 2);
    ck_assert_str_eq(e.items[1].file, keys_path);
    ck_assert_int_eq(e.items[1].line, 3);
    char buf[2048] = "";
    FILE *fp = fmemopen(buf, sizeof(buf) - 1, "w");
    ck_assert_ptr_nonnull(fp);
    lg_conf_errors_print(&e, "/etc/lambdagate/lambdagate.json", fp);
    fclose(fp);
    char want[128];
    snprintf(want, sizeof(want), "%s:2: ", keys_path);
    ck_assert_msg(strncmp(buf, want, strlen(want)) == 0, "%s", buf);
    lg_conf_errors_free(&e);
    unlink(keys_path);
}
END_TEST

START_TEST(test_load_without_error_list)
{
    /* errors may be NULL: nothing leaks, the result is still right. */
    ck_assert_ptr_null(lg_conf_load_text(INLINE_PATH, "{", 1, NULL));
    ck_assert_ptr_null(lg_conf_load("/nonexistent/lambdagate.json", NULL));
    struct lg_conf *c = lg_conf_load(CONF_DIR "/minimal.json", NULL);
    ck_assert_ptr_nonnull(c);
    lg_conf_unref(c);
    lg_conf_unref(NULL);
}
END_TEST

static void *ref_worker(void *arg)
{
    struct lg_conf *c = arg;
    for (int i = 0; i < 10000; i++)
        lg_conf_unref(lg_conf_ref(c));
    return NULL;
}

START_TEST(test_refcount)
{
    struct lg_conf *c = load_ok_file(CONF_DIR "/minimal.json");
    ck_assert_int_eq(c->refcount, 1);
    ck_assert_ptr_eq(lg_conf_ref(c), c);
    ck_assert_int_eq(c->refcount, 2);
    lg_conf_unref(c);
    ck_assert_int_eq(c->refcount, 1);
    ck_assert_str_eq(c->routes[0].path, "/hello"); /* still alive */

    pthread_t t[4];
    for (size_t i = 0; i < LG_ARRAY_LEN(t); i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, ref_worker, c), 0);
    for (size_t i = 0; i < LG_ARRAY_LEN(t); i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(c->refcount, 1);
    lg_conf_unref(c); /* the last reference frees; LeakSanitizer checks it */
}
END_TEST

/* ------------------------------------------------------------------------
 * Addresses and CIDRs
 * ------------------------------------------------------------------------ */

START_TEST(test_parse_address)
{
    struct lg_conf_address a;
    char err[LG_ERR_LEN];
    ck_assert_int_eq(lg_conf_parse_address("0.0.0.0:1", &a, err, sizeof(err)), 0);
    ck_assert_int_eq(a.sa.ss_family, AF_INET);
    ck_assert_int_eq(port_of(&a), 1);
    free(a.text);
    ck_assert_int_eq(lg_conf_parse_address("[::]:65535", &a, err, sizeof(err)), 0);
    ck_assert_int_eq(a.sa.ss_family, AF_INET6);
    ck_assert_int_eq(port_of(&a), 65535);
    ck_assert_str_eq(a.text, "[::]:65535");
    free(a.text);

    static const char *const bad[] = {"",
                                      "127.0.0.1",
                                      ":80",
                                      "1.2.3:80",
                                      "1.2.3.4:",
                                      "1.2.3.4:0",
                                      "1.2.3.4:65536",
                                      "1.2.3.4:+80",
                                      "1.2.3.4:8a",
                                      "[::1]80",
                                      "[::1:80",
                                      "[]:80",
                                      "[1.2.3.4]:80",
                                      "::1:80",
                                      "host:80",
                                      "1.2.3.4:080800"};
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        ck_assert_msg(lg_conf_parse_address(bad[i], &a, err, sizeof(err)) == -1, "accepted %s",
                      bad[i]);
        ck_assert_ptr_null(a.text);
    }
}
END_TEST

static struct sockaddr_storage sa_of(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
    }
    return ss;
}

static bool contains(const char *cidr, const char *ip)
{
    struct lg_conf_cidr c;
    char err[LG_ERR_LEN];
    ck_assert_msg(lg_conf_parse_cidr(cidr, &c, err, sizeof(err)) == 0, "%s: %s", cidr, err);
    struct sockaddr_storage ss = sa_of(ip);
    return lg_conf_cidr_contains(&c, (const struct sockaddr *)&ss);
}

START_TEST(test_cidr_parse)
{
    struct lg_conf_cidr c;
    char err[LG_ERR_LEN];
    ck_assert_int_eq(lg_conf_parse_cidr("192.0.2.7", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.family, AF_INET);
    ck_assert_int_eq(c.prefix, 32);
    ck_assert_uint_eq(c.addr[3], 7);
    ck_assert_int_eq(lg_conf_parse_cidr("::1", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.family, AF_INET6);
    ck_assert_int_eq(c.prefix, 128);
    ck_assert_int_eq(lg_conf_parse_cidr("0.0.0.0/0", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.prefix, 0);
    ck_assert_int_eq(lg_conf_parse_cidr("2001:db8::/32", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.prefix, 32);
    ck_assert_uint_eq(c.addr[0], 0x20);
    ck_assert_uint_eq(c.addr[3], 0xb8);

    /* Host bits are refused, naming the network that was probably meant. */
    ck_assert_int_eq(lg_conf_parse_cidr("10.1.2.3/8", &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "host bits are set; the network is \"10.0.0.0/8\"");
    ck_assert_int_eq(lg_conf_parse_cidr("2001:db8::1/64", &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "host bits are set; the network is \"2001:db8::/64\"");
    ck_assert_int_eq(lg_conf_parse_cidr("192.168.1.0/23", &c, err, sizeof(err)), -1);

    static const char *const bad[] = {
        "",           "/8",          "10.0.0.0/",    "10.0.0.0/33", "10.0.0.0/08",
        "::/129",     "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0/8",    "x/8",
        "10.0.0.0/ 8"};
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        ck_assert_msg(lg_conf_parse_cidr(bad[i], &c, err, sizeof(err)) == -1, "accepted %s",
                      bad[i]);
}
END_TEST

START_TEST(test_cidr_contains)
{
    /* IPv4 */
    ck_assert(contains("10.0.0.0/8", "10.1.2.3"));
    ck_assert(contains("10.0.0.0/8", "10.255.255.255"));
    ck_assert(!contains("10.0.0.0/8", "11.0.0.0"));
    ck_assert(contains("192.168.0.0/23", "192.168.1.255"));
    ck_assert(!contains("192.168.0.0/23", "192.168.2.0"));
    ck_assert(contains("192.0.2.7", "192.0.2.7"));
    ck_assert(!contains("192.0.2.7", "192.0.2.8"));
    ck_assert(contains("0.0.0.0/0", "203.0.113.9"));
    /* IPv6 */
    ck_assert(contains("2001:db8::/32", "2001:db8:ffff::1"));
    ck_assert(!contains("2001:db8::/32", "2001:db9::1"));
    ck_assert(contains("fe80::/10", "febf::1"));
    ck_assert(!contains("fe80::/10", "fec0::1"));
    ck_assert(contains("::1", "::1"));
    /* IPv4-mapped IPv6 clients of a dual-stack socket match IPv4 networks. */
    ck_assert(contains("10.0.0.0/8", "::ffff:10.1.2.3"));
    ck_assert(!contains("10.0.0.0/8", "::ffff:11.1.2.3"));
    ck_assert(!contains("10.0.0.0/8", "::10.1.2.3")); /* not mapped: IPv4-compatible */
    ck_assert(!contains("0.0.0.0/0", "2001:db8::1"));
    /* and IPv4 addresses match the mapped range. */
    ck_assert(contains("::ffff:0:0/96", "192.0.2.1"));
    ck_assert(!contains("2001:db8::/32", "192.0.2.1"));

    struct lg_conf_cidr c;
    char err[LG_ERR_LEN];
    ck_assert_int_eq(lg_conf_parse_cidr("10.0.0.0/8", &c, err, sizeof(err)), 0);
    ck_assert(!lg_conf_cidr_contains(&c, NULL));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    ck_assert(!lg_conf_cidr_contains(&c, (const struct sockaddr *)&ss));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conf");
    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 30);
    tcase_add_test(files, test_minimal_defaults);
    tcase_add_test(files, test_full_config);
    tcase_add_test(files, test_comments);
    tcase_add_test(files, test_example_config);
    tcase_add_test(files, test_null_settings);
    suite_add_tcase(s, files);

    TCase *errors = tcase_create("errors");
    tcase_set_timeout(errors, 30);
    tcase_add_test(errors, test_error_unknown_key);
    tcase_add_test(errors, test_error_type);
    tcase_add_test(errors, test_error_range);
    tcase_add_test(errors, test_error_address);
    tcase_add_test(errors, test_error_cidr);
    tcase_add_test(errors, test_error_unreadable_file);
    tcase_add_test(errors, test_error_method);
    tcase_add_test(errors, test_error_template);
    tcase_add_test(errors, test_error_duplicate_route);
    tcase_add_test(errors, test_error_function);
    tcase_add_test(errors, test_error_double_qualifier);
    tcase_add_test(errors, test_error_auth_requirements);
    tcase_add_test(errors, test_error_jwks_url);
    tcase_add_test(errors, test_error_cors);
    tcase_add_test(errors, test_error_duplicate_key);
    tcase_add_test(errors, test_error_missing_required);
    tcase_add_test(errors, test_error_syntax);
    tcase_add_test(errors, test_error_limits);
    tcase_add_test(errors, test_error_no_secrets);
    tcase_add_test(errors, test_many_errors);
    suite_add_tcase(s, errors);

    TCase *derived = tcase_create("derived");
    tcase_set_timeout(derived, 30);
    tcase_add_test(derived, test_function_paths);
    tcase_add_test(derived, test_endpoints_per_region);
    tcase_add_test(derived, test_endpoint_override);
    tcase_add_test(derived, test_region);
    tcase_add_test(derived, test_lowercasing);
    tcase_add_test(derived, test_tls_listener);
    suite_add_tcase(s, derived);

    TCase *api = tcase_create("api");
    tcase_set_timeout(api, 30);
    tcase_add_test(api, test_errors_print);
    tcase_add_test(api, test_load_without_error_list);
    tcase_add_test(api, test_refcount);
    tcase_add_test(api, test_parse_address);
    tcase_add_test(api, test_auth_files_loaded);
    tcase_add_test(api, test_auth_file_errors);
    tcase_add_test(api, test_cidr_parse);
    tcase_add_test(api, test_cidr_contains);
    suite_add_tcase(s, api);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
