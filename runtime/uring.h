/* uring.h: io_uring set-up and the small helpers every loop here shares.
 *
 * - ring_init(): one ring per thread, SINGLE_ISSUER | DEFER_TASKRUN (the
 *   kernel runs completions only when this thread enters the ring, no IPIs),
 *   falling back to COOP_TASKRUN, then to plain, on older kernels.
 * - user_data: every SQE carries (kind, generation, slot) packed by ud_make(),
 *   or (kind, pointer) by ud_ptr(); a completion for a slot reused since (a
 *   stale generation) is recognised and dropped by the caller.
 * - bufring: a provided-buffer ring (multishot recv takes buffers from it, so
 *   an idle connection owns none). A buffer belongs to the kernel until a CQE
 *   names it, then to the caller until bufring_put() gives it back; puts are
 *   published in one batch by bufring_publish() at the end of an iteration.
 * - MSG_RING helpers to post a pointer to another thread's ring, or move a
 *   direct descriptor into it.
 * All of it is per thread: a ring and its bufring are used by their thread only.
 */
#ifndef RUNTIME_URING_H
#define RUNTIME_URING_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/connref.h"

/* ---- user_data ------------------------------------------------------------
 * bits 0..3 kind, 4..31 generation (runtime/connref.h's, 28 bits), 32..63
 * slot; pointer kinds keep the pointer (16-byte aligned) in bits 4..63. */
#define UD_KIND_BITS 4u
#define UD_GEN_MASK CONNREF_GEN_MASK
_Static_assert(UD_KIND_BITS + CONNREF_GEN_BITS <= 32, "kind and generation share the low 32 bits of user_data");

static inline uint64_t ud_make(unsigned kind, uint32_t gen, uint32_t slot)
{
	return (uint64_t)kind | ((uint64_t)(gen & UD_GEN_MASK) << UD_KIND_BITS) | ((uint64_t)slot << 32);
}
static inline uint64_t ud_ptr(unsigned kind, const void *p)
{
	return (uint64_t)(uintptr_t)p | kind;
}
static inline unsigned ud_kind(uint64_t ud)
{
	return (unsigned)(ud & 0xf);
}
static inline uint32_t ud_gen(uint64_t ud)
{
	return (uint32_t)(ud >> UD_KIND_BITS) & UD_GEN_MASK;
}
static inline uint32_t ud_slot(uint64_t ud)
{
	return (uint32_t)(ud >> 32);
}
static inline void *ud_pointer(uint64_t ud)
{
	return (void *)(uintptr_t)(ud & ~(uint64_t)0xf);
}

/* ---- ring -------------------------------------------------------------------*/

/* Create the calling thread's ring with sq_entries SQEs and cq_entries CQEs.
 * *mode is set to a short description of the flags that took. Returns 0 or
 * -errno. */
int ring_init(struct io_uring *ring, unsigned sq_entries, unsigned cq_entries, const char **mode);

/* Whether completions are waiting in the kernel that no CQE shows yet:
 * deferred task work (IORING_SQ_TASKRUN) or CQ overflow. Since Linux 6.13 an
 * io_uring_enter runs at most ~20 deferred completions per pass on a
 * DEFER_TASKRUN ring, so a busy loop calls io_uring_get_events() while this
 * says so (bounded), to handle a large batch per iteration before flushing. */
int ring_work_pending(const struct io_uring *ring);

/* Hand every ready completion to fn(arg, cqe), fetching more from the kernel
 * while ring_work_pending() says some wait (the 6.13 cap above), until about
 * max were handled. Returns how many. fn may queue SQEs; it gets a copy of
 * the CQE, whose ring slot is already handed back. */
unsigned ring_dispatch(struct io_uring *ring, unsigned max, void (*fn)(void *arg, const struct io_uring_cqe *cqe),
		       void *arg);

/* An SQE, submitting queued ones first if the SQ is full. Never NULL: while
 * the kernel refuses submissions (overflowed completions it cannot post, no
 * memory) it retries, logging (rate-limited), so a caller never has to undo
 * half an operation. */
struct io_uring_sqe *ring_sqe(struct io_uring *ring);

/* Post a pointer to another ring: the target gets a CQE with
 * user_data = ud_ptr(kind, p) and res = val. No CQE comes back here on success
 * (CQE_SKIP_SUCCESS); a failure comes back with user_data = ud_ptr(fail_kind, p). */
void ring_prep_msg_ptr(struct io_uring_sqe *sqe, int target_fd, unsigned kind, const void *p, int32_t val,
		       unsigned fail_kind);

/* Move direct descriptor src_slot into the target ring's file table (a free
 * slot the kernel picks). The target gets a CQE with user_data = target_ud and
 * res = the new slot (or -errno); this ring gets one with user_data = ud and
 * res 0 or -errno (e.g. -ENFILE when the target table is full). The source
 * slot stays installed here until the caller closes it. */
void ring_prep_send_fd(struct io_uring_sqe *sqe, int target_fd, uint32_t src_slot, uint64_t target_ud,
		       uint64_t ud);

/* ---- provided buffers ---------------------------------------------------- */

struct bufring {
	struct io_uring_buf_ring *br;
	uint8_t *base;    /* entries * size bytes */
	size_t ring_bytes;
	unsigned entries; /* power of two */
	unsigned size;    /* bytes per buffer */
	unsigned pending; /* buffers put since the last publish */
	uint16_t bgid;
};

/* Register a ring of `entries` (power of two, <= 32768) buffers of `size`
 * bytes as buffer group bgid. The memory is mmap'ed, so buffers never used
 * cost no RSS. Returns 0 or -errno. */
int bufring_setup(struct io_uring *ring, struct bufring *b, unsigned entries, unsigned size, uint16_t bgid);
void bufring_free(struct io_uring *ring, struct bufring *b);

static inline uint8_t *bufring_buf(const struct bufring *b, unsigned bid)
{
	return b->base + (size_t)bid * b->size;
}

/* Give buffer bid back (visible to the kernel at the next publish). */
static inline void bufring_put(struct bufring *b, unsigned bid)
{
	io_uring_buf_ring_add(b->br, bufring_buf(b, bid), b->size, (unsigned short)bid,
			      io_uring_buf_ring_mask(b->entries), (int)b->pending);
	b->pending++;
}

static inline void bufring_publish(struct bufring *b)
{
	if (b->pending) {
		io_uring_buf_ring_advance(b->br, (int)b->pending);
		b->pending = 0;
	}
}

/* Round n up to a power of two within [lo, hi]. */
unsigned pow2_clamp(unsigned long n, unsigned lo, unsigned hi);

#endif
