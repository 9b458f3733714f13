/* presence.c — see presence.h. */
#include "presence.h"

#include <errno.h>
#include <limits.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define NCHAINS 256

/* A member on another node, as that node reported it. */
typedef struct rmember {
    char *node, *conn, *user; /* user NULL: a client without a token */
    uint64_t gen;
} rmember;

typedef struct entry {
    char *name;
    size_t len;
    struct tw_session **m; /* members on this node, in the order they joined */
    size_t n, cap;
    rmember *r;            /* members on other nodes */
    size_t rn, rcap;
    struct entry *next;
} entry;

struct tw_presence {
    entry *chains[NCHAINS];
};

tw_presence *tw_presence_new(void)
{
    return calloc(1, sizeof(tw_presence));
}

static void rmember_free(rmember *m)
{
    free(m->node);
    free(m->conn);
    free(m->user);
}

static void entry_free(entry *e)
{
    for (size_t i = 0; i < e->rn; i++)
        rmember_free(&e->r[i]);
    free(e->r);
    free(e->name);
    free(e->m);
    free(e);
}

void tw_presence_free(tw_presence *p)
{
    if (!p) return;
    for (size_t i = 0; i < NCHAINS; i++)
        for (entry *e = p->chains[i], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    free(p);
}

static uint32_t hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h % NCHAINS;
}

static entry **find(tw_presence *p, const char *channel, size_t len)
{
    entry **pp = &p->chains[hash(channel, len)];
    while (*pp && ((*pp)->len != len || memcmp((*pp)->name, channel, len) != 0))
        pp = &(*pp)->next;
    return pp;
}

/* The channel's entry, made if missing; NULL on ENOMEM. */
static entry *entry_get(tw_presence *p, const char *channel, size_t len)
{
    entry **pp = find(p, channel, len);
    entry *e = *pp;
    if (e) return e;
    e = calloc(1, sizeof *e);
    if (!e || !(e->name = malloc(len ? len : 1))) {
        free(e);
        return NULL;
    }
    memcpy(e->name, channel, len);
    e->len = len;
    *pp = e;
    return e;
}

/* Drops the channel's entry once nobody is left in it, here or elsewhere. */
static void entry_release(tw_presence *p, entry *e)
{
    if (e->n || e->rn) return;
    entry **pp = find(p, e->name, e->len);
    *pp = e->next;
    entry_free(e);
}

int tw_presence_add(tw_presence *p, const char *channel, size_t len, struct tw_session *s)
{
    entry *e = entry_get(p, channel, len);
    if (!e) return -ENOMEM;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        struct tw_session **m = realloc(e->m, cap * sizeof *m);
        if (!m) {
            entry_release(p, e); /* do not leave an empty entry behind */
            return -ENOMEM;
        }
        e->m = m;
        e->cap = cap;
    }
    e->m[e->n++] = s;
    return 0;
}

int tw_presence_remove(tw_presence *p, const char *channel, size_t len, struct tw_session *s)
{
    if (!p) return 0;
    entry **pp = find(p, channel, len);
    entry *e = *pp;
    if (!e) return 0;
    for (size_t i = 0; i < e->n; i++)
        if (e->m[i] == s) {
            /* Members keep the order they joined in: a presence list reads naturally. */
            memmove(&e->m[i], &e->m[i + 1], (e->n - i - 1) * sizeof e->m[0]);
            e->n--;
            entry_release(p, e);
            return 1;
        }
    return 0;
}

void tw_presence_each_local(tw_presence *p, tw_presence_local_cb cb, void *arg)
{
    for (size_t i = 0; p && i < NCHAINS; i++)
        for (entry *e = p->chains[i]; e; e = e->next)
            for (size_t k = 0; k < e->n; k++)
                cb(arg, e->name, e->len, e->m[k]);
}

void tw_presence_each_remote(tw_presence *p, const char *node,
                             void (*cb)(void *arg, const char *channel, size_t len,
                                        const tw_member *m),
                             void *arg)
{
    for (size_t i = 0; p && i < NCHAINS; i++)
        for (entry *e = p->chains[i]; e; e = e->next)
            for (size_t k = 0; k < e->rn; k++)
                if (strcmp(e->r[k].node, node) == 0) {
                    tw_member m = {e->r[k].user, e->r[k].node, e->r[k].conn};
                    cb(arg, e->name, e->len, &m);
                }
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int tw_presence_remote_add(tw_presence *p, const char *channel, size_t len, const tw_member *m,
                           uint64_t gen)
{
    entry *e = entry_get(p, channel, len);
    if (!e) return -ENOMEM;
    for (size_t i = 0; i < e->rn; i++)
        if (strcmp(e->r[i].node, m->node) == 0 && strcmp(e->r[i].conn, m->conn) == 0) {
            e->r[i].gen = gen; /* still there (a snapshot or a repeated join) */
            if (same(e->r[i].user, m->user)) return 0;
            free(e->r[i].user);
            e->r[i].user = dup_or_null(m->user);
            return 0;
        }
    if (e->rn == e->rcap) {
        size_t cap = e->rcap ? e->rcap * 2 : 4;
        rmember *r = realloc(e->r, cap * sizeof *r);
        if (!r) {
            entry_release(p, e);
            return -ENOMEM;
        }
        e->r = r;
        e->rcap = cap;
    }
    rmember *x = &e->r[e->rn];
    x->node = strdup(m->node);
    x->conn = strdup(m->conn);
    x->user = dup_or_null(m->user);
    x->gen = gen;
    if (!x->node || !x->conn || (m->user && !x->user)) {
        rmember_free(x);
        entry_release(p, e);
        return -ENOMEM;
    }
    e->rn++;
    return 1;
}

/* Removes remote member i of e, telling cb first. */
static void remote_drop(tw_presence *p, entry *e, size_t i, tw_presence_change_cb cb, void *arg)
{
    tw_member m = {e->r[i].user, e->r[i].node, e->r[i].conn};
    if (cb) cb(arg, e->name, e->len, &m);
    rmember_free(&e->r[i]);
    memmove(&e->r[i], &e->r[i + 1], (e->rn - i - 1) * sizeof e->r[0]);
    e->rn--;
}

int tw_presence_remote_remove(tw_presence *p, const char *channel, size_t len, const char *node,
                              const char *conn, tw_presence_change_cb cb, void *arg)
{
    entry *e = p ? *find(p, channel, len) : NULL;
    for (size_t i = 0; e && i < e->rn; i++)
        if (strcmp(e->r[i].node, node) == 0 && strcmp(e->r[i].conn, conn) == 0) {
            remote_drop(p, e, i, cb, arg);
            entry_release(p, e);
            return 1;
        }
    return 0;
}

void tw_presence_remote_sweep(tw_presence *p, const char *node, uint64_t gen,
                              tw_presence_change_cb cb, void *arg)
{
    for (size_t c = 0; p && c < NCHAINS; c++)
        for (entry *e = p->chains[c], *next; e; e = next) {
            next = e->next;
            for (size_t i = 0; i < e->rn;) {
                if (strcmp(e->r[i].node, node) == 0 && e->r[i].gen < gen)
                    remote_drop(p, e, i, cb, arg);
                else
                    i++;
            }
            entry_release(p, e);
        }
}

size_t tw_presence_list(tw_presence *p, const char *channel, size_t len, const char *node,
                        tw_member **out)
{
    entry *e = p ? *find(p, channel, len) : NULL;
    *out = NULL;
    if (!e) return 0;
    size_t n = e->n + e->rn;
    tw_member *m = calloc(n ? n : 1, sizeof *m);
    if (!m) return (size_t)-1;
    for (size_t i = 0; i < e->n; i++)
        tw_presence_member_of(e->m[i], node, &m[i]);
    for (size_t i = 0; i < e->rn; i++)
        m[e->n + i] = (tw_member){e->r[i].user, e->r[i].node, e->r[i].conn};
    *out = m;
    return n;
}

size_t tw_presence_members(tw_presence *p, const char *channel, size_t len,
                           struct tw_session *const **out)
{
    entry *e = p ? *find(p, channel, len) : NULL;
    *out = e ? e->m : NULL;
    return e ? e->n : 0;
}

/* ---- Messages: a small writer over both encodings --------------------------------------- */

typedef struct wr {
    tw_buf *b;
    tw_encoding enc;
    msgpack_packer pk;
    size_t start;
    int rc;
} wr;

static int mp_write(void *data, const char *p, size_t n)
{
    return tw_buf_append(data, p, n) ? -1 : 0;
}

static void w_begin(wr *w, tw_buf *b, tw_encoding enc)
{
    w->b = b;
    w->enc = enc;
    w->start = b->len;
    w->rc = 0;
    if (enc == TW_ENC_MSGPACK) msgpack_packer_init(&w->pk, b, mp_write);
}

static int w_end(wr *w)
{
    if (w->rc) {
        w->b->len = w->start; /* as it was */
        return -ENOMEM;
    }
    return 0;
}

/* Opens a map of n pairs (JSON: '{'). */
static void w_map(wr *w, size_t n)
{
    if (w->enc == TW_ENC_MSGPACK)
        w->rc |= msgpack_pack_map(&w->pk, n);
    else
        w->rc |= tw_buf_putc(w->b, '{');
}

static void w_array(wr *w, size_t n)
{
    if (w->enc == TW_ENC_MSGPACK)
        w->rc |= msgpack_pack_array(&w->pk, n);
    else
        w->rc |= tw_buf_putc(w->b, '[');
}

static void w_close(wr *w, char c)
{
    if (w->enc == TW_ENC_JSON) w->rc |= tw_buf_putc(w->b, c);
}

static void w_str(wr *w, const char *s, size_t n)
{
    if (w->enc == TW_ENC_MSGPACK) {
        w->rc |= msgpack_pack_str(&w->pk, n);
        w->rc |= msgpack_pack_str_body(&w->pk, s, n);
    } else {
        w->rc |= tw_buf_append_json_string(w->b, s, n);
    }
}

/* A key; `first` says whether a comma goes before it in JSON. */
static void w_key(wr *w, const char *k, int first)
{
    if (w->enc == TW_ENC_JSON && !first) w->rc |= tw_buf_putc(w->b, ',');
    w_str(w, k, strlen(k));
    if (w->enc == TW_ENC_JSON) w->rc |= tw_buf_putc(w->b, ':');
}

static void w_i64(wr *w, int64_t v)
{
    if (w->enc == TW_ENC_MSGPACK)
        w->rc |= msgpack_pack_int64(&w->pk, v);
    else
        w->rc |= tw_buf_printf(w->b, "%lld", (long long)v);
}

static void w_cstr_or_nil(wr *w, const char *s)
{
    if (s)
        w_str(w, s, strlen(s));
    else if (w->enc == TW_ENC_MSGPACK)
        w->rc |= msgpack_pack_nil(&w->pk);
    else
        w->rc |= tw_buf_append_str(w->b, "null");
}

static void w_member_fields(wr *w, const tw_member *m, int first)
{
    w_key(w, "user", first);
    w_cstr_or_nil(w, m->user);
    w_key(w, "node", 0);
    w_cstr_or_nil(w, m->node);
    w_key(w, "conn", 0);
    w_cstr_or_nil(w, m->conn);
}

static void w_members(wr *w, const tw_member *members, size_t n)
{
    w_array(w, n);
    for (size_t i = 0; i < n; i++) {
        if (i && w->enc == TW_ENC_JSON) w->rc |= tw_buf_putc(w->b, ',');
        w_map(w, 3);
        w_member_fields(w, &members[i], 1);
        w_close(w, '}');
    }
    w_close(w, ']');
}

int tw_presence_encode(tw_buf *b, tw_encoding enc, const int64_t *id, const char *channel,
                       size_t len, const tw_member *members, size_t n)
{
    wr w;
    w_begin(&w, b, enc);
    w_map(&w, 3 + (id != NULL));
    w_key(&w, "op", 1);
    w_str(&w, "presence", 8);
    if (id) {
        w_key(&w, "id", 0);
        w_i64(&w, *id);
    }
    w_key(&w, "channel", 0);
    w_str(&w, channel, len);
    w_key(&w, "members", 0);
    w_members(&w, members, n);
    w_close(&w, '}');
    return w_end(&w);
}

int tw_presence_encode_change(tw_buf *b, tw_encoding enc, const char *op, const char *channel,
                              size_t len, const tw_member *who)
{
    wr w;
    w_begin(&w, b, enc);
    w_map(&w, 5);
    w_key(&w, "op", 1);
    w_str(&w, op, strlen(op));
    w_key(&w, "channel", 0);
    w_str(&w, channel, len);
    w_member_fields(&w, who, 0);
    w_close(&w, '}');
    return w_end(&w);
}

int tw_presence_encode_refreshed(tw_buf *b, tw_encoding enc, const int64_t *id, int64_t exp)
{
    wr w;
    w_begin(&w, b, enc);
    w_map(&w, 2 + (id != NULL));
    w_key(&w, "op", 1);
    w_str(&w, "refreshed", 9);
    if (id) {
        w_key(&w, "id", 0);
        w_i64(&w, *id);
    }
    w_key(&w, "exp", 0);
    w_i64(&w, exp);
    w_close(&w, '}');
    return w_end(&w);
}

int tw_presence_json(tw_buf *b, const char *channel, size_t len, const tw_member *members, size_t n)
{
    wr w;
    w_begin(&w, b, TW_ENC_JSON);
    w_map(&w, 2);
    w_key(&w, "channel", 1);
    w_str(&w, channel, len);
    w_key(&w, "members", 0);
    w_members(&w, members, n);
    w_close(&w, '}');
    w.rc |= tw_buf_putc(b, '\n');
    return w_end(&w);
}
