/*
 * ws.h — a server-side WebSocket session, free of socket I/O.
 *
 * All of it is ours (ws.c); wslay is not used per connection any more. Receiving (frame
 * headers, masking, opcodes and fragmentation, control frames, close codes, the size limit
 * and UTF-8 of text) is checked with the same rules and the same close codes as wslay's
 * event layer, which did it before. Sending control frames was the event layer's last job,
 * and for it each connection kept a wslay event context: 8.8 KiB (two 4 KiB staging
 * buffers) of the 10.1 KiB an idle subscribed connection cost, against the 4 KiB of issue 6.
 * So pongs, pings and close frames are encoded here too, byte for byte as wslay wrote them,
 * and leave through the `output` callback at once, one whole frame per call: the owner may
 * interleave its own pre-framed data messages (tw_frame_ws) between calls. Data messages are
 * not sent through this module: fan-out shares one frame among all subscribers.
 *
 * wslay's event layer stays the reference: tests/fuzz/fuzz_ws_diff.c feeds the same bytes to
 * it and to this module and compares everything observable, the bytes written included.
 *
 * Loop thread only.
 */
#ifndef TW_WS_H
#define TW_WS_H

#include <stddef.h>
#include <stdint.h>

typedef struct tw_ws_callbacks {
    /* A whole text (opcode 1) or binary (2) message; data valid during the call only. */
    void (*on_message)(void *arg, int opcode, const uint8_t *data, size_t len);
    /* Bytes to write to the socket, in order: one whole control frame per call; valid
     * during the call only. */
    void (*output)(void *arg, const uint8_t *data, size_t len);
    /* Any frame or pong arrived (liveness). */
    void (*on_activity)(void *arg);
} tw_ws_callbacks;

/* One per connection (inside tw_session): keep it small (issue 6). */
typedef struct tw_ws {
    const tw_ws_callbacks *cb;
    void *arg;
    uint64_t max_message;
    /* Receiving. The frame being read: its header (hdr_len bytes of it so far, until
     * in_frame), opcode, FIN, mask key and how much of its payload has been read. */
    uint64_t f_len, f_off;
    uint8_t hdr[14];
    uint8_t hdr_len;
    uint8_t in_frame, f_op, f_fin;
    uint8_t mask[4];
    /* The data message being assembled (in_msg: a fragmented one is open), and how many of
     * its bytes are known to be well-formed UTF-8 (text; the rest is an unfinished
     * sequence). A control frame's payload (ctl_len bytes) follows the message's bytes in
     * the same buffer. The buffer is NULL between reads unless a message or a control
     * frame is open. */
    uint8_t in_msg, msg_op, msg_fin;
    uint8_t ctl_len, ctl_utf8_ok; /* ctl_utf8_ok: of a close's reason, as utf8_ok */
    uint8_t *msg;
    size_t msg_len, msg_cap, utf8_ok;
    uint16_t close_code_sent; /* by tw_ws_close (0: not called, or with code 0) */
    uint8_t read_enabled, close_received, close_sent;
} tw_ws;

/* Starts a session with messages capped at max_message bytes (closed with 1009 beyond,
 * before anything is allocated for them). Allocates nothing; returns 0. */
int tw_ws_init(tw_ws *ws, uint64_t max_message, const tw_ws_callbacks *cb, void *arg);

/* Frees the session. Safe on a zeroed tw_ws. */
void tw_ws_free(tw_ws *ws);

/* Feeds bytes from the socket: calls on_message for each complete message and writes pongs
 * and close frames as their frames are read. Returns 0, or -1 when the session failed hard
 * (a malformed frame header, or out of memory: the owner should drop the connection). */
int tw_ws_feed(tw_ws *ws, const uint8_t *data, size_t len);

/* Starts the closing handshake with `code` and a reason of at most 123 bytes (NUL-terminated
 * or NULL), and writes the close frame: code 0 writes an empty one; a longer reason writes
 * none, as wslay_event_queue_close refused it. Later data messages must not be sent.
 * Idempotent: nothing is written once a close frame was, nor after an earlier call with a
 * non-zero code. */
void tw_ws_close(tw_ws *ws, uint16_t code, const char *reason);

/* Writes an empty ping, unless a close frame was written. */
void tw_ws_ping(tw_ws *ws);

/* 1 once a close frame was sent or received: send no more data messages. */
int tw_ws_closing(const tw_ws *ws);

/* 1 once the peer's close frame was received (a clean close, not a protocol error). */
int tw_ws_close_received(const tw_ws *ws);

/* 1 when the session has nothing left to read or write: close the TCP connection. */
int tw_ws_finished(const tw_ws *ws);

#endif /* TW_WS_H */
