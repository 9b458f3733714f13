/* auth.c — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define MAX_KEYS 32
#define MAX_NAMESPACES 256
#define MAX_ROLE_TERMS 16
#define MAX_KEY_FILE (64 * 1024)

enum { T_ALL = 1, T_USERS = 2, T_GRANTED = 4 };

/* One rule: who may do one thing. `set` tells a configured rule from an unset one. */
typedef struct rule {
    uint8_t set;
    uint8_t terms; /* T_* */
    char *roles[MAX_ROLE_TERMS];
    size_t nroles;
} rule;

typedef struct ns {
    char *prefix; /* "" for the default namespace (`*`) */
    size_t len;
    rule sub, pub;
    int8_t presence, join_leave; /* -1: not set */
} ns;

struct tw_auth {
    tw_jwt_key *keys[MAX_KEYS];
    size_t nkeys;
    ns *nss;
    size_t nns;
    char *audience, *issuer;
    int64_t leeway_s;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void rule_free(rule *r)
{
    for (size_t i = 0; i < r->nroles; i++)
        free(r->roles[i]);
    memset(r, 0, sizeof *r);
}

void tw_auth_free(tw_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->nkeys; i++)
        tw_jwt_key_free(a->keys[i]);
    for (size_t i = 0; i < a->nns; i++) {
        free(a->nss[i].prefix);
        rule_free(&a->nss[i].sub);
        rule_free(&a->nss[i].pub);
    }
    free(a->nss);
    free(a->audience);
    free(a->issuer);
    free(a);
}

/* Reads a whole small file; a secret file may end in one newline, which is not secret. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(MAX_KEY_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_KEY_FILE + 1, f) : 0;
    fclose(f);
    if (!buf || n > MAX_KEY_FILE) {
        free(buf);
        seterr(err, errlen, "%s: %s", path, buf ? "larger than 64 KiB" : "out of memory");
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static void wipe_free(char *p, size_t n)
{
    if (!p) return;
    OPENSSL_cleanse(p, n);
    free(p);
}

/* Splits `text` into entries at '\n' and ';' and calls fn on each non-empty trimmed entry
 * (a writable copy). */
static int each_entry(const char *text, int (*fn)(tw_auth *, char *, char *, size_t), tw_auth *a,
                      char *err, size_t errlen)
{
    if (!text) return 0;
    char *copy = strdup(text);
    if (!copy) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *e = strtok_r(copy, "\n;", &save); e && rc == 0; e = strtok_r(NULL, "\n;", &save)) {
        while (*e == ' ' || *e == '\t')
            e++;
        char *end = e + strlen(e);
        while (end > e && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        if (*e) rc = fn(a, e, err, errlen);
    }
    free(copy);
    return rc;
}

/* jwt-key entry: kid=K alg=A (secret-file=P | public-key-file=P). */
static int add_key(tw_auth *a, char *entry, char *err, size_t errlen)
{
    const char *kid = NULL, *alg = NULL, *secret_file = NULL, *pub_file = NULL;
    char *save = NULL;
    for (char *t = strtok_r(entry, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) {
            seterr(err, errlen, "jwt-key: '%s' is not NAME=VALUE", t);
            return -1;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(t, "kid") == 0)
            kid = v;
        else if (strcmp(t, "alg") == 0)
            alg = v;
        else if (strcmp(t, "secret-file") == 0)
            secret_file = v;
        else if (strcmp(t, "public-key-file") == 0)
            pub_file = v;
        else {
            /* Never echo the value: someone may have put a secret inline. */
            seterr(err, errlen,
                   "jwt-key: unknown field '%s' (kid, alg, secret-file, "
                   "public-key-file)",
                   t);
            return -1;
        }
    }
    tw_jwt_alg al;
    if (!kid || !*kid || strlen(kid) > TW_JWT_MAX_KID) {
        seterr(err, errlen, "jwt-key: kid=NAME (1 to %d bytes) is required", TW_JWT_MAX_KID);
        return -1;
    }
    if (!alg || tw_jwt_alg_parse(alg, &al) != 0) {
        seterr(err, errlen, "jwt-key %s: alg must be HS256, RS256 or ES256", kid);
        return -1;
    }
    for (size_t i = 0; i < a->nkeys; i++)
        if (strcmp(tw_jwt_key_kid(a->keys[i]), kid) == 0) {
            seterr(err, errlen, "jwt-key %s: kid given twice", kid);
            return -1;
        }
    if (a->nkeys == MAX_KEYS) {
        seterr(err, errlen, "jwt-key: at most %d keys", MAX_KEYS);
        return -1;
    }
    if ((al == TW_JWT_HS256) != (secret_file != NULL) || (secret_file && pub_file) ||
        (al != TW_JWT_HS256 && !pub_file)) {
        seterr(err, errlen, "jwt-key %s: %s takes %s", kid, alg,
               al == TW_JWT_HS256 ? "secret-file=PATH (and no public key)"
                                  : "public-key-file=PATH (and no secret)");
        return -1;
    }
    char *text;
    size_t len;
    if (read_file(secret_file ? secret_file : pub_file, &text, &len, err, errlen) != 0) return -1;
    int rc;
    tw_jwt_key *k = NULL;
    if (al == TW_JWT_HS256) {
        size_t n = len;
        if (n && text[n - 1] == '\n') n--;
        if (n && text[n - 1] == '\r') n--;
        rc = tw_jwt_key_hmac(&k, kid, (const uint8_t *)text, n);
        if (rc)
            seterr(err, errlen, "jwt-key %s: the secret in %s must be at least 32 bytes", kid,
                   secret_file);
    } else {
        rc = tw_jwt_key_pem(&k, kid, al, text, len);
        if (rc)
            seterr(err, errlen, "jwt-key %s: %s holds no %s public key (PEM, %s)", kid, pub_file,
                   al == TW_JWT_RS256 ? "RSA" : "P-256 EC",
                   al == TW_JWT_RS256 ? "at least 2048 bits" : "BEGIN PUBLIC KEY");
    }
    wipe_free(text, len);
    if (rc) return -1;
    a->keys[a->nkeys++] = k;
    return 0;
}

static int parse_rule(rule *r, const char *what, const char *prefix, char *v, char *err,
                      size_t errlen)
{
    rule_free(r);
    r->set = 1;
    char *save = NULL;
    for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "all") == 0)
            r->terms |= T_ALL;
        else if (strcmp(t, "users") == 0)
            r->terms |= T_USERS;
        else if (strcmp(t, "granted") == 0)
            r->terms |= T_GRANTED;
        else if (strcmp(t, "none") == 0)
            continue;
        else if (strncmp(t, "role:", 5) == 0 && t[5] && r->nroles < MAX_ROLE_TERMS) {
            if (!(r->roles[r->nroles] = strdup(t + 5))) {
                seterr(err, errlen, "out of memory");
                return -1;
            }
            r->nroles++;
        } else {
            seterr(err, errlen,
                   "namespace %s: %s=%s: terms are all, users, granted, none, role:NAME "
                   "(at most %d roles)",
                   prefix, what, t, MAX_ROLE_TERMS);
            return -1;
        }
    }
    return 0;
}

static int on_off(const char *v, int8_t *out)
{
    if (strcmp(v, "on") == 0)
        *out = 1;
    else if (strcmp(v, "off") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* namespace entry: PREFIX [subscribe=TERMS] [publish=TERMS] [presence=on|off]
 * [join-leave=on|off]. */
static int add_namespace(tw_auth *a, char *entry, char *err, size_t errlen)
{
    char *save = NULL;
    char *prefix = strtok_r(entry, " \t", &save);
    if (strchr(prefix, '=')) {
        seterr(err, errlen, "namespace: the first word must be a channel prefix or *, not '%s'",
               prefix);
        return -1;
    }
    const char *p = strcmp(prefix, "*") == 0 ? "" : prefix;
    for (size_t i = 0; i < a->nns; i++)
        if (strcmp(a->nss[i].prefix, p) == 0) {
            seterr(err, errlen, "namespace %s: given twice", prefix);
            return -1;
        }
    if (a->nns == MAX_NAMESPACES) {
        seterr(err, errlen, "namespace: at most %d", MAX_NAMESPACES);
        return -1;
    }
    ns *nss = realloc(a->nss, (a->nns + 1) * sizeof *nss);
    if (!nss) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    a->nss = nss;
    ns *n = &nss[a->nns];
    memset(n, 0, sizeof *n);
    n->presence = n->join_leave = -1;
    if (!(n->prefix = strdup(p))) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    n->len = strlen(p);
    a->nns++; /* owned by a from here: freed with it on error */
    for (char *t = strtok_r(NULL, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) {
            seterr(err, errlen, "namespace %s: '%s' is not NAME=VALUE", prefix, t);
            return -1;
        }
        *eq = '\0';
        char *v = eq + 1;
        int rc = 0;
        if (strcmp(t, "subscribe") == 0)
            rc = parse_rule(&n->sub, t, prefix, v, err, errlen);
        else if (strcmp(t, "publish") == 0)
            rc = parse_rule(&n->pub, t, prefix, v, err, errlen);
        else if (strcmp(t, "presence") == 0 || strcmp(t, "join-leave") == 0) {
            if (on_off(v, t[0] == 'p' ? &n->presence : &n->join_leave) != 0) {
                seterr(err, errlen, "namespace %s: %s must be on or off", prefix, t);
                return -1;
            }
        } else {
            seterr(err, errlen,
                   "namespace %s: unknown rule '%s' (subscribe, publish, presence, join-leave)",
                   prefix, t);
            return -1;
        }
        if (rc) return -1;
    }
    return 0;
}

int tw_auth_load_text(tw_auth **out, const char *jwt_keys, const char *namespaces,
                      const char *audience, const char *issuer, int64_t leeway_s, char *err,
                      size_t errlen)
{
    tw_auth *a = calloc(1, sizeof *a);
    if (!a || !(a->audience = strdup(audience ? audience : "")) ||
        !(a->issuer = strdup(issuer ? issuer : ""))) {
        tw_auth_free(a);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    a->leeway_s = leeway_s;
    if (each_entry(jwt_keys, add_key, a, err, errlen) != 0 ||
        each_entry(namespaces, add_namespace, a, err, errlen) != 0) {
        tw_auth_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

int tw_auth_load(tw_auth **out, const tw_config *cfg, char *err, size_t errlen)
{
    return tw_auth_load_text(out, cfg->jwt_key, cfg->namespace, cfg->jwt_audience, cfg->jwt_issuer,
                             cfg->jwt_leeway_ms / 1000, err, errlen);
}

int tw_auth_required(const tw_auth *a)
{
    return a && a->nkeys > 0;
}

size_t tw_auth_nkeys(const tw_auth *a)
{
    return a ? a->nkeys : 0;
}

int tw_auth_verify(const tw_auth *a, const char *token, size_t len, int64_t now_s,
                   tw_jwt_claims *out)
{
    if (!tw_auth_required(a)) return TW_JWT_EKID;
    tw_jwt_expect x = {
        .audience = a->audience,
        .issuer = a->issuer,
        .now_s = now_s,
        .leeway_s = a->leeway_s,
    };
    return tw_jwt_verify(token, len, a->keys, a->nkeys, &x, out);
}

/* The namespace of a channel: the longest matching prefix, else the default one. */
static const ns *find_ns(const tw_auth *a, const char *channel, size_t len)
{
    const ns *best = NULL;
    for (size_t i = 0; a && i < a->nns; i++) {
        const ns *n = &a->nss[i];
        if (n->len <= len && memcmp(n->prefix, channel, n->len) == 0 &&
            (!best || n->len > best->len))
            best = n;
    }
    return best;
}

tw_ns_flags tw_auth_flags(const tw_auth *a, const char *channel, size_t len)
{
    tw_ns_flags f = {0, 0};
    const ns *n = find_ns(a, channel, len);
    if (n) {
        f.presence = n->presence > 0;
        f.join_leave = n->join_leave > 0;
    }
    return f;
}

int tw_auth_pattern_match(const char *pattern, const char *channel, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl && pattern[pl - 1] == '*') return pl - 1 <= len && memcmp(pattern, channel, pl - 1) == 0;
    return pl == len && memcmp(pattern, channel, len) == 0;
}

static int granted(const tw_jwt_claims *who, const char *channel, size_t len)
{
    for (size_t i = 0; who && i < who->nchannels; i++)
        if (tw_auth_pattern_match(who->channels[i], channel, len)) return 1;
    return 0;
}

static int has_role(const tw_jwt_claims *who, const char *role, size_t len)
{
    for (size_t i = 0; who && i < who->nroles; i++)
        if (strlen(who->roles[i]) == len && memcmp(who->roles[i], role, len) == 0) return 1;
    return 0;
}

static int rule_allows(const rule *r, const tw_jwt_claims *who, const char *channel, size_t len)
{
    if (r->terms & T_ALL) return 1;
    if (!who) return 0;
    if (r->terms & T_USERS) return 1;
    if ((r->terms & T_GRANTED) && granted(who, channel, len)) return 1;
    for (size_t i = 0; i < r->nroles; i++)
        if (has_role(who, r->roles[i], strlen(r->roles[i]))) return 1;
    return 0;
}

/*
 * The personal channels: `user:X` belongs to the user X and `role:R` to holders of R. No
 * namespace rule can open them to others (only an explicit token grant can), so a
 * misconfigured `namespace = user: subscribe=users` cannot leak one user's events to all.
 * Returns 1 (owner), 0 (someone else's) or -1 (not a personal channel).
 */
static int personal(const tw_jwt_claims *who, const char *channel, size_t len)
{
    if (len > 5 && memcmp(channel, "user:", 5) == 0)
        return who && strlen(who->sub) == len - 5 && memcmp(who->sub, channel + 5, len - 5) == 0;
    if (len > 5 && memcmp(channel, "role:", 5) == 0) return has_role(who, channel + 5, len - 5);
    return -1;
}

int tw_auth_may_subscribe(const tw_auth *a, const tw_jwt_claims *who, const char *channel,
                          size_t len)
{
    if (!tw_auth_required(a)) return 1;
    /* Token grants always add: that is what the `channels` claim is for. */
    if (who && granted(who, channel, len)) return 1;
    int mine = personal(who, channel, len);
    if (mine >= 0) return mine;
    const ns *n = find_ns(a, channel, len);
    return n && n->sub.set ? rule_allows(&n->sub, who, channel, len) : 0;
}

int tw_auth_may_publish(const tw_auth *a, const tw_jwt_claims *who, const char *channel, size_t len)
{
    if (!tw_auth_required(a)) return 1;
    const ns *n = find_ns(a, channel, len);
    /* Default: nobody; back ends publish through the HTTP API. */
    if (!n || !n->pub.set || !rule_allows(&n->pub, who, channel, len)) return 0;
    /* A personal channel takes publishes only from its owner (or an explicit grant). */
    int mine = personal(who, channel, len);
    return mine != 0 || granted(who, channel, len);
}
