/* unit_util.h - what several unit tests share: a scratch directory per
 * test, stderr captured to check log lines, a monotonic clock, running an
 * event loop until a condition holds, and an HTTP(S) server on 127.0.0.1
 * (libevent's evhttp) for a client under test. */
#ifndef LG_UNIT_UTIL_H
#define LG_UNIT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct event_base;
struct evhttp;
struct evhttp_request;

/* Make a new directory named prefix-XXXXXX under $TMPDIR (else /tmp) for
 * the running test (call it from the fixture's setup, in the forked
 * child); ut_scratch_remove() removes it with what it holds. */
void ut_scratch_make(const char *prefix);
void ut_scratch_remove(void);
const char *ut_scratch_dir(void);
/* The path of name in it (one of 8 static buffers, used in turn). */
const char *ut_scratch_path(const char *name);

/* Send stderr (the log) to a file of the scratch directory until
 * ut_stderr_end(), which puts it back, so that sanitizer reports stay
 * visible, and returns what was written (at most 64 KB; caller frees). */
void ut_stderr_begin(void);
char *ut_stderr_end(void);

/* A TCP port of 127.0.0.1 that was free a moment ago (nothing listens on
 * it unless something took it since). */
int ut_free_port(void);

/* Seconds on CLOCK_MONOTONIC. */
double ut_now_s(void);

/* Run base until cond(ctx, arg) holds or seconds pass (the loop wakes at
 * least every 2 ms to look); true when it held. cond NULL: run for the
 * whole time, and return false. */
bool ut_run_until(struct event_base *base, bool (*cond)(void *ctx, uint64_t arg), void *ctx,
                  uint64_t arg, double seconds);

/* A few passes over what is ready now, without waiting (e.g. for the
 * zero-delay timers that release cancelled connections). */
void ut_loop_settle(struct event_base *base);

/* An evhttp server on 127.0.0.1 at a free port (*port), speaking TLS with
 * tls when it is not NULL; requests go to cb(req, arg). Fails the test
 * when it cannot listen. Free with evhttp_free(). */
struct evhttp *ut_http_listen(struct event_base *base, SSL_CTX *tls,
                              void (*cb)(struct evhttp_request *req, void *arg), void *arg,
                              int *port);

#endif
