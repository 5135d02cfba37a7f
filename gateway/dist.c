/* dist.c: a gateway thread's links to the backends (runtime/link.c), and the
 * requests waiting for a backend's answer.
 *
 * Every worker thread holds one link to each thread of each backend in the
 * cluster file (link index: runtime/cluster.h). What goes where:
 *   message to an offline user       -> the user's owner thread (rendezvous
 *                                       hash, then a thread of that backend)
 *   message to a group, group ops    -> the thread inside the group id
 *                                       (create: the creator's owner)
 *   receipt DELETE                   -> the reader's owner (which holds its
 *                                       mailbox)
 *   receipt NOTIFY                   -> the original sender's owner
 *   session up/down                  -> the user's owner only (the one
 *                                       thread that delivers to it)
 * and what one backend thread sends another, by way of this thread:
 *   HANDOFF (a stored copy for a user the sender does not own) -> the
 *   user's owner, naming the link it came on as the holder; HANDOFF_ACK ->
 *   the holder it names; RECEIPT with RELAY -> `to`'s owner, as NOTIFY.
 *
 * Requests waiting for an answer (STORE_ACK, GROUP_RESULT) are remembered per
 * link in arrival order. If the link is lost, or no answer comes within
 * --store-timeout, their senders get ERROR try_again: they resend with the
 * same cmid, and the backend's dedup gives the first smid back, so a resend
 * never stores a message twice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"
#include "runtime/clock.h"
#include "gateway/pendq.h"
#include "runtime/log.h"

int gw_dist_on(const struct worker *w)
{
	return w->gw->cluster.n > 0;
}

/* Answer the sender a pending entry or backend answer names. */
static void answer(struct worker *w, uint32_t othread, uint64_t oconn, uint8_t what, uint64_t ref, uint64_t id,
		   unsigned status, uint8_t ack)
{
	xt_answer(w, othread, connref_slot(oconn), connref_gen(oconn), what, ref, id, status, ack);
}

static void fail_pending(struct worker *w, unsigned li, uint32_t older_than_tick, unsigned status)
{
	struct gw_pendq *q = &w->pend[li];
	const struct gw_pend *p;
	while ((p = pendq_oldest(q))) {
		if (older_than_tick && p->tick >= older_than_tick)
			break;
		answer(w, p->othread, p->oconn, p->what, p->ref, 0, status, 0);
		CNT_ADD(w, store_timeouts, 1);
		pendq_pop(q);
	}
}

/* An answer arrived: its entry is done, and the ones older than it lost
 * their answers (see pendq.h): try_again for them now. */
static void answered(struct worker *w, unsigned li, uint32_t othread, uint64_t oconn, uint64_t ref)
{
	struct gw_pend lost[64], hit;
	size_t n;
	if (pendq_answered(&w->pend[li], othread, oconn, ref, &hit, lost, sizeof lost / sizeof lost[0], &n))
		metrics_lat_add(&w->cnt.lat_backend, clock_mono_ns() - hit.t0_ns);
	for (size_t i = 0; i < n; i++) {
		answer(w, lost[i].othread, lost[i].oconn, lost[i].what, lost[i].ref, 0, PROTO_E_TRY_AGAIN, 0);
		CNT_ADD(w, answers_lost, 1);
	}
}

/* ---- link callbacks ---------------------------------------------------------- */

/* The backend at this link's address must be the node the cluster file
 * names there (its key is checked by the link itself). */
static const char *on_hello(void *arg, struct link *l, const struct dist_frame *hello)
{
	struct worker *w = arg;
	static __thread char why[96];
	const struct cluster *cl = &w->gw->cluster;
	const struct cluster_node *n = &cl->nodes[cl->link_node[l->idx]];
	uint32_t want = n->node, thread = cluster_link_thread(cl, l->idx);
	if (hello->hello.node != want) {
		snprintf(why, sizeof why, "backend says it is node %u; the cluster file lists node %u at this address",
			 hello->hello.node, want);
		return why;
	}
	if (hello->hello.thread != thread || hello->hello.threads != n->threads) {
		snprintf(why, sizeof why,
			 "backend %u says it is thread %u of %u here; the cluster file has thread %u of %u at this port",
			 want, hello->hello.thread, hello->hello.threads, thread, n->threads);
		return why;
	}
	return NULL;
}

/* ---- session announcements -------------------------------------------------
 * Sessions are state, not traffic: a backend must learn every session of
 * this thread, however full the link's queue is with messages that waited
 * through an outage, and however many sessions there are. So announcements
 * go into the link's state lane (link_add_state: a bound of its own, sent
 * ahead of queued traffic, taking turns with it), and a link that comes up
 * is told every session by a resync: a snapshot of the thread's users,
 * announced a piece per loop iteration as the lane has room (half of it:
 * the other half is kept for logins and logouts meanwhile), until all are
 * through. A session event that finds the lane full starts another resync
 * once the current one is done; one on a link that is not up is not queued
 * at all, and what waited in the lane when the link went down is dropped
 * (the resync when it comes up covers both, and a backend drops a lost
 * link's sessions anyway). */

struct gw_resync {
	uint64_t *users; /* NULL: none in progress */
	size_t n, at;
	int again; /* another pass once this one is done */
};

static void resync_free(struct gw_resync *r)
{
	free(r->users);
	r->users = NULL;
	r->n = r->at = 0;
}

static void resync_start(struct worker *w, unsigned li)
{
	struct gw_resync *r = &w->resync[li];
	resync_free(r);
	r->again = 0;
	r->users = session_users(w, &r->n);
	if (!r->users) {
		r->again = 1; /* try again next iteration */
		log_rl(LOG_ERROR, "out of memory starting a session resync");
		return;
	}
	/* the backend thread hears of the users it owns only */
	size_t k = 0;
	for (size_t i = 0; i < r->n; i++)
		if (cluster_user_link(&w->gw->cluster, r->users[i]) == li)
			r->users[k++] = r->users[i];
	r->n = k;
	CNT_ADD(w, resyncs, 1);
}

static int announce(struct worker *w, struct link *l, int up, uint64_t user, uint64_t oconn, uint64_t resume,
		    int acks, size_t bound)
{
	struct dist_frame f = {.type = up ? DIST_SESSION_UP : DIST_SESSION_DOWN};
	f.session.user = user;
	f.session.node = (uint32_t)w->settings->cfg.node;
	f.session.thread = w->id;
	f.session.conn = oconn;
	f.session.resume = up ? resume : 0;
	f.session.flags = up && acks ? DIST_SESS_RCPT_ACKS : 0;
	if (link_add_state(l, &f, bound) != 0)
		return -1;
	CNT_ADD(w, sessions_out, 1);
	return 0;
}

/* Go on with the link's resync as far as its state lane allows this iteration. */
static void resync_step(struct worker *w, unsigned li)
{
	struct gw_resync *r = &w->resync[li];
	struct link *l = &w->links[li];
	if (l->state != LINK_UP)
		return;
	if (!r->users) {
		if (r->again)
			resync_start(w, li);
		if (!r->users)
			return;
	}
	for (unsigned k = 0; r->at < r->n && k < GW_RESYNC_PER_ITER; k++) {
		uint32_t slot = session_find(w, r->users[r->at]);
		if (slot != UINT32_MAX) {
			const struct conn *c = conn_of(w, slot);
			if (announce(w, l, 1, r->users[r->at], connref_make(slot, c->gen), 0, (c->flags & CF_V2) != 0,
				     GW_STATE_LANE(w->settings->cfg.link_queue) / 2) != 0)
				return; /* its half of the lane is full: on with it when the backend has taken some */
		}
		r->at++; /* a user who left since the snapshot: its SESSION_DOWN went, or the link was not up */
	}
	if (r->at == r->n) {
		resync_free(r);
		if (r->again)
			resync_start(w, li);
	}
}

static void on_up(void *arg, struct link *l)
{
	struct worker *w = arg;
	log_info("link to backend %u (%s) up", l->peer_node, l->name);
	/* a (re)connected backend learns every session of this thread */
	resync_start(w, l->idx);
	resync_step(w, l->idx);
}

static void on_down(void *arg, struct link *l, const char *why)
{
	struct worker *w = arg;
	(void)why;
	fail_pending(w, l->idx, 0, PROTO_E_TRY_AGAIN);
	resync_free(&w->resync[l->idx]); /* a new one starts when it is up again */
	w->resync[l->idx].again = 0;
	link_drop_state(l); /* stale: the backend drops this link's sessions, the resync tells them afresh */
}

/* A backend thread's copy for a user it does not own: to the owner, with
 * the holder being the backend thread at the other end of the link it came
 * on (whatever the frame said), so the owner's ack finds it. */
static void relay_handoff(struct worker *w, struct link *l, const struct dist_frame *f)
{
	const struct cluster *cl = &w->gw->cluster;
	uint32_t to = cluster_user_link(cl, f->route.to);
	if (to == l->idx || (size_t)to >= cl->nlinks) {
		log_rl(LOG_WARN, "link %s: a handoff for user %llu, which the cluster file gives that thread itself",
		       l->name, (unsigned long long)f->route.to);
		return;
	}
	struct dist_frame c = *f;
	c.route.onode = cl->nodes[cl->link_node[l->idx]].node;
	c.route.othread = cluster_link_thread(cl, l->idx);
	if (link_add(&w->links[to], &c) == 0)
		CNT_ADD(w, relayed_handoffs, 1);
	else
		CNT_ADD(w, relay_dropped, 1); /* the holder sends it again */
}

/* The owner's answer to a handoff: to the holder it names. */
static void relay_handoff_ack(struct worker *w, struct link *l, const struct dist_frame *f)
{
	const struct cluster *cl = &w->gw->cluster;
	int ni = cluster_find(cl, f->handoff_ack.node);
	if (ni < 0 || f->handoff_ack.thread >= cl->nodes[ni].threads) {
		log_rl(LOG_WARN, "link %s: a handoff ack for node %u thread %u, which is no backend thread", l->name,
		       f->handoff_ack.node, f->handoff_ack.thread);
		return;
	}
	if (link_add(&w->links[cl->nodes[ni].link0 + f->handoff_ack.thread], f) == 0)
		CNT_ADD(w, relayed_handoff_acks, 1);
	else
		CNT_ADD(w, relay_dropped, 1);
}

static void on_frame(void *arg, struct link *l, const struct dist_frame *f)
{
	struct worker *w = arg;
	switch (f->type) {
	case DIST_STORE_ACK: {
		answered(w, l->idx, f->store_ack.thread, f->store_ack.conn, f->store_ack.cmid);
		if (f->store_ack.status == PROTO_OK)
			CNT_ADD(w, stored_acks, 1);
		else
			CNT_ADD(w, store_refused, 1);
		answer(w, f->store_ack.thread, f->store_ack.conn, XR_SEND, f->store_ack.cmid, f->store_ack.smid,
		       f->store_ack.status, PROTO_ACK_STORED);
		break;
	}
	case DIST_GROUP_RESULT:
		answered(w, l->idx, f->group_result.thread, f->group_result.conn, f->group_result.req);
		answer(w, f->group_result.thread, f->group_result.conn, XR_GROUP, f->group_result.req,
		       f->group_result.group, f->group_result.status, 0);
		break;
	case DIST_ROUTE:
		session_deliver_remote(w, f);
		break;
	case DIST_RECEIPT:
		if (f->receipt.flags == DIST_RCPT_RELAY) {
			/* checked by the reader's owner: for the sender's owner to tell */
			gw_dist_receipt(w, (int)cluster_user_link(&w->gw->cluster, f->receipt.to), DIST_RCPT_NOTIFY,
					f->receipt.kind, f->receipt.from, f->receipt.to, f->receipt.smid);
			CNT_ADD(w, relayed_receipts, 1);
			break;
		}
		session_receipt_remote(w, (int)l->idx, f);
		break;
	case DIST_HANDOFF:
		relay_handoff(w, l, f);
		break;
	case DIST_HANDOFF_ACK:
		relay_handoff_ack(w, l, f);
		break;
	case DIST_KICK:
		session_kick_remote(w, f);
		break;
	default:
		log_rl(LOG_WARN, "link %s: unexpected %s frame", l->name, dist_type_name(f->type));
		break;
	}
}

static const struct link_ops ops = {on_hello, on_frame, on_up, on_down};

/* ---- set-up and loop hooks ----------------------------------------------- */

int gw_dist_setup(struct worker *w, char *err, size_t errlen)
{
	const struct cluster *cl = &w->gw->cluster;
	if (!cl->n)
		return 0;
	const struct gw_config *cfg = &w->settings->cfg;
	w->links = calloc(cl->nlinks, sizeof *w->links);
	w->pend = calloc(cl->nlinks, sizeof *w->pend);
	w->pub = calloc(cl->nlinks, sizeof *w->pub);
	w->resync = calloc(cl->nlinks, sizeof *w->resync);
	if (!w->links || !w->pend || !w->pub || !w->resync) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cl->nlinks; i++) {
		if (pendq_init(&w->pend[i]) != 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		struct link *l = &w->links[i];
		link_init(l, (unsigned)i, UD_LINK, &ops, w, &w->settings->cluster, DIST_ROLE_GATEWAY, (uint32_t)cfg->node,
			  w->id, w->gw->nthreads, (size_t)cfg->link_batch, (size_t)cfg->link_queue, (int)cfg->link_sockbuf);
		l->expect_role = DIST_ROLE_BACKEND;
		struct addr a = cluster_link_addr(cl, (uint32_t)i);
		link_connect(l, &w->ring, &a, w->now_ns);
	}
	return 0;
}

void gw_dist_teardown(struct worker *w)
{
	if (!w->links)
		return;
	for (size_t i = 0; i < w->gw->cluster.nlinks; i++) {
		link_free(&w->links[i]);
		pendq_free(&w->pend[i]);
		resync_free(&w->resync[i]);
	}
	free(w->links);
	free(w->pend);
	free(w->pub);
	free(w->resync);
	w->links = NULL;
}

void gw_dist_rekey(struct worker *w)
{
	for (size_t i = 0; w->links && i < w->gw->cluster.nlinks; i++)
		w->links[i].keys = &w->settings->cluster;
}

void gw_dist_complete(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint32_t i = ud_slot(cqe->user_data);
	if (w->links && i < w->gw->cluster.nlinks)
		link_complete(&w->links[i], &w->ring, cqe, w->now_ns);
}

void gw_dist_tick(struct worker *w)
{
	if (!w->links)
		return;
	uint32_t timeout = (uint32_t)(w->settings->cfg.store_timeout_ms / GW_TICK_MS);
	uint64_t pending = 0;
	struct link_stats sum = {0};
	for (size_t i = 0; i < w->gw->cluster.nlinks; i++) {
		struct link *l = &w->links[i];
		link_tick(l, &w->ring, w->now_ns);
		if (w->tick > timeout)
			fail_pending(w, (unsigned)i, w->tick - timeout, PROTO_E_TRY_AGAIN);
		pending += w->pend[i].len;
		struct gw_link_pub *p = &w->pub[i];
		struct link_stats one;
		link_stats_snapshot(l, &one);
		link_stats_merge(&sum, &one);
		link_stats_publish(&p->st, &one);
		__atomic_store_n(&p->state, (uint64_t)l->state, __ATOMIC_RELAXED);
		__atomic_store_n(&p->node, w->gw->cluster.nodes[w->gw->cluster.link_node[i]].node, __ATOMIC_RELAXED);
		__atomic_store_n(&p->thread, cluster_link_thread(&w->gw->cluster, (uint32_t)i), __ATOMIC_RELAXED);
		__atomic_store_n(&p->pending, (uint64_t)w->pend[i].len, __ATOMIC_RELAXED);
	}
	CNT_SET(w, pending_stores, pending);
	link_stats_publish(&w->cnt.link, &sum);
}

void gw_dist_flush(struct worker *w)
{
	for (size_t i = 0; w->links && i < w->gw->cluster.nlinks; i++) {
		resync_step(w, (unsigned)i);
		link_flush(&w->links[i], &w->ring, w->now_ns);
	}
}

/* ---- requests ---------------------------------------------------------------- */

static unsigned add_request(struct worker *w, size_t li, const struct dist_frame *f, uint32_t othread, uint64_t oconn,
			    uint64_t ref, uint8_t what)
{
	struct link *l = &w->links[li];
	struct gw_pend p = {oconn, ref, othread, w->tick, what, w->now_ns};
	if (link_add(l, f) != 0) {
		CNT_ADD(w, link_try_again, 1);
		return PROTO_E_TRY_AGAIN;
	}
	if (pendq_push(&w->pend[li], &p) != 0)
		log_rl(LOG_ERROR, "out of memory tracking a request to backend %u", l->peer_node);
	return 0;
}

unsigned gw_dist_route(struct worker *w, uint32_t othread, uint64_t oconn, uint64_t cmid, uint64_t from, uint64_t to,
		       uint64_t group, const uint8_t *body, uint32_t len)
{
	const struct cluster *cl = &w->gw->cluster;
	if (!cl->n)
		return PROTO_E_NO_ROUTE;
	int li = group ? cluster_group_link(cl, group) : (int)cluster_user_link(cl, to);
	if (li < 0)
		return PROTO_E_NO_SUCH_GROUP;
	struct dist_frame f = {.type = DIST_ROUTE};
	f.route.from = from;
	f.route.to = group ? 0 : to;
	f.route.group = group;
	f.route.time_ms = w->wall_ms;
	f.route.onode = (uint32_t)w->settings->cfg.node;
	f.route.othread = othread;
	f.route.oconn = oconn;
	f.route.cmid = cmid;
	f.route.body = (struct proto_bytes){body, len};
	unsigned st = add_request(w, (size_t)li, &f, othread, oconn, cmid, XR_SEND);
	if (st == 0)
		CNT_ADD(w, routed_remote, 1);
	return st;
}

void gw_dist_receipt(struct worker *w, int li, uint8_t flags, uint8_t kind, uint64_t from, uint64_t to, uint64_t smid)
{
	if (!w->links || li < 0 || (size_t)li >= w->gw->cluster.nlinks)
		return;
	struct dist_frame f = {.type = DIST_RECEIPT};
	f.receipt.kind = kind;
	f.receipt.flags = flags;
	f.receipt.from = from;
	f.receipt.to = to;
	f.receipt.smid = smid;
	if (link_add(&w->links[li], &f) != 0)
		log_rl(LOG_WARN, "link to backend %u is full: a receipt was dropped", w->links[li].peer_node);
}

void gw_dist_receipt_ack(struct worker *w, uint64_t user, uint64_t peer, uint64_t smid)
{
	const struct cluster *cl = &w->gw->cluster;
	if (!cl->n)
		return;
	struct dist_frame f = {.type = DIST_RECEIPT_ACK};
	f.receipt_ack.user = user;
	f.receipt_ack.peer = peer;
	f.receipt_ack.smid = smid;
	/* stored receipts are kept by the owner of the user they are for */
	uint32_t owner = cluster_user_link(cl, user);
	if ((size_t)owner < cl->nlinks)
		link_add(&w->links[owner], &f);
}

void gw_dist_session(struct worker *w, int up, uint64_t user, uint64_t oconn, uint64_t resume, int acks)
{
	if (!w->links)
		return;
	/* to the user's owner only: the one backend thread that delivers to it */
	uint32_t i = cluster_user_link(&w->gw->cluster, user);
	struct link *l = &w->links[i];
	if (l->state != LINK_UP)
		return; /* announced by the resync when it comes up */
	if (announce(w, l, up, user, oconn, resume, acks, GW_STATE_LANE(w->settings->cfg.link_queue)) != 0) {
		/* the state lane is full: a resync (after the one going on, if
		 * any) tells the backend every session there is then */
		w->resync[i].again = 1;
		CNT_ADD(w, session_announce_deferred, 1);
		log_rl(LOG_WARN, "link to backend %u: announcement lane full; a resync follows", l->peer_node);
	}
}

unsigned gw_dist_group(struct worker *w, uint32_t slot, const struct proto_frame *f)
{
	const struct cluster *cl = &w->gw->cluster;
	if (!cl->n)
		return PROTO_E_NO_ROUTE;
	struct conn *c = conn_of(w, slot);
	int li = f->group.op == PROTO_GROUP_CREATE ? (int)cluster_user_link(cl, c->user)
						   : cluster_group_link(cl, f->group.group);
	if (li < 0)
		return PROTO_E_NO_SUCH_GROUP;
	struct dist_frame d = {.type = DIST_GROUP_OP};
	d.group_op.op = f->group.op;
	d.group_op.req = f->group.req;
	d.group_op.group = f->group.group;
	d.group_op.user = c->user;
	d.group_op.thread = w->id;
	d.group_op.conn = connref_make(slot, c->gen);
	d.group_op.count = f->group.count;
	d.group_op.members = f->group.members; /* already encoded varints: copied as they are */
	return add_request(w, (size_t)li, &d, w->id, d.group_op.conn, f->group.req, XR_GROUP);
}
