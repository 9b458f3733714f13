/*
 * fuzz_http.c — libFuzzer driver for the HTTP request reader and the WebSocket upgrade
 * check: arbitrary bytes, split at a fuzzer-chosen point, possibly several pipelined
 * requests. Checks the reader never consumes more than it was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const char *const protos[] = {"tidewire.v1.json", "tidewire.v1.msgpack"};

static void feed(tw_http_reader *r, const char *p, size_t n, int *stop)
{
    while (n > 0 && !*stop) {
        size_t used = 0;
        int res = tw_http_feed(r, p, n, &used);
        if (used > n) abort();
        p += used;
        n -= used;
        if (res == TW_HTTP_NEED_MORE) return;
        if (res == TW_HTTP_ERROR || res == TW_HTTP_UPGRADE) {
            if (res == TW_HTTP_UPGRADE) {
                char accept[29];
                int proto;
                (void)tw_ws_check_upgrade(&r->req, protos, 2, accept, &proto);
            }
            *stop = 1;
            return;
        }
        char v[256];
        (void)tw_http_query_param(r->req.query, "channel", v, sizeof v);
        tw_http_reader_reset(r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t split = data[0] % (size);
    tw_http_reader r;
    tw_http_reader_init(&r, 4096, 4096);
    int stop = 0;
    feed(&r, (const char *)data + 1, split > 0 ? split - 1 : 0, &stop);
    if (split > 0 && !stop) feed(&r, (const char *)data + split, size - split, &stop);
    tw_http_reader_free(&r);
    return 0;
}
