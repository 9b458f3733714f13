/*
 * store_origin.c — reading one origin's events in seq order (replication: a peer serving
 * "origin X from seq s", a node pushing its own new events).
 *
 * Walks the oidx database ((origin idx, seq) -> lsn) from (idx, from_seq) and fetches each
 * record from the log (stepping the log cursor while the lsns are consecutive), so the cost
 * is that of the events read, whatever else the log holds. Same snapshot discipline as
 * store_read.c: one snapshot per call, closed before returning.
 */
#include <string.h>

#include "store_int.h"

int tw_store_read_origin(tw_store_reader *r, const char *origin, uint64_t from_seq,
                         size_t max_events, size_t max_bytes, tw_store_event_cb cb, void *arg,
                         uint64_t *last_seq)
{
    unsigned char key[TW_STORE__OIDX_KEY];
    MDB_cursor_op op = MDB_SET_RANGE;
    MDB_cursor *c_oidx;
    MDB_txn *txn;
    tw_store *s;
    size_t olen, n = 0, bytes = 0;
    struct tw_store__log_walk walk = {0, 0};
    uint64_t last;
    uint32_t idx;
    MDB_val k, v;
    int rc;

    if (!r || !origin || !cb || !last_seq) return TW_STORE_EINVAL;
    olen = strnlen(origin, TW_STORE_ORIGIN_MAX + 1);
    if (olen == 0 || olen > TW_STORE_ORIGIN_MAX) return TW_STORE_EINVAL;
    if (from_seq == 0) from_seq = 1; /* seqs start at 1 */
    last = from_seq - 1;

    rc = tw_store__reader_begin(r, &s, &txn, &c_oidx);
    if (rc) return rc;
    k.mv_size = olen;
    k.mv_data = (void *)origin;
    rc = mdb_get(txn, s->dbi_origins, &k, &v);
    if (rc == MDB_NOTFOUND) goto out_done; /* an origin never seen reads as empty */
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_end_read;
    }
    if (v.mv_size != TW_STORE__ORIGIN_ROW) {
        rc = TW_STORE_ECORRUPT;
        goto out_end_read;
    }
    idx = tw_store__get_be32(v.mv_data);

    tw_store__put_be32(key, idx);
    tw_store__put_be64(key + 4, from_seq);
    k.mv_size = sizeof(key);
    k.mv_data = key;
    for (;; op = MDB_NEXT) {
        struct tw_store__rec rec;
        tw_store_event ev;
        MDB_val lv;
        uint64_t seq;

        rc = mdb_cursor_get(c_oidx, &k, &v, op);
        if (rc == MDB_NOTFOUND) break;
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_end_read;
        }
        if (k.mv_size != TW_STORE__OIDX_KEY || v.mv_size != 8) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (tw_store__get_be32(k.mv_data) != idx) break; /* the next origin's entries */
        if (max_events && n >= max_events) break;
        seq = tw_store__get_be64((unsigned char *)k.mv_data + 4);
        rc = tw_store__log_fetch(r, &walk, v.mv_data, tw_store__get_be64(v.mv_data), &lv);
        if (rc) {
            rc = rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
            goto out_end_read;
        }
        rc = tw_store__decode(&lv, &rec);
        if (rc) goto out_end_read;
        if (rec.origin_idx != idx || rec.seq != seq) {
            rc = TW_STORE_ECORRUPT;
            goto out_end_read;
        }
        if (max_bytes && n > 0 && (bytes >= max_bytes || rec.data_len > max_bytes - bytes)) break;
        ev = tw_store__event_of(&rec, origin, tw_store__get_be64(v.mv_data));
        n++;
        bytes += rec.data_len;
        last = seq;
        if (cb(arg, &ev)) break;
    }
out_done:
    rc = 0;
    *last_seq = last;
out_end_read:
    tw_store__reader_end(r);
    return rc;
}
