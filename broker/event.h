/*
 * event.h — refcounted frames and committed events: the fan-out's unit of sharing.
 *
 * A tw_frame is an immutable byte string ready for the socket: for WebSocket messages the
 * unmasked frame header and the payload in one allocation, identical for every receiver.
 * Each output queue entry holds one reference; the last unref frees it.
 *
 * A tw_event is one event after its commit: the fan-out encodes it at most once per
 * encoding (tw_event_frame) and every subscriber of that encoding shares the frame.
 *
 * Loop thread only (the counts are not atomic).
 */
#ifndef TW_EVENT_H
#define TW_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "protocol.h"

typedef struct tw_frame {
    uint32_t refs;
    uint32_t len;  /* bytes at data */
    uint8_t *data; /* what goes on the wire */
    uint8_t *base; /* the allocation data points into; NULL: the frame's own (event frames) */
} tw_frame;

enum { TW_WS_OP_TEXT = 0x1, TW_WS_OP_BINARY = 0x2 };

/* Frames b's data as one WebSocket message (FIN set, `opcode`), prepending the header into
 * b's headroom (needs TW_BUF_FRAME_HEADROOM). Takes b's storage (b is left empty) and
 * returns a frame with one reference, or NULL (b untouched) on ENOMEM / short headroom. */
tw_frame *tw_frame_ws(tw_buf *b, int opcode);

/* Takes b's storage as a frame of raw bytes (HTTP responses). NULL on ENOMEM. */
tw_frame *tw_frame_raw(tw_buf *b);

/* Copies n bytes into a new raw frame. NULL on ENOMEM. */
tw_frame *tw_frame_copy(const void *p, size_t n);

static inline tw_frame *tw_frame_ref(tw_frame *f)
{
    f->refs++;
    return f;
}

void tw_frame_unref(tw_frame *f);

/* Writes the header of a server (unmasked) WebSocket frame; returns its length (2..10). */
size_t tw_ws_frame_header(uint8_t out[10], int opcode, uint64_t payload_len);

/* The WebSocket opcode that carries an encoding's messages. */
static inline int tw_ws_opcode_for(tw_encoding enc)
{
    return enc == TW_ENC_MSGPACK ? TW_WS_OP_BINARY : TW_WS_OP_TEXT;
}

/* Encodes one event as a ready WebSocket frame for `enc`, the frame and its bytes in one
 * allocation of the exact size when the data needs no conversion. NULL on failure. */
tw_frame *tw_frame_event(tw_encoding enc, const char *channel, size_t channel_len,
                         const char *origin, uint64_t seq, int64_t ts_ms, tw_encoding data_enc,
                         const uint8_t *data, size_t data_len);

typedef struct tw_event {
    uint32_t refs;
    uint8_t data_enc;
    uint64_t lsn;
    uint64_t seq;
    int64_t ts_ms;
    const char *origin; /* interned by the server; lives as long as the server */
    char *channel;      /* owned */
    size_t channel_len;
    uint8_t *data;      /* owned */
    size_t data_len;
    tw_frame *frames[2]; /* per tw_encoding, encoded on first use */
} tw_event;

/* Makes an event with one reference, taking ownership of channel and data (malloc'd). */
tw_event *tw_event_new(const char *origin, uint64_t seq, uint64_t lsn, int64_t ts_ms, char *channel,
                       size_t channel_len, uint8_t data_enc, uint8_t *data, size_t data_len);

void tw_event_unref(tw_event *ev);

/* The event's frame for `enc`, encoded on first call; borrowed (ref it to keep it).
 * NULL when encoding fails (out of memory, or data that cannot be converted). */
tw_frame *tw_event_frame(tw_event *ev, tw_encoding enc);

#endif /* TW_EVENT_H */
