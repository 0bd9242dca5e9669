/* httpc.h - HTTP/1.1 client connections (TCP or verified TLS) on an event loop. */
#ifndef LG_HTTPC_H
#define LG_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "lambdagate/http.h"
#include "lambdagate/lambdagate.h"

struct event_base;
struct evdns_base;
struct evbuffer;

/* A parsed absolute URL. All strings owned; free with lg_httpc_url_free(). */
struct lg_httpc_url {
    bool tls;
    char *host; /* without IPv6 brackets */
    uint16_t port;
    char *authority; /* Host header value: host or host:port when not default; IPv6 bracketed */
    char *path;      /* path and query, "/" when empty */
};
/* Parse "http[s]://host[:port][/path][?query]" (no user info, no fragment).
 * -1 with err set otherwise. */
int lg_httpc_parse_url(const char *url, struct lg_httpc_url *out, char *err, size_t errlen) LG_WUR;
void lg_httpc_url_free(struct lg_httpc_url *u);

/* Where a connection goes. Borrowed for the life of the connection. */
struct lg_httpc_target {
    bool tls;
    const char *host;
    uint16_t port;
    SSL_CTX *ssl_ctx; /* used when tls; verification per lg_tls_client_ssl_new() */
};

enum lg_httpc_error {
    LG_HTTPC_OK = 0,
    LG_HTTPC_CONNECT,  /* DNS, TCP connect or TLS handshake/verification failed */
    LG_HTTPC_IO,       /* connection broke while sending or receiving */
    LG_HTTPC_PROTOCOL, /* unparsable or oversized answer */
    LG_HTTPC_TIMEOUT,  /* the deadline passed */
};

/* An answer. head and body are valid during the callback only. */
struct lg_httpc_response {
    enum lg_httpc_error error;
    const char *error_text; /* NULL when error is LG_HTTPC_OK */
    const struct lg_http_head *head;
    struct evbuffer *body; /* decoded (chunked removed) */
    /* True when the connection had served before, broke, and not one byte
     * of this request had been written to it: the request cannot have
     * reached the server, so sending it again on a new connection is safe. */
    bool retryable;
};

struct lg_httpc_conn;
typedef void (*lg_httpc_done_cb)(struct lg_httpc_conn *conn, const struct lg_httpc_response *resp,
                                 void *arg);

/* A connection, not yet connected (it connects on the first request,
 * trying each address of the host in turn). dns may be NULL only for
 * address literals (the system resolver would block). Caller frees with
 * lg_httpc_conn_free(). */
struct lg_httpc_conn *lg_httpc_conn_new(struct event_base *base, struct evdns_base *dns,
                                        const struct lg_httpc_target *target);
/* Send one request: request holds the whole message (head and body) and is
 * drained into the connection. is_head: the answer has no body. The
 * deadline covers connect, send and the whole answer. done is called
 * exactly once, later (never inside this call), unless the connection is
 * freed first. max_body bounds the answer's body. -1 when the connection is
 * busy or broken. */
int lg_httpc_conn_send(struct lg_httpc_conn *conn, struct evbuffer *request, bool is_head,
                       int64_t timeout_ms, size_t max_body, lg_httpc_done_cb done,
                       void *arg) LG_WUR;
/* The same with the message as len bytes at data (copied only when the
 * socket cannot take them at once). */
int lg_httpc_conn_send_bytes(struct lg_httpc_conn *conn, const void *data, size_t len, bool is_head,
                             int64_t timeout_ms, size_t max_body, lg_httpc_done_cb done,
                             void *arg) LG_WUR;
/* True when idle and able to carry another request. */
bool lg_httpc_conn_idle(const struct lg_httpc_conn *conn);
/* True when the connection can carry a request now: new, or idle with its
 * socket still open (checked without reading). A connection found closed
 * is marked broken (its closed callback is not called: the caller drops
 * it). */
bool lg_httpc_conn_usable(struct lg_httpc_conn *conn);
/* Free; safe inside its own callback (the release is deferred). Accepts
 * NULL. A request in flight is abandoned without a callback. */
void lg_httpc_conn_free(struct lg_httpc_conn *conn);
/* Called when an idle connection is closed by the peer or fails, so that
 * an owner (a pool) can drop it. */
typedef void (*lg_httpc_closed_cb)(struct lg_httpc_conn *conn, void *arg);
void lg_httpc_conn_set_closed_cb(struct lg_httpc_conn *conn, lg_httpc_closed_cb cb, void *arg);

/* One-shot request on a new connection, closed afterwards: for credential
 * endpoints and key sets. */
struct lg_httpc_fetch_request {
    const char *method;
    const char *url;
    const struct lg_http_header
        *headers; /* extra headers; Host, Content-Length and Connection are added */
    size_t nheaders;
    const void *body;
    size_t body_len;
    int64_t timeout_ms;
    size_t max_body;
    SSL_CTX *ssl_ctx; /* for https URLs */
};
struct lg_httpc_fetch;
/* status 0 means no answer (error set). body is NUL-terminated. */
typedef void (*lg_httpc_fetch_cb)(const struct lg_httpc_response *resp, const char *body,
                                  size_t body_len, void *arg);
/* NULL with err set for a bad URL or a header name or value that is not
 * valid on the wire. cb runs exactly once, later, unless the fetch is
 * cancelled. */
struct lg_httpc_fetch *lg_httpc_fetch(struct event_base *base, struct evdns_base *dns,
                                      const struct lg_httpc_fetch_request *req,
                                      lg_httpc_fetch_cb cb, void *arg, char *err, size_t errlen);
/* Cancel: cb will not run. Accepts NULL, and a fetch inside its own
 * callback (then it is freed when the callback returns). Its connection is
 * released from the event loop: turn the loop once more before freeing the
 * base. */
void lg_httpc_fetch_cancel(struct lg_httpc_fetch *f);

#endif
