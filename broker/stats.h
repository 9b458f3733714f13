/*
 * stats.h — the node's counters, and /stats (JSON) and /metrics (Prometheus text) rendered
 * from one descriptor table (stats.c), so the two can never disagree.
 *
 * Loop thread only (tw_figures copies cross loops under the node's lock); the store's own
 * counters are read with tw_store_get_stats().
 */
#ifndef TW_STATS_H
#define TW_STATS_H

#include <stdint.h>

#include "buf.h"

typedef struct tw_stats {
    uint64_t connections_total;
    uint64_t connections_refused;   /* over max-connections */
    uint64_t ws_sessions_total;
    uint64_t http_requests_total;
    uint64_t events_published;      /* publishes committed (WebSocket and HTTP API) */
    uint64_t events_replicated_in;  /* events of other nodes' origins committed here */
    uint64_t publishes_refused;     /* publishes that got an error (store full/busy/too big) */
    uint64_t events_delivered;      /* event messages queued to subscribers, live and replay */
    uint64_t events_replayed;       /* of which read from the log */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t resumes_recovered;
    uint64_t resumes_unrecovered;
    uint64_t fell_behind;           /* live subscriptions moved to catch-up (slow clients) */
    uint64_t slow_consumer_closes;  /* closes with 4208 */
    uint64_t request_errors;        /* error replies to WebSocket requests */
    uint64_t protocol_closes;       /* closes for frame-level errors or oversize messages */
    /* Authentication and limits (issue 5) */
    uint64_t auth_ok;               /* tokens accepted (connect, ?token=, refresh) */
    uint64_t auth_failures;         /* tokens refused, and clients closed with 4001 */
    uint64_t forbidden;             /* subscribes, publishes, presence refused with 403 */
    uint64_t rate_limited;          /* connections closed with 4129 */
    uint64_t ip_refused;            /* connections refused by a per-IP limit */
    uint64_t origin_refused;        /* upgrades refused for their Origin */
    uint64_t api_unauthorized;      /* HTTP requests refused 401 (API or admin key) */
    /* The log (issue 3) */
    uint64_t store_full_refusals;   /* publishes refused because the log is full */
    uint64_t store_full_logged_ms, store_full_reported; /* store-full lines: 1/s at most */
    double store_commits_per_s;     /* sampled by the server's tick */
    uint64_t prev_store_commits, prev_store_sample_ms;
    uint64_t last_reader_check_ms;  /* loop time of the last tw_store_check_readers() */
    /* Per-second rates, updated by the 1 s tick. */
    double events_in_per_s, events_out_per_s, bytes_in_per_s, bytes_out_per_s;
    uint64_t prev_events_in, prev_events_out, prev_bytes_in, prev_bytes_out;
    uint64_t prev_sample_ms;
} tw_stats;

/* One loop's figures: its counters and what it holds now. Several loops (--threads) add
 * theirs up for /stats. */
typedef struct tw_figures {
    tw_stats stats;
    uint64_t nconns, nsessions, nsubs, nchannels, pending_publishes;
} tw_figures;

/* Adds src's counters and gauges to dst. The store's sampled rate is the node's, not a
 * loop's: dst keeps its own. */
void tw_figures_add(tw_figures *dst, const tw_figures *src);

struct tw_server;

/* Updates the per-second rates; now_ms is loop time. */
void tw_stats_sample(tw_stats *st, uint64_t now_ms);

/* The channels of every loop of a node (--threads), added up for /stats: a channel's
 * subscribers summed over the loops, its events counted once. NULL census: one loop. */
typedef struct tw_census tw_census;

/* A new empty census, or NULL on ENOMEM. */
tw_census *tw_census_new(void);

/* Adds the channels of srv's loop; called on that loop's thread, loops concurrently (locks
 * inside). 0, or -1 when out of memory (the census then misses channels). */
int tw_census_add(tw_census *c, const struct tw_server *srv);

/* Frees it; NULL is fine. */
void tw_census_free(tw_census *c);

/* Appends the /stats JSON document. census: every loop's channels (NULL with one loop). */
int tw_stats_render_json(struct tw_server *srv, const tw_census *census, tw_buf *out);

/* Appends the /metrics Prometheus text exposition (version 0.0.4). */
int tw_stats_render_prometheus(struct tw_server *srv, const tw_census *census, tw_buf *out);

#endif /* TW_STATS_H */
