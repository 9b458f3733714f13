/* jwt.c — see jwt.h. */
#include "jwt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

struct tw_jwt_key {
    char kid[TW_JWT_MAX_KID + 1];
    tw_jwt_alg alg;
    uint8_t *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256, ES256 */
};

const char *tw_jwt_strerror(int code)
{
    switch (code) {
#define TW_JWT_STR(name, c, text)                                                                  \
    case c:                                                                                        \
        return text;
        TW_JWT_ERRNO_MAP(TW_JWT_STR)
#undef TW_JWT_STR
    default:
        return "unknown error";
    }
}

int tw_jwt_alg_parse(const char *name, tw_jwt_alg *out)
{
    /* Exact, case-sensitive names (RFC 7518): "hs256" or "none" are not algorithms here. */
    if (strcmp(name, "HS256") == 0)
        *out = TW_JWT_HS256;
    else if (strcmp(name, "RS256") == 0)
        *out = TW_JWT_RS256;
    else if (strcmp(name, "ES256") == 0)
        *out = TW_JWT_ES256;
    else
        return -1;
    return 0;
}

const char *tw_jwt_alg_name(tw_jwt_alg alg)
{
    switch (alg) {
    case TW_JWT_HS256:
        return "HS256";
    case TW_JWT_RS256:
        return "RS256";
    case TW_JWT_ES256:
        return "ES256";
    }
    return "?";
}

const char *tw_jwt_key_kid(const tw_jwt_key *k)
{
    return k->kid;
}

tw_jwt_alg tw_jwt_key_alg(const tw_jwt_key *k)
{
    return k->alg;
}

static int kid_ok(const char *kid)
{
    size_t n = strlen(kid);
    return n >= 1 && n <= TW_JWT_MAX_KID;
}

int tw_jwt_key_hmac(tw_jwt_key **out, const char *kid, const uint8_t *secret, size_t len)
{
    if (!kid_ok(kid) || len < 32) return TW_JWT_EKEY;
    tw_jwt_key *k = calloc(1, sizeof *k);
    if (!k) return TW_JWT_ENOMEM;
    k->secret = malloc(len);
    if (!k->secret) {
        free(k);
        return TW_JWT_ENOMEM;
    }
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    k->alg = TW_JWT_HS256;
    strcpy(k->kid, kid);
    *out = k;
    return 0;
}

/* The key must be of the algorithm's family and strong enough: an RS256 key is RSA of at
 * least 2048 bits, an ES256 key EC on P-256 (another curve would verify other signatures). */
static int pkey_fits(EVP_PKEY *pkey, tw_jwt_alg alg)
{
    if (alg == TW_JWT_RS256) return EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= 2048;
    if (alg == TW_JWT_ES256) {
        char curve[64];
        size_t n = 0;
        if (!EVP_PKEY_is_a(pkey, "EC")) return 0;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve,
                                            &n))
            return 0;
        return strcmp(curve, "prime256v1") == 0 || strcmp(curve, "P-256") == 0;
    }
    return 0;
}

int tw_jwt_key_pem(tw_jwt_key **out, const char *kid, tw_jwt_alg alg, const char *pem, size_t len)
{
    if (!kid_ok(kid) || (alg != TW_JWT_RS256 && alg != TW_JWT_ES256) || len > INT32_MAX)
        return TW_JWT_EKEY;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) return TW_JWT_ENOMEM;
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error(); /* the error queue is per thread: leave nothing for the next caller */
    if (!pkey) return TW_JWT_EKEY;
    if (!pkey_fits(pkey, alg)) {
        EVP_PKEY_free(pkey);
        return TW_JWT_EKEY;
    }
    tw_jwt_key *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return TW_JWT_ENOMEM;
    }
    k->pkey = pkey;
    k->alg = alg;
    strcpy(k->kid, kid);
    *out = k;
    return 0;
}

void tw_jwt_key_free(tw_jwt_key *k)
{
    if (!k) return;
    if (k->secret) OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* ---- base64url ------------------------------------------------------------------------ */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long tw_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    /* A length of 1 mod 4 cannot be the end of any byte string. */
    if (len % 4 == 1) return -1;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap) return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The bits left over must be zero, so every byte string has exactly one encoding (a
     * signature that decodes the same from two texts would let a token be re-spelled). */
    if (acc != 0) return -1;
    return (long)o;
}

/* ---- signatures ------------------------------------------------------------------------ */

static int verify_hs256(const tw_jwt_key *k, const uint8_t *msg, size_t len, const uint8_t *sig,
                        size_t siglen)
{
    if (siglen != 32) return TW_JWT_ESIG;
    uint8_t mac[32];
    size_t maclen = 0;
    int rc = TW_JWT_ENOMEM;
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    if (!ctx) goto out_free;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_init(ctx, k->secret, k->secret_len, params) || !EVP_MAC_update(ctx, msg, len) ||
        !EVP_MAC_final(ctx, mac, &maclen, sizeof mac) || maclen != 32)
        goto out_free;
    rc = CRYPTO_memcmp(mac, sig, 32) == 0 ? 0 : TW_JWT_ESIG;
out_free:
    OPENSSL_cleanse(mac, sizeof mac);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    return rc;
}

/* JWS carries an ES256 signature as R || S, 32 bytes each; OpenSSL verifies DER. */
static int es256_to_der(const uint8_t *sig, uint8_t *der, size_t cap, size_t *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    int n = i2d_ECDSA_SIG(es, NULL);
    unsigned char *p = der;
    if (n <= 0 || (size_t)n > cap || i2d_ECDSA_SIG(es, &p) != n) {
        ECDSA_SIG_free(es);
        return -1;
    }
    ECDSA_SIG_free(es);
    *derlen = (size_t)n;
    return 0;
}

static int verify_pkey(const tw_jwt_key *k, const uint8_t *msg, size_t len, const uint8_t *sig,
                       size_t siglen)
{
    uint8_t der[80];
    if (k->alg == TW_JWT_ES256) {
        if (siglen != 64) return TW_JWT_ESIG;
        if (es256_to_der(sig, der, sizeof der, &siglen) != 0) return TW_JWT_ESIG;
        sig = der;
    } else if (siglen != (size_t)EVP_PKEY_get_size(k->pkey)) {
        return TW_JWT_ESIG;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) return TW_JWT_ENOMEM;
    int rc = TW_JWT_ESIG;
    /* Only 1 means valid: 0 is a bad signature and negative values are errors. */
    if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
        EVP_DigestVerify(md, sig, siglen, msg, len) == 1)
        rc = 0;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return rc;
}

/* ---- JSON parts ------------------------------------------------------------------------- */

/* 1 when an object holds `name` more than once: a duplicated claim or header member could
 * mean one thing to us and another to whoever made the token, so such tokens are refused. */
static int duplicated(const cJSON *obj)
{
    int n = 0;
    for (const cJSON *a = obj->child; a; a = a->next)
        if (++n > 64) return 1; /* no real header or claim set is that large: bound the check */
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0) return 1;
    return 0;
}

/* Decodes one base64url part holding a JSON object. */
static int parse_part(const char *s, size_t len, cJSON **out)
{
    uint8_t buf[TW_JWT_MAX_LEN];
    long n = tw_b64url_decode(s, len, buf, sizeof buf);
    if (n <= 0) return -1;
    /* cJSON stops at a NUL; a part with one inside is not the JSON it seems. */
    if (memchr(buf, '\0', (size_t)n)) return -1;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)buf, (size_t)n, &end, 0);
    if (!j) return -1;
    while (end < (const char *)buf + n &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (!cJSON_IsObject(j) || end != (const char *)buf + n || duplicated(j)) {
        cJSON_Delete(j);
        return -1;
    }
    *out = j;
    return 0;
}

/* A NumericDate: a finite number within a sane range (no overflow when leeway is added). */
static int numeric_date(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 1e13) return -1;
    *out = (int64_t)d;
    return 0;
}

static char **string_array(const cJSON *arr, size_t max, size_t maxlen, size_t *n, int *rc)
{
    *n = 0;
    *rc = 0;
    if (!arr) return NULL;
    if (!cJSON_IsArray(arr)) {
        *rc = TW_JWT_ECLAIMS;
        return NULL;
    }
    size_t count = (size_t)cJSON_GetArraySize(arr);
    if (count > max) {
        *rc = TW_JWT_ECLAIMS;
        return NULL;
    }
    if (count == 0) return NULL;
    char **out = calloc(count, sizeof *out);
    if (!out) {
        *rc = TW_JWT_ENOMEM;
        return NULL;
    }
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !*e->valuestring || strlen(e->valuestring) > maxlen) {
            *rc = TW_JWT_ECLAIMS;
            break;
        }
        if (!(out[i] = strdup(e->valuestring))) {
            *rc = TW_JWT_ENOMEM;
            break;
        }
    }
    if (*rc) {
        for (size_t j = 0; j < count; j++)
            free(out[j]);
        free(out);
        return NULL;
    }
    *n = count;
    return out;
}

static int aud_matches(const cJSON *aud, const char *want)
{
    if (cJSON_IsString(aud)) return strcmp(aud->valuestring, want) == 0;
    if (!cJSON_IsArray(aud)) return 0;
    for (const cJSON *e = aud->child; e; e = e->next)
        if (cJSON_IsString(e) && strcmp(e->valuestring, want) == 0) return 1;
    return 0;
}

void tw_jwt_claims_free(tw_jwt_claims *c)
{
    free(c->sub);
    for (size_t i = 0; i < c->nroles; i++)
        free(c->roles[i]);
    free(c->roles);
    for (size_t i = 0; i < c->nchannels; i++)
        free(c->channels[i]);
    free(c->channels);
    memset(c, 0, sizeof *c);
}

static int check_claims(const cJSON *p, const tw_jwt_expect *x, tw_jwt_claims *out)
{
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p, "sub");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(p, "exp");
    const cJSON *nbf = cJSON_GetObjectItemCaseSensitive(p, "nbf");
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(p, "aud");
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(p, "iss");
    int64_t exp_s, nbf_s;
    if (!cJSON_IsString(sub) || !*sub->valuestring || strlen(sub->valuestring) > TW_JWT_MAX_SUB)
        return TW_JWT_ECLAIMS;
    /* exp is required: a connection lives only as long as its token, and a token that never
     * expires cannot be taken back. */
    if (numeric_date(exp, &exp_s) != 0) return TW_JWT_ECLAIMS;
    if (nbf && numeric_date(nbf, &nbf_s) != 0) return TW_JWT_ECLAIMS;
    if (x->now_s - x->leeway_s >= exp_s) return TW_JWT_EEXPIRED;
    if (nbf && x->now_s + x->leeway_s < nbf_s) return TW_JWT_ENOTYET;
    if (x->audience && *x->audience && !aud_matches(aud, x->audience)) return TW_JWT_EAUD;
    if (x->issuer && *x->issuer &&
        (!cJSON_IsString(iss) || strcmp(iss->valuestring, x->issuer) != 0))
        return TW_JWT_EISS;

    tw_jwt_claims c = {0};
    int rc;
    c.roles = string_array(cJSON_GetObjectItemCaseSensitive(p, "roles"), TW_JWT_MAX_ROLES, 255,
                           &c.nroles, &rc);
    if (rc) return rc;
    c.channels = string_array(cJSON_GetObjectItemCaseSensitive(p, "channels"), TW_JWT_MAX_CHANNELS,
                              255, &c.nchannels, &rc);
    if (rc == 0 && !(c.sub = strdup(sub->valuestring))) rc = TW_JWT_ENOMEM;
    if (rc) {
        tw_jwt_claims_free(&c);
        return rc;
    }
    c.exp = exp_s;
    *out = c;
    return 0;
}

static const tw_jwt_key *pick_key(const cJSON *h, tw_jwt_key *const *keys, size_t nkeys, int *rc)
{
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(h, "kid");
    const tw_jwt_key *k = NULL;
    *rc = TW_JWT_EHEADER;
    if (!cJSON_IsString(alg)) return NULL;
    /* We implement no header extensions, so a critical one must be refused (RFC 7515). */
    if (cJSON_GetObjectItemCaseSensitive(h, "crit")) return NULL;
    if (kid) {
        if (!cJSON_IsString(kid)) return NULL;
        for (size_t i = 0; i < nkeys && !k; i++)
            if (strcmp(keys[i]->kid, kid->valuestring) == 0) k = keys[i];
    } else if (nkeys == 1) {
        k = keys[0];
    }
    *rc = TW_JWT_EKID;
    if (!k) return NULL;
    /* The key decides the algorithm; the header must only agree with it. */
    tw_jwt_alg a;
    *rc = TW_JWT_EALG;
    if (tw_jwt_alg_parse(alg->valuestring, &a) != 0 || a != k->alg) return NULL;
    *rc = 0;
    return k;
}

int tw_jwt_verify(const char *token, size_t len, tw_jwt_key *const *keys, size_t nkeys,
                  const tw_jwt_expect *expect, tw_jwt_claims *out)
{
    if (len > TW_JWT_MAX_LEN) return TW_JWT_ETOOBIG;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return TW_JWT_EMALFORMED;
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    if (hlen == 0 || plen == 0 || slen == 0) return TW_JWT_EMALFORMED;

    cJSON *header = NULL, *payload = NULL;
    uint8_t sig[512];
    int rc;
    if (parse_part(token, hlen, &header) != 0) return TW_JWT_EHEADER;
    const tw_jwt_key *k = pick_key(header, keys, nkeys, &rc);
    cJSON_Delete(header);
    if (!k) return rc;
    long siglen = tw_b64url_decode(dot2 + 1, slen, sig, sizeof sig);
    if (siglen <= 0) return TW_JWT_EMALFORMED;
    /* The signing input is the first two parts exactly as sent, dot included. */
    size_t signed_len = (size_t)(dot2 - token);
    rc = k->alg == TW_JWT_HS256
             ? verify_hs256(k, (const uint8_t *)token, signed_len, sig, (size_t)siglen)
             : verify_pkey(k, (const uint8_t *)token, signed_len, sig, (size_t)siglen);
    if (rc) return rc;
    /* Claims are read only from a token whose signature holds. */
    if (parse_part(dot1 + 1, plen, &payload) != 0) return TW_JWT_ECLAIMS;
    tw_jwt_claims c;
    rc = check_claims(payload, expect, &c);
    cJSON_Delete(payload);
    if (rc) return rc;
    c.key = k;
    *out = c;
    return 0;
}
