/*
 * stats.c — /stats and /metrics from one table of figures.
 *
 * Each row names a figure once: its place in the JSON document (group, field), its
 * Prometheus metric, kind and help, and how to read it. Lists (origins, cluster members)
 * and the commit latency histogram do not fit a row and are written by hand below, in
 * both forms.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "server.h"

enum { COUNTER, GAUGE };

typedef struct figure_src {
    const tw_server *srv;
    uint64_t nchannels;    /* channels with subscribers on any loop, each counted once */
    const tw_figures *fig; /* every loop's figures added up */
    const tw_store_stats *st;
    uint64_t uptime_s;
} figure_src;

typedef struct figure {
    const char *group; /* JSON object it sits in; NULL: top level */
    const char *field;
    const char *metric;
    int kind;
    int real; /* printed as a decimal */
    const char *help;
    double (*get)(const figure_src *f);
} figure;

#define GETTER(name, expr)                                                                         \
    static double name(const figure_src *f)                                                        \
    {                                                                                              \
        const tw_server *srv = f->srv;                                                             \
        const tw_figures *fig = f->fig;                                                            \
        const tw_store_stats *st = f->st;                                                          \
        (void)srv;                                                                                 \
        (void)fig;                                                                                 \
        (void)st;                                                                                  \
        return (double)(expr);                                                                     \
    }

GETTER(g_uptime, f->uptime_s)
GETTER(g_ready, srv->ready && !srv->draining)
GETTER(g_conn_now, fig->nconns)
GETTER(g_conn_total, fig->stats.connections_total)
GETTER(g_conn_refused, fig->stats.connections_refused)
GETTER(g_ws_now, fig->nsessions)
GETTER(g_ws_total, fig->stats.ws_sessions_total)
GETTER(g_subs, fig->nsubs)
GETTER(g_channels, f->nchannels)
GETTER(g_ev_in, fig->stats.events_published)
GETTER(g_ev_repl, fig->stats.events_replicated_in)
GETTER(g_ev_out, fig->stats.events_delivered)
GETTER(g_ev_replayed, fig->stats.events_replayed)
GETTER(g_ev_in_rate, fig->stats.events_in_per_s)
GETTER(g_ev_out_rate, fig->stats.events_out_per_s)
GETTER(g_pub_refused, fig->stats.publishes_refused)
GETTER(g_pub_pending, fig->pending_publishes)
GETTER(g_bytes_in, fig->stats.bytes_in)
GETTER(g_bytes_out, fig->stats.bytes_out)
GETTER(g_bytes_in_rate, fig->stats.bytes_in_per_s)
GETTER(g_bytes_out_rate, fig->stats.bytes_out_per_s)
GETTER(g_res_ok, fig->stats.resumes_recovered)
GETTER(g_res_lost, fig->stats.resumes_unrecovered)
GETTER(g_behind, fig->stats.fell_behind)
GETTER(g_slow_closed, fig->stats.slow_consumer_closes)
GETTER(g_http_total, fig->stats.http_requests_total)
GETTER(g_req_errors, fig->stats.request_errors)
GETTER(g_proto_closes, fig->stats.protocol_closes)
GETTER(g_auth_ok, fig->stats.auth_ok)
GETTER(g_auth_fail, fig->stats.auth_failures)
GETTER(g_forbidden, fig->stats.forbidden)
GETTER(g_rate_limited, fig->stats.rate_limited)
GETTER(g_ip_refused, fig->stats.ip_refused)
GETTER(g_origin_refused, fig->stats.origin_refused)
GETTER(g_api_unauth, fig->stats.api_unauthorized)
GETTER(g_st_used, st->used_bytes)
GETTER(g_st_map, st->map_size)
GETTER(g_st_events, st->events_appended)
GETTER(g_st_bytes, st->bytes_appended)
GETTER(g_st_lsn, st->last_lsn)
GETTER(g_st_commits, st->commits)
GETTER(g_st_fail, st->commit_failures)
GETTER(g_st_queue, st->queue_bytes)
GETTER(g_st_busy, st->refused_busy)
GETTER(g_st_per_commit, st->commits ? (double)st->events_appended / (double)st->commits : 0)
GETTER(g_st_lat_avg, st->commits ? (double)st->commit_us_total / (double)st->commits : 0)
GETTER(g_st_lat_max, st->commit_us_max)
GETTER(g_st_kept, st->kept_events)
GETTER(g_st_kept_bytes, st->kept_bytes)
GETTER(g_st_trimmed, st->trimmed_events)
GETTER(g_st_trim_commits, st->trim_commits)
GETTER(g_st_trim_fail, st->trim_failures)
GETTER(g_st_commit_rate, fig->stats.store_commits_per_s)
GETTER(g_st_fsync_rate, fig->stats.store_commits_per_s * 2)
GETTER(g_st_full, fig->stats.store_full_refusals)
GETTER(g_st_grows, st->map_grows)

static const figure figures[] = {
    {NULL, "uptime_s", "tidewire_uptime_seconds", GAUGE, 0, "Seconds since the node started",
     g_uptime},
    {NULL, "ready", "tidewire_ready", GAUGE, 0, "1 while /readyz answers 200", g_ready},
    {NULL, "subscriptions", "tidewire_subscriptions", GAUGE, 0, "Subscriptions now", g_subs},
    {NULL, "channels", "tidewire_channels", GAUGE, 0, "Channels with subscribers now", g_channels},
    {"connections", "now", "tidewire_connections", GAUGE, 0, "Client connections now",
     g_conn_now},
    {"connections", "total", "tidewire_connections_total", COUNTER, 0, "Connections accepted",
     g_conn_total},
    {"connections", "refused", "tidewire_connections_refused_total", COUNTER, 0,
     "Connections refused (over max-connections or draining)", g_conn_refused},
    {"connections", "websocket_now", "tidewire_websocket_sessions", GAUGE, 0,
     "WebSocket sessions now", g_ws_now},
    {"connections", "websocket_total", "tidewire_websocket_sessions_total", COUNTER, 0,
     "WebSocket sessions opened", g_ws_total},
    {"events", "in", "tidewire_events_in_total", COUNTER, 0,
     "Events published and committed on this node", g_ev_in},
    {"events", "replicated_in", "tidewire_events_replicated_in_total", COUNTER, 0,
     "Events of other nodes' origins replicated to this node and committed", g_ev_repl},
    {"events", "out", "tidewire_events_out_total", COUNTER, 0,
     "Event messages sent to subscribers (live and replayed)", g_ev_out},
    {"events", "replayed", "tidewire_events_replayed_total", COUNTER, 0,
     "Event messages sent from the log (resumes, slow clients)", g_ev_replayed},
    {"events", "in_per_s", "tidewire_events_in_per_second", GAUGE, 1,
     "Events published in the last second", g_ev_in_rate},
    {"events", "out_per_s", "tidewire_events_out_per_second", GAUGE, 1,
     "Event messages sent in the last second", g_ev_out_rate},
    {"events", "publishes_refused", "tidewire_publishes_refused_total", COUNTER, 0,
     "Publishes answered with an error (log full, busy, too big)", g_pub_refused},
    {"events", "publishes_pending", "tidewire_publishes_pending", GAUGE, 0,
     "Publishes waiting for their commit", g_pub_pending},
    {"bytes", "in", "tidewire_bytes_in_total", COUNTER, 0, "Bytes received from clients",
     g_bytes_in},
    {"bytes", "out", "tidewire_bytes_out_total", COUNTER, 0, "Bytes written to clients",
     g_bytes_out},
    {"bytes", "in_per_s", "tidewire_bytes_in_per_second", GAUGE, 1,
     "Bytes received in the last second", g_bytes_in_rate},
    {"bytes", "out_per_s", "tidewire_bytes_out_per_second", GAUGE, 1,
     "Bytes written in the last second", g_bytes_out_rate},
    {"resumes", "recovered", "tidewire_resumes_recovered_total", COUNTER, 0,
     "Resumes whose missed events were all still in the log", g_res_ok},
    {"resumes", "unrecovered", "tidewire_resumes_unrecovered_total", COUNTER, 0,
     "Resumes that reached back past what the log keeps (recovered: false)", g_res_lost},
    {"slow_consumers", "fell_behind", "tidewire_slow_consumer_catchups_total", COUNTER, 0,
     "Live subscriptions moved to reading the log because their client fell behind",
     g_behind},
    {"slow_consumers", "closed", "tidewire_slow_consumer_closes_total", COUNTER, 0,
     "Clients closed with 4208 for staying behind", g_slow_closed},
    {"requests", "http_total", "tidewire_http_requests_total", COUNTER, 0,
     "HTTP requests (including WebSocket upgrades)", g_http_total},
    {"requests", "errors", "tidewire_request_errors_total", COUNTER, 0,
     "WebSocket requests answered with an error", g_req_errors},
    {"requests", "protocol_closes", "tidewire_protocol_closes_total", COUNTER, 0,
     "WebSocket sessions closed for a protocol fault or an oversized message",
     g_proto_closes},
    {"security", "tokens_accepted", "tidewire_auth_tokens_accepted_total", COUNTER, 0,
     "Client tokens accepted (connect, ?token=, refresh)", g_auth_ok},
    {"security", "auth_failures", "tidewire_auth_failures_total", COUNTER, 0,
     "Tokens refused and clients closed with 4001 (bad, expired or missing token)",
     g_auth_fail},
    {"security", "forbidden", "tidewire_forbidden_total", COUNTER, 0,
     "Requests refused with 401 or 403 (subscribe, publish, presence)", g_forbidden},
    {"security", "rate_limited", "tidewire_rate_limited_total", COUNTER, 0,
     "Connections closed with 4129 (over max-messages-per-second)", g_rate_limited},
    {"security", "ip_refused", "tidewire_ip_refused_total", COUNTER, 0,
     "Connections refused by max-connections-per-ip or new-connections-per-ip",
     g_ip_refused},
    {"security", "origin_refused", "tidewire_origin_refused_total", COUNTER, 0,
     "WebSocket upgrades refused for an Origin not in allowed-origins", g_origin_refused},
    {"security", "http_unauthorized", "tidewire_http_unauthorized_total", COUNTER, 0,
     "HTTP requests refused 401 (API key or admin key)", g_api_unauth},
    {"store", "size_bytes", "tidewire_store_size_bytes", GAUGE, 0, "Bytes of the log in use",
     g_st_used},
    {"store", "map_size_bytes", "tidewire_store_map_size_bytes", GAUGE, 0,
     "Largest size the log may grow to", g_st_map},
    {"store", "events_appended", "tidewire_store_events_appended_total", COUNTER, 0,
     "Events committed to the log since start", g_st_events},
    {"store", "bytes_appended", "tidewire_store_bytes_appended_total", COUNTER, 0,
     "Channel and data bytes committed since start", g_st_bytes},
    {"store", "last_lsn", "tidewire_store_last_lsn", GAUGE, 0,
     "Local log position of the newest event", g_st_lsn},
    {"store", "commits", "tidewire_store_commits_total", COUNTER, 0,
     "Commits (each fsynced before its events are acknowledged)", g_st_commits},
    {"store", "commit_failures", "tidewire_store_commit_failures_total", COUNTER, 0,
     "Commits that failed", g_st_fail},
    {"store", "events_per_commit", "tidewire_store_events_per_commit", GAUGE, 1,
     "Mean events per commit since start (group commit)", g_st_per_commit},
    {"store", "commit_latency_avg_us", "tidewire_store_commit_latency_avg_microseconds", GAUGE,
     1, "Mean commit latency since start", g_st_lat_avg},
    {"store", "commit_latency_max_us", "tidewire_store_commit_latency_max_microseconds", GAUGE,
     0, "Slowest commit since start", g_st_lat_max},
    {"store", "queue_bytes", "tidewire_store_queue_bytes", GAUGE, 0,
     "Bytes of appends waiting for the log writer", g_st_queue},
    {"store", "refused_busy", "tidewire_store_refused_busy_total", COUNTER, 0,
     "Appends refused because the writer queue was full", g_st_busy},
    {"store", "refused_full", "tidewire_store_refused_full_total", COUNTER, 0,
     "Publishes refused because the log is full (map at its maximum, or disk full)", g_st_full},
    {"store", "map_grows", "tidewire_store_map_grows_total", COUNTER, 0,
     "Times the map grew (doubling up to store-map-size) since start", g_st_grows},
    {"store", "commits_per_s", "tidewire_store_commits_per_second", GAUGE, 1,
     "Commits in the last second", g_st_commit_rate},
    {"store", "fsyncs_per_s", "tidewire_store_fsyncs_per_second", GAUGE, 1,
     "fsyncs in the last second (LMDB syncs twice per commit: data, then meta page)",
     g_st_fsync_rate},
    {"store", "events_kept", "tidewire_store_events_kept", GAUGE, 0,
     "Events in the log now (after retention)", g_st_kept},
    {"store", "bytes_kept", "tidewire_store_bytes_kept", GAUGE, 0,
     "Channel and data bytes of the events in the log now", g_st_kept_bytes},
    {"store", "retention_trimmed", "tidewire_store_retention_trimmed_total", COUNTER, 0,
     "Events deleted by retention since start", g_st_trimmed},
    {"store", "retention_commits", "tidewire_store_retention_commits_total", COUNTER, 0,
     "Retention transactions committed since start", g_st_trim_commits},
    {"store", "retention_failures", "tidewire_store_retention_failures_total", COUNTER, 0,
     "Retention transactions that failed (tried again at the next pass)", g_st_trim_fail},
};
#define NFIGURES (sizeof figures / sizeof figures[0])

void tw_figures_add(tw_figures *dst, const tw_figures *src)
{
    tw_stats *d = &dst->stats;
    const tw_stats *s = &src->stats;
    d->connections_total += s->connections_total;
    d->connections_refused += s->connections_refused;
    d->ws_sessions_total += s->ws_sessions_total;
    d->http_requests_total += s->http_requests_total;
    d->events_published += s->events_published;
    d->events_replicated_in += s->events_replicated_in;
    d->publishes_refused += s->publishes_refused;
    d->events_delivered += s->events_delivered;
    d->events_replayed += s->events_replayed;
    d->bytes_in += s->bytes_in;
    d->bytes_out += s->bytes_out;
    d->resumes_recovered += s->resumes_recovered;
    d->resumes_unrecovered += s->resumes_unrecovered;
    d->fell_behind += s->fell_behind;
    d->slow_consumer_closes += s->slow_consumer_closes;
    d->request_errors += s->request_errors;
    d->protocol_closes += s->protocol_closes;
    d->auth_ok += s->auth_ok;
    d->auth_failures += s->auth_failures;
    d->forbidden += s->forbidden;
    d->rate_limited += s->rate_limited;
    d->ip_refused += s->ip_refused;
    d->origin_refused += s->origin_refused;
    d->api_unauthorized += s->api_unauthorized;
    d->store_full_refusals += s->store_full_refusals;
    d->events_in_per_s += s->events_in_per_s;
    d->events_out_per_s += s->events_out_per_s;
    d->bytes_in_per_s += s->bytes_in_per_s;
    d->bytes_out_per_s += s->bytes_out_per_s;
    /* store_commits_per_s: every loop samples the one store; dst's stands. The rest are a
     * loop's own bookkeeping (previous samples, log-line pacing). */
    dst->nconns += src->nconns;
    dst->nsessions += src->nsessions;
    dst->nsubs += src->nsubs;
    dst->nchannels += src->nchannels;
    dst->pending_publishes += src->pending_publishes;
}

void tw_stats_sample(tw_stats *st, uint64_t now_ms)
{
    /* Rates over at least a second, however often the tick runs. */
    if (st->prev_sample_ms && now_ms - st->prev_sample_ms < 1000) return;
    if (st->prev_sample_ms) {
        double secs = (double)(now_ms - st->prev_sample_ms) / 1000.0;
        if (secs <= 0) return;
        st->events_in_per_s = (double)(st->events_published - st->prev_events_in) / secs;
        st->events_out_per_s = (double)(st->events_delivered - st->prev_events_out) / secs;
        st->bytes_in_per_s = (double)(st->bytes_in - st->prev_bytes_in) / secs;
        st->bytes_out_per_s = (double)(st->bytes_out - st->prev_bytes_out) / secs;
    }
    st->prev_events_in = st->events_published;
    st->prev_events_out = st->events_delivered;
    st->prev_bytes_in = st->bytes_in;
    st->prev_bytes_out = st->bytes_out;
    st->prev_sample_ms = now_ms;
}

static int put_number(tw_buf *out, double v, int real)
{
    if (real) return tw_buf_printf(out, "%.3f", isfinite(v) ? v : 0.0);
    return tw_buf_printf(out, "%.0f", v);
}

#define MAX_ORIGINS 256

/* /stats "channels_top" (the admin dashboard): the channels with the most subscribers and
 * those with the most events, from one pass over the channels with subscribers. */
#define TOP_CHANNELS 10

/* A channel as /stats counts it: one loop's, or every loop's added up (census). */
typedef struct chan_row {
    const char *name;
    size_t len;
    uint64_t subs, events;
    struct chan_row *next; /* census hash chain */
} chan_row;

struct tw_census {
    pthread_mutex_t mu;
    chan_row **table;
    size_t cap, n;
};

tw_census *tw_census_new(void)
{
    tw_census *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->cap = 256;
    if (!(c->table = calloc(c->cap, sizeof *c->table))) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void tw_census_free(tw_census *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->cap; i++)
        for (chan_row *r = c->table[i], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    free(c->table);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static size_t census_slot(const tw_census *c, const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h & (c->cap - 1);
}

static int census_grow(tw_census *c)
{
    size_t cap = c->cap * 2;
    chan_row **t = calloc(cap, sizeof *t);
    if (!t) return -1;
    chan_row **old = c->table;
    size_t old_cap = c->cap;
    c->table = t;
    c->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        for (chan_row *r = old[i], *next; r; r = next) {
            next = r->next;
            size_t k = census_slot(c, r->name, r->len);
            r->next = t[k];
            t[k] = r;
        }
    free(old);
    return 0;
}

/* The row of one loop's channel: a copy of the name in the same allocation. */
static int census_put(tw_census *c, const tw_channel *ch)
{
    size_t k = census_slot(c, ch->name, ch->len);
    for (chan_row *r = c->table[k]; r; r = r->next)
        if (r->len == ch->len && memcmp(r->name, ch->name, ch->len) == 0) {
            r->subs += ch->nsubs;
            /* Every loop fans out every event of a channel it has: the same events, counted
             * from when that loop's first subscriber came. The largest count is the node's. */
            if (ch->events > r->events) r->events = ch->events;
            return 0;
        }
    if (c->n >= c->cap && census_grow(c) == 0) k = census_slot(c, ch->name, ch->len);
    chan_row *r = malloc(sizeof *r + ch->len);
    if (!r) return -1;
    memcpy((char *)(r + 1), ch->name, ch->len);
    *r = (chan_row){(const char *)(r + 1), ch->len, ch->nsubs, ch->events, c->table[k]};
    c->table[k] = r;
    c->n++;
    return 0;
}

int tw_census_add(tw_census *c, const tw_server *srv)
{
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < srv->chan_cap && rc == 0; i++)
        for (const tw_channel *ch = srv->chan_table[i]; ch && rc == 0; ch = ch->hnext)
            rc = census_put(c, ch);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static uint64_t top_score(const chan_row *ch, int by_events)
{
    return by_events ? ch->events : ch->subs;
}

/* Keeps top[0..*n) sorted by score, best first, at most TOP_CHANNELS long. */
static void top_insert(chan_row *top, size_t *n, const chan_row *ch, int by_events)
{
    uint64_t v = top_score(ch, by_events);
    size_t i = *n;
    if (i == TOP_CHANNELS) {
        if (top_score(&top[i - 1], by_events) >= v) return;
        i--;
    } else {
        (*n)++;
    }
    while (i > 0 && top_score(&top[i - 1], by_events) < v) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = *ch;
}

static void top_add(chan_row *by_subs, size_t *ns, chan_row *by_events, size_t *ne,
                    const chan_row *row)
{
    top_insert(by_subs, ns, row, 0);
    top_insert(by_events, ne, row, 1);
}

static int render_channels_top(const tw_server *srv, const tw_census *census, tw_buf *out)
{
    chan_row by_subs[TOP_CHANNELS], by_events[TOP_CHANNELS];
    size_t ns = 0, ne = 0;
    if (census) {
        for (size_t i = 0; i < census->cap; i++)
            for (const chan_row *r = census->table[i]; r; r = r->next)
                top_add(by_subs, &ns, by_events, &ne, r);
    } else {
        for (size_t i = 0; i < srv->chan_cap; i++)
            for (const tw_channel *ch = srv->chan_table[i]; ch; ch = ch->hnext) {
                chan_row r = {ch->name, ch->len, ch->nsubs, ch->events, NULL};
                top_add(by_subs, &ns, by_events, &ne, &r);
            }
    }
    int rc = tw_buf_append_str(out, ",\"channels_top\":[");
    size_t written = 0;
    for (size_t i = 0; i < ns + ne; i++) {
        const chan_row *ch = i < ns ? &by_subs[i] : &by_events[i - ns];
        int dup = 0;
        for (size_t j = 0; i >= ns && j < ns && !dup; j++)
            dup = by_subs[j].name == ch->name;
        if (dup) continue;
        rc |= tw_buf_append_str(out, written++ ? ",{\"channel\":" : "{\"channel\":");
        rc |= tw_buf_append_json_string(out, ch->name, ch->len);
        rc |= tw_buf_printf(out, ",\"subscribers\":%" PRIu64 ",\"events\":%" PRIu64 "}", ch->subs,
                            ch->events);
    }
    rc |= tw_buf_putc(out, ']');
    return rc;
}

static void figure_source(tw_server *srv, const tw_census *census, tw_store_stats *st,
                          tw_figures *fig, figure_src *f)
{
    tw_server_figures(srv, fig, NULL);
    f->fig = fig;
    f->nchannels = census ? census->n : srv->nchannels;
    tw_store_get_stats(srv->store, st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    f->srv = srv;
    f->st = st;
    f->uptime_s = (now - srv->started_ms) / 1000;
}

/* Each loop's share (--threads): how evenly the kernel spread the clients. */
#define MAX_LOOPS 64

static int render_loops_json(tw_server *srv, tw_buf *out)
{
    tw_figures sum, per[MAX_LOOPS];
    size_t n = srv->node->nloops;
    tw_server_figures(srv, &sum, per);
    int rc = tw_buf_append_str(out, ",\"loops\":[");
    for (size_t i = 0; i < n; i++)
        rc |= tw_buf_printf(out,
                            "%s{\"connections\":%" PRIu64 ",\"websocket_sessions\":%" PRIu64
                            ",\"subscriptions\":%" PRIu64 ",\"events_out\":%" PRIu64 "}",
                            i ? "," : "", per[i].nconns, per[i].nsessions, per[i].nsubs,
                            per[i].stats.events_delivered);
    rc |= tw_buf_putc(out, ']');
    return rc;
}

static int render_loops_prometheus(tw_server *srv, tw_buf *out)
{
    tw_figures sum, per[MAX_LOOPS];
    size_t n = srv->node->nloops;
    tw_server_figures(srv, &sum, per);
    int rc = tw_buf_append_str(out, "# HELP tidewire_loop_connections Client connections now, "
                                    "per event loop\n# TYPE tidewire_loop_connections gauge\n");
    for (size_t i = 0; i < n; i++)
        rc |= tw_buf_printf(out, "tidewire_loop_connections{loop=\"%zu\"} %" PRIu64 "\n", i,
                            per[i].nconns);
    return rc;
}

int tw_stats_render_json(tw_server *srv, const tw_census *census, tw_buf *out)
{
    tw_store_stats st;
    tw_figures fig;
    figure_src src;
    figure_source(srv, census, &st, &fig, &src);
    int rc = tw_buf_printf(out, "{\"node\":\"%s\",\"version\":\"%s\"", srv->origin, TW_VERSION);
    const char *group = NULL;
    for (size_t i = 0; i < NFIGURES && !rc; i++) {
        const figure *fg = &figures[i];
        if (fg->group != group && (!fg->group || !group || strcmp(fg->group, group) != 0)) {
            if (group) rc |= tw_buf_putc(out, '}');
            if (fg->group) rc |= tw_buf_printf(out, ",\"%s\":{", fg->group);
            group = fg->group;
            rc |= tw_buf_printf(out, "%s\"%s\":", fg->group ? "" : ",", fg->field);
        } else {
            rc |= tw_buf_printf(out, ",\"%s\":", fg->field);
        }
        rc |= put_number(out, fg->get(&src), fg->real);
    }
    /* Inside "store" (the last group): the latency histogram and each origin's seqs. */
    rc |= tw_buf_append_str(out, ",\"commit_latency_us_buckets\":{");
    for (int i = 0; i < 12; i++) {
        if (i < 11) rc |= tw_buf_printf(out, "%s\"%" PRIu64 "\":%" PRIu64, i ? "," : "",
                                        tw_store_commit_us_bounds[i], st.commit_us_buckets[i]);
        else rc |= tw_buf_printf(out, ",\"inf\":%" PRIu64, st.commit_us_buckets[i]);
    }
    rc |= tw_buf_append_str(out, "},\"origins\":[");
    tw_store_origin_info info[MAX_ORIGINS];
    size_t n = 0;
    if (tw_store_origins(srv->reader, info, MAX_ORIGINS, &n) != 0) n = 0;
    for (size_t i = 0; i < n && i < MAX_ORIGINS; i++)
        rc |= tw_buf_printf(out,
                            "%s{\"origin\":\"%s\",\"first_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64
                            ",\"events_kept\":%" PRIu64 "}",
                            i ? "," : "", info[i].origin, info[i].first_seq, info[i].last_seq,
                            info[i].kept);
    rc |= tw_buf_append_str(out, "]}");
    rc |= render_channels_top(srv, census, out);
    rc |= render_loops_json(srv, out);
    rc |= tw_buf_putc(out, ',');
    rc |= tw_cluster_render_json(srv, out);
    rc |= tw_buf_append_str(out, "}\n");
    return rc ? -1 : 0;
}

int tw_stats_render_prometheus(tw_server *srv, const tw_census *census, tw_buf *out)
{
    tw_store_stats st;
    tw_figures fig;
    figure_src src;
    figure_source(srv, census, &st, &fig, &src);
    int rc = tw_buf_printf(out,
                           "# HELP tidewire_info Node identity\n# TYPE tidewire_info gauge\n"
                           "tidewire_info{node=\"%s\",version=\"%s\"} 1\n",
                           srv->origin, TW_VERSION);
    for (size_t i = 0; i < NFIGURES && !rc; i++) {
        const figure *fg = &figures[i];
        rc |= tw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s ", fg->metric, fg->help,
                            fg->metric, fg->kind == COUNTER ? "counter" : "gauge", fg->metric);
        rc |= put_number(out, fg->get(&src), fg->real);
        rc |= tw_buf_putc(out, '\n');
    }
    rc |= tw_buf_append_str(out, "# HELP tidewire_store_commit_seconds Commit latency (fsync "
                                 "included)\n# TYPE tidewire_store_commit_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < 11; i++) {
        cum += st.commit_us_buckets[i];
        rc |= tw_buf_printf(out, "tidewire_store_commit_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                            (double)tw_store_commit_us_bounds[i] / 1e6, cum);
    }
    cum += st.commit_us_buckets[11];
    rc |= tw_buf_printf(out,
                        "tidewire_store_commit_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                        "tidewire_store_commit_seconds_sum %.6f\n"
                        "tidewire_store_commit_seconds_count %" PRIu64 "\n",
                        cum, (double)st.commit_us_total / 1e6, st.commits);
    tw_store_origin_info info[MAX_ORIGINS];
    size_t n = 0;
    if (tw_store_origins(srv->reader, info, MAX_ORIGINS, &n) != 0) n = 0;
    rc |= tw_buf_append_str(out, "# HELP tidewire_store_origin_first_seq Oldest kept seq per "
                                 "origin\n# TYPE tidewire_store_origin_first_seq gauge\n");
    for (size_t i = 0; i < n && i < MAX_ORIGINS; i++)
        rc |= tw_buf_printf(out, "tidewire_store_origin_first_seq{origin=\"%s\"} %" PRIu64 "\n",
                            info[i].origin, info[i].first_seq);
    rc |= tw_buf_append_str(out, "# HELP tidewire_store_origin_last_seq Newest seq per origin\n"
                                 "# TYPE tidewire_store_origin_last_seq gauge\n");
    for (size_t i = 0; i < n && i < MAX_ORIGINS; i++)
        rc |= tw_buf_printf(out, "tidewire_store_origin_last_seq{origin=\"%s\"} %" PRIu64 "\n",
                            info[i].origin, info[i].last_seq);
    rc |= tw_buf_append_str(out, "# HELP tidewire_store_origin_events_kept Events kept per "
                                 "origin\n# TYPE tidewire_store_origin_events_kept gauge\n");
    for (size_t i = 0; i < n && i < MAX_ORIGINS; i++)
        rc |= tw_buf_printf(out, "tidewire_store_origin_events_kept{origin=\"%s\"} %" PRIu64 "\n",
                            info[i].origin, info[i].kept);
    rc |= render_loops_prometheus(srv, out);
    rc |= tw_cluster_render_prometheus(srv, out);
    return rc ? -1 : 0;
}
