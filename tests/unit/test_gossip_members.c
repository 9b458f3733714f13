/*
 * test_gossip_members.c — gossip/members.c with a fake clock: alive -> suspect -> dead,
 * back to alive when heard, "left" and a restart after it, seeds named by their first
 * message, seeds reached under another address folded by alias, members learned from a
 * peer's list, quorum arithmetic.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gossip_int.h"

static int released;

static void release(void *arg, void *dial)
{
    (void)arg;
    (void)dial;
    released++;
}

static struct tw_gossip__heard heard(const char *name, const char *addr, uint64_t inc,
                                     uint8_t state)
{
    struct tw_gossip__heard h = {0};
    h.name = name;
    h.origin = name[1] == '2' ? "n2.00000002" : "n3.00000003";
    h.addr = addr;
    h.incarnation = inc;
    h.state = state;
    return h;
}

static void test_failure_detection(void **state)
{
    struct tw_gossip__members mt;
    struct tw_gossip__member *m;
    struct tw_gossip__heard h = heard("n2", "tcp://127.0.0.1:24002", 100, TW_MEMBER_ALIVE);

    (void)state;
    tw_gossip__members_init(&mt, "n1");
    assert_int_equal(tw_gossip__members_add_seed(&mt, "tcp://127.0.0.1:24002", 1000), 0);
    assert_int_equal(tw_gossip__members_add_seed(&mt, "tcp://127.0.0.1:24002", 1000), 0);
    assert_int_equal(mt.n, 1);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 2); /* an unnamed seed counts */

    /* a seed never heard goes suspect, then dead, timed from when it was learned */
    assert_int_equal(tw_gossip__members_tick(&mt, 1100, 200, 500), 0);
    assert_int_equal(tw_gossip__members_tick(&mt, 1200, 200, 500), TW_GOSSIP__CHANGED);
    assert_int_equal(mt.v[0]->state, TW_MEMBER_SUSPECT);
    assert_int_equal(tw_gossip__members_tick(&mt, 1500, 200, 500), TW_GOSSIP__CHANGED);
    assert_int_equal(mt.v[0]->state, TW_MEMBER_DEAD);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 2); /* dead still counts */

    /* its first message names it and brings it back */
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 2000, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_non_null(m);
    assert_int_equal(mt.n, 1);
    assert_string_equal(m->name, "n2");
    assert_string_equal(m->origin, "n2.00000002");
    assert_int_equal(m->state, TW_MEMBER_ALIVE);
    assert_int_equal(m->last_heard_ms, 2000);
    assert_true(m->from_seed);
    /* heard again, nothing changes */
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 2100, &m, release, NULL), 0);
    assert_int_equal(tw_gossip__members_tick(&mt, 2299, 200, 500), 0);
    assert_int_equal(tw_gossip__members_tick(&mt, 2300, 200, 500), TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_SUSPECT);
    /* a healed partition: heard while suspect -> alive */
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 2400, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_ALIVE);
    assert_int_equal(tw_gossip__members_tick(&mt, 2900, 200, 500), TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_DEAD);
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 3000, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_ALIVE);

    /* a message from an older incarnation is ignored */
    h.incarnation = 50;
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 3100, &m, release, NULL), 0);
    assert_null(m); /* nothing of it is to be used */
    assert_int_equal(mt.v[0]->last_heard_ms, 3000);

    /* our own name is never a member */
    h = heard("n1", "tcp://127.0.0.1:24001", 1, TW_MEMBER_ALIVE);
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 3100, &m, release, NULL), 0);
    assert_null(m);
    assert_int_equal(mt.n, 1);
    tw_gossip__members_free(&mt);
}

static void test_left_and_restart(void **state)
{
    struct tw_gossip__members mt;
    struct tw_gossip__member *m;
    struct tw_gossip__heard h = heard("n2", "tcp://127.0.0.1:24002", 100, TW_MEMBER_ALIVE);

    (void)state;
    tw_gossip__members_init(&mt, "n1");
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 1000, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 2);
    m->acked = 17;
    /* it drains: left, not counted, never timed out */
    h.state = TW_MEMBER_LEFT;
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 1100, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_LEFT);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 1);
    assert_int_equal(tw_gossip__members_tick(&mt, 100000, 200, 500), 0);
    assert_int_equal(m->state, TW_MEMBER_LEFT);
    /* a late heartbeat of the same life saying alive does not undo "left" */
    h.state = TW_MEMBER_ALIVE;
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 100100, &m, release, NULL), 0);
    assert_int_equal(m->state, TW_MEMBER_LEFT);
    /* restarted: a new incarnation comes back alive, acks start over */
    h.incarnation = 200;
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 100200, &m, release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(m->state, TW_MEMBER_ALIVE);
    assert_int_equal(m->acked, 0);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 2);

    /* second-hand "left" counts only for the current incarnation */
    {
        tw_gw_member e = {"n2", "tcp://127.0.0.1:24002", TW_MEMBER_LEFT, 100};
        assert_int_equal(tw_gossip__members_learn(&mt, &e, 100300), 0);
        assert_int_equal(m->state, TW_MEMBER_ALIVE);
        e.incarnation = 200;
        assert_int_equal(tw_gossip__members_learn(&mt, &e, 100300), TW_GOSSIP__CHANGED);
        assert_int_equal(m->state, TW_MEMBER_LEFT);
    }
    tw_gossip__members_free(&mt);
}

static void test_learning_and_aliases(void **state)
{
    struct tw_gossip__members mt;
    struct tw_gossip__member *m;
    struct tw_gossip__heard h = heard("n3", "tcp://127.0.0.1:24003", 7, TW_MEMBER_ALIVE);
    const char aliases[1][TW_GOSSIP_ADDR_MAX + 1] = {"tcp://localhost:24003"};
    tw_gw_member e = {"n2", "tcp://127.0.0.1:24002", TW_MEMBER_ALIVE, 3};

    (void)state;
    tw_gossip__members_init(&mt, "n1");
    /* a seed under a name the node does not use for itself */
    assert_int_equal(tw_gossip__members_add_seed(&mt, "tcp://localhost:24003", 0), 0);
    mt.v[0]->dial = (void *)&h; /* any non-NULL: released when merged away */
    /* learned from a peer's list: a new member, alive until it fails to show up */
    assert_int_equal(tw_gossip__members_learn(&mt, &e, 10), TW_GOSSIP__CHANGED);
    assert_int_equal(mt.n, 2);
    assert_int_equal(tw_gossip__members_learn(&mt, &e, 10), 0);
    /* never-met members reported left are not members */
    {
        tw_gw_member gone = {"n9", "tcp://127.0.0.1:24009", TW_MEMBER_LEFT, 1};
        tw_gw_member self = {"n1", "tcp://127.0.0.1:24001", TW_MEMBER_ALIVE, 1};
        assert_int_equal(tw_gossip__members_learn(&mt, &gone, 10), 0);
        assert_int_equal(tw_gossip__members_learn(&mt, &self, 10), 0);
        assert_int_equal(mt.n, 2);
    }
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 3);
    /* n3 speaks from its own address and says it is also reached as localhost:24003: the
     * unnamed seed is folded into it, so the cluster does not look bigger than it is */
    released = 0;
    h.aliases = aliases;
    h.naliases = 1;
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 20, &m, release, NULL), TW_GOSSIP__CHANGED);
    assert_int_equal(released, 1);
    assert_int_equal(mt.n, 2);
    assert_string_equal(m->name, "n3");
    assert_true(m->from_seed);
    assert_int_equal(tw_gossip__members_cluster_size(&mt), 3);
    assert_ptr_equal(tw_gossip__members_find(&mt, "n3"), m);
    assert_null(tw_gossip__members_find(&mt, "n4"));
    /* a seed that was ourselves */
    assert_int_equal(tw_gossip__members_add_seed(&mt, "tcp://me:24001", 0), 0);
    assert_int_equal(tw_gossip__members_drop_addr(&mt, "tcp://me:24001", release, NULL),
                     TW_GOSSIP__CHANGED);
    assert_int_equal(mt.n, 2);
    /* an address change is reported (the dial follows) */
    h.addr = "tcp://127.0.0.1:24033";
    assert_int_equal(tw_gossip__members_heard(&mt, &h, 30, &m, release, NULL), TW_GOSSIP__CHANGED);
    assert_string_equal(m->addr, "tcp://127.0.0.1:24033");
    /* digests grow on demand */
    assert_int_equal(tw_gossip__member_set_digest(m, 20, 5), 0);
    assert_true(m->ndigest > 20);
    assert_int_equal(m->digest[20], 5);
    assert_int_equal(m->digest[3], 0);
    tw_gossip__members_free(&mt);
}

static void test_quorum(void **state)
{
    uint64_t a1[] = {10};
    uint64_t a3[] = {10, 0, 7};
    uint64_t a3b[] = {10, 0, 0};
    uint64_t a4[] = {10, 9, 8, 0}; /* majority of 4 is 3 */
    uint64_t a5[] = {3, 10, 9, 1, 2};

    (void)state;
    assert_int_equal(tw_gossip__quorum_seq(a1, 1), 10);
    assert_int_equal(tw_gossip__quorum_seq(a3, 3), 7);
    assert_int_equal(tw_gossip__quorum_seq(a3b, 3), 0);
    assert_int_equal(tw_gossip__quorum_seq(a4, 4), 8);
    assert_int_equal(tw_gossip__quorum_seq(a5, 5), 3);
    assert_int_equal(tw_gossip__quorum_seq(NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failure_detection),
        cmocka_unit_test(test_left_and_restart),
        cmocka_unit_test(test_learning_and_aliases),
        cmocka_unit_test(test_quorum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
