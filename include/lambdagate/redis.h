/* redis.h - an asynchronous Redis client on a worker's event loop, with deadlines and reconnects.
 */
#ifndef LG_REDIS_H
#define LG_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

struct event_base;
struct redisReply;

/* One connection to the Redis of the config (redis.host, port, password,
 * db, timeout_ms), owned by one event loop (one per worker). hiredis 0.14
 * has no deadlines of its own: every connect and every command here has
 * timeout_ms. While the connection is down, commands fail at once (they
 * are not queued), and it reconnects in the background with backoff
 * (100 ms doubling to 5 s). Each change between up and down is logged
 * once. */
struct lg_redis;

enum lg_redis_status {
    LG_REDIS_OK = 0,  /* reply is set (it may be a Redis error reply: check its type) */
    LG_REDIS_DOWN,    /* not connected: the command was not sent */
    LG_REDIS_TIMEOUT, /* no reply within timeout_ms */
    LG_REDIS_ERROR,   /* the connection broke, or the reply was unusable (an
                       * array of over 4096 elements is: the connection is
                       * dropped) */
};

/* reply is valid during the callback only. */
typedef void (*lg_redis_cb)(enum lg_redis_status status, const struct redisReply *reply, void *arg);

struct lg_redis_cmd;

/* Start connecting (AUTH and SELECT follow when configured). conf is
 * copied. NULL on no memory. */
struct lg_redis *lg_redis_new(struct event_base *base, const struct lg_conf_redis *conf);
/* Close and free; pending commands are dropped without callbacks.
 * Allowed inside a command's callback (no other callback runs after it).
 * Call before freeing base. Accepts NULL. */
void lg_redis_free(struct lg_redis *r);
/* True while connected and ready. */
bool lg_redis_up(const struct lg_redis *r);

/* Send one command, arguments binary-safe (argvlen[i] bytes each; borrowed
 * for this call only). cb runs exactly once, later (never inside this
 * call), unless the command is cancelled or the client freed first.
 * Commands are pipelined. The handle is valid until cb runs or the command
 * is cancelled. (P|S)SUBSCRIBE, their UNSUBSCRIBE and MONITOR are refused
 * with LG_REDIS_ERROR. NULL only on no memory. */
struct lg_redis_cmd *lg_redis_command(struct lg_redis *r, int argc, const char *const *argv,
                                      const size_t *argvlen, lg_redis_cb cb, void *arg);
/* Forget a command: its cb will not run (a late reply is discarded).
 * Accepts NULL. Not allowed inside that command's own callback. */
void lg_redis_cancel(struct lg_redis_cmd *cmd);

/* A Lua script run with EVALSHA; on a NOSCRIPT error reply the call is
 * sent again once as EVAL with the source (which loads it again), within
 * the same deadline. source is borrowed: it must outlive s. */
struct lg_redis_script {
    const char *source;
    char sha1[41]; /* hex SHA-1 of source */
};
void lg_redis_script_init(struct lg_redis_script *s, const char *source);
/* EVALSHA sha1 nkeys keys... args...: argv holds the nkeys keys then the
 * other arguments (argc in all). script is borrowed until cb runs or the
 * command is cancelled. */
struct lg_redis_cmd *lg_redis_eval(struct lg_redis *r, const struct lg_redis_script *script,
                                   int nkeys, int argc, const char *const *argv,
                                   const size_t *argvlen, lg_redis_cb cb, void *arg);

/* Write the commands sent so far now, instead of when the loop next finds
 * the socket writable (after whatever else is ready then). No callback
 * runs inside (a failed write ends the connection; its commands are
 * failed from the loop). Accepts NULL; does nothing while not up. */
void lg_redis_flush(struct lg_redis *r);

/* Commands that failed (down, timeout, broken, error reply) in this
 * process, all clients together: lambdagate_redis_errors_total.
 * Thread-safe. */
uint64_t lg_redis_errors_total(void);

#endif
