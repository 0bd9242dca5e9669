/* apikey.c - the API keys file (CONTRACT section 3): hashed keys, their ids and usage plans. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <yajl/yajl_parse.h>

#include "lambdagate/apikey.h"
#include "lambdagate/json.h"
#include "lambdagate/codec.h"

/*
 * How a file becomes a struct lg_apikeys:
 *
 *   1. The text is fed to yajl's callback parser one line at a time, as
 *      conf.c does, so that every callback knows the line it came from.
 *   2. The callbacks drive a small state machine (a stack of frames: the
 *      top-level object, the "keys" array, one key object, its "throttle"
 *      or "quota" object, or a value being skipped) that checks each value
 *      where it stands and writes it straight into the key being built.
 *      No tree is built: a 16 MiB file of 100000 keys needs only the keys.
 *   3. When the text is parsed, duplicate ids and digests are looked for
 *      (the digest check is the building of the lookup index itself).
 *   4. Errors are collected with their lines, sorted by line and handed to
 *      the caller's callback; the set is returned only when there was none.
 *
 * Secrets: the file holds only SHA-256 digests of keys, and no message ever
 * echoes a "sha256" value (of any type: a digest written without quotes is
 * still a digest), nor a string or number standing where a digest may have
 * been pasted by mistake (the top level, "keys" and its elements): those
 * are described by their type. Ids are names, not secrets, and are quoted.
 */

/* Nesting: the shape needs 4 levels; deeper values can only be inside
 * unknown keys, which are skipped, but still bounded. */
#define APIKEY_MAX_DEPTH 32
/* Errors kept: a garbage file must not flood the log. */
#define APIKEY_MAX_ERRORS 500
/* Offending text is quoted up to this many bytes. */
#define APIKEY_QUOTE_MAX 64
#define APIKEY_QUOTE_BUF (APIKEY_QUOTE_MAX * 4 + 8)
#define APIKEY_MSG_LEN   512

/* The token bucket bounds of the main config (conf.c rate_keys), so that a
 * key's bucket is one the rate limiter already handles. */
#define RATE_MIN  0.001
#define RATE_MAX  1000000.0
#define BURST_MAX 1000000

#define DIGEST_LEN 32
#define HEX_LEN    (DIGEST_LEN * 2)

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

struct load_error {
    int line;
    size_t seq; /* order found: the tie-break of the sort */
    char *message;
};

/* State of one load. */
struct loader {
    struct load_error *items;
    size_t count;
    size_t cap;
    size_t dropped; /* errors past APIKEY_MAX_ERRORS, or that could not be stored */
    bool failed;
};

/* Record an error at line (0 = not tied to a line). Never fails: an error
 * that cannot be stored is still counted and fails the load. */
static void load_error(struct loader *ld, int line, const char *fmt, ...) LG_PRINTF(3, 4);
static void load_error(struct loader *ld, int line, const char *fmt, ...)
{
    ld->failed = true;
    if (ld->count >= APIKEY_MAX_ERRORS) {
        ld->dropped++;
        return;
    }
    if (ld->count == ld->cap) {
        size_t cap = ld->cap ? ld->cap * 2 : 16;
        struct load_error *items = realloc(ld->items, cap * sizeof(*items));
        if (items == NULL) {
            ld->dropped++;
            return;
        }
        ld->items = items;
        ld->cap = cap;
    }
    char msg[APIKEY_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *copy = strdup(msg);
    if (copy == NULL) {
        ld->dropped++;
        return;
    }
    ld->items[ld->count] = (struct load_error){.line = line, .seq = ld->count, .message = copy};
    ld->count++;
}

static int error_order(const void *a, const void *b)
{
    const struct load_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Hand the errors to the caller by line (line 0 first), then free them.
 * At least one call is made when the load failed, even if no message
 * could be stored. */
static void deliver_errors(struct loader *ld, lg_apikey_error_cb on_error, void *arg)
{
    if (ld->count > 1)
        qsort(ld->items, ld->count, sizeof(*ld->items), error_order);
    for (size_t i = 0; i < ld->count; i++) {
        if (on_error)
            on_error(arg, ld->items[i].line, ld->items[i].message);
        free(ld->items[i].message);
    }
    if (on_error && ld->dropped > 0) {
        char msg[96];
        if (ld->count == 0)
            snprintf(msg, sizeof(msg), "the keys file is not valid (out of memory reporting why)");
        else
            snprintf(msg, sizeof(msg), "%zu more error%s not reported", ld->dropped,
                     ld->dropped == 1 ? "" : "s");
        on_error(arg, 0, msg);
    }
    free(ld->items);
    ld->items = NULL;
    ld->count = ld->cap = 0;
}

/* s[0..len) as a double-quoted string for a message: at most
 * APIKEY_QUOTE_MAX bytes, bytes outside printable ASCII and quotes as
 * \xNN, "..." after a cut. buf holds APIKEY_QUOTE_BUF. */
static const char *quote(char *buf, const char *s, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    size_t n = len > APIKEY_QUOTE_MAX ? APIKEY_QUOTE_MAX : len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            snprintf(buf + o, 5, "\\x%02x", c);
            o += 4;
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    if (len > n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------
 * The parser
 * ------------------------------------------------------------------------ */

static bool all_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (lg_codec_hex_value((unsigned char)s[i]) < 0)
            return false;
    }
    return true;
}

enum value_type {
    VALUE_NULL,
    VALUE_BOOL,
    VALUE_NUMBER,
    VALUE_STRING,
    VALUE_OBJECT, /* its '{': members follow */
    VALUE_ARRAY,  /* its '[' */
};

/* One value as a callback sees it: scalars with their text (numbers as
 * written, strings decoded by yajl), not NUL-terminated. */
struct value {
    enum value_type type;
    const char *text;
    size_t len;
    bool boolean;
};

/* What a value is, for "got ..." in messages. A secret value is described
 * by its type only. buf holds APIKEY_QUOTE_BUF. */
static const char *describe(const struct value *v, bool secret, char *buf)
{
    switch (v->type) {
    case VALUE_NULL:
        return "null";
    case VALUE_BOOL:
        return v->boolean ? "true" : "false";
    case VALUE_NUMBER:
        if (secret)
            return "a number";
        /* The text is not NUL-terminated: yajl points into the input. */
        snprintf(buf, APIKEY_QUOTE_BUF, "%.*s%s",
                 (int)(v->len > APIKEY_QUOTE_MAX ? APIKEY_QUOTE_MAX : v->len), v->text,
                 v->len > APIKEY_QUOTE_MAX ? "..." : "");
        return buf;
    case VALUE_STRING:
        return secret ? "a string" : quote(buf, v->text, v->len);
    case VALUE_OBJECT:
        return "an object";
    case VALUE_ARRAY:
        return "an array";
    }
    return "?";
}

enum frame_kind {
    FRAME_TOP,      /* the top-level object */
    FRAME_KEYS,     /* the "keys" array */
    FRAME_KEY,      /* one element of "keys" */
    FRAME_THROTTLE, /* a key's "throttle" object */
    FRAME_QUOTA,    /* a key's "quota" object */
    FRAME_SKIP,     /* a container inside a value already reported or ignored */
};

/* The member whose value comes next in an object. */
enum member {
    MEMBER_NONE = 0,
    MEMBER_IGNORE, /* unknown or repeated: reported at its name, value skipped */
    MEMBER_KEYS,
    MEMBER_ID,
    MEMBER_SHA256,
    MEMBER_THROTTLE,
    MEMBER_QUOTA,
    MEMBER_RATE,
    MEMBER_BURST,
    MEMBER_LIMIT,
    MEMBER_PERIOD,
};

struct member_name {
    const char *name;
    enum member member;
};

static const struct member_name top_members[] = {{"keys", MEMBER_KEYS}};
static const struct member_name key_members[] = {
    {"id", MEMBER_ID},
    {"sha256", MEMBER_SHA256},
    {"throttle", MEMBER_THROTTLE},
    {"quota", MEMBER_QUOTA},
};
static const struct member_name throttle_members[] = {{"rate", MEMBER_RATE},
                                                      {"burst", MEMBER_BURST}};
static const struct member_name quota_members[] = {{"limit", MEMBER_LIMIT},
                                                   {"period", MEMBER_PERIOD}};

static const char *const period_names[] = {
    [LG_QUOTA_DAY] = "day",
    [LG_QUOTA_WEEK] = "week",
    [LG_QUOTA_MONTH] = "month",
};

struct frame {
    enum frame_kind kind;
    int line;            /* of its '{' or '[' */
    unsigned seen;       /* objects: bit per enum member given */
    enum member pending; /* objects: the member whose value comes next */
    size_t count;        /* the "keys" array: elements so far */
};

/* What the loader needs to know about a key beyond struct lg_apikey. */
struct key_info {
    size_t elem; /* position in the "keys" array, for messages */
    int id_line;
    int sha_line;
    bool has_id; /* a valid id was stored */
    bool has_sha;
};

/* The parser's state between yajl callbacks. */
struct parser {
    struct loader *ld;
    int line; /* line of the chunk being fed */
    struct frame stack[APIKEY_MAX_DEPTH];
    size_t depth;
    bool saw_top; /* the top-level value was an object */
    struct lg_apikey *keys;
    struct key_info *info;
    size_t nkeys;
    size_t cap;
    bool too_many;          /* the key limit was reported */
    char fatal[LG_ERR_LEN]; /* why a callback stopped the parse */
};

/* The key being read: the last one added. */
static struct lg_apikey *cur_key(struct parser *p)
{
    return &p->keys[p->nkeys - 1];
}

static struct key_info *cur_info(struct parser *p)
{
    return &p->info[p->nkeys - 1];
}

/* Where the innermost object is, for messages: "the top level",
 * "keys[3]", "keys[3].throttle". */
static const char *frame_where(struct parser *p, enum frame_kind kind, char *buf, size_t len)
{
    switch (kind) {
    case FRAME_KEY:
        snprintf(buf, len, "keys[%zu]", cur_info(p)->elem);
        break;
    case FRAME_THROTTLE:
        snprintf(buf, len, "keys[%zu].throttle", cur_info(p)->elem);
        break;
    case FRAME_QUOTA:
        snprintf(buf, len, "keys[%zu].quota", cur_info(p)->elem);
        break;
    default:
        snprintf(buf, len, "the top level");
        break;
    }
    return buf;
}

/* The full name of member m of the innermost object, for messages:
 * "keys", "keys[3].id", "keys[3].throttle.rate". */
static const char *member_where(struct parser *p, enum frame_kind kind, const char *name, char *buf,
                                size_t len)
{
    if (kind == FRAME_TOP) {
        snprintf(buf, len, "\"%s\"", name);
    } else {
        char w[64];
        snprintf(buf, len, "%s.%s", frame_where(p, kind, w, sizeof(w)), name);
    }
    return buf;
}

static int push(struct parser *p, enum frame_kind kind)
{
    if (p->depth >= APIKEY_MAX_DEPTH) {
        snprintf(p->fatal, sizeof(p->fatal), "JSON nesting deeper than %d levels",
                 APIKEY_MAX_DEPTH);
        return 0;
    }
    p->stack[p->depth++] = (struct frame){.kind = kind, .line = p->line};
    return 1;
}

/* A value that is not used: a container's contents are skipped. */
static int skip(struct parser *p, const struct value *v)
{
    if (v->type == VALUE_OBJECT || v->type == VALUE_ARRAY)
        return push(p, FRAME_SKIP);
    return 1;
}

/* Report that the value of member name (of the innermost object) is not
 * what it must be, and skip it. */
static int bad_member(struct parser *p, enum frame_kind kind, const char *name,
                      const struct value *v, bool secret, const char *what)
{
    char where[96], got[APIKEY_QUOTE_BUF];
    load_error(p->ld, p->line, "%s must be %s, got %s",
               member_where(p, kind, name, where, sizeof(where)), what, describe(v, secret, got));
    return skip(p, v);
}

/* A number's text as a C string, or false when it is too long to be one
 * of ours (every bound here has well under 40 digits). */
static bool number_text(const struct value *v, char *buf, size_t len)
{
    if (v->type != VALUE_NUMBER || v->len >= len)
        return false;
    memcpy(buf, v->text, v->len);
    buf[v->len] = '\0';
    return true;
}

/* A JSON integer (no fraction, no exponent) from min to max. */
static bool value_integer(const struct value *v, int64_t min, int64_t max, int64_t *out)
{
    char buf[48];
    if (!number_text(v, buf, sizeof(buf)) || strpbrk(buf, ".eE") != NULL)
        return false;
    errno = 0;
    char *end;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || x < min || x > max)
        return false;
    *out = x;
    return true;
}

/* A JSON number from min to max. */
static bool value_double(const struct value *v, double min, double max, double *out)
{
    char buf[48];
    if (!number_text(v, buf, sizeof(buf)))
        return false;
    char *end;
    double x = strtod(buf, &end);
    if (*end != '\0' || !isfinite(x) || x < min || x > max)
        return false;
    *out = x;
    return true;
}

static bool id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

static int read_id(struct parser *p, const struct value *v)
{
    static const char what[] = "a string of 1 to 128 characters from A-Z a-z 0-9 . _ : -";
    if (v->type != VALUE_STRING || v->len == 0 || v->len > LG_APIKEY_ID_MAX)
        return bad_member(p, FRAME_KEY, "id", v, false, what);
    for (size_t i = 0; i < v->len; i++) {
        if (!id_char((unsigned char)v->text[i]))
            return bad_member(p, FRAME_KEY, "id", v, false, what);
    }
    struct lg_apikey *k = cur_key(p);
    /* yajl's string is not NUL-terminated: copy exactly len bytes. */
    k->id = malloc(v->len + 1);
    if (k->id) {
        memcpy(k->id, v->text, v->len);
        k->id[v->len] = '\0';
    }
    if (k->id == NULL) {
        snprintf(p->fatal, sizeof(p->fatal), "out of memory");
        return 0;
    }
    cur_info(p)->has_id = true;
    cur_info(p)->id_line = p->line;
    return 1;
}

/* The digest: 64 hex digits of either case. Never quoted in a message. */
static int read_sha256(struct parser *p, const struct value *v)
{
    char where[96];
    if (v->type != VALUE_STRING)
        return bad_member(p, FRAME_KEY, "sha256", v, true, "a string of 64 hex digits");
    if (v->len != HEX_LEN) {
        load_error(p->ld, p->line, "%s must be 64 hex digits, got %zu character%s",
                   member_where(p, FRAME_KEY, "sha256", where, sizeof(where)), v->len,
                   v->len == 1 ? "" : "s");
        return 1;
    }
    uint8_t digest[DIGEST_LEN];
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        int hi = lg_codec_hex_value((unsigned char)v->text[2 * i]);
        int lo = lg_codec_hex_value((unsigned char)v->text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            load_error(p->ld, p->line, "%s must be 64 hex digits, got a character that is not one",
                       member_where(p, FRAME_KEY, "sha256", where, sizeof(where)));
            return 1;
        }
        digest[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(cur_key(p)->sha256, digest, DIGEST_LEN);
    cur_info(p)->has_sha = true;
    cur_info(p)->sha_line = p->line;
    return 1;
}

/* A new key object in "keys". Past the limit, key objects are skipped
 * after one error. */
static int add_key(struct parser *p, size_t elem)
{
    if (p->nkeys >= LG_APIKEY_MAX_KEYS) {
        if (!p->too_many)
            load_error(p->ld, p->line, "the file holds more than %d keys", LG_APIKEY_MAX_KEYS);
        p->too_many = true;
        return push(p, FRAME_SKIP);
    }
    if (p->nkeys == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        if (cap > LG_APIKEY_MAX_KEYS)
            cap = LG_APIKEY_MAX_KEYS;
        struct lg_apikey *keys = realloc(p->keys, cap * sizeof(*keys));
        if (keys == NULL) {
            snprintf(p->fatal, sizeof(p->fatal), "out of memory");
            return 0;
        }
        p->keys = keys;
        struct key_info *info = realloc(p->info, cap * sizeof(*info));
        if (info == NULL) {
            snprintf(p->fatal, sizeof(p->fatal), "out of memory");
            return 0;
        }
        p->info = info;
        p->cap = cap;
    }
    p->keys[p->nkeys] = (struct lg_apikey){.plan.throttle_presence = LG_CONF_ABSENT};
    p->info[p->nkeys] = (struct key_info){.elem = elem};
    p->nkeys++;
    return push(p, FRAME_KEY);
}

/* A value inside an object: the value of the member named before it. */
static int member_value(struct parser *p, struct frame *f, const struct value *v)
{
    enum member m = f->pending;
    f->pending = MEMBER_NONE;
    switch (m) {
    case MEMBER_KEYS:
        if (v->type != VALUE_ARRAY)
            return bad_member(p, FRAME_TOP, "keys", v, true, "an array");
        return push(p, FRAME_KEYS);
    case MEMBER_ID:
        return read_id(p, v);
    case MEMBER_SHA256:
        return read_sha256(p, v);
    case MEMBER_THROTTLE:
        if (v->type == VALUE_NULL) {
            cur_key(p)->plan.throttle_presence = LG_CONF_NULL;
            return 1;
        }
        if (v->type != VALUE_OBJECT)
            return bad_member(p, FRAME_KEY, "throttle", v, false,
                              "an object with \"rate\" and \"burst\", or null");
        cur_key(p)->plan.throttle_presence = LG_CONF_SET;
        return push(p, FRAME_THROTTLE);
    case MEMBER_QUOTA:
        /* null reads as absent: no quota, as null turns a setting off in
         * the main config. */
        if (v->type == VALUE_NULL)
            return 1;
        if (v->type != VALUE_OBJECT)
            return bad_member(p, FRAME_KEY, "quota", v, false,
                              "an object with \"limit\" and \"period\", or null");
        cur_key(p)->plan.quota_set = true;
        return push(p, FRAME_QUOTA);
    case MEMBER_RATE:
        if (!value_double(v, RATE_MIN, RATE_MAX, &cur_key(p)->plan.throttle.rate))
            return bad_member(p, FRAME_THROTTLE, "rate", v, false,
                              "a number from 0.001 to 1000000");
        return 1;
    case MEMBER_BURST:
        if (!value_integer(v, 1, BURST_MAX, &cur_key(p)->plan.throttle.burst))
            return bad_member(p, FRAME_THROTTLE, "burst", v, false, "an integer from 1 to 1000000");
        return 1;
    case MEMBER_LIMIT:
        if (!value_integer(v, 1, INT64_MAX, &cur_key(p)->plan.quota_limit))
            return bad_member(p, FRAME_QUOTA, "limit", v, false,
                              "an integer from 1 to 9223372036854775807");
        return 1;
    case MEMBER_PERIOD:
        if (v->type == VALUE_STRING) {
            for (size_t i = 0; i < LG_ARRAY_LEN(period_names); i++) {
                if (v->len == strlen(period_names[i]) &&
                    memcmp(v->text, period_names[i], v->len) == 0) {
                    cur_key(p)->plan.quota_period = (enum lg_apikey_period)i;
                    return 1;
                }
            }
        }
        return bad_member(p, FRAME_QUOTA, "period", v, false, "\"day\", \"week\" or \"month\"");
    case MEMBER_IGNORE:
    case MEMBER_NONE:
        break;
    }
    return skip(p, v);
}

/* Every value goes here first: it is placed by the innermost frame. */
static int on_value(struct parser *p, const struct value *v)
{
    char got[APIKEY_QUOTE_BUF];
    if (p->depth == 0) {
        if (v->type == VALUE_OBJECT) {
            p->saw_top = true;
            return push(p, FRAME_TOP);
        }
        load_error(p->ld, p->line, "the top level must be an object, got %s",
                   describe(v, true, got));
        return skip(p, v);
    }
    struct frame *f = &p->stack[p->depth - 1];
    switch (f->kind) {
    case FRAME_SKIP:
        return skip(p, v);
    case FRAME_KEYS: {
        size_t elem = f->count++;
        if (v->type == VALUE_OBJECT)
            return add_key(p, elem);
        /* A digest listed bare ("keys": ["ab12..."]) is a likely mistake:
         * describe strings by type only. */
        load_error(p->ld, p->line, "keys[%zu] must be an object, got %s", elem,
                   describe(v, v->type == VALUE_STRING || v->type == VALUE_NUMBER, got));
        return skip(p, v);
    }
    default:
        return member_value(p, f, v);
    }
}

/* The members an object of this kind may hold. */
static const struct member_name *members_of(enum frame_kind kind, size_t *n)
{
    switch (kind) {
    case FRAME_TOP:
        *n = LG_ARRAY_LEN(top_members);
        return top_members;
    case FRAME_KEY:
        *n = LG_ARRAY_LEN(key_members);
        return key_members;
    case FRAME_THROTTLE:
        *n = LG_ARRAY_LEN(throttle_members);
        return throttle_members;
    case FRAME_QUOTA:
        *n = LG_ARRAY_LEN(quota_members);
        return quota_members;
    default:
        *n = 0;
        return NULL;
    }
}

/* An object is closed: report the members it needed and did not get. */
static void finish_object(struct parser *p, const struct frame *f)
{
    static const struct {
        enum frame_kind kind;
        enum member member;
        const char *name;
    } required[] = {
        {FRAME_TOP, MEMBER_KEYS, "keys"},        {FRAME_KEY, MEMBER_ID, "id"},
        {FRAME_KEY, MEMBER_SHA256, "sha256"},    {FRAME_THROTTLE, MEMBER_RATE, "rate"},
        {FRAME_THROTTLE, MEMBER_BURST, "burst"}, {FRAME_QUOTA, MEMBER_LIMIT, "limit"},
        {FRAME_QUOTA, MEMBER_PERIOD, "period"},
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(required); i++) {
        if (required[i].kind == f->kind && !(f->seen & (1u << required[i].member))) {
            char where[64];
            load_error(p->ld, f->line, "missing required key \"%s\" in %s", required[i].name,
                       frame_where(p, f->kind, where, sizeof(where)));
        }
    }
}

static int cb_null(void *ctx)
{
    return on_value(ctx, &(struct value){.type = VALUE_NULL});
}

static int cb_boolean(void *ctx, int b)
{
    return on_value(ctx, &(struct value){.type = VALUE_BOOL, .boolean = b != 0});
}

static int cb_number(void *ctx, const char *s, size_t len)
{
    return on_value(ctx, &(struct value){.type = VALUE_NUMBER, .text = s, .len = len});
}

static int cb_string(void *ctx, const unsigned char *s, size_t len)
{
    return on_value(ctx,
                    &(struct value){.type = VALUE_STRING, .text = (const char *)s, .len = len});
}

static int cb_start_map(void *ctx)
{
    return on_value(ctx, &(struct value){.type = VALUE_OBJECT});
}

static int cb_start_array(void *ctx)
{
    return on_value(ctx, &(struct value){.type = VALUE_ARRAY});
}

static int cb_end(void *ctx)
{
    struct parser *p = ctx;
    const struct frame *f = &p->stack[--p->depth];
    if (f->kind != FRAME_KEYS && f->kind != FRAME_SKIP)
        finish_object(p, f);
    return 1;
}

/* A member name: unknown and repeated names are reported here, at their
 * line, and their values skipped. */
static int cb_map_key(void *ctx, const unsigned char *key, size_t len)
{
    struct parser *p = ctx;
    struct frame *f = &p->stack[p->depth - 1];
    if (f->kind == FRAME_SKIP)
        return 1;
    size_t n;
    const struct member_name *names = members_of(f->kind, &n);
    char q[APIKEY_QUOTE_BUF], where[64];
    for (size_t i = 0; i < n; i++) {
        if (len == strlen(names[i].name) && memcmp(key, names[i].name, len) == 0) {
            unsigned bit = 1u << names[i].member;
            if (f->seen & bit) {
                load_error(p->ld, p->line, "duplicate key \"%s\" in %s", names[i].name,
                           frame_where(p, f->kind, where, sizeof(where)));
                f->pending = MEMBER_IGNORE;
            } else {
                f->seen |= bit;
                f->pending = names[i].member;
            }
            return 1;
        }
    }
    /* A digest pasted as a member name is not echoed either. */
    if (len == HEX_LEN && all_hex((const char *)key, len))
        load_error(p->ld, p->line, "unknown key (64 hex digits, not shown) in %s",
                   frame_where(p, f->kind, where, sizeof(where)));
    else
        load_error(p->ld, p->line, "unknown key %s in %s", quote(q, (const char *)key, len),
                   frame_where(p, f->kind, where, sizeof(where)));
    f->pending = MEMBER_IGNORE;
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

/* yajl's message never echoes input, so no digest can leak through it. */
static void report_yajl_error(struct loader *ld, yajl_handle h, int line)
{
    char text[LG_ERR_LEN];
    lg_json_yajl_error(h, text, sizeof(text));
    load_error(ld, line, "JSON syntax error: %s", text);
}

/* Parse text into p's keys. yajl gives no positions, so the text is fed
 * one line at a time and every callback belongs to the line being fed (a
 * number completes at the byte after it, at the latest the newline fed
 * with its line; JSON strings cannot span lines; comments can, and yield
 * no callbacks). Returns false when the parse stopped (reported). */
static bool parse_text(struct parser *p, const char *text, size_t len)
{
    yajl_handle h = yajl_alloc(&parse_callbacks, NULL, p);
    if (h == NULL) {
        load_error(p->ld, 0, "out of memory");
        return false;
    }
    yajl_config(h, yajl_allow_comments, 1);

    yajl_status st = lg_json_parse_lines(h, text, len, &p->line);
    if (st == yajl_status_client_canceled)
        load_error(p->ld, p->line, "%s", p->fatal);
    else if (st == yajl_status_error)
        report_yajl_error(p->ld, h, p->line);
    yajl_free(h);
    return st == yajl_status_ok;
}

/* ------------------------------------------------------------------------
 * Indexes
 * ------------------------------------------------------------------------ */

/* The smallest power of two >= 2n (and >= 2): at most half the slots are
 * used, so a probe meets an empty slot soon. */
static size_t table_size(size_t n)
{
    size_t size = 2;
    while (size < 2 * n)
        size *= 2;
    return size;
}

/* The first slot of a digest. A real SHA-256 digest is uniform in every
 * byte and a client cannot aim at a slot without a preimage, so its first
 * bytes would do; but the file may hold made-up "digests" (all zeros but
 * the last bytes, say) that would pile into one cluster and make the load
 * quadratic. So all 32 bytes are folded and mixed (a multiplicative hash):
 * a few operations, no secret involved. */
static size_t digest_slot(const uint8_t *digest, size_t mask)
{
    uint64_t h = 0;
    for (size_t w = 0; w < DIGEST_LEN; w += 8) {
        uint64_t x = 0;
        for (size_t i = 0; i < 8; i++)
            x = x << 8 | digest[w + i];
        h ^= x;
    }
    h ^= h >> 32;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (size_t)h & mask;
}

/* FNV-1a, for the duplicate-id check at load time only. */
static uint64_t id_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Report every id used twice, at the later one's line. */
static void check_ids(struct loader *ld, const struct parser *p)
{
    size_t size = table_size(p->nkeys);
    uint32_t *table = calloc(size, sizeof(*table));
    if (table == NULL) {
        load_error(ld, 0, "out of memory");
        return;
    }
    for (size_t k = 0; k < p->nkeys; k++) {
        if (!p->info[k].has_id)
            continue;
        const char *id = p->keys[k].id;
        size_t slot = (size_t)id_hash(id) & (size - 1);
        for (;;) {
            uint32_t e = table[slot];
            if (e == 0) {
                table[slot] = (uint32_t)k + 1;
                break;
            }
            if (strcmp(p->keys[e - 1].id, id) == 0) {
                char q[APIKEY_QUOTE_BUF];
                load_error(ld, p->info[k].id_line,
                           "duplicate id %s in keys[%zu] (first in keys[%zu] at line %d)",
                           quote(q, id, strlen(id)), p->info[k].elem, p->info[e - 1].elem,
                           p->info[e - 1].id_line);
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
    }
    free(table);
}

/* Build the digest index of set from p's keys, reporting every digest
 * given twice (two ids for one key) at the later one's line. The digest
 * itself is never in the message. */
static void build_index(struct loader *ld, const struct parser *p, struct lg_apikeys *set)
{
    size_t size = table_size(p->nkeys);
    set->index = calloc(size, sizeof(*set->index));
    if (set->index == NULL) {
        load_error(ld, 0, "out of memory");
        return;
    }
    set->index_mask = size - 1;
    for (size_t k = 0; k < p->nkeys; k++) {
        if (!p->info[k].has_sha)
            continue;
        size_t slot = digest_slot(p->keys[k].sha256, set->index_mask);
        for (;;) {
            uint32_t e = set->index[slot];
            if (e == 0) {
                set->index[slot] = (uint32_t)k + 1;
                break;
            }
            if (memcmp(p->keys[e - 1].sha256, p->keys[k].sha256, DIGEST_LEN) == 0) {
                const struct key_info *first = &p->info[e - 1];
                char q[APIKEY_QUOTE_BUF];
                char id_part[APIKEY_QUOTE_BUF + 8] = "";
                if (first->has_id)
                    snprintf(id_part, sizeof(id_part), "id %s, ",
                             quote(q, p->keys[e - 1].id, strlen(p->keys[e - 1].id)));
                load_error(ld, p->info[k].sha_line,
                           "keys[%zu].sha256 repeats the digest of keys[%zu] (%sline %d): one key "
                           "cannot have two ids",
                           p->info[k].elem, first->elem, id_part, first->sha_line);
                break;
            }
            slot = (slot + 1) & set->index_mask;
        }
    }
}

/* ------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------ */

static void free_keys(struct lg_apikey *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i].id);
    free(keys);
}

void lg_apikeys_free(struct lg_apikeys *set)
{
    if (set == NULL)
        return;
    free_keys(set->keys, set->nkeys);
    free(set->index);
    free(set);
}

struct lg_apikeys *lg_apikeys_load_text(const char *text, size_t len, lg_apikey_error_cb on_error,
                                        void *arg)
{
    struct loader ld = {0};
    struct parser p = {.ld = &ld, .line = 1};
    struct lg_apikeys *set = NULL;

    if (len > LG_APIKEY_FILE_MAX) {
        load_error(&ld, 0, "the file is larger than %u bytes", LG_APIKEY_FILE_MAX);
        goto done;
    }
    /* yajl would stop at a NUL with a vaguer message. */
    const char *nul = len > 0 ? memchr(text, '\0', len) : NULL;
    if (nul != NULL) {
        int line = 1;
        for (const char *c = text; c < nul; c++)
            line += *c == '\n';
        load_error(&ld, line, "the file contains a NUL byte");
        goto done;
    }
    if (!parse_text(&p, text, len))
        goto done;
    /* Without a top-level object its absence was reported; without a
     * complete parse, no more checks. */
    if (!p.saw_top)
        goto done;

    set = calloc(1, sizeof(*set));
    if (set == NULL) {
        load_error(&ld, 0, "out of memory");
        goto done;
    }
    check_ids(&ld, &p);
    build_index(&ld, &p, set);
    if (ld.failed)
        goto done;

    /* Give back the growth slack of the array. */
    if (p.nkeys > 0 && p.nkeys < p.cap) {
        struct lg_apikey *keys = realloc(p.keys, p.nkeys * sizeof(*keys));
        if (keys != NULL)
            p.keys = keys;
    }
    set->keys = p.keys;
    set->nkeys = p.nkeys;
    p.keys = NULL;
    p.nkeys = 0;

done:
    free_keys(p.keys, p.nkeys);
    free(p.info);
    if (ld.failed) {
        lg_apikeys_free(set);
        set = NULL;
    }
    deliver_errors(&ld, on_error, arg);
    return set;
}

struct lg_apikeys *lg_apikeys_load(const char *path, lg_apikey_error_cb on_error, void *arg)
{
    struct loader ld = {0};
    char *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        load_error(&ld, 0, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        load_error(&ld, 0, "not a regular file");
        goto fail;
    }
    if (st.st_size > (off_t)LG_APIKEY_FILE_MAX) {
        load_error(&ld, 0, "the file is larger than %u bytes", LG_APIKEY_FILE_MAX);
        goto fail;
    }
    /* Room for the size seen plus one byte, grown up to one byte past the
     * limit: the file may change while it is read. */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    text = malloc(cap);
    if (text == NULL) {
        load_error(&ld, 0, "out of memory");
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            if (cap > LG_APIKEY_FILE_MAX)
                break;
            size_t ncap =
                cap * 2 > (size_t)LG_APIKEY_FILE_MAX + 1 ? (size_t)LG_APIKEY_FILE_MAX + 1 : cap * 2;
            char *t = realloc(text, ncap);
            if (t == NULL) {
                load_error(&ld, 0, "out of memory");
                goto fail;
            }
            text = t;
            cap = ncap;
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            load_error(&ld, 0, "cannot read: %s", strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    struct lg_apikeys *set = lg_apikeys_load_text(text, len, on_error, arg);
    free(text);
    return set;

fail:
    if (fd >= 0)
        close(fd);
    free(text);
    deliver_errors(&ld, on_error, arg);
    return NULL;
}

/* ------------------------------------------------------------------------
 * Lookup
 * ------------------------------------------------------------------------ */

const struct lg_apikey *lg_apikeys_find(const struct lg_apikeys *set, const char *value, size_t len)
{
    if (set == NULL || value == NULL || len == 0 || len > LG_APIKEY_VALUE_MAX || set->index == NULL)
        return NULL;
    uint8_t digest[DIGEST_LEN];
    if (SHA256((const unsigned char *)value, len, digest) == NULL)
        return NULL;
    size_t slot = digest_slot(digest, set->index_mask);
    /* The table is at most half full, so the probe ends at an empty slot;
     * the bound is only a guard. */
    for (size_t probes = 0; probes <= set->index_mask; probes++) {
        uint32_t e = set->index[slot];
        if (e == 0)
            return NULL;
        const struct lg_apikey *k = &set->keys[e - 1];
        if (CRYPTO_memcmp(k->sha256, digest, DIGEST_LEN) == 0)
            return k;
        slot = (slot + 1) & set->index_mask;
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Quota periods
 * ------------------------------------------------------------------------ */

/* Floor division and modulo: C's / and % round toward zero, which is wrong
 * for times before the epoch. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d (Howard
 * Hinnant's days_from_civil): eras of 400 years start on March 1st so that
 * the leap day is the last day of a year. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse: year and month of a day number. */
static void civil_from_days(int64_t z, int64_t *year, int *month)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (m <= 2);
    *month = m;
}

/* Seconds at the start of a day number, saturated: near the ends of
 * int64_t the bounds stick to the ends rather than overflow. */
static int64_t day_start(int64_t days)
{
    int64_t s;
    if (__builtin_mul_overflow(days, (int64_t)86400, &s))
        return days < 0 ? INT64_MIN : INT64_MAX;
    return s;
}

void lg_apikey_period_bounds(enum lg_apikey_period p, int64_t now, int64_t *start, int64_t *end)
{
    int64_t days = floor_div(now, 86400);
    switch (p) {
    case LG_QUOTA_WEEK: {
        /* 1970-01-01 was a Thursday: day 0 is weekday 3 counting Monday as 0. */
        int64_t weekday = (days + 3) - floor_div(days + 3, 7) * 7;
        *start = day_start(days - weekday);
        *end = day_start(days - weekday + 7);
        return;
    }
    case LG_QUOTA_MONTH: {
        int64_t y;
        int m;
        civil_from_days(days, &y, &m);
        *start = day_start(days_from_civil(y, m, 1));
        *end = day_start(m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1));
        return;
    }
    case LG_QUOTA_DAY:
    default:
        *start = day_start(days);
        *end = day_start(days + 1);
        return;
    }
}
