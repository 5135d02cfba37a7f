/* xthread.c: cross-thread batches and answers to senders (xthread.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"
#include "gateway/xthread.h"
#include "runtime/log.h"

void *xm_reserve(struct worker *w, unsigned dst, unsigned type, size_t size)
{
	size = (size + 7) & ~(size_t)7;
	struct xbatch *b = w->xout[dst];
	if (!b || b->len + size > b->cap) {
		size_t used = b ? b->len : 0, cap = b ? (size_t)b->cap * 2 : 16384;
		while (cap < used + size)
			cap *= 2;
		struct xbatch *nb = aligned_alloc(64, (sizeof *nb + cap + 63) & ~(size_t)63);
		if (!nb) {
			log_rl(LOG_ERROR, "out of memory for a cross-thread batch");
			return NULL;
		}
		if (b) {
			memcpy(nb, b, sizeof *b + b->len);
			free(b);
		} else {
			nb->len = 0;
			nb->src = (uint16_t)w->id;
			nb->dst = (uint16_t)dst;
		}
		nb->cap = (uint32_t)cap;
		w->xout[dst] = b = nb;
	}
	struct xm_hdr *h = (struct xm_hdr *)(b->data + b->len);
	h->type = (uint16_t)type;
	h->size = (uint32_t)size;
	b->len += (uint32_t)size;
	CNT_ADD(w, xrecords_out, 1);
	return h;
}

void xt_post(struct worker *w)
{
	for (unsigned d = 0; d < w->gw->nthreads; d++) {
		struct xbatch *b = w->xout[d];
		if (!b)
			continue;
		w->xout[d] = NULL;
		struct io_uring_sqe *sqe = ring_sqe(&w->ring);
		ring_prep_msg_ptr(sqe, w->gw->ring_fds[d], UD_XIN, b, 0, UD_XFAIL);
		__atomic_store_n(&w->xposted, w->xposted + 1, __ATOMIC_RELAXED);
		CNT_ADD(w, xbatches_out, 1);
	}
}

void xt_on_fail(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct xbatch *b = ud_pointer(cqe->user_data);
	log_rl(LOG_WARN, "posting a batch to thread %u failed (%s); retrying", b->dst, strerror(-cqe->res));
	/* put its records back in front of whatever is queued for that thread */
	struct xbatch *cur = w->xout[b->dst];
	if (cur) {
		uint8_t *p = xm_reserve(w, b->dst, 0, b->len);
		if (p) {
			cur = w->xout[b->dst];
			memmove(cur->data + b->len, cur->data, cur->len - b->len);
			memcpy(cur->data, b->data, b->len);
		}
		free(b);
	} else {
		w->xout[b->dst] = b;
	}
}

void xt_answer(struct worker *w, unsigned othread, uint32_t slot, uint32_t gen, uint8_t what, uint64_t ref,
	       uint64_t id, unsigned status, uint8_t ack)
{
	if (othread == w->id) {
		session_answer(w, slot, gen, what, ref, id, status, ack);
		return;
	}
	if (othread >= w->gw->nthreads)
		return;
	struct xm_result *r = xm_reserve(w, othread, XM_RESULT, sizeof *r);
	if (!r)
		return;
	r->cmid = ref;
	r->smid = id;
	r->oslot = slot;
	r->ogen = gen;
	r->status = status;
	r->what = what;
	r->ack = ack;
}
