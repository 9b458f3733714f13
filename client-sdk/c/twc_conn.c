/*
 * One WebSocket connection attempt of the C client: resolve, TCP connect, opening
 * handshake, then frames in both directions.
 *
 * Receiving uses wslay's frame layer (wslay_frame_recv: headers, lengths, control-frame
 * rules) under a small message layer here (RSV/mask/opcode checks, fragmentation, ping ->
 * pong, close echo, size limit). Why not wslay's event layer: profiling the fanout bench
 * (1000 clients, 1M messages/s) put a third of the client's CPU in wslay_event_recv's
 * byte-at-a-time UTF-8 check, which the JSON scanner repeats anyway over every byte of
 * every message; the event layer also refuses close code 1012, which tidewire uses to send
 * clients elsewhere (PITFALLS), and mallocs per message. Messages assemble into one reused
 * buffer: no malloc per message.
 *
 * Sending: every frame (text, pong, close) is masked straight into the output buffer by
 * put_frame, with a mask from a per-connection PRNG seeded from RAND_bytes (RFC 6455 asks
 * for unpredictable masks; that protects intermediaries from a hostile browser script and
 * needs no cryptographic generator per frame).
 *
 * Writes: one uv_write in flight at a time. Messages queued meanwhile accumulate in `out`;
 * when the write completes, `out` and `wbuf` swap and the batch goes in one write. uv_write
 * keeps a pointer to wbuf's bytes, so wbuf is never touched while `writing` is set.
 *
 * Lifetime: a conn owns a TCP handle, a timer and maybe a getaddrinfo request; `refs`
 * counts them and the conn is freed by whichever of their callbacks drops it to zero
 * (never while its own code is on the stack: libuv never calls close/getaddrinfo callbacks
 * synchronously). Once detached (twc__conn_detach, or after it reported on_close), the
 * conn never calls its owner again, so the owner may go away before the conn is freed.
 *
 * TLS would slot in at two points: bytes read go through tp_read() before the WebSocket
 * layer sees them, and conn_flush() is where outgoing bytes leave; a TLS transport would
 * run them through SSL_read/SSL_write on memory BIOs there (PITFALLS, libuv section).
 */
#include "twc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <openssl/rand.h>
#include <wslay/wslay.h>

typedef enum phase {
    PH_RESOLVING,
    PH_CONNECTING,
    PH_HANDSHAKE,
    PH_OPEN,
    PH_CLOSING, /* we sent close; waiting for the server's */
    PH_LINGER,  /* reported the end; flushing a last frame before closing the socket */
    PH_DEAD,    /* handles closing */
} phase;

typedef enum timer_mode { TM_CONNECT, TM_IDLE, TM_CLOSE, TM_LINGER } timer_mode;

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

#define READ_BUF_SIZE 65536
#define LINGER_MS 1000
#define SHRINK_ABOVE (1u << 20) /* free an idle write or message buffer grown past this */

struct twc__conn {
    uv_loop_t *loop;
    void *owner;
    twc__conn_events ev;
    bool attached;
    phase phase;
    int fail_err; /* why it failed, for a failure during twc__conn_start */
    int refs;     /* open handles + pending getaddrinfo */

    twc__url url;
    size_t max_message;
    twc__rng rng;

    uv_getaddrinfo_t gai;
    bool gai_pending;
    struct addrinfo *ai_list, *ai_next;
    struct sockaddr_storage addr;

    uv_tcp_t tcp;
    bool tcp_open;    /* initialised and not yet closed */
    bool tcp_closing; /* uv_close called, close_cb pending */
    bool retry_addr;  /* on tcp close: connect to ai_next */
    int last_connect_err;
    uv_connect_t creq;

    uv_timer_t timer;
    bool timer_open;
    timer_mode tmode;
    uint64_t idle_ms;
    uint64_t last_rx;

    /* Messages queued during a loop iteration leave together: the prepare handle flushes
     * `out` once, just before the loop next waits for I/O (one write per burst, not one
     * per message). */
    uv_prepare_t flush_prep;
    bool prep_open;
    bool flush_pending;

    uv_write_t wreq;
    bool writing;
    twc__buf out;  /* accumulating */
    twc__buf wbuf; /* in flight */

    char accept[29];
    twc__buf hs; /* response head being read */

    wslay_frame_context_ptr wf;
    const char *rptr; /* bytes wf_recv hands to wslay */
    size_t rlen;

    bool in_frame; /* inside a frame's payload */
    uint8_t frame_op;
    bool frame_fin;
    uint64_t frame_left; /* payload bytes of the frame still to come */
    bool in_msg;         /* inside a (maybe fragmented) data message */
    uint8_t msg_op;
    twc__buf msg;      /* the data message being assembled */
    uint8_t cbuf[125]; /* control frame payload */
    size_t clen;
    bool close_sent;
    char peer_reason[124];
};

/* Shared by every connection on this thread: libuv calls alloc_cb and read_cb back to back
 * for one handle, and the read callback consumes every byte before returning. */
static _Thread_local char read_buf[READ_BUF_SIZE];

static void teardown(twc__conn *conn);
static void conn_flush(twc__conn *conn);
static void connect_next(twc__conn *conn);

/* ---- lifetime ---------------------------------------------------------------------------- */

static void maybe_free(twc__conn *conn)
{
    if (conn->refs > 0) return;
    if (conn->ai_list) uv_freeaddrinfo(conn->ai_list);
    if (conn->wf) wslay_frame_context_free(conn->wf);
    twc__buf_free(&conn->out);
    twc__buf_free(&conn->wbuf);
    twc__buf_free(&conn->hs);
    twc__buf_free(&conn->msg);
    free(conn);
}

/* The close callback of the timer and the prepare handle. */
static void on_handle_close(uv_handle_t *h)
{
    twc__conn *conn = h->data;
    conn->refs--;
    maybe_free(conn);
}

static void on_tcp_close(uv_handle_t *h)
{
    twc__conn *conn = h->data;
    conn->refs--;
    conn->tcp_open = conn->tcp_closing = false;
    if (conn->retry_addr && conn->phase == PH_CONNECTING) {
        conn->retry_addr = false;
        connect_next(conn);
    }
    maybe_free(conn);
}

static void close_tcp(twc__conn *conn)
{
    if (conn->tcp_open && !conn->tcp_closing) {
        conn->tcp_closing = true;
        uv_close((uv_handle_t *)&conn->tcp, on_tcp_close);
    }
}

/* Closes every handle; the conn frees itself when they are closed. */
static void teardown(twc__conn *conn)
{
    conn->attached = false;
    conn->phase = PH_DEAD;
    conn->retry_addr = false;
    if (conn->gai_pending)
        uv_cancel((uv_req_t *)&conn->gai); /* may fail if running; the callback comes anyway */
    close_tcp(conn);
    if (conn->timer_open) {
        conn->timer_open = false;
        uv_close((uv_handle_t *)&conn->timer, on_handle_close);
    }
    if (conn->prep_open) {
        conn->prep_open = false;
        uv_close((uv_handle_t *)&conn->flush_prep, on_handle_close);
    }
}

/* Tells the owner the connection ended (once), and detaches. */
static void report_close(twc__conn *conn, int err, int code, const char *message)
{
    if (!conn->attached) return;
    conn->attached = false;
    twc_error why = {.err = err, .code = code, .message = message, .channel = NULL};
    conn->ev.on_close(conn->owner, conn, &why);
}

static void fail(twc__conn *conn, int err, const char *message)
{
    conn->fail_err = err;
    report_close(conn, err, 0, message);
    teardown(conn);
}

static void timer_arm(twc__conn *conn, timer_mode mode, uint64_t ms);
static void send_close(twc__conn *conn, int code);

/* Ends after whatever is queued has been written (a close frame), or LINGER_MS. */
static void linger(twc__conn *conn)
{
    conn->attached = false;
    if (conn->phase == PH_DEAD) return;
    if (!conn->writing && conn->out.len == 0) {
        teardown(conn);
        return;
    }
    conn->phase = PH_LINGER;
    timer_arm(conn, TM_LINGER, LINGER_MS);
}

/* ---- timer ------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    twc__conn *conn = t->data;
    char msg[96];
    switch (conn->tmode) {
    case TM_CONNECT:
        fail(conn, TWC_E_TIMEOUT, "connect timed out");
        break;
    case TM_IDLE: {
        /* Reads only stamp last_rx; the timer re-arms lazily for the remaining time, which
         * is far cheaper than restarting it on every read. */
        uint64_t quiet = uv_now(conn->loop) - conn->last_rx;
        if (quiet < conn->idle_ms) {
            timer_arm(conn, TM_IDLE, conn->idle_ms - quiet);
            break;
        }
        /* Silence may be ours: after the process was stopped (SIGSTOP, a suspended laptop)
         * libuv runs timers before it polls, while the server's bytes wait unread. */
        uv_os_fd_t fd;
        int pending = 0;
        if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0 && ioctl(fd, FIONREAD, &pending) == 0 &&
            pending > 0) {
            conn->last_rx = uv_now(conn->loop);
            timer_arm(conn, TM_IDLE, conn->idle_ms);
            break;
        }
        snprintf(msg, sizeof msg, "nothing received from the server for %llu ms",
                 (unsigned long long)quiet);
        /* Best effort: the server is probably gone, but tell it if it is not. */
        send_close(conn, 1001);
        conn_flush(conn);
        report_close(conn, TWC_E_TIMEOUT, 0, msg);
        linger(conn);
        break;
    }
    case TM_CLOSE:
        report_close(conn, TWC_E_TIMEOUT, 0, "close handshake timed out");
        teardown(conn);
        break;
    case TM_LINGER:
        teardown(conn);
        break;
    }
}

static void timer_arm(twc__conn *conn, timer_mode mode, uint64_t ms)
{
    if (!conn->timer_open) return;
    conn->tmode = mode;
    uv_timer_start(&conn->timer, on_timer, ms, 0);
}

void twc__conn_set_idle_timeout(twc__conn *conn, uint64_t ms)
{
    if (conn->phase != PH_OPEN) return;
    conn->idle_ms = ms;
    if (ms)
        timer_arm(conn, TM_IDLE, ms);
    else
        uv_timer_stop(&conn->timer);
}

/* ---- writing ----------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    twc__conn *conn = req->data;
    conn->writing = false;
    conn->wbuf.len = 0;
    if (conn->wbuf.cap > SHRINK_ABOVE) twc__buf_free(&conn->wbuf);
    if (conn->phase == PH_DEAD) return;
    if (status < 0) {
        fail(conn, status, "write failed");
        return;
    }
    if (conn->out.len) {
        conn_flush(conn);
    } else if (conn->phase == PH_LINGER) {
        teardown(conn);
    }
}

/* The single point where bytes leave (a TLS transport would encrypt here). */
static void conn_flush(twc__conn *conn)
{
    if (conn->writing || conn->out.len == 0 || !conn->tcp_open || conn->tcp_closing ||
        conn->phase < PH_HANDSHAKE)
        return;
    twc__buf t = conn->wbuf;
    conn->wbuf = conn->out;
    conn->out = t;
    conn->out.len = 0;
    uv_buf_t b = uv_buf_init(conn->wbuf.p, (unsigned)conn->wbuf.len);
    conn->wreq.data = conn;
    int rv = uv_write(&conn->wreq, (uv_stream_t *)&conn->tcp, &b, 1, on_write);
    if (rv < 0) {
        fail(conn, rv, "write failed");
        return;
    }
    conn->writing = true;
}

static void on_flush_prep(uv_prepare_t *h)
{
    twc__conn *conn = h->data;
    uv_prepare_stop(h);
    conn->flush_pending = false;
    conn_flush(conn);
}

/* Flushes `out` before the loop next polls: every message queued until then goes out in
 * the same write. */
static void schedule_flush(twc__conn *conn)
{
    if (conn->flush_pending || !conn->prep_open) return;
    conn->flush_pending = true;
    uv_prepare_start(&conn->flush_prep, on_flush_prep);
}

/* ---- WebSocket messages over wslay's frame layer ---------------------------------------- */

static ssize_t wf_recv(uint8_t *buf, size_t len, int flags, void *user)
{
    twc__conn *conn = user;
    size_t n = len < conn->rlen ? len : conn->rlen;
    memcpy(buf, conn->rptr, n);
    conn->rptr += n;
    conn->rlen -= n;
    return (ssize_t)n; /* 0: wslay_frame_recv returns WSLAY_ERR_WANT_READ */
}

/* wslay_frame_send is never used (frames are written by put_frame); wslay wants these set. */
static ssize_t wf_send(const uint8_t *data, size_t len, int flags, void *user)
{
    return WSLAY_ERR_INVALID_CALLBACK;
}

static int wf_genmask(uint8_t *buf, size_t len, void *user)
{
    return -1;
}

/* Appends one masked frame with payload a + b to `out`. */
static int put_frame(twc__conn *conn, uint8_t op, const void *a, size_t an, const void *b,
                     size_t bn)
{
    uint8_t hdr[14], mask[4];
    uint32_t r = (uint32_t)twc__rng_next(&conn->rng);
    memcpy(mask, &r, 4);
    size_t hl = twc__ws_frame_header(hdr, op, an + bn, mask);
    int rv = twc__buf_reserve(&conn->out, hl + an + bn);
    if (rv) return rv;
    uint8_t *o = (uint8_t *)conn->out.p + conn->out.len;
    memcpy(o, hdr, hl);
    twc__ws_mask(o + hl, a, an, mask, 0);
    twc__ws_mask(o + hl + an, b, bn, mask, an);
    conn->out.len += hl + an + bn;
    return 0;
}

/* Queues our close frame (once). code 0: no status code. */
static void send_close(twc__conn *conn, int code)
{
    if (conn->close_sent || conn->phase < PH_OPEN) return;
    conn->close_sent = true;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    put_frame(conn, OP_CLOSE, p, code ? 2 : 0, NULL, 0);
}

int twc__conn_send_text2(twc__conn *conn, const char *a, size_t an, const char *b, size_t bn)
{
    if (conn->phase != PH_OPEN || conn->close_sent) return TWC_E_STATE;
    int rv = put_frame(conn, OP_TEXT, a, an, b, bn);
    if (rv) return rv;
    schedule_flush(conn);
    return 0;
}

int twc__conn_send_text(twc__conn *conn, const char *p, size_t n)
{
    return twc__conn_send_text2(conn, p, n, NULL, 0);
}

/* The server broke the WebSocket protocol: say why (close code), report, end. */
static void ws_fail(twc__conn *conn, int code, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s (sent close %d)", what, code);
    send_close(conn, code);
    conn_flush(conn);
    report_close(conn, TWC_E_PROTOCOL, 0, msg);
    linger(conn);
}

static bool sendable_code(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* First chunk of a frame. Returns false when the connection failed. */
static bool frame_start(twc__conn *conn, const struct wslay_frame_iocb *f)
{
    if (f->rsv) return ws_fail(conn, 1002, "frame with reserved bits set"), false;
    if (f->mask) return ws_fail(conn, 1002, "masked frame from the server"), false;
    switch (f->opcode) {
    case OP_TEXT:
    case OP_BINARY:
        if (conn->in_msg) return ws_fail(conn, 1002, "new message inside a fragmented one"), false;
        conn->in_msg = true;
        conn->msg_op = f->opcode;
        conn->msg.len = 0;
        break;
    case OP_CONT:
        if (!conn->in_msg)
            return ws_fail(conn, 1002, "continuation frame without a message"), false;
        break;
    case OP_CLOSE:
    case OP_PING:
    case OP_PONG:
        conn->clen = 0; /* wslay_frame_recv has checked FIN and <= 125 bytes */
        break;
    default:
        return ws_fail(conn, 1002, "frame with an unknown opcode"), false;
    }
    if (f->opcode <= OP_BINARY && conn->msg.len + f->payload_length > conn->max_message)
        return ws_fail(conn, 1009, "message over the size limit"), false;
    conn->frame_op = f->opcode;
    conn->frame_fin = f->fin;
    conn->frame_left = f->payload_length;
    conn->in_frame = true;
    return true;
}

/* Last chunk of a frame. Returns false when reading must stop. */
static bool frame_end(twc__conn *conn)
{
    switch (conn->frame_op) {
    case OP_TEXT:
    case OP_BINARY:
    case OP_CONT:
        if (!conn->frame_fin) return true;
        conn->in_msg = false;
        if (conn->msg_op != OP_TEXT)
            return ws_fail(conn, 1003, "binary message on the JSON subprotocol"), false;
        conn->msg.p[conn->msg.len] = '\0'; /* twc__buf_reserve keeps a spare byte */
        size_t len = conn->msg.len;
        conn->msg.len = 0;
        /* UTF-8 is not checked here: the owner's JSON scanner validates every byte of the
         * message anyway, in one pass with a fast path for ASCII. */
        if (conn->attached && (conn->phase == PH_OPEN || conn->phase == PH_CLOSING))
            conn->ev.on_message(conn->owner, conn, conn->msg.p, len);
        if (conn->msg.cap > SHRINK_ABOVE) /* one huge message must not pin its buffer */
            twc__buf_free(&conn->msg);
        /* The owner may have detached us meanwhile. */
        return conn->attached && conn->phase <= PH_CLOSING;
    case OP_PING:
        if (!conn->close_sent) put_frame(conn, OP_PONG, conn->cbuf, conn->clen, NULL, 0);
        return true;
    case OP_PONG:
        return true;
    case OP_CLOSE: {
        int code = 1005;
        conn->peer_reason[0] = '\0';
        if (conn->clen == 1) return ws_fail(conn, 1002, "close frame with a 1-byte payload"), false;
        if (conn->clen >= 2) {
            code = (conn->cbuf[0] << 8) | conn->cbuf[1];
            size_t rl = conn->clen - 2;
            memcpy(conn->peer_reason, conn->cbuf + 2, rl); /* rl <= 123 */
            conn->peer_reason[rl] = '\0';
            if (!twc__utf8_valid(conn->peer_reason, rl)) conn->peer_reason[0] = '\0';
        }
        /* Echo the code (RFC 6455 5.5.1), 1012 included, which wslay's event layer would
         * refuse; a code that may not be sent goes back as an empty close. */
        send_close(conn, sendable_code(code) ? code : 0);
        conn_flush(conn);
        report_close(conn, TWC_E_PEER_CLOSED, code, conn->peer_reason);
        linger(conn);
        return false;
    }
    }
    return true;
}

static void ws_feed(twc__conn *conn, const char *p, size_t n)
{
    conn->rptr = p;
    conn->rlen = n;
    for (;;) {
        struct wslay_frame_iocb f;
        memset(&f, 0, sizeof f);
        ssize_t r = wslay_frame_recv(conn->wf, &f);
        if (r == WSLAY_ERR_WANT_READ) {
            if (conn->rlen == 0) break;
            continue;
        }
        if (r < 0) {
            ws_fail(conn, 1002, "malformed frame header");
            return;
        }
        if (!conn->in_frame && !frame_start(conn, &f)) return;
        if (f.data_length) {
            if (conn->frame_op <= OP_BINARY) {
                if (twc__buf_append(&conn->msg, f.data, f.data_length)) {
                    fail(conn, UV_ENOMEM, "out of memory");
                    return;
                }
            } else {
                memcpy(conn->cbuf + conn->clen, f.data, f.data_length);
                conn->clen += f.data_length;
            }
        }
        conn->frame_left -= f.data_length;
        if (conn->frame_left == 0) {
            conn->in_frame = false;
            if (!frame_end(conn)) return;
        }
    }
    conn->rlen = 0;
    conn_flush(conn);
}

static void handshake_read(twc__conn *conn, const char *p, size_t n)
{
    if (twc__buf_append(&conn->hs, p, n)) {
        fail(conn, UV_ENOMEM, "out of memory");
        return;
    }
    char err[160];
    int status;
    int rv = twc__hs_parse(conn->hs.p, conn->hs.len, conn->accept, &status, err, sizeof err);
    if (rv == 0) return;
    if (rv < 0) {
        fail(conn, TWC_E_HANDSHAKE, err);
        return;
    }
    conn->phase = PH_OPEN;
    if (conn->attached) conn->ev.on_open(conn->owner, conn);
    if (conn->phase != PH_OPEN) return;
    /* Frames that came with the head. */
    size_t rest = conn->hs.len - (size_t)rv;
    if (rest) {
        twc__buf hs = conn->hs;
        conn->hs = (twc__buf){0};
        ws_feed(conn, hs.p + rv, rest);
        twc__buf_free(&hs);
    } else {
        twc__buf_free(&conn->hs);
    }
}

/* The single point where bytes arrive (a TLS transport would decrypt here). */
static void tp_read(twc__conn *conn, const char *p, size_t n)
{
    switch (conn->phase) {
    case PH_HANDSHAKE:
        handshake_read(conn, p, n);
        break;
    case PH_OPEN:
    case PH_CLOSING:
        ws_feed(conn, p, n);
        break;
    default: /* lingering: the server's bytes no longer matter */
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    twc__conn *conn = s->data;
    if (nread == 0 || conn->phase == PH_DEAD) return;
    if (nread < 0) {
        if (conn->phase == PH_LINGER) {
            teardown(conn);
            return;
        }
        char msg[96];
        if (nread == UV_EOF)
            snprintf(msg, sizeof msg, "the server closed the connection without a close frame");
        else
            snprintf(msg, sizeof msg, "read failed: %s", uv_strerror((int)nread));
        fail(conn, nread == UV_EOF ? UV_ECONNRESET : (int)nread, msg);
        return;
    }
    conn->last_rx = uv_now(conn->loop);
    tp_read(conn, buf->base, (size_t)nread);
}

/* ---- connecting -------------------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    twc__conn *conn = req->data;
    if (status == UV_ECANCELED || conn->phase != PH_CONNECTING) return;
    if (status < 0) {
        conn->last_connect_err = status;
        if (conn->ai_next) { /* try the next address once this handle is closed */
            conn->retry_addr = true;
            close_tcp(conn);
            return;
        }
        char msg[400];
        snprintf(msg, sizeof msg, "connect to %s:%u failed: %s", conn->url.host,
                 (unsigned)conn->url.port, uv_strerror(status));
        fail(conn, status, msg);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    int rv = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rv < 0) {
        fail(conn, rv, "read start failed");
        return;
    }
    uint8_t key[16];
    char key_b64[25];
    if (RAND_bytes(key, sizeof key) != 1) {
        for (size_t i = 0; i < sizeof key; i += 8) {
            uint64_t r = twc__rng_next(&conn->rng);
            memcpy(key + i, &r, 8);
        }
    }
    twc__ws_key_encode(key, key_b64);
    if (twc__ws_accept(key_b64, conn->accept) || twc__hs_request(&conn->out, &conn->url, key_b64)) {
        fail(conn, UV_ENOMEM, "cannot build the handshake");
        return;
    }
    conn->phase = PH_HANDSHAKE;
    conn_flush(conn);
}

static void connect_addr(twc__conn *conn, const struct sockaddr *sa)
{
    int rv = uv_tcp_init(conn->loop, &conn->tcp);
    if (rv < 0) {
        fail(conn, rv, "socket failed");
        return;
    }
    conn->tcp.data = conn;
    conn->tcp_open = true;
    conn->refs++;
    conn->creq.data = conn;
    rv = uv_tcp_connect(&conn->creq, &conn->tcp, sa, on_connect);
    if (rv < 0) {
        conn->last_connect_err = rv;
        if (conn->ai_next) {
            conn->retry_addr = true;
            close_tcp(conn);
            return;
        }
        fail(conn, rv, "connect failed");
    }
}

static void connect_next(twc__conn *conn)
{
    struct addrinfo *ai = conn->ai_next;
    if (!ai) {
        fail(conn, conn->last_connect_err ? conn->last_connect_err : UV_EADDRNOTAVAIL,
             "no address to connect to");
        return;
    }
    conn->ai_next = ai->ai_next;
    while (conn->ai_next && conn->ai_next->ai_family != AF_INET &&
           conn->ai_next->ai_family != AF_INET6)
        conn->ai_next = conn->ai_next->ai_next;
    connect_addr(conn, ai->ai_addr);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    twc__conn *conn = req->data;
    conn->gai_pending = false;
    conn->refs--;
    if (conn->phase != PH_RESOLVING) {
        if (res) uv_freeaddrinfo(res);
        maybe_free(conn);
        return;
    }
    if (status < 0) {
        char msg[320];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", conn->url.host, uv_strerror(status));
        fail(conn, status, msg);
        return;
    }
    conn->ai_list = conn->ai_next = res;
    conn->phase = PH_CONNECTING;
    connect_next(conn);
}

int twc__conn_start(uv_loop_t *loop, const twc__conn_config *cfg, twc__rng *rng,
                    const twc__conn_events *ev, void *owner, twc__conn **out)
{
    twc__conn *conn = calloc(1, sizeof *conn);
    if (!conn) return UV_ENOMEM;
    conn->loop = loop;
    conn->owner = owner;
    conn->ev = *ev;
    conn->url = *cfg->url;
    conn->max_message = cfg->max_message_bytes;
    /* Its own generator: the conn may outlive its owner (lingering close). */
    twc__rng_seed_u64(&conn->rng, twc__rng_next(rng));

    struct wslay_frame_callbacks cbs = {
        .send_callback = wf_send,
        .recv_callback = wf_recv,
        .genmask_callback = wf_genmask,
    };
    if (wslay_frame_context_init(&conn->wf, &cbs, conn)) {
        free(conn);
        return UV_ENOMEM;
    }

    int rv = uv_timer_init(loop, &conn->timer);
    if (rv < 0) {
        wslay_frame_context_free(conn->wf);
        free(conn);
        return rv;
    }
    conn->timer.data = conn;
    conn->timer_open = true;
    conn->refs++;
    uv_prepare_init(loop, &conn->flush_prep); /* cannot fail on unix */
    conn->flush_prep.data = conn;
    conn->prep_open = true;
    conn->refs++;
    timer_arm(conn, TM_CONNECT, cfg->connect_timeout_ms);

    /* Not attached yet: a synchronous failure below is returned, not reported. */
    struct sockaddr_in *sin = (struct sockaddr_in *)&conn->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&conn->addr;
    if (uv_ip4_addr(conn->url.host, conn->url.port, sin) == 0 ||
        uv_ip6_addr(conn->url.host, conn->url.port, sin6) == 0) {
        /* A literal address needs no trip through the thread pool. */
        conn->phase = PH_CONNECTING;
        connect_addr(conn, (struct sockaddr *)&conn->addr);
    } else {
        char port[8];
        snprintf(port, sizeof port, "%u", (unsigned)conn->url.port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        conn->phase = PH_RESOLVING;
        conn->gai.data = conn;
        rv = uv_getaddrinfo(loop, &conn->gai, on_resolved, conn->url.host, port, &hints);
        if (rv < 0) {
            teardown(conn);
            return rv;
        }
        conn->gai_pending = true;
        conn->refs++;
    }
    if (conn->phase == PH_DEAD) /* failed synchronously; it frees itself */
        return conn->fail_err ? conn->fail_err : UV_EIO;
    conn->attached = true;
    *out = conn;
    return 0;
}

/* ---- closing ----------------------------------------------------------------------------- */

bool twc__conn_close(twc__conn *conn, uint16_t code, unsigned timeout_ms)
{
    if (conn->phase == PH_CLOSING) return true;
    if (conn->phase != PH_OPEN) {
        twc__conn_detach(conn);
        return false;
    }
    send_close(conn, code);
    conn->phase = PH_CLOSING;
    conn_flush(conn);
    timer_arm(conn, TM_CLOSE, timeout_ms);
    return true;
}

void twc__conn_detach(twc__conn *conn)
{
    conn->attached = false;
    if (conn->phase == PH_OPEN || conn->phase == PH_CLOSING) {
        /* Say goodbye (1001 going away), without waiting for the answer. */
        send_close(conn, 1001);
        conn_flush(conn);
        linger(conn);
        return;
    }
    if (conn->phase != PH_LINGER) teardown(conn);
}
