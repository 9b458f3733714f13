/*
 * tidewire-cli bench --protocol tidewire|nats-ws|socketio: one load generator for tidewire
 * and its peers (tests/bench/peers, docs/benchmarks.md "Against the peers").
 *
 * Every protocol runs over the same minimal WebSocket client below (libuv, one shared read
 * buffer, frames parsed in place, masked writes tried at once with uv_try_write), so the
 * generator spends the same per delivery whatever the server: a WebSocket frame, one
 * protocol message, a scan for the payload's stamp. What each protocol adds:
 *
 *  tidewire  JSON protocol v1 on /ws: subscribe (since {} for a replay), publish -> ack.
 *  nats-ws   the NATS text protocol inside WebSocket frames (CONNECT, PING/PONG, SUB, PUB,
 *            MSG/HMSG); durable publishes are JetStream publishes (PUB with a reply inbox,
 *            the stream's PubAck as the ack) to a file-storage stream the generator creates;
 *            a replay is a push consumer (deliver all, no acks) on that stream.
 *  socketio  Engine.IO v4 over the WebSocket transport (open packet, "40" connect, "2"/"3"
 *            ping/pong) and Socket.IO v4 events: "join" a room (acked), "pub" to a room
 *            (the server broadcasts "ev" to the room; acked when a publish wants an ack,
 *            in memory only: Socket.IO keeps nothing).
 *
 * The payload of every event is SIZE bytes: "@<publish time ns>:<seq>:" padded with 'x'.
 * The stamp is monotonic time of this process (publisher and subscribers share it).
 *
 * Kinds:
 *  fanout   N subscribers, one publisher at --rate R events/s, or (--rate 0) as fast as
 *           it can with at most --inflight events not yet delivered to every subscriber
 *           (the same flow control for every protocol: no acks needed).
 *  publish  K acknowledged (durable) publishes in flight over C connections.
 *  replay   --events N published (acked, 256 in flight) with nobody listening, then one
 *           client asks for all of them: events/s from the request to the last event.
 *           --no-fill --channel C: only the replay, of what an earlier run stored in C.
 *  conns    --conns N idle subscribed connections from --sources S addresses 127.0.0.2...
 *           connect rate, and with --server-pid the server's RSS per connection.
 *
 * --server-pid PID also reports the server's CPU time (from /proc) over the run.
 * The last line of stdout is one line of JSON with every figure.
 */
#include "cli.h"
#include "cli_bench_peer.h"
#include "hist.h"
#include "twc_int.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#define RBUF_SIZE (256u << 10)
#define SETUP_TIMEOUT_S 300
#define DRAIN_QUIET_S 3
#define DRAIN_MAX_S 30
#define REPLAY_TIMEOUT_S 120
#define FILL_INFLIGHT 256
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define JS_STREAM "BENCH"

enum proto { P_TW, P_NATS, P_SIO };
enum kind { K_FANOUT, K_PUBLISH, K_REPLAY, K_CONNS };
enum role { R_SUB, R_PUB, R_IDLE, R_REPLAY };
enum cstate { C_NEW, C_TCP, C_HS, C_OPEN, C_READY, C_DEAD };
enum stage { S_SETUP, S_FILL, S_RUN, S_DRAIN, S_SETTLE, S_DONE };

typedef struct pb pb;

typedef struct pconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    pb *b;
    char *in; /* bytes of an incomplete frame (or handshake) */
    uint32_t in_len, in_cap;
    char *nb; /* NATS: protocol bytes of an incomplete line/message across frames */
    uint32_t nb_len, nb_cap;
    uint64_t received, last_s;
    uint32_t idx;
    uint8_t role, st, waiting; /* waiting: NATS replies still expected before ready */
    bool counted;
} pconn;

typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} wreq;

struct pb {
    uv_loop_t loop;
    int proto, kind;
    twc__url url;
    char hostport[300];
    char channel[128];
    uint64_t nsubs, nconns, inflight, size, events, sources;
    double rate, duration, settle;
    bool no_fill; /* replay: the channel holds the events already (an earlier run's fill) */
    int server_pid;

    pconn *subs, *pubs, *replayer;
    uint64_t nstarted, nready, nfailed, npub_ready, connecting;
    uv_timer_t tick, stop, progress, settle_t;
    uv_signal_t sigint;
    int st, status;
    const char *abort_reason;

    uint64_t t_setup, t_first_conn, t_all_ready, t_start, t_stop, t_last, t_last_delivery;
    uint64_t scheduled, published, acked, errors, received, reorders, disconnects;
    uint64_t in_flight, prev_received, prev_acked;
    uint64_t *slot_t0;
    uint64_t cpu0, cpu1, rss0, rss1, gcpu0;
    cli_hist *lat;
    char *payload, *sbuf;
    size_t sbuf_cap;
    char *rbuf;
    uint32_t mask_state;
};

static void finish(pb *b, const char *why);
static void conn_start(pb *b, pconn *c, uint8_t role, uint64_t idx);
static void publish_more(pb *b);
static void publish_slot(pb *b, uint64_t slot);
static void on_ready(pconn *c);
static void start_subs(pb *b);

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- /proc figures of the server --------------------------------------------------------- */

static uint64_t proc_cpu_ns(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return 0;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (ut + st) * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
}

static uint64_t self_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static uint64_t proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* ---- payload ------------------------------------------------------------------------------ */

static const char *make_payload(pb *b, uint64_t seq)
{
    int n = snprintf(b->payload, 64, "@%llu:%llu:", (unsigned long long)uv_hrtime(),
                     (unsigned long long)seq);
    if ((uint64_t)n < b->size) memset(b->payload + n, 'x', b->size - (size_t)n);
    size_t len = (uint64_t)n > b->size ? (size_t)n : b->size;
    b->payload[len] = 0;
    return b->payload;
}

static size_t payload_len(pb *b)
{
    return strlen(b->payload);
}

/* A delivery: finds "@T:S:" in the message, records latency and order. */
static void delivery(pconn *c, const char *p, size_t n)
{
    pb *b = c->b;
    const char *at = memchr(p, '@', n);
    if (!at) return;
    const char *e = p + n;
    uint64_t t = 0, s = 0;
    at++;
    while (at < e && *at >= '0' && *at <= '9')
        t = t * 10 + (uint64_t)(*at++ - '0');
    if (at < e && *at == ':') at++;
    while (at < e && *at >= '0' && *at <= '9')
        s = s * 10 + (uint64_t)(*at++ - '0');
    uint64_t now = uv_hrtime();
    if (b->kind != K_REPLAY && t && t <= now) cli_hist_record(b->lat, now - t);
    if (s <= c->last_s) b->reorders++;
    c->last_s = s;
    c->received++;
    b->received++;
    b->t_last_delivery = b->t_last = now;
    if (b->kind == K_FANOUT) {
        if (b->st == S_RUN && b->rate == 0) publish_more(b);
        if (b->st == S_DRAIN && b->received >= b->published * b->nsubs) finish(b, NULL);
    } else if (b->kind == K_REPLAY && b->received >= b->events) {
        b->t_stop = now;
        finish(b, NULL);
    }
}

/* ---- WebSocket: writes --------------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    free(req);
}

static void raw_write(pconn *c, const char *p, size_t n)
{
    if (c->st == C_DEAD) return;
    uv_buf_t ub = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
    if (w == (int)n) return;
    if (w < 0 && w != UV_EAGAIN) return; /* the read side sees the error */
    size_t done = w > 0 ? (size_t)w : 0;
    wreq *r = malloc(sizeof *r + n - done);
    if (!r) return;
    memcpy(r->data, p + done, n - done);
    r->buf = uv_buf_init(r->data, (unsigned)(n - done));
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &r->buf, 1, on_written)) free(r);
}

static char *sbuf(pb *b, size_t n)
{
    if (n > b->sbuf_cap) {
        char *p = realloc(b->sbuf, n);
        if (!p) return NULL;
        b->sbuf = p;
        b->sbuf_cap = n;
    }
    return b->sbuf;
}

/* One masked frame holding a then b (b may be NULL). */
static void ws_send2(pconn *c, uint8_t opcode, const char *a, size_t an, const char *x, size_t xn)
{
    pb *b = c->b;
    char *out = sbuf(b, 14 + an + xn);
    if (!out) return;
    b->mask_state = b->mask_state * 1103515245u + 12345u;
    uint8_t mask[4];
    memcpy(mask, &b->mask_state, 4);
    size_t h = twc__ws_frame_header((uint8_t *)out, opcode, an + xn, mask);
    twc__ws_mask((uint8_t *)out + h, (const uint8_t *)a, an, mask, 0);
    if (xn) twc__ws_mask((uint8_t *)out + h + an, (const uint8_t *)x, xn, mask, an);
    raw_write(c, out, h + an + xn);
}

static void ws_text(pconn *c, const char *s, size_t n)
{
    ws_send2(c, 1, s, n, NULL, 0);
}

static void ws_printf(pconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ws_printf(pconn *c, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof tmp) ws_text(c, tmp, (size_t)n);
}

/* ---- connection life ------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    pconn *c = h->data;
    free(c->in);
    free(c->nb);
    c->in = c->nb = NULL;
    c->in_len = c->in_cap = c->nb_len = c->nb_cap = 0;
}

static void conn_close(pconn *c)
{
    if (c->st == C_NEW) return;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
    c->st = C_DEAD;
}

static void conn_failed(pconn *c, const char *what, const char *detail)
{
    pb *b = c->b;
    if (c->st == C_DEAD) return;
    bool was_ready = c->st == C_READY;
    conn_close(c);
    if (b->st == S_DONE) return;
    if (b->nfailed + b->disconnects < 5)
        fprintf(stderr, "tidewire-cli bench: connection %s: %s\n", what, detail ? detail : "");
    if (was_ready) {
        b->disconnects++;
        if (b->kind != K_CONNS) finish(b, "a connection was closed");
        return;
    }
    b->nfailed++;
    if (b->connecting) b->connecting--;
    if (b->kind == K_CONNS) {
        start_subs(b); /* the next one */
        if (b->nready + b->nfailed >= b->nconns && b->st == S_SETUP) on_ready(NULL);
    } else {
        finish(b, "a connection failed");
    }
}

/* ---- protocol: tidewire ---------------------------------------------------------------------- */

static bool prefix(const char *p, size_t n, const char *s)
{
    size_t l = strlen(s);
    return n >= l && !memcmp(p, s, l);
}

static const char *memstr(const char *p, size_t n, const char *s)
{
    size_t l = strlen(s);
    for (const char *e = p + n; p + l <= e; p++) {
        p = memchr(p, s[0], (size_t)(e - p));
        if (!p || p + l > e) return NULL;
        if (!memcmp(p, s, l)) return p;
    }
    return NULL;
}

static uint64_t num_after(const char *p, size_t n, const char *key)
{
    const char *k = memstr(p, n, key);
    if (!k) return 0;
    k += strlen(key);
    uint64_t v = 0;
    while (k < p + n && *k >= '0' && *k <= '9')
        v = v * 10 + (uint64_t)(*k++ - '0');
    return v;
}

static void on_ack(pb *b, uint64_t slot, bool ok);

static void tw_message(pconn *c, const char *p, size_t n)
{
    const char *op = memstr(p, n < 40 ? n : 40, "\"op\":\"");
    if (!op) return;
    op += 6;
    size_t rest = (size_t)(p + n - op);
    if (prefix(op, rest, "event\"")) {
        delivery(c, p, n);
    } else if (prefix(op, rest, "ack\"")) {
        if (c->role == R_PUB) on_ack(c->b, num_after(p, n, "\"id\":") - 1, true);
    } else if (prefix(op, rest, "subscribed\"")) {
        if (c->st == C_OPEN) on_ready(c);
    } else if (prefix(op, rest, "error\"")) {
        pb *b = c->b;
        if (b->errors < 5) fprintf(stderr, "tidewire-cli bench: %.*s\n", (int)n, p);
        uint64_t id = num_after(p, n, "\"id\":");
        if (c->role == R_PUB && id)
            on_ack(b, id - 1, false); /* counts the error */
        else if (c->st == C_OPEN)
            conn_failed(c, "refused", "subscribe error");
        else
            b->errors++;
    }
}

static void tw_open(pconn *c)
{
    pb *b = c->b;
    if (c->role == R_PUB) {
        on_ready(c);
    } else if (c->role == R_REPLAY) {
        b->t_start = uv_hrtime();
        ws_printf(c, "{\"op\":\"subscribe\",\"id\":1,\"channel\":\"%s\",\"since\":{}}", b->channel);
        c->st = C_READY; /* events follow "subscribed" */
    } else {
        ws_printf(c, "{\"op\":\"subscribe\",\"id\":1,\"channel\":\"%s\"}", b->channel);
    }
}

/* ---- protocol: NATS over WebSocket ------------------------------------------------------------
 */

#define NW_PONG 1
#define NW_STREAM 2

static void nats_open(pconn *c)
{
    pb *b = c->b;
    char tmp[1024];
    int n = snprintf(tmp, sizeof tmp,
                     "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false,"
                     "\"headers\":false,\"name\":\"tidewire-bench\"}\r\n");
    switch (c->role) {
    case R_SUB:
    case R_IDLE:
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, "SUB %s 1\r\nPING\r\n", b->channel);
        c->waiting = NW_PONG;
        break;
    case R_PUB:
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, "SUB _INBOX.b%u.* 2\r\nPING\r\n", c->idx);
        c->waiting = NW_PONG;
        if (b->kind == K_PUBLISH || b->kind == K_REPLAY) {
            char js[512];
            int jn = snprintf(js, sizeof js,
                              "{\"name\":\"" JS_STREAM "\",\"subjects\":[\"js.>\"],"
                              "\"storage\":\"file\",\"retention\":\"limits\",\"discard\":\"old\","
                              "\"num_replicas\":1}");
            n += snprintf(tmp + n, sizeof tmp - (size_t)n,
                          "PUB $JS.API.STREAM.CREATE." JS_STREAM " _INBOX.b%u.setup %d\r\n%s\r\n",
                          c->idx, jn, js);
            c->waiting |= NW_STREAM;
        }
        break;
    case R_REPLAY: {
        char js[512];
        int jn = snprintf(js, sizeof js,
                          "{\"stream_name\":\"" JS_STREAM "\",\"config\":{\"deliver_subject\":"
                          "\"deliver.%s\",\"deliver_policy\":\"all\",\"ack_policy\":\"none\","
                          "\"replay_policy\":\"instant\",\"filter_subject\":\"js.%s\"}}",
                          b->channel, b->channel);
        n += snprintf(tmp + n, sizeof tmp - (size_t)n,
                      "SUB deliver.%s 1\r\nSUB _INBOX.b%u.* 2\r\n"
                      "PUB $JS.API.CONSUMER.CREATE." JS_STREAM " _INBOX.b%u.cons %d\r\n%s\r\n",
                      b->channel, c->idx, c->idx, jn, js);
        b->t_start = uv_hrtime();
        c->st = C_READY;
        break;
    }
    }
    ws_text(c, tmp, (size_t)n);
}

static void nats_msg(pconn *c, const char *subj, size_t sl, int sid, const char *p, size_t n)
{
    pb *b = c->b;
    if (sid == 1) {
        delivery(c, p, n);
        return;
    }
    /* sid 2: this connection's inbox _INBOX.b<conn>.<slot|setup|cons> */
    const char *dot = memchr(subj + 7, '.', sl - 7);
    if (!dot) return;
    const char *last = dot + 1;
    size_t ll = (size_t)(subj + sl - last);
    bool err = memstr(p, n, "\"error\"") != NULL;
    if (prefix(last, ll, "setup")) {
        if (err) {
            fprintf(stderr, "tidewire-cli bench: stream create: %.*s\n", (int)n, p);
            conn_failed(c, "refused", "JetStream stream create");
            return;
        }
        c->waiting &= (uint8_t)~NW_STREAM;
        if (!c->waiting && c->st == C_OPEN) on_ready(c);
    } else if (prefix(last, ll, "cons")) {
        if (err) {
            fprintf(stderr, "tidewire-cli bench: consumer create: %.*s\n", (int)n, p);
            finish(b, "consumer create failed");
        }
    } else {
        uint64_t slot = 0;
        for (size_t i = 0; i < ll && last[i] >= '0' && last[i] <= '9'; i++)
            slot = slot * 10 + (uint64_t)(last[i] - '0');
        if (err && b->errors < 5) fprintf(stderr, "tidewire-cli bench: %.*s\n", (int)n, p);
        on_ack(b, slot, !err);
    }
}

/* Parses as much of the NATS byte stream p[0..n) as is complete; returns bytes used. */
static size_t nats_parse(pconn *c, const char *p, size_t n)
{
    size_t used = 0;
    while (used < n && c->st != C_DEAD) {
        const char *s = p + used;
        size_t rest = n - used;
        const char *nl = memchr(s, '\n', rest);
        if (!nl) break;
        size_t ll = (size_t)(nl - s) + 1; /* the line with its \r\n */
        if (prefix(s, rest, "MSG ") || prefix(s, rest, "HMSG ")) {
            /* MSG subj sid [reply] len | HMSG subj sid [reply] hlen tlen */
            const char *tok[6];
            size_t tl[6];
            int nt = 0;
            const char *q = s, *e = nl - (nl > s && nl[-1] == '\r' ? 1 : 0);
            while (q < e && nt < 6) {
                while (q < e && *q == ' ')
                    q++;
                if (q >= e) break;
                tok[nt] = q;
                while (q < e && *q != ' ')
                    q++;
                tl[nt] = (size_t)(q - tok[nt]);
                nt++;
            }
            if (nt < 4) {
                conn_failed(c, "protocol", "bad MSG line");
                return n;
            }
            uint64_t len = 0;
            for (size_t i = 0; i < tl[nt - 1]; i++)
                len = len * 10 + (uint64_t)(tok[nt - 1][i] - '0');
            if (rest < ll + len + 2) break;
            int sid = 0;
            for (size_t i = 0; i < tl[2] && tok[2][i] >= '0' && tok[2][i] <= '9'; i++)
                sid = sid * 10 + (tok[2][i] - '0');
            nats_msg(c, tok[1], tl[1], sid, s + ll, len);
            used += ll + len + 2;
            continue;
        }
        if (prefix(s, rest, "PING")) {
            ws_text(c, "PONG\r\n", 6);
        } else if (prefix(s, rest, "PONG")) {
            c->waiting &= (uint8_t)~NW_PONG;
            if (!c->waiting && c->st == C_OPEN) on_ready(c);
        } else if (prefix(s, rest, "-ERR")) {
            fprintf(stderr, "tidewire-cli bench: nats: %.*s\n", (int)ll, s);
            c->b->errors++;
        }
        used += ll;
    }
    return used;
}

static void nats_data(pconn *c, const char *p, size_t n)
{
    bool fresh = !c->nb_len;
    if (fresh) { /* nothing held over: parse in place, keep only an incomplete tail */
        size_t used = nats_parse(c, p, n);
        p += used;
        n -= used;
        if (!n || c->st == C_DEAD) return;
    }
    if (c->nb_len + n > c->nb_cap) {
        uint32_t cap = c->nb_cap ? c->nb_cap : 1024;
        while (cap < c->nb_len + n)
            cap *= 2;
        char *q = realloc(c->nb, cap);
        if (!q) return conn_failed(c, "memory", NULL);
        c->nb = q;
        c->nb_cap = cap;
    }
    memcpy(c->nb + c->nb_len, p, n);
    c->nb_len += (uint32_t)n;
    if (fresh) return;
    size_t used = nats_parse(c, c->nb, c->nb_len);
    if (c->st == C_DEAD) return;
    memmove(c->nb, c->nb + used, c->nb_len - used);
    c->nb_len -= (uint32_t)used;
}

/* ---- protocol: Socket.IO v4 over Engine.IO v4 ----------------------------------------------- */

static void sio_message(pconn *c, const char *p, size_t n)
{
    pb *b = c->b;
    if (!n) return;
    switch (p[0]) {
    case '0': /* Engine.IO open: connect to the main namespace */
        ws_text(c, "40", 2);
        return;
    case '2': /* Engine.IO ping */
        ws_text(c, "3", 1);
        return;
    case '4':
        break;
    default:
        return;
    }
    if (n < 2) return;
    if (p[1] == '2') {
        delivery(c, p, n);
    } else if (p[1] == '0') { /* connected */
        if (c->role == R_PUB)
            on_ready(c);
        else
            ws_printf(c, "421[\"join\",\"%s\"]", b->channel);
    } else if (p[1] == '3') { /* ack: 43<id>[...] */
        uint64_t id = num_after(p, n, "43");
        if (c->role == R_PUB)
            on_ack(b, id - 1, true);
        else if (c->st == C_OPEN)
            on_ready(c);
    } else if (p[1] == '4') {
        conn_failed(c, "refused", "socket.io connect error");
    }
}

/* ---- frames ------------------------------------------------------------------------------------
 */

static void ws_opened(pconn *c)
{
    c->st = C_OPEN;
    switch (c->b->proto) {
    case P_TW:
        tw_open(c);
        break;
    case P_NATS:
        nats_open(c);
        break;
    case P_SIO: /* the server speaks first */
        break;
    }
}

static void ws_frame(pconn *c, int opcode, const char *p, size_t n)
{
    switch (opcode) {
    case 0:
    case 1:
    case 2:
        if (c->b->proto == P_NATS)
            nats_data(c, p, n);
        else if (c->b->proto == P_TW)
            tw_message(c, p, n);
        else
            sio_message(c, p, n);
        break;
    case 8:
        conn_failed(c, "closed by the server", NULL);
        break;
    case 9:
        ws_send2(c, 10, p, n, NULL, 0);
        break;
    default:
        break;
    }
}

/* Parses frames in p[0..n); returns bytes used. */
static size_t ws_parse(pconn *c, const char *p, size_t n)
{
    size_t used = 0;
    if (c->st == C_HS) {
        const char *end = memstr(p, n, "\r\n\r\n");
        if (!end) return 0;
        if (!prefix(p, n, "HTTP/1.1 101")) {
            const char *eol = memchr(p, '\r', n);
            char line[128];
            snprintf(line, sizeof line, "%.*s", (int)(eol - p), p);
            conn_failed(c, "upgrade refused", line);
            return n;
        }
        used = (size_t)(end - p) + 4;
        ws_opened(c);
    }
    while (n - used >= 2 && c->st != C_DEAD) {
        const uint8_t *f = (const uint8_t *)p + used;
        size_t rest = n - used, h = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (rest < 4) break;
            len = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (len == 127) {
            if (rest < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            h = 10;
        }
        if (f[1] & 0x80) {
            conn_failed(c, "protocol", "masked server frame");
            return n;
        }
        if (rest < h + len) break;
        ws_frame(c, f[0] & 0x0f, (const char *)f + h, (size_t)len);
        used += h + (size_t)len;
    }
    return used;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    pconn *c = h->data;
    *buf = uv_buf_init(c->b->rbuf, RBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pconn *c = s->data;
    if (nread < 0) {
        conn_failed(c, "lost", uv_strerror((int)nread));
        return;
    }
    if (!nread) return;
    const char *p = buf->base;
    size_t n = (size_t)nread;
    if (c->in_len) {
        if (c->in_len + n > c->in_cap) {
            uint32_t cap = c->in_cap ? c->in_cap : 4096;
            while (cap < c->in_len + n)
                cap *= 2;
            char *q = realloc(c->in, cap);
            if (!q) return conn_failed(c, "memory", NULL);
            c->in = q;
            c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, p, n);
        c->in_len += (uint32_t)n;
        size_t used = ws_parse(c, c->in, c->in_len);
        if (c->st == C_DEAD) return;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= (uint32_t)used;
        return;
    }
    size_t used = ws_parse(c, p, n);
    if (c->st == C_DEAD || used == n) return;
    size_t left = n - used;
    if (left > c->in_cap) {
        uint32_t cap = 4096;
        while (cap < left)
            cap *= 2;
        char *q = realloc(c->in, cap);
        if (!q) return conn_failed(c, "memory", NULL);
        c->in = q;
        c->in_cap = cap;
    }
    memcpy(c->in, p + used, left);
    c->in_len = (uint32_t)left;
}

static void on_connected(uv_connect_t *req, int status)
{
    pconn *c = req->data;
    pb *b = c->b;
    if (c->st == C_DEAD) return;
    if (status) {
        conn_failed(c, "connect", uv_strerror(status));
        return;
    }
    c->st = C_HS;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    char req_text[1024];
    int n = snprintf(req_text, sizeof req_text,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     b->url.path, b->hostport,
                     b->proto == P_TW ? "Sec-WebSocket-Protocol: tidewire.v1.json\r\n" : "");
    raw_write(c, req_text, (size_t)n);
}

static void conn_start(pb *b, pconn *c, uint8_t role, uint64_t idx)
{
    if (!c) { /* conns/fanout subscribers: the next one not started */
        if (b->nstarted >= b->nsubs || b->st != S_SETUP) return;
        idx = b->nstarted++;
        c = &b->subs[idx];
    }
    c->b = b;
    c->idx = (uint32_t)idx;
    c->role = role;
    c->st = C_TCP;
    uv_tcp_init(&b->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    if (!b->t_first_conn) b->t_first_conn = uv_hrtime();
    b->connecting++;
    int rv = 0;
    if (b->sources > 0) {
        /* Our own socket, so that IP_BIND_ADDRESS_NO_PORT can come before bind(): the port
         * is then chosen by connect() for the whole 4-tuple (and may reuse a TIME_WAIT one
         * on loopback), instead of by bind() among ports free on the address, which runs
         * out, slowly, after a few runs of tens of thousands of connections. */
        struct sockaddr_in src;
        char ip[32];
        snprintf(ip, sizeof ip, "127.0.0.%u", (unsigned)(2 + idx % b->sources));
        uv_ip4_addr(ip, 0, &src);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0) {
            rv = uv_translate_sys_error(errno);
        } else {
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            if (bind(fd, (const struct sockaddr *)&src, sizeof src)) {
                rv = uv_translate_sys_error(errno);
                close(fd);
            } else if ((rv = uv_tcp_open(&c->tcp, fd))) {
                close(fd);
            }
        }
    }
    struct sockaddr_in dst;
    if (!rv) rv = uv_ip4_addr(b->url.host, b->url.port, &dst);
    if (!rv) uv_tcp_nodelay(&c->tcp, 1);
    if (!rv) rv = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&dst, on_connected);
    if (rv) conn_failed(c, "connect", uv_strerror(rv));
}

/* ---- stages ------------------------------------------------------------------------------------
 */

#define MAX_CONNECTING 256

static void start_subs(pb *b)
{
    uint8_t role = b->kind == K_CONNS ? R_IDLE : R_SUB;
    while (b->st == S_SETUP && b->nstarted < b->nsubs && b->connecting < MAX_CONNECTING)
        conn_start(b, NULL, role, 0);
}

static void on_stop(uv_timer_t *t);
static void on_tick(uv_timer_t *t);

static void begin_run(pb *b)
{
    b->st = S_RUN;
    b->t_start = b->t_last = uv_hrtime();
    if (b->server_pid) b->cpu0 = proc_cpu_ns(b->server_pid);
    b->gcpu0 = self_cpu_ns();
    fprintf(stderr, "tidewire-cli bench: ready after %.2f s; running for %g s\n",
            secs(b->t_start - b->t_setup), b->duration);
    uv_timer_start(&b->stop, on_stop, (uint64_t)(b->duration * 1000), 0);
    if (b->kind == K_PUBLISH) {
        for (uint64_t i = 0; i < b->inflight && b->st == S_RUN; i++)
            publish_slot(b, i);
    } else if (b->rate > 0) {
        uv_timer_start(&b->tick, on_tick, 0, 1);
    } else {
        publish_more(b);
    }
}

static void on_settled(uv_timer_t *t)
{
    pb *b = t->data;
    if (b->server_pid) b->rss1 = proc_rss_kb(b->server_pid);
    finish(b, NULL);
}

static void begin_replay(pb *b)
{
    b->st = S_RUN;
    if (b->server_pid) b->cpu0 = proc_cpu_ns(b->server_pid);
    b->gcpu0 = self_cpu_ns();
    b->replayer = &b->subs[0];
    conn_start(b, b->replayer, R_REPLAY, 999999); /* t_start when the request goes out */
}

/* A connection finished its protocol's opening (c NULL: conns mode, all tried). */
static void on_ready(pconn *c)
{
    pb *b = c ? c->b : NULL;
    if (c) {
        c->st = C_READY;
        if (b->connecting) b->connecting--;
        if (c->role == R_PUB)
            b->npub_ready++;
        else if (c->role == R_SUB || c->role == R_IDLE)
            b->nready++;
        if (b->st != S_SETUP) return;
        start_subs(b);
    }
    if (b->kind == K_CONNS) {
        if (b->nready + b->nfailed < b->nsubs) return;
        b->t_all_ready = uv_hrtime();
        b->st = S_SETTLE;
        fprintf(stderr, "tidewire-cli bench: %llu connected (%llu failed) in %.2f s\n",
                (unsigned long long)b->nready, (unsigned long long)b->nfailed,
                secs(b->t_all_ready - b->t_first_conn));
        uv_timer_start(&b->settle_t, on_settled, (uint64_t)(b->settle * 1000), 0);
        return;
    }
    if (b->nready < b->nsubs || b->npub_ready < b->nconns) return;
    if (b->kind == K_REPLAY && b->no_fill) {
        begin_replay(b);
        return;
    }
    if (b->kind == K_REPLAY) {
        b->st = S_FILL;
        b->t_start = uv_hrtime();
        for (uint64_t i = 0; i < FILL_INFLIGHT && b->scheduled < b->events; i++)
            publish_slot(b, i);
        return;
    }
    begin_run(b);
}

/* ---- publishing --------------------------------------------------------------------------------
 */

/* Fire-and-forget publish of one event (fan-out: no ack wanted; tidewire acks anyway). */
static void publish_plain(pb *b)
{
    pconn *c = &b->pubs[0];
    const char *pl = make_payload(b, ++b->scheduled);
    size_t pn = payload_len(b);
    char head[512];
    int n;
    switch (b->proto) {
    case P_TW:
        n = snprintf(head, sizeof head, "{\"op\":\"publish\",\"channel\":\"%s\",\"data\":\"",
                     b->channel);
        memcpy(b->payload + pn, "\"}", 3);
        ws_send2(c, 1, head, (size_t)n, pl, pn + 2);
        break;
    case P_NATS:
        n = snprintf(head, sizeof head, "PUB %s %zu\r\n", b->channel, pn);
        memcpy(b->payload + pn, "\r\n", 3);
        ws_send2(c, 1, head, (size_t)n, pl, pn + 2);
        break;
    case P_SIO:
        n = snprintf(head, sizeof head, "42[\"pub\",\"%s\",\"", b->channel);
        memcpy(b->payload + pn, "\"]", 3);
        ws_send2(c, 1, head, (size_t)n, pl, pn + 2);
        break;
    }
    b->published++;
}

/* An acknowledged publish in slot (its ack names the slot). */
static void publish_slot(pb *b, uint64_t slot)
{
    pconn *c = &b->pubs[slot % b->nconns];
    const char *pl = make_payload(b, ++b->scheduled);
    size_t pn = payload_len(b);
    char head[512];
    int n;
    b->slot_t0[slot] = uv_hrtime();
    switch (b->proto) {
    case P_TW:
        n = snprintf(head, sizeof head,
                     "{\"op\":\"publish\",\"id\":%llu,\"channel\":\"%s\",\"data\":\"",
                     (unsigned long long)slot + 1, b->channel);
        memcpy(b->payload + pn, "\"}", 3);
        break;
    case P_NATS:
        n = snprintf(head, sizeof head, "PUB js.%s _INBOX.b%u.%llu %zu\r\n", b->channel, c->idx,
                     (unsigned long long)slot, pn);
        memcpy(b->payload + pn, "\r\n", 3);
        break;
    default:
        n = snprintf(head, sizeof head, "42%llu[\"pub\",\"%s\",\"", (unsigned long long)slot + 1,
                     b->channel);
        memcpy(b->payload + pn, "\"]", 3);
        break;
    }
    ws_send2(c, 1, head, (size_t)n, pl, pn + 2);
    b->published++;
    b->in_flight++;
}

static void on_ack(pb *b, uint64_t slot, bool ok)
{
    if (slot >= (b->kind == K_REPLAY ? FILL_INFLIGHT : b->inflight) || !b->in_flight) return;
    uint64_t now = uv_hrtime();
    b->in_flight--;
    if (ok) {
        b->acked++;
        if (b->kind == K_PUBLISH) cli_hist_record(b->lat, now - b->slot_t0[slot]);
    } else {
        b->errors++;
    }
    b->t_last = now;
    if (b->kind == K_REPLAY) {
        if (b->st != S_FILL) return;
        if (b->scheduled < b->events) {
            publish_slot(b, slot);
        } else if (!b->in_flight) {
            fprintf(stderr, "tidewire-cli bench: %llu events stored in %.2f s; replaying\n",
                    (unsigned long long)b->acked, secs(now - b->t_start));
            begin_replay(b);
        }
        return;
    }
    if (b->st == S_RUN)
        publish_slot(b, slot);
    else if (b->st == S_DRAIN && !b->in_flight)
        finish(b, NULL);
}

static void publish_more(pb *b)
{
    uint64_t window = b->inflight * b->nsubs;
    while (b->st == S_RUN && b->published * b->nsubs - b->received < window)
        publish_plain(b);
}

static void on_tick(uv_timer_t *t)
{
    pb *b = t->data;
    if (b->st != S_RUN) return;
    double el = secs(uv_hrtime() - b->t_start);
    if (el >= b->duration) {
        on_stop(&b->stop);
        return;
    }
    uint64_t due = (uint64_t)(el * b->rate) + 1;
    while (b->st == S_RUN && b->scheduled < due)
        publish_plain(b);
}

static void on_stop(uv_timer_t *t)
{
    pb *b = t->data;
    if (b->st != S_RUN) return;
    b->st = S_DRAIN;
    b->t_stop = b->t_last = uv_hrtime();
    uv_timer_stop(&b->tick);
    if (b->kind == K_PUBLISH ? !b->in_flight : b->received >= b->published * b->nsubs)
        finish(b, NULL);
}

static void on_progress(uv_timer_t *t)
{
    pb *b = t->data;
    uint64_t now = uv_hrtime();
    switch (b->st) {
    case S_SETUP:
        fprintf(stderr, "tidewire-cli bench: setup: %llu/%llu ready, %llu failed\n",
                (unsigned long long)b->nready, (unsigned long long)b->nsubs,
                (unsigned long long)b->nfailed);
        if (now - b->t_setup > (uint64_t)SETUP_TIMEOUT_S * 1000000000ull)
            finish(b, "setup timed out");
        break;
    case S_FILL:
    case S_RUN:
    case S_DRAIN:
        fprintf(stderr,
                "tidewire-cli bench: %.0f s: published %llu acked %llu received %llu (%llu/s)\n",
                secs(now - b->t_start), (unsigned long long)b->published,
                (unsigned long long)b->acked, (unsigned long long)b->received,
                (unsigned long long)(b->received - b->prev_received));
        b->prev_received = b->received;
        if (b->kind == K_REPLAY && now - b->t_start > (uint64_t)REPLAY_TIMEOUT_S * 1000000000ull)
            finish(b, "replay timed out");
        if (b->st == S_DRAIN && (now - b->t_last > (uint64_t)DRAIN_QUIET_S * 1000000000ull ||
                                 now - b->t_stop > (uint64_t)DRAIN_MAX_S * 1000000000ull))
            finish(b, NULL);
        break;
    default:
        break;
    }
}

static void on_sigint(uv_signal_t *s, int signum)
{
    pb *b = s->data;
    if (b->st == S_RUN && b->kind != K_REPLAY)
        on_stop(&b->stop);
    else
        finish(b, "interrupted");
}

/* ---- report ------------------------------------------------------------------------------------
 */

static const char *proto_name(int p)
{
    return p == P_TW ? "tidewire" : p == P_NATS ? "nats-ws" : "socketio";
}

static const char *kind_name(int k)
{
    return k == K_FANOUT    ? "fanout"
           : k == K_PUBLISH ? "publish"
           : k == K_REPLAY  ? "replay"
                            : "conns";
}

static void report(pb *b)
{
    cli_hist *h = b->lat;
    uint64_t now = uv_hrtime();
    if (!b->t_stop) b->t_stop = now;
    if (b->server_pid) b->cpu1 = proc_cpu_ns(b->server_pid);
    double busy_s = secs(now - b->t_start); /* the server's CPU is read over this */
    double run_s = secs(b->t_stop - b->t_start);
    printf("{\"bench\":\"%s\",\"protocol\":\"%s\",\"url\":\"ws://%s%s\",\"size\":%llu",
           kind_name(b->kind), proto_name(b->proto), b->hostport, b->url.path,
           (unsigned long long)b->size);
    if (b->abort_reason) printf(",\"aborted\":\"%s\"", b->abort_reason);
    printf(",\"errors\":%llu,\"disconnects\":%llu", (unsigned long long)b->errors,
           (unsigned long long)b->disconnects);
    if (b->gcpu0 && busy_s > 0)
        printf(",\"generator_cpu_pct\":%.1f", 100 * secs(self_cpu_ns() - b->gcpu0) / busy_s);
    double cpu_s = b->cpu1 > b->cpu0 ? secs(b->cpu1 - b->cpu0) : 0;
    switch (b->kind) {
    case K_FANOUT: {
        uint64_t expected = b->published * b->nsubs;
        uint64_t loss = expected > b->received ? expected - b->received : 0;
        double ds = b->t_last_delivery > b->t_start ? secs(b->t_last_delivery - b->t_start) : 0;
        double dps = ds > 0 ? (double)b->received / ds : 0;
        fprintf(stderr,
                "fanout %s: %llu subs, rate %g: published %llu, deliveries %llu of %llu "
                "(loss %llu), %.0f/s; p50 %.3f p99 %.3f max %.3f ms; server CPU %.2f s\n",
                proto_name(b->proto), (unsigned long long)b->nsubs, b->rate,
                (unsigned long long)b->published, (unsigned long long)b->received,
                (unsigned long long)expected, (unsigned long long)loss, dps,
                ms(cli_hist_percentile(h, 50)), ms(cli_hist_percentile(h, 99)),
                ms(cli_hist_percentile(h, 100)), cpu_s);
        printf(",\"subs\":%llu,\"rate\":%g,\"inflight\":%llu,\"duration_s\":%.3f,"
               "\"published\":%llu,\"expected\":%llu,\"received\":%llu,\"loss\":%llu,"
               "\"out_of_order\":%llu,\"deliveries_per_s\":%.0f",
               (unsigned long long)b->nsubs, b->rate,
               (unsigned long long)(b->rate > 0 ? 0 : b->inflight), run_s,
               (unsigned long long)b->published, (unsigned long long)expected,
               (unsigned long long)b->received, (unsigned long long)loss,
               (unsigned long long)b->reorders, dps);
        if (b->server_pid && busy_s > 0)
            printf(",\"server_cpu_pct\":%.1f,\"server_cpu_ns_per_delivery\":%.0f",
                   100 * cpu_s / busy_s, b->received ? cpu_s * 1e9 / (double)b->received : 0);
        if (loss || b->abort_reason) b->status = CLI_ERROR;
        break;
    }
    case K_PUBLISH: {
        double as = b->t_last > b->t_start ? secs(b->t_last - b->t_start) : run_s;
        double aps = as > 0 ? (double)b->acked / as : 0;
        fprintf(stderr,
                "publish %s: %llu in flight over %llu conns: %llu acked, %.0f/s; "
                "p50 %.3f p99 %.3f ms\n",
                proto_name(b->proto), (unsigned long long)b->inflight,
                (unsigned long long)b->nconns, (unsigned long long)b->acked, aps,
                ms(cli_hist_percentile(h, 50)), ms(cli_hist_percentile(h, 99)));
        printf(",\"inflight\":%llu,\"conns\":%llu,\"duration_s\":%.3f,\"acked\":%llu,"
               "\"acks_per_s\":%.0f",
               (unsigned long long)b->inflight, (unsigned long long)b->nconns, as,
               (unsigned long long)b->acked, aps);
        if (b->server_pid && busy_s > 0)
            printf(",\"server_cpu_pct\":%.1f,\"server_cpu_us_per_ack\":%.2f", 100 * cpu_s / busy_s,
                   b->acked ? cpu_s * 1e6 / (double)b->acked : 0);
        if (b->errors || b->abort_reason) b->status = CLI_ERROR;
        break;
    }
    case K_REPLAY: {
        double eps = run_s > 0 ? (double)b->received / run_s : 0;
        fprintf(stderr, "replay %s: %llu of %llu events in %.3f s: %.0f events/s\n",
                proto_name(b->proto), (unsigned long long)b->received,
                (unsigned long long)b->events, run_s, eps);
        printf(",\"events\":%llu,\"received\":%llu,\"out_of_order\":%llu,\"duration_s\":%.4f,"
               "\"events_per_s\":%.0f",
               (unsigned long long)b->events, (unsigned long long)b->received,
               (unsigned long long)b->reorders, run_s, eps);
        if (b->server_pid && run_s > 0) printf(",\"server_cpu_pct\":%.1f", 100 * cpu_s / run_s);
        if (b->received < b->events || b->abort_reason) b->status = CLI_ERROR;
        break;
    }
    case K_CONNS: {
        double cs = b->t_all_ready > b->t_first_conn ? secs(b->t_all_ready - b->t_first_conn) : 0;
        double per = b->nready && b->rss1 > b->rss0
                         ? (double)(b->rss1 - b->rss0) * 1024.0 / (double)b->nready
                         : 0;
        fprintf(stderr,
                "conns %s: %llu of %llu connected and subscribed in %.2f s (%.0f/s); "
                "server RSS %llu -> %llu KiB: %.0f bytes per connection\n",
                proto_name(b->proto), (unsigned long long)b->nready, (unsigned long long)b->nsubs,
                cs, cs > 0 ? (double)b->nready / cs : 0, (unsigned long long)b->rss0,
                (unsigned long long)b->rss1, per);
        printf(",\"conns\":%llu,\"connected\":%llu,\"failed\":%llu,\"sources\":%llu,"
               "\"connect_s\":%.3f,\"connects_per_s\":%.0f,\"rss_before_kb\":%llu,"
               "\"rss_after_kb\":%llu,\"bytes_per_conn\":%.0f",
               (unsigned long long)b->nsubs, (unsigned long long)b->nready,
               (unsigned long long)b->nfailed, (unsigned long long)b->sources, cs,
               cs > 0 ? (double)b->nready / cs : 0, (unsigned long long)b->rss0,
               (unsigned long long)b->rss1, per);
        if (b->nfailed || b->abort_reason) b->status = CLI_ERROR;
        break;
    }
    }
    if (b->kind == K_FANOUT || b->kind == K_PUBLISH)
        printf(",\"latency_ms\":{\"count\":%llu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
               "\"p999\":%.4f,\"max\":%.4f,\"mean\":%.4f}",
               (unsigned long long)h->count, ms(cli_hist_percentile(h, 50)),
               ms(cli_hist_percentile(h, 90)), ms(cli_hist_percentile(h, 99)),
               ms(cli_hist_percentile(h, 99.9)), ms(cli_hist_percentile(h, 100)),
               cli_hist_mean(h) / 1e6);
    printf("}\n");
    fflush(stdout);
}

static void finish(pb *b, const char *why)
{
    if (b->st == S_DONE) return;
    if (why && !b->abort_reason) b->abort_reason = why;
    if (!b->t_stop) b->t_stop = uv_hrtime();
    b->st = S_DONE;
    report(b);
    for (uint64_t i = 0; i < b->nsubs; i++)
        conn_close(&b->subs[i]);
    for (uint64_t i = 0; i < b->nconns; i++)
        conn_close(&b->pubs[i]);
    uv_close((uv_handle_t *)&b->tick, NULL);
    uv_close((uv_handle_t *)&b->stop, NULL);
    uv_close((uv_handle_t *)&b->progress, NULL);
    uv_close((uv_handle_t *)&b->settle_t, NULL);
    uv_close((uv_handle_t *)&b->sigint, NULL);
}

/* ---- command line ------------------------------------------------------------------------------
 */

static const char *default_path(int proto)
{
    return proto == P_TW ? "/ws" : proto == P_NATS ? "/" : "/socket.io/?EIO=4&transport=websocket";
}

int cli_bench_peer(int argc, char **argv)
{
    pb *b = calloc(1, sizeof *b);
    if (!b) return CLI_ERROR;
    const char *kind = argv[1], *url = NULL, *proto = "tidewire", *channel = NULL, *v;
    if (!strcmp(kind, "fanout"))
        b->kind = K_FANOUT;
    else if (!strcmp(kind, "publish"))
        b->kind = K_PUBLISH;
    else if (!strcmp(kind, "replay"))
        b->kind = K_REPLAY;
    else if (!strcmp(kind, "conns"))
        b->kind = K_CONNS;
    else {
        free(b);
        return cli_usage_error("bench: unknown kind %s (fanout, publish, replay, conns)", kind);
    }
    b->nsubs = 100;
    b->nconns = 1;
    b->rate = 1000;
    b->duration = 10;
    b->size = 100;
    b->inflight = b->kind == K_FANOUT ? 256 : 64;
    b->events = 100000;
    b->settle = 2;
    int rc = 0;
    for (int i = 2; i < argc && !rc; i++) {
        uint64_t u;
        if (cli_opt(argc, argv, &i, "--protocol", &v)) {
            if (!(proto = v))
                rc = cli_usage_error("--protocol needs tidewire, nats-ws or socketio");
        } else if (cli_opt(argc, argv, &i, "--url", &v)) {
            if (!(url = v)) rc = cli_usage_error("--url needs a value");
        } else if (cli_opt(argc, argv, &i, "--channel", &v)) {
            if (!(channel = v) || !*v || strlen(v) > 100)
                rc = cli_usage_error("--channel needs a name (up to 100 bytes)");
        } else if (cli_opt(argc, argv, &i, "--subs", &v)) {
            if (!cli_u64(v, &b->nsubs) || !b->nsubs || b->nsubs > 1000000)
                rc = cli_usage_error("--subs needs a count (1..1000000)");
        } else if (cli_opt(argc, argv, &i, "--conns", &v)) {
            if (!cli_u64(v, &u) || !u || u > 1000000)
                rc = cli_usage_error("--conns needs a count (1..1000000)");
            else if (b->kind == K_CONNS)
                b->nsubs = u;
            else
                b->nconns = u;
        } else if (cli_opt(argc, argv, &i, "--rate", &v)) {
            if (!cli_double(v, &b->rate) || b->rate < 0)
                rc = cli_usage_error("--rate needs events per second (0: as fast as possible)");
        } else if (cli_opt(argc, argv, &i, "--duration", &v)) {
            if (!cli_double(v, &b->duration) || b->duration <= 0)
                rc = cli_usage_error("--duration needs seconds");
        } else if (cli_opt(argc, argv, &i, "--settle", &v)) {
            if (!cli_double(v, &b->settle) || b->settle < 0)
                rc = cli_usage_error("--settle needs seconds");
        } else if (cli_opt(argc, argv, &i, "--size", &v)) {
            if (!cli_u64(v, &b->size) || b->size < 32 || b->size > 60000)
                rc = cli_usage_error("--size needs bytes (32..60000)");
        } else if (cli_opt(argc, argv, &i, "--inflight", &v)) {
            if (!cli_u64(v, &b->inflight) || !b->inflight || b->inflight > 100000)
                rc = cli_usage_error("--inflight needs a count (1..100000)");
        } else if (!strcmp(argv[i], "--no-fill")) {
            b->no_fill = true;
        } else if (cli_opt(argc, argv, &i, "--events", &v)) {
            if (!cli_u64(v, &b->events) || !b->events)
                rc = cli_usage_error("--events needs a count");
        } else if (cli_opt(argc, argv, &i, "--sources", &v)) {
            if (!cli_u64(v, &b->sources) || b->sources > 250)
                rc = cli_usage_error("--sources needs a count of addresses (0..250)");
        } else if (cli_opt(argc, argv, &i, "--server-pid", &v)) {
            if (!cli_u64(v, &u) || !u || u > 4194304)
                rc = cli_usage_error("--server-pid needs a pid");
            else
                b->server_pid = (int)u;
        } else if (!strcmp(argv[i], "--token")) {
            i++; /* accepted for symmetry with the tidewire bench; the peers take none */
        } else {
            rc = cli_usage_error("bench %s: unexpected argument %s", kind, argv[i]);
        }
    }
    if (!rc) {
        if (!strcmp(proto, "tidewire"))
            b->proto = P_TW;
        else if (!strcmp(proto, "nats-ws") || !strcmp(proto, "nats"))
            b->proto = P_NATS;
        else if (!strcmp(proto, "socketio"))
            b->proto = P_SIO;
        else
            rc = cli_usage_error("--protocol: tidewire, nats-ws or socketio");
    }
    if (!rc && twc__url_parse(url ? url : cli_default_url(), default_path(b->proto), &b->url))
        rc = cli_usage_error("--url: ws://HOST:PORT[/PATH] expected");
    if (!rc && (b->url.secure || b->url.ipv6))
        rc = cli_usage_error("--url: plain ws:// over IPv4 only");
    if (!rc && b->kind == K_PUBLISH && b->inflight < b->nconns)
        rc = cli_usage_error("bench publish: --inflight must be at least --conns");
    if (!rc && b->kind == K_PUBLISH && b->proto == P_SIO)
        fprintf(stderr, "tidewire-cli bench: socketio acks are in memory: not durable\n");
    if (rc) {
        free(b);
        return rc;
    }
    twc__url_hostport(&b->url, b->hostport, sizeof b->hostport);
    if (!strcmp(b->url.path, "/") && b->proto != P_NATS)
        snprintf(b->url.path, sizeof b->url.path, "%s", default_path(b->proto));
    if (channel)
        snprintf(b->channel, sizeof b->channel, "%s", channel);
    else
        snprintf(b->channel, sizeof b->channel, "bench-%s-%ld", kind, (long)getpid());
    if (b->kind == K_PUBLISH) b->nsubs = 0;
    if (b->kind == K_REPLAY) b->nsubs = 1; /* the replaying client, started after the fill */
    if (b->kind == K_CONNS) b->nconns = 0;

    if (cli_nofile_allows((uint64_t)b->nsubs + b->nconns) != 0) {
        free(b);
        return CLI_ERROR;
    }
    b->lat = malloc(sizeof *b->lat);
    b->payload = malloc(b->size + 64);
    b->rbuf = malloc(RBUF_SIZE);
    b->subs = calloc(b->nsubs ? b->nsubs : 1, sizeof *b->subs);
    b->pubs = calloc(b->nconns ? b->nconns : 1, sizeof *b->pubs);
    uint64_t nslots = b->kind == K_REPLAY ? FILL_INFLIGHT : b->inflight;
    b->slot_t0 = calloc(nslots, sizeof *b->slot_t0);
    if (!b->lat || !b->payload || !b->rbuf || !b->subs || !b->pubs || !b->slot_t0) {
        fprintf(stderr, "tidewire-cli bench: out of memory\n");
        free(b->lat), free(b->payload), free(b->rbuf), free(b->subs), free(b->pubs);
        free(b->slot_t0), free(b);
        return CLI_ERROR;
    }
    cli_hist_init(b->lat);
    b->mask_state = (uint32_t)getpid() * 2654435761u;
    uv_loop_init(&b->loop);
    uv_timer_init(&b->loop, &b->tick);
    uv_timer_init(&b->loop, &b->stop);
    uv_timer_init(&b->loop, &b->progress);
    uv_timer_init(&b->loop, &b->settle_t);
    uv_signal_init(&b->loop, &b->sigint);
    b->tick.data = b->stop.data = b->progress.data = b->settle_t.data = b->sigint.data = b;
    uv_signal_start(&b->sigint, on_sigint, SIGINT);
    uv_unref((uv_handle_t *)&b->sigint);
    uv_timer_start(&b->progress, on_progress, 1000, 1000);
    b->t_setup = uv_hrtime();
    b->status = CLI_OK;
    if (b->server_pid) b->rss0 = proc_rss_kb(b->server_pid);

    for (uint64_t i = 0; i < b->nconns && b->st == S_SETUP; i++)
        conn_start(b, &b->pubs[i], R_PUB, i);
    if (b->kind == K_REPLAY)
        b->nstarted = 1; /* subs[0] waits for the fill */
    else
        start_subs(b);
    if (b->kind == K_REPLAY) b->nready = 1; /* nothing to wait for before the fill */

    cli_loop_finish(&b->loop);
    int status = b->status;
    free(b->lat);
    free(b->payload);
    free(b->rbuf);
    free(b->subs);
    free(b->pubs);
    free(b->slot_t0);
    free(b->sbuf);
    free(b);
    return status;
}
