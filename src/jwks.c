/* jwks.c - JSON Web Key Sets: strict parsing into OpenSSL keys, and an HTTPS fetcher that keeps a
 * set fresh. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/http.h"
#include "lambdagate/httpc.h"
#include "lambdagate/json.h"
#include "lambdagate/jwks.h"
#include "lambdagate/log.h"

/* RSA moduli below 2048 bits are breakable or close to it (NIST
 * deprecated them in 2013); above 16384 bits OpenSSL itself refuses
 * them, and verification gets slow enough to be a lever for a hostile
 * issuer. */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 16384
/* Public exponents in use are 3, 17 and 65537; OpenSSL refuses exponents
 * over 64 bits for large moduli, and a huge one makes verification slow. */
#define RSA_E_MAX_BITS 64

/* The largest EC coordinate (P-521: 66 bytes). */
#define EC_COORD_MAX 66

#define FETCH_TIMEOUT_MS 1500
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS   (300 * 1000)

/* Every parsed set gets the next number, so that a cache keyed on
 * generation (the JWT verifier's) never confuses two sets. */
static _Atomic uint64_t jwks_generation_counter = 0;

/* ---------------------------------------------------------------------- */
/* Sets                                                                    */
/* ---------------------------------------------------------------------- */

static void key_clear(struct lg_jwks_key *k)
{
    free(k->kid);
    free(k->alg);
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof(*k));
}

static void set_free(struct lg_jwks *set)
{
    for (size_t i = 0; i < set->nkeys; i++)
        key_clear(&set->keys[i]);
    free(set->keys);
    free(set);
}

struct lg_jwks *lg_jwks_ref(struct lg_jwks *set)
{
    if (set)
        __atomic_fetch_add(&set->refcount, 1, __ATOMIC_RELAXED);
    return set;
}

void lg_jwks_unref(struct lg_jwks *set)
{
    if (set == NULL)
        return;
    /* acq_rel: the thread that frees must see every other thread's use of
     * the keys finished. */
    if (__atomic_sub_fetch(&set->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    set_free(set);
}

const struct lg_jwks_key *lg_jwks_find(const struct lg_jwks *set, const char *kid, size_t kid_len)
{
    if (set == NULL || kid == NULL)
        return NULL;
    /* Sets hold a handful of keys: a scan beats any index. */
    for (size_t i = 0; i < set->nkeys; i++) {
        const struct lg_jwks_key *k = &set->keys[i];
        if (k->kid != NULL && strlen(k->kid) == kid_len && memcmp(k->kid, kid, kid_len) == 0)
            return k;
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Parsing                                                                 */
/* ---------------------------------------------------------------------- */

/* Member name of obj: 1 found (*out set), 0 absent, -1 present more than
 * once. Repeated members are refused: parsers disagree on which one wins,
 * and a key must mean the same to us as to whoever checked the set. */
static int member(yajl_val obj, const char *name, yajl_val *out)
{
    *out = NULL;
    int found = 0;
    for (size_t i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], name) != 0)
            continue;
        if (found)
            return -1;
        *out = obj->u.object.values[i];
        found = 1;
    }
    return found;
}

/* A string member: 1 present (*out set), 0 absent, -1 repeated or not a
 * string (null included: the JWK members we read are strings or absent). */
static int string_member(yajl_val obj, const char *name, const char **out)
{
    yajl_val v;
    *out = NULL;
    int rc = member(obj, name, &v);
    if (rc <= 0)
        return rc;
    if (!YAJL_IS_STRING(v))
        return -1;
    *out = v->u.string;
    return 1;
}

/* True when text holds the escape \u0000. The tree's strings are C
 * strings, cut at a decoded NUL: "AQ\u0000AB" would read as "AQ", a
 * different key than a strict parser sees. A key set has no use for
 * U+0000, so such a document is refused whole. Backslashes outside strings
 * are invalid JSON anyway, so escapes are found without tracking strings. */
static bool has_escaped_nul(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '\\')
            continue;
        if (len - i >= 6 && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0)
            return true;
        i++; /* the escaped character, which may be a backslash */
    }
    return false;
}

/* Decode the base64url member name of jwk into out (reset first). 1 done,
 * 0 skip the key (why set). */
static int decode_member(yajl_val jwk, const char *name, struct lg_buf *out, char *why,
                         size_t whylen)
{
    const char *s;
    int rc = string_member(jwk, name, &s);
    if (rc == 0) {
        snprintf(why, whylen, "no \"%s\"", name);
        return 0;
    }
    if (rc < 0) {
        snprintf(why, whylen, "\"%s\" is repeated or not a string", name);
        return 0;
    }
    lg_buf_reset(out);
    size_t n = strlen(s);
    if (n == 0 || lg_codec_base64url_decode(out, s, n) != 0 || out->len == 0) {
        snprintf(why, whylen, "\"%s\" is not strict base64url", name);
        return 0;
    }
    return 1;
}

/* Drain OpenSSL's error queue after a refused key, so that the reasons do
 * not surface in some later, unrelated report on this thread. */
static void openssl_forget(void)
{
    ERR_clear_error();
}

/* Build a public key of type name ("RSA", "EC") from params. NULL on
 * failure. */
static EVP_PKEY *pkey_from_params(const char *name, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* The RSA key of jwk (n, e). NULL with why. */
static EVP_PKEY *rsa_key(yajl_val jwk, char *why, size_t whylen)
{
    struct lg_buf nbuf, ebuf;
    lg_buf_init(&nbuf, 0);
    lg_buf_init(&ebuf, 0);
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    if (!decode_member(jwk, "n", &nbuf, why, whylen) ||
        !decode_member(jwk, "e", &ebuf, why, whylen))
        goto out;
    /* Leading zero bytes are tolerated (RFC 7518 forbids them, but some
     * libraries emit them and the value is unambiguous). */
    n = BN_bin2bn((const unsigned char *)nbuf.data, (int)nbuf.len, NULL);
    e = BN_bin2bn((const unsigned char *)ebuf.data, (int)ebuf.len, NULL);
    if (n == NULL || e == NULL) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    int bits = BN_num_bits(n);
    if (bits < RSA_MIN_BITS) {
        snprintf(why, whylen, "RSA modulus has %d bits, fewer than %d", bits, RSA_MIN_BITS);
        goto out;
    }
    if (bits > RSA_MAX_BITS) {
        snprintf(why, whylen, "RSA modulus has %d bits, more than %d", bits, RSA_MAX_BITS);
        goto out;
    }
    if (!BN_is_odd(n)) {
        snprintf(why, whylen, "RSA modulus is even");
        goto out;
    }
    /* OpenSSL's own public-key check wants e > 65536 (SP 800-56B), which
     * would refuse old keys with e = 3; these are the checks that matter
     * for verification. */
    if (!BN_is_odd(e) || BN_is_one(e) || BN_num_bits(e) > RSA_E_MAX_BITS || BN_cmp(e, n) >= 0) {
        snprintf(why, whylen, "RSA exponent is not odd, above 1 and at most %d bits",
                 RSA_E_MAX_BITS);
        goto out;
    }
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    pkey = pkey_from_params("RSA", params);
    if (pkey == NULL)
        snprintf(why, whylen, "OpenSSL refused the RSA key");
out:
    openssl_forget();
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    lg_buf_free(&nbuf);
    lg_buf_free(&ebuf);
    return pkey;
}

/* The curves we accept, as JOSE names them. */
struct curve {
    const char *crv;   /* JOSE name */
    const char *group; /* OpenSSL group name */
    const char *alg;   /* the one JWS alg that goes with it */
    int nid;
    size_t size; /* coordinate bytes */
};
static const struct curve curves[] = {
    {"P-256", "prime256v1", "ES256", NID_X9_62_prime256v1, 32},
    {"P-384", "secp384r1", "ES384", NID_secp384r1, 48},
    {"P-521", "secp521r1", "ES512", NID_secp521r1, 66},
};

/* The EC key of jwk (x, y on curve c), checked to be a point of the
 * curve's group. NULL with why. */
static EVP_PKEY *ec_key(yajl_val jwk, const struct curve *c, char *why, size_t whylen)
{
    struct lg_buf xbuf, ybuf;
    lg_buf_init(&xbuf, 0);
    lg_buf_init(&ybuf, 0);
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *check = NULL;
    if (!decode_member(jwk, "x", &xbuf, why, whylen) ||
        !decode_member(jwk, "y", &ybuf, why, whylen))
        goto out;
    /* RFC 7518 6.2.1.2: the full coordinate size, never shortened. */
    if (xbuf.len != c->size || ybuf.len != c->size) {
        snprintf(why, whylen, "%s coordinates must be %zu bytes (x has %zu, y %zu)", c->crv,
                 c->size, xbuf.len, ybuf.len);
        goto out;
    }
    unsigned char point[1 + 2 * EC_COORD_MAX];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, xbuf.data, c->size);
    memcpy(point + 1 + c->size, ybuf.data, c->size);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, c->group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * c->size) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    pkey = pkey_from_params("EC", params);
    /* fromdata already refuses most bad points; the public check also
     * catches coordinates out of range and points outside the group. */
    if (pkey != NULL) {
        check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (check == NULL || EVP_PKEY_public_check(check) != 1) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    if (pkey == NULL)
        snprintf(why, whylen, "the EC point is not on %s", c->crv);
out:
    openssl_forget();
    EVP_PKEY_CTX_free(check);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    lg_buf_free(&xbuf);
    lg_buf_free(&ybuf);
    return pkey;
}

/* The JWS algorithms a kept key may declare, with the key type each needs
 * (the curve of ES* is checked against the key's curve). */
static bool alg_fits(const char *alg, enum lg_jwks_kty kty, const struct curve *c)
{
    static const char *const rsa_algs[] = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"};
    if (kty == LG_JWKS_RSA) {
        for (size_t i = 0; i < LG_ARRAY_LEN(rsa_algs); i++)
            if (strcmp(alg, rsa_algs[i]) == 0)
                return true;
        return false;
    }
    return c != NULL && strcmp(alg, c->alg) == 0;
}

/* Fill out from the JWK v. 1 kept, 0 skipped (why set), -1 out of memory.
 * Only verification keys are kept: see jwks.h. */
static int parse_key(yajl_val v, struct lg_jwks_key *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (!YAJL_IS_OBJECT(v)) {
        snprintf(why, whylen, "not a JSON object");
        return 0;
    }
    const char *kty, *kid, *alg, *use;
    if (string_member(v, "kty", &kty) <= 0) {
        snprintf(why, whylen, "\"kty\" is missing, repeated or not a string");
        return 0;
    }
    if (string_member(v, "kid", &kid) < 0 || string_member(v, "alg", &alg) < 0 ||
        string_member(v, "use", &use) < 0) {
        snprintf(why, whylen, "\"kid\", \"alg\" or \"use\" is repeated or not a string");
        return 0;
    }
    enum lg_jwks_kty type;
    if (strcmp(kty, "RSA") == 0) {
        type = LG_JWKS_RSA;
    } else if (strcmp(kty, "EC") == 0) {
        type = LG_JWKS_EC;
    } else if (strcmp(kty, "oct") == 0) {
        /* A shared secret published as a verification key would let
         * anyone who reads the set sign tokens. */
        snprintf(why, whylen, "symmetric (oct) key");
        return 0;
    } else {
        snprintf(why, whylen, "unsupported kty");
        return 0;
    }
    if (use != NULL && strcmp(use, "sig") != 0) {
        snprintf(why, whylen, "\"use\" is not \"sig\"");
        return 0;
    }
    yajl_val ops;
    int rc = member(v, "key_ops", &ops);
    if (rc < 0 || (rc > 0 && !YAJL_IS_ARRAY(ops))) {
        snprintf(why, whylen, "\"key_ops\" is repeated or not an array");
        return 0;
    }
    if (rc > 0) {
        bool verify = false;
        for (size_t i = 0; i < ops->u.array.len; i++) {
            yajl_val op = ops->u.array.values[i];
            if (!YAJL_IS_STRING(op)) {
                snprintf(why, whylen, "\"key_ops\" holds a value that is not a string");
                return 0;
            }
            verify = verify || strcmp(op->u.string, "verify") == 0;
        }
        if (!verify) {
            snprintf(why, whylen, "\"key_ops\" does not include \"verify\"");
            return 0;
        }
    }
    const struct curve *c = NULL;
    if (type == LG_JWKS_EC) {
        const char *crv;
        if (string_member(v, "crv", &crv) <= 0) {
            snprintf(why, whylen, "\"crv\" is missing, repeated or not a string");
            return 0;
        }
        for (size_t i = 0; i < LG_ARRAY_LEN(curves); i++)
            if (strcmp(crv, curves[i].crv) == 0)
                c = &curves[i];
        if (c == NULL) {
            snprintf(why, whylen, "unsupported curve");
            return 0;
        }
    }
    /* An alg that does not fit the key (HS256 on an RSA key, ES384 on
     * P-256) means the set is confused about this key: trust none of it. */
    if (alg != NULL && !alg_fits(alg, type, c)) {
        snprintf(why, whylen, "\"alg\" is not a signature algorithm for this key");
        return 0;
    }
    EVP_PKEY *pkey = type == LG_JWKS_RSA ? rsa_key(v, why, whylen) : ec_key(v, c, why, whylen);
    if (pkey == NULL)
        return strcmp(why, "out of memory") == 0 ? -1 : 0;
    out->kty = type;
    out->curve_nid = c ? c->nid : 0;
    out->pkey = pkey;
    out->kid = kid ? strdup(kid) : NULL;
    out->alg = alg ? strdup(alg) : NULL;
    if ((kid && out->kid == NULL) || (alg && out->alg == NULL)) {
        key_clear(out);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 1;
}

/* True when a key already kept has this kid (keys without one never
 * clash). */
static bool kid_taken(const struct lg_jwks *set, const char *kid)
{
    return kid != NULL && lg_jwks_find(set, kid, strlen(kid)) != NULL;
}

struct lg_jwks *lg_jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
    char dummy[LG_ERR_LEN];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (json == NULL) {
        snprintf(err, errlen, "no JWKS text");
        return NULL;
    }
    if (len > LG_JWKS_MAX_BYTES) {
        snprintf(err, errlen, "the JWKS has %zu bytes, more than %u", len, LG_JWKS_MAX_BYTES);
        return NULL;
    }
    if (has_escaped_nul(json, len)) {
        snprintf(err, errlen, "the JWKS holds \\u0000");
        return NULL;
    }
    char inner[LG_ERR_LEN];
    yajl_val root =
        lg_json_parse(json, len, LG_JWKS_MAX_BYTES, LG_JSON_MAX_DEPTH, inner, sizeof(inner));
    if (root == NULL) {
        snprintf(err, errlen, "the JWKS is not valid JSON: %s", inner);
        return NULL;
    }
    struct lg_jwks *set = NULL;
    yajl_val keys;
    if (!YAJL_IS_OBJECT(root)) {
        snprintf(err, errlen, "the JWKS is not a JSON object");
        goto fail;
    }
    int rc = member(root, "keys", &keys);
    if (rc <= 0 || !YAJL_IS_ARRAY(keys)) {
        snprintf(err, errlen, "the JWKS has no \"keys\" array%s",
                 rc < 0 ? " (it is repeated)" : "");
        goto fail;
    }
    size_t n = keys->u.array.len;
    if (n > LG_JWKS_MAX_KEYS) {
        snprintf(err, errlen, "the JWKS has %zu keys, more than %d", n, LG_JWKS_MAX_KEYS);
        goto fail;
    }
    set = calloc(1, sizeof(*set));
    if (set == NULL || (set->keys = calloc(n ? n : 1, sizeof(*set->keys))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* Why the first skipped key was skipped: when nothing is usable, the
     * operator needs to know why. Only our own words and the key's index
     * go into it, never text from the document. */
    char first_skip[LG_ERR_LEN] = "";
    size_t skipped = 0;
    for (size_t i = 0; i < n; i++) {
        char why[LG_ERR_LEN] = "";
        struct lg_jwks_key *k = &set->keys[set->nkeys];
        rc = parse_key(keys->u.array.values[i], k, why, sizeof(why));
        if (rc < 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (rc > 0 && kid_taken(set, k->kid)) {
            /* The first wins: a later key cannot take over a kid that
             * tokens are already verified with. */
            key_clear(k);
            snprintf(why, sizeof(why), "its kid repeats an earlier key's");
            rc = 0;
        }
        if (rc == 0) {
            if (skipped++ == 0)
                snprintf(first_skip, sizeof(first_skip), "key %zu: %s", i, why);
            lg_log_clean(why); /* it may hold the key's own text */
            lg_log(LG_LOG_DEBUG, "JWKS key skipped index=%zu reason=\"%s\"", i, why);
            continue;
        }
        set->nkeys++;
    }
    if (set->nkeys == 0) {
        if (n == 0)
            snprintf(err, errlen, "the JWKS has no keys");
        else
            snprintf(err, errlen, "the JWKS has no usable key (%zu skipped; %s)", skipped,
                     first_skip);
        goto fail;
    }
    lg_json_free(root);
    set->generation = atomic_fetch_add(&jwks_generation_counter, 1) + 1;
    __atomic_store_n(&set->refcount, 1, __ATOMIC_RELEASE);
    return set;
fail:
    if (set)
        set_free(set);
    lg_json_free(root);
    return NULL;
}

struct lg_jwks *lg_jwks_load_file(const char *path, char *err, size_t errlen)
{
    char dummy[LG_ERR_LEN];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    /* O_NONBLOCK: a FIFO planted at the path must not hang the caller. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > LG_JWKS_MAX_BYTES) {
        snprintf(err, errlen, "%s is larger than %u bytes", path, LG_JWKS_MAX_BYTES);
        close(fd);
        return NULL;
    }
    size_t max = LG_JWKS_MAX_BYTES;
    char *buf = malloc(max + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory reading %s", path);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    for (;;) {
        /* One byte past max, so that a file that grew is caught. */
        ssize_t r = read(fd, buf + got, max + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        got += (size_t)r;
        if (got > max) {
            snprintf(err, errlen, "%s is larger than %u bytes", path, LG_JWKS_MAX_BYTES);
            free(buf);
            close(fd);
            return NULL;
        }
    }
    close(fd);
    char inner[LG_ERR_LEN];
    struct lg_jwks *set = lg_jwks_parse(buf, got, inner, sizeof(inner));
    free(buf);
    if (set == NULL)
        snprintf(err, errlen, "%s: %s", path, inner);
    return set;
}

/* ---------------------------------------------------------------------- */
/* Refresh timing                                                          */
/* ---------------------------------------------------------------------- */

/* The max-age of a Cache-Control value: true with *out set when a
 * well-formed max-age directive is there (delta-seconds, or the same in
 * quotes, which RFC 9111 asks recipients to accept). Saturates instead of
 * overflowing. */
static bool cache_max_age(const char *v, size_t len, int64_t *out)
{
    size_t i = 0;
    while (i < len) {
        /* One directive: [OWS] name [= value] [OWS] up to a comma. */
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t name = i;
        while (i < len && v[i] != '=' && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        size_t name_len = i - name;
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t value = i, value_len = 0;
        bool has_value = i < len && v[i] == '=';
        if (has_value) {
            i++;
            value = i;
            if (i < len && v[i] == '"') {
                i++;
                while (i < len && v[i] != '"')
                    i++;
                i = i < len ? i + 1 : i;
            } else {
                while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
                    i++;
            }
            value_len = i - value;
        }
        while (i < len && v[i] != ',')
            i++; /* anything else up to the next directive */
        if (!has_value || !lg_http_ieq(v + name, name_len, "max-age"))
            continue;
        const char *d = v + value;
        size_t dn = value_len;
        if (dn >= 2 && d[0] == '"' && d[dn - 1] == '"') {
            d++;
            dn -= 2;
        }
        if (dn == 0)
            continue;
        int64_t s = 0;
        size_t k = 0;
        for (; k < dn && d[k] >= '0' && d[k] <= '9'; k++)
            s = s > INT64_MAX / 100 ? INT64_MAX / 100 : s * 10 + (d[k] - '0');
        if (k != dn)
            continue;
        *out = s;
        return true;
    }
    return false;
}

int64_t lg_jwks_refresh_after_s(const char *value, size_t len)
{
    int64_t s;
    if (value == NULL || !cache_max_age(value, len, &s))
        return LG_JWKS_REFRESH_DEFAULT_S;
    if (s < LG_JWKS_REFRESH_MIN_S)
        return LG_JWKS_REFRESH_MIN_S;
    return s > LG_JWKS_REFRESH_MAX_S ? LG_JWKS_REFRESH_MAX_S : s;
}

/* The refresh delay after a good answer: the first Cache-Control header
 * with a max-age decides (there may be several header lines). */
static int64_t refresh_after_head(const struct lg_http_head *head)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        const struct lg_http_header *h = &head->headers[i];
        int64_t s;
        if (lg_http_ieq(h->name, h->name_len, "cache-control") &&
            cache_max_age(h->value, h->value_len, &s))
            return lg_jwks_refresh_after_s(h->value, h->value_len);
    }
    return LG_JWKS_REFRESH_DEFAULT_S;
}

/* ---------------------------------------------------------------------- */
/* The provider                                                            */
/* ---------------------------------------------------------------------- */

struct lg_jwks_provider {
    struct event_base *base; /* borrowed */
    struct evdns_base *dns;  /* borrowed */
    char *url;
    SSL_CTX *ssl_ctx; /* own reference */

    /* Shared with worker threads (get, refetch, busy, fetches). */
    pthread_mutex_t lock;
    struct lg_jwks *current; /* owned; NULL until a set was fetched */
    bool started;
    bool busy;             /* a fetch runs, or a refetch asked for one */
    bool refetch_pending;  /* refetch() wrote the eventfd; the loop has not acted */
    bool ever_fetched;     /* last_start_ms is meaningful */
    int64_t last_start_ms; /* monotonic; the start of the last fetch of any kind */
    int64_t refetch_interval_ms;
    uint64_t fetches;

    /* The control loop's own. */
    int wake_fd;                  /* eventfd: refetch() asks the loop for a fetch */
    struct event *wake;           /* read event on wake_fd */
    struct event *timer;          /* next background fetch */
    int64_t timer_due_ms;         /* monotonic, when timer is pending */
    struct lg_httpc_fetch *fetch; /* in flight, or NULL */
    int64_t backoff_ms;           /* 0 after a success */
};

static void schedule(struct lg_jwks_provider *p, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(p->timer, &tv);
    p->timer_due_ms = lg_mono_ms() + ms;
}

/* The fetch ended: busy turns false, together with the new set when there
 * is one (takes ownership of set), so that a caller who waited for busy to
 * turn false finds the set that fetch brought. */
static void fetch_end(struct lg_jwks_provider *p, struct lg_jwks *set)
{
    struct lg_jwks *old = NULL;
    pthread_mutex_lock(&p->lock);
    if (set) {
        old = p->current;
        p->current = set;
    }
    p->busy = false;
    pthread_mutex_unlock(&p->lock);
    /* Outside the lock: readers holding old keep it alive. */
    lg_jwks_unref(old);
}

/* A fetch failed: warn (never with the body) and retry with backoff; the
 * current set keeps serving. */
static void fetch_failed(struct lg_jwks_provider *p, const char *fmt, ...) LG_PRINTF(2, 3);
static void fetch_failed(struct lg_jwks_provider *p, const char *fmt, ...)
{
    char reason[LG_ERR_LEN * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    lg_log_clean(reason); /* it may quote what the key server said */
    fetch_end(p, NULL);
    p->backoff_ms = p->backoff_ms == 0 ? BACKOFF_FIRST_MS : p->backoff_ms * 2;
    if (p->backoff_ms > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    pthread_mutex_lock(&p->lock);
    size_t kept = p->current ? p->current->nkeys : 0;
    pthread_mutex_unlock(&p->lock);
    lg_log(LG_LOG_WARN, "JWKS fetch failed url=%s reason=\"%s\" retry_in_ms=%lld keys_kept=%zu",
           p->url, reason, (long long)p->backoff_ms, kept);
    schedule(p, p->backoff_ms);
}

static void fetch_cb(const struct lg_httpc_response *resp, const char *body, size_t len, void *arg)
{
    struct lg_jwks_provider *p = arg;
    /* httpc frees the fetch after this callback returns. */
    p->fetch = NULL;
    if (resp->error != LG_HTTPC_OK) {
        fetch_failed(p, "%s", resp->error_text ? resp->error_text : "no answer");
        return;
    }
    if (resp->head->status != 200) {
        fetch_failed(p, "answered HTTP %d", resp->head->status);
        return;
    }
    char err[LG_ERR_LEN];
    struct lg_jwks *set = lg_jwks_parse(body, len, err, sizeof(err));
    if (set == NULL) {
        fetch_failed(p, "%s", err);
        return;
    }
    int64_t after_s = refresh_after_head(resp->head);
    size_t nkeys = set->nkeys;
    fetch_end(p, set);
    p->backoff_ms = 0;
    /* Also after a forced refetch: the set is as fresh as a scheduled
     * fetch would have made it. */
    schedule(p, after_s * 1000);
    lg_log(LG_LOG_INFO, "JWKS fetched url=%s keys=%zu refresh_in_s=%lld", p->url, nkeys,
           (long long)after_s);
}

/* Start a fetch unless one runs. On the loop's thread. */
static void fetch_start(struct lg_jwks_provider *p)
{
    if (p->fetch != NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->busy = true;
    p->refetch_pending = false;
    p->ever_fetched = true;
    p->last_start_ms = lg_mono_ms();
    p->fetches++;
    pthread_mutex_unlock(&p->lock);
    static const struct lg_http_header accept = {LG_LITERAL("Accept"),
                                                 LG_LITERAL("application/json")};
    struct lg_httpc_fetch_request req = {
        .method = "GET",
        .url = p->url,
        .headers = &accept,
        .nheaders = 1,
        .timeout_ms = FETCH_TIMEOUT_MS,
        .max_body = LG_JWKS_MAX_BYTES,
        .ssl_ctx = p->ssl_ctx,
    };
    char err[LG_ERR_LEN];
    p->fetch = lg_httpc_fetch(p->base, p->dns, &req, fetch_cb, p, err, sizeof(err));
    if (p->fetch == NULL)
        fetch_failed(p, "%s", err);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    fetch_start(arg);
}

/* refetch() on a worker thread asked for a fetch. */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_jwks_provider *p = arg;
    uint64_t count;
    while (read(p->wake_fd, &count, sizeof(count)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&p->lock);
    bool pending = p->refetch_pending;
    p->refetch_pending = false;
    pthread_mutex_unlock(&p->lock);
    /* Not pending: a scheduled fetch started in between and took the
     * request over. A fetch in flight serves it too (busy stays true until
     * it ends). */
    if (pending)
        fetch_start(p);
}

struct lg_jwks_provider *lg_jwks_provider_new(struct event_base *base, struct evdns_base *dns,
                                              const char *url, SSL_CTX *ssl_ctx, char *err,
                                              size_t errlen)
{
    struct lg_httpc_url parsed;
    char inner[LG_ERR_LEN];
    if (url == NULL) {
        snprintf(err, errlen, "jwks_url: no URL");
        return NULL;
    }
    if (lg_httpc_parse_url(url, &parsed, inner, sizeof(inner)) != 0) {
        snprintf(err, errlen, "jwks_url %s: %s", url, inner);
        return NULL;
    }
    bool tls = parsed.tls;
    lg_httpc_url_free(&parsed);
    if (!tls) {
        /* Keys fetched in clear could be replaced by anyone on the path,
         * who could then sign any token. */
        snprintf(err, errlen, "jwks_url %s: must be https://", url);
        return NULL;
    }
    if (ssl_ctx == NULL) {
        snprintf(err, errlen, "jwks_url %s: no TLS client context", url);
        return NULL;
    }
    struct lg_jwks_provider *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->wake_fd = -1;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    p->base = base;
    p->dns = dns;
    p->refetch_interval_ms = (int64_t)LG_JWKS_REFETCH_INTERVAL_S * 1000;
    SSL_CTX_up_ref(ssl_ctx);
    p->ssl_ctx = ssl_ctx;
    p->url = strdup(url);
    p->timer = evtimer_new(base, timer_cb, p);
    if (p->url == NULL || p->timer == NULL) {
        snprintf(err, errlen, "out of memory");
        lg_jwks_provider_free(p);
        return NULL;
    }
    /* No evthread locks in this program: a worker thread must not touch
     * base. refetch() writes this eventfd; the loop reads it. */
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wake_fd < 0) {
        snprintf(err, errlen, "cannot create an eventfd: %s", strerror(errno));
        lg_jwks_provider_free(p);
        return NULL;
    }
    p->wake = event_new(base, p->wake_fd, EV_READ | EV_PERSIST, wake_cb, p);
    if (p->wake == NULL || event_add(p->wake, NULL) != 0) {
        snprintf(err, errlen, "cannot watch the eventfd");
        lg_jwks_provider_free(p);
        return NULL;
    }
    return p;
}

void lg_jwks_provider_start(struct lg_jwks_provider *p)
{
    pthread_mutex_lock(&p->lock);
    bool was = p->started;
    p->started = true;
    pthread_mutex_unlock(&p->lock);
    if (!was)
        fetch_start(p);
}

struct lg_jwks *lg_jwks_provider_get(struct lg_jwks_provider *p)
{
    pthread_mutex_lock(&p->lock);
    struct lg_jwks *set = lg_jwks_ref(p->current);
    pthread_mutex_unlock(&p->lock);
    return set;
}

bool lg_jwks_provider_refetch(struct lg_jwks_provider *p)
{
    bool ok;
    pthread_mutex_lock(&p->lock);
    if (!p->started) {
        ok = false; /* nothing runs yet */
    } else if (p->busy) {
        ok = true; /* its answer is the one the caller waits for */
    } else if (p->ever_fetched && lg_mono_ms() - p->last_start_ms < p->refetch_interval_ms) {
        /* Tokens with made-up kids must not turn into a flood of fetches
         * against the issuer. */
        ok = false;
    } else {
        /* busy at once, under the lock: concurrent callers see the fetch
         * coming and do not ask again, and a caller can wait for busy to
         * turn false. */
        uint64_t one = 1;
        ssize_t w;
        while ((w = write(p->wake_fd, &one, sizeof(one))) < 0 && errno == EINTR)
            ;
        ok = w == (ssize_t)sizeof(one);
        if (ok) {
            p->busy = true;
            p->refetch_pending = true;
            p->ever_fetched = true;
            p->last_start_ms = lg_mono_ms();
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

void lg_jwks_provider_fetch_now(struct lg_jwks_provider *p)
{
    if (p == NULL || !p->started)
        return;
    /* A fetch in flight already brings the issuer's current set. */
    fetch_start(p);
}

bool lg_jwks_provider_busy(struct lg_jwks_provider *p)
{
    pthread_mutex_lock(&p->lock);
    bool busy = p->busy;
    pthread_mutex_unlock(&p->lock);
    return busy;
}

uint64_t lg_jwks_provider_fetches(struct lg_jwks_provider *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->fetches;
    pthread_mutex_unlock(&p->lock);
    return n;
}

int64_t lg_jwks_provider_next_fetch_ms(struct lg_jwks_provider *p)
{
    if (!event_pending(p->timer, EV_TIMEOUT, NULL))
        return -1;
    int64_t left = p->timer_due_ms - lg_mono_ms();
    return left < 0 ? 0 : left;
}

void lg_jwks_provider_set_refetch_interval_ms(struct lg_jwks_provider *p, int64_t ms)
{
    pthread_mutex_lock(&p->lock);
    p->refetch_interval_ms = ms < 0 ? 0 : ms;
    pthread_mutex_unlock(&p->lock);
}

void lg_jwks_provider_free(struct lg_jwks_provider *p)
{
    if (p == NULL)
        return;
    lg_httpc_fetch_cancel(p->fetch);
    if (p->timer)
        event_free(p->timer);
    if (p->wake)
        event_free(p->wake);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    lg_jwks_unref(p->current);
    if (p->ssl_ctx)
        SSL_CTX_free(p->ssl_ctx);
    free(p->url);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
