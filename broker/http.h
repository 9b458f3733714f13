/*
 * http.h — HTTP/1.1 requests over http-parser, and the WebSocket upgrade check. No I/O:
 * bytes in, a parsed request (or an HTTP status to refuse with) out, so tests feed it
 * scripted bytes.
 *
 * http-parser 2.9 has an 80 KiB header cap fixed at build time; this reader enforces the
 * node's own smaller cap on the request head and a cap on the body, and keeps only the
 * headers the node uses.
 */
#ifndef TW_HTTP_H
#define TW_HTTP_H

#include <http_parser.h>
#include <stddef.h>

#include "buf.h"

typedef struct tw_http_request {
    enum http_method method;
    unsigned short http_major, http_minor;
    char *path; /* URL path, NUL-terminated, without the query */
    char *query; /* after '?', NUL-terminated, or NULL */
    /* The headers the node reads (NULL when absent; repeated headers joined with ", "). */
    char *upgrade;
    char *connection;
    char *ws_key;
    char *ws_version;
    char *ws_protocol;
    char *origin;
    char *authorization;
    char *content_type;
    tw_buf body;
    int keep_alive; /* the client accepts another request on this connection */
    int upgrade_requested; /* http-parser saw an upgrade (Upgrade + Connection: upgrade) */
} tw_http_request;

typedef struct tw_http_reader {
    http_parser parser;
    tw_http_request req;
    size_t max_head, max_body;
    size_t head_bytes;
    char *url;
    size_t url_len;
    char field[40]; /* current header name, lower-cased; longer names are not kept */
    size_t field_len;
    int field_overflow;
    char **value_slot; /* where the current header's value goes, or NULL to drop it */
    int in_value;
    int status;   /* HTTP status to refuse with, set by callbacks */
    int complete; /* a whole request was read */
} tw_http_reader;

enum {
    TW_HTTP_NEED_MORE = 0, /* all bytes consumed, request not complete yet */
    TW_HTTP_COMPLETE = 1,  /* a request is complete; bytes after *consumed belong to the next */
    TW_HTTP_UPGRADE = 2,   /* an upgrade request's head is complete; bytes after *consumed are
                              the new protocol's (WebSocket frames): never drop them */
    TW_HTTP_ERROR = -1,    /* refuse with tw_http_reader.status (400, 413, 431...) and close */
};

/* Prepares a reader. max_head bounds the request line and headers, max_body the body. */
void tw_http_reader_init(tw_http_reader *r, size_t max_head, size_t max_body);

/* Frees what the reader holds (the request too). */
void tw_http_reader_free(tw_http_reader *r);

/* Drops the finished request and readies the reader for the next one (keep-alive). */
void tw_http_reader_reset(tw_http_reader *r);

/* Feeds bytes; see the TW_HTTP_* results. After COMPLETE, call reset before feeding the
 * bytes that follow; after UPGRADE or ERROR, feed nothing more. */
int tw_http_feed(tw_http_reader *r, const char *data, size_t len, size_t *consumed);

/*
 * Checks a WebSocket upgrade request strictly (RFC 6455 4.2.1): GET, HTTP/1.1,
 * `Upgrade: websocket`, `Connection` containing the token `upgrade`,
 * `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key` that decodes to 16 bytes, and a
 * subprotocol we speak when the client offers any. Returns 0 and fills accept[29]
 * (NUL-terminated Sec-WebSocket-Accept) and *protocol (index into `protocols`, or -1 when
 * the client offered none), or an HTTP status: 400, or 426 (with the version header to send)
 * when the version is not 13 or the request is not an upgrade at all.
 */
int tw_ws_check_upgrade(const tw_http_request *req, const char *const *protocols, size_t nprotocols,
                        char accept[29], int *protocol);

/* Computes Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)). */
void tw_ws_accept_key(const char *key, char accept[29]);

/* Reason phrase for a status ("Bad Request"). */
const char *tw_http_status_text(int status);

/*
 * Appends a whole response: status line, Content-Type (when body_type is not NULL),
 * Content-Length, Connection, any `extra_headers` (each ending in \r\n), and the body.
 */
int tw_http_write_response(tw_buf *out, int status, const char *body_type, const void *body,
                           size_t body_len, int keep_alive, const char *extra_headers);

/* Finds `name` in a query string ("a=1&b=2") and URL-decodes its value into out (at most
 * outlen-1 bytes, NUL-terminated). Returns the decoded length, or -1 when absent or invalid. */
int tw_http_query_param(const char *query, const char *name, char *out, size_t outlen);

#endif /* TW_HTTP_H */
