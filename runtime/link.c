/* link.c: see link.h.
 *
 * States:
 *
 *   IDLE --connect--> CONNECTING --ok--> HELLO --peer HELLO ok--> AUTH --peer AUTH ok--> UP
 *     ^  (outbound)        |               |                        |                    |
 *     |                    +-----error-----+-------refused----------+------lost----------+--> CLOSING
 *     |                                                                                         |
 *     +--(inbound)-- all operations done <------------------------------------------------------+
 *                    BACKOFF --retry time--> CONNECTING   (outbound)
 *
 * CLOSING shuts the socket down so that the recv/send/connect in flight
 * complete, and closes the fd once none is left (never under an operation).
 *
 * Sending: one send in flight at a time. Pending control frames (LC_* bits,
 * one slot each) go first, all of them encoded into ctrl_buf for one send;
 * then queued batches, in order, once UP, within the credit and, with hold
 * set, up to release_seq.
 */
#include "runtime/link.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/log.h"
#include "runtime/peerauth.h"
#include "runtime/uring.h"

enum { OP_CONNECT = 0, OP_RECV = 1, OP_SEND = 2 };

/* Pending control frames, in the order they leave. */
enum {
	LC_HELLO = 1u << 0,
	LC_AUTH = 1u << 1,
	LC_ERROR = 1u << 2,
	LC_CREDIT = 1u << 3,
	LC_ECHO = 1u << 4, /* our answer to the peer's heartbeat */
	LC_BEAT = 1u << 5, /* our heartbeat */
};

struct link_out {
	struct link_out *next;
	uint8_t *start;
	size_t len;   /* wire bytes from start */
	size_t mem;   /* bytes allocated for it, header included: what the queue bound counts */
	uint64_t seq; /* its batch sequence number (for hold/release) */
	uint8_t buf[];
};

static inline uint64_t link_ud(const struct link *l, unsigned op)
{
	return ud_make(l->ud_kind, ((l->gen << 2) | op) & UD_GEN_MASK, l->idx);
}

static void q_push(struct link_lane *q, struct link_out *o)
{
	o->next = NULL;
	if (q->tail)
		q->tail->next = o;
	else
		q->head = o;
	q->tail = o;
	q->bytes += o->mem;
}

static void begin_batch(struct link *l, struct link_lane *q)
{
	if (q->cur)
		return;
	q->cur = malloc(sizeof(struct link_out) + DIST_BATCH_HEADROOM + l->batch_cap);
	if (q->cur)
		dist_batch_init(&q->batch, q->cur + sizeof(struct link_out), DIST_BATCH_HEADROOM + l->batch_cap);
}

static size_t cur_cap(const struct link *l)
{
	return sizeof(struct link_out) + DIST_BATCH_HEADROOM + l->batch_cap;
}

/* Close the batch under construction into the queue. A batch that uses
 * little of its buffer is shrunk to what it uses, so that the queue bound,
 * which counts allocated bytes, is a bound on memory: one small frame per
 * loop iteration while a backend is away costs its bytes, not a 256 KiB
 * buffer each. */
static void end_lane(struct link *l, struct link_lane *q)
{
	if (!q->cur || q->batch.count == 0)
		return;
	struct link_out *o = (struct link_out *)q->cur;
	size_t size;
	o->start = dist_batch_finish(&q->batch, ++l->seq_out, &size);
	o->seq = l->seq_out;
	o->len = size;
	o->mem = cur_cap(l);
	size_t used = sizeof(struct link_out) + DIST_BATCH_HEADROOM + q->batch.len;
	if (used < o->mem / 2) {
		size_t start_off = (size_t)(o->start - (uint8_t *)o);
		struct link_out *s = realloc(o, used);
		if (s) {
			o = s;
			o->start = (uint8_t *)o + start_off;
			o->mem = used;
		}
	}
	l->st.frames_out += q->batch.count;
	q->cur = NULL;
	q_push(q, o);
}

/* Close both lanes' batches (the state lane's first: it is sent first). */
static void end_batch(struct link *l)
{
	end_lane(l, &l->lane[LINK_LANE_STATE]);
	end_lane(l, &l->lane[LINK_LANE_DATA]);
}

static size_t lane_queued(const struct link_lane *q)
{
	/* the batch under construction counts with what it uses: its buffer's
	 * untouched rest is one fixed allocation per lane */
	return q->bytes + (q->cur ? sizeof(struct link_out) + DIST_BATCH_HEADROOM + q->batch.len : 0);
}

static void lane_free(struct link_lane *q)
{
	free(q->cur);
	q->cur = NULL;
	for (struct link_out *o = q->head, *n; o; o = n) {
		n = o->next;
		free(o);
	}
	q->head = q->tail = NULL;
	q->bytes = 0;
}

void link_init(struct link *l, unsigned idx, unsigned ud_kind, const struct link_ops *ops, void *arg,
	       const struct peerauth_keys *keys, uint8_t my_role, uint32_t my_node, uint32_t my_thread,
	       uint32_t my_threads, size_t batch_cap, size_t queue_max, int sockbuf)
{
	memset(l, 0, sizeof *l);
	l->idx = idx;
	l->ud_kind = ud_kind;
	l->fd = -1;
	l->ops = ops;
	l->arg = arg;
	l->keys = keys;
	l->my_role = my_role;
	l->my_node = my_node;
	l->my_thread = my_thread;
	l->my_threads = my_threads;
	l->nobatch = batch_cap == 0;
	l->batch_cap = l->nobatch ? DIST_MAX_INNER + 64 : batch_cap > DIST_MAX_FRAME - 64 ? DIST_MAX_FRAME - 64 : batch_cap;
	l->queue_max = queue_max;
	l->sockbuf = sockbuf;
	l->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)my_node << 32) ^ ((uint64_t)my_thread << 16) ^ idx;
	snprintf(l->name, sizeof l->name, "#%u", idx);
}

static void set_opts(struct link *l, int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (l->sockbuf > 0) {
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &l->sockbuf, sizeof l->sockbuf);
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &l->sockbuf, sizeof l->sockbuf);
	}
}

static void arm_recv(struct link *l, struct io_uring *ring)
{
	struct io_uring_sqe *sqe = ring_sqe(ring);
	io_uring_prep_recv(sqe, l->fd, l->rx + l->rx_len, l->rx_cap - l->rx_len, 0);
	sqe->user_data = link_ud(l, OP_RECV);
	l->recv_inflight = 1;
}

/* ---- control frames ------------------------------------------------------------ */

/* Queue ERROR code/text; the link closes once it has left (or after 1 s). */
static void queue_error(struct link *l, unsigned code, const char *text)
{
	size_t n = strlen(text);
	if (n > sizeof l->err_text)
		n = sizeof l->err_text;
	memcpy(l->err_text, text, n);
	l->err_len = (uint8_t)n;
	l->err_code = (uint8_t)code;
	l->ctrl |= LC_ERROR;
	l->close_after_send = 1;
}

/* Encode every pending control frame into ctrl_buf; returns the bytes. */
static size_t build_ctrl(struct link *l)
{
	size_t n = 0;
	uint8_t *b = l->ctrl_buf;
	if (l->ctrl & LC_HELLO) {
		memcpy(b + n, l->hello_mine, l->hello_mine_len);
		n += l->hello_mine_len;
	}
	if (l->ctrl & LC_AUTH) {
		uint8_t mac[PEERAUTH_MAC];
		const uint8_t *hc = l->outbound ? l->hello_mine : l->hello_peer;
		const uint8_t *ha = l->outbound ? l->hello_peer : l->hello_mine;
		size_t nc = l->outbound ? l->hello_mine_len : l->hello_peer_len;
		size_t na = l->outbound ? l->hello_peer_len : l->hello_mine_len;
		peerauth_mac(l->keys, peerauth_sign_id(l->keys), l->outbound ? PEERAUTH_DIR_CONNECT : PEERAUTH_DIR_ACCEPT,
			     hc, nc, ha, na, mac);
		struct dist_frame f = {.type = DIST_AUTH};
		f.auth.mac = mac;
		n += dist_encode(&f, b + n, LINK_CTRL_BUF - n);
	}
	if (l->ctrl & LC_ERROR) {
		struct dist_frame f = {.type = DIST_ERROR};
		f.error.code = l->err_code;
		f.error.text = (struct proto_bytes){(const uint8_t *)l->err_text, l->err_len};
		n += dist_encode(&f, b + n, LINK_CTRL_BUF - n);
	}
	if (l->ctrl & LC_CREDIT) {
		struct dist_frame f = {.type = DIST_CREDIT};
		f.credit.bytes = l->ctrl_credit;
		n += dist_encode(&f, b + n, LINK_CTRL_BUF - n);
		l->ctrl_credit = 0;
	}
	if (l->ctrl & LC_ECHO) {
		struct dist_frame f = {.type = DIST_HEARTBEAT};
		f.heartbeat.seq = l->hb_seq_echo;
		f.heartbeat.t_us = l->hb_t_echo;
		f.heartbeat.reply = 1;
		n += dist_encode(&f, b + n, LINK_CTRL_BUF - n);
	}
	if (l->ctrl & LC_BEAT) {
		struct dist_frame f = {.type = DIST_HEARTBEAT};
		f.heartbeat.seq = l->hb_seq_out;
		f.heartbeat.t_us = l->hb_t_out;
		n += dist_encode(&f, b + n, LINK_CTRL_BUF - n);
	}
	l->ctrl = 0;
	return n;
}

/* Our HELLO, encoded once per connection (the AUTH MACs cover its bytes). */
static int make_hello(struct link *l)
{
	peerauth_nonce(l->nonce);
	struct dist_frame f = {.type = DIST_HELLO};
	f.hello.version = DIST_VERSION;
	f.hello.role = l->my_role;
	f.hello.node = l->my_node;
	f.hello.thread = l->my_thread;
	f.hello.threads = l->my_threads;
	f.hello.key_id = peerauth_sign_id(l->keys);
	f.hello.nonce = l->nonce;
	size_t n = dist_encode(&f, l->hello_mine, sizeof l->hello_mine);
	if (n == 0 || n > sizeof l->hello_mine)
		return -1;
	l->hello_mine_len = (uint8_t)n;
	l->ctrl |= LC_HELLO;
	return 0;
}

/* ---- connection set-up --------------------------------------------------------- */

/* The socket is connected (or accepted): say hello and start reading. */
static void start_session(struct link *l, struct io_uring *ring, uint64_t now)
{
	l->state = LINK_HELLO; /* from here link_close closes the socket, inbound or not */
	l->authed = 0;
	free(l->rx);
	l->rx = malloc(LINK_RX_HANDSHAKE);
	l->rx_cap = LINK_RX_HANDSHAKE;
	if (!l->rx || !l->keys || l->keys->n == 0 || make_hello(l) != 0) {
		link_close(l, ring, !l->rx ? "out of memory" : "no cluster key", now);
		return;
	}
	l->rx_len = 0;
	l->since_ns = l->last_rx_ns = l->last_tx_ns = l->last_hb_ns = now;
	l->credit = 0;
	l->consumed = 0;
	l->hello_peer_len = 0;
	arm_recv(l, ring);
	link_flush(l, ring, now);
}

static void start_connect(struct link *l, struct io_uring *ring, uint64_t now)
{
	int fd = socket(l->peer.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_rl(LOG_ERROR, "link %s: socket: %s", l->name, strerror(errno));
		l->state = LINK_BACKOFF;
		l->retry_at_ns = now + LINK_BACKOFF_MAX_NS;
		return;
	}
	set_opts(l, fd);
	l->fd = fd;
	l->gen++;
	l->state = LINK_CONNECTING;
	l->since_ns = now;
	struct io_uring_sqe *sqe = ring_sqe(ring);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&l->peer.ss, l->peer.len);
	sqe->user_data = link_ud(l, OP_CONNECT);
	l->connect_inflight = 1;
}

void link_connect(struct link *l, struct io_uring *ring, const struct addr *peer, uint64_t now_ns)
{
	l->peer = *peer;
	l->outbound = 1;
	l->backoff_ns = LINK_BACKOFF_MIN_NS;
	char a[64];
	snprintf(l->name, sizeof l->name, "%s", addr_str(peer, a, sizeof a));
	start_connect(l, ring, now_ns);
}

void link_attach(struct link *l, struct io_uring *ring, int fd, uint64_t now_ns)
{
	set_opts(l, fd);
	l->fd = fd;
	l->gen++;
	l->outbound = 0;
	start_session(l, ring, now_ns);
}

/* ---- queueing ------------------------------------------------------------------- */

int link_has_room(const struct link *l, size_t bytes)
{
	return lane_queued(&l->lane[LINK_LANE_DATA]) + bytes <= l->queue_max;
}

const char *link_state_name(unsigned state)
{
	static const char *const names[] = {
#define X_(N, name) [LINK_##N] = #name,
		LINK_STATES(X_)
#undef X_
	};
	return state < sizeof names / sizeof names[0] ? names[state] : "unknown";
}

void link_stats_snapshot(const struct link *l, struct link_stats *out)
{
	*out = l->st;
	out->up = l->state == LINK_UP;
	out->queue_bytes = link_queued(l);
}

/* sum += s, row by row as LINK_STATS says; counters_only: gauges left out. */
static void stats_add(struct link_stats *sum, const struct link_stats *s, int counters_only)
{
#define ADD_COUNTER(f) sum->f += s->f;
#define ADD_GAUGE(f) sum->f += counters_only ? 0 : s->f;
#define ADD_MAX(f) sum->f = !counters_only && s->f > sum->f ? s->f : sum->f;
#define X_(f, kind, metric, labels, key, help, scale) ADD_##kind(f)
	LINK_STATS(X_)
#undef X_
#undef ADD_MAX
#undef ADD_GAUGE
#undef ADD_COUNTER
}

void link_stats_merge(struct link_stats *sum, const struct link_stats *s)
{
	stats_add(sum, s, 0);
}

void link_stats_retire(struct link_stats *sum, const struct link_stats *s)
{
	stats_add(sum, s, 1);
}

void link_stats_publish(struct link_stats *dst, const struct link_stats *src)
{
#define X_(f, kind, metric, labels, key, help, scale) __atomic_store_n(&dst->f, src->f, __ATOMIC_RELAXED);
	LINK_STATS(X_)
#undef X_
}

size_t link_queued(const struct link *l)
{
	return lane_queued(&l->lane[LINK_LANE_DATA]) + lane_queued(&l->lane[LINK_LANE_STATE]);
}

static int add(struct link *l, struct link_lane *q, const struct dist_frame *f, size_t limit)
{
	if (lane_queued(q) >= limit) {
		l->st.refused++;
		return -EAGAIN;
	}
	for (int tries = 0; tries < 2; tries++) {
		begin_batch(l, q);
		if (!q->cur)
			return -EAGAIN;
		/* keep a batch within batch_cap, not just within the buffer */
		int r = dist_batch_add(&q->batch, f);
		if (r == 0) {
			if (l->nobatch)
				end_lane(l, q);
			return 0;
		}
		if (r == -2)
			return -EINVAL;
		if (q->batch.count == 0)
			return -EINVAL; /* does not fit an empty batch: cannot happen below DIST_MAX_INNER */
		end_lane(l, q);
	}
	return -EAGAIN;
}

int link_add(struct link *l, const struct dist_frame *f)
{
	return add(l, &l->lane[LINK_LANE_DATA], f, l->queue_max);
}

int link_add_state(struct link *l, const struct dist_frame *f, size_t bound)
{
	return add(l, &l->lane[LINK_LANE_STATE], f, bound);
}

static void submit_send(struct link *l, struct io_uring *ring)
{
	struct io_uring_sqe *sqe = ring_sqe(ring);
	memset(&l->tx_msg, 0, sizeof l->tx_msg);
	l->tx_msg.msg_iov = l->tx_iov + l->tx_at;
	l->tx_msg.msg_iovlen = l->tx_n - l->tx_at;
	io_uring_prep_sendmsg(sqe, l->fd, &l->tx_msg, MSG_NOSIGNAL);
	sqe->user_data = link_ud(l, OP_SEND);
	l->send_inflight = 1;
}

static void send_next(struct link *l, struct io_uring *ring, uint64_t now)
{
	if (l->send_inflight || l->fd < 0 || (l->state != LINK_HELLO && l->state != LINK_AUTH && l->state != LINK_UP))
		return;
	l->tx_n = l->tx_at = 0;
	if (l->ctrl) {
		l->sending = NULL;
		l->tx_iov[0] = (struct iovec){l->ctrl_buf, build_ctrl(l)};
		l->tx_n = 1;
	} else {
		/* Batch by batch, the state lane first, but never twice in a row
		 * while traffic waits (a resync of millions of sessions must not
		 * stall it); held batches (link_hold) are traffic only. One send
		 * takes up to LINK_SEND_IOV of them in that order while credit
		 * lasts (without batching, one frame per send stays the baseline). */
		struct link_lane *st = &l->lane[LINK_LANE_STATE], *d = &l->lane[LINK_LANE_DATA];
		struct link_out **tail = &l->sending;
		l->sending = NULL;
		while (l->tx_n < LINK_SEND_IOV && !(l->tx_n && l->nobatch)) {
			struct link_lane *q = st;
			if (!q->head || (l->sent_state && d->head && !(l->hold && d->head->seq > l->release_seq)))
				q = d;
			struct link_out *o = q->head;
			if (!o || l->close_after_send || l->state != LINK_UP || (q == d && l->hold && o->seq > l->release_seq))
				break; /* batches only once authenticated, and held ones not yet */
			if ((int64_t)o->len > l->credit) {
				l->st.credit_stalls++;
				break;
			}
			l->credit -= (int64_t)o->len;
			q->bytes -= o->mem;
			l->st.batches_out++;
			q->head = o->next;
			if (!q->head)
				q->tail = NULL;
			l->sent_state = q != d;
			o->next = NULL;
			*tail = o;
			tail = &o->next;
			l->tx_iov[l->tx_n++] = (struct iovec){(void *)o->start, o->len};
		}
		if (!l->tx_n)
			return;
	}
	submit_send(l, ring);
	l->last_tx_ns = now;
}

void link_release(struct link *l, struct io_uring *ring, uint64_t now_ns)
{
	end_batch(l);
	l->release_seq = l->seq_out;
	send_next(l, ring, now_ns);
}

/* Take the batches built since the last release (the tail of the traffic
 * queue) out of it; the queue no longer counts them. */
static struct link_out *take_held(struct link *l)
{
	struct link_lane *q = &l->lane[LINK_LANE_DATA];
	struct link_out **pp = &q->head, *last = NULL;
	while (*pp && (*pp)->seq <= l->release_seq) {
		last = *pp;
		pp = &(*pp)->next;
	}
	struct link_out *held = *pp;
	*pp = NULL;
	q->tail = last;
	for (struct link_out *o = held; o; o = o->next)
		q->bytes -= o->mem;
	return held;
}

static void free_outs(struct link_out *o)
{
	while (o) {
		struct link_out *n = o->next;
		free(o);
		o = n;
	}
}

void link_drop_held(struct link *l)
{
	struct link_lane *q = &l->lane[LINK_LANE_DATA];
	free(q->cur);
	q->cur = NULL;
	free_outs(take_held(l));
}

size_t link_redo_held(struct link *l, int (*fn)(void *arg, struct dist_frame *f), void *arg)
{
	struct link_lane *q = &l->lane[LINK_LANE_DATA];
	end_lane(l, q);
	struct link_out *old = take_held(l);
	/* and build them again, frame by frame, as fn has them: the frames'
	 * views point into the old batches, freed only at the end */
	size_t dropped = 0;
	for (struct link_out *o = old; o; o = o->next) {
		struct dist_frame bf, f;
		struct dist_iter it;
		if (dist_parse(o->start, o->len, &bf) <= 0 || bf.type != DIST_BATCH)
			continue; /* cannot happen: we built it */
		dist_batch_iter(&bf, &it);
		while (dist_batch_next(&it, &f) == 1) {
			l->st.frames_out--; /* counted again when its new batch closes */
			if (!fn(arg, &f) || add(l, q, &f, l->queue_max) != 0)
				dropped++;
		}
	}
	free_outs(old);
	return dropped;
}

void link_drop_state(struct link *l)
{
	lane_free(&l->lane[LINK_LANE_STATE]);
}

void link_flush(struct link *l, struct io_uring *ring, uint64_t now_ns)
{
	end_batch(l);
	if (l->state == LINK_UP && l->consumed >= LINK_GRANT_EVERY) {
		l->ctrl_credit += l->consumed; /* added to a grant not yet sent */
		l->consumed = 0;
		l->ctrl |= LC_CREDIT;
	}
	send_next(l, ring, now_ns);
}

/* ---- closing ---------------------------------------------------------------------- */

static void finish_close(struct link *l, uint64_t now)
{
	if (l->recv_inflight || l->send_inflight || l->connect_inflight)
		return;
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	free_outs(l->sending);
	l->sending = NULL;
	free(l->rx);
	l->rx = NULL;
	l->rx_len = l->rx_cap = 0;
	l->ctrl = 0;
	l->ctrl_credit = 0;
	l->close_after_send = 0;
	if (l->outbound) {
		/* exponential backoff with +-25% jitter */
		l->rng ^= l->rng << 13;
		l->rng ^= l->rng >> 7;
		l->rng ^= l->rng << 17;
		uint64_t j = l->backoff_ns / 2;
		l->retry_at_ns = now + l->backoff_ns - l->backoff_ns / 4 + (j ? l->rng % j : 0);
		l->backoff_ns *= 2;
		if (l->backoff_ns > LINK_BACKOFF_MAX_NS)
			l->backoff_ns = LINK_BACKOFF_MAX_NS;
		l->state = LINK_BACKOFF;
	} else {
		l->state = LINK_IDLE;
	}
}

void link_close(struct link *l, struct io_uring *ring, const char *why, uint64_t now_ns)
{
	(void)ring;
	if (l->state == LINK_CLOSING || l->state == LINK_IDLE || l->state == LINK_BACKOFF)
		return;
	int was_up = l->state == LINK_UP;
	if (l->state == LINK_CONNECTING)
		l->st.connect_failures++;
	l->state = LINK_CLOSING;
	if (l->fd >= 0)
		shutdown(l->fd, SHUT_RDWR); /* completes what is in flight */
	if (was_up)
		log_warn("link %s (node %u) down: %s", l->name, l->peer_node, why);
	else
		log_rl(LOG_WARN, "link %s: %s", l->name, why);
	if (l->ops->on_down)
		l->ops->on_down(l->arg, l, why);
	finish_close(l, now_ns);
}

/* A violation by the peer: counted, logged, closed. */
static void violation(struct link *l, struct io_uring *ring, const char *why, uint64_t now)
{
	l->st.violations++;
	link_close(l, ring, why, now);
}

int link_quiet(const struct link *l)
{
	return !l->recv_inflight && !l->send_inflight && !l->connect_inflight;
}

void link_free(struct link *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	free(l->rx);
	free_outs(l->sending);
	lane_free(&l->lane[LINK_LANE_DATA]);
	lane_free(&l->lane[LINK_LANE_STATE]);
	l->rx = NULL;
	l->sending = NULL;
}

/* ---- handshake ------------------------------------------------------------------------ */

/* Refuse the peer: ERROR auth_failed, then close; counted and logged. */
static void refuse(struct link *l, struct io_uring *ring, const char *why, uint64_t now)
{
	log_rl(LOG_WARN, "link %s: peer refused: %s", l->name, why);
	queue_error(l, PROTO_E_AUTH_FAILED, why);
	l->since_ns = now;
	link_flush(l, ring, now);
}

static void on_hello(struct link *l, struct io_uring *ring, const struct dist_frame *f, const uint8_t *raw,
		     uint64_t now)
{
	if (l->state != LINK_HELLO) {
		violation(l, ring, "second HELLO", now);
		return;
	}
	char why[96];
	const char *bad = NULL;
	if (f->hello.version != DIST_VERSION) {
		snprintf(why, sizeof why, "protocol version %u, this node speaks %u", f->hello.version, DIST_VERSION);
		bad = why;
	} else if (l->expect_role && f->hello.role != l->expect_role) {
		bad = "peer has the wrong role";
	} else if (!peerauth_has(l->keys, f->hello.key_id)) {
		snprintf(why, sizeof why, "unknown cluster key id %08x (not in the cluster secret file)",
			 (unsigned)f->hello.key_id);
		bad = why;
	} else if (f->size > sizeof l->hello_peer) {
		bad = "HELLO too long";
	}
	if (!bad && l->ops->on_hello)
		bad = l->ops->on_hello(l->arg, l, f);
	if (bad) {
		l->st.refused_hello++;
		if (f->hello.version != DIST_VERSION) {
			/* a peer of another version: tell it so with the version code */
			log_rl(LOG_WARN, "link %s: peer refused: %s", l->name, bad);
			queue_error(l, PROTO_E_VERSION, bad);
			l->since_ns = now;
			link_flush(l, ring, now);
			return;
		}
		refuse(l, ring, bad, now);
		return;
	}
	memcpy(l->hello_peer, raw, f->size);
	l->hello_peer_len = (uint8_t)f->size;
	l->peer_key = f->hello.key_id;
	l->peer_role = f->hello.role;
	l->peer_node = f->hello.node;
	l->peer_thread = f->hello.thread;
	l->peer_threads = f->hello.threads;
	l->state = LINK_AUTH;
	l->ctrl |= LC_AUTH;
	send_next(l, ring, now);
}

static void on_auth(struct link *l, struct io_uring *ring, const struct dist_frame *f, uint64_t now)
{
	if (l->state != LINK_AUTH) {
		violation(l, ring, l->state == LINK_UP ? "second AUTH" : "AUTH before HELLO", now);
		return;
	}
	const uint8_t *hc = l->outbound ? l->hello_mine : l->hello_peer;
	const uint8_t *ha = l->outbound ? l->hello_peer : l->hello_mine;
	size_t nc = l->outbound ? l->hello_mine_len : l->hello_peer_len;
	size_t na = l->outbound ? l->hello_peer_len : l->hello_mine_len;
	/* the peer's MAC is of the other direction than ours */
	if (peerauth_verify(l->keys, l->peer_key, l->outbound ? PEERAUTH_DIR_ACCEPT : PEERAUTH_DIR_CONNECT, hc, nc, ha,
			    na, f->auth.mac) != 0) {
		l->st.auth_failures++;
		refuse(l, ring, "authentication failed (wrong cluster secret?)", now);
		return;
	}
	uint8_t *rx = realloc(l->rx, LINK_RX_CAP);
	if (!rx) {
		link_close(l, ring, "out of memory", now);
		return;
	}
	l->rx = rx;
	l->rx_cap = LINK_RX_CAP;
	l->state = LINK_UP;
	l->authed = 1;
	l->credit = LINK_INITIAL_CREDIT;
	l->backoff_ns = LINK_BACKOFF_MIN_NS;
	if (!l->outbound) {
		char a[48];
		snprintf(a, sizeof a, "%s %u/%u", l->peer_role == DIST_ROLE_GATEWAY ? "gateway" : "backend", l->peer_node,
			 l->peer_thread);
		snprintf(l->name, sizeof l->name, "%s", a);
	}
	if (l->ops->on_up)
		l->ops->on_up(l->arg, l);
}

/* A grant of credit from the peer; 0, or -1 after closing on a violation. */
static int take_credit(struct link *l, struct io_uring *ring, uint64_t bytes, uint64_t now)
{
	if (bytes > LINK_CREDIT_MAX || (uint64_t)l->credit > LINK_CREDIT_MAX - bytes) {
		violation(l, ring, "CREDIT beyond any possible need: closing", now);
		return -1;
	}
	l->credit += (int64_t)bytes;
	return 0;
}

/* ---- receiving ---------------------------------------------------------------------- */

static int handle_batch(struct link *l, struct io_uring *ring, const struct dist_frame *f, long n, uint64_t now)
{
	l->st.batches_in++;
	l->consumed += (uint64_t)n;
	struct dist_iter it;
	struct dist_frame in;
	int r;
	dist_batch_iter(f, &it);
	while ((r = dist_batch_next(&it, &in)) == 1) {
		l->st.frames_in++;
		if (in.type == DIST_CREDIT) {
			if (take_credit(l, ring, in.credit.bytes, now) != 0)
				return -1;
		} else {
			l->ops->on_frame(l->arg, l, &in);
		}
		if (l->state != LINK_UP)
			return -1; /* the owner closed it */
	}
	if (r < 0) {
		char why[96];
		snprintf(why, sizeof why, "malformed frame in batch %llu (%s): closing", (unsigned long long)f->batch.seq,
			 proto_err_name((unsigned)-r));
		violation(l, ring, why, now);
		return -1;
	}
	return 0;
}

/* Handle every complete frame in rx; returns -1 after closing the link. */
static int process_rx(struct link *l, struct io_uring *ring, uint64_t now)
{
	size_t off = 0;
	while (off < l->rx_len) {
		struct dist_frame f;
		long n = dist_parse(l->rx + off, l->rx_len - off, &f);
		if (n == PROTO_NEED_MORE)
			break;
		if (n < 0) {
			char why[96];
			snprintf(why, sizeof why, "malformed frame (%s, type 0x%02x): closing", proto_err_name((unsigned)-n),
				 l->rx_len - off > 1 ? l->rx[off + 1] : 0);
			violation(l, ring, why, now);
			return -1;
		}
		if (l->close_after_send) {
			off += (size_t)n; /* refused or failing: read and drop until the ERROR has left */
			continue;
		}
		/* before the peer is authenticated: HELLO, then AUTH, or ERROR */
		if (l->state != LINK_UP && f.type != DIST_HELLO && f.type != DIST_AUTH && f.type != DIST_ERROR) {
			char why[64];
			snprintf(why, sizeof why, "%s before authentication: closing", dist_type_name(f.type));
			violation(l, ring, why, now);
			return -1;
		}
		switch (f.type) {
		case DIST_HELLO:
			on_hello(l, ring, &f, l->rx + off, now);
			break;
		case DIST_AUTH:
			on_auth(l, ring, &f, now);
			break;
		case DIST_BATCH:
			if (handle_batch(l, ring, &f, n, now) != 0)
				return -1;
			break;
		case DIST_CREDIT:
			if (take_credit(l, ring, f.credit.bytes, now) != 0)
				return -1;
			break;
		case DIST_HEARTBEAT:
			if (f.heartbeat.reply) {
				uint64_t us = now / 1000;
				l->st.rtt_us = us > f.heartbeat.t_us ? us - f.heartbeat.t_us : 0;
			} else {
				/* one echo pending at most: a newer request replaces it */
				l->hb_seq_echo = f.heartbeat.seq;
				l->hb_t_echo = f.heartbeat.t_us;
				l->ctrl |= LC_ECHO;
			}
			break;
		case DIST_ERROR: {
			/* the text is the peer's (maybe unauthenticated): printable bytes only in our log */
			char text[PROTO_MAX_TEXT + 1], why[320];
			uint32_t tn = f.error.text.len;
			for (uint32_t i = 0; i < tn; i++) {
				uint8_t ch = f.error.text.p[i];
				text[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
			}
			text[tn] = 0;
			snprintf(why, sizeof why, "peer sent error %s: %s", proto_err_name(f.error.code), text);
			link_close(l, ring, why, now);
			return -1;
		}
		default:
			break;
		}
		if (l->state == LINK_CLOSING || l->state == LINK_BACKOFF || l->state == LINK_IDLE)
			return -1;
		off += (size_t)n;
	}
	if (off) {
		memmove(l->rx, l->rx + off, l->rx_len - off);
		l->rx_len -= off;
	}
	return 0;
}

void link_complete(struct link *l, struct io_uring *ring, const struct io_uring_cqe *cqe, uint64_t now_ns)
{
	uint32_t g = ud_gen(cqe->user_data);
	unsigned op = g & 3;
	if ((g >> 2) != (l->gen & (UD_GEN_MASK >> 2)))
		return; /* from an earlier connection */
	int res = cqe->res;
	switch (op) {
	case OP_CONNECT:
		l->connect_inflight = 0;
		if (l->state != LINK_CONNECTING) {
			finish_close(l, now_ns);
			return;
		}
		if (res < 0) {
			char why[96];
			snprintf(why, sizeof why, "connect failed: %s", strerror(-res));
			link_close(l, ring, why, now_ns);
			return;
		}
		start_session(l, ring, now_ns);
		return;
	case OP_RECV:
		l->recv_inflight = 0;
		if (l->state == LINK_CLOSING) {
			finish_close(l, now_ns);
			return;
		}
		if (res <= 0) {
			link_close(l, ring, res == 0 ? "peer closed the link" : strerror(-res), now_ns);
			return;
		}
		l->rx_len += (size_t)res;
		l->st.bytes_in += (uint64_t)res;
		l->last_rx_ns = now_ns;
		if (process_rx(l, ring, now_ns) != 0) {
			finish_close(l, now_ns);
			return;
		}
		if (l->rx_len == l->rx_cap) {
			violation(l, ring,
				  l->state == LINK_UP ? "frame larger than the receive buffer"
						      : "more than a handshake before authentication",
				  now_ns);
			return;
		}
		arm_recv(l, ring);
		send_next(l, ring, now_ns); /* an echo or an AUTH may be pending */
		return;
	case OP_SEND: {
		l->send_inflight = 0;
		if (l->state == LINK_CLOSING || res <= 0) {
			if (l->state != LINK_CLOSING)
				link_close(l, ring, res == 0 ? "send made no progress" : strerror(-res), now_ns);
			else
				finish_close(l, now_ns);
			return;
		}
		l->st.bytes_out += (uint64_t)res;
		for (size_t left = (size_t)res; left && l->tx_at < l->tx_n;) {
			struct iovec *v = &l->tx_iov[l->tx_at];
			if (left < v->iov_len) {
				v->iov_base = (uint8_t *)v->iov_base + left;
				v->iov_len -= left;
				break;
			}
			left -= v->iov_len;
			l->tx_at++;
		}
		if (l->tx_at < l->tx_n) {
			submit_send(l, ring);
			return;
		}
		free_outs(l->sending);
		l->sending = NULL;
		if (l->close_after_send && !(l->ctrl & LC_ERROR)) {
			link_close(l, ring, "closing after an error", now_ns);
			return;
		}
		send_next(l, ring, now_ns);
		return;
	}
	default:
		return;
	}
}

void link_tick(struct link *l, struct io_uring *ring, uint64_t now_ns)
{
	switch (l->state) {
	case LINK_BACKOFF:
		if (now_ns >= l->retry_at_ns) {
			l->st.reconnects++;
			start_connect(l, ring, now_ns);
		}
		return;
	case LINK_CONNECTING:
		if (now_ns - l->since_ns > LINK_DEAD_NS)
			link_close(l, ring, "connect timed out", now_ns);
		return;
	case LINK_HELLO:
	case LINK_AUTH:
		if (l->close_after_send && now_ns - l->since_ns > 1000000000ull)
			link_close(l, ring, "closing after an error", now_ns);
		else if (now_ns - l->since_ns > (l->outbound ? LINK_OUT_HANDSHAKE_NS : LINK_HANDSHAKE_NS))
			link_close(l, ring, l->state == LINK_HELLO ? "no HELLO from the peer" : "no AUTH from the peer",
				   now_ns);
		return;
	case LINK_UP:
		if (l->close_after_send && now_ns - l->since_ns > 1000000000ull) {
			link_close(l, ring, "closing after an error", now_ns);
			return;
		}
		if (now_ns - l->last_rx_ns > LINK_DEAD_NS) {
			link_close(l, ring, "nothing received for 3 s", now_ns);
			return;
		}
		if (now_ns - l->last_hb_ns >= LINK_HEARTBEAT_NS) {
			l->hb_seq_out = ++l->hb_seq;
			l->hb_t_out = now_ns / 1000;
			l->ctrl |= LC_BEAT;
			l->last_hb_ns = now_ns;
			send_next(l, ring, now_ns);
		}
		return;
	default:
		return;
	}
}
