/* metrics.h - process-wide counters for the admin listener's /metrics. */
#ifndef LG_METRICS_H
#define LG_METRICS_H

#include <stdint.h>

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

#endif
