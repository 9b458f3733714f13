/*
 * channel.c — channels, subscriptions, fan-out and feeding subscriptions from the log.
 *
 * Only channels with at least one subscription live in memory (a hash table by name); an
 * event for a channel nobody here subscribes to costs one lookup.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"

/* Log chunks read per loop turn across all sessions before yielding to the network. */
#define CATCHUP_CHUNKS_PER_TURN 16

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

int tw_channels_init(tw_server *srv)
{
    srv->chan_cap = 1024;
    srv->chan_table = calloc(srv->chan_cap, sizeof *srv->chan_table);
    return srv->chan_table ? 0 : -1;
}

void tw_channels_free(tw_server *srv)
{
    /* Sessions end their subscriptions first, which frees every channel. */
    free(srv->chan_table);
    srv->chan_table = NULL;
}

static tw_channel *channel_find(tw_server *srv, const char *name, size_t len, uint32_t h)
{
    for (tw_channel *ch = srv->chan_table[h & (srv->chan_cap - 1)]; ch; ch = ch->hnext)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0) return ch;
    return NULL;
}

tw_channel *tw_channel_find(tw_server *srv, const char *name, size_t len)
{
    return channel_find(srv, name, len, hash_name(name, len));
}

static void table_grow(tw_server *srv)
{
    size_t cap = srv->chan_cap * 2;
    tw_channel **t = calloc(cap, sizeof *t);
    if (!t) return; /* a fuller table is slower, not wrong */
    for (size_t i = 0; i < srv->chan_cap; i++) {
        for (tw_channel *ch = srv->chan_table[i], *next; ch; ch = next) {
            next = ch->hnext;
            ch->hnext = t[ch->hash & (cap - 1)];
            t[ch->hash & (cap - 1)] = ch;
        }
    }
    free(srv->chan_table);
    srv->chan_table = t;
    srv->chan_cap = cap;
}

static tw_channel *channel_get(tw_server *srv, const char *name, size_t len)
{
    uint32_t h = hash_name(name, len);
    tw_channel *ch = channel_find(srv, name, len, h);
    if (ch) return ch;
    ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->name = malloc(len + 1))) {
        free(ch);
        return NULL;
    }
    memcpy(ch->name, name, len);
    ch->name[len] = '\0';
    ch->len = len;
    ch->hash = h;
    if (srv->nchannels >= srv->chan_cap) table_grow(srv);
    tw_channel **slot = &srv->chan_table[h & (srv->chan_cap - 1)];
    ch->hnext = *slot;
    *slot = ch;
    srv->nchannels++;
    return ch;
}

static void channel_release(tw_server *srv, tw_channel *ch)
{
    if (ch->nsubs) return;
    tw_channel **pp = &srv->chan_table[ch->hash & (srv->chan_cap - 1)];
    while (*pp != ch)
        pp = &(*pp)->hnext;
    *pp = ch->hnext;
    srv->nchannels--;
    free(ch->name);
    free(ch);
}

static void live_link(tw_sub *sub)
{
    tw_channel *ch = sub->ch;
    sub->live = 1;
    sub->ch_prev = NULL;
    sub->ch_next = ch->live;
    if (ch->live) ch->live->ch_prev = sub;
    ch->live = sub;
}

static void live_unlink(tw_sub *sub)
{
    if (!sub->live) return;
    if (sub->ch_prev) sub->ch_prev->ch_next = sub->ch_next;
    else sub->ch->live = sub->ch_next;
    if (sub->ch_next) sub->ch_next->ch_prev = sub->ch_prev;
    sub->ch_prev = sub->ch_next = NULL;
    sub->live = 0;
}

static void cu_push(tw_sub *sub)
{
    tw_session *s = sub->sess;
    sub->in_cu = 1;
    sub->cu_next = NULL;
    if (s->cu_tail) s->cu_tail->cu_next = sub;
    else s->cu_head = sub;
    s->cu_tail = sub;
}

static tw_sub *cu_pop(tw_session *s)
{
    tw_sub *sub = s->cu_head;
    if (!sub) return NULL;
    s->cu_head = sub->cu_next;
    if (!s->cu_head) s->cu_tail = NULL;
    sub->cu_next = NULL;
    sub->in_cu = 0;
    return sub;
}

static void cu_remove(tw_sub *sub)
{
    if (!sub->in_cu) return;
    tw_session *s = sub->sess;
    tw_sub *prev = NULL;
    for (tw_sub *x = s->cu_head; x; prev = x, x = x->cu_next) {
        if (x != sub) continue;
        if (prev) prev->cu_next = x->cu_next;
        else s->cu_head = x->cu_next;
        if (s->cu_tail == x) s->cu_tail = prev;
        break;
    }
    sub->in_cu = 0;
    sub->cu_next = NULL;
}

void tw_catchup_schedule(tw_session *s)
{
    tw_server *srv = s->conn->srv;
    if (s->in_ready || !s->cu_head) return;
    s->in_ready = 1;
    s->ready_next = NULL;
    if (srv->ready_tail) srv->ready_tail->ready_next = s;
    else srv->ready_head = s;
    srv->ready_tail = s;
    tw_server_kick(srv);
}

tw_sub *tw_sub_start(tw_session *s, const char *channel, size_t len, int from_log,
                     uint64_t after_lsn, uint64_t trim_floor, tw_cursor *filter)
{
    tw_server *srv = s->conn->srv;
    tw_sub *sub = calloc(1, sizeof *sub);
    tw_channel *ch = sub ? channel_get(srv, channel, len) : NULL;
    if (!ch) {
        free(sub);
        return NULL;
    }
    sub->ch = ch;
    sub->sess = s;
    ch->nsubs++;
    sub->s_next = s->subs;
    s->subs = sub;
    s->nsubs++;
    srv->nsubs++;
    sub->trim_floor = trim_floor;
    if (filter && filter->n) {
        sub->filter = *filter; /* take the storage */
        memset(filter, 0, sizeof *filter);
        sub->filtering = 1;
    }
    if (from_log) {
        sub->last_lsn = after_lsn;
        cu_push(sub);
        tw_catchup_schedule(s);
    } else {
        /* Live from the fan-out's position: every later event is delivered, and events
         * committed but not yet fanned out have lsn > fanout_lsn, so they are too. */
        sub->last_lsn = srv->fanout_lsn;
        live_link(sub);
    }
    return sub;
}

void tw_sub_end(tw_sub *sub)
{
    tw_session *s = sub->sess;
    tw_server *srv = s->conn->srv;
    live_unlink(sub);
    cu_remove(sub);
    for (tw_sub **pp = &s->subs; *pp; pp = &(*pp)->s_next) {
        if (*pp == sub) {
            *pp = sub->s_next;
            break;
        }
    }
    s->nsubs--;
    srv->nsubs--;
    sub->ch->nsubs--;
    channel_release(srv, sub->ch);
    tw_cursor_free(&sub->filter);
    free(sub);
}

void tw_sub_fall_behind(tw_sub *sub)
{
    if (!sub->live) return;
    live_unlink(sub);
    cu_push(sub);
    sub->sess->conn->srv->stats.fell_behind++;
    /* Not scheduled now: the session's drain (tw_session_on_drain) schedules the read. */
}

void tw_fanout(tw_server *srv, tw_event *ev)
{
    tw_channel *ch = channel_find(srv, ev->channel, ev->channel_len,
                                  hash_name(ev->channel, ev->channel_len));
    if (!ch) return;
    ch->events++;
    size_t hwm = (size_t)srv->cfg->outbound_high_water;
    for (tw_sub *sub = ch->live, *next; sub; sub = next) {
        next = sub->ch_next;
        if (ev->lsn <= sub->last_lsn) continue; /* read from the log already */
        tw_session *s = sub->sess;
        if (tw_ws_closing(&s->ws)) continue;
        if (tw_conn_backlog(s->conn) > hwm) {
            /* Behind: stop taking live events; the log has this one and what follows. */
            tw_sub_fall_behind(sub);
            if (!s->stalled_since_ms) s->stalled_since_ms = tw_now_ms(srv);
            continue;
        }
        tw_frame *f = tw_event_frame(ev, s->enc);
        if (!f) {
            tw_error("encode", "could not encode event %s:%llu for a subscriber", ev->origin,
                     (unsigned long long)ev->seq);
            tw_session_close(s, 1011, "internal error");
            continue;
        }
        tw_conn_send(s->conn, tw_frame_ref(f));
        sub->last_lsn = ev->lsn;
        srv->stats.events_delivered++;
    }
}

typedef struct replay_ctx {
    tw_sub *sub;
    uint64_t from;    /* the lsn the chunk reads after */
    uint64_t trimmed; /* the channel's retention mark, set by the read before any event */
    size_t sent;
    int failed;
    int lost; /* retention took events the subscription had not read */
} replay_ctx;

static int cursor_has_seen(const tw_cursor *c, const char *origin, uint64_t seq)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i].origin, origin) == 0) return seq <= c->entries[i].seq;
    return 0;
}

static int replay_event(void *arg, const tw_store_event *ev)
{
    replay_ctx *rc = arg;
    tw_sub *sub = rc->sub;
    tw_session *s = sub->sess;
    if (rc->trimmed > rc->from && rc->trimmed > sub->trim_floor) {
        /* Nothing after the hole may go out: the client's cursor would pass it, and its
         * resume would be told recovered: true. */
        rc->lost = 1;
        return 1;
    }
    sub->last_lsn = ev->lsn;
    if (sub->filtering && cursor_has_seen(&sub->filter, ev->origin, ev->seq)) return 0;
    tw_frame *f = tw_frame_event(s->enc, ev->channel, ev->channel_len, ev->origin, ev->seq,
                                 ev->ts_ms, (tw_encoding)ev->encoding, ev->data, ev->data_len);
    if (!f) {
        rc->failed = 1;
        return 1;
    }
    tw_conn_send(s->conn, f);
    rc->sent++;
    return 0;
}

/* Reads one chunk of the log for a subscription. Returns 1 when it reached the head. */
static int catchup_chunk(tw_server *srv, tw_sub *sub)
{
    replay_ctx rc = {.sub = sub, .from = sub->last_lsn};
    uint64_t last;
    int at_head = 0;
    int err = tw_store_read_channel(srv->reader, sub->ch->name, sub->ch->len, sub->last_lsn,
                                    (size_t)srv->cfg->replay_chunk_events,
                                    (size_t)srv->cfg->replay_chunk_bytes, replay_event, &rc, &last,
                                    &at_head, &rc.trimmed);
    srv->stats.events_delivered += rc.sent;
    srv->stats.events_replayed += rc.sent;
    if (err || rc.failed) {
        tw_error("replay", "reading channel %s for session %s failed: %s", sub->ch->name,
                 sub->sess->id, err ? tw_store_strerror(err) : "encoding failed");
        tw_session_close(sub->sess, 1011, "internal error");
        return 0;
    }
    if (rc.lost || (rc.trimmed > rc.from && rc.trimmed > sub->trim_floor)) {
        /* Retention took events it had not read (the mark, read in the chunk's snapshot, is
         * past where the chunk started): the log can no longer bring it up to date. It
         * resumes and is told recovered: false (DESIGN.md: 4208 for one that falls past
         * retention). */
        tw_info("slow-consumer", "session %s fell behind retention on a channel: closing with 4208",
                sub->sess->id);
        srv->stats.slow_consumer_closes++;
        tw_session_close(sub->sess, 4208, "fell behind retention");
        return 0;
    }
    return at_head;
}

int tw_catchup_run(tw_server *srv)
{
    size_t hwm = (size_t)srv->cfg->outbound_high_water;
    int budget = CATCHUP_CHUNKS_PER_TURN;
    while (srv->ready_head && budget > 0) {
        tw_session *s = srv->ready_head;
        srv->ready_head = s->ready_next;
        if (!srv->ready_head) srv->ready_tail = NULL;
        s->in_ready = 0;
        s->ready_next = NULL;
        /* One chunk per session per pass: sessions share the turn fairly. */
        tw_sub *sub = cu_pop(s);
        if (!sub) continue;
        budget--;
        if (tw_ws_closing(&s->ws)) continue;
        if (catchup_chunk(srv, sub)) {
            /* At the head of the log as of this read; every event fanned out so far was
             * committed before it, so live delivery continues without a gap. */
            if (sub->filtering) {
                tw_cursor_free(&sub->filter);
                sub->filtering = 0;
            }
            live_link(sub);
        } else if (!tw_ws_closing(&s->ws)) {
            cu_push(sub);
        }
        if (tw_ws_closing(&s->ws)) continue;
        if (tw_conn_backlog(s->conn) <= hwm) tw_catchup_schedule(s);
        else if (s->cu_head && !s->stalled_since_ms) s->stalled_since_ms = tw_now_ms(srv);
        /* else: tw_session_on_drain reschedules once the client has read enough */
    }
    return srv->ready_head != NULL;
}
