/* dist.c: in-place parser and encoder of the distribution link format. */
#include "proto/dist.h"

#include "proto/codec.h"

/* Where a type may stand: top level, inside a batch, or neither (0). */
enum { AT_TOP = 1, AT_INNER = 2 };
static const uint8_t type_where[256] = {
	[DIST_HELLO] = AT_TOP,
	[DIST_AUTH] = AT_TOP,
	[DIST_RECEIPT_ACK] = AT_INNER,
	[DIST_BATCH] = AT_TOP,
	[DIST_HEARTBEAT] = AT_TOP,
	[DIST_CREDIT] = AT_TOP | AT_INNER,
	[DIST_ERROR] = AT_TOP,
	[DIST_ROUTE] = AT_INNER,
	[DIST_SESSION_UP] = AT_INNER,
	[DIST_SESSION_DOWN] = AT_INNER,
	[DIST_STORE_ACK] = AT_INNER,
	[DIST_RECEIPT] = AT_INNER,
	[DIST_GROUP_OP] = AT_INNER,
	[DIST_GROUP_RESULT] = AT_INNER,
	[DIST_KICK] = AT_INNER,
	[DIST_HANDOFF] = AT_INNER,
	[DIST_HANDOFF_ACK] = AT_INNER,
};

/* Field rules both the parser and the encoder hold to. */
static int rcpt_flags_ok(uint8_t flags)
{
	/* at least one known flag; RELAY (backend -> gateway) only alone */
	return flags && !(flags & ~DIST_RCPT_FLAGS) && (!(flags & DIST_RCPT_RELAY) || flags == DIST_RCPT_RELAY);
}

static int handoff_ok(uint8_t type, const struct dist_frame *f)
{
	/* a handoff is one user's copy of a stored message, from a holder */
	return type != DIST_HANDOFF || (f->route.smid && f->route.to && f->route.onode);
}

static void parse_payload(struct rd *r, uint8_t type, struct dist_frame *f)
{
	switch (type) {
	case DIST_HELLO:
		if (r->end - r->p < 4 || memcmp(r->p, DIST_MAGIC, 4) != 0) {
			rd_fail(r);
			break;
		}
		r->p += 4;
		f->hello.version = rd_u8(r);
		f->hello.role = rd_u8(r);
		if (f->hello.role != DIST_ROLE_GATEWAY && f->hello.role != DIST_ROLE_BACKEND)
			rd_fail(r);
		if (f->hello.version != DIST_VERSION) {
			/* another version's fields: the receiver refuses by version */
			f->hello.node = f->hello.thread = f->hello.threads = f->hello.key_id = 0;
			f->hello.nonce = NULL;
			r->p = r->end;
			break;
		}
		f->hello.node = rd_uv32(r);
		rd_nonzero(r, f->hello.node);
		f->hello.thread = rd_uv32(r);
		f->hello.threads = rd_uv32(r);
		rd_nonzero(r, f->hello.threads);
		if (f->hello.thread >= f->hello.threads)
			rd_fail(r);
		f->hello.key_id = rd_uv32(r);
		f->hello.nonce = r->p;
		if (r->bad || r->end - r->p < (ptrdiff_t)DIST_NONCE)
			rd_fail(r);
		else
			r->p += DIST_NONCE;
		break;
	case DIST_AUTH:
		f->auth.mac = r->p;
		if (r->end - r->p != (ptrdiff_t)DIST_MAC)
			rd_fail(r);
		else
			r->p += DIST_MAC;
		break;
	case DIST_RECEIPT_ACK:
		f->receipt_ack.user = rd_uv(r);
		rd_nonzero(r, f->receipt_ack.user);
		f->receipt_ack.peer = rd_uv(r);
		rd_nonzero(r, f->receipt_ack.peer);
		f->receipt_ack.smid = rd_uv(r);
		rd_nonzero(r, f->receipt_ack.smid);
		break;
	case DIST_BATCH: {
		f->batch.seq = rd_uv(r);
		uint64_t count = rd_uv(r);
		if (count == 0 || count > DIST_MAX_BATCH)
			rd_fail(r);
		f->batch.count = (uint32_t)count;
		f->batch.frames = rd_rest(r, 0, DIST_MAX_FRAME);
		/* check the framing of every inner frame now; fields on iteration */
		const uint8_t *p = f->batch.frames.p, *end = p + f->batch.frames.len;
		for (uint32_t i = 0; i < f->batch.count && !r->bad; i++) {
			uint32_t need;
			unsigned hdr;
			long n = frame_check(p, (size_t)(end - p), DIST_MAX_INNER, type_where, AT_INNER, &need, &hdr);
			if (n <= 0)
				rd_fail(r); /* a partial frame inside a whole batch is malformed too */
			else
				p += n;
		}
		if (p != end)
			rd_fail(r);
		break;
	}
	case DIST_ROUTE:
	case DIST_HANDOFF:
		f->route.smid = rd_uv(r);
		f->route.from = rd_uv(r);
		rd_nonzero(r, f->route.from);
		f->route.to = rd_uv(r);
		f->route.group = rd_uv(r);
		if (f->route.to == 0 && f->route.group == 0)
			rd_fail(r);
		f->route.time_ms = rd_uv(r);
		f->route.onode = rd_uv32(r);
		f->route.othread = rd_uv32(r);
		f->route.oconn = rd_uv(r);
		f->route.cmid = rd_uv(r);
		f->route.body = rd_rest(r, 1, PROTO_MAX_BODY);
		if (!handoff_ok(type, f))
			rd_fail(r);
		break;
	case DIST_HANDOFF_ACK:
		f->handoff_ack.node = rd_uv32(r);
		rd_nonzero(r, f->handoff_ack.node);
		f->handoff_ack.thread = rd_uv32(r);
		f->handoff_ack.user = rd_uv(r);
		rd_nonzero(r, f->handoff_ack.user);
		f->handoff_ack.smid = rd_uv(r);
		rd_nonzero(r, f->handoff_ack.smid);
		break;
	case DIST_SESSION_UP:
	case DIST_SESSION_DOWN:
		f->session.user = rd_uv(r);
		rd_nonzero(r, f->session.user);
		f->session.node = rd_uv32(r);
		rd_nonzero(r, f->session.node);
		f->session.thread = rd_uv32(r);
		f->session.conn = rd_uv(r);
		f->session.resume = type == DIST_SESSION_UP ? rd_uv(r) : 0;
		f->session.flags = type == DIST_SESSION_UP ? rd_u8(r) : 0;
		if (f->session.flags & ~DIST_SESS_FLAGS)
			rd_fail(r);
		break;
	case DIST_STORE_ACK:
		f->store_ack.thread = rd_uv32(r);
		f->store_ack.conn = rd_uv(r);
		f->store_ack.cmid = rd_uv(r);
		f->store_ack.smid = rd_uv(r);
		f->store_ack.status = rd_u8(r);
		/* a stored message has an id; a refused one has none */
		if ((f->store_ack.status == PROTO_OK) != (f->store_ack.smid != 0))
			rd_fail(r);
		break;
	case DIST_RECEIPT:
		f->receipt.kind = rd_u8(r);
		if (f->receipt.kind != PROTO_RCPT_DELIVERED && f->receipt.kind != PROTO_RCPT_READ)
			rd_fail(r);
		f->receipt.flags = rd_u8(r);
		if (!rcpt_flags_ok(f->receipt.flags))
			rd_fail(r);
		f->receipt.from = rd_uv(r);
		rd_nonzero(r, f->receipt.from);
		f->receipt.to = rd_uv(r);
		rd_nonzero(r, f->receipt.to);
		f->receipt.smid = rd_uv(r);
		rd_nonzero(r, f->receipt.smid);
		break;
	case DIST_CREDIT:
		f->credit.bytes = rd_uv(r);
		break;
	case DIST_HEARTBEAT:
		f->heartbeat.seq = rd_uv(r);
		f->heartbeat.t_us = rd_uv(r);
		f->heartbeat.reply = rd_u8(r);
		if (f->heartbeat.reply > 1)
			rd_fail(r);
		break;
	case DIST_GROUP_OP:
		f->group_op.op = rd_u8(r);
		if (f->group_op.op < PROTO_GROUP_CREATE || f->group_op.op > PROTO_GROUP_LEAVE)
			rd_fail(r);
		f->group_op.req = rd_uv(r);
		f->group_op.group = rd_uv(r);
		if ((f->group_op.op == PROTO_GROUP_CREATE) != (f->group_op.group == 0))
			rd_fail(r);
		f->group_op.user = rd_uv(r);
		rd_nonzero(r, f->group_op.user);
		f->group_op.thread = rd_uv32(r);
		f->group_op.conn = rd_uv(r);
		rd_members(r, PROTO_MAX_GROUP_OP, &f->group_op.count, &f->group_op.members);
		if (f->group_op.op == PROTO_GROUP_LEAVE && f->group_op.count)
			rd_fail(r);
		break;
	case DIST_GROUP_RESULT:
		f->group_result.thread = rd_uv32(r);
		f->group_result.conn = rd_uv(r);
		f->group_result.req = rd_uv(r);
		f->group_result.status = rd_u8(r);
		f->group_result.group = rd_uv(r);
		break;
	case DIST_KICK:
		f->kick.user = rd_uv(r);
		rd_nonzero(r, f->kick.user);
		f->kick.thread = rd_uv32(r);
		f->kick.conn = rd_uv(r);
		f->kick.reason = rd_u8(r);
		rd_nonzero(r, f->kick.reason);
		break;
	case DIST_ERROR:
		f->error.code = rd_u8(r);
		rd_nonzero(r, f->error.code);
		f->error.text = rd_rest(r, 0, PROTO_MAX_TEXT);
		break;
	default:
		rd_fail(r);
		break;
	}
	if (r->p != r->end)
		rd_fail(r);
}

/* Parse one frame at [buf, buf+len) allowed at `where`, limited to max. */
static long parse_one(const uint8_t *buf, size_t len, uint32_t max, int where, struct dist_frame *f)
{
	unsigned hdr;
	long total = frame_check(buf, len, max, type_where, (unsigned)where, &f->need, &hdr);
	if (total <= 0)
		return total;
	uint8_t type = buf[hdr];
	struct rd r = {buf + hdr + 1, buf + total, 0};
	parse_payload(&r, type, f);
	if (r.bad)
		return -PROTO_E_BAD_FIELD;
	f->type = type;
	f->size = (uint32_t)total;
	return total;
}

long dist_parse(const uint8_t *buf, size_t len, struct dist_frame *f)
{
	return parse_one(buf, len, DIST_MAX_FRAME, AT_TOP, f);
}

void dist_batch_iter(const struct dist_frame *batch, struct dist_iter *it)
{
	it->p = batch->batch.frames.p;
	it->end = it->p + batch->batch.frames.len;
	it->left = batch->batch.count;
}

int dist_batch_next(struct dist_iter *it, struct dist_frame *f)
{
	if (it->left == 0)
		return 0;
	long n = parse_one(it->p, (size_t)(it->end - it->p), DIST_MAX_INNER, AT_INNER, f);
	if (n == PROTO_NEED_MORE)
		return -PROTO_E_BAD_FRAME; /* cannot happen after dist_parse() checked the batch */
	if (n < 0)
		return (int)n;
	it->p += n;
	it->left--;
	return 1;
}

static void enc_payload(struct wr *w, const void *frame)
{
	const struct dist_frame *f = frame;
	switch (f->type) {
	case DIST_HELLO:
		wr_check(w, (f->hello.role == DIST_ROLE_GATEWAY || f->hello.role == DIST_ROLE_BACKEND) &&
				    f->hello.version == DIST_VERSION && f->hello.node != 0 &&
				    f->hello.thread < f->hello.threads && f->hello.nonce != NULL);
		if (w->bad)
			break;
		wr_raw(w, (const uint8_t *)DIST_MAGIC, 4);
		wr_u8(w, f->hello.version);
		wr_u8(w, f->hello.role);
		wr_uv(w, f->hello.node);
		wr_uv(w, f->hello.thread);
		wr_uv(w, f->hello.threads);
		wr_uv(w, f->hello.key_id);
		wr_raw(w, f->hello.nonce, DIST_NONCE);
		break;
	case DIST_AUTH:
		wr_check(w, f->auth.mac != NULL);
		if (!w->bad)
			wr_raw(w, f->auth.mac, DIST_MAC);
		break;
	case DIST_RECEIPT_ACK:
		wr_check(w, f->receipt_ack.user != 0 && f->receipt_ack.peer != 0 && f->receipt_ack.smid != 0);
		wr_uv(w, f->receipt_ack.user);
		wr_uv(w, f->receipt_ack.peer);
		wr_uv(w, f->receipt_ack.smid);
		break;
	case DIST_ROUTE:
	case DIST_HANDOFF:
		wr_check(w, f->route.from != 0 && (f->route.to != 0 || f->route.group != 0) && handoff_ok(f->type, f));
		wr_uv(w, f->route.smid);
		wr_uv(w, f->route.from);
		wr_uv(w, f->route.to);
		wr_uv(w, f->route.group);
		wr_uv(w, f->route.time_ms);
		wr_uv(w, f->route.onode);
		wr_uv(w, f->route.othread);
		wr_uv(w, f->route.oconn);
		wr_uv(w, f->route.cmid);
		wr_rest(w, f->route.body, 1, PROTO_MAX_BODY);
		break;
	case DIST_SESSION_UP:
	case DIST_SESSION_DOWN:
		wr_check(w, f->session.user != 0 && f->session.node != 0 &&
				    (f->type == DIST_SESSION_UP || (f->session.resume == 0 && f->session.flags == 0)) &&
				    !(f->session.flags & ~DIST_SESS_FLAGS));
		wr_uv(w, f->session.user);
		wr_uv(w, f->session.node);
		wr_uv(w, f->session.thread);
		wr_uv(w, f->session.conn);
		if (f->type == DIST_SESSION_UP) {
			wr_uv(w, f->session.resume);
			wr_u8(w, f->session.flags);
		}
		break;
	case DIST_STORE_ACK:
		wr_check(w, (f->store_ack.status == PROTO_OK) == (f->store_ack.smid != 0));
		wr_uv(w, f->store_ack.thread);
		wr_uv(w, f->store_ack.conn);
		wr_uv(w, f->store_ack.cmid);
		wr_uv(w, f->store_ack.smid);
		wr_u8(w, f->store_ack.status);
		break;
	case DIST_HANDOFF_ACK:
		wr_check(w, f->handoff_ack.node != 0 && f->handoff_ack.user != 0 && f->handoff_ack.smid != 0);
		wr_uv(w, f->handoff_ack.node);
		wr_uv(w, f->handoff_ack.thread);
		wr_uv(w, f->handoff_ack.user);
		wr_uv(w, f->handoff_ack.smid);
		break;
	case DIST_RECEIPT:
		wr_check(w, (f->receipt.kind == PROTO_RCPT_DELIVERED || f->receipt.kind == PROTO_RCPT_READ) &&
				    rcpt_flags_ok(f->receipt.flags) && f->receipt.from != 0 && f->receipt.to != 0 &&
				    f->receipt.smid != 0);
		wr_u8(w, f->receipt.kind);
		wr_u8(w, f->receipt.flags);
		wr_uv(w, f->receipt.from);
		wr_uv(w, f->receipt.to);
		wr_uv(w, f->receipt.smid);
		break;
	case DIST_CREDIT:
		wr_uv(w, f->credit.bytes);
		break;
	case DIST_HEARTBEAT:
		wr_check(w, f->heartbeat.reply <= 1);
		wr_uv(w, f->heartbeat.seq);
		wr_uv(w, f->heartbeat.t_us);
		wr_u8(w, f->heartbeat.reply);
		break;
	case DIST_GROUP_OP:
		wr_check(w, f->group_op.op >= PROTO_GROUP_CREATE && f->group_op.op <= PROTO_GROUP_LEAVE &&
				    (f->group_op.op == PROTO_GROUP_CREATE) == (f->group_op.group == 0) &&
				    (f->group_op.op != PROTO_GROUP_LEAVE || f->group_op.count == 0) && f->group_op.user != 0);
		wr_u8(w, f->group_op.op);
		wr_uv(w, f->group_op.req);
		wr_uv(w, f->group_op.group);
		wr_uv(w, f->group_op.user);
		wr_uv(w, f->group_op.thread);
		wr_uv(w, f->group_op.conn);
		wr_members(w, f->group_op.count, f->group_op.members, PROTO_MAX_GROUP_OP);
		break;
	case DIST_GROUP_RESULT:
		wr_uv(w, f->group_result.thread);
		wr_uv(w, f->group_result.conn);
		wr_uv(w, f->group_result.req);
		wr_u8(w, f->group_result.status);
		wr_uv(w, f->group_result.group);
		break;
	case DIST_KICK:
		wr_check(w, f->kick.user != 0 && f->kick.reason != 0);
		wr_uv(w, f->kick.user);
		wr_uv(w, f->kick.thread);
		wr_uv(w, f->kick.conn);
		wr_u8(w, f->kick.reason);
		break;
	case DIST_ERROR:
		wr_check(w, f->error.code != 0);
		wr_u8(w, f->error.code);
		wr_rest(w, f->error.text, 0, PROTO_MAX_TEXT);
		break;
	default: /* BATCH is built with dist_batch */
		w->bad = 1;
		break;
	}
}

/* Encode with a limit on L. */
static size_t encode_max(const struct dist_frame *f, uint8_t *buf, size_t cap, uint32_t max)
{
	return frame_encode(f->type, enc_payload, f, buf, cap, max);
}

size_t dist_encode(const struct dist_frame *f, uint8_t *buf, size_t cap)
{
	uint32_t max = (type_where[f->type] & AT_TOP) ? DIST_MAX_FRAME : DIST_MAX_INNER;
	return encode_max(f, buf, cap, max);
}

void dist_batch_init(struct dist_batch *b, uint8_t *buf, size_t cap)
{
	b->buf = buf;
	b->cap = cap;
	b->len = 0;
	b->count = 0;
}

int dist_batch_add(struct dist_batch *b, const struct dist_frame *f)
{
	if (!(type_where[f->type] & AT_INNER))
		return -2;
	if (b->count >= DIST_MAX_BATCH)
		return -1;
	size_t at = DIST_BATCH_HEADROOM + b->len;
	size_t room = b->cap > at ? b->cap - at : 0;
	/* keep the finished frame's L within DIST_MAX_FRAME (headroom covers type+seq+count) */
	size_t limit = DIST_MAX_FRAME - 16 - b->len;
	if (room > limit)
		room = limit;
	size_t n = encode_max(f, b->buf + at, room, DIST_MAX_INNER);
	if (n == 0)
		return -2;
	if (n > room)
		return -1;
	b->len += n;
	b->count++;
	return 0;
}

uint8_t *dist_batch_finish(struct dist_batch *b, uint64_t seq, size_t *size)
{
	uint8_t head[DIST_BATCH_HEADROOM];
	uint8_t *p = head + 4; /* room for the length prefix in front */
	*p++ = DIST_BATCH;
	p = wire_uv_put(p, seq);
	p = wire_uv_put(p, b->count);
	size_t body = (size_t)(p - (head + 4));
	uint32_t flen = (uint32_t)(body + b->len);
	unsigned pre = wire_uv_size(flen);
	uint8_t *start = b->buf + DIST_BATCH_HEADROOM - body - pre;
	wire_uv_put(start, flen);
	memcpy(start + pre, head + 4, body);
	*size = pre + flen;
	return start;
}

const char *dist_type_name(unsigned type)
{
	switch (type) {
	case DIST_HELLO: return "hello";
	case DIST_BATCH: return "batch";
	case DIST_ROUTE: return "route";
	case DIST_SESSION_UP: return "session_up";
	case DIST_SESSION_DOWN: return "session_down";
	case DIST_STORE_ACK: return "store_ack";
	case DIST_RECEIPT: return "receipt";
	case DIST_CREDIT: return "credit";
	case DIST_HEARTBEAT: return "heartbeat";
	case DIST_GROUP_OP: return "group_op";
	case DIST_GROUP_RESULT: return "group_result";
	case DIST_KICK: return "kick";
	case DIST_ERROR: return "error";
	case DIST_AUTH: return "auth";
	case DIST_RECEIPT_ACK: return "receipt_ack";
	case DIST_HANDOFF: return "handoff";
	case DIST_HANDOFF_ACK: return "handoff_ack";
	default: return "unknown";
	}
}
