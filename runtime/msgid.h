/* msgid.h: server message ids, unique across a cluster and increasing in
 * time per generator (one generator per gateway or backend thread).
 *
 *   bits 63..24  milliseconds since 2024-01-01 (40 bits: until 2058)
 *   bits 23..13  node id (11 bits, 1..2047): where the id was made
 *   bits 12..0   the node's own: thread << s | sequence, where the thread
 *                takes as few bits as the node's thread count needs
 *                (1 thread: none; 2: one; 256: eight) and the sequence
 *                within the millisecond the s = 13 - those bits left
 *                (a 2-thread node: 4,096 per thread per ms; 256 threads:
 *                32 each, 8 M/s for the node)
 *
 * More ids in one millisecond than the sequence holds borrow the next
 * millisecond, so ids stay unique and increasing under any load; the clock
 * catches up when the burst ends. Node ids must be unique across gateways
 * and backends; a node's threads share its 13 low bits. Others read bits
 * 23..13 (msgid_node) and, of a backend's ids, its thread number
 * (msgid_thread with the backend's thread count from the cluster file: a
 * receipt goes to the node thread that stored the message). This is layout 3 (dist protocol version 3, PROTOCOL.md
 * 4.3); layout 2 had 6 node bits and 8 thread bits for every node.
 */
#ifndef RUNTIME_MSGID_H
#define RUNTIME_MSGID_H

#include <stdint.h>

#define MSGID_EPOCH_MS 1704067200000ull
#define MSGID_MAX_THREADS 256u /* threads of one node */

/* The layout, once (the top of this file): every function below uses these. */
#define MSGID_MS_SHIFT 24
#define MSGID_NODE_SHIFT 13
#define MSGID_NODE_BITS 11
#define MSGID_MAX_NODE ((1u << MSGID_NODE_BITS) - 1u)
#define MSGID_LOW_MASK ((1u << MSGID_NODE_SHIFT) - 1u)
_Static_assert(MSGID_NODE_SHIFT + MSGID_NODE_BITS == MSGID_MS_SHIFT, "the node id sits right under the time");

struct msgid_gen {
	uint64_t last_ms;
	uint32_t seq, seq_max; /* seq_max: the sequence's mask (2^s - 1) */
	uint32_t base;         /* node << 13 | thread << s */
};

/* Bits a node of `threads` threads gives its thread number (0..8). */
static inline unsigned msgid_thread_bits(unsigned threads)
{
	unsigned b = 0;
	while (b < 8 && (1u << b) < threads)
		b++;
	return b;
}

static inline uint64_t msgid_pack(uint64_t ms, uint32_t low)
{
	return (ms << MSGID_MS_SHIFT) | (low & ((UINT32_C(1) << MSGID_MS_SHIFT) - 1));
}

/* A generator for thread `thread` of a node running `threads` threads
 * (1..MSGID_MAX_THREADS; thread < threads). */
static inline void msgid_init(struct msgid_gen *g, unsigned node, unsigned thread, unsigned threads)
{
	unsigned s = MSGID_NODE_SHIFT - msgid_thread_bits(threads);
	g->last_ms = 0;
	g->seq = 0;
	g->seq_max = (1u << s) - 1;
	g->base = ((node & MSGID_MAX_NODE) << MSGID_NODE_SHIFT) | ((thread << s) & MSGID_LOW_MASK);
}

/* The id with wall-clock millisecond wall_ms, node id `node` and the
 * node's own 13 bits `low`; msgid_make(ms, 0, 0) is the smallest id of
 * that millisecond (a bound for "older than"). */
static inline uint64_t msgid_make(uint64_t wall_ms, unsigned node, unsigned low)
{
	uint64_t ms = wall_ms > MSGID_EPOCH_MS ? wall_ms - MSGID_EPOCH_MS : 0;
	return msgid_pack(ms, ((node & MSGID_MAX_NODE) << MSGID_NODE_SHIFT) | (low & MSGID_LOW_MASK));
}

static inline uint64_t msgid_next(struct msgid_gen *g, uint64_t wall_ms)
{
	uint64_t ms = wall_ms > MSGID_EPOCH_MS ? wall_ms - MSGID_EPOCH_MS : 1;
	if (ms > g->last_ms) {
		g->last_ms = ms;
		g->seq = 0;
	} else if (++g->seq > g->seq_max) {
		g->last_ms++;
		g->seq = 0;
	}
	return msgid_pack(g->last_ms, g->base | g->seq);
}

/* Node id of the generator that made an id. */
static inline uint32_t msgid_node(uint64_t id)
{
	return (uint32_t)(id >> MSGID_NODE_SHIFT) & MSGID_MAX_NODE;
}

/* Thread number of the generator that made an id, on a node of `threads`
 * threads (the one it was made with). */
static inline unsigned msgid_thread(uint64_t id, unsigned threads)
{
	unsigned b = msgid_thread_bits(threads);
	return b ? (unsigned)((id & MSGID_LOW_MASK) >> (MSGID_NODE_SHIFT - b)) : 0;
}

/* Wall-clock milliseconds encoded in an id. */
static inline uint64_t msgid_time_ms(uint64_t id)
{
	return (id >> MSGID_MS_SHIFT) + MSGID_EPOCH_MS;
}

#endif
