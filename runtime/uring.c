/* uring.c: see uring.h. */
#include "runtime/uring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "runtime/log.h"

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

int ring_init(struct io_uring *ring, unsigned sq_entries, unsigned cq_entries, const char **mode)
{
	static const struct {
		unsigned flags;
		const char *name;
	} tries[] = {
		{IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		 "single_issuer+defer_taskrun"},
		{IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, "coop_taskrun"},
		{0, "plain"},
	};
	int ret = -EINVAL;
	for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = tries[i].flags | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
		p.cq_entries = cq_entries;
		ret = io_uring_queue_init_params(sq_entries, ring, &p);
		if (ret == 0) {
			if (mode)
				*mode = tries[i].name;
			return 0;
		}
		if (ret != -EINVAL)
			return ret;
	}
	return ret;
}

int ring_work_pending(const struct io_uring *ring)
{
	return (IO_URING_READ_ONCE(*ring->sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

unsigned ring_dispatch(struct io_uring *ring, unsigned max, void (*fn)(void *arg, const struct io_uring_cqe *cqe),
		       void *arg)
{
	unsigned total = 0;
	for (int pass = 0; pass < 64; pass++) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(ring, head, cqe)
		{
			/* each slot is handed back before its handler runs, so a handler
			 * that must submit (ring_sqe) never waits on a full CQ that only
			 * this loop could drain */
			struct io_uring_cqe c = *cqe;
			io_uring_cq_advance(ring, 1);
			fn(arg, &c);
			n++;
		}
		total += n;
		if (total >= max || !ring_work_pending(ring))
			break;
		io_uring_get_events(ring);
	}
	return total;
}

struct io_uring_sqe *ring_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	for (unsigned tries = 0; !sqe; tries++) {
		/* The SQ is full: submit what is queued. The kernel may refuse for a
		 * moment (-EBUSY with completions it cannot post, -EAGAIN without
		 * memory): let it flush overflowed completions and try again, a
		 * little slower each time. The caller never gets NULL: every caller
		 * would otherwise have to undo what it was doing. */
		int r = io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
		if (sqe)
			break;
		if (r < 0 && tries % 1000 == 0)
			log_rl(LOG_ERROR, "io_uring_submit: %s; retrying", strerror(-r));
		io_uring_get_events(ring);
		if (tries > 10) {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
	}
	return sqe;
}

void ring_prep_msg_ptr(struct io_uring_sqe *sqe, int target_fd, unsigned kind, const void *p, int32_t val,
		       unsigned fail_kind)
{
	io_uring_prep_msg_ring(sqe, target_fd, (unsigned)val, ud_ptr(kind, p), 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	sqe->user_data = ud_ptr(fail_kind, p);
}

void ring_prep_send_fd(struct io_uring_sqe *sqe, int target_fd, uint32_t src_slot, uint64_t target_ud, uint64_t ud)
{
	/* liburing 2.3 has no helper for IORING_MSG_SEND_FD (added in 2.4) */
	io_uring_prep_rw(IORING_OP_MSG_RING, sqe, target_fd, NULL, 0, target_ud);
	sqe->addr = IORING_MSG_SEND_FD;
	sqe->addr3 = src_slot;
	sqe->file_index = IORING_FILE_INDEX_ALLOC; /* raw value: the kernel picks a free slot */
	sqe->user_data = ud;
}

int bufring_setup(struct io_uring *ring, struct bufring *b, unsigned entries, unsigned size, uint16_t bgid)
{
	memset(b, 0, sizeof *b);
	if (entries == 0 || (entries & (entries - 1)) || entries > 32768)
		return -EINVAL;
	b->ring_bytes = (size_t)entries * sizeof(struct io_uring_buf);
	void *r = mmap(NULL, b->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		return -errno;
	void *base = mmap(NULL, (size_t)entries * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED) {
		int e = -errno;
		munmap(r, b->ring_bytes);
		return e;
	}
	b->br = r;
	b->base = base;
	b->entries = entries;
	b->size = size;
	b->bgid = bgid;
	io_uring_buf_ring_init(b->br);
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof reg);
	reg.ring_addr = (unsigned long)r;
	reg.ring_entries = entries;
	reg.bgid = bgid;
	int ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret) {
		munmap(base, (size_t)entries * size);
		munmap(r, b->ring_bytes);
		memset(b, 0, sizeof *b);
		return ret;
	}
	for (unsigned i = 0; i < entries; i++)
		bufring_put(b, i);
	bufring_publish(b);
	return 0;
}

void bufring_free(struct io_uring *ring, struct bufring *b)
{
	if (!b->br)
		return;
	io_uring_unregister_buf_ring(ring, b->bgid);
	munmap(b->base, (size_t)b->entries * b->size);
	munmap(b->br, b->ring_bytes);
	memset(b, 0, sizeof *b);
}

unsigned pow2_clamp(unsigned long n, unsigned lo, unsigned hi)
{
	unsigned v = lo;
	while (v < n && v < hi)
		v <<= 1;
	return v > hi ? hi : v;
}
