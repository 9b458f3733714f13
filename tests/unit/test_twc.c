/*
 * Unit tests of the C client's pure parts: URL parsing, the opening handshake, frames,
 * JSON scanning, positions and cursors (merge, dedup, save/load), the reconnect policy,
 * and the CLI's latency histogram.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "twc_int.h"

/* The histogram is private to tidewire-cli; test it from its source. */
#include "../../client-sdk/c/hist.c"

/* ---- URL ----------------------------------------------------------------------------------- */

static void test_url_good(void **state)
{
    twc__url u;
    char hp[300];
    assert_int_equal(twc__url_parse("ws://127.0.0.1:8080/ws", "/ws", &u), 0);
    assert_string_equal(u.scheme, "ws");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.path, "/ws");
    assert_false(u.secure);
    twc__url_hostport(&u, hp, sizeof hp);
    assert_string_equal(hp, "127.0.0.1:8080");

    assert_int_equal(twc__url_parse("WS://Example.COM", "/ws", &u), 0);
    assert_string_equal(u.scheme, "ws");
    assert_string_equal(u.host, "Example.COM");
    assert_int_equal(u.port, 80);
    assert_string_equal(u.path, "/ws");
    twc__url_hostport(&u, hp, sizeof hp);
    assert_string_equal(hp, "Example.COM");

    assert_int_equal(twc__url_parse("ws://[::1]:9000/a/b?x=1&y=2", "/ws", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_true(u.ipv6);
    assert_int_equal(u.port, 9000);
    assert_string_equal(u.path, "/a/b?x=1&y=2");
    twc__url_hostport(&u, hp, sizeof hp);
    assert_string_equal(hp, "[::1]:9000");

    assert_int_equal(twc__url_parse("wss://h.example", "/ws", &u), 0);
    assert_true(u.secure);
    assert_int_equal(u.port, 443);

    assert_int_equal(twc__url_parse("ws://h:1?q", "/ws", &u), 0);
    assert_string_equal(u.path, "/ws?q");

    assert_int_equal(twc__url_parse("http://localhost:8080", "/", &u), 0);
    assert_string_equal(u.scheme, "http");
    assert_string_equal(u.path, "/");
    assert_int_equal(twc__url_parse("ws://h:65535/", "/ws", &u), 0);
    assert_int_equal(u.port, 65535);
    assert_string_equal(u.path, "/");
}

static void test_url_bad(void **state)
{
    static const char *bad[] = {
        NULL,         "",          "127.0.0.1:8080", "ftp://h/",      "ws:/h",
        "ws://",      "ws://:80/", "ws://h:/",       "ws://h:0/",     "ws://h:65536/",
        "ws://h:8x/", "ws://u@h/", "ws://u:p@h/",    "ws://h/p#frag", "ws://h/a b",
        "ws://[::1/", "ws://[]/",  "ws://[zz]/",     "ws://h\x01/",   "ws://h/\x7f",
        "ws://h:-1/", "://h/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        twc__url u;
        if (twc__url_parse(bad[i], "/ws", &u) != TWC_E_URL)
            fail_msg("accepted bad URL #%zu: %s", i, bad[i] ? bad[i] : "(null)");
    }
}

/* ---- handshake ------------------------------------------------------------------------------ */

static void test_ws_accept(void **state)
{
    char acc[29];
    /* RFC 6455 section 1.3 (the value printed there; checked with openssl sha1 | base64). */
    assert_int_equal(twc__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    uint8_t key[16];
    memcpy(key, "the sample nonce", 16);
    char b64[25];
    twc__ws_key_encode(key, b64);
    assert_string_equal(b64, "dGhlIHNhbXBsZSBub25jZQ==");
}

static void test_hs_request(void **state)
{
    twc__url u;
    twc__buf b = {0};
    assert_int_equal(twc__url_parse("ws://127.0.0.1:19000/ws", "/ws", &u), 0);
    assert_int_equal(twc__hs_request(&b, &u, "dGhlIHNhbXBsZSBub25jZQ=="), 0);
    b.p[b.len] = '\0';
    assert_non_null(strstr(b.p, "GET /ws HTTP/1.1\r\n"));
    assert_non_null(strstr(b.p, "\r\nHost: 127.0.0.1:19000\r\n"));
    assert_non_null(strstr(b.p, "\r\nUpgrade: websocket\r\n"));
    assert_non_null(strstr(b.p, "\r\nConnection: Upgrade\r\n"));
    assert_non_null(strstr(b.p, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    assert_non_null(strstr(b.p, "\r\nSec-WebSocket-Version: 13\r\n"));
    assert_non_null(strstr(b.p, "\r\nSec-WebSocket-Protocol: tidewire.v1.json\r\n"));
    assert_int_equal(memcmp(b.p + b.len - 4, "\r\n\r\n", 4), 0);
    twc__buf_free(&b);
}

#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static int hs(const char *resp, int *status, char *err)
{
    return twc__hs_parse(resp, strlen(resp), ACCEPT, status, err, 160);
}

static void test_hs_parse_good(void **state)
{
    int status;
    char err[160];
    const char *r = "HTTP/1.1 101 Switching Protocols\r\n"
                    "upgrade: WebSocket\r\n"
                    "Connection: keep-alive, Upgrade\r\n"
                    "Sec-WebSocket-Accept:   " ACCEPT "  \r\n"
                    "Sec-WebSocket-Protocol: tidewire.v1.json\r\n"
                    "Server: x\r\n"
                    "\r\n";
    assert_int_equal(hs(r, &status, err), (int)strlen(r));
    assert_int_equal(status, 101);

    /* Frames right behind the head are not part of it. */
    char buf[512];
    snprintf(buf, sizeof buf, "%s\x81\x02hi", r);
    assert_int_equal(twc__hs_parse(buf, strlen(buf), ACCEPT, &status, err, sizeof err),
                     (int)strlen(r));

    /* No subprotocol header: the server's default is JSON. */
    const char *r2 = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n";
    assert_int_equal(hs(r2, &status, err), (int)strlen(r2));

    /* Incomplete: wants more bytes. */
    assert_int_equal(twc__hs_parse(r, strlen(r) - 1, ACCEPT, &status, err, sizeof err), 0);
    assert_int_equal(twc__hs_parse(r, 10, ACCEPT, &status, err, sizeof err), 0);
}

static void test_hs_parse_bad(void **state)
{
    int status;
    char err[160];
    /* Wrong accept. */
    assert_int_equal(
        hs("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
           &status, err),
        TWC_E_HANDSHAKE);
    assert_non_null(strstr(err, "Accept"));
    /* Missing Upgrade. */
    assert_int_equal(hs("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    assert_non_null(strstr(err, "Upgrade"));
    /* Upgrade to something else. */
    assert_int_equal(
        hs("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
           &status, err),
        TWC_E_HANDSHAKE);
    /* Missing Connection: upgrade. */
    assert_int_equal(hs("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: keep-alive\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    /* Missing accept. */
    assert_int_equal(hs("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    /* Not 101: the status is reported. */
    assert_int_equal(hs("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", &status, err),
                     TWC_E_HANDSHAKE);
    assert_int_equal(status, 400);
    assert_non_null(strstr(err, "400"));
    assert_int_equal(hs("HTTP/1.1 503 Service Unavailable\r\n\r\n", &status, err), TWC_E_HANDSHAKE);
    assert_int_equal(status, 503);
    assert_int_equal(hs("HTTP/1.1 200 OK\r\n\r\n", &status, err), TWC_E_HANDSHAKE);
    /* Garbage status line. */
    assert_int_equal(hs("HTTP/2 101\r\n\r\n", &status, err), TWC_E_HANDSHAKE);
    assert_int_equal(hs("SSH-2.0-OpenSSH\r\n\r\n", &status, err), TWC_E_HANDSHAKE);
    /* Another subprotocol, an extension we never offered, folded headers. */
    assert_int_equal(hs("HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT
                        "\r\nSec-WebSocket-Protocol: tidewire.v1.msgpack\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    assert_int_equal(hs("HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT
                        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    assert_int_equal(hs("HTTP/1.1 101 S\r\nUpgrade: websocket\r\n  more\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
                        &status, err),
                     TWC_E_HANDSHAKE);
    /* A head that never ends is refused once it passes the cap. */
    size_t big = TWC__HS_MAX + 100;
    char *p = malloc(big);
    memset(p, 'a', big);
    memcpy(p, "HTTP/1.1 101 S\r\nX: ", 19);
    assert_int_equal(twc__hs_parse(p, big, ACCEPT, &status, err, sizeof err), TWC_E_HANDSHAKE);
    free(p);
}

/* ---- frames ---------------------------------------------------------------------------------- */

static void test_frame_header(void **state)
{
    uint8_t h[14];
    const uint8_t mask[4] = {1, 2, 3, 4};
    assert_int_equal(twc__ws_frame_header(h, 1, 0, mask), 6);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 0x80);
    assert_memory_equal(h + 2, mask, 4);
    assert_int_equal(twc__ws_frame_header(h, 1, 125, mask), 6);
    assert_int_equal(h[1], 0x80 | 125);
    assert_int_equal(twc__ws_frame_header(h, 1, 126, mask), 8);
    assert_int_equal(h[1], 0x80 | 126);
    assert_int_equal(h[2], 0);
    assert_int_equal(h[3], 126);
    assert_int_equal(twc__ws_frame_header(h, 1, 65535, mask), 8);
    assert_int_equal(h[2], 0xff);
    assert_int_equal(h[3], 0xff);
    assert_int_equal(twc__ws_frame_header(h, 2, 65536, mask), 14);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(h[1], 0x80 | 127);
    const uint8_t len64[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    assert_memory_equal(h + 2, len64, 8);
    assert_memory_equal(h + 10, mask, 4);
}

static void test_mask(void **state)
{
    const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    /* RFC 6455 section 5.7: a masked "Hello". */
    uint8_t out[5];
    twc__ws_mask(out, (const uint8_t *)"Hello", 5, mask, 0);
    const uint8_t want[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
    assert_memory_equal(out, want, 5);

    /* Masking in two pieces at any split equals masking at once; unmasking restores. */
    uint8_t src[100], whole[100], parts[100];
    for (int i = 0; i < 100; i++)
        src[i] = (uint8_t)(i * 7 + 3);
    twc__ws_mask(whole, src, 100, mask, 0);
    for (size_t split = 0; split <= 100; split += 7) {
        twc__ws_mask(parts, src, split, mask, 0);
        twc__ws_mask(parts + split, src + split, 100 - split, mask, split);
        assert_memory_equal(parts, whole, 100);
    }
    twc__ws_mask(parts, whole, 100, mask, 0);
    assert_memory_equal(parts, src, 100);
}

/* ---- JSON --------------------------------------------------------------------------------------
 */

static void test_json_valid(void **state)
{
    static const char *good[] = {
        "0",
        "-0",
        "1.5e10",
        "-1E-2",
        "\"\"",
        "\"a\\u00e9\\n\\\"\"",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        " { \"a\" : [1, 2, {\"b\": null}] } ",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "[[[[[[[[[[1]]]]]]]]]]",
    };
    static const char *bad[] = {
        "",
        " ",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "\"abc",
        "\"\\x\"",
        "\"\\u12g4\"",
        "tru",
        "nul",
        "[1,]",
        "[1 2]",
        "{\"a\"}",
        "{\"a\":1,}",
        "{a:1}",
        "[1]]",
        "1 2",
        "\"\x01\"",
        "\"\xc3\"",
        "\"\xed\xa0\x80\"",
        "\"\xc0\xaf\"",
        "\"\xf5\x80\x80\x80\"",
        "'a'",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!twc__json_valid(good[i], strlen(good[i])))
            fail_msg("rejected valid JSON #%zu: %s", i, good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (twc__json_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted invalid JSON #%zu: %s", i, bad[i]);
    /* Depth is bounded. */
    char deep[1200];
    memset(deep, '[', 600);
    memset(deep + 600, ']', 600);
    assert_false(twc__json_valid(deep, 1200));
    assert_true(twc__json_valid(deep + 400, 400));
}

static void test_json_escape_unescape(void **state)
{
    char out[64];
    const char *in = "a\\\"b\\\\c\\/\\n\\u00e9";
    assert_int_equal(twc__json_unescape(in, strlen(in), out), 9);
    assert_string_equal(out, "a\"b\\c/\n\xc3\xa9");
    /* Surrogate pair -> one 4-byte sequence; a lone surrogate -> U+FFFD. */
    assert_int_equal(twc__json_unescape("\\ud83d\\ude00", 12, out), 4);
    assert_string_equal(out, "\xf0\x9f\x98\x80");
    assert_int_equal(twc__json_unescape("\\ud83dx", 7, out), 4);
    assert_string_equal(out, "\xef\xbf\xbdx");
    assert_int_equal(twc__json_unescape("\\q", 2, out), -1);

    twc__buf b = {0};
    assert_int_equal(twc__json_escape(&b, "a\"b\\c\n\x01\xc3\xa9", 9), 0);
    b.p[b.len] = '\0';
    assert_string_equal(b.p, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
    assert_true(twc__json_valid(b.p, b.len));
    twc__buf_free(&b);
}

static void test_msg_scan(void **state)
{
    char text[] = "{\"op\":\"event\",\"channel\":\"vessel:\\u0034\\u0032\",\"pos\":\"n1.5f2c:18\","
                  "\"ts\":1795000000000,\"data\":{\"lat\":59.9,\"s\":\"}\"} ,\"extra\":[1,{}]}";
    twc__msg m;
    const char *why = NULL;
    assert_int_equal(twc__msg_scan(text, strlen(text), &m, &why), 0);
    assert_int_equal(m.op.n, 5);
    assert_memory_equal(m.op.p, "event", 5);
    assert_true(m.channel.esc);
    char ch[64];
    assert_int_equal(twc__json_unescape(m.channel.p, m.channel.n, ch), 9);
    assert_string_equal(ch, "vessel:42");
    assert_false(m.pos.esc);
    assert_int_equal(m.pos.n, 10);
    assert_true(m.has_ts);
    assert_true(m.ts == 1795000000000LL);
    assert_int_equal(m.data_len, strlen("{\"lat\":59.9,\"s\":\"}\"}"));
    assert_memory_equal(m.data, "{\"lat\":59.9,\"s\":\"}\"}", m.data_len);
    assert_false(m.has_id);
    assert_int_equal(m.recovered, -1);

    char sub[] = "{\"op\":\"subscribed\",\"id\":7,\"channel\":\"c\",\"recovered\":false,"
                 "\"replayed\":true,\"cursor\":{\"n1\":17}}";
    assert_int_equal(twc__msg_scan(sub, strlen(sub), &m, &why), 0);
    assert_true(m.has_id);
    assert_int_equal(m.id, 7);
    assert_int_equal(m.recovered, 0);
    assert_int_equal(m.replayed, 1);
    assert_int_equal(m.cursor_len, 9);

    char conn[] = "{\"op\":\"connected\",\"node\":\"n1.ab\",\"session\":42,\"ping_interval\":2.5}";
    assert_int_equal(twc__msg_scan(conn, strlen(conn), &m, &why), 0);
    assert_true(m.has_ping_interval);
    assert_true(m.ping_interval == 2.5);
    assert_int_equal(m.session.n, 2);

    static const char *bad[] = {
        "[]",
        "{\"op\":1}",
        "{\"op\":\"x\",}",
        "{\"op\":\"x\"} x",
        "{\"id\":\"1\"}",
        "{\"id\":1.5}",
        "{\"recovered\":1}",
        "{\"channel\":null}",
        "{\"op\":\"x\"",
        "{\"ts\":\"now\"}",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (twc__msg_scan(bad[i], strlen(bad[i]), &m, &why) != TWC_E_PROTOCOL)
            fail_msg("accepted bad message #%zu: %s", i, bad[i]);
    /* An escaped key is the same key. */
    char esc[] = "{\"\\u006fp\":\"pong\"}";
    assert_int_equal(twc__msg_scan(esc, strlen(esc), &m, &why), 0);
    assert_int_equal(m.op.n, 4);
}

/* ---- positions and cursors ---------------------------------------------------------------------
 */

static void test_pos_parse(void **state)
{
    size_t ol;
    uint64_t seq;
    assert_int_equal(twc__pos_parse("n1.5f2c09ab:1234", 16, &ol, &seq), 0);
    assert_int_equal(ol, 11);
    assert_true(seq == 1234);
    assert_int_equal(twc__pos_parse("a:b:7", 5, &ol, &seq), 0); /* split at the last ':' */
    assert_int_equal(ol, 3);
    assert_int_equal(twc__pos_parse("n1:18446744073709551615", 23, &ol, &seq), 0);
    assert_true(seq == UINT64_MAX);
    static const char *bad[] = {
        "n1", ":5", "n1:", "n1:0", "n1:01", "n1:-1", "n1:1x", "n1:18446744073709551616", "n1: 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (twc__pos_parse(bad[i], strlen(bad[i]), &ol, &seq) != TWC_E_PROTOCOL)
            fail_msg("accepted bad pos %s", bad[i]);
}

static void test_cursor_dedup(void **state)
{
    twc__cursor c = {0};
    /* Two origins, interleaved: each advances on its own. */
    assert_int_equal(twc__cursor_advance(&c, "n1.a", 4, 5), 1);
    assert_int_equal(twc__cursor_advance(&c, "n2.b", 4, 3), 1);
    assert_int_equal(twc__cursor_advance(&c, "n1.a", 4, 5), 0); /* duplicate */
    assert_int_equal(twc__cursor_advance(&c, "n1.a", 4, 4), 0); /* older */
    assert_int_equal(twc__cursor_advance(&c, "n1.a", 4, 9), 1); /* newer, gap is fine */
    assert_int_equal(twc__cursor_advance(&c, "n2.b", 4, 3), 0);
    assert_int_equal(twc__cursor_advance(&c, "n2.b", 4, 4), 1);
    assert_int_equal(twc__cursor_advance(&c, "n1.ab", 5, 1), 1); /* prefix is another origin */
    assert_true(twc__cursor_get(&c, "n1.a", 4) == 9);
    assert_true(twc__cursor_get(&c, "n2.b", 4) == 4);
    assert_true(twc__cursor_get(&c, "n1.ab", 5) == 1);
    assert_true(twc__cursor_get(&c, "n3", 2) == 0);
    assert_int_equal(c.n, 3);
    twc__cursor_free(&c);
}

static void test_cursor_merge(void **state)
{
    twc__cursor a = {0}, b = {0};
    const char *ja = "{\"n1\":10,\"n2\":5}", *jb = "{\"n2\":8,\"n3\":1,\"n1\":3}";
    assert_int_equal(twc__cursor_parse(ja, strlen(ja), &a), 0);
    assert_int_equal(twc__cursor_parse(jb, strlen(jb), &b), 0);
    assert_int_equal(twc__cursor_merge(&a, &b), 0);
    assert_int_equal(a.n, 3);
    assert_true(twc__cursor_get(&a, "n1", 2) == 10);
    assert_true(twc__cursor_get(&a, "n2", 2) == 8);
    assert_true(twc__cursor_get(&a, "n3", 2) == 1);
    /* Merging an empty cursor changes nothing; merging into an empty one copies. */
    twc__cursor e = {0};
    assert_int_equal(twc__cursor_merge(&a, &e), 0);
    assert_int_equal(a.n, 3);
    assert_int_equal(twc__cursor_merge(&e, &b), 0);
    assert_int_equal(e.n, 3);
    assert_true(twc__cursor_get(&e, "n1", 2) == 3);
    twc__cursor_free(&a);
    twc__cursor_free(&b);
    twc__cursor_free(&e);
}

static void test_cursor_json(void **state)
{
    twc__cursor c = {0};
    twc__buf b = {0};
    /* Every accepted form. */
    assert_int_equal(twc__cursor_parse(" { } ", 5, &c), 0);
    assert_int_equal(c.n, 0);
    const char *pos = "\"n1.5f2c09ab:1234\"";
    assert_int_equal(twc__cursor_parse(pos, strlen(pos), &c), 0);
    assert_int_equal(c.n, 1);
    assert_true(twc__cursor_get(&c, "n1.5f2c09ab", 11) == 1234);
    const char *vv = "{\"n1.5f2c09ab\": 1234, \"n2.91ab0c3d\":88,\"q\\\"x\":18446744073709551615}";
    assert_int_equal(twc__cursor_parse(vv, strlen(vv), &c), 0);
    assert_int_equal(c.n, 3);
    assert_true(twc__cursor_get(&c, "q\"x", 3) == UINT64_MAX); /* exact, beyond 2^53 */

    /* Save and load again: same vector. */
    assert_int_equal(twc__cursor_json(&c, &b), 0);
    assert_string_equal(
        b.p, "{\"n1.5f2c09ab\":1234,\"n2.91ab0c3d\":88,\"q\\\"x\":18446744073709551615}");
    twc__cursor d = {0};
    assert_int_equal(twc__cursor_parse(b.p, b.len, &d), 0);
    assert_int_equal(d.n, 3);
    for (size_t i = 0; i < c.n; i++)
        assert_true(twc__cursor_get(&d, c.v[i].origin, c.v[i].len) == c.v[i].seq);

    /* Refused forms leave the cursor as it was. */
    static const char *bad[] = {
        "1234",
        "",
        "null",
        "[]",
        "{\"n1\":-1}",
        "{\"n1\":1.5}",
        "{\"n1\":1e3}",
        "{\"n1\":\"5\"}",
        "{\"\":5}",
        "{\"n1\":5,}",
        "{\"n1\":5} x",
        "\"n1\"",
        "\"n1:0\"",
        "\"n1:x\"",
        "{\"n1\":18446744073709551616}",
        "{\"n1\":05}",
        "{n1:5}",
        "{\"a\\u0000b\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (twc__cursor_parse(bad[i], strlen(bad[i]), &d) != TWC_E_CURSOR)
            fail_msg("accepted bad cursor #%zu: %s", i, bad[i]);
        assert_int_equal(d.n, 3);
    }
    b.len = 0;
    twc__cursor empty = {0};
    assert_int_equal(twc__cursor_json(&empty, &b), 0);
    assert_string_equal(b.p, "{}");
    twc__buf_free(&b);
    twc__cursor_free(&c);
    twc__cursor_free(&d);
}

/* ---- reconnect policy
 * ---------------------------------------------------------------------------- */

static void test_close_action(void **state)
{
    assert_int_equal(twc__close_action(1000), TWC__ACT_STOP);
    assert_int_equal(twc__close_action(4000), TWC__ACT_TERMINAL);
    assert_int_equal(twc__close_action(4001), TWC__ACT_TERMINAL);
    assert_int_equal(twc__close_action(4003), TWC__ACT_TERMINAL);
    assert_int_equal(twc__close_action(4099), TWC__ACT_TERMINAL);
    assert_int_equal(twc__close_action(4100), TWC__ACT_BACKOFF);
    assert_int_equal(twc__close_action(4129), TWC__ACT_BACKOFF);
    assert_int_equal(twc__close_action(4199), TWC__ACT_BACKOFF);
    assert_int_equal(twc__close_action(4200), TWC__ACT_NOW);
    assert_int_equal(twc__close_action(4208), TWC__ACT_NOW);
    assert_int_equal(twc__close_action(4299), TWC__ACT_NOW);
    assert_int_equal(twc__close_action(1012), TWC__ACT_NOW);
    assert_int_equal(twc__close_action(1011), TWC__ACT_RETRY);
    assert_int_equal(twc__close_action(1001), TWC__ACT_RETRY);
    assert_int_equal(twc__close_action(1006), TWC__ACT_RETRY);
    assert_int_equal(twc__close_action(4300), TWC__ACT_RETRY);
    assert_int_equal(twc__close_action(0), TWC__ACT_RETRY);
}

static void test_backoff(void **state)
{
    twc__backoff b = {100, 10000, 2.0, 0};
    const uint64_t caps[] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000};
    for (unsigned i = 0; i < 9; i++)
        assert_true(twc__backoff_cap(&b, i) == caps[i]);
    assert_true(twc__backoff_cap(&b, 5000) == 10000); /* pow overflows to inf: still capped */

    /* Full jitter: every delay within [0, cap], the extremes reachable. */
    twc__rng r;
    twc__rng_seed_u64(&r, 42);
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        uint64_t cap = twc__backoff_cap(&b, attempt), lo = UINT64_MAX, hi = 0;
        for (int k = 0; k < 2000; k++) {
            b.attempt = attempt;
            uint64_t d = twc__backoff_next(&b, twc__rng_next(&r));
            assert_int_equal(b.attempt, attempt + 1);
            assert_true(d <= cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo < cap / 10 + 1);
        assert_true(hi > cap - cap / 10 - 1);
    }
    b.attempt = 0;
    assert_true(twc__backoff_next(&b, 0) == 0);
    assert_true(twc__backoff_next(&b, 200) == 200); /* cap 200: 200 % 201 */
    assert_true(twc__backoff_next(&b, 401) == 0);   /* cap 400: 401 % 401 */
}

static void test_reconnect_delay(void **state)
{
    twc__backoff b = {100, 10000, 2.0, 5};
    /* 42xx / 1012 after a healthy connection: at once, and the backoff starts over. */
    assert_true(twc__reconnect_delay(&b, TWC__ACT_NOW, true, 5000, 12345) == 0);
    assert_int_equal(b.attempt, 0);
    /* The immediate attempt failed: now the backoff applies. */
    uint64_t d = twc__reconnect_delay(&b, TWC__ACT_RETRY, false, 0, 999999);
    assert_true(d <= 100);
    assert_int_equal(b.attempt, 1);
    /* 42xx right after connecting: no tight loop. */
    b.attempt = 3;
    d = twc__reconnect_delay(&b, TWC__ACT_NOW, true, 10, 999999);
    assert_true(d <= 800);
    assert_int_equal(b.attempt, 4);
    /* Network error after a healthy connection: reset, then back off from the start. */
    b.attempt = 6;
    d = twc__reconnect_delay(&b, TWC__ACT_RETRY, true, 60000, 999999);
    assert_true(d <= 100);
    assert_int_equal(b.attempt, 1);
    /* 41xx keeps growing even after a healthy connection. */
    b.attempt = 6;
    d = twc__reconnect_delay(&b, TWC__ACT_BACKOFF, true, 60000, 999999);
    assert_true(d <= 6400);
    assert_int_equal(b.attempt, 7);
}

/* ---- histogram (tidewire-cli)
 * ---------------------------------------------------------------------- */

static void test_hist(void **state)
{
    cli_hist *h = calloc(1, sizeof *h);
    cli_hist_init(h);
    assert_true(cli_hist_percentile(h, 50) == 0);
    for (uint64_t v = 1; v <= 100000; v++)
        cli_hist_record(h, v * 1000); /* 1 us .. 100 ms, uniform */
    assert_true(h->count == 100000);
    assert_true(h->min == 1000);
    assert_true(h->max == 100000000);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < 4; i++) {
        double want = ps[i] / 100 * 100000000.0;
        double got = (double)cli_hist_percentile(h, ps[i]);
        /* Log-linear buckets: within 1% of the exact value. */
        if (got < want * 0.99 || got > want * 1.01)
            fail_msg("p%g = %.0f, want %.0f", ps[i], got, want);
    }
    assert_true(cli_hist_percentile(h, 100) == h->max);
    /* Exact below the sub-bucket count; huge values are kept. */
    cli_hist_init(h);
    cli_hist_record(h, 7);
    assert_true(cli_hist_percentile(h, 50) == 7);
    cli_hist_record(h, UINT64_MAX / 2);
    assert_true(cli_hist_percentile(h, 100) == UINT64_MAX / 2);
    /* Merging adds counts. */
    cli_hist *g = calloc(1, sizeof *g);
    cli_hist_init(g);
    cli_hist_record(g, 1000);
    cli_hist_merge(g, h);
    assert_true(g->count == 3);
    assert_true(g->min == 7);
    free(g);
    free(h);
}

/* ---- the whole client against a scripted WebSocket server on loopback ------------------------ */

/* A fake tidewire node: accepts connections, answers the upgrade, decodes the client's
 * (masked) frames and hands each message to the test's script, which answers with raw
 * frames. Ephemeral port, so parallel test runs never collide. */
typedef struct fsrv fsrv;
typedef struct fconn {
    uv_tcp_t tcp;
    fsrv *s;
    int no; /* 1, 2, ... in accept order */
    bool upgraded;
    twc__buf in;
} fconn;

struct fsrv {
    uv_loop_t loop;
    uv_tcp_t lis;
    int port;
    int nconn;
    fconn *open[8];          /* server-side connections not yet closed */
    const char *hs_override; /* send this instead of a valid 101 */
    void (*on_msg)(fsrv *s, fconn *fc, int op, const char *p, size_t n);
    /* what the client did */
    twc_client *c;
    int states[32], nstates;
    char events[16][64];
    int nevents;
    int subscribed, recovered_false;
    char subs_since[4][128];
    int nsubs;
    int publishes[4];
    int acks, ack_errs, last_ack_err;
    char ack_pos[64];
    int pongs;
    char pong_payload[16];
    int client_close_code;
    int errors[16], nerrors;
    bool done;
};

typedef struct fwrite_req {
    uv_write_t req;
    char data[];
} fwrite_req;

static void fwrite_done(uv_write_t *req, int status)
{
    free(req);
}

static void fsend(fconn *fc, const void *p, size_t n)
{
    fwrite_req *w = malloc(sizeof *w + n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&fc->tcp, &b, 1, fwrite_done)) free(w);
}

/* A server frame: unmasked; b0 = FIN bit | opcode. */
static void fframe(fconn *fc, uint8_t b0, const void *p, size_t n)
{
    uint8_t h[10];
    size_t hl = 2;
    h[0] = b0;
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    }
    char *buf = malloc(hl + n);
    memcpy(buf, h, hl);
    memcpy(buf + hl, p, n);
    fsend(fc, buf, hl + n);
    free(buf);
}

static void ftext(fconn *fc, const char *json)
{
    fframe(fc, 0x81, json, strlen(json));
}

static void fclose_frame(fconn *fc, int code)
{
    uint8_t p[6] = {(uint8_t)(code >> 8), (uint8_t)code, 'm', 'o', 'c', 'k'};
    fframe(fc, 0x88, p, sizeof p);
}

static void fconn_closed(uv_handle_t *h)
{
    fconn *fc = h->data;
    for (int i = 0; i < 8; i++)
        if (fc->s->open[i] == fc) fc->s->open[i] = NULL;
    twc__buf_free(&fc->in);
    free(fc);
}

static void fconn_close(fconn *fc)
{
    if (!uv_is_closing((uv_handle_t *)&fc->tcp)) uv_close((uv_handle_t *)&fc->tcp, fconn_closed);
}

static void falloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char rb[65536];
    *b = uv_buf_init(rb, sizeof rb);
}

static void fread_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    fconn *fc = st->data;
    if (n < 0) {
        fconn_close(fc);
        return;
    }
    twc__buf_append(&fc->in, b->base, (size_t)n);
    if (!fc->upgraded) {
        fc->in.p[fc->in.len] = '\0';
        char *end = strstr(fc->in.p, "\r\n\r\n");
        if (!end) return;
        char *k = strstr(fc->in.p, "Sec-WebSocket-Key: ");
        assert_non_null(k);
        assert_non_null(strstr(fc->in.p, "Sec-WebSocket-Protocol: tidewire.v1.json\r\n"));
        char key[25], acc[29], resp[512];
        memcpy(key, k + 19, 24);
        key[24] = '\0';
        assert_int_equal(twc__ws_accept(key, acc), 0);
        if (fc->s->hs_override)
            snprintf(resp, sizeof resp, "%s", fc->s->hs_override);
        else
            snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: tidewire.v1.json\r\n\r\n",
                     acc);
        fsend(fc, resp, strlen(resp));
        size_t used = (size_t)(end + 4 - fc->in.p);
        memmove(fc->in.p, fc->in.p + used, fc->in.len - used);
        fc->in.len -= used;
        fc->upgraded = true;
    }
    /* Client frames: FIN, masked, never fragmented by twc. */
    for (;;) {
        uint8_t *p = (uint8_t *)fc->in.p;
        size_t have = fc->in.len;
        if (have < 2) return;
        assert_true(p[1] & 0x80); /* clients must mask */
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (have < 4) return;
            len = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (len == 127) {
            if (have < 10) return;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            hl = 10;
        }
        if (have < hl + 4 + len) return;
        uint8_t *mask = p + hl, *pl = p + hl + 4;
        twc__ws_mask(pl, pl, len, mask, 0);
        int op = p[0] & 0x0f;
        char *text = malloc(len + 1);
        memcpy(text, pl, len);
        text[len] = '\0';
        size_t used = hl + 4 + len;
        memmove(fc->in.p, fc->in.p + used, have - used);
        fc->in.len -= used;
        fc->s->on_msg(fc->s, fc, op, text, len);
        free(text);
        if (uv_is_closing((uv_handle_t *)&fc->tcp)) return;
    }
}

static void faccept(uv_stream_t *lis, int status)
{
    fsrv *s = lis->data;
    fconn *fc = calloc(1, sizeof *fc);
    fc->s = s;
    fc->no = ++s->nconn;
    uv_tcp_init(&s->loop, &fc->tcp);
    fc->tcp.data = fc;
    for (int i = 0; i < 8; i++) {
        if (!s->open[i]) {
            s->open[i] = fc;
            break;
        }
    }
    assert_int_equal(uv_accept(lis, (uv_stream_t *)&fc->tcp), 0);
    uv_read_start((uv_stream_t *)&fc->tcp, falloc, fread_cb);
}

static void fsrv_start(fsrv *s)
{
    uv_loop_init(&s->loop);
    uv_tcp_init(&s->loop, &s->lis);
    s->lis.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->lis, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->lis, 16, faccept), 0);
    struct sockaddr_in b;
    int bl = sizeof b;
    uv_tcp_getsockname(&s->lis, (struct sockaddr *)&b, &bl);
    s->port = ntohs(b.sin_port);
}

/* Ends the test: frees the client and closes the server's handles (run_loop then checks
 * that the loop closes: the client left nothing behind). */
static void fsrv_finish(fsrv *s)
{
    if (s->done) return;
    s->done = true;
    twc_free(s->c);
    for (int i = 0; i < 8; i++)
        if (s->open[i]) fconn_close(s->open[i]);
    uv_close((uv_handle_t *)&s->lis, NULL);
}

static void on_t_state(twc_client *c, twc_state st, const twc_error *why, void *arg)
{
    fsrv *s = arg;
    if (s->nstates < 32) s->states[s->nstates++] = st;
}

static void on_t_event(twc_client *c, const twc_event *ev, void *arg)
{
    fsrv *s = arg;
    assert_string_equal(ev->channel, "ch");
    assert_int_equal(strlen(ev->data), ev->data_len);
    assert_true(twc__json_valid(ev->data, ev->data_len));
    if (s->nevents < 16) snprintf(s->events[s->nevents++], 64, "%s %s", ev->pos, ev->data);
}

static void on_t_subscribed(twc_client *c, const char *ch, bool recovered, bool replayed, void *arg)
{
    fsrv *s = arg;
    s->subscribed++;
    if (!recovered) s->recovered_false++;
}

static void on_t_error(twc_client *c, const twc_error *e, void *arg)
{
    fsrv *s = arg;
    if (s->nerrors < 16) s->errors[s->nerrors++] = e->err;
}

static void on_t_ack(twc_client *c, const twc_error *err, const char *pos, void *arg)
{
    fsrv *s = arg;
    if (err) {
        s->ack_errs++;
        s->last_ack_err = err->err;
    } else {
        s->acks++;
        snprintf(s->ack_pos, sizeof s->ack_pos, "%s", pos);
    }
}

static void client_start(fsrv *s, const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d%s", s->port, path);
    twc_options o = {
        .url = url,
        .token = "tok\"en",
        .on_state = on_t_state,
        .on_event = on_t_event,
        .on_subscribed = on_t_subscribed,
        .on_error = on_t_error,
        .arg = s,
        .backoff_initial_ms = 10,
        .backoff_max_ms = 50,
        .close_timeout_ms = 1000,
    };
    assert_int_equal(twc_client_new(&s->loop, &o, &s->c), 0);
}

static void run_loop(fsrv *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&s->loop), 0);
}

/* Script 1: dedup against the subscribed cursor and across origins, a fragmented event
 * with a ping in the middle, 1012 -> immediate reconnect resubscribing with since = the
 * cursor, the unacknowledged publish resent, then a graceful close. */
static void script_resume(fsrv *s, fconn *fc, int op, const char *text, size_t n)
{
    if (op == 0xA) {
        s->pongs++;
        snprintf(s->pong_payload, sizeof s->pong_payload, "%.*s", (int)n, text);
        return;
    }
    if (op == 0x8) {
        s->client_close_code = n >= 2 ? ((uint8_t)text[0] << 8 | (uint8_t)text[1]) : 1005;
        fclose_frame(fc, s->client_close_code); /* echo; the client then closes TCP */
        return;
    }
    cJSON *m = cJSON_Parse(text);
    assert_non_null(m);
    const char *opname = cJSON_GetStringValue(cJSON_GetObjectItem(m, "op"));
    int id = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(m, "id"));
    char out[512];
    if (!strcmp(opname, "connect")) {
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(m, "token")), "tok\"en");
        snprintf(out, sizeof out,
                 "{\"op\":\"connected\",\"id\":%d,\"node\":\"o1\",\"session\":\"%d\","
                 "\"ping_interval\":5}",
                 id, fc->no);
        ftext(fc, out);
    } else if (!strcmp(opname, "subscribe")) {
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(m, "channel")), "ch");
        cJSON *since = cJSON_GetObjectItem(m, "since");
        char *st = since ? cJSON_PrintUnformatted(since) : NULL;
        snprintf(s->subs_since[s->nsubs++ & 3], 128, "%s", st ? st : "-");
        free(st);
        if (fc->no == 1) {
            assert_null(cJSON_GetObjectItem(m, "last"));
            snprintf(out, sizeof out,
                     "{\"op\":\"subscribed\",\"id\":%d,\"channel\":\"ch\",\"recovered\":true,"
                     "\"replayed\":false,\"cursor\":{\"o1\":10}}",
                     id);
            ftext(fc, out);
            ftext(fc, "{\"op\":\"event\",\"channel\":\"ch\",\"pos\":\"o1:9\",\"ts\":1,\"data\":9}");
            ftext(fc, "{\"op\":\"event\",\"channel\":\"ch\",\"pos\":\"o1:11\",\"ts\":1,"
                      "\"data\":{\"a\":\"x\\ny\"}}");
            ftext(fc,
                  "{\"op\":\"event\",\"channel\":\"ch\",\"pos\":\"o1:11\",\"ts\":1,\"data\":11}");
            ftext(fc, "{\"op\":\"event\",\"channel\":\"other\",\"pos\":\"o1:12\",\"data\":0}");
            ftext(fc, "{\"op\":\"event\",\"channel\":\"c\\u0068\",\"pos\":\"o2:1\",\"ts\":2,"
                      "\"data\":[1, 2]}");
            /* o1:12 in three fragments, a ping between the first two. */
            const char *ev = "{\"op\":\"event\",\"channel\":\"ch\",\"pos\":\"o1:12\",\"ts\":3,"
                             "\"data\":\"fragmented\"}";
            size_t el = strlen(ev);
            fframe(fc, 0x01, ev, 10);
            fframe(fc, 0x89, "hi", 2);
            fframe(fc, 0x00, ev + 10, 20);
            fframe(fc, 0x80, ev + 30, el - 30);
            /* Not ours to answer: an unknown op and a pong reply are ignored. */
            ftext(fc, "{\"op\":\"presence\",\"channel\":\"ch\",\"members\":[]}");
        } else {
            snprintf(out, sizeof out,
                     "{\"op\":\"subscribed\",\"id\":%d,\"channel\":\"ch\",\"recovered\":false,"
                     "\"replayed\":true,\"cursor\":%s}",
                     id, s->subs_since[(s->nsubs - 1) & 3]);
            ftext(fc, out);
            ftext(fc, "{\"op\":\"event\",\"channel\":\"ch\",\"pos\":\"o1:12\",\"data\":12}");
        }
    } else if (!strcmp(opname, "publish")) {
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(m, "channel")), "ch");
        assert_int_equal(
            (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "data"), "p")), 1);
        s->publishes[fc->no & 3]++;
        if (fc->no == 1) {
            /* Never acknowledged here: the node restarts. */
            fclose_frame(fc, 1012);
        } else {
            snprintf(out, sizeof out, "{\"op\":\"ack\",\"id\":%d,\"pos\":\"o1:13\"}", id);
            ftext(fc, out);
        }
    } else {
        fail_msg("unexpected op %s", opname);
    }
    cJSON_Delete(m);
}

static void on_t_ack_close(twc_client *c, const twc_error *err, const char *pos, void *arg);

static void on_t_event_publish(twc_client *c, const twc_event *ev, void *arg)
{
    fsrv *s = arg;
    on_t_event(c, ev, arg);
    if (ev->seq == 12 && s->nevents == 3) /* the fragmented one */
        assert_int_equal(twc_publish(c, "ch", "{\"p\":1}", on_t_ack_close, s), 0);
}

static void on_t_ack_close(twc_client *c, const twc_error *err, const char *pos, void *arg)
{
    on_t_ack(c, err, pos, arg);
    twc_close(c);
}

static void on_t_state_finish(twc_client *c, twc_state st, const twc_error *why, void *arg)
{
    fsrv *s = arg;
    on_t_state(c, st, why, arg);
    if (st == TWC_STATE_DISCONNECTED) fsrv_finish(s);
}

static void test_client_resume(void **state)
{
    fsrv *s = calloc(1, sizeof *s);
    fsrv_start(s);
    s->on_msg = script_resume;
    /* Argument checks first, on a client that never connects. */
    client_start(s, "/ws");
    assert_int_equal(twc_subscribe(s->c, "ch", NULL, 0), 0);
    assert_int_equal(twc_subscribe(s->c, "ch", NULL, 0), TWC_E_EXISTS);
    assert_int_equal(twc_subscribe(s->c, "x", "1234", 0), TWC_E_CURSOR);
    assert_int_equal(twc_publish(s->c, "ch", "{bad", NULL, NULL), TWC_E_JSON);
    assert_int_equal(twc_publish(s->c, "ch", "\"\xff\"", NULL, NULL), TWC_E_JSON);
    assert_int_equal(twc_publish(s->c, "", "1", NULL, NULL), TWC_E_ARG);
    twc_free(s->c);

    /* The real run: the fragmented event triggers a publish (on_t_event_publish), its ack
     * closes the client (on_t_ack_close), DISCONNECTED ends the test (on_t_state_finish). */
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", s->port);
    twc_options opts = {
        .url = url,
        .token = "tok\"en",
        .on_state = on_t_state_finish,
        .on_event = on_t_event_publish,
        .on_subscribed = on_t_subscribed,
        .on_error = on_t_error,
        .arg = s,
        .backoff_initial_ms = 10,
        .backoff_max_ms = 50,
    };
    assert_int_equal(twc_client_new(&s->loop, &opts, &s->c), 0);
    assert_int_equal(twc_subscribe(s->c, "ch", NULL, 0), 0);
    assert_int_equal(twc_connect(s->c), 0);
    run_loop(s);

    /* Events: 9 and the repeated 11 were duplicates, "other" is not ours, o2:1 came
     * through an escaped channel name, o1:12 arrived in fragments, and after the
     * reconnect the replayed o1:12 was a duplicate. */
    assert_int_equal(s->nevents, 3);
    assert_string_equal(s->events[0], "o1:11 {\"a\":\"x\\ny\"}");
    assert_string_equal(s->events[1], "o2:1 [1, 2]");
    assert_string_equal(s->events[2], "o1:12 \"fragmented\"");
    assert_int_equal(s->pongs, 1);
    assert_string_equal(s->pong_payload, "hi");
    assert_int_equal(s->nconn, 2);
    assert_int_equal(s->nsubs, 2);
    assert_string_equal(s->subs_since[0], "-");
    assert_string_equal(s->subs_since[1], "{\"o1\":12,\"o2\":1}");
    assert_int_equal(s->subscribed, 2);
    assert_int_equal(s->recovered_false, 1);
    assert_int_equal(s->publishes[1], 1);
    assert_int_equal(s->publishes[2], 1); /* resent after the reconnect */
    assert_int_equal(s->acks, 1);
    assert_string_equal(s->ack_pos, "o1:13");
    assert_int_equal(s->client_close_code, 1000);
    /* connecting, connected, reconnecting, connected, disconnected */
    assert_int_equal(s->nstates, 5);
    assert_int_equal(s->states[0], TWC_STATE_CONNECTING);
    assert_int_equal(s->states[1], TWC_STATE_CONNECTED);
    assert_int_equal(s->states[2], TWC_STATE_RECONNECTING);
    assert_int_equal(s->states[3], TWC_STATE_CONNECTED);
    assert_int_equal(s->states[4], TWC_STATE_DISCONNECTED);
    free(s);
}

/* Script 2: 4001 is terminal: no reconnect, state disconnected, held publishes fail. */
static void script_unauthorized(fsrv *s, fconn *fc, int op, const char *text, size_t n)
{
    if (op == 0x8) { /* the client's echo: the end */
        s->client_close_code = n >= 2 ? ((uint8_t)text[0] << 8 | (uint8_t)text[1]) : 1005;
        fsrv_finish(s);
        return;
    }
    if (strstr(text, "\"connect\"")) fclose_frame(fc, 4001);
}

static void test_client_terminal(void **state)
{
    fsrv *s = calloc(1, sizeof *s);
    fsrv_start(s);
    s->on_msg = script_unauthorized;
    client_start(s, "/ws");
    assert_int_equal(twc_publish(s->c, "ch", "{\"p\":1}", on_t_ack, s), 0);
    assert_int_equal(twc_connect(s->c), 0);
    run_loop(s);
    assert_int_equal(s->nconn, 1); /* no second attempt */
    assert_int_equal(s->client_close_code, 4001);
    assert_int_equal(s->ack_errs, 1);
    assert_int_equal(s->last_ack_err, TWC_E_CLOSED);
    assert_int_equal(s->nerrors, 1);
    assert_int_equal(s->errors[0], TWC_E_PEER_CLOSED);
    assert_int_equal(s->nstates, 2);
    assert_int_equal(s->states[0], TWC_STATE_CONNECTING);
    assert_int_equal(s->states[1], TWC_STATE_DISCONNECTED); /* never reached `connected` */
    free(s);
}

/* Script 3: a masked frame from the server is a protocol error (close 1002) and the
 * client reconnects; a bad 101 is a handshake error and the client retries too. */
static void script_masked(fsrv *s, fconn *fc, int op, const char *text, size_t n)
{
    if (op == 0x8) {
        s->client_close_code = n >= 2 ? ((uint8_t)text[0] << 8 | (uint8_t)text[1]) : 1005;
        return;
    }
    if (strstr(text, "\"connect\"")) {
        const uint8_t masked[] = {0x81, 0x82, 1, 2, 3, 4, '{' ^ 1, '}' ^ 2};
        fsend(fc, masked, sizeof masked);
    }
}

static void on_t_error_finish(twc_client *c, const twc_error *e, void *arg)
{
    fsrv *s = arg;
    on_t_error(c, e, arg);
    if (s->nerrors == 2) fsrv_finish(s);
}

static void test_client_protocol_errors(void **state)
{
    fsrv *s = calloc(1, sizeof *s);
    fsrv_start(s);
    s->on_msg = script_masked;
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", s->port);
    twc_options o = {.url = url,
                     .on_error = on_t_error_finish,
                     .arg = s,
                     .backoff_initial_ms = 5,
                     .backoff_max_ms = 5};
    assert_int_equal(twc_client_new(&s->loop, &o, &s->c), 0);
    assert_int_equal(twc_connect(s->c), 0);
    run_loop(s);
    assert_int_equal(s->errors[0], TWC_E_PROTOCOL);
    assert_int_equal(s->errors[1], TWC_E_PROTOCOL);
    assert_int_equal(s->client_close_code, 1002);
    assert_true(s->nconn >= 2);
    free(s);

    s = calloc(1, sizeof *s);
    fsrv_start(s);
    s->on_msg = script_masked;
    s->hs_override =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", s->port);
    o.arg = s;
    assert_int_equal(twc_client_new(&s->loop, &o, &s->c), 0);
    assert_int_equal(twc_connect(s->c), 0);
    run_loop(s);
    assert_int_equal(s->errors[0], TWC_E_HANDSHAKE);
    assert_int_equal(s->errors[1], TWC_E_HANDSHAKE);
    free(s);
}

static void test_client_new_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    twc_client *c = NULL;
    twc_options o = {.url = "http://h/"};
    assert_int_equal(twc_client_new(&loop, &o, &c), TWC_E_URL);
    o.url = "wss://h/ws";
    assert_int_equal(twc_client_new(&loop, &o, &c), TWC_E_UNSUPPORTED);
    o.url = "ws://h:99999/";
    assert_int_equal(twc_client_new(&loop, &o, &c), TWC_E_URL);
    assert_null(c);
    o.url = "ws://127.0.0.1:1/ws";
    assert_int_equal(twc_client_new(&loop, &o, &c), 0);
    assert_int_equal(twc_get_state(c), TWC_STATE_DISCONNECTED);
    assert_int_equal(twc_subscribe(c, "a", "{\"n1\":5}", 0), 0);
    char *cur = twc_cursor_json(c, "a");
    assert_string_equal(cur, "{\"n1\":5}");
    free(cur);
    assert_null(twc_cursor_json(c, "b"));
    assert_int_equal(twc_unsubscribe(c, "a"), 0);
    assert_int_equal(twc_unsubscribe(c, "a"), TWC_E_NOT_FOUND);
    assert_int_equal(twc_close(c), 0); /* never connected: a no-op */
    twc_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_string_equal(twc_strerror(TWC_E_QUEUE_FULL), "outbound queue full");
    assert_string_equal(twc_state_name(TWC_STATE_RECONNECTING), "reconnecting");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_good),
        cmocka_unit_test(test_url_bad),
        cmocka_unit_test(test_ws_accept),
        cmocka_unit_test(test_hs_request),
        cmocka_unit_test(test_hs_parse_good),
        cmocka_unit_test(test_hs_parse_bad),
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_json_valid),
        cmocka_unit_test(test_json_escape_unescape),
        cmocka_unit_test(test_msg_scan),
        cmocka_unit_test(test_pos_parse),
        cmocka_unit_test(test_cursor_dedup),
        cmocka_unit_test(test_cursor_merge),
        cmocka_unit_test(test_cursor_json),
        cmocka_unit_test(test_close_action),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_reconnect_delay),
        cmocka_unit_test(test_hist),
        cmocka_unit_test(test_client_new_errors),
        cmocka_unit_test(test_client_resume),
        cmocka_unit_test(test_client_terminal),
        cmocka_unit_test(test_client_protocol_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
