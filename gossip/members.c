/*
 * members.c — the membership state machine: who is in the cluster and in what state.
 *
 * No sockets and no clock of its own: callers pass `now` (monotonic ms). Failure detection
 * is direct: every node hears every other one (the mesh is full), so a member's state here
 * is this node's own judgement from its last message; what peers list only teaches names
 * and addresses of members not met yet, and "left" (which only the leaving node can say,
 * so trusting it second-hand is safe as long as the incarnation is the current one).
 *
 * Members are never forgotten (quorum counts them all); the only removals are merges of an
 * unnamed seed into the member it turned out to be, and a seed that was this node itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_int.h"

void tw_gossip__members_init(struct tw_gossip__members *mt, const char *self_name)
{
    memset(mt, 0, sizeof(*mt));
    snprintf(mt->self_name, sizeof(mt->self_name), "%s", self_name);
}

static void member_free(struct tw_gossip__member *m)
{
    free(m->digest);
    free(m);
}

void tw_gossip__members_free(struct tw_gossip__members *mt)
{
    for (size_t i = 0; i < mt->n; i++)
        member_free(mt->v[i]);
    free(mt->v);
    mt->v = NULL;
    mt->n = mt->cap = 0;
}

static struct tw_gossip__member *add(struct tw_gossip__members *mt, const char *name,
                                     const char *addr, uint64_t now)
{
    struct tw_gossip__member *m;

    if (mt->n == mt->cap) {
        size_t cap = mt->cap ? mt->cap * 2 : 8;
        void *p = realloc(mt->v, cap * sizeof(*mt->v));
        if (!p) return NULL;
        mt->v = p;
        mt->cap = cap;
    }
    m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    snprintf(m->name, sizeof(m->name), "%s", name);
    snprintf(m->addr, sizeof(m->addr), "%s", addr);
    m->state = TW_MEMBER_ALIVE;
    m->since_ms = now;
    mt->v[mt->n++] = m;
    return m;
}

static void remove_at(struct tw_gossip__members *mt, size_t i,
                      void (*release)(void *arg, void *dial), void *arg)
{
    struct tw_gossip__member *m = mt->v[i];

    if (m->dial && release) release(arg, m->dial);
    member_free(m);
    memmove(&mt->v[i], &mt->v[i + 1], (mt->n - i - 1) * sizeof(*mt->v));
    mt->n--;
}

struct tw_gossip__member *tw_gossip__members_find(struct tw_gossip__members *mt, const char *name)
{
    for (size_t i = 0; i < mt->n; i++)
        if (mt->v[i]->name[0] && strcmp(mt->v[i]->name, name) == 0) return mt->v[i];
    return NULL;
}

static struct tw_gossip__member *find_unnamed(struct tw_gossip__members *mt, const char *addr)
{
    for (size_t i = 0; i < mt->n; i++)
        if (!mt->v[i]->name[0] && strcmp(mt->v[i]->addr, addr) == 0) return mt->v[i];
    return NULL;
}

int tw_gossip__members_add_seed(struct tw_gossip__members *mt, const char *addr, uint64_t now)
{
    struct tw_gossip__member *m;

    for (size_t i = 0; i < mt->n; i++)
        if (strcmp(mt->v[i]->addr, addr) == 0) return 0;
    m = add(mt, "", addr, now);
    if (!m) return TW_GOSSIP_ENOMEM;
    m->from_seed = 1;
    return 0;
}

int tw_gossip__members_drop_addr(struct tw_gossip__members *mt, const char *addr,
                                 void (*release)(void *arg, void *dial), void *arg)
{
    int changed = 0;

    for (size_t i = 0; i < mt->n;) {
        if (!mt->v[i]->name[0] && strcmp(mt->v[i]->addr, addr) == 0) {
            remove_at(mt, i, release, arg);
            changed = TW_GOSSIP__CHANGED;
        } else {
            i++;
        }
    }
    return changed;
}

/* Folds unnamed seeds at any of the member's addresses into it: they were this member all
 * along, reached under another spelling of its address. */
static int merge_unnamed(struct tw_gossip__members *mt, struct tw_gossip__member *keep,
                         const struct tw_gossip__heard *h, void (*release)(void *arg, void *dial),
                         void *arg)
{
    int changed = 0;

    for (size_t i = 0; i < mt->n;) {
        struct tw_gossip__member *u = mt->v[i];
        int same = 0;

        if (u != keep && !u->name[0]) {
            same = strcmp(u->addr, h->addr) == 0;
            for (size_t j = 0; j < h->naliases && !same; j++)
                same = strcmp(u->addr, h->aliases[j]) == 0;
        }
        if (same) {
            keep->from_seed |= u->from_seed;
            remove_at(mt, i, release, arg);
            changed = TW_GOSSIP__CHANGED;
        } else {
            i++;
        }
    }
    return changed;
}

int tw_gossip__members_heard(struct tw_gossip__members *mt, const struct tw_gossip__heard *h,
                             uint64_t now, struct tw_gossip__member **out,
                             void (*release)(void *arg, void *dial), void *arg)
{
    struct tw_gossip__member *m;
    tw_member_state before;
    int changed = 0;

    *out = NULL;
    if (strcmp(h->name, mt->self_name) == 0) return 0;
    m = tw_gossip__members_find(mt, h->name);
    if (!m) {
        m = find_unnamed(mt, h->addr);
        if (m) {
            snprintf(m->name, sizeof(m->name), "%s", h->name);
        } else {
            m = add(mt, h->name, h->addr, now);
            if (!m) return TW_GOSSIP_ENOMEM;
        }
        m->incarnation = h->incarnation;
        changed = TW_GOSSIP__CHANGED;
    }
    changed |= merge_unnamed(mt, m, h, release, arg);

    before = m->state;
    if (h->incarnation < m->incarnation) return changed; /* a message from a past life */
    if (h->state == TW_MEMBER_LEFT) {
        m->state = TW_MEMBER_LEFT;
    } else if (m->state != TW_MEMBER_LEFT || h->incarnation > m->incarnation) {
        /* "left" sticks for the incarnation that said it; a restart comes back alive */
        m->state = TW_MEMBER_ALIVE;
    }
    if (h->incarnation > m->incarnation) {
        m->acked = 0; /* a new life may be a new disk */
        m->gone = 0;
        m->knows_us = 0;
    }
    m->incarnation = h->incarnation;
    m->last_heard_ms = now;
    if (strcmp(m->origin, h->origin) != 0) {
        snprintf(m->origin, sizeof(m->origin), "%s", h->origin);
        m->acked = 0;
        changed = TW_GOSSIP__CHANGED;
    }
    if (strcmp(m->addr, h->addr) != 0) {
        snprintf(m->addr, sizeof(m->addr), "%s", h->addr);
        changed = TW_GOSSIP__CHANGED; /* gossip.c re-points the dial */
    }
    if (m->state != before) changed = TW_GOSSIP__CHANGED;
    *out = m;
    return changed;
}

int tw_gossip__members_learn(struct tw_gossip__members *mt, const tw_gw_member *e, uint64_t now)
{
    struct tw_gossip__member *m;

    if (strcmp(e->name, mt->self_name) == 0) return 0;
    m = tw_gossip__members_find(mt, e->name);
    if (!m) {
        if (e->state == TW_MEMBER_LEFT) return 0; /* never met and gone: not a member */
        m = find_unnamed(mt, e->addr);
        if (m)
            snprintf(m->name, sizeof(m->name), "%s", e->name);
        else if (!(m = add(mt, e->name, e->addr, now)))
            return TW_GOSSIP_ENOMEM;
        /* Not heard yet: it starts alive and must prove it within suspect_ms. */
        m->incarnation = e->incarnation;
        return TW_GOSSIP__CHANGED;
    }
    if (e->state == TW_MEMBER_LEFT && m->state != TW_MEMBER_LEFT &&
        e->incarnation >= m->incarnation) {
        m->state = TW_MEMBER_LEFT;
        m->incarnation = e->incarnation;
        return TW_GOSSIP__CHANGED;
    }
    return 0;
}

int tw_gossip__members_tick(struct tw_gossip__members *mt, uint64_t now, uint32_t suspect_ms,
                            uint32_t dead_ms)
{
    int changed = 0;

    for (size_t i = 0; i < mt->n; i++) {
        struct tw_gossip__member *m = mt->v[i];
        uint64_t since = m->last_heard_ms ? m->last_heard_ms : m->since_ms;
        uint64_t quiet = now > since ? now - since : 0;
        tw_member_state s;

        if (m->state == TW_MEMBER_LEFT) continue;
        s = quiet >= dead_ms      ? TW_MEMBER_DEAD
            : quiet >= suspect_ms ? TW_MEMBER_SUSPECT
                                  : TW_MEMBER_ALIVE;
        if (s != m->state) {
            m->state = s;
            changed = TW_GOSSIP__CHANGED;
        }
    }
    return changed;
}

size_t tw_gossip__members_cluster_size(const struct tw_gossip__members *mt)
{
    size_t n = 1;

    for (size_t i = 0; i < mt->n; i++)
        if (mt->v[i]->state != TW_MEMBER_LEFT) n++;
    return n;
}

int tw_gossip__member_set_digest(struct tw_gossip__member *m, size_t oi, uint64_t seq)
{
    if (oi >= m->ndigest) {
        size_t n = oi + 8;
        uint64_t *p = realloc(m->digest, n * sizeof(*p));
        if (!p) return TW_GOSSIP_ENOMEM;
        memset(p + m->ndigest, 0, (n - m->ndigest) * sizeof(*p));
        m->digest = p;
        m->ndigest = n;
    }
    /* Heartbeats of one member arrive in order on its pipe: the newest word wins, so a
     * member rebuilt on an empty disk stops being asked for what it no longer has. */
    m->digest[oi] = seq;
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

uint64_t tw_gossip__quorum_seq(uint64_t *acked, size_t n)
{
    size_t majority = n / 2 + 1;

    if (n == 0) return 0;
    qsort(acked, n, sizeof(*acked), cmp_desc);
    /* the majority-th highest: that many members hold at least this seq */
    return acked[majority - 1];
}
