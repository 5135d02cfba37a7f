/* worker.c: one gateway thread: its ring, listeners, connections and timers.
 *
 * The loop is small: flush what the last iteration produced (sends, batches
 * for other threads, returned buffers), submit and wait in one call, dispatch
 * each completion by the kind in its user_data, advance the timing wheel.
 *
 * Ownership (see gw.h for the state diagram):
 * - A connection's slot is taken by the kernel's accept (or SEND_FD) and
 *   given back by our IORING_OP_CLOSE; its struct is reset only when that
 *   close completes, and only after every other operation on it has
 *   completed (conn_reap), so a stale completion never meets a reused slot
 *   with the same generation.
 * - A provided buffer is ours from the recv CQE that names it until
 *   bufring_put() at the end of that CQE's handling: frames are parsed in
 *   place and whatever must outlive the buffer is copied (output frames,
 *   a partial frame, a handoff's tail).
 * - struct obuf: `out` is filled during an iteration; at its end it becomes
 *   `sending` (one send per connection in flight, never two), freed when the
 *   send completes.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/admin.h"
#include "gateway/gw.h"
#include "runtime/clock.h"
#include "runtime/log.h"

static inline int gen_ok(const struct conn *c, uint64_t ud)
{
	return c->state != CS_FREE && c->gen == ud_gen(ud);
}

static inline uint32_t ms_to_ticks(int64_t ms)
{
	return (uint32_t)((ms + GW_TICK_MS - 1) / GW_TICK_MS);
}

/* ---- output ------------------------------------------------------------------ */

static void flush_later(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->flags & CF_QUEUED)
		return;
	if (slotlist_push(&w->flush, slot) != 0) {
		log_rl(LOG_ERROR, "out of memory growing the flush list");
		return;
	}
	c->flags |= CF_QUEUED;
}

uint32_t conn_queued(const struct conn *c)
{
	return obuf_queued(c->out, (c->flags & CF_SEND) ? c->sending : NULL);
}

static void queue_gauge(struct worker *w, int64_t delta)
{
	CNT_SET(w, queue_bytes, w->cnt.queue_bytes + (uint64_t)delta);
}

static void free_out(struct worker *w, struct conn *c)
{
	if (c->out) {
		queue_gauge(w, -(int64_t)c->out->len);
		free(c->out);
		c->out = NULL;
	}
}

int conn_out_wire(struct worker *w, uint32_t slot, const uint8_t *p, size_t n)
{
	long d = obuf_put_wire(&conn_of(w, slot)->out, w->tls_th, &w->tls[slot], p, n);
	if (d < 0) {
		log_rl(LOG_ERROR, "out of memory for TLS output (or a sealing failure)");
		return -1;
	}
	queue_gauge(w, d);
	flush_later(w, slot);
	return 0;
}

/* ---- TLS: sealing at flush time ------------------------------------------ */

/* The plaintext frames queued on a TLS connection sealed (obuf_seal: before
 * the handshake is done there are no keys, and a frame ending such a
 * connection goes unsaid; the close follows). 0, or -1: close it. */
static int seal_pending(struct worker *w, uint32_t slot)
{
	long d = obuf_seal(&conn_of(w, slot)->out, w->tls_th, &w->tls[slot]);
	if (d == LONG_MIN) {
		log_rl(LOG_ERROR, "sealing TLS records failed (out of memory or a library error)");
		return -1;
	}
	queue_gauge(w, d);
	return 0;
}

/* Before a TLS connection's send: its frames sealed; when it is closing
 * after a last frame, our close_notify after them. -1: close it. */
static int tls_flush(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	struct tls_conn *tc = &w->tls[slot];
	if (seal_pending(w, slot) != 0)
		return -1;
	if ((c->flags & CF_LINGER) && tls_can_send(tc)) {
		uint8_t a[TLS_OVERHEAD + 2];
		size_t n = tls_alert(w->tls_th, tc, TLS_A_CLOSE_NOTIFY, a);
		if (n && conn_out_wire(w, slot, a, n) != 0)
			return -1;
	}
	return 0;
}

/* Queue f for slot. last: the frame that ends the connection (conn_end's),
 * which may pass the output bound; nothing is queued after it. */
static int out_frame(struct worker *w, uint32_t slot, const struct proto_frame *f, int last)
{
	struct conn *c = conn_of(w, slot);
	if (c->state == CS_FREE || c->state == CS_HANDOFF || c->state == CS_CLOSING || (c->flags & CF_CLOSE))
		return -1;
	struct obuf *o = c->out;
	size_t room = o ? o->cap - o->len : 0;
	size_t n = proto_encode(f, o ? o->data + o->len : NULL, room);
	if (n == 0) {
		log_rl(LOG_ERROR, "refusing to send an invalid %s frame", proto_type_name(f->type));
		return -1;
	}
	if (n > room) {
		uint32_t q = conn_queued(c);
		/* A consumer is slow when output piles up behind a send it does not
		 * take. Without a send in flight, this iteration's output is offered
		 * to the socket at its end: allow a burst of up to 4x the bound. */
		uint64_t bound = (uint64_t)w->settings->cfg.max_queue * ((c->flags & CF_SEND) ? 1 : 4);
		if (!last && q + n > bound) {
			CNT_ADD(w, slow_consumers, 1);
			free_out(w, c);
			conn_fail(w, slot, PROTO_E_SLOW_CONSUMER, CLOSE_SLOW, "output queue over its limit");
			return -1;
		}
		if (!(o = obuf_reserve(&c->out, n))) {
			log_rl(LOG_ERROR, "out of memory for an output buffer");
			return -1;
		}
		proto_encode(f, o->data + o->len, o->cap - o->len);
	}
	o->len += (uint32_t)n;
	queue_gauge(w, (int64_t)n);
	if (o->len > w->cnt.queue_max)
		CNT_SET(w, queue_max, o->len);
	int fi = proto_frame_index(f->type);
	if (fi >= 0)
		CNT_ADD(w, frames_out[fi], 1);
	if (f->type == PROTO_DELIVER && c->rcpt_owed < UINT8_MAX)
		c->rcpt_owed++;
	flush_later(w, slot);
	return 0;
}

int conn_out_frame(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	return out_frame(w, slot, f, 0);
}

static void submit_send(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	struct obuf *s = c->sending;
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	io_uring_prep_send(sqe, (int)slot, s->data + s->off, s->len - s->off, MSG_NOSIGNAL | MSG_WAITALL);
	sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = ud_make(UD_SEND, c->gen, slot);
	c->flags |= CF_SEND;
	CNT_ADD(w, sends, 1);
	/* make sure the write-stall check comes in time */
	uint32_t stall = w->tick + ms_to_ticks(w->settings->cfg.write_stall_ms);
	uint32_t d = wheel_deadline(&w->wheel, slot);
	if (d == 0 || d > stall)
		wheel_add(&w->wheel, slot, stall);
}

static void submit_shutdown(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	io_uring_prep_shutdown(sqe, (int)slot, SHUT_WR);
	sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = ud_make(UD_SHUT, c->gen, slot);
	c->flags |= CF_SHUT;
}

static void submit_cancel(struct worker *w, uint64_t target)
{
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	io_uring_prep_cancel64(sqe, target, 0);
	sqe->user_data = ud_make(UD_CANCEL, 0, 0);
}

/* Close the slot's socket; its completion frees the slot (on_close). */
static void submit_close(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	io_uring_prep_close_direct(sqe, slot);
	sqe->user_data = ud_make(UD_CLOSE, c->gen, slot);
	c->flags |= CF_CLOSE;
}

/* Close the slot once nothing else is in flight on it. */
static void conn_reap(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->state != CS_CLOSING || (c->flags & (CF_RECV | CF_SEND | CF_SHUT | CF_CLOSE)))
		return;
	if ((c->flags & CF_LINGER) && c->out && c->out->len)
		return; /* the error frame is still to be flushed */
	submit_close(w, slot);
}

static void flush_conn(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	c->flags &= (uint16_t)~CF_QUEUED;
	if (c->state == CS_FREE || c->state == CS_HANDOFF || (c->flags & (CF_SEND | CF_CLOSE)))
		return;
	if ((c->flags & CF_TLS) && c->state == CS_NEW && w->tls[slot].state == TLS_S_OPEN)
		return; /* handshake done, LOGIN to come: the session ticket waits for it, and goes
			 * from the user's home thread if the login moves there (session.c handoff) */
	if ((c->flags & CF_TLS) && tls_flush(w, slot) != 0) {
		conn_close(w, slot, CLOSE_ERROR);
		return;
	}
	if (c->out && c->out->len) {
		c->sending = c->out;
		c->out = NULL;
		c->sending->off = 0;
		c->sending->since = w->tick;
		submit_send(w, slot);
	} else if ((c->flags & CF_LINGER) && !(c->flags & (CF_SHUT | CF_SHUT_DONE))) {
		submit_shutdown(w, slot);
	}
	conn_reap(w, slot);
}

/* ---- closing ------------------------------------------------------------------ */

void conn_input_drop(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->in) {
		carry_free(&c->in);
		CNT_SET(w, partial_bufs, w->cnt.partial_bufs - 1);
	}
}

/* NEW or LIVE -> CLOSING: out of the directory, counted, input dropped,
 * and a backstop timer (the slot is closed within the linger time). */
static void enter_closing(struct worker *w, uint32_t slot, enum gw_close_reason why)
{
	struct conn *c = conn_of(w, slot);
	if (c->state == CS_LIVE)
		session_gone(w, slot);
	c->state = CS_CLOSING;
	c->reason = (uint8_t)why;
	c->rl_bytes = 0; /* from now on: bytes read and dropped while lingering */
	w->closing++;
	CNT_ADD(w, closed[why], 1);
	/* the frame being handled may point into the carry: session_input drops it */
	if (slot != w->input_slot)
		conn_input_drop(w, slot);
	wheel_add(&w->wheel, slot, w->tick + GW_LINGER_TICKS);
}

/* Closing with its output flushed first (the last frame, a TLS alert),
 * then shutdown: see the state diagram in gw.h. */
static void linger(struct worker *w, uint32_t slot, enum gw_close_reason why)
{
	struct conn *c = conn_of(w, slot);
	enter_closing(w, slot, why);
	c->flags |= CF_LINGER;
	if (!(c->flags & CF_RECV))
		conn_arm_recv(w, slot); /* read and drop until the peer closes: no RST over our last frame */
	flush_later(w, slot);
}

void conn_end(struct worker *w, uint32_t slot, enum gw_close_reason why, const struct proto_frame *last)
{
	struct conn *c = conn_of(w, slot);
	if (c->state == CS_FREE || c->state == CS_HANDOFF || (c->flags & CF_CLOSE))
		return; /* HANDOFF: the SEND_FD completion decides */
	if (last) {
		if (c->state == CS_CLOSING)
			return; /* it has had its last frame, or is being cut */
		out_frame(w, slot, last, 1);
		linger(w, slot, why);
		return;
	}
	if (c->state != CS_CLOSING)
		enter_closing(w, slot, why);
	c->flags &= (uint16_t)~CF_LINGER;
	free_out(w, c);
	if (c->flags & CF_RECV)
		submit_cancel(w, ud_make(UD_RECV, c->gen, slot));
	if (c->flags & CF_SEND)
		submit_cancel(w, ud_make(UD_SEND, c->gen, slot));
	conn_reap(w, slot);
}

void conn_fail(struct worker *w, uint32_t slot, unsigned code, enum gw_close_reason why, const char *text)
{
	struct proto_frame f = {.type = PROTO_ERROR};
	f.error.code = (uint8_t)code;
	f.error.text = proto_text(text);
	if (code < sizeof w->cnt.parse_errors / sizeof w->cnt.parse_errors[0])
		CNT_ADD(w, parse_errors[code], 1);
	conn_end(w, slot, why, &f);
}

struct proto_frame conn_login_result(const struct worker *w, unsigned status, uint8_t version)
{
	struct proto_frame f = {.type = PROTO_LOGIN_RESULT};
	f.login_result.status = (uint8_t)status;
	f.login_result.version = version;
	f.login_result.time_ms = w->wall_ms;
	f.login_result.keepalive_s = (uint32_t)(w->settings->cfg.keepalive_ms / 1000);
	f.login_result.max_body = (uint32_t)w->settings->cfg.max_body;
	return f;
}

void conn_refuse_login(struct worker *w, uint32_t slot, unsigned status)
{
	struct proto_frame f = conn_login_result(w, status, PROTO_VERSION_MAX);
	conn_end(w, slot, status == PROTO_E_SERVER_FULL ? CLOSE_FULL : status == PROTO_E_SHUTTING_DOWN ? CLOSE_SHUTDOWN : CLOSE_AUTH,
		 &f);
}

void conn_kick(struct worker *w, uint32_t slot, unsigned reason)
{
	struct proto_frame f = {.type = PROTO_KICKED};
	f.kicked.reason = (uint8_t)reason;
	if (reason == PROTO_KICK_ADMIN)
		CNT_ADD(w, admin_kicks, 1);
	else
		CNT_ADD(w, kicks, 1);
	conn_end(w, slot, CLOSE_KICKED, &f);
}

/* ---- receive --------------------------------------------------------------- */

void conn_arm_recv(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->flags & (CF_RECV | CF_CLOSE))
		return;
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	if (c->state == CS_NEW) {
		/* one shot: LOGIN may move the socket to another ring, and nothing may
		 * be armed on it then */
		io_uring_prep_recv(sqe, (int)slot, NULL, w->br.size, 0);
		c->flags |= CF_RECV;
	} else {
		io_uring_prep_recv_multishot(sqe, (int)slot, NULL, 0, 0);
		c->flags |= CF_RECV | CF_MULTI;
	}
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	sqe->buf_group = w->br.bgid;
	sqe->user_data = ud_make(UD_RECV, c->gen, slot);
}

static void rearm_later(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->flags & CF_REARM)
		return;
	if (slotlist_push(&w->rearm, slot) != 0) {
		conn_close(w, slot, CLOSE_ERROR);
		return;
	}
	c->flags |= CF_REARM;
}

/* ---- TLS: the receive side ------------------------------------------------ */

static void tls_hs_end(struct worker *w)
{
	w->tls_hs--;
	CNT_SET(w, tls_handshaking, w->tls_hs);
}

/* End a TLS connection with an alert of ours (desc; a fatal one), sent
 * after what is queued, then the usual lingering close. */
static void tls_fail(struct worker *w, uint32_t slot, unsigned desc, enum gw_close_reason why)
{
	uint8_t a[TLS_OVERHEAD + 2];
	size_t n = tls_alert(w->tls_th, &w->tls[slot], desc, a);
	if (n && conn_out_wire(w, slot, a, n) != 0) {
		conn_close(w, slot, CLOSE_ERROR);
		return;
	}
	linger(w, slot, why);
}

/* Bytes received on a TLS connection (NEW or LIVE): the handshake's, then
 * records, whose plaintext goes to session_input as a plain connection's
 * bytes do. The receive buffer is ours: records are opened in place. */
static void tls_input(struct worker *w, uint32_t slot, uint8_t *buf, size_t n)
{
	struct tls_conn *tc = &w->tls[slot];
	const struct gw_live *live = w->settings;
	if (session_rate_bytes(w, slot, n) != 0)
		return;
	if (tc->state == TLS_S_NONE) {
		/* the first bytes: the handshake starts now (an idle socket holds no SSL object) */
		if (w->tls_hs >= (uint64_t)live->cfg.tls_max_handshakes) {
			CNT_ADD(w, tls_hs_limited, 1);
			log_rl(LOG_WARN, "%u TLS handshakes in progress on this thread (--tls-max-handshakes); closing a new one",
			       w->tls_hs);
			conn_close(w, slot, CLOSE_TLS);
			return;
		}
		if (!live->tls || tls_conn_start(w->tls_th, tc, live->tls) != 0) {
			CNT_ADD(w, tls_hs_failed[TLS_HSF_internal], 1);
			conn_close(w, slot, CLOSE_ERROR);
			return;
		}
		w->tls_hs++;
		CNT_SET(w, tls_handshaking, w->tls_hs);
	}
	if (tc->state == TLS_S_HANDSHAKE) {
		size_t used = 0, outn = 0;
		const uint8_t *out = NULL;
		unsigned why = TLS_HSF_internal;
		uint64_t t0 = clock_mono_ns();
		int h = tls_handshake(w->tls_th, tc, buf, n, &used, &out, &outn, &why);
		CNT_ADD(w, tls_hs_ns, clock_mono_ns() - t0);
		if (outn && conn_out_wire(w, slot, out, outn) != 0) {
			conn_close(w, slot, CLOSE_ERROR);
			return;
		}
		if (h == TLS_HS_MORE)
			return;
		tls_hs_end(w);
		if (h == TLS_HS_FAIL) {
			tls_conn_free(tc); /* the SSL object goes now (its alert is queued, a copy) */
			CNT_ADD(w, tls_hs_failed[why < TLS_HS_FAIL_REASONS ? why : TLS_HSF_internal], 1);
			if (LOG_LEVEL() >= LOG_DEBUG) {
				char s[64];
				log_debug("%s: TLS handshake failed: %s", src_str(&w->peers[slot], s, sizeof s),
					  tls_hs_fail_name(why));
			}
			linger(w, slot, CLOSE_TLS); /* libssl's alert is queued */
			return;
		}
		CNT_ADD(w, tls_hs_done, 1);
		if (tc->flags & TLS_F_RESUMED)
			CNT_ADD(w, tls_hs_resumed, 1);
		buf += used;
		n -= used;
		if (!n)
			return;
	}
	const uint8_t *plain = NULL;
	size_t pn = 0;
	int r = tls_open(w->tls_th, tc, buf, n, &plain, &pn);
	if (tls_wants_write(tc))
		flush_later(w, slot); /* our KeyUpdate, asked for by the peer */
	if (pn && session_input(w, slot, plain, pn) != 0)
		return; /* closing or moved: the rest does not matter */
	if (r == 0)
		return;
	if (r == 1) {
		CNT_ADD(w, tls_close_notify_in, 1);
		linger(w, slot, CLOSE_PEER); /* our close_notify answers (tls_flush) */
	} else if (r == 2) {
		CNT_ADD(w, tls_alerts_in, 1);
		conn_close(w, slot, CLOSE_TLS);
	} else {
		CNT_ADD(w, tls_bad_records, 1);
		tls_fail(w, slot, (unsigned)-r, CLOSE_TLS);
	}
}

static void on_recv(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct conn *c = conn_of(w, slot);
	int has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	if (!gen_ok(c, cqe->user_data)) {
		if (has_buf)
			bufring_put(&w->br, bid);
		return;
	}
	int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	if (!more)
		c->flags &= (uint16_t)~(CF_RECV | CF_MULTI);
	int res = cqe->res;
	if (res > 0 && has_buf) {
		CNT_ADD(w, bytes_in, (uint64_t)res);
		if (c->state != CS_NEW) /* NEW: last_rx is the accept tick, the login deadline counts from it */
			c->last_rx = w->tick;
		c->flags &= (uint16_t)~CF_PING;
		if (c->state == CS_NEW || c->state == CS_LIVE) {
			if (c->flags & CF_TLS)
				tls_input(w, slot, bufring_buf(&w->br, bid), (size_t)res);
			else
				session_input(w, slot, bufring_buf(&w->br, bid), (size_t)res);
		} else if (c->state == CS_CLOSING && (c->flags & CF_LINGER)) {
			/* read and drop, within a budget: a peer that keeps sending after
			 * our error frame is cut at once rather than read for the whole
			 * linger time (it would drain the shared buffer pool) */
			c->rl_bytes += (uint32_t)res;
			if (c->rl_bytes > GW_LINGER_BYTES) {
				CNT_ADD(w, linger_cut, 1);
				conn_close(w, slot, (enum gw_close_reason)c->reason);
			}
		}
		bufring_put(&w->br, bid);
		if (!more && !(c->flags & CF_RECV) && conn_reads(c))
			conn_arm_recv(w, slot);
	} else if (res == -ENOBUFS) {
		CNT_ADD(w, enobufs, 1);
		if (conn_reads(c))
			rearm_later(w, slot);
		else
			conn_reap(w, slot);
		return;
	} else if (res == 0 || res == -ECONNRESET || res == -EPIPE) {
		if (c->state == CS_CLOSING)
			c->flags &= (uint16_t)~CF_LINGER;
		conn_close(w, slot, CLOSE_PEER);
	} else if (res < 0 && res != -ECANCELED) {
		log_debug("recv on slot %u: %s", slot, strerror(-res));
		conn_close(w, slot, CLOSE_ERROR);
	} else if (has_buf) {
		bufring_put(&w->br, bid);
	}
	if (c->state == CS_CLOSING)
		conn_reap(w, slot);
}

/* ---- other completions ----------------------------------------------------- */

static void on_send(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct conn *c = conn_of(w, slot);
	if (!gen_ok(c, cqe->user_data))
		return;
	c->flags &= (uint16_t)~CF_SEND;
	struct obuf *s = c->sending;
	if (cqe->res < 0 || (cqe->res == 0 && s->off < s->len)) {
		queue_gauge(w, -(int64_t)s->len);
		free(s);
		c->sending = NULL;
		if (cqe->res != -ECANCELED)
			conn_close(w, slot, cqe->res == -EPIPE || cqe->res == -ECONNRESET || cqe->res == 0 ? CLOSE_PEER
															   : CLOSE_ERROR);
		conn_reap(w, slot);
		return;
	}
	CNT_ADD(w, bytes_out, (uint64_t)cqe->res);
	s->off += (uint32_t)cqe->res;
	if (s->off < s->len && cqe->res > 0 && (c->state != CS_CLOSING || (c->flags & CF_LINGER))) {
		submit_send(w, slot); /* short send: the rest, still one in flight */
		return;
	}
	queue_gauge(w, -(int64_t)s->len);
	free(s);
	c->sending = NULL;
	flush_conn(w, slot);
}

static void on_shutdown(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct conn *c = conn_of(w, slot);
	if (!gen_ok(c, cqe->user_data))
		return;
	c->flags &= (uint16_t)~CF_SHUT;
	c->flags |= CF_SHUT_DONE;
	if (cqe->res < 0)
		conn_close(w, slot, (enum gw_close_reason)c->reason);
	conn_reap(w, slot);
}

static void conn_free(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	wheel_del(&w->wheel, slot);
	free_out(w, c);
	conn_input_drop(w, slot);
	uint32_t gen = connref_next_gen(c->gen);
	if (c->state == CS_CLOSING)
		w->closing--;
	if (c->flags & CF_SRC)
		srclim_release(&w->gw->srclim, &w->peers[slot]);
	if (c->flags & CF_TLS) {
		if (w->tls[slot].state == TLS_S_HANDSHAKE)
			tls_hs_end(w);
		tls_conn_free(&w->tls[slot]);
		CNT_SET(w, tls_conns, w->cnt.tls_conns - 1);
	}
	memset(c, 0, sizeof *c);
	c->gen = gen;
	w->live--;
	CNT_SET(w, conns, w->live);
}

static void on_close(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	struct conn *c = conn_of(w, slot);
	if (!gen_ok(c, cqe->user_data))
		return;
	if (cqe->res < 0)
		log_rl(LOG_WARN, "close of slot %u: %s", slot, strerror(-cqe->res));
	conn_free(w, slot);
}

/* A new socket in `slot` (accepted, or moved here): a fresh connection. */
static struct conn *conn_new(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	if (c->state != CS_FREE) {
		/* cannot happen: the slot is ours until our close completes */
		log_error("kernel reused slot %u still in state %u", slot, c->state);
		return NULL;
	}
	uint32_t gen = c->gen;
	memset(c, 0, sizeof *c);
	c->gen = gen;
	c->state = CS_NEW;
	c->last_rx = w->tick;
	w->live++;
	CNT_SET(w, conns, w->live);
	return c;
}

static void conn_start(struct worker *w, uint32_t slot);

/* When a connection not logged in is closed: the login timeout from its
 * accept, and for TLS the handshake's, inside it. */
static uint32_t new_deadline(const struct worker *w, uint32_t slot)
{
	const struct conn *c = &w->conns[slot];
	const struct gw_config *cfg = &w->settings->cfg;
	int64_t ms = cfg->login_timeout_ms;
	if ((c->flags & CF_TLS) && w->tls[slot].state != TLS_S_OPEN && cfg->tls_handshake_timeout_ms < ms)
		ms = cfg->tls_handshake_timeout_ms;
	return c->last_rx + ms_to_ticks(ms);
}

/* Arm every accept of listener li that is not armed: single-shot accepts,
 * each with its own peer address buffer (GW_ACCEPTS in gw.h). */
static void arm_accepts(struct worker *w, unsigned li)
{
	uint64_t free_bits = ~w->larmed[li] & (GW_ACCEPTS == 64 ? ~0ull : (1ull << GW_ACCEPTS) - 1);
	while (free_bits) {
		unsigned k = (unsigned)__builtin_ctzll(free_bits);
		free_bits &= free_bits - 1;
		struct gw_accept *a = &w->acc[li * GW_ACCEPTS + k];
		a->len = sizeof a->sa;
		struct io_uring_sqe *sqe = ring_sqe(&w->ring);
		io_uring_prep_accept(sqe, w->lfd[li], (struct sockaddr *)&a->sa, &a->len, 0);
		/* the kernel picks a free direct slot (the raw field: liburing
		 * 2.3's accept_direct helper adds 1 to the index it is given) */
		sqe->file_index = IORING_FILE_INDEX_ALLOC;
		sqe->user_data = ud_make(UD_ACCEPT, k, li);
		w->larmed[li] |= 1ull << k;
	}
}

/* The per-source limits (runtime/srclimit.h) for a new connection whose
 * peer is known; refuses it (an ERROR, then a close) when over one.
 * Returns 0 admitted, -1 refused. */
int conn_admit_source(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	const struct gw_config *cfg = &w->settings->cfg;
	enum src_verdict v = srclim_admit(&w->gw->srclim, &w->peers[slot], (uint32_t)(w->wall_ms / 1000),
					  (uint32_t)cfg->src_max_conns, (uint32_t)cfg->src_accept_rate);
	if (v == SRC_OK) {
		c->flags |= CF_SRC;
		return 0;
	}
	char s[64];
	src_str(&w->peers[slot], s, sizeof s);
	if (v == SRC_TOO_FAST) {
		CNT_ADD(w, src_too_fast, 1);
		log_rl(LOG_WARN, "%s: over --accept-rate-per-source (%lld new connections a second); refused", s,
		       (long long)cfg->src_accept_rate);
		conn_fail(w, slot, PROTO_E_SOURCE_LIMIT, CLOSE_SOURCE, "too many new connections from your address");
	} else {
		CNT_ADD(w, src_too_many, 1);
		log_rl(LOG_WARN, "%s: over --max-conns-per-source (%lld connections); refused", s,
		       (long long)cfg->src_max_conns);
		conn_fail(w, slot, PROTO_E_SOURCE_LIMIT, CLOSE_SOURCE, "too many connections from your address");
	}
	return -1;
}

static void on_accept(struct worker *w, const struct io_uring_cqe *cqe)
{
	unsigned li = ud_slot(cqe->user_data), k = ud_gen(cqe->user_data);
	if (li >= w->gw->nlisten || k >= GW_ACCEPTS)
		return;
	w->larmed[li] &= ~(1ull << k); /* re-armed by the loop (after a tick if it failed) */
	if (cqe->res < 0) {
		if (cqe->res == -ECANCELED)
			return;
		CNT_ADD(w, accept_errors, 1);
		if (cqe->res == -ENFILE || cqe->res == -EMFILE)
			log_rl(LOG_WARN, "accept: the fixed-file table (%u slots) is full; connections are refused",
			       w->slots);
		else
			log_rl(LOG_WARN, "accept: %s", strerror(-cqe->res));
		return;
	}
	const struct gw_accept *a = &w->acc[li * GW_ACCEPTS + k];
	struct src peer;
	src_from_sockaddr(&peer, (const struct sockaddr *)&a->sa, a->len);
	worker_adopt(w, (uint32_t)cqe->res, &peer, w->gw->listen_proxy && w->gw->listen_proxy[li],
		     w->gw->listen_tls && w->gw->listen_tls[li]);
}

void conn_set_tls(struct worker *w, uint32_t slot, const struct tls_conn *tc)
{
	if (tc)
		w->tls[slot] = *tc;
	else
		memset(&w->tls[slot], 0, sizeof w->tls[slot]);
	conn_of(w, slot)->flags |= CF_TLS;
	CNT_SET(w, tls_conns, w->cnt.tls_conns + 1);
}

void worker_adopt(struct worker *w, uint32_t slot, const struct src *peer, int proxy, int tls)
{
	if (slot >= w->slots || !conn_new(w, slot))
		return;
	CNT_ADD(w, accepted, 1);
	if (tls && w->tls)
		conn_set_tls(w, slot, NULL);
	w->peers[slot] = *peer;
	w->peers[slot].since = (uint32_t)(w->wall_ms / 1000);
	if (proxy)
		conn_of(w, slot)->flags |= CF_PROXY; /* the source is the PROXY header's: admitted there */
	else if (conn_admit_source(w, slot) != 0)
		return;
	conn_start(w, slot);
}

/* A new connection, its source admitted: refused when draining or full,
 * else its first receive and its login deadline. */
static void conn_start(struct worker *w, uint32_t slot)
{
	if (w->draining) {
		/* no LOGIN came on it: an ERROR, not an answer to a LOGIN */
		conn_fail(w, slot, PROTO_E_SHUTTING_DOWN, CLOSE_SHUTDOWN, "the server is shutting down");
		return;
	}
	if (w->live - w->closing > w->capacity) {
		CNT_ADD(w, rejected_full, 1);
		log_rl(LOG_WARN, "server full: %u connections on this thread (capacity %u); refusing new ones",
		       w->live - w->closing - 1, w->capacity);
		conn_fail(w, slot, PROTO_E_SERVER_FULL, CLOSE_FULL, "server full");
		return;
	}
	conn_arm_recv(w, slot);
	wheel_add(&w->wheel, slot, new_deadline(w, slot));
}

/* n completions of cross-thread posts consumed (see struct worker). */
static void xtaken_n(struct worker *w, unsigned n)
{
	__atomic_store_n(&w->xtaken, w->xtaken + n, __ATOMIC_RELAXED);
}

static void xtaken(struct worker *w)
{
	xtaken_n(w, 1);
}

/* A login move's completion here (with quiet, after the loop: the slot is
 * settled but nothing is sent or closed; worker_teardown frees it). */
static void on_handoff_out(struct worker *w, const struct io_uring_cqe *cqe, int quiet)
{
	uint32_t slot = ud_slot(cqe->user_data);
	xtaken_n(w, cqe->res >= 0 ? 1 : 2); /* failed: it never arrives there */
	struct conn *c = conn_of(w, slot);
	if (!gen_ok(c, cqe->user_data) || c->state != CS_HANDOFF)
		return;
	struct handoff *h = c->handoff;
	c->handoff = NULL;
	if (cqe->res >= 0) {
		/* the home thread owns the socket (and h) now; drop our table entry */
		CNT_ADD(w, handoffs_out, 1);
		if (c->flags & CF_TLS) { /* its record state went along (h->tc) */
			memset(&w->tls[slot], 0, sizeof w->tls[slot]);
			CNT_SET(w, tls_conns, w->cnt.tls_conns - 1);
		}
		c->state = CS_CLOSING;
		w->closing++;
		c->flags = 0;
		wheel_del(&w->wheel, slot);
		if (!quiet)
			submit_close(w, slot);
		return;
	}
	CNT_ADD(w, handoff_failed, 1);
	log_rl(LOG_WARN, "moving a login to its home thread failed: %s", strerror(-cqe->res));
	free(h);
	c->state = CS_NEW; /* its TLS state is ours again */
	if (!quiet)
		conn_refuse_login(w, slot, cqe->res == -ENFILE ? PROTO_E_SERVER_FULL : PROTO_E_INTERNAL);
}

/* A moved login that arrived (or, with quiet, must be dropped: the loop has ended). */
static void on_handoff_in(struct worker *w, const struct io_uring_cqe *cqe, int quiet)
{
	struct handoff *h = ud_pointer(cqe->user_data);
	uint32_t slot = (uint32_t)cqe->res;
	xtaken(w);
	if (quiet || cqe->res < 0 || slot >= w->slots || !conn_new(w, slot)) {
		if (cqe->res < 0)
			log_rl(LOG_WARN, "a moved login arrived with error %s", strerror(-cqe->res));
		if (h->src_counted)
			srclim_release(&w->gw->srclim, &h->src);
		if (h->tls)
			tls_conn_free(&h->tc); /* a carried record moved with it */
		free(h);
		return;
	}
	w->peers[slot] = h->src;
	if (h->src_counted)
		conn_of(w, slot)->flags |= CF_SRC;
	CNT_ADD(w, handoffs_in, 1);
	session_handoff_in(w, slot, h);
	free(h);
}

/* ---- timers ------------------------------------------------------------------ */

void conn_timer_update(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	const struct gw_config *cfg = &w->settings->cfg;
	if (c->state != CS_LIVE)
		return;
	uint32_t ka = ms_to_ticks(cfg->keepalive_ms);
	uint32_t d = c->last_rx + ka * ((c->flags & CF_PING) ? 2 : 1);
	if ((c->flags & CF_SEND) && c->sending) {
		uint32_t s = c->sending->since + ms_to_ticks(cfg->write_stall_ms);
		if (s < d)
			d = s;
	}
	wheel_add(&w->wheel, slot, d);
}

static void on_timer(void *arg, uint32_t slot)
{
	struct worker *w = arg;
	struct conn *c = conn_of(w, slot);
	const struct gw_config *cfg = &w->settings->cfg;
	switch (c->state) {
	case CS_NEW:
		if ((c->flags & CF_TLS) && w->tls[slot].state != TLS_S_OPEN &&
		    w->tick - c->last_rx >= ms_to_ticks(cfg->tls_handshake_timeout_ms)) {
			CNT_ADD(w, tls_hs_timeouts, 1);
			conn_close(w, slot, CLOSE_LOGIN_TIMEOUT); /* no keys to say it with */
		} else if (w->tick - c->last_rx >= ms_to_ticks(cfg->login_timeout_ms)) {
			conn_fail(w, slot, PROTO_E_LOGIN_TIMEOUT, CLOSE_LOGIN_TIMEOUT, "no login in time");
		} else {
			uint32_t d = new_deadline(w, slot);
			wheel_add(&w->wheel, slot, d > w->tick ? d : c->last_rx + ms_to_ticks(cfg->login_timeout_ms));
		}
		return;
	case CS_LIVE: {
		if ((c->flags & CF_SEND) && c->sending &&
		    w->tick - c->sending->since >= ms_to_ticks(cfg->write_stall_ms)) {
			conn_close(w, slot, CLOSE_STALL);
			return;
		}
		uint32_t ka = ms_to_ticks(cfg->keepalive_ms), idle = w->tick - c->last_rx;
		if (idle >= 2 * ka && (c->flags & CF_PING)) {
			conn_fail(w, slot, PROTO_E_IDLE_TIMEOUT, CLOSE_IDLE, "no answer to keepalive ping");
			return;
		}
		if (idle >= ka && !(c->flags & CF_PING)) {
			struct proto_frame f = {.type = PROTO_PING};
			if (conn_out_frame(w, slot, &f) != 0)
				return;
			c->flags |= CF_PING;
		}
		conn_timer_update(w, slot);
		return;
	}
	case CS_CLOSING:
		conn_close(w, slot, (enum gw_close_reason)c->reason);
		return;
	default:
		return;
	}
}

/* ---- drain ------------------------------------------------------------------ */

/* Stop accepting and tell every logged-in client to go (GOAWAY, reconnect
 * delays spread over --goaway-spread). drain (SIGTERM): also refuse the
 * connections not logged in and new logins, and close the rest at the
 * deadline; lame duck (SIGUSR2): keep serving whoever stays. */
static void go_away(struct worker *w, int drain)
{
	if (w->draining || (!drain && w->lameduck))
		return;
	const struct gw_config *cfg = &w->settings->cfg;
	if (drain) {
		w->draining = 1;
		w->drain_deadline = w->tick + ms_to_ticks(cfg->drain_ms);
	} else {
		w->lameduck = 1;
	}
	for (size_t i = 0; i < w->gw->nlisten; i++) {
		if (w->lfd[i] < 0)
			continue; /* closed by a lame duck before the drain */
		if (w->larmed[i]) {
			struct io_uring_sqe *sqe = ring_sqe(&w->ring);
			io_uring_prep_cancel_fd(sqe, w->lfd[i], IORING_ASYNC_CANCEL_ALL);
			sqe->user_data = ud_make(UD_CANCEL, 0, 0);
			/* now: the kernel finds the accepts by the descriptor, which
			 * is closed below */
			io_uring_submit(&w->ring);
		}
		close(w->lfd[i]);
		w->lfd[i] = -1;
	}
	unsigned told = 0;
	for (uint32_t s = 0; s < w->slots; s++) {
		struct conn *c = conn_of(w, s);
		if (c->state == CS_NEW && drain) {
			/* not logged in, and no LOGIN of it is being handled: ERROR */
			conn_fail(w, s, PROTO_E_SHUTTING_DOWN, CLOSE_SHUTDOWN, "the server is shutting down");
		} else if (c->state == CS_LIVE && !(c->flags & CF_GOAWAY)) {
			struct proto_frame f = {.type = PROTO_GOAWAY};
			w->rng = w->rng * 6364136223846793005ull + 1442695040888963407ull;
			f.goaway.reconnect_ms =
				cfg->goaway_spread_ms ? (uint32_t)((w->rng >> 33) % (uint64_t)cfg->goaway_spread_ms) : 0;
			f.goaway.hint = proto_text(cfg->goaway_hint);
			conn_out_frame(w, s, &f);
			c->flags |= CF_GOAWAY;
			told++;
		}
	}
	if (drain)
		log_info("draining: %u connections told to go away; closing them in %lld ms", told, (long long)cfg->drain_ms);
	else
		log_info("lame duck: not accepting; %u connections told to go away, those who stay are served", told);
}

static void close_all(struct worker *w)
{
	for (uint32_t s = 0; s < w->slots; s++) {
		struct conn *c = conn_of(w, s);
		if (c->state == CS_NEW || c->state == CS_LIVE || c->state == CS_CLOSING)
			conn_close(w, s, CLOSE_SHUTDOWN);
	}
}

/* ---- set-up ------------------------------------------------------------------ */

static int open_listener(struct worker *w, const struct addr *a, char *err, size_t errlen)
{
	const struct gw_config *cfg = &w->settings->cfg;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	char s[64];
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
		snprintf(err, errlen, "setsockopt on listener %s: %s", addr_str(a, s, sizeof s), strerror(errno));
		close(fd);
		return -1;
	}
	/* accepted sockets inherit these (direct sockets cannot be set after) */
	if (cfg->sndbuf > 0) {
		int v = (int)cfg->sndbuf;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
	}
	if (cfg->rcvbuf > 0) {
		int v = (int)cfg->rcvbuf;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(fd, (int)cfg->backlog) != 0) {
		snprintf(err, errlen, "listen on %s: %s", addr_str(a, s, sizeof s), strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int worker_setup(struct worker *w, char *err, size_t errlen)
{
	struct gw *gw = w->gw;
	const struct gw_config *cfg = &gw->cfg;
	w->settings = gw->live;
	w->slots = gw->slots;
	w->capacity = gw->slots - GW_SLOT_RESERVE;
	w->input_slot = UINT32_MAX;
	unsigned cq = pow2_clamp(w->slots, 4096, 65536);
	int ret = ring_init(&w->ring, 2048, cq, &w->ring_mode);
	if (ret) {
		snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-ret));
		return -1;
	}
	ret = io_uring_register_files_sparse(&w->ring, w->slots);
	if (ret) {
		snprintf(err, errlen, "registering %u direct descriptors: %s (RLIMIT_NOFILE caps each ring's table)",
			 w->slots, strerror(-ret));
		return -1;
	}
	unsigned entries = bufring_entries_for((uint64_t)cfg->recv_pool, gw->nthreads, (unsigned)cfg->recv_buf);
	ret = bufring_setup(&w->ring, &w->br, entries, (unsigned)cfg->recv_buf, 1);
	if (ret) {
		snprintf(err, errlen, "provided buffer ring: %s", strerror(-ret));
		return -1;
	}
	w->conns = slot_table_map(w->slots, sizeof(struct conn));
	if (!w->conns) {
		snprintf(err, errlen, "connection table: %s", strerror(errno));
		return -1;
	}
	if (u64map_init(&w->dir, 1024) != 0 || wheel_init(&w->wheel, GW_WHEEL_BITS, w->conns, sizeof(struct conn),
							     offsetof(struct conn, tn), 1) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	w->peers = slot_table_map(w->slots, sizeof *w->peers);
	if (!w->peers) {
		snprintf(err, errlen, "peer table: %s", strerror(errno));
		return -1;
	}
	if (gw->live->tls) {
		w->tls = slot_table_map(w->slots, sizeof *w->tls);
		if (!w->tls) {
			snprintf(err, errlen, "TLS state table: %s", strerror(errno));
			return -1;
		}
		if (!(w->tls_th = tls_thread_new(err, errlen)))
			return -1;
	}
	w->lfd = calloc(gw->nlisten, sizeof *w->lfd);
	w->larmed = calloc(gw->nlisten, sizeof *w->larmed);
	w->acc = calloc((size_t)gw->nlisten * GW_ACCEPTS, sizeof *w->acc);
	w->xout = calloc(gw->nthreads, sizeof *w->xout);
	if (!w->lfd || !w->larmed || !w->acc || !w->xout) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < gw->nlisten; i++) {
		w->lfd[i] = open_listener(w, &gw->listen[i], err, errlen);
		if (w->lfd[i] < 0)
			return -1;
	}
	msgid_init(&w->ids, (unsigned)cfg->node, w->id, gw->nthreads);
	w->rng = clock_mono_ns() ^ ((uint64_t)w->id << 32);
	return gw_dist_setup(w, err, errlen);
}

void worker_teardown(struct worker *w)
{
	for (size_t i = 0; w->lfd && i < w->gw->nlisten; i++)
		if (w->lfd[i] >= 0)
			close(w->lfd[i]);
	for (unsigned d = 0; w->xout && d < w->gw->nthreads; d++)
		free(w->xout[d]);
	if (w->conns) {
		for (uint32_t s = 0; s < w->slots; s++) {
			struct conn *c = &w->conns[s];
			if (c->state == CS_FREE)
				continue;
			free(c->out);
			if (c->state == CS_HANDOFF)
				free(c->handoff);
			else
				free(c->sending);
			free(c->in);
			if ((c->flags & CF_TLS) && c->state != CS_HANDOFF)
				tls_conn_free(&w->tls[s]);
		}
		slot_table_unmap(w->conns, w->slots, sizeof(struct conn));
	}
	slot_table_unmap(w->peers, w->slots, sizeof *w->peers);
	slot_table_unmap(w->tls, w->slots, sizeof *w->tls);
	tls_thread_free(w->tls_th);
	gw_dist_teardown(w);
	bufring_free(&w->ring, &w->br);
	io_uring_queue_exit(&w->ring);
	free(w->lfd);
	free(w->larmed);
	free(w->acc);
	free(w->xout);
	slotlist_free(&w->flush);
	slotlist_free(&w->rearm);
	u64map_free(&w->dir);
	wheel_free(&w->wheel);
}

/* A reloaded configuration (CTRL_RELOAD): from now on this worker reads it;
 * the last worker to let go of the old one frees it. */
static void take_live(struct worker *w, struct gw_live *nl)
{
	struct gw_live *old = w->settings;
	w->settings = nl;
	gw_dist_rekey(w); /* the links point at the keys in it */
	if (old && __atomic_sub_fetch(&old->refs, 1, __ATOMIC_ACQ_REL) == 0)
		gw_live_free(old);
}

static void dispatch(void *arg, const struct io_uring_cqe *cqe)
{
	struct worker *w = arg;
	switch (ud_kind(cqe->user_data)) {
	case UD_RECV: on_recv(w, cqe); break;
	case UD_SEND: on_send(w, cqe); break;
	case UD_ACCEPT: on_accept(w, cqe); break;
	case UD_CLOSE: on_close(w, cqe); break;
	case UD_SHUT: on_shutdown(w, cqe); break;
	case UD_XIN: {
		struct xbatch *b = ud_pointer(cqe->user_data);
		CNT_ADD(w, xbatches_in, 1);
		xtaken(w);
		session_xbatch(w, b);
		free(b);
		break;
	}
	case UD_XFAIL:
		xtaken(w);
		xt_on_fail(w, cqe);
		break;
	case UD_HANDOFF_IN: on_handoff_in(w, cqe, 0); break;
	case UD_HANDOFF_OUT: on_handoff_out(w, cqe, 0); break;
	case UD_CTRL:
		if (cqe->res == CTRL_RELOAD) {
			take_live(w, ud_pointer(cqe->user_data));
		} else if (cqe->res == CTRL_ADMIN) {
			gw_admin_handle(w, ud_pointer(cqe->user_data));
		} else if (cqe->res == CTRL_LAMEDUCK) {
			go_away(w, 0);
		} else if (cqe->res == CTRL_DRAIN) {
			go_away(w, 1);
		} else if (cqe->res == CTRL_STOP) {
			go_away(w, 1);
			w->stopping = 1;
			close_all(w);
		}
		break;
	case UD_LINK: gw_dist_complete(w, cqe); break;
	case UD_CANCEL: break;
	default:
		log_rl(LOG_ERROR, "completion of unknown kind %u", ud_kind(cqe->user_data));
		break;
	}
}

static void update_clock(struct worker *w)
{
	w->now_ns = clock_mono_ns();
	w->wall_ms = clock_wall_ms();
	w->tick = (uint32_t)((w->now_ns - w->start_ns) / (GW_TICK_MS * 1000000ull)) + 1;
}

/* Whether every worker's drain is over (each keeps serving the others'
 * batches until then: a drained one may still be some sender's recipient
 * thread, and its ring must stay open for their posts). */
static int all_drained(const struct gw *gw)
{
	for (unsigned t = 0; t < gw->nthreads; t++)
		if (!__atomic_load_n(&gw->w[t].drained, __ATOMIC_ACQUIRE))
			return 0;
	return 1;
}

int worker_before_wait(struct worker *w)
{
	bufring_publish(&w->br);
	for (size_t i = 0; i < w->rearm.n; i++) {
		uint32_t s = w->rearm.v[i];
		struct conn *c = conn_of(w, s);
		c->flags &= (uint16_t)~CF_REARM;
		if (conn_reads(c))
			conn_arm_recv(w, s);
	}
	w->rearm.n = 0;
	xt_post(w);
	for (size_t i = 0; i < w->flush.n; i++)
		flush_conn(w, w->flush.v[i]);
	w->flush.n = 0;
	gw_dist_flush(w);
	if (w->draining) {
		if (!w->drained && (w->live == 0 || (w->hard_stop && w->tick >= w->hard_stop)))
			__atomic_store_n(&w->drained, 1, __ATOMIC_RELEASE);
		return !(w->drained && all_drained(w->gw));
	}
	for (unsigned i = 0; i < w->gw->nlisten; i++)
		if (w->lfd[i] >= 0)
			arm_accepts(w, i); /* a failed accept is re-armed here, a tick later at most */
	return 1;
}

void worker_after_wait(struct worker *w)
{
	update_clock(w);
	/* everything ready, up to a bound, before flushing */
	unsigned total = ring_dispatch(&w->ring, GW_BATCH_MAX, dispatch, w);
	CNT_ADD(w, loops, 1);
	CNT_ADD(w, cqes, total);
	wheel_advance(&w->wheel, w->tick, on_timer, w);
	gw_dist_tick(w);
	CNT_SET(w, wheel_size, w->wheel.count);
	CNT_SET(w, dir_size, w->dir.count);
	if (w->draining && !w->stopping && w->tick >= w->drain_deadline) {
		w->stopping = 1;
		close_all(w);
		w->hard_stop = w->tick + 2 * GW_LINGER_TICKS;
	}
	if ((int)w->id == w->gw->stall_thread && (int64_t)w->tick * GW_TICK_MS >= w->gw->stall_after_ms) {
		log_warn("test hook: thread %u stops turning its loop (--inject-stall)", w->id);
		for (;;)
			pause(); /* wedged: only the watchdog (or SIGKILL) ends this */
	}
}

/* After the loop (every worker drained): what another worker posted to
 * this one must still land in a live ring and be freed here. So the last
 * posts go out, then this worker reaps (dropping batches and moved logins
 * unread) until every worker has left its loop and every post made is
 * consumed; each worker's post count is final once it has left. Bounded:
 * 2 s after this worker left, whatever is still in flight is given up. */
static void quiesce(struct worker *w)
{
	struct gw *gw = w->gw;
	io_uring_submit(&w->ring);
	__atomic_store_n(&w->left_loop, 1, __ATOMIC_RELEASE);
	uint64_t give_up = clock_mono_ns() + 2000000000ull;
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			n++;
			switch (ud_kind(cqe->user_data)) {
			case UD_XIN:
			case UD_XFAIL:
				xtaken(w);
				free(ud_pointer(cqe->user_data));
				break;
			case UD_HANDOFF_IN: on_handoff_in(w, cqe, 1); break;
			case UD_HANDOFF_OUT: on_handoff_out(w, cqe, 1); break;
			default: break;
			}
		}
		io_uring_cq_advance(&w->ring, n);
		uint64_t posted = 0, taken = 0;
		unsigned left = 0;
		for (unsigned t = 0; t < gw->nthreads; t++)
			left += (unsigned)__atomic_load_n(&gw->w[t].left_loop, __ATOMIC_ACQUIRE);
		for (unsigned t = 0; left == gw->nthreads && t < gw->nthreads; t++) {
			posted += __atomic_load_n(&gw->w[t].xposted, __ATOMIC_RELAXED);
			taken += __atomic_load_n(&gw->w[t].xtaken, __ATOMIC_RELAXED);
		}
		if (left == gw->nthreads && taken == posted)
			return;
		if (clock_mono_ns() > give_up) {
			log_warn("thread %u: %u of %u threads have ended their loop, %llu of %llu cross-thread posts consumed; "
				 "exiting anyway", w->id, left, gw->nthreads, (unsigned long long)taken, (unsigned long long)posted);
			return;
		}
		CNT_ADD(w, loops, 1); /* the watchdog sees this loop turn */
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
		io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
	}
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct gw *gw = w->gw;
	char name[16], err[256];
	snprintf(name, sizeof name, "w%u", w->id);
	log_thread(name);
	w->start_ns = clock_mono_ns();
	update_clock(w);
	int ok = worker_setup(w, err, sizeof err) == 0;
	if (!ok) {
		log_error("thread %u: %s", w->id, err);
		__atomic_store_n(&gw->start_failed, 1, __ATOMIC_RELAXED);
	} else {
		gw->ring_fds[w->id] = w->ring.ring_fd;
	}
	pthread_barrier_wait(&gw->start);
	if (__atomic_load_n(&gw->start_failed, __ATOMIC_RELAXED)) {
		worker_teardown(w);
		return NULL;
	}
	if (w->id == 0)
		log_info("ring mode %s, %u provided buffers of %u bytes per thread", w->ring_mode, w->br.entries,
			 w->br.size);
	for (unsigned i = 0; i < gw->nlisten; i++)
		arm_accepts(w, i);
	while (worker_before_wait(w)) {
		uint64_t next_tick_ns = w->start_ns + (uint64_t)w->tick * GW_TICK_MS * 1000000ull;
		uint64_t wait = next_tick_ns > w->now_ns ? next_tick_ns - w->now_ns : 1000;
		struct __kernel_timespec ts = {.tv_sec = (long long)(wait / 1000000000ull),
					       .tv_nsec = (long long)(wait % 1000000000ull)};
		struct io_uring_cqe *cqe;
		int ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			log_rl(LOG_ERROR, "io_uring_submit_and_wait: %s", strerror(-ret));
		worker_after_wait(w);
	}
	if (w->live)
		log_warn("thread %u exits with %u connections still closing", w->id, w->live);
	quiesce(w);
	worker_teardown(w);
	__atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}
