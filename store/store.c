/*
 * store.c — opening and closing the log, counters, error mapping and the record codec.
 * The writer thread lives in store_write.c, readers in store_read.c; the on-disk layout is
 * described in store_int.h.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "store_int.h"

#define DEFAULT_MAP_SIZE ((uint64_t)1 << 30)
#define DEFAULT_MAX_READERS 1024u
#define DEFAULT_MAX_QUEUE_BYTES ((size_t)64 << 20)
#define DEFAULT_MAX_BATCH_BYTES ((size_t)16 << 20)
#define DEFAULT_MAX_EVENT_BYTES ((size_t)16 << 20)
/* LMDB values are limited to 32-bit sizes; keep a record (header + channel + data) below. */
#define MAX_EVENT_BYTES_LIMIT ((size_t)UINT32_MAX - TW_STORE__REC_HDR - TW_STORE_CHANNEL_MAX)
/* Six named databases; room for a few more in later formats without a reopen. */
#define MAX_DBS 16

const uint64_t tw_store_commit_us_bounds[11] = {100,   250,   500,    1000,   2500,   5000,
                                                10000, 25000, 100000, 250000, 1000000};

const char *tw_store_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define TW_STORE_STRERROR_CASE(name, value, msg)                                                   \
    case TW_STORE_##name:                                                                          \
        return msg;
        TW_STORE_ERRNO_MAP(TW_STORE_STRERROR_CASE)
#undef TW_STORE_STRERROR_CASE
    default:
        return "unknown error";
    }
}

int tw_store__map_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
        return TW_STORE__EMAPFULL;
    case ENOSPC:
    case EDQUOT:
        return TW_STORE_EFULL;
    case MDB_READERS_FULL:
        return TW_STORE_EBUSY;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return TW_STORE_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return TW_STORE_EVERSION;
    case ENOMEM:
        return TW_STORE_ENOMEM;
    default:
        return TW_STORE_EIO;
    }
}

int tw_store__decode(const MDB_val *v, struct tw_store__rec *out)
{
    const unsigned char *p = v->mv_data;
    size_t clen;

    if (v->mv_size < TW_STORE__REC_HDR + 1 || p[0] != TW_STORE__REC_VERSION)
        return TW_STORE_ECORRUPT;
    clen = p[26];
    if (clen == 0 || v->mv_size < TW_STORE__REC_HDR + clen) return TW_STORE_ECORRUPT;
    out->encoding = p[1];
    out->origin_idx = tw_store__get_be32(p + 2);
    out->seq = tw_store__get_be64(p + 6);
    out->ts_ms = (int64_t)tw_store__get_be64(p + 14);
    out->chan_id = tw_store__get_be32(p + 22);
    out->channel = (const char *)p + TW_STORE__REC_HDR;
    out->channel_len = clen;
    out->data = p + TW_STORE__REC_HDR + clen;
    out->data_len = v->mv_size - TW_STORE__REC_HDR - clen;
    return 0;
}

int tw_store__valid_node_name(const char *name)
{
    size_t i;

    for (i = 0; name[i] != '\0'; i++) {
        char c = name[i];
        if (i == TW_STORE_NODE_NAME_MAX) return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return i > 0;
}

/* Creates the data directory if missing; an existing non-directory is refused. */
static int make_dir(const char *path)
{
    struct stat st;

    if (mkdir(path, 0700) == 0) return 0;
    if (errno != EEXIST) return TW_STORE_EIO;
    if (stat(path, &st) != 0) return TW_STORE_EIO;
    return S_ISDIR(st.st_mode) ? 0 : TW_STORE_EINVAL;
}

static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    return mdb_get(txn, dbi, &k, v);
}

static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t len)
{
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v = {len, (void *)data};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* The first 4 bytes of the kernel's randomness as 8 lowercase hex digits: the epoch that
 * tells this data directory's log apart from any earlier one of the same node name. */
static int make_epoch(char out[9])
{
    uint32_t r;
    ssize_t n;

    do {
        n = getrandom(&r, sizeof(r), 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(r)) return TW_STORE_EIO;
    snprintf(out, 9, "%08x", (unsigned)r);
    return 0;
}

/* Called on the first open of a directory, inside the txn that creates the databases:
 * the origin id and the local origin row are written once, together with the format. */
static int create_meta(tw_store *s, MDB_txn *txn, const char *node_name)
{
    unsigned char buf[TW_STORE__ORIGIN_ROW];
    char epoch[9];
    MDB_val k, v;
    int rc;

    rc = make_epoch(epoch);
    if (rc) return rc;
    snprintf(s->origin, sizeof(s->origin), "%s.%s", node_name, epoch);

    tw_store__put_be32(buf, TW_STORE__FORMAT);
    if ((rc = meta_put(txn, s->dbi_meta, "format", buf, 4)) != 0 ||
        (rc = meta_put(txn, s->dbi_meta, "origin", s->origin, strlen(s->origin))) != 0)
        return tw_store__map_err(rc);
    tw_store__put_be32(buf, 1);
    if ((rc = meta_put(txn, s->dbi_meta, "next_chan", buf, 4)) != 0) return tw_store__map_err(rc);
    tw_store__put_be64(buf, 0);
    if ((rc = meta_put(txn, s->dbi_meta, "last_lsn", buf, 8)) != 0) return tw_store__map_err(rc);

    tw_store__put_be32(buf, TW_STORE__LOCAL_IDX);
    tw_store__put_be64(buf + 4, 0);
    tw_store__put_be64(buf + 12, 0);
    k.mv_size = strlen(s->origin);
    k.mv_data = s->origin;
    v.mv_size = TW_STORE__ORIGIN_ROW;
    v.mv_data = buf;
    rc = mdb_put(txn, s->dbi_origins, &k, &v, MDB_NOOVERWRITE);
    return tw_store__map_err(rc);
}

/* Loads the writer's in-memory copy of the origins table. idx values must be dense
 * 1..N (they are handed out that way), which lets origins[idx - 1] be the row. */
static int load_origins(tw_store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    size_t n;
    int rc, err = 0;

    rc = mdb_stat(txn, s->dbi_origins, &st);
    if (rc) return tw_store__map_err(rc);
    n = st.ms_entries;
    if (n == 0) return TW_STORE_ECORRUPT;
    s->origins = calloc(n, sizeof(*s->origins));
    s->touched = calloc(n, sizeof(*s->touched));
    if (!s->origins || !s->touched) return TW_STORE_ENOMEM; /* freed by the caller's cleanup */
    s->cap_origins = n;

    rc = mdb_cursor_open(txn, s->dbi_origins, &cur);
    if (rc) return tw_store__map_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *p = v.mv_data;
        struct tw_store__origin *o;
        uint32_t idx;

        if (v.mv_size != TW_STORE__ORIGIN_ROW || k.mv_size == 0 ||
            k.mv_size > TW_STORE_ORIGIN_MAX) {
            err = TW_STORE_ECORRUPT;
            break;
        }
        idx = tw_store__get_be32(p);
        if (idx == 0 || idx > n || s->origins[idx - 1].id_len != 0) {
            err = TW_STORE_ECORRUPT;
            break;
        }
        o = &s->origins[idx - 1];
        memcpy(o->id, k.mv_data, k.mv_size);
        o->id[k.mv_size] = '\0';
        o->id_len = k.mv_size;
        o->first_seq = tw_store__get_be64(p + 4);
        o->last_seq = tw_store__get_be64(p + 12);
    }
    mdb_cursor_close(cur);
    if (err) return err;
    if (rc != MDB_NOTFOUND) return tw_store__map_err(rc);
    s->n_origins = n;
    if (strcmp(s->origins[0].id, s->origin) != 0) return TW_STORE_ECORRUPT;
    return 0;
}

/* Reads an existing directory's meta back: format, origin (checked against node_name),
 * counters, origins. */
static int load_meta(tw_store *s, MDB_txn *txn, const char *node_name)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t name_len;
    const char *dot;
    uint64_t log_last = 0;
    int rc;

    rc = meta_get(txn, s->dbi_meta, "origin", &v);
    if (rc) return rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    if (v.mv_size == 0 || v.mv_size > TW_STORE_ORIGIN_MAX) return TW_STORE_ECORRUPT;
    memcpy(s->origin, v.mv_data, v.mv_size);
    s->origin[v.mv_size] = '\0';
    dot = strrchr(s->origin, '.');
    if (!dot) return TW_STORE_ECORRUPT;
    name_len = strlen(node_name);
    if ((size_t)(dot - s->origin) != name_len || memcmp(s->origin, node_name, name_len) != 0)
        return TW_STORE_EMISMATCH;

    rc = meta_get(txn, s->dbi_meta, "next_chan", &v);
    if (rc) return rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    if (v.mv_size != 4) return TW_STORE_ECORRUPT;
    s->next_chan = tw_store__get_be32(v.mv_data);

    rc = meta_get(txn, s->dbi_meta, "last_lsn", &v);
    if (rc) return rc == MDB_NOTFOUND ? TW_STORE_ECORRUPT : tw_store__map_err(rc);
    if (v.mv_size != 8) return TW_STORE_ECORRUPT;
    s->last_lsn = tw_store__get_be64(v.mv_data);

    /* Both are written by every commit; take the larger anyway so an lsn is never
     * handed out twice even if they ever disagreed. */
    rc = mdb_cursor_open(txn, s->dbi_log, &cur);
    if (rc) return tw_store__map_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) log_last = tw_store__get_be64(k.mv_data);
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return tw_store__map_err(rc);
    if (rc == 0 && k.mv_size != 8) return TW_STORE_ECORRUPT;
    if (log_last > s->last_lsn) s->last_lsn = log_last;

    return load_origins(s, txn);
}

static int open_dbi(MDB_txn *txn, const char *name, MDB_dbi *out)
{
    return tw_store__map_err(mdb_dbi_open(txn, name, MDB_CREATE, out));
}

/* One write txn: open (creating) the databases, then create or check the meta. The DBI
 * handles stay valid for the environment's life only if this txn commits. */
static int init_db(tw_store *s, const char *node_name)
{
    MDB_txn *txn;
    MDB_val v;
    int rc, fresh;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return tw_store__map_err(rc);

    /* Check the format before creating anything else: a newer format may lay out its
     * databases differently. */
    rc = open_dbi(txn, "meta", &s->dbi_meta);
    if (rc) goto out_abort_txn;
    rc = meta_get(txn, s->dbi_meta, "format", &v);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        rc = tw_store__map_err(rc);
        goto out_abort_txn;
    }
    fresh = rc == MDB_NOTFOUND;
    if (!fresh && (v.mv_size != 4 || tw_store__get_be32(v.mv_data) != TW_STORE__FORMAT)) {
        rc = TW_STORE_EVERSION;
        goto out_abort_txn;
    }

    if ((rc = open_dbi(txn, "origins", &s->dbi_origins)) != 0 ||
        (rc = open_dbi(txn, "log", &s->dbi_log)) != 0 ||
        (rc = open_dbi(txn, "chan", &s->dbi_chan)) != 0 ||
        (rc = open_dbi(txn, "chidx", &s->dbi_chidx)) != 0 ||
        (rc = open_dbi(txn, "oidx", &s->dbi_oidx)) != 0 ||
        (rc = open_dbi(txn, "counts", &s->dbi_counts)) != 0 ||
        (rc = open_dbi(txn, "chtrim", &s->dbi_chtrim)) != 0)
        goto out_abort_txn;

    if (fresh) {
        rc = create_meta(s, txn, node_name);
        if (rc) goto out_abort_txn;
    }
    /* Loading the origins back also on a fresh directory keeps a single code path. */
    rc = load_meta(s, txn, node_name);
    if (rc) goto out_abort_txn;
    rc = tw_store__load_channels(s, txn);
    if (rc) goto out_abort_txn;

    return tw_store__map_err(mdb_txn_commit(txn));

out_abort_txn:
    mdb_txn_abort(txn);
    return rc;
}

/* Takes the caller's retention settings into the store's own memory. */
static int copy_retention(tw_store *s, const tw_store_retention *r)
{
    if (r->max_age_ms < 0 || r->max_count < 0 || (r->nrules && !r->rules)) return TW_STORE_EINVAL;
    s->ret_max_age_ms = r->max_age_ms;
    s->ret_max_count = r->max_count;
    s->ret_max_bytes = r->max_bytes;
    s->trim_batch = r->batch_events ? r->batch_events : 1024;
    s->trim_interval_ms = r->interval_ms ? r->interval_ms : 1000;
    s->retention_on = r->max_age_ms > 0 || r->max_count > 0 || r->max_bytes > 0;
    if (r->nrules) {
        s->rules = calloc(r->nrules, sizeof(*s->rules));
        if (!s->rules) return TW_STORE_ENOMEM;
    }
    for (size_t i = 0; i < r->nrules; i++) {
        const tw_store_retention_rule *in = &r->rules[i];
        struct tw_store__rule *out = &s->rules[i];

        if (!in->prefix || in->max_age_ms < TW_STORE_RETAIN_INHERIT ||
            in->max_count < TW_STORE_RETAIN_INHERIT)
            return TW_STORE_EINVAL; /* freed with the store */
        out->prefix = strdup(in->prefix);
        if (!out->prefix) return TW_STORE_ENOMEM;
        s->nrules = i + 1;
        out->len = strlen(in->prefix);
        out->max_age_ms = in->max_age_ms;
        out->max_count = in->max_count;
        if (in->max_age_ms > 0 || in->max_count > 0) s->retention_on = 1;
    }
    return 0;
}

/* Frees what open allocated besides the environment. */
static void free_store(tw_store *s)
{
    pthread_mutex_destroy(&s->st_mu);
    pthread_rwlock_destroy(&s->map_lock);
    pthread_cond_destroy(&s->q_cv);
    pthread_mutex_destroy(&s->q_mu);
    tw_store__free_channels(s);
    free(s->slots);
    free(s->touched);
    free(s->origins);
    free(s);
}

int tw_store_open(tw_store **out, const tw_store_options *opts)
{
    MDB_envinfo info;
    MDB_stat est;
    tw_store *s;
    int rc, dead;

    if (!out || !opts || !opts->path || !opts->node_name || !opts->on_commit ||
        !tw_store__valid_node_name(opts->node_name))
        return TW_STORE_EINVAL;
    if (opts->max_event_bytes > MAX_EVENT_BYTES_LIMIT) return TW_STORE_EINVAL;

    s = calloc(1, sizeof(*s));
    if (!s) return TW_STORE_ENOMEM;
    s->on_commit = opts->on_commit;
    s->cb_arg = opts->cb_arg;
    s->max_queue_bytes = opts->max_queue_bytes ? opts->max_queue_bytes : DEFAULT_MAX_QUEUE_BYTES;
    s->max_batch_bytes = opts->max_batch_bytes ? opts->max_batch_bytes : DEFAULT_MAX_BATCH_BYTES;
    s->max_event_bytes = opts->max_event_bytes ? opts->max_event_bytes : DEFAULT_MAX_EVENT_BYTES;
    /* These calls cannot fail on Linux/glibc. The writer's timed waits (retention passes)
     * use the monotonic clock, so a wall-clock jump neither stalls nor hurries them. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->st_mu, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->map_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    s->map_max = opts->map_max ? opts->map_max : opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE;
    s->map_size = opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE;
    if (s->map_size > s->map_max) s->map_size = s->map_max;
    rc = copy_retention(s, &opts->retention);
    if (rc) goto out_free_store;

    rc = make_dir(opts->path);
    if (rc) goto out_free_store;

    rc = mdb_env_create(&s->env);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_free_store;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, MAX_DBS)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, opts->max_readers ? opts->max_readers
                                                               : DEFAULT_MAX_READERS)) != 0) {
        rc = tw_store__map_err(rc);
        goto out_close_env;
    }
    /* MDB_NOTLS: reader slots belong to txns, not threads, so a reader may move between
     * threads. No NOSYNC/NOMETASYNC/WRITEMAP: every commit is fsynced before any append
     * is reported, which is what lets the broker acknowledge after on_commit. */
    rc = mdb_env_open(s->env, opts->path, MDB_NOTLS, 0600);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_close_env;
    }
    /* Slots left by a crashed process would pin old pages (and fill the table). */
    rc = mdb_reader_check(s->env, &dead);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_close_env;
    }

    rc = init_db(s, opts->node_name);
    if (rc) goto out_close_env;

    mdb_env_info(s->env, &info);
    /* LMDB raises the map to what the file already holds (a map grown by an earlier run). */
    s->map_size = info.me_mapsize;
    if (s->map_size > s->map_max) s->map_max = s->map_size;
    /* The top of the map is kept for retention: deleting needs free pages too (copy on
     * write), so appends stop short of the maximum, and a trim that finds the map full may
     * use the rest. 1/32 of it, at least 128 KiB, at most 64 MiB. */
    {
        uint64_t reserve = s->map_max / 32;
        if (reserve < (128u << 10)) reserve = 128u << 10;
        if (reserve > ((uint64_t)64 << 20)) reserve = (uint64_t)64 << 20;
        s->map_soft = s->map_max > 2 * reserve ? s->map_max - reserve : s->map_max / 2;
    }
    s->st.map_size = info.me_mapsize;
    s->st.last_lsn = s->last_lsn;
    rc = mdb_env_stat(s->env, &est);
    if (rc) {
        rc = tw_store__map_err(rc);
        goto out_close_env;
    }
    s->page_size = est.ms_psize;
    s->st.used_bytes = (uint64_t)(info.me_last_pgno + 1) * s->page_size;
    {
        struct stat fst;
        mdb_filehandle_t fd;
        rc = mdb_env_get_fd(s->env, &fd);
        if (rc == 0 && fstat(fd, &fst) != 0) rc = errno;
        if (rc) {
            rc = tw_store__map_err(rc);
            goto out_close_env;
        }
        s->data_fd = fd;
        s->file_bytes = (uint64_t)fst.st_size;
    }
    s->st.kept_bytes = s->kept_bytes;
    for (size_t i = 0; i < s->n_origins; i++)
        s->st.kept_events += s->origins[i].kept;

    rc = pthread_create(&s->writer, NULL, tw_store__writer_main, s);
    if (rc) {
        rc = rc == ENOMEM || rc == EAGAIN ? TW_STORE_ENOMEM : TW_STORE_EIO;
        goto out_close_env;
    }
    s->writer_started = 1;
    *out = s;
    return 0;

out_close_env:
    /* Also required after a failed mdb_env_open. */
    mdb_env_close(s->env);
out_free_store:
    free_store(s);
    return tw_store__public_err(rc);
}

void tw_store_close(tw_store *s)
{
    if (!s) return;
    /* The writer leaves its loop only once the queue is empty and closing is set, so
     * everything submitted before this point is committed and reported first. */
    pthread_mutex_lock(&s->q_mu);
    s->closing = 1;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    if (s->writer_started) pthread_join(s->writer, NULL);
    while (s->submitters) /* a racing submit between its unlock and its signal */
        sched_yield();
    mdb_env_close(s->env);
    free_store(s);
}

int tw_store_check_readers(tw_store *s, int *cleared)
{
    int dead = 0, rc;

    if (!s || !cleared) return TW_STORE_EINVAL;
    rc = mdb_reader_check(s->env, &dead);
    if (rc) return tw_store__public_err(tw_store__map_err(rc));
    *cleared = dead;
    return 0;
}

const char *tw_store_origin(const tw_store *s)
{
    return s->origin;
}

void tw_store_get_stats(tw_store *s, tw_store_stats *out)
{
    pthread_mutex_lock(&s->st_mu);
    *out = s->st;
    pthread_mutex_unlock(&s->st_mu);
    pthread_mutex_lock(&s->q_mu);
    out->queue_bytes = s->q_bytes;
    out->refused_busy = s->refused_busy;
    pthread_mutex_unlock(&s->q_mu);
}
