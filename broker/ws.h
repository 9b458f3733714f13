/*
 * ws.h — a server-side WebSocket session over wslay, free of socket I/O.
 *
 * wslay parses and validates what the client sends (masking, opcodes, fragmentation,
 * UTF-8 of text, close codes) and answers pings and closes. Bytes come in through
 * tw_ws_feed(); whole messages leave through on_message; every byte wslay wants to send
 * (pongs, pings, close frames) leaves through the `output` callback at once, so wslay never
 * holds a half-sent frame and the owner may interleave its own pre-framed data messages
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
    wslay_event_context_ptr ctx;
    const tw_ws_callbacks *cb;
    void *arg;
    const uint8_t *in; /* bytes being fed, valid during tw_ws_feed */
    size_t in_len, in_off;
    uint16_t close_code_sent;
} tw_ws;

/* Starts a session with messages capped at max_message bytes (wslay closes with 1009 beyond,
 * before allocating). Returns 0 or -ENOMEM. */
int tw_ws_init(tw_ws *ws, uint64_t max_message, const tw_ws_callbacks *cb, void *arg);

/* Frees the session. Safe on a zeroed tw_ws. */
void tw_ws_free(tw_ws *ws);

/* Feeds bytes from the socket: calls on_message for each complete message, then writes what
 * wslay queued (pongs, close replies). Returns 0, or -1 when the session failed hard (the
 * owner should drop the connection). */
int tw_ws_feed(tw_ws *ws, const uint8_t *data, size_t len);

/* Starts the closing handshake with `code` and a short reason, and writes the close frame.
 * Later data messages must not be sent. Idempotent. */
void tw_ws_close(tw_ws *ws, uint16_t code, const char *reason);

/* Sends a ping. */
void tw_ws_ping(tw_ws *ws);

/* 1 once a close frame was sent or received: send no more data messages. */
int tw_ws_closing(const tw_ws *ws);

/* 1 when the session has nothing left to read or write: close the TCP connection. */
int tw_ws_finished(const tw_ws *ws);

#endif /* TW_WS_H */
