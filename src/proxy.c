/* proxy.c - the request pipeline: route, CORS, invoke, map the answer.
 *
 * Order per request: CORS preflight (answered here, Lambda not called),
 * routing (404 / 405 / 400), the per-worker in-flight cap (503), the proxy
 * event (413 past Lambda's payload limits), the Invoke call, and the
 * mapping of its outcome (CONTRACT section 5). Nothing of a function's
 * error or of Lambda's error bodies reaches the client. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <event2/buffer.h>

#include "lambdagate/cache.h"
#include "lambdagate/codec.h"
#include "lambdagate/event.h"
#include "lambdagate/lambda.h"
#include "lambdagate/log.h"
#include "lambdagate/metrics.h"
#include "lambdagate/proxy.h"

/* Headers we add to an answer beyond the function's own. */
#define EXTRA_HEADERS 12

/* The longest method we route; longer ones cannot match a route. */
#define METHOD_MAX 32

static const struct lg_http_header *find_header(const struct lg_req *req, const char *name)
{
    return lg_http_find(req->head.headers, req->head.nheaders, name);
}

static void header_set(struct lg_http_header *h, const char *name, const char *value, size_t len)
{
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = len;
}

static bool origin_allowed(const struct lg_conf_cors *cors, const struct lg_http_header *origin)
{
    if (cors->any_origin)
        return true;
    for (size_t i = 0; i < cors->nallow_origins; i++) {
        if (lg_http_ieq(origin->value, origin->value_len, cors->allow_origins[i]))
            return true;
    }
    return false;
}

/* The CORS headers of a non-preflight answer on a route with cors (as API
 * Gateway's HTTP APIs add them). Returns how many were written to out
 * (room for 4). */
static size_t cors_answer_headers(const struct lg_req *req, const struct lg_conf_cors *cors,
                                  struct lg_http_header *out)
{
    size_t n = 0;
    const struct lg_http_header *origin = find_header(req, "origin");
    bool echo = !cors->any_origin || cors->allow_credentials;
    if (echo)
        header_set(&out[n++], "Vary", "Origin", 6);
    if (origin == NULL || !origin_allowed(cors, origin))
        return n;
    if (echo)
        header_set(&out[n++], "Access-Control-Allow-Origin", origin->value, origin->value_len);
    else
        header_set(&out[n++], "Access-Control-Allow-Origin", "*", 1);
    if (cors->allow_credentials)
        header_set(&out[n++], "Access-Control-Allow-Credentials", "true", 4);
    if (cors->expose_headers)
        header_set(&out[n++], "Access-Control-Expose-Headers", cors->expose_headers,
                   strlen(cors->expose_headers));
    return n;
}

/* Text of the RateLimit-* values, alive while an answer is sent. */
struct ratelimit_text {
    char v[3][24];
};

/* RateLimit-Limit, -Remaining and -Reset once the request went through a
 * bucket (CONTRACT section 8), and X-Cache on a cached route. Returns how
 * many were written (at most 4). */
static size_t ratelimit_headers(const struct lg_req *req, struct ratelimit_text *t,
                                struct lg_http_header *out)
{
    size_t n = 0;
    if (req->cache)
        header_set(&out[n++], "X-Cache", req->cache, strlen(req->cache));
    if (!req->has_ratelimit)
        return n;
    const struct lg_rl_result *r = &req->ratelimit;
    size_t l0 = lg_codec_i64(t->v[0], r->limit);
    size_t l1 = lg_codec_i64(t->v[1], r->remaining);
    size_t l2 = lg_codec_i64(t->v[2], r->reset_s);
    header_set(&out[n++], "RateLimit-Limit", t->v[0], l0);
    header_set(&out[n++], "RateLimit-Remaining", t->v[1], l1);
    header_set(&out[n++], "RateLimit-Reset", t->v[2], l2);
    return n;
}

/* Answer {"message": ...} with the route's CORS headers (when it has CORS),
 * the RateLimit-* ones (when throttled) and the extra ones. */
static void respond_message(struct lg_req *req, int status, const char *message,
                            const struct lg_http_header *extra, size_t nextra)
{
    struct lg_http_header headers[EXTRA_HEADERS];
    struct ratelimit_text rt;
    size_t n = 0;
    if (req->route && req->route->cors)
        n = cors_answer_headers(req, req->route->cors, headers);
    n += ratelimit_headers(req, &rt, headers + n);
    for (size_t i = 0; i < nextra && n < LG_ARRAY_LEN(headers); i++)
        headers[n++] = extra[i];
    lg_req_respond_message(req, status, message, headers, n);
}

/* A CORS preflight for a route with cors: 204, Lambda not called. An
 * origin that is not allowed gets no Access-Control-* headers. Returns
 * false when no route of the path has CORS (the request is routed as an
 * ordinary OPTIONS). */
static bool preflight(struct lg_req *req, const struct lg_http_header *origin,
                      const struct lg_http_header *acrm)
{
    char method[METHOD_MAX + 1];
    if (acrm->value_len == 0 || acrm->value_len > METHOD_MAX)
        return false;
    memcpy(method, acrm->value, acrm->value_len);
    method[acrm->value_len] = '\0';

    struct lg_router_match m;
    const struct lg_conf_route *route = NULL;
    if (lg_router_match(req->conf->router, method, req->path, req->path_len, &m) ==
        LG_ROUTER_FOUND) {
        route = m.route;
        lg_router_match_clear(&m);
    }
    if (route == NULL || route->cors == NULL) {
        route = NULL;
        if (lg_router_match(req->conf->router, NULL, req->path, req->path_len, &m) ==
            LG_ROUTER_FOUND) {
            route = m.route;
            lg_router_match_clear(&m);
        }
    }
    if (route == NULL || route->cors == NULL)
        return false;
    req->route = route;

    const struct lg_conf_cors *cors = route->cors;
    struct lg_http_header headers[8];
    size_t n = 0;
    bool echo = !cors->any_origin || cors->allow_credentials;
    if (echo)
        header_set(&headers[n++], "Vary", "Origin", 6);
    char max_age[24];
    if (origin_allowed(cors, origin)) {
        if (echo)
            header_set(&headers[n++], "Access-Control-Allow-Origin", origin->value,
                       origin->value_len);
        else
            header_set(&headers[n++], "Access-Control-Allow-Origin", "*", 1);
        /* "*" in the lists is answered with what was asked, which browsers
         * accept with credentials too. */
        if (cors->nmethods == 1 && strcmp(cors->methods[0], "*") == 0)
            header_set(&headers[n++], "Access-Control-Allow-Methods", acrm->value, acrm->value_len);
        else if (cors->allow_methods)
            header_set(&headers[n++], "Access-Control-Allow-Methods", cors->allow_methods,
                       strlen(cors->allow_methods));
        if (cors->allow_headers) {
            const struct lg_http_header *acrh = find_header(req, "access-control-request-headers");
            if (strcmp(cors->allow_headers, "*") == 0 && acrh)
                header_set(&headers[n++], "Access-Control-Allow-Headers", acrh->value,
                           acrh->value_len);
            else
                header_set(&headers[n++], "Access-Control-Allow-Headers", cors->allow_headers,
                           strlen(cors->allow_headers));
        }
        if (cors->max_age_s > 0) {
            snprintf(max_age, sizeof(max_age), "%lld", (long long)cors->max_age_s);
            header_set(&headers[n++], "Access-Control-Max-Age", max_age, strlen(max_age));
        }
        if (cors->allow_credentials)
            header_set(&headers[n++], "Access-Control-Allow-Credentials", "true", 4);
    }
    lg_req_respond(req, 204, headers, n, NULL, 0, false);
    return true;
}

static void log_lambda(const struct lg_req *req, enum lg_log_level level,
                       const struct lg_lambda_result *res)
{
    /* The detail may quote what Lambda (or the network) said. */
    char detail[LG_ERR_LEN];
    lg_log_req(level, req->id,
               "lambda invocation failed route=\"%s\" function=%s outcome=%s status=%d "
               "detail=\"%s\"",
               req->route->route_key, req->route->function, lg_lambda_outcome_name(res->outcome),
               res->http_status, lg_log_cleaned(detail, sizeof(detail), res->detail));
}

/* Send a function's answer (fresh, or from the cache with its Age): its
 * headers (less any Access-Control-* when the route answers CORS itself,
 * as API Gateway ignores the backend's), then ours. With take_body the
 * body (malloc'd) is handed over. */
static void respond_answer(struct lg_req *req, int status, const struct lg_http_header *fh,
                           size_t nfh, void *body, size_t len, bool take_body, int64_t age_s)
{
    const struct lg_conf_cors *cors = req->route->cors;
    size_t cap = nfh + EXTRA_HEADERS;
    struct lg_http_header local[32];
    struct lg_http_header *headers =
        cap <= LG_ARRAY_LEN(local) ? local : calloc(cap, sizeof(*headers));
    if (headers == NULL) {
        if (take_body)
            free(body);
        respond_message(req, 502, "Internal server error", NULL, 0);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < nfh; i++) {
        const struct lg_http_header *h = &fh[i];
        if (cors && h->name_len >= 15 && strncasecmp(h->name, "access-control-", 15) == 0)
            continue;
        /* On a cached route X-Cache and Age are ours, never the function's. */
        if (req->route->cache && (lg_http_ieq(h->name, h->name_len, "x-cache") ||
                                  lg_http_ieq(h->name, h->name_len, "age")))
            continue;
        headers[n++] = *h;
    }
    if (cors)
        n += cors_answer_headers(req, cors, headers + n);
    struct ratelimit_text rt;
    n += ratelimit_headers(req, &rt, headers + n);
    char age[24];
    if (age_s >= 0) {
        snprintf(age, sizeof(age), "%lld", (long long)age_s);
        header_set(&headers[n++], "Age", age, strlen(age));
    }
    lg_req_respond(req, status, headers, n, body, len, take_body);
    if (headers != local)
        free(headers);
}

static void respond_function(struct lg_req *req, struct lg_event_response *r)
{
    if (req->cache_fill)
        (void)lg_cache_req_store(req->cache_req, r->status, r->headers, r->nheaders, r->body.data,
                                 r->body.len, lg_wall_ms());
    size_t len;
    char *body = lg_buf_steal(&r->body, &len);
    respond_answer(req, r->status, r->headers, r->nheaders, body, len, true, -1);
}

/* Serve a cache entry: X-Cache (HIT or STALE) and its Age. */
static void respond_entry(struct lg_req *req, const struct lg_cache_entry *e, const char *what)
{
    req->cache = what; /* counted in the metrics when the request ends */
    int64_t age = (lg_wall_ms() - e->stored_ms) / 1000;
    respond_answer(req, e->status, e->headers, e->nheaders, e->body, e->body_len, false,
                   age > 0 ? age : 0);
}

/* stale_if_error: the function failed (or Lambda throttled) and an expired
 * entry is still within its window: serve it instead of the error. */
static bool respond_stale(struct lg_req *req)
{
    const struct lg_cache_entry *e = lg_cache_req_stale(req->cache_req, lg_wall_ms());
    if (e == NULL)
        return false;
    lg_log_req(LG_LOG_INFO, req->id, "function failed, serving a stale cache entry route=\"%s\"",
               req->route->route_key);
    respond_entry(req, e, "STALE");
    return true;
}

static void on_lambda_done(const struct lg_lambda_result *res, void *arg)
{
    struct lg_req *req = arg;
    req->call = NULL;
    if (req->counted_inflight) {
        (*lg_worker_inflight(req->worker))--;
        req->counted_inflight = false;
    }
    req->lambda_us = res->duration_us;
    const struct lg_conf_route *route = req->route;
    lg_metrics_invocation(route->function, lg_lambda_outcome_name(res->outcome));

    switch (res->outcome) {
    case LG_LAMBDA_OK:
        if (route->invocation == LG_INVOKE_ASYNC) {
            struct lg_http_header headers[EXTRA_HEADERS];
            struct ratelimit_text rt;
            size_t n = route->cors ? cors_answer_headers(req, route->cors, headers) : 0;
            n += ratelimit_headers(req, &rt, headers + n);
            lg_req_respond(req, 202, headers, n, NULL, 0, false);
            return;
        } else {
            struct lg_event_response r;
            char err[LG_ERR_LEN];
            if (lg_event_parse_response(route->payload_format, res->payload, res->payload_len, &r,
                                        err, sizeof(err)) != 0) {
                /* The reason names the field, never its contents. */
                lg_log_req(LG_LOG_WARN, req->id,
                           "malformed Lambda proxy response route=\"%s\" function=%s "
                           "reason=\"%s\"",
                           route->route_key, route->function, err);
                lg_event_response_free(&r);
                if (!respond_stale(req))
                    respond_message(req, 502, "Internal server error", NULL, 0);
                return;
            }
            if (r.status < 200) {
                /* A 1xx cannot end an exchange: the client would wait for
                 * another answer. */
                lg_log_req(LG_LOG_WARN, req->id,
                           "malformed Lambda proxy response route=\"%s\" function=%s "
                           "reason=\"statusCode %d is informational\"",
                           route->route_key, route->function, r.status);
                lg_event_response_free(&r);
                if (!respond_stale(req))
                    respond_message(req, 502, "Internal server error", NULL, 0);
                return;
            }
            respond_function(req, &r);
            lg_event_response_free(&r);
            return;
        }
    case LG_LAMBDA_FUNCTION_ERROR:
        log_lambda(req, LG_LOG_WARN, res);
        if (!respond_stale(req))
            respond_message(req, 502, "Internal server error", NULL, 0);
        return;
    case LG_LAMBDA_THROTTLED: {
        log_lambda(req, LG_LOG_INFO, res);
        lg_metrics_refused(LG_REASON_LAMBDA);
        if (respond_stale(req))
            return;
        char retry[24];
        snprintf(retry, sizeof(retry), "%lld",
                 (long long)(res->retry_after_s > 0 ? res->retry_after_s : 1));
        struct lg_http_header h;
        header_set(&h, "Retry-After", retry, strlen(retry));
        respond_message(req, 429, "Too Many Requests", &h, 1);
        return;
    }
    case LG_LAMBDA_TOO_LARGE:
        log_lambda(req, LG_LOG_INFO, res);
        respond_message(req, 413, "Request Entity Too Large", NULL, 0);
        return;
    case LG_LAMBDA_TIMEOUT:
        log_lambda(req, LG_LOG_WARN, res);
        if (!respond_stale(req))
            respond_message(req, 504, "Endpoint request timed out", NULL, 0);
        return;
    case LG_LAMBDA_ERROR:
        log_lambda(req, LG_LOG_WARN, res);
        if (!respond_stale(req))
            respond_message(req, 502, "Internal server error", NULL, 0);
        return;
    }
}

static void invoke(struct lg_req *req, const char *method);
static void authenticate(struct lg_req *req, bool retry);
static void throttle(struct lg_req *req);
static void cache_step(struct lg_req *req);
static void proceed(struct lg_req *req);

static void on_auth_wake(void *arg)
{
    struct lg_req *req = arg;
    req->auth_wait = NULL;
    authenticate(req, true);
}

/* The route's authenticator (CONTRACT section 5): 401 with
 * WWW-Authenticate, 403, or on to the function. The reason goes to the
 * diagnostic log, never to the client. */
static void authenticate(struct lg_req *req, bool retry)
{
    const struct lg_conf_route *route = req->route;
    enum lg_auth_outcome outcome =
        lg_auth_check(lg_worker_auth(req->worker), req->conf, route, req->head.headers,
                      req->head.nheaders, retry, &req->auth, on_auth_wake, req, &req->auth_wait);
    struct lg_http_header h;
    switch (outcome) {
    case LG_AUTH_PENDING:
        return;
    case LG_AUTH_PASS:
        req->identity = req->auth.identity_text;
        break;
    case LG_AUTH_UNAUTHORIZED:
        lg_log_req(LG_LOG_INFO, req->id, "authentication failed route=\"%s\" reason=\"%s\"",
                   route->route_key, req->auth.reason);
        if (req->auth.token_sent)
            header_set(&h, "WWW-Authenticate", LG_LITERAL("Bearer error=\"invalid_token\""));
        else
            header_set(&h, "WWW-Authenticate", LG_LITERAL("Bearer"));
        respond_message(req, 401, "Unauthorized", &h, 1);
        return;
    case LG_AUTH_FORBIDDEN:
        lg_log_req(LG_LOG_INFO, req->id, "authentication failed route=\"%s\" reason=\"%s\"",
                   route->route_key, req->auth.reason);
        if (req->auth.insufficient_scope) {
            header_set(&h, "WWW-Authenticate", LG_LITERAL("Bearer error=\"insufficient_scope\""));
            respond_message(req, 403, "Forbidden", &h, 1);
        } else {
            respond_message(req, 403, "Forbidden", NULL, 0);
        }
        return;
    }
    throttle(req);
}

/* On to the function once throttling let the request through. */
static void proceed(struct lg_req *req)
{
    char method[METHOD_MAX + 1];
    memcpy(method, req->head.method, req->head.method_len);
    method[req->head.method_len] = '\0';
    invoke(req, method);
}

static void throttle_done(struct lg_req *req, const struct lg_throttle_result *res)
{
    if (res->has_headers) {
        req->has_ratelimit = true;
        req->ratelimit = res->headers;
    }
    if (res->allowed) {
        cache_step(req);
        return;
    }
    req->throttled = true;
    lg_metrics_refused(res->reason);
    lg_log_req(LG_LOG_INFO, req->id, "throttled route=\"%s\" reason=%s retry_after=%lld",
               req->route->route_key, lg_metrics_reason_name(res->reason),
               (long long)res->retry_after_s);
    char retry[24];
    snprintf(retry, sizeof(retry), "%lld", (long long)res->retry_after_s);
    struct lg_http_header h;
    header_set(&h, "Retry-After", retry, strlen(retry));
    respond_message(req, 429, "Too Many Requests", &h, 1);
}

static void cache_outcome(struct lg_req *req, enum lg_cache_outcome outcome)
{
    switch (outcome) {
    case LG_CACHE_HIT:
        respond_entry(req, lg_cache_req_hit(req->cache_req), "HIT");
        return;
    case LG_CACHE_FILL:
        req->cache = "MISS";
        req->cache_fill = true;
        break;
    case LG_CACHE_BYPASS:
    case LG_CACHE_PENDING:
        req->cache = "BYPASS";
        break;
    }
    proceed(req);
}

static void on_cache(struct lg_cache_req *cr, enum lg_cache_outcome outcome, void *arg)
{
    (void)cr;
    cache_outcome(arg, outcome);
}

/* cache.invalidation: may this caller force a refetch with
 * Cache-Control: max-age=0? */
static bool may_invalidate(const struct lg_req *req)
{
    switch (req->conf->cache.invalidation) {
    case LG_INVALIDATE_ANYONE:
        return true;
    case LG_INVALIDATE_NEVER:
        return false;
    case LG_INVALIDATE_AUTHENTICATED:
        break;
    }
    return req->route->auth != LG_AUTH_NONE && req->auth.outcome == LG_AUTH_PASS &&
           req->auth.identity_text != NULL;
}

/* A cached route (CONTRACT section 5): GET and HEAD are looked up (HEAD
 * shares GET's entries), other methods bypass the cache. Throttling and
 * authentication came first: a refused caller never sees a cached answer. */
static void cache_step(struct lg_req *req)
{
    const struct lg_conf_route *route = req->route;
    if (route->cache == NULL) {
        proceed(req);
        return;
    }
    struct lg_conf *conf = req->conf;
    bool get = lg_http_ieq(req->head.method, req->head.method_len, "GET") || req->is_head;
    if (!get) {
        cache_outcome(req, LG_CACHE_BYPASS);
        return;
    }
    struct lg_cache_key_input in = {
        .method = "GET",
        .route = route,
        .match = &req->match,
        .raw_query = req->query,
        .raw_query_len = req->query_len,
        .headers = req->head.headers,
        .nheaders = req->head.nheaders,
        .identity = req->auth.identity_text ? req->auth.identity_text : req->source_ip,
    };
    uint8_t key[LG_CACHE_KEY_LEN];
    lg_cache_key(&in, key);
    bool refetch =
        lg_cache_request_refetch(req->head.headers, req->head.nheaders) && may_invalidate(req);
    struct lg_cache_req_params params = {
        .base = lg_worker_base(req->worker),
        .mem = lg_worker_cache(req->worker),
        .redis = conf->cache.store == LG_STORE_REDIS ? lg_worker_redis(req->worker, conf) : NULL,
        .redis_prefix = conf->redis.prefix,
        .route = route,
        .default_ttl_s = conf->cache.ttl_s,
        .refetch = refetch,
        .now_ms = lg_wall_ms(),
    };
    if (params.redis == NULL && conf->cache.store == LG_STORE_REDIS) {
        cache_outcome(req, LG_CACHE_BYPASS);
        return;
    }
    enum lg_cache_outcome outcome;
    req->cache_req = lg_cache_req_start(&params, key, on_cache, req, &outcome);
    if (outcome != LG_CACHE_PENDING)
        cache_outcome(req, outcome);
}

static void on_throttled(const struct lg_throttle_result *res, void *arg)
{
    struct lg_req *req = arg;
    req->throttle_call = NULL;
    throttle_done(req, res);
}

/* The caller's buckets and quota (CONTRACT sections 3 and 8), after
 * authentication so that the identity is known. */
static void throttle(struct lg_req *req)
{
    struct lg_conf *conf = req->conf;
    struct lg_throttle_request tr = {
        .conf = conf,
        .route = req->route,
        .identity = req->auth.identity_text ? req->auth.identity_text : req->source_ip,
        .api_key = req->auth.api_key,
        .now_s = req->time_ms / 1000,
    };
    struct lg_redis *redis =
        conf->throttle.store == LG_STORE_REDIS ? lg_worker_redis(req->worker, conf) : NULL;
    struct lg_throttle_result res;
    if (lg_throttle_decide(lg_worker_ratelimit(req->worker), redis, lg_worker_throttle(req->worker),
                           &tr, &res, on_throttled, req, &req->throttle_call) == 1)
        return;
    throttle_done(req, &res);
}

/* limits.allow and limits.deny: a denied address, or one outside a
 * non-empty allow list. */
static bool address_allowed(const struct lg_conf_limits *l, const char *ip)
{
    if (l->nallow == 0 && l->ndeny == 0)
        return true;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            return false;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            return false;
    }
    for (size_t i = 0; i < l->ndeny; i++)
        if (lg_conf_cidr_contains(&l->deny[i], (const struct sockaddr *)&ss))
            return false;
    if (l->nallow == 0)
        return true;
    for (size_t i = 0; i < l->nallow; i++)
        if (lg_conf_cidr_contains(&l->allow[i], (const struct sockaddr *)&ss))
            return true;
    return false;
}

void lg_proxy_handle(struct lg_req *req)
{
    const struct lg_conf *conf = req->conf;
    char method[METHOD_MAX + 1];
    if (req->head.method_len > METHOD_MAX) {
        lg_req_respond_message(req, 501, "Not Implemented", NULL, 0);
        return;
    }
    memcpy(method, req->head.method, req->head.method_len);
    method[req->head.method_len] = '\0';

    /* Refusals that come before anything else (CONTRACT section 8). */
    if (!address_allowed(&conf->limits, req->source_ip)) {
        lg_metrics_refused(LG_REASON_DENY);
        lg_req_respond_message(req, 403, "Forbidden", NULL, 0);
        return;
    }
    int64_t retry_after;
    if (!lg_throttle_per_ip(lg_worker_ratelimit(req->worker), conf, req->source_ip, &retry_after)) {
        req->throttled = true;
        lg_metrics_refused(LG_REASON_PER_IP);
        char retry[24];
        snprintf(retry, sizeof(retry), "%lld", (long long)retry_after);
        struct lg_http_header h;
        header_set(&h, "Retry-After", retry, strlen(retry));
        lg_req_respond_message(req, 429, "Too Many Requests", &h, 1);
        return;
    }

    if (strcmp(method, "OPTIONS") == 0) {
        const struct lg_http_header *origin = find_header(req, "origin");
        const struct lg_http_header *acrm = find_header(req, "access-control-request-method");
        if (origin && acrm && preflight(req, origin, acrm))
            return;
    }

    enum lg_router_result rr =
        lg_router_match(conf->router, method, req->path, req->path_len, &req->match);
    switch (rr) {
    case LG_ROUTER_NOT_FOUND:
        lg_req_respond_message(req, 404, "Not Found", NULL, 0);
        return;
    case LG_ROUTER_METHOD_NOT_ALLOWED: {
        struct lg_http_header allow;
        header_set(&allow, "Allow", req->match.allow, strlen(req->match.allow));
        lg_req_respond_message(req, 405, "Method Not Allowed", &allow, 1);
        return;
    }
    case LG_ROUTER_BAD_PATH:
        lg_req_respond_message(req, 400, "Bad Request", NULL, 0);
        return;
    case LG_ROUTER_FOUND:
        break;
    }
    req->matched = true;
    req->route = req->match.route;
    if (req->route->auth != LG_AUTH_NONE) {
        authenticate(req, false);
        return;
    }
    throttle(req);
}

/* Invoke the route's function for req, whose caller (if the route wants
 * one) has been authenticated. */
static void invoke(struct lg_req *req, const char *method)
{
    const struct lg_conf *conf = req->conf;
    const struct lg_conf_route *route = req->route;
    int64_t *inflight = lg_worker_inflight(req->worker);
    if (*inflight >= conf->limits.max_inflight) {
        struct lg_http_header h;
        header_set(&h, "Retry-After", "1", 1);
        lg_log_req(LG_LOG_WARN, req->id, "too many Lambda invocations in flight route=\"%s\"",
                   route->route_key);
        lg_metrics_refused(LG_REASON_MAX_INFLIGHT);
        respond_message(req, 503, "Service Unavailable", &h, 1);
        return;
    }

    /* A GET route serving HEAD invokes the function as for GET; the body
     * of its answer is dropped. */
    const char *event_method = method;
    /* So does a HEAD on a cached route: its answer fills GET's entry. */
    if (req->is_head && (strcmp(route->method, "GET") == 0 || route->cache))
        event_method = "GET";
    size_t body_len = evbuffer_get_length(req->body);
    const void *body = body_len ? evbuffer_pullup(req->body, -1) : NULL;
    struct lg_event_request in = {
        .method = event_method,
        .method_len = strlen(event_method),
        .raw_path = req->path,
        .raw_path_len = req->path_len,
        .raw_query = req->query,
        .raw_query_len = req->query_len,
        .headers = req->head.headers,
        .nheaders = req->head.nheaders,
        .body = body,
        .body_len = body_len,
        .source_ip = req->source_ip,
        .protocol = req->head.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1",
        .scheme = req->scheme,
        .server_port = req->server_port,
        .request_id = req->id,
        .time_ms = req->time_ms,
        .route = route,
        .match = &req->match,
        .identity = req->auth.outcome == LG_AUTH_PASS && req->auth.identity.kind != LG_IDENTITY_NONE
                        ? &req->auth.identity
                        : NULL,
    };
    size_t limit = route->invocation == LG_INVOKE_ASYNC ? LG_LAMBDA_ASYNC_PAYLOAD_MAX
                                                        : LG_LAMBDA_SYNC_PAYLOAD_MAX;
    /* Bound the event's memory: room for a base64 body at the limit and its
     * headers, so only a body already past the limit can hit the bound. */
    struct lg_buf payload;
    lg_buf_init(&payload, 2 * limit + 1048576);
    char err[LG_ERR_LEN];
    if (lg_event_build(&in, &payload, err, sizeof(err)) != 0) {
        bool too_large = body_len > limit;
        lg_buf_free(&payload);
        if (too_large) {
            respond_message(req, 413, "Request Entity Too Large", NULL, 0);
        } else {
            lg_log_req(LG_LOG_INFO, req->id, "cannot build the event reason=\"%s\"", err);
            respond_message(req, 400, "Bad Request", NULL, 0);
        }
        return;
    }
    if (payload.len > limit) {
        lg_buf_free(&payload);
        respond_message(req, 413, "Request Entity Too Large", NULL, 0);
        return;
    }
    req->call = lg_lambda_invoke(lg_worker_lambda(req->worker), conf, route, &payload, req->id,
                                 on_lambda_done, req);
    lg_buf_free(&payload);
    if (req->call == NULL) {
        struct lg_http_header h;
        header_set(&h, "Retry-After", "1", 1);
        respond_message(req, 503, "Service Unavailable", &h, 1);
        return;
    }
    (*inflight)++;
    req->counted_inflight = true;
}

void lg_proxy_abort(struct lg_req *req)
{
    /* A pending key set wait, Redis decision or cache step is released
     * with the request (req_free); only the Invoke call and the in-flight
     * count are ours to undo here. */
    if (req->call) {
        lg_lambda_cancel(req->call);
        req->call = NULL;
    }
    if (req->counted_inflight) {
        (*lg_worker_inflight(req->worker))--;
        req->counted_inflight = false;
    }
}
