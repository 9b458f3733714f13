/*
 * ws.h — a server-side WebSocket session, free of socket I/O.
 *
 * Receiving is ours (ws.c): frame headers, masking, opcodes and fragmentation, control
 * frames, close codes, the size limit and UTF-8 of text are checked with the same rules and
 * the same close codes as wslay's event layer, which did it before (see ws.c for why it no
 * longer does). Sending of control frames stays with wslay's event layer: pongs, pings and
 * close frames leave through the `output` callback at once, so wslay never holds a
 * half-sent frame and the owner may interleave its own pre-framed data messages
 * (tw_frame_ws) between calls. Data messages are not sent through wslay: wslay copies each
 * payload, and fan-out shares one frame among all subscribers instead.
 *
 * Loop thread only.
 */
#ifndef TW_WS_H
#define TW_WS_H

#include <stddef.h>
#include <stdint.h>
#include <wslay/wslay.h>

typedef struct tw_ws_callbacks {
    /* A whole text (opcode 1) or binary (2) message; data valid during the call only. */
    void (*on_message)(void *arg, int opcode, const uint8_t *data, size_t len);
    /* Bytes to write to the socket, in order; valid during the call only. */
    void (*output)(void *arg, const uint8_t *data, size_t len);
    /* Any frame or pong arrived (liveness). */
    void (*on_activity)(void *arg);
} tw_ws_callbacks;

typedef struct tw_ws {
    wslay_event_context_ptr ctx; /* sending: pongs, pings, closes */
    const tw_ws_callbacks *cb;
    void *arg;
    uint64_t max_message;
    uint16_t close_code_sent;
    /* Receiving. The frame being read: its header (hdr_len bytes of it so far, until
     * in_frame), opcode, FIN, mask key and how much of its payload has been read. */
    uint8_t hdr[14];
    uint8_t hdr_len;
    uint8_t in_frame, f_op, f_fin;
    uint8_t mask[4];
    uint64_t f_len, f_off;
    /* The data message being assembled (in_msg: a fragmented one is open), and how many of
     * its bytes are known to be well-formed UTF-8 (text; the rest is an unfinished
     * sequence). Control frames' payloads go to ctl. */
    uint8_t in_msg, msg_op, msg_fin;
    uint8_t *msg;
    size_t msg_len, msg_cap, utf8_ok;
    uint8_t ctl[125];
    size_t ctl_len, ctl_utf8_ok; /* ctl_utf8_ok: of a close's reason, as utf8_ok */
    uint8_t read_enabled, close_received;
} tw_ws;

/* Starts a session with messages capped at max_message bytes (closed with 1009 beyond,
 * before anything is allocated for them). Returns 0 or -ENOMEM. */
int tw_ws_init(tw_ws *ws, uint64_t max_message, const tw_ws_callbacks *cb, void *arg);

/* Frees the session. Safe on a zeroed tw_ws. */
void tw_ws_free(tw_ws *ws);

/* Feeds bytes from the socket: calls on_message for each complete message, then writes what
 * was queued (pongs, close replies). Returns 0, or -1 when the session failed hard (the
 * owner should drop the connection). */
int tw_ws_feed(tw_ws *ws, const uint8_t *data, size_t len);

/* Starts the closing handshake with `code` and a short reason, and writes the close frame.
 * Later data messages must not be sent. Idempotent. */
void tw_ws_close(tw_ws *ws, uint16_t code, const char *reason);

/* Sends a ping. */
void tw_ws_ping(tw_ws *ws);

/* 1 once a close frame was sent or received: send no more data messages. */
int tw_ws_closing(const tw_ws *ws);

/* 1 once the peer's close frame was received (a clean close, not a protocol error). */
int tw_ws_close_received(const tw_ws *ws);

/* 1 when the session has nothing left to read or write: close the TCP connection. */
int tw_ws_finished(const tw_ws *ws);

#endif /* TW_WS_H */
