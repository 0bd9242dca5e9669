/* cache.c - response cache: keys, storable rules, entries, Redis encoding, memory store. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lambdagate/cache.h"
#include "lambdagate/codec.h"
#include "lambdagate/redis.h"

/* Bytes counted for an entry beyond its body and header text: the struct,
 * the allocator's bookkeeping and the store's index item. */
#define CACHE_ENTRY_OVERHEAD 128u
/* Bytes counted per stored header beyond its name and value. */
#define CACHE_HEADER_OVERHEAD 32u

/* The encoding (see lg_cache_encode): a version byte first, so that a
 * layout change makes old instances see garbage (a miss), never a
 * misread entry. */
#define CACHE_FORMAT_VERSION 1u
/* version, status u16, stored/ttl/stale i64, nheaders u16 */
#define CACHE_FORMAT_HEAD 29u
/* name_len u16, value_len u32 */
#define CACHE_FORMAT_PER_HEADER 6u
/* body_len u32 */
#define CACHE_FORMAT_TAIL 4u
#define CACHE_ENCODED_MAX ((size_t)LG_CACHE_ENTRY_MAX + 64u * 1024u)
#define CACHE_HEADERS_MAX 256u
/* Times an encoded entry may carry: a stored time in the next few
 * hundred thousand years, a TTL of at most LG_CACHE_TTL_MAX_S, a stale
 * window of a week (the config allows a day). Bounded so that stored +
 * ttl + stale never overflows. */
#define CACHE_STORED_MAX_MS ((int64_t)1 << 53)
#define CACHE_TTL_MAX_MS    ((int64_t)LG_CACHE_TTL_MAX_S * 1000)
#define CACHE_STALE_MAX_MS  ((int64_t)7 * 86400 * 1000)

/* ---- Keys ------------------------------------------------------------ */

/* Hashed first: bumped whenever the layout of the key changes, so that
 * instances of different versions sharing a Redis never read each
 * other's entries. */
static const char key_domain[] = "lambdagate cache key v1";

/* A SHA-256 in progress; ok turns false at the first OpenSSL failure. */
struct key_hash {
    EVP_MD_CTX *ctx;
    bool ok;
};

static void key_bytes(struct key_hash *h, const void *p, size_t n)
{
    if (h->ok && n > 0 && EVP_DigestUpdate(h->ctx, p, n) != 1)
        h->ok = false;
}

static void key_tag(struct key_hash *h, char tag)
{
    key_bytes(h, &tag, 1);
}

/* A length-prefixed part (64-bit big-endian length): no two sequences of
 * parts hash the same bytes by concatenation. */
static void key_part(struct key_hash *h, const char *p, size_t n)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    key_bytes(h, len, sizeof(len));
    key_bytes(h, p, n);
}

/* The smallest of names[] that sorts after prev (NULL: the smallest of
 * all), or NULL when none does. Walking names this way visits them sorted
 * without allocating and skips duplicates; routes have at most 32. */
static const char *next_name(char *const *names, size_t n, const char *prev)
{
    const char *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || (prev != NULL && strcmp(names[i], prev) <= 0))
            continue;
        if (best == NULL || strcmp(names[i], best) < 0)
            best = names[i];
    }
    return best;
}

/* Whether the raw query parameter name raw[0..n), percent-decoded once
 * with '+' as a space, is exactly want. A malformed escape or a decoded
 * NUL matches nothing, as lg_codec_pct_decode() would refuse it. Compares
 * while decoding, so no buffer is needed. */
static bool query_name_is(const char *raw, size_t n, const char *want)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3)
                return false;
            int hi = lg_codec_hex_value((unsigned char)raw[i + 1]);
            int lo = lg_codec_hex_value((unsigned char)raw[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        /* A decoded NUL fails here too: want[j] is either the end (no
         * match) or a byte that is not NUL. */
        if (want[j] == '\0' || (unsigned char)want[j] != c)
            return false;
        j++;
    }
    return want[j] == '\0';
}

/* Hash the values of query parameter name in query order, raw. Each value
 * is tagged 'v'; a parameter without '=' has the empty value, so "?a" and
 * "?a=" agree while an absent "a" hashes no value at all. */
static void key_query_values(struct key_hash *h, const char *q, size_t qlen, const char *name)
{
    size_t i = 0;
    while (i < qlen) {
        const char *start = q + i;
        const char *amp = memchr(start, '&', qlen - i);
        size_t len = amp ? (size_t)(amp - start) : qlen - i;
        i += len + 1;
        if (len == 0)
            continue;
        const char *eq = memchr(start, '=', len);
        size_t name_len = eq ? (size_t)(eq - start) : len;
        if (!query_name_is(start, name_len, name))
            continue;
        key_tag(h, 'v');
        if (eq)
            key_part(h, eq + 1, len - name_len - 1);
        else
            key_part(h, "", 0);
    }
}

/* A key that is no other request's, for when SHA-256 cannot be computed
 * (out of memory): the request misses and what it stores is never found,
 * rather than every request sharing one all-zero key. */
static void key_unique(uint8_t out[LG_CACHE_KEY_LEN])
{
    static uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t words[4] = {
        __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
        (uint64_t)getpid(),
        (uint64_t)ts.tv_sec,
        (uint64_t)ts.tv_nsec,
    };
    memcpy(out, words, LG_CACHE_KEY_LEN);
    unsigned char noise[LG_CACHE_KEY_LEN];
    if (RAND_bytes(noise, sizeof(noise)) == 1) {
        for (size_t i = 0; i < LG_CACHE_KEY_LEN; i++)
            out[i] ^= noise[i];
    }
}

void lg_cache_key(const struct lg_cache_key_input *in, uint8_t out[LG_CACHE_KEY_LEN])
{
    struct key_hash h = {EVP_MD_CTX_new(), true};
    if (h.ctx == NULL || EVP_DigestInit_ex(h.ctx, EVP_sha256(), NULL) != 1)
        h.ok = false;
    const struct lg_conf_route *route = in->route;
    const struct lg_conf_route_cache *rc = route ? route->cache : NULL;

    key_part(&h, key_domain, sizeof(key_domain) - 1);
    const char *method = in->method ? in->method : "";
    key_tag(&h, 'M');
    key_part(&h, method, strlen(method));
    /* route_key ("GET /users/{id}") names the route uniquely: the router
     * refuses two routes of one method and template shape. */
    const char *route_key = route && route->route_key ? route->route_key : "";
    key_tag(&h, 'R');
    key_part(&h, route_key, strlen(route_key));

    key_tag(&h, 'P');
    if (in->match) {
        for (size_t i = 0; i < in->match->nparams && i < LG_ROUTER_MAX_PARAMS; i++) {
            const struct lg_router_param *p = &in->match->params[i];
            key_tag(&h, 'p');
            key_part(&h, p->name ? p->name : "", p->name ? strlen(p->name) : 0);
            key_part(&h, p->value ? p->value : "", p->value ? p->value_len : 0);
        }
    }

    /* Every named parameter and header is hashed, present or not, each
     * closed by 'x': an absent one hashes 'n' name 'x', an empty one
     * 'n' name 'v' "" 'x'. */
    key_tag(&h, 'Q');
    if (rc) {
        const char *q = in->raw_query ? in->raw_query : "";
        size_t qlen = in->raw_query ? in->raw_query_len : 0;
        for (const char *name = next_name(rc->key_query, rc->nkey_query, NULL); name;
             name = next_name(rc->key_query, rc->nkey_query, name)) {
            key_tag(&h, 'n');
            key_part(&h, name, strlen(name));
            key_query_values(&h, q, qlen, name);
            key_tag(&h, 'x');
        }
    }

    key_tag(&h, 'H');
    if (rc) {
        for (const char *name = next_name(rc->key_headers, rc->nkey_headers, NULL); name;
             name = next_name(rc->key_headers, rc->nkey_headers, name)) {
            key_tag(&h, 'n');
            key_part(&h, name, strlen(name));
            for (size_t i = 0; i < in->nheaders; i++) {
                const struct lg_http_header *hd = &in->headers[i];
                if (!lg_http_ieq(hd->name, hd->name_len, name))
                    continue;
                key_tag(&h, 'v');
                key_part(&h, hd->value, hd->value_len);
            }
            key_tag(&h, 'x');
        }
    }

    /* 0: shared by everyone; 1: this identity; 2: per user, but the caller
     * has none (never the same as the empty identity). */
    key_tag(&h, 'U');
    if (rc == NULL || !rc->per_user) {
        key_tag(&h, '0');
    } else if (in->identity == NULL) {
        key_tag(&h, '2');
    } else {
        key_tag(&h, '1');
        key_part(&h, in->identity, strlen(in->identity));
    }

    unsigned int md_len = 0;
    if (!h.ok || EVP_DigestFinal_ex(h.ctx, out, &md_len) != 1 || md_len != LG_CACHE_KEY_LEN)
        key_unique(out);
    EVP_MD_CTX_free(h.ctx);
}

void lg_cache_key_hex(const uint8_t key[LG_CACHE_KEY_LEN], char out[2 * LG_CACHE_KEY_LEN + 1])
{
    lg_codec_hex(out, key, LG_CACHE_KEY_LEN);
}

/* ---- Cache-Control ---------------------------------------------------- */

/* What the Cache-Control headers of a message say. Seconds are -1 when
 * absent or unusable. */
struct cache_control {
    bool no_store;
    bool no_cache;
    bool private_;
    int64_t max_age;
    int64_t s_maxage;
};

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_tchar(char c)
{
    return lg_http_is_token(&c, 1);
}

/* delta-seconds (RFC 9111 section 1.2.2): digits only. A value too large to
 * represent counts as 2^31, as the RFC asks, not as garbage. -1 when it is
 * not a number. */
static int64_t delta_seconds(const char *s, size_t n)
{
    if (n == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v < ((int64_t)1 << 31))
            v = v * 10 + (s[i] - '0');
    }
    return v > ((int64_t)1 << 31) ? ((int64_t)1 << 31) : v;
}

/* Keep the smallest of several valid values of one directive: a
 * repeated max-age is contradictory, and the shorter life is the safe
 * reading. */
static void cc_seconds(int64_t *slot, int64_t v)
{
    if (v >= 0 && (*slot < 0 || v < *slot))
        *slot = v;
}

/* Index just past a quoted-string starting at s[i] == '"', or n when it
 * is not closed (*closed false); a backslash escapes the next byte. */
static size_t skip_quoted(const char *s, size_t n, size_t i, bool *closed)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\') {
            i++;
        } else if (s[i] == '"') {
            *closed = true;
            return i + 1;
        }
    }
    *closed = false;
    return n;
}

/* Parse one Cache-Control field value into cc: directives separated by
 * commas, names case-insensitive, OWS anywhere between the parts, values
 * a token or a quoted-string (whose commas do not split). A directive
 * followed by junk before the next comma keeps its name (no-store still
 * counts) but loses its value. */
static void cc_parse(const char *s, size_t n, struct cache_control *cc)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(s[i]) || s[i] == ','))
            i++;
        if (i == n)
            break;
        const char *name = s + i;
        while (i < n && is_tchar(s[i]))
            i++;
        size_t name_len = (size_t)(s + i - name);
        const char *value = NULL;
        size_t value_len = 0;
        bool junk = name_len == 0;

        size_t j = i;
        while (j < n && is_ows(s[j]))
            j++;
        if (!junk && j < n && s[j] == '=') {
            j++;
            while (j < n && is_ows(s[j]))
                j++;
            if (j < n && s[j] == '"') {
                bool closed;
                size_t end = skip_quoted(s, n, j, &closed);
                if (closed) {
                    value = s + j + 1;
                    value_len = end - j - 2;
                } else {
                    junk = true;
                }
                j = end;
            } else {
                value = s + j;
                while (j < n && is_tchar(s[j]))
                    j++;
                value_len = (size_t)(s + j - value);
            }
            i = j;
        }
        /* The rest up to the next comma outside quotes must be OWS. */
        while (i < n && s[i] != ',') {
            if (s[i] == '"') {
                bool closed;
                i = skip_quoted(s, n, i, &closed);
                junk = true;
            } else {
                if (!is_ows(s[i]))
                    junk = true;
                i++;
            }
        }
        if (name_len == 0)
            continue;
        if (lg_http_ieq(name, name_len, "no-store")) {
            cc->no_store = true;
        } else if (lg_http_ieq(name, name_len, "no-cache")) {
            cc->no_cache = true; /* no-cache="field" too: be conservative */
        } else if (lg_http_ieq(name, name_len, "private")) {
            cc->private_ = true;
        } else if (lg_http_ieq(name, name_len, "max-age")) {
            if (!junk && value)
                cc_seconds(&cc->max_age, delta_seconds(value, value_len));
        } else if (lg_http_ieq(name, name_len, "s-maxage")) {
            if (!junk && value)
                cc_seconds(&cc->s_maxage, delta_seconds(value, value_len));
        }
    }
}

/* Every Cache-Control header of a message, merged. */
static void cc_collect(const struct lg_http_header *headers, size_t n, struct cache_control *cc)
{
    *cc = (struct cache_control){.max_age = -1, .s_maxage = -1};
    for (size_t i = 0; i < n; i++) {
        if (lg_http_ieq(headers[i].name, headers[i].name_len, "cache-control"))
            cc_parse(headers[i].value, headers[i].value_len, cc);
    }
}

bool lg_cache_storable(int status, const struct lg_http_header *headers, size_t nheaders,
                       size_t body_len, int64_t route_ttl_s, int64_t *ttl_s)
{
    *ttl_s = 0;
    if (status < 200 || status > 299 || body_len > LG_CACHE_ENTRY_MAX || route_ttl_s <= 0)
        return false;
    for (size_t i = 0; i < nheaders; i++) {
        /* One user's cookie must never be replayed to another. */
        if (lg_http_ieq(headers[i].name, headers[i].name_len, "set-cookie"))
            return false;
    }
    struct cache_control cc;
    cc_collect(headers, nheaders, &cc);
    if (cc.no_store || cc.no_cache || cc.private_)
        return false;
    int64_t ttl = route_ttl_s < LG_CACHE_TTL_MAX_S ? route_ttl_s : LG_CACHE_TTL_MAX_S;
    /* We are a shared cache: s-maxage, when usable, overrides max-age. */
    int64_t function_ttl = cc.s_maxage >= 0 ? cc.s_maxage : cc.max_age;
    if (function_ttl >= 0 && function_ttl < ttl)
        ttl = function_ttl;
    if (ttl < 1)
        return false;
    *ttl_s = ttl;
    return true;
}

bool lg_cache_request_refetch(const struct lg_http_header *headers, size_t nheaders)
{
    struct cache_control cc;
    cc_collect(headers, nheaders, &cc);
    return cc.max_age == 0 || cc.no_cache;
}

/* ---- Entries ---------------------------------------------------------- */

/* A value the encoding can carry: no CR, LF or NUL. */
static bool value_storable(const char *v, size_t n)
{
    return memchr(v, '\r', n) == NULL && memchr(v, '\n', n) == NULL && memchr(v, '\0', n) == NULL;
}

/* Whether a function's header is replayed from the cache. Beside the
 * headers that belong to one hop or one answer, a header the encoding
 * could not carry is left out, so that every entry round-trips. */
static bool header_replayable(const struct lg_http_header *h, const struct lg_http_header *all,
                              size_t n)
{
    static const char *const per_answer[] = {"date", "content-length", "x-request-id", "age",
                                             "x-cache"};
    if (!lg_http_is_token(h->name, h->name_len) || !value_storable(h->value, h->value_len))
        return false;
    for (size_t i = 0; i < LG_ARRAY_LEN(per_answer); i++) {
        if (lg_http_ieq(h->name, h->name_len, per_answer[i]))
            return false;
    }
    return !lg_http_is_hop_by_hop(h->name, h->name_len, all, n);
}

/* Build an entry in one allocation: the struct, the header array, the
 * header text (each name and value NUL-terminated), the body. With
 * filter, headers that must not be replayed are left out; without it
 * (decoding) every header is kept. NULL on no memory or absurd sizes. */
static struct lg_cache_entry *entry_build(int status, const struct lg_http_header *headers,
                                          size_t nheaders, bool filter, const void *body,
                                          size_t body_len, int64_t stored_ms, int64_t ttl_ms,
                                          int64_t stale_ms)
{
    size_t keep = 0, text = 0, counted = 0;
    for (size_t i = 0; i < nheaders; i++) {
        const struct lg_http_header *h = &headers[i];
        if (filter && !header_replayable(h, headers, nheaders))
            continue;
        /* Absurd lengths are refused before any sum can overflow. */
        if (h->name_len >= SIZE_MAX / 16 || h->value_len >= SIZE_MAX / 16 || text >= SIZE_MAX / 8)
            return NULL;
        size_t add = h->name_len + h->value_len;
        text += add + 2;
        counted += add + CACHE_HEADER_OVERHEAD;
        keep++;
    }
    if (body_len > SIZE_MAX / 4 || keep > SIZE_MAX / 4 / sizeof(struct lg_http_header))
        return NULL;
    size_t fixed = sizeof(struct lg_cache_entry) + keep * sizeof(struct lg_http_header);
    char *block = malloc(fixed + text + body_len);
    if (block == NULL)
        return NULL;
    /* struct lg_cache_entry's size is a multiple of its alignment (it holds
     * pointers and int64_t), so the header array after it is aligned. */
    struct lg_cache_entry *e = (struct lg_cache_entry *)(void *)block;
    memset(e, 0, sizeof(*e));
    e->refcount = 1;
    e->status = status;
    e->headers = keep ? (struct lg_http_header *)(void *)(block + sizeof(*e)) : NULL;
    e->nheaders = keep;
    char *p = block + fixed;
    size_t k = 0;
    for (size_t i = 0; i < nheaders; i++) {
        const struct lg_http_header *h = &headers[i];
        if (filter && !header_replayable(h, headers, nheaders))
            continue;
        struct lg_http_header *out = &e->headers[k++];
        if (h->name_len)
            memcpy(p, h->name, h->name_len);
        p[h->name_len] = '\0';
        out->name = p;
        out->name_len = h->name_len;
        p += h->name_len + 1;
        if (h->value_len)
            memcpy(p, h->value, h->value_len);
        p[h->value_len] = '\0';
        out->value = p;
        out->value_len = h->value_len;
        p += h->value_len + 1;
    }
    if (body_len > 0) {
        e->body = p;
        memcpy(p, body, body_len);
    }
    e->body_len = body_len;
    e->stored_ms = stored_ms;
    e->ttl_ms = ttl_ms;
    e->stale_ms = stale_ms;
    e->size = CACHE_ENTRY_OVERHEAD + body_len + counted;
    return e;
}

struct lg_cache_entry *lg_cache_entry_new(int status, const struct lg_http_header *headers,
                                          size_t nheaders, const void *body, size_t body_len,
                                          int64_t stored_ms, int64_t ttl_ms, int64_t stale_ms)
{
    return entry_build(status, headers, nheaders, true, body, body_len, stored_ms, ttl_ms,
                       stale_ms);
}

struct lg_cache_entry *lg_cache_entry_ref(struct lg_cache_entry *e)
{
    __atomic_add_fetch(&e->refcount, 1, __ATOMIC_RELAXED);
    return e;
}

void lg_cache_entry_unref(struct lg_cache_entry *e)
{
    if (e == NULL)
        return;
    /* One block holds the headers and body too (entry_build). */
    if (__atomic_sub_fetch(&e->refcount, 1, __ATOMIC_ACQ_REL) == 0)
        free(e);
}

/* ---- Encoding ----------------------------------------------------------
 *
 * Version 1, integers big-endian:
 *   u8 version (1) | u16 status | i64 stored_ms | i64 ttl_ms | i64 stale_ms
 *   | u16 nheaders | nheaders x (u16 name_len, name, u32 value_len, value)
 *   | u32 body_len | body
 * and nothing after. */

/* The size of e's encoding, or 0 when it breaks a rule that decoding
 * enforces (so nothing is stored that would later read as garbage). */
static size_t encoded_size(const struct lg_cache_entry *e)
{
    if (e->status < 200 || e->status > 299 || e->nheaders > CACHE_HEADERS_MAX ||
        e->body_len > LG_CACHE_ENTRY_MAX)
        return 0;
    if (e->stored_ms < 0 || e->stored_ms > CACHE_STORED_MAX_MS || e->ttl_ms < 0 ||
        e->ttl_ms > CACHE_TTL_MAX_MS || e->stale_ms < 0 || e->stale_ms > CACHE_STALE_MAX_MS)
        return 0;
    size_t total = CACHE_FORMAT_HEAD + CACHE_FORMAT_TAIL + e->body_len;
    for (size_t i = 0; i < e->nheaders; i++) {
        const struct lg_http_header *h = &e->headers[i];
        if (h->name_len > UINT16_MAX || h->value_len > CACHE_ENCODED_MAX ||
            !lg_http_is_token(h->name, h->name_len) || !value_storable(h->value, h->value_len))
            return 0;
        total += CACHE_FORMAT_PER_HEADER + h->name_len + h->value_len;
        if (total > CACHE_ENCODED_MAX)
            return 0;
    }
    return total > CACHE_ENCODED_MAX ? 0 : total;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

int lg_cache_encode(const struct lg_cache_entry *e, struct lg_buf *out)
{
    size_t total = encoded_size(e);
    if (total == 0 || lg_buf_reserve(out, total) != 0)
        return -1;
    /* The room is there: write straight into it. */
    unsigned char *p = (unsigned char *)out->data + out->len;
    p[0] = CACHE_FORMAT_VERSION;
    put_be(p + 1, (uint64_t)e->status, 2);
    put_be(p + 3, (uint64_t)e->stored_ms, 8);
    put_be(p + 11, (uint64_t)e->ttl_ms, 8);
    put_be(p + 19, (uint64_t)e->stale_ms, 8);
    put_be(p + 27, (uint64_t)e->nheaders, 2);
    p += CACHE_FORMAT_HEAD;
    for (size_t i = 0; i < e->nheaders; i++) {
        const struct lg_http_header *h = &e->headers[i];
        put_be(p, h->name_len, 2);
        p += 2;
        memcpy(p, h->name, h->name_len);
        p += h->name_len;
        put_be(p, h->value_len, 4);
        p += 4;
        if (h->value_len)
            memcpy(p, h->value, h->value_len);
        p += h->value_len;
    }
    put_be(p, e->body_len, 4);
    p += 4;
    if (e->body_len)
        memcpy(p, e->body, e->body_len);
    out->len += total;
    out->data[out->len] = '\0';
    return 0;
}

/* A bounds-checked reader over hostile bytes; ok turns false at the first
 * read past the end and stays false. */
struct reader {
    const unsigned char *p;
    size_t left;
    bool ok;
};

static uint64_t read_be(struct reader *r, size_t bytes)
{
    if (!r->ok || r->left < bytes) {
        r->ok = false;
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++)
        v = v << 8 | r->p[i];
    r->p += bytes;
    r->left -= bytes;
    return v;
}

static const char *read_bytes(struct reader *r, size_t n)
{
    if (!r->ok || r->left < n) {
        r->ok = false;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    r->left -= n;
    return s;
}

struct lg_cache_entry *lg_cache_decode(const void *data, size_t len)
{
    if (data == NULL || len < CACHE_FORMAT_HEAD + CACHE_FORMAT_TAIL || len > CACHE_ENCODED_MAX)
        return NULL;
    struct reader r = {data, len, true};
    if (read_be(&r, 1) != CACHE_FORMAT_VERSION)
        return NULL;
    uint64_t status = read_be(&r, 2);
    int64_t stored_ms = (int64_t)read_be(&r, 8);
    int64_t ttl_ms = (int64_t)read_be(&r, 8);
    int64_t stale_ms = (int64_t)read_be(&r, 8);
    uint64_t nheaders = read_be(&r, 2);
    if (!r.ok || status < 200 || status > 299 || nheaders > CACHE_HEADERS_MAX)
        return NULL;
    if (stored_ms < 0 || stored_ms > CACHE_STORED_MAX_MS || ttl_ms < 0 ||
        ttl_ms > CACHE_TTL_MAX_MS || stale_ms < 0 || stale_ms > CACHE_STALE_MAX_MS)
        return NULL;
    /* Each header takes at least 7 bytes (a name is never empty), so a
     * count the input cannot hold is refused before allocating. */
    if (nheaders * (CACHE_FORMAT_PER_HEADER + 1) > r.left)
        return NULL;
    struct lg_http_header *headers = NULL;
    if (nheaders > 0 && (headers = calloc(nheaders, sizeof(*headers))) == NULL)
        return NULL;
    struct lg_cache_entry *e = NULL;
    for (size_t i = 0; i < nheaders; i++) {
        size_t name_len = read_be(&r, 2);
        const char *name = read_bytes(&r, name_len);
        size_t value_len = read_be(&r, 4);
        const char *value = read_bytes(&r, value_len);
        if (!r.ok || !lg_http_is_token(name, name_len) || !value_storable(value, value_len))
            goto out;
        headers[i] = (struct lg_http_header){name, name_len, value, value_len};
    }
    size_t body_len = read_be(&r, 4);
    if (body_len > LG_CACHE_ENTRY_MAX)
        goto out;
    const char *body = read_bytes(&r, body_len);
    if (!r.ok || r.left != 0)
        goto out;
    e = entry_build((int)status, headers, nheaders, false, body, body_len, stored_ms, ttl_ms,
                    stale_ms);
out:
    free(headers);
    return e;
}

/* ---- Memory store -------------------------------------------------------
 *
 * Sharded, with LRU per shard and max_bytes divided among the shards.
 * The shard count is chosen from max_bytes so that each shard holds at
 * least MEM_SHARD_MIN_BYTES: a small store (under 16 MiB) is a single
 * shard with one exact LRU over the whole store; a large one spreads the
 * workers over up to MEM_SHARDS_MAX mutexes, at the price of evicting by
 * recency within a shard rather than across the store. Every operation
 * is O(1) (amortised, for table growth) under one shard mutex; entries
 * are unreferenced and freed after the mutex is released. */

#define MEM_SHARDS_MAX      16u
#define MEM_SHARD_MIN_BYTES ((size_t)8 * 1024 * 1024)
#define MEM_TABLE_MIN       64u
#define MEM_TABLE_MAX       ((size_t)1 << 26)
/* Fill locks held at once in the whole store. Beyond that a would-be
 * filler fills without coalescing rather than wait for a fill that no
 * one records. */
#define MEM_LOCKS_MAX    4096u
#define MEM_LOCK_BUCKETS 64u

struct mem_item {
    struct mem_item *chain; /* next in the hash chain; the free list after eviction */
    struct mem_item *newer; /* LRU list, toward the most recently used */
    struct mem_item *older;
    uint64_t hash;
    uint8_t key[LG_CACHE_KEY_LEN];
    struct lg_cache_entry *entry; /* one reference */
};

struct mem_lock {
    struct mem_lock *chain;
    uint64_t hash;
    uint8_t key[LG_CACHE_KEY_LEN];
    int64_t started_ms;
};

/* Every field is guarded by mutex. */
struct mem_shard {
    pthread_mutex_t mutex;
    struct mem_item **table; /* chained hash, table_size a power of two */
    size_t table_size;
    size_t count;
    size_t bytes;
    size_t max_bytes;
    struct mem_item *newest;
    struct mem_item *oldest;
    struct mem_lock *locks[MEM_LOCK_BUCKETS];
    size_t nlocks;
    size_t max_locks;
};

struct lg_cache_mem {
    struct mem_shard *shards;
    size_t nshards;  /* a power of two */
    uint64_t k0, k1; /* SipHash key */
};

/* Keys are SHA-256 of client-chosen parts: a client can grind them to
 * share low bits and pile entries into one chain. A keyed hash (SipHash-
 * 2-4 with a per-store secret) places them where no client can predict. */
#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL64(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL64(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL64(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL64(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL64(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL64(v[2], 32);
}

static uint64_t mem_hash(const struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN])
{
    uint64_t v[4] = {m->k0 ^ 0x736f6d6570736575ULL, m->k1 ^ 0x646f72616e646f6dULL,
                     m->k0 ^ 0x6c7967656e657261ULL, m->k1 ^ 0x7465646279746573ULL};
    for (size_t i = 0; i < LG_CACHE_KEY_LEN; i += 8) {
        uint64_t w = 0;
        for (size_t b = 0; b < 8; b++)
            w |= (uint64_t)key[i + b] << (8 * b);
        v[3] ^= w;
        sip_round(v);
        sip_round(v);
        v[0] ^= w;
    }
    uint64_t last = (uint64_t)LG_CACHE_KEY_LEN << 56;
    v[3] ^= last;
    sip_round(v);
    sip_round(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The shard of a hash: its top bits, so that the low bits (the table
 * index) stay independent of the shard. */
static struct mem_shard *shard_of(const struct lg_cache_mem *m, uint64_t hash)
{
    return &m->shards[(hash >> 58) & (m->nshards - 1)];
}

/* a + b, saturating at INT64_MAX (entries from callers may hold any times). */
static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* True once now is past the entry's stale window: it can never be served
 * again. */
static bool entry_dead(const struct lg_cache_entry *e, int64_t now_ms)
{
    return now_ms >= add_sat(add_sat(e->stored_ms, e->ttl_ms > 0 ? e->ttl_ms : 0),
                             e->stale_ms > 0 ? e->stale_ms : 0);
}

static struct mem_item *shard_find(const struct mem_shard *sh, uint64_t hash,
                                   const uint8_t key[LG_CACHE_KEY_LEN])
{
    for (struct mem_item *it = sh->table[hash & (sh->table_size - 1)]; it; it = it->chain) {
        if (it->hash == hash && memcmp(it->key, key, LG_CACHE_KEY_LEN) == 0)
            return it;
    }
    return NULL;
}

static void lru_unlink(struct mem_shard *sh, struct mem_item *it)
{
    if (it->newer)
        it->newer->older = it->older;
    else
        sh->newest = it->older;
    if (it->older)
        it->older->newer = it->newer;
    else
        sh->oldest = it->newer;
    it->newer = it->older = NULL;
}

static void lru_push_newest(struct mem_shard *sh, struct mem_item *it)
{
    it->older = sh->newest;
    it->newer = NULL;
    if (sh->newest)
        sh->newest->newer = it;
    else
        sh->oldest = it;
    sh->newest = it;
}

static void lru_touch(struct mem_shard *sh, struct mem_item *it)
{
    if (sh->newest != it) {
        lru_unlink(sh, it);
        lru_push_newest(sh, it);
    }
}

/* Take it out of the table, the LRU list and the accounting; the caller
 * releases it (after unlocking) with item_free. */
static void shard_remove(struct mem_shard *sh, struct mem_item *it)
{
    struct mem_item **p = &sh->table[it->hash & (sh->table_size - 1)];
    while (*p != it)
        p = &(*p)->chain;
    *p = it->chain;
    it->chain = NULL;
    lru_unlink(sh, it);
    sh->count--;
    sh->bytes -= it->entry->size;
}

/* Double the table when it holds more items than buckets. On no memory
 * the old table stays: chains grow longer, nothing breaks. */
static void shard_maybe_grow(struct mem_shard *sh)
{
    if (sh->count <= sh->table_size || sh->table_size >= MEM_TABLE_MAX)
        return;
    size_t size = sh->table_size * 2;
    struct mem_item **table = calloc(size, sizeof(*table));
    if (table == NULL)
        return;
    for (size_t i = 0; i < sh->table_size; i++) {
        struct mem_item *it = sh->table[i];
        while (it) {
            struct mem_item *next = it->chain;
            it->chain = table[it->hash & (size - 1)];
            table[it->hash & (size - 1)] = it;
            it = next;
        }
    }
    free(sh->table);
    sh->table = table;
    sh->table_size = size;
}

/* Free a list of removed items linked by chain, dropping their entries. */
static void items_free(struct mem_item *it)
{
    while (it) {
        struct mem_item *next = it->chain;
        lg_cache_entry_unref(it->entry);
        free(it);
        it = next;
    }
}

/* A secret for mem_hash: OpenSSL's generator, else the clock and the
 * address of the store (weak, but only chain lengths depend on it). */
static void mem_seed(struct lg_cache_mem *m)
{
    uint64_t k[2];
    if (RAND_bytes((unsigned char *)k, sizeof(k)) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)m;
        k[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)getpid();
    }
    m->k0 = k[0];
    m->k1 = k[1];
}

struct lg_cache_mem *lg_cache_mem_new(size_t max_bytes)
{
    struct lg_cache_mem *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    size_t nshards = 1;
    while (nshards * 2 <= MEM_SHARDS_MAX && max_bytes / (nshards * 2) >= MEM_SHARD_MIN_BYTES)
        nshards *= 2;
    m->shards = calloc(nshards, sizeof(*m->shards));
    if (m->shards == NULL) {
        free(m);
        return NULL;
    }
    m->nshards = nshards;
    mem_seed(m);
    for (size_t i = 0; i < nshards; i++) {
        struct mem_shard *sh = &m->shards[i];
        /* The first shard takes the remainder: the budgets sum to max_bytes. */
        sh->max_bytes = max_bytes / nshards + (i == 0 ? max_bytes % nshards : 0);
        sh->max_locks = MEM_LOCKS_MAX / nshards;
        sh->table_size = MEM_TABLE_MIN;
        sh->table = calloc(MEM_TABLE_MIN, sizeof(*sh->table));
        if (sh->table == NULL || pthread_mutex_init(&sh->mutex, NULL) != 0) {
            free(sh->table);
            sh->table = NULL;
            m->nshards = i; /* the shards made so far are freed below */
            lg_cache_mem_free(m);
            return NULL;
        }
    }
    return m;
}

void lg_cache_mem_free(struct lg_cache_mem *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nshards; i++) {
        struct mem_shard *sh = &m->shards[i];
        for (struct mem_item *it = sh->newest; it;) {
            struct mem_item *next = it->older;
            lg_cache_entry_unref(it->entry);
            free(it);
            it = next;
        }
        for (size_t b = 0; b < MEM_LOCK_BUCKETS; b++) {
            for (struct mem_lock *l = sh->locks[b]; l;) {
                struct mem_lock *next = l->chain;
                free(l);
                l = next;
            }
        }
        free(sh->table);
        pthread_mutex_destroy(&sh->mutex);
    }
    free(m->shards);
    free(m);
}

void lg_cache_mem_remove(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN])
{
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    pthread_mutex_lock(&sh->mutex);
    struct mem_item *it = shard_find(sh, hash, key);
    if (it) {
        shard_remove(sh, it);
        it->chain = NULL;
    }
    pthread_mutex_unlock(&sh->mutex);
    items_free(it);
}

struct lg_cache_entry *lg_cache_mem_get(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN],
                                        int64_t now_ms)
{
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    struct lg_cache_entry *found = NULL;
    struct mem_item *dead = NULL;
    pthread_mutex_lock(&sh->mutex);
    struct mem_item *it = shard_find(sh, hash, key);
    if (it && entry_dead(it->entry, now_ms)) {
        shard_remove(sh, it);
        dead = it;
    } else if (it) {
        lru_touch(sh, it);
        found = lg_cache_entry_ref(it->entry);
    }
    pthread_mutex_unlock(&sh->mutex);
    items_free(dead);
    return found;
}

/* A put whose entry cannot fit removes the key's old entry as well: the
 * new answer supersedes it, and serving the old one would undo a refetch. */
void lg_cache_mem_put(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN],
                      struct lg_cache_entry *e)
{
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    bool fits = e->size <= sh->max_bytes;
    struct mem_item *fresh = fits ? malloc(sizeof(*fresh)) : NULL;
    struct mem_item *released = NULL; /* freed after unlocking */
    struct lg_cache_entry *replaced = NULL;

    pthread_mutex_lock(&sh->mutex);
    struct mem_item *it = shard_find(sh, hash, key);
    if (it && fits) {
        replaced = it->entry;
        sh->bytes -= replaced->size;
        it->entry = lg_cache_entry_ref(e);
        sh->bytes += e->size;
        lru_touch(sh, it);
    } else if (it) {
        shard_remove(sh, it);
        released = it;
    } else if (fresh) {
        it = fresh;
        fresh = NULL;
        it->hash = hash;
        memcpy(it->key, key, LG_CACHE_KEY_LEN);
        it->entry = lg_cache_entry_ref(e);
        size_t b = hash & (sh->table_size - 1);
        it->chain = sh->table[b];
        sh->table[b] = it;
        lru_push_newest(sh, it);
        sh->count++;
        sh->bytes += e->size;
        shard_maybe_grow(sh);
    }
    /* The newest item fits alone, so this stops before reaching it. */
    while (sh->bytes > sh->max_bytes && sh->oldest) {
        struct mem_item *victim = sh->oldest;
        shard_remove(sh, victim);
        victim->chain = released;
        released = victim;
    }
    pthread_mutex_unlock(&sh->mutex);

    free(fresh);
    lg_cache_entry_unref(replaced);
    items_free(released);
}

static struct mem_lock **lock_slot(struct mem_shard *sh, uint64_t hash,
                                   const uint8_t key[LG_CACHE_KEY_LEN])
{
    struct mem_lock **p = &sh->locks[hash % MEM_LOCK_BUCKETS];
    while (*p && !((*p)->hash == hash && memcmp((*p)->key, key, LG_CACHE_KEY_LEN) == 0))
        p = &(*p)->chain;
    return p;
}

/* Drop the locks of fills that started more than stale_after_ms ago: their
 * fillers are presumed gone. Runs only when the shard's table is full. */
static void locks_purge(struct mem_shard *sh, int64_t now_ms, int64_t stale_after_ms)
{
    for (size_t b = 0; b < MEM_LOCK_BUCKETS; b++) {
        struct mem_lock **p = &sh->locks[b];
        while (*p) {
            if (add_sat((*p)->started_ms, stale_after_ms) < now_ms) {
                struct mem_lock *gone = *p;
                *p = gone->chain;
                free(gone);
                sh->nlocks--;
            } else {
                p = &(*p)->chain;
            }
        }
    }
}

bool lg_cache_mem_lock(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN], int64_t now_ms,
                       int64_t stale_after_ms)
{
    if (stale_after_ms < 0)
        stale_after_ms = 0;
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    bool mine = true;
    pthread_mutex_lock(&sh->mutex);
    struct mem_lock **slot = lock_slot(sh, hash, key);
    if (*slot) {
        if (add_sat((*slot)->started_ms, stale_after_ms) < now_ms)
            (*slot)->started_ms = now_ms; /* taken over */
        else
            mine = false;
    } else {
        if (sh->nlocks >= sh->max_locks) {
            locks_purge(sh, now_ms, stale_after_ms);
            slot = lock_slot(sh, hash, key);
        }
        struct mem_lock *l = sh->nlocks < sh->max_locks ? malloc(sizeof(*l)) : NULL;
        /* Without room the caller still fills, just unrecorded. */
        if (l) {
            l->chain = NULL;
            l->hash = hash;
            memcpy(l->key, key, LG_CACHE_KEY_LEN);
            l->started_ms = now_ms;
            *slot = l;
            sh->nlocks++;
        }
    }
    pthread_mutex_unlock(&sh->mutex);
    return mine;
}

void lg_cache_mem_unlock(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN])
{
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    struct mem_lock *gone = NULL;
    pthread_mutex_lock(&sh->mutex);
    struct mem_lock **slot = lock_slot(sh, hash, key);
    if (*slot) {
        gone = *slot;
        *slot = gone->chain;
        sh->nlocks--;
    }
    pthread_mutex_unlock(&sh->mutex);
    free(gone);
}

bool lg_cache_mem_locked(struct lg_cache_mem *m, const uint8_t key[LG_CACHE_KEY_LEN])
{
    uint64_t hash = mem_hash(m, key);
    struct mem_shard *sh = shard_of(m, hash);
    pthread_mutex_lock(&sh->mutex);
    bool locked = *lock_slot(sh, hash, key) != NULL;
    pthread_mutex_unlock(&sh->mutex);
    return locked;
}

size_t lg_cache_mem_bytes(struct lg_cache_mem *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->nshards; i++) {
        pthread_mutex_lock(&m->shards[i].mutex);
        total += m->shards[i].bytes;
        pthread_mutex_unlock(&m->shards[i].mutex);
    }
    return total;
}

size_t lg_cache_mem_count(struct lg_cache_mem *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->nshards; i++) {
        pthread_mutex_lock(&m->shards[i].mutex);
        total += m->shards[i].count;
        pthread_mutex_unlock(&m->shards[i].mutex);
    }
    return total;
}

/* ------------------------------------------------------------------------
 * One request's use of the cache
 *
 * Memory store: look up; on a miss take the key's fill lock (or wait for
 * the request holding it, polling the store). Redis store: the same with
 * GET, and a lock key set with SET NX PX so that one instance fills while
 * the others poll with GET. Every Redis step has the client's deadline; a
 * failed step turns the request into a BYPASS (fail open: the function
 * answers, nothing is stored).
 * ------------------------------------------------------------------------ */

/* Redis keys: the prefix (at most 200 bytes used) and a hex digest. */
#define CACHE_REDIS_KEY_MAX 280
#define WAIT_POLL_MEM_MS    10
#define WAIT_POLL_REDIS_MS  50

enum req_phase {
    PHASE_NONE = 0,
    PHASE_GET,  /* Redis GET of the entry */
    PHASE_LOCK, /* Redis SET NX of the lock key */
    PHASE_WAIT, /* polling for another request's fill */
};

struct lg_cache_req {
    struct event_base *base;
    struct lg_cache_mem *mem;
    struct lg_redis *redis;
    uint8_t key[LG_CACHE_KEY_LEN];
    char entry_key[CACHE_REDIS_KEY_MAX];
    size_t entry_key_len;
    char lock_key[CACHE_REDIS_KEY_MAX];
    size_t lock_key_len;
    int64_t ttl_s;
    int64_t stale_s;
    int64_t lock_ms; /* how long a fill lock lives (a filler that died) */
    int64_t wait_until_ms;
    int64_t min_stored_ms; /* entries stored before this are not HITs (a refetch) */
    bool holds_lock;
    bool refetch;
    enum req_phase phase;
    struct lg_redis_cmd *cmd;
    struct event *timer;
    struct lg_cache_entry *hit;
    struct lg_cache_entry *stale;
    lg_cache_cb cb;
    void *arg;
};

static bool entry_fresh(const struct lg_cache_entry *e, int64_t now_ms)
{
    return now_ms < add_sat(e->stored_ms, e->ttl_ms);
}

/* An entry met during the lookup: a HIT when fresh, else kept for
 * stale-if-error. Takes over the reference. Returns true on a HIT. */
static bool take_entry(struct lg_cache_req *cr, struct lg_cache_entry *e, int64_t now_ms)
{
    if (e == NULL)
        return false;
    /* A refetch takes only an entry filled after it began: the one it
     * asked for, filled by the request that held the lock. */
    if (entry_fresh(e, now_ms) && e->stored_ms >= cr->min_stored_ms) {
        lg_cache_entry_unref(cr->hit);
        cr->hit = e;
        return true;
    }
    lg_cache_entry_unref(cr->stale);
    cr->stale = e;
    return false;
}

static void finish(struct lg_cache_req *cr, enum lg_cache_outcome outcome)
{
    cr->phase = PHASE_NONE;
    cr->cb(cr, outcome, cr->arg);
}

static void ignore_reply(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    (void)status;
    (void)reply;
    (void)arg;
}

static struct lg_redis_cmd *redis_cmd(struct lg_cache_req *cr, int argc, const char *const *argv,
                                      const size_t *lens, lg_redis_cb cb)
{
    return lg_redis_command(cr->redis, argc, argv, lens, cb, cb == ignore_reply ? NULL : cr);
}

static void on_get(enum lg_redis_status status, const struct redisReply *reply, void *arg);
static void on_lock(enum lg_redis_status status, const struct redisReply *reply, void *arg);

static bool redis_get(struct lg_cache_req *cr)
{
    const char *argv[] = {"GET", cr->entry_key};
    size_t lens[] = {3, cr->entry_key_len};
    cr->cmd = redis_cmd(cr, 2, argv, lens, on_get);
    return cr->cmd != NULL;
}

static bool redis_lock(struct lg_cache_req *cr)
{
    char ms[24];
    int n = snprintf(ms, sizeof(ms), "%lld", (long long)cr->lock_ms);
    const char *argv[] = {"SET", cr->lock_key, "1", "NX", "PX", ms};
    size_t lens[] = {3, cr->lock_key_len, 1, 2, 2, (size_t)n};
    cr->phase = PHASE_LOCK;
    cr->cmd = redis_cmd(cr, 6, argv, lens, on_lock);
    return cr->cmd != NULL;
}

static void wait_arm(struct lg_cache_req *cr)
{
    cr->phase = PHASE_WAIT;
    int ms = cr->redis ? WAIT_POLL_REDIS_MS : WAIT_POLL_MEM_MS;
    struct timeval tv = {0, ms * 1000};
    if (cr->timer == NULL || event_add(cr->timer, &tv) != 0)
        finish(cr, LG_CACHE_FILL); /* cannot wait: fill without the lock */
}

static void on_get(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct lg_cache_req *cr = arg;
    cr->cmd = NULL;
    if (status != LG_REDIS_OK || reply == NULL ||
        (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        finish(cr, LG_CACHE_BYPASS);
        return;
    }
    int64_t now = lg_wall_ms();
    if (reply->type == REDIS_REPLY_STRING &&
        take_entry(cr, lg_cache_decode(reply->str, reply->len), now)) {
        finish(cr, LG_CACHE_HIT);
        return;
    }
    if (cr->phase == PHASE_WAIT && now >= cr->wait_until_ms) {
        finish(cr, LG_CACHE_FILL); /* waited long enough: fill without the lock */
        return;
    }
    if (!redis_lock(cr))
        finish(cr, LG_CACHE_BYPASS);
}

static void on_lock(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct lg_cache_req *cr = arg;
    cr->cmd = NULL;
    if (status != LG_REDIS_OK || reply == NULL) {
        finish(cr, LG_CACHE_BYPASS);
        return;
    }
    if (reply->type == REDIS_REPLY_STATUS) {
        cr->holds_lock = true;
        finish(cr, LG_CACHE_FILL);
        return;
    }
    if (reply->type != REDIS_REPLY_NIL) {
        finish(cr, LG_CACHE_BYPASS);
        return;
    }
    /* Another instance (or request) fills it: wait for its entry. */
    wait_arm(cr);
}

static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lg_cache_req *cr = arg;
    if (cr->redis) {
        if (!redis_get(cr))
            finish(cr, LG_CACHE_BYPASS);
        return;
    }
    int64_t now = lg_wall_ms();
    if (take_entry(cr, lg_cache_mem_get(cr->mem, cr->key, now), now)) {
        finish(cr, LG_CACHE_HIT);
        return;
    }
    /* The filler is done and left no entry (its answer could not be
     * stored): every waiter invokes now, together, rather than one after
     * another behind a lock that will bring nothing either. */
    if (!lg_cache_mem_locked(cr->mem, cr->key)) {
        finish(cr, LG_CACHE_FILL);
        return;
    }
    if (now >= cr->wait_until_ms) {
        finish(cr, LG_CACHE_FILL);
        return;
    }
    wait_arm(cr);
}

struct lg_cache_req *lg_cache_req_start(const struct lg_cache_req_params *p,
                                        const uint8_t key[LG_CACHE_KEY_LEN], lg_cache_cb cb,
                                        void *arg, enum lg_cache_outcome *outcome)
{
    struct lg_cache_req *cr = calloc(1, sizeof(*cr));
    if (cr == NULL) {
        *outcome = LG_CACHE_BYPASS;
        return NULL;
    }
    const struct lg_conf_route_cache *rc = p->route->cache;
    cr->base = p->base;
    cr->mem = p->mem;
    cr->redis = p->redis;
    memcpy(cr->key, key, LG_CACHE_KEY_LEN);
    cr->ttl_s = rc && rc->ttl_s > 0 ? rc->ttl_s : p->default_ttl_s;
    if (cr->ttl_s > LG_CACHE_TTL_MAX_S)
        cr->ttl_s = LG_CACHE_TTL_MAX_S;
    cr->stale_s = rc ? rc->stale_if_error_s : 0;
    int64_t timeout = p->route->timeout_ms;
    cr->lock_ms = timeout + 1000;
    cr->wait_until_ms =
        p->now_ms + (timeout < LG_CACHE_WAIT_MAX_MS ? timeout : LG_CACHE_WAIT_MAX_MS);
    cr->refetch = p->refetch;
    cr->min_stored_ms = p->refetch ? p->now_ms : INT64_MIN;
    cr->cb = cb;
    cr->arg = arg;
    cr->timer = evtimer_new(p->base, on_wait_timer, cr);
    char hex[2 * LG_CACHE_KEY_LEN + 1];
    lg_cache_key_hex(key, hex);
    const char *prefix = p->redis_prefix ? p->redis_prefix : "";
    int n = snprintf(cr->entry_key, sizeof(cr->entry_key), "%.200sc:%s", prefix, hex);
    cr->entry_key_len = n > 0 ? (size_t)n : 0;
    n = snprintf(cr->lock_key, sizeof(cr->lock_key), "%.200scl:%s", prefix, hex);
    cr->lock_key_len = n > 0 ? (size_t)n : 0;

    if (cr->redis) {
        bool sent = cr->refetch ? redis_lock(cr) : (cr->phase = PHASE_GET, redis_get(cr));
        if (!sent) {
            *outcome = LG_CACHE_BYPASS;
            return cr;
        }
        *outcome = LG_CACHE_PENDING;
        return cr;
    }
    if (!cr->refetch && take_entry(cr, lg_cache_mem_get(cr->mem, key, p->now_ms), p->now_ms)) {
        *outcome = LG_CACHE_HIT;
        return cr;
    }
    if (lg_cache_mem_lock(cr->mem, key, p->now_ms, cr->lock_ms)) {
        cr->holds_lock = true;
        *outcome = LG_CACHE_FILL;
        return cr;
    }
    struct timeval tv = {0, WAIT_POLL_MEM_MS * 1000};
    if (cr->timer == NULL || event_add(cr->timer, &tv) != 0) {
        *outcome = LG_CACHE_FILL;
        return cr;
    }
    cr->phase = PHASE_WAIT;
    *outcome = LG_CACHE_PENDING;
    return cr;
}

struct lg_cache_entry *lg_cache_req_hit(struct lg_cache_req *cr)
{
    return cr ? cr->hit : NULL;
}

struct lg_cache_entry *lg_cache_req_stale(struct lg_cache_req *cr, int64_t now_ms)
{
    if (cr == NULL || cr->stale == NULL)
        return NULL;
    const struct lg_cache_entry *e = cr->stale;
    return now_ms < add_sat(add_sat(e->stored_ms, e->ttl_ms), e->stale_ms) ? cr->stale : NULL;
}

static void release_lock(struct lg_cache_req *cr)
{
    if (!cr->holds_lock)
        return;
    cr->holds_lock = false;
    if (cr->redis) {
        const char *argv[] = {"DEL", cr->lock_key};
        size_t lens[] = {3, cr->lock_key_len};
        (void)redis_cmd(cr, 2, argv, lens, ignore_reply);
    } else {
        lg_cache_mem_unlock(cr->mem, cr->key);
    }
}

bool lg_cache_req_store(struct lg_cache_req *cr, int status, const struct lg_http_header *headers,
                        size_t nheaders, const void *body, size_t body_len, int64_t now_ms)
{
    if (cr == NULL)
        return false;
    int64_t ttl_s;
    bool stored = false;
    if (lg_cache_storable(status, headers, nheaders, body_len, cr->ttl_s, &ttl_s)) {
        struct lg_cache_entry *e = lg_cache_entry_new(status, headers, nheaders, body, body_len,
                                                      now_ms, ttl_s * 1000, cr->stale_s * 1000);
        if (e && cr->redis) {
            struct lg_buf buf;
            lg_buf_init(&buf, LG_CACHE_ENTRY_MAX + 65536);
            char px[24];
            int n = snprintf(px, sizeof(px), "%lld", (long long)((ttl_s + cr->stale_s) * 1000));
            if (lg_cache_encode(e, &buf) == 0) {
                const char *argv[] = {"SET", cr->entry_key, buf.data, "PX", px};
                size_t lens[] = {3, cr->entry_key_len, buf.len, 2, (size_t)n};
                stored = redis_cmd(cr, 5, argv, lens, ignore_reply) != NULL;
            }
            lg_buf_free(&buf);
        } else if (e) {
            lg_cache_mem_put(cr->mem, cr->key, e);
            stored = true;
        }
        lg_cache_entry_unref(e);
    } else if (cr->refetch) {
        /* A refetch replaces the entry: with an answer that may not be
         * stored, by nothing. */
        if (cr->redis) {
            const char *argv[] = {"DEL", cr->entry_key};
            size_t lens[] = {3, cr->entry_key_len};
            (void)redis_cmd(cr, 2, argv, lens, ignore_reply);
        } else {
            lg_cache_mem_remove(cr->mem, cr->key);
        }
    }
    release_lock(cr);
    return stored;
}

void lg_cache_req_free(struct lg_cache_req *cr)
{
    if (cr == NULL)
        return;
    lg_redis_cancel(cr->cmd);
    cr->cmd = NULL;
    release_lock(cr);
    if (cr->timer)
        event_free(cr->timer);
    lg_cache_entry_unref(cr->hit);
    lg_cache_entry_unref(cr->stale);
    free(cr);
}
