/* wheel.h: a hashed timing wheel with O(1) add and delete, for per-thread
 * timers over a large fixed array of objects (one timer per connection).
 *
 * The nodes are embedded in the caller's objects: object i's node is at
 * base + i*stride + offset. Links are index+1 (0 = none) and deadline 0 means
 * "not armed", so a zeroed object array needs no initialisation.
 *
 * Time is in ticks (the caller picks the tick, e.g. 100 ms). A deadline beyond
 * one turn of the wheel waits in its bucket and is skipped until its turn.
 * Not thread-safe: one wheel per thread.
 */
#ifndef RUNTIME_WHEEL_H
#define RUNTIME_WHEEL_H

#include <stddef.h>
#include <stdint.h>

struct wheel_node {
	uint32_t next, prev; /* index + 1 of neighbours in the bucket, 0 = none */
	uint32_t deadline;   /* tick; 0 = not armed */
};

struct wheel {
	uint32_t *heads; /* per bucket: index + 1 of the first node, 0 = empty */
	uint32_t mask;   /* buckets - 1 */
	uint32_t now;    /* last tick processed */
	char *base;
	size_t stride, offset;
	size_t count; /* armed nodes */
	uint32_t *expired;
	size_t expired_cap;
};

/* Set up a wheel of 2^bits buckets over objects at base. now (>= 1) is the
 * current tick. Returns 0, or -ENOMEM. */
int wheel_init(struct wheel *w, unsigned bits, void *base, size_t stride, size_t offset, uint32_t now);
void wheel_free(struct wheel *w);

/* Arm object idx for `deadline` (re-arms if armed). A deadline at or before
 * the current tick fires on the next wheel_advance(). */
void wheel_add(struct wheel *w, uint32_t idx, uint32_t deadline);

/* Disarm object idx; nothing if not armed. */
void wheel_del(struct wheel *w, uint32_t idx);

/* Deadline of idx, 0 if not armed. */
uint32_t wheel_deadline(const struct wheel *w, uint32_t idx);

/* Advance to tick `now` and call fn(arg, idx) for every node whose deadline
 * passed, after disarming it; fn may arm or disarm any node. A node disarmed
 * or re-armed by an earlier callback of the same advance is still called if
 * it was already due (callers check their object's state). Returns the number
 * of callbacks, or -ENOMEM (then the remaining due nodes fire next time). */
long wheel_advance(struct wheel *w, uint32_t now, void (*fn)(void *arg, uint32_t idx), void *arg);

#endif
