/* router.h - method + path template -> route (pure, no libevent). */
#ifndef LG_ROUTER_H
#define LG_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "lambdagate/lambdagate.h"

/* Limits on templates and on the paths matched against them. */
#define LG_ROUTER_MAX_PARAMS   16
#define LG_ROUTER_MAX_SEGMENTS 128

struct lg_router;

/* A path parameter of a match: name borrowed from the router, value owned
 * by the match (percent-decoded once, NUL-terminated). */
struct lg_router_param {
    const char *name;
    char *value;
    size_t value_len;
};

struct lg_router_match {
    void *route;               /* the value given to lg_router_add(); NULL unless found */
    const char *method;        /* the route's method ("GET", "ANY"); borrowed */
    const char *template_path; /* the route's template; borrowed */
    size_t nparams;
    struct lg_router_param params[LG_ROUTER_MAX_PARAMS];
    /* For LG_ROUTER_METHOD_NOT_ALLOWED: the methods of every template that
     * matched the path, sorted, joined with ", " (HEAD listed with GET). */
    char allow[128];
};

enum lg_router_result {
    LG_ROUTER_FOUND = 0,
    LG_ROUTER_NOT_FOUND,          /* no template matches the path: 404 */
    LG_ROUTER_METHOD_NOT_ALLOWED, /* a template matches, no method does: 405 */
    LG_ROUTER_BAD_PATH,           /* malformed escape, dot segment, NUL: 400 */
};

/* An empty router; caller frees with lg_router_free(). NULL on no memory. */
struct lg_router *lg_router_new(void);
void lg_router_free(struct lg_router *r);

/* Check a path template without adding it: starts with '/', segments are
 * non-empty literals, "{name}", or a last "{name+}"; names are
 * [A-Za-z0-9_-]+ and unique; literals hold no '{', '}', '%', '?', '#', or
 * dot segment. -1 with err set otherwise. */
int lg_router_check_template(const char *path, char *err, size_t errlen) LG_WUR;

/* Add a route: method is an uppercase method or "ANY"; route is returned in
 * matches. Fails with err set for an invalid template, or a template of the
 * same shape (parameter names aside) and the same method already added. */
int lg_router_add(struct lg_router *r, const char *method, const char *path, void *route, char *err,
                  size_t errlen) LG_WUR;

/* Match a request. path is the raw request path (percent-encoded, without
 * the query). The path is split on '/' first, then each segment is
 * percent-decoded once, so "%2F" never splits a segment and ".."
 * never climbs. Precedence: the most specific template wins, literal over
 * "{name}" over "{name+}", segment by segment from the left; among routes of
 * one template an exact method wins over ANY; a GET route also serves HEAD
 * when the template has no HEAD or ANY route. method NULL matches any
 * method (the most specific template, then its first route). On
 * LG_ROUTER_FOUND the caller must call lg_router_match_clear(m). */
enum lg_router_result lg_router_match(const struct lg_router *r, const char *method,
                                      const char *path, size_t path_len, struct lg_router_match *m);
/* Free the parameter values of a match; m may be cleared twice. */
void lg_router_match_clear(struct lg_router_match *m);

#endif
