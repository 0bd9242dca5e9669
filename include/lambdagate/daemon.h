/* daemon.h - running as a service: systemd notification, daemonizing, pidfile, dropping privileges.
 */
#ifndef LG_DAEMON_H
#define LG_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "lambdagate/lambdagate.h"

/* systemd's notification protocol (sd_notify(3)): a datagram to the
 * AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace). With libsystemd at configure time its sd_notify()
 * is used, else the protocol is spoken directly. No-op (0) without
 * NOTIFY_SOCKET. state is e.g. "READY=1", "RELOADING=1\nMONOTONIC_USEC=N",
 * "STOPPING=1", "STATUS=...". -1 on a send error. */
int lg_daemon_notify(const char *state);
/* The same, with MONOTONIC_USEC=<now> appended (systemd 253 wants it
 * with RELOADING=1). */
int lg_daemon_notify_reloading(void);

/* -D: fork into the background (double fork, setsid, chdir("/"), stdin
 * and stdout to /dev/null; stderr kept so that diagnostics still reach
 * the log the caller set up). The parent waits until the child reports
 * (through a pipe) that it is ready or failed, and exits 0 or 1
 * accordingly, so that "lambdagate -D && next" only proceeds when the
 * listeners are bound. Returns in the child with *ready_fd set (pass it
 * to lg_daemon_ready later). -1 with err set on failure (in the parent,
 * before forking). */
int lg_daemon_fork(int *ready_fd, char *err, size_t errlen) LG_WUR;
/* Tell the waiting parent: ok (exit 0) or not (exit 1); closes the fd.
 * Accepts -1 (not daemonized). */
void lg_daemon_ready(int ready_fd, bool ok);

/* Write the pid to path (created 0644, replaced atomically through a
 * temporary file in the same directory). -1 with err set. */
int lg_daemon_write_pidfile(const char *path, char *err, size_t errlen) LG_WUR;
/* Remove it if it still holds our pid. */
void lg_daemon_remove_pidfile(const char *path);

/* Switch to user (a name or numeric uid; its primary group and
 * supplementary groups) after the listeners are bound: setgroups,
 * setgid, setuid, and a check that root cannot be regained. Only when
 * running as root; otherwise a user other than the current one is an
 * error. -1 with err set. */
int lg_daemon_drop_privileges(const char *user, char *err, size_t errlen) LG_WUR;

#endif
