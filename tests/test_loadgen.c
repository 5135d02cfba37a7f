/* test_loadgen.c: end-to-end tests of the loadgen binary against real
 * gateways (and a backend) on loopback.
 *
 * Each test starts what it needs, each with reserved ports (tc_port_reserve),
 * a fresh secret and --threads 2: one gateway; or a backend (node 11, data
 * dir under the test's directory) with one or two gateways (nodes 1 and 2)
 * that it waits to be linked to the backend. Then it runs
 * $builddir/loadgen/loadgen as a child process (tc_run: bounded, killed by a
 * watchdog if this process dies) with --report, and checks its exit status,
 * the JSON report (read with the small reader below), its stdout and stderr,
 * and where useful the gateway's and backend's /stats. The suite's fini stops
 * every process whatever way the test ended.
 *
 * What the loadgen promises (loadgen/main.c, loadgen/worker.c): lost =
 * acked - delivered; duplicates and reordering are detected per sender with a
 * 64-message window; exit status 0, 1 (messages lost, error rate over
 * --max-error-rate, or the connection target not reached), 2 (bad
 * arguments); --inject-drop N / --inject-dup N ignore / double every Nth
 * delivery (per loadgen thread) and must show up as loss / duplicates.
 *
 * What the service promises (proto/PROTOCOL.md 3.2 ACK, README "Failure
 * behaviour"): ACK *accepted* means handed to the recipient's connection on a
 * gateway, not durable; ACK *stored* means durable in the recipient's backend
 * and delivered (again after each login until a delivered receipt). So with a
 * gateway alone, a message accepted for a recipient whose connection closes
 * before the gateway wrote it out is lost for real, and a message for a
 * recipient that is not connected gets ERROR no_route: the churn and storm
 * tests assert those promises, not "no loss and no errors" (see the comments
 * there).
 *
 * Three tests are disabled: each shows a bug, described above it
 * (send_schedule_not_late_and_not_spinning, idle_pongs_reported,
 * second_run_through_backend_not_lost).
 *
 * The build directory: $GW_BUILD_DIR if set; else the directory two levels
 * above this binary; else "build". Logs, reports and data go to
 * $builddir/tests/loadgen-e2e/TEST.PID/ (the data directory and the secret
 * are removed at the end, the rest by the next run of the test).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/tclient.h"

#define START_MS 5000   /* a process's stats endpoint answering */
#define LINKS_MS 10000  /* every gateway thread linked to the backend */
#define LG_MS 25000     /* bound for one loadgen run */
#define GW_THREADS 2
#define NGW 2

/* ---- a tiny JSON reader (for --report) --------------------------------------------- */

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

/* Past one JSON value starting at p (after white space); NULL if malformed. */
static const char *js_skip(const char *p)
{
	p = js_ws(p);
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++)
			if (*p == '\\' && p[1])
				p++;
		return *p ? p + 1 : NULL;
	}
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		p = js_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				if (*js_ws(p) != '"' || !(p = js_skip(p)))
					return NULL;
				p = js_ws(p);
				if (*p != ':')
					return NULL;
				p++;
			}
			if (!(p = js_skip(p)))
				return NULL;
			p = js_ws(p);
			if (*p == ',') {
				p++;
				continue;
			}
			return *p == close ? p + 1 : NULL;
		}
	}
	/* a number or a literal: JSON's characters only (so "nan" or "inf" fail) */
	const char *s = p;
	if (strncmp(p, "true", 4) == 0 || strncmp(p, "null", 4) == 0)
		return p + 4;
	if (strncmp(p, "false", 5) == 0)
		return p + 5;
	while (*p && strchr("0123456789+-.eE", *p))
		p++;
	return p > s ? p : NULL;
}

/* Whether text is exactly one well-formed JSON value (and white space). */
static int js_valid(const char *text)
{
	const char *e = js_skip(text);
	return e && *js_ws(e) == 0;
}

/* The value at a dotted path of member names ("messages.sent",
 * "connections.connect_errors.refused"), looking only at the members of each
 * object on the way (so "connections" is not confused with
 * "config.connections"). Returns a pointer to the value's text, or NULL. */
static const char *js_find(const char *json, const char *path)
{
	const char *p = js_ws(json);
	while (*path) {
		const char *dot = strchr(path, '.');
		size_t klen = dot ? (size_t)(dot - path) : strlen(path);
		if (*p != '{')
			return NULL;
		p = js_ws(p + 1);
		const char *found = NULL;
		while (*p == '"') {
			const char *k = p + 1, *kend = js_skip(p);
			if (!kend)
				return NULL;
			size_t kl = (size_t)(kend - 1 - k);
			p = js_ws(kend);
			if (*p != ':')
				return NULL;
			p = js_ws(p + 1);
			if (kl == klen && memcmp(k, path, klen) == 0) {
				found = p;
				break;
			}
			if (!(p = js_skip(p)))
				return NULL;
			p = js_ws(p);
			if (*p == ',')
				p = js_ws(p + 1);
		}
		if (!found)
			return NULL;
		p = found;
		path += klen + (dot ? 1 : 0);
	}
	return p;
}

/* The number at path, or NAN when absent or not a number. */
static double jnum(const char *json, const char *path)
{
	const char *v = json ? js_find(json, path) : NULL;
	if (!v || !strchr("-0123456789", *v))
		return NAN;
	return strtod(v, NULL);
}

/* The number at path, 0 when absent (the report lists error codes only when non-zero). */
static double jnum0(const char *json, const char *path)
{
	double v = jnum(json, path);
	return isnan(v) ? 0 : v;
}

/* Whether the value at path is the literal `lit` (true, false) or the string "lit". */
static int jis(const char *json, const char *path, const char *lit)
{
	const char *v = json ? js_find(json, path) : NULL;
	if (!v)
		return 0;
	size_t n = strlen(lit);
	if (*v == '"')
		return strncmp(v + 1, lit, n) == 0 && v[1 + n] == '"';
	return strncmp(v, lit, n) == 0 && !((v[n] >= 'a' && v[n] <= 'z'));
}

/* The reader itself, on a report-shaped text. */
Test(json_reader, finds_nested_members)
{
	const char *j = "{\"config\":{\"scenario\":\"chat\",\"connections\":200,\"rate\":2.5e1},\n"
			" \"connections\":{\"reached\":false,\"logged_in\":3,\"connect_errors\":{\"refused\":7}},\n"
			" \"s\":\"a\\\"}{\",\"arr\":[1,{\"x\":2},[]],\"result\":\"fail\"}\n";
	cr_assert(js_valid(j));
	cr_assert_eq(jnum(j, "config.connections"), 200);
	cr_assert_eq(jnum(j, "config.rate"), 25);
	cr_assert_eq(jnum(j, "connections.logged_in"), 3);
	cr_assert_eq(jnum(j, "connections.connect_errors.refused"), 7);
	cr_assert(isnan(jnum(j, "connections.connect_errors.timeout")));
	cr_assert(isnan(jnum(j, "connections")), "an object is not a number");
	cr_assert(isnan(jnum(j, "logged_in")), "only top-level members at the top");
	cr_assert_eq(jnum0(j, "errors.no_route"), 0);
	cr_assert(jis(j, "connections.reached", "false"));
	cr_assert(!jis(j, "connections.reached", "true"));
	cr_assert(jis(j, "result", "fail"));
	cr_assert(jis(j, "config.scenario", "chat"));
	cr_assert(!js_valid("{\"a\":nan}"));
	cr_assert(!js_valid("{\"a\":1,}"));
	cr_assert(!js_valid("{\"a\":1} x"));
	cr_assert(!js_valid("{\"a\":{\"b\":1}"));
}

/* ---- fixture ------------------------------------------------------------------ */

struct proc {
	struct tc_server srv;
	unsigned port, stats; /* client (or link) port, stats port */
	int port_fd, stats_fd;
	int started;
	char log[PATH_MAX + 64];
	char name[16];
};

static struct {
	char dir[PATH_MAX];
	char secret[PATH_MAX];
	char cluster[PATH_MAX];
	char cluster_secret[PATH_MAX];
	char data[PATH_MAX];
	struct proc gw[NGW], be;
	int ngw, with_be;
} F;


/* snprintf into an array, failing the test when it does not fit. */
#define PATHF(buf, ...) cr_assert_lt((size_t)snprintf(buf, sizeof buf, __VA_ARGS__), sizeof buf, "path too long")

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The test's directory TEST.PID (so two runs of this binary never share
 * one), and a fresh secret in it. Directories of this test left by processes
 * that are gone are removed (their logs were for the run before). */
static void fx_init(void)
{
	char top[PATH_MAX];
	snprintf(top, sizeof top, "%s/tests", tc_build_dir());
	mkdir(top, 0755);
	snprintf(top, sizeof top, "%s/tests/loadgen-e2e", tc_build_dir());
	mkdir(top, 0755);
	const char *name = criterion_current_test ? criterion_current_test->name : "test";
	size_t nl = strlen(name);
	DIR *d = opendir(top);
	for (struct dirent *e; d && (e = readdir(d));) {
		char *end;
		if (strncmp(e->d_name, name, nl) != 0 || e->d_name[nl] != '.')
			continue;
		long pid = strtol(e->d_name + nl + 1, &end, 10);
		if (*end || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
			char old[PATH_MAX];
			if ((size_t)snprintf(old, sizeof old, "%s/%s", top, e->d_name) < sizeof old)
				rm_tree(old);
		}
	}
	if (d)
		closedir(d);
	PATHF(F.dir, "%s/%s.%d", top, name, (int)getpid());
	rm_tree(F.dir);
	cr_assert_eq(mkdir(F.dir, 0755), 0, "mkdir %s: %s", F.dir, strerror(errno));
	PATHF(F.secret, "%s/secret", F.dir);
	cr_assert_eq(tc_secret_new(F.secret, NULL), 0, "cannot write secret %s", F.secret);
}

static char *proc_tail(const struct proc *p)
{
	static char buf[2500];
	return tc_server_log_tail(&p->srv, buf, sizeof buf);
}

static void reserve(struct proc *p)
{
	p->port_fd = p->stats_fd = -1;
	p->port = tc_port_reserve(&p->port_fd);
	p->stats = tc_port_reserve(&p->stats_fd);
	cr_assert(p->port && p->stats, "no free port: %s", strerror(errno));
}

static void spawn(struct proc *p, const char *bin, const char *const *argv)
{
	char path[PATH_MAX + 32];
	PATHF(path, "%s/%s", tc_build_dir(), bin);
	cr_assert_eq(access(path, X_OK), 0, "%s: %s (set GW_BUILD_DIR)", path, strerror(errno));
	PATHF(p->log, "%s/%s.log", F.dir, p->name);
	char *av[48];
	size_t n = 0;
	av[n++] = path;
	for (size_t i = 0; argv[i] && n < sizeof av / sizeof av[0] - 1; i++)
		av[n++] = (char *)argv[i];
	av[n] = NULL;
	cr_assert_eq(tc_server_start(&p->srv, path, av, p->log), 0, "cannot start %s: %s", path, strerror(errno));
	p->started = 1;
}

/* Wait until p's stats endpoint answers /healthz. */
static void wait_healthy(struct proc *p)
{
	int64_t deadline = tc_now_ms() + START_MS;
	char body[256];
	int st;
	for (;;) {
		cr_assert(tc_server_running(&p->srv), "%s exited at start-up (status 0x%x); log:\n%s", p->name,
			  p->srv.status, proc_tail(p));
		st = tc_http_get(p->stats, "/healthz", 1000, body, sizeof body);
		if (st == 200 || tc_now_ms() > deadline)
			break;
		tc_sleep_ms(20);
	}
	cr_assert_eq(st, 200, "%s stats endpoint not up in %d ms (%s); log:\n%s", p->name, START_MS,
		     st < 0 ? tc_status_name(st) : "http", proc_tail(p));
}

/* A number from p's /stats, or -1. */
static int64_t stat_of(struct proc *p, const char *key)
{
	static char body[65536];
	int st = tc_http_get(p->stats, "/stats", 3000, body, sizeof body);
	cr_assert_eq(st, 200, "%s /stats: %s", p->name, st < 0 ? tc_status_name(st) : "http status");
	return tc_json_num(body, key);
}

/* The backend, node 11, alone in the cluster file. */
static void be_start(void)
{
	struct proc *p = &F.be;
	snprintf(p->name, sizeof p->name, "backend");
	reserve(p);
	PATHF(F.cluster, "%s/cluster.conf", F.dir);
	PATHF(F.data, "%s/data", F.dir);
	FILE *f = fopen(F.cluster, "w");
	cr_assert(f, "cannot write %s", F.cluster);
	fprintf(f, "# backend NODE_ID IP:PORT\nbackend 11 127.0.0.1:%u\ngateway 1\ngateway 2\n", p->port);
	fclose(f);
	PATHF(F.cluster_secret, "%s/cluster.secret", F.dir);
	cr_assert_eq(tc_secret_new(F.cluster_secret, NULL), 0, "cannot write %s", F.cluster_secret);
	char stats[64];
	snprintf(stats, sizeof stats, "127.0.0.1:%u", p->stats);
	const char *argv[] = {"--node", "11", "--cluster", F.cluster, "--cluster-secret-file", F.cluster_secret,
			      "--data-dir", F.data, "--stats-listen", stats, "--store-size", "64m", NULL};
	spawn(p, "backend/backend", argv);
	F.with_be = 1;
	wait_healthy(p);
}

/* Gateway i (node i + 1), --threads 2; with the backend's cluster file when
 * the backend was started, and then only once every thread is linked. */
static unsigned gw_start(int i)
{
	struct proc *p = &F.gw[i];
	snprintf(p->name, sizeof p->name, "gateway%d", i + 1);
	reserve(p);
	char listen[64], stats[64], node[16], threads[16];
	snprintf(listen, sizeof listen, "127.0.0.1:%u", p->port);
	snprintf(stats, sizeof stats, "127.0.0.1:%u", p->stats);
	snprintf(node, sizeof node, "%d", i + 1);
	snprintf(threads, sizeof threads, "%d", GW_THREADS);
	const char *argv[24] = {"--listen", listen, "--stats-listen", stats, "--auth-secret-file", F.secret,
				"--threads", threads, "--node", node, "--drain-timeout", "1s"};
	size_t n = 12;
	if (F.with_be) {
		argv[n++] = "--cluster";
		argv[n++] = F.cluster;
		argv[n++] = "--cluster-secret-file";
		argv[n++] = F.cluster_secret;
	}
	argv[n] = NULL;
	spawn(p, "gateway/gateway", argv);
	if (i + 1 > F.ngw)
		F.ngw = i + 1;
	wait_healthy(p);
	if (F.with_be) {
		int64_t deadline = tc_now_ms() + LINKS_MS, up = -1;
		while ((up = stat_of(p, "links_up")) != GW_THREADS && tc_now_ms() < deadline)
			tc_sleep_ms(50);
		cr_assert_eq(up, GW_THREADS, "%s: %lld of %d links to the backend up after %d ms; log:\n%s", p->name,
			     (long long)up, GW_THREADS, LINKS_MS, proc_tail(p));
	}
	return p->port;
}

static void proc_stop(struct proc *p, int drain_twice)
{
	if (p->started) {
		if (!tc_server_running(&p->srv)) {
			if (!WIFEXITED(p->srv.status) || WEXITSTATUS(p->srv.status) != 0)
				cr_log_error("%s had exited with wait status 0x%x; log %s", p->name, p->srv.status, p->log);
		} else {
			tc_server_signal(&p->srv, SIGTERM);
			if (drain_twice && tc_server_wait(&p->srv, 300) != 0)
				tc_server_signal(&p->srv, SIGTERM); /* a gateway: the second one stops at once */
		}
		int st = tc_server_stop(&p->srv, 5000);
		if (st != -1 && WIFSIGNALED(st))
			cr_log_error("%s ended by signal %d; log %s", p->name, WTERMSIG(st), p->log);
		p->started = 0;
	}
	if (p->port || p->stats) {
		tc_port_release(p->port_fd);
		tc_port_release(p->stats_fd);
	}
	p->port_fd = p->stats_fd = -1;
	p->port = p->stats = 0;
}

static void lg_free_last(void);

static void fx_fini(void)
{
	for (int i = 0; i < NGW; i++)
		proc_stop(&F.gw[i], 1);
	proc_stop(&F.be, 0);
	if (F.data[0])
		rm_tree(F.data);
	if (F.secret[0])
		unlink(F.secret);
	memset(&F, 0, sizeof F);
	lg_free_last();
}

/* The processes under test must still run at the end of a test. */
static void all_alive(void)
{
	for (int i = 0; i < F.ngw; i++)
		cr_assert(tc_server_running(&F.gw[i].srv), "%s died (wait status 0x%x); log:\n%s", F.gw[i].name,
			  F.gw[i].srv.status, proc_tail(&F.gw[i]));
	if (F.with_be)
		cr_assert(tc_server_running(&F.be.srv), "backend died (wait status 0x%x); log:\n%s", F.be.srv.status,
			  proc_tail(&F.be));
}

TestSuite(loadgen, .init = fx_init, .fini = fx_fini, .timeout = 30);

/* ---- running the loadgen ------------------------------------------------------------ */

struct lg_out {
	int rc;               /* exit status (tc_run) */
	int64_t wall_ms;      /* how long it ran */
	char *report;         /* --report contents, NULL when not written */
	char *out, *err;      /* stdout, stderr ("" when empty) */
	char report_path[PATH_MAX], out_path[PATH_MAX], err_path[PATH_MAX];
};

static struct lg_out LG; /* one run at a time; freed by the next run and at the end */

static void lg_free(struct lg_out *o)
{
	free(o->report);
	free(o->out);
	free(o->err);
	o->report = o->out = o->err = NULL;
}

static void lg_free_last(void)
{
	lg_free(&LG);
}

/* Run the loadgen with --secret-file (unless the test passes no_secret),
 * --report TAG.json, --threads 2 and the NULL-terminated options; its stdout
 * and stderr go to TAG.out and TAG.err in the test's directory. The test
 * passes --targets itself. Fills LG (report NULL when none was written). */
static struct lg_out *lg_run_v(const char *tag, int with_secret, const char *const *opts)
{
	struct lg_out *o = &LG;
	lg_free(o);
	char path[PATH_MAX + 32];
	PATHF(path, "%s/loadgen/loadgen", tc_build_dir());
	cr_assert_eq(access(path, X_OK), 0, "%s: %s (set GW_BUILD_DIR)", path, strerror(errno));
	PATHF(o->report_path, "%s/%s.json", F.dir, tag);
	PATHF(o->out_path, "%s/%s.out", F.dir, tag);
	PATHF(o->err_path, "%s/%s.err", F.dir, tag);
	unlink(o->report_path);
	char *av[64];
	size_t n = 0;
	av[n++] = path;
	if (with_secret) {
		av[n++] = "--secret-file";
		av[n++] = F.secret;
	}
	av[n++] = "--report";
	av[n++] = o->report_path;
	av[n++] = "--threads";
	av[n++] = "2";
	for (size_t i = 0; opts[i]; i++) {
		cr_assert_lt(n, sizeof av / sizeof av[0] - 1, "too many loadgen options");
		av[n++] = (char *)opts[i];
	}
	av[n] = NULL;
	int64_t t0 = tc_now_ms();
	o->rc = tc_run(path, av, o->out_path, o->err_path, LG_MS);
	o->wall_ms = tc_now_ms() - t0;
	cr_assert_neq(o->rc, -1, "cannot run %s: %s", path, strerror(errno));
	o->out = tc_read_file(o->out_path, NULL);
	o->err = tc_read_file(o->err_path, NULL);
	if (!o->out)
		o->out = strdup("");
	if (!o->err)
		o->err = strdup("");
	o->report = tc_read_file(o->report_path, NULL);
	cr_assert_neq(o->rc, TC_TIMEOUT, "loadgen ran over %d ms and was killed; stderr:\n%.2000s", LG_MS, o->err);
	cr_assert_lt(o->rc, 128, "loadgen killed by signal %d; stderr:\n%.2000s", o->rc - 128, o->err);
	return o;
}

static struct lg_out *lg_run(const char *tag, const char *first, ...)
{
	const char *opts[48];
	size_t n = 0;
	va_list ap;
	va_start(ap, first);
	for (const char *a = first; a; a = va_arg(ap, const char *))
		if (n < sizeof opts / sizeof opts[0] - 1)
			opts[n++] = a;
	va_end(ap);
	opts[n] = NULL;
	return lg_run_v(tag, 1, opts);
}

/* The report must exist and be well-formed JSON, with the result matching
 * the exit status. */
static void report_ok(const struct lg_out *o)
{
	cr_assert(o->report, "no --report file %s; exit %d; stdout:\n%s\nstderr:\n%.2000s", o->report_path, o->rc,
		  o->out, o->err);
	cr_assert(js_valid(o->report), "--report is not well-formed JSON:\n%s", o->report);
	cr_assert(jis(o->report, "result", o->rc == 0 ? "ok" : "fail"), "exit %d but report result is not \"%s\":\n%s",
		  o->rc, o->rc == 0 ? "ok" : "fail", o->report);
}

#define R(path) jnum(LG.report, path)

/* The last run's stdout and report, for failure messages. */
static const char *lg_ctx(void)
{
	static char buf[8192];
	snprintf(buf, sizeof buf, "loadgen exit %d\nstdout:\n%s\nreport:\n%s\n", LG.rc, LG.out ? LG.out : "",
		 LG.report ? LG.report : "(none)");
	return buf;
}
/* A failure message: the context, then fmt with its arguments. */
#define M(fmt, ...) "%s" fmt, lg_ctx(), ##__VA_ARGS__

static char target_buf[NGW][32];
static const char *target(int i)
{
	snprintf(target_buf[i], sizeof target_buf[i], "127.0.0.1:%u", F.gw[i].port);
	return target_buf[i];
}

/* The message counters every clean chat run must show. */
static void expect_clean_messages(void)
{
	cr_assert_gt(R("messages.sent"), 0, M("nothing sent"));
	cr_assert_eq(R("errors.total"), 0, M("errors"));
	cr_assert_eq(R("messages.acked"), R("messages.sent") - R("errors.total"), M("acked != sent"));
	cr_assert_eq(R("messages.delivered"), R("messages.acked"), M("delivered != acked"));
	cr_assert_eq(R("messages.lost"), 0, M("lost"));
	cr_assert_eq(R("messages.duplicated"), 0, M("duplicated"));
	cr_assert_eq(R("messages.reordered"), 0, M("reordered"));
	cr_assert_eq(R("messages.blocked"), 0, M("blocked"));
	cr_assert_eq(R("messages.skipped"), 0, M("sends skipped (a sender not logged in)"));
}

static void expect_all_logged_in(double conns)
{
	cr_assert(jis(LG.report, "connections.reached", "true"), M("target not reached"));
	cr_assert_eq(R("connections.logged_in"), conns, M("logged in"));
	cr_assert_eq(R("connections.connects"), conns, M("connects"));
	cr_assert_eq(R("connections.reconnects"), 0, M("reconnects"));
	cr_assert_eq(R("connections.closed_by_server"), 0, M("closed by the server"));
	cr_assert_eq(R("connections.logins_failed"), 0, M("logins failed"));
}

/* ---- 1. chat: every message counted -------------------------------------------- */

Test(loadgen, chat_counts_every_message, .timeout = 30)
{
	gw_start(0);
	lg_run("chat", "--targets", target(0), "--scenario", "chat", "--connections", "200", "--rate", "20",
	       "--duration", "3s", "--drain", "10s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	expect_all_logged_in(200);
	expect_clean_messages();
	/* open loop: 200 users x 20/s over the run, whatever the replies did
	 * (within 10% + 200: on a loaded machine the workers see the end of the
	 * run phase a little before or after the main thread measures it) */
	double want = 200 * 20 * R("messages.run_s");
	cr_assert(fabs(R("messages.sent") - want) <= 0.1 * want + 200, M("sent %.0f, scheduled %.0f",
		  R("messages.sent"), want));
	/* one latency sample per delivery, percentiles ordered */
	cr_assert_eq(R("latency_us.count"), R("messages.delivered"), M("latency samples"));
	cr_assert_gt(R("latency_us.p50"), 0, M(""));
	cr_assert_leq(R("latency_us.p50"), R("latency_us.p90"), M(""));
	cr_assert_leq(R("latency_us.p90"), R("latency_us.p99"), M(""));
	cr_assert_leq(R("latency_us.p99"), R("latency_us.p999"), M(""));
	cr_assert_leq(R("latency_us.p999"), R("latency_us.max") * 1.0001 + 1, M(""));
	/* the configuration is echoed */
	cr_assert(jis(LG.report, "config.scenario", "chat"), M(""));
	cr_assert_eq(R("config.connections"), 200, M(""));
	cr_assert_eq(R("config.rate_per_user"), 20, M(""));
	cr_assert_eq(R("config.duration_s"), 3, M(""));
	cr_assert_eq(R("config.threads"), 2, M(""));
	cr_assert_eq(R("config.targets"), 1, M(""));
	/* stdout agrees with the report */
	char line[256];
	snprintf(line, sizeof line, "sent %.0f, acked %.0f, delivered %.0f, lost 0, duplicated 0, reordered 0\n",
		 R("messages.sent"), R("messages.acked"), R("messages.delivered"));
	cr_assert(strstr(LG.out, line), M("stdout lacks \"%s\"", line));
	cr_assert(strstr(LG.out, "result        ok\n"), M(""));
	/* and so does the gateway */
	cr_assert_eq(stat_of(&F.gw[0], "frames_in_send"), (int64_t)R("messages.sent"), M(""));
	cr_assert_eq(stat_of(&F.gw[0], "frames_out_ack"), (int64_t)R("messages.acked"), M(""));
	all_alive();
}

/* ---- 2. injected loss is reported ------------------------------------------------ */

/* Every 50th delivery (counted per loadgen thread) is ignored as if it never
 * came. The drain phase ends only once delivered + injected_drop >= acked and
 * acked + errors >= sent, and with nothing really lost every acked message
 * arrives exactly once, so lost = acked - delivered is exactly injected_drop
 * (it could only be larger if the drain timed out with messages in flight,
 * and that would be real loss). Each thread drops floor(arrivals/50), so over
 * 2 threads injected_drop is within 2 of (delivered + injected_drop) / 50. */
Test(loadgen, inject_drop_reported_as_loss, .timeout = 30)
{
	gw_start(0);
	lg_run("drop", "--targets", target(0), "--scenario", "chat", "--connections", "200", "--rate", "20",
	       "--duration", "3s", "--drain", "10s", "--inject-drop", "50", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 1, M("exit status %d, want 1 (messages lost)", LG.rc));
	cr_assert(jis(LG.report, "result", "fail"), M(""));
	cr_assert_eq(R("config.inject_drop"), 50, M(""));
	double drop = R("messages.injected_drop"), lost = R("messages.lost"), arrived = R("messages.delivered") + drop;
	cr_assert_gt(lost, 0, M(""));
	cr_assert_eq(lost, drop, M("lost %.0f != injected_drop %.0f", lost, drop));
	cr_assert_eq(arrived, R("messages.acked"), M(""));
	cr_assert_eq(R("messages.acked"), R("messages.sent"), M(""));
	cr_assert(drop <= floor(arrived / 50) && drop >= floor(arrived / 50) - 2, M("injected_drop %.0f of %.0f arrivals",
		  drop, arrived));
	/* a gap is not a reordering and not a duplicate */
	cr_assert_eq(R("messages.duplicated"), 0, M(""));
	cr_assert_eq(R("messages.reordered"), 0, M(""));
	cr_assert_eq(R("latency_us.count"), R("messages.delivered"), M("dropped deliveries have no latency"));
	cr_assert(strstr(LG.out, "FAIL: messages lost"), M(""));
	cr_assert(strstr(LG.out, "(with injected faults)"), M(""));
	all_alive();
}

/* ---- 3. injected duplicates are reported ----------------------------------------- */

Test(loadgen, inject_dup_reported_as_duplicates, .timeout = 30)
{
	gw_start(0);
	lg_run("dup", "--targets", target(0), "--scenario", "chat", "--connections", "200", "--rate", "20",
	       "--duration", "3s", "--drain", "10s", "--inject-dup", "40", NULL);
	report_ok(&LG);
	/* at-least-once delivery allows duplicates: they are counted, not failed */
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	cr_assert_eq(R("config.inject_dup"), 40, M(""));
	expect_all_logged_in(200);
	cr_assert_gt(R("messages.duplicated"), 0, M(""));
	cr_assert_eq(R("messages.duplicated"), R("messages.injected_dup"), M(""));
	/* "every Nth delivery": the hook counts delivered + dup + 1
	 * (worker.c on_deliver), so its own injected copies count too and one
	 * arrival in 39, not 40, is doubled (a harmless off-by-one of the test
	 * hook); per thread, so within 2 of that over 2 threads */
	double arrived = R("messages.delivered"), inj = R("messages.injected_dup");
	cr_assert(inj >= floor(arrived / 40) - 2 && inj <= arrived / 39 + 2, M("%.0f injected of %.0f arrivals", inj, arrived));
	cr_assert_eq(R("messages.lost"), 0, M(""));
	cr_assert_eq(R("messages.delivered"), R("messages.acked"), M(""));
	cr_assert_eq(R("messages.acked"), R("messages.sent"), M(""));
	cr_assert_eq(R("messages.reordered"), 0, M(""));
	cr_assert_eq(R("latency_us.count"), R("messages.delivered"), M(""));
	cr_assert(strstr(LG.out, "(with injected faults)"), M(""));
	cr_assert(strstr(LG.out, "result        ok\n"), M(""));
	all_alive();
}

/* ---- 4. unreachable target ------------------------------------------------------ */

Test(loadgen, unreachable_target_not_reached, .timeout = 30)
{
	/* a reserved port nobody listens on: every connect is refused */
	int fd = -1;
	unsigned port = tc_port_reserve(&fd);
	cr_assert(port, "no free port");
	char t[32];
	snprintf(t, sizeof t, "127.0.0.1:%u", port);
	lg_run("unreachable", "--targets", t, "--scenario", "chat", "--connections", "20", "--ramp-timeout", "2s",
	       "--duration", "0", "--drain", "0", NULL);
	tc_port_release(fd);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 1, M("exit status %d", LG.rc));
	cr_assert(jis(LG.report, "connections.reached", "false"), M(""));
	cr_assert_eq(R("connections.logged_in"), 0, M(""));
	cr_assert_geq(R("connections.ramp_s"), 2, M(""));
	cr_assert_lt(R("connections.ramp_s"), 4, M(""));
	double refused = R("connections.connect_errors.refused");
	/* 20 connections, each retried after 50-550 ms for 2 s: at least one round each */
	cr_assert_geq(refused, 20, M(""));
	/* every connect refused, but those in flight when the loadgen stopped */
	cr_assert(refused <= R("connections.connects") && refused >= R("connections.connects") - 20,
		  M("refused %.0f of %.0f connects", refused, R("connections.connects")));
	cr_assert_eq(R("connections.connect_errors.timeout") + R("connections.connect_errors.addr") +
			     R("connections.connect_errors.other"),
		     0, M(""));
	cr_assert_eq(R("messages.sent"), 0, M(""));
	cr_assert(strstr(LG.out, "(NOT REACHED)"), M(""));
	cr_assert(strstr(LG.out, "FAIL: connection target not reached"), M(""));
	cr_assert(strstr(LG.err, "ramp timeout: 0 of 20 logged in"), "stderr:\n%s", LG.err);
	cr_assert_lt(LG.wall_ms, 8000, "took %lld ms", (long long)LG.wall_ms);
}

/* ---- 5. idle: hold and ping ---------------------------------------------------------- */

Test(loadgen, idle_holds_and_pings, .timeout = 30)
{
	gw_start(0);
	lg_run("idle", "--targets", target(0), "--scenario", "idle", "--connections", "500", "--ping-interval",
	       "500ms", "--duration", "2s", "--drain", "0", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	expect_all_logged_in(500);
	cr_assert_eq(R("config.ping_interval_s"), 0.5, M(""));
	cr_assert_eq(R("config.rate_per_user"), 0, M("idle sends nothing"));
	cr_assert_eq(R("messages.sent"), 0, M(""));
	cr_assert_eq(R("errors.total"), 0, M(""));
	cr_assert_geq(R("messages.run_s"), 2, M(""));
	/* the loadgen counts pongs but reports them nowhere (see the disabled
	 * idle_pongs_reported), so count on the gateway: each connection pings
	 * first within 0.51 s of its login, then every 0.5 s, over a 2 s hold: at
	 * least 2 pings each, each answered */
	int64_t pings = stat_of(&F.gw[0], "frames_in_ping"), pongs = stat_of(&F.gw[0], "frames_out_pong");
	cr_assert_geq(pings, 2 * 500, M("gateway saw %lld pings", (long long)pings));
	cr_assert_geq(pongs, 2 * 500, M("gateway sent %lld pongs", (long long)pongs));
	cr_assert_leq(pongs, pings, M(""));
	cr_assert_eq(stat_of(&F.gw[0], "closed_idle"), 0, M(""));
	all_alive();
}

/* Regression (was a finding): the loadgen counts PONGs (lg_counters.pongs, worker.c on_frame,
 * PROTO_PONG, worker.c:401) and PINGs sent, sums them (main.c sum()) and then reports
 * neither: not on stdout, not in --report, not in --csv. An idle run cannot
 * show that its keepalives were answered.
 * Fixed; kept as a regression test.
 * Steps: idle, 50 connections, --ping-interval 200ms, 1 s.
 * Expected: the report has pings and pongs (any section), pongs > 0.
 * Observed: no "pongs" anywhere in the report or on stdout.
 * Cause: loadgen/main.c: struct totals has pings/pongs but the report
 * fprintf()s ("messages":{...}) and the stdout lines never print them. */
Test(loadgen, idle_pongs_reported, .timeout = 30)
{
	gw_start(0);
	lg_run("idle-pongs", "--targets", target(0), "--scenario", "idle", "--connections", "50", "--ping-interval",
	       "200ms", "--duration", "1s", "--drain", "0", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M(""));
	double pongs = NAN;
	static const char *const where[] = {"pongs", "messages.pongs", "connections.pongs", "keepalive.pongs"};
	for (size_t i = 0; i < sizeof where / sizeof where[0] && isnan(pongs); i++)
		pongs = R(where[i]);
	cr_assert(!isnan(pongs), M("the report has no pongs"));
	cr_assert_gt(pongs, 0, M(""));
	cr_assert(strstr(LG.out, "pong"), M("stdout does not mention pongs"));
}

/* ---- 6. churn ---------------------------------------------------------------------- */

/* Churn alone (--rate 0): connections are closed and reconnect at 50/s for
 * 3 s; nothing is sent, so nothing can be lost and the exit status is 0.
 * (With messages on a gateway alone the run cannot promise exit 0: a message
 * for a churned-out peer gets ERROR no_route, which counts against
 * --max-error-rate, and a message ACKed accepted for a peer whose connection
 * closes before the gateway wrote it out is lost for real: ACCEPTED is not
 * durable. churn_through_backend_nothing_acked_is_lost checks churn with
 * messages where the protocol does promise delivery.) */
Test(loadgen, churn_reconnects, .timeout = 30)
{
	gw_start(0);
	lg_run("churn", "--targets", target(0), "--scenario", "churn", "--connections", "200", "--churn-rate", "50",
	       "--rate", "0", "--duration", "3s", "--drain", "1s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	cr_assert(jis(LG.report, "connections.reached", "true"), M(""));
	/* 150 closes over the run; a connection reconnects 50-550 ms after its
	 * close, and not at all once the run is over */
	double rc = R("connections.reconnects");
	cr_assert(rc >= 60 && rc <= 160, M("reconnects %.0f, want about 150 - the last ~0.5 s", rc));
	cr_assert_eq(R("connections.connects"), 200 + rc, M(""));
	cr_assert_eq(R("connections.logins_failed"), 0, M(""));
	cr_assert_eq(R("connections.closed_by_server"), 0, M(""));
	cr_assert_eq(R("connections.kicked"), 0, M(""));
	cr_assert_eq(R("errors.total"), 0, M(""));
	cr_assert_eq(R("messages.lost"), 0, M(""));
	cr_assert_eq(R("messages.sent"), 0, M(""));
	/* the gateway accepted and logged in every connect */
	int64_t deadline = tc_now_ms() + 3000, acc;
	while ((acc = stat_of(&F.gw[0], "accepted")) < (int64_t)(200 + rc) && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	cr_assert_eq(acc, (int64_t)(200 + rc), M(""));
	cr_assert_eq(stat_of(&F.gw[0], "logins_ok"), (int64_t)(200 + rc), M(""));
	all_alive();
}

/* Churn with messages through a backend: two gateways, connections alternate
 * between them, so every message goes through the backend and is ACKed
 * stored (durable), and a stored message is delivered again at each login
 * until a delivered receipt (--receipts). What the protocol promises then:
 * nothing acked is lost: it is delivered, or still in the backend's store for
 * a recipient that is offline. The loadgen's lost (acked - delivered) may be
 * non-zero here without any loss: churn closes connections until the end of
 * the run and does not reconnect them in the drain phase
 * (loadgen/worker.c: pace_connects only in ramp and run), so messages stored
 * for them wait for a login that never comes in this run. Those are in the
 * store. So: errors 0 (nothing refused), and acked <= delivered + stored. */
Test(loadgen, churn_through_backend_nothing_acked_is_lost, .timeout = 30)
{
	be_start();
	gw_start(0);
	gw_start(1);
	lg_run("churn-be", "--targets", target(0), "--targets", target(1), "--scenario", "churn", "--connections",
	       "200", "--churn-rate", "50", "--rate", "5", "--receipts", "--duration", "3s", "--drain", "4s", NULL);
	report_ok(&LG);
	int64_t stored_left = stat_of(&F.be, "store_messages");
	double lost = R("messages.lost");
	cr_assert(LG.rc == 0 || (LG.rc == 1 && lost > 0), M("exit status %d", LG.rc));
	cr_assert_gt(R("connections.reconnects"), 0, M(""));
	cr_assert_eq(R("errors.total"), 0, M("every message is stored: no error"));
	cr_assert_gt(R("messages.acked"), 0, M(""));
	cr_assert_leq(R("messages.acked"), R("messages.delivered") + (double)stored_left,
		      M("acked %.0f, delivered %.0f, still stored %lld: acked messages lost", R("messages.acked"),
		      R("messages.delivered"), (long long)stored_left));
	cr_assert_leq(lost, (double)stored_left, M(""));
	cr_assert_eq(stat_of(&F.be, "dedup_hits"), 0, M(""));
	if (lost > 0)
		cr_log_info("churn: %.0f messages reported lost are stored for users churned out at the end", lost);
	all_alive();
}

/* ---- 7. storm ------------------------------------------------------------------------- */

/* A login storm on a gateway alone: at 1 s into the run every connection is
 * closed and reconnects (50-550 ms later). What can legitimately go wrong,
 * and what this test allows:
 * - a message for a peer that is reconnecting gets ERROR no_route (no backend
 *   to store it): counted in errors (about 3% here), so the run gets
 *   --max-error-rate 0.2; any other error code fails the test;
 * - a message ACKed accepted whose recipient's connection was closed by the
 *   storm before the gateway wrote it out is lost for real (PROTOCOL.md 3.2:
 *   accepted is "handed to the recipient's connection on a gateway, not
 *   durable"). Peers close in the same loop iteration of the same loadgen
 *   thread, so the sender's ACK rarely gets in first: 0 in our runs, but
 *   allowed. Then the exit status is 1 for "messages lost" only, with at most
 *   one message per connection (200): at 5 msg/s per sender, more would mean
 *   the gateway took hundreds of ms to notice a close.
 * storm_through_backend_no_loss checks the case where nothing may be lost. */
Test(loadgen, storm_everyone_reconnects, .timeout = 30)
{
	gw_start(0);
	lg_run("storm", "--targets", target(0), "--scenario", "storm", "--connections", "200", "--rate", "5",
	       "--storm-at", "1s", "--duration", "3s", "--drain", "2s", "--max-error-rate", "0.2", NULL);
	report_ok(&LG);
	double lost = R("messages.lost");
	cr_assert(LG.rc == 0 || (LG.rc == 1 && lost > 0 && lost <= 200 && strstr(LG.out, "FAIL: messages lost")),
		  M("exit status %d", LG.rc));
	if (lost > 0)
		cr_log_info("storm: %.0f accepted messages lost with their recipients' connections", lost);
	cr_assert(jis(LG.report, "connections.reached", "true"), M(""));
	cr_assert_geq(R("connections.reconnects"), 200, M("everyone reconnects"));
	cr_assert_eq(R("connections.connects"), 200 + R("connections.reconnects"), M(""));
	cr_assert_eq(R("connections.logged_in"), 200, M("everyone is back"));
	cr_assert_eq(R("connections.logins_failed"), 0, M(""));
	cr_assert_eq(R("connections.closed_by_server"), 0, M(""));
	cr_assert_eq(R("errors.total"), jnum0(LG.report, "errors.no_route"), M("errors other than no_route"));
	cr_assert_lt(R("errors.rate"), 0.2, M(""));
	cr_assert_gt(R("messages.sent"), 0, M(""));
	cr_assert_gt(R("messages.skipped"), 0, M("sends during the storm are skipped"));
	/* one path per pair: no duplicates, no reordering */
	cr_assert_eq(R("messages.duplicated"), 0, M(""));
	cr_assert_eq(R("messages.reordered"), 0, M(""));
	cr_assert_leq(R("messages.acked") + R("errors.total"), R("messages.sent"), M(""));
	/* the gateway may also have answered no_route to senders already closed */
	cr_assert_geq(stat_of(&F.gw[0], "no_route"), (int64_t)jnum0(LG.report, "errors.no_route"), M(""));
	all_alive();
}

/* The same storm with every message going through a backend (two gateways,
 * peers on different ones, --receipts): every message is ACKed stored,
 * durable, and delivered again at the next login until receipted, so
 * nothing acked may be lost: exit 0, lost 0. Duplicates are allowed (a
 * message delivered before the storm whose receipt did not make it is
 * delivered again), and so is reordering (a message redelivered at login and
 * one delivered online take different paths, which are not ordered against
 * each other: README "Ordering"). Note lost = acked - delivered is a total,
 * and ACKs lost with the closed senders make acked < delivered here, so this
 * also checks the backend's own count: nothing acked missing from it. */
Test(loadgen, storm_through_backend_no_loss, .timeout = 30)
{
	be_start();
	gw_start(0);
	gw_start(1);
	lg_run("storm-be", "--targets", target(0), "--targets", target(1), "--scenario", "storm", "--connections",
	       "200", "--rate", "5", "--storm-at", "1s", "--receipts", "--duration", "3s", "--drain", "4s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	cr_assert_eq(R("messages.lost"), 0, M(""));
	cr_assert_eq(R("errors.total"), 0, M(""));
	cr_assert_geq(R("connections.reconnects"), 200, M(""));
	cr_assert_eq(R("connections.logged_in"), 200, M(""));
	cr_assert_gt(R("messages.acked"), 0, M(""));
	int64_t stored = stat_of(&F.be, "stored"), left = stat_of(&F.be, "store_messages");
	cr_assert_geq(stored, (int64_t)R("messages.acked"), M("backend stored fewer than acked"));
	cr_assert_leq(R("messages.acked"), R("messages.delivered") + (double)left, M(""));
	cr_assert_eq(stat_of(&F.be, "dedup_hits"), 0, M(""));
	all_alive();
}

/* ---- 8. CSV and SVG -------------------------------------------------------------- */

/* An output file that cannot be written is an error (exit 3; it was 0 with
 * a log line nobody reads in a script). */
Test(loadgen, unwritable_outputs_fail_the_run, .timeout = 30)
{
	gw_start(0);
	lg_run("unwritable", "--targets", target(0), "--scenario", "idle", "--connections", "4", "--duration", "500ms",
	       "--svg", "/nonexistent-dir/plot.svg", NULL);
	cr_assert_eq(LG.rc, 3, M("--svg to an unwritable path"));
	cr_assert(strstr(LG.err, "--svg /nonexistent-dir/plot.svg"), "stderr:\n%s", LG.err);
	lg_run("unwritable-csv", "--targets", target(0), "--scenario", "idle", "--connections", "4", "--duration",
	       "500ms", "--csv", "/nonexistent-dir/series.csv", NULL);
	cr_assert_eq(LG.rc, 3, M("--csv to an unwritable path"));
}

/* --connect-rate is the ramp's rate: a burst of 100 saved-up connects per
 * thread made 200/s ramp at 331/s and 300/s at 878/s. */
Test(loadgen, ramp_follows_connect_rate, .timeout = 60)
{
	gw_start(0);
	static const int rates[] = {200, 400};
	for (int i = 0; i < 2; i++) {
		char rate[16], conns[16];
		snprintf(rate, sizeof rate, "%d", rates[i]);
		snprintf(conns, sizeof conns, "%d", rates[i] * 2); /* a 2 s ramp */
		lg_run("ramp-rate", "--targets", target(0), "--scenario", "idle", "--connections", conns, "--connect-rate",
		       rate, "--duration", "200ms", NULL);
		report_ok(&LG);
		double ramp = R("connections.ramp_s"), got = (double)rates[i] * 2 / ramp;
		cr_assert(got > rates[i] * 0.8 && got < rates[i] * 1.2, M("--connect-rate %d ramped at %.0f/s", rates[i], got));
	}
}

Test(loadgen, csv_and_svg_written, .timeout = 30)
{
	gw_start(0);
	char csv_opt[PATH_MAX + 80], svg_opt[PATH_MAX + 80];
	PATHF(csv_opt, "--csv=%s/series.csv", F.dir);
	PATHF(svg_opt, "--svg=%s/series.svg", F.dir);
	lg_run("series", "--targets", target(0), "--scenario", "chat", "--connections", "50", "--rate", "5",
	       "--duration", "3s", "--drain", "5s", csv_opt, svg_opt, NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M(""));

	char path[PATH_MAX + 64];
	PATHF(path, "%s/series.csv", F.dir);
	char *csv = tc_read_file(path, NULL);
	cr_assert(csv, "no CSV at %s", path);
	const char *header = "t_s,open,logged_in,connects_per_s,sent_per_s,delivered_per_s,errors,p50_us,p99_us,"
			     "watched_cpu_s,watched_rss_mb\n";
	cr_assert(strncmp(csv, header, strlen(header)) == 0, "CSV header:\n%.300s", csv);
	/* one row per second since the start: as many rows as whole seconds ran */
	int rows = 0, saw_traffic = 0;
	double prev_t = 0, sent_sum = 0;
	for (char *line = strchr(csv, '\n') + 1; *line; rows++) {
		char *nl = strchr(line, '\n');
		cr_assert(nl, "CSV row %d not terminated", rows + 1);
		*nl = 0;
		double v[11];
		int n = sscanf(line, "%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3], &v[4],
			       &v[5], &v[6], &v[7], &v[8], &v[9], &v[10]);
		cr_assert_eq(n, 11, "CSV row %d: '%s'", rows + 1, line);
		int commas = 0;
		for (char *c = line; *c; c++)
			commas += *c == ',';
		cr_assert_eq(commas, 10, "CSV row %d: '%s'", rows + 1, line);
		cr_assert_geq(v[0], rows + 1 - 0.001, "row %d at t=%.2f: one row per second", rows + 1, v[0]);
		cr_assert_gt(v[0], prev_t, "row %d: time goes forward", rows + 1);
		cr_assert_leq(v[1], 50, "open");
		cr_assert_leq(v[2], v[1], "logged in <= open");
		if (v[4] > 0 && v[5] > 0)
			saw_traffic = 1;
		sent_sum += v[4] * (v[0] - prev_t);
		prev_t = v[0];
		line = nl + 1;
	}
	free(csv);
	/* rows are taken from the start through ramp, run and drain: at least one
	 * for each whole second of ramp + run, at most one per second the
	 * process ran */
	double secs = (double)LG.wall_ms / 1000, ran = R("connections.ramp_s") + R("messages.run_s");
	cr_assert(rows >= (int)ran && rows <= (int)secs, "%d CSV rows; ramp + run %.2f s, process %.2f s", rows, ran,
		  secs);
	cr_assert_geq(rows, 3, "a 3 s run has at least 3 rows");
	cr_assert(saw_traffic, "no row with messages sent and delivered");
	/* the rates add up to what was sent by the last row (rounded per row) */
	cr_assert_leq(sent_sum, R("messages.sent") + rows * 2.0, M(""));
	cr_assert_geq(sent_sum, 0.5 * R("messages.sent"), M(""));

	PATHF(path, "%s/series.svg", F.dir);
	size_t len = 0;
	char *svg = tc_read_file(path, &len);
	cr_assert(svg, "no SVG at %s", path);
	cr_assert(strncmp(svg, "<svg", 4) == 0, "SVG starts with:\n%.100s", svg);
	cr_assert(len > 7 && strcmp(svg + len - 7, "</svg>\n") == 0, "SVG not closed");
	cr_assert(!strstr(svg, "nan") && !strstr(svg, "inf"), "SVG has non-finite numbers");
	int polylines = 0;
	for (const char *p = svg; (p = strstr(p, "<polyline")); p++) {
		polylines++;
		const char *pts = strstr(p, "points=\"");
		cr_assert(pts, "polyline without points");
		pts += 8;
		int pairs = 0;
		for (const char *q = pts; *q && *q != '"'; q++)
			pairs += *q == ',';
		cr_assert_eq(pairs, rows, "polyline %d has %d points for %d samples", polylines, pairs, rows);
	}
	cr_assert_eq(polylines, 6, "3 panels x 2 lines");
	/* a plot for a report: gridlines with labelled ticks on both axes, the
	 * latency axis in decades, a legend, "sent" dashed over "delivered" */
	int gridlines = 0;
	for (const char *p = svg; (p = strstr(p, "<line ")); p++)
		gridlines++;
	cr_assert_geq(gridlines, 3 * (3 + 3), "%d <line>s: gridlines and legend samples", gridlines);
	cr_assert(strstr(svg, "(log scale)"), "the latency axis is not logarithmic");
	cr_assert(strstr(svg, " us</text>") || strstr(svg, " ms</text>"), "latency ticks are not labelled in time units");
	cr_assert(strstr(svg, ">seconds</text>"), "no time axis label");
	cr_assert(strstr(svg, "stroke-dasharray"), "no dashed series: sent hides under delivered");
	cr_assert(strstr(svg, ">sent</text>") && strstr(svg, ">delivered</text>") && strstr(svg, ">p99</text>"), "legend");
	free(svg);
}

/* ---- 9. with a backend ---------------------------------------------------------- */

/* One gateway with a backend: the peers are on the same gateway, so messages
 * are delivered locally (ACK accepted) and never touch the backend; receipts
 * come back to the senders. */
Test(loadgen, backend_local_delivery_with_receipts, .timeout = 30)
{
	be_start();
	gw_start(0);
	lg_run("local", "--targets", target(0), "--scenario", "chat", "--connections", "200", "--rate", "5",
	       "--receipts", "--duration", "3s", "--drain", "8s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	cr_assert_eq(R("config.receipts"), 1, M(""));
	expect_all_logged_in(200);
	expect_clean_messages();
	cr_assert_gt(R("messages.receipts_in"), 0, M(""));
	/* a receipt follows its delivery; the last ones may still be on the way */
	cr_assert_leq(R("messages.receipts_in"), R("messages.delivered"), M(""));
	cr_assert_geq(R("messages.receipts_in"), 0.5 * R("messages.delivered"), M(""));
	struct proc *g = &F.gw[0];
	cr_assert_eq(stat_of(g, "deliver_local") + stat_of(g, "deliver_cross"), (int64_t)R("messages.sent"), M(""));
	cr_assert_eq(stat_of(g, "deliver_remote"), 0, M(""));
	cr_assert_eq(stat_of(g, "routed_remote"), 0, M(""));
	cr_assert_eq(stat_of(&F.be, "stored"), 0, M(""));
	all_alive();
}

/* Two gateways and one backend; connections alternate targets, so peers i
 * and i^1 are on different gateways and every message goes gateway ->
 * backend (stored, ACK stored) -> the other gateway. */
Test(loadgen, backend_two_gateways_routed, .timeout = 30)
{
	be_start();
	gw_start(0);
	gw_start(1);
	lg_run("routed", "--targets", target(0), "--targets", target(1), "--scenario", "chat", "--connections", "200",
	       "--rate", "5", "--receipts", "--duration", "3s", "--drain", "8s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	cr_assert_eq(R("config.targets"), 2, M(""));
	expect_all_logged_in(200);
	expect_clean_messages();
	cr_assert_gt(R("messages.receipts_in"), 0, M(""));
	cr_assert_leq(R("messages.receipts_in"), R("messages.delivered"), M(""));
	int64_t routed = 0, local = 0;
	for (int i = 0; i < 2; i++) {
		int64_t r = stat_of(&F.gw[i], "routed_remote");
		cr_assert_gt(r, 0, M("gateway %d routed nothing to the backend", i + 1));
		routed += r;
		local += stat_of(&F.gw[i], "deliver_local") + stat_of(&F.gw[i], "deliver_cross");
	}
	cr_assert_eq(routed, (int64_t)R("messages.sent"), M(""));
	cr_assert_eq(local, 0, M("no peer on the same gateway"));
	cr_assert_eq(stat_of(&F.be, "stored"), (int64_t)R("messages.sent"), M(""));
	cr_assert_eq(stat_of(&F.be, "dedup_hits"), 0, M(""));
	all_alive();
}

/* Group chat: 20 groups of 10 (the first user of each creates it and sends),
 * users on two gateways, groups in the backend: every group message is
 * acknowledged as stored and delivered to the 9 other members, in order. */
Test(loadgen, group_scenario_fans_out, .timeout = 30)
{
	be_start();
	gw_start(0);
	gw_start(1);
	lg_run("group", "--targets", target(0), "--targets", target(1), "--scenario", "group", "--group-size", "10",
	       "--connections", "200", "--rate", "10", "--receipts", "--duration", "3s", "--drain", "8s", NULL);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M("exit status %d", LG.rc));
	expect_all_logged_in(200);
	cr_assert(strstr(LG.out, "20 created (0 refused)"), M("groups not all created:\n%s", LG.out));
	/* --rate is per group: 20 groups x 10/s x 3 s (the members' turns once
	 * went unused, and it sent a tenth of that) */
	cr_assert_geq(R("messages.sent"), 480, M("sent %g of the 600 offered", R("messages.sent")));
	cr_assert_eq(R("messages.acked"), R("messages.sent"), M(""));
	cr_assert_eq(R("messages.delivered"), 9 * R("messages.acked"), M("every member gets every message"));
	cr_assert_eq(R("messages.lost"), 0, M(""));
	cr_assert_eq(R("messages.duplicated"), 0, M(""));
	cr_assert_eq(R("messages.reordered"), 0, M(""));
	cr_assert_eq(stat_of(&F.be, "group_msgs"), (int64_t)R("messages.sent"), M("each stored once"));
	all_alive();
}

/* ---- 10. argument errors ------------------------------------------------------------ */

static void expect_usage_error(const char *what, int with_secret, const char *const *opts, const char *needle)
{
	struct lg_out *o = lg_run_v("args", with_secret, opts);
	cr_assert_eq(o->rc, 2, "%s: exit status %d, want 2; stderr:\n%s", what, o->rc, o->err);
	cr_assert(strstr(o->err, needle), "%s: stderr lacks \"%s\":\n%s", what, needle, o->err);
	cr_assert_eq(o->out[0], 0, "%s: stdout not empty:\n%s", what, o->out);
	cr_assert_null(o->report, "%s: a report was written", what);
}

Test(loadgen, argument_errors, .timeout = 30)
{
	/* nothing listens here, and a usage error must not get as far as connecting */
	const char *t = "127.0.0.1:9";
#define U(what, sec, needle, ...)                                                                       \
	do {                                                                                            \
		const char *const o_[] = {"--targets", t, "--connections", "2", __VA_ARGS__, NULL};     \
		expect_usage_error(what, sec, o_, needle);                                              \
	} while (0)
	U("unknown scenario", 1, "--scenario: 'bogus' is not idle, chat, churn, storm or group", "--scenario", "bogus");
	U("missing --secret-file", 0, "--secret-file is required", "--scenario", "chat");
	U("reversed --sources", 1, "--sources", "--sources", "10.0.0.9-10.0.0.1");
	U("short --sources", 1, "--sources", "--sources", "10.0.0");
	U("--sources prefix", 1, "--sources", "--sources", "10.0.0.0/33");
	U("--sources garbage", 1, "--sources", "--sources", "localhost");
	U("bad --targets", 1, "--targets", "--targets", "nonsense");
	U("--connections 0", 1, "--connections", "--connections", "0");
	U("negative --rate", 1, "--rate", "--rate", "-1");
	U("unknown option", 1, "--no-such-option", "--no-such-option", "1");
#undef U
	/* --help is not an error */
	const char *const help[] = {"--help", NULL};
	struct lg_out *o = lg_run_v("help", 0, help);
	cr_assert_eq(o->rc, 0, "--help: exit %d", o->rc);
	cr_assert(strstr(o->out, "--inject-drop") || strstr(o->err, "--inject-drop"), "--help lists the options");
}

/* ---- disabled: bugs found ------------------------------------------------------------ */

/* The open-loop schedule sends every message one interval late, and the
 * thread spins while it waits.
 * Fixed; kept as a regression test.
 * Steps: chat, 2 connections (one pair), 1 thread, --rate 2: the thread's
 * schedule is 4 messages per second, one every 250 ms; 3 s; loopback.
 * Expected: latency (from the scheduled send time) about the loopback round
 * trip: p50 well under 100 ms; the loadgen mostly asleep between sends
 * (cpu.loadgen_run_s well under run_s).
 * Observed: every latency sample is 250 ms + the real latency (p50 ~250 ms;
 * with --rate 0.5 every sample is 1.000 s), and cpu.loadgen_run_s ~= run_s
 * (one core busy for 2 messages per second; 2 threads, 2 cores busy in every
 * chat test, which starves the gateway on a small machine).
 * Cause: loadgen/worker.c:622 pace_sends(): due = floor((now - t0) * per_s) counts
 * the messages whose time has come minus one (message k is due at
 * t0 + k / per_s, so floor(...) + 1 are due), so message k leaves when
 * message k+1 is due and is stamped with its own, earlier time. And in
 * lg_worker_main() (worker.c:796-798) "next = t0 + sched_done / per_s" is then the time of the
 * message just sent, already past, so wait = 0 and the loop polls
 * (io_uring_submit_and_get_events, no sleep) until the next is due. Fix:
 * due = floor(...) + 1 (bounded by the run), and the wait computed to the
 * next unsent message's time. Every latency figure the loadgen has reported
 * is inflated by 1 / (rate x connections per thread). */
Test(loadgen, send_schedule_not_late_and_not_spinning, .timeout = 30)
{
	gw_start(0);
	const char *const opts[] = {"--targets", target(0), "--scenario", "chat", "--connections", "2", "--threads",
				    "1", "--rate", "2", "--duration", "3s", "--drain", "2s", NULL};
	lg_run_v("schedule", 1, opts);
	report_ok(&LG);
	cr_assert_eq(LG.rc, 0, M(""));
	cr_assert_geq(R("latency_us.count"), 8, M(""));
	cr_assert_lt(R("latency_us.p50"), 100000, M("p50 %.0f us on loopback at 4 msg/s", R("latency_us.p50")));
	cr_assert_lt(R("cpu.loadgen_run_s"), 0.5 * R("messages.run_s"), M("the loadgen spins"));
}

/* Two loadgen runs one after the other against the same backend, with the
 * same users (the default --user-base 1): the second run's messages are
 * taken for resends of the first run's and dropped.
 * Fixed; kept as a regression test.
 * Steps: backend + 2 gateways; loadgen chat --receipts, 200 connections,
 * --rate 5, 2 s; then the same run again (within 10 minutes).
 * Expected: the second run like the first: exit 0, lost 0.
 * Observed: second run exit 1, "FAIL: messages lost": acked == sent (2008),
 * delivered 202, lost 1806: only the messages whose cmid the first run had
 * not used (cmid 0, which the backend never dedups, and the few past the
 * first run's last cmid) arrive; every other message is ACKed stored with
 * the smid of the first run's message with the same cmid and never
 * delivered (backend dedup_hits counts them).
 * Cause: the loadgen. Its cmid is the sender's sequence number, from 0 in
 * every run (loadgen/worker.c:639 pace_sends(): f.send.cmid = c->seq_out, with
 * seq_out starting at 0 per process), always to the same peer. PROTOCOL.md
 * 3.2 (as of commit 10182e4) says the backend recognises (sender, cmid,
 * recipient) as a resend for 10 minutes, "so a cmid must not be reused for a
 * different message to the same recipient within 10 minutes" — which is
 * exactly what a second run does (backend/node.c:232 on_route, dedup key
 * cmid ^ hash(recipient)). So "ninja run" followed by the README's loadgen
 * command twice reports ~90% loss. Fix in the loadgen: cmids unique per
 * user across runs, e.g. a random 32-bit base per run (or the start time)
 * added to seq_out; the body keeps carrying seq for the order checks. */
Test(loadgen, second_run_through_backend_not_lost, .timeout = 30)
{
	be_start();
	gw_start(0);
	gw_start(1);
	for (int run = 1; run <= 2; run++) {
		lg_run(run == 1 ? "first" : "second", "--targets", target(0), "--targets", target(1), "--scenario",
		       "chat", "--connections", "200", "--rate", "5", "--receipts", "--duration", "2s", "--drain", "8s",
		       NULL);
		report_ok(&LG);
		cr_assert_eq(LG.rc, 0, M("run %d: exit status %d", run, LG.rc));
		cr_assert_eq(R("messages.lost"), 0, M("run %d", run));
	}
	cr_assert_eq(stat_of(&F.be, "dedup_hits"), 0);
}
