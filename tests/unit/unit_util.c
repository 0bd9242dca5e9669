/* unit_util.c - helpers shared by unit tests (unit_util.h). */
#include "config.h"

#include <check.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>

#include "unit_util.h"

static char scratch[256];
static int saved_stderr = -1;

void ut_scratch_make(const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof(scratch), "%s/%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", prefix);
    ck_assert_ptr_nonnull(mkdtemp(scratch));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void ut_scratch_remove(void)
{
    if (scratch[0])
        nftw(scratch, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    scratch[0] = '\0';
}

const char *ut_scratch_dir(void)
{
    return scratch;
}

const char *ut_scratch_path(const char *name)
{
    static char paths[8][PATH_MAX];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", scratch, name);
    return p;
}

void ut_stderr_begin(void)
{
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    int fd = open(ut_scratch_path("stderr"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
}

char *ut_stderr_end(void)
{
    fflush(stderr);
    ck_assert_int_ge(saved_stderr, 0);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(ut_scratch_path("stderr"), "r");
    ck_assert_ptr_nonnull(f);
    char *text = calloc(1, 65536);
    ck_assert_ptr_nonnull(text);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

int ut_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

double ut_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

bool ut_run_until(struct event_base *base, bool (*cond)(void *ctx, uint64_t arg), void *ctx,
                  uint64_t arg, double seconds)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    ck_assert_ptr_nonnull(tick);
    struct timeval tv = {0, 2000};
    event_add(tick, &tv);
    double deadline = ut_now_s() + seconds;
    bool held;
    while (!(held = cond != NULL && cond(ctx, arg)) && ut_now_s() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return held;
}

void ut_loop_settle(struct event_base *base)
{
    for (int i = 0; i < 3; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

struct evhttp *ut_http_listen(struct event_base *base, SSL_CTX *tls,
                              void (*cb)(struct evhttp_request *req, void *arg), void *arg,
                              int *port)
{
    struct evhttp *http = evhttp_new(base);
    ck_assert_ptr_nonnull(http);
    if (tls != NULL)
        evhttp_set_bevcb(http, tls_bev, tls);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bound);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len),
                     0);
    *port = ntohs(sin.sin_port);
    evhttp_set_gencb(http, cb, arg);
    return http;
}
