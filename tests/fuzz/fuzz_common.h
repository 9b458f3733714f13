/*
 * fuzz_common.h — checks both protocol fuzz drivers make on what the codec produces.
 * Header-only so each driver builds from one source file plus broker/buf.c and
 * broker/protocol.c. A failed check aborts, which libFuzzer reports with the input.
 *
 * Build and run (from the repository root; T is json or msgpack):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -I broker -I store tests/fuzz/fuzz_protocol_$T.c broker/buf.c broker/protocol.c \
 *     $(pkg-config --cflags --libs libcjson msgpack libcrypto) -lm -o fuzz_protocol_$T
 *   mkdir -p corpus-$T && ./fuzz_protocol_$T -max_len=8192 -max_total_time=60 \
 *     corpus-$T tests/fuzz/corpus/protocol_$T
 */
#ifndef TW_FUZZ_COMMON_H
#define TW_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "protocol.h"

#include "fuzz_check.h"

/* MessagePack we wrote is exactly one value to msgpack-c too. Only called on our own
 * output, whose containers are all backed by bytes (msgpack-c sizes them by header). */
static inline void fuzz_check_msgpack(const uint8_t *p, size_t n)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    FUZZ_CHECK(msgpack_unpack_next(&u, (const char *)p, n, &off) == MSGPACK_UNPACK_SUCCESS);
    FUZZ_CHECK(off == n);
    msgpack_unpacked_destroy(&u);
}

/* JSON we wrote reads back through our own strict reader, and converting it once more
 * changes nothing (the forms are fixed points). Except text with \u0000, which we write
 * (a MessagePack str may hold NUL) but refuse to read (cJSON would cut the string). */
static inline void fuzz_check_json(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++)
        if (memcmp(p + i, "\\u0000", 6) == 0) return;
    tw_buf mp, again;
    tw_buf_init(&mp, 0);
    tw_buf_init(&again, 0);
    FUZZ_CHECK(tw_data_convert(TW_ENC_JSON, p, n, TW_ENC_MSGPACK, &mp) == 0);
    fuzz_check_msgpack(tw_buf_data(&mp), mp.len);
    FUZZ_CHECK(tw_data_convert(TW_ENC_MSGPACK, tw_buf_data(&mp), mp.len, TW_ENC_JSON, &again) == 0);
    FUZZ_CHECK(again.len == n && memcmp(tw_buf_data(&again), p, n) == 0);
    tw_buf_free(&mp);
    tw_buf_free(&again);
}

/* Encodes the replies a decoded request leads to, in both encodings. */
static inline void fuzz_encode_replies(const tw_request *req)
{
    for (int enc = TW_ENC_JSON; enc <= TW_ENC_MSGPACK; enc++) {
        tw_buf b;
        tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
        const int64_t *id = req->has_id ? &req->id : NULL;
        const tw_sub_args *sub = &req->sub;
        if (sub->channel) {
            FUZZ_CHECK(tw_proto_encode_subscribed(&b, (tw_encoding)enc, id, sub->channel,
                                                  sub->channel_len, 1, sub->has_since,
                                                  sub->since.entries, sub->since.n) == 0);
            if (enc == TW_ENC_MSGPACK) fuzz_check_msgpack(tw_buf_data(&b), b.len);
            tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
        }
        for (size_t i = 0; i < req->nsubs; i++) {
            tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
            FUZZ_CHECK(tw_proto_encode_subscribed(
                           &b, (tw_encoding)enc, id, req->subs[i].channel, req->subs[i].channel_len,
                           0, 0, req->subs[i].since.entries, req->subs[i].since.n) == 0);
        }
        if (sub->has_since && enc == TW_ENC_JSON) {
            /* a cursor written as JSON parses back to itself */
            tw_buf_reset(&b, 0);
            FUZZ_CHECK(tw_cursor_to_json(&b, sub->since.entries, sub->since.n) == 0);
            tw_cursor c;
            tw_proto_error e;
            FUZZ_CHECK(tw_cursor_parse_json((const char *)tw_buf_data(&b), b.len, NULL, &c, &e) ==
                       0);
            FUZZ_CHECK(c.n == sub->since.n);
            for (size_t i = 0; i < c.n; i++) {
                FUZZ_CHECK(strcmp(c.entries[i].origin, sub->since.entries[i].origin) == 0);
                FUZZ_CHECK(c.entries[i].seq == sub->since.entries[i].seq);
            }
            tw_cursor_free(&c);
        }
        if (req->op == TW_OP_PUBLISH) {
            /* the event, in this encoding, of the data as stored */
            tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
            FUZZ_CHECK(tw_proto_encode_event(&b, (tw_encoding)enc, sub->channel, sub->channel_len,
                                             "n1.5f2c09ab", 1, 2, (tw_encoding)req->data_encoding,
                                             req->data, req->data_len) == 0);
            if (enc == TW_ENC_MSGPACK) fuzz_check_msgpack(tw_buf_data(&b), b.len);
            if (req->data_encoding == enc) /* sized before encoding, exactly */
                FUZZ_CHECK(b.len == tw_proto_event_len((tw_encoding)enc, sub->channel,
                                                       sub->channel_len, "n1.5f2c09ab", 1, 2,
                                                       req->data_len));
        }
        tw_buf_free(&b);
    }
}

/* An error reply is well-formed whatever the message. */
static inline void fuzz_check_error(int rc, const tw_proto_error *err)
{
    FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM);
    FUZZ_CHECK(err->code == (rc == -EINVAL ? 400 : 500));
    FUZZ_CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
    FUZZ_CHECK(err->message[0] != '\0');
    tw_buf b;
    tw_buf_init(&b, 0);
    FUZZ_CHECK(tw_proto_encode_error(&b, TW_ENC_JSON, err->has_id ? &err->id : NULL, err->code,
                                     err->message) == 0);
    tw_buf_reset(&b, 0);
    FUZZ_CHECK(tw_proto_encode_error(&b, TW_ENC_MSGPACK, err->has_id ? &err->id : NULL, err->code,
                                     err->message) == 0);
    fuzz_check_msgpack(tw_buf_data(&b), b.len);
    tw_buf_free(&b);
}

#endif /* TW_FUZZ_COMMON_H */
