/* http.c - HTTP/1.1 message codec shared by the server and the Lambda client.
 *
 * Parsing is strict where leniency lets two parties disagree about where a
 * message ends (request smuggling): Content-Length must be digits and agree
 * with itself, Content-Length together with Transfer-Encoding is refused,
 * obs-fold and bare CR are refused. Everything is bounded by the caller's
 * header-block limit and LG_HTTP_MAX_HEADERS. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <event2/buffer.h>

#include "lambdagate/codec.h"
#include "lambdagate/http.h"

/* tchar per RFC 9110 section 5.6.2. */
static const unsigned char token_chars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool lg_http_is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!token_chars[(unsigned char)s[i]])
            return false;
    }
    return true;
}

bool lg_http_is_field_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

bool lg_http_ieq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

size_t lg_http_head_end(const char *buf, size_t len, size_t *scanned)
{
    size_t i = *scanned;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (nl == NULL)
            break;
        size_t p = (size_t)(nl - buf);
        /* Need to see what follows this LF: another LF, or CR LF, ends the block. */
        if (p + 1 >= len) {
            *scanned = p;
            return 0;
        }
        if (buf[p + 1] == '\n')
            return p + 2;
        if (buf[p + 1] == '\r') {
            if (p + 2 >= len) {
                *scanned = p;
                return 0;
            }
            if (buf[p + 2] == '\n')
                return p + 3;
        }
        i = p + 1;
    }
    *scanned = len;
    return 0;
}

/* Next line of block from *pos: sets *line and *line_len without its line end.
 * Returns false at the end of the block. A CR anywhere but before the LF
 * makes *bad true. */
static bool next_line(const char *block, size_t len, size_t *pos, const char **line,
                      size_t *line_len, bool *bad)
{
    if (*pos >= len)
        return false;
    const char *start = block + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    if (nl == NULL)
        return false;
    size_t n = (size_t)(nl - start);
    *pos += n + 1;
    if (n > 0 && start[n - 1] == '\r')
        n--;
    if (memchr(start, '\r', n) != NULL)
        *bad = true;
    *line = start;
    *line_len = n;
    return true;
}

static void trim_ows(const char **s, size_t *n)
{
    while (*n > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Call fn for each comma-separated element of value (trimmed, empty ones
 * skipped). Stops and returns false when fn does. */
static bool for_each_element(const char *value, size_t len,
                             bool (*fn)(const char *e, size_t n, void *arg), void *arg)
{
    size_t i = 0;
    while (i <= len) {
        const char *comma = memchr(value + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - value) : len;
        const char *e = value + i;
        size_t n = end - i;
        trim_ows(&e, &n);
        if (n > 0 && !fn(e, n, arg))
            return false;
        i = end + 1;
    }
    return true;
}

/* Parse "HTTP/1.x"; -1 when not HTTP at all, -2 when another version. */
static int parse_version(const char *s, size_t n)
{
    if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || s[6] != '.' || s[5] < '0' || s[5] > '9' ||
        s[7] < '0' || s[7] > '9')
        return -1;
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
        return -2;
    return s[7] - '0';
}

static bool cl_element(const char *e, size_t n, void *arg)
{
    int64_t *cl = arg;
    if (n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i] < '0' || e[i] > '9')
            return false;
        v = v * 10 + (e[i] - '0');
    }
    if (*cl >= 0 && *cl != v)
        return false;
    *cl = v;
    return true;
}

struct te_state {
    bool chunked_last; /* the last coding seen is chunked */
    bool other;        /* a coding other than chunked was seen */
    bool chunked_twice;
};

static bool te_element(const char *e, size_t n, void *arg)
{
    struct te_state *st = arg;
    /* Parameters after ';' do not change the coding's name. */
    const char *semi = memchr(e, ';', n);
    if (semi) {
        n = (size_t)(semi - e);
        trim_ows(&e, &n);
    }
    if (lg_http_ieq(e, n, "chunked")) {
        if (st->chunked_last)
            st->chunked_twice = true;
        st->chunked_last = true;
    } else {
        st->other = true;
        st->chunked_last = false;
    }
    return true;
}

struct conn_state {
    bool close;
    bool keep_alive;
};

static bool conn_element(const char *e, size_t n, void *arg)
{
    struct conn_state *st = arg;
    if (lg_http_ieq(e, n, "close"))
        st->close = true;
    else if (lg_http_ieq(e, n, "keep-alive"))
        st->keep_alive = true;
    return true;
}

/* Parse header lines from *pos to the end of block into h and derive the
 * framing fields. -1 with *status on error. */
static int parse_fields(const char *block, size_t len, size_t pos, struct lg_http_head *h,
                        int *status)
{
    const char *line;
    size_t line_len;
    bool bad = false;
    bool have_cl = false;
    bool have_te = false;
    struct te_state te = {0};
    struct conn_state conn = {0};
    h->nheaders = 0;
    h->content_length = -1;
    while (next_line(block, len, &pos, &line, &line_len, &bad)) {
        if (bad) {
            *status = 400;
            return -1;
        }
        if (line_len == 0)
            break; /* the empty line that ends the block */
        if (line[0] == ' ' || line[0] == '\t') {
            *status = 400; /* obs-fold: refused, RFC 9112 section 5.2 */
            return -1;
        }
        const char *colon = memchr(line, ':', line_len);
        if (colon == NULL) {
            *status = 400;
            return -1;
        }
        size_t name_len = (size_t)(colon - line);
        if (!lg_http_is_token(line, name_len)) {
            *status = 400; /* includes whitespace before the colon */
            return -1;
        }
        const char *value = colon + 1;
        size_t value_len = line_len - name_len - 1;
        trim_ows(&value, &value_len);
        if (!lg_http_is_field_value(value, value_len)) {
            *status = 400;
            return -1;
        }
        if (h->nheaders == LG_HTTP_MAX_HEADERS) {
            *status = 431;
            return -1;
        }
        struct lg_http_header *hd = &h->headers[h->nheaders++];
        hd->name = line;
        hd->name_len = name_len;
        hd->value = value;
        hd->value_len = value_len;

        if (lg_http_ieq(line, name_len, "content-length")) {
            have_cl = true;
            if (value_len == 0 ||
                !for_each_element(value, value_len, cl_element, &h->content_length) ||
                h->content_length < 0) {
                *status = 400;
                return -1;
            }
        } else if (lg_http_ieq(line, name_len, "transfer-encoding")) {
            have_te = true;
            for_each_element(value, value_len, te_element, &te);
        } else if (lg_http_ieq(line, name_len, "connection")) {
            for_each_element(value, value_len, conn_element, &conn);
        }
    }
    if (bad) {
        *status = 400;
        return -1;
    }
    if (have_te) {
        /* Both framings at once is how requests are smuggled. */
        if (have_cl || h->version_minor == 0) {
            *status = 400;
            return -1;
        }
        if (te.other || te.chunked_twice || !te.chunked_last) {
            *status = 501;
            return -1;
        }
        h->chunked = true;
    }
    if (h->version_minor >= 1)
        h->keep_alive = !conn.close;
    else
        h->keep_alive = conn.keep_alive && !conn.close;
    return 0;
}

/* Clear what a parse sets (not the header array, filled as it goes). */
static void head_init(struct lg_http_head *h)
{
    memset(h, 0, offsetof(struct lg_http_head, headers));
    h->nheaders = 0;
    h->content_length = -1;
    h->chunked = h->keep_alive = h->expect_continue = false;
}

int lg_http_parse_request_head(const char *block, size_t len, struct lg_http_head *h, int *status)
{
    head_init(h);
    *status = 400;

    size_t pos = 0;
    const char *line;
    size_t line_len;
    bool bad = false;
    if (!next_line(block, len, &pos, &line, &line_len, &bad) || bad)
        return -1;
    /* method SP request-target SP HTTP-version, single spaces. */
    const char *sp1 = memchr(line, ' ', line_len);
    if (sp1 == NULL)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', line_len - (size_t)(sp1 + 1 - line));
    if (sp2 == NULL)
        return -1;
    h->method = line;
    h->method_len = (size_t)(sp1 - line);
    h->target = sp1 + 1;
    h->target_len = (size_t)(sp2 - sp1 - 1);
    const char *version = sp2 + 1;
    size_t version_len = line_len - (size_t)(version - line);
    if (!lg_http_is_token(h->method, h->method_len) || h->target_len == 0)
        return -1;
    for (size_t i = 0; i < h->target_len; i++) {
        unsigned char c = (unsigned char)h->target[i];
        if (c <= 0x20 || c >= 0x7f)
            return -1;
    }
    if (h->target[0] != '/') {
        /* absolute-form, which servers must accept (RFC 9112 section 3.2.2):
         * the path (and query) after the authority is what we route. */
        const char *t = h->target;
        size_t n = h->target_len;
        size_t skip = n > 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                      : n > 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                    : 0;
        if (skip == 0)
            return -1; /* authority-form (CONNECT) and "*": not served */
        const char *slash = memchr(t + skip, '/', n - skip);
        const char *quest = memchr(t + skip, '?', n - skip);
        if (slash == NULL || (quest && quest < slash)) {
            h->target = "/";
            h->target_len = 1;
            if (quest) { /* "http://host?q": no path but a query */
                return -1;
            }
        } else {
            h->target_len = n - (size_t)(slash - t);
            h->target = slash;
        }
    }
    int minor = parse_version(version, version_len);
    if (minor == -2) {
        *status = 505;
        return -1;
    }
    if (minor < 0)
        return -1;
    h->version_minor = minor;

    if (parse_fields(block, len, pos, h, status) != 0)
        return -1;

    size_t hosts = 0;
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct lg_http_header *hd = &h->headers[i];
        if (lg_http_ieq(hd->name, hd->name_len, "host")) {
            hosts++;
        } else if (lg_http_ieq(hd->name, hd->name_len, "expect")) {
            if (lg_http_ieq(hd->value, hd->value_len, "100-continue")) {
                h->expect_continue = h->version_minor >= 1;
            } else {
                *status = 417;
                return -1;
            }
        }
    }
    if (hosts > 1 || (hosts == 0 && h->version_minor >= 1)) {
        *status = 400;
        return -1;
    }
    *status = 0;
    return 0;
}

int lg_http_parse_response_head(const char *block, size_t len, struct lg_http_head *h)
{
    head_init(h);

    size_t pos = 0;
    const char *line;
    size_t line_len;
    bool bad = false;
    if (!next_line(block, len, &pos, &line, &line_len, &bad) || bad || line_len < 12)
        return -1;
    int minor = parse_version(line, 8);
    if (minor < 0 || line[8] != ' ')
        return -1;
    h->version_minor = minor;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        status = status * 10 + (line[i] - '0');
    }
    if (status < 100 || (line_len > 12 && line[12] != ' '))
        return -1;
    h->status = status;
    int st = 0;
    return parse_fields(block, len, pos, h, &st);
}

const struct lg_http_header *lg_http_find(const struct lg_http_header *headers, size_t n,
                                          const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (lg_http_ieq(headers[i].name, headers[i].name_len, name))
            return &headers[i];
    }
    return NULL;
}

struct listed_state {
    const char *name;
    size_t name_len;
    bool found;
};

static bool listed_element(const char *e, size_t n, void *arg)
{
    struct listed_state *st = arg;
    if (n == st->name_len && strncasecmp(e, st->name, n) == 0) {
        st->found = true;
        return false;
    }
    return true;
}

bool lg_http_is_hop_by_hop(const char *name, size_t name_len, const struct lg_http_header *headers,
                           size_t n)
{
    static const char *const fixed[] = {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te",         "trailer",    "transfer-encoding",  "upgrade",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(fixed); i++) {
        if (lg_http_ieq(name, name_len, fixed[i]))
            return true;
    }
    struct listed_state st = {name, name_len, false};
    for (size_t i = 0; i < n && !st.found; i++) {
        if (lg_http_ieq(headers[i].name, headers[i].name_len, "connection"))
            for_each_element(headers[i].value, headers[i].value_len, listed_element, &st);
    }
    return st.found;
}

const char *lg_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "I'm a teapot";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

enum chunked_state {
    CHUNK_SIZE = 0,
    CHUNK_DATA,
    CHUNK_DATA_END,
    CHUNK_TRAILER,
    CHUNK_DONE,
};

/* Longest chunk-size line (with extensions) and trailer section accepted. */
#define CHUNK_LINE_MAX    1024
#define CHUNK_TRAILER_MAX 8192

/* Read one line (CRLF or LF) of at most max bytes from in. Returns 1 with
 * *line (caller frees) set, 0 when incomplete, -1 when too long. */
static int read_line(struct evbuffer *in, size_t max, char **line, size_t *n)
{
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    if (p.pos < 0)
        return evbuffer_get_length(in) > max ? -1 : 0;
    if ((size_t)p.pos > max)
        return -1;
    *line = evbuffer_readln(in, n, EVBUFFER_EOL_LF);
    if (*line == NULL)
        return -1;
    if (*n > 0 && (*line)[*n - 1] == '\r')
        (*line)[--(*n)] = '\0';
    return 1;
}

enum lg_http_chunked_result lg_http_chunked_decode(struct lg_http_chunked *c, struct evbuffer *in,
                                                   struct evbuffer *out, size_t *total, size_t max)
{
    for (;;) {
        switch (c->state) {
        case CHUNK_SIZE: {
            char *line;
            size_t n;
            int rc = read_line(in, CHUNK_LINE_MAX, &line, &n);
            if (rc <= 0)
                return rc == 0 ? LG_CHUNKED_MORE : LG_CHUNKED_ERROR;
            uint64_t size = 0;
            size_t i = 0;
            for (; i < n; i++) {
                int d = lg_codec_hex_value((unsigned char)line[i]);
                if (d < 0)
                    break;
                if (i >= 15) { /* 15 hex digits is far past any body we accept */
                    free(line);
                    return LG_CHUNKED_ERROR;
                }
                size = size * 16 + (uint64_t)d;
            }
            /* After the digits: nothing, or OWS then ";" extensions. */
            bool ok = i > 0;
            size_t j = i;
            while (j < n && (line[j] == ' ' || line[j] == '\t'))
                j++;
            if (j < n && line[j] != ';')
                ok = false;
            if (ok && memchr(line, '\r', n) != NULL)
                ok = false;
            free(line);
            if (!ok)
                return LG_CHUNKED_ERROR;
            if (size == 0) {
                c->state = CHUNK_TRAILER;
            } else {
                if (size > max - *total)
                    return LG_CHUNKED_TOO_LONG;
                c->chunk_left = size;
                c->state = CHUNK_DATA;
            }
            break;
        }
        case CHUNK_DATA: {
            size_t avail = evbuffer_get_length(in);
            if (avail == 0)
                return LG_CHUNKED_MORE;
            size_t take = avail < c->chunk_left ? avail : (size_t)c->chunk_left;
            if (evbuffer_remove_buffer(in, out, take) != (int)take)
                return LG_CHUNKED_ERROR;
            *total += take;
            c->chunk_left -= take;
            if (c->chunk_left == 0)
                c->state = CHUNK_DATA_END;
            break;
        }
        case CHUNK_DATA_END: {
            char *line;
            size_t n;
            int rc = read_line(in, 2, &line, &n);
            if (rc <= 0)
                return rc == 0 ? LG_CHUNKED_MORE : LG_CHUNKED_ERROR;
            free(line);
            if (n != 0)
                return LG_CHUNKED_ERROR;
            c->state = CHUNK_SIZE;
            break;
        }
        case CHUNK_TRAILER: {
            char *line;
            size_t n;
            int rc = read_line(in, CHUNK_TRAILER_MAX, &line, &n);
            if (rc <= 0)
                return rc == 0 ? LG_CHUNKED_MORE : LG_CHUNKED_ERROR;
            free(line);
            c->trailer_len += n + 2;
            if (c->trailer_len > CHUNK_TRAILER_MAX)
                return LG_CHUNKED_ERROR;
            if (n == 0) {
                c->state = CHUNK_DONE;
                return LG_CHUNKED_DONE;
            }
            break;
        }
        default:
            return LG_CHUNKED_DONE;
        }
    }
}

size_t lg_http_send_now(int fd, const void *data, size_t len)
{
    const char *p = data;
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, p + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        sent += (size_t)n;
    }
    return sent;
}

ssize_t lg_http_read_into(struct evbuffer *in, int fd, int *err)
{
    evbuffer_unfreeze(in, 0);
    /* The start of a message (usually all of it) is read on the stack and
     * only what came is added, so that a short message takes a small chain
     * (from malloc's thread cache) rather than an 8 KB one; the rest of a
     * longer one is read straight into space reserved at the end. */
    char buf[LG_HTTP_READ_MAX];
    struct evbuffer_iovec v = {.iov_base = buf, .iov_len = sizeof(buf)};
    bool reserved = evbuffer_get_length(in) > 0;
    ssize_t n = -1;
    *err = ENOMEM;
    if (!reserved || evbuffer_reserve_space(in, LG_HTTP_READ_MAX, &v, 1) == 1) {
        size_t room = v.iov_len < LG_HTTP_READ_MAX ? v.iov_len : LG_HTTP_READ_MAX;
        do
            n = recv(fd, v.iov_base, room, 0);
        while (n < 0 && errno == EINTR);
        *err = n < 0 ? errno : 0;
        if (n > 0) {
            v.iov_len = (size_t)n;
            if ((reserved ? evbuffer_commit_space(in, &v, 1) : evbuffer_add(in, buf, (size_t)n)) !=
                0) {
                n = -1;
                *err = ENOMEM;
            }
        }
    }
    evbuffer_freeze(in, 0);
    return n;
}

void lg_http_date(char out[30])
{
    /* One format per second per thread. */
    static _Thread_local time_t cached_at = -1;
    static _Thread_local char cached[30];
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof(cached), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    memcpy(out, cached, sizeof(cached));
}
