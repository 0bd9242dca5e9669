/* tls.h - OpenSSL server and client contexts, verification and error draining. */
#ifndef LG_TLS_H
#define LG_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "lambdagate/lambdagate.h"

/* Call once before threads start: OpenSSL 3 initialises itself, this only
 * sets up what lambdagate needs (and is safe to call twice). */
void lg_tls_init(void);

/* A server context for a TLS listener: TLS 1.2 and 1.3 only, the
 * certificate chain (PEM, leaf first) and its private key, which must
 * match; ALPN selects "http/1.1" (and refuses h2-only clients). Caller frees
 * with SSL_CTX_free(). NULL with err set on failure. */
SSL_CTX *lg_tls_server_ctx_new(const char *certificate_file, const char *private_key_file,
                               char *err, size_t errlen);

/* A client context for HTTPS upstreams: TLS 1.2 minimum, peer verification
 * against the system CAs plus ca_file (may be NULL), unexpected EOF
 * tolerated (HTTP framing detects truncation). Host names are checked per
 * connection by lg_tls_client_ssl_new(). Caller frees with SSL_CTX_free(). */
SSL_CTX *lg_tls_client_ctx_new(const char *ca_file, char *err, size_t errlen);

/* A client SSL for host: SNI (unless host is an IP literal) and host-name
 * (or IP) verification. Caller frees with SSL_free() (or hands it to a
 * bufferevent that frees it). NULL with err set on failure. */
SSL *lg_tls_client_ssl_new(SSL_CTX *ctx, const char *host, char *err, size_t errlen);

/* Append OpenSSL's queued errors (and empty the queue) to err after
 * prefix: "prefix: error:...". */
void lg_tls_error(char *err, size_t errlen, const char *prefix);

#endif
