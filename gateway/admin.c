/* admin.c: the admin interface (admin.h). */
#include "gateway/admin.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gw.h"
#include "runtime/clock.h"
#include "runtime/httpd.h"
#include "runtime/log.h"

static void admin_put(struct gw_admin *a)
{
	if (__atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(a);
}

void gw_admin_handle(struct worker *w, struct gw_admin *a)
{
	uint32_t slot = session_find(w, a->user);
	if (slot != UINT32_MAX) {
		const struct conn *c = conn_of(w, slot);
		a->found = 1;
		a->slot = slot;
		a->gen = c->gen;
		a->version = (c->flags & CF_V2) ? 2 : 1;
		a->queue_bytes = conn_queued(c);
		a->rcpt_owed = c->rcpt_owed;
		a->idle_ms = (uint64_t)(w->tick - c->last_rx) * GW_TICK_MS;
		a->peer = w->peers[slot];
		if (a->op == GW_ADMIN_KICK) {
			log_info("admin: user %llu kicked (thread %u, slot %u)", (unsigned long long)a->user, w->id, slot);
			conn_kick(w, slot, PROTO_KICK_ADMIN);
		}
	}
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	admin_put(a);
}

/* Ask the user's home thread; 0 with *a answered, or -errno. */
static int ask(struct gw *gw, struct gw_admin *a)
{
	unsigned home = gw_home(gw, a->user);
	struct io_uring r;
	int ret = io_uring_queue_init(4, &r, 0);
	if (ret)
		return ret;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
	io_uring_prep_msg_ring(sqe, gw->ring_fds[home], CTRL_ADMIN, ud_ptr(UD_CTRL, a), 0);
	struct io_uring_cqe *cqe;
	ret = io_uring_submit_and_wait(&r, 1);
	if (ret >= 0 && (ret = io_uring_wait_cqe(&r, &cqe)) == 0) {
		ret = cqe->res < 0 ? cqe->res : 0;
		io_uring_cqe_seen(&r, cqe);
	}
	io_uring_queue_exit(&r);
	if (ret < 0)
		return ret; /* not delivered: the worker never saw it */
	for (int64_t t0 = clock_mono_ns(); !__atomic_load_n(&a->done, __ATOMIC_ACQUIRE);) {
		if ((int64_t)clock_mono_ns() - t0 > (int64_t)GW_ADMIN_WAIT_MS * 1000000)
			return -ETIMEDOUT;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

static int user_op(struct gw *gw, const struct httpd_req *r, struct mbuf *body, int op)
{
	char v[32];
	char *end;
	unsigned long long user = httpd_query(r->query, "id", v, sizeof v) ? strtoull(v, &end, 10) : 0;
	if (!user || *end) {
		mbuf_printf(body, "{\"error\":\"want ?id=USER (a user id)\"}\n");
		return 400;
	}
	struct gw_admin *a = aligned_alloc(16, sizeof *a);
	if (!a) {
		mbuf_printf(body, "{\"error\":\"out of memory\"}\n");
		return 503;
	}
	memset(a, 0, sizeof *a);
	a->op = op;
	a->user = user;
	a->refs = 2;
	int ret = ask(gw, a);
	if (ret < 0) {
		if (ret != -ETIMEDOUT)
			a->refs = 1; /* the worker never got it */
		mbuf_printf(body, "{\"error\":\"thread %u did not answer: %s\"}\n", gw_home(gw, user), strerror(-ret));
		admin_put(a);
		return 504;
	}
	int status = 200;
	if (!a->found) {
		mbuf_printf(body, "{\"user\":%llu,\"online\":false}\n", user);
		status = 404;
	} else {
		char remote[80], since[32];
		struct tm tm;
		time_t t = (time_t)a->peer.since;
		if (!gmtime_r(&t, &tm) || !strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm))
			snprintf(since, sizeof since, "unknown");
		mbuf_printf(body,
			    "{\"user\":%llu,\"online\":true,\"thread\":%u,\"slot\":%u,\"generation\":%u,\"protocol\":%u,"
			    "\"remote\":\"%s\",\"connected_since\":\"%s\",\"connected_s\":%lld,"
			    "\"queue_bytes\":%llu,\"receipts_owed\":%llu,\"idle_ms\":%llu%s}\n",
			    user, gw_home(gw, user), a->slot, a->gen, a->version, src_str(&a->peer, remote, sizeof remote),
			    since, (long long)(time(NULL) - t), (unsigned long long)a->queue_bytes,
			    (unsigned long long)a->rcpt_owed, (unsigned long long)a->idle_ms,
			    op == GW_ADMIN_KICK ? ",\"kicked\":true" : "");
	}
	admin_put(a);
	return status;
}

int gw_admin_http(struct gw *gw, const struct httpd_req *r, struct mbuf *body)
{
	if (!r->local) {
		mbuf_printf(body, "{\"error\":\"the admin interface answers loopback peers only\"}\n");
		return 403;
	}
	int post = strcmp(r->method, "POST") == 0;
	const char *what = r->path + strlen("/admin/");
	if (strcmp(what, "user") == 0)
		return user_op(gw, r, body, GW_ADMIN_LOOKUP);
	int mutating = strcmp(what, "kick") == 0 || strcmp(what, "lameduck") == 0 || strcmp(what, "drain") == 0 ||
		       strcmp(what, "log-level") == 0;
	if (mutating && !post) {
		mbuf_printf(body, "{\"error\":\"POST /admin/%s\"}\n", what);
		return 405;
	}
	if (strcmp(what, "kick") == 0)
		return user_op(gw, r, body, GW_ADMIN_KICK);
	if (strcmp(what, "lameduck") == 0 || strcmp(what, "drain") == 0) {
		/* the same path as the signals, on the main thread */
		log_info("admin: %s requested", what);
		kill(getpid(), what[0] == 'l' ? SIGUSR2 : SIGTERM);
		mbuf_printf(body, "{\"%s\":true}\n", what);
		return 200;
	}
	if (strcmp(what, "log-level") == 0) {
		char v[16];
		int lvl = httpd_query(r->query, "level", v, sizeof v) ? log_level_parse(v) : -1;
		if (lvl < 0) {
			mbuf_printf(body, "{\"error\":\"want ?level=error|warn|info|debug\"}\n");
			return 400;
		}
		log_set_level((enum log_level)lvl);
		log_warn("admin: log level %s (until the next SIGHUP or restart)", v);
		mbuf_printf(body, "{\"log_level\":\"%s\"}\n", v);
		return 200;
	}
	mbuf_printf(body, "{\"error\":\"unknown; try /admin/user, /admin/kick, /admin/lameduck, /admin/drain, "
			  "/admin/log-level\"}\n");
	return 404;
}
