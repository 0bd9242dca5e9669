/* test_event.c - API Gateway proxy events v1/v2 against AWS's shapes, and proxy responses. */
#include "config.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "lambdagate/event.h"

/* ------------------------------------------------------------------ */
/* JSON comparison                                                     */
/* ------------------------------------------------------------------ */

/* Expected JSON is written with single quotes so it reads like the AWS
 * samples; none of the expectations needs a literal apostrophe. */
static char *sq(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    for (char *p = d; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return d;
}

static yajl_val parse_or_die(const char *text, const char *what)
{
    char err[256] = "";
    yajl_val v = yajl_tree_parse(text, err, sizeof(err));
    ck_assert_msg(v != NULL, "%s is not JSON (%s): %s", what, err, text);
    return v;
}

/* Structural equality: objects as unordered maps (and no key twice, which
 * JSON readers resolve differently), arrays in order, numbers by value.
 * On a difference, where names the path. */
static bool json_equal(yajl_val a, yajl_val b, char *where, size_t cap)
{
    size_t at = strlen(where);
    if (a->type != b->type) {
        snprintf(where + at, cap - at, " (type %d vs %d)", (int)a->type, (int)b->type);
        return false;
    }
    switch (a->type) {
    case yajl_t_string:
        if (strcmp(a->u.string, b->u.string) != 0) {
            snprintf(where + at, cap - at, " (\"%s\" vs \"%s\")", a->u.string, b->u.string);
            return false;
        }
        return true;
    case yajl_t_number:
        if (strcmp(a->u.number.r, b->u.number.r) != 0) {
            snprintf(where + at, cap - at, " (%s vs %s)", a->u.number.r, b->u.number.r);
            return false;
        }
        return true;
    case yajl_t_array:
        if (a->u.array.len != b->u.array.len) {
            snprintf(where + at, cap - at, " (%zu vs %zu elements)", a->u.array.len,
                     b->u.array.len);
            return false;
        }
        for (size_t i = 0; i < a->u.array.len; i++) {
            snprintf(where + at, cap - at, "[%zu]", i);
            if (!json_equal(a->u.array.values[i], b->u.array.values[i], where, cap))
                return false;
            where[at] = '\0';
        }
        return true;
    case yajl_t_object:
        for (size_t i = 0; i < a->u.object.len; i++) {
            for (size_t j = i + 1; j < a->u.object.len; j++) {
                if (strcmp(a->u.object.keys[i], a->u.object.keys[j]) == 0) {
                    snprintf(where + at, cap - at, ".%s (twice)", a->u.object.keys[i]);
                    return false;
                }
            }
        }
        if (a->u.object.len != b->u.object.len) {
            snprintf(where + at, cap - at, " (%zu vs %zu members)", a->u.object.len,
                     b->u.object.len);
            return false;
        }
        for (size_t i = 0; i < a->u.object.len; i++) {
            const char *key = a->u.object.keys[i];
            snprintf(where + at, cap - at, ".%s", key);
            yajl_val other = NULL;
            for (size_t j = 0; j < b->u.object.len; j++) {
                if (strcmp(b->u.object.keys[j], key) == 0)
                    other = b->u.object.values[j];
            }
            if (other == NULL) {
                size_t at2 = strlen(where);
                snprintf(where + at2, cap - at2, " (missing from expected)");
                return false;
            }
            if (!json_equal(a->u.object.values[i], other, where, cap))
                return false;
            where[at] = '\0';
        }
        return true;
    default:
        return true; /* true, false, null: the type says it all */
    }
}

/* Member at a dotted path ("requestContext.http"), or NULL. */
static yajl_val member(yajl_val root, const char *dotted)
{
    char buf[256];
    const char *parts[16];
    size_t n = 0;
    snprintf(buf, sizeof(buf), "%s", dotted);
    for (char *tok = strtok(buf, "."); tok && n < 15; tok = strtok(NULL, "."))
        parts[n++] = tok;
    parts[n] = NULL;
    return yajl_tree_get(root, parts, yajl_t_any);
}

/* actual (at path, "" = whole) must equal expected (single-quoted JSON). */
static void expect_json_at(const char *actual, const char *path, const char *expected_sq)
{
    char *expected = sq(expected_sq);
    yajl_val a = parse_or_die(actual, "event");
    yajl_val e = parse_or_die(expected, "expected");
    yajl_val sub = path[0] ? member(a, path) : a;
    ck_assert_msg(sub != NULL, "%s missing from %s", path, actual);
    char where[512];
    snprintf(where, sizeof(where), "%s", path[0] ? path : "$");
    bool ok = json_equal(sub, e, where, sizeof(where));
    ck_assert_msg(ok, "differs at %s\nactual: %s\nexpected: %s", where, actual, expected);
    yajl_tree_free(a);
    yajl_tree_free(e);
    free(expected);
}

static void expect_absent(const char *actual, const char *path)
{
    yajl_val a = parse_or_die(actual, "event");
    ck_assert_msg(member(a, path) == NULL, "%s should be left out: %s", path, actual);
    yajl_tree_free(a);
}

/* ------------------------------------------------------------------ */
/* Request fixtures                                                    */
/* ------------------------------------------------------------------ */

#define REQ_ID  "c0ffee00-0000-4000-8000-000000000001"
#define TIME_MS 1583349317135 /* 04/Mar/2020:19:15:17 +0000, the 1.0 sample's */

struct fixture {
    struct lg_conf_route route;
    struct lg_router_match match;
    char param_value[64];
    struct lg_http_header headers[64];
    struct lg_event_request req;
    struct lg_event_identity identity;
};

static void fx_init(struct fixture *f, enum lg_payload_format fmt, const char *method,
                    const char *path, const char *query)
{
    memset(f, 0, sizeof(*f));
    f->route.method = (char *)"GET";
    f->route.path = (char *)"/users/{id}";
    f->route.route_key = (char *)"GET /users/{id}";
    f->route.payload_format = fmt;
    f->req.method = method;
    f->req.method_len = strlen(method);
    f->req.raw_path = path;
    f->req.raw_path_len = strlen(path);
    f->req.raw_query = query;
    f->req.raw_query_len = query ? strlen(query) : 0;
    f->req.headers = f->headers;
    f->req.source_ip = "192.0.2.1";
    f->req.protocol = "HTTP/1.1";
    f->req.scheme = "https";
    f->req.server_port = 8443;
    f->req.request_id = REQ_ID;
    f->req.time_ms = TIME_MS;
    f->req.route = &f->route;
    f->req.match = &f->match;
}

static void fx_param(struct fixture *f, const char *name, const char *value)
{
    snprintf(f->param_value, sizeof(f->param_value), "%s", value);
    f->match.params[0].name = name;
    f->match.params[0].value = f->param_value;
    f->match.params[0].value_len = strlen(value);
    f->match.nparams = 1;
}

static void fx_header(struct fixture *f, const char *name, const char *value)
{
    ck_assert_uint_lt(f->req.nheaders, LG_ARRAY_LEN(f->headers));
    struct lg_http_header *h = &f->headers[f->req.nheaders++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

static void fx_body(struct fixture *f, const void *body, size_t len)
{
    f->req.body = body;
    f->req.body_len = len;
}

/* Build the event, which must succeed; caller frees. */
static char *fx_build(struct fixture *f)
{
    struct lg_buf out;
    lg_buf_init(&out, 0);
    char err[LG_ERR_LEN] = "";
    int rc = lg_event_build(&f->req, &out, err, sizeof(err));
    ck_assert_msg(rc == 0, "build failed: %s", err);
    ck_assert_ptr_nonnull(out.data);
    ck_assert_uint_eq(strlen(out.data), out.len);
    size_t len;
    return lg_buf_steal(&out, &len);
}

/* Build must fail with an error message and leave out as it was. */
static void fx_build_fails(struct fixture *f)
{
    struct lg_buf out;
    lg_buf_init(&out, 0);
    ck_assert_int_eq(lg_buf_puts(&out, "keep"), 0);
    char err[LG_ERR_LEN] = "";
    int rc = lg_event_build(&f->req, &out, err, sizeof(err));
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(err[0] != '\0', "no error message");
    ck_assert_str_eq(lg_buf_cstr(&out), "keep");
    ck_assert_uint_eq(out.len, 4);
    lg_buf_free(&out);
}

/* A representative browser-ish GET used by the full-shape tests. */
static void fx_representative(struct fixture *f, enum lg_payload_format fmt)
{
    fx_init(f, fmt, "GET", "/users/42", "a=1&a=2&b=x+y%21&c");
    fx_param(f, "id", "42");
    fx_header(f, "Host", "api.example.com:8443");
    fx_header(f, "User-Agent", "curl/8.0");
    fx_header(f, "Accept", "*/*");
    fx_header(f, "X-Multi", "one");
    fx_header(f, "Cookie", "s=1; t=2");
    fx_header(f, "x-multi", "two");
    fx_header(f, "Connection", "keep-alive");
}

/* ------------------------------------------------------------------ */
/* Events: whole shapes                                                */
/* ------------------------------------------------------------------ */

START_TEST(test_v2_full_shape)
{
    struct fixture f;
    fx_representative(&f, LG_PAYLOAD_V2);
    char *ev = fx_build(&f);
    expect_json_at(ev, "",
                   "{'version':'2.0','routeKey':'GET /users/{id}','rawPath':'/users/42',"
                   "'rawQueryString':'a=1&a=2&b=x+y%21&c',"
                   "'cookies':['s=1','t=2'],"
                   "'headers':{'host':'api.example.com:8443','user-agent':'curl/8.0',"
                   "'accept':'*/*','x-multi':'one,two','x-forwarded-for':'192.0.2.1',"
                   "'x-forwarded-port':'8443','x-forwarded-proto':'https'},"
                   "'queryStringParameters':{'a':'1,2','b':'x y!','c':''},"
                   "'requestContext':{'accountId':'anonymous','apiId':'lambdagate',"
                   "'domainName':'api.example.com','domainPrefix':'api',"
                   "'http':{'method':'GET','path':'/users/42','protocol':'HTTP/1.1',"
                   "'sourceIp':'192.0.2.1','userAgent':'curl/8.0'},"
                   "'requestId':'" REQ_ID "','routeKey':'GET /users/{id}','stage':'$default',"
                   "'time':'04/Mar/2020:19:15:17 +0000','timeEpoch':1583349317135},"
                   "'pathParameters':{'id':'42'},'isBase64Encoded':false}");
    free(ev);
}
END_TEST

START_TEST(test_v1_full_shape)
{
    struct fixture f;
    fx_representative(&f, LG_PAYLOAD_V1);
    f.route.account_id = (char *)"123456789012";
    char *ev = fx_build(&f);
    expect_json_at(
        ev, "",
        "{'version':'1.0','resource':'/users/{id}','path':'/users/42','httpMethod':'GET',"
        "'headers':{'Host':'api.example.com:8443','User-Agent':'curl/8.0','Accept':'*/*',"
        "'X-Multi':'two','Cookie':'s=1; t=2','X-Forwarded-For':'192.0.2.1',"
        "'X-Forwarded-Port':'8443','X-Forwarded-Proto':'https'},"
        "'multiValueHeaders':{'Host':['api.example.com:8443'],'User-Agent':['curl/8.0'],"
        "'Accept':['*/*'],'X-Multi':['one','two'],'Cookie':['s=1; t=2'],"
        "'X-Forwarded-For':['192.0.2.1'],'X-Forwarded-Port':['8443'],"
        "'X-Forwarded-Proto':['https']},"
        "'queryStringParameters':{'a':'2','b':'x y!','c':''},"
        "'multiValueQueryStringParameters':{'a':['1','2'],'b':['x y!'],'c':['']},"
        "'requestContext':{'accountId':'123456789012','apiId':'lambdagate',"
        "'domainName':'api.example.com','domainPrefix':'api','extendedRequestId':'" REQ_ID "',"
        "'httpMethod':'GET','identity':{'accessKey':null,'accountId':null,'caller':null,"
        "'cognitoAuthenticationProvider':null,'cognitoAuthenticationType':null,"
        "'cognitoIdentityId':null,'cognitoIdentityPoolId':null,'principalOrgId':null,"
        "'user':null,'userArn':null,'apiKey':null,'apiKeyId':null,'sourceIp':'192.0.2.1',"
        "'userAgent':'curl/8.0'},'path':'/users/42','protocol':'HTTP/1.1',"
        "'requestId':'" REQ_ID "','requestTime':'04/Mar/2020:19:15:17 +0000',"
        "'requestTimeEpoch':1583349317135,'resourceId':null,'resourcePath':'/users/{id}',"
        "'stage':'$default'},"
        "'pathParameters':{'id':'42'},'stageVariables':null,'body':null,'isBase64Encoded':false}");
    free(ev);
}
END_TEST

/* aws-lambda-go's apigw-v2-request-no-authorizer.json: a bare GET leaves
 * out every empty optional member, never null. */
START_TEST(test_v2_empty_members_left_out)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    char *ev = fx_build(&f);
    expect_json_at(ev, "rawQueryString", "''");
    expect_json_at(ev, "headers",
                   "{'x-forwarded-for':'192.0.2.1','x-forwarded-port':'8443',"
                   "'x-forwarded-proto':'https'}");
    expect_absent(ev, "cookies");
    expect_absent(ev, "queryStringParameters");
    expect_absent(ev, "pathParameters");
    expect_absent(ev, "stageVariables");
    expect_absent(ev, "body");
    expect_absent(ev, "requestContext.authorizer");
    expect_json_at(ev, "isBase64Encoded", "false");
    expect_json_at(ev, "requestContext.http.userAgent", "''");
    expect_json_at(ev, "requestContext.accountId", "'anonymous'");
    expect_json_at(ev, "requestContext.domainName", "'localhost'");
    expect_json_at(ev, "requestContext.domainPrefix", "'localhost'");
    free(ev);

    /* An empty query string is no query either. */
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", "");
    ev = fx_build(&f);
    expect_json_at(ev, "rawQueryString", "''");
    expect_absent(ev, "queryStringParameters");
    free(ev);
}
END_TEST

START_TEST(test_v1_empty_members_null)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V1, "GET", "/", NULL);
    f.req.match = NULL;
    char *ev = fx_build(&f);
    expect_json_at(ev, "queryStringParameters", "null");
    expect_json_at(ev, "multiValueQueryStringParameters", "null");
    expect_json_at(ev, "pathParameters", "null");
    expect_json_at(ev, "stageVariables", "null");
    expect_json_at(ev, "body", "null");
    expect_json_at(ev, "isBase64Encoded", "false");
    expect_json_at(ev, "requestContext.identity.userAgent", "null");
    expect_json_at(ev, "requestContext.identity.apiKey", "null");
    expect_json_at(ev, "requestContext.resourceId", "null");
    expect_absent(ev, "requestContext.authorizer");
    free(ev);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Events: query, headers, cookies                                     */
/* ------------------------------------------------------------------ */

START_TEST(test_query_decoding)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/q",
            "a%20b=1&x=%E2%82%AC&pct=100%&bad=%zz&short=%4&&=lost&plus=a+b%2Bc&empty=");
    char *ev = fx_build(&f);
    expect_json_at(ev, "rawQueryString",
                   "'a%20b=1&x=%E2%82%AC&pct=100%&bad=%zz&short=%4&&=lost&plus=a+b%2Bc&empty='");
    expect_json_at(ev, "queryStringParameters",
                   "{'a b':'1','x':'\\u20ac','pct':'100%','bad':'%zz','short':'%4',"
                   "'plus':'a b+c','empty':''}");
    free(ev);

    /* Names are case-sensitive: A and a are two parameters. */
    fx_init(&f, LG_PAYLOAD_V1, "GET", "/q", "A=1&a=2&A=3");
    ev = fx_build(&f);
    expect_json_at(ev, "queryStringParameters", "{'A':'3','a':'2'}");
    expect_json_at(ev, "multiValueQueryStringParameters", "{'A':['1','3'],'a':['2']}");
    free(ev);
}
END_TEST

START_TEST(test_query_not_utf8)
{
    struct fixture f;
    /* Decodes to a byte that is not UTF-8. */
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/q", "a=%FF");
    fx_build_fails(&f);
    /* Decodes to NUL. */
    fx_init(&f, LG_PAYLOAD_V1, "GET", "/q", "a=%00");
    fx_build_fails(&f);
    /* Raw bytes that are not UTF-8. */
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/q", "a=\xc3");
    fx_build_fails(&f);
}
END_TEST

START_TEST(test_headers_lowercase_joined)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "Accept", "text/html");
    fx_header(&f, "X-Trace", "a");
    fx_header(&f, "ACCEPT", "application/json");
    fx_header(&f, "x-trace", "b, c");
    fx_header(&f, "Header1", "value1");
    char *ev = fx_build(&f);
    expect_json_at(ev, "headers",
                   "{'accept':'text/html,application/json','x-trace':'a,b, c',"
                   "'header1':'value1','x-forwarded-for':'192.0.2.1',"
                   "'x-forwarded-port':'8443','x-forwarded-proto':'https'}");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "headers",
                   "{'Accept':'application/json','X-Trace':'b, c','Header1':'value1',"
                   "'X-Forwarded-For':'192.0.2.1','X-Forwarded-Port':'8443',"
                   "'X-Forwarded-Proto':'https'}");
    expect_json_at(ev, "multiValueHeaders",
                   "{'Accept':['text/html','application/json'],'X-Trace':['a','b, c'],"
                   "'Header1':['value1'],'X-Forwarded-For':['192.0.2.1'],"
                   "'X-Forwarded-Port':['8443'],'X-Forwarded-Proto':['https']}");
    free(ev);
}
END_TEST

START_TEST(test_cookies)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "Cookie", "a=1; b=2");
    fx_header(&f, "X-Other", "x");
    fx_header(&f, "cookie", " ;c=3 ;;  d=4;");
    char *ev = fx_build(&f);
    expect_json_at(ev, "cookies", "['a=1','b=2','c=3','d=4']");
    expect_json_at(ev, "headers",
                   "{'x-other':'x','x-forwarded-for':'192.0.2.1','x-forwarded-port':'8443',"
                   "'x-forwarded-proto':'https'}");
    free(ev);

    /* A Cookie header with nothing in it gives no cookies member. */
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "Cookie", " ; ");
    ev = fx_build(&f);
    expect_absent(ev, "cookies");
    expect_absent(ev, "headers.cookie");
    free(ev);

    /* Format 1.0 has no cookies member: the header stays. */
    fx_init(&f, LG_PAYLOAD_V1, "GET", "/", NULL);
    fx_header(&f, "Cookie", "a=1; b=2");
    ev = fx_build(&f);
    expect_absent(ev, "cookies");
    expect_json_at(ev, "headers.Cookie", "'a=1; b=2'");
    expect_json_at(ev, "multiValueHeaders.Cookie", "['a=1; b=2']");
    free(ev);
}
END_TEST

START_TEST(test_hop_by_hop)
{
    static const enum lg_payload_format fmts[] = {LG_PAYLOAD_V2, LG_PAYLOAD_V1};
    for (size_t i = 0; i < 2; i++) {
        struct fixture f;
        fx_init(&f, fmts[i], "GET", "/", NULL);
        fx_header(&f, "Connection", "keep-alive, X-Secret");
        fx_header(&f, "Keep-Alive", "timeout=5");
        fx_header(&f, "X-Secret", "hush");
        fx_header(&f, "TE", "trailers");
        fx_header(&f, "Trailer", "X-T");
        fx_header(&f, "Transfer-Encoding", "chunked");
        fx_header(&f, "Upgrade", "websocket");
        fx_header(&f, "Proxy-Authorization", "Basic x");
        fx_header(&f, "Proxy-Authenticate", "Basic");
        fx_header(&f, "connection", "x-also");
        fx_header(&f, "X-Also", "gone");
        fx_header(&f, "X-Kept", "yes");
        char *ev = fx_build(&f);
        if (fmts[i] == LG_PAYLOAD_V2) {
            expect_json_at(ev, "headers",
                           "{'x-kept':'yes','x-forwarded-for':'192.0.2.1',"
                           "'x-forwarded-port':'8443','x-forwarded-proto':'https'}");
        } else {
            expect_json_at(ev, "headers",
                           "{'X-Kept':'yes','X-Forwarded-For':'192.0.2.1',"
                           "'X-Forwarded-Port':'8443','X-Forwarded-Proto':'https'}");
            expect_json_at(ev, "multiValueHeaders",
                           "{'X-Kept':['yes'],'X-Forwarded-For':['192.0.2.1'],"
                           "'X-Forwarded-Port':['8443'],'X-Forwarded-Proto':['https']}");
        }
        free(ev);
    }
}
END_TEST

START_TEST(test_forwarded_headers)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    f.req.scheme = "http";
    f.req.server_port = 8080;
    f.req.source_ip = "10.0.0.9";
    fx_header(&f, "X-Forwarded-For", "203.0.113.7");
    fx_header(&f, "X-Forwarded-Proto", "https");
    fx_header(&f, "x-forwarded-port", "443");
    fx_header(&f, "x-forwarded-for", "198.51.100.2");
    char *ev = fx_build(&f);
    expect_json_at(ev, "headers",
                   "{'x-forwarded-for':'203.0.113.7, 198.51.100.2, 10.0.0.9',"
                   "'x-forwarded-port':'8080','x-forwarded-proto':'http'}");
    expect_json_at(ev, "requestContext.http.sourceIp", "'10.0.0.9'");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "multiValueHeaders",
                   "{'X-Forwarded-For':['203.0.113.7, 198.51.100.2, 10.0.0.9'],"
                   "'X-Forwarded-Port':['8080'],'X-Forwarded-Proto':['http']}");
    expect_json_at(ev, "requestContext.identity.sourceIp", "'10.0.0.9'");
    free(ev);
}
END_TEST

START_TEST(test_domain_and_user_agent)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "Host", "[2001:db8::1]:8443");
    fx_header(&f, "User-Agent", "a");
    fx_header(&f, "user-agent", "b");
    char *ev = fx_build(&f);
    expect_json_at(ev, "requestContext.domainName", "'[2001:db8::1]'");
    expect_json_at(ev, "requestContext.domainPrefix", "'[2001:db8::1]'");
    expect_json_at(ev, "requestContext.http.userAgent", "'a,b'");
    free(ev);

    fx_init(&f, LG_PAYLOAD_V1, "GET", "/", NULL);
    fx_header(&f, "host", "localhost");
    fx_header(&f, "User-Agent", "a");
    fx_header(&f, "user-agent", "b");
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.domainName", "'localhost'");
    expect_json_at(ev, "requestContext.domainPrefix", "'localhost'");
    expect_json_at(ev, "requestContext.identity.userAgent", "'b'");
    free(ev);

    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "Host", "id.execute-api.us-east-1.amazonaws.com");
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.domainName", "'id.execute-api.us-east-1.amazonaws.com'");
    expect_json_at(ev, "requestContext.domainPrefix", "'id'");
    free(ev);
}
END_TEST

START_TEST(test_any_route_method)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "PATCH", "/items/7", NULL);
    f.route.method = (char *)"ANY";
    f.route.path = (char *)"/items/{proxy+}";
    f.route.route_key = (char *)"ANY /items/{proxy+}";
    fx_param(&f, "proxy", "7");
    char *ev = fx_build(&f);
    expect_json_at(ev, "routeKey", "'ANY /items/{proxy+}'");
    expect_json_at(ev, "requestContext.routeKey", "'ANY /items/{proxy+}'");
    expect_json_at(ev, "requestContext.http.method", "'PATCH'");
    expect_json_at(ev, "pathParameters", "{'proxy':'7'}");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "httpMethod", "'PATCH'");
    expect_json_at(ev, "requestContext.httpMethod", "'PATCH'");
    expect_json_at(ev, "resource", "'/items/{proxy+}'");
    expect_json_at(ev, "requestContext.resourcePath", "'/items/{proxy+}'");
    free(ev);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Events: identities                                                  */
/* ------------------------------------------------------------------ */

static const struct lg_event_claim claims[] = {
    {"sub", "u-1"},
    {"email_verified", "true"},
    {"exp", "1700000000"},
};
static const char *const scopes[] = {"read", "write"};

START_TEST(test_identity_jwt)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    f.identity.kind = LG_IDENTITY_JWT;
    f.identity.claims = claims;
    f.identity.nclaims = 3;
    f.identity.scopes = scopes;
    f.identity.nscopes = 2;
    f.req.identity = &f.identity;
    char *ev = fx_build(&f);
    expect_json_at(ev, "requestContext.authorizer",
                   "{'jwt':{'claims':{'sub':'u-1','email_verified':'true','exp':'1700000000'},"
                   "'scopes':['read','write']}}");
    free(ev);

    /* A token without scope: "scopes": null. */
    f.identity.scopes = NULL;
    f.identity.nscopes = 0;
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.authorizer",
                   "{'jwt':{'claims':{'sub':'u-1','email_verified':'true','exp':'1700000000'},"
                   "'scopes':null}}");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.authorizer",
                   "{'claims':{'sub':'u-1','email_verified':'true','exp':'1700000000'},"
                   "'scopes':null}");
    expect_json_at(ev, "requestContext.identity.apiKey", "null");
    expect_json_at(ev, "requestContext.identity.apiKeyId", "null");
    free(ev);

    f.identity.scopes = scopes;
    f.identity.nscopes = 1;
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.authorizer.scopes", "['read']");
    free(ev);

    /* A claim that is not UTF-8 fails late, while generating: out must
     * still be left as it was. */
    static const struct lg_event_claim bad[] = {{"sub", "u-1"}, {"name", "caf\xe9"}};
    f.identity.claims = bad;
    f.identity.nclaims = 2;
    fx_build_fails(&f);
    f.route.payload_format = LG_PAYLOAD_V2;
    fx_build_fails(&f);
}
END_TEST

START_TEST(test_identity_api_key)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    f.identity.kind = LG_IDENTITY_API_KEY;
    f.identity.api_key = "s3cr3t-key";
    f.identity.api_key_id = "android-app";
    f.req.identity = &f.identity;
    char *ev = fx_build(&f);
    expect_json_at(ev, "requestContext.authorizer", "{'lambda':{'apiKeyId':'android-app'}}");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "requestContext.identity.apiKey", "'s3cr3t-key'");
    expect_json_at(ev, "requestContext.identity.apiKeyId", "'android-app'");
    expect_absent(ev, "requestContext.authorizer");
    free(ev);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Events: bodies                                                      */
/* ------------------------------------------------------------------ */

/* Build with body and Content-Type ct (NULL = none) in both formats and
 * check body and isBase64Encoded. */
static void expect_body(const char *ct, const char *body, size_t len, const char *want_sq,
                        bool want_b64)
{
    static const enum lg_payload_format fmts[] = {LG_PAYLOAD_V2, LG_PAYLOAD_V1};
    for (size_t i = 0; i < 2; i++) {
        struct fixture f;
        fx_init(&f, fmts[i], "POST", "/", NULL);
        if (ct)
            fx_header(&f, "Content-Type", ct);
        fx_body(&f, body, len);
        char *ev = fx_build(&f);
        expect_json_at(ev, "body", want_sq);
        expect_json_at(ev, "isBase64Encoded", want_b64 ? "true" : "false");
        free(ev);
    }
}

START_TEST(test_body_text_types)
{
    static const char *const text[] = {
        "text/plain",
        "text/html; charset=utf-8",
        "TEXT/CSV",
        "application/json",
        "Application/JSON ; charset=UTF-8",
        "application/vnd.api+json",
        "application/merge-patch+json",
        "application/xml",
        "application/atom+xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(text); i++)
        expect_body(text[i], "{\"a\":\"\xc3\xa9\"}", 10, "'{\\'a\\':\\'\\u00e9\\'}'", false);
}
END_TEST

START_TEST(test_body_binary_types)
{
    static const char *const binary[] = {
        "application/octet-stream",
        "image/png",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/x-json",
        "application/+json",
        "application/pdf",
        "texts/plain",
        "",
        "text",
    };
    /* "hi" in base64 */
    for (size_t i = 0; i < LG_ARRAY_LEN(binary); i++)
        expect_body(binary[i], "hi", 2, "'aGk='", true);
    /* No Content-Type at all. */
    expect_body(NULL, "hi", 2, "'aGk='", true);
}
END_TEST

START_TEST(test_body_invalid_utf8_and_nul)
{
    /* A JSON body that is not UTF-8 cannot travel as text. */
    expect_body("application/json", "\"\xff\"", 3, "'Iv8i'", true);
    /* Nor can one with a NUL byte. */
    expect_body("text/plain", "a\0b", 3, "'YQBi'", true);
    /* Binary bytes under a binary type. */
    expect_body("application/octet-stream", "\x00\x01\xfe\xff", 4, "'AAH+/w=='", true);
}
END_TEST

START_TEST(test_body_empty)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "POST", "/", NULL);
    fx_header(&f, "Content-Type", "application/octet-stream");
    fx_body(&f, "", 0);
    char *ev = fx_build(&f);
    expect_absent(ev, "body");
    expect_json_at(ev, "isBase64Encoded", "false");
    free(ev);

    f.route.payload_format = LG_PAYLOAD_V1;
    ev = fx_build(&f);
    expect_json_at(ev, "body", "null");
    expect_json_at(ev, "isBase64Encoded", "false");
    free(ev);
}
END_TEST

START_TEST(test_is_text_type)
{
    ck_assert(lg_event_is_text_type("text/plain", 10));
    ck_assert(lg_event_is_text_type("  text/x-anything  ", 19));
    ck_assert(lg_event_is_text_type("application/problem+json;charset=utf-8", 38));
    ck_assert(lg_event_is_text_type("application/soap+XML", 20));
    /* Only the first len bytes count. */
    ck_assert(lg_event_is_text_type("text/plainXYZ", 10));
    ck_assert(!lg_event_is_text_type("text/plain", 5));
    ck_assert(!lg_event_is_text_type(NULL, 0));
    ck_assert(!lg_event_is_text_type("text/", 5));
    ck_assert(!lg_event_is_text_type("/json", 5));
    ck_assert(!lg_event_is_text_type("application/json x", 18));
    ck_assert(!lg_event_is_text_type("application/xhtml", 17));
    ck_assert(!lg_event_is_text_type("image/svg+xml", 13)); /* only application/ *+xml */
    ck_assert(!lg_event_is_text_type("application/ecmascript", 22));
}
END_TEST

/* ------------------------------------------------------------------ */
/* Events: refusals and bounds                                         */
/* ------------------------------------------------------------------ */

START_TEST(test_invalid_utf8_refused)
{
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/", NULL);
    fx_header(&f, "X-Latin1", "caf\xe9");
    fx_build_fails(&f);

    fx_init(&f, LG_PAYLOAD_V1, "GET", "/", NULL);
    fx_header(&f, "X-Overlong", "\xc0\xaf");
    fx_build_fails(&f);

    fx_init(&f, LG_PAYLOAD_V2, "GET", "/caf\xe9", NULL);
    fx_build_fails(&f);

    fx_init(&f, LG_PAYLOAD_V1, "GET", "/x", NULL);
    fx_param(&f, "id", "\xff");
    fx_build_fails(&f);

    /* Valid multi-byte UTF-8 passes. */
    fx_init(&f, LG_PAYLOAD_V2, "GET", "/caf\xc3\xa9", NULL);
    fx_header(&f, "X-Name", "\xe2\x82\xac");
    char *ev = fx_build(&f);
    expect_json_at(ev, "rawPath", "'/caf\\u00e9'");
    expect_json_at(ev, "headers.x-name", "'\\u20ac'");
    free(ev);
}
END_TEST

START_TEST(test_output_bound)
{
    struct fixture f;
    fx_representative(&f, LG_PAYLOAD_V2);
    static char body[4096];
    memset(body, 'x', sizeof(body));
    fx_header(&f, "Content-Type", "text/plain");
    fx_body(&f, body, sizeof(body));
    struct lg_buf out;
    lg_buf_init(&out, 2000);
    ck_assert_int_eq(lg_buf_puts(&out, "prefix"), 0);
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_event_build(&f.req, &out, err, sizeof(err)), -1);
    ck_assert_msg(err[0] != '\0', "no error message");
    ck_assert_str_eq(lg_buf_cstr(&out), "prefix");
    ck_assert_uint_eq(out.len, 6);
    lg_buf_free(&out);

    /* Whatever the bound, the event fits in it whole or is not there. */
    for (size_t max = 1000; max < 8000; max += 250) {
        lg_buf_init(&out, max);
        ck_assert_int_eq(lg_buf_puts(&out, "prefix"), 0);
        int rc = lg_event_build(&f.req, &out, err, sizeof(err));
        ck_assert_uint_le(out.len, max);
        if (rc != 0)
            ck_assert_uint_eq(out.len, 6);
        else
            ck_assert_uint_gt(out.len, sizeof(body));
        ck_assert_uint_eq(strlen(lg_buf_cstr(&out)), out.len);
        lg_buf_free(&out);
    }

    /* With room, the event is appended after what out held. */
    lg_buf_init(&out, 20000);
    ck_assert_int_eq(lg_buf_puts(&out, "prefix"), 0);
    ck_assert_int_eq(lg_event_build(&f.req, &out, err, sizeof(err)), 0);
    ck_assert_int_eq(strncmp(out.data, "prefix{", 7), 0);
    yajl_val v = parse_or_die(out.data + 6, "event");
    yajl_val body_val = member(v, "body");
    ck_assert_ptr_nonnull(body_val);
    ck_assert_uint_eq(strlen(body_val->u.string), sizeof(body));
    yajl_tree_free(v);
    lg_buf_free(&out);
}
END_TEST

START_TEST(test_many_headers_and_params)
{
    /* Every header distinct plus many repeated query names: grouping must
     * stay exact at the sizes the server allows. */
    struct fixture f;
    fx_init(&f, LG_PAYLOAD_V1, "GET", "/", NULL);
    static char names[64][16];
    for (int i = 0; i < 60; i++) {
        snprintf(names[i], sizeof(names[i]), "X-H%d", i % 20);
        fx_header(&f, names[i], i < 20 ? "first" : "later");
    }
    static char query[20000];
    size_t q = 0;
    for (int i = 0; i < 2000; i++)
        q += (size_t)snprintf(query + q, sizeof(query) - q, "%sk%d=%d", i ? "&" : "", i % 7, i);
    f.req.raw_query = query;
    f.req.raw_query_len = q;
    char *ev = fx_build(&f);
    yajl_val v = parse_or_die(ev, "event");
    yajl_val mh = member(v, "multiValueHeaders");
    ck_assert_uint_eq(mh->u.object.len, 20 + 3);
    yajl_val h0 = member(v, "multiValueHeaders.X-H0");
    ck_assert_uint_eq(h0->u.array.len, 3);
    ck_assert_str_eq(h0->u.array.values[0]->u.string, "first");
    ck_assert_str_eq(member(v, "headers.X-H19")->u.string, "later");
    yajl_val mq = member(v, "multiValueQueryStringParameters");
    ck_assert_uint_eq(mq->u.object.len, 7);
    yajl_val k3 = member(v, "multiValueQueryStringParameters.k3");
    ck_assert_uint_eq(k3->u.array.len, 286);
    ck_assert_str_eq(k3->u.array.values[0]->u.string, "3");
    ck_assert_str_eq(k3->u.array.values[285]->u.string, "1998");
    ck_assert_str_eq(member(v, "queryStringParameters.k3")->u.string, "1998");
    /* First-arrival order of the names. */
    ck_assert_str_eq(mq->u.object.keys[0], "k0");
    ck_assert_str_eq(mq->u.object.keys[6], "k6");
    yajl_tree_free(v);
    free(ev);
}
END_TEST

START_TEST(test_format_time)
{
    char t[32];
    lg_event_format_time(1583349317135, t);
    ck_assert_str_eq(t, "04/Mar/2020:19:15:17 +0000");
    lg_event_format_time(1587481701067, t); /* aws-lambda-go's no-authorizer sample */
    ck_assert_str_eq(t, "21/Apr/2020:15:08:21 +0000");
    lg_event_format_time(0, t);
    ck_assert_str_eq(t, "01/Jan/1970:00:00:00 +0000");
    lg_event_format_time(-1, t);
    ck_assert_str_eq(t, "31/Dec/1969:23:59:59 +0000");
    lg_event_format_time(951782400000, t); /* leap day */
    ck_assert_str_eq(t, "29/Feb/2000:00:00:00 +0000");
    ck_assert_uint_eq(strlen(t), 26);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

static void parse_ok(enum lg_payload_format fmt, const char *payload, size_t len,
                     struct lg_event_response *r)
{
    char err[LG_ERR_LEN] = "";
    int rc = lg_event_parse_response(fmt, payload, len, r, err, sizeof(err));
    ck_assert_msg(rc == 0, "parse failed: %s (payload %.200s)", err, payload);
}

static void parse_ok_str(enum lg_payload_format fmt, const char *payload,
                         struct lg_event_response *r)
{
    parse_ok(fmt, payload, strlen(payload), r);
}

static void expect_malformed_len(enum lg_payload_format fmt, const char *payload, size_t len)
{
    struct lg_event_response r;
    char err[LG_ERR_LEN] = "";
    int rc = lg_event_parse_response(fmt, payload, len, &r, err, sizeof(err));
    ck_assert_msg(rc == -1, "accepted (status %d): %.200s", r.status, payload);
    ck_assert_msg(err[0] != '\0', "no error message for %.200s", payload);
    ck_assert_uint_eq(r.nheaders, 0);
    ck_assert_ptr_null(r.headers);
    ck_assert_uint_eq(r.body.len, 0);
    lg_event_response_free(&r);
}

/* Malformed in both formats. */
static void expect_malformed(const char *payload)
{
    expect_malformed_len(LG_PAYLOAD_V2, payload, strlen(payload));
    expect_malformed_len(LG_PAYLOAD_V1, payload, strlen(payload));
}

/* The exact header list: name, value, ..., NULL. */
static void expect_headers(const struct lg_event_response *r, ...)
{
    va_list ap;
    va_start(ap, r);
    size_t i = 0;
    for (const char *name = va_arg(ap, const char *); name; name = va_arg(ap, const char *), i++) {
        const char *value = va_arg(ap, const char *);
        ck_assert_msg(i < r->nheaders, "header %zu (%s) missing; only %zu", i, name, r->nheaders);
        ck_assert_str_eq(r->headers[i].name, name);
        ck_assert_uint_eq(r->headers[i].name_len, strlen(name));
        ck_assert_str_eq(r->headers[i].value, value);
        ck_assert_uint_eq(r->headers[i].value_len, strlen(value));
    }
    va_end(ap);
    ck_assert_msg(r->nheaders == i, "%zu headers, expected %zu (extra: %s)", r->nheaders, i,
                  r->nheaders > i ? r->headers[i].name : "");
}

static void expect_body_bytes(const struct lg_event_response *r, const void *want, size_t n)
{
    ck_assert_uint_eq(r->body.len, n);
    if (n > 0)
        ck_assert_int_eq(memcmp(r->body.data, want, n), 0);
}

START_TEST(test_response_basic)
{
    static const enum lg_payload_format fmts[] = {LG_PAYLOAD_V2, LG_PAYLOAD_V1};
    for (size_t i = 0; i < 2; i++) {
        struct lg_event_response r;
        parse_ok_str(fmts[i],
                     "{\"statusCode\":201,\"headers\":{\"X-A\":\"1\",\"Location\":\"/x\"},"
                     "\"body\":\"hi\",\"isBase64Encoded\":false}",
                     &r);
        ck_assert_int_eq(r.status, 201);
        expect_headers(&r, "X-A", "1", "Location", "/x", "Content-Type", "application/json", NULL);
        expect_body_bytes(&r, "hi", 2);
        lg_event_response_free(&r);
    }
}
END_TEST

/* aws-lambda-go marshals nil maps and slices as null. */
START_TEST(test_response_nulls)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V2,
                 "{\"statusCode\":204,\"headers\":null,\"multiValueHeaders\":null,"
                 "\"cookies\":null,\"body\":null,\"isBase64Encoded\":null}",
                 &r);
    ck_assert_int_eq(r.status, 204);
    expect_headers(&r, "Content-Type", "application/json", NULL);
    expect_body_bytes(&r, "", 0);
    lg_event_response_free(&r);

    parse_ok_str(LG_PAYLOAD_V1, "{\"statusCode\":200}", &r);
    ck_assert_int_eq(r.status, 200);
    expect_headers(&r, "Content-Type", "application/json", NULL);
    expect_body_bytes(&r, "", 0);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_scalar_header_values)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V1,
                 "{\"statusCode\":200,\"headers\":{\"content-length\":3,\"X-N\":3,"
                 "\"X-F\":1.5,\"X-E\":1e400,\"X-B\":true,\"X-Z\":false,\"X-Null\":null,"
                 "\"X-S\":\"s\"},\"body\":\"abc\"}",
                 &r);
    expect_headers(&r, "X-N", "3", "X-F", "1.5", "X-E", "1e400", "X-B", "true", "X-Z", "false",
                   "X-S", "s", "Content-Type", "application/json", NULL);
    expect_body_bytes(&r, "abc", 3);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_multi_value_headers)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V1,
                 "{\"statusCode\":200,"
                 "\"headers\":{\"X-A\":\"h\",\"X-B\":\"b\",\"content-type\":\"text/plain\"},"
                 "\"multiValueHeaders\":{\"x-a\":[\"m1\",\"m2\"],\"X-C\":[1,true,null],"
                 "\"X-Empty\":[],\"X-Skip\":null},"
                 "\"body\":\"\"}",
                 &r);
    expect_headers(&r, "X-B", "b", "content-type", "text/plain", "x-a", "m1", "x-a", "m2", "X-C",
                   "1", "X-C", "true", NULL);
    lg_event_response_free(&r);

    /* An empty multi-value list still replaces the single value. */
    parse_ok_str(LG_PAYLOAD_V2,
                 "{\"statusCode\":200,\"headers\":{\"X-Gone\":\"h\"},"
                 "\"multiValueHeaders\":{\"X-GONE\":[]}}",
                 &r);
    expect_headers(&r, "Content-Type", "application/json", NULL);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_cookies)
{
    static const enum lg_payload_format fmts[] = {LG_PAYLOAD_V2, LG_PAYLOAD_V1};
    for (size_t i = 0; i < 2; i++) {
        struct lg_event_response r;
        parse_ok_str(fmts[i],
                     "{\"statusCode\":200,\"headers\":{\"Set-Cookie\":\"z=0\"},"
                     "\"cookies\":[\"a=1; Path=/\",\"b=2; HttpOnly\"],\"body\":\"ok\"}",
                     &r);
        expect_headers(&r, "Set-Cookie", "z=0", "Set-Cookie", "a=1; Path=/", "Set-Cookie",
                       "b=2; HttpOnly", "Content-Type", "application/json", NULL);
        lg_event_response_free(&r);
    }
}
END_TEST

START_TEST(test_response_base64)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V2,
                 "{\"statusCode\":200,\"headers\":{\"Content-Type\":\"image/png\"},"
                 "\"body\":\"AAH+/w==\",\"isBase64Encoded\":true}",
                 &r);
    expect_headers(&r, "Content-Type", "image/png", NULL);
    expect_body_bytes(&r, "\x00\x01\xfe\xff", 4);
    lg_event_response_free(&r);

    parse_ok_str(LG_PAYLOAD_V1, "{\"statusCode\":200,\"body\":\"\",\"isBase64Encoded\":true}", &r);
    expect_body_bytes(&r, "", 0);
    lg_event_response_free(&r);

    /* Not base64-flagged: the text is the body, even if it looks encoded. */
    parse_ok_str(LG_PAYLOAD_V1, "{\"statusCode\":200,\"body\":\"aGk=\"}", &r);
    expect_body_bytes(&r, "aGk=", 4);
    lg_event_response_free(&r);

    expect_malformed("{\"statusCode\":200,\"body\":\"a\",\"isBase64Encoded\":true}");
    expect_malformed("{\"statusCode\":200,\"body\":\"aGk\",\"isBase64Encoded\":true}");
    expect_malformed("{\"statusCode\":200,\"body\":\"aG k=\",\"isBase64Encoded\":true}");
    expect_malformed("{\"statusCode\":200,\"body\":\"aGk=\\n\",\"isBase64Encoded\":true}");
    expect_malformed("{\"statusCode\":200,\"body\":\"a\\u0000k=\",\"isBase64Encoded\":true}");
}
END_TEST

START_TEST(test_response_content_type)
{
    struct lg_event_response r;
    /* Any spelling counts; API Gateway adds application/json only when
     * there is none. */
    parse_ok_str(LG_PAYLOAD_V2, "{\"statusCode\":200,\"headers\":{\"CONTENT-TYPE\":\"text/csv\"}}",
                 &r);
    expect_headers(&r, "CONTENT-TYPE", "text/csv", NULL);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_hop_by_hop)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V1,
                 "{\"statusCode\":200,\"headers\":{\"Connection\":\"close, X-Drop\","
                 "\"X-Drop\":\"d\",\"Keep-Alive\":\"timeout=5\",\"Transfer-Encoding\":\"chunked\","
                 "\"Upgrade\":\"h2c\",\"TE\":\"trailers\",\"Trailer\":\"X\","
                 "\"Proxy-Authenticate\":\"Basic\",\"Proxy-Authorization\":\"x\","
                 "\"Content-Length\":\"999\",\"X-Keep\":\"k\"},"
                 "\"multiValueHeaders\":{\"content-length\":[\"1\",\"2\"],\"x-drop\":[\"e\"]},"
                 "\"body\":\"body\"}",
                 &r);
    expect_headers(&r, "X-Keep", "k", "Content-Type", "application/json", NULL);
    expect_body_bytes(&r, "body", 4);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_status_codes)
{
    static const struct {
        const char *json;
        int status;
    } ok[] = {
        {"100", 100}, {"599", 599}, {"\"404\"", 404}, {"200.0", 200}, {"2e2", 200},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(ok); i++) {
        char p[128];
        snprintf(p, sizeof(p), "{\"statusCode\":%s}", ok[i].json);
        struct lg_event_response r;
        parse_ok_str(LG_PAYLOAD_V1, p, &r);
        ck_assert_int_eq(r.status, ok[i].status);
        lg_event_response_free(&r);
    }
    static const char *const bad[] = {
        "99",     "600",      "0",       "-200",     "200.5",      "1e400", "99999999999999999999",
        "\"20\"", "\"2000\"", "\"abc\"", "\" 200\"", "\"600\"",    "true",  "null",
        "{}",     "[200]",    "\"\"",    "-1e400",   "4294967496",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        char p[128];
        snprintf(p, sizeof(p), "{\"statusCode\":%s,\"body\":\"x\"}", bad[i]);
        expect_malformed(p);
    }
}
END_TEST

START_TEST(test_response_v2_inference)
{
    static const struct {
        const char *payload;
        const char *body;
    } cases[] = {
        {"\"Hello from Lambda!\"", "Hello from Lambda!"},
        {"{\"message\":\"Hello from Lambda!\"}", "{\"message\":\"Hello from Lambda!\"}"},
        {"{ \"body\" : \"x\", \"headers\": {\"A\":\"b\"} }",
         "{ \"body\" : \"x\", \"headers\": {\"A\":\"b\"} }"},
        {"[1, 2]", "[1, 2]"},
        {"42", "42"},
        {"null", "null"},
        {"true", "true"},
        {"\"caf\\u00e9 \\\"q\\\"\"", "caf\xc3\xa9 \"q\""},
        {"{}", "{}"},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        struct lg_event_response r;
        parse_ok_str(LG_PAYLOAD_V2, cases[i].payload, &r);
        ck_assert_int_eq(r.status, 200);
        expect_headers(&r, "Content-Type", "application/json", NULL);
        expect_body_bytes(&r, cases[i].body, strlen(cases[i].body));
        lg_event_response_free(&r);
        /* Format 1.0 has no such rule. */
        expect_malformed_len(LG_PAYLOAD_V1, cases[i].payload, strlen(cases[i].payload));
    }
}
END_TEST

START_TEST(test_response_wrong_types)
{
    static const char *const bad[] = {
        "{\"statusCode\":200,\"headers\":[]}",
        "{\"statusCode\":200,\"headers\":\"X: y\"}",
        "{\"statusCode\":200,\"headers\":{\"X\":{}}}",
        "{\"statusCode\":200,\"headers\":{\"X\":[\"a\"]}}",
        "{\"statusCode\":200,\"multiValueHeaders\":{\"X\":\"a\"}}",
        "{\"statusCode\":200,\"multiValueHeaders\":{\"X\":[[\"a\"]]}}",
        "{\"statusCode\":200,\"multiValueHeaders\":{\"X\":[{}]}}",
        "{\"statusCode\":200,\"multiValueHeaders\":[]}",
        "{\"statusCode\":200,\"cookies\":\"a=1\"}",
        "{\"statusCode\":200,\"cookies\":[1]}",
        "{\"statusCode\":200,\"cookies\":{\"a\":\"1\"}}",
        "{\"statusCode\":200,\"body\":1}",
        "{\"statusCode\":200,\"body\":{\"a\":1}}",
        "{\"statusCode\":200,\"body\":[]}",
        "{\"statusCode\":200,\"body\":true}",
        "{\"statusCode\":200,\"isBase64Encoded\":\"true\"}",
        "{\"statusCode\":200,\"isBase64Encoded\":1}",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        expect_malformed(bad[i]);
}
END_TEST

START_TEST(test_response_header_injection)
{
    static const char *const bad[] = {
        "{\"statusCode\":200,\"headers\":{\"X\":\"a\\r\\nInjected: 1\"}}",
        "{\"statusCode\":200,\"headers\":{\"X\":\"a\\nb\"}}",
        "{\"statusCode\":200,\"headers\":{\"X\":\"a\\u0000b\"}}",
        "{\"statusCode\":200,\"headers\":{\"X\\u0000Y\":\"a\"}}",
        "{\"statusCode\":200,\"headers\":{\"X\":\"\\u007f\"}}",
        "{\"statusCode\":200,\"headers\":{\"Bad Name\":\"a\"}}",
        "{\"statusCode\":200,\"headers\":{\"Bad:Name\":\"a\"}}",
        "{\"statusCode\":200,\"headers\":{\"\":\"a\"}}",
        "{\"statusCode\":200,\"headers\":{\"X\\r\\nY\":\"a\"}}",
        "{\"statusCode\":200,\"headers\":{\"\\u00e9\":\"a\"}}",
        "{\"statusCode\":200,\"multiValueHeaders\":{\"X\":[\"ok\",\"a\\r\\nb\"]}}",
        "{\"statusCode\":200,\"multiValueHeaders\":{\"X\\u0000\":[\"ok\"]}}",
        "{\"statusCode\":200,\"cookies\":[\"a=1\\r\\nX: y\"]}",
        "{\"statusCode\":200,\"cookies\":[\"a=1\\u0000; b\"]}",
        "{\"statusCode\\u0000\":200,\"body\":\"x\"}",
        "{\"statusCode\":\"20\\u00000\"}",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        expect_malformed(bad[i]);

    /* HTAB and UTF-8 are fine in a value. */
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V2, "{\"statusCode\":200,\"headers\":{\"X\":\"a\\tb \\u00e9\"}}", &r);
    expect_headers(&r, "X", "a\tb \xc3\xa9", "Content-Type", "application/json", NULL);
    lg_event_response_free(&r);
}
END_TEST

/* A body may hold NUL as \u0000; the tree parser alone would cut it. */
START_TEST(test_response_nul_in_body)
{
    struct lg_event_response r;
    parse_ok_str(LG_PAYLOAD_V1,
                 "{\"statusCode\":200,\"x\":\"\\u0000\",\"body\":\"a\\u0000b\",\"body\":\"z\"}",
                 &r);
    expect_body_bytes(&r, "a\0b", 3);
    lg_event_response_free(&r);

    parse_ok_str(LG_PAYLOAD_V2, "\"x\\u0000y\"", &r);
    expect_body_bytes(&r, "x\0y", 3);
    lg_event_response_free(&r);

    /* An escaped backslash before u0000 is not a NUL. */
    parse_ok_str(LG_PAYLOAD_V2, "{\"statusCode\":200,\"body\":\"\\\\u0000\"}", &r);
    expect_body_bytes(&r, "\\u0000", 6);
    lg_event_response_free(&r);

    /* Inferred object bodies are the text as sent. */
    parse_ok_str(LG_PAYLOAD_V2, "{\"m\":\"\\u0000\"}", &r);
    expect_body_bytes(&r, "{\"m\":\"\\u0000\"}", 14);
    lg_event_response_free(&r);
}
END_TEST

START_TEST(test_response_hostile)
{
    /* Empty, blank, not JSON, trailing garbage. */
    expect_malformed_len(LG_PAYLOAD_V2, "", 0);
    expect_malformed_len(LG_PAYLOAD_V1, "", 0);
    expect_malformed_len(LG_PAYLOAD_V2, NULL, 0);
    expect_malformed("   ");
    expect_malformed("{");
    expect_malformed("{\"statusCode\":200} x");
    expect_malformed("Hello");
    expect_malformed("{'statusCode':200}");
    /* A raw NUL byte. */
    static const char nul1[] = "{\"statusCode\":200,\"body\":\"a\0b\"}";
    static const char nul2[] = "\"a\0\"";
    expect_malformed_len(LG_PAYLOAD_V2, nul1, sizeof(nul1) - 1);
    expect_malformed_len(LG_PAYLOAD_V1, nul1, sizeof(nul1) - 1);
    expect_malformed_len(LG_PAYLOAD_V2, nul2, sizeof(nul2) - 1);
    /* Invalid UTF-8 in a string. */
    expect_malformed("{\"statusCode\":200,\"body\":\"\xff\"}");
    expect_malformed("\"\xc3\x28\"");
    /* null is not a proxy response in format 1.0 (and a 200 "null" in 2.0). */
    expect_malformed_len(LG_PAYLOAD_V1, "null", 4);

    /* 10 000-deep nesting, bare and inside a response. */
    size_t depth = 10000;
    char *deep = malloc(2 * depth + 64);
    ck_assert_ptr_nonnull(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    expect_malformed_len(LG_PAYLOAD_V2, deep, 2 * depth);
    int n = snprintf(deep, 64, "{\"statusCode\":200,\"x\":");
    memset(deep + n, '[', depth);
    memset(deep + n + depth, ']', depth);
    memcpy(deep + n + 2 * depth, "}", 2);
    expect_malformed_len(LG_PAYLOAD_V2, deep, strlen(deep));
    expect_malformed_len(LG_PAYLOAD_V1, deep, strlen(deep));
    free(deep);

    /* Larger than any Lambda answer. */
    size_t big = LG_LAMBDA_RESPONSE_MAX + 1;
    char *huge = malloc(big);
    ck_assert_ptr_nonnull(huge);
    memset(huge, ' ', big);
    memcpy(huge, "\"x\"", 3);
    expect_malformed_len(LG_PAYLOAD_V2, huge, big);
    free(huge);
}
END_TEST

START_TEST(test_response_too_many_headers)
{
    struct lg_buf p;
    lg_buf_init(&p, 0);
    ck_assert_int_eq(lg_buf_puts(&p, "{\"statusCode\":200,\"cookies\":["), 0);
    for (int i = 0; i < 1025; i++)
        ck_assert_int_eq(lg_buf_printf(&p, "%s\"c%d=1\"", i ? "," : "", i), 0);
    ck_assert_int_eq(lg_buf_puts(&p, "]}"), 0);
    expect_malformed_len(LG_PAYLOAD_V2, p.data, p.len);

    /* 1000 are fine, and arrive in order. */
    lg_buf_reset(&p);
    ck_assert_int_eq(lg_buf_puts(&p, "{\"statusCode\":200,\"multiValueHeaders\":{\"X\":["), 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(lg_buf_printf(&p, "%s%d", i ? "," : "", i), 0);
    ck_assert_int_eq(lg_buf_puts(&p, "]}}"), 0);
    struct lg_event_response r;
    parse_ok(LG_PAYLOAD_V1, p.data, p.len, &r);
    ck_assert_uint_eq(r.nheaders, 1001);
    ck_assert_str_eq(r.headers[999].value, "999");
    ck_assert_str_eq(r.headers[1000].name, "Content-Type");
    lg_event_response_free(&r);
    lg_buf_free(&p);
}
END_TEST

START_TEST(test_response_free_is_safe)
{
    struct lg_event_response r;
    memset(&r, 0, sizeof(r));
    lg_event_response_free(&r);
    lg_event_response_free(&r);
    lg_event_response_free(NULL);
    parse_ok_str(LG_PAYLOAD_V2, "{\"statusCode\":200,\"headers\":{\"A\":\"b\"},\"body\":\"x\"}",
                 &r);
    lg_event_response_free(&r);
    ck_assert_uint_eq(r.nheaders, 0);
    ck_assert_ptr_null(r.headers);
    lg_event_response_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("build");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_v2_full_shape);
    tcase_add_test(tc, test_v1_full_shape);
    tcase_add_test(tc, test_v2_empty_members_left_out);
    tcase_add_test(tc, test_v1_empty_members_null);
    tcase_add_test(tc, test_query_decoding);
    tcase_add_test(tc, test_query_not_utf8);
    tcase_add_test(tc, test_headers_lowercase_joined);
    tcase_add_test(tc, test_cookies);
    tcase_add_test(tc, test_hop_by_hop);
    tcase_add_test(tc, test_forwarded_headers);
    tcase_add_test(tc, test_domain_and_user_agent);
    tcase_add_test(tc, test_any_route_method);
    tcase_add_test(tc, test_identity_jwt);
    tcase_add_test(tc, test_identity_api_key);
    tcase_add_test(tc, test_body_text_types);
    tcase_add_test(tc, test_body_binary_types);
    tcase_add_test(tc, test_body_invalid_utf8_and_nul);
    tcase_add_test(tc, test_body_empty);
    tcase_add_test(tc, test_is_text_type);
    tcase_add_test(tc, test_invalid_utf8_refused);
    tcase_add_test(tc, test_output_bound);
    tcase_add_test(tc, test_many_headers_and_params);
    tcase_add_test(tc, test_format_time);
    suite_add_tcase(s, tc);

    TCase *tr = tcase_create("response");
    tcase_set_timeout(tr, 60);
    tcase_add_test(tr, test_response_basic);
    tcase_add_test(tr, test_response_nulls);
    tcase_add_test(tr, test_response_scalar_header_values);
    tcase_add_test(tr, test_response_multi_value_headers);
    tcase_add_test(tr, test_response_cookies);
    tcase_add_test(tr, test_response_base64);
    tcase_add_test(tr, test_response_content_type);
    tcase_add_test(tr, test_response_hop_by_hop);
    tcase_add_test(tr, test_response_status_codes);
    tcase_add_test(tr, test_response_v2_inference);
    tcase_add_test(tr, test_response_wrong_types);
    tcase_add_test(tr, test_response_header_injection);
    tcase_add_test(tr, test_response_nul_in_body);
    tcase_add_test(tr, test_response_hostile);
    tcase_add_test(tr, test_response_too_many_headers);
    tcase_add_test(tr, test_response_free_is_safe);
    suite_add_tcase(s, tr);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
