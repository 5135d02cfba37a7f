/* fuzz_client.c: libFuzzer target for the client protocol (proto/client.c).
 *
 * The input is read as a stream of frames, once per direction (client,
 * server, any). For each frame that parses it checks what the contract in
 * client.h promises, aborting on any breach:
 *   - the size is within the input and equals f.size;
 *   - the encoding is canonical: proto_encode() of the parsed frame gives back
 *     exactly the input bytes, and so do the hot encoders for their types;
 *   - the re-encoded frame parses again to the same size and type;
 *   - every strict prefix of the frame is NEED_MORE with need in (k, size];
 *   - an encoder given one byte too few returns the size and writes nothing.
 * NEED_MORE must ask for more than what is there; errors must be one of the
 * four parse codes. Built by build.ninja (fuzzcc) with ASan and UBSan.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client.h"
#include "fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint8_t out[PROTO_MAX_FRAME_BYTES + 64];
static uint8_t canary[PROTO_MAX_FRAME_BYTES + 64];

/* The hot encoders must agree with proto_encode() on frames of their type. */
static void check_hot(const struct proto_frame *f, const uint8_t *frame, size_t n)
{
	size_t m = 0;
	switch (f->type) {
	case PROTO_DELIVER:
		if (f->deliver.flags & PROTO_DELIVER_CMID)
			return; /* the hot encoder writes the protocol 1 form */
		m = proto_enc_deliver(out, sizeof out, f->deliver.smid, f->deliver.from, f->deliver.group,
				      f->deliver.time_ms, f->deliver.body.p, f->deliver.body.len);
		break;
	case PROTO_ACK:
		m = proto_enc_ack(out, sizeof out, f->ack.cmid, f->ack.status, f->ack.smid);
		break;
	case PROTO_SEND:
		m = proto_enc_send(out, sizeof out, f->send.cmid, f->send.to, f->send.group, f->send.body.p,
				   f->send.body.len);
		break;
	case PROTO_ERROR: {
		/* proto_enc_error takes a C string: only texts without a NUL */
		if (memchr(f->error.text.p, 0, f->error.text.len))
			return;
		char text[PROTO_MAX_TEXT + 1];
		memcpy(text, f->error.text.p, f->error.text.len);
		text[f->error.text.len] = 0;
		m = proto_enc_error(out, sizeof out, f->error.code, f->error.ref, text);
		break;
	}
	default:
		return;
	}
	CHECK(m == n);
	CHECK(memcmp(out, frame, n) == 0);
}

static void check_frame(const uint8_t *frame, size_t n, enum proto_dir dir, const struct proto_frame *f)
{
	CHECK(f->size == n);

	/* canonical: encoding the parsed frame gives the same bytes */
	size_t m = proto_encode(f, out, sizeof out);
	CHECK(m == n);
	CHECK(memcmp(out, frame, n) == 0);
	check_hot(f, frame, n);

	/* and that encoding parses again, to the same frame size and type */
	struct proto_frame g;
	CHECK(proto_parse(out, m, dir, &g) == (long)m);
	CHECK(g.type == f->type && g.size == m);

	/* too small a buffer: the size, and not a byte written */
	memset(canary, 0xa5, n);
	CHECK(proto_encode(f, canary, n - 1) == n);
	for (size_t k = 0; k < n; k++)
		CHECK(canary[k] == 0xa5);

	/* strict prefixes need more, and say how much within the frame */
	size_t cuts[] = {0, 1, n / 2, n - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		if (cuts[i] >= n)
			continue;
		g.need = 0;
		CHECK(proto_parse(frame, cuts[i], dir, &g) == PROTO_NEED_MORE);
		CHECK(g.need > cuts[i] && g.need <= n);
	}

	/* the member list walks to exactly count ids, none zero */
	if (f->type == PROTO_GROUP) {
		const uint8_t *pos = f->group.members.p;
		uint64_t u;
		uint32_t cnt = 0;
		while (proto_members_next(&f->group.members, &pos, &u)) {
			CHECK(u != 0);
			cnt++;
		}
		CHECK(cnt == f->group.count);
		CHECK(pos == f->group.members.p + f->group.members.len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum proto_dir dirs[] = {PROTO_FROM_CLIENT, PROTO_FROM_SERVER, PROTO_FROM_ANY};
	for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
		size_t off = 0;
		while (off < size) {
			struct proto_frame f;
			size_t left = size - off;
			long r = proto_parse(data + off, left, dirs[d], &f);
			if (r == PROTO_NEED_MORE) {
				CHECK(f.need > left);
				break;
			}
			if (r < 0) {
				CHECK(r == -PROTO_E_BAD_FRAME || r == -PROTO_E_TOO_BIG || r == -PROTO_E_BAD_TYPE ||
				      r == -PROTO_E_BAD_FIELD);
				break;
			}
			CHECK((size_t)r <= left);
			check_frame(data + off, (size_t)r, dirs[d], &f);
			off += (size_t)r;
		}
	}
	return 0;
}
