/* conf.h - the configuration file (CONTRACT section 3) as an immutable struct. */
#ifndef LG_CONF_H
#define LG_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lambdagate/lambdagate.h"

struct lg_router;
struct ssl_ctx_st;
struct lg_jwks;
struct lg_apikeys;

/* A token bucket setting: tokens per second (fractional allowed, > 0) and
 * bucket size (integer >= 1). */
struct lg_conf_rate {
    double rate;
    int64_t burst;
};

/* How a setting that may be absent, null or an object was given. */
enum lg_conf_presence {
    LG_CONF_ABSENT = 0, /* key not in the file: the default applies */
    LG_CONF_NULL,       /* explicitly null: turned off */
    LG_CONF_SET,        /* an object was given */
};

/* An IPv4 or IPv6 network from a CIDR string ("10.0.0.0/8", "::1/128",
 * "192.0.2.7" = /32). addr holds the network with host bits cleared;
 * IPv4 uses the first 4 bytes. */
struct lg_conf_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int prefix;
};

/* A numeric socket address given as "IPv4:port" or "[IPv6]:port". */
struct lg_conf_address {
    char *text; /* as written */
    struct sockaddr_storage sa;
    socklen_t salen;
};

struct lg_conf_listen {
    struct lg_conf_address address;
    bool tls;
    char *certificate; /* PEM chain, leaf first; NULL without tls */
    char *private_key;
    struct ssl_ctx_st *ssl_ctx; /* built at load time; NULL without tls */
    int line;
};

/* A parsed Lambda endpoint URL: http:// or https://, host, optional port,
 * no path other than "/", no query. */
struct lg_conf_endpoint {
    char *url;
    bool tls;
    char *host;      /* name or address, without brackets */
    uint16_t port;   /* 443 / 80 by default */
    char *authority; /* value of the Host header: host, or host:port when not default */
};

struct lg_conf_lambda {
    char *region;                     /* default "us-east-1" */
    bool endpoint_set;                /* "endpoint" given: every route uses it */
    struct lg_conf_endpoint endpoint; /* given, or derived from region */
    bool credentials_set;
    char *access_key_id; /* from "credentials"; NULL unless credentials_set */
    char *secret_access_key;
    char *session_token;        /* optional within credentials */
    char *ca_file;              /* NULL = system CAs only */
    int64_t timeout_ms;         /* default 29000 */
    int64_t max_connections;    /* per worker, default 64 */
    struct ssl_ctx_st *ssl_ctx; /* client context: system CAs + ca_file, verify peer */
};

struct lg_conf_redis {
    char *host;         /* default "127.0.0.1" */
    int port;           /* default 6379 */
    char *password;     /* NULL = no AUTH */
    int db;             /* default 0 */
    int64_t timeout_ms; /* default 100 */
    char *prefix;       /* default "lg:" */
};

struct lg_conf_limits {
    int64_t max_connections;        /* 10000 */
    int64_t max_connections_per_ip; /* 256 */
    int64_t max_header_bytes;       /* 16384 */
    int64_t max_body_bytes;         /* 6291456 */
    int64_t header_timeout_ms;      /* 10000 */
    int64_t body_timeout_ms;        /* 30000 */
    int64_t idle_timeout_ms;        /* 60000 */
    int64_t max_inflight;           /* 1024 */
    bool per_ip_enabled;            /* default on: rate 100, burst 200; null = off */
    struct lg_conf_rate per_ip;
    struct lg_conf_cidr *allow;
    size_t nallow;
    struct lg_conf_cidr *deny;
    size_t ndeny;
};

struct lg_conf_jwt {
    char *issuer;
    char **audience;
    size_t naudience;
    char *jwks_file; /* exactly one of jwks_file and jwks_url */
    char *jwks_url;
    int64_t leeway_s;     /* default 60 */
    char *identity_claim; /* default "sub" */
    char *token_use;      /* NULL = not checked; "id" or "access" */
    char *ca_file;        /* extra CA bundle for jwks_url; NULL = system CAs only */
    /* Loaded with the config: the keys of jwks_file (NULL with jwks_url),
     * and the client TLS context for jwks_url (NULL with jwks_file). */
    struct lg_jwks *keys;
    struct ssl_ctx_st *ssl_ctx;
};

struct lg_conf_auth {
    struct lg_conf_jwt *jwt;     /* NULL = no JWT authenticator */
    char *api_keys_file;         /* NULL = no API keys */
    struct lg_apikeys *api_keys; /* the file's keys, loaded with the config */
};

enum lg_conf_store_kind {
    LG_STORE_LOCAL = 0, /* throttle: "local"; cache: "memory" */
    LG_STORE_REDIS,
};

struct lg_conf_throttle {
    enum lg_conf_store_kind store;
    bool default_enabled; /* default rate 10 burst 20; null = off */
    struct lg_conf_rate default_rate;
    bool global_enabled; /* default off (null) */
    struct lg_conf_rate global;
};

enum lg_conf_invalidation {
    LG_INVALIDATE_AUTHENTICATED = 0,
    LG_INVALIDATE_ANYONE,
    LG_INVALIDATE_NEVER,
};

struct lg_conf_cache {
    enum lg_conf_store_kind store;
    int64_t max_bytes; /* 67108864 */
    int64_t ttl_s;     /* 300, 0..3600 */
    enum lg_conf_invalidation invalidation;
};

struct lg_conf_route_cache {
    int64_t ttl_s;    /* default: cache.ttl_s */
    char **key_query; /* names as written */
    size_t nkey_query;
    char **key_headers; /* lowercased */
    size_t nkey_headers;
    bool per_user;
    int64_t stale_if_error_s; /* default 0 */
};

struct lg_conf_cors {
    bool any_origin; /* allow_origins ["*"] */
    char **allow_origins;
    size_t nallow_origins;
    char *allow_methods; /* joined with ", " for the header; NULL when empty */
    char **methods;      /* each method, uppercase ("*" allowed) */
    size_t nmethods;
    char *allow_headers;  /* joined with ", ", lowercased; NULL when empty */
    char *expose_headers; /* joined with ", "; NULL when empty */
    int64_t max_age_s;    /* default 0 = header not sent */
    bool allow_credentials;
};

enum lg_invocation {
    LG_INVOKE_SYNC = 0, /* RequestResponse */
    LG_INVOKE_ASYNC,    /* Event */
};

enum lg_payload_format {
    LG_PAYLOAD_V2 = 0, /* "2.0", the default */
    LG_PAYLOAD_V1,     /* "1.0" */
};

enum lg_auth_kind {
    LG_AUTH_NONE = 0,
    LG_AUTH_JWT,
    LG_AUTH_API_KEY,
};

struct lg_conf_route {
    char *method;    /* uppercase method or "ANY" */
    char *path;      /* the template as written */
    char *route_key; /* "METHOD /path" as API Gateway's routeKey */
    char *function;  /* as written: name, name:alias, partial or full ARN */
    /* The function as it appears in the Invoke request line,
     * percent-encoded once ("arn%3Aaws%3Alambda%3A..."). */
    char *function_path;
    /* The Invoke request path: "/2015-03-31/functions/<function_path>/invocations". */
    char *invoke_path;
    /* The raw query of the Invoke request line ("Qualifier=..."), or NULL. */
    char *invoke_query;
    char *qualifier;  /* NULL when not set */
    char *region;     /* from the ARN when it names one, else lambda.region */
    char *account_id; /* from the ARN when it names one, else NULL */
    const struct lg_conf_endpoint *endpoint; /* borrowed from the conf */
    enum lg_invocation invocation;
    enum lg_payload_format payload_format;
    enum lg_auth_kind auth;
    char **scopes;
    size_t nscopes;
    enum lg_conf_presence throttle_presence;
    struct lg_conf_rate throttle;      /* meaningful when throttle_presence == LG_CONF_SET */
    struct lg_conf_route_cache *cache; /* NULL = not cached */
    int64_t timeout_ms;                /* default: lambda.timeout_ms */
    struct lg_conf_cors *cors;         /* NULL = no CORS */
    size_t index;                      /* position in routes[] */
    int line;
};

/* The whole configuration. Built once by lg_conf_load(), never changed
 * afterwards; a reload builds a new one and swaps the pointer. Shared by
 * threads through the reference count. */
struct lg_conf {
    int refcount; /* atomic; see lg_conf_ref()/lg_conf_unref() */
    char *path;   /* the file it came from (absolute when loaded from a file) */

    struct lg_conf_listen *listen;
    size_t nlisten;
    bool admin_set;
    struct lg_conf_address admin; /* valid when admin_set */
    int64_t workers;              /* as written; 0 = one per core */
    int64_t shutdown_timeout_ms;  /* 30000 */
    char *access_log;             /* "-", "off" or a path */
    char *pid_file;               /* absolute path, or NULL: none */
    char *user;                   /* switch to this user after binding, or NULL */

    struct lg_conf_lambda lambda;
    struct lg_conf_redis redis;
    struct lg_conf_limits limits;
    struct lg_conf_auth auth;
    struct lg_conf_throttle throttle;
    struct lg_conf_cache cache;

    struct lg_conf_route *routes;
    size_t nroutes;
    /* Distinct Lambda endpoints used by the routes (one when lambda.endpoint
     * is set, else one per region). Routes point into this array. */
    struct lg_conf_endpoint *endpoints;
    size_t nendpoints;

    struct lg_router *router; /* routes by method and path template */
};

/* One error found while loading: "FILE:LINE: message". */
struct lg_conf_error {
    char *file; /* NULL: the config file; else another file it names (owned) */
    int line;   /* 0 when the error is not tied to a line */
    char message[LG_ERR_LEN];
};

struct lg_conf_errors {
    struct lg_conf_error *items;
    size_t count;
};

/* Load and validate the file at path. Returns the config (refcount 1,
 * caller releases with lg_conf_unref()) or NULL; on NULL every error found
 * is in *errors (caller frees with lg_conf_errors_free()). All errors are
 * collected, not only the first. TLS contexts are built here, so a bad
 * certificate is a load error. Relative file paths in the file (TLS files,
 * lambda.ca_file, auth.jwt.jwks_file, auth.api_keys.file, an access_log
 * path) are resolved against the directory of path, and the struct holds
 * the resolved paths. */
struct lg_conf *lg_conf_load(const char *path, struct lg_conf_errors *errors);
/* The same from text in memory; path is used in messages only. */
struct lg_conf *lg_conf_load_text(const char *path, const char *text, size_t len,
                                  struct lg_conf_errors *errors);
/* Print every error as "FILE:LINE: message" (or "FILE: message") to fp;
 * FILE is path unless the error is in a file that the config names (the API
 * keys file). */
void lg_conf_errors_print(const struct lg_conf_errors *errors, const char *path, void *fp);
void lg_conf_errors_free(struct lg_conf_errors *errors);

/* Take another reference (thread-safe). */
struct lg_conf *lg_conf_ref(struct lg_conf *conf);
/* Drop a reference; the last one frees everything. Accepts NULL. */
void lg_conf_unref(struct lg_conf *conf);

/* Parse "IPv4:port" / "[IPv6]:port" into addr (text copied). -1 with err set
 * on a malformed address or port. Exposed for tests. */
int lg_conf_parse_address(const char *text, struct lg_conf_address *addr, char *err,
                          size_t errlen) LG_WUR;
/* Parse a CIDR string. Exposed for tests. */
int lg_conf_parse_cidr(const char *text, struct lg_conf_cidr *cidr, char *err,
                       size_t errlen) LG_WUR;
/* True when the address sa lies inside cidr. */
bool lg_conf_cidr_contains(const struct lg_conf_cidr *cidr, const struct sockaddr *sa);

#endif
