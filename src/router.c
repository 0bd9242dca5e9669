/* router.c - method + path template -> route: a segment trie, matched without allocating. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/router.h"

/* Longest method name accepted by lg_router_add(); real ones are at most
 * 17 bytes (BASELINE-CONTROL), and the bound keeps the Allow list short. */
#define ROUTER_METHOD_MAX 32

/* How much of a template an error message quotes, so the reason after it
 * survives an LG_ERR_LEN buffer. */
#define ROUTER_ERR_QUOTE 96

/* Distinct methods gathered for a 405 answer. More cannot fit in the
 * 128-byte allow field anyway (each entry takes at least 3 + 2 bytes). */
#define ROUTER_ALLOW_MAX 64

struct router_node;

/* A literal edge. lit is the decoded text (a template literal holds no '%',
 * so its text is already what a decoded path segment must equal). */
struct router_child {
    char *lit;
    size_t len;
    struct router_node *node;
};

/* One route, stored at the node where its template ends. Parameter names
 * live here, not in the trie, because templates of one shape may name their
 * parameters differently ("/u/{a}" GET and "/u/{b}" POST). */
struct router_route {
    char *method;        /* owned */
    char *template_path; /* owned copy of the template as added */
    char *names_buf;     /* owned; names[] point into it */
    const char *names[LG_ROUTER_MAX_PARAMS];
    size_t nparams;
    void *route; /* the caller's value; borrowed */
};

/* A trie node stands for one template shape prefix: the literal children
 * (sorted by bytes for binary search), at most one "{name}" child and at
 * most one "{name+}" child (always a leaf, since greedy is last). */
struct router_node {
    struct router_child *lits;
    size_t nlits, caplits;
    struct router_node *param;
    struct router_node *greedy;
    struct router_route *routes; /* in the order added */
    size_t nroutes, caproutes;
};

struct lg_router {
    struct router_node root;
};

/* A template segment as parsed by parse_template(). */
enum tseg_kind {
    TSEG_LITERAL,
    TSEG_PARAM,
    TSEG_GREEDY
};

struct tseg {
    enum tseg_kind kind;
    const char *text; /* the literal, or the parameter name */
    size_t len;
};

/* A path segment: where its raw bytes lie in the request path. */
struct pseg {
    size_t off;
    size_t len;
    bool escaped; /* holds a '%': compare by decoding on the fly */
};

/* A parameter capture while walking: segments first .. first + count - 1. */
struct capture {
    size_t first;
    size_t count;
};

/* The state of one lg_router_match() walk. Everything lives on the stack. */
struct walk {
    const char *method; /* NULL = any */
    const char *path;
    const struct pseg *segs;
    size_t nsegs;
    size_t last_empty_p1; /* index of the last empty segment + 1; 0 = none */
    struct capture caps[LG_ROUTER_MAX_PARAMS];
    size_t ncaps;
    const struct router_route *found;
    bool matched; /* some template matched the path (for 404 vs 405) */
    const char *allow[ROUTER_ALLOW_MAX];
    size_t nallow;
};

/* ---- errors ---------------------------------------------------------- */

/* Write "path template "<tpl>": <reason>" into err, quoting at most
 * ROUTER_ERR_QUOTE bytes of the template so the reason is never cut off. */
LG_PRINTF(4, 5)
static void template_err(char *err, size_t errlen, const char *tpl, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    char reason[LG_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    size_t n = strlen(tpl);
    snprintf(err, errlen, "path template \"%.*s%s\": %s",
             (int)(n > ROUTER_ERR_QUOTE ? ROUTER_ERR_QUOTE : n), tpl,
             n > ROUTER_ERR_QUOTE ? "..." : "", reason);
}

/* ---- templates ------------------------------------------------------- */

static bool name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Parse and validate a template into segs (LG_ROUTER_MAX_SEGMENTS entries;
 * text pointers borrow from path). "/" is the root: zero segments. Returns
 * the number of segments, or -1 with err set. */
static int parse_template(const char *path, struct tseg *segs, size_t *nparams_out, char *err,
                          size_t errlen)
{
    if (path == NULL || path[0] == '\0') {
        if (err && errlen)
            snprintf(err, errlen, "path template is empty");
        return -1;
    }
    if (path[0] != '/') {
        template_err(err, errlen, path, "must start with '/'");
        return -1;
    }
    size_t nsegs = 0, nparams = 0;
    if (path[1] == '\0') {
        *nparams_out = 0;
        return 0;
    }
    const char *p = path + 1;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t pos = nsegs + 1; /* 1-based, for messages */
        if (len == 0) {
            template_err(
                err, errlen, path,
                end ? "segment %zu is empty (\"//\")" : "segment %zu is empty (trailing '/')", pos);
            return -1;
        }
        if (nsegs == LG_ROUTER_MAX_SEGMENTS) {
            template_err(err, errlen, path, "more than %d segments", LG_ROUTER_MAX_SEGMENTS);
            return -1;
        }
        struct tseg *s = &segs[nsegs];
        if (p[0] == '{') {
            if (len < 2 || p[len - 1] != '}') {
                template_err(err, errlen, path, "segment %zu \"%.*s\" mixes a parameter and text",
                             pos, (int)len, p);
                return -1;
            }
            bool greedy = len >= 3 && p[len - 2] == '+';
            size_t nlen = len - (greedy ? 3 : 2);
            if (nlen == 0) {
                template_err(err, errlen, path, "segment %zu has an empty parameter name", pos);
                return -1;
            }
            for (size_t i = 0; i < nlen; i++) {
                if (!name_char((unsigned char)p[1 + i])) {
                    template_err(err, errlen, path,
                                 "parameter name \"%.*s\" may hold only A-Z a-z 0-9 _ -", (int)nlen,
                                 p + 1);
                    return -1;
                }
            }
            if (greedy && end != NULL) {
                template_err(err, errlen, path, "greedy parameter \"{%.*s+}\" must be last",
                             (int)nlen, p + 1);
                return -1;
            }
            if (nparams == LG_ROUTER_MAX_PARAMS) {
                template_err(err, errlen, path, "more than %d parameters", LG_ROUTER_MAX_PARAMS);
                return -1;
            }
            for (size_t i = 0; i < nsegs; i++) {
                if (segs[i].kind != TSEG_LITERAL && segs[i].len == nlen &&
                    memcmp(segs[i].text, p + 1, nlen) == 0) {
                    template_err(err, errlen, path, "parameter name \"%.*s\" is used twice",
                                 (int)nlen, p + 1);
                    return -1;
                }
            }
            s->kind = greedy ? TSEG_GREEDY : TSEG_PARAM;
            s->text = p + 1;
            s->len = nlen;
            nparams++;
        } else {
            for (size_t i = 0; i < len; i++) {
                if (strchr("{}%?#", p[i]) != NULL) {
                    template_err(err, errlen, path, "segment %zu \"%.*s\" may not hold '%c'", pos,
                                 (int)len, p, p[i]);
                    return -1;
                }
            }
            if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) {
                template_err(err, errlen, path, "segment %zu is a dot segment \"%.*s\"", pos,
                             (int)len, p);
                return -1;
            }
            s->kind = TSEG_LITERAL;
            s->text = p;
            s->len = len;
        }
        nsegs++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    *nparams_out = nparams;
    return (int)nsegs;
}

int lg_router_check_template(const char *path, char *err, size_t errlen)
{
    struct tseg segs[LG_ROUTER_MAX_SEGMENTS];
    size_t nparams;
    return parse_template(path, segs, &nparams, err, errlen) < 0 ? -1 : 0;
}

/* ---- segment comparison --------------------------------------------- */

/* The decoded byte at raw[*i], advancing *i past it. raw must have passed
 * split_path()'s checks, so every '%' is followed by two hex digits. */
static unsigned char decoded_byte(const char *raw, size_t *i)
{
    unsigned char c = (unsigned char)raw[*i];
    if (c == '%') {
        c = (unsigned char)(lg_codec_hex_value((unsigned char)raw[*i + 1]) << 4 |
                            lg_codec_hex_value((unsigned char)raw[*i + 2]));
        *i += 3;
    } else {
        *i += 1;
    }
    return c;
}

/* Compare a path segment, decoded, with a literal, in unsigned byte order
 * (memcmp's, which also orders the literal children). Decoding on the fly
 * keeps matching free of allocation. */
static int seg_cmp(const char *path, const struct pseg *s, const char *lit, size_t litlen)
{
    const char *raw = path + s->off;
    if (!s->escaped) {
        size_t n = s->len < litlen ? s->len : litlen;
        int c = memcmp(raw, lit, n);
        if (c != 0)
            return c;
        return s->len < litlen ? -1 : s->len > litlen;
    }
    size_t i = 0, j = 0;
    while (i < s->len && j < litlen) {
        unsigned char a = decoded_byte(raw, &i), b = (unsigned char)lit[j++];
        if (a != b)
            return a < b ? -1 : 1;
    }
    if (i < s->len)
        return 1;
    return j < litlen ? -1 : 0;
}

/* The literal child of n equal to the decoded segment, or NULL. */
static const struct router_node *find_literal(const struct router_node *n, const char *path,
                                              const struct pseg *s)
{
    size_t lo = 0, hi = n->nlits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = seg_cmp(path, s, n->lits[mid].lit, n->lits[mid].len);
        if (c == 0)
            return n->lits[mid].node;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- building -------------------------------------------------------- */

struct lg_router *lg_router_new(void)
{
    return calloc(1, sizeof(struct lg_router));
}

/* Free what a node owns (not the node itself). Recursion depth is bounded
 * by LG_ROUTER_MAX_SEGMENTS, the deepest a template can reach. */
static void node_clear(struct router_node *n)
{
    for (size_t i = 0; i < n->nlits; i++) {
        node_clear(n->lits[i].node);
        free(n->lits[i].node);
        free(n->lits[i].lit);
    }
    free(n->lits);
    if (n->param) {
        node_clear(n->param);
        free(n->param);
    }
    if (n->greedy) {
        node_clear(n->greedy);
        free(n->greedy);
    }
    for (size_t i = 0; i < n->nroutes; i++) {
        free(n->routes[i].method);
        free(n->routes[i].template_path);
        free(n->routes[i].names_buf);
    }
    free(n->routes);
}

void lg_router_free(struct lg_router *r)
{
    if (r == NULL)
        return;
    node_clear(&r->root);
    free(r);
}

/* The child of n for template segment s, created when missing; NULL when
 * memory runs out. */
static struct router_node *node_child(struct router_node *n, const struct tseg *s)
{
    struct router_node **slot = s->kind == TSEG_PARAM ? &n->param : &n->greedy;
    if (s->kind != TSEG_LITERAL) {
        if (*slot == NULL)
            *slot = calloc(1, sizeof(**slot));
        return *slot;
    }
    struct pseg key = {.off = 0, .len = s->len, .escaped = false};
    size_t lo = 0, hi = n->nlits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = seg_cmp(s->text, &key, n->lits[mid].lit, n->lits[mid].len);
        if (c == 0)
            return n->lits[mid].node;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (n->nlits == n->caplits) {
        size_t cap = n->caplits ? n->caplits * 2 : 4;
        struct router_child *lits = realloc(n->lits, cap * sizeof(*lits));
        if (lits == NULL)
            return NULL;
        n->lits = lits;
        n->caplits = cap;
    }
    char *lit = malloc(s->len + 1);
    struct router_node *child = calloc(1, sizeof(*child));
    if (lit == NULL || child == NULL) {
        free(lit);
        free(child);
        return NULL;
    }
    memcpy(lit, s->text, s->len);
    lit[s->len] = '\0';
    memmove(&n->lits[lo + 1], &n->lits[lo], (n->nlits - lo) * sizeof(*n->lits));
    n->lits[lo] = (struct router_child){.lit = lit, .len = s->len, .node = child};
    n->nlits++;
    return child;
}

static bool method_valid(const char *method)
{
    size_t n = 0;
    for (; method[n] != '\0'; n++) {
        unsigned char c = (unsigned char)method[n];
        if (!((c >= 'A' && c <= 'Z') || c == '-' || c == '_') || n == ROUTER_METHOD_MAX)
            return false;
    }
    return n > 0;
}

int lg_router_add(struct lg_router *r, const char *method, const char *path, void *route, char *err,
                  size_t errlen)
{
    struct tseg segs[LG_ROUTER_MAX_SEGMENTS];
    size_t nparams;
    if (method == NULL || !method_valid(method)) {
        if (err && errlen)
            snprintf(err, errlen, "method \"%.*s\" is not an uppercase HTTP method or ANY",
                     ROUTER_METHOD_MAX, method ? method : "");
        return -1;
    }
    int nsegs = parse_template(path, segs, &nparams, err, errlen);
    if (nsegs < 0)
        return -1;
    if (route == NULL) {
        /* A match reports "not found" as route NULL, so NULL cannot be a route. */
        template_err(err, errlen, path, "route value is NULL");
        return -1;
    }
    struct router_node *n = &r->root;
    for (int i = 0; i < nsegs; i++) {
        n = node_child(n, &segs[i]);
        if (n == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < n->nroutes; i++) {
        if (strcmp(n->routes[i].method, method) == 0) {
            if (err && errlen)
                snprintf(err, errlen, "route \"%s %.*s\" duplicates route \"%s %.*s\"", method,
                         ROUTER_ERR_QUOTE, path, n->routes[i].method, ROUTER_ERR_QUOTE,
                         n->routes[i].template_path);
            return -1;
        }
    }
    if (n->nroutes == n->caproutes) {
        size_t cap = n->caproutes ? n->caproutes * 2 : 2;
        struct router_route *routes = realloc(n->routes, cap * sizeof(*routes));
        if (routes == NULL)
            goto nomem;
        n->routes = routes;
        n->caproutes = cap;
    }
    struct router_route rt = {.nparams = nparams, .route = route};
    rt.method = strdup(method);
    rt.template_path = strdup(path);
    rt.names_buf = strdup(path); /* big enough for every name plus its NUL */
    if (rt.method == NULL || rt.template_path == NULL || rt.names_buf == NULL) {
        free(rt.method);
        free(rt.template_path);
        free(rt.names_buf);
        goto nomem;
    }
    char *o = rt.names_buf;
    size_t k = 0;
    for (int i = 0; i < nsegs; i++) {
        if (segs[i].kind == TSEG_LITERAL)
            continue;
        memcpy(o, segs[i].text, segs[i].len);
        o[segs[i].len] = '\0';
        rt.names[k++] = o;
        o += segs[i].len + 1;
    }
    n->routes[n->nroutes++] = rt;
    return 0;
nomem:
    /* Nodes created on the way stay: empty nodes match nothing. */
    if (err && errlen)
        snprintf(err, errlen, "out of memory adding route \"%s %.*s\"", method, ROUTER_ERR_QUOTE,
                 path);
    return -1;
}

/* ---- matching -------------------------------------------------------- */

/* Split the raw path into segments and check each one: every '%' starts a
 * two-hex-digit escape, nothing decodes to (or is) NUL, and no segment is
 * "." or ".." raw or decoded. These are the rules lg_codec_pct_decode()
 * applies, checked here without decoding into memory. "/" has no segments.
 * Returns the segment count (possibly more than LG_ROUTER_MAX_SEGMENTS,
 * of which only the first LG_ROUTER_MAX_SEGMENTS are stored), or -1 for a
 * bad path. */
static long split_path(const char *path, size_t len, struct pseg *segs, size_t *last_empty_p1)
{
    if (len == 0 || path[0] != '/')
        return -1;
    *last_empty_p1 = 0;
    if (len == 1)
        return 0;
    size_t nsegs = 0, i = 1;
    for (;;) {
        size_t start = i, decoded = 0;
        bool escaped = false, all_dots = true;
        while (i < len && path[i] != '/') {
            unsigned char c = (unsigned char)path[i];
            if (c == '\0')
                return -1;
            if (c == '%') {
                if (len - i < 3)
                    return -1;
                int h = lg_codec_hex_value((unsigned char)path[i + 1]);
                int l = lg_codec_hex_value((unsigned char)path[i + 2]);
                if (h < 0 || l < 0 || (h == 0 && l == 0))
                    return -1;
                c = (unsigned char)(h << 4 | l);
                escaped = true;
                i += 3;
            } else {
                i++;
            }
            decoded++;
            all_dots = all_dots && c == '.';
        }
        if (decoded > 0 && decoded <= 2 && all_dots)
            return -1;
        if (nsegs < LG_ROUTER_MAX_SEGMENTS)
            segs[nsegs] = (struct pseg){.off = start, .len = i - start, .escaped = escaped};
        nsegs++;
        if (i == start)
            *last_empty_p1 = nsegs;
        if (i == len)
            break;
        i++; /* the '/' */
    }
    return (long)nsegs;
}

/* Remember the methods of a template that matched but had none for the
 * request, for the Allow header. */
static void allow_add(struct walk *w, const char *method)
{
    for (size_t i = 0; i < w->nallow; i++)
        if (strcmp(w->allow[i], method) == 0)
            return;
    if (w->nallow < ROUTER_ALLOW_MAX)
        w->allow[w->nallow++] = method;
}

/* The route of a matching template for the request's method: exact method,
 * else ANY, else (for HEAD) GET. NULL when the template has none. */
static const struct router_route *pick_route(const struct router_node *n, const char *method)
{
    if (method == NULL)
        return &n->routes[0];
    const struct router_route *any = NULL, *get = NULL;
    for (size_t i = 0; i < n->nroutes; i++) {
        const char *m = n->routes[i].method;
        if (strcmp(m, method) == 0)
            return &n->routes[i];
        if (strcmp(m, "ANY") == 0)
            any = &n->routes[i];
        else if (strcmp(m, "GET") == 0)
            get = &n->routes[i];
    }
    if (any)
        return any;
    return strcmp(method, "HEAD") == 0 ? get : NULL;
}

/* The path ended at node n: true when one of its routes serves the method. */
static bool visit(struct walk *w, const struct router_node *n)
{
    if (n->nroutes == 0)
        return false;
    const struct router_route *rt = pick_route(n, w->method);
    if (rt != NULL) {
        w->found = rt;
        return true;
    }
    w->matched = true;
    for (size_t i = 0; i < n->nroutes; i++)
        allow_add(w, n->routes[i].method);
    return false;
}

/* Depth-first search in precedence order: at each segment the literal
 * child, then "{name}", then "{name+}", so the first template that serves
 * the method is the most specific one, and a template without the method
 * falls through to the next. Each trie node is visited at most once per
 * match, and the recursion is at most nsegs (<= LG_ROUTER_MAX_SEGMENTS) deep. */
static bool walk(struct walk *w, const struct router_node *n, size_t depth)
{
    if (depth == w->nsegs)
        return visit(w, n);
    const struct pseg *s = &w->segs[depth];
    if (s->len > 0) {
        const struct router_node *lit = find_literal(n, w->path, s);
        if (lit && walk(w, lit, depth + 1))
            return true;
        if (n->param && w->ncaps < LG_ROUTER_MAX_PARAMS) {
            w->caps[w->ncaps++] = (struct capture){.first = depth, .count = 1};
            if (walk(w, n->param, depth + 1))
                return true;
            w->ncaps--;
        }
    }
    /* Greedy takes the rest of the path, which must hold no empty segment
     * (a "//" or a trailing '/'): the same rule as for "{name}". */
    if (n->greedy && depth >= w->last_empty_p1 && w->ncaps < LG_ROUTER_MAX_PARAMS) {
        w->caps[w->ncaps++] = (struct capture){.first = depth, .count = w->nsegs - depth};
        if (visit(w, n->greedy))
            return true;
        w->ncaps--;
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Join the gathered methods, sorted, into m->allow; HEAD is listed with GET
 * because a GET route serves HEAD. An entry that would not fit is left out
 * (only possible with dozens of custom methods on one path). */
static void build_allow(struct walk *w, struct lg_router_match *m)
{
    bool get = false, head = false;
    for (size_t i = 0; i < w->nallow; i++) {
        get = get || strcmp(w->allow[i], "GET") == 0;
        head = head || strcmp(w->allow[i], "HEAD") == 0;
    }
    if (get && !head && w->nallow < ROUTER_ALLOW_MAX)
        w->allow[w->nallow++] = "HEAD";
    qsort(w->allow, w->nallow, sizeof(w->allow[0]), cmp_str);
    size_t len = 0;
    m->allow[0] = '\0';
    for (size_t i = 0; i < w->nallow; i++) {
        size_t n = strlen(w->allow[i]), sep = len ? 2 : 0;
        if (len + sep + n + 1 > sizeof(m->allow))
            break;
        memcpy(m->allow + len, ", ", sep);
        memcpy(m->allow + len + sep, w->allow[i], n + 1);
        len += sep + n;
    }
}

enum lg_router_result lg_router_match(const struct lg_router *r, const char *method,
                                      const char *path, size_t path_len, struct lg_router_match *m)
{
    m->route = NULL;
    m->method = NULL;
    m->template_path = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';

    struct pseg segs[LG_ROUTER_MAX_SEGMENTS];
    struct walk w = {.method = method, .path = path, .segs = segs};
    long nsegs = path ? split_path(path, path_len, segs, &w.last_empty_p1) : -1;
    if (nsegs < 0)
        return LG_ROUTER_BAD_PATH;
    /* No template is this deep; a greedy one could be, but refusing keeps
     * every walk within the bound. */
    if (nsegs > LG_ROUTER_MAX_SEGMENTS || r == NULL)
        return LG_ROUTER_NOT_FOUND;
    w.nsegs = (size_t)nsegs;

    if (!walk(&w, &r->root, 0)) {
        if (!w.matched)
            return LG_ROUTER_NOT_FOUND;
        build_allow(&w, m);
        return LG_ROUTER_METHOD_NOT_ALLOWED;
    }

    const struct router_route *rt = w.found;
    for (size_t i = 0; i < rt->nparams; i++) {
        const struct pseg *first = &segs[w.caps[i].first];
        const struct pseg *last = &segs[w.caps[i].first + w.caps[i].count - 1];
        /* Decoding the whole span at once joins a greedy value's segments
         * with the '/' between them; escapes never straddle a '/'. */
        struct lg_buf b;
        lg_buf_init(&b, 0);
        if (lg_codec_pct_decode(&b, path + first->off, last->off + last->len - first->off, false) !=
            0) {
            lg_buf_free(&b);
            goto nomem;
        }
        size_t vlen;
        char *value = lg_buf_steal(&b, &vlen);
        if (value == NULL) /* cannot happen: segments here are non-empty */
            goto nomem;
        m->params[i] =
            (struct lg_router_param){.name = rt->names[i], .value = value, .value_len = vlen};
        m->nparams = i + 1;
    }
    m->route = rt->route;
    m->method = rt->method;
    m->template_path = rt->template_path;
    return LG_ROUTER_FOUND;
nomem:
    /* The result set has no "internal error"; out of memory reads as no
     * route rather than as a match with missing parameters. */
    lg_router_match_clear(m);
    return LG_ROUTER_NOT_FOUND;
}

void lg_router_match_clear(struct lg_router_match *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nparams && i < LG_ROUTER_MAX_PARAMS; i++) {
        free(m->params[i].value);
        m->params[i].value = NULL;
        m->params[i].value_len = 0;
    }
    m->nparams = 0;
}
