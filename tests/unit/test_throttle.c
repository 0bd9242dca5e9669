/* test_throttle.c - which buckets a request must pass, in API Gateway's order, on the local store.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/conf.h"
#include "lambdagate/ratelimit.h"
#include "lambdagate/throttle.h"

#define T0 1700000000 /* a Tuesday, 22:13:20 UTC */

static const char *const CONFIG =
    "{\n"
    "  \"listen\": [ { \"address\": \"127.0.0.1:8080\" } ],\n"
    "  \"throttle\": { \"default\": { \"rate\": 1, \"burst\": 3 }, \"global\": %s },\n"
    "  \"routes\": [\n"
    "    { \"method\": \"GET\", \"path\": \"/default\", \"function\": \"f\" },\n"
    "    { \"method\": \"GET\", \"path\": \"/own\", \"function\": \"f\",\n"
    "      \"throttle\": { \"rate\": 1, \"burst\": 5 } },\n"
    "    { \"method\": \"GET\", \"path\": \"/off\", \"function\": \"f\", \"throttle\": null }\n"
    "  ]\n"
    "}\n";

static struct lg_conf *conf_with_global(const char *global)
{
    char text[2048];
    snprintf(text, sizeof(text), CONFIG, global);
    struct lg_conf_errors e;
    struct lg_conf *c = lg_conf_load_text("/tmp/t.json", text, strlen(text), &e);
    if (c == NULL)
        lg_conf_errors_print(&e, "t.json", stderr);
    ck_assert_ptr_nonnull(c);
    lg_conf_errors_free(&e);
    return c;
}

static const struct lg_conf_route *route(const struct lg_conf *c, const char *path)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i].path, path) == 0)
            return &c->routes[i];
    ck_abort_msg("no route %s", path);
    return NULL;
}

/* One decision on the local store. */
static struct lg_throttle_result decide(struct lg_rl_local *local, const struct lg_conf *c,
                                        const char *path, const char *identity,
                                        const struct lg_apikey *key)
{
    struct lg_throttle_request req = {c, route(c, path), identity, key, T0};
    struct lg_throttle_result res;
    struct lg_throttle_call *call = NULL;
    ck_assert_int_eq(lg_throttle_decide(local, NULL, NULL, &req, &res, NULL, NULL, &call), 0);
    ck_assert_ptr_null(call);
    ck_assert(!res.fell_back);
    return res;
}

START_TEST(test_route_default_and_off)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    /* No throttle of its own: throttle.default (burst 3). */
    struct lg_throttle_result r = decide(local, c, "/default", "alice", NULL);
    ck_assert(r.allowed);
    ck_assert(r.has_headers);
    ck_assert_int_eq(r.headers.limit, 3);
    ck_assert_int_eq(r.headers.remaining, 2);
    /* Its own throttle overrides the default. */
    r = decide(local, c, "/own", "alice", NULL);
    ck_assert_int_eq(r.headers.limit, 5);
    ck_assert_int_eq(r.headers.remaining, 4);
    /* null: no bucket at all, however often. */
    for (int i = 0; i < 10; i++) {
        r = decide(local, c, "/off", "alice", NULL);
        ck_assert(r.allowed);
        ck_assert(!r.has_headers);
    }
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_identities_and_routes_are_separate)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    for (int i = 0; i < 3; i++)
        ck_assert(decide(local, c, "/default", "alice", NULL).allowed);
    struct lg_throttle_result r = decide(local, c, "/default", "alice", NULL);
    ck_assert(!r.allowed);
    ck_assert_int_eq(r.reason, LG_REASON_IDENTITY);
    ck_assert_int_eq(r.retry_after_s, 1);
    ck_assert_int_eq(r.headers.remaining, 0);
    /* Another caller, and the same caller on another route, have their
     * own buckets. */
    ck_assert(decide(local, c, "/default", "bob", NULL).allowed);
    ck_assert(decide(local, c, "/own", "alice", NULL).allowed);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_api_key_plan_first)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    struct lg_apikey key = {.id = "app"};
    key.plan.throttle_presence = LG_CONF_SET;
    key.plan.throttle.rate = 1;
    key.plan.throttle.burst = 2;
    /* The plan's bucket wins over the route's, and is shared by routes. */
    struct lg_throttle_result r = decide(local, c, "/own", "app", &key);
    ck_assert_int_eq(r.headers.limit, 2);
    r = decide(local, c, "/default", "app", &key);
    ck_assert(r.allowed);
    ck_assert_int_eq(r.headers.remaining, 0);
    r = decide(local, c, "/off", "app", &key);
    ck_assert(!r.allowed);
    ck_assert_int_eq(r.reason, LG_REASON_API_KEY);
    /* A plan with "throttle": null has no per-caller bucket at all. */
    struct lg_apikey open = {.id = "open"};
    open.plan.throttle_presence = LG_CONF_NULL;
    for (int i = 0; i < 10; i++)
        ck_assert(decide(local, c, "/default", "open", &open).allowed);
    /* No throttle in the plan: the route's (or the default) applies. */
    struct lg_apikey plain = {.id = "plain"};
    r = decide(local, c, "/own", "plain", &plain);
    ck_assert_int_eq(r.headers.limit, 5);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_global_refusal_takes_nothing)
{
    struct lg_conf *c = conf_with_global("{ \"rate\": 0.001, \"burst\": 2 }");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    ck_assert(decide(local, c, "/off", "x", NULL).allowed); /* global only */
    ck_assert(decide(local, c, "/off", "y", NULL).allowed);
    struct lg_throttle_result r = decide(local, c, "/default", "alice", NULL);
    ck_assert(!r.allowed);
    ck_assert_int_eq(r.reason, LG_REASON_GLOBAL);
    ck_assert_int_eq(r.retry_after_s, 1000);
    /* alice's own bucket was not charged for the refused request. */
    lg_conf_unref(c);
    c = conf_with_global("null");
    r = decide(local, c, "/default", "alice", NULL);
    ck_assert(r.allowed);
    ck_assert_int_eq(r.headers.remaining, 2);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_global_headers_without_caller_bucket)
{
    struct lg_conf *c = conf_with_global("{ \"rate\": 1, \"burst\": 7 }");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    struct lg_throttle_result r = decide(local, c, "/off", "x", NULL);
    ck_assert(r.has_headers);
    ck_assert_int_eq(r.headers.limit, 7);
    /* With a caller bucket, its figures are the ones shown. */
    r = decide(local, c, "/own", "x", NULL);
    ck_assert_int_eq(r.headers.limit, 5);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_quota)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    struct lg_apikey key = {.id = "q"};
    key.plan.throttle_presence = LG_CONF_NULL;
    key.plan.quota_set = true;
    key.plan.quota_limit = 2;
    key.plan.quota_period = LG_QUOTA_DAY;
    ck_assert(decide(local, c, "/off", "q", &key).allowed);
    struct lg_throttle_result r = decide(local, c, "/off", "q", &key);
    ck_assert(r.allowed);
    ck_assert(r.has_headers);
    ck_assert_int_eq(r.headers.limit, 2);
    ck_assert_int_eq(r.headers.remaining, 0);
    r = decide(local, c, "/off", "q", &key);
    ck_assert(!r.allowed);
    ck_assert_int_eq(r.reason, LG_REASON_QUOTA);
    /* Until the next UTC midnight: 1700006400 - T0. */
    ck_assert_int_eq(r.retry_after_s, 1700006400 - T0);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_quota_refunded_when_a_bucket_refuses)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    struct lg_apikey key = {.id = "qb"};
    key.plan.throttle_presence = LG_CONF_SET;
    key.plan.throttle.rate = 0.001;
    key.plan.throttle.burst = 1;
    key.plan.quota_set = true;
    key.plan.quota_limit = 2;
    key.plan.quota_period = LG_QUOTA_MONTH;
    ck_assert(decide(local, c, "/off", "qb", &key).allowed);
    /* Refused by the bucket: the quota count is given back, so after the
     * bucket is swapped for an open one there is still one left. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(decide(local, c, "/off", "qb", &key).reason, LG_REASON_API_KEY);
    key.plan.throttle_presence = LG_CONF_NULL;
    ck_assert(decide(local, c, "/off", "qb", &key).allowed);
    ck_assert_int_eq(decide(local, c, "/off", "qb", &key).reason, LG_REASON_QUOTA);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_long_identity)
{
    struct lg_conf *c = conf_with_global("null");
    struct lg_rl_local *local = lg_rl_local_new(1000);
    /* A claim longer than a bucket name: hashed, still one bucket each. */
    char a[2000], b[2000];
    memset(a, 'a', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[1500] = 'b';
    for (int i = 0; i < 3; i++)
        ck_assert(decide(local, c, "/default", a, NULL).allowed);
    ck_assert(!decide(local, c, "/default", a, NULL).allowed);
    ck_assert(decide(local, c, "/default", b, NULL).allowed);
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

START_TEST(test_per_ip)
{
    struct lg_conf_errors e;
    const char *text = "{ \"listen\": [ { \"address\": \"127.0.0.1:8080\" } ],\n"
                       "  \"limits\": { \"per_ip\": { \"rate\": 1, \"burst\": 2 } },\n"
                       "  \"routes\": [ { \"method\": \"GET\", \"path\": \"/\", \"function\": "
                       "\"f\" } ] }\n";
    struct lg_conf *c = lg_conf_load_text("/tmp/t.json", text, strlen(text), &e);
    ck_assert_ptr_nonnull(c);
    struct lg_rl_local *local = lg_rl_local_new(1000);
    int64_t retry = 0;
    ck_assert(lg_throttle_per_ip(local, c, "192.0.2.1", &retry));
    ck_assert(lg_throttle_per_ip(local, c, "192.0.2.1", &retry));
    ck_assert(!lg_throttle_per_ip(local, c, "192.0.2.1", &retry));
    ck_assert_int_eq(retry, 1);
    ck_assert(lg_throttle_per_ip(local, c, "2001:db8::1", &retry));
    lg_rl_local_free(local);
    lg_conf_unref(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("throttle");
    TCase *tc = tcase_create("decisions");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_route_default_and_off);
    tcase_add_test(tc, test_identities_and_routes_are_separate);
    tcase_add_test(tc, test_api_key_plan_first);
    tcase_add_test(tc, test_global_refusal_takes_nothing);
    tcase_add_test(tc, test_global_headers_without_caller_bucket);
    tcase_add_test(tc, test_quota);
    tcase_add_test(tc, test_quota_refunded_when_a_bucket_refuses);
    tcase_add_test(tc, test_long_identity);
    tcase_add_test(tc, test_per_ip);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
