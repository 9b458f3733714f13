/*
 * server.c — the node's lifecycle: open the store, listen, run the loop, take committed
 * batches from the writer thread, drain on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Writer thread: hand the committed batch to the loop. */
static void on_commit(void *arg, tw_store_append *done)
{
    tw_server *srv = arg;
    pthread_mutex_lock(&srv->commit_mu);
    for (tw_store_append *a = done, *next; a; a = next) {
        next = a->next;
        tw_publish *p = (tw_publish *)a; /* app is the first member */
        p->next = NULL;
        if (srv->commit_tail) srv->commit_tail->next = p;
        else srv->commit_head = p;
        srv->commit_tail = p;
    }
    pthread_mutex_unlock(&srv->commit_mu);
    uv_async_send(&srv->commit_async);
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
    for (size_t i = 0; i < srv->chan_cap; i++)
        for (tw_channel *ch = srv->chan_table[i]; ch; ch = ch->hnext)
            if (ch->len == len && memcmp(ch->name, channel, len) == 0)
                while (ch->live) {
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
 * same path to subscribers: the event is made once, fanned out, and the head vector moves.
 * Then a local publisher is acknowledged (at once, or with quorum durability once a majority
 * has the event) and a replicated one is reported applied to gossip.
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
    tw_origin_head *head = remote ? tw_server_origin(srv, p->app.origin) : srv->heads[0];
    if (!remote) srv->stats.events_published++;
    else srv->stats.events_replicated_in++;
    if (head) head->last_seq = p->app.seq;
    srv->fanout_lsn = p->app.lsn;
    tw_event *ev = head ? tw_event_new(head->id, p->app.seq, p->app.lsn, p->app.ts_ms, p->channel,
                                       p->app.channel_len, p->app.encoding, p->data,
                                       p->app.data_len)
                        : NULL;
    if (ev) {
        p->channel = NULL;
        p->data = NULL;
        tw_fanout(srv, ev);
        tw_event_unref(ev);
    } else {
        fanout_failed(srv, p->channel, p->app.channel_len);
    }
    if (remote) {
        tw_cluster_remote_done(srv, p);
    } else {
        srv->local_committed_seq = p->app.seq;
        if (tw_cluster_hold_ack(srv, p) == 0) return; /* the cluster acks it at quorum */
        tw_server_ack(srv, p);
    }
    tw_publish_free(srv, p);
}

static tw_publish *take_commits(tw_server *srv)
{
    pthread_mutex_lock(&srv->commit_mu);
    tw_publish *list = srv->commit_head;
    srv->commit_head = srv->commit_tail = NULL;
    pthread_mutex_unlock(&srv->commit_mu);
    return list;
}

static void on_commit_async(uv_async_t *a)
{
    tw_server *srv = a->data;
    /* uv_async_send coalesces: take everything queued since the last wakeup. */
    uint64_t before = srv->local_committed_seq;
    for (tw_publish *p = take_commits(srv), *next; p; p = next) {
        next = p->next;
        complete_publish(srv, p);
    }
    /* Peers learn of new local events once per wakeup, however many committed. */
    if (srv->local_committed_seq != before) tw_cluster_local_committed(srv, srv->local_committed_seq);
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
     * free them now and then, not only at start. */
    if (now - st->last_reader_check_ms >= 30000) {
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

static void begin_drain(tw_server *srv, const char *why)
{
    if (srv->draining) {
        tw_warn("shutdown", "second signal: stopping now");
        stop_loop(srv);
        return;
    }
    srv->draining = 1;
    tw_info("drain", "%s: draining (readyz 503, clients closed with 1012)", why);
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

static void on_signal(uv_signal_t *h, int signum)
{
    begin_drain(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* SIGHUP: read the key files again (key rotation), keeping every connection. Sessions keep
 * their verified claims, which point at no key, so the old keys can go at once. */
static void on_hup(uv_signal_t *h, int signum)
{
    tw_server *srv = h->data;
    tw_auth *fresh;
    char err[256];
    if (tw_auth_load(&fresh, srv->cfg, err, sizeof err) != 0) {
        tw_warn("reload", "SIGHUP: keeping the current keys: %s", err);
    } else {
        tw_auth_free(srv->auth);
        srv->auth = fresh;
        tw_info("reload", "SIGHUP: %zu JWT keys loaded", tw_auth_nkeys(fresh));
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
    tw_info("reload", "SIGHUP: TLS certificate reloaded");
}

/* Builds the authentication policy and limits; says loudly when the node is open. */
static int setup_auth(tw_server *srv)
{
    const tw_config *cfg = srv->cfg;
    char err[256];
    if (tw_auth_load(&srv->auth, cfg, err, sizeof err) != 0) {
        tw_error("config", "%s", err);
        return -1;
    }
    if (!(srv->presence = tw_presence_new())) return -1;
    if ((cfg->max_connections_per_ip || cfg->new_connections_per_ip) &&
        !(srv->iplimits =
              tw_iplimits_new(cfg->max_connections_per_ip, cfg->new_connections_per_ip)))
        return -1;
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

/* ---- Run ----------------------------------------------------------------------------- */

/* Binds one listener: the plain one (--listen) or the TLS one (--tls-listen), which differ
 * only in the transport conn.c gives the connections they accept. */
static int listen_on_handle(tw_server *srv, uv_tcp_t *listener, const char *flag,
                            const char *hostport, int tls)
{
    char host[256];
    int port;
    if (tw_parse_hostport(hostport, host, sizeof host, &port) != 0) {
        tw_error("config", "--%s %s: expected HOST:PORT", flag, hostport);
        return -1;
    }
    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
        tw_error("config", "--%s %s: %s is not an IP address", flag, hostport, host);
        return -1;
    }
    uv_tcp_init(srv->loop, listener);
    listener->data = srv;
    int rc = uv_tcp_bind(listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)listener, 4096, tw_conn_on_accept);
    if (rc != 0) {
        tw_error("listen", "cannot listen on %s: %s", hostport, uv_strerror(rc));
        return -1;
    }
    tw_info("listen", "serving WebSocket on %s://%s/ws and HTTP on %s://%s", tls ? "wss" : "ws",
            hostport, tls ? "https" : "http", hostport);
    return 0;
}

static int listen_on(tw_server *srv, const char *hostport)
{
    return listen_on_handle(srv, &srv->listener, "listen", hostport, 0);
}

/* The TLS listener, when tls-listen is set: certificate and key must load first. */
static int listen_tls(tw_server *srv)
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
    if (listen_on_handle(srv, &srv->tls_listener, "tls-listen", cfg->tls_listen, 1) != 0)
        return -1;
    srv->tls_listening = 1;
    return 0;
}

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

static int open_store(tw_server *srv)
{
    const tw_config *cfg = srv->cfg;
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
        .cb_arg = srv,
    };
    int rc = tw_store_open(&srv->store, &so);
    free(rules_buf); /* the store keeps its own copy */
    free(rules);
    if (rc != 0) {
        tw_error("store-open", "cannot open the log in %s: %s", cfg->data, tw_store_strerror(rc));
        return -1;
    }
    srv->origin = tw_store_origin(srv->store);
    if ((rc = tw_store_reader_new(srv->store, &srv->reader)) != 0) {
        tw_error("store-open", "cannot read the log: %s", tw_store_strerror(rc));
        return -1;
    }
    /* The head vector starts where the log ends; this node's origin comes first. */
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
    tw_info("store-open", "log %s opened: origin %s, %" PRIu64 " events, last seq %" PRIu64,
            cfg->data, srv->origin, st.last_lsn, srv->heads[0]->last_seq);
    return 0;
}

int tw_server_run(const tw_config *cfg)
{
    tw_server *srv = calloc(1, sizeof *srv);
    uv_loop_t loop;
    if (!srv || uv_loop_init(&loop) != 0) {
        free(srv);
        return 1;
    }
    int status = 1;
    srv->loop = &loop;
    srv->cfg = cfg;
    srv->limits = tw_proto_default_limits;
    srv->limits.max_last = (uint32_t)cfg->max_last;
    srv->limits.max_subs = (size_t)cfg->max_subscriptions;
    srv->started_ms = (uint64_t)wall_ms();
    pthread_mutex_init(&srv->commit_mu, NULL);
    signal(SIGPIPE, SIG_IGN);

    uv_async_init(&loop, &srv->commit_async, on_commit_async);
    srv->commit_async.data = srv;
    uv_check_init(&loop, &srv->turn_check);
    srv->turn_check.data = srv;
    uv_check_start(&srv->turn_check, on_turn);
    uv_idle_init(&loop, &srv->turn_idle);
    uv_timer_init(&loop, &srv->tick);
    srv->tick.data = srv;
    uv_timer_init(&loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    uv_signal_init(&loop, &srv->sig_term);
    uv_signal_init(&loop, &srv->sig_int);
    srv->sig_term.data = srv->sig_int.data = srv;

    if (setup_auth(srv) != 0 || tw_channels_init(srv) != 0 || open_store(srv) != 0 ||
        tw_cluster_start(srv) != 0 || listen_on(srv, cfg->listen) != 0 || listen_tls(srv) != 0)
        goto out_close;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_init(&loop, &srv->sig_hup);
    srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    /* Fine enough that pings keep their interval and timeouts fire on time, at most 1 s. */
    uint64_t tick = (uint64_t)(cfg->ping_interval_ms < cfg->idle_timeout_ms ? cfg->ping_interval_ms
                                                                           : cfg->idle_timeout_ms) / 5;
    srv->tick_ms = tick < 20 ? 20 : tick > 1000 ? 1000 : tick;
    uv_timer_start(&srv->tick, on_tick, srv->tick_ms, srv->tick_ms);
    srv->ready = 1;
    tw_info("ready", "node %s ready (durability %s, api %s)", srv->origin, cfg->durability,
            *cfg->api_key ? "needs a key" : "OPEN: no --api-key set");

    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;

out_close:
    srv->ready = 0;
    srv->draining = 1;
    /* Close every client now (the drain already asked them to go); their close callbacks
     * run in the next turn and free them once no publish refers to them. */
    for (tw_conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        tw_conn_abort(c);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    if (srv->store) tw_server_submit_pending(srv);
    /* Leave the cluster once every local publish has committed (the drain waited for
     * them): peers get everything this node accepted before it goes. */
    tw_cluster_stop(srv, (uint32_t)cfg->shutdown_timeout_ms);
    /* The store commits what was submitted before it stops; the completions find their
     * connections closed and only drop their references. */
    tw_store_reader_free(srv->reader);
    srv->reader = NULL;
    tw_store_close(srv->store);
    srv->store = NULL;
    for (tw_publish *p = take_commits(srv), *next; p; p = next) {
        next = p->next;
        complete_publish(srv, p);
    }
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    tw_cluster_free(srv); /* after its async handle closed */
    tw_conn_resume_reads(srv); /* every connection is closed: this drops the last references */
    if (uv_loop_close(&loop) != 0) tw_warn("shutdown", "the event loop did not close cleanly");
    tw_channels_free(srv);
    tw_presence_free(srv->presence);
    tw_iplimits_free(srv->iplimits);
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
    free(srv);
    if (status == 0) tw_info("stopped", "node stopped");
    return status;
}
