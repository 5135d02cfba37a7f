/* carry.h: the partial frame a connection carries between receives.
 *
 * Frames are parsed in place from receive buffers; only a frame cut by the
 * end of a buffer is copied, into a carry sized to that frame (once its
 * length prefix is known), and freed as soon as the frame completes. Shared
 * by the gateway (client frames) and the loadgen (server frames). One owner
 * thread; the carry belongs to the connection holding the pointer.
 */
#ifndef RUNTIME_CARRY_H
#define RUNTIME_CARRY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/client.h"

struct carry {
	uint32_t len, cap, need; /* need: bytes the parser asked for (the whole frame once known) */
	uint8_t data[];
};

#define CARRY_NOMEM (-1000L) /* distinct from every -proto_err */

/* Move input from (*p, *n) into the carried frame *cp (non-NULL) and parse
 * it. Returns 1 when the frame is complete: *f holds it, its views point into
 * (*cp)->data, so handle it, then carry_free(); 0 when all input went in and
 * the frame is still incomplete; -code for a malformed frame (enum
 * proto_err), or CARRY_NOMEM. */
long carry_feed(struct carry **cp, const uint8_t **p, size_t *n, enum proto_dir dir, struct proto_frame *f);

/* Start carrying the n bytes at p: what a parser left after PROTO_NEED_MORE
 * with f->need = need. Returns 0 or CARRY_NOMEM. */
long carry_start(struct carry **cp, const uint8_t *p, size_t n, uint32_t need);

/* Free the carry (and set *cp to NULL). */
void carry_free(struct carry **cp);

#endif
