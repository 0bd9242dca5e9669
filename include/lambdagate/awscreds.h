/* awscreds.h - AWS credential chain and background refresh. */
#ifndef LG_AWSCREDS_H
#define LG_AWSCREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lambdagate/conf.h"
#include "lambdagate/lambdagate.h"

struct event_base;
struct evdns_base;

/* One set of credentials. Immutable once published; shared between threads
 * by reference count. */
struct lg_creds {
    int refcount; /* atomic */
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL when none */
    time_t expiration;   /* 0 = does not expire */
    uint64_t generation; /* unique per set, for the signing-key cache */
    const char
        *source; /* "config", "environment", "shared-file", "container", "web-identity", "imds" */
};

/* A new set with a fresh generation (strings copied); NULL on no memory.
 * Caller releases with lg_creds_unref(). */
struct lg_creds *lg_creds_new(const char *access_key_id, const char *secret_access_key,
                              const char *session_token, time_t expiration, const char *source);
struct lg_creds *lg_creds_ref(struct lg_creds *c);
/* Drop a reference; the last one wipes the secret and frees. Accepts NULL. */
void lg_creds_unref(struct lg_creds *c);

enum lg_creds_source {
    LG_CREDS_NONE = 0,
    LG_CREDS_CONFIG,
    LG_CREDS_ENV,
    LG_CREDS_SHARED_FILE,
    LG_CREDS_CONTAINER,
    LG_CREDS_WEB_IDENTITY,
    LG_CREDS_IMDS,
};

struct lg_creds_provider;

/* Choose the source, in this order: lambda.credentials from the config;
 * AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); the
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials) when it has the profile AWS_PROFILE (or "default");
 * the container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI or
 * _RELATIVE_URI, token from AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE));
 * web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, STS at
 * AWS_ENDPOINT_URL_STS or sts.<region>.amazonaws.com); else EC2 IMDSv2
 * (AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254, unless
 * AWS_EC2_METADATA_DISABLED=true). Static sources are read now. base runs
 * the fetches and refreshes (one thread: the control loop). conf is
 * borrowed for this call only. NULL with err set when a static source is
 * broken (e.g. the profile has no secret). */
struct lg_creds_provider *lg_creds_provider_new(struct event_base *base, struct evdns_base *dns,
                                                const struct lg_conf *conf, char *err,
                                                size_t errlen);
/* Start fetching (dynamic sources); refreshes then run in the background
 * before expiry, with backoff on failure, keeping the last good set while it
 * is valid. */
void lg_creds_provider_start(struct lg_creds_provider *p);
/* The current valid credentials (a new reference; caller unrefs), or NULL
 * when none are available yet or they expired. A set that expires within
 * LG_CREDS_EXPIRY_MARGIN_S counts as expired, so that a request signed
 * with it does not reach AWS after the expiry. Thread-safe, never blocks
 * on I/O. */
struct lg_creds *lg_creds_provider_get(struct lg_creds_provider *p);
enum lg_creds_source lg_creds_provider_source(const struct lg_creds_provider *p);
/* Stop and free; accepts NULL. Call on the thread that runs base. A fetch
 * in flight is cancelled; httpc releases its connection on a zero-delay
 * timer, so run base once more before freeing it. */
void lg_creds_provider_free(struct lg_creds_provider *p);

/* Seconds before expiry within which a set is no longer handed out. */
#define LG_CREDS_EXPIRY_MARGIN_S 30

/* Milliseconds from now until a set that expires at expiration should be
 * refreshed: at expiration - 5 min, or expiration - 15 min when the set is
 * valid for more than an hour from now, and never sooner than 10 s from
 * now. -1 when expiration is 0 (never expires). Exposed for tests. */
int64_t lg_creds_refresh_delay_ms(time_t now, time_t expiration);
/* Tests only: replace the 10 s floor of the refresh delay, so that a test
 * can watch a refresh happen without waiting. */
void lg_creds_provider_set_min_refresh_ms(struct lg_creds_provider *p, int64_t ms);

/* Parsers, exposed for tests. Each returns a new set or NULL with err. */
/* INI text of a shared credentials file: aws_access_key_id,
 * aws_secret_access_key, aws_session_token in [profile]. */
struct lg_creds *lg_creds_parse_shared_file(const char *text, size_t len, const char *profile,
                                            char *err, size_t errlen);
/* Container / IMDS JSON: AccessKeyId, SecretAccessKey, Token, Expiration. */
struct lg_creds *lg_creds_parse_json(const char *text, size_t len, const char *source, char *err,
                                     size_t errlen);
/* STS AssumeRoleWithWebIdentity XML answer. */
struct lg_creds *lg_creds_parse_sts_xml(const char *text, size_t len, char *err, size_t errlen);
/* ISO 8601 UTC time "2026-11-26T18:00:00Z" (fraction allowed) to time_t. */
int lg_creds_parse_time(const char *text, time_t *out) LG_WUR;

#endif
