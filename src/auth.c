/* auth.c - authenticating a request: JWT (with a verified-token cache) and API keys.
 *
 * A JWT costs an RSA or ECDSA verification the first time it is seen; the
 * worker then keeps it, keyed by its SHA-256 digest (never the token
 * itself), until it expires, until the key set changes, or until the
 * config is replaced. A token naming a kid that the fetched key set lacks
 * asks the key set's provider for a refetch (rate-limited there) and waits
 * for it, so that a key rotated in at the issuer works on its first use.
 * API keys are looked up by digest in the keys file loaded with the
 * config. Each worker has its own cache: no locks on the request path. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lambdagate/auth.h"
#include "lambdagate/jwks.h"
#include "lambdagate/jwt.h"
#include "lambdagate/log.h"
#include "lambdagate/sigv4.h"

/* How often a waiting request looks whether the refetch is over. */
#define WAIT_POLL_MS 10

struct lg_auth_token {
    int refs; /* the cache's one (while cached) and each result's */
    bool cached;
    uint8_t digest[32];
    int64_t valid_until; /* exp + leeway: not valid from this second on */
    uint64_t keys_gen;   /* generation of the key set that verified it */
    struct lg_auth_token *hash_next;
    struct lg_auth_token *lru_prev, *lru_next; /* most recent first */
    struct lg_jwt_claims claims;
    struct lg_event_claim *event_claims; /* views of claims.claims */
    /* The event's authorizer object, rendered once for every request that
     * presents the token; len 0 when it could not be rendered. */
    struct lg_buf jwt_json;
};

struct lg_auth_wait {
    struct lg_auth_worker *w;
    struct event *timer;
    int64_t deadline_ms;
    lg_auth_wake_cb wake;
    void *arg;
    struct lg_auth_wait *prev, *next;
};

struct lg_auth_worker {
    struct event_base *base;
    struct lg_jwks_provider *jwks; /* borrowed; NULL without jwks_url */
    struct lg_conf *conf;          /* the config the cached tokens were checked against */
    struct lg_auth_token **table;
    size_t mask;
    size_t count;
    struct lg_auth_token *lru_head, *lru_tail;
    struct lg_auth_wait *waits;
};

static const char *const no_scopes[1] = {NULL};

/* ---------- the verified-token cache ---------- */

static void token_unref(struct lg_auth_token *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    lg_jwt_claims_free(&t->claims);
    free(t->event_claims);
    lg_buf_free(&t->jwt_json);
    OPENSSL_cleanse(t->digest, sizeof(t->digest));
    free(t);
}

static size_t slot_of(const struct lg_auth_worker *w, const uint8_t digest[32])
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return (size_t)h & w->mask;
}

static void lru_unlink(struct lg_auth_worker *w, struct lg_auth_token *t)
{
    if (t->lru_prev)
        t->lru_prev->lru_next = t->lru_next;
    else
        w->lru_head = t->lru_next;
    if (t->lru_next)
        t->lru_next->lru_prev = t->lru_prev;
    else
        w->lru_tail = t->lru_prev;
    t->lru_prev = t->lru_next = NULL;
}

static void lru_push(struct lg_auth_worker *w, struct lg_auth_token *t)
{
    t->lru_prev = NULL;
    t->lru_next = w->lru_head;
    if (w->lru_head)
        w->lru_head->lru_prev = t;
    w->lru_head = t;
    if (w->lru_tail == NULL)
        w->lru_tail = t;
}

static void cache_remove(struct lg_auth_worker *w, struct lg_auth_token *t)
{
    struct lg_auth_token **p = &w->table[slot_of(w, t->digest)];
    while (*p && *p != t)
        p = &(*p)->hash_next;
    if (*p)
        *p = t->hash_next;
    lru_unlink(w, t);
    t->cached = false;
    w->count--;
    token_unref(t);
}

static void cache_flush(struct lg_auth_worker *w)
{
    while (w->lru_head)
        cache_remove(w, w->lru_head);
}

static struct lg_auth_token *cache_find(struct lg_auth_worker *w, const uint8_t digest[32])
{
    for (struct lg_auth_token *t = w->table[slot_of(w, digest)]; t; t = t->hash_next)
        if (CRYPTO_memcmp(t->digest, digest, 32) == 0)
            return t;
    return NULL;
}

static void cache_insert(struct lg_auth_worker *w, struct lg_auth_token *t)
{
    if (w->count >= LG_AUTH_CACHE_MAX && w->lru_tail)
        cache_remove(w, w->lru_tail);
    size_t slot = slot_of(w, t->digest);
    t->hash_next = w->table[slot];
    w->table[slot] = t;
    lru_push(w, t);
    t->cached = true;
    t->refs++;
    w->count++;
}

struct lg_auth_worker *lg_auth_worker_new(struct event_base *base, struct lg_jwks_provider *jwks)
{
    struct lg_auth_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    size_t slots = 1;
    while (slots < 2 * (size_t)LG_AUTH_CACHE_MAX)
        slots <<= 1;
    w->table = calloc(slots, sizeof(*w->table));
    if (w->table == NULL) {
        free(w);
        return NULL;
    }
    w->mask = slots - 1;
    w->base = base;
    w->jwks = jwks;
    return w;
}

void lg_auth_worker_free(struct lg_auth_worker *w)
{
    if (w == NULL)
        return;
    while (w->waits)
        lg_auth_wait_cancel(w->waits);
    cache_flush(w);
    lg_conf_unref(w->conf);
    free(w->table);
    free(w);
}

/* ---------- waiting for a refetched key set ---------- */

static void wait_free(struct lg_auth_wait *wt)
{
    struct lg_auth_worker *w = wt->w;
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        w->waits = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    event_free(wt->timer);
    free(wt);
}

static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lg_auth_wait *wt = arg;
    if (lg_jwks_provider_busy(wt->w->jwks) && lg_mono_ms() < wt->deadline_ms)
        return; /* the timer is persistent */
    lg_auth_wake_cb wake = wt->wake;
    void *warg = wt->arg;
    wait_free(wt);
    wake(warg);
}

static struct lg_auth_wait *wait_new(struct lg_auth_worker *w, lg_auth_wake_cb wake, void *arg)
{
    struct lg_auth_wait *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        return NULL;
    wt->timer = event_new(w->base, -1, EV_PERSIST, on_wait_timer, wt);
    if (wt->timer == NULL) {
        free(wt);
        return NULL;
    }
    struct timeval tv = {0, WAIT_POLL_MS * 1000};
    if (event_add(wt->timer, &tv) != 0) {
        event_free(wt->timer);
        free(wt);
        return NULL;
    }
    wt->w = w;
    wt->deadline_ms = lg_mono_ms() + LG_AUTH_REFETCH_WAIT_MS;
    wt->wake = wake;
    wt->arg = arg;
    wt->next = w->waits;
    if (w->waits)
        w->waits->prev = wt;
    w->waits = wt;
    return wt;
}

void lg_auth_wait_cancel(struct lg_auth_wait *wait)
{
    if (wait)
        wait_free(wait);
}

/* ---------- the checks ---------- */

static void fail(struct lg_auth_result *res, enum lg_auth_outcome outcome, const char *reason)
{
    res->outcome = outcome;
    /* Logged inside reason="...", and a kid is the token's text. */
    lg_log_cleaned(res->reason, sizeof(res->reason), reason);
}

/* The one value of header name: NULL when absent; *many when it was sent
 * more than once (which is refused: which one would count?). */
static const struct lg_http_header *single_header(const struct lg_http_header *headers, size_t n,
                                                  const char *name, bool *many)
{
    const struct lg_http_header *found = NULL;
    *many = false;
    for (size_t i = 0; i < n; i++) {
        if (lg_http_ieq(headers[i].name, headers[i].name_len, name)) {
            if (found) {
                *many = true;
                return found;
            }
            found = &headers[i];
        }
    }
    return found;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* The token of an Authorization value: after "Bearer " (any case), or the
 * whole value, without surrounding blanks. */
static void bearer_token(const struct lg_http_header *h, const char **tok, size_t *len)
{
    const char *s = h->value;
    size_t n = h->value_len;
    while (n && is_space(*s)) {
        s++;
        n--;
    }
    while (n && is_space(s[n - 1]))
        n--;
    if (n >= 7 && strncasecmp(s, "bearer", 6) == 0 && is_space(s[6])) {
        s += 7;
        n -= 7;
        while (n && is_space(*s)) {
            s++;
            n--;
        }
    }
    *tok = s;
    *len = n;
}

/* The key set to verify with: jwks_file's (from the config) or the
 * fetched one. A new reference, or NULL when none was fetched yet. */
static struct lg_jwks *current_keys(struct lg_auth_worker *w, const struct lg_conf_jwt *jwt)
{
    if (jwt->keys)
        return lg_jwks_ref(jwt->keys);
    return w->jwks ? lg_jwks_provider_get(w->jwks) : NULL;
}

static struct lg_auth_token *token_new(const uint8_t digest[32], uint64_t keys_gen,
                                       int64_t leeway_s, struct lg_jwt_claims *claims)
{
    struct lg_auth_token *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->event_claims = calloc(claims->nclaims ? claims->nclaims : 1, sizeof(*t->event_claims));
    if (t->event_claims == NULL) {
        free(t);
        return NULL;
    }
    t->refs = 1;
    memcpy(t->digest, digest, 32);
    t->keys_gen = keys_gen;
    t->claims = *claims;
    memset(claims, 0, sizeof(*claims));
    t->valid_until = t->claims.exp > INT64_MAX - leeway_s ? INT64_MAX : t->claims.exp + leeway_s;
    for (size_t i = 0; i < t->claims.nclaims; i++) {
        t->event_claims[i].name = t->claims.claims[i].name;
        t->event_claims[i].value = t->claims.claims[i].value;
    }
    struct lg_event_identity id = {
        .kind = LG_IDENTITY_JWT,
        .claims = t->event_claims,
        .nclaims = t->claims.nclaims,
        .scopes = t->claims.has_scopes
                      ? (t->claims.nscopes ? (const char *const *)t->claims.scopes : no_scopes)
                      : NULL,
        .nscopes = t->claims.nscopes,
    };
    /* A claim that is not valid UTF-8 cannot be rendered: the event is then
     * built (and refused) the slow way. */
    lg_buf_init(&t->jwt_json, 2 * LG_JWT_MAX_LEN);
    if (lg_event_render_jwt(&id, &t->jwt_json) != 0)
        lg_buf_reset(&t->jwt_json);
    return t;
}

static enum lg_auth_outcome check_jwt(struct lg_auth_worker *w, struct lg_conf *conf,
                                      const struct lg_conf_route *route,
                                      const struct lg_http_header *headers, size_t nheaders,
                                      bool retry, struct lg_auth_result *res, lg_auth_wake_cb wake,
                                      void *arg, struct lg_auth_wait **wait)
{
    const struct lg_conf_jwt *jwt = conf->auth.jwt;
    bool many;
    const struct lg_http_header *h = single_header(headers, nheaders, "authorization", &many);
    if (h == NULL) {
        fail(res, LG_AUTH_UNAUTHORIZED, "no token");
        return res->outcome;
    }
    res->token_sent = true;
    if (many) {
        fail(res, LG_AUTH_UNAUTHORIZED, "more than one Authorization header");
        return res->outcome;
    }
    const char *tok;
    size_t len;
    bearer_token(h, &tok, &len);
    if (len == 0 || len > LG_JWT_MAX_LEN) {
        fail(res, LG_AUTH_UNAUTHORIZED, len ? "token too long" : "empty token");
        return res->outcome;
    }

    /* Tokens were checked against the issuer and audiences of one config:
     * a new config starts a new cache. */
    if (w->conf != conf) {
        cache_flush(w);
        lg_conf_unref(w->conf);
        w->conf = lg_conf_ref(conf);
    }
    uint8_t digest[32];
    if (lg_sigv4_sha256(tok, len, digest) != 0) {
        fail(res, LG_AUTH_UNAUTHORIZED, "cannot hash the token");
        return res->outcome;
    }
    int64_t now = (int64_t)time(NULL);
    struct lg_jwks *keys = current_keys(w, jwt);
    uint64_t gen = keys ? keys->generation : 0;

    struct lg_auth_token *t = cache_find(w, digest);
    if (t && (t->keys_gen != gen || now >= t->valid_until)) {
        cache_remove(w, t);
        t = NULL;
    }
    if (t) {
        lru_unlink(w, t);
        lru_push(w, t);
        t->refs++;
    } else {
        struct lg_jwt_policy policy = {
            .issuer = jwt->issuer,
            .audience = (const char *const *)jwt->audience,
            .naudience = jwt->naudience,
            .leeway_s = jwt->leeway_s,
            .token_use = jwt->token_use,
            .identity_claim = jwt->identity_claim,
            .now = now,
        };
        struct lg_jwt_claims claims;
        memset(&claims, 0, sizeof(claims));
        enum lg_jwt_status st;
        char err[LG_ERR_LEN];
        if (keys) {
            st = lg_jwt_verify(tok, len, keys, &policy, &claims, err, sizeof(err));
        } else {
            st = LG_JWT_UNKNOWN_KID;
            snprintf(err, sizeof(err), "no key set fetched yet");
        }
        lg_jwks_unref(keys);
        keys = NULL;
        if (st == LG_JWT_UNKNOWN_KID && !retry && jwt->jwks_url && w->jwks &&
            lg_jwks_provider_refetch(w->jwks)) {
            lg_jwt_claims_free(&claims);
            *wait = wait_new(w, wake, arg);
            if (*wait) {
                res->outcome = LG_AUTH_PENDING;
                return res->outcome;
            }
        }
        if (st != LG_JWT_OK) {
            lg_jwt_claims_free(&claims);
            res->outcome = LG_AUTH_UNAUTHORIZED;
            snprintf(res->reason, sizeof(res->reason), "%s: %.200s", lg_jwt_status_name(st), err);
            lg_log_clean(res->reason);
            return res->outcome;
        }
        t = token_new(digest, gen, jwt->leeway_s, &claims);
        if (t == NULL) {
            lg_jwt_claims_free(&claims);
            fail(res, LG_AUTH_UNAUTHORIZED, "out of memory");
            return res->outcome;
        }
        cache_insert(w, t);
    }
    lg_jwks_unref(keys);

    res->token = t;
    if (route->nscopes > 0 && !lg_jwt_has_scope(&t->claims, route->scopes, route->nscopes)) {
        res->insufficient_scope = true;
        fail(res, LG_AUTH_FORBIDDEN, "the token has none of the route's scopes");
        return res->outcome;
    }
    res->identity.kind = LG_IDENTITY_JWT;
    res->identity.claims = t->event_claims;
    res->identity.nclaims = t->claims.nclaims;
    if (t->claims.has_scopes) {
        res->identity.scopes =
            t->claims.nscopes ? (const char *const *)t->claims.scopes : no_scopes;
        res->identity.nscopes = t->claims.nscopes;
    }
    if (t->jwt_json.len > 0) {
        res->identity.jwt_json = t->jwt_json.data;
        res->identity.jwt_json_len = t->jwt_json.len;
    }
    res->identity_text = t->claims.identity;
    res->outcome = LG_AUTH_PASS;
    return res->outcome;
}

static enum lg_auth_outcome check_api_key(const struct lg_conf *conf,
                                          const struct lg_http_header *headers, size_t nheaders,
                                          struct lg_auth_result *res)
{
    bool many;
    const struct lg_http_header *h = single_header(headers, nheaders, "x-api-key", &many);
    if (h == NULL) {
        fail(res, LG_AUTH_FORBIDDEN, "no API key");
        return res->outcome;
    }
    if (many) {
        fail(res, LG_AUTH_FORBIDDEN, "more than one x-api-key header");
        return res->outcome;
    }
    const struct lg_apikey *key = NULL;
    if (conf->auth.api_keys && h->value_len > 0 && h->value_len <= LG_APIKEY_VALUE_MAX &&
        memchr(h->value, '\0', h->value_len) == NULL)
        key = lg_apikeys_find(conf->auth.api_keys, h->value, h->value_len);
    if (key == NULL) {
        fail(res, LG_AUTH_FORBIDDEN, "unknown API key");
        return res->outcome;
    }
    memcpy(res->api_key_buf, h->value, h->value_len);
    res->api_key_buf[h->value_len] = '\0';
    res->api_key = key;
    res->identity.kind = LG_IDENTITY_API_KEY;
    res->identity.api_key = res->api_key_buf;
    res->identity.api_key_id = key->id;
    res->identity_text = key->id;
    res->outcome = LG_AUTH_PASS;
    return res->outcome;
}

enum lg_auth_outcome lg_auth_check(struct lg_auth_worker *w, struct lg_conf *conf,
                                   const struct lg_conf_route *route,
                                   const struct lg_http_header *headers, size_t nheaders,
                                   bool retry, struct lg_auth_result *res, lg_auth_wake_cb wake,
                                   void *arg, struct lg_auth_wait **wait)
{
    lg_auth_result_clear(res);
    *wait = NULL;
    switch (route->auth) {
    case LG_AUTH_JWT:
        if (conf->auth.jwt == NULL) {
            fail(res, LG_AUTH_UNAUTHORIZED, "no JWT authenticator");
            return res->outcome;
        }
        return check_jwt(w, conf, route, headers, nheaders, retry, res, wake, arg, wait);
    case LG_AUTH_API_KEY:
        return check_api_key(conf, headers, nheaders, res);
    case LG_AUTH_NONE:
        break;
    }
    res->outcome = LG_AUTH_PASS;
    return res->outcome;
}

void lg_auth_result_clear(struct lg_auth_result *res)
{
    token_unref(res->token);
    /* Only an API key was copied into the buffer (and only its length). */
    if (res->identity.kind == LG_IDENTITY_API_KEY)
        OPENSSL_cleanse(res->api_key_buf, sizeof(res->api_key_buf));
    memset(res, 0, offsetof(struct lg_auth_result, api_key_buf));
    res->reason[0] = '\0';
}
