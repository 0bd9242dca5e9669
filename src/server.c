/* server.c - listeners, worker threads, client connections, requests.
 *
 * Every listen address is bound once by the main thread; each worker thread
 * runs its own event loop with its own listener on each of those sockets,
 * its own Lambda connection pool and DNS resolver. A connection lives in one
 * worker. On a connection, requests are read one at a time: the header
 * block (bounded by limits.max_header_bytes and header_timeout_ms), then the
 * body (max_body_bytes, body_timeout_ms), then the request is handed to the
 * pipeline (proxy.c) and the connection reads nothing more until the answer
 * has been written, which also paces pipelining clients. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "lambdagate/buf.h"
#include "lambdagate/cache.h"
#include "lambdagate/codec.h"
#include "lambdagate/json.h"
#include "lambdagate/lambda.h"
#include "lambdagate/log.h"
#include "lambdagate/metrics.h"
#include "lambdagate/proxy.h"
#include "lambdagate/ratelimit.h"
#include "lambdagate/redis.h"
#include "lambdagate/server.h"
#include "lambdagate/throttle.h"

/* Under AddressSanitizer a released request kept for reuse is poisoned
 * until it is reused, so that a use after its release is still reported
 * as with free(). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LG_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(LG_ASAN)
#include <sanitizer/asan_interface.h>
#define REQ_POISON(req)   ASAN_POISON_MEMORY_REGION((req), sizeof(*(req)))
#define REQ_UNPOISON(req) ASAN_UNPOISON_MEMORY_REGION((req), sizeof(*(req)))
#else
#define REQ_POISON(req)   ((void)(req))
#define REQ_UNPOISON(req) ((void)(req))
#endif

/* Backlog of each listening socket. */
#define LISTEN_BACKLOG 1024
/* After an error answer, how long and how much we keep reading (and
 * dropping) what the client still sends before closing: closing with unread
 * data makes the kernel send a reset that can destroy our answer before the
 * client reads it (nginx's lingering close). */
#define LINGER_MS        2000
#define LINGER_MAX_BYTES (1024 * 1024)
/* How long accepting pauses when the process is out of descriptors. */
#define ACCEPT_PAUSE_MS 250
/* Longest path and method text written to the access log. */
#define LOG_PATH_MAX   2048
#define LOG_METHOD_MAX 32
/* Input buffered while a request is in the pipeline (pipelining clients)
 * beyond max_header_bytes before reading pauses. */
#define PIPELINE_SLACK 65536

/* The most listen addresses a process serves over its life (a reload
 * adds sockets and retires others; slots are never reused, so that the
 * workers can hold pointers to them without locks). */
#define LISTEN_MAX 64

/* A bound listening socket, shared by the workers. */
struct listen_sock {
    int fd;
    bool tls;
    atomic_bool removed; /* a reload dropped its address: shut down, not accepting */
    unsigned port;
    struct sockaddr_storage sa;
    socklen_t salen;
    char *text; /* the address as written */
};

enum conn_phase {
    PHASE_IDLE = 0, /* between requests: idle_timeout_ms */
    PHASE_HEAD,     /* reading a header block: header_timeout_ms */
    PHASE_BODY,     /* reading a body: body_timeout_ms */
    PHASE_PROCESS,  /* the request is in the pipeline */
    PHASE_WRITING,  /* the answer is being written; then the next request */
    PHASE_CLOSING,  /* the last answer is being written; then close */
    PHASE_LINGER,   /* after an error answer: drop input until EOF or LINGER_MS */
};

struct lg_conn {
    struct lg_worker *worker;
    struct lg_conn *prev, *next; /* the worker's connections */
    struct bufferevent *bev;
    const struct listen_sock *sock;
    char ip[INET6_ADDRSTRLEN];
    enum conn_phase phase;
    struct event *timer;
    size_t scanned;     /* header-block search progress */
    struct lg_req *req; /* the request being read or processed */
    int64_t body_left;  /* Content-Length bytes still to read */
    bool body_chunked;
    struct lg_http_chunked chunked;
    size_t body_total;
    bool closed;      /* released; waiting in the graveyard */
    bool linger;      /* close through PHASE_LINGER (an error answer) */
    bool read_paused; /* input past its bound while a request is processed */
    /* Plain TCP: the connection reads with its own event (see conn_reading);
     * NULL with TLS, where the bufferevent reads. */
    struct event *rev;
    bool read_again; /* rev made active for bytes already buffered */
    size_t lingered;
    struct lg_conn *grave_next;
    uint8_t ip_key[16]; /* the client's address as IPv6 (IPv4 mapped) */
    bool ip_counted;    /* counted in the server's per-address table */
};

/* One listener of one worker on one shared socket. */
struct worker_listener {
    struct lg_worker *worker;
    const struct listen_sock *sock;
    struct evconnlistener *listener;
};

/* Released requests a worker keeps (with their body buffers) for the next
 * ones: a request is 6 KB, too big for malloc's per-thread cache. */
#define REQ_SPARES 64
/* Replaced Redis clients a worker keeps at once (see lg_worker_redis). */
#define RETIRED_MAX 4

struct lg_worker {
    struct lg_server *server;
    size_t id;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct evdns_base *dns;
    struct worker_listener listeners[LISTEN_MAX]; /* by socket slot */
    size_t nlisteners;
    struct event *sync_ev;
    int sync_fd; /* eventfd written by lg_server_reload: listeners changed */
    struct lg_lambda_client *lambda;
    struct lg_auth_worker *auth;
    struct lg_redis *redis;     /* made when a store is "redis" */
    struct lg_conf *redis_conf; /* the config whose redis settings it uses */
    /* Clients a reload replaced, kept until their commands have answered
     * or timed out (freeing one drops its callbacks). */
    struct lg_redis *retired[RETIRED_MAX];
    struct event *retire_timer;
    struct lg_throttle_batcher *throttle; /* Redis decisions, batched per loop turn */
    struct lg_conf *conf;
    uint64_t conf_gen; /* the server's conf_gen when conf was taken */
    struct event *stop_ev;
    int stop_fd; /* eventfd written by lg_server_stop (another thread) */
    struct event *drain_timer;
    struct event *reaper;
    struct event *accept_resume; /* re-enables listeners after EMFILE */
    bool accept_paused;
    bool draining;
    struct lg_conn *conns;
    size_t nconns;
    struct lg_conn *graveyard;
    int64_t inflight;
    struct evbuffer *out;                  /* an answer being assembled (reused) */
    struct lg_buf head;                    /* its head text (reused) */
    struct lg_req *spare_reqs[REQ_SPARES]; /* released requests, kept for reuse */
    size_t nspare_reqs;
};

/* Open connections per client address, for max_connections_per_ip: shared
 * by the workers, sharded under mutexes; an entry lives while its address
 * has connections, so the table is bounded by max_connections. */
#define IPC_SHARDS 64
#define IPC_SLOTS  256
struct ipc_entry {
    uint8_t addr[16];
    uint32_t count;
    struct ipc_entry *next;
};
struct ipc_shard {
    pthread_mutex_t lock;
    struct ipc_entry *slots[IPC_SLOTS];
};

struct lg_server {
    atomic_bool stopping;
    struct ipc_shard ipc[IPC_SHARDS];
    uint64_t ipc_seed;
    struct lg_rl_local *rl; /* local buckets and quotas of the instance */
    /* The memory cache of the instance, sized by the config it started
     * with (a reload does not resize it). */
    struct lg_cache_mem *cache;
    atomic_size_t finished; /* workers whose loop has ended */
    atomic_long nconns;     /* open client connections of all workers */
    /* The current config: replaced whole by a reload; workers notice the
     * new generation and take a reference for their next connections and
     * requests, while requests in flight keep the one they started with. */
    pthread_mutex_t conf_lock;
    struct lg_conf *conf;
    atomic_uint_fast64_t conf_gen;
    struct lg_creds_provider *creds;
    struct lg_jwks_provider *jwks;
    struct listen_sock socks[LISTEN_MAX];
    atomic_size_t nsocks; /* slots in use (grows on reload; see add_socket) */
    struct lg_worker *workers;
    size_t nworkers;
};

static uint64_t ipc_hash(const struct lg_server *s, const uint8_t addr[16])
{
    /* FNV-1a, seeded per process: a client picks only its own addresses,
     * so aiming at one chain is not in its power anyway. */
    uint64_t h = 1469598103934665603ull ^ s->ipc_seed;
    for (int i = 0; i < 16; i++) {
        h ^= addr[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* Count one more connection from addr unless it already has limit.
 * False when refused. */
static bool ipc_acquire(struct lg_server *s, const uint8_t addr[16], int64_t limit)
{
    uint64_t h = ipc_hash(s, addr);
    struct ipc_shard *sh = &s->ipc[h % IPC_SHARDS];
    size_t slot = (size_t)((h / IPC_SHARDS) % IPC_SLOTS);
    bool ok = false;
    pthread_mutex_lock(&sh->lock);
    struct ipc_entry *e = sh->slots[slot];
    while (e && memcmp(e->addr, addr, 16) != 0)
        e = e->next;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e) {
            memcpy(e->addr, addr, 16);
            e->next = sh->slots[slot];
            sh->slots[slot] = e;
        }
    }
    if (e && (int64_t)e->count < limit) {
        e->count++;
        ok = true;
    }
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

static void ipc_release(struct lg_server *s, const uint8_t addr[16])
{
    uint64_t h = ipc_hash(s, addr);
    struct ipc_shard *sh = &s->ipc[h % IPC_SHARDS];
    size_t slot = (size_t)((h / IPC_SHARDS) % IPC_SLOTS);
    pthread_mutex_lock(&sh->lock);
    struct ipc_entry **pe = &sh->slots[slot];
    while (*pe && memcmp((*pe)->addr, addr, 16) != 0)
        pe = &(*pe)->next;
    struct ipc_entry *e = *pe;
    if (e && e->count > 0 && --e->count == 0) {
        *pe = e->next;
        free(e);
    }
    pthread_mutex_unlock(&sh->lock);
}

struct lg_lambda_client *lg_worker_lambda(struct lg_worker *w)
{
    return w->lambda;
}

int64_t *lg_worker_inflight(struct lg_worker *w)
{
    return &w->inflight;
}

int64_t lg_server_connections(struct lg_server *s)
{
    return atomic_load(&s->nconns);
}

size_t lg_server_workers(const struct lg_server *s)
{
    return s->nworkers;
}

bool lg_server_finished(struct lg_server *s)
{
    size_t started = 0;
    for (size_t i = 0; i < s->nworkers; i++)
        started += s->workers[i].started;
    return atomic_load(&s->finished) >= started;
}

/* ---------------------------------------------------------------------- */
/* Connections                                                             */
/* ---------------------------------------------------------------------- */

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void worker_maybe_done(struct lg_worker *w);
static void retire_cb(evutil_socket_t fd, short what, void *arg);

static void arm_ms(struct event *ev, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(ev, &tv);
}

/* Take the config of a reload, if there was one since the last look. */
static void worker_sync_conf(struct lg_worker *w)
{
    struct lg_server *s = w->server;
    uint64_t gen = atomic_load_explicit(&s->conf_gen, memory_order_acquire);
    if (gen == w->conf_gen)
        return;
    pthread_mutex_lock(&s->conf_lock);
    struct lg_conf *old = w->conf;
    w->conf = lg_conf_ref(s->conf);
    w->conf_gen = atomic_load_explicit(&s->conf_gen, memory_order_relaxed);
    pthread_mutex_unlock(&s->conf_lock);
    lg_conf_unref(old);
}

static void req_free(struct lg_req *req)
{
    if (req == NULL)
        return;
    lg_auth_wait_cancel(req->auth_wait);
    lg_throttle_cancel(req->throttle_call);
    lg_cache_req_free(req->cache_req);
    lg_auth_result_clear(&req->auth);
    if (req->matched)
        lg_router_match_clear(&req->match);
    free(req->head_block);
    lg_conf_unref(req->conf);
    struct lg_worker *w = req->worker;
    if (req->body && w->nspare_reqs < REQ_SPARES &&
        evbuffer_drain(req->body, evbuffer_get_length(req->body)) == 0) {
        w->spare_reqs[w->nspare_reqs++] = req;
        REQ_POISON(req);
        return;
    }
    if (req->body)
        evbuffer_free(req->body);
    free(req);
}

/* Write the RFC 3339 time with milliseconds of ms into out. */
static void format_rfc3339(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* One JSON line per answered request (CONTRACT section 7): never a token,
 * key, query string or body. */
static void access_log(struct lg_req *req)
{
    lg_metrics_request(req->route ? req->route->route_key : "", req->status,
                       lg_mono_us() - req->start_us);
    /* The X-Cache the answer carried (a STALE answer replaced a MISS). */
    if (req->cache) {
        static const char *const names[LG_CACHE_RESULT_COUNT] = {"HIT", "MISS", "BYPASS", "STALE"};
        for (int i = 0; i < LG_CACHE_RESULT_COUNT; i++)
            if (strcmp(req->cache, names[i]) == 0)
                lg_metrics_cache((enum lg_metric_cache)i);
    }
    if (!lg_log_access_enabled())
        return;
    struct lg_buf b;
    lg_buf_init(&b, 65536);
    char when[32];
    format_rfc3339(req->time_ms, when);
    int64_t dur_us = lg_mono_us() - req->start_us;
    int rc =
        lg_buf_printf(&b, "{\"time\":\"%s\",\"request_id\":\"%s\",\"remote_addr\":", when, req->id);
    rc |= lg_json_append_string(&b, req->source_ip, strlen(req->source_ip));
    /* Client text is cut to a bound, so that a line can never be too long
     * to write: every request that reached the pipeline is logged. */
    size_t mlen = req->head.method ? req->head.method_len : 0;
    size_t plen = req->path ? req->path_len : 0;
    rc |= lg_buf_puts(&b, ",\"method\":");
    rc |= lg_json_append_string(&b, req->head.method ? req->head.method : "",
                                mlen < LOG_METHOD_MAX ? mlen : LOG_METHOD_MAX);
    rc |= lg_buf_puts(&b, ",\"path\":");
    rc |= lg_json_append_string(&b, req->path ? req->path : "",
                                plen < LOG_PATH_MAX ? plen : LOG_PATH_MAX);
    if (plen > LOG_PATH_MAX)
        rc |= lg_buf_puts(&b, ",\"path_truncated\":true");
    rc |= lg_buf_puts(&b, ",\"route\":");
    if (req->route)
        rc |= lg_json_append_string(&b, req->route->route_key, strlen(req->route->route_key));
    else
        rc |= lg_buf_puts(&b, "null");
    rc |= lg_buf_printf(&b, ",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f,\"lambda_ms\":",
                        req->status, req->bytes, (double)dur_us / 1000.0);
    if (req->lambda_us >= 0)
        rc |= lg_buf_printf(&b, "%.3f", (double)req->lambda_us / 1000.0);
    else
        rc |= lg_buf_puts(&b, "null");
    rc |= lg_buf_puts(&b, ",\"identity\":");
    if (req->identity)
        rc |= lg_json_append_string(&b, req->identity, strlen(req->identity));
    else
        rc |= lg_buf_puts(&b, "null");
    rc |= lg_buf_puts(&b, ",\"cache\":");
    if (req->cache)
        rc |= lg_json_append_string(&b, req->cache, strlen(req->cache));
    else
        rc |= lg_buf_puts(&b, "null");
    rc |= lg_buf_printf(&b, ",\"throttled\":%s,\"worker\":%zu}", req->throttled ? "true" : "false",
                        req->worker->id);
    if (rc == 0)
        lg_log_access_write(b.data, b.len);
    lg_buf_free(&b);
}

/* Release a connection. Freed by the worker's reaper on the next loop
 * turn, since this runs inside the connection's own callbacks. */
static void conn_close(struct lg_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct lg_worker *w = c->worker;
    if (c->req) {
        /* The client left with a request in the pipeline: it is logged
         * as 499 (nginx's "client closed request"), since the function may
         * well have run. */
        if (c->phase == PHASE_PROCESS) {
            lg_proxy_abort(c->req);
            c->req->status = 499;
            access_log(c->req);
        }
        req_free(c->req);
        c->req = NULL;
    }
    atomic_fetch_sub(&w->server->nconns, 1);
    if (c->ip_counted)
        ipc_release(w->server, c->ip_key);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->rev)
        event_del(c->rev);
    event_del(c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    c->grave_next = w->graveyard;
    w->graveyard = c;
    event_active(w->reaper, EV_TIMEOUT, 1);
    worker_maybe_done(w);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    struct lg_conn *c = w->graveyard;
    w->graveyard = NULL;
    while (c) {
        struct lg_conn *next = c->grave_next;
        if (c->rev)
            event_free(c->rev);
        bufferevent_free(c->bev);
        event_free(c->timer);
        free(c);
        c = next;
    }
}

static struct lg_req *req_new(struct lg_conn *c)
{
    struct lg_worker *w = c->worker;
    struct lg_req *req;
    if (w->nspare_reqs > 0) {
        /* Zeroed as calloc would, but for the parsed header slots, which
         * the parser fills (head.nheaders says how many): 4 KB of the 6. */
        req = w->spare_reqs[--w->nspare_reqs];
        REQ_UNPOISON(req);
        struct evbuffer *body = req->body;
        size_t a = offsetof(struct lg_req, head.headers);
        size_t b = a + sizeof(req->head.headers);
        memset(req, 0, a);
        memset((char *)req + b, 0, sizeof(*req) - b);
        req->body = body; /* empty */
    } else {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return NULL;
        req->body = evbuffer_new();
        if (req->body == NULL) {
            free(req);
            return NULL;
        }
    }
    req->conn = c;
    req->worker = c->worker;
    worker_sync_conf(c->worker);
    req->conf = lg_conf_ref(c->worker->conf);
    lg_codec_uuid4(req->id);
    req->start_us = lg_mono_us();
    req->time_ms = lg_wall_ms();
    req->source_ip = c->ip;
    req->scheme = c->sock->tls ? "https" : "http";
    req->server_port = c->sock->port;
    req->lambda_us = -1;
    return req;
}

static bool is_managed_header(const struct lg_http_header *h)
{
    return lg_http_ieq(h->name, h->name_len, "x-request-id") ||
           lg_http_ieq(h->name, h->name_len, "date") ||
           lg_http_ieq(h->name, h->name_len, "content-length") ||
           lg_http_ieq(h->name, h->name_len, "connection") ||
           lg_http_ieq(h->name, h->name_len, "transfer-encoding") ||
           lg_http_ieq(h->name, h->name_len, "keep-alive");
}

static void free_body_cb(const void *data, size_t len, void *arg)
{
    free(arg);
}

/* "HTTP/1.1 NNN " into out; returns its length. */
static size_t status_line(char *out, int status)
{
    memcpy(out, "HTTP/1.1 ", 9);
    out[9] = (char)('0' + status / 100 % 10);
    out[10] = (char)('0' + status / 10 % 10);
    out[11] = (char)('0' + status % 10);
    out[12] = ' ';
    return 13;
}

/* "Content-Length: N\r\n" into out (64 bytes); returns its length. */
static size_t content_length_line(char *out, size_t len)
{
    char digits[24];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + len % 10);
        len /= 10;
    } while (len > 0);
    memcpy(out, "Content-Length: ", 16);
    size_t n = 16;
    while (nd > 0)
        out[n++] = digits[--nd];
    out[n++] = '\r';
    out[n++] = '\n';
    return n;
}

/* Send out (emptied) on c. On plain TCP with nothing queued the answer
 * goes to the socket at once, so that the usual answer costs one writev and
 * no change to the epoll set; what the socket does not take (and every TLS
 * answer) goes through the bufferevent, whose write callback reports when
 * it is out. Returns true when all of it was written now. */
static bool conn_send(struct lg_conn *c, struct evbuffer *out)
{
    if (!c->sock->tls && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        while (evbuffer_get_length(out) > 0) {
            if (evbuffer_write(out, fd) <= 0)
                break; /* EAGAIN, or an error the bufferevent will report */
        }
        if (evbuffer_get_length(out) == 0)
            return true;
    }
    bufferevent_write_buffer(c->bev, out);
    return false;
}

/* The same for bytes in one piece: on plain TCP with nothing queued they go
 * straight to the socket (no evbuffer chain to allocate), and only what the
 * socket does not take is copied into the bufferevent. */
static bool conn_send_flat(struct lg_conn *c, const char *data, size_t len)
{
    if (!c->sock->tls && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        size_t sent = lg_http_send_now(bufferevent_getfd(c->bev), data, len);
        if (sent == len)
            return true;
        data += sent;
        len -= sent;
    }
    bufferevent_write(c->bev, data, len);
    return false;
}

/* Bodies up to this size are copied behind the head and sent in one piece;
 * larger ones are handed to the output buffer by reference. */
#define FLAT_BODY_MAX 16384

static void conn_answer_sent(struct lg_conn *c);

void lg_req_respond(struct lg_req *req, int status, const struct lg_http_header *headers,
                    size_t nheaders, void *body, size_t body_len, bool take_body)
{
    struct lg_conn *c = req->conn;
    struct lg_worker *w = req->worker;
    bool closing = !req->head.keep_alive || w->draining || c->phase == PHASE_CLOSING;
    struct evbuffer *out = w->out;
    evbuffer_drain(out, evbuffer_get_length(out));
    /* The head is assembled in one buffer (cheap inline appends) and added
     * to the output once. */
    struct lg_buf *hb = &w->head;
    lg_buf_reset(hb);
    char date[30];
    lg_http_date(date);

    char line[64];
    const char *reason = lg_http_reason(status);
    size_t n = status_line(line, status);
    int rc = lg_buf_append(hb, line, n);
    rc |= lg_buf_puts(hb, reason);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\n"));
    for (size_t i = 0; i < nheaders; i++) {
        if (is_managed_header(&headers[i]))
            continue;
        rc |= lg_buf_append(hb, headers[i].name, headers[i].name_len);
        rc |= lg_buf_append(hb, LG_LITERAL(": "));
        rc |= lg_buf_append(hb, headers[i].value, headers[i].value_len);
        rc |= lg_buf_append(hb, LG_LITERAL("\r\n"));
    }
    /* 204 and 304 have no body and no length; 205 must not carry content
     * (RFC 9110 section 15.3.6), so its length is 0. */
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    if (status == 205)
        body_len = 0;
    rc |= lg_buf_append(hb, LG_LITERAL("x-request-id: "));
    rc |= lg_buf_append(hb, req->id, LG_REQUEST_ID_LEN);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\nDate: "));
    rc |= lg_buf_append(hb, date, 29);
    rc |= lg_buf_append(hb, LG_LITERAL("\r\n"));
    if (!no_body) {
        n = content_length_line(line, body_len);
        rc |= lg_buf_append(hb, line, n);
    }
    if (closing)
        rc |= lg_buf_append(hb, LG_LITERAL("Connection: close\r\n"));
    else if (req->head.version_minor == 0)
        rc |= lg_buf_append(hb, LG_LITERAL("Connection: keep-alive\r\n"));
    rc |= lg_buf_append(hb, LG_LITERAL("\r\n"));
    if (rc != 0) {
        /* Out of memory for a head: nothing sensible can be sent. */
        if (take_body)
            free(body);
        c->req = NULL;
        req_free(req);
        conn_close(c);
        return;
    }
    bool send_body = !no_body && !req->is_head && body_len > 0;
    bool flat = !send_body || (body_len <= FLAT_BODY_MAX && lg_buf_append(hb, body, body_len) == 0);
    if (!flat) {
        evbuffer_add(out, hb->data, hb->len);
        if (take_body) {
            evbuffer_add_reference(out, body, body_len, free_body_cb, body);
            take_body = false;
        } else {
            evbuffer_add(out, body, body_len);
        }
    }
    if (take_body)
        free(body);

    req->status = status;
    req->bytes = flat ? hb->len : evbuffer_get_length(out);
    access_log(req);
    c->req = NULL;
    req_free(req);

    c->phase = closing ? PHASE_CLOSING : PHASE_WRITING;
    if (flat ? conn_send_flat(c, hb->data, hb->len) : conn_send(c, out))
        conn_answer_sent(c);
    /* else: the write callback calls conn_answer_sent once it is out */
}

void lg_req_respond_message(struct lg_req *req, int status, const char *message,
                            const struct lg_http_header *extra, size_t nextra)
{
    struct lg_buf body;
    lg_buf_init(&body, 4096);
    if (lg_buf_puts(&body, "{\"message\":") != 0 ||
        lg_json_append_string(&body, message, strlen(message)) != 0 ||
        lg_buf_putc(&body, '}') != 0) {
        lg_buf_free(&body);
        lg_buf_init(&body, 0);
    }
    struct lg_http_header headers[16];
    size_t n = 0;
    headers[n++] = (struct lg_http_header){"Content-Type", 12, "application/json", 16};
    for (size_t i = 0; i < nextra && n < LG_ARRAY_LEN(headers); i++)
        headers[n++] = extra[i];
    size_t len;
    char *data = lg_buf_steal(&body, &len);
    lg_req_respond(req, status, headers, n, data, len, true);
}

/* Answer an error found while reading a request (before the pipeline) and
 * close the connection afterwards. */
static void conn_fail(struct lg_conn *c, int status, const char *message)
{
    struct lg_req *req = c->req;
    if (req == NULL) {
        req = req_new(c);
        if (req == NULL) {
            conn_close(c);
            return;
        }
        c->req = req;
    }
    req->head.keep_alive = false;
    c->phase = PHASE_CLOSING;
    c->linger = true;
    event_del(c->timer);
    lg_log_req(LG_LOG_INFO, req->id, "refused request status=%d reason=\"%s\" client=%s", status,
               message, c->ip);
    lg_req_respond_message(req, status, message, NULL, 0);
}

static void conn_dispatch(struct lg_conn *c)
{
    struct lg_req *req = c->req;
    c->phase = PHASE_PROCESS;
    event_del(c->timer);
    /* Reading goes on (bounded in conn_read_cb) to notice a client that
     * goes away. */
    lg_proxy_handle(req);
}

/* Read body bytes; dispatch when complete. */
static void conn_read_body(struct lg_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct lg_req *req = c->req;
    if (c->body_chunked) {
        enum lg_http_chunked_result r = lg_http_chunked_decode(
            &c->chunked, in, req->body, &c->body_total, (size_t)req->conf->limits.max_body_bytes);
        if (r == LG_CHUNKED_DONE)
            conn_dispatch(c);
        else if (r == LG_CHUNKED_ERROR)
            conn_fail(c, 400, "Bad Request");
        else if (r == LG_CHUNKED_TOO_LONG)
            conn_fail(c, 413, "Request Entity Too Large");
        return;
    }
    size_t avail = evbuffer_get_length(in);
    size_t take = avail < (size_t)c->body_left ? avail : (size_t)c->body_left;
    if (take > 0) {
        evbuffer_remove_buffer(in, req->body, take);
        c->body_left -= (int64_t)take;
    }
    if (c->body_left == 0)
        conn_dispatch(c);
}

/* Split the request-target into path and query. */
static void split_target(struct lg_req *req)
{
    const char *t = req->head.target;
    size_t n = req->head.target_len;
    const char *q = memchr(t, '?', n);
    req->path = t;
    req->path_len = q ? (size_t)(q - t) : n;
    if (q) {
        req->query = q + 1;
        req->query_len = n - req->path_len - 1;
    }
}

/* Look for a complete header block; start the request when there is one. */
static void conn_read_head(struct lg_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    /* Take a reloaded config now: req_new would do it below, and drop the
     * config this function holds. */
    worker_sync_conf(c->worker);
    const struct lg_conf *conf = c->worker->conf;
    size_t max = (size_t)conf->limits.max_header_bytes;

    /* Empty lines before a request line are allowed (RFC 9112 section 2.2). */
    if (c->scanned == 0) {
        for (;;) {
            unsigned char ch;
            if (evbuffer_copyout(in, &ch, 1) != 1 || (ch != '\r' && ch != '\n'))
                break;
            evbuffer_drain(in, 1);
        }
    }
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return;
    size_t look = avail < max + 4 ? avail : max + 4;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
    size_t end = lg_http_head_end(data, look, &c->scanned);
    if (end == 0) {
        if (avail > max)
            conn_fail(c, 431, "Request Header Fields Too Large");
        return;
    }
    if (end > max) {
        conn_fail(c, 431, "Request Header Fields Too Large");
        return;
    }
    struct lg_req *req = req_new(c);
    if (req == NULL) {
        conn_close(c);
        return;
    }
    c->req = req;
    c->scanned = 0;
    req->head_block = malloc(end);
    if (req->head_block == NULL) {
        conn_close(c);
        return;
    }
    evbuffer_remove(in, req->head_block, end);
    int status;
    if (lg_http_parse_request_head(req->head_block, end, &req->head, &status) != 0) {
        /* What was parsed may be partial: log nothing of it. */
        memset(&req->head, 0, sizeof(req->head));
        conn_fail(c, status, lg_http_reason(status));
        return;
    }
    split_target(req);
    req->is_head = lg_http_ieq(req->head.method, req->head.method_len, "HEAD");

    int64_t max_body = conf->limits.max_body_bytes;
    if (req->head.chunked) {
        c->body_chunked = true;
        memset(&c->chunked, 0, sizeof(c->chunked));
        c->body_total = 0;
    } else if (req->head.content_length > 0) {
        if (req->head.content_length > max_body) {
            conn_fail(c, 413, "Request Entity Too Large");
            return;
        }
        c->body_chunked = false;
        c->body_left = req->head.content_length;
    } else {
        conn_dispatch(c);
        return;
    }
    c->phase = PHASE_BODY;
    arm_ms(c->timer, conf->limits.body_timeout_ms);
    if (req->head.expect_continue && evbuffer_get_length(in) == 0)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    conn_read_body(c);
}

/* Reading on or off. A plain TCP connection reads with its own event
 * (conn_raw_read_cb) rather than through the bufferevent: libevent's
 * evbuffer_read asks the kernel how much is waiting (ioctl FIONREAD)
 * before every read, a system call per request that a fixed-size read
 * does not need. Writing stays with the bufferevent. */
static void conn_reading(struct lg_conn *c, bool on)
{
    if (c->rev != NULL) {
        if (on)
            event_add(c->rev, NULL);
        else
            event_del(c->rev);
    } else if (on) {
        bufferevent_enable(c->bev, EV_READ);
    } else {
        bufferevent_disable(c->bev, EV_READ);
    }
}

/* Run the read callback soon (never from here) for bytes already in the
 * input buffer: a pipelined request. */
static void conn_read_again(struct lg_conn *c)
{
    if (c->rev != NULL) {
        c->read_again = true;
        event_active(c->rev, EV_READ, 1);
    } else {
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void conn_raw_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_conn *c = arg;
    if (c->read_again) {
        c->read_again = false;
        conn_read_cb(c->bev, c);
        return; /* more bytes on the socket: the event fires again */
    }
    int read_errno;
    ssize_t n = lg_http_read_into(bufferevent_get_input(c->bev), fd, &read_errno);
    if (n < 0 && read_errno == ENOMEM) {
        conn_close(c); /* no memory */
        return;
    }
    if (n > 0) {
        conn_read_cb(c->bev, c);
    } else if (n == 0) {
        conn_event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_EOF, c);
    } else if (read_errno != EAGAIN && read_errno != EWOULDBLOCK) {
        conn_event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct lg_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    switch (c->phase) {
    case PHASE_IDLE:
        c->phase = PHASE_HEAD;
        arm_ms(c->timer, c->worker->conf->limits.header_timeout_ms);
        conn_read_head(c);
        break;
    case PHASE_HEAD:
        conn_read_head(c);
        break;
    case PHASE_BODY:
        conn_read_body(c);
        break;
    case PHASE_PROCESS:
    case PHASE_WRITING:
        /* Pipelined bytes wait in the buffer, up to a bound. */
        if (evbuffer_get_length(in) >
            (size_t)c->worker->conf->limits.max_header_bytes + PIPELINE_SLACK) {
            conn_reading(c, false);
            c->read_paused = true;
        }
        break;
    case PHASE_CLOSING:
        evbuffer_drain(in, evbuffer_get_length(in));
        break;
    case PHASE_LINGER: {
        size_t n = evbuffer_get_length(in);
        evbuffer_drain(in, n);
        c->lingered += n;
        if (c->lingered > LINGER_MAX_BYTES)
            conn_close(c);
        break;
    }
    }
}

/* The error answer is out: tell the client we are done (FIN, or TLS
 * close_notify), then drop what it still sends until it closes, for at most
 * LINGER_MS and LINGER_MAX_BYTES. */
static void conn_linger(struct lg_conn *c)
{
    c->phase = PHASE_LINGER;
    c->lingered = 0;
    if (c->sock->tls) {
        /* The output is flushed, so close_notify goes after the answer. */
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl && SSL_shutdown(ssl) < 0)
            ERR_clear_error();
    } else {
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    }
    evbuffer_drain(bufferevent_get_input(c->bev),
                   evbuffer_get_length(bufferevent_get_input(c->bev)));
    if (c->read_paused) {
        conn_reading(c, true);
        c->read_paused = false;
    }
    arm_ms(c->timer, LINGER_MS);
}

/* The answer is out (written at once, or reported by the write callback):
 * close, or go on with the next request. Buffered pipelined input is
 * handled from a deferred read callback, never from here, so that an answer
 * given inside the read path does not recurse into the next request. */
static void conn_answer_sent(struct lg_conn *c)
{
    if (c->phase == PHASE_CLOSING) {
        if (c->linger)
            conn_linger(c);
        else
            conn_close(c);
        return;
    }
    if (c->phase != PHASE_WRITING)
        return;
    if (c->worker->draining) {
        /* Stopping: a keep-alive connection ends after a complete answer. */
        conn_close(c);
        return;
    }
    const struct lg_conf *conf = c->worker->conf;
    if (c->read_paused) {
        conn_reading(c, true);
        c->read_paused = false;
    }
    c->scanned = 0;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        c->phase = PHASE_HEAD;
        arm_ms(c->timer, conf->limits.header_timeout_ms);
        conn_read_again(c);
    } else {
        c->phase = PHASE_IDLE;
        arm_ms(c->timer, conf->limits.idle_timeout_ms);
    }
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct lg_conn *c = arg;
    if (c->phase == PHASE_CLOSING || c->phase == PHASE_WRITING)
        conn_answer_sent(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct lg_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if ((what & BEV_EVENT_ERROR) && c->sock->tls) {
        unsigned long e;
        while ((e = bufferevent_get_openssl_error(bev)) != 0) {
            char buf[200];
            ERR_error_string_n(e, buf, sizeof(buf));
            lg_log_clean(buf);
            lg_log(LG_LOG_DEBUG, "TLS error client=%s error=\"%s\"", c->ip, buf);
        }
        ERR_clear_error();
    }
    if (c->phase == PHASE_PROCESS && c->req)
        lg_log_req(LG_LOG_INFO, c->req->id, "client went away before the answer client=%s", c->ip);
    conn_close(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_conn *c = arg;
    switch (c->phase) {
    case PHASE_IDLE:
        conn_close(c);
        break;
    case PHASE_HEAD:
        /* Nothing received at all (a connection that never spoke, or a
         * TLS handshake that never finished): just close. */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 && c->scanned == 0)
            conn_close(c);
        else
            conn_fail(c, 408, "Request Timeout");
        break;
    case PHASE_BODY:
        conn_fail(c, 408, "Request Timeout");
        break;
    case PHASE_LINGER:
        conn_close(c);
        break;
    default:
        break;
    }
}

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct worker_listener *wl = arg;
    struct lg_worker *w = wl->worker;
    const struct listen_sock *sock = wl->sock;
    if (w->draining) {
        evutil_closesocket(fd);
        return;
    }
    /* limits.max_connections: refused here, before any memory is spent. */
    worker_sync_conf(w);
    if (atomic_fetch_add(&w->server->nconns, 1) >= w->conf->limits.max_connections) {
        atomic_fetch_sub(&w->server->nconns, 1);
        lg_metrics_refused(LG_REASON_MAX_CONNECTIONS);
        evutil_closesocket(fd);
        return;
    }
    /* limits.max_connections_per_ip, counted for the whole instance. */
    uint8_t ip_key[16] = {0};
    if (sa->sa_family == AF_INET6) {
        memcpy(ip_key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else {
        ip_key[10] = ip_key[11] = 0xff;
        memcpy(ip_key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
    if (!ipc_acquire(w->server, ip_key, w->conf->limits.max_connections_per_ip)) {
        atomic_fetch_sub(&w->server->nconns, 1);
        lg_metrics_refused(LG_REASON_MAX_CONNECTIONS_IP);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct lg_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        ipc_release(w->server, ip_key);
        atomic_fetch_sub(&w->server->nconns, 1);
        evutil_closesocket(fd);
        return;
    }
    memcpy(c->ip_key, ip_key, 16);
    c->ip_counted = true;
    c->worker = w;
    c->sock = sock;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        /* Show an IPv4 client of a dual-stack socket as IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], c->ip, sizeof(c->ip));
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, c->ip, sizeof(c->ip));
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->ip, sizeof(c->ip));
    }
    if (sock->tls) {
        SSL *ssl = NULL;
        for (size_t i = 0; i < w->conf->nlisten; i++) {
            const struct lg_conf_listen *l = &w->conf->listen[i];
            if (l->tls && l->address.salen == sock->salen &&
                memcmp(&l->address.sa, &sock->sa, sock->salen) == 0)
                ssl = SSL_new(l->ssl_ctx);
        }
        if (ssl == NULL) {
            ERR_clear_error();
            ipc_release(w->server, ip_key);
            atomic_fetch_sub(&w->server->nconns, 1);
            evutil_closesocket(fd);
            free(c);
            return;
        }
        /* On failure libevent frees ssl itself (BEV_OPT_CLOSE_ON_FREE). */
        c->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (c->bev != NULL)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
        c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, conn_raw_read_cb, c);
    }
    c->timer = evtimer_new(w->base, conn_timer_cb, c);
    if (c->bev == NULL || c->timer == NULL || (!sock->tls && c->rev == NULL)) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->timer)
            event_free(c->timer);
        if (c->rev)
            event_free(c->rev);
        free(c);
        ipc_release(w->server, ip_key);
        atomic_fetch_sub(&w->server->nconns, 1);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    /* The header deadline runs from accept: it also bounds the TLS
     * handshake and a client that connects and never speaks. */
    c->phase = PHASE_HEAD;
    arm_ms(c->timer, w->conf->limits.header_timeout_ms);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    struct timeval write_to = {(time_t)(w->conf->limits.idle_timeout_ms / 1000),
                               (suseconds_t)((w->conf->limits.idle_timeout_ms % 1000) * 1000)};
    /* A client that stops reading our answer is dropped after this long. */
    bufferevent_set_timeouts(c->bev, NULL, &write_to);
    bufferevent_enable(c->bev, c->rev ? EV_WRITE : EV_READ | EV_WRITE);
    conn_reading(c, true);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    w->accept_paused = false;
    for (size_t i = 0; i < w->nlisteners && !w->draining; i++) {
        if (w->listeners[i].listener)
            evconnlistener_enable(w->listeners[i].listener);
    }
}

static void accept_error_cb(struct evconnlistener *listener, void *arg)
{
    struct worker_listener *wl = arg;
    struct lg_worker *w = wl->worker;
    int err = EVUTIL_SOCKET_ERROR();
    if (atomic_load(&w->server->stopping) || atomic_load(&wl->sock->removed))
        return; /* the socket was shut down to refuse new connections */
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* The pending connection stays readable: accepting again at once
         * would spin. Pause this worker's listeners for a moment. */
        if (!w->accept_paused) {
            lg_log(LG_LOG_WARN, "accept paused address=%s error=\"%s\" pause_ms=%d open=%ld",
                   wl->sock->text, evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS,
                   (long)atomic_load(&w->server->nconns));
            w->accept_paused = true;
            for (size_t i = 0; i < w->nlisteners; i++) {
                if (w->listeners[i].listener)
                    evconnlistener_disable(w->listeners[i].listener);
            }
            arm_ms(w->accept_resume, ACCEPT_PAUSE_MS);
        }
        return;
    }
    lg_log(LG_LOG_WARN, "accept failed address=%s error=\"%s\"", wl->sock->text,
           evutil_socket_error_to_string(err));
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */
/* ---------------------------------------------------------------------- */

/* Match this worker's listeners to the server's sockets: listen on the
 * ones a reload added, let go of the ones it removed. On the worker's
 * thread. -1 when a listener cannot be made. */
static int worker_sync_listeners(struct lg_worker *w)
{
    struct lg_server *s = w->server;
    size_t n = atomic_load(&s->nsocks);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct worker_listener *wl = &w->listeners[i];
        struct listen_sock *ls = &s->socks[i];
        bool removed = atomic_load(&ls->removed);
        if (removed && wl->listener) {
            evconnlistener_free(wl->listener);
            wl->listener = NULL;
        } else if (!removed && !wl->listener && !w->draining && wl->sock == NULL) {
            wl->worker = w;
            wl->sock = ls;
            /* backlog 0: the socket is already listening. */
            wl->listener =
                evconnlistener_new(w->base, accept_cb, wl, LEV_OPT_CLOSE_ON_EXEC, 0, ls->fd);
            if (wl->listener == NULL) {
                lg_log(LG_LOG_ERROR, "cannot listen on %s", ls->text);
                rc = -1;
                continue;
            }
            evconnlistener_set_error_cb(wl->listener, accept_error_cb);
            if (w->accept_paused)
                evconnlistener_disable(wl->listener);
        }
    }
    w->nlisteners = n;
    return rc;
}

static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    if (!w->draining)
        (void)worker_sync_listeners(w);
}

static void worker_close_listeners(struct lg_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].listener) {
            evconnlistener_free(w->listeners[i].listener);
            w->listeners[i].listener = NULL;
        }
    }
}

/* While draining, the loop ends when the last connection is gone. */
static void worker_maybe_done(struct lg_worker *w)
{
    if (w->draining && w->nconns == 0)
        event_base_loopexit(w->base, NULL);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    lg_log(LG_LOG_WARN, "shutdown timeout reached, closing connections worker=%zu open=%zu", w->id,
           w->nconns);
    while (w->conns)
        conn_close(w->conns);
    event_base_loopexit(w->base, NULL);
}

/* Stop accepting; close idle connections now, busy ones after their answer
 * (lg_req_respond sends Connection: close while draining). */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    uint64_t count;
    if (read(w->stop_fd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing to read; the request is handled below anyway */
    }
    if (w->draining)
        return;
    w->draining = true;
    event_del(w->accept_resume);
    worker_close_listeners(w);
    struct lg_conn *c = w->conns;
    while (c) {
        struct lg_conn *next = c->next;
        if (c->phase == PHASE_IDLE || (c->phase == PHASE_HEAD && c->scanned == 0 &&
                                       evbuffer_get_length(bufferevent_get_input(c->bev)) == 0))
            conn_close(c);
        c = next;
    }
    arm_ms(w->drain_timer, w->conf->shutdown_timeout_ms);
    worker_maybe_done(w);
}

static void *worker_run(void *arg)
{
    struct lg_worker *w = arg;
    event_base_dispatch(w->base);
    atomic_fetch_add(&w->server->finished, 1);
    /* Whatever is left (a drain cut short) is released here. */
    while (w->conns)
        conn_close(w->conns);
    reaper_cb(-1, 0, w);
    worker_close_listeners(w);
    /* Release upstream connections; their frees run on this loop. */
    lg_lambda_client_free(w->lambda);
    w->lambda = NULL;
    lg_auth_worker_free(w->auth);
    w->auth = NULL;
    lg_redis_free(w->redis);
    w->redis = NULL;
    lg_conf_unref(w->redis_conf);
    w->redis_conf = NULL;
    retire_cb(-1, 0, w);
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    return NULL;
}

static void worker_destroy(struct lg_worker *w)
{
    worker_close_listeners(w);
    if (w->sync_ev)
        event_free(w->sync_ev);
    if (w->sync_fd >= 0)
        close(w->sync_fd);
    lg_lambda_client_free(w->lambda);
    lg_auth_worker_free(w->auth);
    lg_redis_free(w->redis);
    lg_conf_unref(w->redis_conf);
    retire_cb(-1, 0, w);
    if (w->retire_timer)
        event_free(w->retire_timer);
    lg_throttle_batcher_free(w->throttle);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->reaper)
        event_free(w->reaper);
    if (w->accept_resume)
        event_free(w->accept_resume);
    if (w->out)
        evbuffer_free(w->out);
    lg_buf_free(&w->head);
    while (w->nspare_reqs > 0) {
        struct lg_req *req = w->spare_reqs[--w->nspare_reqs];
        REQ_UNPOISON(req);
        evbuffer_free(req->body);
        free(req);
    }
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base);
    lg_conf_unref(w->conf);
}

static int worker_init(struct lg_server *s, struct lg_worker *w, size_t id, char *err,
                       size_t errlen)
{
    w->server = s;
    w->id = id;
    w->stop_fd = -1;
    w->conf = lg_conf_ref(s->conf);
    w->conf_gen = atomic_load(&s->conf_gen);
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errlen, "cannot create an event loop");
        return -1;
    }
    w->dns = evdns_base_new(w->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL) {
        /* No usable resolv.conf: names in /etc/hosts and addresses still work. */
        w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (w->dns == NULL) {
            snprintf(err, errlen, "cannot create a DNS resolver");
            return -1;
        }
        evdns_base_load_hosts(w->dns, NULL);
    }
    w->lambda = lg_lambda_client_new(w->base, w->dns, s->creds);
    w->auth = lg_auth_worker_new(w->base, s->jwks);
    w->throttle = lg_throttle_batcher_new(w->base);
    w->retire_timer = evtimer_new(w->base, retire_cb, w);
    /* Connect to Redis now, so that the first requests find it ready. */
    if (w->conf->throttle.store == LG_STORE_REDIS || w->conf->cache.store == LG_STORE_REDIS)
        (void)lg_worker_redis(w, w->conf);
    if (w->lambda == NULL || w->auth == NULL || w->throttle == NULL || w->retire_timer == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* The only cross-thread call is the stop request: an eventfd the
     * worker's loop watches, so that loops need no locking (libevent's
     * evthread locks would cost a mutex on every event operation). */
    w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->stop_fd < 0) {
        snprintf(err, errlen, "cannot create an eventfd: %s", strerror(errno));
        return -1;
    }
    w->stop_ev = event_new(w->base, w->stop_fd, EV_READ | EV_PERSIST, stop_cb, w);
    if (w->stop_ev)
        event_add(w->stop_ev, NULL);
    w->drain_timer = evtimer_new(w->base, drain_timeout_cb, w);
    w->reaper = event_new(w->base, -1, 0, reaper_cb, w);
    w->out = evbuffer_new();
    lg_buf_init(&w->head, 0);
    w->accept_resume = evtimer_new(w->base, accept_resume_cb, w);
    w->sync_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->sync_fd >= 0) {
        w->sync_ev = event_new(w->base, w->sync_fd, EV_READ | EV_PERSIST, sync_cb, w);
        if (w->sync_ev)
            event_add(w->sync_ev, NULL);
    }
    if (w->lambda == NULL || w->stop_ev == NULL || w->drain_timer == NULL || w->reaper == NULL ||
        w->accept_resume == NULL || w->out == NULL || w->sync_ev == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (worker_sync_listeners(w) != 0) {
        snprintf(err, errlen, "cannot listen on every address");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The server                                                              */
/* ---------------------------------------------------------------------- */

static int bind_socket(const struct lg_conf_listen *l, int *out, char *err, size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&l->address.sa;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket for %s: %s", l->address.text,
                 strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa->sa_family == AF_INET6) {
        /* "[::]:port" is IPv6 only, as in nginx: IPv4 needs its own entry,
         * so that "0.0.0.0:port" and "[::]:port" can both be listed. */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, sa, l->address.salen) != 0) {
        snprintf(err, errlen, "cannot bind %s: %s", l->address.text, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", l->address.text, strerror(errno));
        close(fd);
        return -1;
    }
    *out = fd;
    return 0;
}

static unsigned sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Bind l into the next socket slot. Only the control thread adds slots
 * (at start and on reload); workers see a slot once the nsocks store
 * publishes it, after every field is written. */
static int add_socket(struct lg_server *s, const struct lg_conf_listen *l, char *err, size_t errlen)
{
    size_t i = atomic_load(&s->nsocks);
    if (i >= LISTEN_MAX) {
        snprintf(err, errlen, "more than %d listen addresses over the life of the process",
                 LISTEN_MAX);
        return -1;
    }
    struct listen_sock *ls = &s->socks[i];
    ls->text = strdup(l->address.text);
    if (ls->text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (bind_socket(l, &ls->fd, err, errlen) != 0) {
        free(ls->text);
        ls->text = NULL;
        return -1;
    }
    ls->tls = l->tls;
    atomic_store(&ls->removed, false);
    ls->port = sockaddr_port(&l->address.sa);
    memcpy(&ls->sa, &l->address.sa, l->address.salen);
    ls->salen = l->address.salen;
    atomic_store(&s->nsocks, i + 1);
    return 0;
}

/* The live socket bound to address a, or NULL. */
static struct listen_sock *find_socket(struct lg_server *s, const struct lg_conf_address *a)
{
    size_t n = atomic_load(&s->nsocks);
    for (size_t i = 0; i < n; i++) {
        struct listen_sock *ls = &s->socks[i];
        if (!atomic_load(&ls->removed) && ls->salen == a->salen &&
            memcmp(&ls->sa, &a->sa, a->salen) == 0)
            return ls;
    }
    return NULL;
}

struct lg_server *lg_server_new(struct lg_conf *conf, struct lg_creds_provider *creds,
                                struct lg_jwks_provider *jwks, char *err, size_t errlen)
{
    struct lg_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&s->conf_lock, NULL) != 0) {
        free(s);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    for (size_t i = 0; i < IPC_SHARDS; i++)
        pthread_mutex_init(&s->ipc[i].lock, NULL);
    if (RAND_bytes((unsigned char *)&s->ipc_seed, sizeof(s->ipc_seed)) != 1)
        s->ipc_seed = (uint64_t)lg_mono_us();
    s->rl = lg_rl_local_new(LG_THROTTLE_LOCAL_ENTRIES);
    s->cache = lg_cache_mem_new((size_t)conf->cache.max_bytes);
    if (s->rl == NULL || s->cache == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->conf = lg_conf_ref(conf);
    s->creds = creds;
    s->jwks = jwks;
    if (conf->nlisten > LISTEN_MAX) {
        snprintf(err, errlen, "more than %d listen addresses", LISTEN_MAX);
        goto fail;
    }
    for (size_t i = 0; i < conf->nlisten; i++) {
        if (add_socket(s, &conf->listen[i], err, errlen) != 0)
            goto fail;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->nworkers = conf->workers > 0 ? (size_t)conf->workers : (size_t)(cores > 0 ? cores : 1);
    s->workers = calloc(s->nworkers, sizeof(*s->workers));
    if (s->workers == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->nworkers; i++) {
        s->workers[i].stop_fd = -1; /* destroyed even when never initialised */
        s->workers[i].sync_fd = -1;
    }
    for (size_t i = 0; i < s->nworkers; i++) {
        if (worker_init(s, &s->workers[i], i, err, errlen) != 0)
            goto fail;
    }
    return s;
fail:
    lg_server_free(s);
    return NULL;
}

int lg_server_start(struct lg_server *s, char *err, size_t errlen)
{
    /* Workers start with every signal blocked (they inherit the mask), so
     * signals reach the main thread's loop only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int result = 0;
    for (size_t i = 0; i < s->nworkers; i++) {
        int rc = pthread_create(&s->workers[i].thread, NULL, worker_run, &s->workers[i]);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start worker %zu: %s", i, strerror(rc));
            result = -1;
            break;
        }
        s->workers[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return result;
}

void lg_server_stop(struct lg_server *s)
{
    if (atomic_exchange(&s->stopping, true))
        return;
    /* Refuse new connections now, including those already waiting in the
     * backlog (they are reset), rather than letting them wait for the
     * drain: Linux takes a listening socket out of LISTEN on shutdown().
     * The descriptors are closed once every worker has let go of them. */
    for (size_t i = 0; i < atomic_load(&s->nsocks); i++)
        shutdown(s->socks[i].fd, SHUT_RDWR);
    uint64_t one = 1;
    for (size_t i = 0; i < s->nworkers; i++) {
        if (s->workers[i].started && write(s->workers[i].stop_fd, &one, sizeof(one)) < 0)
            lg_log(LG_LOG_ERROR, "cannot signal worker %zu to stop: %s", i, strerror(errno));
    }
}

void lg_server_free(struct lg_server *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nworkers && s->workers; i++) {
        if (s->workers[i].started)
            pthread_join(s->workers[i].thread, NULL);
    }
    for (size_t i = 0; i < s->nworkers && s->workers; i++)
        worker_destroy(&s->workers[i]);
    free(s->workers);
    for (size_t i = 0; i < atomic_load(&s->nsocks); i++) {
        close(s->socks[i].fd);
        free(s->socks[i].text);
    }
    lg_conf_unref(s->conf);
    pthread_mutex_destroy(&s->conf_lock);
    for (size_t i = 0; i < IPC_SHARDS; i++) {
        for (size_t j = 0; j < IPC_SLOTS; j++) {
            while (s->ipc[i].slots[j]) {
                struct ipc_entry *e = s->ipc[i].slots[j];
                s->ipc[i].slots[j] = e->next;
                free(e);
            }
        }
        pthread_mutex_destroy(&s->ipc[i].lock);
    }
    lg_rl_local_free(s->rl);
    lg_cache_mem_free(s->cache);
    free(s);
}

int lg_server_reload(struct lg_server *s, struct lg_conf *conf, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->conf_lock);
    struct lg_conf *old = s->conf;
    pthread_mutex_unlock(&s->conf_lock);
    /* An address that stays must keep its TLS setting: its socket (and the
     * connections on it) cannot switch. */
    for (size_t i = 0; i < conf->nlisten; i++) {
        struct listen_sock *ls = find_socket(s, &conf->listen[i].address);
        if (ls && ls->tls != conf->listen[i].tls) {
            snprintf(err, errlen,
                     "listen %s changed between TLS and plain; restart lambdagate "
                     "to apply that",
                     conf->listen[i].address.text);
            return -1;
        }
    }
    /* New addresses are bound now, so that a failure refuses the reload
     * before anything changed. */
    size_t first_new = atomic_load(&s->nsocks);
    for (size_t i = 0; i < conf->nlisten; i++) {
        if (find_socket(s, &conf->listen[i].address) == NULL &&
            add_socket(s, &conf->listen[i], err, errlen) != 0) {
            /* Undo the ones bound by this reload. */
            for (size_t j = first_new; j < atomic_load(&s->nsocks); j++) {
                atomic_store(&s->socks[j].removed, true);
                shutdown(s->socks[j].fd, SHUT_RDWR);
            }
            return -1;
        }
    }
    /* Addresses no longer listed stop accepting; connections already
     * accepted on them are served on. */
    size_t n = atomic_load(&s->nsocks);
    for (size_t i = 0; i < n; i++) {
        struct listen_sock *ls = &s->socks[i];
        bool kept = false;
        for (size_t j = 0; j < conf->nlisten && !kept; j++)
            kept = ls->salen == conf->listen[j].address.salen &&
                   memcmp(&ls->sa, &conf->listen[j].address.sa, ls->salen) == 0;
        if (!kept && !atomic_load(&ls->removed)) {
            atomic_store(&ls->removed, true);
            shutdown(ls->fd, SHUT_RDWR);
            lg_log(LG_LOG_INFO, "stopped listening address=%s", ls->text);
        }
    }
    for (size_t i = first_new; i < n; i++)
        if (!atomic_load(&s->socks[i].removed))
            lg_log(LG_LOG_INFO, "listening address=%s tls=%s", s->socks[i].text,
                   s->socks[i].tls ? "on" : "off");
    pthread_mutex_lock(&s->conf_lock);
    s->conf = lg_conf_ref(conf);
    atomic_fetch_add_explicit(&s->conf_gen, 1, memory_order_release);
    pthread_mutex_unlock(&s->conf_lock);
    lg_conf_unref(old);
    /* Wake the workers to listen on (or let go of) the changed sockets. */
    uint64_t one = 1;
    for (size_t i = 0; i < s->nworkers; i++) {
        if (s->workers[i].started && write(s->workers[i].sync_fd, &one, sizeof(one)) < 0)
            lg_log(LG_LOG_ERROR, "cannot signal worker %zu: %s", i, strerror(errno));
    }
    return 0;
}

struct lg_auth_worker *lg_worker_auth(struct lg_worker *w)
{
    return w->auth;
}

struct lg_throttle_batcher *lg_worker_throttle(struct lg_worker *w)
{
    return w->throttle;
}

struct lg_rl_local *lg_worker_ratelimit(struct lg_worker *w)
{
    return w->server->rl;
}

struct lg_cache_mem *lg_worker_cache(struct lg_worker *w)
{
    return w->server->cache;
}

struct event_base *lg_worker_base(struct lg_worker *w)
{
    return w->base;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool same_redis(const struct lg_conf_redis *a, const struct lg_conf_redis *b)
{
    return same_str(a->host, b->host) && a->port == b->port && same_str(a->password, b->password) &&
           a->db == b->db && a->timeout_ms == b->timeout_ms;
}

/* Free the retired Redis clients: every command they had has answered or
 * timed out by now (or the worker is ending). */
static void retire_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_worker *w = arg;
    for (size_t i = 0; i < RETIRED_MAX; i++) {
        lg_redis_free(w->retired[i]);
        w->retired[i] = NULL;
    }
}

struct lg_redis *lg_worker_redis(struct lg_worker *w, struct lg_conf *conf)
{
    if (w->redis && !same_redis(&w->redis_conf->redis, &conf->redis)) {
        /* A reload changed where Redis is: a new connection. The old one
         * is kept until its pending commands (and the decisions queued for
         * it, sent now) have answered or timed out, so that each request
         * waiting on it gets its callback. */
        lg_throttle_batcher_flush(w->throttle);
        size_t slot = 0;
        while (slot < RETIRED_MAX && w->retired[slot] != NULL)
            slot++;
        if (slot == RETIRED_MAX) {
            /* Reloads in quick succession: the oldest goes now. */
            lg_redis_free(w->retired[0]);
            memmove(w->retired, w->retired + 1, (RETIRED_MAX - 1) * sizeof(w->retired[0]));
            slot = RETIRED_MAX - 1;
        }
        w->retired[slot] = w->redis;
        int64_t ms = w->redis_conf->redis.timeout_ms * 2 + 1000;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
        evtimer_add(w->retire_timer, &tv);
        w->redis = NULL;
        lg_conf_unref(w->redis_conf);
        w->redis_conf = NULL;
    }
    if (w->redis == NULL) {
        w->redis = lg_redis_new(w->base, &conf->redis);
        if (w->redis)
            w->redis_conf = lg_conf_ref(conf);
    }
    return w->redis;
}
