/* test_msgid.c: criterion unit tests of server message ids (runtime/msgid.h):
 * layout, strict increase (including bursts that borrow future
 * milliseconds and a clock that steps back), uniqueness across generators,
 * and recovering the time.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/msgid.h"

#define T0 1767225600123ull /* 2026-01-01T00:00:00.123Z */

static unsigned id_gen(uint64_t id)
{
	return (unsigned)((id >> 10) & 0x3fff);
}

static unsigned id_thread(uint64_t id)
{
	return (unsigned)((id >> 10) & 0xff);
}

static unsigned id_seq(uint64_t id)
{
	return (unsigned)(id & 0x3ff);
}

Test(msgid, layout_and_time)
{
	struct msgid_gen g;
	msgid_init(&g, 5, 17);
	uint64_t id = msgid_next(&g, T0);
	cr_assert_eq(msgid_time_ms(id), T0);
	cr_assert_eq(id >> 24, T0 - MSGID_EPOCH_MS);
	cr_assert_eq(msgid_node(id), 5);
	cr_assert_eq(id_thread(id), 17);
	cr_assert_eq(id_gen(id), (5u << 8) | 17u);
	cr_assert_eq(id_seq(id), 0);
	uint64_t id2 = msgid_next(&g, T0);
	cr_assert_eq(id2, id + 1, "same millisecond: the sequence counts up");
	cr_assert_eq(id_seq(id2), 1);
	uint64_t id3 = msgid_next(&g, T0 + 7);
	cr_assert_eq(msgid_time_ms(id3), T0 + 7);
	cr_assert_eq(id_seq(id3), 0, "a new millisecond restarts the sequence");
}

Test(msgid, generator_bits_hold_node_and_thread)
{
	const unsigned nodes[] = {1, 2, 31, 62, MSGID_MAX_NODE};
	const unsigned threads[] = {0, 1, 128, 254, MSGID_MAX_THREAD};
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
		for (size_t j = 0; j < sizeof threads / sizeof threads[0]; j++) {
			struct msgid_gen g;
			msgid_init(&g, nodes[i], threads[j]);
			for (int k = 0; k < 1100; k++) { /* through a borrow: seq wraps, gen untouched */
				uint64_t id = msgid_next(&g, T0);
				cr_assert_eq(msgid_node(id), nodes[i]);
				cr_assert_eq(id_thread(id), threads[j]);
			}
		}
	/* maxima do not spill into the time or the sequence */
	struct msgid_gen g;
	msgid_init(&g, MSGID_MAX_NODE, MSGID_MAX_THREAD);
	uint64_t id = msgid_next(&g, MSGID_EPOCH_MS + 1);
	cr_assert_eq(id, (1ull << 24) | (0x3fffull << 10));
}

Test(msgid, burst_of_5000_in_one_millisecond_borrows)
{
	struct msgid_gen g;
	msgid_init(&g, 3, 9);
	uint64_t prev = 0;
	for (unsigned i = 0; i < 5000; i++) {
		uint64_t id = msgid_next(&g, T0);
		cr_assert_gt(id, prev, "id %u not above the previous one", i);
		cr_assert_eq(msgid_node(id), 3);
		cr_assert_eq(id_thread(id), 9);
		/* 1024 per millisecond, then the next millisecond is borrowed */
		cr_assert_eq(msgid_time_ms(id), T0 + i / 1024, "id %u: time %llu", i, (unsigned long long)msgid_time_ms(id));
		cr_assert_eq(id_seq(id), i % 1024, "id %u: seq %u", i, id_seq(id));
		prev = id;
	}
	/* the clock moves on, but not past the borrowed time: still increasing */
	for (uint64_t t = T0 + 1; t <= T0 + 4; t++) {
		uint64_t id = msgid_next(&g, t);
		cr_assert_gt(id, prev);
		cr_assert_eq(msgid_time_ms(id), T0 + 4);
		prev = id;
	}
	/* the clock catches up: back to wall time and sequence 0 */
	uint64_t id = msgid_next(&g, T0 + 5);
	cr_assert_gt(id, prev);
	cr_assert_eq(msgid_time_ms(id), T0 + 5);
	cr_assert_eq(id_seq(id), 0);
}

Test(msgid, clock_stepping_back_keeps_ids_increasing)
{
	struct msgid_gen g;
	msgid_init(&g, 1, 0);
	uint64_t prev = msgid_next(&g, T0 + 1000);
	const uint64_t walls[] = {T0 + 999, T0, T0 + 1000, T0 - 50000, T0 + 1001, T0 + 1001, 0, T0 + 2000};
	for (size_t i = 0; i < sizeof walls / sizeof walls[0]; i++) {
		uint64_t id = msgid_next(&g, walls[i]);
		cr_assert_gt(id, prev, "wall %llu", (unsigned long long)walls[i]);
		prev = id;
	}
	cr_assert_eq(msgid_time_ms(prev), T0 + 2000);
}

Test(msgid, before_epoch_and_far_future)
{
	struct msgid_gen g;
	msgid_init(&g, 1, 1);
	/* a clock before the epoch still gives a non-zero, increasing id */
	uint64_t a = msgid_next(&g, 0);
	cr_assert_neq(a, 0);
	cr_assert_eq(msgid_time_ms(a), MSGID_EPOCH_MS + 1);
	uint64_t b = msgid_next(&g, MSGID_EPOCH_MS);
	cr_assert_gt(b, a);
	/* the last millisecond of the 40-bit range (2058) still round-trips */
	uint64_t last = MSGID_EPOCH_MS + (1ull << 40) - 1;
	uint64_t c = msgid_next(&g, last);
	cr_assert_gt(c, b);
	cr_assert_eq(msgid_time_ms(c), last);
	cr_assert_eq(msgid_node(c), 1);
	/* node 0 thread 0 at the epoch: still non-zero */
	msgid_init(&g, 0, 0);
	cr_assert_neq(msgid_next(&g, MSGID_EPOCH_MS), 0);
}

Test(msgid, time_dominates_across_generators)
{
	struct msgid_gen a, b;
	msgid_init(&a, MSGID_MAX_NODE, MSGID_MAX_THREAD);
	msgid_init(&b, 1, 0);
	uint64_t x = 0;
	for (int i = 0; i < 1023; i++)
		x = msgid_next(&a, T0); /* highest generator, high sequence */
	uint64_t y = msgid_next(&b, T0 + 1);
	cr_assert_gt(y, x, "an id from a later millisecond sorts after");
}

static int cmp_u64(const void *p, const void *q)
{
	uint64_t x = *(const uint64_t *)p, y = *(const uint64_t *)q;
	return x < y ? -1 : x > y;
}

Test(msgid, generators_never_collide)
{
	enum { NG = 6, PER = 40000 };
	const unsigned node[NG] = {1, 1, 2, 2, 63, 1};
	const unsigned thread[NG] = {0, 1, 0, 1, 255, 255};
	struct msgid_gen g[NG];
	for (int i = 0; i < NG; i++)
		msgid_init(&g[i], node[i], thread[i]);
	uint64_t *ids = malloc(sizeof *ids * NG * PER);
	cr_assert_not_null(ids);
	uint64_t last[NG] = {0};
	uint64_t s = 0x9e3779b97f4a7c15ull, wall = T0;
	size_t n = 0;
	for (int k = 0; k < PER; k++) {
		/* a shared clock that mostly stalls (bursts), sometimes jumps or steps back */
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		unsigned r = (unsigned)(s % 1000);
		if (r < 3)
			wall -= 20;
		else if (r < 20)
			wall += 1 + s % 5;
		for (int i = 0; i < NG; i++) {
			uint64_t id = msgid_next(&g[i], wall);
			cr_assert_gt(id, last[i], "generator %d went backwards", i);
			cr_assert_eq(id_gen(id), (node[i] << 8) | thread[i]);
			last[i] = id;
			ids[n++] = id;
		}
	}
	qsort(ids, n, sizeof *ids, cmp_u64);
	for (size_t i = 1; i < n; i++)
		cr_assert_neq(ids[i], ids[i - 1], "duplicate id %#llx", (unsigned long long)ids[i]);
	free(ids);
}

/* msgid_make builds the id a generator makes, and the smallest id of a
 * millisecond (what "older than" compares with). */
Test(msgid, make_matches_the_generator)
{
	struct msgid_gen g;
	msgid_init(&g, 7, 3);
	uint64_t ms = MSGID_EPOCH_MS + 123456789;
	uint64_t id = msgid_next(&g, ms);
	cr_assert_eq(msgid_make(ms, 7, 3, 0), id);
	cr_assert_eq(msgid_node(msgid_make(ms, 42, 0, 9)), 42);
	cr_assert_eq(msgid_time_ms(msgid_make(ms, 1, 2, 3)), ms);
	cr_assert_leq(msgid_make(ms, 0, 0, 0), id);
	cr_assert_gt(msgid_make(ms + 1, 0, 0, 0), msgid_make(ms, 63, 255, 1023));
}
