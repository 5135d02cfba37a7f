/* admin.h: the gateway's admin interface, on the stats listener under
 * /admin/, answered only to loopback peers (403 otherwise: a Prometheus on
 * the management network may scrape, not kick):
 *
 *   GET  /admin/user?id=N      where user N is: thread, slot, protocol
 *                              version, remote address, connected since,
 *                              output queued, receipts owed, idle time;
 *                              404 when not logged in here
 *   POST /admin/kick?id=N      close user N's session (KICKED, reason admin)
 *   POST /admin/lameduck       as SIGUSR2: stop accepting, GOAWAY, serve who stays
 *   POST /admin/drain          as SIGTERM: drain and exit
 *   POST /admin/log-level?level=debug   until the next SIGHUP or restart
 *
 * Answers are JSON. tools/gwctl is the command line for it.
 *
 * A user lives on one worker thread (its home); the stats thread asks that
 * thread with a struct gw_admin sent by MSG_RING (CTRL_ADMIN) and waits up
 * to GW_ADMIN_WAIT_MS for its answer. The request is freed by whichever of
 * the two lets go of it last, so an answer after the wait is harmless.
 */
#ifndef GATEWAY_ADMIN_H
#define GATEWAY_ADMIN_H

#include <stdint.h>

#include "runtime/mbuf.h"
#include "runtime/srclimit.h"

#define GW_ADMIN_WAIT_MS 1000

struct gw;
struct worker;
struct httpd_req;

enum gw_admin_op { GW_ADMIN_LOOKUP = 1, GW_ADMIN_KICK = 2 };

struct gw_admin {
	int op;
	uint64_t user;
	/* the answer, written by the home thread before `done` */
	int found;
	uint32_t slot, gen;
	uint8_t version;
	uint64_t queue_bytes, rcpt_owed, idle_ms;
	struct src peer; /* remote address, connected since */
	int done; /* release-stored by the worker */
	int refs; /* the asker and the worker: the last to let go frees it */
} __attribute__((aligned(16)));

/* The stats thread: answer a request under /admin/ (status, JSON in body). */
int gw_admin_http(struct gw *gw, const struct httpd_req *r, struct mbuf *body);

/* The home thread: answer (and for KICK, act on) a CTRL_ADMIN request. */
void gw_admin_handle(struct worker *w, struct gw_admin *a);

#endif
