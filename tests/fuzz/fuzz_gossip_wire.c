/*
 * fuzz_gossip_wire.c — libFuzzer driver for the gossip message decoder (gossip/wire.c):
 * arbitrary bytes as a message a peer sent. Checks that nothing crashes or leaks, that a
 * decoded message never holds more entries than its bytes could carry, and that the format
 * is canonical: re-encoding what was decoded gives back exactly the input bytes.
 *
 * The codec has no dependency but libc, so the driver compiles it in directly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../gossip/wire.c"

#include "fuzz_check.h"

static void reencode(const tw_gw_msg *m, tw_gw_buf *b)
{
    size_t off;

    tw_gw_put_header(b, m->type, m->sender, m->incarnation);
    switch (m->type) {
    case TW_GW_HELLO:
    case TW_GW_HEARTBEAT:
        tw_gw_put_hb_start(b, m->origin, m->addr, m->to_addr, m->state, (uint16_t)m->nmembers);
        for (size_t i = 0; i < m->nmembers; i++)
            tw_gw_put_hb_member(b, m->members[i].name, m->members[i].addr, m->members[i].state,
                                m->members[i].incarnation);
        tw_gw_put_u16(b, (uint16_t)m->naliases);
        for (size_t i = 0; i < m->naliases; i++)
            tw_gw_put_str(b, m->aliases[i], strlen(m->aliases[i]), TW_GOSSIP_ADDR_MAX);
        tw_gw_put_u16(b, (uint16_t)m->ndigest);
        for (size_t i = 0; i < m->ndigest; i++)
            tw_gw_put_digest(b, m->digest[i].origin, m->digest[i].seq);
        break;
    case TW_GW_EVENTS:
        tw_gw_put_events_start(b, m->origin, m->flags, m->last_known, m->first_seq, &off);
        for (size_t i = 0; i < m->nevents; i++) {
            const tw_gw_event *e = &m->events[i];
            tw_gw_put_event(b, e->seq, e->ts_ms, e->encoding, e->channel, e->channel_len, e->data,
                            e->data_len);
        }
        tw_gw_events_finish(b, off, m->first_seq, (uint32_t)m->nevents);
        break;
    case TW_GW_FETCH:
        tw_gw_put_fetch(b, m->origin, m->seq, m->max_bytes);
        break;
    case TW_GW_ACK:
        tw_gw_put_ack(b, m->origin, m->seq);
        break;
    case TW_GW_LEAVE:
        tw_gw_put_leave(b, m->flags);
        break;
    case TW_GW_PROBE:
        tw_gw_put_probe(b, m->nonce);
        break;
    case TW_GW_APP:
        tw_gw_put_app(b, m->app, (uint32_t)m->app_len);
        break;
    default:
        FUZZ_CHECK(0 && "decoded an unknown type");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tw_gw_msg m;
    tw_gw_buf b;

    if (tw_gw_decode(data, size, &m) != 0) return 0;
    /* every entry takes bytes of the message: counts are bounded by its size */
    FUZZ_CHECK(m.nmembers * 15 <= size && m.ndigest * 11 <= size && m.nevents * 23 <= size);
    tw_gw_buf_init(&b);
    reencode(&m, &b);
    FUZZ_CHECK(b.err == 0);
    FUZZ_CHECK(b.len == size && memcmp(b.p, data, size) == 0);
    tw_gw_buf_free(&b);
    tw_gw_msg_free(&m);
    return 0;
}
