/* test_awscreds.c - tests of the AWS credential chain: parsers, source order, and refreshes against
 * in-process endpoints. */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "lambdagate/awscreds.h"
#include "lambdagate/log.h"
#include "lambdagate/tls.h"
#include "unit_util.h"

/* ---------------------------------------------------------------------- */
/* Fixture: a clean environment and a scratch directory per test           */
/* ---------------------------------------------------------------------- */

static const char *const aws_variables[] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
};

/* Runs in the forked child before each test: the developer's own AWS
 * variables and ~/.aws must not leak into the chain. */
static void setup(void)
{
    for (size_t i = 0; i < LG_ARRAY_LEN(aws_variables); i++)
        unsetenv(aws_variables[i]);
    ut_scratch_make("lg-creds");
    /* An empty home: no ~/.aws/credentials unless a test writes one. */
    setenv("HOME", ut_scratch_dir(), 1);
}

static void teardown(void)
{
    ut_scratch_remove();
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* A configuration built by hand, so that these tests do not depend on
 * conf.c. Caller frees with conf_free(). */
static struct lg_conf *conf_new(bool tls)
{
    struct lg_conf *conf = calloc(1, sizeof(*conf));
    ck_assert_ptr_nonnull(conf);
    conf->lambda.region = strdup("eu-west-1");
    if (tls) {
        char err[LG_ERR_LEN];
        conf->lambda.ssl_ctx = lg_tls_client_ctx_new(NULL, err, sizeof(err));
        ck_assert_msg(conf->lambda.ssl_ctx != NULL, "%s", err);
    }
    return conf;
}

static void conf_set_credentials(struct lg_conf *conf, const char *key, const char *secret,
                                 const char *token)
{
    conf->lambda.credentials_set = true;
    conf->lambda.access_key_id = strdup(key);
    conf->lambda.secret_access_key = strdup(secret);
    conf->lambda.session_token = token ? strdup(token) : NULL;
}

static void conf_free(struct lg_conf *conf)
{
    if (conf == NULL)
        return;
    free(conf->lambda.region);
    free(conf->lambda.access_key_id);
    free(conf->lambda.secret_access_key);
    free(conf->lambda.session_token);
    if (conf->lambda.ssl_ctx)
        SSL_CTX_free(conf->lambda.ssl_ctx);
    free(conf);
}

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---------------------------------------------------------------------- */
/* Time                                                                    */
/* ---------------------------------------------------------------------- */

START_TEST(test_time_valid)
{
    static const struct {
        const char *text;
        time_t want;
    } cases[] = {
        {"2026-11-26T18:00:00Z", 1795716000},
        {"2026-11-26T18:00:00.5Z", 1795716000},
        {"2026-11-26T18:00:00.123456789Z", 1795716000},
        {"2026-11-26T18:00:00+00:00", 1795716000},
        {"2026-11-26T18:00:00.000+00:00", 1795716000},
        {"1970-01-01T00:00:00Z", 0},
        {"2024-02-29T12:00:00Z", 1709208000},
        {"2026-11-26T23:59:60Z", 1795737600}, /* a leap second rolls over */
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        time_t t = -1;
        ck_assert_msg(lg_creds_parse_time(cases[i].text, &t) == 0, "%s", cases[i].text);
        ck_assert_msg(t == cases[i].want, "%s: %lld", cases[i].text, (long long)t);
    }
}
END_TEST

START_TEST(test_time_invalid)
{
    static const char *const cases[] = {
        "",
        "2026-11-26",
        "2026-11-26T18:00:00",       /* no zone */
        "2026-11-26 18:00:00Z",      /* space, not T */
        "2026-11-26t18:00:00Z",      /* lowercase t */
        "2026-11-26T18:00:00z",      /* lowercase z */
        "2026-11-26T18:00:00+01:00", /* not UTC */
        "2026-11-26T18:00:00-00:00", /* not what the answers use */
        "2026-11-26T18:00:00.Z",     /* empty fraction */
        "2026-11-26T18:00:00.1234567890Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-02-29T00:00:00Z", /* not a leap year */
        "2026-04-31T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T18:60:00Z",
        "2026-11-26T18:00:61Z",
        "1969-12-31T23:59:59Z",
        "2026-11-26T18:00:00ZZ",
        "2026-11-26T18:00:00Z ",
        "+2026-11-26T18:00:00Z",
        "2026-1a-26T18:00:00Z",
        "tomorrow at noon, UTC-ish",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        time_t t = 12345;
        ck_assert_msg(lg_creds_parse_time(cases[i], &t) == -1, "accepted %s", cases[i]);
        ck_assert_msg(t == 12345, "%s changed the output", cases[i]);
    }
    time_t t;
    ck_assert_int_eq(lg_creds_parse_time(NULL, &t), -1);
}
END_TEST

START_TEST(test_refresh_delay)
{
    const time_t now = 1800000000;
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, 0), -1);
    /* Up to an hour: 5 minutes ahead. */
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 3600), 3300000);
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 600), 300000);
    /* Longer than an hour: 15 minutes ahead. */
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 3601), 2701000);
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 21600), 20700000);
    /* Never sooner than 10 s. */
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 310), 10000);
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 305), 10000);
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now + 60), 10000);
    ck_assert_int_eq(lg_creds_refresh_delay_ms(now, now - 100), 10000);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Credential sets                                                         */
/* ---------------------------------------------------------------------- */

START_TEST(test_creds_new_ref_unref)
{
    char key[] = "AKIDEXAMPLE", secret[] = "wJalrXUtnFEMI/K7MDENG", token[] = "TOKEN";
    char source[] = "custom";
    struct lg_creds *a = lg_creds_new(key, secret, token, 1795716000, source);
    ck_assert_ptr_nonnull(a);
    /* Copies, not the caller's buffers. */
    key[0] = secret[0] = token[0] = source[0] = 'X';
    ck_assert_str_eq(a->access_key_id, "AKIDEXAMPLE");
    ck_assert_str_eq(a->secret_access_key, "wJalrXUtnFEMI/K7MDENG");
    ck_assert_str_eq(a->session_token, "TOKEN");
    ck_assert_str_eq(a->source, "custom");
    ck_assert_int_eq(a->expiration, 1795716000);
    ck_assert_int_eq(a->refcount, 1);

    struct lg_creds *b = lg_creds_new("AKID2", "SECRET2", "", 0, "config");
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_null(b->session_token); /* empty token means none */
    ck_assert_uint_gt(b->generation, a->generation);
    struct lg_creds *c = lg_creds_new("AKID2", "SECRET2", NULL, 0, "config");
    ck_assert_uint_gt(c->generation, b->generation);

    ck_assert_ptr_eq(lg_creds_ref(a), a);
    ck_assert_int_eq(a->refcount, 2);
    lg_creds_unref(a);
    ck_assert_int_eq(a->refcount, 1);
    ck_assert_str_eq(a->secret_access_key, "wJalrXUtnFEMI/K7MDENG");
    lg_creds_unref(a);
    lg_creds_unref(b);
    lg_creds_unref(c);
    lg_creds_unref(NULL);
    ck_assert_ptr_null(lg_creds_ref(NULL));
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Shared credentials file                                                 */
/* ---------------------------------------------------------------------- */

static const char shared_text[] =
    "# a comment\n"
    "; another comment\n"
    "\n"
    "[default]\n"
    "aws_access_key_id=AKIDDEFAULT\n"
    "aws_secret_access_key = secret/default+1\n"
    "\n"
    "  [ work ]  \r\n"
    "\taws_access_key_id   =   AKIDWORK   # inline comment\r\n"
    "AWS_Secret_Access_Key\t=\tsecret-work ; another inline comment\r\n"
    "aws_session_token = token-work==\r\n"
    "region = eu-central-1\r\n"
    "\n"
    "[empty]\n"
    "[broken]\n"
    "aws_access_key_id = AKIDBROKEN\n"
    "[keyless]\n"
    "aws_secret_access_key = s\n"
    "[work2]\n"
    "aws_access_key_id = FIRST\n"
    "aws_secret_access_key = s2\n"
    "aws_access_key_id = SECOND\n"
    "[default]\n"
    "aws_session_token = token-default\n";

START_TEST(test_shared_profiles)
{
    char err[LG_ERR_LEN] = "";
    struct lg_creds *c =
        lg_creds_parse_shared_file(shared_text, strlen(shared_text), "default", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "AKIDDEFAULT");
    ck_assert_str_eq(c->secret_access_key, "secret/default+1");
    /* A second [default] section adds to the first. */
    ck_assert_str_eq(c->session_token, "token-default");
    ck_assert_int_eq(c->expiration, 0);
    ck_assert_str_eq(c->source, "shared-file");
    lg_creds_unref(c);

    c = lg_creds_parse_shared_file(shared_text, strlen(shared_text), "work", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "AKIDWORK");
    ck_assert_str_eq(c->secret_access_key, "secret-work");
    ck_assert_str_eq(c->session_token, "token-work==");
    lg_creds_unref(c);

    /* A repeated key takes the last value. */
    c = lg_creds_parse_shared_file(shared_text, strlen(shared_text), "work2", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "SECOND");
    ck_assert_ptr_null(c->session_token);
    lg_creds_unref(c);
}
END_TEST

START_TEST(test_shared_incomplete_profiles)
{
    char err[LG_ERR_LEN] = "";
    size_t n = strlen(shared_text);
    ck_assert_ptr_null(lg_creds_parse_shared_file(shared_text, n, "broken", err, sizeof(err)));
    ck_assert_str_eq(err, "profile broken has no aws_secret_access_key");
    ck_assert_ptr_null(lg_creds_parse_shared_file(shared_text, n, "keyless", err, sizeof(err)));
    ck_assert_str_eq(err, "profile keyless has no aws_access_key_id");
    ck_assert_ptr_null(lg_creds_parse_shared_file(shared_text, n, "empty", err, sizeof(err)));
    ck_assert_str_eq(err, "profile empty has no aws_access_key_id");
    ck_assert_ptr_null(lg_creds_parse_shared_file(shared_text, n, "nope", err, sizeof(err)));
    ck_assert_str_eq(err, "no profile nope");
    /* Section names are exact. */
    ck_assert_ptr_null(lg_creds_parse_shared_file(shared_text, n, "Work", err, sizeof(err)));
    ck_assert_str_eq(err, "no profile Work");
    ck_assert_ptr_null(lg_creds_parse_shared_file("", 0, "default", err, sizeof(err)));
    ck_assert_str_eq(err, "no profile default");
}
END_TEST

START_TEST(test_shared_malformed)
{
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"aws_access_key_id = A\n[default]\n", "line 1: key outside a [profile] section"},
        {"[default]\naws_access_key_id = A\njunk line\n", "line 3: expected key = value"},
        {"# c\n[default\naws_access_key_id = A\n", "line 2: section header without a closing ]"},
        {"[default]\naws_access_key_id =\naws_secret_access_key = s\n",
         "profile default: aws_access_key_id is empty"},
        {"[default]\naws_access_key_id = A\x01Z\naws_secret_access_key = s\n",
         "profile default: aws_access_key_id holds a character that is not allowed"},
        {"[default]\naws_access_key_id = A\naws_secret_access_key = s p\n",
         "profile default: aws_secret_access_key holds a character that is not allowed"},
    };
    char err[LG_ERR_LEN];
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        err[0] = '\0';
        struct lg_creds *c = lg_creds_parse_shared_file(cases[i].text, strlen(cases[i].text),
                                                        "default", err, sizeof(err));
        ck_assert_msg(c == NULL, "case %zu accepted", i);
        ck_assert_str_eq(err, cases[i].err);
    }
    static const char nul[] = "[default]\naws_access_key_id = A\0B\naws_secret_access_key = s\n";
    ck_assert_ptr_null(
        lg_creds_parse_shared_file(nul, sizeof(nul) - 1, "default", err, sizeof(err)));
    ck_assert_str_eq(err, "holds a NUL byte");

    /* 64 KiB is the cap: one byte more is refused even when well formed. */
    size_t big = 64 * 1024 + 1;
    char *text = malloc(big);
    const char *head = "[default]\naws_access_key_id = A\naws_secret_access_key = s\n";
    memset(text, '#', big);
    memcpy(text, head, strlen(head));
    text[strlen(head)] = '#';
    ck_assert_ptr_null(lg_creds_parse_shared_file(text, big, "default", err, sizeof(err)));
    ck_assert_str_eq(err, "larger than 65536 bytes");
    struct lg_creds *c = lg_creds_parse_shared_file(text, big - 1, "default", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "A");
    lg_creds_unref(c);
    free(text);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Container and IMDS JSON                                                 */
/* ---------------------------------------------------------------------- */

START_TEST(test_json_container)
{
    static const char text[] = "{\"RoleArn\":\"arn:aws:iam::123456789012:role/task\","
                               "\"AccessKeyId\":\"ASIACONTAINER\","
                               "\"SecretAccessKey\":\"container/secret+key\","
                               "\"Token\":\"IQoJb3JpZ2luX2VjEPT//////////\","
                               "\"Expiration\":\"2026-11-26T18:00:00Z\"}";
    char err[LG_ERR_LEN] = "";
    struct lg_creds *c = lg_creds_parse_json(text, strlen(text), "container", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "ASIACONTAINER");
    ck_assert_str_eq(c->secret_access_key, "container/secret+key");
    ck_assert_str_eq(c->session_token, "IQoJb3JpZ2luX2VjEPT//////////");
    ck_assert_int_eq(c->expiration, 1795716000);
    ck_assert_str_eq(c->source, "container");
    lg_creds_unref(c);

    /* A local helper may hand out keys without a token. */
    static const char no_token[] = "{\"AccessKeyId\":\"AKID\",\"SecretAccessKey\":\"S\","
                                   "\"Expiration\":\"2026-11-26T18:00:00.000+00:00\"}";
    c = lg_creds_parse_json(no_token, strlen(no_token), "container", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(c->session_token);
    ck_assert_int_eq(c->expiration, 1795716000);
    lg_creds_unref(c);
}
END_TEST

START_TEST(test_json_imds)
{
    static const char text[] = "{\n  \"Code\" : \"Success\",\n"
                               "  \"LastUpdated\" : \"2026-11-26T11:49:43Z\",\n"
                               "  \"Type\" : \"AWS-HMAC\",\n"
                               "  \"AccessKeyId\" : \"ASIAIMDS\",\n"
                               "  \"SecretAccessKey\" : \"imds-secret\",\n"
                               "  \"Token\" : \"imds-token\",\n"
                               "  \"Expiration\" : \"2026-11-26T18:00:00Z\"\n}";
    char err[LG_ERR_LEN] = "";
    struct lg_creds *c = lg_creds_parse_json(text, strlen(text), "imds", err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "ASIAIMDS");
    ck_assert_str_eq(c->secret_access_key, "imds-secret");
    ck_assert_str_eq(c->session_token, "imds-token");
    ck_assert_int_eq(c->expiration, 1795716000);
    ck_assert_str_eq(c->source, "imds");
    lg_creds_unref(c);
}
END_TEST

START_TEST(test_json_rejected)
{
#define GOOD_TAIL                                                                                  \
    "\"SecretAccessKey\":\"S\",\"Token\":\"T\",\"Expiration\":\"2026-11-26T18:00:00Z\"}"
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        /* missing fields */
        {"{\"SecretAccessKey\":\"S\",\"Token\":\"T\",\"Expiration\":\"2026-11-26T18:00:00Z\"}",
         "no AccessKeyId"},
        {"{\"AccessKeyId\":\"A\",\"Token\":\"T\",\"Expiration\":\"2026-11-26T18:00:00Z\"}",
         "no SecretAccessKey"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\"}", "no Expiration"},
        {"{\"AccessKeyId\":null," GOOD_TAIL, "no AccessKeyId"},
        {"{}", "no AccessKeyId"},
        /* wrong types */
        {"{\"AccessKeyId\":12," GOOD_TAIL, "AccessKeyId is not a string"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":{},\"Token\":\"T\","
         "\"Expiration\":\"2026-11-26T18:00:00Z\"}",
         "SecretAccessKey is not a string"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":[\"T\"],"
         "\"Expiration\":\"2026-11-26T18:00:00Z\"}",
         "Token is not a string"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
         "\"Expiration\":1795716000}",
         "Expiration is not a string"},
        {"{\"Code\":true,\"AccessKeyId\":\"A\"," GOOD_TAIL, "Code is not a string"},
        {"[\"AccessKeyId\"]", "the answer is not a JSON object"},
        {"\"AccessKeyId\"", "the answer is not a JSON object"},
        /* IMDS says the set is not usable */
        {"{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"AccessKeyId\":\"A\"," GOOD_TAIL,
         "Code is AssumeRoleUnauthorizedAccess, not Success"},
        /* bad Expiration */
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
         "\"Expiration\":\"tomorrow\"}",
         "Expiration is not an ISO 8601 UTC time"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
         "\"Expiration\":\"2026-11-26T18:00:00+02:00\"}",
         "Expiration is not an ISO 8601 UTC time"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
         "\"Expiration\":\"\"}",
         "Expiration is not an ISO 8601 UTC time"},
        /* values that would break a header */
        {"{\"AccessKeyId\":\"A\\r\\nX-Evil: 1\"," GOOD_TAIL,
         "AccessKeyId holds a character that is not allowed"},
        {"{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\\u0001\","
         "\"Expiration\":\"2026-11-26T18:00:00Z\"}",
         "Token holds a character that is not allowed"},
        {"{\"AccessKeyId\":\"\"," GOOD_TAIL, "AccessKeyId is empty"},
    };
#undef GOOD_TAIL
    char err[LG_ERR_LEN];
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        err[0] = '\0';
        struct lg_creds *c =
            lg_creds_parse_json(cases[i].text, strlen(cases[i].text), "imds", err, sizeof(err));
        ck_assert_msg(c == NULL, "case %zu accepted", i);
        ck_assert_msg(strcmp(err, cases[i].err) == 0, "case %zu: got \"%s\", want \"%s\"", i, err,
                      cases[i].err);
    }
}
END_TEST

START_TEST(test_json_hostile)
{
    char err[LG_ERR_LEN] = "";
    ck_assert_ptr_null(lg_creds_parse_json("{\"AccessKeyId\":", 15, "imds", err, sizeof(err)));
    ck_assert_int_eq(strncmp(err, "invalid JSON", 12), 0);
    static const char nul[] = "{\"AccessKeyId\":\"A\0\"}";
    ck_assert_ptr_null(lg_creds_parse_json(nul, sizeof(nul) - 1, "imds", err, sizeof(err)));
    ck_assert_str_eq(err, "NUL byte at offset 17");
    /* Deep nesting is refused before yajl recurses into it. */
    char deep[200];
    memset(deep, '[', sizeof(deep));
    ck_assert_ptr_null(lg_creds_parse_json(deep, sizeof(deep), "imds", err, sizeof(err)));
    ck_assert_str_eq(err, "nesting deeper than 8");
    /* Size cap. */
    size_t big = 64 * 1024 + 1;
    char *text = malloc(big);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    ck_assert_ptr_null(lg_creds_parse_json(text, big, "imds", err, sizeof(err)));
    ck_assert_str_eq(err, "JSON text of 65537 bytes exceeds 65536");
    free(text);
    /* An oversized field. */
    char token[20000];
    memset(token, 'T', sizeof(token) - 1);
    token[sizeof(token) - 1] = '\0';
    char *doc = malloc(sizeof(token) + 200);
    snprintf(doc, sizeof(token) + 200,
             "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"%s\","
             "\"Expiration\":\"2026-11-26T18:00:00Z\"}",
             token);
    ck_assert_ptr_null(lg_creds_parse_json(doc, strlen(doc), "imds", err, sizeof(err)));
    ck_assert_str_eq(err, "Token is longer than 16384 bytes");
    free(doc);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* STS XML                                                                 */
/* ---------------------------------------------------------------------- */

static const char sts_ok[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    "
    "<SubjectFromWebIdentityToken>system:serviceaccount:default:gw</SubjectFromWebIdentityToken>\n"
    "    <Audience>sts.amazonaws.com</Audience>\n"
    "    <AssumedRoleUser>\n"
    "      <AssumedRoleId>AROAEXAMPLE:lambdagate-1</AssumedRoleId>\n"
    "      <Arn>arn:aws:sts::123456789012:assumed-role/gw/lambdagate-1</Arn>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>FwoGZXIvYXdzEBY&amp;token</SessionToken>\n"
    "      <SecretAccessKey>sts/secret+key</SecretAccessKey>\n"
    "      <Expiration>2026-11-26T18:00:00Z</Expiration>\n"
    "      <AccessKeyId>ASIASTS</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <Provider>arn:aws:iam::123456789012:oidc-provider/example</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata>\n"
    "    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
    "  </ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

START_TEST(test_sts_success)
{
    char err[LG_ERR_LEN] = "";
    struct lg_creds *c = lg_creds_parse_sts_xml(sts_ok, strlen(sts_ok), err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->access_key_id, "ASIASTS");
    ck_assert_str_eq(c->secret_access_key, "sts/secret+key");
    ck_assert_str_eq(c->session_token, "FwoGZXIvYXdzEBY&token");
    ck_assert_int_eq(c->expiration, 1795716000);
    ck_assert_str_eq(c->source, "web-identity");
    lg_creds_unref(c);
}
END_TEST

START_TEST(test_sts_entities)
{
    static const char doc[] = "<R><Credentials><AccessKeyId>A</AccessKeyId>"
                              "<SecretAccessKey>a&amp;b&lt;c&gt;d&quot;e&apos;f</SecretAccessKey>"
                              "<SessionToken>&amp;amp;</SessionToken>"
                              "<Expiration>2026-11-26T18:00:00.000Z</Expiration>"
                              "</Credentials></R>";
    char err[LG_ERR_LEN] = "";
    struct lg_creds *c = lg_creds_parse_sts_xml(doc, strlen(doc), err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->secret_access_key, "a&b<c>d\"e'f");
    /* Unescaped once only. */
    ck_assert_str_eq(c->session_token, "&amp;");
    lg_creds_unref(c);

    static const char *const bad[] = {"&nbsp;", "&#65;", "&amp", "&", "&AMP;"};
    for (size_t i = 0; i < LG_ARRAY_LEN(bad); i++) {
        char d[512];
        snprintf(d, sizeof(d),
                 "<Credentials><AccessKeyId>A</AccessKeyId>"
                 "<SecretAccessKey>x%sy</SecretAccessKey><SessionToken>T</SessionToken>"
                 "<Expiration>2026-11-26T18:00:00Z</Expiration></Credentials>",
                 bad[i]);
        ck_assert_ptr_null(lg_creds_parse_sts_xml(d, strlen(d), err, sizeof(err)));
        ck_assert_str_eq(err, "<SecretAccessKey> holds an unknown entity");
    }
}
END_TEST

START_TEST(test_sts_error_document)
{
    static const char doc[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidIdentityToken</Code>\n"
        "    <Message>Incorrect token audience &amp; issuer</Message>\n  </Error>\n"
        "  <RequestId>9b0b0fa3-4d7c-4b1e-9c1f-2a7e5b3c6d8e</RequestId>\n</ErrorResponse>\n";
    char err[LG_ERR_LEN] = "";
    ck_assert_ptr_null(lg_creds_parse_sts_xml(doc, strlen(doc), err, sizeof(err)));
    ck_assert_str_eq(err, "STS error InvalidIdentityToken: Incorrect token audience & issuer");

    static const char no_message[] = "<ErrorResponse><Error><Code>AccessDenied</Code></Error>"
                                     "</ErrorResponse>";
    ck_assert_ptr_null(lg_creds_parse_sts_xml(no_message, strlen(no_message), err, sizeof(err)));
    ck_assert_str_eq(err, "STS error AccessDenied");
    static const char no_code[] = "<ErrorResponse><Error><Message>m\x01</Message></Error>"
                                  "</ErrorResponse>";
    ck_assert_ptr_null(lg_creds_parse_sts_xml(no_code, strlen(no_code), err, sizeof(err)));
    ck_assert_str_eq(err, "STS error (no code): m?");
}
END_TEST

START_TEST(test_sts_rejected)
{
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"<R><Result></Result></R>", "no <Credentials> in the STS answer"},
        {"", "no <Credentials> in the STS answer"},
        {"<R><Credentials><AccessKeyId>A</AccessKeyId></R>",
         "<Credentials> is unterminated or repeated"},
        {"<Credentials></Credentials><Credentials></Credentials>",
         "<Credentials> is unterminated or repeated"},
        {"<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
         "<Expiration>2026-11-26T18:00:00Z</Expiration></Credentials>",
         "no <SessionToken> in <Credentials>"},
        {"<Credentials><AccessKeyId>A</AccessKeyId><AccessKeyId>B</AccessKeyId>"
         "<SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken>"
         "<Expiration>2026-11-26T18:00:00Z</Expiration></Credentials>",
         "<AccessKeyId> is unterminated or repeated"},
        {"<Credentials><AccessKeyId>A<b/></AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
         "<SessionToken>T</SessionToken><Expiration>2026-11-26T18:00:00Z</Expiration>"
         "</Credentials>",
         "<AccessKeyId> holds markup"},
        {"<Credentials><AccessKeyId/><SecretAccessKey>S</SecretAccessKey>"
         "<SessionToken>T</SessionToken><Expiration>2026-11-26T18:00:00Z</Expiration>"
         "</Credentials>",
         "AccessKeyId is empty"},
        {"<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
         "<SessionToken>T</SessionToken><Expiration>soon</Expiration></Credentials>",
         "Expiration is not an ISO 8601 UTC time"},
        /* Outside <Credentials> does not count. */
        {"<AccessKeyId>A</AccessKeyId><Credentials><SecretAccessKey>S</SecretAccessKey>"
         "<SessionToken>T</SessionToken><Expiration>2026-11-26T18:00:00Z</Expiration>"
         "</Credentials>",
         "no <AccessKeyId> in <Credentials>"},
        /* A tag with a longer name is not the tag. */
        {"<Credentials><AccessKeyIdX>A</AccessKeyIdX><SecretAccessKey>S</SecretAccessKey>"
         "<SessionToken>T</SessionToken><Expiration>2026-11-26T18:00:00Z</Expiration>"
         "</Credentials>",
         "no <AccessKeyId> in <Credentials>"},
    };
    char err[LG_ERR_LEN];
    for (size_t i = 0; i < LG_ARRAY_LEN(cases); i++) {
        err[0] = '\0';
        ck_assert_msg(
            lg_creds_parse_sts_xml(cases[i].text, strlen(cases[i].text), err, sizeof(err)) == NULL,
            "case %zu accepted", i);
        ck_assert_msg(strcmp(err, cases[i].err) == 0, "case %zu: got \"%s\", want \"%s\"", i, err,
                      cases[i].err);
    }
    static const char nul[] = "<Credentials>\0</Credentials>";
    ck_assert_ptr_null(lg_creds_parse_sts_xml(nul, sizeof(nul) - 1, err, sizeof(err)));
    ck_assert_str_eq(err, "STS answer holds a NUL byte");
}
END_TEST

/* Every truncation of a good answer that cuts into <Credentials> fails;
 * the sanitizers watch each one for reads past the end. */
START_TEST(test_sts_truncated)
{
    const char *close = strstr(sts_ok, "</Credentials>");
    size_t needed = (size_t)(close - sts_ok) + strlen("</Credentials>");
    char err[LG_ERR_LEN];
    for (size_t n = 0; n < strlen(sts_ok); n++) {
        /* A heap copy of exactly n bytes, so that an over-read is caught. */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, sts_ok, n);
        struct lg_creds *c = lg_creds_parse_sts_xml(copy, n, err, sizeof(err));
        free(copy);
        if (n < needed) {
            ck_assert_msg(c == NULL, "prefix of %zu bytes accepted", n);
        } else {
            ck_assert_msg(c != NULL, "prefix of %zu bytes: %s", n, err);
            ck_assert_str_eq(c->session_token, "FwoGZXIvYXdzEBY&token");
        }
        lg_creds_unref(c);
    }
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Source order                                                            */
/* ---------------------------------------------------------------------- */

/* provider_new with the current environment; fails the test on error. */
static struct lg_creds_provider *provider(struct event_base *base, const struct lg_conf *conf)
{
    char err[LG_ERR_LEN] = "";
    struct lg_creds_provider *p = lg_creds_provider_new(base, NULL, conf, err, sizeof(err));
    ck_assert_msg(p != NULL, "provider_new: %s", err);
    return p;
}

/* provider_new that must fail with want. */
static void provider_fails(const struct lg_conf *conf, const char *want)
{
    struct event_base *base = event_base_new();
    char err[LG_ERR_LEN] = "";
    struct lg_creds_provider *p = lg_creds_provider_new(base, NULL, conf, err, sizeof(err));
    ck_assert_msg(p == NULL, "provider_new succeeded, want \"%s\"", want);
    ck_assert_str_eq(err, want);
    event_base_free(base);
}

/* The static set a provider holds; checks it and frees the provider. */
static void expect_static(const struct lg_conf *conf, enum lg_creds_source source,
                          const char *source_name, const char *key, const char *secret,
                          const char *token)
{
    struct event_base *base = event_base_new();
    struct lg_creds_provider *p = provider(base, conf);
    ck_assert_int_eq(lg_creds_provider_source(p), source);
    /* Static sets are there before start, and stay. */
    struct lg_creds *c = lg_creds_provider_get(p);
    ck_assert_ptr_nonnull(c);
    lg_creds_provider_start(p);
    struct lg_creds *c2 = lg_creds_provider_get(p);
    ck_assert_ptr_eq(c, c2);
    ck_assert_int_eq(c->refcount, 3);
    ck_assert_str_eq(c->source, source_name);
    ck_assert_str_eq(c->access_key_id, key);
    ck_assert_str_eq(c->secret_access_key, secret);
    if (token)
        ck_assert_str_eq(c->session_token, token);
    else
        ck_assert_ptr_null(c->session_token);
    ck_assert_int_eq(c->expiration, 0);
    lg_creds_provider_free(p);
    /* The provider's reference is gone; ours still hold the set. */
    ck_assert_int_eq(c->refcount, 2);
    ck_assert_str_eq(c->secret_access_key, secret);
    lg_creds_unref(c);
    lg_creds_unref(c2);
    event_base_free(base);
}

static const char *write_shared_file(void)
{
    const char *path = ut_scratch_path("credentials");
    write_file(path, "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret\n"
                     "[work]\naws_access_key_id = AKIDWORK\naws_secret_access_key = worksecret\n"
                     "aws_session_token = worktoken\n"
                     "[broken]\naws_access_key_id = AKIDBROKEN\n");
    return path;
}

START_TEST(test_chain_config_beats_env)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", write_shared_file(), 1);
    struct lg_conf *conf = conf_new(false);
    conf_set_credentials(conf, "AKIDCONF", "confsecret", "conftoken");
    expect_static(conf, LG_CREDS_CONFIG, "config", "AKIDCONF", "confsecret", "conftoken");
    conf_free(conf);
}
END_TEST

START_TEST(test_chain_env_beats_file)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", write_shared_file(), 1);
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x", 1);
    struct lg_conf *conf = conf_new(false);
    expect_static(conf, LG_CREDS_ENV, "environment", "AKIDENV", "envsecret", "envtoken");
    /* Without a conf at all, too; an empty token means none. */
    setenv("AWS_SESSION_TOKEN", "", 1);
    expect_static(NULL, LG_CREDS_ENV, "environment", "AKIDENV", "envsecret", NULL);
    conf_free(conf);
}
END_TEST

START_TEST(test_chain_env_incomplete)
{
    setenv("AWS_SHARED_CREDENTIALS_FILE", write_shared_file(), 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    provider_fails(NULL, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    setenv("AWS_SECRET_ACCESS_KEY", "", 1);
    provider_fails(NULL, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    provider_fails(NULL, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
    setenv("AWS_ACCESS_KEY_ID", "AKID\nENV", 1);
    provider_fails(NULL, "AWS_ACCESS_KEY_ID holds a character that is not allowed");
}
END_TEST

START_TEST(test_chain_file_profile)
{
    const char *path = write_shared_file();
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    setenv("AWS_PROFILE", "work", 1);
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x", 1);
    expect_static(NULL, LG_CREDS_SHARED_FILE, "shared-file", "AKIDWORK", "worksecret", "worktoken");
    unsetenv("AWS_PROFILE");
    expect_static(NULL, LG_CREDS_SHARED_FILE, "shared-file", "AKIDFILE", "filesecret", NULL);
    /* A broken profile stops the chain instead of falling through. */
    setenv("AWS_PROFILE", "broken", 1);
    char want[LG_ERR_LEN];
    snprintf(want, sizeof(want), "%s: profile broken has no aws_secret_access_key", path);
    provider_fails(NULL, want);
}
END_TEST

START_TEST(test_chain_file_in_home)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/.aws", ut_scratch_dir());
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    write_file(ut_scratch_path(".aws/credentials"),
               "[default]\naws_access_key_id = AKIDHOME\naws_secret_access_key = homesecret\n");
    expect_static(NULL, LG_CREDS_SHARED_FILE, "shared-file", "AKIDHOME", "homesecret", NULL);
}
END_TEST

START_TEST(test_chain_file_unknown_profile_falls_through)
{
    setenv("AWS_SHARED_CREDENTIALS_FILE", write_shared_file(), 1);
    setenv("AWS_PROFILE", "nope", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    ut_stderr_begin();
    struct event_base *base = event_base_new();
    struct lg_creds_provider *p = provider(base, NULL);
    ck_assert_int_eq(lg_creds_provider_source(p), LG_CREDS_NONE);
    lg_creds_provider_start(p);
    ck_assert_ptr_null(lg_creds_provider_get(p));
    lg_creds_provider_free(p);
    event_base_free(base);
    char *log = ut_stderr_end();
    ck_assert_msg(strstr(log, "WARN AWS_PROFILE nope is not in ") != NULL, "%s", log);
    ck_assert_msg(strstr(log, "WARN no AWS credentials") != NULL, "%s", log);
    free(log);
}
END_TEST

START_TEST(test_chain_missing_file_falls_through)
{
    setenv("AWS_SHARED_CREDENTIALS_FILE", ut_scratch_path("no-such-file"), 1);
    struct event_base *base = event_base_new();
    struct lg_creds_provider *p = provider(base, NULL);
    ck_assert_int_eq(lg_creds_provider_source(p), LG_CREDS_IMDS);
    lg_creds_provider_free(p);
    event_base_free(base);
    /* A file that exists but cannot be used is an error. */
    ck_assert_int_eq(mkdir(ut_scratch_path("dir"), 0700), 0);
    setenv("AWS_SHARED_CREDENTIALS_FILE", ut_scratch_path("dir"), 1);
    char want[LG_ERR_LEN];
    snprintf(want, sizeof(want), "shared credentials file: %s is not a regular file",
             ut_scratch_path("dir"));
    provider_fails(NULL, want);
}
END_TEST

/* The dynamic source chosen with the current environment. */
static enum lg_creds_source dynamic_source(const struct lg_conf *conf)
{
    struct event_base *base = event_base_new();
    struct lg_creds_provider *p = provider(base, conf);
    enum lg_creds_source s = lg_creds_provider_source(p);
    /* Not started: nothing is fetched, nothing is there. */
    ck_assert_ptr_null(lg_creds_provider_get(p));
    lg_creds_provider_free(p);
    event_base_free(base);
    return s;
}

START_TEST(test_chain_dynamic_order)
{
    write_file(ut_scratch_path("wi-token"), "eyJ.token.sig\n");
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", ut_scratch_path("wi-token"), 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw", 1);
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc", 1);
    struct lg_conf *conf = conf_new(true);
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_CONTAINER);
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials", 1);
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_CONTAINER);
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    /* Web identity before IMDS, even though IMDS is configured. */
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_WEB_IDENTITY);
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    /* AWS_ROLE_ARN alone is not web identity. */
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_IMDS);
    unsetenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_IMDS);
    setenv("AWS_EC2_METADATA_DISABLED", "TRUE", 1);
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_NONE);
    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_IMDS);
    conf_free(conf);
}
END_TEST

START_TEST(test_chain_web_identity_errors)
{
    write_file(ut_scratch_path("wi-token"), "eyJ.token.sig\n");
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", ut_scratch_path("wi-token"), 1);
    provider_fails(NULL, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw", 1);
    /* The regional STS endpoint is https: it needs a TLS context. */
    provider_fails(NULL, "STS endpoint: https needs a TLS client context");
    struct lg_conf *conf = conf_new(true);
    ck_assert_int_eq(dynamic_source(conf), LG_CREDS_WEB_IDENTITY);
    free(conf->lambda.region);
    conf->lambda.region = strdup("eu-west-1/../evil");
    provider_fails(conf, "region eu-west-1/../evil is not a valid AWS region name");
    setenv("AWS_ENDPOINT_URL_STS", "ftp://sts.example.com", 1);
    provider_fails(conf, "AWS_ENDPOINT_URL_STS: URL must start with http:// or https://");
    char long_url[600];
    memset(long_url, 'a', sizeof(long_url) - 1);
    long_url[sizeof(long_url) - 1] = '\0';
    memcpy(long_url, "https://", 8);
    setenv("AWS_ENDPOINT_URL_STS", long_url, 1);
    provider_fails(conf, "AWS_ENDPOINT_URL_STS is longer than 512 bytes");
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", long_url, 1);
    provider_fails(conf, "AWS_EC2_METADATA_SERVICE_ENDPOINT is longer than 512 bytes");
    conf_free(conf);
}
END_TEST

START_TEST(test_chain_container_uri_rules)
{
    struct lg_conf *conf = conf_new(true);
    static const char *const allowed[] = {
        "http://127.0.0.1:8080/creds",
        "http://127.9.8.7/creds",
        "http://[::1]:51679/creds",
        "http://169.254.170.2/v2/credentials",
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "http://localhost:8090/2016-11-01/credentialprovider/",
        "https://creds.example.com/x",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(allowed); i++) {
        setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", allowed[i], 1);
        ck_assert_int_eq(dynamic_source(conf), LG_CREDS_CONTAINER);
    }
    static const char *const refused[] = {
        "http://10.0.0.1/creds",    "http://169.254.169.254/creds", "http://169.254.170.3/creds",
        "http://example.com/creds", "http://[fd00:ec2::24]/creds",  "http://128.0.0.1/creds",
    };
    for (size_t i = 0; i < LG_ARRAY_LEN(refused); i++) {
        setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", refused[i], 1);
        char want[LG_ERR_LEN];
        const char *host = strstr(refused[i], "//") + 2;
        char h[64];
        snprintf(h, sizeof(h), "%.*s", (int)strcspn(host, "/"), host);
        if (h[0] == '[') { /* the message names the host without brackets */
            memmove(h, h + 1, strlen(h));
            h[strlen(h) - 1] = '\0';
        }
        snprintf(want, sizeof(want),
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI: http is allowed only for loopback, "
                 "169.254.170.2, 169.254.170.23 and fd00:ec2::23; use https for %s",
                 h);
        provider_fails(conf, want);
    }
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "https://creds.example.com/x", 1);
    provider_fails(NULL, "AWS_CONTAINER_CREDENTIALS_FULL_URI: https needs a TLS client context");
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/credentials", 1);
    provider_fails(conf, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /");
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x", 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok\r\nX-Evil: 1", 1);
    provider_fails(conf, "AWS_CONTAINER_AUTHORIZATION_TOKEN holds a character that is not allowed");
    conf_free(conf);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* In-process endpoints                                                    */
/* ---------------------------------------------------------------------- */

enum srv_kind {
    SRV_CONTAINER,
    SRV_IMDS,
    SRV_STS,
};

#define SRV_MAX_RECORDS 32

/* One request as the endpoint saw it. */
struct srv_record {
    char method[8];
    char uri[256];
    char authorization[128];
    char imds_token[64];
    char imds_ttl[16];
    char content_type[128];
    char body[4096];
    double at; /* monotonic seconds */
};

struct srv {
    enum srv_kind kind;
    struct evhttp *http;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
    int nrequests;
    struct srv_record records[SRV_MAX_RECORDS];
    /* Credential answers: the n-th (0-based) fails with status[n] when
     * that is set, else expires expires_in[n] s from now (default 2 h). */
    int ncreds;
    int status[SRV_MAX_RECORDS];
    long expires_in[SRV_MAX_RECORDS];
    /* After the first credential answer, write rewrite_text to rewrite_path
     * (a token file rotated between two refreshes). */
    const char *rewrite_path;
    const char *rewrite_text;
    bool hold; /* never answer */
    int imds_tokens;
    char imds_token[64];
};

static void copy_header(char *out, size_t outlen, struct evhttp_request *req, const char *name)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    snprintf(out, outlen, "%s", v ? v : "");
}

static void reply(struct evhttp_request *req, int status, const char *type, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void iso_time(time_t t, char *out, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The next credential answer: its number (1-based), its status, and its
 * expiration. Rewrites the token file after the first. */
static int next_creds(struct srv *s, int *status, char *expires, size_t len)
{
    int i = s->ncreds++;
    *status = i < SRV_MAX_RECORDS && s->status[i] ? s->status[i] : 200;
    long in = i < SRV_MAX_RECORDS && s->expires_in[i] ? s->expires_in[i] : 7200;
    iso_time(time(NULL) + in, expires, len);
    if (i == 0 && s->rewrite_path)
        write_file(s->rewrite_path, s->rewrite_text);
    return i + 1;
}

static void container_answer(struct srv *s, struct evhttp_request *req)
{
    int status;
    char expires[32], body[512];
    int n = next_creds(s, &status, expires, sizeof(expires));
    if (status != 200) {
        reply(req, status, "application/json", "{\"message\":\"agent trouble\"}");
        return;
    }
    snprintf(body, sizeof(body),
             "{\"AccessKeyId\":\"AKID-CONT-%d\",\"SecretAccessKey\":\"SECRET-CONT-%d\","
             "\"Token\":\"TOKEN-CONT-%d\",\"Expiration\":\"%s\"}",
             n, n, n, expires);
    reply(req, 200, "application/json", body);
}

static void imds_answer(struct srv *s, struct evhttp_request *req, const struct srv_record *r)
{
    static const char list[] = "/latest/meta-data/iam/security-credentials/";
    if (strcmp(r->method, "PUT") == 0 && strcmp(r->uri, "/latest/api/token") == 0) {
        if (strcmp(r->imds_ttl, "21600") != 0) {
            reply(req, 400, "text/plain", "bad ttl");
            return;
        }
        snprintf(s->imds_token, sizeof(s->imds_token), "imds-token-%d", ++s->imds_tokens);
        reply(req, 200, "text/plain", s->imds_token);
        return;
    }
    if (strcmp(r->method, "GET") != 0 || strncmp(r->uri, list, strlen(list)) != 0) {
        reply(req, 404, "text/plain", "not found");
        return;
    }
    if (s->imds_tokens == 0 || strcmp(r->imds_token, s->imds_token) != 0) {
        reply(req, 401, "text/plain", "unauthorized");
        return;
    }
    const char *role = r->uri + strlen(list);
    if (role[0] == '\0') {
        reply(req, 200, "text/plain", "gw-role\nsecond-role\n");
        return;
    }
    if (strcmp(role, "gw-role") != 0) {
        reply(req, 404, "text/plain", "not found");
        return;
    }
    int status;
    char expires[32], body[1024];
    int n = next_creds(s, &status, expires, sizeof(expires));
    if (status != 200) {
        reply(req, status, "text/plain", "trouble");
        return;
    }
    snprintf(body, sizeof(body),
             "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-01-01T00:00:00Z\",\n"
             "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIA-IMDS-%d\",\n"
             "  \"SecretAccessKey\" : \"SECRET-IMDS-%d\",\n  \"Token\" : \"TOKEN-IMDS-%d\",\n"
             "  \"Expiration\" : \"%s\"\n}",
             n, n, n, expires);
    reply(req, 200, "text/plain", body);
}

static void sts_answer(struct srv *s, struct evhttp_request *req)
{
    int status;
    char expires[32], body[1024];
    int n = next_creds(s, &status, expires, sizeof(expires));
    if (status != 200) {
        reply(req, status, "text/xml",
              "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
              "<Type>Sender</Type><Code>InvalidIdentityToken</Code>"
              "<Message>Token audience &lt;sts&gt; is wrong</Message></Error>"
              "<RequestId>r-1</RequestId></ErrorResponse>");
        return;
    }
    snprintf(
        body, sizeof(body),
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        "<AssumeRoleWithWebIdentityResult><Credentials>"
        "<AccessKeyId>ASIA-STS-%d</AccessKeyId>"
        "<SecretAccessKey>SECRET-STS-%d</SecretAccessKey>"
        "<SessionToken>TOKEN&amp;STS-%d</SessionToken>"
        "<Expiration>%s</Expiration>"
        "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
        n, n, n, expires);
    reply(req, 200, "text/xml", body);
}

static void srv_cb(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    static struct srv_record overflow;
    struct srv_record *r = s->nrequests < SRV_MAX_RECORDS ? &s->records[s->nrequests] : &overflow;
    s->nrequests++;
    memset(r, 0, sizeof(*r));
    r->at = ut_now_s();
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
        snprintf(r->method, sizeof(r->method), "GET");
        break;
    case EVHTTP_REQ_PUT:
        snprintf(r->method, sizeof(r->method), "PUT");
        break;
    case EVHTTP_REQ_POST:
        snprintf(r->method, sizeof(r->method), "POST");
        break;
    default:
        snprintf(r->method, sizeof(r->method), "OTHER");
        break;
    }
    snprintf(r->uri, sizeof(r->uri), "%s", evhttp_request_get_uri(req));
    copy_header(r->authorization, sizeof(r->authorization), req, "Authorization");
    copy_header(r->imds_token, sizeof(r->imds_token), req, "X-aws-ec2-metadata-token");
    copy_header(r->imds_ttl, sizeof(r->imds_ttl), req, "X-aws-ec2-metadata-token-ttl-seconds");
    copy_header(r->content_type, sizeof(r->content_type), req, "Content-Type");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(r->body))
        n = sizeof(r->body) - 1;
    evbuffer_copyout(in, r->body, n);
    r->body[n] = '\0';
    if (s->hold)
        return; /* freed with the server */
    switch (s->kind) {
    case SRV_CONTAINER:
        container_answer(s, req);
        break;
    case SRV_IMDS:
        imds_answer(s, req, r);
        break;
    case SRV_STS:
        sts_answer(s, req);
        break;
    }
}

/* A test's event loop, endpoint and provider. */
struct net {
    struct event_base *base;
    struct srv srv;
    struct lg_conf *conf;
    struct lg_creds_provider *p;
};

static void net_start(struct net *n, enum srv_kind kind)
{
    memset(n, 0, sizeof(*n));
    n->base = event_base_new();
    ck_assert_ptr_nonnull(n->base);
    n->srv.kind = kind;
    n->srv.http = ut_http_listen(n->base, NULL, srv_cb, &n->srv, &n->srv.port);
    snprintf(n->srv.url, sizeof(n->srv.url), "http://127.0.0.1:%d", n->srv.port);
}

/* Create and start the provider with the current environment; refreshes
 * may come 200 ms after a set arrives instead of 10 s. */
static void net_provider(struct net *n)
{
    n->p = provider(n->base, n->conf);
    lg_creds_provider_set_min_refresh_ms(n->p, 200);
    lg_creds_provider_start(n->p);
}

static void net_stop(struct net *n)
{
    lg_creds_provider_free(n->p);
    /* httpc releases cancelled connections on zero-delay timers. */
    ut_loop_settle(n->base);
    evhttp_free(n->srv.http);
    event_base_free(n->base);
    conf_free(n->conf);
    libevent_global_shutdown();
}

/* Run the loop until cond(n, arg) holds or seconds pass; true when it held. */
#define run_until(n, cond, arg, seconds) ut_run_until((n)->base, (cond), (n), (arg), (seconds))
/* Run the loop for seconds. */
#define run_for(n, seconds) ut_run_until((n)->base, NULL, NULL, 0, (seconds))

static bool cond_requests(void *ctx, uint64_t count)
{
    return ((struct net *)ctx)->srv.nrequests >= (int)count;
}

/* A valid set is published whose generation is not old_generation. */
static bool cond_new_creds(void *ctx, uint64_t old_generation)
{
    struct net *n = ctx;
    struct lg_creds *c = lg_creds_provider_get(n->p);
    bool ok = c && c->generation != old_generation;
    lg_creds_unref(c);
    return ok;
}

/* The time the provider expects c to expire, against the endpoint's
 * offset (the endpoint and the test read the same clock). */
static void expect_expires_in(const struct lg_creds *c, long seconds)
{
    long left = (long)(c->expiration - time(NULL));
    ck_assert_msg(left <= seconds && left >= seconds - 5, "expires in %ld s, want %ld", left,
                  seconds);
}

START_TEST(test_net_container_token_file_reread)
{
    struct net n;
    net_start(&n, SRV_CONTAINER);
    const char *token_file = ut_scratch_path("container-token");
    write_file(token_file, "token-one\n");
    n.srv.rewrite_path = token_file;
    n.srv.rewrite_text = "  token-two  \n";
    n.srv.expires_in[0] = 120; /* refreshed at the (test) floor */
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/credentials?id=7", n.srv.url);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "the-file-wins", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token_file, 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/not-this", 1);
    ut_stderr_begin();
    net_provider(&n);
    ck_assert_int_eq(lg_creds_provider_source(n.p), LG_CREDS_CONTAINER);

    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    struct lg_creds *c1 = lg_creds_provider_get(n.p);
    ck_assert_str_eq(n.srv.records[0].method, "GET");
    ck_assert_str_eq(n.srv.records[0].uri, "/v1/credentials?id=7");
    ck_assert_str_eq(n.srv.records[0].authorization, "token-one");
    ck_assert_str_eq(c1->access_key_id, "AKID-CONT-1");
    ck_assert_str_eq(c1->secret_access_key, "SECRET-CONT-1");
    ck_assert_str_eq(c1->session_token, "TOKEN-CONT-1");
    ck_assert_str_eq(c1->source, "container");
    expect_expires_in(c1, 120);

    /* The refresh reads the rotated token file. */
    ck_assert(run_until(&n, cond_new_creds, c1->generation, 5.0));
    struct lg_creds *c2 = lg_creds_provider_get(n.p);
    ck_assert_int_eq(n.srv.nrequests, 2);
    ck_assert_str_eq(n.srv.records[1].authorization, "token-two");
    ck_assert_str_eq(c2->access_key_id, "AKID-CONT-2");
    ck_assert_uint_gt(c2->generation, c1->generation);
    expect_expires_in(c2, 7200);
    /* The old set stays intact for whoever still holds it. */
    ck_assert_str_eq(c1->secret_access_key, "SECRET-CONT-1");
    lg_creds_unref(c1);
    lg_creds_unref(c2);
    /* A 2 h set is not refreshed again any time soon. */
    run_for(&n, 0.5);
    ck_assert_int_eq(n.srv.nrequests, 2);
    net_stop(&n);
    char *log = ut_stderr_end();
    ck_assert_msg(strstr(log, "INFO AWS credentials obtained source=container "
                              "access_key_id=AKID-CONT-1 expires=") != NULL,
                  "%s", log);
    ck_assert_msg(strstr(log, "INFO AWS credentials refreshed source=container "
                              "access_key_id=AKID-CONT-2 expires=") != NULL,
                  "%s", log);
    ck_assert_msg(strstr(log, "SECRET-") == NULL && strstr(log, "TOKEN-CONT") == NULL &&
                      strstr(log, "token-one") == NULL && strstr(log, "token-two") == NULL,
                  "a secret reached the log: %s", log);
    free(log);
}
END_TEST

START_TEST(test_net_container_token_env)
{
    struct net n;
    net_start(&n, SRV_CONTAINER);
    char url[128];
    snprintf(url, sizeof(url), "%s/creds", n.srv.url);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Basic abc==", 1);
    net_provider(&n);
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    ck_assert_str_eq(n.srv.records[0].authorization, "Basic abc==");
    struct lg_creds *c = lg_creds_provider_get(n.p);
    ck_assert_str_eq(c->access_key_id, "AKID-CONT-1");
    lg_creds_unref(c);
    net_stop(&n);
}
END_TEST

START_TEST(test_net_imds_flow_and_refresh)
{
    struct net n;
    net_start(&n, SRV_IMDS);
    n.srv.expires_in[0] = 120;
    char endpoint[96];
    snprintf(endpoint, sizeof(endpoint), "%s/", n.srv.url); /* a trailing slash is dropped */
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint, 1);
    net_provider(&n);
    ck_assert_int_eq(lg_creds_provider_source(n.p), LG_CREDS_IMDS);
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    struct lg_creds *c1 = lg_creds_provider_get(n.p);
    ck_assert_int_eq(n.srv.nrequests, 3);
    const struct srv_record *r = n.srv.records;
    /* The token first, then the role listing and the role, with the token. */
    ck_assert_str_eq(r[0].method, "PUT");
    ck_assert_str_eq(r[0].uri, "/latest/api/token");
    ck_assert_str_eq(r[0].imds_ttl, "21600");
    ck_assert_str_eq(r[0].imds_token, "");
    ck_assert_str_eq(r[1].method, "GET");
    ck_assert_str_eq(r[1].uri, "/latest/meta-data/iam/security-credentials/");
    ck_assert_str_eq(r[1].imds_token, "imds-token-1");
    ck_assert_str_eq(r[2].method, "GET");
    ck_assert_str_eq(r[2].uri, "/latest/meta-data/iam/security-credentials/gw-role");
    ck_assert_str_eq(r[2].imds_token, "imds-token-1");
    ck_assert_str_eq(c1->access_key_id, "ASIA-IMDS-1");
    ck_assert_str_eq(c1->secret_access_key, "SECRET-IMDS-1");
    ck_assert_str_eq(c1->session_token, "TOKEN-IMDS-1");
    ck_assert_str_eq(c1->source, "imds");
    expect_expires_in(c1, 120);

    /* Expiring soon: refreshed, with a new IMDS token. */
    ck_assert(run_until(&n, cond_new_creds, c1->generation, 5.0));
    struct lg_creds *c2 = lg_creds_provider_get(n.p);
    ck_assert_int_eq(n.srv.nrequests, 6);
    ck_assert_str_eq(r[3].method, "PUT");
    ck_assert_str_eq(r[3].uri, "/latest/api/token");
    ck_assert_str_eq(r[4].imds_token, "imds-token-2");
    ck_assert_str_eq(r[5].uri, "/latest/meta-data/iam/security-credentials/gw-role");
    ck_assert_str_eq(r[5].imds_token, "imds-token-2");
    ck_assert_str_eq(c2->access_key_id, "ASIA-IMDS-2");
    ck_assert_uint_gt(c2->generation, c1->generation);
    expect_expires_in(c2, 7200);
    struct lg_creds *again = lg_creds_provider_get(n.p);
    ck_assert_ptr_eq(again, c2);
    lg_creds_unref(again);
    lg_creds_unref(c1);
    lg_creds_unref(c2);
    run_for(&n, 0.5);
    ck_assert_int_eq(n.srv.nrequests, 6);
    net_stop(&n);
}
END_TEST

/* A form field of the recorded body, decoded. */
static void form_field(const char *body, const char *name, char *out, size_t outlen)
{
    struct evkeyvalq q; /* initialised by the parse */
    ck_assert_int_eq(evhttp_parse_query_str(body, &q), 0);
    const char *v = evhttp_find_header(&q, name);
    snprintf(out, outlen, "%s", v ? v : "(absent)");
    evhttp_clear_headers(&q);
}

START_TEST(test_net_sts_flow_and_token_reread)
{
    struct net n;
    net_start(&n, SRV_STS);
    const char *token_file = ut_scratch_path("web-identity-token");
    write_file(token_file, "eyJhbGciOi.payload-1.sig_1\n");
    n.srv.rewrite_path = token_file;
    n.srv.rewrite_text = "eyJhbGciOi.payload-2.sig+/2";
    n.srv.expires_in[0] = 120;
    char endpoint[96];
    snprintf(endpoint, sizeof(endpoint), "%s/", n.srv.url);
    setenv("AWS_ENDPOINT_URL_STS", endpoint, 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token_file, 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw-role", 1);
    setenv("AWS_ROLE_SESSION_NAME", "gw session@1", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9", 1);
    ut_stderr_begin();
    net_provider(&n);
    ck_assert_int_eq(lg_creds_provider_source(n.p), LG_CREDS_WEB_IDENTITY);
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    struct lg_creds *c1 = lg_creds_provider_get(n.p);
    const struct srv_record *r = n.srv.records;
    ck_assert_str_eq(r[0].method, "POST");
    ck_assert_str_eq(r[0].uri, "/");
    ck_assert_str_eq(r[0].authorization, ""); /* unsigned */
    ck_assert_str_eq(r[0].content_type, "application/x-www-form-urlencoded; charset=utf-8");
    ck_assert_str_eq(r[0].body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                                "&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fgw-role"
                                "&RoleSessionName=gw%20session%401"
                                "&WebIdentityToken=eyJhbGciOi.payload-1.sig_1");
    char v[256];
    form_field(r[0].body, "RoleArn", v, sizeof(v));
    ck_assert_str_eq(v, "arn:aws:iam::123456789012:role/gw-role");
    form_field(r[0].body, "RoleSessionName", v, sizeof(v));
    ck_assert_str_eq(v, "gw session@1");
    ck_assert_str_eq(c1->access_key_id, "ASIA-STS-1");
    ck_assert_str_eq(c1->secret_access_key, "SECRET-STS-1");
    ck_assert_str_eq(c1->session_token, "TOKEN&STS-1");
    ck_assert_str_eq(c1->source, "web-identity");
    expect_expires_in(c1, 120);

    ck_assert(run_until(&n, cond_new_creds, c1->generation, 5.0));
    struct lg_creds *c2 = lg_creds_provider_get(n.p);
    ck_assert_int_eq(n.srv.nrequests, 2);
    /* The rotated token, encoded ('+' and '/' escaped). */
    form_field(r[1].body, "WebIdentityToken", v, sizeof(v));
    ck_assert_str_eq(v, "eyJhbGciOi.payload-2.sig+/2");
    ck_assert_ptr_nonnull(strstr(r[1].body, "&WebIdentityToken=eyJhbGciOi.payload-2.sig%2B%2F2"));
    ck_assert_str_eq(c2->access_key_id, "ASIA-STS-2");
    ck_assert_uint_gt(c2->generation, c1->generation);
    lg_creds_unref(c1);
    lg_creds_unref(c2);
    net_stop(&n);
    char *log = ut_stderr_end();
    ck_assert_msg(strstr(log, "payload-") == NULL && strstr(log, "SECRET-STS") == NULL &&
                      strstr(log, "TOKEN&STS") == NULL,
                  "a secret reached the log: %s", log);
    free(log);
}
END_TEST

START_TEST(test_net_sts_error_then_success)
{
    struct net n;
    net_start(&n, SRV_STS);
    const char *token_file = ut_scratch_path("web-identity-token");
    write_file(token_file, "eyJ.secret-token.sig");
    n.srv.status[0] = 400;
    setenv("AWS_ENDPOINT_URL_STS", n.srv.url, 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token_file, 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw-role", 1);
    ut_stderr_begin();
    net_provider(&n);
    ck_assert(run_until(&n, cond_requests, 1, 5.0));
    run_for(&n, 0.2);
    ck_assert_ptr_null(lg_creds_provider_get(n.p));
    /* The default session name carries the pid. */
    char v[64], want[64];
    form_field(n.srv.records[0].body, "RoleSessionName", v, sizeof(v));
    snprintf(want, sizeof(want), "lambdagate-%ld", (long)getpid());
    ck_assert_str_eq(v, want);
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    ck_assert_int_eq(n.srv.nrequests, 2);
    double gap = n.srv.records[1].at - n.srv.records[0].at;
    ck_assert_msg(gap >= 0.9 && gap < 1.8, "retried after %.2f s", gap);
    struct lg_creds *c = lg_creds_provider_get(n.p);
    ck_assert_str_eq(c->access_key_id, "ASIA-STS-2");
    lg_creds_unref(c);
    net_stop(&n);
    char *log = ut_stderr_end();
    ck_assert_msg(strstr(log, "WARN AWS credentials fetch failed source=web-identity "
                              "reason=\"STS answered HTTP 400: STS error InvalidIdentityToken: "
                              "Token audience <sts> is wrong\" retry_in_ms=1000") != NULL,
                  "%s", log);
    ck_assert_msg(strstr(log, "INFO AWS credentials obtained source=web-identity "
                              "access_key_id=ASIA-STS-2") != NULL,
                  "%s", log);
    ck_assert_msg(strstr(log, "secret-token") == NULL, "the token reached the log: %s", log);
    free(log);
}
END_TEST

/* The endpoint fails three times after a first good answer: the good set
 * is kept while it is valid, attempts back off 1 s, 2 s, 4 s, and the
 * recovery publishes a new set. */
START_TEST(test_net_failure_backoff_recovery)
{
    struct net n;
    net_start(&n, SRV_CONTAINER);
    n.srv.expires_in[0] = 33; /* valid (beyond the 30 s margin) for 2 to 3 s */
    n.srv.status[1] = n.srv.status[2] = n.srv.status[3] = 500;
    char url[128];
    snprintf(url, sizeof(url), "%s/creds", n.srv.url);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    ut_stderr_begin();
    net_provider(&n);
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    struct lg_creds *c1 = lg_creds_provider_get(n.p);
    ck_assert_str_eq(c1->access_key_id, "AKID-CONT-1");

    /* Two failures later (about 1.2 s in) the first set is still served. */
    ck_assert(run_until(&n, cond_requests, 3, 5.0));
    run_for(&n, 0.05);
    struct lg_creds *c = lg_creds_provider_get(n.p);
    ck_assert_ptr_eq(c, c1);
    lg_creds_unref(c);

    /* At the third failure (about 3.2 s in) it is within 30 s of expiry:
     * no longer handed out. */
    ck_assert(run_until(&n, cond_requests, 4, 5.0));
    run_for(&n, 0.05);
    ck_assert_ptr_null(lg_creds_provider_get(n.p));

    ck_assert(run_until(&n, cond_new_creds, c1->generation, 8.0));
    struct lg_creds *c2 = lg_creds_provider_get(n.p);
    ck_assert_int_eq(n.srv.nrequests, 5);
    ck_assert_str_eq(c2->access_key_id, "AKID-CONT-5");
    ck_assert_uint_gt(c2->generation, c1->generation);
    const struct srv_record *r = n.srv.records;
    double gaps[3] = {r[2].at - r[1].at, r[3].at - r[2].at, r[4].at - r[3].at};
    ck_assert_msg(gaps[0] >= 0.9 && gaps[0] < 1.6, "first retry after %.2f s", gaps[0]);
    ck_assert_msg(gaps[1] >= 1.9 && gaps[1] < 2.6, "second retry after %.2f s", gaps[1]);
    ck_assert_msg(gaps[2] >= 3.9 && gaps[2] < 4.6, "third retry after %.2f s", gaps[2]);
    lg_creds_unref(c1);
    lg_creds_unref(c2);
    net_stop(&n);
    char *log = ut_stderr_end();
    ck_assert_int_eq(count_substr(log, "WARN AWS credentials fetch failed source=container "
                                       "reason=\"container endpoint answered HTTP 500\""),
                     3);
    ck_assert_ptr_nonnull(strstr(log, "retry_in_ms=1000"));
    ck_assert_ptr_nonnull(strstr(log, "retry_in_ms=2000"));
    ck_assert_ptr_nonnull(strstr(log, "retry_in_ms=4000"));
    ck_assert_ptr_nonnull(strstr(log, "INFO AWS credentials refreshed source=container "
                                      "access_key_id=AKID-CONT-5"));
    free(log);
}
END_TEST

START_TEST(test_net_expires_too_soon)
{
    struct net n;
    net_start(&n, SRV_CONTAINER);
    n.srv.expires_in[0] = 20; /* inside the 30 s margin */
    char url[128];
    snprintf(url, sizeof(url), "%s/creds", n.srv.url);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    ut_stderr_begin();
    net_provider(&n);
    ck_assert(run_until(&n, cond_requests, 1, 5.0));
    run_for(&n, 0.3);
    ck_assert_ptr_null(lg_creds_provider_get(n.p));
    ck_assert(run_until(&n, cond_new_creds, 0, 5.0));
    struct lg_creds *c = lg_creds_provider_get(n.p);
    ck_assert_str_eq(c->access_key_id, "AKID-CONT-2");
    lg_creds_unref(c);
    net_stop(&n);
    char *log = ut_stderr_end();
    ck_assert_msg(strstr(log, "reason=\"the credentials expire too soon (") != NULL, "%s", log);
    free(log);
}
END_TEST

/* An endpoint that never answers: the 1 s IMDS timeout fails the attempt,
 * and freeing the provider with the retry in flight cancels it cleanly
 * (LeakSanitizer checks nothing is left). */
START_TEST(test_net_imds_timeout_and_free_in_flight)
{
    struct net n;
    net_start(&n, SRV_IMDS);
    n.srv.hold = true;
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", n.srv.url, 1);
    ut_stderr_begin();
    net_provider(&n);
    double start = ut_now_s();
    ck_assert(run_until(&n, cond_requests, 2, 5.0));
    double took = ut_now_s() - start;
    /* 1 s timeout, then 1 s backoff. */
    ck_assert_msg(took >= 1.8 && took < 3.0, "second attempt after %.2f s", took);
    ck_assert_ptr_null(lg_creds_provider_get(n.p));
    net_stop(&n);
    char *log = ut_stderr_end();
    char want[200];
    snprintf(want, sizeof(want),
             "reason=\"IMDS token request: no answer from 127.0.0.1:%d in time\" "
             "retry_in_ms=1000",
             n.srv.port);
    ck_assert_msg(strstr(log, want) != NULL, "%s", log);
    free(log);
}
END_TEST

START_TEST(test_net_connection_refused)
{
    /* A port that was just free: nothing listens there. */
    int port = ut_free_port();

    struct net n;
    net_start(&n, SRV_CONTAINER);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/creds", port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", ut_scratch_path("missing-token"), 1);
    ut_stderr_begin();
    net_provider(&n);
    run_for(&n, 0.3);
    ck_assert_ptr_null(lg_creds_provider_get(n.p));
    /* The token file appears: the next attempt reaches the closed port. */
    write_file(ut_scratch_path("missing-token"), "tok");
    run_for(&n, 1.2);
    net_stop(&n);
    char *log = ut_stderr_end();
    char want[200];
    snprintf(want, sizeof(want),
             "reason=\"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s does not exist\" "
             "retry_in_ms=1000",
             ut_scratch_path("missing-token"));
    ck_assert_msg(strstr(log, want) != NULL, "%s", log);
    snprintf(want, sizeof(want), "reason=\"container endpoint: cannot connect to 127.0.0.1:%d",
             port);
    ck_assert_msg(strstr(log, want) != NULL, "%s", log);
    ck_assert_ptr_nonnull(strstr(log, "retry_in_ms=2000"));
    free(log);
}
END_TEST

/* ---------------------------------------------------------------------- */

int main(void)
{
    lg_tls_init();
    Suite *s = suite_create("awscreds");

    TCase *tc = tcase_create("parsers");
    tcase_set_timeout(tc, 10);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_time_valid);
    tcase_add_test(tc, test_time_invalid);
    tcase_add_test(tc, test_refresh_delay);
    tcase_add_test(tc, test_creds_new_ref_unref);
    tcase_add_test(tc, test_shared_profiles);
    tcase_add_test(tc, test_shared_incomplete_profiles);
    tcase_add_test(tc, test_shared_malformed);
    tcase_add_test(tc, test_json_container);
    tcase_add_test(tc, test_json_imds);
    tcase_add_test(tc, test_json_rejected);
    tcase_add_test(tc, test_json_hostile);
    tcase_add_test(tc, test_sts_success);
    tcase_add_test(tc, test_sts_entities);
    tcase_add_test(tc, test_sts_error_document);
    tcase_add_test(tc, test_sts_rejected);
    tcase_add_test(tc, test_sts_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("chain");
    tcase_set_timeout(tc, 10);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_chain_config_beats_env);
    tcase_add_test(tc, test_chain_env_beats_file);
    tcase_add_test(tc, test_chain_env_incomplete);
    tcase_add_test(tc, test_chain_file_profile);
    tcase_add_test(tc, test_chain_file_in_home);
    tcase_add_test(tc, test_chain_file_unknown_profile_falls_through);
    tcase_add_test(tc, test_chain_missing_file_falls_through);
    tcase_add_test(tc, test_chain_dynamic_order);
    tcase_add_test(tc, test_chain_web_identity_errors);
    tcase_add_test(tc, test_chain_container_uri_rules);
    suite_add_tcase(s, tc);

    tc = tcase_create("network");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_net_container_token_file_reread);
    tcase_add_test(tc, test_net_container_token_env);
    tcase_add_test(tc, test_net_imds_flow_and_refresh);
    tcase_add_test(tc, test_net_sts_flow_and_token_reread);
    tcase_add_test(tc, test_net_sts_error_then_success);
    tcase_add_test(tc, test_net_failure_backoff_recovery);
    tcase_add_test(tc, test_net_expires_too_soon);
    tcase_add_test(tc, test_net_imds_timeout_and_free_in_flight);
    tcase_add_test(tc, test_net_connection_refused);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
