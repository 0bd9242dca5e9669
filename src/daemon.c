/* daemon.c - running as a service: systemd notification, -D, pidfile, dropping privileges. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "lambdagate/daemon.h"

/* ------------------------------------------------------------------------
 * systemd notification
 * ------------------------------------------------------------------------ */

#ifndef HAVE_LIBSYSTEMD
/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. The
 * kernel attaches our credentials (systemd enables SO_PASSCRED on its
 * end), which is how NotifyAccess=main knows the sender. */
static int notify_socket(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (name == NULL || name[0] == '\0')
        return 0;
    /* Like sd_notify: an absolute path or "@abstract", nothing else
     * (newer systemd also knows "vsock:", which Debian 12's does not). */
    if ((name[0] != '/' && name[0] != '@') || name[1] == '\0')
        return -1;

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t len = strlen(name);
    /* A path needs room for its NUL; an abstract name is counted
     * exactly, its '@' standing for the leading NUL byte. */
    if (len >= sizeof(addr.sun_path))
        return -1;
    memcpy(addr.sun_path, name, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';
    socklen_t addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    size_t n = strlen(state);
    ssize_t sent;
    do
        sent = sendto(fd, state, n, MSG_NOSIGNAL, (const struct sockaddr *)&addr, addrlen);
    while (sent < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent == (ssize_t)n ? 0 : -1;
}
#endif

int lg_daemon_notify(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
    /* unset_environment = 0: later notifications (reload, stop) need it. */
    return sd_notify(0, state) < 0 ? -1 : 0;
#else
    return notify_socket(state);
#endif
}

int lg_daemon_notify_reloading(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return -1;
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    char state[64];
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    return lg_daemon_notify(state);
}

/* ------------------------------------------------------------------------
 * -D: daemonizing
 * ------------------------------------------------------------------------ */

/* The waiting parent: one byte from the daemon decides the exit status;
 * end of file without it means the daemon (or the intermediate child)
 * died before telling. Never returns. */
static void parent_wait(int read_fd, pid_t child)
{
    char c = 0;
    ssize_t n;
    do
        n = read(read_fd, &c, 1);
    while (n < 0 && errno == EINTR);
    /* Reap the intermediate child, which exits right after forking. */
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
        ;
    /* _exit: the atexit handlers and stdio buffers belong to the daemon,
     * which carries on with the same state. */
    _exit(n == 1 && c == '1' ? 0 : 1);
}

/* Called before any thread or event base exists: fork() copies only the
 * calling thread, and an epoll descriptor would be shared with the
 * parent. */
int lg_daemon_fork(int *ready_fd, char *err, size_t errlen)
{
    *ready_fd = -1;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        snprintf(err, errlen, "cannot open /dev/null: %s", strerror(errno));
        return -1;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
        close(devnull);
        return -1;
    }
    /* Whatever is buffered would otherwise be written twice. */
    fflush(stdout);
    fflush(stderr);

    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        close(devnull);
        return -1;
    }
    if (pid > 0) {
        close(fds[1]);
        close(devnull);
        parent_wait(fds[0], pid);
    }

    /* The intermediate child: a new session without a controlling
     * terminal, then a second fork so that the daemon is not a session
     * leader and can never acquire one. */
    close(fds[0]);
    if (setsid() < 0) {
        dprintf(STDERR_FILENO, "lambdagate: setsid: %s\n", strerror(errno));
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        dprintf(STDERR_FILENO, "lambdagate: cannot fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0)
        _exit(0);

    /* The daemon. A failure here closes the pipe without a byte: the
     * parent exits 1. */
    if (chdir("/") != 0) {
        dprintf(STDERR_FILENO, "lambdagate: chdir /: %s\n", strerror(errno));
        _exit(1);
    }
    if (dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0) {
        dprintf(STDERR_FILENO, "lambdagate: cannot redirect to /dev/null: %s\n", strerror(errno));
        _exit(1);
    }
    if (devnull > STDERR_FILENO)
        close(devnull);
    *ready_fd = fds[1];
    return 0;
}

void lg_daemon_ready(int ready_fd, bool ok)
{
    if (ready_fd < 0)
        return;
    char c = ok ? '1' : '0';
    ssize_t n;
    do
        n = write(ready_fd, &c, 1);
    while (n < 0 && errno == EINTR);
    /* Nothing to do when the parent is gone: it cannot be told anyway. */
    close(ready_fd);
}

/* ------------------------------------------------------------------------
 * pidfile
 * ------------------------------------------------------------------------ */

int lg_daemon_write_pidfile(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    int len = snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    if (len < 0 || (size_t)len >= sizeof(tmp)) {
        snprintf(err, errlen, "pid file %.200s: path too long", path);
        return -1;
    }
    /* mkostemp: a fresh name in the same directory, so that rename()
     * replaces the old file in one step and never crosses a file system. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "pid file %.200s: %s", path, strerror(errno));
        return -1;
    }
    char text[32];
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    const char *what = NULL;
    errno = 0;
    if (fchmod(fd, 0644) != 0)
        what = "chmod";
    else if (write(fd, text, (size_t)n) != n)
        what = "write";
    int saved = errno;
    if (close(fd) != 0 && what == NULL) {
        what = "close";
        saved = errno;
    }
    if (what == NULL && rename(tmp, path) != 0) {
        what = "rename";
        saved = errno;
    }
    if (what != NULL) {
        /* A short write leaves errno alone: say so rather than a stale one. */
        snprintf(err, errlen, "pid file %.200s: %s: %s", path, what,
                 saved ? strerror(saved) : "short write");
        unlink(tmp);
        return -1;
    }
    return 0;
}

void lg_daemon_remove_pidfile(const char *path)
{
    if (path == NULL)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    char text[32];
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0)
        return;
    text[n] = '\0';
    char *end;
    errno = 0;
    long pid = strtol(text, &end, 10);
    if (errno != 0 || end == text || (*end != '\n' && *end != '\0'))
        return;
    /* Another instance may have replaced it since: leave that one. */
    if (pid == (long)getpid())
        unlink(path);
}

/* ------------------------------------------------------------------------
 * Dropping privileges
 * ------------------------------------------------------------------------ */

/* Who user is. Its passwd entry when it has one (a name, or a numeric uid
 * listed there); a numeric uid that is not listed gets the group of the
 * same number and no supplementary groups, as systemd's dynamic users do.
 * *name is set to the entry's name (stored in buf), or NULL. */
static int lookup_user(const char *user, uid_t *uid, gid_t *gid, const char **name, char *buf,
                       size_t buflen, char *err, size_t errlen)
{
    struct passwd pw, *found = NULL;
    int rc = getpwnam_r(user, &pw, buf, buflen, &found);
    const char *p = user;
    bool numeric = *p != '\0';
    for (; *p; p++)
        numeric = numeric && *p >= '0' && *p <= '9';
    if (found == NULL && numeric) {
        errno = 0;
        char *end;
        unsigned long long v = strtoull(user, &end, 10);
        /* (uid_t)-1 means "no change" to setuid's relatives. */
        if (errno != 0 || *end != '\0' || v >= (unsigned long long)(uid_t)-1) {
            snprintf(err, errlen, "user %.64s: uid out of range", user);
            return -1;
        }
        rc = getpwuid_r((uid_t)v, &pw, buf, buflen, &found);
        if (found == NULL && (rc == 0 || rc == ENOENT || rc == ESRCH)) {
            *uid = (uid_t)v;
            *gid = (gid_t)v;
            *name = NULL;
            return 0;
        }
    }
    if (found == NULL) {
        if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
            snprintf(err, errlen, "user %.64s: no such user", user);
        else
            snprintf(err, errlen, "user %.64s: cannot look it up: %s", user, strerror(rc));
        return -1;
    }
    *uid = found->pw_uid;
    *gid = found->pw_gid;
    *name = found->pw_name;
    return 0;
}

int lg_daemon_drop_privileges(const char *user, char *err, size_t errlen)
{
    if (user == NULL || user[0] == '\0') {
        snprintf(err, errlen, "user: empty name");
        return -1;
    }
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t buflen = size > 0 ? (size_t)size : 16384;
    if (buflen < 16384)
        buflen = 16384;
    char *buf = malloc(buflen);
    if (buf == NULL) {
        snprintf(err, errlen, "user %.64s: out of memory", user);
        return -1;
    }
    uid_t uid;
    gid_t gid;
    const char *name;
    int rc = -1;
    if (lookup_user(user, &uid, &gid, &name, buf, buflen, err, errlen) != 0)
        goto out;

    if (geteuid() != 0) {
        /* Without root there is nothing to switch; asking for the user we
         * already are is harmless, any other is a mistake to report. */
        if (uid == getuid() && uid == geteuid()) {
            rc = 0;
        } else {
            snprintf(err, errlen, "cannot switch to user %.64s: not running as root", user);
        }
        goto out;
    }
    /* Groups first: once the uid is gone, so is the right to set them. */
    if (name != NULL ? initgroups(name, gid) != 0 : setgroups(1, &gid) != 0) {
        snprintf(err, errlen, "user %.64s: cannot set the supplementary groups: %s", user,
                 strerror(errno));
        goto out;
    }
    if (setgid(gid) != 0) {
        snprintf(err, errlen, "user %.64s: cannot set group %lu: %s", user, (unsigned long)gid,
                 strerror(errno));
        goto out;
    }
    if (setuid(uid) != 0) {
        snprintf(err, errlen, "user %.64s: cannot set uid %lu: %s", user, (unsigned long)uid,
                 strerror(errno));
        goto out;
    }
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
        snprintf(err, errlen, "user %.64s: the ids did not change", user);
        goto out;
    }
    /* The proof that root is gone for good: it cannot be taken back. */
    if (uid != 0 && setuid(0) == 0) {
        snprintf(err, errlen, "user %.64s: root privileges could be regained", user);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}
