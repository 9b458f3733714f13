/*
 * store_write.c — tw_store_submit() and the writer thread (group commit).
 *
 * Submitters append to a FIFO under q_mu. The writer takes what is queued (up to
 * max_batch_bytes), writes it in one LMDB write txn, commits (fsync), and only then hands
 * the batch back through on_commit. One thread owns every write txn (an LMDB rule), and
 * the in-memory counters below — last lsn, next channel id, per-origin seqs — are touched
 * by that thread only.
 *
 * Invariant that makes positions exact: the counters advance only as far as what the
 * txn in progress wrote, and a txn that does not commit puts them back (rollback()), so
 * the seqs and lsns of a failed batch are handed out again by the next one: no holes, no
 * repeats, after a crash too (the counters are rebuilt from the committed rows at open).
 */
#define _GNU_SOURCE /* sync_file_range */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "store_int.h"

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What can be refused before queueing; 0 when the request goes to the writer. Reads only
 * caller-owned fields, so submit can run it twice (before and after deciding EBUSY). */
static int check_req(const tw_store *s, const tw_store_append *a)
{
    if (!a->channel || a->channel_len == 0 || a->channel_len > TW_STORE_CHANNEL_MAX)
        return TW_STORE_EINVAL;
    if (!a->data && a->data_len != 0) return TW_STORE_EINVAL;
    if (a->origin) {
        size_t n = strnlen(a->origin, TW_STORE_ORIGIN_MAX + 1);
        if (n == 0 || n > TW_STORE_ORIGIN_MAX || a->seq == 0) return TW_STORE_EINVAL;
    }
    if (a->data_len > s->max_event_bytes || a->channel_len + a->data_len > s->max_event_bytes)
        return TW_STORE_ETOOBIG;
    return 0;
}

/* Bytes a queued request accounts for: refused ones hold no data for the writer. The
 * writer recomputes this from `status`, which submit set from check_req(). */
static size_t req_cost(const tw_store_append *a)
{
    return a->status == 0 ? a->channel_len + a->data_len : 0;
}

int tw_store_submit(tw_store *s, tw_store_append *list)
{
    tw_store_append *a, *tail = NULL;
    size_t bytes = 0;
    int wake;

    if (!s) return TW_STORE_EINVAL;
    if (!list) return 0;
    for (a = list; a; a = a->next) {
        if (check_req(s, a) == 0) {
            size_t c = a->channel_len + a->data_len;
            bytes = bytes > SIZE_MAX - c ? SIZE_MAX : bytes + c;
        }
        tail = a;
    }

    s->submitters++;
    pthread_mutex_lock(&s->q_mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->q_mu);
        s->submitters--;
        return TW_STORE_ECLOSED;
    }
    /* An empty queue admits any list, so a list larger than the bound is delayed, never
     * refused forever. */
    if (s->q_bytes > 0 &&
        (s->q_bytes >= s->max_queue_bytes || bytes > s->max_queue_bytes - s->q_bytes)) {
        s->refused_busy++;
        pthread_mutex_unlock(&s->q_mu);
        s->submitters--;
        return TW_STORE_EBUSY;
    }
    /* The requests are the store's from here: only now write into them. */
    for (a = list; a; a = a->next) {
        a->status = check_req(s, a);
        a->lsn = 0;
    }
    if (s->q_tail)
        s->q_tail->next = list;
    else
        s->q_head = list;
    s->q_tail = tail;
    s->q_bytes += bytes;
    wake = s->writer_idle;
    s->writer_idle = 0; /* one signal is enough: the writer takes the whole queue */
    pthread_mutex_unlock(&s->q_mu);
    if (wake) pthread_cond_signal(&s->q_cv);
    s->submitters--;
    return 0;
}

static int find_origin(const tw_store *s, const char *id, size_t len, size_t *pos)
{
    size_t i;

    /* Origins are few (one per node incarnation): a linear scan beats a hash here. */
    for (i = 0; i < s->n_origins; i++) {
        if (s->origins[i].id_len == len && memcmp(s->origins[i].id, id, len) == 0) {
            *pos = i;
            return 1;
        }
    }
    return 0;
}

/* Marks origins[i] as changed by the batch in progress, remembering its seqs first. */
static void touch(tw_store *s, size_t i)
{
    struct tw_store__origin *o = &s->origins[i];

    if (o->touched) return;
    o->saved_first_seq = o->first_seq;
    o->saved_last_seq = o->last_seq;
    o->saved_kept = o->kept;
    o->touched = 1;
    s->touched[s->n_touched++] = i;
}

static int add_origin(tw_store *s, const char *id, size_t len, size_t *pos)
{
    struct tw_store__origin *o;

    if (s->n_origins == s->cap_origins) {
        size_t cap = s->cap_origins * 2;
        void *p;

        /* Each array is replaced as soon as it is grown, so a failure of the second
         * realloc leaves both valid (the first merely larger than cap_origins says). */
        p = realloc(s->origins, cap * sizeof(*s->origins));
        if (!p) return TW_STORE_ENOMEM;
        s->origins = p;
        p = realloc(s->touched, cap * sizeof(*s->touched));
        if (!p) return TW_STORE_ENOMEM;
        s->touched = p;
        s->cap_origins = cap;
    }
    o = &s->origins[s->n_origins];
    memset(o, 0, sizeof(*o));
    memcpy(o->id, id, len);
    o->id[len] = '\0';
    o->id_len = len;
    *pos = s->n_origins++;
    return 0;
}

/* ---- The channel table ------------------------------------------------------------ */

static uint32_t name_hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* The id of a channel the writer knows, or 0. */
static uint32_t chan_find(const tw_store *s, const char *name, size_t len)
{
    size_t mask = s->chash_cap - 1, i;

    if (!s->chash_cap) return 0;
    for (i = name_hash(name, len) & mask; s->chash[i]; i = (i + 1) & mask) {
        const struct tw_store__chan *c = &s->chans[s->chash[i] - 1];
        if (c->len == len && memcmp(c->name, name, len) == 0) return s->chash[i];
    }
    return 0;
}

static void chash_put(tw_store *s, uint32_t id)
{
    const struct tw_store__chan *c = &s->chans[id - 1];
    size_t mask = s->chash_cap - 1, i;

    for (i = name_hash(c->name, c->len) & mask; s->chash[i]; i = (i + 1) & mask)
        ;
    s->chash[i] = id;
}

/* Rebuilds the hash for chans[0..n_chans) in a table of at least 2 * n_chans slots. */
static int chash_rebuild(tw_store *s, size_t want)
{
    size_t cap = 64;
    uint32_t *h;

    while (cap < 2 * want)
        cap *= 2;
    h = calloc(cap, sizeof(*h));
    if (!h) return TW_STORE_ENOMEM;
    free(s->chash);
    s->chash = h;
    s->chash_cap = cap;
    for (size_t id = 1; id <= s->n_chans; id++)
        chash_put(s, (uint32_t)id);
    return 0;
}

/* The retention policy of a channel: the longest matching rule, fields inherited. */
static void chan_policy(const tw_store *s, struct tw_store__chan *c)
{
    const struct tw_store__rule *best = NULL;

    for (size_t i = 0; i < s->nrules; i++) {
        const struct tw_store__rule *r = &s->rules[i];
        if (r->len <= c->len && memcmp(r->prefix, c->name, r->len) == 0 &&
            (!best || r->len > best->len))
            best = r;
    }
    c->max_age_ms =
        best && best->max_age_ms != TW_STORE_RETAIN_INHERIT ? best->max_age_ms : s->ret_max_age_ms;
    c->max_count =
        best && best->max_count != TW_STORE_RETAIN_INHERIT ? best->max_count : s->ret_max_count;
}

/* Adds channel `id` (the next one) to the table. */
static int chan_add(tw_store *s, uint32_t id, const char *name, size_t len)
{
    struct tw_store__chan *c;

    if (id != s->n_chans + 1) return TW_STORE_ECORRUPT; /* ids are dense */
    if (s->n_chans == s->cap_chans) {
        size_t cap = s->cap_chans ? s->cap_chans * 2 : 64;
        void *p = realloc(s->chans, cap * sizeof(*s->chans));
        if (!p) return TW_STORE_ENOMEM;
        s->chans = p;
        s->cap_chans = cap;
    }
    if (2 * (s->n_chans + 1) > s->chash_cap) {
        int rc = chash_rebuild(s, s->n_chans + 1);
        if (rc) return rc;
    }
    c = &s->chans[s->n_chans];
    memset(c, 0, sizeof(*c));
    c->name = malloc(len ? len : 1);
    if (!c->name) return TW_STORE_ENOMEM;
    memcpy(c->name, name, len);
    c->len = len;
    chan_policy(s, c);
    s->n_chans++;
    chash_put(s, id);
    return 0;
}

/* Marks channel id as changed by the txn in progress, remembering its count first. */
static int touch_chan(tw_store *s, uint32_t id)
{
    struct tw_store__chan *c = &s->chans[id - 1];

    if (c->touched) return 0;
    if (s->n_touched_chans == s->cap_touched_chans) {
        size_t cap = s->cap_touched_chans ? s->cap_touched_chans * 2 : 256;
        void *p = realloc(s->touched_chans, cap * sizeof(*s->touched_chans));
        if (!p) return TW_STORE_ENOMEM;
        s->touched_chans = p;
        s->cap_touched_chans = cap;
    }
    c->saved_count = c->count;
    c->touched = 1;
    s->touched_chans[s->n_touched_chans++] = id;
    return 0;
}

/* Looks the channel up, giving it the next id when new. Errors doom the txn. */
static int resolve_chan(tw_store *s, MDB_txn *txn, const tw_store_append *a, uint32_t *id)
{
    unsigned char buf[4];
    MDB_val k = {a->channel_len, (void *)a->channel}, v;
    int rc;

    *id = chan_find(s, a->channel, a->channel_len);
    if (*id) return 0;
    if (s->next_chan == UINT32_MAX)
        return TW_STORE_EFULL; /* 4 billion channels: not a case worth a status of its own */
    tw_store__put_be32(buf, s->next_chan);
    v.mv_size = 4;
    v.mv_data = buf;
    rc = mdb_put(txn, s->dbi_chan, &k, &v, MDB_NOOVERWRITE);
    if (rc) return tw_store__map_err(rc);
    rc = chan_add(s, s->next_chan, a->channel, a->channel_len);
    if (rc) return rc;
    *id = s->next_chan++;
    return 0;
}

static void put_count_key(unsigned char *key, char kind, uint32_t id)
{
    key[0] = (unsigned char)kind;
    tw_store__put_be32(key + 1, id);
}

int tw_store__load_channels(tw_store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    unsigned char key[TW_STORE__COUNT_KEY];
    int rc, have_counts;

    rc = chash_rebuild(s, s->next_chan > 1 ? s->next_chan - 1 : 1);
    if (rc) return rc;
    /* Names in id order: `chan` is keyed by name, so place each at its id. */
    if (s->next_chan > 1) {
        size_t n = s->next_chan - 1;
        s->chans = calloc(n, sizeof(*s->chans));
        if (!s->chans) return TW_STORE_ENOMEM;
        s->cap_chans = n;
    }
    rc = mdb_cursor_open(txn, s->dbi_chan, &cur);
    if (rc) return tw_store__map_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint32_t id;
        struct tw_store__chan *c;

        if (v.mv_size != 4 || k.mv_size == 0 || k.mv_size > TW_STORE_CHANNEL_MAX) break;
        id = tw_store__get_be32(v.mv_data);
        if (id == 0 || id >= s->next_chan || s->chans[id - 1].name) break;
        c = &s->chans[id - 1];
        c->name = malloc(k.mv_size);
        if (!c->name) {
            mdb_cursor_close(cur);
            return TW_STORE_ENOMEM;
        }
        memcpy(c->name, k.mv_data, k.mv_size);
        c->len = k.mv_size;
        chan_policy(s, c);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return rc == 0 ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    s->n_chans = s->next_chan - 1;
    for (size_t i = 0; i < s->n_chans; i++)
        if (!s->chans[i].name) return TW_STORE_ECORRUPT; /* a hole in the ids */
    rc = chash_rebuild(s, s->n_chans);
    if (rc) return rc;

    k.mv_size = 6;
    k.mv_data = "counts";
    rc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (rc != 0 && rc != MDB_NOTFOUND) return tw_store__map_err(rc);
    have_counts = rc == 0;
    if (have_counts) {
        /* Read the counts back. */
        rc = mdb_cursor_open(txn, s->dbi_counts, &cur);
        if (rc) return tw_store__map_err(rc);
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            const unsigned char *p = k.mv_data;
            uint64_t n;
            uint32_t id;

            if (v.mv_size != 8) break;
            n = tw_store__get_be64(v.mv_data);
            if (k.mv_size == 1 && p[0] == 'b') {
                s->kept_bytes = n;
                continue;
            }
            if (k.mv_size != TW_STORE__COUNT_KEY) break;
            id = tw_store__get_be32(p + 1);
            if (p[0] == 'c' && id >= 1 && id <= s->n_chans)
                s->chans[id - 1].count = n;
            else if (p[0] == 'o' && id >= 1 && id <= s->n_origins)
                s->origins[id - 1].kept = n;
            else
                break;
        }
        mdb_cursor_close(cur);
        if (rc != MDB_NOTFOUND) return rc == 0 ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
        return 0;
    }

    /* A directory from before the counts: count the log once, and write them. */
    rc = mdb_cursor_open(txn, s->dbi_log, &cur);
    if (rc) return tw_store__map_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct tw_store__rec rec;

        if (tw_store__decode(&v, &rec) != 0 || rec.chan_id == 0 || rec.chan_id > s->n_chans ||
            rec.origin_idx == 0 || rec.origin_idx > s->n_origins)
            break;
        s->chans[rec.chan_id - 1].count++;
        s->origins[rec.origin_idx - 1].kept++;
        s->kept_bytes += rec.channel_len + rec.data_len;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return rc == 0 ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    for (size_t i = 0; i < s->n_chans; i++) {
        put_count_key(key, 'c', (uint32_t)(i + 1));
        unsigned char val[8];
        tw_store__put_be64(val, s->chans[i].count);
        k.mv_size = sizeof(key);
        k.mv_data = key;
        v.mv_size = 8;
        v.mv_data = val;
        if ((rc = mdb_put(txn, s->dbi_counts, &k, &v, 0)) != 0) return tw_store__map_err(rc);
    }
    for (size_t i = 0; i < s->n_origins; i++) {
        unsigned char val[8];
        put_count_key(key, 'o', (uint32_t)(i + 1));
        tw_store__put_be64(val, s->origins[i].kept);
        k.mv_size = sizeof(key);
        k.mv_data = key;
        v.mv_size = 8;
        v.mv_data = val;
        if ((rc = mdb_put(txn, s->dbi_counts, &k, &v, 0)) != 0) return tw_store__map_err(rc);
    }
    {
        unsigned char val[8], one = 1;
        tw_store__put_be64(val, s->kept_bytes);
        k.mv_size = 1;
        k.mv_data = "b";
        v.mv_size = 8;
        v.mv_data = val;
        if ((rc = mdb_put(txn, s->dbi_counts, &k, &v, 0)) != 0) return tw_store__map_err(rc);
        k.mv_size = 6;
        k.mv_data = "counts";
        v.mv_size = 1;
        v.mv_data = &one;
        if ((rc = mdb_put(txn, s->dbi_meta, &k, &v, 0)) != 0) return tw_store__map_err(rc);
    }
    return 0;
}

void tw_store__free_channels(tw_store *s)
{
    for (size_t i = 0; i < s->n_chans; i++)
        free(s->chans[i].name);
    free(s->chans);
    free(s->chash);
    free(s->touched_chans);
    for (size_t i = 0; i < s->nrules; i++)
        free(s->rules[i].prefix);
    free(s->rules);
}

static int mark_trimmed(tw_store *s, MDB_txn *txn, uint32_t chan_id, uint32_t idx, uint64_t seq);

/*
 * Writes one request into the txn. Returns 0 with slot->status telling the request's
 * fate (0, EDUP, EGAP, EINVAL, ENOMEM: the batch goes on), or a negative code when the
 * txn cannot go on (the whole batch fails with it).
 */
static int append_one(tw_store *s, MDB_txn *txn, const tw_store_append *a,
                      struct tw_store__slot *slot, int64_t *now_ms)
{
    unsigned char key[TW_STORE__CHIDX_KEY], val[TW_STORE__CHIDX_VAL];
    unsigned char lsn_be[8];
    MDB_val k, v;
    size_t oi = 0;
    int known = 1;
    uint64_t seq, lsn;
    int64_t ts;
    uint32_t chan_id = 0; /* set by resolve_chan(); 0 quiets -Wmaybe-uninitialized */
    unsigned char *p;
    int rc;

    if (!a->origin) {
        seq = s->origins[0].last_seq + 1;
        if (a->ts_ms != 0) {
            ts = a->ts_ms;
        } else {
            /* One clock read per batch: the events of a commit share its time. */
            if (*now_ms == 0) *now_ms = realtime_ms();
            ts = *now_ms;
        }
    } else {
        size_t len = strlen(a->origin); /* bounded by check_req() */
        uint64_t last;

        known = find_origin(s, a->origin, len, &oi);
        last = known ? s->origins[oi].last_seq : 0;
        if (known && oi == 0) {
            /* Our own origin coming back (a replication echo) is a duplicate; one beyond
             * our own head means two live nodes share an origin id: refuse it. */
            slot->status = a->seq <= last ? TW_STORE_EDUP : TW_STORE_EINVAL;
            return 0;
        }
        if (a->seq <= last) {
            slot->status = TW_STORE_EDUP;
            return 0;
        }
        if (a->seq != last + 1 && !a->after_trim) {
            slot->status = TW_STORE_EGAP;
            return 0;
        }
        seq = a->seq;
        ts = a->ts_ms;
    }

    rc = resolve_chan(s, txn, a, &chan_id);
    if (rc) return rc;
    /* A new origin enters the table only once its first event is accepted, so refused
     * requests never leave an empty origin row behind. */
    if (!known && add_origin(s, a->origin, strlen(a->origin), &oi) != 0) {
        slot->status = TW_STORE_ENOMEM;
        return 0;
    }
    if (a->origin && seq != s->origins[oi].last_seq + 1) {
        /* after_trim: seqs last+1 .. seq-1 are gone for good. Channel 0 (no channel has
         * id 0) holds the origin-wide mark that resume reads for every channel. */
        rc = mark_trimmed(s, txn, 0, (uint32_t)(oi + 1), seq - 1);
        if (rc) return rc;
    }
    lsn = s->last_lsn + 1;

    /* log: reserve the record in the page and encode it in place (no staging copy). */
    tw_store__put_be64(lsn_be, lsn);
    k.mv_size = 8;
    k.mv_data = lsn_be;
    v.mv_size = TW_STORE__REC_HDR + a->channel_len + a->data_len;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->dbi_log, &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc) return tw_store__map_err(rc);
    p = v.mv_data;
    p[0] = TW_STORE__REC_VERSION;
    p[1] = a->encoding;
    tw_store__put_be32(p + 2, (uint32_t)(oi + 1));
    tw_store__put_be64(p + 6, seq);
    tw_store__put_be64(p + 14, (uint64_t)ts);
    tw_store__put_be32(p + 22, chan_id);
    p[26] = (unsigned char)a->channel_len;
    memcpy(p + TW_STORE__REC_HDR, a->channel, a->channel_len);
    if (a->data_len) memcpy(p + TW_STORE__REC_HDR + a->channel_len, a->data, a->data_len);

    /* chidx: (channel, lsn) -> (origin, seq). NOOVERWRITE turns a counter bug into an
     * error instead of a silently replaced entry. */
    tw_store__put_be32(key, chan_id);
    tw_store__put_be64(key + 4, lsn);
    tw_store__put_be32(val, (uint32_t)(oi + 1));
    tw_store__put_be64(val + 4, seq);
    k.mv_size = TW_STORE__CHIDX_KEY;
    k.mv_data = key;
    v.mv_size = TW_STORE__CHIDX_VAL;
    v.mv_data = val;
    rc = mdb_put(txn, s->dbi_chidx, &k, &v, MDB_NOOVERWRITE);
    if (rc) return tw_store__map_err(rc);

    /* oidx: (origin, seq) -> lsn. */
    tw_store__put_be32(key, (uint32_t)(oi + 1));
    tw_store__put_be64(key + 4, seq);
    k.mv_size = TW_STORE__OIDX_KEY;
    k.mv_data = key;
    v.mv_size = 8;
    v.mv_data = lsn_be;
    rc = mdb_put(txn, s->dbi_oidx, &k, &v, MDB_NOOVERWRITE);
    if (rc) return tw_store__map_err(rc);

    rc = touch_chan(s, chan_id);
    if (rc) return rc;
    {
        struct tw_store__chan *c = &s->chans[chan_id - 1];
        /* Keep the oldest-event hint right: it may only err on the old side (0: unknown). */
        if (c->count == 0)
            c->oldest_ts_ms = ts;
        else if (c->oldest_ts_ms && ts < c->oldest_ts_ms)
            c->oldest_ts_ms = ts;
        c->count++;
    }
    touch(s, oi);
    s->origins[oi].last_seq = seq;
    s->origins[oi].kept++;
    if (s->origins[oi].first_seq == 0) s->origins[oi].first_seq = seq;
    s->kept_bytes += a->channel_len + a->data_len;
    s->last_lsn = lsn;

    slot->status = 0;
    slot->seq = seq;
    slot->lsn = lsn;
    slot->ts_ms = ts;
    return 0;
}

static int put_count(tw_store *s, MDB_txn *txn, char kind, uint32_t id, uint64_t n)
{
    unsigned char key[TW_STORE__COUNT_KEY], val[8];
    MDB_val k = {kind == 'b' ? 1 : sizeof(key), key}, v = {8, val};

    put_count_key(key, kind, id);
    tw_store__put_be64(val, n);
    return tw_store__map_err(mdb_put(txn, s->dbi_counts, &k, &v, 0));
}

/* Writes the rows summarising a txn (append or trim): each touched origin and channel
 * once, the kept counts, and the counters. */
static int put_summary(tw_store *s, MDB_txn *txn, uint32_t chan_before)
{
    unsigned char row[TW_STORE__ORIGIN_ROW];
    MDB_val k, v;
    size_t t;
    int rc;

    for (t = 0; t < s->n_touched_chans; t++) {
        uint32_t id = s->touched_chans[t];
        rc = put_count(s, txn, 'c', id, s->chans[id - 1].count);
        if (rc) return rc;
    }
    rc = put_count(s, txn, 'b', 0, s->kept_bytes);
    if (rc) return rc;

    for (t = 0; t < s->n_touched; t++) {
        size_t i = s->touched[t];
        const struct tw_store__origin *o = &s->origins[i];

        tw_store__put_be32(row, (uint32_t)(i + 1));
        tw_store__put_be64(row + 4, o->first_seq);
        tw_store__put_be64(row + 12, o->last_seq);
        k.mv_size = o->id_len;
        k.mv_data = (void *)o->id;
        v.mv_size = TW_STORE__ORIGIN_ROW;
        v.mv_data = row;
        rc = mdb_put(txn, s->dbi_origins, &k, &v, 0);
        if (rc) return tw_store__map_err(rc);
        rc = put_count(s, txn, 'o', (uint32_t)(i + 1), o->kept);
        if (rc) return rc;
    }

    tw_store__put_be64(row, s->last_lsn);
    k.mv_size = 8;
    k.mv_data = "last_lsn";
    v.mv_size = 8;
    v.mv_data = row;
    rc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
    if (rc) return tw_store__map_err(rc);
    if (s->next_chan != chan_before) {
        tw_store__put_be32(row, s->next_chan);
        k.mv_size = 9;
        k.mv_data = "next_chan";
        v.mv_size = 4;
        v.mv_data = row;
        rc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
        if (rc) return tw_store__map_err(rc);
    }
    return 0;
}

/* Ends the batch bookkeeping after a commit: what was written is now the truth. */
static void keep_touched(tw_store *s)
{
    size_t t;

    for (t = 0; t < s->n_touched; t++)
        s->origins[s->touched[t]].touched = 0;
    s->n_touched = 0;
    for (t = 0; t < s->n_touched_chans; t++)
        s->chans[s->touched_chans[t] - 1].touched = 0;
    s->n_touched_chans = 0;
}

/* Puts the counters back as they were before a txn (append or trim) that did not commit. */
static void rollback(tw_store *s, size_t n_origins, uint64_t last_lsn, uint32_t next_chan,
                     uint64_t kept_bytes)
{
    size_t t;

    for (t = 0; t < s->n_touched; t++) {
        struct tw_store__origin *o = &s->origins[s->touched[t]];
        o->first_seq = o->saved_first_seq;
        o->last_seq = o->saved_last_seq;
        o->kept = o->saved_kept;
        o->first_gone = 0;
        o->touched = 0;
    }
    s->n_touched = 0;
    for (t = 0; t < s->n_touched_chans; t++) {
        struct tw_store__chan *c = &s->chans[s->touched_chans[t] - 1];
        c->count = c->saved_count;
        c->oldest_ts_ms = 0; /* the txn may have moved it: unknown until looked at */
        c->touched = 0;
    }
    s->n_touched_chans = 0;
    s->kept_bytes = kept_bytes;
    /* Channels first seen in the txn are forgotten; their ids will be handed out again. */
    if (s->n_chans > (size_t)next_chan - 1) {
        while (s->n_chans > (size_t)next_chan - 1)
            free(s->chans[--s->n_chans].name);
        /* Re-hash in place: the table only shrank, so this needs no memory. */
        memset(s->chash, 0, s->chash_cap * sizeof(*s->chash));
        for (size_t id = 1; id <= s->n_chans; id++)
            chash_put(s, (uint32_t)id);
    }
    /* Origins first seen in the batch are dropped; their idx will be handed out again. */
    s->n_origins = n_origins;
    s->last_lsn = last_lsn;
    s->next_chan = next_chan;
}

static void record_commit(tw_store *s, uint64_t us, uint64_t events, uint64_t bytes)
{
    MDB_envinfo info;
    size_t b;

    mdb_env_info(s->env, &info);
    for (b = 0; b < 11 && us > tw_store_commit_us_bounds[b]; b++)
        ;
    pthread_mutex_lock(&s->st_mu);
    s->st.commits++;
    s->st.events_appended += events;
    s->st.bytes_appended += bytes;
    s->st.last_lsn = s->last_lsn;
    s->st.used_bytes = (uint64_t)(info.me_last_pgno + 1) * s->page_size;
    s->st.commit_us_total += us;
    if (us > s->st.commit_us_max) s->st.commit_us_max = us;
    s->st.commit_us_buckets[b]++;
    s->st.kept_bytes = s->kept_bytes;
    s->st.kept_events += events;
    pthread_mutex_unlock(&s->st_mu);
}

static void record_failure(tw_store *s)
{
    pthread_mutex_lock(&s->st_mu);
    s->st.commit_failures++;
    pthread_mutex_unlock(&s->st_mu);
}

/* Completes every request not refused at submit with err (nothing of them was written). */
static void fail_batch(tw_store_append *batch, int err)
{
    tw_store_append *a;

    for (a = batch; a; a = a->next) {
        if (a->status == 0) a->status = err;
        a->lsn = 0;
    }
}

static int ensure_slots(tw_store *s, size_t count)
{
    struct tw_store__slot *p;

    if (count <= s->cap_slots) return 0;
    p = realloc(s->slots, count * sizeof(*p));
    if (!p) return TW_STORE_ENOMEM;
    s->slots = p;
    s->cap_slots = count;
    return 0;
}

/* Writes and commits one batch, then sets every request's status (and seq/lsn/ts_ms). */
/* One attempt at a batch: 0 when it committed (or every request was refused) and the
 * requests carry their outcome; else a code, with the counters rolled back and the
 * requests untouched, so the caller may grow the map and try again. */
static int try_batch(tw_store *s, tw_store_append *batch, size_t count)
{
    const size_t n_origins = s->n_origins;
    const uint64_t last_lsn = s->last_lsn;
    const uint32_t next_chan = s->next_chan;
    const uint64_t kept_bytes = s->kept_bytes;
    uint64_t t0, events = 0, bytes = 0;
    int64_t now_ms = 0;
    tw_store_append *a;
    MDB_txn *txn;
    size_t i;
    int rc;

    rc = ensure_slots(s, count);
    if (rc) return rc;

    t0 = mono_us();
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_fail;
    }
    for (a = batch, i = 0; a; a = a->next, i++) {
        struct tw_store__slot *slot = &s->slots[i];

        slot->status = a->status; /* a refusal from submit stands */
        if (a->status != 0) continue;
        rc = append_one(s, txn, a, slot, &now_ms);
        if (rc) goto out_abort_txn;
        if (slot->status == 0) {
            events++;
            bytes += a->channel_len + a->data_len;
        }
    }
    if (events == 0) {
        /* Every request was refused: nothing to make durable. */
        mdb_txn_abort(txn);
        rollback(s, n_origins, last_lsn, next_chan, kept_bytes);
        goto out_deliver;
    }
    rc = put_summary(s, txn, next_chan);
    if (rc) goto out_abort_txn;
    rc = mdb_txn_commit(txn); /* frees txn, also on failure */
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_fail;
    }
    keep_touched(s);
    record_commit(s, mono_us() - t0, events, bytes);

out_deliver:
    for (a = batch, i = 0; a; a = a->next, i++) {
        const struct tw_store__slot *slot = &s->slots[i];

        a->status = slot->status;
        if (slot->status == 0) {
            a->seq = slot->seq;
            a->lsn = slot->lsn;
            a->ts_ms = slot->ts_ms;
        } else {
            a->lsn = 0;
        }
    }
    return 0;

out_abort_txn:
    mdb_txn_abort(txn);
out_fail:
    rollback(s, n_origins, last_lsn, next_chan, kept_bytes);
    return rc;
}

/* Sets the map size (LMDB rounds it up to what the file holds). LMDB remaps the file, so
 * no txn may be open anywhere in the process: the writer has none (it calls this between
 * txns), and the exclusive map lock waits for every read call in progress to end (readers
 * hold it shared from renew to reset, never across a network wait). */
static int set_map(tw_store *s, uint64_t want)
{
    MDB_envinfo info;
    int rc;

    pthread_rwlock_wrlock(&s->map_lock);
    rc = mdb_env_set_mapsize(s->env, want);
    pthread_rwlock_unlock(&s->map_lock);
    if (rc) return tw_store__map_err(rc);
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
    pthread_mutex_lock(&s->st_mu);
    s->st.map_size = s->map_size;
    pthread_mutex_unlock(&s->st_mu);
    return 0;
}

/* Grows the map (doubling, up to map_soft) after an append txn found it full. Returns 0
 * when it grew, TW_STORE_EFULL when appends may not have more. */
static int grow_map(tw_store *s)
{
    uint64_t want;
    int rc;

    if (s->map_size >= s->map_soft) return TW_STORE_EFULL;
    want = s->map_size > s->map_soft / 2 ? s->map_soft : s->map_size * 2;
    rc = set_map(s, want);
    if (rc) return rc;
    pthread_mutex_lock(&s->st_mu);
    s->st.map_grows++;
    pthread_mutex_unlock(&s->st_mu);
    return 0;
}

/* Writes and commits one batch (growing the map as needed), then sets every request's
 * status (and seq/lsn/ts_ms). */
static void write_batch(tw_store *s, tw_store_append *batch, size_t count)
{
    int rc;

    while ((rc = try_batch(s, batch, count)) == TW_STORE__EMAPFULL && grow_map(s) == 0)
        ;
    s->map_full = rc == TW_STORE__EMAPFULL;
    if (rc) {
        record_failure(s);
        fail_batch(batch, tw_store__public_err(rc));
    }
}

/* ---- Writing ahead of LMDB ---------------------------------------------------------- */

/*
 * A commit that writes past the end of data.mdb grows the file, and its fdatasync must then
 * also write the inode (size, new blocks). Measured on this machine's ext4: a 16-page commit
 * takes 320-390 us appending and 200-260 us into space already written; store_bench at 256
 * in flight went from 620-790 to 510-550 us per commit. So between txns (no LMDB write is
 * in progress then, and LMDB never reads past its last page) the writer keeps one to two
 * chunks of zeros written beyond LMDB's last page and starts their writeback at once, so a
 * later commit's fdatasync finds them on disk already (512 KiB chunks: 1 MiB ones showed in
 * the p99, 256 KiB ones gained less). The zeros are never synced by themselves: a crash
 * leaves at most a tail of zeros past the last page, which LMDB ignores. Bounded by the map
 * (LMDB cannot use more); after a failure (a full disk) not tried again until LMDB itself
 * has grown the file.
 */
#define EXTEND_CHUNK ((uint64_t)1 << 19)
#define ZERO_BUF 65536

static void extend_file(tw_store *s)
{
    static const char zeros[ZERO_BUF];
    struct iovec iov[EXTEND_CHUNK / ZERO_BUF];
    uint64_t used = s->st.used_bytes, len;
    ssize_t n;
    size_t i, cnt;

    if (s->file_bytes < used) s->file_bytes = used; /* LMDB appended past our zeros */
    if (s->file_bytes - used >= EXTEND_CHUNK || s->file_bytes >= s->map_size) return;
    if (s->extend_blocked && used <= s->extend_blocked) return;
    len = s->map_size - s->file_bytes < EXTEND_CHUNK ? s->map_size - s->file_bytes : EXTEND_CHUNK;
    cnt = (size_t)((len + ZERO_BUF - 1) / ZERO_BUF);
    for (i = 0; i < cnt; i++) {
        iov[i].iov_base = (void *)zeros;
        iov[i].iov_len = i + 1 < cnt ? ZERO_BUF : (size_t)(len - (uint64_t)i * ZERO_BUF);
    }
    n = pwritev(s->data_fd, iov, (int)cnt, (off_t)s->file_bytes);
    if (n > 0) {
        sync_file_range(s->data_fd, (off_t)s->file_bytes, n, SYNC_FILE_RANGE_WRITE);
        s->file_bytes += (uint64_t)n;
    }
    s->extend_blocked = (uint64_t)n == len ? 0 : used;
}

/* ---- Retention ---------------------------------------------------------------------- */

/*
 * LMDB hands out the pages a txn freed only from the second txn after it on (the newest
 * committed txn is never reclaimed). With the map at its maximum, appends fail and commit
 * nothing, so after a trim frees space one small commit must follow, or the space would
 * stay out of reach until some other txn commits. Rewriting the last_lsn row suffices.
 */
static void advance_txn(tw_store *s)
{
    unsigned char row[8];
    MDB_val k = {8, "last_lsn"}, v = {8, row};
    MDB_txn *txn;

    if (mdb_txn_begin(s->env, NULL, 0, &txn) != 0) return;
    tw_store__put_be64(row, s->last_lsn);
    if (mdb_put(txn, s->dbi_meta, &k, &v, 0) != 0) {
        mdb_txn_abort(txn);
        return;
    }
    if (mdb_txn_commit(txn) == 0) s->map_full = 0;
}

/* Channels a pass looks at, at most: a pass stays bounded with millions of channels. */
#define TRIM_SCAN_CHANNELS 4096

struct trim_ctx {
    MDB_txn *txn;
    MDB_cursor *c_log;
    MDB_cursor *c_chidx;
    size_t deleted;
    size_t budget;
};

/* Raises the channel's trimmed-seq mark for origin idx to seq (chtrim). */
static int mark_trimmed(tw_store *s, MDB_txn *txn, uint32_t chan_id, uint32_t idx, uint64_t seq)
{
    unsigned char key[TW_STORE__CHTRIM_KEY], val[8];
    MDB_val k = {sizeof(key), key}, v;
    int rc;

    tw_store__put_be32(key, chan_id);
    tw_store__put_be32(key + 4, idx);
    rc = mdb_get(txn, s->dbi_chtrim, &k, &v);
    if (rc == 0 && v.mv_size == 8 && tw_store__get_be64(v.mv_data) >= seq) return 0;
    if (rc != 0 && rc != MDB_NOTFOUND) return tw_store__map_err(rc);
    tw_store__put_be64(val, seq);
    v.mv_size = 8;
    v.mv_data = val;
    return tw_store__map_err(mdb_put(txn, s->dbi_chtrim, &k, &v, 0));
}

/*
 * Deletes one event from the three databases that hold it and updates the counters. The
 * log row is deleted by the caller when it is positioned on it (c_log), else here by key.
 */
static int delete_event(tw_store *s, struct trim_ctx *t, uint64_t lsn, uint32_t chan_id,
                        uint32_t idx, uint64_t seq, size_t bytes, int log_deleted)
{
    unsigned char key[TW_STORE__CHIDX_KEY], lsn_be[8];
    MDB_val k;
    struct tw_store__origin *o;
    int rc;

    if (chan_id == 0 || chan_id > s->n_chans || idx == 0 || idx > s->n_origins)
        return TW_STORE_ECORRUPT;
    if (!log_deleted) {
        tw_store__put_be64(lsn_be, lsn);
        k.mv_size = 8;
        k.mv_data = lsn_be;
        rc = mdb_del(t->txn, s->dbi_log, &k, NULL);
        if (rc) return tw_store__map_err(rc);
    }
    tw_store__put_be32(key, chan_id);
    tw_store__put_be64(key + 4, lsn);
    k.mv_size = TW_STORE__CHIDX_KEY;
    k.mv_data = key;
    rc = mdb_del(t->txn, s->dbi_chidx, &k, NULL);
    if (rc) return tw_store__map_err(rc);
    tw_store__put_be32(key, idx);
    tw_store__put_be64(key + 4, seq);
    k.mv_size = TW_STORE__OIDX_KEY;
    rc = mdb_del(t->txn, s->dbi_oidx, &k, NULL);
    if (rc) return tw_store__map_err(rc);
    rc = mark_trimmed(s, t->txn, chan_id, idx, seq);
    if (rc == 0) rc = mark_trimmed(s, t->txn, chan_id, 0, lsn); /* the channel's newest lsn */
    if (rc) return rc;

    rc = touch_chan(s, chan_id);
    if (rc) return rc;
    s->chans[chan_id - 1].count--;
    touch(s, idx - 1);
    o = &s->origins[idx - 1];
    o->kept--;
    if (seq == o->first_seq) o->first_gone = 1;
    s->kept_bytes -= bytes < s->kept_bytes ? bytes : s->kept_bytes;
    t->deleted++;
    return 0;
}

/* The whole log over max_bytes: delete its oldest events, whatever their channel. */
static int trim_bytes(tw_store *s, struct trim_ctx *t)
{
    while (s->kept_bytes > s->ret_max_bytes && t->deleted < t->budget) {
        struct tw_store__rec rec;
        MDB_val k, v;
        int rc = mdb_cursor_get(t->c_log, &k, &v, MDB_FIRST);

        if (rc == MDB_NOTFOUND) break;
        if (rc) return tw_store__map_err(rc);
        if (k.mv_size != 8 || tw_store__decode(&v, &rec) != 0) return TW_STORE_ECORRUPT;
        uint64_t lsn = tw_store__get_be64(k.mv_data);
        rc = mdb_cursor_del(t->c_log, 0);
        if (rc) return tw_store__map_err(rc);
        rc = delete_event(s, t, lsn, rec.chan_id, rec.origin_idx, rec.seq,
                          rec.channel_len + rec.data_len, 1);
        if (rc) return rc;
    }
    return 0;
}

/* One channel over its count or age limit: delete its oldest events. Returns 1 in *done
 * when the channel is within its limits (or the budget ran out: 0). */
static int trim_channel(tw_store *s, struct trim_ctx *t, uint32_t id, int64_t now_ms, int *done)
{
    struct tw_store__chan *c = &s->chans[id - 1];
    unsigned char key[TW_STORE__CHIDX_KEY];

    *done = 0;
    /* The oldest event's time, when known, answers the age question without a read. */
    if (c->max_age_ms > 0 && c->oldest_ts_ms && c->oldest_ts_ms >= now_ms - c->max_age_ms &&
        !(c->max_count > 0 && c->count > (uint64_t)c->max_count)) {
        *done = 1;
        return 0;
    }
    while (t->deleted < t->budget) {
        MDB_val k = {sizeof(key), key}, v, lk, lv;
        struct tw_store__rec rec;
        int over_count = c->max_count > 0 && c->count > (uint64_t)c->max_count;
        int rc;

        if (c->count == 0 || (!over_count && c->max_age_ms <= 0)) {
            *done = 1;
            return 0;
        }
        tw_store__put_be32(key, id);
        tw_store__put_be64(key + 4, 0);
        rc = mdb_cursor_get(t->c_chidx, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) {
            *done = 1;
            return 0;
        }
        if (rc) return tw_store__map_err(rc);
        if (k.mv_size != TW_STORE__CHIDX_KEY || v.mv_size != TW_STORE__CHIDX_VAL)
            return TW_STORE_ECORRUPT;
        if (tw_store__get_be32(k.mv_data) != id) {
            *done = 1; /* counted but absent: nothing more to delete */
            return 0;
        }
        lk.mv_size = 8;
        lk.mv_data = (unsigned char *)k.mv_data + 4;
        rc = mdb_get(t->txn, s->dbi_log, &lk, &lv);
        if (rc) return rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
        if (tw_store__decode(&lv, &rec) != 0) return TW_STORE_ECORRUPT;
        if (!over_count && rec.ts_ms >= now_ms - c->max_age_ms) {
            c->oldest_ts_ms = rec.ts_ms;
            *done = 1; /* the oldest is young enough: so are the rest */
            return 0;
        }
        c->oldest_ts_ms = 0; /* about to go: unknown until the next look */
        uint64_t lsn = tw_store__get_be64(lk.mv_data);
        uint32_t idx = tw_store__get_be32(v.mv_data);
        uint64_t seq = tw_store__get_be64((unsigned char *)v.mv_data + 4);
        rc = delete_event(s, t, lsn, id, idx, seq, rec.channel_len + rec.data_len, 0);
        if (rc) return rc;
    }
    return 0;
}

/* Before commit: origins whose oldest kept seq was deleted find their new oldest. */
static int fix_first_seqs(tw_store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_oidx, &cur);

    if (rc) return tw_store__map_err(rc);
    for (size_t t = 0; t < s->n_touched && rc == 0; t++) {
        size_t i = s->touched[t];
        struct tw_store__origin *o = &s->origins[i];
        unsigned char key[TW_STORE__OIDX_KEY];
        MDB_val k = {sizeof(key), key}, v;

        if (!o->first_gone) continue;
        o->first_gone = 0;
        tw_store__put_be32(key, (uint32_t)(i + 1));
        tw_store__put_be64(key + 4, o->first_seq);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == TW_STORE__OIDX_KEY &&
            tw_store__get_be32(k.mv_data) == (uint32_t)(i + 1)) {
            o->first_seq = tw_store__get_be64((unsigned char *)k.mv_data + 4);
        } else if (rc == 0 || rc == MDB_NOTFOUND) {
            o->first_seq = 0; /* nothing of this origin is kept */
            rc = 0;
        }
    }
    mdb_cursor_close(cur);
    return tw_store__map_err(rc);
}

static void record_trim(tw_store *s, size_t deleted, int ok)
{
    pthread_mutex_lock(&s->st_mu);
    s->st.trim_passes++;
    if (ok) {
        s->st.trimmed_events += deleted;
        s->st.trim_commits++;
    } else {
        s->st.trim_failures++;
    }
    s->st.kept_bytes = s->kept_bytes;
    uint64_t kept = 0;
    for (size_t i = 0; i < s->n_origins; i++)
        kept += s->origins[i].kept;
    s->st.kept_events = kept;
    pthread_mutex_unlock(&s->st_mu);
}

/*
 * One trim transaction: at most trim_batch deletions, oldest first (the whole log over
 * max_bytes, then channels over their count or age, round-robin from where the last pass
 * stopped). Sets *more when it stopped on its budget with work left. A txn that fails
 * leaves everything as it was (rollback) and is tried again on the next pass.
 */
static void trim_pass(tw_store *s, int new_round, int *more)
{
    const size_t n_origins = s->n_origins;
    const uint64_t last_lsn = s->last_lsn, kept_bytes = s->kept_bytes;
    const uint32_t next_chan = s->next_chan;
    struct trim_ctx t = {.budget = s->trim_batch_now ? s->trim_batch_now : s->trim_batch};
    int64_t now = realtime_ms();
    size_t scanned = 0;
    int rc;

    *more = 0;
    /* A round looks at every channel once; it may take several passes (TRIM_SCAN_CHANNELS
     * each), back to back, then the writer waits for the next interval. */
    if (new_round) s->trim_round_left = s->n_chans;
    rc = mdb_txn_begin(s->env, NULL, 0, &t.txn);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_fail;
    }
    if ((rc = mdb_cursor_open(t.txn, s->dbi_log, &t.c_log)) != 0 ||
        (rc = mdb_cursor_open(t.txn, s->dbi_chidx, &t.c_chidx)) != 0) {
        rc = tw_store__map_err(rc);
        goto out_abort_txn;
    }
    if (s->ret_max_bytes) {
        rc = trim_bytes(s, &t);
        if (rc) goto out_abort_txn;
    }
    while (t.deleted < t.budget && scanned < s->trim_round_left && scanned < TRIM_SCAN_CHANNELS) {
        uint32_t id = s->trim_next_chan;
        int done;

        if (id == 0 || id > s->n_chans) id = 1;
        rc = trim_channel(s, &t, id, now, &done);
        if (rc) goto out_abort_txn;
        if (!done) break; /* out of budget: this channel first next time */
        s->trim_next_chan = id + 1;
        scanned++;
    }
    s->trim_round_left -= scanned;
    *more = t.deleted >= t.budget || s->trim_round_left > 0;
    if (t.deleted == 0) {
        mdb_txn_abort(t.txn); /* also closes the cursors */
        pthread_mutex_lock(&s->st_mu);
        s->st.trim_passes++;
        pthread_mutex_unlock(&s->st_mu);
        return;
    }
    rc = fix_first_seqs(s, t.txn);
    if (rc == 0) rc = put_summary(s, t.txn, next_chan);
    if (rc) goto out_abort_txn;
    rc = mdb_txn_commit(t.txn);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_fail;
    }
    keep_touched(s);
    record_trim(s, t.deleted, 1);
    if (t.budget < s->trim_batch) s->trim_batch_now = t.budget * 2;
    if (s->map_size > s->map_soft) set_map(s, s->map_soft); /* close the reserve again */
    if (s->map_full) advance_txn(s);
    return;

out_abort_txn:
    mdb_txn_abort(t.txn);
out_fail:
    rollback(s, n_origins, last_lsn, next_chan, kept_bytes);
    record_trim(s, 0, 0);
    /* Deleting needs free pages too (copy on write, a page per leaf touched): with the map
     * full, open the reserve above map_soft, then try smaller batches, down to one event.
     * Otherwise wait for the next interval rather than spin on a failing txn. */
    *more = 0;
    if (rc == TW_STORE__EMAPFULL) {
        if (s->map_size < s->map_max && set_map(s, s->map_max) == 0) {
            *more = 1;
        } else if (t.budget > 1) {
            s->trim_batch_now = (unsigned)(t.budget / 2);
            *more = 1;
        }
    }
}

void tw_store_trim_now(tw_store *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->q_mu);
    s->trim_kick = 1;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
}

static void deadline_ts(struct timespec *ts, uint64_t ms_from_now)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms_from_now / 1000);
    ts->tv_nsec += (long)(ms_from_now % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/*
 * The writer: each round takes what is queued (one append txn), then, when retention is
 * on and a pass is due, runs one bounded trim txn. Appends therefore never wait behind
 * more than one trim txn, and a backlog of trimming is worked off between batches.
 */
void *tw_store__writer_main(void *arg)
{
    tw_store *s = arg;
    uint64_t next_trim_us = mono_us() + (uint64_t)s->trim_interval_ms * 1000u;
    int trim_more = 0, trim_kicked = 0;

    for (;;) {
        tw_store_append *head = NULL, *tail;
        size_t bytes = 0, count = 0;
        int trim_due;

        pthread_mutex_lock(&s->q_mu);
        for (;;) {
            trim_due = s->retention_on && !s->closing &&
                       (s->trim_kick || trim_more || mono_us() >= next_trim_us);
            if (s->q_head || s->closing || trim_due) break;
            s->writer_idle = 1;
            if (s->retention_on) {
                struct timespec ts;
                uint64_t now = mono_us();
                deadline_ts(&ts, next_trim_us > now ? (next_trim_us - now) / 1000 + 1 : 0);
                pthread_cond_timedwait(&s->q_cv, &s->q_mu, &ts);
            } else {
                pthread_cond_wait(&s->q_cv, &s->q_mu);
            }
            s->writer_idle = 0;
        }
        if (!s->q_head && s->closing) {
            /* Closing and drained: everything submitted has been reported. */
            pthread_mutex_unlock(&s->q_mu);
            break;
        }
        trim_kicked = s->trim_kick;
        s->trim_kick = 0;
        if (s->q_head) {
            /* Take whole requests up to max_batch_bytes, at least one, keeping FIFO order. */
            head = tail = s->q_head;
            bytes = req_cost(head);
            count = 1;
            while (tail->next && bytes <= s->max_batch_bytes &&
                   req_cost(tail->next) <= s->max_batch_bytes - bytes) {
                tail = tail->next;
                bytes += req_cost(tail);
                count++;
            }
            s->q_head = tail->next;
            if (!s->q_head) s->q_tail = NULL;
            tail->next = NULL;
            s->q_bytes -= bytes;
        }
        pthread_mutex_unlock(&s->q_mu);

        if (head) {
            write_batch(s, head, count);
            s->on_commit(s->cb_arg, head);
            extend_file(s); /* after the hand-back: it never delays an ack */
        }
        if (trim_due) {
            /* A kick or the interval starts a new round; `more` continues the current. */
            trim_pass(s, trim_kicked || !trim_more, &trim_more);
            next_trim_us = mono_us() + (uint64_t)s->trim_interval_ms * 1000u;
        }
    }
    return NULL;
}
