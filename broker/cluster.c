/* cluster.c — see cluster.h. */
#include "cluster.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "gossip.h"
#include "log.h"
#include "presence.h"
#include "server.h"

#define MAX_MEMBERS 128
/* Every node sends its whole local presence this often (and when a member comes back), so
 * a lost delta is repaired and a restarted peer learns everything. */
#define PRESENCE_SNAPSHOT_MS 5000
/* A snapshot is cut into broadcasts of about this many bytes. */
#define SNAPSHOT_PART_BYTES (128 * 1024)

/* A presence message from a peer, waiting for the loop. */
struct app_in {
    struct app_in *next;
    char node[TW_STORE_NODE_NAME_MAX + 1];
    size_t len;
    char data[];
};

/* What we track of each peer's presence reports. */
struct peer_presence {
    char node[TW_STORE_NODE_NAME_MAX + 1];
    uint64_t gen;     /* generation of its members we hold */
    int64_t snap_id;  /* the snapshot being received */
};

struct tw_cluster {
    tw_gossip *g;
    tw_bell bell; /* quorum and membership news from the gossip thread */
    pthread_mutex_t mu;
    uint64_t quorum_seq;  /* under mu */
    uint64_t quorum_told; /* loop 0: the quorum_seq last posted to the other loops */
    int members_changed;  /* under mu */
    _Atomic size_t nheld; /* acks waiting for a majority, on every loop (each holds its own) */
    char **seeds;
    size_t nseeds;
    tw_member_state last_state[MAX_MEMBERS]; /* for logging changes */
    char last_name[MAX_MEMBERS][TW_STORE_NODE_NAME_MAX + 1];
    size_t nlast;
    char conflict_logged[TW_GOSSIP_ADDR_MAX + 1]; /* the last name conflict logged */
    struct app_in *in_head, *in_tail; /* under mu: presence messages from peers */
    struct peer_presence *pp;
    size_t npp;
    uv_timer_t presence_timer;
    int64_t snap_id;
    int snapshot_due;
};

static int quorum_mode(const tw_server *srv)
{
    return srv->cluster && strcmp(srv->cfg->durability, "quorum") == 0;
}

/* ---- Gossip thread ------------------------------------------------------------------- */

static void free_publish(tw_publish *p)
{
    free(p->channel);
    free(p->data);
    free(p->origin);
    free(p);
}

/* Remote events go straight to the store from the gossip thread: tw_store_submit is
 * thread-safe, and the commit comes back through the loop's commit list like any other. */
static void on_events(void *arg, const tw_gossip_event *ev, size_t n)
{
    tw_server *srv = arg;
    tw_publish *head = NULL, *tail = NULL;
    size_t i;
    for (i = 0; i < n; i++) {
        tw_publish *p = calloc(1, sizeof *p);
        if (!p) break;
        p->kind = TW_PUB_REMOTE;
        p->srv = srv;
        p->channel = malloc(ev[i].channel_len ? ev[i].channel_len : 1);
        p->data = malloc(ev[i].data_len ? ev[i].data_len : 1);
        p->origin = strdup(ev[i].origin);
        if (!p->channel || !p->data || !p->origin) {
            free_publish(p);
            break;
        }
        memcpy(p->channel, ev[i].channel, ev[i].channel_len);
        memcpy(p->data, ev[i].data, ev[i].data_len);
        p->app.channel = p->channel;
        p->app.channel_len = ev[i].channel_len;
        p->app.data = p->data;
        p->app.data_len = ev[i].data_len;
        p->app.encoding = ev[i].encoding;
        p->app.origin = p->origin;
        p->app.seq = ev[i].seq;
        p->app.ts_ms = ev[i].ts_ms;
        p->app.after_trim = ev[i].after_trim;
        if (tail) tail->app.next = &p->app;
        else head = p;
        tail = p;
    }
    if (head && i == n && tw_store_submit(srv->store, &head->app) == 0) return;
    /* Out of memory or the writer is full: nothing of this batch was appended. Hand it
     * back to gossip per origin, from the first seq of each origin in the batch. */
    for (tw_publish *p = head, *next; p; p = next) {
        next = p->app.next ? (tw_publish *)p->app.next : NULL;
        free_publish(p);
    }
    for (size_t j = 0; j < n; j++) {
        int first = 1;
        for (size_t k = 0; k < j; k++)
            if (strcmp(ev[k].origin, ev[j].origin) == 0) first = 0;
        if (first) tw_gossip_apply_failed(srv->cluster->g, ev[j].origin, ev[j].seq - 1);
    }
}

static void on_quorum(void *arg, uint64_t seq)
{
    tw_server *srv = arg;
    tw_cluster *cl = srv->cluster;
    pthread_mutex_lock(&cl->mu);
    if (seq > cl->quorum_seq) cl->quorum_seq = seq;
    pthread_mutex_unlock(&cl->mu);
    tw_bell_ring(&cl->bell);
}

static void on_app(void *arg, const char *from, const void *data, size_t len)
{
    tw_server *srv = arg;
    tw_cluster *cl = srv->cluster;
    struct app_in *a = malloc(sizeof *a + len + 1);
    if (!a) return; /* lost like a dropped message: the next snapshot repairs it */
    a->next = NULL;
    snprintf(a->node, sizeof a->node, "%s", from);
    a->len = len;
    memcpy(a->data, data, len);
    a->data[len] = '\0';
    pthread_mutex_lock(&cl->mu);
    if (cl->in_tail) cl->in_tail->next = a;
    else cl->in_head = a;
    cl->in_tail = a;
    pthread_mutex_unlock(&cl->mu);
    tw_bell_ring(&cl->bell);
}

static void on_members(void *arg)
{
    tw_server *srv = arg;
    tw_cluster *cl = srv->cluster;
    pthread_mutex_lock(&cl->mu);
    cl->members_changed = 1;
    pthread_mutex_unlock(&cl->mu);
    tw_bell_ring(&cl->bell);
}

/* ---- Loop thread ------------------------------------------------------------------- */

/* Acknowledges this loop's held publishes that a majority now has. */
static void release_acks(tw_server *srv, uint64_t quorum_seq)
{
    tw_cluster *cl = srv->cluster;
    while (srv->held_head && srv->held_head->app.seq <= quorum_seq) {
        tw_publish *p = srv->held_head;
        srv->held_head = p->next;
        if (!srv->held_head) srv->held_tail = NULL;
        cl->nheld--;
        p->next = NULL;
        tw_server_ack(srv, p);
        tw_publish_free(srv, p);
    }
}

static uint64_t quorum_seq(tw_cluster *cl)
{
    pthread_mutex_lock(&cl->mu);
    uint64_t q = cl->quorum_seq;
    pthread_mutex_unlock(&cl->mu);
    return q;
}

/* On another loop (--threads): the quorum moved, release what it covers. */
static void release_here(tw_server *srv, void *arg)
{
    (void)arg;
    if (srv->cluster) release_acks(srv, quorum_seq(srv->cluster));
}

/* ---- Presence across the cluster ------------------------------------------------------ */

static struct peer_presence *peer_get(tw_cluster *cl, const char *node)
{
    for (size_t i = 0; i < cl->npp; i++)
        if (strcmp(cl->pp[i].node, node) == 0) return &cl->pp[i];
    struct peer_presence *p = realloc(cl->pp, (cl->npp + 1) * sizeof *p);
    if (!p) return NULL;
    cl->pp = p;
    p = &cl->pp[cl->npp++];
    memset(p, 0, sizeof *p);
    snprintf(p->node, sizeof p->node, "%s", node);
    p->gen = 1;
    p->snap_id = -1;
    return p;
}

/* A member of another node left: this loop's members hear it, and so do the other loops. */
static void notify_leave(void *arg, const char *channel, size_t len, const tw_member *m)
{
    tw_presence_notify(arg, "leave", channel, len, m, NULL);
    tw_presence_tell_loops(arg, 0, channel, len, m);
}

/* A member another node reported: listed, and announced when it is new. */
static void remote_join(tw_server *srv, const char *channel, size_t len, const tw_member *m,
                        uint64_t gen)
{
    int rc = tw_presence_remote_add(srv->presence, channel, len, m, gen);
    if (rc == 1) {
        tw_presence_notify(srv, "join", channel, len, m, NULL);
        tw_presence_tell_loops(srv, 1, channel, len, m);
    } else if (rc < 0)
        tw_warn("presence-nomem", "out of memory listing a member of another node");
}

/* Reads one [channel, user|null, conn] or {"ch","u","c"} member from a peer's message. */
static int read_member(tw_server *srv, const cJSON *ch, const cJSON *u, const cJSON *conn,
                       const char *node, tw_member *m, size_t *len)
{
    if (!cJSON_IsString(ch) || !cJSON_IsString(conn) || !(cJSON_IsString(u) || cJSON_IsNull(u)))
        return -1;
    *len = strlen(ch->valuestring);
    if (!tw_channel_valid(ch->valuestring, *len, srv->limits.max_channel_len) ||
        strlen(conn->valuestring) > 32 || (cJSON_IsString(u) && strlen(u->valuestring) > 255))
        return -1;
    m->user = cJSON_IsString(u) ? u->valuestring : NULL;
    m->node = node;
    m->conn = conn->valuestring;
    return 0;
}

/* One presence message from a peer: a delta {"t":"d","op","ch","u","c"} or a snapshot part
 * {"t":"s","id","last","m":[[ch,u,c]...]}. A snapshot's members get a new generation; its
 * last part retires the ones of older generations (gone from that node since). */
static void apply_presence(tw_server *srv, const char *node, const char *text, size_t len)
{
    tw_cluster *cl = srv->cluster;
    cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "t") : NULL;
    struct peer_presence *pp = peer_get(cl, node);
    if (!cJSON_IsString(t) || !pp) goto out;
    tw_member m;
    size_t chlen;
    if (strcmp(t->valuestring, "d") == 0) {
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "ch");
        if (!cJSON_IsString(op) ||
            read_member(srv, ch, cJSON_GetObjectItemCaseSensitive(j, "u"),
                        cJSON_GetObjectItemCaseSensitive(j, "c"), node, &m, &chlen) != 0)
            goto out;
        if (strcmp(op->valuestring, "join") == 0)
            remote_join(srv, ch->valuestring, chlen, &m, pp->gen);
        else
            tw_presence_remote_remove(srv->presence, ch->valuestring, chlen, node, m.conn,
                                      notify_leave, srv);
    } else if (strcmp(t->valuestring, "s") == 0) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(j, "last");
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "m");
        if (!cJSON_IsNumber(id) || !cJSON_IsArray(ms)) goto out;
        if ((int64_t)id->valuedouble != pp->snap_id) { /* a new snapshot begins */
            pp->snap_id = (int64_t)id->valuedouble;
            pp->gen++;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, ms)
        {
            if (cJSON_GetArraySize(e) != 3) continue;
            const cJSON *ch = cJSON_GetArrayItem(e, 0);
            if (read_member(srv, ch, cJSON_GetArrayItem(e, 1), cJSON_GetArrayItem(e, 2), node, &m,
                            &chlen) == 0)
                remote_join(srv, ch->valuestring, chlen, &m, pp->gen);
        }
        if (cJSON_IsTrue(last)) tw_presence_remote_sweep(srv->presence, node, pp->gen, notify_leave, srv);
    }
out:
    cJSON_Delete(j);
}

static void broadcast(tw_cluster *cl, tw_buf *b)
{
    int rc = tw_gossip_broadcast(cl->g, tw_buf_data(b), b->len);
    if (rc != 0)
        tw_warn("presence-send", "presence not sent to peers: %s (the next snapshot repairs it)",
                tw_gossip_strerror(rc));
}

static int put_member(tw_buf *b, const tw_member *m)
{
    int rc = 0;
    if (m->user) rc |= tw_buf_append_json_string(b, m->user, strlen(m->user));
    else rc |= tw_buf_append_str(b, "null");
    rc |= tw_buf_putc(b, ',');
    rc |= tw_buf_append_json_string(b, m->conn, strlen(m->conn));
    return rc;
}

void tw_cluster_presence_changed(tw_server *srv, const char *op, const char *channel, size_t len,
                                 const tw_member *who)
{
    tw_cluster *cl = srv->cluster;
    if (!cl || !cl->g) return;
    tw_buf b;
    tw_buf_init(&b, 0);
    int rc = tw_buf_printf(&b, "{\"t\":\"d\",\"op\":\"%s\",\"ch\":", op);
    rc |= tw_buf_append_json_string(&b, channel, len);
    rc |= tw_buf_append_str(&b, ",\"u\":");
    if (who->user) rc |= tw_buf_append_json_string(&b, who->user, strlen(who->user));
    else rc |= tw_buf_append_str(&b, "null");
    rc |= tw_buf_append_str(&b, ",\"c\":");
    rc |= tw_buf_append_json_string(&b, who->conn, strlen(who->conn));
    rc |= tw_buf_putc(&b, '}');
    if (rc == 0) broadcast(cl, &b);
    tw_buf_free(&b);
}

struct snap {
    tw_server *srv;
    tw_buf b;
    size_t count;
    int rc;
};

static void snap_begin(struct snap *sn)
{
    sn->rc |= tw_buf_printf(&sn->b, "{\"t\":\"s\",\"id\":%lld,\"m\":[",
                            (long long)sn->srv->cluster->snap_id);
    sn->count = 0;
}

static void snap_end(struct snap *sn, int last)
{
    sn->rc |= tw_buf_printf(&sn->b, "],\"last\":%s}", last ? "true" : "false");
    if (sn->rc == 0) broadcast(sn->srv->cluster, &sn->b);
    tw_buf_reset(&sn->b, 0);
    sn->rc = 0;
}

static void snap_put(void *arg, const char *channel, size_t len, const tw_member *m)
{
    struct snap *sn = arg;
    sn->rc |= tw_buf_append_str(&sn->b, sn->count ? ",[" : "[");
    sn->rc |= tw_buf_append_json_string(&sn->b, channel, len);
    sn->rc |= tw_buf_putc(&sn->b, ',');
    sn->rc |= put_member(&sn->b, m);
    sn->rc |= tw_buf_putc(&sn->b, ']');
    sn->count++;
    if (sn->b.len >= SNAPSHOT_PART_BYTES) {
        snap_end(sn, 0);
        snap_begin(sn);
    }
}

static void snap_member(void *arg, const char *channel, size_t len, struct tw_session *s)
{
    struct snap *sn = arg;
    tw_member m;
    tw_presence_member_of(s, sn->srv->cfg->node_id, &m);
    snap_put(sn, channel, len, &m);
}

/* Our whole local presence to every peer, in parts; the last part lets them retire what we
 * no longer report. Sent even when empty: that is how peers learn everyone left. */
static void send_snapshot(tw_server *srv)
{
    tw_cluster *cl = srv->cluster;
    struct snap sn = {.srv = srv};
    tw_buf_init(&sn.b, 0);
    cl->snap_id++;
    snap_begin(&sn);
    tw_presence_each_local(srv->presence, snap_member, &sn);
    /* The members of the node's other loops (--threads), which this loop lists under the
     * node's own name. */
    tw_presence_each_remote(srv->presence, srv->cfg->node_id, snap_put, &sn);
    snap_end(&sn, 1);
    tw_buf_free(&sn.b);
    cl->snapshot_due = 0;
}

static void on_presence_timer(uv_timer_t *t)
{
    tw_server *srv = t->data;
    if (srv->cluster && srv->cluster->g && !srv->draining) send_snapshot(srv);
}

static void log_member_changes(tw_server *srv)
{
    tw_cluster *cl = srv->cluster;
    tw_member_info m[MAX_MEMBERS];
    size_t n = 0;
    tw_gossip_members(cl->g, m, MAX_MEMBERS, &n);
    if (n > MAX_MEMBERS) n = MAX_MEMBERS;
    for (size_t i = 0; i < n; i++) {
        if (i < cl->nlast && cl->last_state[i] == m[i].state &&
            strcmp(cl->last_name[i], m[i].name) == 0)
            continue;
        if (m[i].state != TW_MEMBER_SELF)
            tw_info("cluster-member", "member %s (%s) is %s", m[i].name[0] ? m[i].name : "?",
                    m[i].addr, tw_member_state_name(m[i].state));
        if (m[i].name[0] && (m[i].state == TW_MEMBER_DEAD || m[i].state == TW_MEMBER_LEFT)) {
            /* Its clients are gone (or reconnecting elsewhere, where they join again). */
            tw_presence_remote_sweep(srv->presence, m[i].name, UINT64_MAX, notify_leave, srv);
            struct peer_presence *pp = peer_get(cl, m[i].name);
            if (pp) pp->snap_id = -1;
        } else if (m[i].state == TW_MEMBER_ALIVE) {
            cl->snapshot_due = 1; /* a member (back) alive learns our presence at once */
        }
        cl->last_state[i] = m[i].state;
        memcpy(cl->last_name[i], m[i].name, sizeof cl->last_name[i]); /* same size, NUL-ended */
    }
    cl->nlast = n;

    tw_gossip_stats gs;
    tw_gossip_get_stats(cl->g, &gs);
    if (gs.name_conflicts && strcmp(gs.name_conflict_addr, cl->conflict_logged) != 0) {
        tw_error("cluster-name",
                 "another node (%s) uses this node's name %s: node names must be unique in a "
                 "cluster; its messages are ignored until one of the two is renamed",
                 gs.name_conflict_addr, srv->cfg->node_id);
        memcpy(cl->conflict_logged, gs.name_conflict_addr, sizeof cl->conflict_logged);
    }
}

static void on_bell(tw_bell *b)
{
    tw_server *srv = b->data;
    tw_cluster *cl = srv->cluster;
    pthread_mutex_lock(&cl->mu);
    uint64_t q = cl->quorum_seq;
    int changed = cl->members_changed;
    cl->members_changed = 0;
    struct app_in *in = cl->in_head;
    cl->in_head = cl->in_tail = NULL;
    pthread_mutex_unlock(&cl->mu);
    release_acks(srv, q);
    if (q != cl->quorum_told) {
        cl->quorum_told = q;
        for (size_t i = 1; i < srv->node->nloops; i++)
            if (tw_server_post(srv->node->loops[i], release_here, NULL) != 0)
                tw_error("loop-post", "out of memory: loop %zu not told of the quorum", i);
    }
    if (changed) log_member_changes(srv);
    for (struct app_in *x = in, *next; x; x = next) {
        next = x->next;
        apply_presence(srv, x->node, x->data, x->len);
        free(x);
    }
    if (cl->snapshot_due && cl->g && !srv->draining) send_snapshot(srv);
}

static int split_seeds(tw_cluster *cl, const char *peers)
{
    const char *p = peers;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p) break;
        size_t len = strcspn(p, ", ");
        char **s = realloc(cl->seeds, (cl->nseeds + 1) * sizeof *s);
        if (!s) return -1;
        cl->seeds = s;
        if (!(s[cl->nseeds] = strndup(p, len))) return -1;
        cl->nseeds++;
        p += len;
    }
    return 0;
}

int tw_cluster_start(tw_server *srv)
{
    const tw_config *cfg = srv->cfg;
    if (!*cfg->cluster_listen) {
        if (*cfg->peers)
            tw_warn("cluster", "--peers is set without --cluster-listen: running as a single node");
        return 0;
    }
    tw_cluster *cl = calloc(1, sizeof *cl);
    if (!cl) return -1;
    cl->bell.fd = -1; /* not open yet */
    srv->cluster = cl;
    pthread_mutex_init(&cl->mu, NULL);
    cl->bell.data = srv;
    int brc = tw_bell_init(srv->loop, &cl->bell, on_bell);
    if (brc != 0) {
        tw_error("cluster", "cannot make the cluster's wake-up eventfd: %s", uv_strerror(brc));
        return -1;
    }
    if (split_seeds(cl, cfg->peers) != 0) return -1;

    tw_store_origin_info applied[256];
    size_t napplied = 0;
    if (tw_store_origins(srv->reader, applied, 256, &napplied) != 0) return -1;
    if (napplied > 256) napplied = 256;
    tw_gossip_options o = {
        .node_name = cfg->node_id,
        .origin = srv->origin,
        .listen_addr = cfg->cluster_listen,
        .seeds = (const char *const *)cl->seeds,
        .nseeds = cl->nseeds,
        .store = srv->store,
        .heartbeat_ms = (uint32_t)cfg->cluster_heartbeat_ms,
        .suspect_ms = (uint32_t)cfg->cluster_suspect_timeout_ms,
        .dead_ms = (uint32_t)cfg->cluster_dead_timeout_ms,
        .tls_cert_file = *cfg->cluster_tls_cert ? cfg->cluster_tls_cert : NULL,
        .tls_key_file = *cfg->cluster_tls_key ? cfg->cluster_tls_key : NULL,
        .tls_ca_file = *cfg->cluster_tls_ca ? cfg->cluster_tls_ca : NULL,
        .cb = {.on_events = on_events,
               .on_members = on_members,
               .on_quorum = on_quorum,
               .on_app = on_app},
        .cb_arg = srv,
    };
    int rc = tw_gossip_start(&cl->g, &o, applied, napplied);
    if (rc != 0) {
        tw_error("cluster", "cannot start the cluster on %s: %s", cfg->cluster_listen,
                 tw_gossip_strerror(rc));
        return -1;
    }
    uv_timer_init(srv->loop, &cl->presence_timer);
    cl->presence_timer.data = srv;
    uv_timer_start(&cl->presence_timer, on_presence_timer, PRESENCE_SNAPSHOT_MS,
                   PRESENCE_SNAPSHOT_MS);
    tw_info("cluster", "cluster listening on %s with %zu seed(s); durability %s",
            cfg->cluster_listen, cl->nseeds, cfg->durability);
    return 0;
}

void tw_cluster_stop(tw_server *srv, uint32_t timeout_ms)
{
    tw_cluster *cl = srv->cluster;
    if (!cl) return;
    tw_bell_close(&cl->bell); /* closed with the loop's handles; the eventfd with it */
    if (!cl->g) return;
    int rc = tw_gossip_stop(cl->g, timeout_ms);
    cl->g = NULL;
    if (rc == 0) tw_info("cluster", "left the cluster: every peer has this node's events");
    else tw_warn("cluster", "left the cluster before every peer caught up (they will fetch "
                            "from the log when this node is back)");
}

void tw_cluster_free(tw_server *srv)
{
    tw_cluster *cl = srv->cluster;
    if (!cl) return;
    if (cl->g) tw_gossip_stop(cl->g, 0);
    for (struct app_in *a = cl->in_head, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(cl->pp);
    for (size_t i = 0; i < cl->nseeds; i++)
        free(cl->seeds[i]);
    free(cl->seeds);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
    for (size_t i = 0; i < srv->node->nloops; i++)
        if (srv->node->loops[i]) srv->node->loops[i]->cluster = NULL;
}

void tw_cluster_drop_held(tw_server *srv)
{
    /* Acks still held cannot be given: the publishers are gone with their connections. */
    while (srv->held_head) {
        tw_publish *p = srv->held_head;
        srv->held_head = p->next;
        tw_publish_free(srv, p);
    }
    srv->held_tail = NULL;
}

void tw_cluster_local_committed(tw_server *srv, uint64_t seq)
{
    if (srv->loop_no == 0 && srv->cluster && srv->cluster->g)
        tw_gossip_notify_local(srv->cluster->g, seq);
}

void tw_cluster_remote_done(tw_server *srv, const tw_publish *p)
{
    tw_cluster *cl = srv->cluster;
    if (!cl || !cl->g) return;
    if (p->app.status == 0) {
        tw_gossip_applied(cl->g, p->app.origin, p->app.seq);
    } else if (p->app.status != TW_STORE_EDUP) {
        /* EDUP means we already have it: nothing to fetch again. */
        tw_gossip_apply_failed(cl->g, p->app.origin, p->app.seq - 1);
    }
}

int tw_cluster_quorum_possible(tw_server *srv)
{
    if (!quorum_mode(srv) || !srv->cluster->g) return 1;
    tw_member_info m[MAX_MEMBERS];
    size_t n = 0, alive = 0;
    tw_gossip_members(srv->cluster->g, m, MAX_MEMBERS, &n);
    for (size_t i = 0; i < n && i < MAX_MEMBERS; i++)
        if (m[i].state == TW_MEMBER_SELF || m[i].state == TW_MEMBER_ALIVE) alive++;
    return alive >= tw_gossip_cluster_size(srv->cluster->g) / 2 + 1;
}

int tw_cluster_hold_ack(tw_server *srv, tw_publish *p)
{
    tw_cluster *cl = srv->cluster;
    if (!quorum_mode(srv)) return -1;
    p->next = NULL;
    if (srv->held_tail) srv->held_tail->next = p;
    else srv->held_head = p;
    srv->held_tail = p;
    cl->nheld++;
    release_acks(srv, quorum_seq(cl));
    return 0;
}

int tw_cluster_knows_origin(tw_server *srv, const char *origin)
{
    tw_cluster *cl = srv->cluster;
    if (!cl || !cl->g) return 0;
    tw_member_info m[MAX_MEMBERS];
    size_t n = 0;
    tw_gossip_members(cl->g, m, MAX_MEMBERS, &n);
    for (size_t i = 0; i < n && i < MAX_MEMBERS; i++)
        if (m[i].origin[0] && strcmp(m[i].origin, origin) == 0) return 1;
    return 0;
}

int tw_cluster_ready(tw_server *srv)
{
    return !srv->cluster || (srv->cluster->g && tw_gossip_ready(srv->cluster->g));
}

int tw_cluster_render_json(tw_server *srv, tw_buf *out)
{
    tw_cluster *cl = srv->cluster;
    if (!cl || !cl->g)
        return tw_buf_printf(out,
                             "\"cluster\":{\"size\":1,\"members\":[{\"node\":\"%s\",\"origin\":"
                             "\"%s\",\"state\":\"self\",\"replication_lag\":0}]}",
                             srv->cfg->node_id, srv->origin);
    tw_member_info m[MAX_MEMBERS];
    size_t n = 0;
    tw_gossip_members(cl->g, m, MAX_MEMBERS, &n);
    tw_gossip_stats gs;
    tw_gossip_get_stats(cl->g, &gs);
    pthread_mutex_lock(&cl->mu);
    uint64_t q = cl->quorum_seq;
    pthread_mutex_unlock(&cl->mu);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    int rc = tw_buf_printf(out,
                           "\"cluster\":{\"size\":%zu,\"quorum_seq\":%" PRIu64
                           ",\"acks_waiting_for_quorum\":%zu,\"members\":[",
                           tw_gossip_cluster_size(cl->g), q, (size_t)cl->nheld);
    for (size_t i = 0; i < n && i < MAX_MEMBERS && !rc; i++) {
        rc |= tw_buf_printf(out, "%s{\"node\":", i ? "," : "");
        rc |= tw_buf_append_json_string(out, m[i].name, strlen(m[i].name));
        rc |= tw_buf_printf(out, ",\"origin\":\"%s\",\"addr\":", m[i].origin);
        rc |= tw_buf_append_json_string(out, m[i].addr, strlen(m[i].addr));
        rc |= tw_buf_printf(out,
                            ",\"state\":\"%s\",\"replication_lag\":%" PRIu64
                            ",\"last_heard_ms_ago\":%" PRIu64 "}",
                            tw_member_state_name(m[i].state), m[i].replication_lag,
                            m[i].last_heard_ms ? now - m[i].last_heard_ms : 0);
    }
    rc |= tw_buf_printf(out,
                        "],\"messages_sent\":%" PRIu64 ",\"messages_received\":%" PRIu64
                        ",\"messages_dropped\":%" PRIu64 ",\"events_sent\":%" PRIu64
                        ",\"events_received\":%" PRIu64 ",\"fetches_sent\":%" PRIu64
                        ",\"fetches_served\":%" PRIu64 ",\"bad_messages\":%" PRIu64
                        ",\"listener_restarts\":%" PRIu64 ",\"name_conflicts\":%" PRIu64 "}",
                        gs.msgs_sent, gs.msgs_received, gs.msgs_dropped, gs.events_sent,
                        gs.events_received, gs.fetches_sent, gs.fetches_served, gs.bad_messages,
                        gs.listener_restarts, gs.name_conflicts);
    return rc ? -1 : 0;
}

int tw_cluster_render_prometheus(tw_server *srv, tw_buf *out)
{
    tw_cluster *cl = srv->cluster;
    int rc = tw_buf_append_str(out, "# HELP tidewire_cluster_members Cluster members by state\n"
                                    "# TYPE tidewire_cluster_members gauge\n");
    if (!cl || !cl->g)
        return rc | tw_buf_append_str(out, "tidewire_cluster_members{state=\"self\"} 1\n");
    tw_member_info m[MAX_MEMBERS];
    size_t n = 0, count[5] = {0};
    tw_gossip_members(cl->g, m, MAX_MEMBERS, &n);
    for (size_t i = 0; i < n && i < MAX_MEMBERS; i++)
        count[m[i].state]++;
    for (int s = 0; s < 5; s++)
        rc |= tw_buf_printf(out, "tidewire_cluster_members{state=\"%s\"} %zu\n",
                            tw_member_state_name((tw_member_state)s), count[s]);
    rc |= tw_buf_append_str(out, "# HELP tidewire_cluster_replication_lag Events of this node's "
                                 "origin a member has not applied\n"
                                 "# TYPE tidewire_cluster_replication_lag gauge\n");
    for (size_t i = 0; i < n && i < MAX_MEMBERS; i++)
        if (m[i].state != TW_MEMBER_SELF)
            rc |= tw_buf_printf(out, "tidewire_cluster_replication_lag{member=\"%s\"} %" PRIu64 "\n",
                                m[i].name, m[i].replication_lag);
    tw_gossip_stats gs;
    tw_gossip_get_stats(cl->g, &gs);
    rc |= tw_buf_printf(out,
                        "# HELP tidewire_cluster_listener_restarts_total Cluster listener "
                        "re-created after it stopped accepting (nng#1518)\n"
                        "# TYPE tidewire_cluster_listener_restarts_total counter\n"
                        "tidewire_cluster_listener_restarts_total %" PRIu64 "\n"
                        "# HELP tidewire_cluster_messages_dropped_total Replication messages a "
                        "full peer queue refused (resent later)\n"
                        "# TYPE tidewire_cluster_messages_dropped_total counter\n"
                        "tidewire_cluster_messages_dropped_total %" PRIu64 "\n"
                        "# HELP tidewire_cluster_name_conflicts_total Heartbeats from another "
                        "node using this node's name (ignored; names must be unique)\n"
                        "# TYPE tidewire_cluster_name_conflicts_total counter\n"
                        "tidewire_cluster_name_conflicts_total %" PRIu64 "\n",
                        gs.listener_restarts, gs.msgs_dropped, gs.name_conflicts);
    return rc ? -1 : 0;
}
