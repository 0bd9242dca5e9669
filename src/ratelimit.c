/* ratelimit.c - token-bucket arithmetic, and the sharded in-memory store of buckets and quotas. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/rand.h>

#include "lambdagate/ratelimit.h"

/* Floating error allowance, in tokens: a refill of 100 ms at 10/s may give
 * 0.9999999999999999, which must count as the whole token it stands for. */
#define RL_EPSILON 1e-9

/* Longest wait reported, in seconds (68 years): far beyond any meaningful
 * Retry-After, and small enough that a caller adding it, in microseconds,
 * to a clock stays far from int64 overflow. Reached only by absurd rates. */
#define RL_WAIT_MAX ((int64_t)INT32_MAX)

/* Shards of the local store: enough that workers rarely meet on one mutex,
 * few enough that a small store still holds LG_RL_CHECKS_MAX entries per
 * shard (a decision needs all its buckets present at once). */
#define RL_SHARDS_MAX 64

/* ---- Bucket arithmetic ----------------------------------------------- */

/* tokens forced into [0, burst]; NaN (a corrupt stored value) counts as an
 * empty bucket rather than a full one. */
static double clamp_tokens(double tokens, double burst)
{
    if (!(tokens >= 0))
        return 0;
    return tokens > burst ? burst : tokens;
}

/* The bucket size as a double, never negative. */
static double burst_of(const struct lg_conf_rate *rate)
{
    return rate->burst > 0 ? (double)rate->burst : 0;
}

void lg_rl_bucket_refill(struct lg_rl_bucket *b, const struct lg_conf_rate *rate, int64_t now_us)
{
    double burst = burst_of(rate);
    double tokens = clamp_tokens(b->tokens, burst);
    if (now_us > b->updated_us && rate->rate > 0) {
        /* The true difference fits in uint64 even when the int64 one would
         * overflow (a stored updated_us far in the past). */
        uint64_t elapsed_us = (uint64_t)now_us - (uint64_t)b->updated_us;
        double added = (double)elapsed_us / 1e6 * rate->rate;
        /* Compare before adding: a huge rate or gap gives inf, never NaN,
         * and the cap is exact. */
        if (added >= burst - tokens)
            tokens = burst;
        else
            tokens += added;
    }
    b->tokens = tokens;
    b->updated_us = now_us;
}

bool lg_rl_bucket_has_token(const struct lg_rl_bucket *b)
{
    return b->tokens >= 1.0 - RL_EPSILON;
}

/* Whole seconds, rounded up and at least 1, for `need` tokens (> 0) to
 * arrive at `rate` per second. The epsilon comes off in tokens, before the
 * division, so that float noise neither adds a second at slow rates
 * (0.999.../0.001 is not 1001 s) nor at exact ones (0.3/0.1). */
static int64_t wait_seconds(double need, double rate)
{
    if (!(rate > 0))
        return RL_WAIT_MAX;
    double secs = (need - RL_EPSILON) / rate;
    if (!(secs > 1))
        return 1;
    if (secs >= (double)RL_WAIT_MAX)
        return RL_WAIT_MAX;
    return (int64_t)ceil(secs);
}

/* Whole tokens in tokens (already clamped to [0, burst]). */
static int64_t whole_tokens(double tokens, const struct lg_conf_rate *rate)
{
    double whole = floor(tokens + RL_EPSILON);
    if (whole >= burst_of(rate))
        return rate->burst > 0 ? rate->burst : 0;
    return (int64_t)whole;
}

void lg_rl_bucket_result(const struct lg_rl_bucket *b, const struct lg_conf_rate *rate,
                         bool allowed, struct lg_rl_result *res)
{
    double burst = burst_of(rate);
    double tokens = clamp_tokens(b->tokens, burst);
    int64_t whole = whole_tokens(tokens, rate);
    res->allowed = allowed;
    res->limit = rate->burst > 0 ? rate->burst : 0;
    res->remaining = allowed ? whole : 0;
    if (tokens + RL_EPSILON >= burst)
        res->reset_s = 0;
    else
        res->reset_s = wait_seconds((double)whole + 1 - tokens, rate->rate);
    if (tokens + RL_EPSILON >= 1)
        res->retry_after_s = 1;
    else
        res->retry_after_s = wait_seconds(1 - tokens, rate->rate);
}

/* Take the token lg_rl_bucket_has_token() found; the epsilon may leave a
 * hair below zero, which is no debt. */
static void bucket_take(struct lg_rl_bucket *b)
{
    b->tokens -= 1;
    if (!(b->tokens >= 0))
        b->tokens = 0;
}

/* Monotonic microseconds at which b, refilling at rate, is full again:
 * from then on dropping it loses nothing. INT64_MAX when it never refills. */
static int64_t bucket_full_at(const struct lg_rl_bucket *b, const struct lg_conf_rate *rate)
{
    double burst = burst_of(rate);
    double tokens = clamp_tokens(b->tokens, burst);
    if (tokens + RL_EPSILON >= burst)
        return b->updated_us;
    if (!(rate->rate > 0))
        return INT64_MAX;
    double us = ceil((burst - tokens) / rate->rate * 1e6);
    if (!(us < 9e18))
        return INT64_MAX;
    int64_t at;
    if (__builtin_add_overflow(b->updated_us, (int64_t)us, &at))
        return INT64_MAX;
    return at;
}

/* The figures of a request refused without looking at any bucket (a
 * caller bug or no memory): deny-safe, retry soon. */
static void refused_result(const struct lg_conf_rate *rate, struct lg_rl_result *res)
{
    res->allowed = false;
    res->limit = rate->burst > 0 ? rate->burst : 0;
    res->remaining = 0;
    res->reset_s = 1;
    res->retry_after_s = 1;
}

/* a - b without overflow, saturated. */
static int64_t sat_sub(int64_t a, int64_t b)
{
    int64_t d;
    if (__builtin_sub_overflow(a, b, &d))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return d;
}

/* ---- SipHash-2-4 ------------------------------------------------------ */

/* Keys come from clients (identities, addresses): a keyed hash with a
 * random key per store keeps anyone from aiming keys at one chain. */

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl64(v1, 13);                                                                       \
        v1 ^= v0;                                                                                  \
        v0 = rotl64(v0, 32);                                                                       \
        v2 += v3;                                                                                  \
        v3 = rotl64(v3, 16);                                                                       \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl64(v3, 21);                                                                       \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl64(v1, 17);                                                                       \
        v1 ^= v2;                                                                                  \
        v2 = rotl64(v2, 32);                                                                       \
    } while (0)

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t siphash24(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = k1 ^ 0x7465646279746573ull;
    size_t full = len - len % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- The local store ------------------------------------------------- */

enum rl_kind {
    RL_BUCKET = 0,
    RL_QUOTA = 1,
};

/* One bucket or quota counter. Every field is guarded by its shard's
 * mutex. The key bytes follow the struct, copied once at creation. */
struct rl_entry {
    struct rl_entry *chain; /* next in the hash chain */
    struct rl_entry *newer; /* LRU list, toward the most recently used */
    struct rl_entry *older;
    uint64_t hash;
    /* When the entry becomes idle, i.e. dropping it loses nothing: for a
     * bucket, the monotonic microsecond it is full; for a quota counter,
     * the end of its period (wall seconds), or INT64_MIN when it counts
     * nothing. The key of the kind's idle heap. */
    int64_t idle_at;
    size_t heap_index;
    uint16_t key_len;
    uint8_t kind; /* enum rl_kind; a bucket and a quota may share a key */
    bool pinned;  /* in use by the decision holding the lock: not evictable */
    union {
        struct {
            struct lg_rl_bucket state;
            struct lg_conf_rate rate; /* as last used: needed to know when it is full */
        } bucket;
        struct {
            int64_t count;
            int64_t start;
            int64_t end;
        } quota;
    } u;
    unsigned char key[];
};

/* A binary min-heap of entries by idle_at: the most idle entry on top. */
struct rl_heap {
    struct rl_entry **items;
    size_t len;
    size_t alloc;
};

/* Aligned to a cache line so that workers on neighbouring shards do not
 * contend on one line. */
struct rl_shard {
    _Alignas(64) pthread_mutex_t lock;
    struct rl_entry **table; /* chained hash, table_size a power of two */
    size_t table_size;
    size_t count;
    size_t cap;
    struct rl_entry *newest; /* LRU list ends */
    struct rl_entry *oldest;
    struct rl_heap idle[2]; /* by enum rl_kind */
    int64_t now_us;         /* latest monotonic time decided here */
};

struct lg_rl_local {
    struct rl_shard *shards;
    size_t nshards; /* a power of two */
    uint64_t seed0;
    uint64_t seed1;
    /* Latest wall time (seconds) a quota call gave, for telling counters of
     * past periods idle. Written only when it grows, i.e. once a second. */
    _Atomic int64_t wall_now_s;
};

/* -- Idle heaps -- */

static void heap_set(struct rl_heap *h, size_t i, struct rl_entry *e)
{
    h->items[i] = e;
    e->heap_index = i;
}

static void heap_sift_up(struct rl_heap *h, size_t i)
{
    struct rl_entry *e = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->idle_at <= e->idle_at)
            break;
        heap_set(h, i, h->items[parent]);
        i = parent;
    }
    heap_set(h, i, e);
}

static void heap_sift_down(struct rl_heap *h, size_t i)
{
    struct rl_entry *e = h->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && h->items[child + 1]->idle_at < h->items[child]->idle_at)
            child++;
        if (h->items[child]->idle_at >= e->idle_at)
            break;
        heap_set(h, i, h->items[child]);
        i = child;
    }
    heap_set(h, i, e);
}

/* Add e (idle_at set). -1 on no memory, e not added. */
static int heap_push(struct rl_heap *h, struct rl_entry *e)
{
    if (h->len == h->alloc) {
        size_t alloc = h->alloc ? h->alloc * 2 : 16;
        struct rl_entry **items = realloc(h->items, alloc * sizeof(*items));
        if (!items)
            return -1;
        h->items = items;
        h->alloc = alloc;
    }
    heap_set(h, h->len++, e);
    heap_sift_up(h, h->len - 1);
    return 0;
}

static void heap_remove(struct rl_heap *h, struct rl_entry *e)
{
    size_t i = e->heap_index;
    struct rl_entry *last = h->items[--h->len];
    if (i == h->len)
        return;
    heap_set(h, i, last);
    heap_sift_up(h, i);
    heap_sift_down(h, last->heap_index);
}

/* After e->idle_at changed. */
static void heap_update(struct rl_heap *h, struct rl_entry *e)
{
    heap_sift_up(h, e->heap_index);
    heap_sift_down(h, e->heap_index);
}

/* An unpinned entry idle at now (idle_at <= now) in the subtree at i, or
 * NULL. Subtrees whose root is not idle hold no idle entry; only pinned
 * entries (at most LG_RL_CHECKS_MAX) make the search go past a node, so
 * it visits a handful of nodes. */
static struct rl_entry *heap_find_idle(const struct rl_heap *h, size_t i, int64_t now)
{
    if (i >= h->len || h->items[i]->idle_at > now)
        return NULL;
    if (!h->items[i]->pinned)
        return h->items[i];
    struct rl_entry *e = heap_find_idle(h, 2 * i + 1, now);
    return e ? e : heap_find_idle(h, 2 * i + 2, now);
}

/* -- Shards -- */

static void lru_unlink(struct rl_shard *sh, struct rl_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        sh->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        sh->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_newest(struct rl_shard *sh, struct rl_entry *e)
{
    e->newer = NULL;
    e->older = sh->newest;
    if (sh->newest)
        sh->newest->newer = e;
    else
        sh->oldest = e;
    sh->newest = e;
}

static void lru_touch(struct rl_shard *sh, struct rl_entry *e)
{
    if (sh->newest == e)
        return;
    lru_unlink(sh, e);
    lru_push_newest(sh, e);
}

static struct rl_entry *shard_lookup(const struct rl_shard *sh, enum rl_kind kind, const char *key,
                                     size_t key_len, uint64_t hash)
{
    for (struct rl_entry *e = sh->table[hash & (sh->table_size - 1)]; e; e = e->chain) {
        /* key may be NULL when key_len is 0: memcmp must not see it. */
        if (e->hash == hash && e->kind == kind && e->key_len == key_len &&
            (key_len == 0 || memcmp(e->key, key, key_len) == 0))
            return e;
    }
    return NULL;
}

/* Unlink e from the table, the LRU list and its heap, and free it. */
static void shard_remove(struct rl_shard *sh, struct rl_entry *e)
{
    struct rl_entry **p = &sh->table[e->hash & (sh->table_size - 1)];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    lru_unlink(sh, e);
    heap_remove(&sh->idle[e->kind], e);
    sh->count--;
    free(e);
}

/* The entry to drop for room: an idle one first (an idle bucket, then a
 * counter of a past period: dropping either loses nothing), else the least
 * recently used. Pinned entries are never chosen; NULL when all are. */
static struct rl_entry *shard_victim(const struct rl_shard *sh, int64_t wall_now_s)
{
    struct rl_entry *e = heap_find_idle(&sh->idle[RL_BUCKET], 0, sh->now_us);
    if (!e)
        e = heap_find_idle(&sh->idle[RL_QUOTA], 0, wall_now_s);
    for (struct rl_entry *o = sh->oldest; !e && o; o = o->newer) {
        if (!o->pinned)
            e = o;
    }
    return e;
}

/* Double the chain table while it holds fewer slots than entries (it never
 * needs more than the shard's cap). On no memory the old table stays:
 * chains only get longer. */
static void shard_maybe_grow(struct rl_shard *sh)
{
    if (sh->count < sh->table_size || sh->table_size > sh->cap)
        return;
    size_t size = sh->table_size * 2;
    struct rl_entry **table = calloc(size, sizeof(*table));
    if (!table)
        return;
    for (size_t i = 0; i < sh->table_size; i++) {
        struct rl_entry *e = sh->table[i];
        while (e) {
            struct rl_entry *next = e->chain;
            e->chain = table[e->hash & (size - 1)];
            table[e->hash & (size - 1)] = e;
            e = next;
        }
    }
    free(sh->table);
    sh->table = table;
    sh->table_size = size;
}

/* A new entry for key, linked in as the most recently used, making room
 * first when the shard is full. The caller fills u and idle_at, then calls
 * heap_update(). When every entry is pinned the shard goes over its cap
 * for the moment; shard_trim() restores it before the lock is released.
 * NULL on no memory. */
static struct rl_entry *shard_insert(struct rl_shard *sh, enum rl_kind kind, const char *key,
                                     size_t key_len, uint64_t hash, int64_t wall_now_s)
{
    if (sh->count >= sh->cap) {
        struct rl_entry *victim = shard_victim(sh, wall_now_s);
        if (victim)
            shard_remove(sh, victim);
    }
    struct rl_entry *e = malloc(sizeof(*e) + key_len);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->hash = hash;
    e->kind = (uint8_t)kind;
    e->key_len = (uint16_t)key_len;
    if (key_len)
        memcpy(e->key, key, key_len);
    e->idle_at = INT64_MIN;
    if (heap_push(&sh->idle[kind], e) != 0) {
        free(e);
        return NULL;
    }
    shard_maybe_grow(sh);
    size_t slot = hash & (sh->table_size - 1);
    e->chain = sh->table[slot];
    sh->table[slot] = e;
    lru_push_newest(sh, e);
    sh->count++;
    return e;
}

static void shard_trim(struct rl_shard *sh, int64_t wall_now_s)
{
    while (sh->count > sh->cap) {
        struct rl_entry *victim = shard_victim(sh, wall_now_s);
        if (!victim)
            break;
        shard_remove(sh, victim);
    }
}

static bool key_ok(const char *key, size_t key_len)
{
    return key_len <= LG_RL_KEY_MAX && (key || key_len == 0);
}

static uint64_t key_hash(const struct lg_rl_local *s, const char *key, size_t key_len)
{
    return siphash24(s->seed0, s->seed1, (const unsigned char *)key, key_len);
}

static size_t shard_of(const struct lg_rl_local *s, uint64_t hash)
{
    /* High bits: the chain index takes the low ones. */
    return (size_t)(hash >> 40) & (s->nshards - 1);
}

static int fill_seed(struct lg_rl_local *s)
{
    unsigned char seed[16];
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed) &&
        RAND_bytes(seed, (int)sizeof(seed)) != 1)
        return -1;
    s->seed0 = load_le64(seed);
    s->seed1 = load_le64(seed + 8);
    return 0;
}

struct lg_rl_local *lg_rl_local_new(size_t max_entries)
{
    if (max_entries == 0)
        max_entries = 1;
    struct lg_rl_local *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (fill_seed(s) != 0) {
        free(s);
        return NULL;
    }
    s->nshards = RL_SHARDS_MAX;
    while (s->nshards > 1 && max_entries / s->nshards < LG_RL_CHECKS_MAX)
        s->nshards /= 2;
    s->shards = aligned_alloc(_Alignof(struct rl_shard), s->nshards * sizeof(struct rl_shard));
    if (!s->shards) {
        free(s);
        return NULL;
    }
    memset(s->shards, 0, s->nshards * sizeof(struct rl_shard));
    atomic_init(&s->wall_now_s, INT64_MIN);
    size_t made = 0;
    for (; made < s->nshards; made++) {
        struct rl_shard *sh = &s->shards[made];
        /* The remainder goes to the first shards: the caps sum to max_entries. */
        sh->cap = max_entries / s->nshards + (made < max_entries % s->nshards ? 1 : 0);
        sh->table_size = 16;
        sh->now_us = INT64_MIN;
        sh->table = calloc(sh->table_size, sizeof(*sh->table));
        if (!sh->table)
            break;
        if (pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->table);
            break;
        }
    }
    if (made < s->nshards) {
        s->nshards = made; /* free only what was made */
        lg_rl_local_free(s);
        return NULL;
    }
    return s;
}

void lg_rl_local_free(struct lg_rl_local *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nshards; i++) {
        struct rl_shard *sh = &s->shards[i];
        struct rl_entry *e = sh->newest;
        while (e) {
            struct rl_entry *next = e->older;
            free(e);
            e = next;
        }
        free(sh->table);
        free(sh->idle[RL_BUCKET].items);
        free(sh->idle[RL_QUOTA].items);
        pthread_mutex_destroy(&sh->lock);
    }
    free(s->shards);
    free(s);
}

int lg_rl_local_decide(struct lg_rl_local *s, const struct lg_rl_check *checks, size_t n,
                       int64_t now_us, struct lg_rl_result *results)
{
    if (n == 0)
        return -1;
    if (n > LG_RL_CHECKS_MAX) {
        for (size_t i = 0; i < n; i++)
            refused_result(&checks[i].rate, &results[i]);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!key_ok(checks[i].key, checks[i].key_len)) {
            for (size_t j = 0; j < n; j++)
                refused_result(&checks[j].rate, &results[j]);
            return (int)i;
        }
    }

    uint64_t hash[LG_RL_CHECKS_MAX];
    size_t shard[LG_RL_CHECKS_MAX];
    size_t locked[LG_RL_CHECKS_MAX]; /* distinct shards, ascending */
    size_t nlocked = 0;
    for (size_t i = 0; i < n; i++) {
        hash[i] = key_hash(s, checks[i].key, checks[i].key_len);
        shard[i] = shard_of(s, hash[i]);
        size_t j = 0;
        while (j < nlocked && locked[j] < shard[i])
            j++;
        if (j < nlocked && locked[j] == shard[i])
            continue;
        memmove(&locked[j + 1], &locked[j], (nlocked - j) * sizeof(locked[0]));
        locked[j] = shard[i];
        nlocked++;
    }
    /* One global order (ascending index), each shard once: no deadlock
     * between decisions whose keys share shards. */
    for (size_t j = 0; j < nlocked; j++)
        pthread_mutex_lock(&s->shards[locked[j]].lock);
    int64_t wall_now_s = atomic_load_explicit(&s->wall_now_s, memory_order_relaxed);

    /* entry[i] is the bucket of check i; first[i] whether check i is the
     * first naming it (a key listed twice is one bucket, charged once). */
    struct rl_entry *entry[LG_RL_CHECKS_MAX];
    bool first[LG_RL_CHECKS_MAX];
    for (size_t i = 0; i < n; i++) {
        struct rl_shard *sh = &s->shards[shard[i]];
        if (now_us > sh->now_us)
            sh->now_us = now_us;
        struct rl_entry *e = shard_lookup(sh, RL_BUCKET, checks[i].key, checks[i].key_len, hash[i]);
        if (!e) {
            e = shard_insert(sh, RL_BUCKET, checks[i].key, checks[i].key_len, hash[i], wall_now_s);
            if (e) {
                /* A bucket not seen before (or dropped when full or least
                 * used) is full. */
                e->u.bucket.state.tokens = burst_of(&checks[i].rate);
                e->u.bucket.state.updated_us = now_us;
            }
        }
        entry[i] = e;
        first[i] = e && !e->pinned;
        if (first[i]) {
            e->pinned = true;
            e->u.bucket.rate = checks[i].rate;
            lg_rl_bucket_refill(&e->u.bucket.state, &e->u.bucket.rate, now_us);
        }
    }

    int refused = -1;
    for (size_t i = 0; i < n && refused < 0; i++) {
        if (!entry[i] || !lg_rl_bucket_has_token(&entry[i]->u.bucket.state))
            refused = (int)i;
    }
    for (size_t i = 0; i < n; i++) {
        if (refused < 0 && first[i])
            bucket_take(&entry[i]->u.bucket.state);
    }
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = entry[i];
        if (!e) {
            refused_result(&checks[i].rate, &results[i]);
            continue;
        }
        lg_rl_bucket_result(&e->u.bucket.state, &e->u.bucket.rate, refused < 0, &results[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (!first[i])
            continue;
        struct rl_shard *sh = &s->shards[shard[i]];
        struct rl_entry *e = entry[i];
        e->idle_at = bucket_full_at(&e->u.bucket.state, &e->u.bucket.rate);
        heap_update(&sh->idle[RL_BUCKET], e);
        lru_touch(sh, e);
        e->pinned = false;
    }
    for (size_t j = nlocked; j-- > 0;) {
        struct rl_shard *sh = &s->shards[locked[j]];
        shard_trim(sh, wall_now_s);
        pthread_mutex_unlock(&sh->lock);
    }
    return refused;
}

/* Figures of a quota entry after a decision at now (wall seconds). */
static void quota_result(const struct rl_entry *e, int64_t limit, bool allowed, int64_t now,
                         struct lg_rl_result *res)
{
    int64_t left = sat_sub(e->u.quota.end, now);
    res->allowed = allowed;
    res->limit = limit;
    res->remaining = allowed && limit > e->u.quota.count ? limit - e->u.quota.count : 0;
    res->reset_s = left > 0 ? left : 0;
    res->retry_after_s = res->remaining > 0 ? 1 : (left > 1 ? left : 1);
}

/* Raise the store's wall clock to now (it never goes back). */
static void note_wall_time(struct lg_rl_local *s, int64_t now)
{
    int64_t seen = atomic_load_explicit(&s->wall_now_s, memory_order_relaxed);
    while (now > seen &&
           !atomic_compare_exchange_weak_explicit(&s->wall_now_s, &seen, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

bool lg_rl_local_quota(struct lg_rl_local *s, const char *key, size_t key_len, int64_t limit,
                       int64_t start, int64_t end, int64_t now, struct lg_rl_result *res)
{
    if (!key_ok(key, key_len)) {
        *res = (struct lg_rl_result){.limit = limit, .reset_s = 1, .retry_after_s = 1};
        return false;
    }
    note_wall_time(s, now);
    int64_t wall_now_s = atomic_load_explicit(&s->wall_now_s, memory_order_relaxed);
    uint64_t hash = key_hash(s, key, key_len);
    struct rl_shard *sh = &s->shards[shard_of(s, hash)];
    pthread_mutex_lock(&sh->lock);
    struct rl_entry *e = shard_lookup(sh, RL_QUOTA, key, key_len, hash);
    if (!e) {
        e = shard_insert(sh, RL_QUOTA, key, key_len, hash, wall_now_s);
        if (!e) {
            pthread_mutex_unlock(&sh->lock);
            *res = (struct lg_rl_result){.limit = limit, .reset_s = 1, .retry_after_s = 1};
            return false;
        }
        e->u.quota.start = start;
        e->u.quota.end = end;
    } else if (start > e->u.quota.start) {
        /* A new period counts from zero. An older start (a worker that read
         * the clock just before the boundary) counts in the newer period. */
        e->u.quota.count = 0;
        e->u.quota.start = start;
        e->u.quota.end = end;
    }
    bool allowed = e->u.quota.count < limit;
    if (allowed)
        e->u.quota.count++;
    quota_result(e, limit, allowed, now, res);
    e->idle_at = e->u.quota.count > 0 ? e->u.quota.end : INT64_MIN;
    heap_update(&sh->idle[RL_QUOTA], e);
    lru_touch(sh, e);
    pthread_mutex_unlock(&sh->lock);
    return allowed;
}

void lg_rl_local_quota_refund(struct lg_rl_local *s, const char *key, size_t key_len, int64_t start)
{
    if (!key_ok(key, key_len))
        return;
    uint64_t hash = key_hash(s, key, key_len);
    struct rl_shard *sh = &s->shards[shard_of(s, hash)];
    pthread_mutex_lock(&sh->lock);
    struct rl_entry *e = shard_lookup(sh, RL_QUOTA, key, key_len, hash);
    if (e && e->u.quota.start == start && e->u.quota.count > 0) {
        e->u.quota.count--;
        if (e->u.quota.count == 0) {
            /* Counting nothing, it is as good as absent. */
            e->idle_at = INT64_MIN;
            heap_update(&sh->idle[RL_QUOTA], e);
        }
    }
    pthread_mutex_unlock(&sh->lock);
}

size_t lg_rl_local_size(struct lg_rl_local *s)
{
    size_t total = 0;
    for (size_t i = 0; i < s->nshards; i++) {
        pthread_mutex_lock(&s->shards[i].lock);
        total += s->shards[i].count;
        pthread_mutex_unlock(&s->shards[i].lock);
    }
    return total;
}
