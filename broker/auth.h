/*
 * auth.h — who may connect, subscribe, publish and see presence: the JWT keys and the
 * channel namespaces of a node, built once from the settings, then pure decisions.
 *
 * Settings (docs/security.md has the full story):
 *
 *   jwt-key   = kid=k1 alg=HS256 secret-file=/etc/tidewire/k1.secret
 *   jwt-key   = kid=k2 alg=RS256 public-key-file=/etc/tidewire/k2.pem
 *   namespace = vessel: subscribe=users publish=role:dispatcher presence=on join-leave=on
 *   namespace = * subscribe=granted
 *
 * Each `jwt-key` and `namespace` line adds one entry (several entries may also be given in
 * one value, separated by ';'). A namespace is a channel-name prefix; the longest one that
 * matches a channel holds its rules, `*` the rules of channels no prefix matches. A rule
 * is a comma list of terms, any of which lets a client in: `all` (anyone, even without a
 * token), `users` (any authenticated user), `role:NAME` (holders of a role), `granted`
 * (tokens whose `channels` claim matches the channel), `none`.
 *
 * With no jwt-key the node is OPEN (development): every client may subscribe and publish to
 * every channel, as before authentication existed; namespaces then only switch presence.
 * With keys, clients must present a token; by default a channel may be subscribed only by
 * token grants and the personal rules (`user:{sub}` for that user, `role:{r}` for holders of
 * r), and published to by nobody (back ends publish through the HTTP API).
 *
 * Immutable once loaded; loop thread or any thread.
 */
#ifndef TW_AUTH_H
#define TW_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jwt.h"

typedef struct tw_auth tw_auth;

/*
 * Builds the policy from cfg: parses the jwt-key and namespace entries and reads the key
 * files. Returns 0 and *out (free with tw_auth_free), or -1 after writing a one-line reason
 * to err (naming the entry, never a secret). Reads files: call at start or reload only.
 */
int tw_auth_load(tw_auth **out, const tw_config *cfg, char *err, size_t errlen);

/* Same, from explicit texts (unit tests, fuzzing): entries separated by '\n' or ';'. */
int tw_auth_load_text(tw_auth **out, const char *jwt_keys, const char *namespaces,
                      const char *audience, const char *issuer, int64_t leeway_s, char *err,
                      size_t errlen);

void tw_auth_free(tw_auth *a);

/* 1 when tokens are required (at least one key is configured), 0 on an open node. */
int tw_auth_required(const tw_auth *a);

/* Number of keys. */
size_t tw_auth_nkeys(const tw_auth *a);

/*
 * Verifies a token against the configured keys, audience, issuer and leeway at wall-clock
 * time now_s. Returns 0 and fills *out (caller frees with tw_jwt_claims_free), or a
 * TW_JWT_* code. On an open node every token is refused (TW_JWT_EKID).
 */
int tw_auth_verify(const tw_auth *a, const char *token, size_t len, int64_t now_s,
                   tw_jwt_claims *out);

/* What a namespace allows, after defaults. */
typedef struct tw_ns_flags {
    uint8_t presence;   /* the presence op and GET /api/presence answer */
    uint8_t join_leave; /* subscribers get join/leave when others come and go */
} tw_ns_flags;

/* The flags of the namespace holding `channel`. */
tw_ns_flags tw_auth_flags(const tw_auth *a, const char *channel, size_t len);

/*
 * 1 when `who` (NULL: a client without a token) may subscribe to / publish to `channel`.
 * On an open node both are always 1. Presence follows subscribe (and the namespace flag).
 */
int tw_auth_may_subscribe(const tw_auth *a, const tw_jwt_claims *who, const char *channel,
                          size_t len);
int tw_auth_may_publish(const tw_auth *a, const tw_jwt_claims *who, const char *channel,
                        size_t len);

/* 1 when a `channels` claim pattern matches: exact, or a prefix ending in '*'. */
int tw_auth_pattern_match(const char *pattern, const char *channel, size_t len);

#endif /* TW_AUTH_H */
