/* sigv4.h - AWS Signature Version 4, header signing (pure). */
#ifndef LG_SIGV4_H
#define LG_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lambdagate/buf.h"
#include "lambdagate/lambdagate.h"

struct lg_sigv4_header {
    const char *name; /* any case; lowercased when signed */
    const char *value;
};

struct lg_sigv4_input {
    const char *method;
    /* The path exactly as it will be sent on the request line (already
     * percent-encoded once, e.g. "/2015-03-31/functions/arn%3Aaws%3A.../invocations"). */
    const char *path;
    /* The raw query without '?', or NULL. Canonicalized by the signer
     * (decoded, re-encoded, sorted by name then value). */
    const char *query;
    /* The headers to sign, which must include "host". The signer adds
     * x-amz-date and, with a session token, x-amz-security-token to the
     * signed set itself: do not list them. Values are trimmed and inner
     * runs of spaces collapsed; repeated names are joined with ",". */
    const struct lg_sigv4_header *headers;
    size_t nheaders;
    /* Lowercase hex SHA-256 of the payload (64 chars), or NULL to have the
     * signer hash payload/payload_len. */
    const char *payload_sha256;
    const void *payload;
    size_t payload_len;
    const char *region;
    const char *service;
    time_t now;
    /* Every service but S3 encodes each path segment once more in the
     * canonical URI ("%3A" -> "%253A") and removes dot segments. */
    bool s3_style; /* false for Lambda */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL when none */
    /* Identifies the secret for the signing-key cache (e.g. a credentials
     * generation); two different secrets must never share an id. */
    uint64_t secret_id;
};

/* The derived signing key of one day, region, service and secret. Zero
 * initialise; one per thread (not locked). */
struct lg_sigv4_key_cache {
    bool valid;
    char date[9];
    char region[32];
    char service[32];
    uint64_t secret_id;
    unsigned char key[32];
};

struct lg_sigv4_output {
    char amz_date[17];       /* X-Amz-Date value: 20150830T123600Z */
    char payload_sha256[65]; /* hex */
    char signature[65];      /* hex */
    /* Full Authorization header value:
     * "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request,
     *  SignedHeaders=host;x-amz-date, Signature=..." (no line break). */
    char authorization[1024];
};

/* Sign. cache may be NULL. With debug non-NULL, the canonical request and
 * the string to sign are written there (for tests); both are also the
 * intermediate results that the signature is computed from. -1 with err set
 * when an input is invalid (missing host header, output too long, ...). */
struct lg_sigv4_debug {
    struct lg_buf canonical_request;
    struct lg_buf string_to_sign;
};
int lg_sigv4_sign(const struct lg_sigv4_input *in, struct lg_sigv4_key_cache *cache,
                  struct lg_sigv4_output *out, struct lg_sigv4_debug *debug, char *err,
                  size_t errlen) LG_WUR;

/* Lowercase hex SHA-256 of data into out (65 bytes), with the signer's
 * per-thread digest context: for the payload hash of a request. */
/* The raw digest, with this thread's reused digest context (no allocation
 * per call, unlike EVP_Digest). */
int lg_sigv4_sha256(const void *data, size_t n, unsigned char out[32]) LG_WUR;
int lg_sigv4_sha256_hex(const void *data, size_t n, char out[65]) LG_WUR;

/* The canonical URI of a path as the signer builds it (exposed for tests). */
int lg_sigv4_canonical_uri(struct lg_buf *out, const char *path, bool s3_style) LG_WUR;
/* The canonical query string of a raw query (exposed for tests). */
int lg_sigv4_canonical_query(struct lg_buf *out, const char *query) LG_WUR;

#endif
