/* log.c - leveled, request-id-tagged diagnostics on stderr; the JSON access log. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lambdagate/log.h"

static atomic_int log_level = LG_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void lg_log_set_level(enum lg_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum lg_log_level lg_log_get_level(void)
{
    return (enum lg_log_level)atomic_load(&log_level);
}

bool lg_log_enabled(enum lg_log_level level)
{
    return (int)level >= atomic_load(&log_level);
}

/* Write all of buf to fd, retrying on EINTR and short writes. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void log_emit(enum lg_log_level level, const char *request_id, const char *fmt, va_list ap)
{
    char line[2048];
    int off = snprintf(line, sizeof(line), "%s ", level_names[level]);
    int n = vsnprintf(line + off, sizeof(line) - (size_t)off, fmt, ap);
    size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof(line) - 64)
        len = sizeof(line) - 64; /* truncated; keep room for the request id */
    if (request_id)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " request_id=%s", request_id);
    /* One call is one line: a value from outside must not start another. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            line[i] = '?';
    }
    line[len++] = '\n';
    write_all(STDERR_FILENO, line, len);
}

void lg_log_clean(char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = '\'';
}

const char *lg_log_cleaned(char *out, size_t size, const char *s)
{
    if (size == 0)
        return "";
    snprintf(out, size, "%s", s ? s : "");
    lg_log_clean(out);
    return out;
}

void lg_log(enum lg_log_level level, const char *fmt, ...)
{
    if (!lg_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, NULL, fmt, ap);
    va_end(ap);
}

void lg_log_req(enum lg_log_level level, const char *request_id, const char *fmt, ...)
{
    if (!lg_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, request_id, fmt, ap);
    va_end(ap);
}

/* The access log: a file descriptor that request threads write whole lines
 * to, and a path to reopen. The lock only guards swapping the descriptor;
 * each line is a single write(2) with O_APPEND, so lines never interleave. */
static pthread_rwlock_t access_lock = PTHREAD_RWLOCK_INITIALIZER;
static int access_fd = -1;
static atomic_bool access_on; /* access_fd >= 0, readable without the lock */
static bool access_owned;     /* we opened it (not stdout) */
static char *access_path;

static int open_target(const char *target, int *fd, bool *owned, char *err, size_t errlen)
{
    if (strcmp(target, "off") == 0) {
        *fd = -1;
        *owned = false;
        return 0;
    }
    if (strcmp(target, "-") == 0) {
        *fd = STDOUT_FILENO;
        *owned = false;
        return 0;
    }
    int f = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0) {
        snprintf(err, errlen, "cannot open access log %s: %s", target, strerror(errno));
        return -1;
    }
    *fd = f;
    *owned = true;
    return 0;
}

int lg_log_access_open(const char *target, char *err, size_t errlen)
{
    int fd;
    bool owned;
    if (open_target(target, &fd, &owned, err, errlen) != 0)
        return -1;
    char *path = strdup(target);
    if (path == NULL) {
        if (owned)
            close(fd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_rwlock_wrlock(&access_lock);
    if (access_owned)
        close(access_fd);
    free(access_path);
    access_fd = fd;
    access_owned = owned;
    access_path = path;
    atomic_store(&access_on, fd >= 0);
    pthread_rwlock_unlock(&access_lock);
    return 0;
}

int lg_log_access_reopen(char *err, size_t errlen)
{
    pthread_rwlock_rdlock(&access_lock);
    char *path = access_path ? strdup(access_path) : NULL;
    pthread_rwlock_unlock(&access_lock);
    if (path == NULL)
        return 0;
    int rc = lg_log_access_open(path, err, errlen);
    free(path);
    return rc;
}

bool lg_log_access_enabled(void)
{
    return atomic_load_explicit(&access_on, memory_order_relaxed);
}

void lg_log_access_write(const char *line, size_t len)
{
    char stackbuf[4096];
    char *buf = len + 1 <= sizeof(stackbuf) ? stackbuf : malloc(len + 1);
    if (buf == NULL)
        return;
    memcpy(buf, line, len);
    buf[len] = '\n';
    pthread_rwlock_rdlock(&access_lock);
    if (access_fd >= 0)
        write_all(access_fd, buf, len + 1);
    pthread_rwlock_unlock(&access_lock);
    if (buf != stackbuf)
        free(buf);
}

void lg_log_access_close(void)
{
    pthread_rwlock_wrlock(&access_lock);
    if (access_owned)
        close(access_fd);
    access_fd = -1;
    atomic_store(&access_on, false);
    access_owned = false;
    free(access_path);
    access_path = NULL;
    pthread_rwlock_unlock(&access_lock);
}
