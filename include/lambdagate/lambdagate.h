/* lambdagate.h - types, limits and macros shared by every subsystem. */
#ifndef LG_LAMBDAGATE_H
#define LG_LAMBDAGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Results that must be checked: 0 / -1 and bool functions carry this. */
#define LG_WUR          __attribute__((warn_unused_result))
#define LG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define LG_UNUSED       __attribute__((unused))
#define LG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal (or char array) and its length, as two arguments:
 * evbuffer_add(buf, LG_LITERAL("\r\n")). The length is never counted by hand. */
#define LG_LITERAL(s) (s), (sizeof(s) - 1)

/* Lambda's documented payload limits (Invoke API): the request payload of a
 * synchronous call and of an asynchronous (Event) call. */
#define LG_LAMBDA_SYNC_PAYLOAD_MAX  6291456u
#define LG_LAMBDA_ASYNC_PAYLOAD_MAX 1048576u

/* The largest Invoke response we accept from Lambda (API Gateway's own
 * payload limit is 10 MB; Lambda's response limit is 6 MB). Anything larger
 * is treated as a broken upstream. */
#define LG_LAMBDA_RESPONSE_MAX (10u * 1024u * 1024u)

/* Nesting allowed in JSON from outside (function answers, tokens, JWKS). */
#define LG_JSON_MAX_DEPTH 64

/* Length of a request id: a UUID in its 36-character text form. */
#define LG_REQUEST_ID_LEN 36

/* Size of an error-message buffer passed to functions that report why they
 * failed. */
#define LG_ERR_LEN 256

/* Clocks: monotonic for deadlines and durations, wall for what is shown
 * or shared with other hosts (event times, cache entry ages, quotas). */
static inline int64_t lg_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t lg_mono_ms(void)
{
    return lg_mono_us() / 1000;
}

static inline int64_t lg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
