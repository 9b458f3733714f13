/* tls.c — see tls.h. */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct tw_tls_ctx {
    SSL_CTX *ssl;
};

struct tw_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    int shut;
};

/* The last OpenSSL error as text, with the queue cleared (it is per thread). */
static void ssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char buf[160] = "unknown reason";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    snprintf(err, errlen, "tls: %s %s: %s", what, file, buf);
}

int tw_tls_ctx_new(tw_tls_ctx **out, const char *cert_file, const char *key_file, char *err,
                   size_t errlen)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ssl) {
        snprintf(err, errlen, "tls: out of memory");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    /* No renegotiation (a client could make the server do handshakes on demand); a peer that
     * drops TCP without close_notify is an ordinary disconnect for a WebSocket, whose own
     * framing already tells whole messages from cut ones. */
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* Partial writes never happen with memory BIOs, but a moving buffer is harmless. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
        ssl_reason(err, errlen, "cannot load the certificate", cert_file);
        goto out_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_reason(err, errlen, "cannot load the private key", key_file);
        goto out_free;
    }
    if (SSL_CTX_check_private_key(ssl) != 1) {
        ssl_reason(err, errlen, "the key does not match the certificate in", cert_file);
        goto out_free;
    }
    tw_tls_ctx *c = malloc(sizeof *c);
    if (!c) {
        snprintf(err, errlen, "tls: out of memory");
        goto out_free;
    }
    c->ssl = ssl;
    *out = c;
    return 0;
out_free:
    SSL_CTX_free(ssl);
    return -1;
}

void tw_tls_ctx_free(tw_tls_ctx *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

tw_tls *tw_tls_new(tw_tls_ctx *ctx)
{
    tw_tls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ssl = SSL_new(ctx->ssl); /* holds its own reference to the context */
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* An empty read BIO means "no data yet", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tw_tls_free(tw_tls *t)
{
    if (!t) return;
    SSL_free(t->ssl); /* frees the BIOs */
    free(t);
}

int tw_tls_feed(tw_tls *t, const uint8_t *in, size_t len, tw_tls_plain_cb plain, void *arg)
{
    static uint8_t buf[16 * 1024]; /* one record's plaintext; consumed before the next */
    if (len && BIO_write(t->rbio, in, (int)len) != (int)len) return -1;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(t->ssl, buf, sizeof buf);
        if (n > 0) {
            plain(arg, buf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        return -1; /* ZERO_RETURN (close_notify), SSL (bad record, handshake failure)... */
    }
}

int tw_tls_write(tw_tls *t, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ERR_clear_error();
        int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
        int n = SSL_write(t->ssl, data, chunk);
        if (n <= 0) {
            ERR_clear_error();
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

void tw_tls_shutdown(tw_tls *t)
{
    if (t->shut) return;
    t->shut = 1;
    ERR_clear_error();
    if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t tw_tls_pending(const tw_tls *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tw_tls_take_output(tw_tls *t, uint8_t *out, size_t cap)
{
    size_t have = BIO_ctrl_pending(t->wbio);
    size_t n = have < cap ? have : cap;
    if (n == 0) return 0;
    int r = BIO_read(t->wbio, out, (int)n);
    return r > 0 ? (size_t)r : 0;
}

int tw_tls_established(const tw_tls *t)
{
    return SSL_is_init_finished(t->ssl);
}
