/* pendq.h: the requests a gateway thread sent on one dist link and still
 * waits an answer for (STORE_ACK for a message, GROUP_RESULT for a group
 * operation), in the order they were sent.
 *
 * A backend answers the requests of one link in the order it received them
 * (it handles a link's frames in order and answers each at once), so an
 * answer normally matches the oldest entry. One that matches a later entry
 * means the answers of the entries before it were lost (the backend could
 * not queue them): pendq_answered() hands those back to be answered
 * try_again now, rather than at the timeout after their client may already
 * have resent. An answer that matches nothing (its entry timed out) is
 * recognised in O(1) by a count per key, never by walking the queue.
 *
 * Memory: a ring that grows by doubling (the link's queue bound caps how
 * many requests can wait) and a hash of keys. One owner thread.
 */
#ifndef GATEWAY_PENDQ_H
#define GATEWAY_PENDQ_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/u64map.h"

struct gw_pend {
	uint64_t oconn, ref; /* the sender's connection, its cmid or request id */
	uint32_t othread, tick;
	uint8_t what; /* enum xr_what */
	uint64_t t0_ns; /* when the request was queued to the backend */
};

struct gw_pendq {
	struct gw_pend *v;
	size_t head, len, cap; /* ring */
	struct u64map keys;    /* key hash -> entries with that hash in the ring */
};

/* 0 or -1 (out of memory). */
int pendq_init(struct gw_pendq *q);
void pendq_free(struct gw_pendq *q);

/* Append; 0 or -1 (out of memory: the request then waits unanswered until
 * its link is lost). */
int pendq_push(struct gw_pendq *q, const struct gw_pend *p);

/* The oldest entry, or NULL. */
const struct gw_pend *pendq_oldest(const struct gw_pendq *q);

/* Drop the oldest entry. */
void pendq_pop(struct gw_pendq *q);

/* An answer for (othread, oconn, ref) arrived. Returns 0 when no entry waits
 * for it (nothing changes); else removes it (a copy in *hit when hit is not
 * NULL), and moves the entries older than it (their answers were lost) to
 * lost[0..*nlost) (at most max; any beyond stay for the timeout), and
 * returns 1. */
int pendq_answered(struct gw_pendq *q, uint32_t othread, uint64_t oconn, uint64_t ref, struct gw_pend *hit,
		   struct gw_pend *lost, size_t max, size_t *nlost);

#endif
