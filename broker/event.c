/* event.c — see event.h. */
#include "event.h"

#include <stdlib.h>
#include <string.h>

size_t tw_ws_frame_header(uint8_t out[10], int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | opcode); /* FIN: we never fragment what we send */
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static tw_frame *frame_take(tw_buf *b)
{
    tw_frame *f = malloc(sizeof *f);
    if (!f) return NULL;
    f->refs = 1;
    f->len = (uint32_t)b->len;
    f->base = b->base;
    f->data = tw_buf_data(b);
    b->base = NULL;
    b->len = b->cap = b->head = 0;
    return f;
}

tw_frame *tw_frame_ws(tw_buf *b, int opcode)
{
    uint8_t hdr[10];
    size_t hl = tw_ws_frame_header(hdr, opcode, b->len);
    if (b->len > UINT32_MAX - 10 || tw_buf_prepend(b, hdr, hl) != 0) return NULL;
    tw_frame *f = frame_take(b);
    if (!f) { /* give the header room back so b is as it was */
        b->head += hl;
        b->len -= hl;
    }
    return f;
}

tw_frame *tw_frame_raw(tw_buf *b)
{
    if (b->len > UINT32_MAX) return NULL;
    return frame_take(b);
}

tw_frame *tw_frame_copy(const void *p, size_t n)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    if (tw_buf_append(&b, p, n) != 0) return NULL;
    tw_frame *f = tw_frame_raw(&b);
    tw_buf_free(&b);
    return f;
}

void tw_frame_unref(tw_frame *f)
{
    if (f && --f->refs == 0) {
        free(f->base);
        free(f);
    }
}

tw_frame *tw_frame_event(tw_encoding enc, const char *channel, size_t channel_len,
                         const char *origin, uint64_t seq, int64_t ts_ms, tw_encoding data_enc,
                         const uint8_t *data, size_t data_len)
{
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    tw_frame *f = NULL;
    if (tw_buf_reserve(&b, data_len + channel_len + 96) == 0 &&
        tw_proto_encode_event(&b, enc, channel, channel_len, origin, seq, ts_ms, data_enc, data,
                              data_len) == 0)
        f = tw_frame_ws(&b, tw_ws_opcode_for(enc));
    tw_buf_free(&b);
    return f;
}

tw_event *tw_event_new(const char *origin, uint64_t seq, uint64_t lsn, int64_t ts_ms, char *channel,
                       size_t channel_len, uint8_t data_enc, uint8_t *data, size_t data_len)
{
    tw_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ev->refs = 1;
    ev->origin = origin;
    ev->seq = seq;
    ev->lsn = lsn;
    ev->ts_ms = ts_ms;
    ev->channel = channel;
    ev->channel_len = channel_len;
    ev->data_enc = data_enc;
    ev->data = data;
    ev->data_len = data_len;
    return ev;
}

void tw_event_unref(tw_event *ev)
{
    if (!ev || --ev->refs) return;
    tw_frame_unref(ev->frames[0]);
    tw_frame_unref(ev->frames[1]);
    free(ev->channel);
    free(ev->data);
    free(ev);
}

tw_frame *tw_event_frame(tw_event *ev, tw_encoding enc)
{
    if (!ev->frames[enc])
        ev->frames[enc] = tw_frame_event(enc, ev->channel, ev->channel_len, ev->origin, ev->seq,
                                         ev->ts_ms, (tw_encoding)ev->data_enc, ev->data,
                                         ev->data_len);
    return ev->frames[enc];
}
