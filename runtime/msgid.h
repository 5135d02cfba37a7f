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

/* The layout, once: ms since the epoch, the 14-bit generator, the sequence. */
static inline uint64_t msgid_pack(uint64_t ms, uint32_t gen, uint32_t seq)
{
	return (ms << 24) | ((uint64_t)(gen & 0x3fffu) << 10) | (seq & 0x3ffu);
}

static inline uint32_t msgid_gen_of(unsigned node, unsigned thread)
{
	return ((node & 0x3fu) << 8) | (thread & 0xffu);
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
	} else if (++g->seq == 1024) {
		g->last_ms++;
		g->seq = 0;
	}
	return msgid_pack(g->last_ms, g->gen, g->seq);
}

/* Node id of the generator that made an id. */
static inline uint32_t msgid_node(uint64_t id)
{
	return (uint32_t)((id >> 18) & 0x3f);
}

/* Wall-clock milliseconds encoded in an id. */
static inline uint64_t msgid_time_ms(uint64_t id)
{
	return (id >> 24) + MSGID_EPOCH_MS;
}

#endif
