/*
 * utf8.h — the rule of well-formed UTF-8 (Unicode 15, table 3-7) that both of the broker's
 * readers apply: protocol.c (validating and repairing strings) and ws.c (text frames as
 * their bytes arrive). One table, so the two can never disagree on what is text.
 */
#ifndef TW_UTF8_H
#define TW_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * For a byte c >= 0x80 that starts a sequence: its length (2 to 4), and in *lo..*hi the
 * range its second byte must fall in (which rules out overlong forms, surrogates and code
 * points above U+10FFFF; every later byte is 0x80..0xbf). 0 when c cannot start one.
 */
static inline size_t tw_utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi)
{
    if (c < 0xc2 || c > 0xf4) return 0;
    *lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    *hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    return c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

#endif
