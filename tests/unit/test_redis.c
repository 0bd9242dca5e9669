/* test_redis.c - tests of the async Redis client against a real redis-server (no mocks). */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "lambdagate/conf.h"
#include "lambdagate/log.h"
#include "lambdagate/redis.h"
#include "unit_util.h"

/* ---------------------------------------------------------------------- */
/* A redis-server per test                                                 */
/* ---------------------------------------------------------------------- */

/* Each test runs in its own forked process (Check's fork mode) and starts
 * its own server, which dies with that process (PR_SET_PDEATHSIG) even
 * when an assertion ends the test early or Check's timeout kills it. */
static pid_t server_pid = -1;
static int server_port;

static double now_ms(void)
{
    return ut_now_s() * 1000.0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A loopback port nobody listens on right now (Redis 7 cannot be given
 * port 0 and report what it chose). */
/* A blocking connection to 127.0.0.1:port, or -1. */
static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void raw_send(int fd, const char *text)
{
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
}

/* Read what arrives within timeout_ms (at least one byte) into buf. */
static size_t raw_read(int fd, char *buf, size_t size, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return 0;
    ssize_t n = read(fd, buf, size - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return (size_t)n;
}

/* Start redis-server on port with extra arguments (NULL-terminated, may
 * be NULL) and wait until it answers. */
static void start_server_on(int port, const char *const *extra)
{
    char port_text[16];
    snprintf(port_text, sizeof(port_text), "%d", port);
    const char *args[40] = {"redis-server", "--port",      port_text, "--bind",
                            "127.0.0.1",    "--save",      "",        "--appendonly",
                            "no",           "--daemonize", "no",      "--enable-debug-command",
                            "local",        "--dir",       "/tmp",    "--loglevel",
                            "warning"};
    size_t n = 17;
    for (size_t i = 0; extra && extra[i] && n < LG_ARRAY_LEN(args) - 1; i++)
        args[n++] = extra[i];
    args[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execvp("redis-server", (char *const *)args);
        _exit(127);
    }
    server_pid = pid;
    server_port = port;
    /* Ready when it answers PING (+PONG, or -NOAUTH with requirepass). */
    double deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        int fd = raw_connect(port);
        if (fd >= 0) {
            char buf[64];
            raw_send(fd, "PING\r\n");
            size_t got = raw_read(fd, buf, sizeof(buf), 1000);
            close(fd);
            if (got > 0 && (buf[0] == '+' || buf[0] == '-'))
                return;
        }
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "redis-server exited at start");
        sleep_ms(5);
    }
    ck_abort_msg("redis-server did not start on port %d", port);
}

static void start_server(const char *const *extra)
{
    start_server_on(ut_free_port(), extra);
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
}

/* ---------------------------------------------------------------------- */
/* The event loop and results                                              */
/* ---------------------------------------------------------------------- */

static struct event_base *base;

static void setup(void)
{
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
}

static void teardown(void)
{
    stop_server();
    event_base_free(base);
    base = NULL;
    libevent_global_shutdown();
}

struct until {
    bool (*cond)(const void *);
    const void *arg;
};

static bool until_holds(void *ctx, uint64_t unused)
{
    const struct until *u = ctx;
    return u->cond(u->arg);
}

/* Run the loop until cond(arg) holds or timeout_ms pass; true when it held.
 * cond NULL: run for timeout_ms. */
static bool run_until(bool (*cond)(const void *), const void *arg, int timeout_ms)
{
    struct until u = {cond, arg};
    return ut_run_until(base, cond ? until_holds : NULL, &u, 0, timeout_ms / 1000.0);
}

static void run_for(int ms)
{
    run_until(NULL, NULL, ms);
}

/* One pass of the loop over what is ready now (e.g. to put commands on
 * the wire). */
static void run_once(void)
{
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* What one callback saw. */
struct result {
    int calls;
    enum lg_redis_status status;
    int type; /* REDIS_REPLY_*, -1 without a reply */
    long long integer;
    char str[2048];
    size_t len;
    size_t elements;
    char element[4][64];
    size_t element_len[4];
    double at_ms;
};

/* Set while lg_redis_command / lg_redis_eval run: no callback may see it. */
static bool in_command;

static void record_cb(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct result *res = arg;
    ck_assert_msg(!in_command, "callback ran inside lg_redis_command");
    res->calls++;
    res->status = status;
    res->at_ms = now_ms();
    res->type = reply ? reply->type : -1;
    if (reply == NULL)
        return;
    res->integer = reply->integer;
    if (reply->str && reply->len < sizeof(res->str)) {
        memcpy(res->str, reply->str, reply->len);
        res->str[reply->len] = '\0';
        res->len = reply->len;
    }
    res->elements = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    for (size_t i = 0; i < res->elements && i < 4; i++) {
        const redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_STRING && e->len < sizeof(res->element[i])) {
            memcpy(res->element[i], e->str, e->len);
            res->element_len[i] = e->len;
        }
    }
}

static bool called(const void *arg)
{
    return ((const struct result *)arg)->calls > 0;
}

static bool client_up(const void *arg)
{
    return lg_redis_up(arg);
}

static bool client_down(const void *arg)
{
    return !lg_redis_up(arg);
}

/* Send a command given as NUL-terminated words. */
static struct lg_redis_cmd *cmd_words(struct lg_redis *r, struct result *res, int argc,
                                      const char *const *words)
{
    size_t lens[16];
    ck_assert_int_le(argc, 16);
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(words[i]);
    in_command = true;
    struct lg_redis_cmd *cmd = lg_redis_command(r, argc, words, lens, record_cb, res);
    in_command = false;
    ck_assert_ptr_nonnull(cmd);
    return cmd;
}

#define CMD(r, res, ...)                                                                           \
    cmd_words((r), (res), (int)LG_ARRAY_LEN(((const char *const[]){__VA_ARGS__})),                 \
              (const char *const[]){__VA_ARGS__})

/* Send and wait for the answer. */
#define CALL(r, res, ...)                                                                          \
    do {                                                                                           \
        memset((res), 0, sizeof(*(res)));                                                          \
        CMD(r, res, __VA_ARGS__);                                                                  \
        ck_assert_msg(run_until(called, (res), 3000), "no callback");                              \
        ck_assert_int_eq((res)->calls, 1);                                                         \
    } while (0)

static struct lg_conf_redis conf_for(int port)
{
    struct lg_conf_redis c = {.host = "127.0.0.1",
                              .port = port,
                              .password = NULL,
                              .db = 0,
                              .timeout_ms = 1000,
                              .prefix = "lg:"};
    return c;
}

/* A client that is up. */
static struct lg_redis *client_new(const struct lg_conf_redis *c)
{
    struct lg_redis *r = lg_redis_new(base, c);
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(run_until(client_up, r, 3000), "client did not come up");
    return r;
}

/* ---------------------------------------------------------------------- */
/* Capturing the log (lg_log writes to stderr)                             */
/* ---------------------------------------------------------------------- */

static int saved_stderr = -1;
static int capture_fd = -1;

static void capture_start(void)
{
    char path[] = "/tmp/lg-redis-test-log-XXXXXX";
    capture_fd = mkstemp(path);
    ck_assert_int_ge(capture_fd, 0);
    unlink(path);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(dup2(capture_fd, STDERR_FILENO), 0);
}

/* Stop capturing; the text (caller frees) is also passed on to stderr. */
static char *capture_end(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    off_t size = lseek(capture_fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(capture_fd, text, (size_t)size, 0), size);
    close(capture_fd);
    ck_assert_int_eq(write(STDERR_FILENO, text, (size_t)size), size);
    return text;
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---------------------------------------------------------------------- */
/* Commands                                                                */
/* ---------------------------------------------------------------------- */

START_TEST(test_set_get_binary)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);

    static const char key[] = "k\0ey\xff";
    char value[1000];
    for (size_t i = 0; i < sizeof(value); i++)
        value[i] = (char)(i * 7); /* every byte value; NUL at 0, 256, 512, 768 */
    ck_assert_int_eq(value[0], 0);

    struct result res = {0};
    const char *set_argv[] = {"SET", key, value};
    const size_t set_len[] = {3, sizeof(key) - 1, sizeof(value)};
    in_command = true;
    ck_assert_ptr_nonnull(lg_redis_command(r, 3, set_argv, set_len, record_cb, &res));
    in_command = false;
    ck_assert(run_until(called, &res, 3000));
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_STATUS);
    ck_assert_str_eq(res.str, "OK");

    memset(&res, 0, sizeof(res));
    const char *get_argv[] = {"GET", key};
    const size_t get_len[] = {3, sizeof(key) - 1};
    ck_assert_ptr_nonnull(lg_redis_command(r, 2, get_argv, get_len, record_cb, &res));
    ck_assert(run_until(called, &res, 3000));
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_STRING);
    ck_assert_uint_eq(res.len, sizeof(value));
    ck_assert(memcmp(res.str, value, sizeof(value)) == 0);

    /* The key is binary too: its prefix alone is another key. */
    CALL(r, &res, "GET", "k");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_NIL);

    lg_redis_free(r);
}
END_TEST

/* A command far larger than the socket's buffers is written in pieces,
 * waiting for the socket to turn writable (the EPOLLOUT path of redis.c's
 * event hooks), and arrives whole; the connection then goes on. */
START_TEST(test_large_command_written_in_pieces)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    c.timeout_ms = 10000;
    struct lg_redis *r = client_new(&c);

    size_t size = (size_t)24 << 20;
    char *value = malloc(size);
    ck_assert_ptr_nonnull(value);
    for (size_t i = 0; i < size; i++)
        value[i] = (char)('a' + i % 23);
    struct result res = {0};
    const char *set_argv[] = {"SET", "big", value};
    const size_t set_len[] = {3, 3, size};
    ck_assert_ptr_nonnull(lg_redis_command(r, 3, set_argv, set_len, record_cb, &res));
    free(value); /* the command has its own copy */
    ck_assert(run_until(called, &res, 15000));
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "OK");

    CALL(r, &res, "STRLEN", "big");
    ck_assert_int_eq(res.type, REDIS_REPLY_INTEGER);
    ck_assert_int_eq(res.integer, (long long)size);
    /* The last bytes: nothing lost or reordered on the way. */
    char from[24], to[24];
    snprintf(from, sizeof(from), "%zu", size - 5);
    snprintf(to, sizeof(to), "%zu", size - 1);
    CALL(r, &res, "GETRANGE", "big", from, to);
    char want[6];
    for (size_t i = 0; i < 5; i++)
        want[i] = (char)('a' + (size - 5 + i) % 23);
    want[5] = '\0';
    ck_assert_str_eq(res.str, want);
    CALL(r, &res, "PING");
    ck_assert_str_eq(res.str, "PONG");
    lg_redis_free(r);
}
END_TEST

/* Per-command slots for the pipelining test. */
struct pipe_slot {
    int index;
    int *next_expected;
    long long value;
    enum lg_redis_status status;
};

static int pipe_done;

static void pipe_cb(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct pipe_slot *s = arg;
    ck_assert_msg(!in_command, "callback ran inside lg_redis_command");
    ck_assert_int_eq(s->index, *s->next_expected);
    (*s->next_expected)++;
    s->status = status;
    s->value = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    pipe_done++;
}

static bool pipe_all_done(const void *arg)
{
    return pipe_done == *(const int *)arg;
}

START_TEST(test_pipeline_1000_in_order)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    c.timeout_ms = 5000;
    struct lg_redis *r = client_new(&c);

    enum {
        N = 1000
    };
    static struct pipe_slot slots[N];
    int next_expected = 0;
    pipe_done = 0;
    const char *argv[] = {"INCR", "counter"};
    const size_t lens[] = {4, 7};
    /* All sent before the loop runs once: they go out pipelined. */
    for (int i = 0; i < N; i++) {
        slots[i] = (struct pipe_slot){.index = i, .next_expected = &next_expected};
        in_command = true;
        ck_assert_ptr_nonnull(lg_redis_command(r, 2, argv, lens, pipe_cb, &slots[i]));
        in_command = false;
    }
    ck_assert_int_eq(pipe_done, 0);
    int n = N;
    ck_assert(run_until(pipe_all_done, &n, 8000));
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(slots[i].status, LG_REDIS_OK);
        ck_assert_int_eq(slots[i].value, i + 1);
    }
    lg_redis_free(r);
}
END_TEST

START_TEST(test_callback_never_inside_command)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct result res = {0};
    CMD(r, &res, "PING");
    ck_assert_int_eq(res.calls, 0); /* not before the loop runs */
    ck_assert(run_until(called, &res, 3000));
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "PONG");
    lg_redis_free(r);

    /* Down: the failure is delivered from the loop as well. */
    stop_server();
    struct lg_conf_redis closed = conf_for(ut_free_port());
    r = lg_redis_new(base, &closed);
    ck_assert_ptr_nonnull(r);
    memset(&res, 0, sizeof(res));
    CMD(r, &res, "PING");
    ck_assert_int_eq(res.calls, 0);
    ck_assert(run_until(called, &res, 1000));
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);
    ck_assert_int_eq(res.type, -1);
    lg_redis_free(r);
}
END_TEST

START_TEST(test_error_reply_counted)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct result res;

    CALL(r, &res, "SET", "text", "not a number");
    uint64_t before = lg_redis_errors_total();
    CALL(r, &res, "GET", "text");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_uint_eq(lg_redis_errors_total(), before);

    CALL(r, &res, "INCR", "text");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_ERROR);
    ck_assert_msg(strncmp(res.str, "ERR", 3) == 0, "%s", res.str);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 1);

    /* The client stays up after an error reply. */
    ck_assert(lg_redis_up(r));
    CALL(r, &res, "PING");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 1);
    lg_redis_free(r);
}
END_TEST

START_TEST(test_refused_and_invalid_commands)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct result res;
    uint64_t before = lg_redis_errors_total();

    CALL(r, &res, "SUBSCRIBE", "channel");
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);
    CALL(r, &res, "monitor");
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);

    memset(&res, 0, sizeof(res));
    in_command = true;
    ck_assert_ptr_nonnull(lg_redis_command(r, 0, NULL, NULL, record_cb, &res));
    in_command = false;
    ck_assert(run_until(called, &res, 1000));
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);

    struct lg_redis_script s;
    lg_redis_script_init(&s, "return 1");
    memset(&res, 0, sizeof(res));
    const char *argv[] = {"k"};
    const size_t lens[] = {1};
    ck_assert_ptr_nonnull(lg_redis_eval(r, &s, 2, 1, argv, lens, record_cb, &res));
    ck_assert(run_until(called, &res, 1000));
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 4);

    /* None of that reached the connection. */
    CALL(r, &res, "PING");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "PONG");
    lg_redis_free(r);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Scripts                                                                 */
/* ---------------------------------------------------------------------- */

START_TEST(test_script_sha1)
{
    struct lg_redis_script s;
    lg_redis_script_init(&s, "return 1");
    ck_assert_str_eq(s.sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    lg_redis_script_init(&s, "return {KEYS[1], ARGV[1], ARGV[2]}");
    ck_assert_str_eq(s.sha1, "4cfb4166ae4c0001fb4259c299bc0d8595c56cc2");
}
END_TEST

static const char echo_source[] = "return {KEYS[1], ARGV[1], ARGV[2]}";

static void eval_echo(struct lg_redis *r, const struct lg_redis_script *s, struct result *res)
{
    const char *argv[] = {"key1", "a\0b", "xyz"};
    const size_t lens[] = {4, 3, 3};
    memset(res, 0, sizeof(*res));
    in_command = true;
    ck_assert_ptr_nonnull(lg_redis_eval(r, s, 1, 3, argv, lens, record_cb, res));
    in_command = false;
    ck_assert_int_eq(res->calls, 0);
    ck_assert(run_until(called, res, 3000));
    ck_assert_int_eq(res->calls, 1);
}

static void assert_echo(const struct result *res)
{
    ck_assert_int_eq(res->status, LG_REDIS_OK);
    ck_assert_int_eq(res->type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(res->elements, 3);
    ck_assert_uint_eq(res->element_len[0], 4);
    ck_assert(memcmp(res->element[0], "key1", 4) == 0);
    ck_assert_uint_eq(res->element_len[1], 3);
    ck_assert(memcmp(res->element[1], "a\0b", 3) == 0);
    ck_assert_uint_eq(res->element_len[2], 3);
    ck_assert(memcmp(res->element[2], "xyz", 3) == 0);
}

START_TEST(test_eval_returns_args)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct lg_redis_script s;
    lg_redis_script_init(&s, echo_source);

    /* Redis agrees on the digest. */
    struct result res;
    CALL(r, &res, "SCRIPT", "LOAD", echo_source);
    ck_assert_int_eq(res.type, REDIS_REPLY_STRING);
    ck_assert_str_eq(res.str, s.sha1);

    uint64_t before = lg_redis_errors_total();
    eval_echo(r, &s, &res);
    assert_echo(&res);
    eval_echo(r, &s, &res);
    assert_echo(&res);
    ck_assert_uint_eq(lg_redis_errors_total(), before);
    lg_redis_free(r);
}
END_TEST

/* Replies of every kind, nested, many times over: the reply records are
 * reused (redis.c keeps up to 256 a thread), and each reply must still
 * come out whole, with nothing left over from an earlier one. */
struct nested_check {
    int calls;
    int bad;
};

static void nested_cb(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct nested_check *c = arg;
    c->calls++;
    /* {7, "two", {-3, nil}, error "E x", "ok" status, 0 elements array} */
    const redisReply *e = reply && reply->type == REDIS_REPLY_ARRAY ? reply->element[0] : NULL;
    if (status != LG_REDIS_OK || e == NULL || reply->elements != 6 ||
        e->type != REDIS_REPLY_INTEGER || e->integer != 7 || e->str != NULL) {
        c->bad++;
        return;
    }
    const redisReply *two = reply->element[1], *in = reply->element[2], *err = reply->element[3];
    const redisReply *st = reply->element[4], *empty = reply->element[5];
    if (two->type != REDIS_REPLY_STRING || two->len != 3 || strcmp(two->str, "two") != 0 ||
        in->type != REDIS_REPLY_ARRAY || in->elements != 2 ||
        in->element[0]->type != REDIS_REPLY_INTEGER || in->element[0]->integer != -3 ||
        in->element[1]->type != REDIS_REPLY_NIL || in->element[1]->str != NULL ||
        err->type != REDIS_REPLY_ERROR || strcmp(err->str, "E x") != 0 ||
        st->type != REDIS_REPLY_STATUS || strcmp(st->str, "ok") != 0 ||
        empty->type != REDIS_REPLY_ARRAY || empty->elements != 0 || empty->element != NULL)
        c->bad++;
}

static bool nested_all(const void *arg)
{
    return ((const struct nested_check *)arg)->calls == 300;
}

START_TEST(test_nested_replies_reuse_records)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    static const char src[] = "return {7, 'two', {-3, false}, {err = 'E x'}, {ok = 'ok'}, {}}";
    struct lg_redis_script s;
    lg_redis_script_init(&s, src);
    struct nested_check check = {0};
    for (int i = 0; i < 300; i++)
        ck_assert_ptr_nonnull(lg_redis_eval(r, &s, 0, 0, NULL, NULL, nested_cb, &check));
    ck_assert(run_until(nested_all, &check, 5000));
    ck_assert_int_eq(check.bad, 0);
    /* And plain replies after them. */
    struct result res;
    CALL(r, &res, "PING");
    ck_assert_int_eq(res.type, REDIS_REPLY_STATUS);
    ck_assert_str_eq(res.str, "PONG");
    lg_redis_free(r);
}
END_TEST

/* An array longer than redis.c takes (4096 elements: hiredis 0.14 would
 * make room for any length a server announces) fails its command, the
 * connection is dropped and made again, and the next command works. An
 * array of exactly 4096 is taken. */
START_TEST(test_too_long_array_refused)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct result res;
    CALL(r, &res, "EVAL", "local t = {} for i = 1, 4096 do t[i] = i end return t", "0");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(res.elements, 4096);
    CALL(r, &res, "EVAL", "local t = {} for i = 1, 4097 do t[i] = i end return t", "0");
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);
    ck_assert(run_until(client_up, r, 3000));
    CALL(r, &res, "PING");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "PONG");
    lg_redis_free(r);
}
END_TEST

START_TEST(test_eval_noscript_reload)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct lg_redis_script s;
    lg_redis_script_init(&s, echo_source);
    struct result res;
    uint64_t before = lg_redis_errors_total();

    /* A fresh server has no scripts: the first call takes the NOSCRIPT
     * path, and loads the script while at it. */
    eval_echo(r, &s, &res);
    assert_echo(&res);
    CALL(r, &res, "SCRIPT", "EXISTS", s.sha1);
    ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(res.elements, 1);

    CALL(r, &res, "SCRIPT", "FLUSH");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "OK");
    eval_echo(r, &s, &res);
    assert_echo(&res);

    /* NOSCRIPT handled by reloading is not an error. */
    ck_assert_uint_eq(lg_redis_errors_total(), before);

    /* A script error is the caller's (an error reply), and counted. */
    struct lg_redis_script bad;
    lg_redis_script_init(&bad, "return redis.call('INCR', KEYS[1])");
    CALL(r, &res, "SET", "text", "abc");
    const char *argv[] = {"text"};
    const size_t lens[] = {4};
    memset(&res, 0, sizeof(res));
    ck_assert_ptr_nonnull(lg_redis_eval(r, &bad, 1, 1, argv, lens, record_cb, &res));
    ck_assert(run_until(called, &res, 3000));
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_int_eq(res.type, REDIS_REPLY_ERROR);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 1);
    lg_redis_free(r);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Failures, deadlines, reconnects                                         */
/* ---------------------------------------------------------------------- */

START_TEST(test_down_closed_port)
{
    int port = ut_free_port();
    struct lg_conf_redis c = conf_for(port);
    uint64_t before = lg_redis_errors_total();
    capture_start();
    struct lg_redis *r = lg_redis_new(base, &c);
    ck_assert_ptr_nonnull(r);
    ck_assert(!lg_redis_up(r));

    struct result res = {0};
    double t0 = now_ms();
    CMD(r, &res, "GET", "k");
    ck_assert(run_until(called, &res, 1000));
    double elapsed = res.at_ms - t0;
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);
    ck_assert_msg(elapsed < 50, "DOWN took %.1f ms", elapsed);

    /* Reconnect attempts (after 100 and 200 ms) fail silently. */
    run_for(450);
    ck_assert(!lg_redis_up(r));
    memset(&res, 0, sizeof(res));
    CMD(r, &res, "GET", "k");
    ck_assert(run_until(called, &res, 1000));
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 2);
    lg_redis_free(r);

    char *log = capture_end();
    char expect[128];
    snprintf(expect, sizeof(expect), "WARN redis down host=127.0.0.1 port=%d reason=\"", port);
    ck_assert_msg(count_of(log, expect) == 1, "log: %s", log);
    ck_assert_int_eq(count_of(log, "redis down"), 1);
    ck_assert_int_eq(count_of(log, "redis up"), 0);
    free(log);
}
END_TEST

/* A listener that never accepts: TCP connects (the backlog) but Redis
 * never answers the handshake. */
START_TEST(test_connect_deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);

    struct lg_conf_redis c = conf_for(ntohs(sa.sin_port));
    c.timeout_ms = 100;
    capture_start();
    struct lg_redis *r = lg_redis_new(base, &c);
    ck_assert_ptr_nonnull(r);
    run_for(250);
    ck_assert(!lg_redis_up(r));
    struct result res = {0};
    CMD(r, &res, "PING");
    ck_assert(run_until(called, &res, 1000));
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);
    lg_redis_free(r);
    char *log = capture_end();
    ck_assert_msg(count_of(log, "redis down") == 1, "log: %s", log);
    ck_assert_msg(count_of(log, "reason=\"connect timed out\"") == 1, "log: %s", log);
    free(log);
    close(fd);
}
END_TEST

/* Block the whole server for seconds (DEBUG SLEEP) from a raw socket, so
 * that commands of the client under test get no answer. Returns the
 * socket; its +OK arrives when the sleep ends. */
static int server_sleep(const char *seconds)
{
    int fd = raw_connect(server_port);
    ck_assert_int_ge(fd, 0);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "DEBUG SLEEP %s\r\n", seconds);
    raw_send(fd, cmd);
    sleep_ms(40); /* the server reads it at once and blocks */
    return fd;
}

static void server_sleep_end(int fd)
{
    char buf[64];
    ck_assert_uint_gt(raw_read(fd, buf, sizeof(buf), 3000), 0);
    ck_assert_msg(strncmp(buf, "+OK", 3) == 0, "%s", buf);
    close(fd);
}

START_TEST(test_command_timeout)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    c.timeout_ms = 100;
    struct lg_redis *r = client_new(&c);
    uint64_t before = lg_redis_errors_total();

    int sleeper = server_sleep("0.5");
    struct result res = {0};
    double t0 = now_ms();
    CMD(r, &res, "GET", "k");
    ck_assert(run_until(called, &res, 2000));
    double elapsed = res.at_ms - t0;
    ck_assert_int_eq(res.status, LG_REDIS_TIMEOUT);
    ck_assert_int_eq(res.type, -1);
    ck_assert_msg(elapsed >= 80 && elapsed <= 400, "TIMEOUT after %.1f ms", elapsed);
    ck_assert_uint_eq(lg_redis_errors_total(), before + 1);

    /* One timeout is not enough to give up the connection; the late
     * reply is discarded and the next command gets its own answer. */
    ck_assert(lg_redis_up(r));
    server_sleep_end(sleeper);
    run_for(20);
    CALL(r, &res, "ECHO", "after");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "after");
    ck_assert(lg_redis_up(r));
    lg_redis_free(r);
}
END_TEST

START_TEST(test_timeouts_in_row_reconnect)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    c.timeout_ms = 100;
    capture_start();
    struct lg_redis *r = client_new(&c);

    int sleeper = server_sleep("0.6");
    struct result res[4];
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 3; i++)
        CMD(r, &res[i], "PING");
    ck_assert(run_until(called, &res[2], 2000));
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(res[i].status, LG_REDIS_TIMEOUT);
    /* Stuck: dropped, and commands now fail at once. */
    ck_assert(!lg_redis_up(r));
    CMD(r, &res[3], "PING");
    ck_assert(run_until(called, &res[3], 1000));
    ck_assert_int_eq(res[3].status, LG_REDIS_DOWN);

    server_sleep_end(sleeper);
    ck_assert_msg(run_until(client_up, r, 3000), "no reconnect");
    struct result ok;
    CALL(r, &ok, "PING");
    ck_assert_int_eq(ok.status, LG_REDIS_OK);
    lg_redis_free(r);

    char *log = capture_end();
    ck_assert_msg(count_of(log, "reason=\"3 commands timed out in a row\"") == 1, "log: %s", log);
    ck_assert_int_eq(count_of(log, "redis down"), 1);
    ck_assert_int_eq(count_of(log, "INFO redis up host=127.0.0.1"), 2);
    free(log);
}
END_TEST

START_TEST(test_restart_recovery)
{
    start_server(NULL);
    int port = server_port;
    struct lg_conf_redis c = conf_for(port);
    capture_start();
    struct lg_redis *r = client_new(&c);
    struct result res;
    CALL(r, &res, "SET", "k", "v1");
    ck_assert_int_eq(res.status, LG_REDIS_OK);

    /* A command in flight when the connection breaks: ERROR. */
    stop_server();
    memset(&res, 0, sizeof(res));
    CMD(r, &res, "GET", "k");
    ck_assert(run_until(called, &res, 2000));
    ck_assert_int_eq(res.status, LG_REDIS_ERROR);
    ck_assert(run_until(client_down, r, 1000));

    CALL(r, &res, "GET", "k");
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);

    /* Back on the same port: reconnected within the backoff. */
    run_for(300);
    start_server_on(port, NULL);
    double t0 = now_ms();
    ck_assert_msg(run_until(client_up, r, 5000), "no reconnect");
    ck_assert_msg(now_ms() - t0 < 2000, "reconnect took %.0f ms", now_ms() - t0);
    CALL(r, &res, "SET", "k", "v2");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    CALL(r, &res, "GET", "k");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    ck_assert_str_eq(res.str, "v2");
    lg_redis_free(r);

    char *log = capture_end();
    ck_assert_msg(count_of(log, "redis down") == 1, "log: %s", log);
    ck_assert_msg(count_of(log, "redis up") == 2, "log: %s", log);
    free(log);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* AUTH and SELECT                                                         */
/* ---------------------------------------------------------------------- */

static const char *const auth_args[] = {"--requirepass", "Right-Pass-2718", NULL};

START_TEST(test_auth_right_password)
{
    start_server(auth_args);
    struct lg_conf_redis c = conf_for(server_port);
    c.password = "Right-Pass-2718";
    capture_start();
    struct lg_redis *r = client_new(&c);
    struct result res;
    CALL(r, &res, "SET", "k", "v");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    CALL(r, &res, "GET", "k");
    ck_assert_str_eq(res.str, "v");
    lg_redis_free(r);
    char *log = capture_end();
    ck_assert_int_eq(count_of(log, "redis up"), 1);
    ck_assert_int_eq(count_of(log, "Right-Pass-2718"), 0);
    free(log);
}
END_TEST

START_TEST(test_auth_wrong_password)
{
    start_server(auth_args);
    struct lg_conf_redis c = conf_for(server_port);
    c.password = "Wrong-Pass-3141";
    capture_start();
    struct lg_redis *r = lg_redis_new(base, &c);
    ck_assert_ptr_nonnull(r);
    ck_assert(!run_until(client_up, r, 500)); /* and it retried meanwhile */
    struct result res;
    CALL(r, &res, "GET", "k");
    ck_assert_int_eq(res.status, LG_REDIS_DOWN);
    lg_redis_free(r);

    /* No password at all: PING answers NOAUTH. */
    struct lg_conf_redis none = conf_for(server_port);
    r = lg_redis_new(base, &none);
    ck_assert(!run_until(client_up, r, 300));
    lg_redis_free(r);

    char *log = capture_end();
    ck_assert_msg(count_of(log, "redis down") == 2, "log: %s", log);
    ck_assert_msg(count_of(log, "reason=\"AUTH failed: WRONGPASS") == 1, "log: %s", log);
    ck_assert_msg(count_of(log, "reason=\"PING failed: NOAUTH") == 1, "log: %s", log);
    ck_assert_int_eq(count_of(log, "Wrong-Pass-3141"), 0);
    ck_assert_int_eq(count_of(log, "Right-Pass-2718"), 0);
    ck_assert_int_eq(count_of(log, "redis up"), 0);
    free(log);
}
END_TEST

START_TEST(test_select_db)
{
    start_server(NULL);
    struct lg_conf_redis c5 = conf_for(server_port);
    c5.db = 5;
    struct lg_redis *r5 = client_new(&c5);
    struct lg_conf_redis c0 = conf_for(server_port);
    struct lg_redis *r0 = client_new(&c0);
    struct result res;

    CALL(r5, &res, "SET", "k", "in five");
    ck_assert_int_eq(res.status, LG_REDIS_OK);
    CALL(r0, &res, "GET", "k");
    ck_assert_int_eq(res.type, REDIS_REPLY_NIL);
    CALL(r5, &res, "GET", "k");
    ck_assert_str_eq(res.str, "in five");
    CALL(r0, &res, "SELECT", "5"); /* the same key, seen from db 5 */
    CALL(r0, &res, "GET", "k");
    ck_assert_str_eq(res.str, "in five");
    lg_redis_free(r0);
    lg_redis_free(r5);

    /* A db the server does not have: down. */
    struct lg_conf_redis c99 = conf_for(server_port);
    c99.db = 99;
    capture_start();
    struct lg_redis *r99 = lg_redis_new(base, &c99);
    ck_assert(!run_until(client_up, r99, 300));
    lg_redis_free(r99);
    char *log = capture_end();
    ck_assert_msg(count_of(log, "reason=\"SELECT failed: ") == 1, "log: %s", log);
    free(log);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Cancel and free                                                         */
/* ---------------------------------------------------------------------- */

START_TEST(test_cancel)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    struct result cancelled = {0}, after = {0};

    struct lg_redis_cmd *cmd = CMD(r, &cancelled, "ECHO", "first");
    lg_redis_cancel(cmd);
    CMD(r, &after, "ECHO", "second");
    ck_assert(run_until(called, &after, 3000));
    run_for(50);
    ck_assert_int_eq(cancelled.calls, 0);
    ck_assert_str_eq(after.str, "second"); /* the discarded reply did not shift */

    /* Cancelled after it was sent and before its (late) reply. */
    memset(&after, 0, sizeof(after));
    cmd = CMD(r, &cancelled, "ECHO", "third");
    run_once();
    lg_redis_cancel(cmd);
    CMD(r, &after, "ECHO", "fourth");
    ck_assert(run_until(called, &after, 3000));
    ck_assert_str_eq(after.str, "fourth");
    ck_assert_int_eq(cancelled.calls, 0);
    lg_redis_cancel(NULL);
    lg_redis_free(r);

    /* A DOWN result not yet delivered. */
    stop_server();
    struct lg_conf_redis closed = conf_for(ut_free_port());
    r = lg_redis_new(base, &closed);
    cmd = CMD(r, &cancelled, "PING");
    lg_redis_cancel(cmd);
    run_for(50);
    ck_assert_int_eq(cancelled.calls, 0);
    lg_redis_free(r);
}
END_TEST

START_TEST(test_free_with_pending)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    struct lg_redis *r = client_new(&c);
    static struct result res[100];
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 50; i++)
        CMD(r, &res[i], "PING");
    run_once(); /* these are on the wire */
    for (int i = 50; i < 100; i++)
        CMD(r, &res[i], "PING");
    lg_redis_free(r);
    run_for(100);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(res[i].calls, 0);

    /* Freed while connecting, and while down with a result pending. */
    r = lg_redis_new(base, &c);
    lg_redis_free(r);
    struct lg_conf_redis closed = conf_for(ut_free_port());
    r = lg_redis_new(base, &closed);
    CMD(r, &res[0], "PING");
    lg_redis_free(r);
    run_for(50);
    ck_assert_int_eq(res[0].calls, 0);
    lg_redis_free(NULL);
}
END_TEST

/* A callback that frees its client. */
struct freeing {
    struct lg_redis *r;
    int calls;
    enum lg_redis_status status;
};

static void freeing_cb(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct freeing *f = arg;
    f->calls++;
    f->status = status;
    lg_redis_free(f->r);
}

START_TEST(test_free_inside_callback)
{
    start_server(NULL);
    struct lg_conf_redis c = conf_for(server_port);
    const char *argv[] = {"PING"};
    const size_t lens[] = {4};

    /* From a reply (inside hiredis), with more replies pending. */
    struct freeing f = {.r = client_new(&c)};
    static struct result res[10];
    memset(res, 0, sizeof(res));
    ck_assert_ptr_nonnull(lg_redis_command(f.r, 1, argv, lens, freeing_cb, &f));
    for (int i = 0; i < 10; i++)
        CMD(f.r, &res[i], "PING");
    run_for(100);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(f.status, LG_REDIS_OK);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(res[i].calls, 0);

    /* From a DOWN result, with another one pending. */
    struct lg_conf_redis closed = conf_for(ut_free_port());
    memset(&f, 0, sizeof(f));
    f.r = lg_redis_new(base, &closed);
    ck_assert_ptr_nonnull(lg_redis_command(f.r, 1, argv, lens, freeing_cb, &f));
    ck_assert_ptr_nonnull(lg_redis_command(f.r, 1, argv, lens, freeing_cb, &f));
    run_for(50);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(f.status, LG_REDIS_DOWN);

    /* From a TIMEOUT (the command is still held by hiredis). */
    struct lg_conf_redis quick = conf_for(server_port);
    quick.timeout_ms = 100;
    memset(&f, 0, sizeof(f));
    f.r = client_new(&quick);
    int sleeper = server_sleep("0.3");
    ck_assert_ptr_nonnull(lg_redis_command(f.r, 1, argv, lens, freeing_cb, &f));
    memset(res, 0, sizeof(res));
    CMD(f.r, &res[0], "PING");
    run_for(250);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(f.status, LG_REDIS_TIMEOUT);
    ck_assert_int_eq(res[0].calls, 0);
    server_sleep_end(sleeper);
}
END_TEST

int main(void)
{
    /* A server killed by a test must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("redis");

    TCase *pure = tcase_create("pure");
    tcase_add_test(pure, test_script_sha1);
    suite_add_tcase(s, pure);

    TCase *tc = tcase_create("server");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_set_get_binary);
    tcase_add_test(tc, test_large_command_written_in_pieces);
    tcase_add_test(tc, test_pipeline_1000_in_order);
    tcase_add_test(tc, test_callback_never_inside_command);
    tcase_add_test(tc, test_error_reply_counted);
    tcase_add_test(tc, test_refused_and_invalid_commands);
    tcase_add_test(tc, test_eval_returns_args);
    tcase_add_test(tc, test_nested_replies_reuse_records);
    tcase_add_test(tc, test_too_long_array_refused);
    tcase_add_test(tc, test_eval_noscript_reload);
    tcase_add_test(tc, test_down_closed_port);
    tcase_add_test(tc, test_connect_deadline);
    tcase_add_test(tc, test_command_timeout);
    tcase_add_test(tc, test_timeouts_in_row_reconnect);
    tcase_add_test(tc, test_restart_recovery);
    tcase_add_test(tc, test_auth_right_password);
    tcase_add_test(tc, test_auth_wrong_password);
    tcase_add_test(tc, test_select_db);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_free_with_pending);
    tcase_add_test(tc, test_free_inside_callback);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
