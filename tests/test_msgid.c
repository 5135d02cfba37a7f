/* test_msgid.c: criterion unit tests of server message ids (runtime/msgid.h):
 * layout (the node id at a fixed place, the node's threads sharing the low
 * bits by its thread count), strict increase (including bursts that borrow
 * future milliseconds and a clock that steps back), uniqueness across
 * generators, and recovering the time.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/msgid.h"

#define T0 1767225600123ull /* 2026-01-01T00:00:00.123Z */

/* The thread and sequence of an id made by a node of `threads` threads. */
static unsigned id_thread(uint64_t id, unsigned threads)
{
	return (unsigned)(id & MSGID_LOW_MASK) >> (MSGID_NODE_SHIFT - msgid_thread_bits(threads));
}

static unsigned id_seq(uint64_t id, unsigned threads)
{
	return (unsigned)(id & MSGID_LOW_MASK) & ((1u << (MSGID_NODE_SHIFT - msgid_thread_bits(threads))) - 1);
}

Test(msgid, layout_and_time)
{
	struct msgid_gen g;
	msgid_init(&g, 5, 17, 32); /* 5 thread bits, 8 sequence bits */
	uint64_t id = msgid_next(&g, T0);
	cr_assert_eq(msgid_time_ms(id), T0);
	cr_assert_eq(id >> 24, T0 - MSGID_EPOCH_MS);
	cr_assert_eq(msgid_node(id), 5);
	cr_assert_eq((id >> 13) & 0x7ff, 5, "the node id in bits 23..13");
	cr_assert_eq(id & 0x1fff, 17u << 8, "thread 17 above an 8-bit sequence");
	cr_assert_eq(id_thread(id, 32), 17);
	cr_assert_eq(id_seq(id, 32), 0);
	uint64_t id2 = msgid_next(&g, T0);
	cr_assert_eq(id2, id + 1, "same millisecond: the sequence counts up");
	cr_assert_eq(id_seq(id2, 32), 1);
	uint64_t id3 = msgid_next(&g, T0 + 7);
	cr_assert_eq(msgid_time_ms(id3), T0 + 7);
	cr_assert_eq(id_seq(id3, 32), 0, "a new millisecond restarts the sequence");
}

Test(msgid, thread_bits_follow_the_thread_count)
{
	const unsigned threads[] = {1, 2, 3, 4, 5, 53, 128, 129, 256};
	const unsigned bits[] = {0, 1, 2, 2, 3, 6, 7, 8, 8};
	for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++)
		cr_assert_eq(msgid_thread_bits(threads[i]), bits[i], "%u threads", threads[i]);
	cr_assert_eq(MSGID_MAX_NODE, 2047u);
	cr_assert_geq(MSGID_MAX_NODE, 1024u, "room for a cluster of 1,024 nodes");
}

Test(msgid, node_and_thread_survive_every_count)
{
	const unsigned nodes[] = {1, 2, 63, 64, 1024, MSGID_MAX_NODE};
	const unsigned counts[] = {1, 2, 53, 128, 256};
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
		for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++) {
			const unsigned ths[] = {0, counts[j] / 2, counts[j] - 1};
			for (size_t t = 0; t < 3; t++) {
				struct msgid_gen g;
				msgid_init(&g, nodes[i], ths[t], counts[j]);
				/* through a borrow: the sequence wraps, node and thread untouched */
				for (uint32_t k = 0; k < g.seq_max + 40; k++) {
					uint64_t id = msgid_next(&g, T0);
					cr_assert_eq(msgid_node(id), nodes[i]);
					cr_assert_eq(id_thread(id, counts[j]), ths[t], "node %u, thread %u of %u", nodes[i],
						     ths[t], counts[j]);
				}
			}
		}
	/* maxima do not spill into the time or the sequence */
	struct msgid_gen g;
	msgid_init(&g, MSGID_MAX_NODE, 255, 256);
	uint64_t id = msgid_next(&g, MSGID_EPOCH_MS + 1);
	cr_assert_eq(id, (1ull << 24) | (2047ull << 13) | (255ull << 5));
}

Test(msgid, burst_of_5000_in_one_millisecond_borrows)
{
	struct msgid_gen g;
	msgid_init(&g, 3, 9, 16); /* 4 thread bits: 512 per millisecond */
	uint64_t prev = 0;
	for (unsigned i = 0; i < 5000; i++) {
		uint64_t id = msgid_next(&g, T0);
		cr_assert_gt(id, prev, "id %u not above the previous one", i);
		cr_assert_eq(msgid_node(id), 3);
		cr_assert_eq(id_thread(id, 16), 9);
		/* 512 per millisecond, then the next millisecond is borrowed */
		cr_assert_eq(msgid_time_ms(id), T0 + i / 512, "id %u: time %llu", i, (unsigned long long)msgid_time_ms(id));
		cr_assert_eq(id_seq(id, 16), i % 512, "id %u: seq %u", i, id_seq(id, 16));
		prev = id;
	}
	/* the clock moves on, but not past the borrowed time: still increasing */
	for (uint64_t t = T0 + 1; t <= T0 + 9; t++) {
		uint64_t id = msgid_next(&g, t);
		cr_assert_gt(id, prev);
		cr_assert_eq(msgid_time_ms(id), T0 + 9);
		prev = id;
	}
	/* the clock catches up: back to wall time and sequence 0 */
	uint64_t id = msgid_next(&g, T0 + 10);
	cr_assert_gt(id, prev);
	cr_assert_eq(msgid_time_ms(id), T0 + 10);
	cr_assert_eq(id_seq(id, 16), 0);
}

Test(msgid, clock_stepping_back_keeps_ids_increasing)
{
	struct msgid_gen g;
	msgid_init(&g, 1, 0, 1);
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
	msgid_init(&g, 1, 1, 2);
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
	msgid_init(&g, 0, 0, 1);
	cr_assert_neq(msgid_next(&g, MSGID_EPOCH_MS), 0);
}

Test(msgid, time_dominates_across_generators)
{
	struct msgid_gen a, b;
	msgid_init(&a, MSGID_MAX_NODE, 255, 256);
	msgid_init(&b, 1, 0, 1);
	uint64_t x = 0;
	for (uint32_t i = 0; i <= a.seq_max; i++)
		x = msgid_next(&a, T0); /* highest node and thread, highest sequence */
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
	/* two threads of a node, a one-thread node, a 256-thread node's first
	 * and last thread, a 53-thread node's last */
	const unsigned node[NG] = {1, 1, 2, MSGID_MAX_NODE, MSGID_MAX_NODE, 64};
	const unsigned thread[NG] = {0, 1, 0, 0, 255, 52}, threads[NG] = {2, 2, 1, 256, 256, 53};
	struct msgid_gen g[NG];
	for (int i = 0; i < NG; i++)
		msgid_init(&g[i], node[i], thread[i], threads[i]);
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
			cr_assert_eq(msgid_node(id), node[i]);
			cr_assert_eq(id_thread(id, threads[i]), thread[i]);
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
	msgid_init(&g, 7, 3, 4); /* 2 thread bits, 11 sequence bits */
	uint64_t ms = MSGID_EPOCH_MS + 123456789;
	uint64_t id = msgid_next(&g, ms);
	cr_assert_eq(msgid_make(ms, 7, 3u << 11), id);
	cr_assert_eq(msgid_node(msgid_make(ms, 1500, 9)), 1500);
	cr_assert_eq(msgid_time_ms(msgid_make(ms, 1, 3)), ms);
	cr_assert_leq(msgid_make(ms, 0, 0), id);
	cr_assert_gt(msgid_make(ms + 1, 0, 0), msgid_make(ms, MSGID_MAX_NODE, MSGID_LOW_MASK));
}
