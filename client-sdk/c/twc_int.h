/*
 * twc internals shared by the SDK's files and its unit tests (tests/unit/test_twc.c).
 * Everything here except the transport is pure: bytes and numbers in, results out, no I/O
 * and no clock, so the tests can drive it with scripted input.
 */
#ifndef TWC_INT_H
#define TWC_INT_H

#include "twc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- growable byte buffer ------------------------------------------------------------- */

typedef struct twc__buf {
    char *p;
    size_t len;
    size_t cap;
} twc__buf;

/* Makes room for n more bytes (plus a NUL the caller may write). 0 or UV_ENOMEM. */
int twc__buf_reserve(twc__buf *b, size_t n);
int twc__buf_append(twc__buf *b, const void *p, size_t n);
int twc__buf_appends(twc__buf *b, const char *s);
int twc__buf_printf(twc__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void twc__buf_free(twc__buf *b);

/* ---- URL ------------------------------------------------------------------------------ */

typedef struct twc__url {
    char scheme[8];  /* "ws", "wss", "http" or "https", lower case */
    bool secure;     /* wss / https */
    char host[256];  /* without brackets for IPv6 literals */
    bool ipv6;       /* host was a bracketed literal */
    uint16_t port;   /* explicit or the scheme's default */
    char path[1024]; /* path and query, starting with '/' */
} twc__url;

/* Parses ws://HOST[:PORT][/PATH[?QUERY]] (also wss, http, https). An empty path becomes
 * default_path. Rejects userinfo, fragments, bad ports, control characters and spaces.
 * Returns 0 and fills *out, or TWC_E_URL. */
int twc__url_parse(const char *url, const char *default_path, twc__url *out);

/* Writes the Host header value ("host", "host:port", "[v6]:port") into out. */
void twc__url_hostport(const twc__url *u, char *out, size_t outsz);

/* ---- WebSocket opening handshake (RFC 6455 section 4) ---------------------------------- */

#define TWC__WS_SUBPROTOCOL "tidewire.v1.json"
#define TWC__HS_MAX 16384 /* largest 101 response header block accepted */

/* key: 16 bytes -> 24 base64 characters + NUL in key_b64. */
void twc__ws_key_encode(const uint8_t key[16], char key_b64[25]);
/* base64(SHA-1(key_b64 + GUID)) -> 28 characters + NUL. 0 or TWC_E_HANDSHAKE (crypto). */
int twc__ws_accept(const char *key_b64, char accept[29]);
/* Appends the GET upgrade request for u with key_b64 to out. 0 or UV_ENOMEM. */
int twc__hs_request(twc__buf *out, const twc__url *u, const char *key_b64);

/* Parses the server's response head in buf[0..len).
 * Returns 0 when the head is not complete yet (no CRLFCRLF within len), > 0 = the number of
 * bytes of the head (what follows are WebSocket frames) when it is a valid 101 with the
 * expected accept value, or TWC_E_HANDSHAKE with a reason in err (and *status set to the
 * HTTP status when one was read, else 0). */
int twc__hs_parse(const char *buf, size_t len, const char *expected_accept, int *status, char *err,
                  size_t errsz);

/* ---- WebSocket client frames ------------------------------------------------------------ */

/* Writes a FIN frame header (opcode, masked, payload len) into hdr; returns its length
 * (6, 8 or 14). */
size_t twc__ws_frame_header(uint8_t hdr[14], uint8_t opcode, uint64_t len, const uint8_t mask[4]);
/* dst[i] = src[i] ^ mask[(off + i) % 4]; dst may equal src. */
void twc__ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], size_t off);

/* ---- small fast PRNG (xoshiro256**), seeded from RAND_bytes ------------------------------ */

typedef struct twc__rng {
    uint64_t s[4];
} twc__rng;

void twc__rng_seed(twc__rng *r);
void twc__rng_seed_u64(twc__rng *r, uint64_t seed); /* deterministic, for tests */
uint64_t twc__rng_next(twc__rng *r);

/* ---- reconnect policy ------------------------------------------------------------------- */

typedef enum twc__action {
    TWC__ACT_STOP = 0, /* 1000: stop, not an error */
    TWC__ACT_TERMINAL, /* 4000-4099: stop and report */
    TWC__ACT_BACKOFF,  /* 4100-4199: reconnect after a growing backoff (no reset) */
    TWC__ACT_NOW,      /* 4200-4299, 1012: reconnect at once and resume */
    TWC__ACT_RETRY,    /* anything else (1011, network errors): backoff */
} twc__action;

/* What to do after the server closed with close_code (0 = no close frame: network error,
 * timeout, EOF). */
twc__action twc__close_action(int close_code);

typedef struct twc__backoff {
    uint64_t initial_ms;
    uint64_t max_ms;
    double factor;
    unsigned attempt; /* consecutive failed attempts since the last healthy connection */
} twc__backoff;

/* The cap of attempt n: min(max, initial * factor^n). */
uint64_t twc__backoff_cap(const twc__backoff *b, unsigned attempt);
/* Full jitter: a delay uniform in [0, cap(attempt)] drawn from rnd; increments attempt. */
uint64_t twc__backoff_next(twc__backoff *b, uint64_t rnd);

/* Connections that reached `connected` and lasted at least this long count as healthy:
 * they reset the backoff, and a 42xx/1012 close after them reconnects at once. */
#define TWC__HEALTHY_MS 1000

/* The delay before the next attempt after a connection ended with action; was_connected:
 * the server had answered `connected`; uptime_ms: for how long. Updates b->attempt. */
uint64_t twc__reconnect_delay(twc__backoff *b, twc__action action, bool was_connected,
                              uint64_t uptime_ms, uint64_t rnd);

/* ---- JSON (RFC 8259) -------------------------------------------------------------------- */

/* Value kinds reported by the scanner. */
enum {
    TWC__J_NONE = 0,
    TWC__J_STR,
    TWC__J_NUM,
    TWC__J_OBJ,
    TWC__J_ARR,
    TWC__J_TRUE,
    TWC__J_FALSE,
    TWC__J_NULL
};

/* Validates one JSON value at s (leading whitespace allowed) and sets *end past it.
 * Checks the grammar, UTF-8 inside strings and nesting depth (<= 256). Returns the kind,
 * or -1 when invalid. */
int twc__json_skip(const char *s, const char *lim, const char **end);
/* true when s[0..n) is exactly one JSON value with optional surrounding whitespace. */
bool twc__json_valid(const char *s, size_t n);
/* Decodes the inside of a JSON string literal (without quotes) into out (NUL-terminated).
 * out needs n + 1 bytes (decoding never grows). Returns the decoded length or -1. */
long twc__json_unescape(const char *s, size_t n, char *out);
/* Appends s[0..n) as a JSON string literal with quotes. 0 or UV_ENOMEM. */
int twc__json_escape(twc__buf *b, const char *s, size_t n);
/* true when s[0..n) is valid UTF-8 without NUL bytes. */
bool twc__utf8_valid(const char *s, size_t n);

/* A string value found by the message scanner: the text between the quotes. */
typedef struct twc__jstr {
    const char *p;
    size_t n;
    bool esc; /* contains backslash escapes: decode with twc__json_unescape */
} twc__jstr;

/* The top-level fields of a server message the client uses. Spans point into the text. */
typedef struct twc__msg {
    twc__jstr op, channel, pos, node, session, message;
    bool has_id, has_ts, has_code, has_ping_interval;
    int64_t id, ts, code;
    double ping_interval;
    int recovered, replayed; /* -1 absent, else 0/1 */
    const char *data;        /* raw JSON text of `data`, or NULL */
    size_t data_len;
    const char *cursor; /* raw JSON text of `cursor`, or NULL */
    size_t cursor_len;
} twc__msg;

/* Scans a server message (a JSON object). Unknown fields are skipped; known fields of the
 * wrong type make the message invalid. Returns 0, or TWC_E_PROTOCOL with a reason in *why. */
int twc__msg_scan(const char *s, size_t n, twc__msg *m, const char **why);

/* ---- positions and cursors -------------------------------------------------------------- */

/* Parses "ORIGIN:SEQ" (split at the last ':'; seq decimal, 1..2^64-1, no sign or
 * leading zeros). Returns 0 and sets *origin_len and *seq, or TWC_E_PROTOCOL. */
int twc__pos_parse(const char *s, size_t n, size_t *origin_len, uint64_t *seq);

typedef struct twc__cursor_entry {
    char *origin; /* NUL-terminated, owned */
    size_t len;
    uint64_t seq;
} twc__cursor_entry;

/* A version vector: origin -> last seq seen. Few entries (one per node ever seen). */
typedef struct twc__cursor {
    twc__cursor_entry *v;
    size_t n, cap;
} twc__cursor;

/* The dedup rule: returns 1 and sets cursor[origin] = seq when seq > cursor[origin] (a new
 * event), 0 when seq <= cursor[origin] (a duplicate, cursor unchanged), UV_ENOMEM. */
int twc__cursor_advance(twc__cursor *c, const char *origin, size_t len, uint64_t seq);
/* Entry-wise maximum of dst and src into dst. 0 or UV_ENOMEM. */
int twc__cursor_merge(twc__cursor *dst, const twc__cursor *src);
/* The entry for origin, 0 when absent. */
uint64_t twc__cursor_get(const twc__cursor *c, const char *origin, size_t len);
/* Parses a cursor in any of the protocol's forms: {"ORIGIN": SEQ, ...} or "ORIGIN:SEQ"
 * (JSON string). Seqs are integers 0..2^64-1, read exactly. Returns 0 and replaces *out,
 * or TWC_E_CURSOR (out untouched) / UV_ENOMEM. */
int twc__cursor_parse(const char *s, size_t n, twc__cursor *out);
/* Appends the cursor as a JSON object. 0 or UV_ENOMEM. */
int twc__cursor_json(const twc__cursor *c, twc__buf *out);
void twc__cursor_free(twc__cursor *c);

/* ---- transport: one WebSocket connection attempt (twc_conn.c) --------------------------- */

typedef struct twc__conn twc__conn;

/* What the connection reports to its owner. It calls these only while attached (see
 * twc__conn_detach). */
typedef struct twc__conn_events {
    /* The 101 was valid: the WebSocket is open and messages may be sent. */
    void (*on_open)(void *owner, twc__conn *conn);
    /* A complete text message; text[len] == '\0' and the text may be modified in place. */
    void (*on_message)(void *owner, twc__conn *conn, char *text, size_t len);
    /* The connection ended: err (never 0) and, for TWC_E_PEER_CLOSED, the close code and
     * reason. The connection is already detached and cleans itself up. */
    void (*on_close)(void *owner, twc__conn *conn, const twc_error *why);
} twc__conn_events;

typedef struct twc__conn_config {
    const twc__url *url;
    unsigned connect_timeout_ms;
    size_t max_message_bytes;
} twc__conn_config;

/* Starts resolving/connecting. Returns 0 and *out, or a negative code (nothing to clean
 * up). The conn copies what it needs from cfg. */
int twc__conn_start(uv_loop_t *loop, const twc__conn_config *cfg, twc__rng *rng,
                    const twc__conn_events *ev, void *owner, twc__conn **out);
/* Queues one text message (copied, masked) and schedules the write. Only when open. */
int twc__conn_send_text(twc__conn *conn, const char *p, size_t n);
/* Same, with the text given as two pieces (avoids joining them first). */
int twc__conn_send_text2(twc__conn *conn, const char *a, size_t an, const char *b, size_t bn);
/* Idle deadline: the connection fails with TWC_E_TIMEOUT when nothing arrives for ms
 * (0 disables); replaces the connect deadline. */
void twc__conn_set_idle_timeout(twc__conn *conn, uint64_t ms);
/* Graceful close of an open connection: sends close(code), waits up to timeout_ms for the
 * server's close frame, then reports on_close (TWC_E_PEER_CLOSED with the server's code, or
 * TWC_E_TIMEOUT) and closes the socket; returns true. A connection not open yet is
 * detached and closed at once without on_close; returns false. */
bool twc__conn_close(twc__conn *conn, uint16_t code, unsigned timeout_ms);
/* Abortive: stops reporting to the owner at once (no on_close) and closes the socket. */
void twc__conn_detach(twc__conn *conn);

#endif /* TWC_INT_H */
