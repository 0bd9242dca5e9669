/* awscreds.c - AWS credential chain (config, env, file, container, web identity, IMDS) and refresh.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "lambdagate/awscreds.h"
#include "lambdagate/buf.h"
#include "lambdagate/codec.h"
#include "lambdagate/httpc.h"
#include "lambdagate/json.h"
#include "lambdagate/log.h"

/* Bounds on what we accept from files and endpoints. Real answers are a
 * few kilobytes; the caps only stop a broken or hostile source from making
 * us allocate without limit. */
#define SHARED_FILE_MAX   (64u * 1024u)
#define TOKEN_FILE_MAX    (16u * 1024u)
#define ANSWER_MAX        (64u * 1024u)
#define JSON_DEPTH_MAX    8
#define ACCESS_KEY_ID_MAX 128
#define SECRET_KEY_MAX    256
#define SESSION_TOKEN_MAX (16u * 1024u)
#define IMDS_TOKEN_MAX    4096
#define ROLE_NAME_MAX     128
#define ENDPOINT_MAX      512 /* AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_ENDPOINT_URL_STS */

/* Timeouts per request. IMDS answers from the local hypervisor, so a slow
 * answer means there is no IMDS (not on EC2, or hop limit reached). */
#define IMDS_TIMEOUT_MS      1000
#define CONTAINER_TIMEOUT_MS 2000
#define STS_TIMEOUT_MS       5000
#define IMDS_TOKEN_TTL       "21600"

/* Refresh timing. */
#define REFRESH_LEAD_S       (5 * 60)
#define REFRESH_LEAD_LONG_S  (15 * 60)
#define REFRESH_LONG_AFTER_S 3600
#define REFRESH_FLOOR_MS     10000
#define BACKOFF_FIRST_MS     1000
#define BACKOFF_MAX_MS       60000

#define CONTAINER_RELATIVE_BASE "http://169.254.170.2"
#define IMDS_DEFAULT_BASE       "http://169.254.169.254"

/* Every set gets the next number, so that a signing-key cache keyed on
 * generation never confuses two sets (even ones with the same key id). */
static _Atomic uint64_t creds_generation_counter = 0;

/* ---------------------------------------------------------------------- */
/* Credential sets                                                         */
/* ---------------------------------------------------------------------- */

/* Wipe and free a string that held a secret. Accepts NULL. */
static void free_secret(char *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* A new set from slices (copied). token may be NULL; an empty token means
 * none. source is copied into the same allocation, so any string works.
 * NULL on no memory. */
static struct lg_creds *creds_new_n(const char *key, size_t key_len, const char *secret,
                                    size_t secret_len, const char *token, size_t token_len,
                                    time_t expiration, const char *source)
{
    size_t source_len = strlen(source);
    struct lg_creds *c = calloc(1, sizeof(*c) + source_len + 1);
    if (c == NULL)
        return NULL;
    char *source_copy = (char *)(c + 1);
    memcpy(source_copy, source, source_len + 1);
    c->source = source_copy;
    c->access_key_id = strndup(key, key_len);
    c->secret_access_key = strndup(secret, secret_len);
    if (token != NULL && token_len > 0)
        c->session_token = strndup(token, token_len);
    if (c->access_key_id == NULL || c->secret_access_key == NULL ||
        (token != NULL && token_len > 0 && c->session_token == NULL)) {
        free(c->access_key_id);
        free_secret(c->secret_access_key);
        free_secret(c->session_token);
        free(c);
        return NULL;
    }
    c->expiration = expiration;
    c->generation = atomic_fetch_add(&creds_generation_counter, 1) + 1;
    __atomic_store_n(&c->refcount, 1, __ATOMIC_RELAXED);
    return c;
}

struct lg_creds *lg_creds_new(const char *access_key_id, const char *secret_access_key,
                              const char *session_token, time_t expiration, const char *source)
{
    return creds_new_n(access_key_id, strlen(access_key_id), secret_access_key,
                       strlen(secret_access_key), session_token,
                       session_token ? strlen(session_token) : 0, expiration, source);
}

struct lg_creds *lg_creds_ref(struct lg_creds *c)
{
    if (c)
        __atomic_fetch_add(&c->refcount, 1, __ATOMIC_RELAXED);
    return c;
}

void lg_creds_unref(struct lg_creds *c)
{
    if (c == NULL)
        return;
    /* acq_rel: the thread that frees must see every other thread's use of
     * the set finished before it wipes it. */
    if (__atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    free(c->access_key_id);
    free_secret(c->secret_access_key);
    free_secret(c->session_token);
    free(c);
}

/* A credential field must be non-empty, bounded, and printable ASCII
 * without spaces: the key id and token end up in request headers, where a
 * CR or LF would let a hostile source inject headers. 0 or -1 with err. */
static int check_field(const char *what, const char *v, size_t n, size_t max, char *err,
                       size_t errlen)
{
    if (n == 0) {
        snprintf(err, errlen, "%s is empty", what);
        return -1;
    }
    if (n > max) {
        snprintf(err, errlen, "%s is longer than %zu bytes", what, max);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, errlen, "%s holds a character that is not allowed", what);
            return -1;
        }
    }
    return 0;
}

/* Check the three fields (names as the source calls them) and build a set.
 * token may be NULL. NULL with err. */
static struct lg_creds *creds_checked(const char *key_name, const char *key, size_t key_len,
                                      const char *secret_name, const char *secret,
                                      size_t secret_len, const char *token_name, const char *token,
                                      size_t token_len, time_t expiration, const char *source,
                                      char *err, size_t errlen)
{
    if (check_field(key_name, key, key_len, ACCESS_KEY_ID_MAX, err, errlen) != 0 ||
        check_field(secret_name, secret, secret_len, SECRET_KEY_MAX, err, errlen) != 0)
        return NULL;
    if (token != NULL &&
        check_field(token_name, token, token_len, SESSION_TOKEN_MAX, err, errlen) != 0)
        return NULL;
    struct lg_creds *c =
        creds_new_n(key, key_len, secret, secret_len, token, token_len, expiration, source);
    if (c == NULL)
        snprintf(err, errlen, "out of memory");
    return c;
}

/* ---------------------------------------------------------------------- */
/* Time                                                                    */
/* ---------------------------------------------------------------------- */

/* n decimal digits at s as an int; -1 when any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

int lg_creds_parse_time(const char *text, time_t *out)
{
    if (text == NULL)
        return -1;
    size_t n = strnlen(text, 64);
    /* "YYYY-MM-DDTHH:MM:SS" then an optional fraction and the zone. */
    if (n < 20 || n >= 64)
        return -1;
    if (text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' || text[16] != ':')
        return -1;
    int year = digits(text, 4), month = digits(text + 5, 2), day = digits(text + 8, 2);
    int hour = digits(text + 11, 2), minute = digits(text + 14, 2), second = digits(text + 17, 2);
    if (year < 1970 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
        minute > 59 || second < 0 || second > 60)
        return -1;
    if (day > days_in_month(year, month))
        return -1;
    const char *p = text + 19;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9' && nd < 10) {
            p++;
            nd++;
        }
        if (nd == 0 || nd > 9)
            return -1;
    }
    /* UTC only: the answers we read give Z, and some +00:00. */
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = t;
    return 0;
}

/* "2026-11-26T18:00:00Z", or "never" for 0. */
static void format_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    if (t == 0 || gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "never");
}

/* The refresh rule with a configurable floor (tests shorten it). */
static int64_t refresh_delay(time_t now, time_t expiration, int64_t floor_ms)
{
    if (expiration == 0)
        return -1;
    int64_t left = (int64_t)expiration - (int64_t)now;
    /* A long-lived set (IMDS and container sets last about six hours) is
     * refreshed earlier, so that a slow or failing endpoint still leaves
     * several retries before expiry. */
    int64_t lead = left > REFRESH_LONG_AFTER_S ? REFRESH_LEAD_LONG_S : REFRESH_LEAD_S;
    int64_t ms = (left - lead) * 1000;
    return ms < floor_ms ? floor_ms : ms;
}

int64_t lg_creds_refresh_delay_ms(time_t now, time_t expiration)
{
    return refresh_delay(now, expiration, REFRESH_FLOOR_MS);
}

/* ---------------------------------------------------------------------- */
/* Shared credentials file                                                 */
/* ---------------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && is_blank(**s))
        (*s)++;
    while (*e > *s && is_blank((*e)[-1]))
        (*e)--;
}

/* A slice of the file text. */
struct slice {
    const char *p;
    size_t n;
};

/* Parse the INI text and find profile. 1 = found and complete (*out set),
 * 0 = the profile is not in the text, -1 = the text or the profile is
 * broken (err says why, with the line number when one is at fault). */
static int shared_file_parse(const char *text, size_t len, const char *profile,
                             struct lg_creds **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len > SHARED_FILE_MAX) {
        snprintf(err, errlen, "larger than %u bytes", SHARED_FILE_MAX);
        return -1;
    }
    if (memchr(text, '\0', len) != NULL) {
        snprintf(err, errlen, "holds a NUL byte");
        return -1;
    }
    size_t profile_len = strlen(profile);
    bool in_section = false, in_profile = false, found = false;
    struct slice key = {NULL, 0}, secret = {NULL, 0}, token = {NULL, 0};
    const char *p = text, *end = text + len;
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        trim(&s, &e);
        if (s == e || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            if (e[-1] != ']') {
                snprintf(err, errlen, "line %d: section header without a closing ]", line);
                return -1;
            }
            const char *ns = s + 1, *ne = e - 1;
            trim(&ns, &ne);
            in_section = true;
            in_profile = (size_t)(ne - ns) == profile_len && memcmp(ns, profile, profile_len) == 0;
            found = found || in_profile;
            continue;
        }
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (eq == NULL) {
            snprintf(err, errlen, "line %d: expected key = value", line);
            return -1;
        }
        if (!in_section) {
            snprintf(err, errlen, "line %d: key outside a [profile] section", line);
            return -1;
        }
        if (!in_profile)
            continue;
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        /* An inline comment needs a blank before it; key material never
         * holds blanks, so this cannot cut a value. */
        for (const char *c = vs; c < ve; c++) {
            if ((*c == '#' || *c == ';') && c > vs && is_blank(c[-1])) {
                ve = c;
                break;
            }
        }
        trim(&vs, &ve);
        struct slice v = {vs, (size_t)(ve - vs)};
        size_t kn = (size_t)(ke - ks);
        /* Keys are case-insensitive, as in the AWS CLI's parser; a repeated
         * key takes the last value. */
        if (kn == 17 && strncasecmp(ks, "aws_access_key_id", kn) == 0)
            key = v;
        else if (kn == 21 && strncasecmp(ks, "aws_secret_access_key", kn) == 0)
            secret = v;
        else if (kn == 17 && strncasecmp(ks, "aws_session_token", kn) == 0)
            token = v;
    }
    if (!found)
        return 0;
    if (key.p == NULL) {
        snprintf(err, errlen, "profile %s has no aws_access_key_id", profile);
        return -1;
    }
    if (secret.p == NULL) {
        snprintf(err, errlen, "profile %s has no aws_secret_access_key", profile);
        return -1;
    }
    char inner[LG_ERR_LEN];
    *out = creds_checked("aws_access_key_id", key.p, key.n, "aws_secret_access_key", secret.p,
                         secret.n, "aws_session_token", token.p, token.n, 0, "shared-file", inner,
                         sizeof(inner));
    if (*out == NULL) {
        snprintf(err, errlen, "profile %s: %s", profile, inner);
        return -1;
    }
    return 1;
}

struct lg_creds *lg_creds_parse_shared_file(const char *text, size_t len, const char *profile,
                                            char *err, size_t errlen)
{
    struct lg_creds *c = NULL;
    int rc = shared_file_parse(text, len, profile, &c, err, errlen);
    if (rc == 0)
        snprintf(err, errlen, "no profile %s", profile);
    return rc == 1 ? c : NULL;
}

/* ---------------------------------------------------------------------- */
/* Container and IMDS JSON                                                 */
/* ---------------------------------------------------------------------- */

/* Member name of obj as a string: 1 present, 0 absent, -1 not a string. */
static int json_string(yajl_val obj, const char *name, const char **out)
{
    yajl_val v = lg_json_get(obj, name);
    *out = NULL;
    if (v == NULL || YAJL_IS_NULL(v))
        return 0;
    if (!YAJL_IS_STRING(v))
        return -1;
    *out = v->u.string;
    return 1;
}

struct lg_creds *lg_creds_parse_json(const char *text, size_t len, const char *source, char *err,
                                     size_t errlen)
{
    yajl_val root = lg_json_parse(text, len, ANSWER_MAX, JSON_DEPTH_MAX, err, errlen);
    if (root == NULL)
        return NULL;
    struct lg_creds *c = NULL;
    if (!YAJL_IS_OBJECT(root)) {
        snprintf(err, errlen, "the answer is not a JSON object");
        goto out;
    }
    /* IMDS says whether the set is usable in Code; the container endpoint
     * has no Code. */
    const char *code;
    int rc = json_string(root, "Code", &code);
    if (rc < 0) {
        snprintf(err, errlen, "Code is not a string");
        goto out;
    }
    if (rc > 0 && strcmp(code, "Success") != 0) {
        snprintf(err, errlen, "Code is %.40s, not Success", code);
        goto out;
    }
    static const char *const names[] = {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"};
    const char *values[4];
    for (size_t i = 0; i < 4; i++) {
        rc = json_string(root, names[i], &values[i]);
        if (rc < 0) {
            snprintf(err, errlen, "%s is not a string", names[i]);
            goto out;
        }
        /* Token may be absent (a local credential helper behind
         * FULL_URI may hand out long-term keys); the rest may not. A
         * dynamic set without Expiration would never be refreshed. */
        if (rc == 0 && i != 2) {
            snprintf(err, errlen, "no %s", names[i]);
            goto out;
        }
    }
    time_t expiration;
    if (lg_creds_parse_time(values[3], &expiration) != 0) {
        snprintf(err, errlen, "Expiration is not an ISO 8601 UTC time");
        goto out;
    }
    c = creds_checked("AccessKeyId", values[0], strlen(values[0]), "SecretAccessKey", values[1],
                      strlen(values[1]), "Token", values[2], values[2] ? strlen(values[2]) : 0,
                      expiration, source, err, errlen);
out:
    /* The tree holds the secret in yajl's own copy: wipe it too. */
    if (root && YAJL_IS_OBJECT(root)) {
        for (size_t i = 0; i < root->u.object.len; i++) {
            yajl_val v = root->u.object.values[i];
            if (YAJL_IS_STRING(v))
                OPENSSL_cleanse(v->u.string, strlen(v->u.string));
        }
    }
    lg_json_free(root);
    return c;
}

/* ---------------------------------------------------------------------- */
/* STS XML                                                                 */
/* ---------------------------------------------------------------------- */

/* Where "<name" starts an element (followed by '>', '/' or a blank) in
 * [s, s+n), or NULL. */
static const char *xml_find_open(const char *s, size_t n, const char *name)
{
    size_t nl = strlen(name);
    const char *p = s, *end = s + n;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (lt == NULL)
            return NULL;
        const char *q = lt + 1;
        if ((size_t)(end - q) > nl && memcmp(q, name, nl) == 0 &&
            (q[nl] == '>' || q[nl] == '/' || is_blank(q[nl])))
            return lt;
        p = q;
    }
    return NULL;
}

/* The content of the element name in [s, s+n), which must occur at most
 * once. 1 found (*content, *clen), 0 absent, -1 unterminated or repeated.
 * A small bounded extractor, not an XML parser: STS's answers are flat and
 * known, and a library would be more attack surface than this needs. */
static int xml_element(const char *s, size_t n, const char *name, const char **content,
                       size_t *clen)
{
    const char *end = s + n;
    const char *open = xml_find_open(s, n, name);
    if (open == NULL)
        return 0;
    const char *gt = memchr(open, '>', (size_t)(end - open));
    if (gt == NULL)
        return -1;
    const char *after;
    if (gt[-1] == '/') {
        *content = gt + 1;
        *clen = 0;
        after = gt + 1;
    } else {
        char close[64];
        int cl = snprintf(close, sizeof(close), "</%s>", name);
        const char *start = gt + 1;
        const char *c = memmem(start, (size_t)(end - start), close, (size_t)cl);
        if (c == NULL)
            return -1;
        *content = start;
        *clen = (size_t)(c - start);
        after = c + cl;
    }
    if (xml_find_open(after, (size_t)(end - after), name) != NULL)
        return -1;
    return 1;
}

/* The text of a leaf element, blanks trimmed and the five predefined
 * entities unescaped, as a new string (caller frees). NULL with err when
 * it holds markup or another entity. */
static char *xml_text(const char *s, size_t n, const char *name, char *err, size_t errlen)
{
    const char *e = s + n;
    trim(&s, &e);
    n = (size_t)(e - s);
    if (memchr(s, '<', n) != NULL) {
        snprintf(err, errlen, "<%s> holds markup", name);
        return NULL;
    }
    char *out = malloc(n + 1);
    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    static const struct {
        const char *entity;
        char c;
    } entities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            out[o++] = s[i++];
            continue;
        }
        size_t k;
        for (k = 0; k < LG_ARRAY_LEN(entities); k++) {
            size_t el = strlen(entities[k].entity);
            if (n - i >= el && memcmp(s + i, entities[k].entity, el) == 0) {
                out[o++] = entities[k].c;
                i += el;
                break;
            }
        }
        if (k == LG_ARRAY_LEN(entities)) {
            snprintf(err, errlen, "<%s> holds an unknown entity", name);
            OPENSSL_cleanse(out, o); /* what was copied may be secret */
            free(out);
            return NULL;
        }
    }
    out[o] = '\0';
    return out;
}

/* The text of leaf name inside [s, s+n), required. NULL with err. */
static char *xml_required(const char *s, size_t n, const char *name, char *err, size_t errlen)
{
    const char *content;
    size_t clen;
    int rc = xml_element(s, n, name, &content, &clen);
    if (rc == 0) {
        snprintf(err, errlen, "no <%s> in <Credentials>", name);
        return NULL;
    }
    if (rc < 0) {
        snprintf(err, errlen, "<%s> is unterminated or repeated", name);
        return NULL;
    }
    return xml_text(content, clen, name, err, errlen);
}

/* Copy s into out for a message: printable ASCII kept, the rest '?',
 * at most max characters. */
static void printable(char *out, size_t outlen, const char *s, size_t max)
{
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 1 < outlen && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[o] = '\0';
}

/* When text is an STS error document, describe it in err ("STS error
 * CODE: MESSAGE") and return true. */
static bool sts_error(const char *text, size_t len, char *err, size_t errlen)
{
    const char *block;
    size_t blen;
    if (xml_element(text, len, "Error", &block, &blen) != 1)
        return false;
    char ignored[LG_ERR_LEN];
    char *code = NULL, *message = NULL;
    const char *content;
    size_t clen;
    if (xml_element(block, blen, "Code", &content, &clen) == 1)
        code = xml_text(content, clen, "Code", ignored, sizeof(ignored));
    if (xml_element(block, blen, "Message", &content, &clen) == 1)
        message = xml_text(content, clen, "Message", ignored, sizeof(ignored));
    char code_p[64], message_p[160];
    printable(code_p, sizeof(code_p), code ? code : "(no code)", 63);
    printable(message_p, sizeof(message_p), message ? message : "", 159);
    snprintf(err, errlen, "STS error %s%s%s", code_p, message_p[0] ? ": " : "", message_p);
    free(code);
    free(message);
    return true;
}

struct lg_creds *lg_creds_parse_sts_xml(const char *text, size_t len, char *err, size_t errlen)
{
    if (len > ANSWER_MAX) {
        snprintf(err, errlen, "STS answer larger than %u bytes", ANSWER_MAX);
        return NULL;
    }
    if (memchr(text, '\0', len) != NULL) {
        snprintf(err, errlen, "STS answer holds a NUL byte");
        return NULL;
    }
    if (sts_error(text, len, err, errlen))
        return NULL;
    const char *block;
    size_t blen;
    int rc = xml_element(text, len, "Credentials", &block, &blen);
    if (rc == 0) {
        snprintf(err, errlen, "no <Credentials> in the STS answer");
        return NULL;
    }
    if (rc < 0) {
        snprintf(err, errlen, "<Credentials> is unterminated or repeated");
        return NULL;
    }
    struct lg_creds *c = NULL;
    char *key = xml_required(block, blen, "AccessKeyId", err, errlen);
    char *secret = key ? xml_required(block, blen, "SecretAccessKey", err, errlen) : NULL;
    char *token = secret ? xml_required(block, blen, "SessionToken", err, errlen) : NULL;
    char *expires = token ? xml_required(block, blen, "Expiration", err, errlen) : NULL;
    if (expires != NULL) {
        time_t expiration;
        if (lg_creds_parse_time(expires, &expiration) != 0)
            snprintf(err, errlen, "Expiration is not an ISO 8601 UTC time");
        else
            c = creds_checked("AccessKeyId", key, strlen(key), "SecretAccessKey", secret,
                              strlen(secret), "SessionToken", token, strlen(token), expiration,
                              "web-identity", err, errlen);
    }
    free(key);
    free_secret(secret);
    free_secret(token);
    free(expires);
    return c;
}

/* ---------------------------------------------------------------------- */
/* Files and environment                                                   */
/* ---------------------------------------------------------------------- */

/* Read the regular file at path, at most max bytes, into a new
 * NUL-terminated buffer (*out, caller wipes and frees; *len). 0 ok, 1 the
 * file does not exist, -1 other failure with err. */
static int read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                     size_t errlen)
{
    *out = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO planted at the path must not hang the loop. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 1;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > max) {
        snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
        close(fd);
        return -1;
    }
    char *buf = malloc(max + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return -1;
    }
    size_t got = 0;
    for (;;) {
        /* Read one byte past max so that a file that grew is caught. */
        ssize_t n = read(fd, buf + got, max + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            OPENSSL_cleanse(buf, got);
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got > max) {
            snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
            OPENSSL_cleanse(buf, got);
            free(buf);
            close(fd);
            return -1;
        }
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

/* A token file's content without surrounding blanks, as a new string
 * (caller frees with free_secret). It must be non-empty and printable
 * ASCII (it may go into a header). NULL with err. */
static char *read_token_file(const char *variable, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = read_file(path, TOKEN_FILE_MAX, &text, &len, err, errlen);
    if (rc != 0) {
        if (rc == 1)
            snprintf(err, errlen, "%s %s does not exist", variable, path);
        return NULL;
    }
    const char *s = text, *e = text + len;
    trim(&s, &e);
    char *token = NULL;
    if (s == e) {
        snprintf(err, errlen, "%s %s is empty", variable, path);
    } else {
        bool ok = true;
        for (const char *c = s; c < e; c++)
            ok = ok && (unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f;
        if (!ok)
            snprintf(err, errlen, "%s %s holds a character that is not allowed", variable, path);
        else if ((token = strndup(s, (size_t)(e - s))) == NULL)
            snprintf(err, errlen, "out of memory");
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return token;
}

/* The variable's value, or NULL when unset or empty (as the SDKs treat an
 * empty variable). */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* ---------------------------------------------------------------------- */
/* The provider                                                            */
/* ---------------------------------------------------------------------- */

enum fetch_step {
    STEP_NONE = 0,
    STEP_CONTAINER,
    STEP_IMDS_TOKEN,
    STEP_IMDS_ROLE,
    STEP_IMDS_CREDS,
    STEP_STS,
};

struct lg_creds_provider {
    struct event_base *base; /* borrowed */
    struct evdns_base *dns;  /* borrowed */
    enum lg_creds_source source;
    SSL_CTX *ssl_ctx; /* own reference (conf is borrowed for provider_new only); may be NULL */

    pthread_mutex_t lock;     /* guards current: get() runs on worker threads */
    struct lg_creds *current; /* owned; NULL until a set is obtained */

    /* Container endpoint. */
    char *container_url;
    char *container_token;      /* AWS_CONTAINER_AUTHORIZATION_TOKEN; a secret */
    char *container_token_file; /* preferred; re-read per fetch (the agent rotates it) */
    /* Web identity. */
    char *sts_url;
    char *role_arn;
    char *session_name;
    char *web_token_file; /* re-read per fetch (kubelet rotates the projected token) */
    /* IMDS. */
    char *imds_base;  /* without a trailing slash */
    char *imds_token; /* for the attempt in flight; a secret */

    struct event *timer;          /* next attempt */
    struct lg_httpc_fetch *fetch; /* in flight, or NULL */
    enum fetch_step step;
    bool started;
    bool obtained;      /* a set was published: later ones are refreshes */
    int64_t backoff_ms; /* 0 after a success */
    int64_t min_refresh_ms;
};

static const char *source_name(enum lg_creds_source s)
{
    switch (s) {
    case LG_CREDS_CONFIG:
        return "config";
    case LG_CREDS_ENV:
        return "environment";
    case LG_CREDS_SHARED_FILE:
        return "shared-file";
    case LG_CREDS_CONTAINER:
        return "container";
    case LG_CREDS_WEB_IDENTITY:
        return "web-identity";
    case LG_CREDS_IMDS:
        return "imds";
    case LG_CREDS_NONE:
        break;
    }
    return "none";
}

/* Replace the current set (takes ownership of c). */
static void publish(struct lg_creds_provider *p, struct lg_creds *c)
{
    pthread_mutex_lock(&p->lock);
    struct lg_creds *old = p->current;
    p->current = c;
    pthread_mutex_unlock(&p->lock);
    /* Outside the lock: the last unref wipes memory, no need to hold
     * readers up for that. Readers holding old keep it alive. */
    lg_creds_unref(old);
}

static void log_obtained(struct lg_creds_provider *p, const struct lg_creds *c, bool refresh,
                         int64_t refresh_ms)
{
    char expires[40];
    format_time(c->expiration, expires, sizeof(expires));
    if (refresh_ms < 0)
        lg_log(LG_LOG_INFO, "AWS credentials %s source=%s access_key_id=%s expires=%s",
               refresh ? "refreshed" : "obtained", source_name(p->source), c->access_key_id,
               expires);
    else
        lg_log(LG_LOG_INFO,
               "AWS credentials %s source=%s access_key_id=%s expires=%s refresh_in_s=%lld",
               refresh ? "refreshed" : "obtained", source_name(p->source), c->access_key_id,
               expires, (long long)(refresh_ms / 1000));
}

static void schedule(struct lg_creds_provider *p, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(p->timer, &tv);
}

static void end_attempt(struct lg_creds_provider *p)
{
    free_secret(p->imds_token);
    p->imds_token = NULL;
    p->step = STEP_NONE;
}

/* An attempt failed: warn (the reason never holds secrets: our own
 * messages, httpc's, and STS's error code) and retry with backoff. The
 * current set stays published; get() stops returning it once it expires. */
static void attempt_failed(struct lg_creds_provider *p, const char *fmt, ...) LG_PRINTF(2, 3);
static void attempt_failed(struct lg_creds_provider *p, const char *fmt, ...)
{
    char reason[LG_ERR_LEN * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    lg_log_clean(reason); /* it may quote what the credential source said */
    end_attempt(p);
    p->backoff_ms = p->backoff_ms == 0 ? BACKOFF_FIRST_MS : p->backoff_ms * 2;
    if (p->backoff_ms > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    lg_log(LG_LOG_WARN, "AWS credentials fetch failed source=%s reason=\"%s\" retry_in_ms=%lld",
           source_name(p->source), reason, (long long)p->backoff_ms);
    schedule(p, p->backoff_ms);
}

/* A set arrived (takes ownership of c): publish it and plan its refresh. */
static void attempt_succeeded(struct lg_creds_provider *p, struct lg_creds *c)
{
    end_attempt(p);
    time_t now = time(NULL);
    /* A set that get() would refuse at once must not replace one that is
     * still good. */
    if (c->expiration != 0 && c->expiration <= now + LG_CREDS_EXPIRY_MARGIN_S) {
        char expires[40];
        format_time(c->expiration, expires, sizeof(expires));
        lg_creds_unref(c);
        attempt_failed(p, "the credentials expire too soon (%s)", expires);
        return;
    }
    int64_t delay = refresh_delay(now, c->expiration, p->min_refresh_ms);
    log_obtained(p, c, p->obtained, delay);
    p->obtained = true;
    p->backoff_ms = 0;
    publish(p, c);
    if (delay >= 0)
        schedule(p, delay);
}

static void fetch_cb(const struct lg_httpc_response *resp, const char *body, size_t len, void *arg);

/* Send one request of the attempt; on a failure to even start, the attempt
 * fails (and is retried). */
static void begin_fetch(struct lg_creds_provider *p, enum fetch_step step, const char *method,
                        const char *url, const struct lg_http_header *headers, size_t nheaders,
                        const void *body, size_t body_len, int64_t timeout_ms)
{
    struct lg_httpc_fetch_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .nheaders = nheaders,
        .body = body,
        .body_len = body_len,
        .timeout_ms = timeout_ms,
        .max_body = ANSWER_MAX,
        .ssl_ctx = p->ssl_ctx,
    };
    char err[LG_ERR_LEN];
    p->step = step;
    p->fetch = lg_httpc_fetch(p->base, p->dns, &req, fetch_cb, p, err, sizeof(err));
    if (p->fetch == NULL)
        attempt_failed(p, "%s", err);
}

static struct lg_http_header header(const char *name, const char *value)
{
    struct lg_http_header h = {name, strlen(name), value, strlen(value)};
    return h;
}

static void container_attempt(struct lg_creds_provider *p)
{
    char *token = NULL;
    if (p->container_token_file) {
        char err[LG_ERR_LEN];
        token = read_token_file("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", p->container_token_file,
                                err, sizeof(err));
        if (token == NULL) {
            attempt_failed(p, "%s", err);
            return;
        }
    }
    const char *auth = token ? token : p->container_token;
    struct lg_http_header h = header("Authorization", auth ? auth : "");
    begin_fetch(p, STEP_CONTAINER, "GET", p->container_url, &h, auth ? 1 : 0, NULL, 0,
                CONTAINER_TIMEOUT_MS);
    free_secret(token);
}

static void imds_attempt(struct lg_creds_provider *p)
{
    char url[ENDPOINT_MAX + 64];
    snprintf(url, sizeof(url), "%s/latest/api/token", p->imds_base);
    struct lg_http_header h = header("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL);
    begin_fetch(p, STEP_IMDS_TOKEN, "PUT", url, &h, 1, NULL, 0, IMDS_TIMEOUT_MS);
}

static void imds_get(struct lg_creds_provider *p, enum fetch_step step, const char *role)
{
    char url[ENDPOINT_MAX + 64 + ROLE_NAME_MAX];
    snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/%s", p->imds_base,
             role);
    struct lg_http_header h = header("X-aws-ec2-metadata-token", p->imds_token);
    begin_fetch(p, step, "GET", url, &h, 1, NULL, 0, IMDS_TIMEOUT_MS);
}

static void sts_attempt(struct lg_creds_provider *p)
{
    char err[LG_ERR_LEN];
    char *token =
        read_token_file("AWS_WEB_IDENTITY_TOKEN_FILE", p->web_token_file, err, sizeof(err));
    if (token == NULL) {
        attempt_failed(p, "%s", err);
        return;
    }
    struct lg_buf body;
    lg_buf_init(&body, 3 * (TOKEN_FILE_MAX + 4096));
    bool ok =
        lg_buf_puts(&body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=") == 0 &&
        lg_codec_uri_encode(&body, p->role_arn, strlen(p->role_arn), false) == 0 &&
        lg_buf_puts(&body, "&RoleSessionName=") == 0 &&
        lg_codec_uri_encode(&body, p->session_name, strlen(p->session_name), false) == 0 &&
        lg_buf_puts(&body, "&WebIdentityToken=") == 0 &&
        lg_codec_uri_encode(&body, token, strlen(token), false) == 0;
    free_secret(token);
    if (!ok) {
        lg_buf_free(&body);
        attempt_failed(p, "out of memory");
        return;
    }
    /* STS's AssumeRoleWithWebIdentity is called unsigned: the web identity
     * token is the proof. */
    struct lg_http_header h =
        header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8");
    begin_fetch(p, STEP_STS, "POST", p->sts_url, &h, 1, body.data, body.len, STS_TIMEOUT_MS);
    OPENSSL_cleanse(body.data, body.len);
    lg_buf_free(&body);
}

static void attempt_start(struct lg_creds_provider *p)
{
    if (p->fetch != NULL)
        return;
    switch (p->source) {
    case LG_CREDS_CONTAINER:
        container_attempt(p);
        break;
    case LG_CREDS_WEB_IDENTITY:
        sts_attempt(p);
        break;
    case LG_CREDS_IMDS:
        imds_attempt(p);
        break;
    default:
        break;
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    attempt_start(arg);
}

/* The first line of body without blanks; NULL when empty. */
static char *first_line(const char *body, size_t len)
{
    const char *nl = memchr(body, '\n', len);
    const char *s = body, *e = nl ? nl : body + len;
    trim(&s, &e);
    return s == e ? NULL : strndup(s, (size_t)(e - s));
}

static bool valid_role_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ROLE_NAME_MAX)
        return false;
    /* IAM's role name characters; anything else could leave the path. */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("+=,.@_-", c) != NULL))
            return false;
    }
    return true;
}

static void fetch_cb(const struct lg_httpc_response *resp, const char *body, size_t len, void *arg)
{
    struct lg_creds_provider *p = arg;
    /* httpc frees the fetch after this callback returns. */
    p->fetch = NULL;
    static const char *const step_names[] = {
        [STEP_NONE] = "",
        [STEP_CONTAINER] = "container endpoint",
        [STEP_IMDS_TOKEN] = "IMDS token request",
        [STEP_IMDS_ROLE] = "IMDS role listing",
        [STEP_IMDS_CREDS] = "IMDS credentials",
        [STEP_STS] = "STS",
    };
    const char *what = step_names[p->step];
    if (resp->error != LG_HTTPC_OK) {
        attempt_failed(p, "%s: %s", what, resp->error_text ? resp->error_text : "no answer");
        return;
    }
    int status = resp->head->status;
    char err[LG_ERR_LEN];
    struct lg_creds *c;
    switch (p->step) {
    case STEP_CONTAINER:
    case STEP_IMDS_CREDS:
        if (status != 200) {
            attempt_failed(p, "%s answered HTTP %d", what, status);
            return;
        }
        c = lg_creds_parse_json(body, len, p->step == STEP_CONTAINER ? "container" : "imds", err,
                                sizeof(err));
        if (c == NULL) {
            attempt_failed(p, "%s: %s", what, err);
            return;
        }
        attempt_succeeded(p, c);
        return;
    case STEP_IMDS_TOKEN: {
        if (status != 200) {
            attempt_failed(p, "%s answered HTTP %d", what, status);
            return;
        }
        char *token = first_line(body, len);
        if (token == NULL || check_field("IMDS token", token, strlen(token), IMDS_TOKEN_MAX, err,
                                         sizeof(err)) != 0) {
            free_secret(token);
            attempt_failed(p, "%s: %s", what, token ? err : "empty token");
            return;
        }
        p->imds_token = token;
        imds_get(p, STEP_IMDS_ROLE, "");
        return;
    }
    case STEP_IMDS_ROLE: {
        if (status == 404) {
            attempt_failed(p, "no IAM role is attached to this instance (IMDS answered 404)");
            return;
        }
        if (status != 200) {
            attempt_failed(p, "%s answered HTTP %d", what, status);
            return;
        }
        char *role = first_line(body, len);
        if (role == NULL || !valid_role_name(role)) {
            free(role);
            attempt_failed(p, "%s: no valid role name in the answer", what);
            return;
        }
        imds_get(p, STEP_IMDS_CREDS, role);
        free(role);
        return;
    }
    case STEP_STS:
        if (status != 200) {
            /* STS names the reason in an error document (its Code is what
             * an operator searches for: InvalidIdentityToken,
             * AccessDenied, ExpiredTokenException...). */
            if (len <= ANSWER_MAX && sts_error(body, len, err, sizeof(err)))
                attempt_failed(p, "STS answered HTTP %d: %s", status, err);
            else
                attempt_failed(p, "STS answered HTTP %d", status);
            return;
        }
        c = lg_creds_parse_sts_xml(body, len, err, sizeof(err));
        if (c == NULL) {
            attempt_failed(p, "%s", err);
            return;
        }
        attempt_succeeded(p, c);
        return;
    case STEP_NONE:
        break;
    }
}

/* ---------------------------------------------------------------------- */
/* Source selection                                                        */
/* ---------------------------------------------------------------------- */

/* May the container endpoint be reached over plain http at host? Only
 * where the endpoint cannot be on someone else's network: loopback, the
 * ECS and EKS Pod Identity agent addresses (as the AWS SDKs allow), and
 * "localhost" (Greengrass and other local helpers use it; the SDKs allow
 * it too). */
static bool container_http_allowed(const char *host)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127 ||
               (a[0] == 169 && a[1] == 254 && a[2] == 170 && (a[3] == 2 || a[3] == 23));
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char loopback[16] = {[15] = 1};
        static const unsigned char eks[16] = {0xfd, 0x00, 0x0e, 0xc2, [15] = 0x23};
        return memcmp(a, loopback, 16) == 0 || memcmp(a, eks, 16) == 0;
    }
    return strcasecmp(host, "localhost") == 0;
}

/* Check that url parses and, for https, that there is a TLS context. */
static int check_url(struct lg_creds_provider *p, const char *variable, const char *url,
                     struct lg_httpc_url *parsed, char *err, size_t errlen)
{
    char inner[LG_ERR_LEN];
    if (lg_httpc_parse_url(url, parsed, inner, sizeof(inner)) != 0) {
        snprintf(err, errlen, "%s: %s", variable, inner);
        return -1;
    }
    if (parsed->tls && p->ssl_ctx == NULL) {
        snprintf(err, errlen, "%s: https needs a TLS client context", variable);
        lg_httpc_url_free(parsed);
        return -1;
    }
    return 0;
}

static int use_static(struct lg_creds_provider *p, enum lg_creds_source source, struct lg_creds *c)
{
    p->source = source;
    log_obtained(p, c, false, -1);
    publish(p, c);
    return 0;
}

/* Returns 1 when the shared file decided the source (or failed: -1), 0 to
 * go on down the chain. */
static int try_shared_file(struct lg_creds_provider *p, char *err, size_t errlen)
{
    const char *explicit_path = env("AWS_SHARED_CREDENTIALS_FILE");
    const char *profile = env("AWS_PROFILE");
    char path[4096];
    if (explicit_path) {
        snprintf(path, sizeof(path), "%s", explicit_path);
    } else {
        const char *home = env("HOME");
        if (home == NULL)
            return 0;
        snprintf(path, sizeof(path), "%s/.aws/credentials", home);
    }
    char *text;
    size_t len;
    char inner[LG_ERR_LEN];
    int rc = read_file(path, SHARED_FILE_MAX, &text, &len, inner, sizeof(inner));
    if (rc == 1) {
        if (explicit_path)
            lg_log(LG_LOG_WARN, "AWS_SHARED_CREDENTIALS_FILE %s does not exist; ignored", path);
        return 0;
    }
    if (rc < 0) {
        snprintf(err, errlen, "shared credentials file: %s", inner);
        return -1;
    }
    struct lg_creds *c;
    rc = shared_file_parse(text, len, profile ? profile : "default", &c, inner, sizeof(inner));
    OPENSSL_cleanse(text, len);
    free(text);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, inner);
        return -1;
    }
    if (rc == 0) {
        /* A profile asked for by name and missing is worth a word: the
         * chain goes on and may pick up other credentials. */
        if (profile)
            lg_log(LG_LOG_WARN, "AWS_PROFILE %s is not in %s; ignored", profile, path);
        return 0;
    }
    return use_static(p, LG_CREDS_SHARED_FILE, c) == 0 ? 1 : -1;
}

static int setup_container(struct lg_creds_provider *p, const char *relative, const char *full,
                           char *err, size_t errlen)
{
    struct lg_httpc_url url;
    if (relative) {
        /* RELATIVE_URI wins over FULL_URI, as in the SDKs. */
        if (relative[0] != '/') {
            snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /");
            return -1;
        }
        size_t n = strlen(CONTAINER_RELATIVE_BASE) + strlen(relative) + 1;
        p->container_url = malloc(n);
        if (p->container_url == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(p->container_url, n, "%s%s", CONTAINER_RELATIVE_BASE, relative);
        if (check_url(p, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", p->container_url, &url, err,
                      errlen) != 0)
            return -1;
    } else {
        if (check_url(p, "AWS_CONTAINER_CREDENTIALS_FULL_URI", full, &url, err, errlen) != 0)
            return -1;
        /* Over plain http the authorization token and the credentials
         * would cross a network in clear. */
        if (!url.tls && !container_http_allowed(url.host)) {
            snprintf(err, errlen,
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI: http is allowed only for loopback, "
                     "169.254.170.2, 169.254.170.23 and fd00:ec2::23; use https for %s",
                     url.host);
            lg_httpc_url_free(&url);
            return -1;
        }
        p->container_url = strdup(full);
    }
    lg_httpc_url_free(&url);
    const char *token_file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    /* The file wins: EKS Pod Identity rotates it, so it is read per fetch. */
    if (token_file) {
        p->container_token_file = strdup(token_file);
    } else if (token) {
        for (const char *c = token; *c; c++) {
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) {
                snprintf(err, errlen,
                         "AWS_CONTAINER_AUTHORIZATION_TOKEN holds a character that is not "
                         "allowed");
                return -1;
            }
        }
        p->container_token = strdup(token);
    }
    if (p->container_url == NULL || (token_file && p->container_token_file == NULL) ||
        (!token_file && token && p->container_token == NULL)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->source = LG_CREDS_CONTAINER;
    return 0;
}

static int setup_web_identity(struct lg_creds_provider *p, const char *token_file,
                              const char *role_arn, const char *region, char *err, size_t errlen)
{
    const char *endpoint = env("AWS_ENDPOINT_URL_STS");
    char url[ENDPOINT_MAX + 1];
    if (endpoint) {
        if (strlen(endpoint) > ENDPOINT_MAX) {
            snprintf(err, errlen, "AWS_ENDPOINT_URL_STS is longer than %d bytes", ENDPOINT_MAX);
            return -1;
        }
        snprintf(url, sizeof(url), "%s", endpoint);
    } else {
        for (const char *c = region; *c; c++) {
            if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-') ||
                c - region >= 64) {
                snprintf(err, errlen, "region %s is not a valid AWS region name", region);
                return -1;
            }
        }
        /* The China partition has its own domain. */
        bool china = strncmp(region, "cn-", 3) == 0;
        snprintf(url, sizeof(url), "https://sts.%s.amazonaws.com%s/", region, china ? ".cn" : "");
    }
    struct lg_httpc_url parsed;
    if (check_url(p, endpoint ? "AWS_ENDPOINT_URL_STS" : "STS endpoint", url, &parsed, err,
                  errlen) != 0)
        return -1;
    lg_httpc_url_free(&parsed);
    const char *session = env("AWS_ROLE_SESSION_NAME");
    char default_session[64];
    snprintf(default_session, sizeof(default_session), "lambdagate-%ld", (long)getpid());
    p->sts_url = strdup(url);
    p->role_arn = strdup(role_arn);
    p->session_name = strdup(session ? session : default_session);
    p->web_token_file = strdup(token_file);
    if (!p->sts_url || !p->role_arn || !p->session_name || !p->web_token_file) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->source = LG_CREDS_WEB_IDENTITY;
    return 0;
}

static int setup_imds(struct lg_creds_provider *p, char *err, size_t errlen)
{
    const char *disabled = env("AWS_EC2_METADATA_DISABLED");
    if (disabled && strcasecmp(disabled, "true") == 0) {
        p->source = LG_CREDS_NONE;
        return 0;
    }
    const char *endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *base = endpoint ? endpoint : IMDS_DEFAULT_BASE;
    /* Bounded so that every IMDS URL fits its buffer whole. */
    if (strlen(base) > ENDPOINT_MAX) {
        snprintf(err, errlen, "AWS_EC2_METADATA_SERVICE_ENDPOINT is longer than %d bytes",
                 ENDPOINT_MAX);
        return -1;
    }
    struct lg_httpc_url parsed;
    if (check_url(p, "AWS_EC2_METADATA_SERVICE_ENDPOINT", base, &parsed, err, errlen) != 0)
        return -1;
    lg_httpc_url_free(&parsed);
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    p->imds_base = strndup(base, n);
    if (p->imds_base == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->source = LG_CREDS_IMDS;
    return 0;
}

/* Walk the chain (see awscreds.h). 0 with p->source set (LG_CREDS_NONE
 * when nothing applies), -1 with err when a source that applies is
 * broken. A broken source stops the walk rather than falling through:
 * silently using other credentials than the operator set up is worse
 * than not starting. */
static int choose_source(struct lg_creds_provider *p, const struct lg_conf *conf,
                         const char *region, char *err, size_t errlen)
{
    struct lg_creds *c;
    if (conf && conf->lambda.credentials_set) {
        const struct lg_conf_lambda *l = &conf->lambda;
        if (l->access_key_id == NULL || l->secret_access_key == NULL) {
            snprintf(err, errlen, "lambda.credentials needs access_key_id and secret_access_key");
            return -1;
        }
        char inner[LG_ERR_LEN];
        c = creds_checked(
            "access_key_id", l->access_key_id, strlen(l->access_key_id), "secret_access_key",
            l->secret_access_key, strlen(l->secret_access_key), "session_token", l->session_token,
            l->session_token ? strlen(l->session_token) : 0, 0, "config", inner, sizeof(inner));
        if (c == NULL) {
            snprintf(err, errlen, "lambda.credentials: %s", inner);
            return -1;
        }
        return use_static(p, LG_CREDS_CONFIG, c);
    }

    const char *key = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
    if (key && !secret) {
        snprintf(err, errlen, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
        return -1;
    }
    if (secret && !key) {
        snprintf(err, errlen, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
        return -1;
    }
    if (key) {
        const char *token = env("AWS_SESSION_TOKEN");
        c = creds_checked("AWS_ACCESS_KEY_ID", key, strlen(key), "AWS_SECRET_ACCESS_KEY", secret,
                          strlen(secret), "AWS_SESSION_TOKEN", token, token ? strlen(token) : 0, 0,
                          "environment", err, errlen);
        return c ? use_static(p, LG_CREDS_ENV, c) : -1;
    }

    int rc = try_shared_file(p, err, errlen);
    if (rc != 0)
        return rc < 0 ? -1 : 0;

    const char *relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (relative || full)
        return setup_container(p, relative, full, err, errlen);

    /* Web identity comes before IMDS on purpose, as in the AWS SDKs: a pod
     * with IRSA on an EC2 node can reach the node's IMDS too, and must get
     * its own role, not silently the node's. */
    const char *token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *role_arn = env("AWS_ROLE_ARN");
    if (token_file && !role_arn) {
        snprintf(err, errlen, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
        return -1;
    }
    if (token_file)
        return setup_web_identity(p, token_file, role_arn, region, err, errlen);

    return setup_imds(p, err, errlen);
}

struct lg_creds_provider *lg_creds_provider_new(struct event_base *base, struct evdns_base *dns,
                                                const struct lg_conf *conf, char *err,
                                                size_t errlen)
{
    struct lg_creds_provider *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    p->base = base;
    p->dns = dns;
    p->min_refresh_ms = REFRESH_FLOOR_MS;
    p->timer = evtimer_new(base, timer_cb, p);
    if (p->timer == NULL) {
        snprintf(err, errlen, "out of memory");
        lg_creds_provider_free(p);
        return NULL;
    }
    if (conf && conf->lambda.ssl_ctx) {
        SSL_CTX_up_ref(conf->lambda.ssl_ctx);
        p->ssl_ctx = conf->lambda.ssl_ctx;
    }
    const char *region = conf && conf->lambda.region ? conf->lambda.region : "us-east-1";
    if (choose_source(p, conf, region, err, errlen) != 0) {
        lg_creds_provider_free(p);
        return NULL;
    }
    return p;
}

void lg_creds_provider_start(struct lg_creds_provider *p)
{
    if (p->started)
        return;
    p->started = true;
    if (p->source == LG_CREDS_NONE) {
        lg_log(LG_LOG_WARN, "no AWS credentials: no source configured and "
                            "AWS_EC2_METADATA_DISABLED=true; Lambda calls will fail");
        return;
    }
    if (p->source == LG_CREDS_CONTAINER || p->source == LG_CREDS_WEB_IDENTITY ||
        p->source == LG_CREDS_IMDS) {
        lg_log(LG_LOG_DEBUG, "AWS credentials fetching source=%s", source_name(p->source));
        attempt_start(p);
    }
}

struct lg_creds *lg_creds_provider_get(struct lg_creds_provider *p)
{
    time_t now = time(NULL);
    struct lg_creds *c = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->current &&
        (p->current->expiration == 0 || p->current->expiration > now + LG_CREDS_EXPIRY_MARGIN_S))
        c = lg_creds_ref(p->current);
    pthread_mutex_unlock(&p->lock);
    return c;
}

enum lg_creds_source lg_creds_provider_source(const struct lg_creds_provider *p)
{
    return p->source;
}

void lg_creds_provider_set_min_refresh_ms(struct lg_creds_provider *p, int64_t ms)
{
    p->min_refresh_ms = ms < 0 ? 0 : ms;
}

void lg_creds_provider_free(struct lg_creds_provider *p)
{
    if (p == NULL)
        return;
    lg_httpc_fetch_cancel(p->fetch);
    if (p->timer)
        event_free(p->timer);
    lg_creds_unref(p->current);
    if (p->ssl_ctx)
        SSL_CTX_free(p->ssl_ctx);
    free(p->container_url);
    free_secret(p->container_token);
    free(p->container_token_file);
    free(p->sts_url);
    free(p->role_arn);
    free(p->session_name);
    free(p->web_token_file);
    free(p->imds_base);
    free_secret(p->imds_token);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
