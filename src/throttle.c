/* throttle.c - the throttling decision of a request: buckets and quotas, local or in Redis.
 *
 * A request passes, in API Gateway's order, the caller's bucket (its API
 * key plan's, else the route's throttle, else throttle.default; the last
 * two per route and per caller), the instance-wide (or, on Redis,
 * fleet-wide) global bucket, and its API key's quota. All are decided as
 * one: a refused request takes nothing from any of them.
 *
 * With throttle.store "redis" one Lua script decides atomically with
 * Redis's clock, so instances share buckets exactly whatever their own
 * clocks say. When Redis is down, slow (past redis.timeout_ms) or answers
 * something unexpected, the local buckets decide instead (fail open: the
 * limits still hold per instance) and the fallback is counted. */
#include "config.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lambdagate/log.h"
#include "lambdagate/redis.h"
#include "lambdagate/sigv4.h"
#include "lambdagate/throttle.h"

/* A spent quota refuses first (as the local store checks it first), so
 * the answer names it and waits for the period's end.
 * KEYS: n bucket keys, then the quota key when there is a quota.
 * ARGV: n, then rate and burst per bucket, then "1" limit ttl_s for a
 * quota or "0". Returns {allowed (0/1), refused (1-based index; n+1 =
 * quota; 0 = none), tokens left per bucket as strings (Lua numbers would
 * be truncated to integers in the reply), quota count}. A bucket's key
 * expires once it would be full again (then it is equivalent to no key). */
const char lg_throttle_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local n = tonumber(ARGV[1])\n"
    "local tokens = {}\n"
    "local refused = 0\n"
    "for i = 1, n do\n"
    "  local rate = tonumber(ARGV[2 * i])\n"
    "  local burst = tonumber(ARGV[2 * i + 1])\n"
    "  local v = redis.call('HMGET', KEYS[i], 't', 'u')\n"
    "  local tok = tonumber(v[1])\n"
    "  local ts = tonumber(v[2])\n"
    "  if tok == nil or ts == nil or tok ~= tok then\n"
    "    tok = burst\n"
    "  elseif now > ts then\n"
    "    tok = math.min(burst, tok + (now - ts) * rate / 1000000)\n"
    "  end\n"
    "  if tok > burst then tok = burst end\n"
    "  if tok < 0 then tok = 0 end\n"
    "  tokens[i] = tok\n"
    "  if tok < 1 - 1e-9 and refused == 0 then refused = i end\n"
    "end\n"
    "local q = 2 * n + 2\n"
    "local count = 0\n"
    "local quota = ARGV[q] == '1'\n"
    "if quota then\n"
    "  count = tonumber(redis.call('GET', KEYS[n + 1]) or '0') or 0\n"
    "  if count >= tonumber(ARGV[q + 1]) then refused = n + 1 end\n"
    "end\n"
    "local out = {refused == 0 and 1 or 0, refused}\n"
    "for i = 1, n do\n"
    "  local tok = tokens[i]\n"
    "  if refused == 0 then\n"
    "    tok = math.max(0, tok - 1)\n"
    "    local rate = tonumber(ARGV[2 * i])\n"
    "    local burst = tonumber(ARGV[2 * i + 1])\n"
    "    local ttl = math.ceil((burst - tok) / rate * 1000) + 1000\n"
    "    if ttl > 86400000 then ttl = 86400000 end\n"
    "    redis.call('HSET', KEYS[i], 't', string.format('%.9f', tok), 'u', string.format('%d', "
    "now))\n"
    "    redis.call('PEXPIRE', KEYS[i], ttl)\n"
    "  end\n"
    "  out[#out + 1] = string.format('%.9f', tok)\n"
    "end\n"
    "if quota and refused == 0 then\n"
    "  count = redis.call('INCR', KEYS[n + 1])\n"
    "  if count == 1 then redis.call('EXPIRE', KEYS[n + 1], tonumber(ARGV[q + 2])) end\n"
    "end\n"
    "out[#out + 1] = count\n"
    "return out\n";

static struct lg_redis_script script;
static pthread_once_t script_once = PTHREAD_ONCE_INIT;

static void script_init(void)
{
    lg_redis_script_init(&script, lg_throttle_script);
}
/* One log line per change between Redis deciding and the local fallback,
 * for the whole process. */
static atomic_bool redis_failing;

#define MAX_BUCKETS 2

/* The buckets and quota of one request. */
struct plan {
    size_t n;
    struct lg_rl_check checks[MAX_BUCKETS];
    enum lg_metric_reason reasons[MAX_BUCKETS];
    char keys[MAX_BUCKETS][LG_RL_KEY_MAX];
    int header; /* index of the bucket whose figures go in RateLimit-*, -1 = none */
    bool quota;
    char quota_key[LG_RL_KEY_MAX];
    size_t quota_key_len;
    int64_t quota_limit, quota_start, quota_end;
    int64_t now_s;
};

struct lg_throttle_call {
    struct lg_rl_local *local;
    struct lg_redis_cmd *cmd;
    struct plan plan;
    lg_throttle_cb cb;
    void *arg;
};

/* key = prefix + text + identity; an identity that would not fit (a long
 * claim) is replaced by its SHA-256. Returns the length. */
static size_t make_key(char *out, const char *prefix, const char *text, const char *identity)
{
    size_t room = LG_RL_KEY_MAX;
    int n = snprintf(out, room, "%s%s%s", prefix, text, identity ? identity : "");
    if (n >= 0 && (size_t)n < room)
        return (size_t)n;
    char hex[65] = "";
    if (identity == NULL || lg_sigv4_sha256_hex(identity, strlen(identity), hex) != 0)
        hex[0] = '\0';
    n = snprintf(out, room, "%s%.300s#%s", prefix, text, hex);
    return n < 0 ? 0 : (size_t)n < room ? (size_t)n : room - 1;
}

static void add_bucket(struct plan *p, const struct lg_conf_rate *rate, enum lg_metric_reason why,
                       const char *text, const char *identity)
{
    size_t i = p->n++;
    p->checks[i].key = p->keys[i];
    p->checks[i].key_len = make_key(p->keys[i], "", text, identity);
    p->checks[i].rate = *rate;
    p->reasons[i] = why;
}

/* What req must pass. */
static void make_plan(const struct lg_throttle_request *req, struct plan *p)
{
    const struct lg_conf *conf = req->conf;
    const struct lg_conf_route *route = req->route;
    memset(p, 0, sizeof(*p));
    p->header = -1;
    p->now_s = req->now_s;
    const struct lg_apikey *key = req->api_key;
    char text[LG_RL_KEY_MAX];
    if (key && key->plan.throttle_presence == LG_CONF_SET) {
        snprintf(text, sizeof(text), "k:%s", key->id);
        add_bucket(p, &key->plan.throttle, LG_REASON_API_KEY, text, NULL);
        p->header = 0;
    } else if (!(key && key->plan.throttle_presence == LG_CONF_NULL)) {
        const struct lg_conf_rate *rate = NULL;
        if (route->throttle_presence == LG_CONF_SET)
            rate = &route->throttle;
        else if (route->throttle_presence == LG_CONF_ABSENT && conf->throttle.default_enabled)
            rate = &conf->throttle.default_rate;
        if (rate) {
            /* Per route and per caller: the route key holds no newline. */
            snprintf(text, sizeof(text), "r:%.400s\n", route->route_key);
            add_bucket(p, rate, LG_REASON_IDENTITY, text, req->identity);
            p->header = 0;
        }
    }
    if (conf->throttle.global_enabled) {
        add_bucket(p, &conf->throttle.global, LG_REASON_GLOBAL, "g", NULL);
        if (p->header < 0)
            p->header = (int)p->n - 1;
    }
    if (key && key->plan.quota_set) {
        p->quota = true;
        p->quota_limit = key->plan.quota_limit;
        lg_apikey_period_bounds(key->plan.quota_period, req->now_s, &p->quota_start, &p->quota_end);
        char start[24];
        snprintf(start, sizeof(start), ":%lld", (long long)p->quota_start);
        snprintf(text, sizeof(text), "q:%s", key->id);
        p->quota_key_len = make_key(p->quota_key, text, start, NULL);
    }
}

static void quota_figures(const struct plan *p, int64_t count, bool allowed, struct lg_rl_result *r)
{
    r->allowed = allowed;
    r->limit = p->quota_limit;
    r->remaining = allowed && count < p->quota_limit ? p->quota_limit - count : 0;
    r->retry_after_s = p->quota_end - p->now_s > 1 ? p->quota_end - p->now_s : 1;
    r->reset_s = r->retry_after_s;
}

static void decide_local(struct lg_rl_local *local, const struct plan *p,
                         struct lg_throttle_result *res)
{
    memset(res, 0, sizeof(*res));
    struct lg_rl_result qr;
    memset(&qr, 0, sizeof(qr));
    if (p->quota && !lg_rl_local_quota(local, p->quota_key, p->quota_key_len, p->quota_limit,
                                       p->quota_start, p->quota_end, p->now_s, &qr)) {
        res->allowed = false;
        res->reason = LG_REASON_QUOTA;
        res->retry_after_s = qr.retry_after_s > 0 ? qr.retry_after_s : 1;
        res->has_headers = true;
        quota_figures(p, p->quota_limit, false, &res->headers);
        return;
    }
    struct lg_rl_result results[MAX_BUCKETS];
    int refused = p->n ? lg_rl_local_decide(local, p->checks, p->n, lg_mono_us(), results) : -1;
    if (refused >= 0) {
        if (p->quota)
            lg_rl_local_quota_refund(local, p->quota_key, p->quota_key_len, p->quota_start);
        res->allowed = false;
        res->reason = p->reasons[refused];
        res->retry_after_s =
            results[refused].retry_after_s > 0 ? results[refused].retry_after_s : 1;
    } else {
        res->allowed = true;
    }
    if (p->header >= 0) {
        res->has_headers = true;
        res->headers = results[p->header];
    } else if (p->quota) {
        res->has_headers = true;
        quota_figures(p, p->quota_limit - qr.remaining, res->allowed, &res->headers);
    }
}

/* Parse the script's answer into res; -1 when it is not what the script
 * returns (then the local buckets decide). */
static int parse_reply(const struct plan *p, const redisReply *r, struct lg_throttle_result *res)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != p->n + 3)
        return -1;
    const redisReply *ok = r->element[0], *refused = r->element[1], *count = r->element[p->n + 2];
    if (ok->type != REDIS_REPLY_INTEGER || refused->type != REDIS_REPLY_INTEGER ||
        count->type != REDIS_REPLY_INTEGER || refused->integer < 0 ||
        refused->integer > (long long)p->n + 1 || (ok->integer != 0) == (refused->integer != 0) ||
        (refused->integer == (long long)p->n + 1 && !p->quota))
        return -1;
    memset(res, 0, sizeof(*res));
    res->allowed = ok->integer == 1;
    struct lg_rl_result results[MAX_BUCKETS];
    for (size_t i = 0; i < p->n; i++) {
        const redisReply *t = r->element[2 + i];
        if (t->type != REDIS_REPLY_STRING || t->len == 0 || t->len > 40)
            return -1;
        char text[48];
        memcpy(text, t->str, t->len);
        text[t->len] = '\0';
        char *end;
        double tokens = strtod(text, &end);
        if (*end != '\0' || !isfinite(tokens) || tokens < 0)
            return -1;
        struct lg_rl_bucket b = {tokens, 0};
        lg_rl_bucket_result(&b, &p->checks[i].rate, res->allowed, &results[i]);
    }
    if (!res->allowed) {
        size_t idx = (size_t)refused->integer - 1;
        if (idx == p->n) {
            res->reason = LG_REASON_QUOTA;
            res->retry_after_s = p->quota_end - p->now_s > 1 ? p->quota_end - p->now_s : 1;
        } else {
            res->reason = p->reasons[idx];
            res->retry_after_s = results[idx].retry_after_s > 0 ? results[idx].retry_after_s : 1;
        }
    }
    if (p->header >= 0 && res->reason != LG_REASON_QUOTA) {
        res->has_headers = true;
        res->headers = results[p->header];
    } else if (p->quota) {
        /* A spent quota shows its own figures, as with the local store. */
        res->has_headers = true;
        quota_figures(p, count->integer, res->allowed, &res->headers);
    }
    return 0;
}

static void note_redis(bool failing, const char *why)
{
    bool was = atomic_exchange(&redis_failing, failing);
    if (failing && !was)
        lg_log(LG_LOG_WARN,
               "throttle store redis unusable, deciding with the local buckets "
               "reason=\"%s\"",
               why);
    else if (!failing && was)
        lg_log(LG_LOG_INFO, "throttle store redis usable again");
}

static void on_redis_reply(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct lg_throttle_call *call = arg;
    struct lg_throttle_result res;
    call->cmd = NULL;
    const char *why = NULL;
    if (status != LG_REDIS_OK)
        why = status == LG_REDIS_DOWN ? "down" : status == LG_REDIS_TIMEOUT ? "timeout" : "error";
    else if (parse_reply(&call->plan, reply, &res) != 0)
        why = reply && reply->type == REDIS_REPLY_ERROR ? "error reply" : "unexpected reply";
    if (why) {
        note_redis(true, why);
        lg_metrics_redis_fallback();
        decide_local(call->local, &call->plan, &res);
        res.fell_back = true;
    } else {
        note_redis(false, NULL);
    }
    lg_throttle_cb cb = call->cb;
    void *cb_arg = call->arg;
    free(call);
    cb(&res, cb_arg);
}

static const char *redis_prefix(const struct lg_conf *conf)
{
    return conf->redis.prefix ? conf->redis.prefix : "";
}

static struct lg_throttle_call *decide_redis(struct lg_rl_local *local, struct lg_redis *redis,
                                             const struct lg_throttle_request *req,
                                             const struct plan *p, lg_throttle_cb cb, void *arg)
{
    pthread_once(&script_once, script_init);
    struct lg_throttle_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    call->local = local;
    call->plan = *p;
    /* The checks point at their key texts: make them point at the copy. */
    for (size_t i = 0; i < p->n; i++)
        call->plan.checks[i].key = call->plan.keys[i];
    call->cb = cb;
    call->arg = arg;
    const char *prefix = redis_prefix(req->conf);
    /* Keys: prefix + "rl:" + bucket name, prefix + quota name. */
    char keys[MAX_BUCKETS + 1][LG_RL_KEY_MAX + 64];
    char nums[2 * MAX_BUCKETS + 4][40];
    const char *argv[MAX_BUCKETS + 1 + 2 * MAX_BUCKETS + 4];
    size_t lens[LG_ARRAY_LEN(argv)];
    int argc = 0, nkeys = 0;
    for (size_t i = 0; i < p->n; i++) {
        int n = snprintf(keys[i], sizeof(keys[i]), "%srl:%.*s", prefix, (int)p->checks[i].key_len,
                         p->checks[i].key);
        argv[argc] = keys[i];
        lens[argc++] = n < 0 ? 0 : (size_t)n < sizeof(keys[i]) ? (size_t)n : sizeof(keys[i]) - 1;
        nkeys++;
    }
    if (p->quota) {
        int n = snprintf(keys[p->n], sizeof(keys[p->n]), "%s%.*s", prefix, (int)p->quota_key_len,
                         p->quota_key);
        argv[argc] = keys[p->n];
        lens[argc++] = n < 0                            ? 0
                       : (size_t)n < sizeof(keys[p->n]) ? (size_t)n
                                                        : sizeof(keys[p->n]) - 1;
        nkeys++;
    }
    size_t k = 0;
#define ARG_NUM(fmt, v)                                                                            \
    do {                                                                                           \
        int m_ = snprintf(nums[k], sizeof(nums[k]), fmt, v);                                       \
        argv[argc] = nums[k];                                                                      \
        lens[argc++] = m_ < 0 ? 0 : (size_t)m_;                                                    \
        k++;                                                                                       \
    } while (0)
    ARG_NUM("%zu", p->n);
    for (size_t i = 0; i < p->n; i++) {
        ARG_NUM("%.17g", p->checks[i].rate.rate);
        ARG_NUM("%lld", (long long)p->checks[i].rate.burst);
    }
    if (p->quota) {
        ARG_NUM("%s", "1");
        ARG_NUM("%lld", (long long)p->quota_limit);
        /* The counter outlives its period by an hour: a clock a little
         * behind still finds it. */
        ARG_NUM("%lld", (long long)(p->quota_end - p->now_s + 3600));
    } else {
        ARG_NUM("%s", "0");
    }
#undef ARG_NUM
    call->cmd = lg_redis_eval(redis, &script, nkeys, argc, argv, lens, on_redis_reply, call);
    if (call->cmd == NULL) {
        free(call);
        return NULL;
    }
    return call;
}

int lg_throttle_decide(struct lg_rl_local *local, struct lg_redis *redis,
                       const struct lg_throttle_request *req, struct lg_throttle_result *res,
                       lg_throttle_cb cb, void *arg, struct lg_throttle_call **call)
{
    struct plan p;
    make_plan(req, &p);
    *call = NULL;
    if (p.n == 0 && !p.quota) {
        memset(res, 0, sizeof(*res));
        res->allowed = true;
        return 0;
    }
    if (redis) {
        *call = decide_redis(local, redis, req, &p, cb, arg);
        if (*call)
            return 1;
        lg_metrics_redis_fallback();
    }
    decide_local(local, &p, res);
    res->fell_back = redis != NULL;
    return 0;
}

void lg_throttle_cancel(struct lg_throttle_call *call)
{
    if (call == NULL)
        return;
    lg_redis_cancel(call->cmd);
    free(call);
}

bool lg_throttle_per_ip(struct lg_rl_local *local, const struct lg_conf *conf, const char *ip,
                        int64_t *retry_after_s)
{
    if (!conf->limits.per_ip_enabled)
        return true;
    char key[LG_RL_KEY_MAX];
    struct lg_rl_check check = {key, make_key(key, "", "ip:", ip), conf->limits.per_ip};
    struct lg_rl_result r;
    if (lg_rl_local_decide(local, &check, 1, lg_mono_us(), &r) < 0)
        return true;
    *retry_after_s = r.retry_after_s > 0 ? r.retry_after_s : 1;
    return false;
}
