/* ws.c — see ws.h. */
#include "ws.h"

#include <errno.h>
#include <string.h>

/* wslay pulls bytes: hand it what tw_ws_feed was given, then "would block". */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    tw_ws *ws = user;
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

/* wslay pushes bytes: always take all of them (the owner queues them), so wslay never keeps a
 * partly sent frame that our own frames could be interleaved into. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    tw_ws *ws = user;
    ws->cb->output(ws->arg, data, len);
    return (ssize_t)len;
}

static void on_msg_recv_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                           void *user)
{
    tw_ws *ws = user;
    if (ws->cb->on_activity) ws->cb->on_activity(ws->arg);
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        /* After we sent a close, the client's in-flight messages are dropped (RFC 6455 1.4). */
        if (!wslay_event_get_close_sent(ctx))
            ws->cb->on_message(ws->arg, arg->opcode, arg->msg, arg->msg_length);
    }
}

static const struct wslay_event_callbacks wslay_cbs = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_msg_recv_callback = on_msg_recv_cb,
};

int tw_ws_init(tw_ws *ws, uint64_t max_message, const tw_ws_callbacks *cb, void *arg)
{
    memset(ws, 0, sizeof *ws);
    ws->cb = cb;
    ws->arg = arg;
    if (wslay_event_context_server_init(&ws->ctx, &wslay_cbs, ws) != 0) return -ENOMEM;
    /* Set before the first byte: the default (2^31-1) is checked before wslay mallocs a
     * message, so one forged header could cost 2 GiB. */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message);
    return 0;
}

void tw_ws_free(tw_ws *ws)
{
    if (ws->ctx) wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
}

static int flush(tw_ws *ws)
{
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) return -1;
    return 0;
}

int tw_ws_feed(tw_ws *ws, const uint8_t *data, size_t len)
{
    ws->in = data;
    ws->in_len = len;
    ws->in_off = 0;
    int rc = 0;
    /* On a frame-level error wslay queues a close (1002, 1007, 1009) and returns
     * WSLAY_ERR_CALLBACK_FAILURE or just stops reading: flush the close either way. */
    if (wslay_event_want_read(ws->ctx) && wslay_event_recv(ws->ctx) != 0) rc = -1;
    ws->in = NULL;
    ws->in_len = ws->in_off = 0;
    if (flush(ws) != 0) rc = -1;
    return rc;
}

void tw_ws_close(tw_ws *ws, uint16_t code, const char *reason)
{
    if (wslay_event_get_close_sent(ws->ctx) || ws->close_code_sent) return;
    ws->close_code_sent = code;
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, reason ? strlen(reason) : 0);
    flush(ws);
}

void tw_ws_ping(tw_ws *ws)
{
    struct wslay_event_msg msg = {WSLAY_PING, NULL, 0};
    if (wslay_event_queue_msg(ws->ctx, &msg) == 0) flush(ws);
}

int tw_ws_closing(const tw_ws *ws)
{
    return ws->close_code_sent || wslay_event_get_close_sent(ws->ctx) ||
           wslay_event_get_close_received(ws->ctx);
}

int tw_ws_finished(const tw_ws *ws)
{
    return !wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx);
}
