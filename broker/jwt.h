/*
 * jwt.h — JSON Web Token verification (RFC 7519, JWS compact form) with OpenSSL 3, free of
 * any I/O: bytes and a clock in, claims or an error code out.
 *
 * Three algorithms: HS256, RS256 (RSA >= 2048 bits), ES256 (P-256). Each key is configured
 * with a `kid` and the one algorithm it may verify; the token's header only *names* a key
 * (kid) and must state that key's algorithm, it never chooses how to verify. So `alg:none`,
 * HS256 "signed" with an RSA public key and every other algorithm confusion are refused
 * before any signature is computed. base64url is decoded strictly (no padding, no other
 * alphabet, zero trailing bits); tokens longer than TW_JWT_MAX_LEN are refused unread.
 *
 * Claims: `sub` (required string), `exp` (required NumericDate), `nbf`, `aud` (string or
 * array), `iss`, `roles` (array of strings), `channels` (array of channel patterns).
 *
 * Keys are immutable once made and may be shared by any threads; verification allocates
 * only its result.
 */
#ifndef TW_JWT_H
#define TW_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Longest token accepted (bytes of the compact form): the codec's max_token_len too. */
#define TW_JWT_MAX_LEN 8192
/* Limits on what a token may carry. */
#define TW_JWT_MAX_SUB 255
#define TW_JWT_MAX_ROLES 64
#define TW_JWT_MAX_CHANNELS 256
#define TW_JWT_MAX_KID 64

/* Error codes: one table makes the enum and tw_jwt_strerror(). None says why a signature
 * failed beyond "bad signature": a client learns nothing it could grind on. */
#define TW_JWT_ERRNO_MAP(X)                                                                        \
    X(EMALFORMED, -1, "token is not three base64url parts")                                        \
    X(ETOOBIG, -2, "token is too long")                                                            \
    X(EHEADER, -3, "token header is invalid")                                                      \
    X(EKID, -4, "token names no configured key")                                                   \
    X(EALG, -5, "token algorithm is not the key's")                                                \
    X(ESIG, -6, "bad signature")                                                                   \
    X(ECLAIMS, -7, "token claims are invalid")                                                     \
    X(EEXPIRED, -8, "token expired")                                                               \
    X(ENOTYET, -9, "token not valid yet")                                                          \
    X(EAUD, -10, "token audience is not this service")                                             \
    X(EISS, -11, "token issuer is not trusted")                                                    \
    X(ENOMEM, -12, "out of memory")                                                                \
    X(EKEY, -13, "unusable key")

typedef enum tw_jwt_err {
#define TW_JWT_ENUM(name, code, text) TW_JWT_##name = code,
    TW_JWT_ERRNO_MAP(TW_JWT_ENUM)
#undef TW_JWT_ENUM
} tw_jwt_err;

/* A static string for a TW_JWT_* code (or "unknown error"). Any thread. */
const char *tw_jwt_strerror(int code);

typedef enum tw_jwt_alg { TW_JWT_HS256 = 1, TW_JWT_RS256, TW_JWT_ES256 } tw_jwt_alg;

/* "HS256" -> TW_JWT_HS256...; returns 0 and sets *out, or -1 for any other name (none too). */
int tw_jwt_alg_parse(const char *name, tw_jwt_alg *out);

/* The algorithm's JOSE name. */
const char *tw_jwt_alg_name(tw_jwt_alg alg);

typedef struct tw_jwt_key tw_jwt_key;

/*
 * Makes an HS256 key from a shared secret of at least 32 bytes (RFC 7518 3.2: no shorter
 * than the hash). The key copies kid (1..TW_JWT_MAX_KID bytes) and the secret. Returns 0,
 * TW_JWT_EKEY (short secret, bad kid) or TW_JWT_ENOMEM. *out is written only on success.
 */
int tw_jwt_key_hmac(tw_jwt_key **out, const char *kid, const uint8_t *secret, size_t len);

/*
 * Makes an RS256 or ES256 key from a PEM public key (SubjectPublicKeyInfo, "BEGIN PUBLIC
 * KEY"). The key type must fit the algorithm: RSA of at least 2048 bits for RS256, EC on
 * P-256 for ES256. Returns 0, TW_JWT_EKEY or TW_JWT_ENOMEM.
 */
int tw_jwt_key_pem(tw_jwt_key **out, const char *kid, tw_jwt_alg alg, const char *pem, size_t len);

/* Frees a key (wiping an HMAC secret). NULL is fine. */
void tw_jwt_key_free(tw_jwt_key *k);

const char *tw_jwt_key_kid(const tw_jwt_key *k);
tw_jwt_alg tw_jwt_key_alg(const tw_jwt_key *k);

/* What the verifier expects besides a good signature. */
typedef struct tw_jwt_expect {
    const char *audience; /* NULL or "": aud is not checked */
    const char *issuer;   /* NULL or "": iss is not checked */
    int64_t now_s;        /* the clock: seconds since the Unix epoch */
    int64_t leeway_s;     /* clock skew allowed on exp and nbf */
} tw_jwt_expect;

/* A verified token's claims. Owned by the caller: tw_jwt_claims_free(). */
typedef struct tw_jwt_claims {
    char *sub;
    char **roles;
    size_t nroles;
    char **channels; /* patterns: a channel name, or a prefix ending in '*' */
    size_t nchannels;
    int64_t exp;           /* seconds since the epoch */
    const tw_jwt_key *key; /* the key that verified it (borrowed from the caller's list) */
} tw_jwt_claims;

/*
 * Verifies a compact JWS `token` (len bytes, not NUL-terminated necessarily) against
 * `keys`: the header's kid picks the key (a token without kid is accepted only when exactly
 * one key is given), the header's alg must be that key's. Then the signature, then the
 * claims against *expect. Returns 0 and fills *out (which the caller frees), or a
 * TW_JWT_* code with *out untouched. Any thread.
 */
int tw_jwt_verify(const char *token, size_t len, tw_jwt_key *const *keys, size_t nkeys,
                  const tw_jwt_expect *expect, tw_jwt_claims *out);

/* Frees what verified claims hold and zeroes them. */
void tw_jwt_claims_free(tw_jwt_claims *c);

/*
 * Strict base64url (RFC 4648 section 5) without padding: alphabet [A-Za-z0-9_-], length
 * not 1 mod 4, unused trailing bits zero. Writes at most `cap` bytes to out. Returns the
 * decoded length, or -1 when the input is not canonical base64url or does not fit.
 */
long tw_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif /* TW_JWT_H */
