/*
 * store_int.h — internals shared by store.c (open/close/stats), store_write.c (the writer
 * thread) and store_read.c (readers). Not installed; nothing outside store/ includes it
 * except the unit test.
 *
 * On-disk layout, format version 1. One LMDB environment, six named databases; every
 * integer is big-endian so that byte order equals numeric order in keys and the files
 * read the same on any host.
 *
 *   meta     "format"    -> u32 format version (1)
 *            "origin"    -> this node's origin id, "NAME.EPOCH" (no NUL)
 *            "next_chan" -> u32 next channel id to hand out (ids start at 1)
 *            "last_lsn"  -> u64 newest lsn committed; kept beside the log so lsns never
 *                           repeat even if retention someday empties the log
 *   origins  origin id (no NUL) -> u32 idx || u64 first_seq || u64 last_seq  (20 bytes)
 *            idx is dense, 1..N in order of first sight; this node's origin is idx 1.
 *            first_seq is the oldest seq kept (0: none), last_seq the newest ever stored.
 *   log      u64 lsn -> record (below); appended with MDB_APPEND, so lsn keys only grow.
 *   chan     channel name -> u32 channel id
 *   chidx    u32 channel id || u64 lsn -> u32 origin idx || u64 seq
 *            (a channel's events in lsn order; the value lets a replay filter by
 *            version vector without touching the log)
 *   oidx     u32 origin idx || u64 seq -> u64 lsn
 *            (cursor resolution; replication catch-up "origin X from seq s")
 *
 * A log record, version 1:
 *   off  size  field
 *   0    1     record version (1)
 *   1    1     encoding (TW_STORE_ENC_*; opaque to the store)
 *   2    4     origin idx (key of the origin in `origins`)
 *   6    8     seq within the origin
 *   14   8     ts_ms, int64 two's complement, ms since the Unix epoch
 *   22   4     channel id (value in `chan`)
 *   26   1     channel name length L, 1..255
 *   27   L     channel name bytes
 *   27+L ...   data bytes: the rest of the value (may be empty)
 * The channel name is repeated in the record so a record read by lsn or by (origin, seq)
 * — replication catch-up — is self-contained. A later release that changes the record
 * bumps the version byte and keeps reading version 1.
 */
#ifndef TW_STORE_INT_H
#define TW_STORE_INT_H

#include <lmdb.h>
#include <pthread.h>

#include "store.h"

#define TW_STORE__FORMAT 1
#define TW_STORE__REC_VERSION 1
#define TW_STORE__REC_HDR 27
#define TW_STORE__ORIGIN_ROW 20
#define TW_STORE__CHIDX_KEY 12
#define TW_STORE__CHIDX_VAL 12
#define TW_STORE__OIDX_KEY 12
/* The local origin's idx in `origins`. */
#define TW_STORE__LOCAL_IDX 1

static inline void tw_store__put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline void tw_store__put_be64(unsigned char *p, uint64_t v)
{
    tw_store__put_be32(p, (uint32_t)(v >> 32));
    tw_store__put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t tw_store__get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t tw_store__get_be64(const unsigned char *p)
{
    return (uint64_t)tw_store__get_be32(p) << 32 | tw_store__get_be32(p + 4);
}

/* A decoded log record; pointers point into the LMDB map (valid while the txn lives). */
struct tw_store__rec {
    uint8_t encoding;
    uint32_t origin_idx;
    uint64_t seq;
    int64_t ts_ms;
    uint32_t chan_id;
    const char *channel;
    size_t channel_len;
    const void *data;
    size_t data_len;
};

/* Writer-side view of one origin. Only the writer thread (and open, before the writer
 * starts) touches these. */
struct tw_store__origin {
    char id[TW_STORE_ORIGIN_MAX + 1];
    size_t id_len;
    uint64_t first_seq;
    uint64_t last_seq;
    /* Values before the batch in progress first touched this origin (to undo a failed
     * commit); `touched` says whether the batch in progress changed it. */
    uint64_t saved_first_seq;
    uint64_t saved_last_seq;
    int touched;
};

/* The writer's per-request outcome, held until the commit returns so that a failed
 * commit leaves the caller's request untouched apart from its status. */
struct tw_store__slot {
    int status;
    uint64_t seq;
    uint64_t lsn;
    int64_t ts_ms;
};

struct tw_store {
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_origins, dbi_log, dbi_chan, dbi_chidx, dbi_oidx;
    unsigned page_size;
    char origin[TW_STORE_ORIGIN_MAX + 1]; /* immutable after open */
    tw_store_commit_cb on_commit;
    void *cb_arg;
    size_t max_queue_bytes;
    size_t max_batch_bytes;
    size_t max_event_bytes;

    /* Submission queue, under q_mu. Requests are linked through their `next`. */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv; /* signalled on submit and on close */
    tw_store_append *q_head;
    tw_store_append *q_tail;
    size_t q_bytes;
    uint64_t refused_busy;
    int closing;

    pthread_t writer;
    int writer_started;

    /* Writer-thread state (open fills it before the writer starts). origins[i] has idx
     * i + 1. */
    uint64_t last_lsn;
    uint32_t next_chan;
    struct tw_store__origin *origins;
    size_t n_origins;
    size_t cap_origins;
    size_t *touched; /* indexes into origins[] changed by the batch in progress */
    size_t n_touched;
    struct tw_store__slot *slots;
    size_t cap_slots;

    /* Counters, under st_mu (queue_bytes and refused_busy live under q_mu). */
    pthread_mutex_t st_mu;
    tw_store_stats st;
};

/* Maps an LMDB or errno code to a TW_STORE_E* code (0 stays 0). */
int tw_store__map_err(int rc);

/* Decodes a log record; returns 0 or TW_STORE_ECORRUPT (never reads past v). */
int tw_store__decode(const MDB_val *v, struct tw_store__rec *out);

/* The writer thread's body (store_write.c). */
void *tw_store__writer_main(void *arg);

/* Validates a node name: [A-Za-z0-9_-]{1,32}. Returns 1 if valid. */
int tw_store__valid_node_name(const char *name);

#endif /* TW_STORE_INT_H */
