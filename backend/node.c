/* node.c: the backend's loop and what it does with each dist frame.
 *
 * One iteration: wait for completions; handle them (every store write goes
 * into the iteration's one write transaction, every answer into a link's
 * batch, and links are held); commit; release the links and flush. So an
 * acknowledgement never leaves before the write it acknowledges is on disk.
 * If a commit fails, the links stay up and what the iteration built leaves
 * with its promises taken back (undo_frame): answers become store_full or
 * try_again, deliveries of what it stored are dropped; clients resend (dedup
 * makes that safe), and counters of committed work are put back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/be.h"
#include "proto/wire.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/uring.h"

/* The session directory: user -> link index << CONNREF_BITS | the gateway's
 * connection reference (opaque here: its low CONNREF_BITS), bit 63 set when
 * the client acknowledges stored receipts (protocol 2). */
#define DIR_ACKS (1ull << 63)
_Static_assert(CONNREF_BITS + 15 <= 63, "a link index (< 2^15) and a connection reference share 63 bits");
_Static_assert(BE_MAX_LINKS <= (1u << 15), "link indexes fit the directory's 15 bits");
static inline uint64_t dir_val(uint32_t li, uint64_t conn, int acks)
{
	return ((uint64_t)li << CONNREF_BITS) | (conn & CONNREF_MASK) | (acks ? DIR_ACKS : 0);
}
static inline uint32_t dir_link(uint64_t v)
{
	return (uint32_t)((v & ~DIR_ACKS) >> CONNREF_BITS);
}
static inline uint64_t dir_conn(uint64_t v)
{
	return v & CONNREF_MASK;
}

static int txn(struct be *b)
{
	if (b->in_txn)
		return 0;
	int r = store_begin(b->store);
	if (r == 0) {
		b->in_txn = 1;
		b->txn_smid0 = 0;
#define BE_COMMITTED_SAVE(f) b->txn_base.f = b->cnt.f;
		BE_COMMITTED_COUNTERS(BE_COMMITTED_SAVE)
	}
	else
		log_rl(LOG_ERROR, "store: cannot begin a transaction: %s", strerror(-r));
	return r;
}

/* The link of an online user's gateway thread (NULL: offline); *acks: the
 * client acknowledges stored receipts. */
static struct link *user_link_acks(struct be *b, uint64_t user, uint64_t *conn, int *acks)
{
	uint64_t *v = u64map_get(&b->dir, user);
	if (!v)
		return NULL;
	struct link *l = &b->links[dir_link(*v)];
	if (l->state != LINK_UP)
		return NULL;
	if (conn)
		*conn = dir_conn(*v);
	if (acks)
		*acks = (*v & DIR_ACKS) != 0;
	return l;
}

static struct link *user_link(struct be *b, uint64_t user, uint64_t *conn)
{
	return user_link_acks(b, user, conn, NULL);
}

static void reply(struct link *l, const struct dist_frame *f)
{
	if (link_add(l, f) != 0) /* the gateway will time the request out and the client will resend */
		log_rl(LOG_WARN, "link %s: queue full, dropping a %s frame", l->name, dist_type_name(f->type));
}

static void answer_route(struct link *l, const struct dist_frame *r, uint64_t smid, unsigned status)
{
	struct dist_frame a = {.type = DIST_STORE_ACK};
	a.store_ack.thread = r->route.othread;
	a.store_ack.conn = r->route.oconn;
	a.store_ack.cmid = r->route.cmid;
	a.store_ack.smid = status ? 0 : smid;
	a.store_ack.status = (uint8_t)status;
	reply(l, &a);
}

/* A stored message for a user's gateway thread (its cmid rides in `ref`). */
static int send_item(struct link *l, uint64_t user, const struct store_msg *m)
{
	struct dist_frame f;
	memset(&f, 0, sizeof f);
	if (m->kind == STORE_RECEIPT) {
		/* a receipt kept in the mailbox by an older version of this node */
		f.type = DIST_RECEIPT;
		f.receipt.kind = m->rkind;
		f.receipt.flags = DIST_RCPT_NOTIFY;
		f.receipt.from = m->from;
		f.receipt.to = user;
		f.receipt.smid = m->ref;
	} else {
		f.type = DIST_ROUTE;
		f.route.smid = m->smid;
		f.route.from = m->from;
		f.route.to = user;
		f.route.group = m->group;
		f.route.time_ms = m->time_ms;
		f.route.cmid = m->ref;
		f.route.body = (struct proto_bytes){m->body, m->len};
	}
	return link_add(l, &f);
}

/* The receipt "peer received (kind) owner's message smid": NOTIFY to owner's
 * gateway, or RELAY to a gateway to pass on to owner's owner thread. */
static int send_receipt(struct link *l, uint8_t flags, uint64_t owner, uint64_t peer, uint8_t kind, uint64_t smid)
{
	struct dist_frame f = {.type = DIST_RECEIPT};
	f.receipt.kind = kind;
	f.receipt.flags = flags;
	f.receipt.from = peer;
	f.receipt.to = owner;
	f.receipt.smid = smid;
	return link_add(l, &f);
}

/* ---- budgets ------------------------------------------------------------------------
 * A token bucket per sender of mailbox writes (a message to one user costs 1,
 * to a group of N members N, a group operation 1 + its member count): the
 * rate is --fanout-rate per second, the burst twice that or twice
 * --max-group, whichever is more (so one full group message always fits).
 * The state is tokens << 32 | the wall clock in ms (mod 2^32) of the last
 * refill; a full bucket is the same as none, so idle senders are swept. */

static uint32_t budget_burst(const struct be *b)
{
	uint64_t burst = (uint64_t)b->cfg.fanout_rate * 2, g = (uint64_t)b->cfg.max_group * 2;
	if (g > burst)
		burst = g;
	return burst > UINT32_MAX ? UINT32_MAX : (uint32_t)burst;
}

static uint32_t budget_tokens(const struct be *b, uint64_t v, uint32_t now)
{
	uint64_t tokens = v >> 32, dt = (uint32_t)(now - (uint32_t)v);
	tokens += dt * (uint64_t)b->cfg.fanout_rate / 1000;
	uint32_t burst = budget_burst(b);
	return tokens > burst ? burst : (uint32_t)tokens;
}

/* Take n tokens from the sender's bucket; 0 when there are not enough (none taken). */
static int budget_take(struct be *b, uint64_t sender, uint64_t n)
{
	uint32_t now = (uint32_t)b->wall_ms, burst = budget_burst(b);
	uint64_t *v = u64map_get(&b->budget, sender);
	uint32_t have = v ? budget_tokens(b, *v, now) : burst;
	if (n > have)
		return 0;
	uint64_t nv = ((uint64_t)(have - n) << 32) | now;
	if (v) {
		*v = nv;
		return 1;
	}
	if (b->budget.count >= BE_BUDGET_MAX) {
		/* sweep the senders whose bucket is full again */
		size_t pos = 0, k = 0;
		const struct u64map_ent *e;
		uint64_t *idle = malloc(b->budget.count * sizeof *idle);
		while (idle && (e = u64map_next(&b->budget, &pos)))
			if (budget_tokens(b, e->val, now) >= burst)
				idle[k++] = e->key;
		for (size_t i = 0; i < k; i++)
			u64map_del(&b->budget, idle[i]);
		free(idle);
	}
	if (u64map_put(&b->budget, sender, nv) != 0)
		log_rl(LOG_ERROR, "out of memory tracking sender budgets");
	return 1;
}

/* ---- requests ------------------------------------------------------------------------ */

/* Begin a store request (see store.h); returns 0 or the proto_err answer. */
static unsigned req_begin(struct be *b, enum store_req kind, size_t writes, size_t bytes)
{
	if (txn(b) != 0)
		return PROTO_E_TRY_AGAIN;
	int r = store_req_begin(b->store, kind, writes, bytes);
	if (r == 0)
		return 0;
	if (r == -ENOSPC) {
		CNT_ADD(b, store_full, 1);
		log_rl(LOG_WARN, "store: %s refused: the store is nearly full", kind == STORE_REQ_ADMIT ? "a write" : "a delete");
		return PROTO_E_STORE_FULL;
	}
	CNT_ADD(b, store_errors, 1);
	log_rl(LOG_ERROR, "store: a request could not start: %s", strerror(-r));
	return PROTO_E_TRY_AGAIN;
}

/* End it: keep its writes when ok. A failure undone here fails this request
 * only; one that could not be undone fails the iteration (see commit()). */
static void req_end(struct be *b, int ok)
{
	if (!ok)
		CNT_ADD(b, requests_failed, 1);
	store_req_end(b->store, ok);
}

/* The answer for a store result r (0, STORE_E_*, -errno). */
static unsigned store_answer(struct be *b, int r, const char *what)
{
	if (r == 0)
		return 0;
	if (r == STORE_E_FULL) {
		CNT_ADD(b, mailbox_full, 1);
		return PROTO_E_MAILBOX_FULL;
	}
	if (r == -ENOSPC) {
		CNT_ADD(b, store_full, 1);
		log_rl(LOG_WARN, "store: cannot store %s: the store is full", what);
		return PROTO_E_STORE_FULL;
	}
	CNT_ADD(b, store_errors, 1);
	log_rl(LOG_ERROR, "store: cannot store %s: %s", what, r < 0 ? strerror(-r) : "refused");
	return PROTO_E_TRY_AGAIN;
}

/* ---- login: stored messages, in order, then stored receipts ------------------------ */

struct flush_ctx {
	struct be *b;
	struct link *l;
	struct be_backlog *e;
	uint64_t user, last;
	size_t sent, receipts_done;
	uint64_t receipts[BE_FLUSH_PER_USER];
	int full, acks;
	struct store_rcpt gone[BE_FLUSH_PER_USER]; /* receipts sent to a client that does not ack them */
	size_t ngone;
};

/* Whether the user's window has room for one more stored message of len
 * bytes (one always fits an empty window). */
static int window_room(const struct be *b, const struct be_backlog *e, uint32_t len)
{
	return e->inflight == 0 ||
	       (e->inflight < BE_WINDOW_MSGS && e->inflight_bytes + len <= (uint64_t)b->cfg.login_window);
}

static int flush_one(void *arg, const struct store_msg *m)
{
	struct flush_ctx *x = arg;
	int counted = m->kind == STORE_MSG;
	if ((counted && !window_room(x->b, x->e, m->len)) || !link_has_room(x->l, (size_t)m->len + 128) ||
	    send_item(x->l, x->user, m) != 0) {
		x->full = 1;
		return 1;
	}
	if (counted) {
		x->e->inflight++;
		x->e->inflight_bytes += m->len;
		x->e->progress_ns = x->b->now_ns;
	}
	x->last = m->smid;
	x->sent++;
	if (m->kind == STORE_RECEIPT && x->receipts_done < BE_FLUSH_PER_USER)
		x->receipts[x->receipts_done++] = m->smid; /* an old-style receipt: done once sent */
	return 0;
}

static int flush_rcpt(void *arg, const struct store_rcpt *r)
{
	struct flush_ctx *x = arg;
	if (!link_has_room(x->l, 64) || send_receipt(x->l, DIST_RCPT_NOTIFY, x->user, r->peer, r->kind, r->smid) != 0) {
		x->full = 1;
		return 1;
	}
	x->sent++;
	if (!x->acks && x->ngone < BE_FLUSH_PER_USER)
		x->gone[x->ngone++] = *r; /* a protocol 1 client: sent once, as it always was */
	return 0;
}

/* Delete what was sent of user's mailbox (receipts kept there by an older
 * version: done once sent) / user's stored receipts, in a request of their
 * own; returns 0 when it could not start (nothing deleted). */
static int drop_entries(struct be *b, uint64_t user, const uint64_t *smids, size_t n)
{
	if (!n || req_begin(b, STORE_REQ_DRAIN, 2 * n, 0) != 0)
		return 0;
	int ok = 1;
	for (size_t i = 0; i < n && ok; i++)
		ok = store_ack(b->store, user, smids[i], NULL, NULL) >= 0;
	req_end(b, ok);
	return 1;
}

static int drop_receipts(struct be *b, uint64_t user, const struct store_rcpt *r, size_t n)
{
	if (!n || req_begin(b, STORE_REQ_DRAIN, 2 * n, 0) != 0)
		return 0;
	int ok = 1;
	for (size_t i = 0; i < n && ok; i++)
		ok = store_rcpt_del(b->store, user, r[i].peer, r[i].smid) >= 0;
	req_end(b, ok);
	return 1;
}

/* Send up to BE_FLUSH_PER_USER stored items of e; returns 1 when more remain
 * (or the link had no room), 0 when everything is sent. */
static int flush_user(struct be *b, struct be_backlog *e)
{
	uint64_t conn;
	int acks = 0;
	struct link *l = user_link_acks(b, e->user, &conn, &acks);
	if (!l || txn(b) != 0)
		return 0;
	struct flush_ctx x = {.b = b, .l = l, .e = e, .user = e->user, .last = e->after, .acks = acks};
	if (!e->receipts) {
		/* paced by what the client has taken: a window of unacknowledged
		 * stored messages (a client that reads reaches its next receipt long
		 * before the gateway's --max-queue); one that sends no receipt for
		 * --login-stall (30 s) gets the window again rather than waiting for ever */
		if (e->inflight && b->now_ns - e->progress_ns > (uint64_t)b->cfg.login_stall_ms * 1000000) {
			e->inflight = 0;
			e->inflight_bytes = 0;
			e->stall_after = e->after; /* late receipts for those do not open the new window */
		}
		if (!window_room(b, e, 0))
			return 1;
		long n = store_scan(b->store, e->user, e->after, BE_FLUSH_PER_USER, flush_one, &x);
		drop_entries(b, e->user, x.receipts, x.receipts_done);
		CNT_ADD(b, delivered_login, x.sent - x.receipts_done);
		e->after = x.last;
		if (x.full || n == (long)BE_FLUSH_PER_USER)
			return 1;
		e->receipts = 1;
		x.sent = 0;
	}
	long n = store_rcpt_scan(b->store, e->user, &e->rpos, BE_FLUSH_PER_USER, flush_rcpt, &x);
	drop_receipts(b, e->user, x.gone, x.ngone);
	CNT_ADD(b, receipts_forwarded, x.sent);
	return x.full || n == (long)BE_FLUSH_PER_USER;
}

/* A message sent to a logging-in user at once, below where its login scan
 * is (a copy another node thread handed over with an older smid): it is in
 * the window as the scan's sends are, since its receipt counts out of it. */
static void window_sent(struct be *b, uint64_t user, uint64_t smid, uint32_t len)
{
	uint64_t *at = u64map_get(&b->backlog_of, user);
	if (!at)
		return;
	struct be_backlog *e = &b->backlog[*at];
	if (e->receipts || smid > e->after || smid <= e->stall_after)
		return;
	e->inflight++;
	e->inflight_bytes += len;
	e->progress_ns = b->now_ns;
}

/* A delivered receipt for a message sent at the reader's login: its window
 * moves on. */
static void window_acked(struct be *b, uint64_t user, uint64_t smid, uint32_t len)
{
	uint64_t *at = u64map_get(&b->backlog_of, user);
	if (!at)
		return;
	struct be_backlog *e = &b->backlog[*at];
	if (smid > e->after || smid <= e->stall_after || e->receipts || !e->inflight)
		return; /* not one of this window's sends */
	e->inflight--;
	e->inflight_bytes = e->inflight_bytes > len ? e->inflight_bytes - len : 0;
	e->progress_ns = b->now_ns;
}

/* Whether user's login is still sending its stored messages and has not
 * passed smid yet: a new message waits in the mailbox for that scan (which
 * reaches it, in order) rather than going out at once, ahead of older ones
 * and a second time when the scan comes to it before its delivered receipt
 * is in. (A copy handed over by another node thread can have an smid the
 * scan has passed: that one goes out at once.) */
static int backlog_waits(const struct be *b, uint64_t user, uint64_t smid)
{
	uint64_t *at = u64map_get(&b->backlog_of, user);
	return at && !b->backlog[*at].receipts && smid > b->backlog[*at].after;
}

/* A (new) login of user: its stored items from the start, one backlog entry
 * per user however many logins come. */
static void backlog_start(struct be *b, uint64_t user)
{
	struct be_backlog fresh = {.user = user, .progress_ns = b->now_ns};
	uint64_t *at = u64map_get(&b->backlog_of, user);
	if (at) {
		b->backlog[*at] = fresh; /* a newer session: everything again, from the start */
		return;
	}
	if (!flush_user(b, &fresh))
		return;
	if (b->nbacklog == b->backlog_cap) {
		size_t cap = b->backlog_cap ? b->backlog_cap * 2 : 256;
		struct be_backlog *v = realloc(b->backlog, cap * sizeof *v);
		if (!v)
			return; /* the rest is delivered at the next login */
		b->backlog = v;
		b->backlog_cap = cap;
	}
	if (u64map_put(&b->backlog_of, user, b->nbacklog) != 0)
		return;
	b->backlog[b->nbacklog++] = fresh;
}

/* One step of each of the n users in v (indexed by `of`): step returns 1
 * to keep a user, 0 when it is done. Returns how many are kept. */
static size_t run_users(struct be *b, struct be_backlog *v, size_t n, struct u64map *of,
			int (*step)(struct be *, struct be_backlog *))
{
	size_t keep = 0;
	for (size_t i = 0; i < n; i++) {
		struct be_backlog e = v[i];
		if (step(b, &e)) {
			v[keep] = e;
			if (keep != i)
				u64map_put(of, e.user, keep); /* replaces: cannot fail */
			keep++;
		} else {
			u64map_del(of, e.user);
		}
	}
	return keep;
}

static void run_backlog(struct be *b)
{
	b->nbacklog = run_users(b, b->backlog, b->nbacklog, &b->backlog_of, flush_user);
	CNT_SET(b, backlog, b->nbacklog);
}

/* ---- handoff: what is stored here for users owned elsewhere ------------------------
 * A node thread knows the sessions of the users it owns only (a gateway
 * announces a session to the user's owner), so whatever it stores for a user
 * it does not own (a group message for members owned elsewhere; what it
 * stored as a user's owner before the cluster file moved the user) it hands
 * to the owner: each mailbox entry, oldest first, goes as a HANDOFF through a
 * gateway thread to the owner, which stores its copy (same smid), delivers
 * it as its own, and answers HANDOFF_ACK once that is committed; only then
 * is the entry deleted here. The mailbox is the outbox: a restart of either
 * side loses nothing (at start a thread hands off every such entry its store
 * holds, and after a failed commit it hands off again what the store
 * holds), and handoffs whose acks do not come (a lost link, a full queue
 * at a gateway, a refusing store) go again: at once when their link is
 * lost, within a second when the ack of a later one shows an earlier one
 * lost (on_handoff_ack), else after --login-stall through the next
 * gateway. The owner keeps a copy it has already, so a repeat stores
 * nothing twice. The window (BE_WINDOW_MSGS not yet acknowledged) paces it
 * like a login. Stored receipts for such a user are relayed to its owner
 * and deleted here. */

static int owned(const struct be *b, uint64_t user)
{
	return cluster_user_link(b->cluster, user) == b->link_self;
}

static void handoff_start(struct be *b, uint64_t user)
{
	uint64_t *at = u64map_get(&b->hand_of, user);
	if (at) {
		b->hand[*at].more = 1; /* on its way: the scan reaches what is new */
		return;
	}
	if (b->nhand == b->hand_cap) {
		size_t cap = b->hand_cap ? b->hand_cap * 2 : 256;
		struct be_backlog *v = realloc(b->hand, cap * sizeof *v);
		if (!v) {
			log_rl(LOG_ERROR, "out of memory: entries for user %llu wait here until the next start",
			       (unsigned long long)user);
			return;
		}
		b->hand = v;
		b->hand_cap = cap;
	}
	if (u64map_put(&b->hand_of, user, b->nhand) != 0) {
		log_rl(LOG_ERROR, "out of memory: entries for user %llu wait here until the next start",
		       (unsigned long long)user);
		return;
	}
	b->hand[b->nhand++] = (struct be_backlog){.user = user, .progress_ns = b->now_ns, .link = UINT32_MAX, .more = 1};
	CNT_SET(b, handoff_users, b->nhand);
}

/* Everything a user's handoffs have sent goes again. */
static void handoff_rewind(struct be *b, struct be_backlog *e)
{
	e->after = 0;
	e->inflight = 0;
	e->more = 1;
	e->progress_ns = b->now_ns;
}

/* Hand off whatever the store holds for users this thread does not own
 * (at start, and after a failed commit, which may have put back entries
 * whose acks came, or users done meanwhile); `again`: what is on its way
 * goes again. Returns how many users that is. */
static size_t handoff_scan(struct be *b, int again)
{
	if (again)
		for (size_t i = 0; i < b->nhand; i++)
			handoff_rewind(b, &b->hand[i]);
	size_t n = store_users(b->store, NULL, 0), held = 0;
	uint64_t *users = n ? malloc(n * sizeof *users) : NULL;
	if (n && !users) {
		log_rl(LOG_ERROR, "out of memory: what this thread holds for other threads' users waits");
		return 0;
	}
	n = users ? store_users(b->store, users, n) : 0;
	for (size_t i = 0; i < n; i++)
		if (!owned(b, users[i])) {
			handoff_start(b, users[i]);
			held++;
		}
	free(users);
	return held;
}

/* The gateway link a user's handoffs go out on: the one they went on while
 * it stays up, else any that is up (users spread over them); `next` (no
 * ack came): the next one up after it, in case that gateway cannot reach
 * the owner. */
static struct link *handoff_link(struct be *b, struct be_backlog *e, int next)
{
	if (!next && e->link < b->nlinks && b->links[e->link].state == LINK_UP)
		return &b->links[e->link];
	uint64_t from = next && e->link < b->nlinks ? (uint64_t)e->link + 1 : e->user;
	for (uint32_t k = 0; k < b->nlinks; k++) {
		uint32_t i = (uint32_t)((from + k) % b->nlinks);
		if (b->links[i].state == LINK_UP) {
			e->link = i;
			return &b->links[i];
		}
	}
	return NULL;
}

struct hand_ctx {
	struct be *b;
	struct link *l;
	struct be_backlog *e;
	uint64_t last;
	int stopped; /* by the window or the link: more may wait */
	size_t sent, nold;
	uint64_t old[BE_FLUSH_PER_USER]; /* receipts kept in the mailbox by an older version: relayed */
};

static int hand_one(void *arg, const struct store_msg *m)
{
	struct hand_ctx *x = arg;
	if (m->kind == STORE_RECEIPT) {
		if (x->nold == BE_FLUSH_PER_USER || !link_has_room(x->l, 64) ||
		    send_receipt(x->l, DIST_RCPT_RELAY, x->e->user, m->from, m->rkind, m->ref) != 0)
			return x->stopped = 1;
		x->old[x->nold++] = m->smid;
		x->last = m->smid;
		return 0;
	}
	if (x->e->inflight >= BE_WINDOW_MSGS || !link_has_room(x->l, (size_t)m->len + 128))
		return x->stopped = 1;
	struct dist_frame f;
	memset(&f, 0, sizeof f);
	f.type = DIST_HANDOFF;
	f.route.smid = m->smid;
	f.route.from = m->from;
	f.route.to = x->e->user;
	f.route.group = m->group;
	f.route.time_ms = m->time_ms;
	f.route.onode = (uint32_t)x->b->cfg.node; /* the gateway puts the link's own in */
	f.route.othread = x->b->thread;
	f.route.cmid = m->ref;
	f.route.body = (struct proto_bytes){m->body, m->len};
	if (link_add(x->l, &f) != 0)
		return x->stopped = 1;
	x->e->inflight++;
	x->e->progress_ns = x->b->now_ns;
	x->last = m->smid;
	x->sent++;
	return 0;
}

struct relay_ctx {
	struct link *l;
	uint64_t user;
	size_t n;
	struct store_rcpt done[BE_FLUSH_PER_USER];
};

static int relay_one(void *arg, const struct store_rcpt *r)
{
	struct relay_ctx *x = arg;
	if (!link_has_room(x->l, 64) || send_receipt(x->l, DIST_RCPT_RELAY, x->user, r->peer, r->kind, r->smid) != 0)
		return 1;
	x->done[x->n++] = *r;
	return 0;
}

/* Hand on what the user has here, as far as its window and the link allow;
 * returns 0 when nothing is left here (the entry is done), else 1. */
static int handoff_user(struct be *b, struct be_backlog *e)
{
	uint32_t count = store_count(b->store, e->user), rcpts = store_rcpt_count(b->store, e->user);
	if (!count && !rcpts)
		return 0;
	int stalled = e->link != UINT32_MAX && (e->inflight || e->after) &&
		      b->now_ns - e->progress_ns > (uint64_t)b->cfg.login_stall_ms * 1000000;
	uint32_t was = e->link;
	struct link *l = handoff_link(b, e, stalled);
	if (!l)
		return 1; /* no gateway linked: later */
	if (was != e->link || stalled) {
		handoff_rewind(b, e); /* another link (what went on the old one may be lost), or no ack for a while */
	} else if (e->lost && b->now_ns - e->rewound_ns > BE_REWIND_NS) {
		handoff_rewind(b, e); /* an ack after a lost one (on_handoff_ack) */
		e->lost = 0;
		e->rewound_ns = b->now_ns;
	}
	int scan = count && e->more && e->inflight < BE_WINDOW_MSGS;
	if (!scan && !rcpts)
		return 1; /* all sent: waiting for acks (no store work each iteration) */
	if (txn(b) != 0)
		return 1;
	if (scan) {
		struct hand_ctx x = {.b = b, .l = l, .e = e, .last = e->after};
		long n = store_scan(b->store, e->user, e->after, BE_FLUSH_PER_USER, hand_one, &x);
		if (n < 0)
			return 1;
		if (!x.stopped && n < (long)BE_FLUSH_PER_USER)
			e->more = 0; /* the end: what is stored later sets it again (handoff_start) */
		e->after = x.last;
		CNT_ADD(b, handoffs_sent, x.sent);
		drop_entries(b, e->user, x.old, x.nold);
		CNT_ADD(b, receipts_relayed, x.nold);
	}
	if (rcpts) {
		/* notifications: relayed once, as a gateway would forward them */
		struct relay_ctx *x = malloc(sizeof *x);
		struct store_rcpt_pos pos = {0};
		if (!x)
			return 1;
		x->l = l;
		x->user = e->user;
		x->n = 0;
		if (store_rcpt_scan(b->store, e->user, &pos, BE_FLUSH_PER_USER, relay_one, x) >= 0 &&
		    drop_receipts(b, e->user, x->done, x->n))
			CNT_ADD(b, receipts_relayed, x->n);
		free(x);
	}
	return 1;
}

static void run_handoff(struct be *b)
{
	b->nhand = run_users(b, b->hand, b->nhand, &b->hand_of, handoff_user);
	CNT_SET(b, handoff_users, b->nhand);
}

static int first_smid(void *arg, const struct store_msg *m)
{
	*(uint64_t *)arg = m->smid;
	return 1;
}

/* The owner's answer: its copy is stored; ours goes. Only for a user whose
 * entries are being handed off from here (so no gateway can delete what
 * this thread holds for its own users). */
static void on_handoff_ack(struct be *b, const struct dist_frame *f)
{
	uint64_t user = f->handoff_ack.user;
	uint64_t *at = u64map_get(&b->hand_of, user);
	if (f->handoff_ack.node != (uint32_t)b->cfg.node || f->handoff_ack.thread != b->thread || !at) {
		log_rl(LOG_WARN, "a handoff ack for node %u thread %u, user %llu, that this thread did not hand off",
		       f->handoff_ack.node, f->handoff_ack.thread, (unsigned long long)user);
		return;
	}
	if (txn(b) != 0 || req_begin(b, STORE_REQ_DRAIN, 3, 0) != 0)
		return; /* it goes again after the stall, and is acked again */
	int r = store_ack(b->store, user, f->handoff_ack.smid, NULL, NULL);
	req_end(b, r >= 0);
	if (r != 0)
		return; /* a repeat */
	CNT_ADD(b, handoffs_acked, 1);
	struct be_backlog *e = &b->hand[*at];
	if (e->inflight)
		e->inflight--;
	e->progress_ns = b->now_ns;
	/* A user's handoffs go in smid order on one link, and the path back
	 * through the gateway keeps that order: an older entry still here,
	 * sent already, was lost on the way (a full queue, a lost link, a
	 * store that refused it). Everything goes again (at most once a
	 * second: BE_REWIND_NS), rather than only when the user's handoffs
	 * are quiet for --login-stall. */
	uint64_t oldest = 0;
	if (store_scan(b->store, user, 0, 1, first_smid, &oldest) == 1 && oldest < f->handoff_ack.smid &&
	    oldest <= e->after)
		e->lost = 1; /* handoff_user sends all again */
}

/* ---- frames from gateways ---------------------------------------------------------- */

static void on_session_up(struct be *b, struct link *l, const struct dist_frame *f)
{
	uint64_t user = f->session.user;
	uint64_t *old = u64map_get(&b->dir, user);
	if (old) {
		struct link *ol = &b->links[dir_link(*old)];
		/* a login on another gateway node replaces this one: the user's owner
		 * tells the old gateway (the same node kicks by itself) */
		if (ol->peer_node != l->peer_node && cluster_user_link(b->cluster, user) == b->link_self &&
		    ol->state == LINK_UP) {
			struct dist_frame k = {.type = DIST_KICK};
			k.kick.user = user;
			k.kick.thread = ol->peer_thread;
			k.kick.conn = dir_conn(*old);
			k.kick.reason = PROTO_KICK_ELSEWHERE;
			reply(ol, &k);
			CNT_ADD(b, kicks, 1);
		}
	}
	uint64_t val = dir_val(l->idx, f->session.conn, f->session.flags & DIST_SESS_RCPT_ACKS);
	if (old && *old == val) {
		/* the same session announced again (a gateway's resync): its
		 * stored messages are on their way already; starting over would
		 * send the window twice */
		CNT_ADD(b, sessions_up, 1);
		return;
	}
	uint32_t was = old ? dir_link(*old) : UINT32_MAX;
	if (u64map_put(&b->dir, user, val) != 0) {
		log_rl(LOG_ERROR, "out of memory in the session directory");
		return;
	}
	if (was == UINT32_MAX)
		CNT_SET(b, sessions, b->cnt.sessions + 1);
	else if (b->link_sessions[was])
		b->link_sessions[was]--;
	b->link_sessions[l->idx]++;
	CNT_ADD(b, sessions_up, 1);
	/* Everything not yet acknowledged by a delivered receipt goes out again, in
	 * order. The login's resume id is not used to drop anything: ids from
	 * different backends are not ordered against each other, so "below the
	 * highest id seen" does not mean "seen". Clients drop duplicates by smid. */
	backlog_start(b, user);
}

static void on_session_down(struct be *b, struct link *l, const struct dist_frame *f)
{
	uint64_t *v = u64map_get(&b->dir, f->session.user);
	if (v && dir_link(*v) == l->idx && dir_conn(*v) == (f->session.conn & CONNREF_MASK)) {
		u64map_del(&b->dir, f->session.user);
		CNT_SET(b, sessions, b->cnt.sessions - 1);
		if (b->link_sessions[l->idx])
			b->link_sessions[l->idx]--;
	}
	CNT_ADD(b, sessions_down, 1);
}

/* A copy of a message another node thread stored for `to`, a user of ours:
 * stored here under the same smid (or found here already), delivered like
 * our own, and acknowledged to the holder once committed. */
static void on_handoff(struct be *b, struct link *l, const struct dist_frame *f)
{
	CNT_ADD(b, handoffs_in, 1);
	uint32_t hnode = f->route.onode, hthread = f->route.othread;
	int hi = cluster_find(b->cluster, hnode);
	if (hi < 0 || hthread >= b->cluster->nodes[hi].threads ||
	    (hnode == (uint32_t)b->cfg.node && hthread == b->thread)) {
		/* acknowledging our own would delete the only copy */
		log_rl(LOG_WARN, "link %s: a handoff from node %u thread %u, which is no other backend thread", l->name,
		       hnode, hthread);
		return;
	}
	struct store_msg m = {0};
	m.smid = f->route.smid;
	m.from = f->route.from;
	m.to = f->route.to;
	m.group = f->route.group;
	m.time_ms = f->route.time_ms;
	m.kind = STORE_MSG;
	m.ref = f->route.cmid;
	m.body = f->route.body.p;
	m.len = f->route.body.len;
	if (req_begin(b, STORE_REQ_ADMIT, 4, (size_t)m.len + 64) != 0)
		return; /* no ack: the holder keeps it and sends it again */
	int r = store_put_copy(b->store, &m, m.to, (uint32_t)b->cfg.mailbox_max);
	req_end(b, r == 0 || r == STORE_E_EXISTS || r == STORE_E_FULL); /* the last two wrote nothing */
	if (r == STORE_E_FULL) {
		CNT_ADD(b, mailbox_full, 1);
		if (!m.group)
			return; /* a 1:1 message its sender was told is stored: the holder keeps it, and sends it again */
		/* a group's: dropped, as a full member's mailbox is skipped at a group send */
	} else if (r != 0 && r != STORE_E_EXISTS) {
		store_answer(b, r, "a handed-off message");
		return;
	}
	if (r == 0) {
		CNT_ADD(b, handoffs_stored, 1);
		if (!owned(b, m.to))
			handoff_start(b, m.to); /* the gateway thinks so, we do not: on it goes */
		struct link *dl = user_link(b, m.to, NULL);
		if (dl && !backlog_waits(b, m.to, m.smid) && send_item(dl, m.to, &m) == 0) {
			window_sent(b, m.to, m.smid, m.len);
			CNT_ADD(b, delivered_online, 1);
			if (m.group)
				CNT_ADD(b, group_fanout, 1);
		}
	}
	struct dist_frame a = {.type = DIST_HANDOFF_ACK};
	a.handoff_ack.node = hnode;
	a.handoff_ack.thread = hthread;
	a.handoff_ack.user = m.to;
	a.handoff_ack.smid = m.smid;
	reply(l, &a);
}

static void on_route(struct be *b, struct link *l, const struct dist_frame *f)
{
	CNT_ADD(b, routed_in, 1);
	if (txn(b) != 0) {
		answer_route(l, f, 0, PROTO_E_TRY_AGAIN);
		return;
	}
	/* A resend is the same sender, cmid and recipient: the recipient is part of
	 * the key, so a cmid reused for another recipient is a new message. */
	uint64_t smid = 0, dkey = f->route.cmid ^ hash64(f->route.group ? f->route.group * 2 + 1 : f->route.to * 2);
	if (f->route.cmid && store_dedup_get(b->store, f->route.from, dkey, &smid) == 0 && smid) {
		CNT_ADD(b, dedup_hits, 1); /* a resend: the first copy is stored (and routed) already */
		answer_route(l, f, smid, 0);
		return;
	}
	struct store_msg m = {0};
	m.smid = msgid_next(&b->ids, b->wall_ms);
	if (!b->txn_smid0)
		b->txn_smid0 = m.smid;
	m.from = f->route.from;
	m.to = f->route.to;
	m.group = f->route.group;
	m.time_ms = f->route.time_ms ? f->route.time_ms : b->wall_ms;
	m.kind = STORE_MSG;
	m.ref = f->route.cmid; /* delivered with the message, so receivers can drop a resend */
	m.body = f->route.body.p;
	m.len = f->route.body.len;
	const uint64_t *rcpt = &m.to;
	size_t n = 1;
	uint64_t *members_copy = NULL;
	if (f->route.group) {
		uint64_t owner;
		const uint64_t *members;
		size_t nm;
		if (store_group_get(b->store, f->route.group, &owner, &members, &nm) != 0) {
			answer_route(l, f, 0, PROTO_E_NO_SUCH_GROUP);
			return;
		}
		members_copy = malloc((nm ? nm : 1) * sizeof *members_copy);
		if (!members_copy) {
			answer_route(l, f, 0, PROTO_E_TRY_AGAIN);
			return;
		}
		int member = 0;
		n = 0;
		for (size_t i = 0; i < nm; i++) {
			uint64_t u;
			memcpy(&u, members + i, sizeof u);
			if (u == m.from)
				member = 1;
			else
				members_copy[n++] = u;
		}
		if (!member) {
			free(members_copy);
			answer_route(l, f, 0, PROTO_E_NOT_MEMBER);
			return;
		}
		rcpt = members_copy;
		m.to = 0;
	}
	/* the sender's budgets: writes per second, and undelivered entries held here */
	unsigned st = 0;
	if (n && !budget_take(b, m.from, n)) {
		CNT_ADD(b, fanout_limited, 1);
		st = PROTO_E_SLOW_DOWN;
	} else if (n && (uint64_t)store_sender_count(b->store, m.from) + n > (uint64_t)b->cfg.sender_max) {
		CNT_ADD(b, sender_limited, 1);
		st = PROTO_E_SLOW_DOWN;
	}
	if (!st)
		st = req_begin(b, STORE_REQ_ADMIT, n + 3, (size_t)m.len + 64);
	if (st) {
		free(members_copy);
		answer_route(l, f, 0, st);
		return;
	}
	size_t added = 0;
	int r = n ? store_put(b->store, &m, rcpt, n, (uint32_t)b->cfg.mailbox_max, &added) : 0;
	if (r == 0 && n > 0 && added == 0)
		r = STORE_E_FULL; /* every member's mailbox is full: stored nowhere */
	if (r == 0 && f->route.cmid)
		r = store_dedup_put(b->store, m.from, dkey, m.smid);
	req_end(b, r == 0);
	if (r != 0) {
		answer_route(l, f, 0, store_answer(b, r, "a message"));
		free(members_copy);
		return;
	}
	CNT_ADD(b, stored, 1);
	if (f->route.group)
		CNT_ADD(b, group_msgs, 1);
	answer_route(l, f, m.smid, 0);
	for (size_t i = 0; i < n; i++) {
		struct link *dl = user_link(b, rcpt[i], NULL);
		if (!owned(b, rcpt[i]))
			handoff_start(b, rcpt[i]); /* its owner delivers it */
		/* (a session here of a user owned elsewhere: a gateway whose
		 * cluster file says otherwise, which will not pass the handoff on
		 * either; it gets it from here) */
		if (!dl || backlog_waits(b, rcpt[i], m.smid))
			continue;
		m.to = rcpt[i];
		if (send_item(dl, rcpt[i], &m) == 0) {
			window_sent(b, rcpt[i], m.smid, m.len);
			CNT_ADD(b, delivered_online, 1);
			if (f->route.group)
				CNT_ADD(b, group_fanout, 1);
		}
	}
	free(members_copy);
}

/* Tell `owner` that `peer` received/read its message smid: to its gateway
 * when it is online (as an `accepted` message, it lives in the connection
 * from there), else kept for it, until its client acknowledges it (protocol
 * 2) or until it is sent at the next login (protocol 1). `forward` 0: keep
 * it only (a gateway found the owner gone just as this was forwarded). */
static void notify_receipt(struct be *b, uint64_t owner, uint64_t peer, uint8_t kind, uint64_t smid, int forward)
{
	struct link *dl = forward ? user_link(b, owner, NULL) : NULL;
	if (!dl) {
		if (req_begin(b, STORE_REQ_ADMIT, 3, 0) != 0)
			return; /* counted there */
		int dropped = 0;
		int r = store_rcpt_put(b->store, owner, peer, smid, kind, BE_RCPT_PER_PEER,
				       (uint32_t)b->cfg.receipt_max, &dropped);
		req_end(b, r == 0);
		if (r == STORE_E_FULL || dropped)
			CNT_ADD(b, receipts_dropped, 1);
		else if (r == 0)
			CNT_ADD(b, receipts_stored, 1);
		else
			store_answer(b, r, "a receipt");
		if (r == 0 && !owned(b, owner))
			handoff_start(b, owner); /* a gateway sent it to the wrong thread: on to the owner */
		if (r != 0 && !dl)
			return;
	}
	if (dl && send_receipt(dl, DIST_RCPT_NOTIFY, owner, peer, kind, smid) == 0)
		CNT_ADD(b, receipts_forwarded, 1);
}

static void on_receipt(struct be *b, struct link *l, const struct dist_frame *f)
{
	CNT_ADD(b, receipts_in, 1);
	if (f->receipt.flags & DIST_RCPT_RELAY) {
		log_rl(LOG_WARN, "link %s: a relay receipt, which only backends send", l->name);
		return;
	}
	if (txn(b) != 0)
		return;
	uint64_t reader = f->receipt.from, sender = f->receipt.to;
	int verified = 0;
	if ((f->receipt.flags & DIST_RCPT_DELETE) && f->receipt.kind == PROTO_RCPT_DELIVERED &&
	    req_begin(b, STORE_REQ_DRAIN, 3, 0) == 0) {
		uint64_t from = 0;
		uint32_t len = 0;
		int r = store_ack(b->store, reader, f->receipt.smid, &from, &len);
		req_end(b, r >= 0);
		if (r == 0) {
			CNT_ADD(b, receipts_deleted, 1);
			verified = from == sender; /* the reader had this message, from this sender */
			window_acked(b, reader, f->receipt.smid, len);
		}
	}
	if (f->receipt.flags & DIST_RCPT_STORE) {
		/* a gateway found `to` gone just as it forwarded this: keep it, do not
		 * forward again (that could bounce between the two forever) */
		notify_receipt(b, sender, reader, f->receipt.kind, f->receipt.smid, 0);
		return;
	}
	if (!(f->receipt.flags & DIST_RCPT_NOTIFY))
		return;
	if ((f->receipt.flags & DIST_RCPT_DELETE) && !verified) {
		/* sent here to be checked against the mailbox: no such delivery (a
		 * forged receipt, or a repeat of one already acted on) */
		CNT_ADD(b, receipts_unverified, 1);
		return;
	}
	if ((f->receipt.flags & DIST_RCPT_DELETE) && !owned(b, sender)) {
		/* checked: the sender's owner (which knows its session) tells it,
		 * by way of the reader's gateway */
		if (send_receipt(l, DIST_RCPT_RELAY, sender, reader, f->receipt.kind, f->receipt.smid) == 0)
			CNT_ADD(b, receipts_relayed, 1);
		else
			notify_receipt(b, sender, reader, f->receipt.kind, f->receipt.smid, 0); /* kept, and handed on */
		return;
	}
	notify_receipt(b, sender, reader, f->receipt.kind, f->receipt.smid, 1);
}

static void on_receipt_ack(struct be *b, const struct dist_frame *f)
{
	/* clients acknowledge every receipt, kept or forwarded: most find nothing */
	if (txn(b) != 0 || store_rcpt_count(b->store, f->receipt_ack.user) == 0)
		return;
	if (req_begin(b, STORE_REQ_DRAIN, 2, 0) != 0)
		return;
	int r = store_rcpt_del(b->store, f->receipt_ack.user, f->receipt_ack.peer, f->receipt_ack.smid);
	req_end(b, r >= 0);
	if (r == 0)
		CNT_ADD(b, receipts_acked, 1);
}

/* Group membership changes. Who may do what (PROTOCOL.md 3.2, GROUP): any
 * user creates a group (and owns it); only the owner adds members and removes
 * others; any member removes itself (remove of oneself, or leave), and an
 * owner who does hands the group to the first remaining member. Returns a
 * proto_err status. */
static unsigned group_op(struct be *b, const struct dist_frame *f, uint64_t *gid_out)
{
	const size_t max = (size_t)b->cfg.max_group;
	uint64_t gid = f->group_op.group, owner = 0, user = f->group_op.user;
	const uint64_t *cur = NULL;
	size_t ncur = 0;
	*gid_out = gid;
	if (f->group_op.op != PROTO_GROUP_CREATE && store_group_get(b->store, gid, &owner, &cur, &ncur) != 0)
		return PROTO_E_NO_SUCH_GROUP;
	if (!budget_take(b, user, 1 + (uint64_t)f->group_op.count)) {
		CNT_ADD(b, fanout_limited, 1);
		return PROTO_E_SLOW_DOWN;
	}
	uint64_t *v = malloc((ncur + f->group_op.count + 1) * sizeof *v);
	if (!v)
		return PROTO_E_TRY_AGAIN;
	size_t n = 0;
	int is_member = 0;
	for (size_t i = 0; i < ncur; i++) {
		uint64_t u;
		memcpy(&u, cur + i, sizeof u);
		v[n++] = u;
		if (u == user)
			is_member = 1;
	}
	unsigned st = 0;
	const uint8_t *pos = f->group_op.members.p;
	uint64_t u;
	switch (f->group_op.op) {
	case PROTO_GROUP_CREATE:
		v[n++] = user;
		owner = user;
		/* fall through: the listed members join */
		__attribute__((fallthrough));
	case PROTO_GROUP_ADD:
		if (f->group_op.op == PROTO_GROUP_ADD && !is_member) {
			st = PROTO_E_NOT_MEMBER;
			break;
		}
		if (f->group_op.op == PROTO_GROUP_ADD && user != owner) {
			st = PROTO_E_NOT_ALLOWED; /* only the owner adds */
			break;
		}
		while (proto_members_next(&f->group_op.members, &pos, &u)) {
			int dup = 0;
			for (size_t i = 0; i < n && !dup; i++)
				dup = v[i] == u;
			if (dup)
				continue;
			if (n >= max) {
				st = PROTO_E_GROUP_FULL;
				break;
			}
			v[n++] = u;
		}
		break;
	case PROTO_GROUP_REMOVE:
		if (!is_member) {
			st = PROTO_E_NOT_MEMBER;
			break;
		}
		while (proto_members_next(&f->group_op.members, &pos, &u)) {
			if (u != user && user != owner) {
				st = PROTO_E_NOT_ALLOWED; /* only the owner removes others */
				break;
			}
			for (size_t i = 0; i < n; i++)
				if (v[i] == u) {
					/* keep the order: the first member left inherits the group */
					memmove(v + i, v + i + 1, (n - i - 1) * sizeof *v);
					n--;
					break;
				}
		}
		break;
	case PROTO_GROUP_LEAVE:
		if (!is_member) {
			st = PROTO_E_NOT_MEMBER;
			break;
		}
		for (size_t i = 0; i < n; i++)
			if (v[i] == user) {
				memmove(v + i, v + i + 1, (n - i - 1) * sizeof *v);
				n--;
				break;
			}
		break;
	default:
		st = PROTO_E_BAD_FIELD;
	}
	/* an owner who is no longer a member hands the group on, to the member
	 * who joined first (members are kept in the order they joined) */
	int owner_left = 1;
	for (size_t i = 0; i < n && owner_left; i++)
		owner_left = v[i] != owner;
	if (owner_left && n)
		owner = v[0];
	if (st == 0) {
		int grows = f->group_op.op == PROTO_GROUP_CREATE || f->group_op.op == PROTO_GROUP_ADD;
		st = req_begin(b, grows ? STORE_REQ_ADMIT : STORE_REQ_DRAIN, 4, 16 + 8 * n);
		if (st == 0) {
			int r;
			if (f->group_op.op == PROTO_GROUP_CREATE) {
				r = store_group_next_id(b->store, (uint32_t)b->cfg.node, b->thread, b->threads, &gid);
				if (r == 0)
					r = store_group_create(b->store, gid, owner, v, n);
			} else if (n == 0) {
				r = store_group_delete(b->store, gid);
			} else {
				r = store_group_set(b->store, gid, owner, v, n);
			}
			req_end(b, r == 0);
			st = store_answer(b, r, "a group");
		}
	}
	free(v);
	*gid_out = gid;
	return st;
}

static void on_group_op(struct be *b, struct link *l, const struct dist_frame *f)
{
	CNT_ADD(b, group_ops, 1);
	uint64_t gid = 0;
	unsigned st = txn(b) == 0 ? group_op(b, f, &gid) : PROTO_E_TRY_AGAIN;
	struct dist_frame r = {.type = DIST_GROUP_RESULT};
	r.group_result.thread = f->group_op.thread;
	r.group_result.conn = f->group_op.conn;
	r.group_result.req = f->group_op.req;
	r.group_result.status = (uint8_t)st;
	r.group_result.group = st ? 0 : gid;
	reply(l, &r);
}

/* ---- link callbacks ----------------------------------------------------------------- */

static void on_frame(void *arg, struct link *l, const struct dist_frame *f)
{
	struct be *b = arg;
	switch (f->type) {
	case DIST_ROUTE:
		on_route(b, l, f);
		break;
	case DIST_SESSION_UP:
		on_session_up(b, l, f);
		break;
	case DIST_SESSION_DOWN:
		on_session_down(b, l, f);
		break;
	case DIST_RECEIPT:
		on_receipt(b, l, f);
		break;
	case DIST_HANDOFF:
		on_handoff(b, l, f);
		break;
	case DIST_HANDOFF_ACK:
		on_handoff_ack(b, f);
		break;
	case DIST_GROUP_OP:
		on_group_op(b, l, f);
		break;
	case DIST_RECEIPT_ACK:
		on_receipt_ack(b, f);
		break;
	default:
		log_rl(LOG_WARN, "link %s: unexpected %s frame", l->name, dist_type_name(f->type));
		break;
	}
}

/* A gateway must be listed in the cluster file (its key is checked by the
 * link itself). */
static const char *on_hello(void *arg, struct link *l, const struct dist_frame *hello)
{
	struct be *b = arg;
	static __thread char why[96];
	(void)l;
	if (!cluster_is_gateway(b->cluster, hello->hello.node)) {
		snprintf(why, sizeof why, "node %u is not a gateway in the cluster file", hello->hello.node);
		return why;
	}
	if (hello->hello.threads > MSGID_MAX_THREADS) {
		snprintf(why, sizeof why, "gateway %u says it runs %u threads (at most %u)", hello->hello.node,
			 hello->hello.threads, MSGID_MAX_THREADS);
		return why;
	}
	return NULL;
}

static void on_up(void *arg, struct link *l)
{
	struct be *b = arg;
	uint64_t key = (((uint64_t)l->peer_node << 16) | l->peer_thread) + 1;
	uint64_t *prev = u64map_get(&b->peers, key);
	if (prev && *prev != l->idx && b->links[*prev].state == LINK_UP)
		link_close(&b->links[*prev], &b->ring, "replaced by a new link from the same gateway thread", b->now_ns);
	u64map_put(&b->peers, key, l->idx);
	l->hold = 1; /* batches leave only once released after a commit */
	log_info("gateway %u thread %u linked (%s)", l->peer_node, l->peer_thread, l->name);
}

static void on_down(void *arg, struct link *l, const char *why)
{
	struct be *b = arg;
	(void)why;
	if (!l->authed)
		return; /* never up: no sessions, no peer entry (what an unauthenticated peer can make us do: nothing) */
	CNT_ADD(b, links_lost, 1);
	if (l->peer_node) {
		uint64_t key = (((uint64_t)l->peer_node << 16) | l->peer_thread) + 1;
		uint64_t *v = u64map_get(&b->peers, key);
		if (v && *v == l->idx)
			u64map_del(&b->peers, key);
	}
	/* handoffs that went on it go again, on another (or on this slot's next link) */
	for (size_t i = 0; i < b->nhand; i++)
		if (b->hand[i].link == l->idx)
			b->hand[i].link = UINT32_MAX;
	/* its sessions are gone: the gateway announces them again when it relinks */
	if (b->link_sessions[l->idx] == 0)
		return;
	size_t pos = 0, removed = 0;
	const struct u64map_ent *e;
	uint64_t *gone = NULL;
	size_t ngone = 0, cap = 0;
	while ((e = u64map_next(&b->dir, &pos))) {
		if (dir_link(e->val) != l->idx)
			continue;
		if (ngone == cap) {
			cap = cap ? cap * 2 : 1024;
			uint64_t *g = realloc(gone, cap * sizeof *g);
			if (!g)
				break;
			gone = g;
		}
		gone[ngone++] = e->key;
	}
	for (size_t i = 0; i < ngone; i++)
		removed += (size_t)u64map_del(&b->dir, gone[i]);
	free(gone);
	b->link_sessions[l->idx] = removed >= b->link_sessions[l->idx] ? 0 : b->link_sessions[l->idx] - (uint32_t)removed;
	CNT_SET(b, sessions, b->cnt.sessions - removed);
}

static const struct link_ops ops = {on_hello, on_frame, on_up, on_down};

/* ---- loop -------------------------------------------------------------------- */

static void arm_accept(struct be *b)
{
	struct io_uring_sqe *sqe = ring_sqe(&b->ring);
	io_uring_prep_multishot_accept(sqe, b->lfd, NULL, NULL, SOCK_CLOEXEC);
	sqe->user_data = ud_make(BU_ACCEPT, 0, 0);
	b->accepting = 1;
}

static void on_accept(struct be *b, const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		b->accepting = 0;
	if (cqe->res < 0) {
		if (cqe->res != -ECANCELED)
			log_rl(LOG_WARN, "accept: %s", strerror(-cqe->res));
		return;
	}
	be_attach(b, cqe->res);
}

void be_attach(struct be *b, int fd)
{
	if (b->draining) {
		close(fd);
		return;
	}
	uint32_t i, shaking = 0;
	struct link *oldest = NULL;
	for (i = 0; i < b->nlinks; i++) {
		struct link *p = &b->links[i];
		if (p->state != LINK_HELLO && p->state != LINK_AUTH)
			continue;
		shaking++;
		if (!oldest || p->since_ns < oldest->since_ns)
			oldest = p;
	}
	if (shaking >= BE_MAX_HANDSHAKES && oldest) {
		/* Unauthenticated connections cannot take every slot: the one that
		 * has waited longest gives way. A real gateway finishes its handshake
		 * in a round trip or two, so idle or slow sockets are what goes; to
		 * crowd one out, 64 new connections would have to come within its
		 * round trip. */
		CNT_ADD(b, links_busy, 1);
		log_rl(LOG_WARN, "%u links authenticating: closing the oldest for a new one", shaking);
		link_close(oldest, &b->ring, "too many handshakes at once: the oldest gives way", b->now_ns);
	}
	for (i = 0; i < b->nlinks; i++)
		if (b->links[i].state == LINK_IDLE && link_quiet(&b->links[i]))
			break;
	if (i == BE_MAX_LINKS) {
		log_rl(LOG_ERROR, "more than %u gateway links: refusing one", BE_MAX_LINKS);
		close(fd);
		return;
	}
	if (i == b->nlinks)
		b->nlinks++;
	struct link *l = &b->links[i];
	link_stats_retire(&b->retired, &l->st); /* published counters never go back */
	link_free(l);
	link_init(l, i, BU_LINK, &ops, b, &b->keys, DIST_ROLE_BACKEND, (uint32_t)b->cfg.node, b->thread, b->threads,
		  (size_t)b->cfg.link_batch, (size_t)b->cfg.link_queue, (int)b->cfg.link_sockbuf);
	l->expect_role = DIST_ROLE_GATEWAY;
	link_attach(l, &b->ring, fd, b->now_ns);
	CNT_ADD(b, links_accepted, 1);
}

static void publish(struct be *b)
{
	struct link_stats sum = b->retired; /* what reused link slots counted before */
	for (uint32_t i = 0; i < b->nlinks; i++) {
		struct link_stats one;
		link_stats_snapshot(&b->links[i], &one);
		link_stats_merge(&sum, &one);
	}
	link_stats_publish(&b->cnt.link, &sum);
	struct store_stats st;
	store_get_stats(b->store, &st);
	CNT_SET(b, store_messages, st.messages);
	CNT_SET(b, store_mailbox, st.mailbox_entries);
	CNT_SET(b, store_groups, st.groups);
	CNT_SET(b, store_receipts, st.receipts);
	CNT_SET(b, store_used_bytes, st.map_used_bytes);
	CNT_SET(b, store_dedup_records, st.dedup_entries);
	CNT_SET(b, store_dedup_index_bytes, st.dedup_index_bytes);
	CNT_SET(b, store_full_disk, st.refused_disk);
	CNT_SET(b, store_disk_free, st.disk_room_bytes);
	CNT_SET(b, store_disk_reserve, st.disk_reserve_bytes);
}

/* A frame built in an iteration whose commit failed (link_redo_held). */
struct undo {
	struct be *b;
	unsigned status; /* what the answers say instead */
	size_t answers, dropped;
};

static int undo_frame(void *arg, struct dist_frame *f)
{
	struct undo *u = arg;
	uint64_t smid0 = u->b->txn_smid0;
	switch (f->type) {
	case DIST_STORE_ACK:
		/* a resend recognised by its dedup record was stored before: true */
		if (f->store_ack.status == 0 && smid0 && f->store_ack.smid >= smid0) {
			f->store_ack.status = (uint8_t)u->status;
			f->store_ack.smid = 0;
			u->answers++;
		}
		return 1;
	case DIST_GROUP_RESULT:
		if (f->group_result.status == 0) {
			f->group_result.status = (uint8_t)u->status;
			f->group_result.group = 0;
			u->answers++;
		}
		return 1;
	case DIST_HANDOFF_ACK:
		u->dropped++; /* the copy is not stored: the holder sends it again */
		return 0;
	case DIST_HANDOFF:
	case DIST_ROUTE:
		if (smid0 && f->route.smid >= smid0) {
			u->dropped++; /* stored in this transaction: it is not */
			return 0;
		}
		return 1;
	default:
		return 1;
	}
}

static void commit(struct be *b)
{
	if (!b->in_txn)
		return;
	int counted = store_failed(b->store) != 0; /* a write failed, and was counted as it did */
	uint64_t t0 = clock_mono_ns();
	int r = store_commit(b->store);
	uint64_t dt = clock_mono_ns() - t0;
	b->in_txn = 0;
	CNT_ADD(b, commits, 1);
	CNT_ADD(b, commit_ns_total, dt);
	metrics_lat_add(&b->cnt.lat_commit, dt);
	if (dt > b->cnt.commit_ns_max)
		CNT_SET(b, commit_ns_max, dt);
	if (r != 0) {
		/* Nothing this iteration promised may leave as promised: its answers
		 * become errors, deliveries of what it stored are dropped, the rest
		 * (stored messages sent at login, receipts, kicks) leaves as built.
		 * The links stay up: the gateways did nothing wrong, and a relink
		 * would send every online user's mailbox again. */
		CNT_ADD(b, commits_failed, 1);
		if (!counted)
			CNT_ADD(b, store_errors, 1);
		if (r == -ENOSPC)
			CNT_ADD(b, commits_failed_disk, 1);
		store_abort(b->store);
#define BE_COMMITTED_RESTORE(f) CNT_SET(b, f, b->txn_base.f);
		BE_COMMITTED_COUNTERS(BE_COMMITTED_RESTORE)
		struct undo u = {.b = b, .status = r == -ENOSPC ? PROTO_E_STORE_FULL : PROTO_E_TRY_AGAIN};
		for (uint32_t i = 0; i < b->nlinks; i++)
			link_redo_held(&b->links[i], undo_frame, &u);
		handoff_scan(b, 1); /* acked entries came back; stored ones' handoffs were dropped */
		log_rl(LOG_ERROR, "store: commit failed: %s; %zu answers of the iteration turned into %s, %zu deliveries of "
				  "what it stored dropped",
		       strerror(-r), u.answers, proto_err_name(u.status), u.dropped);
	}
}

static void dispatch(void *arg, const struct io_uring_cqe *cqe)
{
	struct be *b = arg;
	switch (ud_kind(cqe->user_data)) {
	case BU_ACCEPT:
		on_accept(b, cqe);
		break;
	case BU_LINK: {
		uint32_t i = ud_slot(cqe->user_data);
		if (i < b->nlinks)
			link_complete(&b->links[i], &b->ring, cqe, b->now_ns);
		break;
	}
	case BU_CTRL:
		if (cqe->res == BE_CTRL_RELOAD) {
			struct be_reload *nc = ud_pointer(cqe->user_data);
			b->cfg = nc->cfg; /* only the node thread reads b->cfg and b->keys once it runs */
			b->keys = nc->keys; /* links up stay up; the next handshakes use these */
			free(nc);
		} else if (cqe->res == BE_CTRL_DRAIN) {
			b->draining = 1;
		} else {
			b->stop = 1;
		}
		break;
	default:
		break;
	}
}

int be_setup(struct be *b, char *err, size_t errlen)
{
	int ret = ring_init(&b->ring, 1024, 8192, &b->ring_mode);
	if (ret) {
		snprintf(err, errlen, "io_uring: %s", strerror(-ret));
		return -1;
	}
	b->links = calloc(BE_MAX_LINKS, sizeof *b->links);
	b->link_sessions = calloc(BE_MAX_LINKS, sizeof *b->link_sessions);
	if (!b->links || !b->link_sessions || u64map_init(&b->peers, 64) != 0 || u64map_init(&b->dir, 4096) != 0 ||
	    u64map_init(&b->backlog_of, 256) != 0 || u64map_init(&b->hand_of, 256) != 0 ||
	    u64map_init(&b->budget, 1024) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < BE_MAX_LINKS; i++)
		b->links[i].fd = -1;
	b->ring_fd = b->ring.ring_fd;
	msgid_init(&b->ids, (unsigned)b->cfg.node, b->thread, b->threads);
	if (b->lfd >= 0)
		arm_accept(b);
	/* what this thread holds for users it does not own goes to their owners */
	size_t held = b->store ? handoff_scan(b, 0) : 0;
	if (held)
		log_info("%zu users owned by other node threads have entries here: handing them over", held);
	return 0;
}

void be_teardown(struct be *b)
{
	if (b->in_txn)
		commit(b);
	for (uint32_t i = 0; b->links && i < b->nlinks; i++)
		link_free(&b->links[i]);
	free(b->links);
	free(b->link_sessions);
	free(b->backlog);
	free(b->hand);
	u64map_free(&b->hand_of);
	u64map_free(&b->peers);
	u64map_free(&b->dir);
	u64map_free(&b->backlog_of);
	u64map_free(&b->budget);
	io_uring_queue_exit(&b->ring);
}

void *be_main(void *arg)
{
	struct be *b = arg;
	char err[256];
	char name[16];
	snprintf(name, sizeof name, b->threads > 1 ? "node%u" : "node", b->thread);
	log_thread(name);
	b->now_ns = clock_mono_ns();
	b->wall_ms = clock_wall_ms();
	if (be_setup(b, err, sizeof err) != 0) {
		log_error("%s", err);
		__atomic_store_n(&b->start_failed, 1, __ATOMIC_RELAXED);
	}
	pthread_barrier_wait(b->start);
	int failed = 0;
	for (uint32_t k = 0; k < b->threads; k++)
		failed |= __atomic_load_n(&b->all[k].start_failed, __ATOMIC_RELAXED);
	if (failed) {
		be_teardown(b);
		return NULL;
	}
	uint64_t drain_until = 0;
	for (;;) {
		if (b->draining && !drain_until) {
			/* what is committed is acknowledged; close the links and go */
			drain_until = b->now_ns + 2000000000ull;
			if (b->accepting) {
				struct io_uring_sqe *sqe = ring_sqe(&b->ring);
				io_uring_prep_cancel64(sqe, ud_make(BU_ACCEPT, 0, 0), 0);
				sqe->user_data = 0;
			}
			for (uint32_t i = 0; i < b->nlinks; i++)
				link_close(&b->links[i], &b->ring, "backend stopping", b->now_ns);
		}
		int quiet = 1;
		for (uint32_t i = 0; drain_until && i < b->nlinks; i++)
			quiet &= link_quiet(&b->links[i]);
		if (b->stop || (drain_until && (quiet || b->now_ns >= drain_until)))
			break;
		be_turn(b, 100 * 1000 * 1000);
	}
	publish(b);
	be_teardown(b);
	__atomic_store_n(&b->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

void be_turn(struct be *b, uint64_t wait_ns)
{
	struct __kernel_timespec ts = {(long long)(wait_ns / 1000000000ull), (long long)(wait_ns % 1000000000ull)};
	struct io_uring_cqe *cqe;
	io_uring_submit_and_wait_timeout(&b->ring, &cqe, wait_ns ? 1 : 0, wait_ns ? &ts : NULL, NULL);
	b->now_ns = clock_mono_ns();
	b->wall_ms = clock_wall_ms();
	unsigned total = ring_dispatch(&b->ring, 4096, dispatch, b);
	CNT_ADD(b, loops, 1);
	CNT_ADD(b, cqes, total);
	run_backlog(b);
	run_handoff(b);
	if (b->cfg.dedup_window_ms > 0 && b->in_txn) {
		uint64_t now = b->wall_ms - MSGID_EPOCH_MS, win = (uint64_t)b->cfg.dedup_window_ms;
		if (now > win && store_req_begin(b->store, STORE_REQ_DRAIN, 256, 0) == 0)
			store_req_end(b->store, store_dedup_prune(b->store, msgid_make(b->wall_ms - win, 0, 0), 256) >= 0);
	}
	/* durable first, then everything that depends on it leaves */
	commit(b);
	for (uint32_t i = 0; i < b->nlinks; i++) {
		struct link *l = &b->links[i];
		link_tick(l, &b->ring, b->now_ns);
		link_release(l, &b->ring, b->now_ns); /* committed: everything so far may go */
		link_flush(l, &b->ring, b->now_ns);
	}
	if (!b->accepting && !b->draining && b->lfd >= 0)
		arm_accept(b);
	if (b->now_ns >= b->next_publish) {
		publish(b);
		b->next_publish = b->now_ns + 100000000ull;
	}
}
