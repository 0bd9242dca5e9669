/* cache.h - the response cache: keys, what may be stored, entries, and the memory store. */
#ifndef LG_CACHE_H
#define LG_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/buf.h"
#include "lambdagate/conf.h"
#include "lambdagate/http.h"
#include "lambdagate/lambdagate.h"
#include "lambdagate/router.h"

/* API Gateway caches answers up to 1 MiB; larger ones are not stored. */
#define LG_CACHE_ENTRY_MAX (1024u * 1024u)
/* The longest a route's ttl_s may be (API Gateway: 3600). */
#define LG_CACHE_TTL_MAX_S 3600
#define LG_CACHE_KEY_LEN   32 /* SHA-256 */

/* A stored answer. Immutable once made; shared between threads by
 * reference count. */
struct lg_cache_entry {
    int refcount;                   /* atomic */
    int status;                     /* 2xx */
    struct lg_http_header *headers; /* owned, NUL-terminated names and values */
    size_t nheaders;
    char *body; /* owned; NULL when body_len is 0 */
    size_t body_len;
    int64_t stored_ms; /* wall clock (ms since the epoch) when it was stored */
    int64_t ttl_ms;    /* fresh while now < stored_ms + ttl_ms */
    int64_t stale_ms;  /* may be served STALE while now < stored_ms + ttl_ms + stale_ms */
    size_t size;       /* bytes counted against cache.max_bytes (headers, body, overhead) */
};

/* Everything a key is made of. All borrowed. */
struct lg_cache_key_input {
    const char *method; /* GET for HEAD: both share entries */
    const struct lg_conf_route *route;
    const struct lg_router_match *match; /* path parameters */
    const char *raw_query;               /* without '?'; NULL or "" when none */
    size_t raw_query_len;
    const struct lg_http_header *headers; /* the request's */
    size_t nheaders;
    const char *identity; /* used when route->cache->per_user; NULL = none */
};

/* The key: SHA-256 over the method, the route key, the path parameters
 * (name and decoded value, in template order), the values of the route's
 * key_query parameters (names matched exactly, values as sent, repeated
 * values in order; parameters sorted by name so that their order in the
 * URL does not matter; an absent parameter differs from an empty one),
 * the values of its key_headers (names case-insensitive, values as sent,
 * repeated headers in order, sorted by name), and the identity when
 * per_user. Each part is length-prefixed, so no two different inputs
 * share a key by concatenation. Parameters and headers not named do not
 * change the key. */
void lg_cache_key(const struct lg_cache_key_input *in, uint8_t out[LG_CACHE_KEY_LEN]);
/* Lowercase hex of key into out (65 bytes with the NUL). */
void lg_cache_key_hex(const uint8_t key[LG_CACHE_KEY_LEN], char out[2 * LG_CACHE_KEY_LEN + 1]);

/* Whether a function's answer may be stored, and for how long: a 2xx
 * status; no Set-Cookie header; no Cache-Control no-store, no-cache or
 * private; a body of at most LG_CACHE_ENTRY_MAX bytes. The TTL is
 * route_ttl_s, or the function's Cache-Control max-age (or s-maxage) when
 * shorter; max-age=0 means not stored. Returns true with *ttl_s set (>= 1)
 * when storable. */
bool lg_cache_storable(int status, const struct lg_http_header *headers, size_t nheaders,
                       size_t body_len, int64_t route_ttl_s, int64_t *ttl_s);

/* True when the request's Cache-Control asks for a refetch (max-age=0 or
 * no-cache). */
bool lg_cache_request_refetch(const struct lg_http_header *headers, size_t nheaders);

/* A new entry (refcount 1) copying headers and body; NULL on no memory.
 * Headers that must not be replayed (hop-by-hop, Date, Content-Length,
 * x-request-id, Age, X-Cache) are left out. */
struct lg_cache_entry *lg_cache_entry_new(int status, const struct lg_http_header *headers,
                                          size_t nheaders, const void *body, size_t body_len,
                                          int64_t stored_ms, int64_t ttl_ms, int64_t stale_ms);
struct lg_cache_entry *lg_cache_entry_ref(struct lg_cache_entry *e);
/* Drop a reference; accepts NULL. */
void lg_cache_entry_unref(struct lg_cache_entry *e);

/* Entries travel to and from Redis in this binary-safe encoding (a
 * version byte, then length-prefixed fields). Decoding treats its input as
 * hostile: every length is bounded (the whole at most LG_CACHE_ENTRY_MAX +
 * 64 KiB, headers at most 256), header names must be tokens and values
 * free of CR, LF and NUL, status 200-299; anything else is NULL. */
int lg_cache_encode(const struct lg_cache_entry *e, struct lg_buf *out) LG_WUR;
struct lg_cache_entry *lg_cache_decode(const void *data, size_t len);

/* The memory store of an instance, shared by its workers (thread-safe):
 * a hash of key -> entry under sharded mutexes, bounded by max_bytes (the
 * sum of the entries' size) with least-recently-used eviction across the
 * whole store (or per shard with max_bytes divided among shards; say which
 * in the implementation). Entries past their stale window are dropped
 * when met. */
struct lg_cache_mem;
struct lg_cache_mem *lg_cache_mem_new(size_t max_bytes);
void lg_cache_mem_free(struct lg_cache_mem *m);
/* The entry for key (a new reference; caller unrefs), fresh or within its
 * stale window at now_ms, or NULL. */
struct lg_cache_entry *lg_cache_mem_get(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN],
                                        int64_t now_ms);
/* Store e under key (a reference is taken), replacing any entry. An entry
 * larger than max_bytes is not stored. */
void lg_cache_mem_put(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN],
                      struct lg_cache_entry *e);
/* Forget the entry of key, if any. */
void lg_cache_mem_remove(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN]);
/* Fill coalescing: true when the caller becomes the one filling key (no
 * fill in progress, or the last one started more than stale_after_ms
 * ago); false when another request is filling it. The filler calls
 * lg_cache_mem_unlock after storing (or failing). */
bool lg_cache_mem_lock(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN], int64_t now_ms,
                       int64_t stale_after_ms);
void lg_cache_mem_unlock(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN]);
/* True while a fill of key is in progress. */
bool lg_cache_mem_locked(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN]);
/* Bytes and entries held now. */
size_t lg_cache_mem_bytes(struct lg_cache_mem *m);
size_t lg_cache_mem_count(struct lg_cache_mem *m);

/* ---------- One request's use of the cache ---------- */

struct event_base;
struct lg_redis;

/* How long a request waits for another request's fill of the same key
 * before invoking the function itself, at most. */
#define LG_CACHE_WAIT_MAX_MS 10000

enum lg_cache_outcome {
    LG_CACHE_HIT,     /* a fresh entry: serve it */
    LG_CACHE_FILL,    /* invoke the function, then lg_cache_req_store() its answer */
    LG_CACHE_BYPASS,  /* the store cannot be used (Redis down or slow): invoke, store nothing */
    LG_CACHE_PENDING, /* looking up or waiting for another fill: the callback tells */
};

struct lg_cache_req;
typedef void (*lg_cache_cb)(struct lg_cache_req *cr, enum lg_cache_outcome outcome, void *arg);

/* Where and how one request uses the cache. All borrowed for the call. */
struct lg_cache_req_params {
    struct event_base *base;  /* the worker's loop */
    struct lg_cache_mem *mem; /* the instance's memory store (used unless redis) */
    struct lg_redis *redis;   /* the worker's Redis client with store "redis", else NULL */
    const char *redis_prefix; /* redis.prefix */
    const struct lg_conf_route *route;
    int64_t default_ttl_s; /* cache.ttl_s */
    bool refetch;          /* a permitted Cache-Control: max-age=0: skip the lookup */
    int64_t now_ms;        /* wall clock */
};

/* Start: look key up, and on a miss become its filler (coalescing: one
 * filler per key in the instance, or across instances with Redis through
 * a short lock key "<prefix>cl:<hex>"; the others wait for its entry,
 * polling, up to the route's timeout bounded by LG_CACHE_WAIT_MAX_MS, then
 * fill themselves). Returns the outcome at once when known (the callback
 * is then not called), or LG_CACHE_PENDING and cb(cr, outcome, arg) runs
 * later with HIT, FILL or BYPASS. NULL on no memory (treat as BYPASS). */
struct lg_cache_req *lg_cache_req_start(const struct lg_cache_req_params *p,
                                        const uint8_t key[LG_CACHE_KEY_LEN], lg_cache_cb cb,
                                        void *arg, enum lg_cache_outcome *outcome);
/* The entry of a HIT (borrowed until lg_cache_req_free). */
struct lg_cache_entry *lg_cache_req_hit(struct lg_cache_req *cr);
/* An expired entry still within its stale_if_error window, seen during
 * the lookup (borrowed), or NULL. */
struct lg_cache_entry *lg_cache_req_stale(struct lg_cache_req *cr, int64_t now_ms);
/* The filler's answer: stored when lg_cache_storable() says so (in memory,
 * or in Redis with SET PX); a refetch whose answer may not be stored
 * removes the old entry instead. Then the fill lock is released. Returns
 * true when stored. */
bool lg_cache_req_store(struct lg_cache_req *cr, int status, const struct lg_http_header *headers,
                        size_t nheaders, const void *body, size_t body_len, int64_t now_ms);
/* Release: a fill lock still held is given back, a pending step
 * cancelled (its callback will not run). Accepts NULL. */
void lg_cache_req_free(struct lg_cache_req *cr);

#endif
