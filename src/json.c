/* json.c - bounded parsing of untrusted JSON; a fast JSON writer. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/codec.h"
#include "lambdagate/json.h"

/* Reject what yajl cannot be trusted with before it sees the text: a NUL
 * byte (yajl_tree_parse reads a C string), nesting deeper than max_depth
 * (its tree builder recurses per level), and comments (which it allows).
 * Brackets inside strings do not count. */
static int json_precheck(const char *text, size_t len, size_t max_depth, char *err, size_t errlen)
{
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL) {
        snprintf(err, errlen, "NUL byte at offset %zu", (size_t)(nul - text));
        return -1;
    }
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '/') {
            /* yajl_tree_parse turns comments on; JSON has none, and '/' is
             * legal only inside strings. */
            snprintf(err, errlen, "comment or stray '/' at offset %zu", i);
            return -1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                snprintf(err, errlen, "nesting deeper than %zu", max_depth);
                return -1;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Parsing: a strict recursive-descent parser that builds yajl's public     */
/* tree nodes (struct yajl_val_s) in one arena.                            */
/* ---------------------------------------------------------------------- */

/* yajl_tree_parse makes one allocation per node, key and string, and a
 * Lambda answer is parsed on every request: here the whole tree lives in
 * one arena (usually a single block), freed at once. The tree is the same
 * shape yajl builds, so callers use yajl's accessors and macros as before;
 * only lg_json_free() may free it. Semantics follow yajl_tree_parse: strings
 * are NUL-terminated (a decoded \u0000 ends the C string), a number keeps
 * its text with YAJL_NUMBER_INT_VALID when it is an integer that fits and
 * YAJL_NUMBER_DOUBLE_VALID when strtod takes it, duplicate keys are kept.
 * Stricter than yajl: UTF-8 must be well-formed, lone surrogates are
 * refused. */

struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

struct parser {
    const char *start;
    const char *p;
    const char *end;
    struct arena_block *first;
    struct arena_block *cur;
    size_t depth;
    size_t max_depth;
    char *err;
    size_t errlen;
    bool failed;
};

#define ARENA_ALIGN sizeof(max_align_t)

static struct arena_block *arena_block_new(size_t cap)
{
    struct arena_block *b = malloc(sizeof(*b) + cap);
    if (b) {
        b->next = NULL;
        b->used = 0;
        b->cap = cap;
    }
    return b;
}

static void *arena_alloc(struct parser *ps, size_t n)
{
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    struct arena_block *b = ps->cur;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = b ? b->cap * 2 : 1024;
        if (cap < n)
            cap = n;
        struct arena_block *nb = arena_block_new(cap);
        if (nb == NULL) {
            snprintf(ps->err, ps->errlen, "out of memory");
            ps->failed = true;
            return NULL;
        }
        if (b)
            b->next = nb;
        else
            ps->first = nb;
        ps->cur = b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(struct arena_block *b)
{
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
}

static bool parse_fail(struct parser *ps, const char *why)
{
    if (!ps->failed)
        snprintf(ps->err, ps->errlen, "invalid JSON: %s at offset %zu", why,
                 (size_t)(ps->p - ps->start));
    ps->failed = true;
    return false;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool literal(struct parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return parse_fail(ps, "unexpected character");
    ps->p += n;
    return true;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = lg_codec_hex_value((unsigned char)p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A string starting at '"': decoded into the arena (never longer than its
 * source), NUL-terminated. */
static char *parse_string(struct parser *ps)
{
    const char *q = ++ps->p; /* past the quote */
    /* Fast path: find the end of a string without escapes or controls. */
    while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
        q++;
    if (q < ps->end && *q == '"') {
        size_t n = (size_t)(q - ps->p);
        if (!lg_codec_utf8_valid(ps->p, n))
            return parse_fail(ps, "string is not valid UTF-8"), NULL;
        char *out = arena_alloc(ps, n + 1);
        if (out == NULL)
            return NULL;
        memcpy(out, ps->p, n);
        out[n] = '\0';
        ps->p = q + 1;
        return out;
    }
    /* Escapes: find the closing quote first to size the output. */
    const char *e = ps->p;
    while (e < ps->end && *e != '"') {
        if ((unsigned char)*e < 0x20)
            return ps->p = e, parse_fail(ps, "control character in string"), NULL;
        e += *e == '\\' ? 2 : 1;
    }
    if (e >= ps->end)
        return parse_fail(ps, "unterminated string"), NULL;
    char *out = arena_alloc(ps, (size_t)(e - ps->p) + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    const char *p = ps->p;
    while (p < e) {
        const char *run = p;
        while (p < e && *p != '\\')
            p++;
        if (p > run) {
            if (!lg_codec_utf8_valid(run, (size_t)(p - run)))
                return ps->p = run, parse_fail(ps, "string is not valid UTF-8"), NULL;
            memcpy(o, run, (size_t)(p - run));
            o += p - run;
        }
        if (p == e)
            break;
        char c = p[1];
        p += 2;
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '/':
            *o++ = '/';
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            int cp = e - p >= 4 ? hex4(p) : -1;
            if (cp < 0)
                return ps->p = p, parse_fail(ps, "bad \\u escape"), NULL;
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = e - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return ps->p = p, parse_fail(ps, "lone surrogate"), NULL;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return ps->p = p, parse_fail(ps, "lone surrogate"), NULL;
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xc0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xe0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *o++ = (char)(0xf0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            return ps->p = p - 2, parse_fail(ps, "bad escape"), NULL;
        }
    }
    *o = '\0';
    ps->p = e + 1;
    return out;
}

static bool parse_number(struct parser *ps, yajl_val v)
{
    const char *s = ps->p, *p = s;
    if (p < ps->end && *p == '-')
        p++;
    if (p >= ps->end || *p < '0' || *p > '9')
        return parse_fail(ps, "bad number");
    if (*p == '0') {
        p++;
    } else {
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    bool integer = true;
    if (p < ps->end && *p == '.') {
        integer = false;
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return ps->p = p, parse_fail(ps, "bad number");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < ps->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return ps->p = p, parse_fail(ps, "bad number");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - s);
    char *text = arena_alloc(ps, n + 1);
    if (text == NULL)
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    v->type = yajl_t_number;
    v->u.number.r = text;
    v->u.number.flags = 0;
    v->u.number.i = 0;
    if (integer) {
        const char *d = text + (text[0] == '-');
        uint64_t u = 0;
        bool fits = true;
        for (; *d; d++) {
            unsigned digit = (unsigned)(*d - '0');
            if (u > (UINT64_MAX - digit) / 10) {
                fits = false;
                break;
            }
            u = u * 10 + digit;
        }
        if (fits && text[0] == '-' && u <= (uint64_t)INT64_MAX + 1) {
            v->u.number.i = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(long long)u;
            v->u.number.flags |= YAJL_NUMBER_INT_VALID;
        } else if (fits && text[0] != '-' && u <= (uint64_t)INT64_MAX) {
            v->u.number.i = (long long)u;
            v->u.number.flags |= YAJL_NUMBER_INT_VALID;
        }
    }
    char *endp = NULL;
    errno = 0;
    v->u.number.d = strtod(text, &endp);
    if (errno == 0 && endp != NULL && *endp == '\0')
        v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
    ps->p = p;
    return true;
}

static bool parse_value(struct parser *ps, yajl_val v);

/* Children of a container, gathered before their arrays are sized: a few
 * fit on the stack; more spill into arena arrays that double. */
struct gather {
    yajl_val local_vals[8];
    const char *local_keys[8];
    yajl_val *vals;
    const char **keys;
    size_t n, cap;
};

static bool gather_push(struct parser *ps, struct gather *g, const char *key, yajl_val val)
{
    if (g->n == g->cap) {
        size_t cap = g->cap * 2;
        yajl_val *vals = arena_alloc(ps, cap * sizeof(*vals));
        const char **keys = key ? arena_alloc(ps, cap * sizeof(*keys)) : NULL;
        if (vals == NULL || (key && keys == NULL))
            return false;
        memcpy(vals, g->vals, g->n * sizeof(*vals));
        if (key)
            memcpy(keys, g->keys, g->n * sizeof(*keys));
        g->vals = vals;
        g->keys = keys;
        g->cap = cap;
    }
    g->vals[g->n] = val;
    if (key)
        g->keys[g->n] = key;
    g->n++;
    return true;
}

static bool parse_container(struct parser *ps, yajl_val v, bool object)
{
    if (++ps->depth > ps->max_depth)
        return parse_fail(ps, "nesting too deep");
    ps->p++; /* '{' or '[' */
    struct gather g;
    g.vals = g.local_vals;
    g.keys = g.local_keys;
    g.n = 0;
    g.cap = LG_ARRAY_LEN(g.local_vals);
    skip_ws(ps);
    char close = object ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
    } else {
        for (;;) {
            const char *key = NULL;
            if (object) {
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"')
                    return parse_fail(ps, "expected a member name");
                key = parse_string(ps);
                if (key == NULL)
                    return false;
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':')
                    return parse_fail(ps, "expected ':'");
                ps->p++;
            }
            yajl_val child = arena_alloc(ps, sizeof(*child));
            if (child == NULL || !parse_value(ps, child) || !gather_push(ps, &g, key, child))
                return false;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == close) {
                ps->p++;
                break;
            }
            return parse_fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    yajl_val *vals = NULL;
    const char **keys = NULL;
    if (g.n > 0) {
        vals = arena_alloc(ps, g.n * sizeof(*vals));
        keys = object ? arena_alloc(ps, g.n * sizeof(*keys)) : NULL;
        if (vals == NULL || (object && keys == NULL))
            return false;
        memcpy(vals, g.vals, g.n * sizeof(*vals));
        if (object)
            memcpy(keys, g.keys, g.n * sizeof(*keys));
    }
    if (object) {
        v->type = yajl_t_object;
        v->u.object.keys = keys;
        v->u.object.values = vals;
        v->u.object.len = g.n;
    } else {
        v->type = yajl_t_array;
        v->u.array.values = vals;
        v->u.array.len = g.n;
    }
    ps->depth--;
    return true;
}

static bool parse_value(struct parser *ps, yajl_val v)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return parse_fail(ps, "unexpected end of text");
    switch (*ps->p) {
    case '{':
        return parse_container(ps, v, true);
    case '[':
        return parse_container(ps, v, false);
    case '"': {
        char *str = parse_string(ps);
        if (str == NULL)
            return false;
        v->type = yajl_t_string;
        v->u.string = str;
        return true;
    }
    case 't':
        v->type = yajl_t_true;
        return literal(ps, "true", 4);
    case 'f':
        v->type = yajl_t_false;
        return literal(ps, "false", 5);
    case 'n':
        v->type = yajl_t_null;
        return literal(ps, "null", 4);
    default:
        return parse_number(ps, v);
    }
}

yajl_val lg_json_parse(const char *text, size_t len, size_t max_len, size_t max_depth, char *err,
                       size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (len > max_len) {
        snprintf(err, errlen, "JSON text of %zu bytes exceeds %zu", len, max_len);
        return NULL;
    }
    if (json_precheck(text, len, max_depth, err, errlen) != 0)
        return NULL;
    struct parser ps = {
        .start = text,
        .p = text,
        .end = text + len,
        .max_depth = max_depth,
        .err = err,
        .errlen = errlen,
    };
    /* One block sized for the usual document; the root is its first node,
     * which is how lg_json_free() finds the block again. */
    ps.first = ps.cur = arena_block_new(len * 2 + 1024);
    if (ps.first == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    yajl_val root = arena_alloc(&ps, sizeof(*root));
    if (root == NULL || !parse_value(&ps, root)) {
        arena_free(ps.first);
        return NULL;
    }
    skip_ws(&ps);
    if (ps.p != ps.end) {
        parse_fail(&ps, "trailing text after the value");
        arena_free(ps.first);
        return NULL;
    }
    return root;
}

void lg_json_free(yajl_val v)
{
    if (v == NULL)
        return;
    arena_free((struct arena_block *)((char *)v - offsetof(struct arena_block, data)));
}

yajl_val lg_json_get(yajl_val obj, const char *key)
{
    if (obj == NULL || !YAJL_IS_OBJECT(obj))
        return NULL;
    size_t n = obj->u.object.len;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0)
            return obj->u.object.values[i];
    }
    return NULL;
}

const char *lg_json_get_string(yajl_val obj, const char *key)
{
    yajl_val v = lg_json_get(obj, key);
    return v && YAJL_IS_STRING(v) ? v->u.string : NULL;
}

/* The exact integer that the JSON number text s denotes ("2e2", "200.0",
 * "-9223372036854775808"), or false when it has a non-zero fraction or does
 * not fit int64_t. Decided on the text: a double would round
 * "1.00000000000000001" to 1 and "9007199254740993.0" to ...992. */
static bool number_text_to_int64(const char *s, int64_t *out)
{
    const char *p = s;
    bool negative = *p == '-';
    if (negative)
        p++;
    char digits[64]; /* significant mantissa digits, leading zeros dropped */
    size_t ndigits = 0;
    long point = 0; /* digits left of the decimal point */
    bool seen_point = false;
    for (;; p++) {
        if (*p == '.' && !seen_point) {
            seen_point = true;
            continue;
        }
        if (*p < '0' || *p > '9')
            break;
        if (ndigits == 0 && *p == '0') {
            if (!seen_point)
                continue; /* leading zero of the integer part */
            point--;      /* 0.00ddd: the point moves right past it */
            continue;
        }
        if (ndigits == sizeof(digits)) {
            if (*p != '0' || !seen_point)
                return false; /* far too long for an int64 */
            continue;         /* trailing zeros of the fraction */
        }
        digits[ndigits++] = *p;
        if (!seen_point)
            point++;
    }
    long exp = 0;
    if (*p == 'e' || *p == 'E') {
        char *end;
        exp = strtol(p + 1, &end, 10);
        if (exp > 40 || exp < -1000)
            return ndigits == 0 ? (*out = 0, true) : false;
    }
    point += exp;
    if (ndigits == 0) {
        *out = 0;
        return true;
    }
    if (point > 19)
        return false;
    for (long i = point < 0 ? 0 : point; i < (long)ndigits; i++) {
        if (digits[i] != '0')
            return false; /* a fraction remains */
    }
    if (point <= 0)
        return false; /* 0.ddd with a non-zero digit */
    /* The integer is digits[0..point), padded with zeros. */
    uint64_t v = 0;
    for (long i = 0; i < point; i++) {
        unsigned d = i < (long)ndigits ? (unsigned)(digits[i] - '0') : 0;
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (negative) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

bool lg_json_integer(yajl_val v, int64_t *out)
{
    if (v == NULL || !YAJL_IS_NUMBER(v))
        return false;
    if (v->u.number.flags & YAJL_NUMBER_INT_VALID) {
        *out = v->u.number.i;
        return true;
    }
    /* "200.0", "2e2", or INT64_MIN (which overflows yajl's own integer
     * parse): accept when the text is an exact integer within int64_t. */
    return v->u.number.r != NULL && number_text_to_int64(v->u.number.r, out);
}

/* ---------------------------------------------------------------------- */
/* Writing JSON                                                            */
/* ---------------------------------------------------------------------- */

/* Append s[0..n) as a quoted JSON string (-1 for malformed UTF-8 in strict
 * mode, -2 when out refuses to grow). Runs of bytes that need nothing
 * are copied whole; quotes, backslashes and control bytes (DEL too, so
 * that log lines never carry one) are escaped;
 * UTF-8 is checked sequence by sequence (overlongs, surrogates and code
 * points past U+10FFFF are not well-formed). With strict a malformed
 * sequence fails the call (-1, out unchanged); without, each bad byte
 * becomes U+FFFD. */
static int escape_string(struct lg_buf *out, const char *str, size_t n, bool strict)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t start = out->len;
    if (lg_buf_reserve(out, n + 2) != 0 || lg_buf_putc(out, '"') != 0)
        goto no_room;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        /* Eight bytes at a time while none needs work: no byte below 0x20,
         * none with the high bit, no '"', '\\' or DEL (SWAR: a byte of
         * has_zero(x) is set when that byte of x is zero). */
        while (n - run >= 8) {
            uint64_t w;
            memcpy(&w, s + run, 8);
            const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
#define HAS_ZERO(x) (((x)-ones) & ~(x)&highs)
            uint64_t bad = ((w - 0x2020202020202020ull) & ~w & highs) | (w & highs) |
                           HAS_ZERO(w ^ 0x2222222222222222ull) |
                           HAS_ZERO(w ^ 0x5c5c5c5c5c5c5c5cull) |
                           HAS_ZERO(w ^ 0x7f7f7f7f7f7f7f7full);
#undef HAS_ZERO
            if (bad)
                break;
            run += 8;
        }
        while (run < n && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i && lg_buf_append(out, s + i, run - i) != 0)
            goto no_room;
        i = run;
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + len <= n && lg_codec_utf8_valid(str + i, len)) {
                if (lg_buf_append(out, s + i, len) != 0)
                    goto no_room;
                i += len;
            } else if (strict) {
                goto bad;
            } else {
                if (lg_buf_append(out, LG_LITERAL("\\ufffd")) != 0)
                    goto no_room;
                i++;
            }
            continue;
        }
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (lg_buf_append(out, esc, elen) != 0)
            goto no_room;
        i++;
    }
    if (lg_buf_putc(out, '"') != 0)
        goto no_room;
    return 0;
    int rc;
no_room:
    rc = -2;
    goto undo;
bad:
    rc = -1;
undo:
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
    return rc;
}

int lg_json_append_string(struct lg_buf *out, const char *s, size_t n)
{
    return escape_string(out, s, n, false) == 0 ? 0 : -1;
}

void lg_json_writer_init(struct lg_json_writer *w, struct lg_buf *out)
{
    memset(w, 0, sizeof(*w));
    w->out = out;
}

/* Put the separator that the next item needs: a comma between items, a
 * colon after a key. is_string: the item can be a key. */
static int before_item(struct lg_json_writer *w, bool is_string)
{
    if (w->failed)
        return -1;
    uint64_t bit = UINT64_C(1) << w->depth;
    if (w->depth > 0 && (w->in_map & bit)) {
        if (w->expect_value) {
            w->expect_value = false; /* the value after a key: no separator */
            return 0;
        }
        if (!is_string)
            goto fail; /* a key must be a string */
    } else if (w->depth == 0 && (w->seen & 1)) {
        goto fail; /* one value at the top level */
    }
    if ((w->seen & bit) && lg_buf_putc(w->out, ',') != 0) {
        w->no_room = true;
        goto fail;
    }
    w->seen |= bit;
    return 0;
fail:
    w->failed = true;
    return -1;
}

/* After a string: in a map where a key was due, it was the key. */
static int after_string(struct lg_json_writer *w)
{
    uint64_t bit = UINT64_C(1) << w->depth;
    if (w->depth > 0 && (w->in_map & bit) && !w->expect_value && !w->value_written) {
        if (lg_buf_putc(w->out, ':') != 0) {
            w->failed = w->no_room = true;
            return -1;
        }
        w->expect_value = true;
    }
    return 0;
}

static int open_container(struct lg_json_writer *w, bool map)
{
    if (before_item(w, false) != 0)
        return -1;
    if (w->depth + 1 >= LG_JSON_WRITER_MAX_DEPTH) {
        w->failed = true;
        return -1;
    }
    if (lg_buf_putc(w->out, map ? '{' : '[') != 0) {
        w->failed = w->no_room = true;
        return -1;
    }
    w->depth++;
    uint64_t bit = UINT64_C(1) << w->depth;
    w->seen &= ~bit;
    if (map)
        w->in_map |= bit;
    else
        w->in_map &= ~bit;
    return 0;
}

static int close_container(struct lg_json_writer *w, bool map)
{
    uint64_t bit = UINT64_C(1) << w->depth;
    if (w->failed || w->depth == 0 || ((w->in_map & bit) != 0) != map || w->expect_value) {
        w->failed = true;
        return -1;
    }
    if (lg_buf_putc(w->out, map ? '}' : ']') != 0) {
        w->failed = w->no_room = true;
        return -1;
    }
    w->depth--;
    return 0;
}

int lg_json_gen_map_open(struct lg_json_writer *w)
{
    return open_container(w, true);
}

int lg_json_gen_map_close(struct lg_json_writer *w)
{
    return close_container(w, true);
}

int lg_json_gen_array_open(struct lg_json_writer *w)
{
    return open_container(w, false);
}

int lg_json_gen_array_close(struct lg_json_writer *w)
{
    return close_container(w, false);
}

int lg_json_gen_str(struct lg_json_writer *w, const char *s, size_t n)
{
    bool is_value = w->expect_value;
    if (before_item(w, true) != 0)
        return -1;
    int rc = escape_string(w->out, s, n, true);
    if (rc != 0) {
        w->failed = true;
        w->no_room = rc == -2;
        return -1;
    }
    w->value_written = is_value;
    rc = after_string(w);
    w->value_written = false;
    return rc;
}

int lg_json_gen_plain(struct lg_json_writer *w, const char *s, size_t n)
{
    bool is_value = w->expect_value;
    if (before_item(w, true) != 0)
        return -1;
    if (lg_buf_reserve(w->out, n + 2) != 0) {
        w->failed = w->no_room = true;
        return -1;
    }
    /* Room is reserved: these appends cannot fail. */
    char *p = w->out->data + w->out->len;
    p[0] = '"';
    memcpy(p + 1, s, n);
    p[n + 1] = '"';
    w->out->len += n + 2;
    w->out->data[w->out->len] = '\0';
    w->value_written = is_value;
    int rc = after_string(w);
    w->value_written = false;
    return rc;
}

int lg_json_gen_cstr(struct lg_json_writer *w, const char *s)
{
    return lg_json_gen_str(w, s, strlen(s));
}

/* A scalar written as text (number, true, false, null). */
static int gen_raw(struct lg_json_writer *w, const char *text, size_t n)
{
    if (before_item(w, false) != 0)
        return -1;
    if (lg_buf_append(w->out, text, n) != 0) {
        w->failed = w->no_room = true;
        return -1;
    }
    return 0;
}

int lg_json_gen_int(struct lg_json_writer *w, int64_t v)
{
    char digits[24], *p = digits + sizeof(digits);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        *--p = '-';
    return gen_raw(w, p, (size_t)(digits + sizeof(digits) - p));
}

int lg_json_gen_bool(struct lg_json_writer *w, bool v)
{
    return v ? gen_raw(w, LG_LITERAL("true")) : gen_raw(w, LG_LITERAL("false"));
}

int lg_json_gen_value_raw(struct lg_json_writer *w, const char *text, size_t n)
{
    return gen_raw(w, text, n);
}

int lg_json_gen_null(struct lg_json_writer *w)
{
    return gen_raw(w, LG_LITERAL("null"));
}

int lg_json_gen_kv(struct lg_json_writer *w, const char *key, const char *value)
{
    if (lg_json_gen_plain(w, key, strlen(key)) != 0)
        return -1;
    return value ? lg_json_gen_cstr(w, value) : lg_json_gen_null(w);
}

/* ------------------------------------------------------------------------
 * Line-numbered parsing with yajl's callback parser
 * ------------------------------------------------------------------------ */

yajl_status lg_json_parse_lines(yajl_handle h, const char *text, size_t len, int *line)
{
    yajl_status st = yajl_status_ok;
    int last_line = *line; /* last line with something on it: where EOF errors go */
    size_t off = 0;
    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t chunk = nl ? (size_t)(nl - (text + off)) + 1 : len - off;
        for (size_t i = off; i < off + chunk; i++) {
            if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n') {
                last_line = *line;
                break;
            }
        }
        st = yajl_parse(h, (const unsigned char *)text + off, chunk);
        if (st != yajl_status_ok)
            return st;
        off += chunk;
        if (nl)
            (*line)++;
    }
    *line = last_line;
    return yajl_complete_parse(h);
}

void lg_json_yajl_error(yajl_handle h, char *out, size_t outlen)
{
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    const char *text = msg ? (const char *)msg : "malformed JSON";
    const char *colon = strstr(text, "error: ");
    if (colon)
        text = colon + 7;
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        n--;
    snprintf(out, outlen, "%.*s", (int)n, text);
    if (msg)
        yajl_free_error(h, msg);
}
