/* jwks.h - JSON Web Key Sets: parsed keys, and a fetcher that keeps a set fresh. */
#ifndef LG_JWKS_H
#define LG_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "lambdagate/lambdagate.h"

struct event_base;
struct evdns_base;

/* Bounds on a key set from outside (AWS caps a JWKS answer at 150,000
 * bytes; we allow more, but not without limit). */
#define LG_JWKS_MAX_BYTES (1024u * 1024u)
#define LG_JWKS_MAX_KEYS  256

enum lg_jwks_kty {
    LG_JWKS_RSA = 1,
    LG_JWKS_EC,
};

/* One usable verification key. Keys that cannot verify signatures (HMAC
 * "oct", "use": "enc", unknown kty or curve, RSA under 2048 bits) are
 * skipped when the set is parsed, never kept. */
struct lg_jwks_key {
    char *kid;            /* NULL when the JWK has none */
    char *alg;            /* the JWK's "alg", NULL when absent */
    enum lg_jwks_kty kty; /* RSA or EC */
    int curve_nid;        /* EC: NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1; 0 for RSA */
    EVP_PKEY *pkey;       /* built with EVP_PKEY_fromdata */
};

/* An immutable key set, shared between threads by reference count. */
struct lg_jwks {
    int refcount;        /* atomic */
    uint64_t generation; /* unique per parsed set (process-wide counter) */
    struct lg_jwks_key *keys;
    size_t nkeys;
};

/* Parse a JWKS document {"keys": [...]}: bounded (LG_JWKS_MAX_BYTES,
 * LG_JWKS_MAX_KEYS, LG_JSON_MAX_DEPTH), RSA keys from n/e (base64url,
 * strict), EC keys from crv/x/y (P-256, P-384, P-521; the point checked to
 * be on the curve). Unusable keys are skipped (see above); a set with no
 * usable key, or that is not a JWKS, is an error. Returns the set
 * (refcount 1) or NULL with err set. */
struct lg_jwks *lg_jwks_parse(const char *json, size_t len, char *err, size_t errlen);
/* The same from a file. */
struct lg_jwks *lg_jwks_load_file(const char *path, char *err, size_t errlen);
struct lg_jwks *lg_jwks_ref(struct lg_jwks *set);
/* Drop a reference; accepts NULL. */
void lg_jwks_unref(struct lg_jwks *set);
/* The key with this kid, or NULL. */
const struct lg_jwks_key *lg_jwks_find(const struct lg_jwks *set, const char *kid, size_t kid_len);

/* A key set fetched from a jwks_url over verified HTTPS and kept fresh.
 * It runs on one event loop (the control loop); get/refetch are called by
 * worker threads. */
struct lg_jwks_provider;

/* url must be https:// (verified with ssl_ctx: chain and host name).
 * NULL with err set for a bad URL. Nothing is fetched before start. */
struct lg_jwks_provider *lg_jwks_provider_new(struct event_base *base, struct evdns_base *dns,
                                              const char *url, SSL_CTX *ssl_ctx, char *err,
                                              size_t errlen);
/* Fetch now, then refresh in the background: after the answer's
 * Cache-Control max-age bounded to [5 min, 24 h] (1 h when absent); after a
 * failure, retry with backoff (1 s doubling to 5 min) while keeping the last
 * good set. Each fetch has a 1500 ms deadline and a LG_JWKS_MAX_BYTES cap. */
void lg_jwks_provider_start(struct lg_jwks_provider *p);
/* The current set (a new reference; caller unrefs), or NULL when none was
 * ever fetched. Thread-safe, never blocks on I/O. */
struct lg_jwks *lg_jwks_provider_get(struct lg_jwks_provider *p);
/* A token named a kid that the current set lacks: ask for a refetch.
 * Thread-safe. At most one fetch starts per LG_JWKS_REFETCH_INTERVAL_S
 * (counted from the start of the last fetch of any kind). Returns true when
 * a fetch is running or was just started (the caller may wait for
 * lg_jwks_provider_busy() to turn false, then look again), false when
 * refused by the rate limit. */
#define LG_JWKS_REFETCH_INTERVAL_S 30
bool lg_jwks_provider_refetch(struct lg_jwks_provider *p);
/* Fetch now, whatever the rate limit (a reload: the operator asked). On
 * the thread that runs base. */
void lg_jwks_provider_fetch_now(struct lg_jwks_provider *p);
/* True while a fetch is in progress. Thread-safe. */
bool lg_jwks_provider_busy(struct lg_jwks_provider *p);
/* Fetches started so far (for tests and metrics). Thread-safe. */
uint64_t lg_jwks_provider_fetches(struct lg_jwks_provider *p);
/* Stop and free; accepts NULL. Call on the thread that runs base. */
void lg_jwks_provider_free(struct lg_jwks_provider *p);

/* Refresh timing after a good answer (seconds): Cache-Control max-age
 * bounded to [MIN, MAX], DEFAULT when the answer has none. */
#define LG_JWKS_REFRESH_MIN_S     300
#define LG_JWKS_REFRESH_MAX_S     86400
#define LG_JWKS_REFRESH_DEFAULT_S 3600
/* Seconds until the refresh after a good answer whose Cache-Control value
 * is value[0..len) (NULL: no such header), per the rule above. Exposed for
 * tests. */
int64_t lg_jwks_refresh_after_s(const char *value, size_t len);
/* Tests only: milliseconds until the next scheduled fetch, -1 when none is
 * scheduled. Call on the thread that runs base. */
int64_t lg_jwks_provider_next_fetch_ms(struct lg_jwks_provider *p);
/* Tests only: replace LG_JWKS_REFETCH_INTERVAL_S, so that a test can see a
 * refetch start a fetch without waiting 30 s. Thread-safe. */
void lg_jwks_provider_set_refetch_interval_ms(struct lg_jwks_provider *p, int64_t ms);

#endif
