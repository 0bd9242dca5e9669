/* test_router.c - route matching: precedence, 404/405, decoding, validation, limits. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lambdagate/router.h"

/* Add a route that must be accepted; the route value is a tag string so
 * assertions can name which route matched. */
static void add_ok(struct lg_router *r, const char *method, const char *path, const char *tag)
{
    char err[LG_ERR_LEN] = "";
    int rc = lg_router_add(r, method, path, (void *)tag, err, sizeof(err));
    ck_assert_msg(rc == 0, "add %s %s failed: %s", method, path, err);
}

static enum lg_router_result match(const struct lg_router *r, const char *method, const char *path,
                                   struct lg_router_match *m)
{
    return lg_router_match(r, method, path, strlen(path), m);
}

/* Match that must succeed with the route tagged tag; m is left filled for
 * parameter checks (the caller clears it). */
static void expect_found(const struct lg_router *r, const char *method, const char *path,
                         const char *tag, struct lg_router_match *m)
{
    enum lg_router_result res = match(r, method, path, m);
    ck_assert_msg(res == LG_ROUTER_FOUND, "%s %s: result %d, wanted FOUND", method ? method : "*",
                  path, (int)res);
    ck_assert_ptr_nonnull(m->route);
    ck_assert_str_eq((const char *)m->route, tag);
}

/* Match that must give res (not FOUND), with no route and no parameters. */
static void expect_result(const struct lg_router *r, const char *method, const char *path,
                          enum lg_router_result want)
{
    struct lg_router_match m;
    enum lg_router_result res = match(r, method, path, &m);
    ck_assert_msg(res == want, "%s %s: result %d, wanted %d", method ? method : "*", path, (int)res,
                  (int)want);
    ck_assert_ptr_null(m.route);
    ck_assert_uint_eq(m.nparams, 0);
    lg_router_match_clear(&m);
}

static void expect_param(const struct lg_router_match *m, size_t i, const char *name,
                         const char *value)
{
    ck_assert_uint_gt(m->nparams, i);
    ck_assert_str_eq(m->params[i].name, name);
    ck_assert_str_eq(m->params[i].value, value);
    ck_assert_uint_eq(m->params[i].value_len, strlen(value));
}

static void expect_405(const struct lg_router *r, const char *method, const char *path,
                       const char *allow)
{
    struct lg_router_match m;
    ck_assert_int_eq(match(r, method, path, &m), LG_ROUTER_METHOD_NOT_ALLOWED);
    ck_assert_ptr_null(m.route);
    ck_assert_str_eq(m.allow, allow);
    lg_router_match_clear(&m);
}

/* The error lg_router_add() gives for a template it must refuse. */
static void expect_add_err(const char *method, const char *path, const char *want)
{
    struct lg_router *r = lg_router_new();
    ck_assert_ptr_nonnull(r);
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_router_add(r, method, path, (void *)"x", err, sizeof(err)), -1);
    ck_assert_str_eq(err, want);
    lg_router_free(r);
}

START_TEST(test_root)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/", "root");
    struct lg_router_match m;
    expect_found(r, "GET", "/", "root", &m);
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_str_eq(m.template_path, "/");
    ck_assert_str_eq(m.method, "GET");
    lg_router_match_clear(&m);
    expect_result(r, "GET", "//", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/a", LG_ROUTER_NOT_FOUND);
    expect_405(r, "POST", "/", "GET, HEAD");
    lg_router_free(r);
}
END_TEST

START_TEST(test_precedence_literal_param_greedy)
{
    struct lg_router *r = lg_router_new();
    /* Added least specific first, so insertion order cannot explain a pass. */
    add_ok(r, "GET", "/{any+}", "any");
    add_ok(r, "GET", "/users/{rest+}", "users-rest");
    add_ok(r, "GET", "/users/{id}", "users-id");
    add_ok(r, "GET", "/users/me", "users-me");
    struct lg_router_match m;

    expect_found(r, "GET", "/users/me", "users-me", &m);
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_str_eq(m.template_path, "/users/me");
    lg_router_match_clear(&m);

    expect_found(r, "GET", "/users/42", "users-id", &m);
    ck_assert_uint_eq(m.nparams, 1);
    expect_param(&m, 0, "id", "42");
    ck_assert_str_eq(m.template_path, "/users/{id}");
    lg_router_match_clear(&m);

    expect_found(r, "GET", "/users/42/posts", "users-rest", &m);
    ck_assert_uint_eq(m.nparams, 1);
    expect_param(&m, 0, "rest", "42/posts");
    lg_router_match_clear(&m);

    expect_found(r, "GET", "/other/x/y", "any", &m);
    expect_param(&m, 0, "any", "other/x/y");
    lg_router_match_clear(&m);

    /* "users" alone: only the greedy root template takes one segment. */
    expect_found(r, "GET", "/users", "any", &m);
    expect_param(&m, 0, "any", "users");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_precedence_left_to_right)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/{x}/b/c", "param-first");
    add_ok(r, "GET", "/a/{y}/{z}", "literal-first");
    struct lg_router_match m;
    /* The first segment decides: literal "a" beats "{x}" even though the
     * other template has more literals in total. */
    expect_found(r, "GET", "/a/b/c", "literal-first", &m);
    expect_param(&m, 0, "y", "b");
    expect_param(&m, 1, "z", "c");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/q/b/c", "param-first", &m);
    expect_param(&m, 0, "x", "q");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_method_over_any)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "ANY", "/items/{id}", "items-any");
    add_ok(r, "GET", "/items/{id}", "items-get");
    struct lg_router_match m;
    expect_found(r, "GET", "/items/7", "items-get", &m);
    ck_assert_str_eq(m.method, "GET");
    lg_router_match_clear(&m);
    expect_found(r, "DELETE", "/items/7", "items-any", &m);
    ck_assert_str_eq(m.method, "ANY");
    expect_param(&m, 0, "id", "7");
    lg_router_match_clear(&m);
    /* HEAD: the template has an ANY route, which wins over GET-for-HEAD. */
    expect_found(r, "HEAD", "/items/7", "items-any", &m);
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_backtracking)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/users/me", "me-get");
    add_ok(r, "POST", "/users/{id}", "id-post");
    add_ok(r, "PUT", "/users/{rest+}", "rest-put");
    add_ok(r, "GET", "/a/b/c", "abc");
    add_ok(r, "GET", "/a/{x}/d", "axd");
    struct lg_router_match m;

    expect_found(r, "POST", "/users/me", "id-post", &m);
    expect_param(&m, 0, "id", "me");
    lg_router_match_clear(&m);
    /* Two levels down: neither the literal nor the param template has PUT. */
    expect_found(r, "PUT", "/users/me", "rest-put", &m);
    expect_param(&m, 0, "rest", "me");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/users/me", "me-get", &m);
    lg_router_match_clear(&m);
    /* The literal branch a/b dead-ends at "d": back up and take "{x}". */
    expect_found(r, "GET", "/a/b/d", "axd", &m);
    expect_param(&m, 0, "x", "b");
    lg_router_match_clear(&m);
    expect_result(r, "GET", "/a/b/e", LG_ROUTER_NOT_FOUND);
    lg_router_free(r);
}
END_TEST

START_TEST(test_head_via_get)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/h", "h-get");
    add_ok(r, "GET", "/both", "both-get");
    add_ok(r, "HEAD", "/both", "both-head");
    add_ok(r, "POST", "/p", "p-post");
    struct lg_router_match m;
    expect_found(r, "HEAD", "/h", "h-get", &m);
    ck_assert_str_eq(m.method, "GET");
    lg_router_match_clear(&m);
    expect_found(r, "HEAD", "/both", "both-head", &m);
    ck_assert_str_eq(m.method, "HEAD");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/both", "both-get", &m);
    lg_router_match_clear(&m);
    /* GET does not serve other methods, and POST does not serve HEAD. */
    expect_405(r, "OPTIONS", "/h", "GET, HEAD");
    expect_405(r, "HEAD", "/p", "POST");
    lg_router_free(r);
}
END_TEST

START_TEST(test_head_from_less_specific_template)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "POST", "/x/me", "me-post");
    add_ok(r, "GET", "/x/{id}", "id-get");
    struct lg_router_match m;
    /* The literal template has neither HEAD, ANY nor GET: fall through to
     * the param template, whose GET serves HEAD. */
    expect_found(r, "HEAD", "/x/me", "id-get", &m);
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_404_vs_405)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "POST", "/r", "r-post");
    add_ok(r, "DELETE", "/r", "r-delete");
    add_ok(r, "GET", "/r", "r-get");
    add_ok(r, "PATCH", "/u/me", "me-patch");
    add_ok(r, "GET", "/u/{id}", "id-get");
    add_ok(r, "OPTIONS", "/{p+}", "p-options");
    add_ok(r, "HEAD", "/only-head", "oh");
    add_ok(r, "PUT", "/v/{id}", "v-put");

    expect_405(r, "PUT", "/r", "DELETE, GET, HEAD, OPTIONS, POST");
    /* The union over all three templates matching /u/me, HEAD once. */
    expect_405(r, "PUT", "/u/me", "GET, HEAD, OPTIONS, PATCH");
    /* /u/42 does not match /u/me: PATCH is not in the list. */
    expect_405(r, "PUT", "/u/42", "GET, HEAD, OPTIONS");
    expect_405(r, "GET", "/only-head", "HEAD, OPTIONS");
    /* Method names are case-sensitive (RFC 9110). */
    expect_405(r, "get", "/r", "DELETE, GET, HEAD, OPTIONS, POST");

    struct lg_router *r2 = lg_router_new();
    add_ok(r2, "PUT", "/v/{id}", "v-put");
    add_ok(r2, "GET", "/v/{id}/x", "vx-get");
    expect_405(r2, "GET", "/v/1", "PUT");
    expect_result(r2, "GET", "/v", LG_ROUTER_NOT_FOUND);
    expect_result(r2, "GET", "/w/1", LG_ROUTER_NOT_FOUND);
    expect_result(r2, "GET", "/v/1/y", LG_ROUTER_NOT_FOUND);
    lg_router_free(r2);
    lg_router_free(r);
}
END_TEST

START_TEST(test_method_null)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "POST", "/m/{id}", "id-post");
    add_ok(r, "GET", "/m/{id}", "id-get");
    add_ok(r, "DELETE", "/m/me", "me-delete");
    add_ok(r, "PUT", "/m/me", "me-put");
    struct lg_router_match m;
    expect_found(r, NULL, "/m/me", "me-delete", &m);
    ck_assert_str_eq(m.method, "DELETE");
    lg_router_match_clear(&m);
    expect_found(r, NULL, "/m/7", "id-post", &m);
    expect_param(&m, 0, "id", "7");
    lg_router_match_clear(&m);
    expect_result(r, NULL, "/n", LG_ROUTER_NOT_FOUND);
    lg_router_free(r);
}
END_TEST

START_TEST(test_decode_once)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/v/{x}", "v");
    add_ok(r, "GET", "/g/{p+}", "g");
    add_ok(r, "GET", "/abc", "abc");
    add_ok(r, "GET", "/a/b", "a-b");
    add_ok(r, "GET", "/caf\xc3\xa9", "cafe");
    add_ok(r, "GET", "/x+y", "plus");
    struct lg_router_match m;

    expect_found(r, "GET", "/v/%2541", "v", &m);
    expect_param(&m, 0, "x", "%41");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/v/a%2Fb", "v", &m);
    expect_param(&m, 0, "x", "a/b");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/v/a+b", "v", &m);
    expect_param(&m, 0, "x", "a+b");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/v/a%20b%3f", "v", &m);
    expect_param(&m, 0, "x", "a b?");
    lg_router_match_clear(&m);
    /* A greedy value: each segment decoded once, joined with '/'. */
    expect_found(r, "GET", "/g/a%2Fb/c%25/d", "g", &m);
    expect_param(&m, 0, "p", "a/b/c%/d");
    lg_router_match_clear(&m);

    /* Literals compare with the decoded segment. */
    expect_found(r, "GET", "/%61b%63", "abc", &m);
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/caf%C3%A9", "cafe", &m);
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/caf%c3%a9", "cafe", &m);
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/x+y", "plus", &m);
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/x%2By", "plus", &m);
    lg_router_match_clear(&m);
    expect_result(r, "GET", "/x%20y", LG_ROUTER_NOT_FOUND);
    /* "%2F" never splits a segment. */
    expect_result(r, "GET", "/a%2Fb", LG_ROUTER_NOT_FOUND);
    /* Decoding twice would turn %2561 into "a". */
    expect_result(r, "GET", "/%2561bc", LG_ROUTER_NOT_FOUND);
    /* Case matters in literals. */
    expect_result(r, "GET", "/ABC", LG_ROUTER_NOT_FOUND);
    lg_router_free(r);
}
END_TEST

START_TEST(test_bad_path)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/{p+}", "p");
    static const char *const bad[] = {
        "/a/%",  "/a/%4", "/a/%zz",  "/a/%4g", "/a/%00/b", "/%2/x",     "/a/.",
        "/a/..", "/./a",  "/../a",   "/a/%2e", "/a/%2E",   "/%2e%2E/x", "/.%2e",
        "/%2e.", "/a/./", "/a/../b", "a",      "*",        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_result(r, "GET", bad[i], LG_ROUTER_BAD_PATH);
    /* A raw NUL inside the given length. */
    struct lg_router_match m;
    ck_assert_int_eq(lg_router_match(r, "GET", "/a\0b", 4, &m), LG_ROUTER_BAD_PATH);
    ck_assert_int_eq(lg_router_match(r, NULL, "/a/..", 5, &m), LG_ROUTER_BAD_PATH);
    /* Only the given length counts: "/a" of "/a/.." is fine. */
    ck_assert_int_eq(lg_router_match(r, "GET", "/a/..", 2, &m), LG_ROUTER_FOUND);
    expect_param(&m, 0, "p", "a");
    lg_router_match_clear(&m);
    /* Not dot segments: three dots, dots with text, an escaped dot with text. */
    expect_found(r, "GET", "/.../a.b/.x/%2e%2e%2e", "p", &m);
    expect_param(&m, 0, "p", ".../a.b/.x/...");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_trailing_slash_and_empty_segments)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/a", "a");
    add_ok(r, "GET", "/a/{x}", "ax");
    add_ok(r, "GET", "/g/{p+}", "g");
    add_ok(r, "GET", "/{x}/z", "xz");
    struct lg_router_match m;
    expect_result(r, "GET", "/a/", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/a//", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/a/b/", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "//a", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "//z", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/g/", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/g/x/", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/g/x//y", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/g//x", LG_ROUTER_NOT_FOUND);
    expect_found(r, "GET", "/a/b", "ax", &m);
    expect_param(&m, 0, "x", "b");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/g/x/y", "g", &m);
    expect_param(&m, 0, "p", "x/y");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_greedy_values)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "ANY", "/proxy/{path+}", "proxy");
    add_ok(r, "GET", "/t/{a}/x/{rest+}", "t");
    struct lg_router_match m;
    expect_found(r, "POST", "/proxy/a", "proxy", &m);
    ck_assert_uint_eq(m.nparams, 1);
    expect_param(&m, 0, "path", "a");
    lg_router_match_clear(&m);
    expect_found(r, "GET", "/proxy/a/b/c.txt", "proxy", &m);
    expect_param(&m, 0, "path", "a/b/c.txt");
    lg_router_match_clear(&m);
    expect_result(r, "GET", "/proxy", LG_ROUTER_NOT_FOUND);
    expect_found(r, "GET", "/t/1/x/2/3", "t", &m);
    ck_assert_uint_eq(m.nparams, 2);
    expect_param(&m, 0, "a", "1");
    expect_param(&m, 1, "rest", "2/3");
    ck_assert_str_eq(m.template_path, "/t/{a}/x/{rest+}");
    lg_router_match_clear(&m);
    expect_result(r, "GET", "/t/1/x", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/t/1/y/2", LG_ROUTER_NOT_FOUND);
    lg_router_free(r);
}
END_TEST

START_TEST(test_param_names_per_route)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/u/{a}", "get");
    add_ok(r, "POST", "/u/{b}", "post");
    struct lg_router_match m;
    expect_found(r, "GET", "/u/1", "get", &m);
    expect_param(&m, 0, "a", "1");
    ck_assert_str_eq(m.template_path, "/u/{a}");
    lg_router_match_clear(&m);
    expect_found(r, "POST", "/u/1", "post", &m);
    expect_param(&m, 0, "b", "1");
    ck_assert_str_eq(m.template_path, "/u/{b}");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_duplicates)
{
    struct lg_router *r = lg_router_new();
    char err[LG_ERR_LEN];
    add_ok(r, "GET", "/u/{a}", "1");
    add_ok(r, "POST", "/u/{a}", "2");
    add_ok(r, "ANY", "/u/{a}", "3");
    add_ok(r, "GET", "/u/{a+}", "4"); /* greedy is another shape */
    add_ok(r, "GET", "/u/me", "5");
    add_ok(r, "GET", "/", "6");

    ck_assert_int_eq(lg_router_add(r, "GET", "/u/{b}", (void *)"x", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "route \"GET /u/{b}\" duplicates route \"GET /u/{a}\"");
    ck_assert_int_eq(lg_router_add(r, "ANY", "/u/{id}", (void *)"x", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "route \"ANY /u/{id}\" duplicates route \"ANY /u/{a}\"");
    ck_assert_int_eq(lg_router_add(r, "GET", "/u/{rest+}", (void *)"x", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "route \"GET /u/{rest+}\" duplicates route \"GET /u/{a+}\"");
    ck_assert_int_eq(lg_router_add(r, "GET", "/", (void *)"x", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "route \"GET /\" duplicates route \"GET /\"");

    /* The refused routes changed nothing. */
    struct lg_router_match m;
    expect_found(r, "GET", "/u/1", "1", &m);
    expect_param(&m, 0, "a", "1");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

START_TEST(test_template_validation)
{
    static const struct {
        const char *path;
        const char *err; /* NULL = valid */
    } cases[] = {
        {"/", NULL},
        {"/a/{b}/c/{d+}", NULL},
        {"/{A-z_0}", NULL},
        {"/a+b/~x/caf\xc3\xa9", NULL},
        {"", "path template is empty"},
        {"users", "path template \"users\": must start with '/'"},
        {"/a//b", "path template \"/a//b\": segment 2 is empty (\"//\")"},
        {"/a/", "path template \"/a/\": segment 2 is empty (trailing '/')"},
        {"//", "path template \"//\": segment 1 is empty (\"//\")"},
        {"/{p+}/x", "path template \"/{p+}/x\": greedy parameter \"{p+}\" must be last"},
        {"/{id}/{id}", "path template \"/{id}/{id}\": parameter name \"id\" is used twice"},
        {"/{a}/{a+}", "path template \"/{a}/{a+}\": parameter name \"a\" is used twice"},
        {"/{}", "path template \"/{}\": segment 1 has an empty parameter name"},
        {"/{+}", "path template \"/{+}\": segment 1 has an empty parameter name"},
        {"/{a b}",
         "path template \"/{a b}\": parameter name \"a b\" may hold only A-Z a-z 0-9 _ -"},
        {"/{a.b}",
         "path template \"/{a.b}\": parameter name \"a.b\" may hold only A-Z a-z 0-9 _ -"},
        {"/{id}.json", "path template \"/{id}.json\": segment 1 \"{id}.json\" mixes a parameter "
                       "and text"},
        {"/{", "path template \"/{\": segment 1 \"{\" mixes a parameter and text"},
        {"/x{id}", "path template \"/x{id}\": segment 1 \"x{id}\" may not hold '{'"},
        {"/a}", "path template \"/a}\": segment 1 \"a}\" may not hold '}'"},
        {"/a/b%20c", "path template \"/a/b%20c\": segment 2 \"b%20c\" may not hold '%'"},
        {"/a?b", "path template \"/a?b\": segment 1 \"a?b\" may not hold '?'"},
        {"/a#b", "path template \"/a#b\": segment 1 \"a#b\" may not hold '#'"},
        {"/..", "path template \"/..\": segment 1 is a dot segment \"..\""},
        {"/a/./b", "path template \"/a/./b\": segment 2 is a dot segment \".\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[LG_ERR_LEN] = "";
        int rc = lg_router_check_template(cases[i].path, err, sizeof(err));
        if (cases[i].err == NULL) {
            ck_assert_msg(rc == 0, "%s refused: %s", cases[i].path, err);
        } else {
            ck_assert_msg(rc == -1, "%s accepted", cases[i].path);
            ck_assert_str_eq(err, cases[i].err);
            /* lg_router_add gives the same message. */
            expect_add_err("GET", cases[i].path, cases[i].err);
        }
    }
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_router_check_template(NULL, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "path template is empty");
    /* A tiny err buffer is filled without overflow. */
    char small[8];
    ck_assert_int_eq(lg_router_check_template("/a//b", small, sizeof(small)), -1);
    ck_assert_str_eq(small, "path te");
}
END_TEST

START_TEST(test_long_template_error_keeps_reason)
{
    char tpl[400];
    memset(tpl, 'x', sizeof(tpl));
    tpl[0] = '/';
    tpl[sizeof(tpl) - 3] = '/';
    tpl[sizeof(tpl) - 2] = '/';
    tpl[sizeof(tpl) - 1] = '\0';
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_router_check_template(tpl, err, sizeof(err)), -1);
    char want[LG_ERR_LEN];
    snprintf(want, sizeof(want), "path template \"%.96s...\": segment 2 is empty (\"//\")", tpl);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_method_and_route_validation)
{
    expect_add_err("get", "/a", "method \"get\" is not an uppercase HTTP method or ANY");
    expect_add_err("", "/a", "method \"\" is not an uppercase HTTP method or ANY");
    expect_add_err("G T", "/a", "method \"G T\" is not an uppercase HTTP method or ANY");
    expect_add_err(NULL, "/a", "method \"\" is not an uppercase HTTP method or ANY");
    struct lg_router *r = lg_router_new();
    char err[LG_ERR_LEN] = "";
    ck_assert_int_eq(lg_router_add(r, "GET", "/a", NULL, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "path template \"/a\": route value is NULL");
    add_ok(r, "PROPFIND", "/a", "propfind");
    add_ok(r, "VERSION-CONTROL", "/a", "vc");
    expect_405(r, "GET", "/a", "PROPFIND, VERSION-CONTROL");
    lg_router_free(r);
}
END_TEST

/* "/s0/s1/.../s{n-1}" into buf. */
static void deep_path(char *buf, size_t size, int n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, size - len, "/s%d", i);
    ck_assert_uint_lt(len, size);
}

START_TEST(test_limits_segments)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/{p+}", "p");
    char path[2048];
    struct lg_router_match m;

    deep_path(path, sizeof(path), LG_ROUTER_MAX_SEGMENTS);
    expect_found(r, "GET", path, "p", &m);
    ck_assert_str_eq(m.params[0].value, path + 1);
    lg_router_match_clear(&m);

    deep_path(path, sizeof(path), LG_ROUTER_MAX_SEGMENTS + 1);
    expect_result(r, "GET", path, LG_ROUTER_NOT_FOUND);
    deep_path(path, sizeof(path), 200);
    expect_result(r, "GET", path, LG_ROUTER_NOT_FOUND);
    /* Even past the bound, a dot segment is still a bad path. */
    strcat(path, "/..");
    expect_result(r, "GET", path, LG_ROUTER_BAD_PATH);

    /* Templates: 128 segments accepted, 129 refused. */
    char err[LG_ERR_LEN] = "";
    deep_path(path, sizeof(path), LG_ROUTER_MAX_SEGMENTS);
    add_ok(r, "GET", path, "deep");
    expect_found(r, "GET", path, "deep", &m);
    lg_router_match_clear(&m);
    deep_path(path, sizeof(path), LG_ROUTER_MAX_SEGMENTS + 1);
    ck_assert_int_eq(lg_router_check_template(path, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "\": more than 128 segments"));
    lg_router_free(r);
}
END_TEST

/* "/{p0}/{p1}/.../{p(n-1)}" into buf. */
static void param_template(char *buf, size_t size, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, size - len, "/{p%d}", i);
    ck_assert_uint_lt(len, size);
}

START_TEST(test_limits_params)
{
    char tpl[512], err[LG_ERR_LEN] = "";
    param_template(tpl, sizeof(tpl), LG_ROUTER_MAX_PARAMS + 1);
    ck_assert_int_eq(lg_router_check_template(tpl, err, sizeof(err)), -1);
    char want[LG_ERR_LEN];
    ck_assert_uint_le(strlen(tpl), 96); /* quoted whole */
    snprintf(want, sizeof(want), "path template \"%s\": more than 16 parameters", tpl);
    ck_assert_str_eq(err, want);

    struct lg_router *r = lg_router_new();
    param_template(tpl, sizeof(tpl), LG_ROUTER_MAX_PARAMS);
    add_ok(r, "GET", tpl, "sixteen");
    ck_assert_int_eq(lg_router_add(r, "GET",
                                   "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/"
                                   "{m}/{n}/{o}/{p}/{q+}",
                                   (void *)"x", err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "\": more than 16 parameters"));

    char path[256];
    size_t len = 0;
    for (int i = 0; i < LG_ROUTER_MAX_PARAMS; i++)
        len += (size_t)snprintf(path + len, sizeof(path) - len, "/v%d", i);
    struct lg_router_match m;
    expect_found(r, "GET", path, "sixteen", &m);
    ck_assert_uint_eq(m.nparams, LG_ROUTER_MAX_PARAMS);
    expect_param(&m, 0, "p0", "v0");
    expect_param(&m, 15, "p15", "v15");
    lg_router_match_clear(&m);
    lg_router_free(r);
}
END_TEST

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(test_many_routes)
{
    enum {
        NROUTES = 1000
    };
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    static char tags[NROUTES][32];
    struct lg_router *r = lg_router_new();
    char tpl[128];
    /* 250 services x 4 methods; every tenth service also has a literal
     * "/items/special" GET route and a greedy fallback. */
    for (int i = 0; i < NROUTES; i++) {
        int svc = i / 4;
        snprintf(tags[i], sizeof(tags[i]), "%s-%d", methods[i % 4], svc);
        snprintf(tpl, sizeof(tpl), "/svc%d/items/{id}", svc);
        add_ok(r, methods[i % 4], tpl, tags[i]);
    }
    for (int svc = 0; svc < NROUTES / 4; svc += 10) {
        snprintf(tpl, sizeof(tpl), "/svc%d/items/special", svc);
        add_ok(r, "GET", tpl, "special");
        snprintf(tpl, sizeof(tpl), "/svc%d/{rest+}", svc);
        add_ok(r, "ANY", tpl, "fallback");
    }

    char path[128];
    struct lg_router_match m;
    for (int i = 0; i < NROUTES; i++) {
        int svc = i / 4;
        snprintf(path, sizeof(path), "/svc%d/items/x%d", svc, i);
        expect_found(r, methods[i % 4], path, tags[i], &m);
        char want[32];
        snprintf(want, sizeof(want), "x%d", i);
        expect_param(&m, 0, "id", want);
        lg_router_match_clear(&m);
    }
    expect_found(r, "GET", "/svc%31%30/items/special", "special", &m); /* svc10, escaped */
    lg_router_match_clear(&m);
    expect_found(r, "POST", "/svc10/items/special", "POST-10", &m);
    lg_router_match_clear(&m);
    expect_found(r, "PATCH", "/svc20/items/7", "fallback", &m);
    expect_param(&m, 0, "rest", "items/7");
    lg_router_match_clear(&m);
    expect_405(r, "PATCH", "/svc21/items/7", "DELETE, GET, HEAD, POST, PUT");
    expect_result(r, "GET", "/svc250/items/7", LG_ROUTER_NOT_FOUND);
    expect_result(r, "GET", "/svc1/items", LG_ROUTER_NOT_FOUND);

    /* Speed: the bound is generous for sanitizer builds (a plain build
     * takes well under a microsecond per match). */
    enum {
        ROUNDS = 100000
    };
    double t0 = now_s();
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(path, sizeof(path), "/svc%d/items/%d", (i * 7) % 250, i);
        ck_assert_int_eq(match(r, methods[i % 4], path, &m), LG_ROUTER_FOUND);
        lg_router_match_clear(&m);
    }
    double per_match_us = (now_s() - t0) / ROUNDS * 1e6;
    ck_assert_msg(per_match_us < 50.0, "%.2f us per match", per_match_us);
    lg_router_free(r);
}
END_TEST

START_TEST(test_match_clear_and_reuse)
{
    struct lg_router *r = lg_router_new();
    add_ok(r, "GET", "/c/{a}/{b}", "c");
    struct lg_router_match m;
    expect_found(r, "GET", "/c/1/2", "c", &m);
    ck_assert_uint_eq(m.nparams, 2);
    lg_router_match_clear(&m);
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_ptr_null(m.params[0].value);
    lg_router_match_clear(&m);
    lg_router_match_clear(NULL);
    /* A 404 after a match resets the fields. */
    ck_assert_int_eq(match(r, "GET", "/nope", &m), LG_ROUTER_NOT_FOUND);
    ck_assert_ptr_null(m.route);
    ck_assert_ptr_null(m.method);
    ck_assert_ptr_null(m.template_path);
    ck_assert_str_eq(m.allow, "");
    lg_router_match_clear(&m);
    lg_router_free(r);
    lg_router_free(NULL);
    /* An empty router matches nothing. */
    struct lg_router *empty = lg_router_new();
    expect_result(empty, "GET", "/", LG_ROUTER_NOT_FOUND);
    lg_router_free(empty);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_root);
    tcase_add_test(tc, test_precedence_literal_param_greedy);
    tcase_add_test(tc, test_precedence_left_to_right);
    tcase_add_test(tc, test_method_over_any);
    tcase_add_test(tc, test_backtracking);
    tcase_add_test(tc, test_head_via_get);
    tcase_add_test(tc, test_head_from_less_specific_template);
    tcase_add_test(tc, test_404_vs_405);
    tcase_add_test(tc, test_method_null);
    tcase_add_test(tc, test_decode_once);
    tcase_add_test(tc, test_bad_path);
    tcase_add_test(tc, test_trailing_slash_and_empty_segments);
    tcase_add_test(tc, test_greedy_values);
    tcase_add_test(tc, test_param_names_per_route);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_template_validation);
    tcase_add_test(tc, test_long_template_error_keeps_reason);
    tcase_add_test(tc, test_method_and_route_validation);
    tcase_add_test(tc, test_limits_segments);
    tcase_add_test(tc, test_limits_params);
    tcase_add_test(tc, test_many_routes);
    tcase_add_test(tc, test_match_clear_and_reuse);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
