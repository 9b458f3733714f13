/*
 * store.h — tidewire's durable event log on LMDB.
 *
 * The log holds events from one or more origins. An origin is a node's log identity,
 * "NAME.EPOCH" (e.g. "n1.5f2c09ab"): the node name plus a random epoch made once when the
 * data directory is created, so a node rebuilt on an empty disk is a new origin.
 *
 * Every event has two numbers:
 *   - seq: its position within its origin, 1, 2, 3... with no gaps. Seqs of the local
 *     origin are assigned by tw_store_submit() inside the commit that writes the event, so
 *     they never repeat, even after a crash. Events of remote origins (replication) are
 *     appended with the seq they already carry and must arrive in order.
 *   - lsn: its position in this node's log, across all origins, in commit order. The lsn
 *     is local (another node numbers the same event differently) and is what readers page
 *     by. Within one origin, lsn order is seq order.
 *
 * Writes go through one writer thread owned by the store, with group commit: each commit
 * carries every append queued since the previous commit began, and a completion callback
 * reports the committed batch only after the commit (fsync) returned.
 *
 * Reads use a tw_store_reader: a reusable read-only snapshot handle, used by one thread at
 * a time (any thread; the environment is opened with MDB_NOTLS). Each read call opens a
 * snapshot and closes it before returning, so no read transaction is held across network
 * waits.
 *
 * The library never logs, prints, exits or aborts on bad input: functions return 0 or a
 * negative TW_STORE_E* code. Thread-safety is stated per function.
 */
#ifndef TW_STORE_H
#define TW_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: X(name, value, message). tw_store_strerror() maps them to text. */
#define TW_STORE_ERRNO_MAP(X)                                                                      \
    X(EINVAL, -1001, "invalid argument")                                                           \
    X(ENOMEM, -1002, "out of memory")                                                              \
    X(EIO, -1003, "storage I/O error")                                                             \
    X(EFULL, -1004, "store is full (map size or disk)")                                            \
    X(EMISMATCH, -1005, "data directory belongs to another node name")                             \
    X(EVERSION, -1006, "data directory has an unknown format version")                             \
    X(EGAP, -1007, "remote event is not the next seq of its origin")                               \
    X(EDUP, -1008, "remote event is already in the log")                                           \
    X(ECLOSED, -1009, "store is closing")                                                          \
    X(ETOOBIG, -1010, "event too large")                                                           \
    X(EBUSY, -1011, "store is busy (writer queue or reader slots full)")                           \
    X(ENOTFOUND, -1012, "not found")                                                               \
    X(ECORRUPT, -1013, "log record is corrupt")

enum {
#define TW_STORE_ERRNO_ENUM(name, value, msg) TW_STORE_##name = (value),
    TW_STORE_ERRNO_MAP(TW_STORE_ERRNO_ENUM)
#undef TW_STORE_ERRNO_ENUM
};

/* Returns a static message for a TW_STORE_E* code (or for an unknown code). */
const char *tw_store_strerror(int err);

/* Longest origin id, "NAME.EPOCH", without its terminating NUL. */
#define TW_STORE_ORIGIN_MAX 48
/* Longest node name: [A-Za-z0-9_-]{1,32}. */
#define TW_STORE_NODE_NAME_MAX 32
/* Longest channel name accepted by the store, in bytes. */
#define TW_STORE_CHANNEL_MAX 255

typedef struct tw_store tw_store;
typedef struct tw_store_reader tw_store_reader;
typedef struct tw_store_append tw_store_append;

/*
 * Completion callback: called on the store's writer thread once per commit attempt with
 * the batch it carried, linked through `next`, in submission order. Each request's
 * `status` is 0 (committed: `seq`, `lsn`, `ts_ms` are set) or a negative code (nothing of
 * that request was written). The callback owns the requests again from this call on; it
 * must be quick (hand the list to another thread) and must not call tw_store_close().
 */
typedef void (*tw_store_commit_cb)(void *arg, tw_store_append *done);

/*
 * Retention: what the writer trims, oldest first, in bounded transactions of its own
 * (interleaved with appends, never holding them up by more than one such transaction).
 *
 * Each channel has a policy: the rule whose prefix is the longest one its name starts
 * with, else the defaults. A rule field set to TW_STORE_RETAIN_INHERIT takes the default's
 * value; 0 means "no limit". max_bytes bounds the whole log (the channel + data bytes of
 * every kept event, as in bytes_appended) and trims the log's oldest events whatever their
 * channel. A resume from a cursor that had not seen a trimmed event of its channel is
 * reported as not recovered (tw_store_resolve_cursor). Trimming goes in log order: by age,
 * a channel's oldest event goes once its ts is older than max_age (an event stamped older
 * than the ones before it waits for them).
 */
#define TW_STORE_RETAIN_INHERIT (-1)

typedef struct tw_store_retention_rule {
    const char *prefix; /* channel name prefix, e.g. "chat:"; copied at open */
    int64_t max_age_ms; /* events older than this are trimmed; 0 none; INHERIT */
    int64_t max_count;  /* newest events kept per channel; 0 none; INHERIT */
} tw_store_retention_rule;

typedef struct tw_store_retention {
    int64_t max_age_ms;                   /* default for every channel: 0 = no age limit */
    int64_t max_count;                    /* default per channel: 0 = no count limit */
    uint64_t max_bytes;                   /* whole log: 0 = no size limit */
    const tw_store_retention_rule *rules; /* copied at open */
    size_t nrules;
    unsigned batch_events; /* events deleted per trim transaction at most (0: 1024) */
    unsigned interval_ms;  /* time between trim passes when nothing is due (0: 1000) */
} tw_store_retention;

typedef struct tw_store_options {
    const char *path;       /* data directory; created (mode 0700) if missing */
    const char *node_name;  /* [A-Za-z0-9_-]{1,32}; must match the name the dir was made with */
    uint64_t map_size;      /* LMDB map size to start with, in bytes (0: 1 GiB, or map_max
                             * when smaller) */
    uint64_t map_max;       /* the map grows (doubling, at most to this) when a commit finds
                             * it full; at this size appends fail with EFULL (0: map_size, no
                             * growth). Growing waits for every read call in progress to end:
                             * no txn is open anywhere in the process while LMDB remaps. */
    unsigned max_readers;   /* LMDB reader slots (0: 1024) */
    size_t max_queue_bytes; /* bytes of appends waiting for the writer before EBUSY (0: 64 MiB) */
    size_t max_batch_bytes; /* bytes of events per commit at most (0: 16 MiB) */
    size_t max_event_bytes; /* channel + data bytes of one event at most (0: 16 MiB) */
    tw_store_retention retention; /* all zero: keep everything */
    tw_store_commit_cb on_commit; /* required */
    void *cb_arg;
} tw_store_options;

/*
 * Opens (creating if needed) the log in opts->path and starts the writer thread. On a new
 * directory it makes the origin id from node_name and a random epoch. Checks stale reader
 * slots (mdb_reader_check). Returns TW_STORE_EMISMATCH when the directory was made for
 * another node name. On success *out is set; on failure *out is untouched.
 * Call from one thread; only one store per process (an LMDB rule).
 */
int tw_store_open(tw_store **out, const tw_store_options *opts);

/*
 * Commits everything already submitted, stops the writer thread (after its last
 * completion callback returned), closes the environment and frees the store. A
 * tw_store_submit() racing with close returns TW_STORE_ECLOSED (the caller keeps those
 * requests); none may be called once close returned. All readers must have been freed.
 * Safe with NULL.
 */
void tw_store_close(tw_store *s);

/* This node's origin id, NUL-terminated; valid until tw_store_close(). Any thread. */
const char *tw_store_origin(const tw_store *s);

/* ---- Appending ---------------------------------------------------------------------- */

/* What the data bytes are; the store keeps the tag and never looks inside. */
enum { TW_STORE_ENC_JSON = 0, TW_STORE_ENC_MSGPACK = 1 };

struct tw_store_append {
    /* Set by the caller; the pointed-to bytes must stay valid until the completion. */
    const char *channel; /* 1..TW_STORE_CHANNEL_MAX bytes, not NUL-terminated */
    size_t channel_len;
    const void *data;
    size_t data_len;
    uint8_t encoding; /* TW_STORE_ENC_* */
    /* NULL: an event of this node's origin; the store assigns seq and, when ts_ms is 0,
     * the time. Otherwise a remote origin id (NUL-terminated) with `seq` and `ts_ms` as
     * that origin assigned them; status EDUP if seq is already stored, EGAP if it is not
     * the next one (unless after_trim). */
    const char *origin;
    uint64_t seq;
    int64_t ts_ms; /* milliseconds since the Unix epoch */
    /* Remote only. 1: the origin's seqs between its last one here and `seq` no longer exist
     * where this event came from (retention trimmed them there, so no peer will send
     * them): take `seq` after the hole instead of refusing it with EGAP, and mark the hole,
     * so a resume from before its end is told it is not recovered, whatever its channel. */
    uint8_t after_trim;
    void *user; /* the caller's, untouched */

    /* Set by the store before the completion callback. */
    int status;
    uint64_t lsn;

    /* Links the request into a batch; owned by the store between submit and completion. */
    tw_store_append *next;
};

/*
 * Queues a list of appends (linked through `next`, NULL-terminated) for the writer and
 * returns at once; the store owns the requests until on_commit hands them back, possibly
 * split across several commits, in order. A request that can be refused up front (bad
 * channel, too big) still completes through on_commit with its status.
 * Returns 0, TW_STORE_EBUSY when the queue is over max_queue_bytes (nothing queued, the
 * caller keeps the requests), or TW_STORE_ECLOSED (likewise). An empty queue admits any
 * list, so a list larger than max_queue_bytes is never refused forever. Any thread.
 */
int tw_store_submit(tw_store *s, tw_store_append *list);

/*
 * Asks the writer to run a retention pass now rather than at its next interval (a no-op
 * when no retention is configured). Returns at once. Any thread.
 */
void tw_store_trim_now(tw_store *s);

/* ---- Reading ------------------------------------------------------------------------ */

/* One event as read from the log. Pointers are valid only during the callback. */
typedef struct tw_store_event {
    const char *origin; /* NUL-terminated origin id */
    uint64_t seq;
    uint64_t lsn;
    int64_t ts_ms;
    const char *channel;
    size_t channel_len;
    const void *data;
    size_t data_len;
    uint8_t encoding;
} tw_store_event;

/* Return 0 to go on, non-zero to stop the read after this event. */
typedef int (*tw_store_event_cb)(void *arg, const tw_store_event *ev);

/* Creates a reader for use by one thread at a time. Any thread. Each reader holds one of
 * the max_readers LMDB slots until freed: TW_STORE_EBUSY when none is free. */
int tw_store_reader_new(tw_store *s, tw_store_reader **out);
/* Frees a reader. Safe with NULL. */
void tw_store_reader_free(tw_store_reader *r);

/*
 * Reads the events of one channel with lsn > after_lsn, in lsn order, through the channel
 * index (never scanning other channels' events), calling cb for each. Stops after
 * max_events events, before the event that would take the data bytes passed over
 * max_bytes (at least one event is passed when there is one), or when cb returns
 * non-zero; 0 means no limit for either. cb runs while the call's snapshot is open: it
 * must not block (copy or encode the event and return).
 * On return *last_lsn is the lsn of the last event passed (after_lsn if none) and *at_head
 * is 1 when the channel had no further event in the snapshot read, else 0. A channel
 * never written reads as empty (at_head 1). trimmed_lsn, when not NULL, receives the
 * channel's retention mark in the same snapshot: the log position of the newest event
 * retention trimmed from it (0: none), set before cb is first called. A reader that had
 * read up to after_lsn missed events when it is above after_lsn (cb may then stop the read
 * at once; the broker closes such a subscription with 4208, and its resume is told
 * recovered: false).
 */
int tw_store_read_channel(tw_store_reader *r, const char *channel, size_t channel_len,
                          uint64_t after_lsn, size_t max_events, size_t max_bytes,
                          tw_store_event_cb cb, void *arg, uint64_t *last_lsn, int *at_head,
                          uint64_t *trimmed_lsn);

/*
 * Reads the log itself: every event with lsn > after_lsn, in lsn order, whatever its
 * channel or origin. A node running several loops (--threads) learns of every commit this
 * way: the log is the bus between them. Same limits and callback rules as
 * tw_store_read_channel(). On return *last_lsn is the lsn of the last event passed
 * (after_lsn if none). The lsns of events retention trimmed are simply absent: a caller that
 * must see every event compares each lsn with the one it expected.
 */
int tw_store_read_log(tw_store_reader *r, uint64_t after_lsn, size_t max_events, size_t max_bytes,
                      tw_store_event_cb cb, void *arg, uint64_t *last_lsn);

/*
 * Reads the events of one origin with seq >= from_seq, in seq order, through the origin
 * index (replication: serving a peer's fetch, pushing new local events). Same limits and
 * callback rules as tw_store_read_channel(). On return *last_seq is the seq of the last
 * event passed (from_seq - 1 if none). An origin never seen reads as empty.
 */
int tw_store_read_origin(tw_store_reader *r, const char *origin, uint64_t from_seq,
                         size_t max_events, size_t max_bytes, tw_store_event_cb cb, void *arg,
                         uint64_t *last_seq);

/* One entry of a version vector: the last seq seen from an origin. */
typedef struct tw_store_cursor_entry {
    const char *origin; /* NUL-terminated */
    uint64_t seq;
} tw_store_cursor_entry;

/*
 * Translates a channel's cursor (version vector) into the lsn to read the channel after:
 * every event whose seq is greater than the cursor's entry for its origin (0 for origins
 * the cursor does not name) has an lsn > *after_lsn. Events at or below the cursor may
 * still follow *after_lsn when several origins interleave: the caller filters them by seq.
 * *recovered is 1 when no event of this channel that the cursor had not seen was trimmed
 * by retention, 0 when some of it is gone (or the cursor names, with a seq above 0, an
 * origin this log does not know); the read then starts at the oldest event kept. An empty cursor (n == 0) means
 * "from the oldest event kept" and is always recovered.
 */
int tw_store_resolve_cursor(tw_store_reader *r, const char *channel, size_t channel_len,
                            const tw_store_cursor_entry *entries, size_t n, uint64_t *after_lsn,
                            int *recovered);

/*
 * Sets *after_lsn so that reading the channel after it yields its newest `count` events
 * (all of them when it has fewer).
 */
int tw_store_channel_tail(tw_store_reader *r, const char *channel, size_t channel_len, size_t count,
                          uint64_t *after_lsn);

/* ---- Introspection ------------------------------------------------------------------ */

struct tw_store_origin_info;

/*
 * The cursor of a reader positioned at after_lsn: for each origin in the log (in no
 * particular order), out[i].last_seq is the greatest seq whose lsn <= after_lsn (0
 * when none), and out[i].first_seq the oldest kept. *n is set to the number of origins (may
 * exceed cap). A subscription that replays the log after after_lsn starts from this cursor.
 */
int tw_store_cursor_at(tw_store_reader *r, uint64_t after_lsn, struct tw_store_origin_info *out,
                       size_t cap, size_t *n);

typedef struct tw_store_origin_info {
    char origin[TW_STORE_ORIGIN_MAX + 1];
    uint64_t first_seq; /* oldest kept (0 when none kept) */
    uint64_t last_seq;  /* newest ever appended (0 when none) */
    uint64_t kept;      /* events of this origin kept (tw_store_origins only; else 0) */
} tw_store_origin_info;

/*
 * Lists the origins in the log, in the order they were first seen (this node's first),
 * into out[0..cap); *n is set to the number of origins (may exceed cap).
 */
int tw_store_origins(tw_store_reader *r, tw_store_origin_info *out, size_t cap, size_t *n);

/* Counters; read with tw_store_get_stats() from any thread. */
typedef struct tw_store_stats {
    uint64_t commits;         /* successful commits */
    uint64_t commit_failures; /* commits that failed (their appends got an error status) */
    uint64_t events_appended; /* events committed */
    uint64_t bytes_appended;  /* channel + data bytes committed */
    uint64_t last_lsn;        /* newest lsn committed */
    uint64_t queue_bytes;     /* bytes waiting for the writer now */
    uint64_t refused_busy;    /* submits refused with EBUSY */
    uint64_t map_size;        /* bytes, now */
    uint64_t map_grows;       /* times the map grew since open */
    uint64_t used_bytes;      /* pages in use (last_pgno * page size) after the last commit */
    /* Commit latency (begin of txn to return of fsync'ed commit), microseconds. */
    uint64_t commit_us_total;
    uint64_t commit_us_max;
    /* Histogram of commit latency: bucket i counts commits <= tw_store_commit_us_bounds[i];
     * the last bucket counts the rest. */
    uint64_t commit_us_buckets[12];
    /* Retention. */
    uint64_t kept_events;    /* events in the log now */
    uint64_t kept_bytes;     /* their channel + data bytes */
    uint64_t trimmed_events; /* events deleted by retention since open */
    uint64_t trim_commits;   /* trim transactions committed since open */
    uint64_t trim_passes;    /* retention passes run (with or without anything to trim) */
    uint64_t trim_failures;  /* trim transactions that failed (retried next pass) */
} tw_store_stats;

/* Upper bounds (µs) of the first 11 buckets of commit_us_buckets. */
extern const uint64_t tw_store_commit_us_bounds[11];

/*
 * Frees reader slots left in the LMDB lock file by processes that died (mdb_reader_check):
 * such slots pin old pages and fill the table. Open does it once; call it periodically
 * (another process reading the same environment, e.g. a backup, may die). Sets *cleared
 * to the number freed. Returns 0 or a TW_STORE_E* code. Any thread.
 */
int tw_store_check_readers(tw_store *s, int *cleared);

/* Copies the counters. Any thread. */
void tw_store_get_stats(tw_store *s, tw_store_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TW_STORE_H */
