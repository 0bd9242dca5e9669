/* test_daemon.c - unit tests of systemd notification, -D, the pidfile and dropping privileges
 * (src/daemon.c). */
#include "config.h"

#include <check.h>
#include <dirent.h>
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

#include "lambdagate/daemon.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* A fresh directory under /tmp, removed (with its files) by rm_dir(). */
static char tmpdir[64];

static void make_dir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/daemon-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_dir(void)
{
    DIR *d = opendir(tmpdir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* A datagram socket bound to path (a file path, or "@name" for the
 * abstract namespace), as systemd's notification socket is. */
static int bind_notify_socket(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t len = strlen(name);
    ck_assert_uint_lt(len, sizeof(addr.sun_path));
    memcpy(addr.sun_path, name, len);
    if (name[0] == '@')
        addr.sun_path[0] = '\0';
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, alen), 0);
    return fd;
}

/* The next datagram, NUL-terminated, or -1 (errno EAGAIN) when none is
 * waiting. */
static ssize_t recv_now(int fd, char *buf, size_t size)
{
    ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* The whole of a small file, NUL-terminated, in buf. */
static void read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    ck_assert_msg(fd >= 0, "cannot open %s: %s", path, strerror(errno));
    ssize_t n = read(fd, buf, size - 1);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    close(fd);
}

/* ------------------------------------------------------------------------
 * Notification
 * ------------------------------------------------------------------------ */

START_TEST(test_notify_path)
{
    make_dir();
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/notify", tmpdir);
    int fd = bind_notify_socket(path);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);

    ck_assert_int_eq(lg_daemon_notify("READY=1"), 0);
    ck_assert_int_eq(lg_daemon_notify("STATUS=serving 2 listeners\nMAINPID=42"), 0);
    char buf[256];
    ck_assert_int_eq(recv_now(fd, buf, sizeof(buf)), 7);
    ck_assert_str_eq(buf, "READY=1");
    ck_assert_int_gt(recv_now(fd, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "STATUS=serving 2 listeners\nMAINPID=42");
    ck_assert_int_eq(recv_now(fd, buf, sizeof(buf)), -1);
    /* The variable stays for later notifications (reload, stop). */
    ck_assert_str_eq(getenv("NOTIFY_SOCKET"), path);
    close(fd);
    rm_dir();
}
END_TEST

START_TEST(test_notify_abstract)
{
    char name[64];
    snprintf(name, sizeof(name), "@daemon-unit-%ld-%ld", (long)getpid(), (long)time(NULL));
    int fd = bind_notify_socket(name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
    ck_assert_int_eq(lg_daemon_notify("STOPPING=1"), 0);
    char buf[256];
    ck_assert_int_eq(recv_now(fd, buf, sizeof(buf)), 10);
    ck_assert_str_eq(buf, "STOPPING=1");

    /* The abstract name is counted exactly: a longer one that shares its
     * prefix is another socket, which nobody listens on. */
    char other[80];
    snprintf(other, sizeof(other), "%sx", name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", other, 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    ck_assert_int_eq(recv_now(fd, buf, sizeof(buf)), -1);
    close(fd);
}
END_TEST

START_TEST(test_notify_unset)
{
    make_dir();
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/notify", tmpdir);
    int fd = bind_notify_socket(path);
    ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), 0);
    ck_assert_int_eq(lg_daemon_notify_reloading(), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), 0);
    char buf[64];
    ck_assert_int_eq(recv_now(fd, buf, sizeof(buf)), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(fd);
    rm_dir();
}
END_TEST

START_TEST(test_notify_errors)
{
    make_dir();
    char path[PATH_MAX];
    /* Nobody bound there. */
    snprintf(path, sizeof(path), "%s/absent", tmpdir);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    /* Neither a path nor an abstract name. */
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "relative/notify", 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "@", 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    /* Longer than sun_path holds: refused rather than truncated (a
     * truncated path could name somebody else's socket). */
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    longpath[0] = '@';
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
    ck_assert_int_eq(lg_daemon_notify("READY=1"), -1);
    rm_dir();
}
END_TEST

START_TEST(test_notify_reloading)
{
    make_dir();
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/notify", tmpdir);
    int fd = bind_notify_socket(path);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    uint64_t before = monotonic_usec();
    ck_assert_int_eq(lg_daemon_notify_reloading(), 0);
    uint64_t after = monotonic_usec();
    char buf[256];
    ck_assert_int_gt(recv_now(fd, buf, sizeof(buf)), 0);
    const char prefix[] = "RELOADING=1\nMONOTONIC_USEC=";
    ck_assert_msg(strncmp(buf, prefix, sizeof(prefix) - 1) == 0, "got \"%s\"", buf);
    const char *digits = buf + sizeof(prefix) - 1;
    ck_assert_msg(digits[0] >= '1' && digits[0] <= '9', "got \"%s\"", buf);
    ck_assert_uint_eq(strspn(digits, "0123456789"), strlen(digits));
    uint64_t usec = strtoull(digits, NULL, 10);
    ck_assert_uint_ge(usec, before);
    ck_assert_uint_le(usec, after);
    close(fd);
    rm_dir();
}
END_TEST

/* ------------------------------------------------------------------------
 * pidfile
 * ------------------------------------------------------------------------ */

START_TEST(test_pidfile_write)
{
    make_dir();
    char path[PATH_MAX], text[64], expect[32], err[LG_ERR_LEN] = "";
    snprintf(path, sizeof(path), "%s/lambdagate.pid", tmpdir);
    snprintf(expect, sizeof(expect), "%ld\n", (long)getpid());
    /* The mode is 0644 whatever the umask. */
    mode_t old = umask(077);
    int rc = lg_daemon_write_pidfile(path, err, sizeof(err));
    umask(old);
    ck_assert_msg(rc == 0, "%s", err);
    read_file(path, text, sizeof(text));
    ck_assert_str_eq(text, expect);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    /* No temporary file left behind. */
    ck_assert_int_eq(count_entries(tmpdir), 1);
    rm_dir();
}
END_TEST

START_TEST(test_pidfile_replace)
{
    make_dir();
    char path[PATH_MAX], text[64], expect[32], err[LG_ERR_LEN] = "";
    snprintf(path, sizeof(path), "%s/lambdagate.pid", tmpdir);
    snprintf(expect, sizeof(expect), "%ld\n", (long)getpid());
    write_file(path, "999999999\nleftover text that is longer than a pid\n");
    struct stat before, after;
    ck_assert_int_eq(stat(path, &before), 0);
    ck_assert_msg(lg_daemon_write_pidfile(path, err, sizeof(err)) == 0, "%s", err);
    read_file(path, text, sizeof(text));
    ck_assert_str_eq(text, expect);
    /* Replaced by a rename, not rewritten in place: a reader never sees
     * a half-written file. */
    ck_assert_int_eq(stat(path, &after), 0);
    ck_assert_uint_ne(before.st_ino, after.st_ino);
    ck_assert_int_eq(count_entries(tmpdir), 1);
    rm_dir();
}
END_TEST

START_TEST(test_pidfile_write_error)
{
    make_dir();
    char path[PATH_MAX], err[LG_ERR_LEN] = "";
    snprintf(path, sizeof(path), "%s/missing/lambdagate.pid", tmpdir);
    ck_assert_int_eq(lg_daemon_write_pidfile(path, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, path) != NULL, "err \"%s\"", err);
    ck_assert_msg(strstr(err, "No such file or directory") != NULL, "err \"%s\"", err);
    ck_assert_int_eq(count_entries(tmpdir), 0);
    rm_dir();
}
END_TEST

START_TEST(test_pidfile_remove)
{
    make_dir();
    char path[PATH_MAX], text[64], err[LG_ERR_LEN] = "";
    snprintf(path, sizeof(path), "%s/lambdagate.pid", tmpdir);

    /* Ours: removed. */
    ck_assert_msg(lg_daemon_write_pidfile(path, err, sizeof(err)) == 0, "%s", err);
    lg_daemon_remove_pidfile(path);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(errno, ENOENT);
    /* Already gone, or no path: nothing happens. */
    lg_daemon_remove_pidfile(path);
    lg_daemon_remove_pidfile(NULL);

    /* Another instance's (it replaced ours): left alone. */
    char other[32];
    snprintf(other, sizeof(other), "%ld\n", (long)getpid() + 1);
    write_file(path, other);
    lg_daemon_remove_pidfile(path);
    read_file(path, text, sizeof(text));
    ck_assert_str_eq(text, other);

    /* Our pid as a prefix of another number, or followed by junk: not ours. */
    snprintf(other, sizeof(other), "%ld0\n", (long)getpid());
    write_file(path, other);
    lg_daemon_remove_pidfile(path);
    ck_assert_int_eq(access(path, F_OK), 0);
    snprintf(other, sizeof(other), "%ldx\n", (long)getpid());
    write_file(path, other);
    lg_daemon_remove_pidfile(path);
    ck_assert_int_eq(access(path, F_OK), 0);
    write_file(path, "");
    lg_daemon_remove_pidfile(path);
    ck_assert_int_eq(access(path, F_OK), 0);

    /* Without the newline it is still ours. */
    snprintf(other, sizeof(other), "%ld", (long)getpid());
    write_file(path, other);
    lg_daemon_remove_pidfile(path);
    ck_assert_int_eq(access(path, F_OK), -1);
    rm_dir();
}
END_TEST

/* ------------------------------------------------------------------------
 * Dropping privileges
 * ------------------------------------------------------------------------ */

/* Runs body in a child process and asserts that it exits 0; the child
 * reports its failures on stderr. Dropping privileges cannot be undone,
 * so it never happens in the test process itself. */
#define IN_CHILD(...)                                                                              \
    do {                                                                                           \
        pid_t child_ = fork();                                                                     \
        ck_assert_int_ge(child_, 0);                                                               \
        if (child_ == 0) {                                                                         \
            __VA_ARGS__;                                                                           \
            _exit(0);                                                                              \
        }                                                                                          \
        int status_;                                                                               \
        ck_assert_int_eq(waitpid(child_, &status_, 0), child_);                                    \
        ck_assert_msg(WIFEXITED(status_) && WEXITSTATUS(status_) == 0,                             \
                      "child failed at check %d (status 0x%x)",                                    \
                      WIFEXITED(status_) ? WEXITSTATUS(status_) : -1, status_);                    \
    } while (0)

/* In the child: exit with code when cond is false. */
#define CHILD_CHECK(code, cond)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check %d failed: %s\n", code, #cond);                                 \
            _exit(code);                                                                           \
        }                                                                                          \
    } while (0)

static bool running_as_root(void)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "test_daemon: not root, skipping the privilege-dropping test\n");
    return false;
}

/* The groups of the process are exactly gid plus the groups that list
 * the user as a member, and never root's. */
static int check_groups(const char *user, gid_t gid)
{
    gid_t groups[256];
    int n = getgroups(256, groups);
    if (n < 1)
        return 1;
    gid_t expect[256];
    int m = 256;
    if (getgrouplist(user, gid, expect, &m) < 0)
        return 2;
    if (n != m)
        return 3;
    bool has_gid = false;
    for (int i = 0; i < n; i++) {
        if (groups[i] == 0)
            return 4;
        has_gid = has_gid || groups[i] == gid;
        bool listed = false;
        for (int j = 0; j < m; j++)
            listed = listed || expect[j] == groups[i];
        if (!listed)
            return 5;
    }
    return has_gid ? 0 : 6;
}

static void drop_to_nobody(const char *as)
{
    struct passwd *pw = getpwnam("nobody");
    CHILD_CHECK(10, pw != NULL);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    CHILD_CHECK(11, setgroups(1, (gid_t[]){0}) == 0);
    char err[LG_ERR_LEN] = "";
    int rc = lg_daemon_drop_privileges(as, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "drop: %s\n", err);
    CHILD_CHECK(12, rc == 0);
    CHILD_CHECK(13, getuid() == uid && geteuid() == uid);
    CHILD_CHECK(14, getgid() == gid && getegid() == gid);
    uid_t r, e, s;
    CHILD_CHECK(15, getresuid(&r, &e, &s) == 0 && r == uid && e == uid && s == uid);
    int g = check_groups("nobody", gid);
    if (g != 0)
        fprintf(stderr, "groups check %d\n", g);
    CHILD_CHECK(16, g == 0);
    /* Root cannot be regained, nor root's group. */
    CHILD_CHECK(17, setuid(0) == -1 && errno == EPERM);
    CHILD_CHECK(18, seteuid(0) == -1);
    CHILD_CHECK(19, setgid(0) == -1);
    CHILD_CHECK(20, setgroups(1, (gid_t[]){0}) == -1);
    /* Now unprivileged: asking again for the same user is harmless,
     * another one is refused. */
    CHILD_CHECK(21, lg_daemon_drop_privileges("nobody", err, sizeof(err)) == 0);
    CHILD_CHECK(22, lg_daemon_drop_privileges("root", err, sizeof(err)) == -1);
    CHILD_CHECK(23, strstr(err, "root") != NULL && strstr(err, "not running as root") != NULL);
}

START_TEST(test_drop_by_name)
{
    if (!running_as_root())
        return;
    IN_CHILD(drop_to_nobody("nobody"));
}
END_TEST

START_TEST(test_drop_by_uid)
{
    if (!running_as_root())
        return;
    struct passwd *pw = getpwnam("nobody");
    ck_assert_ptr_nonnull(pw);
    char uid[32];
    snprintf(uid, sizeof(uid), "%lu", (unsigned long)pw->pw_uid);
    IN_CHILD(drop_to_nobody(uid));
}
END_TEST

/* A uid without a passwd entry: its own number as the group, no
 * supplementary groups. */
START_TEST(test_drop_unlisted_uid)
{
    if (!running_as_root())
        return;
    uid_t id = 54321;
    while (getpwuid(id) != NULL)
        id++;
    char uid[32];
    snprintf(uid, sizeof(uid), "%lu", (unsigned long)id);
    IN_CHILD({
        char err[LG_ERR_LEN] = "";
        int rc = lg_daemon_drop_privileges(uid, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "drop: %s\n", err);
        CHILD_CHECK(30, rc == 0);
        CHILD_CHECK(31, getuid() == id && geteuid() == id);
        CHILD_CHECK(32, getgid() == (gid_t)id && getegid() == (gid_t)id);
        gid_t groups[8];
        CHILD_CHECK(33, getgroups(8, groups) == 1 && groups[0] == (gid_t)id);
        CHILD_CHECK(34, setuid(0) == -1);
    });
}
END_TEST

START_TEST(test_drop_unknown_user)
{
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_daemon_drop_privileges("no-such-user-lg", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "no-such-user-lg") != NULL, "err \"%s\"", err);
    ck_assert_msg(strstr(err, "no such user") != NULL, "err \"%s\"", err);
    /* Nothing changed. */
    ck_assert_uint_eq(getuid(), geteuid());
    err[0] = '\0';
    ck_assert_int_eq(lg_daemon_drop_privileges("", err, sizeof(err)), -1);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(lg_daemon_drop_privileges(NULL, err, sizeof(err)), -1);
    /* A number beyond any uid. */
    ck_assert_int_eq(lg_daemon_drop_privileges("99999999999999999999", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "99999999999999999999") != NULL, "err \"%s\"", err);
}
END_TEST

/* Dropping to the user we are is a no-op that succeeds, root or not. */
START_TEST(test_drop_same_user)
{
    struct passwd *pw = getpwuid(geteuid());
    ck_assert_ptr_nonnull(pw);
    char name[64];
    snprintf(name, sizeof(name), "%s", pw->pw_name);
    uid_t uid = geteuid();
    IN_CHILD({
        char err[LG_ERR_LEN] = "";
        CHILD_CHECK(40, lg_daemon_drop_privileges(name, err, sizeof(err)) == 0);
        CHILD_CHECK(41, geteuid() == uid && getuid() == uid);
    });
}
END_TEST

/* ------------------------------------------------------------------------
 * -D
 * ------------------------------------------------------------------------ */

/* What the daemon found about itself, sent to the test through a pipe. */
struct daemon_report {
    pid_t pid;
    pid_t ppid_was_parent; /* 1 if its parent was the original process */
    pid_t sid;
    int cwd_is_root;
    int stdin_null;
    int stdout_null;
    int ready_fd_ok;
};

static bool same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino && a.st_rdev == b.st_rdev;
}

/* How the daemon ends: after telling ok, after telling not ok, or
 * without telling. */
enum ending {
    TELL_OK,
    TELL_FAILED,
    DIE_SILENTLY
};

/* Forks a process that runs lg_daemon_fork; the daemon it leaves behind
 * reports through report_fd and ends as told. Returns the forked
 * process (the waiting parent), whose exit status is the result. */
static pid_t start_daemonizing(int report_fd, enum ending ending)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p > 0)
        return p;
    pid_t original = getpid();
    int ready_fd = -1;
    char err[LG_ERR_LEN] = "";
    if (lg_daemon_fork(&ready_fd, err, sizeof(err)) != 0) {
        fprintf(stderr, "lg_daemon_fork: %s\n", err);
        _exit(99);
    }
    /* Only the daemon gets here. */
    struct daemon_report r = {0};
    r.pid = getpid();
    r.ppid_was_parent = getppid() == original;
    r.sid = getsid(0);
    char cwd[PATH_MAX];
    r.cwd_is_root = getcwd(cwd, sizeof(cwd)) != NULL && strcmp(cwd, "/") == 0;
    r.stdin_null = same_file(STDIN_FILENO, "/dev/null");
    r.stdout_null = same_file(STDOUT_FILENO, "/dev/null");
    r.ready_fd_ok = ready_fd > STDERR_FILENO && (fcntl(ready_fd, F_GETFD) & FD_CLOEXEC);
    if (write(report_fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
        _exit(98);
    close(report_fd);
    if (ending == TELL_OK)
        lg_daemon_ready(ready_fd, true);
    else if (ending == TELL_FAILED)
        lg_daemon_ready(ready_fd, false);
    _exit(0);
}

static int exit_status_of(pid_t p)
{
    int status;
    ck_assert_int_eq(waitpid(p, &status, 0), p);
    ck_assert_msg(WIFEXITED(status), "status 0x%x", status);
    return WEXITSTATUS(status);
}

static void check_daemonize(enum ending ending, int expect)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t p = start_daemonizing(fds[1], ending);
    close(fds[1]);
    struct daemon_report r;
    ssize_t n = read(fds[0], &r, sizeof(r));
    close(fds[0]);
    ck_assert_int_eq(n, (ssize_t)sizeof(r));
    ck_assert_int_eq(exit_status_of(p), expect);
    ck_assert_int_ne(r.pid, p);
    /* Double fork: its parent was the intermediate child, and it is in a
     * session of its own (led by that child), not ours. */
    ck_assert_int_eq(r.ppid_was_parent, 0);
    ck_assert_int_ne(r.sid, getsid(0));
    ck_assert_int_ne(r.sid, r.pid);
    ck_assert_int_eq(r.cwd_is_root, 1);
    ck_assert_int_eq(r.stdin_null, 1);
    ck_assert_int_eq(r.stdout_null, 1);
    ck_assert_int_eq(r.ready_fd_ok, 1);
}

START_TEST(test_fork_ready)
{
    check_daemonize(TELL_OK, 0);
}
END_TEST

START_TEST(test_fork_failed)
{
    check_daemonize(TELL_FAILED, 1);
}
END_TEST

START_TEST(test_fork_daemon_died)
{
    check_daemonize(DIE_SILENTLY, 1);
}
END_TEST

/* The parent waits for the daemon to be ready, not merely started. */
START_TEST(test_fork_parent_waits)
{
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        close(go[1]);
        int ready_fd;
        char err[LG_ERR_LEN];
        if (lg_daemon_fork(&ready_fd, err, sizeof(err)) != 0)
            _exit(99);
        /* Ready only when the test says so. */
        char c;
        ssize_t n = read(go[0], &c, 1);
        lg_daemon_ready(ready_fd, n == 1);
        _exit(0);
    }
    close(go[0]);
    usleep(200000);
    int status;
    ck_assert_int_eq(waitpid(p, &status, WNOHANG), 0);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    ck_assert_int_eq(exit_status_of(p), 0);
}
END_TEST

START_TEST(test_ready_not_daemonized)
{
    /* -1: not daemonized; nothing happens. */
    lg_daemon_ready(-1, true);
    lg_daemon_ready(-1, false);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon");

    TCase *notify = tcase_create("notify");
    tcase_set_timeout(notify, 30);
    tcase_add_test(notify, test_notify_path);
    tcase_add_test(notify, test_notify_abstract);
    tcase_add_test(notify, test_notify_unset);
    tcase_add_test(notify, test_notify_errors);
    tcase_add_test(notify, test_notify_reloading);
    suite_add_tcase(s, notify);

    TCase *pidfile = tcase_create("pidfile");
    tcase_set_timeout(pidfile, 30);
    tcase_add_test(pidfile, test_pidfile_write);
    tcase_add_test(pidfile, test_pidfile_replace);
    tcase_add_test(pidfile, test_pidfile_write_error);
    tcase_add_test(pidfile, test_pidfile_remove);
    suite_add_tcase(s, pidfile);

    TCase *drop = tcase_create("drop_privileges");
    tcase_set_timeout(drop, 30);
    tcase_add_test(drop, test_drop_by_name);
    tcase_add_test(drop, test_drop_by_uid);
    tcase_add_test(drop, test_drop_unlisted_uid);
    tcase_add_test(drop, test_drop_unknown_user);
    tcase_add_test(drop, test_drop_same_user);
    suite_add_tcase(s, drop);

    TCase *fork_ = tcase_create("fork");
    tcase_set_timeout(fork_, 30);
    tcase_add_test(fork_, test_fork_ready);
    tcase_add_test(fork_, test_fork_failed);
    tcase_add_test(fork_, test_fork_daemon_died);
    tcase_add_test(fork_, test_fork_parent_waits);
    tcase_add_test(fork_, test_ready_not_daemonized);
    suite_add_tcase(s, fork_);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
