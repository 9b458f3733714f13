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
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

    if (!s) return TW_STORE_EINVAL;
    if (!list) return 0;
    for (a = list; a; a = a->next) {
        if (check_req(s, a) == 0) {
            size_t c = a->channel_len + a->data_len;
            bytes = bytes > SIZE_MAX - c ? SIZE_MAX : bytes + c;
        }
        tail = a;
    }

    pthread_mutex_lock(&s->q_mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->q_mu);
        return TW_STORE_ECLOSED;
    }
    /* An empty queue admits any list, so a list larger than the bound is delayed, never
     * refused forever. */
    if (s->q_bytes > 0 &&
        (s->q_bytes >= s->max_queue_bytes || bytes > s->max_queue_bytes - s->q_bytes)) {
        s->refused_busy++;
        pthread_mutex_unlock(&s->q_mu);
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
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
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

/* Looks the channel up, giving it the next id when new. Errors doom the txn. */
static int resolve_chan(tw_store *s, MDB_txn *txn, const tw_store_append *a, uint32_t *id)
{
    unsigned char buf[4];
    MDB_val k = {a->channel_len, (void *)a->channel}, v;
    int rc;

    rc = mdb_get(txn, s->dbi_chan, &k, &v);
    if (rc == 0) {
        if (v.mv_size != 4) return TW_STORE_ECORRUPT;
        *id = tw_store__get_be32(v.mv_data);
        return 0;
    }
    if (rc != MDB_NOTFOUND) return tw_store__map_err(rc);
    if (s->next_chan == UINT32_MAX)
        return TW_STORE_EFULL; /* 4 billion channels: not a case worth a status of its own */
    tw_store__put_be32(buf, s->next_chan);
    v.mv_size = 4;
    v.mv_data = buf;
    rc = mdb_put(txn, s->dbi_chan, &k, &v, MDB_NOOVERWRITE);
    if (rc) return tw_store__map_err(rc);
    *id = s->next_chan++;
    return 0;
}

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
        if (a->seq != last + 1) {
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

    touch(s, oi);
    s->origins[oi].last_seq = seq;
    if (s->origins[oi].first_seq == 0) s->origins[oi].first_seq = seq;
    s->last_lsn = lsn;

    slot->status = 0;
    slot->seq = seq;
    slot->lsn = lsn;
    slot->ts_ms = ts;
    return 0;
}

/* Writes the rows summarising the batch: each touched origin once, and the counters. */
static int put_summary(tw_store *s, MDB_txn *txn, uint32_t chan_before)
{
    unsigned char row[TW_STORE__ORIGIN_ROW];
    MDB_val k, v;
    size_t t;
    int rc;

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
}

/* Puts the counters back as they were before a batch whose txn did not commit. */
static void rollback(tw_store *s, size_t n_origins, uint64_t last_lsn, uint32_t next_chan)
{
    size_t t;

    for (t = 0; t < s->n_touched; t++) {
        struct tw_store__origin *o = &s->origins[s->touched[t]];
        o->first_seq = o->saved_first_seq;
        o->last_seq = o->saved_last_seq;
        o->touched = 0;
    }
    s->n_touched = 0;
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
static void write_batch(tw_store *s, tw_store_append *batch, size_t count)
{
    const size_t n_origins = s->n_origins;
    const uint64_t last_lsn = s->last_lsn;
    const uint32_t next_chan = s->next_chan;
    uint64_t t0, events = 0, bytes = 0;
    int64_t now_ms = 0;
    tw_store_append *a;
    MDB_txn *txn;
    size_t i;
    int rc;

    rc = ensure_slots(s, count);
    if (rc) goto out_fail;

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
        rollback(s, n_origins, last_lsn, next_chan);
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
    return;

out_abort_txn:
    mdb_txn_abort(txn);
out_fail:
    rollback(s, n_origins, last_lsn, next_chan);
    record_failure(s);
    fail_batch(batch, rc);
}

void *tw_store__writer_main(void *arg)
{
    tw_store *s = arg;

    for (;;) {
        tw_store_append *head, *tail;
        size_t bytes, count;

        pthread_mutex_lock(&s->q_mu);
        while (!s->q_head && !s->closing)
            pthread_cond_wait(&s->q_cv, &s->q_mu);
        if (!s->q_head) {
            /* Closing and drained: everything submitted has been reported. */
            pthread_mutex_unlock(&s->q_mu);
            break;
        }
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
        pthread_mutex_unlock(&s->q_mu);

        write_batch(s, head, count);
        s->on_commit(s->cb_arg, head);
    }
    return NULL;
}
