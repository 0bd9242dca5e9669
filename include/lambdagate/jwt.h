/* jwt.h - verification of JSON Web Tokens (compact JWS) against a key set. */
#ifndef LG_JWT_H
#define LG_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/lambdagate.h"

struct lg_jwks;
struct lg_jwks_key;

/* A token longer than this is refused before any decoding. */
#define LG_JWT_MAX_LEN 8192

enum lg_jwt_status {
    LG_JWT_OK = 0,
    LG_JWT_MALFORMED,        /* not three base64url parts, bad base64url, bad JSON, too long */
    LG_JWT_BAD_ALG,          /* alg missing, "none", HMAC, unsupported, or a "crit" header */
    LG_JWT_UNKNOWN_KID,      /* kid missing, or no key in the set has it */
    LG_JWT_KEY_MISMATCH,     /* the key's kty / curve / alg does not fit the token's alg */
    LG_JWT_BAD_SIGNATURE,    /* includes an ECDSA signature of the wrong length */
    LG_JWT_EXPIRED,          /* exp missing, or exp + leeway <= now */
    LG_JWT_NOT_YET_VALID,    /* nbf - leeway > now */
    LG_JWT_ISSUED_IN_FUTURE, /* iat - leeway > now */
    LG_JWT_BAD_ISSUER,       /* iss missing or not equal to the issuer */
    LG_JWT_BAD_AUDIENCE,  /* aud (string or array) has none of the audiences; without aud, client_id
                             has none */
    LG_JWT_BAD_TOKEN_USE, /* token_use required and different */
};

/* What a token must satisfy. All borrowed. */
struct lg_jwt_policy {
    const char *issuer;
    const char *const *audience;
    size_t naudience;
    int64_t leeway_s;
    const char *token_use;      /* NULL = not checked; else "id" or "access" */
    const char *identity_claim; /* e.g. "sub" */
    int64_t now;                /* seconds since the epoch */
};

/* One claim as API Gateway's HTTP API renders it for
 * requestContext.authorizer.jwt.claims: strings as they are, numbers as
 * their JSON text, booleans "true"/"false", arrays of scalars as
 * "[a b c]", objects as their compact JSON text, null as "". */
struct lg_jwt_claim {
    char *name;
    char *value;
};

/* A verified token. Everything owned; free with lg_jwt_claims_free(). */
struct lg_jwt_claims {
    struct lg_jwt_claim *claims; /* every top-level claim, in token order */
    size_t nclaims;
    /* The token's scopes: "scope" split on spaces, else "scp" (an array of
     * strings, or a space-separated string). has_scopes false (and nscopes
     * 0) when the token has neither. */
    bool has_scopes;
    char **scopes;
    size_t nscopes;
    int64_t exp;    /* the exp claim */
    char *identity; /* rendered value of policy->identity_claim, NULL when absent or
                     * rendered empty (null, ""), so that callers fall back */
};

/* Verify token[0..len) (no "Bearer " prefix) with keys and policy. The
 * header must name an alg among RS256/384/512, PS256/384/512, ES256/384/512
 * and a kid found in keys whose kty (and curve) fits the alg and whose alg,
 * when set, equals it. Signatures are checked with EVP_DigestVerify*;
 * ECDSA signatures arrive as raw R||S of the curve's exact size and are
 * converted to DER. Duplicate member names in the header or the claims are
 * malformed. On LG_JWT_OK *out holds the claims; otherwise *out is empty
 * (still safe to free) and err says why, without any of the token's text
 * beyond the kid (which is sanitised). */
enum lg_jwt_status lg_jwt_verify(const char *token, size_t len, const struct lg_jwks *keys,
                                 const struct lg_jwt_policy *policy, struct lg_jwt_claims *out,
                                 char *err, size_t errlen);
/* The signature step of lg_jwt_verify() alone: does sig[0..siglen) (the
 * decoded third part) sign input[0..len) (the token's "header.payload" text)
 * under alg (e.g. "RS256") with key? Returns LG_JWT_OK, LG_JWT_BAD_ALG (alg
 * not one of the nine above), LG_JWT_KEY_MISMATCH (key does not fit alg) or
 * LG_JWT_BAD_SIGNATURE. All borrowed. For callers that hold the key already
 * and for known-answer tests: the RFC 7515 examples carry no kid. */
enum lg_jwt_status lg_jwt_verify_signature(const char *alg, const struct lg_jwks_key *key,
                                           const void *input, size_t len, const unsigned char *sig,
                                           size_t siglen);
void lg_jwt_claims_free(struct lg_jwt_claims *c);
/* A short fixed name for a status ("expired", "bad_signature", ...), for logs. */
const char *lg_jwt_status_name(enum lg_jwt_status s);
/* True when the token holds at least one of scopes (or when nscopes is 0). */
bool lg_jwt_has_scope(const struct lg_jwt_claims *c, char *const *scopes, size_t nscopes);

#endif
