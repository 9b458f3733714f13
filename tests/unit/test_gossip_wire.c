/*
 * test_gossip_wire.c — gossip/wire.c: every message type round-trips, and the decoder
 * refuses every malformed input (each truncation of a valid message, trailing bytes,
 * lying counts and lengths, bad versions, types, states, flags and seq runs) without
 * allocating more than the message holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gossip_wire.h"

/* Every strict prefix of a valid message is refused. */
static void assert_prefixes_refused(const tw_gw_buf *b)
{
    tw_gw_msg m;

    for (size_t n = 0; n < b->len; n++)
        assert_int_equal(tw_gw_decode(b->p, n, &m), TW_GOSSIP_EINVAL);
}

/* One byte more is refused too. */
static void assert_trailing_refused(tw_gw_buf *b)
{
    unsigned char *p = malloc(b->len + 1);
    tw_gw_msg m;

    assert_non_null(p);
    memcpy(p, b->p, b->len);
    p[b->len] = 0;
    assert_int_equal(tw_gw_decode(p, b->len + 1, &m), TW_GOSSIP_EINVAL);
    free(p);
}

static void build_hb(tw_gw_buf *b, uint8_t type)
{
    tw_gw_buf_reset(b);
    tw_gw_put_header(b, type, "n1", 77);
    tw_gw_put_hb_start(b, "n1.5f2c09ab", "tcp://127.0.0.1:24001", "tcp://localhost:24001",
                       TW_MEMBER_ALIVE, 2);
    tw_gw_put_hb_member(b, "n2", "tcp://127.0.0.1:24002", TW_MEMBER_SUSPECT, 5);
    tw_gw_put_hb_member(b, "n3", "tcp://127.0.0.1:24003", TW_MEMBER_LEFT, 6);
    tw_gw_put_u16(b, 1);
    tw_gw_put_str(b, "tcp://n1:24001", 14, TW_GOSSIP_ADDR_MAX);
    tw_gw_put_u16(b, 2);
    tw_gw_put_digest(b, "n1.5f2c09ab", 42);
    tw_gw_put_digest(b, "n2.91ab0000", UINT64_MAX);
    assert_int_equal(b->err, 0);
}

static void test_heartbeat_roundtrip(void **state)
{
    tw_gw_buf b;
    tw_gw_msg m;

    (void)state;
    tw_gw_buf_init(&b);
    for (uint8_t type = TW_GW_HELLO; type <= TW_GW_HEARTBEAT; type++) {
        build_hb(&b, type);
        assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
        assert_int_equal(m.type, type);
        assert_string_equal(m.sender, "n1");
        assert_int_equal(m.incarnation, 77);
        assert_string_equal(m.origin, "n1.5f2c09ab");
        assert_string_equal(m.addr, "tcp://127.0.0.1:24001");
        assert_string_equal(m.to_addr, "tcp://localhost:24001");
        assert_int_equal(m.state, TW_MEMBER_ALIVE);
        assert_int_equal(m.nmembers, 2);
        assert_string_equal(m.members[1].name, "n3");
        assert_string_equal(m.members[1].addr, "tcp://127.0.0.1:24003");
        assert_int_equal(m.members[1].state, TW_MEMBER_LEFT);
        assert_int_equal(m.members[1].incarnation, 6);
        assert_int_equal(m.naliases, 1);
        assert_string_equal(m.aliases[0], "tcp://n1:24001");
        assert_int_equal(m.ndigest, 2);
        assert_int_equal(m.digest[0].seq, 42);
        assert_string_equal(m.digest[1].origin, "n2.91ab0000");
        assert_int_equal(m.digest[1].seq, UINT64_MAX);
        tw_gw_msg_free(&m);
        assert_prefixes_refused(&b);
        assert_trailing_refused(&b);
    }
    tw_gw_buf_free(&b);
}

static void build_events(tw_gw_buf *b, uint64_t first, uint32_t n, int break_run)
{
    size_t off;

    tw_gw_buf_reset(b);
    tw_gw_put_header(b, TW_GW_EVENTS, "n2", 1);
    tw_gw_put_events_start(b, "n2.91ab0000", TW_GW_EV_FETCH_REPLY, 99, 1, &off);
    for (uint32_t i = 0; i < n; i++) {
        char data[8];
        uint64_t seq = first + i + (break_run && i == n - 1);
        memset(data, 'a' + (int)i, sizeof data);
        tw_gw_put_event(b, seq, -5 - (int64_t)i, (uint8_t)(i & 1), "vessel:42", 9, data,
                        i == 0 ? 0 : sizeof data);
    }
    tw_gw_events_finish(b, off, first, n);
    assert_int_equal(b->err, 0);
}

static void test_events_roundtrip(void **state)
{
    tw_gw_buf b;
    tw_gw_msg m;

    (void)state;
    tw_gw_buf_init(&b);
    build_events(&b, 40, 3, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.type, TW_GW_EVENTS);
    assert_string_equal(m.origin, "n2.91ab0000");
    assert_int_equal(m.flags, TW_GW_EV_FETCH_REPLY);
    assert_int_equal(m.last_known, 99);
    assert_int_equal(m.first_seq, 40);
    assert_int_equal(m.nevents, 3);
    assert_int_equal(m.events[0].data_len, 0);
    assert_int_equal(m.events[2].seq, 42);
    assert_int_equal(m.events[2].ts_ms, -7);
    assert_int_equal(m.events[1].encoding, 1);
    assert_int_equal(m.events[2].channel_len, 9);
    assert_memory_equal(m.events[2].channel, "vessel:42", 9);
    assert_int_equal(m.events[2].data_len, 8);
    assert_memory_equal(m.events[2].data, "cccccccc", 8);
    /* pointers point into the buffer: nothing was copied */
    assert_true((const unsigned char *)m.events[2].data > b.p &&
                (const unsigned char *)m.events[2].data < b.p + b.len);
    tw_gw_msg_free(&m);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);

    /* an empty fetch reply */
    build_events(&b, 7, 0, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.nevents, 0);
    assert_null(m.events);
    tw_gw_msg_free(&m);

    /* a run with a hole, or starting at 0, is refused */
    build_events(&b, 40, 3, 1);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    build_events(&b, 0, 2, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    build_events(&b, UINT64_MAX - 1, 2, 0); /* would wrap */
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    tw_gw_buf_free(&b);
}

static void test_small_messages_roundtrip(void **state)
{
    tw_gw_buf b;
    tw_gw_msg m;

    (void)state;
    tw_gw_buf_init(&b);
    tw_gw_put_header(&b, TW_GW_FETCH, "n3", 9);
    tw_gw_put_fetch(&b, "n1.5f2c09ab", 1000, 1 << 20);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.type, TW_GW_FETCH);
    assert_string_equal(m.origin, "n1.5f2c09ab");
    assert_int_equal(m.seq, 1000);
    assert_int_equal(m.max_bytes, 1 << 20);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);

    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_FETCH, "n3", 9);
    tw_gw_put_fetch(&b, "n1.5f2c09ab", 0, 1); /* seqs start at 1 */
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);

    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_ACK, "n3", 9);
    tw_gw_put_ack(&b, "n1.5f2c09ab", 12345678901234ull);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.type, TW_GW_ACK);
    assert_int_equal(m.seq, 12345678901234ull);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);

    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_LEAVE, "n3", 10);
    tw_gw_put_leave(&b, 1);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.type, TW_GW_LEAVE);
    assert_int_equal(m.incarnation, 10);
    assert_int_equal(m.flags, 1);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);
    b.p[b.len - 1] = 2; /* only 0 and 1 */
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);

    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_PROBE, "n3", 10);
    tw_gw_put_probe(&b, 0xdeadbeefcafeull);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.nonce, 0xdeadbeefcafeull);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);

    /* APP: an owner's opaque payload, bounds-checked like the rest. */
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_APP, "n3", 10);
    tw_gw_put_app(&b, "presence\0bytes", 14);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.type, TW_GW_APP);
    assert_int_equal(m.app_len, 14);
    assert_memory_equal(m.app, "presence\0bytes", 14);
    assert_prefixes_refused(&b);
    assert_trailing_refused(&b);
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_APP, "n3", 10);
    tw_gw_put_app(&b, NULL, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), 0);
    assert_int_equal(m.app_len, 0);
    /* a length over the limit is refused before anything is read */
    b.p[b.len - 4] = 0x01;
    b.p[b.len - 3] = 0x00;
    b.p[b.len - 2] = 0x00;
    b.p[b.len - 1] = 0x01;
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    tw_gw_buf_reset(&b);
    tw_gw_put_app(&b, "x", TW_GW_APP_MAX + 1);
    assert_int_equal(b.err, TW_GOSSIP_EINVAL);
    tw_gw_buf_free(&b);
}

static void test_malformed(void **state)
{
    tw_gw_buf b;
    tw_gw_msg m;

    (void)state;
    tw_gw_buf_init(&b);
    build_hb(&b, TW_GW_HEARTBEAT);
    /* version and type */
    b.p[0] = 2;
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    b.p[0] = TW_GW_VERSION;
    b.p[1] = 0;
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    b.p[1] = 99;
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    assert_int_equal(tw_gw_decode(NULL, 0, &m), TW_GOSSIP_EINVAL);

    /* a sender name longer than a node name may be */
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_LEAVE, "n3", 1);
    tw_gw_put_leave(&b, 0);
    b.p[3] = 40; /* u16 length at offset 2..3 */
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    /* the encoder refuses to write one */
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_LEAVE, "a-node-name-well-over-thirty-two-bytes", 1);
    assert_int_equal(b.err, TW_GOSSIP_EINVAL);

    /* a NUL inside a string, an empty sender */
    {
        const unsigned char nul[] = {
            TW_GW_VERSION, TW_GW_LEAVE, 0, 2, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 1};
        const unsigned char empty[] = {TW_GW_VERSION, TW_GW_LEAVE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        assert_int_equal(tw_gw_decode(nul, sizeof nul, &m), TW_GOSSIP_EINVAL);
        assert_int_equal(tw_gw_decode(empty, sizeof empty, &m), TW_GOSSIP_EINVAL);
    }

    /* counts that the bytes left cannot hold: refused before any allocation */
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_HEARTBEAT, "n1", 1);
    tw_gw_put_hb_start(&b, "o.1", "tcp://a:1", "", TW_MEMBER_ALIVE, 65535);
    tw_gw_put_u16(&b, 0);
    tw_gw_put_u16(&b, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    {
        size_t off;
        tw_gw_buf_reset(&b);
        tw_gw_put_header(&b, TW_GW_EVENTS, "n1", 1);
        tw_gw_put_events_start(&b, "o.1", 0, 0, 1, &off);
        tw_gw_events_finish(&b, off, 1, UINT32_MAX);
        assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
        /* unknown flags */
        tw_gw_buf_reset(&b);
        tw_gw_put_header(&b, TW_GW_EVENTS, "n1", 1);
        tw_gw_put_events_start(&b, "o.1", 0x80, 0, 1, &off);
        assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    }
    /* too many aliases; a member state beyond "left" */
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_HEARTBEAT, "n1", 1);
    tw_gw_put_hb_start(&b, "o.1", "tcp://a:1", "", TW_MEMBER_ALIVE, 0);
    tw_gw_put_u16(&b, TW_GW_ALIASES_MAX + 1);
    for (int i = 0; i <= TW_GW_ALIASES_MAX; i++)
        tw_gw_put_str(&b, "tcp://b:2", 9, TW_GOSSIP_ADDR_MAX);
    tw_gw_put_u16(&b, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);
    tw_gw_buf_reset(&b);
    tw_gw_put_header(&b, TW_GW_HEARTBEAT, "n1", 1);
    tw_gw_put_hb_start(&b, "o.1", "tcp://a:1", "", TW_MEMBER_SELF, 0);
    tw_gw_put_u16(&b, 0);
    tw_gw_put_u16(&b, 0);
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);

    /* an event whose data length runs past the end */
    build_events(&b, 1, 2, 0);
    b.p[b.len - 8 - 4] = 0x7f; /* high byte of the last event's u32 data length */
    assert_int_equal(tw_gw_decode(b.p, b.len, &m), TW_GOSSIP_EINVAL);

    /* flipping any single byte never crashes and never leaks (ASan checks) */
    build_events(&b, 5, 4, 0);
    for (size_t i = 0; i < b.len; i++) {
        unsigned char saved = b.p[i];
        b.p[i] ^= 0xff;
        if (tw_gw_decode(b.p, b.len, &m) == 0) tw_gw_msg_free(&m);
        b.p[i] = saved;
    }
    build_hb(&b, TW_GW_HELLO);
    for (size_t i = 0; i < b.len; i++) {
        unsigned char saved = b.p[i];
        b.p[i] ^= 0x41;
        if (tw_gw_decode(b.p, b.len, &m) == 0) tw_gw_msg_free(&m);
        b.p[i] = saved;
    }
    tw_gw_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_roundtrip),
        cmocka_unit_test(test_events_roundtrip),
        cmocka_unit_test(test_small_messages_roundtrip),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
