/*
 * gossip.c — the gossip thread: NNG sockets, heartbeats, replication, catch-up, quorum,
 * the listener self-probe (design in gossip.h, protocol in docs/cluster.md).
 *
 * Threads. One thread of ours owns every socket but the pull socket's receive, every
 * member, origin and dial, and calls every callback. NNG's receive callback (on NNG's task
 * threads) only queues the message under `mu` and signals; the public functions only
 * record requests under `mu` and signal; the thread publishes what they read (members,
 * readiness, stats) under `mu` at the end of each turn. No callback runs with `mu` held,
 * so callbacks may call any function here but tw_gossip_stop().
 *
 * The apply invariant (gossip.h: no gap, no duplicate). Per remote origin the thread keeps
 * `handed`, the highest seq given to on_events, and only ever hands handed + 1 onwards,
 * contiguous, from one message. Anything else is dropped: a duplicate is useless, and an
 * event that arrived early is not buffered but fetched again later (simpler than a reorder
 * buffer, and costs only a re-send after a loss, which is rare on a push/pull pipe). The
 * owner's tw_gossip_apply_failed() moves `handed` back, and the events are fetched again.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/supplemental/tls/tls.h>

#include "gossip_int.h"

/* Largest message accepted: a fetch reply is capped below it (one event may be 16 MiB). */
#define RECV_MAX_BYTES ((size_t)64 << 20)
#define FETCH_MAX_BYTES ((size_t)32 << 20)
/* Messages a push socket holds for a slow or absent peer before sends fail. */
#define PUSH_SENDBUF 16
/* Received messages waiting for the thread before we stop receiving (TCP pushes back). */
#define INBOX_MAX_MSGS 4096
#define INBOX_MAX_BYTES ((size_t)64 << 20)
/* The thread's idle wake-up: timers and failure detection resolve to this. */
#define TICK_MS 20
/* Own-origin batches pushed per turn, so a burst cannot keep the thread from its inbox. */
#define PUSH_BATCHES_PER_TURN 8
/* How long stop waits for NNG to close the sockets (see close_sockets). */
#define CLOSE_WAIT_MS 3000
/* Pause after the owner could not append an origin's events. */
#define APPLY_RETRY_MS 500

const char *tw_gossip_strerror(int err)
{
    switch (err) {
#define TW_GOSSIP_STRERROR_CASE(name, value, msg)                                                  \
    case TW_GOSSIP_##name:                                                                         \
        return msg;
        TW_GOSSIP_ERRNO_MAP(TW_GOSSIP_STRERROR_CASE)
#undef TW_GOSSIP_STRERROR_CASE
    case 0:
        return "success";
    default:
        return "unknown gossip error";
    }
}

const char *tw_member_state_name(tw_member_state s)
{
    switch (s) {
    case TW_MEMBER_ALIVE:
        return "alive";
    case TW_MEMBER_SUSPECT:
        return "suspect";
    case TW_MEMBER_DEAD:
        return "dead";
    case TW_MEMBER_LEFT:
        return "left";
    case TW_MEMBER_SELF:
        return "self";
    }
    return "unknown";
}

/* A push socket to one address; shared by the members at that address. */
struct dial {
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    nng_socket sock;
    int open;
    int refs;
    uint64_t retry_ms;  /* when to try again after the socket could not be made */
    uint64_t opened_ms; /* when the socket was made (dial_renew waits suspect_ms) */
};

/* What this node knows of one origin. origins[0] is this node's own. */
struct origin {
    char id[TW_STORE_ORIGIN_MAX + 1];
    uint64_t applied;    /* durable here (owner-reported) */
    uint64_t handed;     /* highest seq given to on_events */
    uint64_t known_last; /* highest seq anyone said exists */
    int fetching;
    uint64_t fetch_deadline;
    char fetch_peer[TW_STORE_NODE_NAME_MAX + 1];
    uint64_t fetch_gate; /* last seq handed from a fetch reply: next fetch waits for it */
    uint64_t pause_until;
    uint64_t ack_sent;
    uint64_t ready_target;
    /* The last hand-over across a trimmed hole (after_trim) not yet durable: its first
     * seq, and what was handed before it. An owner that fails it reports seq - 1, which it
     * never held: the hand-over must start again from before the hole. */
    uint64_t trim_seq, trim_from;
};

/* The owner's reports, coalesced per origin until the thread takes them. */
struct pending {
    char origin[TW_STORE_ORIGIN_MAX + 1];
    uint64_t applied;
    int failed;
    uint64_t failed_seq;
};

/* An owner's message waiting for the gossip thread to send it to every live member. */
struct app_msg {
    struct app_msg *next;
    size_t len;
    unsigned char data[];
};

/* Bound on the outbox: an owner broadcasting faster than the thread sends gets ECLOSED. */
#define APP_OUTBOX_MAX (8u << 20)

struct tw_gossip {
    /* Immutable after start. */
    char name[TW_STORE_NODE_NAME_MAX + 1];
    char origin[TW_STORE_ORIGIN_MAX + 1];
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    uint64_t incarnation;
    uint32_t heartbeat_ms, suspect_ms, dead_ms, probe_ms, fetch_timeout_ms;
    size_t batch_bytes, fetch_batch_bytes;
    tw_gossip_callbacks cb;
    void *cb_arg;
    tw_store *store;

    nng_socket pull;
    nng_listener listener;
    nng_aio *recv_aio;
    pthread_t thread;
    /* Mutual TLS (tls+tcp): one config for our listener, one for every dialer; NULL when
     * the cluster runs plain TCP. */
    nng_tls_config *tls_server, *tls_client;

    /* Shared with NNG's callback and the public functions, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    nng_msg **in_v;
    size_t in_n, in_cap, in_bytes;
    int recv_parked;                     /* the receive was not re-armed: the inbox was full */
    struct app_msg *app_head, *app_tail; /* tw_gossip_broadcast's outbox, in call order */
    size_t app_bytes;
    uint64_t req_local_last;
    struct pending *pend;
    size_t npend, cappend;
    int stop_req;
    uint64_t stop_deadline;
    int stop_result;
    int test_stall;
    tw_member_info *pub;
    size_t npub, cappub, pub_cluster;
    int pub_ready;
    tw_gossip_stats pub_stats;

    /* The gossip thread's own. */
    tw_store_reader *reader;
    struct tw_gossip__members mt;
    struct dial **dials;
    size_t ndials, capdials;
    struct origin *origins;
    size_t norigins, caporigins;
    uint64_t local_last, pushed, quorum_reported;
    char aliases[TW_GW_ALIASES_MAX][TW_GOSSIP_ADDR_MAX + 1];
    size_t naliases;
    int listening;
    int ready, ready_targets_set;
    int leaving;
    int members_changed;
    uint64_t next_hb, next_probe, last_pub;
    nng_socket probe_sock; /* under TLS */
    int probe_open, probe_pending;
    uint64_t probe_nonce;
    int probe_fd; /* the raw probe connection, or -1 */
    struct sockaddr_storage probe_sa;
    socklen_t probe_salen; /* 0: no raw probe (TLS, or the address did not resolve) */
    unsigned char probe_buf[16 + 64];
    size_t probe_len, probe_sent;
    tw_gossip_stats st;
    tw_gw_buf out;
    nng_msg **work;
    size_t work_cap;
    struct pending *wpend;
    size_t wpend_cap;
    tw_gossip_event *evs;
    size_t evs_cap;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int valid_name(const char *s)
{
    size_t n = strnlen(s, TW_STORE_NODE_NAME_MAX + 1);

    if (n == 0 || n > TW_STORE_NODE_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int valid_str(const char *s, size_t max)
{
    size_t n;

    if (!s) return 0;
    n = strnlen(s, max + 1);
    return n > 0 && n <= max;
}

/* ---- origins ---------------------------------------------------------------------------- */

static ssize_t origin_find(tw_gossip *g, const char *id)
{
    for (size_t i = 0; i < g->norigins; i++)
        if (strcmp(g->origins[i].id, id) == 0) return (ssize_t)i;
    return -1;
}

/* The index of origin id, added when new; -1 when out of memory. */
static ssize_t origin_get(tw_gossip *g, const char *id)
{
    ssize_t i = origin_find(g, id);

    if (i >= 0) return i;
    if (g->norigins == g->caporigins) {
        size_t cap = g->caporigins ? g->caporigins * 2 : 8;
        void *p = realloc(g->origins, cap * sizeof(*g->origins));
        if (!p) return -1;
        g->origins = p;
        g->caporigins = cap;
    }
    memset(&g->origins[g->norigins], 0, sizeof(*g->origins));
    snprintf(g->origins[g->norigins].id, sizeof(g->origins[0].id), "%s", id);
    return (ssize_t)g->norigins++;
}

/* ---- closing sockets ------------------------------------------------------------------------ */

/*
 * NNG 1.5.2 can hang in nng_close() for good: its reaper thread waits on a task that was
 * prepared but never started (nng#1543, fixed only in later releases), and every close
 * after that waits behind it. We met it in tests when closing a socket whose pipes were
 * still receiving. So sockets are closed on a helper thread: stop waits for it a bounded
 * time, the gossip thread never waits. A wedged close leaks that socket and the helper
 * thread instead of hanging the gossip thread or the owner's shutdown.
 */
struct closer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, refs;
    size_t n;
    nng_socket socks[];
};

static void closer_unref(struct closer *c)
{
    int last;

    pthread_mutex_lock(&c->mu);
    last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last) return;
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void *closer_main(void *arg)
{
    struct closer *c = arg;

    for (size_t i = 0; i < c->n; i++)
        nng_close(c->socks[i]);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    closer_unref(c);
    return NULL;
}

/* Closes n sockets on a helper thread, waiting up to wait_ms for it (0: not at all).
 * Returns 1 when they were closed in time. */
static int close_sockets(const nng_socket *socks, size_t n, uint32_t wait_ms)
{
    pthread_condattr_t ca;
    pthread_attr_t attr;
    struct timespec ts;
    struct closer *c;
    pthread_t t;
    int ok, rc;

    if (n == 0) return 1;
    c = malloc(sizeof(*c) + n * sizeof(c->socks[0]));
    if (!c) {
        for (size_t i = 0; i < n; i++) /* no memory for the helper: close here */
            nng_close(socks[i]);
        return 1;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->done = 0;
    c->refs = 2;
    c->n = n;
    memcpy(c->socks, socks, n * sizeof(c->socks[0]));
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, closer_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        c->refs = 1;
        closer_main(c); /* no thread: close here (and free c) */
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (wait_ms && !c->done && pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
        ;
    ok = c->done;
    pthread_mutex_unlock(&c->mu);
    closer_unref(c);
    return ok;
}

/* ---- dials: one push socket per peer address ---------------------------------------------- */

/* Starts a non-blocking dial of sock to addr, with our client certificate under TLS. */
static int dial_start(tw_gossip *g, nng_socket sock, const char *addr)
{
    nng_dialer d;
    int rc;

    rc = nng_dialer_create(&d, sock, addr);
    if (rc) return rc;
    if (g->tls_client && (rc = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, g->tls_client)) != 0)
        goto out_close_dialer;
    rc = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
    if (rc) goto out_close_dialer;
    return 0;

out_close_dialer:
    nng_dialer_close(d);
    return rc;
}

static void dial_open(tw_gossip *g, struct dial *d, uint64_t now)
{
    int rc;

    if (d->open || now < d->retry_ms) return;
    if (nng_push0_open(&d->sock) != 0) goto out_retry;
    /* A few messages wait for a slow or absent peer; past that sends fail at once (the
     * receiver will fetch) instead of blocking the thread or buffering without bound. */
    nng_socket_set_int(d->sock, NNG_OPT_SENDBUF, PUSH_SENDBUF);
    nng_socket_set_ms(d->sock, NNG_OPT_RECONNMINT, 100);
    nng_socket_set_ms(d->sock, NNG_OPT_RECONNMAXT, 2000);
    rc = dial_start(g, d->sock, d->addr);
    if (rc != 0) goto out_close_sock;
    d->open = 1;
    d->opened_ms = now;
    return;

out_close_sock:
    nng_close(d->sock);
out_retry:
    d->retry_ms = now + 1000;
}

static struct dial *dial_get(tw_gossip *g, const char *addr, uint64_t now)
{
    struct dial *d;

    for (size_t i = 0; i < g->ndials; i++)
        if (strcmp(g->dials[i]->addr, addr) == 0) return g->dials[i];
    if (g->ndials == g->capdials) {
        size_t cap = g->capdials ? g->capdials * 2 : 8;
        void *p = realloc(g->dials, cap * sizeof(*g->dials));
        if (!p) return NULL;
        g->dials = p;
        g->capdials = cap;
    }
    d = calloc(1, sizeof(*d));
    if (!d) return NULL;
    snprintf(d->addr, sizeof(d->addr), "%s", addr);
    g->dials[g->ndials++] = d;
    dial_open(g, d, now);
    return d;
}

static void dial_close(struct dial *d)
{
    if (d->open) close_sockets(&d->sock, 1, 0);
    free(d);
}

/*
 * Replaces the push socket to a member with a fresh one. NNG 1.5.2 can wedge its reaper
 * (nng#1543, see close_sockets), and a push socket whose pipe was torn down then never
 * redials: we would go on hearing a restarted peer while it never hears us. So when a
 * member comes back with a new incarnation, or says it cannot hear us (it lists us as
 * suspect or dead while we hear it), we stop relying on the old socket's reconnect.
 * At most once per suspect_ms per address.
 */
static void dial_renew(tw_gossip *g, struct dial *d, uint64_t now)
{
    /* A socket younger than suspect_ms may simply not have connected yet. */
    if (!d || now - d->opened_ms < g->suspect_ms) return;
    if (d->open) close_sockets(&d->sock, 1, 0);
    d->open = 0;
    d->retry_ms = 0;
    dial_open(g, d, now);
}

/* members.c hands back the dial of a member it merges away. */
static void dial_release(void *arg, void *dialp)
{
    tw_gossip *g = arg;
    struct dial *d = dialp;

    if (--d->refs > 0) return;
    for (size_t i = 0; i < g->ndials; i++) {
        if (g->dials[i] == d) {
            g->dials[i] = g->dials[--g->ndials];
            break;
        }
    }
    dial_close(d);
}

static int is_self_addr(tw_gossip *g, const char *addr)
{
    if (strcmp(addr, g->addr) == 0) return 1;
    for (size_t i = 0; i < g->naliases; i++)
        if (strcmp(addr, g->aliases[i]) == 0) return 1;
    return 0;
}

/* Points every member at a dial for its current address. */
static void sync_dials(tw_gossip *g, uint64_t now)
{
    for (size_t i = 0; i < g->mt.n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        struct dial *d = m->dial;

        if (d && strcmp(d->addr, m->addr) != 0) {
            dial_release(g, d);
            m->dial = d = NULL;
        }
        if (!d && !is_self_addr(g, m->addr)) {
            d = dial_get(g, m->addr, now);
            if (d) {
                d->refs++;
                m->dial = d;
            }
        }
    }
    for (size_t i = 0; i < g->ndials; i++)
        dial_open(g, g->dials[i], now);
}

/* Sends the encoded message in g->out to one dial; never blocks. */
static void send_out(tw_gossip *g, struct dial *d)
{
    nng_msg *msg;

    if (g->out.err) return;
    if (!d || !d->open) {
        g->st.msgs_dropped++;
        return;
    }
    if (nng_msg_alloc(&msg, g->out.len) != 0) {
        g->st.msgs_dropped++;
        return;
    }
    memcpy(nng_msg_body(msg), g->out.p, g->out.len);
    if (nng_sendmsg(d->sock, msg, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(msg); /* a failed send leaves the message ours */
        g->st.msgs_dropped++;
        return;
    }
    g->st.msgs_sent++;
}

/* ---- heartbeats ------------------------------------------------------------------------- */

static void encode_heartbeat(tw_gossip *g, uint8_t type, const char *to_addr)
{
    size_t n = 0, nd = 0;

    tw_gw_buf_reset(&g->out);
    tw_gw_put_header(&g->out, type, g->name, g->incarnation);
    for (size_t i = 0; i < g->mt.n; i++)
        if (g->mt.v[i]->name[0]) n++;
    if (n > UINT16_MAX) n = UINT16_MAX;
    tw_gw_put_hb_start(&g->out, g->origin, g->addr, to_addr,
                       g->leaving ? TW_MEMBER_LEFT : TW_MEMBER_ALIVE, (uint16_t)n);
    for (size_t i = 0, k = 0; i < g->mt.n && k < n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        if (!m->name[0]) continue;
        tw_gw_put_hb_member(&g->out, m->name, m->addr, (uint8_t)m->state, m->incarnation);
        k++;
    }
    tw_gw_put_u16(&g->out, (uint16_t)g->naliases);
    for (size_t i = 0; i < g->naliases; i++)
        tw_gw_put_str(&g->out, g->aliases[i], strlen(g->aliases[i]), TW_GOSSIP_ADDR_MAX);
    /* Digest: what this node holds of each origin (its own: everything committed). */
    for (size_t i = 0; i < g->norigins; i++)
        if (i == 0 || g->origins[i].applied) nd++;
    if (nd > UINT16_MAX) nd = UINT16_MAX;
    tw_gw_put_u16(&g->out, (uint16_t)nd);
    for (size_t i = 0, k = 0; i < g->norigins && k < nd; i++) {
        if (i != 0 && !g->origins[i].applied) continue;
        tw_gw_put_digest(&g->out, g->origins[i].id, i == 0 ? g->local_last : g->origins[i].applied);
        k++;
    }
}

/* To one member: a HELLO (answer at once) while it has never been heard, else HEARTBEAT. */
static void send_heartbeat(tw_gossip *g, struct tw_gossip__member *m, int hello)
{
    if (!m->dial) return;
    encode_heartbeat(g, hello ? TW_GW_HELLO : TW_GW_HEARTBEAT, m->addr);
    send_out(g, m->dial);
}

static void heartbeat_all(tw_gossip *g, uint64_t now)
{
    for (size_t i = 0; i < g->mt.n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        /* A member that left is still draining until it says it is gone: keep it hearing
         * from us, or it would judge us suspect and stop waiting for our acks. Once gone,
         * silence: its pull socket is about to close (see close_sockets). */
        if (m->state == TW_MEMBER_LEFT && (m->gone || now - m->last_heard_ms > g->dead_ms))
            continue;
        send_heartbeat(g, m, m->last_heard_ms == 0);
    }
}

static void add_alias(tw_gossip *g, const char *addr)
{
    if (is_self_addr(g, addr) || g->naliases == TW_GW_ALIASES_MAX) return;
    snprintf(g->aliases[g->naliases++], TW_GOSSIP_ADDR_MAX + 1, "%s", addr);
}

static void on_heartbeat(tw_gossip *g, const tw_gw_msg *m, uint64_t now)
{
    struct tw_gossip__member *mem, *prev;
    uint64_t prev_inc;
    struct tw_gossip__heard h;
    int rc;

    if (strcmp(m->sender, g->name) == 0) {
        if (m->incarnation != g->incarnation || strcmp(m->origin, g->origin) != 0) {
            /* Not this life of ours (that one reaches us only through a seed address that
             * is our own): another node goes by our name. Ignored, counted, and reported
             * to the owner once per new address. */
            g->st.name_conflicts++;
            if (strcmp(g->st.name_conflict_addr, m->addr) != 0) {
                snprintf(g->st.name_conflict_addr, sizeof(g->st.name_conflict_addr), "%s", m->addr);
                g->members_changed = 1;
            }
            return;
        }
        /* Our own heartbeat: a seed address was this node under another spelling. */
        if (m->to_addr[0] && !is_self_addr(g, m->to_addr)) {
            add_alias(g, m->to_addr);
            if (tw_gossip__members_drop_addr(&g->mt, m->to_addr, dial_release, g))
                g->members_changed = 1;
        }
        return;
    }
    /* Someone reached us at an address that is not our listen address: tell everyone, so
     * nodes holding it as an unnamed seed can fold it into us. */
    if (m->to_addr[0] && !is_self_addr(g, m->to_addr)) add_alias(g, m->to_addr);

    prev = tw_gossip__members_find(&g->mt, m->sender);
    prev_inc = prev ? prev->incarnation : 0;
    h.name = m->sender;
    h.origin = m->origin;
    h.addr = m->addr;
    h.incarnation = m->incarnation;
    h.state = m->state == TW_MEMBER_LEFT ? TW_MEMBER_LEFT : TW_MEMBER_ALIVE;
    h.aliases = (const char(*)[TW_GOSSIP_ADDR_MAX + 1]) m->aliases;
    h.naliases = m->naliases;
    rc = tw_gossip__members_heard(&g->mt, &h, now, &mem, dial_release, g);
    if (rc > 0) g->members_changed = 1;
    if (rc < 0 || !mem) return;
    /* A restart tore down our pipe to its old life: do not wait on NNG's redial. */
    if (prev == mem && prev_inc && m->incarnation > prev_inc) dial_renew(g, mem->dial, now);
    for (size_t i = 0; i < m->nmembers; i++) {
        const tw_gw_member *e = &m->members[i];
        /* It lists this life of ours as suspect or dead although it talks to us: our pipe
         * to it is broken one way. (An older life listed dead is only news not yet
         * arrived.) */
        if (strcmp(e->name, g->name) == 0) {
            if (e->incarnation == g->incarnation) mem->knows_us = 1;
            if ((e->state == TW_MEMBER_SUSPECT || e->state == TW_MEMBER_DEAD) &&
                e->incarnation == g->incarnation && !g->leaving)
                dial_renew(g, mem->dial, now);
            continue;
        }
        if (tw_gossip__members_learn(&g->mt, e, now) > 0) g->members_changed = 1;
    }
    /* members_learn may have grown the table, but members are separately allocated:
     * mem stays valid. */
    for (size_t i = 0; i < m->ndigest; i++) {
        const tw_gw_digest *d = &m->digest[i];
        ssize_t oi;

        if (strcmp(d->origin, g->origin) == 0) {
            if (d->seq > mem->acked && d->seq <= g->local_last) mem->acked = d->seq;
            continue;
        }
        oi = origin_get(g, d->origin);
        if (oi < 0) continue;
        tw_gossip__member_set_digest(mem, (size_t)oi, d->seq);
        if (d->seq > g->origins[oi].known_last) g->origins[oi].known_last = d->seq;
    }
    if (g->members_changed) sync_dials(g, now);
    if (m->type == TW_GW_HELLO) send_heartbeat(g, mem, 0);
}

/* ---- replication -------------------------------------------------------------------------- */

struct batch {
    tw_gossip *g;
    uint64_t first, next; /* first seq in the batch; the seq the next event must have */
    uint32_t count;
};

static int batch_add(void *arg, const tw_store_event *ev)
{
    struct batch *b = arg;

    if (b->count == 0) {
        b->first = ev->seq;
    } else if (ev->seq != b->next) {
        return 1; /* never send a run with a hole: the decoder would refuse it */
    }
    tw_gw_put_event(&b->g->out, ev->seq, ev->ts_ms, ev->encoding, ev->channel, ev->channel_len,
                    ev->data, ev->data_len);
    b->next = ev->seq + 1;
    b->count++;
    return b->count == UINT32_MAX;
}

/* Encodes into g->out an EVENTS message of `origin` from seq `from`, at most max_bytes of
 * data (one event at least). Returns the number of events; *last gets the last seq. */
static uint32_t encode_events(tw_gossip *g, const char *origin, uint64_t from, size_t max_bytes,
                              uint8_t flags, uint64_t last_known, uint64_t *last)
{
    struct batch b = {g, from, from, 0};
    uint64_t last_seq = 0;
    size_t count_off;

    tw_gw_buf_reset(&g->out);
    tw_gw_put_header(&g->out, TW_GW_EVENTS, g->name, g->incarnation);
    tw_gw_put_events_start(&g->out, origin, flags, last_known, from, &count_off);
    if (tw_store_read_origin(g->reader, origin, from, 0, max_bytes, batch_add, &b, &last_seq) !=
        0) {
        /* A store error serves nothing this time: send what was read, or an empty reply. */
        tw_gw_buf_reset(&g->out);
        tw_gw_put_header(&g->out, TW_GW_EVENTS, g->name, g->incarnation);
        tw_gw_put_events_start(&g->out, origin, flags, last_known, from, &count_off);
        b.count = 0;
    }
    tw_gw_events_finish(&g->out, count_off, b.count ? b.first : from, b.count);
    *last = b.count ? b.next - 1 : 0;
    return b.count;
}

/* Pushes this node's new commits to every live peer; a peer whose queue is full misses
 * them and fetches later (it sees the gap in the next batch or the digest). */
static void push_local(tw_gossip *g)
{
    for (int turn = 0; turn < PUSH_BATCHES_PER_TURN && g->pushed < g->local_last; turn++) {
        uint64_t last;
        uint32_t n =
            encode_events(g, g->origin, g->pushed + 1, g->batch_bytes, 0, g->local_last, &last);
        if (n == 0 || g->out.err) break;
        for (size_t i = 0; i < g->mt.n; i++) {
            struct tw_gossip__member *m = g->mt.v[i];
            if (!m->name[0] || !m->dial ||
                (m->state != TW_MEMBER_ALIVE && m->state != TW_MEMBER_SUSPECT))
                continue;
            send_out(g, m->dial);
            g->st.events_sent += n;
        }
        g->pushed = last;
    }
}

static void on_events(tw_gossip *g, const tw_gw_msg *m, uint64_t now)
{
    struct tw_gossip__member *sender = tw_gossip__members_find(&g->mt, m->sender);
    uint64_t last_in = m->nevents ? m->first_seq + m->nevents - 1 : 0;
    struct origin *o;
    size_t start, n;
    ssize_t oi;
    int fetch_reply, after_trim;

    g->st.events_received += m->nevents;
    if (strcmp(m->origin, g->origin) == 0) return; /* our own events coming back */
    oi = origin_get(g, m->origin);
    if (oi < 0) return;
    o = &g->origins[oi];
    if (m->last_known > o->known_last) o->known_last = m->last_known;
    if (last_in > o->known_last) o->known_last = last_in;
    if (sender) tw_gossip__member_set_digest(sender, (size_t)oi, m->last_known);
    if (now < o->pause_until || m->nevents == 0) return;
    if (last_in <= o->handed) return; /* all seen */
    /* The reply to our fetch from handed + 1 (handed only grows) holds every seq its sender
     * has from there: a first seq beyond handed + 1 means the ones between are trimmed
     * there, and since a store keeps an origin's seqs without holes of its own, nobody
     * will send them. Anything else that starts beyond handed + 1 is early: dropped, and
     * fetched. */
    fetch_reply =
        (m->flags & TW_GW_EV_FETCH_REPLY) && o->fetching && strcmp(o->fetch_peer, m->sender) == 0;
    after_trim = m->first_seq > o->handed + 1;
    if (after_trim && !fetch_reply) return;
    /* A reply that moves us on ends the fetch; one that does not leaves it to time out,
     * which paces the retries. */
    if (fetch_reply) o->fetching = 0;
    start = after_trim ? 0 : (size_t)(o->handed + 1 - m->first_seq);
    n = m->nevents - start;
    if (n > g->evs_cap) {
        void *p = realloc(g->evs, n * sizeof(*g->evs));
        if (!p) return; /* dropped: fetched again later */
        g->evs = p;
        g->evs_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        const tw_gw_event *e = &m->events[start + i];
        tw_gossip_event *x = &g->evs[i];
        x->origin = o->id;
        x->seq = e->seq;
        x->ts_ms = e->ts_ms;
        x->channel = e->channel;
        x->channel_len = e->channel_len;
        x->data = e->data;
        x->data_len = e->data_len;
        x->encoding = e->encoding;
        x->after_trim = i == 0 && after_trim;
    }
    if (after_trim) {
        o->trim_seq = m->first_seq;
        o->trim_from = o->handed;
    }
    o->handed = last_in;
    if (m->flags & TW_GW_EV_FETCH_REPLY) o->fetch_gate = last_in;
    if (g->cb.on_events) g->cb.on_events(g->cb_arg, g->evs, n);
}

static void on_fetch(tw_gossip *g, const tw_gw_msg *m)
{
    struct tw_gossip__member *peer = tw_gossip__members_find(&g->mt, m->sender);
    size_t max = m->max_bytes ? m->max_bytes : g->fetch_batch_bytes;
    uint64_t last_known = 0, last;
    ssize_t oi;
    uint32_t n;

    if (!peer || !peer->dial) return; /* not met yet: it asks again after our HELLO */
    if (max > FETCH_MAX_BYTES) max = FETCH_MAX_BYTES;
    oi = origin_find(g, m->origin);
    if (oi == 0)
        last_known = g->local_last;
    else if (oi > 0)
        last_known = g->origins[oi].applied;
    n = encode_events(g, m->origin, m->seq, max, TW_GW_EV_FETCH_REPLY, last_known, &last);
    g->st.fetches_served++;
    send_out(g, peer->dial);
    if (!g->out.err) g->st.events_sent += n;
}

static void on_ack(tw_gossip *g, const tw_gw_msg *m)
{
    struct tw_gossip__member *peer = tw_gossip__members_find(&g->mt, m->sender);

    if (!peer || strcmp(m->origin, g->origin) != 0) return;
    if (m->seq > peer->acked && m->seq <= g->local_last) peer->acked = m->seq;
}

/* The peer to fetch origin oi from: the origin's own node when it is alive, else the live
 * peer that says it holds the most of it. */
static struct tw_gossip__member *fetch_peer(tw_gossip *g, size_t oi)
{
    struct origin *o = &g->origins[oi];
    struct tw_gossip__member *best = NULL;
    uint64_t best_seq = o->handed;

    for (size_t i = 0; i < g->mt.n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        if (m->state != TW_MEMBER_ALIVE || !m->dial || !m->name[0]) continue;
        if (strcmp(m->origin, o->id) == 0) return m;
        if (oi < m->ndigest && m->digest[oi] > best_seq) {
            best = m;
            best_seq = m->digest[oi];
        }
    }
    return best;
}

/*
 * Catch-up pacing: one FETCH in flight per origin, of at most fetch_batch_bytes, and the
 * next one only once the owner has applied what the previous reply handed it. A node back
 * after an hour thus pulls one batch per commit per origin, while live events of caught-up
 * origins keep flowing beside it.
 */
static void fetch_tick(tw_gossip *g, uint64_t now)
{
    for (size_t oi = 1; oi < g->norigins; oi++) {
        struct origin *o = &g->origins[oi];
        struct tw_gossip__member *peer;

        if (now < o->pause_until) continue;
        if (o->fetching) {
            if (now < o->fetch_deadline) continue;
            o->fetching = 0; /* lost request or reply: ask again, maybe someone else */
        }
        if (o->handed >= o->known_last || o->applied < o->fetch_gate) continue;
        peer = fetch_peer(g, oi);
        if (!peer) continue;
        tw_gw_buf_reset(&g->out);
        tw_gw_put_header(&g->out, TW_GW_FETCH, g->name, g->incarnation);
        tw_gw_put_fetch(&g->out, o->id, o->handed + 1,
                        g->fetch_batch_bytes > UINT32_MAX ? UINT32_MAX
                                                          : (uint32_t)g->fetch_batch_bytes);
        send_out(g, peer->dial);
        g->st.fetches_sent++;
        o->fetching = 1;
        o->fetch_deadline = now + g->fetch_timeout_ms;
        snprintf(o->fetch_peer, sizeof(o->fetch_peer), "%s", peer->name);
    }
}

/* Tells each origin's node what we applied of it (it counts quorum from these, and a
 * draining node — state left — waits for them before it exits). */
static void send_acks(tw_gossip *g)
{
    for (size_t oi = 1; oi < g->norigins; oi++) {
        struct origin *o = &g->origins[oi];
        if (o->applied <= o->ack_sent) continue;
        o->ack_sent = o->applied;
        for (size_t i = 0; i < g->mt.n; i++) {
            struct tw_gossip__member *m = g->mt.v[i];
            if (m->dial && strcmp(m->origin, o->id) == 0) {
                tw_gw_buf_reset(&g->out);
                tw_gw_put_header(&g->out, TW_GW_ACK, g->name, g->incarnation);
                tw_gw_put_ack(&g->out, o->id, o->applied);
                send_out(g, m->dial);
            }
        }
    }
}

static void apply_pending(tw_gossip *g, const struct pending *p, uint64_t now)
{
    ssize_t oi = origin_get(g, p->origin);
    struct origin *o;

    if (oi <= 0) return; /* out of memory, or our own origin (not the owner's to report) */
    o = &g->origins[oi];
    if (p->applied > o->applied) o->applied = p->applied;
    if (o->applied > o->handed) o->handed = o->applied;
    if (o->applied > o->known_last) o->known_last = o->applied;
    if (o->trim_seq && o->applied >= o->trim_seq) o->trim_seq = 0;
    if (p->failed) {
        /* Hand again from what is durable, after a pause (the store may be full). */
        uint64_t from = p->failed_seq;
        if (o->trim_seq && from + 1 >= o->trim_seq) from = o->trim_from; /* hole unapplied */
        o->handed = from > o->applied ? from : o->applied;
        o->fetch_gate = 0;
        o->fetching = 0;
        o->pause_until = now + APPLY_RETRY_MS;
    }
}

static void update_quorum(tw_gossip *g)
{
    uint64_t stack[16], *acked = stack, q;
    size_t n = 1;

    if (!g->cb.on_quorum) return;
    if (g->mt.n + 1 > 16) {
        acked = malloc((g->mt.n + 1) * sizeof(*acked));
        if (!acked) return;
    }
    acked[0] = g->local_last;
    for (size_t i = 0; i < g->mt.n; i++)
        if (g->mt.v[i]->state != TW_MEMBER_LEFT) acked[n++] = g->mt.v[i]->acked;
    q = tw_gossip__quorum_seq(acked, n);
    if (acked != stack) free(acked);
    if (q > g->quorum_reported) {
        g->quorum_reported = q;
        g->cb.on_quorum(g->cb_arg, q);
    }
}

/*
 * Ready: every member known at start was heard or declared dead, and this node applied,
 * of each origin, what the live peers reported when that first became true (a snapshot:
 * under live traffic the peers' figures move on, and chasing them could never end).
 * Once ready the node stays ready.
 */
/*
 * Readiness: every seed heard from (or dead), then caught up with the digests the alive
 * ones reported. A seed counts as heard only once a heartbeat of it names this life of
 * ours: while we were down its push socket kept heartbeats queued for us (up to
 * NNG_OPT_SENDBUF of them), and they arrive first when we come back, with digests from
 * before what was published meanwhile; a target taken from them made a restarted node
 * ready before it had caught up. Its answer to our HELLO comes after them on the same
 * pipe. A seed that never names us (a one-way broken pipe) stops counting after dead_ms.
 */
static void update_ready(tw_gossip *g, uint64_t now)
{
    if (g->ready) return;
    if (!g->ready_targets_set) {
        for (size_t i = 0; i < g->mt.n; i++) {
            struct tw_gossip__member *m = g->mt.v[i];
            int heard = m->last_heard_ms && (m->knows_us || now - m->since_ms >= g->dead_ms);
            if (m->from_seed && !heard && m->state != TW_MEMBER_DEAD) return;
        }
        for (size_t oi = 1; oi < g->norigins; oi++) {
            struct origin *o = &g->origins[oi];
            o->ready_target = o->applied;
            for (size_t i = 0; i < g->mt.n; i++) {
                struct tw_gossip__member *m = g->mt.v[i];
                if (m->state == TW_MEMBER_ALIVE && oi < m->ndigest &&
                    m->digest[oi] > o->ready_target)
                    o->ready_target = m->digest[oi];
            }
        }
        g->ready_targets_set = 1;
    }
    for (size_t oi = 1; oi < g->norigins; oi++)
        if (g->origins[oi].applied < g->origins[oi].ready_target) return;
    g->ready = 1;
}

/* ---- the listener and its probe (nng#1518) ------------------------------------------------ */

static int listen_start(tw_gossip *g)
{
    int rc;

    g->listening = 0;
    rc = nng_listener_create(&g->listener, g->pull, g->addr);
    if (rc) return rc;
    if (g->tls_server &&
        (rc = nng_listener_set_ptr(g->listener, NNG_OPT_TLS_CONFIG, g->tls_server)) != 0)
        goto out_close_listener;
    rc = nng_listener_start(g->listener, 0);
    if (rc) goto out_close_listener;
    g->listening = 1;
    return 0;

out_close_listener:
    nng_listener_close(g->listener);
    return rc;
}

static void probe_close(tw_gossip *g)
{
    if (g->probe_fd >= 0) {
        close(g->probe_fd);
        g->probe_fd = -1;
    }
    if (g->probe_open) {
        close_sockets(&g->probe_sock, 1, 0);
        g->probe_open = 0;
    }
}

/* Resolves our own tcp:// listen address once, for the raw probe (a blocking lookup has
 * no place on the gossip thread later). Returns 0 when the raw probe can be used. */
static int probe_resolve(tw_gossip *g)
{
    struct addrinfo hints = {0}, *res = NULL;
    char host[TW_GOSSIP_ADDR_MAX + 1], *port;
    const char *a = g->addr + 6; /* after "tcp://" */
    size_t len;

    if (strncmp(g->addr, "tcp://", 6) != 0) return -1;
    port = strrchr(a, ':');
    if (!port || port == a) return -1;
    len = (size_t)(port - a);
    if (a[0] == '[' && len >= 2 && a[len - 1] == ']') { /* [v6]:port */
        a++;
        len -= 2;
    }
    memcpy(host, a, len);
    host[len] = '\0';
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, port + 1, &hints, &res) != 0 || !res) return -1;
    if (res->ai_addrlen <= sizeof(g->probe_sa)) {
        memcpy(&g->probe_sa, res->ai_addr, res->ai_addrlen);
        g->probe_salen = res->ai_addrlen;
    }
    freeaddrinfo(res);
    return g->probe_salen ? 0 : -1;
}

/* The probe as a peer would send it over a new connection: the SP header of a push
 * socket, then one length-prefixed message (the SP/TCP framing). */
static void probe_frame(tw_gossip *g)
{
    static const unsigned char sp_push[8] = {0, 'S', 'P', 0, 0, 0x50, 0, 0};
    unsigned char *p = g->probe_buf;
    uint64_t len;

    tw_gw_buf_reset(&g->out);
    tw_gw_put_header(&g->out, TW_GW_PROBE, g->name, g->incarnation);
    tw_gw_put_probe(&g->out, g->probe_nonce);
    len = g->out.len;
    memcpy(p, sp_push, 8);
    for (int i = 0; i < 8; i++)
        p[8 + i] = (unsigned char)(len >> (56 - 8 * i));
    memcpy(p + 16, g->out.p, g->out.len);
    g->probe_len = 16 + g->out.len;
    g->probe_sent = 0;
}

/* Writes what is left of the raw probe; a refused or reset connection is a miss. */
static void probe_io(tw_gossip *g)
{
    ssize_t n;

    if (g->probe_fd < 0 || g->probe_sent >= g->probe_len) return;
    n = send(g->probe_fd, g->probe_buf + g->probe_sent, g->probe_len - g->probe_sent, MSG_NOSIGNAL);
    if (n > 0) {
        g->probe_sent += (size_t)n;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
               errno != ENOTCONN) {
        close(g->probe_fd); /* stays pending: the next tick counts the miss */
        g->probe_fd = -1;
    }
}

/* The fallback probe under TLS: a fresh NNG push socket (the handshake needs NNG). */
static void probe_start_nng(tw_gossip *g)
{
    nng_msg *msg;

    if (nng_push0_open(&g->probe_sock) != 0) return;
    g->probe_open = 1;
    nng_socket_set_int(g->probe_sock, NNG_OPT_SENDBUF, 1);
    nng_socket_set_ms(g->probe_sock, NNG_OPT_RECONNMINT, 100);
    if (dial_start(g, g->probe_sock, g->addr) != 0) {
        g->probe_pending = 1; /* counts as a miss: could not even dial */
        return;
    }
    tw_gw_buf_reset(&g->out);
    tw_gw_put_header(&g->out, TW_GW_PROBE, g->name, g->incarnation);
    tw_gw_put_probe(&g->out, g->probe_nonce);
    if (g->out.err || nng_msg_alloc(&msg, g->out.len) != 0) return;
    memcpy(nng_msg_body(msg), g->out.p, g->out.len);
    /* SENDBUF 1 holds it until the dial connects */
    if (nng_sendmsg(g->probe_sock, msg, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(msg);
        return;
    }
    g->probe_pending = 1;
}

/*
 * Every probe_ms a new connection to our own address carries PROBE(nonce) to the pull
 * socket. The connection must be new each time: #1518 stops a listener from accepting
 * new connections while pipes already up keep working, so a long-lived probe connection
 * would go on passing through a stalled listener. A probe still missing when the next one
 * is due means the listener no longer accepts: close it and listen again.
 *
 * On tcp:// the probe is a raw TCP connection speaking the SP framing itself. A fresh NNG
 * socket per probe would do the same, but closing NNG sockets is what can deadlock in
 * 1.5.2 (nng#1543, a reaper race fixed only later), and a probe closes one every period;
 * a raw connection is closed with close(2). Under TLS the probe needs NNG's handshake
 * and uses a push socket.
 */
static void probe_tick(tw_gossip *g, uint64_t now)
{
    int fd;

    probe_io(g);
    if (now < g->next_probe) return;
    g->next_probe = now + g->probe_ms;
    probe_close(g); /* first: a half-done probe handshake must not hold up the listener */
    if (g->probe_pending || !g->listening) {
        if (g->listening) nng_listener_close(g->listener);
        g->listening = 0;
        if (listen_start(g) == 0) g->st.listener_restarts++;
    }
    g->probe_pending = 0;
    if (!g->listening) return;
    g->probe_nonce++;
    if (!g->probe_salen) {
        probe_start_nng(g);
        return;
    }
    g->probe_pending = 1; /* until the message comes back */
    fd = socket(g->probe_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (connect(fd, (struct sockaddr *)&g->probe_sa, g->probe_salen) != 0 && errno != EINPROGRESS) {
        close(fd);
        return;
    }
    g->probe_fd = fd;
    probe_frame(g);
    probe_io(g);
}

static void on_probe(tw_gossip *g, const tw_gw_msg *m)
{
    if (strcmp(m->sender, g->name) != 0 || m->incarnation != g->incarnation) return;
    if (m->nonce == g->probe_nonce && g->probe_pending) {
        g->probe_pending = 0;
        /* The raw connection has done its job: free it now. An NNG probe socket is left
         * for the next tick, so sockets are closed at the probe's pace, never faster. */
        if (g->probe_fd >= 0) {
            close(g->probe_fd);
            g->probe_fd = -1;
        }
    }
}

/* ---- the thread --------------------------------------------------------------------------- */

static void recv_cb(void *arg)
{
    tw_gossip *g = arg;
    int rv = nng_aio_result(g->recv_aio);
    nng_msg *msg;
    int park;

    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) return; /* stopping: do not re-arm */
    if (rv != 0) {
        nng_recv_aio(g->pull, g->recv_aio);
        return;
    }
    msg = nng_aio_get_msg(g->recv_aio);
    pthread_mutex_lock(&g->mu);
    if (g->in_n == g->in_cap) {
        size_t cap = g->in_cap ? g->in_cap * 2 : 64;
        void *p = realloc(g->in_v, cap * sizeof(*g->in_v));
        if (!p) {
            pthread_mutex_unlock(&g->mu);
            nng_msg_free(msg); /* lost like any message: the digest brings it back */
            nng_recv_aio(g->pull, g->recv_aio);
            return;
        }
        g->in_v = p;
        g->in_cap = cap;
    }
    g->in_v[g->in_n++] = msg;
    g->in_bytes += nng_msg_len(msg);
    /* A full inbox stops receiving: TCP then pushes back on the senders, whose queues fill
     * and drop, and the thread re-arms once it caught up. */
    park = g->in_n >= INBOX_MAX_MSGS || g->in_bytes >= INBOX_MAX_BYTES;
    g->recv_parked = park;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (!park) nng_recv_aio(g->pull, g->recv_aio);
}

static void handle_msg(tw_gossip *g, nng_msg *msg, uint64_t now)
{
    tw_gw_msg m;

    if (tw_gw_decode(nng_msg_body(msg), nng_msg_len(msg), &m) != 0) {
        g->st.bad_messages++;
        return;
    }
    g->st.msgs_received++;
    switch (m.type) {
    case TW_GW_HELLO:
    case TW_GW_HEARTBEAT:
        on_heartbeat(g, &m, now);
        break;
    case TW_GW_EVENTS:
        on_events(g, &m, now);
        break;
    case TW_GW_FETCH:
        on_fetch(g, &m);
        break;
    case TW_GW_ACK:
        on_ack(g, &m);
        break;
    case TW_GW_LEAVE: {
        struct tw_gossip__member *peer = tw_gossip__members_find(&g->mt, m.sender);
        if (!peer || m.incarnation < peer->incarnation) break;
        if (peer->state != TW_MEMBER_LEFT) g->members_changed = 1;
        peer->state = TW_MEMBER_LEFT;
        peer->incarnation = m.incarnation;
        if (m.flags) peer->gone = 1;
        break;
    }
    case TW_GW_PROBE:
        on_probe(g, &m);
        break;
    case TW_GW_APP: {
        /* Only from members we know: anyone can speak SP to the port. */
        struct tw_gossip__member *peer = tw_gossip__members_find(&g->mt, m.sender);
        if (peer && g->cb.on_app) g->cb.on_app(g->cb_arg, m.sender, m.app, m.app_len);
        break;
    }
    }
    tw_gw_msg_free(&m);
}

/* Copies what the other threads read. */
static void publish(tw_gossip *g, uint64_t now)
{
    size_t n = g->mt.n + 1;

    pthread_mutex_lock(&g->mu);
    if (n > g->cappub) {
        void *p = realloc(g->pub, n * sizeof(*g->pub));
        if (!p) goto out_unlock;
        g->pub = p;
        g->cappub = n;
    }
    memset(&g->pub[0], 0, sizeof(g->pub[0]));
    snprintf(g->pub[0].name, sizeof(g->pub[0].name), "%s", g->name);
    snprintf(g->pub[0].origin, sizeof(g->pub[0].origin), "%s", g->origin);
    snprintf(g->pub[0].addr, sizeof(g->pub[0].addr), "%s", g->addr);
    g->pub[0].state = TW_MEMBER_SELF;
    g->pub[0].last_heard_ms = now;
    for (size_t i = 0; i < g->mt.n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        tw_member_info *x = &g->pub[i + 1];
        memcpy(x->name, m->name, sizeof(x->name));
        memcpy(x->origin, m->origin, sizeof(x->origin));
        memcpy(x->addr, m->addr, sizeof(x->addr));
        x->state = m->state;
        x->last_heard_ms = m->last_heard_ms;
        x->replication_lag = g->local_last > m->acked ? g->local_last - m->acked : 0;
    }
    g->npub = n;
    g->pub_cluster = tw_gossip__members_cluster_size(&g->mt);
    g->pub_ready = g->ready;
    g->pub_stats = g->st;
out_unlock:
    pthread_mutex_unlock(&g->mu);
}

/* Stop may end once every alive peer applied our origin up to our last seq. */
static int peers_caught_up(tw_gossip *g)
{
    for (size_t i = 0; i < g->mt.n; i++) {
        struct tw_gossip__member *m = g->mt.v[i];
        if (m->state == TW_MEMBER_ALIVE && m->name[0] && m->acked < g->local_last) return 0;
    }
    return 1;
}

/* LEAVE to every address we dial: draining (gone 0) at the start of stop, gone (1) at
 * the end, so peers stop sending before our sockets close. */
static void send_leave(tw_gossip *g, int gone)
{
    g->leaving = 1;
    for (size_t i = 0; i < g->ndials; i++) {
        tw_gw_buf_reset(&g->out);
        tw_gw_put_header(&g->out, TW_GW_LEAVE, g->name, g->incarnation);
        tw_gw_put_leave(&g->out, gone);
        send_out(g, g->dials[i]);
    }
}

static void timed_wait(tw_gossip *g, uint32_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&g->cv, &g->mu, &ts);
}

/* The owner's broadcasts: to every member heard from that is not dead or gone. */
static void send_apps(tw_gossip *g, struct app_msg *apps)
{
    for (struct app_msg *a = apps, *next; a; a = next) {
        next = a->next;
        tw_gw_buf_reset(&g->out);
        tw_gw_put_header(&g->out, TW_GW_APP, g->name, g->incarnation);
        tw_gw_put_app(&g->out, a->data, (uint32_t)a->len);
        for (size_t i = 0; i < g->mt.n; i++) {
            struct tw_gossip__member *m = g->mt.v[i];
            if (!m->name[0] || m->state == TW_MEMBER_DEAD || m->gone || !m->dial) continue;
            send_out(g, m->dial);
        }
        free(a);
    }
}

static void *gossip_main(void *arg)
{
    tw_gossip *g = arg;
    uint64_t now = mono_ms(), done_at = 0;
    size_t nwork, npend;
    int stop, stall, rearm;
    uint64_t deadline, req_last;

    sync_dials(g, now);
    heartbeat_all(g, now);
    g->next_hb = now + g->heartbeat_ms;
    g->next_probe = now + g->probe_ms;
    publish(g, now);

    for (;;) {
        pthread_mutex_lock(&g->mu);
        if (g->in_n == 0 && g->npend == 0 && g->req_local_last <= g->local_last &&
            !(g->stop_req && !g->leaving) && !g->test_stall && !g->app_head)
            timed_wait(g, TICK_MS);
        struct app_msg *apps = g->app_head;
        g->app_head = g->app_tail = NULL;
        g->app_bytes = 0;
        /* Take everything queued: the inbox, the owner's reports, the flags. */
        nwork = g->in_n;
        if (nwork > g->work_cap) {
            void *p = realloc(g->work, nwork * sizeof(*g->work));
            if (p) {
                g->work = p;
                g->work_cap = nwork;
            } else {
                nwork = g->work_cap;
            }
        }
        if (nwork) {
            memcpy(g->work, g->in_v, nwork * sizeof(*g->work));
            memmove(g->in_v, g->in_v + nwork, (g->in_n - nwork) * sizeof(*g->in_v));
            g->in_n -= nwork;
        }
        for (size_t i = 0; i < nwork; i++)
            g->in_bytes -= nng_msg_len(g->work[i]);
        rearm = g->recv_parked && g->in_n < INBOX_MAX_MSGS && g->in_bytes < INBOX_MAX_BYTES;
        if (rearm) g->recv_parked = 0;
        npend = g->npend;
        if (npend > g->wpend_cap) {
            void *p = realloc(g->wpend, npend * sizeof(*g->wpend));
            if (p) {
                g->wpend = p;
                g->wpend_cap = npend;
            } else {
                npend = 0; /* keep them queued for the next turn */
            }
        }
        if (npend) {
            memcpy(g->wpend, g->pend, npend * sizeof(*g->wpend));
            g->npend = 0;
        }
        req_last = g->req_local_last;
        stop = g->stop_req;
        deadline = g->stop_deadline;
        stall = g->test_stall;
        g->test_stall = 0;
        pthread_mutex_unlock(&g->mu);
        if (rearm) nng_recv_aio(g->pull, g->recv_aio);

        now = mono_ms();
        for (size_t i = 0; i < nwork; i++) {
            handle_msg(g, g->work[i], now);
            nng_msg_free(g->work[i]);
        }
        for (size_t i = 0; i < npend; i++)
            apply_pending(g, &g->wpend[i], now);
        send_apps(g, apps);
        if (req_last > g->local_last) g->local_last = req_last;
        if (stall && g->listening) nng_listener_close(g->listener); /* listening stays 1 */

        if (tw_gossip__members_tick(&g->mt, now, g->suspect_ms, g->dead_ms)) g->members_changed = 1;
        if (stop && !g->leaving) send_leave(g, 0);
        if (now >= g->next_hb) {
            g->next_hb = now + g->heartbeat_ms;
            sync_dials(g, now);
            heartbeat_all(g, now);
        }
        probe_tick(g, now);
        push_local(g);
        fetch_tick(g, now);
        send_acks(g);
        update_quorum(g);
        update_ready(g, now);
        if (g->members_changed) {
            g->members_changed = 0;
            sync_dials(g, now);
            publish(g, now);
            g->last_pub = now;
            if (g->cb.on_members) g->cb.on_members(g->cb_arg);
        } else if (now - g->last_pub >= 50 || nwork || npend) {
            publish(g, now);
            g->last_pub = now;
        }

        if (stop) {
            /* Done (caught up, or out of time): say "gone", then linger a few ticks, still
             * receiving, so the peers' last messages land before the sockets close:
             * closing while pipes receive is what trips nng#1543. */
            if (!done_at &&
                ((g->pushed >= g->local_last && peers_caught_up(g)) || now >= deadline)) {
                g->stop_result =
                    g->pushed >= g->local_last && peers_caught_up(g) ? 0 : TW_GOSSIP_ECLOSED;
                send_leave(g, 1);
                done_at = now + 3 * TICK_MS;
            }
            if (done_at && now >= done_at) break;
        }
    }
    return NULL;
}

/* ---- mutual TLS --------------------------------------------------------------------------- */

#define TLS_FILE_MAX (1u << 20)

/* Reads a PEM file whole, NUL-terminated (NNG wants C strings). */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;

    if (!f) return NULL;
    buf = malloc(TLS_FILE_MAX + 1);
    if (!buf) goto out_close_file;
    n = fread(buf, 1, TLS_FILE_MAX + 1, f);
    if (ferror(f) || n == 0 || n > TLS_FILE_MAX) {
        free(buf);
        buf = NULL;
        goto out_close_file;
    }
    buf[n] = '\0';
out_close_file:
    fclose(f);
    return buf;
}

/* Both sides present our certificate and require the peer's, signed by the cluster CA:
 * a node is a member because it holds a certificate of that CA (peer host names are not
 * checked — use a CA dedicated to the cluster). */
static int tls_config(nng_tls_config **out, nng_tls_mode mode, const char *cert, const char *key,
                      const char *ca_file)
{
    nng_tls_config *c;

    if (nng_tls_config_alloc(&c, mode) != 0) return TW_GOSSIP_ETLS;
    if (nng_tls_config_own_cert(c, cert, key, NULL) != 0 ||
        nng_tls_config_ca_file(c, ca_file) != 0 ||
        nng_tls_config_auth_mode(c, NNG_TLS_AUTH_MODE_REQUIRED) != 0 ||
        nng_tls_config_version(c, NNG_TLS_1_2, NNG_TLS_1_2) != 0) {
        nng_tls_config_free(c);
        return TW_GOSSIP_ETLS;
    }
    *out = c;
    return 0;
}

static int tls_setup(tw_gossip *g, const tw_gossip_options *o)
{
    char *cert = NULL, *key = NULL;
    int rc = TW_GOSSIP_ETLS;

    cert = read_pem(o->tls_cert_file);
    key = read_pem(o->tls_key_file);
    if (!cert || !key) goto out_free_pem;
    rc = tls_config(&g->tls_server, NNG_TLS_MODE_SERVER, cert, key, o->tls_ca_file);
    if (rc) goto out_free_pem;
    rc = tls_config(&g->tls_client, NNG_TLS_MODE_CLIENT, cert, key, o->tls_ca_file);
out_free_pem:
    if (key) {
        memset(key, 0, strlen(key)); /* do not leave the private key in freed memory */
        free(key);
    }
    free(cert);
    return rc;
}

static int is_tls_addr(const char *addr)
{
    return strncmp(addr, "tls+tcp://", 10) == 0;
}

/* ---- public functions --------------------------------------------------------------------- */

static void free_gossip(tw_gossip *g)
{
    for (size_t i = 0; i < g->mt.n; i++)
        g->mt.v[i]->dial = NULL;
    for (size_t i = 0; i < g->ndials; i++)
        dial_close(g->dials[i]);
    free(g->dials);
    tw_gossip__members_free(&g->mt);
    for (size_t i = 0; i < g->in_n; i++)
        nng_msg_free(g->in_v[i]);
    free(g->in_v);
    for (struct app_msg *a = g->app_head, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(g->pend);
    free(g->pub);
    free(g->origins);
    free(g->work);
    free(g->wpend);
    free(g->evs);
    tw_gw_buf_free(&g->out);
    if (g->tls_server) nng_tls_config_free(g->tls_server);
    if (g->tls_client) nng_tls_config_free(g->tls_client);
    tw_store_reader_free(g->reader);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static int check_options(const tw_gossip_options *o)
{
    if (!o || !o->store || !o->node_name || !valid_name(o->node_name) ||
        !valid_str(o->origin, TW_STORE_ORIGIN_MAX) ||
        !valid_str(o->listen_addr, TW_GOSSIP_ADDR_MAX) || (o->nseeds && !o->seeds))
        return TW_GOSSIP_EINVAL;
    for (size_t i = 0; i < o->nseeds; i++)
        if (!valid_str(o->seeds[i], TW_GOSSIP_ADDR_MAX)) return TW_GOSSIP_EINVAL;
    if (o->dead_ms && o->suspect_ms && o->dead_ms < o->suspect_ms) return TW_GOSSIP_EINVAL;
    /* TLS is all or nothing: three files and tls+tcp:// everywhere, or none of them. */
    if (o->tls_cert_file || o->tls_key_file || o->tls_ca_file) {
        if (!o->tls_cert_file || !o->tls_key_file || !o->tls_ca_file) return TW_GOSSIP_EINVAL;
        if (!is_tls_addr(o->listen_addr)) return TW_GOSSIP_EINVAL;
        for (size_t i = 0; i < o->nseeds; i++)
            if (!is_tls_addr(o->seeds[i])) return TW_GOSSIP_EINVAL;
    } else if (is_tls_addr(o->listen_addr)) {
        return TW_GOSSIP_ETLS; /* tls+tcp:// without certificates */
    }
    return 0;
}

int tw_gossip_start(tw_gossip **out, const tw_gossip_options *opts,
                    const tw_store_origin_info *applied, size_t napplied)
{
    pthread_condattr_t ca;
    struct timespec rt;
    tw_gossip *g;
    int rc;

    if (!out || (napplied && !applied)) return TW_GOSSIP_EINVAL;
    rc = check_options(opts);
    if (rc) return rc;

    g = calloc(1, sizeof(*g));
    if (!g) return TW_GOSSIP_ENOMEM;
    snprintf(g->name, sizeof(g->name), "%s", opts->node_name);
    snprintf(g->origin, sizeof(g->origin), "%s", opts->origin);
    snprintf(g->addr, sizeof(g->addr), "%s", opts->listen_addr);
    /* A start stamp: it only has to grow across restarts, which wall-clock ms do. */
    clock_gettime(CLOCK_REALTIME, &rt);
    g->incarnation = (uint64_t)rt.tv_sec * 1000u + (uint64_t)rt.tv_nsec / 1000000u;
    g->heartbeat_ms = opts->heartbeat_ms ? opts->heartbeat_ms : 500;
    g->suspect_ms = opts->suspect_ms ? opts->suspect_ms : 2000;
    g->dead_ms = opts->dead_ms ? opts->dead_ms : 5000;
    if (g->dead_ms < g->suspect_ms) g->dead_ms = g->suspect_ms;
    g->probe_ms = opts->probe_ms ? opts->probe_ms : 5000;
    g->batch_bytes = opts->batch_bytes ? opts->batch_bytes : 256 * 1024;
    g->fetch_batch_bytes = opts->fetch_batch_bytes ? opts->fetch_batch_bytes : 1024 * 1024;
    g->fetch_timeout_ms = g->suspect_ms / 2 > 500 ? g->suspect_ms / 2 : 500;
    g->cb = opts->cb;
    g->cb_arg = opts->cb_arg;
    g->store = opts->store;
    tw_gw_buf_init(&g->out);
    tw_gossip__members_init(&g->mt, g->name);
    g->probe_fd = -1;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g->mu, NULL);

    if (opts->tls_cert_file) {
        rc = tls_setup(g, opts);
        if (rc) goto out_free;
    } else {
        probe_resolve(g); /* on failure the probe falls back to an NNG socket */
    }
    rc = tw_store_reader_new(g->store, &g->reader);
    if (rc) {
        rc = rc == TW_STORE_ENOMEM ? TW_GOSSIP_ENOMEM : TW_GOSSIP_ESTORE;
        goto out_free;
    }
    if (origin_get(g, g->origin) != 0) {
        rc = TW_GOSSIP_ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < napplied; i++) {
        ssize_t oi = origin_get(g, applied[i].origin);
        if (oi < 0) {
            rc = TW_GOSSIP_ENOMEM;
            goto out_free;
        }
        if (oi == 0) {
            g->local_last = g->pushed = g->req_local_last = applied[i].last_seq;
        } else {
            struct origin *o = &g->origins[oi];
            o->applied = o->handed = o->known_last = o->ack_sent = applied[i].last_seq;
        }
    }
    /* Peers fetch what they lack of our history; we only push what is committed from now. */
    g->quorum_reported = 0;
    for (size_t i = 0; i < opts->nseeds; i++) {
        if (strcmp(opts->seeds[i], g->addr) == 0) continue; /* ourselves */
        if (tw_gossip__members_add_seed(&g->mt, opts->seeds[i], mono_ms()) != 0) {
            rc = TW_GOSSIP_ENOMEM;
            goto out_free;
        }
    }

    if (nng_pull0_open(&g->pull) != 0) {
        rc = TW_GOSSIP_ENNG;
        goto out_free;
    }
    /* Before listening: NNG's default is unlimited, and one header could cost gigabytes. */
    nng_socket_set_size(g->pull, NNG_OPT_RECVMAXSZ, RECV_MAX_BYTES);
    if (listen_start(g) != 0) {
        rc = TW_GOSSIP_ELISTEN;
        goto out_close_pull;
    }
    if (nng_aio_alloc(&g->recv_aio, recv_cb, g) != 0) {
        rc = TW_GOSSIP_ENOMEM;
        goto out_close_pull;
    }
    publish(g, mono_ms()); /* readers see this node and the seeds from the start */
    nng_recv_aio(g->pull, g->recv_aio);
    if (pthread_create(&g->thread, NULL, gossip_main, g) != 0) {
        rc = TW_GOSSIP_ENOMEM;
        goto out_stop_aio;
    }
    *out = g;
    return 0;

out_stop_aio:
    nng_aio_stop(g->recv_aio);
out_close_pull:
    nng_close(g->pull);
    if (g->recv_aio) nng_aio_free(g->recv_aio);
out_free:
    free_gossip(g);
    return rc;
}

int tw_gossip_stop(tw_gossip *g, uint32_t timeout_ms)
{
    nng_socket *socks;
    size_t n = 0;
    int rc;

    if (!g) return 0;
    pthread_mutex_lock(&g->mu);
    g->stop_req = 1;
    g->stop_deadline = mono_ms() + timeout_ms;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    rc = g->stop_result;

    /* The receive first (it waits for a running callback and keeps it from re-arming),
     * then the raw probe (a connection still in its SP handshake would hold up the
     * listener's close), then every socket at once, bounded (see close_sockets). */
    nng_aio_stop(g->recv_aio);
    if (g->probe_fd >= 0) close(g->probe_fd);
    g->probe_fd = -1;
    socks = malloc((g->ndials + 2) * sizeof(*socks));
    if (socks) {
        socks[n++] = g->pull;
        if (g->probe_open) socks[n++] = g->probe_sock;
        for (size_t i = 0; i < g->ndials; i++)
            if (g->dials[i]->open) socks[n++] = g->dials[i]->sock;
        close_sockets(socks, n, CLOSE_WAIT_MS);
        free(socks);
        g->probe_open = 0;
        for (size_t i = 0; i < g->ndials; i++)
            g->dials[i]->open = 0;
    } else {
        close_sockets(&g->pull, 1, CLOSE_WAIT_MS); /* the rest close one by one below */
    }
    nng_aio_free(g->recv_aio);
    probe_close(g);
    free_gossip(g);
    return rc;
}

void tw_gossip_notify_local(tw_gossip *g, uint64_t last_seq)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    if (last_seq > g->req_local_last) {
        g->req_local_last = last_seq;
        pthread_cond_signal(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

/* The owner's report for origin, coalesced with earlier ones not yet taken; NULL when out
 * of memory (the report is lost: a later one, or the next failure, supersedes it). */
static struct pending *pending_get(tw_gossip *g, const char *origin)
{
    struct pending *p;

    for (size_t i = 0; i < g->npend; i++)
        if (strcmp(g->pend[i].origin, origin) == 0) return &g->pend[i];
    if (g->npend == g->cappend) {
        size_t cap = g->cappend ? g->cappend * 2 : 8;
        void *q = realloc(g->pend, cap * sizeof(*g->pend));
        if (!q) return NULL;
        g->pend = q;
        g->cappend = cap;
    }
    p = &g->pend[g->npend++];
    memset(p, 0, sizeof(*p));
    snprintf(p->origin, sizeof(p->origin), "%s", origin);
    return p;
}

void tw_gossip_applied(tw_gossip *g, const char *origin, uint64_t seq)
{
    struct pending *p;

    if (!g || !valid_str(origin, TW_STORE_ORIGIN_MAX)) return;
    pthread_mutex_lock(&g->mu);
    p = pending_get(g, origin);
    if (p && seq > p->applied) p->applied = seq;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void tw_gossip_apply_failed(tw_gossip *g, const char *origin, uint64_t applied_seq)
{
    struct pending *p;

    if (!g || !valid_str(origin, TW_STORE_ORIGIN_MAX)) return;
    pthread_mutex_lock(&g->mu);
    p = pending_get(g, origin);
    if (p && (!p->failed || applied_seq < p->failed_seq)) {
        p->failed = 1;
        p->failed_seq = applied_seq;
    }
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

int tw_gossip_broadcast(tw_gossip *g, const void *data, size_t len)
{
    struct app_msg *a;

    if (!g || (len && !data) || len > TW_GW_APP_MAX) return TW_GOSSIP_EINVAL;
    if (!(a = malloc(sizeof(*a) + len))) return TW_GOSSIP_ENOMEM;
    a->next = NULL;
    a->len = len;
    if (len) memcpy(a->data, data, len);
    pthread_mutex_lock(&g->mu);
    if (g->app_bytes + len > APP_OUTBOX_MAX) {
        pthread_mutex_unlock(&g->mu);
        free(a);
        return TW_GOSSIP_ECLOSED;
    }
    if (g->app_tail)
        g->app_tail->next = a;
    else
        g->app_head = a;
    g->app_tail = a;
    g->app_bytes += len;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

void tw_gossip_members(tw_gossip *g, tw_member_info *out, size_t cap, size_t *n)
{
    if (!g || !n) return;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->npub && i < cap; i++)
        out[i] = g->pub[i];
    *n = g->npub;
    pthread_mutex_unlock(&g->mu);
}

size_t tw_gossip_cluster_size(tw_gossip *g)
{
    size_t n;

    if (!g) return 0;
    pthread_mutex_lock(&g->mu);
    n = g->pub_cluster;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int tw_gossip_ready(tw_gossip *g)
{
    int r;

    if (!g) return 0;
    pthread_mutex_lock(&g->mu);
    r = g->pub_ready;
    pthread_mutex_unlock(&g->mu);
    return r;
}

void tw_gossip_get_stats(tw_gossip *g, tw_gossip_stats *out)
{
    if (!g || !out) return;
    pthread_mutex_lock(&g->mu);
    *out = g->pub_stats;
    pthread_mutex_unlock(&g->mu);
}

void tw_gossip__test_stall_listener(tw_gossip *g)
{
    pthread_mutex_lock(&g->mu);
    g->test_stall = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}
