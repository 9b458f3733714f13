/* api.c — see api.h. */
#include "api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "cluster.h"
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

/* `Authorization: Bearer KEY` against a configured key (empty: open), in constant time. */
static int bearer_matches(const char *key, const tw_http_request *req)
{
    if (!*key) return 1;
    const char *auth = req->authorization;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
    const char *given = auth + 7;
    size_t kl = strlen(key), gl = strlen(given);
    return kl == gl && CRYPTO_memcmp(key, given, kl) == 0;
}

/* With --api-key set, the API wants `Authorization: Bearer KEY`. */
static int api_authorized(tw_conn *c, const tw_http_request *req)
{
    int ok = bearer_matches(c->srv->cfg->api_key, req);
    if (!ok) c->srv->stats.api_unauthorized++;
    return ok;
}

int tw_api_admin_authorized(tw_conn *c, const tw_http_request *req)
{
    int ok = bearer_matches(c->srv->cfg->admin_key, req);
    if (!ok) c->srv->stats.api_unauthorized++;
    return ok;
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
    const char *why = "publish failed";
    int code = tw_server_publish(srv, c, TW_PUB_HTTP, NULL, r.sub.channel, r.sub.channel_len,
                                 r.data_encoding, r.data, r.data_len, &why);
    r.sub.channel = NULL; /* the server took them */
    r.data = NULL;
    tw_request_free(&r);
    if (code) {
        srv->stats.publishes_refused++;
        respond_error(c, code, why);
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

/* ---- history (issue 3) ------------------------------------------------------------------ */

#define HISTORY_DEFAULT_LIMIT 100
#define HISTORY_MAX_LIMIT 1000
/* Event data bytes one page reads at most (a page may then hold fewer than `limit`). */
#define HISTORY_MAX_BYTES (4u << 20)

typedef struct history_page {
    tw_buf *out;
    tw_cursor *cur; /* the request's cursor, advanced past every event written */
    size_t n, limit;
    int more; /* an event the cursor had not seen was left for the next page */
    int rc;
} history_page;

/* The cursor's entry for an origin, appended (0) when absent. NULL when full. */
static tw_store_cursor_entry *cursor_entry(tw_cursor *c, const char *origin, size_t cap)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i].origin, origin) == 0) return &c->entries[i];
    if (c->n == cap) return NULL;
    snprintf(c->origins[c->n], sizeof c->origins[c->n], "%s", origin);
    c->entries[c->n].origin = c->origins[c->n];
    c->entries[c->n].seq = 0;
    return &c->entries[c->n++];
}

static int history_event(void *arg, const tw_store_event *ev)
{
    history_page *pg = arg;
    tw_store_cursor_entry *e = cursor_entry(pg->cur, ev->origin, 64);
    if (!e) {
        pg->rc = -1;
        return 1;
    }
    if (ev->seq <= e->seq) return 0; /* seen already (origins interleaved past the cursor) */
    if (pg->n == pg->limit) {
        pg->more = 1;
        return 1;
    }
    pg->rc |= tw_buf_append_str(pg->out, pg->n ? "," : "");
    pg->rc |= tw_proto_encode_event(pg->out, TW_ENC_JSON, ev->channel, ev->channel_len, ev->origin,
                                    ev->seq, ev->ts_ms, (tw_encoding)ev->encoding,
                                    (const uint8_t *)ev->data, ev->data_len);
    e->seq = ev->seq;
    pg->n++;
    return pg->rc != 0;
}

/*
 * GET /api/history?channel=NAME[&since=CURSOR][&limit=N] -> {"channel", "recovered",
 * "events": [event messages, as a JSON WebSocket client gets them], "next": CURSOR,
 * "more": bool}. `since` is a cursor as in subscribe (absent or {}: from the oldest kept);
 * `next` is the cursor to pass as `since` for the following page. Reads in bounded steps on
 * the loop, like a replay chunk; never more than HISTORY_MAX_LIMIT events per page.
 */
static void api_history(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    char ch[TW_STORE_CHANNEL_MAX + 1], lim[24];
    char *since = NULL;
    int len = tw_http_query_param(req->query, "channel", ch, sizeof ch);
    if (len < 1 || !tw_channel_valid(ch, (size_t)len, srv->limits.max_channel_len)) {
        respond_error(c, 400, "channel=NAME is required");
        return;
    }
    size_t limit = HISTORY_DEFAULT_LIMIT;
    int ll = tw_http_query_param(req->query, "limit", lim, sizeof lim);
    if (ll > 0) {
        char *end = NULL;
        unsigned long long v = strtoull(lim, &end, 10);
        if (*end || lim[0] == '-' || v < 1 || v > HISTORY_MAX_LIMIT) {
            respond_error(c, 400, "limit must be 1 to 1000");
            return;
        }
        limit = (size_t)v;
    }
    /* The cursor: room for what a client may send, plus every origin this log holds. */
    tw_cursor cur = {0};
    size_t qlen = req->query ? strlen(req->query) : 0;
    since = malloc(qlen + 1);
    int sl = since ? tw_http_query_param(req->query, "since", since, qlen + 1) : -1;
    if (!since) {
        respond_error(c, 500, "out of memory");
        return;
    }
    tw_proto_limits lims = srv->limits;
    if (sl > 0) {
        tw_proto_error err;
        int rc = tw_cursor_parse_json(since, (size_t)sl, &lims, &cur, &err);
        if (rc != 0) {
            free(since);
            respond_error(c, rc == -EINVAL ? 400 : 500,
                          rc == -EINVAL ? "since: expected a cursor {\"origin\": seq, ...}"
                                        : "out of memory");
            return;
        }
    }
    free(since);
    if (cur.n > 64) {
        tw_cursor_free(&cur);
        respond_error(c, 400, "since: at most 64 origins");
        return;
    }
    /* Widen the cursor's storage to 64 entries so the page can add origins it meets. */
    tw_cursor page = {0};
    page.entries = calloc(64, sizeof *page.entries);
    page.origins = calloc(64, sizeof *page.origins);
    if (!page.entries || !page.origins) {
        free(page.entries);
        free(page.origins);
        tw_cursor_free(&cur);
        respond_error(c, 500, "out of memory");
        return;
    }
    for (size_t i = 0; i < cur.n; i++)
        cursor_entry(&page, cur.entries[i].origin, 64)->seq = cur.entries[i].seq;
    tw_cursor_free(&cur);

    uint64_t after = 0;
    int recovered = 1, at_head = 1, rc;
    rc = tw_store_resolve_cursor(srv->reader, ch, (size_t)len, page.entries, page.n, &after,
                                 &recovered);
    tw_buf b;
    tw_buf_init(&b, 0);
    rc |= tw_buf_append_str(&b, "{\"channel\":");
    rc |= tw_buf_append_json_string(&b, ch, (size_t)len);
    rc |= tw_buf_printf(&b, ",\"recovered\":%s,\"events\":[", recovered ? "true" : "false");
    history_page pg = {.out = &b, .cur = &page, .limit = limit};
    /* Events at or below the cursor may follow `after` (interleaved origins): a few steps
     * may pass nothing; each step is bounded, and so is their number. */
    for (int step = 0; rc == 0 && pg.n < limit && step < 64; step++) {
        uint64_t last = after;
        rc = tw_store_read_channel(srv->reader, ch, (size_t)len, after, limit - pg.n + 1,
                                   HISTORY_MAX_BYTES, history_event, &pg, &last, &at_head, NULL);
        rc |= pg.rc;
        if (rc || at_head || last == after) break;
        after = last;
    }
    rc |= tw_buf_append_str(&b, "],\"next\":");
    rc |= tw_cursor_to_json(&b, page.entries, page.n);
    /* more: an unseen event did not fit, or the read stopped before the channel's end. */
    int more = pg.more || (pg.n == limit && !at_head);
    rc |= tw_buf_printf(&b, ",\"more\":%s}\n", more ? "true" : "false");
    if (rc == 0) {
        respond_json(c, 200, &b);
    } else {
        tw_error("store-read", "history of a channel could not be read");
        respond_error(c, 500, "could not read the log");
    }
    tw_buf_free(&b);
    free(page.entries);
    free(page.origins);
}

/* ---- broadcast, presence, disconnect (issue 5) ---------------------------------------- */

#define BROADCAST_MAX_CHANNELS 1024

/*
 * POST /api/broadcast {"channels": [...], "data": ...} -> {"pos": "..."}: one event per
 * channel, the same data, in the order given. The data goes through the codec exactly as a
 * publish's (same checks, numbers kept as written): the body is read as a publish to the
 * first channel (`channels` is a field the codec ignores), then copied for the others.
 * The response follows the commit of the last event; the log commits in submission order,
 * so every event of the broadcast is durable by then. `pos` is the last event's position.
 */
static void api_broadcast(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    const char *why = "broadcast failed";
    const char *body = (const char *)tw_buf_data(&req->body);
    size_t blen = req->body.len;
    cJSON *j = cJSON_ParseWithLength(body, blen);
    const cJSON *chs = j ? cJSON_GetObjectItemCaseSensitive(j, "channels") : NULL;
    int n = cJSON_IsArray(chs) ? cJSON_GetArraySize(chs) : -1;
    if (!j || !cJSON_IsObject(j) || n < 1 || n > BROADCAST_MAX_CHANNELS) {
        cJSON_Delete(j);
        respond_error(c, 400, "expected {\"channels\": [1 to 1024 channel names], \"data\": ...}");
        return;
    }
    for (const cJSON *e = chs->child; e; e = e->next)
        if (!cJSON_IsString(e) || !tw_channel_valid(e->valuestring, strlen(e->valuestring),
                                                    srv->limits.max_channel_len)) {
            cJSON_Delete(j);
            respond_error(c, 400, "channels: each must be a channel name (1-255 visible ASCII)");
            return;
        }
    /* {"channel":"FIRST", + the body after its '{' */
    size_t at = 0;
    while (at < blen &&
           (body[at] == ' ' || body[at] == '\t' || body[at] == '\r' || body[at] == '\n'))
        at++;
    if (at >= blen || body[at] != '{') { /* cJSON took a byte-order mark or other blanks */
        cJSON_Delete(j);
        respond_error(c, 400, "the body must start with '{'");
        return;
    }
    tw_buf b;
    tw_buf_init(&b, 0);
    int rc = tw_buf_append_str(&b, "{\"channel\":");
    rc |= tw_buf_append_json_string(&b, chs->child->valuestring, strlen(chs->child->valuestring));
    rc |= tw_buf_putc(&b, ',');
    rc |= tw_buf_append(&b, body + at + 1, blen - at - 1);
    tw_request r;
    tw_proto_error err;
    if (rc == 0)
        rc = tw_proto_decode_as(TW_ENC_JSON, TW_OP_PUBLISH, tw_buf_data(&b), b.len, &srv->limits,
                                &r, &err);
    else
        rc = -ENOMEM;
    tw_buf_free(&b);
    if (rc != 0) {
        cJSON_Delete(j);
        respond_error(c, rc == -EINVAL ? err.code : 500,
                      rc == -EINVAL ? err.message : "out of memory");
        return;
    }
    int code = 0, i = 0;
    for (const cJSON *e = chs->child; e && !code; e = e->next, i++) {
        int last = i == n - 1;
        size_t cl = strlen(e->valuestring);
        char *ch = strdup(e->valuestring);
        uint8_t *data = last ? r.data : malloc(r.data_len ? r.data_len : 1);
        if (last) r.data = NULL; /* the last publish takes the decoded data itself */
        if (!ch || !data) {
            free(ch);
            free(data);
            code = 500;
            break;
        }
        if (!last) memcpy(data, r.data, r.data_len);
        code = tw_server_publish(srv, last ? c : NULL, TW_PUB_HTTP, NULL, ch, cl, r.data_encoding,
                                 data, r.data_len, &why);
    }
    tw_request_free(&r);
    cJSON_Delete(j);
    if (code) {
        srv->stats.publishes_refused++;
        respond_error(c, code, why);
    }
    /* else: http_busy stays set until tw_api_publish_done for the last event */
}

/* GET /api/presence?channel=NAME -> {"channel", "members": [{user, node, conn}]} */
static void api_presence(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    char ch[TW_STORE_CHANNEL_MAX + 1];
    int len = tw_http_query_param(req->query, "channel", ch, sizeof ch);
    if (len < 1 || !tw_channel_valid(ch, (size_t)len, srv->limits.max_channel_len)) {
        respond_error(c, 400, "channel=NAME is required");
        return;
    }
    if (!tw_auth_flags(srv->auth, ch, (size_t)len).presence) {
        respond_error(c, 403, "presence is not enabled for this channel");
        return;
    }
    tw_member *members;
    size_t n = tw_presence_list(srv->presence, ch, (size_t)len, srv->cfg->node_id, &members);
    if (n == (size_t)-1) {
        respond_error(c, 500, "out of memory");
        return;
    }
    tw_buf b;
    tw_buf_init(&b, 0);
    if (tw_presence_json(&b, ch, (size_t)len, members, n) == 0) respond_json(c, 200, &b);
    else respond_error(c, 500, "out of memory");
    tw_buf_free(&b);
    free(members);
}

/* POST /api/disconnect {"user": SUB, "code"?: 4003, "reason"?: "..."} -> {"disconnected": N}:
 * closes every WebSocket of that user on this node. The default code, 4003, tells clients
 * not to reconnect as they are. */
/* POST /api/disconnect on every loop of the node: answered once each has closed its
 * sessions of the user. */
struct disconnect {
    char *user, *why;
    uint16_t code;
    tw_conn *c; /* holds a reference until answered */
    _Atomic size_t total;
};

static void disconnect_free(struct disconnect *d)
{
    if (!d) return;
    free(d->user);
    free(d->why);
    free(d);
}

/* On each loop: close its sessions of the user. */
static void disconnect_here(tw_server *srv, void *arg)
{
    struct disconnect *d = arg;
    size_t n = 0;
    for (tw_conn *k = srv->conns; k; k = k->next) {
        tw_session *s = k->kind == TW_CONN_WS ? k->session : NULL;
        if (!s || !s->who || tw_ws_closing(&s->ws) || strcmp(s->who->sub, d->user) != 0) continue;
        tw_session_close(s, d->code, d->why);
        n++;
    }
    d->total += n;
}

static void disconnect_answer(tw_server *srv, void *arg)
{
    (void)srv;
    struct disconnect *d = arg;
    size_t n = d->total;
    tw_info("api-disconnect", "disconnected %zu connections of a user with %d", n, d->code);
    if (!d->c->closed) {
        char out[48];
        int len = snprintf(out, sizeof out, "{\"disconnected\":%zu}\n", n);
        tw_conn_http_respond(d->c, 200, "application/json", out, (size_t)len, NULL);
    }
    tw_conn_unref(d->c);
    disconnect_free(d);
}

static void api_disconnect(tw_conn *c, tw_http_request *req)
{
    tw_server *srv = c->srv;
    cJSON *j = cJSON_ParseWithLength((const char *)tw_buf_data(&req->body), req->body.len);
    const cJSON *user = j ? cJSON_GetObjectItemCaseSensitive(j, "user") : NULL;
    const cJSON *code = j ? cJSON_GetObjectItemCaseSensitive(j, "code") : NULL;
    const cJSON *reason = j ? cJSON_GetObjectItemCaseSensitive(j, "reason") : NULL;
    int cc = 4003;
    /* Range first: converting an out-of-range double to int is undefined. */
    if (cJSON_IsNumber(code))
        cc = code->valuedouble >= 1000 && code->valuedouble <= 4999 ? (int)code->valuedouble : 0;
    if (!cJSON_IsString(user) || !*user->valuestring || (code && !cJSON_IsNumber(code)) ||
        (code && cc != code->valuedouble) ||
        !(cc == 1000 || cc == 1008 || cc == 1012 || (cc >= 4000 && cc <= 4999)) ||
        (reason && (!cJSON_IsString(reason) || strlen(reason->valuestring) > 120))) {
        cJSON_Delete(j);
        respond_error(c, 400, "expected {\"user\": SUB, \"code\"?: 1000, 1008, 1012 or "
                              "4000-4999, \"reason\"?: up to 120 bytes}");
        return;
    }
    const char *why = reason ? reason->valuestring : "disconnected by the server";
    struct disconnect *d = calloc(1, sizeof *d);
    if (!d || !(d->user = strdup(user->valuestring)) || !(d->why = strdup(why))) {
        disconnect_free(d);
        cJSON_Delete(j);
        respond_error(c, 500, "out of memory");
        return;
    }
    cJSON_Delete(j);
    d->code = (uint16_t)cc;
    d->c = c;
    c->refs++; /* the answer may wait for the other loops (--threads) */
    tw_server_each_loop(srv, disconnect_here, disconnect_answer, d);
}

static void render_stats(tw_conn *c, const tw_census *census, int prometheus)
{
    tw_buf b;
    tw_buf_init(&b, 0);
    int rc = prometheus ? tw_stats_render_prometheus(c->srv, census, &b)
                        : tw_stats_render_json(c->srv, census, &b);
    if (rc == 0)
        tw_conn_http_respond(c, 200,
                             prometheus ? "text/plain; version=0.0.4; charset=utf-8"
                                        : "application/json",
                             tw_buf_data(&b), b.len, NULL);
    else
        respond_error(c, 500, "out of memory");
    tw_buf_free(&b);
}

/* /stats or /metrics on a node of several loops: every loop publishes its figures and adds
 * its channels to the census, so the answer counts what every loop did up to the request. */
struct stats_req {
    tw_conn *c; /* holds a reference until answered */
    int prometheus;
    tw_census *census;
};

static void stats_gather(tw_server *srv, void *arg)
{
    struct stats_req *r = arg;
    tw_server_publish_figures(srv);
    if (tw_census_add(r->census, srv) != 0)
        tw_warn("stats-nomem", "out of memory: /stats misses channels of loop %u", srv->loop_no);
}

static void stats_answer(tw_server *srv, void *arg)
{
    (void)srv;
    struct stats_req *r = arg;
    if (!r->c->closed) render_stats(r->c, r->census, r->prometheus);
    tw_conn_unref(r->c);
    tw_census_free(r->census);
    free(r);
}

static void respond_stats(tw_conn *c, int prometheus)
{
    if (c->srv->node->nloops == 1) {
        render_stats(c, NULL, prometheus);
        return;
    }
    struct stats_req *r = malloc(sizeof *r);
    if (!r || !(r->census = tw_census_new())) {
        free(r);
        respond_error(c, 500, "out of memory");
        return;
    }
    r->c = c;
    r->prometheus = prometheus;
    c->refs++;
    tw_server_each_loop(c->srv, stats_gather, stats_answer, r);
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
        /* Ready: the store is open, the node has joined its cluster and caught up, and it
         * is not draining (the load balancer's check). */
        int ready = srv->ready && !srv->draining && tw_cluster_ready(srv);
        tw_conn_http_respond(c, ready ? 200 : 503, "application/json", ready ? yes : no,
                             ready ? sizeof yes - 1 : sizeof no - 1, NULL);
    } else if ((strcmp(path, "/stats") == 0 || strcmp(path, "/metrics") == 0) && get) {
        if (!tw_api_admin_authorized(c, req)) respond_error(c, 401, "missing or wrong admin key");
        else respond_stats(c, path[1] == 'm');
    } else if (strcmp(path, "/api/publish") == 0) {
        if (req->method != HTTP_POST) respond_error(c, 405, "use POST");
        else if (!api_authorized(c, req)) respond_error(c, 401, "missing or wrong API key");
        else api_publish(c, req);
    /* -- history (issue 3) -- */
    } else if (strcmp(path, "/api/history") == 0) {
        if (!get) respond_error(c, 405, "use GET");
        else if (!api_authorized(c, req)) respond_error(c, 401, "missing or wrong API key");
        else api_history(c, req);
    /* -- broadcast, presence, disconnect (issue 5) -- */
    } else if (strcmp(path, "/api/broadcast") == 0 || strcmp(path, "/api/disconnect") == 0) {
        if (req->method != HTTP_POST) respond_error(c, 405, "use POST");
        else if (!api_authorized(c, req)) respond_error(c, 401, "missing or wrong API key");
        else if (path[5] == 'b') api_broadcast(c, req);
        else api_disconnect(c, req);
    } else if (strcmp(path, "/api/presence") == 0) {
        if (!get) respond_error(c, 405, "use GET");
        else if (!api_authorized(c, req)) respond_error(c, 401, "missing or wrong API key");
        else api_presence(c, req);
    /* -- admin dashboard (issue 7) -- */
    } else if (tw_admin_path(path)) {
        /* Static pages without data: what they show comes from /stats, with the admin key. */
        tw_admin_handle(c, req);
    } else if (strcmp(path, "/ws") == 0) {
        /* A plain request to the WebSocket endpoint: say what it wants. */
        tw_conn_http_respond(c, 426, "application/json",
                             "{\"error\":\"WebSocket upgrade required\"}\n", 38,
                             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    } else {
        respond_error(c, 404, "not found");
    }
}
