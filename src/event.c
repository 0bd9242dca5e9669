/* event.c - API Gateway proxy events (payload 1.0 and 2.0) and proxy responses. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <yajl/yajl_parse.h>

#include "lambdagate/codec.h"
#include "lambdagate/event.h"
#include "lambdagate/json.h"

/* A function's answer with more headers than this (headers, every
 * multiValueHeaders value and every cookie together) is malformed: no
 * client needs more, and it bounds the work done on a hostile answer. */
#define EVENT_MAX_RESPONSE_HEADERS 1024
/* Bytes of the header block we send for a function (names, values, ": "
 * and line ends): past it the answer is malformed (502), as nginx's "upstream
 * sent too big header"; it also keeps every line under what clients accept. */
#define EVENT_MAX_RESPONSE_HEADER_BYTES 65536

/* API Gateway's apiId stands for the API; we are one. */
#define EVENT_API_ID "lambdagate"

static void set_err(char *err, size_t errlen, const char *fmt, ...) LG_PRINTF(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

/* Compare two byte strings, ASCII case folded or not; shorter sorts first
 * on a common prefix. */
static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen, bool fold)
{
    size_t n = alen < blen ? alen : blen;
    if (fold) {
        int c = strncasecmp(a, b, n);
        if (c != 0)
            return c;
    } else if (n > 0) {
        int c = memcmp(a, b, n);
        if (c != 0)
            return c;
    }
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Grouping of repeated names (headers case-insensitively, query parameters
 * exactly) in O(n log n): items are sorted by name then by position, so
 * each name's items are contiguous and in arrival order; groups are then
 * sorted by their first arrival, which is the order the event lists them. */
struct item {
    const char *key;
    size_t key_len;
    size_t pos; /* index in the source list */
};

struct group {
    size_t start; /* first item of the group in the sorted items */
    size_t count;
    size_t first_pos;
};

static int item_cmp_fold(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = bytes_cmp(a->key, a->key_len, b->key, b->key_len, true);
    return c ? c : (a->pos < b->pos ? -1 : a->pos > b->pos);
}

static int item_cmp_exact(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = bytes_cmp(a->key, a->key_len, b->key, b->key_len, false);
    return c ? c : (a->pos < b->pos ? -1 : a->pos > b->pos);
}

static int group_cmp(const void *pa, const void *pb)
{
    const struct group *a = pa, *b = pb;
    return a->first_pos < b->first_pos ? -1 : a->first_pos > b->first_pos;
}

/* Sort items[0..n) and fill groups (room for n); returns the group count. */
static size_t group_items(struct item *items, size_t n, bool fold, struct group *groups)
{
    if (n == 0)
        return 0;
    qsort(items, n, sizeof(*items), fold ? item_cmp_fold : item_cmp_exact);
    size_t ng = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || bytes_cmp(items[i - 1].key, items[i - 1].key_len, items[i].key,
                                items[i].key_len, fold) != 0) {
            groups[ng].start = i;
            groups[ng].count = 0;
            groups[ng].first_pos = items[i].pos;
            ng++;
        }
        groups[ng - 1].count++;
    }
    qsort(groups, ng, sizeof(*groups), group_cmp);
    return ng;
}

/* ------------------------------------------------------------------ */
/* Content types and time                                              */
/* ------------------------------------------------------------------ */

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ows((*s)[*n - 1]))
        (*n)--;
}

static bool ends_with_fold(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && strncasecmp(s + n - k, suffix, k) == 0;
}

bool lg_event_is_text_type(const char *content_type, size_t len)
{
    if (content_type == NULL)
        return false;
    /* Only the media type counts: parameters (charset, boundary) follow ';'. */
    const char *semi = memchr(content_type, ';', len);
    const char *s = content_type;
    size_t n = semi ? (size_t)(semi - content_type) : len;
    trim(&s, &n);
    const char *slash = memchr(s, '/', n);
    if (slash == NULL)
        return false;
    size_t type_len = (size_t)(slash - s);
    const char *sub = slash + 1;
    size_t sub_len = n - type_len - 1;
    if (!lg_http_is_token(s, type_len) || !lg_http_is_token(sub, sub_len))
        return false;
    if (lg_http_ieq(s, type_len, "text"))
        return true;
    if (!lg_http_ieq(s, type_len, "application"))
        return false;
    return lg_http_ieq(sub, sub_len, "json") || lg_http_ieq(sub, sub_len, "xml") ||
           lg_http_ieq(sub, sub_len, "javascript") ||
           lg_http_ieq(sub, sub_len, "x-www-form-urlencoded") ||
           ends_with_fold(sub, sub_len, "+json") || ends_with_fold(sub, sub_len, "+xml");
}

void lg_event_format_time(int64_t time_ms, char out[32])
{
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    /* Floor division, so a time before the epoch still names its second. */
    int64_t secs = time_ms / 1000 - (time_ms % 1000 < 0 ? 1 : 0);
    /* Every request formats the current second: remember the last one. */
    static _Thread_local int64_t cached_secs = INT64_MIN;
    static _Thread_local char cached[32];
    if (secs == cached_secs) {
        memcpy(out, cached, 32);
        return;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_mday = 1;
        tm.tm_year = 70;
    }
    /* The remainders only tell the compiler the fields' widths. */
    snprintf(out, 32, "%02u/%.3s/%04u:%02u:%02u:%02u +0000", (unsigned)tm.tm_mday % 100u,
             months[(unsigned)tm.tm_mon % 12u], (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u);
    memcpy(cached, out, 32);
    cached_secs = secs;
}

/* ------------------------------------------------------------------ */
/* Building events                                                     */
/* ------------------------------------------------------------------ */

/* What becomes of each request header in the event. */
enum header_class {
    HC_DROP = 0, /* hop-by-hop, or an x-forwarded-proto/-port we replace */
    HC_REGULAR,
    HC_COOKIE, /* format 2.0: goes to "cookies" */
    HC_XFF,    /* the client's X-Forwarded-For: ours extends it */
};

/* A decoded query parameter; offsets into build.qtext, which may move
 * while it grows. */
struct qpair {
    size_t name_off, name_len;
    size_t value_off, value_len;
};

/* Requests with up to this many headers need no allocation to sort them. */
#define LOCAL_HEADERS 32
/* ... and with up to this many query parameters, to group those. */
#define LOCAL_PARAMS 16

struct build {
    const struct lg_event_request *in;
    struct lg_json_writer *g;
    char *err;
    size_t errlen;

    unsigned char *hclass; /* per request header */
    struct item *hitems;   /* regular headers, grouped by name */
    struct group *hgroups; /* in order of first arrival */
    size_t nhgroups;
    struct lg_http_header *conn; /* the Connection headers, for hop-by-hop checks */
    size_t nconn;
    bool has_xff;
    const struct lg_http_header *host;
    const struct lg_http_header *content_type;
    const struct group *user_agent; /* NULL when absent */

    struct lg_buf qtext; /* decoded names and values */
    struct qpair *qpairs;
    struct item *qitems;
    struct group *qgroups;
    size_t nqgroups;

    struct lg_buf scratch; /* joined values, lowercased names, base64 */

    /* Storage for the header arrays of requests with few headers. */
    struct {
        unsigned char hclass[LOCAL_HEADERS];
        struct item hitems[LOCAL_HEADERS];
        struct group hgroups[LOCAL_HEADERS];
        struct lg_http_header conn[LOCAL_HEADERS];
        struct qpair qpairs[LOCAL_PARAMS];
        struct item qitems[LOCAL_PARAMS];
        struct group qgroups[LOCAL_PARAMS];
        char qtext[512];
        char scratch[512];
    } local;
};

#define GEN(expr)                                                                                  \
    do {                                                                                           \
        if ((expr) != 0)                                                                           \
            return -1;                                                                             \
    } while (0)

/* Member names are our own literals: written without scanning them. */
static inline int gen_key(struct lg_json_writer *g, const char *key)
{
    return lg_json_gen_plain(g, key, strlen(key));
}

static int gen_open_map(struct lg_json_writer *g)
{
    return lg_json_gen_map_open(g);
}

static int gen_close_map(struct lg_json_writer *g)
{
    return lg_json_gen_map_close(g);
}

static int gen_open_array(struct lg_json_writer *g)
{
    return lg_json_gen_array_open(g);
}

static int gen_close_array(struct lg_json_writer *g)
{
    return lg_json_gen_array_close(g);
}

/* Sort the request headers into classes and group the regular ones. The
 * Connection headers are gathered first so that each hop-by-hop check
 * looks at those few, not at every header again. */
static int classify_headers(struct build *b)
{
    const struct lg_event_request *in = b->in;
    size_t n = in->nheaders;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / 64) {
        set_err(b->err, b->errlen, "too many headers");
        return -1;
    }
    if (n <= LOCAL_HEADERS) {
        /* The usual request: the build's own storage, no allocation. */
        memset(b->local.hclass, 0, n);
        b->hclass = b->local.hclass;
        b->hitems = b->local.hitems;
        b->hgroups = b->local.hgroups;
        b->conn = b->local.conn;
    } else {
        b->hclass = calloc(n, 1);
        b->hitems = malloc(n * sizeof(*b->hitems));
        b->hgroups = malloc(n * sizeof(*b->hgroups));
        b->conn = malloc(n * sizeof(*b->conn));
    }
    if (!b->hclass || !b->hitems || !b->hgroups || !b->conn) {
        set_err(b->err, b->errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct lg_http_header *h = &in->headers[i];
        if (!lg_codec_utf8_valid(h->name, h->name_len) ||
            !lg_codec_utf8_valid(h->value, h->value_len)) {
            set_err(b->err, b->errlen, "header %zu is not valid UTF-8", i + 1);
            return -1;
        }
        if (lg_http_ieq(h->name, h->name_len, "connection"))
            b->conn[b->nconn++] = *h;
    }
    bool v2 = in->route->payload_format == LG_PAYLOAD_V2;
    size_t nitems = 0;
    for (size_t i = 0; i < n; i++) {
        const struct lg_http_header *h = &in->headers[i];
        unsigned char c = HC_REGULAR;
        if (lg_http_is_hop_by_hop(h->name, h->name_len, b->conn, b->nconn) ||
            lg_http_ieq(h->name, h->name_len, "x-forwarded-proto") ||
            lg_http_ieq(h->name, h->name_len, "x-forwarded-port")) {
            c = HC_DROP;
        } else if (lg_http_ieq(h->name, h->name_len, "x-forwarded-for")) {
            c = HC_XFF;
            b->has_xff = true;
        } else if (v2 && lg_http_ieq(h->name, h->name_len, "cookie")) {
            c = HC_COOKIE;
        } else {
            if (b->host == NULL && lg_http_ieq(h->name, h->name_len, "host"))
                b->host = h;
            if (b->content_type == NULL && lg_http_ieq(h->name, h->name_len, "content-type"))
                b->content_type = h;
            b->hitems[nitems].key = h->name;
            b->hitems[nitems].key_len = h->name_len;
            b->hitems[nitems].pos = i;
            nitems++;
        }
        b->hclass[i] = c;
    }
    b->nhgroups = group_items(b->hitems, nitems, true, b->hgroups);
    for (size_t k = 0; k < b->nhgroups; k++) {
        const struct item *it = &b->hitems[b->hgroups[k].start];
        if (lg_http_ieq(it->key, it->key_len, "user-agent")) {
            b->user_agent = &b->hgroups[k];
            break;
        }
    }
    return 0;
}

/* Percent-decode one name or value with '+' as space, as API Gateway does
 * (aws-cdk issue 19827); a '%' without two hex digits stays as sent. The
 * result must be valid UTF-8 without NUL, since it goes into a JSON
 * string a handler will read as text. */
static int query_decode(struct build *b, const char *s, size_t n, size_t *off, size_t *len)
{
    struct lg_buf *t = &b->qtext;
    *off = t->len;
    if (lg_buf_reserve(t, n) != 0) {
        set_err(b->err, b->errlen, "out of memory");
        return -1;
    }
    char *o = t->data + t->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && n - i >= 3) {
            int hi = lg_codec_hex_value((unsigned char)s[i + 1]),
                lo = lg_codec_hex_value((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (unsigned char)(hi << 4 | lo);
                i += 2;
            }
        } else if (c == '+') {
            c = ' ';
        }
        *o++ = (char)c;
    }
    *len = (size_t)(o - (t->data + t->len));
    if (!lg_codec_utf8_valid(t->data + t->len, *len)) {
        set_err(b->err, b->errlen, "query parameter is not valid UTF-8 once decoded");
        return -1;
    }
    t->len += *len;
    t->data[t->len] = '\0';
    return 0;
}

/* Split the raw query on '&' into decoded pairs and group them by name.
 * "c" alone is c="" (API Gateway's "c": ""); pairs with an empty name
 * ("&&", "=x") carry nothing a handler could look up and are left out. */
static int parse_query(struct build *b)
{
    const char *q = b->in->raw_query;
    size_t n = q ? b->in->raw_query_len : 0;
    if (n == 0)
        return 0;
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += q[i] == '&';
    if (cap <= LOCAL_PARAMS) {
        b->qpairs = b->local.qpairs;
        b->qitems = b->local.qitems;
        b->qgroups = b->local.qgroups;
    } else {
        b->qpairs = malloc(cap * sizeof(*b->qpairs));
        b->qitems = malloc(cap * sizeof(*b->qitems));
        b->qgroups = malloc(cap * sizeof(*b->qgroups));
    }
    if (!b->qpairs || !b->qitems || !b->qgroups) {
        set_err(b->err, b->errlen, "out of memory");
        return -1;
    }
    size_t np = 0;
    size_t pos = 0;
    while (pos <= n) {
        const char *amp = memchr(q + pos, '&', n - pos);
        size_t end = amp ? (size_t)(amp - q) : n;
        const char *pair = q + pos;
        size_t pair_len = end - pos;
        const char *eq = memchr(pair, '=', pair_len);
        size_t name_len = eq ? (size_t)(eq - pair) : pair_len;
        if (name_len > 0) {
            struct qpair *p = &b->qpairs[np];
            if (query_decode(b, pair, name_len, &p->name_off, &p->name_len) != 0)
                return -1;
            const char *value = eq ? eq + 1 : pair + pair_len;
            size_t value_len = eq ? pair_len - name_len - 1 : 0;
            if (query_decode(b, value, value_len, &p->value_off, &p->value_len) != 0)
                return -1;
            np++;
        }
        if (amp == NULL)
            break;
        pos = end + 1;
    }
    /* qtext has stopped growing: its addresses are now stable. */
    for (size_t i = 0; i < np; i++) {
        b->qitems[i].key = b->qtext.data + b->qpairs[i].name_off;
        b->qitems[i].key_len = b->qpairs[i].name_len;
        b->qitems[i].pos = i;
    }
    b->nqgroups = group_items(b->qitems, np, false, b->qgroups);
    return 0;
}

static const char *qvalue(const struct build *b, const struct item *it, size_t *len)
{
    const struct qpair *p = &b->qpairs[it->pos];
    *len = p->value_len;
    return b->qtext.data + p->value_off;
}

/* The value of a grouped item: a decoded query value, or a request
 * header's value. */
static const char *item_value(const struct build *b, const struct item *it, bool query, size_t *len)
{
    if (query)
        return qvalue(b, it, len);
    *len = b->in->headers[it->pos].value_len;
    return b->in->headers[it->pos].value;
}

/* Append a group's values to scratch, joined with sep. */
static int join_group(struct build *b, const struct item *items, const struct group *gr,
                      const char *sep, bool query)
{
    lg_buf_reset(&b->scratch);
    for (size_t k = 0; k < gr->count; k++) {
        size_t len;
        const char *v = item_value(b, &items[gr->start + k], query, &len);
        if ((k > 0 && lg_buf_puts(&b->scratch, sep) != 0) || lg_buf_append(&b->scratch, v, len))
            return -1;
    }
    return 0;
}

/* The value a group stands for: format 2.0 joins repeats with ",", format
 * 1.0's single-value map keeps the last (API Gateway's documented shapes).
 * Borrowed until scratch changes. */
static int group_value(struct build *b, const struct item *items, const struct group *gr,
                       bool query, bool v2, const char **v, size_t *len)
{
    if (gr->count == 1 || !v2) {
        *v = item_value(b, &items[gr->start + gr->count - 1], query, len);
        return 0;
    }
    if (join_group(b, items, gr, ",", query) != 0)
        return -1;
    *v = b->scratch.data;
    *len = b->scratch.len;
    return 0;
}

/* x-forwarded-for as a proxy extends it: the client's list, then the peer. */
static int gen_xff_value(struct build *b)
{
    const struct lg_event_request *in = b->in;
    lg_buf_reset(&b->scratch);
    for (size_t i = 0; i < in->nheaders; i++) {
        if (b->hclass[i] != HC_XFF)
            continue;
        if ((b->scratch.len > 0 && lg_buf_puts(&b->scratch, ", ") != 0) ||
            lg_buf_append(&b->scratch, in->headers[i].value, in->headers[i].value_len) != 0)
            return -1;
    }
    if (in->source_ip && in->source_ip[0]) {
        if ((b->scratch.len > 0 && lg_buf_puts(&b->scratch, ", ") != 0) ||
            lg_buf_puts(&b->scratch, in->source_ip) != 0)
            return -1;
    }
    return lg_json_gen_str(b->g, b->scratch.data ? b->scratch.data : "", b->scratch.len);
}

/* The three headers API Gateway adds, under the names it uses: lowercase
 * in 2.0, "X-Forwarded-For" etc. in 1.0 (aws-lambda-go's apigw-request.json).
 * In the multi-value map each is one value, as API Gateway sends them. */
static int gen_forwarded(struct build *b, bool v2, bool multi)
{
    struct lg_json_writer *g = b->g;
    const struct lg_event_request *in = b->in;
    if (b->has_xff || (in->source_ip && in->source_ip[0])) {
        GEN(gen_key(g, v2 ? "x-forwarded-for" : "X-Forwarded-For"));
        if (multi)
            GEN(gen_open_array(g));
        GEN(gen_xff_value(b));
        if (multi)
            GEN(gen_close_array(g));
    }
    if (in->server_port > 0) {
        char port[16], *p = port + sizeof(port);
        unsigned v = in->server_port;
        *--p = '\0';
        do {
            *--p = (char)('0' + v % 10);
            v /= 10;
        } while (v > 0);
        GEN(gen_key(g, v2 ? "x-forwarded-port" : "X-Forwarded-Port"));
        if (multi)
            GEN(gen_open_array(g));
        GEN(lg_json_gen_cstr(g, p));
        if (multi)
            GEN(gen_close_array(g));
    }
    if (in->scheme && in->scheme[0]) {
        GEN(gen_key(g, v2 ? "x-forwarded-proto" : "X-Forwarded-Proto"));
        if (multi)
            GEN(gen_open_array(g));
        GEN(lg_json_gen_cstr(g, in->scheme));
        if (multi)
            GEN(gen_close_array(g));
    }
    return 0;
}

/* 2.0 "headers": names lowercased ("Header names are lowercased"),
 * repeats joined with commas. Always an object. */
static int gen_headers_v2(struct build *b)
{
    struct lg_json_writer *g = b->g;
    GEN(gen_open_map(g));
    for (size_t k = 0; k < b->nhgroups; k++) {
        const struct group *gr = &b->hgroups[k];
        const struct item *first = &b->hitems[gr->start];
        lg_buf_reset(&b->scratch);
        if (lg_buf_append(&b->scratch, first->key, first->key_len) != 0)
            return -1;
        for (size_t i = 0; i < b->scratch.len; i++) {
            char c = b->scratch.data[i];
            if (c >= 'A' && c <= 'Z')
                b->scratch.data[i] = (char)(c - 'A' + 'a');
        }
        GEN(lg_json_gen_str(g, b->scratch.data, b->scratch.len));
        const char *v;
        size_t len;
        GEN(group_value(b, b->hitems, gr, false, true, &v, &len));
        GEN(lg_json_gen_str(g, v, len));
    }
    GEN(gen_forwarded(b, true, false));
    return gen_close_map(g);
}

/* The members of a map of grouped names, each spelled as it first
 * arrived: with multi, every value in an array (1.0's multi-value maps);
 * else one value, joined with "," (v2) or the last (1.0). */
static int gen_group_members(struct build *b, const struct item *items, const struct group *groups,
                             size_t ngroups, bool query, bool v2, bool multi)
{
    struct lg_json_writer *g = b->g;
    for (size_t k = 0; k < ngroups; k++) {
        const struct group *gr = &groups[k];
        const struct item *first = &items[gr->start];
        GEN(lg_json_gen_str(g, first->key, first->key_len));
        size_t len;
        const char *v;
        if (multi) {
            GEN(gen_open_array(g));
            for (size_t i = 0; i < gr->count; i++) {
                v = item_value(b, &items[gr->start + i], query, &len);
                GEN(lg_json_gen_str(g, v, len));
            }
            GEN(gen_close_array(g));
        } else {
            GEN(group_value(b, items, gr, query, v2, &v, &len));
            GEN(lg_json_gen_str(g, v, len));
        }
    }
    return 0;
}

/* 1.0 "headers" (last value) or "multiValueHeaders" (all). */
static int gen_headers_v1(struct build *b, bool multi)
{
    struct lg_json_writer *g = b->g;
    GEN(gen_open_map(g));
    GEN(gen_group_members(b, b->hitems, b->hgroups, b->nhgroups, false, false, multi));
    GEN(gen_forwarded(b, false, multi));
    return gen_close_map(g);
}

/* 2.0 "cookies": every Cookie header split on ';' and trimmed; left out
 * when there is none, as in AWS's captures. */
static int gen_cookies(struct build *b)
{
    struct lg_json_writer *g = b->g;
    bool opened = false;
    for (size_t i = 0; i < b->in->nheaders; i++) {
        if (b->hclass[i] != HC_COOKIE)
            continue;
        const char *s = b->in->headers[i].value;
        size_t n = b->in->headers[i].value_len;
        while (n > 0) {
            const char *semi = memchr(s, ';', n);
            size_t len = semi ? (size_t)(semi - s) : n;
            const char *c = s;
            size_t clen = len;
            trim(&c, &clen);
            if (clen > 0) {
                if (!opened) {
                    GEN(gen_key(g, "cookies"));
                    GEN(gen_open_array(g));
                    opened = true;
                }
                GEN(lg_json_gen_str(g, c, clen));
            }
            if (semi == NULL)
                break;
            s += len + 1;
            n -= len + 1;
        }
    }
    return opened ? gen_close_array(g) : 0;
}

/* "queryStringParameters" (2.0: repeats joined with ","; 1.0: the last) or
 * 1.0's "multiValueQueryStringParameters"; the caller handles absence. */
static int gen_query(struct build *b, bool v2, bool multi)
{
    struct lg_json_writer *g = b->g;
    GEN(gen_open_map(g));
    GEN(gen_group_members(b, b->qitems, b->qgroups, b->nqgroups, true, v2, multi));
    return gen_close_map(g);
}

static int gen_path_params(struct build *b)
{
    const struct lg_router_match *m = b->in->match;
    GEN(gen_open_map(b->g));
    for (size_t i = 0; i < m->nparams; i++) {
        GEN(lg_json_gen_cstr(b->g, m->params[i].name));
        GEN(lg_json_gen_str(b->g, m->params[i].value ? m->params[i].value : "",
                            m->params[i].value ? m->params[i].value_len : 0));
    }
    return gen_close_map(b->g);
}

static bool has_path_params(const struct build *b)
{
    return b->in->match != NULL && b->in->match->nparams > 0;
}

/* JWT claims and scopes: {"claims":{...},"scopes":[...]|null}. */
static int gen_jwt_object(struct lg_json_writer *g, const struct lg_event_identity *id)
{
    GEN(gen_open_map(g));
    GEN(gen_key(g, "claims"));
    GEN(gen_open_map(g));
    /* Claim names come from the token: escaped like any other text. */
    for (size_t i = 0; i < id->nclaims; i++) {
        GEN(lg_json_gen_cstr(g, id->claims[i].name));
        GEN(lg_json_gen_cstr(g, id->claims[i].value ? id->claims[i].value : ""));
    }
    GEN(gen_close_map(g));
    GEN(gen_key(g, "scopes"));
    if (id->scopes == NULL) {
        GEN(lg_json_gen_null(g));
    } else {
        GEN(gen_open_array(g));
        for (size_t i = 0; i < id->nscopes; i++)
            GEN(lg_json_gen_cstr(g, id->scopes[i] ? id->scopes[i] : ""));
        GEN(gen_close_array(g));
    }
    return gen_close_map(g);
}

static int gen_jwt(struct build *b)
{
    const struct lg_event_identity *id = b->in->identity;
    /* A repeat caller's claims were rendered when its token was verified. */
    if (id->jwt_json)
        return lg_json_gen_value_raw(b->g, id->jwt_json, id->jwt_json_len);
    return gen_jwt_object(b->g, id);
}

int lg_event_render_jwt(const struct lg_event_identity *id, struct lg_buf *out)
{
    struct lg_json_writer g;
    lg_json_writer_init(&g, out);
    return gen_jwt_object(&g, id);
}

/* domainName is the Host without its port ("localhost" without a Host, as
 * a local endpoint is); domainPrefix its first label ("id" of
 * "id.execute-api..."). An IPv6 literal is one label. */
static void domain_of(const struct build *b, const char **name, size_t *name_len,
                      size_t *prefix_len)
{
    const char *h = b->host ? b->host->value : NULL;
    size_t n = b->host ? b->host->value_len : 0;
    if (h != NULL && n > 0 && h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close != NULL)
            n = (size_t)(close - h) + 1;
        *name = h;
        *name_len = n;
        *prefix_len = n;
        return;
    }
    if (h != NULL) {
        const char *colon = memchr(h, ':', n);
        if (colon != NULL)
            n = (size_t)(colon - h);
    }
    if (h == NULL || n == 0) {
        h = "localhost";
        n = strlen(h);
    }
    const char *dot = memchr(h, '.', n);
    *name = h;
    *name_len = n;
    *prefix_len = dot ? (size_t)(dot - h) : n;
}

/* The body as text or base64, and whether it is base64. */
static int gen_body(struct build *b, bool *base64)
{
    const struct lg_event_request *in = b->in;
    const struct lg_http_header *ct = b->content_type;
    *base64 = !(ct != NULL && lg_event_is_text_type(ct->value, ct->value_len) &&
                lg_codec_utf8_valid(in->body, in->body_len));
    if (!*base64)
        return lg_json_gen_str(b->g, in->body, in->body_len);
    lg_buf_reset(&b->scratch);
    if (lg_codec_base64_encode(&b->scratch, in->body, in->body_len) != 0)
        return -1;
    return lg_json_gen_str(b->g, b->scratch.data, b->scratch.len);
}

/* requestContext's domainName and domainPrefix (both formats). */
static int gen_domain(struct build *b)
{
    struct lg_json_writer *g = b->g;
    const char *domain;
    size_t domain_len, prefix_len;
    domain_of(b, &domain, &domain_len, &prefix_len);
    GEN(gen_key(g, "domainName"));
    GEN(lg_json_gen_str(g, domain, domain_len));
    GEN(gen_key(g, "domainPrefix"));
    return lg_json_gen_str(g, domain, prefix_len);
}

static const char *route_key(const struct lg_event_request *in)
{
    return in->route->route_key ? in->route->route_key : "$default";
}

/* Lambda function URLs say "anonymous" where no account is known. */
static const char *account_id(const struct lg_event_request *in)
{
    return in->route->account_id ? in->route->account_id : "anonymous";
}

static int gen_v2(struct build *b)
{
    struct lg_json_writer *g = b->g;
    const struct lg_event_request *in = b->in;
    char when[32];
    lg_event_format_time(in->time_ms, when);

    GEN(gen_open_map(g));
    GEN(lg_json_gen_kv(g, "version", "2.0"));
    GEN(lg_json_gen_kv(g, "routeKey", route_key(in)));
    GEN(gen_key(g, "rawPath"));
    GEN(lg_json_gen_str(g, in->raw_path ? in->raw_path : "", in->raw_path ? in->raw_path_len : 0));
    GEN(gen_key(g, "rawQueryString"));
    GEN(lg_json_gen_str(g, in->raw_query ? in->raw_query : "",
                        in->raw_query ? in->raw_query_len : 0));
    GEN(gen_cookies(b));
    GEN(gen_key(g, "headers"));
    GEN(gen_headers_v2(b));
    if (b->nqgroups > 0) {
        GEN(gen_key(g, "queryStringParameters"));
        GEN(gen_query(b, true, false));
    }

    GEN(gen_key(g, "requestContext"));
    GEN(gen_open_map(g));
    GEN(lg_json_gen_kv(g, "accountId", account_id(in)));
    GEN(lg_json_gen_kv(g, "apiId", EVENT_API_ID));
    if (in->identity != NULL && in->identity->kind == LG_IDENTITY_JWT) {
        GEN(gen_key(g, "authorizer"));
        GEN(gen_open_map(g));
        GEN(gen_key(g, "jwt"));
        GEN(gen_jwt(b));
        GEN(gen_close_map(g));
    } else if (in->identity != NULL && in->identity->kind == LG_IDENTITY_API_KEY) {
        /* HTTP APIs have no API keys; a Lambda authorizer's context is
         * where an HTTP API handler finds such facts (CONTRACT section 4). */
        GEN(gen_key(g, "authorizer"));
        GEN(gen_open_map(g));
        GEN(gen_key(g, "lambda"));
        GEN(gen_open_map(g));
        GEN(lg_json_gen_kv(g, "apiKeyId", in->identity->api_key_id));
        GEN(gen_close_map(g));
        GEN(gen_close_map(g));
    }
    GEN(gen_domain(b));
    GEN(gen_key(g, "http"));
    GEN(gen_open_map(g));
    GEN(gen_key(g, "method"));
    GEN(lg_json_gen_str(g, in->method, in->method_len));
    GEN(gen_key(g, "path"));
    GEN(lg_json_gen_str(g, in->raw_path ? in->raw_path : "", in->raw_path ? in->raw_path_len : 0));
    GEN(lg_json_gen_kv(g, "protocol", in->protocol ? in->protocol : "HTTP/1.1"));
    GEN(lg_json_gen_kv(g, "sourceIp", in->source_ip ? in->source_ip : ""));
    GEN(gen_key(g, "userAgent"));
    if (b->user_agent != NULL) {
        const char *v;
        size_t len;
        GEN(group_value(b, b->hitems, b->user_agent, false, true, &v, &len));
        GEN(lg_json_gen_str(g, v, len));
    } else {
        GEN(lg_json_gen_cstr(g, ""));
    }
    GEN(gen_close_map(g));
    GEN(lg_json_gen_kv(g, "requestId", in->request_id ? in->request_id : ""));
    GEN(lg_json_gen_kv(g, "routeKey", route_key(in)));
    GEN(lg_json_gen_kv(g, "stage", "$default"));
    GEN(lg_json_gen_kv(g, "time", when));
    GEN(gen_key(g, "timeEpoch"));
    GEN(lg_json_gen_int(g, in->time_ms));
    GEN(gen_close_map(g));

    bool base64 = false;
    if (in->body_len > 0) {
        GEN(gen_key(g, "body"));
        GEN(gen_body(b, &base64));
    }
    if (has_path_params(b)) {
        GEN(gen_key(g, "pathParameters"));
        GEN(gen_path_params(b));
    }
    GEN(gen_key(g, "isBase64Encoded"));
    GEN(lg_json_gen_bool(g, base64));
    return gen_close_map(g);
}

static int gen_v1(struct build *b)
{
    struct lg_json_writer *g = b->g;
    const struct lg_event_request *in = b->in;
    const char *path = in->raw_path ? in->raw_path : "";
    size_t path_len = in->raw_path ? in->raw_path_len : 0;
    const char *resource = in->route->path ? in->route->path : "/";
    char when[32];
    lg_event_format_time(in->time_ms, when);

    GEN(gen_open_map(g));
    GEN(lg_json_gen_kv(g, "version", "1.0"));
    GEN(lg_json_gen_kv(g, "resource", resource));
    GEN(gen_key(g, "path"));
    GEN(lg_json_gen_str(g, path, path_len));
    GEN(gen_key(g, "httpMethod"));
    GEN(lg_json_gen_str(g, in->method, in->method_len));
    GEN(gen_key(g, "headers"));
    GEN(gen_headers_v1(b, false));
    GEN(gen_key(g, "multiValueHeaders"));
    GEN(gen_headers_v1(b, true));
    GEN(gen_key(g, "queryStringParameters"));
    GEN(b->nqgroups > 0 ? gen_query(b, false, false) : lg_json_gen_null(g));
    GEN(gen_key(g, "multiValueQueryStringParameters"));
    GEN(b->nqgroups > 0 ? gen_query(b, false, true) : lg_json_gen_null(g));

    GEN(gen_key(g, "requestContext"));
    GEN(gen_open_map(g));
    GEN(lg_json_gen_kv(g, "accountId", account_id(in)));
    GEN(lg_json_gen_kv(g, "apiId", EVENT_API_ID));
    if (in->identity != NULL && in->identity->kind == LG_IDENTITY_JWT) {
        /* A Cognito user pool authorizer's place for claims. */
        GEN(gen_key(g, "authorizer"));
        GEN(gen_jwt(b));
    }
    GEN(gen_domain(b));
    GEN(lg_json_gen_kv(g, "extendedRequestId", in->request_id ? in->request_id : ""));
    GEN(gen_key(g, "httpMethod"));
    GEN(lg_json_gen_str(g, in->method, in->method_len));

    GEN(gen_key(g, "identity"));
    GEN(gen_open_map(g));
    static const char *const unknown[] = {
        "accessKey",
        "accountId",
        "caller",
        "cognitoAuthenticationProvider",
        "cognitoAuthenticationType",
        "cognitoIdentityId",
        "cognitoIdentityPoolId",
        "principalOrgId",
        "user",
        "userArn",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(unknown); i++)
        GEN(lg_json_gen_kv(g, unknown[i], NULL));
    bool api_key = in->identity != NULL && in->identity->kind == LG_IDENTITY_API_KEY;
    GEN(lg_json_gen_kv(g, "apiKey", api_key ? in->identity->api_key : NULL));
    GEN(lg_json_gen_kv(g, "apiKeyId", api_key ? in->identity->api_key_id : NULL));
    GEN(lg_json_gen_kv(g, "sourceIp", in->source_ip ? in->source_ip : ""));
    GEN(gen_key(g, "userAgent"));
    if (b->user_agent != NULL) {
        const char *v;
        size_t len;
        GEN(group_value(b, b->hitems, b->user_agent, false, false, &v, &len));
        GEN(lg_json_gen_str(g, v, len));
    } else {
        GEN(lg_json_gen_null(g));
    }
    GEN(gen_close_map(g));

    GEN(gen_key(g, "path"));
    GEN(lg_json_gen_str(g, path, path_len));
    GEN(lg_json_gen_kv(g, "protocol", in->protocol ? in->protocol : "HTTP/1.1"));
    GEN(lg_json_gen_kv(g, "requestId", in->request_id ? in->request_id : ""));
    GEN(lg_json_gen_kv(g, "requestTime", when));
    GEN(gen_key(g, "requestTimeEpoch"));
    GEN(lg_json_gen_int(g, in->time_ms));
    GEN(lg_json_gen_kv(g, "resourceId", NULL));
    GEN(lg_json_gen_kv(g, "resourcePath", resource));
    GEN(lg_json_gen_kv(g, "stage", "$default"));
    GEN(gen_close_map(g));

    GEN(gen_key(g, "pathParameters"));
    GEN(has_path_params(b) ? gen_path_params(b) : lg_json_gen_null(g));
    GEN(lg_json_gen_kv(g, "stageVariables", NULL));
    bool base64 = false;
    GEN(gen_key(g, "body"));
    GEN(in->body_len > 0 ? gen_body(b, &base64) : lg_json_gen_null(g));
    GEN(gen_key(g, "isBase64Encoded"));
    GEN(lg_json_gen_bool(g, base64));
    return gen_close_map(g);
}

/* Text that goes into the event as a JSON string must be UTF-8: say which
 * part is not, so the caller's 400 can be logged with a reason. */
static int check_text(const struct build *b)
{
    const struct lg_event_request *in = b->in;
    if (in->raw_path && !lg_codec_utf8_valid(in->raw_path, in->raw_path_len)) {
        set_err(b->err, b->errlen, "path is not valid UTF-8");
        return -1;
    }
    if (in->raw_query && !lg_codec_utf8_valid(in->raw_query, in->raw_query_len)) {
        set_err(b->err, b->errlen, "query is not valid UTF-8");
        return -1;
    }
    if (in->method == NULL || !lg_codec_utf8_valid(in->method, in->method_len)) {
        set_err(b->err, b->errlen, "bad method");
        return -1;
    }
    const struct lg_router_match *m = in->match;
    for (size_t i = 0; m != NULL && i < m->nparams; i++) {
        if (m->params[i].value &&
            !lg_codec_utf8_valid(m->params[i].value, m->params[i].value_len)) {
            set_err(b->err, b->errlen, "path parameter %s is not valid UTF-8",
                    m->params[i].name ? m->params[i].name : "?");
            return -1;
        }
    }
    return 0;
}

int lg_event_build(const struct lg_event_request *in, struct lg_buf *out, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    size_t start = out->len;
    struct build b;
    memset(&b, 0, offsetof(struct build, local)); /* local: written before use */
    b.in = in;
    b.err = err;
    b.errlen = errlen;
    lg_buf_init_local(&b.qtext, b.local.qtext, sizeof(b.local.qtext), 0);
    lg_buf_init_local(&b.scratch, b.local.scratch, sizeof(b.local.scratch), 0);
    /* The writer appends straight to the caller's buffer, so the event (and
     * a body of several megabytes) is not copied once more. */
    struct lg_json_writer writer;
    lg_json_writer_init(&writer, out);
    int rc = -1;

    if (in->route == NULL) {
        set_err(err, errlen, "no route");
        goto done;
    }
    if (check_text(&b) != 0 || classify_headers(&b) != 0 || parse_query(&b) != 0)
        goto done;
    b.g = &writer;
    /* One allocation for the usual event: the body (base64 grows it by a
     * third), the headers, and about 1 KB of fixed members. Only a hint:
     * when the bound does not allow it, appends grow as they go. */
    size_t hint = 1024 + in->raw_path_len * 2 + in->raw_query_len * 3 + in->body_len / 3 * 4 + 4;
    for (size_t i = 0; i < in->nheaders; i++)
        hint += (in->headers[i].name_len + in->headers[i].value_len + 8) * 2;
    if (lg_buf_reserve(out, hint) != 0) {
        /* fine: the appends below grow out as far as its bound allows */
    }
    rc = in->route->payload_format == LG_PAYLOAD_V1 ? gen_v1(&b) : gen_v2(&b);
    if (rc != 0)
        set_err(err, errlen,
                writer.no_room ? "event exceeds the output bound"
                               : "cannot encode the event (text not UTF-8?)");
done:
    if (rc != 0) {
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
    }
    if (b.hclass != b.local.hclass) {
        free(b.hclass);
        free(b.hitems);
        free(b.hgroups);
        free(b.conn);
    }
    if (b.qpairs != b.local.qpairs) {
        free(b.qpairs);
        free(b.qitems);
        free(b.qgroups);
    }
    lg_buf_free(&b.qtext);
    lg_buf_free(&b.scratch);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Parsing proxy responses                                             */
/* ------------------------------------------------------------------ */

/* yajl's tree keeps strings as C strings, so "a\u0000b" reads as "a".
 * When the payload escapes a NUL (rare: text bodies hardly hold one), a
 * second pass with yajl's callback parser, which reports lengths, recovers
 * the exact body and notices a NUL hidden in a member name, header,
 * cookie or status, which must make the answer malformed rather than be
 * cut short silently. */
enum top_member {
    TOP_OTHER = 0,
    TOP_BODY,
    TOP_STATUS,
    TOP_HEADERS, /* headers, multiValueHeaders, cookies */
};

struct exact {
    int depth;
    bool root_is_map;
    bool root_seen;
    enum top_member member;
    bool body_set;
    struct lg_buf body; /* the first top-level "body" string, exactly */
    bool top_set;
    struct lg_buf top; /* the payload when it is one JSON string */
    bool hidden_nul;   /* a NUL where it must not be */
    bool oom;
};

static int exact_start_map(void *ctx)
{
    struct exact *x = ctx;
    if (!x->root_seen) {
        x->root_seen = true;
        x->root_is_map = true;
    }
    x->depth++;
    return 1;
}

static int exact_start_array(void *ctx)
{
    struct exact *x = ctx;
    x->root_seen = true;
    x->depth++;
    return 1;
}

static int exact_end(void *ctx)
{
    struct exact *x = ctx;
    x->depth--;
    return 1;
}

static int exact_key(void *ctx, const unsigned char *s, size_t n)
{
    struct exact *x = ctx;
    if (!x->root_is_map)
        return 1;
    bool nul = memchr(s, '\0', n) != NULL;
    if (x->depth == 1) {
        x->hidden_nul |= nul;
        const char *k = (const char *)s;
        if (n == 4 && memcmp(k, "body", 4) == 0)
            x->member = TOP_BODY;
        else if (n == 10 && memcmp(k, "statusCode", 10) == 0)
            x->member = TOP_STATUS;
        else if ((n == 7 && memcmp(k, "headers", 7) == 0) ||
                 (n == 17 && memcmp(k, "multiValueHeaders", 17) == 0) ||
                 (n == 7 && memcmp(k, "cookies", 7) == 0))
            x->member = TOP_HEADERS;
        else
            x->member = TOP_OTHER;
    } else if (x->member == TOP_HEADERS) {
        x->hidden_nul |= nul;
    }
    return 1;
}

static int exact_string(void *ctx, const unsigned char *s, size_t n)
{
    struct exact *x = ctx;
    bool nul = memchr(s, '\0', n) != NULL;
    if (!x->root_seen) {
        x->root_seen = true;
        x->top_set = true;
        if (lg_buf_append(&x->top, s, n) != 0)
            x->oom = true;
        return 1;
    }
    if (!x->root_is_map)
        return 1;
    if (x->depth == 1 && x->member == TOP_BODY) {
        if (!x->body_set) {
            x->body_set = true;
            if (lg_buf_append(&x->body, s, n) != 0)
                x->oom = true;
        }
    } else if (x->member == TOP_STATUS || x->member == TOP_HEADERS) {
        x->hidden_nul |= nul;
    }
    return 1;
}

static int exact_scalar(void *ctx)
{
    struct exact *x = ctx;
    x->root_seen = true;
    return 1;
}

static int exact_bool(void *ctx, int v)
{
    (void)v;
    return exact_scalar(ctx);
}

static int exact_number(void *ctx, const char *s, size_t n)
{
    (void)s;
    (void)n;
    return exact_scalar(ctx);
}

/* True when the payload holds the escape \u0000 inside a string. */
static bool has_escaped_nul(const char *p, size_t n)
{
    /* Almost every payload has none: one fast search settles it. */
    if (memmem(p, n, "\\u0000", 6) == NULL)
        return false;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (p[i] == '\\' && i + 1 < n) {
                if (p[i + 1] == 'u' && n - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
                    return true;
                i++;
            } else if (p[i] == '"') {
                in_string = false;
            }
        } else if (p[i] == '"') {
            in_string = true;
        }
    }
    return false;
}

/* Second pass over a payload lg_json_parse() accepted; -1 only when memory
 * runs out. */
static int exact_scan(const char *payload, size_t len, struct exact *x)
{
    static const yajl_callbacks cb = {
        .yajl_null = exact_scalar,
        .yajl_boolean = exact_bool,
        .yajl_number = exact_number,
        .yajl_string = exact_string,
        .yajl_start_map = exact_start_map,
        .yajl_map_key = exact_key,
        .yajl_end_map = exact_end,
        .yajl_start_array = exact_start_array,
        .yajl_end_array = exact_end,
    };
    yajl_handle h = yajl_alloc(&cb, NULL, x);
    if (h == NULL)
        return -1;
    /* The same leniency as lg_json_parse's tree parser, so both passes
     * read the same text the same way. */
    yajl_config(h, yajl_allow_comments, 1);
    yajl_status st = yajl_parse(h, (const unsigned char *)payload, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    return st == yajl_status_ok && !x->oom ? 0 : -1;
}

/* A scalar header value as text: strings as they are, numbers as their
 * JSON text, booleans as true/false (CONTRACT section 4: Express under
 * serverless-express sends a numeric content-length). 1 = a value, 0 =
 * null (skipped), -1 = an object or array (malformed). */
static int scalar_text(yajl_val v, const char **s, size_t *n)
{
    if (v == NULL || YAJL_IS_NULL(v))
        return 0;
    if (YAJL_IS_STRING(v)) {
        *s = v->u.string;
    } else if (YAJL_IS_NUMBER(v)) {
        *s = v->u.number.r;
    } else if (YAJL_IS_TRUE(v)) {
        *s = "true";
    } else if (YAJL_IS_FALSE(v)) {
        *s = "false";
    } else {
        return -1;
    }
    *n = strlen(*s);
    return 1;
}

struct pending {
    struct lg_http_header *h; /* borrowed from the tree */
    size_t n, cap;
    size_t bytes;                    /* header block size so far */
    struct lg_http_header local[16]; /* h for the usual few headers */
};

static int pending_add(struct pending *p, const char *name, const char *value, size_t value_len,
                       char *err, size_t errlen)
{
    size_t name_len = strlen(name);
    if (!lg_http_is_token(name, name_len)) {
        set_err(err, errlen, "malformed proxy response: header name is not a token");
        return -1;
    }
    if (!lg_http_is_field_value(value, value_len)) {
        set_err(err, errlen, "malformed proxy response: bad value for header %.64s", name);
        return -1;
    }
    if (p->n == p->cap) {
        set_err(err, errlen, "malformed proxy response: more than %d headers",
                EVENT_MAX_RESPONSE_HEADERS);
        return -1;
    }
    if (value_len > EVENT_MAX_RESPONSE_HEADER_BYTES || name_len > EVENT_MAX_RESPONSE_HEADER_BYTES ||
        (p->bytes += name_len + value_len + 4) > EVENT_MAX_RESPONSE_HEADER_BYTES) {
        set_err(err, errlen, "malformed proxy response: headers exceed %d bytes",
                EVENT_MAX_RESPONSE_HEADER_BYTES);
        return -1;
    }
    p->h[p->n].name = name;
    p->h[p->n].name_len = name_len;
    p->h[p->n].value = value;
    p->h[p->n].value_len = value_len;
    p->n++;
    return 0;
}

static int cmp_cstr_fold(const void *a, const void *b)
{
    return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/* Gather headers, multiValueHeaders and cookies in that order, validated.
 * A multiValueHeaders name replaces the headers entry of the same name
 * ("only the values from multiValueHeaders will appear"); the names are
 * sorted so that check is a binary search, whatever a hostile answer holds. */
static int collect_headers(yajl_val root, struct pending *p, char *err, size_t errlen)
{
    yajl_val headers = lg_json_get(root, "headers");
    yajl_val multi = lg_json_get(root, "multiValueHeaders");
    yajl_val cookies = lg_json_get(root, "cookies");
    if (headers && YAJL_IS_NULL(headers))
        headers = NULL;
    if (multi && YAJL_IS_NULL(multi))
        multi = NULL;
    if (cookies && YAJL_IS_NULL(cookies))
        cookies = NULL;
    if ((headers && !YAJL_IS_OBJECT(headers)) || (multi && !YAJL_IS_OBJECT(multi))) {
        set_err(err, errlen, "malformed proxy response: headers must be an object");
        return -1;
    }
    if (cookies && !YAJL_IS_ARRAY(cookies)) {
        set_err(err, errlen, "malformed proxy response: cookies must be an array");
        return -1;
    }
    /* Count first: a bound on the work, and one allocation. */
    size_t total = headers ? headers->u.object.len : 0;
    size_t nmulti = multi ? multi->u.object.len : 0;
    for (size_t i = 0; i < nmulti; i++) {
        yajl_val a = multi->u.object.values[i];
        if (YAJL_IS_ARRAY(a))
            total += a->u.array.len;
        else if (!YAJL_IS_NULL(a)) {
            set_err(err, errlen, "malformed proxy response: multiValueHeaders holds a non-array");
            return -1;
        }
    }
    total += cookies ? cookies->u.array.len : 0;
    if (total > EVENT_MAX_RESPONSE_HEADERS || nmulti > EVENT_MAX_RESPONSE_HEADERS) {
        set_err(err, errlen, "malformed proxy response: more than %d headers",
                EVENT_MAX_RESPONSE_HEADERS);
        return -1;
    }
    p->cap = total;
    p->h = total <= LG_ARRAY_LEN(p->local) ? p->local : calloc(total, sizeof(*p->h));
    const char **mnames = nmulti ? calloc(nmulti, sizeof(*mnames)) : NULL;
    if (p->h == NULL || (nmulti && mnames == NULL)) {
        free(mnames);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    size_t nm = 0;
    for (size_t i = 0; i < nmulti; i++) {
        if (YAJL_IS_ARRAY(multi->u.object.values[i]))
            mnames[nm++] = multi->u.object.keys[i];
    }
    if (nm > 0)
        qsort(mnames, nm, sizeof(*mnames), cmp_cstr_fold);

    int rc = -1;
    for (size_t i = 0; headers && i < headers->u.object.len; i++) {
        const char *name = headers->u.object.keys[i];
        const char *v = NULL;
        size_t vlen = 0;
        int k = scalar_text(headers->u.object.values[i], &v, &vlen);
        if (k < 0) {
            set_err(err, errlen, "malformed proxy response: header %.64s is not a scalar", name);
            goto out;
        }
        if (k == 0 || (nm > 0 && bsearch(&name, mnames, nm, sizeof(*mnames), cmp_cstr_fold)))
            continue;
        if (pending_add(p, name, v, vlen, err, errlen) != 0)
            goto out;
    }
    for (size_t i = 0; i < nmulti; i++) {
        yajl_val a = multi->u.object.values[i];
        if (!YAJL_IS_ARRAY(a))
            continue;
        for (size_t j = 0; j < a->u.array.len; j++) {
            const char *v = NULL;
            size_t vlen = 0;
            int k = scalar_text(a->u.array.values[j], &v, &vlen);
            if (k < 0) {
                set_err(err, errlen, "malformed proxy response: header %.64s is not a scalar",
                        multi->u.object.keys[i]);
                goto out;
            }
            if (k > 0 && pending_add(p, multi->u.object.keys[i], v, vlen, err, errlen) != 0)
                goto out;
        }
    }
    /* "In the response to the client, each cookie becomes a set-cookie header." */
    for (size_t j = 0; cookies && j < cookies->u.array.len; j++) {
        yajl_val c = cookies->u.array.values[j];
        if (YAJL_IS_NULL(c))
            continue;
        if (!YAJL_IS_STRING(c)) {
            set_err(err, errlen, "malformed proxy response: a cookie is not a string");
            goto out;
        }
        if (pending_add(p, "Set-Cookie", c->u.string, strlen(c->u.string), err, errlen) != 0)
            goto out;
    }
    rc = 0;
out:
    free(mnames);
    return rc;
}

/* Whether the function's header h is sent on: hop-by-hop ones (including
 * those its own Connection headers name) and Content-Length are dropped,
 * since we frame the body ourselves. */
static bool response_keeps(const struct lg_http_header *h, const struct lg_http_header *conn,
                           size_t nconn)
{
    return !lg_http_is_hop_by_hop(h->name, h->name_len, conn, nconn) &&
           !lg_http_ieq(h->name, h->name_len, "content-length");
}

/* Copy one header into r's block at *text. */
static void response_put(struct lg_event_response *r, char **text, const char *name,
                         size_t name_len, const char *value, size_t value_len)
{
    struct lg_http_header *h = &r->headers[r->nheaders++];
    char *t = *text;
    memcpy(t, name, name_len);
    t[name_len] = '\0';
    h->name = t;
    h->name_len = name_len;
    t += name_len + 1;
    memcpy(t, value, value_len);
    t[value_len] = '\0';
    h->value = t;
    h->value_len = value_len;
    *text = t + value_len + 1;
}

/* Copy the headers we send into r, in one allocation (the array, then the
 * names and values): Content-Type is added when missing, as API Gateway
 * does ("adds a Content-Type header ... application/json"). */
static int finish_headers(struct lg_event_response *r, const struct pending *p)
{
    size_t nconn = 0;
    struct lg_http_header conn_local[4], *conn = conn_local;
    for (size_t i = 0; i < p->n; i++)
        nconn += lg_http_ieq(p->h[i].name, p->h[i].name_len, "connection");
    if (nconn > LG_ARRAY_LEN(conn_local) && (conn = malloc(nconn * sizeof(*conn))) == NULL)
        return -1;
    nconn = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (lg_http_ieq(p->h[i].name, p->h[i].name_len, "connection"))
            conn[nconn++] = p->h[i];
    }
    bool have_type = false;
    size_t nkeep = 0, text = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct lg_http_header *h = &p->h[i];
        if (!response_keeps(h, conn, nconn))
            continue;
        have_type |= lg_http_ieq(h->name, h->name_len, "content-type");
        nkeep++;
        text += h->name_len + h->value_len + 2;
    }
    if (!have_type) {
        nkeep++;
        text += sizeof("Content-Type") + sizeof("application/json");
    }
    /* Bounded: the pending headers were counted and sized as collected. */
    r->headers = malloc(nkeep * sizeof(*r->headers) + text);
    if (r->headers == NULL) {
        if (conn != conn_local)
            free(conn);
        return -1;
    }
    char *t = (char *)(r->headers + nkeep);
    for (size_t i = 0; i < p->n; i++) {
        const struct lg_http_header *h = &p->h[i];
        if (response_keeps(h, conn, nconn))
            response_put(r, &t, h->name, h->name_len, h->value, h->value_len);
    }
    if (!have_type)
        response_put(r, &t, LG_LITERAL("Content-Type"), LG_LITERAL("application/json"));
    if (conn != conn_local)
        free(conn);
    return 0;
}

static int parse_status(yajl_val v, int *status)
{
    int64_t s;
    if (YAJL_IS_NUMBER(v)) {
        if (!lg_json_integer(v, &s))
            return -1;
    } else if (YAJL_IS_STRING(v)) {
        const char *t = v->u.string;
        if (strlen(t) != 3 || t[0] < '0' || t[0] > '9' || t[1] < '0' || t[1] > '9' || t[2] < '0' ||
            t[2] > '9')
            return -1;
        s = (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0');
    } else {
        return -1;
    }
    if (s < 100 || s > 599)
        return -1;
    *status = (int)s;
    return 0;
}

static void response_init(struct lg_event_response *r)
{
    r->status = 0;
    r->headers = NULL;
    r->nheaders = 0;
    lg_buf_init(&r->body, LG_LAMBDA_RESPONSE_MAX);
}

void lg_event_response_free(struct lg_event_response *r)
{
    if (r == NULL)
        return;
    free(r->headers); /* the names and values live in the same block */
    lg_buf_free(&r->body);
    response_init(r);
}

/* The proxy response proper: an object with statusCode. */
static int parse_proxy(yajl_val root, yajl_val status, const struct exact *x, bool exact_pass,
                       struct lg_event_response *out, char *err, size_t errlen)
{
    if (exact_pass && x->hidden_nul) {
        set_err(err, errlen, "malformed proxy response: NUL in a name, header or cookie");
        return -1;
    }
    if (parse_status(status, &out->status) != 0) {
        set_err(err, errlen, "malformed proxy response: statusCode is not 100-599");
        return -1;
    }
    yajl_val body = lg_json_get(root, "body");
    yajl_val b64 = lg_json_get(root, "isBase64Encoded");
    if (body != NULL && !YAJL_IS_NULL(body) && !YAJL_IS_STRING(body)) {
        set_err(err, errlen, "malformed proxy response: body is not a string");
        return -1;
    }
    if (b64 != NULL && !YAJL_IS_NULL(b64) && !YAJL_IS_TRUE(b64) && !YAJL_IS_FALSE(b64)) {
        set_err(err, errlen, "malformed proxy response: isBase64Encoded is not a boolean");
        return -1;
    }
    struct pending p;
    p.h = NULL;
    p.n = p.cap = p.bytes = 0;
    int rc = collect_headers(root, &p, err, errlen);
    if (rc == 0 && finish_headers(out, &p) != 0) {
        set_err(err, errlen, "out of memory");
        rc = -1;
    }
    if (p.h != p.local)
        free(p.h);
    if (rc != 0)
        return -1;
    if (body == NULL || YAJL_IS_NULL(body))
        return 0;
    const char *text = body->u.string;
    size_t len = strlen(text);
    if (exact_pass && x->body_set) {
        text = x->body.data ? x->body.data : "";
        len = x->body.len;
    }
    if (YAJL_IS_TRUE(b64)) {
        if (lg_codec_base64_decode(&out->body, text, len) != 0) {
            set_err(err, errlen, "malformed proxy response: body is not valid base64");
            return -1;
        }
    } else if (lg_buf_append(&out->body, text, len) != 0) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int lg_event_parse_response(enum lg_payload_format format, const char *payload, size_t len,
                            struct lg_event_response *out, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    response_init(out);
    if (payload == NULL)
        len = 0;
    char perr[LG_ERR_LEN];
    yajl_val root = len > 0 ? lg_json_parse(payload, len, LG_LAMBDA_RESPONSE_MAX, LG_JSON_MAX_DEPTH,
                                            perr, sizeof(perr))
                            : NULL;
    if (root == NULL) {
        set_err(err, errlen, "malformed proxy response: %s", len > 0 ? perr : "empty payload");
        return -1;
    }
    struct exact x;
    memset(&x, 0, sizeof(x));
    lg_buf_init(&x.body, LG_LAMBDA_RESPONSE_MAX);
    lg_buf_init(&x.top, LG_LAMBDA_RESPONSE_MAX);
    bool exact_pass = has_escaped_nul(payload, len);
    int rc = -1;
    if (exact_pass && exact_scan(payload, len, &x) != 0) {
        set_err(err, errlen, "out of memory");
        goto done;
    }

    yajl_val status = YAJL_IS_OBJECT(root) ? lg_json_get(root, "statusCode") : NULL;
    if (status != NULL) {
        rc = parse_proxy(root, status, &x, exact_pass, out, err, errlen);
    } else if (format == LG_PAYLOAD_V1) {
        set_err(err, errlen, "malformed proxy response: no statusCode");
    } else {
        /* Format 2.0 without statusCode: "statusCode is 200; content-type
         * is application/json; body is the function's response" - a JSON
         * string's contents ("Hello from Lambda!"), else the JSON text. */
        out->status = 200;
        const char *text = payload;
        size_t tlen = len;
        if (YAJL_IS_STRING(root)) {
            text = exact_pass && x.top_set ? (x.top.data ? x.top.data : "") : root->u.string;
            tlen = exact_pass && x.top_set ? x.top.len : strlen(root->u.string);
        }
        struct pending none;
        none.h = NULL;
        none.n = 0;
        if (lg_buf_append(&out->body, text, tlen) != 0 || finish_headers(out, &none) != 0)
            set_err(err, errlen, "out of memory");
        else
            rc = 0;
    }
done:
    if (rc != 0)
        lg_event_response_free(out);
    lg_buf_free(&x.body);
    lg_buf_free(&x.top);
    lg_json_free(root);
    return rc;
}
