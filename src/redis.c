/* redis.c - hiredis async wrapper: connect, backoff, per-command deadlines, scripts. */
#include "config.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lambdagate/codec.h"
#include "lambdagate/log.h"
#include "lambdagate/redis.h"

/* Reconnect delays: the first retry comes quickly (a restart of Redis is
 * the common case), then doubles so that a Redis that stays away costs
 * one connect attempt every 5 s per worker. */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000

/* This many commands timing out with no reply in between means the
 * connection (or Redis) is stuck: replies that come late are useless, and
 * every new command would wait out its deadline too. Drop it and
 * reconnect, so that commands fail at once (DOWN) meanwhile. */
#define TIMEOUTS_IN_ROW_MAX 3

/* lambdagate_redis_errors_total. */
static atomic_uint_fast64_t redis_errors_total;

enum conn_state {
    ST_DOWN,       /* no context; timer = next reconnect */
    ST_CONNECTING, /* TCP connect in progress; timer = connect deadline */
    ST_HANDSHAKE,  /* AUTH / SELECT / PING sent; timer = same deadline */
    ST_UP,         /* commands are sent; timer idle */
};

/* What was last logged, so that each change is logged once and repeated
 * failed reconnects are silent. */
enum logged_state {
    LOGGED_NOTHING,
    LOGGED_UP,
    LOGGED_DOWN,
};

/* The steps of the handshake, as privdata of their hiredis callbacks. */
enum handshake_step {
    STEP_AUTH = 1,
    STEP_SELECT,
    STEP_PING,
};

struct lg_redis {
    struct event_base *base;
    char *host;
    int port;
    char *password; /* NULL = no AUTH; wiped on free, never logged */
    int db;
    int64_t timeout_ms;

    /* The live hiredis context, NULL while down. Its data points back to
     * us; a context we let go has data NULL, so that the callbacks hiredis
     * still runs while freeing it (reply callbacks with a NULL reply, the
     * disconnect callback) know it is no longer ours. */
    redisAsyncContext *ac;
    enum conn_state state;
    enum logged_state logged;
    struct event *timer; /* see enum conn_state */
    int64_t backoff_ms;  /* delay before the next reconnect */
    int timeouts_in_row;

    /* Commands whose callback is still due (doubly linked). */
    struct lg_redis_cmd *cmds;
    struct lg_buf resp; /* a command being formatted (reused) */
};

/* One command. Two owners, one after the other or both at once:
 * - the user side (r set, linked in r->cmds) until the callback has run
 *   or the command is cancelled or the client freed;
 * - hiredis (in_hiredis) from the send until its reply callback, which
 *   runs exactly once: with the reply, or with NULL while hiredis frees
 *   the context.
 * The record is freed when both are done with it. */
struct lg_redis_cmd {
    struct lg_redis *r; /* NULL once the user side is done */
    struct lg_redis_cmd *prev, *next;
    struct event *ev; /* deadline while waiting; deferred delivery otherwise */
    lg_redis_cb cb;
    void *arg;
    bool in_hiredis;
    bool before_up;  /* sent during the handshake: a failed connect means DOWN */
    bool has_result; /* ev delivers result (not a deadline) */
    enum lg_redis_status result;

    /* lg_redis_eval only: the arguments as EVAL wants them (copies; the
     * source borrowed from the script), to send again after NOSCRIPT. */
    const char **eval_argv;
    size_t *eval_argvlen;
    int eval_argc;
    const struct lg_redis_script *script;
    bool retried;
};

static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void cmd_event_cb(evutil_socket_t fd, short what, void *arg);

static void count_error(void)
{
    atomic_fetch_add_explicit(&redis_errors_total, 1, memory_order_relaxed);
}

uint64_t lg_redis_errors_total(void)
{
    return (uint64_t)atomic_load_explicit(&redis_errors_total, memory_order_relaxed);
}

static struct timeval ms_to_timeval(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ---------------------------------------------------------------------- */
/* Connection state                                                        */
/* ---------------------------------------------------------------------- */

/* Let go of the live context: hiredis frees it (now, or after the hiredis
 * callback we are inside returns), running the reply callbacks of the
 * commands it holds with a NULL reply. */
static void drop_context(struct lg_redis *r)
{
    redisAsyncContext *ac = r->ac;
    if (ac == NULL)
        return;
    r->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void schedule_reconnect(struct lg_redis *r)
{
    struct timeval tv = ms_to_timeval(r->backoff_ms);
    evtimer_del(r->timer);
    evtimer_add(r->timer, &tv);
    r->backoff_ms *= 2;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
}

/* The context is gone (the caller has dropped it, or hiredis is freeing
 * it): log once, retry later. reason must not hold the password. */
static void go_down(struct lg_redis *r, const char *reason)
{
    r->state = ST_DOWN;
    r->timeouts_in_row = 0;
    if (r->logged != LOGGED_DOWN) {
        char text[LG_ERR_LEN]; /* it may quote what the server said */
        lg_log(LG_LOG_WARN, "redis down host=%s port=%d reason=\"%s\"", r->host, r->port,
               lg_log_cleaned(text, sizeof(text), reason));
        r->logged = LOGGED_DOWN;
    }
    schedule_reconnect(r);
}

static void go_up(struct lg_redis *r)
{
    r->state = ST_UP;
    evtimer_del(r->timer);
    r->backoff_ms = BACKOFF_FIRST_MS;
    r->timeouts_in_row = 0;
    if (r->logged != LOGGED_UP) {
        lg_log(LG_LOG_INFO, "redis up host=%s port=%d", r->host, r->port);
        r->logged = LOGGED_UP;
    }
}

/* hiredis is freeing ac because the connection broke (read or write error,
 * EOF, or a reply without a command). Called from inside hiredis: only
 * bookkeeping here, no user callbacks. */
static void context_lost(struct lg_redis *r, const redisAsyncContext *ac)
{
    if (r->ac != ac)
        return;
    r->ac = NULL;
    ((redisAsyncContext *)ac)->data = NULL; /* its remaining callbacks are not ours */
    go_down(r, ac->c.err ? ac->c.errstr : "connection closed");
}

/* Disconnect callback: runs last while hiredis frees a context that had
 * connected (never for one we dropped: its data is NULL). */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct lg_redis *r = ac->data;
    if (r != NULL)
        context_lost(r, ac);
}

/* Replies to the handshake. hiredis 0.14 runs these with its IN_CALLBACK
 * flag set, so dropping the context here only marks it, and hiredis frees
 * it after we return. */
static void handshake_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct lg_redis *r = ac->data;
    if (r == NULL || r->ac != ac)
        return; /* dropped (connect deadline, lg_redis_free) */
    if (reply == NULL) {
        context_lost(r, ac);
        return;
    }
    const redisReply *rep = reply;
    enum handshake_step step = (enum handshake_step)(intptr_t)privdata;
    if (rep->type == REDIS_REPLY_ERROR) {
        const char *what = step == STEP_AUTH ? "AUTH" : step == STEP_SELECT ? "SELECT" : "PING";
        const char *msg = rep->str ? rep->str : "";
        /* A server should never echo the password, but a log line must
         * never carry it, whatever the server says. */
        if (r->password && r->password[0] && strstr(msg, r->password))
            msg = "(reply withheld)";
        char reason[256];
        snprintf(reason, sizeof(reason), "%s failed: %.200s", what, msg);
        drop_context(r);
        go_down(r, reason);
        return;
    }
    if (step == STEP_PING)
        go_up(r);
}

/* Queue one handshake command; -1 when hiredis refuses it. */
static int handshake_send(struct lg_redis *r, enum handshake_step step, int argc, const char **argv,
                          const size_t *argvlen)
{
    return redisAsyncCommandArgv(r->ac, handshake_cb, (void *)(intptr_t)step, argc, argv,
                                 argvlen) == REDIS_OK
               ? 0
               : -1;
}

/* Connect callback. hiredis 0.14 calls it without its IN_CALLBACK flag and
 * frees the context itself right after a failure, so nothing here may
 * free or drop the context. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct lg_redis *r = ac->data;
    if (r == NULL || r->ac != ac)
        return;
    if (status != REDIS_OK) {
        r->ac = NULL; /* hiredis frees it when we return */
        ((redisAsyncContext *)ac)->data = NULL;
        go_down(r, ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        return;
    }
}

/* The handshake is queued right after the connect starts (hiredis writes
 * it once the TCP connection is up), so that commands sent meanwhile
 * follow it on the wire: a request arriving while the first connection
 * is made waits for it, within its deadline, instead of failing at once.
 * The client is up when PING answers, which proves AUTH and SELECT
 * succeeded (their callbacks run first) and that the server accepts
 * commands (PING fails with NOAUTH when Redis wants a password we do not
 * have, or LOADING). */
static void send_handshake(struct lg_redis *r)
{
    r->state = ST_HANDSHAKE;
    int rc = 0;
    if (r->password != NULL) {
        const char *argv[] = {"AUTH", r->password};
        const size_t argvlen[] = {4, strlen(r->password)};
        rc |= handshake_send(r, STEP_AUTH, 2, argv, argvlen);
    }
    if (r->db != 0) {
        char dbtext[16];
        int n = snprintf(dbtext, sizeof(dbtext), "%d", r->db);
        const char *argv[] = {"SELECT", dbtext};
        const size_t argvlen[] = {6, (size_t)n};
        rc |= handshake_send(r, STEP_SELECT, 2, argv, argvlen);
    }
    const char *argv[] = {"PING"};
    const size_t argvlen[] = {4};
    rc |= handshake_send(r, STEP_PING, 1, argv, argvlen);
    if (rc != 0) {
        /* Only a context already being torn down refuses commands; its
         * callbacks will report the loss. Leave it to them and to the
         * connect deadline. */
        lg_log(LG_LOG_DEBUG, "redis handshake not sent host=%s port=%d", r->host, r->port);
    }
}

/* ---------------------------------------------------------------------- */
/* hiredis on the worker's loop                                           */
/* ---------------------------------------------------------------------- */

/* hiredis's event hooks, written here rather than taken from
 * hiredis/adapters/libevent.h, whose events are not persistent: each reply
 * cost an epoll_ctl DEL and ADD, and each command EPOLLOUT on and off, so
 * four system calls per command besides its write and read. Here the read
 * event persists; a command queued on a connected context is written from
 * the loop's active queue (event_active: no system call), unless
 * lg_redis_flush wrote it first; only a write that the socket does not take
 * whole waits for EPOLLOUT. */
struct hooks {
    redisAsyncContext *ac;
    struct event *rev, *wev;
    bool in_write; /* inside redisAsyncHandleWrite */
    bool freed;    /* cleaned up meanwhile: free when it returns */
};

/* Write what hiredis has. It may free the context (a write error), and
 * with it these hooks: h is not used after, unless still ours. */
static void hooks_write(struct hooks *h)
{
    h->in_write = true;
    redisAsyncHandleWrite(h->ac);
    if (h->freed) {
        free(h);
        return;
    }
    h->in_write = false;
}

static void hooks_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hooks *h = arg;
    redisAsyncHandleRead(h->ac);
}

static void hooks_write_cb(evutil_socket_t fd, short what, void *arg)
{
    hooks_write(arg);
}

static void hooks_add_read(void *arg)
{
    struct hooks *h = arg;
    if (!event_pending(h->rev, EV_READ, NULL))
        event_add(h->rev, NULL);
}

static void hooks_del_read(void *arg)
{
    struct hooks *h = arg;
    event_del(h->rev);
}

static void hooks_add_write(void *arg)
{
    struct hooks *h = arg;
    /* Connected and not already writing: try the write from the active
     * queue. Else (connect in progress, or what is left of a write) wait
     * until the socket is writable. */
    if (!h->in_write && (h->ac->c.flags & REDIS_CONNECTED))
        event_active(h->wev, EV_WRITE, 1);
    else
        event_add(h->wev, NULL);
}

static void hooks_del_write(void *arg)
{
    struct hooks *h = arg;
    event_del(h->wev); /* also out of the active queue */
}

static void hooks_cleanup(void *arg)
{
    struct hooks *h = arg;
    event_free(h->rev);
    event_free(h->wev);
    if (h->in_write)
        h->freed = true;
    else
        free(h);
}

static int hooks_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct hooks *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->ac = ac;
    h->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, hooks_read_cb, h);
    h->wev = event_new(base, ac->c.fd, EV_WRITE, hooks_write_cb, h);
    if (h->rev == NULL || h->wev == NULL) {
        if (h->rev)
            event_free(h->rev);
        if (h->wev)
            event_free(h->wev);
        free(h);
        return -1;
    }
    ac->ev.addRead = hooks_add_read;
    ac->ev.delRead = hooks_del_read;
    ac->ev.addWrite = hooks_add_write;
    ac->ev.delWrite = hooks_del_write;
    ac->ev.cleanup = hooks_cleanup;
    ac->ev.data = h;
    /* The connect completes when the socket turns writable. */
    event_add(h->rev, NULL);
    event_add(h->wev, NULL);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reply objects                                                           */
/* ---------------------------------------------------------------------- */

/* hiredis's reader builds a reply with these. They are hiredis's own
 * functions, except that the reply records are kept for reuse by the
 * thread that freed them (up to REPLY_SPARES): a throttle script call's
 * reply is an array of a few dozen integers, and hiredis makes a calloc
 * and a free of each, whose frees spill into malloc's fast bins. Strings
 * and element arrays are malloc'd as hiredis does, so freeReplyObject
 * would free such a reply correctly too. */
#define REPLY_SPARES 256

/* hiredis 0.14's reader has no cap on an array's length, and makes room
 * for all its elements at once: a server that announced a billion would
 * cost us 8 GB. Ours are small (a throttle call answers at most 128
 * integers), so a longer array is refused: the reader fails, the
 * connection is dropped and its commands fail (the stores fall back). */
#define REPLY_ELEMENTS_MAX 4096

struct spare {
    struct spare *next;
};

struct reply_pool {
    struct spare *head;
    size_t n;
};

static _Thread_local struct reply_pool *reply_pool;
static pthread_once_t reply_pool_once = PTHREAD_ONCE_INIT;
static pthread_key_t reply_pool_key; /* frees a thread's pool when it ends */
static bool reply_pool_key_ok;

static void reply_pool_free(void *arg)
{
    struct reply_pool *p = arg;
    while (p->head) {
        struct spare *x = p->head;
        p->head = x->next;
        free(x);
    }
    free(p);
    reply_pool = NULL;
}

static void reply_pool_setup(void)
{
    reply_pool_key_ok = pthread_key_create(&reply_pool_key, reply_pool_free) == 0;
}

/* The calling thread's pool, or NULL (then records are not kept). */
static struct reply_pool *reply_pool_get(void)
{
    if (reply_pool != NULL)
        return reply_pool;
    pthread_once(&reply_pool_once, reply_pool_setup);
    if (!reply_pool_key_ok)
        return NULL;
    struct reply_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (pthread_setspecific(reply_pool_key, p) != 0) {
        free(p);
        return NULL;
    }
    reply_pool = p;
    return p;
}

static redisReply *reply_new(const redisReadTask *task, int type)
{
    struct reply_pool *p = reply_pool_get();
    redisReply *r;
    if (p != NULL && p->head != NULL) {
        struct spare *x = p->head;
        p->head = x->next;
        p->n--;
        r = (redisReply *)x;
        memset(r, 0, sizeof(*r));
    } else if ((r = calloc(1, sizeof(*r))) == NULL) {
        return NULL;
    }
    r->type = type;
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void reply_free(void *reply)
{
    redisReply *r = reply;
    if (r == NULL)
        return;
    switch (r->type) {
    case REDIS_REPLY_ARRAY:
        if (r->element != NULL) {
            for (size_t i = 0; i < r->elements; i++)
                reply_free(r->element[i]);
            free(r->element);
        }
        break;
    case REDIS_REPLY_ERROR:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_STRING:
        free(r->str);
        break;
    default:
        break;
    }
    struct reply_pool *p = reply_pool_get();
    if (p == NULL || p->n >= REPLY_SPARES) {
        free(r);
        return;
    }
    struct spare *x = (struct spare *)r;
    x->next = p->head;
    p->head = x;
    p->n++;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, str, len);
    copy[len] = '\0';
    redisReply *r = reply_new(task, task->type);
    if (r == NULL) {
        free(copy);
        return NULL;
    }
    r->str = copy;
    r->len = len;
    return r;
}

static void *reply_array(const redisReadTask *task, int elements)
{
    redisReply **element = NULL;
    if (elements > REPLY_ELEMENTS_MAX)
        return NULL;
    if (elements > 0 && (element = calloc((size_t)elements, sizeof(*element))) == NULL)
        return NULL;
    redisReply *r = reply_new(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        free(element);
        return NULL;
    }
    r->element = element;
    r->elements = elements > 0 ? (size_t)elements : 0;
    return r;
}

static void *reply_integer(const redisReadTask *task, long long value)
{
    redisReply *r = reply_new(task, REDIS_REPLY_INTEGER);
    if (r != NULL)
        r->integer = value;
    return r;
}

static void *reply_nil(const redisReadTask *task)
{
    return reply_new(task, REDIS_REPLY_NIL);
}

static redisReplyObjectFunctions reply_functions = {
    .createString = reply_string,
    .createArray = reply_array,
    .createInteger = reply_integer,
    .createNil = reply_nil,
    .freeObject = reply_free,
};

/* Start a connection attempt. redisAsyncConnect does not block on the
 * TCP handshake, but it resolves redis.host with getaddrinfo(), which
 * blocks: fine for an address or "localhost", a stall of the worker's
 * loop for a name that needs DNS (documented for redis.host). It can
 * fail at once (e.g. ECONNREFUSED on loopback), reported in ac->err. */
static void start_connect(struct lg_redis *r)
{
    r->state = ST_CONNECTING;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        go_down(r, "out of memory");
        return;
    }
    if (ac->err) {
        char reason[160];
        snprintf(reason, sizeof(reason), "%s", ac->errstr ? ac->errstr : "connect failed");
        redisAsyncFree(ac); /* not attached, no callbacks set: freed now */
        go_down(r, reason);
        return;
    }
    if (hooks_attach(ac, r->base) != 0) {
        redisAsyncFree(ac);
        go_down(r, "cannot attach to the event loop");
        return;
    }
    ac->data = r;
    ac->c.reader->fn = &reply_functions;
    /* hiredis 0.14's reader has no cap on a string's size (the server's
     * proto-max-bulk-len bounds it; an array's length is capped by
     * reply_array); replies here are what we stored. Its
     * maxbuf (16 KiB by default) releases a large read buffer once it is
     * drained, so an idle connection holds little memory: kept. */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    send_handshake(r);
    /* hiredis 0.14 has no connect timeout in async mode. */
    struct timeval tv = ms_to_timeval(r->timeout_ms);
    evtimer_del(r->timer);
    evtimer_add(r->timer, &tv);
}

/* The client's timer: reconnect after a backoff, or give up a connect
 * (TCP or handshake) that missed its deadline. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_redis *r = arg;
    switch (r->state) {
    case ST_DOWN:
        start_connect(r);
        break;
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        drop_context(r);
        go_down(r, "connect timed out");
        break;
    case ST_UP:
        break;
    }
}

struct lg_redis *lg_redis_new(struct event_base *base, const struct lg_conf_redis *conf)
{
    struct lg_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->base = base;
    r->host = strdup(conf->host ? conf->host : "127.0.0.1");
    r->password = conf->password ? strdup(conf->password) : NULL;
    r->port = conf->port;
    r->db = conf->db;
    r->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : 1;
    r->backoff_ms = BACKOFF_FIRST_MS;
    lg_buf_init(&r->resp, 0);
    r->timer = evtimer_new(base, timer_cb, r);
    if (r->host == NULL || (conf->password && r->password == NULL) || r->timer == NULL) {
        lg_redis_free(r);
        return NULL;
    }
    start_connect(r);
    return r;
}

void lg_redis_flush(struct lg_redis *r)
{
    if (r == NULL || r->ac == NULL || r->state != ST_UP)
        return;
    /* hiredis writes what it can and keeps write interest for the rest;
     * on an error it frees the context, which reaches context_lost and
     * fails the commands through cmd_finish_later. */
    hooks_write(r->ac->ev.data);
}

bool lg_redis_up(const struct lg_redis *r)
{
    return r->state == ST_UP;
}

/* ---------------------------------------------------------------------- */
/* Commands                                                                */
/* ---------------------------------------------------------------------- */

static struct lg_redis_cmd *cmd_new(struct lg_redis *r, lg_redis_cb cb, void *arg)
{
    struct lg_redis_cmd *cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return NULL;
    cmd->ev = evtimer_new(r->base, cmd_event_cb, cmd);
    if (cmd->ev == NULL) {
        free(cmd);
        return NULL;
    }
    cmd->r = r;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->next = r->cmds;
    if (r->cmds)
        r->cmds->prev = cmd;
    r->cmds = cmd;
    return cmd;
}

/* End the user side: the callback is no longer due. */
static void cmd_unlink(struct lg_redis_cmd *cmd)
{
    struct lg_redis *r = cmd->r;
    if (r == NULL)
        return;
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        r->cmds = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
    cmd->prev = cmd->next = NULL;
    cmd->r = NULL;
    cmd->cb = NULL;
    cmd->arg = NULL;
}

/* Free the record; both owners are done with it. libevent allows freeing
 * a non-persistent event from inside its own callback (it is deleted
 * before the callback runs and not touched after), which happens when a
 * deferred delivery ends. */
static void cmd_release(struct lg_redis_cmd *cmd)
{
    event_free(cmd->ev);
    free(cmd->eval_argv);
    free(cmd);
}

/* Deliver status from the event loop, not from the caller's stack (a
 * callback never runs inside lg_redis_command) nor from inside hiredis. */
static void cmd_finish_later(struct lg_redis_cmd *cmd, enum lg_redis_status status)
{
    cmd->has_result = true;
    cmd->result = status;
    evtimer_del(cmd->ev);
    event_active(cmd->ev, EV_TIMEOUT, 1);
}

/* Send cmd's arguments on the live context and arm its deadline. */
static int cmd_send(struct lg_redis *r, struct lg_redis_cmd *cmd, redisCallbackFn *fn, int argc,
                    const char *const *argv, const size_t *argvlen)
{
    /* RESP formatted here, in one reused buffer, rather than by
     * redisAsyncCommandArgv, whose sds building (a printf-like call and a
     * reallocation per argument) cost more than the rest of a throttle
     * decision on our side. */
    struct lg_buf *b = &r->resp;
    lg_buf_reset(b);
    char num[LG_CODEC_INT_MAX];
    int rc = lg_buf_putc(b, '*');
    rc |= lg_buf_append(b, num, lg_codec_i64(num, argc));
    rc |= lg_buf_append(b, "\r\n", 2);
    for (int i = 0; i < argc; i++) {
        rc |= lg_buf_putc(b, '$');
        rc |= lg_buf_append(b, num, lg_codec_i64(num, (int64_t)argvlen[i]));
        rc |= lg_buf_append(b, "\r\n", 2);
        rc |= lg_buf_append(b, argv[i], argvlen[i]);
        rc |= lg_buf_append(b, "\r\n", 2);
    }
    rc = rc != 0 || redisAsyncFormattedCommand(r->ac, fn, cmd, b->data, b->len) != REDIS_OK;
    if (b->cap > 262144) {
        /* A large value (a cache entry) is not kept here: hiredis has a copy. */
        lg_buf_free(b);
        lg_buf_init(b, 0);
    }
    if (rc)
        return -1;
    cmd->in_hiredis = true;
    return 0;
}

static void cmd_arm_deadline(struct lg_redis *r, struct lg_redis_cmd *cmd)
{
    struct timeval tv = ms_to_timeval(r->timeout_ms);
    evtimer_add(cmd->ev, &tv);
}

static bool is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && rep->str != NULL && rep->len >= 8 &&
           strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* hiredis's reply callback for every command: exactly once per send. */
static void cmd_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct lg_redis_cmd *cmd = privdata;
    const redisReply *rep = reply;
    struct lg_redis *r = cmd->r;
    cmd->in_hiredis = false;

    if (rep == NULL) {
        /* hiredis is freeing ac: the connection broke, or we dropped it. */
        struct lg_redis *owner = ac->data;
        if (owner != NULL)
            context_lost(owner, ac);
        if (r == NULL)
            cmd_release(cmd);
        else
            cmd_finish_later(cmd, cmd->before_up ? LG_REDIS_DOWN : LG_REDIS_ERROR);
        return;
    }
    if (r == NULL) {
        cmd_release(cmd); /* timed out or cancelled: a late reply */
        return;
    }
    r->timeouts_in_row = 0;

    if (cmd->script != NULL && !cmd->retried && is_noscript(rep)) {
        /* Redis lost the script (restart, SCRIPT FLUSH, failover): send the
         * source with EVAL, which also caches it again, within the same
         * deadline. */
        cmd->retried = true;
        if (r->ac != ac ||
            cmd_send(r, cmd, cmd_reply_cb, cmd->eval_argc, cmd->eval_argv, cmd->eval_argvlen) != 0)
            cmd_finish_later(cmd, LG_REDIS_ERROR);
        return;
    }

    lg_redis_cb cb = cmd->cb;
    void *arg = cmd->arg;
    cmd_unlink(cmd);
    evtimer_del(cmd->ev);
    if (rep->type == REDIS_REPLY_ERROR)
        count_error();
    /* The callback may free the client: hiredis defers freeing ac until
     * this function returns, and cmd is no longer the client's. */
    cb(LG_REDIS_OK, rep, arg);
    cmd_release(cmd);
}

/* A command's event: its deadline passed, or a deferred result is due. */
static void cmd_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_redis_cmd *cmd = arg;
    struct lg_redis *r = cmd->r;
    lg_redis_cb cb = cmd->cb;
    void *cbarg = cmd->arg;

    if (cmd->has_result) {
        enum lg_redis_status status = cmd->result;
        cmd_unlink(cmd);
        count_error();
        cb(status, NULL, cbarg);
        cmd_release(cmd); /* never held by hiredis here */
        return;
    }

    /* Deadline. hiredis keeps the record until the reply (or the end of
     * the context) and then frees it; the callback is due now. */
    cmd_unlink(cmd);
    count_error();
    if (++r->timeouts_in_row >= TIMEOUTS_IN_ROW_MAX && r->ac != NULL) {
        char reason[64];
        snprintf(reason, sizeof(reason), "%d commands timed out in a row", r->timeouts_in_row);
        /* Frees the context now: cmd's record (and this event) too. The
         * other commands get LG_REDIS_ERROR from the loop. */
        drop_context(r);
        go_down(r, reason);
    }
    cb(LG_REDIS_TIMEOUT, NULL, cbarg);
}

/* Names that would put a hiredis 0.14 context into pub/sub or monitor
 * mode, where its reply matching differs (and asserts on surprises). */
static bool command_refused(const char *name, size_t len)
{
    static const char *const refused[] = {"subscribe",   "psubscribe",   "ssubscribe",
                                          "unsubscribe", "punsubscribe", "sunsubscribe",
                                          "monitor"};
    for (size_t i = 0; i < LG_ARRAY_LEN(refused); i++) {
        if (len == strlen(refused[i]) && strncasecmp(name, refused[i], len) == 0)
            return true;
    }
    return false;
}

struct lg_redis_cmd *lg_redis_command(struct lg_redis *r, int argc, const char *const *argv,
                                      const size_t *argvlen, lg_redis_cb cb, void *arg)
{
    struct lg_redis_cmd *cmd = cmd_new(r, cb, arg);
    if (cmd == NULL)
        return NULL;
    if (argc < 1 || command_refused(argv[0], argvlen[0])) {
        cmd_finish_later(cmd, LG_REDIS_ERROR);
        return cmd;
    }
    if (r->state != ST_UP && r->state != ST_HANDSHAKE) {
        cmd_finish_later(cmd, LG_REDIS_DOWN);
        return cmd;
    }
    if (cmd_send(r, cmd, cmd_reply_cb, argc, argv, argvlen) != 0) {
        cmd_finish_later(cmd, LG_REDIS_ERROR);
        return cmd;
    }
    cmd->before_up = r->state != ST_UP;
    cmd_arm_deadline(r, cmd);
    return cmd;
}

void lg_redis_cancel(struct lg_redis_cmd *cmd)
{
    if (cmd == NULL)
        return;
    cmd_unlink(cmd);
    if (cmd->in_hiredis)
        evtimer_del(cmd->ev); /* hiredis frees it at the reply */
    else
        cmd_release(cmd);
}

/* ---------------------------------------------------------------------- */
/* Scripts                                                                 */
/* ---------------------------------------------------------------------- */

void lg_redis_script_init(struct lg_redis_script *s, const char *source)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    s->source = source;
    if (EVP_Digest(source, strlen(source), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
        /* Only without memory: a digest Redis never matches makes every
         * call take the EVAL path, which still works. */
        memset(s->sha1, '0', 40);
        s->sha1[40] = '\0';
        return;
    }
    lg_codec_hex(s->sha1, md, mdlen);
}

/* Copy the arguments into the EVAL form (EVAL source nkeys args...) in
 * one allocation owned by cmd. -1 on no memory or absurd sizes. */
static int eval_args_copy(struct lg_redis_cmd *cmd, const struct lg_redis_script *script, int nkeys,
                          int argc, const char *const *argv, const size_t *argvlen)
{
    size_t total = 0;
    for (int i = 0; i < argc; i++) {
        if (argvlen[i] > SIZE_MAX / 2 - total)
            return -1;
        total += argvlen[i];
    }
    size_t n = (size_t)argc + 3;
    char nkeystext[16];
    int nkeyslen = snprintf(nkeystext, sizeof(nkeystext), "%d", nkeys);
    size_t size = n * (sizeof(char *) + sizeof(size_t)) + (size_t)nkeyslen + total;
    char *block = malloc(size);
    if (block == NULL)
        return -1;
    const char **av = (const char **)(void *)block;
    size_t *avlen = (size_t *)(void *)(block + n * sizeof(char *));
    char *data = block + n * (sizeof(char *) + sizeof(size_t));
    av[0] = "EVAL";
    avlen[0] = 4;
    av[1] = script->source;
    avlen[1] = strlen(script->source);
    memcpy(data, nkeystext, (size_t)nkeyslen);
    av[2] = data;
    avlen[2] = (size_t)nkeyslen;
    data += nkeyslen;
    for (int i = 0; i < argc; i++) {
        if (argvlen[i] > 0)
            memcpy(data, argv[i], argvlen[i]);
        av[i + 3] = data;
        avlen[i + 3] = argvlen[i];
        data += argvlen[i];
    }
    cmd->eval_argv = av;
    cmd->eval_argvlen = avlen;
    cmd->eval_argc = (int)n;
    cmd->script = script;
    return 0;
}

struct lg_redis_cmd *lg_redis_eval(struct lg_redis *r, const struct lg_redis_script *script,
                                   int nkeys, int argc, const char *const *argv,
                                   const size_t *argvlen, lg_redis_cb cb, void *arg)
{
    struct lg_redis_cmd *cmd = cmd_new(r, cb, arg);
    if (cmd == NULL)
        return NULL;
    if (argc < 0 || nkeys < 0 || nkeys > argc || argc > INT_MAX - 3) {
        cmd_finish_later(cmd, LG_REDIS_ERROR);
        return cmd;
    }
    if (r->state != ST_UP && r->state != ST_HANDSHAKE) {
        cmd_finish_later(cmd, LG_REDIS_DOWN);
        return cmd;
    }
    if (eval_args_copy(cmd, script, nkeys, argc, argv, argvlen) != 0) {
        cmd_unlink(cmd);
        cmd_release(cmd);
        return NULL;
    }
    /* First as EVALSHA: the same array with its first two slots swapped. */
    cmd->eval_argv[0] = "EVALSHA";
    cmd->eval_argvlen[0] = 7;
    cmd->eval_argv[1] = script->sha1;
    cmd->eval_argvlen[1] = 40;
    int rc = cmd_send(r, cmd, cmd_reply_cb, cmd->eval_argc, cmd->eval_argv, cmd->eval_argvlen);
    cmd->eval_argv[0] = "EVAL";
    cmd->eval_argvlen[0] = 4;
    cmd->eval_argv[1] = script->source;
    cmd->eval_argvlen[1] = strlen(script->source);
    if (rc != 0) {
        cmd_finish_later(cmd, LG_REDIS_ERROR);
        return cmd;
    }
    cmd->before_up = r->state != ST_UP;
    cmd_arm_deadline(r, cmd);
    return cmd;
}

/* ---------------------------------------------------------------------- */
/* Free                                                                    */
/* ---------------------------------------------------------------------- */

void lg_redis_free(struct lg_redis *r)
{
    if (r == NULL)
        return;
    /* No callback runs after this: end every user side first, so that the
     * reply callbacks hiredis runs while freeing the context (now, or
     * after the hiredis callback we may be inside) only free records. */
    while (r->cmds != NULL) {
        struct lg_redis_cmd *cmd = r->cmds;
        cmd_unlink(cmd);
        if (cmd->in_hiredis)
            evtimer_del(cmd->ev);
        else
            cmd_release(cmd);
    }
    drop_context(r);
    if (r->timer)
        event_free(r->timer);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->host);
    /* It held the last command's arguments. */
    if (r->resp.data)
        OPENSSL_cleanse(r->resp.data, r->resp.cap);
    lg_buf_free(&r->resp);
    free(r);
}
