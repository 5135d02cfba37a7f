/* session.c: what the gateway does with the frames it parses: login (token,
 * version, takeover, move to the home thread), 1:1 delivery on this thread or
 * through the recipient's home thread, receipts, pings.
 *
 * Input is parsed in place from the receive buffer. Only a partial frame at
 * the end of a buffer is copied, into a per-connection carry sized to that
 * frame, freed as soon as the frame completes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"
#include "proto/proxy.h"
#include "runtime/clock.h"
#include "runtime/log.h"

/* ---- delivery ---------------------------------------------------------------- */

uint32_t session_find(struct worker *w, uint64_t user)
{
	uint64_t *v = u64map_get(&w->dir, user);
	if (!v)
		return UINT32_MAX;
	uint32_t slot = connref_slot(*v);
	struct conn *c = conn_of(w, slot);
	if (c->state != CS_LIVE || c->gen != connref_gen(*v))
		return UINT32_MAX;
	return slot;
}

uint64_t *session_users(struct worker *w, size_t *n)
{
	uint64_t *users = malloc((w->dir.count ? w->dir.count : 1) * sizeof *users);
	*n = 0;
	if (!users)
		return NULL;
	size_t pos = 0;
	const struct u64map_ent *e;
	while ((e = u64map_next(&w->dir, &pos)))
		users[(*n)++] = e->key;
	return users;
}

/* Deliver to a user at home here. cmid: the sender's id for the message, given
 * to protocol 2 clients so they drop a resend that took another path.
 * Returns 0 or a proto_err code. */
static unsigned deliver_here(struct worker *w, uint64_t to, uint64_t from, uint64_t group, uint64_t smid,
			     uint64_t time_ms, uint64_t cmid, const uint8_t *body, uint32_t len)
{
	uint32_t slot = session_find(w, to);
	if (slot == UINT32_MAX)
		return PROTO_E_NO_ROUTE;
	struct proto_frame f = {.type = PROTO_DELIVER};
	f.deliver.flags = (group ? PROTO_DELIVER_GROUP : 0) | ((conn_of(w, slot)->flags & CF_V2) ? PROTO_DELIVER_CMID : 0);
	f.deliver.group = group;
	f.deliver.cmid = cmid;
	f.deliver.smid = smid;
	f.deliver.from = from;
	f.deliver.time_ms = time_ms;
	f.deliver.body = (struct proto_bytes){body, len};
	if (conn_out_frame(w, slot, &f) != 0)
		return PROTO_E_NO_ROUTE; /* cut off as a slow consumer just now */
	return 0;
}

void session_answer(struct worker *w, uint32_t slot, uint32_t gen, uint8_t what, uint64_t ref, uint64_t id,
		    unsigned status, uint8_t ack)
{
	struct conn *c = conn_of(w, slot);
	if (slot >= w->slots || c->state != CS_LIVE || c->gen != gen)
		return; /* the sender left meanwhile */
	struct proto_frame f;
	memset(&f, 0, sizeof f);
	if (what == XR_GROUP) {
		f.type = PROTO_GROUP_RESULT;
		f.group_result.req = ref;
		f.group_result.status = (uint8_t)status;
		f.group_result.group = status ? 0 : id;
	} else if (status == 0) {
		f.type = PROTO_ACK;
		f.ack.cmid = ref;
		f.ack.status = ack;
		f.ack.smid = id;
	} else {
		static const char no_route[] = "recipient is not connected and no backend is configured";
		static const char again[] = "the recipient's backend is unreachable or busy; send again";
		if (status == PROTO_E_NO_ROUTE)
			CNT_ADD(w, no_route, 1);
		f.type = PROTO_ERROR;
		f.error.code = (uint8_t)status;
		f.error.ref = ref;
		if (status == PROTO_E_NO_ROUTE)
			f.error.text = (struct proto_bytes){(const uint8_t *)no_route, sizeof no_route - 1};
		else if (status == PROTO_E_TRY_AGAIN)
			f.error.text = (struct proto_bytes){(const uint8_t *)again, sizeof again - 1};
	}
	conn_out_frame(w, slot, &f);
}

static void answer_send(struct worker *w, uint32_t slot, uint64_t cmid, uint64_t smid, unsigned status)
{
	session_answer(w, slot, conn_of(w, slot)->gen, XR_SEND, cmid, smid, status, PROTO_ACK_ACCEPTED);
}

static void handle_send(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	struct conn *c = conn_of(w, slot);
	if (f->send.body.len > (uint64_t)w->settings->cfg.max_body) {
		conn_fail(w, slot, PROTO_E_TOO_BIG, CLOSE_PROTOCOL, "message body over this server's max_body");
		return;
	}
	if (f->send.group) {
		/* groups live in the backends */
		unsigned st = gw_dist_route(w, w->id, connref_make(slot, c->gen), f->send.cmid, c->user, 0, f->send.to,
					    f->send.body.p, f->send.body.len);
		if (st)
			answer_send(w, slot, f->send.cmid, 0, st);
		return;
	}
	uint64_t to = f->send.to;
	unsigned home = gw_home(w->gw, to);
	if (home == w->id) {
		uint64_t smid = msgid_next(&w->ids, w->wall_ms);
		unsigned st = deliver_here(w, to, c->user, 0, smid, w->wall_ms, f->send.cmid, f->send.body.p,
					   f->send.body.len);
		if (st == 0) {
			CNT_ADD(w, deliver_local, 1);
			metrics_lat_add(&w->cnt.lat_local, clock_mono_ns() - w->now_ns);
			answer_send(w, slot, f->send.cmid, smid, 0);
			return;
		}
		/* not connected here: its backend stores it (and delivers it if the user is elsewhere) */
		st = gw_dist_route(w, w->id, connref_make(slot, c->gen), f->send.cmid, c->user, to, 0, f->send.body.p,
				   f->send.body.len);
		if (st)
			answer_send(w, slot, f->send.cmid, 0, st);
		return;
	}
	struct xm_deliver *x = xm_reserve(w, home, XM_DELIVER, sizeof *x + f->send.body.len);
	if (!x) {
		answer_send(w, slot, f->send.cmid, 0, PROTO_E_TRY_AGAIN);
		return;
	}
	x->from = c->user;
	x->to = to;
	x->smid = msgid_next(&w->ids, w->wall_ms);
	x->time_ms = w->wall_ms;
	x->cmid = f->send.cmid;
	x->t0_ns = w->now_ns;
	x->oslot = slot;
	x->ogen = c->gen;
	x->body_len = f->send.body.len;
	memcpy(x->body, f->send.body.p, f->send.body.len);
}

/* Give a receipt to `to` if connected here; returns 0, or -1 if not here. */
static int receipt_here(struct worker *w, uint64_t to, uint64_t from, uint8_t kind, uint64_t smid)
{
	uint32_t slot = session_find(w, to);
	if (slot == UINT32_MAX)
		return -1;
	struct proto_frame f = {.type = PROTO_RECEIPT};
	f.receipt.kind = kind;
	f.receipt.peer = from;
	f.receipt.smid = smid;
	if (conn_out_frame(w, slot, &f) == 0)
		CNT_ADD(w, receipts_routed, 1);
	return 0;
}

/* Notify `to` (at home here) of a receipt: directly, or via the backend that
 * owns it (which keeps it, bounded, while `to` is offline). */
static void receipt_notify_here(struct worker *w, uint64_t to, uint64_t from, uint8_t kind, uint64_t smid)
{
	if (receipt_here(w, to, from, kind, smid) != 0 && gw_dist_on(w))
		gw_dist_receipt(w, (int)cluster_user_link(&w->gw->cluster, to), DIST_RCPT_NOTIFY, kind, from, to, smid);
}

/* Whether smid can be a message id of this cluster: made by one of its nodes
 * (or this gateway), not in the future. A receipt about anything else cannot
 * refer to a message its sender received. */
static int smid_plausible(const struct worker *w, uint64_t smid)
{
	const struct gw *gw = w->gw;
	uint32_t node = msgid_node(smid);
	int backend = cluster_find(&gw->cluster, node) >= 0;
	if (node == 0 || (node != (uint32_t)gw->cfg.node && !backend && !cluster_is_gateway(&gw->cluster, node)))
		return 0;
	if (backend && cluster_msg_link(&gw->cluster, smid) < 0)
		return 0; /* a backend's, naming a node thread it does not have */
	return msgid_time_ms(smid) <= w->wall_ms + 60000; /* clocks of the nodes may differ a little */
}

/* A receipt from the client. What the server can check, it checks: a
 * delivered receipt for a message a backend stored goes to the reader's
 * owner only, which deletes the message from the reader's mailbox and tells
 * the sender only if the mailbox held it, from that sender (PROTOCOL.md 3.2,
 * RECEIPT).
 * Others (read receipts, messages delivered by a gateway) go to the peer
 * directly, and are kept for it while it is offline within per-peer and
 * per-user bounds that are apart from its message mailbox. */
static void handle_receipt(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	struct conn *c = conn_of(w, slot);
	uint64_t peer = f->receipt.peer, smid = f->receipt.smid;
	if (!smid_plausible(w, smid)) {
		CNT_ADD(w, receipts_dropped, 1);
		return;
	}
	if (f->receipt.kind == PROTO_RCPT_ACK) {
		CNT_ADD(w, receipt_acks, 1);
		gw_dist_receipt_ack(w, c->user, peer, smid);
		return;
	}
	/* a backend's message is in the reader's mailbox at the reader's owner
	 * (copies stored elsewhere are handed to it before they are delivered) */
	if (f->receipt.kind == PROTO_RCPT_DELIVERED && gw_dist_on(w) && cluster_msg_link(&w->gw->cluster, smid) >= 0) {
		gw_dist_receipt(w, (int)cluster_user_link(&w->gw->cluster, c->user), DIST_RCPT_DELETE | DIST_RCPT_NOTIFY,
				f->receipt.kind, c->user, peer, smid);
		return;
	}
	unsigned home = gw_home(w->gw, peer);
	if (home == w->id) {
		receipt_notify_here(w, f->receipt.peer, c->user, f->receipt.kind, f->receipt.smid);
		return;
	}
	struct xm_receipt *x = xm_reserve(w, home, XM_RECEIPT, sizeof *x);
	if (!x)
		return;
	x->from = c->user;
	x->to = f->receipt.peer;
	x->smid = f->receipt.smid;
	x->kind = f->receipt.kind;
}

void session_xbatch(struct worker *w, const struct xbatch *b)
{
	const uint8_t *p = b->data, *end = b->data + b->len;
	while (p < end) {
		const struct xm_hdr *h = (const struct xm_hdr *)p;
		if (h->size < sizeof *h || h->size > (size_t)(end - p)) {
			log_rl(LOG_ERROR, "corrupt cross-thread batch from thread %u", b->src);
			return;
		}
		CNT_ADD(w, xrecords_in, 1);
		switch (h->type) {
		case XM_DELIVER: {
			const struct xm_deliver *x = (const void *)p;
			unsigned st =
				deliver_here(w, x->to, x->from, 0, x->smid, x->time_ms, x->cmid, x->body, x->body_len);
			if (st == 0) {
				CNT_ADD(w, deliver_cross, 1);
				metrics_lat_add(&w->cnt.lat_cross, clock_mono_ns() - x->t0_ns);
			} else {
				/* not connected here: to its backend; the STORE_ACK goes straight
				 * to the sender's thread */
				st = gw_dist_route(w, b->src, connref_make(x->oslot, x->ogen), x->cmid, x->from, x->to, 0,
						   x->body, x->body_len);
				if (st == 0)
					break;
			}
			xt_answer(w, b->src, x->oslot, x->ogen, XR_SEND, x->cmid, x->smid, st, PROTO_ACK_ACCEPTED);
			break;
		}
		case XM_RESULT: {
			const struct xm_result *x = (const void *)p;
			session_answer(w, x->oslot, x->ogen, x->what, x->cmid, x->smid, x->status, x->ack);
			break;
		}
		case XM_RECEIPT: {
			const struct xm_receipt *x = (const void *)p;
			receipt_notify_here(w, x->to, x->from, (uint8_t)x->kind, x->smid);
			break;
		}
		default:
			break;
		}
		p += h->size;
	}
}

/* ---- login ------------------------------------------------------------------- */

static void login_complete(struct worker *w, uint32_t slot, uint64_t user, uint8_t version, uint64_t resume)
{
	struct conn *c = conn_of(w, slot);
	c->last_rx = w->tick; /* from now on: the keepalive clock */
	uint32_t old = session_find(w, user);
	if (old != UINT32_MAX && old != slot)
		conn_kick(w, old, PROTO_KICK_ELSEWHERE); /* the newest login wins; closing drops it from dir */
	if (u64map_put(&w->dir, user, connref_make(slot, c->gen)) != 0) {
		log_rl(LOG_ERROR, "out of memory in the user directory");
		conn_refuse_login(w, slot, PROTO_E_INTERNAL);
		return;
	}
	c->state = CS_LIVE;
	c->user = user;
	if (version >= 2)
		c->flags |= CF_V2;
	CNT_ADD(w, logins_ok, 1);
	CNT_ADD(w, logged_in, 1);
	struct proto_frame f = conn_login_result(w, PROTO_OK, version);
	conn_out_frame(w, slot, &f);
	conn_arm_recv(w, slot);
	conn_timer_update(w, slot);
	if (gw_dist_on(w))
		gw_dist_session(w, 1, user, connref_make(slot, c->gen), resume, version >= 2);
}

/* Returns 1 when the connection moves to another thread with the rest. */
static int handle_login(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	struct conn *c = conn_of(w, slot);
	if (f->login.version < PROTO_VERSION_MIN) {
		CNT_ADD(w, logins_version, 1);
		conn_refuse_login(w, slot, PROTO_E_VERSION);
		return 0;
	}
	switch (token_verify_keys(&w->settings->keys, f->login.user, f->login.token.p, f->login.token.len, w->wall_ms / 1000)) {
	case TOKEN_OK:
		break;
	case TOKEN_EXPIRED:
		CNT_ADD(w, logins_expired, 1);
		conn_refuse_login(w, slot, PROTO_E_TOKEN_EXPIRED);
		return 0;
	default:
		CNT_ADD(w, logins_auth, 1);
		conn_refuse_login(w, slot, PROTO_E_AUTH_FAILED);
		return 0;
	}
	if (w->draining) {
		conn_refuse_login(w, slot, PROTO_E_SHUTTING_DOWN);
		return 0;
	}
	uint8_t version = proto_version_agree(f->login.version);
	c->user = f->login.user;
	if (gw_home(w->gw, f->login.user) == w->id) {
		login_complete(w, slot, f->login.user, version, f->login.resume);
		return 0;
	}
	c->state = CS_HANDOFF; /* the caller moves it, with the rest of the input */
	return 1;
}

/* Send the socket and the input after LOGIN to the user's home thread. */
static void handoff(struct worker *w, uint32_t slot, const struct proto_frame *login, const uint8_t *rest, size_t n)
{
	struct conn *c = conn_of(w, slot);
	unsigned home = gw_home(w->gw, c->user);
	/* TLS: the records sealed here and not sent yet (the session ticket)
	 * go first on the home thread; one still being sent could be passed by
	 * the home thread's (never for a client that waited for our Finished) */
	uint32_t wire = (c->flags & CF_TLS) && c->out ? c->out->sealed : 0;
	if ((c->flags & CF_TLS) && (c->flags & CF_SEND)) {
		c->state = CS_NEW;
		conn_refuse_login(w, slot, PROTO_E_INTERNAL);
		return;
	}
	struct handoff *h = aligned_alloc(64, (sizeof *h + wire + n + 63) & ~(size_t)63);
	if (!h) {
		c->state = CS_NEW;
		conn_refuse_login(w, slot, PROTO_E_INTERNAL);
		return;
	}
	h->user = c->user;
	h->rl_bytes = c->rl_bytes;
	h->rl_frames = c->rl_frames;
	h->rl_window = c->rl_window;
	h->resume = login->login.resume;
	h->version = proto_version_agree(login->login.version);
	h->len = (uint32_t)n;
	h->src = w->peers[slot];
	h->src_counted = (c->flags & CF_SRC) != 0;
	h->tls = (c->flags & CF_TLS) != 0;
	h->wire = wire;
	if (h->tls)
		h->tc = w->tls[slot]; /* the slot's copy is wiped once the move succeeds (worker.c) */
	if (wire)
		memcpy(h->data, c->out->data, wire);
	if (n)
		memcpy(h->data + wire, rest, n);
	c->handoff = h;
	wheel_del(&w->wheel, slot);
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	ring_prep_send_fd(sqe, w->gw->ring_fds[home], slot, ud_ptr(UD_HANDOFF_IN, h),
			  ud_make(UD_HANDOFF_OUT, c->gen, slot));
	__atomic_store_n(&w->xposted, w->xposted + 2, __ATOMIC_RELAXED); /* arrival there, completion here */
}

void session_handoff_in(struct worker *w, uint32_t slot, struct handoff *h)
{
	struct conn *c = conn_of(w, slot);
	c->user = h->user;
	c->rl_bytes = h->rl_bytes;
	c->rl_frames = h->rl_frames;
	c->rl_window = h->rl_window;
	if (h->tls) {
		if (!w->tls) { /* cannot happen: every thread has TLS state when a TLS listener exists */
			tls_conn_free(&h->tc);
			conn_close(w, slot, CLOSE_ERROR);
			return;
		}
		conn_set_tls(w, slot, &h->tc);
		if (h->wire && conn_out_wire(w, slot, h->data, h->wire) != 0) {
			conn_close(w, slot, CLOSE_ERROR);
			return;
		}
	}
	if (w->live - w->closing > w->capacity) { /* it took a slot here: the capacity counts */
		conn_refuse_login(w, slot, PROTO_E_SERVER_FULL);
		return;
	}
	login_complete(w, slot, h->user, h->version, h->resume);
	if (c->state == CS_LIVE && h->len)
		session_input(w, slot, h->data + h->wire, h->len);
}

void session_gone(struct worker *w, uint32_t slot)
{
	struct conn *c = conn_of(w, slot);
	uint64_t *v = u64map_get(&w->dir, c->user);
	if (v && *v == connref_make(slot, c->gen))
		u64map_del(&w->dir, c->user);
	CNT_SET(w, logged_in, w->cnt.logged_in - 1);
	if (gw_dist_on(w))
		gw_dist_session(w, 0, c->user, connref_make(slot, c->gen), 0, 0);
}

void session_deliver_remote(struct worker *w, const struct dist_frame *f)
{
	if (!f->route.to || !f->route.smid)
		return;
	if (deliver_here(w, f->route.to, f->route.from, f->route.group, f->route.smid, f->route.time_ms, f->route.cmid,
			 f->route.body.p, f->route.body.len) == 0)
		CNT_ADD(w, deliver_remote, 1);
	else
		CNT_ADD(w, deliver_offline, 1); /* stays stored; delivered at the next login */
}

void session_receipt_remote(struct worker *w, int li, const struct dist_frame *f)
{
	/* `to` left just as the backend forwarded this: hand it back to be kept */
	if (receipt_here(w, f->receipt.to, f->receipt.from, f->receipt.kind, f->receipt.smid) != 0)
		gw_dist_receipt(w, li, DIST_RCPT_STORE, f->receipt.kind, f->receipt.from, f->receipt.to, f->receipt.smid);
}

void session_kick_remote(struct worker *w, const struct dist_frame *f)
{
	uint32_t slot = connref_slot(f->kick.conn), gen = connref_gen(f->kick.conn);
	if (slot >= w->slots)
		return;
	struct conn *c = conn_of(w, slot);
	if (c->state == CS_LIVE && c->gen == gen && c->user == f->kick.user)
		conn_kick(w, slot, PROTO_KICK_ELSEWHERE);
}

/* ---- input --------------------------------------------------------------- */

/* Handle one parsed frame. Returns 1 when the connection is handed off. */
static int handle_frame(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	struct conn *c = conn_of(w, slot);
	CNT_ADD(w, frames_in[proto_frame_index(f->type)], 1); /* a parsed frame has a type */
	if (c->state == CS_NEW) {
		if (f->type != PROTO_LOGIN) {
			conn_fail(w, slot, PROTO_E_NOT_LOGGED_IN, CLOSE_PROTOCOL, "log in first");
			return 0;
		}
		return handle_login(w, slot, f);
	}
	switch (f->type) {
	case PROTO_SEND:
		handle_send(w, slot, f);
		break;
	case PROTO_RECEIPT:
		handle_receipt(w, slot, f);
		break;
	case PROTO_PING: {
		struct proto_frame p = {.type = PROTO_PONG};
		p.ping.data = f->ping.data;
		conn_out_frame(w, slot, &p);
		break;
	}
	case PROTO_PONG:
		break;
	case PROTO_GROUP: {
		unsigned st = gw_dist_group(w, slot, f);
		if (st)
			session_answer(w, slot, c->gen, XR_GROUP, f->group.req, 0, st, 0);
		break;
	}
	case PROTO_LOGIN:
		conn_fail(w, slot, PROTO_E_ALREADY_LOGGED_IN, CLOSE_PROTOCOL, "already logged in");
		break;
	default:
		conn_fail(w, slot, PROTO_E_BAD_TYPE, CLOSE_PROTOCOL, "unexpected frame type");
		break;
	}
	return 0;
}

static int rate_exceeded(struct worker *w, struct conn *c, size_t bytes, unsigned frames)
{
	const struct gw_config *cfg = &w->settings->cfg;
	uint16_t window = (uint16_t)(w->tick / (1000 / GW_TICK_MS));
	if (window != c->rl_window) {
		c->rl_window = window;
		c->rl_bytes = 0;
		c->rl_frames = 0;
	}
	uint64_t b = (uint64_t)c->rl_bytes + bytes, fr = (uint64_t)c->rl_frames + frames;
	c->rl_bytes = b > UINT32_MAX ? UINT32_MAX : (uint32_t)b;
	c->rl_frames = fr > UINT16_MAX ? UINT16_MAX : (uint16_t)fr;
	return (cfg->rate_bytes && b > (uint64_t)cfg->rate_bytes) || (cfg->rate_frames && fr > (uint64_t)cfg->rate_frames);
}

int session_rate_bytes(struct worker *w, uint32_t slot, size_t n)
{
	if (!rate_exceeded(w, conn_of(w, slot), n, 0))
		return 0;
	CNT_ADD(w, rate_limited, 1);
	conn_fail(w, slot, PROTO_E_RATE_LIMITED, CLOSE_RATE, "bytes per second over the limit");
	return -1;
}

static void parse_fail(struct worker *w, uint32_t slot, long r)
{
	static const char *const why[] = {
		[PROTO_E_BAD_FRAME] = "malformed length prefix",
		[PROTO_E_TOO_BIG] = "frame over the size limit",
		[PROTO_E_BAD_TYPE] = "unknown frame type",
		[PROTO_E_BAD_FIELD] = "malformed frame field",
	};
	unsigned code = (unsigned)-r;
	conn_fail(w, slot, code, CLOSE_PROTOCOL, code <= PROTO_E_BAD_FIELD ? why[code] : "protocol error");
}

static int live_or_new(const struct conn *c)
{
	return c->state == CS_NEW || c->state == CS_LIVE;
}

/* Before login the only valid frame is LOGIN (at most PROTO_LOGIN_MAX_BYTES):
 * a longer frame, complete or announced by its length prefix, is refused at
 * once, so an unauthenticated socket never makes the gateway hold more. */
static int prelogin_too_big(struct worker *w, uint32_t slot, uint32_t bytes)
{
	if (conn_of(w, slot)->state != CS_NEW || bytes <= PROTO_LOGIN_MAX_BYTES)
		return 0;
	CNT_ADD(w, prelogin_too_big, 1);
	conn_fail(w, slot, PROTO_E_TOO_BIG, CLOSE_PROTOCOL, "frame over the size limit before login");
	return 1;
}

static int over_frame_rate(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	struct conn *c = conn_of(w, slot);
	/* the answer to a message this connection was given is not counted (at
	 * most one per DELIVER sent): a reader acknowledging a big mailbox as
	 * fast as it comes in is doing what it is asked */
	if (f->type == PROTO_RECEIPT && c->rcpt_owed) {
		c->rcpt_owed--;
		return 0;
	}
	/* counted before the frame is handled: the frame over the limit is not */
	if (!rate_exceeded(w, c, 0, 1))
		return 0;
	CNT_ADD(w, rate_limited, 1);
	conn_fail(w, slot, PROTO_E_RATE_LIMITED, CLOSE_RATE, "frames per second over the limit");
	return 1;
}

/* The body of session_input; the caller marks the connection's input as in
 * use around it (see session_input). */
/* A connection from a ",proxy" listener: its first bytes are a PROXY
 * header (proto/proxy.h). Takes what of (p, n) belongs to it: returns the
 * bytes used (all of them while the header is incomplete: they wait in the
 * carry), or -1 when the connection was closed for a bad header. */
static long proxy_input(struct worker *w, uint32_t slot, const uint8_t *p, size_t n)
{
	struct conn *c = conn_of(w, slot);
	uint8_t buf[PROXY_MAX];
	const uint8_t *q = p;
	size_t qn = n, had = 0;
	if (c->in) { /* the header's start came in an earlier receive */
		had = c->in->len;
		size_t add = n < sizeof buf - had ? n : sizeof buf - had;
		memcpy(buf, c->in->data, had);
		memcpy(buf + had, p, add);
		q = buf;
		qn = had + add;
	}
	struct proxy_hdr h;
	long r = proxy_parse(q, qn, &h);
	if (r == PROXY_NEED_MORE && qn < PROXY_MAX) {
		conn_input_drop(w, slot);
		if (carry_start(&c->in, q, qn, h.need > qn ? h.need : (uint32_t)qn + 1) != 0) {
			conn_close(w, slot, CLOSE_ERROR);
			return -1;
		}
		CNT_ADD(w, partial_bufs, 1);
		return (long)n;
	}
	conn_input_drop(w, slot);
	if (r <= 0) {
		conn_fail(w, slot, PROTO_E_BAD_FRAME, CLOSE_PROTOCOL, "malformed PROXY protocol header");
		return -1;
	}
	c->flags &= (uint16_t)~CF_PROXY;
	CNT_ADD(w, proxy_headers, 1);
	if (LOG_LEVEL() >= LOG_DEBUG) {
		char s[64];
		log_debug("slot %u: PROXY header: client %s", slot, proxy_src_str(&h, s, sizeof s));
	}
	/* the client is the header's source (a LOCAL header: the proxy's own
	 * check, no client address, never limited) */
	src_set(&w->peers[slot], h.local ? 0 : h.family, h.src, h.sport);
	if (conn_admit_source(w, slot) != 0)
		return -1;
	return r - (long)had; /* what of this receive the header took */
}

static int input(struct worker *w, uint32_t slot, const uint8_t *p, size_t n)
{
	struct conn *c = conn_of(w, slot);
	struct proto_frame f;
	/* TLS: the bytes on the wire were counted (worker.c tls_input): tiny
	 * records cost the gateway far more than their plaintext says */
	if (rate_exceeded(w, c, (c->flags & CF_TLS) ? 0 : n, 0)) {
		CNT_ADD(w, rate_limited, 1);
		conn_fail(w, slot, PROTO_E_RATE_LIMITED, CLOSE_RATE, "bytes per second over the limit");
		return -1;
	}
	if (c->flags & CF_PROXY) {
		long used = proxy_input(w, slot, p, n);
		if (used < 0)
			return -1;
		p += used;
		n -= (size_t)used;
		if (c->flags & CF_PROXY)
			return 0; /* the header is not complete yet */
	} else if (c->state == CS_NEW && !c->in && n >= 2 && proxy_sniff(p, n)) {
		/* a load balancer's header on a listener not set up for it: say so */
		conn_fail(w, slot, PROTO_E_BAD_FRAME, CLOSE_PROTOCOL,
			  "PROXY protocol header on a listener not configured for it (--listen IP:PORT,proxy)");
		return -1;
	}
	/* complete a frame carried over from the last receive */
	while (c->in && n) {
		long r = carry_feed(&c->in, &p, &n, PROTO_FROM_CLIENT, &f);
		if (r == 0)
			return prelogin_too_big(w, slot, c->in->need) ? -1 : 0;
		if (r == CARRY_NOMEM) {
			conn_close(w, slot, CLOSE_ERROR);
			return -1;
		}
		if (r < 0) {
			parse_fail(w, slot, r);
			return -1;
		}
		if (prelogin_too_big(w, slot, f.size) || over_frame_rate(w, slot, &f))
			return -1;
		int moved = handle_frame(w, slot, &f); /* f's views point into c->in: kept until here */
		conn_input_drop(w, slot);
		if (moved) {
			handoff(w, slot, &f, p, n); /* reads only f's numbers */
			return -1;
		}
		if (!live_or_new(c))
			return -1;
	}
	while (n) {
		long r = proto_parse(p, n, PROTO_FROM_CLIENT, &f);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			if (prelogin_too_big(w, slot, f.size) || over_frame_rate(w, slot, &f))
				return -1;
			if (handle_frame(w, slot, &f)) {
				handoff(w, slot, &f, p, n);
				return -1;
			}
			if (!live_or_new(c))
				return -1;
			continue;
		}
		if (r < 0) {
			parse_fail(w, slot, r);
			return -1;
		}
		if (prelogin_too_big(w, slot, f.need))
			return -1;
		/* a partial frame: keep just it, sized for the whole frame once known */
		if (carry_start(&c->in, p, n, f.need) != 0) {
			conn_close(w, slot, CLOSE_ERROR);
			return -1;
		}
		CNT_ADD(w, partial_bufs, 1);
		return 0;
	}
	return 0;
}

/* The lifetime rule for input: while a connection's frames are handled, the
 * frame views may point into its carry, and handling a frame can close the
 * connection itself (a message to oneself over --max-queue, a refused login).
 * So nothing but this function frees the carry of the connection whose input
 * is being handled (w->input_slot; enter_closing in worker.c skips it), and it drops the
 * carry here once the connection no longer takes input. */
int session_input(struct worker *w, uint32_t slot, const uint8_t *p, size_t n)
{
	uint32_t outer = w->input_slot;
	w->input_slot = slot;
	int r = input(w, slot, p, n);
	w->input_slot = outer;
	if (!live_or_new(conn_of(w, slot)))
		conn_input_drop(w, slot);
	return r;
}
