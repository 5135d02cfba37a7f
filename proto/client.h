/* client.h: the client protocol (mobile client <-> gateway), parsed in place.
 *
 * The byte-level spec is proto/PROTOCOL.md; this header is the C contract.
 *
 * Parsing is picohttpparser-shaped: proto_parse() takes (buf, len) and either
 * fills a view whose byte fields point into buf (no allocation, no copy), or
 * says it needs more bytes (and how many in all), or returns a specific error.
 * It never reads outside [buf, buf+len). The views stay valid as long as buf.
 *
 * Encoding: proto_encode() writes one frame into a caller-provided buffer and
 * returns the size it needs; it writes nothing when the buffer is too small,
 * and refuses (returns 0) a frame that proto_parse() would reject, so the
 * gateway never emits what it would itself call malformed.
 *
 * Thread safety: every function is pure (no global state); call from any thread.
 */
#ifndef PROTO_CLIENT_H
#define PROTO_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/* Protocol versions this library speaks (LOGIN carries the client's). */
#define PROTO_VERSION_MIN 1
#define PROTO_VERSION_MAX 2 /* 2: DELIVER may carry the cmid, RECEIPT kind 3 acknowledges a stored receipt */

/* Limits (see PROTOCOL.md, "Limits"). */
#define PROTO_MAX_BODY 16384u                       /* message body bytes */
#define PROTO_MAX_FRAME (PROTO_MAX_BODY + 64u)      /* length-prefix value L */
#define PROTO_MAX_FRAME_BYTES (PROTO_MAX_FRAME + 3u) /* a whole frame, prefix included */
#define PROTO_MAX_TOKEN 64u                         /* auth token bytes */
#define PROTO_MAX_PING 8u                           /* ping/pong data bytes */
#define PROTO_MAX_TEXT 256u                         /* error text, goaway hint */
#define PROTO_MAX_GROUP_OP 256u                     /* members in one GROUP frame */
#define PROTO_MAX_USER ((UINT64_C(1) << 63) - 1)     /* user ids are 1 .. 2^63-1 (SEND's `to` keeps a bit) */
/* The largest LOGIN, prefix included: L (1 byte), type, version, flags,
 * user (<= 10), token length (1) and token, resume (<= 10). Before login a
 * gateway refuses any longer frame (PROTOCOL.md 3.3). */
#define PROTO_LOGIN_MAX_BYTES (1u + 1u + 1u + 1u + 10u + 1u + PROTO_MAX_TOKEN + 10u)

/* Who sent the bytes being parsed: decides which types are allowed. */
enum proto_dir {
	PROTO_FROM_CLIENT = 1, /* the gateway parses these */
	PROTO_FROM_SERVER = 2, /* clients (loadgen, tests) parse these */
	PROTO_FROM_ANY = 3,    /* tests and tools */
};

/* The frame list, the one place a frame type is declared: X(NAME, code,
 * name, DIR), DIR being who may send it (CLIENT, SERVER or ANY, as in
 * PROTO_FROM_*). 0x01..0x7f are sent by clients (RECEIPT, PING and PONG go
 * both ways); 0x81..0xff by the server. The enum, the direction check, the
 * names, the dense index below and the gateway's per-type metrics are all
 * generated from it; a new type also needs its payload in proto_frame and in
 * parse_payload/enc_payload (client.c), and PROTOCOL.md. */
#define PROTO_FRAMES(X)                                   \
	X(LOGIN, 0x01, login, CLIENT)                     \
	X(SEND, 0x02, send, CLIENT)                       \
	X(RECEIPT, 0x03, receipt, ANY)                    \
	X(PING, 0x04, ping, ANY)                          \
	X(PONG, 0x05, pong, ANY)                          \
	X(GROUP, 0x06, group, CLIENT)                     \
	X(LOGIN_RESULT, 0x81, login_result, SERVER)       \
	X(ACK, 0x82, ack, SERVER)                         \
	X(DELIVER, 0x83, deliver, SERVER)                 \
	X(ERROR, 0x84, error, SERVER)                     \
	X(GOAWAY, 0x85, goaway, SERVER)                   \
	X(KICKED, 0x86, kicked, SERVER)                   \
	X(GROUP_RESULT, 0x87, group_result, SERVER)

/* Frame types, the wire codes. */
enum proto_type {
#define PROTO_X_(N, code, name, dir) PROTO_##N = code,
	PROTO_FRAMES(PROTO_X_)
#undef PROTO_X_
};

/* Frame types numbered densely 0 .. PROTO_FRAME_TYPES-1 in list order, for
 * per-type arrays (counters): PROTO_FI_SEND etc. */
enum proto_frame_idx {
#define PROTO_X_(N, code, name, dir) PROTO_FI_##N,
	PROTO_FRAMES(PROTO_X_)
#undef PROTO_X_
	PROTO_FRAME_TYPES
};

/* The dense index of a wire type, or -1 for a code that is no frame type. */
static inline int proto_frame_index(unsigned type)
{
	switch (type) {
#define PROTO_X_(N, code, name, dir) \
	case code:                   \
		return PROTO_FI_##N;
		PROTO_FRAMES(PROTO_X_)
#undef PROTO_X_
	default:
		return -1;
	}
}

/* Error codes: on the wire in ERROR frames and LOGIN_RESULT/GROUP_RESULT
 * status; proto_parse() returns the negated code of the first four.
 * Codes below 32 are fatal (the server closes after sending them); codes of
 * 32 and above refer to one request (ERROR.ref) and the connection stays. */
/* The error list, the one place an error code is declared: X(NAME, code,
 * name, CLASS), CLASS FATAL (below 32) or REQUEST. Names are what logs and
 * metric labels say; PROTOCOL.md's table says what each means on the wire. */
#define PROTO_ERRORS(X)                                                                     \
	X(BAD_FRAME, 1, bad_frame, FATAL)         /* length prefix not minimal, or zero */   \
	X(TOO_BIG, 2, too_big, FATAL)             /* length prefix over PROTO_MAX_FRAME */   \
	X(BAD_TYPE, 3, bad_type, FATAL)           /* unknown type, or not in this direction */ \
	X(BAD_FIELD, 4, bad_field, FATAL)         /* field overruns, bad varint or value, trailing bytes */ \
	X(NOT_LOGGED_IN, 5, not_logged_in, FATAL)                                            \
	X(ALREADY_LOGGED_IN, 6, already_logged_in, FATAL)                                    \
	X(LOGIN_TIMEOUT, 7, login_timeout, FATAL)                                            \
	X(AUTH_FAILED, 8, auth_failed, FATAL)                                                \
	X(TOKEN_EXPIRED, 9, token_expired, FATAL)                                            \
	X(VERSION, 10, version, FATAL)                                                       \
	X(SERVER_FULL, 11, server_full, FATAL)                                               \
	X(RATE_LIMITED, 12, rate_limited, FATAL)                                             \
	X(SLOW_CONSUMER, 13, slow_consumer, FATAL)                                           \
	X(IDLE_TIMEOUT, 14, idle_timeout, FATAL)                                             \
	X(SHUTTING_DOWN, 15, shutting_down, FATAL)                                           \
	X(INTERNAL, 16, internal, FATAL)                                                     \
	X(WRITE_STALL, 17, write_stall, FATAL)                                               \
	X(SOURCE_LIMIT, 18, source_limit, FATAL)  /* too many connections, or new ones a second, from the client's address */ \
	X(NO_ROUTE, 32, no_route, REQUEST)        /* recipient not here and no backend configured */ \
	X(TRY_AGAIN, 33, try_again, REQUEST)      /* backend unreachable or its queue full */ \
	X(MAILBOX_FULL, 34, mailbox_full, REQUEST)                                           \
	X(BAD_RECIPIENT, 35, bad_recipient, REQUEST)                                         \
	X(NOT_MEMBER, 36, not_member, REQUEST)                                               \
	X(NO_SUCH_GROUP, 37, no_such_group, REQUEST)                                         \
	X(GROUP_FULL, 38, group_full, REQUEST)                                               \
	X(NOT_ALLOWED, 39, not_allowed, REQUEST)                                             \
	X(SLOW_DOWN, 40, slow_down, REQUEST)      /* over a per-sender budget; send again later */ \
	X(STORE_FULL, 41, store_full, REQUEST)    /* the recipient's backend is out of storage space */

enum proto_err {
	PROTO_OK = 0,
#define PROTO_X_(N, code, name, cls) PROTO_E_##N = code,
	PROTO_ERRORS(PROTO_X_)
#undef PROTO_X_
	PROTO_E_FATAL_LIMIT = 32, /* first non-fatal code */
	PROTO_E_CODES = 64,       /* every code is below this (per-code arrays) */
};

/* The version a server answers a LOGIN of version v with (v >=
 * PROTO_VERSION_MIN is the caller's check): the lower of v and the newest
 * it speaks. */
static inline uint8_t proto_version_agree(uint8_t v)
{
	return v > PROTO_VERSION_MAX ? PROTO_VERSION_MAX : v;
}

/* Name of an error code ("bad_field"), for logs and metrics labels; "unknown"
 * for codes outside the enum. Never NULL. */
const char *proto_err_name(unsigned code);

/* Name of a frame type ("send"), or "unknown". Never NULL. */
const char *proto_type_name(unsigned type);

/* Receipt kinds. ACK (client to server only, protocol 2): "I have the
 * receipt from `peer` about my message `smid`", so the server stops keeping it. */
enum proto_receipt_kind { PROTO_RCPT_DELIVERED = 1, PROTO_RCPT_READ = 2, PROTO_RCPT_ACK = 3 };

/* ACK status. */
enum proto_ack_status {
	PROTO_ACK_ACCEPTED = 0, /* handed to the recipient's connection on this gateway (not durable) */
	PROTO_ACK_STORED = 1,   /* durable in the recipient's backend */
};

/* GROUP operations. */
enum proto_group_op { PROTO_GROUP_CREATE = 1, PROTO_GROUP_ADD = 2, PROTO_GROUP_REMOVE = 3, PROTO_GROUP_LEAVE = 4 };

/* DELIVER flags. */
#define PROTO_DELIVER_GROUP 0x01u /* group field present: a group message */
#define PROTO_DELIVER_CMID 0x02u  /* cmid field present (protocol 2): the sender's id for it */

/* KICKED reasons. */
enum proto_kick_reason { PROTO_KICK_ELSEWHERE = 1, PROTO_KICK_ADMIN = 2 };

/* A view into the parsed buffer. */
struct proto_bytes {
	const uint8_t *p;
	uint32_t len;
};

/* One parsed frame. Which union member is valid follows `type`; PING and PONG
 * both use `ping`. Byte fields point into the parsed buffer. */
struct proto_frame {
	uint8_t type;
	uint32_t size; /* bytes the whole frame takes, prefix included */
	uint32_t need; /* after PROTO_NEED_MORE: bytes needed in all (>= len + 1) */
	union {
		struct {
			uint8_t version, flags;
			uint64_t user;
			struct proto_bytes token;
			uint64_t resume; /* last server message id the client saw; 0 none */
		} login;
		struct {
			uint64_t cmid;  /* client message id, echoed in ACK/ERROR */
			uint64_t to;    /* user id, or group id when group = 1 */
			uint8_t group;
			struct proto_bytes body;
		} send;
		struct {
			uint8_t kind;  /* enum proto_receipt_kind */
			uint64_t peer; /* client->server: the original sender; server->client: who received/read */
			uint64_t smid;
		} receipt;
		struct {
			struct proto_bytes data;
		} ping; /* PING and PONG */
		struct {
			uint8_t op; /* enum proto_group_op */
			uint64_t req;
			uint64_t group;
			uint32_t count;              /* members listed */
			struct proto_bytes members;  /* count varints; walk with proto_members_next() */
		} group;
		struct {
			uint8_t status; /* PROTO_OK or an error code */
			uint8_t version;
			uint64_t time_ms;
			uint32_t keepalive_s;
			uint32_t max_body;
		} login_result;
		struct {
			uint64_t cmid;
			uint8_t status; /* enum proto_ack_status */
			uint64_t smid;
		} ack;
		struct {
			uint8_t flags; /* PROTO_DELIVER_GROUP, PROTO_DELIVER_CMID */
			uint64_t smid, from, group, cmid, time_ms;
			struct proto_bytes body;
		} deliver;
		struct {
			uint8_t code; /* enum proto_err */
			uint64_t ref; /* cmid or group request id this is about; 0 none */
			struct proto_bytes text;
		} error;
		struct {
			uint32_t reconnect_ms;
			struct proto_bytes hint; /* "host:port" to reconnect to, or empty */
		} goaway;
		struct {
			uint8_t reason; /* enum proto_kick_reason */
		} kicked;
		struct {
			uint64_t req;
			uint8_t status;
			uint64_t group;
		} group_result;
	};
};

/* proto_parse() result when the buffer holds no whole frame yet. */
#define PROTO_NEED_MORE 0

/* Parse one frame at buf[0..len).
 * Returns the bytes consumed (> 0) with *f filled; PROTO_NEED_MORE with
 * f->need = total bytes needed (the prefix's full length once known, else
 * len + 1); or -code (enum proto_err: BAD_FRAME, TOO_BIG, BAD_TYPE, BAD_FIELD).
 * TOO_BIG is reported as soon as the length prefix is complete. */
long proto_parse(const uint8_t *buf, size_t len, enum proto_dir dir, struct proto_frame *f);

/* Encode *f (type and the matching union member; size and need are ignored)
 * into buf. Returns the bytes the frame takes; writes them only when cap is
 * at least that. Returns 0 when *f is not a valid frame (what proto_parse()
 * would reject: bad type, zero ids, over-long fields, bad enums). */
size_t proto_encode(const struct proto_frame *f, uint8_t *buf, size_t cap);

/* Walk the member list of a parsed GROUP frame: *pos starts at
 * f->group.members.p; each call stores one user id and returns 1, or returns 0
 * at the end. The list was validated by proto_parse(). */
int proto_members_next(const struct proto_bytes *members, const uint8_t **pos, uint64_t *user);

/* Hot-path encoders, same contract as proto_encode() but without building a
 * struct: they return the size and write only when it fits. proto_enc_deliver
 * writes DELIVER without a cmid (flags bit 1 clear), as protocol 1 has it. */
size_t proto_enc_deliver(uint8_t *buf, size_t cap, uint64_t smid, uint64_t from, uint64_t group,
			 uint64_t time_ms, const uint8_t *body, uint32_t body_len);
size_t proto_enc_ack(uint8_t *buf, size_t cap, uint64_t cmid, uint8_t status, uint64_t smid);
size_t proto_enc_error(uint8_t *buf, size_t cap, uint8_t code, uint64_t ref, const char *text);

/* A C string as an ERROR text or GOAWAY hint: cut to PROTO_MAX_TEXT bytes
 * without splitting a UTF-8 sequence (NULL: empty). The view points into
 * text. */
struct proto_bytes proto_text(const char *text);
size_t proto_enc_send(uint8_t *buf, size_t cap, uint64_t cmid, uint64_t to, int group, const uint8_t *body,
		      uint32_t body_len);

#endif
