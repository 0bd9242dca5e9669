/* test_apikey.c - unit tests of the API keys file and quota periods (src/apikey.c). */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/sha.h>

#include "lambdagate/apikey.h"
#include "lambdagate/buf.h"
#include "lambdagate/codec.h"

#define DATA_DIR LG_TEST_DATA "/apikey"

/* The digests of the keys of tests/data/apikey/keys.json, whose values are
 * "test-key-android", "test-key-web" and "test-key-partner"
 * (test_data_digests checks these against SHA256()). H4 to H6 are any hex. */
#define H1       "01e8df04e1bbed6279deddd5dd055ff9780004661eba0e6e75124e58d7981748"
#define H1_UPPER "01E8DF04E1BBED6279DEDDD5DD055FF9780004661EBA0E6E75124E58D7981748"
#define H2       "c5c26eb53b8b97ef89ce907526c3e49c12d64167f427694e308d4023f006f93b"
#define H3       "5d9d3bb5560d5b3b1fce1ea78127959489d86a64dcfe598af6e05a43a805e0b2"
#define H4       "4444444444444444444444444444444444444444444444444444444444444444"
#define H5       "5555555555555555555555555555555555555555555555555555555555555555"
#define H6       "66666666666666666666666666666666666666666666666666666666666666aa"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Lowercase (or uppercase) hex SHA-256 of value into out[65]. */
static void digest_hex(const char *value, size_t len, bool upper, char *out)
{
    unsigned char d[32];
    ck_assert_ptr_nonnull(SHA256((const unsigned char *)value, len, d));
    lg_codec_hex(out, d, sizeof(d));
    if (upper) {
        for (char *c = out; *c; c++) {
            if (*c >= 'a' && *c <= 'f')
                *c = (char)(*c - 'a' + 'A');
        }
    }
}

/* printf into a new string; caller frees. */
static char *fmt(const char *f, ...) LG_PRINTF(1, 2);
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    return s;
}

/* A run of n copies of c; caller frees. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

#define MAX_COLLECT 1024

/* The errors of one load, in the order they were reported. */
struct collector {
    size_t n;
    size_t calls;
    int lines[MAX_COLLECT];
    char *messages[MAX_COLLECT];
};

static void collect(void *arg, int line, const char *message)
{
    struct collector *c = arg;
    c->calls++;
    if (c->n < MAX_COLLECT) {
        c->lines[c->n] = line;
        c->messages[c->n] = strdup(message);
        ck_assert_ptr_nonnull(c->messages[c->n]);
        c->n++;
    }
}

static void collector_free(struct collector *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->messages[i]);
    c->n = 0;
    c->calls = 0;
}

static void dump(const struct collector *c)
{
    for (size_t i = 0; i < c->n; i++)
        fprintf(stderr, "  %d: %s\n", c->lines[i], c->messages[i]);
}

/* Load text that must load with no error call. Caller frees. */
static struct lg_apikeys *load_ok(const char *text)
{
    struct collector c = {0};
    struct lg_apikeys *set = lg_apikeys_load_text(text, strlen(text), collect, &c);
    if (set == NULL || c.calls != 0)
        dump(&c);
    ck_assert_msg(set != NULL, "keys did not load:\n%s", text);
    ck_assert_uint_eq(c.calls, 0);
    collector_free(&c);
    return set;
}

struct expected {
    int line;
    const char *message; /* the whole message, or its start when it ends in '*' */
};

static bool message_matches(const char *got, const char *want)
{
    size_t n = strlen(want);
    if (n > 0 && want[n - 1] == '*')
        return strncmp(got, want, n - 1) == 0;
    return strcmp(got, want) == 0;
}

/* The collected errors must be exactly exp[0..n), in order, and no message
 * may hold any of the NULL-terminated strings in secrets. */
static void check_errors(struct collector *c, const struct expected *exp, size_t n,
                         const char *const *secrets)
{
    if (c->calls != n)
        dump(c);
    ck_assert_uint_eq(c->calls, n);
    for (size_t i = 0; i < n; i++) {
        if (c->lines[i] != exp[i].line || !message_matches(c->messages[i], exp[i].message))
            dump(c);
        ck_assert_msg(c->lines[i] == exp[i].line, "error %zu at line %d, want %d: %s", i,
                      c->lines[i], exp[i].line, c->messages[i]);
        ck_assert_msg(message_matches(c->messages[i], exp[i].message),
                      "error %zu is \"%s\", want \"%s\"", i, c->messages[i], exp[i].message);
    }
    for (size_t i = 0; i < c->n; i++) {
        for (size_t s = 0; secrets && secrets[s]; s++)
            ck_assert_msg(strstr(c->messages[i], secrets[s]) == NULL, "error \"%s\" echoes \"%s\"",
                          c->messages[i], secrets[s]);
    }
    collector_free(c);
}

/* Loading text[0..len) must fail with exactly these errors. */
static void expect_errors_len(const char *text, size_t len, const struct expected *exp, size_t n,
                              const char *const *secrets)
{
    struct collector c = {0};
    struct lg_apikeys *set = lg_apikeys_load_text(text, len, collect, &c);
    if (set != NULL)
        lg_apikeys_free(set);
    ck_assert_msg(set == NULL, "keys loaded but should not:\n%.*s", (int)len, text);
    check_errors(&c, exp, n, secrets);
}

static void expect_errors(const char *text, const struct expected *exp, size_t n,
                          const char *const *secrets)
{
    expect_errors_len(text, strlen(text), exp, n, secrets);
}

/* No message may show a digest, in either case: its first 16 digits. */
static const char *const digest_prefixes[] = {"01e8df04e1bbed62", "01E8DF04E1BBED62",
                                              "c5c26eb53b8b97ef", "5d9d3bb5560d5b3b", NULL};

/* Loading text must fail with exactly these errors (and show no digest). */
#define EXPECT(text, ...)                                                                          \
    do {                                                                                           \
        static const struct expected exp_[] = {__VA_ARGS__};                                       \
        expect_errors((text), exp_, LG_ARRAY_LEN(exp_), digest_prefixes);                          \
    } while (0)

static const struct lg_apikey *find(const struct lg_apikeys *set, const char *value)
{
    return lg_apikeys_find(set, value, strlen(value));
}

/* ------------------------------------------------------------------------
 * Lookups
 * ------------------------------------------------------------------------ */

START_TEST(test_data_digests)
{
    char hex[65];
    digest_hex("test-key-android", 16, false, hex);
    ck_assert_str_eq(hex, H1);
    digest_hex("test-key-android", 16, true, hex);
    ck_assert_str_eq(hex, H1_UPPER);
    digest_hex("test-key-web", 12, false, hex);
    ck_assert_str_eq(hex, H2);
    digest_hex("test-key-partner", 16, false, hex);
    ck_assert_str_eq(hex, H3);
}
END_TEST

START_TEST(test_find_three_keys)
{
    static const char *const values[] = {"alpha-0123456789", "bravo-abcdefghij",
                                         "charlie-ZYXWVUTS"};
    char hex[3][65];
    for (size_t i = 0; i < 3; i++)
        digest_hex(values[i], strlen(values[i]), false, hex[i]);
    char *text = fmt("{ \"keys\": [\n"
                     "  { \"id\": \"alpha\", \"sha256\": \"%s\" },\n"
                     "  { \"id\": \"bravo\", \"sha256\": \"%s\" },\n"
                     "  { \"id\": \"charlie\", \"sha256\": \"%s\" }\n"
                     "] }\n",
                     hex[0], hex[1], hex[2]);
    struct lg_apikeys *set = load_ok(text);
    ck_assert_uint_eq(set->nkeys, 3);
    ck_assert_str_eq(set->keys[0].id, "alpha");
    ck_assert_str_eq(set->keys[2].id, "charlie");

    const struct lg_apikey *k = find(set, "alpha-0123456789");
    ck_assert_ptr_eq(k, &set->keys[0]);
    k = find(set, "bravo-abcdefghij");
    ck_assert_ptr_eq(k, &set->keys[1]);
    ck_assert_str_eq(k->id, "bravo");
    k = find(set, "charlie-ZYXWVUTS");
    ck_assert_ptr_eq(k, &set->keys[2]);
    unsigned char d[32];
    SHA256((const unsigned char *)"charlie-ZYXWVUTS", 16, d);
    ck_assert_mem_eq(k->sha256, d, 32);

    /* Wrong values: another string, one byte changed anywhere, a prefix,
     * one byte more, the digest itself, another case. */
    ck_assert_ptr_null(find(set, "delta-0000000000"));
    char v[] = "alpha-0123456789";
    for (size_t i = 0; i < sizeof(v) - 1; i++) {
        char saved = v[i];
        v[i] = (char)(v[i] ^ 0x01);
        ck_assert_msg(lg_apikeys_find(set, v, sizeof(v) - 1) == NULL, "byte %zu changed: found", i);
        v[i] = saved;
    }
    ck_assert_ptr_eq(lg_apikeys_find(set, v, sizeof(v) - 1), &set->keys[0]);
    ck_assert_ptr_null(lg_apikeys_find(set, v, sizeof(v) - 2));
    ck_assert_ptr_null(lg_apikeys_find(set, "alpha-01234567890", 17));
    ck_assert_ptr_null(find(set, hex[0]));
    ck_assert_ptr_null(find(set, "ALPHA-0123456789"));
    /* Length counts, not the NUL: a value with an embedded NUL is its own. */
    ck_assert_ptr_null(lg_apikeys_find(set, "alpha-0123456789\0", 17));

    /* Empty and absent. */
    ck_assert_ptr_null(lg_apikeys_find(set, "", 0));
    ck_assert_ptr_null(lg_apikeys_find(set, "alpha-0123456789", 0));
    ck_assert_ptr_null(lg_apikeys_find(set, NULL, 0));
    ck_assert_ptr_null(lg_apikeys_find(NULL, "alpha-0123456789", 16));
    lg_apikeys_free(set);
    free(text);
}
END_TEST

/* A value of exactly LG_APIKEY_VALUE_MAX bytes is looked up; one byte
 * longer is unknown even when its digest is in the file. */
START_TEST(test_find_value_length)
{
    char *at_max = repeat('m', LG_APIKEY_VALUE_MAX);
    char *over = repeat('o', LG_APIKEY_VALUE_MAX + 1);
    char h_max[65], h_over[65];
    digest_hex(at_max, LG_APIKEY_VALUE_MAX, false, h_max);
    digest_hex(over, LG_APIKEY_VALUE_MAX + 1, false, h_over);
    char *text = fmt("{\"keys\": [{\"id\": \"max\", \"sha256\": \"%s\"},\n"
                     "{\"id\": \"over\", \"sha256\": \"%s\"}]}",
                     h_max, h_over);
    struct lg_apikeys *set = load_ok(text);
    const struct lg_apikey *k = lg_apikeys_find(set, at_max, LG_APIKEY_VALUE_MAX);
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->id, "max");
    ck_assert_ptr_null(lg_apikeys_find(set, over, LG_APIKEY_VALUE_MAX + 1));
    /* One byte: the shortest value. */
    lg_apikeys_free(set);
    free(text);

    char h1[65];
    digest_hex("x", 1, false, h1);
    text = fmt("{\"keys\": [{\"id\": \"one\", \"sha256\": \"%s\"}]}", h1);
    set = load_ok(text);
    ck_assert_ptr_eq(lg_apikeys_find(set, "x", 1), &set->keys[0]);
    lg_apikeys_free(set);
    free(text);
    free(at_max);
    free(over);
}
END_TEST

START_TEST(test_find_upper_case_hex)
{
    char up[65], mixed[65];
    digest_hex("upper-case-key", 14, true, up);
    digest_hex("mixed-case-key", 14, false, mixed);
    for (size_t i = 0; i < 64; i += 2) {
        if (mixed[i] >= 'a' && mixed[i] <= 'f')
            mixed[i] = (char)(mixed[i] - 'a' + 'A');
    }
    char *text = fmt("{\"keys\": [{\"id\": \"up\", \"sha256\": \"%s\"},"
                     " {\"id\": \"mixed\", \"sha256\": \"%s\"}]}",
                     up, mixed);
    struct lg_apikeys *set = load_ok(text);
    const struct lg_apikey *k = find(set, "upper-case-key");
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->id, "up");
    k = find(set, "mixed-case-key");
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->id, "mixed");
    ck_assert_ptr_null(find(set, "UPPER-CASE-KEY"));
    lg_apikeys_free(set);
    free(text);
}
END_TEST

START_TEST(test_empty_keys)
{
    struct lg_apikeys *set = load_ok("{ \"keys\": [] }");
    ck_assert_uint_eq(set->nkeys, 0);
    ck_assert_ptr_null(find(set, "anything"));
    ck_assert_ptr_null(find(set, "test-key-android"));
    lg_apikeys_free(set);
    lg_apikeys_free(NULL);
}
END_TEST

/* Build a file of n keys "key-<i>" with values "value-<i>". Caller frees. */
static char *many_keys(size_t n)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "{\"keys\": [\n"), 0);
    for (size_t i = 0; i < n; i++) {
        char value[32], hex[65];
        int len = snprintf(value, sizeof(value), "value-%zu", i);
        digest_hex(value, (size_t)len, i % 2 == 1, hex);
        ck_assert_int_eq(lg_buf_printf(&b, "%s{\"id\": \"key-%zu\", \"sha256\": \"%s\"}\n",
                                       i ? "," : "", i, hex),
                         0);
    }
    ck_assert_int_eq(lg_buf_puts(&b, "]}\n"), 0);
    size_t len;
    return lg_buf_steal(&b, &len);
}

START_TEST(test_find_1000_keys)
{
    char *text = many_keys(1000);
    struct lg_apikeys *set = load_ok(text);
    ck_assert_uint_eq(set->nkeys, 1000);
    /* The index: a power of two, at least twice the keys. */
    size_t slots = set->index_mask + 1;
    ck_assert_uint_eq(slots & set->index_mask, 0);
    ck_assert_uint_ge(slots, 2000);
    for (size_t i = 0; i < 1000; i++) {
        char value[32], id[32];
        snprintf(value, sizeof(value), "value-%zu", i);
        snprintf(id, sizeof(id), "key-%zu", i);
        const struct lg_apikey *k = find(set, value);
        ck_assert_msg(k != NULL, "%s not found", value);
        ck_assert_str_eq(k->id, id);
        ck_assert_ptr_eq(k, &set->keys[i]);
    }
    for (size_t i = 1000; i < 3000; i++) {
        char value[32];
        snprintf(value, sizeof(value), "value-%zu", i);
        ck_assert_msg(find(set, value) == NULL, "%s found", value);
    }
    lg_apikeys_free(set);
    free(text);
}
END_TEST

struct finder {
    const struct lg_apikeys *set;
    int found;
    int wrong;
};

static void *find_loop(void *arg)
{
    struct finder *f = arg;
    for (int round = 0; round < 5; round++) {
        for (size_t i = 0; i < 1000; i++) {
            char value[32], id[32];
            snprintf(value, sizeof(value), "value-%zu", i);
            snprintf(id, sizeof(id), "key-%zu", i);
            const struct lg_apikey *k = find(f->set, value);
            if (k != NULL && strcmp(k->id, id) == 0)
                f->found++;
            else
                f->wrong++;
            snprintf(value, sizeof(value), "other-%zu", i);
            if (find(f->set, value) != NULL)
                f->wrong++;
        }
    }
    return NULL;
}

/* Lookups from several threads at once (read-only after load; under the
 * sanitizers this is also a race check of the lookup path). */
START_TEST(test_find_threads)
{
    char *text = many_keys(1000);
    struct lg_apikeys *set = load_ok(text);
    pthread_t threads[4];
    struct finder f[4];
    for (int i = 0; i < 4; i++) {
        f[i] = (struct finder){.set = set};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, find_loop, &f[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        ck_assert_int_eq(f[i].found, 5000);
        ck_assert_int_eq(f[i].wrong, 0);
    }
    lg_apikeys_free(set);
    free(text);
}
END_TEST

/* ------------------------------------------------------------------------
 * Plans and files
 * ------------------------------------------------------------------------ */

START_TEST(test_file_plans)
{
    struct collector c = {0};
    struct lg_apikeys *set = lg_apikeys_load(DATA_DIR "/keys.json", collect, &c);
    if (set == NULL)
        dump(&c);
    ck_assert_ptr_nonnull(set);
    ck_assert_uint_eq(c.calls, 0);
    ck_assert_uint_eq(set->nkeys, 3);

    const struct lg_apikey *k = find(set, "test-key-android");
    ck_assert_ptr_eq(k, &set->keys[0]);
    ck_assert_str_eq(k->id, "android-app");
    ck_assert_int_eq(k->plan.throttle_presence, LG_CONF_SET);
    ck_assert_double_eq(k->plan.throttle.rate, 50.0);
    ck_assert_int_eq(k->plan.throttle.burst, 100);
    ck_assert(k->plan.quota_set);
    ck_assert_int_eq(k->plan.quota_limit, 100000);
    ck_assert_int_eq(k->plan.quota_period, LG_QUOTA_DAY);

    k = find(set, "test-key-web");
    ck_assert_ptr_eq(k, &set->keys[1]);
    ck_assert_str_eq(k->id, "web");
    ck_assert_int_eq(k->plan.throttle_presence, LG_CONF_NULL);
    ck_assert(!k->plan.quota_set);

    k = find(set, "test-key-partner");
    ck_assert_ptr_eq(k, &set->keys[2]);
    ck_assert_str_eq(k->id, "partner:acme.v2");
    ck_assert_int_eq(k->plan.throttle_presence, LG_CONF_ABSENT);
    ck_assert(k->plan.quota_set);
    ck_assert_int_eq(k->plan.quota_limit, 5000000);
    ck_assert_int_eq(k->plan.quota_period, LG_QUOTA_MONTH);

    ck_assert_ptr_null(find(set, "test-key-ios"));
    lg_apikeys_free(set);
}
END_TEST

START_TEST(test_inline_plans)
{
    struct lg_apikeys *set = load_ok(
        "{\"keys\": [\n"
        " {\"id\": \"weekly\", \"sha256\": \"" H1 "\",\n"
        "  \"quota\": {\"period\": \"week\", \"limit\": 1},\n"
        "  \"throttle\": {\"burst\": 1, \"rate\": 0.5}},\n"
        " {\"id\": \"bounds\", \"sha256\": \"" H2 "\", \"quota\": null,\n"
        "  \"throttle\": {\"rate\": 0.001, \"burst\": 1000000}},\n"
        " {\"id\": \"big\", \"sha256\": \"" H3 "\", \"throttle\": {\"rate\": 1e6, \"burst\": 7},\n"
        "  \"quota\": {\"limit\": 9223372036854775807, \"period\": \"day\"}},\n"
        " {\"id\": \"A.b_c:d-9\", \"sha256\": \"" H4 "\"}\n"
        "]}");
    ck_assert_uint_eq(set->nkeys, 4);
    const struct lg_apikey *k = &set->keys[0];
    ck_assert_str_eq(k->id, "weekly");
    ck_assert(k->plan.quota_set);
    ck_assert_int_eq(k->plan.quota_period, LG_QUOTA_WEEK);
    ck_assert_int_eq(k->plan.quota_limit, 1);
    ck_assert_int_eq(k->plan.throttle_presence, LG_CONF_SET);
    ck_assert_double_eq(k->plan.throttle.rate, 0.5);
    ck_assert_int_eq(k->plan.throttle.burst, 1);
    k = &set->keys[1];
    ck_assert(!k->plan.quota_set);
    ck_assert_double_eq(k->plan.throttle.rate, 0.001);
    ck_assert_int_eq(k->plan.throttle.burst, 1000000);
    k = &set->keys[2];
    ck_assert_double_eq(k->plan.throttle.rate, 1000000.0);
    ck_assert_int_eq(k->plan.quota_limit, INT64_MAX);
    ck_assert_int_eq(k->plan.quota_period, LG_QUOTA_DAY);
    k = &set->keys[3];
    ck_assert_str_eq(k->id, "A.b_c:d-9");
    ck_assert_int_eq(k->plan.throttle_presence, LG_CONF_ABSENT);
    ck_assert(!k->plan.quota_set);
    /* The digest is stored as bytes. */
    for (size_t i = 0; i < 32; i++)
        ck_assert_uint_eq(k->sha256[i], 0x44);
    lg_apikeys_free(set);
}
END_TEST

/* Comments as in the main config, and an id of the longest length. */
START_TEST(test_comments_and_long_id)
{
    char *id = repeat('i', LG_APIKEY_ID_MAX);
    char *text = fmt("// keys\n"
                     "{ /* the list */ \"keys\": [\n"
                     "  /* spanning\n"
                     "     lines */ {\"id\": \"%s\", // trailing\n"
                     "   \"sha256\": \"" H1 "\"}\n"
                     "] }\n",
                     id);
    struct lg_apikeys *set = load_ok(text);
    ck_assert_uint_eq(set->nkeys, 1);
    ck_assert_str_eq(set->keys[0].id, id);
    ck_assert_ptr_eq(find(set, "test-key-android"), &set->keys[0]);
    lg_apikeys_free(set);
    free(text);
    free(id);
}
END_TEST

START_TEST(test_file_errors)
{
    struct collector c = {0};
    ck_assert_ptr_null(lg_apikeys_load(DATA_DIR "/missing.json", collect, &c));
    static const struct expected missing[] = {{0, "cannot open: No such file or directory"}};
    check_errors(&c, missing, 1, NULL);

    ck_assert_ptr_null(lg_apikeys_load(DATA_DIR, collect, &c));
    static const struct expected dir[] = {{0, "not a regular file"}};
    check_errors(&c, dir, 1, NULL);

    ck_assert_ptr_null(lg_apikeys_load(DATA_DIR "/bad.json", collect, &c));
    static const struct expected bad[] = {
        {4, "keys[1].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"bad id\""},
        {4, "keys[1].sha256 must be 64 hex digits, got 63 characters"},
        {5, "duplicate id \"ok\" in keys[2] (first in keys[0] at line 3)"},
        {5, "keys[2].sha256 repeats the digest of keys[0] (id \"ok\", line 3): one key cannot "
            "have two ids"},
        {6, "unknown key \"color\" in keys[2]"},
    };
    check_errors(&c, bad, LG_ARRAY_LEN(bad), digest_prefixes);

    /* Without a callback the load still fails, quietly. */
    ck_assert_ptr_null(lg_apikeys_load(DATA_DIR "/bad.json", NULL, NULL));
    ck_assert_ptr_null(lg_apikeys_load_text("{}", 2, NULL, NULL));
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors, each with its line
 * ------------------------------------------------------------------------ */

START_TEST(test_error_unknown_keys)
{
    EXPECT("{\n"
           "  \"keys\": [\n"
           "    { \"id\": \"a\", \"sha256\": \"" H1 "\", \"colour\": \"red\" },\n"
           "    { \"id\": \"b\", \"sha256\": \"" H2 "\",\n"
           "      \"throttle\": { \"rate\": 1, \"burst\": 2, \"per\": \"s\" },\n"
           "      \"quota\": { \"limit\": 5, \"period\": \"day\", \"reset\": {\"x\": [1]} } }\n"
           "  ],\n"
           "  \"version\": 2,\n"
           "  \"" H2 "\": \"web\"\n"
           "}\n",
           {3, "unknown key \"colour\" in keys[0]"}, {5, "unknown key \"per\" in keys[1].throttle"},
           {6, "unknown key \"reset\" in keys[1].quota"},
           {8, "unknown key \"version\" in the top level"},
           {9, "unknown key (64 hex digits, not shown) in the top level"});
}
END_TEST

START_TEST(test_error_types)
{
    static const struct expected exp[] = {
        {2, "keys[0].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got 7"},
        {3, "keys[1].sha256 must be a string of 64 hex digits, got a number"},
        {4, "keys[2].throttle must be an object with \"rate\" and \"burst\", or null, got 5"},
        {5, "keys[3].quota must be an object with \"limit\" and \"period\", or null, got \"day\""},
        {6, "keys[4].sha256 must be a string of 64 hex digits, got an array"},
        {6, "keys[4].throttle.rate must be a number from 0.001 to 1000000, got \"fast\""},
        {6, "keys[4].throttle.burst must be an integer from 1 to 1000000, got true"},
        {7, "keys[5] must be an object, got a string"},
        {8, "keys[6] must be an object, got a number"},
        {9, "keys[7] must be an object, got an array"},
        {10, "keys[8].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
             "null"},
        {10, "keys[8].sha256 must be a string of 64 hex digits, got an object"},
        {11, "keys[9].throttle must be an object with \"rate\" and \"burst\", or null, got false"},
    };
    /* A digest written as a bare number is not echoed either. */
    static const char *const secrets[] = {"12345", H1, NULL};
    expect_errors("{\"keys\": [\n"
                  " {\"id\": 7, \"sha256\": \"" H1 "\"},\n"
                  " {\"id\": \"b\", \"sha256\": 1234567890123456789012},\n"
                  " {\"id\": \"c\", \"sha256\": \"" H2 "\", \"throttle\": 5},\n"
                  " {\"id\": \"d\", \"sha256\": \"" H3 "\", \"quota\": \"day\"},\n"
                  " {\"id\": \"e\", \"sha256\": [\"x\"], \"throttle\": {\"rate\": \"fast\", "
                  "\"burst\": true}},\n"
                  " \"" H1 "\",\n"
                  " 123456789,\n"
                  " [],\n"
                  " {\"id\": null, \"sha256\": {\"a\": 1}},\n"
                  " {\"id\": \"j\", \"sha256\": \"" H4 "\", \"throttle\": false}\n"
                  "]}\n",
                  exp, LG_ARRAY_LEN(exp), secrets);
}
END_TEST

START_TEST(test_error_id)
{
    char *long_id = repeat('x', LG_APIKEY_ID_MAX + 1);
    char *ok_id = repeat('y', LG_APIKEY_ID_MAX);
    char *text = fmt("{\"keys\": [\n"
                     " {\"id\": \"\", \"sha256\": \"" H1 "\"},\n"
                     " {\"id\": \"has space\", \"sha256\": \"" H2 "\"},\n"
                     " {\"id\": \"%s\", \"sha256\": \"" H3 "\"},\n"
                     " {\"id\": \"%s\", \"sha256\": \"" H4 "\"},\n"
                     " {\"id\": \"caf\\u00e9\", \"sha256\": \"" H5 "\"},\n"
                     " {\"id\": \"a/b\", \"sha256\": \"" H6 "\"}\n"
                     "]}\n",
                     long_id, ok_id);
    static const struct expected exp[] = {
        {2, "keys[0].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"\""},
        {3, "keys[1].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"has space\""},
        /* Quoted up to 64 bytes. */
        {4, "keys[2].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"..."},
        {6, "keys[4].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"caf\\xc3\\xa9\""},
        {7, "keys[5].id must be a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -, got "
            "\"a/b\""},
    };
    expect_errors(text, exp, LG_ARRAY_LEN(exp), NULL);
    free(text);
    free(long_id);
    free(ok_id);
}
END_TEST

START_TEST(test_error_sha256)
{
    static const struct expected exp[] = {
        {2, "keys[0].sha256 must be 64 hex digits, got 63 characters"},
        {3, "keys[1].sha256 must be 64 hex digits, got 65 characters"},
        {4, "keys[2].sha256 must be 64 hex digits, got a character that is not one"},
        {5, "keys[3].sha256 must be 64 hex digits, got a character that is not one"},
        {6, "keys[4].sha256 must be 64 hex digits, got 0 characters"},
        {7, "keys[5].sha256 must be 64 hex digits, got 66 characters"},
        {8, "keys[6].sha256 must be 64 hex digits, got 1 character"},
    };
    expect_errors("{\"keys\": [\n"
                  " {\"id\": \"a\", \"sha256\": "
                  "\"01e8df04e1bbed6279deddd5dd055ff9780004661eba0e6e75124e58d798174\"},\n"
                  " {\"id\": \"b\", \"sha256\": \"" H2 "0\"},\n"
                  " {\"id\": \"c\", \"sha256\": \"5d9d3bb5560d5b3b1fce1ea78127959489d86a64dcfe598"
                  "af6e05a43a805e0bg\"},\n"
                  " {\"id\": \"d\", \"sha256\": \"5d9d3bb5560d5b3b 1fce1ea78127959489d86a64dcfe598"
                  "af6e05a43a805e0b\"},\n"
                  " {\"id\": \"e\", \"sha256\": \"\"},\n"
                  " {\"id\": \"f\", \"sha256\": \"0x" H4 "\"},\n"
                  " {\"id\": \"g\", \"sha256\": \"a\"}\n"
                  "]}\n",
                  exp, LG_ARRAY_LEN(exp), digest_prefixes);
}
END_TEST

START_TEST(test_error_missing)
{
    EXPECT("{\"keys\": [\n"
           " {\"sha256\": \"" H1 "\"},\n"
           " {\"id\": \"b\"},\n"
           " {\"id\": \"c\", \"sha256\": \"" H2 "\", \"throttle\": {\"rate\": 5}},\n"
           " {\"id\": \"d\", \"sha256\": \"" H3 "\", \"throttle\": {\"burst\": 5},"
           " \"quota\": {\"limit\": 10}},\n"
           " {\"id\": \"e\", \"sha256\": \"" H4 "\", \"quota\": {\"period\": \"week\"}},\n"
           " {},\n"
           " {\n"
           "   \"id\": \"h\"\n"
           " }\n"
           "]}\n",
           {2, "missing required key \"id\" in keys[0]"},
           {3, "missing required key \"sha256\" in keys[1]"},
           {4, "missing required key \"burst\" in keys[2].throttle"},
           {5, "missing required key \"rate\" in keys[3].throttle"},
           {5, "missing required key \"period\" in keys[3].quota"},
           {6, "missing required key \"limit\" in keys[4].quota"},
           {7, "missing required key \"id\" in keys[5]"},
           {7, "missing required key \"sha256\" in keys[5]"},
           /* At the line of the object's '{'. */
           {8, "missing required key \"sha256\" in keys[6]"});
}
END_TEST

START_TEST(test_error_top_level)
{
    EXPECT("{}", {1, "missing required key \"keys\" in the top level"});
    EXPECT("\n{\n  \"other\": 1\n}\n", {2, "missing required key \"keys\" in the top level"},
           {3, "unknown key \"other\" in the top level"});
    EXPECT("{\n  \"keys\": {}\n}", {2, "\"keys\" must be an array, got an object"});
    EXPECT("{\n  \"keys\": null\n}", {2, "\"keys\" must be an array, got null"});
    /* A string where the keys should be may be a digest: not echoed. */
    static const struct expected string_keys[] = {{3, "\"keys\" must be an array, got a string"}};
    expect_errors("{\n  \"keys\":\n \"" H1 "\"\n}", string_keys, 1, digest_prefixes);
    EXPECT("[\n]", {1, "the top level must be an object, got an array"});
    static const struct expected string_top[] = {
        {3, "the top level must be an object, got a string"}};
    expect_errors("\n\n\"" H1 "\"", string_top, 1, digest_prefixes);
    EXPECT("\n7", {2, "the top level must be an object, got a number"});
    EXPECT("{\"keys\": [],\n \"keys\": [{\"id\": 1}]}",
           {2, "duplicate key \"keys\" in the top level"});
    EXPECT("{\"keys\": [{\"id\": \"a\",\n \"sha256\": \"" H1 "\", \"id\": \"b\"}]}",
           {2, "duplicate key \"id\" in keys[0]"});
}
END_TEST

START_TEST(test_error_duplicates)
{
    static const struct expected exp[] = {
        {4, "duplicate id \"a\" in keys[2] (first in keys[0] at line 2)"},
        {6, "keys[3].sha256 repeats the digest of keys[0] (id \"a\", line 2): one key cannot "
            "have two ids"},
        {7, "duplicate id \"b\" in keys[4] (first in keys[1] at line 3)"},
        {7, "keys[4].sha256 repeats the digest of keys[1] (id \"b\", line 3): one key cannot "
            "have two ids"},
        {8, "keys[5].sha256 repeats the digest of keys[0] (id \"a\", line 2)*"},
    };
    expect_errors("{\"keys\": [\n"
                  " {\"id\": \"a\", \"sha256\": \"" H1 "\"},\n"
                  " {\"id\": \"b\", \"sha256\": \"" H2 "\"},\n"
                  " {\"id\": \"a\", \"sha256\": \"" H3 "\"},\n"
                  " {\"id\": \"c\",\n"
                  "  \"sha256\": \"" H1_UPPER "\"},\n"
                  " {\"id\": \"b\", \"sha256\": \"" H2 "\"},\n"
                  " {\"id\": \"d\", \"sha256\": \"" H1 "\"}\n"
                  "]}\n",
                  exp, LG_ARRAY_LEN(exp), digest_prefixes);
}
END_TEST

START_TEST(test_error_ranges)
{
    EXPECT("{\"keys\": [\n"
           " {\"id\": \"a\", \"sha256\": \"" H1 "\", \"throttle\": {\"rate\": 0, \"burst\": 0}},\n"
           " {\"id\": \"b\", \"sha256\": \"" H2
           "\", \"throttle\": {\"rate\": -1, \"burst\": 1.5}},\n"
           " {\"id\": \"c\", \"sha256\": \"" H3 "\", \"throttle\": {\"rate\": 1e7, \"burst\": "
           "1000001}},\n"
           " {\"id\": \"d\", \"sha256\": \"" H4 "\", \"quota\": {\"limit\": 0, \"period\": "
           "\"year\"}},\n"
           " {\"id\": \"e\", \"sha256\": \"" H5 "\", \"quota\": {\"limit\": 2.5, \"period\": "
           "\"Day\"}},\n"
           " {\"id\": \"f\", \"sha256\": \"" H6 "\", \"quota\": {\"limit\": 99999999999999999999, "
           "\"period\": 1}},\n"
           " {\"id\": \"g\", \"sha256\": \"" H6 "0\", \"throttle\": {\"rate\": 0.0009, \"burst\": "
           "1e2}, \"quota\": {\"limit\": -5, \"period\": \"day\\u0000\"}},\n"
           " {\"id\": \"h\", \"sha256\": \"" H6 "1\", \"throttle\": {\"rate\": 1e400, \"burst\": "
           "-0}, \"quota\": {\"limit\": 1E2, \"period\": null}}\n"
           "]}\n",
           {2, "keys[0].throttle.rate must be a number from 0.001 to 1000000, got 0"},
           {2, "keys[0].throttle.burst must be an integer from 1 to 1000000, got 0"},
           {3, "keys[1].throttle.rate must be a number from 0.001 to 1000000, got -1"},
           {3, "keys[1].throttle.burst must be an integer from 1 to 1000000, got 1.5"},
           {4, "keys[2].throttle.rate must be a number from 0.001 to 1000000, got 1e7"},
           {4, "keys[2].throttle.burst must be an integer from 1 to 1000000, got 1000001"},
           {5, "keys[3].quota.limit must be an integer from 1 to 9223372036854775807, got 0"},
           {5, "keys[3].quota.period must be \"day\", \"week\" or \"month\", got \"year\""},
           {6, "keys[4].quota.limit must be an integer from 1 to 9223372036854775807, got 2.5"},
           {6, "keys[4].quota.period must be \"day\", \"week\" or \"month\", got \"Day\""},
           {7, "keys[5].quota.limit must be an integer from 1 to 9223372036854775807, got "
               "99999999999999999999"},
           {7, "keys[5].quota.period must be \"day\", \"week\" or \"month\", got 1"},
           {8, "keys[6].sha256 must be 64 hex digits, got 65 characters"},
           {8, "keys[6].throttle.rate must be a number from 0.001 to 1000000, got 0.0009"},
           {8, "keys[6].throttle.burst must be an integer from 1 to 1000000, got 1e2"},
           {8, "keys[6].quota.limit must be an integer from 1 to 9223372036854775807, got -5"},
           {8, "keys[6].quota.period must be \"day\", \"week\" or \"month\", got \"day\\x00\""},
           {9, "keys[7].sha256 must be 64 hex digits, got 65 characters"},
           {9, "keys[7].throttle.rate must be a number from 0.001 to 1000000, got 1e400"},
           {9, "keys[7].throttle.burst must be an integer from 1 to 1000000, got -0"},
           {9, "keys[7].quota.limit must be an integer from 1 to 9223372036854775807, got 1E2"},
           {9, "keys[7].quota.period must be \"day\", \"week\" or \"month\", got null"});
}
END_TEST

START_TEST(test_error_syntax)
{
    EXPECT("{\"keys\": [\n"
           " {\"id\": \"a\", \"sha256\": \"" H1 "\"},\n"
           " {\"id\": \"b\" \"sha256\": \"" H2 "\"}\n"
           "]}\n",
           {3, "JSON syntax error: after key and value, inside map, I expect ',' or '}'"});
    /* Errors before the syntax error are kept. */
    EXPECT("{\"keys\": [\n"
           " {\"id\": \"a\", \"sha256\": \"" H1 "\", \"x\": 1},\n"
           " {\"id\": \"b\", \"sha256\": \"" H2 "\"},,\n"
           "]}\n",
           {2, "unknown key \"x\" in keys[0]"},
           {3, "JSON syntax error: unallowed token at this point in JSON text"});
    /* Premature end: at the last line with something on it. */
    EXPECT("{\"keys\": [\n {\"id\": \"a\"\n\n\n", {2, "JSON syntax error: premature EOF"});
    EXPECT("", {1, "JSON syntax error: premature EOF"});
    /* Trailing garbage after the object. */
    EXPECT("\n{\"keys\": []}\n\n{}\n", {4, "JSON syntax error: trailing garbage"});
    /* Lines still count through a comment spanning lines. */
    EXPECT("/* a comment\n"
           "   spanning lines */\n"
           "{\"keys\": [ // trailing comment\n"
           " {\"id\": \"a\", \"sha256\": \"" H1 "\", \"x\": 1}\n"
           "]}\n",
           {4, "unknown key \"x\" in keys[0]"});
    /* A string cannot hold a raw control byte, nor bad UTF-8. */
    EXPECT("{\"keys\": [\n {\"id\": \"a\tb\"}]}",
           {2, "JSON syntax error: invalid character inside string."});
    EXPECT("{\"keys\": [\n\n {\"id\": \"a\xff\"}]}",
           {3, "JSON syntax error: invalid bytes in UTF8 string."});
}
END_TEST

START_TEST(test_error_limits)
{
    /* A NUL byte, at its line. */
    static const char nul[] = "{\n\"keys\": [\n\0]}";
    static const struct expected nul_exp[] = {{3, "the file contains a NUL byte"}};
    expect_errors_len(nul, sizeof(nul) - 1, nul_exp, 1, NULL);

    /* Nesting: deep values inside an unknown key are skipped up to a bound. */
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "{\"keys\": [{\"id\": \"a\", \"sha256\": \"" H1 "\",\n"
                                     "\"deep\": "),
                     0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(lg_buf_puts(&b, "[{\"x\":"), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "1"), 0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(lg_buf_puts(&b, "}]"), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "}]}"), 0);
    static const struct expected deep[] = {{2, "JSON nesting deeper than 32 levels"}};
    static const struct expected skipped[] = {{2, "unknown key \"deep\" in keys[0]"}};
    /* 3 levels + 40 > 32: stopped. */
    static const struct expected both[] = {skipped[0], deep[0]};
    expect_errors(lg_buf_cstr(&b), both, 2, NULL);
    lg_buf_reset(&b);
    ck_assert_int_eq(lg_buf_puts(&b, "{\"keys\": [{\"id\": \"a\", \"sha256\": \"" H1 "\",\n"
                                     "\"deep\": "),
                     0);
    for (int i = 0; i < 14; i++)
        ck_assert_int_eq(lg_buf_puts(&b, "[{\"x\":"), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "1"), 0);
    for (int i = 0; i < 14; i++)
        ck_assert_int_eq(lg_buf_puts(&b, "}]"), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "}]}"), 0);
    /* 3 levels + 28 = 31: skipped whole, only the unknown key reported. */
    expect_errors(lg_buf_cstr(&b), skipped, 1, NULL);
    lg_buf_free(&b);

    /* Size: one byte over the bound is refused before parsing. */
    size_t big = (size_t)LG_APIKEY_FILE_MAX + 1;
    char *text = malloc(big);
    ck_assert_ptr_nonnull(text);
    memset(text, ' ', big);
    text[0] = '{';
    static const struct expected large[] = {{0, "the file is larger than 16777216 bytes"}};
    expect_errors_len(text, big, large, 1, NULL);
    free(text);
}
END_TEST

/* Every error of a file is reported, sorted by line. */
START_TEST(test_many_errors)
{
    EXPECT("{\n"
           "  \"keys\": [\n"
           "    { \"id\": \"a\", \"sha256\": \"" H1 "\", \"extra\": 1 },\n"
           "    { \"id\": \"a\", \"sha256\": \"zz\" },\n"
           "    { \"sha256\": \"" H2 "\", \"throttle\": { \"rate\": 0, \"burst\": 1 } },\n"
           "    { \"id\": \"d\", \"sha256\": \"" H3 "\", \"quota\": { \"limit\": 1, \"period\": "
           "\"hour\" } }\n"
           "  ],\n"
           "  \"more\": true\n"
           "}\n",
           {3, "unknown key \"extra\" in keys[0]"},
           {4, "keys[1].sha256 must be 64 hex digits, got 2 characters"},
           {4, "duplicate id \"a\" in keys[1] (first in keys[0] at line 3)"},
           {5, "keys[2].throttle.rate must be a number from 0.001 to 1000000, got 0"},
           {5, "missing required key \"id\" in keys[2]"},
           {6, "keys[3].quota.period must be \"day\", \"week\" or \"month\", got \"hour\""},
           {8, "unknown key \"more\" in the top level"});
}
END_TEST

/* A garbage file does not flood: 500 errors, then a count of the rest. */
START_TEST(test_error_cap)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "{\"keys\": [\n"), 0);
    for (int i = 0; i < 600; i++)
        ck_assert_int_eq(lg_buf_printf(&b, "%s7\n", i ? "," : ""), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "]}"), 0);
    struct collector c = {0};
    ck_assert_ptr_null(lg_apikeys_load_text(lg_buf_cstr(&b), b.len, collect, &c));
    ck_assert_uint_eq(c.calls, 501);
    ck_assert_int_eq(c.lines[0], 2);
    ck_assert_str_eq(c.messages[0], "keys[0] must be an object, got a number");
    ck_assert_int_eq(c.lines[499], 501);
    ck_assert_str_eq(c.messages[499], "keys[499] must be an object, got a number");
    ck_assert_int_eq(c.lines[500], 0);
    ck_assert_str_eq(c.messages[500], "100 more errors not reported");
    collector_free(&c);
    lg_buf_free(&b);
}
END_TEST

/* LG_APIKEY_MAX_KEYS keys load; one more is an error at its line. */
START_TEST(test_max_keys)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "{\"keys\": [\n"), 0);
    /* Made-up digests, all zeros but the last bytes: the index must not
     * pile them into one cluster (the load would take minutes). */
    int failed = 0;
    for (int i = 0; i < LG_APIKEY_MAX_KEYS; i++)
        failed |= lg_buf_printf(&b, "%s{\"id\":\"k%d\",\"sha256\":\"%064x\"}\n", i ? "," : "", i,
                                (unsigned)i);
    ck_assert_int_eq(failed, 0);
    size_t body = b.len;
    ck_assert_int_eq(lg_buf_puts(&b, "]}"), 0);
    ck_assert_uint_le(b.len, LG_APIKEY_FILE_MAX);
    struct lg_apikeys *set = load_ok(lg_buf_cstr(&b));
    ck_assert_uint_eq(set->nkeys, LG_APIKEY_MAX_KEYS);
    ck_assert_str_eq(set->keys[LG_APIKEY_MAX_KEYS - 1].id, "k99999");
    lg_apikeys_free(set);

    b.len = body;
    ck_assert_int_eq(lg_buf_printf(&b,
                                   ",{\"id\":\"k%d\",\"sha256\":\"%064x\"}\n"
                                   ",{\"id\":\"k%d\",\"sha256\":\"%064x\"}\n]}",
                                   LG_APIKEY_MAX_KEYS, (unsigned)LG_APIKEY_MAX_KEYS,
                                   LG_APIKEY_MAX_KEYS + 1, (unsigned)LG_APIKEY_MAX_KEYS + 1),
                     0);
    static const struct expected exp[] = {
        {LG_APIKEY_MAX_KEYS + 2, "the file holds more than 100000 keys"}};
    expect_errors(lg_buf_cstr(&b), exp, 1, NULL);
    lg_buf_free(&b);
}
END_TEST

/* ------------------------------------------------------------------------
 * Quota periods
 * ------------------------------------------------------------------------ */

static void expect_bounds(enum lg_apikey_period p, int64_t now, int64_t start, int64_t end)
{
    int64_t s = -1, e = -1;
    lg_apikey_period_bounds(p, now, &s, &e);
    ck_assert_msg(s == start && e == end, "period %d at %lld: [%lld, %lld), want [%lld, %lld)",
                  (int)p, (long long)now, (long long)s, (long long)e, (long long)start,
                  (long long)end);
}

START_TEST(test_period_day)
{
    /* 2024-03-15 13:45:10 UTC (a Friday). */
    expect_bounds(LG_QUOTA_DAY, 1710510310, 1710460800, 1710547200);
    /* Exactly midnight starts its day. */
    expect_bounds(LG_QUOTA_DAY, 1710460800, 1710460800, 1710547200);
    expect_bounds(LG_QUOTA_DAY, 1710460799, 1710460800 - 86400, 1710460800);
    /* 2024-02-29 12:00 (leap day). */
    expect_bounds(LG_QUOTA_DAY, 1709208000, 1709164800, 1709251200);
    /* 2023-12-31 18:00: the day ends on 2024-01-01. */
    expect_bounds(LG_QUOTA_DAY, 1704045600, 1704067200 - 86400, 1704067200);
    /* Before the epoch: 1969-12-31 23:59:59. */
    expect_bounds(LG_QUOTA_DAY, -1, -86400, 0);
    expect_bounds(LG_QUOTA_DAY, 0, 0, 86400);
}
END_TEST

START_TEST(test_period_week)
{
    /* Friday 2024-03-15: Monday 2024-03-11 to Monday 2024-03-18. */
    expect_bounds(LG_QUOTA_WEEK, 1710510310, 1710115200, 1710720000);
    /* Sunday 2024-03-17 23:59:59: still the week of the previous Monday. */
    expect_bounds(LG_QUOTA_WEEK, 1710719999, 1710115200, 1710720000);
    /* Monday 2024-03-18 00:00 starts the next. */
    expect_bounds(LG_QUOTA_WEEK, 1710720000, 1710720000, 1711324800);
    /* Thursday 2024-02-29: Monday Feb 26 to Monday Mar 4. */
    expect_bounds(LG_QUOTA_WEEK, 1709208000, 1708905600, 1709510400);
    /* Sunday 2023-12-31: Monday Dec 25 to Monday 2024-01-01. */
    expect_bounds(LG_QUOTA_WEEK, 1704045600, 1703462400, 1704067200);
    /* Tuesday 2024-12-31: Monday Dec 30 to Monday 2025-01-06, across the year. */
    expect_bounds(LG_QUOTA_WEEK, 1735635600, 1735516800, 1736121600);
    /* The epoch was a Thursday: Monday 1969-12-29 to Monday 1970-01-05. */
    expect_bounds(LG_QUOTA_WEEK, 0, -259200, 345600);
    expect_bounds(LG_QUOTA_WEEK, -1, -259200, 345600);
    expect_bounds(LG_QUOTA_WEEK, 345600, 345600, 345600 + 7 * 86400);
    expect_bounds(LG_QUOTA_WEEK, -259201, -259200 - 7 * 86400, -259200);
}
END_TEST

START_TEST(test_period_month)
{
    /* February of a leap year: 29 days. */
    expect_bounds(LG_QUOTA_MONTH, 1709208000, 1706745600, 1709251200);
    ck_assert_int_eq(1709251200 - 1706745600, 29 * 86400);
    expect_bounds(LG_QUOTA_MONTH, 1706745600, 1706745600, 1709251200);
    expect_bounds(LG_QUOTA_MONTH, 1709251199, 1706745600, 1709251200);
    /* February 2023: 28 days. */
    expect_bounds(LG_QUOTA_MONTH, 1675987200, 1675209600, 1677628800);
    ck_assert_int_eq(1677628800 - 1675209600, 28 * 86400);
    /* 2000 is a leap year (divisible by 400), 2100 is not (by 100). */
    expect_bounds(LG_QUOTA_MONTH, 950572800, 949363200, 951868800);
    ck_assert_int_eq(951868800 - 949363200, 29 * 86400);
    expect_bounds(LG_QUOTA_MONTH, 4106332800, 4105123200, 4107542400);
    ck_assert_int_eq(4107542400 - 4105123200, 28 * 86400);
    /* December: to January 1st of the next year. */
    expect_bounds(LG_QUOTA_MONTH, 1704045600, 1701388800, 1704067200);
    expect_bounds(LG_QUOTA_MONTH, 1735635600, 1733011200, 1735689600);
    /* Before the epoch: December 1969. */
    expect_bounds(LG_QUOTA_MONTH, -1, -2678400, 0);
    expect_bounds(LG_QUOTA_MONTH, 0, 0, 31 * 86400);
}
END_TEST

/* Why period p at now disagrees with the C library's calendar, or NULL. */
static const char *period_fault(enum lg_apikey_period p, int64_t now, const struct tm *tm)
{
    int64_t s, e, s2, e2;
    lg_apikey_period_bounds(p, now, &s, &e);
    if (!(s <= now && now < e))
        return "does not hold now";
    lg_apikey_period_bounds(p, e, &s2, &e2);
    if (s2 != e)
        return "the next period does not start at the end";
    struct tm ts, te;
    time_t ts_t = (time_t)s, te_t = (time_t)e;
    if (gmtime_r(&ts_t, &ts) == NULL || gmtime_r(&te_t, &te) == NULL)
        return "gmtime_r failed";
    if (ts.tm_hour != 0 || ts.tm_min != 0 || ts.tm_sec != 0 || te.tm_hour != 0 || te.tm_min != 0 ||
        te.tm_sec != 0)
        return "not at 00:00";
    switch (p) {
    case LG_QUOTA_DAY:
        if (ts.tm_yday != tm->tm_yday || e - s != 86400)
            return "not the day of now";
        break;
    case LG_QUOTA_WEEK:
        if (ts.tm_wday != 1 || e - s != 7 * 86400)
            return "not a week from Monday";
        break;
    case LG_QUOTA_MONTH:
        if (ts.tm_mday != 1 || ts.tm_mon != tm->tm_mon || ts.tm_year != tm->tm_year ||
            te.tm_mday != 1 || te.tm_mon != (tm->tm_mon + 1) % 12)
            return "not the month of now";
        break;
    }
    return NULL;
}

/* Against the C library's calendar: every 1 day 7 hours 13 minutes from
 * 1900 to 2100 (the time of day drifts through every hour), each period
 * holds now, starts at 00:00 of the right day, and ends where the next one
 * starts. No Check assertion inside the loop unless it fails: each passing
 * one is a message to the runner, and reading many is quadratic. */
START_TEST(test_period_against_gmtime)
{
    long checked = 0;
    for (int64_t now = -2208988800; now < 4102444800; now += 86400 + 7 * 3600 + 13 * 60) {
        time_t t = (time_t)now;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL)
            ck_abort_msg("gmtime_r failed at %lld", (long long)now);
        for (int p = LG_QUOTA_DAY; p <= LG_QUOTA_MONTH; p++) {
            const char *fault = period_fault((enum lg_apikey_period)p, now, &tm);
            if (fault != NULL)
                ck_abort_msg("period %d at %lld: %s", p, (long long)now, fault);
            checked++;
        }
    }
    ck_assert_int_gt(checked, 3 * 50000);
}
END_TEST

/* The ends of int64_t: no overflow (UBSan watches), bounds saturate. */
START_TEST(test_period_extremes)
{
    static const int64_t times[] = {INT64_MAX, INT64_MAX - 86400, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < LG_ARRAY_LEN(times); i++) {
        for (int p = LG_QUOTA_DAY; p <= LG_QUOTA_MONTH; p++) {
            int64_t s, e;
            lg_apikey_period_bounds((enum lg_apikey_period)p, times[i], &s, &e);
            ck_assert(s <= times[i]);
            ck_assert(times[i] <= e);
            ck_assert(s < e);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("apikey");

    TCase *lookup = tcase_create("lookup");
    tcase_set_timeout(lookup, 30);
    tcase_add_test(lookup, test_data_digests);
    tcase_add_test(lookup, test_find_three_keys);
    tcase_add_test(lookup, test_find_value_length);
    tcase_add_test(lookup, test_find_upper_case_hex);
    tcase_add_test(lookup, test_empty_keys);
    tcase_add_test(lookup, test_find_1000_keys);
    tcase_add_test(lookup, test_find_threads);
    suite_add_tcase(s, lookup);

    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 30);
    tcase_add_test(files, test_file_plans);
    tcase_add_test(files, test_inline_plans);
    tcase_add_test(files, test_comments_and_long_id);
    tcase_add_test(files, test_file_errors);
    suite_add_tcase(s, files);

    TCase *errors = tcase_create("errors");
    tcase_set_timeout(errors, 30);
    tcase_add_test(errors, test_error_unknown_keys);
    tcase_add_test(errors, test_error_types);
    tcase_add_test(errors, test_error_id);
    tcase_add_test(errors, test_error_sha256);
    tcase_add_test(errors, test_error_missing);
    tcase_add_test(errors, test_error_top_level);
    tcase_add_test(errors, test_error_duplicates);
    tcase_add_test(errors, test_error_ranges);
    tcase_add_test(errors, test_error_syntax);
    tcase_add_test(errors, test_error_limits);
    tcase_add_test(errors, test_many_errors);
    tcase_add_test(errors, test_error_cap);
    suite_add_tcase(s, errors);

    TCase *big = tcase_create("big");
    tcase_set_timeout(big, 120);
    tcase_add_test(big, test_max_keys);
    suite_add_tcase(s, big);

    TCase *periods = tcase_create("periods");
    tcase_set_timeout(periods, 60);
    tcase_add_test(periods, test_period_day);
    tcase_add_test(periods, test_period_week);
    tcase_add_test(periods, test_period_month);
    tcase_add_test(periods, test_period_against_gmtime);
    tcase_add_test(periods, test_period_extremes);
    suite_add_tcase(s, periods);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
