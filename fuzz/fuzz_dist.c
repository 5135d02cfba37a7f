/* fuzz_dist.c: libFuzzer target for the dist link format (proto/dist.c).
 *
 * The input is read as a stream of top-level frames. For each that parses:
 *   - size within the input, equal to f.size;
 *   - a non-BATCH frame re-encodes with dist_encode() to exactly its bytes
 *     (the encoding is canonical) and that encoding parses again;
 *   - a BATCH is walked with dist_batch_next(): every inner frame has a type
 *     allowed inside a batch and re-encodes to its own bytes; when all inner
 *     frames are valid, rebuilding the batch with dist_batch_init/add/finish
 *     and the same seq gives back the whole frame byte for byte;
 *   - strict prefixes are NEED_MORE with need in (k, size].
 * Aborts on any breach. Built by build.ninja (fuzzcc) with ASan and UBSan.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dist.h"
#include "fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint8_t out[DIST_MAX_INNER + 64];
static uint8_t canary[DIST_MAX_INNER + 64];

static int allowed_inner(uint8_t t)
{
	return (t >= DIST_ROUTE && t <= DIST_CREDIT) || t == DIST_GROUP_OP || t == DIST_GROUP_RESULT ||
	       t == DIST_KICK || t == DIST_RECEIPT_ACK || t == DIST_HANDOFF || t == DIST_HANDOFF_ACK;
}

/* Re-encode one parsed frame (top-level or inner) and compare. */
static void check_reencode(const struct dist_frame *f, const uint8_t *frame, size_t n)
{
	CHECK(f->size == n);
	size_t m = dist_encode(f, out, sizeof out);
	CHECK(m == n);
	CHECK(memcmp(out, frame, n) == 0);
	/* one byte short: the size comes back and nothing is written */
	memset(canary, 0xa5, n);
	CHECK(dist_encode(f, canary, n - 1) == n);
	for (size_t k = 0; k < n; k++)
		CHECK(canary[k] == 0xa5);
	if (f->type == DIST_GROUP_OP) {
		const uint8_t *pos = f->group_op.members.p;
		uint64_t u;
		uint32_t cnt = 0;
		while (proto_members_next(&f->group_op.members, &pos, &u)) {
			CHECK(u != 0);
			cnt++;
		}
		CHECK(cnt == f->group_op.count);
	}
}

static void check_batch(const struct dist_frame *bf, const uint8_t *frame, size_t n)
{
	struct dist_iter it;
	struct dist_frame in;
	dist_batch_iter(bf, &it);
	uint32_t seen = 0;
	int r;
	while ((r = dist_batch_next(&it, &in)) == 1) {
		CHECK(allowed_inner(in.type));
		CHECK(in.size <= DIST_MAX_INNER + 3);
		check_reencode(&in, it.p - in.size, in.size);
		seen++;
	}
	/* dist_parse checked the framing, so only field errors remain */
	CHECK(r == 0 || r == -PROTO_E_BAD_FIELD);
	if (r != 0)
		return;
	CHECK(seen == bf->batch.count);
	CHECK(it.p == bf->batch.frames.p + bf->batch.frames.len);

	/* All valid: the in-place builder must reproduce the frame exactly. The
	 * builder keeps 16 bytes spare under DIST_MAX_FRAME, so a batch within
	 * that of the limit may be one it declines to build. */
	if (bf->batch.frames.len > DIST_MAX_FRAME - 16)
		return;
	size_t cap = DIST_BATCH_HEADROOM + bf->batch.frames.len;
	uint8_t *buf = malloc(cap);
	CHECK(buf != NULL);
	struct dist_batch b;
	dist_batch_init(&b, buf, cap);
	dist_batch_iter(bf, &it);
	while (dist_batch_next(&it, &in) == 1)
		CHECK(dist_batch_add(&b, &in) == 0);
	CHECK(b.count == bf->batch.count && b.len == bf->batch.frames.len);
	size_t bsize;
	uint8_t *start = dist_batch_finish(&b, bf->batch.seq, &bsize);
	CHECK(bsize == n);
	CHECK(memcmp(start, frame, n) == 0);
	CHECK(start + bsize == buf + cap);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct dist_frame f;
		size_t left = size - off;
		long r = dist_parse(data + off, left, &f);
		if (r == PROTO_NEED_MORE) {
			CHECK(f.need > left);
			break;
		}
		if (r < 0) {
			CHECK(r == -PROTO_E_BAD_FRAME || r == -PROTO_E_TOO_BIG || r == -PROTO_E_BAD_TYPE ||
			      r == -PROTO_E_BAD_FIELD);
			break;
		}
		size_t n = (size_t)r;
		CHECK(n <= left && f.size == n);
		if (f.type == DIST_BATCH) {
			check_batch(&f, data + off, n);
		} else {
			CHECK(f.type == DIST_HELLO || f.type == DIST_AUTH || f.type == DIST_HEARTBEAT ||
			      f.type == DIST_CREDIT || f.type == DIST_ERROR);
			if (f.type == DIST_HELLO && f.hello.version != DIST_VERSION) {
				/* another version: read as far as its version, never encoded */
				CHECK(dist_encode(&f, out, sizeof out) == 0);
				off += n;
				continue;
			}
			check_reencode(&f, data + off, n);
			struct dist_frame g;
			CHECK(dist_parse(out, n, &g) == (long)n && g.type == f.type);
		}
		size_t cuts[] = {0, 1, n / 2, n - 1};
		for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
			if (cuts[i] >= n)
				continue;
			struct dist_frame g;
			g.need = 0;
			CHECK(dist_parse(data + off, cuts[i], &g) == PROTO_NEED_MORE);
			CHECK(g.need > cuts[i] && g.need <= n);
		}
		off += n;
	}
	return 0;
}
