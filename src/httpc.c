/* httpc.c - HTTP/1.1 client connections (TCP or verified TLS) on an event loop. */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lambdagate/httpc.h"

void lg_httpc_url_free(struct lg_httpc_url *u)
{
    if (u == NULL)
        return;
    free(u->host);
    free(u->authority);
    free(u->path);
    memset(u, 0, sizeof(*u));
}

/* A host name: letters, digits, '-', '.', '_' (the last for local names);
 * a bracketed IPv6 literal is handled by the caller. */
static bool valid_hostname(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

int lg_httpc_parse_url(const char *url, struct lg_httpc_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        out->tls = true;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        snprintf(err, errlen, "URL must start with http:// or https://");
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    const char *rest = p + auth_len;
    if (memchr(p, '@', auth_len) != NULL) {
        snprintf(err, errlen, "URL must not carry user information");
        return -1;
    }
    if (strchr(url, '#') != NULL) {
        snprintf(err, errlen, "URL must not have a fragment");
        return -1;
    }
    for (const char *c = url; *c; c++) {
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            snprintf(err, errlen, "URL holds a space, control or non-ASCII character");
            return -1;
        }
    }
    const char *host = p;
    size_t host_len;
    const char *port_str = NULL;
    size_t port_len = 0;
    bool ipv6 = false;
    if (auth_len > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (close == NULL) {
            snprintf(err, errlen, "unterminated IPv6 address in URL");
            return -1;
        }
        host = p + 1;
        host_len = (size_t)(close - host);
        ipv6 = true;
        const char *after = close + 1;
        if (after < p + auth_len) {
            if (*after != ':') {
                snprintf(err, errlen, "unexpected text after IPv6 address in URL");
                return -1;
            }
            port_str = after + 1;
            port_len = (size_t)(p + auth_len - port_str);
        }
    } else {
        const char *colon = memchr(p, ':', auth_len);
        host_len = colon ? (size_t)(colon - p) : auth_len;
        if (colon) {
            port_str = colon + 1;
            port_len = (size_t)(p + auth_len - port_str);
        }
    }
    char hostbuf[256];
    if (host_len == 0 || host_len >= sizeof(hostbuf)) {
        snprintf(err, errlen, "URL has no valid host");
        return -1;
    }
    memcpy(hostbuf, host, host_len);
    hostbuf[host_len] = '\0';
    if (ipv6) {
        unsigned char a6[16];
        if (inet_pton(AF_INET6, hostbuf, a6) != 1) {
            snprintf(err, errlen, "invalid IPv6 address in URL");
            return -1;
        }
    } else if (!valid_hostname(hostbuf, host_len)) {
        snprintf(err, errlen, "invalid host name in URL");
        return -1;
    }
    unsigned port = out->tls ? 443 : 80;
    bool default_port = true;
    if (port_str) {
        if (port_len == 0 || port_len > 5) {
            snprintf(err, errlen, "invalid port in URL");
            return -1;
        }
        port = 0;
        for (size_t i = 0; i < port_len; i++) {
            if (port_str[i] < '0' || port_str[i] > '9') {
                snprintf(err, errlen, "invalid port in URL");
                return -1;
            }
            port = port * 10 + (unsigned)(port_str[i] - '0');
        }
        if (port == 0 || port > 65535) {
            snprintf(err, errlen, "port out of range in URL");
            return -1;
        }
        default_port = port == (out->tls ? 443u : 80u);
    }
    out->port = (uint16_t)port;
    out->host = strndup(hostbuf, host_len);
    char authority[300];
    if (default_port)
        snprintf(authority, sizeof(authority), ipv6 ? "[%s]" : "%s", hostbuf);
    else
        snprintf(authority, sizeof(authority), ipv6 ? "[%s]:%u" : "%s:%u", hostbuf, port);
    out->authority = strdup(authority);
    out->path = *rest ? (*rest == '?' ? NULL : strdup(rest)) : strdup("/");
    if (out->path == NULL && *rest == '?') {
        size_t n = strlen(rest);
        out->path = malloc(n + 2);
        if (out->path) {
            out->path[0] = '/';
            memcpy(out->path + 1, rest, n + 1);
        }
    }
    if (out->host == NULL || out->authority == NULL || out->path == NULL) {
        lg_httpc_url_free(out);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Client connections                                                      */
/* ---------------------------------------------------------------------- */

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "lambdagate/tls.h"

/* Largest response header block accepted from an upstream. */
#define HTTPC_MAX_HEAD 65536
/* An idle keep-alive connection is closed after this long: upstreams
 * (Lambda's front ends among them) close idle connections themselves, and
 * reusing one that is about to close races with that close. */
#define HTTPC_IDLE_MS 30000

enum conn_state {
    CONN_FRESH = 0, /* never connected */
    CONN_BUSY,      /* a request in flight */
    CONN_IDLE,      /* connected, waiting for a request */
    CONN_BROKEN,    /* unusable; waits to be freed */
    CONN_FREEING,   /* free requested; memory released by a zero timer */
};

enum read_state {
    READ_HEAD = 0,
    READ_BODY_LENGTH,
    READ_BODY_CHUNKED,
    READ_BODY_EOF,
};

struct lg_httpc_conn {
    struct event_base *base;
    struct evdns_base *dns;
    bool tls;
    char *host;
    uint16_t port;
    SSL_CTX *ssl_ctx;

    struct bufferevent *bev;
    /* Plain TCP once connected: answers are read with this event rather
     * than by the bufferevent (see raw_read_cb); NULL otherwise. */
    struct event *rev;
    struct event *timer; /* request deadline, idle limit, or immediate failure */
    enum conn_state state;
    bool connected;
    uint64_t served;

    /* Connecting: our own resolution, so that every address is tried in
     * turn and a lookup can be cancelled when the connection goes away. */
    struct evdns_getaddrinfo_request *dns_req;
    bool resolving;
    bool release_after_dns; /* freed while resolving: the DNS callback releases */
    struct evutil_addrinfo *addrs;
    struct evutil_addrinfo *next_addr;
    char connect_error[LG_ERR_LEN];
    struct evbuffer *pending;  /* the request, until the connection is up */
    size_t request_len;        /* bytes of the request in flight */
    size_t written_direct;     /* of those, written to the socket by us */
    struct timeval idle_since; /* loop time when it last became idle */

    lg_httpc_done_cb done;
    void *done_arg;
    lg_httpc_closed_cb closed;
    void *closed_arg;

    /* the request in flight */
    bool is_head;
    size_t max_body;
    bool got_bytes;                    /* any byte of the answer arrived */
    enum lg_httpc_error pending_error; /* set before an immediate failure */
    const char *pending_text;
    char error_text[LG_ERR_LEN];

    /* the answer being read */
    enum read_state rstate;
    size_t scanned;
    char *head_block;
    struct lg_http_head *head;
    int64_t body_left;
    struct lg_http_chunked chunked;
    size_t body_total;
    struct evbuffer *body;
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void connect_next(struct lg_httpc_conn *c);
static int send_request(struct lg_httpc_conn *c, struct evbuffer *buf);
static void conn_break(struct lg_httpc_conn *c, bool notify);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);

struct lg_httpc_conn *lg_httpc_conn_new(struct event_base *base, struct evdns_base *dns,
                                        const struct lg_httpc_target *target)
{
    struct lg_httpc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->dns = dns;
    c->tls = target->tls;
    c->port = target->port;
    c->ssl_ctx = target->ssl_ctx;
    c->host = strdup(target->host);
    c->head = malloc(sizeof(*c->head));
    c->body = evbuffer_new();
    c->pending = evbuffer_new();
    c->timer = evtimer_new(base, conn_timer_cb, c);
    if (c->host == NULL || c->head == NULL || c->body == NULL || c->pending == NULL ||
        c->timer == NULL) {
        lg_httpc_conn_free(c);
        return NULL;
    }
    if (c->tls)
        SSL_CTX_up_ref(c->ssl_ctx);
    else
        c->ssl_ctx = NULL;
    return c;
}

static void conn_release(evutil_socket_t fd, short what, void *arg);

/* Release on a zero timer: this may run inside one of c's own callbacks,
 * which still touch c (and its bufferevent) after we return. */
static void release_soon(struct lg_httpc_conn *c)
{
    struct timeval zero = {0, 0};
    if (event_base_once(c->base, -1, EV_TIMEOUT, conn_release, c, &zero) != 0)
        conn_release(-1, 0, c); /* no memory for the timer: nothing better to do */
}

static void conn_release(evutil_socket_t fd, short what, void *arg)
{
    struct lg_httpc_conn *c = arg;
    if (c->rev)
        event_free(c->rev);
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->timer)
        event_free(c->timer);
    if (c->body)
        evbuffer_free(c->body);
    if (c->pending)
        evbuffer_free(c->pending);
    if (c->addrs)
        evutil_freeaddrinfo(c->addrs);
    if (c->ssl_ctx)
        SSL_CTX_free(c->ssl_ctx);
    free(c->head_block);
    free(c->head);
    free(c->host);
    free(c);
}

void lg_httpc_conn_free(struct lg_httpc_conn *c)
{
    if (c == NULL || c->state == CONN_FREEING)
        return;
    c->state = CONN_FREEING;
    if (c->bev) {
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    }
    if (c->rev)
        event_del(c->rev);
    if (c->timer)
        event_del(c->timer);
    if (c->resolving) {
        /* The lookup's callback still has c: it runs (with a cancel
         * result) after this, and releases c then. */
        c->release_after_dns = true;
        evdns_getaddrinfo_cancel(c->dns_req);
        return;
    }
    release_soon(c);
}

void lg_httpc_conn_set_closed_cb(struct lg_httpc_conn *c, lg_httpc_closed_cb cb, void *arg)
{
    c->closed = cb;
    c->closed_arg = arg;
}

bool lg_httpc_conn_idle(const struct lg_httpc_conn *c)
{
    return c->state == CONN_IDLE || c->state == CONN_FRESH;
}

bool lg_httpc_conn_usable(struct lg_httpc_conn *c)
{
    if (c->state == CONN_FRESH)
        return true;
    if (c->state != CONN_IDLE)
        return false;
    /* The peer may have closed (FIN, or a TLS alert) while the loop has
     * not read it yet: look at the socket before sending on it, since a
     * request sent into a closing connection is lost and cannot safely be
     * sent again. Servers close idle connections after seconds, not
     * microseconds: one that went idle in this loop turn or the last few
     * hundred ms is taken as it is, which keeps a syscall off the busy path. */
    struct timeval now;
    event_base_gettimeofday_cached(c->base, &now);
    int64_t idle_ms = ((int64_t)now.tv_sec - c->idle_since.tv_sec) * 1000 +
                      ((int64_t)now.tv_usec - c->idle_since.tv_usec) / 1000;
    if (idle_ms < 200)
        return true;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;
    conn_break(c, false);
    return false;
}

static void reset_answer(struct lg_httpc_conn *c)
{
    c->rstate = READ_HEAD;
    c->scanned = 0;
    free(c->head_block);
    c->head_block = NULL;
    c->body_left = 0;
    memset(&c->chunked, 0, sizeof(c->chunked));
    c->body_total = 0;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->got_bytes = false;
}

/* Mark the connection unusable and tell its owner when it is idle (a busy
 * connection's failure reaches the owner through the done callback). */
static void conn_break(struct lg_httpc_conn *c, bool notify)
{
    if (c->state == CONN_FREEING)
        return;
    c->state = CONN_BROKEN;
    if (c->bev) {
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    }
    if (c->rev)
        event_del(c->rev);
    event_del(c->timer);
    if (notify && c->closed)
        c->closed(c, c->closed_arg);
}

/* Complete the request in flight with an answer or an error. */
static void conn_finish(struct lg_httpc_conn *c, enum lg_httpc_error error, const char *text,
                        bool retryable)
{
    lg_httpc_done_cb done = c->done;
    void *arg = c->done_arg;
    c->done = NULL;
    event_del(c->timer);
    struct lg_httpc_response resp = {
        .error = error,
        .error_text = error == LG_HTTPC_OK ? NULL : text,
        .head = error == LG_HTTPC_OK ? c->head : NULL,
        .body = c->body,
        .retryable = retryable,
    };
    if (error == LG_HTTPC_OK) {
        c->served++;
        bool reusable = c->head->keep_alive && c->rstate != READ_BODY_EOF &&
                        evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
        if (reusable) {
            c->state = CONN_IDLE;
            event_base_gettimeofday_cached(c->base, &c->idle_since);
            struct timeval idle = {HTTPC_IDLE_MS / 1000, (HTTPC_IDLE_MS % 1000) * 1000};
            event_add(c->timer, &idle);
        } else {
            conn_break(c, false);
        }
    } else {
        conn_break(c, false);
    }
    if (done)
        done(c, &resp, arg);
    if (c->state != CONN_FREEING) {
        free(c->head_block);
        c->head_block = NULL;
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
    }
}

static void describe_tls_failure(struct lg_httpc_conn *c, char *out, size_t outlen)
{
    SSL *ssl = c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(out, outlen, "TLS verification of %s failed: %s", c->host,
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    unsigned long e = c->bev ? bufferevent_get_openssl_error(c->bev) : 0;
    /* libevent queues SSL_get_error()'s SSL_ERROR_SYSCALL (5, library 0)
     * as if it were an OpenSSL error when the socket failed (a refused
     * connect): that is not a TLS error, the caller reports errno. */
    while (e != 0 && ERR_GET_LIB(e) == 0)
        e = bufferevent_get_openssl_error(c->bev);
    if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(out, outlen, "TLS error with %s: %s", c->host, buf);
        while (bufferevent_get_openssl_error(c->bev) != 0) {
        }
        ERR_clear_error();
        return;
    }
    out[0] = '\0';
}

/* Read what the server sent into the bufferevent's input, as the
 * bufferevent would, but without asking the kernel first how much is
 * waiting (libevent's evbuffer_read makes an ioctl(FIONREAD) before each
 * read: a system call per answer). Then the usual callbacks. */
static void raw_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_httpc_conn *c = arg;
    if (c->bev == NULL || c->state == CONN_FREEING || c->state == CONN_BROKEN)
        return;
    int read_errno;
    ssize_t n = lg_http_read_into(bufferevent_get_input(c->bev), fd, &read_errno);
    if (n > 0) {
        conn_read_cb(c->bev, c);
    } else if (n == 0) {
        conn_event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_EOF, c);
    } else if (read_errno != EAGAIN && read_errno != EWOULDBLOCK) {
        errno = read_errno; /* for the error text */
        conn_event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
    }
}

/* Connected on plain TCP: reading moves from the bufferevent to rev
 * (left with the bufferevent if there is no memory for the event). */
static void raw_read_start(struct lg_httpc_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    c->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, raw_read_cb, c);
    if (c->rev == NULL)
        return;
    bufferevent_disable(c->bev, EV_READ);
    event_add(c->rev, NULL);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct lg_httpc_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        if (!c->tls)
            raw_read_start(c);
        if (c->state == CONN_BUSY && send_request(c, c->pending) != 0)
            conn_finish(c, LG_HTTPC_IO, "cannot queue the request", false);
        return;
    }
    if (c->state == CONN_IDLE) {
        conn_break(c, true); /* the server closed an idle connection */
        return;
    }
    if (c->state != CONN_BUSY)
        return;
    /* Reading until close is how a response without length ends. */
    if ((what & BEV_EVENT_EOF) && c->rstate == READ_BODY_EOF && c->got_bytes) {
        conn_finish(c, LG_HTTPC_OK, NULL, false);
        return;
    }
    char text[LG_ERR_LEN] = "";
    if (c->tls)
        describe_tls_failure(c, text, sizeof(text));
    int err = EVUTIL_SOCKET_ERROR();
    if (!c->connected) {
        if (text[0] == '\0')
            snprintf(text, sizeof(text), "cannot connect to %s:%u: %s", c->host, c->port,
                     err ? evutil_socket_error_to_string(err) : "connection closed");
        snprintf(c->connect_error, sizeof(c->connect_error), "%s", text);
        connect_next(c); /* the next address, or the failure */
        return;
    }
    if (text[0] == '\0')
        snprintf(text, sizeof(text), "connection to %s:%u %s", c->host, c->port,
                 (what & BEV_EVENT_EOF) ? "closed before the answer was complete"
                                        : "failed while waiting for the answer");
    snprintf(c->error_text, sizeof(c->error_text), "%s", text);
    /* Safe to send again only when not one byte of the request left us
     * (the rule of Go's http.Transport for requests that are not
     * idempotent): a request the server may have received, even without
     * answering, could run twice. */
    bool retryable = c->served > 0 && !c->got_bytes && c->written_direct == 0 &&
                     evbuffer_get_length(bufferevent_get_output(bev)) >= c->request_len;
    conn_finish(c, LG_HTTPC_IO, c->error_text, retryable);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_httpc_conn *c = arg;
    if (c->state == CONN_IDLE) {
        conn_break(c, true);
        return;
    }
    if (c->state != CONN_BUSY)
        return;
    if (c->pending_error != LG_HTTPC_OK) {
        enum lg_httpc_error e = c->pending_error;
        c->pending_error = LG_HTTPC_OK;
        conn_finish(c, e, c->pending_text, false);
        return;
    }
    snprintf(c->error_text, sizeof(c->error_text), "no answer from %s:%u in time", c->host,
             c->port);
    conn_finish(c, LG_HTTPC_TIMEOUT, c->error_text, false);
}

/* Try to read the answer's header block. 1 = parsed, 0 = need more, -1 =
 * failed (finished). */
static int read_head(struct lg_httpc_conn *c, struct evbuffer *in)
{
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        size_t look = avail < HTTPC_MAX_HEAD + 4 ? avail : HTTPC_MAX_HEAD + 4;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        size_t end = lg_http_head_end(data, look, &c->scanned);
        if (end == 0) {
            if (avail > HTTPC_MAX_HEAD) {
                conn_finish(c, LG_HTTPC_PROTOCOL, "answer header block too large", false);
                return -1;
            }
            return 0;
        }
        free(c->head_block);
        c->head_block = malloc(end);
        if (c->head_block == NULL) {
            conn_finish(c, LG_HTTPC_PROTOCOL, "out of memory", false);
            return -1;
        }
        evbuffer_remove(in, c->head_block, end);
        c->scanned = 0;
        if (lg_http_parse_response_head(c->head_block, end, c->head) != 0) {
            conn_finish(c, LG_HTTPC_PROTOCOL, "malformed answer header", false);
            return -1;
        }
        if (c->head->status >= 100 && c->head->status < 200)
            continue; /* interim answer (100 Continue): the real one follows */
        return 1;
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct lg_httpc_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->state != CONN_BUSY) {
        /* Bytes nobody asked for: the connection can no longer be trusted. */
        evbuffer_drain(in, evbuffer_get_length(in));
        conn_break(c, c->state == CONN_IDLE);
        return;
    }
    if (evbuffer_get_length(in) > 0)
        c->got_bytes = true;
    if (c->rstate == READ_HEAD) {
        int rc = read_head(c, in);
        if (rc <= 0)
            return;
        int st = c->head->status;
        if (c->is_head || st == 204 || st == 304) {
            conn_finish(c, LG_HTTPC_OK, NULL, false);
            return;
        }
        if (c->head->chunked) {
            c->rstate = READ_BODY_CHUNKED;
        } else if (c->head->content_length >= 0) {
            if ((uint64_t)c->head->content_length > c->max_body) {
                conn_finish(c, LG_HTTPC_PROTOCOL, "answer body too large", false);
                return;
            }
            c->rstate = READ_BODY_LENGTH;
            c->body_left = c->head->content_length;
        } else {
            c->rstate = READ_BODY_EOF;
        }
    }
    switch (c->rstate) {
    case READ_BODY_LENGTH: {
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < (size_t)c->body_left ? avail : (size_t)c->body_left;
        if (take > 0)
            evbuffer_remove_buffer(in, c->body, take);
        c->body_left -= (int64_t)take;
        if (c->body_left == 0)
            conn_finish(c, LG_HTTPC_OK, NULL, false);
        break;
    }
    case READ_BODY_CHUNKED: {
        enum lg_http_chunked_result r =
            lg_http_chunked_decode(&c->chunked, in, c->body, &c->body_total, c->max_body);
        if (r == LG_CHUNKED_DONE)
            conn_finish(c, LG_HTTPC_OK, NULL, false);
        else if (r == LG_CHUNKED_ERROR)
            conn_finish(c, LG_HTTPC_PROTOCOL, "malformed chunked answer", false);
        else if (r == LG_CHUNKED_TOO_LONG)
            conn_finish(c, LG_HTTPC_PROTOCOL, "answer body too large", false);
        break;
    }
    case READ_BODY_EOF: {
        size_t avail = evbuffer_get_length(in);
        if (evbuffer_get_length(c->body) + avail > c->max_body) {
            conn_finish(c, LG_HTTPC_PROTOCOL, "answer body too large", false);
            return;
        }
        evbuffer_remove_buffer(in, c->body, avail);
        break;
    }
    default:
        break;
    }
}

/* Arrange for the request in flight to fail from the event loop (never
 * inside lg_httpc_conn_send, whose caller does not expect a callback). */
static void fail_soon(struct lg_httpc_conn *c, enum lg_httpc_error e, const char *text)
{
    snprintf(c->error_text, sizeof(c->error_text), "%s", text);
    c->pending_error = e;
    c->pending_text = c->error_text;
    event_del(c->timer);
    event_active(c->timer, EV_TIMEOUT, 1);
}

/* Queue the request (emptying buf): on plain TCP with nothing queued it goes
 * to the socket at once (one writev, no change to the epoll set); the rest
 * through the bufferevent. -1 when it cannot be queued. */
static int send_request(struct lg_httpc_conn *c, struct evbuffer *buf)
{
    if (!c->tls && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        while (evbuffer_get_length(buf) > 0) {
            int n = evbuffer_write(buf, fd);
            if (n <= 0)
                break; /* EAGAIN, or an error the bufferevent will report */
            c->written_direct += (size_t)n;
        }
    }
    if (evbuffer_get_length(buf) > 0 && bufferevent_write_buffer(c->bev, buf) != 0)
        return -1;
    return 0;
}

/* Connect to the next resolved address (a new bufferevent, and a new TLS
 * session, each time), or fail the request when none is left. */
static void connect_next(struct lg_httpc_conn *c)
{
    while (c->next_addr) {
        struct evutil_addrinfo *ai = c->next_addr;
        c->next_addr = ai->ai_next;
        if (c->rev) {
            event_free(c->rev); /* only made once connected: not running now */
            c->rev = NULL;
        }
        if (c->bev) {
            bufferevent_free(c->bev); /* safe inside its callbacks: refcounted */
            c->bev = NULL;
        }
        c->connected = false;
        if (c->tls) {
            char err[LG_ERR_LEN];
            SSL *ssl = lg_tls_client_ssl_new(c->ssl_ctx, c->host, err, sizeof(err));
            if (ssl == NULL) {
                fail_soon(c, LG_HTTPC_CONNECT, err);
                return;
            }
            /* On failure libevent frees ssl itself (BEV_OPT_CLOSE_ON_FREE). */
            c->bev =
                bufferevent_openssl_socket_new(c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
            if (c->bev)
                bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        } else {
            c->bev = bufferevent_socket_new(c->base, -1,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        }
        if (c->bev == NULL) {
            fail_soon(c, LG_HTTPC_CONNECT, "cannot create a connection");
            return;
        }
        bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        if (bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen) == 0) {
            /* Requests and answers are single writes: no Nagle delay. */
            int one = 1;
            setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            return; /* CONNECTED or an error event follows */
        }
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(c->connect_error, sizeof(c->connect_error), "cannot connect to %s:%u: %s", c->host,
                 c->port, evutil_socket_error_to_string(err));
    }
    fail_soon(c, LG_HTTPC_CONNECT,
              c->connect_error[0] ? c->connect_error : "no address to connect to");
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lg_httpc_conn *c = arg;
    c->resolving = false;
    c->dns_req = NULL;
    if (c->state == CONN_FREEING) {
        if (res)
            evutil_freeaddrinfo(res);
        if (c->release_after_dns)
            release_soon(c);
        return;
    }
    if (result != 0 || res == NULL) {
        char text[LG_ERR_LEN];
        snprintf(text, sizeof(text), "cannot resolve %s: %s", c->host,
                 evutil_gai_strerror(result ? result : EVUTIL_EAI_NONAME));
        if (res)
            evutil_freeaddrinfo(res);
        fail_soon(c, LG_HTTPC_CONNECT, text);
        return;
    }
    if (c->addrs)
        evutil_freeaddrinfo(c->addrs);
    c->addrs = res;
    c->next_addr = res;
    connect_next(c);
}

/* Bytes straight to the socket when nothing is queued (plain TCP), the
 * rest copied into the bufferevent. */
static int send_request_bytes(struct lg_httpc_conn *c, const char *data, size_t len)
{
    if (!c->tls && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        size_t sent = lg_http_send_now(bufferevent_getfd(c->bev), data, len);
        c->written_direct += sent;
        data += sent;
        len -= sent;
    }
    if (len > 0 && bufferevent_write(c->bev, data, len) != 0)
        return -1;
    return 0;
}

static int conn_send(struct lg_httpc_conn *c, struct evbuffer *request, const char *data,
                     size_t len, bool is_head, int64_t timeout_ms, size_t max_body,
                     lg_httpc_done_cb done, void *arg);

int lg_httpc_conn_send(struct lg_httpc_conn *c, struct evbuffer *request, bool is_head,
                       int64_t timeout_ms, size_t max_body, lg_httpc_done_cb done, void *arg)
{
    return conn_send(c, request, NULL, 0, is_head, timeout_ms, max_body, done, arg);
}

int lg_httpc_conn_send_bytes(struct lg_httpc_conn *c, const void *data, size_t len, bool is_head,
                             int64_t timeout_ms, size_t max_body, lg_httpc_done_cb done, void *arg)
{
    return conn_send(c, NULL, data, len, is_head, timeout_ms, max_body, done, arg);
}

/* One request, given as an evbuffer (request) or as bytes (data, len). */
static int conn_send(struct lg_httpc_conn *c, struct evbuffer *request, const char *data,
                     size_t len, bool is_head, int64_t timeout_ms, size_t max_body,
                     lg_httpc_done_cb done, void *arg)
{
    if (c->state != CONN_FRESH && c->state != CONN_IDLE)
        return -1;
    bool fresh = c->state == CONN_FRESH;
    event_del(c->timer);
    reset_answer(c);
    c->state = CONN_BUSY;
    c->done = done;
    c->done_arg = arg;
    c->is_head = is_head;
    c->max_body = max_body;
    c->pending_error = LG_HTTPC_OK;

    c->request_len = request ? evbuffer_get_length(request) : len;
    c->written_direct = 0;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    event_add(c->timer, &tv);
    if (fresh) {
        /* Held until connected: a failed address is retried on the next. */
        evbuffer_drain(c->pending, evbuffer_get_length(c->pending));
        if ((request ? evbuffer_add_buffer(c->pending, request)
                     : evbuffer_add(c->pending, data, len)) != 0) {
            fail_soon(c, LG_HTTPC_IO, "cannot queue the request");
            return 0;
        }
        c->connect_error[0] = '\0';
        char port[8];
        snprintf(port, sizeof(port), "%u", c->port);
        struct evutil_addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_protocol = IPPROTO_TCP;
        hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
        if (c->dns == NULL) {
            /* No resolver (tests with address literals): the system's
             * getaddrinfo, which does not block for a numeric host. */
            struct evutil_addrinfo *res = NULL;
            int rc = evutil_getaddrinfo(c->host, port, &hints, &res);
            dns_cb(rc, res, c);
            return 0;
        }
        c->resolving = true;
        /* A numeric host or a cached answer calls dns_cb before this
         * returns (then no request handle is kept). */
        struct evdns_getaddrinfo_request *r =
            evdns_getaddrinfo(c->dns, c->host, port, &hints, dns_cb, c);
        if (c->resolving)
            c->dns_req = r;
        return 0;
    }
    if ((request ? send_request(c, request) : send_request_bytes(c, data, len)) != 0) {
        fail_soon(c, LG_HTTPC_IO, "cannot queue the request");
        return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* One-shot fetches                                                        */
/* ---------------------------------------------------------------------- */

struct lg_httpc_fetch {
    struct lg_httpc_conn *conn;
    lg_httpc_fetch_cb cb;
    void *arg;
    bool in_callback; /* a cancel now only marks it; fetch_done frees */
};

static void fetch_done(struct lg_httpc_conn *conn, const struct lg_httpc_response *resp, void *arg)
{
    struct lg_httpc_fetch *f = arg;
    const char *body = "";
    size_t len = 0;
    if (resp->error == LG_HTTPC_OK) {
        len = evbuffer_get_length(resp->body);
        if (evbuffer_add(resp->body, "", 1) == 0)
            body = (const char *)evbuffer_pullup(resp->body, -1);
        else
            len = 0;
    }
    f->in_callback = true;
    f->cb(resp, body, len, f->arg);
    lg_httpc_conn_free(f->conn);
    free(f);
}

struct lg_httpc_fetch *lg_httpc_fetch(struct event_base *base, struct evdns_base *dns,
                                      const struct lg_httpc_fetch_request *req,
                                      lg_httpc_fetch_cb cb, void *arg, char *err, size_t errlen)
{
    /* Header text goes on the wire as given: refuse anything that could
     * end a line and start another. */
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct lg_http_header *h = &req->headers[i];
        if (!lg_http_is_token(h->name, h->name_len) ||
            !lg_http_is_field_value(h->value, h->value_len)) {
            snprintf(err, errlen, "invalid request header");
            return NULL;
        }
    }
    struct lg_httpc_url url;
    if (lg_httpc_parse_url(req->url, &url, err, errlen) != 0)
        return NULL;
    if (url.tls && req->ssl_ctx == NULL) {
        snprintf(err, errlen, "no TLS context for %s", url.host);
        lg_httpc_url_free(&url);
        return NULL;
    }
    struct lg_httpc_target target = {url.tls, url.host, url.port, req->ssl_ctx};
    struct lg_httpc_fetch *f = calloc(1, sizeof(*f));
    struct evbuffer *msg = evbuffer_new();
    if (f)
        f->conn = lg_httpc_conn_new(base, dns, &target);
    if (f == NULL || msg == NULL || f->conn == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    f->cb = cb;
    f->arg = arg;
    evbuffer_add_printf(msg,
                        "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lambdagate/" PACKAGE_VERSION
                        "\r\nConnection: close\r\n",
                        req->method, url.path, url.authority);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct lg_http_header *h = &req->headers[i];
        evbuffer_add_printf(msg, "%.*s: %.*s\r\n", (int)h->name_len, h->name, (int)h->value_len,
                            h->value);
    }
    if (req->body_len > 0 || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0)
        evbuffer_add_printf(msg, "Content-Length: %zu\r\n", req->body_len);
    evbuffer_add(msg, "\r\n", 2);
    if (req->body_len > 0)
        evbuffer_add(msg, req->body, req->body_len);
    if (lg_httpc_conn_send(f->conn, msg, strcmp(req->method, "HEAD") == 0, req->timeout_ms,
                           req->max_body, fetch_done, f) != 0) {
        snprintf(err, errlen, "cannot send the request");
        goto fail;
    }
    evbuffer_free(msg);
    lg_httpc_url_free(&url);
    return f;
fail:
    if (msg)
        evbuffer_free(msg);
    if (f) {
        lg_httpc_conn_free(f->conn);
        free(f);
    }
    lg_httpc_url_free(&url);
    return NULL;
}

void lg_httpc_fetch_cancel(struct lg_httpc_fetch *f)
{
    if (f == NULL || f->in_callback)
        return; /* inside its own callback: fetch_done frees it afterwards */
    lg_httpc_conn_free(f->conn);
    free(f);
}
