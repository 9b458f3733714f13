/*
 * test_store_origin.c — tw_store_read_origin(): one origin's events in seq order through
 * the origin index, with the limits and conventions of tw_store_read_channel(), against a
 * real LMDB environment in a scratch dir ($TW_TEST_TMP/storeo-XXXXXX).
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

#include "scratch.h"
#include "store.h"

struct fx {
    char root[PATH_MAX];
    char data[PATH_MAX + 8];
    tw_store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done;
    int failed;
};

static void on_commit(void *arg, tw_store_append *done)
{
    struct fx *f = arg;

    pthread_mutex_lock(&f->mu);
    for (; done; done = done->next) {
        if (done->status != 0) f->failed++;
        f->done++;
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    tw_store_options o = {0};

    if (!f) return -1;
    if (scratch_make(f->root, sizeof(f->root), "storeo") != 0) goto out_free;
    snprintf(f->data, sizeof(f->data), "%s/data", f->root);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    o.path = f->data;
    o.node_name = "n1";
    o.map_size = 64 << 20;
    o.on_commit = on_commit;
    o.cb_arg = f;
    if (tw_store_open(&f->s, &o) != 0) goto out_free;
    *state = f;
    return 0;

out_free:
    free(f);
    return -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    int rc;

    tw_store_close(f->s);
    rc = scratch_remove(f->root);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return rc;
}

/* Appends one event (origin NULL: local) and waits for its commit. */
static void append(struct fx *f, const char *origin, uint64_t seq, const char *chan,
                   const char *data)
{
    tw_store_append a = {0};
    size_t want;

    a.channel = chan;
    a.channel_len = strlen(chan);
    a.data = data;
    a.data_len = strlen(data);
    a.origin = origin;
    a.seq = seq;
    a.ts_ms = origin ? 1000 + (int64_t)seq : 0;
    pthread_mutex_lock(&f->mu);
    want = f->done + 1;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(tw_store_submit(f->s, &a), 0);
    pthread_mutex_lock(&f->mu);
    while (f->done < want)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(a.status, 0);
}

struct seen {
    uint64_t seq[64];
    char data[64][16];
    size_t n;
    size_t stop_after; /* 0: never stop */
    char origin[TW_STORE_ORIGIN_MAX + 1];
};

static int collect(void *arg, const tw_store_event *ev)
{
    struct seen *s = arg;

    if (s->n < 64) {
        s->seq[s->n] = ev->seq;
        snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)ev->data_len,
                 (const char *)ev->data);
        snprintf(s->origin, sizeof(s->origin), "%s", ev->origin);
    }
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

/* A log with the local origin and two remote ones interleaved across channels. */
static void fill(struct fx *f)
{
    char d[16];

    for (int i = 1; i <= 10; i++) {
        snprintf(d, sizeof d, "l%d", i);
        append(f, NULL, 0, i % 2 ? "a" : "b", d);
        snprintf(d, sizeof d, "x%d", i);
        append(f, "n2.aaaa0001", (uint64_t)i, "a", d);
        if (i <= 5) {
            snprintf(d, sizeof d, "y%d", i);
            append(f, "n3.bbbb0002", (uint64_t)i, "c", d);
        }
    }
}

static void test_reads_one_origin_in_order(void **state)
{
    struct fx *f = *state;
    tw_store_reader *r;
    struct seen s = {0};
    uint64_t last = 99;

    fill(f);
    assert_int_equal(tw_store_reader_new(f->s, &r), 0);
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 1, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 10);
    for (size_t i = 0; i < 10; i++) {
        char d[16];
        snprintf(d, sizeof d, "x%zu", i + 1);
        assert_int_equal(s.seq[i], i + 1);
        assert_string_equal(s.data[i], d);
    }
    assert_string_equal(s.origin, "n2.aaaa0001");
    assert_int_equal(last, 10);

    /* the local origin, from the middle; from_seq 0 reads like 1 */
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, tw_store_origin(f->s), 7, 0, 0, collect, &s, &last),
                     0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.seq[0], 7);
    assert_string_equal(s.data[3], "l10");
    assert_int_equal(last, 10);
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, "n3.bbbb0002", 0, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 5);
    assert_int_equal(last, 5);
    tw_store_reader_free(r);
}

static void test_limits_and_edges(void **state)
{
    struct fx *f = *state;
    tw_store_reader *r;
    struct seen s = {0};
    uint64_t last = 0;

    fill(f);
    assert_int_equal(tw_store_reader_new(f->s, &r), 0);
    /* max_events */
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 3, 4, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(last, 6);
    /* max_bytes: each data is 2-3 bytes; 5 bytes pass two events ("x1","x2"), and a limit
     * below one event still passes one */
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 1, 0, 5, collect, &s, &last), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(last, 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 1, 0, 1, collect, &s, &last), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(last, 1);
    /* the callback stops the read after the event it was given */
    memset(&s, 0, sizeof s);
    s.stop_after = 3;
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 1, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(last, 3);
    /* past the end, an unknown origin: empty, last = from_seq - 1 */
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, "n2.aaaa0001", 11, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(last, 10);
    assert_int_equal(tw_store_read_origin(r, "nope.00000000", 5, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(last, 4);
    /* the last origin's entries end the walk (no spill into another origin's oidx rows) */
    memset(&s, 0, sizeof s);
    assert_int_equal(tw_store_read_origin(r, "n3.bbbb0002", 5, 0, 0, collect, &s, &last), 0);
    assert_int_equal(s.n, 1);
    /* bad arguments */
    assert_int_equal(tw_store_read_origin(NULL, "a", 1, 0, 0, collect, &s, &last), TW_STORE_EINVAL);
    assert_int_equal(tw_store_read_origin(r, "", 1, 0, 0, collect, &s, &last), TW_STORE_EINVAL);
    assert_int_equal(tw_store_read_origin(r, "a", 1, 0, 0, NULL, &s, &last), TW_STORE_EINVAL);
    assert_int_equal(tw_store_read_origin(r, "a", 1, 0, 0, collect, &s, NULL), TW_STORE_EINVAL);
    {
        char longo[TW_STORE_ORIGIN_MAX + 2];
        memset(longo, 'o', sizeof longo - 1);
        longo[sizeof longo - 1] = '\0';
        assert_int_equal(tw_store_read_origin(r, longo, 1, 0, 0, collect, &s, &last),
                         TW_STORE_EINVAL);
    }
    tw_store_reader_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_one_origin_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_and_edges, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
