/* codec.h - base64, base64url, hex, percent-encoding and UTF-8 checks. */
#ifndef LG_CODEC_H
#define LG_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/buf.h"
#include "lambdagate/lambdagate.h"

/* The encoders and decoders below reserve their worst-case output in out
 * before writing (decoding: 3/4 of the input plus 3; percent-decoding: the
 * input's length; uri-encoding: 3 times it), so a bounded out must have
 * room for that much, even when the result would be shorter. */

/* Standard base64 (RFC 4648 section 4) with padding, appended to out. */
int lg_codec_base64_encode(struct lg_buf *out, const void *in, size_t n) LG_WUR;
/* Decode standard base64, appending to out. Strict: padding as required by
 * the length, no whitespace, no characters outside the alphabet, no
 * non-zero bits in the last symbol's unused part. -1 on any violation. */
int lg_codec_base64_decode(struct lg_buf *out, const char *in, size_t n) LG_WUR;
/* Decode base64url without padding (RFC 7515 appendix C), strictly. */
int lg_codec_base64url_decode(struct lg_buf *out, const char *in, size_t n) LG_WUR;
/* The value of one hex digit (either case), or -1. */
int lg_codec_hex_value(unsigned char c);

/* Lowercase hex of n bytes into out, which holds 2n + 1 bytes. */
void lg_codec_hex(char *out, const unsigned char *in, size_t n);
/* v in decimal into out (room for LG_CODEC_INT_MAX bytes: 20 digits, a
 * sign and the NUL), NUL-terminated, without printf (which costs about a
 * thousand instructions a call on the per-request paths). Returns the
 * length. */
#define LG_CODEC_INT_MAX 22
size_t lg_codec_i64(char *out, int64_t v);

/* Percent-decode n bytes once, appending to out. With plus_is_space, '+'
 * becomes ' ' (form encoding). A '%' not followed by two hex digits is an
 * error (-1). Decoded NUL bytes are an error too. */
int lg_codec_pct_decode(struct lg_buf *out, const char *in, size_t n, bool plus_is_space) LG_WUR;
/* Percent-encode as AWS does (RFC 3986): unreserved characters
 * A-Z a-z 0-9 - _ . ~ are kept, every other byte becomes %XX (uppercase).
 * With keep_slash, '/' is kept as well. */
int lg_codec_uri_encode(struct lg_buf *out, const char *in, size_t n, bool keep_slash) LG_WUR;

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF) and holds no NUL byte. */
bool lg_codec_utf8_valid(const char *s, size_t n);

/* Write a random (version 4) UUID in 36-character text form plus NUL into
 * out (37 bytes). Uses a per-thread generator seeded from the OS. */
void lg_codec_uuid4(char out[37]);

#endif
