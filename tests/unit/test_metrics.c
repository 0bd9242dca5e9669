/* test_metrics.c - labelled counters, the latency histogram, Prometheus text, and the admin
 * listener. */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "lambdagate/admin.h"
#include "lambdagate/buf.h"
#include "lambdagate/conf.h"
#include "lambdagate/metrics.h"

/* Every test runs in its own forked child, so each starts with all the
 * process-wide counters at zero. */

/* ---- Helpers ---------------------------------------------------------- */

/* The exposition with src; caller frees. */
static char *render(const struct lg_metrics_sources *src)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_metrics_render(src, &b), 0);
    size_t len;
    char *text = lg_buf_steal(&b, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

/* The value of the sample whose name and labels are exactly series, or -1
 * when there is no such line. */
static long long value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtoll(line + n + 1, NULL, 10);
        line = *end ? end + 1 : end;
    }
    return -1;
}

/* Lines that start with prefix. */
static size_t lines_with(const char *text, const char *prefix)
{
    size_t count = 0, n = strlen(prefix);
    for (const char *line = text; *line;) {
        if (strncmp(line, prefix, n) == 0)
            count++;
        const char *end = strchr(line, '\n');
        if (end == NULL)
            break;
        line = end + 1;
    }
    return count;
}

/* True when text holds exactly this line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

/* ---- A checker of the text format (0.0.4) ----------------------------- */

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/* Length of the metric (or, without colons, label) name at p; 0 if none. */
static size_t name_len(const char *p, bool label)
{
    if (!is_name_start(*p) || (label && *p == ':'))
        return 0;
    size_t n = 1;
    while (is_name_char(p[n]) && !(label && p[n] == ':'))
        n++;
    return n;
}

#define MAX_TYPES 64

struct checker {
    char types[MAX_TYPES][128]; /* metric names with a TYPE line */
    char kinds[MAX_TYPES][32];
    size_t ntypes;
    char **series; /* "name{labels}" of every sample, for duplicates */
    size_t nseries;
    size_t cap;
};

static const char *type_of(const struct checker *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->ntypes; i++)
        if (strlen(c->types[i]) == n && strncmp(c->types[i], name, n) == 0)
            return c->kinds[i];
    return NULL;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Check one sample line [p, end): name{label="value",...} value. NULL or
 * what is wrong. */
static const char *check_sample(struct checker *c, const char *p, const char *end)
{
    const char *start = p;
    size_t n = name_len(p, false);
    if (n == 0)
        return "no metric name";
    /* The family: a histogram's samples add a suffix to its name. */
    const char *kind = type_of(c, p, n);
    if (kind == NULL) {
        static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
        for (size_t i = 0; i < 3 && kind == NULL; i++) {
            size_t sl = strlen(suffixes[i]);
            if (n > sl && strncmp(p + n - sl, suffixes[i], sl) == 0) {
                kind = type_of(c, p, n - sl);
                if (kind != NULL && strcmp(kind, "histogram") != 0)
                    kind = NULL;
            }
        }
    }
    if (kind == NULL)
        return "sample before its TYPE line";
    p += n;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            size_t ln = name_len(p, true);
            if (ln == 0)
                return "bad label name";
            p += ln;
            if (*p++ != '=' || *p++ != '"')
                return "label without =\"";
            while (*p != '"') {
                if (p >= end || *p == '\n')
                    return "unterminated label value";
                if (*p == '\\') {
                    if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                        return "bad escape in a label value";
                    p++;
                }
                p++;
            }
            p++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return "labels not separated by ','";
        }
        p++;
    }
    size_t series_len = (size_t)(p - start);
    if (*p++ != ' ')
        return "no space before the value";
    char value[64];
    size_t vl = (size_t)(end - p);
    if (vl == 0 || vl >= sizeof(value))
        return "bad value length";
    memcpy(value, p, vl);
    value[vl] = '\0';
    if (strcmp(value, "+Inf") != 0 && strcmp(value, "-Inf") != 0 && strcmp(value, "NaN") != 0) {
        char *stop;
        errno = 0;
        strtod(value, &stop);
        if (*stop != '\0' || errno != 0 || strchr(value, ' ') != NULL)
            return "value is not a number";
    }
    if (c->nseries == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->series = realloc(c->series, c->cap * sizeof(*c->series));
    }
    c->series[c->nseries++] = strndup(start, series_len);
    return NULL;
}

/* NULL when text is a valid exposition with no series twice, else a
 * malloc'd description of the first fault. Checked without ck_assert per
 * line: each assertion costs a pipe write in fork mode. *samples counts
 * the sample lines. */
static char *check_exposition(const char *text, size_t *samples)
{
    struct checker *c = calloc(1, sizeof(*c));
    char *fault = NULL;
    size_t lineno = 0;
    if (*text == '\0' || text[strlen(text) - 1] != '\n')
        fault = strdup("the text does not end with a newline");
    for (const char *line = text; fault == NULL && *line;) {
        const char *end = strchr(line, '\n');
        lineno++;
        const char *why = NULL;
        if (line[0] == '#') {
            char name[128], kind[32];
            if (strncmp(line, "# HELP ", 7) == 0) {
                if (name_len(line + 7, false) == 0 || line[7 + name_len(line + 7, false)] != ' ')
                    why = "bad HELP line";
            } else if (strncmp(line, "# TYPE ", 7) == 0) {
                size_t n = name_len(line + 7, false);
                if (n == 0 || n >= sizeof(name) || line[7 + n] != ' ') {
                    why = "bad TYPE line";
                } else {
                    memcpy(name, line + 7, n);
                    name[n] = '\0';
                    size_t kl = (size_t)(end - (line + 8 + n));
                    snprintf(kind, sizeof(kind), "%.*s", (int)kl, line + 8 + n);
                    if (strcmp(kind, "counter") != 0 && strcmp(kind, "gauge") != 0 &&
                        strcmp(kind, "histogram") != 0 && strcmp(kind, "summary") != 0 &&
                        strcmp(kind, "untyped") != 0)
                        why = "unknown TYPE";
                    else if (type_of(c, name, n) != NULL)
                        why = "second TYPE line for a metric";
                    else if (c->ntypes == MAX_TYPES)
                        why = "too many metrics for the checker";
                    else {
                        snprintf(c->types[c->ntypes], sizeof(c->types[0]), "%s", name);
                        snprintf(c->kinds[c->ntypes], sizeof(c->kinds[0]), "%s", kind);
                        c->ntypes++;
                    }
                }
            }
        } else if (line == end) {
            why = "empty line";
        } else {
            why = check_sample(c, line, end);
        }
        if (why != NULL) {
            size_t ll = (size_t)(end - line);
            fault = malloc(ll + 128);
            snprintf(fault, ll + 128, "line %zu: %s: %.*s", lineno, why, (int)ll, line);
        }
        line = end + 1;
    }
    if (fault == NULL && c->nseries > 1) {
        qsort(c->series, c->nseries, sizeof(*c->series), by_string);
        for (size_t i = 1; i < c->nseries && fault == NULL; i++)
            if (strcmp(c->series[i - 1], c->series[i]) == 0) {
                size_t len = strlen(c->series[i]) + 32;
                fault = malloc(len);
                snprintf(fault, len, "series twice: %s", c->series[i]);
            }
    }
    if (samples)
        *samples = c->nseries;
    for (size_t i = 0; i < c->nseries; i++)
        free(c->series[i]);
    free(c->series);
    free(c);
    return fault;
}

static void assert_parses(const char *text)
{
    char *fault = check_exposition(text, NULL);
    ck_assert_msg(fault == NULL, "%s", fault ? fault : "");
}

/* ---- Counters and labels ---------------------------------------------- */

START_TEST(test_requests_counted_by_route_and_status)
{
    for (int i = 0; i < 3; i++)
        lg_metrics_request("GET /hello", 200, 1000);
    lg_metrics_request("GET /hello", 502, 1000);
    lg_metrics_request("", 404, 100);
    lg_metrics_request(NULL, 404, 100);
    lg_metrics_request("GET /users/{id}", 100, 1);
    lg_metrics_request("GET /users/{id}", 599, 1);
    /* Outside 100-599: one "other" line, not a label per garbage value. */
    lg_metrics_request("GET /users/{id}", 0, 1);
    lg_metrics_request("GET /users/{id}", 99, 1);
    lg_metrics_request("GET /users/{id}", 600, 1);
    lg_metrics_request("GET /users/{id}", -1, 1);

    char *t = render(NULL);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"GET /hello\",status=\"200\"}"),
                     3);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"GET /hello\",status=\"502\"}"),
                     1);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"none\",status=\"404\"}"), 2);
    ck_assert_int_eq(
        value_of(t, "lambdagate_requests_total{route=\"GET /users/{id}\",status=\"100\"}"), 1);
    ck_assert_int_eq(
        value_of(t, "lambdagate_requests_total{route=\"GET /users/{id}\",status=\"599\"}"), 1);
    ck_assert_int_eq(
        value_of(t, "lambdagate_requests_total{route=\"GET /users/{id}\",status=\"other\"}"), 4);
    ck_assert_uint_eq(lines_with(t, "lambdagate_requests_total{"), 6);
    ck_assert(has_line(t, "# TYPE lambdagate_requests_total counter"));
    ck_assert(has_line(t, "# HELP lambdagate_requests_total Requests answered, by route key "
                          "(\"none\" when no route matched) and HTTP status."));
    /* Sorted: a scrape reads in a stable order. */
    const char *a = strstr(t, "route=\"GET /hello\",status=\"200\"");
    const char *b = strstr(t, "route=\"GET /hello\",status=\"502\"");
    const char *c = strstr(t, "route=\"GET /users/{id}\",status=\"100\"");
    const char *d = strstr(t, "route=\"none\"");
    ck_assert(a && b && c && d && a < b && b < c && c < d);
    assert_parses(t);
    free(t);
}
END_TEST

START_TEST(test_invocations_counted)
{
    lg_metrics_invocation("hello", "ok");
    lg_metrics_invocation("hello", "ok");
    lg_metrics_invocation("hello", "function_error");
    lg_metrics_invocation("arn:aws:lambda:us-east-1:123456789012:function:users:live", "timeout");
    lg_metrics_invocation("", NULL);

    char *t = render(NULL);
    ck_assert(
        has_line(t, "lambdagate_lambda_invocations_total{function=\"hello\",outcome=\"ok\"} 2"));
    ck_assert(has_line(
        t, "lambdagate_lambda_invocations_total{function=\"hello\",outcome=\"function_error\"} 1"));
    ck_assert(has_line(t, "lambdagate_lambda_invocations_total{function=\"arn:aws:lambda:us-east-"
                          "1:123456789012:function:users:live\",outcome=\"timeout\"} 1"));
    ck_assert(has_line(
        t, "lambdagate_lambda_invocations_total{function=\"none\",outcome=\"unknown\"} 1"));
    ck_assert_uint_eq(lines_with(t, "lambdagate_lambda_invocations_total{"), 4);
    ck_assert(has_line(t, "# TYPE lambdagate_lambda_invocations_total counter"));
    assert_parses(t);
    free(t);
}
END_TEST

START_TEST(test_label_values_escaped)
{
    /* Route keys and function names are any text from the config. */
    lg_metrics_request("GET /a\"b\\c\nd", 200, 10);
    lg_metrics_invocation("fn\"\\\n", "ok");
    lg_metrics_request("GET /caf\xc3\xa9", 200, 10);
    char *t = render(NULL);
    ck_assert_msg(
        has_line(t, "lambdagate_requests_total{route=\"GET /a\\\"b\\\\c\\nd\",status=\"200\"} 1"),
        "%s", t);
    ck_assert(has_line(
        t, "lambdagate_lambda_invocations_total{function=\"fn\\\"\\\\\\n\",outcome=\"ok\"} 1"));
    /* UTF-8 as is. */
    ck_assert(
        has_line(t, "lambdagate_requests_total{route=\"GET /caf\xc3\xa9\",status=\"200\"} 1"));
    assert_parses(t);
    free(t);
}
END_TEST

/* ---- The histogram ---------------------------------------------------- */

static const char *const le_texts[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                       "0.05",   "0.1",   "0.25",   "0.5",   "1",    "2.5",
                                       "5",      "10",    "30",     "+Inf"};

static long long bucket(const char *t, const char *le)
{
    char series[128];
    snprintf(series, sizeof(series), "lambdagate_request_duration_seconds_bucket{le=\"%s\"}", le);
    return value_of(t, series);
}

START_TEST(test_histogram_buckets)
{
    lg_metrics_request("GET /a", 200, 400);      /* 0.4 ms: every bucket */
    lg_metrics_request("GET /a", 200, 500);      /* on the bound: le is "<=" */
    lg_metrics_request("GET /a", 200, 501);      /* just above: from le=0.001 */
    lg_metrics_request("GET /a", 200, 120000);   /* 120 ms: from le=0.25 */
    lg_metrics_request("GET /a", 200, 30000000); /* 30 s: le=30 */
    lg_metrics_request("GET /a", 200, 31000000); /* 31 s: +Inf only */
    lg_metrics_request("GET /a", 200, -5);       /* a clock step back counts as 0 */

    char *t = render(NULL);
    const long long want[] = {3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 7};
    ck_assert_uint_eq(lines_with(t, "lambdagate_request_duration_seconds_bucket{"),
                      LG_ARRAY_LEN(le_texts));
    for (size_t i = 0; i < LG_ARRAY_LEN(le_texts); i++)
        ck_assert_msg(bucket(t, le_texts[i]) == want[i], "le=%s: %lld, want %lld", le_texts[i],
                      bucket(t, le_texts[i]), want[i]);
    /* 400 + 500 + 501 + 120000 + 30000000 + 31000000 + 0 us, exactly. */
    ck_assert(has_line(t, "lambdagate_request_duration_seconds_sum 61.121401"));
    ck_assert(has_line(t, "lambdagate_request_duration_seconds_count 7"));
    ck_assert(has_line(t, "# TYPE lambdagate_request_duration_seconds histogram"));
    /* Buckets in increasing order, then _sum and _count. */
    const char *prev = t;
    for (size_t i = 0; i < LG_ARRAY_LEN(le_texts); i++) {
        char s[64];
        snprintf(s, sizeof(s), "{le=\"%s\"}", le_texts[i]);
        const char *p = strstr(t, s);
        ck_assert(p != NULL && p > prev);
        prev = p;
    }
    ck_assert(strstr(t, "_sum ") > prev && strstr(t, "_count ") > strstr(t, "_sum "));
    assert_parses(t);
    free(t);
}
END_TEST

START_TEST(test_histogram_empty)
{
    char *t = render(NULL);
    for (size_t i = 0; i < LG_ARRAY_LEN(le_texts); i++)
        ck_assert_int_eq(bucket(t, le_texts[i]), 0);
    ck_assert(has_line(t, "lambdagate_request_duration_seconds_sum 0.000000"));
    ck_assert(has_line(t, "lambdagate_request_duration_seconds_count 0"));
    free(t);
}
END_TEST

/* ---- Fixed families and gauges ---------------------------------------- */

START_TEST(test_fixed_families_always_present)
{
    static const char *const reasons[] = {
        "identity",     "api_key",         "global",
        "quota",        "per_ip",          "deny",
        "max_inflight", "max_connections", "max_connections_per_ip",
        "lambda"};
    ck_assert_uint_eq(LG_ARRAY_LEN(reasons), LG_REASON_COUNT);
    static const char *const results[] = {"hit", "miss", "bypass", "stale"};

    char *t = render(NULL);
    char line[160];
    for (size_t i = 0; i < LG_ARRAY_LEN(reasons); i++) {
        snprintf(line, sizeof(line), "lambdagate_throttled_total{reason=\"%s\"} 0", reasons[i]);
        ck_assert_msg(has_line(t, line), "%s missing", line);
    }
    ck_assert_uint_eq(lines_with(t, "lambdagate_throttled_total{"), LG_REASON_COUNT);
    for (size_t i = 0; i < LG_ARRAY_LEN(results); i++) {
        snprintf(line, sizeof(line), "lambdagate_cache_requests_total{result=\"%s\"} 0",
                 results[i]);
        ck_assert_msg(has_line(t, line), "%s missing", line);
    }
    ck_assert_uint_eq(lines_with(t, "lambdagate_cache_requests_total{"), 4);
    /* Families with no label set yet still say what they are. */
    ck_assert(has_line(t, "# TYPE lambdagate_requests_total counter"));
    ck_assert(has_line(t, "# TYPE lambdagate_lambda_invocations_total counter"));
    ck_assert_uint_eq(lines_with(t, "lambdagate_requests_total{"), 0);
    /* NULL sources read as zeros. */
    ck_assert(has_line(t, "lambdagate_connections 0"));
    ck_assert(has_line(t, "lambdagate_redis_errors_total 0"));
    ck_assert(has_line(t, "lambdagate_redis_fallbacks_total 0"));
    ck_assert(has_line(t, "lambdagate_draining 0"));
    assert_parses(t);
    free(t);

    lg_metrics_refused(LG_REASON_PER_IP);
    lg_metrics_refused(LG_REASON_PER_IP);
    lg_metrics_refused(LG_REASON_MAX_CONNECTIONS_IP);
    lg_metrics_refused(LG_REASON_COUNT); /* out of range: ignored */
    lg_metrics_cache(LG_CACHE_RESULT_HIT);
    lg_metrics_cache(LG_CACHE_RESULT_HIT);
    lg_metrics_cache(LG_CACHE_RESULT_HIT);
    lg_metrics_cache(LG_CACHE_RESULT_STALE);
    lg_metrics_redis_fallback();
    struct lg_metrics_sources src = {.connections = 12, .redis_errors = 3, .draining = true};
    t = render(&src);
    ck_assert(has_line(t, "lambdagate_throttled_total{reason=\"per_ip\"} 2"));
    ck_assert(has_line(t, "lambdagate_throttled_total{reason=\"max_connections_per_ip\"} 1"));
    ck_assert(has_line(t, "lambdagate_throttled_total{reason=\"identity\"} 0"));
    ck_assert(has_line(t, "lambdagate_cache_requests_total{result=\"hit\"} 3"));
    ck_assert(has_line(t, "lambdagate_cache_requests_total{result=\"stale\"} 1"));
    ck_assert(has_line(t, "lambdagate_cache_requests_total{result=\"miss\"} 0"));
    ck_assert(has_line(t, "# TYPE lambdagate_connections gauge"));
    ck_assert(has_line(t, "lambdagate_connections 12"));
    ck_assert(has_line(t, "# TYPE lambdagate_redis_errors_total counter"));
    ck_assert(has_line(t, "lambdagate_redis_errors_total 3"));
    ck_assert(has_line(t, "# TYPE lambdagate_redis_fallbacks_total counter"));
    ck_assert(has_line(t, "lambdagate_redis_fallbacks_total 1"));
    ck_assert(has_line(t, "# TYPE lambdagate_draining gauge"));
    ck_assert(has_line(t, "lambdagate_draining 1"));
    assert_parses(t);
    free(t);
}
END_TEST

/* ---- The checker itself must be able to fail -------------------------- */

START_TEST(test_checker_rejects_bad_text)
{
    static const char *const bad[] = {
        "x 1\n",                                          /* no TYPE */
        "# TYPE x counter\nx{a=\"b} 1\n",                 /* unterminated value */
        "# TYPE x counter\nx{a=\"b\\t\"} 1\n",            /* bad escape */
        "# TYPE x counter\nx{a=\"b\"} one\n",             /* not a number */
        "# TYPE x counter\nx{a=\"b\"}  1\n",              /* two spaces */
        "# TYPE x counter\nx{a=\"b\"} 1\nx{a=\"b\"} 2\n", /* series twice */
        "# TYPE x counter\n# TYPE x gauge\nx 1\n",        /* TYPE twice */
        "# TYPE x counter\nx{a=\"b\"\"c\"} 1\n",          /* no comma */
        "# TYPE x counter\nx 1",                          /* no final newline */
        "# TYPE x counter\nx_bucket{le=\"1\"} 1\n",       /* suffix of a non-histogram */
        "# TYPE x counter\n\nx 1\n",                      /* empty line */
        "# TYPE x counter\nx{1a=\"b\"} 1\n",              /* bad label name */
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        char *fault = check_exposition(bad[i], NULL);
        ck_assert_msg(fault != NULL, "accepted: %s", bad[i]);
        free(fault);
    }
    size_t n = 0;
    char *fault =
        check_exposition("# HELP x a b\n# TYPE x histogram\nx_bucket{le=\"+Inf\"} 1\n"
                         "x_sum 0.5\nx_count 1\n# TYPE y gauge\ny{a=\"\\\"\\\\\\n\",b=\"\"} -2\n",
                         &n);
    ck_assert_msg(fault == NULL, "%s", fault ? fault : "");
    ck_assert_uint_eq(n, 4);
}
END_TEST

/* ---- Bounds ----------------------------------------------------------- */

START_TEST(test_label_sets_bounded)
{
    char route[64];
    for (int i = 0; i < 10005; i++) {
        snprintf(route, sizeof(route), "GET /r%05d", i);
        lg_metrics_request(route, 200, 10);
    }
    /* Sets that exist keep counting under their own labels. */
    lg_metrics_request("GET /r00000", 200, 10);
    /* A new set past the bound keeps its status. */
    lg_metrics_request("GET /new", 404, 10);

    char *t = render(NULL);
    ck_assert_uint_eq(lines_with(t, "lambdagate_requests_total{route=\"GET /r"), 10000);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"GET /r00000\",status=\"200\"}"),
                     2);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"GET /r09999\",status=\"200\"}"),
                     1);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"GET /r10000\",status=\"200\"}"),
                     -1);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"other\",status=\"200\"}"), 5);
    ck_assert_int_eq(value_of(t, "lambdagate_requests_total{route=\"other\",status=\"404\"}"), 1);
    ck_assert_uint_eq(lines_with(t, "lambdagate_requests_total{"), 10002);
    ck_assert_int_eq(value_of(t, "lambdagate_request_duration_seconds_count"), 10007);
    size_t samples = 0;
    char *fault = check_exposition(t, &samples);
    ck_assert_msg(fault == NULL, "%s", fault ? fault : "");
    free(t);
}
END_TEST

START_TEST(test_overflow_sets_bounded)
{
    char name[64];
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof(name), "f%05d", i);
        lg_metrics_invocation(name, "ok");
    }
    /* The "other" sets are bounded too (1000), then one last set. */
    for (int i = 0; i < 1003; i++) {
        snprintf(name, sizeof(name), "o%04d", i);
        lg_metrics_invocation("g", name);
    }
    lg_metrics_invocation("h", "ok");

    char *t = render(NULL);
    ck_assert_uint_eq(lines_with(t, "lambdagate_lambda_invocations_total{function=\"f"), 10000);
    ck_assert_uint_eq(lines_with(t, "lambdagate_lambda_invocations_total{function=\"other\""),
                      1001);
    ck_assert_int_eq(
        value_of(t, "lambdagate_lambda_invocations_total{function=\"other\",outcome=\"o0999\"}"),
        1);
    ck_assert_int_eq(
        value_of(t, "lambdagate_lambda_invocations_total{function=\"other\",outcome=\"o1000\"}"),
        -1);
    ck_assert_int_eq(
        value_of(t, "lambdagate_lambda_invocations_total{function=\"other\",outcome=\"other\"}"),
        4);
    ck_assert_uint_eq(lines_with(t, "lambdagate_lambda_invocations_total{"), 11001);
    assert_parses(t);
    free(t);
}
END_TEST

START_TEST(test_render_bounded)
{
    lg_metrics_request("GET /hello", 200, 10);
    struct lg_buf b;
    lg_buf_init(&b, 100);
    ck_assert_int_eq(lg_metrics_render(NULL, &b), -1);
    ck_assert_uint_le(b.len, 100);
    lg_buf_free(&b);

    /* The whole text fits a bound just as large as it. */
    char *t = render(NULL);
    lg_buf_init(&b, strlen(t));
    ck_assert_int_eq(lg_metrics_render(NULL, &b), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), t);
    lg_buf_free(&b);
    lg_buf_init(&b, strlen(t) - 1);
    ck_assert_int_eq(lg_metrics_render(NULL, &b), -1);
    lg_buf_free(&b);
    free(t);
}
END_TEST

/* ---- Concurrency ------------------------------------------------------ */

#define CONC_THREADS    4
#define CONC_ITERATIONS 48000 /* a multiple of 8 routes x 3 statuses */

static const char *const conc_routes[] = {"GET /a", "GET /b", "GET /c", "GET /d",
                                          "GET /e", "GET /f", "GET /g", "GET /h"};
static const int conc_statuses[] = {200, 404, 502};
static pthread_barrier_t conc_start;

static void *conc_worker(void *arg)
{
    /* All threads at once, so that they really meet on the entries. */
    pthread_barrier_wait(&conc_start);
    for (int i = 0; i < CONC_ITERATIONS; i++) {
        /* Every thread adds the same new label sets at the same time. */
        lg_metrics_request(conc_routes[i % 8], conc_statuses[(i / 8) % 3], i % 2000);
        lg_metrics_invocation(conc_routes[i % 8] + 4, (i / 8) % 2 ? "ok" : "timeout");
    }
    return NULL;
}

START_TEST(test_concurrent_updates_sum_exactly)
{
    pthread_t th[CONC_THREADS];
    ck_assert_int_eq(pthread_barrier_init(&conc_start, NULL, CONC_THREADS), 0);
    for (int i = 0; i < CONC_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, conc_worker, NULL), 0);
    /* Scrapes while the counters move: the lock-free readers must never
     * see a half-made entry (ASan would catch a torn one). */
    int scrapes = 0;
    for (; scrapes < 20; scrapes++) {
        char *t = render(NULL);
        char *fault = check_exposition(t, NULL);
        free(t);
        if (fault != NULL) {
            ck_abort_msg("%s", fault);
        }
    }
    for (int i = 0; i < CONC_THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);

    char *t = render(NULL);
    long long want = (long long)CONC_THREADS * CONC_ITERATIONS / 24;
    char series[128];
    for (size_t r = 0; r < 8; r++)
        for (size_t s = 0; s < 3; s++) {
            snprintf(series, sizeof(series),
                     "lambdagate_requests_total{route=\"%s\",status=\"%d\"}", conc_routes[r],
                     conc_statuses[s]);
            ck_assert_msg(value_of(t, series) == want, "%s = %lld, want %lld", series,
                          value_of(t, series), want);
        }
    ck_assert_uint_eq(lines_with(t, "lambdagate_requests_total{"), 24);
    for (size_t r = 0; r < 8; r++) {
        snprintf(series, sizeof(series),
                 "lambdagate_lambda_invocations_total{function=\"%s\",outcome=\"ok\"}",
                 conc_routes[r] + 4);
        ck_assert_int_eq(value_of(t, series), (long long)CONC_THREADS * CONC_ITERATIONS / 16);
    }
    ck_assert_int_eq(value_of(t, "lambdagate_request_duration_seconds_count"),
                     (long long)CONC_THREADS * CONC_ITERATIONS);
    /* sum of i % 2000 over 48000 iterations = 24 * (0 + ... + 1999) us per thread */
    long long sum_us = (long long)CONC_THREADS * 24 * (1999LL * 2000 / 2);
    char line[96];
    snprintf(line, sizeof(line), "lambdagate_request_duration_seconds_sum %lld.%06lld",
             sum_us / 1000000, sum_us % 1000000);
    ck_assert_msg(has_line(t, line), "%s not in\n%s", line, t);
    free(t);
}
END_TEST

/* ---- The admin listener ----------------------------------------------- */

struct admin_fixture {
    struct event_base *base;
    struct lg_admin *admin;
    struct lg_conf_address addr;
    pthread_t loop;
    int family;
    int port;
    atomic_llong gauge;
};

static int64_t fixture_gauge(void *arg)
{
    struct admin_fixture *f = arg;
    return atomic_load(&f->gauge);
}

static void *fixture_loop(void *arg)
{
    struct admin_fixture *f = arg;
    event_base_dispatch(f->base);
    return NULL;
}

/* A port that was free a moment ago on the loopback of family. */
static int free_port(int family)
{
    int fd = socket(family, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    close(fd);
    return ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                    : ((struct sockaddr_in *)&ss)->sin_port);
}

/* An admin listener on the loopback of family, served by its own thread
 * (standing in for the control loop) while the test is the client. With
 * gauge, lambdagate_connections reads f->gauge (42 at first). */
static void admin_start(struct admin_fixture *f, int family, bool gauge)
{
    memset(f, 0, sizeof(*f));
    f->family = family;
    f->port = free_port(family);
    ck_assert_int_gt(f->port, 0);
    char text[64], err[LG_ERR_LEN];
    snprintf(text, sizeof(text), family == AF_INET6 ? "[::1]:%d" : "127.0.0.1:%d", f->port);
    ck_assert_int_eq(lg_conf_parse_address(text, &f->addr, err, sizeof(err)), 0);
    f->base = event_base_new();
    ck_assert_ptr_nonnull(f->base);
    atomic_init(&f->gauge, 42);
    f->admin = lg_admin_new(f->base, &f->addr, gauge ? fixture_gauge : NULL, f, err, sizeof(err));
    ck_assert_msg(f->admin != NULL, "%s", err);
    ck_assert_int_eq(pthread_create(&f->loop, NULL, fixture_loop, f), 0);
}

static void admin_stop(struct admin_fixture *f)
{
    /* loopexit, not loopbreak: it also stops a loop that has not begun
     * yet (loopbreak's flag is cleared when the loop starts). */
    event_base_loopexit(f->base, NULL);
    ck_assert_int_eq(pthread_join(f->loop, NULL), 0);
    lg_admin_free(f->admin);
    event_base_free(f->base);
    free(f->addr.text);
}

static int client_connect(const struct admin_fixture *f)
{
    int fd = socket(f->family, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_int_eq(connect(fd, (const struct sockaddr *)&f->addr.sa, f->addr.salen), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        ck_assert_int_gt(n, 0);
        data += n;
        len -= (size_t)n;
    }
}

struct response {
    int status;
    char head[4096]; /* status line and headers, NUL-terminated */
    char *body;      /* NUL-terminated; caller frees */
    size_t body_len;
    bool closed; /* the server closed the connection after it */
};

/* Bytes read but not yet consumed, per connection (one at a time). */
static char pending[1 << 16];
static size_t npending;

/* Fill pending with at least want bytes; false at EOF (or timeout). */
static bool fill(int fd, size_t want)
{
    while (npending < want) {
        ck_assert_uint_lt(npending, sizeof(pending) - 1);
        ssize_t n = recv(fd, pending + npending, sizeof(pending) - 1 - npending, 0);
        if (n <= 0)
            return false;
        npending += (size_t)n;
    }
    return true;
}

/* Read one answer from fd. head_only: the request was a HEAD (no body
 * whatever Content-Length says). */
static void read_response(int fd, bool head_only, struct response *r)
{
    memset(r, 0, sizeof(*r));
    char *end;
    for (;;) {
        pending[npending] = '\0';
        if ((end = strstr(pending, "\r\n\r\n")) != NULL)
            break;
        ck_assert_msg(fill(fd, npending + 1), "connection closed before a whole head: %s", pending);
    }
    size_t head_len = (size_t)(end - pending) + 4;
    ck_assert_uint_lt(head_len, sizeof(r->head));
    memcpy(r->head, pending, head_len);
    r->head[head_len] = '\0';
    ck_assert_int_eq(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    long long len = 0;
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl != NULL)
        len = strtoll(cl + 18, NULL, 10);
    if (head_only)
        len = 0;
    ck_assert_int_ge(len, 0);
    memmove(pending, pending + head_len, npending - head_len);
    npending -= head_len;
    size_t blen = (size_t)len;
    r->body = malloc(blen + 1);
    size_t got = 0;
    while (got < blen) {
        if (npending == 0)
            ck_assert_msg(fill(fd, 1), "connection closed in the body");
        size_t take = npending < blen - got ? npending : blen - got;
        memcpy(r->body + got, pending, take);
        memmove(pending, pending + take, npending - take);
        npending -= take;
        got += take;
    }
    r->body[blen] = '\0';
    r->body_len = blen;
}

/* The value of header name in r, or NULL; in a static buffer. */
static const char *header(const struct response *r, const char *name)
{
    static char value[256];
    char key[96];
    snprintf(key, sizeof(key), "\r\n%s: ", name);
    const char *p = strcasestr(r->head, key);
    if (p == NULL)
        return NULL;
    p += strlen(key);
    size_t n = strcspn(p, "\r");
    snprintf(value, sizeof(value), "%.*s", (int)n, p);
    return value;
}

/* Send request on fd and read its answer. */
static void exchange(int fd, const char *request, struct response *r)
{
    send_all(fd, request, strlen(request));
    read_response(fd, strncmp(request, "HEAD ", 5) == 0, r);
}

/* One request on a new connection, closed afterwards. */
static void fetch(const struct admin_fixture *f, const char *method, const char *target,
                  struct response *r)
{
    int fd = client_connect(f);
    npending = 0;
    char req[512];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
             method, target);
    exchange(fd, req, r);
    close(fd);
}

/* True when the server closes fd (EOF) within the receive timeout. */
static bool closed_by_server(int fd)
{
    char c;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, 0);
        if (n == 0)
            return true;
        if (n < 0)
            return errno == ECONNRESET;
    }
}

START_TEST(test_admin_healthz_and_draining)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    int fd = client_connect(&f);
    npending = 0;
    struct response r;
    const char *get = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    exchange(fd, get, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    free(r.body);

    /* The same keep-alive connection sees the drain begin. */
    lg_admin_set_draining(f.admin, true);
    exchange(fd, get, &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    ck_assert_str_eq(r.body, "{\"status\":\"draining\"}");
    free(r.body);
    exchange(fd, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_line(r.body, "lambdagate_draining 1"));
    free(r.body);

    /* A query string does not change the path. */
    exchange(fd, "GET /healthz?probe=lb HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 503);
    free(r.body);

    lg_admin_set_draining(f.admin, false);
    exchange(fd, get, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    free(r.body);
    lg_admin_set_draining(NULL, true); /* accepted, nothing happens */
    close(fd);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_metrics)
{
    lg_metrics_request("GET /hello", 200, 1500);
    lg_metrics_request("GET /hello", 200, 2500);
    lg_metrics_invocation("hello", "ok");
    lg_metrics_refused(LG_REASON_GLOBAL);

    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    struct response r;
    fetch(&f, "GET", "/metrics?name[]=lambdagate_connections", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_uint_eq(strlen(r.body), r.body_len);
    assert_parses(r.body);
    ck_assert(has_line(r.body, "lambdagate_requests_total{route=\"GET /hello\",status=\"200\"} 2"));
    ck_assert(has_line(r.body, "lambdagate_request_duration_seconds_count 2"));
    ck_assert(has_line(r.body, "lambdagate_request_duration_seconds_sum 0.004000"));
    ck_assert(has_line(r.body,
                       "lambdagate_lambda_invocations_total{function=\"hello\",outcome=\"ok\"} 1"));
    ck_assert(has_line(r.body, "lambdagate_throttled_total{reason=\"global\"} 1"));
    /* From the gauge callback, read at each scrape. */
    ck_assert(has_line(r.body, "lambdagate_connections 42"));
    ck_assert(has_line(r.body, "lambdagate_draining 0"));
    ck_assert(has_line(r.body, "lambdagate_redis_errors_total 0"));
    free(r.body);

    atomic_store(&f.gauge, 7);
    lg_metrics_request("", 404, 10);
    fetch(&f, "GET", "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_line(r.body, "lambdagate_connections 7"));
    ck_assert(has_line(r.body, "lambdagate_requests_total{route=\"none\",status=\"404\"} 1"));
    free(r.body);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_paths_and_methods)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    struct response r;
    static const char *const missing[] = {"/nope",     "/",        "/healthz/",
                                          "/healthzx", "/Metrics", "/metrics/x"};
    for (size_t i = 0; i < LG_ARRAY_LEN(missing); i++) {
        fetch(&f, "GET", missing[i], &r);
        ck_assert_msg(r.status == 404, "%s: %d", missing[i], r.status);
        ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
        ck_assert_str_eq(r.body, "{\"message\":\"Not Found\"}");
        free(r.body);
    }
    /* A known path with another method: 405 with Allow; unknown paths
     * stay 404 whatever the method, as for the public routes. */
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < LG_ARRAY_LEN(methods); i++) {
        fetch(&f, methods[i], i % 2 ? "/metrics" : "/healthz", &r);
        ck_assert_msg(r.status == 405, "%s: %d", methods[i], r.status);
        ck_assert_str_eq(header(&r, "Allow"), "GET, HEAD");
        ck_assert_str_eq(r.body, "{\"message\":\"Method Not Allowed\"}");
        free(r.body);
    }
    fetch(&f, "POST", "/nope", &r);
    ck_assert_int_eq(r.status, 404);
    free(r.body);
    /* An absolute-form target names the same path. */
    fetch(&f, "GET", "http://localhost/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    free(r.body);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_head_keeps_framing)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    int fd = client_connect(&f);
    npending = 0;
    /* Pipelined on one connection: a HEAD answer that carried a body
     * would be read as the start of the next answer. */
    const char *reqs = "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, reqs, strlen(reqs));
    struct response r;
    read_response(fd, true, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Length"), "15");
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    free(r.body);
    read_response(fd, true, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_int_gt(atoi(header(&r, "Content-Length")), 1000);
    free(r.body);
    read_response(fd, false, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    free(r.body);
    close(fd);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_request_bounds)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    struct response r;

    /* A body: refused by evhttp with 413, connection closed. */
    int fd = client_connect(&f);
    npending = 0;
    exchange(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde", &r);
    ck_assert_int_eq(r.status, 413);
    ck_assert(closed_by_server(fd));
    free(r.body);
    close(fd);

    /* A head over 8 KiB: evhttp 2.1.12 answers 400 and closes. */
    char big[9300];
    int n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 9000);
    memcpy(big + n + 9000, "\r\n\r\n", 5);
    fd = client_connect(&f);
    npending = 0;
    exchange(fd, big, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert(closed_by_server(fd));
    free(r.body);
    close(fd);

    /* A head just under the bound is served. */
    n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 7000);
    memcpy(big + n + 7000, "\r\n\r\n", 5);
    fd = client_connect(&f);
    npending = 0;
    exchange(fd, big, &r);
    ck_assert_int_eq(r.status, 200);
    free(r.body);
    close(fd);

    /* A request that stops half way: closed after the 5 s timeout. */
    fd = client_connect(&f);
    send_all(fd, "GET /heal", 9);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert(closed_by_server(fd));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ck_assert_msg(took >= 4.5 && took < 8.0, "closed after %.2f s", took);
    close(fd);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_ipv6)
{
    if (free_port(AF_INET6) < 0)
        return; /* no IPv6 loopback here */
    struct admin_fixture f;
    admin_start(&f, AF_INET6, true);
    struct response r;
    fetch(&f, "GET", "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    free(r.body);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_bind_error)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, true);
    char err[LG_ERR_LEN] = "";
    struct lg_admin *again = lg_admin_new(f.base, &f.addr, NULL, NULL, err, sizeof(err));
    ck_assert_ptr_null(again);
    char want[128];
    snprintf(want, sizeof(want), "cannot listen on admin address 127.0.0.1:%d: ", f.port);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
    lg_admin_free(NULL);
    admin_stop(&f);
}
END_TEST

START_TEST(test_admin_without_gauge)
{
    struct admin_fixture f;
    admin_start(&f, AF_INET, false);
    struct response r;
    fetch(&f, "GET", "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_line(r.body, "lambdagate_connections 0"));
    free(r.body);
    admin_stop(&f);
}
END_TEST

int main(void)
{
    /* The admin tests serve from a thread and stop it from another. */
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "evthread_use_pthreads failed\n");
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("metrics");

    TCase *tc = tcase_create("counters");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_requests_counted_by_route_and_status);
    tcase_add_test(tc, test_invocations_counted);
    tcase_add_test(tc, test_label_values_escaped);
    tcase_add_test(tc, test_histogram_buckets);
    tcase_add_test(tc, test_histogram_empty);
    tcase_add_test(tc, test_fixed_families_always_present);
    tcase_add_test(tc, test_checker_rejects_bad_text);
    tcase_add_test(tc, test_render_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("bounds");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_label_sets_bounded);
    tcase_add_test(tc, test_overflow_sets_bounded);
    tcase_add_test(tc, test_concurrent_updates_sum_exactly);
    suite_add_tcase(s, tc);

    tc = tcase_create("admin");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_admin_healthz_and_draining);
    tcase_add_test(tc, test_admin_metrics);
    tcase_add_test(tc, test_admin_paths_and_methods);
    tcase_add_test(tc, test_admin_head_keeps_framing);
    tcase_add_test(tc, test_admin_request_bounds);
    tcase_add_test(tc, test_admin_ipv6);
    tcase_add_test(tc, test_admin_bind_error);
    tcase_add_test(tc, test_admin_without_gauge);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
