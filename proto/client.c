/* client.c: in-place parser and encoder of the client protocol (PROTOCOL.md). */
#include "proto/client.h"

#include "proto/codec.h"

/* Which directions may send each type. */
static const uint8_t type_dirs[256] = {
#define X_(N, code, name, dir) [code] = PROTO_FROM_##dir,
	PROTO_FRAMES(X_)
#undef X_
};

/* A user id: 1 .. PROTO_MAX_USER. */
static inline void rd_user(struct rd *r, uint64_t v)
{
	if (v == 0 || v > PROTO_MAX_USER)
		rd_fail(r);
}

/* Decode the payload of a frame of known type; sets r->bad on any violation.
 * dir: who sent it (RECEIPT kind ACK comes from clients only). */
static void parse_payload(struct rd *r, uint8_t type, struct proto_frame *f, enum proto_dir dir)
{
	switch (type) {
	case PROTO_LOGIN:
		/* any version parses: the server answers one it does not speak
		 * with LOGIN_RESULT status version (3.6) */
		f->login.version = rd_u8(r);
		f->login.flags = rd_u8(r);
		f->login.user = rd_uv(r);
		rd_user(r, f->login.user);
		f->login.token = rd_bytes(r, 1, PROTO_MAX_TOKEN);
		f->login.resume = rd_uv(r);
		break;
	case PROTO_SEND: {
		f->send.cmid = rd_uv(r);
		uint64_t to = rd_uv(r);
		f->send.to = to >> 1;
		f->send.group = (uint8_t)(to & 1);
		rd_nonzero(r, f->send.to);
		f->send.body = rd_rest(r, 1, PROTO_MAX_BODY);
		break;
	}
	case PROTO_RECEIPT:
		f->receipt.kind = rd_u8(r);
		if (f->receipt.kind != PROTO_RCPT_DELIVERED && f->receipt.kind != PROTO_RCPT_READ &&
		    (f->receipt.kind != PROTO_RCPT_ACK || !(dir & PROTO_FROM_CLIENT)))
			rd_fail(r);
		f->receipt.peer = rd_uv(r);
		rd_user(r, f->receipt.peer);
		f->receipt.smid = rd_uv(r);
		rd_nonzero(r, f->receipt.smid);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		f->ping.data = rd_rest(r, 0, PROTO_MAX_PING);
		break;
	case PROTO_GROUP:
		f->group.op = rd_u8(r);
		if (f->group.op < PROTO_GROUP_CREATE || f->group.op > PROTO_GROUP_LEAVE)
			rd_fail(r);
		f->group.req = rd_uv(r);
		f->group.group = rd_uv(r);
		/* create names no group (the server picks one); the others must */
		if ((f->group.op == PROTO_GROUP_CREATE) != (f->group.group == 0))
			rd_fail(r);
		rd_members(r, PROTO_MAX_GROUP_OP, &f->group.count, &f->group.members);
		if (f->group.op == PROTO_GROUP_LEAVE && f->group.count)
			rd_fail(r); /* leave names nobody: it is the sender who leaves */
		if (!r->bad) {
			const uint8_t *pos = f->group.members.p;
			uint64_t u;
			while (proto_members_next(&f->group.members, &pos, &u))
				rd_user(r, u);
		}
		break;
	case PROTO_LOGIN_RESULT:
		f->login_result.status = rd_u8(r);
		f->login_result.version = rd_u8(r);
		f->login_result.time_ms = rd_uv(r);
		f->login_result.keepalive_s = rd_uv32(r);
		f->login_result.max_body = rd_uv32(r);
		break;
	case PROTO_ACK:
		f->ack.cmid = rd_uv(r);
		f->ack.status = rd_u8(r);
		if (f->ack.status > PROTO_ACK_STORED)
			rd_fail(r);
		f->ack.smid = rd_uv(r);
		rd_nonzero(r, f->ack.smid);
		break;
	case PROTO_DELIVER:
		f->deliver.flags = rd_u8(r);
		if (f->deliver.flags & ~(PROTO_DELIVER_GROUP | PROTO_DELIVER_CMID))
			rd_fail(r);
		f->deliver.smid = rd_uv(r);
		rd_nonzero(r, f->deliver.smid);
		f->deliver.from = rd_uv(r);
		rd_nonzero(r, f->deliver.from);
		f->deliver.group = 0;
		if (f->deliver.flags & PROTO_DELIVER_GROUP) {
			f->deliver.group = rd_uv(r);
			rd_nonzero(r, f->deliver.group);
		}
		f->deliver.cmid = (f->deliver.flags & PROTO_DELIVER_CMID) ? rd_uv(r) : 0;
		f->deliver.time_ms = rd_uv(r);
		f->deliver.body = rd_rest(r, 1, PROTO_MAX_BODY);
		break;
	case PROTO_ERROR:
		f->error.code = rd_u8(r);
		rd_nonzero(r, f->error.code);
		f->error.ref = rd_uv(r);
		f->error.text = rd_rest(r, 0, PROTO_MAX_TEXT);
		break;
	case PROTO_GOAWAY:
		f->goaway.reconnect_ms = rd_uv32(r);
		f->goaway.hint = rd_rest(r, 0, PROTO_MAX_TEXT);
		break;
	case PROTO_KICKED:
		f->kicked.reason = rd_u8(r);
		rd_nonzero(r, f->kicked.reason);
		break;
	case PROTO_GROUP_RESULT:
		f->group_result.req = rd_uv(r);
		f->group_result.status = rd_u8(r);
		f->group_result.group = rd_uv(r);
		break;
	default:
		rd_fail(r);
		break;
	}
	if (r->p != r->end)
		rd_fail(r); /* trailing bytes */
}

long proto_parse(const uint8_t *buf, size_t len, enum proto_dir dir, struct proto_frame *f)
{
	unsigned hdr;
	long total = frame_check(buf, len, PROTO_MAX_FRAME, type_dirs, dir, &f->need, &hdr);
	if (total <= 0)
		return total;
	uint8_t type = buf[hdr];
	struct rd r = {buf + hdr + 1, buf + total, 0};
	parse_payload(&r, type, f, dir);
	if (r.bad)
		return -PROTO_E_BAD_FIELD;
	f->type = type;
	f->size = (uint32_t)total;
	return total;
}

int proto_members_next(const struct proto_bytes *members, const uint8_t **pos, uint64_t *user)
{
	if (!members->p || !*pos)
		return 0;
	const uint8_t *end = members->p + members->len;
	if (*pos >= end)
		return 0;
	return wire_uv_get(pos, end, user) == 1;
}

static void enc_payload(struct wr *w, const void *frame)
{
	const struct proto_frame *f = frame;
	switch (f->type) {
	case PROTO_LOGIN:
		wr_check(w, f->login.user != 0 && f->login.user <= PROTO_MAX_USER);
		wr_u8(w, f->login.version);
		wr_u8(w, f->login.flags);
		wr_uv(w, f->login.user);
		wr_bytes(w, f->login.token, 1, PROTO_MAX_TOKEN);
		wr_uv(w, f->login.resume);
		break;
	case PROTO_SEND:
		wr_check(w, f->send.to != 0 && f->send.to <= (UINT64_MAX >> 1) && f->send.group <= 1);
		wr_uv(w, f->send.cmid);
		wr_uv(w, (f->send.to << 1) | (f->send.group & 1));
		wr_rest(w, f->send.body, 1, PROTO_MAX_BODY);
		break;
	case PROTO_RECEIPT:
		wr_check(w, f->receipt.kind >= PROTO_RCPT_DELIVERED && f->receipt.kind <= PROTO_RCPT_ACK &&
				    f->receipt.peer != 0 && f->receipt.peer <= PROTO_MAX_USER && f->receipt.smid != 0);
		wr_u8(w, f->receipt.kind);
		wr_uv(w, f->receipt.peer);
		wr_uv(w, f->receipt.smid);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		wr_rest(w, f->ping.data, 0, PROTO_MAX_PING);
		break;
	case PROTO_GROUP: {
		wr_check(w, f->group.op >= PROTO_GROUP_CREATE && f->group.op <= PROTO_GROUP_LEAVE &&
				    (f->group.op == PROTO_GROUP_CREATE) == (f->group.group == 0) &&
				    (f->group.op != PROTO_GROUP_LEAVE || f->group.count == 0));
		if (!w->bad && f->group.members.p) {
			const uint8_t *pos = f->group.members.p;
			uint64_t u;
			while (proto_members_next(&f->group.members, &pos, &u))
				wr_check(w, u <= PROTO_MAX_USER);
		}
		wr_u8(w, f->group.op);
		wr_uv(w, f->group.req);
		wr_uv(w, f->group.group);
		wr_members(w, f->group.count, f->group.members, PROTO_MAX_GROUP_OP);
		break;
	}
	case PROTO_LOGIN_RESULT:
		wr_u8(w, f->login_result.status);
		wr_u8(w, f->login_result.version);
		wr_uv(w, f->login_result.time_ms);
		wr_uv(w, f->login_result.keepalive_s);
		wr_uv(w, f->login_result.max_body);
		break;
	case PROTO_ACK:
		wr_check(w, f->ack.status <= PROTO_ACK_STORED && f->ack.smid != 0);
		wr_uv(w, f->ack.cmid);
		wr_u8(w, f->ack.status);
		wr_uv(w, f->ack.smid);
		break;
	case PROTO_DELIVER: {
		int grp = (f->deliver.flags & PROTO_DELIVER_GROUP) != 0;
		wr_check(w, !(f->deliver.flags & ~(PROTO_DELIVER_GROUP | PROTO_DELIVER_CMID)) && f->deliver.smid != 0 &&
				    f->deliver.from != 0 && (!grp || f->deliver.group != 0));
		wr_u8(w, f->deliver.flags);
		wr_uv(w, f->deliver.smid);
		wr_uv(w, f->deliver.from);
		if (grp)
			wr_uv(w, f->deliver.group);
		if (f->deliver.flags & PROTO_DELIVER_CMID)
			wr_uv(w, f->deliver.cmid);
		wr_uv(w, f->deliver.time_ms);
		wr_rest(w, f->deliver.body, 1, PROTO_MAX_BODY);
		break;
	}
	case PROTO_ERROR:
		wr_check(w, f->error.code != 0);
		wr_u8(w, f->error.code);
		wr_uv(w, f->error.ref);
		wr_rest(w, f->error.text, 0, PROTO_MAX_TEXT);
		break;
	case PROTO_GOAWAY:
		wr_uv(w, f->goaway.reconnect_ms);
		wr_rest(w, f->goaway.hint, 0, PROTO_MAX_TEXT);
		break;
	case PROTO_KICKED:
		wr_check(w, f->kicked.reason != 0);
		wr_u8(w, f->kicked.reason);
		break;
	case PROTO_GROUP_RESULT:
		wr_uv(w, f->group_result.req);
		wr_u8(w, f->group_result.status);
		wr_uv(w, f->group_result.group);
		break;
	default:
		w->bad = 1;
		break;
	}
}

size_t proto_encode(const struct proto_frame *f, uint8_t *buf, size_t cap)
{
	return frame_encode(f->type, enc_payload, f, buf, cap, PROTO_MAX_FRAME);
}

size_t proto_enc_deliver(uint8_t *buf, size_t cap, uint64_t smid, uint64_t from, uint64_t group, uint64_t time_ms,
			 const uint8_t *body, uint32_t body_len)
{
	struct proto_frame f = {.type = PROTO_DELIVER};
	f.deliver.flags = group ? PROTO_DELIVER_GROUP : 0;
	f.deliver.smid = smid;
	f.deliver.from = from;
	f.deliver.group = group;
	f.deliver.time_ms = time_ms;
	f.deliver.body = (struct proto_bytes){body, body_len};
	return proto_encode(&f, buf, cap);
}

size_t proto_enc_ack(uint8_t *buf, size_t cap, uint64_t cmid, uint8_t status, uint64_t smid)
{
	struct proto_frame f = {.type = PROTO_ACK};
	f.ack.cmid = cmid;
	f.ack.status = status;
	f.ack.smid = smid;
	return proto_encode(&f, buf, cap);
}

size_t proto_enc_error(uint8_t *buf, size_t cap, uint8_t code, uint64_t ref, const char *text)
{
	struct proto_frame f = {.type = PROTO_ERROR};
	f.error.code = code;
	f.error.ref = ref;
	f.error.text = proto_text(text);
	return proto_encode(&f, buf, cap);
}

struct proto_bytes proto_text(const char *text)
{
	if (!text)
		return (struct proto_bytes){(const uint8_t *)"", 0};
	size_t n = strlen(text);
	if (n > PROTO_MAX_TEXT) {
		n = PROTO_MAX_TEXT;
		while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
			n--; /* do not cut a UTF-8 sequence in half */
	}
	return (struct proto_bytes){(const uint8_t *)text, (uint32_t)n};
}

size_t proto_enc_send(uint8_t *buf, size_t cap, uint64_t cmid, uint64_t to, int group, const uint8_t *body,
		      uint32_t body_len)
{
	struct proto_frame f = {.type = PROTO_SEND};
	f.send.cmid = cmid;
	f.send.to = to;
	f.send.group = group ? 1 : 0;
	f.send.body = (struct proto_bytes){body, body_len};
	return proto_encode(&f, buf, cap);
}

const char *proto_err_name(unsigned code)
{
	static const char *const names[PROTO_E_CODES] = {
		[PROTO_OK] = "ok",
#define X_(N, code, name, cls) [code] = #name,
		PROTO_ERRORS(X_)
#undef X_
	};
	if (code < PROTO_E_CODES && names[code])
		return names[code];
	return "unknown";
}

const char *proto_type_name(unsigned type)
{
	static const char *const names[256] = {
#define X_(N, code, name, dir) [code] = #name,
		PROTO_FRAMES(X_)
#undef X_
	};
	return type < 256 && names[type] ? names[type] : "unknown";
}
