/*
 * A fixed-memory latency histogram for tidewire-cli bench (HDR-style log-linear buckets).
 *
 * Values below 256 are counted exactly; above, each power of two is split into 128 linear
 * sub-buckets, so a reported percentile is within 1/128 (< 0.8%) of the true value, for
 * any value up to 2^64-1, in 58 KiB. Recording is a few instructions and never allocates.
 */
#ifndef TW_CLI_HIST_H
#define TW_CLI_HIST_H

#include <stdint.h>

#define CLI_HIST_BUCKETS (256 + 56 * 128)

typedef struct cli_hist {
    uint64_t counts[CLI_HIST_BUCKETS];
    uint64_t count;
    uint64_t min, max; /* exact */
    double sum;
} cli_hist;

/* Empties h. */
void cli_hist_init(cli_hist *h);
/* Counts one value. */
void cli_hist_record(cli_hist *h, uint64_t v);
/* Adds src's counts into dst. */
void cli_hist_merge(cli_hist *dst, const cli_hist *src);
/* The value at percentile p (0 < p <= 100): the highest value of the bucket holding it,
 * capped at the exact maximum; 0 when empty. */
uint64_t cli_hist_percentile(const cli_hist *h, double p);
/* The mean, 0 when empty. */
double cli_hist_mean(const cli_hist *h);

#endif
