/* jwt.c - verification of JSON Web Tokens (compact JWS) against a key set. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/json.h"
#include "lambdagate/jwks.h"
#include "lambdagate/jwt.h"

/* A kid quoted in an error message is cut to this many characters. */
#define KID_QUOTE_MAX 64
/* Objects with more members than this are checked for duplicate names by
 * sorting rather than pairwise. */
#define DUP_PAIRWISE_MAX 16
/* Times far outside any real token are clamped here, so that adding a
 * leeway cannot overflow and a double converts to int64_t safely. */
#define TIME_CLAMP INT64_C(4000000000000000000)

enum alg_family {
    ALG_RSA_PKCS1,
    ALG_RSA_PSS,
    ALG_ECDSA,
};

/* The signature algorithms we accept (RFC 7518 section 3). HMAC is absent
 * on purpose: a key set holds public keys, and HS* "verified" with a public
 * key's bytes as the secret is the classic key-confusion forgery. */
struct jwt_alg {
    const char *name;
    enum alg_family family;
    const EVP_MD *(*md)(void);
    int curve_nid;     /* ECDSA: the one curve this alg is defined on */
    size_t coordinate; /* ECDSA: bytes of R and of S in the raw signature */
};

static const struct jwt_alg jwt_algs[] = {
    {"RS256", ALG_RSA_PKCS1, EVP_sha256, 0, 0},
    {"RS384", ALG_RSA_PKCS1, EVP_sha384, 0, 0},
    {"RS512", ALG_RSA_PKCS1, EVP_sha512, 0, 0},
    {"PS256", ALG_RSA_PSS, EVP_sha256, 0, 0},
    {"PS384", ALG_RSA_PSS, EVP_sha384, 0, 0},
    {"PS512", ALG_RSA_PSS, EVP_sha512, 0, 0},
    {"ES256", ALG_ECDSA, EVP_sha256, NID_X9_62_prime256v1, 32},
    {"ES384", ALG_ECDSA, EVP_sha384, NID_secp384r1, 48},
    {"ES512", ALG_ECDSA, EVP_sha512, NID_secp521r1, 66},
};

static const struct jwt_alg *find_alg(const char *name)
{
    for (size_t i = 0; i < LG_ARRAY_LEN(jwt_algs); i++) {
        if (strcmp(jwt_algs[i].name, name) == 0)
            return &jwt_algs[i];
    }
    return NULL;
}

/* Set err (which may be NULL or empty) and return st: every failure path
 * goes through here so the message is always set. */
LG_PRINTF(4, 5)
static enum lg_jwt_status fail(char *err, size_t errlen, enum lg_jwt_status st, const char *fmt,
                               ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* Copy kid into out (KID_QUOTE_MAX + 4 bytes) for a log line: printable
 * ASCII only (anything else, including '"' and '\\', becomes '?'), cut to
 * KID_QUOTE_MAX characters with "..." after. The kid is the one piece of a
 * token we quote: it names a key, not a secret, and helps find a rotation
 * problem. */
static void sanitise_kid(char out[KID_QUOTE_MAX + 4], const char *kid)
{
    size_t i = 0;
    for (; kid[i] != '\0' && i < KID_QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)kid[i];
        out[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    if (kid[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

/* The first key in set whose kid is exactly kid (bytes, case-sensitive), or
 * NULL. Borrowed from set. Our own scan rather than lg_jwks_find() keeps
 * this file independent of jwks.c's internals. */
static const struct lg_jwks_key *find_key(const struct lg_jwks *set, const char *kid)
{
    if (set == NULL)
        return NULL;
    size_t n = strlen(kid);
    for (size_t i = 0; i < set->nkeys; i++) {
        const char *k = set->keys[i].kid;
        if (k != NULL && strlen(k) == n && memcmp(k, kid, n) == 0)
            return &set->keys[i];
    }
    return NULL;
}

/* Whether key may verify alg: the right key type (and curve), an EVP_PKEY
 * of that type (the set's kty field is not trusted alone), RSA of at least
 * 2048 bits, and the key's own "alg", when it names one, equal to alg. */
static enum lg_jwt_status key_fits(const struct jwt_alg *alg, const struct lg_jwks_key *key,
                                   char *err, size_t errlen)
{
    if (key->pkey == NULL)
        return fail(err, errlen, LG_JWT_KEY_MISMATCH, "key has no public key");
    if (key->alg != NULL && strcmp(key->alg, alg->name) != 0)
        return fail(err, errlen, LG_JWT_KEY_MISMATCH, "key is for another alg than %s", alg->name);
    int type = EVP_PKEY_get_base_id(key->pkey);
    if (alg->family == ALG_ECDSA) {
        if (key->kty != LG_JWKS_EC || type != EVP_PKEY_EC)
            return fail(err, errlen, LG_JWT_KEY_MISMATCH, "%s needs an EC key", alg->name);
        char group[64];
        size_t glen = 0;
        if (key->curve_nid != alg->curve_nid ||
            EVP_PKEY_get_group_name(key->pkey, group, sizeof(group), &glen) != 1 ||
            OBJ_sn2nid(group) != alg->curve_nid) {
            ERR_clear_error();
            return fail(err, errlen, LG_JWT_KEY_MISMATCH, "%s needs a key on curve %s", alg->name,
                        OBJ_nid2sn(alg->curve_nid));
        }
    } else {
        if (key->kty != LG_JWKS_RSA || type != EVP_PKEY_RSA)
            return fail(err, errlen, LG_JWT_KEY_MISMATCH, "%s needs an RSA key", alg->name);
        if (EVP_PKEY_get_bits(key->pkey) < 2048)
            return fail(err, errlen, LG_JWT_KEY_MISMATCH, "RSA key shorter than 2048 bits");
    }
    return LG_JWT_OK;
}

/* JWS carries an ECDSA signature as R || S, each exactly coordinate bytes
 * (RFC 7518 section 3.4); OpenSSL verifies the DER form. Returns the DER
 * (caller frees with OPENSSL_free()) and its length in *der_len, or NULL. */
static unsigned char *ecdsa_raw_to_der(const unsigned char *sig, size_t coordinate, int *der_len)
{
    BIGNUM *r = BN_bin2bn(sig, (int)coordinate, NULL);
    BIGNUM *s = BN_bin2bn(sig + coordinate, (int)coordinate, NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char *der = NULL;
    if (r == NULL || s == NULL || es == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    /* es owns r and s now */
    *der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    if (*der_len <= 0) {
        OPENSSL_free(der);
        return NULL;
    }
    return der;
}

/* Verify with a key that key_fits() accepted. */
static enum lg_jwt_status verify_with(const struct jwt_alg *alg, const struct lg_jwks_key *key,
                                      const void *input, size_t len, const unsigned char *sig,
                                      size_t siglen, char *err, size_t errlen)
{
    unsigned char *der = NULL;
    if (alg->family == ALG_ECDSA) {
        /* Only the exact raw size: a DER signature, or one padded or cut,
         * is not a JWS ECDSA signature however OpenSSL might read it. */
        if (siglen != 2 * alg->coordinate)
            return fail(err, errlen, LG_JWT_BAD_SIGNATURE, "%s signature is %zu bytes, not %zu",
                        alg->name, siglen, 2 * alg->coordinate);
        int der_len = 0;
        der = ecdsa_raw_to_der(sig, alg->coordinate, &der_len);
        if (der == NULL) {
            ERR_clear_error();
            return fail(err, errlen, LG_JWT_BAD_SIGNATURE, "cannot convert ECDSA signature");
        }
        sig = der;
        siglen = (size_t)der_len;
    }
    const EVP_MD *md = alg->md();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int rc = ctx != NULL && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, key->pkey) == 1;
    if (rc && alg->family == ALG_RSA_PKCS1)
        rc = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    if (rc && alg->family == ALG_RSA_PSS) {
        /* RFC 7518 section 3.5: MGF1 with the same hash, salt as long as
         * the hash output. */
        rc = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
    }
    enum lg_jwt_status st = LG_JWT_OK;
    if (!rc) {
        st = fail(err, errlen, LG_JWT_BAD_SIGNATURE, "cannot set up %s verification", alg->name);
    } else if (EVP_DigestVerify(ctx, sig, siglen, input, len) != 1) {
        st = fail(err, errlen, LG_JWT_BAD_SIGNATURE, "%s signature does not verify", alg->name);
    }
    /* A failed verification leaves entries in this thread's OpenSSL error
     * queue, where a later TLS call on the same thread would find them. */
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return st;
}

static enum lg_jwt_status verify_signature(const char *alg_name, const struct lg_jwks_key *key,
                                           const void *input, size_t len, const unsigned char *sig,
                                           size_t siglen, char *err, size_t errlen)
{
    const struct jwt_alg *alg = alg_name != NULL ? find_alg(alg_name) : NULL;
    if (alg == NULL)
        return fail(err, errlen, LG_JWT_BAD_ALG, "unsupported alg");
    if (key == NULL)
        return fail(err, errlen, LG_JWT_UNKNOWN_KID, "no key");
    enum lg_jwt_status st = key_fits(alg, key, err, errlen);
    if (st != LG_JWT_OK)
        return st;
    return verify_with(alg, key, input, len, sig, siglen, err, errlen);
}

enum lg_jwt_status lg_jwt_verify_signature(const char *alg, const struct lg_jwks_key *key,
                                           const void *input, size_t len, const unsigned char *sig,
                                           size_t siglen)
{
    return verify_signature(alg, key, input, len, sig, siglen, NULL, 0);
}

/* ---------------------------------------------------------------------- */
/* JSON checks beyond lg_json_parse()                                      */
/* ---------------------------------------------------------------------- */

static int compare_cstr_ptrs(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* True when an object anywhere in v has two members of the same name.
 * lg_json_parse() keeps duplicates (as yajl does), and which of two "iss"
 * a reader sees differs between libraries: a token that two verifiers
 * would read differently is refused. Recursion is bounded by the parse
 * depth. Allocation failure counts as a duplicate (refuse, never accept). */
static bool has_duplicate_names(yajl_val v)
{
    if (YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++) {
            if (has_duplicate_names(v->u.array.values[i]))
                return true;
        }
        return false;
    }
    if (!YAJL_IS_OBJECT(v))
        return false;
    size_t n = v->u.object.len;
    const char **keys = v->u.object.keys;
    if (n <= DUP_PAIRWISE_MAX) {
        for (size_t i = 0; i < n; i++) {
            for (size_t j = i + 1; j < n; j++) {
                if (strcmp(keys[i], keys[j]) == 0)
                    return true;
            }
        }
    } else {
        const char **sorted = malloc(n * sizeof(*sorted));
        if (sorted == NULL)
            return true;
        memcpy(sorted, keys, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), compare_cstr_ptrs);
        bool dup = false;
        for (size_t i = 1; i < n && !dup; i++)
            dup = strcmp(sorted[i - 1], sorted[i]) == 0;
        free(sorted);
        if (dup)
            return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (has_duplicate_names(v->u.object.values[i]))
            return true;
    }
    return false;
}

/* True when valid JSON text holds the escape \u0000. The parsed tree keeps
 * strings as C strings, so "joe\u0000x" would read as "joe": equal to an
 * issuer of "joe" here, and not elsewhere. Backslashes occur only inside
 * strings in valid JSON, so no string tracking is needed. */
static bool has_nul_escape(const char *text, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] != '\\')
            continue;
        if (text[i + 1] == 'u' && len - i >= 6 && memcmp(text + i + 2, "0000", 4) == 0)
            return true;
        i++; /* the escaped character */
    }
    return false;
}

/* Parse a decoded header or claims set: a JSON object, no duplicate member
 * names, no NUL in any string. Returns the tree (caller frees with
 * lg_json_free()) or NULL with err set. */
static yajl_val parse_object(const struct lg_buf *b, const char *what, char *err, size_t errlen)
{
    char jerr[LG_ERR_LEN];
    yajl_val v =
        lg_json_parse(lg_buf_cstr(b), b->len, b->len, LG_JSON_MAX_DEPTH, jerr, sizeof(jerr));
    if (v == NULL) {
        /* jerr holds an offset, not the text: safe to pass on */
        fail(err, errlen, LG_JWT_MALFORMED, "%s: %s", what, jerr);
        return NULL;
    }
    const char *why = NULL;
    if (!YAJL_IS_OBJECT(v))
        why = "not a JSON object";
    else if (has_nul_escape(b->data, b->len))
        why = "\\u0000 in a string";
    else if (has_duplicate_names(v))
        why = "duplicate member name";
    if (why != NULL) {
        fail(err, errlen, LG_JWT_MALFORMED, "%s: %s", what, why);
        lg_json_free(v);
        return NULL;
    }
    return v;
}

/* ---------------------------------------------------------------------- */
/* Claims                                                                  */
/* ---------------------------------------------------------------------- */

/* A NumericDate claim (RFC 7519 section 2) as whole seconds: integers
 * exactly; a fraction rounded down (round_up false: exp, so a token never
 * lives longer than it says) or up (round_up true: nbf and iat, so it never
 * starts earlier). False when v is not a number we can read. */
static bool numeric_date(yajl_val v, bool round_up, int64_t *out)
{
    if (v == NULL || !YAJL_IS_NUMBER(v))
        return false;
    int64_t i;
    if (lg_json_integer(v, &i)) {
        /* clamped below */
    } else if (v->u.number.flags & YAJL_NUMBER_DOUBLE_VALID) {
        double d = v->u.number.d;
        if (!(d > -(double)TIME_CLAMP && d < (double)TIME_CLAMP)) {
            i = d > 0 ? TIME_CLAMP : -TIME_CLAMP;
        } else {
            i = (int64_t)d; /* toward zero */
            if (!round_up && (double)i > d)
                i--;
            else if (round_up && (double)i < d)
                i++;
        }
    } else {
        return false; /* e.g. 1e999: strtod overflowed */
    }
    if (i > TIME_CLAMP)
        i = TIME_CLAMP;
    else if (i < -TIME_CLAMP)
        i = -TIME_CLAMP;
    *out = i;
    return true;
}

/* a + b without overflow (b is the policy's leeway, the only term that
 * may be large). */
static int64_t add_saturating(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static int64_t sub_saturating(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

static bool in_audience(const struct lg_jwt_policy *policy, const char *s)
{
    for (size_t i = 0; i < policy->naudience; i++) {
        if (policy->audience[i] != NULL && strcmp(policy->audience[i], s) == 0)
            return true;
    }
    return false;
}

/* aud as a string, or an array of strings of which one must match (an
 * array holding anything but strings is refused whole); without aud,
 * client_id, as API Gateway does for Cognito access tokens. An aud of any
 * other type, null included, counts as present and wrong. */
static enum lg_jwt_status check_audience(yajl_val claims, const struct lg_jwt_policy *policy,
                                         char *err, size_t errlen)
{
    yajl_val aud = lg_json_get(claims, "aud");
    if (aud == NULL) {
        const char *client_id = lg_json_get_string(claims, "client_id");
        if (client_id == NULL)
            return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "neither aud nor client_id");
        if (!in_audience(policy, client_id))
            return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "client_id is not an audience");
        return LG_JWT_OK;
    }
    if (YAJL_IS_STRING(aud)) {
        if (!in_audience(policy, aud->u.string))
            return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "aud is not an audience");
        return LG_JWT_OK;
    }
    if (!YAJL_IS_ARRAY(aud))
        return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "aud is neither a string nor an array");
    bool found = false;
    for (size_t i = 0; i < aud->u.array.len; i++) {
        yajl_val a = aud->u.array.values[i];
        if (!YAJL_IS_STRING(a))
            return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "aud array holds a non-string");
        if (in_audience(policy, a->u.string))
            found = true;
    }
    if (!found)
        return fail(err, errlen, LG_JWT_BAD_AUDIENCE, "no aud is an audience");
    return LG_JWT_OK;
}

/* The registered claims, after the signature passed. Sets *exp. */
static enum lg_jwt_status check_claims(yajl_val claims, const struct lg_jwt_policy *policy,
                                       int64_t *exp, char *err, size_t errlen)
{
    int64_t now = policy->now, leeway = policy->leeway_s, t;
    if (!numeric_date(lg_json_get(claims, "exp"), false, exp))
        return fail(err, errlen, LG_JWT_EXPIRED, "exp missing or not a number");
    if (add_saturating(*exp, leeway) <= now)
        return fail(err, errlen, LG_JWT_EXPIRED, "token expired");
    yajl_val v = lg_json_get(claims, "nbf");
    if (v != NULL) {
        if (!numeric_date(v, true, &t))
            return fail(err, errlen, LG_JWT_NOT_YET_VALID, "nbf is not a number");
        if (sub_saturating(t, leeway) > now)
            return fail(err, errlen, LG_JWT_NOT_YET_VALID, "nbf is in the future");
    }
    v = lg_json_get(claims, "iat");
    if (v != NULL) {
        if (!numeric_date(v, true, &t))
            return fail(err, errlen, LG_JWT_ISSUED_IN_FUTURE, "iat is not a number");
        if (sub_saturating(t, leeway) > now)
            return fail(err, errlen, LG_JWT_ISSUED_IN_FUTURE, "iat is in the future");
    }
    const char *iss = lg_json_get_string(claims, "iss");
    if (iss == NULL)
        return fail(err, errlen, LG_JWT_BAD_ISSUER, "iss missing or not a string");
    if (policy->issuer == NULL || strcmp(iss, policy->issuer) != 0)
        return fail(err, errlen, LG_JWT_BAD_ISSUER, "iss is not the issuer");
    enum lg_jwt_status st = check_audience(claims, policy, err, errlen);
    if (st != LG_JWT_OK)
        return st;
    if (policy->token_use != NULL) {
        const char *use = lg_json_get_string(claims, "token_use");
        if (use == NULL || strcmp(use, policy->token_use) != 0)
            return fail(err, errlen, LG_JWT_BAD_TOKEN_USE, "token_use is not %s",
                        policy->token_use);
    }
    return LG_JWT_OK;
}

/* v as compact JSON text, appended to b. Numbers keep the text they were
 * written with; strings are re-escaped (they are valid UTF-8: the parser
 * checked). */
static int append_json(struct lg_buf *b, yajl_val v)
{
    switch (v->type) {
    case yajl_t_string:
        return lg_json_append_string(b, v->u.string, strlen(v->u.string));
    case yajl_t_number:
        return lg_buf_puts(b, v->u.number.r);
    case yajl_t_true:
        return lg_buf_puts(b, "true");
    case yajl_t_false:
        return lg_buf_puts(b, "false");
    case yajl_t_null:
        return lg_buf_puts(b, "null");
    case yajl_t_array:
        if (lg_buf_putc(b, '[') != 0)
            return -1;
        for (size_t i = 0; i < v->u.array.len; i++) {
            if ((i > 0 && lg_buf_putc(b, ',') != 0) || append_json(b, v->u.array.values[i]) != 0)
                return -1;
        }
        return lg_buf_putc(b, ']');
    case yajl_t_object:
        if (lg_buf_putc(b, '{') != 0)
            return -1;
        for (size_t i = 0; i < v->u.object.len; i++) {
            const char *k = v->u.object.keys[i];
            if ((i > 0 && lg_buf_putc(b, ',') != 0) ||
                lg_json_append_string(b, k, strlen(k)) != 0 || lg_buf_putc(b, ':') != 0 ||
                append_json(b, v->u.object.values[i]) != 0)
                return -1;
        }
        return lg_buf_putc(b, '}');
    default:
        return -1;
    }
}

/* A scalar as API Gateway renders it: strings bare, numbers as written,
 * true/false, null as nothing. Containers fall back to compact JSON. */
static int append_rendered_scalar(struct lg_buf *b, yajl_val v)
{
    switch (v->type) {
    case yajl_t_string:
        return lg_buf_puts(b, v->u.string);
    case yajl_t_null:
        return 0;
    case yajl_t_number:
    case yajl_t_true:
    case yajl_t_false:
    case yajl_t_array:
    case yajl_t_object:
        return append_json(b, v);
    default:
        return -1;
    }
}

/* One top-level claim as requestContext.authorizer.jwt.claims holds it in
 * an HTTP API: arrays as "[a b c]" (elements rendered as scalars are, with
 * nested containers as compact JSON), objects as compact JSON, scalars as
 * above. Returns a string (caller frees with free()) or NULL. */
static char *render_claim(yajl_val v)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    int rc = 0;
    if (YAJL_IS_ARRAY(v)) {
        rc = lg_buf_putc(&b, '[');
        for (size_t i = 0; rc == 0 && i < v->u.array.len; i++) {
            if (i > 0)
                rc = lg_buf_putc(&b, ' ');
            if (rc == 0)
                rc = append_rendered_scalar(&b, v->u.array.values[i]);
        }
        if (rc == 0)
            rc = lg_buf_putc(&b, ']');
    } else {
        rc = append_rendered_scalar(&b, v);
    }
    if (rc != 0) {
        lg_buf_free(&b);
        return NULL;
    }
    char *s = lg_buf_steal(&b, NULL);
    return s != NULL ? s : strdup(""); /* nothing was appended (null, "") */
}

/* Append the space-separated words of s to c->scopes; empty words (runs of
 * spaces) are dropped. 0 or -1 (out of memory). */
static int add_scope_words(struct lg_jwt_claims *c, const char *s)
{
    while (*s != '\0') {
        while (*s == ' ')
            s++;
        size_t n = strcspn(s, " ");
        if (n == 0)
            break;
        char **grown = realloc(c->scopes, (c->nscopes + 1) * sizeof(*grown));
        if (grown == NULL)
            return -1;
        c->scopes = grown;
        if ((c->scopes[c->nscopes] = strndup(s, n)) == NULL)
            return -1;
        c->nscopes++;
        s += n;
    }
    return 0;
}

/* "scope" (OAuth 2.0, a space-separated string, as Cognito sends) wins;
 * else "scp" (Okta and Azure AD: an array of strings, or a string). Array
 * elements that are not strings grant nothing and are skipped. */
static int collect_scopes(struct lg_jwt_claims *c, yajl_val claims)
{
    yajl_val scope = lg_json_get(claims, "scope");
    if (scope != NULL && YAJL_IS_STRING(scope)) {
        c->has_scopes = true;
        return add_scope_words(c, scope->u.string);
    }
    yajl_val scp = lg_json_get(claims, "scp");
    if (scp == NULL)
        return 0;
    if (YAJL_IS_STRING(scp)) {
        c->has_scopes = true;
        return add_scope_words(c, scp->u.string);
    }
    if (YAJL_IS_ARRAY(scp)) {
        c->has_scopes = true;
        for (size_t i = 0; i < scp->u.array.len; i++) {
            yajl_val s = scp->u.array.values[i];
            if (YAJL_IS_STRING(s) && add_scope_words(c, s->u.string) != 0)
                return -1;
        }
    }
    return 0;
}

/* Fill out from a verified claims object. 0 or -1 (out of memory; out is
 * left for the caller to free). */
static int build_claims(struct lg_jwt_claims *out, yajl_val claims,
                        const struct lg_jwt_policy *policy)
{
    size_t n = claims->u.object.len;
    if (n > 0) {
        out->claims = calloc(n, sizeof(*out->claims));
        if (out->claims == NULL)
            return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct lg_jwt_claim *cl = &out->claims[i];
        cl->name = strdup(claims->u.object.keys[i]);
        cl->value = render_claim(claims->u.object.values[i]);
        out->nclaims++; /* counted now so that a failure below frees it */
        if (cl->name == NULL || cl->value == NULL)
            return -1;
        /* An empty identity (a null or "" claim) would put every such
         * caller in one throttle bucket and one per-user cache entry:
         * treat it as absent so the caller falls back. */
        if (policy->identity_claim != NULL && out->identity == NULL &&
            strcmp(cl->name, policy->identity_claim) == 0 && cl->value[0] != '\0' &&
            (out->identity = strdup(cl->value)) == NULL)
            return -1;
    }
    return collect_scopes(out, claims);
}

/* ---------------------------------------------------------------------- */
/* Verification                                                            */
/* ---------------------------------------------------------------------- */

/* Decode one part (strict base64url: no padding, URL-safe alphabet only,
 * zero unused bits) into b, initialised here; the caller frees b. */
static int decode_part(struct lg_buf *b, const char *s, size_t n)
{
    /* the decoder reserves 3/4 of n plus 3 before writing */
    lg_buf_init(b, n + 4);
    return lg_codec_base64url_decode(b, s, n);
}

enum lg_jwt_status lg_jwt_verify(const char *token, size_t len, const struct lg_jwks *keys,
                                 const struct lg_jwt_policy *policy, struct lg_jwt_claims *out,
                                 char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (token == NULL)
        return fail(err, errlen, LG_JWT_MALFORMED, "no token");
    /* Size first: nothing is decoded or allocated for an oversized token. */
    if (len > LG_JWT_MAX_LEN)
        return fail(err, errlen, LG_JWT_MALFORMED, "token is longer than %d bytes", LG_JWT_MAX_LEN);
    if (policy == NULL)
        return fail(err, errlen, LG_JWT_BAD_ISSUER, "no policy");

    /* Compact JWS: exactly three non-empty parts. Five parts would be a JWE,
     * two a JWS with an empty (unsigned) signature: both refused here. */
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    const char *end = token + len;
    if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL || dot1 == token ||
        dot2 == dot1 + 1 || dot2 + 1 == end)
        return fail(err, errlen, LG_JWT_MALFORMED, "token is not three non-empty parts");

    struct lg_buf hbuf, pbuf, sbuf;
    yajl_val header = NULL, claims = NULL;
    enum lg_jwt_status st;
    int hrc = decode_part(&hbuf, token, (size_t)(dot1 - token));
    int prc = decode_part(&pbuf, dot1 + 1, (size_t)(dot2 - dot1 - 1));
    int src = decode_part(&sbuf, dot2 + 1, (size_t)(end - dot2 - 1));
    if (hrc != 0 || prc != 0 || src != 0) {
        st = fail(err, errlen, LG_JWT_MALFORMED, "%s is not strict base64url",
                  hrc != 0   ? "header"
                  : prc != 0 ? "payload"
                             : "signature");
        goto done;
    }

    header = parse_object(&hbuf, "header", err, errlen);
    if (header == NULL) {
        st = LG_JWT_MALFORMED;
        goto done;
    }
    const char *alg = lg_json_get_string(header, "alg");
    if (alg == NULL) {
        st = fail(err, errlen, LG_JWT_BAD_ALG, "alg missing or not a string");
        goto done;
    }
    /* RFC 7515 section 4.1.11: a recipient must understand every extension
     * named in crit. We implement none, so any crit is refused. */
    if (lg_json_get(header, "crit") != NULL) {
        st = fail(err, errlen, LG_JWT_BAD_ALG, "crit header refused");
        goto done;
    }
    if (find_alg(alg) == NULL) {
        st = fail(err, errlen, LG_JWT_BAD_ALG, "%s",
                  strcmp(alg, "none") == 0     ? "alg none refused"
                  : strncmp(alg, "HS", 2) == 0 ? "HMAC alg refused"
                                               : "unsupported alg");
        goto done;
    }
    /* Header members jwk, jku, x5u and x5c are ignored: keys come only
     * from the configured set, never from the token. */
    const char *kid = lg_json_get_string(header, "kid");
    if (kid == NULL) {
        st = fail(err, errlen, LG_JWT_UNKNOWN_KID, "kid missing or not a string");
        goto done;
    }
    const struct lg_jwks_key *key = find_key(keys, kid);
    if (key == NULL) {
        char quoted[KID_QUOTE_MAX + 4];
        sanitise_kid(quoted, kid);
        st = fail(err, errlen, LG_JWT_UNKNOWN_KID, "no key with kid '%s'", quoted);
        goto done;
    }
    st = verify_signature(alg, key, token, (size_t)(dot2 - token), (const unsigned char *)sbuf.data,
                          sbuf.len, err, errlen);
    if (st != LG_JWT_OK)
        goto done;

    /* The claims are read only once the signature vouches for them. */
    claims = parse_object(&pbuf, "claims", err, errlen);
    if (claims == NULL) {
        st = LG_JWT_MALFORMED;
        goto done;
    }
    int64_t exp = 0;
    st = check_claims(claims, policy, &exp, err, errlen);
    if (st != LG_JWT_OK)
        goto done;
    out->exp = exp;
    if (build_claims(out, claims, policy) != 0) {
        /* Fail closed; MALFORMED is the nearest status for "cannot use". */
        st = fail(err, errlen, LG_JWT_MALFORMED, "out of memory");
        goto done;
    }

done:
    if (st != LG_JWT_OK)
        lg_jwt_claims_free(out);
    lg_json_free(header);
    lg_json_free(claims);
    lg_buf_free(&hbuf);
    lg_buf_free(&pbuf);
    lg_buf_free(&sbuf);
    return st;
}

void lg_jwt_claims_free(struct lg_jwt_claims *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nclaims; i++) {
        free(c->claims[i].name);
        free(c->claims[i].value);
    }
    free(c->claims);
    for (size_t i = 0; i < c->nscopes; i++)
        free(c->scopes[i]);
    free(c->scopes);
    free(c->identity);
    memset(c, 0, sizeof(*c));
}

const char *lg_jwt_status_name(enum lg_jwt_status s)
{
    switch (s) {
    case LG_JWT_OK:
        return "ok";
    case LG_JWT_MALFORMED:
        return "malformed";
    case LG_JWT_BAD_ALG:
        return "bad_alg";
    case LG_JWT_UNKNOWN_KID:
        return "unknown_kid";
    case LG_JWT_KEY_MISMATCH:
        return "key_mismatch";
    case LG_JWT_BAD_SIGNATURE:
        return "bad_signature";
    case LG_JWT_EXPIRED:
        return "expired";
    case LG_JWT_NOT_YET_VALID:
        return "not_yet_valid";
    case LG_JWT_ISSUED_IN_FUTURE:
        return "issued_in_future";
    case LG_JWT_BAD_ISSUER:
        return "bad_issuer";
    case LG_JWT_BAD_AUDIENCE:
        return "bad_audience";
    case LG_JWT_BAD_TOKEN_USE:
        return "bad_token_use";
    }
    return "unknown";
}

bool lg_jwt_has_scope(const struct lg_jwt_claims *c, char *const *scopes, size_t nscopes)
{
    if (nscopes == 0)
        return true;
    if (c == NULL)
        return false;
    for (size_t i = 0; i < c->nscopes; i++) {
        for (size_t j = 0; j < nscopes; j++) {
            if (scopes[j] != NULL && strcmp(c->scopes[i], scopes[j]) == 0)
                return true;
        }
    }
    return false;
}
