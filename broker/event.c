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

/*
 * One allocation per event frame: the tw_frame, then the WebSocket header, then the
 * message, sized from tw_proto_event_len() so that encoding never grows it (no realloc,
 * no second malloc for the frame). The struct's bytes sit in the buffer's headroom while
 * encoding; if converted data outgrows the estimate, the buffer (struct room included)
 * moves as any tw_buf does, and the header still fits the TW_BUF_FRAME_HEADROOM kept then.
 */
tw_frame *tw_frame_event(tw_encoding enc, const char *channel, size_t channel_len,
                         const char *origin, uint64_t seq, int64_t ts_ms, tw_encoding data_enc,
                         const uint8_t *data, size_t data_len)
{
    int opcode = tw_ws_opcode_for(enc);
    uint8_t hdr[10];
    size_t n = tw_proto_event_len(enc, channel, channel_len, origin, seq, ts_ms, data_len);
    if (n > UINT32_MAX - sizeof(tw_frame) - 10) return NULL;
    size_t hl = data_enc == enc ? tw_ws_frame_header(hdr, opcode, n) : TW_BUF_FRAME_HEADROOM;
    tw_buf b;
    b.head = sizeof(tw_frame) + hl;
    b.len = 0;
    b.cap = b.head + n;
    b.base = malloc(b.cap);
    if (!b.base) return NULL;
    if (tw_proto_encode_event(&b, enc, channel, channel_len, origin, seq, ts_ms, data_enc, data,
                              data_len) != 0 ||
        b.len > UINT32_MAX - 10)
        goto out_free;
    hl = tw_ws_frame_header(hdr, opcode, b.len);
    if (b.head < sizeof(tw_frame) + hl) goto out_free; /* never: the room is sized for it */
    b.head -= hl;
    b.len += hl;
    memcpy(b.base + b.head, hdr, hl);
    tw_frame *f = (tw_frame *)(void *)b.base;
    f->refs = 1;
    f->len = (uint32_t)b.len;
    f->data = b.base + b.head;
    f->base = NULL; /* the bytes live in the frame's own allocation */
    return f;

out_free:
    free(b.base);
    return NULL;
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
