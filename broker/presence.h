/*
 * presence.h — who is subscribed to a channel on this node, for namespaces that enable
 * presence or join/leave (auth.h), and the server messages that tell it: `presence`
 * {channel, members: [{user, node, conn}]}, `join` / `leave` {channel, user, node, conn},
 * and `refreshed` {exp} for the refresh op.
 *
 * Only channels whose namespace enables presence are tracked, so the table costs nothing
 * where nobody asked for it. Members on other nodes are kept beside them (the cluster's
 * view, fed by cluster.c from what peers broadcast).
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

/* ---- The cluster's view: members on other nodes (reported through gossip) ---------------- */

/* Fills *m for a local session (node: this node's name). Defined by the session module. */
void tw_presence_member_of(struct tw_session *s, const char *node, tw_member *m);

typedef void (*tw_presence_local_cb)(void *arg, const char *channel, size_t len,
                                     struct tw_session *s);
/* Calls cb for every local member of every channel (for a snapshot to peers). */
void tw_presence_each_local(tw_presence *p, tw_presence_local_cb cb, void *arg);

/* Calls cb for every member `node` reported, of every channel (strings valid during the
 * call). A node of several loops keeps the other loops' members this way, under its own
 * name: its presence snapshot to peers takes them from here. */
void tw_presence_each_remote(tw_presence *p, const char *node,
                             void (*cb)(void *arg, const char *channel, size_t len,
                                        const tw_member *m),
                             void *arg);

/* Told of a remote member that is going (its strings valid during the call). */
typedef void (*tw_presence_change_cb)(void *arg, const char *channel, size_t len,
                                      const tw_member *m);

/* Adds (or refreshes, setting its generation) a member another node reported; strings are
 * copied, m->node and m->conn required. Returns 1 when new, 0 when it was known, -ENOMEM. */
int tw_presence_remote_add(tw_presence *p, const char *channel, size_t len, const tw_member *m,
                           uint64_t gen);

/* Removes a remote member (cb told first); returns 1 when it was one. */
int tw_presence_remote_remove(tw_presence *p, const char *channel, size_t len, const char *node,
                              const char *conn, tw_presence_change_cb cb, void *arg);

/* Removes every member of `node` whose generation is below gen (UINT64_MAX: all of them:
 * the node died or left), telling cb of each first. */
void tw_presence_remote_sweep(tw_presence *p, const char *node, uint64_t gen,
                              tw_presence_change_cb cb, void *arg);

/* Every member of a channel, this node's first (in join order) then the others': a malloc'd
 * array in *out (free it; strings borrowed, valid until the table changes). Returns the count
 * (0: *out NULL), or (size_t)-1 on ENOMEM. */
size_t tw_presence_list(tw_presence *p, const char *channel, size_t len, const char *node,
                        tw_member **out);

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
