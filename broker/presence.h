/*
 * presence.h — who is subscribed to a channel on this node, for namespaces that enable
 * presence or join/leave (auth.h), and the server messages that tell it: `presence`
 * {channel, members: [{user, node, conn}]}, `join` / `leave` {channel, user, node, conn},
 * and `refreshed` {exp} for the refresh op.
 *
 * Only channels whose namespace enables presence are tracked, so the table costs nothing
 * where nobody asked for it. The cluster-wide view comes with replication (issue 4).
 *
 * Loop thread only.
 */
#ifndef TW_PRESENCE_H
#define TW_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "protocol.h"

struct tw_session;
typedef struct tw_presence tw_presence;

/* One member as the messages show it. Strings are borrowed. */
typedef struct tw_member {
    const char *user; /* NULL: a client without a token (open node) */
    const char *node;
    const char *conn;
} tw_member;

/* A new empty table, or NULL on ENOMEM. */
tw_presence *tw_presence_new(void);

/* Frees the table (not the sessions). NULL is fine. */
void tw_presence_free(tw_presence *p);

/* Adds a session to a channel's members. 0 or -ENOMEM. The session must be removed before
 * it is freed. */
int tw_presence_add(tw_presence *p, const char *channel, size_t len, struct tw_session *s);

/* Removes a session from a channel's members; returns 1 when it was one. */
int tw_presence_remove(tw_presence *p, const char *channel, size_t len, struct tw_session *s);

/* The members of a channel: *out points into the table (valid until the next add or
 * remove). Returns their number. */
size_t tw_presence_members(tw_presence *p, const char *channel, size_t len,
                           struct tw_session *const **out);

/* Appends `presence` {id?, channel, members}. 0, -ENOMEM or -EINVAL; *b as it was on error. */
int tw_presence_encode(tw_buf *b, tw_encoding enc, const int64_t *id, const char *channel,
                       size_t len, const tw_member *members, size_t n);

/* Appends `join` or `leave` (op) {channel, user, node, conn}. */
int tw_presence_encode_change(tw_buf *b, tw_encoding enc, const char *op, const char *channel,
                              size_t len, const tw_member *who);

/* Appends `refreshed` {id?, exp}. */
int tw_presence_encode_refreshed(tw_buf *b, tw_encoding enc, const int64_t *id, int64_t exp);

/* The presence members as a JSON document for GET /api/presence: {"channel","members"}. */
int tw_presence_json(tw_buf *b, const char *channel, size_t len, const tw_member *members,
                     size_t n);

#endif /* TW_PRESENCE_H */
