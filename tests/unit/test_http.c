/* Unit tests: HTTP request reading, the WebSocket upgrade check, frame headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "http.h"

static const char *const protos[] = {"tidewire.v1.json", "tidewire.v1.msgpack"};

static const char good_upgrade[] = "GET /ws?token=abc HTTP/1.1\r\n"
                                   "Host: localhost\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Sec-WebSocket-Protocol: chat, tidewire.v1.msgpack\r\n"
                                   "\r\n";

static int feed_all(tw_http_reader *r, const char *s, size_t len, size_t *used)
{
    return tw_http_feed(r, s, len, used);
}

static void test_accept_key_rfc6455(void **state)
{
    char accept[29];
    tw_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_upgrade_ok_and_trailing_frame_bytes_kept(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    char buf[512];
    size_t hl = strlen(good_upgrade);
    memcpy(buf, good_upgrade, hl);
    memcpy(buf + hl, "\x81\x85", 2); /* the first WebSocket frame arrived with the head */
    size_t used = 0;
    assert_int_equal(feed_all(&r, buf, hl + 2, &used), TW_HTTP_UPGRADE);
    assert_int_equal(used, hl);
    assert_string_equal(r.req.path, "/ws");
    assert_string_equal(r.req.query, "token=abc");
    char accept[29];
    int proto = -2;
    assert_int_equal(tw_ws_check_upgrade(&r.req, protos, 2, accept, &proto), 0);
    assert_int_equal(proto, 1);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    tw_http_reader_free(&r);
}

/* Replaces one header line of the good request and returns the check's result. */
static int check_variant(const char *find, const char *replace)
{
    char req[1024];
    const char *at = strstr(good_upgrade, find);
    assert_non_null(at);
    size_t pre = (size_t)(at - good_upgrade);
    snprintf(req, sizeof req, "%.*s%s%s", (int)pre, good_upgrade, replace, at + strlen(find));
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    size_t used;
    int res = feed_all(&r, req, strlen(req), &used);
    int status;
    if (res == TW_HTTP_ERROR) {
        status = r.status;
    } else {
        char accept[29];
        int proto;
        status = tw_ws_check_upgrade(&r.req, protos, 2, accept, &proto);
    }
    tw_http_reader_free(&r);
    return status;
}

static void test_upgrade_refusals(void **state)
{
    assert_int_equal(check_variant("GET ", "POST "), 400);
    assert_int_equal(check_variant("Upgrade: websocket\r\n", "Upgrade: h2c\r\n"), 426);
    assert_int_equal(check_variant("Upgrade: websocket\r\n", ""), 426);
    assert_int_equal(check_variant("Connection: keep-alive, Upgrade\r\n", "Connection: close\r\n"),
                     400);
    assert_int_equal(check_variant("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426);
    assert_int_equal(check_variant("Sec-WebSocket-Version: 13\r\n", ""), 426);
    assert_int_equal(check_variant("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400);
    /* Decodes to 15 bytes, not 16. */
    assert_int_equal(check_variant("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"), 400);
    /* Right length but non-zero trailing bits. */
    assert_int_equal(check_variant("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="), 400);
    assert_int_equal(check_variant("chat, tidewire.v1.msgpack", "chat, mqtt"), 400);
    assert_int_equal(check_variant("HTTP/1.1", "HTTP/1.0"), 400); /* RFC 6455 4.1: 1.1 at least */
}

static void test_no_protocol_offered_means_json(void **state)
{
    char accept[29];
    int proto = 5;
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    const char *req = "GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    size_t used;
    assert_int_equal(feed_all(&r, req, strlen(req), &used), TW_HTTP_UPGRADE);
    assert_int_equal(tw_ws_check_upgrade(&r.req, protos, 2, accept, &proto), 0);
    assert_int_equal(proto, -1);
    tw_http_reader_free(&r);
}

static void test_header_cap_gives_431(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 512, 1024);
    char req[2048];
    int n = snprintf(req, sizeof req, "GET /stats HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', 1000);
    strcpy(req + n + 1000, "\r\n\r\n");
    size_t used;
    assert_int_equal(feed_all(&r, req, strlen(req), &used), TW_HTTP_ERROR);
    assert_int_equal(r.status, 431);
    tw_http_reader_free(&r);
}

static void test_body_cap_gives_413(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 16);
    const char *req = "POST /api/publish HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
    size_t used;
    assert_int_equal(feed_all(&r, req, strlen(req), &used), TW_HTTP_ERROR);
    assert_int_equal(r.status, 413);
    tw_http_reader_free(&r);

    /* Chunked: no length up front, the cap holds while reading. */
    tw_http_reader_init(&r, 8192, 16);
    const char *chunked = "POST /api/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n";
    assert_int_equal(feed_all(&r, chunked, strlen(chunked), &used), TW_HTTP_ERROR);
    assert_int_equal(r.status, 413);
    tw_http_reader_free(&r);
}

static void test_garbage_is_400(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    /* A TLS ClientHello on the plain port. */
    const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    size_t used;
    assert_int_equal(feed_all(&r, hello, sizeof hello - 1, &used), TW_HTTP_ERROR);
    assert_int_equal(r.status, 400);
    tw_http_reader_free(&r);
}

static void test_pipelined_requests_split_at_boundary(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    const char *two = "POST /api/publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                      "GET /healthz HTTP/1.1\r\n\r\n";
    size_t len = strlen(two), used;
    assert_int_equal(feed_all(&r, two, len, &used), TW_HTTP_COMPLETE);
    assert_int_equal(r.req.method, HTTP_POST);
    assert_int_equal(r.req.body.len, 5);
    assert_memory_equal(tw_buf_data(&r.req.body), "hello", 5);
    assert_true(r.req.keep_alive);
    tw_http_reader_reset(&r);
    size_t used2;
    assert_int_equal(feed_all(&r, two + used, len - used, &used2), TW_HTTP_COMPLETE);
    assert_int_equal(used + used2, len);
    assert_string_equal(r.req.path, "/healthz");
    tw_http_reader_free(&r);
}

static void test_byte_at_a_time(void **state)
{
    tw_http_reader r;
    tw_http_reader_init(&r, 8192, 1024);
    size_t len = strlen(good_upgrade);
    int res = TW_HTTP_NEED_MORE;
    for (size_t i = 0; i < len; i++) {
        size_t used;
        res = feed_all(&r, good_upgrade + i, 1, &used);
        assert_int_equal(used, 1);
        if (i + 1 < len) assert_int_equal(res, TW_HTTP_NEED_MORE);
    }
    assert_int_equal(res, TW_HTTP_UPGRADE);
    assert_string_equal(r.req.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
    tw_http_reader_free(&r);
}

static void test_query_param(void **state)
{
    char v[64];
    assert_int_equal(tw_http_query_param("channel=a%3Ab&since=%7B%7D&limit=10", "channel", v, sizeof v), 3);
    assert_string_equal(v, "a:b");
    assert_int_equal(tw_http_query_param("channel=a%3Ab&since=%7B%7D", "since", v, sizeof v), 2);
    assert_string_equal(v, "{}");
    assert_int_equal(tw_http_query_param("x=1", "channel", v, sizeof v), -1);
    assert_int_equal(tw_http_query_param("channel=%zz", "channel", v, sizeof v), -1);
    assert_int_equal(tw_http_query_param("channelx=1", "channel", v, sizeof v), -1);
}

static void test_frame_headers(void **state)
{
    uint8_t h[10];
    assert_int_equal(tw_ws_frame_header(h, TW_WS_OP_TEXT, 125), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 125);
    assert_int_equal(tw_ws_frame_header(h, TW_WS_OP_BINARY, 126), 4);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2], 0);
    assert_int_equal(h[3], 126);
    assert_int_equal(tw_ws_frame_header(h, TW_WS_OP_TEXT, 65536), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1);
    assert_int_equal(h[8], 0);
}

static void test_frame_ws_shares_one_allocation(void **state)
{
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_buf_append_str(&b, "{\"op\":\"pong\"}"), 0);
    tw_frame *f = tw_frame_ws(&b, TW_WS_OP_TEXT);
    assert_non_null(f);
    assert_null(b.base); /* the frame took the storage: no copy */
    assert_int_equal(f->len, 2 + 13);
    assert_int_equal(f->data[0], 0x81);
    assert_int_equal(f->data[1], 13);
    assert_memory_equal(f->data + 2, "{\"op\":\"pong\"}", 13);
    tw_frame_ref(f);
    tw_frame_unref(f);
    assert_int_equal(f->refs, 1);
    tw_frame_unref(f);
    tw_buf_free(&b);
}

static void test_event_frame_encoded_once(void **state)
{
    char *ch = strdup("vessel:42");
    uint8_t *data = (uint8_t *)strdup("{\"lat\":59.9}");
    tw_event *ev = tw_event_new("n1.00000001", 7, 7, 1700000000000, ch, 9, TW_ENC_JSON, data, 12);
    assert_non_null(ev);
    tw_frame *a = tw_event_frame(ev, TW_ENC_JSON);
    tw_frame *b = tw_event_frame(ev, TW_ENC_JSON);
    assert_ptr_equal(a, b);
    const char *want = "{\"op\":\"event\",\"channel\":\"vessel:42\",\"pos\":\"n1.00000001:7\","
                       "\"ts\":1700000000000,\"data\":{\"lat\":59.9}}";
    assert_int_equal(a->len, 2 + strlen(want));
    assert_memory_equal(a->data + 2, want, strlen(want));
    tw_frame *m = tw_event_frame(ev, TW_ENC_MSGPACK);
    assert_non_null(m);
    assert_ptr_not_equal(m, a);
    assert_int_equal(m->data[0], 0x82);
    tw_event_unref(ev);
}

/* An event frame is one allocation of the exact size: the tw_frame, then the header, then
 * the message, with channel names that need escapes (JSON) and str8 heads (MessagePack). */
static void test_frame_event_one_exact_allocation(void **state)
{
    char ch[200];
    memset(ch, '"', sizeof ch);
    const struct {
        const char *s;
        size_t n;
    } chans[] = {{"c", 1}, {"a\\b\"c\n", 6}, {ch, 40}, {ch, 200}};
    const uint8_t jd[] = "{\"lat\":59.9}", md[] = "\x81\xa3lat\xc3";
    for (int enc = TW_ENC_JSON; enc <= TW_ENC_MSGPACK; enc++) {
        const uint8_t *data = enc == TW_ENC_JSON ? jd : md;
        size_t dl = enc == TW_ENC_JSON ? sizeof jd - 1 : sizeof md - 1;
        for (size_t i = 0; i < sizeof chans / sizeof chans[0]; i++) {
            size_t n = tw_proto_event_len((tw_encoding)enc, chans[i].s, chans[i].n, "n1.5f2c09ab",
                                          1234567, -5, dl);
            uint8_t hdr[10];
            size_t hl = tw_ws_frame_header(hdr, tw_ws_opcode_for((tw_encoding)enc), n);
            tw_frame *f = tw_frame_event((tw_encoding)enc, chans[i].s, chans[i].n, "n1.5f2c09ab",
                                         1234567, -5, (tw_encoding)enc, data, dl);
            assert_non_null(f);
            assert_null(f->base);                          /* its own allocation */
            assert_ptr_equal(f->data, (uint8_t *)(f + 1)); /* header right after the struct */
            assert_int_equal(f->len, hl + n);              /* message to the allocation's end */
            assert_memory_equal(f->data, hdr, hl);
            size_t tail = enc == TW_ENC_JSON ? 1 : 0; /* JSON's closing brace */
            assert_memory_equal(f->data + f->len - tail - dl, data, dl);
            tw_buf b;
            tw_buf_init(&b, 0);
            assert_int_equal(tw_proto_encode_event(&b, (tw_encoding)enc, chans[i].s, chans[i].n,
                                                   "n1.5f2c09ab", 1234567, -5, (tw_encoding)enc,
                                                   data, dl),
                             0);
            assert_int_equal(b.len, n);
            assert_memory_equal(f->data + hl, tw_buf_data(&b), n);
            tw_buf_free(&b);
            tw_frame_unref(f);
        }
    }
    /* converted data may outgrow the estimate: the frame grows, still one allocation */
    const char *big = "[1e300,2e300,3e300,4e300,5e300,6e300,7e300,8e300]";
    tw_frame *f = tw_frame_event(TW_ENC_MSGPACK, "c", 1, "a.1", 1, 1, TW_ENC_JSON,
                                 (const uint8_t *)big, strlen(big));
    assert_non_null(f);
    assert_null(f->base);
    assert_int_equal(f->data[0], 0x82);
    tw_frame_unref(f);
    const uint8_t mp_bin[] = "\xc4\x40"
                             "0123456789012345678901234567890123456789012345678901234567890123";
    f = tw_frame_event(TW_ENC_JSON, "c", 1, "a.1", 1, 1, TW_ENC_MSGPACK, mp_bin, sizeof mp_bin - 1);
    assert_non_null(f);
    assert_int_equal(f->data[0], 0x81);
    assert_true(f->len > 2 + 66 * 4 / 3);
    assert_memory_equal(f->data + f->len - 3, "\"}}", 3);
    tw_frame_unref(f);
    /* data that cannot be converted: nothing */
    assert_null(tw_frame_event(TW_ENC_JSON, "c", 1, "a.1", 1, 1, TW_ENC_MSGPACK,
                               (const uint8_t *)"\x92\x01", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc6455),
        cmocka_unit_test(test_upgrade_ok_and_trailing_frame_bytes_kept),
        cmocka_unit_test(test_upgrade_refusals),
        cmocka_unit_test(test_no_protocol_offered_means_json),
        cmocka_unit_test(test_header_cap_gives_431),
        cmocka_unit_test(test_body_cap_gives_413),
        cmocka_unit_test(test_garbage_is_400),
        cmocka_unit_test(test_pipelined_requests_split_at_boundary),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_frame_headers),
        cmocka_unit_test(test_frame_ws_shares_one_allocation),
        cmocka_unit_test(test_frame_event_one_exact_allocation),
        cmocka_unit_test(test_event_frame_encoded_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
