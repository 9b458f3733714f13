/*
 * fuzz_ws_diff.c — libFuzzer driver: the server's WebSocket session (broker/ws.c) against
 * wslay's event layer, which did its receiving and then its sending of control frames
 * before (its glue is kept below as it was). The same client bytes go to both; everything
 * observable must be the same: the messages delivered (opcode and bytes) and activity
 * reports, in order; every byte written (pongs, close frames and their codes), in order;
 * tw_ws_feed's result; and whether the session is closing, has received a close, or is
 * finished. Then both send a ping, a close and another ping, and must write the same bytes.
 *
 * What is written is compared as one byte stream, not call by call nor in its place among
 * the messages: ws.c writes a control frame in one output call (each of ours must be one
 * whole frame) as soon as its frame is read, where wslay wrote the header and the payload
 * in two calls at the end of the feed. One difference is deliberate and taken out before
 * comparing (drop_pongs_before_close): wslay put a close frame at the head of its queue
 * and wrote nothing after it, so the pongs to pings read in the same feed as a close (or
 * before a refused frame) never left; ws.c answers every ping it read before the close,
 * as RFC 6455 5.5.2 asks.
 *
 * Inputs are those of fuzz_ws.c (a first byte, which fuzz_ws uses to split the rest, then
 * client bytes), and the client bytes are fed whole, under 4,000 of them: wslay stages input in 4
 * KiB and checked a close frame's reason chunk by chunk, skipping two bytes of every chunk, which
 * ws.c deliberately does not copy (it checks the whole reason; see ws.c).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wslay/wslay.h>

#include "buf.h"
#include "fuzz_common.h"
#include "ws.h"

#define MAX_MESSAGE 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What one side did: log, as 'M' op len bytes | 'A'; out, every byte written. */
typedef struct trace {
    tw_buf log, out;
} trace;

static void log_bytes(trace *t, char tag, int op, const uint8_t *p, size_t n)
{
    uint8_t h[10] = {(uint8_t)tag, (uint8_t)op};
    memcpy(h + 2, &n, sizeof n);
    FUZZ_CHECK(tw_buf_append(&t->log, h, 2 + sizeof n) == 0);
    if (n) FUZZ_CHECK(tw_buf_append(&t->log, p, n) == 0);
}

static void on_message(void *arg, int opcode, const uint8_t *data, size_t len)
{
    FUZZ_CHECK(len <= MAX_MESSAGE);
    log_bytes(arg, 'M', opcode, data, len);
}

static void output(void *arg, const uint8_t *data, size_t len)
{
    trace *t = arg;
    FUZZ_CHECK(tw_buf_append(&t->out, data, len) == 0);
}

/* ws.c's: one whole unmasked control frame per call, as its header says. */
static void new_output(void *arg, const uint8_t *data, size_t len)
{
    FUZZ_CHECK(len >= 2 && (data[0] & 0xf8) == 0x88 && data[1] <= 125 && len == 2u + data[1]);
    output(arg, data, len);
}

static void on_activity(void *arg)
{
    log_bytes(arg, 'A', 0, NULL, 0);
}

static const tw_ws_callbacks cbs = {
    .on_message = on_message, .output = new_output, .on_activity = on_activity};

/* ---- the previous receiving: wslay's event layer (broker/ws.c before issue 3) ---------- */

typedef struct old_ws {
    wslay_event_context_ptr ctx;
    trace *t;
    const uint8_t *in;
    size_t in_len, in_off;
    uint16_t close_code_sent;
} old_ws;

static ssize_t old_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                           void *user)
{
    old_ws *ws = user;
    size_t left = ws->in_len - ws->in_off;
    if (left == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < left ? len : left;
    memcpy(buf, ws->in + ws->in_off, n);
    ws->in_off += n;
    return (ssize_t)n;
}

static ssize_t old_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                           void *user)
{
    old_ws *ws = user;
    output(ws->t, data, len);
    return (ssize_t)len;
}

static void old_on_msg_recv_cb(wslay_event_context_ptr ctx,
                               const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    old_ws *ws = user;
    on_activity(ws->t);
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        if (!wslay_event_get_close_sent(ctx))
            on_message(ws->t, arg->opcode, arg->msg, arg->msg_length);
    }
}

static const struct wslay_event_callbacks old_cbs = {
    .recv_callback = old_recv_cb,
    .send_callback = old_send_cb,
    .on_msg_recv_callback = old_on_msg_recv_cb,
};

static int old_flush(old_ws *ws)
{
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) return -1;
    return 0;
}

static int old_feed(old_ws *ws, const uint8_t *data, size_t len)
{
    ws->in = data;
    ws->in_len = len;
    ws->in_off = 0;
    int rc = 0;
    if (wslay_event_want_read(ws->ctx) && wslay_event_recv(ws->ctx) != 0) rc = -1;
    ws->in = NULL;
    ws->in_len = ws->in_off = 0;
    if (old_flush(ws) != 0) rc = -1;
    return rc;
}

static void old_close(old_ws *ws, uint16_t code, const char *reason)
{
    if (wslay_event_get_close_sent(ws->ctx) || ws->close_code_sent) return;
    ws->close_code_sent = code;
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, reason ? strlen(reason) : 0);
    old_flush(ws);
}

static void old_ping(old_ws *ws)
{
    struct wslay_event_msg msg = {WSLAY_PING, NULL, 0};
    if (wslay_event_queue_msg(ws->ctx, &msg) == 0) old_flush(ws);
}

static int old_closing(old_ws *ws)
{
    return ws->close_code_sent || wslay_event_get_close_sent(ws->ctx) ||
           wslay_event_get_close_received(ws->ctx);
}

/* ---- the comparison --------------------------------------------------------------------- */

/* Our output from `from` on (one feed's, whole frames): when it ends with a close frame,
 * takes out the pongs before it, which wslay would have dropped (see the top). */
static void drop_pongs_before_close(tw_buf *out, size_t from)
{
    uint8_t *p = tw_buf_data(out);
    size_t last = 0, i;
    int closed = 0;
    for (i = from; i < out->len; i += 2u + p[i + 1]) {
        FUZZ_CHECK(out->len - i >= 2 && out->len - i >= 2u + p[i + 1]);
        FUZZ_CHECK(!closed); /* nothing after a close frame */
        closed = p[i] == 0x88;
        last = i;
    }
    if (!closed) return;
    size_t w = from, n;
    for (i = from; i < out->len; i += n) {
        n = 2u + p[i + 1];
        if (p[i] == 0x8a && i != last) continue;
        memmove(p + w, p + i, n); /* w <= i: what is still to be read stays in place */
        w += n;
    }
    out->len = w;
}

static void same_buf(const tw_buf *a, const tw_buf *b)
{
    FUZZ_CHECK(a->len == b->len);
    if (a->len) FUZZ_CHECK(memcmp(tw_buf_data(a), tw_buf_data(b), a->len) == 0);
}

static void same_logs(const trace *a, const trace *b)
{
    same_buf(&a->log, &b->log);
    same_buf(&a->out, &b->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4001) return 0;
    data++;
    size--;
    trace tn, to;
    tw_buf_init(&tn.log, 0);
    tw_buf_init(&to.log, 0);
    tw_buf_init(&tn.out, 0);
    tw_buf_init(&to.out, 0);

    tw_ws ws;
    FUZZ_CHECK(tw_ws_init(&ws, MAX_MESSAGE, &cbs, &tn) == 0);
    old_ws ow = {.t = &to};
    FUZZ_CHECK(wslay_event_context_server_init(&ow.ctx, &old_cbs, &ow) == 0);
    wslay_event_config_set_max_recv_msg_length(ow.ctx, MAX_MESSAGE);

    int rn = tw_ws_feed(&ws, data, size);
    int ro = old_feed(&ow, data, size);
    FUZZ_CHECK(rn == ro);
    drop_pongs_before_close(&tn.out, 0);
    same_logs(&tn, &to);
    FUZZ_CHECK(tw_ws_closing(&ws) == old_closing(&ow));
    FUZZ_CHECK(tw_ws_close_received(&ws) == wslay_event_get_close_received(ow.ctx));
    FUZZ_CHECK(tw_ws_finished(&ws) ==
               (!wslay_event_want_read(ow.ctx) && !wslay_event_want_write(ow.ctx)));

    tw_ws_ping(&ws);
    old_ping(&ow);
    same_logs(&tn, &to);
    tw_ws_close(&ws, 1000, "bye");
    old_close(&ow, 1000, "bye");
    same_logs(&tn, &to);
    FUZZ_CHECK(tw_ws_closing(&ws) == old_closing(&ow));
    tw_ws_ping(&ws);
    old_ping(&ow);
    same_logs(&tn, &to);
    FUZZ_CHECK(tw_ws_finished(&ws) ==
               (!wslay_event_want_read(ow.ctx) && !wslay_event_want_write(ow.ctx)));

    tw_ws_free(&ws);
    wslay_event_context_free(ow.ctx);
    tw_buf_free(&tn.log);
    tw_buf_free(&to.log);
    tw_buf_free(&tn.out);
    tw_buf_free(&to.out);
    return 0;
}
