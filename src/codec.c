/* codec.c - base64, base64url, hex, percent-encoding, UTF-8 checks, UUIDs. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lambdagate/codec.h"

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int lg_codec_base64_encode(struct lg_buf *out, const void *in, size_t n)
{
    const unsigned char *p = in;
    if (n > (SIZE_MAX / 4) * 3 - 3)
        return -1;
    size_t outlen = ((n + 2) / 3) * 4;
    if (lg_buf_reserve(out, outlen) != 0)
        return -1;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *o++ = b64_std[(v >> 18) & 63];
        *o++ = b64_std[(v >> 12) & 63];
        *o++ = b64_std[(v >> 6) & 63];
        *o++ = b64_std[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = b64_std[(v >> 18) & 63];
        *o++ = b64_std[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        *o++ = b64_std[(v >> 18) & 63];
        *o++ = b64_std[(v >> 12) & 63];
        *o++ = b64_std[(v >> 6) & 63];
        *o++ = '=';
    }
    out->len += outlen;
    out->data[out->len] = '\0';
    return 0;
}

/* Value of a base64 symbol in the standard (url = false) or URL-safe
 * alphabet, or -1. */
static int b64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decode n symbols (no padding) strictly: a trailing group of 1 symbol is
 * invalid, and unused low bits of the last symbol must be zero, so that
 * every byte string has exactly one accepted encoding. */
static int b64_decode_symbols(struct lg_buf *out, const char *in, size_t n, bool url)
{
    if (n % 4 == 1)
        return -1;
    size_t start = out->len;
    if (lg_buf_reserve(out, (n / 4) * 3 + 3) != 0)
        return -1;
    unsigned char *o = (unsigned char *)out->data + out->len;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        int a = b64_value((unsigned char)in[i], url), b = b64_value((unsigned char)in[i + 1], url);
        int c = b64_value((unsigned char)in[i + 2], url),
            d = b64_value((unsigned char)in[i + 3], url);
        if ((a | b | c | d) < 0)
            goto bad;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
        *o++ = (unsigned char)(v >> 16);
        *o++ = (unsigned char)(v >> 8);
        *o++ = (unsigned char)v;
    }
    size_t rest = n - i;
    if (rest == 2) {
        int a = b64_value((unsigned char)in[i], url), b = b64_value((unsigned char)in[i + 1], url);
        if ((a | b) < 0 || (b & 0x0f) != 0)
            goto bad;
        *o++ = (unsigned char)((a << 2) | (b >> 4));
    } else if (rest == 3) {
        int a = b64_value((unsigned char)in[i], url), b = b64_value((unsigned char)in[i + 1], url);
        int c = b64_value((unsigned char)in[i + 2], url);
        if ((a | b | c) < 0 || (c & 0x03) != 0)
            goto bad;
        *o++ = (unsigned char)((a << 2) | (b >> 4));
        *o++ = (unsigned char)(((b & 0x0f) << 4) | (c >> 2));
    }
    out->len = (size_t)((char *)o - out->data);
    out->data[out->len] = '\0';
    return 0;
bad:
    out->len = start;
    out->data[start] = '\0';
    return -1;
}

int lg_codec_base64_decode(struct lg_buf *out, const char *in, size_t n)
{
    if (n % 4 != 0)
        return -1;
    size_t pad = 0;
    if (n >= 1 && in[n - 1] == '=')
        pad++;
    if (n >= 2 && in[n - 2] == '=')
        pad++;
    return b64_decode_symbols(out, in, n - pad, false);
}

int lg_codec_base64url_decode(struct lg_buf *out, const char *in, size_t n)
{
    return b64_decode_symbols(out, in, n, true);
}

size_t lg_codec_i64(char *out, int64_t v)
{
    char digits[20];
    size_t nd = 0, len = 0;
    /* The magnitude as unsigned: -INT64_MIN does not fit an int64_t. */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[nd++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        out[len++] = '-';
    while (nd > 0)
        out[len++] = digits[--nd];
    out[len] = '\0';
    return len;
}

void lg_codec_hex(char *out, const unsigned char *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int lg_codec_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int lg_codec_pct_decode(struct lg_buf *out, const char *in, size_t n, bool plus_is_space)
{
    size_t start = out->len;
    if (lg_buf_reserve(out, n) != 0)
        return -1;
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (n - i < 3)
                goto bad;
            int h = lg_codec_hex_value((unsigned char)in[i + 1]),
                l = lg_codec_hex_value((unsigned char)in[i + 2]);
            if (h < 0 || l < 0)
                goto bad;
            c = (unsigned char)((h << 4) | l);
            if (c == 0)
                goto bad;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == 0) {
            goto bad;
        }
        *o++ = (char)c;
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
bad:
    out->len = start;
    out->data[start] = '\0';
    return -1;
}

int lg_codec_uri_encode(struct lg_buf *out, const char *in, size_t n, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    if (n > SIZE_MAX / 3 || lg_buf_reserve(out, n * 3) != 0)
        return -1;
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && keep_slash)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = digits[c >> 4];
            *o++ = digits[c & 15];
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

bool lg_codec_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* xoshiro256** per thread, seeded from the kernel: request ids need to be
 * unique, not secret, and this keeps a syscall off every request. */
static _Thread_local uint64_t rng_state[4];
static _Thread_local bool rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        if (getrandom(rng_state, sizeof(rng_state), 0) != (ssize_t)sizeof(rng_state)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            rng_state[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
            rng_state[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
            rng_state[2] = (uint64_t)(uintptr_t)&rng_state;
            rng_state[3] = 0x2545f4914f6cdd1dull;
        }
        rng_seeded = true;
    }
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void lg_codec_uuid4(char out[37])
{
    unsigned char b[16];
    uint64_t a = rng_next(), c = rng_next();
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char hex[33];
    lg_codec_hex(hex, b, 16);
    /* 8-4-4-4-12, without printf: one per request. */
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
}
