/*
 * buf.c — the growable byte buffer of buf.h.
 *
 * Invariant: when base != NULL, head + len <= cap. tw_buf_init() allocates nothing, so an
 * empty buffer may hold a headroom (head) larger than its capacity (0); the first reserve
 * allocates head + what is asked.
 */
#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Smallest allocation: most server messages fit, so a fresh buffer grows once. */
#define BUF_MIN_CAP 256

void tw_buf_init(tw_buf *b, size_t headroom)
{
    b->base = NULL;
    b->head = headroom;
    b->len = 0;
    b->cap = 0;
}

void tw_buf_free(tw_buf *b)
{
    free(b->base);
    b->base = NULL;
    b->len = 0;
    b->cap = 0;
    /* head is kept: the buffer may be reused with the same headroom. */
}

int tw_buf_reserve(tw_buf *b, size_t n)
{
    size_t used = b->head + b->len;
    if (n > SIZE_MAX - used) return -ENOMEM;
    size_t need = used + n;
    if (b->base && need <= b->cap) return 0;

    /* Doubling keeps appends amortised O(1); start at BUF_MIN_CAP to skip tiny steps. */
    size_t cap = b->cap > BUF_MIN_CAP ? b->cap : BUF_MIN_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->base, cap);
    if (!p) return -ENOMEM;
    b->base = p;
    b->cap = cap;
    return 0;
}

int tw_buf_append(tw_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    int rc = tw_buf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->base + b->head + b->len, p, n);
    b->len += n;
    return 0;
}

int tw_buf_append_str(tw_buf *b, const char *s)
{
    return tw_buf_append(b, s, strlen(s));
}

int tw_buf_putc(tw_buf *b, char c)
{
    int rc = tw_buf_reserve(b, 1);
    if (rc) return rc;
    b->base[b->head + b->len++] = (uint8_t)c;
    return 0;
}

int tw_buf_vprintf(tw_buf *b, const char *fmt, va_list ap)
{
    /* First try in the room already there (reserving a little), then once more with the
     * exact size vsnprintf reported. */
    va_list ap2;
    va_copy(ap2, ap);
    int rc = tw_buf_reserve(b, 64);
    if (rc) goto out;
    size_t room = b->cap - b->head - b->len;
    int n = vsnprintf((char *)b->base + b->head + b->len, room, fmt, ap);
    if (n < 0) {
        rc = -EINVAL;
        goto out;
    }
    if ((size_t)n >= room) {
        rc = tw_buf_reserve(b, (size_t)n + 1);
        if (rc) goto out;
        vsnprintf((char *)b->base + b->head + b->len, (size_t)n + 1, fmt, ap2);
    }
    b->len += (size_t)n;
out:
    va_end(ap2);
    return rc;
}

int tw_buf_printf(tw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tw_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* Extra output bytes each input byte costs inside a JSON string: 0 (as is), 1 (\n) or 5
 * (\u001f). */
static const uint8_t json_escape_extra[256] = {
    ['\b'] = 1, ['\t'] = 1, ['\n'] = 1, ['\f'] = 1, ['\r'] = 1, ['"'] = 1,  ['\\'] = 1,
    [0x00] = 5, [0x01] = 5, [0x02] = 5, [0x03] = 5, [0x04] = 5, [0x05] = 5, [0x06] = 5,
    [0x07] = 5, [0x0b] = 5, [0x0e] = 5, [0x0f] = 5, [0x10] = 5, [0x11] = 5, [0x12] = 5,
    [0x13] = 5, [0x14] = 5, [0x15] = 5, [0x16] = 5, [0x17] = 5, [0x18] = 5, [0x19] = 5,
    [0x1a] = 5, [0x1b] = 5, [0x1c] = 5, [0x1d] = 5, [0x1e] = 5, [0x1f] = 5,
};

/* Does the 8-byte word hold a byte < 0x20, '"' or '\\'? (Exact: the bit tricks of "Bit
 * Twiddling Hacks", haszero and hasless, with no false positive for bytes >= 0x80.) */
static inline int word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    uint64_t t = ((q - ones) & ~q) | ((bs - ones) & ~bs) | (w - ones * 0x20);
    return (t & ~w & high) != 0;
}

size_t tw_json_string_len(const char *s, size_t n)
{
    const uint8_t *in = (const uint8_t *)s;
    size_t extra = 0, i = 0;
    /* Names and ids seldom need escapes: skip clean words eight bytes at a time. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        if (word_needs_escape(w)) break;
    }
    for (; i < n; i++)
        extra += json_escape_extra[in[i]]; /* at most 5 * n: n would not fit in memory */
    return n > SIZE_MAX - 2 - extra ? SIZE_MAX : 2 + n + extra;
}

int tw_buf_append_json_string(tw_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *in = (const uint8_t *)s;

    /* Size the output exactly first: one allocation at most, and nothing written on
     * failure. */
    size_t out = tw_json_string_len(s, n);
    if (out == SIZE_MAX) return -ENOMEM;
    size_t extra = out - 2 - n;
    int rc = tw_buf_reserve(b, out);
    if (rc) return rc;

    uint8_t *w = b->base + b->head + b->len;
    *w++ = '"';
    if (extra == 0) {
        if (n) memcpy(w, in, n);
        w += n;
    } else {
        size_t run = 0; /* start of the pending run of bytes copied as they are */
        for (size_t i = 0; i < n; i++) {
            uint8_t c = in[i];
            if (!json_escape_extra[c]) continue;
            memcpy(w, in + run, i - run);
            w += i - run;
            run = i + 1;
            *w++ = '\\';
            switch (c) {
            case '"':
            case '\\':
                *w++ = c;
                break;
            case '\b':
                *w++ = 'b';
                break;
            case '\t':
                *w++ = 't';
                break;
            case '\n':
                *w++ = 'n';
                break;
            case '\f':
                *w++ = 'f';
                break;
            case '\r':
                *w++ = 'r';
                break;
            default:
                *w++ = 'u';
                *w++ = '0';
                *w++ = '0';
                *w++ = (uint8_t)hex[c >> 4];
                *w++ = (uint8_t)hex[c & 15];
                break;
            }
        }
        memcpy(w, in + run, n - run);
        w += n - run;
    }
    *w = '"';
    b->len += out;
    return 0;
}

int tw_buf_prepend(tw_buf *b, const void *p, size_t n)
{
    if (n > b->head) return -ENOSPC;
    /* Allocates a never-used buffer, and covers a reset to a headroom beyond cap. */
    int rc = tw_buf_reserve(b, 0);
    if (rc) return rc;
    b->head -= n;
    b->len += n;
    if (n) memcpy(b->base + b->head, p, n);
    return 0;
}

void tw_buf_reset(tw_buf *b, size_t headroom)
{
    b->head = headroom;
    b->len = 0;
}
