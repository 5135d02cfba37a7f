/* worker.c: one load generator thread: connects, logs in, holds, sends on an
 * open-loop schedule, checks every delivery. See lg.h for the shape.
 *
 * Sockets are created as ordinary fds only long enough to set options and
 * bind a source address (IP_BIND_ADDRESS_NO_PORT, so ports are picked per
 * destination at connect time), then registered in the ring's fixed-file
 * table at the connection's slot and closed: the process fd table stays tiny.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen/lg.h"
#include "proto/wire.h"
#include "runtime/clock.h"
#include "runtime/log.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static inline int gen_ok(const struct lconn *c, uint64_t ud)
{
	return c->gen == ud_gen(ud);
}

static inline uint64_t user_of(const struct lthread *t, uint32_t slot)
{
	return (uint64_t)t->lg->cfg.user_base + t->first + slot;
}

static inline int is_creator(const struct lthread *t, uint32_t slot)
{
	return ((uint64_t)t->first + slot) % (uint64_t)t->lg->cfg.group_size == 0;
}

static inline uint64_t peer_of(const struct lthread *t, uint32_t slot)
{
	uint64_t idx = (uint64_t)t->first + slot, p = idx ^ 1;
	if (p >= (uint64_t)t->lg->cfg.connections)
		p = idx; /* odd count: the last user talks to itself */
	return (uint64_t)t->lg->cfg.user_base + p;
}

static uint64_t rnd(struct lthread *t)
{
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return t->rng;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4); /* x86-64 and arm64 are little-endian; the body is ours alone */
}

/* ---- output ------------------------------------------------------------------ */

static void flush_later(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	if (c->flags & LF_QUEUED)
		return;
	if (slotlist_push(&t->flush, slot) != 0)
		return;
	c->flags |= LF_QUEUED;
}

/* Queue a frame; returns 0, or -1 when the connection's queue is over --max-queue. */
static int out_frame(struct lthread *t, uint32_t slot, const struct proto_frame *f)
{
	struct lconn *c = &t->c[slot];
	struct obuf *o = c->out;
	size_t room = o ? o->cap - o->len : 0;
	size_t n = proto_encode(f, o ? o->data + o->len : NULL, room);
	if (n == 0)
		return -1;
	if (n > room) {
		if (obuf_queued(o, c->sending) + n > (uint64_t)t->lg->cfg.max_queue || !(o = obuf_reserve(&c->out, n)))
			return -1;
		proto_encode(f, o->data + o->len, o->cap - o->len);
	}
	o->len += (uint32_t)n;
	flush_later(t, slot);
	return 0;
}

static void submit_send(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	io_uring_prep_send(sqe, (int)slot, c->sending->data + c->sending->off, c->sending->len - c->sending->off,
			   MSG_NOSIGNAL | MSG_WAITALL);
	sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = ud_make(LU_SEND, c->gen, slot);
	c->flags |= LF_SEND;
}

static void reap(struct lthread *t, uint32_t slot);

static inline int lc_reads(const struct lconn *c)
{
	return c->state == LS_TLS || c->state == LS_LOGIN || c->state == LS_LIVE;
}

static void lc_close(struct lthread *t, uint32_t slot, int reconnect);

static void flush_conn(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	c->flags &= (uint8_t)~LF_QUEUED;
	if (!lc_reads(c) || (c->flags & LF_SEND))
		return;
	if (t->tls && obuf_seal(&c->out, t->tls_th, &t->tls[slot]) == LONG_MIN) {
		log_rl(LOG_ERROR, "sealing TLS records failed");
		lc_close(t, slot, 1);
		return;
	}
	if (!c->out || !c->out->len)
		return;
	c->sending = c->out;
	c->out = NULL;
	c->sending->off = 0;
	submit_send(t, slot);
}

/* ---- connection life ---------------------------------------------------------- */

static void enqueue_connect(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	if (c->flags & LF_INQ)
		return;
	t->queue[(t->qhead + t->qlen) % t->n] = slot;
	t->qlen++;
	c->flags |= LF_INQ;
}

static void free_bufs(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	free(c->out);
	free(c->sending);
	c->out = c->sending = NULL;
	carry_free(&c->in);
	if (t->tls)
		tls_conn_free(&t->tls[slot]);
}

static void reap(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	if (c->state != LS_CLOSING || (c->flags & (LF_RECV | LF_SEND | LF_CLOSE)))
		return;
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	io_uring_prep_close_direct(sqe, slot);
	sqe->user_data = ud_make(LU_CLOSE, c->gen, slot);
	c->flags |= LF_CLOSE;
}

static void lc_close(struct lthread *t, uint32_t slot, int reconnect)
{
	struct lconn *c = &t->c[slot];
	if (c->state == LS_IDLE || c->state == LS_CLOSING)
		return;
	if (c->state == LS_LIVE) {
		CNT_SET(t, logged_in, t->cnt.logged_in - 1);
		c->flags |= LF_WAS_LIVE;
	}
	if (c->state == LS_CONNECTING || c->state == LS_TLS)
		t->inflight--; /* a handshake counts as part of its connect (--inflight) */
	c->state = LS_CLOSING;
	if (reconnect)
		c->flags |= LF_RECONNECT;
	wheel_del(&t->wheel, slot);
	struct io_uring_sqe *sqe;
	if (c->flags & LF_RECV) {
		sqe = ring_sqe(&t->ring);
		io_uring_prep_cancel64(sqe, ud_make(LU_RECV, c->gen, slot), 0);
		sqe->user_data = ud_make(LU_CANCEL, 0, 0);
	}
	if (c->flags & LF_SEND) {
		sqe = ring_sqe(&t->ring);
		io_uring_prep_cancel64(sqe, ud_make(LU_SEND, c->gen, slot), 0);
		sqe->user_data = ud_make(LU_CANCEL, 0, 0);
	}
	reap(t, slot);
}

static int start_connect(struct lthread *t, uint32_t slot)
{
	struct lg *lg = t->lg;
	struct lconn *c = &t->c[slot];
	uint32_t idx = t->first + slot;
	const struct addr *dst = &lg->targets[idx % lg->ntargets];
	int fd = socket(dst->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_rl(LOG_WARN, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (lg->cfg.rcvbuf > 0) {
		int v = (int)lg->cfg.rcvbuf;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	}
	if (lg->src_count && dst->ss.ss_family == AF_INET) {
		/* spread over source addresses; the port is chosen at connect time per
		 * destination, so each (source, destination) pair has its own port range */
		/* Connection idx gets source address s and port p of its own:
		 * (target, source, port) is unique, so connect() need not search the
		 * ephemeral range (that search dominated the ramp past 100k sockets).
		 * The same (source, port) serves every target (SO_REUSEADDR, no
		 * listen). If that port is taken, fall back to a kernel-chosen one. */
		uint32_t nt = (uint32_t)lg->ntargets, k = idx / nt;
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(lg->src_first + k % lg->src_count);
		src.sin_port = htons((uint16_t)(LG_PORT_FIRST + (k / lg->src_count) % LG_PORTS));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
			src.sin_port = 0;
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
			if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
				log_rl(LOG_WARN, "bind to source address: %s", strerror(errno));
				close(fd);
				return -1;
			}
		}
	}
	int ret = io_uring_register_files_update(&t->ring, slot, &fd, 1);
	close(fd);
	if (ret < 0) {
		log_rl(LOG_WARN, "registering a socket: %s", strerror(-ret));
		return -1;
	}
	uint32_t gen = c->gen;
	uint32_t connects = c->connects;
	uint32_t seq = c->seq_out, expect = c->expect;
	uint64_t window = c->window;
	memset(c, 0, sizeof *c);
	c->gen = gen;
	c->connects = connects + 1;
	c->seq_out = seq; /* sequence numbers continue across reconnects */
	c->expect = expect;
	c->window = window;
	c->state = LS_CONNECTING;
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	io_uring_prep_connect(sqe, (int)slot, (const struct sockaddr *)&dst->ss, dst->len);
	sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = ud_make(LU_CONNECT, c->gen, slot);
	t->inflight++;
	CNT_ADD(t, connects, 1);
	if (connects)
		CNT_ADD(t, reconnects, 1);
	return 0;
}

static void send_login(struct lthread *t, uint32_t slot);
static int tls_step(struct lthread *t, uint32_t slot, uint8_t *in, size_t n);
static int tls_records(struct lthread *t, uint32_t slot, uint8_t *buf, size_t n);

static void arm_recv(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	io_uring_prep_recv_multishot(sqe, (int)slot, NULL, 0, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	sqe->buf_group = t->br.bgid;
	sqe->user_data = ud_make(LU_RECV, c->gen, slot);
	c->flags |= LF_RECV;
}

static void on_connect(struct lthread *t, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct lconn *c = &t->c[slot];
	if (!gen_ok(c, cqe->user_data) || c->state != LS_CONNECTING)
		return;
	if (cqe->res < 0) {
		t->inflight--;
		int e = -cqe->res, k = e == ECONNREFUSED ? 0 : e == ETIMEDOUT ? 1 : e == EADDRNOTAVAIL ? 2 : 3;
		CNT_ADD(t, connect_errors[k], 1);
		log_rl(LOG_WARN, "connect: %s", strerror(e));
		c->state = LS_CLOSING;
		c->flags |= LF_RECONNECT;
		reap(t, slot);
		return;
	}
	CNT_ADD(t, connected, 1);
	CNT_SET(t, open, t->cnt.open + 1);
	if (t->tls) {
		/* the ClientHello first; LOGIN once the handshake is done */
		c->state = LS_TLS;
		struct tls_conn *tc = &t->tls[slot];
		memset(tc, 0, sizeof *tc);
		if (tls_conn_start(t->tls_th, tc, t->lg->tls) != 0) {
			CNT_ADD(t, tls_failed, 1);
			lc_close(t, slot, 1); /* counts the connect as ended (--inflight) */
			return;
		}
		if (tls_step(t, slot, NULL, 0) != 0)
			return;
		arm_recv(t, slot);
		return;
	}
	t->inflight--;
	send_login(t, slot);
	arm_recv(t, slot);
}

/* LOGIN, as the first frame (after the TLS handshake with --tls). */
static void send_login(struct lthread *t, uint32_t slot)
{
	struct lconn *c = &t->c[slot];
	c->state = LS_LOGIN;
	struct lg *lg = t->lg;
	uint8_t tok[TOKEN_LEN];
	token_mint(&lg->secret, user_of(t, slot), (uint64_t)(clock_wall_ms() / 1000) + (uint64_t)(lg->cfg.ttl_ms / 1000),
		   tok);
	struct proto_frame f = {.type = PROTO_LOGIN};
	f.login.version = PROTO_VERSION_MAX;
	f.login.user = user_of(t, slot);
	f.login.token = (struct proto_bytes){tok, TOKEN_LEN};
	out_frame(t, slot, &f);
}

/* Feed the handshake (n = 0: start it). Returns 0 while it goes on or
 * once it is done (LOGIN queued, the bytes after it opened), -1 when the
 * connection was closed. */
static int tls_step(struct lthread *t, uint32_t slot, uint8_t *in, size_t n)
{
	struct tls_conn *tc = &t->tls[slot];
	size_t used = 0, outn = 0;
	const uint8_t *out = NULL;
	unsigned why = TLS_HSF_internal;
	uint64_t t0 = clock_mono_ns();
	int h = tls_handshake(t->tls_th, tc, in, n, &used, &out, &outn, &why);
	CNT_ADD(t, tls_ns, clock_mono_ns() - t0);
	if (outn) {
		if (obuf_put_wire(&t->c[slot].out, t->tls_th, tc, out, outn) < 0) {
			lc_close(t, slot, 1);
			return -1;
		}
		flush_later(t, slot);
	}
	if (h == TLS_HS_MORE)
		return 0;
	if (h == TLS_HS_FAIL) {
		CNT_ADD(t, tls_failed, 1);
		log_rl(LOG_WARN, "TLS handshake failed: %s", tls_hs_fail_name(why));
		lc_close(t, slot, 1);
		return -1;
	}
	CNT_ADD(t, tls_handshakes, 1);
	if (tc->flags & TLS_F_RESUMED)
		CNT_ADD(t, tls_resumed, 1);
	t->inflight--;
	send_login(t, slot);
	if (n > used)
		return tls_records(t, slot, in + used, n - used);
	return 0;
}

/* ---- receiving ----------------------------------------------------------------- */

/* Order and duplicate check of one delivery from this connection's sender. */
static void on_seq(struct lthread *t, struct lconn *c, uint32_t seq)
{
	if (seq == c->expect) {
		c->window = (c->window << 1) | 1;
		c->expect++;
	} else if ((int32_t)(seq - c->expect) > 0) {
		uint32_t shift = seq - c->expect + 1;
		c->window = shift >= 64 ? 1 : (c->window << shift) | 1;
		c->expect = seq + 1;
	} else {
		uint32_t back = c->expect - 1 - seq;
		if (back >= 64 || ((c->window >> back) & 1)) {
			CNT_ADD(t, dup, 1);
			return;
		}
		c->window |= 1ull << back;
		CNT_ADD(t, reordered, 1);
	}
	CNT_ADD(t, delivered, 1);
}

static void on_deliver(struct lthread *t, uint32_t slot, const struct proto_frame *f)
{
	struct lconn *c = &t->c[slot];
	const struct lg_config *cfg = &t->lg->cfg;
	uint64_t n = ++t->deliver_frames; /* DELIVER frames seen (injected copies not counted) */
	if (cfg->inject_drop && n % (uint64_t)cfg->inject_drop == 0) {
		CNT_ADD(t, injected_drop, 1); /* test hook: behave as if this delivery never came */
		return;
	}
	if (f->deliver.body.len >= LG_BODY_MIN) {
		uint32_t seq;
		uint64_t sched;
		memcpy(&seq, f->deliver.body.p, 4);
		memcpy(&sched, f->deliver.body.p + 4, 8);
		uint64_t now = clock_mono_ns();
		if (sched && sched <= now)
			hist_add(&t->lat_interval, now - sched);
		on_seq(t, c, seq);
		if (cfg->inject_dup && n % (uint64_t)cfg->inject_dup == 0) {
			CNT_ADD(t, injected_dup, 1);
			on_seq(t, c, seq); /* test hook: the same delivery twice */
		}
	} else {
		CNT_ADD(t, delivered, 1);
	}
	if (cfg->receipts) {
		struct proto_frame r = {.type = PROTO_RECEIPT};
		r.receipt.kind = PROTO_RCPT_DELIVERED;
		r.receipt.peer = f->deliver.from;
		r.receipt.smid = f->deliver.smid;
		out_frame(t, slot, &r);
	}
}

/* The first user of a block creates a group of the block's users. */
static void create_group(struct lthread *t, uint32_t slot)
{
	uint64_t g = (uint64_t)t->lg->cfg.group_size, first = (uint64_t)t->first + slot;
	uint8_t list[PROTO_MAX_GROUP_OP * 10], *p = list;
	uint32_t n = 0;
	for (uint64_t i = first + 1; i < first + g && i < (uint64_t)t->lg->cfg.connections && n < PROTO_MAX_GROUP_OP;
	     i++, n++)
		p = wire_uv_put(p, (uint64_t)t->lg->cfg.user_base + i);
	struct proto_frame f = {.type = PROTO_GROUP};
	f.group.op = PROTO_GROUP_CREATE;
	f.group.req = slot + 1;
	f.group.count = n;
	f.group.members = (struct proto_bytes){list, (uint32_t)(p - list)};
	if (out_frame(t, slot, &f) != 0)
		CNT_ADD(t, group_errors, 1);
}

static void schedule_ping(struct lthread *t, uint32_t slot)
{
	int64_t ms = t->lg->cfg.ping_ms;
	if (ms > 0) /* spread the first pings so a ramp does not become a ping storm */
		wheel_add(&t->wheel, slot, t->tick + 1 + (uint32_t)(rnd(t) % (uint64_t)(ms / LG_TICK_MS + 1)));
}

static void on_frame(struct lthread *t, uint32_t slot, const struct proto_frame *f)
{
	struct lconn *c = &t->c[slot];
	switch (f->type) {
	case PROTO_DELIVER:
		on_deliver(t, slot, f);
		break;
	case PROTO_ACK:
		CNT_ADD(t, acked, 1);
		break;
	case PROTO_LOGIN_RESULT:
		if (f->login_result.status == PROTO_OK && c->state == LS_LOGIN) {
			c->state = LS_LIVE;
			CNT_ADD(t, logins_ok, 1);
			CNT_SET(t, logged_in, t->cnt.logged_in + 1);
			schedule_ping(t, slot);
			if (t->gid && is_creator(t, slot) && !t->gid[slot])
				create_group(t, slot);
		} else {
			CNT_ADD(t, logins_failed, 1);
			log_rl(LOG_WARN, "login of user %llu refused: %s", (unsigned long long)user_of(t, slot),
			       proto_err_name(f->login_result.status));
		}
		break;
	case PROTO_ERROR:
		CNT_ADD(t, errors[f->error.code < PROTO_E_CODES ? f->error.code : 0] /* 0: unknown codes */, 1);
		if (f->error.code < PROTO_E_FATAL_LIMIT)
			log_rl(LOG_WARN, "server error on user %llu: %s %.*s", (unsigned long long)user_of(t, slot),
			       proto_err_name(f->error.code), (int)f->error.text.len, (const char *)f->error.text.p);
		break;
	case PROTO_PING: {
		struct proto_frame p = {.type = PROTO_PONG};
		p.ping.data = f->ping.data;
		out_frame(t, slot, &p);
		break;
	}
	case PROTO_PONG:
		CNT_ADD(t, pongs, 1);
		break;
	case PROTO_RECEIPT: {
		CNT_ADD(t, receipts_in, 1);
		/* protocol 2: acknowledge it, or the server keeps and resends it */
		struct proto_frame a = {.type = PROTO_RECEIPT};
		a.receipt.kind = PROTO_RCPT_ACK;
		a.receipt.peer = f->receipt.peer;
		a.receipt.smid = f->receipt.smid;
		out_frame(t, slot, &a);
		break;
	}
	case PROTO_GROUP_RESULT:
		if (f->group_result.status == PROTO_OK && t->gid) {
			t->gid[slot] = f->group_result.group;
			CNT_ADD(t, groups_created, 1);
		} else {
			CNT_ADD(t, group_errors, 1);
			log_rl(LOG_WARN, "group request refused: %s", proto_err_name(f->group_result.status));
		}
		break;
	case PROTO_GOAWAY:
		CNT_ADD(t, goaway, 1);
		lc_close(t, slot, 1);
		break;
	case PROTO_KICKED:
		CNT_ADD(t, kicked, 1);
		break;
	default:
		break;
	}
}

static void input(struct lthread *t, uint32_t slot, const uint8_t *p, size_t n)
{
	struct lconn *c = &t->c[slot];
	struct proto_frame f;
	long r;
	while (c->in && n && c->state != LS_CLOSING) {
		r = carry_feed(&c->in, &p, &n, PROTO_FROM_SERVER, &f);
		if (r == 0)
			return;
		if (r < 0)
			goto bad;
		on_frame(t, slot, &f);
		carry_free(&c->in);
	}
	while (n && c->state != LS_CLOSING) {
		r = proto_parse(p, n, PROTO_FROM_SERVER, &f);
		if (r > 0) {
			on_frame(t, slot, &f);
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r < 0 || (r = carry_start(&c->in, p, n, f.need)) != 0)
			goto bad;
		return;
	}
	return;
bad:
	if (r != CARRY_NOMEM)
		log_rl(LOG_ERROR, "malformed frame from the server: %s", proto_err_name((unsigned)-r));
	lc_close(t, slot, 1);
}

/* Records received on a TLS connection: their plaintext is input. 0, or
 * -1 when the connection was closed (the server's close_notify or alert,
 * or a bad record). */
static int tls_records(struct lthread *t, uint32_t slot, uint8_t *buf, size_t n)
{
	struct tls_conn *tc = &t->tls[slot];
	const uint8_t *plain;
	size_t pn;
	int r = tls_open(t->tls_th, tc, buf, n, &plain, &pn);
	if (tls_wants_write(tc))
		flush_later(t, slot); /* our KeyUpdate, asked for by the server */
	if (pn)
		input(t, slot, plain, pn);
	if (r == 0 || t->c[slot].state == LS_CLOSING)
		return t->c[slot].state == LS_CLOSING ? -1 : 0;
	if (r < 0)
		log_rl(LOG_ERROR, "bad TLS record from the server (alert %d)", -r);
	CNT_ADD(t, closed_by_server, 1);
	lc_close(t, slot, t->lg->phase < PH_DRAIN || t->lg->cfg.scenario == SC_IDLE);
	return -1;
}

static void on_recv(struct lthread *t, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct lconn *c = &t->c[slot];
	int has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	if (!gen_ok(c, cqe->user_data)) {
		if (has_buf)
			bufring_put(&t->br, bid);
		return;
	}
	int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	if (!more)
		c->flags &= (uint8_t)~LF_RECV;
	if (cqe->res > 0 && has_buf) {
		CNT_ADD(t, bytes_in, (uint64_t)cqe->res);
		uint8_t *b = bufring_buf(&t->br, bid);
		if (c->state == LS_TLS)
			tls_step(t, slot, b, (size_t)cqe->res);
		else if ((c->state == LS_LOGIN || c->state == LS_LIVE) && t->tls)
			tls_records(t, slot, b, (size_t)cqe->res);
		else if (c->state == LS_LOGIN || c->state == LS_LIVE)
			input(t, slot, b, (size_t)cqe->res);
		bufring_put(&t->br, bid);
		if (!more && lc_reads(c))
			arm_recv(t, slot);
	} else if (cqe->res == -ENOBUFS) {
		/* the pool is empty: re-arm after this iteration's buffers are back,
		 * not now (the kernel would answer ENOBUFS again at once: a spin) */
		if (lc_reads(c) && !(c->flags & LF_REARM)) {
			if (slotlist_push(&t->rearm, slot) != 0) {
				lc_close(t, slot, 1);
				return;
			}
			c->flags |= LF_REARM;
		}
	} else if (cqe->res != -ECANCELED) {
		if (lc_reads(c)) {
			CNT_ADD(t, closed_by_server, 1);
			lc_close(t, slot, t->lg->phase < PH_DRAIN || t->lg->cfg.scenario == SC_IDLE);
		}
	}
	if (c->state == LS_CLOSING)
		reap(t, slot);
}

static void on_send(struct lthread *t, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct lconn *c = &t->c[slot];
	if (!gen_ok(c, cqe->user_data))
		return;
	c->flags &= (uint8_t)~LF_SEND;
	struct obuf *s = c->sending;
	if (cqe->res <= 0) {
		free(s);
		c->sending = NULL;
		if (lc_reads(c))
			lc_close(t, slot, 1);
		reap(t, slot);
		return;
	}
	CNT_ADD(t, bytes_out, (uint64_t)cqe->res);
	s->off += (uint32_t)cqe->res;
	if (s->off < s->len) {
		submit_send(t, slot);
		return;
	}
	free(s);
	c->sending = NULL;
	flush_conn(t, slot);
	reap(t, slot);
}

static void on_close(struct lthread *t, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct lconn *c = &t->c[slot];
	if (!gen_ok(c, cqe->user_data))
		return;
	int reconnect = (c->flags & LF_RECONNECT) != 0, was_open = c->flags & LF_WAS_LIVE;
	(void)was_open;
	free_bufs(t, slot);
	uint32_t gen = connref_next_gen(c->gen), connects = c->connects, seq = c->seq_out, expect = c->expect;
	uint64_t window = c->window;
	memset(c, 0, sizeof *c);
	c->gen = gen;
	c->connects = connects;
	c->seq_out = seq;
	c->expect = expect;
	c->window = window;
	if (t->cnt.open)
		CNT_SET(t, open, t->cnt.open - 1);
	if (reconnect && t->lg->phase < PH_STOP) {
		/* back off a little, jittered, so failures do not spin */
		c->state = LS_IDLE;
		wheel_add(&t->wheel, slot, t->tick + 5 + (uint32_t)(rnd(t) % 50));
	}
}

/* ---- timers, sending, pacing --------------------------------------------------- */

static void on_timer(void *arg, uint32_t slot)
{
	struct lthread *t = arg;
	struct lconn *c = &t->c[slot];
	if (c->state == LS_IDLE) {
		enqueue_connect(t, slot); /* reconnect after backoff */
	} else if (c->state == LS_LIVE && t->lg->cfg.ping_ms > 0) {
		struct proto_frame f = {.type = PROTO_PING};
		if (out_frame(t, slot, &f) == 0)
			CNT_ADD(t, pings, 1);
		wheel_add(&t->wheel, slot, t->tick + (uint32_t)(t->lg->cfg.ping_ms / LG_TICK_MS));
	}
}

static void pace_connects(struct lthread *t)
{
	const struct lg_config *cfg = &t->lg->cfg;
	uint64_t per_ns = cfg->connect_rate > 0 ? 1000000000ull * t->lg->nthreads / (uint64_t)cfg->connect_rate : 0;
	/* credit saved up while idle (or at the start) is at most 10 ms worth, or
	 * one connect: it was 100 connects per thread, so a ramp of a few hundred
	 * connections ran at 1.6-2.9x --connect-rate */
	uint64_t burst_ns = per_ns > 10000000ull ? per_ns : 10000000ull;
	while (t->qlen && t->inflight < (uint32_t)cfg->inflight) {
		if (per_ns) {
			if (t->connect_credit_ns > t->now_ns)
				break;
			if (t->now_ns - t->connect_credit_ns > burst_ns)
				t->connect_credit_ns = t->now_ns - burst_ns;
			t->connect_credit_ns += per_ns;
		}
		uint32_t slot = t->queue[t->qhead];
		t->qhead = (t->qhead + 1) % t->n;
		t->qlen--;
		t->c[slot].flags &= (uint8_t)~LF_INQ;
		if (t->c[slot].state != LS_IDLE)
			continue;
		if (start_connect(t, slot) != 0) {
			t->c[slot].state = LS_IDLE;
			wheel_add(&t->wheel, slot, t->tick + 50); /* retry in 0.5 s */
		}
	}
}

/* Open loop: the thread's users together send rate * n messages per second,
 * in round-robin order, each stamped with its scheduled time. */
static void pace_sends(struct lthread *t)
{
	const struct lg_config *cfg = &t->lg->cfg;
	if (cfg->rate <= 0 || !t->n)
		return;
	double per_s = cfg->rate * (double)t->n / (t->gid ? (double)cfg->group_size : 1.0); /* group: per group */
	/* message k is due at t0 + k/per_s: at time t, messages 0..floor(t*per_s) are */
	uint64_t due = (uint64_t)((double)(t->now_ns - t->t0_send) * per_s / 1e9) + 1;
	uint32_t body_len = (uint32_t)cfg->size;
	uint8_t body[PROTO_MAX_BODY];
	memset(body + LG_BODY_MIN, 'x', body_len - LG_BODY_MIN);
	unsigned budget = 65536;
	while (t->sched_done < due && budget--) {
		uint64_t sched = t->t0_send + (uint64_t)((double)t->sched_done * 1e9 / per_s);
		uint32_t slot = (uint32_t)(t->sender_rr++ % t->n);
		/* group: the turn goes to the next creator (members only receive;
		 * a turn they took was a message never sent, so a group run sent
		 * a group_size-th of what it offered) */
		for (unsigned k = 0; t->gid && k < (unsigned)cfg->group_size && !is_creator(t, slot); k++)
			slot = (uint32_t)(t->sender_rr++ % t->n);
		t->sched_done++;
		struct lconn *c = &t->c[slot];
		uint64_t gid = 0;
		if (t->gid) {
			if (!is_creator(t, slot)) {
				CNT_ADD(t, skipped, 1); /* a thread with no creator */
				continue;
			}
			gid = t->gid[slot];
		}
		if (c->state != LS_LIVE || (t->gid && !gid)) {
			CNT_ADD(t, skipped, 1);
			continue;
		}
		put_le32(body, c->seq_out);
		memcpy(body + 4, &sched, 8);
		struct proto_frame f = {.type = PROTO_SEND};
		f.send.cmid = t->lg->cmid_base + c->seq_out; /* unique across runs: a backend dedups (sender, cmid, recipient) */
		f.send.to = gid ? gid : peer_of(t, slot);
		f.send.group = gid != 0;
		f.send.body = (struct proto_bytes){body, body_len};
		if (out_frame(t, slot, &f) != 0) {
			CNT_ADD(t, blocked, 1);
			continue;
		}
		c->seq_out++;
		CNT_ADD(t, sent, 1);
	}
}

static void pace_churn(struct lthread *t, uint64_t *credit_ns)
{
	const struct lg_config *cfg = &t->lg->cfg;
	if (cfg->churn_rate <= 0)
		return;
	uint64_t per_ns = 1000000000ull * t->lg->nthreads / (uint64_t)cfg->churn_rate;
	if (*credit_ns == 0)
		*credit_ns = t->now_ns;
	for (unsigned tries = 0; *credit_ns <= t->now_ns && tries < 1024; tries++) {
		uint32_t slot = (uint32_t)(rnd(t) % t->n);
		if (t->c[slot].state != LS_LIVE)
			continue;
		*credit_ns += per_ns;
		lc_close(t, slot, 1);
	}
}

static void storm(struct lthread *t)
{
	for (uint32_t s = 0; s < t->n; s++)
		if (t->c[s].state == LS_LIVE || t->c[s].state == LS_LOGIN)
			lc_close(t, s, 1);
}

static void publish_interval(struct lthread *t)
{
	CNT_SET(t, p50_ns, hist_percentile(&t->lat_interval, 50));
	CNT_SET(t, p99_ns, hist_percentile(&t->lat_interval, 99));
	CNT_SET(t, lat_count, t->lat_interval.count);
	hist_merge(&t->lat, &t->lat_interval);
	memset(&t->lat_interval, 0, sizeof t->lat_interval);
}

/* ---- thread --------------------------------------------------------------------- */

static void dispatch(void *arg, const struct io_uring_cqe *cqe)
{
	struct lthread *t = arg;
	switch (ud_kind(cqe->user_data)) {
	case LU_RECV: on_recv(t, cqe); break;
	case LU_SEND: on_send(t, cqe); break;
	case LU_CONNECT: on_connect(t, cqe); break;
	case LU_CLOSE: on_close(t, cqe); break;
	default: break;
	}
}

static int setup(struct lthread *t, char *err, size_t errlen)
{
	struct lg *lg = t->lg;
	unsigned cq = pow2_clamp((unsigned long)t->n * 2, 4096, 65536);
	int ret = ring_init(&t->ring, 4096, cq, &t->ring_mode);
	if (ret) {
		snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-ret));
		return -1;
	}
	uint32_t slots = t->n ? t->n : 1;
	ret = io_uring_register_files_sparse(&t->ring, slots);
	if (ret) {
		snprintf(err, errlen, "registering %u direct descriptors: %s (RLIMIT_NOFILE caps each ring; use more --threads)",
			 slots, strerror(-ret));
		return -1;
	}
	unsigned entries = bufring_entries_for((uint64_t)lg->cfg.recv_pool, lg->nthreads, (unsigned)lg->cfg.recv_buf);
	ret = bufring_setup(&t->ring, &t->br, entries, (unsigned)lg->cfg.recv_buf, 1);
	if (ret) {
		snprintf(err, errlen, "provided buffer ring: %s", strerror(-ret));
		return -1;
	}
	t->c = slot_table_map(slots, sizeof *t->c);
	t->queue = calloc(slots, sizeof *t->queue);
	if (!t->c || !t->queue ||
	    wheel_init(&t->wheel, LG_WHEEL_BITS, t->c, sizeof *t->c, offsetof(struct lconn, tn), 1) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (lg->tls) {
		t->tls = slot_table_map(slots, sizeof *t->tls);
		if (!t->tls) {
			snprintf(err, errlen, "TLS state table: %s", strerror(errno));
			return -1;
		}
		if (!(t->tls_th = tls_thread_new(err, errlen)))
			return -1;
	}
	if (lg->cfg.scenario == SC_GROUP) {
		t->gid = calloc(slots, sizeof *t->gid);
		if (!t->gid) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	for (uint32_t s = 0; s < t->n; s++)
		enqueue_connect(t, s);
	t->rng = clock_mono_ns() ^ ((uint64_t)t->id << 40) ^ 0x9e3779b97f4a7c15ull;
	if (!t->rng)
		t->rng = 1;
	return 0;
}

static void teardown(struct lthread *t)
{
	if (t->c) {
		for (uint32_t s = 0; s < t->n; s++)
			free_bufs(t, s);
		slot_table_unmap(t->c, t->n ? t->n : 1, sizeof *t->c);
	}
	slot_table_unmap(t->tls, t->n ? t->n : 1, sizeof *t->tls);
	tls_thread_free(t->tls_th);
	bufring_free(&t->ring, &t->br);
	io_uring_queue_exit(&t->ring);
	free(t->queue);
	slotlist_free(&t->flush);
	slotlist_free(&t->rearm);
	free(t->gid);
	wheel_free(&t->wheel);
}

void *lg_worker_main(void *arg)
{
	struct lthread *t = arg;
	struct lg *lg = t->lg;
	char name[16], err[256];
	snprintf(name, sizeof name, "l%u", t->id);
	log_thread(name);
	t->start_ns = clock_mono_ns();
	t->now_ns = t->start_ns;
	int ok = setup(t, err, sizeof err) == 0;
	if (!ok) {
		log_error("thread %u: %s", t->id, err);
		__atomic_store_n(&lg->start_failed, 1, __ATOMIC_RELAXED);
	}
	pthread_barrier_wait(&lg->start);
	if (__atomic_load_n(&lg->start_failed, __ATOMIC_RELAXED)) {
		teardown(t);
		return NULL;
	}
	t->interval_end_ns = t->now_ns + 1000000000ull;
	uint64_t churn_credit = 0;
	int sending = 0;
	for (;;) {
		int phase = __atomic_load_n(&lg->phase, __ATOMIC_RELAXED);
		if (phase == PH_STOP)
			break;
		if (phase == PH_RUN && !sending && lg->cfg.scenario != SC_IDLE) {
			sending = 1;
			t->t0_send = __atomic_load_n(&lg->run_start_ns, __ATOMIC_RELAXED);
			t->sched_done = 0;
		}
		if (phase != PH_RUN)
			sending = 0;
		if (phase >= PH_RAMP && phase <= PH_RUN)
			pace_connects(t);
		if (sending) {
			if (lg->cfg.scenario != SC_IDLE)
				pace_sends(t);
			if (lg->cfg.scenario == SC_CHURN)
				pace_churn(t, &churn_credit);
			if (lg->cfg.scenario == SC_STORM && !t->storm_done &&
			    t->now_ns >= t->t0_send + (uint64_t)lg->cfg.storm_at_ms * 1000000ull) {
				t->storm_done = 1;
				storm(t);
			}
		}
		bufring_publish(&t->br);
		for (size_t i = 0; i < t->rearm.n; i++) {
			struct lconn *c = &t->c[t->rearm.v[i]];
			c->flags &= (uint8_t)~LF_REARM;
			if (lc_reads(c) && !(c->flags & LF_RECV))
				arm_recv(t, t->rearm.v[i]);
		}
		t->rearm.n = 0;
		for (size_t i = 0; i < t->flush.n; i++)
			flush_conn(t, t->flush.v[i]);
		t->flush.n = 0;

		uint64_t wait = LG_TICK_MS * 1000000ull;
		if (sending && lg->cfg.rate > 0) {
			double per_s = lg->cfg.rate * (double)t->n / (t->gid ? (double)lg->cfg.group_size : 1.0);
			uint64_t next = t->t0_send + (uint64_t)((double)t->sched_done * 1e9 / per_s);
			wait = next > t->now_ns ? next - t->now_ns : 0;
			if (wait > LG_TICK_MS * 1000000ull)
				wait = LG_TICK_MS * 1000000ull;
		}
		if (t->qlen && lg->cfg.connect_rate > 0 && t->connect_credit_ns > t->now_ns &&
		    t->connect_credit_ns - t->now_ns < wait)
			wait = t->connect_credit_ns - t->now_ns;
		struct io_uring_cqe *cqe;
		int ret;
		if (wait < 20000) {
			ret = io_uring_submit_and_get_events(&t->ring); /* due now: do not sleep */
		} else {
			struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = (long long)wait};
			ret = io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
		}
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			log_rl(LOG_ERROR, "io_uring: %s", strerror(-ret));
		t->now_ns = clock_mono_ns();
		t->tick = (uint32_t)((t->now_ns - t->start_ns) / (LG_TICK_MS * 1000000ull)) + 1;
		unsigned total = ring_dispatch(&t->ring, 4096, dispatch, t);
		CNT_ADD(t, loops, 1);
		CNT_ADD(t, cqes, total);
		wheel_advance(&t->wheel, t->tick, on_timer, t);
		if (t->now_ns >= t->interval_end_ns) {
			publish_interval(t);
			t->interval_end_ns += 1000000000ull;
		}
	}
	publish_interval(t);
	teardown(t);
	return NULL;
}
