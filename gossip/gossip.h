/*
 * gossip.h — cluster membership, failure detection and log replication over NNG.
 *
 * A library: it never logs, prints or exits; it reports through callbacks and returns 0 or
 * a negative TW_GOSSIP_E* code. It depends on store/ (to read events it serves to peers)
 * and on NNG, never on broker/.
 *
 * Transport. Every node listens with one NNG pull socket on its cluster address and dials
 * one push socket to each peer's address: each ordered pair of nodes has exactly one TCP
 * connection carrying A's messages to B, so nothing arrives twice and a slow peer pushes
 * back (the push queue fills and sends fail without blocking) instead of having messages
 * dropped silently as a bus socket would. Messages still get lost when a connection drops;
 * every replicated event carries (origin, seq), receivers apply each origin strictly in seq
 * order, and gaps or lags (seen in the per-origin digest every heartbeat carries) are
 * fetched again, so loss only delays.
 *
 * Membership. Nodes start from a seed list of addresses, exchange heartbeats carrying what
 * they know of every member (name, address, state, incarnation), and so learn the whole
 * cluster from any seed. A member not heard from for suspect_ms is suspect, for dead_ms
 * dead; it comes back to alive when heard again (restart or healed partition). A node that
 * drains says so (state "left"). Members are never forgotten otherwise: quorum counts all
 * of them, alive or not.
 *
 * Replication. After each local commit the owner calls tw_gossip_notify_local(); the gossip
 * thread reads the new events of this node's origin from the store and pushes them to every
 * alive peer in batches. A node receiving events hands them to the owner (on_events), in
 * seq order per origin, with no gap and no duplicate; the owner appends them to its store
 * and reports each applied seq back (tw_gossip_applied). A node behind on an origin (by its
 * digest against a peer's) fetches from a peer that has it: the origin itself when alive,
 * else the peer furthest ahead, paced (at most `fetch_batch_bytes` in flight per origin) so
 * catching up does not starve live traffic.
 *
 * Quorum. Peers acknowledge what they applied; the node computes, for its own origin, the
 * highest seq fsynced on a majority of all members (itself included) and reports it
 * (on_quorum) so the owner can acknowledge quorum publishes.
 *
 * Listener health. NNG 1.5.2 can stop accepting on a listener after a peer disconnects
 * mid-handshake (nng#1518, fixed in 1.6.0). The gossip thread probes its own listener
 * periodically (a push socket dialed to it sends a probe the pull socket must receive);
 * when a probe is not received in time it closes and re-creates the listener, and counts it.
 *
 * Threads. The library runs one thread of its own. Callbacks run on it: they must be quick
 * and hand work to the owner's thread. All functions are thread-safe unless stated.
 */
#ifndef TW_GOSSIP_H
#define TW_GOSSIP_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TW_GOSSIP_ERRNO_MAP(X)                                                                     \
    X(EINVAL, -2001, "invalid argument")                                                           \
    X(ENOMEM, -2002, "out of memory")                                                              \
    X(ELISTEN, -2003, "cannot listen on the cluster address")                                      \
    X(ENNG, -2004, "NNG error")                                                                    \
    X(ESTORE, -2005, "store error")                                                                \
    X(ECLOSED, -2006, "gossip is stopping")                                                        \
    X(ETLS, -2007, "TLS configuration error")

enum {
#define TW_GOSSIP_ERRNO_ENUM(name, value, msg) TW_GOSSIP_##name = (value),
    TW_GOSSIP_ERRNO_MAP(TW_GOSSIP_ERRNO_ENUM)
#undef TW_GOSSIP_ERRNO_ENUM
};

/* A static message for a TW_GOSSIP_E* code. */
const char *tw_gossip_strerror(int err);

typedef struct tw_gossip tw_gossip;

/* Longest cluster address ("tcp://host:port" or "tls+tcp://host:port"). */
#define TW_GOSSIP_ADDR_MAX 128

typedef enum tw_member_state {
    TW_MEMBER_ALIVE = 0,
    TW_MEMBER_SUSPECT,
    TW_MEMBER_DEAD,
    TW_MEMBER_LEFT,
    TW_MEMBER_SELF,
} tw_member_state;

/* Name of a state ("alive", "suspect", "dead", "left", "self"). */
const char *tw_member_state_name(tw_member_state s);

typedef struct tw_member_info {
    char name[TW_STORE_NODE_NAME_MAX + 1];
    char origin[TW_STORE_ORIGIN_MAX + 1]; /* "" until heard from */
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    tw_member_state state;
    uint64_t last_heard_ms; /* monotonic ms; 0 never */
    /* How far behind the member is on this node's origin (our last seq - its applied). */
    uint64_t replication_lag;
} tw_member_info;

/* One replicated event, as handed to on_events. Pointers valid during the callback. */
typedef struct tw_gossip_event {
    const char *origin;
    uint64_t seq;
    int64_t ts_ms;
    const char *channel;
    size_t channel_len;
    const void *data;
    size_t data_len;
    uint8_t encoding;
    /* 1: the seqs between the last one handed for this origin and this one are gone (the
     * peer that served the catch-up had them trimmed by retention): append it after the
     * hole (tw_store_append.after_trim). Only ever on the first event of an on_events
     * call's run of an origin. */
    uint8_t after_trim;
} tw_gossip_event;

typedef struct tw_gossip_callbacks {
    /*
     * Events of remote origins to append, in seq order per origin, contiguous after what
     * the owner reported applied or was handed before (never a gap but one flagged
     * after_trim, never a seq handed twice unless tw_gossip_apply_failed() asked for it
     * again). The owner must copy what it
     * keeps and later call tw_gossip_applied() once the events are durable.
     */
    void (*on_events)(void *arg, const tw_gossip_event *events, size_t n);
    /* Membership changed (a member joined, changed state or left). */
    void (*on_members)(void *arg);
    /* The highest seq of this node's origin durable on a majority of members. */
    void (*on_quorum)(void *arg, uint64_t seq);
    /* A message a member sent with tw_gossip_broadcast (`from`: its node name); data valid
     * during the call only. Optional. */
    void (*on_app)(void *arg, const char *from, const void *data, size_t len);
} tw_gossip_callbacks;

typedef struct tw_gossip_options {
    const char *node_name;    /* this node's name */
    const char *origin;       /* this node's origin id */
    const char *listen_addr;  /* tcp://HOST:PORT (a concrete host: peers dial it) */
    const char *const *seeds; /* peer addresses to start from (may include our own) */
    size_t nseeds;
    tw_store *store;          /* read by the gossip thread to serve events */
    uint32_t heartbeat_ms;    /* 0: 500 */
    uint32_t suspect_ms;      /* 0: 2000 */
    uint32_t dead_ms;         /* 0: 5000 */
    uint32_t probe_ms;        /* listener self-probe period; 0: 5000 */
    size_t batch_bytes;       /* event bytes per replication message; 0: 256 KiB */
    size_t fetch_batch_bytes; /* catch-up bytes in flight per origin; 0: 1 MiB */
    /* Mutual TLS between nodes (NNG tls+tcp); NULL: plain TCP. */
    const char *tls_cert_file, *tls_key_file, *tls_ca_file;
    tw_gossip_callbacks cb;
    void *cb_arg;
} tw_gossip_options;

/*
 * Starts gossip: listens, dials the seeds, starts the thread. `applied` lists what the
 * store already holds per origin (tw_store_origins: origin, last_seq) so replication
 * resumes where the log ends. On failure *out is untouched.
 */
int tw_gossip_start(tw_gossip **out, const tw_gossip_options *opts,
                    const tw_store_origin_info *applied, size_t napplied);

/*
 * Leaves the cluster: tells the peers this node is leaving (state "left"), waits up to
 * timeout_ms for every alive peer to have applied this node's origin up to its last seq
 * (so a drain loses nothing), then stops the thread and frees everything. Safe with NULL.
 * Returns 0 when every alive peer caught up, TW_GOSSIP_ECLOSED when the timeout cut it.
 * Not from a callback (it joins the thread that runs them); before tw_store_close().
 * Returns within timeout_ms plus ~3 s: NNG 1.5.2 can hang closing a socket (nng#1543),
 * and such a socket is then left behind rather than blocking the caller.
 */
int tw_gossip_stop(tw_gossip *g, uint32_t timeout_ms);

/* New local commits exist up to `last_seq` of this node's origin: push them. */
void tw_gossip_notify_local(tw_gossip *g, uint64_t last_seq);

/* The owner made remote events durable: `origin` is applied up to `seq`. */
void tw_gossip_applied(tw_gossip *g, const char *origin, uint64_t seq);

/* The owner could not append events of `origin` after `applied_seq` (store error): hand
 * them again later (after a pause). */
void tw_gossip_apply_failed(tw_gossip *g, const char *origin, uint64_t applied_seq);

/*
 * Sends an owner's message (up to 1 MiB, copied) to every member heard from and not dead or
 * gone, in the order of calls, on the pipes replication uses. Delivery is best effort, like
 * any message on them: a peer that was unreachable or whose queue was full misses it, so
 * owners resend state periodically (presence sends snapshots). Returns 0, TW_GOSSIP_EINVAL
 * (too big), TW_GOSSIP_ENOMEM, or TW_GOSSIP_ECLOSED when the outbox is over its bound
 * (8 MiB: the gossip thread is behind). Any thread.
 */
int tw_gossip_broadcast(tw_gossip *g, const void *data, size_t len);

/*
 * Copies the member list (this node first, state SELF) into out[0..cap); *n gets the count
 * (may exceed cap).
 */
void tw_gossip_members(tw_gossip *g, tw_member_info *out, size_t cap, size_t *n);

/* Members counted for quorum (all known, not left; this node included). */
size_t tw_gossip_cluster_size(tw_gossip *g);

/* 1 once every member known at start has been heard from (or declared dead) and this node
 * has caught up with what the alive peers reported: the node may serve (readyz). */
int tw_gossip_ready(tw_gossip *g);

typedef struct tw_gossip_stats {
    uint64_t msgs_sent, msgs_received, msgs_dropped; /* dropped: a full push queue */
    uint64_t events_sent, events_received;
    uint64_t fetches_sent, fetches_served;
    uint64_t bad_messages;      /* malformed or from an unknown protocol version */
    uint64_t listener_restarts; /* #1518 repairs */
    /* Heartbeats from another node using this node's name (names must be unique): they are
     * ignored. The address is the last such node's. */
    uint64_t name_conflicts;
    char name_conflict_addr[TW_GOSSIP_ADDR_MAX + 1];
} tw_gossip_stats;

void tw_gossip_get_stats(tw_gossip *g, tw_gossip_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TW_GOSSIP_H */
