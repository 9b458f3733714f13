/*
 * test_store.c — the durable event log against real LMDB environments in scratch dirs
 * ($TW_TEST_TMP/store-XXXXXX, removed at the end of each test).
 *
 * cmocka's assertions longjmp, so they run on the test's main thread only: the commit
 * callback (writer thread) and the submitter threads just record what they saw, and the
 * main thread checks it afterwards.
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
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "scratch.h"
#include "store.h"

/* ---- completion collector (the on_commit side) --------------------------------------- */

/* A request plus what the test wants to know about it. */
struct treq {
    tw_store_append a;
    int completions; /* must end at exactly 1 */
    int thread;      /* submitter, for the group-commit test */
    size_t order;    /* position in its submitter's sequence */
    char data[128];
};

struct coll {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done;  /* requests completed */
    size_t calls; /* on_commit calls */
    size_t max_batch;
    int wrong_thread; /* a callback ran on the submitting (main) thread */
    pthread_t main_thread;
    /* Gate: while armed, the next callback blocks (stalling the writer) until opened. */
    int gate_armed;
    int gate_entered;
    int gate_open;
};

static void coll_init(struct coll *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->main_thread = pthread_self();
}

static void coll_destroy(struct coll *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void on_commit(void *arg, tw_store_append *done)
{
    struct coll *c = arg;
    size_t n = 0;

    pthread_mutex_lock(&c->mu);
    if (pthread_equal(pthread_self(), c->main_thread)) c->wrong_thread = 1;
    for (tw_store_append *a = done; a; a = a->next) {
        ((struct treq *)a->user)->completions++;
        n++;
    }
    c->calls++;
    if (n > c->max_batch) c->max_batch = n;
    if (c->gate_armed) {
        c->gate_armed = 0;
        c->gate_entered = 1;
        pthread_cond_broadcast(&c->cv);
        while (!c->gate_open)
            pthread_cond_wait(&c->cv, &c->mu);
    }
    c->done += n;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits (30 s at most) until n requests have completed; returns whether they did. */
static int coll_wait_done(struct coll *c, size_t n)
{
    struct timespec dl;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&c->mu);
    while (c->done < n && rc == 0)
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
    rc = c->done >= n;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int coll_wait_gate(struct coll *c)
{
    struct timespec dl;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&c->mu);
    while (!c->gate_entered && rc == 0)
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
    rc = c->gate_entered;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void coll_open_gate(struct coll *c)
{
    pthread_mutex_lock(&c->mu);
    c->gate_open = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static size_t coll_done(struct coll *c)
{
    size_t n;
    pthread_mutex_lock(&c->mu);
    n = c->done;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- helpers -------------------------------------------------------------------------- */

static tw_store_options base_opts(const struct dir *d, struct coll *c)
{
    tw_store_options o;

    memset(&o, 0, sizeof(o));
    o.path = d->data;
    o.node_name = "n1";
    o.map_size = 64u << 20;
    o.on_commit = on_commit;
    o.cb_arg = c;
    return o;
}

static tw_store *open_ok(const tw_store_options *o)
{
    tw_store *s = NULL;
    assert_int_equal(tw_store_open(&s, o), 0);
    assert_non_null(s);
    return s;
}

/* A local event on `chan` whose data is `data` (copied into the request). */
static void req_set(struct treq *r, const char *chan, const char *data)
{
    assert_true(strlen(data) < sizeof(r->data));
    memset(r, 0, sizeof(*r));
    snprintf(r->data, sizeof(r->data), "%s", data);
    r->a.channel = chan;
    r->a.channel_len = strlen(chan);
    r->a.data = r->data;
    r->a.data_len = strlen(r->data);
    r->a.encoding = TW_STORE_ENC_JSON;
    r->a.user = r;
}

static void req_remote(struct treq *r, const char *chan, const char *origin, uint64_t seq)
{
    char data[96]; /* fits the over-long origin of test_remote_origins too */

    snprintf(data, sizeof(data), "%.60s:%llu", origin, (unsigned long long)seq);
    req_set(r, chan, data);
    r->a.origin = origin;
    r->a.seq = seq;
    r->a.ts_ms = 1700000000000 + (int64_t)seq;
}

/* Links reqs[0..n) into one list, submits it, and waits for all n completions. */
static void submit_wait(tw_store *s, struct coll *c, struct treq *reqs, size_t n)
{
    size_t before = coll_done(c);

    for (size_t i = 0; i < n; i++) {
        reqs[i].completions = 0;
        reqs[i].a.next = i + 1 < n ? &reqs[i + 1].a : NULL;
    }
    assert_int_equal(tw_store_submit(s, &reqs[0].a), 0);
    assert_true(coll_wait_done(c, before + n));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(reqs[i].completions, 1);
}

/* Events copied out of read callbacks. */
struct gev {
    char origin[TW_STORE_ORIGIN_MAX + 1];
    uint64_t seq, lsn;
    int64_t ts_ms;
    char channel[TW_STORE_CHANNEL_MAX + 1];
    char data[64];
    size_t data_len;
    uint8_t encoding;
};

struct got {
    struct gev *ev;
    size_t n, cap;
    size_t stop_after; /* callback returns 1 after this many (0: never) */
};

static int got_cb(void *arg, const tw_store_event *e)
{
    struct got *g = arg;
    struct gev *v;

    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 16;
        g->ev = realloc(g->ev, g->cap * sizeof(*g->ev));
        if (!g->ev) abort();
    }
    v = &g->ev[g->n++];
    memset(v, 0, sizeof(*v));
    snprintf(v->origin, sizeof(v->origin), "%s", e->origin);
    v->seq = e->seq;
    v->lsn = e->lsn;
    v->ts_ms = e->ts_ms;
    memcpy(v->channel, e->channel, e->channel_len);
    memcpy(v->data, e->data, e->data_len < sizeof(v->data) - 1 ? e->data_len : sizeof(v->data) - 1);
    v->data_len = e->data_len;
    v->encoding = e->encoding;
    return g->stop_after && g->n >= g->stop_after;
}

static void got_reset(struct got *g)
{
    g->n = 0;
    g->stop_after = 0;
}

static void got_free(struct got *g)
{
    free(g->ev);
    memset(g, 0, sizeof(*g));
}

static int read_chan(tw_store_reader *r, const char *chan, uint64_t after, size_t max_events,
                     size_t max_bytes, struct got *g, uint64_t *last, int *at_head)
{
    return tw_store_read_channel(r, chan, strlen(chan), after, max_events, max_bytes, got_cb, g,
                                 last, at_head, NULL);
}

/* Opens the store's environment directly (store closed) to inspect or damage it. */
static void raw_open(const struct dir *d, MDB_env **env, MDB_txn **txn)
{
    assert_int_equal(mdb_env_create(env), 0);
    assert_int_equal(mdb_env_set_maxdbs(*env, 16), 0);
    assert_int_equal(mdb_env_open(*env, d->data, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, txn), 0);
}

static void raw_commit(MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* ---- tests: open ---------------------------------------------------------------------- */

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(tw_store_strerror(0), "success");
    assert_string_equal(tw_store_strerror(TW_STORE_EGAP),
                        "remote event is not the next seq of its origin");
    assert_string_equal(tw_store_strerror(TW_STORE_ECORRUPT), "log record is corrupt");
    assert_string_equal(tw_store_strerror(-1), "unknown error");
    assert_string_equal(tw_store_strerror(12345), "unknown error");
}

static void test_open_create_reopen(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    tw_store_origin_info oi[4];
    char origin[TW_STORE_ORIGIN_MAX + 1];
    struct stat st;
    size_t n;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);

    /* "n1." + 8 lowercase hex digits */
    snprintf(origin, sizeof(origin), "%s", tw_store_origin(s));
    assert_int_equal(strlen(origin), 11);
    assert_memory_equal(origin, "n1.", 3);
    for (int i = 3; i < 11; i++)
        assert_non_null(strchr("0123456789abcdef", origin[i]));
    assert_int_equal(stat(d->data, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(tw_store_origins(r, oi, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(oi[0].origin, origin);
    assert_int_equal(oi[0].first_seq, 0);
    assert_int_equal(oi[0].last_seq, 0);
    tw_store_reader_free(r);
    tw_store_close(s);

    s = open_ok(&o);
    assert_string_equal(tw_store_origin(s), origin);
    tw_store_close(s);
    tw_store_close(NULL);

    coll_destroy(&c);
}

static void test_open_invalid(void **state)
{
    static const char *const bad[] = {
        "",    "a.b",       "sp ace",
        "x/y", "n\xc3\xa9", "abcdefghijklmnopqrstuvwxyz0123456"}; /* 33 chars */
    tw_store *const sentinel = (tw_store *)&sentinel;
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store *s;

    coll_init(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o = base_opts(d, &c);
        o.node_name = bad[i];
        s = sentinel;
        assert_int_equal(tw_store_open(&s, &o), TW_STORE_EINVAL);
        assert_ptr_equal(s, sentinel); /* untouched on failure */
    }
    o = base_opts(d, &c);
    o.on_commit = NULL;
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EINVAL);
    o = base_opts(d, &c);
    o.path = NULL;
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EINVAL);
    assert_int_equal(tw_store_open(&s, NULL), TW_STORE_EINVAL);

    /* The longest valid name, with every allowed kind of character. */
    o = base_opts(d, &c);
    o.node_name = "Ab_-0123456789abcdefghijklmnopqr";
    s = open_ok(&o);
    assert_int_equal(strlen(tw_store_origin(s)), 32 + 1 + 8);
    tw_store_close(s);

    coll_destroy(&c);
}

static void test_open_mismatch(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    tw_store_close(s);

    o.node_name = "n2";
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EMISMATCH);
    o.node_name = "n"; /* a prefix of the real name is another name */
    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EMISMATCH);
    o.node_name = "n1";
    s = open_ok(&o);
    tw_store_close(s);

    coll_destroy(&c);
}

static void test_open_version(void **state)
{
    unsigned char two[4] = {0, 0, 0, 2};
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {6, "format"}, v = {4, two};
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    tw_store_close(s);

    raw_open(d, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    raw_commit(env, txn);

    assert_int_equal(tw_store_open(&s, &o), TW_STORE_EVERSION);

    /* A file that is not an LMDB environment at all. */
    {
        char p[PATH_MAX + 32];
        FILE *f;
        snprintf(p, sizeof(p), "%s/data.mdb", d->data);
        f = fopen(p, "w");
        assert_non_null(f);
        for (int i = 0; i < 3000; i++)
            fputs("not lmdb", f);
        fclose(f);
        assert_int_not_equal(tw_store_open(&s, &o), 0);
    }

    coll_destroy(&c);
}

/* ---- tests: appending ----------------------------------------------------------------- */

static void test_append_local(void **state)
{
    enum { N = 50 };
    struct treq *q = calloc(N, sizeof(*q));
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    struct timespec now;
    int64_t now_ms;
    tw_store *s;

    assert_non_null(q);
    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);

    for (size_t i = 0; i < N; i++) {
        char data[16];
        snprintf(data, sizeof(data), "{\"i\":%zu}", i);
        req_set(&q[i], "a", data);
        q[i].a.seq = 999; /* ignored for local events */
        q[i].a.status = 77;
    }
    q[7].a.ts_ms = 1234; /* a caller's timestamp is kept */
    clock_gettime(CLOCK_REALTIME, &now);
    now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    submit_wait(s, &c, q, N);

    for (size_t i = 0; i < N; i++) {
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.seq, i + 1);
        assert_int_equal(q[i].a.lsn, i + 1);
        assert_ptr_equal(q[i].a.user, &q[i]);
        if (i == 7)
            assert_int_equal(q[i].a.ts_ms, 1234);
        else
            assert_true(q[i].a.ts_ms >= now_ms - 1000 && q[i].a.ts_ms <= now_ms + 60000);
    }
    assert_int_equal(c.wrong_thread, 0);

    /* A second round continues the sequence. */
    submit_wait(s, &c, q, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.seq, N + i + 1);
        assert_int_equal(q[i].a.lsn, N + i + 1);
    }
    assert_int_equal(tw_store_submit(s, NULL), 0);
    assert_int_equal(tw_store_submit(NULL, &q[0].a), TW_STORE_EINVAL);

    tw_store_close(s);
    coll_destroy(&c);
    free(q);
}

struct submitter {
    tw_store *s;
    struct treq *reqs;
    size_t n;
    int thread;
    int failures; /* submit results other than 0/EBUSY */
    char chan[8];
};

static void *submitter_main(void *arg)
{
    struct submitter *sb = arg;

    for (size_t i = 0; i < sb->n; i++) {
        struct treq *r = &sb->reqs[i];
        char data[24];
        int rc;

        snprintf(data, sizeof(data), "t%d-%zu", sb->thread, i);
        req_set(r, sb->chan, data);
        r->thread = sb->thread;
        r->order = i;
        while ((rc = tw_store_submit(sb->s, &r->a)) == TW_STORE_EBUSY)
            sched_yield();
        if (rc != 0) sb->failures++;
        /* Pause now and then so the writer also runs while submitters are active. */
        if (i % 50 == 49) usleep(2000);
    }
    return NULL;
}

static void test_group_commit_threads(void **state)
{
    enum { THREADS = 4, PER = 250, TOTAL = THREADS * PER };
    struct treq *q = calloc(TOTAL, sizeof(*q));
    unsigned char *seen = calloc(TOTAL + 1, 1);
    struct submitter sb[THREADS];
    pthread_t th[THREADS];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_stats st;
    tw_store *s;

    assert_non_null(q);
    assert_non_null(seen);
    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);

    for (int t = 0; t < THREADS; t++) {
        sb[t] = (struct submitter){.s = s, .reqs = &q[t * PER], .n = PER, .thread = t};
        snprintf(sb[t].chan, sizeof(sb[t].chan), "t%d", t);
        assert_int_equal(pthread_create(&th[t], NULL, submitter_main, &sb[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(sb[t].failures, 0);
    }
    assert_true(coll_wait_done(&c, TOTAL));

    for (int t = 0; t < THREADS; t++) {
        uint64_t prev = 0;
        for (size_t i = 0; i < PER; i++) {
            const struct treq *r = &q[t * PER + i];
            assert_int_equal(r->completions, 1);
            assert_int_equal(r->a.status, 0);
            assert_true(r->a.seq >= 1 && r->a.seq <= TOTAL);
            assert_int_equal(seen[r->a.seq], 0);
            seen[r->a.seq] = 1;
            assert_true(r->a.seq > prev); /* each submitter's order is kept */
            prev = r->a.seq;
            assert_int_equal(r->a.lsn, r->a.seq); /* one origin: lsn order is seq order */
        }
    }
    tw_store_get_stats(s, &st);
    assert_int_equal(st.events_appended, TOTAL);
    assert_int_equal(st.last_lsn, TOTAL);
    assert_int_equal(st.commit_failures, 0);
    /* Group commit: commits carried several events each. */
    assert_true(st.commits < TOTAL);
    assert_int_equal(st.commits, c.calls);
    assert_int_equal(st.queue_bytes, 0);
    print_message("group commit: %d events in %llu commits (largest batch %zu)\n", TOTAL,
                  (unsigned long long)st.commits, c.max_batch);

    tw_store_close(s);
    coll_destroy(&c);
    free(seen);
    free(q);
}

static void test_batch_split(void **state)
{
    enum { N = 10 };
    struct treq q[N];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_stats st;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    o.max_batch_bytes = 100;
    s = open_ok(&o);

    /* Each request counts 1 + 30 bytes: three fit in 100, so a list of 10 goes in 4
     * commits, in order. */
    for (int i = 0; i < N; i++)
        req_set(&q[i], "b", "012345678901234567890123456789");
    submit_wait(s, &c, q, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.seq, i + 1);
    }
    tw_store_get_stats(s, &st);
    assert_int_equal(st.commits, 4);
    assert_int_equal(c.calls, 4);
    assert_int_equal(c.max_batch, 3);

    tw_store_close(s);
    coll_destroy(&c);
}

static void test_reopen_durable(void **state)
{
    enum { N = 100 };
    static const char *const chans[] = {"x", "y", "zz"};
    struct treq *q = calloc(N, sizeof(*q));
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    struct got g = {0};
    uint64_t last;
    int head;
    tw_store *s;

    assert_non_null(q);
    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    for (size_t i = 0; i < N; i++) {
        char data[16];
        snprintf(data, sizeof(data), "e%zu", i);
        req_set(&q[i], chans[i % 3], data);
        q[i].a.encoding = i % 2 ? TW_STORE_ENC_MSGPACK : TW_STORE_ENC_JSON;
    }
    submit_wait(s, &c, q, N);
    tw_store_close(s);

    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    for (size_t ch = 0; ch < 3; ch++) {
        got_reset(&g);
        assert_int_equal(read_chan(r, chans[ch], 0, 0, 0, &g, &last, &head), 0);
        assert_int_equal(head, 1);
        for (size_t j = 0; j < g.n; j++) {
            const struct treq *e = &q[ch + 3 * j];
            assert_string_equal(g.ev[j].origin, tw_store_origin(s));
            assert_int_equal(g.ev[j].seq, e->a.seq);
            assert_int_equal(g.ev[j].lsn, e->a.lsn);
            assert_int_equal(g.ev[j].ts_ms, e->a.ts_ms);
            assert_int_equal(g.ev[j].encoding, e->a.encoding);
            assert_string_equal(g.ev[j].channel, chans[ch]);
            assert_string_equal(g.ev[j].data, e->data);
        }
        assert_int_equal(g.n, (N - ch + 2) / 3);
    }
    tw_store_reader_free(r);

    /* New appends continue after what was committed before the close. */
    req_set(&q[0], "x", "after");
    submit_wait(s, &c, q, 1);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, N + 1);
    assert_int_equal(q[0].a.lsn, N + 1);

    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
    free(q);
}

static void test_remote_origins(void **state)
{
    const char *n2 = "n2.0000aaaa", *n3 = "n3.0000bbbb";
    struct treq q[8];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    tw_store_origin_info oi[4];
    size_t n;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);

    /* In order: accepted with their own seq and ts. */
    for (int i = 0; i < 3; i++)
        req_remote(&q[i], "c", n2, (uint64_t)i + 1);
    submit_wait(s, &c, q, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.seq, i + 1);
        assert_int_equal(q[i].a.lsn, i + 1);
        assert_int_equal(q[i].a.ts_ms, 1700000000000 + i + 1);
    }

    /* One batch mixing outcomes; the refused ones take no lsn and leave no hole. */
    req_remote(&q[0], "c", n2, 2); /* already stored */
    req_remote(&q[1], "c", n2, 4); /* next */
    req_remote(&q[2], "c", n2, 4); /* duplicate within the batch */
    req_remote(&q[3], "c", n2, 6); /* gap */
    req_set(&q[4], "c", "local");
    req_remote(&q[5], "c", n3, 2); /* gap: a new origin starts at 1 */
    req_remote(&q[6], "c", n3, 1);
    req_remote(&q[7], "c", tw_store_origin(s), 1); /* our own event echoed back */
    submit_wait(s, &c, q, 8);
    assert_int_equal(q[0].a.status, TW_STORE_EDUP);
    assert_int_equal(q[0].a.lsn, 0);
    assert_int_equal(q[1].a.status, 0);
    assert_int_equal(q[1].a.lsn, 4);
    assert_int_equal(q[2].a.status, TW_STORE_EDUP);
    assert_int_equal(q[3].a.status, TW_STORE_EGAP);
    assert_int_equal(q[4].a.status, 0);
    assert_int_equal(q[4].a.seq, 1);
    assert_int_equal(q[4].a.lsn, 5);
    assert_int_equal(q[5].a.status, TW_STORE_EGAP);
    assert_int_equal(q[6].a.status, 0);
    assert_int_equal(q[6].a.lsn, 6);
    assert_int_equal(q[7].a.status, TW_STORE_EDUP);

    /* Our own origin beyond our head: someone else writes under our id. Seq 0 and a
     * malformed origin are refused up front. */
    req_remote(&q[0], "c", tw_store_origin(s), 5);
    req_remote(&q[1], "c", n2, 0);
    req_remote(&q[2], "c", "", 1);
    req_remote(&q[3], "c", "n4.0123456789012345678901234567890123456789012345678", 1);
    submit_wait(s, &c, q, 4);
    assert_int_equal(q[0].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[1].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[2].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[3].a.status, TW_STORE_EINVAL);

    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(tw_store_origins(r, oi, 4, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(oi[0].origin, tw_store_origin(s));
    assert_int_equal(oi[0].first_seq, 1);
    assert_int_equal(oi[0].last_seq, 1);
    assert_string_equal(oi[1].origin, n2);
    assert_int_equal(oi[1].first_seq, 1);
    assert_int_equal(oi[1].last_seq, 4);
    assert_string_equal(oi[2].origin, n3);
    assert_int_equal(oi[2].last_seq, 1);
    /* A short array still gets the count. */
    assert_int_equal(tw_store_origins(r, oi, 1, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(tw_store_origins(r, NULL, 0, &n), 0);
    assert_int_equal(n, 3);
    tw_store_reader_free(r);
    tw_store_close(s);

    /* The origins and their seqs survive a reopen. */
    s = open_ok(&o);
    req_remote(&q[0], "c", n2, 5);
    req_remote(&q[1], "c", n3, 1);
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.lsn, 7);
    assert_int_equal(q[1].a.status, TW_STORE_EDUP);
    tw_store_close(s);

    coll_destroy(&c);
}

/* A remote event flagged after_trim is taken after a hole in its origin's seqs (the seqs
 * were trimmed where it came from), the hole is remembered for every channel's resume, and
 * both survive a reopen. Unflagged, the same event is a gap. */
static void test_remote_after_trim(void **state)
{
    const char *n2 = "n2.0000aaaa";
    struct treq q[4];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    uint64_t after;
    int rec;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    req_remote(&q[0], "a", n2, 1);
    req_remote(&q[1], "b", n2, 5); /* 2-4 trimmed at the sender */
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[1].a.status, TW_STORE_EGAP);
    req_remote(&q[0], "b", n2, 5);
    q[0].a.after_trim = 1;
    req_remote(&q[1], "b", n2, 6);
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.lsn, 2);
    assert_int_equal(q[1].a.status, 0);
    tw_store_close(s);

    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    for (int ch = 0; ch < 3; ch++) {
        const char *chan = ch == 0 ? "a" : ch == 1 ? "b" : "never-written";
        tw_store_cursor_entry e = {n2, 1};
        assert_int_equal(tw_store_resolve_cursor(r, chan, strlen(chan), &e, 1, &after, &rec), 0);
        assert_int_equal(rec, 0); /* seqs 2-4 may have been anyone's */
        e.seq = 4;
        assert_int_equal(tw_store_resolve_cursor(r, chan, strlen(chan), &e, 1, &after, &rec), 0);
        assert_int_equal(rec, 1);
    }
    tw_store_reader_free(r);
    /* The origin goes on from 6. */
    req_remote(&q[0], "a", n2, 7);
    submit_wait(s, &c, q, 1);
    assert_int_equal(q[0].a.status, 0);
    tw_store_close(s);
    coll_destroy(&c);
}

static void test_refused_requests(void **state)
{
    char big[400];
    char chan256[257];
    struct treq q[6];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store *s;

    memset(big, 'b', sizeof(big));
    memset(chan256, 'c', 256);
    chan256[256] = '\0';
    coll_init(&c);
    o = base_opts(d, &c);
    o.max_event_bytes = 300;
    s = open_ok(&o);

    req_set(&q[0], "a", "ok1");
    req_set(&q[1], "a", "x");
    q[1].a.data = big;
    q[1].a.data_len = sizeof(big); /* over max_event_bytes */
    req_set(&q[2], chan256, "x");  /* channel of 256 bytes */
    req_set(&q[3], "a", "x");
    q[3].a.channel_len = 0;
    req_set(&q[4], "a", "x");
    q[4].a.data = NULL; /* data_len 1 without data */
    req_set(&q[5], "a", "ok2");
    submit_wait(s, &c, q, 6);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, 1);
    assert_int_equal(q[1].a.status, TW_STORE_ETOOBIG);
    assert_int_equal(q[1].a.lsn, 0);
    assert_int_equal(q[2].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[3].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[4].a.status, TW_STORE_EINVAL);
    assert_int_equal(q[5].a.status, 0);
    assert_int_equal(q[5].a.seq, 2); /* no hole */

    /* A 255-byte channel and an empty payload are fine; a batch of refusals only. */
    chan256[255] = '\0';
    req_set(&q[0], chan256, "");
    req_set(&q[1], "a", "x");
    q[1].a.channel = NULL;
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, 3);
    assert_int_equal(q[1].a.status, TW_STORE_EINVAL);
    submit_wait(s, &c, q + 1, 1);
    assert_int_equal(q[1].a.status, TW_STORE_EINVAL);

    tw_store_close(s);
    coll_destroy(&c);
}

static void test_ebusy(void **state)
{
    char d70[71];
    struct treq q[4];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_stats st;
    tw_store *s;

    memset(d70, 'x', 70);
    d70[70] = '\0';
    coll_init(&c);
    o = base_opts(d, &c);
    o.max_queue_bytes = 100;
    s = open_ok(&o);

    /* A's completion blocks the writer, so B and C queue behind it. */
    c.gate_armed = 1;
    req_set(&q[0], "a", "0123456789012345678901234567890123456789");
    assert_int_equal(tw_store_submit(s, &q[0].a), 0);
    assert_true(coll_wait_gate(&c));

    req_set(&q[1], "a", "0123456789012345678901234567890123456789"); /* 41 bytes */
    assert_int_equal(tw_store_submit(s, &q[1].a), 0);
    req_set(&q[2], "a", d70); /* 41 + 71 > 100 */
    q[2].a.status = 4242;
    assert_int_equal(tw_store_submit(s, &q[2].a), TW_STORE_EBUSY);
    assert_int_equal(q[2].a.status, 4242); /* untouched: the caller kept it */
    tw_store_get_stats(s, &st);
    assert_int_equal(st.refused_busy, 1);
    assert_int_equal(st.queue_bytes, 41);

    coll_open_gate(&c);
    assert_true(coll_wait_done(&c, 2));
    assert_int_equal(q[2].completions, 0);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.queue_bytes, 0);

    /* Retried later it goes in; a list over the bound is admitted by an empty queue. */
    submit_wait(s, &c, &q[2], 1);
    assert_int_equal(q[2].a.status, 0);
    req_set(&q[0], "a", d70);
    req_set(&q[1], "a", d70);
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[1].a.status, 0);
    assert_int_equal(q[1].a.seq, 5);

    tw_store_close(s);
    coll_destroy(&c);
}

static void test_map_full(void **state)
{
    enum { BIG = 200 * 1024 };
    char *big = malloc(BIG);
    struct treq q[20];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    tw_store_stats st;
    struct got g = {0};
    uint64_t last, committed = 0;
    int head, full = 0;
    tw_store *s;

    assert_non_null(big);
    memset(big, 'B', BIG);
    coll_init(&c);
    o = base_opts(d, &c);
    o.map_size = 1u << 20;
    s = open_ok(&o);

    for (int i = 0; i < 5; i++)
        req_set(&q[i], "small", "s");
    submit_wait(s, &c, q, 5);
    committed = 5;

    /* Big events until the 1 MiB map refuses one. */
    for (int i = 0; i < 16 && !full; i++) {
        req_set(&q[0], "big", "x");
        q[0].a.data = big;
        q[0].a.data_len = BIG;
        submit_wait(s, &c, q, 1);
        if (q[0].a.status == TW_STORE_EFULL) {
            full = 1;
            assert_int_equal(q[0].a.lsn, 0);
        } else {
            assert_int_equal(q[0].a.status, 0);
            assert_int_equal(q[0].a.seq, ++committed);
        }
    }
    assert_true(full);

    /* A failing commit fails its whole batch, small events included. */
    req_set(&q[0], "small", "s");
    req_set(&q[1], "big", "x");
    q[1].a.data = big;
    q[1].a.data_len = BIG;
    submit_wait(s, &c, q, 2);
    assert_int_equal(q[0].a.status, TW_STORE_EFULL);
    assert_int_equal(q[1].a.status, TW_STORE_EFULL);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.commit_failures, 2);
    assert_int_equal(st.events_appended, committed);
    assert_int_equal(st.last_lsn, committed);

    /* What was committed still reads back. */
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_chan(r, "small", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 5);
    got_reset(&g);
    assert_int_equal(read_chan(r, "big", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, committed - 5);
    for (size_t i = 0; i < g.n; i++)
        assert_int_equal(g.ev[i].data_len, BIG);
    tw_store_reader_free(r);

    /* A small append still fits and takes the next seq: the failed ones left no hole. */
    req_set(&q[0], "small", "after");
    submit_wait(s, &c, q, 1);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, committed + 1);
    assert_int_equal(q[0].a.lsn, committed + 1);
    tw_store_close(s);

    /* The way out for an operator: reopen with a larger map; the big event now fits. */
    o.map_size = 8u << 20;
    s = open_ok(&o);
    req_set(&q[0], "big", "x");
    q[0].a.data = big;
    q[0].a.data_len = BIG;
    submit_wait(s, &c, q, 1);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, committed + 2);
    tw_store_get_stats(s, &st);
    assert_int_equal(st.map_size, 8u << 20);

    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
    free(big);
}

/* Size of data.mdb, and whether every byte from `from` to its end is zero. */
static uint64_t data_file(const struct dir *d, uint64_t from, int *zero_tail)
{
    char path[PATH_MAX + 32];
    struct stat st;
    FILE *f;
    int ch;

    snprintf(path, sizeof(path), "%s/data.mdb", d->data);
    assert_int_equal(stat(path, &st), 0);
    assert_non_null(f = fopen(path, "rb"));
    assert_int_equal(fseeko(f, (off_t)from, SEEK_SET), 0);
    *zero_tail = 1;
    while ((ch = fgetc(f)) != EOF)
        if (ch != 0) *zero_tail = 0;
    fclose(f);
    return (uint64_t)st.st_size;
}

/* The writer keeps zeros written past LMDB's last page (so commits overwrite instead of
 * growing the file): the file is longer than the pages in use, the tail is zeros, it never
 * passes the map, and a reopened log reads back whole and goes on appending. */
static void test_writes_ahead_of_lmdb(void **state)
{
    enum { N = 300, SIZE = 4000 };
    struct treq *q = calloc(N, sizeof(*q));
    char *payload = malloc(SIZE + 1);
    struct dir *d = *state;
    struct coll c;
    struct got g = {0};
    tw_store_options o;
    tw_store_stats st;
    tw_store_reader *r;
    uint64_t last, size;
    size_t committed = 0;
    int head, zero_tail, full = 0;
    tw_store *s;

    assert_non_null(q);
    assert_non_null(payload);
    memset(payload, 'p', SIZE);
    payload[SIZE] = 0;
    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    for (size_t i = 0; i < 10; i++)
        req_set(&q[i], "a", "small");
    submit_wait(s, &c, q, 10);
    tw_store_get_stats(s, &st);
    tw_store_close(s); /* joins the writer: its extension is done */
    size = data_file(d, st.used_bytes, &zero_tail);
    assert_true(size > st.used_bytes);
    assert_true(size <= o.map_size);
    assert_true(zero_tail);

    /* 1 MiB map, no growth: appends until full; the file stays within the map. */
    o.map_size = o.map_max = 1u << 20;
    s = open_ok(&o);
    for (size_t i = 0; i < N && !full; i++) {
        req_set(&q[i], "big", "x");
        q[i].a.data = payload;
        q[i].a.data_len = SIZE;
        submit_wait(s, &c, &q[i], 1);
        if (q[i].a.status == TW_STORE_EFULL) {
            full = 1;
        } else {
            assert_int_equal(q[i].a.status, 0);
            committed++;
        }
    }
    assert_true(full);
    tw_store_get_stats(s, &st);
    tw_store_close(s);
    size = data_file(d, st.used_bytes, &zero_tail);
    assert_true(size <= (1u << 20));
    assert_true(zero_tail);
    assert_true(committed > 100);

    /* Reopened: everything committed reads back, and appends go on. */
    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_chan(r, "a", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    got_reset(&g);
    last = 0;
    do /* in pages: a read stops at its byte budget */
        assert_int_equal(read_chan(r, "big", last, 0, 0, &g, &last, &head), 0);
    while (!head);
    assert_int_equal(g.n, committed);
    for (size_t i = 0; i < g.n; i++) {
        assert_int_equal(g.ev[i].data_len, SIZE);
        assert_memory_equal(g.ev[i].data, payload, sizeof(g.ev[i].data) - 1); /* as copied */
    }
    tw_store_reader_free(r);
    tw_store_close(s);

    /* With a larger map, appends go on after the last committed seq. */
    o.map_size = o.map_max = 8u << 20;
    s = open_ok(&o);
    req_set(&q[0], "a", "after");
    submit_wait(s, &c, q, 1);
    assert_int_equal(q[0].a.status, 0);
    assert_int_equal(q[0].a.seq, 10 + committed + 1);

    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
    free(payload);
    free(q);
}

/* ---- tests: reading ------------------------------------------------------------------- */

/* Writes 30 local events round-robin over channels a, b, c: channel a gets lsns 1, 4, 7... */
static tw_store *open_abc(const struct dir *d, struct coll *c, struct treq *q)
{
    static const char *const chans[] = {"a", "b", "c"};
    tw_store_options o;
    tw_store *s;

    coll_init(c);
    o = base_opts(d, c);
    s = open_ok(&o);
    for (size_t i = 0; i < 30; i++) {
        char data[16];
        snprintf(data, sizeof(data), "%s%zu", chans[i % 3], i / 3);
        req_set(&q[i], chans[i % 3], data);
    }
    submit_wait(s, c, q, 30);
    return s;
}

static void test_read_channel(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    tw_store_reader *r;
    struct got g = {0};
    uint64_t last;
    int head;
    tw_store *s;

    s = open_abc(d, &c, q);
    assert_int_equal(tw_store_reader_new(s, &r), 0);

    /* Everything of "a", in order, nothing of the others. */
    assert_int_equal(read_chan(r, "a", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    for (size_t i = 0; i < 10; i++) {
        char want[8];
        snprintf(want, sizeof(want), "a%zu", i);
        assert_string_equal(g.ev[i].channel, "a");
        assert_string_equal(g.ev[i].data, want);
        assert_int_equal(g.ev[i].lsn, 3 * i + 1);
        assert_int_equal(g.ev[i].seq, 3 * i + 1);
    }
    assert_int_equal(last, 28);
    assert_int_equal(head, 1);

    /* Paging by max_events: at_head only once the channel is exhausted. */
    got_reset(&g);
    assert_int_equal(read_chan(r, "b", 0, 4, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 4);
    assert_int_equal(last, 11);
    assert_int_equal(head, 0);
    got_reset(&g);
    assert_int_equal(read_chan(r, "b", last, 4, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 4);
    assert_int_equal(g.ev[0].lsn, 14);
    assert_int_equal(head, 0);
    got_reset(&g);
    assert_int_equal(read_chan(r, "b", last, 4, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(last, 29);
    assert_int_equal(head, 1);
    /* Exactly the remaining count: the walk still sees that nothing follows. */
    got_reset(&g);
    assert_int_equal(read_chan(r, "b", 23, 2, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(head, 1);

    /* after_lsn between events, at the last event, past the end. */
    got_reset(&g);
    assert_int_equal(read_chan(r, "c", 10, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.ev[0].lsn, 12);
    assert_int_equal(g.n, 7);
    got_reset(&g);
    assert_int_equal(read_chan(r, "c", 30, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(last, 30);
    assert_int_equal(head, 1);
    assert_int_equal(read_chan(r, "c", UINT64_MAX, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 0);
    assert_true(last == UINT64_MAX && head == 1);

    /* max_bytes: data of "a" events is 2 bytes each; 5 bytes pass 2 events; an event
     * bigger than the bound still passes alone. */
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 0, 0, 5, &g, &last, &head), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(last, 4);
    assert_int_equal(head, 0);
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 0, 0, 6, &g, &last, &head), 0);
    assert_int_equal(g.n, 3);
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 0, 0, 1, &g, &last, &head), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(head, 0);

    /* The callback stops the read after the event it was given. */
    got_reset(&g);
    g.stop_after = 3;
    assert_int_equal(read_chan(r, "a", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(last, 7);
    assert_int_equal(head, 0);
    got_reset(&g);
    g.stop_after = 1;
    assert_int_equal(read_chan(r, "a", 25, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(head, 1); /* the last one: nothing follows */

    /* Never written: empty, at head; bad names refused. */
    got_reset(&g);
    assert_int_equal(read_chan(r, "nope", 17, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(last, 17);
    assert_int_equal(head, 1);
    assert_int_equal(tw_store_read_channel(r, "a", 0, 0, 0, 0, got_cb, &g, &last, &head, NULL),
                     TW_STORE_EINVAL);
    assert_int_equal(tw_store_read_channel(r, "a", 1, 0, 0, 0, NULL, &g, &last, &head, NULL),
                     TW_STORE_EINVAL);

    /* A new event shows in the next call (each call reads a fresh snapshot). */
    req_set(&q[0], "a", "new");
    submit_wait(s, &c, q, 1);
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 28, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.ev[0].data, "new");
    assert_int_equal(last, 31);

    tw_store_reader_free(r);
    tw_store_reader_free(NULL);
    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
}

/*
 * A channel's events in runs of consecutive lsns (read by stepping the log cursor) and
 * apart (a positioned get), in one call and across calls and limits; then log records
 * missing where the step would land and at the end of the log.
 */
/* The log read whole, as the loops of a node with --threads follow it: every channel and
 * origin in lsn order, from any point, within the limits. */
static void test_read_log(void **state)
{
    const char *n2 = "n2.0000aaaa";
    struct treq q[30], rq[2];
    struct dir *d = *state;
    struct coll c;
    tw_store_reader *r;
    struct got g = {0};
    uint64_t last;
    tw_store *s;

    s = open_abc(d, &c, q);
    req_remote(&rq[0], "b", n2, 1);
    req_remote(&rq[1], "z", n2, 2);
    submit_wait(s, &c, rq, 2);
    assert_int_equal(tw_store_reader_new(s, &r), 0);

    assert_int_equal(tw_store_read_log(r, 0, 0, 0, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 32);
    assert_int_equal(last, 32);
    for (size_t i = 0; i < 30; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%c%zu", "abc"[i % 3], i / 3);
        assert_int_equal(g.ev[i].lsn, i + 1);
        assert_string_equal(g.ev[i].data, want);
        assert_string_equal(g.ev[i].origin, tw_store_origin(s));
        assert_int_equal(g.ev[i].seq, i + 1);
    }
    assert_string_equal(g.ev[30].origin, n2);
    assert_string_equal(g.ev[30].channel, "b");
    assert_int_equal(g.ev[30].seq, 1);
    assert_string_equal(g.ev[31].channel, "z");
    assert_int_equal(g.ev[31].lsn, 32);

    /* From the middle, at most 4 events; then the rest. */
    got_reset(&g);
    assert_int_equal(tw_store_read_log(r, 10, 4, 0, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 4);
    assert_int_equal(g.ev[0].lsn, 11);
    assert_int_equal(last, 14);
    got_reset(&g);
    assert_int_equal(tw_store_read_log(r, last, 0, 0, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 18);
    assert_int_equal(last, 32);

    /* A byte limit passes at least one event; the callback can stop the read. */
    got_reset(&g);
    assert_int_equal(tw_store_read_log(r, 0, 0, 1, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(last, 1);
    got_reset(&g);
    g.stop_after = 3;
    assert_int_equal(tw_store_read_log(r, 0, 0, 0, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(last, 3);

    /* At the end: nothing, last unchanged. */
    got_reset(&g);
    assert_int_equal(tw_store_read_log(r, 32, 0, 0, got_cb, &g, &last), 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(last, 32);
    assert_int_equal(tw_store_read_log(r, UINT64_MAX, 0, 0, got_cb, &g, &last), 0);
    assert_int_equal(last, UINT64_MAX);
    assert_int_equal(tw_store_read_log(NULL, 0, 0, 0, got_cb, &g, &last), TW_STORE_EINVAL);

    got_free(&g);
    tw_store_reader_free(r);
    tw_store_close(s);
    coll_destroy(&c);
}

static void test_read_channel_log_walk(void **state)
{
    /* x at 1-5, 7-9, 12-13; y at 6, 10-11 */
    static const char *const chans[] = {"x", "x", "x", "x", "x", "y", "x",
                                        "x", "x", "y", "y", "x", "x"};
    static const uint64_t x_lsn[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 13};
    struct treq q[13];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    struct got g = {0};
    uint64_t last, after;
    size_t nx = 0, ny = 0;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi log;
    MDB_val k;
    unsigned char key[8] = {0};
    int head;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    for (size_t i = 0; i < 13; i++) {
        char data[16];
        snprintf(data, sizeof(data), "%s%zu", chans[i], chans[i][0] == 'x' ? nx++ : ny++);
        req_set(&q[i], chans[i], data);
    }
    submit_wait(s, &c, q, 13);
    assert_int_equal(tw_store_reader_new(s, &r), 0);

    /* All at once: runs and jumps give each event once, in order. */
    assert_int_equal(read_chan(r, "x", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    for (size_t i = 0; i < 10; i++) {
        char want[8];
        snprintf(want, sizeof(want), "x%zu", i);
        assert_string_equal(g.ev[i].data, want);
        assert_string_equal(g.ev[i].channel, "x");
        assert_int_equal(g.ev[i].lsn, x_lsn[i]);
    }
    assert_true(last == 13 && head == 1);
    got_reset(&g);
    assert_int_equal(read_chan(r, "y", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.ev[0].lsn, 6);
    assert_int_equal(g.ev[1].lsn, 10);
    assert_int_equal(g.ev[2].lsn, 11);
    assert_string_equal(g.ev[2].data, "y2");

    /* In chunks of every size: the same events, each call starting from a fresh cursor. */
    for (size_t chunk = 1; chunk <= 10; chunk++) {
        size_t n = 0;
        after = 0;
        do {
            got_reset(&g);
            assert_int_equal(read_chan(r, "x", after, chunk, 0, &g, &last, &head), 0);
            for (size_t i = 0; i < g.n; i++, n++) {
                char want[8];
                snprintf(want, sizeof(want), "x%zu", n);
                assert_string_equal(g.ev[i].data, want);
                assert_int_equal(g.ev[i].lsn, x_lsn[n]);
            }
            after = last;
        } while (!head);
        assert_int_equal(n, 10);
    }
    tw_store_reader_free(r);
    tw_store_close(s);

    /* lsn 3 gone (the step from 2 lands on 4) and lsn 13 gone (the step from 12 finds the
     * end of the log): the index and the log disagree. */
    raw_open(d, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, "log", 0, &log), 0);
    k.mv_size = 8;
    k.mv_data = key;
    key[7] = 3;
    assert_int_equal(mdb_del(txn, log, &k, NULL), 0);
    key[7] = 13;
    assert_int_equal(mdb_del(txn, log, &k, NULL), 0);
    raw_commit(env, txn);

    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    got_reset(&g);
    assert_int_equal(read_chan(r, "x", 0, 0, 0, &g, &last, &head), TW_STORE_ECORRUPT);
    assert_int_equal(g.n, 2); /* what came before the hole was passed */
    got_reset(&g);
    assert_int_equal(read_chan(r, "x", 3, 5, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 5);
    assert_int_equal(g.ev[0].lsn, 4);
    assert_int_equal(last, 9);
    got_reset(&g);
    assert_int_equal(read_chan(r, "x", 9, 0, 0, &g, &last, &head), TW_STORE_ECORRUPT);
    got_reset(&g);
    assert_int_equal(read_chan(r, "x", 12, 0, 0, &g, &last, &head), TW_STORE_ECORRUPT);
    got_reset(&g);
    assert_int_equal(read_chan(r, "y", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 3);
    tw_store_reader_free(r);
    tw_store_close(s);

    got_free(&g);
    coll_destroy(&c);
}

static void test_resolve_single_origin(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    tw_store_reader *r;
    tw_store_cursor_entry e[2];
    uint64_t after;
    int rec;
    tw_store *s;

    s = open_abc(d, &c, q);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    e[0].origin = tw_store_origin(s);

    e[0].seq = 0; /* seen nothing: from the first event */
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 1, &after, &rec), 0);
    assert_int_equal(after, 0);
    assert_int_equal(rec, 1);
    e[0].seq = 12; /* middle */
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 1, &after, &rec), 0);
    assert_int_equal(after, 12);
    assert_int_equal(rec, 1);
    e[0].seq = 30; /* at head */
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 1, &after, &rec), 0);
    assert_int_equal(after, 30);
    assert_int_equal(rec, 1);
    e[0].seq = 1000; /* beyond head (seen on a node further ahead): nothing was lost */
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 1, &after, &rec), 0);
    assert_int_equal(after, 30);
    assert_int_equal(rec, 1);

    /* Empty cursor: from the oldest kept. */
    after = 99;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, NULL, 0, &after, &rec), 0);
    assert_int_equal(after, 0);
    assert_int_equal(rec, 1);

    /* An origin this log never knew (say, this node's previous disk): not recovered, and
     * the local origin, absent from the cursor, is read from its start. */
    e[0].origin = "n1.deadbeef";
    e[0].seq = 5;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 1, &after, &rec), 0);
    assert_int_equal(after, 0);
    assert_int_equal(rec, 0);
    e[1].origin = tw_store_origin(s);
    e[1].seq = 20;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 2, &after, &rec), 0);
    assert_int_equal(after, 20);
    assert_int_equal(rec, 0);
    /* ...but one named at seq 0 saw nothing of it, so nothing of it was lost (a peer's
     * origin before it published anything, in a cluster). */
    e[0].seq = 0;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 2, &after, &rec), 0);
    assert_int_equal(after, 20);
    assert_int_equal(rec, 1);
    e[0].seq = 5;
    e[0].origin = "";
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 2, &after, &rec), 0);
    assert_int_equal(rec, 0);
    e[0].origin = NULL;
    assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, 2, &after, &rec), TW_STORE_EINVAL);

    tw_store_reader_free(r);
    tw_store_close(s);
    coll_destroy(&c);
}

/* The model of one event, for the multi-origin property test. */
struct mev {
    int origin; /* 0 local, 1 n2, 2 n3 */
    uint64_t seq, lsn;
    int chan; /* 0 "c", 1 "d" */
};

static void test_multi_origin_cursor(void **state)
{
    enum { N = 90 };
    const char *names[3] = {NULL, "n2.0000aaaa", "n3.0000bbbb"};
    static const char *const chans[2] = {"c", "d"};
    struct treq q[N];
    struct mev m[N];
    uint64_t last_seq[3] = {0, 0, 0};
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    struct got g = {0};
    uint32_t rnd = 12345;
    size_t checked = 0;
    tw_store *s;

    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);
    names[0] = tw_store_origin(s);

    /* Origins interleave in a fixed pseudo-random order over two channels. */
    for (size_t i = 0; i < N; i++) {
        int org, ch;
        rnd = rnd * 1103515245u + 12345u;
        org = (int)((rnd >> 16) % 3);
        ch = (int)((rnd >> 8) % 4 == 0);
        if (org == 0)
            req_set(&q[i], chans[ch], "local");
        else
            req_remote(&q[i], chans[ch], names[org], last_seq[org] + 1);
        last_seq[org]++;
        m[i].origin = org;
        m[i].chan = ch;
    }
    submit_wait(s, &c, q, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.lsn, i + 1);
        m[i].seq = q[i].a.seq;
        m[i].lsn = q[i].a.lsn;
    }
    assert_int_equal(tw_store_reader_new(s, &r), 0);

    /* Every cursor over {absent, 0, a middle seq, head, beyond} for each origin. */
    for (int c0 = -1; c0 < 4; c0++) {
        for (int c1 = -1; c1 < 4; c1++) {
            for (int c2 = -1; c2 < 4; c2++) {
                const int pick[3] = {c0, c1, c2};
                tw_store_cursor_entry e[3];
                uint64_t cur[3], after, min_unseen = UINT64_MAX, last;
                size_t ne = 0, want = 0, j = 0;
                int rec, head;

                for (int k = 0; k < 3; k++) {
                    static const uint64_t frac[4] = {0, 1, 2, 3};
                    uint64_t v = pick[k] < 0    ? 0
                                 : pick[k] == 3 ? last_seq[k] + 7
                                                : last_seq[k] * frac[pick[k]] / 2;
                    cur[k] = v;
                    if (pick[k] >= 0) e[ne++] = (tw_store_cursor_entry){names[k], v};
                }
                assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, ne, &after, &rec), 0);
                if (ne == 0) {
                    assert_int_equal(after, 0);
                    continue;
                }
                assert_int_equal(rec, 1);
                for (size_t i = 0; i < N; i++) {
                    if (m[i].seq > cur[m[i].origin]) {
                        assert_true(m[i].lsn > after); /* nothing unseen is skipped */
                        if (m[i].lsn < min_unseen) min_unseen = m[i].lsn;
                    }
                }
                /* ...and the bound is tight: the read starts at the first unseen event. */
                assert_int_equal(after, min_unseen == UINT64_MAX ? N : min_unseen - 1);

                /* Reading "c" after it and filtering by seq gives exactly the unseen. */
                got_reset(&g);
                assert_int_equal(read_chan(r, "c", after, 0, 0, &g, &last, &head), 0);
                for (size_t i = 0; i < N; i++)
                    if (m[i].chan == 0 && m[i].seq > cur[m[i].origin]) want++;
                for (size_t i = 0; i < g.n; i++) {
                    int org = strcmp(g.ev[i].origin, names[0]) == 0   ? 0
                              : strcmp(g.ev[i].origin, names[1]) == 0 ? 1
                                                                      : 2;
                    assert_string_equal(g.ev[i].origin, names[org]);
                    if (g.ev[i].seq <= cur[org]) continue; /* the caller's filter */
                    while (j < N && !(m[j].chan == 0 && m[j].seq > cur[m[j].origin]))
                        j++;
                    assert_true(j < N);
                    assert_int_equal(g.ev[i].lsn, m[j].lsn);
                    j++;
                    want--;
                }
                assert_int_equal(want, 0);
                checked++;
            }
        }
    }
    assert_int_equal(checked, 5 * 5 * 5 - 1);

    /* tw_store_cursor_at: the cursor of a reader at every position, by brute force, and it
     * resolves back to that position (what a `last: N` subscription reports and later
     * resumes from). */
    for (uint64_t at = 0; at <= N; at++) {
        tw_store_origin_info oi[4];
        size_t no = 0;
        assert_int_equal(tw_store_cursor_at(r, at, oi, 4, &no), 0);
        assert_int_equal(no, 3);
        tw_store_cursor_entry e[3];
        for (size_t k = 0; k < no; k++) {
            int org = strcmp(oi[k].origin, names[0]) == 0   ? 0
                      : strcmp(oi[k].origin, names[1]) == 0 ? 1
                                                            : 2;
            uint64_t want_seq = 0;
            for (size_t i = 0; i < N; i++)
                if (m[i].origin == org && m[i].lsn <= at && m[i].seq > want_seq) want_seq = m[i].seq;
            assert_int_equal(oi[k].last_seq, want_seq);
            e[k] = (tw_store_cursor_entry){oi[k].origin, oi[k].last_seq};
        }
        uint64_t after;
        int rec;
        assert_int_equal(tw_store_resolve_cursor(r, "a", 1, e, no, &after, &rec), 0);
        assert_int_equal(after, at);
        assert_int_equal(rec, 1);
    }

    tw_store_reader_free(r);
    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
}

static void test_channel_tail(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    tw_store_reader *r;
    struct got g = {0};
    uint64_t after, last;
    int head;
    tw_store *s;

    s = open_abc(d, &c, q); /* "c" has lsns 3, 6, ..., 30: the last channel id */
    assert_int_equal(tw_store_reader_new(s, &r), 0);

    assert_int_equal(tw_store_channel_tail(r, "a", 1, 3, &after), 0);
    assert_int_equal(after, 21); /* a's newest three: 22, 25, 28 */
    assert_int_equal(read_chan(r, "a", after, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.ev[0].lsn, 22);

    assert_int_equal(tw_store_channel_tail(r, "c", 1, 1, &after), 0);
    assert_int_equal(after, 29);
    assert_int_equal(tw_store_channel_tail(r, "b", 1, 10, &after), 0);
    assert_int_equal(after, 1); /* exactly all ten: b's first is lsn 2 */
    assert_int_equal(tw_store_channel_tail(r, "b", 1, 11, &after), 0);
    assert_int_equal(after, 0); /* fewer than asked: all of them */
    assert_int_equal(tw_store_channel_tail(r, "b", 1, 0, &after), 0);
    assert_int_equal(after, 29); /* none: after the newest */
    assert_int_equal(tw_store_channel_tail(r, "nope", 4, 5, &after), 0);
    assert_int_equal(after, 0);
    assert_int_equal(tw_store_channel_tail(r, "a", 0, 5, &after), TW_STORE_EINVAL);

    tw_store_reader_free(r);
    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
}

struct thread_read {
    tw_store *s;
    tw_store_reader *r; /* in: the reader to use; out: one made on the thread */
    int rc;
    size_t n;
    uint64_t after;
};

static void *reader_thread(void *arg)
{
    struct thread_read *t = arg;
    struct got g = {0};
    tw_store_cursor_entry e = {tw_store_origin(t->s), 10};
    uint64_t last;
    int head, rec;

    t->rc = read_chan(t->r, "b", 0, 0, 0, &g, &last, &head);
    t->n = g.n;
    if (t->rc == 0) t->rc = tw_store_resolve_cursor(t->r, "a", 1, &e, 1, &t->after, &rec);
    got_free(&g);
    if (t->rc == 0) t->rc = tw_store_reader_new(t->s, &t->r);
    return NULL;
}

static void test_reader_other_thread(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    struct thread_read t;
    struct got g = {0};
    pthread_t th;
    uint64_t last;
    int head;
    tw_store *s;

    s = open_abc(d, &c, q);
    t = (struct thread_read){.s = s};
    assert_int_equal(tw_store_reader_new(s, &t.r), 0);
    tw_store_reader *mine = t.r;

    /* Made here, used there; then made there, used and freed here. */
    assert_int_equal(pthread_create(&th, NULL, reader_thread, &t), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.rc, 0);
    assert_int_equal(t.n, 10);
    assert_int_equal(t.after, 10);
    assert_ptr_not_equal(t.r, mine);
    assert_int_equal(read_chan(mine, "a", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    got_reset(&g);
    assert_int_equal(read_chan(t.r, "c", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    tw_store_reader_free(t.r);
    tw_store_reader_free(mine);

    tw_store_close(s);
    got_free(&g);
    coll_destroy(&c);
}

static void test_reader_slots(void **state)
{
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r[4];
    tw_store *s;
    int i;

    coll_init(&c);
    o = base_opts(d, &c);
    o.max_readers = 3;
    s = open_ok(&o);
    for (i = 0; i < 3; i++)
        assert_int_equal(tw_store_reader_new(s, &r[i]), 0);
    assert_int_equal(tw_store_reader_new(s, &r[3]), TW_STORE_EBUSY);
    tw_store_reader_free(r[0]);
    assert_int_equal(tw_store_reader_new(s, &r[0]), 0);
    for (i = 0; i < 3; i++)
        tw_store_reader_free(r[i]);
    tw_store_close(s);
    coll_destroy(&c);
}

static void test_corrupt_record(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    struct got g = {0};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi log;
    MDB_val k, v;
    unsigned char key[8] = {0}, rec[64];
    uint64_t last;
    int head;
    tw_store *s;

    s = open_abc(d, &c, q);
    tw_store_close(s);

    /* lsn 4 ("a1"): a record version no release wrote; lsn 7 ("a2"): cut short. */
    raw_open(d, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, "log", 0, &log), 0);
    k.mv_size = 8;
    k.mv_data = key;
    key[7] = 4;
    assert_int_equal(mdb_get(txn, log, &k, &v), 0);
    assert_true(v.mv_size <= sizeof(rec));
    memcpy(rec, v.mv_data, v.mv_size);
    rec[0] = 9;
    v.mv_data = rec;
    assert_int_equal(mdb_put(txn, log, &k, &v, 0), 0);
    key[7] = 7;
    v.mv_size = 5;
    assert_int_equal(mdb_put(txn, log, &k, &v, 0), 0);
    raw_commit(env, txn);

    o = base_opts(d, &c);
    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_chan(r, "a", 0, 0, 0, &g, &last, &head), TW_STORE_ECORRUPT);
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 4, 0, 0, &g, &last, &head), TW_STORE_ECORRUPT);
    got_reset(&g);
    assert_int_equal(read_chan(r, "a", 7, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 7);
    got_reset(&g);
    assert_int_equal(read_chan(r, "b", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, 10);
    tw_store_reader_free(r);
    tw_store_close(s);

    got_free(&g);
    coll_destroy(&c);
}

/* ---- tests: closing, stats ------------------------------------------------------------ */

struct closer {
    tw_store *s;
};

static void *closer_main(void *arg)
{
    tw_store_close(((struct closer *)arg)->s);
    return NULL;
}

static void test_close_drains(void **state)
{
    enum { QUEUED = 100, PROBES = 5000 };
    struct treq *q = calloc(1 + QUEUED + PROBES, sizeof(*q));
    struct dir *d = *state;
    struct coll c;
    tw_store_options o;
    tw_store_reader *r;
    struct closer cl;
    struct got g = {0};
    pthread_t th;
    uint64_t last;
    size_t accepted, p;
    int head, rc = 0;
    tw_store *s;

    assert_non_null(q);
    coll_init(&c);
    o = base_opts(d, &c);
    s = open_ok(&o);

    /* Stall the writer in its first completion, queue more, then close behind them. */
    c.gate_armed = 1;
    req_set(&q[0], "q", "first");
    assert_int_equal(tw_store_submit(s, &q[0].a), 0);
    assert_true(coll_wait_gate(&c));
    for (size_t i = 1; i <= QUEUED; i++) {
        req_set(&q[i], "q", "queued");
        assert_int_equal(tw_store_submit(s, &q[i].a), 0);
    }
    cl.s = s;
    assert_int_equal(pthread_create(&th, NULL, closer_main, &cl), 0);
    /* Submits still succeed until close has begun, then report ECLOSED. The store cannot
     * be freed before the gate opens, so probing it here is safe. */
    for (p = 1 + QUEUED; p < 1 + QUEUED + PROBES; p++) {
        req_set(&q[p], "q", "probe");
        rc = tw_store_submit(s, &q[p].a);
        if (rc != 0) break;
        usleep(1000);
    }
    assert_int_equal(rc, TW_STORE_ECLOSED);
    accepted = p;
    coll_open_gate(&c);
    assert_int_equal(pthread_join(th, NULL), 0);

    /* close returned after every accepted request completed, committed. */
    assert_int_equal(c.done, accepted);
    for (size_t i = 0; i < accepted; i++) {
        assert_int_equal(q[i].completions, 1);
        assert_int_equal(q[i].a.status, 0);
        assert_int_equal(q[i].a.seq, i + 1);
    }
    assert_int_equal(q[accepted].completions, 0);

    s = open_ok(&o);
    assert_int_equal(tw_store_reader_new(s, &r), 0);
    assert_int_equal(read_chan(r, "q", 0, 0, 0, &g, &last, &head), 0);
    assert_int_equal(g.n, accepted);
    tw_store_reader_free(r);
    tw_store_close(s);

    got_free(&g);
    coll_destroy(&c);
    free(q);
}

static void test_stats(void **state)
{
    struct treq q[30];
    struct dir *d = *state;
    struct coll c;
    tw_store_stats st;
    uint64_t sum = 0;
    tw_store *s;

    s = open_abc(d, &c, q);
    req_set(&q[0], "a", "12345");
    submit_wait(s, &c, q, 1);

    tw_store_get_stats(s, &st);
    assert_int_equal(st.commits, c.calls);
    assert_int_equal(st.commit_failures, 0);
    assert_int_equal(st.events_appended, 31);
    /* 30 events of 1 + 2 bytes, one of 1 + 5 */
    assert_int_equal(st.bytes_appended, 30 * 3 + 6);
    assert_int_equal(st.last_lsn, 31);
    assert_int_equal(st.queue_bytes, 0);
    assert_int_equal(st.map_size, 64u << 20);
    assert_true(st.used_bytes > 0 && st.used_bytes < st.map_size);
    for (int i = 0; i < 12; i++)
        sum += st.commit_us_buckets[i];
    assert_int_equal(sum, st.commits);
    assert_true(st.commit_us_max > 0);
    assert_true(st.commit_us_total >= st.commit_us_max);
    for (int i = 1; i < 11; i++)
        assert_true(tw_store_commit_us_bounds[i] > tw_store_commit_us_bounds[i - 1]);

    tw_store_close(s);
    coll_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_strerror, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_open_create_reopen, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_open_invalid, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_open_mismatch, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_open_version, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_append_local, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_threads, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_batch_split, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_durable, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_remote_origins, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_remote_after_trim, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_refused_requests, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_ebusy, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_map_full, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_writes_ahead_of_lmdb, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_read_channel, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_read_channel_log_walk, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_read_log, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_resolve_single_origin, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_multi_origin_cursor, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_channel_tail, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_reader_other_thread, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_reader_slots, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_stats, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
