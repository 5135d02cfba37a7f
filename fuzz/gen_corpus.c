/* gen_corpus.c: writes the seed corpus of the two fuzz targets, one small file
 * per frame type and variant, plus a few multi-frame streams and batches,
 * encoded with the library itself so every seed is a valid, canonical input.
 * Not built by ninja; rerun by hand after a wire format change, and commit
 * the output:
 *
 *   cc -std=gnu11 -I. -o /tmp/gen_corpus fuzz/gen_corpus.c proto/client.c proto/dist.c && /tmp/gen_corpus fuzz/corpus
 *
 * Writes DIR/client/<name> and DIR/dist/<name>; DIR/client and DIR/dist must
 * exist. Contents are deterministic, so rerunning changes nothing unless the
 * format did.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client.h"
#include "proto/dist.h"
#include "proto/wire.h"

static const char *outdir;
static unsigned written;

#define BYTES(s) ((struct proto_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

static void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s\n", what);
	exit(1);
}

static void write_file(const char *sub, const char *name, const uint8_t *p, size_t n)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s/%s", outdir, sub, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0)
		die(path);
	written++;
}

/* ---- client --------------------------------------------------------------- */

static uint8_t stream[8192];
static size_t stream_len;

/* Encode f and write it as a file of its own. */
static void client(const char *name, struct proto_frame f)
{
	uint8_t buf[2048];
	size_t n = proto_encode(&f, buf, sizeof buf);
	if (n == 0 || n > sizeof buf)
		die(name);
	write_file("client", name, buf, n);
}

/* Append f to the multi-frame stream being built. */
static void append(struct proto_frame f)
{
	size_t n = proto_encode(&f, stream + stream_len, sizeof stream - stream_len);
	if (n == 0 || stream_len + n > sizeof stream)
		die("stream");
	stream_len += n;
}

static void gen_client(void)
{
	static const uint8_t token[40] = {0x00, 0x00, 0x00, 0x00, 0x69, 0x50, 0x1a, 0x80, 0xde, 0xad,
					  0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
					  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12,
					  0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c};
	uint8_t members[32], *mp = members;
	mp = wire_uv_put(mp, 5);
	mp = wire_uv_put(mp, 300);
	mp = wire_uv_put(mp, 70000);
	struct proto_bytes three = {members, (uint32_t)(mp - members)};
	struct proto_bytes one = {members, 1};

	struct proto_frame login = {.type = PROTO_LOGIN,
				    .login = {.version = 1, .user = 42, .token = {token, sizeof token}, .resume = 1000}};
	struct proto_frame send = {.type = PROTO_SEND, .send = {.cmid = 7, .to = 43, .body = BYTES("hello")}};
	struct proto_frame send_group = {.type = PROTO_SEND,
					 .send = {.cmid = 8, .to = 900, .group = 1, .body = BYTES("hello group")}};
	struct proto_frame rcpt = {.type = PROTO_RECEIPT,
				   .receipt = {.kind = PROTO_RCPT_DELIVERED, .peer = 43, .smid = 5000}};
	struct proto_frame ping8 = {.type = PROTO_PING, .ping = {BYTES("\x01\x02\x03\x04\x05\x06\x07\x08")}};
	struct proto_frame group_create = {.type = PROTO_GROUP,
					   .group = {.op = PROTO_GROUP_CREATE, .req = 1, .count = 3, .members = three}};
	struct proto_frame lres = {.type = PROTO_LOGIN_RESULT,
				   .login_result = {.status = 0, .version = 1, .time_ms = 1764195711000ull,
						    .keepalive_s = 30, .max_body = PROTO_MAX_BODY}};
	struct proto_frame ack = {.type = PROTO_ACK, .ack = {.cmid = 7, .status = PROTO_ACK_STORED, .smid = 5001}};
	struct proto_frame deliver = {.type = PROTO_DELIVER,
				      .deliver = {.smid = 5002, .from = 43, .time_ms = 1764195712000ull,
						  .body = BYTES("hi back")}};
	struct proto_frame error = {.type = PROTO_ERROR,
				    .error = {.code = PROTO_E_MAILBOX_FULL, .ref = 8, .text = BYTES("mailbox full")}};

	client("login", login);
	client("send", send);
	client("send-group", send_group);
	client("receipt-delivered", rcpt);
	client("receipt-read", (struct proto_frame){.type = PROTO_RECEIPT,
						    .receipt = {.kind = PROTO_RCPT_READ, .peer = 43, .smid = 5000}});
	client("ping", (struct proto_frame){.type = PROTO_PING});
	client("ping-8", ping8);
	client("pong", (struct proto_frame){.type = PROTO_PONG});
	client("pong-8", (struct proto_frame){.type = PROTO_PONG, .ping = ping8.ping});
	client("group-create", group_create);
	client("group-add", (struct proto_frame){.type = PROTO_GROUP,
						 .group = {.op = PROTO_GROUP_ADD, .req = 2, .group = 900, .count = 3,
							   .members = three}});
	client("group-remove", (struct proto_frame){.type = PROTO_GROUP,
						    .group = {.op = PROTO_GROUP_REMOVE, .req = 3, .group = 900,
							      .count = 1, .members = one}});
	client("group-leave", (struct proto_frame){.type = PROTO_GROUP,
						   .group = {.op = PROTO_GROUP_LEAVE, .req = 4, .group = 900}});
	client("login-result", lres);
	client("login-result-fail", (struct proto_frame){.type = PROTO_LOGIN_RESULT,
							 .login_result = {.status = PROTO_E_AUTH_FAILED, .version = 1}});
	client("ack-accepted", (struct proto_frame){.type = PROTO_ACK,
						    .ack = {.cmid = 7, .status = PROTO_ACK_ACCEPTED, .smid = 5001}});
	client("ack-stored", ack);
	client("deliver", deliver);
	client("deliver-group", (struct proto_frame){.type = PROTO_DELIVER,
						     .deliver = {.flags = PROTO_DELIVER_GROUP, .smid = 5003, .from = 44,
								 .group = 900, .time_ms = 1764195713000ull,
								 .body = BYTES("to the group")}});
	client("deliver-cmid", (struct proto_frame){.type = PROTO_DELIVER,
						    .deliver = {.flags = PROTO_DELIVER_GROUP | PROTO_DELIVER_CMID,
								.smid = 5004, .from = 44, .group = 900, .cmid = 8,
								.time_ms = 1764195714000ull, .body = BYTES("v2")}});
	client("receipt-ack", (struct proto_frame){.type = PROTO_RECEIPT,
						   .receipt = {.kind = PROTO_RCPT_ACK, .peer = 43, .smid = 5000}});
	client("login-v2", (struct proto_frame){.type = PROTO_LOGIN,
						.login = {.version = 2, .user = 42, .token = {token, sizeof token}}});
	client("error", error);
	client("goaway", (struct proto_frame){.type = PROTO_GOAWAY, .goaway = {.reconnect_ms = 1500}});
	client("goaway-hint", (struct proto_frame){.type = PROTO_GOAWAY,
						   .goaway = {.reconnect_ms = 2500, .hint = BYTES("gw2.example:7000")}});
	client("kicked", (struct proto_frame){.type = PROTO_KICKED, .kicked = {PROTO_KICK_ELSEWHERE}});
	client("group-result", (struct proto_frame){.type = PROTO_GROUP_RESULT,
						    .group_result = {.req = 1, .status = 0, .group = 900}});

	/* what a client sends in its first second, and what it gets back */
	stream_len = 0;
	append(login);
	append(send);
	append(send_group);
	append(rcpt);
	append(ping8);
	append(group_create);
	write_file("client", "multi-from-client", stream, stream_len);
	stream_len = 0;
	append(lres);
	append(deliver);
	append(ack);
	append(error);
	append((struct proto_frame){.type = PROTO_PING});
	write_file("client", "multi-from-server", stream, stream_len);
}

/* ---- dist ------------------------------------------------------------------ */

static uint8_t batch_buf[16384];

static void dist_one(const char *name, struct dist_frame f)
{
	uint8_t buf[2048];
	size_t n = dist_encode(&f, buf, sizeof buf);
	if (n == 0 || n > sizeof buf)
		die(name);
	write_file("dist", name, buf, n);
}

/* A batch of the given inner frames, finished with seq; returns its size and
 * leaves it at *out. */
static size_t batch(const struct dist_frame *frames, size_t count, uint64_t seq, uint8_t **out)
{
	struct dist_batch b;
	dist_batch_init(&b, batch_buf, sizeof batch_buf);
	for (size_t i = 0; i < count; i++)
		if (dist_batch_add(&b, &frames[i]) != 0)
			die("batch add");
	size_t size;
	*out = dist_batch_finish(&b, seq, &size);
	return size;
}

static void dist_batch_file(const char *name, const struct dist_frame *frames, size_t count, uint64_t seq)
{
	uint8_t *p;
	size_t n = batch(frames, count, seq, &p);
	write_file("dist", name, p, n);
}

static void gen_dist(void)
{
	uint8_t members[32], *mp = members;
	mp = wire_uv_put(mp, 5);
	mp = wire_uv_put(mp, 300);
	struct proto_bytes two = {members, (uint32_t)(mp - members)};

	static const uint8_t nonce[DIST_NONCE] = "0123456789abcdef0123456789abcdef";
	struct dist_frame hello = {.type = DIST_HELLO,
				   .hello = {.version = DIST_VERSION, .role = DIST_ROLE_GATEWAY, .node = 1, .thread = 2,
					     .threads = 8, .key_id = 0x1234abcd, .nonce = nonce}};
	struct dist_frame auth = {.type = DIST_AUTH, .auth = {.mac = nonce}};
	struct dist_frame hb = {.type = DIST_HEARTBEAT, .heartbeat = {.seq = 17, .t_us = 123456789, .reply = 0}};
	struct dist_frame credit = {.type = DIST_CREDIT, .credit = {4u << 20}};
	struct dist_frame inner[] = {
		{.type = DIST_ROUTE,
		 .route = {.from = 42, .to = 43, .time_ms = 1764195711000ull, .onode = 1, .othread = 2, .oconn = 77,
			   .cmid = 7, .body = BYTES("hello")}},
		{.type = DIST_ROUTE,
		 .route = {.smid = 5003, .from = 44, .to = 42, .group = 900, .time_ms = 1764195713000ull, .onode = 3,
			   .othread = 0, .oconn = 9, .cmid = 2, .body = BYTES("to the group")}},
		{.type = DIST_SESSION_UP,
		 .session = {.user = 42, .node = 1, .thread = 2, .conn = 77, .resume = 1000, .flags = DIST_SESS_RCPT_ACKS}},
		{.type = DIST_SESSION_DOWN, .session = {.user = 42, .node = 1, .thread = 2, .conn = 77}},
		{.type = DIST_STORE_ACK, .store_ack = {.thread = 2, .conn = 77, .cmid = 7, .smid = 5001, .status = 0}},
		{.type = DIST_STORE_ACK,
		 .store_ack = {.thread = 2, .conn = 77, .cmid = 8, .smid = 0, .status = PROTO_E_MAILBOX_FULL}},
		{.type = DIST_RECEIPT,
		 .receipt = {.kind = PROTO_RCPT_READ, .flags = DIST_RCPT_DELETE | DIST_RCPT_NOTIFY, .from = 43, .to = 42,
			     .smid = 5001}},
		{.type = DIST_CREDIT, .credit = {65536}},
		{.type = DIST_GROUP_OP,
		 .group_op = {.op = PROTO_GROUP_CREATE, .req = 1, .user = 42, .thread = 2, .conn = 77, .count = 2,
			      .members = two}},
		{.type = DIST_GROUP_RESULT, .group_result = {.thread = 2, .conn = 77, .req = 1, .status = 0, .group = 900}},
		{.type = DIST_KICK, .kick = {.user = 42, .thread = 2, .conn = 77, .reason = PROTO_KICK_ELSEWHERE}},
		{.type = DIST_RECEIPT_ACK, .receipt_ack = {.user = 42, .peer = 43, .smid = 5001}},
		{.type = DIST_HANDOFF,
		 .route = {.smid = 5003, .from = 44, .to = 42, .group = 900, .time_ms = 1764195713000ull, .onode = 7,
			   .othread = 1, .cmid = 2, .body = BYTES("to the group")}},
		{.type = DIST_HANDOFF_ACK, .handoff_ack = {.node = 7, .thread = 1, .user = 42, .smid = 5003}},
		{.type = DIST_RECEIPT,
		 .receipt = {.kind = PROTO_RCPT_DELIVERED, .flags = DIST_RCPT_RELAY, .from = 43, .to = 42, .smid = 5001}},
	};
	static const char *const inner_names[] = {
		"batch-route",	   "batch-route-delivery", "batch-session-up",	 "batch-session-down",
		"batch-store-ack", "batch-store-ack-refused", "batch-receipt", "batch-credit",
		"batch-group-op",  "batch-group-result",   "batch-kick", "batch-receipt-ack",
		"batch-handoff",   "batch-handoff-ack",    "batch-receipt-relay",
	};

	dist_one("hello", hello);
	dist_one("hello-backend", (struct dist_frame){.type = DIST_HELLO,
						      .hello = {.version = DIST_VERSION, .role = DIST_ROLE_BACKEND,
								.node = 7, .thread = 0, .threads = 4, .key_id = 1,
								.nonce = nonce}});
	dist_one("auth", auth);
	dist_one("heartbeat", hb);
	dist_one("heartbeat-reply", (struct dist_frame){.type = DIST_HEARTBEAT,
							.heartbeat = {.seq = 17, .t_us = 123456789, .reply = 1}});
	dist_one("credit", credit);
	dist_one("error", (struct dist_frame){.type = DIST_ERROR,
					      .error = {.code = PROTO_E_VERSION, .text = BYTES("version mismatch")}});
	for (size_t i = 0; i < sizeof inner / sizeof inner[0]; i++)
		dist_batch_file(inner_names[i], &inner[i], 1, i + 1);
	dist_batch_file("batch-all", inner, sizeof inner / sizeof inner[0], 100);

	/* a link's opening: HELLO, a batch of two, a heartbeat, a credit */
	uint8_t s[4096];
	size_t n = 0;
	n += dist_encode(&hello, s + n, sizeof s - n);
	n += dist_encode(&auth, s + n, sizeof s - n);
	uint8_t *p;
	size_t bn = batch(inner + 2, 2, 1, &p);
	memcpy(s + n, p, bn);
	n += bn;
	n += dist_encode(&hb, s + n, sizeof s - n);
	n += dist_encode(&credit, s + n, sizeof s - n);
	write_file("dist", "multi", s, n);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus DIR   (writes DIR/client/* and DIR/dist/*)\n");
		return 2;
	}
	outdir = argv[1];
	gen_client();
	gen_dist();
	printf("gen_corpus: wrote %u files under %s\n", written, outdir);
	return 0;
}
