/* test_carry.c: criterion tests of runtime/carry.h, the partial frame a
 * connection carries between receives. */
#include <criterion/criterion.h>
#include <string.h>

#include "runtime/carry.h"

/* A SEND of body_len bytes (cmid 7, to user 42). */
static size_t send_frame(uint8_t *out, size_t cap, uint32_t body_len)
{
	static uint8_t body[PROTO_MAX_BODY];
	memset(body, 'b', sizeof body);
	size_t n = proto_enc_send(out, cap, 7, 42, 0, body, body_len);
	cr_assert_gt(n, 0);
	cr_assert_leq(n, cap);
	return n;
}

/* Split the frame after `cut` bytes: parse, start a carry, feed the rest in
 * pieces of `step`; the frame must come out whole, exactly once, at the end. */
static void split_and_feed(const uint8_t *frame, size_t len, size_t cut, size_t step)
{
	struct proto_frame f;
	struct carry *c = NULL;
	cr_assert_eq(proto_parse(frame, cut, PROTO_FROM_CLIENT, &f), PROTO_NEED_MORE);
	cr_assert_eq(carry_start(&c, frame, cut, f.need), 0);
	const uint8_t *p = frame + cut;
	size_t left = len - cut;
	long r = 0;
	while (left) {
		size_t n = left < step ? left : step, before = n;
		r = carry_feed(&c, &p, &n, PROTO_FROM_CLIENT, &f);
		left -= before - n;
		if (r == 1)
			break;
		cr_assert_eq(r, 0);
		cr_assert_eq(n, 0, "an incomplete frame takes all the input");
	}
	cr_assert_eq(r, 1);
	cr_assert_eq(left, 0, "nothing past the frame is taken");
	cr_assert_eq(f.type, PROTO_SEND);
	cr_assert_eq(f.size, len);
	cr_assert_eq(f.send.cmid, 7);
	cr_assert_eq(f.send.to, 42);
	cr_assert(f.send.body.p >= c->data && f.send.body.p + f.send.body.len <= c->data + c->len, "views into the carry");
	carry_free(&c);
	cr_assert_null(c);
}

Test(carry, every_cut_and_step_of_a_small_frame)
{
	uint8_t frame[64];
	size_t len = send_frame(frame, sizeof frame, 20);
	for (size_t cut = 1; cut < len; cut++)
		for (size_t step = 1; step <= len; step++)
			split_and_feed(frame, len, cut, step);
}

Test(carry, a_large_frame_grows_once_its_length_is_known)
{
	static uint8_t frame[PROTO_MAX_FRAME_BYTES];
	size_t len = send_frame(frame, sizeof frame, PROTO_MAX_BODY);
	/* one byte of a 3-byte length prefix: the carry starts small */
	split_and_feed(frame, len, 1, 1000);
	split_and_feed(frame, len, 2, 7);
	split_and_feed(frame, len, 3, len);
}

Test(carry, input_after_the_frame_stays_with_the_caller)
{
	uint8_t two[128];
	size_t a = send_frame(two, sizeof two, 10);
	size_t b = send_frame(two + a, sizeof two - a, 5);
	struct proto_frame f;
	struct carry *c = NULL;
	cr_assert_eq(proto_parse(two, 3, PROTO_FROM_CLIENT, &f), PROTO_NEED_MORE);
	cr_assert_eq(carry_start(&c, two, 3, f.need), 0);
	const uint8_t *p = two + 3;
	size_t n = a + b - 3;
	cr_assert_eq(carry_feed(&c, &p, &n, PROTO_FROM_CLIENT, &f), 1);
	cr_assert_eq(p, two + a);
	cr_assert_eq(n, b);
	carry_free(&c);
	cr_assert_gt(proto_parse(p, n, PROTO_FROM_CLIENT, &f), 0);
}

Test(carry, malformed_frame_is_reported)
{
	/* L = 2, type SEND, then one byte: too short for its fields */
	const uint8_t bad[] = {0x02, PROTO_SEND, 0x07};
	struct proto_frame f;
	struct carry *c = NULL;
	cr_assert_eq(carry_start(&c, bad, 1, 2), 0);
	const uint8_t *p = bad + 1;
	size_t n = 2;
	cr_assert_eq(carry_feed(&c, &p, &n, PROTO_FROM_CLIENT, &f), -PROTO_E_BAD_FIELD);
	carry_free(&c);
	/* a type not allowed in this direction, found as soon as its byte is in */
	const uint8_t wrong[] = {0x05, PROTO_DELIVER};
	cr_assert_eq(carry_start(&c, wrong, 1, 2), 0);
	p = wrong + 1;
	n = 1;
	cr_assert_eq(carry_feed(&c, &p, &n, PROTO_FROM_CLIENT, &f), -PROTO_E_BAD_TYPE);
	carry_free(&c);
}
