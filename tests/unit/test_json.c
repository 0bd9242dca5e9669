/* test_json.c - bounded JSON parsing, typed getters, generator helpers and log-line escaping. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lambdagate/json.h"

#define MAX_LEN (1024 * 1024)

/* Parse text that must be accepted; caller frees with lg_json_free(). */
static yajl_val parse_ok(const char *text)
{
    char err[LG_ERR_LEN] = "unset";
    yajl_val v = lg_json_parse(text, strlen(text), MAX_LEN, LG_JSON_MAX_DEPTH, err, sizeof(err));
    ck_assert_msg(v != NULL, "refused %s: %s", text, err);
    ck_assert_str_eq(err, "");
    return v;
}

/* Parse text[0..len) that must be refused with an error starting with
 * want_prefix. */
static void parse_bad_n(const char *text, size_t len, size_t max_len, size_t max_depth,
                        const char *want_prefix)
{
    char err[LG_ERR_LEN] = "";
    yajl_val v = lg_json_parse(text, len, max_len, max_depth, err, sizeof(err));
    if (v != NULL)
        lg_json_free(v);
    ck_assert_msg(v == NULL, "accepted %.*s", (int)(len < 200 ? len : 200), text);
    ck_assert_msg(strncmp(err, want_prefix, strlen(want_prefix)) == 0,
                  "error \"%s\" does not start with \"%s\"", err, want_prefix);
    /* yajl's multi-line message is cut to its first line. */
    ck_assert_ptr_null(strchr(err, '\n'));
}

static void parse_bad(const char *text, const char *want_prefix)
{
    parse_bad_n(text, strlen(text), MAX_LEN, LG_JSON_MAX_DEPTH, want_prefix);
}

/* ---------- lg_json_parse ---------- */

START_TEST(test_parse_accepts)
{
    yajl_val v =
        parse_ok("{\"a\":1,\"b\":[true,false,null,\"s\"],\"c\":{\"d\":-2.5e3},\"e\":\"\"}");
    ck_assert(YAJL_IS_OBJECT(v));
    ck_assert_uint_eq(v->u.object.len, 4);
    yajl_val b = lg_json_get(v, "b");
    ck_assert(YAJL_IS_ARRAY(b));
    ck_assert_uint_eq(b->u.array.len, 4);
    ck_assert(YAJL_IS_TRUE(b->u.array.values[0]));
    ck_assert(YAJL_IS_FALSE(b->u.array.values[1]));
    ck_assert(YAJL_IS_NULL(b->u.array.values[2]));
    ck_assert_str_eq(b->u.array.values[3]->u.string, "s");
    yajl_val d = lg_json_get(lg_json_get(v, "c"), "d");
    ck_assert(YAJL_IS_DOUBLE(d));
    ck_assert(d->u.number.d == -2500.0);
    ck_assert_str_eq(lg_json_get_string(v, "e"), "");
    lg_json_free(v);

    /* Whitespace, top-level scalars, escapes and UTF-8. */
    v = parse_ok(" \t\r\n[ 1 , 2 ]\n");
    ck_assert_uint_eq(v->u.array.len, 2);
    lg_json_free(v);
    v = parse_ok("42");
    ck_assert(YAJL_IS_INTEGER(v));
    ck_assert_int_eq(YAJL_GET_INTEGER(v), 42);
    lg_json_free(v);
    v = parse_ok("\"\\u00e9\\n\\\"\\\\\xe2\x82\xac\"");
    ck_assert(YAJL_IS_STRING(v));
    ck_assert_str_eq(v->u.string, "\xc3\xa9\n\"\\\xe2\x82\xac");
    lg_json_free(v);
    v = parse_ok("{}");
    ck_assert_uint_eq(v->u.object.len, 0);
    lg_json_free(v);
    lg_json_free(NULL);

    /* err may be NULL. */
    v = lg_json_parse("[1]", 3, MAX_LEN, 4, NULL, 0);
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
    ck_assert_ptr_null(lg_json_parse("[1", 2, MAX_LEN, 4, NULL, 0));
}
END_TEST

START_TEST(test_parse_len_is_honoured)
{
    /* Only text[0..len) is parsed; the bytes after it are never read. */
    const char *text = "[1,2]garbage";
    char err[LG_ERR_LEN];
    yajl_val v = lg_json_parse(text, 5, MAX_LEN, 4, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->u.array.len, 2);
    lg_json_free(v);
}
END_TEST

START_TEST(test_parse_max_len)
{
    const char *t = "{\"k\":\"0123456789\"}"; /* 18 bytes */
    char err[LG_ERR_LEN];
    yajl_val v = lg_json_parse(t, strlen(t), 18, 4, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
    parse_bad_n(t, strlen(t), 17, 4, "JSON text of 18 bytes exceeds 17");
    parse_bad_n(t, strlen(t), 0, 4, "JSON text of 18 bytes exceeds 0");
}
END_TEST

START_TEST(test_parse_nul)
{
    parse_bad_n("{\"a\":\"x\0y\"}", 11, MAX_LEN, 4, "NUL byte at offset 7");
    parse_bad_n("[1]\0", 4, MAX_LEN, 4, "NUL byte at offset 3");
    parse_bad_n("\0", 1, MAX_LEN, 4, "NUL byte at offset 0");
    /* An escaped NUL is fine: it is not a raw NUL byte. */
    yajl_val v = parse_ok("[\"a\\u0000b\"]");
    lg_json_free(v);
}
END_TEST

START_TEST(test_parse_depth)
{
    char err[LG_ERR_LEN];
    /* Exactly max_depth levels are accepted, one more is not. */
    yajl_val v = lg_json_parse("[[[1]]]", 7, MAX_LEN, 3, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
    v = lg_json_parse("{\"a\":{\"b\":[1]}}", 15, MAX_LEN, 3, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
    parse_bad_n("[[[[1]]]]", 9, MAX_LEN, 3, "nesting deeper than 3");
    parse_bad_n("{\"a\":{\"b\":[{}]}}", 16, MAX_LEN, 3, "nesting deeper than 3");
    /* Siblings do not add up: depth is nesting, not count. */
    v = lg_json_parse("[[1],[2],{\"a\":[3]},[[]]]", 24, MAX_LEN, 3, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
    /* Unbalanced closers in front do not buy extra depth. */
    parse_bad_n("]]]][[[[", 8, MAX_LEN, 3, "nesting deeper than 3");
    parse_bad_n("[]", 2, MAX_LEN, 0, "nesting deeper than 0");
    v = lg_json_parse("1", 1, MAX_LEN, 0, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    lg_json_free(v);
}
END_TEST

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(test_parse_deep_nesting_refused_quickly)
{
    enum {
        DEPTH = 10000
    };
    /* 10 000-deep arrays, closed and unclosed, and 10 000-deep objects. */
    char *arr = malloc(2 * DEPTH + 2);
    ck_assert_ptr_nonnull(arr);
    memset(arr, '[', DEPTH);
    arr[DEPTH] = '1';
    memset(arr + DEPTH + 1, ']', DEPTH);
    arr[2 * DEPTH + 1] = '\0';
    size_t objlen = DEPTH * 5 + 1 + DEPTH;
    char *obj = malloc(objlen + 1);
    ck_assert_ptr_nonnull(obj);
    char *p = obj;
    for (size_t i = 0; i < DEPTH; i++) {
        memcpy(p, "{\"a\":", 5);
        p += 5;
    }
    *p++ = '1';
    memset(p, '}', DEPTH);
    p += DEPTH;
    *p = '\0';
    ck_assert_uint_eq((size_t)(p - obj), objlen);

    double t0 = now_seconds();
    parse_bad_n(arr, strlen(arr), MAX_LEN, LG_JSON_MAX_DEPTH, "nesting deeper than 64");
    parse_bad_n(arr, DEPTH, MAX_LEN, LG_JSON_MAX_DEPTH, "nesting deeper than 64");
    parse_bad_n(obj, objlen, MAX_LEN, LG_JSON_MAX_DEPTH, "nesting deeper than 64");
    /* Even with a generous limit the refusal does not recurse. */
    parse_bad_n(arr, strlen(arr), MAX_LEN, DEPTH - 1, "nesting deeper than 9999");
    parse_bad_n(obj, objlen, MAX_LEN, DEPTH - 1, "nesting deeper than 9999");
    double elapsed = now_seconds() - t0;
    ck_assert_msg(elapsed < 1.0, "refusing deep nesting took %.3f s", elapsed);
    free(arr);
    free(obj);
}
END_TEST

START_TEST(test_parse_comments_and_slash)
{
    parse_bad("/*x*/{}", "comment or stray '/' at offset 0");
    parse_bad("{}/*x*/", "comment or stray '/' at offset 2");
    parse_bad("// c\n{}", "comment or stray '/' at offset 0");
    parse_bad("{\"a\":1 // c\n}", "comment or stray '/' at offset 7");
    parse_bad("[1,/**/2]", "comment or stray '/' at offset 3");
    parse_bad("[1/2]", "comment or stray '/' at offset 2");
    parse_bad("/", "comment or stray '/' at offset 0");
    /* A comment hidden after a string that contains an escaped quote. */
    parse_bad("[\"a\\\"\"/**/]", "comment or stray '/' at offset 6");
}
END_TEST

START_TEST(test_parse_brackets_and_slashes_in_strings)
{
    char err[LG_ERR_LEN];
    /* Brackets in strings do not count towards depth. */
    const char *t = "{\"a\":\"[[[[[[[[{{{{{{\",\"[[[\":\"}}}]]]\"}";
    yajl_val v = lg_json_parse(t, strlen(t), MAX_LEN, 1, err, sizeof(err));
    ck_assert_msg(v != NULL, "refused: %s", err);
    ck_assert_str_eq(lg_json_get_string(v, "a"), "[[[[[[[[{{{{{{");
    lg_json_free(v);
    /* An escaped quote does not end the string... */
    t = "[\"\\\"[[[[\"]";
    v = lg_json_parse(t, strlen(t), MAX_LEN, 1, err, sizeof(err));
    ck_assert_msg(v != NULL, "refused: %s", err);
    lg_json_free(v);
    /* ...but an escaped backslash before the quote does, so brackets after it
     * are counted again. */
    t = "[\"\\\\\",[[1]]]";
    v = lg_json_parse(t, strlen(t), MAX_LEN, 3, err, sizeof(err));
    ck_assert_msg(v != NULL, "refused: %s", err);
    ck_assert_str_eq(v->u.array.values[0]->u.string, "\\");
    lg_json_free(v);
    parse_bad_n(t, strlen(t), MAX_LEN, 2, "nesting deeper than 2");
    /* Slashes inside strings, plain and escaped, including comment look-alikes. */
    v = parse_ok("{\"url\":\"http://x/y\",\"c\":\"/*not a comment*/\",\"e\":\"a\\/b\"}");
    ck_assert_str_eq(lg_json_get_string(v, "url"), "http://x/y");
    ck_assert_str_eq(lg_json_get_string(v, "c"), "/*not a comment*/");
    ck_assert_str_eq(lg_json_get_string(v, "e"), "a/b");
    lg_json_free(v);
    v = parse_ok("{\"//\":1}");
    ck_assert_ptr_nonnull(lg_json_get(v, "//"));
    lg_json_free(v);
}
END_TEST

START_TEST(test_parse_invalid)
{
    /* Each is refused with a one-line reason; LSan (sanitizer builds) checks
     * that nothing built before the error leaks. */
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "[1 2]",
        "{\"a\" 1}",
        "{\"a\":}",
        "{a:1}",
        "{'a':1}",
        "{\"a\":1,}",
        "{\"a\":",
        "{\"a\":1,\"b\":",
        "{\"abc\":{\"def\":[1,{\"g\":",
        "[{\"a\":[1,2",
        "tru",
        "nul",
        "[1] [2]",
        "{} x",
        "\"unterminated",
        "\"bad escape \\x\"",
        "\"ctl \x01 char\"",
        "[\"\xff\"]",
        "[\"\xc3\"]",
        "01",
        "1.",
        "-",
        "[.5]",
        "[NaN]",
        "[Infinity]",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        parse_bad(bad[i], "invalid JSON: ");
}
END_TEST

/* The arena parser builds yajl's node shapes: decoded strings, number
 * flags as yajl_tree sets them, containers of any size. */
START_TEST(test_parse_tree_shapes)
{
    yajl_val v = parse_ok("{\"s\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\","
                          "\"i\":-12,\"big\":99999999999999999999,\"d\":2.5e1,\"inf\":1e400,"
                          "\"t\":true,\"f\":false,\"n\":null,\"e\":{},\"a\":[]}");
    ck_assert(YAJL_IS_OBJECT(v));
    ck_assert_uint_eq(v->u.object.len, 10);
    ck_assert_str_eq(lg_json_get_string(v, "s"),
                     "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    yajl_val i = lg_json_get(v, "i");
    ck_assert(YAJL_IS_NUMBER(i));
    ck_assert(i->u.number.flags & YAJL_NUMBER_INT_VALID);
    ck_assert_int_eq(i->u.number.i, -12);
    ck_assert_str_eq(i->u.number.r, "-12");
    yajl_val big = lg_json_get(v, "big");
    ck_assert(!(big->u.number.flags & YAJL_NUMBER_INT_VALID));
    ck_assert(big->u.number.flags & YAJL_NUMBER_DOUBLE_VALID);
    yajl_val d = lg_json_get(v, "d");
    ck_assert(!(d->u.number.flags & YAJL_NUMBER_INT_VALID));
    ck_assert(d->u.number.d == 25.0);
    yajl_val inf = lg_json_get(v, "inf");
    ck_assert(!(inf->u.number.flags & (YAJL_NUMBER_INT_VALID | YAJL_NUMBER_DOUBLE_VALID)));
    ck_assert(YAJL_IS_TRUE(lg_json_get(v, "t")));
    ck_assert(YAJL_IS_FALSE(lg_json_get(v, "f")));
    ck_assert(YAJL_IS_NULL(lg_json_get(v, "n")));
    ck_assert(YAJL_IS_OBJECT(lg_json_get(v, "e")));
    ck_assert_uint_eq(lg_json_get(v, "e")->u.object.len, 0);
    ck_assert(YAJL_IS_ARRAY(lg_json_get(v, "a")));
    lg_json_free(v);

    /* A decoded NUL ends the C string, as in yajl's tree. */
    v = parse_ok("[\"ab\\u0000cd\"]");
    ck_assert_str_eq(v->u.array.values[0]->u.string, "ab");
    lg_json_free(v);

    /* Containers larger than the parser's on-stack gather (8), keys kept
     * in order, duplicates kept (lg_json_get finds the first). */
    char text[4096];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof(text) - n, "{");
    for (int k = 0; k < 100; k++)
        n += (size_t)snprintf(text + n, sizeof(text) - n,
                              "%s\"k%d\":[%d,%d,%d,%d,%d,%d,%d,%d,%d,%d]", k ? "," : "", k, k, k, k,
                              k, k, k, k, k, k, k);
    n += (size_t)snprintf(text + n, sizeof(text) - n, ",\"k0\":\"dup\"}");
    v = parse_ok(text);
    ck_assert_uint_eq(v->u.object.len, 101);
    for (int k = 0; k < 100; k++) {
        char key[8];
        snprintf(key, sizeof(key), "k%d", k);
        ck_assert_str_eq(v->u.object.keys[k], key);
        yajl_val arr = v->u.object.values[k];
        ck_assert_uint_eq(arr->u.array.len, 10);
        ck_assert_int_eq(arr->u.array.values[9]->u.number.i, k);
    }
    ck_assert(YAJL_IS_ARRAY(lg_json_get(v, "k0")));
    lg_json_free(v);

    /* Scalars at the top level, whitespace around. */
    v = parse_ok(" \t\r\n\"x\" \n");
    ck_assert_str_eq(v->u.string, "x");
    lg_json_free(v);
}
END_TEST

/* What the arena parser refuses beyond yajl's grammar checks. */
START_TEST(test_parse_strictness)
{
    parse_bad("[\"\\ud800\"]", "invalid JSON: ");        /* lone high surrogate */
    parse_bad("[\"\\udc00\"]", "invalid JSON: ");        /* lone low surrogate */
    parse_bad("[\"\\ud800\\u0041\"]", "invalid JSON: "); /* high + non-low */
    parse_bad("[\"\xc0\xaf\"]", "invalid JSON: ");       /* overlong */
    parse_bad("[\"\xed\xa0\x80\"]", "invalid JSON: ");   /* encoded surrogate */
    parse_bad("[\"a\tb\"]", "invalid JSON: ");           /* raw control byte */
    parse_bad("[\"\\x41\"]", "invalid JSON: ");          /* unknown escape */
    parse_bad("[\"\\u12\"]", "invalid JSON: ");          /* short \u */
    parse_bad("[01]", "invalid JSON: ");                 /* leading zero */
    parse_bad("[1.]", "invalid JSON: ");
    parse_bad("[.5]", "invalid JSON: ");
    parse_bad("[1e]", "invalid JSON: ");
    parse_bad("[-]", "invalid JSON: ");
    parse_bad("[tru]", "invalid JSON: ");
    parse_bad("{\"a\" 1}", "invalid JSON: ");
    parse_bad("{1:2}", "invalid JSON: ");
    parse_bad("[1,]", "invalid JSON: ");
    parse_bad("{\"a\":1,}", "invalid JSON: ");
    parse_bad("[1] [2]", "invalid JSON: ");
    parse_bad("", "invalid JSON: ");
    parse_bad("   ", "invalid JSON: ");
    /* Every truncation of a valid document is refused without reading past
     * its end (an exact-size copy lets ASan see it). */
    static const char doc[] = "{\"a\":[1,-2.5e3,\"x\\u00e9\\ud83d\\ude00\",true,null],\"b\":{}}";
    for (size_t len = 0; len + 1 < sizeof(doc) - 1; len++) {
        char *copy = malloc(len ? len : 1);
        memcpy(copy, doc, len);
        char err[LG_ERR_LEN];
        yajl_val v = lg_json_parse(copy, len, MAX_LEN, LG_JSON_MAX_DEPTH, err, sizeof(err));
        ck_assert_msg(v == NULL, "accepted a truncation of %zu bytes", len);
        free(copy);
    }
}
END_TEST

START_TEST(test_parse_small_err_buffer)
{
    char err[8];
    memset(err, 'x', sizeof(err));
    ck_assert_ptr_null(lg_json_parse("[1,]", 4, MAX_LEN, 4, err, sizeof(err)));
    ck_assert_str_eq(err, "invalid");
    ck_assert_ptr_null(lg_json_parse("[1,]", 4, MAX_LEN, 4, err, 1));
    ck_assert_str_eq(err, "");
}
END_TEST

/* ---------- getters ---------- */

START_TEST(test_get)
{
    yajl_val v = parse_ok("{\"a\":\"x\",\"b\":2,\"A\":\"upper\",\"n\":null,\"o\":{\"a\":\"inner\"},"
                          "\"dup\":\"first\",\"dup\":\"second\",\"\":\"empty\"}");
    ck_assert_str_eq(lg_json_get_string(v, "a"), "x");
    ck_assert_str_eq(lg_json_get_string(v, "A"), "upper");
    ck_assert_str_eq(lg_json_get_string(v, ""), "empty");
    ck_assert_str_eq(lg_json_get_string(v, "dup"), "first");
    yajl_val b = lg_json_get(v, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert(YAJL_IS_INTEGER(b));
    /* Present but not a string. */
    ck_assert_ptr_null(lg_json_get_string(v, "b"));
    ck_assert_ptr_null(lg_json_get_string(v, "n"));
    ck_assert_ptr_null(lg_json_get_string(v, "o"));
    ck_assert_ptr_nonnull(lg_json_get(v, "n"));
    /* Exact comparison: no case folding, no prefixes. */
    ck_assert_ptr_null(lg_json_get(v, "B"));
    ck_assert_ptr_null(lg_json_get(v, "aa"));
    ck_assert_ptr_null(lg_json_get(v, "missing"));
    ck_assert_ptr_null(lg_json_get_string(v, "missing"));
    /* Nested lookups and non-objects. */
    ck_assert_str_eq(lg_json_get_string(lg_json_get(v, "o"), "a"), "inner");
    ck_assert_ptr_null(lg_json_get(b, "a"));
    ck_assert_ptr_null(lg_json_get(NULL, "a"));
    ck_assert_ptr_null(lg_json_get_string(NULL, "a"));
    lg_json_free(v);
    v = parse_ok("[\"a\",\"b\"]");
    ck_assert_ptr_null(lg_json_get(v, "a"));
    ck_assert_ptr_null(lg_json_get_string(v, "0"));
    lg_json_free(v);
}
END_TEST

/* ---------- lg_json_integer ---------- */

/* The value of member "v" of {"v":<num>} through lg_json_integer. */
static bool integer_of(const char *num, int64_t *out)
{
    char text[256];
    snprintf(text, sizeof(text), "{\"v\":%s}", num);
    yajl_val v = parse_ok(text);
    bool ok = lg_json_integer(lg_json_get(v, "v"), out);
    lg_json_free(v);
    return ok;
}

static void expect_integer(const char *num, int64_t want)
{
    int64_t got = -777;
    ck_assert_msg(integer_of(num, &got), "%s refused", num);
    ck_assert_msg(got == want, "%s gave %lld", num, (long long)got);
}

static void expect_not_integer(const char *num)
{
    int64_t got = -777;
    ck_assert_msg(!integer_of(num, &got), "%s accepted as %lld", num, (long long)got);
    ck_assert_int_eq(got, -777); /* *out untouched */
}

START_TEST(test_integer)
{
    expect_integer("0", 0);
    expect_integer("200", 200);
    expect_integer("-17", -17);
    expect_integer("2e2", 200);
    expect_integer("2E2", 200);
    expect_integer("200.0", 200);
    expect_integer("2.5e1", 25);
    expect_integer("-3.0", -3);
    expect_integer("-0", 0);
    expect_integer("-0.0", 0);
    expect_integer("1e18", 1000000000000000000LL);
    expect_integer("9223372036854775807", INT64_MAX);
    expect_integer("-9223372036854775807", -INT64_MAX);
    expect_not_integer("1.5");
    expect_not_integer("-0.5");
    expect_not_integer("2e-1");
    expect_not_integer("1e400");
    expect_not_integer("-1e400");
    expect_not_integer("99999999999999999999");
    expect_not_integer("9223372036854775808");
    expect_not_integer("1e19");
    expect_not_integer("\"200\"");
    expect_not_integer("true");
    expect_not_integer("null");
    expect_not_integer("[1]");
    expect_not_integer("{\"a\":1}");
    int64_t out = -777;
    ck_assert(!lg_json_integer(NULL, &out));
    ck_assert_int_eq(out, -777);
}
END_TEST

/* json.h: "an exact integer within the range of int64_t". INT64_MIN is in
 * range but refused: yajl's integer parser overflows on it and the double
 * fallback stops at -9.2e18. */
START_TEST(test_bug_integer_int64_min)
{
    expect_integer("-9223372036854775808", INT64_MIN);
}
END_TEST

/* json.h: "an exact integer ... (no fraction)". A fraction too small for a
 * double is rounded away by strtod and the number is accepted as 1. */
START_TEST(test_bug_integer_tiny_fraction)
{
    expect_not_integer("1.00000000000000001");
}
END_TEST

/* ---------- the JSON writer ---------- */

struct gen {
    struct lg_buf buf;
    struct lg_json_writer w;
};

static struct lg_json_writer *gen_start(struct gen *x)
{
    lg_buf_init(&x->buf, 0);
    lg_json_writer_init(&x->w, &x->buf);
    return &x->w;
}

static void expect_gen(struct gen *x, const char *want)
{
    ck_assert_uint_eq(x->buf.len, strlen(want));
    ck_assert_msg(memcmp(lg_buf_cstr(&x->buf), want, x->buf.len) == 0, "generated %s",
                  lg_buf_cstr(&x->buf));
}

START_TEST(test_gen_exact_text)
{
    struct gen x;
    struct lg_json_writer *g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_kv(g, "a", "b"), 0);
    ck_assert_int_eq(lg_json_gen_kv(g, "n", NULL), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "i"), 0);
    ck_assert_int_eq(lg_json_gen_int(g, -5), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "max"), 0);
    ck_assert_int_eq(lg_json_gen_int(g, INT64_MAX), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "min"), 0);
    ck_assert_int_eq(lg_json_gen_int(g, INT64_MIN), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "t"), 0);
    ck_assert_int_eq(lg_json_gen_bool(g, true), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "f"), 0);
    ck_assert_int_eq(lg_json_gen_bool(g, false), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "z"), 0);
    ck_assert_int_eq(lg_json_gen_null(g), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "s"), 0);
    ck_assert_int_eq(lg_json_gen_str(g, "x\"y\\z/\n\tq", 4), 0); /* only 4 bytes */
    ck_assert_int_eq(lg_json_gen_cstr(g, "u"), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "\xc3\xa9\xe2\x82\xac"), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "esc"), 0);
    ck_assert_int_eq(lg_json_gen_str(g, "/\n\t\x01\0", 5), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "arr"), 0);
    ck_assert_int_eq(lg_json_gen_array_open(g), 0);
    ck_assert_int_eq(lg_json_gen_int(g, 1), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, ""), 0);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_map_close(g), 0);
    ck_assert_int_eq(lg_json_gen_array_open(g), 0);
    ck_assert_int_eq(lg_json_gen_array_close(g), 0);
    ck_assert_int_eq(lg_json_gen_array_close(g), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "obj"), 0);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_kv(g, "k", "v"), 0);
    ck_assert_int_eq(lg_json_gen_map_close(g), 0);
    ck_assert_int_eq(lg_json_gen_map_close(g), 0);
    /* No indentation, no spaces, '/' not escaped. */
    expect_gen(&x, "{\"a\":\"b\",\"n\":null,\"i\":-5,\"max\":9223372036854775807,"
                   "\"min\":-9223372036854775808,\"t\":true,\"f\":false,\"z\":null,"
                   "\"s\":\"x\\\"y\\\\\",\"u\":\"\xc3\xa9\xe2\x82\xac\","
                   "\"esc\":\"/\\n\\t\\u0001\\u0000\",\"arr\":[1,\"\",{},[]],"
                   "\"obj\":{\"k\":\"v\"}}");
    /* One value at the top level. */
    ck_assert_int_eq(lg_json_gen_int(g, 1), -1);
    lg_buf_free(&x.buf);

    /* Plain strings are written as they are, as names and as values. */
    g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_plain(g, "key", 3), 0);
    ck_assert_int_eq(lg_json_gen_plain(g, "value", 5), 0);
    ck_assert_int_eq(lg_json_gen_kv(g, "k2", "v\"2"), 0);
    ck_assert_int_eq(lg_json_gen_map_close(g), 0);
    expect_gen(&x, "{\"key\":\"value\",\"k2\":\"v\\\"2\"}");
    lg_buf_free(&x.buf);
}
END_TEST

/* Misuse fails, and then every later call fails too. */
START_TEST(test_gen_misuse)
{
    struct gen x;
    struct lg_json_writer *g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_array_close(g), -1); /* wrong close */
    ck_assert_int_eq(lg_json_gen_map_close(g), -1);   /* failed stays failed */
    lg_buf_free(&x.buf);

    g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "k"), 0);
    ck_assert_int_eq(lg_json_gen_map_close(g), -1); /* a key without value */
    lg_buf_free(&x.buf);

    g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_array_close(g), -1); /* nothing open */
    lg_buf_free(&x.buf);

    g = gen_start(&x);
    for (int i = 0; i < LG_JSON_WRITER_MAX_DEPTH - 1; i++)
        ck_assert_int_eq(lg_json_gen_array_open(g), 0);
    ck_assert_int_eq(lg_json_gen_array_open(g), -1); /* nesting bound */
    ck_assert(!g->no_room);
    lg_buf_free(&x.buf);

    /* A bounded buffer that cannot take the string: no_room, nothing of it
     * written. */
    lg_buf_init(&x.buf, 8);
    lg_json_writer_init(&x.w, &x.buf);
    g = &x.w;
    ck_assert_int_eq(lg_json_gen_array_open(g), 0);
    ck_assert_int_eq(lg_json_gen_cstr(g, "much too long"), -1);
    ck_assert(g->no_room);
    expect_gen(&x, "[");
    lg_buf_free(&x.buf);
}
END_TEST

/* Every string must be refused by lg_json_gen_cstr and lg_json_gen_str (as
 * value and as member name) and as lg_json_gen_kv's value, without writing
 * anything. */
static void expect_gen_refused(const char *const *bad, size_t nbad)
{
    for (size_t i = 0; i < nbad; i++) {
        struct gen x;
        struct lg_json_writer *g = gen_start(&x);
        ck_assert_int_eq(lg_json_gen_array_open(g), 0);
        ck_assert_msg(lg_json_gen_cstr(g, bad[i]) == -1, "cstr accepted bad UTF-8 %s", bad[i]);
        ck_assert(!g->no_room);
        /* Nothing of the refused string was written. */
        expect_gen(&x, "[");
        lg_buf_free(&x.buf);

        g = gen_start(&x);
        ck_assert_int_eq(lg_json_gen_array_open(g), 0);
        ck_assert_msg(lg_json_gen_str(g, bad[i], strlen(bad[i])) == -1, "str accepted bad UTF-8 %s",
                      bad[i]);
        expect_gen(&x, "[");
        lg_buf_free(&x.buf);

        g = gen_start(&x);
        ck_assert_int_eq(lg_json_gen_map_open(g), 0);
        ck_assert_int_eq(lg_json_gen_kv(g, "k", bad[i]), -1);
        lg_buf_free(&x.buf);
        /* As a member name written with lg_json_gen_str (lg_json_gen_kv's
         * key is the caller's own literal and is not checked). */
        g = gen_start(&x);
        ck_assert_int_eq(lg_json_gen_map_open(g), 0);
        ck_assert_int_eq(lg_json_gen_str(g, bad[i], strlen(bad[i])), -1);
        expect_gen(&x, "{");
        lg_buf_free(&x.buf);
    }
}

START_TEST(test_gen_refuses_invalid_utf8)
{
    static const char *const bad[] = {
        "\xff", "a\xc3", "\x80", "\xe2\x82", "\xf8\x88\x80\x80\x80", "ok\xc3(", "\xe2\x28\xa1"};
    expect_gen_refused(bad, LG_ARRAY_LEN(bad));
    /* A state error is reported as -1 too: a non-string key. */
    struct gen x;
    struct lg_json_writer *g = gen_start(&x);
    ck_assert_int_eq(lg_json_gen_map_open(g), 0);
    ck_assert_int_eq(lg_json_gen_int(g, 1), -1);
    ck_assert_int_eq(lg_json_gen_bool(g, true), -1);
    ck_assert_int_eq(lg_json_gen_null(g), -1);
    lg_buf_free(&x.buf);
}
END_TEST

/* Overlong forms, UTF-16 surrogates and code points above U+10FFFF are not
 * well-formed UTF-8 (yajl's own generator check let them through). */
START_TEST(test_bug_gen_accepts_overlong_surrogate_beyond_10ffff)
{
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong '/' */
        "\xf0\x80\x80\xaf", /* overlong '/' */
        "\xed\xa0\x80",     /* U+D800 */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf7\xbf\xbf\xbf", /* beyond U+10FFFF */
    };
    expect_gen_refused(bad, LG_ARRAY_LEN(bad));
}
END_TEST

/* ---------- lg_json_append_string ---------- */

static void expect_append(const char *s, size_t n, const char *want)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "x="), 0);
    ck_assert_int_eq(lg_json_append_string(&b, s, n), 0);
    ck_assert_str_eq(lg_buf_cstr(&b) + 2, want);
    ck_assert_uint_eq(b.len, 2 + strlen(want));
    /* Whatever went in, the result is one valid JSON string. */
    char err[LG_ERR_LEN];
    yajl_val v = lg_json_parse(b.data + 2, b.len - 2, MAX_LEN, 4, err, sizeof(err));
    ck_assert_msg(v != NULL && YAJL_IS_STRING(v), "%s is not a JSON string: %s", b.data + 2, err);
    lg_json_free(v);
    lg_buf_free(&b);
}

#define APPEND(lit, want) expect_append(lit, sizeof(lit) - 1, want)

START_TEST(test_append_string_escapes)
{
    APPEND("", "\"\"");
    APPEND("plain text", "\"plain text\"");
    APPEND("say \"hi\"", "\"say \\\"hi\\\"\"");
    APPEND("back\\slash", "\"back\\\\slash\"");
    APPEND("a/b", "\"a/b\"");
    APPEND("\n\r\t", "\"\\n\\r\\t\"");
    APPEND("\x01\x08\x0c\x1f", "\"\\u0001\\b\\f\\u001f\"");
    APPEND("\x7f", "\"\\u007f\"");
    APPEND("a\0b", "\"a\\u0000b\"");
    APPEND("\"\\\"", "\"\\\"\\\\\\\"\"");
}
END_TEST

/* The escaper reads eight bytes at a time while none needs work: a byte
 * that does, at every position of a longer string, must still be seen.
 * Compared with a byte-by-byte reference. */
static void reference_escape(const unsigned char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            o += sprintf(o, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else {
            *o++ = (char)c; /* valid UTF-8 here is copied as it is */
        }
    }
    *o++ = '"';
    *o = '\0';
}

START_TEST(test_append_string_every_position)
{
    static const char *const specials[] = {"\x01", "\"",       "\\",          "\x7f",
                                           "\n",   "\xc3\xa9", "\xe2\x82\xac"};
    for (size_t k = 0; k < LG_ARRAY_LEN(specials); k++) {
        size_t slen = strlen(specials[k]);
        for (size_t pos = 0; pos + slen <= 40; pos++) {
            unsigned char in[48];
            memset(in, 'a', 40);
            memcpy(in + pos, specials[k], slen);
            char want[400];
            reference_escape(in, 40, want);
            struct lg_buf b;
            lg_buf_init(&b, 0);
            ck_assert_int_eq(lg_json_append_string(&b, (const char *)in, 40), 0);
            ck_assert_msg(strcmp(lg_buf_cstr(&b), want) == 0, "special %zu at %zu: %s, want %s", k,
                          pos, lg_buf_cstr(&b), want);
            lg_buf_free(&b);
        }
    }
}
END_TEST

START_TEST(test_append_string_utf8)
{
    /* Valid UTF-8 is kept as is. */
    APPEND("\xc3\xa9t\xc3\xa9", "\"\xc3\xa9t\xc3\xa9\"");
    APPEND("\xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", "\"\xe2\x82\xac \xf0\x9f\x98\x80 "
                                                             "\xf4\x8f\xbf\xbf\"");
    /* Each byte that does not start a well-formed sequence becomes U+FFFD. */
    APPEND("\xff", "\"\\ufffd\"");
    APPEND("a\x80z", "\"a\\ufffdz\"");
    APPEND("\xc0\xaf", "\"\\ufffd\\ufffd\"");
    APPEND("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
    APPEND("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    APPEND("\xf8\x88\x80\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"");
    /* Truncated sequences at the end and before ASCII: the ASCII survives and
     * a quote after a lead byte is still escaped. */
    APPEND("\xe2\x82", "\"\\ufffd\\ufffd\"");
    APPEND("\xf0\x9f\x98", "\"\\ufffd\\ufffd\\ufffd\"");
    APPEND("\xc3\"", "\"\\ufffd\\\"\"");
    APPEND("\xe2\"x", "\"\\ufffd\\\"x\"");
    APPEND("\xf0\\\"", "\"\\ufffd\\\\\\\"\"");
    APPEND("\xc3"
           "a\xc3\xa9",
           "\"\\ufffda\xc3\xa9\"");
    /* n is honoured: a sequence cut by n is replaced. */
    expect_append("\xc3\xa9", 1, "\"\\ufffd\"");
}
END_TEST

START_TEST(test_append_string_bounded)
{
    struct lg_buf b;
    lg_buf_init(&b, 5);
    ck_assert_int_eq(lg_json_append_string(&b, "abcdef", 6), -1);
    lg_buf_free(&b);
    lg_buf_init(&b, 5);
    ck_assert_int_eq(lg_json_append_string(&b, "abc", 3), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "\"abc\"");
    lg_buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_parse_accepts);
    tcase_add_test(tc, test_parse_len_is_honoured);
    tcase_add_test(tc, test_parse_max_len);
    tcase_add_test(tc, test_parse_nul);
    tcase_add_test(tc, test_parse_depth);
    tcase_add_test(tc, test_parse_deep_nesting_refused_quickly);
    tcase_add_test(tc, test_parse_comments_and_slash);
    tcase_add_test(tc, test_parse_brackets_and_slashes_in_strings);
    tcase_add_test(tc, test_parse_invalid);
    tcase_add_test(tc, test_parse_tree_shapes);
    tcase_add_test(tc, test_parse_strictness);
    tcase_add_test(tc, test_parse_small_err_buffer);
    tcase_add_test(tc, test_get);
    tcase_add_test(tc, test_integer);
    tcase_add_test(tc, test_gen_exact_text);
    tcase_add_test(tc, test_gen_refuses_invalid_utf8);
    tcase_add_test(tc, test_gen_misuse);
    tcase_add_test(tc, test_append_string_escapes);
    tcase_add_test(tc, test_append_string_utf8);
    tcase_add_test(tc, test_append_string_every_position);
    tcase_add_test(tc, test_append_string_bounded);
    suite_add_tcase(s, tc);

    /* Found by these tests and fixed: kept as regression tests. */
    tcase_add_test(tc, test_bug_integer_int64_min);
    tcase_add_test(tc, test_bug_integer_tiny_fraction);
    tcase_add_test(tc, test_bug_gen_accepts_overlong_surrogate_beyond_10ffff);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
