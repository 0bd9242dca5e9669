/* test_ratelimit.c - token-bucket arithmetic, the local store's decisions, eviction and quotas. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/ratelimit.h"

/* A monotonic time far from zero, so that going back from it stays positive. */
#define T0       ((int64_t)1000000000000)
#define MS       ((int64_t)1000)
#define SEC      ((int64_t)1000000)
#define NO_INDEX -1

static struct lg_conf_rate rate_of(double rate, int64_t burst)
{
    return (struct lg_conf_rate){.rate = rate, .burst = burst};
}

static struct lg_rl_check check_of(const char *key, double rate, int64_t burst)
{
    return (struct lg_rl_check){.key = key, .key_len = strlen(key), .rate = rate_of(rate, burst)};
}

/* One decision on one bucket; res is left filled. */
static bool decide1(struct lg_rl_local *s, const char *key, double rate, int64_t burst,
                    int64_t now_us, struct lg_rl_result *res)
{
    struct lg_rl_check c = check_of(key, rate, burst);
    int rc = lg_rl_local_decide(s, &c, 1, now_us, res);
    ck_assert_int_eq(rc == -1, res->allowed);
    return rc == -1;
}

static void expect_result(const struct lg_rl_result *res, bool allowed, int64_t limit,
                          int64_t remaining, int64_t reset_s, int64_t retry_after_s)
{
    ck_assert_msg(res->allowed == allowed, "allowed %d, wanted %d", res->allowed, allowed);
    ck_assert_int_eq(res->limit, limit);
    ck_assert_int_eq(res->remaining, remaining);
    ck_assert_int_eq(res->reset_s, reset_s);
    ck_assert_int_eq(res->retry_after_s, retry_after_s);
}

static struct lg_rl_local *store(size_t max_entries)
{
    struct lg_rl_local *s = lg_rl_local_new(max_entries);
    ck_assert_ptr_nonnull(s);
    return s;
}

START_TEST(test_refill_over_time)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    for (int i = 0; i < 20; i++) {
        ck_assert_msg(decide1(s, "id:a", 10, 20, T0, &res), "request %d refused", i + 1);
        /* 19 - i whole tokens left; the next arrives within 0.1 s. */
        expect_result(&res, true, 20, 19 - i, 1, 1);
    }
    ck_assert(!decide1(s, "id:a", 10, 20, T0, &res));
    expect_result(&res, false, 20, 0, 1, 1);
    /* Half a token after 50 ms is not a token. */
    ck_assert(!decide1(s, "id:a", 10, 20, T0 + 50 * MS, &res));
    /* 100 ms at 10/s is one token, float error or not. */
    ck_assert(decide1(s, "id:a", 10, 20, T0 + 100 * MS, &res));
    expect_result(&res, true, 20, 0, 1, 1);
    ck_assert(!decide1(s, "id:a", 10, 20, T0 + 100 * MS, &res));
    /* Ten more after one more second, not eleven. */
    int passed = 0;
    while (decide1(s, "id:a", 10, 20, T0 + 1100 * MS, &res))
        passed++;
    ck_assert_int_eq(passed, 10);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_fractional_rate)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    ck_assert(decide1(s, "k", 0.5, 1, T0, &res));
    expect_result(&res, true, 1, 0, 2, 2);
    ck_assert(!decide1(s, "k", 0.5, 1, T0, &res));
    expect_result(&res, false, 1, 0, 2, 2);
    /* Half a token after 1 s: one more second to go. */
    ck_assert(!decide1(s, "k", 0.5, 1, T0 + SEC, &res));
    expect_result(&res, false, 1, 0, 1, 1);
    ck_assert(decide1(s, "k", 0.5, 1, T0 + 2 * SEC, &res));
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_slow_and_fast_rates)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    ck_assert(decide1(s, "slow", 0.001, 1, T0, &res));
    expect_result(&res, true, 1, 0, 1000, 1000);
    ck_assert(!decide1(s, "slow", 0.001, 1, T0 + 1, &res));
    expect_result(&res, false, 1, 0, 1000, 1000);
    ck_assert(!decide1(s, "slow", 0.001, 1, T0 + 999500 * MS, &res));
    expect_result(&res, false, 1, 0, 1, 1);
    ck_assert(decide1(s, "slow", 0.001, 1, T0 + 1000 * SEC, &res));

    /* 1e9 tokens a second: 1 microsecond refills everything, capped. */
    for (int i = 0; i < 5; i++)
        ck_assert(decide1(s, "fast", 1e9, 5, T0, &res));
    ck_assert(!decide1(s, "fast", 1e9, 5, T0, &res));
    expect_result(&res, false, 5, 0, 1, 1);
    ck_assert(decide1(s, "fast", 1e9, 5, T0 + 1, &res));
    expect_result(&res, true, 5, 4, 1, 1);

    /* Extreme clocks and rates: no overflow, NaN or infinity. */
    struct lg_rl_bucket b = {.tokens = 0, .updated_us = INT64_MIN};
    struct lg_conf_rate r = rate_of(1e9, 1000000);
    lg_rl_bucket_refill(&b, &r, INT64_MAX);
    ck_assert(b.tokens == 1000000.0);
    ck_assert_int_eq(b.updated_us, INT64_MAX);
    r = rate_of(1e-300, 1);
    b = (struct lg_rl_bucket){.tokens = 0, .updated_us = 0};
    lg_rl_bucket_result(&b, &r, false, &res);
    ck_assert_int_eq(res.retry_after_s, INT32_MAX);
    ck_assert_int_eq(res.reset_s, INT32_MAX);
    r = rate_of(INFINITY, 3);
    lg_rl_bucket_refill(&b, &r, 1);
    ck_assert(b.tokens == 3.0);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_burst_cap)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    ck_assert(decide1(s, "k", 10, 20, T0, &res));
    /* An hour idle refills to 20, not 36000. */
    ck_assert(decide1(s, "k", 10, 20, T0 + 3600 * SEC, &res));
    expect_result(&res, true, 20, 19, 1, 1);

    struct lg_rl_bucket b = {.tokens = 5, .updated_us = T0};
    struct lg_conf_rate r = rate_of(10, 20);
    lg_rl_bucket_refill(&b, &r, T0 + 1000000 * SEC);
    ck_assert(b.tokens == 20.0);
    lg_rl_bucket_result(&b, &r, false, &res);
    expect_result(&res, false, 20, 0, 0, 1);
    lg_rl_bucket_result(&b, &r, true, &res);
    expect_result(&res, true, 20, 20, 0, 1);
    /* A stored value above the burst (the burst was lowered) is capped. */
    b.tokens = 50;
    lg_rl_bucket_refill(&b, &r, T0);
    ck_assert(b.tokens == 20.0);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_clock_backwards)
{
    struct lg_rl_bucket b = {.tokens = 0.5, .updated_us = T0};
    struct lg_conf_rate r = rate_of(1, 2);
    lg_rl_bucket_refill(&b, &r, T0 - 10 * SEC);
    ck_assert(b.tokens == 0.5);
    ck_assert_int_eq(b.updated_us, T0 - 10 * SEC);
    ck_assert(!lg_rl_bucket_has_token(&b));

    /* Corrupt stored values: NaN and negative are empty, never more. */
    b = (struct lg_rl_bucket){.tokens = NAN, .updated_us = T0};
    lg_rl_bucket_refill(&b, &r, T0);
    ck_assert(b.tokens == 0.0);
    b = (struct lg_rl_bucket){.tokens = -3, .updated_us = T0};
    lg_rl_bucket_refill(&b, &r, T0 - 1);
    ck_assert(b.tokens == 0.0);
    struct lg_rl_result res;
    b.tokens = NAN;
    lg_rl_bucket_result(&b, &r, false, &res);
    expect_result(&res, false, 2, 0, 1, 1);

    struct lg_rl_local *s = store(1000);
    ck_assert(decide1(s, "k", 1, 2, T0, &res));
    ck_assert(decide1(s, "k", 1, 2, T0, &res));
    ck_assert(!decide1(s, "k", 1, 2, T0 - 5 * SEC, &res));
    expect_result(&res, false, 2, 0, 1, 1);
    ck_assert(!decide1(s, "k", 1, 2, T0 - 3600 * SEC, &res));
    expect_result(&res, false, 2, 0, 1, 1);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_retry_after_rounding)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    ck_assert(decide1(s, "a", 1, 1, T0, &res));
    /* 0.7 token: 0.3 s to wait -> 1. */
    ck_assert(!decide1(s, "a", 1, 1, T0 + 700 * MS, &res));
    expect_result(&res, false, 1, 0, 1, 1);

    ck_assert(decide1(s, "b", 0.5, 1, T0, &res));
    /* 0.4 token at 0.5/s: 1.2 s to wait -> 2. */
    ck_assert(!decide1(s, "b", 0.5, 1, T0 + 800 * MS, &res));
    expect_result(&res, false, 1, 0, 2, 2);
    /* 0.7 token: 0.6 s -> 1. */
    ck_assert(!decide1(s, "b", 0.5, 1, T0 + 1400 * MS, &res));
    expect_result(&res, false, 1, 0, 1, 1);

    /* A wait of exactly 3 s is 3, not 4 (0.3 / 0.1 in floats). */
    ck_assert(decide1(s, "c", 0.1, 1, T0, &res));
    expect_result(&res, true, 1, 0, 10, 10);
    ck_assert(!decide1(s, "c", 0.1, 1, T0 + 7 * SEC, &res));
    expect_result(&res, false, 1, 0, 3, 3);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_remaining_and_reset)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    ck_assert(decide1(s, "k", 0.25, 3, T0, &res));
    expect_result(&res, true, 3, 2, 4, 1);
    ck_assert(decide1(s, "k", 0.25, 3, T0, &res));
    expect_result(&res, true, 3, 1, 4, 1);
    ck_assert(decide1(s, "k", 0.25, 3, T0, &res));
    expect_result(&res, true, 3, 0, 4, 4);
    ck_assert(!decide1(s, "k", 0.25, 3, T0 + SEC, &res));
    expect_result(&res, false, 3, 0, 3, 3);
    /* 1.5 tokens: one whole left after taking none; the second arrives in 2 s. */
    struct lg_rl_bucket b = {.tokens = 1.5, .updated_us = T0};
    struct lg_conf_rate r = rate_of(0.25, 3);
    lg_rl_bucket_result(&b, &r, true, &res);
    expect_result(&res, true, 3, 1, 2, 1);
    /* Float noise just under a whole token counts as the token. */
    b.tokens = 2 - 1e-12;
    ck_assert(lg_rl_bucket_has_token(&b));
    lg_rl_bucket_result(&b, &r, true, &res);
    expect_result(&res, true, 3, 2, 4, 1);
    b.tokens = 1 - 1e-6;
    ck_assert(!lg_rl_bucket_has_token(&b));
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_multi_check_atomic)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res[3];
    struct lg_rl_check c[2] = {check_of("id:r:alice", 0.001, 5), check_of("global", 0.001, 1)};
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), NO_INDEX);
    expect_result(&res[0], true, 5, 4, 1000, 1);
    expect_result(&res[1], true, 1, 0, 1000, 1000);
    /* global is empty: refused, and alice keeps her 4 tokens. */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0 + 1, res), 1);
        expect_result(&res[0], false, 5, 0, 1000, 1);
        expect_result(&res[1], false, 1, 0, 1000, 1000);
    }
    struct lg_rl_check rev[2] = {c[1], c[0]};
    ck_assert_int_eq(lg_rl_local_decide(s, rev, 2, T0 + 2, res), 0);
    ck_assert(decide1(s, "id:r:alice", 0.001, 5, T0 + 3, &res[0]));
    expect_result(&res[0], true, 5, 3, 1000, 1);

    /* The first refusing index when two refuse. */
    struct lg_rl_check three[3] = {check_of("x", 0.001, 2), c[1], c[1]};
    three[2] = check_of("id:r:alice", 0.001, 5);
    ck_assert_int_eq(lg_rl_local_decide(s, three, 3, T0 + 4, res), 1);
    ck_assert(decide1(s, "x", 0.001, 2, T0 + 5, &res[0]));
    expect_result(&res[0], true, 2, 1, 1000, 1);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_same_key_twice)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res[2];
    struct lg_rl_check c[2] = {check_of("dup", 0.001, 2), check_of("dup", 0.001, 2)};
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), NO_INDEX);
    expect_result(&res[0], true, 2, 1, 1000, 1);
    expect_result(&res[1], true, 2, 1, 1000, 1);
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), NO_INDEX);
    expect_result(&res[0], true, 2, 0, 1000, 1000);
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), 0);
    expect_result(&res[1], false, 2, 0, 1000, 1000);
    ck_assert_uint_eq(lg_rl_local_size(s), 1);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_caller_bugs_refused)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res[LG_RL_CHECKS_MAX + 1];
    char key[LG_RL_KEY_MAX + 1];
    memset(key, 'k', sizeof(key));
    struct lg_rl_check c[LG_RL_CHECKS_MAX + 1];
    for (size_t i = 0; i < LG_RL_CHECKS_MAX + 1; i++)
        c[i] = (struct lg_rl_check){.key = key, .key_len = 1 + i, .rate = rate_of(10, 20)};
    /* Too long a key: refused at its index, nothing taken from the others. */
    c[1].key_len = LG_RL_KEY_MAX + 1;
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), 1);
    expect_result(&res[0], false, 20, 0, 1, 1);
    expect_result(&res[1], false, 20, 0, 1, 1);
    ck_assert_uint_eq(lg_rl_local_size(s), 0);
    c[1].key_len = LG_RL_KEY_MAX;
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), NO_INDEX);
    ck_assert_int_eq(lg_rl_local_decide(s, c, LG_RL_CHECKS_MAX, T0, res), NO_INDEX);
    ck_assert_int_eq(lg_rl_local_decide(s, c, LG_RL_CHECKS_MAX + 1, T0, res), 0);
    expect_result(&res[LG_RL_CHECKS_MAX], false, 20, 0, 1, 1);
    ck_assert_int_eq(lg_rl_local_decide(s, c, 0, T0, res), NO_INDEX);

    ck_assert(!lg_rl_local_quota(s, key, LG_RL_KEY_MAX + 1, 3, 0, 100, 50, res));
    expect_result(&res[0], false, 3, 0, 1, 1);
    ck_assert(lg_rl_local_quota(s, key, LG_RL_KEY_MAX, 3, 0, 100, 50, res));
    lg_rl_local_free(s);
}
END_TEST

#define THREADS    4
#define PER_THREAD 10000

/* The shared burst of each run of test_threads_exact: the brief's 1000, and
 * one that lasts half the run, so that unguarded updates would collide. */
static const int64_t shared_bursts[] = {1000, THREADS *PER_THREAD / 2};

struct thread_arg {
    struct lg_rl_local *s;
    int id;
    int64_t shared_burst;
    atomic_int *allowed;
    pthread_barrier_t *start; /* all threads decide at once */
};

static void *decide_thread(void *p)
{
    struct thread_arg *a = p;
    char own[32];
    snprintf(own, sizeof(own), "id:thread%d", a->id);
    pthread_barrier_wait(a->start);
    for (int i = 0; i < PER_THREAD; i++) {
        /* Shared key, a per-thread key and a second shared one, in orders
         * that differ between threads: the shard locking must not deadlock. */
        struct lg_rl_check c[3] = {check_of("global", 1e-6, a->shared_burst),
                                   check_of(own, 1e-6, 1000000),
                                   check_of("route:x", 1e-6, 1000000)};
        if ((i + a->id) % 2) {
            struct lg_rl_check t = c[0];
            c[0] = c[2];
            c[2] = t;
        }
        struct lg_rl_result res[3];
        if (lg_rl_local_decide(a->s, c, 3, T0 + i, res) == -1)
            atomic_fetch_add(a->allowed, 1);
    }
    return NULL;
}

START_TEST(test_threads_exact)
{
    int64_t shared_burst = shared_bursts[_i];
    struct lg_rl_local *s = store(10000);
    atomic_int allowed = 0;
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    pthread_barrier_t start;
    ck_assert_int_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){
            .s = s, .id = i, .shared_burst = shared_burst, .allowed = &allowed, .start = &start};
        ck_assert_int_eq(pthread_create(&th[i], NULL, decide_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    int total = atomic_load(&allowed);
    ck_assert_int_eq(total, shared_burst);
    /* route:x gave exactly as many tokens as global did. */
    struct lg_rl_result res;
    ck_assert(decide1(s, "route:x", 1e-6, 1000000, T0 + PER_THREAD, &res));
    ck_assert_int_eq(res.remaining, 1000000 - shared_burst - 1);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_eviction_bound)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    for (int i = 0; i < 5; i++)
        ck_assert(decide1(s, "victim", 0.001, 5, T0, &res));
    ck_assert(!decide1(s, "victim", 0.001, 5, T0, &res));
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "ip:10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        /* Each flood bucket stays busy (slow refill): eviction is by LRU. */
        ck_assert(decide1(s, key, 0.001, 5, T0 + i, &res));
        if (i % 997 == 0)
            ck_assert_uint_le(lg_rl_local_size(s), 1000);
    }
    ck_assert_uint_eq(lg_rl_local_size(s), 1000);
    /* The drained bucket was the least recently used: dropped, so it comes
     * back full. */
    ck_assert(decide1(s, "victim", 0.001, 5, T0 + 100000, &res));
    expect_result(&res, true, 5, 4, 1000, 1);
    ck_assert_uint_eq(lg_rl_local_size(s), 1000);

    /* Quotas count against the same bound. */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key%d", i);
        ck_assert(lg_rl_local_quota(s, key, strlen(key), 10, 0, 86400, 100, &res));
    }
    ck_assert_uint_le(lg_rl_local_size(s), 1000);
    lg_rl_local_free(s);

    /* A tiny store still decides eight buckets at once, then trims. */
    s = store(2);
    struct lg_rl_check c[LG_RL_CHECKS_MAX];
    char keys[LG_RL_CHECKS_MAX][8];
    struct lg_rl_result r8[LG_RL_CHECKS_MAX];
    for (int i = 0; i < LG_RL_CHECKS_MAX; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        c[i] = check_of(keys[i], 0.001, 1);
    }
    ck_assert_int_eq(lg_rl_local_decide(s, c, LG_RL_CHECKS_MAX, T0, r8), NO_INDEX);
    for (int i = 0; i < LG_RL_CHECKS_MAX; i++)
        expect_result(&r8[i], true, 1, 0, 1000, 1000);
    ck_assert_uint_le(lg_rl_local_size(s), 2);
    lg_rl_local_free(s);
}
END_TEST

/* A store of 8 entries has one shard (it needs 8 per shard), so that the
 * eviction order below is fully determined. */
START_TEST(test_idle_evicted_first)
{
    struct lg_rl_local *s = store(8);
    struct lg_rl_result res;
    /* busy: 5 of 10 tokens left, 5 s from full; least recently used. */
    for (int i = 0; i < 5; i++)
        ck_assert(decide1(s, "busy", 1, 10, T0, &res));
    char key[16];
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof(key), "idle%d", i);
        /* Full again 1 ms later. */
        ck_assert(decide1(s, key, 1000, 1, T0 + MS, &res));
    }
    ck_assert_uint_eq(lg_rl_local_size(s), 8);
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof(key), "new%d", i);
        ck_assert(decide1(s, key, 0.001, 1, T0 + 10 * MS, &res));
        ck_assert_uint_eq(lg_rl_local_size(s), 8);
    }
    /* busy survived seven evictions: 5.01 tokens, one taken. */
    ck_assert(decide1(s, "busy", 1, 10, T0 + 10 * MS, &res));
    expect_result(&res, true, 10, 4, 1, 1);

    /* Nothing idle now: the least recently used goes first, and a touched
     * entry is recent again. new0 is touched (still drained), so "other"
     * drops new1; new1 comes back full and drops new2. */
    ck_assert(!decide1(s, "new0", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(decide1(s, "other", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(!decide1(s, "new0", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(!decide1(s, "new3", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(decide1(s, "new1", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(decide1(s, "new2", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert(!decide1(s, "new0", 0.001, 1, T0 + 20 * MS, &res));
    ck_assert_uint_eq(lg_rl_local_size(s), 8);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_past_quota_evicted_first)
{
    struct lg_rl_local *s = store(8);
    struct lg_rl_result res;
    ck_assert(lg_rl_local_quota(s, "q0", 2, 5, 0, 10000, 100, &res));
    expect_result(&res, true, 5, 4, 9900, 1);
    ck_assert(decide1(s, "busy", 0.001, 10, T0, &res));
    char key[16];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "old%d", i);
        ck_assert(lg_rl_local_quota(s, key, strlen(key), 5, 0, 1000, 500, &res));
    }
    ck_assert_uint_eq(lg_rl_local_size(s), 8);
    /* At 2000 the old counters' period is over: they go before q0 (the least
     * recently used) and before the busy bucket. */
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "new%d", i);
        ck_assert(lg_rl_local_quota(s, key, strlen(key), 5, 2000, 3000, 2000, &res));
    }
    ck_assert_uint_eq(lg_rl_local_size(s), 8);
    ck_assert(lg_rl_local_quota(s, "q0", 2, 5, 0, 10000, 2000, &res));
    expect_result(&res, true, 5, 3, 8000, 1);
    ck_assert(decide1(s, "busy", 0.001, 10, T0, &res));
    ck_assert_int_eq(res.remaining, 8);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_quota)
{
    struct lg_rl_local *s = store(1000);
    struct lg_rl_result res;
    const char *k = "quota:android-app";
    size_t kl = strlen(k);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 0, 86400, 5000, &res));
    expect_result(&res, true, 3, 2, 81400, 1);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 0, 86400, 5000, &res));
    expect_result(&res, true, 3, 1, 81400, 1);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 0, 86400, 5001, &res));
    expect_result(&res, true, 3, 0, 81399, 81399);
    ck_assert(!lg_rl_local_quota(s, k, kl, 3, 0, 86400, 5002, &res));
    expect_result(&res, false, 3, 0, 81398, 81398);
    /* The last second of the period still says at least 1. */
    ck_assert(!lg_rl_local_quota(s, k, kl, 3, 0, 86400, 86400, &res));
    expect_result(&res, false, 3, 0, 0, 1);

    /* A refund of another period is ignored; of this one, gives one back. */
    lg_rl_local_quota_refund(s, k, kl, 86400);
    ck_assert(!lg_rl_local_quota(s, k, kl, 3, 0, 86400, 6000, &res));
    lg_rl_local_quota_refund(s, k, kl, 0);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 0, 86400, 6000, &res));
    expect_result(&res, true, 3, 0, 80400, 80400);

    /* A new period starts from zero; a late caller of the old period
     * counts in the new one. */
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 86400, 172800, 86401, &res));
    expect_result(&res, true, 3, 2, 86399, 1);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 0, 86400, 86399, &res));
    expect_result(&res, true, 3, 1, 86401, 1);
    lg_rl_local_quota_refund(s, k, kl, 0);
    ck_assert(lg_rl_local_quota(s, k, kl, 3, 86400, 172800, 86402, &res));
    expect_result(&res, true, 3, 0, 86398, 86398);

    /* Refunds never go below zero. */
    for (int i = 0; i < 10; i++)
        lg_rl_local_quota_refund(s, "fresh", 5, 0);
    ck_assert(lg_rl_local_quota(s, "fresh", 5, 3, 0, 100, 10, &res));
    for (int i = 0; i < 10; i++)
        lg_rl_local_quota_refund(s, "fresh", 5, 0);
    ck_assert(lg_rl_local_quota(s, "fresh", 5, 3, 0, 100, 10, &res));
    expect_result(&res, true, 3, 2, 90, 1);

    /* A quota and a bucket of one name are different entries. */
    ck_assert(decide1(s, "fresh", 0.001, 1, T0, &res));
    expect_result(&res, true, 1, 0, 1000, 1000);
    ck_assert(lg_rl_local_quota(s, "fresh", 5, 3, 0, 100, 10, &res));
    expect_result(&res, true, 3, 1, 90, 1);
    lg_rl_local_free(s);
}
END_TEST

START_TEST(test_free_null_and_binary_keys)
{
    lg_rl_local_free(NULL);
    struct lg_rl_local *s = store(100);
    struct lg_rl_result res[2];
    /* Keys are bytes: an embedded NUL distinguishes them. */
    struct lg_rl_check c[2] = {{.key = "a\0b", .key_len = 3, .rate = rate_of(0.001, 1)},
                               {.key = "a\0c", .key_len = 3, .rate = rate_of(0.001, 1)}};
    ck_assert_int_eq(lg_rl_local_decide(s, c, 2, T0, res), NO_INDEX);
    ck_assert_int_eq(lg_rl_local_decide(s, &c[0], 1, T0, res), 0);
    ck_assert_uint_eq(lg_rl_local_size(s), 2);
    struct lg_rl_check empty = {.key = NULL, .key_len = 0, .rate = rate_of(0.001, 1)};
    ck_assert_int_eq(lg_rl_local_decide(s, &empty, 1, T0, res), NO_INDEX);
    ck_assert_int_eq(lg_rl_local_decide(s, &empty, 1, T0, res), 0);
    lg_rl_local_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_refill_over_time);
    tcase_add_test(tc, test_fractional_rate);
    tcase_add_test(tc, test_slow_and_fast_rates);
    tcase_add_test(tc, test_burst_cap);
    tcase_add_test(tc, test_clock_backwards);
    tcase_add_test(tc, test_retry_after_rounding);
    tcase_add_test(tc, test_remaining_and_reset);
    tcase_add_test(tc, test_multi_check_atomic);
    tcase_add_test(tc, test_same_key_twice);
    tcase_add_test(tc, test_caller_bugs_refused);
    tcase_add_loop_test(tc, test_threads_exact, 0,
                        (int)(sizeof(shared_bursts) / sizeof(shared_bursts[0])));
    tcase_add_test(tc, test_eviction_bound);
    tcase_add_test(tc, test_idle_evicted_first);
    tcase_add_test(tc, test_past_quota_evicted_first);
    tcase_add_test(tc, test_quota);
    tcase_add_test(tc, test_free_null_and_binary_keys);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
