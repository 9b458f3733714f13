/*
 * test_protocol.c — broker/protocol.c: decoding every op and every refusal in both
 * encodings, hostile MessagePack, the server messages byte for byte, and data conversion.
 * MessagePack is checked against msgpack-c's own unpacker and built with its packer.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "protocol.h"

/* ---- helpers ------------------------------------------------------------------------ */

static int dec_json(const char *s, tw_request *r, tw_proto_error *e)
{
    memset(r, 0, sizeof *r);
    return tw_proto_decode(TW_ENC_JSON, (const uint8_t *)s, strlen(s), NULL, r, e);
}

static int dec_mp(const void *m, size_t n, tw_request *r, tw_proto_error *e)
{
    memset(r, 0, sizeof *r);
    return tw_proto_decode(TW_ENC_MSGPACK, m, n, NULL, r, e);
}

/* JSON text -> MessagePack through the codec (itself checked against msgpack-c below). */
static void to_mp(const char *json, tw_buf *out)
{
    tw_buf_init(out, 0);
    int rc = tw_data_convert(TW_ENC_JSON, (const uint8_t *)json, strlen(json), TW_ENC_MSGPACK, out);
    if (rc) {
        print_error("to_mp(%s): %d\n", json, rc);
        fail();
    }
}

static void assert_request_empty(const tw_request *r)
{
    assert_int_equal(r->op, TW_OP_NONE);
    assert_null(r->sub.channel);
    assert_null(r->data);
    assert_null(r->token);
    assert_null(r->subs);
    assert_int_equal(r->nsubs, 0);
}

static void check_err(tw_encoding enc, const void *msg, size_t len, const tw_proto_limits *lim,
                      int has_id, int64_t id, const char *want, const char *what)
{
    tw_request r;
    tw_proto_error e;
    memset(&r, 0x5a, sizeof r); /* failure must leave it empty whatever it held */
    memset(&e, 0x5a, sizeof e);
    int rc = tw_proto_decode(enc, msg, len, lim, &r, &e);
    int ok = rc == -EINVAL && e.code == 400 && e.has_id == has_id && (!has_id || e.id == id) &&
             memchr(e.message, '\0', sizeof e.message) && strstr(e.message, want);
    if (!ok) {
        print_error("%s [%s]: rc %d code %d has_id %d id %lld message '%.160s' (want '%s', "
                    "has_id %d id %lld)\n",
                    what, enc == TW_ENC_JSON ? "json" : "msgpack", rc, e.code, e.has_id,
                    (long long)e.id, e.message, want, has_id, (long long)id);
        tw_request_free(&r);
        fail();
    }
    assert_request_empty(&r);
}

static void check_err_json(const char *s, int has_id, int64_t id, const char *want)
{
    check_err(TW_ENC_JSON, s, strlen(s), NULL, has_id, id, want, s);
}

static msgpack_object *mp_get(msgpack_object *map, const char *key)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static void assert_mp_str(const msgpack_object *o, const char *want)
{
    assert_non_null(o);
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(want));
    assert_memory_equal(o->via.str.ptr, want, o->via.str.size);
}

/* Unpacks exactly one MessagePack value with msgpack-c. */
static void mp_unpack_all(const tw_buf *b, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    assert_int_equal(msgpack_unpack_next(u, (const char *)tw_buf_data(b), b->len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b->len);
}

static void assert_buf_str(const tw_buf *b, const char *want)
{
    if (b->len != strlen(want) || memcmp(tw_buf_data(b), want, b->len) != 0) {
        print_error("got  %.*s\nwant %s\n", (int)b->len, (const char *)tw_buf_data(b), want);
        fail();
    }
}

typedef struct mpw {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mpw;

static void mpw_init(mpw *w)
{
    msgpack_sbuffer_init(&w->sb);
    msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
}

static void pk_s(mpw *w, const char *s)
{
    msgpack_pack_str_with_body(&w->pk, s, strlen(s));
}

/* ---- names ---------------------------------------------------------------------------- */

static void test_names(void **state)
{
    assert_string_equal(tw_op_name(TW_OP_CONNECT), "connect");
    assert_string_equal(tw_op_name(TW_OP_SUBSCRIBE), "subscribe");
    assert_string_equal(tw_op_name(TW_OP_UNSUBSCRIBE), "unsubscribe");
    assert_string_equal(tw_op_name(TW_OP_PUBLISH), "publish");
    assert_string_equal(tw_op_name(TW_OP_PRESENCE), "presence");
    assert_string_equal(tw_op_name(TW_OP_PING), "ping");
    assert_string_equal(tw_op_name(TW_OP_REFRESH), "refresh");
    assert_string_equal(tw_op_name(TW_OP_NONE), "?");
    assert_string_equal(tw_op_name((tw_op)99), "?");
    assert_string_equal(tw_op_name((tw_op)-1), "?");

    const tw_proto_limits *l = &tw_proto_default_limits;
    assert_int_equal(l->max_channel_len, 255);
    assert_int_equal(l->max_cursor_entries, 64);
    assert_int_equal(l->max_last, 10000);
    assert_int_equal(l->max_subs, 256);
    assert_int_equal(l->max_token_len, 8192);
}

static void test_origin_channel_valid(void **state)
{
    static const char *const good[] = {
        "n1.5f2c09ab",
        "a.0",
        "A-b_C.fffffffffffffff",
        "abcdefghijklmnopqrstuvwxyz012345.1",
    };
    static const char *const bad[] = {
        "",
        "n1",
        "n1.",
        ".5f",
        "n1.5F",
        "n1.5g",
        "n 1.5f",
        "n1.5f.6",
        "n1:5f",
        "n1.ffffffffffffffff" /* 16 */,
        "abcdefghijklmnopqrstuvwxyz0123456.1" /* 33 */,
        "n\xc3\xa9.1",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(tw_origin_valid(good[i], strlen(good[i])), 1);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (tw_origin_valid(bad[i], strlen(bad[i])) != 0) {
            print_error("origin '%s' accepted\n", bad[i]);
            fail();
        }
    assert_int_equal(tw_origin_valid("n1.5f2c09ab", 3), 0); /* counted, not NUL-ended */
    assert_int_equal(tw_origin_valid("n1.5f2c09ab", 4), 1);

    assert_int_equal(tw_channel_valid("vessel:42", 9, 255), 1);
    assert_int_equal(tw_channel_valid("!~\"\\", 4, 255), 1);
    assert_int_equal(tw_channel_valid("", 0, 255), 0);
    assert_int_equal(tw_channel_valid("abcd", 4, 3), 0);
    assert_int_equal(tw_channel_valid("abc", 3, 3), 1);
    assert_int_equal(tw_channel_valid("a b", 3, 255), 0);
    assert_int_equal(tw_channel_valid("a\x7f", 2, 255), 0);
    assert_int_equal(tw_channel_valid("a\0b", 3, 255), 0);
    assert_int_equal(tw_channel_valid("\xc3\xa9", 2, 255), 0);
}

/* ---- decoding: success ---------------------------------------------------------------- */

static void test_decode_ping_ids(void **state)
{
    tw_request r;
    tw_proto_error e;
    static const struct {
        const char *json;
        int has_id;
        int64_t id;
    } cases[] = {
        {"{\"op\":\"ping\"}", 0, 0},
        {" \r\n\t{ \"op\" : \"ping\" , \"id\" : 5 } \n", 1, 5},
        {"{\"id\":-1,\"op\":\"ping\"}", 1, -1},
        {"{\"op\":\"ping\",\"id\":0}", 1, 0},
        {"{\"op\":\"ping\",\"id\":9223372036854775807}", 1, INT64_MAX},
        {"{\"op\":\"ping\",\"id\":-9223372036854775808}", 1, INT64_MIN},
        {"{\"op\":\"ping\",\"id\":5.0}", 1, 5}, /* JSON numbers have no integer type */
        {"{\"op\":\"ping\",\"id\":1e3}", 1, 1000},
        {"{\"op\":\"ping\",\"id\":-0}", 1, 0},
        {"{\"op\":\"ping\",\"id\":null}", 0, 0},
        {"\xef\xbb\xbf{\"op\":\"ping\",\"id\":1}", 1, 1}, /* a BOM */
        {"{\"op\":\"ping\",\"channel\":5,\"data\":[],\"since\":1,\"x\":{\"y\":[1]}}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = dec_json(cases[i].json, &r, &e);
        if (rc) {
            print_error("%s: %d %s\n", cases[i].json, rc, e.message);
            fail();
        }
        assert_int_equal(r.op, TW_OP_PING);
        assert_int_equal(r.has_id, cases[i].has_id);
        if (cases[i].has_id) assert_true(r.id == cases[i].id);
        tw_request_free(&r);
        assert_request_empty(&r);
    }
}

static void test_decode_subscribe(void **state)
{
    tw_request r;
    tw_proto_error e;
    assert_int_equal(dec_json("{\"op\":\"subscribe\",\"id\":1,\"channel\":\"vessel:42\","
                              "\"since\":{\"n1.5f2c09ab\":18,\"n2.91ab0c3d\":18446744073709551615},"
                              "\"last\":10}",
                              &r, &e),
                     0);
    assert_int_equal(r.op, TW_OP_SUBSCRIBE);
    assert_string_equal(r.sub.channel, "vessel:42");
    assert_int_equal(r.sub.channel_len, 9);
    assert_int_equal(r.sub.has_since, 1);
    assert_int_equal(r.sub.since.n, 2);
    assert_string_equal(r.sub.since.entries[0].origin, "n1.5f2c09ab");
    assert_true(r.sub.since.entries[0].seq == 18);
    assert_string_equal(r.sub.since.entries[1].origin, "n2.91ab0c3d");
    assert_true(r.sub.since.entries[1].seq == UINT64_MAX);
    assert_ptr_equal(r.sub.since.entries[1].origin, r.sub.since.origins[1]);
    assert_int_equal(r.sub.last, 10);
    tw_request_free(&r);

    assert_int_equal(
        dec_json("{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab:1234\"}", &r, &e),
        0);
    assert_int_equal(r.sub.has_since, 1);
    assert_int_equal(r.sub.since.n, 1);
    assert_string_equal(r.sub.since.entries[0].origin, "n1.5f2c09ab");
    assert_true(r.sub.since.entries[0].seq == 1234);
    assert_int_equal(r.sub.last, 0);
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{}}", &r, &e), 0);
    assert_int_equal(r.sub.has_since, 1);
    assert_int_equal(r.sub.since.n, 0);
    tw_request_free(&r);

    /* null counts as absent; last 0 is no last */
    assert_int_equal(dec_json("{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":null,"
                              "\"last\":null}",
                              &r, &e),
                     0);
    assert_int_equal(r.sub.has_since, 0);
    tw_request_free(&r);
    assert_int_equal(
        dec_json("{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":10000,\"since\":\"a.1:0\"}", &r,
                 &e),
        0);
    assert_int_equal(r.sub.last, 10000);
    assert_true(r.sub.since.entries[0].seq == 0);
    tw_request_free(&r);

    /* the longest channel */
    char msg[400], ch[256];
    memset(ch, 'x', 255);
    ch[255] = '\0';
    snprintf(msg, sizeof msg, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", ch);
    assert_int_equal(dec_json(msg, &r, &e), 0);
    assert_int_equal(r.sub.channel_len, 255);
    tw_request_free(&r);
}

static void test_decode_other_ops(void **state)
{
    tw_request r;
    tw_proto_error e;
    assert_int_equal(dec_json("{\"op\":\"unsubscribe\",\"channel\":\"a\\\"b\"}", &r, &e), 0);
    assert_int_equal(r.op, TW_OP_UNSUBSCRIBE);
    assert_string_equal(r.sub.channel, "a\"b");
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"presence\",\"channel\":\"room\",\"id\":2}", &r, &e), 0);
    assert_int_equal(r.op, TW_OP_PRESENCE);
    assert_string_equal(r.sub.channel, "room");
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"refresh\",\"token\":\"eyJ.x.y\"}", &r, &e), 0);
    assert_int_equal(r.op, TW_OP_REFRESH);
    assert_string_equal(r.token, "eyJ.x.y");
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"connect\"}", &r, &e), 0);
    assert_int_equal(r.op, TW_OP_CONNECT);
    assert_null(r.token);
    assert_int_equal(r.nsubs, 0);
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"connect\",\"id\":9,\"token\":\"t\",\"subs\":{\"a\":null,"
                              "\"b\":\"n1.5f:3\",\"c\":{\"n1.5f\":4,\"n2.6e\":5},\"d\":{}}}",
                              &r, &e),
                     0);
    assert_string_equal(r.token, "t");
    assert_int_equal(r.nsubs, 4);
    assert_string_equal(r.subs[0].channel, "a");
    assert_int_equal(r.subs[0].has_since, 0);
    assert_string_equal(r.subs[1].channel, "b");
    assert_int_equal(r.subs[1].has_since, 1);
    assert_int_equal(r.subs[1].since.n, 1);
    assert_true(r.subs[1].since.entries[0].seq == 3);
    assert_string_equal(r.subs[2].channel, "c");
    assert_int_equal(r.subs[2].since.n, 2);
    assert_string_equal(r.subs[2].since.entries[1].origin, "n2.6e");
    assert_true(r.subs[2].since.entries[1].seq == 5);
    assert_int_equal(r.subs[3].has_since, 1);
    assert_int_equal(r.subs[3].since.n, 0);
    assert_int_equal(r.subs[3].channel_len, 1);
    tw_request_free(&r);

    assert_int_equal(dec_json("{\"op\":\"connect\",\"token\":null,\"subs\":null}", &r, &e), 0);
    assert_null(r.token);
    tw_request_free(&r);

    /* a request struct is reused after tw_request_free() */
    for (int i = 0; i < 3; i++) {
        const char *s = "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"a.1:1\"}";
        assert_int_equal(tw_proto_decode(TW_ENC_JSON, (const uint8_t *)s, strlen(s), NULL, &r, &e),
                         0);
        tw_request_free(&r);
    }
}

static void test_decode_publish_json(void **state)
{
    tw_request r;
    tw_proto_error e;
    static const struct {
        const char *data, *stored;
    } cases[] = {
        {"null", "null"},
        {"true", "true"},
        {"0", "0"},
        {" { \"a\" : [ 1 , 2.50 , -0 , 1E2 , 12345678901234567890123 ] , \"b\" : \"x\\u00e9\" } ",
         "{\"a\":[1,2.50,-0,1E2,12345678901234567890123],\"b\":\"x\xc3\xa9\"}"},
        {"\"\\/\\b\\f\\n\\r\\t\\\"\\\\\\u0001\\ud83d\\ude00\"",
         "\"/\\b\\f\\n\\r\\t\\\"\\\\\\u0001\xf0\x9f\x98\x80\""},
        {"9007199254740993", "9007199254740993"},
        {"-9223372036854775808", "-9223372036854775808"},
        {"0.30000000000000004", "0.30000000000000004"},
        {"[[],{},[{}],\"\"]", "[[],{},[{}],\"\"]"},
        {"{\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}"},
        {"1e999", "1e999"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char msg[512];
        snprintf(msg, sizeof msg, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":%s,\"id\":4}",
                 cases[i].data);
        int rc = dec_json(msg, &r, &e);
        if (rc) {
            print_error("%s: %d %s\n", msg, rc, e.message);
            fail();
        }
        assert_int_equal(r.op, TW_OP_PUBLISH);
        assert_int_equal(r.data_encoding, TW_ENC_JSON);
        if (r.data_len != strlen(cases[i].stored) ||
            memcmp(r.data, cases[i].stored, r.data_len) != 0) {
            print_error("data %s stored as %.*s\n", cases[i].data, (int)r.data_len, r.data);
            fail();
        }
        tw_request_free(&r);
    }
}

static void test_decode_msgpack_ops(void **state)
{
    tw_request r;
    tw_proto_error e;
    mpw w;

    /* publish: data kept byte for byte (bin, ext, non-minimal int, float32) */
    mpw_init(&w);
    msgpack_pack_map(&w.pk, 5);
    pk_s(&w, "op");
    pk_s(&w, "publish");
    pk_s(&w, "extra");
    msgpack_pack_bin_with_body(&w.pk, "zz", 2);
    pk_s(&w, "id");
    msgpack_pack_fix_int64(&w.pk, -7);
    pk_s(&w, "channel");
    pk_s(&w, "ch");
    pk_s(&w, "data");
    size_t data_at = w.sb.size;
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_bin_with_body(&w.pk, "\x00\x01", 2);
    msgpack_pack_ext_with_body(&w.pk, "abc", 3, 7);
    msgpack_pack_fix_uint32(&w.pk, 1);
    msgpack_pack_float(&w.pk, 0.5f);
    size_t data_len = w.sb.size - data_at;
    assert_int_equal(dec_mp(w.sb.data, w.sb.size, &r, &e), 0);
    assert_int_equal(r.op, TW_OP_PUBLISH);
    assert_int_equal(r.has_id, 1);
    assert_true(r.id == -7);
    assert_string_equal(r.sub.channel, "ch");
    assert_int_equal(r.data_encoding, TW_ENC_MSGPACK);
    assert_int_equal(r.data_len, data_len);
    assert_memory_equal(r.data, w.sb.data + data_at, data_len);
    tw_request_free(&r);
    msgpack_sbuffer_destroy(&w.sb);

    /* subscribe with a map cursor, uint64 seq, last as uint8, id as uint64 */
    mpw_init(&w);
    msgpack_pack_map(&w.pk, 5);
    pk_s(&w, "id");
    msgpack_pack_uint64(&w.pk, (uint64_t)INT64_MAX);
    pk_s(&w, "op");
    pk_s(&w, "subscribe");
    pk_s(&w, "channel");
    pk_s(&w, "vessel:42");
    pk_s(&w, "since");
    msgpack_pack_map(&w.pk, 2);
    pk_s(&w, "n1.5f2c09ab");
    msgpack_pack_uint64(&w.pk, UINT64_MAX);
    pk_s(&w, "n2.1");
    msgpack_pack_fix_int8(&w.pk, 3);
    pk_s(&w, "last");
    msgpack_pack_fix_uint8(&w.pk, 5);
    assert_int_equal(dec_mp(w.sb.data, w.sb.size, &r, &e), 0);
    assert_int_equal(r.op, TW_OP_SUBSCRIBE);
    assert_true(r.id == INT64_MAX);
    assert_int_equal(r.sub.since.n, 2);
    assert_true(r.sub.since.entries[0].seq == UINT64_MAX);
    assert_true(r.sub.since.entries[1].seq == 3);
    assert_int_equal(r.sub.last, 5);
    tw_request_free(&r);
    msgpack_sbuffer_destroy(&w.sb);

    /* connect with subs; ping; unsubscribe; presence; refresh: via the JSON converter */
    static const struct {
        const char *json;
        tw_op op;
    } cases[] = {
        {"{\"op\":\"connect\",\"token\":\"tok\",\"subs\":{\"a\":null,\"b\":\"n1.5f:3\"}}",
         TW_OP_CONNECT},
        {"{\"op\":\"ping\",\"id\":-9223372036854775808}", TW_OP_PING},
        {"{\"op\":\"unsubscribe\",\"channel\":\"a\"}", TW_OP_UNSUBSCRIBE},
        {"{\"op\":\"presence\",\"channel\":\"a\"}", TW_OP_PRESENCE},
        {"{\"op\":\"refresh\",\"token\":\"t\"}", TW_OP_REFRESH},
        {"{\"op\":\"publish\",\"channel\":\"a\",\"data\":null}", TW_OP_PUBLISH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tw_buf m;
        to_mp(cases[i].json, &m);
        int rc = dec_mp(tw_buf_data(&m), m.len, &r, &e);
        if (rc) {
            print_error("%s: %d %s\n", cases[i].json, rc, e.message);
            fail();
        }
        assert_int_equal(r.op, cases[i].op);
        if (r.op == TW_OP_CONNECT) {
            assert_string_equal(r.token, "tok");
            assert_int_equal(r.nsubs, 2);
            assert_int_equal(r.subs[0].has_since, 0);
            assert_true(r.subs[1].since.entries[0].seq == 3);
        }
        if (r.op == TW_OP_PING) assert_true(r.has_id && r.id == INT64_MIN);
        if (r.op == TW_OP_PUBLISH) assert_true(r.data_len == 1 && r.data[0] == 0xc0);
        tw_request_free(&r);
        tw_buf_free(&m);
    }
}

static void test_decode_limits(void **state)
{
    tw_request r;
    tw_proto_error e;
    tw_proto_limits lim = {.max_channel_len = 3,
                           .max_cursor_entries = 1,
                           .max_last = 5,
                           .max_subs = 1,
                           .max_token_len = 3};
#define LIM_ERR(s, want) check_err(TW_ENC_JSON, s, strlen(s), &lim, 0, 0, want, s)
    LIM_ERR("{\"op\":\"subscribe\",\"channel\":\"abcd\"}", "longer than 3 bytes");
    LIM_ERR("{\"op\":\"subscribe\",\"channel\":\"a\",\"since\":{\"a.1\":1,\"b.1\":1}}",
            "more than 1 entries");
    LIM_ERR("{\"op\":\"subscribe\",\"channel\":\"a\",\"last\":6}", "from 0 to 5");
    LIM_ERR("{\"op\":\"connect\",\"subs\":{\"a\":null,\"b\":null}}", "more than 1 entries");
    LIM_ERR("{\"op\":\"connect\",\"token\":\"abcd\"}", "longer than 3 bytes");
#undef LIM_ERR
    const char *ok = "{\"op\":\"connect\",\"token\":\"abc\",\"subs\":{\"abc\":{\"a.1\":1}}}";
    assert_int_equal(tw_proto_decode(TW_ENC_JSON, (const uint8_t *)ok, strlen(ok), &lim, &r, &e),
                     0);
    tw_request_free(&r);

    /* a limit above what the store takes is held to the store's */
    lim.max_channel_len = 100000;
    char msg[400], ch[257];
    memset(ch, 'x', 256);
    ch[256] = '\0';
    snprintf(msg, sizeof msg, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", ch);
    check_err(TW_ENC_JSON, msg, strlen(msg), &lim, 0, 0, "longer than 255 bytes", "256 ch");
}

/* ---- decoding: refusals, in both encodings -------------------------------------------- */

enum { BOTH = 0, JSON_ONLY = 1 };

static const struct errcase {
    const char *json;
    int has_id;
    int64_t id;
    const char *want;
    int only;
} err_cases[] = {
    {"not json", 0, 0, "not valid JSON", JSON_ONLY},
    {"", 0, 0, "not valid JSON", JSON_ONLY},
    {"{\"op\":\"ping\"", 0, 0, "not valid JSON", JSON_ONLY},
    {"{\"op\":\"ping\"} x", 0, 0, "unexpected bytes after", JSON_ONLY},
    {"{\"op\":\"ping\"}{}", 0, 0, "unexpected bytes after", JSON_ONLY},
    {"[1,2]", 0, 0, "must be a", BOTH},
    {"\"ping\"", 0, 0, "must be a", BOTH},
    {"null", 0, 0, "must be a", BOTH},
    {"{\"id\":3}", 1, 3, "op is required", BOTH},
    {"{\"op\":5,\"id\":3}", 1, 3, "op must be a string", BOTH},
    {"{\"op\":null,\"id\":3}", 1, 3, "op must be a string", BOTH},
    {"{\"op\":\"fly\",\"id\":-2}", 1, -2, "unknown op 'fly'", BOTH},
    {"{\"op\":\"\"}", 0, 0, "unknown op ''", BOTH},
    {"{\"op\":\"PING\"}", 0, 0, "unknown op 'PING'", BOTH},
    {"{\"op\":\"a\\nb\\u00e9\"}", 0, 0,
     "unknown op 'a?b?"
     "?'",
     BOTH},
    {"{\"op\":\"subscribe\",\"id\":1}", 1, 1, "channel is required", BOTH},
    {"{\"op\":\"unsubscribe\",\"id\":1}", 1, 1, "channel is required", BOTH},
    {"{\"op\":\"presence\"}", 0, 0, "channel is required", BOTH},
    {"{\"op\":\"publish\",\"data\":1}", 0, 0, "channel is required", BOTH},
    {"{\"op\":\"subscribe\",\"id\":1,\"channel\":\"\"}", 1, 1, "channel must not be empty", BOTH},
    {"{\"op\":\"publish\",\"id\":1,\"channel\":5,\"data\":1}", 1, 1, "channel must be a string",
     BOTH},
    {"{\"op\":\"subscribe\",\"channel\":null}", 0, 0, "channel must be a string", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":[\"a\"]}", 0, 0, "channel must be a string", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"a b\"}", 0, 0, "visible ASCII", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"\xc3\xa9\"}", 0, 0, "visible ASCII", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"a\\tb\"}", 0, 0, "visible ASCII", BOTH},
    {"{\"op\":\"subscribe\",\"id\":7,\"channel\":\"c\",\"since\":12}", 1, 7, "not a bare number",
     BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab\"}", 0, 0,
     "'n1.5f2c09ab' is not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab:-1\"}", 0, 0,
     "not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab:12x\"}", 0, 0,
     "not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab:\"}", 0, 0, "not a position",
     BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.5f2c09ab:18446744073709551616\"}", 0,
     0, "not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"bad:1\"}", 0, 0, "not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"\"}", 0, 0, "not a position", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.5f2c09ab\":-1}}", 0, 0,
     "seq of 'n1.5f2c09ab' must be a non-negative integer", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.5f2c09ab\":1.5}}", 0, 0,
     "non-negative integer", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.5f2c09ab\":\"3\"}}", 0, 0,
     "non-negative integer", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.5f2c09ab\":null}}", 0, 0,
     "non-negative integer", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.5f2c09ab\":18446744073709551616}}", 0,
     0, "non-negative integer", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"bad origin\":1}}", 0, 0,
     "'bad origin' is not an origin id", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.XYZ\":1}}", 0, 0, "not an origin id",
     BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.\":1}}", 0, 0, "not an origin id",
     BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"a.1\":1,\"a.1\":2}}", 0, 0,
     "names origin 'a.1' twice", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":[1]}", 0, 0, "since must be {", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":true}", 0, 0, "since must be {", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":-1}", 0, 0,
     "last must be an integer from 0 to 10000", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":10001}", 0, 0, "from 0 to 10000", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":1.5}", 0, 0, "from 0 to 10000", BOTH},
    {"{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":\"5\"}", 0, 0, "from 0 to 10000", BOTH},
    {"{\"op\":\"connect\",\"subs\":[]}", 0, 0, "subs must be a map", BOTH},
    {"{\"op\":\"connect\",\"subs\":\"x\"}", 0, 0, "subs must be a map", BOTH},
    {"{\"op\":\"connect\",\"subs\":{\"a b\":null}}", 0, 0,
     "subs['a b'] may only hold visible ASCII", BOTH},
    {"{\"op\":\"connect\",\"subs\":{\"\":null}}", 0, 0, "subs[''] must not be empty", BOTH},
    {"{\"op\":\"connect\",\"id\":8,\"subs\":{\"ok\":null,\"c\":5}}", 1, 8,
     "subs['c'] must be {\"ORIGIN\"", BOTH},
    {"{\"op\":\"connect\",\"subs\":{\"c\":{\"x\":1}}}", 0, 0, "subs['c']: 'x' is not an origin",
     BOTH},
    {"{\"op\":\"connect\",\"token\":5}", 0, 0, "token must be a string", BOTH},
    {"{\"op\":\"refresh\",\"id\":2}", 1, 2, "token is required", BOTH},
    {"{\"op\":\"refresh\",\"token\":null}", 0, 0, "token is required", BOTH},
    {"{\"op\":\"refresh\",\"token\":[]}", 0, 0, "token must be a string", BOTH},
    {"{\"op\":\"publish\",\"id\":11,\"channel\":\"c\"}", 1, 11, "data is required", BOTH},
    {"{\"op\":\"ping\",\"id\":\"5\"}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":1.5}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":9223372036854775808}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":-9223372036854775809}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":1e300}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":true}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"id\":[1]}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"fly\",\"id\":{}}", 0, 0, "id must be an integer", BOTH},
    {"{\"op\":\"ping\",\"op\":\"ping\",\"id\":1}", 1, 1, "duplicate field 'op'", BOTH},
    {"{\"id\":1,\"id\":2,\"op\":\"ping\"}", 0, 0, "duplicate field 'id'", BOTH},
    {"{\"op\":\"a\\u0000b\",\"id\":6}", 1, 6, "\\u0000", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"\\u0000\"}", 0, 0, "\\u0000", JSON_ONLY},
    {"{\"op\":\"ping\",\"id\":6,\"x\":\"\xff\"}", 1, 6, "not valid UTF-8", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"\xc3\"}", 0, 0, "not valid UTF-8", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}", 0, 0, "not valid UTF-8", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}", 0, 0, "not valid UTF-8", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"a\nb\"}", 0, 0, "control character", JSON_ONLY},
    {"{\"op\":\"ping\",\x01\"x\":1}", 0, 0, "control character", JSON_ONLY},
    {"{\"op\":\"ping\",\"id\":3,\"x\":01}", 1, 3, "malformed number", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":1.}", 0, 0, "malformed number", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":-.5}", 0, 0, "malformed number", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":1.e5}", 0, 0, "malformed number", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":+1}", 0, 0, "not valid JSON", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":NaN}", 0, 0, "not valid JSON", JSON_ONLY},
    {"{\"op\":\"ping\",\"x\":\"\\ud800\"}", 0, 0, "not valid JSON", JSON_ONLY},
    {"{'op':'ping'}", 0, 0, "not valid JSON", JSON_ONLY},
};

static void test_decode_errors(void **state)
{
    for (size_t i = 0; i < sizeof err_cases / sizeof *err_cases; i++) {
        const struct errcase *c = &err_cases[i];
        check_err(TW_ENC_JSON, c->json, strlen(c->json), NULL, c->has_id, c->id, c->want, c->json);
        if (c->only == JSON_ONLY) continue;
        tw_buf m;
        to_mp(c->json, &m);
        check_err(TW_ENC_MSGPACK, tw_buf_data(&m), m.len, NULL, c->has_id, c->id, c->want, c->json);
        tw_buf_free(&m);
    }
}

static void test_decode_error_sizes(void **state)
{
    /* a huge unknown op is cut, never echoed whole */
    size_t n = 100000;
    char *msg = malloc(n + 32);
    strcpy(msg, "{\"id\":1,\"op\":\"");
    size_t at = strlen(msg);
    memset(msg + at, 'A', n);
    strcpy(msg + at + n, "\"}");
    tw_request r;
    tw_proto_error e;
    assert_int_equal(dec_json(msg, &r, &e), -EINVAL);
    assert_int_equal(e.code, 400);
    assert_int_equal(e.has_id, 1);
    assert_true(strlen(e.message) < 64);
    assert_non_null(strstr(e.message, "unknown op 'AAAAAAAAAAAAAAAAAAAAAAAA...'"));
    free(msg);

    /* the longest channel in an error label stays within the message */
    char big[600], ch[256];
    memset(ch, '\x7f', 255);
    ch[255] = '\0';
    snprintf(big, sizeof big, "{\"op\":\"connect\",\"subs\":{\"%s\":1}}", ch);
    assert_int_equal(dec_json(big, &r, &e), -EINVAL);
    assert_true(strlen(e.message) < sizeof e.message);

    /* a NUL after the JSON */
    check_err(TW_ENC_JSON, "{\"op\":\"ping\"}\0", 14, NULL, 0, 0, "unexpected bytes after",
              "NUL after");

    /* too many cursor entries, subs, channel too long, token too long */
    tw_buf b;
    tw_buf_init(&b, 0);
    tw_buf_append_str(&b, "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{");
    for (int i = 0; i < 65; i++)
        tw_buf_printf(&b, "%s\"n%d.1\":1", i ? "," : "", i);
    tw_buf_append_str(&b, "}}");
    check_err(TW_ENC_JSON, tw_buf_data(&b), b.len, NULL, 0, 0, "since has more than 64 entries",
              "65 entries");
    tw_buf_reset(&b, 0);
    tw_buf_append_str(&b, "{\"op\":\"connect\",\"subs\":{");
    for (int i = 0; i < 257; i++)
        tw_buf_printf(&b, "%s\"c%d\":null", i ? "," : "", i);
    tw_buf_append_str(&b, "}}");
    check_err(TW_ENC_JSON, tw_buf_data(&b), b.len, NULL, 0, 0, "subs has more than 256 entries",
              "257 subs");
    tw_buf_reset(&b, 0);
    tw_buf_append_str(&b, "{\"op\":\"connect\",\"token\":\"");
    for (int i = 0; i < 8193; i++)
        tw_buf_putc(&b, 't');
    tw_buf_append_str(&b, "\"}");
    check_err(TW_ENC_JSON, tw_buf_data(&b), b.len, NULL, 0, 0, "token is longer than 8192 bytes",
              "long token");
    tw_buf_reset(&b, 0);
    tw_buf_append_str(&b, "{\"op\":\"subscribe\",\"id\":5,\"channel\":\"");
    for (int i = 0; i < 256; i++)
        tw_buf_putc(&b, 'c');
    tw_buf_append_str(&b, "\"}");
    check_err(TW_ENC_JSON, tw_buf_data(&b), b.len, NULL, 1, 5, "channel is longer than 255 bytes",
              "long channel");
    tw_buf_free(&b);
}

static void nested(tw_buf *b, int levels, const char *open, const char *inner, const char *close)
{
    tw_buf_init(b, 0);
    for (int i = 0; i < levels; i++)
        tw_buf_append_str(b, open);
    tw_buf_append_str(b, inner);
    for (int i = 0; i < levels; i++)
        tw_buf_append_str(b, close);
}

static void test_decode_depth(void **state)
{
    tw_request r;
    tw_proto_error e;
    tw_buf b, m;

    /* 1 (the message) + 31 levels of data: accepted in both encodings */
    nested(&b, 31, "[", "1", "]");
    char *msg = malloc(b.len + 64);
    sprintf(msg, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":%.*s}", (int)b.len,
            (const char *)tw_buf_data(&b));
    assert_int_equal(dec_json(msg, &r, &e), 0);
    tw_request_free(&r);
    tw_buf_init(&m, 0);
    tw_buf_append_str(&m, "\x83\xa2op\xa7publish\xa7"
                          "channel\xa1"
                          "c\xa4"
                          "data");
    for (int i = 0; i < 31; i++)
        tw_buf_putc(&m, (char)0x91);
    tw_buf_putc(&m, 0x01);
    assert_int_equal(dec_mp(tw_buf_data(&m), m.len, &r, &e), 0);
    /* and the stored data converts to the other encoding */
    tw_buf out;
    tw_buf_init(&out, 0);
    assert_int_equal(tw_data_convert(TW_ENC_MSGPACK, r.data, r.data_len, TW_ENC_JSON, &out), 0);
    assert_int_equal(out.len, b.len);
    tw_buf_free(&out);
    tw_request_free(&r);
    tw_buf_free(&m);
    free(msg);
    tw_buf_free(&b);

    /* one more is refused */
    nested(&b, 32, "[", "1", "]");
    msg = malloc(b.len + 64);
    sprintf(msg, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":%.*s}", (int)b.len,
            (const char *)tw_buf_data(&b));
    check_err_json(msg, 0, 0, "nests deeper than 32 levels");
    free(msg);
    tw_buf_free(&b);

    /* far deeper than cJSON's own limit: refused before cJSON recurses */
    nested(&b, 100000, "{\"a\":", "1", "}");
    check_err(TW_ENC_JSON, tw_buf_data(&b), b.len, NULL, 0, 0, "nests deeper", "100000 deep");
    tw_buf_free(&b);

    /* MessagePack: 33 levels (map + 32 arrays), and 100000 */
    for (int levels = 32; levels <= 100000; levels = levels == 32 ? 100000 : levels + 1) {
        tw_buf_init(&m, 0);
        tw_buf_append_str(&m, "\x82\xa2op\xa4ping\xa1x");
        for (int i = 0; i < levels; i++)
            tw_buf_putc(&m, (char)0x91);
        tw_buf_putc(&m, 0x01);
        check_err(TW_ENC_MSGPACK, tw_buf_data(&m), m.len, NULL, 0, 0, "nests deeper",
                  "deep msgpack");
        tw_buf_free(&m);
    }
}

static void test_decode_msgpack_malformed(void **state)
{
    tw_request r;
    tw_proto_error e;

    /* every strict prefix of a valid message is refused cleanly */
    tw_buf m;
    to_mp("{\"op\":\"publish\",\"id\":300,\"channel\":\"chan\",\"data\":{\"k\":[1,-2,3.5,\"s\","
          "null,true,{\"n\":18446744073709551615}]}}",
          &m);
    assert_int_equal(dec_mp(tw_buf_data(&m), m.len, &r, &e), 0);
    tw_request_free(&r);
    for (size_t n = 0; n < m.len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, tw_buf_data(&m), n);
        check_err(TW_ENC_MSGPACK, copy, n, NULL, 0, 0, "not valid MessagePack", "prefix");
        free(copy);
    }
    /* trailing bytes */
    tw_buf_putc(&m, 0x00);
    check_err(TW_ENC_MSGPACK, tw_buf_data(&m), m.len, NULL, 0, 0, "unexpected bytes after",
              "trailing");
    tw_buf_free(&m);

#define B(lit) lit, sizeof(lit) - 1
    static const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } cases[] = {
        {B("\xdd\xff\xff\xff\xff"), "not valid MessagePack"},     /* array32 of 4G */
        {B("\xdf\xff\xff\xff\xff"), "not valid MessagePack"},     /* map32 of 4G */
        {B("\xdb\xff\xff\xff\xff"), "not valid MessagePack"},     /* str32 */
        {B("\xc6\xff\xff\xff\xff"), "not valid MessagePack"},     /* bin32 */
        {B("\xc9\xff\xff\xff\xff\x01"), "not valid MessagePack"}, /* ext32 */
        {B("\xde\xff\xff\xa2op"), "not valid MessagePack"},       /* map16 of 65535 */
        {B("\x81\xa2op\xdd\x0f\xff\xff\xff"), "not valid MessagePack"},
        {B("\x81\xa2op\xdd\x0f\xff\xff\xff\xdd\x0f\xff\xff\xff\xdd\x0f\xff\xff\xff"),
         "not valid MessagePack"},
        {B("\xc1"), "not valid MessagePack"},
        {B("\x81\xa2op\xc1"), "not valid MessagePack"},
        {B(""), "not valid MessagePack"},
        {B("\x91\xa2op"), "must be a MessagePack map"},
        {B("\xa4ping"), "must be a MessagePack map"},
        {B("\x81\x01\xa4ping"), "keys must be strings"},
        {B("\x82\xa2op\xa4ping\xc4\x02id\x01"), "keys must be strings"},
        {B("\x81\xa2op\xc4\x04ping"), "op must be a string"},
        {B("\x82\xa2op\xa4ping\xa2id\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"),
         "id must be an integer"}, /* 1.0 as a float64 */
        {B("\x82\xa2op\xa4ping\xa2id\xca\x3f\x80\x00\x00"), "id must be an integer"},
        {B("\x82\xa2op\xa4ping\xa2id\xcf\x80\x00\x00\x00\x00\x00\x00\x00"),
         "id must be an integer"}, /* 2^63 */
        {B("\x83\xa2op\xa9subscribe\xa7"
           "channel\xa1"
           "c\xa5since\x81\x01\x01"),
         "origins must be strings"},
        {B("\x83\xa2op\xa9subscribe\xa7"
           "channel\xa1"
           "c\xa5since\x81\xa3"
           "a.1\xff"),
         "non-negative integer"},
        {B("\x83\xa2op\xa9subscribe\xa7"
           "channel\xa1"
           "c\xa5since\xc4\x05"
           "a.1:1"),
         "since must be {"},
        {B("\x82\xa2op\xa7"
           "connect\xa4subs\x81\x01\xc0"),
         "subs: channels must be strings"},
        {B("\x82\xa2op\xa7"
           "connect\xa5token\xa3t\x00t"),
         "token must not contain NUL"},
        {B("\x82\xa2op\xa9subscribe\xa7"
           "channel\xc4\x01"
           "c"),
         "channel must be a string"},
        /* a map as a key of a map that is itself a key: JSON would escape it twice */
        {B("\x82\xa2op\xa4ping\xa1x\x81\x81\x81\x01\xc0\xc0\xc0"), "may not have one as a key"},
        {B("\x82\xa2op\xa4ping\xa1x\x81\x91\x81\x91\x01\xc0\xc0"), "may not have one as a key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t *copy = malloc(cases[i].len ? cases[i].len : 1);
        memcpy(copy, cases[i].bytes, cases[i].len);
        char what[32];
        snprintf(what, sizeof what, "msgpack case %zu", i);
        check_err(TW_ENC_MSGPACK, copy, cases[i].len, NULL, 0, 0, cases[i].want, what);
        free(copy);
    }
#undef B

    /* an unknown encoding */
    check_err((tw_encoding)7, "{}", 2, NULL, 0, 0, "unknown encoding", "encoding 7");
}

/* ---- cursors ---------------------------------------------------------------------------- */

static void test_cursor_parse_json(void **state)
{
    tw_cursor c;
    tw_proto_error e;
    const char *s = "{\"n1.5f2c09ab\": 1234, \"n2.91ab0c3d\": 88}";
    assert_int_equal(tw_cursor_parse_json(s, strlen(s), NULL, &c, &e), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.entries[0].origin, "n1.5f2c09ab");
    assert_true(c.entries[0].seq == 1234);
    assert_true(c.entries[1].seq == 88);
    tw_buf b;
    tw_buf_init(&b, 0);
    assert_int_equal(tw_cursor_to_json(&b, c.entries, c.n), 0);
    assert_buf_str(&b, "{\"n1.5f2c09ab\":1234,\"n2.91ab0c3d\":88}");
    tw_cursor_free(&c);
    assert_int_equal(c.n, 0);
    assert_null(c.entries);
    tw_cursor_free(&c); /* twice is fine */

    s = "\"n1.5f2c09ab:18446744073709551615\"";
    assert_int_equal(tw_cursor_parse_json(s, strlen(s), NULL, &c, &e), 0);
    assert_int_equal(c.n, 1);
    assert_true(c.entries[0].seq == UINT64_MAX);
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_cursor_to_json(&b, c.entries, c.n), 0);
    assert_buf_str(&b, "{\"n1.5f2c09ab\":18446744073709551615}");
    tw_cursor_free(&c);

    s = " {} ";
    assert_int_equal(tw_cursor_parse_json(s, strlen(s), NULL, &c, &e), 0);
    assert_int_equal(c.n, 0);
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_cursor_to_json(&b, c.entries, c.n), 0);
    assert_buf_str(&b, "{}");
    tw_cursor_free(&c);
    tw_buf_free(&b);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"1234", "not a bare number"},
        {"null", "cursor must be {"},
        {"[]", "cursor must be {"},
        {"", "not valid JSON"},
        {"{\"a.1\":1} {}", "unexpected bytes"},
        {"{\"a.1\":-5}", "non-negative"},
        {"{\"a.1\":1,\"a.1\":1}", "twice"},
        {"\"a.1:1\\u0000\"", "\\u0000"},
        {"{\"a.1\":01}", "malformed number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&c, 0x5a, sizeof c);
        tw_cursor before = c;
        int rc = tw_cursor_parse_json(bad[i].text, strlen(bad[i].text), NULL, &c, &e);
        if (rc != -EINVAL || e.code != 400 || !strstr(e.message, bad[i].want)) {
            print_error("%s: %d %s\n", bad[i].text, rc, e.message);
            fail();
        }
        assert_memory_equal(&c, &before, sizeof c); /* untouched on failure */
    }

    tw_proto_limits lim = tw_proto_default_limits;
    lim.max_cursor_entries = 1;
    s = "{\"a.1\":1,\"b.1\":2}";
    assert_int_equal(tw_cursor_parse_json(s, strlen(s), &lim, &c, &e), -EINVAL);
    assert_non_null(strstr(e.message, "more than 1 entries"));
}

/* ---- encoders: JSON bytes --------------------------------------------------------------- */

static void test_encode_json(void **state)
{
    tw_buf b;
    int64_t id = 7, neg = -1;
    tw_store_cursor_entry cur[2] = {{"n1.5f2c09ab", 17}, {"n2.91ab0c3d", UINT64_MAX}};
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);

#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);                                                   \
        assert_int_equal(call, 0);                                                                 \
        assert_buf_str(&b, want);                                                                  \
    } while (0)

    EXPECT(tw_proto_encode_connected(&b, TW_ENC_JSON, &id, "n1.5f2c09ab", "s-1", 25),
           "{\"op\":\"connected\",\"id\":7,\"node\":\"n1.5f2c09ab\",\"session\":\"s-1\","
           "\"ping_interval\":25}");
    EXPECT(tw_proto_encode_connected(&b, TW_ENC_JSON, NULL, "n1.5f2c09ab", "s-1", 25),
           "{\"op\":\"connected\",\"node\":\"n1.5f2c09ab\",\"session\":\"s-1\","
           "\"ping_interval\":25}");
    /* docs/protocol.md's example, byte for byte */
    int64_t one = 1;
    EXPECT(tw_proto_encode_subscribed(&b, TW_ENC_JSON, &one, "vessel:42", 9, 1, 0, cur, 1),
           "{\"op\":\"subscribed\",\"id\":1,\"channel\":\"vessel:42\",\"recovered\":true,"
           "\"replayed\":false,\"cursor\":{\"n1.5f2c09ab\":17}}");
    EXPECT(tw_proto_encode_subscribed(&b, TW_ENC_JSON, NULL, "a\"b", 3, 0, 1, cur, 2),
           "{\"op\":\"subscribed\",\"channel\":\"a\\\"b\",\"recovered\":false,\"replayed\":true,"
           "\"cursor\":{\"n1.5f2c09ab\":17,\"n2.91ab0c3d\":18446744073709551615}}");
    EXPECT(tw_proto_encode_subscribed(&b, TW_ENC_JSON, NULL, "c", 1, 1, 1, NULL, 0),
           "{\"op\":\"subscribed\",\"channel\":\"c\",\"recovered\":true,\"replayed\":true,"
           "\"cursor\":{}}");
    EXPECT(tw_proto_encode_unsubscribed(&b, TW_ENC_JSON, &neg, "c\\d", 3),
           "{\"op\":\"unsubscribed\",\"id\":-1,\"channel\":\"c\\\\d\"}");
    EXPECT(tw_proto_encode_ack(&b, TW_ENC_JSON, &id, "n1.5f2c09ab", 18),
           "{\"op\":\"ack\",\"id\":7,\"pos\":\"n1.5f2c09ab:18\"}");
    EXPECT(tw_proto_encode_ack(&b, TW_ENC_JSON, NULL, "n1.5f2c09ab", UINT64_MAX),
           "{\"op\":\"ack\",\"pos\":\"n1.5f2c09ab:18446744073709551615\"}");
    EXPECT(tw_proto_encode_pong(&b, TW_ENC_JSON, NULL), "{\"op\":\"pong\"}");
    int64_t min = INT64_MIN;
    EXPECT(tw_proto_encode_pong(&b, TW_ENC_JSON, &min),
           "{\"op\":\"pong\",\"id\":-9223372036854775808}");
    EXPECT(tw_proto_encode_error(&b, TW_ENC_JSON, &id, 400, "unknown op 'x'"),
           "{\"op\":\"error\",\"id\":7,\"code\":400,\"message\":\"unknown op 'x'\"}");
    EXPECT(tw_proto_encode_error(&b, TW_ENC_JSON, NULL, 503, "say \"hi\"\n\\ \xff\xc3\xa9"),
           "{\"op\":\"error\",\"code\":503,\"message\":\"say \\\"hi\\\"\\n\\\\ "
           "\xef\xbf\xbd\xc3\xa9\"}");
    /* docs/protocol.md's event */
    EXPECT(tw_proto_encode_event(&b, TW_ENC_JSON, "vessel:42", 9, "n1.5f2c09ab", 18, 1795000000000,
                                 TW_ENC_JSON, (const uint8_t *)"{\"lat\":59.9}", 12),
           "{\"op\":\"event\",\"channel\":\"vessel:42\",\"pos\":\"n1.5f2c09ab:18\","
           "\"ts\":1795000000000,\"data\":{\"lat\":59.9}}");
    /* same encoding: the data is spliced as it is, never re-parsed */
    const char *odd = "{ \"a\" :1.50 ,\"b\":[ ] }";
    EXPECT(tw_proto_encode_event(&b, TW_ENC_JSON, "c\"", 2, "a.1", 0, -5, TW_ENC_JSON,
                                 (const uint8_t *)odd, strlen(odd)),
           "{\"op\":\"event\",\"channel\":\"c\\\"\",\"pos\":\"a.1:0\",\"ts\":-5,"
           "\"data\":{ \"a\" :1.50 ,\"b\":[ ] }}");
    /* MessagePack data for a JSON subscriber */
    EXPECT(tw_proto_encode_event(&b, TW_ENC_JSON, "c", 1, "a.1", 2, 3, TW_ENC_MSGPACK,
                                 (const uint8_t *)"\x82\xa1x\xc4\x01\x00\x01\xcb\x7f\xf8\x00\x00"
                                                  "\x00\x00\x00\x00",
                                 16),
           "{\"op\":\"event\",\"channel\":\"c\",\"pos\":\"a.1:2\",\"ts\":3,\"data\":{\"x\":"
           "{\"$base64\":\"AA==\"},\"1\":{\"$float\":\"NaN\"}}}");
#undef EXPECT

    /* what is already in the buffer stays, headroom included; failures change nothing */
    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    tw_buf_append_str(&b, "PREFIX");
    assert_int_equal(tw_proto_encode_pong(&b, TW_ENC_JSON, NULL), 0);
    assert_buf_str(&b, "PREFIX{\"op\":\"pong\"}");
    assert_int_equal(b.head, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_JSON, "c", 1, "a.1", 2, 3, TW_ENC_MSGPACK,
                                           (const uint8_t *)"\x92\x01", 2),
                     -EINVAL); /* truncated data */
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_MSGPACK, "c", 1, "a.1", 2, 3, TW_ENC_JSON,
                                           (const uint8_t *)"{\"a\":", 5),
                     -EINVAL);
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_JSON, "c", 1, "a.1", 2, 3, TW_ENC_JSON,
                                           (const uint8_t *)"", 0),
                     -EINVAL);
    char long_origin[80];
    memset(long_origin, 'o', 79);
    long_origin[79] = '\0';
    assert_int_equal(tw_proto_encode_ack(&b, TW_ENC_JSON, NULL, long_origin, 1), -EINVAL);
    assert_int_equal(tw_proto_encode_pong(&b, (tw_encoding)9, NULL), -EINVAL);
    assert_buf_str(&b, "PREFIX{\"op\":\"pong\"}");
    tw_buf_free(&b);
}

/* ---- encoders: MessagePack, read back with msgpack-c ------------------------------------- */

static msgpack_object *mp_check_op(msgpack_unpacked *u, const char *op, size_t nfields)
{
    msgpack_object *o = &u->data;
    assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o->via.map.size, nfields);
    assert_mp_str(&o->via.map.ptr[0].key, "op"); /* op first */
    assert_mp_str(&o->via.map.ptr[0].val, op);
    return o;
}

static void test_encode_msgpack(void **state)
{
    tw_buf b;
    msgpack_unpacked u;
    msgpack_object *o, *v;
    int64_t id = -300;
    tw_store_cursor_entry cur[2] = {{"n1.5f2c09ab", 17}, {"n2.91ab0c3d", UINT64_MAX}};
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);

    assert_int_equal(tw_proto_encode_connected(&b, TW_ENC_MSGPACK, &id, "n1.5f", "s-9", 25), 0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "connected", 5);
    v = mp_get(o, "id");
    assert_true(v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && v->via.i64 == -300);
    assert_mp_str(mp_get(o, "node"), "n1.5f");
    assert_mp_str(mp_get(o, "session"), "s-9");
    v = mp_get(o, "ping_interval");
    assert_true(v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 == 25);
    msgpack_unpacked_destroy(&u);

    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(
        tw_proto_encode_subscribed(&b, TW_ENC_MSGPACK, NULL, "vessel:42", 9, 1, 0, cur, 2), 0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "subscribed", 5);
    assert_null(mp_get(o, "id"));
    assert_mp_str(mp_get(o, "channel"), "vessel:42");
    v = mp_get(o, "recovered");
    assert_true(v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean);
    v = mp_get(o, "replayed");
    assert_true(v->type == MSGPACK_OBJECT_BOOLEAN && !v->via.boolean);
    v = mp_get(o, "cursor");
    assert_int_equal(v->via.map.size, 2);
    assert_true(mp_get(v, "n1.5f2c09ab")->via.u64 == 17);
    assert_true(mp_get(v, "n2.91ab0c3d")->via.u64 == UINT64_MAX);
    msgpack_unpacked_destroy(&u);

    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_unsubscribed(&b, TW_ENC_MSGPACK, &id, "c", 1), 0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "unsubscribed", 3);
    assert_mp_str(mp_get(o, "channel"), "c");
    msgpack_unpacked_destroy(&u);

    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_ack(&b, TW_ENC_MSGPACK, &id, "n1.5f", 42), 0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "ack", 3);
    assert_mp_str(mp_get(o, "pos"), "n1.5f:42");
    msgpack_unpacked_destroy(&u);

    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_pong(&b, TW_ENC_MSGPACK, NULL), 0);
    assert_int_equal(b.len, 9);
    assert_memory_equal(tw_buf_data(&b), "\x81\xa2op\xa4pong", 9);

    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_error(&b, TW_ENC_MSGPACK, &id, 409, "already \xff"), 0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "error", 4);
    assert_true(mp_get(o, "code")->via.u64 == 409);
    assert_mp_str(mp_get(o, "message"), "already \xef\xbf\xbd");
    msgpack_unpacked_destroy(&u);

    /* event: the data's bytes are the message's last bytes, as they were */
    const uint8_t data[] = "\x93\xc4\x02\x00\x01\xd4\x05\x07\xcf\x00\x00\x00\x00\x00\x00\x00\x01";
    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_MSGPACK, "vessel:42", 9, "n1.5f2c09ab", 18,
                                           1795000000000, TW_ENC_MSGPACK, data, sizeof data - 1),
                     0);
    assert_memory_equal(tw_buf_data(&b) + b.len - (sizeof data - 1), data, sizeof data - 1);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "event", 5);
    assert_mp_str(&o->via.map.ptr[1].key, "channel");
    assert_mp_str(&o->via.map.ptr[2].key, "pos");
    assert_mp_str(&o->via.map.ptr[3].key, "ts");
    assert_mp_str(&o->via.map.ptr[4].key, "data");
    assert_mp_str(mp_get(o, "channel"), "vessel:42");
    assert_mp_str(mp_get(o, "pos"), "n1.5f2c09ab:18");
    assert_true(mp_get(o, "ts")->via.u64 == 1795000000000ULL);
    assert_int_equal(mp_get(o, "data")->via.array.size, 3);
    msgpack_unpacked_destroy(&u);

    /* JSON data for a MessagePack subscriber */
    tw_buf_reset(&b, TW_BUF_FRAME_HEADROOM);
    const char *jd = "{\"lat\":59.9,\"n\":-3,\"s\":\"\\u00e9\"}";
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_MSGPACK, "c", 1, "a.1", 1, -1, TW_ENC_JSON,
                                           (const uint8_t *)jd, strlen(jd)),
                     0);
    mp_unpack_all(&b, &u);
    o = mp_check_op(&u, "event", 5);
    assert_true(mp_get(o, "ts")->via.i64 == -1);
    v = mp_get(o, "data");
    assert_true(mp_get(v, "lat")->type == MSGPACK_OBJECT_FLOAT64);
    assert_true(mp_get(v, "lat")->via.f64 == 59.9);
    assert_true(mp_get(v, "n")->via.i64 == -3);
    assert_mp_str(mp_get(v, "s"), "\xc3\xa9");
    msgpack_unpacked_destroy(&u);
    tw_buf_free(&b);
}

/* ---- data conversion ------------------------------------------------------------------ */

static void convert(tw_encoding from, const void *in, size_t n, tw_encoding to, tw_buf *out)
{
    tw_buf_init(out, 0);
    int rc = tw_data_convert(from, in, n, to, out);
    if (rc) {
        print_error("convert %d -> %d of %zu bytes: %d\n", from, to, n, rc);
        fail();
    }
}

static void test_convert_json_roundtrip(void **state)
{
    /* JSON -> MessagePack -> JSON gives the compact form back */
    static const struct {
        const char *in, *out; /* out NULL: same as in */
    } cases[] = {
        {"null", NULL},
        {"true", NULL},
        {"false", NULL},
        {"0", NULL},
        {"-1", NULL},
        {"127", NULL},
        {"-32", NULL},
        {"-33", NULL},
        {"255", NULL},
        {"65536", NULL},
        {"9007199254740993", NULL},
        {"9223372036854775807", NULL},
        {"-9223372036854775808", NULL},
        {"18446744073709551615", NULL},
        {"18446744073709551616", "18446744073709552000.0"}, /* beyond 64 bits: a double */
        {"-9223372036854775809", "-9223372036854776000.0"},
        {"0.1", NULL},
        {"0.30000000000000004", NULL},
        {"1e300", "1e+300"},
        {"1E-7", "1e-7"},
        {"0.000001", NULL},
        {"1e21", "1e+21"},
        {"1e20", "100000000000000000000.0"},
        {"123.456e-300", "1.23456e-298"},
        {"-0.0", NULL},
        {"-0", "0"},
        {"1.0", NULL},
        {"1e2", "100.0"},
        {"2.5e-324", "4.94065645841247e-324"},
        {"1.7976931348623157e308", "1.7976931348623157e+308"},
        {"1e999", "{\"$float\":\"Infinity\"}"},
        {"-1e999", "{\"$float\":\"-Infinity\"}"},
        {"\"\"", NULL},
        {"\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\"", NULL},
        {"\"\\u00e9\\ud83d\\ude00\"", "\"\xc3\xa9\xf0\x9f\x98\x80\""},
        {"\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\"",
         "\"a\\\"b\\\\c/d\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\""},
        {"[]", NULL},
        {"{}", NULL},
        {" [ 1 , [ 2 , [ 3 ] ] ] ", "[1,[2,[3]]]"},
        {"{\"a\":{\"b\":[1,2,{\"c\":null}]},\"\":\"\"}", NULL},
        {"{\"k\":1,\"k\":2}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *in = cases[i].in, *want = cases[i].out ? cases[i].out : cases[i].in;
        tw_buf mp, js, same;
        convert(TW_ENC_JSON, in, strlen(in), TW_ENC_MSGPACK, &mp);
        /* msgpack-c reads what we wrote as one value */
        msgpack_unpacked u;
        mp_unpack_all(&mp, &u);
        msgpack_unpacked_destroy(&u);
        convert(TW_ENC_MSGPACK, tw_buf_data(&mp), mp.len, TW_ENC_JSON, &js);
        if (js.len != strlen(want) || memcmp(tw_buf_data(&js), want, js.len) != 0) {
            print_error("%s -> %.*s, want %s\n", in, (int)js.len, (const char *)tw_buf_data(&js),
                        want);
            fail();
        }
        /* same encoding: checked and compacted */
        convert(TW_ENC_JSON, in, strlen(in), TW_ENC_JSON, &same);
        assert_true(same.len <= strlen(in)); /* never longer: only what must be is escaped */
        tw_buf_free(&same);
        convert(TW_ENC_MSGPACK, tw_buf_data(&mp), mp.len, TW_ENC_MSGPACK, &same);
        assert_int_equal(same.len, mp.len);
        tw_buf_free(&same);
        tw_buf_free(&mp);
        tw_buf_free(&js);
    }
}

static void test_convert_json_to_msgpack_types(void **state)
{
    tw_buf mp;
    msgpack_unpacked u;
    const char *in = "[1,-1,18446744073709551615,-9223372036854775808,0.5,1.0,1e2,"
                     "18446744073709551616,\"s\",{\"k\":true},null]";
    convert(TW_ENC_JSON, in, strlen(in), TW_ENC_MSGPACK, &mp);
    mp_unpack_all(&mp, &u);
    msgpack_object_array *a = &u.data.via.array;
    assert_int_equal(a->size, 11);
    assert_true(a->ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a->ptr[0].via.u64 == 1);
    assert_true(a->ptr[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER && a->ptr[1].via.i64 == -1);
    assert_true(a->ptr[2].via.u64 == UINT64_MAX);
    assert_true(a->ptr[3].via.i64 == INT64_MIN);
    assert_true(a->ptr[4].type == MSGPACK_OBJECT_FLOAT64 && a->ptr[4].via.f64 == 0.5);
    assert_true(a->ptr[5].type == MSGPACK_OBJECT_FLOAT64 && a->ptr[5].via.f64 == 1.0);
    assert_true(a->ptr[6].type == MSGPACK_OBJECT_FLOAT64 && a->ptr[6].via.f64 == 100.0);
    assert_true(a->ptr[7].type == MSGPACK_OBJECT_FLOAT64);
    assert_mp_str(&a->ptr[8], "s");
    assert_true(a->ptr[9].type == MSGPACK_OBJECT_MAP);
    assert_mp_str(&a->ptr[9].via.map.ptr[0].key, "k");
    assert_true(a->ptr[10].type == MSGPACK_OBJECT_NIL);
    msgpack_unpacked_destroy(&u);
    tw_buf_free(&mp);
    /* small values in their smallest forms */
    convert(TW_ENC_JSON, "[1,-1,\"a\"]", 10, TW_ENC_MSGPACK, &mp);
    assert_int_equal(mp.len, 5);
    assert_memory_equal(tw_buf_data(&mp),
                        "\x93\x01\xff\xa1"
                        "a",
                        5);
    tw_buf_free(&mp);
}

static void test_convert_msgpack_forms(void **state)
{
    mpw w;
    tw_buf js;

    mpw_init(&w);
    msgpack_pack_map(&w.pk, 14);
    pk_s(&w, "bin");
    msgpack_pack_bin_with_body(&w.pk, "\x00\x01\x02\xff", 4);
    pk_s(&w, "ext");
    msgpack_pack_ext_with_body(&w.pk, "hi", 2, -3);
    msgpack_pack_int(&w.pk, 1); /* non-string keys */
    msgpack_pack_int(&w.pk, 2);
    msgpack_pack_true(&w.pk);
    msgpack_pack_nil(&w.pk);
    msgpack_pack_nil(&w.pk);
    msgpack_pack_float(&w.pk, 0.1f);
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_int(&w.pk, 1);
    pk_s(&w, "q\"");
    msgpack_pack_double(&w.pk, NAN);
    msgpack_pack_bin_with_body(&w.pk, "", 0);
    msgpack_pack_double(&w.pk, INFINITY);
    msgpack_pack_double(&w.pk, 1.5);
    msgpack_pack_double(&w.pk, -INFINITY);
    pk_s(&w, "f32");
    msgpack_pack_float(&w.pk, 1.0f);
    pk_s(&w, "f64");
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_double(&w.pk, -0.0);
    msgpack_pack_double(&w.pk, 1e300);
    msgpack_pack_double(&w.pk, 0.1);
    msgpack_pack_double(&w.pk, 123456789.0);
    pk_s(&w, "bad\xff utf8");
    msgpack_pack_str_with_body(&w.pk, "a\xe2\x82z\xc0\xaf\xed\xa0\x80\xf0\x9f\x98", 12);
    pk_s(&w, "ints");
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_fix_int8(&w.pk, 5);
    msgpack_pack_int64(&w.pk, INT64_MIN);
    msgpack_pack_uint64(&w.pk, UINT64_MAX);
    msgpack_pack_fix_int16(&w.pk, -200);
    pk_s(&w, "ts");
    msgpack_pack_ext_with_body(&w.pk, "\x00\x00\x00\x01", 4, -1);
    pk_s(&w, "b64");
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_bin_with_body(&w.pk, "a", 1);
    msgpack_pack_bin_with_body(&w.pk, "ab", 2);
    msgpack_pack_bin_with_body(&w.pk, "abc", 3);

    convert(TW_ENC_MSGPACK, w.sb.data, w.sb.size, TW_ENC_JSON, &js);
    assert_buf_str(&js, "{\"bin\":{\"$base64\":\"AAEC/w==\"},"
                        "\"ext\":{\"$ext\":-3,\"$base64\":\"aGk=\"},"
                        "\"1\":2,"
                        "\"true\":null,"
                        "\"null\":0.1,"
                        "\"[1,\\\"q\\\\\\\"\\\"]\":{\"$float\":\"NaN\"},"
                        "\"{\\\"$base64\\\":\\\"\\\"}\":{\"$float\":\"Infinity\"},"
                        "\"1.5\":{\"$float\":\"-Infinity\"},"
                        "\"f32\":1.0,"
                        "\"f64\":[-0.0,1e+300,0.1,123456789.0],"
                        "\"bad\xef\xbf\xbd utf8\":\"a\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd\xef\xbf"
                        "\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\","
                        "\"ints\":[5,-9223372036854775808,18446744073709551615,-200],"
                        "\"ts\":{\"$ext\":-1,\"$base64\":\"AAAAAQ==\"},"
                        "\"b64\":[{\"$base64\":\"YQ==\"},{\"$base64\":\"YWI=\"},"
                        "{\"$base64\":\"YWJj\"}]}");
    tw_buf_free(&js);
    msgpack_sbuffer_destroy(&w.sb);

    /* float32 shortest forms */
    static const struct {
        float f;
        const char *want;
    } f32[] = {{0.1f, "0.1"},
               {1.00000012f, "1.0000001"},
               {3.4028235e38f, "3.4028235e+38"},
               {-2.5f, "-2.5"},
               {1e-45f, "1.4013e-45"},
               {16777216.0f, "16777216.0"},
               {1e10f, "10000000000.0"},
               {1e-7f, "1e-7"},
               {1.5e22f, "1.5e+22"}};
    for (size_t i = 0; i < sizeof f32 / sizeof *f32; i++) {
        mpw_init(&w);
        msgpack_pack_float(&w.pk, f32[i].f);
        convert(TW_ENC_MSGPACK, w.sb.data, w.sb.size, TW_ENC_JSON, &js);
        assert_buf_str(&js, f32[i].want);
        tw_buf_free(&js);
        msgpack_sbuffer_destroy(&w.sb);
    }
}

static void test_convert_double_roundtrip(void **state)
{
    /* every float64 printed reads back as itself */
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, 8);
        if (!isfinite(d)) continue;
        uint8_t m[9] = {0xcb};
        for (int k = 0; k < 8; k++)
            m[1 + k] = (uint8_t)(x >> (56 - 8 * k));
        tw_buf js;
        convert(TW_ENC_MSGPACK, m, 9, TW_ENC_JSON, &js);
        tw_buf_putc(&js, '\0');
        char *end;
        double back = strtod((const char *)tw_buf_data(&js), &end);
        assert_true(*end == '\0');
        assert_memory_equal(&back, &d, 8);
        /* and back to MessagePack as the same double */
        tw_buf mp;
        convert(TW_ENC_JSON, tw_buf_data(&js), js.len - 1, TW_ENC_MSGPACK, &mp);
        assert_int_equal(mp.len, 9);
        assert_memory_equal(tw_buf_data(&mp), m, 9);
        tw_buf_free(&mp);
        tw_buf_free(&js);
    }
}

static void test_convert_invalid(void **state)
{
    tw_buf b, d;
    tw_buf_init(&b, 0);
    tw_buf_append_str(&b, "keep");
    static const struct {
        tw_encoding from;
        const char *in;
        size_t len;
    } bad[] = {
        {TW_ENC_MSGPACK, "", 0},
        {TW_ENC_MSGPACK, "\x92\x01", 2},
        {TW_ENC_MSGPACK, "\x01\x02", 2},
        {TW_ENC_MSGPACK, "\xc1", 1},
        {TW_ENC_MSGPACK, "\xdd\xff\xff\xff\xff", 5},
        {TW_ENC_MSGPACK, "\xdf\xff\xff\xff\xff\x01\x01", 7},
        {TW_ENC_MSGPACK,
         "\xc7\x05\x01"
         "abc",
         6},
        {TW_ENC_MSGPACK, "\x81\x81\x81\x01\xc0\xc0\xc0", 7},
        {TW_ENC_MSGPACK, "\x81\x91\x81\x91\x01\xc0\xc0", 7},
        {TW_ENC_JSON, "", 0},
        {TW_ENC_JSON, "{", 1},
        {TW_ENC_JSON, "1 2", 3},
        {TW_ENC_JSON, "\"\\u0000\"", 8},
        {TW_ENC_JSON, "\"\xff\"", 3},
        {TW_ENC_JSON, "01", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        for (int to = TW_ENC_JSON; to <= TW_ENC_MSGPACK; to++) {
            int rc = tw_data_convert(bad[i].from, (const uint8_t *)bad[i].in, bad[i].len,
                                     (tw_encoding)to, &b);
            if (rc != -EINVAL) {
                print_error("bad case %zu -> %d: %d\n", i, to, rc);
                fail();
            }
            assert_buf_str(&b, "keep");
        }
    }
    assert_int_equal(tw_data_convert((tw_encoding)5, (const uint8_t *)"1", 1, TW_ENC_JSON, &b),
                     -EINVAL);
    assert_int_equal(tw_data_convert(TW_ENC_JSON, (const uint8_t *)"1", 1, (tw_encoding)5, &b),
                     -EINVAL);

    /* one level of keys that are maps converts; their keys are escaped twice */
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_data_convert(TW_ENC_MSGPACK,
                                     (const uint8_t *)"\x81\x81\x01\xa2"
                                                      "a\"\xc3",
                                     7, TW_ENC_JSON, &b),
                     0);
    assert_buf_str(&b, "{\"{\\\"1\\\":\\\"a\\\\\\\"\\\"}\":true}");

    /* the worst case for size: 31 levels of keys that are maps is refused, not 2^31 bytes */
    tw_buf_init(&d, 0);
    for (int i = 0; i < 31; i++)
        tw_buf_putc(&d, (char)0x81);
    tw_buf_append(&d, "\xa1\"\xc0", 3);
    for (int i = 1; i < 31; i++)
        tw_buf_putc(&d, (char)0xc0);
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_data_convert(TW_ENC_MSGPACK, tw_buf_data(&d), d.len, TW_ENC_JSON, &b),
                     -EINVAL);
    assert_int_equal(b.len, 0);
    tw_buf_free(&d);

    /* data depth: 31 levels convert, 32 do not */
    nested(&d, 31, "[", "", "]");
    assert_int_equal(tw_data_convert(TW_ENC_JSON, tw_buf_data(&d), d.len, TW_ENC_MSGPACK, &b), 0);
    tw_buf_free(&d);
    nested(&d, 32, "[", "", "]");
    assert_int_equal(tw_data_convert(TW_ENC_JSON, tw_buf_data(&d), d.len, TW_ENC_MSGPACK, &b),
                     -EINVAL);
    tw_buf_free(&d);
    tw_buf_init(&d, 0);
    for (int i = 0; i < 32; i++)
        tw_buf_putc(&d, (char)0x91);
    tw_buf_putc(&d, (char)0xc0);
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_data_convert(TW_ENC_MSGPACK, tw_buf_data(&d), d.len, TW_ENC_JSON, &b),
                     -EINVAL);
    assert_int_equal(
        tw_data_convert(TW_ENC_MSGPACK, tw_buf_data(&d) + 1, d.len - 1, TW_ENC_JSON, &b), 0);
    assert_int_equal(b.len, 31 * 2 + 4);
    tw_buf_free(&d);
    tw_buf_free(&b);
}

/* The ack is laid out in one piece when its origin needs no escaping: the extremes, and an
 * origin that is not an id (the general path, escaped). */
static void test_encode_ack_json(void **state)
{
    static const struct {
        int has_id;
        int64_t id;
        const char *origin;
        uint64_t seq;
        const char *want;
    } cases[] = {
        {1, INT64_MIN, "abcdefghijklmnopqrstuvwxyz012345.0123456789abcde", UINT64_MAX,
         "{\"op\":\"ack\",\"id\":-9223372036854775808,\"pos\":"
         "\"abcdefghijklmnopqrstuvwxyz012345.0123456789abcde:18446744073709551615\"}"},
        {1, INT64_MAX, "n.0", 0, "{\"op\":\"ack\",\"id\":9223372036854775807,\"pos\":\"n.0:0\"}"},
        {1, 0, "n-_.f", 1, "{\"op\":\"ack\",\"id\":0,\"pos\":\"n-_.f:1\"}"},
        {0, 0, "a\"b", 5, "{\"op\":\"ack\",\"pos\":\"a\\\"b:5\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tw_buf b;
        tw_buf_init(&b, 0);
        assert_int_equal(tw_proto_encode_ack(&b, TW_ENC_JSON, cases[i].has_id ? &cases[i].id : NULL,
                                             cases[i].origin, cases[i].seq),
                         0);
        assert_int_equal(b.len, strlen(cases[i].want));
        assert_memory_equal(tw_buf_data(&b), cases[i].want, b.len);
        tw_buf_free(&b);
    }
}

/* ---- the one-pass JSON reader against the reference reader ---------------------------- */

/* Decodes msg with the one-pass reader on and off: the two results must be the same. */
static void same_both_ways(const char *msg, size_t len, tw_op implied, int want_ok)
{
    tw_request r[2];
    tw_proto_error e[2];
    int rc[2];
    for (int k = 0; k < 2; k++) {
        tw_proto__json_one_pass = !k;
        memset(&r[k], 0, sizeof r[k]);
        memset(&e[k], 0, sizeof e[k]);
        rc[k] =
            tw_proto_decode_as(TW_ENC_JSON, implied, (const uint8_t *)msg, len, NULL, &r[k], &e[k]);
    }
    tw_proto__json_one_pass = 1;
    if (rc[0] != rc[1]) {
        print_error("%.*s: one pass %d, reference %d (%s)\n", (int)len, msg, rc[0], rc[1],
                    e[1].message);
        fail();
    }
    if (want_ok >= 0 && (rc[0] == 0) != want_ok) {
        print_error("%.*s: %d (%s)\n", (int)len, msg, rc[0], e[0].message);
        fail();
    }
    if (rc[0]) {
        assert_int_equal(e[0].code, e[1].code);
        assert_int_equal(e[0].has_id, e[1].has_id);
        assert_true(e[0].id == e[1].id);
        assert_string_equal(e[0].message, e[1].message);
        return;
    }
    assert_int_equal(r[0].op, r[1].op);
    assert_int_equal(r[0].has_id, r[1].has_id);
    assert_true(r[0].id == r[1].id);
    assert_int_equal(r[0].sub.channel_len, r[1].sub.channel_len);
    if (r[0].sub.channel) assert_string_equal(r[0].sub.channel, r[1].sub.channel);
    assert_int_equal(r[0].sub.has_since, r[1].sub.has_since);
    assert_int_equal(r[0].sub.since.n, r[1].sub.since.n);
    for (size_t i = 0; i < r[0].sub.since.n; i++) {
        assert_string_equal(r[0].sub.since.entries[i].origin, r[1].sub.since.entries[i].origin);
        assert_true(r[0].sub.since.entries[i].seq == r[1].sub.since.entries[i].seq);
    }
    assert_int_equal(r[0].sub.last, r[1].sub.last);
    assert_int_equal(r[0].data_encoding, r[1].data_encoding);
    assert_int_equal(r[0].data_len, r[1].data_len);
    if (r[0].data_len) assert_memory_equal(r[0].data, r[1].data, r[0].data_len);
    assert_int_equal(!r[0].token, !r[1].token);
    if (r[0].token) assert_string_equal(r[0].token, r[1].token);
    assert_int_equal(r[0].nsubs, r[1].nsubs);
    for (size_t i = 0; i < r[0].nsubs; i++) {
        assert_string_equal(r[0].subs[i].channel, r[1].subs[i].channel);
        assert_int_equal(r[0].subs[i].has_since, r[1].subs[i].has_since);
        assert_int_equal(r[0].subs[i].since.n, r[1].subs[i].since.n);
        for (size_t k = 0; k < r[0].subs[i].since.n; k++)
            assert_true(r[0].subs[i].since.entries[k].seq == r[1].subs[i].since.entries[k].seq);
    }
    tw_request_free(&r[0]);
    tw_request_free(&r[1]);
}

static void test_decode_json_one_pass(void **state)
{
    /* want: 1 accepted, 0 refused, -1 either (the reference decides) */
    static const struct {
        int want;
        const char *msg;
    } cases[] = {
        {1, "{\"op\":\"publish\",\"id\":7,\"channel\":\"c\",\"data\":{\"t\":1,\"p\":\"xx\"}}"},
        {1, " {\"op\" : \"publish\" ,\t\"channel\":\"c\",\r\n\"data\": [ 1 , { } , [ ] ] } \n"},
        {1, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u0041"
            "\\u00e9\\u20ac\\u001f\\u007f\"}"},
        {1, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":{\"k\\u00e9y\":\"\xc3\xa9\xe2\x82\xac"
            "\xf0\x9f\x98\x80\"}}"},
        {1, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":[-0,0.5e-3,1E+2,18446744073709551616,"
            "-9223372036854775809,true,false,null]}"},
        {1, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":{\"a\":1,\"a\":2},\"x\":{\"op\":1}}"},
        {1, "{\"id\":5.0,\"op\":\"ping\"}"},
        {1, "{\"op\":\"ping\",\"id\":-9223372036854775808,\"extra\":\"\\u00e9\"}"},
        {1,
         "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n1.a\":5,\"n2.b\":0},\"last\":9}"},
        {1, "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"n1.a:5\",\"last\":null}"},
        {1, "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{ }}"},
        {1, "{\"op\":\"connect\",\"token\":\"t.t.t\",\"subs\":{\"a\":null,\"b\":{\"n.1\":3},"
            "\"c\":\"n.1:4\"}}"},
        {1, "{\"op\":\"refresh\",\"token\":\"abc\"}"},
        {1, "{\"op\":\"unsubscribe\",\"channel\":\"c\"}"},
        {1, "{\"op\":\"presence\",\"channel\":\"c\",\"id\":1}"},
        /* the reference reader's cases */
        {1, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":\"\\ud83d\\ude00\"}"},
        {0, "{\"op\":\"ping\",\"op\":\"ping\"}"},
        {0, "{\"op\":\"ping\",\"id\":1,\"id\":2}"},
        {0, "{\"op\":\"nope\",\"id\":3}"},
        {0, "{\"op\":\"publish\",\"id\":3,\"channel\":\"\"}"},
        {0, "{\"op\":\"publish\",\"id\":3,\"channel\":\"c\"}"},
        {0, "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"bad\":1},\"id\":8}"},
        {0, "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":{\"n.1\":1,\"n.1\":2}}"},
        {0, "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":10001}"},
        {0, "{\"op\":\"ping\",\"id\":1.5}"},
        {0, "{\"op\":\"ping\",\"id\":01}"},
        {0, "{\"op\":\"ping\"} x"},
        {0, "[1]"},
        {0, "{\"op\":\"ping\",\"x\":\"\\u0000\"}"},
        {0, "{\"op\":\"ping\",\"x\":\"\\ud800\"}"},
        {0, "{\"op\":\"ping\",\"x\":\"\x01\"}"},
        {0, "{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}"},
        {0, "{\"op\":\"ping\",\"x\":\"\\x\"}"},
        {0, "{\"op\":\"ping\",\"x\":1.}"},
        {0, "{\"op\":\"ping\",\"x\":tru}"},
        {0, "{\"op\":\"ping\",}"},
        {0, "{\"op\":\"ping\"\x0b}"},
        {0, ""},
        /* accepted by the reference only, or refused: either way its answer */
        {-1, "\xef\xbb\xbf{\"op\":\"ping\"}"},
        {-1, "{\"\\u006fp\":\"ping\"}"},
        {-1, "{\"op\":\"p\\u0069ng\"}"},
        {-1, "{\"op\":\"ping\",\"x\":\"\\ud83d\\ude00\"}"},
        {-1,
         "{\"op\":\"ping\",\"x\":123456789012345678901234567890123456789012345678901234567890123}"},
        {-1, "{\"op\":\"ping\",\"x\":"
             "1234567890123456789012345678901234567890123456789012345678901234}"},
        {-1,
         "{\"op\":\"ping\",\"x\":12345678901234567890123456789012345678901234567890123456789012}"},
        {-1, "{\"op\":\"ping\",\"x\":\"\\ud83d\"}"},
        {-1, "{\"op\":\"ping\",\"x\":\"\\ude00\\ud83d\"}"},
        {-1, "\x0c{\"op\":\"ping\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        same_both_ways(cases[i].msg, strlen(cases[i].msg), TW_OP_NONE, cases[i].want);
    /* the HTTP API's bodies */
    const char *body = "{\"channel\":\"c\",\"data\":{\"v\": 1},\"op\":\"ignored\"}";
    same_both_ways(body, strlen(body), TW_OP_PUBLISH, 1);
    /* nesting: 32 levels in all are read in one pass, 33 are the reference's error */
    char deep[256];
    for (int levels = 30; levels <= 34; levels++) {
        int n = snprintf(deep, sizeof deep, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":");
        for (int k = 1; k < levels; k++)
            deep[n++] = '[';
        for (int k = 1; k < levels; k++)
            deep[n++] = ']';
        deep[n++] = '}';
        deep[n] = '\0';
        same_both_ways(deep, (size_t)n, TW_OP_NONE, levels <= 32);
    }
    /* every prefix of a message with everything in it */
    const char *all =
        "{\"op\":\"publish\", \"id\":12,\"channel\":\"c:1\",\"data\":{\"a\":[1,-2.5e3,"
        "\"x\\n\\u00e9\"],\"b\":{}, \"c\":null},\"since\":{\"n.1\":2}}";
    for (size_t n = 0; n <= strlen(all); n++)
        same_both_ways(all, n, TW_OP_NONE, n == strlen(all) ? 1 : -1);
}

/* ---- event length: exact before encoding --------------------------------------------- */

static int sbuf_write(void *data, const char *p, size_t n)
{
    return tw_buf_append(data, p, n);
}

/* The event message as its pieces make it: JSON from the escaped strings and printf'd
 * numbers, MessagePack from msgpack-c's packer. */
static void event_expected(tw_buf *out, tw_encoding enc, const char *ch, size_t cl,
                           const char *origin, uint64_t seq, int64_t ts, const uint8_t *data,
                           size_t dl)
{
    char pos[TW_STORE_ORIGIN_MAX + 32];
    int pl = snprintf(pos, sizeof pos, "%s:%llu", origin, (unsigned long long)seq);
    tw_buf_init(out, 0);
    if (enc == TW_ENC_JSON) {
        assert_int_equal(tw_buf_append_str(out, "{\"op\":\"event\",\"channel\":"), 0);
        assert_int_equal(tw_buf_append_json_string(out, ch, cl), 0);
        assert_int_equal(tw_buf_append_str(out, ",\"pos\":"), 0);
        assert_int_equal(tw_buf_append_json_string(out, pos, (size_t)pl), 0);
        assert_int_equal(tw_buf_printf(out, ",\"ts\":%lld,\"data\":", (long long)ts), 0);
        assert_int_equal(tw_buf_append(out, data, dl), 0);
        assert_int_equal(tw_buf_putc(out, '}'), 0);
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, sbuf_write);
    assert_int_equal(msgpack_pack_map(&pk, 5), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "op", 2), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "event", 5), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "channel", 7), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, ch, cl), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "pos", 3), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, pos, (size_t)pl), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "ts", 2), 0);
    assert_int_equal(msgpack_pack_int64(&pk, ts), 0);
    assert_int_equal(msgpack_pack_str_with_body(&pk, "data", 4), 0);
    assert_int_equal(tw_buf_append(out, data, dl), 0);
}

/* tw_proto_event_len() is the length tw_proto_encode_event() writes, for channel names that
 * need escapes (and str8 heads), origins up to the longest, and every width of seq and ts in
 * both encodings; the bytes are those the pieces make. */
static void test_event_len_exact(void **state)
{
    char ch255[256], ch32[33], ch31[32], origin_max[TW_STORE_ORIGIN_MAX + 1];
    memset(ch255, '\\', 255);
    for (size_t i = 0; i < 255; i += 3)
        ch255[i] = (char)(i % 5 == 0 ? '"' : 'a' + i % 26);
    memset(ch32, 'q', 32);
    memset(ch31, 'q', 31);
    ch31[7] = '"';
    memset(origin_max, 'o', TW_STORE_ORIGIN_MAX);
    origin_max[TW_STORE_ORIGIN_MAX] = '\0';
    const struct {
        const char *s;
        size_t n;
    } chans[] = {{"c", 1},   {"vessel:42", 9}, {"a\"b\\c", 5}, {"\x01\n\t\x7f\xc3\xa9", 6},
                 {ch31, 31}, {ch32, 32},       {ch255, 255},   {ch255 + 1, 200}};
    const char *origins[] = {"a.1", "n1.5f2c09ab", "q\"x.1", origin_max};
    const uint64_t seqs[] = {0,         9,         10,         99,         100,
                             12345,     999999999, 1000000000, 1ULL << 53, 9999999999999999999ULL,
                             UINT64_MAX};
    const int64_t tss[] = {INT64_MIN, -2147483649LL, -2147483648LL, -32769,       -32768,
                           -129,      -128,          -33,           -32,          -1,
                           0,         127,           128,           255,          256,
                           65535,     65536,         4294967295LL,  4294967296LL, 1795000000000LL,
                           INT64_MAX};
    const uint8_t jd[] = "{\"lat\":59.9}", md[] = "\x81\xa3lat\xcb\x40\x4d\xf3\x33\x33\x33\x33\x33";
    for (int enc = TW_ENC_JSON; enc <= TW_ENC_MSGPACK; enc++) {
        const uint8_t *data = enc == TW_ENC_JSON ? jd : md;
        size_t dl = enc == TW_ENC_JSON ? sizeof jd - 1 : sizeof md - 1;
        for (size_t c = 0; c < sizeof chans / sizeof chans[0]; c++)
            for (size_t o = 0; o < sizeof origins / sizeof origins[0]; o++)
                for (size_t q = 0; q < sizeof seqs / sizeof seqs[0]; q++)
                    for (size_t t = 0; t < sizeof tss / sizeof tss[0]; t++) {
                        tw_buf b, want;
                        size_t n = tw_proto_event_len((tw_encoding)enc, chans[c].s, chans[c].n,
                                                      origins[o], seqs[q], tss[t], dl);
                        tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
                        assert_int_equal(tw_proto_encode_event(&b, (tw_encoding)enc, chans[c].s,
                                                               chans[c].n, origins[o], seqs[q],
                                                               tss[t], (tw_encoding)enc, data, dl),
                                         0);
                        event_expected(&want, (tw_encoding)enc, chans[c].s, chans[c].n, origins[o],
                                       seqs[q], tss[t], data, dl);
                        assert_int_equal(b.len, n);
                        assert_int_equal(want.len, n);
                        assert_memory_equal(tw_buf_data(&b), tw_buf_data(&want), n);
                        tw_buf_free(&b);
                        tw_buf_free(&want);
                    }
    }
    /* after what a buffer holds already: only the message's own bytes count */
    tw_buf b;
    tw_buf_init(&b, 0);
    assert_int_equal(tw_buf_append_str(&b, "PREFIX"), 0);
    assert_int_equal(tw_proto_encode_event(&b, TW_ENC_JSON, "c", 1, "a.1", 2, 3, TW_ENC_JSON,
                                           (const uint8_t *)"1", 1),
                     0);
    assert_int_equal(b.len, 6 + tw_proto_event_len(TW_ENC_JSON, "c", 1, "a.1", 2, 3, 1));
    assert_buf_str(
        &b, "PREFIX{\"op\":\"event\",\"channel\":\"c\",\"pos\":\"a.1:2\",\"ts\":3,\"data\":1}");
    tw_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_origin_channel_valid),
        cmocka_unit_test(test_decode_ping_ids),
        cmocka_unit_test(test_decode_subscribe),
        cmocka_unit_test(test_decode_other_ops),
        cmocka_unit_test(test_decode_publish_json),
        cmocka_unit_test(test_decode_msgpack_ops),
        cmocka_unit_test(test_decode_limits),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_decode_error_sizes),
        cmocka_unit_test(test_decode_depth),
        cmocka_unit_test(test_decode_msgpack_malformed),
        cmocka_unit_test(test_cursor_parse_json),
        cmocka_unit_test(test_encode_json),
        cmocka_unit_test(test_encode_msgpack),
        cmocka_unit_test(test_event_len_exact),
        cmocka_unit_test(test_convert_json_roundtrip),
        cmocka_unit_test(test_convert_json_to_msgpack_types),
        cmocka_unit_test(test_convert_msgpack_forms),
        cmocka_unit_test(test_convert_double_roundtrip),
        cmocka_unit_test(test_convert_invalid),
        cmocka_unit_test(test_decode_json_one_pass),
        cmocka_unit_test(test_encode_ack_json),
    };
    /* Every case twice: JSON read in one pass (the default), then by the reference reader
     * alone (jdoc_load + cJSON), which the one-pass reader must match. */
    int failed = cmocka_run_group_tests_name("one pass", tests, NULL, NULL);
    tw_proto__json_one_pass = 0;
    failed += cmocka_run_group_tests_name("reference", tests, NULL, NULL);
    tw_proto__json_one_pass = 1;
    return failed;
}
