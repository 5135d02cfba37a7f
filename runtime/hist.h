/* hist.h: log-linear latency histogram (HdrHistogram-like, fixed size).
 *
 * Values (nanoseconds, or any u64) below 64 are counted exactly; above, each
 * power of two is split into 32 linear sub-buckets, so a bucket is at most
 * 1/32 (3.1%) of its value wide. 1920 buckets cover all of u64; 15 KiB.
 * Percentiles report the bucket's upper bound (never optimistic), clamped to
 * the exact maximum. One writer; merge per-thread histograms to report.
 */
#ifndef RUNTIME_HIST_H
#define RUNTIME_HIST_H

#include <stdint.h>

#define HIST_BUCKETS 1920

struct hist {
	uint64_t count, sum, min, max;
	uint64_t b[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t v)
{
	if (v < 64)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	return 64u + (e - 6u) * 32u + (unsigned)((v >> (e - 5u)) & 31u);
}

static inline void hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
}

/* Largest value that falls in bucket i. */
uint64_t hist_bucket_high(unsigned i);

/* Value at percentile p (0..100]; 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);

/* dst += src. */
void hist_merge(struct hist *dst, const struct hist *src);

#endif
