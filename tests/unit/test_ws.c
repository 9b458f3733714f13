/*
 * test_ws.c — broker/ws.c: the server's WebSocket session, scripted frame by frame:
 * messages whole and fragmented, fed in one piece and byte by byte, every refusal with its
 * close code, and the control frames it writes, byte for byte (tests/fuzz/fuzz_ws_diff.c
 * compares all of it with wslay's event layer).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws.h"

typedef struct rec {
    int messages, activity, last_op, outputs;
    uint8_t msg[4096];
    size_t msg_len;
    uint8_t out[1024];
    size_t out_len;
} rec;

static void on_message(void *arg, int opcode, const uint8_t *data, size_t len)
{
    rec *r = arg;
    r->messages++;
    r->last_op = opcode;
    assert_true(len <= sizeof r->msg);
    if (len) memcpy(r->msg, data, len);
    r->msg_len = len;
}

static void output(void *arg, const uint8_t *data, size_t len)
{
    rec *r = arg;
    /* one whole unmasked control frame per call */
    assert_true(len >= 2 && (data[0] & 0xf8) == 0x88 && len == 2u + data[1]);
    r->outputs++;
    assert_true(r->out_len + len <= sizeof r->out);
    memcpy(r->out + r->out_len, data, len);
    r->out_len += len;
}

static void on_activity(void *arg)
{
    ((rec *)arg)->activity++;
}

static const tw_ws_callbacks cbs = {
    .on_message = on_message, .output = output, .on_activity = on_activity};

/* Appends one client frame (masked unless `unmasked`) to f. */
static size_t frame(uint8_t *f, int b0, const void *payload, size_t n, int unmasked)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 0;
    f[h++] = (uint8_t)b0;
    uint8_t m = unmasked ? 0 : 0x80;
    if (n < 126) {
        f[h++] = (uint8_t)(m | n);
    } else {
        f[h++] = (uint8_t)(m | 126);
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    }
    if (!unmasked) {
        memcpy(f + h, key, 4);
        h += 4;
    }
    for (size_t i = 0; i < n; i++)
        f[h + i] = ((const uint8_t *)payload)[i] ^ (unmasked ? 0 : key[i % 4]);
    return h + n;
}

/* The close code of the close frame written (0: none written, -1: empty close frame). */
static int close_code(const rec *r)
{
    for (size_t i = 0; i + 1 < r->out_len;) {
        size_t n = r->out[i + 1] & 0x7f;
        if ((r->out[i] & 0x0f) == 8) return n >= 2 ? (r->out[i + 2] << 8 | r->out[i + 3]) : -1;
        i += 2 + n;
    }
    return 0;
}

/* Feeds `in` whole and byte by byte: both must end the same way. */
static int run(const uint8_t *in, size_t n, uint64_t max, rec *out)
{
    int rc[2];
    rec r[2];
    for (int k = 0; k < 2; k++) {
        tw_ws ws;
        memset(&r[k], 0, sizeof r[k]);
        assert_int_equal(tw_ws_init(&ws, max, &cbs, &r[k]), 0);
        if (k == 0) {
            rc[k] = tw_ws_feed(&ws, in, n);
        } else {
            rc[k] = 0;
            for (size_t i = 0; i < n && !rc[k] && !tw_ws_finished(&ws); i++)
                rc[k] = tw_ws_feed(&ws, in + i, 1);
        }
        r[k].last_op = r[k].last_op * 16 + tw_ws_closing(&ws) * 4 + tw_ws_close_received(&ws) * 2 +
                       tw_ws_finished(&ws);
        tw_ws_free(&ws);
    }
    assert_int_equal(rc[0], rc[1]);
    assert_int_equal(r[0].messages, r[1].messages);
    assert_int_equal(r[0].activity, r[1].activity);
    assert_int_equal(r[0].last_op, r[1].last_op);
    assert_int_equal(r[0].msg_len, r[1].msg_len);
    assert_memory_equal(r[0].msg, r[1].msg, r[0].msg_len);
    assert_int_equal(r[0].out_len, r[1].out_len);
    assert_memory_equal(r[0].out, r[1].out, r[0].out_len);
    assert_int_equal(r[0].outputs, r[1].outputs);
    *out = r[0];
    return rc[0];
}

static void test_messages(void **state)
{
    uint8_t in[2048];
    rec r;
    size_t n = frame(in, 0x81, "hello", 5, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(r.messages, 1);
    assert_int_equal(r.msg_len, 5);
    assert_memory_equal(r.msg, "hello", 5);
    assert_int_equal(r.out_len, 0);

    /* fragmented, a ping between the fragments, a character split between them */
    n = frame(in, 0x01, "{\"a\":\"\xc3", 7, 0);
    n += frame(in + n, 0x89, "p!", 2, 0);
    n += frame(in + n, 0x80, "\xa9\"}", 3, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(r.messages, 1);
    assert_int_equal(r.msg_len, 10);
    assert_memory_equal(r.msg, "{\"a\":\"\xc3\xa9\"}", 10);
    assert_int_equal(r.activity, 2);
    assert_int_equal(r.out_len, 4); /* the pong */
    assert_memory_equal(r.out, "\x8a\x02p!", 4);

    /* a 16-bit length, binary with bytes that are not UTF-8, an empty text */
    uint8_t big[300];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 0x80);
    n = frame(in, 0x82, big, sizeof big, 0);
    n += frame(in + n, 0x81, "", 0, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(r.messages, 2);
    assert_int_equal(r.msg_len, 0);

    /* a clean close: echoed with its code and reason */
    n = frame(in, 0x88,
              "\x03\xe8"
              "bye",
              5, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(close_code(&r), 1000);
    assert_memory_equal(r.out,
                        "\x88\x05\x03\xe8"
                        "bye",
                        7);
    assert_int_equal(r.last_op & 7, 7); /* closing, close received, finished */
    /* a 1-byte close payload: an empty close back, as wslay did */
    n = frame(in, 0x88, "\x03", 1, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(close_code(&r), -1);
}

static void test_refusals(void **state)
{
    uint8_t in[2048];
    rec r;
    size_t n;
    static const struct {
        int b0;
        const char *payload;
        size_t len;
        int unmasked, code;
    } one[] = {
        {0x81, "x", 1, 1, 1002},            /* unmasked */
        {0xc1, "x", 1, 0, 1002},            /* RSV1 */
        {0x80, "x", 1, 0, 1002},            /* continuation without a message */
        {0x83, "x", 1, 0, 1002},            /* unknown opcode */
        {0x8b, "x", 1, 0, 1002},            /* unknown control opcode */
        {0x81, "a\xc0\xaf", 3, 0, 1007},    /* overlong */
        {0x81, "\xed\xa0\x80", 3, 0, 1007}, /* surrogate */
        {0x81, "\xe2\x82", 2, 0, 1007},     /* ends inside a character */
        {0x88, "\x03\xed", 2, 0, 1002},     /* close code 1005 */
        {0x88, "\x03\xe8\xff", 3, 0, 1007}, /* close reason not UTF-8 */
        {0x88, "\x00\x00", 2, 0, 1002},     /* close code 0 */
    };
    for (size_t i = 0; i < sizeof one / sizeof *one; i++) {
        n = frame(in, one[i].b0, one[i].payload, one[i].len, one[i].unmasked);
        n += frame(in + n, 0x81, "after", 5, 0); /* never read */
        assert_int_equal(run(in, n, 1024, &r), 0);
        assert_int_equal(r.messages, 0);
        if (close_code(&r) != one[i].code) {
            print_error("case %zu: close %d, want %d\n", i, close_code(&r), one[i].code);
            fail();
        }
    }
    /* a new message inside a fragmented one */
    n = frame(in, 0x01, "a", 1, 0);
    n += frame(in + n, 0x81, "b", 1, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(close_code(&r), 1002);
    /* over the size limit, counting the fragments before */
    n = frame(in, 0x01, "12345678", 8, 0);
    n += frame(in + n, 0x80, "9", 1, 0);
    assert_int_equal(run(in, n, 8, &r), 0);
    assert_int_equal(close_code(&r), 1009);
    assert_int_equal(r.messages, 0);
    /* malformed headers: an empty close, and the feed fails */
    static const uint8_t bad[][12] = {
        {0x09, 0x80},                               /* ping without FIN */
        {0x89, 0xfe, 0x00, 0x7e},                   /* ping over 125 bytes */
        {0x81, 0xfe, 0x00, 0x10},                   /* 16-bit length below 126 */
        {0x81, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, /* 64-bit length below 65536 */
        {0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0},    /* 64-bit length, top bit set */
    };
    static const size_t bad_len[] = {2, 4, 4, 10, 10};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(run(bad[i], bad_len[i], 1024, &r), -1);
        assert_int_equal(close_code(&r), -1);
    }
}

static void test_after_close_sent(void **state)
{
    uint8_t in[256];
    rec r;
    memset(&r, 0, sizeof r);
    tw_ws ws;
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    tw_ws_close(&ws, 4208, "slow");
    assert_int_equal(close_code(&r), 4208);
    assert_true(tw_ws_closing(&ws));
    assert_false(tw_ws_finished(&ws)); /* still reading: the client's close is awaited */
    size_t n = frame(in, 0x81, "late", 4, 0);
    n += frame(in + n, 0x88, "\x0f\xa0", 2, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    assert_int_equal(r.messages, 0); /* dropped: we had sent a close */
    assert_true(tw_ws_close_received(&ws));
    assert_true(tw_ws_finished(&ws));
    tw_ws_free(&ws);
}

/* What the session wrote must be exactly `want` (n bytes). */
static void wrote(const rec *r, const void *want, size_t n)
{
    assert_int_equal(r->out_len, n);
    if (n) assert_memory_equal(r->out, want, n);
}

static void test_pongs(void **state)
{
    uint8_t in[2048], p[125];
    rec r;
    for (size_t i = 0; i < sizeof p; i++)
        p[i] = (uint8_t)(i * 13 + 1);
    /* an empty ping, then the longest one: each pong carries the ping's payload */
    size_t n = frame(in, 0x89, "", 0, 0);
    n += frame(in + n, 0x89, p, sizeof p, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    uint8_t want[2 + 2 + sizeof p] = {0x8a, 0x00, 0x8a, 0x7d};
    memcpy(want + 4, p, sizeof p);
    wrote(&r, want, sizeof want);
    assert_int_equal(r.outputs, 2);
    assert_int_equal(r.activity, 2);
    assert_int_equal(r.last_op & 7, 0);

    /* pings between the fragments of a message, and after it */
    n = frame(in, 0x02, "ab", 2, 0);
    n += frame(in + n, 0x89, "1", 1, 0);
    n += frame(in + n, 0x00, "cd", 2, 0);
    n += frame(in + n, 0x89, "22", 2, 0);
    n += frame(in + n, 0x80, "ef", 2, 0);
    n += frame(in + n, 0x89, "333", 3, 0);
    n += frame(in + n, 0x8a, "unsolicited", 11, 0); /* a pong is not answered */
    assert_int_equal(run(in, n, 1024, &r), 0);
    assert_int_equal(r.messages, 1);
    assert_int_equal(r.last_op >> 4, 2);
    assert_int_equal(r.msg_len, 6);
    assert_memory_equal(r.msg, "abcdef", 6);
    wrote(&r,
          "\x8a\x01"
          "1"
          "\x8a\x02"
          "22"
          "\x8a\x03"
          "333",
          12);
}

static void test_close_echo(void **state)
{
    uint8_t in[2048], reason[123];
    rec r;
    /* no payload, or one byte: an empty close back (wslay: no status code to echo) */
    size_t n = frame(in, 0x88, "", 0, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    wrote(&r, "\x88\x00", 2);
    assert_int_equal(r.last_op & 7, 7);
    n = frame(in, 0x88, "\x03", 1, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    wrote(&r, "\x88\x00", 2);
    /* a code alone: the code back */
    n = frame(in, 0x88, "\x0f\xa0", 2, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    wrote(&r, "\x88\x02\x0f\xa0", 4);
    /* the longest reason (123 bytes), echoed whole; nothing read after the close */
    memset(reason, 'r', sizeof reason);
    uint8_t payload[2 + sizeof reason] = {0x03, 0xf3}; /* 1011 */
    memcpy(payload + 2, reason, sizeof reason);
    n = frame(in, 0x88, payload, sizeof payload, 0);
    n += frame(in + n, 0x89, "x", 1, 0); /* after the close: not read, no pong */
    n += frame(in + n, 0x81, "late", 4, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    uint8_t want[2 + sizeof payload] = {0x88, 0x7d};
    memcpy(want + 2, payload, sizeof payload);
    wrote(&r, want, sizeof want);
    assert_int_equal(r.messages, 0);
    assert_int_equal(r.activity, 1);
    assert_int_equal(r.outputs, 1);
    assert_int_equal(r.last_op & 7, 7);
    /* a ping read before the close, or before a refused frame, in the same read: answered
     * first (RFC 6455 5.5.2; wslay dropped that pong, see ws.c) */
    n = frame(in, 0x89, "hi", 2, 0);
    n += frame(in + n, 0x88, "\x03\xe8", 2, 0);
    assert_int_equal(run(in, n, 1024, &r), 0);
    wrote(&r,
          "\x8a\x02"
          "hi"
          "\x88\x02\x03\xe8",
          8);
    n = frame(in, 0x89, "hi", 2, 0);
    n += frame(in + n, 0x81, "x", 1, 1); /* unmasked */
    assert_int_equal(run(in, n, 1024, &r), 0);
    wrote(&r,
          "\x8a\x02"
          "hi"
          "\x88\x02\x03\xea",
          8);
}

static void test_close_sent(void **state)
{
    rec r;
    tw_ws ws;
    uint8_t in[256];
    char long_reason[125];
    memset(long_reason, 'x', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = 0;

    /* a ping on the timer; a close with a reason; nothing after it */
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    tw_ws_ping(&ws);
    wrote(&r, "\x89\x00", 2);
    tw_ws_close(&ws, 4208, "slow consumer");
    wrote(&r,
          "\x89\x00"
          "\x88\x0f\x10\x70"
          "slow consumer",
          19);
    assert_true(tw_ws_closing(&ws));
    assert_false(tw_ws_close_received(&ws));
    assert_false(tw_ws_finished(&ws));
    tw_ws_close(&ws, 1000, "again"); /* idempotent */
    tw_ws_ping(&ws);                 /* no ping after the close */
    size_t n = frame(in, 0x89, "p", 1, 0);
    n += frame(in + n, 0x81, "late", 4, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    assert_int_equal(r.messages, 0);       /* dropped: we had sent a close */
    assert_int_equal(r.out_len, 19);       /* no pong either */
    n = frame(in, 0x88, "\x03\xe8", 2, 0); /* the client's answer: not echoed */
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    assert_int_equal(r.out_len, 19);
    assert_int_equal(r.outputs, 2);
    assert_true(tw_ws_close_received(&ws));
    assert_true(tw_ws_finished(&ws));
    tw_ws_free(&ws);

    /* a code without a reason; code 0: an empty close, the reason dropped */
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    tw_ws_close(&ws, 1001, NULL);
    wrote(&r, "\x88\x02\x03\xe9", 4);
    tw_ws_free(&ws);
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    tw_ws_close(&ws, 0, "ignored");
    wrote(&r, "\x88\x00", 2);
    assert_true(tw_ws_closing(&ws));
    tw_ws_close(&ws, 1000, NULL);
    wrote(&r, "\x88\x00", 2);
    tw_ws_free(&ws);

    /* a reason over 123 bytes: no close frame (as wslay), though the session is closing;
     * the client's close is still echoed */
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    tw_ws_close(&ws, 1000, long_reason);
    wrote(&r, NULL, 0);
    assert_true(tw_ws_closing(&ws));
    tw_ws_ping(&ws);
    wrote(&r, "\x89\x00", 2);
    n = frame(in, 0x88, "\x03\xe8", 2, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    wrote(&r, "\x89\x00\x88\x02\x03\xe8", 6);
    assert_true(tw_ws_finished(&ws));
    tw_ws_free(&ws);
}

/* A close from inside the output callback (the owner closing on a full queue) comes after
 * the frame being written, whole, and is the last. */
static tw_ws *closing_ws;

static void close_on_output(void *arg, const uint8_t *data, size_t len)
{
    output(arg, data, len);
    tw_ws_close(closing_ws, 1011, "full");
}

static void test_close_from_output(void **state)
{
    static const tw_ws_callbacks ccbs = {
        .on_message = on_message, .output = close_on_output, .on_activity = on_activity};
    rec r;
    tw_ws ws;
    uint8_t in[64];
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &ccbs, &r), 0);
    closing_ws = &ws;
    size_t n = frame(in, 0x89, "hi", 2, 0);
    n += frame(in + n, 0x89, "again", 5, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    wrote(&r,
          "\x8a\x02"
          "hi"
          "\x88\x06\x03\xf3"
          "full",
          12);
    assert_true(tw_ws_closing(&ws));
    tw_ws_free(&ws);
}

/* Between reads an idle session holds no buffer; an open message keeps its own. */
static void test_idle_buffer(void **state)
{
    rec r;
    tw_ws ws;
    uint8_t in[256];
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_ws_init(&ws, 1024, &cbs, &r), 0);
    assert_null(ws.msg);
    size_t n = frame(in, 0x81, "whole", 5, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    assert_int_equal(r.messages, 1);
    assert_null(ws.msg);
    /* a fragment, then a ping cut in two: kept across reads */
    n = frame(in, 0x01, "fir", 3, 0);
    size_t ping = frame(in + n, 0x89, "pq", 2, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n + ping - 1), 0);
    assert_non_null(ws.msg);
    assert_int_equal(tw_ws_feed(&ws, in + n + ping - 1, 1), 0);
    wrote(&r, "\x8a\x02pq", 4);
    assert_non_null(ws.msg); /* the message is still open */
    n = frame(in, 0x80, "st", 2, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n), 0);
    assert_int_equal(r.messages, 2);
    assert_int_equal(r.msg_len, 5);
    assert_memory_equal(r.msg, "first", 5);
    assert_null(ws.msg);
    /* a control frame cut in two outside a message */
    n = frame(in, 0x89, "abc", 3, 0);
    assert_int_equal(tw_ws_feed(&ws, in, n - 2), 0);
    assert_non_null(ws.msg);
    assert_int_equal(tw_ws_feed(&ws, in + n - 2, 2), 0);
    assert_null(ws.msg);
    wrote(&r,
          "\x8a\x02pq\x8a\x03"
          "abc",
          9);
    tw_ws_free(&ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_after_close_sent),
        cmocka_unit_test(test_pongs),
        cmocka_unit_test(test_close_echo),
        cmocka_unit_test(test_close_sent),
        cmocka_unit_test(test_close_from_output),
        cmocka_unit_test(test_idle_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
