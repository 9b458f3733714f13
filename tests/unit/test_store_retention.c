/*
 * test_store_retention.c — retention (age, count per channel, prefix rules, total size),
 * the kept counts, per-channel truthful `recovered`, and counts rebuilt for a directory
 * written before they existed. Real LMDB environments in $TW_TEST_TMP scratch dirs.
 *
 * Appends of the local origin may carry their own ts_ms: the age tests write events
 * "in the past" instead of sleeping.
 */
#define _GNU_SOURCE /* nftw() */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "scratch.h"
#include "store.h"

/* ---- commits: the test waits for each submit's completion ---------------------------- */

struct coll {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done;
};

static void on_commit(void *arg, tw_store_append *list)
{
    struct coll *c = arg;
    pthread_mutex_lock(&c->mu);
    for (; list; list = list->next)
        c->done++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static tw_store *open_store(struct dir *d, struct coll *c, const tw_store_retention *ret)
{
    tw_store_options o = {.path = d->data,
                          .node_name = "n1",
                          .map_size = 64 << 20,
                          .on_commit = on_commit,
                          .cb_arg = c};
    tw_store *s = NULL;

    if (ret) o.retention = *ret;
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    assert_int_equal(tw_store_open(&s, &o), 0);
    return s;
}

static void close_store(tw_store *s, struct coll *c)
{
    tw_store_close(s);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends n events of `channel` (data "N", ts given or now) and waits for them. */
static void append_n(tw_store *s, struct coll *c, const char *channel, size_t n, int64_t ts)
{
    tw_store_append *a = calloc(n, sizeof(*a));
    char(*data)[24] = calloc(n, 24);
    size_t before;

    assert_non_null(a);
    assert_non_null(data);
    pthread_mutex_lock(&c->mu);
    before = c->done;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        snprintf(data[i], 24, "%zu", i);
        a[i].channel = channel;
        a[i].channel_len = strlen(channel);
        a[i].data = data[i];
        a[i].data_len = strlen(data[i]);
        a[i].ts_ms = ts;
        a[i].next = i + 1 < n ? &a[i + 1] : NULL;
    }
    assert_int_equal(tw_store_submit(s, a), 0);
    pthread_mutex_lock(&c->mu);
    while (c->done < before + n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i].status, 0);
    free(a);
    free(data);
}

/* Runs retention passes until two in a row, one of them begun after the kick, delete
 * nothing (bounded wait): then nothing is left to trim. */
static void trim_settle(tw_store *s)
{
    tw_store_stats st;

    for (int i = 0; i < 1000; i++) {
        tw_store_get_stats(s, &st);
        uint64_t trimmed = st.trimmed_events, passes = st.trim_passes, failures = st.trim_failures;
        tw_store_trim_now(s);
        for (int w = 0; w < 10000 && st.trim_passes < passes + 2; w++) {
            usleep(1000);
            tw_store_trim_now(s);
            tw_store_get_stats(s, &st);
        }
        if (st.trim_passes < passes + 2) break;
        if (st.trimmed_events == trimmed && st.trim_failures == failures) return;
    }
    fail_msg("trimming did not settle");
}

struct count_ctx {
    size_t n;
    uint64_t first_seq, last_seq;
};

static int count_cb(void *arg, const tw_store_event *ev)
{
    struct count_ctx *c = arg;
    if (c->n == 0) c->first_seq = ev->seq;
    c->last_seq = ev->seq;
    c->n++;
    return 0;
}

/* The channel's retention mark, as a reader of it gets it. */
static uint64_t trim_mark(tw_store_reader *r, const char *channel)
{
    uint64_t last, mark = 99;
    struct count_ctx c = {0};
    int head;
    assert_int_equal(tw_store_read_channel(r, channel, strlen(channel), 0, 1, 0, count_cb, &c,
                                           &last, &head, &mark),
                     0);
    return mark;
}

static struct count_ctx read_all(tw_store_reader *r, const char *channel)
{
    struct count_ctx c = {0};
    uint64_t last;
    int head;
    assert_int_equal(
        tw_store_read_channel(r, channel, strlen(channel), 0, 0, 0, count_cb, &c, &last, &head, NULL), 0);
    assert_int_equal(head, 1);
    return c;
}

/* ---- tests --------------------------------------------------------------------------- */

/* max-count per channel keeps exactly the newest N of each channel; other channels and
 * the kept counts follow; `recovered` is truthful on both sides of the edge. */
static void test_count(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_retention ret = {.max_count = 10, .interval_ms = 50};
    tw_store *s = open_store(d, &c, &ret);
    tw_store_reader *r;
    tw_store_stats st;

    append_n(s, &c, "a", 25, 0); /* seqs 1..25 */
    append_n(s, &c, "b", 5, 0);  /* seqs 26..30 */
    trim_settle(s);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    struct count_ctx ca = read_all(r, "a"), cb = read_all(r, "b");
    assert_int_equal(ca.n, 10);
    assert_int_equal(ca.first_seq, 16);
    assert_int_equal(ca.last_seq, 25);
    assert_int_equal(cb.n, 5);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.trimmed_events, 15);
    assert_int_equal(st.kept_events, 15);

    /* The origin's oldest kept seq moved to 16; last stays 30; kept counts 15. */
    tw_store_origin_info info[4];
    size_t n;
    assert_int_equal(tw_store_origins(r, info, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(info[0].first_seq, 16);
    assert_int_equal(info[0].last_seq, 30);
    assert_int_equal(info[0].kept, 15);

    /* The edge: a cursor that saw seq 15 of "a" lost nothing; one that saw 14 lost 15. */
    tw_store_cursor_entry e = {tw_store_origin(s), 15};
    uint64_t after;
    int rec;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, &e, 1, &after, &rec), 0);
    assert_int_equal(rec, 1);
    e.seq = 14;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, &e, 1, &after, &rec), 0);
    assert_int_equal(rec, 0);
    /* ...while "b" lost nothing, whatever older seq its cursor names. */
    e.seq = 0;
    assert_int_equal(tw_store_resolve_cursor(r, "b", 1, &e, 1, &after, &rec), 0);
    assert_int_equal(rec, 1);

    /* A reader of "a" past lsn 15 missed nothing; one at 14 or before missed events. */
    assert_int_equal(trim_mark(r, "a"), 15);
    assert_int_equal(trim_mark(r, "b"), 0);
    assert_int_equal(trim_mark(r, "never"), 0);

    /* Reopen: counts and the trimmed marks persist. */
    tw_store_reader_free(r);
    close_store(s, &c);
    s = open_store(d, &c, &ret);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.kept_events, 15);
    append_n(s, &c, "a", 5, 0); /* 31..35: "a" has 15, trims to 10 */
    trim_settle(s);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    ca = read_all(r, "a");
    assert_int_equal(ca.n, 10);
    assert_int_equal(ca.first_seq, 21);
    e.origin = tw_store_origin(s); /* the string of the store now open */
    e.seq = 19;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, &e, 1, &after, &rec), 0);
    assert_int_equal(rec, 0);
    e.seq = 20;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, &e, 1, &after, &rec), 0);
    assert_int_equal(rec, 1);
    tw_store_reader_free(r);
    close_store(s, &c);
}

/* Trimming one channel leaves holes in its origin's seqs: cursor positions and tails of
 * the other channels still work across them. */
static void test_holes(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_retention_rule rule = {"a", TW_STORE_RETAIN_INHERIT, 2};
    tw_store_retention ret = {.rules = &rule, .nrules = 1, .interval_ms = 50};
    tw_store *s = open_store(d, &c, &ret);
    tw_store_reader *r;
    tw_store_origin_info at[2];
    uint64_t after;
    size_t n;

    for (int i = 0; i < 10; i++) { /* a: odd seqs, b: even seqs */
        append_n(s, &c, "a", 1, 0);
        append_n(s, &c, "b", 1, 0);
    }
    trim_settle(s); /* a keeps seqs 17 and 19: 1, 3, ... 15 are holes */
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_all(r, "a").n, 2);
    /* b's newest 3 events: seqs 16, 18, 20; the cursor before them is seq 15 (a hole). */
    assert_int_equal(tw_store_channel_tail(r, "b", 1, 3, &after), 0);
    assert_int_equal(tw_store_cursor_at(r, after, at, 2, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(at[0].first_seq, 2);
    assert_true(at[0].last_seq == 14 || at[0].last_seq == 15);
    for (uint64_t lsn = 0; lsn <= 20; lsn++) {
        assert_int_equal(tw_store_cursor_at(r, lsn, at, 2, &n), 0);
        /* lsn == seq here (one origin): the kept seq at or below lsn, or first - 1 */
        uint64_t want = lsn < 2 ? 1 : (lsn % 2 == 0 || lsn >= 17) ? lsn : lsn - 1;
        assert_int_equal(at[0].last_seq, want);
    }
    tw_store_reader_free(r);
    close_store(s, &c);
}

/* Age by default and per prefix, the longest prefix winning; INHERIT and 0 ("keep"). */
static void test_age_and_rules(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_retention_rule rules[] = {
        {"chat:", 60 * 1000, TW_STORE_RETAIN_INHERIT}, /* 1 min */
        {"chat:vip:", 0, TW_STORE_RETAIN_INHERIT},     /* kept forever */
        {"log:", TW_STORE_RETAIN_INHERIT, 3},          /* default age, 3 per channel */
    };
    tw_store_retention ret = {.max_age_ms = 3600 * 1000,
                              .rules = rules,
                              .nrules = 3,
                              .interval_ms = 50,
                              .batch_events = 7};
    tw_store *s = open_store(d, &c, &ret);
    tw_store_reader *r;
    int64_t now = now_ms();

    append_n(s, &c, "chat:1", 20, now - 120 * 1000);     /* 2 min old: gone */
    append_n(s, &c, "chat:1", 2, now);                   /* fresh: kept */
    append_n(s, &c, "chat:vip:1", 4, now - 7200 * 1000); /* 2 h old, but forever */
    append_n(s, &c, "other", 5, now - 7200 * 1000);      /* 2 h > default 1 h: gone */
    append_n(s, &c, "other", 1, now - 1800 * 1000);      /* 30 min: kept */
    append_n(s, &c, "log:x", 6, now);                    /* count 3 */
    trim_settle(s);                                      /* batch_events 7: several passes */
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_all(r, "chat:1").n, 2);
    assert_int_equal(read_all(r, "chat:vip:1").n, 4);
    assert_int_equal(read_all(r, "other").n, 1);
    assert_int_equal(read_all(r, "log:x").n, 3);
    tw_store_stats st;
    tw_store_get_stats(s, &st);
    assert_int_equal(st.trimmed_events, 20 + 5 + 3);
    assert_true(st.trim_commits >= 4); /* 28 deletions, 7 per txn */
    assert_int_equal(st.kept_events, 2 + 4 + 1 + 3);
    /* Age goes in log order: an event stamped older than the ones before it (a remote
     * origin's, or a caller's ts) waits until they age out too. */
    append_n(s, &c, "chat:1", 1, now - 300 * 1000);
    trim_settle(s);
    assert_int_equal(read_all(r, "chat:1").n, 3);
    /* A new channel whose first event is already old loses it at once. */
    append_n(s, &c, "chat:2", 1, now - 300 * 1000);
    trim_settle(s);
    assert_int_equal(read_all(r, "chat:2").n, 0);
    tw_store_reader_free(r);
    close_store(s, &c);
}

/* The whole log over max_bytes: oldest events go first, whatever their channel. */
static void test_bytes(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_retention ret = {.max_bytes = 100, .interval_ms = 50};
    tw_store *s = open_store(d, &c, &ret);
    tw_store_reader *r;
    tw_store_stats st;

    /* Each event: channel "x" (1) + data "0".."9" (1) = 2 bytes; 30 of "x", then "y". */
    append_n(s, &c, "x", 10, 0);
    append_n(s, &c, "y", 10, 0);
    append_n(s, &c, "x", 10, 0);
    append_n(s, &c, "x", 10, 0);
    append_n(s, &c, "x", 10, 0);
    append_n(s, &c, "x", 10, 0); /* 60 events, 120 bytes */
    trim_settle(s);
    tw_store_get_stats(s, &st);
    assert_true(st.kept_bytes <= 100);
    assert_int_equal(st.kept_events, 50);
    assert_int_equal(st.trimmed_events, 10);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_all(r, "x").n, 40); /* the first 10 of x went */
    assert_int_equal(read_all(r, "y").n, 10);
    tw_store_reader_free(r);
    close_store(s, &c);
}

/* A directory written before the counts existed gets them rebuilt at open. */
static void test_counts_rebuilt(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store *s = open_store(d, &c, NULL);
    tw_store_stats st;

    append_n(s, &c, "a", 7, 0);
    append_n(s, &c, "b", 3, 0);
    close_store(s, &c);

    /* Remove what a pre-counts directory lacks: the meta flag and the counts rows. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, counts;
    MDB_val k = {6, "counts"};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 64 << 20), 0);
    assert_int_equal(mdb_env_open(env, d->data, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "counts", 0, &counts), 0);
    assert_int_equal(mdb_del(txn, meta, &k, NULL), 0);
    assert_int_equal(mdb_drop(txn, counts, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    tw_store_retention ret = {.max_count = 2, .interval_ms = 50};
    s = open_store(d, &c, &ret);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.kept_events, 10);
    assert_int_equal(st.kept_bytes, 7 * 2 + 3 * 2);
    trim_settle(s);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.kept_events, 4);
    close_store(s, &c);
}

/* Bad retention options are refused before anything is opened. */
static void test_bad_options(void **state)
{
    struct dir *d = *state;
    tw_store_retention_rule bad = {NULL, 0, 0};
    tw_store_options o = {.path = d->data, .node_name = "n1", .on_commit = on_commit};
    tw_store *s = NULL;

    o.retention.max_age_ms = -5;
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EINVAL);
    o.retention.max_age_ms = 0;
    o.retention.rules = &bad;
    o.retention.nrules = 1;
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EINVAL);
    assert_null(s);
}

/* ---- the map: growth, full, and recovery by retention --------------------------------- */

struct map_reader {
    tw_store *s;
    volatile int stop;
    size_t reads;
    int rc;
};

/* Reads channel "a" over and over while the writer grows the map under it. */
static void *reader_loop(void *arg)
{
    struct map_reader *m = arg;
    tw_store_reader *r;

    m->rc = tw_store_reader_new(m->s, &r);
    while (!m->rc && !m->stop) {
        struct count_ctx c = {0};
        uint64_t last;
        int head;
        m->rc = tw_store_read_channel(r, "a", 1, 0, 0, 0, count_cb, &c, &last, &head, NULL);
        m->reads++;
        usleep(500); /* a reader, not a wall of snapshots pinning every freed page */
    }
    tw_store_reader_free(r);
    return NULL;
}

/* Appends n events of `size` bytes to channel in one submit (so, usually, one commit);
 * returns the first non-zero status, or 0. */
static int append_big(tw_store *s, struct coll *c, const char *channel, size_t n, size_t size)
{
    static char data[4096];
    tw_store_append a[32];
    size_t before;
    int rc = 0;

    assert_true(n <= 32 && size <= sizeof(data));
    memset(data, 'x', sizeof(data));
    memset(a, 0, sizeof(a));
    for (size_t i = 0; i < n; i++) {
        a[i].channel = channel;
        a[i].channel_len = strlen(channel);
        a[i].data = data;
        a[i].data_len = size;
        a[i].next = i + 1 < n ? &a[i + 1] : NULL;
    }
    pthread_mutex_lock(&c->mu);
    before = c->done;
    pthread_mutex_unlock(&c->mu);
    assert_int_equal(tw_store_submit(s, a), 0);
    pthread_mutex_lock(&c->mu);
    while (c->done < before + n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n && !rc; i++)
        rc = a[i].status;
    return rc;
}

static int append_one(tw_store *s, struct coll *c, const char *channel, size_t size)
{
    return append_big(s, c, channel, 1, size);
}

static void test_map_grows_then_full_then_recovers(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_retention_rule rule = {"a", TW_STORE_RETAIN_INHERIT, 5};
    /* Trims only when asked (tw_store_trim_now): the test decides when space returns. */
    tw_store_retention ret = {.rules = &rule, .nrules = 1, .interval_ms = 3600 * 1000};
    tw_store_options o = {.path = d->data,
                          .node_name = "n1",
                          .map_size = 256 << 10,
                          .map_max = 1 << 20,
                          .retention = ret,
                          .on_commit = on_commit,
                          .cb_arg = &c};
    tw_store *s;
    tw_store_stats st;
    pthread_t th;
    struct map_reader m = {0};
    size_t a_n = 0, b_n = 0;
    int rc;

    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    assert_int_equal(tw_store_open(&s, &o), 0);
    m.s = s;
    assert_int_equal(pthread_create(&th, NULL, reader_loop, &m), 0);

    for (a_n = 0; a_n < 300; a_n += 30)
        assert_int_equal(append_big(s, &c, "a", 30, 1000), 0);
    while ((rc = append_one(s, &c, "b", 1000)) == 0)
        b_n++;
    assert_int_equal(rc, TW_STORE_EFULL);
    m.stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(m.rc, 0);
    assert_true(m.reads > 0);
    tw_store_get_stats(s, &st);
    /* 256 KiB -> 512 KiB -> 896 KiB: the top 128 KiB of the 1 MiB stays for trimming. */
    assert_int_equal(st.map_size, (1 << 20) - (128 << 10));
    assert_true(st.map_grows >= 2);
    assert_true(st.commit_failures >= 1);

    /* Full: nothing acknowledged is lost, reads go on. */
    tw_store_reader *r;
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_all(r, "a").n, 300);
    assert_int_equal(read_all(r, "b").n, b_n);

    /* Space returns (retention trims "a" to 5): appends work again, by themselves. */
    trim_settle(s);
    assert_int_equal(read_all(r, "a").n, 5);
    assert_int_equal(append_one(s, &c, "b", 1000), 0);
    assert_int_equal(read_all(r, "b").n, b_n + 1);
    tw_store_reader_free(r);
    close_store(s, &c);

    /* Reopened with a smaller map than the file holds: LMDB raises it to what the file
     * needs, and everything is there. */
    o.map_size = 128 << 10;
    o.map_max = 0;
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    assert_int_equal(tw_store_open(&s, &o), 0);
    tw_store_get_stats(s, &st);
    assert_true(st.map_size >= st.used_bytes);
    assert_true(st.map_size > 128 << 10);
    assert_int_equal(st.kept_events, 5 + b_n + 1);
    close_store(s, &c);
}

/* A process that dies inside a read txn leaves a slot; tw_store_check_readers frees it. */
static void test_check_readers(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store *s = open_store(d, &c, NULL);
    int cleared = -1, status;
    pid_t pid;

    append_n(s, &c, "a", 3, 0);
    assert_int_equal(tw_store_check_readers(s, &cleared), 0);
    assert_int_equal(cleared, 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child opens its own environment (never the parent's after fork), reads,
         * and dies holding the read txn. */
        MDB_env *env;
        MDB_txn *txn;
        if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
            mdb_env_open(env, d->data, MDB_RDONLY, 0600) ||
            mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
            _exit(1);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(tw_store_check_readers(s, &cleared), 0);
    assert_int_equal(cleared, 1);
    assert_int_equal(tw_store_check_readers(s, &cleared), 0);
    assert_int_equal(cleared, 0);
    assert_int_equal(tw_store_check_readers(NULL, &cleared), TW_STORE_EINVAL);
    close_store(s, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_count, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_holes, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_age_and_rules, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_bytes, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_counts_rebuilt, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_bad_options, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_map_grows_then_full_then_recovers, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_check_readers, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
