/*
 * protocol.h — the client protocol v1 codec (docs/protocol.md), free of any I/O.
 *
 * Two encodings carry the same messages: JSON text (subprotocol tidewire.v1.json) and
 * MessagePack (tidewire.v1.msgpack). Decoding turns one client message into a
 * tw_request; encoding appends one server message to a tw_buf.
 *
 * Event data is kept in the encoding it was published in (the store tags it) and converted
 * only when a subscriber uses the other encoding: MessagePack values JSON cannot hold are
 * given one documented form (bin -> {"$base64": "..."}, ext -> {"$ext": type, "$base64":
 * "..."}, non-string map keys -> their JSON text as the key, NaN/Inf -> {"$float": "NaN"}).
 *
 * Pure functions; any thread. Functions return 0 or a negative errno-style code.
 */
#ifndef TW_PROTOCOL_H
#define TW_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "store.h"

typedef enum tw_encoding {
    TW_ENC_JSON = TW_STORE_ENC_JSON,
    TW_ENC_MSGPACK = TW_STORE_ENC_MSGPACK,
} tw_encoding;

typedef enum tw_op {
    TW_OP_NONE = 0,
    TW_OP_CONNECT,
    TW_OP_SUBSCRIBE,
    TW_OP_UNSUBSCRIBE,
    TW_OP_PUBLISH,
    TW_OP_PRESENCE,
    TW_OP_PING,
    TW_OP_REFRESH,
} tw_op;

/* The op's wire name ("subscribe"), or "?" */
const char *tw_op_name(tw_op op);

/* Limits the decoder enforces; a violation is a 400 error naming the field. */
typedef struct tw_proto_limits {
    size_t max_channel_len; /* bytes, <= TW_STORE_CHANNEL_MAX */
    size_t max_cursor_entries;
    uint32_t max_last;   /* largest `last` accepted */
    size_t max_subs;     /* entries in connect's subs */
    size_t max_token_len;
} tw_proto_limits;

/* The defaults: 255, 64, 10000, 256, 8192. */
extern const tw_proto_limits tw_proto_default_limits;

/* A version vector: the last seq seen per origin. */
typedef struct tw_cursor {
    size_t n;
    tw_store_cursor_entry *entries; /* entries[i].origin points into `origins` storage */
    char (*origins)[TW_STORE_ORIGIN_MAX + 1];
} tw_cursor;

/* Frees what a cursor holds and empties it. */
void tw_cursor_free(tw_cursor *c);

/* Checks an origin id: NAME "." EPOCH with NAME [A-Za-z0-9_-]{1,32}, EPOCH [0-9a-f]{1,15}.
 * A predicate, unlike the functions that act: 1 when valid, 0 when not. */
int tw_origin_valid(const char *s, size_t len);

/* Checks a channel name: 1..max bytes of visible ASCII (0x21..0x7e). 1 when valid, else 0. */
int tw_channel_valid(const char *s, size_t len, size_t max);

/* What one subscription asks for (subscribe, and each entry of connect's subs). */
typedef struct tw_sub_args {
    char *channel; /* NUL-terminated copy */
    size_t channel_len;
    int has_since; /* since was given: replay what the cursor has not seen */
    tw_cursor since;
    uint32_t last; /* 0: none; N: also the newest N events */
} tw_sub_args;

typedef struct tw_request {
    tw_op op;
    int has_id;
    int64_t id;
    /* subscribe, unsubscribe, publish, presence: sub.channel; subscribe: all of sub. */
    tw_sub_args sub;
    /* publish: data in the request's encoding, re-encoded compactly (owned). */
    uint8_t data_encoding;
    uint8_t *data;
    size_t data_len;
    /* connect, refresh */
    char *token; /* NULL when absent */
    /* connect: subs {channel: cursor} in the order given */
    tw_sub_args *subs;
    size_t nsubs;
} tw_request;

/* Why a message was refused: the error reply to send. `code` is HTTP-like (400, 413...). */
typedef struct tw_proto_error {
    int code;
    int has_id; /* the request's id, when it could be read */
    int64_t id;
    char message[160];
} tw_proto_error;

/*
 * Decodes one client message (a whole WebSocket message) into *out, which the caller
 * zeroes or reuses after tw_request_free(). On success returns 0 and the caller owns what
 * *out holds. On a malformed or invalid message returns -EINVAL and fills *err (code 400,
 * a message naming the problem, and the id when one could be read); *out holds nothing.
 * -ENOMEM on allocation failure (*err then says 500). Fields not in the protocol are ignored.
 * `lim` NULL: tw_proto_default_limits.
 */
int tw_proto_decode(tw_encoding enc, const uint8_t *msg, size_t len, const tw_proto_limits *lim,
                    tw_request *out, tw_proto_error *err);

/*
 * Decodes an HTTP API body as a request of the op its endpoint implies (`op` in the body is
 * ignored): POST /api/publish {"channel", "data"} is TW_OP_PUBLISH. Same rules and results
 * as tw_proto_decode, so data published over HTTP is validated and kept exactly as over
 * WebSocket. With implied == TW_OP_NONE it is tw_proto_decode.
 */
int tw_proto_decode_as(tw_encoding enc, tw_op implied, const uint8_t *msg, size_t len,
                       const tw_proto_limits *lim, tw_request *out, tw_proto_error *err);

/*
 * Tests and fuzzers only: 0 makes JSON decoding skip the one-pass reader and read every
 * message with the reference reader (json_lex + cJSON), which the one-pass reader must match
 * on every message it accepts. 1 by default. Not to be changed while another thread decodes.
 */
extern int tw_proto__json_one_pass;

/* Frees what a request holds and zeroes it. */
void tw_request_free(tw_request *req);

/*
 * Parses a cursor from a JSON text (as in `since`, the HTTP API's `since=` or a cursor
 * file): an object {"origin": seq, ...}, a position string "origin:seq", or {} (from the
 * oldest kept). Returns 0, -EINVAL (with *err filled) or -ENOMEM.
 */
int tw_cursor_parse_json(const char *text, size_t len, const tw_proto_limits *lim, tw_cursor *out,
                         tw_proto_error *err);

/* Appends a cursor as a JSON object {"origin":seq,...}. */
int tw_cursor_to_json(tw_buf *b, const tw_store_cursor_entry *entries, size_t n);

/*
 * Converts one data value between encodings: JSON text -> MessagePack or MessagePack ->
 * JSON text (the documented forms above). Appends to *b. -EINVAL when the input is not one
 * valid value (or nests deeper than 31 levels), -ENOMEM; *b is then as it was. With
 * from == to the value is checked and appended (JSON compacted).
 */
int tw_data_convert(tw_encoding from, const uint8_t *data, size_t len, tw_encoding to, tw_buf *b);

/* ---- Server messages. Each appends one whole message to *b. `id` NULL: no id field. ----
 * They return 0, -ENOMEM or -EINVAL (bad encoding, origin too long, data not convertible);
 * on failure *b is as it was. */

int tw_proto_encode_connected(tw_buf *b, tw_encoding enc, const int64_t *id, const char *node,
                              const char *session, unsigned ping_interval_s);

/* `cursor`: where the subscription starts (the node's head for a live subscription, the
 * given cursor for a resume), which the client merges into its own. */
int tw_proto_encode_subscribed(tw_buf *b, tw_encoding enc, const int64_t *id, const char *channel,
                               size_t channel_len, int recovered, int replayed,
                               const tw_store_cursor_entry *cursor, size_t cursor_n);

int tw_proto_encode_unsubscribed(tw_buf *b, tw_encoding enc, const int64_t *id,
                                 const char *channel, size_t channel_len);

/* ack {id, pos: "origin:seq"} */
int tw_proto_encode_ack(tw_buf *b, tw_encoding enc, const int64_t *id, const char *origin,
                        uint64_t seq);

int tw_proto_encode_pong(tw_buf *b, tw_encoding enc, const int64_t *id);

int tw_proto_encode_error(tw_buf *b, tw_encoding enc, const int64_t *id, int code,
                          const char *message);

/*
 * event {channel, pos, ts, data}. `data` is in `data_enc`; when that differs from `enc`
 * it is converted (tw_data_convert), otherwise spliced in unchecked. Called once per event
 * per encoding: subscribers share the result.
 */
int tw_proto_encode_event(tw_buf *b, tw_encoding enc, const char *channel, size_t channel_len,
                          const char *origin, uint64_t seq, int64_t ts_ms, tw_encoding data_enc,
                          const uint8_t *data, size_t data_len);

/*
 * The bytes tw_proto_encode_event() appends for these arguments when the data goes in as it
 * is (data_enc == enc) and the encoding succeeds: exact, so the caller can allocate the
 * event once. When the data is to be converted, the size with the data as it is (a hint).
 * SIZE_MAX when the lengths are beyond any buffer.
 */
size_t tw_proto_event_len(tw_encoding enc, const char *channel, size_t channel_len,
                          const char *origin, uint64_t seq, int64_t ts_ms, size_t data_len);

#endif /* TW_PROTOCOL_H */
