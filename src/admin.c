/* admin.c - the admin listener: GET /healthz and GET /metrics on the control loop, via evhttp.
 *
 * evhttp is enough here: the admin listener is plain HTTP, answers a few
 * small GETs from a health checker and a Prometheus scraper, and runs on
 * the control loop, so none of the worker machinery (TLS contexts, request
 * objects, Lambda) is involved.
 *
 * evhttp answers a method outside evhttp_set_allowed_methods() with 501,
 * not 405, and without Allow; so every method it knows is let through and
 * the handler answers 405 itself. Methods evhttp does not know at all
 * still get its 501, which is what RFC 9110 asks for an unrecognised
 * method. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "lambdagate/admin.h"
#include "lambdagate/buf.h"
#include "lambdagate/log.h"
#include "lambdagate/metrics.h"
#include "lambdagate/redis.h"

#define ADMIN_BACKLOG          64
#define ADMIN_MAX_HEADER_BYTES 8192
#define ADMIN_TIMEOUT_S        5
/* A scrape's text: thousands of label sets at most (see metrics.c), a few
 * hundred bytes each. Past this the scrape fails with 500 rather than
 * taking memory without end. */
#define ADMIN_METRICS_MAX (64u * 1024u * 1024u)

#define ADMIN_METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define ADMIN_JSON_TYPE    "application/json"

struct lg_admin {
    struct evhttp *http;
    lg_admin_gauge_fn connections; /* may be NULL */
    void *connections_arg;
    /* Set by whoever starts the stop, read by the handler: atomic so that
     * the setter need not run on the control loop's thread. */
    atomic_bool draining;
};

/* Send status with body (taken: freed here). evhttp adds Date and, except
 * for a HEAD, Content-Length. evhttp 2.1.12 sends the body even to a HEAD,
 * which would corrupt the next answer on a keep-alive connection: a HEAD
 * gets the Content-Length of the GET and no body. */
static void send_body(struct evhttp_request *req, int status, const char *reason,
                      const char *content_type, struct evbuffer *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", content_type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char len[32];
        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(headers, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(req, status, reason, body);
    evbuffer_free(body);
}

/* Answer with a fixed body. */
static void reply(struct evhttp_request *req, int status, const char *reason,
                  const char *content_type, const char *body, size_t len)
{
    struct evbuffer *out = evbuffer_new();
    if (out == NULL || evbuffer_add(out, body, len) != 0) {
        if (out != NULL)
            evbuffer_free(out);
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    send_body(req, status, reason, content_type, out);
}

static void reply_json(struct evhttp_request *req, int status, const char *reason, const char *body)
{
    reply(req, status, reason, ADMIN_JSON_TYPE, body, strlen(body));
}

static void free_rendered(const void *data, size_t len, void *arg)
{
    free((void *)data);
}

static void serve_metrics(struct lg_admin *a, struct evhttp_request *req)
{
    struct lg_metrics_sources src = {
        .connections = a->connections ? a->connections(a->connections_arg) : 0,
        .redis_errors = lg_redis_errors_total(),
        .draining = atomic_load(&a->draining),
    };
    struct lg_buf text;
    lg_buf_init(&text, ADMIN_METRICS_MAX);
    if (lg_metrics_render(&src, &text) != 0) {
        lg_buf_free(&text);
        lg_log(LG_LOG_ERROR, "admin: cannot render /metrics max_bytes=%u", ADMIN_METRICS_MAX);
        reply_json(req, HTTP_INTERNAL, "Internal Server Error",
                   "{\"message\":\"Internal server error\"}");
        return;
    }
    size_t len;
    char *data = lg_buf_steal(&text, &len);
    struct evbuffer *out = evbuffer_new();
    /* The text is handed over without a copy: a scrape may be megabytes. */
    if (out == NULL || data == NULL ||
        evbuffer_add_reference(out, data, len, free_rendered, NULL) != 0) {
        free(data);
        if (out != NULL)
            evbuffer_free(out);
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    send_body(req, HTTP_OK, "OK", ADMIN_METRICS_TYPE, out);
}

/* Every request, whatever its path and method (see the top of the file). */
static void admin_request_cb(struct evhttp_request *req, void *arg)
{
    struct lg_admin *a = arg;
    /* The parsed URI drops the query and copes with an absolute-form
     * target ("GET http://host/metrics"). */
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL || *path == '\0')
        path = "/";
    bool healthz = strcmp(path, "/healthz") == 0;
    bool metrics = strcmp(path, "/metrics") == 0;
    if (!healthz && !metrics) {
        reply_json(req, HTTP_NOTFOUND, "Not Found", "{\"message\":\"Not Found\"}");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_json(req, 405, "Method Not Allowed", "{\"message\":\"Method Not Allowed\"}");
        return;
    }
    if (metrics) {
        serve_metrics(a, req);
        return;
    }
    if (atomic_load(&a->draining))
        reply_json(req, HTTP_SERVUNAVAIL, "Service Unavailable", "{\"status\":\"draining\"}");
    else
        reply_json(req, HTTP_OK, "OK", "{\"status\":\"ok\"}");
}

/* A listening, non-blocking socket on address, or -1 with err set. Bound
 * here rather than by evhttp_bind_socket(), which takes a host text and
 * resolves it: the config already holds the parsed address. */
static int admin_bind(const struct lg_conf_address *address, char *err, size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&address->sa;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket for admin address %s: %s", address->text,
                 strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* "[::]:port" is IPv6 only, as for the public listeners. */
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, sa, address->salen) != 0 || listen(fd, ADMIN_BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on admin address %s: %s", address->text,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct lg_admin *lg_admin_new(struct event_base *base, const struct lg_conf_address *address,
                              lg_admin_gauge_fn connections, void *arg, char *err, size_t errlen)
{
    struct lg_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->connections = connections;
    a->connections_arg = arg;
    atomic_init(&a->draining, false);
    a->http = evhttp_new(base);
    if (a->http == NULL) {
        snprintf(err, errlen, "cannot create the admin listener");
        free(a);
        return NULL;
    }
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADER_BYTES);
    /* No request to the admin listener has a body; one announced anyway
     * gets evhttp's 413. */
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, admin_request_cb, a);

    int fd = admin_bind(address, err, errlen);
    if (fd < 0) {
        lg_admin_free(a);
        return NULL;
    }
    /* evhttp takes the socket (and closes it when freed) only on success. */
    if (evhttp_accept_socket_with_handle(a->http, fd) == NULL) {
        snprintf(err, errlen, "cannot listen on admin address %s", address->text);
        close(fd);
        lg_admin_free(a);
        return NULL;
    }
    return a;
}

void lg_admin_set_draining(struct lg_admin *a, bool draining)
{
    if (a != NULL)
        atomic_store(&a->draining, draining);
}

void lg_admin_free(struct lg_admin *a)
{
    if (a == NULL)
        return;
    if (a->http != NULL)
        evhttp_free(a->http);
    free(a);
}
