/* test_hist.c: criterion unit tests of the log-linear histogram
 * (runtime/hist.h): bucket geometry, percentiles against exact answers,
 * merge, and the ends of the u64 range.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/hist.h"

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rnd64(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* A value of random magnitude: every exponent equally likely. */
static uint64_t rnd_any(void)
{
	unsigned shift = (unsigned)(rnd64() % 64);
	return rnd64() >> shift;
}

static struct hist *hist_new(void)
{
	struct hist *h = calloc(1, sizeof *h);
	cr_assert_not_null(h);
	return h;
}

/* ---- bucket geometry --------------------------------------------------------------- */

Test(hist, size_is_as_documented)
{
	cr_assert_eq(HIST_BUCKETS, 1920);
	cr_assert_leq(sizeof(struct hist), 15u * 1024 + 64);
}

Test(hist, exact_below_64)
{
	for (uint64_t v = 0; v < 64; v++) {
		cr_assert_eq(hist_index(v), v);
		cr_assert_eq(hist_bucket_high((unsigned)v), v);
	}
	cr_assert_eq(hist_index(64), 64);
	cr_assert_eq(hist_index(65), 64); /* 64..127: buckets of 2 */
	cr_assert_eq(hist_index(66), 65);
	cr_assert_eq(hist_bucket_high(64), 65);
	/* a histogram of small values reports them exactly */
	struct hist *h = hist_new();
	for (uint64_t v = 1; v <= 50; v++)
		hist_add(h, v);
	for (unsigned p = 2; p <= 100; p += 2)
		cr_assert_eq(hist_percentile(h, p), p / 2, "p%u", p);
	free(h);
}

Test(hist, bucket_width_within_one_32nd)
{
	for (int i = 0; i < 200000; i++) {
		uint64_t v = rnd_any();
		unsigned idx = hist_index(v);
		cr_assert_lt(idx, HIST_BUCKETS, "index of %llu out of range", (unsigned long long)v);
		uint64_t hi = hist_bucket_high(idx);
		cr_assert_geq(hi, v, "bucket high %llu below value %llu", (unsigned long long)hi, (unsigned long long)v);
		/* hi - v <= v/32: at most 3.125% over (3.2% allowed) */
		cr_assert_leq((double)(hi - v), (double)v * 0.032, "value %llu: bucket high %llu is %.3f%% above",
			      (unsigned long long)v, (unsigned long long)hi, 100.0 * (double)(hi - v) / (double)v);
		cr_assert_leq(hi - v, v / 32);
		/* hi is in the same bucket, hi + 1 in the next */
		cr_assert_eq(hist_index(hi), idx);
		if (hi != UINT64_MAX)
			cr_assert_eq(hist_index(hi + 1), idx + 1);
	}
}

Test(hist, every_bucket_boundary_is_consistent)
{
	/* walking the buckets in order: each starts one past the previous high */
	uint64_t lo = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		uint64_t hi = hist_bucket_high(i);
		cr_assert_geq(hi, lo, "bucket %u: high %llu below low %llu", i, (unsigned long long)hi,
			      (unsigned long long)lo);
		cr_assert_eq(hist_index(lo), i, "bucket %u: low %llu indexes to %u", i, (unsigned long long)lo,
			     hist_index(lo));
		cr_assert_eq(hist_index(hi), i);
		if (i + 1 < HIST_BUCKETS)
			lo = hi + 1;
		else
			cr_assert_eq(hi, UINT64_MAX, "the last bucket ends at %llu", (unsigned long long)hi);
	}
	/* powers of two and their neighbours */
	for (unsigned e = 1; e < 64; e++) {
		uint64_t p = 1ull << e;
		cr_assert_lt(hist_index(p - 1), hist_index(p));
		cr_assert_lt(hist_index(p), HIST_BUCKETS);
		cr_assert_leq(hist_index(p + 1), hist_index(p) + 1);
	}
}

Test(hist, uint64_max_does_not_overflow)
{
	cr_assert_eq(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
	cr_assert_eq(hist_bucket_high(HIST_BUCKETS - 1), UINT64_MAX);
	cr_assert_eq(hist_index(UINT64_MAX - 1), HIST_BUCKETS - 1);
	cr_assert_eq(hist_index(1ull << 63), HIST_BUCKETS - 32);
	struct hist *h = hist_new();
	hist_add(h, UINT64_MAX);
	cr_assert_eq(h->b[HIST_BUCKETS - 1], 1);
	cr_assert_eq(h->max, UINT64_MAX);
	cr_assert_eq(h->min, UINT64_MAX);
	cr_assert_eq(hist_percentile(h, 50), UINT64_MAX);
	cr_assert_eq(hist_percentile(h, 100), UINT64_MAX);
	hist_add(h, 0);
	cr_assert_eq(h->min, 0);
	cr_assert_eq(hist_percentile(h, 50), 0);
	cr_assert_eq(hist_percentile(h, 100), UINT64_MAX);
	free(h);
}

/* ---- stats and percentiles ------------------------------------------------------------ */

Test(hist, empty_returns_zero)
{
	struct hist *h = hist_new();
	cr_assert_eq(hist_percentile(h, 50), 0);
	cr_assert_eq(hist_percentile(h, 99.9), 0);
	cr_assert_eq(hist_percentile(h, 100), 0);
	cr_assert_eq(hist_percentile(h, 0), 0);
	cr_assert_eq(h->count, 0);
	free(h);
}

Test(hist, min_max_count_sum)
{
	struct hist *h = hist_new();
	hist_add(h, 500);
	cr_assert_eq(h->min, 500);
	cr_assert_eq(h->max, 500);
	hist_add(h, 7);
	hist_add(h, 123456789);
	hist_add(h, 500);
	cr_assert_eq(h->count, 4);
	cr_assert_eq(h->sum, 500 + 7 + 123456789 + 500);
	cr_assert_eq(h->min, 7);
	cr_assert_eq(h->max, 123456789);
	uint64_t total = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += h->b[i];
	cr_assert_eq(total, 4);
	cr_assert_eq(h->b[hist_index(500)], 2);
	/* a first value of 0 still sets min */
	struct hist *z = hist_new();
	hist_add(z, 0);
	hist_add(z, 10);
	cr_assert_eq(z->min, 0);
	cr_assert_eq(z->max, 10);
	free(z);
	free(h);
}

Test(hist, single_value_is_exact_at_every_percentile)
{
	const uint64_t vals[] = {1, 63, 64, 1000, 123456789, 1ull << 40};
	for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
		struct hist *h = hist_new();
		for (int i = 0; i < 10; i++)
			hist_add(h, vals[k]);
		const double ps[] = {0, 0.1, 1, 50, 99, 99.99, 100};
		for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++)
			cr_assert_eq(hist_percentile(h, ps[j]), vals[k], "value %llu p%g -> %llu",
				     (unsigned long long)vals[k], ps[j], (unsigned long long)hist_percentile(h, ps[j]));
		free(h);
	}
}

Test(hist, uniform_percentiles)
{
	struct hist *h = hist_new();
	for (uint64_t v = 1; v <= 100000; v++)
		hist_add(h, v);
	cr_assert_eq(h->count, 100000);
	cr_assert_eq(h->sum, 100000ull * 100001 / 2);
	cr_assert_eq(h->min, 1);
	cr_assert_eq(h->max, 100000);
	uint64_t p50 = hist_percentile(h, 50), p99 = hist_percentile(h, 99), p90 = hist_percentile(h, 90);
	cr_assert(p50 >= 50000 && p50 <= 50000 * 1.032, "p50 = %llu", (unsigned long long)p50);
	cr_assert(p90 >= 90000 && p90 <= 90000 * 1.032, "p90 = %llu", (unsigned long long)p90);
	cr_assert(p99 >= 99000 && p99 <= 99000 * 1.032, "p99 = %llu", (unsigned long long)p99);
	cr_assert_eq(hist_percentile(h, 100), 100000, "p100 is the exact max");
	cr_assert_leq(hist_percentile(h, 99.999), 100000);
	cr_assert_eq(hist_percentile(h, 0), 1, "p0 is the first value");
	cr_assert_eq(hist_percentile(h, 150), 100000);
	free(h);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Against a sorted copy: the reported value is never below the exact one
 * (upper bound of the bucket) and at most 1/32 above it. */
Test(hist, percentiles_vs_sorted_reference)
{
	enum { N = 50000 };
	uint64_t *v = malloc(N * sizeof *v);
	cr_assert_not_null(v);
	struct hist *h = hist_new();
	for (int i = 0; i < N; i++) {
		/* log-normal-ish latencies: 10 us .. 100 ms in ns */
		v[i] = 10000 + (rnd64() % 1000) * (1 + rnd64() % 100) * (1 + rnd64() % 1000);
		hist_add(h, v[i]);
	}
	qsort(v, N, sizeof *v, cmp_u64);
	const double ps[] = {0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};
	for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++) {
		uint64_t rank = (uint64_t)(ps[j] / 100.0 * N + 0.5);
		if (rank < 1)
			rank = 1;
		uint64_t exact = v[rank - 1], got = hist_percentile(h, ps[j]);
		cr_assert_geq(got, exact, "p%g: %llu below exact %llu", ps[j], (unsigned long long)got,
			      (unsigned long long)exact);
		cr_assert_leq(got - exact, exact / 32, "p%g: %llu vs exact %llu", ps[j], (unsigned long long)got,
			      (unsigned long long)exact);
	}
	cr_assert_eq(hist_percentile(h, 100), v[N - 1]);
	free(h);
	free(v);
}

/* ---- merge ---------------------------------------------------------------------------- */

Test(hist, merge_equals_adding_everything_to_one)
{
	struct hist *a = hist_new(), *b = hist_new(), *c = hist_new(), *all = hist_new();
	for (int i = 0; i < 20000; i++) {
		uint64_t x = rnd_any() >> 2; /* (sums wrap alike in both) */
		hist_add(i % 3 == 0 ? a : i % 3 == 1 ? b : c, x);
		hist_add(all, x);
	}
	hist_add(b, 1); /* b holds the smallest, c the largest */
	hist_add(all, 1);
	hist_add(c, UINT64_MAX >> 2);
	hist_add(all, UINT64_MAX >> 2);
	struct hist *m = hist_new();
	hist_merge(m, a);
	hist_merge(m, b);
	hist_merge(m, c);
	cr_assert_eq(m->count, all->count);
	cr_assert_eq(m->sum, all->sum);
	cr_assert_eq(m->min, all->min);
	cr_assert_eq(m->max, all->max);
	cr_assert_eq(memcmp(m, all, sizeof *m), 0, "merged buckets differ");
	for (double p = 0.5; p <= 100; p += 0.5)
		cr_assert_eq(hist_percentile(m, p), hist_percentile(all, p));
	free(a);
	free(b);
	free(c);
	free(all);
	free(m);
}

Test(hist, merge_with_empty)
{
	struct hist *a = hist_new(), *e = hist_new(), *copy = hist_new();
	hist_add(a, 100);
	hist_add(a, 200);
	memcpy(copy, a, sizeof *a);
	hist_merge(a, e); /* empty src: nothing changes, min is not reset to 0 */
	cr_assert_eq(memcmp(a, copy, sizeof *a), 0);
	cr_assert_eq(a->min, 100);
	hist_merge(e, a); /* into empty: takes src's min even though dst->min is 0 */
	cr_assert_eq(memcmp(e, a, sizeof *a), 0);
	cr_assert_eq(e->min, 100);
	/* src with a larger min does not raise dst's */
	struct hist *big = hist_new();
	hist_add(big, 1000);
	hist_merge(e, big);
	cr_assert_eq(e->min, 100);
	cr_assert_eq(e->max, 1000);
	cr_assert_eq(e->count, 3);
	free(a);
	free(e);
	free(copy);
	free(big);
}
