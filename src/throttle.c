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

#include <event2/event.h>

#include "lambdagate/codec.h"
#include "lambdagate/log.h"
#include "lambdagate/redis.h"
#include "lambdagate/sigv4.h"
#include "lambdagate/throttle.h"

/* Decisions started in one turn of a worker's loop go to Redis together,
 * as one call of this script, which Redis runs atomically. It decides them
 * in order, each seeing what the ones before it took, as if they had come
 * one by one; a bucket or quota counter that several of them use (the
 * global bucket, a busy caller's) is read once and written once for the
 * whole call, so Redis's work grows with the keys, not the requests.
 * KEYS: each decision's bucket keys, then its quota key when it has one.
 * ARGV: the number of decisions; then, for each, n, rate and burst per
 * bucket, then "1" limit ttl_s for a quota or "0".
 * Returns one array per decision: {allowed (0/1), refused (1-based index;
 * n+1 = quota; 0 = none), tokens left per bucket in millionths (an
 * integer: Lua numbers are truncated to integers in the reply), quota
 * count}. A spent quota
 * refuses first (as the local store checks it first), so the answer names
 * it and waits for the period's end.
 * A bucket is a string "tokens time_us" that expires once it would be full
 * again (then it is equivalent to no key); a key of another type (an older
 * version's hash) counts as a full bucket and is replaced. A quota counter
 * is an integer, given its expiry when a call creates it. */
const char lg_throttle_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local buckets, border, counters, corder = {}, {}, {}, {}\n"
    "local function bucket(key, rate, burst)\n"
    "  local b = buckets[key]\n"
    "  if b == nil then\n"
    "    local tok, ts\n"
    "    local v = redis.pcall('GET', key)\n"
    "    if type(v) == 'string' then\n"
    "      local sep = string.find(v, ' ', 1, true)\n"
    "      if sep then\n"
    "        tok = tonumber(string.sub(v, 1, sep - 1))\n"
    "        ts = tonumber(string.sub(v, sep + 1))\n"
    "      end\n"
    "    end\n"
    "    if tok == nil or ts == nil or tok ~= tok then\n"
    "      tok = burst\n"
    "    elseif now > ts then\n"
    "      tok = tok + (now - ts) * rate / 1000000\n"
    "    end\n"
    "    if tok < 0 then tok = 0 end\n"
    "    b = {tok = tok}\n"
    "    buckets[key] = b\n"
    "    border[#border + 1] = key\n"
    "  end\n"
    "  b.rate = rate\n"
    "  b.burst = burst\n"
    "  return b\n"
    "end\n"

    "local function counter(key)\n"
    "  local c = counters[key]\n"
    "  if c == nil then\n"
    "    c = {n = tonumber(redis.call('GET', key) or '0') or 0, add = 0}\n"
    "    counters[key] = c\n"
    "    corder[#corder + 1] = key\n"
    "  end\n"
    "  return c\n"
    "end\n"
    "local a, k = 2, 1\n"
    "local res = {}\n"
    "for d = 1, tonumber(ARGV[1]) do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  local out = {1, 0}\n"
    "  local refused = 0\n"
    "  for i = 1, n do\n"
    "    local burst = tonumber(ARGV[a + 2 * i])\n"
    "    local b = bucket(KEYS[k + i - 1], tonumber(ARGV[a + 2 * i - 1]), burst)\n"
    "    local tok = b.tok\n"
    "    if tok > burst then tok = burst end\n"
    "    out[i + 2] = tok\n"
    "    if tok < 1 - 1e-9 and refused == 0 then refused = i end\n"
    "  end\n"
    "  local q = a + 2 * n + 1\n"
    "  local quota = ARGV[q] == '1'\n"
    "  local c, count = nil, 0\n"
    "  if quota then\n"
    "    c = counter(KEYS[k + n])\n"
    "    count = c.n + c.add\n"
    "    if count >= tonumber(ARGV[q + 1]) then refused = n + 1 end\n"
    "  end\n"
    "  if refused ~= 0 then\n"
    "    out[1] = 0\n"
    "    out[2] = refused\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    local tok = out[i + 2]\n"
    "    if refused == 0 then\n"
    "      tok = tok - 1\n"
    "      if tok < 0 then tok = 0 end\n"
    "      local b = buckets[KEYS[k + i - 1]]\n"
    "      b.tok = tok\n"
    "      b.dirty = true\n"
    "    end\n"
    "    out[i + 2] = math.floor(tok * 1000000 + 0.001)\n"
    "  end\n"
    "  if quota and refused == 0 then\n"
    "    c.add = c.add + 1\n"
    "    c.ttl = tonumber(ARGV[q + 2])\n"
    "    count = c.n + c.add\n"
    "  end\n"
    "  out[#out + 1] = count\n"
    "  res[d] = out\n"
    "  if quota then\n"
    "    a = q + 3\n"
    "    k = k + n + 1\n"
    "  else\n"
    "    a = q + 1\n"
    "    k = k + n\n"
    "  end\n"
    "end\n"
    "for _, key in ipairs(border) do\n"
    "  local b = buckets[key]\n"
    "  if b.dirty then\n"
    "    local ttl = math.ceil((b.burst - b.tok) / b.rate * 1000) + 1000\n"
    "    if ttl > 86400000 then ttl = 86400000 end\n"
    "    redis.call('SET', key, string.format('%.17g %.0f', b.tok, now), 'PX', ttl)\n"
    "  end\n"
    "end\n"
    "for _, key in ipairs(corder) do\n"
    "  local c = counters[key]\n"
    "  if c.add > 0 and redis.call('INCRBY', key, c.add) == c.add then\n"
    "    redis.call('EXPIRE', key, c.ttl)\n"
    "  end\n"
    "end\n"
    "return res\n";

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

/* Keys: prefix + "rl:" + bucket name, prefix + quota name. */
#define REDIS_KEY_MAX (LG_RL_KEY_MAX + 64)

struct batch;

struct lg_throttle_call {
    struct lg_rl_local *local;
    struct plan plan;
    lg_throttle_cb cb;
    void *arg;
    /* The Redis keys of the buckets, then of the quota counter. */
    char rkeys[MAX_BUCKETS + 1][REDIS_KEY_MAX];
    size_t rkey_lens[MAX_BUCKETS + 1];
    /* Waiting in a batcher's queue or, when it could not be sent (no
     * memory), in its failed list (batcher set, failed says which); or sent
     * (batch set). */
    struct lg_throttle_batcher *batcher;
    bool failed;
    struct lg_throttle_call *prev, *next;
    struct batch *batch;
    size_t slot;
};

/* Decisions per script call: bounds the call's arguments. */
#define BATCH_MAX 32

/* One script call in flight. */
struct batch {
    struct lg_redis_cmd *cmd;
    size_t n;                                  /* decisions sent */
    size_t live;                               /* of those, not cancelled */
    bool in_reply;                             /* its reply is being handed out */
    struct lg_throttle_call *calls[BATCH_MAX]; /* NULL once cancelled */
};

struct lg_throttle_batcher {
    struct event *flush;    /* active while calls are queued or failed */
    struct lg_redis *redis; /* of the queued calls */
    struct lg_throttle_call *head, *tail;
    size_t queued;
    /* Calls that could not be sent, decided locally from the flush event
     * (never inside lg_throttle_decide or lg_throttle_batcher_flush). */
    struct lg_throttle_call *failed;
};

/* key = prefix + text + identity; an identity that would not fit (a long
 * claim) is replaced by its SHA-256. Returns the length. */
static size_t make_key(char *out, const char *prefix, const char *text, const char *identity)
{
    size_t room = LG_RL_KEY_MAX;
    size_t lp = strlen(prefix), lt = strlen(text), li = identity ? strlen(identity) : 0;
    if (lp + lt + li < room) {
        /* The usual case, without printf: this runs for every request. */
        memcpy(out, prefix, lp);
        memcpy(out + lp, text, lt);
        if (li)
            memcpy(out + lp + lt, identity, li);
        out[lp + lt + li] = '\0';
        return lp + lt + li;
    }
    int n;
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
            size_t rk = strnlen(route->route_key, 400);
            memcpy(text, "r:", 2);
            memcpy(text + 2, route->route_key, rk);
            text[2 + rk] = '\n';
            text[3 + rk] = '\0';
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
        /* Millionths of a token, at most the burst's. */
        if (t->type != REDIS_REPLY_INTEGER || t->integer < 0 ||
            (double)t->integer > ((double)p->checks[i].rate.burst + 1) * 1e6)
            return -1;
        double tokens = (double)t->integer / 1e6;
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

/* The result of one decision of a batch's reply (NULL when the command
 * failed), falling back to the local buckets when Redis could not decide. */
static void finish_call(struct lg_throttle_call *call, enum lg_redis_status status,
                        const redisReply *reply, const redisReply *mine)
{
    struct lg_throttle_result res;
    const char *why = NULL;
    if (status != LG_REDIS_OK)
        why = status == LG_REDIS_DOWN ? "down" : status == LG_REDIS_TIMEOUT ? "timeout" : "error";
    else if (parse_reply(&call->plan, mine, &res) != 0)
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

static void on_batch_reply(enum lg_redis_status status, const struct redisReply *reply, void *arg)
{
    struct batch *b = arg;
    b->cmd = NULL;
    b->in_reply = true;
    bool shaped = status == LG_REDIS_OK && reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
                  reply->elements == b->n;
    /* A callback may cancel a later call of this batch (its slot empties). */
    for (size_t i = 0; i < b->n; i++) {
        struct lg_throttle_call *call = b->calls[i];
        if (call == NULL)
            continue;
        b->calls[i] = NULL;
        finish_call(call, status, reply, shaped ? reply->element[i] : NULL);
    }
    free(b);
}

static const char *redis_prefix(const struct lg_conf *conf)
{
    return conf->redis.prefix ? conf->redis.prefix : "";
}

/* v as Lua's tonumber reads it back exactly, into out (size >= 32):
 * integers below 2^53 in decimal digits, anything else with %.17g.
 * Returns the length. */
static size_t put_num(char *out, size_t size, double v)
{
    if (v >= 0 && v < 9007199254740992.0 && v == (double)(int64_t)v)
        return lg_codec_i64(out, (int64_t)v);
    int n = snprintf(out, size, "%.17g", v);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* prefix, then mid, then n bytes of text into out (REDIS_KEY_MAX),
 * truncated to fit. Returns the length. */
static size_t put_key(char *out, const char *prefix, const char *mid, const char *text, size_t n)
{
    size_t len = 0;
    const char *parts[3] = {prefix, mid, text};
    size_t lens[3] = {strlen(prefix), strlen(mid), n};
    for (size_t i = 0; i < 3; i++) {
        size_t take = lens[i] < REDIS_KEY_MAX - 1 - len ? lens[i] : REDIS_KEY_MAX - 1 - len;
        memcpy(out + len, parts[i], take);
        len += take;
    }
    out[len] = '\0';
    return len;
}

/* The first queued call, out of the queue. */
static struct lg_throttle_call *queue_pop(struct lg_throttle_batcher *bt)
{
    struct lg_throttle_call *call = bt->head;
    bt->head = call->next;
    if (bt->head)
        bt->head->prev = NULL;
    else
        bt->tail = NULL;
    bt->queued--;
    call->batcher = NULL;
    call->prev = call->next = NULL;
    return call;
}

/* A call that could not be sent: decided locally from the flush event. */
static void fail_later(struct lg_throttle_batcher *bt, struct lg_throttle_call *call)
{
    call->batcher = bt;
    call->batch = NULL;
    call->failed = true;
    call->prev = NULL;
    call->next = bt->failed;
    if (bt->failed)
        bt->failed->prev = call;
    bt->failed = call;
    event_active(bt->flush, EV_TIMEOUT, 1);
}

/* Send up to BATCH_MAX of the queued calls as one script call. Calls that
 * cannot be sent (no memory) go to the failed list: no callback runs
 * from here. */
static void send_batch(struct lg_throttle_batcher *bt)
{
    pthread_once(&script_once, script_init);
    struct batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        fail_later(bt, queue_pop(bt));
        return;
    }
    while (bt->head != NULL && b->n < BATCH_MAX) {
        struct lg_throttle_call *call = queue_pop(bt);
        call->batch = b;
        call->slot = b->n;
        b->calls[b->n++] = call;
    }
    b->live = b->n;
    /* Keys, then: count, and per decision n, rate/burst pairs, quota. */
    enum {
        MAX_KEYS = BATCH_MAX * (MAX_BUCKETS + 1),
        MAX_NUMS = 1 + BATCH_MAX * (1 + 2 * MAX_BUCKETS + 3),
    };
    const char *argv[MAX_KEYS + MAX_NUMS];
    size_t lens[MAX_KEYS + MAX_NUMS];
    char nums[MAX_NUMS][32];
    int argc = 0, nkeys = 0;
    size_t k = 0;
    for (size_t d = 0; d < b->n; d++) {
        const struct lg_throttle_call *c = b->calls[d];
        size_t nk = c->plan.n + (c->plan.quota ? 1 : 0);
        for (size_t i = 0; i < nk; i++) {
            argv[argc] = c->rkeys[i];
            lens[argc++] = c->rkey_lens[i];
            nkeys++;
        }
    }
    /* Numbers without printf (this runs for every request): integers by
     * hand, a fractional rate with %.17g. */
#define ARG_NUM(v)                                                                                 \
    do {                                                                                           \
        argv[argc] = nums[k];                                                                      \
        lens[argc++] = put_num(nums[k], sizeof(nums[k]), (v));                                     \
        k++;                                                                                       \
    } while (0)
    ARG_NUM((double)b->n);
    for (size_t d = 0; d < b->n; d++) {
        const struct plan *p = &b->calls[d]->plan;
        ARG_NUM((double)p->n);
        for (size_t i = 0; i < p->n; i++) {
            ARG_NUM(p->checks[i].rate.rate);
            ARG_NUM((double)p->checks[i].rate.burst);
        }
        if (p->quota) {
            ARG_NUM(1.0);
            ARG_NUM((double)p->quota_limit);
            /* The counter outlives its period by an hour: a clock a little
             * behind still finds it. */
            ARG_NUM((double)(p->quota_end - p->now_s + 3600));
        } else {
            ARG_NUM(0.0);
        }
    }
#undef ARG_NUM
    b->cmd = lg_redis_eval(bt->redis, &script, nkeys, argc, argv, lens, on_batch_reply, b);
    if (b->cmd == NULL) {
        /* No memory for the command. */
        for (size_t i = 0; i < b->n; i++)
            fail_later(bt, b->calls[i]);
        free(b);
    }
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lg_throttle_batcher *bt = arg;
    /* A callback may cancel another failed call (it leaves the list). */
    while (bt->failed) {
        struct lg_throttle_call *call = bt->failed;
        bt->failed = call->next;
        if (bt->failed)
            bt->failed->prev = NULL;
        call->batcher = NULL;
        call->failed = false;
        finish_call(call, LG_REDIS_ERROR, NULL, NULL);
    }
    if (bt->head == NULL)
        return;
    while (bt->head)
        send_batch(bt);
    /* Out now: the decisions' requests wait for nothing else. */
    lg_redis_flush(bt->redis);
}

struct lg_throttle_batcher *lg_throttle_batcher_new(struct event_base *base)
{
    struct lg_throttle_batcher *bt = calloc(1, sizeof(*bt));
    if (bt == NULL)
        return NULL;
    bt->flush = event_new(base, -1, 0, flush_cb, bt);
    if (bt->flush == NULL) {
        free(bt);
        return NULL;
    }
    return bt;
}

void lg_throttle_batcher_flush(struct lg_throttle_batcher *bt)
{
    if (bt == NULL)
        return;
    while (bt->head)
        send_batch(bt);
    bt->redis = NULL; /* it may be replaced now: nothing queued refers to it */
    if (bt->failed == NULL)
        event_del(bt->flush);
}

void lg_throttle_batcher_free(struct lg_throttle_batcher *bt)
{
    if (bt == NULL)
        return;
    /* Queued calls belong to requests, released before their worker. */
    while (bt->head)
        free(queue_pop(bt));
    while (bt->failed) {
        struct lg_throttle_call *call = bt->failed;
        bt->failed = call->next;
        free(call);
    }
    event_free(bt->flush);
    free(bt);
}

static struct lg_throttle_call *decide_redis(struct lg_rl_local *local, struct lg_redis *redis,
                                             struct lg_throttle_batcher *bt,
                                             const struct lg_throttle_request *req,
                                             const struct plan *p, lg_throttle_cb cb, void *arg)
{
    /* Not calloc: the key buffers need no zeroing. */
    struct lg_throttle_call *call = malloc(sizeof(*call));
    if (call == NULL)
        return NULL;
    call->batcher = NULL;
    call->failed = false;
    call->prev = call->next = NULL;
    call->batch = NULL;
    call->slot = 0;
    call->local = local;
    call->plan = *p;
    /* The checks point at their key texts: make them point at the copy. */
    for (size_t i = 0; i < p->n; i++)
        call->plan.checks[i].key = call->plan.keys[i];
    call->cb = cb;
    call->arg = arg;
    const char *prefix = redis_prefix(req->conf);
    for (size_t i = 0; i < p->n; i++)
        call->rkey_lens[i] =
            put_key(call->rkeys[i], prefix, "rl:", p->checks[i].key, p->checks[i].key_len);
    if (p->quota)
        call->rkey_lens[p->n] =
            put_key(call->rkeys[p->n], prefix, "", p->quota_key, p->quota_key_len);
    if (bt->queued > 0 && bt->redis != redis)
        lg_throttle_batcher_flush(bt); /* another connection: those go first */
    bt->redis = redis;
    call->batcher = bt;
    call->prev = bt->tail;
    if (bt->tail)
        bt->tail->next = call;
    else
        bt->head = call;
    bt->tail = call;
    /* Sent from the flush event, after the loop's other ready events (the
     * rest of the batch), 32 to a script call. */
    if (bt->queued++ == 0)
        event_active(bt->flush, EV_TIMEOUT, 1);
    return call;
}

int lg_throttle_decide(struct lg_rl_local *local, struct lg_redis *redis,
                       struct lg_throttle_batcher *batcher, const struct lg_throttle_request *req,
                       struct lg_throttle_result *res, lg_throttle_cb cb, void *arg,
                       struct lg_throttle_call **call)
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
        *call = batcher ? decide_redis(local, redis, batcher, req, &p, cb, arg) : NULL;
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
    struct lg_throttle_batcher *bt = call->batcher;
    if (bt != NULL && call->failed) {
        /* Waiting to be decided locally: out of the failed list. */
        if (call->prev)
            call->prev->next = call->next;
        else
            bt->failed = call->next;
        if (call->next)
            call->next->prev = call->prev;
    } else if (bt != NULL) {
        /* Still queued: out of the queue. */
        if (call->prev)
            call->prev->next = call->next;
        else
            bt->head = call->next;
        if (call->next)
            call->next->prev = call->prev;
        else
            bt->tail = call->prev;
        if (--bt->queued == 0 && bt->failed == NULL)
            event_del(bt->flush);
    } else if (call->batch != NULL) {
        struct batch *b = call->batch;
        b->calls[call->slot] = NULL;
        if (--b->live == 0 && !b->in_reply) {
            /* Nobody waits for this answer any more. */
            lg_redis_cancel(b->cmd);
            free(b);
        }
    }
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
