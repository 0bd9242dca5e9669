/* tls.c - server and client SSL_CTX, peer verification, OpenSSL error draining. */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lambdagate/tls.h"

void lg_tls_init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

void lg_tls_error(char *err, size_t errlen, const char *prefix)
{
    size_t off = (size_t)snprintf(err, errlen, "%s", prefix);
    unsigned long e;
    bool first = true;
    while ((e = ERR_get_error()) != 0) {
        if (off + 8 >= errlen)
            continue; /* keep draining */
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        off += (size_t)snprintf(err + off, errlen - off, "%s%s", first ? ": " : "; ", buf);
        first = false;
    }
}

/* ALPN: we speak HTTP/1.1 only. A client offering only h2 gets no ALPN
 * match, which fails its handshake with a clear alert rather than a
 * protocol mismatch later. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *selected;
    if (SSL_select_next_proto(&selected, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *lg_tls_server_ctx_new(const char *certificate_file, const char *private_key_file,
                               char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        lg_tls_error(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate_file) != 1) {
        char prefix[LG_ERR_LEN];
        snprintf(prefix, sizeof(prefix), "cannot load certificate chain %s", certificate_file);
        lg_tls_error(err, errlen, prefix);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, private_key_file, SSL_FILETYPE_PEM) != 1) {
        char prefix[LG_ERR_LEN];
        snprintf(prefix, sizeof(prefix), "cannot load private key %s", private_key_file);
        lg_tls_error(err, errlen, prefix);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        lg_tls_error(err, errlen, "private key does not match the certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

SSL_CTX *lg_tls_client_ctx_new(const char *ca_file, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        lg_tls_error(err, errlen, "cannot create TLS client context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* OpenSSL 3 reports a peer closing without close_notify as an error;
     * HTTP's own framing tells a truncated answer. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        lg_tls_error(err, errlen, "cannot load the system CA certificates");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        char prefix[LG_ERR_LEN];
        snprintf(prefix, sizeof(prefix), "cannot load CA file %s", ca_file);
        lg_tls_error(err, errlen, prefix);
        SSL_CTX_free(ctx);
        return NULL;
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    return ctx;
}

SSL *lg_tls_client_ssl_new(SSL_CTX *ctx, const char *host, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        lg_tls_error(err, errlen, "cannot create TLS connection");
        return NULL;
    }
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (is_ip) {
        /* An address is checked against the certificate's IP SANs. */
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
            lg_tls_error(err, errlen, "cannot set the address to verify");
            SSL_free(ssl);
            return NULL;
        }
    } else {
        if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) {
            lg_tls_error(err, errlen, "cannot set the host name to verify");
            SSL_free(ssl);
            return NULL;
        }
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    return ssl;
}
