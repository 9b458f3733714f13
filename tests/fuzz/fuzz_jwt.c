/*
 * fuzz_jwt.c — libFuzzer driver for broker/jwt.c. The first byte picks what the rest is:
 *   0: a compact token, verified against an HS256, an RS256 and an ES256 key;
 *   1: "HEADER\nPAYLOAD" JSON texts, which the driver encodes and signs with the HS256 key,
 *      so the claim checks behind a good signature are reached too;
 *   2: base64url text: a decode that succeeds must re-encode to the same text (canonical).
 * Checks: no crash, no leak, and verified claims keep their promises (sub set, exp ahead).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "jwt.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char secret[] = "fuzz-secret-0123456789abcdef-0123456789";
static tw_jwt_key *keys[3];
static const tw_jwt_expect expect = {
    .audience = "tidewire", .issuer = "iss", .now_s = 1800000000, .leeway_s = 30};

static tw_jwt_key *pem_key(const char *kid, tw_jwt_alg alg, const char *type, const void *param)
{
    EVP_PKEY *k = alg == TW_JWT_RS256 ? EVP_PKEY_Q_keygen(NULL, NULL, type, (size_t)2048)
                                      : EVP_PKEY_Q_keygen(NULL, NULL, type, (const char *)param);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    tw_jwt_key *out = NULL;
    FUZZ_CHECK(tw_jwt_key_pem(&out, kid, alg, p, (size_t)n) == 0);
    BIO_free(b);
    EVP_PKEY_free(k);
    return out;
}

/* Keys live for the whole process: made once, never freed (LeakSanitizer ignores globals). */
static void init(void)
{
    if (keys[0]) return;
    FUZZ_CHECK(tw_jwt_key_hmac(&keys[0], "h", (const uint8_t *)secret, strlen(secret)) == 0);
    keys[1] = pem_key("r", TW_JWT_RS256, "RSA", NULL);
    keys[2] = pem_key("e", TW_JWT_ES256, "EC", "P-256");
}

static size_t b64url_encode(const uint8_t *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = al[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = al[v & 63];
    }
    return o;
}

static void verify(const char *tok, size_t len)
{
    tw_jwt_claims c;
    if (tw_jwt_verify(tok, len, keys, 3, &expect, &c) != 0) return;
    FUZZ_CHECK(c.sub && *c.sub);
    FUZZ_CHECK(c.exp > expect.now_s - expect.leeway_s);
    FUZZ_CHECK(c.nroles <= TW_JWT_MAX_ROLES && c.nchannels <= TW_JWT_MAX_CHANNELS);
    tw_jwt_claims_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1) return 0;
    uint8_t mode = data[0] % 3;
    data++;
    size--;
    if (mode == 0) {
        verify((const char *)data, size);
    } else if (mode == 1) {
        const uint8_t *nl = memchr(data, '\n', size);
        if (!nl || size > 4096) return 0;
        size_t hl = (size_t)(nl - data), pl = size - hl - 1;
        char *tok = malloc(2 * size + 128);
        size_t n = b64url_encode(data, hl, tok);
        tok[n++] = '.';
        n += b64url_encode(nl + 1, pl, tok + n);
        uint8_t mac[32];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)tok, n, mac, &ml);
        tok[n++] = '.';
        n += b64url_encode(mac, ml, tok + n);
        verify(tok, n);
        free(tok);
    } else {
        uint8_t *out = malloc(size + 1);
        long n = tw_b64url_decode((const char *)data, size, out, size + 1);
        if (n >= 0) {
            char *again = malloc(size + 4);
            FUZZ_CHECK(b64url_encode(out, (size_t)n, again) == size);
            FUZZ_CHECK(memcmp(again, data, size) == 0);
            free(again);
        }
        free(out);
    }
    return 0;
}
