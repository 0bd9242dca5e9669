/* auth.h - authenticating a request: JWT (with a verified-token cache) and API keys. */
#ifndef LG_AUTH_H
#define LG_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/apikey.h"
#include "lambdagate/conf.h"
#include "lambdagate/event.h"
#include "lambdagate/http.h"
#include "lambdagate/lambdagate.h"

struct event_base;
struct lg_jwks_provider;

/* Verified tokens kept per worker; the oldest is dropped past this. */
#define LG_AUTH_CACHE_MAX 16384
/* The longest a request waits for a key set refetched because its token
 * named an unknown kid (AWS gives a JWKS endpoint 1500 ms). */
#define LG_AUTH_REFETCH_WAIT_MS 2000

enum lg_auth_outcome {
    LG_AUTH_PASS = 0,
    LG_AUTH_UNAUTHORIZED, /* 401: no token, or a token that does not verify */
    LG_AUTH_FORBIDDEN,    /* 403: a valid token without the scope; a missing or unknown API key */
    LG_AUTH_PENDING,      /* waiting for a key set; the wake callback runs later */
};

struct lg_auth_token;

/* The outcome of one check, and the caller's identity when it passed. */
struct lg_auth_result {
    enum lg_auth_outcome outcome;
    bool token_sent;         /* 401: a token was sent: error="invalid_token" */
    bool insufficient_scope; /* 403 of a jwt route */
    /* For the event (CONTRACT section 4); pointers borrow from token, from
     * the conf's API keys, and from api_key_buf. */
    struct lg_event_identity identity;
    /* For throttling, per-user caching and the access log: the JWT's
     * identity claim or the API key's id; NULL when none. */
    const char *identity_text;
    const struct lg_apikey *api_key; /* borrowed from the conf */
    struct lg_auth_token *token;     /* a reference; released by lg_auth_result_clear */
    char api_key_buf[LG_APIKEY_VALUE_MAX + 1];
    char reason[LG_ERR_LEN]; /* why it failed, for the diagnostic log; never the token */
};

/* Per-worker state: the verified-token cache and pending waits. Runs on
 * the worker's loop only. jwks may be NULL (no jwks_url). */
struct lg_auth_worker;
struct lg_auth_worker *lg_auth_worker_new(struct event_base *base, struct lg_jwks_provider *jwks);
void lg_auth_worker_free(struct lg_auth_worker *w);

typedef void (*lg_auth_wake_cb)(void *arg);
struct lg_auth_wait;

/* Authenticate a request for route (whose auth is not "none") with conf's
 * authenticators. headers are the request's. On LG_AUTH_PENDING, *wait is
 * set and wake(arg) runs later on the worker's loop (once); the caller then
 * calls lg_auth_check again with retry true (which never pends). Otherwise
 * res is final; clear it with lg_auth_result_clear when done. */
enum lg_auth_outcome lg_auth_check(struct lg_auth_worker *w, struct lg_conf *conf,
                                   const struct lg_conf_route *route,
                                   const struct lg_http_header *headers, size_t nheaders,
                                   bool retry, struct lg_auth_result *res, lg_auth_wake_cb wake,
                                   void *arg, struct lg_auth_wait **wait);
/* Cancel a pending wait (its wake will not run). Accepts NULL. */
void lg_auth_wait_cancel(struct lg_auth_wait *wait);
void lg_auth_result_clear(struct lg_auth_result *res);

#endif
