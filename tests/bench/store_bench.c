/*
 * store_bench — the log alone, without the network: K appends kept in flight against the
 * store's writer thread, each resubmitted as soon as its commit (fsync) is reported.
 * Prints one JSON line: acknowledged events/s, commits/s, events per commit and the
 * submit -> completion latency (what a publisher waits for at the store).
 *
 *   store_bench --dir DIR [--inflight K] [--size BYTES] [--duration S] [--channels N]
 *   store_bench --dir DIR --replay N [--noise M] [--size BYTES]
 *
 * The second form measures reads: it writes one event of channel "target" (the resume
 * cursor), M events spread over 1000 other channels, then N events of "target"; then it
 * times (1) reading "target" whole in replay chunks of 512 events, as the node's loop
 * does (replay events/s), and (2) a resume: resolving the cursor and reading the 1000
 * events after it (median of 200), whose cost must not depend on M, and (3) reading the
 * node's own origin whole in chunks of 512 events, as a peer's fetch does (replication).
 *
 * DIR must not hold another node's log; it is left behind for inspection.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

typedef struct req {
    tw_store_append app; /* first: completions hand back &app */
    uint64_t t0_ns;
    char channel[32];
} req;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static tw_store_append *done_head, *done_tail;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_commit(void *arg, tw_store_append *list)
{
    tw_store_append *tail = list;
    (void)arg;
    while (tail->next)
        tail = tail->next;
    pthread_mutex_lock(&mu);
    if (done_tail)
        done_tail->next = list;
    else
        done_head = list;
    done_tail = tail;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Appends n events of `channel` (or of 1000 channels "noise:I" when channel is NULL), in
 * submits of 4096, and waits for all of them. */
static void fill(tw_store *s, const char *channel, size_t n, const char *payload, size_t size)
{
    static req reqs[4096];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < 4096 ? n - done : 4096;
        tw_store_append *list = NULL;
        for (size_t i = k; i-- > 0;) {
            req *r = &reqs[i];
            memset(r, 0, sizeof *r);
            if (channel)
                snprintf(r->channel, sizeof r->channel, "%s", channel);
            else
                snprintf(r->channel, sizeof r->channel, "noise:%zu", (done + i) % 1000);
            r->app.channel = r->channel;
            r->app.channel_len = strlen(r->channel);
            r->app.data = payload;
            r->app.data_len = size;
            r->app.next = list;
            list = &r->app;
        }
        tw_store_submit(s, list);
        size_t got = 0;
        while (got < k) {
            pthread_mutex_lock(&mu);
            while (!done_head)
                pthread_cond_wait(&cv, &mu);
            tw_store_append *a = done_head;
            done_head = done_tail = NULL;
            pthread_mutex_unlock(&mu);
            for (; a; a = a->next)
                got++;
        }
        done += k;
    }
}

struct sink {
    size_t n;
    uint64_t bytes;
    char buf[4096];
};

static int copy_event(void *arg, const tw_store_event *ev)
{
    struct sink *k = arg;
    size_t len = ev->data_len < sizeof k->buf ? ev->data_len : sizeof k->buf;
    memcpy(k->buf, ev->data, len); /* what encoding a replayed event costs at least */
    k->n++;
    k->bytes += ev->data_len;
    return 0;
}

static int replay_bench(tw_store *s, size_t n, size_t noise, const char *payload, size_t size)
{
    tw_store_reader *r;
    tw_store_stats st;

    fill(s, "target", 1, payload, size);
    tw_store_get_stats(s, &st);
    uint64_t cursor_seq = st.last_lsn; /* one origin: seq == lsn */
    fill(s, NULL, noise, payload, size);
    fill(s, "target", n, payload, size);
    if (tw_store_reader_new(s, &r) != 0) return 1;

    /* (1) The whole channel in replay chunks. */
    struct sink k = {0};
    uint64_t after = 0, t0 = now_ns();
    for (int head = 0; !head;) {
        uint64_t last;
        if (tw_store_read_channel(r, "target", 6, after, 512, 256 << 10, copy_event, &k, &last,
                                  &head, NULL) != 0)
            return 1;
        after = last;
    }
    double replay_s = (double)(now_ns() - t0) / 1e9;

    /* (2) A resume: 1000 events after the cursor, M other events in between. */
    static uint64_t lat[200];
    tw_store_cursor_entry e = {tw_store_origin(s), cursor_seq};
    for (int i = 0; i < 200; i++) {
        struct sink one = {0};
        int rec, head = 0;
        uint64_t t = now_ns(), at;
        if (tw_store_resolve_cursor(r, "target", 6, &e, 1, &at, &rec) != 0) return 1;
        while (!head && one.n < 1000) {
            uint64_t last;
            if (tw_store_read_channel(r, "target", 6, at, 1000 - one.n, 0, copy_event, &one, &last,
                                      &head, NULL) != 0)
                return 1;
            at = last;
        }
        lat[i] = now_ns() - t;
    }
    qsort(lat, 200, sizeof lat[0], cmp_u64);

    /* (3) The whole origin in chunks of 512, as a peer's fetch reads it (replication). */
    struct sink o = {0};
    uint64_t from = 1;
    t0 = now_ns();
    for (;;) {
        uint64_t last;
        size_t before = o.n;
        if (tw_store_read_origin(r, tw_store_origin(s), from, 512, 256 << 10, copy_event, &o,
                                 &last) != 0)
            return 1;
        if (o.n == before) break;
        from = last + 1;
    }
    double origin_s = (double)(now_ns() - t0) / 1e9;

    tw_store_get_stats(s, &st);
    printf("{\"bench\":\"store-replay\",\"events\":%zu,\"noise\":%zu,\"size\":%zu,"
           "\"log_events\":%" PRIu64 ",\"replay_events_per_s\":%.0f,"
           "\"resume_1000_us\":{\"p50\":%.1f,\"p99\":%.1f},\"origin_read_events_per_s\":%.0f}\n",
           n + 1, noise, size, st.kept_events, (double)k.n / replay_s, (double)lat[100] / 1e3,
           (double)lat[197] / 1e3, (double)o.n / origin_s);
    tw_store_reader_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    size_t inflight = 1024, size = 100, nchan = 1, replay = 0, noise = 0;
    double duration = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--inflight"))
            inflight = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--size"))
            size = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--duration"))
            duration = strtod(argv[i + 1], NULL);
        else if (!strcmp(argv[i], "--channels"))
            nchan = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--replay"))
            replay = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--noise"))
            noise = strtoul(argv[i + 1], NULL, 10);
    }
    if (!dir || inflight == 0 || nchan == 0) {
        fprintf(stderr, "usage: store_bench --dir DIR [--inflight K] [--size B] [--duration S] "
                        "[--channels N]\n");
        return 2;
    }

    tw_store *s;
    tw_store_options o = {
        .path = dir, .node_name = "bench", .map_size = (uint64_t)16 << 30, .on_commit = on_commit};
    int rc = tw_store_open(&s, &o);
    if (rc) {
        fprintf(stderr, "store_bench: open %s: %s\n", dir, tw_store_strerror(rc));
        return 1;
    }
    char *payload = malloc(size ? size : 1);
    req *reqs = calloc(inflight, sizeof *reqs);
    size_t lat_cap = 1 << 24, nlat = 0;
    uint64_t *lat = malloc(lat_cap * sizeof *lat);
    if (!payload || !reqs || !lat) return 1;
    memset(payload, 'x', size);
    if (replay) {
        rc = replay_bench(s, replay, noise, payload, size);
        tw_store_close(s);
        free(lat);
        free(reqs);
        free(payload);
        return rc;
    }

    tw_store_append *list = NULL;
    uint64_t t_start = now_ns();
    for (size_t i = inflight; i-- > 0;) {
        req *r = &reqs[i];
        snprintf(r->channel, sizeof r->channel, "bench:%zu", i % nchan);
        r->app.channel = r->channel;
        r->app.channel_len = strlen(r->channel);
        r->app.data = payload;
        r->app.data_len = size;
        r->t0_ns = t_start;
        r->app.next = list;
        list = &r->app;
    }
    tw_store_stats st0, st1;
    tw_store_get_stats(s, &st0);
    tw_store_submit(s, list);

    uint64_t end = t_start + (uint64_t)(duration * 1e9), acked = 0, errors = 0;
    size_t outstanding = inflight;
    while (outstanding > 0) {
        pthread_mutex_lock(&mu);
        while (!done_head)
            pthread_cond_wait(&cv, &mu);
        tw_store_append *got = done_head;
        done_head = done_tail = NULL;
        pthread_mutex_unlock(&mu);

        uint64_t t = now_ns();
        tw_store_append *again = NULL, **tailp = &again;
        for (tw_store_append *a = got, *next; a; a = next) {
            next = a->next;
            req *r = (req *)a;
            outstanding--;
            if (a->status == 0)
                acked++;
            else
                errors++;
            if (nlat < lat_cap) lat[nlat++] = t - r->t0_ns;
            if (t < end) {
                r->t0_ns = t;
                a->next = NULL;
                a->seq = 0;
                a->ts_ms = 0;
                *tailp = a;
                tailp = &a->next;
                outstanding++;
            }
        }
        if (again && tw_store_submit(s, again) != 0) {
            fprintf(stderr, "store_bench: submit refused\n");
            return 1;
        }
    }
    uint64_t t_end = now_ns();
    tw_store_get_stats(s, &st1);
    double secs = (double)(t_end - t_start) / 1e9;
    uint64_t commits = st1.commits - st0.commits;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
#define PCT(p) (nlat ? (double)lat[(size_t)((double)(nlat - 1) * (p))] / 1e6 : 0.0)
    printf("{\"bench\":\"store\",\"inflight\":%zu,\"size\":%zu,\"channels\":%zu,"
           "\"duration_s\":%.3f,\"acked\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"events_per_s\":%.0f,\"commits_per_s\":%.0f,\"events_per_commit\":%.1f,"
           "\"commit_us_avg\":%.0f,\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
           inflight, size, nchan, secs, acked, errors, (double)acked / secs, (double)commits / secs,
           commits ? (double)acked / (double)commits : 0.0,
           commits ? (double)(st1.commit_us_total - st0.commit_us_total) / (double)commits : 0.0,
           PCT(0.50), PCT(0.99), PCT(1.0));
    tw_store_close(s);
    free(lat);
    free(reqs);
    free(payload);
    return errors ? 1 : 0;
}
