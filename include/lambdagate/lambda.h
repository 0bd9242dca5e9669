/* lambda.h - the Invoke client: signed requests, connection pools, error mapping. */
#ifndef LG_LAMBDA_H
#define LG_LAMBDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/buf.h"
#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

struct event_base;
struct evdns_base;
struct lg_creds_provider;

enum lg_lambda_outcome {
    LG_LAMBDA_OK = 0,         /* 200 (sync) or 202 (async), no function error */
    LG_LAMBDA_FUNCTION_ERROR, /* X-Amz-Function-Error */
    LG_LAMBDA_THROTTLED,      /* 429 from Lambda */
    LG_LAMBDA_TOO_LARGE,      /* 413 from Lambda */
    LG_LAMBDA_TIMEOUT,        /* no answer within the route's timeout */
    LG_LAMBDA_ERROR,          /* unreachable, TLS failure, other 4xx/5xx, no credentials */
};

/* Short name of an outcome for metrics and logs ("ok", "function_error", ...). */
const char *lg_lambda_outcome_name(enum lg_lambda_outcome o);

struct lg_lambda_result {
    enum lg_lambda_outcome outcome;
    int http_status;     /* Lambda's status; 0 when there was no answer */
    const char *payload; /* borrowed, valid during the callback; NUL-terminated */
    size_t payload_len;
    int64_t retry_after_s; /* from Lambda's Retry-After; 0 when absent */
    const char *detail;    /* why, for the diagnostic log (never secrets) */
    int64_t duration_us;   /* time from start to answer */
};

typedef void (*lg_lambda_done_cb)(const struct lg_lambda_result *res, void *arg);

struct lg_lambda_client;
struct lg_lambda_call;

/* One client per worker thread; creds is shared (thread-safe). Caller frees
 * with lg_lambda_client_free() after every call finished or was cancelled. */
struct lg_lambda_client *lg_lambda_client_new(struct event_base *base, struct evdns_base *dns,
                                              struct lg_creds_provider *creds);
void lg_lambda_client_free(struct lg_lambda_client *c);

/* Invoke route's function with payload (the buffer's contents are taken;
 * payload is left empty). conf must stay referenced until the callback.
 * done runs exactly once, never inside this call, unless the call is
 * cancelled first. NULL only on memory exhaustion. */
struct lg_lambda_call *lg_lambda_invoke(struct lg_lambda_client *c, const struct lg_conf *conf,
                                        const struct lg_conf_route *route, struct lg_buf *payload,
                                        const char *request_id, lg_lambda_done_cb done, void *arg);
/* Abandon a call (the client went away): done will not run. */
void lg_lambda_cancel(struct lg_lambda_call *call);

/* Connections opened so far by this client (for tests and metrics). */
uint64_t lg_lambda_client_connections_opened(const struct lg_lambda_client *c);

#endif
