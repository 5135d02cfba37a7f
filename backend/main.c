/* main.c: the backend binary: options, start-up, signals, shutdown.
 *
 * The node threads run the loops (node.c), as many as the cluster file
 * gives this node (`threads`), each with its listener (port + its number)
 * and its store (the data dir itself for one thread, else its
 * thread-K-of-N subdirectory); the main thread waits for signals and serves
 * nothing else; the stats endpoint has its own thread. SIGTERM or SIGINT:
 * stop accepting, finish the iteration (commit), close the links, exit 0.
 * Gateways queue for it meanwhile and reconnect when it is back.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/be.h"
#include "runtime/clock.h"
#include "runtime/httpd.h"
#include "runtime/log.h"
#include "runtime/sdnotify.h"
#include "runtime/version.h"
#include "runtime/uring.h"

static const char usage[] =
	"usage: backend --node ID --cluster FILE --data-dir DIR [options]\n"
	"\n"
	"A backend node of the chat service: gateways link to it; it keeps the\n"
	"session directory, stores messages durably (LMDB in --data-dir) before\n"
	"acknowledging them, delivers them to online users or at their next login,\n"
	"routes receipts and owns groups. The cluster file lists every backend\n"
	"(\"backend ID IP:PORT [threads N]\" lines, this node's included) and every\n"
	"gateway (\"gateway ID\"); links are authenticated with the cluster secret.\n"
	"With threads N the backend runs N shared-nothing node threads (one per\n"
	"core): thread k listens on PORT + k and keeps DIR/thread-K-of-N.\n"
	"Signals: SIGTERM/SIGINT stop cleanly (commit, close links, exit 0); SIGHUP reloads\n"
	"the options marked so below (a configuration that does not parse is refused).\n";

/* Post a control message to node thread b. Returns 0, or -errno when it
 * could not be posted (then ptr is still the caller's). */
static int ctrl(struct be *b, int cmd, void *ptr)
{
	struct io_uring r;
	int ret = io_uring_queue_init(4, &r, 0);
	if (ret != 0)
		return ret;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
	io_uring_prep_msg_ring(sqe, b->ring_fd, (unsigned)cmd, ud_ptr(BU_CTRL, ptr), 0);
	struct io_uring_cqe *cqe;
	ret = io_uring_submit_and_wait(&r, 1);
	if (ret >= 0 && io_uring_peek_cqe(&r, &cqe) == 0)
		ret = cqe->res < 0 ? cqe->res : 0;
	io_uring_queue_exit(&r);
	return ret < 0 ? ret : 0;
}

#define BE_OPTS_MAX 40

/* The options, over the config struct cfg (a reload builds a second table
 * over a fresh struct). */
static size_t be_options(struct be_config *cfg, struct opt *out)
{
	const struct opt opts[] = {
		{"listen", OPT_STR, &cfg->listen, NULL, 0, 0,
		 "address gateways link to (default: this node's address in the cluster file)", 0},
		{"node", OPT_INT, &cfg->node, "0", 0, MSGID_MAX_NODE, "this node's id (required; listed in the cluster file)", 0},
		{"cluster", OPT_STR, &cfg->cluster_file, NULL, 0, 0, "cluster file (required)", 0},
		{"cluster-secret-file", OPT_STR, &cfg->cluster_secret_file, NULL, 0, 0,
		 "secret(s) the dist links authenticate with, one per line: the first signs, a second is also "
		 "accepted (for rotation); required; the path is fixed, SIGHUP reads the file again", 0},
		{"data-dir", OPT_STR, &cfg->data_dir, NULL, 0, 0, "directory of the durable store (required; created if missing)", 0},
		{"stats-listen", OPT_STR, &cfg->stats_listen, "127.0.0.1:9101", 0, 0,
		 "HTTP stats endpoint (/metrics, /stats, /healthz); \"off\" to disable", 0},
		{"store-size", OPT_SIZE, &cfg->store_size, "4g", 1 << 20, 1ll << 44, "largest the store may grow (LMDB map size)", 0},
		{"store-min-free", OPT_SIZE, &cfg->store_min_free, "64m", 0, 1ll << 44,
		 "free space the data dir's file system keeps: below it new messages get store_full, deletes go on", 0},
		{"mailbox-max", OPT_INT, &cfg->mailbox_max, "10000", 1, 100000000,
		 "stored messages per user before senders get ERROR mailbox_full", OPT_RELOAD},
		{"max-group", OPT_INT, &cfg->max_group, "1024", 2, 1000000, "members per group", OPT_RELOAD},
		{"link-queue", OPT_SIZE, &cfg->link_queue, "64m", 64 << 10, 1ll << 34, "bytes queued per gateway link", 0},
		{"link-batch", OPT_SIZE, &cfg->link_batch, "256k", 0, DIST_MAX_FRAME - 64,
		 "largest batch on a link (0: no batching, for comparison)", 0},
		{"link-sockbuf", OPT_SIZE, &cfg->link_sockbuf, "1m", 0, 1 << 30, "SO_SNDBUF/SO_RCVBUF of gateway links", 0},
		{"dedup-window", OPT_MS, &cfg->dedup_window_ms, "10m", 0, 86400000ll * 7,
		 "remember (sender, cmid) this long so a resent message is not stored twice (memory: 32-64 bytes "
		 "per message stored in the window)", OPT_RELOAD},
		{"sender-max", OPT_INT, &cfg->sender_max, "100000", 1, 1000000000,
		 "undelivered stored messages (mailbox entries) one sender may have here before ERROR slow_down", OPT_RELOAD},
		{"receipt-max", OPT_INT, &cfg->receipt_max, "10000", 1, 100000000,
		 "stored receipts per user (apart from --mailbox-max; at most 64 per peer, older ones give way)", OPT_RELOAD},
		{"login-window", OPT_SIZE, &cfg->login_window, "128k", 4096, 1 << 30,
		 "stored messages a logging-in user is sent ahead of its delivered receipts, in bytes (at most 256 "
		 "messages); keep it under the gateways' --max-queue", OPT_RELOAD},
		{"login-stall", OPT_MS, &cfg->login_stall_ms, "30s", 100, 3600000,
		 "a logging-in user that sends no delivered receipt for this long is sent the next window anyway; "
		 "entries handed to their owner thread with no ack for this long go again, through the next gateway",
		 OPT_RELOAD},
		{"fanout-rate", OPT_INT, &cfg->fanout_rate, "10000", 1, 1000000000,
		 "mailbox writes per second per sender (a group message to N members is N), burst 2 x this or "
		 "2 x --max-group; over it: ERROR slow_down", OPT_RELOAD},
		{"inject-store-fault", OPT_STR, &cfg->inject_store_fault, NULL, 0, 0,
		 "test hook, never in production: OPS:ERR:COUNT makes the next COUNT store writes of kinds OPS "
		 "(msg,group,dedup,receipt,delete joined by +) fail with ERR (enospc or eio)", 0},
		{"log-level", OPT_STR, &cfg->log_level, "info", 0, 0, "error, warn, info or debug", OPT_RELOAD},
	};
	_Static_assert(sizeof opts / sizeof opts[0] <= BE_OPTS_MAX, "BE_OPTS_MAX is too small");
	memcpy(out, opts, sizeof opts);
	return sizeof opts / sizeof opts[0];
}

/* SIGHUP: parse the command line and --config again; the reloadable options
 * (OPT_RELOAD) go to the node thread, which takes the whole new config at
 * its next iteration; what needs a restart is said and left. *cur is the
 * configuration the node thread runs with (the main thread's own copy), and
 * *keys its cluster secrets (the same). Every node thread gets its copy. */
static void reload(struct be *all, uint32_t threads, struct be_config *cur, struct peerauth_keys *keys, int argc,
		   char **argv)
{
	struct be_config nc, next = *cur;
	struct opt a[BE_OPTS_MAX], o[BE_OPTS_MAX], c[BE_OPTS_MAX];
	char err[512];
	memset(&nc, 0, sizeof nc);
	size_t n = be_options(cur, a);
	be_options(&nc, o);
	be_options(&next, c);
	if (opts_parse(o, n, argc, argv, usage, err, sizeof err) != 0) {
		log_error("SIGHUP: configuration refused, the running one stays: %s", err);
		return;
	}
	int lvl = log_level_parse(nc.log_level);
	if (lvl < 0) {
		log_error("SIGHUP: configuration refused, the running one stays: --log-level '%s'", nc.log_level);
		return;
	}
	/* the cluster secret file (its path is fixed) is read again */
	struct peerauth_keys nk;
	if (peerauth_load(&nk, cur->cluster_secret_file, err, sizeof err) != 0) {
		log_error("SIGHUP: configuration refused, the running one stays: --cluster-secret-file: %s", err);
		return;
	}
	unsigned changed = opts_reload(a, o, c, n);
	if (peerauth_reloaded(keys, &nk)) {
		*keys = nk;
		changed++;
	}
	if (!changed) {
		log_info("SIGHUP: nothing to change");
		return;
	}
	struct be_reload *msg[CLUSTER_MAX_THREADS];
	for (uint32_t k = 0; k < threads; k++) {
		msg[k] = aligned_alloc(64, (sizeof *msg[k] + 63) & ~(size_t)63);
		if (!msg[k]) {
			log_error("SIGHUP: out of memory; the running configuration stays");
			while (k)
				free(msg[--k]);
			return;
		}
		msg[k]->cfg = next;
		msg[k]->keys = *keys;
	}
	log_set_level((enum log_level)lvl);
	for (uint32_t k = 0; k < threads; k++) {
		int r = ctrl(&all[k], BE_CTRL_RELOAD, msg[k]);
		if (r != 0) {
			log_error("SIGHUP: node thread %u keeps its configuration: %s", k, strerror(-r));
			free(msg[k]);
		}
	}
	*cur = next;
}

/* The data dir of a node of `threads` threads: DIR itself for one thread,
 * DIR/thread-K-of-N for each of N. One written with another thread count
 * (its users hashed to other threads) is refused: 0, or -1 with err. */
static int data_dir_check(const char *dir, uint32_t threads, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	DIR *d = opendir(dir);
	if (!d) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	struct dirent *e;
	unsigned other = 0;
	while ((e = readdir(d))) {
		unsigned k, n;
		char tail;
		if (strcmp(e->d_name, "data.mdb") == 0)
			n = 1;
		else if (sscanf(e->d_name, "thread-%u-of-%u%c", &k, &n, &tail) != 2)
			continue;
		if (n != threads)
			other = n;
	}
	closedir(d);
	if (other) {
		snprintf(err, errlen,
			 "%s holds the store of this node with %u thread(s); the cluster file gives it %u. Users hash to "
			 "other threads when the count changes: run it with threads %u until its messages are delivered, "
			 "or move the data dir away",
			 dir, other, threads, other);
		return -1;
	}
	return 0;
}

static void stores_close(struct be *all, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		if (all[k].lfd >= 0)
			close(all[k].lfd);
		if (all[k].store)
			store_close(all[k].store);
	}
}

static void ctrl_all(struct be *all, uint32_t n, int cmd)
{
	for (uint32_t k = 0; k < n; k++) {
		if (__atomic_load_n(&all[k].finished, __ATOMIC_ACQUIRE))
			continue; /* stopped already (its ring may be gone) */
		int r = ctrl(&all[k], cmd, NULL);
		if (r != 0 && r != -EBADF)
			log_error("cannot signal node thread %u: %s", k, strerror(-r));
	}
}


int main(int argc, char **argv)
{
	static struct be all[CLUSTER_MAX_THREADS];
	static struct cluster cluster;
	struct be_config cfg_, *cfg = &cfg_;
	memset(cfg, 0, sizeof *cfg);
	struct opt opts[BE_OPTS_MAX];
	size_t nopts = be_options(cfg, opts);
	char err[512];
	int r = opts_parse(opts, nopts, argc, argv, usage, err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "backend: %s\n", err);
		return 2;
	}
	int lvl = log_level_parse(cfg->log_level);
	if (lvl < 0) {
		fprintf(stderr, "backend: --log-level: '%s' is not error, warn, info or debug\n", cfg->log_level);
		return 2;
	}
	log_init("backend", (enum log_level)lvl);
	if (!cfg->node || !cfg->cluster_file || !cfg->data_dir || !cfg->cluster_secret_file) {
		fprintf(stderr, "backend: --node, --cluster, --cluster-secret-file and --data-dir are required (see --help; "
				"tools/mint-token --new-secret FILE makes a secret)\n");
		return 2;
	}
	struct peerauth_keys keys;
	if (peerauth_load(&keys, cfg->cluster_secret_file, err, sizeof err) != 0) {
		fprintf(stderr, "backend: --cluster-secret-file: %s\n", err);
		return 2;
	}
	if (cluster_load(&cluster, cfg->cluster_file, err, sizeof err) != 0) {
		fprintf(stderr, "backend: --cluster: %s\n", err);
		return 2;
	}
	int self = cluster_find(&cluster, (uint32_t)cfg->node);
	if (self < 0) {
		fprintf(stderr, "backend: node %lld is not in %s\n", (long long)cfg->node, cfg->cluster_file);
		return 2;
	}
	const uint32_t threads = cluster.nodes[self].threads;
	struct addr la = cluster.nodes[self].addr, sa;
	if (cfg->listen && addr_parse(cfg->listen, &la, err, sizeof err) != 0) {
		fprintf(stderr, "backend: --listen: %s\n", err);
		return 2;
	}
	if (addr_port(&la) + threads - 1 > 65535) {
		fprintf(stderr, "backend: --listen: %u threads need ports %u..%u\n", threads, addr_port(&la),
			addr_port(&la) + threads - 1);
		return 2;
	}
	int stats_on = strcmp(cfg->stats_listen, "off") != 0;
	if (stats_on && addr_parse(cfg->stats_listen, &sa, err, sizeof err) != 0) {
		fprintf(stderr, "backend: --stats-listen: %s\n", err);
		return 2;
	}
	unsigned fault_mask = 0, fault_count = 0;
	int fault_err = 0;
	if (cfg->inject_store_fault) {
		/* OPS:ERR:COUNT, e.g. msg+dedup:eio:1 (a test hook) */
		static const struct {
			const char *name;
			unsigned op;
		} names[] = {{"msg", STORE_OP_MSG},
			     {"group", STORE_OP_GROUP},
			     {"dedup", STORE_OP_DEDUP},
			     {"receipt", STORE_OP_RECEIPT},
			     {"delete", STORE_OP_DELETE}};
		char ops[64], e[16];
		int ok = sscanf(cfg->inject_store_fault, "%63[a-z+]:%15[a-z]:%u", ops, e, &fault_count) == 3 &&
			 (strcmp(e, "eio") == 0 || strcmp(e, "enospc") == 0);
		for (char *t = ok ? strtok(ops, "+") : NULL; t; t = strtok(NULL, "+")) {
			size_t k;
			for (k = 0; k < sizeof names / sizeof names[0] && strcmp(names[k].name, t) != 0; k++)
				;
			if (k == sizeof names / sizeof names[0])
				ok = 0;
			else
				fault_mask |= names[k].op;
		}
		if (!ok) {
			fprintf(stderr, "backend: --inject-store-fault: want OPS:ERR:COUNT (OPS msg, group, dedup, receipt, "
					"delete joined by +; ERR eio or enospc)\n");
			return 2;
		}
		fault_err = strcmp(e, "eio") == 0 ? -EIO : -ENOSPC;
	}
	if (data_dir_check(cfg->data_dir, threads, err, sizeof err) != 0) {
		log_error("store: %s", err);
		return 1;
	}
	uint64_t started = clock_wall_ms();
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, threads + 1);
	char a[64];
	for (uint32_t k = 0; k < threads; k++) {
		struct be *b = &all[k];
		b->lfd = -1;
	}
	for (uint32_t k = 0; k < threads; k++) {
		struct be *b = &all[k];
		b->cfg = *cfg;
		b->keys = keys;
		b->cluster = &cluster;
		b->self = self;
		b->thread = k;
		b->threads = threads;
		b->link_self = cluster.nodes[self].link0 + k;
		b->all = all;
		b->start = &start;
		b->started_wall_ms = started;
		char dir[PATH_MAX];
		if (threads == 1)
			snprintf(dir, sizeof dir, "%s", cfg->data_dir);
		else
			snprintf(dir, sizeof dir, "%s/thread-%u-of-%u", cfg->data_dir, k, threads);
		/* the map size is the node's: each thread's store gets its part */
		size_t map = (size_t)cfg->store_size / threads;
		b->store = store_open(dir, map < (1u << 20) ? 1u << 20 : map, err, sizeof err);
		if (!b->store) {
			log_error("store: %s", err);
			stores_close(all, threads);
			return 1;
		}
		store_set_min_free(b->store, (uint64_t)cfg->store_min_free);
		if (store_disk_low(b->store) && k == 0) {
			struct store_stats st;
			store_get_stats(b->store, &st);
			log_warn("store: %s has %llu MiB for the store, below --store-min-free (%llu MiB): new messages get "
				 "store_full until space is freed",
				 cfg->data_dir, (unsigned long long)(st.disk_room_bytes >> 20),
				 (unsigned long long)(cfg->store_min_free >> 20));
		}
		if (fault_mask) {
			store_inject(b->store, fault_mask, fault_err, fault_count);
			if (k == 0)
				log_warn("test hook: store writes fail as asked (--inject-store-fault %s)", cfg->inject_store_fault);
		}
		struct addr ta = la;
		addr_set_port(&ta, addr_port(&la) + k);
		b->lfd = socket(ta.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1;
		if (b->lfd < 0 || setsockopt(b->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
		    bind(b->lfd, (struct sockaddr *)&ta.ss, ta.len) != 0 || listen(b->lfd, 1024) != 0) {
			log_error("listen on %s (node thread %u): %s", addr_str(&ta, a, sizeof a), k, strerror(errno));
			stores_close(all, threads);
			return 1;
		}
	}
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGPIPE);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	struct be_config cur = *cfg; /* the main thread's copy: each b->cfg is its node thread's from here on */
	struct peerauth_keys cur_keys = keys; /* ...and of b->keys */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	for (uint32_t k = 0; k < threads; k++) {
		if (pthread_create(&all[k].thread_id, NULL, be_main, &all[k]) != 0) {
			/* the threads started wait at the barrier: nothing to undo but exit */
			log_error("cannot start node thread %u", k);
			return 1;
		}
	}
	pthread_barrier_wait(&start);
	int failed = 0;
	for (uint32_t k = 0; k < threads; k++)
		failed |= __atomic_load_n(&all[k].start_failed, __ATOMIC_RELAXED);
	if (failed) {
		for (uint32_t k = 0; k < threads; k++)
			pthread_join(all[k].thread_id, NULL);
		stores_close(all, threads);
		return 1;
	}
	log_info("version %s, node %lld: %u node thread(s), gateways link to %s%s; store in %s; %zu backend(s) in the "
		 "cluster",
		 CHAT_VERSION, (long long)cfg->node, threads, addr_str(&la, a, sizeof a), threads > 1 ? " and the ports after it" : "",
		 cfg->data_dir, cluster.n);
	struct httpd *httpd = NULL;
	if (stats_on) {
		httpd = httpd_start(&sa, be_stats_http, &all[0], err, sizeof err);
		if (!httpd) {
			log_error("--stats-listen %s: %s (--stats-listen off runs without it)", cfg->stats_listen, err);
			ctrl_all(all, threads, BE_CTRL_STOP);
			for (uint32_t k = 0; k < threads; k++)
				pthread_join(all[k].thread_id, NULL);
			stores_close(all, threads);
			return 1;
		}
		log_info("stats on http://%s/metrics (also /stats, /healthz)", addr_str(&sa, a, sizeof a));
	}
	struct sdnotify sdn;
	if (sdn_open(&sdn, err, sizeof err) != 0)
		log_warn("systemd notifications off: %s", err);
	sdn_send(&sdn, "READY=1\nSTATUS=node %lld: gateways link to %s", (long long)cfg->node, addr_str(&la, a, sizeof a));
	struct sdn_watch wd = {0};
	struct log_rl stuck_rl = {0};
	int signals = 0;
	uint32_t joined = 0;
	while (joined < threads) {
		uint64_t loops[CLUSTER_MAX_THREADS], period, held;
		uint8_t done[CLUSTER_MAX_THREADS];
		for (uint32_t k = 0; k < threads; k++) {
			loops[k] = __atomic_load_n(&all[k].cnt.loops, __ATOMIC_RELAXED);
			done[k] = k < joined || __atomic_load_n(&all[k].finished, __ATOMIC_ACQUIRE);
		}
		unsigned stuck = sdn_watchdog(&sdn, &wd, loops, done, threads, clock_mono_ns() / 1000000, 300, &period);
		if (stuck && log_rl_allow(&stuck_rl, &held))
			log_error("node thread %u has not turned its loop for %llu ms (a commit stuck in fsync?): "
				  "WATCHDOG=1 withheld",
				  stuck - 1, (unsigned long long)period);
		struct timespec ts = {0, 100 * 1000 * 1000};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGHUP && !signals) {
			reload(all, threads, &cur, &cur_keys, argc, argv);
		} else if (sig == SIGHUP) {
			log_info("SIGHUP while stopping: ignored");
		} else if (sig == SIGUSR1) {
			log_info("SIGUSR1: nothing to reopen (logs go to stderr); SIGHUP reloads the configuration");
		} else if (sig == SIGINT || sig == SIGTERM) {
			signals++;
			log_info("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
			sdn_send(&sdn, "STOPPING=1");
			__atomic_store_n(&be_draining, 1, __ATOMIC_RELAXED);
			ctrl_all(all, threads, signals == 1 ? BE_CTRL_DRAIN : BE_CTRL_STOP);
		}
		/* the threads stop in any order; they are joined in theirs */
		while (joined < threads && pthread_tryjoin_np(all[joined].thread_id, NULL) == 0)
			joined++;
	}
	httpd_stop(httpd);
	stores_close(all, threads);
	sdn_close(&sdn);
	log_info("stopped cleanly");
	return 0;
}
