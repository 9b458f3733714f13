/*
 * tidewire-cli bench: load generators for docs/benchmarks.
 *
 *  fanout   N subscribers of one channel and one publisher, all twc clients on one loop.
 *           Each event's data carries the publisher's uv_hrtime() (monotonic ns; the
 *           subscribers are in the same process, so no clock sync is involved) and a seq;
 *           every delivery's latency goes into one histogram.
 *  publish  K acknowledged publishes kept in flight over C connections; ack latency.
 *
 * With --protocol tidewire|nats-ws|socketio (and for the kinds replay and conns) the
 * generator of cli_bench_peer.c runs instead: one minimal WebSocket client speaking
 * tidewire's, NATS's or Socket.IO's protocol, for comparing tidewire with its peers.
 *
 * Output: human-readable lines, then one line of JSON with every figure (last line of
 * stdout). Progress goes to stderr once a second.
 */
#include "cli.h"
#include "cli_bench_peer.h"
#include "hist.h"
#include "twc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define MAX_CONNECTING 100 /* subscribers connecting at once (don't flood accept queues) */
#define SETUP_TIMEOUT_MS 120000
#define DRAIN_QUIET_MS 5000 /* stop waiting for stragglers after this long without any */
#define DRAIN_MAX_MS 60000
#define PUB_QUEUE_BYTES (256u << 20)

typedef enum mode { MODE_FANOUT, MODE_PUBLISH } mode;
typedef enum stage { ST_SETUP, ST_RUN, ST_DRAIN, ST_DONE } stage;

typedef struct bench bench;

typedef struct bsub {
    bench *b;
    twc_client *c;
    bool subscribed;
    uint64_t received;
    uint64_t last_s;
} bsub;

typedef struct bpub {
    bench *b;
    twc_client *c;
    bool connected;
} bpub;

typedef struct bslot { /* one publish kept in flight (bench publish) */
    bench *b;
    bpub *p;
    uint64_t t0;
} bslot;

struct bench {
    uv_loop_t loop;
    mode mode;
    const char *url, *token;
    char channel[256];
    uint64_t nsubs, inflight, nconns, size;
    double rate, duration;

    bsub *subs;
    uint64_t nstarted, nsubscribed;
    bpub *pubs;
    uint64_t npub_connected;
    bslot *slots;

    uv_timer_t tick, progress, stop;
    uv_signal_t sigint;
    stage st;
    int status;
    bool bad_url;
    const char *abort_reason;

    uint64_t t_setup, t_start, t_stop, t_last_delivery, t_last_ack, t_last_change;
    uint64_t scheduled, published, acked, pub_errors, rejected, in_flight;
    uint64_t received, reorders, conn_errors;
    uint64_t prev_received, prev_acked;
    cli_hist *lat;
    char *payload;
};

static void bench_finish(bench *b);

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* ---- payload ------------------------------------------------------------------------------ */

/* {"t":<ns>,"s":<seq>,"p":"xxxx"} padded to b->size bytes (or as small as it gets). */
static const char *make_payload(bench *b, uint64_t seq)
{
    int n = snprintf(b->payload, 64, "{\"t\":%llu,\"s\":%llu,\"p\":\"",
                     (unsigned long long)uv_hrtime(), (unsigned long long)seq);
    size_t used = (size_t)n + 2;
    size_t pad = b->size > used ? b->size - used : 0;
    memset(b->payload + n, 'x', pad);
    memcpy(b->payload + n + pad, "\"}", 3);
    return b->payload;
}

static bool field_u64(const char *d, const char *key, uint64_t *out)
{
    const char *p = strstr(d, key);
    if (!p) return false;
    p += strlen(key);
    while (*p == ' ')
        p++;
    if (*p++ != ':') return false;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9') return false;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *out = v;
    return true;
}

/* ---- fanout: subscribers ------------------------------------------------------------------- */

static void maybe_start(bench *b);
static void start_subs(bench *b);

static void on_sub_event(twc_client *c, const twc_event *ev, void *arg)
{
    bsub *s = arg;
    bench *b = s->b;
    uint64_t now = uv_hrtime(), t, seq;
    /* Our own format first: {"t":N,"s":N,... */
    const char *d = ev->data;
    if (!strncmp(d, "{\"t\":", 5)) {
        const char *p = d + 5;
        t = 0;
        while (*p >= '0' && *p <= '9')
            t = t * 10 + (uint64_t)(*p++ - '0');
        if (strncmp(p, ",\"s\":", 5) || !field_u64(p, "\"s\"", &seq)) seq = 0;
    } else if (!field_u64(d, "\"t\"", &t) || !field_u64(d, "\"s\"", &seq)) {
        return; /* not ours (someone else publishing on the channel) */
    }
    if (t <= now) cli_hist_record(b->lat, now - t);
    if (seq <= s->last_s) b->reorders++;
    s->last_s = seq;
    s->received++;
    b->received++;
    b->t_last_delivery = b->t_last_change = now;
    if (b->st == ST_DRAIN && b->received >= b->acked * b->nsubs &&
        b->acked + b->pub_errors == b->published)
        bench_finish(b);
}

static void on_sub_subscribed(twc_client *c, const char *ch, bool recovered, bool replayed,
                              void *arg)
{
    bsub *s = arg;
    bench *b = s->b;
    if (s->subscribed) return; /* again after a reconnect */
    s->subscribed = true;
    b->nsubscribed++;
    start_subs(b);
    maybe_start(b);
}

static void on_any_error(twc_client *c, const twc_error *e, void *arg)
{
    bench *b = *(bench **)arg; /* bsub and bpub both start with the bench pointer */
    if (b->conn_errors++ < 10)
        fprintf(stderr, "tidewire-cli bench: %s%s%s\n", e->message, e->channel ? " on " : "",
                e->channel ? e->channel : "");
    if (e->err == TWC_E_SERVER && e->channel && b->st == ST_SETUP) {
        b->abort_reason = "a subscription was refused";
        bench_finish(b);
    }
}

static void on_any_state(twc_client *c, twc_state s, const twc_error *why, void *arg)
{
    bench *b = *(bench **)arg;
    if (s == TWC_STATE_DISCONNECTED && why && b->st < ST_DONE) {
        b->abort_reason = "a client was stopped by the server";
        bench_finish(b);
    }
}

static void start_subs(bench *b)
{
    while (b->nstarted < b->nsubs && b->nstarted - b->nsubscribed < MAX_CONNECTING &&
           b->st == ST_SETUP) {
        bsub *s = &b->subs[b->nstarted++];
        twc_options o = {
            .url = b->url,
            .token = b->token,
            .on_state = on_any_state,
            .on_event = on_sub_event,
            .on_subscribed = on_sub_subscribed,
            .on_error = on_any_error,
            .arg = s,
        };
        s->b = b;
        int rv = twc_client_new(&b->loop, &o, &s->c);
        if (!rv) rv = twc_subscribe(s->c, b->channel, NULL, 0);
        if (!rv) rv = twc_connect(s->c);
        if (rv) {
            fprintf(stderr, "tidewire-cli bench: subscriber %llu: %s\n",
                    (unsigned long long)b->nstarted, twc_strerror(rv));
            b->abort_reason = "cannot create subscribers";
            bench_finish(b);
            return;
        }
    }
}

/* ---- publishers ----------------------------------------------------------------------------- */

static void publish_slot(bench *b, bslot *slot);
static void publish_fanout(bench *b);

static void on_pub_state(twc_client *c, twc_state s, const twc_error *why, void *arg)
{
    bpub *p = arg;
    bench *b = p->b;
    if (s == TWC_STATE_CONNECTED && !p->connected) {
        p->connected = true;
        b->npub_connected++;
        maybe_start(b);
    }
    on_any_state(c, s, why, arg);
}

static void check_drained(bench *b)
{
    if (b->st != ST_DRAIN || b->in_flight) return;
    if (b->mode == MODE_PUBLISH || b->received >= b->acked * b->nsubs) bench_finish(b);
}

static void on_fanout_ack(twc_client *c, const twc_error *err, const char *pos, void *arg)
{
    bench *b = arg;
    b->in_flight--;
    if (err) {
        if (b->pub_errors++ < 10)
            fprintf(stderr, "tidewire-cli bench: publish failed: %d %s\n", err->code, err->message);
    } else {
        b->acked++;
    }
    b->t_last_ack = b->t_last_change = uv_hrtime();
    if (b->st == ST_RUN && b->rate == 0) publish_fanout(b);
    check_drained(b);
}

static bool publish_one(bench *b, twc_client *c, twc_ack_cb cb, void *arg)
{
    int rv = twc_publish(c, b->channel, make_payload(b, ++b->scheduled), cb, arg);
    if (rv == TWC_E_QUEUE_FULL) {
        b->rejected++;
        return false;
    }
    if (rv) {
        fprintf(stderr, "tidewire-cli bench: publish: %s\n", twc_strerror(rv));
        b->abort_reason = "publish failed";
        bench_finish(b);
        return false;
    }
    b->published++;
    b->in_flight++;
    return true;
}

/* rate 0: keep `inflight` publishes in flight. */
static void publish_fanout(bench *b)
{
    while (b->st == ST_RUN && b->in_flight < b->inflight)
        if (!publish_one(b, b->pubs[0].c, on_fanout_ack, b)) break;
}

static void on_stop(uv_timer_t *t);

static void on_tick(uv_timer_t *t)
{
    bench *b = t->data;
    if (b->st != ST_RUN) return;
    /* Paced by the clock, not by the ticks: a late tick publishes what is due, so the
     * rate holds even when the loop is busy delivering. */
    double el = secs(uv_hrtime() - b->t_start);
    if (el >= b->duration) { /* the stop timer may be late on a busy loop */
        on_stop(&b->stop);
        return;
    }
    uint64_t due = (uint64_t)(el * b->rate) + 1;
    while (b->st == ST_RUN && b->scheduled < due)
        if (!publish_one(b, b->pubs[0].c, on_fanout_ack, b))
            b->scheduled = due; /* queue full: count as rejected, do not burst later */
}

static void on_publish_ack(twc_client *c, const twc_error *err, const char *pos, void *arg)
{
    bslot *slot = arg;
    bench *b = slot->b;
    uint64_t now = uv_hrtime();
    b->in_flight--;
    if (err) {
        if (b->pub_errors++ < 10)
            fprintf(stderr, "tidewire-cli bench: publish failed: %d %s\n", err->code, err->message);
    } else {
        b->acked++;
        cli_hist_record(b->lat, now - slot->t0);
    }
    b->t_last_ack = b->t_last_change = now;
    if (b->st == ST_RUN) publish_slot(b, slot);
    check_drained(b);
}

static void publish_slot(bench *b, bslot *slot)
{
    slot->t0 = uv_hrtime();
    publish_one(b, slot->p->c, on_publish_ack, slot);
}

/* ---- stages -----------------------------------------------------------------------------------
 */

static void on_stop(uv_timer_t *t)
{
    bench *b = t->data;
    if (b->st != ST_RUN) return;
    b->st = ST_DRAIN;
    b->t_stop = b->t_last_change = uv_hrtime();
    uv_timer_stop(&b->tick);
    check_drained(b);
}

static void maybe_start(bench *b)
{
    if (b->st != ST_SETUP || b->nsubscribed < b->nsubs || b->npub_connected < b->nconns) return;
    b->st = ST_RUN;
    b->t_start = b->t_last_change = uv_hrtime();
    fprintf(stderr, "tidewire-cli bench: ready after %.2f s; running for %g s\n",
            secs(b->t_start - b->t_setup), b->duration);
    uv_timer_start(&b->stop, on_stop, (uint64_t)(b->duration * 1000), 0);
    if (b->mode == MODE_PUBLISH) {
        for (uint64_t i = 0; i < b->inflight && b->st == ST_RUN; i++)
            publish_slot(b, &b->slots[i]);
    } else if (b->rate > 0) {
        uv_timer_start(&b->tick, on_tick, 0, 1);
    } else {
        publish_fanout(b);
    }
}

static void on_progress(uv_timer_t *t)
{
    bench *b = t->data;
    uint64_t now = uv_hrtime();
    switch (b->st) {
    case ST_SETUP:
        fprintf(stderr, "tidewire-cli bench: setup: %llu/%llu subscribed, %llu/%llu publishers\n",
                (unsigned long long)b->nsubscribed, (unsigned long long)b->nsubs,
                (unsigned long long)b->npub_connected, (unsigned long long)b->nconns);
        if (now - b->t_setup > (uint64_t)SETUP_TIMEOUT_MS * 1000000) {
            b->abort_reason = "setup timed out";
            bench_finish(b);
        }
        break;
    case ST_RUN:
    case ST_DRAIN:
        fprintf(stderr,
                "tidewire-cli bench: %s %.0f s: published %llu acked %llu (%llu/s) "
                "delivered %llu (%llu/s)\n",
                b->st == ST_RUN ? "run" : "drain", secs(now - b->t_start),
                (unsigned long long)b->published, (unsigned long long)b->acked,
                (unsigned long long)(b->acked - b->prev_acked), (unsigned long long)b->received,
                (unsigned long long)(b->received - b->prev_received));
        b->prev_acked = b->acked;
        b->prev_received = b->received;
        if (b->st == ST_DRAIN && (now - b->t_last_change > (uint64_t)DRAIN_QUIET_MS * 1000000 ||
                                  now - b->t_stop > (uint64_t)DRAIN_MAX_MS * 1000000))
            bench_finish(b);
        break;
    case ST_DONE:
        break;
    }
}

static void on_sigint(uv_signal_t *s, int signum)
{
    bench *b = s->data;
    if (b->st == ST_RUN) {
        on_stop(&b->stop); /* stop publishing, drain, report */
    } else {
        b->abort_reason = b->abort_reason ? b->abort_reason : "interrupted";
        bench_finish(b);
    }
}

/* ---- report ------------------------------------------------------------------------------------
 */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void report(bench *b)
{
    cli_hist *h = b->lat;
    uint64_t p50 = cli_hist_percentile(h, 50), p90 = cli_hist_percentile(h, 90),
             p99 = cli_hist_percentile(h, 99), p999 = cli_hist_percentile(h, 99.9),
             max = cli_hist_percentile(h, 100);
    double run_s = secs((b->t_stop ? b->t_stop : uv_hrtime()) - b->t_start);
    uint64_t dups = 0, disconnects = 0;
    for (uint64_t i = 0; i < b->nstarted; i++) {
        twc_stats st;
        twc_get_stats(b->subs[i].c, &st);
        dups += st.duplicates;
        disconnects += st.disconnects;
    }
    for (uint64_t i = 0; i < b->nconns; i++) {
        twc_stats st;
        if (!b->pubs[i].c) continue;
        twc_get_stats(b->pubs[i].c, &st);
        disconnects += st.disconnects;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "bench", b->mode == MODE_FANOUT ? "fanout" : "publish");
    cJSON_AddStringToObject(j, "url", b->url);
    cJSON_AddStringToObject(j, "channel", b->channel);
    cJSON_AddNumberToObject(j, "size", (double)b->size);
    cJSON_AddNumberToObject(j, "duration_s", run_s);
    cJSON_AddNumberToObject(j, "published", (double)b->published);
    cJSON_AddNumberToObject(j, "acked", (double)b->acked);
    cJSON_AddNumberToObject(j, "publish_errors", (double)b->pub_errors);
    cJSON_AddNumberToObject(j, "rejected", (double)b->rejected);
    cJSON_AddNumberToObject(j, "disconnects", (double)disconnects);
    if (b->abort_reason) cJSON_AddStringToObject(j, "aborted", b->abort_reason);

    if (b->mode == MODE_FANOUT) {
        uint64_t expected = b->acked * b->nsubs;
        uint64_t loss = expected > b->received ? expected - b->received : 0;
        double deliver_s =
            b->t_last_delivery > b->t_start ? secs(b->t_last_delivery - b->t_start) : run_s;
        double dps = deliver_s > 0 ? (double)b->received / deliver_s : 0;
        char rate[64];
        if (b->rate > 0)
            snprintf(rate, sizeof rate, "%g/s", b->rate);
        else
            snprintf(rate, sizeof rate, "max (%llu in flight)", (unsigned long long)b->inflight);
        printf("fanout: %llu subscribers, rate %s, %llu-byte events, channel %s\n",
               (unsigned long long)b->nsubs, rate, (unsigned long long)b->size, b->channel);
        printf("published %llu in %.2f s (%.0f/s): acked %llu, errors %llu, rejected %llu\n",
               (unsigned long long)b->published, run_s,
               run_s > 0 ? (double)b->published / run_s : 0, (unsigned long long)b->acked,
               (unsigned long long)b->pub_errors, (unsigned long long)b->rejected);
        printf("deliveries %llu of %llu expected: loss %llu (%.4f%%), %.0f deliveries/s\n",
               (unsigned long long)b->received, (unsigned long long)expected,
               (unsigned long long)loss, expected ? 100.0 * (double)loss / (double)expected : 0,
               dps);
        printf("latency publish->deliver ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f "
               "(mean %.3f)\n",
               ms(p50), ms(p90), ms(p99), ms(p999), ms(max), cli_hist_mean(h) / 1e6);
        printf("out of order %llu, duplicates dropped %llu, disconnects %llu\n",
               (unsigned long long)b->reorders, (unsigned long long)dups,
               (unsigned long long)disconnects);
        cJSON_AddNumberToObject(j, "subs", (double)b->nsubs);
        cJSON_AddNumberToObject(j, "rate", b->rate);
        cJSON_AddNumberToObject(j, "inflight", b->rate > 0 ? 0 : (double)b->inflight);
        cJSON_AddNumberToObject(j, "expected", (double)expected);
        cJSON_AddNumberToObject(j, "received", (double)b->received);
        cJSON_AddNumberToObject(j, "loss", (double)loss);
        cJSON_AddNumberToObject(j, "deliveries_per_s", round(dps));
        cJSON_AddNumberToObject(j, "out_of_order", (double)b->reorders);
        cJSON_AddNumberToObject(j, "duplicates", (double)dups);
        if (b->abort_reason || loss) b->status = CLI_ERROR;
    } else {
        double ack_s = b->t_last_ack > b->t_start ? secs(b->t_last_ack - b->t_start) : run_s;
        double aps = ack_s > 0 ? (double)b->acked / ack_s : 0;
        printf("publish: %llu in flight over %llu connections, %llu-byte events, channel %s\n",
               (unsigned long long)b->inflight, (unsigned long long)b->nconns,
               (unsigned long long)b->size, b->channel);
        printf("acked %llu in %.2f s: %.0f acks/s, errors %llu\n", (unsigned long long)b->acked,
               ack_s, aps, (unsigned long long)b->pub_errors);
        printf("ack latency ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f (mean %.3f)\n",
               ms(p50), ms(p90), ms(p99), ms(p999), ms(max), cli_hist_mean(h) / 1e6);
        cJSON_AddNumberToObject(j, "conns", (double)b->nconns);
        cJSON_AddNumberToObject(j, "inflight", (double)b->inflight);
        cJSON_AddNumberToObject(j, "acks_per_s", round(aps));
        if (b->abort_reason || b->pub_errors) b->status = CLI_ERROR;
    }
    cJSON *lat = cJSON_AddObjectToObject(j, "latency_ms");
    cJSON_AddNumberToObject(lat, "count", (double)h->count);
    cJSON_AddNumberToObject(lat, "p50", ms(p50));
    cJSON_AddNumberToObject(lat, "p90", ms(p90));
    cJSON_AddNumberToObject(lat, "p99", ms(p99));
    cJSON_AddNumberToObject(lat, "p999", ms(p999));
    cJSON_AddNumberToObject(lat, "max", ms(max));
    cJSON_AddNumberToObject(lat, "mean", cli_hist_mean(h) / 1e6);
    if (b->abort_reason) printf("aborted: %s\n", b->abort_reason);
    char *text = cJSON_PrintUnformatted(j);
    if (text) printf("%s\n", text);
    fflush(stdout);
    free(text);
    cJSON_Delete(j);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void bench_finish(bench *b)
{
    if (b->st == ST_DONE) return;
    if (!b->t_stop) b->t_stop = uv_hrtime();
    b->st = ST_DONE;
    if (!b->bad_url) report(b);
    /* twc_free: a close frame (1001) to each server session, no waiting for answers. */
    for (uint64_t i = 0; i < b->nstarted; i++)
        twc_free(b->subs[i].c);
    for (uint64_t i = 0; i < b->nconns; i++)
        twc_free(b->pubs[i].c);
    close_handle((uv_handle_t *)&b->tick);
    close_handle((uv_handle_t *)&b->progress);
    close_handle((uv_handle_t *)&b->stop);
    close_handle((uv_handle_t *)&b->sigint);
}

/* ---- command line ------------------------------------------------------------------------------
 */

int cli_bench(int argc, char **argv)
{
    if (argc < 2) return cli_usage_error("bench needs fanout, publish, replay or conns");
    /* --protocol (any, tidewire included), replay and conns: the one generator for tidewire
     * and its peers (cli_bench_peer.c). Without it: the twc-based generator below. */
    bool peer = !strcmp(argv[1], "replay") || !strcmp(argv[1], "conns");
    for (int i = 2; i < argc && !peer; i++)
        peer = !strncmp(argv[i], "--protocol", 10);
    if (peer) return cli_bench_peer(argc, argv);
    bench *b = calloc(1, sizeof *b);
    if (!b) return CLI_ERROR;
    if (!strcmp(argv[1], "fanout")) {
        b->mode = MODE_FANOUT;
    } else if (!strcmp(argv[1], "publish")) {
        b->mode = MODE_PUBLISH;
    } else {
        free(b);
        return cli_usage_error("bench: unknown kind %s (fanout or publish)", argv[1]);
    }
    b->url = cli_default_url();
    b->token = cli_default_token();
    b->nsubs = 100;
    b->rate = 1000;
    b->duration = 10;
    b->size = 100;
    b->inflight = b->mode == MODE_FANOUT ? 256 : 64;
    b->nconns = 1;
    const char *channel = NULL, *v;
    int rc = 0;
    for (int i = 2; i < argc && !rc; i++) {
        if (cli_opt(argc, argv, &i, "--url", &v)) {
            if (!(b->url = v)) rc = cli_usage_error("--url needs a value");
        } else if (cli_opt(argc, argv, &i, "--token", &v)) {
            if (!(b->token = v)) rc = cli_usage_error("--token needs a value");
        } else if (cli_opt(argc, argv, &i, "--channel", &v)) {
            if (!(channel = v) || !*v) rc = cli_usage_error("--channel needs a name");
        } else if (b->mode == MODE_FANOUT && cli_opt(argc, argv, &i, "--subs", &v)) {
            if (!cli_u64(v, &b->nsubs) || !b->nsubs || b->nsubs > 1000000)
                rc = cli_usage_error("--subs needs a count (1..1000000)");
        } else if (b->mode == MODE_FANOUT && cli_opt(argc, argv, &i, "--rate", &v)) {
            if (!cli_double(v, &b->rate))
                rc = cli_usage_error("--rate needs events per second (0: as fast as possible)");
        } else if (cli_opt(argc, argv, &i, "--duration", &v)) {
            if (!cli_double(v, &b->duration) || b->duration <= 0)
                rc = cli_usage_error("--duration needs seconds");
        } else if (cli_opt(argc, argv, &i, "--size", &v)) {
            if (!cli_u64(v, &b->size) || b->size > (1u << 20))
                rc = cli_usage_error("--size needs bytes (up to 1048576)");
        } else if (cli_opt(argc, argv, &i, "--inflight", &v)) {
            if (!cli_u64(v, &b->inflight) || !b->inflight || b->inflight > 1000000)
                rc = cli_usage_error("--inflight needs a count (1..1000000)");
        } else if (b->mode == MODE_PUBLISH && cli_opt(argc, argv, &i, "--conns", &v)) {
            if (!cli_u64(v, &b->nconns) || !b->nconns || b->nconns > 100000)
                rc = cli_usage_error("--conns needs a count (1..100000)");
        } else {
            rc = cli_usage_error("bench %s: unexpected argument %s", argv[1], argv[i]);
        }
    }
    if (!rc && b->mode == MODE_PUBLISH && b->inflight < b->nconns)
        rc = cli_usage_error("bench publish: --inflight must be at least --conns");
    if (rc) {
        free(b);
        return rc;
    }
    if (channel)
        snprintf(b->channel, sizeof b->channel, "%s", channel);
    else
        snprintf(b->channel, sizeof b->channel, "bench:%s:%ld",
                 b->mode == MODE_FANOUT ? "fanout" : "publish", (long)getpid());
    if (b->mode == MODE_PUBLISH) b->nsubs = 0;

    if (cli_nofile_allows((uint64_t)b->nsubs + b->nconns) != 0) {
        free(b);
        return CLI_ERROR;
    }
    b->lat = malloc(sizeof *b->lat);
    b->payload = malloc(b->size + 64);
    b->subs = calloc(b->nsubs ? b->nsubs : 1, sizeof *b->subs);
    b->pubs = calloc(b->nconns, sizeof *b->pubs);
    b->slots = calloc(b->mode == MODE_PUBLISH ? b->inflight : 1, sizeof *b->slots);
    if (!b->lat || !b->payload || !b->subs || !b->pubs || !b->slots) {
        fprintf(stderr, "tidewire-cli bench: out of memory\n");
        free(b->lat), free(b->payload), free(b->subs), free(b->pubs), free(b->slots), free(b);
        return CLI_ERROR;
    }
    cli_hist_init(b->lat);
    uv_loop_init(&b->loop);
    uv_timer_init(&b->loop, &b->tick);
    uv_timer_init(&b->loop, &b->progress);
    uv_timer_init(&b->loop, &b->stop);
    uv_signal_init(&b->loop, &b->sigint);
    b->tick.data = b->progress.data = b->stop.data = b->sigint.data = b;
    uv_signal_start(&b->sigint, on_sigint, SIGINT);
    uv_unref((uv_handle_t *)&b->sigint);
    uv_timer_start(&b->progress, on_progress, 1000, 1000);
    b->t_setup = uv_hrtime();
    b->status = CLI_OK;

    for (uint64_t i = 0; i < b->nconns && b->st == ST_SETUP; i++) {
        bpub *p = &b->pubs[i];
        p->b = b;
        twc_options o = {
            .url = b->url,
            .token = b->token,
            .on_state = on_pub_state,
            .on_error = on_any_error,
            .arg = p,
            .max_queued_bytes = PUB_QUEUE_BYTES,
        };
        int rv = twc_client_new(&b->loop, &o, &p->c);
        if (rv) {
            fprintf(stderr, "tidewire-cli bench: --url %s: %s\n", b->url, twc_strerror(rv));
            b->bad_url = true;
            b->abort_reason = "bad --url";
            p->c = NULL;
            b->nconns = i;
            bench_finish(b);
            break;
        }
        twc_connect(p->c);
    }
    for (uint64_t i = 0; b->st == ST_SETUP && b->mode == MODE_PUBLISH && i < b->inflight; i++)
        b->slots[i] = (bslot){.b = b, .p = &b->pubs[i % b->nconns]};
    if (b->st == ST_SETUP) start_subs(b);
    if (b->st == ST_SETUP)
        maybe_start(b); /* publish bench: nothing to wait for but the publishers */

    cli_loop_finish(&b->loop);
    int status = b->bad_url ? CLI_USAGE : b->status;
    free(b->lat);
    free(b->payload);
    free(b->subs);
    free(b->pubs);
    free(b->slots);
    free(b);
    return status;
}
