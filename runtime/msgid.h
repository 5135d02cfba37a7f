/* msgid.h: server message ids, unique across a cluster and increasing in
 * time per generator (one generator per gateway or backend thread).
 *
 *   bits 63..24  milliseconds since 2024-01-01 (40 bits: until 2058)
 *   bits 23..10  generator: node id (6 bits, 1..63) << 8 | thread (8 bits)
 *   bits  9..0   sequence within the millisecond (1024)
 *
 * More than 1024 ids in one millisecond borrow the next millisecond, so ids
 * stay unique and increasing under any load; the clock catches up when the
 * burst ends. Node ids must be unique across gateways and backends.
 */
#ifndef RUNTIME_MSGID_H
#define RUNTIME_MSGID_H

#include <stdint.h>

#define MSGID_EPOCH_MS 1704067200000ull
#define MSGID_MAX_NODE 63u
#define MSGID_MAX_THREAD 255u

struct msgid_gen {
	uint64_t last_ms;
	uint32_t seq;
	uint32_t gen; /* 14-bit generator */
};

/* The layout, once (the top of this file): every function below uses these. */
#define MSGID_MS_SHIFT 24
#define MSGID_GEN_SHIFT 10
#define MSGID_THREAD_BITS 8
#define MSGID_NODE_MASK 0x3fu
#define MSGID_THREAD_MASK 0xffu
#define MSGID_GEN_MASK 0x3fffu
#define MSGID_SEQ_MASK 0x3ffu

static inline uint64_t msgid_pack(uint64_t ms, uint32_t gen, uint32_t seq)
{
	return (ms << MSGID_MS_SHIFT) | ((uint64_t)(gen & MSGID_GEN_MASK) << MSGID_GEN_SHIFT) | (seq & MSGID_SEQ_MASK);
}

static inline uint32_t msgid_gen_of(unsigned node, unsigned thread)
{
	return ((node & MSGID_NODE_MASK) << MSGID_THREAD_BITS) | (thread & MSGID_THREAD_MASK);
}

static inline void msgid_init(struct msgid_gen *g, unsigned node, unsigned thread)
{
	g->last_ms = 0;
	g->seq = 0;
	g->gen = msgid_gen_of(node, thread);
}

/* The id generator (node, thread) makes as number seq of wall-clock
 * millisecond wall_ms; msgid_make(ms, 0, 0, 0) is the smallest id of that
 * millisecond (a bound for "older than"). */
static inline uint64_t msgid_make(uint64_t wall_ms, unsigned node, unsigned thread, unsigned seq)
{
	uint64_t ms = wall_ms > MSGID_EPOCH_MS ? wall_ms - MSGID_EPOCH_MS : 0;
	return msgid_pack(ms, msgid_gen_of(node, thread), seq);
}

static inline uint64_t msgid_next(struct msgid_gen *g, uint64_t wall_ms)
{
	uint64_t ms = wall_ms > MSGID_EPOCH_MS ? wall_ms - MSGID_EPOCH_MS : 1;
	if (ms > g->last_ms) {
		g->last_ms = ms;
		g->seq = 0;
	} else if (++g->seq == MSGID_SEQ_MASK + 1) {
		g->last_ms++;
		g->seq = 0;
	}
	return msgid_pack(g->last_ms, g->gen, g->seq);
}

/* Node id of the generator that made an id. */
static inline uint32_t msgid_node(uint64_t id)
{
	return (uint32_t)((id >> (MSGID_GEN_SHIFT + MSGID_THREAD_BITS)) & MSGID_NODE_MASK);
}

/* Wall-clock milliseconds encoded in an id. */
static inline uint64_t msgid_time_ms(uint64_t id)
{
	return (id >> MSGID_MS_SHIFT) + MSGID_EPOCH_MS;
}

#endif
