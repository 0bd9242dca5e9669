/* event.h - API Gateway proxy events (payload 1.0 and 2.0) and proxy responses. */
#ifndef LG_EVENT_H
#define LG_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lambdagate/buf.h"
#include "lambdagate/conf.h"
#include "lambdagate/http.h"
#include "lambdagate/lambdagate.h"
#include "lambdagate/router.h"

/* The caller's identity, as the authenticators found it (CONTRACT section 4). */
enum lg_identity_kind {
    LG_IDENTITY_NONE = 0,
    LG_IDENTITY_JWT,
    LG_IDENTITY_API_KEY,
};

struct lg_event_claim {
    const char *name;
    const char *value; /* rendered as a string, as API Gateway does */
};

struct lg_event_identity {
    enum lg_identity_kind kind;
    /* JWT */
    const struct lg_event_claim *claims;
    size_t nclaims;
    const char *const *scopes; /* NULL = the token has no scope: "scopes": null */
    size_t nscopes;
    /* The same claims and scopes already rendered as the authorizer's
     * {"claims":{...},"scopes":...} object (by lg_event_render_jwt, once
     * per verified token), or NULL: then they are rendered here. */
    const char *jwt_json;
    size_t jwt_json_len;
    /* API key */
    const char *api_key;    /* the key as the client sent it */
    const char *api_key_id; /* its id from the keys file */
};

/* Everything the event is built from. All borrowed. */
struct lg_event_request {
    const char *method; /* the method put in the event */
    size_t method_len;
    const char *raw_path; /* as received, without the query */
    size_t raw_path_len;
    const char *raw_query; /* as received, without '?'; NULL or "" when none */
    size_t raw_query_len;
    const struct lg_http_header *headers; /* as received, in order */
    size_t nheaders;
    const void *body;
    size_t body_len;
    const char *source_ip;
    const char *protocol; /* "HTTP/1.1" or "HTTP/1.0" */
    /* As API Gateway does, the event's headers carry x-forwarded-for (the
     * client's own X-Forwarded-For, if any, then source_ip),
     * x-forwarded-proto (scheme) and x-forwarded-port (server_port); the
     * client's own x-forwarded-proto/-port are replaced. */
    const char *scheme; /* "http" or "https" */
    unsigned server_port;
    const char *request_id;
    int64_t time_ms; /* request arrival, ms since the epoch */
    const struct lg_conf_route *route;
    const struct lg_router_match *match;      /* path parameters */
    const struct lg_event_identity *identity; /* NULL = none */
};

/* Build the proxy event for route->payload_format and append its JSON to
 * out. Request headers that are hop-by-hop are left out; in format 2.0 the
 * Cookie headers become "cookies" (split on ";") instead of a header. Bodies with a
 * textual Content-Type (CONTRACT section 8) that are valid UTF-8 go as
 * text; every other non-empty body as base64 with isBase64Encoded true.
 * Query values are percent-decoded ('+' as space); a malformed escape keeps
 * its text as sent. -1 with err set when a header, path or query is not
 * valid UTF-8 (the caller answers 400) or out's bound is reached. */
int lg_event_build(const struct lg_event_request *in, struct lg_buf *out, char *err,
                   size_t errlen) LG_WUR;

/* Render a JWT identity's {"claims":{...},"scopes":...} object into out
 * (for lg_event_identity.jwt_json). -1 when a claim is not valid UTF-8 or
 * out is full. */
int lg_event_render_jwt(const struct lg_event_identity *id, struct lg_buf *out) LG_WUR;

/* True when a request body with this Content-Type goes to Lambda as text. */
bool lg_event_is_text_type(const char *content_type, size_t len);

/* A function's proxy response, validated and ready to send. */
struct lg_event_response {
    int status;
    /* Headers to send, in order: one allocation holding the array and
     * then the names and values (NUL-terminated), freed with the
     * response. Hop-by-hop and Content-Length dropped; Set-Cookie
     * from "cookies" included; Content-Type present (application/json when
     * the function gave none). */
    struct lg_http_header *headers;
    size_t nheaders;
    struct lg_buf body; /* decoded when isBase64Encoded */
};

/* Parse a RequestResponse payload per the route's format (CONTRACT
 * section 5): statusCode (integer 100-599, or a string of one), headers
 * (string, number or boolean values; null skipped), multiValueHeaders
 * (arrays of those; overrides headers of the same name), cookies, body,
 * isBase64Encoded. With format 2.0, valid JSON without statusCode is a 200
 * application/json answer whose body is the payload (a JSON string: its
 * contents). Header names must be tokens and values free of CR, LF and NUL.
 * Returns 0, or -1 with err set (malformed: the caller answers 502).
 * out is always safe to pass to lg_event_response_free(). */
int lg_event_parse_response(enum lg_payload_format format, const char *payload, size_t len,
                            struct lg_event_response *out, char *err, size_t errlen) LG_WUR;
void lg_event_response_free(struct lg_event_response *r);

/* "12/Mar/2020:19:03:58 +0000" for time_ms into out (27 bytes). */
void lg_event_format_time(int64_t time_ms, char out[32]);

#endif
