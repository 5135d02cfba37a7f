/* test_dist.c: criterion unit tests of the dist link format (proto/dist.h):
 * top-level frames, BATCH framing and its in-place builder (dist_batch_*),
 * the inner-frame iterator, and every way a frame is rejected.
 *
 * As in test_proto.c, parses read input that ends flush against a PROT_NONE
 * guard page, so any read past `len` faults instead of passing by luck.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/dist.h"
#include "proto/wire.h"

/* ---- guard page ------------------------------------------------------------ */

/* Room for the largest batch a link may carry, prefix included. */
#define GUARD_SPAN (DIST_MAX_FRAME + 4096u)

#define PB_CAP (DIST_MAX_INNER + 256)
#include "tests/wirebuf.h"

static long parse_guarded(const uint8_t *buf, size_t len, struct dist_frame *f)
{
	return dist_parse(at_guard(buf, len), len, f);
}


/* Expected results in the tables below. */
#define OK 1
#define BAD (-PROTO_E_BAD_FIELD)

/* ---- sample frames ------------------------------------------------------------ */

static int allowed_top(uint8_t t)
{
	return t == DIST_HELLO || t == DIST_AUTH || t == DIST_BATCH || t == DIST_HEARTBEAT || t == DIST_CREDIT ||
	       t == DIST_ERROR;
}

static int allowed_inner(uint8_t t)
{
	return (t >= DIST_ROUTE && t <= DIST_CREDIT) || t == DIST_GROUP_OP || t == DIST_GROUP_RESULT ||
	       t == DIST_KICK || t == DIST_RECEIPT_ACK || t == DIST_HANDOFF || t == DIST_HANDOFF_ACK;
}

#define BYTES(s) ((struct proto_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

static uint8_t members_buf[3][(PROTO_MAX_GROUP_OP + 1) * 10];
/* Empty member lists point somewhere: {NULL, 0} makes dist_encode() compute
 * NULL + 0 (see the disabled test encoder/group_op_null_empty_members). */
static uint8_t no_members_buf[1];
#define NO_MEMBERS ((struct proto_bytes){no_members_buf, 0})
static uint8_t bigbody[DIST_MAX_INNER + 64];
static uint8_t bigtext[PROTO_MAX_TEXT + 1];
static uint64_t ids[PROTO_MAX_GROUP_OP + 1];
static const uint8_t nonce[DIST_NONCE] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
					   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const uint8_t mac[DIST_MAC] = {0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
				      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 0xbb};

static struct proto_bytes put_members(unsigned slot, uint32_t n)
{
	uint8_t *p = members_buf[slot];
	for (uint32_t i = 0; i < n; i++)
		p = wire_uv_put(p, ids[i]);
	return (struct proto_bytes){members_buf[slot], (uint32_t)(p - members_buf[slot])};
}

struct sample {
	const char *what;
	struct dist_frame f;
};

static struct sample samples[64];
static size_t nsamples;

static void add_sample(const char *what, struct dist_frame f)
{
	cr_assert_lt(nsamples, sizeof samples / sizeof samples[0]);
	samples[nsamples++] = (struct sample){what, f};
}

static void fill_data(void)
{
	for (size_t i = 0; i < sizeof bigbody; i++)
		bigbody[i] = (uint8_t)(i * 13 + 5);
	memset(bigtext, 'e', sizeof bigtext);
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
		ids[i] = i < 3 ? 5 + i * 1000 : UINT64_MAX - i;
}

/* Every type but BATCH (built with dist_batch), with the variants that matter. */
static void build_samples(void)
{
	if (nsamples)
		return;
	fill_data();
	add_sample("hello gateway", (struct dist_frame){.type = DIST_HELLO,
							.hello = {.version = DIST_VERSION, .role = DIST_ROLE_GATEWAY,
								  .node = 1, .thread = 3, .threads = 8, .key_id = 77,
								  .nonce = nonce}});
	add_sample("hello backend", (struct dist_frame){.type = DIST_HELLO,
							.hello = {.version = DIST_VERSION, .role = DIST_ROLE_BACKEND,
								  .node = UINT32_MAX, .thread = 0, .threads = UINT32_MAX,
								  .key_id = UINT32_MAX, .nonce = nonce}});
	add_sample("auth", (struct dist_frame){.type = DIST_AUTH, .auth = {.mac = mac}});
	add_sample("receipt ack", (struct dist_frame){.type = DIST_RECEIPT_ACK,
						      .receipt_ack = {.user = 5, .peer = 6, .smid = 1 << 30}});
	add_sample("handoff", (struct dist_frame){.type = DIST_HANDOFF,
						  .route = {.smid = 1000, .from = 42, .to = 44, .group = 9, .time_ms = 5,
							    .onode = 3, .othread = 1, .cmid = 7, .body = BYTES("x")}});
	add_sample("handoff ack", (struct dist_frame){.type = DIST_HANDOFF_ACK,
						      .handoff_ack = {.node = 3, .thread = 1, .user = 44, .smid = 1000}});
	add_sample("receipt relay", (struct dist_frame){.type = DIST_RECEIPT,
							.receipt = {.kind = PROTO_RCPT_DELIVERED, .flags = DIST_RCPT_RELAY,
								    .from = 44, .to = 42, .smid = 1000}});
	add_sample("route to backend",
		   (struct dist_frame){.type = DIST_ROUTE,
				       .route = {.smid = 0, .from = 42, .to = 43, .time_ms = 1764195711000ull, .onode = 1,
						 .othread = 2, .oconn = 77, .cmid = 7, .body = BYTES("hello")}});
	add_sample("route group send", (struct dist_frame){.type = DIST_ROUTE,
							   .route = {.from = 42, .to = 0, .group = 9, .body = BYTES("g")}});
	add_sample("route delivery", (struct dist_frame){.type = DIST_ROUTE,
							 .route = {.smid = 1000, .from = 42, .to = 44, .group = 9,
								   .time_ms = 5, .body = BYTES("x")}});
	add_sample("route max",
		   (struct dist_frame){.type = DIST_ROUTE,
				       .route = {.smid = UINT64_MAX, .from = UINT64_MAX, .to = UINT64_MAX,
						 .group = UINT64_MAX, .time_ms = UINT64_MAX, .onode = UINT32_MAX,
						 .othread = UINT32_MAX, .oconn = UINT64_MAX, .cmid = UINT64_MAX,
						 .body = {bigbody, PROTO_MAX_BODY}}});
	add_sample("session up", (struct dist_frame){.type = DIST_SESSION_UP,
						     .session = {.user = 42, .node = 1, .thread = 0, .conn = 12345,
								 .resume = 999, .flags = DIST_SESS_RCPT_ACKS}});
	add_sample("session up max", (struct dist_frame){.type = DIST_SESSION_UP,
							 .session = {.user = UINT64_MAX, .node = UINT32_MAX,
								     .thread = UINT32_MAX, .conn = UINT64_MAX,
								     .resume = UINT64_MAX}});
	add_sample("session down", (struct dist_frame){.type = DIST_SESSION_DOWN,
						       .session = {.user = 42, .node = 2, .thread = 1, .conn = 3}});
	add_sample("store_ack stored", (struct dist_frame){.type = DIST_STORE_ACK,
							   .store_ack = {.thread = 2, .conn = 3, .cmid = 7, .smid = 1000,
									 .status = PROTO_OK}});
	add_sample("store_ack refused", (struct dist_frame){.type = DIST_STORE_ACK,
							    .store_ack = {.thread = 2, .conn = 3, .cmid = 7, .smid = 0,
									  .status = PROTO_E_MAILBOX_FULL}});
	add_sample("receipt delivered",
		   (struct dist_frame){.type = DIST_RECEIPT,
				       .receipt = {.kind = PROTO_RCPT_DELIVERED, .flags = DIST_RCPT_DELETE, .from = 1,
						   .to = 2, .smid = 3}});
	add_sample("receipt read", (struct dist_frame){.type = DIST_RECEIPT,
						       .receipt = {.kind = PROTO_RCPT_READ,
								   .flags = DIST_RCPT_DELETE | DIST_RCPT_NOTIFY,
								   .from = UINT64_MAX,
								   .to = UINT64_MAX, .smid = UINT64_MAX}});
	add_sample("credit", (struct dist_frame){.type = DIST_CREDIT, .credit = {4u << 20}});
	add_sample("credit 0", (struct dist_frame){.type = DIST_CREDIT, .credit = {0}});
	add_sample("credit max", (struct dist_frame){.type = DIST_CREDIT, .credit = {UINT64_MAX}});
	add_sample("heartbeat", (struct dist_frame){.type = DIST_HEARTBEAT,
						    .heartbeat = {.seq = 1, .t_us = 123456789, .reply = 0}});
	add_sample("heartbeat reply", (struct dist_frame){.type = DIST_HEARTBEAT,
							  .heartbeat = {.seq = UINT64_MAX, .t_us = UINT64_MAX, .reply = 1}});
	add_sample("group_op create", (struct dist_frame){.type = DIST_GROUP_OP,
							  .group_op = {.op = PROTO_GROUP_CREATE, .req = 3, .group = 0,
								       .user = 42, .thread = 1, .conn = 9, .count = 3,
								       .members = put_members(0, 3)}});
	add_sample("group_op leave", (struct dist_frame){.type = DIST_GROUP_OP,
							 .group_op = {.op = PROTO_GROUP_LEAVE, .req = 4, .group = 11,
								      .user = 42, .thread = 0, .conn = 1,
								      .members = NO_MEMBERS}});
	add_sample("group_op 256", (struct dist_frame){.type = DIST_GROUP_OP,
						       .group_op = {.op = PROTO_GROUP_ADD, .req = UINT64_MAX,
								    .group = UINT64_MAX, .user = UINT64_MAX,
								    .thread = UINT32_MAX, .conn = UINT64_MAX,
								    .count = PROTO_MAX_GROUP_OP,
								    .members = put_members(1, PROTO_MAX_GROUP_OP)}});
	add_sample("group_result", (struct dist_frame){.type = DIST_GROUP_RESULT,
						       .group_result = {.thread = 1, .conn = 9, .req = 3,
									.status = PROTO_OK, .group = 11}});
	add_sample("group_result err", (struct dist_frame){.type = DIST_GROUP_RESULT,
							   .group_result = {.thread = 1, .conn = 9, .req = 3,
									    .status = PROTO_E_NOT_MEMBER, .group = 0}});
	add_sample("kick", (struct dist_frame){.type = DIST_KICK,
					       .kick = {.user = 42, .thread = 1, .conn = 9, .reason = PROTO_KICK_ELSEWHERE}});
	add_sample("kick admin", (struct dist_frame){.type = DIST_KICK,
						     .kick = {.user = 1, .thread = 0, .conn = 0, .reason = PROTO_KICK_ADMIN}});
	add_sample("error", (struct dist_frame){.type = DIST_ERROR,
						.error = {.code = PROTO_E_VERSION, .text = BYTES("version 2 not spoken")}});
	add_sample("error no text", (struct dist_frame){.type = DIST_ERROR, .error = {.code = PROTO_E_INTERNAL}});
	add_sample("error max text", (struct dist_frame){.type = DIST_ERROR,
							 .error = {.code = 255, .text = {bigtext, PROTO_MAX_TEXT}}});
}

/* ---- comparing frames ---------------------------------------------------------- */

static void bytes_eq(struct proto_bytes a, struct proto_bytes b, const char *what, const char *field)
{
	cr_assert_eq(a.len, b.len, "%s: %s length %u, expected %u", what, field, a.len, b.len);
	if (a.len)
		cr_assert(memcmp(a.p, b.p, a.len) == 0, "%s: %s bytes differ", what, field);
}

static void frame_eq(const struct dist_frame *got, const struct dist_frame *want, const char *what)
{
	cr_assert_eq(got->type, want->type, "%s: type 0x%02x, expected 0x%02x", what, got->type, want->type);
	switch (want->type) {
	case DIST_HELLO:
		cr_assert_eq(got->hello.version, want->hello.version, "%s", what);
		cr_assert_eq(got->hello.role, want->hello.role, "%s", what);
		cr_assert_eq(got->hello.node, want->hello.node, "%s", what);
		cr_assert_eq(got->hello.thread, want->hello.thread, "%s", what);
		cr_assert_eq(got->hello.threads, want->hello.threads, "%s", what);
		cr_assert_eq(got->hello.key_id, want->hello.key_id, "%s", what);
		cr_assert(memcmp(got->hello.nonce, want->hello.nonce, DIST_NONCE) == 0, "%s: nonce", what);
		break;
	case DIST_AUTH:
		cr_assert(memcmp(got->auth.mac, want->auth.mac, DIST_MAC) == 0, "%s: mac", what);
		break;
	case DIST_RECEIPT_ACK:
		cr_assert_eq(got->receipt_ack.user, want->receipt_ack.user, "%s", what);
		cr_assert_eq(got->receipt_ack.peer, want->receipt_ack.peer, "%s", what);
		cr_assert_eq(got->receipt_ack.smid, want->receipt_ack.smid, "%s", what);
		break;
	case DIST_HANDOFF_ACK:
		cr_assert_eq(got->handoff_ack.node, want->handoff_ack.node, "%s", what);
		cr_assert_eq(got->handoff_ack.thread, want->handoff_ack.thread, "%s", what);
		cr_assert_eq(got->handoff_ack.user, want->handoff_ack.user, "%s", what);
		cr_assert_eq(got->handoff_ack.smid, want->handoff_ack.smid, "%s", what);
		break;
	case DIST_ROUTE:
	case DIST_HANDOFF:
		cr_assert_eq(got->route.smid, want->route.smid, "%s", what);
		cr_assert_eq(got->route.from, want->route.from, "%s", what);
		cr_assert_eq(got->route.to, want->route.to, "%s", what);
		cr_assert_eq(got->route.group, want->route.group, "%s", what);
		cr_assert_eq(got->route.time_ms, want->route.time_ms, "%s", what);
		cr_assert_eq(got->route.onode, want->route.onode, "%s", what);
		cr_assert_eq(got->route.othread, want->route.othread, "%s", what);
		cr_assert_eq(got->route.oconn, want->route.oconn, "%s", what);
		cr_assert_eq(got->route.cmid, want->route.cmid, "%s", what);
		bytes_eq(got->route.body, want->route.body, what, "body");
		break;
	case DIST_SESSION_UP:
	case DIST_SESSION_DOWN:
		cr_assert_eq(got->session.user, want->session.user, "%s", what);
		cr_assert_eq(got->session.node, want->session.node, "%s", what);
		cr_assert_eq(got->session.thread, want->session.thread, "%s", what);
		cr_assert_eq(got->session.conn, want->session.conn, "%s", what);
		cr_assert_eq(got->session.resume, want->session.resume, "%s", what);
		cr_assert_eq(got->session.flags, want->session.flags, "%s", what);
		break;
	case DIST_STORE_ACK:
		cr_assert_eq(got->store_ack.thread, want->store_ack.thread, "%s", what);
		cr_assert_eq(got->store_ack.conn, want->store_ack.conn, "%s", what);
		cr_assert_eq(got->store_ack.cmid, want->store_ack.cmid, "%s", what);
		cr_assert_eq(got->store_ack.smid, want->store_ack.smid, "%s", what);
		cr_assert_eq(got->store_ack.status, want->store_ack.status, "%s", what);
		break;
	case DIST_RECEIPT:
		cr_assert_eq(got->receipt.kind, want->receipt.kind, "%s", what);
		cr_assert_eq(got->receipt.flags, want->receipt.flags, "%s", what);
		cr_assert_eq(got->receipt.from, want->receipt.from, "%s", what);
		cr_assert_eq(got->receipt.to, want->receipt.to, "%s", what);
		cr_assert_eq(got->receipt.smid, want->receipt.smid, "%s", what);
		break;
	case DIST_CREDIT:
		cr_assert_eq(got->credit.bytes, want->credit.bytes, "%s", what);
		break;
	case DIST_HEARTBEAT:
		cr_assert_eq(got->heartbeat.seq, want->heartbeat.seq, "%s", what);
		cr_assert_eq(got->heartbeat.t_us, want->heartbeat.t_us, "%s", what);
		cr_assert_eq(got->heartbeat.reply, want->heartbeat.reply, "%s", what);
		break;
	case DIST_GROUP_OP: {
		cr_assert_eq(got->group_op.op, want->group_op.op, "%s", what);
		cr_assert_eq(got->group_op.req, want->group_op.req, "%s", what);
		cr_assert_eq(got->group_op.group, want->group_op.group, "%s", what);
		cr_assert_eq(got->group_op.user, want->group_op.user, "%s", what);
		cr_assert_eq(got->group_op.thread, want->group_op.thread, "%s", what);
		cr_assert_eq(got->group_op.conn, want->group_op.conn, "%s", what);
		cr_assert_eq(got->group_op.count, want->group_op.count, "%s", what);
		bytes_eq(got->group_op.members, want->group_op.members, what, "members");
		const uint8_t *pos = got->group_op.members.p;
		uint64_t u;
		uint32_t n = 0;
		while (proto_members_next(&got->group_op.members, &pos, &u)) {
			cr_assert_eq(u, ids[n], "%s: member %u", what, n);
			n++;
		}
		cr_assert_eq(n, want->group_op.count, "%s: walked %u members", what, n);
		break;
	}
	case DIST_GROUP_RESULT:
		cr_assert_eq(got->group_result.thread, want->group_result.thread, "%s", what);
		cr_assert_eq(got->group_result.conn, want->group_result.conn, "%s", what);
		cr_assert_eq(got->group_result.req, want->group_result.req, "%s", what);
		cr_assert_eq(got->group_result.status, want->group_result.status, "%s", what);
		cr_assert_eq(got->group_result.group, want->group_result.group, "%s", what);
		break;
	case DIST_KICK:
		cr_assert_eq(got->kick.user, want->kick.user, "%s", what);
		cr_assert_eq(got->kick.thread, want->kick.thread, "%s", what);
		cr_assert_eq(got->kick.conn, want->kick.conn, "%s", what);
		cr_assert_eq(got->kick.reason, want->kick.reason, "%s", what);
		break;
	case DIST_ERROR:
		cr_assert_eq(got->error.code, want->error.code, "%s", what);
		bytes_eq(got->error.text, want->error.text, what, "text");
		break;
	default:
		cr_assert_fail("%s: no comparison for type 0x%02x", what, want->type);
	}
}

static uint8_t enc[DIST_MAX_INNER + 64];
static uint8_t enc2[DIST_MAX_INNER + 64];

/* Batch buffer: a whole DIST_MAX_FRAME batch plus headroom and slack. */
#define BATCH_CAP (DIST_MAX_FRAME + 2 * DIST_BATCH_HEADROOM + 1024)
static uint8_t batch_buf[BATCH_CAP];

/* ---- top-level round trips ---------------------------------------------------- */

Test(roundtrip, top_level_types)
{
	build_samples();
	unsigned n_top = 0;
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		if (!allowed_top(s->f.type))
			continue;
		n_top++;
		size_t n = dist_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0, "%s: encoder refused a valid frame", s->what);
		struct dist_frame got;
		memset(&got, 0xee, sizeof got);
		long r = parse_guarded(enc, n, &got);
		cr_assert_eq(r, (long)n, "%s: parse returned %ld, encoded %zu", s->what, r, n);
		cr_assert_eq(got.size, n, "%s", s->what);
		frame_eq(&got, &s->f, s->what);
		size_t n2 = dist_encode(&got, enc2, sizeof enc2);
		cr_assert_eq(n2, n, "%s: re-encode size", s->what);
		cr_assert(memcmp(enc, enc2, n) == 0, "%s: re-encode differs", s->what);
	}
	cr_assert_geq(n_top, 4);
}

/* HELLO bytes exactly as PROTOCOL.md 4.2 lays them out. */
Test(roundtrip, hello_bytes)
{
	struct dist_frame f = {.type = DIST_HELLO,
			       .hello = {.version = 4, .role = DIST_ROLE_GATEWAY, .node = 1, .thread = 3, .threads = 8,
					 .key_id = 0x81, .nonce = nonce}};
	static const uint8_t head[] = {0x2c, 0x41, 'G', 'W', 'D', 'L', 0x04, 0x01, 0x01, 0x03, 0x08, 0x81, 0x01};
	cr_assert_eq(dist_encode(&f, enc, sizeof enc), sizeof head + DIST_NONCE);
	cr_assert(memcmp(enc, head, sizeof head) == 0);
	cr_assert(memcmp(enc + sizeof head, nonce, DIST_NONCE) == 0);
}

/* Inner frames travel only in a batch: each one alone in a batch comes out
 * equal, and the bytes in the batch are dist_encode()'s. */
Test(roundtrip, inner_types_in_batch_of_one)
{
	build_samples();
	unsigned seen[256] = {0};
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		if (!allowed_inner(s->f.type))
			continue;
		seen[s->f.type]++;
		struct dist_batch b;
		dist_batch_init(&b, batch_buf, BATCH_CAP);
		cr_assert_eq(dist_batch_add(&b, &s->f), 0, "%s: add", s->what);
		cr_assert_eq(b.count, 1);
		size_t n = dist_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0, "%s", s->what);
		cr_assert_eq(b.len, n, "%s: batch holds %zu bytes, frame is %zu", s->what, b.len, n);
		size_t size;
		uint8_t *start = dist_batch_finish(&b, 5, &size);
		cr_assert(start >= batch_buf && start < batch_buf + DIST_BATCH_HEADROOM, "%s: header outside headroom",
			  s->what);
		cr_assert_eq(start + size, batch_buf + DIST_BATCH_HEADROOM + n, "%s: finished frame not contiguous",
			     s->what);

		struct dist_frame bf;
		const uint8_t *in = at_guard(start, size);
		long r = dist_parse(in, size, &bf);
		cr_assert_eq(r, (long)size, "%s: batch parse %ld", s->what, r);
		cr_assert_eq(bf.type, DIST_BATCH);
		cr_assert_eq(bf.batch.seq, 5);
		cr_assert_eq(bf.batch.count, 1);
		cr_assert_eq(bf.batch.frames.len, n);
		cr_assert(memcmp(bf.batch.frames.p, enc, n) == 0, "%s: inner bytes differ from dist_encode", s->what);

		struct dist_iter it;
		struct dist_frame got;
		dist_batch_iter(&bf, &it);
		memset(&got, 0xee, sizeof got);
		cr_assert_eq(dist_batch_next(&it, &got), 1, "%s", s->what);
		cr_assert_eq(got.size, n);
		frame_eq(&got, &s->f, s->what);
		cr_assert_eq(dist_batch_next(&it, &got), 0, "%s: more than one frame", s->what);
		cr_assert_eq(dist_batch_next(&it, &got), 0, "%s: the end is sticky", s->what);
	}
	static const uint8_t inner[] = {DIST_ROUTE,   DIST_SESSION_UP, DIST_SESSION_DOWN, DIST_STORE_ACK,
					DIST_RECEIPT, DIST_CREDIT,     DIST_GROUP_OP,     DIST_GROUP_RESULT,
					DIST_KICK, DIST_HANDOFF, DIST_HANDOFF_ACK};
	for (size_t i = 0; i < sizeof inner; i++)
		cr_assert(seen[inner[i]] > 0, "no sample of %s", dist_type_name(inner[i]));
}

/* ---- batches -------------------------------------------------------------------- */

/* Build a batch of `count` inner samples, cycling through them; returns the
 * finished frame. */
static const uint8_t *build_batch(uint32_t count, uint64_t seq, size_t *size, uint32_t *order)
{
	build_samples();
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, BATCH_CAP);
	size_t k = 0;
	for (uint32_t i = 0; i < count; i++) {
		while (!allowed_inner(samples[k % nsamples].f.type))
			k++;
		order[i] = (uint32_t)(k % nsamples);
		cr_assert_eq(dist_batch_add(&b, &samples[k % nsamples].f), 0, "add %u", i);
		k++;
	}
	cr_assert_eq(b.count, count);
	return dist_batch_finish(&b, seq, size);
}

/* Parse a batch at the guard and walk it, comparing each inner frame. */
static void check_batch(const uint8_t *frame, size_t size, uint64_t seq, uint32_t count, const uint32_t *order)
{
	struct dist_frame bf, got;
	const uint8_t *in = at_guard(frame, size);
	cr_assert_eq(dist_parse(in, size, &bf), (long)size, "batch of %u", count);
	cr_assert_eq(bf.type, DIST_BATCH);
	cr_assert_eq(bf.size, size);
	cr_assert_eq(bf.batch.seq, seq);
	cr_assert_eq(bf.batch.count, count);
	struct dist_iter it;
	dist_batch_iter(&bf, &it);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *at = it.p;
		cr_assert_eq(dist_batch_next(&it, &got), 1, "frame %u of %u", i, count);
		frame_eq(&got, &samples[order[i]].f, samples[order[i]].what);
		cr_assert_eq(it.p, at + got.size, "frame %u: iterator did not advance by its size", i);
	}
	cr_assert_eq(dist_batch_next(&it, &got), 0, "batch of %u: extra frame", count);
	cr_assert_eq(it.p, in + size, "iterator did not end at the frame's end");
}

static uint32_t order[DIST_MAX_BATCH + 1];

Test(batch, one_two_many)
{
	size_t size;
	const uint8_t *f;
	f = build_batch(1, 1, &size, order);
	check_batch(f, size, 1, 1, order);
	f = build_batch(2, 2, &size, order);
	check_batch(f, size, 2, 2, order);
	f = build_batch(1000, UINT64_MAX, &size, order);
	check_batch(f, size, UINT64_MAX, 1000, order);
	f = build_batch(17, 0, &size, order);
	check_batch(f, size, 0, 17, order);
}

/* A known two-frame batch, byte for byte. */
Test(batch, exact_bytes)
{
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, 64);
	struct dist_frame c = {.type = DIST_CREDIT, .credit = {5}};
	cr_assert_eq(dist_batch_add(&b, &c), 0);
	c.credit.bytes = 300;
	cr_assert_eq(dist_batch_add(&b, &c), 0);
	size_t size;
	uint8_t *p = dist_batch_finish(&b, 1, &size);
	/* L=10, BATCH, seq 1, count 2, [02 48 05], [03 48 ac 02] */
	static const uint8_t want[] = {0x0a, 0x42, 0x01, 0x02, 0x02, 0x48, 0x05, 0x03, 0x48, 0xac, 0x02};
	cr_assert_eq(size, sizeof want);
	cr_assert(memcmp(p, want, sizeof want) == 0);
}

/* DIST_MAX_BATCH frames fit; the next one is "flush and retry". */
Test(batch, max_frames)
{
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, BATCH_CAP);
	struct dist_frame c = {.type = DIST_CREDIT};
	for (uint32_t i = 0; i < DIST_MAX_BATCH; i++) {
		c.credit.bytes = i;
		cr_assert_eq(dist_batch_add(&b, &c), 0, "frame %u", i);
	}
	size_t len = b.len;
	c.credit.bytes = 1;
	cr_assert_eq(dist_batch_add(&b, &c), -1, "frame %u", DIST_MAX_BATCH + 1);
	cr_assert_eq(b.count, DIST_MAX_BATCH);
	cr_assert_eq(b.len, len, "a refused add changed the batch");
	size_t size;
	uint8_t *start = dist_batch_finish(&b, 9, &size);
	struct dist_frame bf, got;
	const uint8_t *in = at_guard(start, size);
	cr_assert_eq(dist_parse(in, size, &bf), (long)size);
	cr_assert_eq(bf.batch.count, DIST_MAX_BATCH);
	struct dist_iter it;
	dist_batch_iter(&bf, &it);
	for (uint32_t i = 0; i < DIST_MAX_BATCH; i++) {
		cr_assert_eq(dist_batch_next(&it, &got), 1, "frame %u", i);
		cr_assert_eq(got.type, DIST_CREDIT);
		cr_assert_eq(got.credit.bytes, i, "frame %u", i);
	}
	cr_assert_eq(dist_batch_next(&it, &got), 0);
}

/* Big frames until DIST_MAX_FRAME says stop: the batch that results is still
 * one the parser takes (L within DIST_MAX_FRAME). */
Test(batch, max_frame_bytes)
{
	build_samples();
	const struct dist_frame *big = NULL;
	for (size_t i = 0; i < nsamples; i++)
		if (!strcmp(samples[i].what, "route max"))
			big = &samples[i].f;
	cr_assert_not_null(big);
	size_t n = dist_encode(big, enc, sizeof enc);
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, BATCH_CAP);
	uint32_t added = 0;
	int r;
	while ((r = dist_batch_add(&b, big)) == 0)
		added++;
	cr_assert_eq(r, -1);
	cr_assert_eq(added, (DIST_MAX_FRAME - 16) / n, "added %u frames of %zu bytes", added, n);
	/* small frames still fit in what is left: fill it to the last byte the
	 * builder allows, then the largest header (10-byte seq) must still keep
	 * L within DIST_MAX_FRAME */
	struct dist_frame c = {.type = DIST_CREDIT, .credit = {1}};
	uint32_t small = 0;
	while ((r = dist_batch_add(&b, &c)) == 0)
		small++;
	cr_assert_eq(r, -1);
	cr_assert_gt(small, 0);
	cr_assert_geq(b.len + 3, DIST_MAX_FRAME - 16 - 2, "batch stopped early at %zu bytes", b.len);
	size_t size;
	uint8_t *start = dist_batch_finish(&b, UINT64_MAX, &size);
	cr_assert_leq(size, DIST_MAX_FRAME + 3);
	struct dist_frame bf, got;
	const uint8_t *in = at_guard(start, size);
	cr_assert_eq(dist_parse(in, size, &bf), (long)size, "full batch of %zu bytes", size);
	cr_assert_eq(bf.batch.count, added + small);
	struct dist_iter it;
	dist_batch_iter(&bf, &it);
	for (uint32_t i = 0; i < added; i++) {
		cr_assert_eq(dist_batch_next(&it, &got), 1);
		frame_eq(&got, big, "route max");
	}
	for (uint32_t i = 0; i < small; i++) {
		cr_assert_eq(dist_batch_next(&it, &got), 1);
		cr_assert_eq(got.credit.bytes, 1);
	}
	cr_assert_eq(dist_batch_next(&it, &got), 0);
}

/* A batch of DIST_MAX_BATCH + 1 well-formed frames, written by hand since the
 * builder will not make one, is refused. */
Test(batch, over_max_frames_refused)
{
	static uint8_t frames[(DIST_MAX_BATCH + 1) * 3 + 16];
	for (uint32_t count = DIST_MAX_BATCH; count <= DIST_MAX_BATCH + 1; count++) {
		uint8_t *p = frames;
		p = wire_uv_put(p, 1); /* seq */
		p = wire_uv_put(p, count);
		for (uint32_t i = 0; i < count; i++) {
			*p++ = 0x02;
			*p++ = DIST_CREDIT;
			*p++ = 0x05;
		}
		size_t plen = (size_t)(p - frames);
		static uint8_t frame[sizeof frames + 8];
		size_t n = mkframe(frame, DIST_BATCH, frames, plen);
		struct dist_frame f;
		cr_assert_eq(parse_guarded(frame, n, &f), count == DIST_MAX_BATCH ? (long)n : BAD, "count %u", count);
	}
}

/* At the end of the caller's buffer: -1, nothing written past cap, and the
 * batch stays usable. */
Test(batch, buffer_end)
{
	build_samples();
	struct dist_frame route = {.type = DIST_ROUTE, .route = {.from = 1, .to = 2, .body = BYTES("0123456789")}};
	struct dist_frame c = {.type = DIST_CREDIT, .credit = {7}};
	size_t rn = dist_encode(&route, enc, sizeof enc);
	size_t cap = DIST_BATCH_HEADROOM + rn + 2; /* room for one route and a little */
	memset(batch_buf, 0x5a, cap + 256);
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, cap);
	cr_assert_eq(dist_batch_add(&b, &route), 0);
	cr_assert_eq(dist_batch_add(&b, &route), -1, "second route does not fit");
	cr_assert_eq(b.count, 1);
	cr_assert_eq(b.len, rn);
	for (size_t k = DIST_BATCH_HEADROOM + rn; k < cap + 256; k++)
		cr_assert_eq(batch_buf[k], 0x5a, "byte %zu written by a refused add", k);
	cr_assert_eq(dist_batch_add(&b, &c), -1, "credit is 3 bytes, 2 left");
	/* one byte more and a 3-byte credit fits exactly, then nothing does */
	struct dist_frame c0 = {.type = DIST_CREDIT, .credit = {0}};
	dist_batch_init(&b, batch_buf, DIST_BATCH_HEADROOM + rn + 3);
	cr_assert_eq(dist_batch_add(&b, &route), 0);
	cr_assert_eq(dist_batch_add(&b, &c0), 0, "exact fit");
	cr_assert_eq(dist_batch_add(&b, &c0), -1, "full");
	size_t size;
	uint8_t *start = dist_batch_finish(&b, 1, &size);
	cr_assert_eq(start + size, batch_buf + DIST_BATCH_HEADROOM + rn + 3);
	struct dist_frame bf;
	cr_assert_eq(parse_guarded(start, size, &bf), (long)size);
	cr_assert_eq(bf.batch.count, 2);

	/* a buffer with only the headroom takes nothing */
	dist_batch_init(&b, batch_buf, DIST_BATCH_HEADROOM + 1);
	cr_assert_eq(dist_batch_add(&b, &c0), -1);
	cr_assert_eq(b.count, 0);
}

Test(batch, add_refuses_invalid)
{
	build_samples();
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, BATCH_CAP);
	for (size_t i = 0; i < nsamples; i++) {
		if (allowed_inner(samples[i].f.type))
			continue;
		cr_assert_eq(dist_batch_add(&b, &samples[i].f), -2, "%s: top-level-only type added", samples[i].what);
	}
	struct dist_frame bad[] = {
		{.type = DIST_BATCH},
		{.type = 0},
		{.type = 0xff},
		{.type = PROTO_SEND},
		{.type = DIST_ROUTE, .route = {.from = 0, .to = 1, .body = BYTES("x")}},
		{.type = DIST_ROUTE, .route = {.from = 1, .to = 1}},
		{.type = DIST_SESSION_DOWN, .session = {.user = 1, .node = 1, .resume = 5}},
		{.type = DIST_STORE_ACK, .store_ack = {.status = 0, .smid = 0}},
		{.type = DIST_KICK, .kick = {.user = 1, .reason = 0}},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(dist_batch_add(&b, &bad[i]), -2, "bad frame %zu (type 0x%02x) added", i, bad[i].type);
	cr_assert_eq(b.count, 0);
	cr_assert_eq(b.len, 0);
	/* an invalid frame is -2 even when the buffer is also full */
	dist_batch_init(&b, batch_buf, DIST_BATCH_HEADROOM + 1);
	cr_assert_eq(dist_batch_add(&b, &bad[4]), -2);
	cr_assert_eq(dist_batch_add(&b, &samples[0].f), -2, "hello into a full batch");
}

/* ---- parse errors ------------------------------------------------------------- */

static struct pb scratch;

static long parse_hex(const char *hex, struct dist_frame *f)
{
	scratch.n = 0;
	pb_hex(&scratch, hex);
	return parse_guarded(scratch.b, scratch.n, f);
}

Test(errors, framing)
{
	struct dist_frame f;
	cr_assert_eq(parse_hex("00", &f), -PROTO_E_BAD_FRAME);
	cr_assert_eq(parse_hex("80 00", &f), -PROTO_E_BAD_FRAME);
	cr_assert_eq(parse_hex("82 00 48 05", &f), -PROTO_E_BAD_FRAME);
	cr_assert_eq(parse_hex("80 80 00", &f), -PROTO_E_BAD_FRAME);

	/* TOO_BIG as soon as the prefix is complete */
	uint8_t p[4];
	size_t n = (size_t)(wire_uv_put(p, DIST_MAX_FRAME + 1) - p);
	cr_assert_eq(n, 3);
	cr_assert_eq(parse_guarded(p, n, &f), -PROTO_E_TOO_BIG, "L = DIST_MAX_FRAME+1");
	cr_assert_eq(parse_hex("80 80 80", &f), -PROTO_E_TOO_BIG);
	cr_assert_eq(parse_hex("ff ff 7f", &f), -PROTO_E_TOO_BIG);
	n = (size_t)(wire_uv_put(p, DIST_MAX_FRAME) - p);
	cr_assert_eq(parse_guarded(p, n, &f), PROTO_NEED_MORE, "L = DIST_MAX_FRAME waits");
	cr_assert_eq(f.need, n + DIST_MAX_FRAME);
	p[n] = DIST_BATCH;
	cr_assert_eq(parse_guarded(p, n + 1, &f), PROTO_NEED_MORE);
	cr_assert_eq(f.need, n + DIST_MAX_FRAME);
	/* the client limit does not apply here */
	n = (size_t)(wire_uv_put(p, PROTO_MAX_FRAME + 1) - p);
	cr_assert_eq(parse_guarded(p, n, &f), PROTO_NEED_MORE);
}

Test(errors, types)
{
	struct dist_frame f;
	/* unknown, and types of the client protocol */
	static const char *const unknown[] = {"01 00", "01 40", "01 50", "01 ff", "01 01", "01 83", "01 04"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
		cr_assert_eq(parse_hex(unknown[i], &f), -PROTO_E_BAD_TYPE, "%s", unknown[i]);
	/* every inner-only type at the top level, with its payload missing too */
	build_samples();
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		if (allowed_top(s->f.type))
			continue;
		size_t n = dist_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0, "%s", s->what);
		cr_assert_eq(parse_guarded(enc, n, &f), -PROTO_E_BAD_TYPE, "%s at top level", s->what);
		const uint8_t *q = enc;
		uint64_t L;
		cr_assert_eq(wire_uv_get(&q, enc + n, &L), 1);
		size_t hdr = (size_t)(q - enc);
		cr_assert_eq(parse_guarded(enc, hdr + 1, &f), -PROTO_E_BAD_TYPE, "%s: type byte only", s->what);
	}
}

/* Payload cases: type, payload hex, expected result. Top-level types are
 * parsed as a frame; inner types are put in a batch of one, which must parse
 * (the framing is fine) and `want` is then what dist_batch_next() says. */
struct pcase {
	const char *name;
	uint8_t type;
	const char *hex;
	long want;
};

static const struct pcase payload_cases[] = {
	{"hello", DIST_HELLO, "47 57 44 4c 04 01 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", OK},
	{"hello backend", DIST_HELLO, "47 57 44 4c 04 02 05 00 01 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", OK},
	{"hello version 1 (fields not read)", DIST_HELLO, "47 57 44 4c 01 01 01 03 08", OK},
	{"hello other version (2)", DIST_HELLO, "47 57 44 4c 02 01 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 00", OK},
	{"hello wrong magic", DIST_HELLO, "47 57 44 4d 02 01 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello lowercase magic", DIST_HELLO, "67 77 64 6c 03 01 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello magic only 3 bytes", DIST_HELLO, "47 57 44", BAD},
	{"hello empty", DIST_HELLO, "", BAD},
	{"hello role 0", DIST_HELLO, "47 57 44 4c 04 00 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello role 3", DIST_HELLO, "47 57 44 4c 04 03 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello node 0", DIST_HELLO, "47 57 44 4c 04 01 00 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello threads 0", DIST_HELLO, "47 57 44 4c 04 01 01 00 00 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello thread >= threads", DIST_HELLO, "47 57 44 4c 04 01 01 08 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello node 2^32", DIST_HELLO, "47 57 44 4c 04 01 80 80 80 80 10 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello key id 2^32", DIST_HELLO, "47 57 44 4c 04 01 01 03 08 80 80 80 80 10 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"hello nonce short", DIST_HELLO, "47 57 44 4c 04 01 01 03 08 07 00 01 02", BAD},
	{"hello nonce missing", DIST_HELLO, "47 57 44 4c 04 01 01 03 08 07", BAD},
	{"hello trailing byte", DIST_HELLO, "47 57 44 4c 04 01 01 03 08 07 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 00", BAD},

	{"auth", DIST_AUTH, "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", OK},
	{"auth short", DIST_AUTH, "00 01 02", BAD},
	{"auth long", DIST_AUTH, "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 00", BAD},
	{"auth empty", DIST_AUTH, "", BAD},

	{"receipt_ack", DIST_RECEIPT_ACK, "05 06 09", OK},
	{"receipt_ack user 0", DIST_RECEIPT_ACK, "00 06 09", BAD},
	{"receipt_ack peer 0", DIST_RECEIPT_ACK, "05 00 09", BAD},
	{"receipt_ack smid 0", DIST_RECEIPT_ACK, "05 06 00", BAD},
	{"receipt_ack trailing", DIST_RECEIPT_ACK, "05 06 09 00", BAD},

	{"handoff", DIST_HANDOFF, "09 05 06 00 01 03 01 00 07 78", OK},
	{"handoff smid 0", DIST_HANDOFF, "00 05 06 00 01 03 01 00 07 78", BAD},
	{"handoff to 0 (a group)", DIST_HANDOFF, "09 05 00 08 01 03 01 00 07 78", BAD},
	{"handoff holder node 0", DIST_HANDOFF, "09 05 06 00 01 00 01 00 07 78", BAD},
	{"handoff no body", DIST_HANDOFF, "09 05 06 00 01 03 01 00 07", BAD},
	{"handoff_ack", DIST_HANDOFF_ACK, "03 01 06 09", OK},
	{"handoff_ack node 0", DIST_HANDOFF_ACK, "00 01 06 09", BAD},
	{"handoff_ack user 0", DIST_HANDOFF_ACK, "03 01 00 09", BAD},
	{"handoff_ack smid 0", DIST_HANDOFF_ACK, "03 01 06 00", BAD},
	{"handoff_ack trailing", DIST_HANDOFF_ACK, "03 01 06 09 00", BAD},
	{"receipt relay", DIST_RECEIPT, "01 08 05 06 09", OK},
	{"receipt relay with notify", DIST_RECEIPT, "01 0a 05 06 09", BAD},

	{"credit", DIST_CREDIT, "05", OK},
	{"credit 2^64-1", DIST_CREDIT, "ff ff ff ff ff ff ff ff ff 01", OK},
	{"credit 11-byte varint", DIST_CREDIT, "ff ff ff ff ff ff ff ff ff ff 01", BAD},
	{"credit non-minimal", DIST_CREDIT, "85 00", BAD},
	{"credit empty", DIST_CREDIT, "", BAD},
	{"credit trailing byte", DIST_CREDIT, "05 00", BAD},

	{"heartbeat", DIST_HEARTBEAT, "01 02 00", OK},
	{"heartbeat reply", DIST_HEARTBEAT, "01 02 01", OK},
	{"heartbeat reply 2", DIST_HEARTBEAT, "01 02 02", BAD},
	{"heartbeat reply missing", DIST_HEARTBEAT, "01 02", BAD},
	{"heartbeat trailing byte", DIST_HEARTBEAT, "01 02 00 00", BAD},

	{"error", DIST_ERROR, "04", OK},
	{"error text", DIST_ERROR, "04 6f 6f", OK},
	{"error code 0", DIST_ERROR, "00", BAD},
	{"error empty", DIST_ERROR, "", BAD},

	{"route", DIST_ROUTE, "00 05 06 00 64 01 02 03 07 68", OK},
	{"route delivery", DIST_ROUTE, "09 05 06 11 64 01 02 03 07 68", OK},
	{"route group send", DIST_ROUTE, "00 05 00 11 64 01 02 03 07 68", OK},
	{"route from 0", DIST_ROUTE, "00 00 06 00 64 01 02 03 07 68", BAD},
	{"route to and group 0", DIST_ROUTE, "00 05 00 00 64 01 02 03 07 68", BAD},
	{"route empty body", DIST_ROUTE, "00 05 06 00 64 01 02 03 07", BAD},
	{"route onode 2^32", DIST_ROUTE, "00 05 06 00 64 80 80 80 80 10 02 03 07 68", BAD},
	{"route othread 2^32", DIST_ROUTE, "00 05 06 00 64 01 80 80 80 80 10 03 07 68", BAD},
	{"route cut short", DIST_ROUTE, "00 05 06", BAD},

	{"session_up", DIST_SESSION_UP, "05 01 02 03 00 00", OK},
	{"session_up acks receipts", DIST_SESSION_UP, "05 01 02 03 00 01", OK},
	{"session_up unknown flag", DIST_SESSION_UP, "05 01 02 03 00 02", BAD},
	{"session_up user 0", DIST_SESSION_UP, "00 01 02 03 00 00", BAD},
	{"session_up node 0", DIST_SESSION_UP, "05 00 02 03 00 00", BAD},
	{"session_up flags missing", DIST_SESSION_UP, "05 01 02 03 00", BAD},
	{"session_up resume missing", DIST_SESSION_UP, "05 01 02 03", BAD},
	{"session_down", DIST_SESSION_DOWN, "05 01 02 03", OK},
	{"session_down with resume", DIST_SESSION_DOWN, "05 01 02 03 00", BAD},
	{"session_down user 0", DIST_SESSION_DOWN, "00 01 02 03", BAD},

	{"store_ack stored", DIST_STORE_ACK, "02 03 07 09 00", OK},
	{"store_ack refused", DIST_STORE_ACK, "02 03 07 00 22", OK},
	{"store_ack stored without smid", DIST_STORE_ACK, "02 03 07 00 00", BAD},
	{"store_ack refused with smid", DIST_STORE_ACK, "02 03 07 09 22", BAD},
	{"store_ack status missing", DIST_STORE_ACK, "02 03 07 09", BAD},
	{"store_ack thread 2^32", DIST_STORE_ACK, "80 80 80 80 10 03 07 09 00", BAD},

	{"receipt delivered, delete", DIST_RECEIPT, "01 01 05 06 09", OK},
	{"receipt read, notify", DIST_RECEIPT, "02 02 05 06 09", OK},
	{"receipt delete and notify", DIST_RECEIPT, "01 03 05 06 09", OK},
	{"receipt no flags", DIST_RECEIPT, "01 00 05 06 09", BAD},
	{"receipt store", DIST_RECEIPT, "01 04 05 06 09", OK},
	{"receipt relay with delete", DIST_RECEIPT, "01 09 05 06 09", BAD},
	{"receipt flag bit 4", DIST_RECEIPT, "01 10 05 06 09", BAD},
	{"receipt flag bit 7", DIST_RECEIPT, "01 81 05 06 09", BAD},
	{"receipt kind 0", DIST_RECEIPT, "00 01 05 06 09", BAD},
	{"receipt kind 3", DIST_RECEIPT, "03 01 05 06 09", BAD},
	{"receipt from 0", DIST_RECEIPT, "01 01 00 06 09", BAD},
	{"receipt to 0", DIST_RECEIPT, "01 01 05 00 09", BAD},
	{"receipt smid 0", DIST_RECEIPT, "01 01 05 06 00", BAD},
	{"receipt without flags byte (old layout)", DIST_RECEIPT, "01 05 06 09", BAD},

	{"group_op create", DIST_GROUP_OP, "01 09 00 05 02 03 01 06", OK},
	{"group_op leave", DIST_GROUP_OP, "04 09 11 05 02 03 00", OK},
	{"group_op create with group", DIST_GROUP_OP, "01 09 11 05 02 03 00", BAD},
	{"group_op add without group", DIST_GROUP_OP, "02 09 00 05 02 03 00", BAD},
	{"group_op user 0", DIST_GROUP_OP, "02 09 11 00 02 03 00", BAD},
	{"group_op zero member", DIST_GROUP_OP, "02 09 11 05 02 03 01 00", BAD},
	{"group_op op 0", DIST_GROUP_OP, "00 09 11 05 02 03 00", BAD},
	{"group_op op 5", DIST_GROUP_OP, "05 09 11 05 02 03 00", BAD},
	{"group_op count over list", DIST_GROUP_OP, "02 09 11 05 02 03 02 06", BAD},
	{"group_op count missing", DIST_GROUP_OP, "02 09 11 05 02 03", BAD},

	{"group_result", DIST_GROUP_RESULT, "02 03 09 00 11", OK},
	{"group_result error", DIST_GROUP_RESULT, "02 03 09 24 00", OK},
	{"group_result group missing", DIST_GROUP_RESULT, "02 03 09 00", BAD},
	{"group_result trailing byte", DIST_GROUP_RESULT, "02 03 09 00 11 00", BAD},

	{"kick", DIST_KICK, "05 02 03 01", OK},
	{"kick reason 0", DIST_KICK, "05 02 03 00", BAD},
	{"kick user 0", DIST_KICK, "00 02 03 01", BAD},
	{"kick reason missing", DIST_KICK, "05 02 03", BAD},
};

static struct pb inner_frame, outer;

/* Wrap an inner frame into a BATCH (seq 1, count 1) in `outer`. */
static void wrap_batch(const uint8_t *inner, size_t n, uint64_t count)
{
	static struct pb pl;
	pl.n = 0;
	pb_uv(&pl, 1);
	pb_uv(&pl, count);
	pb_raw(&pl, inner, n);
	outer.n = mkframe(outer.b, DIST_BATCH, pl.b, pl.n);
}

Test(errors, payload_table)
{
	static struct pb pl;
	for (size_t i = 0; i < sizeof payload_cases / sizeof payload_cases[0]; i++) {
		const struct pcase *c = &payload_cases[i];
		pl.n = 0;
		pb_hex(&pl, c->hex);
		inner_frame.n = mkframe(inner_frame.b, c->type, pl.b, pl.n);
		struct dist_frame f;
		long r;
		if (allowed_top(c->type)) {
			r = parse_guarded(inner_frame.b, inner_frame.n, &f);
		} else {
			wrap_batch(inner_frame.b, inner_frame.n, 1);
			struct dist_frame bf;
			cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), (long)outer.n, "%s: batch framing refused",
				     c->name);
			struct dist_iter it;
			dist_batch_iter(&bf, &it);
			int nr = dist_batch_next(&it, &f);
			r = nr == 1 ? (long)f.size : nr;
		}
		if (c->want == OK) {
			cr_assert_eq(r, (long)inner_frame.n, "%s: got %ld, expected the frame (%zu bytes)", c->name, r,
				     inner_frame.n);
			if (f.type == DIST_HELLO && f.hello.version != DIST_VERSION) {
				/* another version: parsed only as far as version and role, and
				 * never encoded (this node speaks its own version only) */
				cr_assert_eq(dist_encode(&f, enc, sizeof enc), 0, "%s: encoded", c->name);
				continue;
			}
			size_t n = dist_encode(&f, enc, sizeof enc);
			cr_assert_eq(n, inner_frame.n, "%s: re-encode size", c->name);
			cr_assert(memcmp(enc, inner_frame.b, n) == 0, "%s: re-encode differs", c->name);
		} else {
			cr_assert_eq(r, c->want, "%s: got %ld, expected %ld", c->name, r, c->want);
		}
	}
}

/* The batch itself: count, framing and types of the inner frames, all checked
 * by dist_parse() before anything acts on them. */
static const struct pcase batch_cases[] = {
	{"one credit", DIST_BATCH, "01 01 02 48 05", OK},
	{"seq 0", DIST_BATCH, "00 01 02 48 05", OK},
	{"two credits", DIST_BATCH, "01 02 02 48 05 02 48 06", OK},
	{"count 0", DIST_BATCH, "01 00", BAD},
	{"count 0 with a frame", DIST_BATCH, "01 00 02 48 05", BAD},
	{"count 2, one frame", DIST_BATCH, "01 02 02 48 05", BAD},
	{"count 1, two frames", DIST_BATCH, "01 01 02 48 05 02 48 06", BAD},
	{"inner frame overruns", DIST_BATCH, "01 01 05 48 05", BAD},
	{"inner frame overruns by one", DIST_BATCH, "01 02 02 48 05 03 48 06", BAD},
	{"inner L 0", DIST_BATCH, "01 01 00", BAD},
	{"inner prefix non-minimal", DIST_BATCH, "01 01 82 00 48 05", BAD},
	{"inner prefix cut", DIST_BATCH, "01 01 80", BAD},
	{"inner prefix 3 continuations", DIST_BATCH, "01 01 80 80 80 48", BAD},
	{"trailing byte after frames", DIST_BATCH, "01 01 02 48 05 00", BAD},
	{"inner hello", DIST_BATCH, "01 01 0a 41 47 57 44 4c 01 01 01 03 08", BAD},
	{"inner auth", DIST_BATCH, "01 01 21 4e 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f", BAD},
	{"inner batch", DIST_BATCH, "01 01 06 42 01 01 02 48 05", BAD},
	{"inner heartbeat", DIST_BATCH, "01 01 04 49 01 02 00", BAD},
	{"inner error", DIST_BATCH, "01 01 02 4d 04", BAD},
	{"inner type 0", DIST_BATCH, "01 01 01 00", BAD},
	{"inner client type", DIST_BATCH, "01 01 01 04", BAD},
	{"inner unknown type 0x52", DIST_BATCH, "01 01 02 52 00", BAD},
	{"bad type after a good frame", DIST_BATCH, "01 02 02 48 05 02 49 00", BAD},
	{"count 65536", DIST_BATCH, "01 80 80 04 02 48 05", BAD},
	{"count 2^64-1", DIST_BATCH, "01 ff ff ff ff ff ff ff ff ff 01 02 48 05", BAD},
	{"empty", DIST_BATCH, "", BAD},
	{"count missing", DIST_BATCH, "01", BAD},
	{"seq 11-byte varint", DIST_BATCH, "ff ff ff ff ff ff ff ff ff ff 01 01 02 48 05", BAD},
};

Test(errors, batch_table)
{
	static struct pb pl;
	for (size_t i = 0; i < sizeof batch_cases / sizeof batch_cases[0]; i++) {
		const struct pcase *c = &batch_cases[i];
		pl.n = 0;
		pb_hex(&pl, c->hex);
		outer.n = mkframe(outer.b, DIST_BATCH, pl.b, pl.n);
		struct dist_frame f;
		long r = parse_guarded(outer.b, outer.n, &f);
		if (c->want == OK)
			cr_assert_eq(r, (long)outer.n, "%s: got %ld, expected the frame", c->name, r);
		else
			cr_assert_eq(r, c->want, "%s: got %ld, expected %ld", c->name, r, c->want);
	}
}

/* Limits of inner frames, built from bytes so the encoder's checks are not in
 * the way: L over DIST_MAX_INNER is framing (dist_parse); a frame within it
 * whose body is over PROTO_MAX_BODY is a field error (dist_batch_next). */
Test(errors, inner_limits)
{
	fill_data();
	static struct pb pl;
	struct dist_frame bf, f;
	struct dist_iter it;

	/* ROUTE with every field minimal: 9 bytes of fields, then the body */
	for (uint32_t body = PROTO_MAX_BODY; body <= PROTO_MAX_BODY + 1; body++) {
		pl.n = 0;
		pb_hex(&pl, "00 05 06 00 64 01 02 03 07");
		pb_raw(&pl, bigbody, body);
		inner_frame.n = mkframe(inner_frame.b, DIST_ROUTE, pl.b, pl.n);
		wrap_batch(inner_frame.b, inner_frame.n, 1);
		cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), (long)outer.n, "route body %u: framing", body);
		dist_batch_iter(&bf, &it);
		cr_assert_eq(dist_batch_next(&it, &f), body == PROTO_MAX_BODY ? 1 : BAD, "route body %u", body);
	}
	/* L = DIST_MAX_INNER: framing fine, body too long */
	pl.n = 0;
	pb_hex(&pl, "00 05 06 00 64 01 02 03 07");
	pb_raw(&pl, bigbody, DIST_MAX_INNER - 1 - pl.n);
	inner_frame.n = mkframe(inner_frame.b, DIST_ROUTE, pl.b, pl.n);
	cr_assert_eq(pl.n + 1, DIST_MAX_INNER);
	wrap_batch(inner_frame.b, inner_frame.n, 1);
	cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), (long)outer.n, "inner L = DIST_MAX_INNER");
	dist_batch_iter(&bf, &it);
	cr_assert_eq(dist_batch_next(&it, &f), BAD);
	/* L = DIST_MAX_INNER + 1: the batch is refused */
	pb_u8(&pl, 'x');
	inner_frame.n = mkframe(inner_frame.b, DIST_ROUTE, pl.b, pl.n);
	wrap_batch(inner_frame.b, inner_frame.n, 1);
	cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), BAD, "inner L = DIST_MAX_INNER+1");

	/* members: 256 fine, 257 not */
	for (uint32_t cnt = PROTO_MAX_GROUP_OP; cnt <= PROTO_MAX_GROUP_OP + 1; cnt++) {
		pl.n = 0;
		pb_hex(&pl, "02 09 11 05 02 03");
		pb_uv(&pl, cnt);
		for (uint32_t i = 0; i < cnt; i++)
			pb_uv(&pl, ids[i]);
		inner_frame.n = mkframe(inner_frame.b, DIST_GROUP_OP, pl.b, pl.n);
		wrap_batch(inner_frame.b, inner_frame.n, 1);
		cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), (long)outer.n);
		dist_batch_iter(&bf, &it);
		int r = dist_batch_next(&it, &f);
		cr_assert_eq(r, cnt == PROTO_MAX_GROUP_OP ? 1 : BAD, "%u members", cnt);
		if (r == 1)
			cr_assert_eq(f.group_op.count, cnt);
	}

	/* a field error in the second frame: the first comes out, then the error */
	static const uint8_t two[] = {0x02, 0x48, 0x05, 0x02, 0x4c, 0x00};
	wrap_batch(two, sizeof two, 2);
	cr_assert_eq(parse_guarded(outer.b, outer.n, &bf), (long)outer.n);
	dist_batch_iter(&bf, &it);
	cr_assert_eq(dist_batch_next(&it, &f), 1);
	cr_assert_eq(f.credit.bytes, 5);
	cr_assert_eq(dist_batch_next(&it, &f), BAD);
}

/* ---- encoder ------------------------------------------------------------------ */

Test(encoder, refuses_invalid)
{
	fill_data();
	uint8_t zero_member[2] = {0x05, 0x00};
	const struct {
		const char *what;
		struct dist_frame f;
	} bad[] = {
		{"batch", {.type = DIST_BATCH, .batch = {.seq = 1, .count = 1, .frames = BYTES("\x02\x48\x05")}}},
		{"type 0", {.type = 0}},
		{"type 0x52", {.type = 0x52}},
		{"hello without nonce", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 1, .node = 1, .threads = 1}}},
		{"hello other version", {.type = DIST_HELLO, .hello = {.version = 1, .role = 1, .node = 1, .threads = 1, .nonce = nonce}}},
		{"hello thread >= threads", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 1, .node = 1, .thread = 1, .threads = 1, .nonce = nonce}}},
		{"auth without mac", {.type = DIST_AUTH}},
		{"receipt_ack smid 0", {.type = DIST_RECEIPT_ACK, .receipt_ack = {.user = 1, .peer = 1}}},
		{"handoff smid 0", {.type = DIST_HANDOFF, .route = {.from = 1, .to = 2, .onode = 1, .body = BYTES("x")}}},
		{"handoff to a group", {.type = DIST_HANDOFF, .route = {.smid = 1, .from = 1, .group = 2, .onode = 1, .body = BYTES("x")}}},
		{"handoff no holder", {.type = DIST_HANDOFF, .route = {.smid = 1, .from = 1, .to = 2, .body = BYTES("x")}}},
		{"handoff_ack node 0", {.type = DIST_HANDOFF_ACK, .handoff_ack = {.user = 1, .smid = 1}}},
		{"receipt relay and notify", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = DIST_RCPT_RELAY | DIST_RCPT_NOTIFY, .from = 1, .to = 2, .smid = 3}}},
		{"session_up unknown flag", {.type = DIST_SESSION_UP, .session = {.user = 1, .node = 1, .flags = 2}}},
		{"session_down with flags", {.type = DIST_SESSION_DOWN, .session = {.user = 1, .node = 1, .flags = 1}}},
		{"client type", {.type = PROTO_SEND}},
		{"hello role 0", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 0, .node = 1, .threads = 1, .nonce = nonce}}},
		{"hello role 3", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 3, .node = 1, .threads = 1, .nonce = nonce}}},
		{"hello node 0", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 1, .node = 0, .threads = 1, .nonce = nonce}}},
		{"hello threads 0", {.type = DIST_HELLO, .hello = {.version = DIST_VERSION, .role = 1, .node = 1, .threads = 0, .nonce = nonce}}},
		{"route from 0", {.type = DIST_ROUTE, .route = {.from = 0, .to = 1, .body = BYTES("x")}}},
		{"route no to, no group", {.type = DIST_ROUTE, .route = {.from = 1, .body = BYTES("x")}}},
		{"route empty body", {.type = DIST_ROUTE, .route = {.from = 1, .to = 1}}},
		{"route body MAX+1", {.type = DIST_ROUTE, .route = {.from = 1, .to = 1, .body = {bigbody, PROTO_MAX_BODY + 1}}}},
		{"session_up user 0", {.type = DIST_SESSION_UP, .session = {.user = 0, .node = 1}}},
		{"session_up node 0", {.type = DIST_SESSION_UP, .session = {.user = 1, .node = 0}}},
		{"session_down with resume", {.type = DIST_SESSION_DOWN, .session = {.user = 1, .node = 1, .resume = 1}}},
		{"store_ack stored without smid", {.type = DIST_STORE_ACK, .store_ack = {.status = 0, .smid = 0}}},
		{"store_ack refused with smid", {.type = DIST_STORE_ACK, .store_ack = {.status = 34, .smid = 1}}},
		{"receipt kind 3", {.type = DIST_RECEIPT, .receipt = {.kind = 3, .flags = 1, .from = 1, .to = 1, .smid = 1}}},
		{"receipt no flags", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = 0, .from = 1, .to = 1, .smid = 1}}},
		{"receipt flag bit 4", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = 16, .from = 1, .to = 1, .smid = 1}}},
		{"receipt from 0", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = 1, .from = 0, .to = 1, .smid = 1}}},
		{"receipt to 0", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = 1, .from = 1, .to = 0, .smid = 1}}},
		{"receipt smid 0", {.type = DIST_RECEIPT, .receipt = {.kind = 1, .flags = 1, .from = 1, .to = 1, .smid = 0}}},
		{"heartbeat reply 2", {.type = DIST_HEARTBEAT, .heartbeat = {.reply = 2}}},
		{"group_op op 0", {.type = DIST_GROUP_OP, .group_op = {.op = 0, .group = 1, .user = 1, .members = NO_MEMBERS}}},
		{"group_op create with group", {.type = DIST_GROUP_OP, .group_op = {.op = 1, .group = 1, .user = 1, .members = NO_MEMBERS}}},
		{"group_op add without group", {.type = DIST_GROUP_OP, .group_op = {.op = 2, .group = 0, .user = 1, .members = NO_MEMBERS}}},
		{"group_op user 0", {.type = DIST_GROUP_OP, .group_op = {.op = 2, .group = 1, .user = 0, .members = NO_MEMBERS}}},
		{"group_op zero member",
		 {.type = DIST_GROUP_OP, .group_op = {.op = 2, .group = 1, .user = 1, .count = 2, .members = {zero_member, 2}}}},
		{"group_op count mismatch",
		 {.type = DIST_GROUP_OP, .group_op = {.op = 2, .group = 1, .user = 1, .count = 2, .members = {zero_member, 1}}}},
		{"kick user 0", {.type = DIST_KICK, .kick = {.user = 0, .reason = 1}}},
		{"kick reason 0", {.type = DIST_KICK, .kick = {.user = 1, .reason = 0}}},
		{"error code 0", {.type = DIST_ERROR, .error = {.code = 0}}},
		{"error text 257", {.type = DIST_ERROR, .error = {.code = 4, .text = {bigtext, PROTO_MAX_TEXT + 1}}}},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(enc, 0xa5, 64);
		cr_assert_eq(dist_encode(&bad[i].f, enc, sizeof enc), 0, "%s: encoder accepted it", bad[i].what);
		for (size_t k = 0; k < 64; k++)
			cr_assert_eq(enc[k], 0xa5, "%s: wrote byte %zu", bad[i].what, k);
	}
	struct dist_frame g = {.type = DIST_GROUP_OP,
			       .group_op = {.op = 2, .group = 1, .user = 1, .count = PROTO_MAX_GROUP_OP + 1,
					    .members = put_members(2, PROTO_MAX_GROUP_OP + 1)}};
	cr_assert_eq(dist_encode(&g, enc, sizeof enc), 0, "257 members");
}

/* A GROUP_OP with no members given as {NULL, 0} encodes without forming
 * NULL + 0 (UB caught by clang's UBSan in an earlier wr_members()). */
Test(encoder, group_op_null_empty_members)
{
	struct dist_frame f = {.type = DIST_GROUP_OP,
			       .group_op = {.op = PROTO_GROUP_LEAVE, .req = 1, .group = 2, .user = 3}};
	cr_assert_null(f.group_op.members.p);
	size_t n = dist_encode(&f, enc, sizeof enc);
	cr_assert_eq(n, 9);
	cr_assert(memcmp(enc, "\x08\x4a\x04\x01\x02\x03\x00\x00\x00", 9) == 0);
}

Test(encoder, small_buffer_writes_nothing)
{
	build_samples();
	static uint8_t canary[DIST_MAX_INNER + 128];
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		size_t n = dist_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0, "%s", s->what);
		size_t caps[] = {0, 1, n / 2, n - 1};
		for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
			memset(canary, 0x5a, n + 64);
			cr_assert_eq(dist_encode(&s->f, canary, caps[c]), n, "%s: cap %zu", s->what, caps[c]);
			for (size_t k = 0; k < n + 64; k++)
				cr_assert_eq(canary[k], 0x5a, "%s: cap %zu: byte %zu written", s->what, caps[c], k);
		}
		memset(canary, 0x5a, n + 64);
		cr_assert_eq(dist_encode(&s->f, canary, n), n);
		cr_assert(memcmp(canary, enc, n) == 0);
		for (size_t k = n; k < n + 64; k++)
			cr_assert_eq(canary[k], 0x5a, "%s: byte %zu after the frame written", s->what, k);
	}
}

/* ---- truncation ------------------------------------------------------------- */

static void check_truncations(const uint8_t *frame, size_t n, const char *what)
{
	const uint8_t *q = frame;
	uint64_t flen;
	cr_assert_eq(wire_uv_get(&q, frame + n, &flen), 1, "%s: bad prefix", what);
	size_t hdr = (size_t)(q - frame);
	cr_assert_eq(hdr + flen, n, "%s", what);
	/* copy once: at_guard() moves bytes within the guarded area */
	static uint8_t copy[BATCH_CAP];
	memcpy(copy, frame, n);
	struct dist_frame f;
	for (size_t k = 0; k < n; k++) {
		f.need = 0;
		long r = parse_guarded(copy, k, &f);
		cr_assert_eq(r, PROTO_NEED_MORE, "%s: %zu of %zu bytes gave %ld", what, k, n, r);
		cr_assert_gt(f.need, k, "%s: %zu of %zu bytes: need %u", what, k, n, f.need);
		cr_assert_leq(f.need, n, "%s: %zu of %zu bytes: need %u", what, k, n, f.need);
		if (k >= hdr)
			cr_assert_eq(f.need, n, "%s: %zu bytes, prefix complete: need %u", what, k, f.need);
	}
	cr_assert_eq(parse_guarded(copy, n, &f), (long)n, "%s: whole frame", what);
}

Test(truncation, top_level_frames)
{
	build_samples();
	for (size_t i = 0; i < nsamples; i++) {
		if (!allowed_top(samples[i].f.type))
			continue;
		size_t n = dist_encode(&samples[i].f, enc, sizeof enc);
		check_truncations(enc, n, samples[i].what);
	}
}

Test(truncation, batches)
{
	size_t size;
	const uint8_t *f;
	f = build_batch(1, 1, &size, order);
	check_truncations(f, size, "batch of 1");
	f = build_batch(2, 77, &size, order);
	check_truncations(f, size, "batch of 2");
	/* every inner sample once, the big route and 256-member group included */
	uint32_t all = 0;
	for (size_t i = 0; i < nsamples; i++)
		all += allowed_inner(samples[i].f.type) != 0;
	f = build_batch(all, UINT64_MAX, &size, order);
	cr_assert_gt(size, PROTO_MAX_BODY);
	check_truncations(f, size, "batch of every inner sample");
}

/* ---- garbage ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

Test(garbage, random_buffers)
{
	static const uint8_t types[] = {DIST_HELLO,	   DIST_BATCH,	   DIST_ROUTE,	  DIST_SESSION_UP,
					DIST_SESSION_DOWN, DIST_STORE_ACK, DIST_RECEIPT,  DIST_CREDIT,
					DIST_HEARTBEAT,	   DIST_GROUP_OP,  DIST_GROUP_RESULT, DIST_KICK,
					DIST_ERROR};
	rng_state = 0x853c49e6748fea9bull;
	uint8_t buf[64];
	long counts[6] = {0}, inner_ok = 0;
	for (unsigned iter = 0; iter < 300000; iter++) {
		size_t len = (size_t)(rng() % 65);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rng();
		/* Shape half of them: an L that fits and a known type (often BATCH
		 * with a small count and inner frames of known types), so the
		 * decoders, not just the prefix check, see the noise. */
		uint64_t shape = rng();
		if ((shape & 1) && len >= 2) {
			buf[0] = (uint8_t)(1 + (shape >> 8) % (len - 1 < 127 ? len - 1 : 127));
			buf[1] = (shape & 2) ? DIST_BATCH : types[(shape >> 16) % sizeof types];
			if (buf[1] == DIST_BATCH && len >= 6) {
				/* the whole buffer is the batch, its inner frames fill it
				 * exactly and the count is right, with small non-zero
				 * field bytes: the shape that passes framing */
				buf[0] = (uint8_t)(len - 1);
				buf[2] = (uint8_t)(rng() & 0x7f);
				uint8_t count = 0;
				for (size_t i = 4; i + 1 < len; count++) {
					size_t l = 1 + rng() % 8;
					if (i + 1 + l > len || len - (i + 1 + l) < 2)
						l = len - i - 1;
					buf[i] = (uint8_t)l;
					buf[i + 1] = types[rng() % sizeof types];
					for (size_t j = i + 2; j < i + 1 + l; j++)
						buf[j] = (uint8_t)(1 + rng() % 3);
					i += 1 + l;
				}
				buf[3] = count;
				if (shape & 8)
					buf[3] = (uint8_t)(rng() % 4); /* and sometimes a wrong count */
			} else if (shape & 4) {
				for (size_t i = 2; i < len; i++)
					if (rng() & 1)
						buf[i] &= 0x07;
			}
		}
		struct dist_frame f;
		f.need = 0;
		long r = parse_guarded(buf, len, &f);
		if (r > 0) {
			cr_assert_leq((size_t)r, len, "iter %u", iter);
			cr_assert_eq(f.size, (uint32_t)r, "iter %u", iter);
			counts[0]++;
			if (f.type == DIST_BATCH) {
				struct dist_iter it;
				struct dist_frame in;
				dist_batch_iter(&f, &it);
				uint32_t seen = 0;
				int nr;
				while ((nr = dist_batch_next(&it, &in)) == 1) {
					cr_assert(allowed_inner(in.type), "iter %u: inner type 0x%02x", iter, in.type);
					size_t n = dist_encode(&in, enc, sizeof enc);
					cr_assert_eq(n, in.size, "iter %u: inner re-encode", iter);
					cr_assert(memcmp(enc, it.p - n, n) == 0, "iter %u: inner re-encode differs", iter);
					seen++;
					inner_ok++;
				}
				cr_assert(nr == 0 || nr == BAD, "iter %u: dist_batch_next gave %d", iter, nr);
				if (nr == 0)
					cr_assert_eq(seen, f.batch.count, "iter %u", iter);
			} else {
				size_t n = dist_encode(&f, enc, sizeof enc);
				cr_assert_eq(n, (size_t)r, "iter %u: re-encode size", iter);
				cr_assert(memcmp(enc, buf, n) == 0, "iter %u: re-encode differs", iter);
			}
		} else if (r == PROTO_NEED_MORE) {
			cr_assert_gt(f.need, len, "iter %u: need %u with %zu bytes", iter, f.need, len);
			counts[1]++;
		} else {
			cr_assert(r == -PROTO_E_BAD_FRAME || r == -PROTO_E_TOO_BIG || r == -PROTO_E_BAD_TYPE ||
					  r == -PROTO_E_BAD_FIELD,
				  "iter %u: result %ld", iter, r);
			counts[1 - r]++;
		}
	}
	for (int i = 0; i < 6; i++)
		cr_assert_gt(counts[i], 0, "outcome %d never seen", i);
	cr_assert_gt(inner_ok, 300, "only %ld inner frames parsed", inner_ok);
}

/* ---- names ------------------------------------------------------------------- */

Test(names, dist_type_names)
{
	static const struct {
		unsigned type;
		const char *name;
	} names[] = {
		{DIST_HELLO, "hello"},
		{DIST_BATCH, "batch"},
		{DIST_ROUTE, "route"},
		{DIST_SESSION_UP, "session_up"},
		{DIST_SESSION_DOWN, "session_down"},
		{DIST_STORE_ACK, "store_ack"},
		{DIST_RECEIPT, "receipt"},
		{DIST_CREDIT, "credit"},
		{DIST_HEARTBEAT, "heartbeat"},
		{DIST_GROUP_OP, "group_op"},
		{DIST_GROUP_RESULT, "group_result"},
		{DIST_KICK, "kick"},
		{DIST_ERROR, "error"},
		{DIST_AUTH, "auth"},
		{DIST_RECEIPT_ACK, "receipt_ack"},
		{DIST_HANDOFF, "handoff"},
		{DIST_HANDOFF_ACK, "handoff_ack"},
		{0, "unknown"},
		{0x40, "unknown"},
		{0x52, "unknown"},
		{0xff, "unknown"},
		{0x141, "unknown"},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		cr_assert_str_eq(dist_type_name(names[i].type), names[i].name, "type 0x%x", names[i].type);
}
