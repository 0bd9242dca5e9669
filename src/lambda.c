/* lambda.c - the Invoke client: signed requests, connection pools, error mapping.
 *
 * Each worker thread has one client. A client keeps one pool of keep-alive
 * connections per endpoint (host, port, TLS); a connection carries one
 * request at a time, so concurrency comes from the pool. Calls beyond
 * lambda.max_connections wait in the pool's queue, first come first
 * served, until a connection frees up or their deadline passes. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/evp.h>

#include "lambdagate/awscreds.h"
#include "lambdagate/codec.h"
#include "lambdagate/httpc.h"
#include "lambdagate/lambda.h"
#include "lambdagate/log.h"
#include "lambdagate/sigv4.h"

/* How often a call waiting for the first credentials looks again. */
#define CREDS_POLL_MS 50

struct pool;

struct pooled_conn {
    struct lg_httpc_conn *conn;
    struct pool *pool;
    struct lg_lambda_call *call; /* the call using it, or NULL when idle */
    struct pooled_conn *next;
    struct pooled_conn *idle_next; /* in the pool's idle stack */
    bool idle;
};

struct pool {
    struct lg_lambda_client *client;
    bool tls;
    char *host;
    uint16_t port;
    struct pooled_conn *conns; /* idle and busy */
    /* Idle connections, the most recently used on top (warm, and the one
     * least likely to have been closed by the upstream meanwhile). */
    struct pooled_conn *idle;
    size_t nconns;
    struct lg_lambda_call *wait_head, *wait_tail; /* calls waiting for a connection */
    struct pool *next;
};

enum call_state {
    CALL_WAIT_CREDS = 0,
    CALL_QUEUED,
    CALL_SENT,
    CALL_FAILING, /* an outcome is decided; delivered from the timer */
};

struct lg_lambda_call {
    struct lg_lambda_client *client;
    const struct lg_conf *conf;
    const struct lg_conf_route *route;
    char *payload;
    size_t payload_len;
    char request_id[LG_REQUEST_ID_LEN + 1];
    lg_lambda_done_cb done;
    void *arg;
    enum call_state state;
    struct pool *pool;
    struct pooled_conn *pc;
    struct lg_lambda_call *wait_next;
    struct event timer; /* deadline, credential polling, or deferred failure */
    int64_t start_us;
    int64_t deadline_us;
    bool retried;
    /* a failure decided synchronously, delivered from the timer */
    enum lg_lambda_outcome fail_outcome;
    char detail[LG_ERR_LEN];
};

struct lg_lambda_client {
    struct event_base *base;
    struct evdns_base *dns;
    struct lg_creds_provider *creds;
    struct pool *pools;
    struct lg_sigv4_key_cache key_cache;
    uint64_t opened;
    struct lg_buf head; /* an Invoke request, head and payload (reused) */
};

const char *lg_lambda_outcome_name(enum lg_lambda_outcome o)
{
    switch (o) {
    case LG_LAMBDA_OK:
        return "ok";
    case LG_LAMBDA_FUNCTION_ERROR:
        return "function_error";
    case LG_LAMBDA_THROTTLED:
        return "throttled";
    case LG_LAMBDA_TOO_LARGE:
        return "too_large";
    case LG_LAMBDA_TIMEOUT:
        return "timeout";
    case LG_LAMBDA_ERROR:
        return "error";
    }
    return "unknown";
}

struct lg_lambda_client *lg_lambda_client_new(struct event_base *base, struct evdns_base *dns,
                                              struct lg_creds_provider *creds)
{
    struct lg_lambda_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->dns = dns;
    c->creds = creds;
    lg_buf_init(&c->head, 0);
    return c;
}

void lg_lambda_client_free(struct lg_lambda_client *c)
{
    if (c == NULL)
        return;
    struct pool *p = c->pools;
    while (p) {
        struct pool *next = p->next;
        struct pooled_conn *pc = p->conns;
        while (pc) {
            struct pooled_conn *pn = pc->next;
            lg_httpc_conn_free(pc->conn);
            free(pc);
            pc = pn;
        }
        free(p->host);
        free(p);
        p = next;
    }
    OPENSSL_cleanse(&c->key_cache, sizeof(c->key_cache));
    /* The head held a signature and possibly a session token. */
    if (c->head.data)
        OPENSSL_cleanse(c->head.data, c->head.cap);
    lg_buf_free(&c->head);
    free(c);
}

uint64_t lg_lambda_client_connections_opened(const struct lg_lambda_client *c)
{
    return c->opened;
}

static struct pool *pool_for(struct lg_lambda_client *c, const struct lg_conf_endpoint *ep)
{
    for (struct pool *p = c->pools; p; p = p->next) {
        if (p->tls == ep->tls && p->port == ep->port && strcmp(p->host, ep->host) == 0)
            return p;
    }
    struct pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->host = strdup(ep->host);
    if (p->host == NULL) {
        free(p);
        return NULL;
    }
    p->client = c;
    p->tls = ep->tls;
    p->port = ep->port;
    p->next = c->pools;
    c->pools = p;
    return p;
}

static void idle_push(struct pool *p, struct pooled_conn *pc)
{
    pc->idle = true;
    pc->idle_next = p->idle;
    p->idle = pc;
}

static void idle_unlink(struct pool *p, struct pooled_conn *pc)
{
    if (!pc->idle)
        return;
    for (struct pooled_conn **pp = &p->idle; *pp; pp = &(*pp)->idle_next) {
        if (*pp == pc) {
            *pp = pc->idle_next;
            break;
        }
    }
    pc->idle = false;
}

static void pool_remove(struct pool *p, struct pooled_conn *pc)
{
    idle_unlink(p, pc);
    for (struct pooled_conn **pp = &p->conns; *pp; pp = &(*pp)->next) {
        if (*pp == pc) {
            *pp = pc->next;
            p->nconns--;
            break;
        }
    }
    lg_httpc_conn_free(pc->conn);
    free(pc);
}

static void queue_remove(struct pool *p, struct lg_lambda_call *call)
{
    struct lg_lambda_call *prev = NULL;
    for (struct lg_lambda_call *q = p->wait_head; q; prev = q, q = q->wait_next) {
        if (q == call) {
            if (prev)
                prev->wait_next = q->wait_next;
            else
                p->wait_head = q->wait_next;
            if (p->wait_tail == q)
                p->wait_tail = prev;
            q->wait_next = NULL;
            return;
        }
    }
}

static void call_free(struct lg_lambda_call *call)
{
    event_del(&call->timer);
    free(call->payload);
    free(call);
}

static void pool_dispatch(struct pool *p);

/* Deliver the outcome and free the call. The call is freed first (the
 * callback may free what owns it), so a detail that points into the call
 * is copied out beforehand. */
static void call_complete(struct lg_lambda_call *call, struct lg_lambda_result *res)
{
    char detail[LG_ERR_LEN];
    if (res->detail) {
        snprintf(detail, sizeof(detail), "%s", res->detail);
        res->detail = detail;
    }
    res->duration_us = lg_mono_us() - call->start_us;
    lg_lambda_done_cb done = call->done;
    void *arg = call->arg;
    call_free(call);
    done(res, arg);
}

static void call_fail(struct lg_lambda_call *call, enum lg_lambda_outcome outcome,
                      const char *detail)
{
    struct lg_lambda_result res = {.outcome = outcome, .payload = "", .detail = detail};
    call_complete(call, &res);
}

/* Decide a failure now, deliver it from the event loop (callers of
 * lg_lambda_invoke never get a callback inside the call). */
static void call_fail_soon(struct lg_lambda_call *call, enum lg_lambda_outcome outcome,
                           const char *detail)
{
    call->state = CALL_FAILING;
    call->fail_outcome = outcome;
    snprintf(call->detail, sizeof(call->detail), "%s", detail);
    event_del(&call->timer);
    event_active(&call->timer, EV_TIMEOUT, 1);
}

static void send_on(struct lg_lambda_call *call, struct pooled_conn *pc);
static void arm(struct lg_lambda_call *call, int64_t us);
static void enqueue(struct lg_lambda_call *call);

/* Parse Retry-After as whole seconds (Lambda sends seconds). */
static int64_t parse_retry_after(const struct lg_http_head *h)
{
    const struct lg_http_header *ra = lg_http_find(h->headers, h->nheaders, "retry-after");
    if (ra == NULL || ra->value_len == 0 || ra->value_len > 6)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < ra->value_len; i++) {
        if (ra->value[i] < '0' || ra->value[i] > '9')
            return 0;
        v = v * 10 + (ra->value[i] - '0');
    }
    return v;
}

/* Copy an upstream header value into out for a log line, bounded. */
static void header_text(const struct lg_http_head *h, const char *name, char *out, size_t outlen)
{
    const struct lg_http_header *hd = lg_http_find(h->headers, h->nheaders, name);
    if (hd == NULL) {
        snprintf(out, outlen, "-");
        return;
    }
    int n = hd->value_len > 64 ? 64 : (int)hd->value_len;
    snprintf(out, outlen, "%.*s", n, hd->value);
    for (char *p = out; *p; p++) {
        if (*p == ' ' || *p == '"')
            *p = '_';
    }
}

static void on_answer(struct lg_httpc_conn *conn, const struct lg_httpc_response *resp, void *arg)
{
    struct lg_lambda_call *call = arg;
    struct pooled_conn *pc = call->pc;
    struct pool *pool = call->pool;
    call->pc = NULL;

    if (resp->error != LG_HTTPC_OK && resp->retryable && !call->retried &&
        lg_mono_us() < call->deadline_us) {
        /* Not one byte of the request left us on a connection that broke:
         * once more, on a new one. */
        call->retried = true;
        pc->call = NULL;
        pool_remove(pool, pc);
        enqueue(call);
        return;
    }

    struct lg_lambda_result res = {.outcome = LG_LAMBDA_ERROR, .payload = ""};
    char detail[LG_ERR_LEN];
    if (resp->error == LG_HTTPC_TIMEOUT) {
        res.outcome = LG_LAMBDA_TIMEOUT;
        res.detail = "no answer from Lambda within the route timeout";
    } else if (resp->error != LG_HTTPC_OK) {
        snprintf(detail, sizeof(detail), "%s", resp->error_text ? resp->error_text : "failed");
        res.detail = detail;
    } else {
        const struct lg_http_head *h = resp->head;
        res.http_status = h->status;
        /* The answer is used in place: made contiguous and NUL-terminated
         * in the connection's body buffer, which stays as it is until the
         * callback below has returned. */
        size_t len = evbuffer_get_length(resp->body);
        const char *payload = NULL;
        if (evbuffer_add(resp->body, "", 1) == 0)
            payload = (const char *)evbuffer_pullup(resp->body, -1);
        if (payload == NULL) {
            res.detail = "out of memory";
        } else {
            res.payload = payload;
            res.payload_len = len;
            if (h->status >= 200 && h->status < 300) {
                if (lg_http_find(h->headers, h->nheaders, "x-amz-function-error")) {
                    char kind[80];
                    header_text(h, "x-amz-function-error", kind, sizeof(kind));
                    snprintf(detail, sizeof(detail), "function error %s", kind);
                    res.outcome = LG_LAMBDA_FUNCTION_ERROR;
                    res.detail = detail;
                } else {
                    res.outcome = LG_LAMBDA_OK;
                }
            } else if (h->status == 429) {
                res.outcome = LG_LAMBDA_THROTTLED;
                res.retry_after_s = parse_retry_after(h);
                res.detail = "Lambda throttled the invocation";
            } else if (h->status == 413) {
                res.outcome = LG_LAMBDA_TOO_LARGE;
                res.detail = "Lambda refused the payload as too large";
            } else {
                char kind[80];
                header_text(h, "x-amzn-errortype", kind, sizeof(kind));
                snprintf(detail, sizeof(detail), "Lambda answered %d error_type=%s", h->status,
                         kind);
                res.detail = detail;
            }
        }
    }
    /* The connection stays marked busy (pc->call) while the answer, which
     * lives in its buffer, is delivered; then it goes to the next waiter. */
    bool reuse = lg_httpc_conn_idle(conn);
    call_complete(call, &res);
    pc->call = NULL;
    if (reuse)
        idle_push(pool, pc);
    else
        pool_remove(pool, pc);
    pool_dispatch(pool);
}

/* A pooled connection closed by the upstream while idle. */
static void on_idle_closed(struct lg_httpc_conn *conn, void *arg)
{
    struct pooled_conn *pc = arg;
    struct pool *pool = pc->pool;
    pool_remove(pool, pc);
    pool_dispatch(pool);
}

/* Give idle connections (or new ones, up to the limit) to waiting calls. */
static void pool_dispatch(struct pool *p)
{
    while (p->wait_head) {
        struct lg_lambda_call *call = p->wait_head;
        struct pooled_conn *free_pc = NULL;
        while (p->idle) {
            struct pooled_conn *pc = p->idle;
            p->idle = pc->idle_next;
            pc->idle = false;
            if (lg_httpc_conn_usable(pc->conn)) {
                free_pc = pc;
                break;
            }
            pool_remove(p, pc); /* closed by the upstream meanwhile */
        }
        if (free_pc == NULL) {
            if ((int64_t)p->nconns >= call->conf->lambda.max_connections)
                return; /* everyone waits for a connection to come back */
            struct lg_httpc_target target = {p->tls, p->host, p->port, call->conf->lambda.ssl_ctx};
            free_pc = calloc(1, sizeof(*free_pc));
            if (free_pc)
                free_pc->conn = lg_httpc_conn_new(p->client->base, p->client->dns, &target);
            if (free_pc == NULL || free_pc->conn == NULL) {
                free(free_pc);
                queue_remove(p, call);
                call_fail_soon(call, LG_LAMBDA_ERROR, "out of memory");
                continue;
            }
            free_pc->pool = p;
            lg_httpc_conn_set_closed_cb(free_pc->conn, on_idle_closed, free_pc);
            free_pc->next = p->conns;
            p->conns = free_pc;
            p->nconns++;
            p->client->opened++;
        }
        queue_remove(p, call);
        send_on(call, free_pc);
    }
}

/* Sign the request with the current credentials and send it on pc. */
static void send_on(struct lg_lambda_call *call, struct pooled_conn *pc)
{
    struct lg_lambda_client *c = call->client;
    const struct lg_conf_route *route = call->route;
    const struct lg_conf_endpoint *ep = route->endpoint;
    struct lg_creds *creds = lg_creds_provider_get(c->creds);
    if (creds == NULL) {
        /* Expired with the refresh late: wait for it as on the first
         * fetch, within the deadline. The connection goes back to the idle
         * stack (new or kept-alive, it counts toward max_connections). */
        idle_push(call->pool, pc);
        call->state = CALL_WAIT_CREDS;
        arm(call, CREDS_POLL_MS * 1000);
        return;
    }
    const char *invocation = route->invocation == LG_INVOKE_ASYNC ? "Event" : "RequestResponse";
    char payload_hash[65];
    if (lg_sigv4_sha256_hex(call->payload, call->payload_len, payload_hash) != 0) {
        lg_creds_unref(creds);
        idle_push(call->pool, pc); /* unused: back to the pool */
        call_fail_soon(call, LG_LAMBDA_ERROR, "SHA-256 failed");
        return;
    }

    struct lg_sigv4_header signed_headers[] = {
        {"host", ep->authority},
        {"x-amz-invocation-type", invocation},
    };
    struct lg_sigv4_input in = {
        .method = "POST",
        .path = route->invoke_path,
        .query = route->invoke_query,
        .headers = signed_headers,
        .nheaders = LG_ARRAY_LEN(signed_headers),
        .payload_sha256 = payload_hash,
        .region = route->region,
        .service = "lambda",
        .now = time(NULL),
        .s3_style = false,
        .access_key_id = creds->access_key_id,
        .secret_access_key = creds->secret_access_key,
        .session_token = creds->session_token,
        .secret_id = creds->generation,
    };
    struct lg_sigv4_output sig;
    char err[LG_ERR_LEN];
    if (lg_sigv4_sign(&in, &c->key_cache, &sig, NULL, err, sizeof(err)) != 0) {
        lg_creds_unref(creds);
        idle_push(call->pool, pc); /* unused: back to the pool */
        call_fail_soon(call, LG_LAMBDA_ERROR, err);
        return;
    }
    /* The whole message, head then payload, is assembled in the client's
     * reusable buffer (inline appends, no printf) and written from there. */
    struct lg_buf *hb = &c->head;
    lg_buf_reset(hb);
    char length[LG_CODEC_INT_MAX];
    size_t length_len = lg_codec_i64(length, (int64_t)call->payload_len);
    static const char fixed[] = " HTTP/1.1\r\nUser-Agent: lambdagate/" PACKAGE_VERSION
                                "\r\nContent-Type: application/json\r\nHost: ";
    int rc = lg_buf_append(hb, LG_LITERAL("POST "));
    rc |= lg_buf_puts(hb, route->invoke_path);
    if (route->invoke_query) {
        rc |= lg_buf_append(hb, LG_LITERAL("?"));
        rc |= lg_buf_puts(hb, route->invoke_query);
    }
    rc |= lg_buf_append(hb, LG_LITERAL(fixed));
    rc |= lg_buf_puts(hb, ep->authority);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\nContent-Length: "));
    rc |= lg_buf_append(hb, length, length_len);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\nX-Amz-Invocation-Type: "));
    rc |= lg_buf_puts(hb, invocation);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\nX-Amz-Date: "));
    rc |= lg_buf_append(hb, sig.amz_date, 16);
    if (creds->session_token) {
        rc |= lg_buf_append(hb, LG_LITERAL("\r\nX-Amz-Security-Token: "));
        rc |= lg_buf_puts(hb, creds->session_token);
    }
    rc |= lg_buf_append(hb, LG_LITERAL("\r\nAuthorization: "));
    rc |= lg_buf_puts(hb, sig.authorization);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\n\r\n"));
    /* The payload behind the head: the message goes out in one piece. */
    rc |= lg_buf_append(hb, call->payload, call->payload_len);
    lg_creds_unref(creds);
    OPENSSL_cleanse(&sig, sizeof(sig));
    if (rc != 0) {
        idle_push(call->pool, pc); /* unused: back to the pool */
        call_fail_soon(call, LG_LAMBDA_ERROR, "out of memory");
        return;
    }

    int64_t left_ms = (call->deadline_us - lg_mono_us()) / 1000;
    if (left_ms < 1)
        left_ms = 1;
    call->pc = pc;
    pc->call = call;
    call->state = CALL_SENT;
    /* The client's own deadline is the call's: when it fires, the answer
     * (if any) is abandoned with the connection. */
    if (lg_httpc_conn_send_bytes(pc->conn, hb->data, hb->len, false, left_ms,
                                 LG_LAMBDA_RESPONSE_MAX, on_answer, call) != 0) {
        call->pc = NULL;
        pc->call = NULL;
        pool_remove(call->pool, pc);
        call_fail_soon(call, LG_LAMBDA_ERROR, "connection not usable");
    }
    /* A large payload's memory is not kept for the next request (what the
     * socket did not take was copied). */
    if (hb->cap > 262144) {
        OPENSSL_cleanse(hb->data, hb->len);
        lg_buf_free(hb);
        lg_buf_init(hb, 0);
    }
}

static void enqueue(struct lg_lambda_call *call)
{
    struct pool *p = call->pool;
    call->state = CALL_QUEUED;
    if (p->wait_tail)
        p->wait_tail->wait_next = call;
    else
        p->wait_head = call;
    p->wait_tail = call;
    pool_dispatch(p);
}

static void arm(struct lg_lambda_call *call, int64_t us)
{
    if (us < 0)
        us = 0;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    event_add(&call->timer, &tv);
}

static void call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_lambda_call *call = arg;
    switch (call->state) {
    case CALL_FAILING:
        call_fail(call, call->fail_outcome, call->detail);
        return;
    case CALL_WAIT_CREDS: {
        struct lg_creds *creds = lg_creds_provider_get(call->client->creds);
        if (creds) {
            lg_creds_unref(creds);
            arm(call, call->deadline_us - lg_mono_us());
            enqueue(call);
            return;
        }
        int64_t left = call->deadline_us - lg_mono_us();
        if (left <= 0) {
            call_fail(call, LG_LAMBDA_ERROR, "no AWS credentials available yet");
            return;
        }
        arm(call, left < CREDS_POLL_MS * 1000 ? left : CREDS_POLL_MS * 1000);
        return;
    }
    case CALL_QUEUED:
        queue_remove(call->pool, call);
        call_fail(call, LG_LAMBDA_TIMEOUT, "no Lambda connection free within the route timeout");
        return;
    case CALL_SENT: {
        /* The connection's own deadline normally fires first; this is the
         * backstop. The connection is abandoned mid-request. */
        struct pooled_conn *pc = call->pc;
        struct pool *pool = call->pool;
        call->pc = NULL;
        if (pc) {
            pc->call = NULL;
            pool_remove(pool, pc);
            pool_dispatch(pool);
        }
        call_fail(call, LG_LAMBDA_TIMEOUT, "no answer from Lambda within the route timeout");
        return;
    }
    }
}

struct lg_lambda_call *lg_lambda_invoke(struct lg_lambda_client *c, const struct lg_conf *conf,
                                        const struct lg_conf_route *route, struct lg_buf *payload,
                                        const char *request_id, lg_lambda_done_cb done, void *arg)
{
    struct lg_lambda_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    /* The timer lives in the call: one allocation per invocation. */
    evtimer_assign(&call->timer, c->base, call_timer_cb, call);
    call->pool = pool_for(c, route->endpoint);
    if (call->pool == NULL) {
        call_free(call);
        return NULL;
    }
    call->client = c;
    call->conf = conf;
    call->route = route;
    call->payload = lg_buf_steal(payload, &call->payload_len);
    if (call->payload == NULL) {
        call->payload = strdup("");
        call->payload_len = 0;
        if (call->payload == NULL) {
            call_free(call);
            return NULL;
        }
    }
    size_t id_len = strnlen(request_id, LG_REQUEST_ID_LEN);
    memcpy(call->request_id, request_id, id_len);
    call->request_id[id_len] = '\0';
    call->done = done;
    call->arg = arg;
    call->start_us = lg_mono_us();
    call->deadline_us = call->start_us + route->timeout_ms * 1000;

    if (lg_creds_provider_source(c->creds) == LG_CREDS_NONE) {
        call_fail_soon(call, LG_LAMBDA_ERROR, "no AWS credentials configured or found");
        return call;
    }
    struct lg_creds *creds = lg_creds_provider_get(c->creds);
    if (creds == NULL) {
        /* The first fetch has not finished: wait for it, within the deadline. */
        call->state = CALL_WAIT_CREDS;
        arm(call, CREDS_POLL_MS * 1000);
        return call;
    }
    lg_creds_unref(creds);
    arm(call, call->deadline_us - call->start_us);
    enqueue(call);
    return call;
}

void lg_lambda_cancel(struct lg_lambda_call *call)
{
    if (call == NULL)
        return;
    switch (call->state) {
    case CALL_QUEUED:
        queue_remove(call->pool, call);
        break;
    case CALL_SENT:
        if (call->pc) {
            struct pooled_conn *pc = call->pc;
            struct pool *pool = call->pool;
            pc->call = NULL;
            /* Mid-request: the connection cannot carry another one. */
            pool_remove(pool, pc);
            pool_dispatch(pool);
        }
        break;
    default:
        break;
    }
    call_free(call);
}
