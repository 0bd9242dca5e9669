/* json.c - bounded parsing of untrusted JSON and yajl_gen helpers. */
#include "config.h"

#include <errno.h>
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
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    char yerr[128] = "";
    yajl_val v = yajl_tree_parse(copy, yerr, sizeof(yerr));
    free(copy);
    if (v == NULL) {
        /* yajl's message spans lines and quotes the input: keep the first
         * line only, so untrusted text never reaches a log whole. */
        char *nl = strchr(yerr, '\n');
        if (nl)
            *nl = '\0';
        snprintf(err, errlen, "invalid JSON: %s", yerr[0] ? yerr : "parse error");
    }
    return v;
}

void lg_json_free(yajl_val v)
{
    if (v)
        yajl_tree_free(v);
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

yajl_gen lg_json_gen_new(void)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (g == NULL)
        return NULL;
    yajl_gen_config(g, yajl_gen_beautify, 0);
    /* Strings are validated strictly by lg_json_gen_str; yajl's weaker
     * check would only scan them a second time. */
    yajl_gen_config(g, yajl_gen_validate_utf8, 0);
    return g;
}

int lg_json_gen_cstr(yajl_gen g, const char *s)
{
    return lg_json_gen_str(g, s, strlen(s));
}

int lg_json_gen_str(yajl_gen g, const char *s, size_t n)
{
    /* yajl's own check only looks at byte patterns (it lets overlongs,
     * surrogates and code points past U+10FFFF through): ours is strict.
     * NUL is valid JSON text (written as \u0000): check around it. */
    for (size_t i = 0; i < n;) {
        const char *nul = memchr(s + i, '\0', n - i);
        size_t end = nul ? (size_t)(nul - s) : n;
        if (!lg_codec_utf8_valid(s + i, end - i))
            return -1;
        i = end + 1;
    }
    return yajl_gen_string(g, (const unsigned char *)s, n) == yajl_gen_status_ok ? 0 : -1;
}

int lg_json_gen_int(yajl_gen g, int64_t v)
{
    return yajl_gen_integer(g, (long long)v) == yajl_gen_status_ok ? 0 : -1;
}

int lg_json_gen_bool(yajl_gen g, bool v)
{
    return yajl_gen_bool(g, v) == yajl_gen_status_ok ? 0 : -1;
}

int lg_json_gen_null(yajl_gen g)
{
    return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
}

int lg_json_gen_kv(yajl_gen g, const char *key, const char *value)
{
    if (lg_json_gen_cstr(g, key) != 0)
        return -1;
    return value ? lg_json_gen_cstr(g, value) : lg_json_gen_null(g);
}

int lg_json_append_string(struct lg_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (lg_buf_putc(out, '"') != 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            /* Copy a well-formed UTF-8 sequence; anything else becomes
             * U+FFFD, so a hostile byte never breaks the line's JSON. */
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + len <= n && lg_codec_utf8_valid(s + i, len)) {
                if (lg_buf_append(out, s + i, len) != 0)
                    return -1;
                i += len;
            } else {
                if (lg_buf_puts(out, "\\ufffd") != 0)
                    return -1;
                i++;
            }
            continue;
        }
        int rc;
        if (c == '"')
            rc = lg_buf_puts(out, "\\\"");
        else if (c == '\\')
            rc = lg_buf_puts(out, "\\\\");
        else if (c == '\n')
            rc = lg_buf_puts(out, "\\n");
        else if (c == '\r')
            rc = lg_buf_puts(out, "\\r");
        else if (c == '\t')
            rc = lg_buf_puts(out, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            rc = lg_buf_puts(out, esc);
        } else
            rc = lg_buf_putc(out, (char)c);
        if (rc != 0)
            return -1;
        i++;
    }
    return lg_buf_putc(out, '"');
}
