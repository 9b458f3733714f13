/*
 * gossip_wire.h — the replication protocol's messages: encoder and bounds-checked decoder.
 * Internal to gossip/ (and its unit test and fuzz driver); no NNG, no I/O, no store access.
 *
 * Every message is one NNG message body:
 *   u8 version (TW_GW_VERSION) | u8 type | str sender name | u64 sender incarnation | body
 * Integers are big-endian; `str` is a u16 length and that many bytes (no NUL); `blob` is a
 * u32 length and bytes. Bodies (docs/cluster.md has the full table):
 *   HELLO, HEARTBEAT  str origin | str addr | str to_addr | u8 state |
 *                     u16 n × {str name | str addr | u8 state | u64 incarnation} |
 *                     u16 n × {str alias addr} | u16 n × {str origin | u64 applied seq}
 *   EVENTS            str origin | u8 flags | u64 last_known | u64 first_seq | u32 count |
 *                     count × {u64 seq | i64 ts_ms | u8 encoding | str channel | blob data}
 *                     (seq of event i is first_seq + i: the decoder refuses anything else)
 *   FETCH             str origin | u64 from_seq | u32 max_bytes
 *   ACK               str origin | u64 applied seq
 *   LEAVE             u8 gone (0: draining, still talking; 1: gone, stop sending to it)
 *   PROBE             u64 nonce
 * A message with trailing bytes, a string over its field's limit, a count larger than the
 * bytes left could hold, or an unknown version or type is refused as a whole.
 */
#ifndef TW_GOSSIP_WIRE_H
#define TW_GOSSIP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "gossip.h"

#define TW_GW_VERSION 1

enum tw_gw_type {
    TW_GW_HELLO = 1,
    TW_GW_HEARTBEAT = 2,
    TW_GW_EVENTS = 3,
    TW_GW_FETCH = 4,
    TW_GW_ACK = 5,
    TW_GW_LEAVE = 6,
    TW_GW_PROBE = 7,
    TW_GW_APP = 8, /* an owner's message to every peer (tw_gossip_broadcast), opaque here */
};

/* Largest APP payload. */
#define TW_GW_APP_MAX (1u << 20)

/* Member states on the wire (tw_member_state values, SELF never sent). */
#define TW_GW_STATE_MAX TW_MEMBER_LEFT

/* EVENTS flags. */
#define TW_GW_EV_FETCH_REPLY 0x01 /* the answer to a FETCH (possibly with count 0) */

/* Most aliases a node reports (addresses it was reached at that are not its own). */
#define TW_GW_ALIASES_MAX 8

typedef struct tw_gw_member {
    char name[TW_STORE_NODE_NAME_MAX + 1];
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    uint8_t state;
    uint64_t incarnation;
} tw_gw_member;

typedef struct tw_gw_digest {
    char origin[TW_STORE_ORIGIN_MAX + 1];
    uint64_t seq;
} tw_gw_digest;

/* One event of an EVENTS message: channel and data point into the decoded buffer. */
typedef struct tw_gw_event {
    uint64_t seq;
    int64_t ts_ms;
    uint8_t encoding;
    const char *channel;
    size_t channel_len;
    const void *data;
    size_t data_len;
} tw_gw_event;

/* A decoded message. Arrays are malloc'd by tw_gw_decode() (never more entries than the
 * message's bytes can hold); pointers inside events point into the decoded buffer, which
 * must outlive the struct. Free with tw_gw_msg_free(). */
typedef struct tw_gw_msg {
    uint8_t type;
    char sender[TW_STORE_NODE_NAME_MAX + 1];
    uint64_t incarnation;
    /* HELLO, HEARTBEAT, EVENTS, FETCH, ACK */
    char origin[TW_STORE_ORIGIN_MAX + 1];
    /* HELLO, HEARTBEAT */
    char addr[TW_GOSSIP_ADDR_MAX + 1];
    char to_addr[TW_GOSSIP_ADDR_MAX + 1];
    uint8_t state;
    tw_gw_member *members;
    size_t nmembers;
    char (*aliases)[TW_GOSSIP_ADDR_MAX + 1];
    size_t naliases;
    tw_gw_digest *digest;
    size_t ndigest;
    /* EVENTS (TW_GW_EV_*); LEAVE (1: gone) */
    uint8_t flags;
    uint64_t last_known;
    uint64_t first_seq;
    tw_gw_event *events;
    size_t nevents;
    /* FETCH (from_seq), ACK (seq), PROBE (nonce) */
    uint64_t seq;
    uint32_t max_bytes;
    uint64_t nonce;
    /* APP: the payload, pointing into the decoded buffer */
    const void *app;
    size_t app_len;
} tw_gw_msg;

/* Decodes buf[0..len) into *out (zeroed first). Returns 0, TW_GOSSIP_EINVAL for a
 * malformed message (nothing to free), or TW_GOSSIP_ENOMEM. */
int tw_gw_decode(const void *buf, size_t len, tw_gw_msg *out);

/* Frees the arrays of a decoded message. Safe on a zeroed struct. */
void tw_gw_msg_free(tw_gw_msg *m);

/* ---- Encoding ------------------------------------------------------------------------ */

/* A growable output buffer. Encoders append; the first failure sticks in `err`, so a
 * message is built with a run of calls and checked once. */
typedef struct tw_gw_buf {
    unsigned char *p;
    size_t len, cap;
    int err; /* 0 or TW_GOSSIP_ENOMEM / TW_GOSSIP_EINVAL (a field over its limit) */
} tw_gw_buf;

void tw_gw_buf_init(tw_gw_buf *b);
void tw_gw_buf_reset(tw_gw_buf *b); /* len = 0, err = 0; keeps the memory */
void tw_gw_buf_free(tw_gw_buf *b);

/* The common header. */
void tw_gw_put_header(tw_gw_buf *b, uint8_t type, const char *sender, uint64_t incarnation);

/* HELLO / HEARTBEAT body, written in three parts so callers stream from their own tables:
 * the fixed fields and member count, then each member, then aliases and digest (counts
 * first). The counts must match the entries that follow (the decoder checks). */
void tw_gw_put_hb_start(tw_gw_buf *b, const char *origin, const char *addr, const char *to_addr,
                        uint8_t state, uint16_t nmembers);
void tw_gw_put_hb_member(tw_gw_buf *b, const char *name, const char *addr, uint8_t state,
                         uint64_t incarnation);
void tw_gw_put_u16(tw_gw_buf *b, uint16_t v);
void tw_gw_put_str(tw_gw_buf *b, const char *s, size_t len, size_t max);
void tw_gw_put_digest(tw_gw_buf *b, const char *origin, uint64_t seq);

/* EVENTS: the start (with the count patched later by tw_gw_events_finish), then events. */
void tw_gw_put_events_start(tw_gw_buf *b, const char *origin, uint8_t flags, uint64_t last_known,
                            uint64_t first_seq, size_t *count_off);
void tw_gw_put_event(tw_gw_buf *b, uint64_t seq, int64_t ts_ms, uint8_t encoding,
                     const char *channel, size_t channel_len, const void *data, size_t data_len);
/* Patches first_seq and count once the events are written (first_seq may differ from the
 * one given at the start when the log no longer holds the seqs asked for). */
void tw_gw_events_finish(tw_gw_buf *b, size_t count_off, uint64_t first_seq, uint32_t count);

void tw_gw_put_fetch(tw_gw_buf *b, const char *origin, uint64_t from_seq, uint32_t max_bytes);
void tw_gw_put_ack(tw_gw_buf *b, const char *origin, uint64_t seq);
void tw_gw_put_leave(tw_gw_buf *b, int gone);
void tw_gw_put_probe(tw_gw_buf *b, uint64_t nonce);
void tw_gw_put_app(tw_gw_buf *b, const void *data, uint32_t len);

/* Bytes an event adds to an EVENTS message (for batching). */
static inline size_t tw_gw_event_size(size_t channel_len, size_t data_len)
{
    return 8 + 8 + 1 + 2 + channel_len + 4 + data_len;
}

#endif /* TW_GOSSIP_WIRE_H */
