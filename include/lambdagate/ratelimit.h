/* ratelimit.h - token buckets and quotas: the arithmetic, and the local store. */
#ifndef LG_RATELIMIT_H
#define LG_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

/* A token bucket: tokens (fractional) as of updated_us. A bucket that does
 * not exist yet is full. */
struct lg_rl_bucket {
    double tokens;
    int64_t updated_us;
};

/* The figures of one bucket after a decision, for RateLimit-* and
 * Retry-After (CONTRACT section 8): integers; limit = burst; remaining =
 * whole tokens left (0 when refused); reset_s = whole seconds until the
 * next token arrives (0 when the bucket is full), rounded up;
 * retry_after_s = seconds until one token is there, rounded up, >= 1. */
struct lg_rl_result {
    bool allowed;
    int64_t limit;
    int64_t remaining;
    int64_t reset_s;
    int64_t retry_after_s;
};

/* Bring b up to now_us (a clock going backwards adds nothing and moves
 * updated_us to now), capped at burst. */
void lg_rl_bucket_refill(struct lg_rl_bucket *b, const struct lg_conf_rate *rate, int64_t now_us);
/* True when b (refilled) holds at least one whole token. */
bool lg_rl_bucket_has_token(const struct lg_rl_bucket *b);
/* Fill res from b's state (after refill, and after the token was taken when
 * allowed). */
void lg_rl_bucket_result(const struct lg_rl_bucket *b, const struct lg_conf_rate *rate,
                         bool allowed, struct lg_rl_result *res);

/* One bucket a request must pass. key is the bucket's full name (e.g.
 * "id:<route>:<identity>", "route:<route>", "global", "ip:<addr>"), any
 * bytes, at most LG_RL_KEY_MAX. */
#define LG_RL_KEY_MAX 512
/* Most checks one decision takes. */
#define LG_RL_CHECKS_MAX 8
struct lg_rl_check {
    const char *key;
    size_t key_len;
    struct lg_conf_rate rate;
};

/* The in-memory store of an instance, shared by its workers (thread-safe):
 * a sharded hash of buckets and quota counters, each shard under its own
 * mutex. At most max_entries entries; when full, an entry that is idle
 * (a bucket refilled to its burst, a counter of a past period) is dropped
 * first, else the least recently used: a flood of distinct identities
 * cannot grow memory past the bound. */
struct lg_rl_local;
/* Caller frees with lg_rl_local_free() (which accepts NULL). NULL on no
 * memory or no randomness for the hash seed. max_entries 0 counts as 1. */
struct lg_rl_local *lg_rl_local_new(size_t max_entries);
void lg_rl_local_free(struct lg_rl_local *s);
/* Decide checks[0..n) as one: the request passes only when every bucket
 * holds a token, and then one token is taken from each; when any bucket
 * refuses, nothing is taken from any. results[i] is filled for every
 * check, with allowed = the request's decision (so remaining is 0 in every
 * result of a refused request). Returns the index of the first refusing
 * check, or -1 when allowed. n <= LG_RL_CHECKS_MAX. now_us is a monotonic
 * clock. A key listed twice is one bucket: it needs and gives one token,
 * at the first such check's rate. Deny-safe on caller bugs and no memory:
 * n > LG_RL_CHECKS_MAX, a key longer than LG_RL_KEY_MAX, or an entry that
 * cannot be allocated refuses the request (that check's index, or 0 for
 * too large an n, is returned; its result: remaining 0, reset_s and
 * retry_after_s 1). */
int lg_rl_local_decide(struct lg_rl_local *s, const struct lg_rl_check *checks, size_t n,
                       int64_t now_us, struct lg_rl_result *results);
/* A quota: count one request against key for the period [start, end)
 * (seconds since the epoch, UTC) unless limit requests were already
 * counted. res: limit, remaining; when refused, retry_after_s = end - now
 * (>= 1). Returns true when counted (allowed). A later start begins a new
 * period from zero; an earlier one than the key already counts (a clock
 * read just before the boundary) is counted in the newer period. reset_s =
 * seconds until the period ends; retry_after_s when allowed is 1 while
 * requests remain, else end - now. A key longer than LG_RL_KEY_MAX or no
 * memory: refused, retry_after_s 1. */
bool lg_rl_local_quota(struct lg_rl_local *s, const char *key, size_t key_len, int64_t limit,
                       int64_t start, int64_t end, int64_t now, struct lg_rl_result *res);
/* Undo one quota count (a request refused later by a bucket): only for the
 * period start the key counts now, never below zero. */
void lg_rl_local_quota_refund(struct lg_rl_local *s, const char *key, size_t key_len,
                              int64_t start);
/* Entries held now (for tests and metrics). */
size_t lg_rl_local_size(struct lg_rl_local *s);

#endif
