/* metrics.c - process-wide counters, the latency histogram and their Prometheus text.
 *
 * Plain relaxed atomics: a counter is read for a scrape, never used to
 * decide anything, so no ordering is needed.
 *
 * Labelled counters (requests by route and status, invocations by function
 * and outcome) live in a sharded hash of label set -> counter. Label sets
 * are only ever added, never removed (a Prometheus counter must not
 * vanish), so a lookup walks the chains without a lock: an entry is
 * complete before it is published with a release store, and its chain
 * link never changes afterwards. The shard's mutex is taken only to add a
 * label set the first time it is seen. Entries live until the process
 * exits (reachable from the static tables, so LeakSanitizer is quiet).
 *
 * Bounds, so that a config with very many routes or functions (or a
 * reload loop that keeps renaming them) cannot grow memory without end:
 *   - at most METRIC_SETS_MAX label sets per family keep their own first
 *     label; past that a new set is counted as route="other" (or
 *     function="other") with its second label kept;
 *   - at most METRIC_OVERFLOW_MAX such "other" sets more; past that,
 *     everything new goes to the single set {"other","other"}.
 * Statuses are labelled as numbers from 100 to 599 only; anything else
 * (0 for a connection that closed before an answer, garbage) is
 * status="other", so the status label alone cannot make more than 501
 * sets. "none" (no route matched) and "other" cannot collide with a route
 * key, which always holds a method, a space and a path; a function really
 * named "other" would share its line with the overflow. */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/buf.h"
#include "lambdagate/lambdagate.h"
#include "lambdagate/metrics.h"

static atomic_uint_fast64_t refused[LG_REASON_COUNT];
static atomic_uint_fast64_t redis_fallbacks;
static atomic_uint_fast64_t cache_results[LG_CACHE_RESULT_COUNT];

static const char *const cache_names[LG_CACHE_RESULT_COUNT] = {"hit", "miss", "bypass", "stale"};

void lg_metrics_cache(enum lg_metric_cache result)
{
    if ((unsigned)result < LG_CACHE_RESULT_COUNT)
        atomic_fetch_add_explicit(&cache_results[result], 1, memory_order_relaxed);
}

uint64_t lg_metrics_cache_count(enum lg_metric_cache result)
{
    if ((unsigned)result >= LG_CACHE_RESULT_COUNT)
        return 0;
    return atomic_load_explicit(&cache_results[result], memory_order_relaxed);
}

const char *lg_metrics_cache_name(enum lg_metric_cache result)
{
    return (unsigned)result < LG_CACHE_RESULT_COUNT ? cache_names[result] : "unknown";
}

static const char *const reason_names[LG_REASON_COUNT] = {
    [LG_REASON_IDENTITY] = "identity",
    [LG_REASON_API_KEY] = "api_key",
    [LG_REASON_GLOBAL] = "global",
    [LG_REASON_QUOTA] = "quota",
    [LG_REASON_PER_IP] = "per_ip",
    [LG_REASON_DENY] = "deny",
    [LG_REASON_MAX_INFLIGHT] = "max_inflight",
    [LG_REASON_MAX_CONNECTIONS] = "max_connections",
    [LG_REASON_MAX_CONNECTIONS_IP] = "max_connections_per_ip",
    [LG_REASON_LAMBDA] = "lambda",
};

void lg_metrics_refused(enum lg_metric_reason reason)
{
    if ((unsigned)reason < LG_REASON_COUNT)
        atomic_fetch_add_explicit(&refused[reason], 1, memory_order_relaxed);
}

uint64_t lg_metrics_refused_count(enum lg_metric_reason reason)
{
    if ((unsigned)reason >= LG_REASON_COUNT)
        return 0;
    return atomic_load_explicit(&refused[reason], memory_order_relaxed);
}

const char *lg_metrics_reason_name(enum lg_metric_reason reason)
{
    return (unsigned)reason < LG_REASON_COUNT ? reason_names[reason] : "unknown";
}

void lg_metrics_redis_fallback(void)
{
    atomic_fetch_add_explicit(&redis_fallbacks, 1, memory_order_relaxed);
}

uint64_t lg_metrics_redis_fallbacks(void)
{
    return atomic_load_explicit(&redis_fallbacks, memory_order_relaxed);
}

/* ---- Labelled counters ------------------------------------------------ */

#define METRIC_SHARDS       16
#define METRIC_BUCKETS      256 /* per shard: chains of 2-3 at the bound */
#define METRIC_SETS_MAX     10000
#define METRIC_OVERFLOW_MAX 1000
#define METRIC_OTHER        "other"

/* One label set of a two-label family and its count. a and b point into
 * the same allocation; everything but count is immutable once published. */
struct label_set {
    struct label_set *next;
    atomic_uint_fast64_t count;
    uint64_t hash;
    const char *a;
    const char *b;
};

struct metric_shard {
    pthread_mutex_t lock; /* serialises additions; lookups take no lock */
    _Atomic(struct label_set *) heads[METRIC_BUCKETS];
};

struct metric_family {
    atomic_size_t sets; /* label sets added, overflow ones included */
    struct metric_shard shards[METRIC_SHARDS];
};

static struct metric_family requests;
static struct metric_family invocations;
static pthread_once_t families_once = PTHREAD_ONCE_INIT;

static void families_init(void)
{
    for (size_t i = 0; i < METRIC_SHARDS; i++) {
        pthread_mutex_init(&requests.shards[i].lock, NULL);
        pthread_mutex_init(&invocations.shards[i].lock, NULL);
    }
}

/* FNV-1a over both labels with a separator byte: cheap, and the labels
 * come from the config and the code, never from a client, so a flooding
 * attack on the hash is not a concern. */
static uint64_t labels_hash(const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        h = (h ^ *p) * 0x100000001b3u;
    h = (h ^ 0xffu) * 0x100000001b3u; /* 0xff never occurs in UTF-8 */
    for (const unsigned char *p = (const unsigned char *)b; *p; p++)
        h = (h ^ *p) * 0x100000001b3u;
    return h;
}

static _Atomic(struct label_set *) *bucket_of(struct metric_family *f, uint64_t hash)
{
    struct metric_shard *s = &f->shards[hash % METRIC_SHARDS];
    return &s->heads[(hash / METRIC_SHARDS) % METRIC_BUCKETS];
}

/* The published entry for (a, b), or NULL. Lock-free. */
static struct label_set *family_find(struct metric_family *f, uint64_t hash, const char *a,
                                     const char *b)
{
    struct label_set *e = atomic_load_explicit(bucket_of(f, hash), memory_order_acquire);
    for (; e; e = e->next)
        if (e->hash == hash && strcmp(e->a, a) == 0 && strcmp(e->b, b) == 0)
            return e;
    return NULL;
}

/* The entry for (a, b), added when new and the family holds fewer than
 * limit sets. NULL when over the limit (or out of memory). */
static struct label_set *family_add(struct metric_family *f, const char *a, const char *b,
                                    size_t limit)
{
    uint64_t hash = labels_hash(a, b);
    struct label_set *e = family_find(f, hash, a, b);
    if (e != NULL || atomic_load_explicit(&f->sets, memory_order_relaxed) >= limit)
        return e;

    pthread_once(&families_once, families_init);
    struct metric_shard *s = &f->shards[hash % METRIC_SHARDS];
    _Atomic(struct label_set *) *head = bucket_of(f, hash);
    pthread_mutex_lock(&s->lock);
    /* Another thread may have added it between the lookup and the lock. */
    e = family_find(f, hash, a, b);
    if (e == NULL) {
        /* Reserve a place first: inserts in other shards run at the same
         * time, and the bound must hold exactly. */
        if (atomic_fetch_add_explicit(&f->sets, 1, memory_order_relaxed) >= limit) {
            atomic_fetch_sub_explicit(&f->sets, 1, memory_order_relaxed);
        } else {
            size_t alen = strlen(a) + 1, blen = strlen(b) + 1;
            e = malloc(sizeof(*e) + alen + blen);
            if (e == NULL) {
                atomic_fetch_sub_explicit(&f->sets, 1, memory_order_relaxed);
            } else {
                char *text = (char *)(e + 1);
                memcpy(text, a, alen);
                memcpy(text + alen, b, blen);
                e->a = text;
                e->b = text + alen;
                e->hash = hash;
                atomic_init(&e->count, 0);
                e->next = atomic_load_explicit(head, memory_order_relaxed);
                atomic_store_explicit(head, e, memory_order_release);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

/* Count one event of label set (a, b), falling back to the overflow sets
 * described at the top of the file. */
static void family_count(struct metric_family *f, const char *a, const char *b)
{
    struct label_set *e = family_add(f, a, b, METRIC_SETS_MAX);
    if (e == NULL)
        e = family_add(f, METRIC_OTHER, b, METRIC_SETS_MAX + METRIC_OVERFLOW_MAX);
    if (e == NULL)
        e = family_add(f, METRIC_OTHER, METRIC_OTHER, SIZE_MAX);
    if (e != NULL) /* NULL only when memory ran out: the event is lost */
        atomic_fetch_add_explicit(&e->count, 1, memory_order_relaxed);
}

/* ---- The latency histogram -------------------------------------------- */

/* Upper bounds in microseconds and as rendered (le); the last bucket is
 * +Inf. From 0.5 ms (a cached answer) to 30 s (API Gateway's limit). */
static const int64_t hist_bounds_us[] = {500,     1000,    2500,    5000,     10000,
                                         25000,   50000,   100000,  250000,   500000,
                                         1000000, 2500000, 5000000, 10000000, 30000000};
static const char *const hist_le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                      "0.05",   "0.1",   "0.25",   "0.5",   "1",    "2.5",
                                      "5",      "10",    "30",     "+Inf"};
#define HIST_BUCKETS (LG_ARRAY_LEN(hist_bounds_us) + 1)
_Static_assert(LG_ARRAY_LEN(hist_le) == HIST_BUCKETS, "one le text per bucket");

/* Per bucket, not cumulative: one atomic add per observation; the render
 * accumulates. The count is the sum of the buckets, so _count always
 * equals the +Inf bucket even while requests finish during a scrape. */
static atomic_uint_fast64_t hist_buckets[HIST_BUCKETS];
static atomic_uint_fast64_t hist_sum_us;

static void hist_observe(int64_t duration_us)
{
    if (duration_us < 0)
        duration_us = 0;
    size_t i = 0;
    while (i < LG_ARRAY_LEN(hist_bounds_us) && duration_us > hist_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&hist_buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_sum_us, (uint64_t)duration_us, memory_order_relaxed);
}

void lg_metrics_request(const char *route, int status, int64_t duration_us)
{
    /* By hand: snprintf would be half the cost of the whole update. */
    char status_text[8] = METRIC_OTHER;
    if (status >= 100 && status <= 599) {
        status_text[0] = (char)('0' + status / 100);
        status_text[1] = (char)('0' + status / 10 % 10);
        status_text[2] = (char)('0' + status % 10);
        status_text[3] = '\0';
    }
    family_count(&requests, route && *route ? route : "none", status_text);
    hist_observe(duration_us);
}

void lg_metrics_invocation(const char *function, const char *outcome)
{
    family_count(&invocations, function && *function ? function : "none",
                 outcome && *outcome ? outcome : "unknown");
}

/* ---- Rendering -------------------------------------------------------- */

/* A label value escaped as the text format wants: backslash, double quote
 * and line feed; everything else (UTF-8 included) as is. */
static int put_label_value(struct lg_buf *out, const char *v)
{
    const char *run = v;
    for (const char *p = v;; p++) {
        char c = *p;
        if (c != '\0' && c != '\\' && c != '"' && c != '\n')
            continue;
        if (lg_buf_append(out, run, (size_t)(p - run)) != 0)
            return -1;
        if (c == '\0')
            return 0;
        const char *esc = c == '\\' ? "\\\\" : c == '"' ? "\\\"" : "\\n";
        if (lg_buf_append(out, esc, 2) != 0)
            return -1;
        run = p + 1;
    }
}

static int put_header(struct lg_buf *out, const char *name, const char *type, const char *help)
{
    return lg_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int by_labels(const void *x, const void *y)
{
    const struct label_set *a = *(const struct label_set *const *)x;
    const struct label_set *b = *(const struct label_set *const *)y;
    int c = strcmp(a->a, b->a);
    return c ? c : strcmp(a->b, b->b);
}

/* Every label set of f, sorted so that a scrape reads in a stable order.
 * *n is the count; caller frees the array (not the entries) with free().
 * -1 when out of memory. */
static int family_snapshot(struct metric_family *f, struct label_set ***items, size_t *n)
{
    size_t cap = 64, len = 0;
    struct label_set **v = malloc(cap * sizeof(*v));
    if (v == NULL)
        return -1;
    for (size_t s = 0; s < METRIC_SHARDS; s++) {
        for (size_t b = 0; b < METRIC_BUCKETS; b++) {
            struct label_set *e =
                atomic_load_explicit(&f->shards[s].heads[b], memory_order_acquire);
            for (; e; e = e->next) {
                if (len == cap) {
                    struct label_set **nv = realloc(v, 2 * cap * sizeof(*v));
                    if (nv == NULL) {
                        free(v);
                        return -1;
                    }
                    v = nv;
                    cap *= 2;
                }
                v[len++] = e;
            }
        }
    }
    qsort(v, len, sizeof(*v), by_labels);
    *items = v;
    *n = len;
    return 0;
}

static int put_family(struct lg_buf *out, struct metric_family *f, const char *name,
                      const char *help, const char *label_a, const char *label_b)
{
    struct label_set **v;
    size_t n;
    if (put_header(out, name, "counter", help) != 0 || family_snapshot(f, &v, &n) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t count = atomic_load_explicit(&v[i]->count, memory_order_relaxed);
        if (lg_buf_printf(out, "%s{%s=\"", name, label_a) != 0 ||
            put_label_value(out, v[i]->a) != 0 || lg_buf_printf(out, "\",%s=\"", label_b) != 0 ||
            put_label_value(out, v[i]->b) != 0 ||
            lg_buf_printf(out, "\"} %" PRIu64 "\n", count) != 0) {
            rc = -1;
            break;
        }
    }
    free(v);
    return rc;
}

static int put_histogram(struct lg_buf *out)
{
    const char *name = "lambdagate_request_duration_seconds";
    if (put_header(out, name, "histogram",
                   "Time to answer a request, from its complete header block to its answer.") != 0)
        return -1;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        cumulative += atomic_load_explicit(&hist_buckets[i], memory_order_relaxed);
        if (lg_buf_printf(out, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, hist_le[i],
                          cumulative) != 0)
            return -1;
    }
    /* Seconds from whole microseconds without floating point, so that the
     * text is exact. */
    uint64_t sum_us = atomic_load_explicit(&hist_sum_us, memory_order_relaxed);
    return lg_buf_printf(out, "%s_sum %" PRIu64 ".%06" PRIu64 "\n%s_count %" PRIu64 "\n", name,
                         sum_us / 1000000, sum_us % 1000000, name, cumulative);
}

int lg_metrics_render(const struct lg_metrics_sources *src, struct lg_buf *out)
{
    static const struct lg_metrics_sources none;
    if (src == NULL)
        src = &none;

    if (put_family(out, &requests, "lambdagate_requests_total",
                   "Requests answered, by route key (\"none\" when no route matched) and "
                   "HTTP status.",
                   "route", "status") != 0 ||
        put_histogram(out) != 0 ||
        put_family(out, &invocations, "lambdagate_lambda_invocations_total",
                   "Lambda invocations finished, by function and outcome.", "function",
                   "outcome") != 0)
        return -1;

    if (put_header(out, "lambdagate_throttled_total", "counter",
                   "Requests and connections refused before reaching Lambda, by reason.") != 0)
        return -1;
    for (int r = 0; r < LG_REASON_COUNT; r++)
        if (lg_buf_printf(out, "lambdagate_throttled_total{reason=\"%s\"} %" PRIu64 "\n",
                          reason_names[r], lg_metrics_refused_count((enum lg_metric_reason)r)) != 0)
            return -1;

    if (put_header(out, "lambdagate_cache_requests_total", "counter",
                   "Answers of cached routes, by X-Cache result.") != 0)
        return -1;
    for (int c = 0; c < LG_CACHE_RESULT_COUNT; c++)
        if (lg_buf_printf(out, "lambdagate_cache_requests_total{result=\"%s\"} %" PRIu64 "\n",
                          cache_names[c], lg_metrics_cache_count((enum lg_metric_cache)c)) != 0)
            return -1;

    if (put_header(out, "lambdagate_connections", "gauge", "Open client connections.") != 0 ||
        lg_buf_printf(out, "lambdagate_connections %" PRId64 "\n", src->connections) != 0 ||
        put_header(out, "lambdagate_redis_errors_total", "counter",
                   "Redis commands that failed: down, timed out, broken or an error reply.") != 0 ||
        lg_buf_printf(out, "lambdagate_redis_errors_total %" PRIu64 "\n", src->redis_errors) != 0 ||
        put_header(out, "lambdagate_redis_fallbacks_total", "counter",
                   "Throttle decisions taken by the local buckets because Redis failed.") != 0 ||
        lg_buf_printf(out, "lambdagate_redis_fallbacks_total %" PRIu64 "\n",
                      lg_metrics_redis_fallbacks()) != 0 ||
        put_header(out, "lambdagate_draining", "gauge", "1 once a graceful stop began, else 0.") !=
            0 ||
        lg_buf_printf(out, "lambdagate_draining %d\n", src->draining ? 1 : 0) != 0)
        return -1;
    return 0;
}
