/* xthread.h: records between the gateway's worker threads, and answers to a
 * sender wherever it lives.
 *
 * A worker reserves records (struct xm_* in gw.h) in a batch per destination
 * thread during an iteration; xt_post() at its end hands each batch over as
 * one pointer with MSG_RING, and the receiver (session_xbatch) frees it. A
 * batch the kernel could not post comes back (UD_XFAIL) and goes in front of
 * what is queued for that thread since.
 *
 * Answering a sender (ACK, ERROR for a message, GROUP_RESULT) has one door:
 * xt_answer() with the sender's thread and connection; session_answer()
 * builds the frame on the sender's own thread.
 *
 * Thread: the owning worker's only (each worker has its own batches).
 */
#ifndef GATEWAY_XTHREAD_H
#define GATEWAY_XTHREAD_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* Reserve a record of `size` bytes (rounded up to 8) of `type` in the batch
 * for thread dst; the caller fills it after the header. NULL on OOM (logged). */
void *xm_reserve(struct worker *w, unsigned dst, unsigned type, size_t size);

/* Post every batch built this iteration (end of the iteration). */
void xt_post(struct worker *w);

/* A batch of ours that MSG_RING could not post (UD_XFAIL): queue it again. */
void xt_on_fail(struct worker *w, const struct io_uring_cqe *cqe);

/* Answer the sender of a message (what XR_SEND: ref = cmid, id = smid, ack)
 * or group request (XR_GROUP: ref = request id, id = group id) on thread
 * othread, connection (slot, gen); status 0 or a proto_err code. Dropped
 * when the connection is gone by then. */
void xt_answer(struct worker *w, unsigned othread, uint32_t slot, uint32_t gen, uint8_t what, uint64_t ref,
	       uint64_t id, unsigned status, uint8_t ack);

#endif
