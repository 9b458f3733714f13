/* http.c — see http.h. */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static tw_http_reader *reader_of(http_parser *p)
{
    return (tw_http_reader *)p->data;
}

/* Counts head bytes against the cap; on overflow records 431 and stops the parser. */
static int count_head(tw_http_reader *r, size_t n)
{
    r->head_bytes += n;
    if (r->head_bytes > r->max_head) {
        r->status = 431;
        return -1;
    }
    return 0;
}

/* Appends to a NUL-terminated heap string. */
static int append_str(char **slot, size_t *len, const char *at, size_t n)
{
    size_t old = *slot ? (len ? *len : strlen(*slot)) : 0;
    char *p = realloc(*slot, old + n + 1);
    if (!p) return -1;
    memcpy(p + old, at, n);
    p[old + n] = '\0';
    *slot = p;
    if (len) *len = old + n;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    (void)p;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    tw_http_reader *r = reader_of(p);
    if (count_head(r, n) || append_str(&r->url, &r->url_len, at, n)) return -1;
    return 0;
}

/* Chooses where the value of the header named in r->field goes. */
static char **slot_for(tw_http_request *q, const char *name)
{
    static const struct {
        const char *name;
        size_t off;
    } kept[] = {
        {"upgrade", offsetof(tw_http_request, upgrade)},
        {"connection", offsetof(tw_http_request, connection)},
        {"sec-websocket-key", offsetof(tw_http_request, ws_key)},
        {"sec-websocket-version", offsetof(tw_http_request, ws_version)},
        {"sec-websocket-protocol", offsetof(tw_http_request, ws_protocol)},
        {"origin", offsetof(tw_http_request, origin)},
        {"authorization", offsetof(tw_http_request, authorization)},
        {"content-type", offsetof(tw_http_request, content_type)},
    };
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        if (strcmp(name, kept[i].name) == 0) return (char **)((char *)q + kept[i].off);
    return NULL;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    tw_http_reader *r = reader_of(p);
    if (count_head(r, n)) return -1;
    if (r->in_value) { /* a new header begins */
        r->in_value = 0;
        r->field_len = 0;
        r->field_overflow = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (r->field_len + 1 >= sizeof r->field) {
            r->field_overflow = 1;
            break;
        }
        r->field[r->field_len++] = (char)tolower((unsigned char)at[i]);
    }
    r->field[r->field_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    tw_http_reader *r = reader_of(p);
    if (count_head(r, n)) return -1;
    if (!r->in_value) {
        r->in_value = 1;
        r->value_slot = r->field_overflow ? NULL : slot_for(&r->req, r->field);
        /* A repeated header continues the same value, comma-separated (RFC 9110 5.3). */
        if (r->value_slot && *r->value_slot && append_str(r->value_slot, NULL, ", ", 2))
            return -1;
    }
    if (r->value_slot && append_str(r->value_slot, NULL, at, n)) return -1;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    tw_http_reader *r = reader_of(p);
    if (p->content_length != ULLONG_MAX && p->content_length > r->max_body) {
        r->status = 413;
        return -1;
    }
    r->req.method = (enum http_method)p->method;
    r->req.http_major = p->http_major;
    r->req.http_minor = p->http_minor;
    r->req.keep_alive = http_should_keep_alive(p);
    r->req.upgrade_requested = p->upgrade;
    /* Split the path from the query; the fragment never reaches a server. */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!r->url || http_parser_parse_url(r->url, r->url_len, p->method == HTTP_CONNECT, &u) != 0) {
        r->status = 400;
        return -1;
    }
    if (u.field_set & (1 << UF_PATH)) {
        r->req.path = strndup(r->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    } else {
        r->req.path = strdup("/");
    }
    if (u.field_set & (1 << UF_QUERY))
        r->req.query = strndup(r->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    if (!r->req.path || ((u.field_set & (1 << UF_QUERY)) && !r->req.query)) return -1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    tw_http_reader *r = reader_of(p);
    if (r->req.body.len + n > r->max_body) {
        r->status = 413; /* chunked bodies have no Content-Length to check up front */
        return -1;
    }
    return tw_buf_append(&r->req.body, at, n) ? -1 : 0;
}

static int on_message_complete(http_parser *p)
{
    tw_http_reader *r = reader_of(p);
    r->complete = 1;
    /* Stop here: the bytes after this request wait until its response is written. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void tw_http_reader_init(tw_http_reader *r, size_t max_head, size_t max_body)
{
    memset(r, 0, sizeof *r);
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    r->max_head = max_head;
    r->max_body = max_body;
    tw_buf_init(&r->req.body, 0);
}

static void request_free(tw_http_request *q)
{
    free(q->path);
    free(q->query);
    free(q->upgrade);
    free(q->connection);
    free(q->ws_key);
    free(q->ws_version);
    free(q->ws_protocol);
    free(q->origin);
    free(q->authorization);
    free(q->content_type);
    tw_buf_free(&q->body);
    memset(q, 0, sizeof *q);
    tw_buf_init(&q->body, 0);
}

void tw_http_reader_free(tw_http_reader *r)
{
    request_free(&r->req);
    free(r->url);
    r->url = NULL;
}

void tw_http_reader_reset(tw_http_reader *r)
{
    size_t max_head = r->max_head, max_body = r->max_body;
    tw_http_reader_free(r);
    tw_http_reader_init(r, max_head, max_body);
}

int tw_http_feed(tw_http_reader *r, const char *data, size_t len, size_t *consumed)
{
    size_t n = http_parser_execute(&r->parser, &parser_settings, data, len);
    *consumed = n;
    enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
    if (r->complete && r->parser.upgrade) return TW_HTTP_UPGRADE;
    if (r->complete && (err == HPE_OK || err == HPE_PAUSED)) return TW_HTTP_COMPLETE;
    if (err != HPE_OK) {
        if (!r->status) r->status = 400;
        return TW_HTTP_ERROR;
    }
    if (r->parser.upgrade) { /* upgrade head complete but message_complete not seen */
        r->complete = 1;
        return TW_HTTP_UPGRADE;
    }
    return TW_HTTP_NEED_MORE;
}

/* Does a comma-separated header value hold `token` (case-insensitive)? */
static int has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == tl && strncasecmp(p, token, tl) == 0) return 1;
        p = end;
    }
    return 0;
}

void tw_ws_accept_key(const char *key, char accept[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha1(), NULL) || !EVP_DigestUpdate(c, key, strlen(key)) ||
        !EVP_DigestUpdate(c, guid, sizeof guid - 1) || !EVP_DigestFinal_ex(c, digest, &dlen)) {
        accept[0] = '\0'; /* an empty accept key fails the client's check: never a wrong yes */
        EVP_MD_CTX_free(c);
        return;
    }
    EVP_MD_CTX_free(c);
    EVP_EncodeBlock((unsigned char *)accept, digest, (int)dlen);
}

/* A Sec-WebSocket-Key must be base64 of exactly 16 bytes: 22 characters and "==". */
static int key_valid(const char *key)
{
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=') return 0;
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)key[i]) && key[i] != '+' && key[i] != '/') return 0;
    /* 22 characters carry 132 bits: the last one's low 4 bits must be zero. */
    return strchr("AQgw", key[21]) != NULL;
}

int tw_ws_check_upgrade(const tw_http_request *req, const char *const *protocols, size_t nprotocols,
                        char accept[29], int *protocol)
{
    if (!req->upgrade || !has_token(req->upgrade, "websocket")) return 426;
    if (req->method != HTTP_GET) return 400;
    if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1)) return 400;
    if (!req->connection || !has_token(req->connection, "upgrade")) return 400;
    if (!req->ws_version || strcmp(req->ws_version, "13") != 0) return 426;
    if (!req->ws_key || !key_valid(req->ws_key)) return 400;
    *protocol = -1;
    if (req->ws_protocol) {
        /* The client lists what it speaks in order of preference: take the first we do. */
        const char *p = req->ws_protocol;
        int found = -1;
        while (*p && found < 0) {
            while (*p == ' ' || *p == ',')
                p++;
            const char *end = p + strcspn(p, ", ");
            for (size_t i = 0; i < nprotocols && found < 0; i++)
                if (strlen(protocols[i]) == (size_t)(end - p) &&
                    strncmp(protocols[i], p, (size_t)(end - p)) == 0)
                    found = (int)i;
            p = end;
        }
        if (found < 0) return 400;
        *protocol = found;
    }
    tw_ws_accept_key(req->ws_key, accept);
    return 0;
}

const char *tw_http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

int tw_http_write_response(tw_buf *out, int status, const char *body_type, const void *body,
                           size_t body_len, int keep_alive, const char *extra_headers)
{
    int rc = tw_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, tw_http_status_text(status));
    if (!rc && body_type) rc = tw_buf_printf(out, "Content-Type: %s\r\n", body_type);
    if (!rc)
        rc = tw_buf_printf(out, "Content-Length: %zu\r\nConnection: %s\r\nCache-Control: no-store\r\n%s\r\n",
                           body_len, keep_alive ? "keep-alive" : "close",
                           extra_headers ? extra_headers : "");
    if (!rc && body_len) rc = tw_buf_append(out, body, body_len);
    return rc;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tw_http_query_param(const char *query, const char *name, char *out, size_t outlen)
{
    if (!query) return -1;
    size_t nl = strlen(name);
    const char *p = query;
    while (*p) {
        const char *end = p + strcspn(p, "&");
        if ((size_t)(end - p) >= nl && strncmp(p, name, nl) == 0 && (p[nl] == '=' || p + nl == end)) {
            const char *v = p[nl] == '=' ? p + nl + 1 : end;
            size_t n = 0;
            while (v < end) {
                int c = (unsigned char)*v;
                if (c == '+') {
                    c = ' ';
                    v++;
                } else if (c == '%') {
                    if (end - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0) return -1;
                    c = hexval(v[1]) * 16 + hexval(v[2]);
                    v += 3;
                } else {
                    v++;
                }
                if (n + 1 >= outlen) return -1;
                out[n++] = (char)c;
            }
            out[n] = '\0';
            return (int)n;
        }
        p = *end ? end + 1 : end;
    }
    return -1;
}
