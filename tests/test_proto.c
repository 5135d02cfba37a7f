/* test_proto.c: criterion unit tests of the client protocol (proto/client.h)
 * and of the varint primitives it is built on (proto/wire.h).
 *
 * Every parse in here reads input placed flush against a PROT_NONE guard page
 * (the picohttpparser trick): the input's last byte is the last readable byte
 * of the mapping, so a parser that reads even one byte past `len` segfaults
 * instead of passing by luck. Truncation is tested at every byte boundary of
 * every frame the tests encode.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/wire.h"

/* ---- guard page ------------------------------------------------------------ */

/* Enough readable bytes in front of the guard for the largest client frame. */
#define GUARD_SPAN (64u * 1024u)

#define PB_CAP (PROTO_MAX_FRAME_BYTES + 64)
#include "tests/asan.h"
#include "tests/wirebuf.h"

/* proto_parse() on a copy of buf[0..len) that ends at the guard page. */
static long parse_guarded(const uint8_t *buf, size_t len, enum proto_dir dir, struct proto_frame *f)
{
	return proto_parse(at_guard(buf, len), len, dir, f);
}

/* The guard is what makes the over-read checks mean something: prove that
 * touching the byte after the input faults. ASan and UBSan turn SIGSEGV into
 * their own report and exit(1), so this one only runs in a plain build. */
Test(guard, faults_on_overread, .signal = SIGSEGV, .disabled = TEST_UNDER_ASAN)
{
	const volatile uint8_t *p = at_guard("ab", 2);
	cr_assert_eq(p[1], 'b');
	(void)p[2]; /* must not return */
	cr_assert_fail("read past the guard did not fault");
}

/* ---- byte builder ------------------------------------------------------------ */

static struct pb scratch_frame;

/* Parse type + payload as one frame placed at the guard. */
static long parse_payload(uint8_t type, const struct pb *pl, enum proto_dir dir, struct proto_frame *f)
{
	scratch_frame.n = mkframe(scratch_frame.b, type, pl->b, pl->n);
	return parse_guarded(scratch_frame.b, scratch_frame.n, dir, f);
}

/* ---- sample frames ------------------------------------------------------------ */

static enum proto_dir dir_of(uint8_t type)
{
	if (type == PROTO_RECEIPT || type == PROTO_PING || type == PROTO_PONG)
		return PROTO_FROM_ANY;
	return type < 0x80 ? PROTO_FROM_CLIENT : PROTO_FROM_SERVER;
}

#define BYTES(s) ((struct proto_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

/* Encoded member lists for the GROUP samples. */
static uint8_t members_buf[4][PROTO_MAX_GROUP_OP * 10];

/* An empty member list that still points somewhere: {NULL, 0} would be the
 * natural spelling, but proto_encode() then does NULL + 0 (see the disabled
 * test encoder/group_null_empty_members). */
static uint8_t no_members_buf[1];
#define NO_MEMBERS ((struct proto_bytes){no_members_buf, 0})

static struct proto_bytes put_members(unsigned slot, const uint64_t *ids, uint32_t n)
{
	uint8_t *p = members_buf[slot];
	for (uint32_t i = 0; i < n; i++)
		p = wire_uv_put(p, ids[i]);
	return (struct proto_bytes){members_buf[slot], (uint32_t)(p - members_buf[slot])};
}

static uint8_t token40[40];
static uint8_t token64[PROTO_MAX_TOKEN + 1];
static uint8_t bigbody[PROTO_MAX_BODY + 64];
static uint8_t bigtext[PROTO_MAX_TEXT + 1];
static const uint64_t ids3[] = {5, 300, PROTO_MAX_USER};
static uint64_t ids256[PROTO_MAX_GROUP_OP + 1];

struct sample {
	const char *what;
	struct proto_frame f;
};

/* One or more frames of every type, covering each variant the brief names. */
static struct sample samples[64];
static size_t nsamples;

static void add_sample(const char *what, struct proto_frame f)
{
	cr_assert_lt(nsamples, sizeof samples / sizeof samples[0]);
	samples[nsamples++] = (struct sample){what, f};
}

static void fill_data(void)
{
	for (size_t i = 0; i < sizeof token40; i++)
		token40[i] = (uint8_t)(0xa0 + i);
	for (size_t i = 0; i < sizeof token64; i++)
		token64[i] = (uint8_t)(i * 7);
	for (size_t i = 0; i < sizeof bigbody; i++)
		bigbody[i] = (uint8_t)(i * 31 + 1);
	memset(bigtext, 't', sizeof bigtext);
	for (size_t i = 0; i < sizeof ids256 / sizeof ids256[0]; i++)
		ids256[i] = PROTO_MAX_USER - i; /* 9-byte varints: the largest list of user ids */
}

static void build_samples(void)
{
	if (nsamples)
		return;
	fill_data();
	add_sample("login", (struct proto_frame){.type = PROTO_LOGIN,
						 .login = {.version = 1, .user = 42, .token = {token40, 40}}});
	add_sample("login max fields",
		   (struct proto_frame){.type = PROTO_LOGIN,
					.login = {.version = 255, .flags = 0xff, .user = PROTO_MAX_USER,
						  .token = {token64, PROTO_MAX_TOKEN}, .resume = UINT64_MAX}});
	add_sample("send 1:1", (struct proto_frame){.type = PROTO_SEND,
						    .send = {.cmid = 7, .to = 42, .body = BYTES("hello")}});
	add_sample("send group", (struct proto_frame){.type = PROTO_SEND,
						      .send = {.cmid = 0, .to = 1u << 20, .group = 1, .body = BYTES("x")}});
	add_sample("send max", (struct proto_frame){.type = PROTO_SEND,
						    .send = {.cmid = UINT64_MAX, .to = UINT64_MAX >> 1, .group = 1,
							     .body = {bigbody, PROTO_MAX_BODY}}});
	add_sample("receipt delivered",
		   (struct proto_frame){.type = PROTO_RECEIPT, .receipt = {.kind = PROTO_RCPT_DELIVERED, .peer = 9, .smid = 1000}});
	add_sample("receipt read", (struct proto_frame){.type = PROTO_RECEIPT,
							.receipt = {.kind = PROTO_RCPT_READ, .peer = PROTO_MAX_USER, .smid = 1}});
	add_sample("receipt ack", (struct proto_frame){.type = PROTO_RECEIPT,
						       .receipt = {.kind = PROTO_RCPT_ACK, .peer = 9, .smid = 1000}});
	add_sample("login version 0", (struct proto_frame){.type = PROTO_LOGIN,
							   .login = {.version = 0, .user = 42, .token = {token40, 40}}});
	add_sample("ping empty", (struct proto_frame){.type = PROTO_PING});
	add_sample("ping 8", (struct proto_frame){.type = PROTO_PING, .ping = {BYTES("12345678")}});
	add_sample("pong empty", (struct proto_frame){.type = PROTO_PONG});
	add_sample("pong 8", (struct proto_frame){.type = PROTO_PONG, .ping = {BYTES("\x00\xff\x01\x80\x7f\x00\x00\x02")}});
	add_sample("group create", (struct proto_frame){.type = PROTO_GROUP,
							.group = {.op = PROTO_GROUP_CREATE, .req = 3, .group = 0, .count = 3,
								  .members = put_members(0, ids3, 3)}});
	add_sample("group create empty", (struct proto_frame){.type = PROTO_GROUP,
							      .group = {.op = PROTO_GROUP_CREATE, .req = 4,
									.members = NO_MEMBERS}});
	add_sample("group add", (struct proto_frame){.type = PROTO_GROUP,
						     .group = {.op = PROTO_GROUP_ADD, .req = 5, .group = 77, .count = 2,
							       .members = put_members(1, ids3, 2)}});
	add_sample("group remove", (struct proto_frame){.type = PROTO_GROUP,
							.group = {.op = PROTO_GROUP_REMOVE, .req = UINT64_MAX, .group = UINT64_MAX,
								  .count = 1, .members = put_members(2, ids3 + 2, 1)}});
	add_sample("group leave", (struct proto_frame){.type = PROTO_GROUP,
						       .group = {.op = PROTO_GROUP_LEAVE, .req = 6, .group = 77,
								 .members = NO_MEMBERS}});
	add_sample("group 256 members",
		   (struct proto_frame){.type = PROTO_GROUP,
					.group = {.op = PROTO_GROUP_ADD, .req = 7, .group = 8, .count = PROTO_MAX_GROUP_OP,
						  .members = put_members(3, ids256, PROTO_MAX_GROUP_OP)}});
	add_sample("login_result ok",
		   (struct proto_frame){.type = PROTO_LOGIN_RESULT,
					.login_result = {.status = PROTO_OK, .version = 1, .time_ms = 1764195711000ull,
							 .keepalive_s = 30, .max_body = PROTO_MAX_BODY}});
	add_sample("login_result failed",
		   (struct proto_frame){.type = PROTO_LOGIN_RESULT,
					.login_result = {.status = PROTO_E_AUTH_FAILED, .version = 1, .time_ms = UINT64_MAX,
							 .keepalive_s = UINT32_MAX, .max_body = UINT32_MAX}});
	add_sample("ack accepted", (struct proto_frame){.type = PROTO_ACK,
							.ack = {.cmid = 7, .status = PROTO_ACK_ACCEPTED, .smid = 1}});
	add_sample("ack stored", (struct proto_frame){.type = PROTO_ACK,
						      .ack = {.cmid = 0, .status = PROTO_ACK_STORED, .smid = UINT64_MAX}});
	add_sample("deliver 1:1", (struct proto_frame){.type = PROTO_DELIVER,
						       .deliver = {.smid = 10, .from = 42, .time_ms = 1764195711000ull,
								   .body = BYTES("hi there")}});
	add_sample("deliver group", (struct proto_frame){.type = PROTO_DELIVER,
							 .deliver = {.flags = PROTO_DELIVER_GROUP, .smid = 11, .from = 42,
								     .group = 99, .time_ms = 0, .body = BYTES("g")}});
	add_sample("deliver with cmid", (struct proto_frame){.type = PROTO_DELIVER,
							     .deliver = {.flags = PROTO_DELIVER_CMID, .smid = 12, .from = 42,
									 .cmid = 7, .time_ms = 5, .body = BYTES("c")}});
	add_sample("deliver group with cmid max",
		   (struct proto_frame){.type = PROTO_DELIVER,
					.deliver = {.flags = PROTO_DELIVER_GROUP | PROTO_DELIVER_CMID, .smid = UINT64_MAX,
						    .from = UINT64_MAX, .group = UINT64_MAX, .cmid = UINT64_MAX,
						    .time_ms = UINT64_MAX, .body = {bigbody, PROTO_MAX_BODY - 10}}});
	add_sample("deliver group max",
		   (struct proto_frame){.type = PROTO_DELIVER,
					.deliver = {.flags = PROTO_DELIVER_GROUP, .smid = UINT64_MAX, .from = UINT64_MAX,
						    .group = UINT64_MAX, .time_ms = UINT64_MAX,
						    .body = {bigbody, PROTO_MAX_BODY}}});
	add_sample("error", (struct proto_frame){.type = PROTO_ERROR,
						 .error = {.code = PROTO_E_NO_ROUTE, .ref = 7, .text = BYTES("no route")}});
	add_sample("error no text", (struct proto_frame){.type = PROTO_ERROR, .error = {.code = PROTO_E_BAD_FIELD}});
	add_sample("error max text", (struct proto_frame){.type = PROTO_ERROR,
							  .error = {.code = 255, .ref = UINT64_MAX,
								    .text = {bigtext, PROTO_MAX_TEXT}}});
	add_sample("goaway", (struct proto_frame){.type = PROTO_GOAWAY, .goaway = {.reconnect_ms = 1500}});
	add_sample("goaway hint", (struct proto_frame){.type = PROTO_GOAWAY,
						       .goaway = {.reconnect_ms = UINT32_MAX, .hint = BYTES("gw2.example:7000")}});
	add_sample("goaway max hint", (struct proto_frame){.type = PROTO_GOAWAY,
							   .goaway = {.reconnect_ms = 0, .hint = {bigtext, PROTO_MAX_TEXT}}});
	add_sample("kicked elsewhere", (struct proto_frame){.type = PROTO_KICKED, .kicked = {PROTO_KICK_ELSEWHERE}});
	add_sample("kicked admin", (struct proto_frame){.type = PROTO_KICKED, .kicked = {PROTO_KICK_ADMIN}});
	add_sample("group_result ok", (struct proto_frame){.type = PROTO_GROUP_RESULT,
							   .group_result = {.req = 3, .status = PROTO_OK, .group = 1234}});
	add_sample("group_result err",
		   (struct proto_frame){.type = PROTO_GROUP_RESULT,
					.group_result = {.req = UINT64_MAX, .status = PROTO_E_NOT_MEMBER, .group = 0}});
}

/* ---- comparing frames ---------------------------------------------------------- */

static void bytes_eq(struct proto_bytes a, struct proto_bytes b, const char *what, const char *field)
{
	cr_assert_eq(a.len, b.len, "%s: %s length %u, expected %u", what, field, a.len, b.len);
	if (a.len)
		cr_assert(memcmp(a.p, b.p, a.len) == 0, "%s: %s bytes differ", what, field);
}

/* Field by field: the parsed frame `got` holds what `want` was encoded from. */
static void frame_eq(const struct proto_frame *got, const struct proto_frame *want, const char *what)
{
	cr_assert_eq(got->type, want->type, "%s: type 0x%02x, expected 0x%02x", what, got->type, want->type);
	switch (want->type) {
	case PROTO_LOGIN:
		cr_assert_eq(got->login.version, want->login.version, "%s", what);
		cr_assert_eq(got->login.flags, want->login.flags, "%s", what);
		cr_assert_eq(got->login.user, want->login.user, "%s", what);
		bytes_eq(got->login.token, want->login.token, what, "token");
		cr_assert_eq(got->login.resume, want->login.resume, "%s", what);
		break;
	case PROTO_SEND:
		cr_assert_eq(got->send.cmid, want->send.cmid, "%s", what);
		cr_assert_eq(got->send.to, want->send.to, "%s", what);
		cr_assert_eq(got->send.group, want->send.group, "%s", what);
		bytes_eq(got->send.body, want->send.body, what, "body");
		break;
	case PROTO_RECEIPT:
		cr_assert_eq(got->receipt.kind, want->receipt.kind, "%s", what);
		cr_assert_eq(got->receipt.peer, want->receipt.peer, "%s", what);
		cr_assert_eq(got->receipt.smid, want->receipt.smid, "%s", what);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		bytes_eq(got->ping.data, want->ping.data, what, "data");
		break;
	case PROTO_GROUP: {
		cr_assert_eq(got->group.op, want->group.op, "%s", what);
		cr_assert_eq(got->group.req, want->group.req, "%s", what);
		cr_assert_eq(got->group.group, want->group.group, "%s", what);
		cr_assert_eq(got->group.count, want->group.count, "%s", what);
		bytes_eq(got->group.members, want->group.members, what, "members");
		/* and the walker yields the same ids in order */
		const uint8_t *pg = got->group.members.p, *pw = want->group.members.p;
		uint64_t ug, uw;
		uint32_t n = 0;
		while (proto_members_next(&got->group.members, &pg, &ug)) {
			cr_assert(proto_members_next(&want->group.members, &pw, &uw), "%s: extra member", what);
			cr_assert_eq(ug, uw, "%s: member %u", what, n);
			n++;
		}
		cr_assert_eq(n, want->group.count, "%s: walked %u members", what, n);
		break;
	}
	case PROTO_LOGIN_RESULT:
		cr_assert_eq(got->login_result.status, want->login_result.status, "%s", what);
		cr_assert_eq(got->login_result.version, want->login_result.version, "%s", what);
		cr_assert_eq(got->login_result.time_ms, want->login_result.time_ms, "%s", what);
		cr_assert_eq(got->login_result.keepalive_s, want->login_result.keepalive_s, "%s", what);
		cr_assert_eq(got->login_result.max_body, want->login_result.max_body, "%s", what);
		break;
	case PROTO_ACK:
		cr_assert_eq(got->ack.cmid, want->ack.cmid, "%s", what);
		cr_assert_eq(got->ack.status, want->ack.status, "%s", what);
		cr_assert_eq(got->ack.smid, want->ack.smid, "%s", what);
		break;
	case PROTO_DELIVER:
		cr_assert_eq(got->deliver.flags, want->deliver.flags, "%s", what);
		cr_assert_eq(got->deliver.smid, want->deliver.smid, "%s", what);
		cr_assert_eq(got->deliver.from, want->deliver.from, "%s", what);
		cr_assert_eq(got->deliver.group, want->deliver.group, "%s", what);
		cr_assert_eq(got->deliver.time_ms, want->deliver.time_ms, "%s", what);
		bytes_eq(got->deliver.body, want->deliver.body, what, "body");
		break;
	case PROTO_ERROR:
		cr_assert_eq(got->error.code, want->error.code, "%s", what);
		cr_assert_eq(got->error.ref, want->error.ref, "%s", what);
		bytes_eq(got->error.text, want->error.text, what, "text");
		break;
	case PROTO_GOAWAY:
		cr_assert_eq(got->goaway.reconnect_ms, want->goaway.reconnect_ms, "%s", what);
		bytes_eq(got->goaway.hint, want->goaway.hint, what, "hint");
		break;
	case PROTO_KICKED:
		cr_assert_eq(got->kicked.reason, want->kicked.reason, "%s", what);
		break;
	case PROTO_GROUP_RESULT:
		cr_assert_eq(got->group_result.req, want->group_result.req, "%s", what);
		cr_assert_eq(got->group_result.status, want->group_result.status, "%s", what);
		cr_assert_eq(got->group_result.group, want->group_result.group, "%s", what);
		break;
	default:
		cr_assert_fail("%s: no comparison for type 0x%02x", what, want->type);
	}
}

/* A view the parser returned must point inside the parsed frame. */
static void view_inside(struct proto_bytes b, const uint8_t *buf, size_t n, const char *what)
{
	if (b.len == 0)
		return;
	cr_assert(b.p >= buf && b.p + b.len <= buf + n, "%s: view not inside the input", what);
}

static void views_inside(const struct proto_frame *f, const uint8_t *buf, size_t n, const char *what)
{
	switch (f->type) {
	case PROTO_LOGIN: view_inside(f->login.token, buf, n, what); break;
	case PROTO_SEND: view_inside(f->send.body, buf, n, what); break;
	case PROTO_PING:
	case PROTO_PONG: view_inside(f->ping.data, buf, n, what); break;
	case PROTO_GROUP: view_inside(f->group.members, buf, n, what); break;
	case PROTO_DELIVER: view_inside(f->deliver.body, buf, n, what); break;
	case PROTO_ERROR: view_inside(f->error.text, buf, n, what); break;
	case PROTO_GOAWAY: view_inside(f->goaway.hint, buf, n, what); break;
	default: break;
	}
}

static uint8_t enc[PROTO_MAX_FRAME_BYTES + 64];
static uint8_t enc2[PROTO_MAX_FRAME_BYTES + 64];

/* ---- round trips -------------------------------------------------------------- */

Test(roundtrip, every_type)
{
	build_samples();
	unsigned seen[256] = {0};
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		size_t n = proto_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0, "%s: encoder refused a valid frame", s->what);
		cr_assert_leq(n, PROTO_MAX_FRAME_BYTES, "%s", s->what);
		enum proto_dir dirs[2] = {dir_of(s->f.type), PROTO_FROM_ANY};
		for (int d = 0; d < 2; d++) {
			struct proto_frame got;
			memset(&got, 0xee, sizeof got);
			const uint8_t *in = at_guard(enc, n);
			long r = proto_parse(in, n, dirs[d], &got);
			cr_assert_eq(r, (long)n, "%s (dir %d): parse returned %ld, encoded %zu", s->what, dirs[d], r, n);
			cr_assert_eq(got.size, n, "%s: size %u", s->what, got.size);
			frame_eq(&got, &s->f, s->what);
			views_inside(&got, in, n, s->what);
			/* and encoding what was parsed gives the same bytes back */
			size_t n2 = proto_encode(&got, enc2, sizeof enc2);
			cr_assert_eq(n2, n, "%s: re-encode size", s->what);
			cr_assert(memcmp(enc, enc2, n) == 0, "%s: re-encode differs", s->what);
		}
		seen[s->f.type]++;
	}
	static const uint8_t all[] = {PROTO_LOGIN, PROTO_SEND, PROTO_RECEIPT, PROTO_PING, PROTO_PONG,
				      PROTO_GROUP, PROTO_LOGIN_RESULT, PROTO_ACK, PROTO_DELIVER, PROTO_ERROR,
				      PROTO_GOAWAY, PROTO_KICKED, PROTO_GROUP_RESULT};
	for (size_t i = 0; i < sizeof all; i++)
		cr_assert(seen[all[i]] > 0, "no sample of type %s", proto_type_name(all[i]));
}

/* One-way types parse only in their direction. */
Test(roundtrip, direction_enforced)
{
	build_samples();
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		enum proto_dir d = dir_of(s->f.type);
		if (d == PROTO_FROM_ANY)
			continue;
		size_t n = proto_encode(&s->f, enc, sizeof enc);
		struct proto_frame got;
		enum proto_dir other = d == PROTO_FROM_CLIENT ? PROTO_FROM_SERVER : PROTO_FROM_CLIENT;
		cr_assert_eq(parse_guarded(enc, n, other, &got), -PROTO_E_BAD_TYPE, "%s from the wrong side", s->what);
	}
}

/* The two examples in PROTOCOL.md, byte for byte. */
Test(roundtrip, protocol_md_examples)
{
	struct proto_frame f = {.type = PROTO_PING};
	cr_assert_eq(proto_encode(&f, enc, sizeof enc), 2);
	cr_assert(memcmp(enc, "\x01\x04", 2) == 0);

	static const uint8_t hello[] = {0x08, 0x02, 0x07, 0x54, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
	f = (struct proto_frame){.type = PROTO_SEND, .send = {.cmid = 7, .to = 42, .body = BYTES("hello")}};
	cr_assert_eq(proto_encode(&f, enc, sizeof enc), sizeof hello);
	cr_assert(memcmp(enc, hello, sizeof hello) == 0);
	struct proto_frame got;
	cr_assert_eq(parse_guarded(hello, sizeof hello, PROTO_FROM_CLIENT, &got), (long)sizeof hello);
	cr_assert_eq(got.send.to, 42);
	cr_assert_eq(got.send.cmid, 7);
	cr_assert_eq(got.send.group, 0);
}

/* The hot encoders produce exactly what proto_encode() does for the same frame. */
static void same_as_encode(size_t hot, const struct proto_frame *f, const uint8_t *hotbuf, const char *what)
{
	size_t n = proto_encode(f, enc2, sizeof enc2);
	cr_assert_gt(n, 0, "%s", what);
	cr_assert_eq(hot, n, "%s: hot encoder size %zu, proto_encode %zu", what, hot, n);
	cr_assert(memcmp(hotbuf, enc2, n) == 0, "%s: hot encoder bytes differ", what);
	struct proto_frame got;
	cr_assert_eq(parse_guarded(hotbuf, hot, PROTO_FROM_ANY, &got), (long)n, "%s", what);
	frame_eq(&got, f, what);
}

Test(hot, encoders_match_proto_encode)
{
	fill_data();
	struct proto_frame f;
	size_t n;

	f = (struct proto_frame){.type = PROTO_DELIVER,
				 .deliver = {.smid = 10, .from = 42, .time_ms = 123456, .body = BYTES("hi")}};
	n = proto_enc_deliver(enc, sizeof enc, 10, 42, 0, 123456, (const uint8_t *)"hi", 2);
	same_as_encode(n, &f, enc, "deliver 1:1");
	f = (struct proto_frame){.type = PROTO_DELIVER,
				 .deliver = {.flags = PROTO_DELIVER_GROUP, .smid = UINT64_MAX, .from = UINT64_MAX,
					     .group = UINT64_MAX, .time_ms = UINT64_MAX, .body = {bigbody, PROTO_MAX_BODY}}};
	n = proto_enc_deliver(enc, sizeof enc, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, bigbody, PROTO_MAX_BODY);
	same_as_encode(n, &f, enc, "deliver group max");

	for (uint8_t st = PROTO_ACK_ACCEPTED; st <= PROTO_ACK_STORED; st++) {
		f = (struct proto_frame){.type = PROTO_ACK, .ack = {.cmid = 300, .status = st, .smid = 1ull << 40}};
		n = proto_enc_ack(enc, sizeof enc, 300, st, 1ull << 40);
		same_as_encode(n, &f, enc, st ? "ack stored" : "ack accepted");
	}

	f = (struct proto_frame){.type = PROTO_ERROR, .error = {.code = PROTO_E_TRY_AGAIN, .ref = 9, .text = BYTES("later")}};
	n = proto_enc_error(enc, sizeof enc, PROTO_E_TRY_AGAIN, 9, "later");
	same_as_encode(n, &f, enc, "error text");
	f = (struct proto_frame){.type = PROTO_ERROR, .error = {.code = PROTO_E_BAD_FRAME}};
	n = proto_enc_error(enc, sizeof enc, PROTO_E_BAD_FRAME, 0, NULL);
	same_as_encode(n, &f, enc, "error NULL text");
	n = proto_enc_error(enc, sizeof enc, PROTO_E_BAD_FRAME, 0, "");
	same_as_encode(n, &f, enc, "error empty text");

	f = (struct proto_frame){.type = PROTO_SEND, .send = {.cmid = 1, .to = 2, .body = BYTES("b")}};
	n = proto_enc_send(enc, sizeof enc, 1, 2, 0, (const uint8_t *)"b", 1);
	same_as_encode(n, &f, enc, "send 1:1");
	f = (struct proto_frame){.type = PROTO_SEND,
				 .send = {.cmid = UINT64_MAX, .to = UINT64_MAX >> 1, .group = 1, .body = {bigbody, PROTO_MAX_BODY}}};
	n = proto_enc_send(enc, sizeof enc, UINT64_MAX, UINT64_MAX >> 1, 1, bigbody, PROTO_MAX_BODY);
	same_as_encode(n, &f, enc, "send group max");
	/* any non-zero `group` argument means a group send */
	n = proto_enc_send(enc, sizeof enc, UINT64_MAX, UINT64_MAX >> 1, 7, bigbody, PROTO_MAX_BODY);
	same_as_encode(n, &f, enc, "send group=7");
}

Test(hot, encoders_refuse_invalid)
{
	fill_data();
	cr_assert_eq(proto_enc_deliver(enc, sizeof enc, 0, 1, 0, 0, bigbody, 1), 0, "smid 0");
	cr_assert_eq(proto_enc_deliver(enc, sizeof enc, 1, 0, 0, 0, bigbody, 1), 0, "from 0");
	cr_assert_eq(proto_enc_deliver(enc, sizeof enc, 1, 1, 0, 0, bigbody, 0), 0, "empty body");
	cr_assert_eq(proto_enc_deliver(enc, sizeof enc, 1, 1, 0, 0, bigbody, PROTO_MAX_BODY + 1), 0, "body too big");
	cr_assert_eq(proto_enc_ack(enc, sizeof enc, 1, 2, 1), 0, "ack status 2");
	cr_assert_eq(proto_enc_ack(enc, sizeof enc, 1, 0, 0), 0, "ack smid 0");
	cr_assert_eq(proto_enc_error(enc, sizeof enc, 0, 0, "x"), 0, "error code 0");
	cr_assert_eq(proto_enc_send(enc, sizeof enc, 1, 0, 0, bigbody, 1), 0, "send to 0");
	cr_assert_eq(proto_enc_send(enc, sizeof enc, 1, (UINT64_MAX >> 1) + 1, 0, bigbody, 1), 0, "send to > 2^63-1");
	cr_assert_eq(proto_enc_send(enc, sizeof enc, 1, 1, 0, bigbody, 0), 0, "send empty body");
	cr_assert_eq(proto_enc_send(enc, sizeof enc, 1, 1, 0, bigbody, PROTO_MAX_BODY + 1), 0, "send body too big");

	/* A text over PROTO_MAX_TEXT: proto_encode() refuses the frame, while
	 * proto_enc_error() cuts the text to PROTO_MAX_TEXT bytes (client.c);
	 * client.h does not say which. Either way it must not emit a frame the
	 * parser rejects. */
	char longtext[PROTO_MAX_TEXT + 50];
	memset(longtext, 'l', sizeof longtext - 1);
	longtext[sizeof longtext - 1] = 0;
	size_t n = proto_enc_error(enc, sizeof enc, PROTO_E_INTERNAL, 3, longtext);
	if (n) {
		struct proto_frame f;
		cr_assert_eq(parse_guarded(enc, n, PROTO_FROM_SERVER, &f), (long)n, "long error text");
		cr_assert_leq(f.error.text.len, PROTO_MAX_TEXT);
	}
}

/* ---- truncation ------------------------------------------------------------- */

/* Every strict prefix of a valid frame needs more, asks for a sensible amount
 * and reads nothing past its end; the whole frame parses. */
static void check_truncations(const uint8_t *frame, size_t n, enum proto_dir dir, const char *what)
{
	struct proto_frame f;
	const uint8_t *q = frame;
	uint64_t flen;
	cr_assert_eq(wire_uv_get(&q, frame + n, &flen), 1, "%s: bad prefix", what);
	size_t hdr = (size_t)(q - frame);
	cr_assert_eq(hdr + flen, n, "%s: prefix says %llu", what, (unsigned long long)flen);
	for (size_t k = 0; k < n; k++) {
		f.need = 0;
		long r = parse_guarded(frame, k, dir, &f);
		cr_assert_eq(r, PROTO_NEED_MORE, "%s: %zu of %zu bytes gave %ld", what, k, n, r);
		cr_assert_gt(f.need, k, "%s: %zu of %zu bytes: need %u", what, k, n, f.need);
		cr_assert_leq(f.need, n, "%s: %zu of %zu bytes: need %u", what, k, n, f.need);
		/* once the prefix is complete the parser knows the exact size */
		if (k >= hdr)
			cr_assert_eq(f.need, n, "%s: %zu of %zu bytes (prefix complete): need %u", what, k, n, f.need);
	}
	cr_assert_eq(parse_guarded(frame, n, dir, &f), (long)n, "%s: whole frame", what);
}

Test(truncation, every_boundary_of_every_sample)
{
	build_samples();
	for (size_t i = 0; i < nsamples; i++) {
		size_t n = proto_encode(&samples[i].f, enc, sizeof enc);
		cr_assert_gt(n, 0);
		check_truncations(enc, n, dir_of(samples[i].f.type), samples[i].what);
		check_truncations(enc, n, PROTO_FROM_ANY, samples[i].what);
	}
}

/* A stream split anywhere: feed frames one byte at a time as a receive loop
 * would, parsing whatever has arrived; each frame comes out exactly once. */
Test(truncation, byte_at_a_time_stream)
{
	build_samples();
	static uint8_t stream[1u << 17];
	size_t len = 0;
	for (size_t i = 0; i < nsamples; i++)
		len += proto_encode(&samples[i].f, stream + len, sizeof stream - len);
	size_t start = 0, got = 0;
	for (size_t have = 0; have <= len; have++) {
		struct proto_frame f;
		long r = parse_guarded(stream + start, have - start, PROTO_FROM_ANY, &f);
		cr_assert_geq(r, 0, "error %ld at offset %zu", r, start);
		if (r > 0) {
			frame_eq(&f, &samples[got].f, samples[got].what);
			start += (size_t)r;
			got++;
		} else {
			cr_assert_gt(f.need, have - start);
		}
	}
	cr_assert_eq(got, nsamples);
	cr_assert_eq(start, len);
}

/* ---- parse errors ------------------------------------------------------------- */

static long parse_hex(const char *hex, enum proto_dir dir, struct proto_frame *f, size_t *len)
{
	static struct pb in;
	in.n = 0;
	pb_hex(&in, hex);
	if (len)
		*len = in.n;
	return parse_guarded(in.b, in.n, dir, f);
}

Test(errors, bad_frame)
{
	struct proto_frame f;
	cr_assert_eq(parse_hex("00", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "L = 0");
	cr_assert_eq(parse_hex("00 04", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "L = 0, more bytes");
	cr_assert_eq(parse_hex("80 00", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "non-minimal 0");
	cr_assert_eq(parse_hex("81 00 04", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "non-minimal 1");
	cr_assert_eq(parse_hex("80 80 00", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "3-byte non-minimal");
	cr_assert_eq(parse_hex("ff 80 00", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_FRAME, "3-byte non-minimal 127");
	/* the smallest frame: L = 1, a bare PING */
	cr_assert_eq(parse_hex("01 04", PROTO_FROM_ANY, &f, NULL), 2);
}

Test(errors, too_big)
{
	struct proto_frame f;
	uint8_t p[4];
	size_t n = (size_t)(wire_uv_put(p, PROTO_MAX_FRAME + 1) - p);
	cr_assert_eq(n, 3);
	/* decided from the prefix alone, without waiting for the payload */
	cr_assert_eq(parse_guarded(p, n, PROTO_FROM_ANY, &f), -PROTO_E_TOO_BIG, "L = MAX+1");
	cr_assert_eq(parse_hex("80 80 80", PROTO_FROM_ANY, &f, NULL), -PROTO_E_TOO_BIG, "3 continuation bytes");
	cr_assert_eq(parse_hex("ff ff ff", PROTO_FROM_ANY, &f, NULL), -PROTO_E_TOO_BIG, "3 continuation bytes");
	cr_assert_eq(parse_hex("ff ff ff 7f", PROTO_FROM_ANY, &f, NULL), -PROTO_E_TOO_BIG, "4-byte prefix");
	cr_assert_eq(parse_hex("ff ff 7f", PROTO_FROM_ANY, &f, NULL), -PROTO_E_TOO_BIG, "2^21-1");
	/* exactly the limit is fine: it waits for the frame */
	n = (size_t)(wire_uv_put(p, PROTO_MAX_FRAME) - p);
	cr_assert_eq(parse_guarded(p, n, PROTO_FROM_ANY, &f), PROTO_NEED_MORE);
	cr_assert_eq(f.need, n + PROTO_MAX_FRAME);
	/* two prefix bytes with continuation: still undecided */
	cr_assert_eq(parse_hex("80 80", PROTO_FROM_ANY, &f, NULL), PROTO_NEED_MORE);
	cr_assert_eq(f.need, 3);
}

Test(errors, bad_type)
{
	struct proto_frame f;
	static const enum proto_dir dirs[] = {PROTO_FROM_CLIENT, PROTO_FROM_SERVER, PROTO_FROM_ANY};
	for (size_t d = 0; d < 3; d++) {
		cr_assert_eq(parse_hex("01 00", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0x00");
		cr_assert_eq(parse_hex("01 7f", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0x7f");
		cr_assert_eq(parse_hex("01 ff", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0xff");
		cr_assert_eq(parse_hex("01 80", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0x80");
		cr_assert_eq(parse_hex("01 07", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0x07");
		cr_assert_eq(parse_hex("01 88", dirs[d], &f, NULL), -PROTO_E_BAD_TYPE, "type 0x88");
	}
	/* every server type from a client, every client-only type from the server */
	for (unsigned t = PROTO_LOGIN_RESULT; t <= PROTO_GROUP_RESULT; t++) {
		uint8_t b[2] = {1, (uint8_t)t};
		cr_assert_eq(parse_guarded(b, 2, PROTO_FROM_CLIENT, &f), -PROTO_E_BAD_TYPE, "0x%02x from client", t);
	}
	static const uint8_t client_only[] = {PROTO_LOGIN, PROTO_SEND, PROTO_GROUP};
	for (size_t i = 0; i < sizeof client_only; i++) {
		uint8_t b[2] = {1, client_only[i]};
		cr_assert_eq(parse_guarded(b, 2, PROTO_FROM_SERVER, &f), -PROTO_E_BAD_TYPE, "0x%02x from server",
			     client_only[i]);
	}
	/* decided as soon as the type byte is there, with the payload missing */
	cr_assert_eq(parse_hex("10 83", PROTO_FROM_CLIENT, &f, NULL), -PROTO_E_BAD_TYPE, "DELIVER from client");
	cr_assert_eq(parse_hex("c0 80 01 81", PROTO_FROM_CLIENT, &f, NULL), -PROTO_E_BAD_TYPE, "3-byte prefix");
	cr_assert_eq(parse_hex("7f 01", PROTO_FROM_SERVER, &f, NULL), -PROTO_E_BAD_TYPE, "LOGIN from server");
	cr_assert_eq(parse_hex("10 00", PROTO_FROM_ANY, &f, NULL), -PROTO_E_BAD_TYPE, "type 0 incomplete");
	/* the same frames in their own direction just wait */
	cr_assert_eq(parse_hex("10 83", PROTO_FROM_SERVER, &f, NULL), PROTO_NEED_MORE);
	cr_assert_eq(f.need, 17);
	cr_assert_eq(parse_hex("7f 01", PROTO_FROM_CLIENT, &f, NULL), PROTO_NEED_MORE);
	cr_assert_eq(f.need, 128);
	/* RECEIPT, PING and PONG are fine both ways */
	cr_assert_eq(parse_hex("01 04", PROTO_FROM_SERVER, &f, NULL), 2);
	cr_assert_eq(parse_hex("01 05", PROTO_FROM_CLIENT, &f, NULL), 2);
	cr_assert_eq(parse_hex("04 03 01 05 07", PROTO_FROM_SERVER, &f, NULL), 5);
	cr_assert_eq(parse_hex("04 03 01 05 07", PROTO_FROM_CLIENT, &f, NULL), 5);
}

/* Payload cases: the type, its payload in hex, and the result expected with
 * PROTO_FROM_ANY. OK cases sit next to the bad ones they differ from by one
 * field, so each bad case fails for the reason its name gives. */
#define OK 1
#define BAD (-PROTO_E_BAD_FIELD)
struct pcase {
	const char *name;
	uint8_t type;
	const char *hex;
	long want;
};

static const struct pcase payload_cases[] = {
	{"login", PROTO_LOGIN, "01 00 2a 01 78 00", OK},
	{"login version 0 (answered with status version)", PROTO_LOGIN, "00 00 2a 01 78 00", OK},
	{"login user 2^63-1", PROTO_LOGIN, "01 00 ff ff ff ff ff ff ff ff 7f 01 78 00", OK},
	{"login user 2^63", PROTO_LOGIN, "01 00 80 80 80 80 80 80 80 80 80 01 01 78 00", BAD},
	{"login zero user", PROTO_LOGIN, "01 00 00 01 78 00", BAD},
	{"login token length 0", PROTO_LOGIN, "01 00 2a 00 00", BAD},
	{"login token overruns", PROTO_LOGIN, "01 00 2a 05 78 00", BAD},
	{"login resume missing", PROTO_LOGIN, "01 00 2a 01 78", BAD},
	{"login trailing byte", PROTO_LOGIN, "01 00 2a 01 78 00 00", BAD},
	{"login non-minimal user", PROTO_LOGIN, "01 00 aa 00 01 78 00", BAD},
	{"login user varint runs off", PROTO_LOGIN, "01 00 aa", BAD},
	{"login resume 2^64-1", PROTO_LOGIN, "01 00 2a 01 78 ff ff ff ff ff ff ff ff ff 01", OK},
	{"login resume 11-byte varint", PROTO_LOGIN, "01 00 2a 01 78 ff ff ff ff ff ff ff ff ff ff 01", BAD},
	{"login resume 10th byte 02", PROTO_LOGIN, "01 00 2a 01 78 ff ff ff ff ff ff ff ff ff 02", BAD},
	{"login resume 10 bytes non-minimal", PROTO_LOGIN, "01 00 2a 01 78 ff ff ff ff ff ff ff ff ff 00", BAD},
	{"login flags unknown bits ignored", PROTO_LOGIN, "01 ff 2a 01 78 00", OK},
	{"login empty", PROTO_LOGIN, "", BAD},

	{"send", PROTO_SEND, "07 54 68 65 6c 6c 6f", OK},
	{"send group", PROTO_SEND, "07 55 68", OK},
	{"send zero recipient", PROTO_SEND, "07 00 68", BAD},
	{"send zero group", PROTO_SEND, "07 01 68", BAD},
	{"send empty body", PROTO_SEND, "07 54", BAD},
	{"send non-minimal cmid", PROTO_SEND, "87 00 54 68", BAD},
	{"send to runs off", PROTO_SEND, "07 d4", BAD},
	{"send empty", PROTO_SEND, "", BAD},

	{"receipt delivered", PROTO_RECEIPT, "01 05 07", OK},
	{"receipt read", PROTO_RECEIPT, "02 05 07", OK},
	{"receipt kind 0", PROTO_RECEIPT, "00 05 07", BAD},
	{"receipt kind 3 (ack, from a client)", PROTO_RECEIPT, "03 05 07", OK},
	{"receipt kind 4", PROTO_RECEIPT, "04 05 07", BAD},
	{"receipt peer 2^63", PROTO_RECEIPT, "01 80 80 80 80 80 80 80 80 80 01 07", BAD},
	{"receipt zero peer", PROTO_RECEIPT, "01 00 07", BAD},
	{"receipt zero smid", PROTO_RECEIPT, "01 05 00", BAD},
	{"receipt smid missing", PROTO_RECEIPT, "01 05", BAD},
	{"receipt trailing byte", PROTO_RECEIPT, "01 05 07 00", BAD},

	{"ping empty", PROTO_PING, "", OK},
	{"ping 8", PROTO_PING, "01 02 03 04 05 06 07 08", OK},
	{"ping 9", PROTO_PING, "01 02 03 04 05 06 07 08 09", BAD},
	{"pong 8", PROTO_PONG, "01 02 03 04 05 06 07 08", OK},
	{"pong 9", PROTO_PONG, "01 02 03 04 05 06 07 08 09", BAD},

	{"group create", PROTO_GROUP, "01 09 00 02 05 06", OK},
	{"group add", PROTO_GROUP, "02 09 11 01 05", OK},
	{"group remove", PROTO_GROUP, "03 09 11 01 05", OK},
	{"group leave", PROTO_GROUP, "04 09 11 00", OK},
	{"group create names a group", PROTO_GROUP, "01 09 11 00", BAD},
	{"group add without group", PROTO_GROUP, "02 09 00 01 05", BAD},
	{"group op 0", PROTO_GROUP, "00 09 11 00", BAD},
	{"group op 5", PROTO_GROUP, "05 09 11 00", BAD},
	{"group zero member", PROTO_GROUP, "02 09 11 02 05 00", BAD},
	{"group count over list", PROTO_GROUP, "02 09 11 03 05 06", BAD},
	{"group count under list", PROTO_GROUP, "02 09 11 01 05 06", BAD},
	{"group non-minimal member", PROTO_GROUP, "02 09 11 01 85 00", BAD},
	{"group member 2^63", PROTO_GROUP, "02 09 11 01 80 80 80 80 80 80 80 80 80 01", BAD},
	{"group count missing", PROTO_GROUP, "02 09 11", BAD},

	{"login_result", PROTO_LOGIN_RESULT, "00 01 e8 07 1e 80 80 01", OK},
	{"login_result keepalive 2^32-1", PROTO_LOGIN_RESULT, "00 01 00 ff ff ff ff 0f 00", OK},
	{"login_result keepalive 2^32", PROTO_LOGIN_RESULT, "00 01 00 80 80 80 80 10 00", BAD},
	{"login_result max_body 2^32", PROTO_LOGIN_RESULT, "00 01 00 1e 80 80 80 80 10", BAD},
	{"login_result max_body missing", PROTO_LOGIN_RESULT, "00 01 00 1e", BAD},
	{"login_result trailing byte", PROTO_LOGIN_RESULT, "00 01 00 1e 01 00", BAD},

	{"ack accepted", PROTO_ACK, "07 00 09", OK},
	{"ack stored", PROTO_ACK, "07 01 09", OK},
	{"ack status 2", PROTO_ACK, "07 02 09", BAD},
	{"ack zero smid", PROTO_ACK, "07 00 00", BAD},
	{"ack smid missing", PROTO_ACK, "07 00", BAD},

	{"deliver 1:1", PROTO_DELIVER, "00 09 2a 64 68 69", OK},
	{"deliver group", PROTO_DELIVER, "01 09 2a 11 64 68 69", OK},
	{"deliver cmid", PROTO_DELIVER, "02 09 2a 07 64 68 69", OK},
	{"deliver group and cmid", PROTO_DELIVER, "03 09 2a 11 07 64 68 69", OK},
	{"deliver cmid flag, cmid missing", PROTO_DELIVER, "02 09 2a", BAD},
	{"deliver flag bit 2", PROTO_DELIVER, "04 09 2a 64 68 69", BAD},
	{"deliver flag bit 7", PROTO_DELIVER, "80 09 2a 64 68 69", BAD},
	{"deliver zero smid", PROTO_DELIVER, "00 00 2a 64 68 69", BAD},
	{"deliver zero from", PROTO_DELIVER, "00 09 00 64 68 69", BAD},
	{"deliver group flag, zero group", PROTO_DELIVER, "01 09 2a 00 64 68 69", BAD},
	{"deliver empty body", PROTO_DELIVER, "00 09 2a 64", BAD},

	{"error", PROTO_ERROR, "20 07 6e 6f", OK},
	{"error no text", PROTO_ERROR, "04 00", OK},
	{"error code 0", PROTO_ERROR, "00 00", BAD},
	{"error ref missing", PROTO_ERROR, "04", BAD},

	{"goaway", PROTO_GOAWAY, "e8 07", OK},
	{"goaway hint", PROTO_GOAWAY, "e8 07 68 3a 31", OK},
	{"goaway reconnect 2^32", PROTO_GOAWAY, "80 80 80 80 10", BAD},
	{"goaway empty", PROTO_GOAWAY, "", BAD},

	{"kicked 1", PROTO_KICKED, "01", OK},
	{"kicked 2", PROTO_KICKED, "02", OK},
	{"kicked reason 0", PROTO_KICKED, "00", BAD},
	{"kicked empty", PROTO_KICKED, "", BAD},
	{"kicked trailing byte", PROTO_KICKED, "01 00", BAD},

	{"group_result", PROTO_GROUP_RESULT, "09 00 11", OK},
	{"group_result error", PROTO_GROUP_RESULT, "09 24 00", OK},
	{"group_result group missing", PROTO_GROUP_RESULT, "09 00", BAD},
	{"group_result trailing byte", PROTO_GROUP_RESULT, "09 00 11 00", BAD},
};

Test(errors, bad_field_table)
{
	static struct pb pl;
	for (size_t i = 0; i < sizeof payload_cases / sizeof payload_cases[0]; i++) {
		const struct pcase *c = &payload_cases[i];
		pl.n = 0;
		pb_hex(&pl, c->hex);
		struct proto_frame f;
		long r = parse_payload(c->type, &pl, PROTO_FROM_ANY, &f);
		if (c->want == OK) {
			cr_assert_eq(r, (long)scratch_frame.n, "%s: got %ld, expected the frame (%zu bytes)", c->name, r,
				     scratch_frame.n);
			/* what parses also encodes, to the same bytes */
			size_t n = proto_encode(&f, enc, sizeof enc);
			cr_assert_eq(n, scratch_frame.n, "%s: re-encode size", c->name);
			cr_assert(memcmp(enc, scratch_frame.b, n) == 0, "%s: re-encode differs", c->name);
		} else {
			cr_assert_eq(r, c->want, "%s: got %ld, expected %ld", c->name, r, c->want);
		}
	}
}

/* Build the payloads of the large cases (body, token, text, members, 256) */
static void send_payload(struct pb *pl, uint32_t body)
{
	pl->n = 0;
	pb_uv(pl, 7);
	pb_uv(pl, 42 << 1);
	pb_raw(pl, bigbody, body);
}

Test(errors, limits_in_parser)
{
	fill_data();
	static struct pb pl;
	struct proto_frame f;

	/* SEND body: 16384 accepted, 16385 rejected though the frame is well under PROTO_MAX_FRAME */
	send_payload(&pl, PROTO_MAX_BODY);
	cr_assert_gt(parse_payload(PROTO_SEND, &pl, PROTO_FROM_CLIENT, &f), 0);
	cr_assert_eq(f.send.body.len, PROTO_MAX_BODY);
	send_payload(&pl, PROTO_MAX_BODY + 1);
	cr_assert_lt(pl.n + 1, PROTO_MAX_FRAME);
	cr_assert_eq(parse_payload(PROTO_SEND, &pl, PROTO_FROM_CLIENT, &f), BAD, "body MAX+1");
	/* L exactly PROTO_MAX_FRAME: framing is fine, the body is what is too long */
	send_payload(&pl, PROTO_MAX_FRAME - 3);
	cr_assert_eq(pl.n + 1, PROTO_MAX_FRAME);
	cr_assert_eq(parse_payload(PROTO_SEND, &pl, PROTO_FROM_CLIENT, &f), BAD, "L = MAX_FRAME");
	/* one more byte and it is the frame that is too big */
	send_payload(&pl, PROTO_MAX_FRAME - 2);
	cr_assert_eq(parse_payload(PROTO_SEND, &pl, PROTO_FROM_CLIENT, &f), -PROTO_E_TOO_BIG, "L = MAX_FRAME+1");

	/* DELIVER with group, every varint at 10 bytes, max body */
	for (uint32_t body = PROTO_MAX_BODY; body <= PROTO_MAX_BODY + 1; body++) {
		pl.n = 0;
		pb_u8(&pl, PROTO_DELIVER_GROUP);
		for (int i = 0; i < 4; i++)
			pb_uv(&pl, UINT64_MAX);
		pb_raw(&pl, bigbody, body);
		long r = parse_payload(PROTO_DELIVER, &pl, PROTO_FROM_SERVER, &f);
		if (body == PROTO_MAX_BODY) {
			cr_assert_eq(r, (long)scratch_frame.n, "deliver max");
			cr_assert_eq(f.deliver.group, UINT64_MAX);
			cr_assert_eq(f.deliver.body.len, PROTO_MAX_BODY);
		} else {
			cr_assert_eq(r, BAD, "deliver body MAX+1");
		}
	}

	/* token: 64 accepted, 65 rejected */
	for (uint32_t tl = PROTO_MAX_TOKEN; tl <= PROTO_MAX_TOKEN + 1; tl++) {
		pl.n = 0;
		pb_u8(&pl, 1);
		pb_u8(&pl, 0);
		pb_uv(&pl, 42);
		pb_uv(&pl, tl);
		pb_raw(&pl, token64, tl);
		pb_uv(&pl, 0);
		long r = parse_payload(PROTO_LOGIN, &pl, PROTO_FROM_CLIENT, &f);
		if (tl == PROTO_MAX_TOKEN) {
			cr_assert_eq(r, (long)scratch_frame.n, "token 64");
			cr_assert_eq(f.login.token.len, PROTO_MAX_TOKEN);
		} else {
			cr_assert_eq(r, BAD, "token 65");
		}
	}

	/* error text and goaway hint: 256 accepted, 257 rejected */
	for (uint32_t tl = PROTO_MAX_TEXT; tl <= PROTO_MAX_TEXT + 1; tl++) {
		pl.n = 0;
		pb_u8(&pl, PROTO_E_INTERNAL);
		pb_uv(&pl, 0);
		pb_raw(&pl, bigtext, tl);
		cr_assert_eq(parse_payload(PROTO_ERROR, &pl, PROTO_FROM_SERVER, &f),
			     tl == PROTO_MAX_TEXT ? (long)scratch_frame.n : BAD, "error text %u", tl);
		pl.n = 0;
		pb_uv(&pl, 100);
		pb_raw(&pl, bigtext, tl);
		cr_assert_eq(parse_payload(PROTO_GOAWAY, &pl, PROTO_FROM_SERVER, &f),
			     tl == PROTO_MAX_TEXT ? (long)scratch_frame.n : BAD, "goaway hint %u", tl);
	}

	/* members: 256 accepted, 257 rejected */
	for (uint32_t cnt = PROTO_MAX_GROUP_OP; cnt <= PROTO_MAX_GROUP_OP + 1; cnt++) {
		pl.n = 0;
		pb_u8(&pl, PROTO_GROUP_ADD);
		pb_uv(&pl, 1);
		pb_uv(&pl, 2);
		pb_uv(&pl, cnt);
		for (uint32_t i = 0; i < cnt; i++)
			pb_uv(&pl, ids256[i]);
		long r = parse_payload(PROTO_GROUP, &pl, PROTO_FROM_CLIENT, &f);
		if (cnt == PROTO_MAX_GROUP_OP) {
			cr_assert_eq(r, (long)scratch_frame.n, "256 members");
			cr_assert_eq(f.group.count, PROTO_MAX_GROUP_OP);
		} else {
			cr_assert_eq(r, BAD, "257 members");
		}
	}
	/* a huge count with nothing behind it is refused without walking it */
	pl.n = 0;
	pb_hex(&pl, "02 01 02");
	pb_uv(&pl, UINT64_MAX);
	cr_assert_eq(parse_payload(PROTO_GROUP, &pl, PROTO_FROM_CLIENT, &f), BAD, "count 2^64-1");
}

/* ---- encoder ------------------------------------------------------------------ */

Test(encoder, refuses_invalid_frames)
{
	fill_data();
	uint8_t zero_member[2] = {0x05, 0x00};
	uint8_t bad_varint[2] = {0x85, 0x00};
	const struct {
		const char *what;
		struct proto_frame f;
	} bad[] = {
		{"type 0", {.type = 0}},
		{"type 0x7f", {.type = 0x7f}},
		{"type 0x80", {.type = 0x80}},
		{"type 0xff", {.type = 0xff}},
		{"login user 2^63", {.type = PROTO_LOGIN, .login = {.version = 1, .user = PROTO_MAX_USER + 1, .token = {token64, 1}}}},
		{"login user 0", {.type = PROTO_LOGIN, .login = {.version = 1, .user = 0, .token = {token64, 1}}}},
		{"login empty token", {.type = PROTO_LOGIN, .login = {.version = 1, .user = 1, .token = {token64, 0}}}},
		{"login token 65", {.type = PROTO_LOGIN, .login = {.version = 1, .user = 1, .token = {token64, 65}}}},
		{"login token NULL", {.type = PROTO_LOGIN, .login = {.version = 1, .user = 1, .token = {NULL, 4}}}},
		{"send to 0", {.type = PROTO_SEND, .send = {.to = 0, .body = BYTES("x")}}},
		{"send to 2^63", {.type = PROTO_SEND, .send = {.to = 1ull << 63, .body = BYTES("x")}}},
		{"send group 2", {.type = PROTO_SEND, .send = {.to = 1, .group = 2, .body = BYTES("x")}}},
		{"send empty body", {.type = PROTO_SEND, .send = {.to = 1}}},
		{"send body MAX+1", {.type = PROTO_SEND, .send = {.to = 1, .body = {bigbody, PROTO_MAX_BODY + 1}}}},
		{"receipt kind 0", {.type = PROTO_RECEIPT, .receipt = {.kind = 0, .peer = 1, .smid = 1}}},
		{"receipt kind 4", {.type = PROTO_RECEIPT, .receipt = {.kind = 4, .peer = 1, .smid = 1}}},
		{"receipt peer 2^63", {.type = PROTO_RECEIPT, .receipt = {.kind = 1, .peer = PROTO_MAX_USER + 1, .smid = 1}}},
		{"receipt peer 0", {.type = PROTO_RECEIPT, .receipt = {.kind = 1, .peer = 0, .smid = 1}}},
		{"receipt smid 0", {.type = PROTO_RECEIPT, .receipt = {.kind = 1, .peer = 1, .smid = 0}}},
		{"ping 9", {.type = PROTO_PING, .ping = {BYTES("123456789")}}},
		{"pong 9", {.type = PROTO_PONG, .ping = {BYTES("123456789")}}},
		{"group op 0", {.type = PROTO_GROUP, .group = {.op = 0, .group = 1, .members = NO_MEMBERS}}},
		{"group op 5", {.type = PROTO_GROUP, .group = {.op = 5, .group = 1, .members = NO_MEMBERS}}},
		{"group create with group", {.type = PROTO_GROUP, .group = {.op = PROTO_GROUP_CREATE, .group = 1, .members = NO_MEMBERS}}},
		{"group add without group", {.type = PROTO_GROUP, .group = {.op = PROTO_GROUP_ADD, .group = 0, .members = NO_MEMBERS}}},
		{"group count > list", {.type = PROTO_GROUP, .group = {.op = 2, .group = 1, .count = 2, .members = {zero_member, 1}}}},
		{"group count < list",
		 {.type = PROTO_GROUP, .group = {.op = 2, .group = 1, .count = 0, .members = {zero_member, 1}}}},
		{"group count without list", {.type = PROTO_GROUP, .group = {.op = 2, .group = 1, .count = 1, .members = NO_MEMBERS}}},
		{"group zero member", {.type = PROTO_GROUP, .group = {.op = 2, .group = 1, .count = 2, .members = {zero_member, 2}}}},
		{"group bad varint member",
		 {.type = PROTO_GROUP, .group = {.op = 2, .group = 1, .count = 1, .members = {bad_varint, 2}}}},
		{"ack status 2", {.type = PROTO_ACK, .ack = {.status = 2, .smid = 1}}},
		{"ack smid 0", {.type = PROTO_ACK, .ack = {.status = 0, .smid = 0}}},
		{"deliver flags 4", {.type = PROTO_DELIVER, .deliver = {.flags = 4, .smid = 1, .from = 1, .body = BYTES("x")}}},
		{"deliver smid 0", {.type = PROTO_DELIVER, .deliver = {.smid = 0, .from = 1, .body = BYTES("x")}}},
		{"deliver from 0", {.type = PROTO_DELIVER, .deliver = {.smid = 1, .from = 0, .body = BYTES("x")}}},
		{"deliver group 0",
		 {.type = PROTO_DELIVER, .deliver = {.flags = 1, .smid = 1, .from = 1, .group = 0, .body = BYTES("x")}}},
		{"deliver empty body", {.type = PROTO_DELIVER, .deliver = {.smid = 1, .from = 1}}},
		{"deliver body MAX+1",
		 {.type = PROTO_DELIVER, .deliver = {.smid = 1, .from = 1, .body = {bigbody, PROTO_MAX_BODY + 1}}}},
		{"error code 0", {.type = PROTO_ERROR, .error = {.code = 0}}},
		{"error text 257", {.type = PROTO_ERROR, .error = {.code = 4, .text = {bigtext, PROTO_MAX_TEXT + 1}}}},
		{"goaway hint 257", {.type = PROTO_GOAWAY, .goaway = {.hint = {bigtext, PROTO_MAX_TEXT + 1}}}},
		{"kicked 0", {.type = PROTO_KICKED, .kicked = {0}}},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(enc, 0xa5, 64);
		cr_assert_eq(proto_encode(&bad[i].f, enc, sizeof enc), 0, "%s: encoder accepted it", bad[i].what);
		for (size_t k = 0; k < 64; k++)
			cr_assert_eq(enc[k], 0xa5, "%s: wrote byte %zu", bad[i].what, k);
	}

	/* the group over the limit: 257 valid members */
	struct proto_frame g = {.type = PROTO_GROUP,
				.group = {.op = PROTO_GROUP_ADD, .group = 1, .count = PROTO_MAX_GROUP_OP + 1,
					  .members = put_members(0, ids256, PROTO_MAX_GROUP_OP + 1)}};
	cr_assert_eq(proto_encode(&g, enc, sizeof enc), 0, "257 members");
	g.group.count = PROTO_MAX_GROUP_OP;
	g.group.members = put_members(0, ids256, PROTO_MAX_GROUP_OP);
	cr_assert_gt(proto_encode(&g, enc, sizeof enc), 0, "256 members");
}

/* Too small a buffer: the size comes back and not one byte is written. */
Test(encoder, small_buffer_writes_nothing)
{
	build_samples();
	static uint8_t canary[PROTO_MAX_FRAME_BYTES + 64];
	for (size_t i = 0; i < nsamples; i++) {
		const struct sample *s = &samples[i];
		size_t n = proto_encode(&s->f, enc, sizeof enc);
		cr_assert_gt(n, 0);
		size_t caps[] = {0, 1, n / 2, n - 1};
		for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
			memset(canary, 0x5a, n + 64);
			size_t r = proto_encode(&s->f, canary, caps[c]);
			cr_assert_eq(r, n, "%s: cap %zu returned %zu, needs %zu", s->what, caps[c], r, n);
			for (size_t k = 0; k < n + 64; k++)
				cr_assert_eq(canary[k], 0x5a, "%s: cap %zu: byte %zu written", s->what, caps[c], k);
		}
		/* exactly enough: written, nothing after it */
		memset(canary, 0x5a, n + 64);
		cr_assert_eq(proto_encode(&s->f, canary, n), n);
		cr_assert(memcmp(canary, enc, n) == 0, "%s", s->what);
		for (size_t k = n; k < n + 64; k++)
			cr_assert_eq(canary[k], 0x5a, "%s: byte %zu after the frame written", s->what, k);
	}

	/* and the hot encoders */
	memset(canary, 0x5a, 64);
	size_t n = proto_enc_deliver(canary, 5, 1, 2, 3, 4, (const uint8_t *)"body", 4);
	cr_assert_gt(n, 5);
	n = proto_enc_ack(canary, 3, 1, 1, 1ull << 50);
	cr_assert_gt(n, 3);
	n = proto_enc_error(canary, 2, 4, 0, "text");
	cr_assert_gt(n, 2);
	n = proto_enc_send(canary, 0, 1, 2, 0, (const uint8_t *)"b", 1);
	cr_assert_eq(n, 5);
	for (size_t k = 0; k < 64; k++)
		cr_assert_eq(canary[k], 0x5a, "hot encoder wrote byte %zu", k);
}

/* An empty member list given as {NULL, 0} (what `.members` is when left out
 * of an initializer) encodes without forming NULL + 0 (UB that clang's UBSan
 * caught in an earlier version of wr_members()). */
Test(encoder, group_leave_with_members_refused)
{
	uint8_t list[2];
	struct proto_frame f = {.type = PROTO_GROUP,
				.group = {.op = PROTO_GROUP_LEAVE, .req = 1, .group = 2, .count = 1,
					  .members = {list, 1}}};
	list[0] = 5;
	cr_assert_eq(proto_encode(&f, enc, sizeof enc), 0, "leave names nobody");
	/* and the parser refuses the same bytes: 07 06 04 01 02 01 05 */
	static const uint8_t wire[] = {0x06, 0x06, 0x04, 0x01, 0x02, 0x01, 0x05};
	struct proto_frame out;
	cr_assert_eq(proto_parse(wire, sizeof wire, PROTO_FROM_CLIENT, &out), -PROTO_E_BAD_FIELD);
}

Test(encoder, group_null_empty_members)
{
	struct proto_frame f = {.type = PROTO_GROUP, .group = {.op = PROTO_GROUP_LEAVE, .req = 1, .group = 2}};
	cr_assert_null(f.group.members.p);
	size_t n = proto_encode(&f, enc, sizeof enc);
	cr_assert_eq(n, 6);
	cr_assert(memcmp(enc, "\x05\x06\x04\x01\x02\x00", 6) == 0);
	f = (struct proto_frame){.type = PROTO_GROUP, .group = {.op = PROTO_GROUP_CREATE, .req = 1}};
	cr_assert_gt(proto_encode(&f, enc, sizeof enc), 0);
}

/* ---- several frames in one buffer ------------------------------------------------ */

Test(stream, back_to_back)
{
	build_samples();
	static uint8_t buf[1u << 17];
	size_t len = 0, sizes[64];
	for (size_t i = 0; i < nsamples; i++) {
		sizes[i] = proto_encode(&samples[i].f, buf + len, sizeof buf - len);
		cr_assert_gt(sizes[i], 0);
		len += sizes[i];
	}
	cr_assert_leq(len, GUARD_SPAN);
	const uint8_t *in = at_guard(buf, len);
	size_t off = 0;
	for (size_t i = 0; i < nsamples; i++) {
		struct proto_frame f;
		long r = proto_parse(in + off, len - off, PROTO_FROM_ANY, &f);
		cr_assert_eq(r, (long)sizes[i], "frame %zu (%s): %ld", i, samples[i].what, r);
		frame_eq(&f, &samples[i].f, samples[i].what);
		off += (size_t)r;
	}
	cr_assert_eq(off, len);
	struct proto_frame f;
	cr_assert_eq(proto_parse(in + off, 0, PROTO_FROM_ANY, &f), PROTO_NEED_MORE);
	cr_assert_eq(f.need, 1);

	/* the client's own stream: small frames, parsed in the client direction */
	static const uint8_t s[] = {0x01, 0x04,                                     /* PING */
				    0x08, 0x02, 0x07, 0x54, 'h', 'e', 'l', 'l', 'o', /* SEND */
				    0x04, 0x03, 0x01, 0x05, 0x07,                    /* RECEIPT */
				    0x01, 0x05};                                     /* PONG */
	static const uint8_t types[] = {PROTO_PING, PROTO_SEND, PROTO_RECEIPT, PROTO_PONG};
	in = at_guard(s, sizeof s);
	off = 0;
	for (size_t i = 0; i < sizeof types; i++) {
		long r = proto_parse(in + off, sizeof s - off, PROTO_FROM_CLIENT, &f);
		cr_assert_gt(r, 0, "frame %zu", i);
		cr_assert_eq(f.type, types[i]);
		off += (size_t)r;
	}
	cr_assert_eq(off, sizeof s);
	/* a bad frame after good ones is reported when reached, not before */
	static const uint8_t s2[] = {0x01, 0x04, 0x01, 0x83};
	in = at_guard(s2, sizeof s2);
	cr_assert_eq(proto_parse(in, sizeof s2, PROTO_FROM_CLIENT, &f), 2);
	cr_assert_eq(proto_parse(in + 2, 2, PROTO_FROM_CLIENT, &f), -PROTO_E_BAD_TYPE);
}

/* ---- garbage ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64: fixed seed, so a failure reproduces */
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

Test(garbage, random_buffers)
{
	static const uint8_t types[] = {PROTO_LOGIN, PROTO_SEND, PROTO_RECEIPT, PROTO_PING, PROTO_PONG,
					PROTO_GROUP, PROTO_LOGIN_RESULT, PROTO_ACK, PROTO_DELIVER, PROTO_ERROR,
					PROTO_GOAWAY, PROTO_KICKED, PROTO_GROUP_RESULT};
	static const enum proto_dir dirs[] = {PROTO_FROM_CLIENT, PROTO_FROM_SERVER, PROTO_FROM_ANY};
	rng_state = 0x2545f4914f6cdd1dull;
	uint8_t buf[64];
	long counts[8] = {0}; /* ok, need more, four errors */
	for (unsigned iter = 0; iter < 300000; iter++) {
		size_t len = (size_t)(rng() % 65);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rng();
		/* Pure noise mostly stops at the prefix or the type. Half of the
		 * inputs get a plausible header (L that fits, a known type, small
		 * field bytes) so the payload decoders see garbage too. */
		uint64_t shape = rng();
		if ((shape & 1) && len >= 2) {
			buf[0] = (uint8_t)(1 + (shape >> 8) % (len - 1 < 127 ? len - 1 : 127));
			buf[1] = types[(shape >> 16) % sizeof types];
			if (shape & 2)
				for (size_t i = 2; i < len; i++)
					buf[i] &= (shape & 4) ? 0x03 : 0x7f;
		}
		enum proto_dir dir = dirs[iter % 3];
		struct proto_frame f;
		f.need = 0;
		long r = parse_guarded(buf, len, dir, &f);
		if (r > 0) {
			cr_assert_leq((size_t)r, len, "iter %u: consumed %ld of %zu", iter, r, len);
			cr_assert_eq(f.size, (uint32_t)r, "iter %u", iter);
			/* anything accepted is canonical: it encodes back to its bytes */
			size_t n = proto_encode(&f, enc, sizeof enc);
			cr_assert_eq(n, (size_t)r, "iter %u: re-encode size %zu of %ld", iter, n, r);
			cr_assert(memcmp(enc, buf, n) == 0, "iter %u: re-encode differs", iter);
			counts[0]++;
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
	/* the shaping must actually reach every outcome, or the test proves little */
	for (int i = 0; i < 6; i++)
		cr_assert_gt(counts[i], 0, "outcome %d never seen", i);
	cr_assert_gt(counts[0], 1000, "only %ld inputs parsed", counts[0]);
}

/* ---- names ------------------------------------------------------------------- */

Test(names, err_names)
{
	cr_assert_str_eq(proto_err_name(PROTO_OK), "ok");
	cr_assert_str_eq(proto_err_name(PROTO_E_BAD_FRAME), "bad_frame");
	cr_assert_str_eq(proto_err_name(PROTO_E_TOO_BIG), "too_big");
	cr_assert_str_eq(proto_err_name(PROTO_E_BAD_TYPE), "bad_type");
	cr_assert_str_eq(proto_err_name(PROTO_E_BAD_FIELD), "bad_field");
	cr_assert_str_eq(proto_err_name(PROTO_E_NOT_LOGGED_IN), "not_logged_in");
	cr_assert_str_eq(proto_err_name(PROTO_E_ALREADY_LOGGED_IN), "already_logged_in");
	cr_assert_str_eq(proto_err_name(PROTO_E_LOGIN_TIMEOUT), "login_timeout");
	cr_assert_str_eq(proto_err_name(PROTO_E_AUTH_FAILED), "auth_failed");
	cr_assert_str_eq(proto_err_name(PROTO_E_TOKEN_EXPIRED), "token_expired");
	cr_assert_str_eq(proto_err_name(PROTO_E_VERSION), "version");
	cr_assert_str_eq(proto_err_name(PROTO_E_SERVER_FULL), "server_full");
	cr_assert_str_eq(proto_err_name(PROTO_E_RATE_LIMITED), "rate_limited");
	cr_assert_str_eq(proto_err_name(PROTO_E_SLOW_CONSUMER), "slow_consumer");
	cr_assert_str_eq(proto_err_name(PROTO_E_IDLE_TIMEOUT), "idle_timeout");
	cr_assert_str_eq(proto_err_name(PROTO_E_SHUTTING_DOWN), "shutting_down");
	cr_assert_str_eq(proto_err_name(PROTO_E_INTERNAL), "internal");
	cr_assert_str_eq(proto_err_name(PROTO_E_WRITE_STALL), "write_stall");
	cr_assert_str_eq(proto_err_name(PROTO_E_NO_ROUTE), "no_route");
	cr_assert_str_eq(proto_err_name(PROTO_E_TRY_AGAIN), "try_again");
	cr_assert_str_eq(proto_err_name(PROTO_E_MAILBOX_FULL), "mailbox_full");
	cr_assert_str_eq(proto_err_name(PROTO_E_BAD_RECIPIENT), "bad_recipient");
	cr_assert_str_eq(proto_err_name(PROTO_E_NOT_MEMBER), "not_member");
	cr_assert_str_eq(proto_err_name(PROTO_E_NO_SUCH_GROUP), "no_such_group");
	cr_assert_str_eq(proto_err_name(PROTO_E_GROUP_FULL), "group_full");
	cr_assert_str_eq(proto_err_name(PROTO_E_NOT_ALLOWED), "not_allowed");
	cr_assert_str_eq(proto_err_name(PROTO_E_SLOW_DOWN), "slow_down");
	cr_assert_str_eq(proto_err_name(PROTO_E_STORE_FULL), "store_full");
	cr_assert_str_eq(proto_err_name(PROTO_E_SOURCE_LIMIT), "source_limit");
	/* the gap between the fatal and per-request codes, and past the end */
	static const unsigned unknown[] = {19, 20, 31, 42, 43, 255, 256, 1000, UINT32_MAX};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		cr_assert_not_null(proto_err_name(unknown[i]));
		cr_assert_str_eq(proto_err_name(unknown[i]), "unknown", "code %u", unknown[i]);
	}
}

Test(names, type_names)
{
	cr_assert_str_eq(proto_type_name(PROTO_LOGIN), "login");
	cr_assert_str_eq(proto_type_name(PROTO_SEND), "send");
	cr_assert_str_eq(proto_type_name(PROTO_RECEIPT), "receipt");
	cr_assert_str_eq(proto_type_name(PROTO_PING), "ping");
	cr_assert_str_eq(proto_type_name(PROTO_PONG), "pong");
	cr_assert_str_eq(proto_type_name(PROTO_GROUP), "group");
	cr_assert_str_eq(proto_type_name(PROTO_LOGIN_RESULT), "login_result");
	cr_assert_str_eq(proto_type_name(PROTO_ACK), "ack");
	cr_assert_str_eq(proto_type_name(PROTO_DELIVER), "deliver");
	cr_assert_str_eq(proto_type_name(PROTO_ERROR), "error");
	cr_assert_str_eq(proto_type_name(PROTO_GOAWAY), "goaway");
	cr_assert_str_eq(proto_type_name(PROTO_KICKED), "kicked");
	cr_assert_str_eq(proto_type_name(PROTO_GROUP_RESULT), "group_result");
	static const unsigned unknown[] = {0, 7, 0x7f, 0x80, 0x88, 0xff, 0x100, 0x101, UINT32_MAX};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
		cr_assert_str_eq(proto_type_name(unknown[i]), "unknown", "type 0x%x", unknown[i]);
}

/* PROTOCOL.md's frame and error tables say what PROTO_FRAMES and
 * PROTO_ERRORS say: the spec and the one list in the code cannot drift. */
static FILE *open_protocol_md(void)
{
	FILE *f = fopen("proto/PROTOCOL.md", "r");
	if (!f) { /* run from elsewhere: next to this source file */
		char path[512];
		const char *src = __FILE__, *slash = strrchr(src, '/');
		snprintf(path, sizeof path, "%.*s/../proto/PROTOCOL.md", slash ? (int)(slash - src) : 1, slash ? src : ".");
		f = fopen(path, "r");
	}
	cr_assert_not_null(f, "proto/PROTOCOL.md not found (run from the source tree)");
	return f;
}

Test(names, protocol_md_tables_match_the_lists)
{
	FILE *md = open_protocol_md();
	char line[1024];
	unsigned frames = 0, errors = 0, errors_listed = 0, in_dist = 0;
#define X_(N, code, name, cls) errors_listed++;
	PROTO_ERRORS(X_)
#undef X_
	while (fgets(line, sizeof line, md)) {
		if (strncmp(line, "# 4", 3) == 0 || strncmp(line, "## 4", 4) == 0)
			in_dist = 1; /* part 4 is the dist protocol: its own table */
		unsigned code;
		char name[64], dir[16];
		if (!in_dist && sscanf(line, "| 0x%x | %63[A-Z_] | %15[^ |] |", &code, name, dir) == 3) {
			for (char *p = name; *p; p++)
				*p = (char)tolower((unsigned char)*p);
			cr_assert_str_eq(proto_type_name(code), name, "PROTOCOL.md: type 0x%02x is %s", code, name);
			const char *want = strcmp(dir, "C->S") == 0 ? "client" : strcmp(dir, "S->C") == 0 ? "server" : "both";
			struct proto_frame f;
			uint8_t b[2] = {1, (uint8_t)code};
			long from_c = proto_parse(b, 2, PROTO_FROM_CLIENT, &f), from_s = proto_parse(b, 2, PROTO_FROM_SERVER, &f);
			const char *got = from_c != -PROTO_E_BAD_TYPE && from_s != -PROTO_E_BAD_TYPE ? "both"
					  : from_c != -PROTO_E_BAD_TYPE			   ? "client"
											   : "server";
			cr_assert_str_eq(got, want, "type %s: PROTOCOL.md says %s", name, dir);
			frames++;
		} else if (!in_dist && sscanf(line, "| %u | %63[a-z_] | %15[a-z] |", &code, name, dir) == 3) {
			cr_assert_str_eq(proto_err_name(code), name, "PROTOCOL.md: error %u is %s", code, name);
			cr_assert_eq(strcmp(dir, "yes") == 0, code < PROTO_E_FATAL_LIMIT, "error %s: fatal is %s", name, dir);
			errors++;
		}
	}
	fclose(md);
	cr_assert_eq(frames, PROTO_FRAME_TYPES, "PROTOCOL.md lists %u frame types, the code %u", frames,
		     (unsigned)PROTO_FRAME_TYPES);
	cr_assert_eq(errors, errors_listed, "PROTOCOL.md lists %u error codes, the code %u", errors, errors_listed);
}

/* ERROR texts and GOAWAY hints are cut to PROTO_MAX_TEXT on a UTF-8
 * boundary, by one function (the gateway cut its own texts bytewise before). */
Test(names, text_is_cut_on_a_utf8_boundary)
{
	char s[PROTO_MAX_TEXT + 8];
	memset(s, 'a', sizeof s - 1);
	s[sizeof s - 1] = 0;
	cr_assert_eq(proto_text(s).len, PROTO_MAX_TEXT);
	/* a 3-byte sequence (U+20AC) across the limit goes whole */
	memcpy(s + PROTO_MAX_TEXT - 1, "\xe2\x82\xac", 3);
	struct proto_bytes t = proto_text(s);
	cr_assert_eq(t.len, PROTO_MAX_TEXT - 1);
	cr_assert_eq((const char *)t.p, s);
	cr_assert_eq(proto_text(NULL).len, 0);
	cr_assert_not_null(proto_text(NULL).p);
	cr_assert_eq(proto_text("short").len, 5);
	uint8_t buf[PROTO_MAX_FRAME_BYTES];
	size_t n = proto_enc_error(buf, sizeof buf, PROTO_E_INTERNAL, 0, s);
	struct proto_frame f;
	cr_assert_eq(proto_parse(buf, n, PROTO_FROM_SERVER, &f), (long)n);
	cr_assert_eq(f.error.text.len, PROTO_MAX_TEXT - 1);
	cr_assert_eq(proto_version_agree(1), 1);
	cr_assert_eq(proto_version_agree(PROTO_VERSION_MAX + 3), PROTO_VERSION_MAX);
}

/* The dense index (per-type counters) covers exactly the named types, once each. */
Test(names, frame_index_is_dense)
{
	int seen[PROTO_FRAME_TYPES] = {0};
	unsigned named = 0;
	for (unsigned t = 0; t < 0x200; t++) {
		int i = proto_frame_index(t);
		int known = strcmp(proto_type_name(t), "unknown") != 0;
		cr_assert_eq(i >= 0, known, "type 0x%x: index %d, name %s", t, i, proto_type_name(t));
		if (i < 0)
			continue;
		cr_assert_lt(i, PROTO_FRAME_TYPES);
		cr_assert_eq(seen[i]++, 0, "index %d given twice", i);
		named++;
	}
	cr_assert_eq(named, PROTO_FRAME_TYPES);
	cr_assert_eq(proto_frame_index(PROTO_LOGIN), PROTO_FI_LOGIN);
	cr_assert_eq(proto_frame_index(PROTO_GROUP_RESULT), PROTO_FI_GROUP_RESULT);
}

/* ---- wire.h ----------------------------------------------------------------- */

struct uv_case {
	uint64_t v;
	unsigned size;
	const char *hex;
};

static const struct uv_case uv_cases[] = {
	{0, 1, "00"},
	{1, 1, "01"},
	{127, 1, "7f"},
	{128, 2, "80 01"},
	{300, 2, "ac 02"},
	{16383, 2, "ff 7f"},
	{16384, 3, "80 80 01"},
	{UINT32_MAX, 5, "ff ff ff ff 0f"},
	{1ull << 63, 10, "80 80 80 80 80 80 80 80 80 01"},
	{(1ull << 63) - 1, 9, "ff ff ff ff ff ff ff ff 7f"},
	{UINT64_MAX, 10, "ff ff ff ff ff ff ff ff ff 01"},
};

Test(wire, uv_edge_values)
{
	static struct pb want;
	for (size_t i = 0; i < sizeof uv_cases / sizeof uv_cases[0]; i++) {
		const struct uv_case *c = &uv_cases[i];
		want.n = 0;
		pb_hex(&want, c->hex);
		cr_assert_eq(wire_uv_size(c->v), c->size, "size of %llu", (unsigned long long)c->v);
		uint8_t out[16];
		memset(out, 0xcc, sizeof out);
		uint8_t *end = wire_uv_put(out, c->v);
		cr_assert_eq((size_t)(end - out), c->size, "put %llu", (unsigned long long)c->v);
		cr_assert(memcmp(out, want.b, c->size) == 0, "bytes of %llu", (unsigned long long)c->v);
		cr_assert_eq(out[c->size], 0xcc, "put wrote past the varint");

		/* get, with the varint right at the guard page */
		const uint8_t *in = at_guard(want.b, want.n);
		const uint8_t *p = in;
		uint64_t v = 0;
		cr_assert_eq(wire_uv_get(&p, in + want.n, &v), 1, "get %s", c->hex);
		cr_assert_eq(v, c->v, "get %s", c->hex);
		cr_assert_eq(p, in + c->size);
		/* every strict prefix is "need more", leaving *pp alone */
		for (size_t k = 0; k < want.n; k++) {
			in = at_guard(want.b, k);
			p = in;
			cr_assert_eq(wire_uv_get(&p, in + k, &v), 0, "get %zu bytes of %s", k, c->hex);
			cr_assert_eq(p, in);
		}
	}
	/* boundaries of the size function */
	for (unsigned bits = 1; bits < 64; bits++) {
		uint64_t v = 1ull << bits;
		cr_assert_eq(wire_uv_size(v - 1), (bits + 6) / 7, "2^%u-1", bits);
		cr_assert_eq(wire_uv_size(v), bits / 7 + 1, "2^%u", bits);
	}
}

Test(wire, uv_rejects_malformed)
{
	static const char *const bad[] = {
		"80 00",                            /* 0, padded */
		"ff 00",                            /* 127, padded */
		"80 80 00",                         /* two padding bytes */
		"ff ff ff ff ff ff ff ff ff 00",    /* 2^63-1 padded to 10 bytes */
		"ff ff ff ff ff ff ff ff ff 02",    /* 65 bits */
		"ff ff ff ff ff ff ff ff ff 7f",    /* 70 bits */
		"80 80 80 80 80 80 80 80 80 81 00", /* 11 bytes */
		"ff ff ff ff ff ff ff ff ff ff 01", /* 11 bytes */
		"ff ff ff ff ff ff ff ff ff 80",    /* continuation on the 10th */
	};
	static struct pb in;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		in.n = 0;
		pb_hex(&in, bad[i]);
		const uint8_t *g = at_guard(in.b, in.n);
		const uint8_t *p = g;
		uint64_t v = 0;
		cr_assert_eq(wire_uv_get(&p, g + in.n, &v), -1, "%s", bad[i]);
		cr_assert_eq(p, g, "%s: *pp moved on failure", bad[i]);
		/* with more input behind it, still rejected */
		in.b[in.n++] = 0x01;
		g = at_guard(in.b, in.n);
		p = g;
		cr_assert_eq(wire_uv_get(&p, g + in.n, &v), -1, "%s + 01", bad[i]);
	}
	/* empty input needs more */
	const uint8_t *g = at_guard("", 0), *p = g;
	uint64_t v;
	cr_assert_eq(wire_uv_get(&p, g, &v), 0);
}

Test(wire, uv_roundtrip_random)
{
	rng_state = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 100000; i++) {
		uint64_t v = rng() >> (rng() % 64);
		uint8_t buf[10];
		uint8_t *end = wire_uv_put(buf, v);
		cr_assert_eq((unsigned)(end - buf), wire_uv_size(v));
		const uint8_t *in = at_guard(buf, (size_t)(end - buf)), *p = in;
		uint64_t got;
		cr_assert_eq(wire_uv_get(&p, in + (end - buf), &got), 1);
		cr_assert_eq(got, v);
	}
}

Test(wire, frame_head)
{
	uint32_t len;
	unsigned hdr;
	static const uint8_t ok[] = {0x80, 0x01};
	cr_assert_eq(wire_frame_head(ok, ok + 2, 1000, &len, &hdr), WIRE_HEAD_OK);
	cr_assert_eq(len, 128);
	cr_assert_eq(hdr, 2);
	cr_assert_eq(wire_frame_head(ok, ok + 2, 127, &len, &hdr), WIRE_HEAD_TOO_BIG);
	cr_assert_eq(wire_frame_head(ok, ok + 1, 1000, &len, &hdr), WIRE_HEAD_MORE);
	cr_assert_eq(wire_frame_head(ok, ok, 1000, &len, &hdr), WIRE_HEAD_MORE);
	static const uint8_t pad[] = {0x81, 0x00};
	cr_assert_eq(wire_frame_head(pad, pad + 2, 1000, &len, &hdr), WIRE_HEAD_BAD);
	static const uint8_t zero[] = {0x00};
	cr_assert_eq(wire_frame_head(zero, zero + 1, 1000, &len, &hdr), WIRE_HEAD_BAD);
	static const uint8_t three[] = {0x80, 0x80, 0x80};
	cr_assert_eq(wire_frame_head(three, three + 3, 1u << 20, &len, &hdr), WIRE_HEAD_TOO_BIG);
}

Test(wire, be64)
{
	uint8_t b[8];
	wire_be64_put(b, 0x0102030405060708ull);
	cr_assert(memcmp(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0);
	cr_assert_eq(wire_be64_get(b), 0x0102030405060708ull);
	wire_be64_put(b, UINT64_MAX);
	cr_assert_eq(wire_be64_get(b), UINT64_MAX);
}
