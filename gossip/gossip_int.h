/*
 * gossip_int.h — internals shared by gossip.c (the thread, NNG, replication) and members.c
 * (the membership state machine), and reachable from the unit tests. Not installed.
 *
 * members.c takes a clock and facts ("heard X at t", "a peer lists Y") and never touches a
 * socket, so tests drive it with a fake clock; gossip.c owns the sockets and attaches one
 * dial (push socket) per member address through the opaque `dial` pointer.
 */
#ifndef TW_GOSSIP_INT_H
#define TW_GOSSIP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "gossip.h"
#include "gossip_wire.h"

/* One member other than this node. */
struct tw_gossip__member {
    char name[TW_STORE_NODE_NAME_MAX + 1]; /* "" for a seed address not heard from yet */
    char origin[TW_STORE_ORIGIN_MAX + 1];  /* "" until heard from */
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    tw_member_state state;
    uint64_t incarnation;   /* the member's start stamp; a restart raises it */
    uint64_t last_heard_ms; /* monotonic ms of the last message from it; 0 never */
    uint64_t since_ms;      /* when we learned of it (failure timing before first contact) */
    int from_seed;          /* known at start: readiness waits for it to be heard or dead */
    int knows_us;           /* a heartbeat of its current life named this life of ours */
    int gone;               /* left and finished draining: nothing more is sent to it */
    uint64_t acked;         /* its applied seq of this node's origin */
    uint64_t *digest;       /* per gossip origin index: its applied seq (0 unknown) */
    size_t ndigest;
    void *dial; /* gossip.c's push socket to addr; NULL until made */
};

struct tw_gossip__members {
    char self_name[TW_STORE_NODE_NAME_MAX + 1];
    struct tw_gossip__member **v;
    size_t n, cap;
};

/* What a HELLO/HEARTBEAT says about its sender. */
struct tw_gossip__heard {
    const char *name, *origin, *addr;
    uint64_t incarnation;
    uint8_t state; /* TW_MEMBER_ALIVE or TW_MEMBER_LEFT */
    const char (*aliases)[TW_GOSSIP_ADDR_MAX + 1];
    size_t naliases;
};

/* Membership changes reported to gossip.c, which then fixes dials and calls on_members. */
#define TW_GOSSIP__CHANGED 1

void tw_gossip__members_init(struct tw_gossip__members *mt, const char *self_name);
/* Frees the members; their dials must have been released by the caller. */
void tw_gossip__members_free(struct tw_gossip__members *mt);

/* Adds a seed address (unnamed member, from_seed). Duplicates are ignored. */
int tw_gossip__members_add_seed(struct tw_gossip__members *mt, const char *addr, uint64_t now);

/* A direct message from a member: creates or updates it (name, addr, origin, incarnation),
 * marks it alive (or left), merges unnamed seeds that were this member under another
 * address. *m gets the member (NULL when the sender is this node, or the message is from
 * an older incarnation: ignore it). Returns
 * TW_GOSSIP__CHANGED when membership changed, 0, or TW_GOSSIP_ENOMEM. Merged-away members
 * whose dial is set are handed to `release` before being freed. */
int tw_gossip__members_heard(struct tw_gossip__members *mt, const struct tw_gossip__heard *h,
                             uint64_t now, struct tw_gossip__member **m,
                             void (*release)(void *arg, void *dial), void *arg);

/* A member listed by a peer: learns unknown ones, takes "left" from a current incarnation.
 * Returns TW_GOSSIP__CHANGED, 0 or TW_GOSSIP_ENOMEM. */
int tw_gossip__members_learn(struct tw_gossip__members *mt, const tw_gw_member *e, uint64_t now);

/* Removes unnamed members at addr (a seed that turned out to be this node). */
int tw_gossip__members_drop_addr(struct tw_gossip__members *mt, const char *addr,
                                 void (*release)(void *arg, void *dial), void *arg);

/* Failure detection: ALIVE -> SUSPECT after suspect_ms of silence, -> DEAD after dead_ms.
 * Returns TW_GOSSIP__CHANGED when a state changed. */
int tw_gossip__members_tick(struct tw_gossip__members *mt, uint64_t now, uint32_t suspect_ms,
                            uint32_t dead_ms);

struct tw_gossip__member *tw_gossip__members_find(struct tw_gossip__members *mt, const char *name);

/* Members counted for quorum: all but the left ones, plus this node. */
size_t tw_gossip__members_cluster_size(const struct tw_gossip__members *mt);

/* Records m's applied seq for gossip origin index oi. Returns 0 or TW_GOSSIP_ENOMEM. */
int tw_gossip__member_set_digest(struct tw_gossip__member *m, size_t oi, uint64_t seq);

/* The highest seq held by a majority: acked[] of n members (this node included), sorted
 * in place. */
uint64_t tw_gossip__quorum_seq(uint64_t *acked, size_t n);

/* ---- test hooks (tests/unit only) ------------------------------------------------------ */

/* Makes the listener stop accepting as nng#1518 would (closes it behind the probe's back),
 * so a test can watch the probe notice and repair it. Any thread. */
void tw_gossip__test_stall_listener(tw_gossip *g);

#endif /* TW_GOSSIP_INT_H */
