/* test_backend.c: end-to-end tests of backend nodes behind gateways, over
 * loopback TCP.
 *
 * Most tests start the same small cluster: two backends (node ids 11 and 12)
 * and two gateways (node ids 1 and 2, --threads 2), one cluster file listing
 * both backends, and wait until every gateway thread is linked to every
 * backend. Ports are reserved with tc_port_reserve() (parallel tests never
 * clash); each backend gets its own data directory under a temporary
 * directory ($TMPDIR or /tmp) that is removed after the test. The suite's fini
 * stops every process whatever way the test ended (and tclient's watchdog
 * kills them if the test process itself dies).
 *
 * Who owns what is computed here with the same code the nodes use
 * (runtime/cluster.h): users by rendezvous hash, groups by the node id in
 * bits 48..55 of the group id, stored messages by the node id in the smid
 * (runtime/msgid.h).
 *
 * Section 11 and 12 are the regression tests of the security fixes (issue
 * 9): authenticated dist links, heartbeat floods, receipts, groups, budgets,
 * store faults and a full store, the login backlog.
 *
 * The build directory: $GW_BUILD_DIR if set; else the directory two levels
 * above this binary; else "build". Logs go to $builddir/tests/backend-e2e/.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/dist.h"
#include "runtime/cluster.h"
#include "runtime/link.h"
#include "runtime/msgid.h"
#include "runtime/peerauth.h"
#include "runtime/u64map.h"
#include "runtime/token.h"
#include "tests/asan.h"
#include "tests/tclient.h"

#define NBE 2
#define NGW 2
#define GW_THREADS 2
#define RECV_MS 3000  /* bound for a frame that should come at once */
#define START_MS 5000 /* a process's stats endpoint answering */
#define LINKS_MS 10000 /* every link up (reconnects back off up to 5 s) */

/* node ids on both sides of the old 6-bit limit (63): layout 3 takes 1..2047 */
static const unsigned be_node_id[NBE] = {11, 1999};
static const unsigned gw_node_id[NGW] = {1, 1500};
#define RAW_NODE 2040 /* a gateway listed in the cluster file for the tests' hand-driven dist peers */
/* Node threads of each backend (the cluster file's threads): 2 here, 1 in
 * test_backend_tls (GW_TEST_BE_THREADS), so the suite runs both shapes.
 * Links: a gateway thread holds one per backend thread. */
#define BE_THREADS_MAX 4
static unsigned BT = 2;

/* ---- fixture ------------------------------------------------------------------ */

struct proc {
	struct tc_server srv;
	int started;     /* srv holds a process (maybe reaped; its watchdog still to end) */
	int expect_dead; /* stopped or killed on purpose */
	unsigned node, port, stats, runs;
	int port_fd, stats_fd;
	int xport_fd[BE_THREADS_MAX - 1]; /* backends: the ports of node threads 1.. */
	char log[PATH_MAX + 160];
	char data[PATH_MAX + 64]; /* backends: --data-dir */
};

static struct {
	struct proc be[NBE], gw[NGW];
	char logdir[PATH_MAX];
	char tmp[PATH_MAX];
	int have_tmp;
	char secret_path[PATH_MAX + 32], cluster_path[PATH_MAX + 32], cluster_secret[PATH_MAX + 32];
	struct token_secret secret;
	struct cluster cl;
	const char *gw_extra[24];
	const char *const *be_extra; /* more backend options, NULL-terminated (set before topo_start) */
	const char *be_tmpfs;        /* set: each backend's --data-dir is a tmpfs of this size, in a
				      * mount namespace of its own (tmpfs_usable() first) */
	int tls;                     /* GW_TEST_TLS: gateways' client ports are --listen-tls ones */
	char tls_cert[PATH_MAX + 64], tls_key[PATH_MAX + 64];
} T;


static const char *test_name(void)
{
	return criterion_current_test ? criterion_current_test->name : "test";
}

static char *proc_tail(const struct proc *p)
{
	static char buf[2500];
	return tc_server_log_tail(&p->srv, buf, sizeof buf);
}

static void t_init(void)
{
	memset(&T, 0, sizeof T);
	const char *bt = getenv("GW_TEST_BE_THREADS");
	BT = bt && atoi(bt) >= 1 && atoi(bt) <= BE_THREADS_MAX ? (unsigned)atoi(bt) : 2;
	for (int i = 0; i < NBE; i++) {
		T.be[i].port_fd = T.be[i].stats_fd = -1;
		for (int k = 0; k < BE_THREADS_MAX - 1; k++)
			T.be[i].xport_fd[k] = -1;
		T.be[i].node = be_node_id[i];
	}
	for (int i = 0; i < NGW; i++) {
		T.gw[i].port_fd = T.gw[i].stats_fd = -1;
		T.gw[i].node = gw_node_id[i];
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static int stop_status(struct proc *p, const char *role, int was_running)
{
	if (!p->started)
		return 0;
	int st = tc_server_stop(&p->srv, 3000);
	p->started = 0;
	if (p->expect_dead)
		return st;
	if (!was_running)
		cr_log_error("%s %u had exited before the end of the test (wait status 0x%x); log %s", role, p->node,
			     (unsigned)st, p->log);
	else if (st != -1 && WIFSIGNALED(st))
		cr_log_error("%s %u did not stop on SIGTERM (ended by signal %d); log %s", role, p->node, WTERMSIG(st),
			     p->log);
	else if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0)
		cr_log_error("%s %u exited with status %d; log %s", role, p->node, WEXITSTATUS(st), p->log);
	return st;
}

static void t_fini(void)
{
	int gw_ran[NGW], be_ran[NBE];
	for (int i = 0; i < NGW; i++)
		gw_ran[i] = T.gw[i].started && tc_server_running(&T.gw[i].srv);
	for (int i = 0; i < NBE; i++)
		be_ran[i] = T.be[i].started && tc_server_running(&T.be[i].srv);
	/* gateways: a first SIGTERM drains, a second stops at once */
	for (int i = 0; i < NGW; i++)
		if (gw_ran[i])
			tc_server_signal(&T.gw[i].srv, SIGTERM);
	int64_t deadline = tc_now_ms() + 300;
	for (int i = 0; i < NGW; i++)
		if (T.gw[i].started && tc_server_wait(&T.gw[i].srv, (int)(deadline > tc_now_ms() ? deadline - tc_now_ms() : 0)) != 0)
			tc_server_signal(&T.gw[i].srv, SIGTERM);
	for (int i = 0; i < NGW; i++)
		stop_status(&T.gw[i], "gateway", gw_ran[i]);
	for (int i = 0; i < NBE; i++)
		stop_status(&T.be[i], "backend", be_ran[i]);
	for (int i = 0; i < NBE; i++) {
		tc_port_release(T.be[i].port_fd);
		tc_port_release(T.be[i].stats_fd);
		for (int k = 0; k < BE_THREADS_MAX - 1; k++)
			tc_port_release(T.be[i].xport_fd[k]);
	}
	for (int i = 0; i < NGW; i++) {
		tc_port_release(T.gw[i].port_fd);
		tc_port_release(T.gw[i].stats_fd);
	}
	if (T.have_tmp)
		nftw(T.tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	T.have_tmp = 0;
}

TestSuite(backend, .init = t_init, .fini = t_fini, .timeout = 60);

/* Directories, secret, ports and the cluster file of this test. */
static void setup_env(void)
{
	const char *bd = tc_build_dir();
	snprintf(T.logdir, sizeof T.logdir, "%s/tests", bd);
	mkdir(T.logdir, 0755);
	snprintf(T.logdir, sizeof T.logdir, "%s/tests/backend-e2e", bd);
	mkdir(T.logdir, 0755);
	const char *tmpdir = getenv("TMPDIR");
	if (!tmpdir || !*tmpdir)
		tmpdir = "/tmp";
	snprintf(T.tmp, sizeof T.tmp, "%s/test_backend.%s.XXXXXX", tmpdir, test_name());
	cr_assert(mkdtemp(T.tmp), "mkdtemp %s: %s", T.tmp, strerror(errno));
	T.have_tmp = 1;
	snprintf(T.secret_path, sizeof T.secret_path, "%s/secret", T.tmp);
	cr_assert_eq(tc_secret_new(T.secret_path, &T.secret), 0, "cannot write secret %s", T.secret_path);
	/* GW_TEST_TLS: the suite once more with every client over TLS (test_backend_tls) */
	char dir[PATH_MAX + 32];
	snprintf(dir, sizeof dir, "%s/tls", T.tmp);
	T.tls = tc_tls_test_mode(dir, T.tls_cert, T.tls_key, sizeof T.tls_cert);
	cr_assert_geq(T.tls, 0, "TLS test mode: no certificate");
	for (int i = 0; i < NBE; i++) {
		struct proc *p = &T.be[i];
		int fds[BE_THREADS_MAX];
		p->port = tc_port_reserve_n(BT, fds);
		if (p->port) {
			p->port_fd = fds[0];
			for (unsigned k = 1; k < BT; k++)
				p->xport_fd[k - 1] = fds[k];
		}
		p->stats = tc_port_reserve(&p->stats_fd);
		cr_assert(p->port && p->stats, "no free port: %s", strerror(errno));
		snprintf(p->data, sizeof p->data, "%s/be%u", T.tmp, p->node);
	}
	for (int i = 0; i < NGW; i++) {
		struct proc *p = &T.gw[i];
		p->port = tc_port_reserve(&p->port_fd);
		p->stats = tc_port_reserve(&p->stats_fd);
		cr_assert(p->port && p->stats, "no free port: %s", strerror(errno));
	}
	snprintf(T.cluster_path, sizeof T.cluster_path, "%s/cluster.conf", T.tmp);
	FILE *f = fopen(T.cluster_path, "w");
	cr_assert(f, "cannot write %s: %s", T.cluster_path, strerror(errno));
	fprintf(f, "# test_backend %s\n", test_name());
	for (int i = 0; i < NBE; i++)
		fprintf(f, "backend %u 127.0.0.1:%u threads %u\n", T.be[i].node, T.be[i].port, BT);
	for (int i = 0; i < NGW; i++)
		fprintf(f, "gateway %u\n", T.gw[i].node);
	fprintf(f, "gateway %u # hand-driven dist peers of the tests\n", RAW_NODE);
	cr_assert_eq(fclose(f), 0);
	snprintf(T.cluster_secret, sizeof T.cluster_secret, "%s/cluster.secret", T.tmp);
	cr_assert_eq(tc_secret_new(T.cluster_secret, NULL), 0, "cannot write %s", T.cluster_secret);
	char err[256];
	cr_assert_eq(cluster_load(&T.cl, T.cluster_path, err, sizeof err), 0, "cluster file: %s", err);
	cr_assert_eq(T.cl.n, NBE);
	for (int i = 0; i < NBE; i++)
		cr_assert_eq(cluster_find(&T.cl, T.be[i].node), i);
}

static void proc_spawn(struct proc *p, const char *role, const char *const *argv)
{
	cr_assert_eq(access(argv[0], X_OK), 0, "%s binary %s: %s (set GW_BUILD_DIR)", role, argv[0], strerror(errno));
	p->runs++;
	if (p->runs == 1)
		snprintf(p->log, sizeof p->log, "%s/%s.%s%u.log", T.logdir, test_name(), role, p->node);
	else
		snprintf(p->log, sizeof p->log, "%s/%s.%s%u.run%u.log", T.logdir, test_name(), role, p->node, p->runs);
	int r = tc_server_start(&p->srv, argv[0], (char *const *)argv, p->log);
	cr_assert_eq(r, 0, "cannot start %s: %s", argv[0], strerror(errno));
	p->started = 1;
	p->expect_dead = 0;
}

/* Wait until the process's stats endpoint answers /healthz. */
static void proc_wait_up(struct proc *p, const char *role)
{
	int64_t deadline = tc_now_ms() + START_MS;
	char body[256];
	int st;
	for (;;) {
		cr_assert(tc_server_running(&p->srv), "%s %u exited at start-up (wait status 0x%x); log %s:\n%s", role,
			  p->node, (unsigned)p->srv.status, p->log, proc_tail(p));
		st = tc_http_get(p->stats, "/healthz", 1000, body, sizeof body);
		if (st == 200 || tc_now_ms() > deadline)
			break;
		tc_sleep_ms(20);
	}
	cr_assert_eq(st, 200, "%s %u: stats endpoint not up in %d ms (%s); log %s:\n%s", role, p->node, START_MS,
		     st < 0 ? tc_status_name(st) : "http", p->log, proc_tail(p));
}

/* A shell in a mount namespace of its own (T.be_tmpfs, tmpfs_usable): then
 * the script, then its $0. */
#define UNSHARE_SH "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c"

static void be_spawn(int i)
{
	struct proc *p = &T.be[i];
	char path[PATH_MAX + 32], node[16], stats[64];
	snprintf(path, sizeof path, "%s/backend/backend", tc_build_dir());
	snprintf(node, sizeof node, "%u", p->node);
	snprintf(stats, sizeof stats, "127.0.0.1:%u", p->stats);
	const char *argv[48] = {path,	 "--node",   node,    "--cluster",	T.cluster_path, "--cluster-secret-file",
				T.cluster_secret, "--data-dir", p->data, "--stats-listen", stats};
	size_t n = 11;
	char mount[128];
	if (T.be_tmpfs) {
		/* unshare and sh exec in turn: the pid is the backend's */
		snprintf(mount, sizeof mount, "mkdir -p \"$0\" && mount -t tmpfs -o size=%s tmpfs \"$0\" && exec \"$@\"", T.be_tmpfs);
		const char *pre[] = {UNSHARE_SH, mount, p->data};
		size_t k = sizeof pre / sizeof pre[0];
		memmove(argv + k, argv, n * sizeof *argv);
		memcpy(argv, pre, sizeof pre);
		n += k;
	}
	for (size_t k = 0; T.be_extra && T.be_extra[k]; k++) {
		cr_assert_lt(n, sizeof argv / sizeof argv[0] - 1, "too many backend options");
		argv[n++] = T.be_extra[k];
	}
	argv[n] = NULL;
	proc_spawn(p, "be", argv);
}

static void gw_spawn(int i)
{
	struct proc *p = &T.gw[i];
	char path[PATH_MAX + 32], node[16], listen[64], stats[64], threads[16];
	snprintf(path, sizeof path, "%s/gateway/gateway", tc_build_dir());
	snprintf(node, sizeof node, "%u", p->node);
	snprintf(listen, sizeof listen, "127.0.0.1:%u", p->port);
	snprintf(stats, sizeof stats, "127.0.0.1:%u", p->stats);
	snprintf(threads, sizeof threads, "%d", GW_THREADS);
	const char *argv[64];
	size_t n = 0;
	argv[n++] = path;
	if (T.tls) {
		argv[n++] = "--listen";
		argv[n++] = "off";
		argv[n++] = "--tls-cert";
		argv[n++] = T.tls_cert;
		argv[n++] = "--tls-key";
		argv[n++] = T.tls_key;
	}
	argv[n++] = T.tls ? "--listen-tls" : "--listen";
	argv[n++] = listen;
	argv[n++] = "--stats-listen";
	argv[n++] = stats;
	argv[n++] = "--auth-secret-file";
	argv[n++] = T.secret_path;
	argv[n++] = "--threads";
	argv[n++] = threads;
	argv[n++] = "--node";
	argv[n++] = node;
	argv[n++] = "--cluster";
	argv[n++] = T.cluster_path;
	argv[n++] = "--cluster-secret-file";
	argv[n++] = T.cluster_secret;
	argv[n++] = "--drain-timeout";
	argv[n++] = "1s";
	for (size_t k = 0; T.gw_extra[k]; k++) {
		cr_assert_lt(n, sizeof argv / sizeof argv[0] - 1, "too many options");
		argv[n++] = T.gw_extra[k];
	}
	argv[n] = NULL;
	proc_spawn(p, "gw", argv);
}

/* ---- stats -------------------------------------------------------------------- */

static int64_t stat_num(struct proc *p, const char *key)
{
	static char body[65536];
	int st = tc_http_get(p->stats, "/stats", 2000, body, sizeof body);
	cr_assert_eq(st, 200, "node %u: GET /stats: %s", p->node, st < 0 ? tc_status_name(st) : "bad status");
	int64_t v = tc_json_num(body, key);
	cr_assert_geq(v, 0, "node %u: no \"%s\" in /stats", p->node, key);
	return v;
}

/* Poll until key == want ('=') or key >= want ('>') or key <= want ('<'),
 * for up to timeout_ms. Returns the last value. */
static int64_t wait_stat(struct proc *p, const char *key, char cmp, int64_t want, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms, v;
	for (;;) {
		v = stat_num(p, key);
		int ok = cmp == '=' ? v == want : cmp == '>' ? v >= want : v <= want;
		if (ok || tc_now_ms() > deadline)
			return v;
		tc_sleep_ms(20);
	}
}

static void expect_stat(struct proc *p, const char *key, char cmp, int64_t want, int timeout_ms)
{
	int64_t v = wait_stat(p, key, cmp, want, timeout_ms);
	int ok = cmp == '=' ? v == want : cmp == '>' ? v >= want : v <= want;
	cr_assert(ok, "node %u: %s is %lld, want %s %lld (waited %d ms)", p->node, key, (long long)v,
		  cmp == '=' ? "==" : cmp == '>' ? ">=" : "<=", (long long)want, timeout_ms);
}

/* The sum of key over the backends, polled until it is want (up to timeout_ms). */
static void expect_sum(const char *key, int64_t want, int timeout_ms, const char *what)
{
	int64_t deadline = tc_now_ms() + timeout_ms, v;
	for (;;) {
		v = 0;
		for (int i = 0; i < NBE; i++)
			v += stat_num(&T.be[i], key);
		if (v == want || tc_now_ms() > deadline)
			break;
		tc_sleep_ms(20);
	}
	cr_assert_eq(v, want, "%s: %s over the backends is %lld, want %lld (waited %d ms)", what, key, (long long)v,
		     (long long)want, timeout_ms);
}

static int64_t stat_sum(const char *key)
{
	int64_t v = 0;
	for (int i = 0; i < NBE; i++)
		v += stat_num(&T.be[i], key);
	return v;
}

/* Every gateway thread linked to every live backend, and every live backend
 * linked to every gateway thread. */
static void wait_links(void)
{
	int live = 0;
	for (int i = 0; i < NBE; i++)
		live += T.be[i].started && !T.be[i].expect_dead;
	for (int i = 0; i < NGW; i++)
		expect_stat(&T.gw[i], "links_up", '=', GW_THREADS * live * (int)BT, LINKS_MS);
	for (int i = 0; i < NBE; i++)
		if (T.be[i].started && !T.be[i].expect_dead)
			expect_stat(&T.be[i], "links_up", '=', GW_THREADS * NGW * (int)BT, LINKS_MS);
}

/* Start the cluster; gateway options besides the defaults as NULL-terminated
 * name, value words. */
static void topo_start(const char *first, ...)
{
	size_t n = 0;
	va_list ap;
	va_start(ap, first);
	for (const char *a = first; a; a = va_arg(ap, const char *))
		if (n < sizeof T.gw_extra / sizeof T.gw_extra[0] - 1)
			T.gw_extra[n++] = a;
	va_end(ap);
	T.gw_extra[n] = NULL;
	setup_env();
	for (int i = 0; i < NBE; i++)
		be_spawn(i);
	for (int i = 0; i < NBE; i++)
		proc_wait_up(&T.be[i], "backend");
	for (int i = 0; i < NGW; i++)
		gw_spawn(i);
	for (int i = 0; i < NGW; i++)
		proc_wait_up(&T.gw[i], "gateway");
	wait_links();
}

/* Every process not stopped on purpose still runs (nothing crashed). */
static void all_alive(void)
{
	for (int i = 0; i < NBE; i++)
		if (T.be[i].started && !T.be[i].expect_dead)
			cr_assert(tc_server_running(&T.be[i].srv), "backend %u died (wait status 0x%x); log %s:\n%s",
				  T.be[i].node, (unsigned)T.be[i].srv.status, T.be[i].log, proc_tail(&T.be[i]));
	for (int i = 0; i < NGW; i++)
		if (T.gw[i].started && !T.gw[i].expect_dead)
			cr_assert(tc_server_running(&T.gw[i].srv), "gateway %u died (wait status 0x%x); log %s:\n%s",
				  T.gw[i].node, (unsigned)T.gw[i].srv.status, T.gw[i].log, proc_tail(&T.gw[i]));
}

/* SIGKILL backend i and reap it (it stays down until be_restart). */
static void be_kill9(int i)
{
	struct proc *p = &T.be[i];
	p->expect_dead = 1;
	cr_assert_eq(tc_server_signal(&p->srv, SIGKILL), 0, "kill: %s", strerror(errno));
	cr_assert_eq(tc_server_wait(&p->srv, 5000), 0, "backend %u did not die on SIGKILL", p->node);
	cr_assert(WIFSIGNALED(p->srv.status) && WTERMSIG(p->srv.status) == SIGKILL,
		  "backend %u: wait status 0x%x after SIGKILL", p->node, (unsigned)p->srv.status);
	tc_server_stop(&p->srv, 0); /* reaped already: ends its watchdog */
	p->started = 0;
}

/* Start backend i again on the same port and data directory. The killed
 * process's listening socket can outlive it for a moment (its io_uring is
 * torn down asynchronously after exit), so first wait until the port can be
 * bound again as the backend binds it (SO_REUSEADDR), up to 5 s. */
static void be_restart(int i, int wait_up)
{
	for (unsigned k = 0; k < BT; k++) {
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(T.be[i].port + k)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	for (int64_t deadline = tc_now_ms() + 5000;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		int r = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? listen(fd, 1) : -1;
		close(fd);
		if (r == 0 || tc_now_ms() > deadline)
			break;
		tc_sleep_ms(20);
	}
	}
	be_spawn(i);
	if (wait_up)
		proc_wait_up(&T.be[i], "backend");
}

/* ---- users ---------------------------------------------------------------------- */

/* The first user id >= from owned by backend index be. */
static uint64_t user_of(int be, uint64_t from)
{
	for (uint64_t u = from;; u++)
		if ((int)cluster_user_owner(&T.cl, u) == be)
			return u;
}

/* A user id >= from owned by node thread t of backend be. */
static uint64_t user_of_thread(int be, unsigned t, uint64_t from)
{
	for (uint64_t u = from;; u++)
		if (cluster_user_link(&T.cl, u) == T.cl.nodes[be].link0 + t)
			return u;
}

/* The port of the node thread that owns user u (for hand-driven links). */
static unsigned owner_port(uint64_t u)
{
	int be = (int)cluster_user_owner(&T.cl, u);
	return T.be[be].port + (cluster_user_link(&T.cl, u) - T.cl.nodes[be].link0);
}

/* ---- client helpers --------------------------------------------------------------- */

static const char *describe(const struct tc_frame *fr)
{
	static char s[320];
	const struct proto_frame *f = &fr->f;
	switch (f->type) {
	case PROTO_ERROR:
		snprintf(s, sizeof s, "ERROR %s (%u) ref %llu \"%.*s\"", proto_err_name(f->error.code), f->error.code,
			 (unsigned long long)f->error.ref, (int)f->error.text.len, (const char *)f->error.text.p);
		break;
	case PROTO_LOGIN_RESULT:
		snprintf(s, sizeof s, "LOGIN_RESULT status %s (%u)",
			 f->login_result.status ? proto_err_name(f->login_result.status) : "ok", f->login_result.status);
		break;
	case PROTO_ACK:
		snprintf(s, sizeof s, "ACK cmid %llu status %u smid %llu", (unsigned long long)f->ack.cmid, f->ack.status,
			 (unsigned long long)f->ack.smid);
		break;
	case PROTO_DELIVER:
		snprintf(s, sizeof s, "DELIVER flags %u smid %llu from %llu group %llu body \"%.*s\"", f->deliver.flags,
			 (unsigned long long)f->deliver.smid, (unsigned long long)f->deliver.from,
			 (unsigned long long)f->deliver.group, (int)(f->deliver.body.len > 40 ? 40 : f->deliver.body.len),
			 (const char *)f->deliver.body.p);
		break;
	case PROTO_RECEIPT:
		snprintf(s, sizeof s, "RECEIPT kind %u peer %llu smid %llu", f->receipt.kind,
			 (unsigned long long)f->receipt.peer, (unsigned long long)f->receipt.smid);
		break;
	case PROTO_GROUP_RESULT:
		snprintf(s, sizeof s, "GROUP_RESULT req %llu status %u group %llu", (unsigned long long)f->group_result.req,
			 f->group_result.status, (unsigned long long)f->group_result.group);
		break;
	case PROTO_KICKED:
		snprintf(s, sizeof s, "KICKED reason %u", f->kicked.reason);
		break;
	default:
		snprintf(s, sizeof s, "%s (0x%02x), %u bytes", proto_type_name(f->type), f->type, fr->size);
		break;
	}
	return s;
}

static void conn_open(struct tc_conn *c, int gw)
{
	int r = tc_connect(c, T.gw[gw].port, 0, 3000);
	cr_assert_eq(r, 0, "connect to gateway %u (127.0.0.1:%u): %s (%s)", T.gw[gw].node, T.gw[gw].port,
		     tc_status_name(r), strerror(errno));
}

static void login_ok(struct tc_conn *c, uint64_t user)
{
	struct tc_frame fr;
	long r = tc_login(c, &T.secret, user, &fr, RECV_MS);
	cr_assert_gt(r, 0, "login of user %llu: %s", (unsigned long long)user, tc_status_name(r));
	cr_assert(fr.f.type == PROTO_LOGIN_RESULT && fr.f.login_result.status == 0, "login of user %llu: got %s",
		  (unsigned long long)user, describe(&fr));
}

static void open_login(struct tc_conn *c, int gw, uint64_t user)
{
	conn_open(c, gw);
	login_ok(c, user);
}

static void send_raw(struct tc_conn *c, const void *p, size_t n)
{
	int r = tc_send_raw(c, p, n, 5000);
	cr_assert_eq(r, 0, "send of %zu bytes: %s", n, tc_status_name(r));
}

static void send_frame(struct tc_conn *c, const struct proto_frame *f)
{
	int r = tc_send_frame(c, f);
	cr_assert_eq(r, 0, "send %s: %s", proto_type_name(f->type), tc_status_name(r));
}

static void send_body(struct tc_conn *c, uint64_t cmid, uint64_t to, int group, const void *body, uint32_t len)
{
	struct proto_frame f = {.type = PROTO_SEND};
	f.send.cmid = cmid;
	f.send.to = to;
	f.send.group = (uint8_t)group;
	f.send.body = (struct proto_bytes){body, len};
	send_frame(c, &f);
}

static void send_msg(struct tc_conn *c, uint64_t cmid, uint64_t to, const char *body)
{
	send_body(c, cmid, to, 0, body, (uint32_t)strlen(body));
}

static void send_group_msg(struct tc_conn *c, uint64_t cmid, uint64_t gid, const char *body)
{
	send_body(c, cmid, gid, 1, body, (uint32_t)strlen(body));
}

static void send_receipt(struct tc_conn *c, uint8_t kind, uint64_t peer, uint64_t smid)
{
	struct proto_frame f = {.type = PROTO_RECEIPT};
	f.receipt.kind = kind;
	f.receipt.peer = peer;
	f.receipt.smid = smid;
	send_frame(c, &f);
}

static void group_req(struct tc_conn *c, uint8_t op, uint64_t req, uint64_t gid, const uint64_t *members, uint32_t n)
{
	static uint8_t buf[PROTO_MAX_GROUP_OP * 10 + 1];
	uint8_t *p = buf;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t v = members[i];
		while (v >= 0x80) {
			*p++ = (uint8_t)(v | 0x80);
			v >>= 7;
		}
		*p++ = (uint8_t)v;
	}
	struct proto_frame f = {.type = PROTO_GROUP};
	f.group.op = op;
	f.group.req = req;
	f.group.group = gid;
	f.group.count = n;
	f.group.members = (struct proto_bytes){buf, (uint32_t)(p - buf)};
	send_frame(c, &f);
}

/* Receive a frame of the given type within timeout_ms. */
static void expect_type(struct tc_conn *c, struct tc_frame *fr, uint8_t type, int timeout_ms, const char *what)
{
	long r = tc_recv_frame(c, fr, timeout_ms);
	cr_assert_gt(r, 0, "%s: no %s frame: %s", what, proto_type_name(type), tc_status_name(r));
	cr_assert_eq(fr->f.type, type, "%s: got %s, want %s", what, describe(fr), proto_type_name(type));
}

/* Expect ACK cmid with the status; returns its smid. */
static uint64_t expect_ack(struct tc_conn *c, uint64_t cmid, unsigned status, const char *what)
{
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_ACK, RECV_MS, what);
	cr_assert(fr.f.ack.cmid == cmid && fr.f.ack.status == status, "%s: got %s, want ACK cmid %llu status %u", what,
		  describe(&fr), (unsigned long long)cmid, status);
	cr_assert_neq(fr.f.ack.smid, 0, "%s: ACK with smid 0", what);
	return fr.f.ack.smid;
}

static void expect_error(struct tc_conn *c, unsigned code, uint64_t ref, int timeout_ms, const char *what)
{
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_ERROR, timeout_ms, what);
	cr_assert(fr.f.error.code == code && fr.f.error.ref == ref, "%s: got %s, want ERROR %s (%u) ref %llu", what,
		  describe(&fr), proto_err_name(code), code, (unsigned long long)ref);
}

/* Expect GROUP_RESULT for req with the status; returns its group id. */
static uint64_t expect_group_result(struct tc_conn *c, uint64_t req, unsigned status, const char *what)
{
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_GROUP_RESULT, RECV_MS, what);
	cr_assert(fr.f.group_result.req == req && fr.f.group_result.status == status,
		  "%s: got %s, want GROUP_RESULT req %llu status %s (%u)", what, describe(&fr), (unsigned long long)req,
		  status ? proto_err_name(status) : "ok", status);
	if (status == 0)
		cr_assert_neq(fr.f.group_result.group, 0, "%s: group id 0", what);
	return fr.f.group_result.group;
}

/* Expect DELIVER of body from `from` (group 0: a 1:1 message); returns the smid. */
static uint64_t expect_deliver(struct tc_conn *c, uint64_t from, uint64_t group, const char *body, const char *what)
{
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_DELIVER, RECV_MS, what);
	const struct proto_frame *f = &fr.f;
	cr_assert_eq(f->deliver.from, from, "%s: got %s, want from %llu", what, describe(&fr), (unsigned long long)from);
	cr_assert_eq(f->deliver.flags & ~PROTO_DELIVER_CMID, group ? PROTO_DELIVER_GROUP : 0,
		     "%s: got %s, want flags %u", what, describe(&fr), group ? PROTO_DELIVER_GROUP : 0);
	cr_assert_eq(f->deliver.group, group, "%s: got %s, want group %llu", what, describe(&fr),
		     (unsigned long long)group);
	size_t n = strlen(body);
	cr_assert(f->deliver.body.len == n && memcmp(f->deliver.body.p, body, n) == 0, "%s: got %s, want body \"%s\"",
		  what, describe(&fr), body);
	cr_assert_neq(f->deliver.smid, 0, "%s: smid 0", what);
	uint64_t t = f->deliver.time_ms / 1000;
	cr_assert(t + 30 >= tc_wall_s() && t <= tc_wall_s() + 5, "%s: time_ms %llu is not the wall clock", what,
		  (unsigned long long)f->deliver.time_ms);
	return f->deliver.smid;
}

/* ua logged in on gateway 0 sends body to ub logged in on gateway 1, who
 * receives it (through ub's backend); both connections are closed after. */
static void expect_chat_across(uint64_t ua, uint64_t ub, const char *body, const char *what)
{
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	send_msg(&a, 1, ub, body);
	expect_deliver(&b, ua, 0, body, what);
	tc_close(&a);
	tc_close(&b);
}

static void expect_receipt(struct tc_conn *c, uint8_t kind, uint64_t peer, uint64_t smid, const char *what)
{
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_RECEIPT, RECV_MS, what);
	cr_assert(fr.f.receipt.kind == kind && fr.f.receipt.peer == peer && fr.f.receipt.smid == smid,
		  "%s: got %s, want RECEIPT kind %u peer %llu smid %llu", what, describe(&fr), kind,
		  (unsigned long long)peer, (unsigned long long)smid);
}

/* Nothing arrives (and no close) within ms. */
static void expect_silent(struct tc_conn *c, int ms, const char *what)
{
	struct tc_frame fr;
	long r = tc_recv_frame(c, &fr, ms);
	cr_assert_eq(r, TC_TIMEOUT, "%s: want silence, got %s", what, r > 0 ? describe(&fr) : tc_status_name(r));
}

static void ping_ok(struct tc_conn *c, const char *what)
{
	struct proto_frame p = {.type = PROTO_PING};
	p.ping.data = (struct proto_bytes){(const uint8_t *)"tb", 2};
	send_frame(c, &p);
	struct tc_frame fr;
	expect_type(c, &fr, PROTO_PONG, RECV_MS, what);
	cr_assert(fr.f.ping.data.len == 2 && memcmp(fr.f.ping.data.p, "tb", 2) == 0, "%s: PONG data differs", what);
}

/* ---- 1. the topology ------------------------------------------------------------------ */

Test(backend, topology_links_up, .timeout = 30)
{
	topo_start(NULL);
	for (int i = 0; i < NGW; i++) {
		cr_assert_eq(stat_num(&T.gw[i], "node"), T.gw[i].node);
		cr_assert_eq(stat_num(&T.gw[i], "threads"), GW_THREADS);
		cr_assert_eq(stat_num(&T.gw[i], "link_reconnects"), 0, "gateway %u reconnected at start", T.gw[i].node);
	}
	for (int i = 0; i < NBE; i++) {
		cr_assert_eq(stat_num(&T.be[i], "node"), T.be[i].node);
		cr_assert_eq(stat_num(&T.be[i], "sessions"), 0);
		cr_assert_eq(stat_num(&T.be[i], "store_messages"), 0);
	}
	/* a login is announced to the user's owner only (PROTOCOL.md 4.3) */
	struct tc_conn c;
	int owner = (int)cluster_user_owner(&T.cl, 42);
	open_login(&c, 0, 42);
	expect_stat(&T.be[owner], "sessions", '=', 1, 3000);
	expect_stat(&T.be[owner], "sessions_up", '=', 1, 3000);
	for (int i = 0; i < NBE; i++)
		cr_assert_eq(stat_num(&T.be[i], "sessions"), i == owner, "backend %u: sessions", T.be[i].node);
	tc_close(&c);
	for (int i = 0; i < NBE; i++)
		expect_stat(&T.be[i], "sessions", '=', 0, 3000);
	all_alive();
}

/* Every metric the shipped alert rules and dashboard name (deploy/monitoring/)
 * is one a running gateway or backend exports: a counter renamed in the
 * servers would leave an alert that never fires and an empty panel. Names
 * are the words starting gateway_, backend_ or process_ in either file;
 * each must begin a sample line of /metrics ("name{" or "name "); a
 * "$name" is a dashboard variable. */
static int metric_exported(const char *body, const char *name, size_t len)
{
	for (const char *p = body; (p = strstr(p, name)) != NULL; p++) {
		if (p != body && p[-1] != '\n')
			continue;
		if (strncmp(p, name, len) == 0 && (p[len] == '{' || p[len] == ' '))
			return 1;
	}
	return 0;
}

Test(backend, monitoring_files_name_exported_metrics, .timeout = 30)
{
	topo_start(NULL);
	static char gm[1 << 20], bm[1 << 20];
	cr_assert_eq(tc_http_get(T.gw[0].stats, "/metrics", 2000, gm, sizeof gm), 200);
	cr_assert_eq(tc_http_get(T.be[0].stats, "/metrics", 2000, bm, sizeof bm), 200);
	static const char *const files[] = {"deploy/monitoring/chat-alerts.yml", "deploy/monitoring/grafana-dashboard.json"};
	for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
		char path[PATH_MAX + 64];
		snprintf(path, sizeof path, "%s", files[f]);
		if (access(path, R_OK) != 0) /* run from elsewhere than the source root */
			snprintf(path, sizeof path, "%s/../%s", tc_build_dir(), files[f]);
		size_t len;
		char *text = tc_read_file(path, &len);
		cr_assert_not_null(text, "cannot read %s", path);
		unsigned names = 0;
		for (size_t i = 0; i < len; i++) {
			static const char *const prefix[] = {"gateway_", "backend_", "process_"};
			size_t k = 0;
			while (k < 3 && strncmp(text + i, prefix[k], strlen(prefix[k])) != 0)
				k++;
			if (k == 3 || (i > 0 && (text[i - 1] == '_' || text[i - 1] == '$' || (text[i - 1] >= 'a' && text[i - 1] <= 'z') ||
						 (text[i - 1] >= '0' && text[i - 1] <= '9'))))
				continue;
			if (i >= 9 && strncmp(text + i - 9, "\"name\": \"", 9) == 0)
				continue; /* the dashboard's variable definitions */
			size_t e = i;
			while (e < len && (text[e] == '_' || (text[e] >= 'a' && text[e] <= 'z') || (text[e] >= '0' && text[e] <= '9')))
				e++;
			char name[128];
			cr_assert_lt(e - i, sizeof name);
			memcpy(name, text + i, e - i);
			name[e - i] = 0;
			const char *body = k == 1 ? bm : gm;
			cr_assert(metric_exported(body, name, e - i) || (k == 2 && metric_exported(bm, name, e - i)),
				  "%s names %s, which the %s does not export", files[f], name, k == 1 ? "backend" : "gateway");
			names++;
			i = e;
		}
		cr_assert_gt(names, 20, "%s: only %u metric names found", files[f], names);
		free(text);
	}
	all_alive();
}

/* ---- 2. 1:1 across gateways ------------------------------------------------------------- */

Test(backend, one_to_one_across_gateways, .timeout = 30)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 1000), ub = user_of(1, 2000);
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	send_msg(&a, 7, ub, "hello b, from gateway 1");
	uint64_t smid = expect_deliver(&b, ua, 0, "hello b, from gateway 1", "b receives a's message");
	cr_assert_eq(msgid_node(smid), T.be[1].node, "smid %llu was made by node %u, want b's backend %u",
		     (unsigned long long)smid, msgid_node(smid), T.be[1].node);
	uint64_t acked = expect_ack(&a, 7, PROTO_ACK_STORED, "a's ACK");
	cr_assert_eq(acked, smid, "ACK smid %llu != DELIVER smid %llu", (unsigned long long)acked,
		     (unsigned long long)smid);
	expect_stat(&T.be[1], "store_messages", '=', 1, 3000);

	/* b's delivered receipt: deletes the stored message, and reaches a */
	send_receipt(&b, PROTO_RCPT_DELIVERED, ua, smid);
	expect_receipt(&a, PROTO_RCPT_DELIVERED, ub, smid, "a gets b's delivered receipt");
	expect_stat(&T.be[1], "store_messages", '=', 0, 3000);
	expect_stat(&T.be[1], "store_mailbox_entries", '=', 0, 3000);
	send_receipt(&b, PROTO_RCPT_READ, ua, smid);
	expect_receipt(&a, PROTO_RCPT_READ, ub, smid, "a gets b's read receipt");

	/* and back: stored by a's backend */
	send_msg(&b, 8, ua, "hello a");
	uint64_t s2 = expect_deliver(&a, ub, 0, "hello a", "a receives b's reply");
	cr_assert_eq(msgid_node(s2), T.be[0].node);
	cr_assert_eq(expect_ack(&b, 8, PROTO_ACK_STORED, "b's ACK"), s2);
	send_receipt(&a, PROTO_RCPT_DELIVERED, ub, s2);
	expect_receipt(&b, PROTO_RCPT_DELIVERED, ua, s2, "b gets a's receipt");
	expect_stat(&T.be[0], "store_messages", '=', 0, 3000);
	expect_silent(&a, 200, "nothing more for a");
	expect_silent(&b, 1, "nothing more for b");
	tc_close(&a);
	tc_close(&b);
	all_alive();
}

/* A login on the other gateway replaces the first session: the user's
 * backend tells the old gateway to kick it (PROTOCOL.md 4.2 SESSION_UP). */
Test(backend, login_elsewhere_kicks, .timeout = 30)
{
	topo_start(NULL);
	uint64_t u = user_of(1, 60000), us = user_of(0, 61000);
	struct tc_conn c1, c2, s;
	struct tc_frame fr;
	open_login(&c1, 0, u);
	expect_stat(&T.be[1], "sessions", '=', 1, 3000);
	open_login(&c2, 1, u);
	expect_type(&c1, &fr, PROTO_KICKED, RECV_MS, "the first session");
	cr_assert_eq(fr.f.kicked.reason, PROTO_KICK_ELSEWHERE);
	long r = tc_expect_eof(&c1, RECV_MS);
	cr_assert_eq(r, 0, "kicked connection: want EOF, got %s", tc_status_name(r));
	/* messages go to the new session */
	open_login(&s, 0, us);
	send_msg(&s, 1, u, "to the newest");
	uint64_t smid = expect_deliver(&c2, us, 0, "to the newest", "the new session receives");
	cr_assert_eq(expect_ack(&s, 1, PROTO_ACK_STORED, "sender's ACK"), smid);
	ping_ok(&c2, "the new session stays");
	tc_close(&c1);
	tc_close(&c2);
	tc_close(&s);
	all_alive();
}

/* ---- 3. offline delivery, redelivery until receipts -------------------------------------- */

Test(backend, offline_store_and_redelivery, .timeout = 40)
{
	topo_start(NULL);
	enum { N = 20 };
	uint64_t ua = user_of(0, 3000), uc = user_of(1, 4000);
	struct proc *bc = &T.be[1]; /* c's backend */
	struct tc_conn a, c;
	open_login(&a, 0, ua);
	char body[N][32];
	uint64_t smid[N];
	for (int i = 0; i < N; i++) {
		snprintf(body[i], sizeof body[i], "offline message %02d", i);
		send_msg(&a, 100 + (uint64_t)i, uc, body[i]);
	}
	for (int i = 0; i < N; i++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_ACK, RECV_MS, "ACKs for c");
		uint64_t cmid = fr.f.ack.cmid;
		cr_assert(cmid >= 100 && cmid < 100 + N && fr.f.ack.status == PROTO_ACK_STORED && fr.f.ack.smid,
			  "ACK %d: got %s, want status stored (1)", i, describe(&fr));
		smid[cmid - 100] = fr.f.ack.smid;
	}
	expect_stat(bc, "store_messages", '=', N, 3000);
	expect_stat(bc, "store_mailbox_entries", '=', N, 3000);

	/* c logs in on the other gateway: all 20, in order */
	char what[64];
	open_login(&c, 1, uc);
	uint64_t last = 0;
	for (int i = 0; i < N; i++) {
		snprintf(what, sizeof what, "first login: message %d", i);
		uint64_t s = expect_deliver(&c, ua, 0, body[i], what);
		cr_assert_gt(s, last, "%s: smid not increasing", what);
		cr_assert_eq(s, smid[i], "%s: smid %llu, ACK said %llu", what, (unsigned long long)s,
			     (unsigned long long)smid[i]);
		last = s;
	}
	expect_silent(&c, 200, "first login: nothing after the 20");
	tc_close(&c);

	/* no receipts yet: a second login (on the first gateway) gets them again */
	open_login(&c, 0, uc);
	int got[N] = {0}, seen = 0;
	int64_t deadline = tc_now_ms() + 5000;
	while (seen < N) {
		struct tc_frame fr;
		long r = tc_recv_frame(&c, &fr, (int)(deadline > tc_now_ms() ? deadline - tc_now_ms() : 0));
		cr_assert_gt(r, 0, "second login: %d of %d messages again, then %s", seen, N, tc_status_name(r));
		cr_assert_eq(fr.f.type, PROTO_DELIVER, "second login: got %s", describe(&fr));
		int k = -1;
		for (int i = 0; i < N; i++)
			if (smid[i] == fr.f.deliver.smid)
				k = i;
		cr_assert_geq(k, 0, "second login: unknown %s", describe(&fr));
		cr_assert(fr.f.deliver.body.len == strlen(body[k]) && memcmp(fr.f.deliver.body.p, body[k], strlen(body[k])) == 0,
			  "second login: body of message %d altered", k);
		if (!got[k]++)
			seen++;
	}
	/* delivered receipts for all: they are deleted, and a learns of each */
	for (int i = 0; i < N; i++)
		send_receipt(&c, PROTO_RCPT_DELIVERED, ua, smid[i]);
	int rc[N] = {0};
	for (int i = 0; i < N; i++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_RECEIPT, RECV_MS, "a gets c's receipts");
		int k = -1;
		for (int j = 0; j < N; j++)
			if (smid[j] == fr.f.receipt.smid)
				k = j;
		cr_assert(k >= 0 && fr.f.receipt.peer == uc && fr.f.receipt.kind == PROTO_RCPT_DELIVERED && !rc[k],
			  "a: unexpected %s", describe(&fr));
		rc[k] = 1;
	}
	expect_stat(bc, "store_mailbox_entries", '=', 0, 3000);
	expect_stat(bc, "store_messages", '=', 0, 3000);
	tc_close(&c);

	/* acknowledged: not delivered again, on either gateway */
	for (int g = 1; g >= 0; g--) {
		open_login(&c, g, uc);
		expect_silent(&c, 400, "login after the receipts: nothing redelivered");
		ping_ok(&c, "ping after login");
		tc_close(&c);
	}
	tc_close(&a);
	all_alive();
}

/* ---- 4. receipts for an offline sender ----------------------------------------------------- */

Test(backend, receipt_to_offline_sender, .timeout = 30)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 5000), ub = user_of(1, 6000);
	/* the delivered receipt is checked by the backend that stored the
	 * message (b's owner), which relays it to a's owner (through b's
	 * gateway) to be kept; the read receipt, which no backend can check, goes
	 * to a's owner directly: a's owner keeps both */
	struct proc *ba = &T.be[0], *bb = &T.be[1];
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	send_msg(&a, 1, ub, "will you read this?");
	uint64_t smid = expect_deliver(&b, ua, 0, "will you read this?", "b receives");
	cr_assert_eq(expect_ack(&a, 1, PROTO_ACK_STORED, "a's ACK"), smid);
	cr_assert_eq(msgid_node(smid), bb->node);
	/* a leaves; wait until its owner knows (else the receipt is routed to
	 * the old session); b's owner never heard of a's session */
	int64_t down_a = stat_num(ba, "sessions_down"), down_b = stat_num(bb, "sessions_down");
	tc_close(&a);
	expect_stat(ba, "sessions_down", '>', down_a + 1, 3000);
	cr_assert_eq(stat_num(bb, "sessions_down"), down_b, "b's owner heard of a's logout");
	int64_t stored_a = stat_num(ba, "receipts_stored"), stored_b = stat_num(bb, "receipts_stored");
	int64_t relayed_b = stat_num(bb, "receipts_relayed");
	send_receipt(&b, PROTO_RCPT_DELIVERED, ua, smid);
	send_receipt(&b, PROTO_RCPT_READ, ua, smid);
	expect_stat(bb, "receipts_relayed", '=', relayed_b + 1, 3000);
	expect_stat(ba, "receipts_stored", '=', stored_a + 2, 3000);
	cr_assert_eq(stat_num(bb, "receipts_stored"), stored_b);
	ping_ok(&b, "b after its receipts");

	/* kept as one record per message, of the stronger kind (store.h) */
	expect_stat(ba, "store_receipts", '=', 1, 3000);

	/* a logs in later (on the other gateway) and gets it from its owner */
	open_login(&a, 1, ua);
	expect_receipt(&a, PROTO_RCPT_READ, ub, smid, "a's stored receipt: read (it was delivered too)");
	expect_silent(&a, 200, "nothing more for a");
	tc_close(&a);
	/* a protocol 1 client cannot acknowledge receipts: they are sent once */
	expect_stat(ba, "store_receipts", '=', 0, 3000);
	expect_stat(bb, "store_receipts", '=', 0, 3000);
	expect_stat(bb, "store_mailbox_entries", '=', 0, 3000);
	open_login(&a, 0, ua);
	expect_silent(&a, 300, "receipts are not delivered twice");
	tc_close(&a);
	tc_close(&b);
	all_alive();
}

/* The same as receipt_to_offline_sender without waiting for the sender's
 * logout to reach its backend: the receipt must still be kept for it.
 *
 * DISABLED: the receipt is lost when it overtakes the logout (in 1 to 4 of
 * 15 tries here).
 * Steps: a (gateway 1) sends to b (gateway 2), b receives; a closes its
 * connection and b at once sends a read receipt; 300 ms later a logs in.
 * Expected: a gets the RECEIPT at login. Observed: sometimes nothing; the
 * backend's receipts_forwarded grew by 1 (not receipts_stored) and gateway
 * 1's receipts_routed did not grow. Cause: the NOTIFY reaches a's backend
 * before a's SESSION_DOWN (they travel on different links), so on_receipt
 * (backend/node.c:322) forwards it to a's old gateway thread, where
 * session_receipt_remote (gateway/session.c:369) finds no session and drops
 * it (receipts are not acknowledged, and nothing stores them). Messages do
 * not have this problem: they are stored before they are forwarded. A fix:
 * the gateway hands a receipt for a user not (or no longer) here back to the
 * user's backend as NOTIFY to be stored, as receipt_notify_here does for
 * local receipts. */
Test(backend, receipt_right_after_sender_logout, .timeout = 40)
{
	topo_start(NULL);
	int lost = 0;
	enum { TRIES = 15 };
	for (int it = 0; it < TRIES; it++) {
		uint64_t ua = user_of(0, 30000 + (uint64_t)it * 100), ub = user_of(1, 40000 + (uint64_t)it * 100);
		struct tc_conn a, b;
		open_login(&a, 0, ua);
		open_login(&b, 1, ub);
		send_msg(&a, 1, ub, "read me");
		uint64_t smid = expect_deliver(&b, ua, 0, "read me", "b receives");
		expect_ack(&a, 1, PROTO_ACK_STORED, "a's ACK");
		tc_close(&a);
		send_receipt(&b, PROTO_RCPT_READ, ua, smid);
		tc_sleep_ms(300);
		open_login(&a, 1, ua);
		struct tc_frame fr;
		long r = tc_recv_frame(&a, &fr, 1000);
		if (r <= 0)
			lost++;
		else
			cr_assert(fr.f.type == PROTO_RECEIPT && fr.f.receipt.smid == smid && fr.f.receipt.peer == ub,
				  "a got %s", describe(&fr));
		tc_close(&a);
		tc_close(&b);
	}
	cr_assert_eq(lost, 0, "%d of %d read receipts sent right after the sender's logout were lost", lost, TRIES);
	all_alive();
}

/* ---- 5. groups --------------------------------------------------------------------- */

Test(backend, groups, .timeout = 40)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 7000);
	uint64_t ub = ua + 1, uc = ua + 2, ud = ua + 3, ue = ua + 4;
	struct proc *bg = &T.be[0]; /* groups live on the creator's backend */
	struct tc_conn a, b, c, d, e;
	open_login(&a, 0, ua);
	open_login(&b, 0, ub);
	open_login(&c, 1, uc);
	open_login(&e, 1, ue);

	uint64_t members[3] = {ub, uc};
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, members, 2);
	uint64_t gid = expect_group_result(&a, 1, 0, "create {a, b, c}");
	cr_assert_eq(cluster_group_node(gid), bg->node, "group id %llx carries node %u, want %u (a's backend)",
		     (unsigned long long)gid, cluster_group_node(gid), bg->node);
	expect_stat(bg, "store_groups", '=', 1, 3000);

	send_group_msg(&a, 10, gid, "g1: hello group");
	uint64_t s1 = expect_ack(&a, 10, PROTO_ACK_STORED, "a's group ACK");
	cr_assert_eq(msgid_node(s1), bg->node);
	cr_assert_eq(expect_deliver(&b, ua, gid, "g1: hello group", "b gets g1"), s1);
	cr_assert_eq(expect_deliver(&c, ua, gid, "g1: hello group", "c gets g1"), s1);
	expect_silent(&a, 100, "the sender does not get its own group message");

	/* a non-member may not send */
	send_group_msg(&e, 11, gid, "g?: from outside");
	expect_error(&e, PROTO_E_NOT_MEMBER, 11, RECV_MS, "non-member send");
	/* nor change the group */
	group_req(&e, PROTO_GROUP_ADD, 12, gid, &ue, 1);
	expect_group_result(&e, 12, PROTO_E_NOT_MEMBER, "non-member add");
	/* unknown groups: on a backend / on no backend */
	group_req(&a, PROTO_GROUP_ADD, 13, gid + 1000, &ue, 1);
	expect_group_result(&a, 13, PROTO_E_NO_SUCH_GROUP, "add to an unknown group");
	send_group_msg(&a, 14, (50ull << 48) | 1, "to a group of no backend");
	expect_error(&a, PROTO_E_NO_SUCH_GROUP, 14, RECV_MS, "send to a group on no backend");

	/* add d (offline) */
	group_req(&a, PROTO_GROUP_ADD, 2, gid, &ud, 1);
	cr_assert_eq(expect_group_result(&a, 2, 0, "add d"), gid);
	send_group_msg(&a, 20, gid, "g2: d is in");
	uint64_t s2 = expect_ack(&a, 20, PROTO_ACK_STORED, "ACK g2");
	cr_assert_eq(expect_deliver(&b, ua, gid, "g2: d is in", "b gets g2"), s2);
	cr_assert_eq(expect_deliver(&c, ua, gid, "g2: d is in", "c gets g2"), s2);

	/* the owner removes c; c is out */
	group_req(&a, PROTO_GROUP_REMOVE, 3, gid, &uc, 1);
	cr_assert_eq(expect_group_result(&a, 3, 0, "owner removes c"), gid);
	send_group_msg(&c, 30, gid, "g?: c after removal");
	expect_error(&c, PROTO_E_NOT_MEMBER, 30, RECV_MS, "removed member sends");
	group_req(&c, PROTO_GROUP_LEAVE, 31, gid, NULL, 0);
	expect_group_result(&c, 31, PROTO_E_NOT_MEMBER, "removed member leaves");
	/* a member that is not the owner may not remove others */
	group_req(&b, PROTO_GROUP_REMOVE, 32, gid, &ud, 1);
	expect_group_result(&b, 32, PROTO_E_NOT_ALLOWED, "b removes d");
	send_group_msg(&a, 40, gid, "g3: without c");
	uint64_t s3 = expect_ack(&a, 40, PROTO_ACK_STORED, "ACK g3");
	cr_assert_eq(expect_deliver(&b, ua, gid, "g3: without c", "b gets g3"), s3);
	expect_silent(&c, 300, "c gets nothing after its removal");

	/* b leaves */
	group_req(&b, PROTO_GROUP_LEAVE, 41, gid, NULL, 0);
	cr_assert_eq(expect_group_result(&b, 41, 0, "b leaves"), gid);
	send_group_msg(&b, 42, gid, "g?: b after leaving");
	expect_error(&b, PROTO_E_NOT_MEMBER, 42, RECV_MS, "b sends after leaving");
	send_group_msg(&a, 50, gid, "g4: a and d");
	uint64_t s4 = expect_ack(&a, 50, PROTO_ACK_STORED, "ACK g4");
	expect_silent(&b, 300, "b gets nothing after leaving");

	/* d logs in: what was sent after it joined, in order, and not g1 */
	open_login(&d, 1, ud);
	cr_assert_eq(expect_deliver(&d, ua, gid, "g2: d is in", "d: g2"), s2);
	cr_assert_eq(expect_deliver(&d, ua, gid, "g3: without c", "d: g3"), s3);
	cr_assert_eq(expect_deliver(&d, ua, gid, "g4: a and d", "d: g4"), s4);
	expect_silent(&d, 300, "d: nothing else (g1 was before it joined)");
	cr_assert(s2 < s3 && s3 < s4);
	/* d's receipts reach a */
	send_receipt(&d, PROTO_RCPT_READ, ua, s4);
	expect_receipt(&a, PROTO_RCPT_READ, ud, s4, "a gets d's read receipt");

	/* a group whose other members are all offline: the message is stored
	 * once per node thread that owns some of them (the group's thread hands
	 * the others' entries to their owners), referenced from each member's
	 * mailbox there */
	uint64_t off[3] = {ua + 100, ua + 101, ua + 102};
	int owners = 0;
	for (int i = 0; i < 3; i++) {
		int first = 1;
		for (int k = 0; k < i; k++)
			first &= cluster_user_link(&T.cl, off[k]) != cluster_user_link(&T.cl, off[i]);
		owners += first;
	}
	group_req(&a, PROTO_GROUP_CREATE, 5, 0, off, 3);
	uint64_t g2 = expect_group_result(&a, 5, 0, "create {a, f, g, h}");
	cr_assert_neq(g2, gid);
	expect_stat(bg, "store_groups", '=', 2, 3000);
	expect_sum("handoff_users", 0, 5000, "before g5");
	int64_t m0 = -1, e0 = -1;
	for (int i = 0; i < 50; i++) { /* settled: the same twice in a row */
		int64_t m = stat_sum("store_messages"), en = stat_sum("store_mailbox_entries");
		if (m == m0 && en == e0)
			break;
		m0 = m;
		e0 = en;
		tc_sleep_ms(150);
	}
	send_group_msg(&a, 60, g2, "g5: to the offline three");
	uint64_t s5 = expect_ack(&a, 60, PROTO_ACK_STORED, "ACK g5");
	expect_sum("handoff_users", 0, 5000, "g5 handed to the members' owners");
	expect_sum("store_mailbox_entries", e0 + 3, 3000, "g5 stored");
	expect_sum("store_messages", m0 + owners, 3000, "g5 stored");
	for (int i = 0; i < 3; i++) {
		struct tc_conn o;
		open_login(&o, i % 2, off[i]);
		cr_assert_eq(expect_deliver(&o, ua, g2, "g5: to the offline three", "offline member logs in"), s5);
		send_receipt(&o, PROTO_RCPT_DELIVERED, ua, s5);
		expect_receipt(&a, PROTO_RCPT_DELIVERED, off[i], s5, "a gets the member's receipt");
		expect_sum("store_mailbox_entries", e0 + 2 - i, 3000, "a member's receipt");
		tc_close(&o);
	}
	/* each copy goes with its last reference */
	expect_sum("store_messages", m0, 3000, "g5 delivered to all");
	tc_close(&a);
	tc_close(&b);
	tc_close(&c);
	tc_close(&d);
	tc_close(&e);
	all_alive();
}

/* ---- 6. dedup ------------------------------------------------------------------------ */

Test(backend, dedup_resent_cmid, .timeout = 30)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 8000), uc = user_of(1, 9000);
	struct proc *bc = &T.be[1];
	struct tc_conn a1, a2, c;
	open_login(&a1, 0, ua);
	send_msg(&a1, 500, uc, "sent twice");
	uint64_t s1 = expect_ack(&a1, 500, PROTO_ACK_STORED, "first copy");
	tc_close(&a1);
	/* the same user resends after a reconnect (on the other gateway) */
	open_login(&a2, 1, ua);
	send_msg(&a2, 500, uc, "sent twice");
	uint64_t s2 = expect_ack(&a2, 500, PROTO_ACK_STORED, "resent copy");
	cr_assert_eq(s1, s2, "resend got smid %llu, the first copy %llu", (unsigned long long)s2,
		     (unsigned long long)s1);
	/* and twice in a row on one connection */
	send_msg(&a2, 501, uc, "pipelined twice");
	send_msg(&a2, 501, uc, "pipelined twice");
	uint64_t s3 = expect_ack(&a2, 501, PROTO_ACK_STORED, "pipelined copy 1");
	uint64_t s4 = expect_ack(&a2, 501, PROTO_ACK_STORED, "pipelined copy 2");
	cr_assert_eq(s3, s4);
	cr_assert_neq(s3, s1);
	expect_stat(bc, "dedup_hits", '=', 2, 3000);
	expect_stat(bc, "store_dedup_records", '=', 2, 3000); /* one per stored message, none for a resend */
	cr_assert_gt(stat_num(bc, "store_dedup_index_bytes"), 0);
	expect_stat(bc, "store_messages", '=', 2, 3000);
	expect_stat(bc, "store_mailbox_entries", '=', 2, 3000);
	open_login(&c, 0, uc);
	cr_assert_eq(expect_deliver(&c, ua, 0, "sent twice", "c: the first message"), s1);
	cr_assert_eq(expect_deliver(&c, ua, 0, "pipelined twice", "c: the second message"), s3);
	expect_silent(&c, 400, "c: each message once");
	tc_close(&a2);
	tc_close(&c);
	all_alive();
}

/* PROTOCOL.md 3.2: cmid is "chosen by the client (unique per connection is
 * enough)". So a client that reconnects may start its cmids again at 1; a
 * message on the new connection is a new message, not a resend.
 *
 * DISABLED: the backend takes it for a resend and drops it, acknowledging it
 * "stored" with the smid of the old, different message.
 * Steps: a sends cmid 1 "for c" to offline user c, gets ACK stored S; a
 * reconnects and sends cmid 1 "for d" to offline user d (c and d owned by the
 * same backend). Expected: ACK stored with a new smid, and d receives "for d"
 * at login. Observed: ACK stored with smid S; d never receives anything
 * (the message is lost although acknowledged as durable); c receives "for
 * c" once. Cause: on_route (backend/node.c:231) looks the resend up by
 * (sender, cmid) only (store_dedup_get, backend/store.c:585) and answers with
 * the stored smid without comparing the recipient (to/group) or the body, for
 * the whole --dedup-window (10 min). (With c and d on different backends both
 * are stored, since each backend has its own dedup table.) Either the dedup
 * entry must also match the recipient (and body), or PROTOCOL.md must require
 * cmids unique per user across connections within the dedup window. */
Test(backend, dedup_cmid_reused_on_new_connection, .timeout = 30)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 50000), uc = user_of(1, 51000), ud = user_of(1, 52000);
	struct tc_conn a, c, d;
	open_login(&a, 0, ua);
	send_msg(&a, 1, uc, "for c");
	uint64_t s1 = expect_ack(&a, 1, PROTO_ACK_STORED, "cmid 1 to c");
	tc_close(&a);
	open_login(&a, 0, ua); /* a new connection: cmids start again */
	send_msg(&a, 1, ud, "for d");
	uint64_t s2 = expect_ack(&a, 1, PROTO_ACK_STORED, "cmid 1 to d on a new connection");
	open_login(&d, 1, ud);
	cr_assert_neq(s2, s1, "the message to d got the smid of the message to c");
	cr_assert_eq(expect_deliver(&d, ua, 0, "for d", "d receives its message"), s2);
	open_login(&c, 1, uc);
	cr_assert_eq(expect_deliver(&c, ua, 0, "for c", "c receives its message"), s1);
	expect_silent(&c, 200, "c: once");
	tc_close(&a);
	tc_close(&c);
	tc_close(&d);
	all_alive();
}

/* ---- 7. kill -9 under load ------------------------------------------------------------- */

/* Senders (4, on both gateways) send 1:1 messages at a steady pace to users
 * owned by backend 12 (3 online on both gateways, 3 offline); a third of the
 * way in backend 12 gets SIGKILL and is started again 800 ms later on the
 * same data directory. Each message has its own cmid; a message answered
 * try_again is resent with the same cmid until it is acknowledged. Recipients
 * answer every DELIVER with a delivered receipt at once. Checked:
 * - every message is acknowledged, every ACK of a message carries the same
 *   smid (a resend is not stored twice), and the first DELIVER's smid is it;
 * - every acknowledged message is delivered: online ones in their sessions,
 *   offline ones at the login after the load;
 * - no message is delivered again to a session after that session's
 *   delivered receipt for it, except when the receipt was sent from 1 s
 *   before the kill until 1 s after the links were back (it may have died
 *   with the backend: at least once); those are counted;
 * - in the end the restarted backend's store is empty (every receipt
 *   arrived). All waits are bounded. */

#define L_SENDERS 4
#define L_ONLINE 3
#define L_OFFLINE 3
#define L_RCPTS (L_ONLINE + L_OFFLINE)
#define L_MSGS 360
#define L_KILL_AT 120
#define L_INTERVAL_MS 8
#define L_DOWN_MS 800
#define L_RETRY_MS 250

struct lmsg {
	int sender, rcpt;
	int acked;
	uint8_t ack_status;
	uint64_t smid;        /* from the first ACK */
	uint64_t dsmid;       /* from the first DELIVER */
	int64_t retry_at;     /* a resend is due then; 0 none */
	int attempts, errors, acks, deliveries;
	int64_t sess_ack_ms;  /* its recipient's current session sent a delivered receipt then; 0 not */
};

static struct {
	struct lmsg m[L_MSGS];
	uint64_t su[L_SENDERS], ru[L_RCPTS];
	struct tc_conn s[L_SENDERS], r[L_RCPTS];
	int64_t kill_ms, relinked_ms;
	int acks_stored, acks_accepted, try_again, resends, deliveries, receipts, dup_tolerated;
	int dup_bad, twice_stored;
	char first_bad[256];
} LD;

static void load_send(int i)
{
	struct lmsg *m = &LD.m[i];
	char body[32];
	int n = snprintf(body, sizeof body, "load %05d", i);
	struct proto_frame f = {.type = PROTO_SEND};
	f.send.cmid = (uint64_t)i + 1;
	f.send.to = LD.ru[m->rcpt];
	f.send.body = (struct proto_bytes){(const uint8_t *)body, (uint32_t)n};
	send_frame(&LD.s[m->sender], &f);
	m->attempts++;
}

static void load_on_sender(int k, const struct tc_frame *fr)
{
	const struct proto_frame *f = &fr->f;
	int64_t now = tc_now_ms();
	if (f->type == PROTO_RECEIPT) {
		LD.receipts++;
		return;
	}
	uint64_t ref = f->type == PROTO_ACK ? f->ack.cmid : f->type == PROTO_ERROR ? f->error.ref : 0;
	cr_assert(ref >= 1 && ref <= L_MSGS, "sender %d: unexpected %s", k, describe(fr));
	struct lmsg *m = &LD.m[ref - 1];
	cr_assert_eq(m->sender, k, "sender %d: answer for another sender's message: %s", k, describe(fr));
	if (f->type == PROTO_ACK) {
		cr_assert(f->ack.smid != 0 && f->ack.status <= PROTO_ACK_STORED, "sender %d: %s", k, describe(fr));
		if (!m->acked) {
			m->acked = 1;
			m->ack_status = f->ack.status;
			m->smid = f->ack.smid;
			if (f->ack.status == PROTO_ACK_STORED)
				LD.acks_stored++;
			else
				LD.acks_accepted++;
		} else {
			/* a late answer to an attempt that timed out, or to a resend:
			 * the backend's dedup gives the first smid back */
			cr_assert(f->ack.smid == m->smid && f->ack.status == m->ack_status,
				  "message %llu acknowledged twice differently: %s, first smid %llu status %u",
				  (unsigned long long)ref, describe(fr), (unsigned long long)m->smid, m->ack_status);
		}
		m->acks++;
		m->retry_at = 0;
		return;
	}
	cr_assert(f->type == PROTO_ERROR && f->error.code == PROTO_E_TRY_AGAIN, "sender %d: unexpected %s", k,
		  describe(fr));
	LD.try_again++;
	m->errors++;
	if (!m->acked && !m->retry_at)
		m->retry_at = now + L_RETRY_MS;
}

static void load_on_rcpt(int r, const struct tc_frame *fr)
{
	const struct proto_frame *f = &fr->f;
	int64_t now = tc_now_ms();
	cr_assert_eq(f->type, PROTO_DELIVER, "recipient %d: unexpected %s", r, describe(fr));
	int i = -1;
	char body[16];
	size_t n = f->deliver.body.len < sizeof body - 1 ? f->deliver.body.len : sizeof body - 1;
	memcpy(body, f->deliver.body.p, n);
	body[n] = 0;
	cr_assert(sscanf(body, "load %d", &i) == 1 && i >= 0 && i < L_MSGS, "recipient %d: unexpected %s", r,
		  describe(fr));
	struct lmsg *m = &LD.m[i];
	cr_assert(m->rcpt == r && f->deliver.from == LD.su[m->sender] && f->deliver.flags == 0,
		  "recipient %d: %s is not for it or not from its sender", r, describe(fr));
	if (!m->dsmid) {
		m->dsmid = f->deliver.smid;
	} else if (f->deliver.smid != m->dsmid) {
		if (!LD.twice_stored++)
			snprintf(LD.first_bad, sizeof LD.first_bad, "message %d delivered with smids %llu and %llu", i,
				 (unsigned long long)m->dsmid, (unsigned long long)f->deliver.smid);
	}
	if (m->sess_ack_ms) {
		/* delivered again in this session after its delivered receipt: only
		 * acceptable when that receipt may have been lost with the killed
		 * backend (sent from shortly before the kill until the links were
		 * back: at least once) */
		int64_t t = m->sess_ack_ms;
		int in_window = LD.kill_ms && t >= LD.kill_ms - 1000 && (!LD.relinked_ms || t <= LD.relinked_ms + 1000);
		if (in_window) {
			LD.dup_tolerated++;
		} else if (!LD.dup_bad++) {
			snprintf(LD.first_bad, sizeof LD.first_bad,
				 "message %d (smid %llu) delivered again to recipient %d %lld ms after its delivered "
				 "receipt (kill at %lld, links back at %lld, relative to the receipt)",
				 i, (unsigned long long)f->deliver.smid, r, (long long)(now - t), (long long)(LD.kill_ms - t),
				 (long long)(LD.relinked_ms - t));
		}
	} else {
		m->sess_ack_ms = now;
	}
	m->deliveries++;
	LD.deliveries++;
	send_receipt(&LD.r[r], PROTO_RCPT_DELIVERED, f->deliver.from, f->deliver.smid);
}

/* Read every frame waiting on the connections, waiting up to wait_ms for the
 * first. rcpts: how many recipient connections are open (online ones first). */
static void load_pump(int wait_ms, int rcpts)
{
	struct pollfd pf[L_SENDERS + L_RCPTS];
	int n = 0, buffered = 0;
	for (int k = 0; k < L_SENDERS; k++) {
		pf[n++] = (struct pollfd){LD.s[k].fd, POLLIN, 0};
		buffered |= tc_pending(&LD.s[k]) > 0;
	}
	for (int r = 0; r < rcpts; r++) {
		pf[n++] = (struct pollfd){LD.r[r].fd, POLLIN, 0};
		buffered |= tc_pending(&LD.r[r]) > 0;
	}
	poll(pf, (nfds_t)n, buffered ? 0 : wait_ms);
	static struct tc_frame fr;
	for (int k = 0; k < L_SENDERS; k++) {
		long st;
		while ((st = tc_recv_frame(&LD.s[k], &fr, 0)) > 0)
			load_on_sender(k, &fr);
		cr_assert_eq(st, TC_TIMEOUT, "sender %d: %s", k, tc_status_name(st));
	}
	for (int r = 0; r < rcpts; r++) {
		long st;
		while ((st = tc_recv_frame(&LD.r[r], &fr, 0)) > 0)
			load_on_rcpt(r, &fr);
		cr_assert_eq(st, TC_TIMEOUT, "recipient %d: %s", r, tc_status_name(st));
	}
}

static int links_all_up(void)
{
	for (int i = 0; i < NGW; i++)
		if (stat_num(&T.gw[i], "links_up") != GW_THREADS * NBE * (int)BT)
			return 0;
	return 1;
}

Test(backend, kill9_under_load, .timeout = 60)
{
	topo_start("--store-timeout", "2s", NULL);
	const int victim = 1;
	struct proc *bv = &T.be[victim];
	memset(&LD, 0, sizeof LD);
	/* senders on both gateways, owned by the surviving backend (so their
	 * receipts never wait in the victim); recipients owned by the victim:
	 * online ones on both gateways, offline ones logged in at the end */
	uint64_t u = 100000;
	for (int k = 0; k < L_SENDERS; k++)
		u = LD.su[k] = user_of(0, u + 1);
	u = 200000;
	for (int r = 0; r < L_RCPTS; r++)
		u = LD.ru[r] = user_of(victim, u + 1);
	for (int k = 0; k < L_SENDERS; k++)
		open_login(&LD.s[k], k % NGW, LD.su[k]);
	for (int r = 0; r < L_ONLINE; r++)
		open_login(&LD.r[r], r % NGW, LD.ru[r]);
	expect_stat(bv, "sessions", '=', L_ONLINE, 3000); /* its own users' only */
	for (int i = 0; i < L_MSGS; i++) {
		LD.m[i].sender = i % L_SENDERS;
		LD.m[i].rcpt = (i + i / L_SENDERS) % L_RCPTS;
	}

	int64_t t0 = tc_now_ms(), next_send = t0, next_poll = 0, restart_at = 0;
	int sent = 0, restarted = 0;
	for (;;) {
		int64_t now = tc_now_ms();
		cr_assert_lt(now - t0, 30000,
			     "load did not settle in 30 s: %d of %d sent, restarted %d, links back %d; acks %d+%d, "
			     "try_again %d",
			     sent, L_MSGS, restarted, LD.relinked_ms != 0, LD.acks_stored, LD.acks_accepted, LD.try_again);
		while (sent < L_MSGS && now >= next_send) {
			load_send(sent++);
			next_send += L_INTERVAL_MS;
		}
		if (!LD.kill_ms && sent >= L_KILL_AT) {
			be_kill9(victim);
			LD.kill_ms = tc_now_ms();
			restart_at = LD.kill_ms + L_DOWN_MS;
		}
		if (LD.kill_ms && !restarted && now >= restart_at) {
			be_restart(victim, 0); /* the gateways find it by themselves */
			restarted = 1;
		}
		if (restarted && !LD.relinked_ms && now >= next_poll) {
			if (links_all_up())
				LD.relinked_ms = tc_now_ms();
			next_poll = now + 100;
		}
		for (int i = 0; i < sent; i++)
			if (LD.m[i].retry_at && now >= LD.m[i].retry_at && !LD.m[i].acked) {
				LD.m[i].retry_at = 0;
				LD.resends++;
				load_send(i);
			}
		load_pump(sent < L_MSGS ? 2 : 20, L_ONLINE);
		if (sent == L_MSGS && LD.relinked_ms) {
			int done = 1;
			for (int i = 0; i < L_MSGS && done; i++)
				done = LD.m[i].acked && (LD.m[i].rcpt >= L_ONLINE || LD.m[i].deliveries > 0);
			if (done)
				break;
		}
	}
	all_alive();
	cr_assert(tc_server_running(&bv->srv), "the restarted backend died; log %s:\n%s", bv->log, proc_tail(bv));

	/* the offline recipients log in: everything acknowledged is there */
	for (int r = L_ONLINE; r < L_RCPTS; r++) {
		for (int i = 0; i < L_MSGS; i++)
			if (LD.m[i].rcpt == r)
				LD.m[i].sess_ack_ms = 0;
		open_login(&LD.r[r], r % NGW, LD.ru[r]);
	}
	int64_t deadline = tc_now_ms() + 10000;
	for (;;) {
		int missing = 0;
		for (int i = 0; i < L_MSGS; i++)
			missing += LD.m[i].deliveries == 0;
		if (!missing)
			break;
		cr_assert_lt(tc_now_ms(), deadline, "%d acknowledged messages never delivered (offline at login)",
			     missing);
		load_pump(20, L_RCPTS);
	}
	/* and nothing more comes: each receipt is taken */
	int64_t quiet_until = tc_now_ms() + 500;
	while (tc_now_ms() < quiet_until)
		load_pump(20, L_RCPTS);

	int attempts = 0;
	for (int i = 0; i < L_MSGS; i++) {
		struct lmsg *m = &LD.m[i];
		attempts += m->attempts;
		cr_assert(m->acked, "message %d never acknowledged (%d attempts, %d errors)", i, m->attempts, m->errors);
		cr_assert(m->deliveries > 0, "message %d acknowledged (status %u) but never delivered", i, m->ack_status);
		cr_assert_eq(m->dsmid, m->smid, "message %d: ACK smid %llu, DELIVER smid %llu", i,
			     (unsigned long long)m->smid, (unsigned long long)m->dsmid);
		if (m->rcpt >= L_ONLINE)
			cr_assert_eq(m->ack_status, PROTO_ACK_STORED, "message %d to an offline user: ACK status %u", i,
				     m->ack_status);
	}
	cr_log_info("kill -9 under load: %d messages, %d sends (%d resends after try_again); ACK stored %d, "
		    "accepted %d; try_again %d; deliveries %d; receipts to senders %d; redelivered after a receipt "
		    "lost in the crash window %d; resends recognised by the restarted backend %lld; backend down "
		    "%lld ms, links back %lld ms after the kill",
		    L_MSGS, attempts, LD.resends, LD.acks_stored, LD.acks_accepted, LD.try_again, LD.deliveries,
		    LD.receipts, LD.dup_tolerated, (long long)stat_num(bv, "dedup_hits"), (long long)L_DOWN_MS,
		    (long long)(LD.relinked_ms - LD.kill_ms));
	cr_assert_eq(LD.twice_stored, 0, "%d messages stored twice; first: %s", LD.twice_stored, LD.first_bad);
	cr_assert_eq(LD.dup_bad, 0, "%d messages delivered again after their delivered receipt; first: %s", LD.dup_bad,
		     LD.first_bad);
	/* every receipt reached the victim: its store is empty */
	expect_stat(bv, "store_mailbox_entries", '=', 0, 5000);
	expect_stat(bv, "store_messages", '=', 0, 5000);
	for (int k = 0; k < L_SENDERS; k++)
		tc_close(&LD.s[k]);
	for (int r = 0; r < L_RCPTS; r++)
		tc_close(&LD.r[r]);
	all_alive();
}

/* ---- 8. a backend that is down ------------------------------------------------------- */

Test(backend, backend_down_senders_get_errors, .timeout = 40)
{
	topo_start("--store-timeout", "2s", "--link-queue", "64k", NULL);
	const int victim = 1;
	uint64_t ua = user_of(0, 11000), ut = user_of(victim, 12000);
	uint64_t ub = user_of(0, 13000), ux = user_of(0, 14000), uy = user_of(0, 15000);
	struct tc_conn a, b, y;
	open_login(&a, 0, ua);
	open_login(&b, 0, ub);
	open_login(&y, 1, uy);
	be_kill9(victim);
	for (int i = 0; i < NGW; i++)
		expect_stat(&T.gw[i], "links_up", '=', GW_THREADS * (NBE - 1) * (int)BT, 5000);

	/* a message for an offline user of the dead backend: try_again by the
	 * store timeout at the latest (in practice sooner: every failed reconnect
	 * answers the link's pending requests, gateway/dist.c on_down) */
	int64_t t0 = tc_now_ms();
	send_msg(&a, 1, ut, "to a dead backend");
	expect_error(&a, PROTO_E_TRY_AGAIN, 1, 4000, "message to the dead backend's user");
	int64_t dt = tc_now_ms() - t0;
	cr_log_info("try_again after %lld ms (--store-timeout 2s)", (long long)dt);
	cr_assert_leq(dt, 3000, "try_again only after %lld ms, --store-timeout is 2s", (long long)dt);

	/* fill the 64k link queue: the rest are refused at once (link_try_again) */
	enum { N = 10, BODY = 16000 };
	static uint8_t big[BODY];
	memset(big, 'q', sizeof big);
	t0 = tc_now_ms();
	for (int i = 0; i < N; i++)
		send_body(&a, 10 + (uint64_t)i, ut, 0, big, BODY);
	int errs[N] = {0}, fast = 0;
	for (int i = 0; i < N; i++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_ERROR, 4000, "big messages to the dead backend");
		uint64_t ref = fr.f.error.ref;
		cr_assert(fr.f.error.code == PROTO_E_TRY_AGAIN && ref >= 10 && ref < 10 + N && !errs[ref - 10],
			  "big message: got %s", describe(&fr));
		errs[ref - 10] = 1;
		int64_t el = tc_now_ms() - t0;
		cr_assert_leq(el, 3000, "try_again for cmid %llu only after %lld ms", (unsigned long long)ref, (long long)el);
		fast += el < 1000;
	}
	cr_assert_geq(fast, 1, "no message was refused at once with the link queue full");
	cr_assert_geq(stat_num(&T.gw[0], "link_try_again"), 1);
	cr_log_info("queue full: %d of %d refused at once", fast, N);

	/* everything else still works: pings, local delivery, the other backend */
	ping_ok(&a, "ping with a backend down");
	send_msg(&a, 30, ub, "local");
	expect_deliver(&b, ua, 0, "local", "local delivery");
	expect_ack(&a, 30, PROTO_ACK_ACCEPTED, "local delivery ACK");
	send_msg(&a, 31, ux, "stored by the live backend");
	uint64_t sx = expect_ack(&a, 31, PROTO_ACK_STORED, "offline user of the live backend");
	cr_assert_eq(msgid_node(sx), T.be[0].node);
	send_msg(&a, 32, uy, "across gateways via the live backend");
	uint64_t sy = expect_deliver(&y, ua, 0, "across gateways via the live backend", "y receives");
	cr_assert_eq(expect_ack(&a, 32, PROTO_ACK_STORED, "ACK via the live backend"), sy);
	struct tc_conn z;
	open_login(&z, 0, user_of(victim, 16000));
	ping_ok(&z, "a new login with a backend down");
	/* and the dead backend's users still get try_again, not silence */
	send_msg(&z, 33, ut, "again");
	expect_error(&z, PROTO_E_TRY_AGAIN, 33, 4000, "second try to the dead backend");
	tc_close(&a);
	tc_close(&b);
	tc_close(&y);
	tc_close(&z);
	all_alive();
}

/* ---- 9. malformed dist frames --------------------------------------------------------- */

/* A hand-driven dist link peer: it speaks to a backend's link port frame by
 * frame, as a gateway would or as an attacker might. */
struct raw {
	struct tc_conn c;
	uint8_t buf[1 << 17];
	size_t len;
	unsigned seen[256];
	unsigned inner[256]; /* frames inside the batches seen */
	int error_code; /* the last DIST_ERROR's code, or -1 */
	uint64_t route_last;    /* the smid of the last ROUTE in a batch */
	unsigned route_unordered; /* ROUTEs whose smid was not above the one before */
	uint64_t handoff_smid[64]; /* the HANDOFFs seen, in order (the first 64) */
	unsigned nhandoff;
	uint8_t hello_mine[LINK_HELLO_MAX], hello_peer[LINK_HELLO_MAX];
	size_t hello_mine_len, hello_peer_len;
};

static void raw_open(struct raw *r, unsigned port)
{
	memset(r, 0, sizeof *r);
	r->error_code = -1;
	int st = tc_connect_plain(&r->c, port, 0, 3000); /* dist links are plain TCP */
	cr_assert_eq(st, 0, "connect to the backend link port %u: %s", port, tc_status_name(st));
}

static void raw_send(struct raw *r, const void *p, size_t n)
{
	send_raw(&r->c, p, n);
}

/* The cluster keys of this test (what the nodes were started with). */
static const struct peerauth_keys *test_keys(void)
{
	static struct peerauth_keys k;
	char err[256];
	cr_assert_eq(peerauth_load(&k, T.cluster_secret, err, sizeof err), 0, "%s", err);
	return &k;
}

/* Send HELLO (a fresh nonce, signing key key_id) as `role` node `node`
 * thread 0 of 1; a version other than DIST_VERSION is patched in by hand. */
static void raw_hello_key(struct raw *r, uint8_t version, uint8_t role, uint32_t node, uint32_t key_id)
{
	uint8_t nonce[DIST_NONCE];
	peerauth_nonce(nonce);
	struct dist_frame f = {.type = DIST_HELLO};
	f.hello.version = DIST_VERSION;
	f.hello.role = role;
	f.hello.node = node;
	f.hello.thread = 0;
	f.hello.threads = 1;
	f.hello.key_id = key_id;
	f.hello.nonce = nonce;
	size_t n = dist_encode(&f, r->hello_mine, sizeof r->hello_mine);
	cr_assert(n > 0 && n <= sizeof r->hello_mine, "dist_encode(HELLO) failed");
	r->hello_mine[6] = version; /* prefix, type, "GWDL", then the version */
	r->hello_mine_len = n;
	raw_send(r, r->hello_mine, n);
}

static void raw_hello(struct raw *r, uint8_t version, uint8_t role, uint32_t node)
{
	raw_hello_key(r, version, role, node, peerauth_sign_id(test_keys()));
}

/* Send AUTH computed with key `id` of k (after raw_read saw the backend's HELLO). */
static void raw_auth_with(struct raw *r, const struct peerauth_keys *k, uint32_t id)
{
	cr_assert_gt(r->hello_peer_len, 0, "no HELLO from the backend yet");
	uint8_t mac[DIST_MAC];
	cr_assert_eq(peerauth_mac(k, id, PEERAUTH_DIR_CONNECT, r->hello_mine, r->hello_mine_len, r->hello_peer,
				  r->hello_peer_len, mac),
		     0);
	struct dist_frame f = {.type = DIST_AUTH};
	f.auth.mac = mac;
	uint8_t b[64];
	size_t n = dist_encode(&f, b, sizeof b);
	cr_assert(n > 0 && n <= sizeof b);
	raw_send(r, b, n);
}

/* Read and parse the backend's frames until one of type `until` arrived
 * (returns 1), or with until 0 until the backend closes (returns 0); else
 * TC_RESET, TC_TIMEOUT or TC_IOERR. */
static long raw_read(struct raw *r, uint8_t until, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	for (;;) {
		while (r->len) {
			struct dist_frame f;
			long n = dist_parse(r->buf, r->len, &f);
			if (n == PROTO_NEED_MORE)
				break;
			cr_assert_gt(n, 0, "the backend sent a malformed dist frame (%s)", proto_err_name((unsigned)-n));
			r->seen[f.type]++;
			if (f.type == DIST_BATCH) {
				struct dist_iter it;
				struct dist_frame in;
				dist_batch_iter(&f, &it);
				while (dist_batch_next(&it, &in) > 0) {
					r->inner[in.type]++;
					if (in.type == DIST_ROUTE) {
						r->route_unordered += in.route.smid <= r->route_last;
						r->route_last = in.route.smid;
					}
					if (in.type == DIST_HANDOFF && r->nhandoff < 64)
						r->handoff_smid[r->nhandoff++] = in.route.smid;
				}
			}
			if (f.type == DIST_ERROR)
				r->error_code = f.error.code;
			if (f.type == DIST_HELLO && (size_t)n <= sizeof r->hello_peer) {
				memcpy(r->hello_peer, r->buf, (size_t)n);
				r->hello_peer_len = (size_t)n;
			}
			memmove(r->buf, r->buf + n, r->len - (size_t)n);
			r->len -= (size_t)n;
			if (until && f.type == until)
				return 1;
		}
		int64_t left = deadline - tc_now_ms();
		if (left <= 0)
			return TC_TIMEOUT;
		struct pollfd pf = {r->c.fd, POLLIN, 0};
		int pr = poll(&pf, 1, (int)left);
		if (pr < 0 && errno != EINTR)
			return TC_IOERR;
		if (pr <= 0)
			continue;
		ssize_t got = recv(r->c.fd, r->buf + r->len, sizeof r->buf - r->len, MSG_DONTWAIT);
		if (got == 0)
			return 0;
		if (got < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				continue;
			return errno == ECONNRESET ? TC_RESET : TC_IOERR;
		}
		r->len += (size_t)got;
		cr_assert_lt(r->len, sizeof r->buf, "the backend sent too much");
	}
}

/* Whether the log file contains needle (polled for up to timeout_ms). */
static int log_has(const struct proc *p, const char *needle, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	static char buf[1 << 20];
	for (;;) {
		FILE *f = fopen(p->log, "r");
		if (f) {
			size_t n = fread(buf, 1, sizeof buf - 1, f);
			fclose(f);
			buf[n] = 0;
			if (strstr(buf, needle))
				return 1;
		}
		if (tc_now_ms() > deadline)
			return 0;
		tc_sleep_ms(20);
	}
}

/* Authenticate as gateway `node` (listed in the cluster file), thread 0:
 * HELLO, the backend's HELLO, AUTH, the backend's AUTH. */
static void raw_login_link(struct raw *r, unsigned port, uint32_t node)
{
	raw_open(r, port);
	raw_hello(r, DIST_VERSION, DIST_ROLE_GATEWAY, node);
	long st = raw_read(r, DIST_HELLO, RECV_MS);
	cr_assert_eq(st, 1, "no HELLO from the backend: %s", tc_status_name(st));
	raw_auth_with(r, test_keys(), peerauth_sign_id(test_keys()));
	st = raw_read(r, DIST_AUTH, RECV_MS);
	cr_assert_eq(st, 1, "no AUTH from the backend: %s", tc_status_name(st));
}

/* An authenticated link (as RAW_NODE, a listed gateway that does not run),
 * then bad bytes: the backend closes the connection. */
static void malformed_after_hello(struct proc *p, const uint8_t *bad, size_t n, const char *what)
{
	static struct raw r;
	raw_login_link(&r, p->port, RAW_NODE);
	raw_send(&r, bad, n);
	long st;
	st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "%s: want the backend to close the link (recv 0), got %s", what, tc_status_name(st));
	tc_close(&r.c);
}

Test(backend, malformed_dist_frames, .timeout = 40)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];

	/* a BATCH whose inner ROUTE is cut short (L=7: type, seq 1, count 1, inner L=3 ROUTE 00 00) */
	static const uint8_t bad_batch[] = {0x07, DIST_BATCH, 0x01, 0x01, 0x03, DIST_ROUTE, 0x00, 0x00};
	{
		struct dist_frame f;
		long n = dist_parse(bad_batch, sizeof bad_batch, &f);
		int inner_bad = n < 0;
		if (n > 0) {
			struct dist_iter it;
			struct dist_frame in;
			dist_batch_iter(&f, &it);
			inner_bad = dist_batch_next(&it, &in) < 0;
		}
		cr_assert(inner_bad, "the test's bad batch parses as valid");
	}
	malformed_after_hello(p, bad_batch, sizeof bad_batch, "BATCH with a bad inner frame");
	/* a length prefix that is not minimal */
	static const uint8_t bad_prefix[] = {0x80, 0x00};
	malformed_after_hello(p, bad_prefix, sizeof bad_prefix, "bytes 80 00");
	/* a frame type that is not allowed at the top level (ROUTE outside a batch) */
	static const uint8_t bad_top[] = {0x03, DIST_ROUTE, 0x00, 0x00};
	malformed_after_hello(p, bad_top, sizeof bad_top, "ROUTE at the top level");
	cr_assert(log_has(p, "malformed", 2000), "the backend's log %s does not mention the malformed frame:\n%s",
		  p->log, proc_tail(p));
	/* a HELLO with another version is refused with a close (ERROR first:
	 * test hello_mismatch_gets_error) */
	static struct raw r;
	raw_open(&r, p->port);
	raw_hello(&r, DIST_VERSION + 1, DIST_ROLE_GATEWAY, 41);
	long st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "HELLO version %d: want a close, got %s", DIST_VERSION + 1, tc_status_name(st));
	tc_close(&r.c);
	cr_assert(log_has(p, "protocol version", 2000), "the backend's log does not mention the version mismatch");

	/* the backend kept serving the real gateways: their links never dropped */
	all_alive();
	expect_stat(p, "links_up", '=', GW_THREADS * NGW * (int)BT, 3000);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(stat_num(&T.gw[i], "link_reconnects"), 0, "gateway %u's links were disturbed", T.gw[i].node);
	uint64_t ua = user_of(1, 17000), ub = user_of(0, 18000);
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	send_msg(&a, 1, ub, "through the backend that saw garbage");
	uint64_t s = expect_deliver(&b, ua, 0, "through the backend that saw garbage", "b receives");
	cr_assert_eq(msgid_node(s), p->node);
	cr_assert_eq(expect_ack(&a, 1, PROTO_ACK_STORED, "a's ACK"), s);
	tc_close(&a);
	tc_close(&b);
	all_alive();
}

/* PROTOCOL.md 4.2: "A peer whose version differs from its own, or whose role
 * is not the expected one, gets ERROR and a close." (The ERROR once never
 * left: the close came before its send; control frames now leave first.) */
Test(backend, hello_mismatch_gets_error, .timeout = 30)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];
	/* HELLO with another version: ERROR (version), then a close; version
	 * 3 (sessions announced to every backend thread) and 2 (the 6-bit node
	 * ids of the old message id layout) included */
	static struct raw r;
	const int versions[] = {DIST_VERSION - 1, DIST_VERSION - 2, DIST_VERSION + 1};
	cr_assert_eq(DIST_VERSION, 4);
	for (int i = 0; i < 3; i++) {
		raw_open(&r, p->port);
		raw_hello(&r, (uint8_t)versions[i], DIST_ROLE_GATEWAY, 41);
		long st = raw_read(&r, 0, 5000);
		cr_assert_eq(st, 0, "HELLO version %d: want a close, got %s", versions[i], tc_status_name(st));
		cr_assert_eq(r.seen[DIST_ERROR], 1, "HELLO version %d: no ERROR frame before the close (frames: hello %u)",
			     versions[i], r.seen[DIST_HELLO]);
		cr_assert_eq(r.error_code, PROTO_E_VERSION, "ERROR code %d, want version (%d)", r.error_code,
			     PROTO_E_VERSION);
		tc_close(&r.c);
	}
	long st;
	/* HELLO from a peer claiming to be a backend: ERROR and a close too */
	raw_open(&r, p->port);
	raw_hello(&r, DIST_VERSION, DIST_ROLE_BACKEND, 42);
	st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "HELLO with role backend: want a close, got %s", tc_status_name(st));
	cr_assert_eq(r.seen[DIST_ERROR], 1, "HELLO with role backend: no ERROR frame before the close");
	tc_close(&r.c);

	/* the backend keeps serving */
	all_alive();
	expect_stat(p, "links_up", '=', GW_THREADS * NGW * (int)BT, 3000);
}

/* ---- 10. durability across a clean restart ------------------------------------------------ */

Test(backend, restart_keeps_stored_messages, .timeout = 40)
{
	topo_start(NULL);
	const int victim = 1;
	struct proc *bv = &T.be[victim];
	uint64_t ua = user_of(0, 19000), uu = user_of(victim, 20000);
	enum { N = 5 };
	struct tc_conn a, u;
	open_login(&a, 0, ua);
	uint64_t smid[N];
	char body[N][32];
	for (int i = 0; i < N; i++) {
		snprintf(body[i], sizeof body[i], "durable %d", i);
		send_msg(&a, 1 + (uint64_t)i, uu, body[i]);
		smid[i] = expect_ack(&a, 1 + (uint64_t)i, PROTO_ACK_STORED, "stored before the restart");
	}
	/* a group on the victim survives too */
	struct tc_conn g;
	uint64_t ug = user_of(victim, 21000);
	open_login(&g, 1, ug);
	group_req(&g, PROTO_GROUP_CREATE, 1, 0, &uu, 1);
	uint64_t gid = expect_group_result(&g, 1, 0, "group on the victim");
	cr_assert_eq(cluster_group_node(gid), bv->node);

	/* SIGTERM: a clean stop, exit status 0 */
	bv->expect_dead = 1;
	cr_assert_eq(tc_server_signal(&bv->srv, SIGTERM), 0);
	cr_assert_eq(tc_server_wait(&bv->srv, 5000), 0, "backend %u did not stop within 5 s of SIGTERM; log:\n%s",
		     bv->node, proc_tail(bv));
	cr_assert(WIFEXITED(bv->srv.status) && WEXITSTATUS(bv->srv.status) == 0,
		  "backend %u: wait status 0x%x after SIGTERM, want exit 0; log:\n%s", bv->node,
		  (unsigned)bv->srv.status, proc_tail(bv));
	tc_server_stop(&bv->srv, 0);
	bv->started = 0;
	for (int i = 0; i < NGW; i++)
		expect_stat(&T.gw[i], "links_up", '=', GW_THREADS * (NBE - 1) * (int)BT, 5000);

	be_restart(victim, 1);
	wait_links();
	expect_stat(bv, "store_messages", '=', N, 3000);
	expect_stat(bv, "store_groups", '=', 1, 3000);
	open_login(&u, 1, uu);
	uint64_t last = 0;
	for (int i = 0; i < N; i++) {
		uint64_t s = expect_deliver(&u, ua, 0, body[i], "after the restart");
		cr_assert_eq(s, smid[i]);
		cr_assert_gt(s, last);
		last = s;
	}
	expect_silent(&u, 200, "nothing more after the restart");
	/* new messages after the restart get new, larger ids */
	send_msg(&a, 100, uu, "after");
	uint64_t s2 = expect_deliver(&u, ua, 0, "after", "a message after the restart");
	cr_assert_gt(s2, last);
	cr_assert_eq(expect_ack(&a, 100, PROTO_ACK_STORED, "ACK after the restart"), s2);
	send_group_msg(&g, 2, gid, "group after the restart");
	uint64_t s3 = expect_ack(&g, 2, PROTO_ACK_STORED, "group send after the restart");
	cr_assert_eq(expect_deliver(&u, ug, gid, "group after the restart", "group message after the restart"), s3);
	tc_close(&a);
	tc_close(&u);
	tc_close(&g);
	all_alive();
}

/* ---- 11. authenticated dist links (issue 9 items 9 and 10) --------------------------------- */

/* Before authentication a backend accepts HELLO, AUTH and ERROR only: a
 * peer without the cluster secret can neither route messages (with any
 * `from`) nor announce sessions nor ack receipts, and is refused with ERROR
 * auth_failed, counted and logged. */
Test(backend, unauthenticated_peer_refused, .timeout = 40)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];
	uint64_t victim = user_of(0, 23000), forger = user_of(1, 24000);
	struct tc_conn v;
	open_login(&v, 0, victim);

	/* 1. a wrong key (its id is unknown here): refused at HELLO */
	static struct raw r;
	struct peerauth_keys other = {0};
	uint8_t key[40];
	memset(key, 'k', sizeof key);
	cr_assert_eq(peerauth_add(&other, key, sizeof key), 0);
	raw_open(&r, p->port);
	raw_hello_key(&r, DIST_VERSION, DIST_ROLE_GATEWAY, RAW_NODE, peerauth_sign_id(&other));
	long st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "unknown key: want a close, got %s", tc_status_name(st));
	cr_assert_eq(r.seen[DIST_ERROR], 1, "unknown key: no ERROR before the close");
	cr_assert_eq(r.error_code, PROTO_E_AUTH_FAILED, "unknown key: ERROR code %d", r.error_code);
	tc_close(&r.c);
	expect_stat(p, "link_refused_hello", '>', 1, 3000);

	/* 2. the right key id (it is public: every HELLO carries it) but a MAC
	 * made with another key: refused at AUTH */
	raw_open(&r, p->port);
	raw_hello(&r, DIST_VERSION, DIST_ROLE_GATEWAY, RAW_NODE);
	cr_assert_eq(raw_read(&r, DIST_HELLO, RECV_MS), 1);
	raw_auth_with(&r, &other, peerauth_sign_id(&other));
	st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "forged AUTH: want a close, got %s", tc_status_name(st));
	cr_assert_eq(r.error_code, PROTO_E_AUTH_FAILED, "forged AUTH: ERROR code %d", r.error_code);
	cr_assert_eq(r.seen[DIST_BATCH], 0, "the backend sent a batch to an unauthenticated peer");
	tc_close(&r.c);
	expect_stat(p, "link_refused_auth", '>', 1, 3000);

	/* 3. HELLO, then straight to business without AUTH: a ROUTE with a
	 * spoofed sender and a SESSION_UP for the victim (whose stored messages
	 * would follow) are never acted on */
	raw_open(&r, p->port);
	raw_hello(&r, DIST_VERSION, DIST_ROLE_GATEWAY, RAW_NODE);
	cr_assert_eq(raw_read(&r, DIST_HELLO, RECV_MS), 1);
	static uint8_t bb[512];
	struct dist_batch b;
	dist_batch_init(&b, bb, sizeof bb);
	struct dist_frame f = {.type = DIST_ROUTE};
	f.route.from = forger;
	f.route.to = victim;
	f.route.onode = RAW_NODE;
	f.route.body = (struct proto_bytes){(const uint8_t *)"spoofed", 7};
	cr_assert_eq(dist_batch_add(&b, &f), 0);
	struct dist_frame up = {.type = DIST_SESSION_UP};
	up.session.user = victim;
	up.session.node = RAW_NODE;
	cr_assert_eq(dist_batch_add(&b, &up), 0);
	size_t bn;
	uint8_t *bp = dist_batch_finish(&b, 1, &bn);
	raw_send(&r, bp, bn);
	st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "BATCH before AUTH: want a close, got %s", tc_status_name(st));
	cr_assert_eq(r.seen[DIST_BATCH], 0, "the backend answered a batch before AUTH");
	tc_close(&r.c);
	expect_stat(p, "link_violations", '>', 1, 3000);

	/* 4. the right secret but a node the cluster file does not list (after
	 * a second: refusals are logged at most once a second per call site) */
	tc_sleep_ms(1100);
	raw_open(&r, p->port);
	raw_hello(&r, DIST_VERSION, DIST_ROLE_GATEWAY, 39);
	st = raw_read(&r, 0, 5000);
	cr_assert_eq(st, 0, "unlisted node: want a close, got %s", tc_status_name(st));
	cr_assert_eq(r.error_code, PROTO_E_AUTH_FAILED, "unlisted node: ERROR code %d", r.error_code);
	tc_close(&r.c);
	cr_assert(log_has(p, "not a gateway in the cluster file", 2000), "the refusal is not logged:\n%s", proc_tail(p));

	/* nothing reached the victim, the real links never dropped */
	expect_silent(&v, 500, "the victim after the forged frames");
	expect_stat(p, "links_up", '=', GW_THREADS * NGW * (int)BT, 3000);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(stat_num(&T.gw[i], "link_reconnects"), 0, "gateway %u's links were disturbed", T.gw[i].node);
	cr_assert_eq(stat_num(p, "stored"), 0, "a forged message was stored");
	tc_close(&v);
	all_alive();
}

/* A link authenticated with the real secret is served: the hand-driven peer
 * is a real gateway to the backend (which is what the secret means). */
Test(backend, authenticated_peer_served, .timeout = 30)
{
	topo_start(NULL);
	static struct raw r;
	raw_login_link(&r, T.be[0].port, RAW_NODE);
	expect_stat(&T.be[0], "links_up", '=', GW_THREADS * NGW * (int)BT + 1, 3000);
	tc_close(&r.c);
	expect_stat(&T.be[0], "links_up", '=', GW_THREADS * NGW * (int)BT, 3000);
	all_alive();
}

/* Item 10: heartbeats before HELLO are a violation (closed at once), and an
 * authenticated peer that floods heartbeats and never reads costs the
 * backend one pending echo, not a queue that every push walks: the loop
 * stays responsive for everybody else (it stalled for 1.7 s per 40,000). */
Test(backend, heartbeat_flood_is_bounded, .timeout = 60)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];
	enum { BEATS = 200000 };
	size_t cap = (size_t)BEATS * 24, n = 0;
	uint8_t *flood = malloc(cap);
	cr_assert_not_null(flood);
	for (uint64_t i = 1; i <= BEATS; i++) {
		struct dist_frame f = {.type = DIST_HEARTBEAT};
		f.heartbeat.seq = i;
		f.heartbeat.t_us = i;
		n += dist_encode(&f, flood + n, cap - n);
	}
	/* before HELLO */
	static struct raw r;
	raw_open(&r, p->port);
	raw_send(&r, flood, 64);
	long st = raw_read(&r, 0, 3000);
	cr_assert_eq(st, 0, "heartbeats before HELLO: want a close, got %s", tc_status_name(st));
	tc_close(&r.c);

	/* after authenticating, with a small receive window that we never read */
	raw_login_link(&r, p->port, RAW_NODE);
	int small = 4096;
	setsockopt(r.c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	uint64_t ua = user_of(1, 25000), ub = user_of(0, 26000);
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	int64_t worst = 0;
	for (size_t off = 0, k = 0; off < n; k++) {
		size_t chunk = n - off < 65536 ? n - off : 65536;
		if (tc_send_raw(&r.c, flood + off, chunk, 2000) != 0)
			break; /* the backend stopped reading: that is allowed too */
		off += chunk;
		if (k % 16 == 0) {
			/* a message between real users goes through meanwhile */
			char body[48];
			snprintf(body, sizeof body, "during the flood %zu", k);
			int64_t t0 = tc_now_ms();
			send_msg(&a, 1 + k, ub, body);
			expect_deliver(&b, ua, 0, body, "delivery during the heartbeat flood");
			int64_t dt = tc_now_ms() - t0;
			if (dt > worst)
				worst = dt;
		}
	}
	free(flood);
	cr_log_info("heartbeat flood: worst delivery %lld ms", (long long)worst);
	cr_assert_lt(worst, 1000, "a delivery took %lld ms during the heartbeat flood", (long long)worst);
	tc_close(&r.c);
	tc_close(&a);
	tc_close(&b);
	expect_stat(p, "links_up", '=', GW_THREADS * NGW * (int)BT, 5000);
	all_alive();
}

/* A peer announcing k's signing key in its HELLO is refused (auth_failed). */
static void expect_key_refused(unsigned port, const struct peerauth_keys *k, const char *what)
{
	static struct raw r;
	raw_open(&r, port);
	raw_hello_key(&r, DIST_VERSION, DIST_ROLE_GATEWAY, RAW_NODE, peerauth_sign_id(k));
	cr_assert_eq(raw_read(&r, 0, 5000), 0, "%s is not refused", what);
	cr_assert_eq(r.error_code, PROTO_E_AUTH_FAILED, "%s: error %u", what, r.error_code);
	tc_close(&r.c);
}

/* Two secrets: every node accepts both, whichever it signs with, so a
 * secret is rotated without a link refused; a node with neither is refused. */
Test(backend, cluster_secret_rotation, .timeout = 40)
{
	setup_env();
	char next[PATH_MAX + 32], both_old_first[PATH_MAX + 32], both_new_first[PATH_MAX + 32];
	snprintf(next, sizeof next, "%s/next.secret", T.tmp);
	cr_assert_eq(tc_secret_new(next, NULL), 0);
	char *old = tc_read_file(T.cluster_secret, NULL), *nw = tc_read_file(next, NULL);
	cr_assert(old && nw);
	snprintf(both_old_first, sizeof both_old_first, "%s/rot1.secret", T.tmp);
	snprintf(both_new_first, sizeof both_new_first, "%s/rot2.secret", T.tmp);
	FILE *f = fopen(both_old_first, "w");
	cr_assert(f);
	fprintf(f, "%s%s", old, nw);
	fclose(f);
	f = fopen(both_new_first, "w");
	cr_assert(f);
	fprintf(f, "%s%s", nw, old);
	fclose(f);
	/* backends sign with the old secret and accept both; gateways sign
	 * with the new one and accept both: the middle of a rotation */
	char keep[sizeof T.cluster_secret];
	snprintf(keep, sizeof keep, "%s", T.cluster_secret);
	snprintf(T.cluster_secret, sizeof T.cluster_secret, "%s", both_old_first);
	for (int i = 0; i < NBE; i++)
		be_spawn(i);
	for (int i = 0; i < NBE; i++)
		proc_wait_up(&T.be[i], "backend");
	snprintf(T.cluster_secret, sizeof T.cluster_secret, "%s", both_new_first);
	for (int i = 0; i < NGW; i++)
		gw_spawn(i);
	for (int i = 0; i < NGW; i++)
		proc_wait_up(&T.gw[i], "gateway");
	wait_links();
	expect_chat_across(user_of(1, 27000), user_of(0, 28000), "mid-rotation", "delivery mid-rotation");
	/* a peer holding only the old secret is still fine (step 1 nodes); one
	 * holding an unrelated secret is refused */
	snprintf(T.cluster_secret, sizeof T.cluster_secret, "%s", keep);
	static struct raw r;
	raw_login_link(&r, T.be[0].port, RAW_NODE);
	tc_close(&r.c);
	struct peerauth_keys other = {0};
	uint8_t key[48];
	memset(key, 'z', sizeof key);
	cr_assert_eq(peerauth_add(&other, key, sizeof key), 0);
	expect_key_refused(T.be[0].port, &other, "a peer with an unrelated secret");
	free(old);
	free(nw);
	all_alive();
}

/* Rotating the cluster secret with SIGHUP and no restart: every node reads
 * its --cluster-secret-file again; links up stay up through each step, the
 * next handshakes use the new keys (a restarted backend and the gateways
 * agree on the new secret alone), the old secret is refused at the end, and
 * a file that does not load is refused with the running keys kept. */
static void write_secrets(const char *path, const char *first, const char *second)
{
	FILE *f = fopen(path, "w");
	cr_assert(f, "cannot write %s", path);
	fprintf(f, "%s%s", first, second ? second : "");
	cr_assert_eq(fclose(f), 0);
}

static void sighup_all(const char *want_log)
{
	for (int i = 0; i < NBE; i++)
		cr_assert_eq(tc_server_signal(&T.be[i].srv, SIGHUP), 0);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(tc_server_signal(&T.gw[i].srv, SIGHUP), 0);
	for (int i = 0; i < NBE; i++)
		cr_assert(log_has(&T.be[i], want_log, 5000), "backend %u: no '%s' in its log:\n%s", T.be[i].node, want_log,
			  proc_tail(&T.be[i]));
	for (int i = 0; i < NGW; i++)
		cr_assert(log_has(&T.gw[i], want_log, 5000), "gateway %u: no '%s' in its log:\n%s", T.gw[i].node, want_log,
			  proc_tail(&T.gw[i]));
}

Test(backend, cluster_secret_reload_rotates_without_restart, .timeout = 60)
{
	topo_start(NULL);
	char next[PATH_MAX + 32];
	snprintf(next, sizeof next, "%s/next.secret", T.tmp);
	cr_assert_eq(tc_secret_new(next, NULL), 0);
	char *old = tc_read_file(T.cluster_secret, NULL), *nw = tc_read_file(next, NULL);
	cr_assert(old && nw);
	static struct peerauth_keys old_keys;
	old_keys = *test_keys();
	/* 1. both, the old one signing; 2. both, the new one signing; 3. the new one */
	write_secrets(T.cluster_secret, old, nw);
	sighup_all("is also accepted (links up stay up");
	write_secrets(T.cluster_secret, nw, old);
	uint32_t new_id = test_keys()->id[0];
	char want[96];
	snprintf(want, sizeof want, "cluster secrets: key %08x signs", new_id);
	sighup_all(want);
	write_secrets(T.cluster_secret, nw, NULL);
	snprintf(want, sizeof want, "cluster secret: key %08x; no other key", new_id);
	sighup_all(want);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(stat_num(&T.gw[i], "link_reconnects"), 0, "gateway %u's links dropped in the reloads",
			     T.gw[i].node);
	wait_links();
	/* new handshakes: a backend restarted (it reads the new secret alone)
	 * and the gateways, which now sign with it, link again */
	be_kill9(0);
	be_restart(0, 1);
	wait_links();
	expect_chat_across(user_of(0, 29000), user_of(1, 30000), "after the rotation",
			   "delivery after a rotation by SIGHUP");
	/* the old secret is refused now, by the backend that never restarted too */
	static struct raw r;
	expect_key_refused(T.be[1].port, &old_keys, "a peer with the old secret");
	/* a file that does not load is refused; the running keys stay */
	write_secrets(T.cluster_secret, "short\n", NULL);
	sighup_all("configuration refused, the running one stays: --cluster-secret-file");
	write_secrets(T.cluster_secret, nw, NULL);
	raw_login_link(&r, T.be[1].port, RAW_NODE);
	tc_close(&r.c);
	free(old);
	free(nw);
	all_alive();
}

/* ---- 12. hostile clients through the backends (issue 9 items 5, 6, 8, 12, 13) -------------- */

/* Read n answers to messages: each an ACK (counted in *acks) or an ERROR
 * with `code` (counted in *errs); anything else fails the test. */
static void count_answers(struct tc_conn *c, int n, unsigned code, int *acks, int *errs)
{
	for (int k = 0; k < n; k++) {
		struct tc_frame fr;
		long r = tc_recv_frame(c, &fr, RECV_MS);
		cr_assert_gt(r, 0, "answer %d: %s", k, tc_status_name(r));
		if (fr.f.type == PROTO_ACK)
			++*acks;
		else if (fr.f.type == PROTO_ERROR && fr.f.error.code == code)
			++*errs;
		else
			cr_assert_fail("answer %d: %s, want ACK or ERROR %s", k, describe(&fr), proto_err_name(code));
	}
}

static void login_v2(struct tc_conn *c, int gw, uint64_t user)
{
	conn_open(c, gw);
	struct tc_frame fr;
	long r = tc_login_v(c, &T.secret, user, 2, &fr, RECV_MS);
	cr_assert_gt(r, 0, "v2 login of user %llu: %s", (unsigned long long)user, tc_status_name(r));
	cr_assert(fr.f.type == PROTO_LOGIN_RESULT && fr.f.login_result.status == 0 && fr.f.login_result.version == 2,
		  "v2 login of user %llu: got %s", (unsigned long long)user, describe(&fr));
}

/* Item 8: a protocol 2 client gets its stored receipts at every login until
 * it acknowledges them (RECEIPT kind 3), as it gets messages until its
 * delivered receipt; then never again. */
Test(backend, stored_receipts_until_acknowledged, .timeout = 40)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 31000), ub = user_of(1, 32000);
	struct tc_conn a, b;
	login_v2(&a, 0, ua);
	open_login(&b, 1, ub);
	send_msg(&a, 1, ub, "ack my receipts");
	uint64_t smid = expect_deliver(&b, ua, 0, "ack my receipts", "b receives");
	expect_ack(&a, 1, PROTO_ACK_STORED, "a's ACK");
	int64_t d0 = stat_num(&T.be[0], "sessions_down");
	tc_close(&a);
	expect_stat(&T.be[0], "sessions_down", '>', d0 + 1, 3000);
	send_receipt(&b, PROTO_RCPT_DELIVERED, ua, smid);
	send_receipt(&b, PROTO_RCPT_READ, ua, smid);
	/* both kept by a's owner (the delivered one checked at b's, relayed),
	 * as one record of the stronger kind */
	expect_stat(&T.be[0], "receipts_stored", '>', 2, 3000);
	expect_stat(&T.be[0], "store_receipts", '=', 1, 3000);
	cr_assert_eq(stat_num(&T.be[1], "store_receipts"), 0);
	/* two logins without acknowledging: the receipt each time */
	for (int round = 0; round < 2; round++) {
		login_v2(&a, round, ua);
		expect_receipt(&a, PROTO_RCPT_READ, ub, smid, "stored receipt");
		expect_silent(&a, 200, "only the one receipt");
		tc_close(&a);
		cr_assert_eq(stat_num(&T.be[0], "store_receipts") + stat_num(&T.be[1], "store_receipts"), 1,
			     "round %d: receipt dropped without an acknowledgement", round);
		tc_sleep_ms(100);
	}
	/* acknowledged: gone */
	login_v2(&a, 1, ua);
	for (int k = 0; k < 1; k++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_RECEIPT, RECV_MS, "stored receipt before the ack");
		struct proto_frame ack = {.type = PROTO_RECEIPT};
		ack.receipt.kind = PROTO_RCPT_ACK;
		ack.receipt.peer = fr.f.receipt.peer;
		ack.receipt.smid = fr.f.receipt.smid;
		send_frame(&a, &ack);
	}
	expect_stat(&T.be[0], "store_receipts", '=', 0, 3000);
	expect_stat(&T.be[1], "store_receipts", '=', 0, 3000);
	tc_close(&a);
	login_v2(&a, 0, ua);
	expect_silent(&a, 300, "acknowledged receipts come no more");
	/* online, a client gets receipts as they happen (forwarded, not kept:
	 * an acknowledgement of one is harmless) */
	send_msg(&a, 2, ub, "second");
	uint64_t s2 = expect_deliver(&b, ua, 0, "second", "b receives the second");
	expect_ack(&a, 2, PROTO_ACK_STORED, "ACK of the second");
	send_receipt(&b, PROTO_RCPT_READ, ua, s2);
	expect_receipt(&a, PROTO_RCPT_READ, ub, s2, "a live read receipt");
	struct proto_frame ack2 = {.type = PROTO_RECEIPT};
	ack2.receipt.kind = PROTO_RCPT_ACK;
	ack2.receipt.peer = ub;
	ack2.receipt.smid = s2;
	send_frame(&a, &ack2);
	ping_ok(&a, "a after acknowledging a live receipt");
	cr_assert_eq(stat_num(&T.be[0], "store_receipts") + stat_num(&T.be[1], "store_receipts"), 0);
	tc_close(&a);
	tc_close(&b);
	all_alive();
}

/* Item 5: receipts cannot lock anyone out of messages. A user sends many
 * forged receipts to an offline victim: read receipts are kept for the
 * victim apart from its message mailbox (at most 64 per peer, older ones
 * give way), delivered receipts for messages the forger never got are
 * checked against the mailbox and dropped, receipts about no message of this
 * cluster are dropped at the gateway. Messages to the victim are stored
 * (before: every forged receipt took a mailbox entry, and at --mailbox-max
 * real messages got mailbox_full). */
Test(backend, forged_receipts_do_not_fill_a_mailbox, .timeout = 60)
{
	static const char *const be_opts[] = {"--mailbox-max", "100", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t victim = user_of(0, 33000), forger = user_of(1, 34000), friend = user_of(1, 35000);
	struct tc_conn x, f;
	open_login(&x, 1, forger);
	/* forger's own message to a real user, to learn a real smid shape */
	uint64_t now_ms = tc_wall_s() * 1000;
	enum { N = 300 };
	static uint8_t buf[N * 48];
	size_t n = 0;
	for (uint64_t i = 0; i < N; i++) {
		struct proto_frame r = {.type = PROTO_RECEIPT};
		/* read receipts "about" made-up messages of backend 11 */
		r.receipt.kind = PROTO_RCPT_READ;
		r.receipt.peer = victim;
		r.receipt.smid = msgid_make(now_ms, T.be[0].node, (unsigned)i);
		n += proto_encode(&r, buf + n, sizeof buf - n);
		/* delivered receipts about made-up messages of backend 12 */
		r.receipt.kind = PROTO_RCPT_DELIVERED;
		r.receipt.smid = msgid_make(now_ms, T.be[1].node, (unsigned)i);
		n += proto_encode(&r, buf + n, sizeof buf - n);
	}
	send_raw(&x, buf, n);
	/* and some about no message at all: an unknown node, the future */
	send_receipt(&x, PROTO_RCPT_READ, victim, msgid_make(now_ms, 50, 0));
	send_receipt(&x, PROTO_RCPT_READ, victim, msgid_make(tc_wall_s() * 1000 + 3600000, 11, 0));
	ping_ok(&x, "forger after its receipts");
	expect_stat(&T.be[1], "receipts_unverified", '>', N, 5000);
	expect_stat(&T.gw[1], "receipts_dropped", '>', 2, 3000);
	/* what the victim's owner keeps: 64 from this peer, the newest */
	expect_stat(&T.be[0], "receipts_dropped", '>', N - 64, 5000);
	expect_stat(&T.be[0], "store_receipts", '=', 64, 3000);
	cr_assert_eq(stat_num(&T.be[0], "store_mailbox_entries"), 0, "receipts took mailbox entries");
	/* a real message still reaches the victim's mailbox */
	open_login(&f, 1, friend);
	send_msg(&f, 1, victim, "a real message");
	expect_ack(&f, 1, PROTO_ACK_STORED, "a real message to the victim is stored");
	tc_close(&x);
	tc_close(&f);
	all_alive();
}

/* Items 6 and 13: who may add whom, an owner who removes itself, and the
 * per-sender budget of mailbox writes (a group message to N members is N). */
Test(backend, group_rules_and_fanout_budget, .timeout = 40)
{
	static const char *const be_opts[] = {"--fanout-rate", "100", "--max-group", "50", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t ua = user_of(0, 36000), ub = ua + 1, uc = ua + 2;
	struct tc_conn a, b;
	open_login(&a, 0, ua);
	open_login(&b, 1, ub);
	/* 40 members: a, b and 38 users who never log in */
	uint64_t m[40];
	m[0] = ub;
	for (int i = 1; i < 39; i++)
		m[i] = 37000 + (uint64_t)i;
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, m, 39);
	uint64_t gid = expect_group_result(&a, 1, 0, "create a group of 40");
	/* only the owner adds */
	group_req(&b, PROTO_GROUP_ADD, 2, gid, &uc, 1);
	expect_group_result(&b, 2, PROTO_E_NOT_ALLOWED, "a member who is not the owner adds");
	group_req(&a, PROTO_GROUP_ADD, 3, gid, &uc, 1);
	expect_group_result(&a, 3, 0, "the owner adds");
	/* budget: burst max(2 x 100, 2 x 50) = 200 writes; the create took 1 +
	 * 39, the add 1 + 1, each message takes 40 (every member but a): 3 fit,
	 * 4 if the refill (100/s) gave 2 more in the meantime */
	int stored = 0, slowed = 0;
	for (uint64_t k = 0; k < 10; k++)
		send_group_msg(&a, 100 + k, gid, "fan out");
	count_answers(&a, 10, PROTO_E_SLOW_DOWN, &stored, &slowed);
	cr_log_info("fan-out budget: %d stored, %d slow_down", stored, slowed);
	cr_assert(stored >= 3 && stored <= 4, "%d of 10 group messages stored within a burst of 200 writes", stored);
	cr_assert_eq(slowed, 10 - stored);
	expect_stat(&T.be[0], "fanout_limited", '>', 1, 3000);
	/* the budget refills: 100 writes/s, so in a second there is room for two more */
	tc_sleep_ms(1100);
	send_group_msg(&a, 200, gid, "after a pause");
	expect_ack(&a, 200, PROTO_ACK_STORED, "a group message after the budget refilled");
	/* the owner removes itself: b (first in the list) owns the group now */
	group_req(&a, PROTO_GROUP_REMOVE, 4, gid, &ua, 1);
	expect_group_result(&a, 4, 0, "the owner removes itself");
	group_req(&a, PROTO_GROUP_ADD, 5, gid, &ua, 1);
	expect_group_result(&a, 5, PROTO_E_NOT_MEMBER, "the old owner is no member");
	/* b got the group messages meanwhile */
	for (struct tc_frame fr;;) {
		long r = tc_recv_frame(&b, &fr, 300);
		if (r == TC_TIMEOUT)
			break;
		cr_assert(r > 0 && fr.f.type == PROTO_DELIVER, "b: %s", r > 0 ? describe(&fr) : tc_status_name(r));
	}
	uint64_t back = ua;
	group_req(&b, PROTO_GROUP_ADD, 6, gid, &back, 1);
	expect_group_result(&b, 6, 0, "the new owner adds the old one back");
	tc_close(&a);
	tc_close(&b);
	all_alive();
}

/* Item 12: a per-sender bound on undelivered stored messages: past
 * --sender-max mailbox entries of one sender on a backend, its messages get
 * slow_down (nothing stored), other senders are unaffected; deliveries
 * (delivered receipts) free the budget again. */
Test(backend, per_sender_bound_on_undelivered_messages, .timeout = 40)
{
	static const char *const be_opts[] = {"--sender-max", "20", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t ua = user_of(1, 38000), uw = user_of(1, 40000);
	struct tc_conn a, w;
	open_login(&a, 0, ua);
	int stored = 0, slowed = 0;
	for (uint64_t k = 1; k <= 25; k++) {
		/* different recipients (all offline), all owned by backend 11's first
		 * thread (the bound is a node thread's: each keeps its own counts) */
		send_msg(&a, k, user_of_thread(0, 0, 41000 + k * 50), "to someone offline");
	}
	count_answers(&a, 25, PROTO_E_SLOW_DOWN, &stored, &slowed);
	cr_assert_eq(stored, 20, "%d stored under --sender-max 20", stored);
	cr_assert_eq(slowed, 5);
	expect_stat(&T.be[0], "sender_limited", '=', 5, 3000);
	/* another sender is unaffected */
	open_login(&w, 1, uw);
	send_msg(&w, 1, user_of(0, 41050), "from another sender");
	expect_ack(&w, 1, PROTO_ACK_STORED, "another sender's message");
	tc_close(&a);
	tc_close(&w);
	all_alive();
}

/* Stop backend i cleanly (SIGTERM) and start it again with T.be_extra. */
static void be_cycle(int i)
{
	struct proc *p = &T.be[i];
	p->expect_dead = 1;
	int st = tc_server_stop(&p->srv, 5000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "backend %u did not stop cleanly (0x%x)", p->node,
		  (unsigned)st);
	p->started = 0;
	be_restart(i, 1);
	wait_links();
}

static int64_t gw_reconnects(void)
{
	int64_t n = 0;
	for (int i = 0; i < NGW; i++)
		n += stat_num(&T.gw[i], "link_reconnects");
	return n;
}

/* Item 12 and the store fault tests: a write that cannot be done (a full map:
 * injected here as LMDB reports it) fails only its own request, with a clear
 * answer; every other request of the iteration commits, no link is closed,
 * and the request succeeds when sent again. One case per kind of write. */
Test(backend, store_fault_fails_only_its_request, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(1, 42000), ub = user_of(1, 43000);
	uint64_t off = user_of(0, 44000); /* offline, owned by backend 11 */
	struct tc_conn a, b;
	static const char *opt[3] = {"--inject-store-fault", NULL, NULL};
	T.be_extra = opt;

	/* messages (and their dedup records): store_full, then stored on resend */
	static const char *const msg_kinds[] = {"msg:enospc:1", "dedup:enospc:1"};
	for (int k = 0; k < 2; k++) {
		opt[1] = msg_kinds[k];
		be_cycle(0);
		int64_t rc0 = gw_reconnects();
		open_login(&a, 0, ua);
		send_msg(&a, 10 + (uint64_t)k, off, "first try");
		expect_error(&a, PROTO_E_STORE_FULL, 10 + (uint64_t)k, RECV_MS, msg_kinds[k]);
		send_msg(&a, 10 + (uint64_t)k, off, "first try");
		expect_ack(&a, 10 + (uint64_t)k, PROTO_ACK_STORED, "the resend");
		cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0, "%s failed a commit", msg_kinds[k]);
		cr_assert_eq(stat_num(&T.be[0], "requests_failed"), 1, "%s", msg_kinds[k]);
		cr_assert_eq(gw_reconnects(), rc0, "%s closed links", msg_kinds[k]);
		tc_close(&a);
	}
	cr_assert_eq(wait_stat(&T.be[0], "store_mailbox_entries", '=', 2, 3000), 2, "one copy of each message");

	/* a group operation: store_full, then done */
	opt[1] = "group:enospc:1";
	be_cycle(0);
	uint64_t ug = user_of(0, 45000);
	open_login(&a, 0, ug);
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, &ub, 1);
	expect_group_result(&a, 1, PROTO_E_STORE_FULL, "group create with a full store");
	group_req(&a, PROTO_GROUP_CREATE, 2, 0, &ub, 1);
	expect_group_result(&a, 2, 0, "group create again");
	cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0);
	tc_close(&a);

	/* a receipt kept for an offline user: that one is lost (a read receipt
	 * is best effort when the store cannot take it), the next is kept */
	opt[1] = "receipt:enospc:1";
	be_cycle(0);
	open_login(&b, 1, ub);
	uint64_t off2 = user_of(0, 44500);
	send_receipt(&b, PROTO_RCPT_READ, off2, msgid_make(tc_wall_s() * 1000, 1, 1));
	expect_stat(&T.be[0], "requests_failed", '=', 1, 3000);
	send_receipt(&b, PROTO_RCPT_READ, off2, msgid_make(tc_wall_s() * 1000, 1, 2));
	expect_stat(&T.be[0], "store_receipts", '=', 1, 3000);
	tc_close(&b);

	/* a delete (delivered receipt): the message stays and comes again */
	opt[1] = "delete:enospc:1";
	be_cycle(0);
	struct tc_conn o;
	open_login(&o, 0, off);
	uint64_t s1 = expect_deliver(&o, ua, 0, "first try", "stored message 1");
	uint64_t s2 = expect_deliver(&o, ua, 0, "first try", "stored message 2");
	send_receipt(&o, PROTO_RCPT_DELIVERED, ua, s1);
	send_receipt(&o, PROTO_RCPT_DELIVERED, ua, s2);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 1, 3000);
	cr_assert_eq(stat_num(&T.be[0], "requests_failed"), 1);
	tc_close(&o);
	tc_sleep_ms(200);
	open_login(&o, 1, off);
	expect_deliver(&o, ua, 0, "first try", "the message whose delete failed comes again");
	expect_silent(&o, 300, "only that one");
	cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0);
	tc_close(&o);
	all_alive();
}

/* An I/O error inside the iteration's own transaction cannot be undone for
 * one request: the commit fails and nothing acknowledged in that iteration
 * leaves as acknowledged: the sender gets try_again at once, the links stay
 * up (issue 15: they used to be closed, so every relink sent every online
 * user's mailbox again), `stored` does not count it, and a resend with the
 * same cmid is stored once. */
/* SIGHUP used to end the backend (exit 129: every gateway relinks, every
 * online user's session is announced again). Now it reloads the budgets and
 * the log level: a smaller --mailbox-max is in force at once, and no link
 * drops. */
Test(backend, sighup_reloads_without_dropping_links, .timeout = 60)
{
	char conf[PATH_MAX + 64];
	snprintf(conf, sizeof conf, "%s/%s.%d.conf", T.logdir[0] ? T.logdir : "/tmp", test_name(), (int)getpid());
	FILE *f = fopen(conf, "w");
	cr_assert(f);
	fputs("mailbox-max = 10000\n", f);
	fclose(f);
	static const char *opt[] = {"--config", NULL, NULL};
	opt[1] = conf;
	T.be_extra = opt;
	topo_start(NULL);
	uint64_t ua = user_of(1, 48000), off = user_of(0, 49000);
	struct tc_conn a;
	open_login(&a, 0, ua);
	send_msg(&a, 1, off, "before the reload");
	expect_ack(&a, 1, PROTO_ACK_STORED, "before the reload");
	f = fopen(conf, "w");
	cr_assert(f);
	fputs("mailbox-max = 2\nlog-level = debug\n", f);
	fclose(f);
	cr_assert_eq(tc_server_signal(&T.be[0].srv, SIGHUP), 0);
	int64_t deadline = tc_now_ms() + 5000;
	while (!strstr(proc_tail(&T.be[0]), "SIGHUP: --mailbox-max 10000 -> 2")) {
		cr_assert_lt(tc_now_ms(), deadline, "no reload in the log:\n%s", proc_tail(&T.be[0]));
		tc_sleep_ms(20);
	}
	send_msg(&a, 2, off, "the second");
	expect_ack(&a, 2, PROTO_ACK_STORED, "the second, within the new limit");
	send_msg(&a, 3, off, "the third");
	expect_error(&a, PROTO_E_MAILBOX_FULL, 3, 5000, "over the reloaded --mailbox-max");
	cr_assert_eq(stat_num(&T.be[0], "links_lost"), 0, "the reload dropped links");
	cr_assert_eq(gw_reconnects(), 0, "the gateways relinked");
	tc_close(&a);
	all_alive();
	unlink(conf);
}

/* gwstat against a live gateway and backend: rows fit 120 columns (were 140), the
 * backend's mailbox column is the mailbox (it showed the session count: two
 * human() results shared a buffer), msgin counts messages only, and a node
 * that does not answer makes it exit 1 (it exited 0). */
Test(backend, gwstat_rows_are_right, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(1, 51000), off = user_of(0, 52000);
	struct tc_conn a;
	open_login(&a, 0, ua);
	for (uint64_t k = 1; k <= 7; k++) {
		send_msg(&a, k, off, "for the mailbox");
		expect_ack(&a, k, PROTO_ACK_STORED, "stored for an offline user");
	}
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 7, 3000);
	/* the latency histograms measured inside the servers counted them */
	cr_assert_geq(stat_num(&T.be[0], "commit_count"), 1, "backend commit histogram");
	int64_t answered = 0;
	for (int i = 0; i < NGW; i++)
		answered += stat_num(&T.gw[i], "backend_answer_count");
	cr_assert_geq(answered, 7, "gateway backend answer histogram: %lld", (long long)answered);
	char path[PATH_MAX + 32], gws[32], bes[32], dead[32], out[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/tools/gwstat", tc_build_dir());
	snprintf(gws, sizeof gws, "127.0.0.1:%u", T.gw[0].stats);
	snprintf(bes, sizeof bes, "127.0.0.1:%u", T.be[0].stats);
	snprintf(out, sizeof out, "%s/%s.gwstat.out", T.logdir, test_name());
	const char *argv[] = {path, "--count", "1", "--interval", "300ms", gws, bes, NULL};
	cr_assert_eq(tc_run(path, (char *const *)argv, out, out, 10000), 0);
	char *o = tc_read_file(out, NULL);
	cr_assert_not_null(o);
	const char *be_row = NULL;
	for (char *line = strtok(o, "\n"); line; line = strtok(NULL, "\n")) {
		cr_assert_leq(strlen(line), 120, "a row wider than 120 columns: %s", line);
		if (strstr(line, bes) && strstr(line, " be "))
			be_row = line;
	}
	cr_assert_not_null(be_row, "no backend row");
	/* the columns after "be": sess links stor/s dlvr/s rcpt/s cmit/s c_ms linkq f/b mailbx */
	char sess[16], mailbox[16];
	cr_assert_eq(sscanf(strstr(be_row, " be ") + 4, "%15s %*s %*s %*s %*s %*s %*s %*s %*s %15s", sess, mailbox), 2,
		     "row: %s", be_row);
	cr_assert_str_eq(mailbox, "7", "mailbox column in: %s", be_row);
	cr_assert_str_neq(sess, "7", "the session count is not the mailbox");
	free(o);
	/* the per-thread view: the fullest thread of the gateway, with a's connection on it */
	const char *argv3[] = {path, "--count", "1", "--interval", "300ms", "--top", "1", gws, NULL};
	cr_assert_eq(tc_run(path, (char *const *)argv3, out, out, 10000), 0);
	o = tc_read_file(out, NULL);
	cr_assert_not_null(o);
	unsigned rows = 0, conns = 0, tid;
	for (char *line = strtok(o, "\n"); line; line = strtok(NULL, "\n"))
		if (sscanf(line, " thread %u %u", &tid, &conns) == 2)
			rows++;
	cr_assert_eq(rows, 1, "--top 1: %u thread rows", rows);
	cr_assert_eq(conns, 1, "the fullest thread holds a's connection");
	free(o);
	snprintf(dead, sizeof dead, "127.0.0.1:%u", T.gw[0].port); /* a port that does not speak HTTP /stats */
	const char *argv2[] = {path, "--count", "1", "--interval", "100ms", dead, NULL};
	cr_assert_eq(tc_run(path, (char *const *)argv2, out, out, 10000), 1, "a node that does not answer exits 1");
	tc_close(&a);
	all_alive();
}

/* Type=notify: every backend says READY=1 once it listens for gateways
 * (and every gateway once its links are up), STOPPING=1 on SIGTERM. */
Test(backend, systemd_ready_and_stopping, .timeout = 60)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64];
	snprintf(name, sizeof name, "@betest-notify-%d", (int)getpid());
	memcpy(sa.sun_path, name, strlen(name));
	sa.sun_path[0] = 0;
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))), 0);
	struct timeval tv = {0, 300 * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setenv("NOTIFY_SOCKET", name, 1);
	topo_start(NULL);
	unsetenv("NOTIFY_SOCKET");
	char m[600];
	int be_ready = 0, gw_ready = 0;
	for (int64_t t0 = tc_now_ms(); (be_ready < NBE || gw_ready < NGW) && tc_now_ms() - t0 < 15000;) {
		ssize_t n = recv(fd, m, sizeof m - 1, 0);
		if (n <= 0)
			continue;
		m[n] = 0;
		if (strncmp(m, "READY=1\nSTATUS=node ", 20) == 0)
			be_ready++;
		else if (strncmp(m, "READY=1\n", 8) == 0 && strstr(m, "backend links up"))
			gw_ready++;
	}
	cr_assert_eq(be_ready, NBE, "READY=1 from %d of %d backends", be_ready, NBE);
	cr_assert_eq(gw_ready, NGW, "READY=1 from %d of %d gateways", gw_ready, NGW);
	T.be[0].expect_dead = 1;
	cr_assert_eq(tc_server_signal(&T.be[0].srv, SIGTERM), 0);
	int stopping = 0;
	for (int64_t t0 = tc_now_ms(); !stopping && tc_now_ms() - t0 < 5000;) {
		ssize_t n = recv(fd, m, sizeof m - 1, 0);
		if (n > 0) {
			m[n] = 0;
			stopping = strncmp(m, "STOPPING=1", 10) == 0;
		}
	}
	cr_assert(stopping, "no STOPPING=1 from the backend on SIGTERM");
	close(fd);
}

Test(backend, store_io_error_fails_the_iteration_safely, .timeout = 40)
{
	static const char *const opt[] = {"--inject-store-fault", "msg:eio:1", NULL};
	T.be_extra = opt;
	topo_start(NULL);
	uint64_t ua = user_of(1, 46000), off = user_of(0, 47000);
	struct tc_conn a, o;
	open_login(&a, 0, ua);
	send_msg(&a, 5, off, "through an I/O error");
	expect_error(&a, PROTO_E_TRY_AGAIN, 5, 5000, "the message whose commit failed");
	expect_stat(&T.be[0], "commits_failed", '=', 1, 3000);
	cr_assert_eq(stat_num(&T.be[0], "stored"), 0);
	cr_assert_eq(stat_num(&T.be[0], "store_errors"), 1, "a failed commit is a store error");
	cr_assert_eq(stat_num(&T.be[0], "links_lost"), 0, "a failed commit closed links");
	cr_assert_eq(gw_reconnects(), 0, "a failed commit made the gateways relink");
	send_msg(&a, 5, off, "through an I/O error");
	expect_ack(&a, 5, PROTO_ACK_STORED, "the resend");
	open_login(&o, 1, off);
	expect_deliver(&o, ua, 0, "through an I/O error", "stored once");
	expect_silent(&o, 300, "exactly once");
	tc_close(&a);
	tc_close(&o);
	all_alive();
}

/* Item 12: a store that fills up (1 MiB map, 16 KiB messages to made-up
 * users) refuses new data with store_full before a write can fail, group
 * creation included; deletes still commit, no link is closed and no commit
 * fails. */
Test(backend, full_store_refuses_writes_not_links, .timeout = 60)
{
	static const char *const opt[] = {"--store-size", "1m", NULL};
	T.be_extra = opt;
	topo_start(NULL);
	uint64_t ua = user_of(1, 48000);
	struct tc_conn a;
	open_login(&a, 0, ua);
	static char body[PROTO_MAX_BODY + 1];
	memset(body, 'f', PROTO_MAX_BODY);
	int stored = 0, full = 0;
	uint64_t first_to = 0;
	for (uint64_t k = 1; k <= 80 * BT && full < 3; k++) {
		uint64_t to = user_of(0, 49000 + k * 100);
		if (!first_to)
			first_to = to;
		send_msg(&a, k, to, body);
		count_answers(&a, 1, PROTO_E_STORE_FULL, &stored, &full);
	}
	cr_log_info("1 MiB store: %d messages of 16 KiB stored, then store_full", stored);
	cr_assert_eq(full, 3, "never store_full (%d stored)", stored);
	cr_assert_gt(stored, 10);
	/* a group cannot be created now either */
	uint64_t ug = user_of(0, 60000), m = ua;
	struct tc_conn g;
	open_login(&g, 0, ug);
	group_req(&g, PROTO_GROUP_CREATE, 1, 0, &m, 1);
	expect_group_result(&g, 1, PROTO_E_STORE_FULL, "group create in a full store");
	/* deletes still work: the first recipient takes its message */
	struct tc_conn r;
	open_login(&r, 1, first_to);
	uint64_t s = expect_deliver(&r, ua, 0, body, "the first recipient's message");
	send_receipt(&r, PROTO_RCPT_DELIVERED, ua, s);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', stored - 1, 3000);
	cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0);
	cr_assert_eq(gw_reconnects(), 0, "a full store closed links");
	tc_close(&a);
	tc_close(&g);
	tc_close(&r);
	all_alive();
}

/* Item 13: the login backlog has one entry per user, not per SESSION_UP. A
 * user with more stored messages than one iteration sends (256 a user) logs
 * in ten times in a burst: each login restarts the user's one entry, so the
 * backend sends at most the mailbox plus one iteration's worth per replaced
 * session (with an entry per login, every one of them went on to the end:
 * ten times the mailbox). The last connection gets every message (some
 * maybe twice: frames sent towards a replaced session are delivered to the
 * user's current one, and receivers drop duplicates by smid). */
Test(backend, login_backlog_one_entry_per_user, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(1, 61000), uu = user_of(0, 62000);
	enum { N = 1500, LOGINS = 10 };
	struct tc_conn a;
	open_login(&a, 0, ua);
	for (uint64_t k = 1; k <= N; k++) {
		char body[32];
		snprintf(body, sizeof body, "m%llu", (unsigned long long)k);
		send_msg(&a, k, uu, body);
		if (k % 200 == 0)
			tc_sleep_ms(120); /* under --rate-frames */
	}
	for (int k = 0; k < N; k++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_ACK, 5000, "ACK");
	}
	expect_stat(&T.be[0], "store_mailbox_entries", '=', N, 5000);
	struct tc_conn c[LOGINS];
	for (int i = 0; i < LOGINS; i++) {
		conn_open(&c[i], 0);
		uint8_t buf[128];
		size_t n = tc_enc_login(buf, sizeof buf, &T.secret, uu, 0, 1);
		send_raw(&c[i], buf, n);
	}
	static uint8_t seen[LOGINS][N + 1];
	memset(seen, 0, sizeof seen);
	int got[LOGINS] = {0}, twice[LOGINS] = {0}, kicked[LOGINS] = {0};
	for (int i = 0; i < LOGINS; i++) {
		struct tc_frame fr;
		for (;;) {
			/* the survivor's backlog arrives as its receipts open the
			 * window: wait long for that (a sanitizer build is slow),
			 * then briefly for anything sent twice */
			int wait = kicked[i] || got[i] - twice[i] >= N ? 700 : 5000;
			long r = tc_recv_frame(&c[i], &fr, wait);
			if (r <= 0)
				break;
			if (fr.f.type == PROTO_KICKED)
				kicked[i] = 1;
			if (fr.f.type != PROTO_DELIVER)
				continue;
			/* as a client does: the delivered receipt moves the login window on */
			struct proto_frame rc = {.type = PROTO_RECEIPT};
			rc.receipt.kind = PROTO_RCPT_DELIVERED;
			rc.receipt.peer = fr.f.deliver.from;
			rc.receipt.smid = fr.f.deliver.smid;
			tc_send_frame(&c[i], &rc); /* a kicked connection may be gone: no matter */
			unsigned k = 0;
			for (uint32_t j = 1; j < fr.f.deliver.body.len; j++)
				k = k * 10 + (unsigned)(fr.f.deliver.body.p[j] - '0');
			cr_assert(k >= 1 && k <= N, "body %.*s", (int)fr.f.deliver.body.len,
				  (const char *)fr.f.deliver.body.p);
			twice[i] += seen[i][k];
			seen[i][k] = 1;
			got[i]++;
		}
	}
	int last = -1;
	for (int i = 0; i < LOGINS; i++)
		if (!kicked[i])
			last = last == -1 ? i : -2;
	cr_assert_geq(last, 0, "not exactly one connection survived");
	int64_t sent = stat_num(&T.be[0], "delivered_login");
	cr_log_info("login backlog: %lld stored messages sent for %d in the mailbox and %d logins; the last connection "
		    "got %d (%d twice)",
		    (long long)sent, N, LOGINS, got[last], twice[last]);
	cr_assert_leq(sent, N + (LOGINS - 1) * 256 + 256, "the backend sent %lld stored messages for a mailbox of %d",
		      (long long)sent, N);
	cr_assert_eq(got[last] - twice[last], N, "the last connection got %d of %d stored messages",
		     got[last] - twice[last], N);
	for (int i = 0; i < LOGINS; i++)
		tc_close(&c[i]);
	tc_close(&a);
	all_alive();
}

/* Node threads (the cluster file's "threads"): each owns its users, its
 * store and its links, and the node's /stats adds them up. The thread count
 * is one fact in the cluster file: a data dir written with another count is
 * refused (users would hash to other threads), and a gateway whose cluster
 * file gives a backend another count refuses its links (HELLO's thread and
 * threads), saying so. */
Test(backend, node_threads_own_their_users_and_one_count_rules, .timeout = 60)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];
	cr_assert_eq(stat_num(p, "threads"), BT);
	uint64_t ua = user_of(1, 90000);
	struct tc_conn a, o;
	open_login(&a, 0, ua);
	uint64_t to[BE_THREADS_MAX];
	for (unsigned t = 0; t < BT; t++) {
		to[t] = user_of_thread(0, t, 90100 + 100 * t);
		send_msg(&a, 1 + t, to[t], "for a node thread");
		expect_ack(&a, 1 + t, PROTO_ACK_STORED, "stored by the recipient's node thread");
	}
	expect_stat(p, "stored", '=', BT, 3000);
	expect_stat(p, "store_mailbox_entries", '=', BT, 3000);
	for (unsigned t = 0; t < BT; t++) {
		open_login(&o, 1, to[t]);
		uint64_t smid = expect_deliver(&o, ua, 0, "for a node thread", "at login, from its node thread");
		send_receipt(&o, PROTO_RCPT_DELIVERED, ua, smid); /* to the thread inside smid */
		expect_receipt(&a, PROTO_RCPT_DELIVERED, to[t], smid, "the sender, told by the recipient's thread");
		tc_close(&o);
	}
	tc_close(&a);
	expect_stat(p, "store_mailbox_entries", '=', 0, 3000);

	/* another thread count in the cluster file: the data dir is refused */
	char other[PATH_MAX + 48], line[128];
	snprintf(other, sizeof other, "%s/cluster-other.conf", T.tmp);
	FILE *in = fopen(T.cluster_path, "r"), *out = fopen(other, "w");
	cr_assert(in && out);
	while (fgets(line, sizeof line, in)) {
		unsigned node, port, th;
		if (sscanf(line, "backend %u 127.0.0.1:%u threads %u", &node, &port, &th) == 3 && node == p->node)
			fprintf(out, "backend %u 127.0.0.1:%u threads %u\n", node, port, BT + 1);
		else
			fputs(line, out);
	}
	fclose(in);
	cr_assert_eq(fclose(out), 0);
	p->expect_dead = 1;
	int st = tc_server_stop(&p->srv, 5000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "backend did not stop cleanly (0x%x)", (unsigned)st);
	p->started = 0;
	char path[PATH_MAX + 32], node[16], log[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/backend/backend", tc_build_dir());
	snprintf(node, sizeof node, "%u", p->node);
	snprintf(log, sizeof log, "%s/%s.other.log", T.logdir, test_name());
	const char *argv[] = {path, "--node", node, "--cluster", other, "--cluster-secret-file", T.cluster_secret,
			      "--data-dir", p->data, "--stats-listen", "off", NULL};
	int rc = tc_run(path, (char *const *)argv, log, log, 10000);
	char *text = tc_read_file(log, NULL);
	cr_assert_eq(rc, 1, "a backend with another thread count on the data dir: exit %d; log:\n%s", rc,
		     text ? text : "");
	char want[96];
	snprintf(want, sizeof want, "holds the store of this node with %u thread(s); the cluster file gives it %u", BT,
		 BT + 1);
	cr_assert(text && strstr(text, want), "the refusal does not say '%s':\n%s", want, text ? text : "");
	free(text);
	be_restart(0, 1);
	wait_links();

	/* a gateway told another thread count refuses the backend's links */
	struct proc g = {0};
	g.port_fd = g.stats_fd = -1;
	g.node = RAW_NODE;
	g.port = tc_port_reserve(&g.port_fd);
	g.stats = tc_port_reserve(&g.stats_fd);
	char gpath[PATH_MAX + 32], gnode[16], listen[64], stats[64], secret[PATH_MAX + 48];
	snprintf(gpath, sizeof gpath, "%s/gateway/gateway", tc_build_dir());
	snprintf(gnode, sizeof gnode, "%u", RAW_NODE);
	snprintf(listen, sizeof listen, "127.0.0.1:%u", g.port);
	snprintf(stats, sizeof stats, "127.0.0.1:%u", g.stats);
	snprintf(secret, sizeof secret, "%s/other.secret", T.tmp);
	cr_assert_eq(tc_secret_new(secret, NULL), 0);
	const char *gargv[] = {gpath, "--node", gnode, "--threads", "1", "--listen", listen, "--stats-listen", stats,
			       "--auth-secret-file", secret, "--cluster", other, "--cluster-secret-file",
			       T.cluster_secret, NULL};
	snprintf(g.log, sizeof g.log, "%s/%s.gwother.log", T.logdir, test_name());
	cr_assert_eq(tc_server_start(&g.srv, gpath, (char *const *)gargv, g.log), 0);
	snprintf(want, sizeof want, "says it is thread 0 of %u here; the cluster file has thread 0 of %u", BT, BT + 1);
	int seen = log_has(&g, want, 5000);
	tc_server_signal(&g.srv, SIGTERM);
	tc_server_stop(&g.srv, 3000);
	tc_port_release(g.port_fd);
	tc_port_release(g.stats_fd);
	cr_assert(seen, "the gateway's log does not say '%s'", want);
	all_alive();
}

/* Review findings on the handshake: (a) a connection that never
 * authenticated costs the backend nothing when it goes (it walked the whole
 * session directory: ~21 ms a close at 2M sessions), so it is not counted as
 * a lost link either; (b) a flood of idle connections cannot lock gateways
 * out: past 64 pending handshakes the oldest gives way to a new connection
 * (the newest was refused: 64 idle sockets kept every gateway from linking). */
Test(backend, idle_handshakes_cannot_lock_gateways_out, .timeout = 60)
{
	topo_start(NULL);
	struct proc *p = &T.be[0];
	int64_t lost0 = stat_num(p, "links_lost");
	enum { IDLE = 80 };
	static struct tc_conn idle[IDLE];
	for (int i = 0; i < IDLE; i++) {
		int r = tc_connect_plain(&idle[i], p->port, 0, 2000);
		cr_assert_eq(r, 0, "idle connection %d: %s", i, tc_status_name(r));
	}
	expect_stat(p, "link_refused_busy", '>', IDLE - 64, 3000);
	/* gateway 1 loses its links and relinks while the idle sockets keep
	 * coming back */
	struct proc *g = &T.gw[0];
	g->expect_dead = 1;
	tc_server_stop(&g->srv, 3000);
	g->started = 0;
	gw_spawn(0);
	proc_wait_up(g, "gateway");
	int64_t deadline = tc_now_ms() + 8000, up = 0;
	while (tc_now_ms() < deadline) {
		for (int i = 0; i < IDLE; i++) {
			struct pollfd pf = {idle[i].fd, POLLIN, 0};
			if (idle[i].fd < 0 || (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLIN | POLLHUP)))) {
				tc_close(&idle[i]);
				if (tc_connect_plain(&idle[i], p->port, 0, 1000) != 0)
					idle[i].fd = -1;
			}
		}
		up = stat_num(g, "links_up");
		if (up == GW_THREADS * NBE * (int)BT)
			break;
		tc_sleep_ms(20);
	}
	cr_assert_eq(up, GW_THREADS * NBE * (int)BT, "gateway 1 has %lld of %d links with idle sockets flooding a backend",
		     (long long)up, GW_THREADS * NBE * (int)BT);
	for (int i = 0; i < IDLE; i++)
		tc_close(&idle[i]);
	/* only the gateway's own old links count as lost: none of the idle ones */
	expect_stat(p, "links_lost", '=', lost0 + GW_THREADS * (int)BT, 3000);
	all_alive();
}

/* ---- 13. faults that strand online users (issue 10) ------------------------------------------ */

/* a sends n messages of len bytes (numbered, under --rate-bytes) to the
 * offline user `to`, each acknowledged stored. */
static void store_many(struct tc_conn *a, uint64_t to, int n, size_t len)
{
	static char body[PROTO_MAX_BODY + 1];
	cr_assert(len >= 6 && len <= PROTO_MAX_BODY);
	for (int k = 1; k <= n; k++) {
		snprintf(body, sizeof body, "%05d", k);
		memset(body + 5, 'm', len - 5);
		body[len] = 0;
		send_msg(a, (uint64_t)k, to, body);
		if (k % 50 == 0)
			tc_sleep_ms(120); /* under --rate-bytes */
	}
	for (int k = 0; k < n; k++) {
		struct tc_frame fr;
		expect_type(a, &fr, PROTO_ACK, 5000, "ACK");
	}
}

/* u reads n stored messages (with a delivered receipt for each if
 * `receipts`), as fast as they come. */
static void read_stored(struct tc_conn *u, int n, int receipts)
{
	for (int got = 0; got < n; got++) {
		struct tc_frame fr;
		long r = tc_recv_frame(u, &fr, 5000);
		cr_assert_gt(r, 0, "after %d of %d stored messages: %s", got, n, tc_status_name(r));
		cr_assert(fr.f.type == PROTO_DELIVER, "after %d: %s", got, describe(&fr));
		if (receipts)
			send_receipt(u, PROTO_RCPT_DELIVERED, fr.f.deliver.from, fr.f.deliver.smid);
	}
}

/* The home thread of a user on a gateway of GW_THREADS threads (gateway/gw.h). */
static unsigned home_thread(uint64_t user)
{
	return (unsigned)(((hash64(user) >> 32) * (uint64_t)GW_THREADS) >> 32);
}

/* A user >= from owned by backend be whose home thread is `home`. */
static uint64_t user_of_home(int be, unsigned home, uint64_t from)
{
	for (uint64_t u = from;; u++)
		if ((int)cluster_user_owner(&T.cl, u) == be && home_thread(u) == home)
			return u;
}

/* Item 1: a backend that hangs while its link queue fills must learn the
 * sessions of users who stayed online once it is back, though the queue is
 * still full of the traffic that waited: their announcements have a
 * lane of their own and a resync goes on until all are through. Before,
 * the re-announcement failed on the full queue and was never retried: the
 * user got nothing until it logged in again. */
Test(backend, online_users_survive_a_backend_hang_with_a_full_queue, .timeout = 60)
{
	/* small socket buffers: what waits for the hung backend stays in the
	 * gateway's queue rather than in the kernel's */
	topo_start("--link-queue", "64k", "--link-sockbuf", "4k", NULL);
	struct proc *hung = &T.be[0];
	uint64_t u = user_of_home(0, 0, 63000);                       /* online at gateway 1, thread 0 */
	uint64_t s = user_of_home(0, 0, u + 1);                       /* same thread: fills its link */
	uint64_t v = user_of(1, 64000);                                /* at gateway 2 */
	struct tc_conn cu, cs, cv;
	open_login(&cu, 0, u);
	open_login(&cs, 0, s);
	open_login(&cv, 1, v);
	cr_assert_eq(tc_server_signal(&hung->srv, SIGSTOP), 0);
	/* the link is found dead (3 s); meanwhile, and after, gateway 1 thread
	 * 0's link to the hung backend fills (16 KiB messages to offline users
	 * it owns) until senders get try_again: what waits is in the queue, not
	 * in a send */
	expect_stat(&T.gw[0], "links_up", '<', GW_THREADS * NBE * (int)BT - 1, 6000);
	static char big[PROTO_MAX_BODY + 1];
	memset(big, 'q', PROTO_MAX_BODY);
	int again = 0;
	for (uint64_t k = 1; k <= 40 && !again; k++) {
		send_msg(&cs, k, user_of(0, 65000 + k * 10), big);
		struct tc_frame fr;
		long r = tc_recv_frame(&cs, &fr, 200);
		if (r > 0 && fr.f.type == PROTO_ERROR && fr.f.error.code == PROTO_E_TRY_AGAIN)
			again = 1;
	}
	cr_assert(again, "the link queue never filled");
	/* the backend comes back */
	cr_log_info("before resume: gateway 1 link queue %lld bytes", (long long)stat_num(&T.gw[0], "link_queue_bytes"));
	cr_assert_eq(tc_server_signal(&hung->srv, SIGCONT), 0);
	wait_links();
	/* u never reconnected: a message for it reaches it */
	send_msg(&cv, 1, u, "after the hang");
	expect_deliver(&cu, v, 0, "after the hang", "an online user who never reconnected, after the hang");
	expect_ack(&cv, 1, PROTO_ACK_STORED, "the sender's ACK");
	cr_log_info("after resume: backend 11 knows %lld sessions; gateway 1: %lld resyncs, %lld announced",
		    (long long)stat_num(hung, "sessions"), (long long)stat_num(&T.gw[0], "session_resyncs"),
		    (long long)stat_num(&T.gw[0], "sessions_announced"));
	tc_close(&cu);
	tc_close(&cs);
	tc_close(&cv);
	all_alive();
}

/* Item 2: a link that comes up announces every session however many there
 * are, with no fault at all: sessions through a 64 KiB queue (they used to
 * stop at the bound, about 5,400 a link). Since sessions go to their owner
 * only (dist version 4) a link carries an eighth of them here (2 gateway
 * threads, 2 backends of 2 node threads): 30,000 sessions make about 3,750
 * a link, more than one resync step (half the 64 KiB lane, about 2,700). */
Test(backend, every_session_announced_past_the_queue_bound, .timeout = 90)
{
	if (getenv("GW_TEST_TLS")) /* the announcement path is the same; 20,000 handshakes (more under ASan) pass its time bounds */
		cr_skip_test("plain TCP only: it logs 30,000 users in within 20 s");
	topo_start("--link-queue", "64k", NULL);
	enum { N = 30000 };
	char lg[PATH_MAX + 32], target[64], out[PATH_MAX + 64], n[16], base[24];
	snprintf(lg, sizeof lg, "%s/loadgen/loadgen", tc_build_dir());
	snprintf(target, sizeof target, "127.0.0.1:%u", T.gw[0].port);
	snprintf(out, sizeof out, "%s/%s.loadgen.log", T.logdir, test_name());
	snprintf(n, sizeof n, "%d", N);
	snprintf(base, sizeof base, "%d", 500000);
	/* source addresses of their own: 10,000 ephemeral ports on 127.0.0.1 could
	 * take the port the backend restarts on */
	char *const argv[] = {lg,	   "--secret-file", T.secret_path, "--targets", target, "--scenario", "idle",
			      "--connections", n, "--user-base", base, "--duration", "40s", "--quiet",
			      "--sources", "127.0.1.1-127.0.1.2", NULL};
	struct tc_server lgs;
	cr_assert_eq(tc_server_start_split(&lgs, lg, argv, out, out), 0, "cannot start the loadgen");
	int64_t in = wait_stat(&T.gw[0], "logged_in", '>', N, 20000);
	cr_assert_geq(in, N, "only %lld of %d logged in", (long long)in, N);
	/* each session is announced to its owner only */
	int64_t own = 0;
	for (uint64_t u = 500000; u < 500000 + N; u++)
		own += cluster_user_owner(&T.cl, u) == 0;
	expect_stat(&T.be[0], "sessions", '=', own, 10000);
	expect_sum("sessions", N, 10000, "every session at its owner");
	/* backend 11 restarts: its directory is empty, every session comes again
	 * (once the gateways closed their ends: the dead backend's sockets on
	 * its port must be gone for it to listen there again) */
	be_kill9(0);
	for (int i = 0; i < NGW; i++)
		expect_stat(&T.gw[i], "links_up", '=', GW_THREADS * (NBE - 1) * (int)BT, 5000);
	be_restart(0, 1);
	wait_links();
	int64_t got = wait_stat(&T.be[0], "sessions", '=', own, 20000);
	cr_assert_eq(got, own, "backend 11 knows %lld of its %lld sessions after relinking", (long long)got,
		     (long long)own);
	cr_log_info("resyncs %lld, announced %lld, deferred %lld, backend sessions_up %lld",
		    (long long)stat_num(&T.gw[0], "session_resyncs"), (long long)stat_num(&T.gw[0], "sessions_announced"),
		    (long long)stat_num(&T.gw[0], "session_announce_deferred"), (long long)stat_num(&T.be[0], "sessions_up"));
	tc_server_signal(&lgs, SIGINT);
	tc_server_stop(&lgs, 5000);
	all_alive();
}

/* Item 3: a user whose mailbox is far over --max-queue logs in and reads
 * (sending its delivered receipts, as clients do): stored messages come in
 * a window ahead of its receipts, never all at once, and it is never cut as
 * a slow consumer. Before: 256 stored messages a turn were queued at once,
 * the client was cut, its receipts lost, and every login started over. */
Test(backend, big_mailbox_login_is_paced_not_cut, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(1, 66000), uu = user_of(0, 67000);
	enum { N = 400 };
	struct tc_conn a, u;
	open_login(&a, 0, ua);
	store_many(&a, uu, N, 4000);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', N, 5000);
	open_login(&u, 1, uu);
	read_stored(&u, N, 1);
	cr_assert_eq(stat_num(&T.gw[1], "slow_consumers"), 0, "the reader was cut as a slow consumer");
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 0, 5000);
	ping_ok(&u, "the reader after its mailbox");
	tc_close(&a);
	tc_close(&u);
	all_alive();
}

/* Item 3, the same lockout by another door: the reader answers each stored
 * message with a delivered receipt as fast as the window brings them, which
 * is faster than --rate-frames (256 receipts at once here, 200 allowed a
 * second). Before, it was cut with rate_limited for answering, its next
 * login the same; now a receipt for a message it was given is not counted. */
Test(backend, big_mailbox_reader_is_not_cut_for_answering_fast, .timeout = 60)
{
	topo_start("--rate-frames", "200", NULL);
	uint64_t ua = user_of(1, 66500), uu = user_of(0, 67500);
	enum { N = 600 };
	struct tc_conn a, u;
	open_login(&a, 0, ua);
	for (int k = 1; k <= N; k++) {
		char body[16];
		snprintf(body, sizeof body, "r%d", k);
		send_msg(&a, (uint64_t)k, uu, body);
		if (k % 20 == 0)
			tc_sleep_ms(120); /* the sender stays under the limit */
	}
	for (int k = 0; k < N; k++) {
		struct tc_frame fr;
		expect_type(&a, &fr, PROTO_ACK, 5000, "ACK");
	}
	expect_stat(&T.be[0], "store_mailbox_entries", '=', N, 5000);
	open_login(&u, 1, uu);
	read_stored(&u, N, 1);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 0, 5000);
	cr_assert_eq(stat_num(&T.gw[1], "rate_limited"), 0, "the reader was cut for its receipts");
	ping_ok(&u, "the reader after its mailbox");
	tc_close(&a);
	tc_close(&u);
	all_alive();
}

/* Item 4: the link queue's bound is a bound on memory. While a backend is
 * away, one small message per loop iteration used to cost a whole batch
 * buffer each (256 KiB allocated, a page touched): RSS grew far past the
 * reported link_queue_bytes. Now a closed batch holds what it uses. */
Test(backend, link_queue_bound_is_a_memory_bound, .timeout = 60)
{
	/* a small receive pool: its buffers are touched as receives cycle
	 * through them (RSS that is not the queue's) */
	topo_start("--link-queue", "1m", "--recv-pool", "256k", NULL);
	uint64_t ua = user_of(1, 68000);
	struct tc_conn a;
	open_login(&a, 0, ua);
	be_kill9(0);
	expect_stat(&T.gw[0], "links_up", '=', GW_THREADS * (NBE - 1) * (int)BT, 6000);
	int64_t rss0 = stat_num(&T.gw[0], "rss_bytes"), al0 = stat_num(&T.gw[0], "allocated_bytes");
	enum { N = 4000 };
	for (uint64_t k = 1; k <= N; k++) {
		send_msg(&a, k, user_of(0, 69000 + k * 5), "small");
		tc_sleep_ms(1); /* one message per loop iteration */
		if (k % 500 == 0) {
			/* answers come after --store-timeout; read what is there */
			struct tc_frame fr;
			while (tc_recv_frame(&a, &fr, 0) > 0)
				;
		}
	}
	tc_sleep_ms(200);
	int64_t rss = stat_num(&T.gw[0], "rss_bytes"), q = stat_num(&T.gw[0], "link_queue_bytes");
	cr_log_info("%d messages queued for a dead backend: link_queue_bytes %lld, gateway RSS +%lld bytes, "
		    "allocated +%lld bytes",
		    N, (long long)q, (long long)(rss - rss0),
		    (long long)(stat_num(&T.gw[0], "allocated_bytes") - al0));
	cr_assert_gt(q, N * 20, "the queue holds too little to be the messages (%lld)", (long long)q);
	cr_assert_leq(q, 1 << 20, "the queue is over its bound");
	/* ASan's quarantine keeps what realloc and free give back: RSS means
	 * nothing there (the plain build checks it) */
	if (!TEST_UNDER_ASAN)
		cr_assert_lt(rss - rss0, 2 * q + (4 << 20), "RSS grew %lld bytes for a queue of %lld", (long long)(rss - rss0),
		     (long long)q);
	tc_close(&a);
	all_alive();
}

/* A HEARTBEAT on a raw link: the backend closes a link silent for 3 s. */
static void raw_heartbeat(struct raw *r, uint64_t seq)
{
	struct dist_frame hb = {.type = DIST_HEARTBEAT};
	hb.heartbeat.seq = seq;
	uint8_t hbuf[32];
	raw_send(r, hbuf, dist_encode(&hb, hbuf, sizeof hbuf));
}

/* One batch of frames and a HEARTBEAT on a raw link. */
static void raw_frames(struct raw *r, const struct dist_frame *f, size_t n, uint64_t seq)
{
	static uint8_t bb[1 << 16];
	struct dist_batch b;
	dist_batch_init(&b, bb, sizeof bb);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(dist_batch_add(&b, &f[i]), 0, "frame %zu", i);
	size_t bn;
	uint8_t *bp = dist_batch_finish(&b, seq, &bn);
	raw_send(r, bp, bn);
	raw_heartbeat(r, seq);
}

/* Heartbeats on a raw link while waiting up to ms for the backend's frames;
 * stops early when done(). */
static void raw_wait(struct raw *r, int ms, int (*done)(struct raw *))
{
	static uint64_t seq = 1000;
	int64_t deadline = tc_now_ms() + ms;
	while (tc_now_ms() < deadline && !(done && done(r))) {
		raw_heartbeat(r, seq++);
		raw_read(r, 0, 200);
	}
}

/* One SESSION_UP in a batch of its own, and a HEARTBEAT. */
static void raw_session_up(struct raw *r, uint64_t user, uint64_t conn, uint64_t seq)
{
	struct dist_frame up = {.type = DIST_SESSION_UP};
	up.session.user = user;
	up.session.node = RAW_NODE;
	up.session.conn = conn;
	raw_frames(r, &up, 1, seq);
}

/* The review of item 1: a resync announces sessions the backend may know
 * already (a session event that found the announcement lane full makes a
 * whole resync follow). The same session announced again must not start
 * its stored messages over: that sent the login window twice, enough with
 * the defaults to cut the reader as a slow consumer. */
Test(backend, same_session_announced_again_is_not_a_new_login, .timeout = 30)
{
	topo_start(NULL);
	uint64_t x = user_of(0, 70000), s = user_of(1, 70100);
	struct tc_conn a;
	open_login(&a, 0, s);
	for (uint64_t k = 1; k <= 3; k++) {
		send_msg(&a, k, x, "stored for x");
		expect_ack(&a, k, PROTO_ACK_STORED, "stored for x");
	}
	static struct raw r;
	raw_login_link(&r, owner_port(x), RAW_NODE);
	raw_session_up(&r, x, 77, 1);
	raw_read(&r, 0, 1200);
	cr_assert_eq(r.inner[DIST_ROUTE], 3, "x's stored messages at its login: %u", r.inner[DIST_ROUTE]);
	raw_session_up(&r, x, 77, 2); /* the same session, again */
	raw_read(&r, 0, 1200);
	cr_assert_eq(r.inner[DIST_ROUTE], 3, "the same session announced again got its stored messages again");
	raw_session_up(&r, x, 78, 3); /* a new connection of x: a new login */
	raw_read(&r, 0, 1200);
	cr_assert_eq(r.inner[DIST_ROUTE], 6, "a new login gets what is still stored");
	tc_close(&r.c);
	tc_close(&a);
	all_alive();
}

/* A message for a user whose login is still sending its stored messages
 * waits in the mailbox for that scan, which reaches it in order. Before, it
 * went out at once, ahead of the stored ones still held by the login
 * window, and a second time when the scan came to it before the reader's
 * delivered receipt for it was in: full_disk_refuses_new_messages_and_drains
 * saw a message twice in about 1 run in 5. */
Test(backend, message_during_a_login_backlog_comes_once_in_order, .timeout = 30)
{
	static const char *const be_opts[] = {"--login-stall", "2s", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t x = user_of(0, 72000), s = user_of(1, 72100);
	enum { N = 50, LEN = 4000 }; /* a 128 KiB window takes 32 of them */
	struct tc_conn a;
	open_login(&a, 0, s);
	store_many(&a, x, N, LEN);
	static struct raw r;
	raw_login_link(&r, owner_port(x), RAW_NODE);
	raw_session_up(&r, x, 79, 1); /* and no receipt: the window stays full */
	raw_read(&r, 0, 600);
	unsigned window = r.inner[DIST_ROUTE];
	cr_assert(window > 0 && window < N, "the login window sent %u of %d", window, N);
	send_msg(&a, N + 1, x, "new, during the login");
	expect_ack(&a, N + 1, PROTO_ACK_STORED, "the new message");
	raw_read(&r, 0, 600);
	cr_assert_eq(r.inner[DIST_ROUTE], window, "the new message went out ahead of the %u stored ones still waiting",
		     N - window);
	/* --login-stall opens the window again: the rest, then the new one */
	raw_session_up(&r, x, 79, 2); /* the same session (nothing new), and a heartbeat */
	raw_read(&r, 0, 1500);
	raw_session_up(&r, x, 79, 3);
	raw_read(&r, 0, 1500);
	cr_assert_eq(r.inner[DIST_ROUTE], N + 1, "%u messages sent for %d stored", r.inner[DIST_ROUTE], N + 1);
	cr_assert_eq(r.route_unordered, 0, "%u messages out of order", r.route_unordered);
	tc_close(&r.c);
	tc_close(&a);
	all_alive();
}

/* Item 3, the fallback: a client that reads but sends no delivered receipt
 * still gets its mailbox, a window per --login-stall, never all at once
 * (which would cut it as a slow consumer). */
Test(backend, login_window_opens_again_after_a_stall, .timeout = 40)
{
	static const char *const be_opts[] = {"--login-stall", "1s", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t ua = user_of(1, 71000), uu = user_of(0, 71100);
	enum { N = 100 };
	struct tc_conn a, u;
	open_login(&a, 0, ua);
	store_many(&a, uu, N, 4000);
	open_login(&u, 1, uu);
	int64_t t0 = tc_now_ms();
	read_stored(&u, N, 0); /* and no receipt */
	int64_t took = tc_now_ms() - t0;
	/* 400 KB in windows of 128 KiB: three stalls of 1 s at least */
	cr_assert_geq(took, 2500, "all %d in %lld ms: not paced", N, (long long)took);
	cr_assert_eq(stat_num(&T.gw[1], "slow_consumers"), 0);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', N, 2000); /* nothing acknowledged: all still stored */
	tc_close(&a);
	tc_close(&u);
	all_alive();
}

/* ---- 14. a full disk (issue 15) -------------------------------------------------------------- */

/* Whether this machine lets a test mount a tmpfs in a mount namespace of its
 * own (root, or a user namespace; not in some containers and chroots). */
static int tmpfs_usable(void)
{
	const char *tmpdir = getenv("TMPDIR");
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/tmpfs-probe.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(dir))
		return 0;
	char *const argv[] = {UNSHARE_SH, "mount -t tmpfs -o size=1m tmpfs \"$0\"", dir, NULL};
	int ok = access(argv[0], X_OK) == 0 && tc_run(argv[0], argv, "/dev/null", "/dev/null", 5000) == 0;
	rmdir(dir);
	return ok;
}

/* Item 1 and 2: the data dir's file system fills (a 24 MiB tmpfs under a
 * 1 GiB --store-size, so the map's 90% guard never applies) under continuing
 * traffic. Before, the commit that first met the full disk failed, each
 * failure closed every gateway link, every relink sent whole mailboxes again
 * (tens of thousands of duplicates), receipts could not commit while anyone
 * sent, and `stored` counted rolled-back writes. Now new messages get
 * store_full while the file system is down to --store-min-free, no commit
 * fails, no link closes, the recipient's receipts commit so its mailbox
 * drains, the space it frees takes new messages again, nothing comes twice,
 * and `stored` is what the senders were told was stored. */
Test(backend, full_disk_refuses_new_messages_and_drains, .timeout = 120)
{
	if (!tmpfs_usable())
		cr_skip_test("cannot mount a tmpfs in a mount namespace here (needs root or user namespaces)");
	static const char *const opt[] = {"--store-size", "1g", "--store-min-free", "4m", NULL};
	T.be_extra = opt;
	T.be_tmpfs = "24m";
	topo_start(NULL);
	uint64_t ua = user_of(1, 70000), off = user_of(0, 71000);
	struct tc_conn a, r;
	open_login(&a, 0, ua);
	enum { LEN = 8000, BATCH = 40, MAX = 8000 };
	static char body[LEN + 1];
	memset(body, 'd', LEN);
	/* fill: until the disk's reserve is reached */
	int stored = 0, full = 0;
	uint64_t cmid = 0;
	while (full == 0 && cmid < MAX) {
		for (int k = 0; k < BATCH; k++) {
			snprintf(body, sizeof body, "%06llu", (unsigned long long)++cmid);
			body[6] = 'd';
			send_body(&a, cmid, off, 0, body, LEN);
		}
		count_answers(&a, BATCH, PROTO_E_STORE_FULL, &stored, &full);
		tc_sleep_ms(80); /* under --rate-bytes */
	}
	tc_sleep_ms(250); /* the figures are published every 100 ms */
	int64_t free_b = stat_num(&T.be[0], "store_disk_free_bytes"),
		reserve = stat_num(&T.be[0], "store_disk_reserve_bytes");
	cr_log_info("24 MiB disk: %d messages of %d bytes stored, then store_full (%lld KiB free for the store, "
		    "reserve %lld KiB)",
		    stored, LEN, (long long)(free_b >> 10), (long long)(reserve >> 10));
	cr_assert_gt(full, 0, "%d messages of %d bytes and never store_full", stored, LEN);
	cr_assert_gt(stored, 1000, "only %d stored before store_full", stored);
	expect_stat(&T.be[0], "store_full_disk", '>', 1, 3000); /* store_full for the disk, not the map */
	cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0, "a commit failed on the full disk");
	cr_assert_eq(stat_num(&T.be[0], "stored"), stored, "stored counts what was not acknowledged");

	/* continuing traffic (50 messages/s) while the recipient reads its
	 * mailbox and acknowledges each message */
	open_login(&r, 1, off);
	int total_stored = stored, later_stored = 0, later_full = 0, got = 0, dups = 0;
	uint8_t *seen = calloc(MAX + 2000, 1);
	cr_assert_not_null(seen);
	int64_t t0 = tc_now_ms(), next_send = t0;
	/* sending stops after 8 s; 3 s more take the answers still in flight */
	while (tc_now_ms() - t0 < 60000 && (tc_now_ms() - t0 < 11000 || got < total_stored)) {
		if (tc_now_ms() >= next_send && tc_now_ms() - t0 < 8000 && cmid < MAX + 1500) {
			snprintf(body, sizeof body, "%06llu", (unsigned long long)++cmid);
			body[6] = 'd';
			send_body(&a, cmid, off, 0, body, LEN);
			next_send += 20;
		}
		struct tc_frame fr;
		while (tc_recv_frame(&a, &fr, 0) > 0) {
			if (fr.f.type == PROTO_RECEIPT)
				continue; /* the reader's, for the messages it took */
			if (fr.f.type == PROTO_ACK) {
				later_stored++;
				total_stored++;
			} else {
				cr_assert(fr.f.type == PROTO_ERROR && fr.f.error.code == PROTO_E_STORE_FULL,
					  "sender got %s while the disk was full", describe(&fr));
				later_full++;
			}
		}
		long n;
		while ((n = tc_recv_frame(&r, &fr, 5)) > 0) {
			cr_assert_eq(fr.f.type, PROTO_DELIVER, "reader got %s", describe(&fr));
			unsigned k = (unsigned)strtoul((const char *)fr.f.deliver.body.p, NULL, 10);
			cr_assert(k >= 1 && k < MAX + 2000, "a message numbered %u", k);
			if (seen[k]++)
				dups++;
			else
				got++;
			send_receipt(&r, PROTO_RCPT_DELIVERED, ua, fr.f.deliver.smid);
		}
		cr_assert(n == TC_TIMEOUT, "reader: %s", tc_status_name(n));
	}
	free(seen);
	cr_log_info("full disk, 50 msgs/s more for 8 s, done after %lld ms: %d more stored, %d store_full; the reader got %d of %d, %d "
		    "twice",
		    (long long)(tc_now_ms() - t0), later_stored, later_full, got, total_stored, dups);
	cr_assert_gt(later_full, 0, "the continuing traffic never met the full disk");
	cr_assert_gt(later_stored, 0, "the space the reader freed never took a new message");
	cr_assert_eq(got, total_stored, "the reader got %d of the %d messages acknowledged stored", got, total_stored);
	cr_assert_eq(dups, 0, "%d messages delivered twice", dups);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 0, 5000);
	cr_assert_eq(stat_num(&T.be[0], "stored"), total_stored, "stored differs from what senders were told");
	cr_assert_eq(stat_num(&T.be[0], "commits_failed"), 0);
	cr_assert_eq(stat_num(&T.be[0], "links_lost"), 0, "a link was closed");
	cr_assert_eq(gw_reconnects(), 0, "a gateway had to relink");
	tc_close(&a);
	tc_close(&r);
	all_alive();
}

/* ---- dist version 4: sessions at the owner, copies handed to it ---------------------- */

/* A group lives on its creator's node thread, which knows the sessions of its
 * own users only: a member owned elsewhere gets the message from its owner,
 * which the group's thread hands a copy (HANDOFF, through a gateway) and
 * deletes its own entry once the owner has stored it (HANDOFF_ACK). The
 * member's delivered receipt is checked by its owner and relayed to the
 * sender's. The handoff survives the owner being away and the group's
 * backend being killed: the entry waits in its mailbox, and a restarted
 * thread hands off what its store holds. */
Test(backend, group_messages_reach_members_through_their_owners, .timeout = 60)
{
	static const char *const be_opts[] = {"--login-stall", "1s", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t ua = user_of(0, 90000);
	uint64_t um = user_of(1, 90100); /* online, owned by the other backend */
	uint64_t uo = user_of(1, um + 1); /* offline, owned by the other backend */
	struct proc *bg = &T.be[0], *bm = &T.be[1];
	struct tc_conn a, m, o;
	open_login(&a, 0, ua);
	open_login(&m, 1, um);
	uint64_t members[2] = {um, uo};
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, members, 2);
	uint64_t gid = expect_group_result(&a, 1, 0, "create {a, m, o}");
	cr_assert_eq(cluster_group_node(gid), bg->node);
	cr_assert_eq(stat_num(bm, "sessions"), 1, "m's owner knows m");
	cr_assert_eq(stat_num(bg, "sessions"), 1, "the group's backend knows a only, not m");

	send_group_msg(&a, 10, gid, "g1");
	uint64_t s1 = expect_ack(&a, 10, PROTO_ACK_STORED, "a's ACK of g1");
	cr_assert_eq(msgid_node(s1), bg->node, "the group's thread stored it");
	cr_assert_eq(expect_deliver(&m, ua, gid, "g1", "m gets g1 from its owner"), s1);
	expect_stat(bm, "handoffs_stored", '=', 2, 3000); /* m's copy and o's */
	expect_stat(bg, "handoffs_acked", '=', 2, 3000);
	expect_sum("handoff_users", 0, 3000, "g1 handed off");
	expect_stat(bg, "store_mailbox_entries", '=', 0, 3000);
	expect_stat(bm, "store_mailbox_entries", '=', 2, 3000);
	/* m's receipt: checked by m's owner, relayed to a's */
	send_receipt(&m, PROTO_RCPT_DELIVERED, ua, s1);
	expect_receipt(&a, PROTO_RCPT_DELIVERED, um, s1, "a gets m's delivered receipt");
	expect_stat(bm, "receipts_relayed", '=', 1, 3000);
	expect_stat(bm, "store_mailbox_entries", '=', 1, 3000);

	/* o's owner away (stopped): g2 waits at the group's thread, which is
	 * then killed and started again */
	cr_assert_eq(tc_server_signal(&bm->srv, SIGSTOP), 0);
	send_group_msg(&a, 20, gid, "g2");
	uint64_t s2 = expect_ack(&a, 20, PROTO_ACK_STORED, "a's ACK of g2, m's owner stopped");
	expect_stat(bg, "store_mailbox_entries", '=', 2, 3000);
	tc_close(&a);
	be_kill9(0);
	be_restart(0, 1);
	cr_assert(log_has(bg, "users owned by other node threads have entries here", 3000),
		  "the restarted backend did not find what it holds for others");
	cr_assert_eq(tc_server_signal(&bm->srv, SIGCONT), 0);
	wait_links();
	expect_sum("handoff_users", 0, 10000, "g2 handed off after both came back");
	expect_stat(bg, "store_mailbox_entries", '=', 0, 3000);
	/* m (still online) gets g2 from its owner; o logs in and gets g1, g2 */
	cr_assert_eq(expect_deliver(&m, ua, gid, "g2", "m gets g2"), s2);
	open_login(&o, 0, uo);
	cr_assert_eq(expect_deliver(&o, ua, gid, "g1", "o: g1"), s1);
	cr_assert_eq(expect_deliver(&o, ua, gid, "g2", "o: g2"), s2);
	expect_silent(&o, 300, "o: each once");
	expect_silent(&m, 100, "m: each once");
	tc_close(&m);
	tc_close(&o);
	all_alive();
}

/* What a gateway may pass between backend threads cannot make a thread
 * drop what it holds for its own users: a HANDOFF_ACK is acted on only for
 * a user whose entries the thread is handing off, a HANDOFF naming the
 * thread itself as the holder is refused (acknowledging it would delete
 * the only copy), and a RELAY receipt (backend to gateway only) is ignored. */
Test(backend, forged_handoff_frames_delete_nothing, .timeout = 30)
{
	topo_start(NULL);
	uint64_t x = user_of(0, 91000), s = user_of(1, 91100);
	struct tc_conn a;
	open_login(&a, 0, s);
	send_msg(&a, 1, x, "for x");
	uint64_t smid = expect_ack(&a, 1, PROTO_ACK_STORED, "stored for x");
	struct proc *bx = &T.be[0];
	uint32_t xthread = cluster_user_link(&T.cl, x) - T.cl.nodes[0].link0;
	expect_stat(bx, "store_mailbox_entries", '=', 1, 3000);
	static struct raw r;
	raw_login_link(&r, owner_port(x), RAW_NODE);
	struct dist_frame f[3];
	memset(f, 0, sizeof f);
	f[0].type = DIST_HANDOFF_ACK;
	f[0].handoff_ack.node = bx->node;
	f[0].handoff_ack.thread = xthread;
	f[0].handoff_ack.user = x;
	f[0].handoff_ack.smid = smid;
	f[1].type = DIST_HANDOFF;
	f[1].route.smid = smid + 1;
	f[1].route.from = s;
	f[1].route.to = x;
	f[1].route.onode = bx->node;
	f[1].route.othread = xthread;
	f[1].route.body = (struct proto_bytes){(const uint8_t *)"forged", 6};
	f[2].type = DIST_RECEIPT;
	f[2].receipt.kind = PROTO_RCPT_DELIVERED;
	f[2].receipt.flags = DIST_RCPT_RELAY;
	f[2].receipt.from = x;
	f[2].receipt.to = s;
	f[2].receipt.smid = smid;
	raw_frames(&r, f, 3, 1);
	cr_assert(log_has(bx, "that this thread did not hand off", 3000), "the forged HANDOFF_ACK was not refused");
	cr_assert(log_has(bx, "which is no other backend thread", 3000), "the HANDOFF from itself was not refused");
	cr_assert(log_has(bx, "a relay receipt, which only backends send", 3000), "the RELAY receipt was not refused");
	raw_read(&r, 0, 500);
	cr_assert_eq(r.inner[DIST_HANDOFF_ACK], 0, "a HANDOFF naming the thread itself was acknowledged");
	cr_assert_eq(stat_num(bx, "store_mailbox_entries"), 1, "x's stored message is gone");
	cr_assert_eq(stat_num(bx, "handoffs_stored"), 0);
	tc_close(&r.c);
	/* x still gets it */
	struct tc_conn c;
	open_login(&c, 1, x);
	cr_assert_eq(expect_deliver(&c, s, 0, "for x", "x's message"), smid);
	expect_silent(&c, 200, "nothing forged");
	tc_close(&c);
	tc_close(&a);
	all_alive();
}

/* A gateway that takes handoffs and never passes them on (here a raw link
 * that swallows them; in life one cut off from the owner) holds nothing up
 * for long: after --login-stall without an ack the holder sends again on the
 * next gateway link. Before, it sent again on the same link while that
 * stayed up: for ever. 20 members owned elsewhere, so that some start on
 * the swallowing link (the link a user starts on follows its id). */
enum { SWALLOW_M = 20 };

static int all_handed_off(struct raw *r)
{
	(void)r;
	return stat_sum("handoff_users") == 0 && stat_num(&T.be[1], "handoffs_stored") == SWALLOW_M;
}

Test(backend, handoffs_move_on_from_a_gateway_that_swallows_them, .timeout = 60)
{
	static const char *const be_opts[] = {"--login-stall", "1s", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t ua = user_of(0, 95000);
	enum { M = SWALLOW_M };
	uint64_t members[M], u = 95100;
	for (int i = 0; i < M; i++)
		u = members[i] = user_of(1, u + 1);
	static struct raw r;
	raw_login_link(&r, owner_port(ua), RAW_NODE); /* to the group's thread */
	struct tc_conn a;
	open_login(&a, 0, ua);
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, members, M);
	uint64_t gid = expect_group_result(&a, 1, 0, "create");
	send_group_msg(&a, 2, gid, "to twenty offline members");
	expect_ack(&a, 2, PROTO_ACK_STORED, "stored");
	raw_wait(&r, 15000, all_handed_off); /* keeping the swallowing link up */
	int64_t left = stat_sum("handoff_users");
	cr_log_info("the swallowing link got %u handoffs", r.inner[DIST_HANDOFF]);
	cr_assert_eq(left, 0, "%lld members' copies still at the group's thread after 15 s (the swallowing link took %u)",
		     (long long)left, r.inner[DIST_HANDOFF]);
	cr_assert_eq(stat_num(&T.be[1], "handoffs_stored"), M);
	/* the store's gauges are published every 100 ms, after the counters */
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 0, 3000);
	tc_close(&r.c);
	tc_close(&a);
	all_alive();
}

static int three_handoffs(struct raw *r)
{
	return r->nhandoff >= 3;
}

static int a_fourth_handoff(struct raw *r)
{
	return r->nhandoff >= 4;
}

static int only_link(struct raw *r)
{
	(void)r;
	return stat_num(&T.be[0], "links_up") == 1;
}

/* A handoff lost while the user's later ones are acknowledged goes again
 * about a second later (acks come back in the order the handoffs went, so
 * an older entry still held was lost), not after --login-stall (30 s here)
 * with the user's handoffs quiet; and what went on a link that is lost goes
 * again on the next, though that one takes the same slot. The test is the
 * gateway here: the real ones are stopped, so the holder's only link is a
 * raw one, which acknowledges as it likes. */
Test(backend, lost_handoffs_go_again_without_waiting_for_the_stall, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 96000), um = user_of(1, 96100);
	struct tc_conn a;
	open_login(&a, 0, ua);
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, &um, 1);
	uint64_t gid = expect_group_result(&a, 1, 0, "create {a, m}");
	static struct raw r;
	raw_login_link(&r, owner_port(ua), RAW_NODE);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(tc_server_signal(&T.gw[i].srv, SIGSTOP), 0);
	raw_wait(&r, 8000, only_link);
	cr_assert_eq(stat_num(&T.be[0], "links_up"), 1, "the stopped gateways' links are still up");
	/* three group messages for m, sent by the raw gateway */
	struct dist_frame f[3];
	memset(f, 0, sizeof f);
	for (int k = 0; k < 3; k++) {
		f[k].type = DIST_ROUTE;
		f[k].route.from = ua;
		f[k].route.group = gid;
		f[k].route.onode = RAW_NODE;
		f[k].route.oconn = 1;
		f[k].route.cmid = 500 + (uint64_t)k;
		f[k].route.body = (struct proto_bytes){(const uint8_t *)"held", 4};
	}
	raw_frames(&r, f, 3, 1);
	raw_wait(&r, 3000, three_handoffs);
	cr_assert_eq(r.nhandoff, 3, "the group's thread handed off %u of 3", r.nhandoff);
	cr_assert(r.handoff_smid[0] < r.handoff_smid[1] && r.handoff_smid[1] < r.handoff_smid[2]);
	/* the second and third are acknowledged; the first was lost */
	uint32_t hthread = cluster_user_link(&T.cl, ua) - T.cl.nodes[0].link0;
	struct dist_frame ack[2];
	memset(ack, 0, sizeof ack);
	for (int k = 0; k < 2; k++) {
		ack[k].type = DIST_HANDOFF_ACK;
		ack[k].handoff_ack.node = T.be[0].node;
		ack[k].handoff_ack.thread = hthread;
		ack[k].handoff_ack.user = um;
		ack[k].handoff_ack.smid = r.handoff_smid[1 + k];
	}
	int64_t t0 = tc_now_ms();
	raw_frames(&r, ack, 2, 2);
	raw_wait(&r, 5000, a_fourth_handoff);
	cr_assert_geq(r.nhandoff, 4, "the lost handoff did not go again within 5 s");
	cr_assert_eq(r.handoff_smid[3], r.handoff_smid[0], "what went again is not the lost one");
	cr_log_info("the lost handoff went again after %lld ms", (long long)(tc_now_ms() - t0));
	/* (the store's gauges are published every 100 ms) */
	cr_assert_eq(wait_stat(&T.be[0], "store_mailbox_entries", '=', 1, 3000), 1, "the acknowledged two are not deleted");
	/* the link is lost, unacknowledged; the next one (same slot) gets it again */
	uint64_t lost = r.handoff_smid[0];
	tc_close(&r.c);
	memset(&r, 0, sizeof r);
	raw_login_link(&r, owner_port(ua), RAW_NODE);
	raw_wait(&r, 3000, NULL);
	cr_assert_geq(r.nhandoff, 1, "nothing went again on the new link within 3 s");
	cr_assert_eq(r.handoff_smid[0], lost, "the new link's first handoff is not the unacknowledged one");
	tc_close(&r.c);
	for (int i = 0; i < NGW; i++)
		cr_assert_eq(tc_server_signal(&T.gw[i].srv, SIGCONT), 0);
	wait_links();
	tc_close(&a);
	all_alive();
}

/* A commit that fails after the owner's ack was taken puts the holder's
 * entry back: it is handed off again at once (the owner has it, and acks
 * again), not left until --login-stall (30 s here). The failure: the
 * holder's first delete, the ack's, fails with EIO, so its commit fails. */
Test(backend, a_failed_commit_hands_off_again, .timeout = 60)
{
	topo_start(NULL);
	uint64_t ua = user_of(0, 97000), um = user_of(1, 97100);
	struct tc_conn a;
	open_login(&a, 0, ua);
	group_req(&a, PROTO_GROUP_CREATE, 1, 0, &um, 1);
	uint64_t gid = expect_group_result(&a, 1, 0, "create {a, m}");
	tc_close(&a);
	static const char *const opt[] = {"--inject-store-fault", "delete:eio:1", NULL};
	T.be_extra = opt;
	be_cycle(0);
	open_login(&a, 0, ua);
	send_group_msg(&a, 2, gid, "through a failed commit");
	expect_ack(&a, 2, PROTO_ACK_STORED, "stored");
	expect_stat(&T.be[0], "commits_failed", '=', 1, 5000);
	expect_stat(&T.be[1], "handoffs_stored", '=', 1, 3000);
	/* counters move at once; the store's gauges are published every 100 ms */
	expect_stat(&T.be[0], "handoffs_acked", '=', 1, 5000);
	cr_assert_geq(stat_num(&T.be[1], "handoffs_in"), 2, "the handoff did not go again");
	tc_sleep_ms(300);
	expect_stat(&T.be[0], "store_mailbox_entries", '=', 0, 3000);
	expect_stat(&T.be[0], "handoff_users", '=', 0, 3000);
	/* m gets it once */
	struct tc_conn m;
	open_login(&m, 1, um);
	expect_deliver(&m, ua, gid, "through a failed commit", "m");
	expect_silent(&m, 300, "once");
	tc_close(&m);
	tc_close(&a);
	all_alive();
}

/* A checked delivered receipt for a sender owned elsewhere goes back on the
 * reader's gateway link to be relayed; when that link's queue is full it is
 * kept here for the sender and handed to its owner like any stored receipt,
 * where it was dropped. The reader's "gateway" is a raw link that reads
 * nothing, so the deliveries to the reader fill its credit and its queue. */
Test(backend, a_relay_that_finds_the_link_full_is_kept_and_handed_on, .timeout = 60)
{
	static const char *const be_opts[] = {"--link-queue", "64k", "--login-stall", "1s", NULL};
	T.be_extra = be_opts;
	topo_start("--rate-bytes", "0", "--rate-frames", "0", NULL);
	uint64_t x = user_of(0, 98000), s = user_of(1, 98100);
	static struct raw r;
	raw_login_link(&r, owner_port(x), RAW_NODE);
	raw_session_up(&r, x, 77, 1); /* x is online on the raw link */
	struct tc_conn a;
	open_login(&a, 1, s);
	static char big[PROTO_MAX_BODY + 1];
	memset(big, 'r', PROTO_MAX_BODY);
	enum { N = 320 }; /* 5 MiB: past the 4 MiB of initial credit and the 64 KiB queue */
	uint64_t first = 0;
	for (uint64_t k = 1; k <= N; k++) {
		send_msg(&a, k, x, big);
		uint64_t smid = expect_ack(&a, k, PROTO_ACK_STORED, "stored for x");
		if (k == 1)
			first = smid;
		if (k % 32 == 0)
			raw_heartbeat(&r, k);
	}
	expect_stat(&T.be[0], "link_queue_bytes", '>', 60 << 10, 5000);
	/* x's delivered receipt for the first, from the raw gateway */
	struct dist_frame f = {.type = DIST_RECEIPT};
	f.receipt.kind = PROTO_RCPT_DELIVERED;
	f.receipt.flags = DIST_RCPT_DELETE | DIST_RCPT_NOTIFY;
	f.receipt.from = x;
	f.receipt.to = s;
	f.receipt.smid = first;
	raw_frames(&r, &f, 1, 2);
	expect_receipt(&a, PROTO_RCPT_DELIVERED, x, first, "s gets x's receipt, though x's gateway link was full");
	cr_assert_eq(stat_num(&T.be[0], "receipts_stored"), 1, "not kept at x's owner on its way");
	tc_close(&r.c);
	tc_close(&a);
	all_alive();
}

/* A receipt refused by --receipt-max is a dropped receipt, not a full
 * mailbox: 0ef05aa put the handoff of a receipt stored for another
 * thread's user between the branches of that count, and every refused
 * receipt counted in mailbox_full (store_answer) as well. */
Test(backend, receipts_over_their_bound_are_not_full_mailboxes, .timeout = 30)
{
	static const char *const be_opts[] = {"--receipt-max", "10", NULL};
	T.be_extra = be_opts;
	topo_start(NULL);
	uint64_t victim = user_of(0, 99000), peer = user_of(1, 99100);
	struct tc_conn x;
	open_login(&x, 1, peer);
	uint64_t now_ms = tc_wall_s() * 1000;
	for (unsigned i = 0; i < 20; i++) /* read receipts, kept for the offline victim */
		send_receipt(&x, PROTO_RCPT_READ, victim, msgid_make(now_ms, T.be[0].node, i));
	ping_ok(&x, "after the receipts");
	expect_stat(&T.be[0], "receipts_dropped", '=', 10, 3000);
	expect_stat(&T.be[0], "store_receipts", '=', 10, 3000);
	cr_assert_eq(stat_num(&T.be[0], "mailbox_full"), 0, "refused receipts counted as full mailboxes");
	tc_close(&x);
	all_alive();
}
