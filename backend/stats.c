/* stats.c: the backend's numbers for /metrics, /stats and /healthz (read on
 * the stats thread with relaxed loads of the node threads' counters, summed
 * over the threads but for the rows of max_row). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend/be.h"
#include "runtime/clock.h"
#include "runtime/httpd.h"
#include "runtime/metrics.h"

int be_draining;

struct be_metric {
	struct metric_desc d;
	size_t off;
};

#define C_(name, labels, key, help, f) {{"backend_" name, labels, key, METRIC_COUNTER, help, 0}, offsetof(struct be_counters, f)}
#define G_(name, labels, key, help, f) {{"backend_" name, labels, key, METRIC_GAUGE, help, 0}, offsetof(struct be_counters, f)}
#define CS_(name, labels, key, help, f, scale) \
	{{"backend_" name, labels, key, METRIC_COUNTER, help, scale}, offsetof(struct be_counters, f)}
#define GS_(name, labels, key, help, f, scale) \
	{{"backend_" name, labels, key, METRIC_GAUGE, help, scale}, offsetof(struct be_counters, f)}
#define LINK_ROW(f, kind, metric, labels, key, help, scale) \
	{{"backend_" metric, labels, key, METRIC_##kind, help, scale}, offsetof(struct be_counters, link.f)},

#define HANDOFF_HELP "Mailbox entries handed to their owner thread (sent, acked) and taken as owner (received, stored)"

static const struct be_metric table[] = {
	C_("links_accepted_total", NULL, "links_accepted", "Gateway links accepted", links_accepted),
	C_("links_lost_total", NULL, "links_lost", "Gateway links lost", links_lost),
	G_("sessions", NULL, "sessions", "Users online (session directory)", sessions),
	C_("session_events_total", "kind=\"up\"", "sessions_up", "Session announcements", sessions_up),
	C_("session_events_total", "kind=\"down\"", "sessions_down", "Session announcements", sessions_down),
	C_("kicks_total", NULL, "kicks", "Sessions replaced by a login on another gateway", kicks),
	C_("messages_routed_total", NULL, "routed_in", "Messages received from gateways", routed_in),
	C_("messages_stored_total", NULL, "stored", "Messages stored durably", stored),
	C_("dedup_hits_total", NULL, "dedup_hits", "Resent messages recognised (not stored twice)", dedup_hits),
	C_("mailbox_full_total", NULL, "mailbox_full", "Messages refused: mailbox full", mailbox_full),
	C_("store_errors_total", NULL, "store_errors", "Store failures", store_errors),
	C_("store_full_total", NULL, "store_full", "Requests refused: the store is (nearly) full", store_full),
	C_("store_full_disk_total", NULL, "store_full_disk",
	   "Requests refused because the data dir's file system is down to its reserve (in store_full too)",
	   store_full_disk),
	C_("requests_failed_total", NULL, "requests_failed", "Requests whose store writes were undone", requests_failed),
	C_("commits_failed_total", NULL, "commits_failed",
	   "Commits that failed (the iteration's answers became errors; in store_errors too)", commits_failed),
	C_("commits_failed_disk_total", NULL, "commits_failed_disk",
	   "Commits that failed for want of disk space (in commits_failed too)", commits_failed_disk),
	C_("sender_budget_total", "limit=\"undelivered\"", "sender_limited",
	   "Requests refused (slow_down) by a per-sender budget", sender_limited),
	C_("sender_budget_total", "limit=\"rate\"", "fanout_limited", "Requests refused (slow_down) by a per-sender budget",
	   fanout_limited),
	C_("deliveries_total", "when=\"online\"", "delivered_online", "Stored messages sent to gateways", delivered_online),
	C_("deliveries_total", "when=\"login\"", "delivered_login", "Stored messages sent to gateways", delivered_login),
	C_("group_messages_total", NULL, "group_msgs", "Group messages stored (once each)", group_msgs),
	C_("group_fanout_total", NULL, "group_fanout", "Group message copies sent to online members", group_fanout),
	C_("group_ops_total", NULL, "group_ops", "Group create/add/remove/leave requests", group_ops),
	C_("receipts_total", "action=\"received\"", "receipts_in", "Receipts", receipts_in),
	C_("receipts_total", "action=\"deleted\"", "receipts_deleted", "Receipts", receipts_deleted),
	C_("receipts_total", "action=\"forwarded\"", "receipts_forwarded", "Receipts", receipts_forwarded),
	C_("receipts_total", "action=\"relayed\"", "receipts_relayed", "Receipts", receipts_relayed),
	C_("receipts_total", "action=\"stored\"", "receipts_stored", "Receipts", receipts_stored),
	C_("receipts_total", "action=\"unverified\"", "receipts_unverified", "Receipts", receipts_unverified),
	C_("receipts_total", "action=\"dropped\"", "receipts_dropped", "Receipts", receipts_dropped),
	C_("receipts_total", "action=\"acked\"", "receipts_acked", "Receipts", receipts_acked),
	C_("commits_total", NULL, "commits", "Store commits (one per busy loop iteration)", commits),
	CS_("commit_seconds_total", NULL, "commit_ns_total", "Time in commits (ns in /stats)", commit_ns_total, 1e-9),
	GS_("commit_max_seconds", NULL, "commit_ns_max", "Slowest commit (ns in /stats)", commit_ns_max, 1e-9),
	LINK_STATS(LINK_ROW)
	/* right after the list's last rows, which are link_refused_total's */
	C_("link_refused_total", "reason=\"busy\"", "link_refused_busy", "Link handshakes refused, by reason", links_busy),
	G_("login_backlog", NULL, "login_backlog", "Users whose stored messages are still being sent", backlog),
	C_("handoffs_total", "action=\"sent\"", "handoffs_sent", HANDOFF_HELP, handoffs_sent),
	C_("handoffs_total", "action=\"acked\"", "handoffs_acked", HANDOFF_HELP, handoffs_acked),
	C_("handoffs_total", "action=\"received\"", "handoffs_in", HANDOFF_HELP, handoffs_in),
	C_("handoffs_total", "action=\"stored\"", "handoffs_stored", HANDOFF_HELP, handoffs_stored),
	G_("handoff_users", NULL, "handoff_users", "Users owned elsewhere whose entries here are being handed off",
	   handoff_users),
	G_("store_messages", NULL, "store_messages", "Messages in the store", store_messages),
	G_("store_mailbox_entries", NULL, "store_mailbox_entries", "Mailbox entries in the store", store_mailbox),
	G_("store_groups", NULL, "store_groups", "Groups in the store", store_groups),
	G_("store_receipts", NULL, "store_receipts", "Receipts kept for users in the store", store_receipts),
	G_("store_used_bytes", NULL, "store_used_bytes", "Store file bytes in use", store_used_bytes),
	G_("store_dedup_records", NULL, "store_dedup_records", "Dedup records in the store's log (--dedup-window)", store_dedup_records),
	G_("store_dedup_index_bytes", NULL, "store_dedup_index_bytes", "Memory of the dedup records' index", store_dedup_index_bytes),
	G_("store_disk_free_bytes", NULL, "store_disk_free_bytes", "Room the store can still grow by: the data dir's free space and the data file's free pages",
	   store_disk_free),
	G_("store_disk_reserve_bytes", NULL, "store_disk_reserve_bytes",
	   "Free space below which new messages get store_full (--store-min-free or more)", store_disk_reserve),
	C_("loop_iterations_total", NULL, "loops", "Event loop iterations", loops),
	C_("cqes_total", NULL, "cqes", "Completions handled", cqes),
};
#define NTABLE (sizeof table / sizeof table[0])


/* Rows the node threads each hold whole (the disk and its reserve are
 * shared) or that are a maximum: the node's value is the largest of its
 * threads', not their sum. (Sessions are summed: each thread has its own
 * users' only.) */
static int max_row(size_t off)
{
	return off == offsetof(struct be_counters, commit_ns_max) ||
	       off == offsetof(struct be_counters, store_disk_free) ||
	       off == offsetof(struct be_counters, store_disk_reserve);
}

int be_stats_http(void *arg, const struct httpd_req *req, struct mbuf *body, const char **ctype)
{
	const char *path = req->path;
	if (strcmp(req->method, "GET") != 0) {
		mbuf_printf(body, "GET only\n");
		return 405;
	}
	struct be *b = arg;
	if (strcmp(path, "/healthz") == 0) {
		int d = __atomic_load_n(&be_draining, __ATOMIC_RELAXED);
		mbuf_printf(body, d ? "stopping\n" : "ok\n");
		return d ? 503 : 200;
	}
	int prom = strcmp(path, "/metrics") == 0, json = strcmp(path, "/stats") == 0;
	if (!prom && !json) {
		mbuf_printf(body, "not found; try /metrics, /stats or /healthz\n");
		return 404;
	}
	double vals[NTABLE];
	struct metric_desc d[NTABLE];
	struct metrics_lat lat = {0};
	for (size_t i = 0; i < NTABLE; i++) {
		d[i] = table[i].d;
		vals[i] = 0;
		for (uint32_t k = 0; k < b->threads; k++) {
			double v = (double)cnt_load(&b->all[k].cnt, table[i].off);
			vals[i] = max_row(table[i].off) ? (v > vals[i] ? v : vals[i]) : vals[i] + v;
		}
	}
	for (uint32_t k = 0; k < b->threads; k++)
		metrics_lat_load(&lat, &b->all[k].cnt.lat_commit);
	static const struct metric_desc extra[MP_N] = METRICS_PROCESS_ROWS("backend");
	double xv[MP_N];
	metrics_process_values(b->started_wall_ms, xv);
	if (prom) {
		*ctype = "text/plain; version=0.0.4; charset=utf-8";
		metrics_prom(body, d, NTABLE, vals);
		metrics_prom(body, extra, MP_N, xv);
		metrics_prom_lat(body, "backend_commit_duration_seconds", "Store commits, fsync included", &lat);
		return 200;
	}
	*ctype = "application/json";
	mbuf_printf(body, "{\"role\":\"backend\",\"version\":\"%s\",\"node\":%lld,\"threads\":%u,", CHAT_VERSION,
		    (long long)b->cluster->nodes[b->self].node, b->threads);
	metrics_json_fields(body, extra, MP_N, xv);
	mbuf_put(body, ",", 1);
	metrics_json_fields(body, d, NTABLE, vals);
	metrics_json_lat(body, "commit", &lat);
	mbuf_printf(body, "}\n");
	return 200;
}
