/*
 * test_bell.c — the loop's bell (broker/bell.h): rings from other threads wake the loop,
 * rings coalesce, and none is lost: whatever a thread hands over before ringing, the loop
 * sees in a callback that runs after the ring, however the two interleave.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "bell.h"

#define RINGS 200000
#define RINGERS 3

struct state {
    tw_bell bell;
    uv_timer_t deadline;
    _Atomic uint64_t handed; /* what the ringers handed over (a count) */
    uint64_t seen;           /* loop thread: the count its last callback found */
    uint64_t callbacks;
    int done;
};

static void on_ring(tw_bell *b)
{
    struct state *st = b->data;
    st->callbacks++;
    st->seen = atomic_load(&st->handed); /* "take the list" */
    if (st->seen == (uint64_t)RINGS * RINGERS) {
        st->done = 1;
        tw_bell_close(&st->bell);
        uv_close((uv_handle_t *)&st->deadline, NULL);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct state *st = t->data;
    tw_bell_close(&st->bell);
    uv_close((uv_handle_t *)&st->deadline, NULL);
}

static void *ringer(void *arg)
{
    struct state *st = arg;
    for (int i = 0; i < RINGS; i++) {
        atomic_fetch_add(&st->handed, 1); /* hand over, then ring */
        tw_bell_ring(&st->bell);
        if (i % 256 == 0) sched_yield(); /* let the loop interleave with the rings */
    }
    return NULL;
}

/* Every hand-over is seen, and far fewer callbacks run than rings were made. */
static void test_no_ring_is_lost(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct state st = {0};
    pthread_t t[RINGERS];

    assert_int_equal(uv_loop_init(&loop), 0);
    st.bell.data = &st;
    assert_int_equal(tw_bell_init(&loop, &st.bell, on_ring), 0);
    uv_timer_init(&loop, &st.deadline);
    st.deadline.data = &st;
    uv_timer_start(&st.deadline, on_deadline, 30000, 0);
    for (int i = 0; i < RINGERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, ringer, &st), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* ends once both handles are closed */
    for (int i = 0; i < RINGERS; i++)
        pthread_join(t[i], NULL);
    assert_true(st.done);
    assert_int_equal(st.seen, (uint64_t)RINGS * RINGERS);
    assert_true(st.callbacks > 1 && st.callbacks < (uint64_t)RINGS * RINGERS);
    assert_int_equal(st.bell.fd, -1); /* closed with its handle */
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A ring while nobody runs the loop is kept: the next run answers it. */
static void test_ring_before_the_loop_runs(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct state st = {0};

    assert_int_equal(uv_loop_init(&loop), 0);
    st.bell.data = &st;
    assert_int_equal(tw_bell_init(&loop, &st.bell, on_ring), 0);
    atomic_store(&st.handed, (uint64_t)RINGS * RINGERS);
    tw_bell_ring(&st.bell);
    tw_bell_ring(&st.bell); /* coalesces with the first */
    uv_timer_init(&loop, &st.deadline);
    st.deadline.data = &st;
    uv_timer_start(&st.deadline, on_deadline, 10000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(st.done);
    assert_int_equal(st.callbacks, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_ring_is_lost),
        cmocka_unit_test(test_ring_before_the_loop_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
