/*
 * The C client: connection state machine, subscriptions with their cursors, the publish
 * queue, and the tidewire.v1.json protocol on top of a twc__conn (twc_conn.c).
 *
 * Reentrancy: user callbacks may call back into the client (close, free, subscribe,
 * unsubscribe, publish). So internal state is made consistent before each callback, no
 * pointer into a table is held across one, and `freeing` is checked after each. The struct
 * itself is freed only from the retry timer's close callback, never while our code is on
 * the stack.
 */
#include "twc_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BACKOFF_INITIAL_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define DEFAULT_BACKOFF_FACTOR 2.0
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_CLOSE_TIMEOUT_MS 2000
#define DEFAULT_MAX_QUEUED (8u << 20)
#define DEFAULT_MAX_MESSAGE (64u << 20)
#define DEFAULT_MAX_PUBLISH (1u << 20)
/* A server that pings every P seconds is presumed dead after 2.5 P of silence. */
#define IDLE_FACTOR 2.5

typedef enum sub_state { SUB_PENDING, SUB_SENT, SUB_ACTIVE } sub_state;

typedef struct sub {
    struct sub *next; /* hash chain */
    uint64_t hash;
    char *name; /* NUL-terminated */
    size_t len;
    twc__cursor cursor;
    bool has_cursor; /* since given, or the server told us where we start */
    unsigned last;   /* asked only until the first `subscribed` */
    sub_state st;
    int64_t req_id; /* of the subscribe in flight */
} sub;

typedef struct pub {
    int64_t id; /* 0: not sent on the current connection */
    bool done;
    bool sent_before;
    twc_ack_cb cb;
    void *arg;
    size_t tail_len;
    char tail[]; /* ,"channel":"...","data":...} */
} pub;

struct twc_client {
    uv_loop_t *loop;
    twc_options opts;
    char *url_str;
    char *token;
    twc__url url;
    twc_state state;
    bool want;    /* keep (re)connecting */
    bool closing; /* graceful close in progress */
    bool freeing;

    twc__conn *conn; /* attached connection or NULL */
    bool conn_open;  /* its WebSocket is open */
    bool connected;  /* `connected` received on it */
    uint64_t connected_at;
    int64_t connect_id;

    uv_timer_t retry;
    twc__backoff backoff;
    twc__rng rng;
    int64_t next_id;

    sub **buckets;
    size_t nbuckets, nsubs;

    pub **pq; /* ring: publishes queued or awaiting ack, in send order */
    size_t pq_head, pq_len, pq_cap;
    size_t queued_bytes;

    twc__buf scratch;
    char node[128];
    char session[128];
    twc_stats stats;
};

const char *twc_strerror(int err)
{
    switch (err) {
#define XX(name, value, text)                                                                      \
    case value:                                                                                    \
        return text;
        TWC_ERRNO_MAP(XX)
#undef XX
    default:
        return uv_strerror(err);
    }
}

const char *twc_state_name(twc_state s)
{
    switch (s) {
    case TWC_STATE_DISCONNECTED:
        return "disconnected";
    case TWC_STATE_CONNECTING:
        return "connecting";
    case TWC_STATE_CONNECTED:
        return "connected";
    case TWC_STATE_RECONNECTING:
        return "reconnecting";
    }
    return "?";
}

/* ---- subscriptions table ------------------------------------------------------------------ */

static uint64_t hash_name(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static sub *sub_find(const twc_client *c, const char *name, size_t len)
{
    if (!c->nbuckets) return NULL;
    uint64_t h = hash_name(name, len);
    for (sub *s = c->buckets[h & (c->nbuckets - 1)]; s; s = s->next)
        if (s->hash == h && s->len == len && !memcmp(s->name, name, len)) return s;
    return NULL;
}

static int sub_insert(twc_client *c, sub *s)
{
    if (c->nsubs >= c->nbuckets) {
        size_t nb = c->nbuckets ? c->nbuckets * 2 : 8;
        sub **b = calloc(nb, sizeof *b);
        if (!b) return UV_ENOMEM;
        for (size_t i = 0; i < c->nbuckets; i++) {
            for (sub *x = c->buckets[i], *nx; x; x = nx) {
                nx = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        }
        free(c->buckets);
        c->buckets = b;
        c->nbuckets = nb;
    }
    sub **head = &c->buckets[s->hash & (c->nbuckets - 1)];
    s->next = *head;
    *head = s;
    c->nsubs++;
    return 0;
}

static void sub_remove(twc_client *c, sub *s)
{
    for (sub **pp = &c->buckets[s->hash & (c->nbuckets - 1)]; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            c->nsubs--;
            return;
        }
    }
}

static void sub_free(sub *s)
{
    twc__cursor_free(&s->cursor);
    free(s->name);
    free(s);
}

#define FOR_EACH_SUB(c, s)                                                                         \
    for (size_t b_ = 0; b_ < (c)->nbuckets; b_++)                                                  \
        for (sub *s = (c)->buckets[b_]; s; s = s->next)

/* ---- publish queue (ring of pointers) ------------------------------------------------------ */

static pub *pq_at(const twc_client *c, size_t i)
{
    return c->pq[(c->pq_head + i) & (c->pq_cap - 1)];
}

static int pq_push(twc_client *c, pub *p)
{
    if (c->pq_len == c->pq_cap) {
        size_t cap = c->pq_cap ? c->pq_cap * 2 : 64;
        pub **q = malloc(cap * sizeof *q);
        if (!q) return UV_ENOMEM;
        for (size_t i = 0; i < c->pq_len; i++)
            q[i] = pq_at(c, i);
        free(c->pq);
        c->pq = q;
        c->pq_cap = cap;
        c->pq_head = 0;
    }
    c->pq[(c->pq_head + c->pq_len) & (c->pq_cap - 1)] = p;
    c->pq_len++;
    return 0;
}

static void pq_pop_done(twc_client *c)
{
    while (c->pq_len && pq_at(c, 0)->done) {
        free(pq_at(c, 0));
        c->pq_head = (c->pq_head + 1) & (c->pq_cap - 1);
        c->pq_len--;
    }
}

/* Ids of sent entries increase along the ring and unsent ones (id 0) are all at its end,
 * so a binary search finds an ack's publish. */
static pub *pq_find(const twc_client *c, int64_t id)
{
    size_t lo = 0, hi = c->pq_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t mid_id = pq_at(c, mid)->id;
        if (mid_id != 0 && mid_id == id) return pq_at(c, mid);
        if (mid_id != 0 && mid_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Drops done entries anywhere in the ring (before renumbering on a new connection). */
static void pq_compact(twc_client *c)
{
    size_t j = 0;
    for (size_t i = 0; i < c->pq_len; i++) {
        pub *p = pq_at(c, i);
        if (p->done)
            free(p);
        else
            c->pq[(c->pq_head + j++) & (c->pq_cap - 1)] = p;
    }
    c->pq_len = j;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static void set_state(twc_client *c, twc_state s, const twc_error *why)
{
    if (c->state == s) return;
    c->state = s;
    if (c->opts.on_state && !c->freeing) c->opts.on_state(c, s, why, c->opts.arg);
}

static void report(twc_client *c, int err, int code, const char *message, const char *channel)
{
    if (!c->opts.on_error || c->freeing) return;
    twc_error e = {.err = err,
                   .code = code,
                   .message = message ? message : twc_strerror(err),
                   .channel = channel};
    c->opts.on_error(c, &e, c->opts.arg);
}

/* Fails every held publish with err (callbacks run after the queue is emptied). */
static void fail_publishes(twc_client *c, int err, const char *message)
{
    pub **q = c->pq;
    size_t head = c->pq_head, len = c->pq_len, cap = c->pq_cap;
    c->pq = NULL;
    c->pq_head = c->pq_len = c->pq_cap = 0;
    c->queued_bytes = 0;
    twc_error e = {.err = err, .code = 0, .message = message, .channel = NULL};
    for (size_t i = 0; i < len; i++) {
        pub *p = q[(head + i) & (cap - 1)];
        if (!p->done && p->cb && !c->freeing) p->cb(c, &e, NULL, p->arg);
        free(p);
    }
    free(q);
}

static void set_disconnected(twc_client *c, const twc_error *why)
{
    c->want = false;
    c->closing = false;
    uv_timer_stop(&c->retry);
    set_state(c, TWC_STATE_DISCONNECTED, why);
    /* Unless on_state just reconnected us: then the publishes go out on the new connection. */
    if (c->pq_len && !c->want && !c->freeing)
        fail_publishes(c, TWC_E_CLOSED, "client stopped before the publish was acknowledged");
}

static int send_text(twc_client *c, const char *p, size_t n)
{
    int rv = twc__conn_send_text(c->conn, p, n);
    if (rv) report(c, rv, 0, "cannot queue a message", NULL);
    return rv;
}

static int send_subscribe(twc_client *c, sub *s)
{
    twc__buf *b = &c->scratch;
    int64_t id = c->next_id++;
    b->len = 0;
    int rv = twc__buf_printf(b, "{\"op\":\"subscribe\",\"id\":%" PRId64 ",\"channel\":", id);
    if (!rv) rv = twc__json_escape(b, s->name, s->len);
    if (!rv && s->has_cursor) {
        rv = twc__buf_appends(b, ",\"since\":");
        if (!rv) rv = twc__cursor_json(&s->cursor, b);
    }
    if (!rv && s->last) rv = twc__buf_printf(b, ",\"last\":%u", s->last);
    if (!rv) rv = twc__buf_append(b, "}", 1);
    if (!rv) rv = send_text(c, b->p, b->len);
    if (!rv) {
        s->st = SUB_SENT;
        s->req_id = id;
    }
    return rv;
}

static int send_publish(twc_client *c, pub *p)
{
    char head[64];
    p->id = c->next_id++;
    int hl = snprintf(head, sizeof head, "{\"op\":\"publish\",\"id\":%" PRId64, p->id);
    int rv = twc__conn_send_text2(c->conn, head, (size_t)hl, p->tail, p->tail_len);
    if (rv) return rv;
    c->stats.publishes_sent++;
    if (p->sent_before) c->stats.publishes_resent++;
    p->sent_before = true;
    return 0;
}

/* ---- connection events ---------------------------------------------------------------------- */

static void start_attempt(twc_client *c);
static void on_conn_open(void *owner, twc__conn *conn);
static void on_conn_message(void *owner, twc__conn *conn, char *text, size_t len);
static void on_conn_close(void *owner, twc__conn *conn, const twc_error *why);

static const twc__conn_events conn_events = {
    .on_open = on_conn_open,
    .on_message = on_conn_message,
    .on_close = on_conn_close,
};

static void on_retry_timer(uv_timer_t *t)
{
    twc_client *c = t->data;
    if (c->want && !c->conn) start_attempt(c);
}

/* Forgets the connection (already detached): everything goes back to "send when open". */
static void forget_conn(twc_client *c)
{
    c->conn = NULL;
    c->conn_open = c->connected = false;
    c->node[0] = c->session[0] = '\0';
    FOR_EACH_SUB(c, s)
    {
        s->st = SUB_PENDING;
        s->req_id = 0;
    }
    for (size_t i = 0; i < c->pq_len; i++)
        pq_at(c, i)->id = 0;
}

/* The attached connection ended (or an attempt could not start). */
static void conn_ended(twc_client *c, const twc_error *why)
{
    bool was_connected = c->connected;
    uint64_t uptime = was_connected ? uv_now(c->loop) - c->connected_at : 0;
    forget_conn(c);
    c->stats.disconnects++;

    if (c->closing || !c->want) { /* our own twc_close completed */
        set_disconnected(c, NULL);
        return;
    }
    twc__action act = why->err == TWC_E_PEER_CLOSED ? twc__close_action(why->code) : TWC__ACT_RETRY;
    if (act == TWC__ACT_STOP || act == TWC__ACT_TERMINAL) {
        if (act == TWC__ACT_TERMINAL) report(c, why->err, why->code, why->message, NULL);
        if (!c->freeing && c->want) set_disconnected(c, why);
        return;
    }
    uint64_t delay =
        twc__reconnect_delay(&c->backoff, act, was_connected, uptime, twc__rng_next(&c->rng));
    uv_timer_start(&c->retry, on_retry_timer, delay, 0);
    set_state(c, TWC_STATE_RECONNECTING, why);
    if (c->want && !c->freeing) report(c, why->err, why->code, why->message, NULL);
}

static void on_conn_close(void *owner, twc__conn *conn, const twc_error *why)
{
    twc_client *c = owner;
    if (conn != c->conn) return;
    conn_ended(c, why);
}

static void on_conn_open(void *owner, twc__conn *conn)
{
    twc_client *c = owner;
    c->conn_open = true;
    twc__buf *b = &c->scratch;
    /* Pipelined: connect, every subscription, every held publish, in one write. The server
     * handles a connection's messages in order, so they all follow the connect. */
    c->connect_id = c->next_id++;
    b->len = 0;
    int rv = twc__buf_printf(b, "{\"op\":\"connect\",\"id\":%" PRId64, c->connect_id);
    if (!rv && c->token) {
        rv = twc__buf_appends(b, ",\"token\":");
        if (!rv) rv = twc__json_escape(b, c->token, strlen(c->token));
    }
    if (!rv) rv = twc__buf_append(b, "}", 1);
    if (!rv) rv = send_text(c, b->p, b->len);
    FOR_EACH_SUB(c, s)
    {
        if (!rv) rv = send_subscribe(c, s);
    }
    pq_compact(c);
    for (size_t i = 0; !rv && i < c->pq_len; i++)
        rv = send_publish(c, pq_at(c, i));
    if (rv) {
        twc__conn_detach(conn);
        twc_error e = {.err = rv, .message = "cannot queue the first messages"};
        conn_ended(c, &e);
    }
}

static void start_attempt(twc_client *c)
{
    twc__conn_config cfg = {
        .url = &c->url,
        .connect_timeout_ms = c->opts.connect_timeout_ms,
        .max_message_bytes = c->opts.max_message_bytes,
    };
    int rv = twc__conn_start(c->loop, &cfg, &c->rng, &conn_events, c, &c->conn);
    if (rv < 0) {
        c->conn = NULL;
        char msg[400];
        snprintf(msg, sizeof msg, "cannot connect to %s:%u: %s", c->url.host, (unsigned)c->url.port,
                 twc_strerror(rv));
        twc_error e = {.err = rv, .message = msg};
        conn_ended(c, &e);
    }
}

/* ---- protocol: server messages --------------------------------------------------------- */

/* A string field, decoded into buf (n + 1 bytes) when escaped. Returns its length. */
static const char *field_str(const twc__jstr *f, char *buf, size_t bufsz, size_t *len)
{
    if (!f->p) {
        *len = 0;
        return "";
    }
    if (!f->esc) {
        *len = f->n;
        return f->p;
    }
    if (f->n + 1 > bufsz) return NULL;
    long l = twc__json_unescape(f->p, f->n, buf);
    if (l < 0) return NULL;
    *len = (size_t)l;
    return buf;
}

static bool op_is(const twc__jstr *op, const char *name)
{
    size_t l = strlen(name);
    return op->n == l && !memcmp(op->p, name, l);
}

static sub *msg_sub(twc_client *c, const twc__msg *m)
{
    if (!m->channel.p) return NULL;
    if (!m->channel.esc) return sub_find(c, m->channel.p, m->channel.n);
    twc__buf *b = &c->scratch;
    b->len = 0;
    if (twc__buf_reserve(b, m->channel.n + 1)) return NULL;
    long l = twc__json_unescape(m->channel.p, m->channel.n, b->p);
    return l < 0 ? NULL : sub_find(c, b->p, (size_t)l);
}

static void handle_event(twc_client *c, twc__msg *m)
{
    if (c->closing) return;
    sub *s = msg_sub(c, m);
    if (!s) /* after twc_unsubscribe, or a channel we never asked for */
        return;
    if (!m->pos.p || !m->data) {
        report(c, TWC_E_PROTOCOL, 0, "event without pos or data", s->name);
        return;
    }
    char posbuf[512];
    size_t plen;
    char *pos;
    if (m->pos.esc) {
        const char *d = field_str(&m->pos, posbuf, sizeof posbuf, &plen);
        if (!d) {
            report(c, TWC_E_PROTOCOL, 0, "malformed event pos", s->name);
            return;
        }
        pos = posbuf;
    } else {
        /* The message text is ours: terminate in place, on the closing quote. */
        pos = (char *)m->pos.p;
        plen = m->pos.n;
        pos[plen] = '\0';
    }
    size_t olen;
    uint64_t seq;
    if (twc__pos_parse(pos, plen, &olen, &seq)) {
        report(c, TWC_E_PROTOCOL, 0, "malformed event pos", s->name);
        return;
    }
    int r = twc__cursor_advance(&s->cursor, pos, olen, seq);
    if (r < 0) {
        report(c, r, 0, "out of memory", s->name);
        return;
    }
    if (r == 0) {
        c->stats.duplicates++;
        return;
    }
    s->has_cursor = true;
    c->stats.events++;
    if (!c->opts.on_event) return;
    char *data = (char *)m->data;
    data[m->data_len] = '\0'; /* the byte after the value is ',', '}' or blank */
    twc_event ev = {
        .channel = s->name,
        .pos = pos,
        .origin = pos,
        .origin_len = olen,
        .seq = seq,
        .ts = m->has_ts ? m->ts : 0,
        .data = data,
        .data_len = m->data_len,
    };
    c->opts.on_event(c, &ev, c->opts.arg);
}

static void handle_subscribed(twc_client *c, twc__msg *m)
{
    sub *s = msg_sub(c, m);
    if (!s || s->st != SUB_SENT) return;
    if (m->has_id && m->id != s->req_id)
        return; /* a reply to an older subscribe of the same name */
    if (m->cursor) {
        twc__cursor start = {0};
        int rv = twc__cursor_parse(m->cursor, m->cursor_len, &start);
        if (rv == 0) rv = twc__cursor_merge(&s->cursor, &start);
        twc__cursor_free(&start);
        if (rv)
            report(c, rv == TWC_E_CURSOR ? TWC_E_PROTOCOL : rv, 0, "malformed cursor in subscribed",
                   s->name);
    }
    s->has_cursor = true;
    s->last = 0; /* the view was filled once; resumes need only the cursor */
    s->st = SUB_ACTIVE;
    s->req_id = 0;
    if (c->opts.on_subscribed && !c->freeing)
        c->opts.on_subscribed(c, s->name, m->recovered != 0, m->replayed == 1, c->opts.arg);
}

static void handle_ack(twc_client *c, twc__msg *m)
{
    if (!m->has_id) return;
    pub *p = pq_find(c, m->id);
    if (!p || p->done) return;
    char posbuf[512];
    size_t plen = 0;
    const char *pos = NULL;
    if (!m->pos.p) {
        report(c, TWC_E_PROTOCOL, 0, "ack without pos", NULL);
    } else if (m->pos.esc) {
        pos = field_str(&m->pos, posbuf, sizeof posbuf, &plen);
    } else {
        ((char *)m->pos.p)[m->pos.n] = '\0'; /* in place, on the closing quote */
        pos = m->pos.p;
    }
    p->done = true;
    c->queued_bytes -= p->tail_len;
    c->stats.acks++;
    twc_ack_cb cb = p->cb;
    void *arg = p->arg;
    pq_pop_done(c);
    if (cb && !c->freeing) cb(c, NULL, pos ? pos : "", arg);
}

static void handle_connected(twc_client *c, twc__msg *m)
{
    if (c->connected) return;
    c->connected = true;
    c->connected_at = uv_now(c->loop);
    c->stats.connects++;
    size_t l;
    const char *v = field_str(&m->node, c->node, sizeof c->node, &l);
    if (v && v != c->node) snprintf(c->node, sizeof c->node, "%.*s", (int)l, v);
    v = field_str(&m->session, c->session, sizeof c->session, &l);
    if (v && v != c->session) snprintf(c->session, sizeof c->session, "%.*s", (int)l, v);
    if (m->has_ping_interval && m->ping_interval > 0)
        twc__conn_set_idle_timeout(c->conn,
                                   (uint64_t)(m->ping_interval * 1000.0 * IDLE_FACTOR + 0.5));
    else
        twc__conn_set_idle_timeout(c->conn, 0);
    set_state(c, TWC_STATE_CONNECTED, NULL);
}

static void handle_error(twc_client *c, twc__msg *m)
{
    char msgbuf[512];
    size_t ml;
    const char *mp = field_str(&m->message, msgbuf, sizeof msgbuf, &ml);
    if (!mp || !m->message.p) mp = "error reply without a message", ml = strlen(mp);
    if (mp != msgbuf) {
        snprintf(msgbuf, sizeof msgbuf, "%.*s", (int)ml, mp);
        mp = msgbuf;
    }
    int code = m->has_code ? (int)m->code : 0;
    twc_error e = {.err = TWC_E_SERVER, .code = code, .message = mp, .channel = NULL};
    if (!m->has_id) {
        report(c, TWC_E_SERVER, code, mp, NULL);
        return;
    }
    if (m->id == c->connect_id && c->conn) {
        /* The node refused our connect (bad token...): retrying as is cannot help for
         * 400/401/403; anything else is worth another attempt. */
        bool terminal = code == 400 || code == 401 || code == 403;
        twc__conn_detach(c->conn);
        if (!terminal) {
            conn_ended(c, &e);
            return;
        }
        forget_conn(c);
        set_disconnected(c, &e);
        report(c, TWC_E_SERVER, code, mp, NULL);
        return;
    }
    pub *p = pq_find(c, m->id);
    if (p && !p->done) {
        p->done = true;
        c->queued_bytes -= p->tail_len;
        twc_ack_cb cb = p->cb;
        void *arg = p->arg;
        pq_pop_done(c);
        if (cb && !c->freeing) cb(c, &e, NULL, arg);
        return;
    }
    FOR_EACH_SUB(c, s)
    {
        if (s->req_id == m->id && s->st == SUB_SENT) {
            /* Refused subscription: forget it and say so; the application decides. */
            sub_remove(c, s);
            e.channel = s->name;
            report(c, TWC_E_SERVER, code, mp, s->name);
            sub_free(s);
            return;
        }
    }
    report(c, TWC_E_SERVER, code, mp, NULL);
}

static void on_conn_message(void *owner, twc__conn *conn, char *text, size_t len)
{
    twc_client *c = owner;
    if (conn != c->conn) return;
    twc__msg m;
    const char *why;
    if (twc__msg_scan(text, len, &m, &why)) {
        report(c, TWC_E_PROTOCOL, 0, why, NULL);
        return;
    }
    char opbuf[32];
    twc__jstr op = m.op;
    if (op.esc) {
        size_t l;
        const char *d = field_str(&m.op, opbuf, sizeof opbuf, &l);
        op.p = d ? d : "";
        op.n = d ? l : 0;
    }
    if (!op.p) {
        report(c, TWC_E_PROTOCOL, 0, "message without op", NULL);
        return;
    }
    switch (op.n ? op.p[0] : 0) {
    case 'e':
        if (op_is(&op, "event"))
            handle_event(c, &m);
        else if (op_is(&op, "error"))
            handle_error(c, &m);
        break;
    case 'a':
        if (op_is(&op, "ack")) handle_ack(c, &m);
        break;
    case 's':
        if (op_is(&op, "subscribed")) handle_subscribed(c, &m);
        break;
    case 'c':
        if (op_is(&op, "connected")) handle_connected(c, &m);
        break;
    default: /* unsubscribed, pong, presence, join, leave, later additions: nothing to do */
        break;
    }
}

/* ---- public API ------------------------------------------------------------------------- */

int twc_client_new(uv_loop_t *loop, const twc_options *opts, twc_client **out)
{
    if (!loop || !opts || !out) return TWC_E_ARG;
    twc__url url;
    int rv = twc__url_parse(opts->url, "/ws", &url);
    if (rv) return rv;
    if (strcmp(url.scheme, "ws") && strcmp(url.scheme, "wss")) return TWC_E_URL;
    if (url.secure) return TWC_E_UNSUPPORTED; /* TLS: see the transport notes in twc_conn.c */
    if (opts->token && !twc__utf8_valid(opts->token, strlen(opts->token))) return TWC_E_ARG;
    twc_client *c = calloc(1, sizeof *c);
    if (!c) return UV_ENOMEM;
    c->loop = loop;
    c->opts = *opts;
    c->url = url;
    c->url_str = strdup(opts->url);
    c->token = opts->token ? strdup(opts->token) : NULL;
    if (!c->url_str || (opts->token && !c->token)) {
        free(c->url_str);
        free(c->token);
        free(c);
        return UV_ENOMEM;
    }
    c->opts.url = c->url_str;
    c->opts.token = c->token;
    twc_options *o = &c->opts;
    if (!o->backoff_initial_ms) o->backoff_initial_ms = DEFAULT_BACKOFF_INITIAL_MS;
    if (!o->backoff_max_ms) o->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    if (!(o->backoff_factor >= 1.0)) o->backoff_factor = DEFAULT_BACKOFF_FACTOR;
    if (!o->connect_timeout_ms) o->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (!o->close_timeout_ms) o->close_timeout_ms = DEFAULT_CLOSE_TIMEOUT_MS;
    if (!o->max_queued_bytes) o->max_queued_bytes = DEFAULT_MAX_QUEUED;
    if (!o->max_message_bytes) o->max_message_bytes = DEFAULT_MAX_MESSAGE;
    if (!o->max_publish_bytes) o->max_publish_bytes = DEFAULT_MAX_PUBLISH;
    c->backoff = (twc__backoff){o->backoff_initial_ms, o->backoff_max_ms, o->backoff_factor, 0};
    twc__rng_seed(&c->rng);
    c->next_id = 1;
    c->state = TWC_STATE_DISCONNECTED;
    rv = uv_timer_init(loop, &c->retry);
    if (rv) {
        free(c->url_str);
        free(c->token);
        free(c);
        return rv;
    }
    c->retry.data = c;
    *out = c;
    return 0;
}

int twc_connect(twc_client *c)
{
    if (c->freeing) return TWC_E_STATE;
    if (c->want) return 0;
    if (c->conn) { /* a graceful close still running: abandon it */
        twc__conn_detach(c->conn);
        forget_conn(c);
    }
    c->closing = false;
    c->want = true;
    c->backoff.attempt = 0;
    set_state(c, TWC_STATE_CONNECTING, NULL);
    if (c->want && !c->conn && !c->freeing) start_attempt(c);
    return 0;
}

int twc_close(twc_client *c)
{
    if (c->freeing) return TWC_E_STATE;
    c->want = false;
    uv_timer_stop(&c->retry);
    if (c->conn && c->conn_open) {
        c->closing = true;
        if (twc__conn_close(c->conn, 1000, c->opts.close_timeout_ms))
            return 0; /* conn_ended() finishes when the server answers or time runs out */
    } else if (c->conn) {
        twc__conn_detach(c->conn);
    }
    if (c->conn) forget_conn(c);
    set_disconnected(c, NULL);
    return 0;
}

static void on_client_closed(uv_handle_t *h)
{
    twc_client *c = h->data;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (sub *s = c->buckets[i], *n; s; s = n) {
            n = s->next;
            sub_free(s);
        }
    }
    free(c->buckets);
    for (size_t i = 0; i < c->pq_len; i++)
        free(pq_at(c, i));
    free(c->pq);
    twc__buf_free(&c->scratch);
    free(c->url_str);
    free(c->token);
    free(c);
}

void twc_free(twc_client *c)
{
    if (!c || c->freeing) return;
    c->freeing = true;
    c->want = false;
    if (c->conn) {
        twc__conn_detach(c->conn);
        c->conn = NULL;
    }
    uv_close((uv_handle_t *)&c->retry, on_client_closed);
}

static bool channel_ok(const char *channel)
{
    return channel && *channel && twc__utf8_valid(channel, strlen(channel));
}

int twc_subscribe(twc_client *c, const char *channel, const char *since_json, unsigned last)
{
    if (c->freeing) return TWC_E_STATE;
    if (!channel_ok(channel)) return TWC_E_ARG;
    size_t len = strlen(channel);
    if (sub_find(c, channel, len)) return TWC_E_EXISTS;
    sub *s = calloc(1, sizeof *s);
    if (!s) return UV_ENOMEM;
    s->name = strdup(channel);
    if (!s->name) {
        free(s);
        return UV_ENOMEM;
    }
    s->len = len;
    s->hash = hash_name(channel, len);
    s->last = last;
    if (since_json) {
        int rv = twc__cursor_parse(since_json, strlen(since_json), &s->cursor);
        if (rv) {
            sub_free(s);
            return rv;
        }
        s->has_cursor = true;
    }
    int rv = sub_insert(c, s);
    if (rv) {
        sub_free(s);
        return rv;
    }
    if (c->conn_open)
        send_subscribe(c, s); /* on failure the connection is failing; the resubscribe
                                 after reconnecting covers it */
    return 0;
}

int twc_unsubscribe(twc_client *c, const char *channel)
{
    if (c->freeing) return TWC_E_STATE;
    if (!channel) return TWC_E_ARG;
    sub *s = sub_find(c, channel, strlen(channel));
    if (!s) return TWC_E_NOT_FOUND;
    sub_remove(c, s);
    if (c->conn_open && s->st != SUB_PENDING) {
        twc__buf *b = &c->scratch;
        b->len = 0;
        int rv = twc__buf_printf(
            b, "{\"op\":\"unsubscribe\",\"id\":%" PRId64 ",\"channel\":", c->next_id++);
        if (!rv) rv = twc__json_escape(b, s->name, s->len);
        if (!rv) rv = twc__buf_append(b, "}", 1);
        if (!rv) send_text(c, b->p, b->len);
    }
    sub_free(s);
    return 0;
}

int twc_publish(twc_client *c, const char *channel, const char *data_json, twc_ack_cb cb, void *arg)
{
    if (c->freeing) return TWC_E_STATE;
    if (!channel_ok(channel) || !data_json) return TWC_E_ARG;
    size_t dl = strlen(data_json);
    if (!twc__json_valid(data_json, dl)) return TWC_E_JSON;
    twc__buf *b = &c->scratch;
    b->len = 0;
    int rv = twc__buf_appends(b, ",\"channel\":");
    if (!rv) rv = twc__json_escape(b, channel, strlen(channel));
    if (!rv) rv = twc__buf_appends(b, ",\"data\":");
    if (!rv) rv = twc__buf_append(b, data_json, dl);
    if (!rv) rv = twc__buf_append(b, "}", 1);
    if (rv) return rv;
    if (b->len + 40 > c->opts.max_publish_bytes) /* 40: {"op":"publish","id":N */
        return TWC_E_TOO_BIG;
    if (c->queued_bytes + b->len > c->opts.max_queued_bytes) return TWC_E_QUEUE_FULL;
    pub *p = malloc(sizeof *p + b->len);
    if (!p) return UV_ENOMEM;
    *p = (pub){.cb = cb, .arg = arg, .tail_len = b->len};
    memcpy(p->tail, b->p, b->len);
    if ((rv = pq_push(c, p))) {
        free(p);
        return rv;
    }
    c->queued_bytes += p->tail_len;
    if (c->conn_open && (rv = send_publish(c, p))) {
        c->pq_len--; /* it is the last entry */
        c->queued_bytes -= p->tail_len;
        free(p);
        return rv;
    }
    return 0;
}

char *twc_cursor_json(const twc_client *c, const char *channel)
{
    if (!channel) return NULL;
    const sub *s = sub_find(c, channel, strlen(channel));
    if (!s) return NULL;
    twc__buf b = {0};
    if (twc__cursor_json(&s->cursor, &b)) {
        twc__buf_free(&b);
        return NULL;
    }
    return b.p;
}

twc_state twc_get_state(const twc_client *c)
{
    return c->state;
}

const char *twc_node(const twc_client *c)
{
    return c->node;
}

const char *twc_session(const twc_client *c)
{
    return c->session;
}

void twc_get_stats(const twc_client *c, twc_stats *out)
{
    *out = c->stats;
    out->queued_bytes = c->queued_bytes;
}
