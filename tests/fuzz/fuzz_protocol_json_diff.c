/*
 * fuzz_protocol_json_diff.c — libFuzzer driver: the one-pass JSON reader against the
 * reference reader (json_lex + cJSON). Every input is decoded both ways, as a WebSocket
 * message and as an HTTP publish body; the answers must be the same: the same error code,
 * id and message, or the same request with the publish data stored byte for byte alike.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_cursor(const tw_cursor *a, const tw_cursor *b)
{
    FUZZ_CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        FUZZ_CHECK(strcmp(a->entries[i].origin, b->entries[i].origin) == 0);
        FUZZ_CHECK(a->entries[i].seq == b->entries[i].seq);
    }
}

static void same_sub(const tw_sub_args *a, const tw_sub_args *b)
{
    FUZZ_CHECK(a->channel_len == b->channel_len);
    FUZZ_CHECK(!a->channel == !b->channel);
    if (a->channel) FUZZ_CHECK(memcmp(a->channel, b->channel, a->channel_len + 1) == 0);
    FUZZ_CHECK(a->has_since == b->has_since);
    same_cursor(&a->since, &b->since);
    FUZZ_CHECK(a->last == b->last);
}

static void both_ways(const uint8_t *data, size_t size, tw_op implied)
{
    tw_request r[2];
    tw_proto_error e[2];
    int rc[2];
    for (int k = 0; k < 2; k++) {
        tw_proto__json_one_pass = !k;
        memset(&r[k], 0, sizeof r[k]);
        memset(&e[k], 0, sizeof e[k]);
        rc[k] = tw_proto_decode_as(TW_ENC_JSON, implied, data, size, NULL, &r[k], &e[k]);
    }
    tw_proto__json_one_pass = 1;
    FUZZ_CHECK(rc[0] == rc[1]);
    if (rc[0]) {
        fuzz_check_error(rc[0], &e[0]);
        FUZZ_CHECK(e[0].code == e[1].code && e[0].has_id == e[1].has_id && e[0].id == e[1].id);
        FUZZ_CHECK(strcmp(e[0].message, e[1].message) == 0);
        return;
    }
    FUZZ_CHECK(r[0].op == r[1].op && r[0].has_id == r[1].has_id && r[0].id == r[1].id);
    same_sub(&r[0].sub, &r[1].sub);
    FUZZ_CHECK(r[0].data_encoding == r[1].data_encoding && r[0].data_len == r[1].data_len);
    FUZZ_CHECK(!r[0].data == !r[1].data);
    if (r[0].data_len) FUZZ_CHECK(memcmp(r[0].data, r[1].data, r[0].data_len) == 0);
    FUZZ_CHECK(!r[0].token == !r[1].token);
    if (r[0].token) FUZZ_CHECK(strcmp(r[0].token, r[1].token) == 0);
    FUZZ_CHECK(r[0].nsubs == r[1].nsubs);
    for (size_t i = 0; i < r[0].nsubs; i++)
        same_sub(&r[0].subs[i], &r[1].subs[i]);
    tw_request_free(&r[0]);
    tw_request_free(&r[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    both_ways(data, size, TW_OP_NONE);
    both_ways(data, size, TW_OP_PUBLISH);
    return 0;
}
