/* apikey.h - the API keys file: hashed keys, their ids and usage plans. */
#ifndef LG_APIKEY_H
#define LG_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

/* Bounds on the keys file. */
#define LG_APIKEY_FILE_MAX (16u * 1024u * 1024u)
#define LG_APIKEY_MAX_KEYS 100000
#define LG_APIKEY_ID_MAX   128
/* A key sent by a client longer than this is unknown without hashing it. */
#define LG_APIKEY_VALUE_MAX 1024

enum lg_apikey_period {
    LG_QUOTA_DAY = 0,
    LG_QUOTA_WEEK, /* ISO weeks: Monday 00:00 UTC */
    LG_QUOTA_MONTH,
};

/* A key's usage plan. */
struct lg_apikey_plan {
    /* "throttle": absent = the route's / default bucket applies, null = no
     * per-identity bucket for this key, object = this bucket. */
    enum lg_conf_presence throttle_presence;
    struct lg_conf_rate throttle;
    bool quota_set;
    int64_t quota_limit; /* >= 1 */
    enum lg_apikey_period quota_period;
};

struct lg_apikey {
    char *id;           /* [A-Za-z0-9._:-]{1,128}, unique in the file */
    uint8_t sha256[32]; /* digest of the key's bytes */
    struct lg_apikey_plan plan;
};

/* An immutable set of keys; lookups are safe from any thread. */
struct lg_apikeys {
    struct lg_apikey *keys;
    size_t nkeys;
    /* Open-addressing index on the digest. */
    uint32_t *index; /* slot -> key number + 1; 0 = empty */
    size_t index_mask;
};

/* Called once per error found while loading: line is 0 when the error is
 * not tied to a line of the file. */
typedef void (*lg_apikey_error_cb)(void *arg, int line, const char *message);

/* Load and validate the keys file of CONTRACT section 3:
 *   { "keys": [ { "id": "android-app", "sha256": "<64 hex digits>",
 *                 "throttle": { "rate": 50, "burst": 100 } | null,
 *                 "quota": { "limit": 100000, "period": "day"|"week"|"month" } } ] }
 * Unknown keys, wrong types, bad hex, duplicate ids or digests, rate <= 0,
 * burst < 1 are errors; every error is reported (with its line) through
 * on_error, not only the first. Returns the set, or NULL after at least one
 * on_error call. */
struct lg_apikeys *lg_apikeys_load(const char *path, lg_apikey_error_cb on_error, void *arg);
/* The same from text in memory. */
struct lg_apikeys *lg_apikeys_load_text(const char *text, size_t len, lg_apikey_error_cb on_error,
                                        void *arg);
void lg_apikeys_free(struct lg_apikeys *set);
/* The key whose digest matches SHA-256(value[0..len)), or NULL. The
 * comparison of digests is constant-time (CRYPTO_memcmp); the index only
 * narrows the candidates by the digest, which tells an attacker nothing
 * about any key's value. */
const struct lg_apikey *lg_apikeys_find(const struct lg_apikeys *set, const char *value,
                                        size_t len);
/* Start of the quota period holding now (seconds since the epoch, UTC), and
 * of the next one. */
void lg_apikey_period_bounds(enum lg_apikey_period p, int64_t now, int64_t *start, int64_t *end);

#endif
