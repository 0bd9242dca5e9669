/* test_codec.c - lg_buf growth and bounds; base64, hex, percent, UTF-8 and UUID codecs. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"

/* The buffer must hold exactly want[0..n) followed by a NUL. */
static void expect_buf(const struct lg_buf *b, const void *want, size_t n)
{
    ck_assert_uint_eq(b->len, n);
    ck_assert_ptr_nonnull(b->data);
    ck_assert_msg(memcmp(b->data, want, n) == 0, "contents differ: got \"%s\"", b->data);
    ck_assert_int_eq(b->data[n], '\0');
}

/* ---------- lg_buf ---------- */

START_TEST(test_buf_init_empty)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    ck_assert_uint_eq(b.max, SIZE_MAX / 2);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    lg_buf_init(&b, 17);
    ck_assert_uint_eq(b.max, 17);
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_buf_growth_and_nul)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    /* Grow one byte at a time past several reallocations; the text must stay
     * NUL-terminated after every append. */
    char want[5001];
    for (size_t i = 0; i < 5000; i++) {
        char c = (char)('a' + (char)(i % 26));
        want[i] = c;
        /* Checked without ck_assert per byte (a pipe write each in fork mode). */
        if (lg_buf_putc(&b, c) != 0 || b.len != i + 1 || b.cap <= b.len || b.data[b.len] != '\0')
            ck_abort_msg("after %zu bytes: len %zu cap %zu", i + 1, b.len, b.cap);
    }
    want[5000] = '\0';
    ck_assert_str_eq(lg_buf_cstr(&b), want);
    ck_assert_uint_eq(strlen(lg_buf_cstr(&b)), 5000);
    /* One big append of binary data including NULs. */
    unsigned char bin[100000];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)(i * 7);
    ck_assert_int_eq(lg_buf_append(&b, bin, sizeof(bin)), 0);
    ck_assert_uint_eq(b.len, 5000 + sizeof(bin));
    ck_assert_int_eq(memcmp(b.data, want, 5000), 0);
    ck_assert_int_eq(memcmp(b.data + 5000, bin, sizeof(bin)), 0);
    ck_assert_int_eq(b.data[b.len], '\0');
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_buf_append_zero_and_puts)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_append(&b, NULL, 0), 0);
    /* After the first append data is allocated and holds "". */
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_int_eq(b.data[0], '\0');
    ck_assert_int_eq(lg_buf_puts(&b, "hello"), 0);
    ck_assert_int_eq(lg_buf_puts(&b, ""), 0);
    ck_assert_int_eq(lg_buf_putc(&b, ' '), 0);
    ck_assert_int_eq(lg_buf_append(&b, "world!!", 5), 0);
    expect_buf(&b, "hello world", 11);
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_buf_max_refused_unchanged)
{
    struct lg_buf b;
    lg_buf_init(&b, 10);
    ck_assert_int_eq(lg_buf_puts(&b, "0123456"), 0);
    char *before = b.data;
    size_t cap = b.cap;
    /* 7 + 4 > 10: refused, nothing written. */
    ck_assert_int_eq(lg_buf_puts(&b, "abcd"), -1);
    expect_buf(&b, "0123456", 7);
    ck_assert_ptr_eq(b.data, before);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_int_eq(lg_buf_printf(&b, "%s", "abcd"), -1);
    expect_buf(&b, "0123456", 7);
    ck_assert_int_eq(lg_buf_reserve(&b, 4), -1);
    ck_assert_int_eq(lg_buf_reserve(&b, SIZE_MAX), -1);
    ck_assert_int_eq(lg_buf_append(&b, "x", SIZE_MAX), -1);
    expect_buf(&b, "0123456", 7);
    /* Exactly up to max is fine, one more byte is not. */
    ck_assert_int_eq(lg_buf_reserve(&b, 3), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "789"), 0);
    expect_buf(&b, "0123456789", 10);
    ck_assert_int_eq(lg_buf_putc(&b, 'x'), -1);
    ck_assert_int_eq(lg_buf_append(&b, "", 0), 0);
    expect_buf(&b, "0123456789", 10);
    /* A long printf past the bound (takes the > 256 path) is refused too. */
    lg_buf_reset(&b);
    ck_assert_int_eq(lg_buf_printf(&b, "%300d", 1), -1);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    lg_buf_free(&b);

    /* A bound on a never-used buffer: the refused append allocates nothing. */
    lg_buf_init(&b, 3);
    ck_assert_int_eq(lg_buf_puts(&b, "abcd"), -1);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_buf_printf)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_printf(&b, "%s=%d;", "a", 42), 0);
    expect_buf(&b, "a=42;", 5);
    ck_assert_int_eq(lg_buf_printf(&b, "%s", ""), 0);
    expect_buf(&b, "a=42;", 5);
    lg_buf_free(&b);

    /* Around the 256-byte stack buffer: 255, 256, 257 and far beyond. */
    static const size_t sizes[] = {255, 256, 257, 1000, 70000};
    for (size_t k = 0; k < LG_ARRAY_LEN(sizes); k++) {
        size_t n = sizes[k];
        char *s = malloc(n + 1);
        ck_assert_ptr_nonnull(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)('A' + (char)(i % 26));
        s[n] = '\0';
        lg_buf_init(&b, 0);
        ck_assert_int_eq(lg_buf_puts(&b, "<"), 0);
        ck_assert_int_eq(lg_buf_printf(&b, "%s|%zu", s, n), 0);
        ck_assert_int_eq(lg_buf_puts(&b, ">"), 0);
        char tail[32];
        int tl = snprintf(tail, sizeof(tail), "|%zu>", n);
        ck_assert_uint_eq(b.len, 1 + n + (size_t)tl);
        ck_assert_int_eq(b.data[0], '<');
        ck_assert_int_eq(memcmp(b.data + 1, s, n), 0);
        ck_assert_str_eq(b.data + 1 + n, tail);
        ck_assert_uint_eq(strlen(b.data), b.len);
        lg_buf_free(&b);
        free(s);
    }
    /* Padding-generated long output appended to existing text. */
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "x"), 0);
    ck_assert_int_eq(lg_buf_printf(&b, "%400s", "y"), 0);
    ck_assert_uint_eq(b.len, 401);
    ck_assert_int_eq(b.data[1], ' ');
    ck_assert_int_eq(b.data[399], ' ');
    ck_assert_int_eq(b.data[400], 'y');
    ck_assert_int_eq(b.data[401], '\0');
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_buf_steal_reset_free)
{
    struct lg_buf b;
    lg_buf_init(&b, 100);
    size_t len = 99;
    /* Never appended: NULL and 0. */
    ck_assert_ptr_null(lg_buf_steal(&b, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "stolen"), 0);
    char *p = lg_buf_steal(&b, &len);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(p, "stolen");
    free(p);
    /* b is left empty, keeps its bound, and is usable again. */
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    ck_assert_uint_eq(b.max, 100);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    ck_assert_int_eq(lg_buf_puts(&b, "again"), 0);
    expect_buf(&b, "again", 5);
    /* len may be NULL. */
    p = lg_buf_steal(&b, NULL);
    ck_assert_str_eq(p, "again");
    free(p);

    /* Reset keeps the memory and empties the text. */
    ck_assert_int_eq(lg_buf_puts(&b, "0123456789"), 0);
    char *mem = b.data;
    size_t cap = b.cap;
    lg_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_ptr_eq(b.data, mem);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    ck_assert_int_eq(lg_buf_puts(&b, "ab"), 0);
    expect_buf(&b, "ab", 2);
    ck_assert_ptr_eq(b.data, mem);
    /* Reset of a never-used buffer is harmless. */
    struct lg_buf e;
    lg_buf_init(&e, 0);
    lg_buf_reset(&e);
    ck_assert_ptr_null(e.data);
    ck_assert_str_eq(lg_buf_cstr(&e), "");

    /* Free releases and leaves a reusable empty buffer (LSan checks the
     * release); freeing twice is harmless. */
    lg_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    lg_buf_free(&b);
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "reuse"), 0);
    expect_buf(&b, "reuse", 5);
    lg_buf_free(&b);
    lg_buf_free(&e);
}
END_TEST

/* buf.h: steal gives NULL only for a buffer that never held memory; an
 * emptied one gives an allocated "" (callers free either). */
START_TEST(test_buf_steal_after_reset)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    size_t len = 99;
    ck_assert_ptr_null(lg_buf_steal(&b, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "abc"), 0);
    lg_buf_reset(&b);
    len = 99;
    char *p = lg_buf_steal(&b, &len);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p, "");
    free(p);
    ck_assert_ptr_null(b.data);
}
END_TEST

/* lg_codec_i64: every int64_t as printf("%lld") writes it. */
START_TEST(test_codec_i64)
{
    const int64_t values[] = {0,
                              1,
                              -1,
                              9,
                              10,
                              99,
                              100,
                              1234567890,
                              -1234567890,
                              INT64_MAX,
                              INT64_MIN,
                              INT64_MAX - 1,
                              INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char got[LG_CODEC_INT_MAX], want[32];
        memset(got, 'x', sizeof(got));
        size_t n = lg_codec_i64(got, values[i]);
        int m = snprintf(want, sizeof(want), "%lld", (long long)values[i]);
        ck_assert_str_eq(got, want);
        ck_assert_uint_eq(n, (size_t)m);
        ck_assert_uint_lt(n, LG_CODEC_INT_MAX);
    }
}
END_TEST

/* lg_buf_init_local: texts that fit stay in the caller's storage; a longer
 * one moves to the heap with its contents; steal hands out a heap copy; a
 * bounded local buffer still refuses past max. */
START_TEST(test_buf_local_storage)
{
    char store[8];
    struct lg_buf b;
    lg_buf_init_local(&b, store, sizeof(store), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    ck_assert_int_eq(lg_buf_puts(&b, "abcdefg"), 0); /* 7 + NUL: fits */
    ck_assert_ptr_eq(b.data, store);
    ck_assert_str_eq(store, "abcdefg");
    ck_assert_int_eq(lg_buf_putc(&b, 'h'), 0); /* moves */
    ck_assert_ptr_ne(b.data, store);
    ck_assert_str_eq(b.data, "abcdefgh");
    ck_assert_uint_eq(b.len, 8);
    lg_buf_free(&b); /* frees the heap copy (ASan: no leak, no bad free) */

    lg_buf_init_local(&b, store, sizeof(store), 0);
    ck_assert_int_eq(lg_buf_puts(&b, "xyz"), 0);
    size_t len = 0;
    char *p = lg_buf_steal(&b, &len);
    ck_assert_ptr_ne(p, store);
    ck_assert_str_eq(p, "xyz");
    ck_assert_uint_eq(len, 3);
    ck_assert_ptr_null(b.data);
    free(p);
    lg_buf_free(&b); /* nothing left: no free of store */

    lg_buf_init_local(&b, store, sizeof(store), 4);
    ck_assert_int_eq(lg_buf_puts(&b, "abcd"), 0);
    ck_assert_int_eq(lg_buf_putc(&b, 'e'), -1);
    ck_assert_str_eq(b.data, "abcd");
    ck_assert_ptr_eq(b.data, store);
    lg_buf_free(&b);
}
END_TEST

/* codec.h: the coders reserve their worst case (base64 decode: n / 4 * 3 +
 * 3, pct decode: n, uri encode: 3n) before writing, so a bounded buffer
 * must allow that much; with the room they succeed, without it they fail
 * and leave the buffer unchanged. */
START_TEST(test_codec_bounded_out_needs_worst_case)
{
    struct lg_buf b;
    lg_buf_init(&b, 3);
    ck_assert_int_eq(lg_codec_base64_decode(&b, "Zm9v", 4), -1);
    ck_assert_uint_eq(b.len, 0);
    lg_buf_free(&b);
    lg_buf_init(&b, 6);
    ck_assert_int_eq(lg_codec_base64_decode(&b, "Zm9v", 4), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "foo");
    lg_buf_free(&b);
    lg_buf_init(&b, 3);
    ck_assert_int_eq(lg_codec_pct_decode(&b, "%41", 3, false), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "A");
    lg_buf_free(&b);
    lg_buf_init(&b, 8);
    ck_assert_int_eq(lg_codec_uri_encode(&b, "abc", 3, false), -1);
    lg_buf_free(&b);
    lg_buf_init(&b, 9);
    ck_assert_int_eq(lg_codec_uri_encode(&b, "abc", 3, false), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "abc");
    lg_buf_free(&b);
}
END_TEST

/* ---------- base64 ---------- */

static const struct {
    const char *plain;
    const char *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

START_TEST(test_base64_encode_rfc4648)
{
    for (size_t i = 0; i < LG_ARRAY_LEN(rfc4648); i++) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        ck_assert_int_eq(lg_codec_base64_encode(&b, rfc4648[i].plain, strlen(rfc4648[i].plain)), 0);
        ck_assert_str_eq(lg_buf_cstr(&b), rfc4648[i].b64);
        ck_assert_uint_eq(b.len, strlen(rfc4648[i].b64));
        lg_buf_free(&b);
    }
    /* Appends after existing text; binary bytes use both '+' and '/'. */
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "x:"), 0);
    const unsigned char bin[] = {0xfb, 0xff, 0xbf, 0x00, 0x10};
    ck_assert_int_eq(lg_codec_base64_encode(&b, bin, sizeof(bin)), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "x:+/+/ABA=");
    lg_buf_free(&b);
    /* Bounded output buffer: refused and unchanged. */
    lg_buf_init(&b, 7);
    ck_assert_int_eq(lg_codec_base64_encode(&b, "foobar", 6), -1);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "");
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_base64_decode_rfc4648)
{
    for (size_t i = 0; i < LG_ARRAY_LEN(rfc4648); i++) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        const char *in = rfc4648[i].b64;
        ck_assert_msg(lg_codec_base64_decode(&b, in, strlen(in)) == 0, "decode %s", in);
        ck_assert_uint_eq(b.len, strlen(rfc4648[i].plain));
        ck_assert_str_eq(lg_buf_cstr(&b), rfc4648[i].plain);
        lg_buf_free(&b);
    }
}
END_TEST

START_TEST(test_base64_roundtrip_binary)
{
    unsigned char bin[256];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)i;
    for (size_t n = 0; n <= sizeof(bin); n += 1) {
        struct lg_buf enc, dec;
        lg_buf_init(&enc, 0);
        lg_buf_init(&dec, 0);
        ck_assert_int_eq(lg_codec_base64_encode(&enc, bin, n), 0);
        ck_assert_uint_eq(enc.len, (n + 2) / 3 * 4);
        ck_assert_int_eq(lg_codec_base64_decode(&dec, enc.data, enc.len), 0);
        ck_assert_uint_eq(dec.len, n);
        ck_assert_int_eq(memcmp(dec.data, bin, n), 0);
        ck_assert_int_eq(dec.data[n], '\0');
        lg_buf_free(&enc);
        lg_buf_free(&dec);
    }
}
END_TEST

/* Decoding in must fail and leave out holding exactly "keep". */
static void expect_b64_bad(const char *in, bool url)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "keep"), 0);
    int rc = url ? lg_codec_base64url_decode(&b, in, strlen(in))
                 : lg_codec_base64_decode(&b, in, strlen(in));
    ck_assert_msg(rc == -1, "%s decode of \"%s\" accepted", url ? "base64url" : "base64", in);
    expect_buf(&b, "keep", 4);
    lg_buf_free(&b);
}

static void expect_b64_ok(const char *in, bool url, const void *want, size_t n)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "keep"), 0);
    int rc = url ? lg_codec_base64url_decode(&b, in, strlen(in))
                 : lg_codec_base64_decode(&b, in, strlen(in));
    ck_assert_msg(rc == 0, "%s decode of \"%s\" refused", url ? "base64url" : "base64", in);
    ck_assert_uint_eq(b.len, 4 + n);
    ck_assert_int_eq(memcmp(b.data, "keep", 4), 0);
    ck_assert_int_eq(memcmp(b.data + 4, want, n), 0);
    ck_assert_int_eq(b.data[4 + n], '\0');
    lg_buf_free(&b);
}

START_TEST(test_base64_decode_strict)
{
    /* Padding is required by the length. */
    expect_b64_bad("Zg", false);
    expect_b64_bad("Zg=", false);
    expect_b64_bad("Zm8", false);
    expect_b64_bad("Zm9vYg", false);
    /* Too much padding, padding in the middle, padding alone. */
    expect_b64_bad("Zg===", false);
    expect_b64_bad("Zm9v====", false);
    expect_b64_bad("====", false);
    expect_b64_bad("=", false);
    expect_b64_bad("Z===", false);
    expect_b64_bad("Zg==Zm8=", false);
    expect_b64_bad("Zg=a", false);
    expect_b64_bad("Z=g=", false);
    expect_b64_bad("=Zm9", false);
    /* Lengths of 1 mod 4. */
    expect_b64_bad("Z", false);
    expect_b64_bad("Zm9vY", false);
    expect_b64_bad("Zm9vY===", false);
    /* Whitespace anywhere. */
    expect_b64_bad("Zm9v\n", false);
    expect_b64_bad("Zm9v YmFy", false);
    expect_b64_bad(" Zm9vYmF", false);
    expect_b64_bad("Zm9\tv", false);
    expect_b64_bad("Zm9v\r\nYmFy", false);
    /* Characters outside the alphabet, including the url alphabet. */
    expect_b64_bad("Zm9v*mFy", false);
    expect_b64_bad("Zm9v-_==", false);
    expect_b64_bad("ab-d", false);
    expect_b64_bad("ab_d", false);
    expect_b64_bad("Zm9\x80", false);
    expect_b64_bad("Zm.v", false);
    /* Non-zero unused bits in the last symbol: "Zh==" and "Zm9=" decode to the
     * same bytes as "Zg==" and "Zm8=" in a lenient decoder. */
    expect_b64_bad("Zh==", false);
    expect_b64_bad("Zv==", false);
    expect_b64_bad("Zm9=", false);
    expect_b64_bad("Zm+=", false);
    expect_b64_bad("Zm9vYh==", false);
    /* Standard alphabet's own symbols and embedded NUL. */
    expect_b64_ok("+/+/", false, "\xfb\xff\xbf", 3);
    expect_b64_ok("AA==", false, "\0", 1);
    expect_b64_ok("", false, "", 0);
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_codec_base64_decode(&b, "Zm9v\0mFy", 8), -1);
    ck_assert_uint_eq(b.len, 0);
    lg_buf_free(&b);
}
END_TEST

START_TEST(test_base64url_decode)
{
    /* No padding; url alphabet only. */
    expect_b64_ok("Zg", true, "f", 1);
    expect_b64_ok("Zm8", true, "fo", 2);
    expect_b64_ok("Zm9v", true, "foo", 3);
    expect_b64_ok("Zm9vYmE", true, "fooba", 5);
    expect_b64_ok("", true, "", 0);
    expect_b64_ok("-_-_", true, "\xfb\xff\xbf", 3);
    /* A JWT header, as used by the token code. */
    expect_b64_ok("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", true,
                  "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
    expect_b64_bad("Zg==", true);
    expect_b64_bad("Zm8=", true);
    expect_b64_bad("+/+/", true);
    expect_b64_bad("ab+d", true);
    expect_b64_bad("ab/d", true);
    expect_b64_bad("Z", true);
    expect_b64_bad("Zm9vY", true);
    expect_b64_bad("Zh", true);
    expect_b64_bad("Zm9", true);
    expect_b64_bad("Zm 9", true);
    expect_b64_bad("Zm9v\n", true);
    expect_b64_bad("Zm9v.", true);
}
END_TEST

/* ---------- hex ---------- */

START_TEST(test_hex)
{
    char out[64];
    memset(out, 'x', sizeof(out));
    lg_codec_hex(out, (const unsigned char *)"", 0);
    ck_assert_str_eq(out, "");
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff, 0x10, 0x9a};
    memset(out, 'x', sizeof(out));
    lg_codec_hex(out, in, sizeof(in));
    ck_assert_str_eq(out, "00017f80abcdefff109a");
    ck_assert_int_eq(out[21], 'x'); /* wrote exactly 2n + 1 bytes */
}
END_TEST

/* ---------- percent decoding ---------- */

static void expect_pct(const char *in, bool plus, const char *want)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "<"), 0);
    ck_assert_msg(lg_codec_pct_decode(&b, in, strlen(in), plus) == 0, "refused \"%s\"", in);
    ck_assert_str_eq(lg_buf_cstr(&b) + 1, want);
    ck_assert_uint_eq(b.len, 1 + strlen(want));
    lg_buf_free(&b);
}

static void expect_pct_bad(const char *in, size_t n, bool plus)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "keep"), 0);
    ck_assert_msg(lg_codec_pct_decode(&b, in, n, plus) == -1, "accepted \"%s\"", in);
    expect_buf(&b, "keep", 4);
    lg_buf_free(&b);
}

START_TEST(test_pct_decode)
{
    expect_pct("", false, "");
    expect_pct("plain", false, "plain");
    expect_pct("a%20b", false, "a b");
    expect_pct("%2f%2F", false, "//");
    expect_pct("%41%62%7e", false, "Ab~");
    expect_pct("%C3%A9", false, "\xc3\xa9");
    expect_pct("%ff", false, "\xff");
    /* Once only: %25 gives a literal '%' that is not decoded again. */
    expect_pct("%2541", false, "%41");
    expect_pct("%252F", false, "%2F");
    /* '+' only becomes a space when asked; an encoded plus stays a plus. */
    expect_pct("a+b", false, "a+b");
    expect_pct("a+b", true, "a b");
    expect_pct("++%2B", true, "  +");
    expect_pct("%20+", true, "  ");
}
END_TEST

START_TEST(test_pct_decode_malformed)
{
    static const char *const bad[] = {
        "%",  "a%",   "%2",  "ab%4", "%zz", "%g0",   "%0g",
        "%%", "%%41", "% 1", "%+1",  "%-1", "x%00y", "%00",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        expect_pct_bad(bad[i], strlen(bad[i]), false);
        expect_pct_bad(bad[i], strlen(bad[i]), true);
    }
    /* A raw NUL in the input is refused like %00. */
    expect_pct_bad("ab\0cd", 5, false);
    /* Valid decoding before the bad escape is rolled back. */
    expect_pct_bad("%41%42%43%4", 11, false);
    /* Bounded buffer: refused before any byte is written. */
    struct lg_buf b;
    lg_buf_init(&b, 6);
    ck_assert_int_eq(lg_buf_puts(&b, "keep"), 0);
    ck_assert_int_eq(lg_codec_pct_decode(&b, "abc", 3, false), -1);
    expect_buf(&b, "keep", 4);
    lg_buf_free(&b);
}
END_TEST

/* ---------- AWS URI encoding ---------- */

static void expect_uri(const char *in, size_t n, bool keep_slash, const char *want)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_codec_uri_encode(&b, in, n, keep_slash), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), want);
    ck_assert_uint_eq(b.len, strlen(want));
    lg_buf_free(&b);
}

START_TEST(test_uri_encode)
{
    const char *unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
    expect_uri(unreserved, strlen(unreserved), false, unreserved);
    expect_uri("", 0, false, "");
    expect_uri("a b", 3, false, "a%20b");
    expect_uri("a+b=c&d", 7, false, "a%2Bb%3Dc%26d");
    expect_uri("!*'();:@$,?#[]%", 15, false, "%21%2A%27%28%29%3B%3A%40%24%2C%3F%23%5B%5D%25");
    expect_uri("\xc3\xa9\xff", 3, false, "%C3%A9%FF");
    expect_uri("\0\x1f\x7f", 3, false, "%00%1F%7F");
    /* Uppercase hex digits, never lowercase. */
    expect_uri("\xab\xcd\xef", 3, false, "%AB%CD%EF");
    /* '/' is kept only with keep_slash. */
    expect_uri("/a b/c", 6, false, "%2Fa%20b%2Fc");
    expect_uri("/a b/c", 6, true, "/a%20b/c");
    expect_uri("my-function:prod", 16, true, "my-function%3Aprod");
    /* Appends to what is there. */
    struct lg_buf b;
    lg_buf_init(&b, 0);
    ck_assert_int_eq(lg_buf_puts(&b, "x="), 0);
    ck_assert_int_eq(lg_codec_uri_encode(&b, "a/b", 3, false), 0);
    ck_assert_str_eq(lg_buf_cstr(&b), "x=a%2Fb");
    lg_buf_free(&b);
}
END_TEST

/* ---------- UTF-8 ---------- */

static void expect_utf8(const char *s, size_t n, bool want)
{
    char hex[128];
    lg_codec_hex(hex, (const unsigned char *)s, n < 60 ? n : 60);
    ck_assert_msg(lg_codec_utf8_valid(s, n) == want, "utf8_valid(%s) should be %s", hex,
                  want ? "true" : "false");
}

#define UTF8_OK(s)  expect_utf8(s, sizeof(s) - 1, true)
#define UTF8_BAD(s) expect_utf8(s, sizeof(s) - 1, false)

START_TEST(test_utf8_valid)
{
    UTF8_OK("");
    UTF8_OK("plain ascii \x7f\x01");
    UTF8_OK("\xc2\x80");          /* U+0080 */
    UTF8_OK("\xc3\xa9t\xc3\xa9"); /* été */
    UTF8_OK("\xdf\xbf");          /* U+07FF */
    UTF8_OK("\xe0\xa0\x80");      /* U+0800 */
    UTF8_OK("\xe2\x82\xac");      /* € */
    UTF8_OK("\xed\x9f\xbf");      /* U+D7FF, just below the surrogates */
    UTF8_OK("\xee\x80\x80");      /* U+E000, just above them */
    UTF8_OK("\xef\xbf\xbf");      /* U+FFFF */
    UTF8_OK("\xf0\x90\x80\x80");  /* U+10000 */
    UTF8_OK("\xf0\x9d\x84\x9e");  /* U+1D11E */
    UTF8_OK("\xf4\x8f\xbf\xbf");  /* U+10FFFF */
    UTF8_OK("a\xe2\x82\xac"
            "b\xf0\x9f\x98\x80"
            "c");
}
END_TEST

START_TEST(test_utf8_invalid)
{
    /* Overlong forms. */
    UTF8_BAD("\xc0\x80");
    UTF8_BAD("\xc0\xaf");
    UTF8_BAD("\xc1\xbf");
    UTF8_BAD("\xe0\x80\x80");
    UTF8_BAD("\xe0\x80\xaf");
    UTF8_BAD("\xe0\x9f\xbf");
    UTF8_BAD("\xf0\x80\x80\x80");
    UTF8_BAD("\xf0\x80\x80\xaf");
    UTF8_BAD("\xf0\x8f\xbf\xbf");
    /* Surrogates, paired or not. */
    UTF8_BAD("\xed\xa0\x80");
    UTF8_BAD("\xed\xbf\xbf");
    UTF8_BAD("\xed\xa0\xbd\xed\xb8\x80");
    /* Above U+10FFFF and bytes that never appear. */
    UTF8_BAD("\xf4\x90\x80\x80");
    UTF8_BAD("\xf5\x80\x80\x80");
    UTF8_BAD("\xf7\xbf\xbf\xbf");
    UTF8_BAD("\xf8\x88\x80\x80\x80");
    UTF8_BAD("\xfc\x84\x80\x80\x80\x80");
    UTF8_BAD("\xfe");
    UTF8_BAD("\xff");
    /* Lone continuation bytes. */
    UTF8_BAD("\x80");
    UTF8_BAD("a\xbf");
    UTF8_BAD("\xc3\xa9\xa9");
    /* Truncated sequences, at the end and before other bytes. */
    UTF8_BAD("\xc3");
    UTF8_BAD("\xe2\x82");
    UTF8_BAD("\xf0\x9d\x84");
    UTF8_BAD("\xe2\x82"
             "a");
    UTF8_BAD("\xf0\x9d\x84"
             "a");
    UTF8_BAD("\xc3"
             "a");
    UTF8_BAD("\xe2"
             "ab");
    /* NUL bytes, alone or after valid text. */
    UTF8_BAD("\0");
    UTF8_BAD("abc\0def");
    UTF8_BAD("\xc3\xa9\0");
    /* n is honoured: a valid prefix of an invalid string is valid. */
    ck_assert(lg_codec_utf8_valid("ab\xff", 2));
    ck_assert(!lg_codec_utf8_valid("\xe2\x82\xac", 2));
}
END_TEST

/* ---------- UUIDs ---------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Why u is not a version 4 UUID in text form, or NULL. Checked without
 * ck_assert per character: each Check assertion costs a pipe write in fork
 * mode. */
static const char *uuid_defect(const char *u)
{
    if (strlen(u) != 36)
        return "length";
    for (size_t k = 0; k < 36; k++) {
        bool dash = k == 8 || k == 13 || k == 18 || k == 23;
        if (dash ? u[k] != '-' : !is_lower_hex(u[k]))
            return dash ? "no dash" : "not lowercase hex";
    }
    if (u[14] != '4')
        return "version nibble";
    if (strchr("89ab", u[19]) == NULL)
        return "variant nibble";
    return NULL;
}

START_TEST(test_uuid4)
{
    enum {
        N = 10000
    };
    char(*ids)[37] = malloc(sizeof(*ids) * N);
    ck_assert_ptr_nonnull(ids);
    for (size_t i = 0; i < N; i++) {
        memset(ids[i], 'Z', 37);
        lg_codec_uuid4(ids[i]);
        const char *why = uuid_defect(ids[i]);
        if (why != NULL)
            ck_abort_msg("%.37s: %s", ids[i], why);
    }
    qsort(ids, N, sizeof(*ids), cmp_str);
    for (size_t i = 1; i < N; i++) {
        if (strcmp(ids[i - 1], ids[i]) == 0)
            ck_abort_msg("duplicate uuid %s", ids[i]);
    }
    /* The random nibbles are not stuck: every hex digit shows up at the first
     * position over 10 000 ids. */
    bool seen[16] = {false};
    for (size_t i = 0; i < N; i++)
        seen[ids[i][0] <= '9' ? ids[i][0] - '0' : ids[i][0] - 'a' + 10] = true;
    for (size_t d = 0; d < 16; d++)
        ck_assert_msg(seen[d], "hex digit %zx never first", d);
    free(ids);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_buf_init_empty);
    tcase_add_test(tc, test_buf_local_storage);
    tcase_add_test(tc, test_codec_i64);
    tcase_add_test(tc, test_buf_growth_and_nul);
    tcase_add_test(tc, test_buf_append_zero_and_puts);
    tcase_add_test(tc, test_buf_max_refused_unchanged);
    tcase_add_test(tc, test_buf_printf);
    tcase_add_test(tc, test_buf_steal_reset_free);
    tcase_add_test(tc, test_base64_encode_rfc4648);
    tcase_add_test(tc, test_base64_decode_rfc4648);
    tcase_add_test(tc, test_base64_roundtrip_binary);
    tcase_add_test(tc, test_base64_decode_strict);
    tcase_add_test(tc, test_base64url_decode);
    tcase_add_test(tc, test_hex);
    tcase_add_test(tc, test_pct_decode);
    tcase_add_test(tc, test_pct_decode_malformed);
    tcase_add_test(tc, test_uri_encode);
    tcase_add_test(tc, test_utf8_valid);
    tcase_add_test(tc, test_utf8_invalid);
    tcase_add_test(tc, test_uuid4);
    suite_add_tcase(s, tc);

    /* Contracts that earlier read differently (buf.h, codec.h). */
    tcase_add_test(tc, test_buf_steal_after_reset);
    tcase_add_test(tc, test_codec_bounded_out_needs_worst_case);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
