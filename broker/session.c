/*
 * session.c — the client protocol over one WebSocket: decode each message, act, reply.
 * Every refused request gets an `error` reply and the connection stays open; only
 * frame-level faults (ws.c) and policy limits close it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "log.h"
#include "server.h"

static void ws_output(void *arg, const uint8_t *data, size_t len);
static void ws_on_message(void *arg, int opcode, const uint8_t *data, size_t len);
static void ws_on_activity(void *arg);

static const tw_ws_callbacks ws_callbacks = {
    .on_message = ws_on_message,
    .output = ws_output,
    .on_activity = ws_on_activity,
};

tw_session *tw_session_new(tw_conn *c, tw_encoding enc)
{
    tw_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->conn = c;
    s->enc = enc;
    snprintf(s->id, sizeof s->id, "%" PRIu64, c->id);
    if (tw_ws_init(&s->ws, (uint64_t)c->srv->cfg->max_message_size, &ws_callbacks, s) != 0) {
        free(s);
        return NULL;
    }
    uint64_t now = tw_now_ms(c->srv);
    const tw_config *cfg = c->srv->cfg;
    tw_bucket_init(&s->msg_bucket,
                   (double)(cfg->messages_burst ? cfg->messages_burst
                                                : 2 * cfg->max_messages_per_second),
                   now);
    if (tw_auth_required(c->srv->auth)) s->auth_deadline_ms = now + (uint64_t)cfg->auth_timeout_ms;
    return s;
}

static void presence_leave(tw_session *s, const char *channel, size_t len);

void tw_session_free(tw_session *s)
{
    tw_server *srv = s->conn->srv;
    for (tw_sub *sub = s->subs; sub; sub = sub->s_next)
        presence_leave(s, sub->ch->name, sub->ch->len);
    while (s->subs)
        tw_sub_end(s->subs);
    if (s->who) {
        tw_jwt_claims_free(s->who);
        free(s->who);
    }
    if (s->in_ready) { /* unlink from the catch-up work list */
        tw_session **pp = &srv->ready_head;
        tw_session *prev = NULL;
        while (*pp && *pp != s) {
            prev = *pp;
            pp = &(*pp)->ready_next;
        }
        if (*pp) {
            *pp = s->ready_next;
            if (srv->ready_tail == s) srv->ready_tail = prev;
        }
    }
    tw_ws_free(&s->ws);
    free(s);
}

/* The hard ceiling on a session's backlog: replies still queue while it is behind, so a
 * client that never reads but keeps sending must not grow it without bound. */
static size_t backlog_limit(const tw_server *srv)
{
    size_t hwm = (size_t)srv->cfg->outbound_high_water;
    size_t hard = hwm * 4;
    return hard < hwm + 4u * 1024 * 1024 ? hwm + 4u * 1024 * 1024 : hard;
}

/* Keeps the stalled clock and the hard ceiling after output was queued. */
static void check_backlog(tw_session *s)
{
    tw_server *srv = s->conn->srv;
    size_t backlog = tw_conn_backlog(s->conn);
    if (backlog > (size_t)srv->cfg->outbound_high_water && !s->stalled_since_ms)
        s->stalled_since_ms = tw_now_ms(srv);
    if (backlog > backlog_limit(srv) && !tw_ws_closing(&s->ws)) {
        srv->stats.slow_consumer_closes++;
        tw_info("slow-consumer", "session %s: %zu bytes unread: closing with 4208", s->id, backlog);
        tw_session_close(s, 4208, "slow consumer");
    }
}

static void ws_output(void *arg, const uint8_t *data, size_t len)
{
    tw_session *s = arg;
    tw_frame *f = tw_frame_copy(data, len);
    if (!f) {
        tw_conn_close(s->conn);
        return;
    }
    tw_conn_send(s->conn, f);
}

void tw_session_send_buf(tw_session *s, tw_buf *b)
{
    if (tw_ws_closing(&s->ws)) return;
    tw_frame *f = tw_frame_ws(b, tw_ws_opcode_for(s->enc));
    if (!f) {
        tw_session_close(s, 1011, "out of memory");
        return;
    }
    tw_conn_send(s->conn, f);
    check_backlog(s);
}

/* Sends what an encoder wrote to b (rc: the encoder's result) and frees b. */
static void send_encoded(tw_session *s, tw_buf *b, int rc)
{
    if (rc == 0) tw_session_send_buf(s, b);
    else tw_session_close(s, 1011, "encoding failed");
    tw_buf_free(b);
}

void tw_session_error(tw_session *s, const int64_t *id, int code, const char *message)
{
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    s->conn->srv->stats.request_errors++;
    send_encoded(s, &b, tw_proto_encode_error(&b, s->enc, id, code, message));
}

void tw_session_close(tw_session *s, uint16_t code, const char *reason)
{
    tw_ws_close(&s->ws, code, reason);
    tw_conn_close(s->conn);
}

void tw_session_feed(tw_session *s, const uint8_t *data, size_t len)
{
    int rc = tw_ws_feed(&s->ws, data, len);
    /* The publishes of this read go to the writer together, before the next client's. */
    tw_server_submit_pending(s->conn->srv);
    if (rc != 0 || tw_ws_closing(&s->ws)) {
        if (rc != 0 || !tw_ws_close_received(&s->ws))
            s->conn->srv->stats.protocol_closes++;
        tw_conn_close(s->conn);
    }
}

void tw_session_on_drain(tw_session *s)
{
    tw_server *srv = s->conn->srv;
    size_t backlog = tw_conn_backlog(s->conn);
    /* Resume below half the high-water mark, so a client at the edge is not fed a chunk
     * per write completion. */
    if (backlog <= (size_t)srv->cfg->outbound_high_water / 2) {
        s->stalled_since_ms = 0;
        if (s->cu_head) tw_catchup_schedule(s);
    }
}

/* ---- Identity, permissions, presence (auth.h) -------------------------------------- */

static int64_t wall_s(void)
{
    return (int64_t)time(NULL);
}

void tw_presence_member_of(tw_session *s, const char *node, tw_member *m)
{
    m->user = s->who ? s->who->sub : NULL;
    m->node = node;
    m->conn = s->id;
}

void tw_presence_notify(tw_server *srv, const char *op, const char *channel, size_t len,
                        const tw_member *who, const tw_session *except)
{
    if (!tw_auth_flags(srv->auth, channel, len).join_leave) return;
    tw_session *const *m;
    size_t n = tw_presence_members(srv->presence, channel, len, &m);
    for (size_t i = 0; i < n; i++) {
        if (m[i] == except || tw_ws_closing(&m[i]->ws)) continue;
        tw_buf b;
        tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
        if (tw_presence_encode_change(&b, m[i]->enc, op, channel, len, who) == 0)
            tw_session_send_buf(m[i], &b);
        tw_buf_free(&b);
    }
}

/* A join or leave on one loop, for the node's other loops (--threads): each keeps the
 * member beside its own, as it keeps another node's, and tells its members. One copy is
 * shared by every loop it is posted to; the last frees it. */
struct loop_presence {
    int join;
    char *channel;
    size_t len;
    char *user, *node, *conn; /* user NULL: a client without a token */
    _Atomic size_t refs;
};

static void loop_presence_release(struct loop_presence *lp)
{
    if (--lp->refs > 0) return;
    free(lp->channel);
    free(lp->user);
    free(lp->node);
    free(lp->conn);
    free(lp);
}

static void notify_leave(void *arg, const char *channel, size_t len, const tw_member *m)
{
    tw_presence_notify(arg, "leave", channel, len, m, NULL);
}

static void presence_from_loop(tw_server *srv, void *arg)
{
    struct loop_presence *lp = arg;
    tw_member m = {lp->user, lp->node, lp->conn};
    if (lp->join) {
        int rc = tw_presence_remote_add(srv->presence, lp->channel, lp->len, &m, 0);
        if (rc == 1)
            tw_presence_notify(srv, "join", lp->channel, lp->len, &m, NULL);
        else if (rc < 0)
            tw_warn("presence-nomem", "out of memory listing a member of another loop");
    } else {
        tw_presence_remote_remove(srv->presence, lp->channel, lp->len, lp->node, lp->conn,
                                  notify_leave, srv);
    }
    loop_presence_release(lp);
}

void tw_presence_tell_loops(tw_server *srv, int join, const char *channel, size_t len,
                            const tw_member *who)
{
    tw_node *node = srv->node;
    if (node->nloops == 1) return;
    struct loop_presence *lp = calloc(1, sizeof *lp);
    if (!lp || !(lp->channel = malloc(len)) || !(lp->node = strdup(who->node)) ||
        !(lp->conn = strdup(who->conn)) || (who->user && !(lp->user = strdup(who->user)))) {
        if (lp) {
            lp->refs = 1;
            loop_presence_release(lp);
        }
        tw_warn("presence-nomem", "out of memory: a %s is not seen on the other loops",
                join ? "join" : "leave");
        return;
    }
    memcpy(lp->channel, channel, len);
    lp->len = len;
    lp->join = join;
    lp->refs = node->nloops; /* one per other loop, one for this call */
    for (size_t i = 0; i < node->nloops; i++)
        if (node->loops[i] != srv && tw_server_post(node->loops[i], presence_from_loop, lp) != 0) {
            tw_warn("presence-nomem", "out of memory: a %s is not seen on loop %zu",
                    join ? "join" : "leave", i);
            loop_presence_release(lp);
        }
    loop_presence_release(lp);
}

/* A local member joined or left: tell this node's other members (on every loop) and the
 * cluster's. */
static void presence_changed(tw_session *s, const char *op, const char *channel, size_t len)
{
    tw_server *srv = s->conn->srv;
    tw_member who;
    tw_presence_member_of(s, srv->cfg->node_id, &who);
    tw_presence_notify(srv, op, channel, len, &who, s);
    tw_presence_tell_loops(srv, op[0] == 'j', channel, len, &who);
    tw_cluster_presence_changed(srv, op, channel, len, &who);
}

static void presence_join(tw_session *s, const char *channel, size_t len)
{
    tw_server *srv = s->conn->srv;
    tw_ns_flags f = tw_auth_flags(srv->auth, channel, len);
    if (!f.presence && !f.join_leave) return;
    if (tw_presence_add(srv->presence, channel, len, s) != 0) {
        tw_warn("presence-nomem", "out of memory tracking presence: session %s not listed",
                s->id);
        return;
    }
    presence_changed(s, "join", channel, len);
}

static void presence_leave(tw_session *s, const char *channel, size_t len)
{
    tw_server *srv = s->conn->srv;
    if (tw_presence_remove(srv->presence, channel, len, s))
        presence_changed(s, "leave", channel, len);
}

/* Takes a token: verifies it and makes its claims the session's identity. Returns 0, or the
 * TW_JWT_* code (logged without the token), the session unchanged. */
static int take_token(tw_session *s, const char *token, size_t len, int refresh)
{
    tw_server *srv = s->conn->srv;
    tw_jwt_claims c;
    int rc = tw_auth_verify(srv->auth, token, len, wall_s(), &c);
    if (rc != 0) {
        srv->stats.auth_failures++;
        tw_info("auth-refused", "session %s: token refused: %s", s->id, tw_jwt_strerror(rc));
        return rc;
    }
    /* A connection is one user for its whole life: its subscriptions were checked for it. */
    if (s->who && strcmp(s->who->sub, c.sub) != 0) {
        tw_jwt_claims_free(&c);
        srv->stats.auth_failures++;
        tw_info("auth-refused", "session %s: a new token must keep the same sub", s->id);
        return TW_JWT_ECLAIMS;
    }
    tw_jwt_claims *who = s->who ? s->who : malloc(sizeof *who);
    if (!who) {
        tw_jwt_claims_free(&c);
        return TW_JWT_ENOMEM;
    }
    if (s->who) tw_jwt_claims_free(s->who);
    *who = c;
    s->who = who;
    s->auth_deadline_ms = 0;
    srv->stats.auth_ok++;
    tw_debug("auth-ok", "session %s: %s as user of %zu bytes with key %s", s->id,
             refresh ? "refreshed" : "authenticated", strlen(c.sub), tw_jwt_key_kid(c.key));
    who->key = NULL; /* keys are replaced on SIGHUP: keep no pointer to one */
    return 0;
}

void tw_session_authenticate(tw_session *s, const char *token, size_t len)
{
    int rc = take_token(s, token, len, 0);
    if (rc == TW_JWT_ENOMEM) tw_session_close(s, 1011, "out of memory");
    else if (rc) tw_session_close(s, 4001, tw_jwt_strerror(rc));
}

void tw_session_check_auth(tw_session *s, uint64_t now_ms, int64_t now_s)
{
    tw_server *srv = s->conn->srv;
    if (s->auth_deadline_ms && !s->who && now_ms >= s->auth_deadline_ms) {
        srv->stats.auth_failures++;
        tw_info("auth-timeout", "session %s: no token in time: closing with 4001", s->id);
        tw_session_close(s, 4001, "authentication required");
    } else if (s->who && now_s - srv->cfg->jwt_leeway_ms / 1000 >= s->who->exp) {
        srv->stats.auth_failures++;
        tw_info("auth-expired", "session %s: token expired: closing with 4001", s->id);
        tw_session_close(s, 4001, "token expired");
    }
}

/* Refuses a request of a client that must authenticate first (401). Returns 1 when the
 * request may go on. */
static int authenticated(tw_session *s, const int64_t *id)
{
    if (s->who || !tw_auth_required(s->conn->srv->auth)) return 1;
    s->conn->srv->stats.forbidden++;
    tw_session_error(s, id, 401, "authenticate first: connect with a token");
    return 0;
}

static void forbidden(tw_session *s, const int64_t *id, const char *what)
{
    s->conn->srv->stats.forbidden++;
    tw_session_error(s, id, 403, what);
}

static tw_sub *find_sub(tw_session *s, const char *channel, size_t len)
{
    for (tw_sub *sub = s->subs; sub; sub = sub->s_next)
        if (sub->ch->len == len && memcmp(sub->ch->name, channel, len) == 0) return sub;
    return NULL;
}

static int count_event(void *arg, const tw_store_event *ev)
{
    (*(size_t *)arg)++;
    return 1;
}

/* The head vector: every origin's newest seq the fan-out has passed. */
static int encode_head_cursor(tw_server *srv, tw_store_cursor_entry *out, size_t cap)
{
    size_t n = srv->nheads < cap ? srv->nheads : cap;
    for (size_t i = 0; i < n; i++) {
        out[i].origin = srv->heads[i]->id;
        out[i].seq = srv->heads[i]->last_seq;
    }
    return (int)n;
}

/* subscribe: work out where the subscription starts, start it, and reply. The reply is
 * queued before any replayed event: the log is read only later, in the turn's catch-up. */
static void subscribe(tw_session *s, tw_sub_args *a, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    if (!authenticated(s, id)) return;
    if (!tw_auth_may_subscribe(srv->auth, s->who, a->channel, a->channel_len)) {
        forbidden(s, id, "not allowed to subscribe to this channel");
        return;
    }
    if (find_sub(s, a->channel, a->channel_len)) {
        tw_session_error(s, id, 409, "already subscribed");
        return;
    }
    if (s->nsubs >= (size_t)srv->cfg->max_subscriptions) {
        char msg[80];
        snprintf(msg, sizeof msg, "subscription limit reached (%lld per connection)",
                 (long long)srv->cfg->max_subscriptions);
        tw_session_error(s, id, 400, msg);
        return;
    }
    int from_log = a->has_since || a->last > 0;
    uint64_t after = UINT64_MAX, trim_floor = 0;
    int recovered = 1, replayed = 0;
    if (from_log) {
        int rc = 0;
        if (a->has_since) {
            /* In a cluster a cursor may be ahead of this node: it names an origin of a
             * member whose events have not reached this node's log yet. Nothing of it is
             * lost (it arrives by replication and is delivered live; the SDK drops what the
             * client has), so such entries must not make the resume unrecovered. */
            tw_store_cursor_entry held[64];
            size_t nheld = 0;
            const tw_store_cursor_entry *cur = a->since.entries;
            size_t ncur = a->since.n;
            if (srv->cluster && ncur <= 64) {
                for (size_t i = 0; i < ncur; i++)
                    if (tw_server_holds_origin(srv, cur[i].origin) ||
                        !tw_cluster_knows_origin(srv, cur[i].origin))
                        held[nheld++] = cur[i];
                cur = held;
                ncur = nheld;
            }
            rc = tw_store_resolve_cursor(srv->reader, a->channel, a->channel_len, cur, ncur,
                                         &after, &recovered);
        }
        if (rc == 0 && a->last > 0) {
            uint64_t tail = 0;
            rc = tw_store_channel_tail(srv->reader, a->channel, a->channel_len, a->last, &tail);
            if (rc == 0 && tail < after) after = tail;
        }
        size_t n = 0;
        uint64_t last_lsn;
        int at_head;
        if (rc == 0)
            rc = tw_store_read_channel(srv->reader, a->channel, a->channel_len, after, 1, 1,
                                       count_event, &n, &last_lsn, &at_head, &trim_floor);
        if (rc != 0) {
            tw_error("store-read", "reading channel for a subscribe failed: %s",
                     tw_store_strerror(rc));
            tw_session_error(s, id, 500, "could not read the log");
            return;
        }
        replayed = n > 0;
        if (a->has_since) {
            if (recovered) srv->stats.resumes_recovered++;
            else srv->stats.resumes_unrecovered++;
        }
    }

    /* The reply's cursor, where the subscription starts: the resume cursor as given; for
     * `last` alone, the cursor just before the first replayed event (a client that merges
     * it must not drop what it asked for); for a live start, the head. */
    tw_store_cursor_entry head[64];
    tw_store_origin_info at[64];
    const tw_store_cursor_entry *cur = a->since.entries;
    size_t ncur = a->since.n;
    if (!a->has_since && from_log) {
        size_t n = 0;
        int rc = tw_store_cursor_at(srv->reader, after, at, 64, &n);
        if (rc != 0) {
            tw_error("store-read", "cursor for a subscribe failed: %s", tw_store_strerror(rc));
            tw_session_error(s, id, 500, "could not read the log");
            return;
        }
        ncur = n < 64 ? n : 64;
        for (size_t i = 0; i < ncur; i++) {
            head[i].origin = at[i].origin;
            head[i].seq = at[i].last_seq;
        }
        cur = head;
    } else if (!a->has_since) {
        ncur = (size_t)encode_head_cursor(srv, head, 64);
        cur = head;
    }
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    int rc = tw_proto_encode_subscribed(&b, s->enc, id, a->channel, a->channel_len, recovered,
                                        replayed, cur, ncur);
    /* With `last`, the replay reaches back past the cursor on purpose: no filtering then. */
    int filter = a->has_since && a->last == 0 && a->since.n > 0;
    tw_sub *sub = tw_sub_start(s, a->channel, a->channel_len, from_log, after, trim_floor,
                               filter ? &a->since : NULL);
    if (!sub) {
        tw_buf_free(&b);
        tw_session_error(s, id, 500, "out of memory");
        return;
    }
    send_encoded(s, &b, rc);
    presence_join(s, a->channel, a->channel_len);
}

static void unsubscribe(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_sub *sub = find_sub(s, req->sub.channel, req->sub.channel_len);
    if (sub) {
        tw_sub_end(sub);
        presence_leave(s, req->sub.channel, req->sub.channel_len);
    }
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b,
                 tw_proto_encode_unsubscribed(&b, s->enc, id, req->sub.channel,
                                              req->sub.channel_len));
}

static void publish(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    if (!authenticated(s, id)) return;
    if (!tw_auth_may_publish(srv->auth, s->who, req->sub.channel, req->sub.channel_len)) {
        forbidden(s, id, "not allowed to publish to this channel (back ends publish through "
                         "the HTTP API)");
        return;
    }
    /* The server takes the channel and data; the request must not free them. */
    char *channel = req->sub.channel;
    uint8_t *data = req->data;
    req->sub.channel = NULL;
    req->data = NULL;
    const char *why = "publish failed";
    int code = tw_server_publish(srv, s->conn, TW_PUB_WS, id, channel, req->sub.channel_len,
                                 req->data_encoding, data, req->data_len, &why);
    if (code) {
        srv->stats.publishes_refused++;
        tw_session_error(s, id, code, why);
    }
}

static void connect_op(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    if (tw_auth_required(srv->auth)) {
        /* A token in connect, or one taken from the URL at the upgrade. Without either the
         * client cannot do anything here: close now rather than at the deadline. */
        int rc = req->token ? take_token(s, req->token, strlen(req->token), 0)
                 : s->who   ? 0
                            : TW_JWT_EMALFORMED;
        if (rc == TW_JWT_ENOMEM) {
            tw_session_close(s, 1011, "out of memory");
            return;
        }
        if (rc) {
            if (!req->token) srv->stats.auth_failures++;
            tw_session_close(s, 4001, req->token ? tw_jwt_strerror(rc) : "token required");
            return;
        }
    }
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b,
                 tw_proto_encode_connected(&b, s->enc, id, srv->origin, s->id,
                                           (unsigned)(srv->cfg->ping_interval_ms / 1000)));
    for (size_t i = 0; i < req->nsubs && !tw_ws_closing(&s->ws); i++)
        subscribe(s, &req->subs[i], NULL);
}

/* presence: the channel's members on this node, for namespaces that enable it. */
static void presence_op(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    const char *ch = req->sub.channel;
    size_t len = req->sub.channel_len;
    if (!authenticated(s, id)) return;
    if (!tw_auth_flags(srv->auth, ch, len).presence) {
        forbidden(s, id, "presence is not enabled for this channel");
        return;
    }
    if (!tw_auth_may_subscribe(srv->auth, s->who, ch, len)) {
        forbidden(s, id, "not allowed to see this channel");
        return;
    }
    tw_member *members;
    size_t n = tw_presence_list(srv->presence, ch, len, srv->cfg->node_id, &members);
    if (n == (size_t)-1) {
        tw_session_error(s, id, 500, "out of memory");
        return;
    }
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b, tw_presence_encode(&b, s->enc, id, ch, len, members, n));
    free(members);
}

/* refresh: a new token for the same user before the current one expires. A refused token
 * leaves the connection as it was (it still ends when the old token expires). */
static void refresh_op(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    if (!tw_auth_required(srv->auth)) {
        tw_session_error(s, id, 400, "this node does not authenticate with tokens");
        return;
    }
    int rc = take_token(s, req->token, strlen(req->token), 1);
    if (rc == TW_JWT_ENOMEM) {
        tw_session_error(s, id, 500, "out of memory");
        return;
    }
    if (rc) {
        tw_session_error(s, id, 401, tw_jwt_strerror(rc));
        return;
    }
    /* The new token may carry fewer roles or grants: end what it no longer allows. */
    for (tw_sub *sub = s->subs, *next; sub; sub = next) {
        next = sub->s_next;
        if (tw_auth_may_subscribe(srv->auth, s->who, sub->ch->name, sub->ch->len)) continue;
        char msg[320];
        snprintf(msg, sizeof msg, "subscription to %.*s ended: the new token does not allow it",
                 (int)sub->ch->len, sub->ch->name);
        presence_leave(s, sub->ch->name, sub->ch->len);
        tw_sub_end(sub);
        forbidden(s, NULL, msg);
    }
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b, tw_presence_encode_refreshed(&b, s->enc, id, s->who->exp));
}

/*
 * Every message the client sends, data or control, takes a token from the connection's
 * bucket (max-messages-per-second): a flood of pings costs the node pongs just as a flood
 * of requests costs replies. Runs before the message is handled; over the rate, the
 * connection is closed with 4129 and the message is dropped.
 */
static void ws_on_activity(void *arg)
{
    tw_session *s = arg;
    tw_server *srv = s->conn->srv;
    int64_t rate = srv->cfg->max_messages_per_second;
    if (rate <= 0 || tw_ws_closing(&s->ws)) return;
    double burst = (double)(srv->cfg->messages_burst ? srv->cfg->messages_burst : 2 * rate);
    if (tw_bucket_take(&s->msg_bucket, (double)rate, burst, tw_now_ms(srv))) return;
    srv->stats.rate_limited++;
    tw_info("rate-limited", "session %s: over %lld messages per second: closing with 4129", s->id,
            (long long)rate);
    tw_session_close(s, 4129, "rate limited");
}

static void ws_on_message(void *arg, int opcode, const uint8_t *data, size_t len)
{
    tw_session *s = arg;
    tw_server *srv = s->conn->srv;
    if (tw_ws_closing(&s->ws)) return;
    tw_request req;
    tw_proto_error err;
    memset(&req, 0, sizeof req);
    int rc = tw_proto_decode(s->enc, data, len, &srv->limits, &req, &err);
    if (rc == -EINVAL) {
        tw_session_error(s, err.has_id ? &err.id : NULL, err.code, err.message);
        return;
    }
    if (rc != 0) {
        tw_session_close(s, 1011, "out of memory");
        return;
    }
    const int64_t *id = req.has_id ? &req.id : NULL;
    tw_buf b;
    switch (req.op) {
    case TW_OP_CONNECT:
        connect_op(s, &req, id);
        break;
    case TW_OP_SUBSCRIBE:
        subscribe(s, &req.sub, id);
        break;
    case TW_OP_UNSUBSCRIBE:
        unsubscribe(s, &req, id);
        break;
    case TW_OP_PUBLISH:
        publish(s, &req, id);
        break;
    case TW_OP_PING:
        tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
        send_encoded(s, &b, tw_proto_encode_pong(&b, s->enc, id));
        break;
    case TW_OP_PRESENCE:
        presence_op(s, &req, id);
        break;
    case TW_OP_REFRESH:
        refresh_op(s, &req, id);
        break;
    default:
        tw_session_error(s, id, 400, "unknown op");
        break;
    }
    tw_request_free(&req);
}
