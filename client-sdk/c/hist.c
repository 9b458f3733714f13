/* Log-linear histogram: see hist.h. */
#include "hist.h"

#include <math.h>
#include <string.h>

static unsigned bucket_of(uint64_t v)
{
    if (v < 256) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
    unsigned shift = msb - 7;                          /* v >> shift is in [128, 256) */
    return 256 + (shift - 1) * 128 + (unsigned)((v >> shift) - 128);
}

static uint64_t bucket_high(unsigned i)
{
    if (i < 256) return i;
    unsigned k = i - 256;
    unsigned shift = k / 128 + 1;
    uint64_t sub = k % 128 + 128;
    return ((sub + 1) << shift) - 1; /* sub + 1 <= 256 and shift <= 56: no overflow */
}

void cli_hist_init(cli_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void cli_hist_record(cli_hist *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void cli_hist_merge(cli_hist *dst, const cli_hist *src)
{
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

uint64_t cli_hist_percentile(const cli_hist *h, double p)
{
    if (!h->count) return 0;
    if (p >= 100) return h->max;
    uint64_t target = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (target < 1) target = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= target) {
            uint64_t v = bucket_high(i);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}

double cli_hist_mean(const cli_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0;
}
