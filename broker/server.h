/*
 * server.h — the node: libuv loops (one, or `--threads` of them) that each own their
 * connections, sessions, channels and subscriptions, plus the store's writer thread, which
 * hands committed batches back to the loop that submitted them through a mutex-protected
 * list and the loop's bell (bell.h: an eventfd; rings coalesce, the loop drains all).
 *
 * With several loops each accepts its own clients (one listening socket per loop,
 * SO_REUSEPORT: the kernel spreads connections). A loop learns of every event committed,
 * whichever loop or peer it came from, by reading the log after its fan-out position (the
 * log is the bus between loops); it acknowledges only its own publishes. What the loops
 * share is the tw_node: the store, the per-IP limits (locked inside), the connection count,
 * and the figures each loop publishes for /stats. Anything else crosses loops as a message
 * (tw_server_post): drain, key reload, disconnect, join/leave.
 *
 * The path of a publish: session or HTTP API -> tw_server_publish() -> store writer thread
 * (group commit, fsync) -> commit list -> loop: tw_event made once, fanned out to the
 * channel's live subscribers (each gets a reference to one shared frame per encoding),
 * then the publisher's ack. Nothing is delivered or acknowledged before its commit.
 *
 * Everything here is loop-thread only unless a comment says otherwise.
 */
#ifndef TW_SERVER_H
#define TW_SERVER_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "bell.h"
#include "config.h"
#include "event.h"
#include "http.h"
#include "presence.h"
#include "protocol.h"
#include "stats.h"
#include "store.h"
#include "throttle.h"
#include "tls.h"
#include "ws.h"

typedef struct tw_server tw_server;
typedef struct tw_conn tw_conn;
typedef struct tw_session tw_session;
typedef struct tw_channel tw_channel;
typedef struct tw_sub tw_sub;
typedef struct tw_publish tw_publish;
typedef struct tw_cluster tw_cluster;
typedef struct tw_node tw_node;

/* ---- Connections (conn.c): one TCP client, first HTTP, then maybe WebSocket. ---------- */

enum { TW_CONN_HTTP = 0, TW_CONN_WS = 1 };

/* How bytes cross the socket (conn.c): plain TCP or TLS. */
typedef struct tw_transport tw_transport;

struct tw_conn {
    uv_tcp_t tcp; /* tcp.data == this */
    tw_server *srv;
    uint64_t id;
    tw_conn *prev, *next;  /* all connections */
    tw_conn *dirty_next;   /* connections with output to flush this loop turn */
    uint8_t kind;          /* TW_CONN_* */
    uint8_t dirty;
    uint8_t closing;       /* input ignored; FIN once the output is flushed, then linger */
    uint8_t shut;          /* uv_shutdown issued */
    uint8_t closed;        /* uv_close called */
    uint32_t refs;         /* 1 for the socket + 1 per publish awaiting its ack */

    /* Output: a ring of frames not yet handed to uv_write, and what is in flight. */
    tw_frame **q;
    uint32_t q_head, q_len, q_cap; /* q_cap: 0 or a power of two (indexes are masked) */
    uint32_t q_off;                /* bytes of the head frame already written */
    size_t q_bytes;                /* bytes queued and not yet written */
    size_t inflight_bytes;

    uint64_t deadline_ms;  /* HTTP: request due by; closing: hard close at (loop time) */
    uint64_t last_recv_ms; /* loop time of the last byte received */
    uint64_t last_ping_ms;

    /* TW_CONN_HTTP */
    tw_http_reader *http;
    tw_buf http_pending;   /* bytes after a request whose response is not written yet */
    uint8_t http_busy;     /* a response is pending (publish awaiting its commit) */
    uint8_t http_keep_alive;

    /* TW_CONN_WS */
    tw_session *session;

    tw_ip *ip; /* this client's per-IP entry, released on close (NULL: not counted) */
    const tw_transport *tr; /* plain or TLS, from the listener that accepted it */
    /* Read budget: bytes read in loop turn `read_turn`; over the budget, reading pauses
     * until the end of the turn (on the server's paused list, holding a reference). */
    uint64_t read_turn;
    size_t turn_bytes;
    uint8_t read_paused;
    tw_conn *paused_next;
    tw_tls *tls;            /* the TLS session on the TLS listener, else NULL */
};

/* Queues a frame for the client; takes over one reference. The bytes go out in one
 * uv_write with everything else queued this loop turn. */
void tw_conn_send(tw_conn *c, tw_frame *f);

/* Bytes queued and in flight to the client: the flow-control figure. */
static inline size_t tw_conn_backlog(const tw_conn *c)
{
    return c->q_bytes + c->inflight_bytes;
}

/* Stops reading and closes the connection once its output is written (or at the hard
 * deadline). Frees it in the close callback when no publish still refers to it. */
void tw_conn_close(tw_conn *c);

/* Closes the socket at once, without flushing (shutdown, or a peer that is gone). */
void tw_conn_abort(tw_conn *c);

/* Drops one reference taken for a pending publish. */
void tw_conn_unref(tw_conn *c);

/* Writes every dirty connection's queue (called at the end of each loop turn). */
void tw_conn_flush_all(tw_server *srv);

/* libuv callbacks wired by server.c. */
void tw_conn_on_accept(uv_stream_t *listener, int status);

/* End of a turn: connections that used their read budget read again (next turn). */
void tw_conn_resume_reads(tw_server *srv);

/* Per-second checks: handshake deadlines, pings, idle and slow-consumer timeouts. */
void tw_conn_tick(tw_server *srv, uint64_t now_ms);

/* An HTTP response on a connection in HTTP mode; resumes reading the next request. */
void tw_conn_http_respond(tw_conn *c, int status, const char *type, const void *body, size_t len,
                          const char *extra_headers);

/* ---- Sessions (session.c): the protocol over one WebSocket. ------------------------- */

struct tw_session {
    tw_conn *conn;
    tw_ws ws;
    tw_encoding enc;
    char id[24];
    tw_sub *subs;          /* every subscription of this session */
    size_t nsubs;
    tw_sub *cu_head, *cu_tail; /* subscriptions being fed from the log, round-robin */
    tw_session *ready_next;    /* in the server's catch-up work list */
    uint8_t in_ready;
    uint64_t stalled_since_ms; /* backlog went over the high-water mark and stayed (0: not) */

    /* Identity and limits (auth.h): the verified token's claims, or NULL (open node, or not
     * authenticated yet); the loop time by which a token must come (0: none due); the
     * messages-per-second bucket. */
    tw_jwt_claims *who;
    uint64_t auth_deadline_ms;
    tw_bucket msg_bucket;
};

/* Makes the session of a connection that was just upgraded. */
tw_session *tw_session_new(tw_conn *c, tw_encoding enc);

/* Feeds bytes read from the socket. */
void tw_session_feed(tw_session *s, const uint8_t *data, size_t len);

/* Closes the WebSocket with a close code (the connection follows). */
void tw_session_close(tw_session *s, uint16_t code, const char *reason);

/* Frees the session (its subscriptions first). Called when the connection closes. */
void tw_session_free(tw_session *s);

/* Sends a reply built by the codec; on encoding failure closes with 1011. */
void tw_session_send_buf(tw_session *s, tw_buf *b);

/* Takes the token of an upgrade's `?token=` (tokens required): verifies it, or closes the
 * session with 4001. */
void tw_session_authenticate(tw_session *s, const char *token, size_t len);

/* Per-tick checks of identity: the authentication deadline and token expiry (close 4001). */
void tw_session_check_auth(tw_session *s, uint64_t now_ms, int64_t wall_s);

/* Sends an error reply. */
void tw_session_error(tw_session *s, const int64_t *id, int code, const char *message);

/* Sends `join` or `leave` for `who` to the channel's members on this node (but `except`),
 * where the channel's namespace enables join/leave. */
struct tw_member;
void tw_presence_notify(tw_server *srv, const char *op, const char *channel, size_t len,
                        const struct tw_member *who, const tw_session *except);

/* A member joined (join 1) or left a channel on this loop, or on another node as loop 0
 * learnt from the cluster: tells the node's other loops (--threads), which list it and tell
 * their members. Strings are copied. A no-op with one loop. */
void tw_presence_tell_loops(tw_server *srv, int join, const char *channel, size_t len,
                            const struct tw_member *who);

/* The backlog shrank (write completed): resume feeding from the log if it was waiting. */
void tw_session_on_drain(tw_session *s);

/* ---- Channels and subscriptions (channel.c) ---------------------------------------- */

struct tw_channel {
    char *name;
    size_t len;
    uint32_t hash;
    tw_channel *hnext;
    tw_sub *live;  /* subscriptions at the head, fed from memory */
    size_t nsubs;  /* all subscriptions, live or catching up */
    uint64_t events; /* events fanned out since the channel got its first subscriber (/stats) */
};

/*
 * A subscription is a reader of its channel's log. `last_lsn` is the local log position of
 * the last event it was sent. Live, it is in the channel's live list and takes events from
 * the fan-out. Catching up (a resume, `last`, or a backlog over the high-water mark), it is
 * out of the live list and reads the log after last_lsn in chunks whenever its session's
 * backlog allows, until a read reaches the end of the channel: then it goes live again.
 * The hand-over has no gap because every event the fan-out has already passed was committed
 * before the read began (the read sees it), and no duplicate because the fan-out skips
 * events at or below last_lsn (committed, read, but not yet fanned out).
 */
struct tw_sub {
    tw_channel *ch;
    tw_session *sess;
    tw_sub *ch_prev, *ch_next; /* channel's live list */
    tw_sub *s_next;            /* session's list */
    tw_sub *cu_next;           /* session's catch-up list */
    uint64_t last_lsn;
    /* The channel's retention mark (newest lsn trimmed) when the subscription started
     * (tw_sub_start): a later mark above last_lsn means retention took events it had not
     * read yet. */
    uint64_t trim_floor;
    uint8_t live;
    uint8_t in_cu;
    uint8_t filtering;         /* skip events the resume cursor has seen (first replay) */
    tw_cursor filter;
};

int tw_channels_init(tw_server *srv);
void tw_channels_free(tw_server *srv);

/*
 * Subscribes a session to a channel. With `from_log` the subscription starts by reading the
 * log after `after_lsn` (filtering events at or below `filter` when given: it takes the
 * cursor's storage); otherwise it is live from the current fan-out position.
 * `trim_floor`: the channel's retention mark when the subscribe was answered (what was
 * trimmed before is in its `recovered`, or lies before where it starts); only a later mark
 * past what it read closes it with 4208. 0 for a live start: every mark then is at or
 * below the fan-out position it starts from.
 * Returns the subscription or NULL on ENOMEM.
 */
tw_sub *tw_sub_start(tw_session *s, const char *channel, size_t len, int from_log,
                     uint64_t after_lsn, uint64_t trim_floor, tw_cursor *filter);

/* Ends a subscription (unsubscribe or session end). */
void tw_sub_end(tw_sub *sub);

/* This loop's channel of that name, or NULL when none of its clients subscribes to it. */
tw_channel *tw_channel_find(tw_server *srv, const char *name, size_t len);

/* Fans a committed event out to its channel's live subscriptions. */
void tw_fanout(tw_server *srv, tw_event *ev);

/* Moves a live subscription to catching up from the log (its session is behind). */
void tw_sub_fall_behind(tw_sub *sub);

/* Feeds catching-up subscriptions from the log within a per-turn budget. Returns 1 when
 * work remains for the next turn. */
int tw_catchup_run(tw_server *srv);

/* Puts a session on the catch-up work list. */
void tw_catchup_schedule(tw_session *s);

/* ---- Publishing (server.c) ---------------------------------------------------------- */

enum { TW_PUB_WS = 0, TW_PUB_HTTP = 1, TW_PUB_REMOTE = 2 /* replicated from another node */ };

struct tw_publish {
    tw_store_append app; /* first: the store's completion hands back &app */
    tw_server *srv;      /* the loop that submitted it: its completion goes back there */
    tw_conn *conn;       /* who waits for the ack (holds a reference), or NULL */
    uint8_t kind;        /* TW_PUB_* */
    uint8_t has_id;
    int64_t id;
    char *channel;       /* owned until the event takes it */
    uint8_t *data;
    char *origin;        /* TW_PUB_REMOTE: the event's origin (owned); else NULL */
    tw_publish *next;
};

/* Acknowledges a committed publish to whoever waits for it (WebSocket `ack` or the HTTP
 * response), if they are still connected. */
void tw_server_ack(tw_server *srv, tw_publish *p);

/* Drops a publish record: its connection reference and what it still owns. */
void tw_publish_free(tw_server *srv, tw_publish *p);

/*
 * Appends an event to the log; the ack (WebSocket `ack` or the HTTP response) follows the
 * commit (with durability quorum: once a majority of the cluster has it). Takes ownership of
 * channel and data in every case. Returns 0, or an HTTP-like error code (503 overloaded,
 * stopping or no quorum possible, 500) without having queued anything; *why (when not NULL)
 * then says why, for the error reply.
 */
int tw_server_publish(tw_server *srv, tw_conn *conn, int kind, const int64_t *id, char *channel,
                      size_t channel_len, uint8_t data_enc, uint8_t *data, size_t data_len,
                      const char **why);

/*
 * Hands the publishes accepted since the last call to the store's writer in one
 * tw_store_submit(). Called after each WebSocket read (so the writer starts on a client's
 * publishes while the loop reads the next client) and at the end of every loop turn. A
 * refused submit (writer queue full, store closing) completes each publish at once with a
 * 503 to its publisher.
 */
void tw_server_submit_pending(tw_server *srv);

/* Origin ids are interned once: events and the head vector point at the same strings. */
typedef struct tw_origin_head {
    char id[TW_STORE_ORIGIN_MAX + 1];
    uint64_t last_seq; /* newest seq fanned out */
} tw_origin_head;

/* A function run on a loop's own thread by tw_server_post(). */
typedef void (*tw_post_fn)(tw_server *srv, void *arg);
typedef struct tw_post tw_post;

/* What every loop of the node shares. Set up before the loops start, read-only after,
 * except the fields whose comments say how they are shared. */
struct tw_node {
    const tw_config *cfg;
    tw_store *store;
    const char *origin;    /* this node's origin id */
    tw_iplimits *iplimits; /* NULL: no per-IP limit; locked inside (throttle.h) */
    tw_server **loops;     /* loops[0] runs on the main thread: signals, cluster */
    size_t nloops;
    uint64_t started_ms;           /* wall clock */
    _Atomic size_t nconns;         /* connections open on every loop (max-connections) */
    _Atomic uint64_t next_conn_id; /* connection and session ids, unique in the node */
    pthread_mutex_t figures_mu;    /* each loop's `published` figures */
};

struct tw_server {
    tw_node *node;
    unsigned loop_no; /* index in node->loops */
    pthread_t thread; /* loops other than 0 */
    uv_loop_t *loop;
    const tw_config *cfg;
    tw_proto_limits limits;
    tw_store *store;
    tw_store_reader *reader; /* loop thread's reader: replays and subscribes */
    tw_cluster *cluster;     /* NULL: a single node (cluster.h); one for all loops, run by
                              * loop 0 (cluster.h says what other loops may call) */
    const char *origin;      /* this node's origin id */
    uint64_t started_ms;     /* wall clock */
    int ready;
    int draining;
    uint64_t drain_deadline_ms;

    uv_tcp_t listener;
    tw_bell inbox_bell; /* tw_server_post: functions from other threads */
    pthread_mutex_t inbox_mu;
    tw_post *inbox_head, *inbox_tail;
    tw_bell commit_bell; /* the writer's completions (and, with several loops, commits) */
    pthread_mutex_t commit_mu;
    tw_publish *commit_head, *commit_tail; /* completions from the writer thread */
    uv_check_t turn_check;  /* end of each loop turn: catch-up reads, then writes */
    uv_idle_t turn_idle;    /* keeps the loop turning while catch-up work remains */
    uv_timer_t tick;
    uint64_t tick_ms;       /* period of the timeout and ping checks */
    uv_signal_t sig_term, sig_int;
    uv_signal_t sig_hup;    /* reloads keys (jwt-key files) */
    uv_timer_t shutdown_timer;

    tw_conn *conns;
    tw_conn *dirty;
    tw_session *ready_head, *ready_tail;
    size_t nconns, nsessions, nsubs;

    tw_channel **chan_table;
    size_t chan_cap, nchannels;

    tw_origin_head **heads; /* the head vector, local origin first */
    size_t nheads;
    uint64_t fanout_lsn;    /* lsn of the newest event fanned out */
    uint64_t local_committed_seq; /* newest seq of this node's origin committed */
    uint64_t pending_publishes;
    /* Publishes accepted this loop turn, handed to the store in one tw_store_submit() at
     * the end of the turn (one lock and one writer wake-up per turn, not per event). */
    tw_publish *submit_head, *submit_tail;
    /* Spare tw_publish records (a free list, so the hot path does not malloc per event). */
    tw_publish *pub_free;
    size_t npub_free;

    /* With durability quorum: this loop's acks waiting for a majority, in seq order. */
    tw_publish *held_head, *held_tail;

    tw_auth *auth;         /* keys and namespaces; never NULL while serving */
    tw_presence *presence; /* members of channels whose namespace enables presence */
    tw_iplimits *iplimits; /* NULL: no per-IP limit configured */
    uv_tcp_t tls_listener; /* wss:// and https:// (tls-listen), when configured */
    int tls_listening;
    tw_tls_ctx *tls_ctx;   /* new TLS connections start from it; replaced on SIGHUP */
    tw_conn *paused;       /* connections that used their read budget this turn */
    uint64_t turn_no;      /* loop turns, for the read budget */

    tw_stats stats;
    tw_figures published;       /* under node->figures_mu: this loop's figures when last asked */
    uint8_t readbuf[64 * 1024]; /* every read is consumed before the next: one buffer serves all */
};

/* Runs a node with this configuration until SIGTERM/SIGINT; returns the exit status. */
int tw_server_run(const tw_config *cfg);

/* Runs fn(to, arg) on `to`'s loop thread soon after (in the order posted). Any thread.
 * Returns 0, or -1 (out of memory: nothing posted, arg still the caller's). Messages still
 * queued when the node stops are run during its shutdown, on the main thread. */
int tw_server_post(tw_server *to, tw_post_fn fn, void *arg);

/* The node's figures for /stats: this loop's own, live, plus every other loop's as it last
 * published them (tw_server_publish_figures). per_loop, when not NULL, receives
 * node->nloops entries, one per loop. */
void tw_server_figures(tw_server *srv, tw_figures *sum, tw_figures *per_loop);

/* Publishes this loop's figures for the others' /stats (tw_server_figures). */
void tw_server_publish_figures(tw_server *srv);

/*
 * Runs each(loop, arg) on every loop of the node, on that loop's thread (this loop's at
 * once, here), then done(srv, arg) on this loop once every loop has run it: a question to
 * the whole node (/stats, disconnect) answered where it was asked. With one loop both run
 * before this returns. A loop that cannot be asked (out of memory) is left out, logged.
 */
void tw_server_each_loop(tw_server *srv, tw_post_fn each, tw_post_fn done, void *arg);

/* Makes the loop run another turn without waiting for I/O (catch-up work is queued). */
void tw_server_kick(tw_server *srv);

/* 1 when this node's log holds events of `origin` (it is in the head vector). */
int tw_server_holds_origin(const tw_server *srv, const char *origin);

/* The interned origin id for `origin`, adding it to the head vector if new. */
tw_origin_head *tw_server_origin(tw_server *srv, const char *origin);

/* Loop time in milliseconds. */
static inline uint64_t tw_now_ms(tw_server *srv)
{
    return uv_now(srv->loop);
}

#endif /* TW_SERVER_H */
