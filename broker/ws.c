/*
 * ws.c — see ws.h.
 *
 * Receiving does not use wslay's event layer (wslay_event_recv) any more. Profiling the
 * publish benchmark (1,024 publishes in flight) put a tenth of the network loop's CPU in
 * wslay_event_recv's byte-at-a-time UTF-8 automaton and a twentieth in wslay_frame_recv's
 * byte-at-a-time unmasking through its 4 KiB staging buffer, and the event layer mallocs
 * every message twice (a chunk, then the flattened copy). Here frames are parsed straight
 * from the bytes read, unmasked eight bytes at a time into one reused message buffer, and
 * text is checked for UTF-8 with an ASCII fast path; the client SDK did the same for the
 * same reasons (client-sdk/c/twc_conn.c).
 *
 * Sending does not use it either: the event context each connection kept only to write
 * pongs, pings and closes held two 4 KiB staging buffers, 8.8 KiB of the 10.1 KiB an idle
 * subscribed connection cost (issue 6 asks for 4 KiB). A control frame is at most 127 bytes
 * and unmasked from a server, so it is built on the stack and written at once, in one output
 * call (wslay made one for the header and one for the payload). Its rules are
 * wslay_event_queue_close's and wslay_event_send's: nothing after a close frame; code 0
 * gives an empty close frame; a reason over 123 bytes, no frame. The frames' bytes and
 * order are wslay's, but for when they leave: a pong or close is written as soon as its
 * frame is read, where wslay wrote them at the end of tw_ws_feed. So a pong now goes before
 * the replies to messages that followed its ping in the same read (any order is valid), and
 * a ping read before a close (or before a frame we refuse) in the same read is answered:
 * wslay queued its close ahead of the waiting pongs and dropped them, where RFC 6455 5.5.2
 * wants a pong for every ping read before the close.
 * tests/fuzz/fuzz_ws_diff.c compares all of it, receiving and sending, with wslay's event
 * layer, which stays the reference.
 *
 * The rules are wslay 1.1's, rule for rule and in its order, with its close codes:
 * - frame header: a control frame with FIN clear or more than 125 bytes, a 16-bit length
 *   below 126 or a 64-bit one below 65536 or with the top bit set: an empty close frame,
 *   and tw_ws_feed() fails (wslay_frame_recv's WSLAY_ERR_PROTO);
 * - RSV bits set, or an unmasked frame (clients must mask): 1002;
 * - a continuation without an open message, a new data message inside an open one, an
 *   unknown opcode: 1002;
 * - a message (or control frame) over max_message bytes: 1009, before its payload is read;
 * - text that is not well-formed UTF-8: 1007 at the first byte that cannot be (or at the
 *   end of the message, when it ends inside a sequence); the same for a close frame's
 *   reason, as its bytes arrive (wslay skipped the first two bytes of every chunk of a
 *   close frame, so one split across reads was checked wrongly; here the reason is all of
 *   the payload after the code, however it arrives);
 * - a close frame's status code outside 1000-1011 minus 1004-1006 and 3000-4999: 1002; a
 *   valid close is echoed with its code and reason (an empty close when it had none, or a
 *   1-byte payload, as wslay does); reading stops;
 * - a ping is answered with a pong carrying its payload;
 * after any close is sent nothing more is read. Control frames may come between the
 * fragments of a message. Data messages that arrive after we sent a close are dropped
 * (RFC 6455 1.4). tests/unit/test_ws.c scripts these cases and tests/fuzz/fuzz_ws.c feeds
 * arbitrary bytes.
 */
#include "ws.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

int tw_ws_init(tw_ws *ws, uint64_t max_message, const tw_ws_callbacks *cb, void *arg)
{
    memset(ws, 0, sizeof *ws);
    ws->cb = cb;
    ws->arg = arg;
    ws->max_message = max_message;
    ws->read_enabled = 1;
    return 0;
}

void tw_ws_free(tw_ws *ws)
{
    free(ws->msg);
    ws->msg = NULL;
    ws->msg_len = ws->msg_cap = 0;
}

/* ---- Sending ---------------------------------------------------------------------------- */

/*
 * Writes one control frame, header and payload (a + b, at most 125 bytes) in one output call,
 * so the owner's own frames can only come between whole frames. Server frames are not
 * masked. Nothing is written once a close was: the close frame is the last (RFC 6455 5.5.1),
 * as wslay refused to queue anything after it (WSLAY_ERR_NO_MORE_MSG).
 */
static void send_control(tw_ws *ws, uint8_t op, const uint8_t *a, size_t alen, const uint8_t *b,
                         size_t blen)
{
    uint8_t f[2 + 125];
    if (ws->close_sent) return;
    if (op == OP_CLOSE) ws->close_sent = 1; /* before output, which may call us back */
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(alen + blen);
    if (alen) memcpy(f + 2, a, alen);
    if (blen) memcpy(f + 2 + alen, b, blen);
    ws->cb->output(ws->arg, f, 2 + alen + blen);
}

/* A close frame with `code` and `reason`, as wslay_event_queue_close built it: code 0 gives an
 * empty close (and drops the reason); a reason over 123 bytes gives none at all. */
static void send_close(tw_ws *ws, uint16_t code, const uint8_t *reason, size_t reason_len)
{
    if (reason_len > 123) return;
    uint8_t c[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_control(ws, OP_CLOSE, c, code ? 2 : 0, reason, code ? reason_len : 0);
}

/* ---- Receiving -------------------------------------------------------------------------- */

/* Stops reading and sends a close with `code` (0: an empty close frame), unless one was sent
 * already (wslay's queue_close_wrapper). Returns 0. */
static int refuse(tw_ws *ws, uint16_t code, const uint8_t *reason, size_t reason_len)
{
    ws->read_enabled = 0;
    send_close(ws, code, reason, reason_len);
    return 0;
}

static int valid_close_code(unsigned code)
{
    return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
}

/*
 * Checks s[*ok .. n) as the continuation of well-formed UTF-8 (Unicode 15, table 3-7: no
 * overlong forms, surrogates or code points above U+10FFFF — what wslay's automaton
 * accepts). Returns -1 at the first byte that cannot be part of well-formed text; otherwise
 * 0 with *ok at the start of an unfinished sequence at the end, or at n.
 */
static int utf8_prefix(const uint8_t *s, size_t n, size_t *ok)
{
    size_t i = *ok;
    while (i < n) {
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i == n) break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        uint8_t lo, hi;
        size_t need = tw_utf8_lead(c, &lo, &hi);
        if (need == 0) return -1;
        if (i + 1 < n && (s[i + 1] < lo || s[i + 1] > hi)) return -1;
        for (size_t k = 2; k < need && i + k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80) return -1;
        if (n - i < need) break; /* unfinished: the next fragment may end it */
        i += need;
    }
    *ok = i;
    return 0;
}

/* dst = src XOR the mask key, from payload offset `off`; eight bytes at a time. */
static void unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t off)
{
    uint8_t m[8];
    for (int k = 0; k < 8; k++)
        m[k] = key[(off + (unsigned)k) & 3];
    uint64_t m64;
    memcpy(&m64, m, 8);
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= m64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ m[i & 7];
}

/*
 * Reads header bytes until the header is whole. 1: whole; 0: more bytes needed;
 * -1: malformed (wslay_frame_recv's checks, made as soon as their bytes are there).
 */
static int read_header(tw_ws *ws, const uint8_t **pp, size_t *np)
{
    for (;;) {
        size_t have = ws->hdr_len, need = 2;
        if (have >= 2) {
            uint8_t l7 = ws->hdr[1] & 0x7f;
            need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (ws->hdr[1] & 0x80 ? 4 : 0);
        }
        if (have == need) return 1;
        if (*np == 0) return 0;
        /* up to the next point where something can be checked */
        size_t stop = have < 2 ? 2 : need;
        if (have >= 2 && (ws->hdr[1] & 0x7f) >= 126) {
            size_t ext_end = 2 + ((ws->hdr[1] & 0x7f) == 126 ? 2 : 8);
            if (have < ext_end) stop = ext_end;
        }
        size_t take = stop - have < *np ? stop - have : *np;
        memcpy(ws->hdr + have, *pp, take);
        *pp += take;
        *np -= take;
        ws->hdr_len = (uint8_t)(have + take);
        if (ws->hdr_len != stop) return 0;
        uint8_t op = ws->hdr[0] & 0x0f, l7 = ws->hdr[1] & 0x7f;
        if (stop == 2) {
            if ((op & 8) && (l7 > 125 || !(ws->hdr[0] & 0x80))) return -1;
        } else if (l7 >= 126 && stop == 2 + (l7 == 126 ? 2u : 8u)) {
            uint64_t len = 0;
            for (size_t k = 2; k < stop; k++)
                len = len << 8 | ws->hdr[k];
            if (l7 == 126 ? len < 126 : len < 65536 || (len >> 63)) return -1;
        }
    }
}

/* The payload length a whole header gives. */
static uint64_t header_payload_len(const tw_ws *ws)
{
    uint8_t l7 = ws->hdr[1] & 0x7f;
    if (l7 < 126) return l7;
    uint64_t len = 0;
    for (size_t k = 0; k < (l7 == 126 ? 2u : 8u); k++)
        len = len << 8 | ws->hdr[2 + k];
    return len;
}

/* The header is whole: the frame's length, mask key, and the event layer's checks.
 * 1: read its payload; 0: refused (a close was sent). */
static int frame_start(tw_ws *ws)
{
    uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1], l7 = b1 & 0x7f;
    size_t at = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
    uint64_t len = header_payload_len(ws);
    uint8_t op = b0 & 0x0f, fin = b0 >> 7;
    if ((b0 & 0x70) || !(b1 & 0x80)) return refuse(ws, 1002, NULL, 0);
    memcpy(ws->mask, ws->hdr + at, 4);
    uint64_t before = 0; /* bytes of the message already read */
    if (op == OP_CLOSE || op == OP_PING || op == OP_PONG) {
        ws->ctl_len = 0;
        ws->ctl_utf8_ok = 0;
    } else if (!ws->in_msg && (op == OP_TEXT || op == OP_BINARY)) {
        ws->in_msg = 1;
        ws->msg_op = op;
        ws->msg_len = 0;
        ws->utf8_ok = 0;
    } else if (ws->in_msg && op == OP_CONT) {
        before = ws->msg_len;
    } else {
        return refuse(ws, 1002, NULL, 0);
    }
    if (op < 8) ws->msg_fin = fin;
    if (len > ws->max_message || before > ws->max_message - len) return refuse(ws, 1009, NULL, 0);
    ws->f_op = op;
    ws->f_fin = fin;
    ws->f_len = len;
    ws->f_off = 0;
    ws->in_frame = 1;
    return 1;
}

static int msg_reserve(tw_ws *ws, size_t need)
{
    if (need <= ws->msg_cap) return 0;
    size_t cap = ws->msg_cap ? ws->msg_cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(ws->msg, cap);
    if (!p) return -1;
    ws->msg = p;
    ws->msg_cap = cap;
    return 0;
}

/* The payload of the control frame being read: kept in the message buffer after the open
 * message's bytes (a control frame may come between its fragments), so no buffer is set
 * aside for it. NULL while it is empty. */
static uint8_t *ctl(const tw_ws *ws)
{
    return ws->msg ? ws->msg + ws->msg_len : NULL;
}

/* The frame's payload is whole. 0 to go on (reading has stopped when a close was sent). */
static int frame_end(tw_ws *ws)
{
    ws->in_frame = 0;
    ws->hdr_len = 0;
    switch (ws->f_op) {
    case OP_CLOSE: {
        const uint8_t *c = ctl(ws);
        unsigned code = 0;
        size_t rl = 0;
        if (ws->ctl_len > 2) {
            rl = ws->ctl_len - 2u;
            if (ws->ctl_utf8_ok != rl) return refuse(ws, 1007, NULL, 0); /* unfinished */
        }
        if (ws->ctl_len >= 2) {
            code = (unsigned)c[0] << 8 | c[1];
            if (!valid_close_code(code)) return refuse(ws, 1002, NULL, 0);
        } else {
            rl = 0;
        }
        ws->close_received = 1;
        refuse(ws, (uint16_t)code, rl ? c + 2 : NULL, rl);
        if (ws->cb->on_activity) ws->cb->on_activity(ws->arg);
        return 0;
    }
    case OP_PING:
        send_control(ws, OP_PONG, ctl(ws), ws->ctl_len, NULL, 0);
        if (ws->cb->on_activity) ws->cb->on_activity(ws->arg);
        return 0;
    case OP_PONG:
        if (ws->cb->on_activity) ws->cb->on_activity(ws->arg);
        return 0;
    }
    if (!ws->msg_fin) return 0;
    if (ws->msg_op == OP_TEXT && ws->utf8_ok != ws->msg_len) return refuse(ws, 1007, NULL, 0);
    ws->in_msg = 0;
    if (ws->cb->on_activity) ws->cb->on_activity(ws->arg);
    /* After we sent a close, the client's in-flight messages are dropped (RFC 6455 1.4). */
    if (!ws->close_sent)
        ws->cb->on_message(ws->arg, ws->msg_op, ws->msg_len ? ws->msg : NULL, ws->msg_len);
    ws->msg_len = 0;
    return 0;
}

static int recv_frames(tw_ws *ws, const uint8_t *p, size_t n)
{
    while (ws->read_enabled) {
        if (!ws->in_frame) {
            int r = read_header(ws, &p, &n);
            if (r == 0) return 0;
            if (r < 0) {
                refuse(ws, 0, NULL, 0);
                return -1;
            }
            /* wslay's event layer judged a frame once its first payload byte (if any) was
             * there: so do we, so a close is sent at the same moment as before. */
            if (n == 0 && header_payload_len(ws) > 0) return 0;
            r = frame_start(ws);
            if (r <= 0) return r;
        }
        uint64_t left = ws->f_len - ws->f_off;
        if (left && n == 0) return 0;
        size_t take = left < n ? (size_t)left : n;
        if (ws->f_op & 8) {
            if (take) {
                if (msg_reserve(ws, ws->msg_len + ws->ctl_len + take)) {
                    ws->read_enabled = 0;
                    return -1;
                }
                unmask(ctl(ws) + ws->ctl_len, p, take, ws->mask, ws->f_off);
                ws->ctl_len = (uint8_t)(ws->ctl_len + take); /* <= 125: read_header checked */
            }
            /* a close's reason, checked as it arrives (as wslay did) */
            size_t ok = ws->ctl_utf8_ok;
            if (ws->f_op == OP_CLOSE && ws->ctl_len > 2 &&
                utf8_prefix(ctl(ws) + 2, ws->ctl_len - 2u, &ok))
                return refuse(ws, 1007, NULL, 0);
            ws->ctl_utf8_ok = (uint8_t)ok;
        } else if (take) {
            if (msg_reserve(ws, ws->msg_len + take)) {
                ws->read_enabled = 0;
                return -1;
            }
            unmask(ws->msg + ws->msg_len, p, take, ws->mask, ws->f_off);
            ws->msg_len += take;
            if (ws->msg_op == OP_TEXT && utf8_prefix(ws->msg, ws->msg_len, &ws->utf8_ok))
                return refuse(ws, 1007, NULL, 0);
        }
        p += take;
        n -= take;
        ws->f_off += take;
        if (ws->f_off == ws->f_len && frame_end(ws)) return -1;
    }
    return 0;
}

int tw_ws_feed(tw_ws *ws, const uint8_t *data, size_t len)
{
    /* On a rule broken a close (1002, 1007, 1009) was sent and reading stops; on a malformed
     * header an empty close was sent and we fail. */
    int rc = ws->read_enabled && recv_frames(ws, data, len) != 0 ? -1 : 0;
    /* An idle connection keeps no buffer: it is allocated again for the next message (once
     * a read, not once a message), and freed here unless a message or control frame is
     * still open, so a huge message cannot pin its buffer either. */
    if (ws->msg && (!ws->read_enabled || (!ws->in_msg && !ws->in_frame))) {
        free(ws->msg);
        ws->msg = NULL;
        ws->msg_len = ws->msg_cap = 0;
    }
    return rc;
}

void tw_ws_close(tw_ws *ws, uint16_t code, const char *reason)
{
    if (ws->close_sent || ws->close_code_sent) return;
    ws->close_code_sent = code;
    send_close(ws, code, (const uint8_t *)reason, reason ? strlen(reason) : 0);
}

void tw_ws_ping(tw_ws *ws)
{
    send_control(ws, OP_PING, NULL, 0, NULL, 0);
}

int tw_ws_closing(const tw_ws *ws)
{
    return ws->close_code_sent || ws->close_sent || ws->close_received;
}

int tw_ws_close_received(const tw_ws *ws)
{
    return ws->close_received;
}

int tw_ws_finished(const tw_ws *ws)
{
    return !ws->read_enabled; /* frames are written at once: nothing is ever left to write */
}
