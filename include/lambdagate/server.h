/* server.h - listeners, worker threads, client connections, requests. */
#ifndef LG_SERVER_H
#define LG_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/auth.h"
#include "lambdagate/conf.h"
#include "lambdagate/http.h"
#include "lambdagate/lambdagate.h"
#include "lambdagate/router.h"
#include "lambdagate/throttle.h"

struct event_base;
struct evbuffer;
struct lg_creds_provider;
struct lg_jwks_provider;
struct lg_lambda_call;
struct lg_lambda_client;
struct lg_redis;
struct lg_rl_local;
struct lg_cache_mem;
struct lg_cache_req;

struct lg_server;
struct lg_worker;
struct lg_conn;

/* One request, from its complete header block and body to its answer.
 * The server owns it: it is created when a request has been read, handed to
 * lg_proxy_handle(), and released by lg_req_respond() (or, when the client
 * goes away first, after lg_proxy_abort()). */
struct lg_req {
    struct lg_conn *conn;
    struct lg_worker *worker;
    struct lg_conf *conf; /* referenced for the request's life */
    char id[LG_REQUEST_ID_LEN + 1];
    int64_t start_us; /* monotonic, when the header block was complete */
    int64_t time_ms;  /* wall clock at the same moment */

    char *head_block; /* owned; head's pointers borrow from it */
    struct lg_http_head head;
    const char *path; /* borrowed from head_block: target without the query */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    struct evbuffer *body;
    const char *source_ip; /* borrowed from the connection */
    const char *scheme;    /* "http" or "https" */
    unsigned server_port;
    bool is_head; /* HEAD: the answer has no body */

    /* Set by the pipeline. */
    const struct lg_conf_route *route;
    struct lg_router_match match;
    bool matched;
    struct lg_lambda_call *call;
    bool counted_inflight;
    struct lg_auth_result auth;             /* cleared when the request is released */
    struct lg_auth_wait *auth_wait;         /* waiting for a key set */
    struct lg_throttle_call *throttle_call; /* waiting for Redis */
    bool has_ratelimit;                     /* RateLimit-* go on every answer */
    struct lg_cache_req *cache_req;         /* a cached route's lookup or fill */
    bool cache_fill;                        /* this request fills the cache with its answer */
    struct lg_rl_result ratelimit;

    /* For the access log. */
    int status;
    size_t bytes;
    int64_t lambda_us; /* -1 when Lambda was not called */
    const char *identity;
    const char *cache;
    bool throttled;
};

/* Send the answer and finish the request (req is released: do not touch it
 * afterwards). headers are borrowed for the call; the server adds
 * x-request-id, Date, Content-Length and, when the connection ends,
 * Connection: close; headers of those names in the list are dropped. With
 * take_body the body (malloc'd) is taken over and freed by the server, else
 * it is copied. A HEAD request gets the headers without the body. */
void lg_req_respond(struct lg_req *req, int status, const struct lg_http_header *headers,
                    size_t nheaders, void *body, size_t body_len, bool take_body);
/* Answer {"message": message} as application/json, plus extra headers. */
void lg_req_respond_message(struct lg_req *req, int status, const char *message,
                            const struct lg_http_header *extra, size_t nextra);

/* The worker's Lambda client and in-flight counter, for the pipeline. */
struct lg_lambda_client *lg_worker_lambda(struct lg_worker *w);
struct lg_auth_worker *lg_worker_auth(struct lg_worker *w);
/* The instance's local buckets (shared by the workers). */
struct lg_rl_local *lg_worker_ratelimit(struct lg_worker *w);
/* The worker's batcher of Redis throttle decisions. */
struct lg_throttle_batcher *lg_worker_throttle(struct lg_worker *w);
/* The instance's memory cache (shared by the workers). */
struct lg_cache_mem *lg_worker_cache(struct lg_worker *w);
struct event_base *lg_worker_base(struct lg_worker *w);
/* The worker's Redis client for conf's redis settings (made on first use,
 * remade when a reload changed them); NULL on no memory. */
struct lg_redis *lg_worker_redis(struct lg_worker *w, struct lg_conf *conf);
int64_t *lg_worker_inflight(struct lg_worker *w);

/* Bind every listen address of conf (so that errors show before anything
 * starts) and prepare conf's workers. creds and jwks (NULL without an
 * auth.jwt.jwks_url) are shared by all workers and must outlive the
 * server. NULL with err set on failure. */
struct lg_server *lg_server_new(struct lg_conf *conf, struct lg_creds_provider *creds,
                                struct lg_jwks_provider *jwks, char *err, size_t errlen);
/* Serve new connections and requests with conf (a reference is taken);
 * requests in flight finish with the config they started with. The listen
 * addresses must be those the server was started with (they are bound
 * once): -1 with err set otherwise. Call from the control thread. */
int lg_server_reload(struct lg_server *s, struct lg_conf *conf, char *err, size_t errlen) LG_WUR;
/* Start the worker threads. */
int lg_server_start(struct lg_server *s, char *err, size_t errlen) LG_WUR;
/* Ask every worker to stop accepting, finish what is in flight (up to the
 * config's shutdown_timeout_ms) and exit its loop. Thread-safe. */
void lg_server_stop(struct lg_server *s);
/* True once every started worker's loop has ended (after lg_server_stop,
 * when the drain is over). Thread-safe. */
bool lg_server_finished(struct lg_server *s);
/* Wait for the workers to end, then free everything. */
void lg_server_free(struct lg_server *s);
/* Open client connections of all workers (a gauge). Thread-safe. */
int64_t lg_server_connections(struct lg_server *s);
/* Number of workers started. */
size_t lg_server_workers(const struct lg_server *s);

#endif
