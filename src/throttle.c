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
 * KEYS: the distinct bucket and quota keys of the call, each once.
 * ARGV[1]: the decisions, a byte each: n (buckets), the n buckets' key
 * indexes (1-based, into KEYS), the quota's key index or 0 for none.
 * Bytes, not numbers: Lua reads them without strtod.
 * ARGV[2j], ARGV[2j+1]: rate and burst of key j when it is a bucket, limit
 * and counter ttl_s when it is a quota counter.
 * Returns one flat array of integers, for each decision in order: the
 * refused check (1-based: n+1 = the quota; 0 = allowed), then the tokens
 * left in each of its buckets in millionths (Lua numbers are truncated to
 * integers in the reply), then the quota count when it has a quota. A
 * spent quota refuses first (as the local store checks it first), so the
 * answer names it and waits for the period's end.
 * A bucket is a string "tokens time_us" that expires once it would be full
 * again (then it is equivalent to no key); a key of another type (an older
 * version's hash) counts as a full bucket and is replaced. A quota counter
 * is an integer, given its expiry when a call creates it. */
const char lg_throttle_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local plan = {string.byte(ARGV[1], 1, -1)}\n"
    "local tok, dirty, cnt, add = {}, {}, {}, {}\n"
    "local function bucket(j)\n"
    "  local v = tok[j]\n"
    "  if v ~= nil then return v end\n"
    "  local burst, ts = tonumber(ARGV[2 * j + 1])\n"
    "  local s = redis.pcall('GET', KEYS[j])\n"
    "  if type(s) == 'string' then\n"
    "    local sep = string.find(s, ' ', 1, true)\n"
    "    if sep then\n"
    "      v = tonumber(string.sub(s, 1, sep - 1))\n"
    "      ts = tonumber(string.sub(s, sep + 1))\n"
    "    end\n"
    "  end\n"
    "  if v == nil or ts == nil or v ~= v then\n"
    "    v = burst\n"
    "  elseif now > ts then\n"
    "    v = v + (now - ts) * tonumber(ARGV[2 * j]) / 1000000\n"
    "  end\n"
    "  if v < 0 then v = 0 end\n"
    "  if v > burst then v = burst end\n"
    "  tok[j] = v\n"
    "  return v\n"
    "end\n"
    "local res, r, p = {}, 0, 1\n"
    "while p <= #plan do\n"
    "  local n = plan[p]\n"
    "  local q = plan[p + n + 1]\n"
    "  local refused, count = 0, 0\n"
    "  for i = 1, n do\n"
    "    if bucket(plan[p + i]) < 1 - 1e-9 and refused == 0 then refused = i end\n"
    "  end\n"
    "  if q ~= 0 then\n"
    "    if cnt[q] == nil then\n"
    "      cnt[q] = tonumber(redis.call('GET', KEYS[q]) or '0') or 0\n"
    "      add[q] = 0\n"
    "    end\n"
    "    count = cnt[q] + add[q]\n"
    "    if count >= tonumber(ARGV[2 * q]) then refused = n + 1 end\n"
    "  end\n"
    "  r = r + 1\n"
    "  res[r] = refused\n"
    "  for i = 1, n do\n"
    "    local j = plan[p + i]\n"
    "    local v = tok[j]\n"
    "    if refused == 0 then\n"
    "      v = v - 1\n"
    "      if v < 0 then v = 0 end\n"
    "      tok[j] = v\n"
    "      dirty[j] = true\n"
    "    end\n"
    "    r = r + 1\n"
    "    res[r] = math.floor(v * 1000000 + 0.001)\n"
    "  end\n"
    "  if q ~= 0 then\n"
    "    if refused == 0 then\n"
    "      add[q] = add[q] + 1\n"
    "      count = count + 1\n"
    "    end\n"
    "    r = r + 1\n"
    "    res[r] = count\n"
    "  end\n"
    "  p = p + n + 2\n"
    "end\n"
    "for j = 1, #KEYS do\n"
    "  if dirty[j] then\n"
    "    local rate, burst = tonumber(ARGV[2 * j]), tonumber(ARGV[2 * j + 1])\n"
    "    local ttl = math.ceil((burst - tok[j]) / rate * 1000) + 1000\n"
    "    if ttl > 86400000 then ttl = 86400000 end\n"
    "    redis.call('SET', KEYS[j], string.format('%.17g %.0f', tok[j], now), 'PX', ttl)\n"
    "  elseif add[j] ~= nil and add[j] > 0 then\n"
    "    if redis.call('INCRBY', KEYS[j], add[j]) == add[j] then\n"
    "      redis.call('EXPIRE', KEYS[j], tonumber(ARGV[2 * j + 1]))\n"
    "    end\n"
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

/* The buckets and quota of one request. Its key texts live elsewhere (a
 * struct plan_text, or the end of a struct lg_throttle_call). */
struct plan {
    size_t n;
    struct lg_rl_check checks[MAX_BUCKETS];
    enum lg_metric_reason reasons[MAX_BUCKETS];
    int header; /* index of the bucket whose figures go in RateLimit-*, -1 = none */
    bool quota;
    const char *quota_key;
    size_t quota_key_len;
    int64_t quota_limit, quota_start, quota_end;
    int64_t now_s;
};

/* Room for the key texts of a plan while it is made. */
struct plan_text {
    char keys[MAX_BUCKETS][LG_RL_KEY_MAX];
    char quota_key[LG_RL_KEY_MAX];
};

struct batch;

/* A decision waiting for Redis. Allocated with its key texts at the end,
 * so that it is small (a few hundred bytes for usual keys). */
struct lg_throttle_call {
    struct lg_rl_local *local;
    struct plan plan; /* its keys point into text */
    lg_throttle_cb cb;
    void *arg;
    /* The Redis keys of the buckets, then of the quota counter: prefix +
     * "rl:" + bucket key, prefix + quota key (in text). */
    const char *rkeys[MAX_BUCKETS + 1];
    size_t rkey_lens[MAX_BUCKETS + 1];
    /* Waiting in a batcher's queue or, when it could not be sent (no
     * memory), in its failed list (batcher set, failed says which); or sent
     * (batch set). */
    struct lg_throttle_batcher *batcher;
    bool failed;
    struct lg_throttle_call *prev, *next;
    struct batch *batch;
    size_t slot;
    char text[];
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
    /* Where each decision's answer starts in the reply's flat array;
     * at[n] = the array's length. */
    size_t at[BATCH_MAX + 1];
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

static void add_bucket(struct plan *p, struct plan_text *pt, const struct lg_conf_rate *rate,
                       enum lg_metric_reason why, const char *text, const char *identity)
{
    size_t i = p->n++;
    p->checks[i].key = pt->keys[i];
    p->checks[i].key_len = make_key(pt->keys[i], "", text, identity);
    p->checks[i].rate = *rate;
    p->reasons[i] = why;
}

/* What req must pass; its keys are written in pt. */
static void make_plan(const struct lg_throttle_request *req, struct plan *p, struct plan_text *pt)
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
        add_bucket(p, pt, &key->plan.throttle, LG_REASON_API_KEY, text, NULL);
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
            add_bucket(p, pt, rate, LG_REASON_IDENTITY, text, req->identity);
            p->header = 0;
        }
    }
    if (conf->throttle.global_enabled) {
        add_bucket(p, pt, &conf->throttle.global, LG_REASON_GLOBAL, "g", NULL);
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
        p->quota_key = pt->quota_key;
        p->quota_key_len = make_key(pt->quota_key, text, start, NULL);
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

/* Parse one decision's part of the script's answer (e[0] the refused
 * check, then the tokens of each bucket, then the quota count when the
 * plan has a quota) into res; -1 when it is not what the script returns
 * (then the local buckets decide). */
static int parse_reply(const struct plan *p, const redisReply *const *e,
                       struct lg_throttle_result *res)
{
    if (e == NULL)
        return -1;
    for (size_t i = 0; i < 1 + p->n + (p->quota ? 1 : 0); i++)
        if (e[i]->type != REDIS_REPLY_INTEGER)
            return -1;
    long long refused = e[0]->integer;
    long long count = p->quota ? e[p->n + 1]->integer : 0;
    if (refused < 0 || refused > (long long)p->n + 1 ||
        (refused == (long long)p->n + 1 && !p->quota))
        return -1;
    memset(res, 0, sizeof(*res));
    res->allowed = refused == 0;
    struct lg_rl_result results[MAX_BUCKETS];
    for (size_t i = 0; i < p->n; i++) {
        long long t = e[1 + i]->integer;
        /* Millionths of a token, at most the burst's. */
        if (t < 0 || (double)t > ((double)p->checks[i].rate.burst + 1) * 1e6)
            return -1;
        double tokens = (double)t / 1e6;
        struct lg_rl_bucket b = {tokens, 0};
        lg_rl_bucket_result(&b, &p->checks[i].rate, res->allowed, &results[i]);
    }
    if (!res->allowed) {
        size_t idx = (size_t)refused - 1;
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
        quota_figures(p, count, res->allowed, &res->headers);
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

/* The result of one decision of a batch's reply (mine: its part of the
 * reply's array, NULL when the command failed or the reply is not the
 * script's), falling back to the local buckets when Redis could not
 * decide. */
static void finish_call(struct lg_throttle_call *call, enum lg_redis_status status,
                        const redisReply *reply, const redisReply *const *mine)
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
                  reply->elements == b->at[b->n];
    /* A callback may cancel a later call of this batch (its slot empties). */
    for (size_t i = 0; i < b->n; i++) {
        struct lg_throttle_call *call = b->calls[i];
        if (call == NULL)
            continue;
        b->calls[i] = NULL;
        finish_call(call, status, reply,
                    shaped ? (const redisReply *const *)reply->element + b->at[i] : NULL);
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

/* prefix, then mid, then n bytes of text at out (room for all of them and
 * a NUL). Returns the length. */
static size_t put_key(char *out, const char *prefix, size_t lp, const char *mid, size_t lm,
                      const char *text, size_t n)
{
    memcpy(out, prefix, lp);
    memcpy(out + lp, mid, lm);
    memcpy(out + lp + lm, text, n);
    out[lp + lm + n] = '\0';
    return lp + lm + n;
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

/* A distinct key of a script call, with its figures. */
struct batch_key {
    const char *key;
    size_t len;
    bool quota;
    double a, b; /* rate and burst; for a quota counter, limit and ttl_s */
};

enum {
    BATCH_KEYS = BATCH_MAX * (MAX_BUCKETS + 1),
    BATCH_PLAN = BATCH_MAX * (MAX_BUCKETS + 2),
};

/* The index (1-based, as in KEYS) of a key in keys[0..*n), added when
 * new. 0 when the key is there with other figures (a reload between two
 * decisions of one loop turn): the script keeps one set per key, so that
 * decision must go in another call. */
static size_t batch_key(struct batch_key *keys, size_t *n, const char *key, size_t len, bool quota,
                        double a, double b)
{
    for (size_t j = 0; j < *n; j++) {
        const struct batch_key *k = &keys[j];
        if (k->len == len && k->quota == quota && memcmp(k->key, key, len) == 0)
            return k->a == a && (quota || k->b == b) ? j + 1 : 0;
    }
    keys[*n] = (struct batch_key){key, len, quota, a, b};
    return ++*n;
}

/* Add call's decision to the script's plan bytes and keys; -1 when one of
 * its keys is already there with other figures (nothing is kept then). */
static int batch_add(const struct lg_throttle_call *call, struct batch_key *keys, size_t *nkeys,
                     unsigned char *plan, size_t *nplan)
{
    const struct plan *p = &call->plan;
    size_t saved = *nkeys, at = *nplan;
    plan[at++] = (unsigned char)p->n;
    for (size_t i = 0; i < p->n; i++) {
        size_t j = batch_key(keys, nkeys, call->rkeys[i], call->rkey_lens[i], false,
                             p->checks[i].rate.rate, (double)p->checks[i].rate.burst);
        if (j == 0)
            goto conflict;
        plan[at++] = (unsigned char)j;
    }
    plan[at] = 0;
    if (p->quota) {
        /* The counter outlives its period by an hour: a clock a little
         * behind still finds it. */
        size_t j = batch_key(keys, nkeys, call->rkeys[p->n], call->rkey_lens[p->n], true,
                             (double)p->quota_limit, (double)(p->quota_end - p->now_s + 3600));
        if (j == 0)
            goto conflict;
        plan[at] = (unsigned char)j;
    }
    *nplan = at + 1;
    return 0;
conflict:
    *nkeys = saved;
    return -1;
}

/* Send up to BATCH_MAX of the queued calls as one script call. Calls that
 * cannot be sent (no memory) go to the failed list: no callback runs
 * from here. */
static void send_batch(struct lg_throttle_batcher *bt)
{
    pthread_once(&script_once, script_init);
    /* Not calloc: only the slots of the calls sent are used. */
    struct batch *b = malloc(sizeof(*b));
    if (b == NULL) {
        fail_later(bt, queue_pop(bt));
        return;
    }
    b->cmd = NULL;
    b->n = 0;
    b->in_reply = false;
    b->at[0] = 0;
    struct batch_key keys[BATCH_KEYS];
    unsigned char plan[BATCH_PLAN];
    size_t nkeys = 0, nplan = 0;
    while (bt->head != NULL && b->n < BATCH_MAX) {
        if (batch_add(bt->head, keys, &nkeys, plan, &nplan) != 0) {
            if (b->n > 0)
                break; /* it goes first in the next call */
            /* Only a decision whose own keys disagree: cannot happen. */
            fail_later(bt, queue_pop(bt));
            continue;
        }
        struct lg_throttle_call *call = queue_pop(bt);
        const struct plan *p = &call->plan;
        call->batch = b;
        call->slot = b->n;
        b->calls[b->n] = call;
        b->at[b->n + 1] = b->at[b->n] + 1 + p->n + (p->quota ? 1 : 0);
        b->n++;
    }
    if (b->n == 0) {
        free(b);
        return;
    }
    b->live = b->n;
    /* KEYS, then the plan bytes and two numbers per key. Numbers without
     * printf (this runs for every batch): integers by hand, a fractional
     * rate with %.17g. */
    const char *argv[BATCH_KEYS + 1 + 2 * BATCH_KEYS];
    size_t lens[BATCH_KEYS + 1 + 2 * BATCH_KEYS];
    char nums[2 * BATCH_KEYS][32];
    int argc = 0;
    for (size_t j = 0; j < nkeys; j++) {
        argv[argc] = keys[j].key;
        lens[argc++] = keys[j].len;
    }
    argv[argc] = (const char *)plan;
    lens[argc++] = nplan;
    for (size_t j = 0; j < nkeys; j++) {
        argv[argc] = nums[2 * j];
        lens[argc++] = put_num(nums[2 * j], sizeof(nums[0]), keys[j].a);
        argv[argc] = nums[2 * j + 1];
        lens[argc++] = put_num(nums[2 * j + 1], sizeof(nums[0]), keys[j].b);
    }
    b->cmd = lg_redis_eval(bt->redis, &script, (int)nkeys, argc, argv, lens, on_batch_reply, b);
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
    const char *prefix = redis_prefix(req->conf);
    size_t lp = strlen(prefix);
    /* The keys, then the Redis keys, each with its NUL. */
    size_t need = 0;
    for (size_t i = 0; i < p->n; i++)
        need += 2 * (p->checks[i].key_len + 1) + lp + 3;
    if (p->quota)
        need += 2 * (p->quota_key_len + 1) + lp;
    struct lg_throttle_call *call = malloc(sizeof(*call) + need);
    if (call == NULL)
        return NULL;
    call->batcher = NULL;
    call->failed = false;
    call->prev = call->next = NULL;
    call->batch = NULL;
    call->slot = 0;
    call->local = local;
    call->plan = *p;
    call->cb = cb;
    call->arg = arg;
    /* The plan's keys point at texts of the caller's: copy them here. */
    char *t = call->text;
    for (size_t i = 0; i < p->n; i++) {
        size_t len = p->checks[i].key_len;
        call->plan.checks[i].key = t;
        t += put_key(t, "", 0, "", 0, p->checks[i].key, len) + 1;
        call->rkeys[i] = t;
        call->rkey_lens[i] = put_key(t, prefix, lp, "rl:", 3, p->checks[i].key, len);
        t += call->rkey_lens[i] + 1;
    }
    if (p->quota) {
        call->plan.quota_key = t;
        t += put_key(t, "", 0, "", 0, p->quota_key, p->quota_key_len) + 1;
        call->rkeys[p->n] = t;
        call->rkey_lens[p->n] = put_key(t, prefix, lp, "", 0, p->quota_key, p->quota_key_len);
    }
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
    struct plan_text pt;
    make_plan(req, &p, &pt);
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
