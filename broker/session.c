/*
 * session.c — the client protocol over one WebSocket: decode each message, act, reply.
 * Every refused request gets an `error` reply and the connection stays open; only
 * frame-level faults (wslay) and policy limits close it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"

static void ws_output(void *arg, const uint8_t *data, size_t len);
static void ws_on_message(void *arg, int opcode, const uint8_t *data, size_t len);

static const tw_ws_callbacks ws_callbacks = {
    .on_message = ws_on_message,
    .output = ws_output,
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
    return s;
}

void tw_session_free(tw_session *s)
{
    tw_server *srv = s->conn->srv;
    while (s->subs)
        tw_sub_end(s->subs);
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
    if (rc != 0 || tw_ws_closing(&s->ws)) {
        if (rc != 0 || s->ws.ctx == NULL || !wslay_event_get_close_received(s->ws.ctx))
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
    uint64_t after = UINT64_MAX;
    int recovered = 1, replayed = 0;
    if (from_log) {
        int rc = 0;
        if (a->has_since)
            rc = tw_store_resolve_cursor(srv->reader, a->since.entries, a->since.n, &after,
                                         &recovered);
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
                                       count_event, &n, &last_lsn, &at_head);
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
    tw_sub *sub = tw_sub_start(s, a->channel, a->channel_len, from_log, after,
                               filter ? &a->since : NULL);
    if (!sub) {
        tw_buf_free(&b);
        tw_session_error(s, id, 500, "out of memory");
        return;
    }
    send_encoded(s, &b, rc);
}

static void unsubscribe(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_sub *sub = find_sub(s, req->sub.channel, req->sub.channel_len);
    if (sub) tw_sub_end(sub);
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b,
                 tw_proto_encode_unsubscribed(&b, s->enc, id, req->sub.channel,
                                              req->sub.channel_len));
}

static void publish(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    /* The server takes the channel and data; the request must not free them. */
    char *channel = req->sub.channel;
    uint8_t *data = req->data;
    req->sub.channel = NULL;
    req->data = NULL;
    int code = tw_server_publish(srv, s->conn, TW_PUB_WS, id, channel, req->sub.channel_len,
                                 req->data_encoding, data, req->data_len);
    if (code) {
        srv->stats.publishes_refused++;
        tw_session_error(s, id, code,
                         code == 503 ? "the log is not taking writes now, retry"
                                     : "publish failed");
    }
}

static void connect_op(tw_session *s, tw_request *req, const int64_t *id)
{
    tw_server *srv = s->conn->srv;
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    send_encoded(s, &b,
                 tw_proto_encode_connected(&b, s->enc, id, srv->origin, s->id,
                                           (unsigned)(srv->cfg->ping_interval_ms / 1000)));
    for (size_t i = 0; i < req->nsubs && !tw_ws_closing(&s->ws); i++)
        subscribe(s, &req->subs[i], NULL);
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
        /* Presence is opt-in per namespace; this node has no namespace that enables it. */
        tw_session_error(s, id, 403, "presence is not enabled for this channel");
        break;
    case TW_OP_REFRESH:
        tw_session_error(s, id, 400, "this node does not authenticate with tokens");
        break;
    default:
        tw_session_error(s, id, 400, "unknown op");
        break;
    }
    tw_request_free(&req);
}
