/* main.c - options, signals, workers; everything else lives in the library. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "lambdagate/admin.h"
#include "lambdagate/awscreds.h"
#include "lambdagate/conf.h"
#include "lambdagate/daemon.h"
#include "lambdagate/jwks.h"
#include "lambdagate/log.h"
#include "lambdagate/server.h"
#include "lambdagate/tls.h"

#define DEFAULT_CONF LG_SYSCONFDIR "/lambdagate/lambdagate.json"

static void usage(FILE *out)
{
    fprintf(out, "usage: lambdagate [-t] [-D] [-c FILE]\n"
                 "       lambdagate -V | -h\n"
                 "\n"
                 "  -c FILE  configuration file (default " DEFAULT_CONF ")\n"
                 "  -t       check the configuration and exit\n"
                 "  -D       run in the background (daemonize) once the listeners are bound\n"
                 "  -V       print the version and exit\n"
                 "  -h       print this help and exit\n"
                 "\n"
                 "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration,\n"
                 "SIGUSR1 reopens the access log.\n"
                 "See lambdagate(8) and lambdagate.json(5).\n");
}

struct control {
    struct event_base *base;
    struct lg_conf *conf; /* the current one: replaced by a reload */
    struct lg_server *server;
    const char *jwks_url; /* of the running key set fetcher, or NULL */
    struct lg_jwks_provider *jwks;
    struct lg_admin *admin;
    struct event *drain_check;
    bool stopping;
};

/* While the workers drain, the control loop keeps running, so that
 * credentials are still refreshed for the requests that are finishing;
 * it ends when the last worker is done. */
static int64_t server_connections(void *arg)
{
    return lg_server_connections(arg);
}

static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct control *ctl = arg;
    if (lg_server_finished(ctl->server)) {
        event_base_loopexit(ctl->base, NULL);
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(ctl->drain_check, &tv);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct control *ctl = arg;
    if (ctl->stopping)
        return;
    ctl->stopping = true;
    lg_log(LG_LOG_INFO, "stopping signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    (void)lg_daemon_notify("STOPPING=1");
    lg_admin_set_draining(ctl->admin, true);
    lg_server_stop(ctl->server);
    on_drain_check(-1, 0, ctl);
}

static void on_reopen_signal(evutil_socket_t sig, short what, void *arg)
{
    char err[LG_ERR_LEN];
    if (lg_log_access_reopen(err, sizeof(err)) != 0) {
        lg_log_clean(err);
        lg_log(LG_LOG_ERROR, "cannot reopen the access log reason=\"%s\"", err);
    } else {
        lg_log(LG_LOG_INFO, "access log reopened");
    }
}

static const char *jwks_url_of(const struct lg_conf *conf)
{
    return conf->auth.jwt ? conf->auth.jwt->jwks_url : NULL;
}

/* SIGHUP: load the whole file again (with its key set and API keys) and,
 * when all of it is valid, serve new requests with it; otherwise log every
 * error and keep the running config. */
static void reload(struct control *ctl);

static bool differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Keys that a reload cannot apply to a running process: say so, rather
 * than let an operator believe the change took effect. */
static void warn_restart_only(const struct lg_conf *old, const struct lg_conf *conf)
{
    const char *keys[8];
    size_t n = 0;
    if (old->workers != conf->workers)
        keys[n++] = "workers";
    if (old->admin_set != conf->admin_set ||
        (conf->admin_set && differ(old->admin.text, conf->admin.text)))
        keys[n++] = "admin";
    if (differ(old->access_log, conf->access_log))
        keys[n++] = "access_log";
    if (old->cache.max_bytes != conf->cache.max_bytes)
        keys[n++] = "cache.max_bytes";
    if (differ(old->pid_file, conf->pid_file))
        keys[n++] = "pid_file";
    if (differ(old->user, conf->user))
        keys[n++] = "user";
    /* The credential source is chosen once; secrets are compared, never logged. */
    if (old->lambda.credentials_set != conf->lambda.credentials_set ||
        differ(old->lambda.access_key_id, conf->lambda.access_key_id) ||
        differ(old->lambda.secret_access_key, conf->lambda.secret_access_key) ||
        differ(old->lambda.session_token, conf->lambda.session_token))
        keys[n++] = "lambda.credentials";
    for (size_t i = 0; i < n; i++)
        lg_log(LG_LOG_WARN, "reload: %s changed; it takes effect at the next start", keys[i]);
}

static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    struct control *ctl = arg;
    if (ctl->stopping)
        return;
    (void)lg_daemon_notify_reloading();
    reload(ctl);
    (void)lg_daemon_notify("READY=1");
}

static void reload(struct control *ctl)
{
    struct lg_conf_errors errors = {0};
    struct lg_conf *conf = lg_conf_load(ctl->conf->path, &errors);
    if (conf == NULL) {
        for (size_t i = 0; i < errors.count; i++) {
            char text[LG_ERR_LEN]; /* it may quote the file */
            lg_log(LG_LOG_ERROR, "reload refused file=%s line=%d error=\"%s\"",
                   errors.items[i].file ? errors.items[i].file : ctl->conf->path,
                   errors.items[i].line,
                   lg_log_cleaned(text, sizeof(text), errors.items[i].message));
        }
        lg_conf_errors_free(&errors);
        return;
    }
    /* The key set fetcher of jwks_url lives as long as the process. */
    const char *url = jwks_url_of(conf);
    if ((url == NULL) != (ctl->jwks_url == NULL) || (url && strcmp(url, ctl->jwks_url) != 0)) {
        lg_log(LG_LOG_ERROR,
               "reload refused file=%s error=\"auth.jwt.jwks_url changed; "
               "restart lambdagate to apply that\"",
               ctl->conf->path);
        lg_conf_unref(conf);
        return;
    }
    char err[LG_ERR_LEN];
    if (lg_server_reload(ctl->server, conf, err, sizeof(err)) != 0) {
        lg_log_clean(err);
        lg_log(LG_LOG_ERROR, "reload refused file=%s error=\"%s\"", ctl->conf->path, err);
        lg_conf_unref(conf);
        return;
    }
    warn_restart_only(ctl->conf, conf);
    /* The URL string must stay valid: it now belongs to the new config. */
    ctl->jwks_url = url;
    /* A reload re-reads the key set too (CONTRACT section 2). */
    lg_jwks_provider_fetch_now(ctl->jwks);
    lg_conf_unref(ctl->conf);
    ctl->conf = conf;
    lg_log(LG_LOG_INFO, "configuration reloaded file=%s routes=%zu", conf->path, conf->nroutes);
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONF;
    bool check_only = false;
    int opt;
    opterr = 0;
    bool daemonize = false;
    while ((opt = getopt(argc, argv, ":c:tDVh")) != -1) {
        switch (opt) {
        case 'D':
            daemonize = true;
            break;
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'V':
            printf("lambdagate %s\n", PACKAGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "lambdagate: option -%c needs an argument\n", optopt);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "lambdagate: unknown option -%c\n", optopt);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lambdagate: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    lg_tls_init();
    struct lg_conf_errors errors = {0};
    struct lg_conf *conf = lg_conf_load(path, &errors);
    if (conf == NULL) {
        lg_conf_errors_print(&errors, path, stderr);
        lg_conf_errors_free(&errors);
        return 1;
    }
    if (check_only) {
        /* What the daemon would open at start is checked too, as nginx -t
         * does: an access log it cannot open fails the check. */
        char err[LG_ERR_LEN];
        if (lg_log_access_open(conf->access_log, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            lg_conf_unref(conf);
            return 1;
        }
        lg_log_access_close();
        printf("configuration OK\n");
        lg_conf_unref(conf);
        return 0;
    }

    /* -D: into the background before any thread or event loop exists; the
     * parent waits for the child's word that the listeners are bound. */
    int ready_fd = -1;
    if (daemonize) {
        char derr[LG_ERR_LEN];
        if (lg_daemon_fork(&ready_fd, derr, sizeof(derr)) != 0) {
            fprintf(stderr, "lambdagate: %s\n", derr);
            lg_conf_unref(conf);
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    /* Every client and upstream connection is a descriptor: use all the
     * hard limit allows (nginx's worker_rlimit_nofile). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            lg_log(LG_LOG_WARN, "cannot raise the open file limit");
    }
    /* No evthread_use_pthreads(): each event base is used by one thread
     * only (workers are stopped through an eventfd), so libevent's locks
     * would only cost time. */
    int rc = 1;
    char err[LG_ERR_LEN];
    struct control ctl = {.conf = conf};
    struct evdns_base *dns = NULL;
    struct lg_creds_provider *creds = NULL;
    struct lg_jwks_provider *jwks = NULL;
    struct lg_server *server = NULL;
    struct event *ev_term = NULL, *ev_int = NULL, *ev_hup = NULL, *ev_usr1 = NULL;
    char *pid_path = NULL; /* written at start; removed at exit */

    if (lg_log_access_open(conf->access_log, err, sizeof(err)) != 0) {
        lg_log(LG_LOG_ERROR, "%s", err);
        goto out;
    }
    ctl.base = event_base_new();
    if (ctl.base == NULL) {
        lg_log(LG_LOG_ERROR, "cannot create the control event loop");
        goto out;
    }
    dns = evdns_base_new(ctl.base,
                         EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (dns == NULL) {
        dns = evdns_base_new(ctl.base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (dns)
            evdns_base_load_hosts(dns, NULL);
    }
    creds = lg_creds_provider_new(ctl.base, dns, conf, err, sizeof(err));
    if (creds == NULL) {
        lg_log(LG_LOG_ERROR, "AWS credentials: %s", err);
        goto out;
    }
    if (jwks_url_of(conf)) {
        jwks = lg_jwks_provider_new(ctl.base, dns, jwks_url_of(conf), conf->auth.jwt->ssl_ctx, err,
                                    sizeof(err));
        if (jwks == NULL) {
            lg_log(LG_LOG_ERROR, "auth.jwt.jwks_url: %s", err);
            goto out;
        }
        ctl.jwks_url = jwks_url_of(conf);
        ctl.jwks = jwks;
    }
    server = lg_server_new(conf, creds, jwks, err, sizeof(err));
    if (server == NULL) {
        lg_log(LG_LOG_ERROR, "%s", err);
        goto out;
    }
    if (conf->admin_set) {
        ctl.admin =
            lg_admin_new(ctl.base, &conf->admin, server_connections, server, err, sizeof(err));
        if (ctl.admin == NULL) {
            lg_log(LG_LOG_ERROR, "admin listener: %s", err);
            goto out;
        }
        lg_log(LG_LOG_INFO, "admin listening address=%s", conf->admin.text);
    }
    if (conf->pid_file) {
        if (lg_daemon_write_pidfile(conf->pid_file, err, sizeof(err)) != 0) {
            lg_log(LG_LOG_ERROR, "%s", err);
            goto out;
        }
        pid_path = strdup(conf->pid_file);
    }
    /* Every socket is bound: what is left needs no privilege. */
    if (conf->user && lg_daemon_drop_privileges(conf->user, err, sizeof(err)) != 0) {
        lg_log(LG_LOG_ERROR, "%s", err);
        goto out;
    }
    ev_term = evsignal_new(ctl.base, SIGTERM, on_stop_signal, &ctl);
    ev_int = evsignal_new(ctl.base, SIGINT, on_stop_signal, &ctl);
    ev_hup = evsignal_new(ctl.base, SIGHUP, on_reload_signal, &ctl);
    ev_usr1 = evsignal_new(ctl.base, SIGUSR1, on_reopen_signal, &ctl);
    if (!ev_term || !ev_int || !ev_hup || !ev_usr1 || evsignal_add(ev_term, NULL) != 0 ||
        evsignal_add(ev_int, NULL) != 0 || evsignal_add(ev_hup, NULL) != 0 ||
        evsignal_add(ev_usr1, NULL) != 0) {
        lg_log(LG_LOG_ERROR, "cannot install signal handlers");
        goto out;
    }
    lg_creds_provider_start(creds);
    if (jwks)
        lg_jwks_provider_start(jwks);
    if (lg_server_start(server, err, sizeof(err)) != 0) {
        lg_log(LG_LOG_ERROR, "%s", err);
        lg_server_stop(server);
        goto out;
    }
    for (size_t i = 0; i < conf->nlisten; i++)
        lg_log(LG_LOG_INFO, "listening address=%s tls=%s", conf->listen[i].address.text,
               conf->listen[i].tls ? "on" : "off");
    lg_log(LG_LOG_INFO, "lambdagate started version=%s workers=%zu routes=%zu config=%s",
           PACKAGE_VERSION, lg_server_workers(server), conf->nroutes, conf->path);
    (void)lg_daemon_notify("READY=1");
    lg_daemon_ready(ready_fd, true);
    ready_fd = -1;

    ctl.server = server;
    ctl.drain_check = evtimer_new(ctl.base, on_drain_check, &ctl);
    if (ctl.drain_check == NULL) {
        lg_log(LG_LOG_ERROR, "out of memory");
        lg_server_stop(server);
        goto out;
    }
    event_base_dispatch(ctl.base);

    lg_server_stop(server); /* a no-op after a stop signal */
    rc = 0;
out:
    lg_daemon_ready(ready_fd, false); /* a start that failed: the parent exits 1 */
    /* Joins the workers: in-flight requests finish first (bounded by
     * shutdown_timeout_ms). */
    lg_server_free(server);
    lg_admin_free(ctl.admin);
    if (pid_path)
        lg_daemon_remove_pidfile(pid_path);
    free(pid_path);
    /* Only this thread is left. Freeing a signal event restores the action
     * saved when it was added (the default, which kills): block the signals
     * so that a late SIGTERM cannot end the process mid-teardown. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    sigaddset(&stop_signals, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (rc == 0)
        lg_log(LG_LOG_INFO, "stopped");
    lg_creds_provider_free(creds);
    lg_jwks_provider_free(jwks);
    /* A fetch cancelled just now releases its connection from the loop:
     * let that run before the loop goes away. */
    if (ctl.base)
        event_base_loop(ctl.base, EVLOOP_NONBLOCK);
    if (ev_term)
        event_free(ev_term);
    if (ev_int)
        event_free(ev_int);
    if (ev_hup)
        event_free(ev_hup);
    if (ev_usr1)
        event_free(ev_usr1);
    if (ctl.drain_check)
        event_free(ctl.drain_check);
    if (dns)
        evdns_base_free(dns, 0);
    if (ctl.base)
        event_base_free(ctl.base);
    lg_log_access_close();
    lg_conf_unref(ctl.conf);
    libevent_global_shutdown();
    return rc;
}
