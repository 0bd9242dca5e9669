/* sigv4.c - AWS Signature Version 4 header signing, canonicalised as botocore's SigV4Auth does. */
#include "config.h"

#include <pthread.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "lambdagate/codec.h"
#include "lambdagate/sigv4.h"

/* Bounds on every input. They are generous for Invoke calls (a function ARN
 * with qualifier is under 200 bytes, an STS session token a few KB at most) and
 * keep a hostile or buggy caller from making the signer allocate without
 * limit. */
#define SIGV4_METHOD_MAX       16
#define SIGV4_PATH_MAX         8192
#define SIGV4_QUERY_MAX        8192
#define SIGV4_QUERY_PARAMS_MAX 256
#define SIGV4_HEADERS_MAX      64
#define SIGV4_HEADER_NAME_MAX  128
#define SIGV4_HEADER_VALUE_MAX 8192
#define SIGV4_KEY_ID_MAX       128
#define SIGV4_SECRET_MAX       128
#define SIGV4_TOKEN_MAX        8192
#define SIGV4_CANONICAL_MAX    65536
/* Region and service must fit the cache's fields (and so every key cache
 * entry can describe every accepted input). */
#define SIGV4_SCOPE_PART_MAX (sizeof(((struct lg_sigv4_key_cache *)0)->region) - 1)
_Static_assert(sizeof(((struct lg_sigv4_key_cache *)0)->region) ==
                   sizeof(((struct lg_sigv4_key_cache *)0)->service),
               "region and service cache fields share one bound");

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_LEN      32

/* One header as it enters the canonical form: its lowercased name, the
 * caller's value and its position, which keeps repeated names in the
 * caller's order after sorting (qsort is not stable). */
struct sigv4_header {
    char name[SIGV4_HEADER_NAME_MAX + 1];
    const char *value;
    size_t order;
};

/* One query parameter after re-encoding; name and value point into the
 * scratch buffer that holds the encoded text. */
struct sigv4_param {
    size_t name_off, name_len;
    size_t value_off, value_len;
    const char *name;
    const char *value;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) LG_PRINTF(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Shrink b back to len bytes (len <= b->len), keeping it NUL-terminated. */
static void buf_truncate(struct lg_buf *b, size_t len)
{
    if (b->data == NULL || len > b->len)
        return;
    b->len = len;
    b->data[len] = '\0';
}

/* RFC 9110 token character (header names, methods). */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_lower_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Region and service go unescaped into the credential scope and the
 * Authorization header, so only characters that cannot break either. */
static bool valid_scope_part(const char *s)
{
    size_t n = strnlen(s, SIGV4_SCOPE_PART_MAX + 1);
    if (n == 0 || n > SIGV4_SCOPE_PART_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* Per-thread scratch for the signer: a digest context, and buffers for the
 * canonical request and the other texts that keep their memory from one
 * signature to the next, so that signing a request allocates little once
 * warm. They are freed when the thread exits.
 *
 * SHA-256 is fetched from the provider once: OpenSSL 3's one-shot
 * EVP_Digest(EVP_sha256()) and HMAC() look the algorithm up (under a lock)
 * on every call, which cost more than the hashing of a request's few
 * hundred bytes. (EVP_DigestInit_ex2 still allocates a provider context on
 * each init in OpenSSL 3.0, reused context or not; the low-level SHA256_*
 * functions that would not are deprecated, and this project builds with
 * OPENSSL_NO_DEPRECATED.) */
struct sigv4_scratch {
    EVP_MD_CTX *md;
    struct lg_buf cr, sts, signed_headers, auth; /* lg_sigv4_sign */
    struct lg_buf enc, tmp;                      /* lg_sigv4_canonical_query */
    struct sigv4_header headers[SIGV4_HEADERS_MAX + 2];
};

static EVP_MD *sha256_md;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
static bool scratch_key_ok;

static void scratch_free(void *arg)
{
    struct sigv4_scratch *x = arg;
    EVP_MD_CTX_free(x->md);
    lg_buf_free(&x->cr);
    lg_buf_free(&x->sts);
    lg_buf_free(&x->signed_headers);
    lg_buf_free(&x->auth);
    lg_buf_free(&x->enc);
    lg_buf_free(&x->tmp);
    free(x);
}

static void scratch_setup(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    scratch_key_ok = sha256_md != NULL && pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* The calling thread's scratch, or NULL when out of memory. */
static struct sigv4_scratch *scratch_get(void)
{
    pthread_once(&scratch_once, scratch_setup);
    if (!scratch_key_ok)
        return NULL;
    struct sigv4_scratch *x = pthread_getspecific(scratch_key);
    if (x != NULL)
        return x;
    x = malloc(sizeof(*x));
    if (x == NULL)
        return NULL;
    if ((x->md = EVP_MD_CTX_new()) == NULL) {
        free(x);
        return NULL;
    }
    lg_buf_init(&x->cr, SIGV4_CANONICAL_MAX);
    lg_buf_init(&x->sts, 512);
    lg_buf_init(&x->signed_headers, sizeof(((struct lg_sigv4_output *)0)->authorization) - 1);
    lg_buf_init(&x->auth, sizeof(((struct lg_sigv4_output *)0)->authorization) - 1);
    lg_buf_init(&x->enc, SIGV4_QUERY_MAX * 3);
    lg_buf_init(&x->tmp, SIGV4_QUERY_MAX);
    if (pthread_setspecific(scratch_key, x) != 0) {
        scratch_free(x);
        return NULL;
    }
    return x;
}

/* SHA-256 of a followed by b (b may be NULL). */
static int sha256_2(const void *a, size_t na, const void *b, size_t nb,
                    unsigned char out[SHA256_LEN])
{
    struct sigv4_scratch *x = scratch_get();
    unsigned int len = 0;
    if (x == NULL || EVP_DigestInit_ex2(x->md, sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(x->md, a, na) != 1 || (b != NULL && EVP_DigestUpdate(x->md, b, nb) != 1) ||
        EVP_DigestFinal_ex(x->md, out, &len) != 1 || len != SHA256_LEN) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static int sha256(const void *data, size_t n, unsigned char out[SHA256_LEN])
{
    return sha256_2(data, n, NULL, 0, out);
}

int lg_sigv4_sha256(const void *data, size_t n, unsigned char out[32])
{
    return sha256(data, n, out);
}

int lg_sigv4_sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[SHA256_LEN];
    if (sha256(data, n, md) != 0)
        return -1;
    lg_codec_hex(out, md, sizeof(md));
    return 0;
}

/* HMAC-SHA256 (RFC 2104) over the thread's digest context. */
static int hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                       unsigned char out[SHA256_LEN])
{
    enum {
        BLOCK = 64
    };
    unsigned char k[BLOCK], pad[BLOCK], inner[SHA256_LEN];
    int rc = -1;
    memset(k, 0, sizeof(k));
    if (keylen > BLOCK) {
        if (sha256(key, keylen, k) != 0)
            goto done;
    } else {
        memcpy(k, key, keylen);
    }
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    if (sha256_2(pad, BLOCK, msg, n, inner) != 0)
        goto done;
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    if (sha256_2(pad, BLOCK, inner, sizeof(inner), out) != 0)
        goto done;
    rc = 0;
done:
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return rc;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"). Every intermediate key is wiped before returning; out is
 * wiped too on failure. */
static int derive_signing_key(unsigned char out[SHA256_LEN], const char *secret, const char *date,
                              const char *region, const char *service)
{
    unsigned char ksecret[4 + SIGV4_SECRET_MAX];
    unsigned char kdate[SHA256_LEN], kregion[SHA256_LEN], kservice[SHA256_LEN];
    size_t secret_len = strlen(secret); /* bounded by the caller */
    int rc = -1;

    memcpy(ksecret, "AWS4", 4);
    memcpy(ksecret + 4, secret, secret_len);
    if (hmac_sha256(ksecret, 4 + secret_len, date, strlen(date), kdate) != 0 ||
        hmac_sha256(kdate, sizeof(kdate), region, strlen(region), kregion) != 0 ||
        hmac_sha256(kregion, sizeof(kregion), service, strlen(service), kservice) != 0 ||
        hmac_sha256(kservice, sizeof(kservice), "aws4_request", 12, out) != 0)
        goto done;
    rc = 0;
done:
    OPENSSL_cleanse(ksecret, sizeof(ksecret));
    OPENSSL_cleanse(kdate, sizeof(kdate));
    OPENSSL_cleanse(kregion, sizeof(kregion));
    OPENSSL_cleanse(kservice, sizeof(kservice));
    if (rc != 0)
        OPENSSL_cleanse(out, SHA256_LEN);
    return rc;
}

/* Appends the canonical URI of path to out; on failure out is unchanged.
 * Non-S3: botocore's remove_dot_segments (which also drops empty segments,
 * so "//a//" becomes "/a/"), then every segment percent-encoded once more,
 * equal to Python's quote(path, safe='/~'). The path is taken as the bytes
 * of the request line: "%2E%2E" is not a dot segment, as for botocore. */
int lg_sigv4_canonical_uri(struct lg_buf *out, const char *path, bool s3_style)
{
    if (path == NULL || path[0] == '\0')
        path = "/";
    size_t n = strnlen(path, SIGV4_PATH_MAX + 1);
    /* '?' and '#' cannot be part of a request-line path: a caller passing
     * them would sign something other than what the server parses. */
    if (n > SIGV4_PATH_MAX || path[0] != '/' || memchr(path, '?', n) != NULL ||
        memchr(path, '#', n) != NULL)
        return -1;
    if (s3_style)
        return lg_buf_append(out, path, n);

    size_t start = out->len;
    const char *p = path, *end = path + n;
    while (p < end) {
        const char *seg = p;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
        p = slash ? slash + 1 : end;
        if (len == 0 || (len == 1 && seg[0] == '.'))
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            /* Drop the last kept segment. Encoded segments never contain
             * '/', so the last '/' after start is where it begins. */
            size_t i = out->len;
            while (i > start && out->data[i - 1] != '/')
                i--;
            if (i > start)
                buf_truncate(out, i - 1);
            continue;
        }
        if (lg_buf_putc(out, '/') != 0 || lg_codec_uri_encode(out, seg, len, false) != 0)
            goto fail;
    }
    /* A trailing slash survives only behind a kept segment. */
    if ((out->len == start || path[n - 1] == '/') && lg_buf_putc(out, '/') != 0)
        goto fail;
    return 0;
fail:
    buf_truncate(out, start);
    return -1;
}

static int compare_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Encoded name first, then encoded value: sorting "name=value" strings
 * would put "Param-3" before "Param" ('-' < '='). */
static int compare_params(const void *a, const void *b)
{
    const struct sigv4_param *x = a, *y = b;
    int c = compare_bytes(x->name, x->name_len, y->name, y->name_len);
    return c != 0 ? c : compare_bytes(x->value, x->value_len, y->value, y->value_len);
}

/* Decode n bytes once and encode them the AWS way into enc. */
static int reencode(struct lg_buf *enc, struct lg_buf *tmp, const char *s, size_t n)
{
    lg_buf_reset(tmp);
    if (lg_codec_pct_decode(tmp, s, n, false) != 0)
        return -1;
    return lg_codec_uri_encode(enc, lg_buf_cstr(tmp), tmp->len, false);
}

/* Appends the canonical query string to out; on failure out is unchanged.
 * Each name and value is decoded ('+' stays a plus, as AWS reads it) and
 * re-encoded, so a query sent in canonical form ("Qualifier=%24LATEST")
 * comes out exactly as botocore signs it. A parameter without '=' has an
 * empty value ("a" -> "a="). Empty parameters ("a=1&&b=2", a trailing '&')
 * are refused: botocore signs them as "=", other signers drop them, so no
 * answer would be right for every verifier. NULL or "" gives "". */
int lg_sigv4_canonical_query(struct lg_buf *out, const char *query)
{
    if (query == NULL || query[0] == '\0')
        return 0;
    size_t n = strnlen(query, SIGV4_QUERY_MAX + 1);
    if (n > SIGV4_QUERY_MAX)
        return -1;
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += query[i] == '&';
    if (count > SIGV4_QUERY_PARAMS_MAX)
        return -1;

    size_t start = out->len;
    struct sigv4_scratch *x = scratch_get();
    if (x == NULL)
        return -1;
    struct lg_buf *enc = &x->enc, *tmp = &x->tmp;
    lg_buf_reset(enc);
    /* A route's query is one or two parameters: those stay on the stack. */
    struct sigv4_param few[8];
    struct sigv4_param *params = count <= LG_ARRAY_LEN(few) ? few : calloc(count, sizeof(*params));
    if (params == NULL)
        goto fail;

    const char *p = query, *end = query + n;
    for (size_t k = 0; k < count; k++) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        size_t len = amp ? (size_t)(amp - p) : (size_t)(end - p);
        if (len == 0)
            goto fail;
        const char *eq = memchr(p, '=', len);
        size_t name_len = eq ? (size_t)(eq - p) : len;
        params[k].name_off = enc->len;
        if (reencode(enc, tmp, p, name_len) != 0)
            goto fail;
        params[k].name_len = enc->len - params[k].name_off;
        params[k].value_off = enc->len;
        if (eq != NULL && reencode(enc, tmp, eq + 1, len - name_len - 1) != 0)
            goto fail;
        params[k].value_len = enc->len - params[k].value_off;
        p = amp ? amp + 1 : end;
    }
    /* enc no longer moves: turn offsets into pointers for the comparator. */
    const char *base = lg_buf_cstr(enc);
    for (size_t k = 0; k < count; k++) {
        params[k].name = base + params[k].name_off;
        params[k].value = base + params[k].value_off;
    }
    if (count > 1)
        qsort(params, count, sizeof(*params), compare_params);
    for (size_t k = 0; k < count; k++) {
        if ((k > 0 && lg_buf_putc(out, '&') != 0) ||
            lg_buf_append(out, params[k].name, params[k].name_len) != 0 ||
            lg_buf_putc(out, '=') != 0 ||
            lg_buf_append(out, params[k].value, params[k].value_len) != 0)
            goto fail;
    }
    if (params != few)
        free(params);
    return 0;
fail:
    if (params != few)
        free(params);
    buf_truncate(out, start);
    return -1;
}

static int compare_headers(const void *a, const void *b)
{
    const struct sigv4_header *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Appends a value trimmed and with inner runs of spaces and tabs collapsed
 * to one space (botocore: ' '.join(value.split())). */
static int put_trimmed(struct lg_buf *b, const char *v)
{
    bool pending_space = false, any = false;
    for (const char *s = v; *s != '\0'; s++) {
        if (*s == ' ' || *s == '\t') {
            pending_space = any;
            continue;
        }
        if ((pending_space && lg_buf_putc(b, ' ') != 0) || lg_buf_putc(b, *s) != 0)
            return -1;
        pending_space = false;
        any = true;
    }
    return 0;
}

/* Check the caller's headers and gather them, plus x-amz-date and the
 * session token, lowercased and sorted into h (room for SIGV4_HEADERS_MAX +
 * 2). Field values may not hold control characters other than tab:
 * they cannot be sent (RFC 9110), and signers disagree on how to trim them. */
static int collect_headers(const struct lg_sigv4_input *in, const char *amz_date, const char *token,
                           struct sigv4_header *h, size_t *count, char *err, size_t errlen)
{
    *count = 0;
    if (in->nheaders > SIGV4_HEADERS_MAX) {
        set_err(err, errlen, "sigv4: more than %d headers to sign", SIGV4_HEADERS_MAX);
        return -1;
    }
    if (in->nheaders > 0 && in->headers == NULL) {
        set_err(err, errlen, "sigv4: headers missing");
        return -1;
    }
    size_t n = 0, hosts = 0;
    for (size_t i = 0; i < in->nheaders; i++) {
        const char *name = in->headers[i].name, *value = in->headers[i].value;
        if (name == NULL || value == NULL) {
            set_err(err, errlen, "sigv4: header %zu has no name or value", i);
            return -1;
        }
        size_t len = strnlen(name, SIGV4_HEADER_NAME_MAX + 1);
        if (len == 0 || len > SIGV4_HEADER_NAME_MAX) {
            set_err(err, errlen, "sigv4: header %zu: name empty or longer than %d bytes", i,
                    SIGV4_HEADER_NAME_MAX);
            return -1;
        }
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)name[k];
            if (!is_tchar(c)) {
                set_err(err, errlen, "sigv4: header %zu: name is not an HTTP token", i);
                return -1;
            }
            h[n].name[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
        }
        h[n].name[len] = '\0';
        if (strcmp(h[n].name, "x-amz-date") == 0 ||
            strcmp(h[n].name, "x-amz-security-token") == 0 ||
            strcmp(h[n].name, "authorization") == 0) {
            set_err(err, errlen, "sigv4: header '%s' is set by the signer, do not pass it",
                    h[n].name);
            return -1;
        }
        size_t vlen = strnlen(value, SIGV4_HEADER_VALUE_MAX + 1);
        if (vlen > SIGV4_HEADER_VALUE_MAX) {
            set_err(err, errlen, "sigv4: header '%s': value longer than %d bytes", h[n].name,
                    SIGV4_HEADER_VALUE_MAX);
            return -1;
        }
        for (size_t k = 0; k < vlen; k++) {
            unsigned char c = (unsigned char)value[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                set_err(err, errlen, "sigv4: header '%s': control character in value", h[n].name);
                return -1;
            }
        }
        hosts += strcmp(h[n].name, "host") == 0;
        h[n].value = value;
        h[n].order = n;
        n++;
    }
    if (hosts != 1) {
        set_err(err, errlen, "sigv4: %s",
                hosts == 0 ? "no host header" : "more than one host header");
        return -1;
    }
    memcpy(h[n].name, "x-amz-date", sizeof("x-amz-date"));
    h[n].value = amz_date;
    h[n].order = n;
    n++;
    if (token != NULL) {
        memcpy(h[n].name, "x-amz-security-token", sizeof("x-amz-security-token"));
        h[n].value = token;
        h[n].order = n;
        n++;
    }
    /* Insertion sort: a handful of headers, and stable, though order
     * already breaks ties. */
    for (size_t i = 1; i < n; i++) {
        struct sigv4_header v = h[i];
        size_t j = i;
        while (j > 0 && compare_headers(&h[j - 1], &v) > 0) {
            h[j] = h[j - 1];
            j--;
        }
        h[j] = v;
    }
    *count = n;
    return 0;
}

/* The access key id, secret, token, region and service. Messages name the
 * field, never its contents. */
static int check_credentials(const struct lg_sigv4_input *in, char *err, size_t errlen)
{
    if (in->access_key_id == NULL || in->secret_access_key == NULL) {
        set_err(err, errlen, "sigv4: credentials missing");
        return -1;
    }
    size_t n = strnlen(in->access_key_id, SIGV4_KEY_ID_MAX + 1);
    if (n == 0 || n > SIGV4_KEY_ID_MAX) {
        set_err(err, errlen, "sigv4: access key id empty or longer than %d bytes",
                SIGV4_KEY_ID_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in->access_key_id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            set_err(err, errlen, "sigv4: access key id is not alphanumeric");
            return -1;
        }
    }
    n = strnlen(in->secret_access_key, SIGV4_SECRET_MAX + 1);
    if (n == 0 || n > SIGV4_SECRET_MAX) {
        set_err(err, errlen, "sigv4: secret access key empty or longer than %d bytes",
                SIGV4_SECRET_MAX);
        return -1;
    }
    if (in->session_token != NULL) {
        n = strnlen(in->session_token, SIGV4_TOKEN_MAX + 1);
        if (n > SIGV4_TOKEN_MAX) {
            set_err(err, errlen, "sigv4: session token longer than %d bytes", SIGV4_TOKEN_MAX);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)in->session_token[i];
            if (c <= 0x20 || c >= 0x7f) {
                set_err(err, errlen,
                        "sigv4: session token holds a character that is not "
                        "visible ASCII");
                return -1;
            }
        }
    }
    if (in->region == NULL || !valid_scope_part(in->region)) {
        set_err(err, errlen, "sigv4: region missing, longer than %zu bytes or not [A-Za-z0-9._-]",
                SIGV4_SCOPE_PART_MAX);
        return -1;
    }
    if (in->service == NULL || !valid_scope_part(in->service)) {
        set_err(err, errlen, "sigv4: service missing, longer than %zu bytes or not [A-Za-z0-9._-]",
                SIGV4_SCOPE_PART_MAX);
        return -1;
    }
    return 0;
}

/* X-Amz-Date (YYYYMMDDTHHMMSSZ, UTC) of now into amz_date[17]. */
static int format_amz_date(char amz_date[17], time_t now)
{
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999)
        return -1;
    /* Digits by hand: this runs for every request. */
    unsigned v[6] = {(unsigned)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday,
                     (unsigned)tm.tm_hour,        (unsigned)tm.tm_min,     (unsigned)tm.tm_sec};
    char *p = amz_date;
    for (int d = 1000; d > 0; d /= 10)
        *p++ = (char)('0' + v[0] / (unsigned)d % 10);
    for (int i = 1; i < 6; i++) {
        if (i == 3)
            *p++ = 'T';
        *p++ = (char)('0' + v[i] / 10 % 10);
        *p++ = (char)('0' + v[i] % 10);
    }
    *p++ = 'Z';
    *p = '\0';
    return 0;
}

/* The payload hash: the caller's (checked to be 64 lowercase hex digits,
 * as it goes into the canonical request verbatim) or computed here. */
static int payload_hash(const struct lg_sigv4_input *in, char out[65], char *err, size_t errlen)
{
    if (in->payload_sha256 != NULL) {
        size_t n = strnlen(in->payload_sha256, 65);
        bool ok = n == 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = is_lower_hex((unsigned char)in->payload_sha256[i]);
        if (!ok) {
            set_err(err, errlen, "sigv4: payload_sha256 is not 64 lowercase hex digits");
            return -1;
        }
        memcpy(out, in->payload_sha256, 65);
        return 0;
    }
    if (in->payload == NULL && in->payload_len > 0) {
        set_err(err, errlen, "sigv4: payload_len without payload");
        return -1;
    }
    unsigned char md[SHA256_LEN];
    if (sha256(in->payload ? in->payload : "", in->payload_len, md) != 0) {
        set_err(err, errlen, "sigv4: SHA-256 failed");
        return -1;
    }
    lg_codec_hex(out, md, sizeof(md));
    return 0;
}

/* The signing key for date, from the cache when it matches, else derived
 * (and stored in the cache when there is one). key_out receives a copy:
 * the caller wipes it. */
static int signing_key(const struct lg_sigv4_input *in, const char *date,
                       struct lg_sigv4_key_cache *cache, unsigned char key_out[SHA256_LEN])
{
    if (cache != NULL && cache->valid && cache->secret_id == in->secret_id &&
        strcmp(cache->date, date) == 0 && strcmp(cache->region, in->region) == 0 &&
        strcmp(cache->service, in->service) == 0) {
        memcpy(key_out, cache->key, SHA256_LEN);
        return 0;
    }
    if (cache != NULL) {
        /* Never leave a half-updated entry that a later call could match. */
        cache->valid = false;
        OPENSSL_cleanse(cache->key, sizeof(cache->key));
    }
    if (derive_signing_key(key_out, in->secret_access_key, date, in->region, in->service) != 0)
        return -1;
    if (cache != NULL) {
        memcpy(cache->date, date, sizeof(cache->date));
        snprintf(cache->region, sizeof(cache->region), "%s", in->region);
        snprintf(cache->service, sizeof(cache->service), "%s", in->service);
        cache->secret_id = in->secret_id;
        memcpy(cache->key, key_out, SHA256_LEN);
        cache->valid = true;
    }
    return 0;
}

/* The method as botocore puts it in the canonical request: uppercased. */
static int put_method(struct lg_buf *cr, const char *method)
{
    if (method == NULL)
        return -1;
    size_t n = strnlen(method, SIGV4_METHOD_MAX + 1);
    if (n == 0 || n > SIGV4_METHOD_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)method[i];
        if (!is_tchar(c))
            return -1;
        if (lg_buf_putc(cr, (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : (char)c) != 0)
            return -1;
    }
    return 0;
}

/* Canonical headers (each "name:value\n", repeated names joined with ',')
 * into cr and the signed header list ("a;b;c") into signed_headers. */
static int put_headers(struct lg_buf *cr, struct lg_buf *signed_headers,
                       const struct sigv4_header *h, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        bool first = i == 0 || strcmp(h[i - 1].name, h[i].name) != 0;
        bool last = i + 1 == n || strcmp(h[i + 1].name, h[i].name) != 0;
        if (first) {
            if (lg_buf_puts(cr, h[i].name) != 0 || lg_buf_putc(cr, ':') != 0)
                goto too_long;
            if ((i > 0 && lg_buf_putc(signed_headers, ';') != 0) ||
                lg_buf_puts(signed_headers, h[i].name) != 0) {
                set_err(err, errlen,
                        "sigv4: signed header list does not fit the "
                        "Authorization header");
                return -1;
            }
        } else if (lg_buf_putc(cr, ',') != 0) {
            goto too_long;
        }
        if (put_trimmed(cr, h[i].value) != 0 || (last && lg_buf_putc(cr, '\n') != 0))
            goto too_long;
    }
    return 0;
too_long:
    set_err(err, errlen, "sigv4: canonical request longer than %d bytes", SIGV4_CANONICAL_MAX);
    return -1;
}

/* Copy text into a debug buffer, replacing what it held. */
static int put_debug(struct lg_buf *dst, const struct lg_buf *src)
{
    lg_buf_reset(dst);
    return lg_buf_append(dst, lg_buf_cstr(src), src->len);
}

int lg_sigv4_sign(const struct lg_sigv4_input *in, struct lg_sigv4_key_cache *cache,
                  struct lg_sigv4_output *out, struct lg_sigv4_debug *debug, char *err,
                  size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (in == NULL || out == NULL) {
        set_err(err, errlen, "sigv4: no input or output");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (check_credentials(in, err, errlen) != 0)
        return -1;
    char amz_date[17];
    if (format_amz_date(amz_date, in->now) != 0) {
        set_err(err, errlen, "sigv4: time outside years 1-9999");
        return -1;
    }
    char date[9];
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    char payload_sha[65];
    if (payload_hash(in, payload_sha, err, errlen) != 0)
        return -1;
    const char *token =
        (in->session_token != NULL && in->session_token[0] != '\0') ? in->session_token : NULL;

    int rc = -1;
    struct sigv4_scratch *x = scratch_get();
    if (x == NULL) {
        set_err(err, errlen, "sigv4: out of memory");
        return -1;
    }
    struct sigv4_header *headers = x->headers;
    size_t nheaders = 0;
    struct lg_buf *cr = &x->cr, *sts = &x->sts, *signed_headers = &x->signed_headers;
    lg_buf_reset(cr);
    lg_buf_reset(sts);
    lg_buf_reset(signed_headers);
    unsigned char key[SHA256_LEN], md[SHA256_LEN];

    if (put_method(cr, in->method) != 0 || lg_buf_putc(cr, '\n') != 0) {
        set_err(err, errlen, "sigv4: method empty, longer than %d bytes or not a token",
                SIGV4_METHOD_MAX);
        goto done;
    }
    if (lg_sigv4_canonical_uri(cr, in->path, in->s3_style) != 0 || lg_buf_putc(cr, '\n') != 0) {
        set_err(err, errlen,
                "sigv4: path longer than %d bytes, not starting with '/' or holding '?' or '#'",
                SIGV4_PATH_MAX);
        goto done;
    }
    if (lg_sigv4_canonical_query(cr, in->query) != 0 || lg_buf_putc(cr, '\n') != 0) {
        set_err(err, errlen,
                "sigv4: query longer than %d bytes or %d parameters, badly percent-encoded "
                "or with an empty parameter",
                SIGV4_QUERY_MAX, SIGV4_QUERY_PARAMS_MAX);
        goto done;
    }
    if (collect_headers(in, amz_date, token, headers, &nheaders, err, errlen) != 0 ||
        put_headers(cr, signed_headers, headers, nheaders, err, errlen) != 0)
        goto done;
    if (lg_buf_putc(cr, '\n') != 0 || lg_buf_puts(cr, lg_buf_cstr(signed_headers)) != 0 ||
        lg_buf_putc(cr, '\n') != 0 || lg_buf_puts(cr, payload_sha) != 0) {
        set_err(err, errlen, "sigv4: canonical request longer than %d bytes", SIGV4_CANONICAL_MAX);
        goto done;
    }

    if (sha256(cr->data, cr->len, md) != 0) {
        set_err(err, errlen, "sigv4: SHA-256 failed");
        goto done;
    }
    char cr_hash[65];
    lg_codec_hex(cr_hash, md, sizeof(md));
    if (lg_buf_puts(sts, SIGV4_ALGORITHM "\n") != 0 || lg_buf_append(sts, amz_date, 16) != 0 ||
        lg_buf_putc(sts, '\n') != 0 || lg_buf_append(sts, date, 8) != 0 ||
        lg_buf_putc(sts, '/') != 0 || lg_buf_puts(sts, in->region) != 0 ||
        lg_buf_putc(sts, '/') != 0 || lg_buf_puts(sts, in->service) != 0 ||
        lg_buf_puts(sts, "/aws4_request\n") != 0 || lg_buf_append(sts, cr_hash, 64) != 0) {
        set_err(err, errlen, "sigv4: out of memory");
        goto done;
    }

    if (signing_key(in, date, cache, key) != 0 ||
        hmac_sha256(key, sizeof(key), sts->data, sts->len, md) != 0) {
        set_err(err, errlen, "sigv4: HMAC-SHA256 failed");
        goto done;
    }
    char signature[65];
    lg_codec_hex(signature, md, sizeof(md));

    /* Assembled in a bounded buffer the size of the output (no printf:
     * this runs for every request). */
    struct lg_buf *auth = &x->auth;
    lg_buf_reset(auth);
    bool fits = lg_buf_puts(auth, SIGV4_ALGORITHM " Credential=") == 0 &&
                lg_buf_puts(auth, in->access_key_id) == 0 && lg_buf_putc(auth, '/') == 0 &&
                lg_buf_append(auth, date, 8) == 0 && lg_buf_putc(auth, '/') == 0 &&
                lg_buf_puts(auth, in->region) == 0 && lg_buf_putc(auth, '/') == 0 &&
                lg_buf_puts(auth, in->service) == 0 &&
                lg_buf_puts(auth, "/aws4_request, SignedHeaders=") == 0 &&
                lg_buf_append(auth, signed_headers->data ? signed_headers->data : "",
                              signed_headers->len) == 0 &&
                lg_buf_puts(auth, ", Signature=") == 0 && lg_buf_append(auth, signature, 64) == 0;
    if (fits)
        memcpy(out->authorization, auth->data, auth->len + 1);
    if (!fits) {
        set_err(err, errlen, "sigv4: Authorization header longer than %zu bytes",
                sizeof(out->authorization) - 1);
        goto done;
    }
    if (debug != NULL && (put_debug(&debug->canonical_request, cr) != 0 ||
                          put_debug(&debug->string_to_sign, sts) != 0)) {
        set_err(err, errlen, "sigv4: debug buffer too small");
        goto done;
    }
    memcpy(out->amz_date, amz_date, sizeof(out->amz_date));
    memcpy(out->payload_sha256, payload_sha, sizeof(out->payload_sha256));
    memcpy(out->signature, signature, sizeof(out->signature));
    rc = 0;
done:
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}
