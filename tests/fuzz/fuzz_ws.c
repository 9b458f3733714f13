/*
 * fuzz_ws.c — libFuzzer driver for the server WebSocket session (broker/ws.c):
 * arbitrary client bytes fed in two pieces; every message is then decoded as a request in
 * both encodings, as the session would. Checks that nothing crashes or leaks and that a
 * message never exceeds the configured maximum.
 */
#include <stdint.h>
#include <stdlib.h>

#include "protocol.h"
#include "ws.h"

#define MAX_MESSAGE 4096

static size_t out_bytes;

static void on_message(void *arg, int opcode, const uint8_t *data, size_t len)
{
    if (len > MAX_MESSAGE) abort();
    tw_request req;
    tw_proto_error err;
    if (tw_proto_decode(opcode == 2 ? TW_ENC_MSGPACK : TW_ENC_JSON, data, len, NULL, &req, &err) == 0)
        tw_request_free(&req);
}

static void output(void *arg, const uint8_t *data, size_t len)
{
    out_bytes += len;
}

static const tw_ws_callbacks cbs = {.on_message = on_message, .output = output};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t split = 1 + data[0] % size;
    tw_ws ws;
    if (tw_ws_init(&ws, MAX_MESSAGE, &cbs, NULL) != 0) return 0;
    if (tw_ws_feed(&ws, data + 1, split - 1) == 0 && !tw_ws_finished(&ws))
        (void)tw_ws_feed(&ws, data + split, size - split);
    if (!tw_ws_closing(&ws)) tw_ws_close(&ws, 1000, "bye");
    tw_ws_free(&ws);
    return 0;
}
