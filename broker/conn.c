/*
 * conn.c — client connections: accept, read, HTTP requests and the WebSocket upgrade, and
 * the output queue that batches every frame queued in a loop turn into one uv_write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "api.h"
#include "log.h"
#include "server.h"

/* Frames per uv_write: bounded so the iovec array stays on the stack. */
#define WRITE_BATCH 256
/* Bytes one connection may read per loop turn. libuv reads a readable stream up to 32
 * times per wakeup (2 MiB with our 64 KiB buffer): a client flooding small messages would
 * hold the loop for as long as those take to handle, and every other client would wait. */
#define READ_BUDGET (64 * 1024)
/* Time a closing connection gets to flush its output before it is cut. */
#define CLOSE_GRACE_MS 2000

static const char *const ws_protocols[] = {"tidewire.v1.json", "tidewire.v1.msgpack"};

typedef struct write_req {
    uv_write_t req;
    tw_conn *conn;
    size_t bytes;  /* plaintext bytes of the frames: the flow-control figure */
    uint8_t *raw;  /* TLS: the ciphertext written (owned), else NULL */
    uint32_t n;
    tw_frame *frames[];
} write_req;

/*
 * How bytes cross the socket: plain TCP, or TLS over memory BIOs (tls.h). Everything above
 * (HTTP, WebSocket, the output queue, flow control, lingering close) is the same for both:
 * it sees plaintext, and a transport turns it into what goes on the wire.
 */
struct tw_transport {
    /* Writes the frames bufs[0..n) (held by w until after_write) in one uv_write. */
    int (*write)(tw_conn *c, write_req *w, uv_buf_t *bufs, uint32_t n);
    /* Takes bytes read from the socket. */
    void (*input)(tw_conn *c, const uint8_t *data, size_t len);
    /* Called once, right before FIN: TLS sends close_notify. */
    void (*before_shutdown)(tw_conn *c);
};

static void conn_finish_close(tw_conn *c);
static void conn_shutdown_when_flushed(tw_conn *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void http_input(tw_conn *c, const char *data, size_t len);

void tw_conn_unref(tw_conn *c)
{
    if (--c->refs == 0) free(c);
}

static void mark_dirty(tw_conn *c)
{
    if (c->dirty) return;
    c->dirty = 1;
    c->refs++; /* the dirty list holds a reference, so a close cannot free c under it */
    c->dirty_next = c->srv->dirty;
    c->srv->dirty = c;
}

void tw_conn_send(tw_conn *c, tw_frame *f)
{
    if (c->closed || c->shut) {
        tw_frame_unref(f);
        return;
    }
    if (c->q_len == c->q_cap) {
        uint32_t cap = c->q_cap ? c->q_cap * 2 : 8;
        tw_frame **q = malloc(cap * sizeof *q);
        if (!q) {
            tw_frame_unref(f);
            tw_warn("conn-nomem", "conn %llu: out of memory queueing output; closing",
                    (unsigned long long)c->id);
            conn_finish_close(c);
            return;
        }
        for (uint32_t i = 0; i < c->q_len; i++)
            q[i] = c->q[(c->q_head + i) & (c->q_cap - 1)];
        free(c->q);
        c->q = q;
        c->q_head = 0;
        c->q_cap = cap;
    }
    c->q[(c->q_head + c->q_len) & (c->q_cap - 1)] = f;
    c->q_len++;
    c->q_bytes += f->len;
    mark_dirty(c);
}

static void after_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    tw_conn *c = w->conn;
    for (uint32_t i = 0; i < w->n; i++)
        tw_frame_unref(w->frames[i]);
    c->inflight_bytes -= w->bytes;
    c->srv->stats.bytes_out += status == 0 ? w->bytes : 0;
    free(w->raw);
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            tw_debug("conn-write", "conn %llu: write failed: %s", (unsigned long long)c->id,
                     uv_strerror(status));
        conn_finish_close(c);
    } else if (c->closing) {
        conn_shutdown_when_flushed(c);
    } else if (c->session) {
        tw_session_on_drain(c->session);
    }
    tw_conn_unref(c); /* the write's reference */
}

/* The queue's first n frames as buffers (the head one past what was written of it). */
static uint32_t queue_bufs(tw_conn *c, uv_buf_t *bufs, uint32_t max, size_t *bytes)
{
    uint32_t n = c->q_len < max ? c->q_len : max;
    *bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        tw_frame *f = c->q[(c->q_head + i) & (c->q_cap - 1)];
        size_t off = i == 0 ? c->q_off : 0;
        bufs[i] = uv_buf_init((char *)f->data + off, (unsigned)(f->len - off));
        *bytes += f->len - off;
    }
    return n;
}

/*
 * Plain TCP with nothing in flight: writes the queue's head at once (uv_try_write), so the
 * usual flush, which the socket takes whole, needs no write request, no allocation and no
 * callback. Frames written are released; a partly written one stays at the head (q_off).
 * Returns 0, or -1 when the connection failed (it is being closed).
 */
static int flush_now(tw_conn *c)
{
    uv_buf_t bufs[WRITE_BATCH];
    size_t bytes;
    uint32_t n = queue_bufs(c, bufs, WRITE_BATCH, &bytes);
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r == UV_EAGAIN) return 0;
    if (r < 0) {
        tw_debug("conn-write", "conn %llu: write failed: %s", (unsigned long long)c->id,
                 uv_strerror(r));
        conn_finish_close(c);
        return -1;
    }
    size_t left = (size_t)r;
    c->q_bytes -= left;
    c->srv->stats.bytes_out += left;
    while (left > 0) {
        tw_frame *f = c->q[c->q_head];
        size_t rest = f->len - c->q_off;
        if (left < rest) {
            c->q_off += (uint32_t)left;
            break;
        }
        left -= rest;
        c->q_off = 0;
        c->q_head = (c->q_head + 1) & (c->q_cap - 1);
        c->q_len--;
        tw_frame_unref(f);
    }
    if (c->session && !c->closing) tw_session_on_drain(c->session);
    return 0;
}

static void conn_flush(tw_conn *c)
{
    if (!c->tls && c->inflight_bytes == 0 && c->q_len > 0 && !c->closed && flush_now(c) != 0)
        return;
    while (c->q_len > 0 && !c->closed) {
        uv_buf_t bufs[WRITE_BATCH];
        size_t bytes;
        uint32_t n = queue_bufs(c, bufs, WRITE_BATCH, &bytes);
        write_req *w = malloc(sizeof *w + n * sizeof(tw_frame *));
        if (!w) {
            conn_finish_close(c);
            return;
        }
        w->conn = c;
        w->n = n;
        w->bytes = bytes;
        w->raw = NULL;
        for (uint32_t i = 0; i < n; i++) {
            w->frames[i] = c->q[c->q_head];
            c->q_head = (c->q_head + 1) & (c->q_cap - 1);
        }
        c->q_off = 0;
        c->q_len -= n;
        c->q_bytes -= w->bytes;
        c->inflight_bytes += w->bytes;
        c->refs++;
        int rc = c->tr->write(c, w, bufs, n);
        if (rc < 0) {
            /* libuv did not take the request: undo by hand, as its callback would have. */
            after_write(&w->req, rc);
            return;
        }
    }
}

void tw_conn_flush_all(tw_server *srv)
{
    while (srv->dirty) {
        tw_conn *c = srv->dirty;
        srv->dirty = c->dirty_next;
        c->dirty = 0;
        c->dirty_next = NULL;
        conn_flush(c);
        if (c->closing) conn_shutdown_when_flushed(c);
        tw_conn_unref(c);
    }
}

static void on_close(uv_handle_t *h)
{
    tw_conn *c = h->data;
    tw_server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    srv->node->nconns--;
    if (srv->iplimits) tw_iplimits_release(srv->iplimits, c->ip);
    c->ip = NULL;
    tw_tls_free(c->tls);
    c->tls = NULL;
    if (c->session) {
        tw_session_free(c->session);
        c->session = NULL;
        srv->nsessions--;
    }
    if (c->http) {
        tw_http_reader_free(c->http);
        free(c->http);
        c->http = NULL;
    }
    tw_buf_free(&c->http_pending);
    while (c->q_len) {
        tw_frame_unref(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) & (c->q_cap - 1);
        c->q_len--;
    }
    free(c->q);
    c->q = NULL;
    c->q_bytes = 0;
    tw_conn_unref(c); /* the socket's reference */
}

/* Closes the socket now; pending writes complete with UV_ECANCELED. */
static void conn_finish_close(tw_conn *c)
{
    if (c->closed) return;
    c->closing = 1;
    c->closed = 1;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

void tw_conn_abort(tw_conn *c)
{
    conn_finish_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tw_conn *c = req->data;
    free(req);
    if (status < 0) conn_finish_close(c);
    /* else: keep reading (and discarding) until the peer closes or the deadline passes */
    tw_conn_unref(c);
}

/*
 * A lingering close: once everything queued is written, send FIN and keep reading until the
 * peer closes. Closing a socket with unread input makes the kernel send RST, and a client
 * that gets RST may never read the close frame or response we just sent it.
 */
static void conn_shutdown_when_flushed(tw_conn *c)
{
    if (c->closed || c->shut || tw_conn_backlog(c) != 0) return;
    c->shut = 1;
    if (c->tr->before_shutdown) c->tr->before_shutdown(c);
    if (c->closed) return;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        conn_finish_close(c);
        return;
    }
    req->data = c;
    c->refs++;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        c->refs--;
        conn_finish_close(c);
    }
}

void tw_conn_close(tw_conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    c->deadline_ms = tw_now_ms(c->srv) + CLOSE_GRACE_MS;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb); /* to see the peer's FIN */
    if (rc != 0 && rc != UV_EALREADY) {
        conn_finish_close(c);
        return;
    }
    conn_shutdown_when_flushed(c);
    /* else: the turn's flush writes the queue and after_write shuts down */
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tw_conn *c = h->data;
    /* Every read is consumed (parsed, or copied) before the next one starts. */
    buf->base = (char *)c->srv->readbuf;
    buf->len = sizeof c->srv->readbuf;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    tw_conn *c = stream->data;
    if (nread == 0) return; /* EAGAIN */
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            tw_debug("conn-read", "conn %llu: read failed: %s", (unsigned long long)c->id,
                     uv_strerror((int)nread));
        /* The peer is gone: what it has not read cannot reach it. */
        conn_finish_close(c);
        return;
    }
    if (c->closing) return; /* lingering: discard until the peer closes */
    tw_server *srv = c->srv;
    c->last_recv_ms = tw_now_ms(srv);
    srv->stats.bytes_in += (uint64_t)nread;
    if (c->read_turn != srv->turn_no) {
        c->read_turn = srv->turn_no;
        c->turn_bytes = 0;
    }
    c->turn_bytes += (size_t)nread;
    c->tr->input(c, (const uint8_t *)buf->base, (size_t)nread);
    if (c->turn_bytes >= READ_BUDGET && !c->closed && !c->read_paused &&
        uv_is_active((uv_handle_t *)stream)) {
        uv_read_stop(stream);
        c->read_paused = 1;
        c->refs++; /* the paused list's */
        c->paused_next = srv->paused;
        srv->paused = c;
    }
}

void tw_conn_resume_reads(tw_server *srv)
{
    while (srv->paused) {
        tw_conn *c = srv->paused;
        srv->paused = c->paused_next;
        c->paused_next = NULL;
        c->read_paused = 0;
        /* Not when a pending HTTP response stopped reading meanwhile: it restarts itself. */
        if (!c->closed && !(c->kind == TW_CONN_HTTP && c->http_busy && !c->closing))
            uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb); /* EALREADY is fine */
        tw_conn_unref(c);
    }
}

/* ---- Transports --------------------------------------------------------------------- */

/* Plaintext from the client: the HTTP reader until the upgrade, then the WebSocket. */
static void plain_input(tw_conn *c, const uint8_t *data, size_t len)
{
    if (c->kind == TW_CONN_WS) tw_session_feed(c->session, data, len);
    else http_input(c, (const char *)data, len);
}

static int plain_write(tw_conn *c, write_req *w, uv_buf_t *bufs, uint32_t n)
{
    return uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, after_write);
}

static const tw_transport plain_transport = {
    .write = plain_write,
    .input = plain_input,
};

/* Writes whatever ciphertext OpenSSL has pending, as its own write (no frames). */
static void tls_write_pending(tw_conn *c)
{
    size_t n = tw_tls_pending(c->tls);
    if (n == 0 || c->closed) return;
    write_req *w = calloc(1, sizeof *w);
    uint8_t *raw = w ? malloc(n) : NULL;
    if (!raw) {
        free(w);
        conn_finish_close(c);
        return;
    }
    w->conn = c;
    w->raw = raw;
    uv_buf_t b = uv_buf_init((char *)raw, (unsigned)tw_tls_take_output(c->tls, raw, n));
    c->refs++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, after_write);
    if (rc < 0) after_write(&w->req, rc);
}

static void tls_plain(void *arg, const uint8_t *data, size_t len)
{
    tw_conn *c = arg;
    if (!c->closing) plain_input(c, data, len);
}

static void tls_input(tw_conn *c, const uint8_t *data, size_t len)
{
    int rc = tw_tls_feed(c->tls, data, len, tls_plain, c);
    /* Handshake records, alerts: out now, not at the end of the turn (they hold no frame). */
    tls_write_pending(c);
    if (rc != 0 && !c->closing) {
        tw_debug("tls-closed", "conn %llu: TLS %s", (unsigned long long)c->id,
                 tw_tls_established(c->tls) ? "closed by the peer or broken" : "handshake failed");
        if (c->kind == TW_CONN_WS) c->srv->stats.protocol_closes++;
        tw_conn_close(c);
    }
}

/* The frames are encrypted into one buffer and written at once; w keeps the frames until
 * the write completes, so flow control counts them exactly as on plain TCP. */
static int tls_write(tw_conn *c, write_req *w, uv_buf_t *bufs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (tw_tls_write(c->tls, (const uint8_t *)bufs[i].base, bufs[i].len) != 0)
            return UV_EPROTO;
    size_t pending = tw_tls_pending(c->tls);
    if (!(w->raw = malloc(pending ? pending : 1))) return UV_ENOMEM;
    uv_buf_t b = uv_buf_init((char *)w->raw, (unsigned)tw_tls_take_output(c->tls, w->raw, pending));
    return uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, after_write);
}

static void tls_before_shutdown(tw_conn *c)
{
    tw_tls_shutdown(c->tls);
    tls_write_pending(c);
}

static const tw_transport tls_transport = {
    .write = tls_write,
    .input = tls_input,
    .before_shutdown = tls_before_shutdown,
};

void tw_conn_on_accept(uv_stream_t *listener, int status)
{
    tw_server *srv = listener->data;
    if (status < 0) {
        tw_warn("accept", "accept failed: %s", uv_strerror(status));
        return;
    }
    tw_conn *c = calloc(1, sizeof *c);
    if (!c || uv_tcp_init(srv->loop, &c->tcp) != 0) {
        free(c);
        tw_warn("accept", "out of memory accepting a connection");
        return;
    }
    c->tcp.data = c;
    c->srv = srv;
    c->refs = 1;
    c->id = ++srv->node->next_conn_id; /* unique across loops: sessions are named by it */
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    size_t node_conns = ++srv->node->nconns;
    tw_buf_init(&c->http_pending, 0);
    c->tr = &plain_transport;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_finish_close(c);
        return;
    }
    if (listener == (uv_stream_t *)&srv->tls_listener) {
        if (!(c->tls = tw_tls_new(srv->tls_ctx))) {
            tw_warn("accept", "out of memory accepting a TLS connection");
            conn_finish_close(c);
            return;
        }
        c->tr = &tls_transport;
    }
    if (node_conns > (size_t)srv->cfg->max_connections || srv->draining) {
        srv->stats.connections_refused++;
        conn_finish_close(c);
        return;
    }
    if (srv->iplimits) {
        struct sockaddr_storage peer;
        int plen = sizeof peer;
        int rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen);
        if (rc == 0) rc = tw_iplimits_admit(srv->iplimits, (struct sockaddr *)&peer,
                                            tw_now_ms(srv), &c->ip);
        if (rc == TW_IP_TOO_MANY || rc == TW_IP_TOO_FAST) {
            /* Closed before reading a byte: a flood costs an accept and a close, no more. */
            srv->stats.ip_refused++;
            srv->stats.connections_refused++;
            tw_debug("ip-limit", "conn %llu refused: %s", (unsigned long long)c->id,
                     rc == TW_IP_TOO_MANY ? "too many connections from its address"
                                          : "its address opens connections too fast");
            conn_finish_close(c);
            return;
        }
    }
    srv->stats.connections_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    c->http = malloc(sizeof *c->http);
    if (!c->http) {
        conn_finish_close(c);
        return;
    }
    tw_http_reader_init(c->http, (size_t)srv->cfg->max_header_bytes,
                        (size_t)srv->cfg->max_message_size);
    c->last_recv_ms = tw_now_ms(srv);
    c->deadline_ms = c->last_recv_ms + (uint64_t)srv->cfg->handshake_timeout_ms;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) conn_finish_close(c);
}

/* Writes a response with no body tied to a request that must end the connection. */
static void http_refuse(tw_conn *c, int status, const char *extra_headers)
{
    char body[96];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", tw_http_status_text(status));
    c->http_keep_alive = 0;
    tw_conn_http_respond(c, status, "application/json", body, (size_t)n, extra_headers);
}

void tw_conn_http_respond(tw_conn *c, int status, const char *type, const void *body, size_t len,
                          const char *extra_headers)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    tw_frame *f = NULL;
    if (tw_http_write_response(&b, status, type, body, len, c->http_keep_alive, extra_headers) ==
        0)
        f = tw_frame_raw(&b);
    tw_buf_free(&b);
    if (!f) {
        tw_conn_close(c);
        return;
    }
    tw_conn_send(c, f);
    c->http_busy = 0;
    if (!c->http_keep_alive || c->srv->draining) {
        tw_conn_close(c);
        return;
    }
    /* Ready for the next request on this connection, starting with bytes that came early. */
    tw_http_reader_reset(c->http);
    c->deadline_ms = tw_now_ms(c->srv) + (uint64_t)c->srv->cfg->handshake_timeout_ms;
    if (c->http_pending.len) {
        tw_buf pending = c->http_pending;
        tw_buf_init(&c->http_pending, 0);
        http_input(c, (const char *)tw_buf_data(&pending), pending.len);
        tw_buf_free(&pending);
    }
    if (!c->closing && !c->http_busy) uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* The Origin allow-list (allowed-origins): exact matches of a comma list; empty allows any.
 * A request without Origin is not from a browser page, which always sends one on a
 * WebSocket upgrade, so the list (a browser-side defence) lets it through. */
static int origin_allowed(const char *list, const char *origin)
{
    if (!list || !*list || !origin) return 1;
    size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n && n == ol && strncasecmp(p, origin, n) == 0) return 1;
        p += n;
    }
    return 0;
}

static void upgrade(tw_conn *c, const char *rest, size_t rest_len)
{
    tw_server *srv = c->srv;
    tw_http_request *req = &c->http->req;
    if (strcmp(req->path, "/ws") != 0) {
        http_refuse(c, 404, NULL);
        return;
    }
    char accept[29];
    int proto;
    int status = tw_ws_check_upgrade(req, ws_protocols, 2, accept, &proto);
    if (status) {
        tw_debug("ws-refused", "conn %llu: upgrade refused with %d", (unsigned long long)c->id,
                 status);
        http_refuse(c, status, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    if (srv->draining) {
        http_refuse(c, 503, "Retry-After: 1\r\n");
        return;
    }
    if (!origin_allowed(srv->cfg->allowed_origins, req->origin)) {
        srv->stats.origin_refused++;
        tw_debug("ws-origin", "conn %llu: upgrade refused for its Origin",
                 (unsigned long long)c->id);
        http_refuse(c, 403, NULL);
        return;
    }
    tw_buf b;
    tw_buf_init(&b, 0);
    int rc = tw_buf_printf(&b,
                           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                           accept);
    if (!rc && proto >= 0)
        rc = tw_buf_printf(&b, "Sec-WebSocket-Protocol: %s\r\n", ws_protocols[proto]);
    if (!rc) rc = tw_buf_append(&b, "\r\n", 2);
    tw_frame *f = rc ? NULL : tw_frame_raw(&b);
    tw_buf_free(&b);
    tw_session *s = f ? tw_session_new(c, proto == 1 ? TW_ENC_MSGPACK : TW_ENC_JSON) : NULL;
    if (!s) {
        if (f) tw_frame_unref(f);
        conn_finish_close(c);
        return;
    }
    tw_conn_send(c, f);
    /* `?token=` for clients that cannot send a first message (ignored on an open node);
     * copied out before the request is freed, verified once the session is in place. */
    char *token = NULL;
    int token_len = -1;
    if (tw_auth_required(srv->auth) && req->query &&
        (strncmp(req->query, "token=", 6) == 0 || strstr(req->query, "&token="))) {
        token = malloc(TW_JWT_MAX_LEN + 2);
        /* there but unreadable (too long, bad %xx): verified as empty, so refused */
        token_len = token ? tw_http_query_param(req->query, "token", token, TW_JWT_MAX_LEN + 2)
                          : -1;
        if (token_len < 0) token_len = 0;
    }
    tw_http_reader_free(c->http);
    free(c->http);
    c->http = NULL;
    c->kind = TW_CONN_WS;
    c->session = s;
    c->last_ping_ms = tw_now_ms(srv);
    srv->nsessions++;
    srv->stats.ws_sessions_total++;
    if (token_len >= 0) tw_session_authenticate(s, token ? token : "", (size_t)token_len);
    if (token) {
        OPENSSL_cleanse(token, TW_JWT_MAX_LEN + 2);
        free(token);
    }
    /* Bytes after the request head are already WebSocket frames: never drop them. */
    if (rest_len && !tw_ws_closing(&s->ws)) tw_session_feed(s, (const uint8_t *)rest, rest_len);
}

static void http_input(tw_conn *c, const char *data, size_t len)
{
    while (len > 0 && !c->closing && c->kind == TW_CONN_HTTP) {
        if (c->http_busy) {
            /* A response is pending: keep what follows (bounded) until it is written. */
            if (c->http_pending.len + len > c->http->max_head + c->http->max_body ||
                tw_buf_append(&c->http_pending, data, len) != 0)
                tw_conn_close(c);
            return;
        }
        size_t used = 0;
        int r = tw_http_feed(c->http, data, len, &used);
        data += used;
        len -= used;
        switch (r) {
        case TW_HTTP_NEED_MORE:
            return;
        case TW_HTTP_ERROR:
            tw_debug("http-bad", "conn %llu: bad request (%d)", (unsigned long long)c->id,
                     c->http->status);
            http_refuse(c, c->http->status, NULL);
            return;
        case TW_HTTP_UPGRADE:
            c->srv->stats.http_requests_total++;
            upgrade(c, data, len);
            return;
        case TW_HTTP_COMPLETE:
            c->srv->stats.http_requests_total++;
            c->http_keep_alive = (uint8_t)c->http->req.keep_alive;
            c->http_busy = 1;
            tw_api_handle(c, &c->http->req);
            if (c->http_busy && len && !c->closing) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                continue; /* stores the rest as pending */
            }
            if (c->http_busy) uv_read_stop((uv_stream_t *)&c->tcp);
            break;
        }
    }
}

void tw_conn_tick(tw_server *srv, uint64_t now)
{
    const tw_config *cfg = srv->cfg;
    int64_t wall_s = (int64_t)time(NULL);
    if (srv->iplimits) tw_iplimits_sweep(srv->iplimits, now);
    for (tw_conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->closed) continue;
        if (c->closing) {
            if (now >= c->deadline_ms) conn_finish_close(c);
            continue;
        }
        if (c->kind == TW_CONN_HTTP) {
            /* Slowloris: the whole request must arrive in time; a pending commit is ours. */
            if (!c->http_busy && now >= c->deadline_ms) {
                tw_debug("http-timeout", "conn %llu: request not complete in time",
                         (unsigned long long)c->id);
                conn_finish_close(c);
            }
            continue;
        }
        tw_session *s = c->session;
        if (tw_ws_closing(&s->ws)) {
            tw_conn_close(c);
            continue;
        }
        tw_session_check_auth(s, now, wall_s);
        if (tw_ws_closing(&s->ws)) continue;
        if (now - c->last_recv_ms >= (uint64_t)cfg->idle_timeout_ms) {
            tw_session_close(s, 1001, "idle timeout");
            continue;
        }
        if (s->stalled_since_ms && now - s->stalled_since_ms >= (uint64_t)cfg->slow_consumer_timeout_ms) {
            srv->stats.slow_consumer_closes++;
            tw_info("slow-consumer", "session %s stayed behind for %lld ms: closing with 4208",
                    s->id, (long long)(now - s->stalled_since_ms));
            tw_session_close(s, 4208, "slow consumer");
            continue;
        }
        /* Half a tick early rather than a tick late: pings keep the advertised interval. */
        if (now - c->last_ping_ms + srv->tick_ms / 2 >= (uint64_t)cfg->ping_interval_ms) {
            c->last_ping_ms = now;
            tw_ws_ping(&s->ws);
        }
    }
}
