/* test_cache.c - cache keys, storable rules, entries, encoding, memory store, fill locks. */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/buf.h"
#include "lambdagate/cache.h"

/* ---- Helpers ---------------------------------------------------------- */

/* Headers from a NULL-terminated list of name, value strings (NULL: none). */
struct hdrs {
    struct lg_http_header h[512];
    size_t n;
};

static void hdrs_set(struct hdrs *out, const char *const *nv)
{
    out->n = 0;
    for (size_t i = 0; nv && nv[i]; i += 2) {
        ck_assert_uint_lt(out->n, LG_ARRAY_LEN(out->h));
        out->h[out->n++] =
            (struct lg_http_header){nv[i], strlen(nv[i]), nv[i + 1], strlen(nv[i + 1])};
    }
}

#define HDRS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* A cached route like the config loader makes one: key_query and
 * key_headers as given (header names lowercased, as the loader does). */
struct test_route {
    struct lg_conf_route route;
    struct lg_conf_route_cache cache;
};

static char *key_query_items[] = {"sort", "lang", "my key"};
static char *key_header_items[] = {"x-tenant", "accept-language"};

static void route_init(struct test_route *t, const char *route_key, bool per_user)
{
    memset(t, 0, sizeof(*t));
    t->route.route_key = (char *)route_key;
    t->route.cache = &t->cache;
    t->cache.ttl_s = 60;
    t->cache.key_query = key_query_items;
    t->cache.nkey_query = LG_ARRAY_LEN(key_query_items);
    t->cache.key_headers = key_header_items;
    t->cache.nkey_headers = LG_ARRAY_LEN(key_header_items);
    t->cache.per_user = per_user;
}

/* The key of a request to t with path parameter id, raw query q (NULL:
 * none), headers nv and identity. */
static void key_of(const struct test_route *t, const char *method, const char *id, const char *q,
                   const char *const *nv, const char *identity, uint8_t out[LG_CACHE_KEY_LEN])
{
    static char id_name[] = "id";
    char value[64];
    snprintf(value, sizeof(value), "%s", id);
    struct lg_router_match m;
    memset(&m, 0, sizeof(m));
    m.nparams = 1;
    m.params[0] = (struct lg_router_param){id_name, value, strlen(value)};
    struct hdrs h;
    hdrs_set(&h, nv);
    struct lg_cache_key_input in = {
        .method = method,
        .route = &t->route,
        .match = &m,
        .raw_query = q,
        .raw_query_len = q ? strlen(q) : 0,
        .headers = h.h,
        .nheaders = h.n,
        .identity = identity,
    };
    lg_cache_key(&in, out);
}

static struct test_route rt_shared, rt_per_user, rt_other;

static void key_setup(void)
{
    route_init(&rt_shared, "GET /items/{id}", false);
    route_init(&rt_per_user, "GET /items/{id}", true);
    route_init(&rt_other, "GET /things/{id}", false);
}

/* Keys of two requests to one route, compared. */
static bool same_key(const struct test_route *t, const char *qa, const char *const *ha,
                     const char *qb, const char *const *hb)
{
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN];
    key_of(t, "GET", "42", qa, ha, NULL, a);
    key_of(t, "GET", "42", qb, hb, NULL, b);
    return memcmp(a, b, sizeof(a)) == 0;
}

#define NOH ((const char *const *)NULL)

/* ---- Keys ------------------------------------------------------------- */

START_TEST(test_key_deterministic_and_hex)
{
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN];
    key_of(&rt_shared, "GET", "42", "lang=en", HDRS("x-tenant", "t1"), NULL, a);
    key_of(&rt_shared, "GET", "42", "lang=en", HDRS("x-tenant", "t1"), NULL, b);
    ck_assert_mem_eq(a, b, LG_CACHE_KEY_LEN);
    uint8_t zero[LG_CACHE_KEY_LEN] = {0};
    ck_assert_int_ne(memcmp(a, zero, LG_CACHE_KEY_LEN), 0);

    uint8_t k[LG_CACHE_KEY_LEN];
    for (size_t i = 0; i < LG_CACHE_KEY_LEN; i++)
        k[i] = (uint8_t)(i * 8 + 1);
    char hex[2 * LG_CACHE_KEY_LEN + 1];
    lg_cache_key_hex(k, hex);
    ck_assert_str_eq(hex, "0109111921293139414951596169717981899199a1a9b1b9c1c9d1d9e1e9f1f9");
}
END_TEST

START_TEST(test_key_query_order_independent)
{
    ck_assert(same_key(&rt_shared, "lang=en&sort=asc", NOH, "sort=asc&lang=en", NOH));
    ck_assert(same_key(&rt_shared, "x=1&lang=en&y=2&sort=asc", NOH, "sort=asc&lang=en", NOH));
    ck_assert(same_key(&rt_shared, "&&lang=en&", NOH, "lang=en", NOH));
    ck_assert(!same_key(&rt_shared, "lang=en&sort=asc", NOH, "lang=asc&sort=en", NOH));
}
END_TEST

START_TEST(test_key_query_unnamed_ignored)
{
    ck_assert(same_key(&rt_shared, "lang=en&department=A", NOH, "lang=en&department=B", NOH));
    ck_assert(same_key(&rt_shared, "lang=en&page=1&page=2", NOH, "lang=en", NOH));
    ck_assert(same_key(&rt_shared, NULL, NOH, "other=1", NOH));
    ck_assert(same_key(&rt_shared, NULL, NOH, "", NOH));
}
END_TEST

START_TEST(test_key_query_names_and_values)
{
    /* names: exact and case-sensitive, compared after percent-decoding */
    ck_assert(!same_key(&rt_shared, "lang=en", NOH, "Lang=en", NOH));
    ck_assert(same_key(&rt_shared, "Lang=en", NOH, NULL, NOH));
    ck_assert(same_key(&rt_shared, "la%6Eg=en", NOH, "lang=en", NOH));
    ck_assert(same_key(&rt_shared, "my+key=1", NOH, "my%20key=1", NOH));
    ck_assert(!same_key(&rt_shared, "my+key=1", NOH, NULL, NOH));
    /* a malformed escape names nothing */
    ck_assert(same_key(&rt_shared, "la%6=en", NOH, NULL, NOH));
    ck_assert(same_key(&rt_shared, "lang%00=en", NOH, NULL, NOH));
    /* values as sent: not decoded, case-sensitive */
    ck_assert(!same_key(&rt_shared, "lang=en%20US", NOH, "lang=en+US", NOH));
    ck_assert(!same_key(&rt_shared, "lang=en", NOH, "lang=EN", NOH));
    ck_assert(!same_key(&rt_shared, "lang=e%6E", NOH, "lang=en", NOH));
    /* a value containing '=' is kept whole */
    ck_assert(!same_key(&rt_shared, "lang=a=b", NOH, "lang=a", NOH));
}
END_TEST

START_TEST(test_key_query_absent_vs_empty)
{
    ck_assert(!same_key(&rt_shared, "lang=", NOH, NULL, NOH));
    ck_assert(!same_key(&rt_shared, "lang", NOH, "", NOH));
    ck_assert(same_key(&rt_shared, "lang", NOH, "lang=", NOH));
    /* one empty value differs from two */
    ck_assert(!same_key(&rt_shared, "lang=", NOH, "lang=&lang=", NOH));
}
END_TEST

START_TEST(test_key_query_repeated)
{
    ck_assert(!same_key(&rt_shared, "lang=en&lang=fr", NOH, "lang=fr&lang=en", NOH));
    ck_assert(!same_key(&rt_shared, "lang=en&lang=fr", NOH, "lang=en", NOH));
    ck_assert(same_key(&rt_shared, "lang=en&sort=a&lang=fr", NOH, "sort=a&lang=en&lang=fr", NOH));
    /* length prefixes: values never run together */
    ck_assert(!same_key(&rt_shared, "lang=a&lang=bc", NOH, "lang=ab&lang=c", NOH));
    ck_assert(!same_key(&rt_shared, "lang=ab", NOH, "lang=a&lang=b", NOH));
    /* nor does a value slide from one parameter into the next */
    ck_assert(!same_key(&rt_shared, "lang=x&sort=", NOH, "lang=&sort=x", NOH));
}
END_TEST

START_TEST(test_key_headers)
{
    /* order independent across names */
    ck_assert(same_key(&rt_shared, NULL, HDRS("x-tenant", "t1", "accept-language", "en"), NULL,
                       HDRS("accept-language", "en", "x-tenant", "t1")));
    /* names case-insensitive, values case-sensitive */
    ck_assert(same_key(&rt_shared, NULL, HDRS("X-Tenant", "t1"), NULL, HDRS("x-tenant", "t1")));
    ck_assert(same_key(&rt_shared, NULL, HDRS("ACCEPT-LANGUAGE", "en"), NULL,
                       HDRS("Accept-Language", "en")));
    ck_assert(!same_key(&rt_shared, NULL, HDRS("x-tenant", "t1"), NULL, HDRS("x-tenant", "T1")));
    /* unnamed headers do not split */
    ck_assert(same_key(&rt_shared, NULL, HDRS("x-tenant", "t1", "user-agent", "a"), NULL,
                       HDRS("user-agent", "b", "x-tenant", "t1", "accept", "*/*")));
    /* absent vs empty */
    ck_assert(!same_key(&rt_shared, NULL, HDRS("x-tenant", ""), NULL, NOH));
    /* repeated: in order */
    ck_assert(!same_key(&rt_shared, NULL, HDRS("x-tenant", "a", "x-tenant", "b"), NULL,
                        HDRS("x-tenant", "b", "x-tenant", "a")));
    ck_assert(same_key(&rt_shared, NULL,
                       HDRS("x-tenant", "a", "accept-language", "en", "X-TENANT", "b"), NULL,
                       HDRS("x-tenant", "a", "x-tenant", "b", "accept-language", "en")));
    ck_assert(!same_key(&rt_shared, NULL, HDRS("x-tenant", "a"), NULL,
                        HDRS("x-tenant", "a", "x-tenant", "a")));
    /* a header's value is not a query parameter's */
    ck_assert(!same_key(&rt_shared, "lang=en", NOH, NULL, HDRS("accept-language", "en")));
}
END_TEST

START_TEST(test_key_config_order_irrelevant)
{
    /* Two instances listing the names in different orders share keys. */
    static char *q2[] = {"my key", "lang", "sort", "lang"};
    static char *h2[] = {"accept-language", "x-tenant"};
    struct test_route other;
    route_init(&other, "GET /items/{id}", false);
    other.cache.key_query = q2;
    other.cache.nkey_query = LG_ARRAY_LEN(q2);
    other.cache.key_headers = h2;
    other.cache.nkey_headers = LG_ARRAY_LEN(h2);
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN];
    key_of(&rt_shared, "GET", "1", "lang=en&sort=x", HDRS("x-tenant", "t", "accept-language", "en"),
           NULL, a);
    key_of(&other, "GET", "1", "sort=x&lang=en", HDRS("accept-language", "en", "x-tenant", "t"),
           NULL, b);
    ck_assert_mem_eq(a, b, LG_CACHE_KEY_LEN);
}
END_TEST

START_TEST(test_key_per_user)
{
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN], c[LG_CACHE_KEY_LEN], d[LG_CACHE_KEY_LEN];
    key_of(&rt_per_user, "GET", "1", NULL, NOH, "alice", a);
    key_of(&rt_per_user, "GET", "1", NULL, NOH, "bob", b);
    key_of(&rt_per_user, "GET", "1", NULL, NOH, "alice", c);
    ck_assert_int_ne(memcmp(a, b, LG_CACHE_KEY_LEN), 0);
    ck_assert_mem_eq(a, c, LG_CACHE_KEY_LEN);
    /* no identity differs from the empty one and from any user */
    key_of(&rt_per_user, "GET", "1", NULL, NOH, NULL, c);
    key_of(&rt_per_user, "GET", "1", NULL, NOH, "", d);
    ck_assert_int_ne(memcmp(c, d, LG_CACHE_KEY_LEN), 0);
    ck_assert_int_ne(memcmp(c, a, LG_CACHE_KEY_LEN), 0);

    /* per_user false: identity ignored */
    key_of(&rt_shared, "GET", "1", NULL, NOH, "alice", a);
    key_of(&rt_shared, "GET", "1", NULL, NOH, "bob", b);
    key_of(&rt_shared, "GET", "1", NULL, NOH, NULL, c);
    ck_assert_mem_eq(a, b, LG_CACHE_KEY_LEN);
    ck_assert_mem_eq(a, c, LG_CACHE_KEY_LEN);
    /* shared and per-user entries never meet */
    key_of(&rt_per_user, "GET", "1", NULL, NOH, NULL, d);
    ck_assert_int_ne(memcmp(c, d, LG_CACHE_KEY_LEN), 0);
}
END_TEST

START_TEST(test_key_route_method_params)
{
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN];
    key_of(&rt_shared, "GET", "1", NULL, NOH, NULL, a);
    key_of(&rt_other, "GET", "1", NULL, NOH, NULL, b);
    ck_assert_int_ne(memcmp(a, b, LG_CACHE_KEY_LEN), 0);
    key_of(&rt_shared, "POST", "1", NULL, NOH, NULL, b);
    ck_assert_int_ne(memcmp(a, b, LG_CACHE_KEY_LEN), 0);
    /* HEAD shares GET's entries only because the caller passes "GET" */
    key_of(&rt_shared, "HEAD", "1", NULL, NOH, NULL, b);
    ck_assert_int_ne(memcmp(a, b, LG_CACHE_KEY_LEN), 0);
    key_of(&rt_shared, "GET", "2", NULL, NOH, NULL, b);
    ck_assert_int_ne(memcmp(a, b, LG_CACHE_KEY_LEN), 0);
    key_of(&rt_shared, "GET", "1", NULL, NOH, NULL, b);
    ck_assert_mem_eq(a, b, LG_CACHE_KEY_LEN);
}
END_TEST

START_TEST(test_key_route_without_names)
{
    /* A route caching on its path alone ignores every query and header. */
    struct test_route bare;
    route_init(&bare, "GET /items/{id}", false);
    bare.cache.nkey_query = 0;
    bare.cache.key_query = NULL;
    bare.cache.nkey_headers = 0;
    bare.cache.key_headers = NULL;
    ck_assert(same_key(&bare, "lang=en", HDRS("x-tenant", "a"), NULL, NOH));
}
END_TEST

/* ---- Storable --------------------------------------------------------- */

/* lg_cache_storable on headers nv: the TTL, or -1 when not storable. */
static int64_t storable(int status, const char *const *nv, size_t body_len, int64_t route_ttl)
{
    struct hdrs h;
    hdrs_set(&h, nv);
    int64_t ttl = 12345;
    bool ok = lg_cache_storable(status, h.h, h.n, body_len, route_ttl, &ttl);
    if (!ok)
        return -1;
    ck_assert_int_ge(ttl, 1);
    return ttl;
}

#define CC(v) HDRS("cache-control", v)

START_TEST(test_storable_ttl)
{
    ck_assert_int_eq(storable(200, NOH, 10, 60), 60);
    ck_assert_int_eq(storable(200, HDRS("content-type", "text/plain"), 10, 300), 300);
    ck_assert_int_eq(storable(200, CC("max-age=30"), 10, 60), 30);
    ck_assert_int_eq(storable(200, CC("max-age=600"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=60"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=1"), 10, 60), 1);
    ck_assert_int_eq(storable(200, CC("public, max-age=20"), 10, 60), 20);
    ck_assert_int_eq(storable(200, CC("  Max-Age = 20 , public"), 10, 60), 20);
    ck_assert_int_eq(storable(200, CC("MAX-AGE=25"), 10, 60), 25);
    ck_assert_int_eq(storable(200, CC("max-age=\"20\""), 10, 60), 20);
    /* s-maxage wins over max-age, either way */
    ck_assert_int_eq(storable(200, CC("max-age=30, s-maxage=10"), 10, 60), 10);
    ck_assert_int_eq(storable(200, CC("s-maxage=50, max-age=5"), 10, 60), 50);
    ck_assert_int_eq(storable(200, CC("s-maxage=500, max-age=5"), 10, 60), 60);
    /* several Cache-Control headers */
    ck_assert_int_eq(
        storable(200, HDRS("cache-control", "public", "Cache-Control", "max-age=15"), 10, 60), 15);
    /* a repeated max-age: the shorter */
    ck_assert_int_eq(storable(200, CC("max-age=40, max-age=20"), 10, 60), 20);
    /* the route's TTL is capped at LG_CACHE_TTL_MAX_S */
    ck_assert_int_eq(storable(200, NOH, 10, 7200), LG_CACHE_TTL_MAX_S);
    /* overflowing numbers are just very long */
    ck_assert_int_eq(storable(200, CC("max-age=99999999999999999999999999"), 10, 60), 60);
    /* a quoted comma does not split the directive list */
    ck_assert_int_eq(storable(200, CC("ext=\"a, no-store\", max-age=20"), 10, 60), 20);
    ck_assert_int_eq(storable(200, CC("ext=\"a\\\", no-store\", max-age=20"), 10, 60), 20);
}
END_TEST

START_TEST(test_storable_zero_and_garbage)
{
    ck_assert_int_eq(storable(200, CC("max-age=0"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("s-maxage=0, max-age=30"), 10, 60), -1);
    ck_assert_int_eq(storable(200, NOH, 10, 0), -1);
    /* garbage is absent */
    ck_assert_int_eq(storable(200, CC("max-age=abc"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=-5"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=10s"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=1.5"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age="), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=10 20"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("max-age=\"10"), 10, 60), 60);
    ck_assert_int_eq(storable(200, CC("s-maxage=x, max-age=30"), 10, 60), 30);
    ck_assert_int_eq(storable(200, CC(",,, ;;; = \"\" ,"), 10, 60), 60);
    /* garbage next to a valid value keeps the valid one */
    ck_assert_int_eq(storable(200, CC("max-age=x, max-age=30"), 10, 60), 30);
}
END_TEST

START_TEST(test_storable_refusals)
{
    ck_assert_int_eq(storable(200, CC("no-store"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("NO-STORE"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("public, max-age=60, no-store"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("private"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("private=\"x-user\""), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("no-cache"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("no-cache=\"set-cookie\", max-age=60"), 10, 60), -1);
    ck_assert_int_eq(storable(200, CC("no-store junk"), 10, 60), -1);
    ck_assert_int_eq(
        storable(200, HDRS("cache-control", "public", "cache-control", " private"), 10, 60), -1);
    /* names that only contain a directive are not it */
    ck_assert_int_eq(storable(200, CC("x-no-store, no-storex, privately"), 10, 60), 60);
    /* Set-Cookie, any case */
    ck_assert_int_eq(storable(200, HDRS("set-cookie", "a=b"), 10, 60), -1);
    ck_assert_int_eq(storable(200, HDRS("Set-Cookie", "a=b"), 10, 60), -1);
    ck_assert_int_eq(storable(200, HDRS("x-a", "1", "SET-COOKIE", ""), 10, 60), -1);
    ck_assert_int_eq(storable(200, HDRS("set-cookie2", "a=b"), 10, 60), 60);
    /* statuses */
    ck_assert_int_eq(storable(199, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(201, NOH, 10, 60), 60);
    ck_assert_int_eq(storable(204, NOH, 0, 60), 60);
    ck_assert_int_eq(storable(299, NOH, 10, 60), 60);
    ck_assert_int_eq(storable(300, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(301, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(304, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(404, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(429, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(500, NOH, 10, 60), -1);
    ck_assert_int_eq(storable(502, NOH, 10, 60), -1);
    /* size */
    ck_assert_int_eq(storable(200, NOH, LG_CACHE_ENTRY_MAX, 60), 60);
    ck_assert_int_eq(storable(200, NOH, LG_CACHE_ENTRY_MAX + 1, 60), -1);
    ck_assert_int_eq(storable(200, NOH, 1024 * 1024 + 1, 60), -1);
}
END_TEST

START_TEST(test_request_refetch)
{
    struct hdrs h;
    hdrs_set(&h, CC("max-age=0"));
    ck_assert(lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, CC("Max-Age = 0"));
    ck_assert(lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, HDRS("CACHE-CONTROL", "no-cache"));
    ck_assert(lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, HDRS("accept", "*/*", "cache-control", "max-stale", "cache-control", "max-age=0"));
    ck_assert(lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, CC("max-age=00"));
    ck_assert(lg_cache_request_refetch(h.h, h.n));

    hdrs_set(&h, CC("max-age=10"));
    ck_assert(!lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, CC("no-store"));
    ck_assert(!lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, CC("max-age=zero"));
    ck_assert(!lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, HDRS("pragma", "no-cache", "x-cache-control", "max-age=0"));
    ck_assert(!lg_cache_request_refetch(h.h, h.n));
    hdrs_set(&h, NOH);
    ck_assert(!lg_cache_request_refetch(h.h, h.n));
}
END_TEST

/* ---- Entries ---------------------------------------------------------- */

static void assert_header(const struct lg_cache_entry *e, size_t i, const char *name,
                          const char *value)
{
    ck_assert_uint_lt(i, e->nheaders);
    ck_assert_uint_eq(e->headers[i].name_len, strlen(name));
    ck_assert_uint_eq(e->headers[i].value_len, strlen(value));
    ck_assert_str_eq(e->headers[i].name, name);
    ck_assert_str_eq(e->headers[i].value, value);
}

START_TEST(test_entry_filtering)
{
    struct hdrs h;
    hdrs_set(&h,
             HDRS("Content-Type", "application/json", "Connection", "keep-alive, X-Hop",
                  "Keep-Alive", "timeout=5", "Proxy-Authenticate", "Basic", "proxy-authorization",
                  "x", "TE", "trailers", "Trailer", "x-t", "Transfer-Encoding", "chunked",
                  "Upgrade", "h2c", "Date", "Tue, 15 Nov 1994 08:12:31 GMT", "Content-Length", "17",
                  "X-Request-Id", "abc", "Age", "4", "X-Cache", "HIT", "x-hop", "1",
                  "Cache-Control", "max-age=30", "X-Custom", "Value With Case", "x-empty", "",
                  "vary", "Accept", "bad name", "v", "x-crlf", "a\r\nb"));
    const char body[] = "{\"ok\":true}";
    struct lg_cache_entry *e =
        lg_cache_entry_new(203, h.h, h.n, body, sizeof(body) - 1, 1000, 30000, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->refcount, 1);
    ck_assert_int_eq(e->status, 203);
    ck_assert_uint_eq(e->nheaders, 5);
    assert_header(e, 0, "Content-Type", "application/json");
    assert_header(e, 1, "Cache-Control", "max-age=30");
    assert_header(e, 2, "X-Custom", "Value With Case");
    assert_header(e, 3, "x-empty", "");
    assert_header(e, 4, "vary", "Accept");
    ck_assert_uint_eq(e->body_len, sizeof(body) - 1);
    ck_assert_mem_eq(e->body, body, sizeof(body) - 1);
    ck_assert_int_eq(e->stored_ms, 1000);
    ck_assert_int_eq(e->ttl_ms, 30000);
    ck_assert_int_eq(e->stale_ms, 5000);
    size_t text = strlen("Content-Typeapplication/json") + strlen("Cache-Controlmax-age=30") +
                  strlen("X-CustomValue With Case") + strlen("x-empty") + strlen("varyAccept");
    ck_assert_uint_eq(e->size, 128 + (sizeof(body) - 1) + text + 5 * 32);

    /* the copies are the entry's own */
    ck_assert_ptr_ne(e->headers[0].name, h.h[0].name);
    ck_assert_ptr_ne(e->body, body);

    ck_assert_ptr_eq(lg_cache_entry_ref(e), e);
    ck_assert_int_eq(e->refcount, 2);
    lg_cache_entry_unref(e);
    ck_assert_int_eq(e->refcount, 1);
    lg_cache_entry_unref(e);
    lg_cache_entry_unref(NULL);
}
END_TEST

START_TEST(test_entry_empty)
{
    struct lg_cache_entry *e = lg_cache_entry_new(204, NULL, 0, NULL, 0, 5, 1000, 0);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->nheaders, 0);
    ck_assert_ptr_null(e->body);
    ck_assert_uint_eq(e->body_len, 0);
    ck_assert_uint_eq(e->size, 128);
    lg_cache_entry_unref(e);
}
END_TEST

/* ---- Encoding --------------------------------------------------------- */

static void put_be(struct lg_buf *b, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        ck_assert_int_eq(lg_buf_putc(b, (char)(unsigned char)(v >> (8 * i))), 0);
}

static void put_str(struct lg_buf *b, const char *s, size_t n, int len_bytes)
{
    put_be(b, n, len_bytes);
    ck_assert_int_eq(lg_buf_append(b, s, n), 0);
}

/* The encoding spelled out field by field, for crafting inputs. */
static void craft(struct lg_buf *b, int version, int status, int64_t stored, int64_t ttl,
                  int64_t stale, size_t nheaders, const char *const *nv, const char *body,
                  size_t body_len)
{
    lg_buf_init(b, 0);
    put_be(b, (uint64_t)version, 1);
    put_be(b, (uint64_t)status, 2);
    put_be(b, (uint64_t)stored, 8);
    put_be(b, (uint64_t)ttl, 8);
    put_be(b, (uint64_t)stale, 8);
    put_be(b, nheaders, 2);
    for (size_t i = 0; nv && nv[i]; i += 2) {
        put_str(b, nv[i], strlen(nv[i]), 2);
        put_str(b, nv[i + 1], strlen(nv[i + 1]), 4);
    }
    put_str(b, body, body_len, 4);
}

static void assert_entries_equal(const struct lg_cache_entry *a, const struct lg_cache_entry *b)
{
    ck_assert_int_eq(a->status, b->status);
    ck_assert_int_eq(a->stored_ms, b->stored_ms);
    ck_assert_int_eq(a->ttl_ms, b->ttl_ms);
    ck_assert_int_eq(a->stale_ms, b->stale_ms);
    ck_assert_uint_eq(a->size, b->size);
    ck_assert_uint_eq(a->nheaders, b->nheaders);
    for (size_t i = 0; i < a->nheaders; i++) {
        ck_assert_uint_eq(a->headers[i].name_len, b->headers[i].name_len);
        ck_assert_uint_eq(a->headers[i].value_len, b->headers[i].value_len);
        ck_assert_mem_eq(a->headers[i].name, b->headers[i].name, a->headers[i].name_len);
        ck_assert_mem_eq(a->headers[i].value, b->headers[i].value, a->headers[i].value_len);
        ck_assert_int_eq(b->headers[i].name[b->headers[i].name_len], '\0');
        ck_assert_int_eq(b->headers[i].value[b->headers[i].value_len], '\0');
    }
    ck_assert_uint_eq(a->body_len, b->body_len);
    if (a->body_len)
        ck_assert_mem_eq(a->body, b->body, a->body_len);
    else
        ck_assert_ptr_null(b->body);
}

START_TEST(test_encode_format)
{
    struct hdrs h;
    hdrs_set(&h, HDRS("content-type", "text/plain", "x-a", ""));
    struct lg_cache_entry *e =
        lg_cache_entry_new(200, h.h, h.n, "hi", 2, 1700000000123, 60000, 1000);
    ck_assert_ptr_nonnull(e);
    struct lg_buf out, want;
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_buf_puts(&out, "prefix"), 0);
    ck_assert_int_eq(lg_cache_encode(e, &out), 0);
    craft(&want, 1, 200, 1700000000123, 60000, 1000, 2,
          HDRS("content-type", "text/plain", "x-a", ""), "hi", 2);
    ck_assert_uint_eq(out.len, 6 + want.len);
    ck_assert_mem_eq(out.data, "prefix", 6);
    ck_assert_mem_eq(out.data + 6, want.data, want.len);
    ck_assert_uint_eq(want.len, 29 + (6 + 12 + 10) + (6 + 3) + 4 + 2);
    lg_buf_free(&out);
    lg_buf_free(&want);
    lg_cache_entry_unref(e);
}
END_TEST

START_TEST(test_roundtrip_binary)
{
    char body[600];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(i * 7 + (i >> 8)); /* every byte value, NULs included */
    body[0] = '\0';
    body[1] = (char)0xc3; /* invalid UTF-8: a lone lead byte, then 0xff */
    body[2] = (char)0xff;
    struct hdrs h;
    hdrs_set(&h, HDRS("content-type", "application/octet-stream", "x-utf8", "caf\xc3\xa9", "x-tab",
                      "a\tb", "x-rep", "1", "x-rep", "2"));
    struct lg_cache_entry *e =
        lg_cache_entry_new(206, h.h, h.n, body, sizeof(body), 1234567, 3600000, 86400000);
    ck_assert_ptr_nonnull(e);
    struct lg_buf out;
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_cache_encode(e, &out), 0);
    struct lg_cache_entry *d = lg_cache_decode(out.data, out.len);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(d->refcount, 1);
    assert_entries_equal(e, d);
    ck_assert_mem_eq(d->body, body, sizeof(body));

    /* and again: the encoding of the decoded entry is the same bytes */
    struct lg_buf again;
    lg_buf_init(&again, 0);
    ck_assert_int_eq(lg_cache_encode(d, &again), 0);
    ck_assert_uint_eq(again.len, out.len);
    ck_assert_mem_eq(again.data, out.data, out.len);

    lg_buf_free(&again);
    lg_buf_free(&out);
    lg_cache_entry_unref(d);
    lg_cache_entry_unref(e);
}
END_TEST

START_TEST(test_roundtrip_empty_and_largest)
{
    struct lg_cache_entry *e = lg_cache_entry_new(204, NULL, 0, NULL, 0, 0, 0, 0);
    struct lg_buf out;
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_cache_encode(e, &out), 0);
    ck_assert_uint_eq(out.len, 33);
    struct lg_cache_entry *d = lg_cache_decode(out.data, out.len);
    ck_assert_ptr_nonnull(d);
    assert_entries_equal(e, d);
    lg_cache_entry_unref(d);
    lg_cache_entry_unref(e);
    lg_buf_free(&out);

    char *big = malloc(LG_CACHE_ENTRY_MAX + 1);
    ck_assert_ptr_nonnull(big);
    memset(big, 0xab, LG_CACHE_ENTRY_MAX + 1);
    e = lg_cache_entry_new(200, NULL, 0, big, LG_CACHE_ENTRY_MAX, 1, 1, 1);
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_cache_encode(e, &out), 0);
    d = lg_cache_decode(out.data, out.len);
    ck_assert_ptr_nonnull(d);
    assert_entries_equal(e, d);
    lg_cache_entry_unref(d);
    lg_cache_entry_unref(e);
    lg_buf_free(&out);

    /* one byte more: not encoded, and a crafted one is not decoded */
    e = lg_cache_entry_new(200, NULL, 0, big, LG_CACHE_ENTRY_MAX + 1, 1, 1, 1);
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_cache_encode(e, &out), -1);
    ck_assert_uint_eq(out.len, 0);
    lg_cache_entry_unref(e);
    lg_buf_free(&out);
    craft(&out, 1, 200, 1, 1, 1, 0, NULL, big, LG_CACHE_ENTRY_MAX + 1);
    ck_assert_ptr_null(lg_cache_decode(out.data, out.len));
    lg_buf_free(&out);
    free(big);
}
END_TEST

START_TEST(test_decode_truncated_everywhere)
{
    struct lg_buf b;
    craft(&b, 1, 200, 1000, 2000, 3000, 2, HDRS("content-type", "text/plain", "x-b", "v"),
          "body\0bytes", 10);
    struct lg_cache_entry *full = lg_cache_decode(b.data, b.len);
    ck_assert_ptr_nonnull(full);
    ck_assert_uint_eq(full->body_len, 10);
    ck_assert_mem_eq(full->body, "body\0bytes", 10);
    lg_cache_entry_unref(full);
    /* Each prefix is refused; a copy of exactly that many bytes lets ASan
     * catch any read past the end. */
    for (size_t n = 0; n < b.len; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, b.data, n);
        ck_assert_msg(lg_cache_decode(copy, n) == NULL, "prefix of %zu bytes decoded", n);
        free(copy);
    }
    /* a trailing byte too */
    ck_assert_int_eq(lg_buf_putc(&b, 0), 0);
    ck_assert_ptr_null(lg_cache_decode(b.data, b.len));
    ck_assert_ptr_null(lg_cache_decode(NULL, 0));
    lg_buf_free(&b);
}
END_TEST

/* A crafted input that must be refused. */
static void expect_refused(struct lg_buf *b, const char *what)
{
    ck_assert_msg(lg_cache_decode(b->data, b->len) == NULL, "%s decoded", what);
    lg_buf_free(b);
}

/* A crafted input that must decode; returns the entry. */
static struct lg_cache_entry *expect_decoded(struct lg_buf *b, const char *what)
{
    struct lg_cache_entry *e = lg_cache_decode(b->data, b->len);
    ck_assert_msg(e != NULL, "%s refused", what);
    lg_buf_free(b);
    return e;
}

START_TEST(test_decode_hostile)
{
    struct lg_buf b;
    const char *const ok_headers[] = {"x-a", "1", NULL};

    craft(&b, 1, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    lg_cache_entry_unref(expect_decoded(&b, "the control case"));

    craft(&b, 0, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "version 0");
    craft(&b, 2, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "version 2");
    craft(&b, 1, 500, 1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "status 500");
    craft(&b, 1, 199, 1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "status 199");
    craft(&b, 1, 300, 1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "status 300");
    craft(&b, 1, 200, -1, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "negative stored time");
    craft(&b, 1, 200, 1, -1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "negative ttl");
    craft(&b, 1, 200, 1, 1, -1, 1, ok_headers, "x", 1);
    expect_refused(&b, "negative stale");
    craft(&b, 1, 200, 1, (int64_t)LG_CACHE_TTL_MAX_S * 1000 + 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "ttl over the maximum");
    craft(&b, 1, 200, INT64_MAX, 1, 1, 1, ok_headers, "x", 1);
    expect_refused(&b, "stored time at INT64_MAX");

    /* header contents */
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("x-a", "a\r\nInjected: 1"), "x", 1);
    expect_refused(&b, "CRLF in a value");
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("x-a", "a\nb"), "x", 1);
    expect_refused(&b, "LF in a value");
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("x-a", "a\rb"), "x", 1);
    expect_refused(&b, "CR in a value");
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("bad name", "v"), "x", 1);
    expect_refused(&b, "a space in a name");
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("x-a:", "v"), "x", 1);
    expect_refused(&b, "a colon in a name");
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("", "v"), "x", 1);
    expect_refused(&b, "an empty name");
    /* a NUL in a value, spelled by hand */
    craft(&b, 1, 200, 1, 1, 1, 1, HDRS("x-a", "aZb"), "x", 1);
    b.data[29 + 2 + 3 + 4 + 1] = '\0';
    expect_refused(&b, "NUL in a value");

    /* counts and lengths that lie */
    craft(&b, 1, 200, 1, 1, 1, 2, ok_headers, "x", 1);
    expect_refused(&b, "more headers announced than present");
    craft(&b, 1, 200, 1, 1, 1, 0, ok_headers, "x", 1);
    expect_refused(&b, "fewer headers announced than present");
    craft(&b, 1, 200, 1, 1, 1, 0xffff, NULL, "x", 1);
    expect_refused(&b, "65535 headers announced");

    /* a body length of 4 GiB - 1 */
    craft(&b, 1, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    memset(b.data + b.len - 5, 0xff, 4);
    expect_refused(&b, "huge body length");
    /* a value length of 4 GiB - 1 */
    craft(&b, 1, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    memset(b.data + 29 + 2 + 3, 0xff, 4);
    expect_refused(&b, "huge value length");
    /* a name length of 65535 */
    craft(&b, 1, 200, 1, 1, 1, 1, ok_headers, "x", 1);
    memset(b.data + 29, 0xff, 2);
    expect_refused(&b, "huge name length");

    /* an input over the bound, whatever it says */
    char *huge = calloc(1, LG_CACHE_ENTRY_MAX + 64 * 1024 + 1);
    huge[0] = 1;
    ck_assert_ptr_null(lg_cache_decode(huge, LG_CACHE_ENTRY_MAX + 64 * 1024 + 1));
    free(huge);
}
END_TEST

START_TEST(test_decode_header_count_limit)
{
    /* 256 headers decode; 257 and 300 do not, even when all present */
    static char names[300][8];
    const char *nv[2 * 300 + 1];
    for (size_t i = 0; i < 300; i++) {
        snprintf(names[i], sizeof(names[i]), "x-%zu", i);
        nv[2 * i] = names[i];
        nv[2 * i + 1] = "v";
    }
    struct lg_buf b;
    nv[2 * 256] = NULL;
    craft(&b, 1, 200, 1, 1, 1, 256, nv, "", 0);
    struct lg_cache_entry *e = expect_decoded(&b, "256 headers");
    ck_assert_uint_eq(e->nheaders, 256);
    ck_assert_str_eq(e->headers[255].name, "x-255");
    lg_cache_entry_unref(e);

    nv[2 * 256] = names[256];
    nv[2 * 257] = NULL;
    craft(&b, 1, 200, 1, 1, 1, 257, nv, "", 0);
    expect_refused(&b, "257 headers");

    nv[2 * 257] = names[257];
    nv[2 * 300] = NULL;
    craft(&b, 1, 200, 1, 1, 1, 300, nv, "", 0);
    expect_refused(&b, "300 headers");

    /* and encoding refuses what decoding would */
    struct hdrs h;
    hdrs_set(&h, nv);
    e = lg_cache_entry_new(200, h.h, h.n, NULL, 0, 1, 1, 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->nheaders, 300);
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_cache_encode(e, &b), -1);
    lg_cache_entry_unref(e);
    e = lg_cache_entry_new(500, NULL, 0, NULL, 0, 1, 1, 1);
    ck_assert_int_eq(lg_cache_encode(e, &b), -1);
    lg_cache_entry_unref(e);
    ck_assert_uint_eq(b.len, 0);
    lg_buf_free(&b);
}
END_TEST

/* ---- Memory store ----------------------------------------------------- */

/* A key from a small number, and an entry whose size is exactly size
 * bytes (128 of overhead plus a body). */
static void mkey(uint8_t key[LG_CACHE_KEY_LEN], unsigned n)
{
    memset(key, 0, LG_CACHE_KEY_LEN);
    memcpy(key, &n, sizeof(n));
    key[LG_CACHE_KEY_LEN - 1] = 0x5a;
}

static struct lg_cache_entry *sized(size_t size, int64_t stored, int64_t ttl, int64_t stale)
{
    ck_assert_uint_ge(size, 128);
    char *body = malloc(size);
    memset(body, 'b', size);
    struct lg_cache_entry *e =
        lg_cache_entry_new(200, NULL, 0, body, size - 128, stored, ttl, stale);
    free(body);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->size, size);
    return e;
}

/* Put a new entry of size bytes under n and drop our reference. */
static void put_sized(struct lg_cache_mem *m, unsigned n, size_t size)
{
    uint8_t key[LG_CACHE_KEY_LEN];
    mkey(key, n);
    struct lg_cache_entry *e = sized(size, 0, 1000000, 0);
    lg_cache_mem_put(m, key, e);
    lg_cache_entry_unref(e);
}

static bool has(struct lg_cache_mem *m, unsigned n)
{
    uint8_t key[LG_CACHE_KEY_LEN];
    mkey(key, n);
    struct lg_cache_entry *e = lg_cache_mem_get(m, key, 1);
    lg_cache_entry_unref(e);
    return e != NULL;
}

START_TEST(test_mem_lru_order)
{
    struct lg_cache_mem *m = lg_cache_mem_new(1000);
    ck_assert_ptr_nonnull(m);
    put_sized(m, 1, 300);
    put_sized(m, 2, 300);
    put_sized(m, 3, 300);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 900);
    ck_assert_uint_eq(lg_cache_mem_count(m), 3);
    /* a fourth evicts the least recently used: 1 */
    put_sized(m, 4, 300);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 900);
    ck_assert_uint_eq(lg_cache_mem_count(m), 3);
    ck_assert(!has(m, 1));
    /* a get refreshes 2 (order now 3, 4, 2): the next put evicts 3 */
    ck_assert(has(m, 2));
    put_sized(m, 5, 300);
    ck_assert(!has(m, 3));
    ck_assert(has(m, 2));
    ck_assert(has(m, 4));
    ck_assert(has(m, 5));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 900);
    /* (the gets above left the order 2, 4, 5) a big one evicts as many as
     * needed, oldest first: 2, then 4 */
    put_sized(m, 6, 700);
    ck_assert_uint_eq(lg_cache_mem_count(m), 2);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 1000);
    ck_assert(has(m, 5));
    ck_assert(has(m, 6));
    ck_assert(!has(m, 4));
    ck_assert(!has(m, 2));
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_mem_replace_accounting)
{
    struct lg_cache_mem *m = lg_cache_mem_new(1000);
    uint8_t key[LG_CACHE_KEY_LEN];
    mkey(key, 7);
    struct lg_cache_entry *a = sized(300, 0, 1000000, 0);
    struct lg_cache_entry *b = sized(500, 0, 1000000, 0);
    lg_cache_mem_put(m, key, a);
    ck_assert_int_eq(a->refcount, 2);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 300);
    lg_cache_mem_put(m, key, b);
    ck_assert_int_eq(a->refcount, 1); /* the store let go of the old one */
    ck_assert_int_eq(b->refcount, 2);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 500);
    ck_assert_uint_eq(lg_cache_mem_count(m), 1);
    struct lg_cache_entry *got = lg_cache_mem_get(m, key, 1);
    ck_assert_ptr_eq(got, b);
    ck_assert_int_eq(b->refcount, 3);
    lg_cache_entry_unref(got);
    /* the same entry again changes nothing */
    lg_cache_mem_put(m, key, b);
    ck_assert_int_eq(b->refcount, 2);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 500);
    /* replacing, with others present, evicts only as needed */
    put_sized(m, 8, 400);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 900);
    lg_cache_mem_put(m, key, a); /* 500 -> 300 */
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 700);
    ck_assert_uint_eq(lg_cache_mem_count(m), 2);
    lg_cache_mem_free(m);
    ck_assert_int_eq(a->refcount, 1);
    ck_assert_int_eq(b->refcount, 1);
    lg_cache_entry_unref(a);
    lg_cache_entry_unref(b);
}
END_TEST

START_TEST(test_mem_oversize)
{
    struct lg_cache_mem *m = lg_cache_mem_new(1000);
    put_sized(m, 1, 1000); /* exactly the limit: stored */
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 1000);
    ck_assert(has(m, 1));
    put_sized(m, 2, 1001); /* not stored, and evicts nothing */
    ck_assert(!has(m, 2));
    ck_assert(has(m, 1));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 1000);
    /* an oversize replacement drops the old answer it supersedes */
    put_sized(m, 1, 1001);
    ck_assert(!has(m, 1));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 0);
    ck_assert_uint_eq(lg_cache_mem_count(m), 0);
    lg_cache_mem_free(m);

    m = lg_cache_mem_new(0);
    put_sized(m, 1, 128);
    ck_assert(!has(m, 1));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 0);
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_mem_expiry_and_stale)
{
    struct lg_cache_mem *m = lg_cache_mem_new(10000);
    uint8_t key[LG_CACHE_KEY_LEN];
    mkey(key, 3);
    struct lg_cache_entry *e = sized(200, 1000, 100, 50);
    lg_cache_mem_put(m, key, e);
    lg_cache_entry_unref(e);
    put_sized(m, 4, 300); /* a neighbour that lives on */

    int64_t alive[] = {0, 1000, 1099, 1100, 1149};
    for (size_t i = 0; i < LG_ARRAY_LEN(alive); i++) {
        struct lg_cache_entry *got = lg_cache_mem_get(m, key, alive[i]);
        ck_assert_msg(got != NULL, "gone at %lld", (long long)alive[i]);
        ck_assert_int_eq(got->stored_ms, 1000);
        lg_cache_entry_unref(got);
    }
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 500);
    /* past ttl + stale: dropped and counted out */
    ck_assert_ptr_null(lg_cache_mem_get(m, key, 1150));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 300);
    ck_assert_uint_eq(lg_cache_mem_count(m), 1);
    ck_assert_ptr_null(lg_cache_mem_get(m, key, 1000));

    /* no stale window: gone at ttl */
    e = sized(200, 1000, 100, 0);
    lg_cache_mem_put(m, key, e);
    lg_cache_entry_unref(e);
    e = lg_cache_mem_get(m, key, 1099);
    ck_assert_ptr_nonnull(e);
    lg_cache_entry_unref(e);
    ck_assert_ptr_null(lg_cache_mem_get(m, key, 1100));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 300);

    /* absurd times do not overflow into "fresh forever" or "always dead" */
    e = sized(200, INT64_MAX - 10, INT64_MAX, INT64_MAX);
    lg_cache_mem_put(m, key, e);
    lg_cache_entry_unref(e);
    e = lg_cache_mem_get(m, key, INT64_MAX - 1);
    ck_assert_ptr_nonnull(e);
    lg_cache_entry_unref(e);
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_mem_never_over_max)
{
    struct lg_cache_mem *m = lg_cache_mem_new(5000);
    unsigned seed = 12345;
    size_t present_bytes[64] = {0};
    for (unsigned i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % 64;
        size_t size = 128 + (seed >> 16) % 1500;
        put_sized(m, k, size);
        present_bytes[k] = size;
        ck_assert_uint_le(lg_cache_mem_bytes(m), 5000);
        ck_assert(has(m, k)); /* the newest always stays */
        if (i % 7 == 0) {
            uint8_t key[LG_CACHE_KEY_LEN];
            mkey(key, (seed >> 4) % 64);
            lg_cache_entry_unref(lg_cache_mem_get(m, key, 1));
        }
    }
    /* the bytes are the sum of what is there */
    size_t sum = 0, count = 0;
    for (unsigned k = 0; k < 64; k++) {
        if (has(m, k)) {
            sum += present_bytes[k];
            count++;
        }
    }
    ck_assert_uint_eq(lg_cache_mem_bytes(m), sum);
    ck_assert_uint_eq(lg_cache_mem_count(m), count);
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_mem_many_keys_table_growth)
{
    struct lg_cache_mem *m = lg_cache_mem_new(100000 * 128);
    for (unsigned k = 0; k < 20000; k++)
        put_sized(m, k, 128);
    ck_assert_uint_eq(lg_cache_mem_count(m), 20000);
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 20000 * 128);
    for (unsigned k = 0; k < 20000; k += 97)
        ck_assert(has(m, k));
    ck_assert(!has(m, 20000));
    lg_cache_mem_free(m);
}
END_TEST

/* Threads hammer one store; every entry's body names its key, so a mixup
 * would show. */
struct hammer {
    struct lg_cache_mem *m;
    size_t max;
    size_t body_max;
    unsigned id;
    unsigned hits;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    unsigned seed = h->id * 7919u + 1;
    for (unsigned i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % 300;
        uint8_t key[LG_CACHE_KEY_LEN];
        mkey(key, k);
        if ((seed >> 20) % 3 == 0) {
            size_t len = sizeof(unsigned) + 1 + (seed >> 12) % h->body_max;
            char *body = malloc(len);
            if (body == NULL)
                return (void *)1;
            memset(body, (int)(k & 0xff), len);
            memcpy(body, &k, sizeof(k));
            struct lg_cache_entry *e = lg_cache_entry_new(200, NULL, 0, body, len, 0, 1000000, 0);
            free(body);
            if (e == NULL)
                return (void *)1;
            lg_cache_mem_put(h->m, key, e);
            lg_cache_entry_unref(e);
        } else {
            struct lg_cache_entry *e = lg_cache_mem_get(h->m, key, 5);
            if (e) {
                unsigned got;
                memcpy(&got, e->body, sizeof(got));
                if (got != k || (unsigned char)e->body[e->body_len - 1] != (k & 0xff))
                    return (void *)2;
                h->hits++;
                lg_cache_entry_unref(e);
            }
        }
        if (i % 1000 == 0 && lg_cache_mem_bytes(h->m) > h->max)
            return (void *)3;
    }
    return NULL;
}

static void hammer_store(size_t max, size_t body_max)
{
    struct lg_cache_mem *m = lg_cache_mem_new(max);
    ck_assert_ptr_nonnull(m);
    pthread_t t[4];
    struct hammer h[4];
    for (unsigned i = 0; i < 4; i++) {
        h[i] = (struct hammer){m, max, body_max, i, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    unsigned hits = 0;
    for (unsigned i = 0; i < 4; i++) {
        void *rc;
        ck_assert_int_eq(pthread_join(t[i], &rc), 0);
        ck_assert_msg(rc == NULL, "thread %u failed with %p", i, rc);
        hits += h[i].hits;
    }
    ck_assert_uint_gt(hits, 0);
    ck_assert_uint_le(lg_cache_mem_bytes(m), max);
    ck_assert_uint_gt(lg_cache_mem_count(m), 0);
    lg_cache_mem_free(m);
}

START_TEST(test_mem_threads_one_shard)
{
    hammer_store(64 * 1024, 1500); /* small: one shard, constant eviction */
}
END_TEST

START_TEST(test_mem_threads_sharded)
{
    hammer_store(256u * 1024 * 1024, 1500); /* large: several shards */
}
END_TEST

START_TEST(test_mem_threads_sharded_tight)
{
    /* two shards of 8 MiB, and bodies up to 100 KB over 300 keys (about
     * 15 MB in all), so that eviction runs in both */
    hammer_store(16u * 1024 * 1024 + 3, 100000);
}
END_TEST

/* ---- Fill locks ------------------------------------------------------- */

START_TEST(test_lock_semantics)
{
    struct lg_cache_mem *m = lg_cache_mem_new(1 << 20);
    uint8_t a[LG_CACHE_KEY_LEN], b[LG_CACHE_KEY_LEN];
    mkey(a, 1);
    mkey(b, 2);
    ck_assert(!lg_cache_mem_locked(m, a));
    ck_assert(lg_cache_mem_lock(m, a, 1000, 500));
    ck_assert(lg_cache_mem_locked(m, a));
    ck_assert(!lg_cache_mem_locked(m, b));
    ck_assert(!lg_cache_mem_lock(m, a, 1000, 500));
    ck_assert(!lg_cache_mem_lock(m, a, 1200, 500));
    ck_assert(!lg_cache_mem_lock(m, a, 1500, 500)); /* exactly stale_after: not yet */
    ck_assert(lg_cache_mem_lock(m, b, 1200, 500));  /* another key is independent */
    /* more than stale_after_ms: taken over, and the clock restarts */
    ck_assert(lg_cache_mem_lock(m, a, 1501, 500));
    ck_assert(!lg_cache_mem_lock(m, a, 1600, 500));
    ck_assert(lg_cache_mem_locked(m, a));
    /* unlock frees it for the next filler */
    lg_cache_mem_unlock(m, a);
    ck_assert(!lg_cache_mem_locked(m, a));
    ck_assert(lg_cache_mem_lock(m, a, 1601, 500));
    ck_assert(!lg_cache_mem_lock(m, a, 1602, 500));
    lg_cache_mem_unlock(m, a);
    lg_cache_mem_unlock(m, a); /* twice is harmless */
    lg_cache_mem_unlock(m, b);
    ck_assert(!lg_cache_mem_locked(m, b));
    /* locks do not count as cached bytes */
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 0);
    ck_assert_uint_eq(lg_cache_mem_count(m), 0);
    /* a lock left held is freed with the store (LeakSanitizer checks) */
    ck_assert(lg_cache_mem_lock(m, b, 0, 500));
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_lock_table_bounded)
{
    /* 4096 fills at once in a single-shard store (the implementation's
     * bound); beyond that a filler proceeds unrecorded until stale locks
     * can be dropped. */
    struct lg_cache_mem *m = lg_cache_mem_new(1 << 20);
    uint8_t key[LG_CACHE_KEY_LEN];
    for (unsigned k = 0; k < 4096; k++) {
        mkey(key, k);
        ck_assert(lg_cache_mem_lock(m, key, 0, 1000));
    }
    mkey(key, 4095);
    ck_assert(lg_cache_mem_locked(m, key));
    mkey(key, 5000);
    ck_assert(lg_cache_mem_lock(m, key, 10, 1000));
    ck_assert(!lg_cache_mem_locked(m, key)); /* full: not recorded */
    ck_assert(lg_cache_mem_lock(m, key, 10, 1000));
    /* once the old ones are stale, new fills are recorded again */
    ck_assert(lg_cache_mem_lock(m, key, 1001, 1000));
    ck_assert(lg_cache_mem_locked(m, key));
    ck_assert(!lg_cache_mem_lock(m, key, 1002, 1000));
    mkey(key, 0);
    ck_assert(!lg_cache_mem_locked(m, key)); /* purged */
    lg_cache_mem_free(m);
}
END_TEST

START_TEST(test_lock_and_entries_share_keys)
{
    /* A key may be cached and being refilled at once (a refetch). */
    struct lg_cache_mem *m = lg_cache_mem_new(10000);
    uint8_t key[LG_CACHE_KEY_LEN];
    mkey(key, 9);
    put_sized(m, 9, 300);
    ck_assert(lg_cache_mem_lock(m, key, 1, 100));
    ck_assert(has(m, 9));
    put_sized(m, 9, 400);
    lg_cache_mem_unlock(m, key);
    ck_assert(has(m, 9));
    ck_assert_uint_eq(lg_cache_mem_bytes(m), 400);
    lg_cache_mem_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cache");

    TCase *keys = tcase_create("keys");
    tcase_add_checked_fixture(keys, key_setup, NULL);
    tcase_add_test(keys, test_key_deterministic_and_hex);
    tcase_add_test(keys, test_key_query_order_independent);
    tcase_add_test(keys, test_key_query_unnamed_ignored);
    tcase_add_test(keys, test_key_query_names_and_values);
    tcase_add_test(keys, test_key_query_absent_vs_empty);
    tcase_add_test(keys, test_key_query_repeated);
    tcase_add_test(keys, test_key_headers);
    tcase_add_test(keys, test_key_config_order_irrelevant);
    tcase_add_test(keys, test_key_per_user);
    tcase_add_test(keys, test_key_route_method_params);
    tcase_add_test(keys, test_key_route_without_names);
    suite_add_tcase(s, keys);

    TCase *rules = tcase_create("storable");
    tcase_add_test(rules, test_storable_ttl);
    tcase_add_test(rules, test_storable_zero_and_garbage);
    tcase_add_test(rules, test_storable_refusals);
    tcase_add_test(rules, test_request_refetch);
    suite_add_tcase(s, rules);

    TCase *entries = tcase_create("entries");
    tcase_add_test(entries, test_entry_filtering);
    tcase_add_test(entries, test_entry_empty);
    tcase_add_test(entries, test_encode_format);
    tcase_add_test(entries, test_roundtrip_binary);
    tcase_add_test(entries, test_roundtrip_empty_and_largest);
    tcase_add_test(entries, test_decode_truncated_everywhere);
    tcase_add_test(entries, test_decode_hostile);
    tcase_add_test(entries, test_decode_header_count_limit);
    suite_add_tcase(s, entries);

    TCase *mem = tcase_create("memory");
    tcase_set_timeout(mem, 60);
    tcase_add_test(mem, test_mem_lru_order);
    tcase_add_test(mem, test_mem_replace_accounting);
    tcase_add_test(mem, test_mem_oversize);
    tcase_add_test(mem, test_mem_expiry_and_stale);
    tcase_add_test(mem, test_mem_never_over_max);
    tcase_add_test(mem, test_mem_many_keys_table_growth);
    tcase_add_test(mem, test_mem_threads_one_shard);
    tcase_add_test(mem, test_mem_threads_sharded);
    tcase_add_test(mem, test_mem_threads_sharded_tight);
    tcase_add_test(mem, test_lock_semantics);
    tcase_add_test(mem, test_lock_table_bounded);
    tcase_add_test(mem, test_lock_and_entries_share_keys);
    suite_add_tcase(s, mem);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
