/* api.c — see api.h. */
#include "api.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void respond_json(tw_conn *c, int status, tw_buf *body)
{
    tw_conn_http_respond(c, status, "application/json", tw_buf_data(body), body->len, NULL);
}

static void respond_error(tw_conn *c, int status, const char *message)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    if (tw_buf_append_str(&b, "{\"error\":") == 0 &&
        tw_buf_append_json_string(&b, message, strlen(message)) == 0 &&
        tw_buf_append_str(&b, "}\n") == 0)
        respond_json(c, status, &b);
    else
        tw_conn_http_respond(c, 500, NULL, NULL, 0, NULL);
    tw_buf_free(&b);
}

/* With --api-key set, the API wants `Authorization: Bearer KEY`; compared in constant time. */
static int api_authorized(tw_conn *c, const tw_http_request *req)
{
    const char *key = c->srv->cfg->api_key;
    if (!*key) return 1;
    const char *auth = req->authorization;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
    const char *given = auth + 7;
    size_t kl = strlen(key), gl = strlen(given);
    return kl == gl && CRYPTO_memcmp(key, given, kl) == 0;
}

/* POST /api/publish {"channel": "...", "data": ...} -> {"pos": "..."} after the commit. The
 * body goes through the same codec as a WebSocket publish: same checks, data kept exactly. */
static void api_publish(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    tw_request r;
    tw_proto_error err;
    int rc = tw_proto_decode_as(TW_ENC_JSON, TW_OP_PUBLISH, tw_buf_data(&req->body), req->body.len,
                                &srv->limits, &r, &err);
    if (rc != 0) {
        respond_error(c, rc == -EINVAL ? err.code : 500, rc == -EINVAL ? err.message : "out of memory");
        return;
    }
    int code = tw_server_publish(srv, c, TW_PUB_HTTP, NULL, r.sub.channel, r.sub.channel_len,
                                 r.data_encoding, r.data, r.data_len);
    r.sub.channel = NULL; /* the server took them */
    r.data = NULL;
    tw_request_free(&r);
    if (code) {
        srv->stats.publishes_refused++;
        respond_error(c, code, code == 503 ? "the log is not taking writes now, retry"
                                           : "publish failed");
    }
    /* else: http_busy stays set until tw_api_publish_done */
}

void tw_api_publish_done(tw_conn *c, const char *origin, uint64_t seq, int code, const char *msg)
{
    if (code) {
        respond_error(c, code, msg);
        return;
    }
    char body[TW_STORE_ORIGIN_MAX + 48];
    int n = snprintf(body, sizeof body, "{\"pos\":\"%s:%llu\"}\n", origin, (unsigned long long)seq);
    tw_conn_http_respond(c, 200, "application/json", body, (size_t)n, NULL);
}

static void respond_stats(tw_conn *c, int prometheus)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    int rc = prometheus ? tw_stats_render_prometheus(c->srv, &b) : tw_stats_render_json(c->srv, &b);
    if (rc == 0)
        tw_conn_http_respond(c, 200,
                             prometheus ? "text/plain; version=0.0.4; charset=utf-8"
                                        : "application/json",
                             tw_buf_data(&b), b.len, NULL);
    else
        respond_error(c, 500, "out of memory");
    tw_buf_free(&b);
}

void tw_api_handle(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    const char *path = req->path;
    int get = req->method == HTTP_GET || req->method == HTTP_HEAD;
    if (strcmp(path, "/healthz") == 0 && get) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        tw_conn_http_respond(c, 200, "application/json", ok, sizeof ok - 1, NULL);
    } else if (strcmp(path, "/readyz") == 0 && get) {
        static const char yes[] = "{\"ready\":true}\n", no[] = "{\"ready\":false}\n";
        int ready = srv->ready && !srv->draining;
        tw_conn_http_respond(c, ready ? 200 : 503, "application/json", ready ? yes : no,
                             ready ? sizeof yes - 1 : sizeof no - 1, NULL);
    } else if (strcmp(path, "/stats") == 0 && get) {
        respond_stats(c, 0);
    } else if (strcmp(path, "/metrics") == 0 && get) {
        respond_stats(c, 1);
    } else if (strcmp(path, "/api/publish") == 0) {
        if (req->method != HTTP_POST) respond_error(c, 405, "use POST");
        else if (!api_authorized(c, req)) respond_error(c, 401, "missing or wrong API key");
        else api_publish(c, req);
    /* -- history (issue 3) -- */
    /* -- broadcast, presence, disconnect (issue 5) -- */
    /* -- admin dashboard (issue 7) -- */
    } else if (strcmp(path, "/ws") == 0) {
        /* A plain request to the WebSocket endpoint: say what it wants. */
        tw_conn_http_respond(c, 426, "application/json",
                             "{\"error\":\"WebSocket upgrade required\"}\n", 38,
                             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    } else {
        respond_error(c, 404, "not found");
    }
}
