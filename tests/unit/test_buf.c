/* test_buf.c — broker/buf.c: growth, headroom, printf, JSON string escaping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void assert_buf(const tw_buf *b, const char *want)
{
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(tw_buf_data(b), want, b->len);
}

static void test_empty(void **state)
{
    tw_buf b;
    tw_buf_init(&b, 10);
    assert_null(tw_buf_data(&b));
    assert_int_equal(b.len, 0);
    assert_int_equal(b.head, 10);
    tw_buf_free(&b);
    tw_buf_free(&b); /* safe twice */
    assert_null(b.base);
}

static void test_append_grow(void **state)
{
    tw_buf b;
    tw_buf_init(&b, TW_BUF_FRAME_HEADROOM);
    assert_int_equal(tw_buf_append(&b, "", 0), 0);
    char want[10000];
    for (size_t i = 0; i < sizeof want; i++) {
        want[i] = (char)('a' + i % 26);
        assert_int_equal(tw_buf_putc(&b, want[i]), 0);
    }
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(tw_buf_data(&b), want, sizeof want);
    assert_int_equal(b.head, TW_BUF_FRAME_HEADROOM);
    assert_true(b.head + b.len <= b.cap);
    assert_int_equal(tw_buf_append_str(&b, "xyz"), 0);
    assert_memory_equal(tw_buf_data(&b) + sizeof want, "xyz", 3);
    tw_buf_free(&b);
}

static void test_reserve_overflow(void **state)
{
    tw_buf b;
    tw_buf_init(&b, 4);
    assert_int_equal(tw_buf_append_str(&b, "abc"), 0);
    uint8_t *base = b.base;
    size_t cap = b.cap;
    assert_int_equal(tw_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(tw_buf_reserve(&b, SIZE_MAX - 6), -ENOMEM);
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.cap, cap);
    assert_buf(&b, "abc");
    tw_buf_free(&b);
}

static void test_prepend(void **state)
{
    tw_buf b;
    tw_buf_init(&b, 4);
    /* a buffer that never held data still has its headroom */
    assert_int_equal(tw_buf_prepend(&b, "hi", 2), 0);
    assert_buf(&b, "hi");
    assert_int_equal(tw_buf_append_str(&b, " there"), 0);
    assert_int_equal(tw_buf_prepend(&b, "AB", 2), 0);
    assert_buf(&b, "ABhi there");
    assert_int_equal(b.head, 0);
    assert_int_equal(tw_buf_prepend(&b, "x", 1), -ENOSPC);
    assert_buf(&b, "ABhi there");
    assert_int_equal(tw_buf_prepend(&b, "", 0), 0);

    /* reset restores the headroom and keeps the storage */
    uint8_t *base = b.base;
    tw_buf_reset(&b, 4);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.head, 4);
    assert_ptr_equal(b.base, base);
    assert_int_equal(tw_buf_append_str(&b, "body"), 0);
    assert_int_equal(tw_buf_prepend(&b, "hdr:", 4), 0);
    assert_buf(&b, "hdr:body");

    /* a reset to more headroom than the storage holds */
    tw_buf_reset(&b, b.cap + 100);
    assert_int_equal(tw_buf_prepend(&b, "z", 1), 0);
    assert_int_equal(tw_buf_append_str(&b, "zz"), 0);
    assert_buf(&b, "zzz");
    assert_true(b.head + b.len <= b.cap);
    tw_buf_free(&b);
}

static void test_printf(void **state)
{
    tw_buf b;
    tw_buf_init(&b, 2);
    assert_int_equal(tw_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_buf(&b, "42-x");
    char big[3000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(tw_buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 4 + 2 + sizeof big - 1);
    assert_memory_equal(tw_buf_data(&b), "42-x[qqq", 8);
    assert_int_equal(tw_buf_data(&b)[b.len - 1], ']');
    assert_int_equal(tw_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 4 + 2 + sizeof big - 1);
    tw_buf_free(&b);
}

static void test_json_string(void **state)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    assert_int_equal(tw_buf_append_json_string(&b, "", 0), 0);
    assert_buf(&b, "\"\"");
    tw_buf_reset(&b, 0);
    assert_int_equal(tw_buf_append_json_string(&b, "plain text", 10), 0);
    assert_buf(&b, "\"plain text\"");
    tw_buf_reset(&b, 0);
    const char in[] = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\xe2\x98\x83";
    assert_int_equal(tw_buf_append_json_string(&b, in, sizeof in - 1), 0);
    assert_buf(&b, "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\xe2\x98\x83\"");

    /* every control character, and NUL inside the counted bytes */
    tw_buf_reset(&b, 0);
    char ctl[32];
    for (int i = 0; i < 32; i++)
        ctl[i] = (char)i;
    assert_int_equal(tw_buf_append_json_string(&b, ctl, 32), 0);
    assert_buf(&b, "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b"
                   "\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017"
                   "\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"");

    /* appends after what is there */
    assert_int_equal(tw_buf_append_json_string(&b, "\"", 1), 0);
    assert_memory_equal(tw_buf_data(&b) + b.len - 4, "\"\\\"\"", 4);
    tw_buf_free(&b);
}

/* What one byte costs inside a JSON string, worked out apart from buf.c's table. */
static size_t ref_escaped(uint8_t c)
{
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
        return 2;
    return c < 0x20 ? 6 : 1;
}

/* tw_json_string_len (which skips clean 8-byte words) against a byte-by-byte count, for
 * every byte value at every position of strings around the word size, on fillers near the
 * bytes that need escapes; and what tw_buf_append_json_string writes is that long. */
static void test_json_string_len(void **state)
{
    static const uint8_t fillers[] = {'a', ' ', '!', '#', '[', ']', 0x7f, 0x80, 0xa2, 0xdc, 0xff};
    uint8_t s[24];
    tw_buf b;
    tw_buf_init(&b, 0);
    assert_int_equal(tw_json_string_len("", 0), 2);
    for (size_t fi = 0; fi < sizeof fillers; fi++) {
        for (size_t n = 1; n <= sizeof s; n++) {
            for (size_t at = 0; at < n; at++) {
                for (unsigned c = 0; c < 256; c++) {
                    memset(s, fillers[fi], n);
                    s[at] = (uint8_t)c;
                    size_t want = 2 + (n - 1) * ref_escaped(fillers[fi]) + ref_escaped((uint8_t)c);
                    assert_int_equal(tw_json_string_len((const char *)s, n), want);
                    if (c % 17 == 0 || ref_escaped((uint8_t)c) > 1) {
                        tw_buf_reset(&b, 0);
                        assert_int_equal(tw_buf_append_json_string(&b, (const char *)s, n), 0);
                        assert_int_equal(b.len, want);
                    }
                }
            }
        }
    }
    /* escapes in two words, the second one far along */
    memset(s, 'z', sizeof s);
    s[1] = '"';
    s[20] = '\n';
    assert_int_equal(tw_json_string_len((const char *)s, sizeof s), 2 + 24 + 2);
    tw_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_append_grow),
        cmocka_unit_test(test_reserve_overflow),
        cmocka_unit_test(test_prepend),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_json_string_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
