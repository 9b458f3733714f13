/*
 * fuzz_protocol_msgpack.c — libFuzzer driver: a MessagePack client message through
 * tw_proto_decode(); on success the publish data to JSON (which must read back) and every
 * reply encoder. Also the whole input as event data, checked against msgpack-c: whatever
 * our reader accepts, msgpack-c must read as exactly one value.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tw_request req;
    tw_proto_error err;
    memset(&req, 0, sizeof req);
    int rc = tw_proto_decode(TW_ENC_MSGPACK, data, size, NULL, &req, &err);
    if (rc == 0) {
        /* a message we accept is one msgpack-c reads (depth <= 32, its limit) */
        fuzz_check_msgpack(data, size);
        if (req.op == TW_OP_PUBLISH) {
            FUZZ_CHECK(req.data_encoding == TW_ENC_MSGPACK);
            fuzz_check_msgpack(req.data, req.data_len);
            tw_buf js;
            tw_buf_init(&js, 0);
            FUZZ_CHECK(tw_data_convert(TW_ENC_MSGPACK, req.data, req.data_len, TW_ENC_JSON, &js) ==
                       0);
            fuzz_check_json(tw_buf_data(&js), js.len);
            tw_buf_free(&js);
        }
        fuzz_encode_replies(&req);
        tw_request_free(&req);
    } else {
        fuzz_check_error(rc, &err);
        FUZZ_CHECK(req.op == TW_OP_NONE && req.data == NULL && req.sub.channel == NULL);
    }

    tw_buf b;
    tw_buf_init(&b, 0);
    if (tw_data_convert(TW_ENC_MSGPACK, data, size, TW_ENC_JSON, &b) == 0) {
        fuzz_check_msgpack(data, size);
        fuzz_check_json(tw_buf_data(&b), b.len);
    } else {
        FUZZ_CHECK(b.len == 0);
    }
    tw_buf_free(&b);
    return 0;
}
