/*
 * twc — the tidewire C client.
 *
 * A twc_client is one logical connection to a tidewire node over WebSocket (subprotocol
 * tidewire.v1.json, docs/protocol.md). It reconnects by itself, re-subscribes every channel
 * from where it left off, and drops duplicate events exactly, so the application sees each
 * event of a channel once and in order per origin.
 *
 * Threading: a client lives on the libuv loop given to twc_client_new. Every function of
 * this header must be called on that loop's thread, and every callback runs on it. Many
 * clients may share one loop (the benchmark runs a thousand). Nothing here blocks.
 *
 * Callbacks may call any twc_* function on their own client (including twc_close and
 * twc_free) or on another client. Pointers passed to a callback are valid only until it
 * returns: copy what you keep.
 *
 * Errors: functions that act return 0 or a negative code: one of TWC_E_* below or a
 * negative errno / libuv error (UV_ENOMEM, UV_ECONNREFUSED...). twc_strerror names both.
 *
 * Delivery guarantees:
 *  - Events: at-least-once from the server, exactly-once to the application per
 *    subscription: the client keeps a cursor per channel (a version vector origin -> last
 *    seq) and drops every event whose seq is not above its origin's entry.
 *  - Publishes: at-least-once. A publish not acknowledged when the connection drops is sent
 *    again after reconnecting, so the channel may hold it twice (with two positions) if the
 *    first copy was in fact committed. Publishes made while disconnected wait in a bounded
 *    queue and are sent after reconnecting, in order.
 */
#ifndef TWC_H
#define TWC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes specific to twc (libuv and errno codes are used as they are). */
#define TWC_ERRNO_MAP(XX)                                                                          \
    XX(URL, -20001, "invalid URL")                                                                 \
    XX(UNSUPPORTED, -20002, "not supported by this build")                                         \
    XX(STATE, -20003, "not allowed in the client's current state")                                 \
    XX(QUEUE_FULL, -20004, "outbound queue full")                                                  \
    XX(CLOSED, -20005, "client closed before the request completed")                               \
    XX(EXISTS, -20006, "already subscribed to this channel")                                       \
    XX(NOT_FOUND, -20007, "not subscribed to this channel")                                        \
    XX(HANDSHAKE, -20008, "WebSocket handshake refused or malformed")                              \
    XX(PROTOCOL, -20009, "protocol violation by the server")                                       \
    XX(TIMEOUT, -20010, "timed out")                                                               \
    XX(SERVER, -20011, "error reply from the server")                                              \
    XX(PEER_CLOSED, -20012, "connection closed by the server")                                     \
    XX(CURSOR, -20013, "invalid cursor")                                                           \
    XX(JSON, -20014, "invalid JSON text")                                                          \
    XX(TOO_BIG, -20015, "message too big")                                                         \
    XX(ARG, -20016, "invalid argument")

typedef enum twc_errno {
#define TWC__XX(name, value, text) TWC_E_##name = value,
    TWC_ERRNO_MAP(TWC__XX)
#undef TWC__XX
} twc_errno;

/* Returns a static, human-readable description of err (a TWC_E_* or a libuv/errno code). */
const char *twc_strerror(int err);

typedef struct twc_client twc_client;

/* Connection state as an application shows it (a connection indicator). */
typedef enum twc_state {
    TWC_STATE_DISCONNECTED = 0, /* not connected and not trying (initial, after close/stop) */
    TWC_STATE_CONNECTING,       /* first attempt after twc_connect */
    TWC_STATE_CONNECTED,        /* the server answered `connected` */
    TWC_STATE_RECONNECTING,     /* lost or failed; waiting for or making the next attempt */
} twc_state;

/* Returns "disconnected", "connecting", "connected" or "reconnecting". */
const char *twc_state_name(twc_state state);

/* Why something failed. Valid only during the callback that receives it. */
typedef struct twc_error {
    int err;             /* TWC_E_* or a negative libuv/errno code; never 0 */
    int code;            /* TWC_E_SERVER: the reply's code (400..503);
                            TWC_E_PEER_CLOSED: the WebSocket close code; else 0 */
    const char *message; /* human-readable detail, never NULL */
    const char *channel; /* the channel of a refused subscription, or NULL */
} twc_error;

/* One event delivered to the application. Valid only during on_event. */
typedef struct twc_event {
    const char *channel; /* NUL-terminated */
    const char *pos;     /* "ORIGIN:SEQ", NUL-terminated */
    const char *origin;  /* points into pos; origin_len bytes, not NUL-terminated */
    size_t origin_len;
    uint64_t seq;
    int64_t ts;       /* milliseconds since the Unix epoch, set by the accepting node */
    const char *data; /* the event's data as JSON text, NUL-terminated */
    size_t data_len;
} twc_event;

/* State changed. why is the cause for RECONNECTING/DISCONNECTED after a failure, else NULL. */
typedef void (*twc_state_cb)(twc_client *client, twc_state state, const twc_error *why, void *arg);
/* A new (not duplicate) event of a subscribed channel. The channel's cursor already includes
 * it when this runs, so twc_cursor_json() here returns the cursor to save with it. */
typedef void (*twc_event_cb)(twc_client *client, const twc_event *ev, void *arg);
/* The server confirmed a subscription (again after each reconnect). recovered == false: the
 * cursor reached back past what the node keeps, events were lost to retention, and the
 * application should reload its state from its own back end. replayed: events from the log
 * follow. */
typedef void (*twc_subscribed_cb)(twc_client *client, const char *channel, bool recovered,
                                  bool replayed, void *arg);
/* Something failed that the client handles by itself but the application may want to log
 * or show: a connection attempt failed or a connection dropped (the client retries), the
 * server refused a subscription (err->channel names it; the subscription is removed), an
 * error reply to no known request, a malformed message from the server. */
typedef void (*twc_error_cb)(twc_client *client, const twc_error *err, void *arg);
/* A publish completed: err == NULL and pos = "ORIGIN:SEQ" once the event is durable; or
 * err != NULL and pos == NULL when the server refused it (TWC_E_SERVER with err->code) or
 * the client stopped before it was acknowledged (TWC_E_CLOSED: it may or may not have been
 * stored). Called exactly once per accepted twc_publish, except after twc_free. */
typedef void (*twc_ack_cb)(twc_client *client, const twc_error *err, const char *pos, void *arg);

/* Options of twc_client_new. Zero-initialise, set url and the callbacks you need; zero
 * numeric fields take the defaults noted. Strings are copied; the struct need not outlive
 * the call. */
typedef struct twc_options {
    const char *url;   /* required: ws://HOST[:PORT][/PATH] (path defaults to /ws);
                          wss:// is reserved for TLS and refused as TWC_E_UNSUPPORTED */
    const char *token; /* optional: sent in the `connect` request */
    twc_state_cb on_state;
    twc_event_cb on_event;
    twc_subscribed_cb on_subscribed;
    twc_error_cb on_error;
    void *arg; /* passed to every callback above */

    unsigned backoff_initial_ms; /* 100: the first retry waits up to this */
    unsigned backoff_max_ms;     /* 10000: no retry waits longer */
    double backoff_factor;       /* 2: the cap grows by this per failed attempt */
    unsigned connect_timeout_ms; /* 10000: DNS + TCP + handshake + `connected` reply */
    unsigned close_timeout_ms;   /* 2000: how long twc_close waits for the server's close */
    size_t max_queued_bytes;     /* 8 MiB: publishes held (queued or unacknowledged) */
    size_t max_message_bytes;    /* 64 MiB: largest message accepted from the server */
    size_t max_publish_bytes;    /* 1 MiB: largest publish message (the node's default cap) */
} twc_options;

/* Creates a client on loop. Does not connect (see twc_connect).
 * Returns 0 and sets *out, or TWC_E_URL / TWC_E_UNSUPPORTED / TWC_E_ARG / UV_ENOMEM and
 * leaves *out untouched. Loop thread only. Free with twc_free. */
int twc_client_new(uv_loop_t *loop, const twc_options *opts, twc_client **out);

/* Starts connecting; from then on the client keeps reconnecting until twc_close, a
 * terminal close code (4000-4099) or a normal close (1000) from the server. Subscriptions
 * and queued publishes are sent once the WebSocket is open. Calls on_state(CONNECTING)
 * before returning. Returns 0 (also when already connecting or connected) or TWC_E_STATE
 * after twc_free. Loop thread only. */
int twc_connect(twc_client *client);

/* Stops: sends a close frame (1000) and waits up to close_timeout_ms for the server's, then
 * closes the socket; state becomes DISCONNECTED (on_state may run before this returns when
 * there was no open connection). Publishes not yet acknowledged complete with TWC_E_CLOSED.
 * Subscriptions and their cursors are kept: a later twc_connect resumes them. Returns 0.
 * Loop thread only. */
int twc_close(twc_client *client);

/* Destroys the client: drops the connection without a close handshake, discards queued
 * publishes without calling their ack callbacks, and calls no callback after it returns.
 * Safe inside the client's own callbacks. Memory is released once the loop has closed the
 * client's handles: keep running the loop (uv_run) afterwards so that uv_loop_close
 * succeeds. NULL is a no-op. Loop thread only. */
void twc_free(twc_client *client);

/* Subscribes to channel (a non-empty UTF-8 string), now if connected, else once connected.
 * since_json: NULL for live events only, or a cursor in one of the protocol's forms: a
 * version vector {"ORIGIN": SEQ, ...}, a position "\"ORIGIN:SEQ\"" (a JSON string), or {} for
 * everything the node keeps. last: also deliver the channel's newest `last` events first
 * (0: none). After each reconnect the client subscribes again with since = its cursor.
 * Returns 0, TWC_E_EXISTS, TWC_E_CURSOR, TWC_E_ARG or UV_ENOMEM. Loop thread only. */
int twc_subscribe(twc_client *client, const char *channel, const char *since_json, unsigned last);

/* Unsubscribes and forgets the channel's cursor (save it first with twc_cursor_json if you
 * may resume later). No event of the channel is delivered after this returns.
 * Returns 0 or TWC_E_NOT_FOUND. Loop thread only. */
int twc_unsubscribe(twc_client *client, const char *channel);

/* Publishes data_json (any JSON value, UTF-8) to channel. cb (may be NULL) runs once with
 * the outcome, never before this returns. The text is copied. Sent now if connected, else
 * queued until connected; resent after a reconnect if it was not acknowledged
 * (at-least-once). Returns 0, TWC_E_JSON (data is not valid JSON), TWC_E_ARG,
 * TWC_E_TOO_BIG (over max_publish_bytes), TWC_E_QUEUE_FULL (over max_queued_bytes: retry
 * after some acks), TWC_E_STATE (after twc_free) or UV_ENOMEM. Loop thread only. */
int twc_publish(twc_client *client, const char *channel, const char *data_json, twc_ack_cb cb,
                void *arg);

/* Returns the channel's cursor as malloc'd JSON text, e.g. {"n1.5f2c09ab":1234}, to be
 * passed back as since_json later; the caller frees it with free(). NULL when the client is
 * not subscribed to channel (or out of memory). Loop thread only. */
char *twc_cursor_json(const twc_client *client, const char *channel);

/* The current state. Loop thread only. */
twc_state twc_get_state(const twc_client *client);

/* The connected node's origin id and session id from its `connected` reply, or "" before
 * the first one. Valid until the next reconnect. Loop thread only. */
const char *twc_node(const twc_client *client);
const char *twc_session(const twc_client *client);

/* Counters since twc_client_new. */
typedef struct twc_stats {
    uint64_t events;           /* delivered to on_event */
    uint64_t duplicates;       /* dropped as already seen (seq <= cursor) */
    uint64_t connects;         /* `connected` replies received */
    uint64_t disconnects;      /* connections lost or failed */
    uint64_t publishes_sent;   /* publish messages written, resends included */
    uint64_t publishes_resent; /* of which resends after a reconnect */
    uint64_t acks;             /* successful acks */
    size_t queued_bytes;       /* publish bytes currently held */
} twc_stats;

/* Copies the client's counters into *out. Loop thread only. */
void twc_get_stats(const twc_client *client, twc_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TWC_H */
