/* test_sigv4.c - SigV4 signing against botocore-made vectors; key cache, limits and tokens. */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yajl/yajl_tree.h>

#include "lambdagate/buf.h"
#include "lambdagate/sigv4.h"

#define VECTOR_DIR LG_TEST_DATA "/sigv4"
/* Cases in tests/data/sigv4 (see its README): a missing or extra directory
 * fails test_vector_count, so losing vectors cannot go unnoticed. */
#define EXPECTED_CASES   40
#define MAX_CASES        128
#define MAX_FILE         (1024 * 1024)
#define MAX_TEST_HEADERS 32

#define SECRET     "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN      "FQoGZXIvYXdzEXAMPLEtoken/Zm9vYmFy+session=="
#define LAMBDA_ARN "arn%3Aaws%3Alambda%3Aus-west-2%3A123456789012%3Afunction%3Amy-fn%3Aprod"

/* Filled by main() before the runner forks, read by test_vector. */
static char *case_names[MAX_CASES];
static size_t ncases;

/* A vector's request.txt, parsed as regen.py parses it (see there). Names
 * and values are owned (malloc); body points into text. */
struct test_request {
    char *text;
    size_t text_len;
    char *method, *path, *query;
    struct lg_sigv4_header headers[MAX_TEST_HEADERS];
    size_t nheaders;
    const char *body;
    size_t body_len;
};

/* The fields of a vector's context.json the signer needs (owned). */
struct test_context {
    char *access_key_id, *secret_access_key, *token, *region, *service;
    bool normalize, s3_style, omit_session_token;
    time_t now;
};

/* Read dir/name whole, NUL-terminated; caller frees. Fails the test when
 * the file is missing or too large. */
static char *read_file(const char *dir, const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *data = malloc(MAX_FILE + 1);
    ck_assert_ptr_nonnull(data);
    size_t n = fread(data, 1, MAX_FILE + 1, f);
    fclose(f);
    ck_assert_msg(n <= MAX_FILE, "%s is too large", path);
    data[n] = '\0';
    if (len != NULL)
        *len = n;
    return data;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    ck_assert_ptr_nonnull(p);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void parse_request_line(struct test_request *r, const char *line, size_t n)
{
    const char *first = memchr(line, ' ', n);
    const char *last = line + n;
    while (last > line && last[-1] != ' ')
        last--;
    ck_assert_msg(first != NULL && last - 1 > first, "bad request line");
    r->method = dup_bytes(line, (size_t)(first - line));
    const char *target = first + 1;
    size_t target_len = (size_t)(last - 1 - target);
    const char *q = memchr(target, '?', target_len);
    if (q == NULL) {
        r->path = dup_bytes(target, target_len);
    } else {
        r->path = dup_bytes(target, (size_t)(q - target));
        r->query = dup_bytes(q + 1, target_len - (size_t)(q - target) - 1);
    }
}

static void parse_request(struct test_request *r, const char *dir)
{
    memset(r, 0, sizeof(*r));
    r->text = read_file(dir, "request.txt", &r->text_len);
    const char *data = r->text;
    size_t len = r->text_len, pos = 0;
    bool first = true;
    r->body = "";
    while (pos < len) {
        const char *line = data + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos = nl ? pos + n + 1 : len;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n == 0 && !first) {
            r->body = data + pos;
            r->body_len = len - pos;
            break;
        }
        if (first) {
            parse_request_line(r, line, n);
            first = false;
        } else if (line[0] == ' ' || line[0] == '\t') {
            /* obs-fold: the previous value continues after one space. */
            ck_assert_msg(r->nheaders > 0, "continuation line without a header");
            struct lg_sigv4_header *h = &r->headers[r->nheaders - 1];
            size_t old = strlen(h->value);
            char *v = realloc((char *)h->value, old + 1 + n + 1);
            ck_assert_ptr_nonnull(v);
            v[old] = ' ';
            memcpy(v + old + 1, line, n);
            v[old + 1 + n] = '\0';
            h->value = v;
        } else {
            const char *colon = memchr(line, ':', n);
            ck_assert_msg(colon != NULL, "header line without ':'");
            ck_assert_uint_lt(r->nheaders, MAX_TEST_HEADERS);
            r->headers[r->nheaders].name = dup_bytes(line, (size_t)(colon - line));
            r->headers[r->nheaders].value = dup_bytes(colon + 1, n - (size_t)(colon - line) - 1);
            r->nheaders++;
        }
    }
    ck_assert_msg(!first, "empty request.txt");
}

static void free_request(struct test_request *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free((char *)r->headers[i].name);
        free((char *)r->headers[i].value);
    }
    free(r->method);
    free(r->path);
    free(r->query);
    free(r->text);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), so the test needs neither timegm nor TZ. */
static long days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static char *json_string(yajl_val root, const char *a, const char *b, bool required)
{
    const char *path[] = {a, b, NULL};
    yajl_val v = yajl_tree_get(root, path, yajl_t_string);
    ck_assert_msg(v != NULL || !required, "context.json: %s%s%s missing", a, b ? "." : "",
                  b ? b : "");
    const char *str = v ? YAJL_GET_STRING(v) : NULL;
    return str ? strdup(str) : NULL;
}

static bool json_bool(yajl_val root, const char *key, bool dflt)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(root, path, yajl_t_any);
    if (v == NULL)
        return dflt;
    ck_assert_msg(YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v), "context.json: %s is not a boolean", key);
    return YAJL_IS_TRUE(v);
}

static void parse_context(struct test_context *c, const char *dir)
{
    memset(c, 0, sizeof(*c));
    char *text = read_file(dir, "context.json", NULL);
    char errbuf[256];
    yajl_val root = yajl_tree_parse(text, errbuf, sizeof(errbuf));
    ck_assert_msg(root != NULL, "context.json: %s", errbuf);
    c->access_key_id = json_string(root, "credentials", "access_key_id", true);
    c->secret_access_key = json_string(root, "credentials", "secret_access_key", true);
    c->token = json_string(root, "credentials", "token", false);
    c->region = json_string(root, "region", NULL, true);
    c->service = json_string(root, "service", NULL, true);
    c->normalize = json_bool(root, "normalize", true);
    c->s3_style = json_bool(root, "s3_style", false);
    c->omit_session_token = json_bool(root, "omit_session_token", false);
    char *ts = json_string(root, "timestamp", NULL, true);
    int y, mo, d, h, mi, s;
    char z = 0;
    ck_assert_msg(sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &z) == 7 &&
                      z == 'Z',
                  "context.json: bad timestamp %s", ts);
    c->now = (time_t)(days_from_civil(y, mo, d) * 86400L + h * 3600L + mi * 60L + s);
    free(ts);
    yajl_tree_free(root);
    free(text);
}

static void free_context(struct test_context *c)
{
    free(c->access_key_id);
    free(c->secret_access_key);
    free(c->token);
    free(c->region);
    free(c->service);
}

START_TEST(test_vector_count)
{
    ck_assert_uint_eq(ncases, EXPECTED_CASES);
}
END_TEST

/* One vector: sign request.txt as context.json says and compare every
 * intermediate result with botocore's, byte for byte. */
START_TEST(test_vector)
{
    ck_assert_uint_lt((size_t)_i, ncases);
    const char *name = case_names[_i];
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", VECTOR_DIR, name);

    struct test_request r;
    struct test_context c;
    parse_request(&r, dir);
    parse_context(&c, dir);
    /* Suite cases with normalize=false are not imported (README): here
     * "unnormalized" only ever means S3 style. */
    ck_assert_msg(c.normalize == !c.s3_style, "%s: normalize=false needs s3_style", name);
    char *want_cr = read_file(dir, "canonical-request.txt", NULL);
    char *want_sts = read_file(dir, "string-to-sign.txt", NULL);
    char *want_sig = read_file(dir, "signature.txt", NULL);
    char *want_auth = read_file(dir, "authorization.txt", NULL);

    struct lg_sigv4_input in = {
        .method = r.method,
        .path = r.path,
        .query = r.query,
        .headers = r.headers,
        .nheaders = r.nheaders,
        .payload = r.body,
        .payload_len = r.body_len,
        .region = c.region,
        .service = c.service,
        .now = c.now,
        .s3_style = c.s3_style,
        .access_key_id = c.access_key_id,
        .secret_access_key = c.secret_access_key,
        /* omit_session_token: the token travels unsigned, so it is not
         * given to the signer (as regen.py does for botocore). */
        .session_token = c.omit_session_token ? NULL : c.token,
        .secret_id = 1,
    };
    struct lg_sigv4_debug dbg;
    lg_buf_init(&dbg.canonical_request, 0);
    lg_buf_init(&dbg.string_to_sign, 0);
    struct lg_sigv4_output out;
    char err[LG_ERR_LEN];
    ck_assert_msg(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)) == 0, "%s: %s", name, err);
    ck_assert_msg(strcmp(lg_buf_cstr(&dbg.canonical_request), want_cr) == 0,
                  "%s: canonical request\n--- got\n%s\n--- want\n%s", name,
                  lg_buf_cstr(&dbg.canonical_request), want_cr);
    ck_assert_msg(strcmp(lg_buf_cstr(&dbg.string_to_sign), want_sts) == 0,
                  "%s: string to sign\n--- got\n%s\n--- want\n%s", name,
                  lg_buf_cstr(&dbg.string_to_sign), want_sts);
    ck_assert_msg(strcmp(out.signature, want_sig) == 0, "%s: signature %s, want %s", name,
                  out.signature, want_sig);
    ck_assert_msg(strcmp(out.authorization, want_auth) == 0,
                  "%s: authorization\n--- got\n%s\n--- want\n%s", name, out.authorization,
                  want_auth);
    ck_assert_msg(strncmp(out.amz_date, want_sts + strlen("AWS4-HMAC-SHA256\n"), 16) == 0,
                  "%s: amz_date %s", name, out.amz_date);

    /* The same through a cold and a warm key cache, and with the payload
     * hash given instead of the payload. */
    struct lg_sigv4_key_cache cache = {0};
    struct lg_sigv4_output again;
    for (int round = 0; round < 2; round++) {
        ck_assert_msg(lg_sigv4_sign(&in, &cache, &again, NULL, err, sizeof(err)) == 0, "%s: %s",
                      name, err);
        ck_assert_str_eq(again.authorization, want_auth);
    }
    char payload_sha[65];
    memcpy(payload_sha, out.payload_sha256, sizeof(payload_sha));
    in.payload_sha256 = payload_sha;
    in.payload = NULL;
    in.payload_len = 0;
    ck_assert_msg(lg_sigv4_sign(&in, &cache, &again, NULL, err, sizeof(err)) == 0, "%s: %s", name,
                  err);
    ck_assert_str_eq(again.authorization, want_auth);

    lg_buf_free(&dbg.canonical_request);
    lg_buf_free(&dbg.string_to_sign);
    free(want_cr);
    free(want_sts);
    free(want_sig);
    free(want_auth);
    free_context(&c);
    free_request(&r);
}
END_TEST

/* A Lambda Invoke request; tests change fields of the copy they get. */
static const struct lg_sigv4_header lambda_headers[] = {
    {"Host", "lambda.us-west-2.amazonaws.com"},
    {"Content-Type", "application/json"},
};

static struct lg_sigv4_input lambda_input(void)
{
    static const char body[] = "{\"hello\":\"world\"}";
    struct lg_sigv4_input in = {
        .method = "POST",
        .path = "/2015-03-31/functions/" LAMBDA_ARN "/invocations",
        .query = NULL,
        .headers = lambda_headers,
        .nheaders = LG_ARRAY_LEN(lambda_headers),
        .payload = body,
        .payload_len = sizeof(body) - 1,
        .region = "us-west-2",
        .service = "lambda",
        .now = 1709626150, /* 2024-03-05T08:09:10Z */
        .s3_style = false,
        .access_key_id = "AKIDEXAMPLE",
        .secret_access_key = SECRET,
        .session_token = NULL,
        .secret_id = 7,
    };
    return in;
}

static void sign_ok(const struct lg_sigv4_input *in, struct lg_sigv4_key_cache *cache,
                    struct lg_sigv4_output *out)
{
    char err[LG_ERR_LEN];
    ck_assert_msg(lg_sigv4_sign(in, cache, out, NULL, err, sizeof(err)) == 0, "sign: %s", err);
}

/* Signing must fail with an error naming want, leave no output behind and
 * never echo a secret. */
static void sign_fails(const struct lg_sigv4_input *in, const char *want)
{
    struct lg_sigv4_output out;
    memset(&out, 'x', sizeof(out));
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_sigv4_sign(in, NULL, &out, NULL, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, want) != NULL, "error '%s' does not mention '%s'", err, want);
    ck_assert_ptr_null(strstr(err, SECRET));
    ck_assert_ptr_null(strstr(err, TOKEN));
    ck_assert_str_eq(out.authorization, "");
    ck_assert_str_eq(out.signature, "");
}

START_TEST(test_lambda_arn_double_encoded)
{
    struct lg_sigv4_input in = lambda_input();
    struct lg_sigv4_debug dbg;
    lg_buf_init(&dbg.canonical_request, 0);
    lg_buf_init(&dbg.string_to_sign, 0);
    struct lg_sigv4_output out;
    char err[LG_ERR_LEN];
    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)), 0);
    const char *cr = lg_buf_cstr(&dbg.canonical_request);
    ck_assert_msg(strncmp(cr,
                          "POST\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A"
                          "123456789012%253Afunction%253Amy-fn%253Aprod/invocations\n\n",
                          strlen("POST\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-"
                                 "west-2%253A123456789012%253Afunction%253Amy-fn%253Aprod/"
                                 "invocations\n\n")) == 0,
                  "%s", cr);
    ck_assert_str_eq(out.amz_date, "20240305T080910Z");
    ck_assert_msg(strncmp(out.authorization,
                          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240305/us-west-2/lambda/"
                          "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=",
                          strlen("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240305/us-west-2/"
                                 "lambda/aws4_request, SignedHeaders=content-type;host;x-amz-"
                                 "date, Signature=")) == 0,
                  "%s", out.authorization);
    ck_assert_str_eq(out.authorization + strlen(out.authorization) - 64, out.signature);

    /* botocore uppercases the method in the canonical request. */
    struct lg_sigv4_output lower;
    in.method = "post";
    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &lower, &dbg, err, sizeof(err)), 0);
    ck_assert_str_eq(lower.signature, out.signature);
    ck_assert_int_eq(strncmp(lg_buf_cstr(&dbg.canonical_request), "POST\n", 5), 0);
    lg_buf_free(&dbg.canonical_request);
    lg_buf_free(&dbg.string_to_sign);
}
END_TEST

START_TEST(test_canonical_uri)
{
    static const struct {
        const char *path;
        bool s3;
        const char *want; /* NULL: must fail */
    } cases[] = {
        {"/2015-03-31/functions/" LAMBDA_ARN "/invocations", false,
         "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A123456789012%253A"
         "function%253Amy-fn%253Aprod/invocations"},
        {"/2015-03-31/functions/" LAMBDA_ARN "/invocations", true,
         "/2015-03-31/functions/" LAMBDA_ARN "/invocations"},
        {"/a/b/../c/./d", false, "/a/c/d"},
        {"/a/b/../c/./d", true, "/a/b/../c/./d"},
        {"/../..", false, "/"},
        {"/a/..", false, "/"},
        {"/a/../", false, "/"},
        {"//a//b//", false, "/a/b/"},
        {"/%2E%2E/x", false, "/%252E%252E/x"},
        {"/a b/ሴ:~", false, "/a%20b/%E1%88%B4%3A~"},
        {"", false, "/"},
        {NULL, false, "/"},
        {"/", true, "/"},
        {"relative", false, NULL},
        {"/a?b", false, NULL},
        {"/a#b", true, NULL},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        ck_assert(lg_buf_puts(&b, "pre:") == 0);
        int rc = lg_sigv4_canonical_uri(&b, cases[i].path, cases[i].s3);
        if (cases[i].want == NULL) {
            ck_assert_msg(rc == -1, "%s accepted", cases[i].path);
            ck_assert_str_eq(lg_buf_cstr(&b), "pre:");
        } else {
            ck_assert_msg(rc == 0, "%s refused", cases[i].path);
            ck_assert_str_eq(lg_buf_cstr(&b) + 4, cases[i].want);
        }
        lg_buf_free(&b);
    }
}
END_TEST

START_TEST(test_canonical_query)
{
    static const struct {
        const char *query;
        const char *want; /* NULL: must fail */
    } cases[] = {
        {NULL, ""},
        {"", ""},
        {"Qualifier=%24LATEST", "Qualifier=%24LATEST"},
        {"Qualifier=$LATEST", "Qualifier=%24LATEST"},
        {"Qualifier=prod", "Qualifier=prod"},
        {"b=2&a=1&a=0", "a=0&a=1&b=2"},
        {"Param-3=x&Param=y", "Param=y&Param-3=x"},
        {"a=%7e%2f+b", "a=~%2F%2Bb"},
        {"flag", "flag="},
        {"a=b=c", "a=b%3Dc"},
        {"a=%zz", NULL},
        {"a=%00", NULL},
        {"a=%4", NULL},
        {"a=1&&b=2", NULL},
        {"a=1&", NULL},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        int rc = lg_sigv4_canonical_query(&b, cases[i].query);
        if (cases[i].want == NULL) {
            ck_assert_msg(rc == -1, "%s accepted", cases[i].query);
            ck_assert_str_eq(lg_buf_cstr(&b), "");
        } else {
            ck_assert_msg(rc == 0, "%s refused", cases[i].query);
            ck_assert_str_eq(lg_buf_cstr(&b), cases[i].want);
        }
        lg_buf_free(&b);
    }
}
END_TEST

/* The cache answers for the same day, region, service and secret id, and
 * for nothing else. A deliberately corrupted cached key shows which: a hit
 * signs wrongly, a miss derives afresh and signs right. */
START_TEST(test_key_cache)
{
    struct lg_sigv4_input in = lambda_input();
    struct lg_sigv4_output plain, first, second, out;
    struct lg_sigv4_key_cache cache = {0};
    sign_ok(&in, NULL, &plain);
    sign_ok(&in, &cache, &first);
    ck_assert(cache.valid);
    ck_assert_str_eq(cache.date, "20240305");
    ck_assert_str_eq(cache.region, "us-west-2");
    ck_assert_str_eq(cache.service, "lambda");
    ck_assert_uint_eq(cache.secret_id, 7);
    sign_ok(&in, &cache, &second);
    ck_assert_str_eq(first.authorization, plain.authorization);
    ck_assert_str_eq(second.authorization, plain.authorization);

    struct lg_sigv4_key_cache good = cache;
    cache.key[0] ^= 1;
    sign_ok(&in, &cache, &out);
    ck_assert_str_ne(out.signature, plain.signature); /* the hit used the cached key */

    /* Later the same day: still a hit. */
    struct lg_sigv4_input later = in;
    later.now += 3600;
    sign_ok(&later, &cache, &out);
    struct lg_sigv4_output later_plain;
    sign_ok(&later, NULL, &later_plain);
    ck_assert_str_ne(out.signature, later_plain.signature);

    for (int variant = 0; variant < 5; variant++) {
        struct lg_sigv4_input v = in;
        switch (variant) {
        case 0:
            v.now += 86400; /* next day */
            break;
        case 1:
            v.region = "eu-central-1";
            break;
        case 2:
            v.service = "execute-api";
            break;
        case 3:
            v.secret_id = 8; /* same secret, new generation: derived again */
            break;
        default:
            v.secret_access_key = "AnotherSecretKeyEXAMPLE0123456789abcdefgh";
            v.secret_id = 9;
            break;
        }
        cache = good;
        cache.key[0] ^= 1;
        struct lg_sigv4_output want;
        sign_ok(&v, NULL, &want);
        sign_ok(&v, &cache, &out);
        ck_assert_msg(strcmp(out.signature, want.signature) == 0, "variant %d used a stale key",
                      variant);
        ck_assert(cache.valid);
        ck_assert_str_eq(cache.region, v.region);
        ck_assert_str_eq(cache.service, v.service);
        ck_assert_uint_eq(cache.secret_id, v.secret_id);
        if (variant != 3)
            ck_assert_msg(strcmp(out.signature, plain.signature) != 0,
                          "variant %d signs like the original", variant);
        else
            ck_assert_str_eq(out.signature, plain.signature);
        /* And the refreshed entry now serves repeat calls. */
        sign_ok(&v, &cache, &second);
        ck_assert_str_eq(second.authorization, want.authorization);
    }
    ck_assert_str_eq(cache.date, "20240305");
    cache = good;
    struct lg_sigv4_input next_day = in;
    next_day.now += 86400;
    sign_ok(&next_day, &cache, &out);
    ck_assert_str_eq(cache.date, "20240306");
}
END_TEST

START_TEST(test_missing_host)
{
    static const struct lg_sigv4_header no_host[] = {{"Content-Type", "application/json"}};
    static const struct lg_sigv4_header two_hosts[] = {{"Host", "a.example"},
                                                       {"host", "b.example"}};
    struct lg_sigv4_input in = lambda_input();
    in.headers = no_host;
    in.nheaders = LG_ARRAY_LEN(no_host);
    sign_fails(&in, "host");
    in.headers = NULL;
    in.nheaders = 0;
    sign_fails(&in, "host");
    in.headers = two_hosts;
    in.nheaders = LG_ARRAY_LEN(two_hosts);
    sign_fails(&in, "host");
}
END_TEST

START_TEST(test_security_token)
{
    struct lg_sigv4_input in = lambda_input();
    struct lg_sigv4_debug dbg;
    lg_buf_init(&dbg.canonical_request, 0);
    lg_buf_init(&dbg.string_to_sign, 0);
    struct lg_sigv4_output out;
    char err[LG_ERR_LEN];

    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(out.authorization, "SignedHeaders=content-type;host;x-amz-date,"));
    ck_assert_ptr_null(strstr(out.authorization, "x-amz-security-token"));
    ck_assert_ptr_null(strstr(lg_buf_cstr(&dbg.canonical_request), "x-amz-security-token"));
    char without[65];
    memcpy(without, out.signature, sizeof(without));

    in.session_token = ""; /* empty: no token, as for botocore */
    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)), 0);
    ck_assert_ptr_null(strstr(out.authorization, "x-amz-security-token"));
    ck_assert_str_eq(out.signature, without);

    in.session_token = TOKEN;
    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(out.authorization, "SignedHeaders=content-type;host;x-amz-date;"
                                                    "x-amz-security-token, Signature="));
    ck_assert_ptr_nonnull(strstr(lg_buf_cstr(&dbg.canonical_request),
                                 "\nx-amz-date:20240305T080910Z\nx-amz-security-token:" TOKEN
                                 "\n\n"));
    ck_assert_ptr_null(strstr(out.authorization, TOKEN));
    ck_assert_str_ne(out.signature, without);

    /* The signer owns these headers. */
    static const struct lg_sigv4_header own_token[] = {{"Host", "lambda.us-west-2.amazonaws.com"},
                                                       {"X-Amz-Security-Token", TOKEN}};
    static const struct lg_sigv4_header own_date[] = {{"Host", "lambda.us-west-2.amazonaws.com"},
                                                      {"x-amz-date", "20240305T080910Z"}};
    in.headers = own_token;
    in.nheaders = LG_ARRAY_LEN(own_token);
    sign_fails(&in, "x-amz-security-token");
    in.headers = own_date;
    sign_fails(&in, "x-amz-date");
    in = lambda_input();
    in.session_token = "bad token";
    sign_fails(&in, "session token");
    lg_buf_free(&dbg.canonical_request);
    lg_buf_free(&dbg.string_to_sign);
}
END_TEST

START_TEST(test_payload_hash)
{
    struct lg_sigv4_input in = lambda_input();
    struct lg_sigv4_output hashed, given;
    sign_ok(&in, NULL, &hashed);
    /* sha256('{"hello":"world"}') */
    ck_assert_str_eq(hashed.payload_sha256,
                     "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588");
    in.payload_sha256 = hashed.payload_sha256;
    in.payload = NULL;
    in.payload_len = 0;
    sign_ok(&in, NULL, &given);
    ck_assert_str_eq(given.authorization, hashed.authorization);

    in.payload_sha256 = NULL; /* empty payload */
    sign_ok(&in, NULL, &given);
    ck_assert_str_eq(given.payload_sha256,
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_str_ne(given.signature, hashed.signature);

    in.payload_sha256 = "93A23971A914E5EACBF0A8D25154CDA309C3C1C72FBB9914D47C60F3CB681588";
    sign_fails(&in, "payload_sha256");
    in.payload_sha256 = "93a2";
    sign_fails(&in, "payload_sha256");
    in.payload_sha256 = NULL;
    in.payload_len = 5;
    sign_fails(&in, "payload");
}
END_TEST

/* Oversized or malformed input is refused with a reason, never overruns
 * (the sanitizers watch) and never reaches the output. */
START_TEST(test_limits)
{
    struct lg_sigv4_input in = lambda_input();

    size_t big = 1024 * 1024;
    char *huge = malloc(big + 1);
    ck_assert_ptr_nonnull(huge);
    memset(huge, 'a', big);
    huge[0] = '/';
    huge[big] = '\0';
    in.path = huge;
    sign_fails(&in, "path");
    in = lambda_input();
    huge[0] = 'a';
    in.query = huge;
    sign_fails(&in, "query");

    in = lambda_input();
    struct lg_sigv4_header *many = calloc(1000, sizeof(*many));
    ck_assert_ptr_nonnull(many);
    many[0].name = "Host";
    many[0].value = "lambda.us-west-2.amazonaws.com";
    for (size_t i = 1; i < 1000; i++) {
        many[i].name = "X-Many";
        many[i].value = "v";
    }
    in.headers = many;
    in.nheaders = 1000;
    sign_fails(&in, "headers");

    /* One value too long; then values each within bounds but together
     * longer than a canonical request may be. */
    many[1].value = huge;
    in.nheaders = 2;
    sign_fails(&in, "value longer");
    huge[8000] = '\0';
    for (size_t i = 1; i < 60; i++)
        many[i].value = huge;
    in.nheaders = 60;
    sign_fails(&in, "canonical request");

    /* Names that overflow the signed-header list, and names that fit it
     * but overflow the Authorization header around it. */
    static char names[40][101];
    for (size_t i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "x-%02zu-", i);
        memset(names[i] + 5, 'n', 95);
        names[i][100] = '\0';
        many[i + 1].name = names[i];
        many[i + 1].value = "v";
    }
    in.nheaders = 41;
    sign_fails(&in, "Authorization");
    in.nheaders = 10; /* 9 names of 100 bytes: a 925-byte list */
    sign_fails(&in, "Authorization");
    in.nheaders = 8;
    struct lg_sigv4_output out;
    sign_ok(&in, NULL, &out);
    ck_assert_uint_lt(strlen(out.authorization), sizeof(out.authorization));

    static const struct lg_sigv4_header bad_name[] = {{"Host", "h"}, {"Bad Name", "v"}};
    static const struct lg_sigv4_header ctl_value[] = {{"Host", "h"}, {"X-A", "a\r\nX-B: b"}};
    in = lambda_input();
    in.headers = bad_name;
    in.nheaders = 2;
    sign_fails(&in, "token");
    in.headers = ctl_value;
    sign_fails(&in, "control character");

    in = lambda_input();
    memset(huge, 'A', 129);
    huge[129] = '\0';
    in.access_key_id = huge;
    sign_fails(&in, "access key id");
    in = lambda_input();
    in.secret_access_key = huge;
    sign_fails(&in, "secret access key");
    in = lambda_input();
    memset(huge, 'T', 9000);
    huge[9000] = '\0';
    in.session_token = huge;
    sign_fails(&in, "session token");
    in = lambda_input();
    in.region = "a-region-name-that-is-far-too-long-to-cache";
    sign_fails(&in, "region");
    in = lambda_input();
    in.region = "us/west";
    sign_fails(&in, "region");
    in = lambda_input();
    in.service = "";
    sign_fails(&in, "service");
    in = lambda_input();
    in.method = "PO ST";
    sign_fails(&in, "method");
    in = lambda_input();
    in.access_key_id = "AKID,EXAMPLE";
    sign_fails(&in, "access key id");
    in = lambda_input();
    in.now = (time_t)253402300800LL; /* year 10000 */
    sign_fails(&in, "time");

    /* A debug buffer that is too small is an error, not a truncation. */
    in = lambda_input();
    struct lg_sigv4_debug dbg;
    lg_buf_init(&dbg.canonical_request, 16);
    lg_buf_init(&dbg.string_to_sign, 0);
    char err[LG_ERR_LEN];
    ck_assert_int_eq(lg_sigv4_sign(&in, NULL, &out, &dbg, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "debug"));
    lg_buf_free(&dbg.canonical_request);
    lg_buf_free(&dbg.string_to_sign);

    free(many);
    free(huge);
}
END_TEST

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every sub-directory of VECTOR_DIR is a case. */
static void find_cases(void)
{
    DIR *d = opendir(VECTOR_DIR);
    if (d == NULL) {
        fprintf(stderr, "test_sigv4: cannot open %s\n", VECTOR_DIR);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && ncases < MAX_CASES) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", VECTOR_DIR, e->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            case_names[ncases++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(case_names, ncases, sizeof(case_names[0]), compare_names);
}

int main(void)
{
    find_cases();
    Suite *s = suite_create("sigv4");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vector_count);
    tcase_add_loop_test(tc, test_vector, 0, (int)ncases);
    tcase_add_test(tc, test_lambda_arn_double_encoded);
    tcase_add_test(tc, test_canonical_uri);
    tcase_add_test(tc, test_canonical_query);
    tcase_add_test(tc, test_key_cache);
    tcase_add_test(tc, test_missing_host);
    tcase_add_test(tc, test_security_token);
    tcase_add_test(tc, test_payload_hash);
    tcase_add_test(tc, test_limits);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (size_t i = 0; i < ncases; i++)
        free(case_names[i]);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
