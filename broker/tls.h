/*
 * tls.h — TLS for wss:// and https:// with OpenSSL over memory BIOs, so the libuv loop owns
 * the socket and OpenSSL only ever sees bytes: ciphertext read from the socket goes in with
 * tw_tls_feed(), plaintext comes out through a callback; plaintext to send goes in with
 * tw_tls_write(), and every byte OpenSSL wants on the wire (handshake, records,
 * close_notify) is taken with tw_tls_take_output() and written by the caller.
 *
 * TLS 1.2 and later only; renegotiation off; no client certificates. A context holds the
 * certificate and key; reloading makes a new context for new connections while each
 * connection keeps the one it started with (OpenSSL counts the references).
 *
 * Loop thread only (an SSL* has one owner thread; contexts may be made on any thread).
 */
#ifndef TW_TLS_H
#define TW_TLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct tw_tls_ctx tw_tls_ctx;
typedef struct tw_tls tw_tls;

/*
 * Loads a certificate chain (PEM, leaf first) and its private key (PEM, unencrypted) into a
 * new server context, checking that they match. Returns 0 and *out, or -1 after writing a
 * one-line reason to err (never key material).
 */
int tw_tls_ctx_new(tw_tls_ctx **out, const char *cert_file, const char *key_file, char *err,
                   size_t errlen);

/* Drops the caller's reference; connections made from it keep theirs. NULL is fine. */
void tw_tls_ctx_free(tw_tls_ctx *ctx);

/* A server-side TLS session from a context. NULL on ENOMEM. */
tw_tls *tw_tls_new(tw_tls_ctx *ctx);

void tw_tls_free(tw_tls *t);

/* Receives each run of plaintext; valid during the call only. */
typedef void (*tw_tls_plain_cb)(void *arg, const uint8_t *data, size_t len);

/*
 * Feeds ciphertext from the socket: advances the handshake and hands every whole record's
 * plaintext to `plain` (which may be called several times). Then output may be pending
 * (take it). Returns 0, or -1 when the peer broke the protocol or closed with close_notify
 * (the caller writes what is pending and closes).
 */
int tw_tls_feed(tw_tls *t, const uint8_t *in, size_t len, tw_tls_plain_cb plain, void *arg);

/* Encrypts plaintext into records (pending output). 0, or -1 (the session failed). */
int tw_tls_write(tw_tls *t, const uint8_t *data, size_t len);

/* Queues close_notify (pending output). Idempotent. */
void tw_tls_shutdown(tw_tls *t);

/* Bytes waiting to go to the socket. */
size_t tw_tls_pending(const tw_tls *t);

/* Moves up to `cap` pending bytes into out; returns how many. */
size_t tw_tls_take_output(tw_tls *t, uint8_t *out, size_t cap);

/* 1 once the handshake finished. */
int tw_tls_established(const tw_tls *t);

#endif /* TW_TLS_H */
