/* throttle.h - the throttling decision of a request: buckets and quotas, local or in Redis. */
#ifndef LG_THROTTLE_H
#define LG_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/apikey.h"
#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"
#include "lambdagate/metrics.h"
#include "lambdagate/ratelimit.h"

struct event_base;
struct lg_redis;

/* Entries the local store of an instance holds (buckets and quota
 * counters of every identity); the least recently used go first. */
#define LG_THROTTLE_LOCAL_ENTRIES 200000

/* Who is asking, and for what. All borrowed for the call. */
struct lg_throttle_request {
    const struct lg_conf *conf;
    const struct lg_conf_route *route;
    /* JWT identity claim, else API key id, else the client's address. */
    const char *identity;
    const struct lg_apikey *api_key; /* NULL without one */
    int64_t now_s;                   /* wall clock, for quota periods */
};

struct lg_throttle_result {
    bool allowed;
    enum lg_metric_reason reason; /* when refused */
    /* RateLimit-* figures of the caller's bucket (or of the global one when
     * the caller has none); has_headers false when no bucket applies. */
    bool has_headers;
    struct lg_rl_result headers;
    int64_t retry_after_s; /* when refused: >= 1 */
    bool fell_back;        /* Redis was not usable: local buckets decided */
};

typedef void (*lg_throttle_cb)(const struct lg_throttle_result *res, void *arg);
struct lg_throttle_call;

/* Decisions sent to one worker's Redis client together: those started in
 * one turn of the worker's event loop go out as one script call (at most
 * 32 to a call), which saves Redis a command and a script run per request.
 * One per worker, on its loop. */
struct lg_throttle_batcher;
struct lg_throttle_batcher *lg_throttle_batcher_new(struct event_base *base);
/* Send the queued decisions now (before their Redis client is replaced). */
void lg_throttle_batcher_flush(struct lg_throttle_batcher *b);
/* Free; queued decisions must have been cancelled. Accepts NULL. */
void lg_throttle_batcher_free(struct lg_throttle_batcher *b);

/* Decide req with the instance's local store, or with Redis when redis
 * is not NULL (throttle.store "redis"; the worker's client and batcher).
 * Local: the result is final at once: returns 0 with *res filled and *call
 * NULL. Redis: returns 1 with *call set, and cb(res, arg) runs later on the
 * worker's loop, within redis.timeout_ms (a Redis that is down, slow or
 * answers nonsense is replaced by the local buckets: fail open). A refused
 * request takes nothing from any bucket or quota. */
int lg_throttle_decide(struct lg_rl_local *local, struct lg_redis *redis,
                       struct lg_throttle_batcher *batcher, const struct lg_throttle_request *req,
                       struct lg_throttle_result *res, lg_throttle_cb cb, void *arg,
                       struct lg_throttle_call **call);
/* Forget a pending decision (its cb will not run). Accepts NULL. */
void lg_throttle_cancel(struct lg_throttle_call *call);

/* limits.per_ip: one token from the client's bucket in the local store.
 * True when allowed; else *retry_after_s is set. */
bool lg_throttle_per_ip(struct lg_rl_local *local, const struct lg_conf *conf, const char *ip,
                        int64_t *retry_after_s);

/* The Lua script of the Redis store (exposed for tests). */
extern const char lg_throttle_script[];

#endif
