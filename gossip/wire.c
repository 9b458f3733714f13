/*
 * wire.c — encoder and decoder of the gossip messages (format in gossip_wire.h).
 *
 * The decoder reads through a cursor that only moves forward and fails sticky: a read past
 * the end sets `bad` and returns zeros, so each message is parsed as a straight run of
 * reads and judged once at the end. Arrays are sized from counts only after checking that
 * the bytes left could hold that many entries at their smallest, so a hostile count can
 * never make us allocate more than the message itself carries.
 */
#include <stdlib.h>
#include <string.h>

#include "gossip_wire.h"

/* ---- decoding ------------------------------------------------------------------------ */

struct rd {
    const unsigned char *p;
    size_t left;
    int bad;
};

static const unsigned char *take(struct rd *r, size_t n)
{
    const unsigned char *p;

    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t get_u8(struct rd *r)
{
    const unsigned char *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t get_u16(struct rd *r)
{
    const unsigned char *p = take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static uint32_t get_u32(struct rd *r)
{
    const unsigned char *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static uint64_t get_u64(struct rd *r)
{
    uint64_t hi = get_u32(r);
    return hi << 32 | get_u32(r);
}

/* A string into a fixed array of max + 1 bytes. Empty is allowed only when allow_empty;
 * NUL bytes are refused (the copy is used as a C string). */
static void get_cstr(struct rd *r, char *out, size_t max, int allow_empty)
{
    uint16_t n = get_u16(r);
    const unsigned char *p;

    out[0] = '\0';
    if (r->bad) return;
    if (n > max || (n == 0 && !allow_empty)) {
        r->bad = 1;
        return;
    }
    p = take(r, n);
    if (!p) return;
    if (memchr(p, '\0', n)) {
        r->bad = 1;
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Checks that `count` entries of at least `min_size` bytes each fit in what is left, then
 * allocates them (zeroed). NULL with count 0. */
static void *get_array(struct rd *r, size_t count, size_t min_size, size_t elem, int *nomem)
{
    void *a;

    if (r->bad || count == 0) return NULL;
    if (count > r->left / min_size) {
        r->bad = 1;
        return NULL;
    }
    a = calloc(count, elem);
    if (!a) {
        *nomem = 1;
        r->bad = 1;
    }
    return a;
}

static void get_state(struct rd *r, uint8_t *out)
{
    *out = get_u8(r);
    if (*out > TW_GW_STATE_MAX) r->bad = 1;
}

static void decode_hb(struct rd *r, tw_gw_msg *m, int *nomem)
{
    size_t i;

    get_cstr(r, m->origin, TW_STORE_ORIGIN_MAX, 0);
    get_cstr(r, m->addr, TW_GOSSIP_ADDR_MAX, 0);
    get_cstr(r, m->to_addr, TW_GOSSIP_ADDR_MAX, 1);
    get_state(r, &m->state);

    /* name (2+1) + addr (2+1) + state + incarnation: 15 bytes at least per member */
    m->nmembers = get_u16(r);
    m->members = get_array(r, m->nmembers, 15, sizeof(*m->members), nomem);
    for (i = 0; i < m->nmembers && !r->bad; i++) {
        tw_gw_member *e = &m->members[i];
        get_cstr(r, e->name, TW_STORE_NODE_NAME_MAX, 0);
        get_cstr(r, e->addr, TW_GOSSIP_ADDR_MAX, 0);
        get_state(r, &e->state);
        e->incarnation = get_u64(r);
    }
    m->naliases = get_u16(r);
    if (m->naliases > TW_GW_ALIASES_MAX) r->bad = 1;
    m->aliases = get_array(r, m->naliases, 3, sizeof(*m->aliases), nomem);
    for (i = 0; i < m->naliases && !r->bad; i++)
        get_cstr(r, m->aliases[i], TW_GOSSIP_ADDR_MAX, 0);
    m->ndigest = get_u16(r);
    m->digest = get_array(r, m->ndigest, 2 + 1 + 8, sizeof(*m->digest), nomem);
    for (i = 0; i < m->ndigest && !r->bad; i++) {
        get_cstr(r, m->digest[i].origin, TW_STORE_ORIGIN_MAX, 0);
        m->digest[i].seq = get_u64(r);
    }
}

static void decode_events(struct rd *r, tw_gw_msg *m, int *nomem)
{
    uint32_t count;
    size_t i;

    get_cstr(r, m->origin, TW_STORE_ORIGIN_MAX, 0);
    m->flags = get_u8(r);
    m->last_known = get_u64(r);
    m->first_seq = get_u64(r);
    count = get_u32(r);
    if (m->flags & ~TW_GW_EV_FETCH_REPLY) r->bad = 1;
    /* Seqs start at 1 and the whole run must fit in u64. */
    if (count && (m->first_seq == 0 || m->first_seq > UINT64_MAX - count)) r->bad = 1;
    m->nevents = count;
    m->events = get_array(r, count, tw_gw_event_size(1, 0), sizeof(*m->events), nomem);
    for (i = 0; i < m->nevents && !r->bad; i++) {
        tw_gw_event *e = &m->events[i];
        uint16_t clen;
        uint32_t dlen;

        e->seq = get_u64(r);
        e->ts_ms = (int64_t)get_u64(r);
        e->encoding = get_u8(r);
        clen = get_u16(r);
        if (clen == 0 || clen > TW_STORE_CHANNEL_MAX) r->bad = 1;
        e->channel = (const char *)take(r, clen);
        e->channel_len = clen;
        dlen = get_u32(r);
        e->data = take(r, dlen);
        e->data_len = dlen;
        if (e->seq != m->first_seq + i) r->bad = 1;
    }
}

int tw_gw_decode(const void *buf, size_t len, tw_gw_msg *out)
{
    struct rd r = {buf, len, 0};
    int nomem = 0;

    memset(out, 0, sizeof(*out));
    if (!buf) return TW_GOSSIP_EINVAL;
    if (get_u8(&r) != TW_GW_VERSION) return TW_GOSSIP_EINVAL;
    out->type = get_u8(&r);
    get_cstr(&r, out->sender, TW_STORE_NODE_NAME_MAX, 0);
    out->incarnation = get_u64(&r);
    switch (out->type) {
    case TW_GW_HELLO:
    case TW_GW_HEARTBEAT:
        decode_hb(&r, out, &nomem);
        break;
    case TW_GW_EVENTS:
        decode_events(&r, out, &nomem);
        break;
    case TW_GW_FETCH:
        get_cstr(&r, out->origin, TW_STORE_ORIGIN_MAX, 0);
        out->seq = get_u64(&r);
        out->max_bytes = get_u32(&r);
        if (out->seq == 0) r.bad = 1;
        break;
    case TW_GW_ACK:
        get_cstr(&r, out->origin, TW_STORE_ORIGIN_MAX, 0);
        out->seq = get_u64(&r);
        break;
    case TW_GW_LEAVE:
        out->flags = get_u8(&r);
        if (out->flags > 1) r.bad = 1;
        break;
    case TW_GW_PROBE:
        out->nonce = get_u64(&r);
        break;
    case TW_GW_APP: {
        uint32_t n = get_u32(&r);
        if (n > TW_GW_APP_MAX) {
            r.bad = 1;
            break;
        }
        out->app = take(&r, n);
        out->app_len = n;
        break;
    }
    default:
        r.bad = 1;
    }
    if (!r.bad && r.left != 0) r.bad = 1; /* trailing bytes: not a message we wrote */
    if (r.bad) {
        tw_gw_msg_free(out);
        return nomem ? TW_GOSSIP_ENOMEM : TW_GOSSIP_EINVAL;
    }
    return 0;
}

void tw_gw_msg_free(tw_gw_msg *m)
{
    free(m->members);
    free(m->aliases);
    free(m->digest);
    free(m->events);
    m->members = NULL;
    m->aliases = NULL;
    m->digest = NULL;
    m->events = NULL;
    m->nmembers = m->naliases = m->ndigest = m->nevents = 0;
}

/* ---- encoding ------------------------------------------------------------------------ */

void tw_gw_buf_init(tw_gw_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void tw_gw_buf_reset(tw_gw_buf *b)
{
    b->len = 0;
    b->err = 0;
}

void tw_gw_buf_free(tw_gw_buf *b)
{
    free(b->p);
    tw_gw_buf_init(b);
}

static unsigned char *put(tw_gw_buf *b, size_t n)
{
    unsigned char *p;

    if (b->err) return NULL;
    if (n > SIZE_MAX / 2 - b->len) {
        b->err = TW_GOSSIP_ENOMEM;
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p) {
            b->err = TW_GOSSIP_ENOMEM;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    p = b->p + b->len;
    b->len += n;
    return p;
}

static void put_u8(tw_gw_buf *b, uint8_t v)
{
    unsigned char *p = put(b, 1);
    if (p) p[0] = v;
}

void tw_gw_put_u16(tw_gw_buf *b, uint16_t v)
{
    unsigned char *p = put(b, 2);
    if (!p) return;
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void set_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_u32(tw_gw_buf *b, uint32_t v)
{
    unsigned char *p = put(b, 4);
    if (p) set_u32(p, v);
}

static void put_u64(tw_gw_buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

void tw_gw_put_str(tw_gw_buf *b, const char *s, size_t len, size_t max)
{
    unsigned char *p;

    if (b->err) return;
    if (len > max || len > UINT16_MAX) {
        b->err = TW_GOSSIP_EINVAL;
        return;
    }
    tw_gw_put_u16(b, (uint16_t)len);
    p = put(b, len);
    if (p && len) memcpy(p, s, len);
}

static void put_cstr(tw_gw_buf *b, const char *s, size_t max)
{
    tw_gw_put_str(b, s ? s : "", s ? strlen(s) : 0, max);
}

void tw_gw_put_header(tw_gw_buf *b, uint8_t type, const char *sender, uint64_t incarnation)
{
    put_u8(b, TW_GW_VERSION);
    put_u8(b, type);
    put_cstr(b, sender, TW_STORE_NODE_NAME_MAX);
    put_u64(b, incarnation);
}

void tw_gw_put_hb_start(tw_gw_buf *b, const char *origin, const char *addr, const char *to_addr,
                        uint8_t state, uint16_t nmembers)
{
    put_cstr(b, origin, TW_STORE_ORIGIN_MAX);
    put_cstr(b, addr, TW_GOSSIP_ADDR_MAX);
    put_cstr(b, to_addr, TW_GOSSIP_ADDR_MAX);
    put_u8(b, state);
    tw_gw_put_u16(b, nmembers);
}

void tw_gw_put_hb_member(tw_gw_buf *b, const char *name, const char *addr, uint8_t state,
                         uint64_t incarnation)
{
    put_cstr(b, name, TW_STORE_NODE_NAME_MAX);
    put_cstr(b, addr, TW_GOSSIP_ADDR_MAX);
    put_u8(b, state);
    put_u64(b, incarnation);
}

void tw_gw_put_digest(tw_gw_buf *b, const char *origin, uint64_t seq)
{
    put_cstr(b, origin, TW_STORE_ORIGIN_MAX);
    put_u64(b, seq);
}

void tw_gw_put_events_start(tw_gw_buf *b, const char *origin, uint8_t flags, uint64_t last_known,
                            uint64_t first_seq, size_t *count_off)
{
    put_cstr(b, origin, TW_STORE_ORIGIN_MAX);
    put_u8(b, flags);
    put_u64(b, last_known);
    put_u64(b, first_seq);
    *count_off = b->len;
    put_u32(b, 0);
}

void tw_gw_put_event(tw_gw_buf *b, uint64_t seq, int64_t ts_ms, uint8_t encoding,
                     const char *channel, size_t channel_len, const void *data, size_t data_len)
{
    unsigned char *p;

    if (data_len > UINT32_MAX) {
        b->err = TW_GOSSIP_EINVAL;
        return;
    }
    put_u64(b, seq);
    put_u64(b, (uint64_t)ts_ms);
    put_u8(b, encoding);
    tw_gw_put_str(b, channel, channel_len, TW_STORE_CHANNEL_MAX);
    put_u32(b, (uint32_t)data_len);
    p = put(b, data_len);
    if (p && data_len) memcpy(p, data, data_len);
}

void tw_gw_events_finish(tw_gw_buf *b, size_t count_off, uint64_t first_seq, uint32_t count)
{
    if (b->err || count_off < 8 || count_off + 4 > b->len) return;
    set_u32(b->p + count_off - 8, (uint32_t)(first_seq >> 32));
    set_u32(b->p + count_off - 4, (uint32_t)first_seq);
    set_u32(b->p + count_off, count);
}

void tw_gw_put_fetch(tw_gw_buf *b, const char *origin, uint64_t from_seq, uint32_t max_bytes)
{
    put_cstr(b, origin, TW_STORE_ORIGIN_MAX);
    put_u64(b, from_seq);
    put_u32(b, max_bytes);
}

void tw_gw_put_ack(tw_gw_buf *b, const char *origin, uint64_t seq)
{
    put_cstr(b, origin, TW_STORE_ORIGIN_MAX);
    put_u64(b, seq);
}

void tw_gw_put_leave(tw_gw_buf *b, int gone)
{
    put_u8(b, gone ? 1 : 0);
}

void tw_gw_put_probe(tw_gw_buf *b, uint64_t nonce)
{
    put_u64(b, nonce);
}

void tw_gw_put_app(tw_gw_buf *b, const void *data, uint32_t len)
{
    unsigned char *p;

    if (b->err) return;
    if (len > TW_GW_APP_MAX) {
        b->err = TW_GOSSIP_EINVAL;
        return;
    }
    put_u32(b, len);
    p = put(b, len);
    if (p && len) memcpy(p, data, len);
}
