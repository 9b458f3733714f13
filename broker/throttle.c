/* throttle.c — see throttle.h. (Not limits.h: that name is the C library's.) */
#include "throttle.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void tw_bucket_init(tw_bucket *b, double burst, uint64_t now_ms)
{
    b->tokens = burst;
    b->last_ms = now_ms;
}

int tw_bucket_take(tw_bucket *b, double rate, double burst, uint64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * rate / 1000.0;
        if (b->tokens > burst) b->tokens = burst;
        b->last_ms = now_ms;
    }
    if (b->tokens < 1.0) return 0;
    b->tokens -= 1.0;
    return 1;
}

#define NBUCKETS 1024 /* hash chains; the table grows only as wide as the clients are many */

struct tw_ip {
    uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d, so one client is one entry either way */
    uint32_t conns;
    tw_bucket rate;
    tw_ip *next;
};

struct tw_iplimits {
    pthread_mutex_t mu; /* the loops of a node (--threads) share one table */
    int64_t max_conns, new_per_s;
    size_t n;
    uint32_t seed;
    tw_ip *table[NBUCKETS];
};

tw_iplimits *tw_iplimits_new(int64_t max_conns, int64_t new_per_s)
{
    tw_iplimits *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    pthread_mutex_init(&l->mu, NULL);
    l->max_conns = max_conns;
    l->new_per_s = new_per_s;
    /* A per-process seed: a client cannot choose addresses that pile into one chain. */
    l->seed = (uint32_t)(uintptr_t)l ^ 0x9e3779b9u;
    return l;
}

void tw_iplimits_free(tw_iplimits *l)
{
    if (!l) return;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (tw_ip *e = l->table[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void key_of(const struct sockaddr *sa, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

static uint32_t hash(const tw_iplimits *l, const uint8_t k[16])
{
    uint32_t h = 2166136261u ^ l->seed; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ k[i]) * 16777619u;
    return h % NBUCKETS;
}

static int admit(tw_iplimits *l, const struct sockaddr *addr, uint64_t now_ms, tw_ip **out)
{
    uint8_t k[16];
    key_of(addr, k);
    uint32_t h = hash(l, k);
    tw_ip *e = l->table[h];
    while (e && memcmp(e->addr, k, 16) != 0)
        e = e->next;
    double burst = (double)l->new_per_s;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            *out = NULL;
            return TW_IP_NOMEM;
        }
        memcpy(e->addr, k, 16);
        tw_bucket_init(&e->rate, burst, now_ms);
        e->next = l->table[h];
        l->table[h] = e;
        l->n++;
    }
    if (l->max_conns && e->conns >= (uint64_t)l->max_conns) return TW_IP_TOO_MANY;
    if (l->new_per_s && !tw_bucket_take(&e->rate, (double)l->new_per_s, burst, now_ms))
        return TW_IP_TOO_FAST;
    e->conns++;
    *out = e;
    return TW_IP_OK;
}

int tw_iplimits_admit(tw_iplimits *l, const struct sockaddr *addr, uint64_t now_ms, tw_ip **out)
{
    pthread_mutex_lock(&l->mu);
    int rc = admit(l, addr, now_ms, out);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void tw_iplimits_release(tw_iplimits *l, tw_ip *ip)
{
    if (!ip) return;
    pthread_mutex_lock(&l->mu);
    if (ip->conns) ip->conns--;
    pthread_mutex_unlock(&l->mu);
}

void tw_iplimits_sweep(tw_iplimits *l, uint64_t now_ms)
{
    double burst = (double)l->new_per_s;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (tw_ip **pp = &l->table[i]; *pp;) {
            tw_ip *e = *pp;
            double tokens = e->rate.tokens;
            if (now_ms > e->rate.last_ms)
                tokens += (double)(now_ms - e->rate.last_ms) * (double)l->new_per_s / 1000.0;
            /* Forgetting an address whose bucket is not full would hand it a fresh burst. */
            if (e->conns == 0 && tokens >= burst) {
                *pp = e->next;
                free(e);
                l->n--;
            } else {
                pp = &e->next;
            }
        }
    pthread_mutex_unlock(&l->mu);
}

size_t tw_iplimits_size(tw_iplimits *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}
