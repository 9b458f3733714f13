/* Unit tests of broker/presence.c: the members table and the messages in both encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "presence.h"

static void test_members(void **state)
{
    tw_presence *p = tw_presence_new();
    struct tw_session *a = (struct tw_session *)0x10, *b = (struct tw_session *)0x20,
                      *c = (struct tw_session *)0x30;
    struct tw_session *const *m;
    assert_int_equal(tw_presence_members(p, "room", 4, &m), 0);
    for (int i = 0; i < 20; i++) /* growth */
        assert_int_equal(tw_presence_add(p, "big", 3, (struct tw_session *)(uintptr_t)(i + 1)), 0);
    assert_int_equal(tw_presence_add(p, "room", 4, a), 0);
    assert_int_equal(tw_presence_add(p, "room", 4, b), 0);
    assert_int_equal(tw_presence_add(p, "room", 4, c), 0);
    assert_int_equal(tw_presence_add(p, "roo", 3, a), 0);
    assert_int_equal(tw_presence_members(p, "room", 4, &m), 3);
    assert_int_equal(tw_presence_remove(p, "room", 4, b), 1);
    assert_int_equal(tw_presence_remove(p, "room", 4, b), 0);
    assert_int_equal(tw_presence_members(p, "room", 4, &m), 2);
    assert_ptr_equal(m[0], a); /* join order kept */
    assert_ptr_equal(m[1], c);
    assert_int_equal(tw_presence_remove(p, "room", 4, a), 1);
    assert_int_equal(tw_presence_remove(p, "room", 4, c), 1);
    assert_int_equal(tw_presence_members(p, "room", 4, &m), 0);
    assert_int_equal(tw_presence_members(p, "roo", 3, &m), 1);
    assert_int_equal(tw_presence_remove(NULL, "x", 1, a), 0);
    tw_presence_free(p); /* with entries left */
}

static void test_messages(void **state)
{
    tw_member ms[2] = {{"alice", "n1", "7"}, {NULL, "n1", "8"}};
    int64_t id = 5;
    tw_buf b;
    tw_buf_init(&b, 0);
    assert_int_equal(tw_presence_encode(&b, TW_ENC_JSON, &id, "room:\"1\"", 8, ms, 2), 0);
    cJSON *j = cJSON_ParseWithLength((const char *)tw_buf_data(&b), b.len);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "op")->valuestring, "presence");
    assert_int_equal(cJSON_GetObjectItem(j, "id")->valueint, 5);
    assert_string_equal(cJSON_GetObjectItem(j, "channel")->valuestring, "room:\"1\"");
    cJSON *arr = cJSON_GetObjectItem(j, "members");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "user")->valuestring,
                        "alice");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "user")));
    cJSON_Delete(j);

    tw_buf_reset(&b, 0);
    assert_int_equal(tw_presence_encode_change(&b, TW_ENC_MSGPACK, "leave", "r", 1, &ms[0]), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)tw_buf_data(&b), b.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b.len);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(u.data.via.map.size, 5);
    msgpack_unpacked_destroy(&u);

    tw_buf_reset(&b, 0);
    assert_int_equal(tw_presence_encode_refreshed(&b, TW_ENC_JSON, NULL, 1900000000), 0);
    assert_int_equal(b.len, strlen("{\"op\":\"refreshed\",\"exp\":1900000000}"));
    assert_memory_equal(tw_buf_data(&b), "{\"op\":\"refreshed\",\"exp\":1900000000}", b.len);

    tw_buf_reset(&b, 0);
    assert_int_equal(tw_presence_json(&b, "r", 1, NULL, 0), 0);
    assert_memory_equal(tw_buf_data(&b), "{\"channel\":\"r\",\"members\":[]}\n", b.len);
    tw_buf_free(&b);
}

struct seen {
    int n;
    char last[64];
};

static void count_gone(void *arg, const char *channel, size_t len, const tw_member *m)
{
    struct seen *s = arg;
    s->n++;
    snprintf(s->last, sizeof s->last, "%.*s/%s/%s", (int)len, channel, m->node, m->conn);
}

/* Members on other nodes: known once, refreshed by generation, retired by a sweep. */
static void test_remote_members(void **state)
{
    tw_presence *p = tw_presence_new();
    tw_member x = {"alice", "n2", "7"}, y = {NULL, "n2", "8"}, z = {"bob", "n3", "7"};
    assert_int_equal(tw_presence_remote_add(p, "room", 4, &x, 1), 1);
    assert_int_equal(tw_presence_remote_add(p, "room", 4, &x, 1), 0); /* known: no new join */
    assert_int_equal(tw_presence_remote_add(p, "room", 4, &y, 1), 1);
    assert_int_equal(tw_presence_remote_add(p, "room", 4, &z, 1), 1); /* same conn, other node */
    assert_int_equal(tw_presence_remote_add(p, "hall", 4, &x, 1), 1);

    tw_member *m;
    size_t n = tw_presence_list(p, "room", 4, "n1", &m);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].user, "alice");
    assert_null(m[1].user);
    assert_string_equal(m[2].node, "n3");
    free(m);
    assert_int_equal(tw_presence_list(p, "nowhere", 7, "n1", &m), 0);
    assert_null(m);

    /* n2 sends a snapshot (generation 2) that still has conn 8 but not conn 7: the sweep
     * of older generations retires conn 7 in both channels, telling the callback. */
    struct seen s = {0};
    assert_int_equal(tw_presence_remote_add(p, "room", 4, &y, 2), 0);
    tw_presence_remote_sweep(p, "n2", 2, count_gone, &s);
    assert_int_equal(s.n, 2);
    n = tw_presence_list(p, "room", 4, "n1", &m);
    assert_int_equal(n, 2);
    free(m);
    assert_int_equal(tw_presence_list(p, "hall", 4, "n1", &m), 0); /* entry freed */

    /* A delta leave, then the whole node dies. */
    s.n = 0;
    assert_int_equal(tw_presence_remote_remove(p, "room", 4, "n3", "7", count_gone, &s), 1);
    assert_string_equal(s.last, "room/n3/7");
    assert_int_equal(tw_presence_remote_remove(p, "room", 4, "n3", "7", count_gone, &s), 0);
    tw_presence_remote_sweep(p, "n2", UINT64_MAX, count_gone, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(tw_presence_list(p, "room", 4, "n1", &m), 0);
    tw_presence_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_remote_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
