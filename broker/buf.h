/*
 * buf.h — a growable byte buffer with headroom.
 *
 * Encoders append to the tail; the WebSocket layer later prepends a frame header into the
 * headroom, so a message is framed without copying its payload. Data lives at
 * base[head .. head + len). Functions return 0 or -ENOMEM; on failure the buffer is
 * unchanged (and still valid). Not thread-safe: one owner at a time.
 */
#ifndef TW_BUF_H
#define TW_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tw_buf {
    uint8_t *base;
    size_t head; /* bytes of headroom before the data */
    size_t len;  /* bytes of data */
    size_t cap;  /* bytes allocated at base */
} tw_buf;

/* Bytes of headroom tw_buf_init_framed() reserves: the longest server frame header. */
#define TW_BUF_FRAME_HEADROOM 10

/* An empty buffer with `headroom` bytes reserved in front. Allocates nothing yet. */
void tw_buf_init(tw_buf *b, size_t headroom);

/* Frees the storage and leaves an empty buffer. Safe on an initialised empty buffer. */
void tw_buf_free(tw_buf *b);

/* Data pointer (may be NULL when empty). */
static inline uint8_t *tw_buf_data(const tw_buf *b)
{
    return b->base ? b->base + b->head : NULL;
}

/* Makes room for `n` more bytes at the tail. */
int tw_buf_reserve(tw_buf *b, size_t n);
int tw_buf_append(tw_buf *b, const void *p, size_t n);
int tw_buf_append_str(tw_buf *b, const char *s);
int tw_buf_putc(tw_buf *b, char c);
int tw_buf_printf(tw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tw_buf_vprintf(tw_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Appends s[0..n) as a JSON string literal, quotes included, escaping as RFC 8259 asks.
 * Bytes are copied as they are (the caller guarantees UTF-8). */
int tw_buf_append_json_string(tw_buf *b, const char *s, size_t n);

/* The bytes tw_buf_append_json_string(b, s, n) appends, quotes included (SIZE_MAX when
 * that would not fit in a size_t). */
size_t tw_json_string_len(const char *s, size_t n);

/* Prepends n bytes into the headroom; fails with -ENOSPC when the headroom is too small. */
int tw_buf_prepend(tw_buf *b, const void *p, size_t n);

/* Drops all data and keeps the storage; `headroom` bytes are reserved in front again (the
 * buffer does not remember the headroom it was made with: pass the same value). */
void tw_buf_reset(tw_buf *b, size_t headroom);

#endif /* TW_BUF_H */
