/* admin.h - the admin listener: GET /healthz and GET /metrics (Prometheus text). */
#ifndef LG_ADMIN_H
#define LG_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

struct event_base;

/* The lambdagate_connections gauge, read at each scrape on the control
 * loop's thread (for example the open client connections of all workers). */
typedef int64_t (*lg_admin_gauge_fn)(void *arg);

/* The admin listener on admin.address, served by the control loop (base),
 * never by the workers, so that it answers while they are busy or
 * draining. Plain HTTP/1.1 (keep-alive allowed), GET and HEAD only:
 *   GET /healthz -> 200 {"status":"ok"} while serving,
 *                   503 {"status":"draining"} once a stop began;
 *   GET /metrics -> 200 text/plain; version=0.0.4 (lg_metrics_render);
 *   other paths 404 {"message":"Not Found"}, other methods 405 with Allow.
 * Requests are bounded (header 8 KiB, no body; a connection that makes no
 * progress for 5 s is closed).
 * connections may be NULL (the gauge reads 0); arg is passed to it. The
 * address is borrowed for the call only. Caller frees with
 * lg_admin_free(), before base. NULL with err set when the address cannot
 * be bound. */
struct lg_admin;
struct lg_admin *lg_admin_new(struct event_base *base, const struct lg_conf_address *address,
                              lg_admin_gauge_fn connections, void *arg, char *err, size_t errlen);
/* /healthz answers 503 and lambdagate_draining reads 1 while draining is
 * true. Thread-safe. Accepts NULL. */
void lg_admin_set_draining(struct lg_admin *a, bool draining);
/* Close the listener and its connections; accepts NULL. */
void lg_admin_free(struct lg_admin *a);

#endif
