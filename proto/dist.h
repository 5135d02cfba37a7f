/* dist.h: the distribution link format (gateway thread <-> backend node).
 *
 * Same framing as the client protocol (varint length, type byte, payload;
 * PROTOCOL.md part 2) with larger limits. Data frames travel inside BATCH
 * frames: everything one loop iteration produces for a link goes out as one
 * batch. Only HELLO, AUTH, BATCH, HEARTBEAT, CREDIT and ERROR stand at the top
 * level; every other type only inside a batch. HELLO and AUTH authenticate
 * the peers (runtime/peerauth.h).
 *
 * Parsing is in place like proto_parse(): dist_parse() reads one top-level
 * frame; dist_batch_next() walks the inner frames of a parsed BATCH. Views
 * point into the caller's buffer. All functions are pure and thread-safe.
 */
#ifndef PROTO_DIST_H
#define PROTO_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "proto/client.h"

#define DIST_VERSION 4 /* 4: sessions go to the user's owner only; HANDOFF (3: msgid layout 3) */
#define DIST_MAGIC "GWDL"
#define DIST_MAX_FRAME (1u << 20)               /* top-level L: a whole batch */
#define DIST_MAX_INNER (PROTO_MAX_BODY + 256u)  /* L of one inner frame */
#define DIST_MAX_BATCH 65535u                   /* inner frames per batch */
#define DIST_BATCH_HEADROOM 24u                 /* bytes dist_batch keeps in front */
#define DIST_NONCE 32u                          /* HELLO nonce bytes */
#define DIST_MAC 32u                            /* AUTH mac bytes */

enum dist_type {
	DIST_HELLO = 0x41,
	DIST_BATCH = 0x42,
	DIST_ROUTE = 0x43,
	DIST_SESSION_UP = 0x44,
	DIST_SESSION_DOWN = 0x45,
	DIST_STORE_ACK = 0x46,
	DIST_RECEIPT = 0x47,
	DIST_CREDIT = 0x48,
	DIST_HEARTBEAT = 0x49,
	DIST_GROUP_OP = 0x4a,
	DIST_GROUP_RESULT = 0x4b,
	DIST_KICK = 0x4c,
	DIST_ERROR = 0x4d,
	DIST_AUTH = 0x4e,
	DIST_RECEIPT_ACK = 0x4f,
	DIST_HANDOFF = 0x50,
	DIST_HANDOFF_ACK = 0x51,
};

enum dist_role { DIST_ROLE_GATEWAY = 1, DIST_ROLE_BACKEND = 2 };

/* RECEIPT flags: what the receiving backend is asked to do. */
#define DIST_RCPT_DELETE 0x01u /* `from` has message smid: drop it from from's mailbox */
#define DIST_RCPT_NOTIFY 0x02u /* tell `to` (forward to its gateway, or store it) */
#define DIST_RCPT_STORE 0x04u  /* store it for `to` without forwarding (bounced by a gateway) */
#define DIST_RCPT_RELAY 0x08u  /* backend -> gateway: give it to `to`'s owner (as NOTIFY); alone */
#define DIST_RCPT_FLAGS (DIST_RCPT_DELETE | DIST_RCPT_NOTIFY | DIST_RCPT_STORE | DIST_RCPT_RELAY)

/* SESSION_UP flags. */
#define DIST_SESS_RCPT_ACKS 0x01u /* the client acknowledges stored receipts (protocol 2) */
#define DIST_SESS_FLAGS DIST_SESS_RCPT_ACKS

/* Name of a dist frame type ("route"), or "unknown". Never NULL. */
const char *dist_type_name(unsigned type);

/* One parsed dist frame; the union member follows `type` (SESSION_UP and
 * SESSION_DOWN share `session`; DOWN has resume 0; HANDOFF is a ROUTE's
 * layout, in `route`, with smid and to set and onode/othread naming the
 * node thread that holds the message). Error results reuse
 * enum proto_err codes: BAD_FRAME, TOO_BIG, BAD_TYPE, BAD_FIELD. */
struct dist_frame {
	uint8_t type;
	uint32_t size; /* bytes taken, prefix included */
	uint32_t need; /* after PROTO_NEED_MORE: bytes needed in all */
	union {
		struct {
			uint8_t version, role;
			/* the fields below are parsed only when version == DIST_VERSION
			 * (so a peer of another version is told so, not "malformed") */
			uint32_t node, thread, threads;
			uint32_t key_id;          /* the cluster key the sender signs with */
			const uint8_t *nonce;     /* DIST_NONCE bytes */
		} hello;
		struct {
			const uint8_t *mac; /* DIST_MAC bytes */
		} auth;
		struct {
			uint64_t seq;
			uint32_t count;
			struct proto_bytes frames; /* walk with dist_batch_next() */
		} batch;
		struct {
			uint64_t smid;  /* 0 from a gateway (the backend assigns), set by a backend */
			uint64_t from;  /* sender user id (never 0) */
			uint64_t to;    /* recipient user id, 0 for a group send to the backend */
			uint64_t group; /* group id or 0 */
			uint64_t time_ms;
			uint32_t onode, othread; /* origin gateway node and thread (for STORE_ACK) */
			uint64_t oconn;          /* origin connection reference, opaque to backends */
			uint64_t cmid;           /* client message id at the origin */
			struct proto_bytes body;
		} route;
		struct {
			uint64_t user;
			uint32_t node, thread;
			uint64_t conn;
			uint64_t resume; /* SESSION_UP: last server message id the client saw */
			uint8_t flags;   /* SESSION_UP: DIST_SESS_* */
		} session;
		struct {
			uint32_t thread;
			uint64_t conn, cmid, smid;
			uint8_t status; /* PROTO_OK (stored) or a proto_err code */
		} store_ack;
		struct {
			uint8_t kind;  /* enum proto_receipt_kind */
			uint8_t flags; /* DIST_RCPT_* (at least one) */
			uint64_t from, to, smid;
		} receipt;
		struct {
			uint64_t user, peer, smid; /* user got peer's receipt about smid: drop it */
		} receipt_ack;
		struct {
			uint32_t node, thread; /* the holder the HANDOFF came from */
			uint64_t user, smid;   /* its copy for user is stored: drop yours */
		} handoff_ack;
		struct {
			uint64_t bytes;
		} credit;
		struct {
			uint64_t seq, t_us;
			uint8_t reply;
		} heartbeat;
		struct {
			uint8_t op; /* enum proto_group_op */
			uint64_t req, group, user;
			uint32_t thread;
			uint64_t conn;
			uint32_t count;
			struct proto_bytes members;
		} group_op;
		struct {
			uint32_t thread;
			uint64_t conn, req;
			uint8_t status;
			uint64_t group;
		} group_result;
		struct {
			uint64_t user;
			uint32_t thread;
			uint64_t conn;
			uint8_t reason; /* enum proto_kick_reason */
		} kick;
		struct {
			uint8_t code;
			struct proto_bytes text;
		} error;
	};
};

/* Parse one top-level frame at buf[0..len): same return contract as
 * proto_parse() (bytes consumed, PROTO_NEED_MORE with f->need, or -code).
 * A BATCH is checked whole: its count matches the inner frames, each inner
 * frame's length fits and its type is allowed inside a batch. */
long dist_parse(const uint8_t *buf, size_t len, struct dist_frame *f);

/* Iterator over the inner frames of a parsed BATCH. */
struct dist_iter {
	const uint8_t *p, *end;
	uint32_t left;
};

void dist_batch_iter(const struct dist_frame *batch, struct dist_iter *it);

/* Next inner frame: 1 with *f filled, 0 at the end, or -code when its fields
 * are invalid (the link is then to be closed). */
int dist_batch_next(struct dist_iter *it, struct dist_frame *f);

/* Encode any frame (top-level or inner) into buf; contract of proto_encode():
 * returns the size, writes only when cap is enough, 0 for an invalid frame.
 * BATCH frames are built with dist_batch below, not here. */
size_t dist_encode(const struct dist_frame *f, uint8_t *buf, size_t cap);

/* Building a batch in place: inner frames are encoded straight into the
 * buffer after DIST_BATCH_HEADROOM bytes; dist_batch_finish() writes the
 * header right in front of them, so nothing is copied. The caller owns buf. */
struct dist_batch {
	uint8_t *buf;
	size_t cap;
	size_t len;     /* bytes of inner frames so far */
	uint32_t count; /* inner frames so far */
};

/* Start an empty batch over buf[0..cap); cap must exceed DIST_BATCH_HEADROOM. */
void dist_batch_init(struct dist_batch *b, uint8_t *buf, size_t cap);

/* Append one inner frame. Returns 0, or -1 when it does not fit (in the
 * buffer, in DIST_MAX_FRAME or in DIST_MAX_BATCH frames; then flush and
 * retry) or -2 when the frame is invalid or not allowed in a batch. */
int dist_batch_add(struct dist_batch *b, const struct dist_frame *f);

/* Write the header for sequence number seq; returns where the finished frame
 * starts inside buf and stores its size. The batch must hold >= 1 frame. */
uint8_t *dist_batch_finish(struct dist_batch *b, uint64_t seq, size_t *size);

#endif
