/*
 * Unit tests of broker/jwt.c: vectors for HS256, RS256 and ES256 (valid, bad signature,
 * expired, nbf in the future, wrong aud/iss, alg none, HS256 made with the RSA public key,
 * truncated, oversized, non-base64url), made in the test with OpenSSL's own signing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "jwt.h"

#define NOW 1800000000LL

static const char secret[] = "0123456789abcdef0123456789abcdef-secret";

static EVP_PKEY *rsa_key, *ec_key;
static char *rsa_pub_pem, *ec_pub_pem;

static void b64url(const uint8_t *in, size_t n, char *out)
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
    out[o] = '\0';
}

static char *pem_of(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static int setup(void **state)
{
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(rsa_key);
    assert_non_null(ec_key);
    rsa_pub_pem = pem_of(rsa_key);
    ec_pub_pem = pem_of(ec_key);
    return 0;
}

static int teardown(void **state)
{
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ec_key);
    free(rsa_pub_pem);
    free(ec_pub_pem);
    return 0;
}

/* Signs header.payload with alg: "HS256" with `hkey` (or the default secret), "RS256" and
 * "ES256" with the generated keys, "none" with nothing. */
static char *make_token_with(const char *header, const char *payload, const char *alg,
                             const uint8_t *hkey, size_t hkeylen)
{
    static char out[16384];
    char h[4096], p[8192];
    b64url((const uint8_t *)header, strlen(header), h);
    b64url((const uint8_t *)payload, strlen(payload), p);
    int n = snprintf(out, sizeof out, "%s.%s", h, p);
    uint8_t sig[512];
    size_t siglen = 0;
    if (strcmp(alg, "HS256") == 0) {
        unsigned int l = 0;
        HMAC(EVP_sha256(), hkey ? hkey : (const uint8_t *)secret,
             hkey ? (int)hkeylen : (int)strlen(secret), (uint8_t *)out, (size_t)n, sig, &l);
        siglen = l;
    } else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) {
        EVP_PKEY *k = alg[0] == 'R' ? rsa_key : ec_key;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t der[512];
        size_t dl = sizeof der;
        assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k), 1);
        assert_int_equal(EVP_DigestSign(md, der, &dl, (uint8_t *)out, (size_t)n), 1);
        EVP_MD_CTX_free(md);
        if (alg[0] == 'R') {
            memcpy(sig, der, dl);
            siglen = dl;
        } else { /* DER -> R || S */
            const uint8_t *pp = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &pp, (long)dl);
            const BIGNUM *r, *s;
            ECDSA_SIG_get0(es, &r, &s);
            BN_bn2binpad(r, sig, 32);
            BN_bn2binpad(s, sig + 32, 32);
            ECDSA_SIG_free(es);
            siglen = 64;
        }
    } else if (strcmp(alg, "none") != 0) { /* an algorithm we do not take: any bytes */
        memcpy(sig, "xyz", 3);
        siglen = 3;
    }
    out[n++] = '.';
    b64url(sig, siglen, out + n);
    return out;
}

static char *make_token(const char *alg, const char *kid, const char *payload)
{
    char header[256];
    if (kid)
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg,
                 kid);
    else
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return make_token_with(header, payload, alg, NULL, 0);
}

static char payload_buf[4096];
static const char *claims(long long exp, const char *extra)
{
    snprintf(payload_buf, sizeof payload_buf,
             "{\"sub\":\"u7\",\"roles\":[\"crew\",\"admin\"],\"channels\":[\"vessel:*\"],"
             "\"exp\":%lld,\"aud\":\"tidewire\",\"iss\":\"https://auth.example\"%s%s}",
             exp, extra && *extra ? "," : "", extra ? extra : "");
    return payload_buf;
}

typedef struct keyset {
    tw_jwt_key *keys[3];
} keyset;

static void keys_make(keyset *ks)
{
    assert_int_equal(tw_jwt_key_hmac(&ks->keys[0], "h1", (const uint8_t *)secret, strlen(secret)),
                     0);
    assert_int_equal(
        tw_jwt_key_pem(&ks->keys[1], "r1", TW_JWT_RS256, rsa_pub_pem, strlen(rsa_pub_pem)), 0);
    assert_int_equal(
        tw_jwt_key_pem(&ks->keys[2], "e1", TW_JWT_ES256, ec_pub_pem, strlen(ec_pub_pem)), 0);
}

static void keys_free(keyset *ks)
{
    for (int i = 0; i < 3; i++)
        tw_jwt_key_free(ks->keys[i]);
}

static const tw_jwt_expect expect = {
    .audience = "tidewire", .issuer = "https://auth.example", .now_s = NOW, .leeway_s = 30};

static int verify(keyset *ks, const char *tok, tw_jwt_claims *c)
{
    tw_jwt_claims tmp;
    int rc = tw_jwt_verify(tok, strlen(tok), ks->keys, 3, &expect, c ? c : &tmp);
    if (rc == 0 && !c) tw_jwt_claims_free(&tmp);
    return rc;
}

/* Every algorithm: valid, bad signature, expired, nbf ahead, aud and iss wrong. */
static void check_alg(const char *alg, const char *kid)
{
    keyset ks;
    keys_make(&ks);
    tw_jwt_claims c;
    assert_int_equal(verify(&ks, make_token(alg, kid, claims(NOW + 600, NULL)), &c), 0);
    assert_string_equal(c.sub, "u7");
    assert_int_equal(c.nroles, 2);
    assert_string_equal(c.roles[1], "admin");
    assert_int_equal(c.nchannels, 1);
    assert_string_equal(c.channels[0], "vessel:*");
    assert_int_equal(c.exp, NOW + 600);
    assert_string_equal(tw_jwt_key_kid(c.key), kid);
    tw_jwt_claims_free(&c);

    /* bad signature: flip a bit of the payload after signing */
    char *t = strdup(make_token(alg, kid, claims(NOW + 600, NULL)));
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_ESIG);
    free(t);
    /* and a signature of another payload */
    t = strdup(make_token(alg, kid, claims(NOW + 601, NULL)));
    char *t2 = make_token(alg, kid, claims(NOW + 600, NULL));
    strcpy(strrchr(t, '.'), strrchr(t2, '.'));
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_ESIG);
    free(t);

    assert_int_equal(verify(&ks, make_token(alg, kid, claims(NOW - 31, NULL)), NULL),
                     TW_JWT_EEXPIRED);
    assert_int_equal(verify(&ks, make_token(alg, kid, claims(NOW - 29, NULL)), NULL),
                     0); /* leeway */
    assert_int_equal(
        verify(&ks, make_token(alg, kid, claims(NOW + 600, "\"nbf\":1800000100")), NULL),
        TW_JWT_ENOTYET);
    assert_int_equal(
        verify(&ks, make_token(alg, kid, claims(NOW + 600, "\"nbf\":1800000020")), NULL), 0);
    char p[512];
    snprintf(p, sizeof p,
             "{\"sub\":\"u\",\"exp\":%lld,\"aud\":\"other\",\"iss\":\"https://auth.example\"}",
             NOW + 60);
    assert_int_equal(verify(&ks, make_token(alg, kid, p), NULL), TW_JWT_EAUD);
    snprintf(p, sizeof p,
             "{\"sub\":\"u\",\"exp\":%lld,\"aud\":[\"x\",\"tidewire\"],\"iss\":\"https://"
             "auth.example\"}",
             NOW + 60);
    assert_int_equal(verify(&ks, make_token(alg, kid, p), NULL), 0);
    snprintf(p, sizeof p,
             "{\"sub\":\"u\",\"exp\":%lld,\"aud\":\"tidewire\",\"iss\":\"https://evil\"}",
             NOW + 60);
    assert_int_equal(verify(&ks, make_token(alg, kid, p), NULL), TW_JWT_EISS);
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"aud\":\"tidewire\"}", NOW + 60);
    assert_int_equal(verify(&ks, make_token(alg, kid, p), NULL), TW_JWT_EISS);
    keys_free(&ks);
}

static void test_hs256(void **state)
{
    check_alg("HS256", "h1");
}

static void test_rs256(void **state)
{
    check_alg("RS256", "r1");
}

static void test_es256(void **state)
{
    check_alg("ES256", "e1");
}

/* The header never chooses the algorithm. */
static void test_algorithm_confusion(void **state)
{
    keyset ks;
    keys_make(&ks);
    /* alg none, with and without a signature part */
    char *t = strdup(make_token("none", "h1", claims(NOW + 600, NULL)));
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EMALFORMED); /* empty signature */
    free(t);
    char buf[4096];
    snprintf(buf, sizeof buf, "%sAAAA", make_token("none", "h1", claims(NOW + 600, NULL)));
    t = strdup(buf);
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EALG);
    free(t);
    /* HS256 whose HMAC key is the RSA public key's PEM, naming the RSA key */
    char header[] = "{\"alg\":\"HS256\",\"kid\":\"r1\"}";
    t = make_token_with(header, claims(NOW + 600, NULL), "HS256", (const uint8_t *)rsa_pub_pem,
                        strlen(rsa_pub_pem));
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EALG);
    /* RS256 naming the HMAC key, ES256 naming the RSA key */
    assert_int_equal(verify(&ks, make_token("RS256", "h1", claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EALG);
    assert_int_equal(verify(&ks, make_token("ES256", "r1", claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EALG);
    /* algorithms we do not take, and case games */
    assert_int_equal(verify(&ks, make_token("HS512", "h1", claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EALG);
    assert_int_equal(verify(&ks, make_token("hs256", "h1", claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EALG);
    /* unknown kid; no kid with several keys */
    assert_int_equal(verify(&ks, make_token("HS256", "zz", claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EKID);
    assert_int_equal(verify(&ks, make_token("HS256", NULL, claims(NOW + 600, NULL)), NULL),
                     TW_JWT_EKID);
    /* no kid with exactly one key: that key */
    tw_jwt_claims c;
    t = make_token("HS256", NULL, claims(NOW + 600, NULL));
    assert_int_equal(tw_jwt_verify(t, strlen(t), ks.keys, 1, &expect, &c), 0);
    tw_jwt_claims_free(&c);
    /* crit, duplicated members, non-object header */
    t = make_token_with("{\"alg\":\"HS256\",\"kid\":\"h1\",\"crit\":[\"b64\"],\"b64\":false}",
                        claims(NOW + 600, NULL), "HS256", NULL, 0);
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EHEADER);
    t = make_token_with("{\"alg\":\"HS256\",\"kid\":\"h1\",\"alg\":\"none\"}",
                        claims(NOW + 600, NULL), "HS256", NULL, 0);
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EHEADER);
    t = make_token_with("[\"HS256\"]", claims(NOW + 600, NULL), "HS256", NULL, 0);
    assert_int_equal(verify(&ks, t, NULL), TW_JWT_EHEADER);
    keys_free(&ks);
}

static void test_malformed(void **state)
{
    keyset ks;
    keys_make(&ks);
    char *good = strdup(make_token("HS256", "h1", claims(NOW + 600, NULL)));
    size_t n = strlen(good);
    /* truncated at every length */
    for (size_t i = 0; i < n; i++) {
        tw_jwt_claims c;
        int rc = tw_jwt_verify(good, i, ks.keys, 3, &expect, &c);
        assert_true(rc < 0);
    }
    /* non-base64url: padding, the standard alphabet's + and /, spaces */
    const char *bad[] = {"=", "+", "/", " ", "\n", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = malloc(n + 2);
        char *dot = strchr(good, '.');
        size_t at = (size_t)(dot - good) + 2;
        memcpy(t, good, at);
        t[at] = bad[i][0];
        memcpy(t + at + 1, good + at, n - at + 1);
        assert_true(verify(&ks, t, NULL) < 0);
        t[at] = 'A';
        free(t);
    }
    /* a padded signature */
    char *t = malloc(n + 3);
    snprintf(t, n + 3, "%s==", good);
    assert_true(verify(&ks, t, NULL) < 0);
    free(t);
    /* four parts, empty parts, no dots */
    assert_int_equal(verify(&ks, "a.b.c.d", NULL), TW_JWT_EMALFORMED);
    assert_int_equal(verify(&ks, "..", NULL), TW_JWT_EMALFORMED);
    assert_int_equal(verify(&ks, "abc", NULL), TW_JWT_EMALFORMED);
    /* oversized */
    char *big = malloc(TW_JWT_MAX_LEN + 2);
    memset(big, 'A', TW_JWT_MAX_LEN + 1);
    big[TW_JWT_MAX_LEN + 1] = '\0';
    assert_int_equal(verify(&ks, big, NULL), TW_JWT_ETOOBIG);
    free(big);
    /* claims of the wrong type; missing sub or exp */
    assert_int_equal(verify(&ks, make_token("HS256", "h1", "{\"exp\":1900000000}"), NULL),
                     TW_JWT_ECLAIMS);
    assert_int_equal(verify(&ks, make_token("HS256", "h1", "{\"sub\":\"u\"}"), NULL),
                     TW_JWT_ECLAIMS);
    assert_int_equal(verify(&ks, make_token("HS256", "h1", "{\"sub\":7,\"exp\":1900000000}"), NULL),
                     TW_JWT_ECLAIMS);
    assert_int_equal(
        verify(&ks, make_token("HS256", "h1", "{\"sub\":\"u\",\"exp\":\"1900000000\"}"), NULL),
        TW_JWT_ECLAIMS);
    assert_int_equal(
        verify(&ks, make_token("HS256", "h1", claims(NOW + 60, "\"roles\":\"admin\"")), NULL),
        TW_JWT_ECLAIMS);
    assert_int_equal(
        verify(&ks, make_token("HS256", "h1", claims(NOW + 60, "\"x\":1,\"x\":2")), NULL),
        TW_JWT_ECLAIMS);
    free(good);
    keys_free(&ks);
}

static void test_base64url_strict(void **state)
{
    uint8_t out[16];
    assert_int_equal(tw_b64url_decode("", 0, out, sizeof out), 0);
    assert_int_equal(tw_b64url_decode("QQ", 2, out, sizeof out), 1);
    assert_int_equal(out[0], 'A');
    assert_int_equal(tw_b64url_decode("QR", 2, out, sizeof out), -1);   /* trailing bits */
    assert_int_equal(tw_b64url_decode("QQ==", 4, out, sizeof out), -1); /* padding */
    assert_int_equal(tw_b64url_decode("Q", 1, out, sizeof out), -1);    /* 1 mod 4 */
    assert_int_equal(tw_b64url_decode("-_-_", 4, out, sizeof out), 3);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(tw_b64url_decode("+/+/", 4, out, sizeof out), -1);
    assert_int_equal(tw_b64url_decode("QUFB", 4, out, 2), -1); /* does not fit */
}

static void test_keys(void **state)
{
    tw_jwt_key *k = NULL;
    assert_int_equal(tw_jwt_key_hmac(&k, "k", (const uint8_t *)"short", 5), TW_JWT_EKEY);
    assert_int_equal(tw_jwt_key_hmac(&k, "", (const uint8_t *)secret, strlen(secret)), TW_JWT_EKEY);
    /* the wrong kind of key for the algorithm */
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_RS256, ec_pub_pem, strlen(ec_pub_pem)),
                     TW_JWT_EKEY);
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_ES256, rsa_pub_pem, strlen(rsa_pub_pem)),
                     TW_JWT_EKEY);
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_HS256, rsa_pub_pem, strlen(rsa_pub_pem)),
                     TW_JWT_EKEY);
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_RS256, "garbage", 7), TW_JWT_EKEY);
    /* RSA below 2048 bits, EC on another curve */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *pem = pem_of(small);
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_RS256, pem, strlen(pem)), TW_JWT_EKEY);
    free(pem);
    EVP_PKEY_free(small);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    pem = pem_of(p384);
    assert_int_equal(tw_jwt_key_pem(&k, "k", TW_JWT_ES256, pem, strlen(pem)), TW_JWT_EKEY);
    free(pem);
    EVP_PKEY_free(p384);
    assert_null(k);
    tw_jwt_alg a;
    assert_int_equal(tw_jwt_alg_parse("none", &a), -1);
    assert_int_equal(tw_jwt_alg_parse("ES256", &a), 0);
    assert_string_equal(tw_jwt_alg_name(a), "ES256");
    assert_string_equal(tw_jwt_strerror(TW_JWT_ESIG), "bad signature");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256),     cmocka_unit_test(test_rs256),
        cmocka_unit_test(test_es256),     cmocka_unit_test(test_algorithm_confusion),
        cmocka_unit_test(test_malformed), cmocka_unit_test(test_base64url_strict),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
