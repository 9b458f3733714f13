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
 *   counts   'c' || u32 channel id -> u64 events of the channel kept
 *            'o' || u32 origin idx -> u64 events of the origin kept
 *            'b'                   -> u64 channel + data bytes of every event kept
 *            (written by every append and trim txn; retention and /stats read them)
 *   chtrim   u32 channel id || u32 origin idx -> u64 the highest seq of that origin trimmed
 *            from that channel: a cursor below it has missed an event (recovered: false);
 *            u32 channel id || u32 0 -> u64 the highest lsn trimmed from that channel
 * meta "counts" (u8 1) says the counts are kept; a directory written before they existed
 * has them rebuilt from the log once, at open.
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
#define TW_STORE__COUNT_KEY 5
#define TW_STORE__CHTRIM_KEY 8
/* Internal: the map is full (MDB_MAP_FULL), which the writer may cure by growing it.
 * Never returned to callers: they get TW_STORE_EFULL (tw_store__public_err). */
#define TW_STORE__EMAPFULL (-1900)

static inline int tw_store__public_err(int rc)
{
    return rc == TW_STORE__EMAPFULL ? TW_STORE_EFULL : rc;
}

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
    uint64_t kept; /* events of this origin in the log */
    uint64_t saved_kept;
    int touched;
    int first_gone; /* a trim deleted first_seq: find the next kept one before commit */
};

/* Writer-side view of one channel (ids are dense: chans[id - 1]). */
struct tw_store__chan {
    char *name;
    size_t len;
    uint64_t count; /* events kept */
    uint64_t saved_count;
    int64_t oldest_ts_ms; /* ts of its oldest kept event when known, else 0 (a hint that
                           * spares the age check a read; never younger than the truth) */
    int64_t max_age_ms;   /* its retention policy, resolved once: 0 = none */
    int64_t max_count;
    int touched;
};

/* A retention rule as the store keeps it (its own copy of the prefix). */
struct tw_store__rule {
    char *prefix;
    size_t len;
    int64_t max_age_ms;
    int64_t max_count;
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
    MDB_dbi dbi_meta, dbi_origins, dbi_log, dbi_chan, dbi_chidx, dbi_oidx, dbi_counts, dbi_chtrim;
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
    int trim_kick; /* tw_store_trim_now() asked for a pass */
    /* The writer waits on q_cv. A submit signals only then, and after unlocking: a writer
     * woken under the lock would find it held and sleep again, and on one core that is two
     * more context switches per commit (the 1-in-flight profile: a third of the CPU). */
    int writer_idle;
    /* Submits past the lock that may not have signalled yet: close waits for none to be
     * left before destroying the condition variable. */
    _Atomic unsigned submitters;

    pthread_t writer;
    int writer_started;

    /* The map: read calls hold map_lock shared from renew to reset; the writer holds it
     * exclusively while it resizes the map (LMDB remaps: no txn may be open then). The
     * writer's own txns need no lock: it resizes only between them. Writer-preferring, so
     * a stream of replays cannot hold a resize off. */
    pthread_rwlock_t map_lock;
    uint64_t map_size, map_max;
    uint64_t map_soft; /* appends grow the map up to here; the rest is for trimming */

    /* Zeros written ahead of LMDB's last page (writer thread; store_write.c extend_file). */
    int data_fd;             /* LMDB's own descriptor of data.mdb */
    uint64_t file_bytes;     /* size of data.mdb as the writer last made or saw it */
    uint64_t extend_blocked; /* used bytes when an extension failed: no retry before LMDB
                              * itself has grown the file past it (space came back) */

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
    /* Channels: chans[id - 1]; chash maps a name to its id (open addressing, 0 = empty). */
    struct tw_store__chan *chans;
    size_t n_chans, cap_chans;
    uint32_t *chash;
    size_t chash_cap;        /* a power of two, at least twice n_chans */
    uint32_t *touched_chans; /* ids changed by the txn in progress */
    size_t n_touched_chans, cap_touched_chans;
    uint64_t kept_bytes;
    /* Retention (immutable after open) and the trimmer's position. */
    int64_t ret_max_age_ms, ret_max_count;
    uint64_t ret_max_bytes;
    struct tw_store__rule *rules;
    size_t nrules;
    unsigned trim_batch, trim_interval_ms;
    int retention_on;
    uint32_t trim_next_chan; /* the channel id the next pass looks at first */
    size_t trim_round_left;  /* channels the current round has still to look at */
    int map_full;            /* the last append batch found the map full at its maximum */
    unsigned trim_batch_now; /* smaller than trim_batch while the map is too full for it */

    /* Counters, under st_mu (queue_bytes and refused_busy live under q_mu). */
    pthread_mutex_t st_mu;
    tw_store_stats st;
};

/* Maps an LMDB or errno code to a TW_STORE_E* code (0 stays 0). */
int tw_store__map_err(int rc);

/* Decodes a log record; returns 0 or TW_STORE_ECORRUPT (never reads past v). */
int tw_store__decode(const MDB_val *v, struct tw_store__rec *out);

/* The event a reader passes to its callback: a decoded record with its origin id and lsn
 * (pointers into the snapshot, as the record's). */
static inline tw_store_event tw_store__event_of(const struct tw_store__rec *rec, const char *origin,
                                                uint64_t lsn)
{
    return (tw_store_event){
        .origin = origin,
        .seq = rec->seq,
        .lsn = lsn,
        .ts_ms = rec->ts_ms,
        .channel = rec->channel,
        .channel_len = rec->channel_len,
        .data = rec->data,
        .data_len = rec->data_len,
        .encoding = rec->encoding,
    };
}

/* The writer thread's body (store_write.c). */
void *tw_store__writer_main(void *arg);

/* Loads the writer's channel table and counters (store_write.c); called by open, before
 * the writer starts, inside the open txn. Rebuilds the counts when the directory has
 * none. */
int tw_store__load_channels(tw_store *s, MDB_txn *txn);

/* Frees the writer's channel table and rules. */
void tw_store__free_channels(tw_store *s);

/* Validates a node name: [A-Za-z0-9_-]{1,32}. Returns 1 if valid. */
int tw_store__valid_node_name(const char *name);

/*
 * Where a reader's log cursor stands within one read call: a channel's or an origin's
 * events are often consecutive in the log (one busy channel, one origin writing), and
 * stepping the cursor to the next record costs far less than a descent from the root for
 * each one. Start with {0, 0}.
 */
struct tw_store__log_walk {
    int positioned; /* the reader's log cursor is on the record of lsn `at` */
    uint64_t at;
};

/* The log record of `lsn` (big-endian at key) into *v, through the reader's log cursor:
 * MDB_NEXT when it is the record after the cursor's, else a positioned get. Returns 0, or
 * an LMDB code (MDB_NOTFOUND: no record of lsn). Inside a reader's snapshot only. */
int tw_store__log_fetch(tw_store_reader *r, struct tw_store__log_walk *w, const unsigned char *key,
                        uint64_t lsn, MDB_val *v);

/* A reader's snapshot for readers in other files (store_origin.c): begin opens it and lends
 * the store, txn and oidx cursor; end closes it. */
int tw_store__reader_begin(tw_store_reader *r, tw_store **s, MDB_txn **txn, MDB_cursor **c_oidx);
void tw_store__reader_end(tw_store_reader *r);

#endif /* TW_STORE_INT_H */
