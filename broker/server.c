/*
 * server.c — the node's lifecycle: open the store, start the loops (--threads) and their
 * listeners, take committed batches from the writer thread back to the loop that submitted
 * them, follow the log on every loop when there are several, drain on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cluster.h"
#include "log.h"
#include "server.h"

/* How often the drain checks whether every client has gone and every publish committed. */
#define DRAIN_POLL_MS 50

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tw_server_holds_origin(const tw_server *srv, const char *origin)
{
    for (size_t i = 0; i < srv->nheads; i++)
        if (strcmp(srv->heads[i]->id, origin) == 0) return 1;
    return 0;
}

tw_origin_head *tw_server_origin(tw_server *srv, const char *origin)
{
    for (size_t i = 0; i < srv->nheads; i++)
        if (strcmp(srv->heads[i]->id, origin) == 0) return srv->heads[i];
    tw_origin_head **heads = realloc(srv->heads, (srv->nheads + 1) * sizeof *heads);
    if (!heads) return NULL;
    srv->heads = heads;
    tw_origin_head *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    snprintf(h->id, sizeof h->id, "%s", origin);
    heads[srv->nheads++] = h;
    return h;
}

static void idle_noop(uv_idle_t *h)
{
    (void)h;
}

void tw_server_kick(tw_server *srv)
{
    uv_idle_start(&srv->turn_idle, idle_noop);
}

/* End of every loop turn: feed catching-up subscriptions, then write everything queued. */
static void on_turn(uv_check_t *h)
{
    tw_server *srv = h->data;
    tw_server_submit_pending(srv);
    tw_catchup_run(srv);
    tw_conn_flush_all(srv);
    tw_conn_resume_reads(srv); /* they read again in the next turn, after everyone else */
    srv->turn_no++;
    /* Asked after the flush: a write that completed at once may have made a session ready
     * again (tw_session_on_drain), and it must get the next turn, not wait for I/O. */
    if (!srv->ready_head) uv_idle_stop(&srv->turn_idle);
}

/* ---- Publishing --------------------------------------------------------------------- */

/* Writer thread: hand each completion back to the loop that submitted it. With several
 * loops every loop is woken, since every loop fans out every event (from the log). */
static void on_commit(void *arg, tw_store_append *done)
{
    tw_node *node = arg;
    for (tw_store_append *a = done, *next; a; a = next) {
        next = a->next;
        tw_publish *p = (tw_publish *)a; /* app is the first member */
        tw_server *srv = p->srv;
        p->next = NULL;
        /* A batch is mostly one loop's run of publishes: take its lock once per run. */
        pthread_mutex_lock(&srv->commit_mu);
        for (;;) {
            if (srv->commit_tail) srv->commit_tail->next = p;
            else srv->commit_head = p;
            srv->commit_tail = p;
            if (!next || ((tw_publish *)next)->srv != srv) break;
            p = (tw_publish *)next;
            next = next->next;
            p->next = NULL;
        }
        pthread_mutex_unlock(&srv->commit_mu);
        if (node->nloops == 1) tw_bell_ring(&srv->commit_bell);
    }
    if (node->nloops > 1)
        for (size_t i = 0; i < node->nloops; i++)
            tw_bell_ring(&node->loops[i]->commit_bell);
}

/* Spare records kept for reuse; beyond this many, freed ones go back to malloc. */
#define PUB_FREE_MAX 8192

static tw_publish *pub_alloc(tw_server *srv)
{
    tw_publish *p = srv->pub_free;
    if (!p) return calloc(1, sizeof *p);
    srv->pub_free = p->next;
    srv->npub_free--;
    memset(p, 0, sizeof *p);
    return p;
}

static void pub_release(tw_server *srv, tw_publish *p)
{
    if (srv->npub_free >= PUB_FREE_MAX) {
        free(p);
        return;
    }
    p->next = srv->pub_free;
    srv->pub_free = p;
    srv->npub_free++;
}

int tw_server_publish(tw_server *srv, tw_conn *conn, int kind, const int64_t *id, char *channel,
                      size_t channel_len, uint8_t data_enc, uint8_t *data, size_t data_len,
                      const char **why)
{
    const char *reason = NULL;
    if (srv->draining)
        reason = "the node is draining: publish to another node";
    else if (!tw_cluster_quorum_possible(srv))
        /* Refused rather than left waiting: without a majority alive it could not be
         * acknowledged, and the publisher can retry elsewhere or later. */
        reason = "not enough cluster members alive for quorum durability";
    if (reason) {
        if (why) *why = reason;
        free(channel);
        free(data);
        return 503;
    }
    tw_publish *p = pub_alloc(srv);
    if (!p) {
        if (why) *why = "out of memory";
        free(channel);
        free(data);
        return 500;
    }
    p->app.channel = channel;
    p->app.channel_len = channel_len;
    p->app.data = data;
    p->app.data_len = data_len;
    p->app.encoding = data_enc;
    p->channel = channel;
    p->data = data;
    p->kind = (uint8_t)kind;
    p->srv = srv;
    if (id) {
        p->has_id = 1;
        p->id = *id;
    }
    p->conn = conn;
    if (conn) conn->refs++;
    /* Queued for the end of the turn: every publish read in one turn goes to the writer in
     * one submit. The turn ends before the loop waits again, so this adds no latency. */
    p->app.next = NULL;
    /* A publish made outside the poll phase (a timer, say) must not wait for the next I/O:
     * keep the loop turning until the end of the turn submits it. */
    if (!srv->submit_head) tw_server_kick(srv);
    if (srv->submit_tail) srv->submit_tail->app.next = &p->app;
    else srv->submit_head = p;
    srv->submit_tail = p;
    srv->pending_publishes++;
    return 0;
}

static void complete_publish(tw_server *srv, tw_publish *p);

void tw_server_submit_pending(tw_server *srv)
{
    tw_publish *head = srv->submit_head;
    if (!head) return;
    srv->submit_head = srv->submit_tail = NULL;
    int rc = tw_store_submit(srv->store, &head->app);
    if (rc == 0) return;
    if (rc == TW_STORE_EBUSY)
        tw_warn("store-busy", "log writer queue full: publishes refused (503)");
    for (tw_store_append *a = &head->app, *next; a; a = next) {
        next = a->next;
        a->status = rc;
        complete_publish(srv, (tw_publish *)a);
    }
}

/* The HTTP-like code and message for a failed append. */
static int publish_error(int status, const char **msg)
{
    switch (status) {
    case TW_STORE_ETOOBIG:
        *msg = "event too large for the log";
        return 413;
    case TW_STORE_EFULL:
        *msg = "the log is full: publish refused";
        return 503;
    case TW_STORE_EBUSY:
    case TW_STORE_ECLOSED:
        *msg = "the log is not taking writes now, retry";
        return 503;
    case TW_STORE_EINVAL:
        *msg = "invalid event";
        return 400;
    default:
        *msg = "the log could not write the event";
        return 500;
    }
}

/* When the event could not be built, its channel's live subscribers must not skip it:
 * move them to reading the log, which has it. */
static void fanout_failed(tw_server *srv, const char *channel, size_t len)
{
    tw_channel *ch = tw_channel_find(srv, channel, len);
    while (ch && ch->live) {
        tw_session *s = ch->live->sess;
        tw_sub_fall_behind(ch->live);
        tw_catchup_schedule(s);
    }
}

void tw_publish_free(tw_server *srv, tw_publish *p)
{
    if (p->conn) tw_conn_unref(p->conn);
    free(p->channel);
    free(p->data);
    free(p->origin);
    pub_release(srv, p);
}

void tw_server_ack(tw_server *srv, tw_publish *p)
{
    tw_conn *c = p->conn;
    if (!c || c->closed) return;
    const char *origin = srv->heads[0]->id; /* acknowledged publishes are this node's */
    if (p->kind == TW_PUB_WS && c->session) {
        tw_buf b;
        tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
        if (tw_proto_encode_ack(&b, c->session->enc, p->has_id ? &p->id : NULL, origin,
                                p->app.seq) == 0)
            tw_session_send_buf(c->session, &b);
        tw_buf_free(&b);
    } else if (p->kind == TW_PUB_HTTP) {
        tw_api_publish_done(c, origin, p->app.seq, 0, NULL);
    }
}

/* A failed append: say so once a second at most (a full log refuses every publish), and
 * answer the publisher. */
static void publish_failed(tw_server *srv, tw_publish *p)
{
    tw_conn *c = p->conn;
    srv->stats.publishes_refused++;
    const char *msg;
    int code = publish_error(p->app.status, &msg);
    if (p->app.status == TW_STORE_EFULL) {
        tw_stats *st = &srv->stats;
        st->store_full_refusals++;
        uint64_t now = tw_now_ms(srv);
        if (!st->store_full_logged_ms || now - st->store_full_logged_ms >= 1000) {
            tw_error("store-full",
                     "the log is full (map at store-map-size, or disk full): %" PRIu64
                     " publishes refused (503) since the last report",
                     st->store_full_refusals - st->store_full_reported);
            st->store_full_logged_ms = now;
            st->store_full_reported = st->store_full_refusals;
        }
    } else if (code == 500) {
        tw_error("store-write", "append failed: %s", tw_store_strerror(p->app.status));
    }
    if (!c || c->closed) return;
    if (p->kind == TW_PUB_WS && c->session)
        tw_session_error(c->session, p->has_id ? &p->id : NULL, code, msg);
    else if (p->kind == TW_PUB_HTTP)
        tw_api_publish_done(c, NULL, 0, code, msg);
}

/*
 * One committed (or failed) append, in commit order. Local and replicated events take the
 * same path to subscribers: the event is made once, fanned out, and the head vector moves
 * (with several loops, bus_follow() did that from the log already). Then a local publisher
 * is acknowledged (at once, or with quorum durability once a majority has the event) and a
 * replicated one is reported applied to gossip.
 */
static void complete_publish(tw_server *srv, tw_publish *p)
{
    int remote = p->kind == TW_PUB_REMOTE;
    if (!remote) srv->pending_publishes--;
    if (p->app.status != 0) {
        if (remote) tw_cluster_remote_done(srv, p);
        else publish_failed(srv, p);
        tw_publish_free(srv, p);
        return;
    }
    if (!remote) srv->stats.events_published++;
    else srv->stats.events_replicated_in++;
    if (srv->node->nloops == 1) {
        tw_origin_head *head = remote ? tw_server_origin(srv, p->app.origin) : srv->heads[0];
        if (head) head->last_seq = p->app.seq;
        srv->fanout_lsn = p->app.lsn;
        tw_event *ev =
            head ? tw_event_new(head->id, p->app.seq, p->app.lsn, p->app.ts_ms, p->channel,
                                p->app.channel_len, p->app.encoding, p->data, p->app.data_len)
                 : NULL;
        if (ev) {
            p->channel = NULL;
            p->data = NULL;
            tw_fanout(srv, ev);
            tw_event_unref(ev);
        } else {
            fanout_failed(srv, p->channel, p->app.channel_len);
        }
    }
    if (remote) {
        tw_cluster_remote_done(srv, p);
    } else {
        if (p->app.seq > srv->local_committed_seq) srv->local_committed_seq = p->app.seq;
        if (tw_cluster_hold_ack(srv, p) == 0) return; /* the cluster acks it at quorum */
        tw_server_ack(srv, p);
    }
    tw_publish_free(srv, p);
}

/* ---- The log as the bus between loops (--threads) ------------------------------------ */

/* Events taken from the log per read: the snapshot is closed before they are fanned out. */
#define BUS_CHUNK 256

struct bus_chunk {
    tw_server *srv;
    tw_event *ev[BUS_CHUNK];
    size_t n;
    int gap;    /* an lsn was missing: retention trimmed it before this loop read it */
    int failed; /* an event could not be made (out of memory) */
};

/* Inside the read's snapshot: copy the event (each loop makes its own, encoded at most once
 * per encoding for all of the loop's subscribers) and move the head vector. */
static int bus_take(void *arg, const tw_store_event *e)
{
    struct bus_chunk *b = arg;
    tw_server *srv = b->srv;
    if (e->lsn != srv->fanout_lsn + 1) b->gap = 1;
    srv->fanout_lsn = e->lsn;
    tw_origin_head *head = tw_server_origin(srv, e->origin);
    if (head && e->seq > head->last_seq) head->last_seq = e->seq;
    /* Loop 0 tells the cluster of every local commit, whichever loop took the publish. */
    if (head == srv->heads[0] && e->seq > srv->local_committed_seq)
        srv->local_committed_seq = e->seq;
    /* Nobody here subscribes to it: nothing to copy (most events of personal channels). */
    if (head && !tw_channel_find(srv, e->channel, e->channel_len)) return 0;
    char *channel = malloc(e->channel_len);
    uint8_t *data = malloc(e->data_len ? e->data_len : 1);
    tw_event *ev = NULL;
    if (head && channel && data) {
        memcpy(channel, e->channel, e->channel_len);
        memcpy(data, e->data, e->data_len);
        ev = tw_event_new(head->id, e->seq, e->lsn, e->ts_ms, channel, e->channel_len, e->encoding,
                          data, e->data_len);
    }
    if (!ev) {
        free(channel);
        free(data);
        b->failed = 1;
        return 1; /* stop: the event is not lost, its subscribers read it from the log */
    }
    b->ev[b->n++] = ev;
    return 0;
}

/* Every live subscription of this loop reads the log from where it is (it skips nothing:
 * an event it missed is either there or reported trimmed, 4208). */
static void all_fall_behind(tw_server *srv)
{
    for (size_t i = 0; i < srv->chan_cap; i++)
        for (tw_channel *ch = srv->chan_table[i]; ch; ch = ch->hnext)
            while (ch->live) {
                tw_session *s = ch->live->sess;
                tw_sub_fall_behind(ch->live);
                tw_catchup_schedule(s);
            }
}

/*
 * With several loops: fans out every event committed after this loop's fan-out position,
 * whichever loop or peer it came from, read from the log in lsn order (commit order, as a
 * single loop sees it). Runs on each commit wake-up, before the loop's own acks. When
 * events cannot be taken (retention trimmed them first, or memory ran out), the loop's live
 * subscriptions go back to reading the log, which delivers or reports what they missed.
 */
static void bus_follow(tw_server *srv)
{
    for (;;) {
        struct bus_chunk b = {.srv = srv};
        uint64_t last;
        uint64_t before = srv->fanout_lsn;
        int rc = tw_store_read_log(srv->reader, srv->fanout_lsn, BUS_CHUNK, 0, bus_take, &b, &last);
        if (rc != 0 || b.gap || b.failed) {
            if (rc != 0)
                tw_error("store-read", "loop %u cannot follow the log: %s", srv->loop_no,
                         tw_store_strerror(rc));
            else if (b.failed)
                tw_warn("fanout-nomem",
                        "loop %u: out of memory making events: its subscribers "
                        "read them from the log",
                        srv->loop_no);
            else
                tw_debug("bus-gap",
                         "loop %u: retention trimmed events before this loop read "
                         "them: its subscribers read the log",
                         srv->loop_no);
            all_fall_behind(srv);
        }
        for (size_t i = 0; i < b.n; i++) {
            tw_fanout(srv, b.ev[i]);
            tw_event_unref(b.ev[i]);
        }
        if (rc != 0 || b.failed) {
            /* Subscribers read from the log; the fan-out resumes at the log's end. */
            if (rc == 0) {
                tw_store_stats st;
                tw_store_get_stats(srv->store, &st);
                if (st.last_lsn > srv->fanout_lsn) srv->fanout_lsn = st.last_lsn;
            }
            return;
        }
        if (b.n < BUS_CHUNK || srv->fanout_lsn == before) return;
    }
}

static tw_publish *take_commits(tw_server *srv)
{
    pthread_mutex_lock(&srv->commit_mu);
    tw_publish *list = srv->commit_head;
    srv->commit_head = srv->commit_tail = NULL;
    pthread_mutex_unlock(&srv->commit_mu);
    return list;
}

static void on_commit_bell(tw_bell *b)
{
    tw_server *srv = b->data;
    /* Rings coalesce: take everything queued since the last wakeup. Taken before
     * the log is read, so the read sees every commit whose completion is on the list. */
    tw_publish *list = take_commits(srv);
    uint64_t before = srv->local_committed_seq;
    if (srv->node->nloops > 1) bus_follow(srv);
    for (tw_publish *p = list, *next; p; p = next) {
        next = p->next;
        complete_publish(srv, p);
    }
    /* Peers learn of new local events once per wakeup, however many committed. */
    if (srv->local_committed_seq != before) tw_cluster_local_committed(srv, srv->local_committed_seq);
}

/* ---- Messages between loops ---------------------------------------------------------- */

struct tw_post {
    tw_post_fn fn;
    void *arg;
    tw_post *next;
};

int tw_server_post(tw_server *to, tw_post_fn fn, void *arg)
{
    tw_post *m = malloc(sizeof *m);
    if (!m) return -1;
    m->fn = fn;
    m->arg = arg;
    m->next = NULL;
    pthread_mutex_lock(&to->inbox_mu);
    if (to->inbox_tail) to->inbox_tail->next = m;
    else to->inbox_head = m;
    to->inbox_tail = m;
    pthread_mutex_unlock(&to->inbox_mu);
    tw_bell_ring(&to->inbox_bell);
    return 0;
}

static void run_inbox(tw_server *srv)
{
    pthread_mutex_lock(&srv->inbox_mu);
    tw_post *m = srv->inbox_head;
    srv->inbox_head = srv->inbox_tail = NULL;
    pthread_mutex_unlock(&srv->inbox_mu);
    for (tw_post *next; m; m = next) {
        next = m->next;
        m->fn(srv, m->arg);
        free(m);
    }
}

static void on_inbox_bell(tw_bell *b)
{
    run_inbox(b->data);
}

/* Posts fn to every loop but `srv` (arg shared: fn must not free it). Logs a loop it could
 * not reach (out of memory). */
static void post_others(tw_server *srv, tw_post_fn fn, void *arg, const char *what)
{
    tw_node *node = srv->node;
    for (size_t i = 0; i < node->nloops; i++)
        if (node->loops[i] != srv && tw_server_post(node->loops[i], fn, arg) != 0)
            tw_error("loop-post", "out of memory: loop %zu not told to %s", i, what);
}

static tw_figures own_figures(const tw_server *srv)
{
    return (tw_figures){
        .stats = srv->stats,
        .nconns = srv->nconns,
        .nsessions = srv->nsessions,
        .nsubs = srv->nsubs,
        .nchannels = srv->nchannels,
        .pending_publishes = srv->pending_publishes,
    };
}

void tw_server_figures(tw_server *srv, tw_figures *sum, tw_figures *per_loop)
{
    tw_node *node = srv->node;
    tw_figures own = own_figures(srv);
    *sum = own;
    if (per_loop) per_loop[srv->loop_no] = own;
    if (node->nloops == 1) return;
    pthread_mutex_lock(&node->figures_mu);
    for (size_t i = 0; i < node->nloops; i++) {
        if (i == srv->loop_no) continue;
        tw_figures_add(sum, &node->loops[i]->published);
        if (per_loop) per_loop[i] = node->loops[i]->published;
    }
    pthread_mutex_unlock(&node->figures_mu);
}

/* One request run on every loop, answered on the loop that asked. */
struct each_loop {
    tw_server *home;
    size_t waiting; /* home loop only */
    tw_post_fn each, done;
    void *arg;
};

static void each_reported(tw_server *srv, void *arg)
{
    struct each_loop *e = arg;
    if (--e->waiting > 0) return;
    e->done(srv, e->arg);
    free(e);
}

static void each_there(tw_server *srv, void *arg)
{
    struct each_loop *e = arg;
    e->each(srv, e->arg);
    if (tw_server_post(e->home, each_reported, e) != 0)
        tw_error("loop-post", "out of memory: a request to every loop is never answered");
}

void tw_server_each_loop(tw_server *srv, tw_post_fn each, tw_post_fn done, void *arg)
{
    tw_node *node = srv->node;
    each(srv, arg);
    struct each_loop *e = node->nloops > 1 ? malloc(sizeof *e) : NULL;
    if (!e) {
        if (node->nloops > 1) tw_error("loop-post", "out of memory: only this loop asked");
        done(srv, arg);
        return;
    }
    *e = (struct each_loop){.home = srv, .waiting = 1, .each = each, .done = done, .arg = arg};
    for (size_t i = 0; i < node->nloops; i++)
        if (node->loops[i] != srv && tw_server_post(node->loops[i], each_there, e) == 0)
            e->waiting++;
    each_reported(srv, e); /* drops the count held while posting */
}

void tw_server_publish_figures(tw_server *srv)
{
    tw_figures f = own_figures(srv);
    pthread_mutex_lock(&srv->node->figures_mu);
    srv->published = f;
    pthread_mutex_unlock(&srv->node->figures_mu);
}

/* ---- Ticks, drain, shutdown --------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    tw_server *srv = t->data;
    uint64_t now = tw_now_ms(srv);
    tw_stats_sample(&srv->stats, now);
    tw_stats *st = &srv->stats;
    if (now - st->prev_store_sample_ms >= 1000) {
        tw_store_stats ss;
        tw_store_get_stats(srv->store, &ss);
        if (st->prev_store_sample_ms)
            st->store_commits_per_s = (double)(ss.commits - st->prev_store_commits) * 1000.0 /
                                      (double)(now - st->prev_store_sample_ms);
        st->prev_store_commits = ss.commits;
        st->prev_store_sample_ms = now;
    }
    /* Reader slots of dead processes (a backup or mdb_stat killed mid-read) pin old pages:
     * free them now and then, not only at start. One loop is enough. */
    if (srv->loop_no == 0 && now - st->last_reader_check_ms >= 30000) {
        int cleared = 0;
        st->last_reader_check_ms = now;
        if (tw_store_check_readers(srv->store, &cleared) == 0 && cleared > 0)
            tw_warn("store-readers", "freed %d reader slots left by dead processes", cleared);
    }
    tw_conn_tick(srv, now);
}

static void stop_loop(tw_server *srv)
{
    uv_timer_stop(&srv->shutdown_timer);
    uv_stop(srv->loop);
}

static void on_drain_poll(uv_timer_t *t)
{
    tw_server *srv = t->data;
    uint64_t now = tw_now_ms(srv);
    if ((srv->nconns == 0 && srv->pending_publishes == 0) || now >= srv->drain_deadline_ms) {
        if (srv->nconns || srv->pending_publishes)
            tw_warn("drain-timeout", "drain timed out with %zu connections, %" PRIu64
                    " publishes pending", srv->nconns, srv->pending_publishes);
        stop_loop(srv);
    }
}

static void close_listener_cb(uv_handle_t *h)
{
    (void)h;
}

/* Stops accepting, closes every client (1012), and stops the loop once they are gone and
 * every publish committed (or at the shutdown timeout). */
static void drain_loop(tw_server *srv, void *arg)
{
    (void)arg;
    if (srv->draining) return;
    srv->draining = 1;
    if (!uv_is_closing((uv_handle_t *)&srv->listener))
        uv_close((uv_handle_t *)&srv->listener, close_listener_cb);
    if (srv->tls_listening && !uv_is_closing((uv_handle_t *)&srv->tls_listener))
        uv_close((uv_handle_t *)&srv->tls_listener, close_listener_cb);
    for (tw_conn *c = srv->conns; c; c = c->next) {
        if (c->kind == TW_CONN_WS && c->session) tw_session_close(c->session, 1012, "node draining");
        else if (!c->http_busy) tw_conn_close(c);
    }
    srv->drain_deadline_ms = tw_now_ms(srv) + (uint64_t)srv->cfg->shutdown_timeout_ms;
    uv_timer_start(&srv->shutdown_timer, on_drain_poll, 0, DRAIN_POLL_MS);
}

static void stop_now(tw_server *srv, void *arg)
{
    (void)arg;
    stop_loop(srv);
}

/* Loop 0 (signals): the first signal drains every loop, a second stops them at once. */
static void begin_drain(tw_server *srv, const char *why)
{
    if (srv->draining) {
        tw_warn("shutdown", "second signal: stopping now");
        post_others(srv, stop_now, NULL, "stop");
        stop_loop(srv);
        return;
    }
    tw_info("drain", "%s: draining (readyz 503, clients closed with 1012)", why);
    post_others(srv, drain_loop, NULL, "drain");
    drain_loop(srv, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    begin_drain(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Reads the key files again (key rotation), keeping every connection. Sessions keep their
 * verified claims, which point at no key, so the old keys can go at once. Each loop has its
 * own keys and certificate context, so no loop ever sees another's change half made. */
static void reload_keys(tw_server *srv, void *arg)
{
    (void)arg;
    int loud = srv->loop_no == 0; /* one log line for the node, not one per loop */
    tw_auth *fresh;
    char err[256];
    if (tw_auth_load(&fresh, srv->cfg, err, sizeof err) != 0) {
        tw_warn("reload", "SIGHUP: keeping the current keys: %s", err);
    } else {
        tw_auth_free(srv->auth);
        srv->auth = fresh;
        if (loud) tw_info("reload", "SIGHUP: %zu JWT keys loaded", tw_auth_nkeys(fresh));
    }
    /* A new certificate serves new connections; each TLS connection keeps the context it
     * began with (OpenSSL counts references), so none is dropped. */
    tw_tls_ctx *ctx;
    if (!srv->tls_ctx) return;
    if (tw_tls_ctx_new(&ctx, srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof err) != 0) {
        tw_warn("reload", "SIGHUP: keeping the current certificate: %s", err);
        return;
    }
    tw_tls_ctx_free(srv->tls_ctx);
    srv->tls_ctx = ctx;
    if (loud) tw_info("reload", "SIGHUP: TLS certificate reloaded");
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    tw_server *srv = h->data;
    post_others(srv, reload_keys, NULL, "reload its keys");
    reload_keys(srv, NULL);
}

/* Builds the loop's authentication policy and presence table; loop 0 says loudly when the
 * node is open. */
static int setup_auth(tw_server *srv)
{
    const tw_config *cfg = srv->cfg;
    char err[256];
    if (tw_auth_load(&srv->auth, cfg, err, sizeof err) != 0) {
        tw_error("config", "%s", err);
        return -1;
    }
    if (!(srv->presence = tw_presence_new())) return -1;
    if (srv->loop_no != 0) return 0;
    if (tw_auth_required(srv->auth))
        tw_info("auth", "%zu JWT keys: clients must authenticate within %lld ms",
                tw_auth_nkeys(srv->auth), (long long)cfg->auth_timeout_ms);
    else
        tw_warn("auth-open", "no jwt-key: clients connect without a token and may subscribe and "
                             "publish to every channel (development only)");
    if (!*cfg->admin_key)
        tw_warn("admin-open", "no --admin-key: /stats and /metrics are open to anyone who can "
                              "reach this port");
    return 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* ---- Listeners ---------------------------------------------------------------------- */

/* HOST:PORT of a listen setting as an address; -1 after logging what is wrong. */
static int listen_addr(const char *flag, const char *hostport, struct sockaddr_storage *addr)
{
    char host[256];
    int port;
    if (tw_parse_hostport(hostport, host, sizeof host, &port) != 0) {
        tw_error("config", "--%s %s: expected HOST:PORT", flag, hostport);
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr) != 0) {
        tw_error("config", "--%s %s: %s is not an IP address", flag, hostport, host);
        return -1;
    }
    return 0;
}

/* A socket bound to addr with SO_REUSEADDR (and SO_REUSEPORT when `shared`), or a libuv
 * error code (negative). */
static int bound_socket(const struct sockaddr *addr, int shared)
{
    socklen_t len =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, addr, len) != 0) {
        int rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    return fd;
}

/*
 * A listening socket of its own for one loop of several: SO_REUSEPORT lets every loop bind
 * the same address, and the kernel spreads new connections across them. It would also let
 * another process of the same user share the port (a second node started on it by
 * mistake, taking half its clients): the first loop first binds without SO_REUSEPORT, which
 * fails like a single loop's bind when anything holds the port.
 */
static int bind_shared(uv_tcp_t *listener, const struct sockaddr *addr, int first)
{
    int port = addr->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
                                           : ((const struct sockaddr_in *)addr)->sin_port;
    if (first && port != 0) {
        int probe = bound_socket(addr, 0);
        if (probe < 0) return probe;
        close(probe);
    }
    int fd = bound_socket(addr, 1);
    if (fd < 0) return fd;
    int rc = uv_tcp_open(listener, fd);
    if (rc != 0) close(fd);
    return rc;
}

/*
 * Binds one loop's listener: the plain one (--listen) or the TLS one (--tls-listen), which
 * differ only in the transport conn.c gives the connections they accept. *addr is where to
 * bind; loop 0 writes back the port it got, so that port 0 gives every loop the same one.
 */
static int listen_on_handle(tw_server *srv, uv_tcp_t *listener, const char *flag,
                            const char *hostport, struct sockaddr_storage *addr, int tls)
{
    uv_tcp_init(srv->loop, listener);
    listener->data = srv;
    int rc = srv->node->nloops == 1
                 ? uv_tcp_bind(listener, (const struct sockaddr *)addr, 0)
                 : bind_shared(listener, (const struct sockaddr *)addr, srv->loop_no == 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)listener, 4096, tw_conn_on_accept);
    if (rc != 0) {
        tw_error("listen", "cannot listen on %s: %s", hostport, uv_strerror(rc));
        return -1;
    }
    if (srv->loop_no != 0) return 0;
    int alen = sizeof *addr;
    uv_tcp_getsockname(listener, (struct sockaddr *)addr, &alen);
    tw_info("listen", "serving WebSocket on %s://%s/ws and HTTP on %s://%s%s", tls ? "wss" : "ws",
            hostport, tls ? "https" : "http", hostport,
            srv->node->nloops > 1 ? " (every loop, SO_REUSEPORT)" : "");
    (void)flag;
    return 0;
}

/* The TLS listener, when tls-listen is set: certificate and key must load first. */
static int listen_tls(tw_server *srv, struct sockaddr_storage *addr)
{
    const tw_config *cfg = srv->cfg;
    if (!*cfg->tls_listen) return 0;
    char err[256];
    if (!*cfg->tls_cert || !*cfg->tls_key) {
        tw_error("config", "--tls-listen needs --tls-cert and --tls-key");
        return -1;
    }
    if (tw_tls_ctx_new(&srv->tls_ctx, cfg->tls_cert, cfg->tls_key, err, sizeof err) != 0) {
        tw_error("tls", "%s", err);
        return -1;
    }
    if (listen_on_handle(srv, &srv->tls_listener, "tls-listen", cfg->tls_listen, addr, 1) != 0)
        return -1;
    srv->tls_listening = 1;
    return 0;
}

/* ---- The store ----------------------------------------------------------------------- */

/*
 * The `retention` setting: one rule per line, `PREFIX [max-age=DURATION] [max-count=N]`.
 * Fills rules[] (prefixes point into `buf`, a copy the caller frees). Returns the number of
 * rules, or -1 after logging what is wrong.
 */
static int parse_retention(const char *text, char **buf, tw_store_retention_rule **out)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == '\n';
    *buf = strdup(text);
    *out = calloc(cap, sizeof **out);
    if (!*buf || !*out) return -1;
    int n = 0;
    char *save_line = NULL;
    for (char *line = strtok_r(*buf, "\n", &save_line); line;
         line = strtok_r(NULL, "\n", &save_line)) {
        char *save = NULL, *tok = strtok_r(line, " \t", &save);
        if (!tok) continue;
        tw_store_retention_rule *r = &(*out)[n];
        r->prefix = tok;
        r->max_age_ms = TW_STORE_RETAIN_INHERIT;
        r->max_count = TW_STORE_RETAIN_INHERIT;
        while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
            char *end = NULL;
            if (strncmp(tok, "max-age=", 8) == 0 &&
                tw_parse_duration_ms(tok + 8, &r->max_age_ms) == 0 && r->max_age_ms >= 0)
                continue;
            if (strncmp(tok, "max-count=", 10) == 0 && tok[10] >= '0' && tok[10] <= '9') {
                errno = 0;
                long long v = strtoll(tok + 10, &end, 10);
                if (errno == 0 && *end == '\0' && v >= 0) {
                    r->max_count = v;
                    continue;
                }
            }
            tw_error("config", "retention %s: `%s` is not max-age=DURATION or max-count=N",
                     r->prefix, tok);
            return -1;
        }
        n++;
    }
    return n;
}

static int open_store(tw_node *node)
{
    const tw_config *cfg = node->cfg;
    char *rules_buf = NULL;
    tw_store_retention_rule *rules = NULL;
    int nrules = parse_retention(cfg->retention ? cfg->retention : "", &rules_buf, &rules);
    if (nrules < 0) {
        free(rules_buf);
        free(rules);
        return -1;
    }
    tw_store_options so = {
        .path = cfg->data,
        .node_name = cfg->node_id,
        .map_size = (uint64_t)cfg->store_map_initial,
        .map_max = (uint64_t)cfg->store_map_size,
        .max_queue_bytes = (size_t)cfg->store_max_queue_bytes,
        .max_event_bytes = (size_t)cfg->max_message_size + TW_STORE_CHANNEL_MAX,
        .retention =
            {
                .max_age_ms = cfg->retention_max_age_ms,
                .max_count = cfg->retention_max_count,
                .max_bytes = (uint64_t)cfg->retention_max_bytes,
                .rules = rules,
                .nrules = (size_t)nrules,
                .interval_ms = (unsigned)cfg->retention_interval_ms,
            },
        .on_commit = on_commit,
        .cb_arg = node,
    };
    int rc = tw_store_open(&node->store, &so);
    free(rules_buf); /* the store keeps its own copy */
    free(rules);
    if (rc != 0) {
        tw_error("store-open", "cannot open the log in %s: %s", cfg->data, tw_store_strerror(rc));
        return -1;
    }
    node->origin = tw_store_origin(node->store);
    return 0;
}

/* A loop's reader of the log, and its head vector from where the log ends. */
static int open_reader(tw_server *srv)
{
    int rc;
    if ((rc = tw_store_reader_new(srv->store, &srv->reader)) != 0) {
        tw_error("store-open", "cannot read the log: %s", tw_store_strerror(rc));
        return -1;
    }
    /* The head vector starts where the log ends; this node's origin comes first. Read
     * before the loops start: nothing commits yet, so every loop starts at the same place. */
    tw_store_origin_info info[64];
    size_t n = 0;
    if ((rc = tw_store_origins(srv->reader, info, 64, &n)) != 0) {
        tw_error("store-open", "cannot list origins: %s", tw_store_strerror(rc));
        return -1;
    }
    if (!tw_server_origin(srv, srv->origin)) return -1;
    for (size_t i = 0; i < n && i < 64; i++) {
        tw_origin_head *h = tw_server_origin(srv, info[i].origin);
        if (!h) return -1;
        h->last_seq = info[i].last_seq;
    }
    tw_store_stats st;
    tw_store_get_stats(srv->store, &st);
    srv->fanout_lsn = st.last_lsn;
    if (srv->loop_no == 0)
        tw_info("store-open", "log %s opened: origin %s, %" PRIu64 " events, last seq %" PRIu64,
                srv->cfg->data, srv->origin, st.last_lsn, srv->heads[0]->last_seq);
    return 0;
}

/* ---- Run ----------------------------------------------------------------------------- */

/* A loop's handles and state; listening comes after (every loop is made first). */
static int loop_init(tw_node *node, unsigned no)
{
    tw_server *srv = calloc(1, sizeof *srv);
    uv_loop_t *loop = calloc(1, sizeof *loop);
    if (!srv || !loop || uv_loop_init(loop) != 0) {
        free(srv);
        free(loop);
        return -1;
    }
    node->loops[no] = srv;
    const tw_config *cfg = node->cfg;
    srv->node = node;
    srv->loop_no = no;
    srv->loop = loop;
    srv->cfg = cfg;
    srv->store = node->store;
    srv->origin = node->origin;
    srv->iplimits = node->iplimits;
    srv->started_ms = node->started_ms;
    srv->limits = tw_proto_default_limits;
    srv->limits.max_last = (uint32_t)cfg->max_last;
    srv->limits.max_subs = (size_t)cfg->max_subscriptions;
    pthread_mutex_init(&srv->commit_mu, NULL);
    pthread_mutex_init(&srv->inbox_mu, NULL);

    srv->commit_bell.data = srv->inbox_bell.data = srv;
    int rc;
    if ((rc = tw_bell_init(loop, &srv->commit_bell, on_commit_bell)) != 0 ||
        (rc = tw_bell_init(loop, &srv->inbox_bell, on_inbox_bell)) != 0) {
        tw_error("loop", "cannot make the loop's wake-up eventfds: %s", uv_strerror(rc));
        return -1;
    }
    uv_check_init(loop, &srv->turn_check);
    srv->turn_check.data = srv;
    uv_check_start(&srv->turn_check, on_turn);
    uv_idle_init(loop, &srv->turn_idle);
    uv_timer_init(loop, &srv->tick);
    srv->tick.data = srv;
    uv_timer_init(loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    /* Fine enough that pings keep their interval and timeouts fire on time, at most 1 s. */
    uint64_t tick = (uint64_t)(cfg->ping_interval_ms < cfg->idle_timeout_ms ? cfg->ping_interval_ms
                                                                           : cfg->idle_timeout_ms) / 5;
    srv->tick_ms = tick < 20 ? 20 : tick > 1000 ? 1000 : tick;
    if (setup_auth(srv) != 0 || tw_channels_init(srv) != 0 || open_reader(srv) != 0) return -1;
    return 0;
}

/* Loop 0 only: the signals that drain, stop and reload the node. */
static void watch_signals(tw_server *srv)
{
    uv_signal_init(srv->loop, &srv->sig_term);
    uv_signal_init(srv->loop, &srv->sig_int);
    uv_signal_init(srv->loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
}

static void *loop_thread(void *arg)
{
    tw_server *srv = arg;
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Shutdown, first part (main thread, every loop stopped): clients closed, publishes handed
 * to the writer. */
static void loop_close_clients(tw_server *srv)
{
    srv->ready = 0;
    srv->draining = 1;
    /* Close every client now (the drain already asked them to go); their close callbacks
     * run in the next turn and free them once no publish refers to them. */
    for (tw_conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        tw_conn_abort(c);
    }
    uv_run(srv->loop, UV_RUN_NOWAIT);
    if (srv->store) tw_server_submit_pending(srv);
}

/* Shutdown, last part (the store closed, completions and messages taken): handles close,
 * the loop is freed. */
static void loop_free(tw_server *srv)
{
    if (!srv) return;
    uv_loop_t *loop = srv->loop;
    tw_bell_close(&srv->commit_bell);
    tw_bell_close(&srv->inbox_bell);
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    tw_cluster_drop_held(srv);
    if (srv->loop_no == 0) tw_cluster_free(srv); /* after its bell closed */
    tw_conn_resume_reads(srv); /* every connection is closed: this drops the last references */
    if (uv_loop_close(loop) != 0) tw_warn("shutdown", "an event loop did not close cleanly");
    free(loop);
    tw_channels_free(srv);
    tw_presence_free(srv->presence);
    tw_auth_free(srv->auth);
    tw_tls_ctx_free(srv->tls_ctx);
    while (srv->pub_free) {
        tw_publish *p = srv->pub_free;
        srv->pub_free = p->next;
        free(p);
    }
    for (size_t i = 0; i < srv->nheads; i++)
        free(srv->heads[i]);
    free(srv->heads);
    pthread_mutex_destroy(&srv->commit_mu);
    pthread_mutex_destroy(&srv->inbox_mu);
    free(srv);
}

int tw_server_run(const tw_config *cfg)
{
    tw_node node = {.cfg = cfg, .nloops = (size_t)cfg->threads};
    node.started_ms = (uint64_t)wall_ms();
    pthread_mutex_init(&node.figures_mu, NULL);
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    size_t started = 1; /* loops running on their threads, and loop 0 on this one */
    struct sockaddr_storage addr, tls_addr;
    if (!(node.loops = calloc(node.nloops, sizeof *node.loops))) goto out;
    if ((cfg->max_connections_per_ip || cfg->new_connections_per_ip) &&
        !(node.iplimits =
              tw_iplimits_new(cfg->max_connections_per_ip, cfg->new_connections_per_ip)))
        goto out;
    if (open_store(&node) != 0) goto out;
    for (unsigned i = 0; i < node.nloops; i++)
        if (loop_init(&node, i) != 0) goto out;
    tw_server *srv = node.loops[0];
    if (tw_cluster_start(srv) != 0 || listen_addr("listen", cfg->listen, &addr) != 0 ||
        (*cfg->tls_listen && listen_addr("tls-listen", cfg->tls_listen, &tls_addr) != 0))
        goto out;
    for (size_t i = 1; i < node.nloops; i++)
        node.loops[i]->cluster = srv->cluster; /* loop 0 runs it (cluster.h) */
    for (size_t i = 0; i < node.nloops; i++)
        if (listen_on_handle(node.loops[i], &node.loops[i]->listener, "listen", cfg->listen, &addr,
                             0) != 0 ||
            listen_tls(node.loops[i], &tls_addr) != 0)
            goto out;
    watch_signals(srv);
    for (size_t i = 0; i < node.nloops; i++) {
        tw_server *l = node.loops[i];
        uv_timer_start(&l->tick, on_tick, l->tick_ms, l->tick_ms);
        l->ready = 1;
    }
    for (; started < node.nloops; started++)
        if (pthread_create(&node.loops[started]->thread, NULL, loop_thread, node.loops[started]) !=
            0) {
            tw_error("threads", "cannot start loop %zu", started);
            break;
        }
    if (started == node.nloops) {
        tw_info("ready", "node %s ready (durability %s, api %s, %zu loop%s)", node.origin,
                cfg->durability, *cfg->api_key ? "needs a key" : "OPEN: no --api-key set",
                node.nloops, node.nloops == 1 ? "" : "s");
        uv_run(srv->loop, UV_RUN_DEFAULT);
        status = 0;
    } else {
        for (size_t i = 1; i < started; i++)
            tw_server_post(node.loops[i], stop_now, NULL);
    }
    for (size_t i = 1; i < started; i++)
        pthread_join(node.loops[i]->thread, NULL);

out:
    for (size_t i = 0; node.loops && i < node.nloops; i++)
        if (node.loops[i]) loop_close_clients(node.loops[i]);
    /* Leave the cluster once every local publish has committed (the drain waited for
     * them): peers get everything this node accepted before it goes. */
    if (node.loops && node.loops[0])
        tw_cluster_stop(node.loops[0], (uint32_t)cfg->shutdown_timeout_ms);
    /* The store commits what was submitted before it stops; the completions find their
     * connections closed and only drop their references. */
    for (size_t i = 0; node.loops && i < node.nloops; i++)
        if (node.loops[i]) {
            tw_store_reader_free(node.loops[i]->reader);
            node.loops[i]->reader = NULL;
        }
    tw_store_close(node.store);
    for (size_t i = 0; node.loops && i < node.nloops; i++) {
        tw_server *l = node.loops[i];
        if (!l) continue;
        l->store = NULL;
        for (tw_publish *p = take_commits(l), *next; p; p = next) {
            next = p->next;
            complete_publish(l, p);
        }
    }
    /* Messages between loops still queued run now (one may post another: run until none
     * is left), before any loop is freed. */
    for (int more = 1; more && node.loops;) {
        more = 0;
        for (size_t i = 0; i < node.nloops; i++)
            if (node.loops[i] && node.loops[i]->inbox_head) {
                run_inbox(node.loops[i]);
                more = 1;
            }
    }
    for (size_t i = 0; node.loops && i < node.nloops; i++)
        loop_free(node.loops[i]);
    free(node.loops);
    tw_iplimits_free(node.iplimits);
    pthread_mutex_destroy(&node.figures_mu);
    if (status == 0) tw_info("stopped", "node stopped");
    return status;
}
