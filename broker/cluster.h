/*
 * cluster.h — the node's side of the cluster: starts gossip from the settings, appends the
 * events other nodes replicate, holds acknowledgements until quorum, and answers readiness.
 *
 * The path of a remote event: gossip thread (on_events, in seq order per origin) ->
 * tw_store_submit with the event's own origin and seq (no loop hop: submit is thread-safe) ->
 * store writer (commit) -> the loop's commit list -> complete_publish: fanned out like a
 * local event, then reported applied to gossip (tw_cluster_remote_done).
 *
 * A node without --cluster-listen is a cluster of one: every function here is then a no-op
 * (ready, quorum always possible, acks never held).
 *
 * With several loops (--threads) the cluster is loop 0's: it runs gossip's callbacks, owns
 * the replicated appends and peers' presence, and tells the other loops (quorum reached,
 * members joining and leaving). Any loop may call tw_cluster_quorum_possible,
 * tw_cluster_hold_ack (each loop holds its own acks), tw_cluster_presence_changed,
 * tw_cluster_knows_origin, tw_cluster_ready and the render functions; the others are loop 0's.
 *
 * Loop thread only unless stated.
 */
#ifndef TW_CLUSTER_H
#define TW_CLUSTER_H

#include <stdint.h>

#include "buf.h"

struct tw_server;
struct tw_publish;

/* Starts gossip when cluster-listen is set (after the store opened). 0 or -1 (logged). */
int tw_cluster_start(struct tw_server *srv);

/* Leaves the cluster: tells peers, waits up to timeout_ms for them to have every event this
 * node accepted, stops gossip. Called by the drain after clients are gone. */
void tw_cluster_stop(struct tw_server *srv, uint32_t timeout_ms);

/* Frees what tw_cluster_start made (after tw_cluster_stop, or when it never ran); loop 0,
 * every loop stopped. */
void tw_cluster_free(struct tw_server *srv);

/* Drops the acks a loop still holds for quorum (shutdown: their publishers are gone). */
void tw_cluster_drop_held(struct tw_server *srv);

/* A local event committed at `seq` (of any loop: loop 0 sees them all in the log):
 * replicate it. Only loop 0's calls count. */
void tw_cluster_local_committed(struct tw_server *srv, uint64_t seq);

/* A remote event's append finished (status in p->app.status): tell gossip. */
void tw_cluster_remote_done(struct tw_server *srv, const struct tw_publish *p);

/* With durability quorum: 1 when enough members are alive to reach a majority. */
int tw_cluster_quorum_possible(struct tw_server *srv);

/* With durability quorum: keeps the publish until a majority has it, then acknowledges it
 * (takes ownership of p). Returns 0, or -1 when acks are not held (local durability or a
 * single node): the caller acknowledges at once and keeps p. */
int tw_cluster_hold_ack(struct tw_server *srv, struct tw_publish *p);

/* A member joined or left a presence channel on this node: tell the peers (a delta; every
 * node also sends its whole presence every few seconds, and peers drop a dead or departed
 * node's members). */
struct tw_member;
void tw_cluster_presence_changed(struct tw_server *srv, const char *op, const char *channel,
                                 size_t len, const struct tw_member *who);

/* 1 when `origin` is the origin of a cluster member (alive or not): its events exist in the
 * cluster even if this node has not received them yet. */
int tw_cluster_knows_origin(struct tw_server *srv, const char *origin);

/* 1 when the node has joined its cluster and caught up (always 1 for a single node). */
int tw_cluster_ready(struct tw_server *srv);

/* Appends the "cluster" member of /stats ({"members": [...], ...}) without a leading comma. */
int tw_cluster_render_json(struct tw_server *srv, tw_buf *out);

/* Appends the cluster's Prometheus figures. */
int tw_cluster_render_prometheus(struct tw_server *srv, tw_buf *out);

#endif /* TW_CLUSTER_H */
