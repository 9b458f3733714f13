/*
 * store_read.c — readers: channel reads, cursor resolution, channel tails, origins.
 *
 * A reader owns one read-only txn handle and its cursors for its whole life (so one LMDB
 * reader slot). Every call renews the txn (a fresh snapshot), reads, and resets it before
 * returning: no snapshot outlives a call, so a slow client can never pin old pages while
 * the broker waits on its socket. MDB_NOTLS ties the slot to the txn, not to a thread,
 * which is what lets a reader move between threads.
 *
 * The reader keeps its own origin idx -> id table, filled from its snapshots. It needs no
 * lock: an idx found in a committed record was committed with its origin row in the same
 * txn, so the snapshot that holds the record holds the row, and an idx, once committed,
 * never changes its origin.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

struct tw_store_reader {
    tw_store *s;
    MDB_txn *txn; /* reset between calls */
    MDB_cursor *c_chidx;
    MDB_cursor *c_oidx;
    MDB_cursor *c_origins;
    MDB_cursor *c_log; /* channel and origin reads walk the log with it (tw_store__log_fetch) */
    /* names[i] is the origin with idx i + 1 ("" while unknown to this reader). */
    char (*names)[TW_STORE_ORIGIN_MAX + 1];
    size_t n_names;
};

int tw_store_reader_new(tw_store *s, tw_store_reader **out)
{
    tw_store_reader *r;
    int rc;

    if (!s || !out) return TW_STORE_EINVAL;
    r = calloc(1, sizeof(*r));
    if (!r) return TW_STORE_ENOMEM;
    r->s = s;
    pthread_rwlock_rdlock(&s->map_lock);
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc) {
        pthread_rwlock_unlock(&s->map_lock);
        rc = tw_store__map_err(rc);
        goto out_free_reader;
    }
    /* Cursors of read-only txns survive a reset and are renewed with the txn. */
    if ((rc = mdb_cursor_open(r->txn, s->dbi_chidx, &r->c_chidx)) != 0 ||
        (rc = mdb_cursor_open(r->txn, s->dbi_oidx, &r->c_oidx)) != 0 ||
        (rc = mdb_cursor_open(r->txn, s->dbi_origins, &r->c_origins)) != 0 ||
        (rc = mdb_cursor_open(r->txn, s->dbi_log, &r->c_log)) != 0) {
        rc = tw_store__map_err(rc);
        goto out_close_cursors;
    }
    mdb_txn_reset(r->txn);
    pthread_rwlock_unlock(&s->map_lock);
    *out = r;
    return 0;

out_close_cursors:
    if (r->c_log) mdb_cursor_close(r->c_log);
    if (r->c_origins) mdb_cursor_close(r->c_origins);
    if (r->c_oidx) mdb_cursor_close(r->c_oidx);
    if (r->c_chidx) mdb_cursor_close(r->c_chidx);
    mdb_txn_abort(r->txn);
    pthread_rwlock_unlock(&s->map_lock);
out_free_reader:
    free(r);
    return rc;
}

void tw_store_reader_free(tw_store_reader *r)
{
    if (!r) return;
    mdb_cursor_close(r->c_log);
    mdb_cursor_close(r->c_origins);
    mdb_cursor_close(r->c_oidx);
    mdb_cursor_close(r->c_chidx);
    mdb_txn_abort(r->txn); /* also frees a reset txn and its reader slot */
    free(r->names);
    free(r);
}

/* Opens a fresh snapshot for one call; end_read() closes it. Between the two the call
 * holds the map lock shared, so the writer never remaps under a read in progress. */
static int begin_read(tw_store_reader *r)
{
    int rc;

    pthread_rwlock_rdlock(&r->s->map_lock);
    rc = mdb_txn_renew(r->txn);
    if (rc) {
        pthread_rwlock_unlock(&r->s->map_lock);
        return tw_store__map_err(rc);
    }
    if ((rc = mdb_cursor_renew(r->txn, r->c_chidx)) != 0 ||
        (rc = mdb_cursor_renew(r->txn, r->c_oidx)) != 0 ||
        (rc = mdb_cursor_renew(r->txn, r->c_origins)) != 0 ||
        (rc = mdb_cursor_renew(r->txn, r->c_log)) != 0) {
        mdb_txn_reset(r->txn);
        pthread_rwlock_unlock(&r->s->map_lock);
        return tw_store__map_err(rc);
    }
    return 0;
}

static void end_read(tw_store_reader *r)
{
    mdb_txn_reset(r->txn);
    pthread_rwlock_unlock(&r->s->map_lock);
}

/* Relearns the whole idx -> id table from the snapshot. */
static int load_names(tw_store_reader *r)
{
    MDB_stat st;
    MDB_val k, v;
    size_t n;
    void *p;
    int rc;

    rc = mdb_stat(r->txn, r->s->dbi_origins, &st);
    if (rc) return tw_store__map_err(rc);
    n = st.ms_entries;
    if (n > r->n_names) {
        p = realloc(r->names, n * sizeof(*r->names));
        if (!p) return TW_STORE_ENOMEM;
        r->names = p;
        r->n_names = n;
    }
    memset(r->names, 0, r->n_names * sizeof(*r->names));
    for (rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_NEXT)) {
        uint32_t idx;

        if (v.mv_size != TW_STORE__ORIGIN_ROW || k.mv_size == 0 || k.mv_size > TW_STORE_ORIGIN_MAX)
            return TW_STORE_ECORRUPT;
        idx = tw_store__get_be32(v.mv_data);
        if (idx == 0 || idx > n) return TW_STORE_ECORRUPT;
        memcpy(r->names[idx - 1], k.mv_data, k.mv_size);
        r->names[idx - 1][k.mv_size] = '\0';
    }
    return rc == MDB_NOTFOUND ? 0 : tw_store__map_err(rc);
}

/* The id of origin idx, or NULL (with *err set) when the snapshot does not know it. */
static const char *origin_name(tw_store_reader *r, uint32_t idx, int *err)
{
    if (idx == 0) {
        *err = TW_STORE_ECORRUPT;
        return NULL;
    }
    if (idx > r->n_names || r->names[idx - 1][0] == '\0') {
        *err = load_names(r);
        if (*err) return NULL;
        if (idx > r->n_names || r->names[idx - 1][0] == '\0') {
            *err = TW_STORE_ECORRUPT;
            return NULL;
        }
    }
    return r->names[idx - 1];
}

/* Channel name -> id in the current snapshot; MDB_NOTFOUND passes through. */
static int lookup_chan(tw_store_reader *r, const char *channel, size_t len, uint32_t *id)
{
    MDB_val k = {len, (void *)channel}, v;
    int rc;

    rc = mdb_get(r->txn, r->s->dbi_chan, &k, &v);
    if (rc == MDB_NOTFOUND) return rc;
    if (rc) return tw_store__map_err(rc);
    if (v.mv_size != 4) return TW_STORE_ECORRUPT;
    *id = tw_store__get_be32(v.mv_data);
    return 0;
}

/* store_int.h: MDB_NEXT while the lsns are consecutive, else a positioned get. */
int tw_store__log_fetch(tw_store_reader *r, struct tw_store__log_walk *w, const unsigned char *key,
                        uint64_t lsn, MDB_val *v)
{
    MDB_val k;
    int rc;

    if (w->positioned && lsn == w->at + 1) {
        rc = mdb_cursor_get(r->c_log, &k, v, MDB_NEXT);
        if (rc == 0 && (k.mv_size != 8 || tw_store__get_be64(k.mv_data) != lsn))
            rc = MDB_NOTFOUND; /* the next record is not lsn's: lsn has none */
    } else {
        k.mv_size = 8;
        k.mv_data = (void *)key;
        rc = mdb_cursor_get(r->c_log, &k, v, MDB_SET_KEY);
    }
    w->positioned = rc == 0;
    w->at = lsn;
    return rc;
}

/* Fetches and decodes the log record of one chidx entry, checking that both agree. */
static int fetch_event(tw_store_reader *r, struct tw_store__log_walk *w, uint32_t chan_id,
                       const MDB_val *ck, const MDB_val *cv, tw_store_event *ev)
{
    const unsigned char *lsn_key = (const unsigned char *)ck->mv_data + 4;
    struct tw_store__rec rec;
    uint64_t lsn;
    MDB_val v;
    int rc;

    if (cv->mv_size != TW_STORE__CHIDX_VAL) return TW_STORE_ECORRUPT;
    lsn = tw_store__get_be64(lsn_key);
    rc = tw_store__log_fetch(r, w, lsn_key, lsn, &v);
    if (rc) return rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    rc = tw_store__decode(&v, &rec);
    if (rc) return rc;
    if (rec.chan_id != chan_id || rec.origin_idx != tw_store__get_be32(cv->mv_data) ||
        rec.seq != tw_store__get_be64((unsigned char *)cv->mv_data + 4))
        return TW_STORE_ECORRUPT;
    const char *origin = origin_name(r, rec.origin_idx, &rc);
    if (!origin) return rc;
    *ev = tw_store__event_of(&rec, origin, lsn);
    return 0;
}

/* The highest seq of origin idx trimmed from channel chan_id (0: none). */
static int trimmed_seq(tw_store_reader *r, uint32_t chan_id, uint32_t idx, uint64_t *seq)
{
    unsigned char key[TW_STORE__CHTRIM_KEY];
    MDB_val k = {sizeof(key), key}, v;
    int rc;

    tw_store__put_be32(key, chan_id);
    tw_store__put_be32(key + 4, idx);
    rc = mdb_get(r->txn, r->s->dbi_chtrim, &k, &v);
    *seq = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return tw_store__map_err(rc);
    if (v.mv_size != 8) return TW_STORE_ECORRUPT;
    *seq = tw_store__get_be64(v.mv_data);
    return 0;
}

int tw_store_read_channel(tw_store_reader *r, const char *channel, size_t channel_len,
                          uint64_t after_lsn, size_t max_events, size_t max_bytes,
                          tw_store_event_cb cb, void *arg, uint64_t *last_lsn, int *at_head,
                          uint64_t *trimmed_lsn)
{
    unsigned char key[TW_STORE__CHIDX_KEY];
    struct tw_store__log_walk walk = {0, 0};
    MDB_cursor_op op = MDB_SET_RANGE;
    uint64_t last = after_lsn;
    size_t n = 0, bytes = 0;
    int head = 1, stop = 0;
    uint32_t id = 0; /* set by lookup_chan; -O3 cannot see it */
    MDB_val k, v;
    int rc;

    if (!r || !channel || channel_len == 0 || channel_len > TW_STORE_CHANNEL_MAX || !cb ||
        !last_lsn || !at_head)
        return TW_STORE_EINVAL;
    rc = begin_read(r);
    if (rc) return rc;
    if (trimmed_lsn) *trimmed_lsn = 0;
    rc = lookup_chan(r, channel, channel_len, &id);
    if (rc == MDB_NOTFOUND || (rc == 0 && after_lsn == UINT64_MAX))
        goto out_done; /* never written, or nothing can follow: empty, at head */
    if (rc) goto out_end_read;
    if (trimmed_lsn) {
        rc = trimmed_seq(r, id, 0, trimmed_lsn); /* origin idx 0: the channel's lsn mark */
        if (rc) goto out_end_read;
    }

    tw_store__put_be32(key, id);
    tw_store__put_be64(key + 4, after_lsn + 1);
    k.mv_size = sizeof(key);
    k.mv_data = key;
    for (;; op = MDB_NEXT) {
        tw_store_event ev;

        rc = mdb_cursor_get(r->c_chidx, &k, &v, op);
        if (rc == MDB_NOTFOUND) break;
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_end_read;
        }
        if (k.mv_size != TW_STORE__CHIDX_KEY) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (tw_store__get_be32(k.mv_data) != id)
            break; /* the next channel's entries: this one is exhausted */
        /* Stopping here, on an entry of this channel not passed, is what at_head 0 means. */
        if (stop || (max_events && n >= max_events)) {
            head = 0;
            break;
        }
        rc = fetch_event(r, &walk, id, &k, &v, &ev);
        if (rc) goto out_end_read;
        if (max_bytes && n > 0 && (bytes >= max_bytes || ev.data_len > max_bytes - bytes)) {
            head = 0;
            break;
        }
        n++;
        bytes += ev.data_len;
        last = ev.lsn;
        if (cb(arg, &ev)) stop = 1;
    }
out_done:
    rc = 0;
    *last_lsn = last;
    *at_head = head;
out_end_read:
    end_read(r);
    return rc;
}

int tw_store_read_log(tw_store_reader *r, uint64_t after_lsn, size_t max_events, size_t max_bytes,
                      tw_store_event_cb cb, void *arg, uint64_t *last_lsn)
{
    unsigned char key[8];
    MDB_cursor_op op = MDB_SET_RANGE;
    uint64_t last = after_lsn;
    size_t n = 0, bytes = 0;
    MDB_val k, v;
    int rc;

    if (!r || !cb || !last_lsn) return TW_STORE_EINVAL;
    *last_lsn = after_lsn;
    if (after_lsn == UINT64_MAX) return 0; /* nothing can follow */
    rc = begin_read(r);
    if (rc) return rc;
    tw_store__put_be64(key, after_lsn + 1);
    k.mv_size = sizeof(key);
    k.mv_data = key;
    for (;; op = MDB_NEXT) {
        struct tw_store__rec rec;
        tw_store_event ev;
        const char *origin;

        if (max_events && n >= max_events) break;
        rc = mdb_cursor_get(r->c_log, &k, &v, op);
        if (rc == MDB_NOTFOUND) break;
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_end_read;
        }
        if (k.mv_size != 8) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        rc = tw_store__decode(&v, &rec);
        if (rc) goto out_end_read;
        if (max_bytes && n > 0 && (bytes >= max_bytes || rec.data_len > max_bytes - bytes)) break;
        origin = origin_name(r, rec.origin_idx, &rc);
        if (!origin) goto out_end_read;
        ev = tw_store__event_of(&rec, origin, tw_store__get_be64(k.mv_data));
        n++;
        bytes += rec.data_len;
        last = ev.lsn;
        if (cb(arg, &ev)) break;
    }
    rc = 0;
    *last_lsn = last;
out_end_read:
    end_read(r);
    return rc;
}

/* The cursor's seq for origin id (key bytes); 0 when absent. If an origin is named twice
 * the smaller seq counts: replaying too much is safe, too little is not. */
static uint64_t cursor_seq(const tw_store_cursor_entry *e, size_t n, const MDB_val *id)
{
    uint64_t c = UINT64_MAX;
    int found = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (strnlen(e[i].origin, id->mv_size + 1) == id->mv_size &&
            memcmp(e[i].origin, id->mv_data, id->mv_size) == 0 && (!found || e[i].seq < c)) {
            c = e[i].seq;
            found = 1;
        }
    }
    return found ? c : 0;
}

/* Does this snapshot know every origin the cursor names? */
static int all_known(tw_store_reader *r, const tw_store_cursor_entry *e, size_t n, int *known)
{
    size_t i;

    *known = 1;
    for (i = 0; i < n; i++) {
        size_t len = strnlen(e[i].origin, TW_STORE_ORIGIN_MAX + 1);
        MDB_val k = {len, (void *)e[i].origin}, v;
        int rc;

        /* Seq 0: nothing of that origin was seen, so nothing of it can have been lost. In a
         * cluster such entries are common: a node's own origin before it has published. */
        if (e[i].seq == 0) continue;

        /* A cursor comes from a client: a malformed origin is merely unknown. */
        if (len == 0 || len > TW_STORE_ORIGIN_MAX) {
            *known = 0;
            return 0;
        }
        rc = mdb_get(r->txn, r->s->dbi_origins, &k, &v);
        if (rc == MDB_NOTFOUND) {
            *known = 0;
            return 0;
        }
        if (rc) return tw_store__map_err(rc);
    }
    return 0;
}

int tw_store_resolve_cursor(tw_store_reader *r, const char *channel, size_t channel_len,
                            const tw_store_cursor_entry *entries, size_t n, uint64_t *after_lsn,
                            int *recovered)
{
    unsigned char key[TW_STORE__OIDX_KEY];
    uint64_t best = UINT64_MAX;
    int rec, found = 0;
    uint32_t chan_id = 0;
    MDB_val k, v;
    size_t i;
    int rc;

    if (!r || !after_lsn || !recovered || (n && !entries) || !channel || channel_len == 0 ||
        channel_len > TW_STORE_CHANNEL_MAX)
        return TW_STORE_EINVAL;
    for (i = 0; i < n; i++)
        if (!entries[i].origin) return TW_STORE_EINVAL;
    if (n == 0) {
        *after_lsn = 0;
        *recovered = 1;
        return 0;
    }

    rc = begin_read(r);
    if (rc) return rc;
    rc = all_known(r, entries, n, &rec);
    if (rc) goto out_end_read;
    rc = lookup_chan(r, channel, channel_len, &chan_id);
    if (rc == MDB_NOTFOUND)
        chan_id = 0; /* never written: nothing of it was trimmed */
    else if (rc)
        goto out_end_read;

    /*
     * For each origin the first event the cursor has not seen is (idx, c + 1) or the
     * next kept one; reading after the smallest of their lsns minus one yields every
     * unseen event. Origins the cursor has fully seen add no bound.
     */
    for (rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_NEXT)) {
        const unsigned char *row = v.mv_data;
        uint64_t c, last, trimmed;
        MDB_val ok, ov;
        uint32_t idx;
        int rc2;

        if (v.mv_size != TW_STORE__ORIGIN_ROW) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        idx = tw_store__get_be32(row);
        last = tw_store__get_be64(row + 12);
        c = cursor_seq(entries, n, &k);
        if (c >= last) continue;
        if (chan_id) {
            /* An event of this channel the cursor had not seen was trimmed: the client
             * cannot be brought up to date from the log. */
            rc = trimmed_seq(r, chan_id, idx, &trimmed);
            if (rc) goto out_end_read;
            if (trimmed > c) rec = 0;
        }
        /* The origin has a hole this node never held (trimmed where it replicated from,
         * channels unknown): any channel may have lost events after c. */
        rc = trimmed_seq(r, 0, idx, &trimmed);
        if (rc) goto out_end_read;
        if (trimmed > c) rec = 0;

        tw_store__put_be32(key, idx);
        tw_store__put_be64(key + 4, c + 1);
        ok.mv_size = sizeof(key);
        ok.mv_data = key;
        rc2 = mdb_cursor_get(r->c_oidx, &ok, &ov, MDB_SET_RANGE);
        if (rc2 == MDB_NOTFOUND) continue;
        if (rc2) {
            rc = tw_store__map_err(rc2);
            goto out_end_read;
        }
        if (ok.mv_size != TW_STORE__OIDX_KEY || ov.mv_size != 8) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (tw_store__get_be32(ok.mv_data) != idx) continue;
        if (tw_store__get_be64(ov.mv_data) - 1 < best) best = tw_store__get_be64(ov.mv_data) - 1;
        found = 1;
    }
    if (rc != MDB_NOTFOUND) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    if (!found) {
        /* Nothing unseen: start at the head, so only events committed later are read. */
        k.mv_size = 8;
        k.mv_data = "last_lsn";
        rc = mdb_get(r->txn, r->s->dbi_meta, &k, &v);
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_end_read;
        }
        if (v.mv_size != 8) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        best = tw_store__get_be64(v.mv_data);
    }
    rc = 0;
    *after_lsn = best;
    *recovered = rec;
out_end_read:
    end_read(r);
    return rc;
}

/* The first kept seq of origin idx at or after `seq`, and its lsn, through oidx;
 * ENOTFOUND when there is none. Retention trims per channel, so an origin's kept seqs may
 * have holes. */
static int next_kept(tw_store_reader *r, uint32_t idx, uint64_t seq, uint64_t *found, uint64_t *lsn)
{
    unsigned char key[TW_STORE__OIDX_KEY];
    MDB_val k = {sizeof key, key}, v;
    int rc;

    tw_store__put_be32(key, idx);
    tw_store__put_be64(key + 4, seq);
    rc = mdb_cursor_get(r->c_oidx, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return TW_STORE_ENOTFOUND;
    if (rc) return tw_store__map_err(rc);
    if (k.mv_size != TW_STORE__OIDX_KEY || v.mv_size != 8) return TW_STORE_ECORRUPT;
    if (tw_store__get_be32(k.mv_data) != idx) return TW_STORE_ENOTFOUND;
    *found = tw_store__get_be64((unsigned char *)k.mv_data + 4);
    *lsn = tw_store__get_be64(v.mv_data);
    return 0;
}

int tw_store_cursor_at(tw_store_reader *r, uint64_t after_lsn, tw_store_origin_info *out,
                       size_t cap, size_t *n)
{
    MDB_val k, v;
    size_t count = 0;
    int rc;

    if (!r || !n || (cap && !out)) return TW_STORE_EINVAL;
    rc = begin_read(r);
    if (rc) return rc;
    /*
     * Within an origin, lsn grows with seq (events are applied in seq order), so the
     * greatest seq at or before after_lsn is found by binary search over the kept seqs.
     */
    for (rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_NEXT)) {
        const unsigned char *row = v.mv_data;
        if (v.mv_size != TW_STORE__ORIGIN_ROW || k.mv_size > TW_STORE_ORIGIN_MAX) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        uint32_t idx = tw_store__get_be32(row);
        uint64_t first = tw_store__get_be64(row + 4);
        uint64_t last = tw_store__get_be64(row + 12);
        uint64_t seen = 0;
        if (last && first) {
            uint64_t lo = first, hi = last, lsn = 0;
            seen = first - 1; /* what retention trimmed came before every kept event */
            /* Over the kept seqs: the next kept one at or after mid decides the half. */
            while (lo <= hi) {
                uint64_t mid = lo + (hi - lo) / 2, at = 0;
                int rc2 = next_kept(r, idx, mid, &at, &lsn);
                if (rc2 && rc2 != TW_STORE_ENOTFOUND) {
                    rc = rc2;
                    goto out_end_read;
                }
                if (rc2 == 0 && at <= hi && lsn <= after_lsn) {
                    seen = at;
                    lo = at + 1;
                } else {
                    if (mid == 0) break;
                    hi = mid - 1;
                }
            }
        } else if (last) {
            seen = last; /* nothing kept: all of it is in the past */
        }
        if (count < cap) {
            memcpy(out[count].origin, k.mv_data, k.mv_size);
            out[count].origin[k.mv_size] = '\0';
            out[count].first_seq = first;
            out[count].last_seq = seen;
            out[count].kept = 0;
        }
        count++;
    }
    if (rc != MDB_NOTFOUND) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    rc = 0;
    *n = count;
out_end_read:
    end_read(r);
    return rc;
}

int tw_store_channel_tail(tw_store_reader *r, const char *channel, size_t channel_len, size_t count,
                          uint64_t *after_lsn)
{
    unsigned char key[TW_STORE__CHIDX_KEY];
    uint64_t result = 0;
    MDB_cursor_op op;
    size_t seen = 0;
    uint32_t id = 0; /* set by lookup_chan; -O3 cannot see it */
    MDB_val k, v;
    int rc;

    if (!r || !channel || channel_len == 0 || channel_len > TW_STORE_CHANNEL_MAX || !after_lsn)
        return TW_STORE_EINVAL;
    rc = begin_read(r);
    if (rc) return rc;
    rc = lookup_chan(r, channel, channel_len, &id);
    if (rc == MDB_NOTFOUND) goto out_done;
    if (rc) goto out_end_read;

    /* Land on the channel's newest entry: just before the next channel's first one. */
    if (id < UINT32_MAX) {
        tw_store__put_be32(key, id + 1);
        tw_store__put_be64(key + 4, 0);
        k.mv_size = sizeof(key);
        k.mv_data = key;
        rc = mdb_cursor_get(r->c_chidx, &k, &v, MDB_SET_RANGE);
        op = rc == 0 ? MDB_PREV : MDB_LAST;
    } else {
        rc = MDB_NOTFOUND;
        op = MDB_LAST;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    for (;; op = MDB_PREV) {
        uint64_t lsn;

        rc = mdb_cursor_get(r->c_chidx, &k, &v, op);
        if (rc == MDB_NOTFOUND) break;
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_end_read;
        }
        if (k.mv_size != TW_STORE__CHIDX_KEY) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (tw_store__get_be32(k.mv_data) != id) break;
        lsn = tw_store__get_be64((unsigned char *)k.mv_data + 4);
        if (count == 0) {
            result = lsn; /* after the newest: nothing to read yet */
            break;
        }
        if (++seen == count) {
            result = lsn - 1;
            break;
        }
    }
out_done:
    rc = 0;
    *after_lsn = result; /* 0 when the channel has fewer than count events */
out_end_read:
    end_read(r);
    return rc;
}

int tw_store_origins(tw_store_reader *r, tw_store_origin_info *out, size_t cap, size_t *n)
{
    MDB_stat st;
    MDB_val k, v;
    size_t total;
    int rc;

    if (!r || !n || (cap && !out)) return TW_STORE_EINVAL;
    rc = begin_read(r);
    if (rc) return rc;
    rc = mdb_stat(r->txn, r->s->dbi_origins, &st);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    total = st.ms_entries;
    /* idx is dense 1..total in order of first sight (this node's is 1): it is the slot. */
    for (rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(r->c_origins, &k, &v, MDB_NEXT)) {
        const unsigned char *row = v.mv_data;
        uint32_t idx;

        if (v.mv_size != TW_STORE__ORIGIN_ROW || k.mv_size == 0 ||
            k.mv_size > TW_STORE_ORIGIN_MAX) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        idx = tw_store__get_be32(row);
        if (idx == 0 || idx > total) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (idx <= cap) {
            tw_store_origin_info *o = &out[idx - 1];
            unsigned char ck[TW_STORE__COUNT_KEY];
            MDB_val kk = {sizeof(ck), ck}, kv;
            memcpy(o->origin, k.mv_data, k.mv_size);
            o->origin[k.mv_size] = '\0';
            o->first_seq = tw_store__get_be64(row + 4);
            o->last_seq = tw_store__get_be64(row + 12);
            ck[0] = 'o';
            tw_store__put_be32(ck + 1, idx);
            o->kept = mdb_get(r->txn, r->s->dbi_counts, &kk, &kv) == 0 && kv.mv_size == 8
                          ? tw_store__get_be64(kv.mv_data)
                          : 0;
        }
    }
    if (rc != MDB_NOTFOUND) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    rc = 0;
    *n = total;
out_end_read:
    end_read(r);
    return rc;
}

/* For store_origin.c: opens the reader's snapshot and lends its txn and oidx cursor until
 * tw_store__reader_end(). */
int tw_store__reader_begin(tw_store_reader *r, tw_store **s, MDB_txn **txn, MDB_cursor **c_oidx)
{
    int rc = begin_read(r);

    if (rc) return rc;
    *s = r->s;
    *txn = r->txn;
    *c_oidx = r->c_oidx;
    return 0;
}

void tw_store__reader_end(tw_store_reader *r)
{
    end_read(r);
}
