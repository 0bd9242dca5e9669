/* conf.c - the configuration file (CONTRACT section 3) read into an immutable struct lg_conf. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/ssl.h>
#include <yajl/yajl_parse.h>

#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/conf.h"
#include "lambdagate/apikey.h"
#include "lambdagate/httpc.h"
#include "lambdagate/json.h"
#include "lambdagate/jwks.h"
#include "lambdagate/router.h"
#include "lambdagate/tls.h"

/*
 * How a file becomes a struct lg_conf:
 *
 *   1. parse_json() feeds the text to yajl's callback parser one line at a
 *      time and builds a small tree of struct node, each carrying the line of
 *      its key and of its value. Syntax errors, duplicate keys and the size
 *      limits below are found here.
 *   2. read_object() walks each object against a table of struct key_spec
 *      (pgbouncer style: name, type, range, default), reports unknown,
 *      missing and malformed keys, stores the values, then runs the table's
 *      "post" hook for checks that span keys and for derived fields.
 *   3. Every error is collected with its line; nothing stops at the first.
 *      The config is returned only when there was none.
 *
 * Relative file paths (TLS files, ca_file, jwks_file, api_keys.file and an
 * access_log path) are resolved against the directory of the config file,
 * as nginx resolves them against its configuration prefix, so that a config
 * and its files can move together.
 *
 * Bounds (the "why" of each is in the table entries below):
 *
 *   key                              range                  default
 *   -------------------------------  ---------------------  ----------------
 *   listen                           1 to 64 entries        (required)
 *   workers                          0 to 256               0 = one per core
 *   shutdown_timeout_ms              0 to 900000            30000
 *   lambda.timeout_ms                1 to 900000            29000
 *   lambda.max_connections           1 to 10000             64
 *   redis.port                       1 to 65535             6379
 *   redis.db                         0 to 65535             0
 *   redis.timeout_ms                 1 to 60000             100
 *   redis.prefix                     0 to 128 bytes         "lg:"
 *   limits.max_connections           1 to 1000000           10000
 *   limits.max_connections_per_ip    1 to 1000000           256
 *   limits.max_header_bytes          1024 to 1048576        16384
 *   limits.max_body_bytes            0 to 6291456           6291456
 *   limits.*_timeout_ms              1 to 900000            10000/30000/60000
 *   limits.max_inflight              1 to 1000000           1024
 *   limits.allow / deny              0 to 10000 CIDRs       []
 *   any "rate"                       0.001 to 1000000       (required)
 *   any "burst"                      1 to 1000000           (required)
 *   auth.jwt.audience                1 to 50 strings        (required)
 *   auth.jwt.leeway_s                0 to 3600              60
 *   cache.max_bytes                  0 to 68719476736       67108864
 *   cache.ttl_s                      0 to 3600              300
 *   routes                           1 to 10000 entries     (required)
 *   routes[].timeout_ms              1 to 900000            lambda.timeout_ms
 *   routes[].scopes                  0 to 50 strings        []
 *   routes[].cache.ttl_s             0 to 3600              cache.ttl_s
 *   routes[].cache.stale_if_error_s  0 to 86400             0
 *   routes[].cache.key_query/headers 0 to 32 names          []
 *   routes[].cors.allow_origins      1 to 100 origins       (required)
 *   routes[].cors.allow_methods      0 to 8 methods         []
 *   routes[].cors.*_headers          0 to 100 names         []
 *   routes[].cors.max_age_s          0 to 86400             0
 *   any other string                 at most 4096 bytes
 */

/* Limits on the file itself: it is small and written by an operator, but
 * a parser bounds everything it reads. yajl has no depth limit of its own. */
#define CONF_MAX_BYTES   (1024 * 1024)
#define CONF_MAX_DEPTH   32
#define CONF_MAX_NODES   100000 /* values in the whole file */
#define CONF_MAX_MEMBERS 1024   /* keys in one object (duplicate search is linear) */
#define CONF_MAX_ERRORS  500    /* errors kept; a garbage file would flood */
#define CONF_STRING_MAX  4096   /* longest string value */
#define CONF_TABLE_MAX   16     /* keys in one table */

/* Offending text is quoted in messages up to this many bytes, so that a
 * message stays within LG_ERR_LEN; file paths get more room, since the
 * path is what the reader needs. */
#define CONF_QUOTE_MAX      64
#define CONF_QUOTE_PATH_MAX 160
#define CONF_QUOTE_BUF      (CONF_QUOTE_PATH_MAX * 4 + 16)

/* Lambda's limits on function names (the Invoke API's FunctionName). */
#define FUNCTION_NAME_MAX 64
#define FUNCTION_MAX      170
#define QUALIFIER_MAX     128

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/* State of one load. */
struct loader {
    struct lg_conf_errors *errors;
    size_t errors_cap;
    bool failed; /* an error was found (even one that could not be stored) */
    char *dir;   /* directory of the config file for relative paths; NULL = cwd */
    struct lg_conf *conf;
    bool jwt_given; /* auth.jwt was an object (even a faulty one) */
    bool api_keys_given;
    int jwks_file_line; /* lines of auth.jwt.jwks_file / ca_file / api_keys.file */
    int jwt_ca_line;
    int api_keys_line;
    int ca_file_line;    /* where Lambda TLS errors go: lambda.ca_file, lambda, or 0 */
    bool ca_file_failed; /* lambda.ca_file was given but is unreadable (reported) */
};

/* Record an error at line (0 = not tied to a line). Never fails: when the
 * list cannot grow, the load still fails through ld->failed. */
static void conf_error(struct loader *ld, int line, const char *fmt, ...) LG_PRINTF(3, 4);
static void conf_error(struct loader *ld, int line, const char *fmt, ...)
{
    ld->failed = true;
    struct lg_conf_errors *e = ld->errors;
    if (e->count > CONF_MAX_ERRORS)
        return;
    if (e->count == ld->errors_cap) {
        size_t cap = ld->errors_cap ? ld->errors_cap * 2 : 16;
        struct lg_conf_error *items = realloc(e->items, cap * sizeof(*items));
        if (items == NULL)
            return;
        e->items = items;
        ld->errors_cap = cap;
    }
    struct lg_conf_error *it = &e->items[e->count++];
    it->file = NULL;
    it->line = line;
    if (e->count > CONF_MAX_ERRORS) {
        snprintf(it->message, sizeof(it->message), "too many errors, giving up after %d",
                 CONF_MAX_ERRORS);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->message, sizeof(it->message), fmt, ap);
    va_end(ap);
}

static void conf_oom(struct loader *ld)
{
    conf_error(ld, 0, "out of memory");
}

/* strdup that reports a failure. Caller frees with free(). */
static char *conf_strdup(struct loader *ld, const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        conf_oom(ld);
    return p;
}

/* Replace the string at *slot, freeing the old one; takes ownership of s. */
static void set_string(char **slot, char *s)
{
    free(*slot);
    *slot = s;
}

/* Render n bytes of s for a message: double-quoted, with '"', '\' and
 * control bytes escaped, cut after max bytes (on a UTF-8 boundary) with
 * "...". Returns out, which holds CONF_QUOTE_BUF bytes. */
static const char *quote_max(char *out, const char *s, size_t n, size_t max)
{
    size_t lim = n;
    if (lim > max) {
        lim = max;
        while (lim > 0 && ((unsigned char)s[lim] & 0xC0) == 0x80)
            lim--;
    }
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, CONF_QUOTE_BUF - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (lim < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static const char *quote(char *out, const char *s, size_t n)
{
    return quote_max(out, s, n, CONF_QUOTE_MAX);
}

static const char *quote_str(char *out, const char *s)
{
    return quote(out, s, strlen(s));
}

static const char *quote_path(char *out, const char *s)
{
    return quote_max(out, s, strlen(s), CONF_QUOTE_PATH_MAX);
}

/* ------------------------------------------------------------------------
 * JSON with line numbers
 * ------------------------------------------------------------------------ */

enum node_type {
    NODE_NULL,
    NODE_BOOL,
    NODE_NUMBER,
    NODE_STRING,
    NODE_OBJECT,
    NODE_ARRAY,
};

/* One JSON value of the file. Strings and numbers keep their text (numbers
 * as written, so that "1.0" can be told from "1"). */
struct node {
    enum node_type type;
    int line;     /* line of the value (of its '{' or '[' for containers) */
    int key_line; /* line of its key when a member of an object */
    char *key;    /* member name; NULL outside objects */
    size_t key_len;
    size_t index; /* position in the parent */
    char *text;   /* string value or number text, NUL-terminated */
    size_t len;
    bool boolean;
    bool duplicate; /* a repeated key: reported when parsed, then ignored */
    struct node *parent;
    struct node **items;
    size_t nitems;
    size_t cap;
};

static void node_free(struct node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nitems; i++)
        node_free(n->items[i]);
    free(n->items);
    free(n->key);
    free(n->text);
    free(n);
}

/* The line an error about n is reported at: its key's for a member. */
static int node_line(const struct node *n)
{
    return n->key ? n->key_line : n->line;
}

/* Where n is, for messages: "top level", "lambda", "routes[2].throttle".
 * Unprintable bytes of keys become '?'. */
static void node_path(const struct node *n, char *buf, size_t len)
{
    const struct node *chain[CONF_MAX_DEPTH + 2];
    size_t k = 0;
    for (const struct node *x = n; x->parent != NULL && k < LG_ARRAY_LEN(chain); x = x->parent)
        chain[k++] = x;
    if (k == 0) {
        snprintf(buf, len, "top level");
        return;
    }
    size_t o = 0;
    buf[0] = '\0';
    while (k-- > 0 && o + 1 < len) {
        const struct node *x = chain[k];
        if (x->parent->type == NODE_OBJECT) {
            if (o > 0)
                buf[o++] = '.';
            for (size_t i = 0; i < x->key_len && o + 1 < len; i++) {
                unsigned char c = (unsigned char)x->key[i];
                buf[o++] = (c < 0x20 || c == 0x7f || c == '"') ? '?' : (char)c;
            }
            buf[o] = '\0';
        } else {
            int w = snprintf(buf + o, len - o, "[%zu]", x->index);
            if (w < 0 || (size_t)w >= len - o)
                break;
            o += (size_t)w;
        }
    }
    buf[len - 1] = '\0';
}

/* What a value is, for "got ..." in messages. buf holds CONF_QUOTE_BUF. */
static const char *describe(const struct node *v, char *buf)
{
    switch (v->type) {
    case NODE_NULL:
        return "null";
    case NODE_BOOL:
        return v->boolean ? "true" : "false";
    case NODE_NUMBER:
        snprintf(buf, CONF_QUOTE_BUF, "%.*s%s", CONF_QUOTE_MAX, v->text,
                 v->len > CONF_QUOTE_MAX ? "..." : "");
        return buf;
    case NODE_STRING:
        return quote(buf, v->text, v->len);
    case NODE_OBJECT:
        return v->nitems ? "an object" : "{}";
    case NODE_ARRAY:
        if (v->nitems == 0)
            return "[]";
        snprintf(buf, CONF_QUOTE_BUF, "an array of %zu value%s", v->nitems,
                 v->nitems == 1 ? "" : "s");
        return buf;
    }
    return "?";
}

/* The member key of object obj (duplicates ignored), or NULL. */
static const struct node *member(const struct node *obj, const char *key)
{
    if (obj == NULL || obj->type != NODE_OBJECT)
        return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->nitems; i++) {
        const struct node *m = obj->items[i];
        if (!m->duplicate && m->key_len == n && memcmp(m->key, key, n) == 0)
            return m;
    }
    return NULL;
}

/* The parser's state between yajl callbacks. */
struct parser {
    struct loader *ld;
    int line; /* line of the chunk being fed */
    struct node *root;
    struct node *cur; /* innermost open object or array */
    char *key;        /* the key whose value comes next */
    size_t key_len;
    int key_line;
    bool key_duplicate;
    size_t depth;
    size_t nnodes;
    char fatal[LG_ERR_LEN]; /* why a callback stopped the parse */
};

/* A new value at the current position. 0 (stop) with p->fatal set when a
 * limit is passed or memory runs out. */
static struct node *node_add(struct parser *p, enum node_type type)
{
    if (++p->nnodes > CONF_MAX_NODES) {
        snprintf(p->fatal, sizeof(p->fatal), "the file holds more than %d JSON values",
                 CONF_MAX_NODES);
        return NULL;
    }
    struct node *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        snprintf(p->fatal, sizeof(p->fatal), "out of memory");
        return NULL;
    }
    n->type = type;
    n->line = p->line;
    if (p->cur == NULL) {
        p->root = n;
        return n;
    }
    struct node *c = p->cur;
    if (c->nitems == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        struct node **items = realloc(c->items, cap * sizeof(*items));
        if (items == NULL) {
            free(n);
            snprintf(p->fatal, sizeof(p->fatal), "out of memory");
            return NULL;
        }
        c->items = items;
        c->cap = cap;
    }
    if (c->type == NODE_OBJECT) {
        n->key = p->key;
        n->key_len = p->key_len;
        n->key_line = p->key_line;
        n->duplicate = p->key_duplicate;
        p->key = NULL;
    }
    n->parent = c;
    n->index = c->nitems;
    c->items[c->nitems++] = n;
    return n;
}

static int cb_null(void *ctx)
{
    return node_add(ctx, NODE_NULL) != NULL;
}

static int cb_boolean(void *ctx, int value)
{
    struct node *n = node_add(ctx, NODE_BOOL);
    if (n)
        n->boolean = value != 0;
    return n != NULL;
}

/* Scalars keep their text: numbers as written, strings decoded by yajl. */
static int add_text(struct parser *p, enum node_type type, const char *s, size_t len)
{
    struct node *n = node_add(p, type);
    if (n == NULL)
        return 0;
    n->text = malloc(len + 1);
    if (n->text == NULL) {
        snprintf(p->fatal, sizeof(p->fatal), "out of memory");
        return 0;
    }
    memcpy(n->text, s, len);
    n->text[len] = '\0';
    n->len = len;
    return 1;
}

static int cb_number(void *ctx, const char *s, size_t len)
{
    return add_text(ctx, NODE_NUMBER, s, len);
}

static int cb_string(void *ctx, const unsigned char *s, size_t len)
{
    return add_text(ctx, NODE_STRING, (const char *)s, len);
}

static int open_container(struct parser *p, enum node_type type)
{
    struct node *n = node_add(p, type);
    if (n == NULL)
        return 0;
    if (++p->depth > CONF_MAX_DEPTH) {
        snprintf(p->fatal, sizeof(p->fatal), "JSON nesting deeper than %d levels", CONF_MAX_DEPTH);
        return 0;
    }
    p->cur = n;
    return 1;
}

static int close_container(struct parser *p)
{
    p->depth--;
    p->cur = p->cur->parent;
    return 1;
}

static int cb_start_map(void *ctx)
{
    return open_container(ctx, NODE_OBJECT);
}

static int cb_start_array(void *ctx)
{
    return open_container(ctx, NODE_ARRAY);
}

static int cb_end(void *ctx)
{
    return close_container(ctx);
}

/* A key: duplicates are reported here, at the line of the second one, and
 * the later value is ignored. */
static int cb_map_key(void *ctx, const unsigned char *key, size_t len)
{
    struct parser *p = ctx;
    struct node *obj = p->cur;
    if (obj->nitems >= CONF_MAX_MEMBERS) {
        snprintf(p->fatal, sizeof(p->fatal), "an object holds more than %d keys", CONF_MAX_MEMBERS);
        return 0;
    }
    free(p->key);
    p->key = malloc(len + 1);
    if (p->key == NULL) {
        snprintf(p->fatal, sizeof(p->fatal), "out of memory");
        return 0;
    }
    memcpy(p->key, key, len);
    p->key[len] = '\0';
    p->key_len = len;
    p->key_line = p->line;
    p->key_duplicate = false;
    for (size_t i = 0; i < obj->nitems; i++) {
        const struct node *m = obj->items[i];
        if (!m->duplicate && m->key_len == len && memcmp(m->key, key, len) == 0) {
            char q[CONF_QUOTE_BUF], where[128];
            node_path(obj, where, sizeof(where));
            conf_error(p->ld, p->line, "duplicate key %s in %s (first at line %d)",
                       quote(q, (const char *)key, len), where, m->key_line);
            p->key_duplicate = true;
            break;
        }
    }
    return 1;
}

static const yajl_callbacks parse_callbacks = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_boolean,
    .yajl_number = cb_number,
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_map_key,
    .yajl_end_map = cb_end,
    .yajl_start_array = cb_start_array,
    .yajl_end_array = cb_end,
};

/* yajl's message never echoes input, so no secret can leak through it. */
static void report_yajl_error(struct loader *ld, yajl_handle h, int line)
{
    char text[LG_ERR_LEN];
    lg_json_yajl_error(h, text, sizeof(text));
    conf_error(ld, line, "JSON syntax error: %s", text);
}

/* Parse text into a tree. yajl gives no positions, so the text is fed one
 * line at a time: every callback then belongs to the line being fed. A
 * number completes only when the byte after it arrives; that byte is the
 * newline at the latest, which is fed with its line, so numbers get the
 * right line too (and at the end of the text, yajl_complete_parse). JSON
 * strings cannot span lines; comments can, and yield no callbacks.
 * Returns the root (caller frees with node_free()) or NULL after
 * reporting why. */
static struct node *parse_json(struct loader *ld, const char *text, size_t len)
{
    struct parser p = {.ld = ld, .line = 1};
    yajl_handle h = yajl_alloc(&parse_callbacks, NULL, &p);
    if (h == NULL) {
        conf_oom(ld);
        return NULL;
    }
    yajl_config(h, yajl_allow_comments, 1);

    yajl_status st = lg_json_parse_lines(h, text, len, &p.line);
    if (st == yajl_status_client_canceled)
        conf_error(ld, p.line, "%s", p.fatal);
    else if (st == yajl_status_error)
        report_yajl_error(ld, h, p.line);
    yajl_free(h);
    free(p.key);
    if (st != yajl_status_ok) {
        node_free(p.root);
        return NULL;
    }
    return p.root;
}

/* ------------------------------------------------------------------------
 * Value checks shared by the tables
 * ------------------------------------------------------------------------ */

/* A JSON integer (no fraction, no exponent) within int64_t. */
static bool node_integer(const struct node *v, int64_t *out)
{
    if (v->type != NODE_NUMBER || strpbrk(v->text, ".eE") != NULL)
        return false;
    errno = 0;
    char *end;
    long long x = strtoll(v->text, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = x;
    return true;
}

static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_lower(c) || is_digit(c) || (c >= 'A' && c <= 'Z');
}

/* "-[a-z]+-\d" exactly: the tail of a region name. */
static bool region_tail(const char *s, size_t n)
{
    if (n < 4 || s[0] != '-' || s[n - 2] != '-' || !is_digit(s[n - 1]))
        return false;
    for (size_t i = 1; i < n - 2; i++)
        if (!is_lower(s[i]))
            return false;
    return true;
}

/* Lambda's region pattern: [a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d */
static bool region_match(const char *s, size_t n)
{
    if (n < 2 || !is_lower(s[0]) || !is_lower(s[1]))
        return false;
    s += 2;
    n -= 2;
    if (n >= 4 && memcmp(s, "-gov", 4) == 0 && region_tail(s + 4, n - 4))
        return true;
    if (n >= 4 && memcmp(s, "-iso", 4) == 0) {
        if (n >= 5 && is_lower(s[4]) && region_tail(s + 5, n - 5))
            return true;
        if (region_tail(s + 4, n - 4))
            return true;
    }
    return region_tail(s, n);
}

static bool check_region(const char *s, char *why, size_t whylen)
{
    return region_match(s, strlen(s));
}

/* The parts of a function given as Lambda's FunctionName pattern allows:
 *   (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?
 *   (\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?
 * Pointers into the string; lengths 0 when a part is absent. */
struct function_parts {
    bool arn;
    const char *region;
    size_t region_len;
    const char *account;
    size_t account_len;
    const char *name;
    size_t name_len;
    const char *qualifier;
    size_t qualifier_len;
};

static bool name_char(char c)
{
    return is_alnum(c) || c == '-' || c == '_' || c == '.';
}

/* "name[:qualifier]" to the end of s. */
static bool function_rest(const char *s, struct function_parts *fp)
{
    size_t i = 0;
    while (name_char(s[i]))
        i++;
    if (i == 0)
        return false;
    fp->name = s;
    fp->name_len = i;
    fp->qualifier = NULL;
    fp->qualifier_len = 0;
    if (s[i] == '\0')
        return true;
    if (s[i] != ':')
        return false;
    const char *q = s + i + 1;
    if (strcmp(q, "$LATEST") != 0) {
        size_t k = 0;
        while (is_alnum(q[k]) || q[k] == '-' || q[k] == '_')
            k++;
        if (k == 0 || q[k] != '\0')
            return false;
    }
    fp->qualifier = q;
    fp->qualifier_len = strlen(q);
    return true;
}

/* Match the pattern above as a backtracking regex engine would (each
 * optional prefix is greedy: tried present first), so that an ambiguous
 * string splits the way Lambda splits it. */
static bool function_parse(const char *s, struct function_parts *fp)
{
    memset(fp, 0, sizeof(*fp));
    size_t arn_end = 0;
    bool arn_ok = false;
    if (strncmp(s, "arn:", 4) == 0) {
        const char *p = s + 4;
        size_t k = strcspn(p, ":");
        bool partition_ok = k == 0 || strncmp(p, "aws", 3) == 0;
        for (size_t i = 3; partition_ok && i < k; i++)
            partition_ok =
                (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || p[i] == '-';
        if (partition_ok && strncmp(p + k, ":lambda:", 8) == 0) {
            arn_ok = true;
            arn_end = 4 + k + 8;
        }
    }
    for (int a = 0; a < 2; a++) {
        if (a == 0 && !arn_ok)
            continue;
        size_t p0 = a == 0 ? arn_end : 0;
        for (int r = 0; r < 2; r++) {
            size_t p1 = p0;
            size_t rlen = strcspn(s + p0, ":");
            if (r == 0) {
                if (s[p0 + rlen] != ':' || !region_match(s + p0, rlen))
                    continue;
                p1 = p0 + rlen + 1;
            }
            for (int c = 0; c < 2; c++) {
                size_t p2 = p1;
                if (c == 0) {
                    size_t d = 0;
                    while (d < 12 && is_digit(s[p1 + d]))
                        d++;
                    if (d != 12 || s[p1 + 12] != ':')
                        continue;
                    p2 = p1 + 13;
                }
                for (int f = 0; f < 2; f++) {
                    size_t p3 = p2;
                    if (f == 0) {
                        if (strncmp(s + p2, "function:", 9) != 0)
                            continue;
                        p3 = p2 + 9;
                    }
                    if (!function_rest(s + p3, fp))
                        continue;
                    fp->arn = a == 0;
                    fp->region = r == 0 ? s + p0 : NULL;
                    fp->region_len = r == 0 ? rlen : 0;
                    fp->account = c == 0 ? s + p1 : NULL;
                    fp->account_len = c == 0 ? 12 : 0;
                    return true;
                }
            }
        }
    }
    return false;
}

static bool check_function(const char *s, char *why, size_t whylen)
{
    struct function_parts fp;
    if (strlen(s) > FUNCTION_MAX) {
        snprintf(why, whylen, "longer than %d characters", FUNCTION_MAX);
        return false;
    }
    if (!function_parse(s, &fp))
        return false;
    if (fp.name_len > FUNCTION_NAME_MAX) {
        snprintf(why, whylen, "the name is longer than %d characters", FUNCTION_NAME_MAX);
        return false;
    }
    return true;
}

/* Lambda's Qualifier: [a-zA-Z0-9$_-]{1,128} */
static bool check_qualifier(const char *s, char *why, size_t whylen)
{
    size_t n = strlen(s);
    if (n == 0 || n > QUALIFIER_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(s[i]) && s[i] != '$' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static const char *const route_methods[] = {"GET",   "HEAD",    "POST", "PUT", "DELETE",
                                            "PATCH", "OPTIONS", "ANY",  NULL};

static bool method_in(const char *s, bool allow_any, bool allow_star)
{
    for (size_t i = 0; route_methods[i]; i++)
        if (strcmp(s, route_methods[i]) == 0)
            return allow_any || strcmp(s, "ANY") != 0;
    return allow_star && strcmp(s, "*") == 0;
}

static bool check_route_method(const char *s, char *why, size_t whylen)
{
    return method_in(s, true, false);
}

static bool check_cors_method(const char *s, char *why, size_t whylen)
{
    return method_in(s, false, true);
}

static bool check_template(const char *s, char *why, size_t whylen)
{
    return lg_router_check_template(s, why, whylen) == 0;
}

/* An HTTP token (RFC 9110 tchar), as header names are. */
static bool check_token(const char *s, char *why, size_t whylen)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!is_alnum(*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    return true;
}

/* A scope is matched against a space-separated list; it cannot hold a space. */
static bool check_scope(const char *s, char *why, size_t whylen)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* A browser Origin: "*" (alone; checked by the CORS table), or
 * scheme://host[:port] without a path, where host is a name or a bracketed
 * IPv6 address. */
static bool check_origin(const char *s, char *why, size_t whylen)
{
    if (strcmp(s, "*") == 0)
        return true;
    size_t i = 0;
    if (!is_alnum(s[0]) || is_digit(s[0]))
        return false;
    while (is_alnum(s[i]) || s[i] == '+' || s[i] == '.' || s[i] == '-')
        i++;
    if (strncmp(s + i, "://", 3) != 0)
        return false;
    i += 3;
    size_t h = i;
    if (s[i] == '[') {
        while (s[i] && s[i] != ']')
            i++;
        if (s[i] != ']')
            return false;
        char addr[INET6_ADDRSTRLEN + 1];
        unsigned char bin[16];
        size_t n = i - h - 1;
        if (n == 0 || n >= sizeof(addr))
            return false;
        memcpy(addr, s + h + 1, n);
        addr[n] = '\0';
        if (inet_pton(AF_INET6, addr, bin) != 1)
            return false;
        i++;
    } else {
        while (is_alnum(s[i]) || s[i] == '.' || s[i] == '-' || s[i] == '_')
            i++;
        if (i == h)
            return false;
    }
    if (s[i] == ':') {
        size_t p = ++i;
        long port = 0;
        while (is_digit(s[i]) && i - p < 5)
            port = port * 10 + (s[i++] - '0');
        if (i == p || port < 1 || port > 65535)
            return false;
    }
    if (s[i] == '/')
        snprintf(why, whylen, "an origin has no path");
    return s[i] == '\0';
}

static bool check_https_url(const char *s, char *why, size_t whylen)
{
    struct lg_httpc_url u;
    if (lg_httpc_parse_url(s, &u, why, whylen) != 0)
        return false;
    bool tls = u.tls;
    lg_httpc_url_free(&u);
    if (!tls)
        snprintf(why, whylen, "key sets are fetched over HTTPS only");
    return tls;
}

/* The pid file is written after daemonizing, from "/": no relative path. */
static bool check_absolute_path(const char *s, char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    return s[0] == '/';
}

/* A POSIX portable user name, or a numeric uid. */
static bool check_user_name(const char *s, char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    if (*s == '\0' || *s == '-')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/* Cognito's token_use claim: "id" or "access". */
static bool check_token_use(const char *s, char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    return strcmp(s, "id") == 0 || strcmp(s, "access") == 0;
}

/* Host names and addresses: printable, no spaces. */
static bool check_host(const char *s, char *why, size_t whylen)
{
    if (strlen(s) > 253)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* ------------------------------------------------------------------------
 * Key tables
 * ------------------------------------------------------------------------ */

enum spec_type {
    SPEC_INT64,   /* int64_t: a JSON integer from min to max */
    SPEC_INT,     /* int: likewise */
    SPEC_DOUBLE,  /* double: a JSON number from dmin to dmax */
    SPEC_BOOL,    /* bool */
    SPEC_ENUM,    /* an int-sized enum: names[i] is value i */
    SPEC_STRING,  /* char *: length min..max (max 0 = CONF_STRING_MAX), check() */
    SPEC_FILE,    /* char *: a readable regular file, path resolved */
    SPEC_ADDRESS, /* struct lg_conf_address */
    SPEC_RATE,    /* struct lg_conf_rate, bool enabled at aux; null = off */
    SPEC_STRINGS, /* char ** (or joined char * with F_JOIN), count at aux */
    SPEC_CIDRS,   /* struct lg_conf_cidr *, count at aux */
    SPEC_OBJECT,  /* sub table on base + offset; bool at aux set when given */
    SPEC_CUSTOM,  /* handler() reads the value, null included */
};

#define F_REQUIRED   0x01u /* a missing key is an error */
#define F_NULLABLE   0x02u /* null is accepted: not set (a rate: off) */
#define F_SECRET     0x04u /* never quote the value in a message */
#define F_EMPTY_OK   0x08u /* strings may be "" */
#define F_LOWER      0x10u /* strings are lowercased */
#define F_DEFAULT_ON 0x20u /* SPEC_RATE: enabled unless null */
#define F_JOIN       0x40u /* SPEC_STRINGS: store the items joined with ", " */

#define NO_AUX ((size_t)-1)

struct key_spec;
struct key_table;

typedef bool (*string_check)(const char *s, char *why, size_t whylen);
typedef void (*key_handler)(struct loader *ld, const struct node *v, void *base,
                            const struct key_spec *spec);
typedef void (*table_post)(struct loader *ld, const struct node *obj, void *base,
                           const struct node *const *seen);

struct key_spec {
    const char *name;
    enum spec_type type;
    unsigned flags;
    size_t offset;
    size_t aux_offset;        /* see enum spec_type; NO_AUX when unused */
    int64_t min, max;         /* integers; string length; array count */
    double dmin, dmax;        /* SPEC_DOUBLE */
    int64_t def;              /* integer default; SPEC_RATE: burst */
    double def_rate;          /* SPEC_DOUBLE and SPEC_RATE default */
    const char *def_str;      /* string default */
    const char *const *names; /* SPEC_ENUM, NULL-terminated */
    const struct key_table *sub;
    string_check check; /* strings and array items */
    const char *what;   /* what check() accepts, for messages; NULL: its why alone */
    key_handler handler;
};

struct key_table {
    const struct key_spec *keys;
    size_t nkeys;
    /* Runs after the members were read, with obj NULL when the object is
     * absent, and seen[i] the member read for keys[i] (or NULL). */
    table_post post;
};

#define TABLE(keys, post)                                                                          \
    {                                                                                              \
        (keys), LG_ARRAY_LEN(keys), (post)                                                         \
    }

static const struct node *seen_get(const struct key_table *t, const struct node *const *seen,
                                   const char *name)
{
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return seen[i];
    return NULL;
}

/* The line of a key that was seen, else of its object, else 0. */
static int seen_line(const struct node *key, const struct node *obj)
{
    return key ? node_line(key) : obj ? obj->line : 0;
}

/* Report that v is not what spec wants: '"name" must be WHAT, got VALUE'
 * (without the value for secrets), and '(why)' when there is one. */
static void bad_value(struct loader *ld, const struct node *v, const char *name, const char *what,
                      unsigned flags, const char *why)
{
    char got[CONF_QUOTE_BUF];
    bool has_why = why && *why;
    if (flags & F_SECRET)
        conf_error(ld, node_line(v), "\"%s\" must be %s", name, what);
    else
        conf_error(ld, node_line(v), "\"%s\" must be %s, got %s%s%s%s", name, what,
                   describe(v, got), has_why ? " (" : "", has_why ? why : "", has_why ? ")" : "");
}

/* Read v as a string: no NUL, non-empty unless F_EMPTY_OK, at most maxlen
 * bytes, accepted by check, lowercased with F_LOWER. Returns a copy
 * (caller frees with free()) or NULL after reporting. */
static char *read_string(struct loader *ld, const struct node *v, const char *name, unsigned flags,
                         size_t maxlen, string_check check, const char *what)
{
    /* what describes the value for type errors; "or null" is added for
     * nullable keys. Without what, a failed check reports its why alone. */
    const char *base_what = what;
    if (base_what == NULL)
        base_what = (flags & F_EMPTY_OK) ? "a string" : "a non-empty string";
    char type_what[200];
    snprintf(type_what, sizeof(type_what), "%s%s", base_what,
             (flags & F_NULLABLE) ? (what ? ", or null" : " or null") : "");
    if (v->type != NODE_STRING || (v->len == 0 && !(flags & F_EMPTY_OK))) {
        bad_value(ld, v, name, type_what, flags, NULL);
        return NULL;
    }
    if (memchr(v->text, '\0', v->len) != NULL) {
        conf_error(ld, node_line(v), "\"%s\" must not contain a NUL character", name);
        return NULL;
    }
    if (maxlen == 0)
        maxlen = CONF_STRING_MAX;
    if (v->len > maxlen) {
        char got[CONF_QUOTE_BUF];
        if (flags & F_SECRET)
            conf_error(ld, node_line(v), "\"%s\" must be at most %zu bytes long", name, maxlen);
        else
            conf_error(ld, node_line(v), "\"%s\" must be at most %zu bytes long, got %s", name,
                       maxlen, describe(v, got));
        return NULL;
    }
    char *s = conf_strdup(ld, v->text);
    if (s == NULL)
        return NULL;
    if (flags & F_LOWER)
        for (char *c = s; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
    if (check) {
        char why[LG_ERR_LEN] = "";
        if (!check(s, why, sizeof(why))) {
            if (what)
                bad_value(ld, v, name, what, flags, why);
            else
                conf_error(ld, node_line(v), "%s", why);
            free(s);
            return NULL;
        }
    }
    return s;
}

/* Resolve a path from the file against the config file's directory.
 * Caller frees with free(). */
static char *resolve_path(struct loader *ld, const char *p)
{
    if (p[0] == '/' || ld->dir == NULL)
        return conf_strdup(ld, p);
    struct lg_buf b;
    lg_buf_init(&b, 0);
    if (lg_buf_printf(&b, "%s/%s", ld->dir, p) != 0) {
        lg_buf_free(&b);
        conf_oom(ld);
        return NULL;
    }
    size_t n;
    return lg_buf_steal(&b, &n);
}

/* A file the daemon will read (now and at each reload): it must be a
 * readable regular file now. Returns the resolved path (caller frees) or
 * NULL after reporting which key and why. */
static char *read_file_value(struct loader *ld, const struct node *v, const struct key_spec *spec)
{
    char *s = read_string(ld, v, spec->name, spec->flags, 0, NULL, NULL);
    if (s == NULL)
        return NULL;
    char *path = resolve_path(ld, s);
    free(s);
    if (path == NULL)
        return NULL;
    char q[CONF_QUOTE_BUF];
    struct stat st;
    if (access(path, R_OK) != 0) {
        conf_error(ld, node_line(v), "\"%s\" file %s is not readable: %s", spec->name,
                   quote_path(q, path), strerror(errno));
    } else if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        conf_error(ld, node_line(v), "\"%s\" file %s is not a regular file", spec->name,
                   quote_path(q, path));
    } else {
        return path;
    }
    free(path);
    return NULL;
}

/* Free an array of n strings from read_strings(); accepts NULL. */
static void strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Join n strings with ", ". NULL when n is 0 (or on no memory, reported).
 * Caller frees with free(). */
static char *join_strings(struct loader *ld, char *const *v, size_t n)
{
    if (n == 0)
        return NULL;
    struct lg_buf b;
    lg_buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        if ((i > 0 && lg_buf_puts(&b, ", ") != 0) || lg_buf_puts(&b, v[i]) != 0) {
            lg_buf_free(&b);
            conf_oom(ld);
            return NULL;
        }
    }
    size_t len;
    return lg_buf_steal(&b, &len);
}

/* Describe the count bounds of an array for messages. */
static void count_what(char *buf, size_t len, const struct key_spec *spec, const char *items)
{
    if (spec->min == spec->max)
        snprintf(buf, len, "an array of %" PRId64 " %s", spec->min, items);
    else if (spec->min == 0)
        snprintf(buf, len, "an array of at most %" PRId64 " %s", spec->max, items);
    else
        snprintf(buf, len, "an array of %" PRId64 " to %" PRId64 " %s", spec->min, spec->max,
                 items);
}

/* True when v is an array whose length is within spec's bounds; reports
 * otherwise. */
static bool check_array(struct loader *ld, const struct node *v, const struct key_spec *spec,
                        const char *items)
{
    if (v->type == NODE_ARRAY && (int64_t)v->nitems >= spec->min && (int64_t)v->nitems <= spec->max)
        return true;
    char what[128];
    count_what(what, sizeof(what), spec, items);
    bad_value(ld, v, spec->name, what, spec->flags & F_SECRET, NULL);
    return false;
}

/* Read an array of strings (see SPEC_STRINGS). On success *out is a new
 * array (NULL when empty; caller frees with strings_free()). */
static bool read_strings(struct loader *ld, const struct node *v, const struct key_spec *spec,
                         char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!check_array(ld, v, spec, "strings"))
        return false;
    if (v->nitems == 0)
        return true;
    char **items = calloc(v->nitems, sizeof(*items));
    if (items == NULL) {
        conf_oom(ld);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < v->nitems; i++) {
        char name[96];
        snprintf(name, sizeof(name), "%s[%zu]", spec->name, i);
        items[i] = read_string(ld, v->items[i], name, spec->flags & (F_LOWER | F_SECRET), 0,
                               spec->check, spec->what);
        ok = ok && items[i] != NULL;
    }
    if (!ok) {
        strings_free(items, v->nitems);
        return false;
    }
    *out = items;
    *nout = v->nitems;
    return true;
}

static void read_object(struct loader *ld, const struct node *obj, const struct key_table *t,
                        void *base);

/* Set the defaults of a table (and of its nested tables) on base. */
static void apply_defaults(struct loader *ld, const struct key_table *t, void *base)
{
    for (size_t i = 0; i < t->nkeys; i++) {
        const struct key_spec *k = &t->keys[i];
        char *field = (char *)base + k->offset;
        switch (k->type) {
        case SPEC_INT64:
            *(int64_t *)field = k->def;
            break;
        case SPEC_INT:
        case SPEC_ENUM:
            *(int *)field = (int)k->def;
            break;
        case SPEC_DOUBLE:
            *(double *)field = k->def_rate;
            break;
        case SPEC_BOOL:
            *(bool *)field = k->def != 0;
            break;
        case SPEC_STRING:
        case SPEC_FILE:
            set_string((char **)field, k->def_str ? conf_strdup(ld, k->def_str) : NULL);
            break;
        case SPEC_RATE: {
            struct lg_conf_rate *r = (struct lg_conf_rate *)field;
            r->rate = k->def_rate;
            r->burst = k->def;
            *(bool *)((char *)base + k->aux_offset) = (k->flags & F_DEFAULT_ON) != 0;
            break;
        }
        case SPEC_OBJECT:
            apply_defaults(ld, k->sub, field);
            break;
        case SPEC_CUSTOM:
            /* A custom string key (access_log) may have a default. */
            if (k->def_str)
                set_string((char **)field, conf_strdup(ld, k->def_str));
            break;
        case SPEC_ADDRESS:
        case SPEC_STRINGS:
        case SPEC_CIDRS:
            break; /* zero / NULL until given */
        }
    }
}

/* Read member v according to spec into base. */
static void read_value(struct loader *ld, const struct node *v, const struct key_spec *k,
                       void *base)
{
    char *field = (char *)base + k->offset;
    char what[160];
    if (k->type == SPEC_CUSTOM) {
        k->handler(ld, v, base, k);
        return;
    }
    if (v->type == NODE_NULL && (k->flags & F_NULLABLE)) {
        if (k->type == SPEC_STRING || k->type == SPEC_FILE)
            set_string((char **)field, NULL);
        else if (k->type == SPEC_RATE)
            *(bool *)((char *)base + k->aux_offset) = false;
        return;
    }
    switch (k->type) {
    case SPEC_INT64:
    case SPEC_INT: {
        int64_t x;
        if (!node_integer(v, &x) || x < k->min || x > k->max) {
            snprintf(what, sizeof(what), "an integer from %" PRId64 " to %" PRId64, k->min, k->max);
            bad_value(ld, v, k->name, what, k->flags, NULL);
        } else if (k->type == SPEC_INT64) {
            *(int64_t *)field = x;
        } else {
            *(int *)field = (int)x;
        }
        break;
    }
    case SPEC_DOUBLE: {
        double x = v->type == NODE_NUMBER ? strtod(v->text, NULL) : NAN;
        if (!isfinite(x) || x < k->dmin || x > k->dmax) {
            snprintf(what, sizeof(what), "a number from %.15g to %.15g", k->dmin, k->dmax);
            bad_value(ld, v, k->name, what, k->flags, NULL);
        } else {
            *(double *)field = x;
        }
        break;
    }
    case SPEC_BOOL:
        if (v->type != NODE_BOOL)
            bad_value(ld, v, k->name, "true or false", k->flags, NULL);
        else
            *(bool *)field = v->boolean;
        break;
    case SPEC_ENUM: {
        size_t i;
        for (i = 0; k->names[i]; i++)
            if (v->type == NODE_STRING && strlen(k->names[i]) == v->len &&
                memcmp(k->names[i], v->text, v->len) == 0)
                break;
        if (k->names[i]) {
            *(int *)field = (int)i;
            break;
        }
        size_t o = (size_t)snprintf(what, sizeof(what), "one of");
        for (i = 0; k->names[i] && o < sizeof(what); i++)
            o += (size_t)snprintf(what + o, sizeof(what) - o, "%s \"%s\"", i ? "," : "",
                                  k->names[i]);
        bad_value(ld, v, k->name, what, k->flags, NULL);
        break;
    }
    case SPEC_STRING: {
        char *s = read_string(ld, v, k->name, k->flags, (size_t)k->max, k->check, k->what);
        if (s)
            set_string((char **)field, s);
        break;
    }
    case SPEC_FILE: {
        char *s = read_file_value(ld, v, k);
        if (s)
            set_string((char **)field, s);
        break;
    }
    case SPEC_ADDRESS: {
        char *s = read_string(ld, v, k->name, k->flags, 0, NULL, NULL);
        if (s == NULL)
            break;
        struct lg_conf_address *a = (struct lg_conf_address *)field;
        char why[LG_ERR_LEN];
        if (lg_conf_parse_address(s, a, why, sizeof(why)) != 0)
            bad_value(ld, v, k->name, "IPv4:port or [IPv6]:port", k->flags, why);
        free(s);
        break;
    }
    case SPEC_RATE:
        if (v->type != NODE_OBJECT) {
            bad_value(ld, v, k->name, "an object with \"rate\" and \"burst\", or null", k->flags,
                      NULL);
            break;
        }
        *(bool *)((char *)base + k->aux_offset) = true;
        read_object(ld, v, k->sub, field);
        break;
    case SPEC_STRINGS: {
        char **items;
        size_t n;
        if (!read_strings(ld, v, k, &items, &n))
            break;
        if (k->flags & F_JOIN) {
            set_string((char **)field, join_strings(ld, items, n));
            strings_free(items, n);
        } else {
            *(char ***)field = items;
            *(size_t *)((char *)base + k->aux_offset) = n;
        }
        break;
    }
    case SPEC_CIDRS: {
        if (!check_array(ld, v, k, "CIDR strings") || v->nitems == 0)
            break;
        struct lg_conf_cidr *cidrs = calloc(v->nitems, sizeof(*cidrs));
        if (cidrs == NULL) {
            conf_oom(ld);
            break;
        }
        *(struct lg_conf_cidr **)field = cidrs;
        *(size_t *)((char *)base + k->aux_offset) = v->nitems;
        for (size_t i = 0; i < v->nitems; i++) {
            char name[64], why[LG_ERR_LEN];
            snprintf(name, sizeof(name), "%s[%zu]", k->name, i);
            char *s = read_string(ld, v->items[i], name, 0, 0, NULL, NULL);
            if (s && lg_conf_parse_cidr(s, &cidrs[i], why, sizeof(why)) != 0)
                bad_value(ld, v->items[i], name,
                          "a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"", 0, why);
            free(s);
        }
        break;
    }
    case SPEC_OBJECT:
        if (v->type != NODE_OBJECT) {
            bad_value(ld, v, k->name, (k->flags & F_NULLABLE) ? "an object or null" : "an object",
                      k->flags, NULL);
            break;
        }
        if (k->aux_offset != NO_AUX)
            *(bool *)((char *)base + k->aux_offset) = true;
        read_object(ld, v, k->sub, field);
        break;
    case SPEC_CUSTOM:
        break; /* handled above */
    }
}

/* Read object obj (NULL when absent) according to table t into base, whose
 * defaults are already set: unknown keys, then each known key in table
 * order (so that, say, "lambda" is read before "routes" whatever the order
 * in the file), then the table's post hook. */
static void read_object(struct loader *ld, const struct node *obj, const struct key_table *t,
                        void *base)
{
    const struct node *seen[CONF_TABLE_MAX] = {NULL};
    if (obj != NULL) {
        char where[128];
        for (size_t i = 0; i < obj->nitems; i++) {
            const struct node *m = obj->items[i];
            if (m->duplicate)
                continue;
            size_t j;
            for (j = 0; j < t->nkeys; j++)
                if (strlen(t->keys[j].name) == m->key_len &&
                    memcmp(t->keys[j].name, m->key, m->key_len) == 0)
                    break;
            if (j == t->nkeys) {
                char q[CONF_QUOTE_BUF];
                node_path(obj, where, sizeof(where));
                conf_error(ld, m->key_line, "unknown key %s in %s", quote(q, m->key, m->key_len),
                           where);
            }
        }
        for (size_t j = 0; j < t->nkeys; j++) {
            const struct key_spec *k = &t->keys[j];
            const struct node *m = member(obj, k->name);
            seen[j] = m;
            if (m != NULL) {
                read_value(ld, m, k, base);
            } else if (k->flags & F_REQUIRED) {
                node_path(obj, where, sizeof(where));
                conf_error(ld, obj->line, "missing required key \"%s\" in %s", k->name, where);
            } else if (k->type == SPEC_OBJECT) {
                read_object(ld, NULL, k->sub, (char *)base + k->offset);
            }
        }
    } else {
        for (size_t j = 0; j < t->nkeys; j++)
            if (t->keys[j].type == SPEC_OBJECT)
                read_object(ld, NULL, t->keys[j].sub, (char *)base + t->keys[j].offset);
    }
    if (t->post)
        t->post(ld, obj, base, seen);
}

/* ------------------------------------------------------------------------
 * The tables, one per object of CONTRACT section 3
 * ------------------------------------------------------------------------ */

static const char *const invocation_names[] = {"sync", "async", NULL};
static const char *const payload_names[] = {"2.0", "1.0", NULL};
static const char *const auth_names[] = {"none", "jwt", "api_key", NULL};
static const char *const throttle_store_names[] = {"local", "redis", NULL};
static const char *const cache_store_names[] = {"memory", "redis", NULL};
static const char *const invalidation_names[] = {"authenticated", "anyone", "never", NULL};

/* Enums are stored through int pointers. */
_Static_assert(sizeof(enum lg_invocation) == sizeof(int), "enum size");
_Static_assert(sizeof(enum lg_payload_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum lg_auth_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum lg_conf_store_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum lg_conf_invalidation) == sizeof(int), "enum size");
_Static_assert(LG_INVOKE_ASYNC == 1 && LG_PAYLOAD_V1 == 1 && LG_AUTH_API_KEY == 2 &&
                   LG_STORE_REDIS == 1 && LG_INVALIDATE_NEVER == 2,
               "enum values follow the name tables");

#define INT64_KEY(n, st, f, lo, hi, d)                                                             \
    {                                                                                              \
        .name = (n), .type = SPEC_INT64, .offset = offsetof(st, f), .aux_offset = NO_AUX,          \
        .min = (lo), .max = (hi), .def = (d)                                                       \
    }
#define ENUM_KEY(n, st, f, nm)                                                                     \
    {                                                                                              \
        .name = (n), .type = SPEC_ENUM, .offset = offsetof(st, f), .aux_offset = NO_AUX,           \
        .names = (nm), .def = 0                                                                    \
    }

/* A token bucket: both keys required; a rate below one token per 1000 s or
 * a bucket above a million is a typo rather than a setting. */
static const struct key_spec rate_keys[] = {
    {.name = "rate",
     .type = SPEC_DOUBLE,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_rate, rate),
     .aux_offset = NO_AUX,
     .dmin = 0.001,
     .dmax = 1000000},
    {.name = "burst",
     .type = SPEC_INT64,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_rate, burst),
     .aux_offset = NO_AUX,
     .min = 1,
     .max = 1000000},
};
static const struct key_table rate_table = TABLE(rate_keys, NULL);

static void listen_post(struct loader *ld, const struct node *obj, void *base,
                        const struct node *const *seen);
static const struct key_spec tls_keys[] = {
    {.name = "certificate",
     .type = SPEC_FILE,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_listen, certificate),
     .aux_offset = NO_AUX},
    {.name = "private_key",
     .type = SPEC_FILE,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_listen, private_key),
     .aux_offset = NO_AUX},
};
static const struct key_table tls_table = TABLE(tls_keys, NULL);
static const struct key_spec listen_keys[] = {
    {.name = "address",
     .type = SPEC_ADDRESS,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_listen, address),
     .aux_offset = NO_AUX},
    /* The TLS files go straight into the listener (offset 0); "tls" set
     * marks it as a TLS listener. */
    {.name = "tls",
     .type = SPEC_OBJECT,
     .flags = F_NULLABLE,
     .offset = 0,
     .aux_offset = offsetof(struct lg_conf_listen, tls),
     .sub = &tls_table},
};
static const struct key_table listen_table = TABLE(listen_keys, listen_post);

static const struct key_spec admin_keys[] = {
    {.name = "address",
     .type = SPEC_ADDRESS,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf, admin),
     .aux_offset = NO_AUX},
};
static const struct key_table admin_table = TABLE(admin_keys, NULL);

/* Credentials are secrets: no message ever quotes them. */
static const struct key_spec credentials_keys[] = {
    {.name = "access_key_id",
     .type = SPEC_STRING,
     .flags = F_REQUIRED | F_SECRET,
     .offset = offsetof(struct lg_conf_lambda, access_key_id),
     .aux_offset = NO_AUX,
     .max = 128},
    {.name = "secret_access_key",
     .type = SPEC_STRING,
     .flags = F_REQUIRED | F_SECRET,
     .offset = offsetof(struct lg_conf_lambda, secret_access_key),
     .aux_offset = NO_AUX,
     .max = 128},
    {.name = "session_token",
     .type = SPEC_STRING,
     .flags = F_NULLABLE | F_SECRET,
     .offset = offsetof(struct lg_conf_lambda, session_token),
     .aux_offset = NO_AUX},
};
static const struct key_table credentials_table = TABLE(credentials_keys, NULL);

static void read_endpoint(struct loader *ld, const struct node *v, void *base,
                          const struct key_spec *spec);
static void lambda_post(struct loader *ld, const struct node *obj, void *base,
                        const struct node *const *seen);
static const struct key_spec lambda_keys[] = {
    {.name = "region",
     .type = SPEC_STRING,
     .offset = offsetof(struct lg_conf_lambda, region),
     .aux_offset = NO_AUX,
     .def_str = "us-east-1",
     .check = check_region,
     .what = "an AWS region such as \"us-east-1\""},
    {.name = "endpoint", .type = SPEC_CUSTOM, .aux_offset = NO_AUX, .handler = read_endpoint},
    {.name = "credentials",
     .type = SPEC_OBJECT,
     .flags = F_NULLABLE,
     .offset = 0,
     .aux_offset = offsetof(struct lg_conf_lambda, credentials_set),
     .sub = &credentials_table},
    {.name = "ca_file",
     .type = SPEC_FILE,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_lambda, ca_file),
     .aux_offset = NO_AUX},
    /* Lambda's own maximum run time is 15 minutes. */
    INT64_KEY("timeout_ms", struct lg_conf_lambda, timeout_ms, 1, 900000, 29000),
    INT64_KEY("max_connections", struct lg_conf_lambda, max_connections, 1, 10000, 64),
};
static const struct key_table lambda_table = TABLE(lambda_keys, lambda_post);

static const struct key_spec redis_keys[] = {
    {.name = "host",
     .type = SPEC_STRING,
     .offset = offsetof(struct lg_conf_redis, host),
     .aux_offset = NO_AUX,
     .def_str = "127.0.0.1",
     .check = check_host,
     .what = "a host name or address"},
    {.name = "port",
     .type = SPEC_INT,
     .offset = offsetof(struct lg_conf_redis, port),
     .aux_offset = NO_AUX,
     .min = 1,
     .max = 65535,
     .def = 6379},
    {.name = "password",
     .type = SPEC_STRING,
     .flags = F_NULLABLE | F_SECRET,
     .offset = offsetof(struct lg_conf_redis, password),
     .aux_offset = NO_AUX},
    {.name = "db",
     .type = SPEC_INT,
     .offset = offsetof(struct lg_conf_redis, db),
     .aux_offset = NO_AUX,
     .min = 0,
     .max = 65535,
     .def = 0},
    /* Redis answers in well under a millisecond; a minute is already a
     * dead server. */
    INT64_KEY("timeout_ms", struct lg_conf_redis, timeout_ms, 1, 60000, 100),
    {.name = "prefix",
     .type = SPEC_STRING,
     .flags = F_EMPTY_OK,
     .offset = offsetof(struct lg_conf_redis, prefix),
     .aux_offset = NO_AUX,
     .max = 128,
     .def_str = "lg:"},
};
static const struct key_table redis_table = TABLE(redis_keys, NULL);

static const struct key_spec limits_keys[] = {
    INT64_KEY("max_connections", struct lg_conf_limits, max_connections, 1, 1000000, 10000),
    INT64_KEY("max_connections_per_ip", struct lg_conf_limits, max_connections_per_ip, 1, 1000000,
              256),
    /* Below 1 KiB ordinary browser requests fail; above 1 MiB is abuse. */
    INT64_KEY("max_header_bytes", struct lg_conf_limits, max_header_bytes, 1024, 1048576, 16384),
    /* A larger body could never reach Lambda (6 MB synchronous payloads). */
    INT64_KEY("max_body_bytes", struct lg_conf_limits, max_body_bytes, 0,
              LG_LAMBDA_SYNC_PAYLOAD_MAX, LG_LAMBDA_SYNC_PAYLOAD_MAX),
    INT64_KEY("header_timeout_ms", struct lg_conf_limits, header_timeout_ms, 1, 900000, 10000),
    INT64_KEY("body_timeout_ms", struct lg_conf_limits, body_timeout_ms, 1, 900000, 30000),
    INT64_KEY("idle_timeout_ms", struct lg_conf_limits, idle_timeout_ms, 1, 900000, 60000),
    INT64_KEY("max_inflight", struct lg_conf_limits, max_inflight, 1, 1000000, 1024),
    {.name = "per_ip",
     .type = SPEC_RATE,
     .flags = F_NULLABLE | F_DEFAULT_ON,
     .offset = offsetof(struct lg_conf_limits, per_ip),
     .aux_offset = offsetof(struct lg_conf_limits, per_ip_enabled),
     .def_rate = 100,
     .def = 200,
     .sub = &rate_table},
    {.name = "allow",
     .type = SPEC_CIDRS,
     .offset = offsetof(struct lg_conf_limits, allow),
     .aux_offset = offsetof(struct lg_conf_limits, nallow),
     .min = 0,
     .max = 10000},
    {.name = "deny",
     .type = SPEC_CIDRS,
     .offset = offsetof(struct lg_conf_limits, deny),
     .aux_offset = offsetof(struct lg_conf_limits, ndeny),
     .min = 0,
     .max = 10000},
};
static const struct key_table limits_table = TABLE(limits_keys, NULL);

static void jwt_post(struct loader *ld, const struct node *obj, void *base,
                     const struct node *const *seen);
static const struct key_spec jwt_keys[] = {
    {.name = "issuer",
     .type = SPEC_STRING,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_jwt, issuer),
     .aux_offset = NO_AUX},
    /* API Gateway's JWT authorizer takes at most 50 audiences. */
    {.name = "audience",
     .type = SPEC_STRINGS,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_jwt, audience),
     .aux_offset = offsetof(struct lg_conf_jwt, naudience),
     .min = 1,
     .max = 50},
    {.name = "jwks_file",
     .type = SPEC_FILE,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_jwt, jwks_file),
     .aux_offset = NO_AUX},
    {.name = "jwks_url",
     .type = SPEC_STRING,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_jwt, jwks_url),
     .aux_offset = NO_AUX,
     .check = check_https_url,
     .what = "an https:// URL"},
    /* Clock skew is seconds; an hour of leeway would defeat "exp". */
    INT64_KEY("leeway_s", struct lg_conf_jwt, leeway_s, 0, 3600, 60),
    {.name = "identity_claim",
     .type = SPEC_STRING,
     .offset = offsetof(struct lg_conf_jwt, identity_claim),
     .aux_offset = NO_AUX,
     .max = 256,
     .def_str = "sub"},
    {.name = "token_use",
     .type = SPEC_STRING,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_jwt, token_use),
     .aux_offset = NO_AUX,
     .check = check_token_use,
     .what = "\"id\", \"access\" or null"},
    {.name = "ca_file",
     .type = SPEC_FILE,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_jwt, ca_file),
     .aux_offset = NO_AUX},
};
static const struct key_table jwt_table = TABLE(jwt_keys, jwt_post);

static void api_keys_post(struct loader *ld, const struct node *obj, void *base,
                          const struct node *const *seen);
static const struct key_spec api_keys_keys[] = {
    {.name = "file",
     .type = SPEC_FILE,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_auth, api_keys_file),
     .aux_offset = NO_AUX},
};
static const struct key_table api_keys_table = TABLE(api_keys_keys, api_keys_post);

static void read_jwt(struct loader *ld, const struct node *v, void *base,
                     const struct key_spec *spec);
static const struct key_spec auth_keys[] = {
    {.name = "jwt", .type = SPEC_CUSTOM, .aux_offset = NO_AUX, .handler = read_jwt},
    {.name = "api_keys",
     .type = SPEC_OBJECT,
     .flags = F_NULLABLE,
     .offset = 0,
     .aux_offset = NO_AUX,
     .sub = &api_keys_table},
};
static const struct key_table auth_table = TABLE(auth_keys, NULL);

static const struct key_spec throttle_keys[] = {
    ENUM_KEY("store", struct lg_conf_throttle, store, throttle_store_names),
    {.name = "default",
     .type = SPEC_RATE,
     .flags = F_NULLABLE | F_DEFAULT_ON,
     .offset = offsetof(struct lg_conf_throttle, default_rate),
     .aux_offset = offsetof(struct lg_conf_throttle, default_enabled),
     .def_rate = 10,
     .def = 20,
     .sub = &rate_table},
    {.name = "global",
     .type = SPEC_RATE,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_throttle, global),
     .aux_offset = offsetof(struct lg_conf_throttle, global_enabled),
     .sub = &rate_table},
};
static const struct key_table throttle_table = TABLE(throttle_keys, NULL);

static const struct key_spec cache_keys[] = {
    ENUM_KEY("store", struct lg_conf_cache, store, cache_store_names),
    INT64_KEY("max_bytes", struct lg_conf_cache, max_bytes, 0, INT64_C(68719476736), 67108864),
    /* Answers of functions are dynamic: an hour is the longest sane TTL. */
    INT64_KEY("ttl_s", struct lg_conf_cache, ttl_s, 0, 3600, 300),
    ENUM_KEY("invalidation", struct lg_conf_cache, invalidation, invalidation_names),
};
static const struct key_table cache_table = TABLE(cache_keys, NULL);

static const struct key_spec route_cache_keys[] = {
    INT64_KEY("ttl_s", struct lg_conf_route_cache, ttl_s, 0, 3600, 0),
    {.name = "key_query",
     .type = SPEC_STRINGS,
     .offset = offsetof(struct lg_conf_route_cache, key_query),
     .aux_offset = offsetof(struct lg_conf_route_cache, nkey_query),
     .min = 0,
     .max = 32},
    {.name = "key_headers",
     .type = SPEC_STRINGS,
     .flags = F_LOWER,
     .offset = offsetof(struct lg_conf_route_cache, key_headers),
     .aux_offset = offsetof(struct lg_conf_route_cache, nkey_headers),
     .min = 0,
     .max = 32,
     .check = check_token,
     .what = "an HTTP header name"},
    {.name = "per_user",
     .type = SPEC_BOOL,
     .offset = offsetof(struct lg_conf_route_cache, per_user),
     .aux_offset = NO_AUX},
    INT64_KEY("stale_if_error_s", struct lg_conf_route_cache, stale_if_error_s, 0, 86400, 0),
};
static const struct key_table route_cache_table = TABLE(route_cache_keys, NULL);

static void cors_post(struct loader *ld, const struct node *obj, void *base,
                      const struct node *const *seen);
static const struct key_spec cors_keys[] = {
    {.name = "allow_origins",
     .type = SPEC_STRINGS,
     .flags = F_REQUIRED | F_LOWER, /* scheme and host are case-insensitive */
     .offset = offsetof(struct lg_conf_cors, allow_origins),
     .aux_offset = offsetof(struct lg_conf_cors, nallow_origins),
     .min = 1,
     .max = 100,
     .check = check_origin,
     .what = "\"*\" or an origin such as \"https://app.example.com\""},
    {.name = "allow_methods",
     .type = SPEC_STRINGS,
     .offset = offsetof(struct lg_conf_cors, methods),
     .aux_offset = offsetof(struct lg_conf_cors, nmethods),
     .min = 0,
     .max = 8,
     .check = check_cors_method,
     .what = "one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or *"},
    {.name = "allow_headers",
     .type = SPEC_STRINGS,
     .flags = F_JOIN | F_LOWER,
     .offset = offsetof(struct lg_conf_cors, allow_headers),
     .aux_offset = NO_AUX,
     .min = 0,
     .max = 100,
     .check = check_token,
     .what = "an HTTP header name"},
    {.name = "expose_headers",
     .type = SPEC_STRINGS,
     .flags = F_JOIN,
     .offset = offsetof(struct lg_conf_cors, expose_headers),
     .aux_offset = NO_AUX,
     .min = 0,
     .max = 100,
     .check = check_token,
     .what = "an HTTP header name"},
    /* Browsers cap Access-Control-Max-Age at a day or less. */
    INT64_KEY("max_age_s", struct lg_conf_cors, max_age_s, 0, 86400, 0),
    {.name = "allow_credentials",
     .type = SPEC_BOOL,
     .offset = offsetof(struct lg_conf_cors, allow_credentials),
     .aux_offset = NO_AUX},
};
static const struct key_table cors_table = TABLE(cors_keys, cors_post);

static void read_route_throttle(struct loader *ld, const struct node *v, void *base,
                                const struct key_spec *spec);
static void read_route_cache(struct loader *ld, const struct node *v, void *base,
                             const struct key_spec *spec);
static void read_route_cors(struct loader *ld, const struct node *v, void *base,
                            const struct key_spec *spec);
static void route_post(struct loader *ld, const struct node *obj, void *base,
                       const struct node *const *seen);
static const struct key_spec route_keys[] = {
    {.name = "method",
     .type = SPEC_STRING,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_route, method),
     .aux_offset = NO_AUX,
     .check = check_route_method,
     .what = "one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY"},
    {.name = "path",
     .type = SPEC_STRING,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_route, path),
     .aux_offset = NO_AUX,
     .check = check_template,
     .what = NULL}, /* the router's message says what is wrong */
    {.name = "function",
     .type = SPEC_STRING,
     .flags = F_REQUIRED,
     .offset = offsetof(struct lg_conf_route, function),
     .aux_offset = NO_AUX,
     .check = check_function,
     .what = "a function name, name:alias, or partial or full ARN"},
    {.name = "qualifier",
     .type = SPEC_STRING,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf_route, qualifier),
     .aux_offset = NO_AUX,
     .check = check_qualifier,
     .what = "a version or alias ([a-zA-Z0-9$_-], 1 to 128 characters)"},
    ENUM_KEY("invocation", struct lg_conf_route, invocation, invocation_names),
    ENUM_KEY("payload_format", struct lg_conf_route, payload_format, payload_names),
    ENUM_KEY("auth", struct lg_conf_route, auth, auth_names),
    {.name = "scopes",
     .type = SPEC_STRINGS,
     .offset = offsetof(struct lg_conf_route, scopes),
     .aux_offset = offsetof(struct lg_conf_route, nscopes),
     .min = 0,
     .max = 50,
     .check = check_scope,
     .what = "a non-empty string without spaces"},
    {.name = "throttle", .type = SPEC_CUSTOM, .aux_offset = NO_AUX, .handler = read_route_throttle},
    {.name = "cache", .type = SPEC_CUSTOM, .aux_offset = NO_AUX, .handler = read_route_cache},
    /* The default (lambda.timeout_ms) is set by read_routes(). */
    INT64_KEY("timeout_ms", struct lg_conf_route, timeout_ms, 1, 900000, 0),
    {.name = "cors", .type = SPEC_CUSTOM, .aux_offset = NO_AUX, .handler = read_route_cors},
};
static const struct key_table route_table = TABLE(route_keys, route_post);

static void read_listen(struct loader *ld, const struct node *v, void *base,
                        const struct key_spec *spec);
static void read_access_log(struct loader *ld, const struct node *v, void *base,
                            const struct key_spec *spec);
static void read_routes(struct loader *ld, const struct node *v, void *base,
                        const struct key_spec *spec);
static void top_post(struct loader *ld, const struct node *obj, void *base,
                     const struct node *const *seen);
/* Order matters: routes read lambda, cache and auth settings, so they come
 * last. */
static const struct key_spec top_keys[] = {
    {.name = "listen",
     .type = SPEC_CUSTOM,
     .flags = F_REQUIRED,
     .aux_offset = NO_AUX,
     .handler = read_listen},
    {.name = "admin",
     .type = SPEC_OBJECT,
     .flags = F_NULLABLE,
     .offset = 0,
     .aux_offset = offsetof(struct lg_conf, admin_set),
     .sub = &admin_table},
    INT64_KEY("workers", struct lg_conf, workers, 0, 256, 0),
    /* 0: stop at once without waiting for requests in flight. */
    INT64_KEY("shutdown_timeout_ms", struct lg_conf, shutdown_timeout_ms, 0, 900000, 30000),
    {.name = "access_log",
     .type = SPEC_CUSTOM,
     .offset = offsetof(struct lg_conf, access_log),
     .aux_offset = NO_AUX,
     .def_str = "-",
     .handler = read_access_log},
    {.name = "pid_file",
     .type = SPEC_STRING,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf, pid_file),
     .aux_offset = NO_AUX,
     .max = 4096,
     .check = check_absolute_path,
     .what = "an absolute path"},
    {.name = "user",
     .type = SPEC_STRING,
     .flags = F_NULLABLE,
     .offset = offsetof(struct lg_conf, user),
     .aux_offset = NO_AUX,
     .max = 256,
     .check = check_user_name,
     .what = "a user name or numeric uid"},
    {.name = "lambda",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, lambda),
     .aux_offset = NO_AUX,
     .sub = &lambda_table},
    {.name = "redis",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, redis),
     .aux_offset = NO_AUX,
     .sub = &redis_table},
    {.name = "limits",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, limits),
     .aux_offset = NO_AUX,
     .sub = &limits_table},
    {.name = "auth",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, auth),
     .aux_offset = NO_AUX,
     .sub = &auth_table},
    {.name = "throttle",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, throttle),
     .aux_offset = NO_AUX,
     .sub = &throttle_table},
    {.name = "cache",
     .type = SPEC_OBJECT,
     .offset = offsetof(struct lg_conf, cache),
     .aux_offset = NO_AUX,
     .sub = &cache_table},
    {.name = "routes",
     .type = SPEC_CUSTOM,
     .flags = F_REQUIRED,
     .aux_offset = NO_AUX,
     .handler = read_routes},
};
static const struct key_table top_table = TABLE(top_keys, top_post);

/* ------------------------------------------------------------------------
 * Handlers and post hooks
 * ------------------------------------------------------------------------ */

static bool same_address(const struct lg_conf_address *a, const struct lg_conf_address *b)
{
    return a->text && b->text && a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

/* A TLS listener gets its SSL_CTX now, so that a bad certificate is a
 * load error at the line of "tls". */
static void listen_post(struct loader *ld, const struct node *obj, void *base,
                        const struct node *const *seen)
{
    struct lg_conf_listen *l = base;
    if (!l->tls || l->certificate == NULL || l->private_key == NULL)
        return;
    char err[LG_ERR_LEN];
    l->ssl_ctx = lg_tls_server_ctx_new(l->certificate, l->private_key, err, sizeof(err));
    if (l->ssl_ctx == NULL)
        conf_error(ld, seen_line(seen_get(&listen_table, seen, "tls"), obj),
                   "cannot set up TLS: %s", err);
}

static void read_listen(struct loader *ld, const struct node *v, void *base,
                        const struct key_spec *spec)
{
    struct lg_conf *conf = base;
    const struct key_spec bounds = {.name = spec->name, .min = 1, .max = 64};
    if (!check_array(ld, v, &bounds, "listener objects"))
        return;
    conf->listen = calloc(v->nitems, sizeof(*conf->listen));
    if (conf->listen == NULL) {
        conf_oom(ld);
        return;
    }
    conf->nlisten = v->nitems;
    for (size_t i = 0; i < v->nitems; i++) {
        const struct node *item = v->items[i];
        struct lg_conf_listen *l = &conf->listen[i];
        l->line = item->line;
        if (item->type != NODE_OBJECT) {
            char name[32];
            snprintf(name, sizeof(name), "listen[%zu]", i);
            bad_value(ld, item, name, "an object", 0, NULL);
            continue;
        }
        apply_defaults(ld, &listen_table, l);
        read_object(ld, item, &listen_table, l);
        for (size_t j = 0; j < i; j++) {
            if (same_address(&conf->listen[j].address, &l->address)) {
                char q[CONF_QUOTE_BUF];
                conf_error(ld, seen_line(member(item, "address"), item),
                           "duplicate listen address %s (also listen[%zu])",
                           quote_str(q, l->address.text), j);
                break;
            }
        }
    }
}

/* "-" (stdout), "off", or a path, resolved like the other files but not
 * checked: the log module creates it. */
static void read_access_log(struct loader *ld, const struct node *v, void *base,
                            const struct key_spec *spec)
{
    struct lg_conf *conf = base;
    char *s = read_string(ld, v, spec->name, 0, 0, NULL, "\"-\", \"off\" or a file path");
    if (s == NULL)
        return;
    if (strcmp(s, "-") != 0 && strcmp(s, "off") != 0) {
        char *path = resolve_path(ld, s);
        free(s);
        s = path;
    }
    if (s)
        set_string(&conf->access_log, s);
}

static void endpoint_free(struct lg_conf_endpoint *e)
{
    free(e->url);
    free(e->host);
    free(e->authority);
    memset(e, 0, sizeof(*e));
}

/* Fill e from an endpoint URL: http(s)://host[:port] with no path but "/"
 * and no query. e->url is rebuilt as scheme://authority without a trailing
 * slash so that it can be joined with an Invoke path. e's strings are new
 * (caller frees with endpoint_free()). -1 with why set. */
static int endpoint_init(struct lg_conf_endpoint *e, const char *url, char *why, size_t whylen)
{
    memset(e, 0, sizeof(*e));
    struct lg_httpc_url u;
    if (lg_httpc_parse_url(url, &u, why, whylen) != 0)
        return -1;
    if (strcmp(u.path, "/") != 0) {
        snprintf(why, whylen, "an endpoint has no path or query");
        lg_httpc_url_free(&u);
        return -1;
    }
    struct lg_buf b;
    lg_buf_init(&b, 0);
    if (lg_buf_printf(&b, "%s://%s", u.tls ? "https" : "http", u.authority) != 0) {
        lg_buf_free(&b);
        lg_httpc_url_free(&u);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    size_t n;
    e->url = lg_buf_steal(&b, &n);
    e->tls = u.tls;
    e->port = u.port;
    e->host = u.host;
    e->authority = u.authority;
    u.host = NULL;
    u.authority = NULL;
    lg_httpc_url_free(&u);
    return 0;
}

static int endpoint_copy(struct lg_conf_endpoint *dst, const struct lg_conf_endpoint *src)
{
    *dst = *src;
    dst->url = strdup(src->url);
    dst->host = strdup(src->host);
    dst->authority = strdup(src->authority);
    if (dst->url == NULL || dst->host == NULL || dst->authority == NULL) {
        endpoint_free(dst);
        return -1;
    }
    return 0;
}

/* Lambda's public endpoint for a region: amazonaws.com, .com.cn in China,
 * and the isolated partitions' own domains. */
static int endpoint_for_region(struct lg_conf_endpoint *e, const char *region)
{
    const char *domain = "amazonaws.com";
    if (strncmp(region, "cn-", 3) == 0)
        domain = "amazonaws.com.cn";
    else if (strncmp(region, "us-iso-", 7) == 0)
        domain = "c2s.ic.gov";
    else if (strncmp(region, "us-isob-", 8) == 0)
        domain = "sc2s.sgov.gov";
    char url[320];
    char why[LG_ERR_LEN];
    snprintf(url, sizeof(url), "https://lambda.%s.%s", region, domain);
    return endpoint_init(e, url, why, sizeof(why));
}

static void read_endpoint(struct loader *ld, const struct node *v, void *base,
                          const struct key_spec *spec)
{
    struct lg_conf_lambda *lambda = base;
    if (v->type == NODE_NULL)
        return; /* derived from the region */
    const char *what = "an http:// or https:// URL without a path, or null";
    char *s = read_string(ld, v, spec->name, 0, 0, NULL, what);
    if (s == NULL)
        return;
    char why[LG_ERR_LEN];
    if (endpoint_init(&lambda->endpoint, s, why, sizeof(why)) != 0)
        bad_value(ld, v, spec->name, what, 0, why);
    else
        lambda->endpoint_set = true;
    free(s);
}

/* The default endpoint; and where the client TLS context's errors go, for
 * build_lambda_tls() at the end. */
static void lambda_post(struct loader *ld, const struct node *obj, void *base,
                        const struct node *const *seen)
{
    struct lg_conf_lambda *lambda = base;
    if (!lambda->endpoint_set && lambda->region &&
        endpoint_for_region(&lambda->endpoint, lambda->region) != 0)
        conf_oom(ld);
    const struct node *ca = seen_get(&lambda_table, seen, "ca_file");
    ld->ca_file_line = seen_line(ca, obj);
    ld->ca_file_failed = ca && ca->type != NODE_NULL && lambda->ca_file == NULL;
}

struct keys_file_errors {
    struct loader *ld;
    const char *path;
};

/* An error in the API keys file: reported against that file. */
static void keys_file_error(void *arg, int line, const char *message)
{
    struct keys_file_errors *k = arg;
    struct loader *ld = k->ld;
    size_t before = ld->errors->count;
    conf_error(ld, line, "%s", message);
    if (ld->errors->count > before && before < CONF_MAX_ERRORS) {
        struct lg_conf_error *e = &ld->errors->items[before];
        e->file = strdup(k->path);
    }
}

/* What authentication needs from files is read with the config, so that a
 * bad key set or keys file is a load error (for -t and for a reload): the
 * keys of jwks_file, the API keys file, and the TLS context for jwks_url.
 * Skipped when the config already failed, as those are the costly parts. */
static void build_auth(struct loader *ld, struct lg_conf *conf)
{
    if (ld->failed)
        return;
    char err[LG_ERR_LEN];
    struct lg_conf_jwt *jwt = conf->auth.jwt;
    if (jwt && jwt->jwks_file) {
        jwt->keys = lg_jwks_load_file(jwt->jwks_file, err, sizeof(err));
        if (jwt->keys == NULL)
            conf_error(ld, ld->jwks_file_line, "auth.jwt.jwks_file: %s", err);
    }
    if (jwt && jwt->jwks_url) {
        jwt->ssl_ctx = lg_tls_client_ctx_new(jwt->ca_file, err, sizeof(err));
        if (jwt->ssl_ctx == NULL)
            conf_error(ld, ld->jwt_ca_line, "cannot set up TLS for auth.jwt.jwks_url: %s", err);
    }
    if (conf->auth.api_keys_file) {
        struct keys_file_errors k = {ld, conf->auth.api_keys_file};
        conf->auth.api_keys = lg_apikeys_load(conf->auth.api_keys_file, keys_file_error, &k);
        if (conf->auth.api_keys == NULL && !ld->failed)
            conf_error(ld, ld->api_keys_line, "cannot load auth.api_keys.file");
    }
}

/* The Lambda client context is built for every config that loads (the
 * endpoint may be https even without a ca_file). Loading the system CA
 * bundle costs tens of milliseconds, so a load that has already failed
 * skips it, unless a ca_file was given: building is what checks it. */
static void build_lambda_tls(struct loader *ld, struct lg_conf *conf)
{
    struct lg_conf_lambda *lambda = &conf->lambda;
    if (ld->ca_file_failed || (ld->failed && lambda->ca_file == NULL))
        return;
    char err[LG_ERR_LEN];
    lambda->ssl_ctx = lg_tls_client_ctx_new(lambda->ca_file, err, sizeof(err));
    if (lambda->ssl_ctx == NULL)
        conf_error(ld, ld->ca_file_line, "cannot set up TLS for Lambda: %s", err);
}

static void read_jwt(struct loader *ld, const struct node *v, void *base,
                     const struct key_spec *spec)
{
    struct lg_conf_auth *auth = base;
    if (v->type == NODE_NULL)
        return;
    if (v->type != NODE_OBJECT) {
        bad_value(ld, v, spec->name, "an object or null", 0, NULL);
        return;
    }
    ld->jwt_given = true;
    auth->jwt = calloc(1, sizeof(*auth->jwt));
    if (auth->jwt == NULL) {
        conf_oom(ld);
        return;
    }
    apply_defaults(ld, &jwt_table, auth->jwt);
    read_object(ld, v, &jwt_table, auth->jwt);
}

/* Exactly one source of keys. */
static void jwt_post(struct loader *ld, const struct node *obj, void *base,
                     const struct node *const *seen)
{
    const struct node *file = seen_get(&jwt_table, seen, "jwks_file");
    const struct node *url = seen_get(&jwt_table, seen, "jwks_url");
    bool has_file = file && file->type != NODE_NULL;
    bool has_url = url && url->type != NODE_NULL;
    if (has_file && has_url) {
        int line = node_line(file) > node_line(url) ? node_line(file) : node_line(url);
        conf_error(ld, line, "\"jwks_file\" and \"jwks_url\" cannot both be set in auth.jwt");
    } else if (!has_file && !has_url) {
        conf_error(ld, obj->line, "auth.jwt needs \"jwks_file\" or \"jwks_url\"");
    }
    ld->jwks_file_line = seen_line(file, obj);
    ld->jwt_ca_line = seen_line(seen_get(&jwt_table, seen, "ca_file"), obj);
}

static void api_keys_post(struct loader *ld, const struct node *obj, void *base,
                          const struct node *const *seen)
{
    if (obj) {
        ld->api_keys_given = true;
        ld->api_keys_line = seen_line(seen_get(&api_keys_table, seen, "file"), obj);
    }
}

static void read_route_throttle(struct loader *ld, const struct node *v, void *base,
                                const struct key_spec *spec)
{
    struct lg_conf_route *r = base;
    if (v->type == NODE_NULL) {
        r->throttle_presence = LG_CONF_NULL;
        return;
    }
    if (v->type != NODE_OBJECT) {
        bad_value(ld, v, spec->name, "an object with \"rate\" and \"burst\", or null", 0, NULL);
        return;
    }
    r->throttle_presence = LG_CONF_SET;
    read_object(ld, v, &rate_table, &r->throttle);
}

static void read_route_cache(struct loader *ld, const struct node *v, void *base,
                             const struct key_spec *spec)
{
    struct lg_conf_route *r = base;
    if (v->type == NODE_NULL)
        return; /* not cached, as when absent */
    if (v->type != NODE_OBJECT) {
        bad_value(ld, v, spec->name, "an object or null", 0, NULL);
        return;
    }
    r->cache = calloc(1, sizeof(*r->cache));
    if (r->cache == NULL) {
        conf_oom(ld);
        return;
    }
    apply_defaults(ld, &route_cache_table, r->cache);
    r->cache->ttl_s = ld->conf->cache.ttl_s;
    read_object(ld, v, &route_cache_table, r->cache);
}

static void read_route_cors(struct loader *ld, const struct node *v, void *base,
                            const struct key_spec *spec)
{
    struct lg_conf_route *r = base;
    if (v->type == NODE_NULL)
        return;
    if (v->type != NODE_OBJECT) {
        bad_value(ld, v, spec->name, "an object or null", 0, NULL);
        return;
    }
    r->cors = calloc(1, sizeof(*r->cors));
    if (r->cors == NULL) {
        conf_oom(ld);
        return;
    }
    apply_defaults(ld, &cors_table, r->cors);
    read_object(ld, v, &cors_table, r->cors);
}

static void cors_post(struct loader *ld, const struct node *obj, void *base,
                      const struct node *const *seen)
{
    struct lg_conf_cors *c = base;
    for (size_t i = 0; i < c->nallow_origins; i++)
        if (strcmp(c->allow_origins[i], "*") == 0)
            c->any_origin = true;
    if (c->any_origin && c->nallow_origins > 1)
        conf_error(ld, seen_line(seen_get(&cors_table, seen, "allow_origins"), obj),
                   "\"allow_origins\" holding \"*\" must hold nothing else");
    /* The CORS spec forbids "*" with credentials and browsers enforce it. */
    if (c->any_origin && c->allow_credentials)
        conf_error(ld, seen_line(seen_get(&cors_table, seen, "allow_credentials"), obj),
                   "\"allow_credentials\" cannot be true with \"allow_origins\": [\"*\"]: "
                   "browsers refuse credentials for a wildcard origin");
    c->allow_methods = join_strings(ld, c->methods, c->nmethods);
}

/* Percent-encode s once, as the Invoke request line carries it. Caller
 * frees with free(); NULL on no memory (reported). */
static char *uri_encode(struct loader *ld, const char *s, size_t n)
{
    struct lg_buf b;
    lg_buf_init(&b, 0);
    if (lg_codec_uri_encode(&b, s, n, false) != 0 || lg_buf_reserve(&b, 0) != 0) {
        lg_buf_free(&b);
        conf_oom(ld);
        return NULL;
    }
    size_t len;
    return lg_buf_steal(&b, &len);
}

/* strndup that reports a failure. Caller frees with free(). */
static char *dup_n(struct loader *ld, const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (p == NULL)
        conf_oom(ld);
    return p;
}

/* The Invoke path, query, region and account of a route whose function
 * passed check_function(). */
static void route_function(struct loader *ld, struct lg_conf_route *r, const struct node *qnode)
{
    struct function_parts fp;
    if (!function_parse(r->function, &fp))
        return;
    if (fp.qualifier && r->qualifier) {
        char q1[CONF_QUOTE_BUF], q2[CONF_QUOTE_BUF];
        conf_error(ld, node_line(qnode),
                   "\"qualifier\" %s given, but \"function\" %s already names a qualifier",
                   quote_str(q1, r->qualifier), quote_str(q2, r->function));
    }
    r->function_path = uri_encode(ld, r->function, strlen(r->function));
    if (r->function_path) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        if (lg_buf_printf(&b, "/2015-03-31/functions/%s/invocations", r->function_path) != 0) {
            lg_buf_free(&b);
            conf_oom(ld);
        } else {
            size_t n;
            r->invoke_path = lg_buf_steal(&b, &n);
        }
    }
    if (r->qualifier) {
        char *q = uri_encode(ld, r->qualifier, strlen(r->qualifier));
        struct lg_buf b;
        lg_buf_init(&b, 0);
        if (q && lg_buf_printf(&b, "Qualifier=%s", q) == 0) {
            size_t n;
            r->invoke_query = lg_buf_steal(&b, &n);
        } else {
            lg_buf_free(&b);
            conf_oom(ld);
        }
        free(q);
    }
    if (fp.region)
        r->region = dup_n(ld, fp.region, fp.region_len);
    else if (ld->conf->lambda.region)
        r->region = conf_strdup(ld, ld->conf->lambda.region);
    if (fp.account)
        r->account_id = dup_n(ld, fp.account, fp.account_len);
}

static void route_post(struct loader *ld, const struct node *obj, void *base,
                       const struct node *const *seen)
{
    struct lg_conf_route *r = base;
    struct lg_conf *conf = ld->conf;
    if (r->method && r->path) {
        struct lg_buf b;
        lg_buf_init(&b, 0);
        if (lg_buf_printf(&b, "%s %s", r->method, r->path) != 0) {
            lg_buf_free(&b);
            conf_oom(ld);
        } else {
            size_t n;
            r->route_key = lg_buf_steal(&b, &n);
        }
        char err[LG_ERR_LEN];
        if (conf->router &&
            lg_router_add(conf->router, r->method, r->path, r, err, sizeof(err)) != 0)
            conf_error(ld, seen_line(seen_get(&route_table, seen, "path"), obj), "%s", err);
    }
    if (r->function)
        route_function(ld, r, seen_get(&route_table, seen, "qualifier"));
    const struct node *auth = seen_get(&route_table, seen, "auth");
    if (r->auth == LG_AUTH_JWT && !ld->jwt_given)
        conf_error(ld, seen_line(auth, obj), "\"auth\" is \"jwt\" but auth.jwt is not configured");
    if (r->auth == LG_AUTH_API_KEY && !ld->api_keys_given)
        conf_error(ld, seen_line(auth, obj),
                   "\"auth\" is \"api_key\" but auth.api_keys is not configured");
    if (r->nscopes > 0 && r->auth != LG_AUTH_JWT)
        conf_error(ld, seen_line(seen_get(&route_table, seen, "scopes"), obj),
                   "\"scopes\" needs \"auth\": \"jwt\" (this route's auth is \"%s\")",
                   auth_names[r->auth]);
}

static void read_routes(struct loader *ld, const struct node *v, void *base,
                        const struct key_spec *spec)
{
    struct lg_conf *conf = base;
    const struct key_spec bounds = {.name = spec->name, .min = 1, .max = 10000};
    if (!check_array(ld, v, &bounds, "route objects"))
        return;
    conf->router = lg_router_new();
    conf->routes = calloc(v->nitems, sizeof(*conf->routes));
    if (conf->router == NULL || conf->routes == NULL) {
        conf_oom(ld);
        return;
    }
    /* The router keeps pointers into this array: it never moves again. */
    conf->nroutes = v->nitems;
    for (size_t i = 0; i < v->nitems; i++) {
        const struct node *item = v->items[i];
        struct lg_conf_route *r = &conf->routes[i];
        r->index = i;
        r->line = item->line;
        if (item->type != NODE_OBJECT) {
            char name[32];
            snprintf(name, sizeof(name), "routes[%zu]", i);
            bad_value(ld, item, name, "an object", 0, NULL);
            continue;
        }
        apply_defaults(ld, &route_table, r);
        r->timeout_ms = conf->lambda.timeout_ms;
        read_object(ld, item, &route_table, r);
    }
}

/* One endpoint for every route when lambda.endpoint is given; else one
 * per distinct route region, in the order routes name them. */
static void build_endpoints(struct loader *ld, struct lg_conf *conf)
{
    if (conf->nroutes == 0)
        return;
    conf->endpoints =
        calloc(conf->lambda.endpoint_set ? 1 : conf->nroutes, sizeof(*conf->endpoints));
    if (conf->endpoints == NULL) {
        conf_oom(ld);
        return;
    }
    if (conf->lambda.endpoint_set) {
        if (endpoint_copy(&conf->endpoints[0], &conf->lambda.endpoint) != 0) {
            conf_oom(ld);
            return;
        }
        conf->nendpoints = 1;
        for (size_t i = 0; i < conf->nroutes; i++)
            conf->routes[i].endpoint = &conf->endpoints[0];
        return;
    }
    for (size_t i = 0; i < conf->nroutes; i++) {
        struct lg_conf_route *r = &conf->routes[i];
        if (r->region == NULL)
            continue;
        for (size_t j = 0; j < i && r->endpoint == NULL; j++)
            if (conf->routes[j].region && strcmp(conf->routes[j].region, r->region) == 0)
                r->endpoint = conf->routes[j].endpoint;
        if (r->endpoint)
            continue;
        struct lg_conf_endpoint *e = &conf->endpoints[conf->nendpoints];
        if (endpoint_for_region(e, r->region) != 0) {
            conf_oom(ld);
            return;
        }
        conf->nendpoints++;
        r->endpoint = e;
    }
}

static void top_post(struct loader *ld, const struct node *obj, void *base,
                     const struct node *const *seen)
{
    struct lg_conf *conf = base;
    if (conf->admin_set) {
        for (size_t i = 0; i < conf->nlisten; i++) {
            if (same_address(&conf->admin, &conf->listen[i].address)) {
                char q[CONF_QUOTE_BUF];
                const struct node *admin = seen_get(&top_table, seen, "admin");
                conf_error(ld, seen_line(member(admin, "address"), obj),
                           "admin address %s is also the address of listen[%zu]",
                           quote_str(q, conf->admin.text), i);
            }
        }
    }
    build_endpoints(ld, conf);
    build_lambda_tls(ld, conf);
    build_auth(ld, conf);
}

/* ------------------------------------------------------------------------
 * Freeing
 * ------------------------------------------------------------------------ */

static void route_free(struct lg_conf_route *r)
{
    free(r->method);
    free(r->path);
    free(r->route_key);
    free(r->function);
    free(r->function_path);
    free(r->invoke_path);
    free(r->invoke_query);
    free(r->qualifier);
    free(r->region);
    free(r->account_id);
    strings_free(r->scopes, r->nscopes);
    if (r->cache) {
        strings_free(r->cache->key_query, r->cache->nkey_query);
        strings_free(r->cache->key_headers, r->cache->nkey_headers);
        free(r->cache);
    }
    if (r->cors) {
        strings_free(r->cors->allow_origins, r->cors->nallow_origins);
        strings_free(r->cors->methods, r->cors->nmethods);
        free(r->cors->allow_methods);
        free(r->cors->allow_headers);
        free(r->cors->expose_headers);
        free(r->cors);
    }
}

/* Free a config in any state of construction (fields are NULL or zero
 * until set). */
static void conf_free(struct lg_conf *c)
{
    if (c == NULL)
        return;
    free(c->path);
    for (size_t i = 0; i < c->nlisten; i++) {
        struct lg_conf_listen *l = &c->listen[i];
        free(l->address.text);
        free(l->certificate);
        free(l->private_key);
        SSL_CTX_free(l->ssl_ctx);
    }
    free(c->listen);
    free(c->admin.text);
    free(c->access_log);

    struct lg_conf_lambda *la = &c->lambda;
    free(la->region);
    endpoint_free(&la->endpoint);
    free(la->access_key_id);
    free(la->secret_access_key);
    free(la->session_token);
    free(la->ca_file);
    SSL_CTX_free(la->ssl_ctx);

    free(c->redis.host);
    free(c->redis.password);
    free(c->redis.prefix);
    free(c->limits.allow);
    free(c->limits.deny);

    if (c->auth.jwt) {
        free(c->auth.jwt->issuer);
        strings_free(c->auth.jwt->audience, c->auth.jwt->naudience);
        free(c->auth.jwt->jwks_file);
        free(c->auth.jwt->jwks_url);
        free(c->auth.jwt->identity_claim);
        free(c->auth.jwt->token_use);
        free(c->auth.jwt->ca_file);
        lg_jwks_unref(c->auth.jwt->keys);
        SSL_CTX_free(c->auth.jwt->ssl_ctx);
        free(c->auth.jwt);
    }
    free(c->auth.api_keys_file);
    free(c->pid_file);
    free(c->user);
    lg_apikeys_free(c->auth.api_keys);

    for (size_t i = 0; i < c->nroutes; i++)
        route_free(&c->routes[i]);
    free(c->routes);
    for (size_t i = 0; i < c->nendpoints; i++)
        endpoint_free(&c->endpoints[i]);
    free(c->endpoints);
    lg_router_free(c->router);
    free(c);
}

/* ------------------------------------------------------------------------
 * Public interface
 * ------------------------------------------------------------------------ */

/* Errors by line (line 0 first), in the order found within a line; a
 * "too many errors" marker stays last. */
static void sort_errors(struct lg_conf_errors *e)
{
    size_t n = e->count > CONF_MAX_ERRORS ? CONF_MAX_ERRORS : e->count;
    for (size_t i = 1; i < n; i++) {
        struct lg_conf_error tmp = e->items[i];
        size_t j = i;
        while (j > 0 && e->items[j - 1].file == NULL && tmp.file == NULL &&
               e->items[j - 1].line > tmp.line) {
            e->items[j] = e->items[j - 1];
            j--;
        }
        e->items[j] = tmp;
    }
}

struct lg_conf *lg_conf_load_text(const char *path, const char *text, size_t len,
                                  struct lg_conf_errors *errors)
{
    struct lg_conf_errors local = {NULL, 0};
    if (errors == NULL)
        errors = &local;
    errors->items = NULL;
    errors->count = 0;
    struct loader ld = {.errors = errors};
    struct lg_conf *conf = NULL;
    struct node *root = NULL;

    const char *slash = path ? strrchr(path, '/') : NULL;
    if (slash) {
        ld.dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        if (ld.dir == NULL) {
            conf_oom(&ld);
            goto out;
        }
    }
    if (len > CONF_MAX_BYTES) {
        conf_error(&ld, 0, "the file is larger than %d bytes", CONF_MAX_BYTES);
        goto out;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line = 1;
        for (const char *c = text; c < nul; c++)
            line += *c == '\n';
        conf_error(&ld, line, "the file contains a NUL byte");
        goto out;
    }
    root = parse_json(&ld, text, len);
    if (root == NULL)
        goto out;
    if (root->type != NODE_OBJECT) {
        char got[CONF_QUOTE_BUF];
        conf_error(&ld, root->line, "the top level must be an object, got %s", describe(root, got));
        goto out;
    }
    conf = calloc(1, sizeof(*conf));
    if (conf == NULL || (conf->path = strdup(path ? path : "")) == NULL) {
        conf_oom(&ld);
        goto out;
    }
    conf->refcount = 1;
    ld.conf = conf;
    apply_defaults(&ld, &top_table, conf);
    read_object(&ld, root, &top_table, conf);

out:
    node_free(root);
    free(ld.dir);
    sort_errors(errors);
    if (ld.failed) {
        conf_free(conf);
        conf = NULL;
    }
    if (errors == &local)
        lg_conf_errors_free(&local);
    return conf;
}

struct lg_conf *lg_conf_load(const char *path, struct lg_conf_errors *errors)
{
    struct lg_conf_errors local;
    if (errors == NULL)
        errors = &local;
    errors->items = NULL;
    errors->count = 0;
    struct loader ld = {.errors = errors};

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        conf_error(&ld, 0, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        conf_error(&ld, 0, "not a regular file");
        close(fd);
        goto fail;
    }
    if (st.st_size > CONF_MAX_BYTES) {
        conf_error(&ld, 0, "the file is larger than %d bytes", CONF_MAX_BYTES);
        close(fd);
        goto fail;
    }
    /* Read up to one byte past the limit: the file may grow meanwhile. */
    char *text = malloc(CONF_MAX_BYTES + 1);
    if (text == NULL) {
        conf_oom(&ld);
        close(fd);
        goto fail;
    }
    size_t len = 0;
    while (len < CONF_MAX_BYTES + 1) {
        ssize_t n = read(fd, text + len, CONF_MAX_BYTES + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            conf_error(&ld, 0, "cannot read: %s", strerror(errno));
            free(text);
            close(fd);
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    /* conf->path is absolute: a reload after -D (which moves to "/") must
     * still find the file. */
    char *abs = realpath(path, NULL);
    struct lg_conf *conf = lg_conf_load_text(abs ? abs : path, text, len, errors);
    free(abs);
    free(text);
    if (errors == &local)
        lg_conf_errors_free(&local);
    return conf;

fail:
    if (errors == &local)
        lg_conf_errors_free(&local);
    return NULL;
}

void lg_conf_errors_print(const struct lg_conf_errors *errors, const char *path, void *fp)
{
    FILE *out = fp;
    for (size_t i = 0; i < errors->count; i++) {
        const struct lg_conf_error *e = &errors->items[i];
        const char *file = e->file ? e->file : path;
        if (e->line > 0)
            fprintf(out, "%s:%d: %s\n", file, e->line, e->message);
        else
            fprintf(out, "%s: %s\n", file, e->message);
    }
}

void lg_conf_errors_free(struct lg_conf_errors *errors)
{
    if (errors == NULL)
        return;
    for (size_t i = 0; i < errors->count; i++)
        free(errors->items[i].file);
    free(errors->items);
    errors->items = NULL;
    errors->count = 0;
}

struct lg_conf *lg_conf_ref(struct lg_conf *conf)
{
    __atomic_add_fetch(&conf->refcount, 1, __ATOMIC_RELAXED);
    return conf;
}

void lg_conf_unref(struct lg_conf *conf)
{
    /* Release: every use by this thread happens before the free by the
     * thread that drops the last reference (acquire). */
    if (conf && __atomic_sub_fetch(&conf->refcount, 1, __ATOMIC_ACQ_REL) == 0)
        conf_free(conf);
}

/* Decimal port 1..65535: digits only, at most 5 of them. */
static int parse_port(const char *s, uint16_t *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int lg_conf_parse_address(const char *text, struct lg_conf_address *addr, char *err, size_t errlen)
{
    memset(addr, 0, sizeof(*addr));
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_text;
    bool v6 = text[0] == '[';
    if (v6) {
        const char *close = strchr(text, ']');
        if (close == NULL) {
            snprintf(err, errlen, "no \"]\" after the IPv6 address");
            return -1;
        }
        size_t n = (size_t)(close - text - 1);
        if (n == 0 || n >= sizeof(host)) {
            snprintf(err, errlen, "not an IPv6 address");
            return -1;
        }
        memcpy(host, text + 1, n);
        host[n] = '\0';
        if (close[1] != ':') {
            snprintf(err, errlen, "no \":port\" after the address");
            return -1;
        }
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "no \":port\" after the address");
            return -1;
        }
        size_t n = (size_t)(colon - text);
        if (memchr(text, ':', n) != NULL) {
            snprintf(err, errlen, "an IPv6 address goes in brackets, as \"[::1]:8080\"");
            return -1;
        }
        if (n == 0 || n >= sizeof(host)) {
            snprintf(err, errlen, "not a numeric IPv4 address");
            return -1;
        }
        memcpy(host, text, n);
        host[n] = '\0';
        port_text = colon + 1;
    }
    uint16_t port;
    if (parse_port(port_text, &port) != 0) {
        snprintf(err, errlen, "the port must be a number from 1 to 65535");
        return -1;
    }
    if (v6) {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1) {
            snprintf(err, errlen, "not an IPv6 address");
            return -1;
        }
        memcpy(&addr->sa, &sin6, sizeof(sin6));
        addr->salen = sizeof(sin6);
    } else {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
            snprintf(err, errlen, "not a numeric IPv4 address (host names are not accepted)");
            return -1;
        }
        memcpy(&addr->sa, &sin, sizeof(sin));
        addr->salen = sizeof(sin);
    }
    addr->text = strdup(text);
    if (addr->text == NULL) {
        snprintf(err, errlen, "out of memory");
        memset(addr, 0, sizeof(*addr));
        return -1;
    }
    return 0;
}

/* True when the first bits bits of a and b are equal. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return false;
    int rest = bits % 8;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* Host bits must be clear: "10.1.2.3/8" is refused rather than silently
 * widened to 10.0.0.0/8, since it usually means a typo in the prefix
 * length (or a host meant as /32). The message names the network. */
int lg_conf_parse_cidr(const char *text, struct lg_conf_cidr *cidr, char *err, size_t errlen)
{
    memset(cidr, 0, sizeof(*cidr));
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    char host[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(host)) {
        snprintf(err, errlen, "not an IPv4 or IPv6 address");
        return -1;
    }
    memcpy(host, text, n);
    host[n] = '\0';
    int max;
    if (inet_pton(AF_INET, host, cidr->addr) == 1) {
        cidr->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, cidr->addr) == 1) {
        cidr->family = AF_INET6;
        max = 128;
    } else {
        snprintf(err, errlen, "not an IPv4 or IPv6 address");
        return -1;
    }
    cidr->prefix = max;
    if (slash) {
        const char *p = slash + 1;
        size_t len = strlen(p);
        int v = 0;
        bool ok = len >= 1 && len <= 3 && !(len > 1 && p[0] == '0');
        for (size_t i = 0; ok && i < len; i++) {
            ok = is_digit(p[i]);
            v = v * 10 + (p[i] - '0');
        }
        if (!ok || v > max) {
            snprintf(err, errlen, "the prefix length must be a number from 0 to %d", max);
            return -1;
        }
        cidr->prefix = v;
    }
    uint8_t net[16] = {0};
    int bytes = max / 8;
    memcpy(net, cidr->addr, (size_t)bytes);
    for (int i = cidr->prefix; i < max; i++)
        net[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
    if (memcmp(net, cidr->addr, (size_t)bytes) != 0) {
        char shown[INET6_ADDRSTRLEN];
        inet_ntop(cidr->family, net, shown, sizeof(shown));
        snprintf(err, errlen, "host bits are set; the network is \"%s/%d\"", shown, cidr->prefix);
        memset(cidr, 0, sizeof(*cidr));
        return -1;
    }
    return 0;
}

bool lg_conf_cidr_contains(const struct lg_conf_cidr *cidr, const struct sockaddr *sa)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (cidr == NULL || sa == NULL)
        return false;
    uint8_t addr[16];
    int family;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof(sin));
        memcpy(addr, &sin.sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof(sin6));
        memcpy(addr, &sin6.sin6_addr, 16);
        family = AF_INET6;
    } else {
        return false;
    }
    /* A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; they
     * match IPv4 networks, and IPv4 addresses match ::ffff:0:0/96 ones. */
    if (cidr->family == AF_INET && family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        family = AF_INET;
    } else if (cidr->family == AF_INET6 && family == AF_INET) {
        memmove(addr + 12, addr, 4);
        memcpy(addr, v4mapped, 12);
        family = AF_INET6;
    }
    if (family != cidr->family)
        return false;
    return prefix_equal(addr, cidr->addr, cidr->prefix);
}
