/* test_jwt.c - JWT verification: RFC 7515 examples, PyJWT-minted tokens, hostile tokens, claims. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/jwks.h"
#include "lambdagate/jwt.h"

#define DATA_DIR LG_TEST_DATA "/jwt/"

/* What tests/data/jwt/regen.py puts in every token it mints. */
#define ISS     "https://issuer.example.com/pool-1"
#define NOW     INT64_C(1700000000)
#define FAR_EXP INT64_C(4102444800)

/* Claims that pass the standard policy, for tokens signed here. */
#define GOOD_ISS "\"iss\":\"" ISS "\""
#define GOOD_AUD "\"aud\":\"client-a\""
#define GOOD_EXP "\"exp\":4102444800"
#define GOOD_SUB "\"sub\":\"user-1\""
#define GOOD     GOOD_ISS "," GOOD_AUD "," GOOD_EXP "," GOOD_SUB
/* The header of tokens signed here, with the in-process key. */
#define TEST_HEADER "{\"alg\":\"RS256\",\"kid\":\"test-rsa\"}"

static const char *const audiences[] = {"client-a", "client-b"};

/* Built by main() before the runner forks; read-only in the tests. */
static EVP_PKEY *signing_key;       /* RSA 2048, private: signs tokens made here */
static struct lg_jwks standard_set; /* owns its keys, kids, algs */

static char last_err[LG_ERR_LEN];

static struct lg_jwt_policy standard_policy(void)
{
    struct lg_jwt_policy p = {
        .issuer = ISS,
        .audience = audiences,
        .naudience = LG_ARRAY_LEN(audiences),
        .leeway_s = 60,
        .token_use = NULL,
        .identity_claim = "sub",
        .now = NOW,
    };
    return p;
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* The contents of DATA_DIR/name without trailing whitespace; caller frees. */
static char *read_data(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s", DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s (run tests/data/jwt/regen.py)", path);
    char *text = calloc(1, 256 * 1024);
    ck_assert_ptr_nonnull(text);
    size_t n = fread(text, 1, 256 * 1024 - 1, f);
    fclose(f);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        text[--n] = '\0';
    return text;
}

/* The public key in DATA_DIR/name (caller frees), or NULL. Also used by
 * main(), outside any test, so it does not assert. */
static EVP_PKEY *read_pem(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s", DATA_DIR, name);
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL)
        return NULL;
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return pkey;
}

static EVP_PKEY *load_pem(const char *name)
{
    EVP_PKEY *pkey = read_pem(name);
    ck_assert_msg(pkey != NULL, "no public key in %s (run tests/data/jwt/regen.py)", name);
    return pkey;
}

/* A key as jwks.c would build it: kty and curve from the EVP_PKEY. kid and
 * alg are borrowed (the caller keeps them alive). */
static struct lg_jwks_key make_key(char *kid, char *alg, EVP_PKEY *pkey)
{
    struct lg_jwks_key k = {.kid = kid, .alg = alg, .pkey = pkey};
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        k.kty = LG_JWKS_RSA;
    } else {
        char group[64];
        ck_assert_int_eq(EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL), 1);
        k.kty = LG_JWKS_EC;
        k.curve_nid = OBJ_sn2nid(group);
    }
    return k;
}

/* The standard set's key with this kid (its EVP_PKEY is borrowed). */
static EVP_PKEY *standard_pkey(const char *kid)
{
    for (size_t i = 0; i < standard_set.nkeys; i++) {
        if (standard_set.keys[i].kid && strcmp(standard_set.keys[i].kid, kid) == 0)
            return standard_set.keys[i].pkey;
    }
    ck_abort_msg("no standard key %s", kid);
    return NULL;
}

/* base64url without padding; written here, not taken from the library, so
 * that the library's decoder is checked against another implementation. */
static char *b64url(const void *data, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = malloc(n * 4 / 3 + 4);
    ck_assert_ptr_nonnull(out);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = alphabet[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = alphabet[v & 63];
    }
    out[o] = '\0';
    return out;
}

/* Decode with the library's decoder (exercised above by round trips). */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *outlen)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_codec_base64url_decode(&b, s, n), 0);
    unsigned char *out = (unsigned char *)lg_buf_steal(&b, outlen);
    if (out == NULL)
        out = calloc(1, 1);
    return out;
}

static char *join3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *t = malloc(n);
    ck_assert_ptr_nonnull(t);
    snprintf(t, n, "%s.%s.%s", a, b, c);
    return t;
}

/* header.payload.signature with sig_text as the third part verbatim. */
static char *unsigned_token(const char *header, const char *payload, const char *sig_text)
{
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    char *t = join3(h, p, sig_text);
    free(h);
    free(p);
    return t;
}

/* A token signed RS256 with signing_key (kid "test-rsa" in TEST_HEADER). */
static char *signed_token(const char *header, const char *payload)
{
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    size_t n = strlen(h) + 1 + strlen(p);
    char *input = malloc(n + 1);
    snprintf(input, n + 1, "%s.%s", h, p);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t siglen = sizeof(sig);
    ck_assert_int_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, signing_key), 1);
    ck_assert_int_eq(EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, n), 1);
    EVP_MD_CTX_free(ctx);
    char *s = b64url(sig, siglen);
    char *t = join3(h, p, s);
    free(h);
    free(p);
    free(s);
    free(input);
    return t;
}

/* The three parts of token: starts and lengths. */
struct parts {
    const char *at[3];
    size_t len[3];
};

static struct parts split(const char *token)
{
    struct parts ps;
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    ck_assert_ptr_nonnull(d2);
    ps.at[0] = token;
    ps.len[0] = (size_t)(d1 - token);
    ps.at[1] = d1 + 1;
    ps.len[1] = (size_t)(d2 - d1 - 1);
    ps.at[2] = d2 + 1;
    ps.len[2] = strlen(d2 + 1);
    return ps;
}

/* token with part i replaced by text; caller frees. */
static char *replace_part(const char *token, int i, const char *text)
{
    struct parts ps = split(token);
    char *keep[3];
    for (int j = 0; j < 3; j++)
        keep[j] = strndup(ps.at[j], ps.len[j]);
    char *t = join3(i == 0 ? text : keep[0], i == 1 ? text : keep[1], i == 2 ? text : keep[2]);
    for (int j = 0; j < 3; j++)
        free(keep[j]);
    return t;
}

/* token with its decoded signature replaced by sig[0..n). */
static char *with_signature(const char *token, const unsigned char *sig, size_t n)
{
    char *s = b64url(sig, n);
    char *t = replace_part(token, 2, s);
    free(s);
    return t;
}

static unsigned char *token_signature(const char *token, size_t *n)
{
    struct parts ps = split(token);
    return b64url_decode(ps.at[2], ps.len[2], n);
}

static enum lg_jwt_status verify_full(const char *token, const struct lg_jwks *set,
                                      const struct lg_jwt_policy *policy, struct lg_jwt_claims *out)
{
    last_err[0] = 'x'; /* must be overwritten */
    last_err[1] = '\0';
    return lg_jwt_verify(token, strlen(token), set, policy, out, last_err, sizeof(last_err));
}

/* Verify with the standard set and policy; the claims are freed here. On
 * failure the claims must come back empty and err must be set. */
static enum lg_jwt_status verify(const char *token)
{
    struct lg_jwt_policy p = standard_policy();
    struct lg_jwt_claims c;
    enum lg_jwt_status st = verify_full(token, &standard_set, &p, &c);
    if (st != LG_JWT_OK) {
        ck_assert_uint_eq(c.nclaims, 0);
        ck_assert_ptr_null(c.claims);
        ck_assert_ptr_null(c.identity);
        ck_assert_ptr_null(c.scopes);
        ck_assert(!c.has_scopes);
        ck_assert_msg(last_err[0] != '\0' && strcmp(last_err, "x") != 0, "err not set");
    }
    lg_jwt_claims_free(&c);
    return st;
}

static enum lg_jwt_status verify_signed(const char *header, const char *payload)
{
    char *t = signed_token(header, payload);
    enum lg_jwt_status st = verify(t);
    free(t);
    return st;
}

static enum lg_jwt_status verify_unsigned(const char *header, const char *payload,
                                          const char *sig_text)
{
    char *t = unsigned_token(header, payload, sig_text);
    enum lg_jwt_status st = verify(t);
    free(t);
    return st;
}

static enum lg_jwt_status verify_data(const char *name)
{
    char *t = read_data(name);
    enum lg_jwt_status st = verify(t);
    free(t);
    return st;
}

/* A rendered claim by name, or NULL. */
static const char *claim(const struct lg_jwt_claims *c, const char *name)
{
    for (size_t i = 0; i < c->nclaims; i++) {
        if (strcmp(c->claims[i].name, name) == 0)
            return c->claims[i].value;
    }
    return NULL;
}

#define ck_assert_status(got, want)                                                                \
    do {                                                                                           \
        enum lg_jwt_status got_ = (got), want_ = (want);                                           \
        ck_assert_msg(got_ == want_, "status %s, expected %s (err: %s)", lg_jwt_status_name(got_), \
                      lg_jwt_status_name(want_), last_err);                                        \
    } while (0)

/* ---------------------------------------------------------------------- */
/* RFC 7515 appendix A.2 and A.3                                           */
/* ---------------------------------------------------------------------- */

/* The RFC's tokens carry no kid, so lg_jwt_verify() (which requires one, as
 * API Gateway does) stops before the signature; the signature step is
 * checked on its own with the RFC's keys. */
static void check_rfc_example(const char *token_file, const char *pem_file, const char *alg,
                              const char *wrong_alg, enum lg_jwt_status wrong_alg_status)
{
    char *token = read_data(token_file);
    EVP_PKEY *pkey = load_pem(pem_file);
    char kid[] = "rfc";
    struct lg_jwks_key key = make_key(kid, NULL, pkey);
    struct parts ps = split(token);
    size_t input_len = ps.len[0] + 1 + ps.len[1];
    size_t siglen;
    unsigned char *sig = token_signature(token, &siglen);

    ck_assert_status(lg_jwt_verify_signature(alg, &key, token, input_len, sig, siglen), LG_JWT_OK);
    ck_assert_status(lg_jwt_verify_signature(wrong_alg, &key, token, input_len, sig, siglen),
                     wrong_alg_status);
    ck_assert_status(lg_jwt_verify_signature("HS256", &key, token, input_len, sig, siglen),
                     LG_JWT_BAD_ALG);
    ck_assert_status(lg_jwt_verify_signature("none", &key, token, input_len, sig, 0),
                     LG_JWT_BAD_ALG);
    /* one bit of the signing input, one bit of the signature */
    char *copy = strdup(token);
    copy[input_len - 1] ^= 1;
    ck_assert_status(lg_jwt_verify_signature(alg, &key, copy, input_len, sig, siglen),
                     LG_JWT_BAD_SIGNATURE);
    sig[siglen / 2] ^= 0x10;
    ck_assert_status(lg_jwt_verify_signature(alg, &key, token, input_len, sig, siglen),
                     LG_JWT_BAD_SIGNATURE);
    sig[siglen / 2] ^= 0x10;
    ck_assert_status(lg_jwt_verify_signature(alg, &key, token, input_len, sig, siglen - 1),
                     LG_JWT_BAD_SIGNATURE);

    /* The whole path: kid missing, so UNKNOWN_KID, whatever the set holds. */
    struct lg_jwks set = {.keys = &key, .nkeys = 1};
    struct lg_jwt_policy p = standard_policy();
    p.issuer = "joe";
    p.now = 1300819000;
    struct lg_jwt_claims c;
    ck_assert_status(verify_full(token, &set, &p, &c), LG_JWT_UNKNOWN_KID);
    ck_assert_str_eq(last_err, "kid missing or not a string");
    ck_assert_uint_eq(c.nclaims, 0);
    lg_jwt_claims_free(&c);

    free(copy);
    free(sig);
    EVP_PKEY_free(pkey);
    free(token);
}

START_TEST(test_rfc7515_a2_rs256)
{
    check_rfc_example("rfc7515-a2.jwt", "rfc7515-a2.pem", "RS256", "RS384", LG_JWT_BAD_SIGNATURE);
    /* the same key, read as PSS, must not verify a PKCS#1 v1.5 signature */
    check_rfc_example("rfc7515-a2.jwt", "rfc7515-a2.pem", "RS256", "PS256", LG_JWT_BAD_SIGNATURE);
    check_rfc_example("rfc7515-a2.jwt", "rfc7515-a2.pem", "RS256", "ES256", LG_JWT_KEY_MISMATCH);
}
END_TEST

START_TEST(test_rfc7515_a3_es256)
{
    check_rfc_example("rfc7515-a3.jwt", "rfc7515-a3.pem", "ES256", "ES384", LG_JWT_KEY_MISMATCH);
    check_rfc_example("rfc7515-a3.jwt", "rfc7515-a3.pem", "ES256", "RS256", LG_JWT_KEY_MISMATCH);
}
END_TEST

START_TEST(test_verify_signature_bad_inputs)
{
    char kid[] = "rsa-1";
    struct lg_jwks_key key = make_key(kid, NULL, standard_pkey("rsa-1"));
    unsigned char sig[256] = {0};
    ck_assert_status(lg_jwt_verify_signature(NULL, &key, "a.b", 3, sig, sizeof(sig)),
                     LG_JWT_BAD_ALG);
    ck_assert_status(lg_jwt_verify_signature("rs256", &key, "a.b", 3, sig, sizeof(sig)),
                     LG_JWT_BAD_ALG);
    ck_assert_status(lg_jwt_verify_signature("RS256", &key, "a.b", 3, sig, sizeof(sig)),
                     LG_JWT_BAD_SIGNATURE);
    key.pkey = NULL;
    ck_assert_status(lg_jwt_verify_signature("RS256", &key, "a.b", 3, sig, sizeof(sig)),
                     LG_JWT_KEY_MISMATCH);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Tokens minted by PyJWT, one per algorithm                               */
/* ---------------------------------------------------------------------- */

static const char *const minted[] = {
    "rs256.jwt", "rs384.jwt", "rs512.jwt", "ps256.jwt", "ps384.jwt",
    "ps512.jwt", "es256.jwt", "es384.jwt", "es512.jwt",
};

START_TEST(test_pyjwt_token_verifies)
{
    char *token = read_data(minted[_i]);
    struct lg_jwt_policy p = standard_policy();
    struct lg_jwt_claims c;
    ck_assert_status(verify_full(token, &standard_set, &p, &c), LG_JWT_OK);
    static const char *const names[] = {"iss", "aud", "sub",   "exp",
                                        "iat", "nbf", "scope", "token_use"};
    static const char *const values[] = {ISS,          "client-a",   "user-1",     "4102444800",
                                         "1699999000", "1699999000", "read write", "access"};
    ck_assert_uint_eq(c.nclaims, LG_ARRAY_LEN(names));
    for (size_t i = 0; i < c.nclaims; i++) {
        ck_assert_str_eq(c.claims[i].name, names[i]);
        ck_assert_str_eq(c.claims[i].value, values[i]);
    }
    ck_assert_int_eq(c.exp, FAR_EXP);
    ck_assert_str_eq(c.identity, "user-1");
    ck_assert(c.has_scopes);
    ck_assert_uint_eq(c.nscopes, 2);
    ck_assert_str_eq(c.scopes[0], "read");
    ck_assert_str_eq(c.scopes[1], "write");
    lg_jwt_claims_free(&c);
    ck_assert_ptr_null(c.claims);
    lg_jwt_claims_free(&c); /* twice is harmless */

    /* token_use is checked only when the policy asks */
    p.token_use = "access";
    ck_assert_status(verify_full(token, &standard_set, &p, &c), LG_JWT_OK);
    lg_jwt_claims_free(&c);
    p.token_use = "id";
    ck_assert_status(verify_full(token, &standard_set, &p, &c), LG_JWT_BAD_TOKEN_USE);
    lg_jwt_claims_free(&c);
    free(token);
}
END_TEST

START_TEST(test_pyjwt_token_tampered_signature)
{
    char *token = read_data(minted[_i]);
    size_t n;
    unsigned char *sig = token_signature(token, &n);
    sig[n - 1] ^= 0x01;
    char *bad = with_signature(token, sig, n);
    ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
    ck_assert_ptr_null(strstr(last_err, "user-1"));
    /* the failure left nothing in this thread's OpenSSL error queue */
    ck_assert_uint_eq(ERR_peek_error(), 0);
    free(bad);
    sig[n - 1] ^= 0x01;
    sig[0] ^= 0x80;
    bad = with_signature(token, sig, n);
    ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
    free(bad);
    free(sig);
    free(token);
}
END_TEST

START_TEST(test_pyjwt_token_tampered_payload)
{
    char *token = read_data(minted[_i]);
    struct parts ps = split(token);
    size_t n;
    unsigned char *payload = b64url_decode(ps.at[1], ps.len[1], &n);
    char *json = strndup((char *)payload, n);
    char *at = strstr(json, "user-1");
    ck_assert_ptr_nonnull(at);
    at[5] = '2'; /* sub user-1 -> user-2: a still valid, differently signed token */
    char *p = b64url(json, n);
    char *bad = replace_part(token, 1, p);
    ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
    free(bad);
    free(p);
    free(json);
    free(payload);
    free(token);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Algorithms and keys                                                     */
/* ---------------------------------------------------------------------- */

START_TEST(test_alg_none)
{
    const char *payload = "{" GOOD "}";
    /* a real unsigned token: the third part is empty */
    ck_assert_status(verify_unsigned("{\"alg\":\"none\",\"kid\":\"test-rsa\"}", payload, ""),
                     LG_JWT_MALFORMED);
    ck_assert_status(verify_unsigned("{\"alg\":\"none\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_str_eq(last_err, "alg none refused");
    ck_assert_status(verify_unsigned("{\"alg\":\"None\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":\"NONE\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"kid\":\"test-rsa\"}", payload, "AAAA"), LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":256,\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":null,\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":\"EdDSA\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":\"RS256 \",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
}
END_TEST

START_TEST(test_hmac_refused)
{
    /* HS256 whose secret is the RSA key's PEM text: the key-confusion forgery */
    ck_assert_status(verify_data("hs256-confusion.jwt"), LG_JWT_BAD_ALG);
    ck_assert_str_eq(last_err, "HMAC alg refused");
    const char *payload = "{" GOOD "}";
    ck_assert_status(verify_unsigned("{\"alg\":\"HS384\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
    ck_assert_status(verify_unsigned("{\"alg\":\"HS512\",\"kid\":\"test-rsa\"}", payload, "AAAA"),
                     LG_JWT_BAD_ALG);
}
END_TEST

START_TEST(test_pss_parameters)
{
    /* RFC 7518 section 3.5: salt as long as the hash, MGF1 with the same hash */
    ck_assert_status(verify_data("ps256-salt-max.jwt"), LG_JWT_BAD_SIGNATURE);
    ck_assert_status(verify_data("ps256-mgf1-sha1.jwt"), LG_JWT_BAD_SIGNATURE);
    ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

START_TEST(test_embedded_jwk_ignored)
{
    /* signed with the key in its own "jwk" header, naming kid rsa-1 */
    ck_assert_status(verify_data("jwk-embedded.jwt"), LG_JWT_BAD_SIGNATURE);
}
END_TEST

START_TEST(test_crit_refused)
{
    const char *payload = "{" GOOD "}";
    ck_assert_status(
        verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa\",\"crit\":[\"exp\"],\"exp\":1}",
                      payload),
        LG_JWT_BAD_ALG);
    ck_assert_str_eq(last_err, "crit header refused");
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa\",\"crit\":[]}", payload),
                     LG_JWT_BAD_ALG);
    ck_assert_status(
        verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa\",\"crit\":null}", payload),
        LG_JWT_BAD_ALG);
    /* other header members are fine */
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa\",\"typ\":\"at+jwt\","
                                   "\"x5u\":\"https://attacker.example/k\"}",
                                   payload),
                     LG_JWT_OK);
}
END_TEST

START_TEST(test_kid)
{
    const char *payload = "{" GOOD "}";
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"nope\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_str_eq(last_err, "no key with kid 'nope'");
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"../../etc/passwd\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_str_eq(last_err, "no key with kid '../../etc/passwd'");
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"' OR 1=1 --\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_str_eq(last_err, "no key with kid '' OR 1=1 --'");
    /* control characters, quotes, backslashes and non-ASCII never reach a log */
    ck_assert_status(
        verify_signed("{\"alg\":\"RS256\",\"kid\":\"a\\nb\\\"c\\\\d\\u00e9\"}", payload),
        LG_JWT_UNKNOWN_KID);
    ck_assert_str_eq(last_err, "no key with kid 'a?b?c?d?"
                               "?'");
    /* a long kid is cut to 64 characters */
    char header[256];
    char long_kid[101];
    memset(long_kid, 'k', 100);
    long_kid[100] = '\0';
    snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", long_kid);
    ck_assert_status(verify_signed(header, payload), LG_JWT_UNKNOWN_KID);
    char want[128];
    snprintf(want, sizeof(want), "no key with kid '%.64s...'", long_kid);
    ck_assert_str_eq(last_err, want);
    /* exact bytes: no case folding, no prefix match, no key without a kid */
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"TEST-RSA\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rs\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa \"}", payload),
                     LG_JWT_UNKNOWN_KID);
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"\"}", payload),
                     LG_JWT_UNKNOWN_KID);
    /* missing, or not a string */
    ck_assert_status(verify_signed("{\"alg\":\"RS256\"}", payload), LG_JWT_UNKNOWN_KID);
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":1}", payload), LG_JWT_UNKNOWN_KID);
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":[\"test-rsa\"]}", payload),
                     LG_JWT_UNKNOWN_KID);
    /* a NUL would cut the kid to "test-rsa" */
    ck_assert_status(verify_signed("{\"alg\":\"RS256\",\"kid\":\"test-rsa\\u0000x\"}", payload),
                     LG_JWT_MALFORMED);
    /* no key set at all */
    char *t = signed_token(TEST_HEADER, payload);
    struct lg_jwt_policy p = standard_policy();
    struct lg_jwt_claims c;
    ck_assert_status(verify_full(t, NULL, &p, &c), LG_JWT_UNKNOWN_KID);
    struct lg_jwks empty = {.keys = NULL, .nkeys = 0};
    ck_assert_status(verify_full(t, &empty, &p, &c), LG_JWT_UNKNOWN_KID);
    lg_jwt_claims_free(&c);
    free(t);
}
END_TEST

/* Verify token against a one-key set whose key is kid/alg/pkey, with kty
 * and curve taken from pkey unless overridden (kty > 0, nid >= 0). */
static enum lg_jwt_status verify_one_key(const char *token_file, const char *kid, const char *alg,
                                         EVP_PKEY *pkey, int kty, int nid)
{
    char *token = read_data(token_file);
    char *kid_copy = strdup(kid), *alg_copy = alg ? strdup(alg) : NULL;
    struct lg_jwks_key key = make_key(kid_copy, alg_copy, pkey);
    if (kty > 0)
        key.kty = (enum lg_jwks_kty)kty;
    if (nid >= 0)
        key.curve_nid = nid;
    struct lg_jwks set = {.keys = &key, .nkeys = 1};
    struct lg_jwt_policy p = standard_policy();
    struct lg_jwt_claims c;
    enum lg_jwt_status st = verify_full(token, &set, &p, &c);
    lg_jwt_claims_free(&c);
    free(kid_copy);
    free(alg_copy);
    free(token);
    return st;
}

START_TEST(test_key_mismatch)
{
    EVP_PKEY *rsa = standard_pkey("rsa-1"), *p256 = standard_pkey("ec-256"),
             *p384 = standard_pkey("ec-384");
    /* an RSA key under the kid an ES256 token names */
    ck_assert_status(verify_one_key("es256.jwt", "ec-256", NULL, rsa, -1, -1), LG_JWT_KEY_MISMATCH);
    /* an EC key for an RS256 or PS256 token */
    ck_assert_status(verify_one_key("rs256.jwt", "rsa-1", NULL, p256, -1, -1), LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("ps256.jwt", "rsa-1", NULL, p256, -1, -1), LG_JWT_KEY_MISMATCH);
    /* an EC key on another curve */
    ck_assert_status(verify_one_key("es256.jwt", "ec-256", NULL, p384, -1, -1),
                     LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("es384.jwt", "ec-384", NULL, p256, -1, -1),
                     LG_JWT_KEY_MISMATCH);
    /* the key's own alg must be the token's */
    ck_assert_status(verify_one_key("rs256.jwt", "rsa-1", "RS384", rsa, -1, -1),
                     LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("ps256.jwt", "rsa-1", "RS256", rsa, -1, -1),
                     LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("rs256.jwt", "rsa-1", "RS256", rsa, -1, -1), LG_JWT_OK);
    ck_assert_status(verify_one_key("es256.jwt", "ec-256", "ES256", p256, -1, -1), LG_JWT_OK);
    /* the set's kty and curve fields are not trusted alone */
    ck_assert_status(
        verify_one_key("es256.jwt", "ec-256", NULL, rsa, LG_JWKS_EC, NID_X9_62_prime256v1),
        LG_JWT_KEY_MISMATCH);
    ck_assert_status(
        verify_one_key("es256.jwt", "ec-256", NULL, p384, LG_JWKS_EC, NID_X9_62_prime256v1),
        LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("rs256.jwt", "rsa-1", NULL, rsa, LG_JWKS_EC, -1),
                     LG_JWT_KEY_MISMATCH);
    ck_assert_status(verify_one_key("es256.jwt", "ec-256", NULL, p256, -1, NID_secp384r1),
                     LG_JWT_KEY_MISMATCH);
}
END_TEST

START_TEST(test_rsa_key_too_short)
{
    EVP_PKEY *small = EVP_RSA_gen(1024);
    ck_assert_ptr_nonnull(small);
    ck_assert_status(verify_one_key("rs256.jwt", "rsa-1", NULL, small, -1, -1),
                     LG_JWT_KEY_MISMATCH);
    ck_assert_str_eq(last_err, "RSA key shorter than 2048 bits");
    EVP_PKEY_free(small);
}
END_TEST

START_TEST(test_ecdsa_signature_length)
{
    /* a valid DER signature is not a JWS signature */
    ck_assert_status(verify_data("es256-der.jwt"), LG_JWT_BAD_SIGNATURE);
    ck_assert_ptr_nonnull(strstr(last_err, "not 64"));

    static const struct {
        const char *file;
        size_t cut; /* bytes of the raw signature to keep, or extra zeros */
        bool extend;
    } cases[] = {
        {"es384.jwt", 64, false},  /* an ES256-sized signature on ES384 */
        {"es384.jwt", 95, false},  /* one byte short */
        {"es384.jwt", 1, true},    /* one byte long */
        {"es256.jwt", 63, false},  /* one short */
        {"es256.jwt", 1, true},    /* one long */
        {"es512.jwt", 128, false}, /* 2 * 64: a P-521 coordinate is 66 bytes */
        {"es512.jwt", 2, true},    /* 2 * 67 */
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        char *token = read_data(cases[i].file);
        size_t n;
        unsigned char *sig = token_signature(token, &n);
        unsigned char buf[300] = {0};
        memcpy(buf, sig, n);
        size_t len = cases[i].extend ? n + cases[i].cut : cases[i].cut;
        char *bad = with_signature(token, buf, len);
        ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
        free(bad);
        free(sig);
        free(token);
    }
    /* right size, but R = S = 0 */
    char *token = read_data("es256.jwt");
    unsigned char zeros[64] = {0};
    char *bad = with_signature(token, zeros, sizeof(zeros));
    ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
    free(bad);
    free(token);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Shape of the token                                                      */
/* ---------------------------------------------------------------------- */

START_TEST(test_parts)
{
    char *token = read_data("rs256.jwt");
    struct parts ps = split(token);
    char *h = strndup(ps.at[0], ps.len[0]), *p = strndup(ps.at[1], ps.len[1]),
         *s = strndup(ps.at[2], ps.len[2]);
    char buf[2048];
    /* two parts; four; an empty header, payload or signature; one part */
    const char *bad[8];
    char four[2048], nohdr[2048], nopay[2048], nosig[2048], trail[2048], lead[2048];
    snprintf(buf, sizeof(buf), "%s.%s", h, p);
    snprintf(four, sizeof(four), "%s.%s.%s.%s", h, p, s, s);
    snprintf(nohdr, sizeof(nohdr), ".%s.%s", p, s);
    snprintf(nopay, sizeof(nopay), "%s..%s", h, s);
    snprintf(nosig, sizeof(nosig), "%s.%s.", h, p);
    snprintf(trail, sizeof(trail), "%s.%s.%s.", h, p, s);
    snprintf(lead, sizeof(lead), ".%s.%s.%s", h, p, s);
    bad[0] = buf;
    bad[1] = four;
    bad[2] = nohdr;
    bad[3] = nopay;
    bad[4] = nosig;
    bad[5] = trail;
    bad[6] = lead;
    bad[7] = h;
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        ck_assert_status(verify(bad[i]), LG_JWT_MALFORMED);
        ck_assert_str_eq(last_err, "token is not three non-empty parts");
    }
    ck_assert_status(verify(""), LG_JWT_MALFORMED);
    ck_assert_status(verify(".."), LG_JWT_MALFORMED);
    /* a JWE-like five-part token */
    snprintf(buf, sizeof(buf), "%s.%s.%s.%s.%s", h, p, s, s, s);
    ck_assert_status(verify(buf), LG_JWT_MALFORMED);
    /* the token itself, for contrast */
    ck_assert_status(verify(token), LG_JWT_OK);
    /* NULL token */
    struct lg_jwt_policy pol = standard_policy();
    struct lg_jwt_claims c;
    ck_assert_status(lg_jwt_verify(NULL, 0, &standard_set, &pol, &c, last_err, sizeof(last_err)),
                     LG_JWT_MALFORMED);
    /* err may be NULL */
    ck_assert_status(lg_jwt_verify("a.b", 3, &standard_set, &pol, &c, NULL, 0), LG_JWT_MALFORMED);
    free(h);
    free(p);
    free(s);
    free(token);
}
END_TEST

START_TEST(test_truncated)
{
    char *token = read_data("rs256.jwt");
    size_t len = strlen(token);
    struct parts ps = split(token);
    ck_assert_uint_eq(ps.len[2], 342); /* a 256-byte signature */
    /* cut 1 character: 341 % 4 == 1 is never base64url */
    token[len - 1] = '\0';
    ck_assert_status(verify(token), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "signature is not strict base64url");
    /* cut 2: 340 is whole groups, well-formed base64url of a 255-byte
     * signature */
    token[len - 2] = '\0';
    ck_assert_status(verify(token), LG_JWT_BAD_SIGNATURE);
    /* the signature cut to 128 bytes and re-encoded */
    free(token);
    token = read_data("rs256.jwt");
    size_t n;
    unsigned char *sig = token_signature(token, &n);
    char *bad = with_signature(token, sig, 128);
    ck_assert_status(verify(bad), LG_JWT_BAD_SIGNATURE);
    free(bad);
    free(sig);
    /* cut through the payload */
    token[ps.len[0] + 1 + 10] = '\0';
    ck_assert_status(verify(token), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "token is not three non-empty parts");
    free(token);
}
END_TEST

START_TEST(test_base64url_strict)
{
    char *token = read_data("rs256.jwt");
    struct parts ps = split(token);
    char *bad;

    /* padding on the signature (256 bytes -> 342 chars + "==") */
    size_t n = strlen(token);
    bad = malloc(n + 3);
    snprintf(bad, n + 3, "%s==", token);
    ck_assert_status(verify(bad), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "signature is not strict base64url");
    free(bad);

    /* the standard alphabet's '+' and '/' and a space, in each part */
    const char subst[] = {'+', '/', ' ', '=', '.'};
    for (int part = 0; part < 3; part++) {
        for (size_t i = 0; i < sizeof(subst); i++) {
            bad = strdup(token);
            bad[ps.at[part] - token + 2] = subst[i];
            ck_assert_status(verify(bad), LG_JWT_MALFORMED);
            free(bad);
        }
    }

    /* non-canonical: unused low bits of the last symbol set, in every part
     * whose length leaves a partial group */
    int done = 0;
    for (int part = 0; part < 3; part++) {
        size_t rest = ps.len[part] % 4;
        if (rest == 0)
            continue;
        bad = strdup(token);
        char *last = bad + (ps.at[part] - token) + ps.len[part] - 1;
        /* the last symbol's value | 1 keeps it in the alphabet */
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *pos = strchr(alphabet, *last);
        ck_assert_ptr_nonnull(pos);
        *last = alphabet[(pos - alphabet) | 1];
        ck_assert_status(verify(bad), LG_JWT_MALFORMED);
        free(bad);
        done++;
    }
    ck_assert_int_gt(done, 0);

    /* a NUL byte inside the length given */
    bad = strdup(token);
    bad[ps.at[1] - token + 3] = '\0';
    struct lg_jwt_policy pol = standard_policy();
    struct lg_jwt_claims c;
    ck_assert_status(lg_jwt_verify(bad, n, &standard_set, &pol, &c, last_err, sizeof(last_err)),
                     LG_JWT_MALFORMED);
    free(bad);
    free(token);
}
END_TEST

START_TEST(test_too_long)
{
    size_t n = 100 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    big[8] = '.';
    big[17] = '.';
    big[n] = '\0';
    ck_assert_status(verify(big), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "token is longer than 8192 bytes");
    /* one over the limit */
    big[LG_JWT_MAX_LEN + 1] = '\0';
    ck_assert_status(verify(big), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "token is longer than 8192 bytes");
    /* at the limit it is decoded: the header ("AAAAAAAA", six NUL bytes)
     * is what fails */
    big[LG_JWT_MAX_LEN] = '\0';
    ck_assert_status(verify(big), LG_JWT_MALFORMED);
    ck_assert_msg(strncmp(last_err, "header: ", 8) == 0, "err: %s", last_err);
    free(big);
}
END_TEST

START_TEST(test_json_shape)
{
    /* header: not JSON, not an object, duplicate names (checked before the
     * signature, so an unsigned token shows it) */
    const char *payload = "{" GOOD "}";
    ck_assert_status(verify_unsigned("{\"alg\":\"RS256\",\"kid\":\"test-rsa\"", payload, "AAAA"),
                     LG_JWT_MALFORMED);
    ck_assert_status(verify_unsigned("[\"RS256\"]", payload, "AAAA"), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "header: not a JSON object");
    ck_assert_status(verify_unsigned("\"RS256\"", payload, "AAAA"), LG_JWT_MALFORMED);
    ck_assert_status(verify_unsigned("{\"alg\":\"RS256\",\"kid\":\"test-rsa\",\"alg\":\"none\"}",
                                     payload, "AAAA"),
                     LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "header: duplicate member name");
    ck_assert_status(
        verify_unsigned("{\"alg\":\"RS256\",/*c*/\"kid\":\"test-rsa\"}", payload, "AAAA"),
        LG_JWT_MALFORMED);

    /* claims, signed: not an object, not JSON, trailing text */
    ck_assert_status(verify_signed(TEST_HEADER, "[1,2]"), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "claims: not a JSON object");
    ck_assert_status(verify_signed(TEST_HEADER, "\"" ISS "\""), LG_JWT_MALFORMED);
    ck_assert_status(verify_signed(TEST_HEADER, "null"), LG_JWT_MALFORMED);
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD ""), LG_JWT_MALFORMED);
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD "} {}"), LG_JWT_MALFORMED);
    /* unsigned claims that are not JSON: the signature fails first, the
     * claims are never parsed */
    ck_assert_status(verify_unsigned(TEST_HEADER, "[1,2]", "AAAA"), LG_JWT_BAD_SIGNATURE);
}
END_TEST

START_TEST(test_duplicate_claims)
{
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD ",\"sub\":\"admin\"}"), LG_JWT_MALFORMED);
    ck_assert_str_eq(last_err, "claims: duplicate member name");
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD ",\"iss\":\"https://evil.example\"}"),
                     LG_JWT_MALFORMED);
    /* nested objects too */
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD ",\"x\":[{\"a\":1,\"a\":2}]}"),
                     LG_JWT_MALFORMED);
    /* many members (the sorted path): a duplicate at the end, then none */
    char payload[1024];
    int off = snprintf(payload, sizeof(payload), "{" GOOD);
    for (int i = 0; i < 30; i++)
        off += snprintf(payload + off, sizeof(payload) - (size_t)off, ",\"c%d\":%d", i, i);
    snprintf(payload + off, sizeof(payload) - (size_t)off, ",\"c7\":0}");
    ck_assert_status(verify_signed(TEST_HEADER, payload), LG_JWT_MALFORMED);
    snprintf(payload + off, sizeof(payload) - (size_t)off, ",\"c30\":0}");
    ck_assert_status(verify_signed(TEST_HEADER, payload), LG_JWT_OK);
    /* a name that differs only after an escaped NUL is refused as well */
    ck_assert_status(verify_signed(TEST_HEADER, "{" GOOD ",\"sub\\u0000\":\"admin\"}"),
                     LG_JWT_MALFORMED);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Claims, signed here                                                     */
/* ---------------------------------------------------------------------- */

struct claims_case {
    const char *name;
    const char *payload;
    enum lg_jwt_status want;
    const char *token_use; /* policy->token_use */
};

static const struct claims_case claims_cases[] = {
    {"good", "{" GOOD "}", LG_JWT_OK, NULL},
    /* exp: leeway 60, expired when exp + 60 <= now */
    {"exp missing", "{" GOOD_ISS "," GOOD_AUD "}", LG_JWT_EXPIRED, NULL},
    {"exp now-61", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999939}", LG_JWT_EXPIRED, NULL},
    {"exp now-60", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999940}", LG_JWT_EXPIRED, NULL},
    {"exp now-59", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999941}", LG_JWT_OK, NULL},
    {"exp fraction floors", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999940.9}", LG_JWT_EXPIRED,
     NULL},
    {"exp fraction", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999941.5}", LG_JWT_OK, NULL},
    {"exp exponent", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":4.1e9}", LG_JWT_OK, NULL},
    {"exp string", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":\"4102444800\"}", LG_JWT_EXPIRED, NULL},
    {"exp true", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":true}", LG_JWT_EXPIRED, NULL},
    {"exp null", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":null}", LG_JWT_EXPIRED, NULL},
    {"exp huge", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1e999}", LG_JWT_EXPIRED, NULL},
    {"exp int64 min", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":-9223372036854775808}", LG_JWT_EXPIRED,
     NULL},
    {"exp int64 max", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":9223372036854775807}", LG_JWT_OK, NULL},
    {"exp beyond int64", "{" GOOD_ISS "," GOOD_AUD ",\"exp\":99999999999999999999}", LG_JWT_OK,
     NULL},
    /* nbf: refused when nbf - 60 > now */
    {"nbf now+61", "{" GOOD ",\"nbf\":1700000061}", LG_JWT_NOT_YET_VALID, NULL},
    {"nbf now+60", "{" GOOD ",\"nbf\":1700000060}", LG_JWT_OK, NULL},
    {"nbf fraction rounds up", "{" GOOD ",\"nbf\":1700000060.2}", LG_JWT_NOT_YET_VALID, NULL},
    {"nbf past", "{" GOOD ",\"nbf\":1600000000}", LG_JWT_OK, NULL},
    {"nbf string", "{" GOOD ",\"nbf\":\"0\"}", LG_JWT_NOT_YET_VALID, NULL},
    /* iat: refused when iat - 60 > now */
    {"iat now+61", "{" GOOD ",\"iat\":1700000061}", LG_JWT_ISSUED_IN_FUTURE, NULL},
    {"iat now+30", "{" GOOD ",\"iat\":1700000030}", LG_JWT_OK, NULL},
    {"iat now+60", "{" GOOD ",\"iat\":1700000060}", LG_JWT_OK, NULL},
    {"iat null", "{" GOOD ",\"iat\":null}", LG_JWT_ISSUED_IN_FUTURE, NULL},
    /* iss: exact */
    {"iss missing", "{" GOOD_AUD "," GOOD_EXP "}", LG_JWT_BAD_ISSUER, NULL},
    {"iss wrong", "{\"iss\":\"https://evil.example\"," GOOD_AUD "," GOOD_EXP "}", LG_JWT_BAD_ISSUER,
     NULL},
    {"iss trailing slash", "{\"iss\":\"" ISS "/\"," GOOD_AUD "," GOOD_EXP "}", LG_JWT_BAD_ISSUER,
     NULL},
    {"iss case", "{\"iss\":\"HTTPS://issuer.example.com/pool-1\"," GOOD_AUD "," GOOD_EXP "}",
     LG_JWT_BAD_ISSUER, NULL},
    {"iss array", "{\"iss\":[\"" ISS "\"]," GOOD_AUD "," GOOD_EXP "}", LG_JWT_BAD_ISSUER, NULL},
    {"iss NUL", "{\"iss\":\"" ISS "\\u0000.evil\"," GOOD_AUD "," GOOD_EXP "}", LG_JWT_MALFORMED,
     NULL},
    /* aud: a string or an array of strings, one of them an audience */
    {"aud other", "{" GOOD_ISS ",\"aud\":\"other\"," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    {"aud case", "{" GOOD_ISS ",\"aud\":\"CLIENT-A\"," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    {"aud second", "{" GOOD_ISS ",\"aud\":\"client-b\"," GOOD_EXP "}", LG_JWT_OK, NULL},
    {"aud array", "{" GOOD_ISS ",\"aud\":[\"x\",\"client-b\"]," GOOD_EXP "}", LG_JWT_OK, NULL},
    {"aud array none", "{" GOOD_ISS ",\"aud\":[\"x\",\"y\"]," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE,
     NULL},
    {"aud array empty", "{" GOOD_ISS ",\"aud\":[]," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    {"aud array non-string", "{" GOOD_ISS ",\"aud\":[\"client-a\",1]," GOOD_EXP "}",
     LG_JWT_BAD_AUDIENCE, NULL},
    {"aud number", "{" GOOD_ISS ",\"aud\":42," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    {"aud null", "{" GOOD_ISS ",\"aud\":null,\"client_id\":\"client-a\"," GOOD_EXP "}",
     LG_JWT_BAD_AUDIENCE, NULL},
    /* client_id only without aud (Cognito access tokens) */
    {"client_id", "{" GOOD_ISS ",\"client_id\":\"client-b\"," GOOD_EXP "}", LG_JWT_OK, NULL},
    {"client_id other", "{" GOOD_ISS ",\"client_id\":\"x\"," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE,
     NULL},
    {"client_id number", "{" GOOD_ISS ",\"client_id\":1," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    {"aud wrong, client_id right",
     "{" GOOD_ISS ",\"aud\":\"x\",\"client_id\":\"client-a\"," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE,
     NULL},
    {"neither aud nor client_id", "{" GOOD_ISS "," GOOD_EXP "}", LG_JWT_BAD_AUDIENCE, NULL},
    /* token_use, when the policy names one */
    {"token_use access", "{" GOOD ",\"token_use\":\"access\"}", LG_JWT_OK, "access"},
    {"token_use id", "{" GOOD ",\"token_use\":\"id\"}", LG_JWT_BAD_TOKEN_USE, "access"},
    {"token_use missing", "{" GOOD "}", LG_JWT_BAD_TOKEN_USE, "access"},
    {"token_use number", "{" GOOD ",\"token_use\":1}", LG_JWT_BAD_TOKEN_USE, "id"},
    {"token_use unchecked", "{" GOOD ",\"token_use\":\"id\"}", LG_JWT_OK, NULL},
    /* the first failing check decides */
    {"expired and wrong iss", "{\"iss\":\"x\"," GOOD_AUD ",\"exp\":1}", LG_JWT_EXPIRED, NULL},
    {"wrong iss and aud", "{\"iss\":\"x\",\"aud\":\"x\"," GOOD_EXP "}", LG_JWT_BAD_ISSUER, NULL},
};

START_TEST(test_claims_case)
{
    const struct claims_case *k = &claims_cases[_i];
    char *t = signed_token(TEST_HEADER, k->payload);
    struct lg_jwt_policy p = standard_policy();
    p.token_use = k->token_use;
    struct lg_jwt_claims c;
    enum lg_jwt_status st = verify_full(t, &standard_set, &p, &c);
    ck_assert_msg(st == k->want, "case \"%s\": status %s, expected %s (err: %s)", k->name,
                  lg_jwt_status_name(st), lg_jwt_status_name(k->want), last_err);
    if (st != LG_JWT_OK)
        ck_assert_uint_eq(c.nclaims, 0);
    lg_jwt_claims_free(&c);
    free(t);
}
END_TEST

START_TEST(test_exp_value)
{
    struct lg_jwt_policy p = standard_policy();
    struct lg_jwt_claims c;
    char *t = signed_token(TEST_HEADER, "{" GOOD_ISS "," GOOD_AUD ",\"exp\":1699999941.5}");
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_OK);
    ck_assert_int_eq(c.exp, 1699999941);
    ck_assert_str_eq(claim(&c, "exp"), "1699999941.5");
    lg_jwt_claims_free(&c);
    free(t);
    /* rounded down, not toward zero: -0.5 is -1, expired at now = -1 */
    t = signed_token(TEST_HEADER, "{" GOOD_ISS "," GOOD_AUD ",\"exp\":-0.5}");
    p.now = -1;
    p.leeway_s = 0;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_EXPIRED);
    p.now = -2;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_OK);
    ck_assert_int_eq(c.exp, -1);
    lg_jwt_claims_free(&c);
    free(t);
    /* nbf rounded up: 0.5 is 1, not yet valid at now = 0 */
    t = signed_token(TEST_HEADER, "{" GOOD ",\"nbf\":0.5}");
    p.now = 0;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_NOT_YET_VALID);
    p.now = 1;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_OK);
    lg_jwt_claims_free(&c);
    free(t);
}
END_TEST

START_TEST(test_leeway_extremes)
{
    /* no overflow (UBSan would say) with a huge leeway or huge times */
    struct lg_jwt_policy p = standard_policy();
    p.leeway_s = INT64_MAX;
    struct lg_jwt_claims c;
    char *t = signed_token(TEST_HEADER, "{" GOOD_ISS "," GOOD_AUD
                                        ",\"exp\":-9223372036854775808,\"nbf\":9223372036854775807,"
                                        "\"iat\":9223372036854775807}");
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_OK);
    lg_jwt_claims_free(&c);
    p.leeway_s = 0;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_EXPIRED);
    p.now = INT64_MIN;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_NOT_YET_VALID);
    p.leeway_s = INT64_MIN;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_EXPIRED);
    free(t);
}
END_TEST

START_TEST(test_no_issuer_in_policy)
{
    struct lg_jwt_policy p = standard_policy();
    p.issuer = NULL;
    struct lg_jwt_claims c;
    char *t = signed_token(TEST_HEADER, "{" GOOD "}");
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_BAD_ISSUER);
    p = standard_policy();
    p.naudience = 0;
    ck_assert_status(verify_full(t, &standard_set, &p, &c), LG_JWT_BAD_AUDIENCE);
    free(t);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Scopes and rendering                                                    */
/* ---------------------------------------------------------------------- */

/* Verify a signed token with these extra claims; the caller frees *c. */
static void verify_ok(const char *extra, struct lg_jwt_claims *c, const char *identity_claim)
{
    char payload[2048];
    snprintf(payload, sizeof(payload), "{" GOOD "%s}", extra);
    char *t = signed_token(TEST_HEADER, payload);
    struct lg_jwt_policy p = standard_policy();
    p.identity_claim = identity_claim;
    ck_assert_status(verify_full(t, &standard_set, &p, c), LG_JWT_OK);
    free(t);
}

static void assert_scopes(const struct lg_jwt_claims *c, const char *const *want, size_t n)
{
    ck_assert(c->has_scopes);
    ck_assert_uint_eq(c->nscopes, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(c->scopes[i], want[i]);
}

START_TEST(test_scopes)
{
    struct lg_jwt_claims c;
    verify_ok(",\"scope\":\"  read  write:all \"", &c, "sub");
    static const char *const rw[] = {"read", "write:all"};
    assert_scopes(&c, rw, 2);
    char *need_write[] = {"admin", "write:all"}, *need_admin[] = {"admin"}, *need_read[] = {"rea"};
    ck_assert(lg_jwt_has_scope(&c, need_write, 2));
    ck_assert(!lg_jwt_has_scope(&c, need_admin, 1));
    ck_assert(!lg_jwt_has_scope(&c, need_read, 1)); /* whole words only */
    ck_assert(lg_jwt_has_scope(&c, NULL, 0));
    lg_jwt_claims_free(&c);

    /* scp as an array (Okta), as a string */
    verify_ok(",\"scp\":[\"a\",\"b c\",\"\",3]", &c, "sub");
    static const char *const abc[] = {"a", "b", "c"};
    assert_scopes(&c, abc, 3);
    lg_jwt_claims_free(&c);
    verify_ok(",\"scp\":\"x y\"", &c, "sub");
    static const char *const xy[] = {"x", "y"};
    assert_scopes(&c, xy, 2);
    lg_jwt_claims_free(&c);

    /* scope wins over scp */
    verify_ok(",\"scp\":[\"admin\"],\"scope\":\"read\"", &c, "sub");
    static const char *const r[] = {"read"};
    assert_scopes(&c, r, 1);
    ck_assert(!lg_jwt_has_scope(&c, need_admin, 1));
    lg_jwt_claims_free(&c);

    /* an empty scope is present, with no scopes */
    verify_ok(",\"scope\":\"\"", &c, "sub");
    ck_assert(c.has_scopes);
    ck_assert_uint_eq(c.nscopes, 0);
    ck_assert(!lg_jwt_has_scope(&c, need_admin, 1));
    lg_jwt_claims_free(&c);

    /* neither */
    verify_ok("", &c, "sub");
    ck_assert(!c.has_scopes);
    ck_assert_uint_eq(c.nscopes, 0);
    ck_assert_ptr_null(c.scopes);
    ck_assert(!lg_jwt_has_scope(&c, need_admin, 1));
    ck_assert(lg_jwt_has_scope(&c, NULL, 0));
    lg_jwt_claims_free(&c);
    ck_assert(!lg_jwt_has_scope(NULL, need_admin, 1));
}
END_TEST

START_TEST(test_claim_rendering)
{
    struct lg_jwt_claims c;
    verify_ok(
        ",\"num\":1.50,\"big\":1e3,\"neg\":-7,\"t\":true,\"f\":false,\"n\":null,"
        "\"arr\":[\"a\",1,true,null,\"b c\",[1,\"x\"],{\"k\":1}],"
        "\"obj\":{\"k\":\"v\",\"n\":[1,2.0],\"e\":\"q\\\"\\\\\\u00e9\\n\",\"z\":null,\"b\":false},"
        "\"empty\":[],\"eo\":{},\"str\":\"line\\nnext \\u00e9\",\"cognito:groups\":[\"admin\","
        "\"users\"]",
        &c, "sub");
    static const struct {
        const char *name, *value;
    } want[] = {
        {"iss", ISS},
        {"aud", "client-a"},
        {"exp", "4102444800"},
        {"sub", "user-1"},
        {"num", "1.50"},
        {"big", "1e3"},
        {"neg", "-7"},
        {"t", "true"},
        {"f", "false"},
        {"n", ""},
        {"arr", "[a 1 true  b c [1,\"x\"] {\"k\":1}]"},
        {"obj",
         "{\"k\":\"v\",\"n\":[1,2.0],\"e\":\"q\\\"\\\\\xc3\xa9\\n\",\"z\":null,\"b\":false}"},
        {"empty", "[]"},
        {"eo", "{}"},
        {"str", "line\nnext \xc3\xa9"},
        {"cognito:groups", "[admin users]"},
    };
    ck_assert_uint_eq(c.nclaims, LG_ARRAY_LEN(want));
    for (size_t i = 0; i < LG_ARRAY_LEN(want); i++) {
        ck_assert_str_eq(c.claims[i].name, want[i].name);
        ck_assert_str_eq(c.claims[i].value, want[i].value);
    }
    ck_assert_str_eq(c.identity, "user-1");
    lg_jwt_claims_free(&c);
}
END_TEST

START_TEST(test_identity)
{
    struct lg_jwt_claims c;
    verify_ok(",\"num\":1.50,\"n\":null,\"e\":\"\",\"g\":[\"a\",\"b\"]", &c, "num");
    ck_assert_str_eq(c.identity, "1.50");
    lg_jwt_claims_free(&c);
    verify_ok(",\"g\":[\"a\",\"b\"]", &c, "g");
    ck_assert_str_eq(c.identity, "[a b]");
    lg_jwt_claims_free(&c);
    /* absent, null or empty: no identity, so the caller falls back */
    verify_ok(",\"n\":null,\"e\":\"\"", &c, "missing");
    ck_assert_ptr_null(c.identity);
    lg_jwt_claims_free(&c);
    verify_ok(",\"n\":null,\"e\":\"\"", &c, "n");
    ck_assert_ptr_null(c.identity);
    lg_jwt_claims_free(&c);
    verify_ok(",\"n\":null,\"e\":\"\"", &c, "e");
    ck_assert_ptr_null(c.identity);
    lg_jwt_claims_free(&c);
    verify_ok("", &c, NULL);
    ck_assert_ptr_null(c.identity);
    lg_jwt_claims_free(&c);
}
END_TEST

START_TEST(test_status_names)
{
    static const char *const names[] = {
        "ok",          "malformed",     "bad_alg",
        "unknown_kid", "key_mismatch",  "bad_signature",
        "expired",     "not_yet_valid", "issued_in_future",
        "bad_issuer",  "bad_audience",  "bad_token_use",
    };
    for (int i = 0; i <= LG_JWT_BAD_TOKEN_USE; i++)
        ck_assert_str_eq(lg_jwt_status_name((enum lg_jwt_status)i), names[i]);
    ck_assert_str_eq(lg_jwt_status_name((enum lg_jwt_status)99), "unknown");
    lg_jwt_claims_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------------- */

/* Add a key to the standard set (which then owns pkey and copies of kid
 * and alg); false when pkey is NULL. */
static bool add_standard_key(const char *kid, const char *alg, EVP_PKEY *pkey)
{
    if (pkey == NULL)
        return false;
    struct lg_jwks_key *k = &standard_set.keys[standard_set.nkeys++];
    k->kid = kid ? strdup(kid) : NULL;
    k->alg = alg ? strdup(alg) : NULL;
    k->pkey = pkey;
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        k->kty = LG_JWKS_RSA;
    } else {
        char group[64];
        k->kty = LG_JWKS_EC;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) == 1)
            k->curve_nid = OBJ_sn2nid(group);
    }
    return true;
}

/* The set every test uses unless it builds its own: the PEM keys of
 * regen.py, a key without kid, and the public half of the in-process
 * signing key. Runs in main(), before the runner forks. */
static bool build_standard_set(void)
{
    signing_key = EVP_RSA_gen(2048);
    if (signing_key == NULL)
        return false;
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(signing_key, &der);
    const unsigned char *p = der;
    EVP_PKEY *pub = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
    OPENSSL_free(der);

    standard_set.keys = calloc(6, sizeof(*standard_set.keys));
    return standard_set.keys != NULL &&
           add_standard_key(NULL, NULL, read_pem("rsa.pem")) && /* no kid: never matches */
           add_standard_key("rsa-1", NULL, read_pem("rsa.pem")) &&
           add_standard_key("ec-256", NULL, read_pem("ec256.pem")) &&
           add_standard_key("ec-384", NULL, read_pem("ec384.pem")) &&
           add_standard_key("ec-521", NULL, read_pem("ec521.pem")) &&
           add_standard_key("test-rsa", "RS256", pub);
}

static void free_standard_set(void)
{
    for (size_t i = 0; i < standard_set.nkeys; i++) {
        free(standard_set.keys[i].kid);
        free(standard_set.keys[i].alg);
        EVP_PKEY_free(standard_set.keys[i].pkey);
    }
    free(standard_set.keys);
    EVP_PKEY_free(signing_key);
}

int main(void)
{
    if (!build_standard_set()) {
        fprintf(stderr, "test_jwt: cannot load the keys in %s (run regen.py there)\n", DATA_DIR);
        free_standard_set();
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("jwt");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_rfc7515_a2_rs256);
    tcase_add_test(tc, test_rfc7515_a3_es256);
    tcase_add_test(tc, test_verify_signature_bad_inputs);
    tcase_add_loop_test(tc, test_pyjwt_token_verifies, 0, (int)LG_ARRAY_LEN(minted));
    tcase_add_loop_test(tc, test_pyjwt_token_tampered_signature, 0, (int)LG_ARRAY_LEN(minted));
    tcase_add_loop_test(tc, test_pyjwt_token_tampered_payload, 0, (int)LG_ARRAY_LEN(minted));
    tcase_add_test(tc, test_alg_none);
    tcase_add_test(tc, test_hmac_refused);
    tcase_add_test(tc, test_pss_parameters);
    tcase_add_test(tc, test_embedded_jwk_ignored);
    tcase_add_test(tc, test_crit_refused);
    tcase_add_test(tc, test_kid);
    tcase_add_test(tc, test_key_mismatch);
    tcase_add_test(tc, test_rsa_key_too_short);
    tcase_add_test(tc, test_ecdsa_signature_length);
    tcase_add_test(tc, test_parts);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_base64url_strict);
    tcase_add_test(tc, test_too_long);
    tcase_add_test(tc, test_json_shape);
    tcase_add_test(tc, test_duplicate_claims);
    tcase_add_loop_test(tc, test_claims_case, 0, (int)LG_ARRAY_LEN(claims_cases));
    tcase_add_test(tc, test_exp_value);
    tcase_add_test(tc, test_leeway_extremes);
    tcase_add_test(tc, test_no_issuer_in_policy);
    tcase_add_test(tc, test_scopes);
    tcase_add_test(tc, test_claim_rendering);
    tcase_add_test(tc, test_identity);
    tcase_add_test(tc, test_status_names);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    free_standard_set();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
