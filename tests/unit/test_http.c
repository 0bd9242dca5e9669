/* test_http.c - HTTP/1.1 codec: head framing, request/response parsing, refusals, chunked bodies.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "lambdagate/http.h"

/* ---------- lg_http_head_end ---------- */

static size_t head_end(const char *s)
{
    size_t scanned = 0;
    return lg_http_head_end(s, strlen(s), &scanned);
}

START_TEST(test_head_end_complete)
{
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 27);
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\nHost: a\n\n"), 24);
    /* Mixed line ends. */
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\r\nHost: a\n\r\n"), 26);
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\nHost: a\r\n\n"), 25);
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\r\n\r\n"), 18);
    /* Body bytes after the block are not part of it. */
    ck_assert_uint_eq(head_end("POST / HTTP/1.1\r\nHost: a\r\n\r\nbody\r\n\r\n"), 28);
    ck_assert_uint_eq(head_end("GET / HTTP/1.1\n\nGET / HTTP/1.1\n\n"), 16);
}
END_TEST

START_TEST(test_head_end_incomplete)
{
    static const char *const partial[] = {
        "",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: a",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
        "GET / HTTP/1.1\nHost: a\n",
        "GET / HTTP/1.1\r\nX: \r\r\n",
        "GET / HTTP/1.1\r\nX: a\n\rb\r\n",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(partial); i++) {
        size_t len = strlen(partial[i]);
        size_t scanned = 0;
        ck_assert_msg(lg_http_head_end(partial[i], len, &scanned) == 0, "complete: %s", partial[i]);
        /* Progress was kept: at most the last line end is looked at again. */
        ck_assert_uint_le(scanned, len);
        ck_assert_msg(scanned + 2 >= len, "scanned %zu of %zu in case %zu", scanned, len, i);
    }
}
END_TEST

/* Grow the buffer one byte at a time, as a connection reading slowly would:
 * the end is found exactly when its last byte arrives, and the bytes looked
 * at in all calls together stay close to the block's length. */
static void head_end_bytewise(const char *s, size_t want)
{
    size_t len = strlen(s);
    size_t scanned = 0, examined = 0, lines = 0;
    for (size_t i = 0; i < want; i++)
        lines += s[i] == '\n';
    for (size_t n = 1; n <= len; n++) {
        size_t before = scanned;
        size_t r = lg_http_head_end(s, n, &scanned);
        examined += n - before;
        if (n < want) {
            ck_assert_msg(r == 0, "%zu-byte prefix already complete (%zu)", n, r);
            ck_assert_uint_ge(scanned, before);
            ck_assert_uint_le(scanned, n);
        } else {
            ck_assert_msg(r == want, "got %zu at %zu bytes, want %zu", r, n, want);
            break;
        }
    }
    /* Only the bytes of a pending line end (LF, or LF CR) are read again. */
    ck_assert_msg(examined <= want + 2 * lines, "examined %zu bytes for a %zu-byte block", examined,
                  want);
}

START_TEST(test_head_end_split)
{
    head_end_bytewise("GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n", 47);
    head_end_bytewise("GET / HTTP/1.1\nHost: a\n\n", 24);
    head_end_bytewise("GET / HTTP/1.1\r\nHost: a\n\r\nbody", 26);

    /* Split at every point of the final CR LF CR LF. */
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for (size_t cut = 1; cut < strlen(s); cut++) {
        size_t scanned = 0;
        ck_assert_uint_eq(lg_http_head_end(s, cut, &scanned), 0);
        ck_assert_uint_eq(lg_http_head_end(s, strlen(s), &scanned), 27);
    }

    /* Bytes before *scanned are not examined again: an empty line there is
     * not seen, because the caller said it had been scanned already. */
    const char *t = "A\n\nBCD";
    size_t scanned = 3;
    ck_assert_uint_eq(lg_http_head_end(t, 6, &scanned), 0);
    ck_assert_uint_eq(scanned, 6);
    /* And with nothing new, nothing changes. */
    ck_assert_uint_eq(lg_http_head_end(t, 6, &scanned), 0);
    ck_assert_uint_eq(scanned, 6);
}
END_TEST

/* ---------- lg_http_parse_request_head ---------- */

static int parse_req_n(const char *block, size_t len, struct lg_http_head *h, int *status)
{
    *status = -1;
    return lg_http_parse_request_head(block, len, h, status);
}

static int parse_req(const char *block, struct lg_http_head *h, int *status)
{
    return parse_req_n(block, strlen(block), h, status);
}

/* The request must be accepted (status 0). */
static void expect_req_ok(const char *block, struct lg_http_head *h)
{
    int status;
    ck_assert_msg(parse_req(block, h, &status) == 0, "refused (%d): %s", status, block);
    ck_assert_int_eq(status, 0);
}

/* The request block[0..len) must be refused with want. */
static void expect_req_status_n(const char *block, size_t len, int want)
{
    struct lg_http_head h;
    int status;
    int rc = parse_req_n(block, len, &h, &status);
    ck_assert_msg(rc == -1, "accepted: %s", block);
    ck_assert_msg(status == want, "status %d, want %d for: %s", status, want, block);
}

static void expect_req_status(const char *block, int want)
{
    expect_req_status_n(block, strlen(block), want);
}

static void expect_slice(const char *p, size_t n, const char *want)
{
    ck_assert_msg(n == strlen(want) && memcmp(p, want, n) == 0, "got \"%.*s\", want \"%s\"", (int)n,
                  p, want);
}

START_TEST(test_request_basic)
{
    const char *block = "GET /a/b?x=1&y=%20z HTTP/1.1\r\n"
                        "Host: example.com\r\n"
                        "User-Agent: test/1.0\r\n"
                        "Accept: */*\r\n"
                        "\r\n";
    struct lg_http_head h;
    expect_req_ok(block, &h);
    expect_slice(h.method, h.method_len, "GET");
    expect_slice(h.target, h.target_len, "/a/b?x=1&y=%20z");
    ck_assert_int_eq(h.version_minor, 1);
    ck_assert_uint_eq(h.nheaders, 3);
    expect_slice(h.headers[0].name, h.headers[0].name_len, "Host");
    expect_slice(h.headers[0].value, h.headers[0].value_len, "example.com");
    expect_slice(h.headers[1].name, h.headers[1].name_len, "User-Agent");
    expect_slice(h.headers[1].value, h.headers[1].value_len, "test/1.0");
    expect_slice(h.headers[2].name, h.headers[2].name_len, "Accept");
    expect_slice(h.headers[2].value, h.headers[2].value_len, "*/*");
    /* Slices borrow from the block. */
    ck_assert_ptr_eq(h.method, block);
    ck_assert_ptr_eq(h.target, block + 4);
    ck_assert_ptr_eq(h.headers[0].name, block + 30);
    ck_assert_int_eq(h.content_length, -1);
    ck_assert(!h.chunked);
    ck_assert(h.keep_alive);
    ck_assert(!h.expect_continue);

    /* Bare LF line ends parse the same. */
    expect_req_ok("POST /x HTTP/1.0\nContent-Length: 12\n\n", &h);
    expect_slice(h.method, h.method_len, "POST");
    expect_slice(h.target, h.target_len, "/x");
    ck_assert_int_eq(h.version_minor, 0);
    ck_assert_int_eq(h.content_length, 12);
    ck_assert_uint_eq(h.nheaders, 1);
    ck_assert(!h.keep_alive);
}
END_TEST

START_TEST(test_request_methods)
{
    static const char *const ok[] = {
        "GET",  "POST",    "PUT",      "DELETE", "PATCH",
        "HEAD", "OPTIONS", "M-SEARCH", "get",    "X_CUSTOM.1~!#$%&'*+^`|"};
    for (size_t i = 0; i < LG_ARRAY_LEN(ok); i++) {
        char block[256];
        snprintf(block, sizeof(block), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", ok[i]);
        struct lg_http_head h;
        expect_req_ok(block, &h);
        expect_slice(h.method, h.method_len, ok[i]);
    }
    expect_req_status(" / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GE\"T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("G\x80T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET\r\nHost: a\r\n\r\n", 400);
    expect_req_status("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}
END_TEST

START_TEST(test_request_targets)
{
    static const char *const ok[] = {
        "/", "/a", "/a/b/", "/%7Euser?q=a+b&r=%2F#frag", "//double", "/a;b=c,d!$&'()*+@:"};
    for (size_t i = 0; i < LG_ARRAY_LEN(ok); i++) {
        char block[256];
        snprintf(block, sizeof(block), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", ok[i]);
        struct lg_http_head h;
        expect_req_ok(block, &h);
        expect_slice(h.target, h.target_len, ok[i]);
    }
    /* Not origin-form, empty, or with bytes that have no place in a target. */
    expect_req_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    /* absolute-form is accepted (RFC 9112 section 3.2.2): the target is its
     * path and query. */
    static const char *const absolute[][2] = {
        {"http://a/", "/"},
        {"HTTPS://a:8443/x/y?z=1", "/x/y?z=1"},
        {"http://a", "/"},
        {"http://[::1]:80/p", "/p"},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(absolute); i++) {
        char block[256];
        snprintf(block, sizeof(block), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", absolute[i][0]);
        struct lg_http_head h;
        expect_req_ok(block, &h);
        expect_slice(h.target, h.target_len, absolute[i][1]);
    }
    expect_req_status("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET / a HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    expect_req_status_n(nul_target, sizeof(nul_target) - 1, 400);
}
END_TEST

START_TEST(test_request_versions)
{
    struct lg_http_head h;
    expect_req_ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &h);
    ck_assert_int_eq(h.version_minor, 1);
    expect_req_ok("GET / HTTP/1.0\r\n\r\n", &h);
    ck_assert_int_eq(h.version_minor, 0);
    /* Well-formed but another version: 505. */
    expect_req_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    expect_req_status("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    expect_req_status("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
    expect_req_status("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505);
    expect_req_status("GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505);
    /* Not a version at all: 400. */
    static const char *const garbage[] = {
        "HTTP/1.1 ", "HTTP/1.1x", "HTTP/11",   "http/1.1", "HTTPS/1.1", "HTTP/1",   "HTTP/1.",
        "HTTP/x.1",  "HTTP/1.x",  "HTTP/10.0", "",         "HTTP 1.1",  "HTTP/1,1", "FOO",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(garbage); i++) {
        char block[128];
        snprintf(block, sizeof(block), "GET / %s\r\nHost: a\r\n\r\n", garbage[i]);
        expect_req_status(block, 400);
    }
    expect_req_status("GET /\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400);
    /* No request line at all, or not a complete one. */
    expect_req_status("", 400);
    expect_req_status("GET / HTTP/1.1", 400);
}
END_TEST

START_TEST(test_request_headers_trimmed)
{
    const char *block = "GET / HTTP/1.1\r\n"
                        "Host:a\r\n"
                        "X-Spaces:   padded value \t \r\n"
                        "X-Tab:\tv\t\r\n"
                        "X-Empty:\r\n"
                        "X-Blank:    \r\n"
                        "X-Inner: a  b\tc\r\n"
                        "X-Colon: a:b: c\r\n"
                        "x-lower: obs-text \x80\xff\r\n"
                        "\r\n";
    struct lg_http_head h;
    expect_req_ok(block, &h);
    ck_assert_uint_eq(h.nheaders, 8);
    static const char *const want[][2] = {
        {"Host", "a"},         {"X-Spaces", "padded value"},
        {"X-Tab", "v"},        {"X-Empty", ""},
        {"X-Blank", ""},       {"X-Inner", "a  b\tc"},
        {"X-Colon", "a:b: c"}, {"x-lower", "obs-text \x80\xff"},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(want); i++) {
        expect_slice(h.headers[i].name, h.headers[i].name_len, want[i][0]);
        expect_slice(h.headers[i].value, h.headers[i].value_len, want[i][1]);
    }
    /* A header block without headers (1.0 needs no Host). */
    expect_req_ok("GET / HTTP/1.0\r\n\r\n", &h);
    ck_assert_uint_eq(h.nheaders, 0);
}
END_TEST

START_TEST(test_request_content_length)
{
    struct lg_http_head h;
    static const struct {
        const char *value;
        int64_t want;
    } ok[] = {
        {"0", 0},
        {"42", 42},
        {"007", 7},
        {"5, 5", 5},
        {"5,5,5", 5},
        {" 10 ", 10},
        {"999999999999999999", 999999999999999999LL},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(ok); i++) {
        char block[256];
        snprintf(block, sizeof(block), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 ok[i].value);
        expect_req_ok(block, &h);
        ck_assert_int_eq(h.content_length, ok[i].want);
        ck_assert(!h.chunked);
    }
    /* Repeated headers that agree are one length. */
    expect_req_ok("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n",
                  &h);
    ck_assert_int_eq(h.content_length, 5);

    static const char *const bad[] = {
        "",
        "abc",
        "-1",
        "+5",
        "5a",
        "0x10",
        "1 2",
        "5, 6",
        "5;q=1",
        ",",
        "1.0",
        "5\t6",
        "1000000000000000000",
        "99999999999999999999",
        "18446744073709551616",
        "9223372036854775808",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        char block[256];
        snprintf(block, sizeof(block), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 bad[i]);
        expect_req_status(block, 400);
    }
    expect_req_status(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    expect_req_status(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n", 400);
}
END_TEST

START_TEST(test_request_transfer_encoding)
{
    struct lg_http_head h;
    expect_req_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &h);
    ck_assert(h.chunked);
    ck_assert_int_eq(h.content_length, -1);
    expect_req_ok("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n", &h);
    ck_assert(h.chunked);
    /* Content-Length together with Transfer-Encoding, in either order: 400. */
    expect_req_status(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        400);
    expect_req_status(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        400);
    expect_req_status(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", 400);
    /* Codings other than a single final chunked: 501. */
    static const char *const other[] = {"gzip",          "identity",         "gzip, chunked",
                                        "chunked, gzip", "chunked, chunked", "deflate",
                                        "chunkedx"};
    for (size_t i = 0; i < LG_ARRAY_LEN(other); i++) {
        char block[256];
        snprintf(block, sizeof(block),
                 "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n", other[i]);
        expect_req_status(block, 501);
    }
    expect_req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n",
                      501);
    expect_req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n",
                      501);
    /* Transfer-Encoding in HTTP/1.0: 400, whatever the coding. */
    expect_req_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_req_status("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
}
END_TEST

START_TEST(test_request_malformed_lines)
{
    /* obs-fold, with a space or a tab. */
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
    /* Bare CR in a value, a name, the request line, or as a line end. */
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX\r-A: b\r\n\r\n", 400);
    expect_req_status("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    /* Control bytes and NUL in values. */
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x1f\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7f\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: \x0b\r\n\r\n", 400);
    const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n";
    expect_req_status_n(nul_value, sizeof(nul_value) - 1, 400);
    const char nul_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n";
    expect_req_status_n(nul_name, sizeof(nul_name) - 1, 400);
    /* Whitespace before the colon, empty or invalid names, no colon. */
    expect_req_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nX-\xc3\xa9: b\r\n\r\n", 400);
    /* HTAB inside a value is fine. */
    struct lg_http_head h;
    expect_req_ok("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n", &h);
}
END_TEST

/* A request with Host plus extra more headers. */
static char *many_headers(size_t extra)
{
    size_t cap = 64 + extra * 32;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    size_t n = (size_t)snprintf(s, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 0; i < extra; i++)
        n += (size_t)snprintf(s + n, cap - n, "X-H%zu: v%zu\r\n", i, i);
    snprintf(s + n, cap - n, "\r\n");
    return s;
}

START_TEST(test_request_max_headers)
{
    struct lg_http_head h;
    char *s = many_headers(LG_HTTP_MAX_HEADERS - 1);
    expect_req_ok(s, &h);
    ck_assert_uint_eq(h.nheaders, LG_HTTP_MAX_HEADERS);
    expect_slice(h.headers[LG_HTTP_MAX_HEADERS - 1].name,
                 h.headers[LG_HTTP_MAX_HEADERS - 1].name_len, "X-H126");
    free(s);
    s = many_headers(LG_HTTP_MAX_HEADERS);
    expect_req_status(s, 431);
    free(s);
    s = many_headers(1000);
    expect_req_status(s, 431);
    free(s);
}
END_TEST

START_TEST(test_request_host)
{
    struct lg_http_head h;
    expect_req_status("GET / HTTP/1.1\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    expect_req_status("GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", 400);
    expect_req_ok("GET / HTTP/1.1\r\nhOsT: a\r\n\r\n", &h);
    expect_req_ok("GET / HTTP/1.0\r\n\r\n", &h);
    expect_req_ok("GET / HTTP/1.0\r\nHost: a\r\n\r\n", &h);
}
END_TEST

START_TEST(test_request_expect)
{
    struct lg_http_head h;
    expect_req_ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                  &h);
    ck_assert(h.expect_continue);
    expect_req_ok("PUT / HTTP/1.1\r\nHost: a\r\nexpect:  100-Continue \r\n\r\n", &h);
    ck_assert(h.expect_continue);
    /* HTTP/1.0 clients do not wait for 100 Continue. */
    expect_req_ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &h);
    ck_assert(!h.expect_continue);
    expect_req_ok("PUT / HTTP/1.1\r\nHost: a\r\n\r\n", &h);
    ck_assert(!h.expect_continue);
    expect_req_status("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417);
    expect_req_status("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n", 417);
    expect_req_status("PUT / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", 417);
    expect_req_status("PUT / HTTP/1.0\r\nExpect: foo\r\n\r\n", 417);
}
END_TEST

static bool keep_alive_of(const char *block)
{
    struct lg_http_head h;
    expect_req_ok(block, &h);
    return h.keep_alive;
}

START_TEST(test_request_keep_alive)
{
    ck_assert(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nconnection: CLOSE\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"));
    ck_assert(
        !keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    ck_assert(keep_alive_of("GET / HTTP/1.0\r\nConnection: foo, keep-alive\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    ck_assert(!keep_alive_of("GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n"));
}
END_TEST

START_TEST(test_request_reuse_resets)
{
    /* A head reused after a richer message starts clean. */
    struct lg_http_head h;
    expect_req_ok("PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  &h);
    ck_assert(h.chunked && h.expect_continue && h.keep_alive);
    expect_req_ok("GET /b HTTP/1.0\r\n\r\n", &h);
    ck_assert(!h.chunked);
    ck_assert(!h.expect_continue);
    ck_assert(!h.keep_alive);
    ck_assert_int_eq(h.content_length, -1);
    ck_assert_uint_eq(h.nheaders, 0);
    ck_assert_int_eq(h.status, 0);
}
END_TEST

/* ---------- lg_http_parse_response_head ---------- */

static void expect_resp(const char *block, int status, int minor, bool keep_alive)
{
    struct lg_http_head h;
    ck_assert_msg(lg_http_parse_response_head(block, strlen(block), &h) == 0, "refused: %s", block);
    ck_assert_int_eq(h.status, status);
    ck_assert_int_eq(h.version_minor, minor);
    ck_assert_msg(h.keep_alive == keep_alive, "keep_alive %d for: %s", h.keep_alive, block);
}

static void expect_resp_bad(const char *block)
{
    struct lg_http_head h;
    ck_assert_msg(lg_http_parse_response_head(block, strlen(block), &h) == -1, "accepted: %s",
                  block);
}

START_TEST(test_response_status_line)
{
    expect_resp("HTTP/1.1 200 OK\r\n\r\n", 200, 1, true);
    expect_resp("HTTP/1.1 204\r\n\r\n", 204, 1, true);
    expect_resp("HTTP/1.1 404 \r\n\r\n", 404, 1, true);
    expect_resp("HTTP/1.1 502 Bad  Gateway, really\r\n\r\n", 502, 1, true);
    expect_resp("HTTP/1.0 500 Internal Server Error\r\n\r\n", 500, 0, false);
    expect_resp("HTTP/1.1 999 Odd\n\n", 999, 1, true);
    /* 1xx heads parse like any other. */
    expect_resp("HTTP/1.1 100 Continue\r\n\r\n", 100, 1, true);
    expect_resp("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n", 101, 1, true);
    expect_resp("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 103, 1, true);

    expect_resp_bad("");
    expect_resp_bad("HTTP/1.1 20\r\n\r\n");
    expect_resp_bad("HTTP/1.1 2000 OK\r\n\r\n");
    expect_resp_bad("HTTP/1.1 099 Low\r\n\r\n");
    expect_resp_bad("HTTP/1.1 000\r\n\r\n");
    expect_resp_bad("HTTP/1.1 abc OK\r\n\r\n");
    expect_resp_bad("HTTP/1.1 2x0 OK\r\n\r\n");
    expect_resp_bad("HTTP/1.1  200 OK\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200\tOK\r\n\r\n");
    expect_resp_bad("HTTP/1.1-200 OK\r\n\r\n");
    expect_resp_bad("HTTP/2.0 200 OK\r\n\r\n");
    expect_resp_bad("HTTP/2 200 OK\r\n\r\n");
    expect_resp_bad("http/1.1 200 OK\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 O\rK\r\n\r\n");
    expect_resp_bad("ICY 200 OK\r\n\r\n");
}
END_TEST

START_TEST(test_response_headers)
{
    struct lg_http_head h;
    const char *block = "HTTP/1.1 200 OK\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: 17\r\n"
                        "X-Amz-Function-Error:  Unhandled \r\n"
                        "\r\n";
    ck_assert_int_eq(lg_http_parse_response_head(block, strlen(block), &h), 0);
    ck_assert_int_eq(h.status, 200);
    ck_assert_int_eq(h.content_length, 17);
    ck_assert(!h.chunked);
    ck_assert(h.keep_alive);
    ck_assert_uint_eq(h.nheaders, 3);
    expect_slice(h.headers[2].value, h.headers[2].value_len, "Unhandled");
    ck_assert_ptr_null(h.method);
    ck_assert_ptr_null(h.target);

    block = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    ck_assert_int_eq(lg_http_parse_response_head(block, strlen(block), &h), 0);
    ck_assert(h.chunked);
    ck_assert(!h.keep_alive);
    ck_assert_int_eq(h.content_length, -1);

    expect_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 200, 0, true);
    expect_resp("HTTP/1.0 200 OK\r\nConnection: Keep-Alive, close\r\n\r\n", 200, 0, false);
    expect_resp("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n", 200, 1, false);

    /* The same framing rules as requests. */
    expect_resp_bad("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    expect_resp_bad("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nX-A: b\x01\r\n\r\n");
    expect_resp_bad("HTTP/1.1 200 OK\r\nX-A: b\rc\r\n\r\n");
    /* Responses need no Host. */
    expect_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, 1, true);
}
END_TEST

/* ---------- header helpers ---------- */

static struct lg_http_header hdr(const char *name, const char *value)
{
    return (struct lg_http_header){name, strlen(name), value, strlen(value)};
}

START_TEST(test_find)
{
    struct lg_http_header hs[] = {hdr("Host", "a"), hdr("X-Dup", "first"), hdr("x-dup", "second"),
                                  hdr("Content-Type", "text/plain")};
    const struct lg_http_header *f = lg_http_find(hs, 4, "host");
    ck_assert_ptr_eq(f, &hs[0]);
    ck_assert_ptr_eq(lg_http_find(hs, 4, "CONTENT-TYPE"), &hs[3]);
    f = lg_http_find(hs, 4, "X-DUP");
    ck_assert_ptr_eq(f, &hs[1]);
    ck_assert_ptr_null(lg_http_find(hs, 4, "Hos"));
    ck_assert_ptr_null(lg_http_find(hs, 4, "Hosts"));
    ck_assert_ptr_null(lg_http_find(hs, 4, "missing"));
    ck_assert_ptr_null(lg_http_find(hs, 0, "Host"));
    /* n bounds the search. */
    ck_assert_ptr_null(lg_http_find(hs, 3, "content-type"));
}
END_TEST

START_TEST(test_hop_by_hop)
{
    static const char *const fixed[] = {
        "Connection",
        "keep-alive",
        "PROXY-AUTHENTICATE",
        "Proxy-Authorization",
        "TE",
        "te",
        "Trailer",
        "Transfer-Encoding",
        "upgrade",
        "Keep-Alive",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(fixed); i++)
        ck_assert_msg(lg_http_is_hop_by_hop(fixed[i], strlen(fixed[i]), NULL, 0), "%s", fixed[i]);
    static const char *const end_to_end[] = {
        "Content-Type", "Host",  "Authorization", "Tea", "T", "Upgrade-Insecure-Requests",
        "Connections",  "Proxy", "Trailers",      "",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(end_to_end); i++)
        ck_assert_msg(!lg_http_is_hop_by_hop(end_to_end[i], strlen(end_to_end[i]), NULL, 0), "%s",
                      end_to_end[i]);

    /* Names listed in Connection headers, case-insensitively. */
    struct lg_http_header hs[] = {hdr("Host", "a"), hdr("connection", "X-Foo, close ,  x-bar"),
                                  hdr("X-Foo", "1"), hdr("CONNECTION", "X-Third"),
                                  hdr("X-Listed-Elsewhere", "X-Baz")};
    static const char *const listed[] = {"X-Foo", "x-foo", "X-BAR", "x-third", "close"};
    for (size_t i = 0; i < LG_ARRAY_LEN(listed); i++)
        ck_assert_msg(lg_http_is_hop_by_hop(listed[i], strlen(listed[i]), hs, 5), "%s", listed[i]);
    static const char *const not_listed[] = {"X-Fo", "X-Foo2", "X-Baz", "Host", "X-Foo, close"};
    for (size_t i = 0; i < LG_ARRAY_LEN(not_listed); i++)
        ck_assert_msg(!lg_http_is_hop_by_hop(not_listed[i], strlen(not_listed[i]), hs, 5), "%s",
                      not_listed[i]);
    /* Only the first n headers count. */
    ck_assert(!lg_http_is_hop_by_hop("X-Third", 7, hs, 3));
    /* name_len is honoured (name need not be NUL-terminated). */
    ck_assert(lg_http_is_hop_by_hop("TE-and-more", 2, NULL, 0));
    ck_assert(lg_http_is_hop_by_hop("X-Foo: 1", 5, hs, 5));
}
END_TEST

START_TEST(test_token_and_field_value)
{
    ck_assert(lg_http_is_token("GET", 3));
    const char *all =
        "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    ck_assert(lg_http_is_token(all, strlen(all)));
    static const char *const bad[] = {"a b", "a:b", "a\"", "a(",   "a)",   "a,b",     "a/b", "a;b",
                                      "a=b", "a?",  "a@",  "a[",   "a]",   "a{",      "a}",  "a\\",
                                      "a<",  "a>",  "\t",  "\x7f", "\x80", "\xc3\xa9"};
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        ck_assert_msg(!lg_http_is_token(bad[i], strlen(bad[i])), "token: %s", bad[i]);
    ck_assert(!lg_http_is_token("", 0));
    ck_assert(!lg_http_is_token("a\0b", 3));
    ck_assert(lg_http_is_token("ab cd", 2)); /* n is honoured */

    ck_assert(lg_http_is_field_value("", 0));
    ck_assert(lg_http_is_field_value("text/html; charset=utf-8", 24));
    ck_assert(lg_http_is_field_value("a b\tc", 5));
    ck_assert(lg_http_is_field_value("\x80\xff\xc3\xa9", 4));
    ck_assert(lg_http_is_field_value(" ~!\"#", 5));
    static const char *const badv[] = {"a\rb", "a\nb", "\r\n", "a\x01", "\x1f", "\x7f", "\x0b"};
    for (size_t i = 0; i < LG_ARRAY_LEN(badv); i++)
        ck_assert_msg(!lg_http_is_field_value(badv[i], strlen(badv[i])), "value #%zu", i);
    ck_assert(!lg_http_is_field_value("a\0b", 3));
    ck_assert(lg_http_is_field_value("ab\r\n", 2));

    ck_assert(lg_http_ieq("Content-Length", 14, "content-length"));
    ck_assert(lg_http_ieq("HOST", 4, "host"));
    ck_assert(!lg_http_ieq("Host", 4, "hos"));
    ck_assert(!lg_http_ieq("Hos", 3, "host"));
    ck_assert(!lg_http_ieq("Hxst", 4, "host"));
    ck_assert(lg_http_ieq("", 0, ""));
    ck_assert(!lg_http_ieq("ho\0t", 4, "host"));
}
END_TEST

START_TEST(test_reason)
{
    ck_assert_str_eq(lg_http_reason(100), "Continue");
    ck_assert_str_eq(lg_http_reason(200), "OK");
    ck_assert_str_eq(lg_http_reason(204), "No Content");
    ck_assert_str_eq(lg_http_reason(304), "Not Modified");
    ck_assert_str_eq(lg_http_reason(400), "Bad Request");
    ck_assert_str_eq(lg_http_reason(403), "Forbidden");
    ck_assert_str_eq(lg_http_reason(404), "Not Found");
    ck_assert_str_eq(lg_http_reason(405), "Method Not Allowed");
    ck_assert_str_eq(lg_http_reason(413), "Content Too Large");
    ck_assert_str_eq(lg_http_reason(417), "Expectation Failed");
    ck_assert_str_eq(lg_http_reason(429), "Too Many Requests");
    ck_assert_str_eq(lg_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(lg_http_reason(500), "Internal Server Error");
    ck_assert_str_eq(lg_http_reason(501), "Not Implemented");
    ck_assert_str_eq(lg_http_reason(502), "Bad Gateway");
    ck_assert_str_eq(lg_http_reason(503), "Service Unavailable");
    ck_assert_str_eq(lg_http_reason(504), "Gateway Timeout");
    ck_assert_str_eq(lg_http_reason(505), "HTTP Version Not Supported");
    ck_assert_str_eq(lg_http_reason(0), "Unknown");
    ck_assert_str_eq(lg_http_reason(-1), "Unknown");
    ck_assert_str_eq(lg_http_reason(299), "Unknown");
    ck_assert_str_eq(lg_http_reason(999), "Unknown");
}
END_TEST

START_TEST(test_date)
{
    char want_before[64], want_after[64];
    struct tm tm;
    time_t t0 = time(NULL);
    gmtime_r(&t0, &tm);
    strftime(want_before, sizeof(want_before), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char out[30];
    memset(out, 'x', sizeof(out));
    lg_http_date(out);
    time_t t1 = time(NULL);
    gmtime_r(&t1, &tm);
    strftime(want_after, sizeof(want_after), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    ck_assert_uint_eq(strlen(out), 29);
    ck_assert_msg(strcmp(out, want_before) == 0 || strcmp(out, want_after) == 0, "date %s", out);
    /* IMF-fixdate shape: "Sun, 06 Nov 1994 08:49:37 GMT". */
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    bool day_ok = false;
    for (size_t i = 0; i < 7; i++)
        day_ok = day_ok || strncmp(out, days[i], 3) == 0;
    ck_assert_msg(day_ok, "day name in %s", out);
    ck_assert(out[3] == ',' && out[4] == ' ' && out[7] == ' ' && out[11] == ' ' && out[16] == ' ' &&
              out[19] == ':' && out[22] == ':' && out[25] == ' ');
    ck_assert_str_eq(out + 25, " GMT");
    /* Cached per second: a second call in the same second gives the same
     * text, and a later second gives the new time. */
    char again[30];
    lg_http_date(again);
    if (time(NULL) == t1)
        ck_assert_str_eq(again, out);
}
END_TEST

/* ---------- lg_http_chunked_decode ---------- */

struct chunked_run {
    enum lg_http_chunked_result res;
    char out[4096];
    size_t out_len;
    size_t total;
    char rest[256]; /* what stayed in the input */
    size_t rest_len;
    size_t fed; /* bytes given to the decoder when res came back */
};

static void run_finish(struct chunked_run *r, struct evbuffer *in, struct evbuffer *out)
{
    r->out_len = evbuffer_get_length(out);
    ck_assert_uint_lt(r->out_len, sizeof(r->out));
    evbuffer_remove(out, r->out, r->out_len);
    r->out[r->out_len] = '\0';
    r->rest_len = evbuffer_get_length(in);
    if (r->rest_len < sizeof(r->rest)) {
        evbuffer_remove(in, r->rest, r->rest_len);
        r->rest[r->rest_len] = '\0';
    }
    evbuffer_free(in);
    evbuffer_free(out);
}

/* Decode s[0..n) given in one piece. */
static void decode_whole(const char *s, size_t n, size_t max, struct chunked_run *r)
{
    memset(r, 0, sizeof(*r));
    struct lg_http_chunked c = {0};
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    ck_assert(in && out);
    evbuffer_add(in, s, n);
    r->res = lg_http_chunked_decode(&c, in, out, &r->total, max);
    r->fed = n;
    run_finish(r, in, out);
}

/* Decode s[0..n) given one byte per call; stops at the first result other
 * than MORE. Bytes not yet fed are not in rest. */
static void decode_bytewise(const char *s, size_t n, size_t max, struct chunked_run *r)
{
    memset(r, 0, sizeof(*r));
    struct lg_http_chunked c = {0};
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    ck_assert(in && out);
    r->res = LG_CHUNKED_MORE;
    for (size_t i = 0; i < n && r->res == LG_CHUNKED_MORE; i++) {
        evbuffer_add(in, s + i, 1);
        r->res = lg_http_chunked_decode(&c, in, out, &r->total, max);
        r->fed = i + 1;
    }
    run_finish(r, in, out);
}

/* Both ways must decode s to want with DONE and leave rest unread. */
static void expect_chunked(const char *s, size_t max, const char *want, const char *rest)
{
    struct chunked_run r;
    decode_whole(s, strlen(s), max, &r);
    ck_assert_msg(r.res == LG_CHUNKED_DONE, "whole: result %d for %s", (int)r.res, s);
    ck_assert_str_eq(r.out, want);
    ck_assert_uint_eq(r.total, strlen(want));
    ck_assert_str_eq(r.rest, rest);

    decode_bytewise(s, strlen(s), max, &r);
    ck_assert_msg(r.res == LG_CHUNKED_DONE, "bytewise: result %d for %s", (int)r.res, s);
    /* DONE comes with the last byte of the body, not before or after. */
    ck_assert_uint_eq(r.fed, strlen(s) - strlen(rest));
    ck_assert_str_eq(r.out, want);
    ck_assert_uint_eq(r.total, strlen(want));
    ck_assert_str_eq(r.rest, "");
}

/* Both ways must give res (ERROR or TOO_LONG). */
static void expect_chunked_fail_n(const char *s, size_t n, size_t max,
                                  enum lg_http_chunked_result res)
{
    struct chunked_run r;
    decode_whole(s, n, max, &r);
    ck_assert_msg(r.res == res, "whole: result %d, want %d for %.*s", (int)r.res, (int)res,
                  (int)(n < 80 ? n : 80), s);
    decode_bytewise(s, n, max, &r);
    ck_assert_msg(r.res == res, "bytewise: result %d, want %d for %.*s", (int)r.res, (int)res,
                  (int)(n < 80 ? n : 80), s);
}

static void expect_chunked_fail(const char *s, size_t max, enum lg_http_chunked_result res)
{
    expect_chunked_fail_n(s, strlen(s), max, res);
}

START_TEST(test_chunked_basic)
{
    expect_chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1000, "hello world", "");
    expect_chunked("0\r\n\r\n", 1000, "", "");
    expect_chunked("1\r\nx\r\n0\r\n\r\n", 1000, "x", "");
    /* Chunk data may hold CR, LF and digits. */
    expect_chunked("6\r\n\r\n0\r\n\r\r\n0\r\n\r\n", 1000, "\r\n0\r\n\r", "");
}
END_TEST

START_TEST(test_chunked_forms)
{
    /* Uppercase and lowercase hex, leading zeros. */
    expect_chunked("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 1000, "0123456789abcdefghij",
                   "");
    expect_chunked("0000A\r\n0123456789\r\n000\r\n\r\n", 1000, "0123456789", "");
    expect_chunked("1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n", 1000,
                   "0123456789012345678901234567890", "");
    /* Extensions, with and without whitespace before the ';'. */
    expect_chunked("5;name=value\r\nhello\r\n0;last\r\n\r\n", 1000, "hello", "");
    expect_chunked("5 ;a=\"b c\";d\r\nhello\r\n0\t;x\r\n\r\n", 1000, "hello", "");
    expect_chunked("5;\r\nhello\r\n0\r\n\r\n", 1000, "hello", "");
    expect_chunked("5 \r\nhello\r\n0\r\n\r\n", 1000, "hello", "");
    /* Trailer fields are read and dropped. */
    expect_chunked("5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: two\r\n\r\n", 1000, "hello", "");
    /* LF-only lines, and mixed. */
    expect_chunked("5\nhello\n0\n\n", 1000, "hello", "");
    expect_chunked("5\r\nhello\n3\nabc\r\n0\nT: 1\r\n\n", 1000, "helloabc", "");
}
END_TEST

START_TEST(test_chunked_bytes_after_end)
{
    expect_chunked("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 1000, "hello",
                   "GET / HTTP/1.1\r\n");
    expect_chunked("0\r\n\r\n0\r\n\r\n", 1000, "", "0\r\n\r\n");
    expect_chunked("3\nabc\n0\n\nX", 1000, "abc", "X");

    /* After DONE, further calls move nothing. */
    struct lg_http_chunked c = {0};
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t total = 0;
    evbuffer_add(in, "2\r\nab\r\n0\r\n\r\nrest", 16);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_DONE);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_DONE);
    evbuffer_add(in, "3\r\nxyz\r\n", 8);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_DONE);
    ck_assert_uint_eq(evbuffer_get_length(in), 12);
    ck_assert_uint_eq(evbuffer_get_length(out), 2);
    ck_assert_uint_eq(total, 2);
    evbuffer_free(in);
    evbuffer_free(out);
}
END_TEST

START_TEST(test_chunked_split_data)
{
    /* Data arriving in pieces is passed on as it comes, and MORE is answered
     * until the end. */
    struct lg_http_chunked c = {0};
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t total = 0;
    evbuffer_add(in, "a\r\n0123", 7);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_MORE);
    ck_assert_uint_eq(total, 4);
    ck_assert_uint_eq(evbuffer_get_length(out), 4);
    ck_assert_uint_eq(evbuffer_get_length(in), 0);
    evbuffer_add(in, "456789\r", 7);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_MORE);
    ck_assert_uint_eq(total, 10);
    evbuffer_add(in, "\n0\r\n", 4);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_MORE);
    evbuffer_add(in, "\r\n", 2);
    ck_assert_int_eq(lg_http_chunked_decode(&c, in, out, &total, 100), LG_CHUNKED_DONE);
    char buf[16] = "";
    ck_assert_int_eq(evbuffer_remove(out, buf, sizeof(buf) - 1), 10);
    ck_assert_str_eq(buf, "0123456789");
    /* total keeps counting across bodies when the caller does not reset it. */
    ck_assert_uint_eq(total, 10);
    evbuffer_free(in);
    evbuffer_free(out);
}
END_TEST

START_TEST(test_chunked_max)
{
    /* Exactly max is fine; one more byte is TOO_LONG, decided from the size
     * line before the data arrives. */
    expect_chunked("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10, "helloworld", "");
    expect_chunked_fail("5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", 10, LG_CHUNKED_TOO_LONG);
    expect_chunked_fail("b\r\n", 10, LG_CHUNKED_TOO_LONG);
    expect_chunked_fail("FFFFFFFFFFFFFFF\r\n", 1u << 20, LG_CHUNKED_TOO_LONG);
    expect_chunked_fail("1\r\nx\r\n0\r\n\r\n", 0, LG_CHUNKED_TOO_LONG);
    expect_chunked("0\r\n\r\n", 0, "", "");
    struct chunked_run r;
    decode_bytewise("5\r\nhello\r\n6\r\n", 13, 10, &r);
    ck_assert_int_eq(r.res, LG_CHUNKED_TOO_LONG);
    ck_assert_uint_eq(r.fed, 13);
    ck_assert_uint_eq(r.total, 5);
    ck_assert_str_eq(r.out, "hello");
}
END_TEST

START_TEST(test_chunked_malformed_size)
{
    static const char *const bad[] = {
        "\r\n",       "x\r\n",    "-1\r\n",  "0x5\r\n", " 5\r\n",  "5 x\r\n",
        ";a\r\n",     "5\r5\r\n", "g\r\n",   "5,\r\n",  "+5\r\n",  "5\x01\r\n",
        "5;a\rb\r\n", "\t5\r\n",  "5 5\r\n", "\r\r\n",  "5\r\r\n",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++)
        expect_chunked_fail(bad[i], 1000, LG_CHUNKED_ERROR);
    /* Sixteen hex digits are too many, even with leading zeros. */
    expect_chunked_fail("0000000000000005\r\nhello\r\n0\r\n\r\n", 1000, LG_CHUNKED_ERROR);
    expect_chunked_fail("10000000000000000\r\n", SIZE_MAX, LG_CHUNKED_ERROR);
    /* A NUL in the size. */
    const char nul_size[] = "5\0\r\nhello\r\n0\r\n\r\n";
    expect_chunked_fail_n(nul_size, sizeof(nul_size) - 1, 1000, LG_CHUNKED_ERROR);
}
END_TEST

START_TEST(test_chunked_missing_crlf_after_data)
{
    expect_chunked_fail("5\r\nhelloX\r\n0\r\n\r\n", 1000, LG_CHUNKED_ERROR);
    expect_chunked_fail("5\r\nhello0\r\n\r\n", 1000, LG_CHUNKED_ERROR);
    expect_chunked_fail("5\r\nhelloXYZ", 1000, LG_CHUNKED_ERROR);
    expect_chunked_fail("5\r\nhello\rX\n", 1000, LG_CHUNKED_ERROR);
    expect_chunked_fail("5\r\nhello \r\n0\r\n\r\n", 1000, LG_CHUNKED_ERROR);
    /* Too few data bytes before the line end: they are taken as data and
     * what follows is not a CRLF. */
    expect_chunked_fail("5\r\nhel\r\n0\r\n\r\n", 1000, LG_CHUNKED_ERROR);
}
END_TEST

START_TEST(test_chunked_oversized_lines)
{
    /* A size line with a long extension: up to 1024 bytes is fine. */
    char line[3000];
    memset(line, 0, sizeof(line));
    strcpy(line, "5;");
    memset(line + 2, 'e', 1020);
    strcat(line, "\r\nhello\r\n0\r\n\r\n");
    ck_assert_uint_eq(strlen(line) - 14, 1022);
    expect_chunked(line, 1000, "hello", "");
    /* Far beyond, with or without the line end yet. */
    memset(line, 0, sizeof(line));
    strcpy(line, "5;");
    memset(line + 2, 'e', 2000);
    expect_chunked_fail(line, 1000, LG_CHUNKED_ERROR);
    strcat(line, "\r\nhello\r\n0\r\n\r\n");
    expect_chunked_fail(line, 1000, LG_CHUNKED_ERROR);
    /* An endless trailer section is refused too. */
    size_t cap = 20000;
    char *t = malloc(cap);
    ck_assert_ptr_nonnull(t);
    size_t n = (size_t)snprintf(t, cap, "0\r\n");
    while (n < 10000)
        n += (size_t)snprintf(t + n, cap - n, "X-T: 0123456789\r\n");
    expect_chunked_fail_n(t, n, 1000, LG_CHUNKED_ERROR);
    memset(t + 3, 'x', 9000);
    expect_chunked_fail_n(t, 9003, 1000, LG_CHUNKED_ERROR);
    free(t);
}
END_TEST

START_TEST(test_chunked_incomplete)
{
    static const char *const partial[] = {"",
                                          "5",
                                          "5\r",
                                          "5\r\n",
                                          "5\r\nhel",
                                          "5\r\nhello",
                                          "5\r\nhello\r",
                                          "5\r\nhello\r\n",
                                          "5\r\nhello\r\n0",
                                          "5\r\nhello\r\n0\r\n",
                                          "5\r\nhello\r\n0\r\nX: 1\r\n",
                                          "5\r\nhello\r\n0\r\n\r"};
    for (size_t i = 0; i < LG_ARRAY_LEN(partial); i++) {
        struct chunked_run r;
        decode_whole(partial[i], strlen(partial[i]), 1000, &r);
        ck_assert_msg(r.res == LG_CHUNKED_MORE, "result %d for partial #%zu", (int)r.res, i);
        decode_bytewise(partial[i], strlen(partial[i]), 1000, &r);
        ck_assert_msg(r.res == LG_CHUNKED_MORE, "bytewise %d for partial #%zu", (int)r.res, i);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_head_end_complete);
    tcase_add_test(tc, test_head_end_incomplete);
    tcase_add_test(tc, test_head_end_split);
    tcase_add_test(tc, test_request_basic);
    tcase_add_test(tc, test_request_methods);
    tcase_add_test(tc, test_request_targets);
    tcase_add_test(tc, test_request_versions);
    tcase_add_test(tc, test_request_headers_trimmed);
    tcase_add_test(tc, test_request_content_length);
    tcase_add_test(tc, test_request_transfer_encoding);
    tcase_add_test(tc, test_request_malformed_lines);
    tcase_add_test(tc, test_request_max_headers);
    tcase_add_test(tc, test_request_host);
    tcase_add_test(tc, test_request_expect);
    tcase_add_test(tc, test_request_keep_alive);
    tcase_add_test(tc, test_request_reuse_resets);
    tcase_add_test(tc, test_response_status_line);
    tcase_add_test(tc, test_response_headers);
    tcase_add_test(tc, test_find);
    tcase_add_test(tc, test_hop_by_hop);
    tcase_add_test(tc, test_token_and_field_value);
    tcase_add_test(tc, test_reason);
    tcase_add_test(tc, test_date);
    tcase_add_test(tc, test_chunked_basic);
    tcase_add_test(tc, test_chunked_forms);
    tcase_add_test(tc, test_chunked_bytes_after_end);
    tcase_add_test(tc, test_chunked_split_data);
    tcase_add_test(tc, test_chunked_max);
    tcase_add_test(tc, test_chunked_malformed_size);
    tcase_add_test(tc, test_chunked_missing_crlf_after_data);
    tcase_add_test(tc, test_chunked_oversized_lines);
    tcase_add_test(tc, test_chunked_incomplete);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    libevent_global_shutdown();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
