/* stats.c: the gateway's numbers for /metrics, /stats and /healthz.
 *
 * Runs on the stats thread. Each worker's counters are written only by that
 * worker; here they are read with relaxed atomic loads and summed, in the
 * order of one table, rendered by runtime/metrics for both formats.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef NO_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "gateway/admin.h"
#include "gateway/gw.h"
#include "runtime/clock.h"
#include "runtime/httpd.h"
#include "runtime/metrics.h"

struct gw_metric {
	struct metric_desc d;
	size_t off;
};

#define C_(name, labels, key, help, field) \
	{{"gateway_" name, labels, key, METRIC_COUNTER, help, 0}, offsetof(struct gw_counters, field)}
#define G_(name, labels, key, help, field) \
	{{"gateway_" name, labels, key, METRIC_GAUGE, help, 0}, offsetof(struct gw_counters, field)}
#define M_(name, labels, key, help, field) \
	{{"gateway_" name, labels, key, METRIC_MAX, help, 0}, offsetof(struct gw_counters, field)}
#define LINK_ROW(f, kind, metric, labels, key, help, scale) \
	{{"gateway_" metric, labels, key, METRIC_##kind, help, scale}, offsetof(struct gw_counters, link.f)},
#define CLOSED(name, r) \
	C_("conn_closed_total", "reason=\"" r "\"", "closed_" r, "Connections closed, by reason", closed[CLOSE_##name]),
#define T_(name, labels, key, help, field, scale) \
	{{"gateway_" name, labels, key, METRIC_COUNTER, help, scale}, offsetof(struct gw_counters, field)}
#define HSFAIL(name, text) \
	C_("tls_handshake_failures_total", "reason=\"" #name "\"", "tls_handshake_failed_" #name, \
	   "TLS handshakes failed, by reason", tls_hs_failed[TLS_HSF_##name]),
/* Per frame type and per fatal error code, generated from proto/client.h's
 * lists: frames in for the types a client may send, out for the server's. */
#define FIN(N, code, t, dir) FIN_##dir(#t, PROTO_FI_##N)
#define FIN_CLIENT(t, f) C_("frames_in_total", "type=\"" t "\"", "frames_in_" t, "Frames received, by type", frames_in[f]),
#define FIN_ANY FIN_CLIENT
#define FIN_SERVER(t, f)
#define FOUT(N, code, t, dir) FOUT_##dir(#t, PROTO_FI_##N)
#define FOUT_SERVER(t, f) \
	C_("frames_out_total", "type=\"" t "\"", "frames_out_" t, "Frames queued for sending, by type", frames_out[f]),
#define FOUT_ANY FOUT_SERVER
#define FOUT_CLIENT(t, f)
#define PERR(N, code, t, cls) PERR_##cls(#t, code)
#define PERR_FATAL(t, f) \
	C_("protocol_errors_total", "code=\"" t "\"", "protocol_errors_" t, "Fatal protocol errors sent, by code", parse_errors[f]),
#define PERR_REQUEST(t, f)

#define RELAY_HELP "Frames passed from one backend thread to another"

static const struct gw_metric table[] = {
	G_("connections", NULL, "conns", "Connections held now (all states)", conns),
	G_("logged_in", NULL, "logged_in", "Logged-in sessions now", logged_in),
	C_("conn_accepted_total", NULL, "accepted", "Connections accepted", accepted),
	C_("conn_rejected_total", "reason=\"full\"", "rejected_full", "Connections refused", rejected_full),
	C_("accept_errors_total", NULL, "accept_errors", "Failed accepts (table full, resources)", accept_errors),
	GW_CLOSE_REASONS(CLOSED)
	C_("handoffs_total", NULL, "handoffs", "Logins moved to the user's home thread", handoffs_out),
	C_("handoff_failures_total", NULL, "handoff_failures", "Logins that could not be moved", handoff_failed),
	C_("logins_total", "result=\"ok\"", "logins_ok", "Login attempts, by result", logins_ok),
	C_("logins_total", "result=\"auth_failed\"", "logins_auth_failed", "Login attempts, by result", logins_auth),
	C_("logins_total", "result=\"expired\"", "logins_expired", "Login attempts, by result", logins_expired),
	C_("logins_total", "result=\"version\"", "logins_version", "Login attempts, by result", logins_version),
	PROTO_FRAMES(FIN)
	PROTO_FRAMES(FOUT)
	C_("bytes_in_total", NULL, "bytes_in", "Bytes received from clients", bytes_in),
	C_("bytes_out_total", NULL, "bytes_out", "Bytes sent to clients", bytes_out),
	PROTO_ERRORS(PERR)
	C_("deliveries_total", "path=\"local\"", "deliver_local", "Messages delivered, by path", deliver_local),
	C_("deliveries_total", "path=\"cross_thread\"", "deliver_cross", "Messages delivered, by path", deliver_cross),
	C_("deliveries_total", "path=\"remote\"", "deliver_remote", "Messages delivered, by path", deliver_remote),
	C_("no_route_total", NULL, "no_route", "Messages refused: recipient not here, no backend", no_route),
	C_("receipts_routed_total", NULL, "receipts_routed", "Receipts handed to a connection", receipts_routed),
	C_("receipts_dropped_total", NULL, "receipts_dropped", "Receipts about no message of this cluster, dropped",
	   receipts_dropped),
	C_("receipt_acks_total", NULL, "receipt_acks", "Stored receipts acknowledged by clients (protocol 2)",
	   receipt_acks),
	C_("kicks_total", NULL, "kicks", "Sessions taken over by a newer login", kicks),
	C_("admin_kicks_total", NULL, "admin_kicks", "Sessions closed through the admin interface", admin_kicks),
	C_("source_refused_total", "reason=\"connections\"", "source_refused_connections",
	   "Connections refused by a per-source limit (--max-conns-per-source, --accept-rate-per-source)", src_too_many),
	C_("source_refused_total", "reason=\"rate\"", "source_refused_rate",
	   "Connections refused by a per-source limit (--max-conns-per-source, --accept-rate-per-source)", src_too_fast),
	G_("tls_connections", NULL, "tls_conns", "Connections from TLS listeners now", tls_conns),
	G_("tls_handshaking", NULL, "tls_handshaking", "TLS handshakes in progress", tls_handshaking),
	C_("tls_handshakes_total", NULL, "tls_handshakes", "TLS handshakes completed", tls_hs_done),
	C_("tls_resumed_total", NULL, "tls_resumed", "TLS handshakes that resumed a session with a ticket",
	   tls_hs_resumed),
	TLS_HS_FAILS(HSFAIL)
	C_("tls_handshake_failures_total", "reason=\"timeout\"", "tls_handshake_failed_timeout",
	   "TLS handshakes failed, by reason", tls_hs_timeouts),
	C_("tls_handshake_failures_total", "reason=\"limit\"", "tls_handshake_failed_limit",
	   "TLS handshakes failed, by reason", tls_hs_limited),
	T_("tls_handshake_seconds_total", NULL, "tls_handshake_ns", "Loop time spent in TLS handshakes (libssl)",
	   tls_hs_ns, 1e-9),
	C_("tls_bad_records_total", NULL, "tls_bad_records",
	   "TLS records refused (bad tag, length or type): alert sent, connection closed", tls_bad_records),
	C_("tls_alerts_received_total", "type=\"fatal\"", "tls_alerts_fatal", "TLS alerts from clients",
	   tls_alerts_in),
	C_("tls_alerts_received_total", "type=\"close_notify\"", "tls_alerts_close_notify", "TLS alerts from clients",
	   tls_close_notify_in),
	C_("proxy_headers_total", NULL, "proxy_headers", "PROXY protocol headers taken on ,proxy listeners", proxy_headers),
	C_("slow_consumers_total", NULL, "slow_consumers", "Connections cut off for not reading", slow_consumers),
	C_("rate_limited_total", NULL, "rate_limited", "Connections cut off for rate abuse", rate_limited),
	C_("recv_enobufs_total", NULL, "recv_enobufs", "Receives that found no provided buffer", enobufs),
	C_("prelogin_too_big_total", NULL, "prelogin_too_big", "Connections cut for a frame over the LOGIN size before login",
	   prelogin_too_big),
	C_("linger_cut_total", NULL, "linger_cut", "Closing connections cut for sending over the linger budget", linger_cut),
	G_("queue_bytes", NULL, "queue_bytes", "Output bytes queued, all connections", queue_bytes),
	M_("queue_max_bytes", NULL, "queue_max_bytes", "Largest output queue seen on one connection", queue_max),
	G_("partial_frames", NULL, "partial_frames", "Connections holding a partial frame buffer", partial_bufs),
	G_("timers", NULL, "timers", "Armed timers in the timing wheels", wheel_size),
	G_("directory_users", NULL, "directory_users", "Users in the per-thread directories", dir_size),
	C_("xthread_batches_total", "dir=\"out\"", "xbatches_out", "Cross-thread batches", xbatches_out),
	C_("xthread_batches_total", "dir=\"in\"", "xbatches_in", "Cross-thread batches", xbatches_in),
	C_("xthread_records_total", "dir=\"out\"", "xrecords_out", "Cross-thread records", xrecords_out),
	C_("xthread_records_total", "dir=\"in\"", "xrecords_in", "Cross-thread records", xrecords_in),
	C_("routed_remote_total", NULL, "routed_remote", "Messages sent to a backend", routed_remote),
	C_("store_acks_total", "result=\"stored\"", "store_acks", "Backend answers to messages", stored_acks),
	C_("store_acks_total", "result=\"refused\"", "store_refused", "Backend answers to messages", store_refused),
	C_("store_timeouts_total", NULL, "store_timeouts", "Requests answered try_again (link lost or timeout)", store_timeouts),
	C_("answers_lost_total", NULL, "answers_lost", "Requests answered try_again: a backend answered later ones first",
	   answers_lost),
	C_("link_try_again_total", NULL, "link_try_again", "Requests refused: backend link queue full", link_try_again),
	C_("sessions_announced_total", NULL, "sessions_announced", "Session up/down frames to backends", sessions_out),
	C_("session_resyncs_total", NULL, "session_resyncs", "Resyncs of every session to a backend (link up, state lane full)",
	   resyncs),
	C_("session_announce_deferred_total", NULL, "session_announce_deferred",
	   "Session events left to a resync: the announcement lane was full", session_announce_deferred),
	C_("backend_relays_total", "kind=\"handoff\"", "relayed_handoffs", RELAY_HELP, relayed_handoffs),
	C_("backend_relays_total", "kind=\"handoff_ack\"", "relayed_handoff_acks", RELAY_HELP, relayed_handoff_acks),
	C_("backend_relays_total", "kind=\"receipt\"", "relayed_receipts", RELAY_HELP, relayed_receipts),
	C_("backend_relays_dropped_total", NULL, "relay_dropped",
	   "Backend-to-backend frames dropped: the link's queue was full (the sender repeats handoffs)", relay_dropped),
	LINK_STATS(LINK_ROW)
	G_("pending_stores", NULL, "pending_stores", "Requests waiting for a backend's answer", pending_stores),
	C_("loop_iterations_total", NULL, "loops", "Event loop iterations", loops),
	C_("cqes_total", NULL, "cqes", "Completions handled", cqes),
	C_("sends_total", NULL, "sends", "Send operations submitted", sends),
};
#define NTABLE (sizeof table / sizeof table[0])

/* Extra figures computed at read time. */
enum { X_CAPACITY, X_THREAD_CAPACITY, X_THREADS, X_DRAINING, X_LAMEDUCK, X_ALLOC, X_RESIDENT, X_N };
static const struct metric_desc extra[X_N] = {
	{"gateway_capacity", NULL, "capacity", METRIC_GAUGE, "Connections this gateway can hold", 0},
	{"gateway_thread_capacity", NULL, "thread_capacity", METRIC_GAUGE,
	 "Connections one worker thread can hold (a full thread answers server_full; users hash to threads)", 0},
	{"gateway_threads", NULL, "threads", METRIC_GAUGE, "Worker threads (one io_uring each)", 0},
	{"gateway_draining", NULL, "draining", METRIC_GAUGE,
	 "1 once a drain started (SIGTERM): the node is going away on purpose", 0},
	{"gateway_lame_duck", NULL, "lame_duck", METRIC_GAUGE,
	 "1 in lame duck (SIGUSR2): not accepting, clients told to go, those who stay served", 0},
	{"gateway_allocated_bytes", NULL, "allocated_bytes", METRIC_GAUGE, "Bytes allocated (jemalloc stats.allocated)", 0},
	{"gateway_allocator_resident_bytes", NULL, "allocator_resident_bytes", METRIC_GAUGE,
	 "Allocator resident bytes (jemalloc stats.resident)", 0},
};
static const struct metric_desc proc[MP_N] = METRICS_PROCESS_ROWS("gateway");



static void allocator(double *allocated, double *resident)
{
	*allocated = *resident = 0;
#ifndef NO_JEMALLOC
	uint64_t epoch = 1;
	size_t sz = sizeof epoch, v = 0, vs = sizeof v;
	mallctl("epoch", &epoch, &sz, &epoch, sz);
	if (mallctl("stats.allocated", &v, &vs, NULL, 0) == 0)
		*allocated = (double)v;
	vs = sizeof v;
	if (mallctl("stats.resident", &v, &vs, NULL, 0) == 0)
		*resident = (double)v;
#endif
}

int gw_draining; /* GW_SERVING, GW_LAMEDUCK or GW_DRAINING: set by main, read here */

int gw_stats_http(void *arg, const struct httpd_req *req, struct mbuf *body, const char **ctype)
{
	const char *path = req->path;
	struct gw *gw = arg;
	if (strncmp(path, "/admin/", 7) == 0) {
		*ctype = "application/json";
		return gw_admin_http(gw, req, body);
	}
	if (strcmp(req->method, "GET") != 0) {
		mbuf_printf(body, "GET only here; POST is for /admin/\n");
		return 405;
	}
	if (strcmp(path, "/healthz") == 0) {
		int d = __atomic_load_n(&gw_draining, __ATOMIC_RELAXED);
		/* not 200 in lame duck either: a load balancer sends no new clients */
		mbuf_printf(body, d == GW_DRAINING ? "draining\n" : d == GW_LAMEDUCK ? "lame duck\n" : "ok\n");
		return d ? 503 : 200;
	}
	int prom = strcmp(path, "/metrics") == 0, json = strcmp(path, "/stats") == 0;
	if (!prom && !json) {
		mbuf_printf(body, "not found; try /metrics, /stats or /healthz\n");
		return 404;
	}
	double vals[NTABLE], xv[X_N], pv[MP_N];
	for (size_t i = 0; i < NTABLE; i++) {
		uint64_t s = 0, mx = 0;
		for (unsigned t = 0; t < gw->nthreads; t++) {
			uint64_t v = cnt_load(&gw->w[t].cnt, table[i].off);
			s += v;
			if (v > mx)
				mx = v;
		}
		/* a maximum is the maximum over threads, not their sum */
		vals[i] = table[i].d.kind == METRIC_MAX ? (double)mx : (double)s;
	}
	xv[X_THREAD_CAPACITY] = (double)(gw->slots - GW_SLOT_RESERVE);
	xv[X_CAPACITY] = (double)gw->nthreads * xv[X_THREAD_CAPACITY];
	xv[X_THREADS] = gw->nthreads;
	int phase = __atomic_load_n(&gw_draining, __ATOMIC_RELAXED);
	xv[X_DRAINING] = phase == GW_DRAINING;
	xv[X_LAMEDUCK] = phase == GW_LAMEDUCK;
	allocator(&xv[X_ALLOC], &xv[X_RESIDENT]);
	metrics_process_values(gw->started_wall_ms, pv);
	struct metric_desc d[NTABLE];
	for (size_t i = 0; i < NTABLE; i++)
		d[i] = table[i].d;
	/* latency measured inside the gateway (gw.h, gw_counters.lat_*) */
	static const struct {
		const char *name, *key, *help;
		size_t off;
	} lats[] = {
		{"gateway_deliver_local_seconds", "deliver_local",
		 "SEND handled to DELIVER queued, sender and recipient on one thread", offsetof(struct gw_counters, lat_local)},
		{"gateway_deliver_cross_thread_seconds", "deliver_cross_thread",
		 "SEND handled to DELIVER queued on the recipient's home thread", offsetof(struct gw_counters, lat_cross)},
		{"gateway_backend_answer_seconds", "backend_answer",
		 "Request queued to a backend to its answer (the durable commit included)",
		 offsetof(struct gw_counters, lat_backend)},
	};
	struct metrics_lat lat[sizeof lats / sizeof lats[0]];
	memset(lat, 0, sizeof lat);
	for (size_t k = 0; k < sizeof lats / sizeof lats[0]; k++)
		for (unsigned t = 0; t < gw->nthreads; t++)
			metrics_lat_load(&lat[k], (const struct metrics_lat *)((const char *)&gw->w[t].cnt + lats[k].off));
	if (prom) {
		*ctype = "text/plain; version=0.0.4; charset=utf-8";
		metrics_prom(body, d, NTABLE, vals);
		metrics_prom(body, extra, X_N, xv);
		metrics_prom(body, proc, MP_N, pv);
		for (size_t k = 0; k < sizeof lats / sizeof lats[0]; k++)
			metrics_prom_lat(body, lats[k].name, lats[k].help, &lat[k]);
		/* per thread: users hash to threads, so they fill unevenly and the
		 * fullest one, not the total, says when logins start to be refused */
		char labels[GW_MAX_THREADS][24];
		struct metric_desc td[GW_MAX_THREADS];
		double tv[GW_MAX_THREADS];
		for (unsigned t = 0; t < gw->nthreads; t++) {
			snprintf(labels[t], sizeof labels[t], "thread=\"%u\"", t);
			td[t] = (struct metric_desc){"gateway_thread_connections", labels[t], "thread_conns", METRIC_GAUGE,
						     "Connections held by one worker thread", 0};
			tv[t] = (double)cnt_load(&gw->w[t].cnt, offsetof(struct gw_counters, conns));
		}
		metrics_prom(body, td, gw->nthreads, tv);
		return 200;
	}
	*ctype = "application/json";
	mbuf_printf(body, "{\"role\":\"gateway\",\"version\":\"%s\",\"node\":%lld,", CHAT_VERSION, (long long)gw->cfg.node);
	metrics_json_fields(body, proc, MP_N, pv);
	mbuf_put(body, ",", 1);
	metrics_json_fields(body, extra, X_N, xv);
	mbuf_put(body, ",", 1);
	metrics_json_fields(body, d, NTABLE, vals);
	for (size_t k = 0; k < sizeof lats / sizeof lats[0]; k++)
		metrics_json_lat(body, lats[k].key, &lat[k]);
	mbuf_printf(body, ",\"per_thread\":[");
	for (unsigned t = 0; t < gw->nthreads; t++) {
		const struct gw_counters *c = &gw->w[t].cnt;
		mbuf_printf(body, "%s{\"conns\":%llu,\"logged_in\":%llu,\"queue_bytes\":%llu,\"loops\":%llu,\"cqes\":%llu}",
			    t ? "," : "", (unsigned long long)cnt_load(c, offsetof(struct gw_counters, conns)),
			    (unsigned long long)cnt_load(c, offsetof(struct gw_counters, logged_in)),
			    (unsigned long long)cnt_load(c, offsetof(struct gw_counters, queue_bytes)),
			    (unsigned long long)cnt_load(c, offsetof(struct gw_counters, loops)),
			    (unsigned long long)cnt_load(c, offsetof(struct gw_counters, cqes)));
	}
	mbuf_printf(body, "],\"links\":[");
	static const struct metric_desc link_rows[] = {
#define LINK_DESC(f, kind, metric, labels, key, help, scale) {metric, labels, key, METRIC_##kind, help, scale},
		LINK_STATS(LINK_DESC)
#undef LINK_DESC
	};
	static const size_t link_off[] = {
#define LINK_OFF(f, kind, metric, labels, key, help, scale) offsetof(struct link_stats, f),
		LINK_STATS(LINK_OFF)
#undef LINK_OFF
	};
	enum { NLINK = sizeof link_rows / sizeof link_rows[0] };
	for (unsigned t = 0, first = 1; t < gw->nthreads; t++) {
		const struct gw_link_pub *pub = gw->w[t].pub;
		for (size_t i = 0; pub && i < gw->cluster.nlinks; i++, first = 0) {
			const struct gw_link_pub *p = &pub[i];
#define LP(f) (unsigned long long)__atomic_load_n(&p->f, __ATOMIC_RELAXED)
			mbuf_printf(body,
				    "%s{\"thread\":%u,\"backend\":%llu,\"backend_thread\":%llu,\"state\":\"%s\",\"pending\":%llu,",
				    first ? "" : ",", t, LP(node), LP(thread), link_state_name((unsigned)LP(state)), LP(pending));
#undef LP
			double lv[NLINK];
			for (size_t k = 0; k < NLINK; k++)
				lv[k] = (double)cnt_load(&p->st, link_off[k]);
			metrics_json_fields(body, link_rows, NLINK, lv);
			mbuf_put(body, "}", 1);
		}
	}
	mbuf_printf(body, "]}\n");
	return 200;
}
