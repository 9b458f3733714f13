/*
 * throttle.h — the node's rate and count limits that are not a single comparison: a token
 * bucket (messages per second per connection, new connections per second per IP) and the
 * per-IP table (connections held at once, connections opened per second).
 *
 * Pure data structures fed a clock: no I/O, no logging. Loop thread only.
 */
#ifndef TW_THROTTLE_H
#define TW_THROTTLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A token bucket: `rate` tokens per second, at most `burst` held. */
typedef struct tw_bucket {
    double tokens;
    uint64_t last_ms;
} tw_bucket;

/* Starts a bucket full. */
void tw_bucket_init(tw_bucket *b, double burst, uint64_t now_ms);

/* Takes one token at now_ms (refilling first). Returns 1 when one was there, 0 when the
 * bucket is empty (the caller refuses; nothing is taken). */
int tw_bucket_take(tw_bucket *b, double rate, double burst, uint64_t now_ms);

/* Per-IP bookkeeping. Each connection holds its address's entry from admit to release.
 * One table serves every loop of a node: these functions take its lock, any thread. */
typedef struct tw_iplimits tw_iplimits;
typedef struct tw_ip tw_ip;

enum { TW_IP_OK = 0, TW_IP_TOO_MANY = 1, TW_IP_TOO_FAST = 2, TW_IP_NOMEM = -1 };

/* max_conns and new_per_s of 0 mean no limit. Returns NULL on ENOMEM. */
tw_iplimits *tw_iplimits_new(int64_t max_conns, int64_t new_per_s);

/* Frees the table (entries still held by connections are freed too: call at shutdown). */
void tw_iplimits_free(tw_iplimits *l);

/*
 * Admits a connection from `addr` (AF_INET or AF_INET6; anything else shares one entry)
 * at now_ms. TW_IP_OK: *out is the entry to release when the connection ends. TW_IP_TOO_MANY
 * / TW_IP_TOO_FAST: refused, *out untouched, nothing to release. TW_IP_NOMEM: admitted
 * without an entry (*out NULL): memory pressure must not lock clients out.
 */
int tw_iplimits_admit(tw_iplimits *l, const struct sockaddr *addr, uint64_t now_ms, tw_ip **out);

/* Releases what admit gave (NULL is fine). */
void tw_iplimits_release(tw_iplimits *l, tw_ip *ip);

/* Frees entries that hold no connection and whose rate bucket has refilled; call now and
 * then (the node's tick). */
void tw_iplimits_sweep(tw_iplimits *l, uint64_t now_ms);

/* Entries in the table (tests, /stats). */
size_t tw_iplimits_size(tw_iplimits *l);

#endif /* TW_THROTTLE_H */
