/* metrics.c - process-wide counters for the admin listener's /metrics.
 *
 * Plain relaxed atomics: a counter is read for a scrape, never used to
 * decide anything, so no ordering is needed. */
#include "config.h"

#include <stdatomic.h>

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
