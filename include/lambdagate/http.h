/* http.h - HTTP/1.1 message codec shared by the server and the Lambda client. */
#ifndef LG_HTTP_H
#define LG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lambdagate/lambdagate.h"

struct evbuffer;

/* A header as a pair of slices. Who owns the bytes depends on where the
 * header comes from and is said there. */
struct lg_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Headers in one message beyond this are refused (431 for a request). */
#define LG_HTTP_MAX_HEADERS 128

/* A parsed header block. Every pointer borrows from the block that was
 * parsed, which must outlive it. */
struct lg_http_head {
    /* request line */
    const char *method;
    size_t method_len;
    const char *target; /* request-target as sent (origin-form) */
    size_t target_len;
    /* status line */
    int status;
    int version_minor; /* HTTP/1.<minor>: 0 or 1 */

    struct lg_http_header headers[LG_HTTP_MAX_HEADERS];
    size_t nheaders;

    /* Derived from the headers. */
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* the connection may carry another message */
    bool expect_continue;   /* Expect: 100-continue */
};

/* Find the end of a header block (the empty line) in buf[0..len). Returns
 * the block's length including the empty line, or 0 when it is not complete.
 * *scanned carries progress between calls on a growing buffer (start at 0),
 * so bytes are examined once. Lines may end in CRLF or a bare LF. */
size_t lg_http_head_end(const char *buf, size_t len, size_t *scanned);

/* Parse a complete request header block. -1 on error with *status set to
 * the answer: 400 (malformed, bad Content-Length, both Content-Length and
 * Transfer-Encoding, missing or repeated Host in HTTP/1.1, obs-fold, NUL or
 * control bytes), 431 (more than LG_HTTP_MAX_HEADERS headers), 501 (a
 * transfer coding other than chunked), 505 (not HTTP/1.0 or 1.1), 417 (an
 * Expect other than 100-continue). */
int lg_http_parse_request_head(const char *block, size_t len, struct lg_http_head *h,
                               int *status) LG_WUR;
/* Parse a complete response header block (status line and headers). */
int lg_http_parse_response_head(const char *block, size_t len, struct lg_http_head *h) LG_WUR;

/* First header named name (case-insensitive) or NULL. */
const struct lg_http_header *lg_http_find(const struct lg_http_header *headers, size_t n,
                                          const char *name);

/* True for a header that must not be forwarded: Connection, Keep-Alive,
 * Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding,
 * Upgrade, and any name listed in a Connection header among headers. */
bool lg_http_is_hop_by_hop(const char *name, size_t name_len, const struct lg_http_header *headers,
                           size_t n);

/* RFC 9110 token (method, header name). */
bool lg_http_is_token(const char *s, size_t n);
/* A header value we are willing to send: no CR, LF, NUL or other control
 * byte but HTAB. */
bool lg_http_is_field_value(const char *s, size_t n);

/* Case-insensitive comparison of n bytes of ASCII. */
bool lg_http_ieq(const char *a, size_t alen, const char *b);

/* Reason phrase of a status code ("Not Found"); "Unknown" otherwise. */
const char *lg_http_reason(int status);

/* Incremental chunked-body decoder (RFC 9112 section 7.1). Zero-initialise.
 * Trailer fields are read and dropped. */
struct lg_http_chunked {
    int state;
    uint64_t chunk_left;
    size_t line_len;
    size_t trailer_len;
};
enum lg_http_chunked_result {
    LG_CHUNKED_MORE = 0,     /* need more input */
    LG_CHUNKED_DONE = 1,     /* the last chunk and trailers were read */
    LG_CHUNKED_ERROR = -1,   /* malformed */
    LG_CHUNKED_TOO_LONG = -2 /* the body exceeds max */
};
/* Move decoded bytes from in to out. *total counts payload bytes so far;
 * max bounds it. Bytes after the end of the body stay in in. */
enum lg_http_chunked_result lg_http_chunked_decode(struct lg_http_chunked *c, struct evbuffer *in,
                                                   struct evbuffer *out, size_t *total, size_t max);

/* Plain-TCP I/O shared by the server's and the Lambda client's
 * connections, which write and read around their bufferevents. */

/* Bytes per read: libevent's own read size. */
#define LG_HTTP_READ_MAX 4096
/* Send what the socket takes of data[0..len) now (EINTR retried). Returns
 * the bytes sent: fewer on EAGAIN or an error, which the bufferevent the
 * caller hands the rest to reports when it writes. */
size_t lg_http_send_now(int fd, const void *data, size_t len);
/* One read of up to LG_HTTP_READ_MAX bytes from fd onto the end of in, a
 * bufferevent's input, without the ioctl(FIONREAD) libevent's own read
 * makes first. The bufferevent keeps the input's end frozen but while it
 * reads itself, so it is unfrozen around the read, as libevent does.
 * Returns the bytes read, 0 at end of stream, or -1 with *err set (EAGAIN
 * when nothing is waiting; ENOMEM). */
ssize_t lg_http_read_into(struct evbuffer *in, int fd, int *err);

/* Write "Date: <IMF-fixdate>" value for now into out (30 bytes incl NUL). */
void lg_http_date(char out[30]);

#endif
