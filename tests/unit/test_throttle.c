/* Unit tests of broker/throttle.c: the token bucket and the per-IP table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "throttle.h"

static void test_bucket(void **state)
{
    tw_bucket b;
    tw_bucket_init(&b, 3, 1000);
    /* a full bucket gives its burst at once, then nothing */
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1000), 1);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1000), 1);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1000), 1);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1000), 0);
    /* 10 per second: one token every 100 ms */
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1050), 0);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1100), 1);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 1100), 0);
    /* a long quiet spell refills to the burst, no more */
    for (int i = 0; i < 3; i++)
        assert_int_equal(tw_bucket_take(&b, 10, 3, 100000), 1);
    assert_int_equal(tw_bucket_take(&b, 10, 3, 100000), 0);
    /* a clock that goes back takes nothing and gives nothing */
    assert_int_equal(tw_bucket_take(&b, 10, 3, 50), 0);
}

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static void test_connections_per_ip(void **state)
{
    tw_iplimits *l = tw_iplimits_new(2, 0);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    tw_ip *h1, *h2, *h3, *hb;
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h1), TW_IP_OK);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h2), TW_IP_OK);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h3), TW_IP_TOO_MANY);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&b, 0, &hb), TW_IP_OK);
    tw_iplimits_release(l, h1);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h3), TW_IP_OK);
    /* the same address as IPv4-mapped IPv6 is the same client */
    struct sockaddr_in6 m;
    memset(&m, 0, sizeof m);
    m.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &m.sin6_addr);
    tw_ip *hm;
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&m, 0, &hm), TW_IP_TOO_MANY);
    assert_int_equal(tw_iplimits_size(l), 2);
    tw_iplimits_release(l, h2);
    tw_iplimits_release(l, h3);
    tw_iplimits_release(l, hb);
    tw_iplimits_sweep(l, 1);
    assert_int_equal(tw_iplimits_size(l), 0);
    tw_iplimits_free(l);
}

static void test_new_connections_per_second(void **state)
{
    tw_iplimits *l = tw_iplimits_new(0, 2);
    struct sockaddr_in a = v4("192.0.2.7");
    tw_ip *h[4];
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h[0]), TW_IP_OK);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h[1]), TW_IP_OK);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 0, &h[2]), TW_IP_TOO_FAST);
    tw_iplimits_release(l, h[0]);
    tw_iplimits_release(l, h[1]);
    /* closing fast does not earn a fresh burst: the entry stays until its bucket refills */
    tw_iplimits_sweep(l, 10);
    assert_int_equal(tw_iplimits_size(l), 1);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 10, &h[2]), TW_IP_TOO_FAST);
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 500, &h[2]), TW_IP_OK);
    tw_iplimits_release(l, h[2]);
    tw_iplimits_sweep(l, 2000);
    assert_int_equal(tw_iplimits_size(l), 0);
    /* entries still held at shutdown are freed with the table */
    assert_int_equal(tw_iplimits_admit(l, (struct sockaddr *)&a, 3000, &h[3]), TW_IP_OK);
    tw_iplimits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_connections_per_ip),
        cmocka_unit_test(test_new_connections_per_second),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
