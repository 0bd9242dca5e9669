/* metrics.h - process-wide counters for the admin listener's /metrics. */
#ifndef LG_METRICS_H
#define LG_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "lambdagate/lambdagate.h"

/* Why a request or connection was refused before reaching Lambda
 * (lambdagate_throttled_total{reason}). */
enum lg_metric_reason {
    LG_REASON_IDENTITY = 0,       /* the caller's bucket (route throttle or default) */
    LG_REASON_API_KEY,            /* an API key plan's bucket */
    LG_REASON_GLOBAL,             /* throttle.global */
    LG_REASON_QUOTA,              /* an API key plan's quota */
    LG_REASON_PER_IP,             /* limits.per_ip */
    LG_REASON_DENY,               /* limits.allow / limits.deny */
    LG_REASON_MAX_INFLIGHT,       /* limits.max_inflight */
    LG_REASON_MAX_CONNECTIONS,    /* limits.max_connections, at accept */
    LG_REASON_MAX_CONNECTIONS_IP, /* limits.max_connections_per_ip, at accept */
    LG_REASON_LAMBDA,             /* Lambda itself answered 429 */
    LG_REASON_COUNT,
};

/* Count one refusal. Thread-safe (relaxed atomics). */
void lg_metrics_refused(enum lg_metric_reason reason);
uint64_t lg_metrics_refused_count(enum lg_metric_reason reason);
/* The label value: "identity", "api_key", "global", "quota", "per_ip",
 * "deny", "max_inflight", "max_connections", "max_connections_per_ip",
 * "lambda". */
const char *lg_metrics_reason_name(enum lg_metric_reason reason);

/* Answers of cached routes by X-Cache (lambdagate_cache_requests_total{result}). */
enum lg_metric_cache {
    LG_CACHE_RESULT_HIT = 0,
    LG_CACHE_RESULT_MISS,
    LG_CACHE_RESULT_BYPASS,
    LG_CACHE_RESULT_STALE,
    LG_CACHE_RESULT_COUNT,
};
void lg_metrics_cache(enum lg_metric_cache result);
uint64_t lg_metrics_cache_count(enum lg_metric_cache result);
/* "hit", "miss", "bypass", "stale". */
const char *lg_metrics_cache_name(enum lg_metric_cache result);

/* Throttle decisions that fell back to the local buckets because Redis was
 * down or slow. */
void lg_metrics_redis_fallback(void);
uint64_t lg_metrics_redis_fallbacks(void);

/* ---------- Labelled counters and the latency histogram ---------- */

/* A finished request: lambdagate_requests_total{route,status} and
 * lambdagate_request_duration_seconds (buckets from 0.5 ms to 30 s).
 * route is the route key ("GET /users/{id}"), or "" when no route
 * matched (rendered as route="none"). Thread-safe; cheap (one sharded
 * lock, taken only to add a new label set the first time). A status
 * outside 100-599 is labelled "other". Bounded: past 10,000 label sets
 * per family, new ones count as route="other" (function="other"), see
 * metrics.c. */
void lg_metrics_request(const char *route, int status, int64_t duration_us);
/* A finished Lambda invocation:
 * lambdagate_lambda_invocations_total{function,outcome}; outcome is
 * lg_lambda_outcome_name()'s text ("ok", "function_error", ...). */
void lg_metrics_invocation(const char *function, const char *outcome);

/* Gauges and counters that other modules own, read at render time. */
struct lg_metrics_sources {
    int64_t connections;   /* lambdagate_connections: open client connections */
    uint64_t redis_errors; /* lambdagate_redis_errors_total */
    bool draining;         /* lambdagate_draining 0/1 */
};

struct lg_buf;
/* The Prometheus text exposition (format 0.0.4) of every metric: HELP and
 * TYPE lines, label values escaped (backslash, quote, newline), counters
 * summed over the workers. -1 when out grows past its bound. */
int lg_metrics_render(const struct lg_metrics_sources *src, struct lg_buf *out) LG_WUR;

#endif
