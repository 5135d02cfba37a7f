/* test_u64map.c: criterion unit tests of the open-addressing u64 -> u64 map
 * (runtime/u64map.h).
 *
 * Besides the API, the tests check the table's own invariant after
 * deletions: every key is reachable by linear probing from its home slot
 * without crossing an empty slot (what backward-shift deletion must keep).
 * Collisions are forced by picking keys whose hashes share a few home slots,
 * including runs that wrap around the end of the table.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/u64map.h"

static uint64_t rng_state;

static uint64_t rnd64(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint32_t rnd(uint32_t n)
{
	return (uint32_t)(rnd64() % n);
}

/* Every key sits in its probe run: no empty slot between home and slot. */
static void check_invariant(const struct u64map *m)
{
	size_t n = 0;
	for (size_t i = 0; i <= m->mask; i++) {
		uint64_t k = m->e[i].key;
		if (!k) {
			cr_assert_eq(m->e[i].val, 0, "empty slot %zu holds a value", i);
			continue;
		}
		n++;
		/* (a second copy of k would also have to sit in this run, so the
		 * same walk finds duplicates) */
		for (size_t j = hash64(k) & m->mask; j != i; j = (j + 1) & m->mask) {
			cr_assert_neq(m->e[j].key, 0, "key %#llx at slot %zu: empty slot %zu in its probe run",
				      (unsigned long long)k, i, j);
			cr_assert_neq(m->e[j].key, k, "key %#llx twice (slots %zu, %zu)", (unsigned long long)k, j, i);
		}
	}
	cr_assert_eq(n, m->count, "%zu keys in the table, count %zu", n, m->count);
	cr_assert_leq(m->count * 2, m->mask + 1, "load over 1/2: %zu keys in %zu slots", m->count, m->mask + 1);
}

/* ---- basics ------------------------------------------------------------------ */

Test(u64map, empty_map)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	cr_assert_eq(m.count, 0);
	cr_assert_eq(m.mask + 1, 16);
	cr_assert_eq(u64map_bytes(&m), 16 * sizeof(struct u64map_ent));
	cr_assert_null(u64map_get(&m, 1));
	cr_assert_null(u64map_get(&m, UINT64_MAX));
	cr_assert_eq(u64map_del(&m, 1), 0);
	size_t pos = 0;
	cr_assert_null(u64map_next(&m, &pos));
	u64map_free(&m);
	cr_assert_eq(u64map_bytes(&m), 0);
	cr_assert_null(u64map_get(&m, 1));
	cr_assert_eq(u64map_del(&m, 1), 0);
	pos = 0;
	cr_assert_null(u64map_next(&m, &pos));
}

Test(u64map, init_hint_sizes_the_table)
{
	const struct {
		size_t hint, slots;
	} c[] = {{0, 16}, {1, 16}, {8, 16}, {9, 32}, {100, 256}, {128, 256}, {129, 512}, {1000, 2048}};
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct u64map m;
		cr_assert_eq(u64map_init(&m, c[i].hint), 0);
		cr_assert_eq(m.mask + 1, c[i].slots, "hint %zu: %zu slots, want %zu", c[i].hint, m.mask + 1, c[i].slots);
		cr_assert_eq(u64map_bytes(&m), c[i].slots * 16);
		/* `hint` keys fit without growing */
		for (uint64_t k = 1; k <= c[i].hint; k++)
			cr_assert_eq(u64map_put(&m, k, k), 0);
		cr_assert_eq(m.mask + 1, c[i].slots, "hint %zu: grew before holding hint keys", c[i].hint);
		u64map_free(&m);
	}
}

Test(u64map, put_get_replace_del)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 4), 0);
	cr_assert_eq(u64map_put(&m, 42, 4200), 0);
	cr_assert_eq(u64map_put(&m, UINT64_MAX, 7), 0);
	cr_assert_eq(u64map_put(&m, 1, 0), 0); /* a zero value is a value */
	cr_assert_eq(m.count, 3);
	uint64_t *v = u64map_get(&m, 42);
	cr_assert_not_null(v);
	cr_assert_eq(*v, 4200);
	cr_assert_eq(*u64map_get(&m, UINT64_MAX), 7);
	cr_assert_not_null(u64map_get(&m, 1));
	cr_assert_eq(*u64map_get(&m, 1), 0);
	cr_assert_null(u64map_get(&m, 43));
	/* replace keeps the count */
	cr_assert_eq(u64map_put(&m, 42, 4300), 0);
	cr_assert_eq(m.count, 3);
	cr_assert_eq(*u64map_get(&m, 42), 4300);
	/* the value pointer is writable */
	*u64map_get(&m, 42) = 99;
	cr_assert_eq(*u64map_get(&m, 42), 99);
	/* del */
	cr_assert_eq(u64map_del(&m, 42), 1);
	cr_assert_eq(u64map_del(&m, 42), 0);
	cr_assert_null(u64map_get(&m, 42));
	cr_assert_eq(m.count, 2);
	cr_assert_eq(u64map_del(&m, 12345), 0);
	cr_assert_eq(m.count, 2);
	/* re-insert after delete */
	cr_assert_eq(u64map_put(&m, 42, 1), 0);
	cr_assert_eq(*u64map_get(&m, 42), 1);
	cr_assert_eq(m.count, 3);
	check_invariant(&m);
	u64map_free(&m);
}

Test(u64map, key_zero_rejected)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	cr_assert_eq(u64map_put(&m, 0, 5), -EINVAL);
	cr_assert_eq(m.count, 0);
	cr_assert_null(u64map_get(&m, 0));
	cr_assert_eq(u64map_del(&m, 0), 0);
	cr_assert_eq(u64map_put(&m, 3, 5), 0);
	cr_assert_eq(u64map_put(&m, 0, 6), -EINVAL);
	cr_assert_null(u64map_get(&m, 0));
	cr_assert_eq(u64map_del(&m, 0), 0);
	cr_assert_eq(m.count, 1);
	check_invariant(&m);
	u64map_free(&m);
}

/* ---- growth and bytes ---------------------------------------------------------- */

Test(u64map, growth_keeps_every_entry)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	enum { N = 100000 };
	size_t slots = 16;
	for (uint64_t i = 1; i <= N; i++) {
		cr_assert_eq(u64map_put(&m, i * 0x9e3779b97f4a7c15ull, i), 0);
		/* doubling exactly when a put would take the load over 1/2 */
		if (i * 2 > slots)
			slots *= 2;
		cr_assert_eq(m.mask + 1, slots, "after %llu keys: %zu slots, want %zu", (unsigned long long)i, m.mask + 1,
			     slots);
		cr_assert_eq(u64map_bytes(&m), slots * sizeof(struct u64map_ent));
	}
	cr_assert_eq(m.count, N);
	for (uint64_t i = 1; i <= N; i++) {
		uint64_t *v = u64map_get(&m, i * 0x9e3779b97f4a7c15ull);
		cr_assert_not_null(v, "key #%llu lost in growth", (unsigned long long)i);
		cr_assert_eq(*v, i);
	}
	check_invariant(&m);
	u64map_free(&m);
	cr_assert_eq(u64map_bytes(&m), 0);
}

Test(u64map, bytes_matches_power_of_two_slots)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	for (uint64_t k = 1; k <= 8; k++)
		cr_assert_eq(u64map_put(&m, k, k), 0);
	cr_assert_eq(u64map_bytes(&m), 256); /* 8 of 16: at the limit */
	cr_assert_eq(u64map_put(&m, 8, 80), 0); /* replace: no growth */
	cr_assert_eq(u64map_bytes(&m), 256);
	cr_assert_eq(u64map_put(&m, 9, 9), 0);
	cr_assert_eq(u64map_bytes(&m), 512);
	/* deletion never shrinks */
	for (uint64_t k = 1; k <= 9; k++)
		cr_assert_eq(u64map_del(&m, k), 1);
	cr_assert_eq(u64map_bytes(&m), 512);
	cr_assert_eq(m.count, 0);
	u64map_free(&m);
}

/* ---- iteration ------------------------------------------------------------------ */

Test(u64map, iteration_visits_each_key_once)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	enum { N = 5000 };
	static uint8_t seen[N + 1];
	for (uint64_t k = 1; k <= N; k++)
		cr_assert_eq(u64map_put(&m, k << 20, k * 3), 0);
	for (uint64_t k = 1; k <= N; k += 4) /* holes from deletions */
		cr_assert_eq(u64map_del(&m, k << 20), 1);
	size_t pos = 0, visits = 0;
	const struct u64map_ent *e;
	while ((e = u64map_next(&m, &pos)) != NULL) {
		uint64_t k = e->key >> 20;
		cr_assert(k >= 1 && k <= N && (e->key & ((1u << 20) - 1)) == 0, "bogus key %#llx",
			  (unsigned long long)e->key);
		cr_assert_eq(e->val, k * 3);
		cr_assert_eq(seen[k], 0, "key %llu visited twice", (unsigned long long)k);
		cr_assert_neq(k % 4, 1, "deleted key %llu visited", (unsigned long long)k);
		seen[k] = 1;
		visits++;
	}
	cr_assert_eq(visits, m.count);
	cr_assert_eq(visits, N - (N + 3) / 4);
	/* the end is sticky */
	cr_assert_null(u64map_next(&m, &pos));
	u64map_free(&m);
}

/* ---- deletion with collisions ------------------------------------------------------ */

/* n distinct non-zero keys whose home slot in a table of `slots` is one of
 * `homes` (so they form long, interleaved probe runs). */
static void colliding_keys(uint64_t *out, size_t n, size_t slots, const size_t *homes, size_t nhomes)
{
	size_t got = 0;
	while (got < n) {
		uint64_t k = rnd64();
		if (!k)
			continue;
		size_t h = hash64(k) & (slots - 1);
		for (size_t i = 0; i < nhomes; i++)
			if (h == homes[i]) {
				out[got++] = k;
				break;
			}
	}
}

/* Random put/del/get against a reference array; the table is fixed size
 * (no growth) so the forced collisions stay collisions. */
static void run_vs_reference(struct u64map *m, const uint64_t *keys, size_t nkeys, int ops, size_t max_live)
{
	uint64_t *ref = calloc(nkeys, sizeof *ref); /* value + 1, 0 = absent */
	cr_assert_not_null(ref);
	size_t live = 0;
	for (int op = 0; op < ops; op++) {
		size_t i = rnd((uint32_t)nkeys);
		uint32_t what = rnd(10);
		if (what < 5 && (ref[i] || live < max_live)) {
			uint64_t v = rnd64() >> 1;
			cr_assert_eq(u64map_put(m, keys[i], v), 0);
			if (!ref[i])
				live++;
			ref[i] = v + 1;
		} else if (what < 9) {
			int r = u64map_del(m, keys[i]);
			cr_assert_eq(r, ref[i] ? 1 : 0, "op %d: del of key #%zu returned %d", op, i, r);
			if (ref[i])
				live--;
			ref[i] = 0;
		}
		cr_assert_eq(m->count, live, "op %d", op);
		if (op % 64 == 0 || what >= 5) {
			for (size_t j = 0; j < nkeys; j++) {
				uint64_t *v = u64map_get(m, keys[j]);
				if (ref[j]) {
					cr_assert_not_null(v, "op %d: key #%zu (%#llx) not findable", op, j,
							   (unsigned long long)keys[j]);
					cr_assert_eq(*v, ref[j] - 1);
				} else {
					cr_assert_null(v, "op %d: deleted key #%zu still found", op, j);
				}
			}
		}
		if (op % 256 == 0)
			check_invariant(m);
	}
	check_invariant(m);
	free(ref);
}

Test(u64map, backward_shift_with_forced_collisions)
{
	rng_state = 0x2545f4914f6cdd1dull;
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 256), 0); /* 512 slots, up to 256 keys without growth */
	cr_assert_eq(m.mask + 1, 512);
	/* homes in the last and first slots, so runs wrap around the end */
	const size_t homes[] = {508, 509, 511, 0, 1, 3, 200, 201};
	enum { NK = 400 };
	static uint64_t keys[NK];
	colliding_keys(keys, NK, 512, homes, sizeof homes / sizeof homes[0]);
	run_vs_reference(&m, keys, NK, 20000, 250);
	cr_assert_eq(m.mask + 1, 512, "the table grew; the collisions were diluted");
	u64map_free(&m);
}

/* Keys that are multiples of a large power of two (ids with low bits zero)
 * with growth going on. */
Test(u64map, randomized_multiples_of_power_of_two)
{
	rng_state = 0x1234567887654321ull;
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	enum { NK = 3000 };
	static uint64_t keys[NK];
	for (size_t i = 0; i < NK; i++)
		keys[i] = (uint64_t)(i + 1) << 40;
	run_vs_reference(&m, keys, NK, 30000, NK);
	u64map_free(&m);
}

/* Delete every key of a fully interleaved cluster in every order class:
 * front to back, back to front, and middle out. */
Test(u64map, delete_whole_cluster_in_several_orders)
{
	rng_state = 0xdeadbeefcafef00dull;
	const size_t homes[] = {14, 15, 0};
	enum { NK = 8 };
	uint64_t keys[NK];
	colliding_keys(keys, NK, 16, homes, 3);
	for (int order = 0; order < 3; order++) {
		struct u64map m;
		cr_assert_eq(u64map_init(&m, 8), 0);
		cr_assert_eq(m.mask + 1, 16);
		for (size_t i = 0; i < NK; i++)
			cr_assert_eq(u64map_put(&m, keys[i], i + 1), 0);
		cr_assert_eq(m.mask + 1, 16);
		check_invariant(&m);
		for (size_t n = 0; n < NK; n++) {
			size_t i = order == 0 ? n : order == 1 ? NK - 1 - n : (n % 2 ? NK / 2 + (n + 1) / 2 - 1 : NK / 2 - n / 2 - 1);
			cr_assert_eq(u64map_del(&m, keys[i]), 1, "order %d: delete #%zu", order, i);
			check_invariant(&m);
			cr_assert_null(u64map_get(&m, keys[i]));
			for (size_t j = 0; j < NK; j++) {
				uint64_t *v = u64map_get(&m, keys[j]);
				if (v)
					cr_assert_eq(*v, j + 1);
			}
		}
		cr_assert_eq(m.count, 0);
		u64map_free(&m);
	}
}

/* A freed map answers get/del/next/bytes as empty. put on a freed map (or a
 * zeroed, never-initialised one) dereferences NULL: grow() walks the old
 * table, m->e == NULL with mask 0. The header does not promise a freed map is
 * reusable, but get/del/next all check for m->e == NULL, so this looks like an
 * oversight. Disabled until runtime/u64map.c decides; see the report. */
Test(u64map, put_after_free_reinitialises)
{
	struct u64map m;
	cr_assert_eq(u64map_init(&m, 0), 0);
	u64map_free(&m);
	cr_assert_eq(u64map_put(&m, 7, 70), 0);
	cr_assert_not_null(u64map_get(&m, 7));
	u64map_free(&m);
}
