/* gwstat: a console view of running gateways and backends, one row per node
 * per interval (like the talk's wsar). Polls each HOST:PORT's /stats (JSON)
 * and prints rates computed from the counters between two polls.
 *
 *   gwstat [--interval 2s] [--count N] 127.0.0.1:9100 127.0.0.1:9101 ...
 *
 * Gateway columns: connections, logged in, accepts/s, messages in (SEND)
 * and out (DELIVER) per second, KB/s in/out, dist link queue and frames per
 * batch, slow consumers, errors/s, CPU %, RSS MB and bytes per connection.
 * Backend columns: sessions, links up, stored/s, delivered/s, receipts/s,
 * commits/s and mean commit ms, link queue, frames per batch, mailbox
 * entries, CPU %, RSS MB. Rows fit 120 columns.
 *
 * Exit status: 0, or 1 when a node did not answer its last poll (so
 * `gwstat --count 1 HOST:PORT` is a health check), 2 for bad arguments.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "runtime/addr.h"
#include "runtime/clock.h"
#include "runtime/httpc.h"
#include "runtime/opts.h"

#define MAXN 64

struct node {
	const char *name;
	struct addr a;
	char *prev, *cur; /* last two /stats bodies */
	double prev_t, cur_t;
	int ok;
};

/* GET /stats; returns a malloc'ed body or NULL (no 200 answer). */
static char *get_stats(const struct addr *a)
{
	int status = 0;
	char *body = httpc_request(a, "GET", "/stats", &status);
	if (body && status != 200) {
		free(body);
		body = NULL;
	}
	return body;
}

/* Numeric value of "key": in a flat JSON object (first occurrence). */
static double jnum(const char *json, const char *key)
{
	if (!json)
		return 0;
	char pat[96];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(json, pat);
	return p ? strtod(p + strlen(pat), NULL) : 0;
}

static int is_backend(const char *json)
{
	return json && strstr(json, "\"role\":\"backend\"") != NULL;
}

/* Rate of a counter between the two polls. */
static double rate(const struct node *n, const char *key)
{
	double dt = n->cur_t - n->prev_t;
	if (!n->prev || dt <= 0)
		return 0;
	double d = jnum(n->cur, key) - jnum(n->prev, key);
	return d > 0 ? d / dt : 0;
}

static double delta(const struct node *n, const char *key)
{
	if (!n->prev)
		return 0;
	double d = jnum(n->cur, key) - jnum(n->prev, key);
	return d > 0 ? d : 0;
}

static const char *human(double v, char *buf, size_t len)
{
	if (v >= 1e9)
		snprintf(buf, len, "%.1fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, len, "%.1fM", v / 1e6);
	else if (v >= 1e4)
		snprintf(buf, len, "%.0fk", v / 1e3);
	else
		snprintf(buf, len, "%.0f", v);
	return buf;
}

static void row_gateway(const struct node *n, const char *ts)
{
	char a[6][16];
	const char *j = n->cur;
	double conns = jnum(j, "conns");
	double in = rate(n, "frames_in_send"), out = rate(n, "frames_out_deliver"); /* messages, not receipts */
	double errs = rate(n, "closed_protocol") + rate(n, "closed_error") + rate(n, "no_route") + rate(n, "store_timeouts") +
		      rate(n, "link_try_again");
	double batches = delta(n, "link_batches_out");
	double fpb = batches > 0 ? delta(n, "link_frames_out") / batches : 0;
	double rss = jnum(j, "rss_bytes");
	printf("%s %-15.15s gw %6s %6s %6.0f %6s %6s %6.0f %6.0f %5.0fk %4.1f %4.0f %5.0f %4.0f%% %5.0f %5.0f\n", ts, n->name,
	       human(conns, a[0], 16), human(jnum(j, "logged_in"), a[1], 16), rate(n, "accepted"), human(in, a[2], 16),
	       human(out, a[3], 16), rate(n, "bytes_in") / 1024, rate(n, "bytes_out") / 1024,
	       jnum(j, "link_queue_bytes") / 1024, fpb, delta(n, "slow_consumers"), errs, rate(n, "cpu_s") * 100,
	       rss / 1048576, conns > 0 ? rss / conns : 0);
}

/* One gateway thread's figures from /stats "per_thread". */
struct thread_row {
	unsigned id;
	double conns, logged_in, queue_bytes, loops, prev_loops;
};

/* Parse "per_thread":[{...},...] of a /stats body into rows (at most cap). */
static size_t thread_rows(const char *json, struct thread_row *rows, size_t cap)
{
	const char *p = json ? strstr(json, "\"per_thread\":[") : NULL;
	size_t n = 0;
	while (p && n < cap && (p = strchr(p, '{')) && !(strchr(p, ']') && strchr(p, ']') < p)) {
		const char *end = strchr(p, '}');
		if (!end)
			break;
		char one[512];
		size_t len = (size_t)(end - p + 1) < sizeof one - 1 ? (size_t)(end - p + 1) : sizeof one - 1;
		memcpy(one, p, len);
		one[len] = 0;
		rows[n] = (struct thread_row){(unsigned)n, jnum(one, "conns"), jnum(one, "logged_in"),
					      jnum(one, "queue_bytes"), jnum(one, "loops"), 0};
		n++;
		p = end + 1;
		if (*p != ',')
			break;
	}
	return n;
}

static int by_conns(const void *a, const void *b)
{
	const struct thread_row *x = a, *y = b;
	return x->conns < y->conns ? 1 : x->conns > y->conns ? -1 : (int)x->id - (int)y->id;
}

/* Under a gateway's row: its threads (all, or the `top` fullest), with
 * connections, logins, output queued and loop turns per second. */
static void rows_threads(const struct node *n, long top)
{
	struct thread_row cur[256], prev[256];
	size_t nc = thread_rows(n->cur, cur, 256), np = thread_rows(n->prev, prev, 256);
	double dt = n->cur_t - n->prev_t;
	for (size_t i = 0; i < nc; i++)
		cur[i].prev_loops = i < np ? prev[i].loops : cur[i].loops;
	if (top > 0)
		qsort(cur, nc, sizeof cur[0], by_conns);
	size_t show = top > 0 && (size_t)top < nc ? (size_t)top : nc;
	char a[2][16];
	for (size_t i = 0; i < show; i++)
		printf("%8s   thread %-6u   %6s %6s queueKB %-8.0f loops/s %.0f\n", "", cur[i].id, human(cur[i].conns, a[0], 16),
		       human(cur[i].logged_in, a[1], 16), cur[i].queue_bytes / 1024,
		       dt > 0 && np ? (cur[i].loops - cur[i].prev_loops) / dt : 0);
}

static void row_backend(const struct node *n, const char *ts)
{
	char a[5][16]; /* one buffer per human() in the printf: they are all read after all are written */
	const char *j = n->cur;
	double commits = delta(n, "commits");
	double cms = commits > 0 ? delta(n, "commit_ns_total") / commits / 1e6 : 0;
	double batches = delta(n, "link_batches_out");
	double fpb = batches > 0 ? delta(n, "link_frames_out") / batches : 0;
	printf("%s %-15.15s be %6s %6s %6s %6s %6.0f %6.0f %5.2f %5.0fk %4.1f %6s %4.0f%% %5.0f\n", ts, n->name,
	       human(jnum(j, "sessions"), a[0], 16), human(jnum(j, "links_up"), a[1], 16),
	       human(rate(n, "stored"), a[2], 16),
	       human(rate(n, "delivered_online") + rate(n, "delivered_login"), a[3], 16), rate(n, "receipts_in"),
	       commits / (n->cur_t - n->prev_t > 0 ? n->cur_t - n->prev_t : 1), cms, jnum(j, "link_queue_bytes") / 1024, fpb,
	       human(jnum(j, "store_mailbox_entries"), a[4], 16), rate(n, "cpu_s") * 100, jnum(j, "rss_bytes") / 1048576);
}

int main(int argc, char **argv)
{
	int64_t interval_ms = 2000, count = 0, top = 0;
	int threads = 0;
	struct opt_list targets = {0};
	const struct opt opts[] = {
		{"interval", OPT_MS, &interval_ms, "2s", 100, 3600000, "time between rows", 0},
		{"count", OPT_INT, &count, "0", 0, 1000000000, "stop after this many rows per node (0 = until Ctrl-C)", 0},
		{"node", OPT_LIST, &targets, NULL, 0, 0, "stats endpoint HOST:PORT (or give them as arguments)", 0},
		{"threads", OPT_FLAG, &threads, NULL, 0, 0, "under each gateway, one row per worker thread", 0},
		{"top", OPT_INT, &top, "0", 0, 256, "under each gateway, its N fullest threads (by connections)", 0},
	};
	/* bare HOST:PORT arguments are --node values */
	char **av = calloc((size_t)argc * 2 + 1, sizeof *av);
	int ac = 0;
	if (!av)
		return 1;
	av[ac++] = argv[0];
	for (int i = 1; i < argc; i++) {
		/* a word after an option that takes a value is that value */
		const char *prev = i > 1 ? argv[i - 1] : "";
		int takes_value = !strchr(prev, '=') &&
				  (strcmp(prev, "--interval") == 0 || strcmp(prev, "--count") == 0 ||
				   strcmp(prev, "--top") == 0 || strcmp(prev, "--node") == 0 || strcmp(prev, "--config") == 0);
		if (argv[i][0] != '-' && !takes_value)
			av[ac++] = "--node";
		av[ac++] = argv[i];
	}
	char err[256];
	int r = opts_parse(opts, sizeof opts / sizeof opts[0], ac, av,
			   "usage: gwstat [--interval 2s] [--count N] [--threads | --top N] HOST:PORT [HOST:PORT...]\n"
			   "Polls the /stats endpoints of gateways and backends and prints one row per node per interval.",
			   err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "gwstat: %s\n", err);
		return 2;
	}
	static const char *def[] = {"127.0.0.1:9100"};
	const char **given = targets.v; /* malloc'ed by opts_parse, or NULL */
	if (targets.n == 0) {
		targets.n = 1;
		targets.v = def;
	}
	if (targets.n > MAXN) {
		fprintf(stderr, "gwstat: at most %d nodes\n", MAXN);
		return 2;
	}
	struct node nodes[MAXN];
	memset(nodes, 0, sizeof nodes);
	for (size_t i = 0; i < targets.n; i++) {
		nodes[i].name = targets.v[i];
		if (addr_parse(targets.v[i], &nodes[i].a, err, sizeof err) != 0) {
			fprintf(stderr, "gwstat: %s\n", err);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int silent = 0; /* a node did not answer the last poll */
	for (int64_t row = 0; count == 0 || row <= count; row++) {
		double now = (double)clock_mono_ns() / 1e9;
		for (size_t i = 0; i < targets.n; i++) {
			struct node *n = &nodes[i];
			char *s = get_stats(&n->a);
			free(n->prev);
			n->prev = n->cur;
			n->prev_t = n->cur_t;
			n->cur = s;
			n->cur_t = now;
			if (!s) {
				free(n->prev);
				n->prev = NULL;
			}
		}
		if (row > 0) {
			if (row % 20 == 1) {
				/* the widths of the rows' formats */
				printf("%-8s %-15s gw %6s %6s %6s %6s %6s %6s %6s %6s %4s %4s %5s %5s %5s %5s\n", "time", "node",
				       "conns", "login", "acc/s", "msgin", "msgout", "KBin/s", "KBou/s", "linkq", "f/b", "slow",
				       "err/s", "cpu%", "rssMB", "B/con");
				printf("%-8s %-15s be %6s %6s %6s %6s %6s %6s %5s %6s %4s %6s %5s %5s\n", "time", "node", "sess",
				       "links", "stor/s", "dlvr/s", "rcpt/s", "cmit/s", "c_ms", "linkq", "f/b", "mailbx", "cpu%",
				       "rssMB");
			}
			time_t t = time(NULL);
			struct tm tm;
			char ts[16];
			localtime_r(&t, &tm);
			strftime(ts, sizeof ts, "%H:%M:%S", &tm);
			silent = 0;
			for (size_t i = 0; i < targets.n; i++) {
				struct node *n = &nodes[i];
				silent |= !n->cur;
				if (!n->cur)
					printf("%s %-15.15s -- no answer from /stats\n", ts, n->name);
				else if (is_backend(n->cur))
					row_backend(n, ts);
				else {
					row_gateway(n, ts);
					if (threads || top)
						rows_threads(n, threads ? 0 : top);
				}
			}
		}
		if (count && row == count)
			break;
		struct timespec ts = {(time_t)(interval_ms / 1000), (long)(interval_ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
	for (size_t i = 0; i < targets.n; i++) {
		free(nodes[i].prev);
		free(nodes[i].cur);
	}
	free(av);
	free(given);
	return silent ? 1 : 0;
}
