/* main.c: the gateway binary: options, start-up, signals, shutdown.
 *
 * Start-up: parse options, load the auth secret, size the fixed-file tables
 * from RLIMIT_NOFILE, start the workers (each creates its own ring and
 * SO_REUSEPORT listeners, then all meet at a barrier), print the capacity,
 * start the stats endpoint. Then the main thread only waits for signals:
 * the first SIGTERM/SIGINT tells every worker to drain (goaway, then close
 * after --drain-timeout), a second one stops at once. Exit status 0 after a
 * clean drain.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/gw.h"
#include "runtime/clock.h"
#include "runtime/httpd.h"
#include "runtime/log.h"
#include "runtime/sdnotify.h"
#include "runtime/sslmem.h"
#include "runtime/version.h"

static const char usage[] =
	"usage: gateway --auth-secret-file FILE [options]\n"
	"\n"
	"The edge server of the chat service: holds client connections (io_uring,\n"
	"one ring per thread, direct descriptors), authenticates them, delivers\n"
	"messages between users on this node. Protocol: proto/PROTOCOL.md.\n"
	"Capacity = threads x per-ring table (min(RLIMIT_NOFILE, 1048576) - 64);\n"
	"use --threads above the core count to hold more under a low RLIMIT_NOFILE.\n"
	"Signals: SIGTERM/SIGINT drain (goaway, close after --drain-timeout); twice: stop now.\n"
	"SIGHUP reloads the options marked so below and the auth secret files (connections stay);\n"
	"SIGUSR2: lame duck (stop accepting, GOAWAY to clients, serve those who stay; /healthz 503).\n"
	"a configuration that does not parse or load is refused and the running one stays.\n";

static void ctrl_all(struct gw *gw, struct io_uring *ctl, int cmd, unsigned from, void *ptr)
{
	if (from >= gw->nthreads)
		return;
	for (unsigned i = from; i < gw->nthreads; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ctl);
		if (!sqe) {
			io_uring_submit(ctl);
			sqe = io_uring_get_sqe(ctl);
		}
		io_uring_prep_msg_ring(sqe, gw->ring_fds[i], (unsigned)cmd, ud_ptr(UD_CTRL, ptr), 0);
		sqe->user_data = i;
	}
	io_uring_submit_and_wait(ctl, gw->nthreads - from);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(ctl, head, cqe)
	{
		if (cqe->res < 0 && cqe->res != -EBADF) /* EBADF: that thread has finished already */
			log_error("could not signal thread %llu: %s", (unsigned long long)cqe->user_data,
				  strerror(-cqe->res));
		n++;
	}
	io_uring_cq_advance(ctl, n);
}

#define GW_OPTS_MAX 56

/* The auth secrets of c: --auth-secret-file signs, --auth-secret-previous-file
 * is also accepted. Returns 0, or -1 with a reason in err. */
static int load_keys(const struct gw_config *c, struct token_keys *k, char *err, size_t errlen)
{
	k->n = 0;
	if (token_secret_load(&k->key[0], c->secret_file, err, errlen) != 0)
		return -1;
	k->n = 1;
	if (c->secret_prev_file && *c->secret_prev_file) {
		if (token_secret_load(&k->key[1], c->secret_prev_file, err, errlen) != 0)
			return -1;
		k->n = 2;
	}
	return 0;
}

static size_t gw_options(struct gw_config *cfg, struct opt *out);

/* The TLS listeners' context from c's certificate, key and ticket options
 * (the ticket secret: --tls-ticket-key-file's, else this process's random
 * one). NULL with a reason in err. */
static struct tls_ctx *make_tls(const struct gw_config *c, const uint8_t proc_secret[32], char *err, size_t errlen)
{
	uint8_t secret[32];
	memcpy(secret, proc_secret, 32);
	if (c->tls_ticket_key_file && tls_ticket_secret(c->tls_ticket_key_file, secret, err, errlen) != 0)
		return NULL;
	int64_t period = c->tls_ticket_period_ms / 1000;
	struct tls_server_opts o = {.cert_file = c->tls_cert,
				    .key_file = c->tls_key,
				    .ticket_period_s = c->tls_ticket_period_ms > 0 && period == 0 ? 1 : period,
				    .ticket_secret = secret};
	struct tls_ctx *t = tls_server_new(&o, err, errlen);
	memset(secret, 0, sizeof secret);
	return t;
}

/* SIGHUP: parse the command line and --config again; take the reloadable
 * options (OPT_RELOAD) and the auth secrets, say what changed and what needs
 * a restart; a configuration that does not parse or load is refused and the
 * running one stays. *cur is the configuration the workers run with; it is
 * replaced and handed to the threads from `from` on. */
static void reload(struct gw *gw, struct io_uring *ctl, unsigned from, int argc, char **argv, struct gw_live **cur)
{
	struct gw_config *nc = calloc(1, sizeof *nc);
	struct gw_live *nl = aligned_alloc(64, (sizeof *nl + 63) & ~(size_t)63);
	struct opt a[GW_OPTS_MAX], b[GW_OPTS_MAX], c[GW_OPTS_MAX];
	char err[512];
	if (nl)
		memset(nl, 0, sizeof *nl);
	if (!nc || !nl) {
		log_error("SIGHUP: out of memory; the running configuration stays");
		goto out;
	}
	size_t n = gw_options(&(*cur)->cfg, a);
	gw_options(nc, b);
	if (opts_parse(b, n, argc, argv, usage, err, sizeof err) != 0) {
		log_error("SIGHUP: configuration refused, the running one stays: %s", err);
		goto out;
	}
	int lvl = log_level_parse(nc->log_level);
	if (lvl < 0) {
		log_error("SIGHUP: configuration refused, the running one stays: --log-level '%s'", nc->log_level);
		goto out;
	}
	if (!nc->secret_file) {
		log_error("SIGHUP: configuration refused, the running one stays: no --auth-secret-file");
		goto out;
	}
	memset(nl, 0, sizeof *nl);
	if (load_keys(nc, &nl->keys, err, sizeof err) != 0) {
		log_error("SIGHUP: configuration refused, the running one stays: %s", err);
		goto out;
	}
	if (gw->cluster.n && peerauth_load(&nl->cluster, (*cur)->cfg.cluster_secret_file, err, sizeof err) != 0) {
		log_error("SIGHUP: configuration refused, the running one stays: --cluster-secret-file: %s", err);
		goto out;
	}
	char was[512], now[512];
	if ((*cur)->tls) {
		/* the files are read again whether or not their names changed: a
		 * renewed certificate lands under the same path */
		if (!(nl->tls = make_tls(nc, gw->ticket_secret, err, sizeof err))) {
			log_error("SIGHUP: configuration refused, the running one stays: TLS: %s", err);
			goto out;
		}
		tls_ctx_cert_info((*cur)->tls, was, sizeof was);
		tls_ctx_cert_info(nl->tls, now, sizeof now);
	}
	nl->cfg = (*cur)->cfg;
	gw_options(&nl->cfg, c);
	unsigned changed = opts_reload(a, b, c, n);
	if (nl->tls && strcmp(was, now) != 0) {
		log_info("SIGHUP: TLS certificate now %s", now);
		changed++;
	}
	if (gw->cluster.n && peerauth_reloaded(&(*cur)->cluster, &nl->cluster))
		changed++;
	const struct token_keys *ok = &(*cur)->keys;
	int keys_changed = ok->n != nl->keys.n;
	for (unsigned i = 0; !keys_changed && i < ok->n; i++)
		keys_changed = ok->key[i].id != nl->keys.key[i].id;
	if (keys_changed) {
		if (nl->keys.n > 1)
			log_info("SIGHUP: auth secrets: key %08x signs, key %08x (previous) is still accepted",
				 nl->keys.key[0].id, nl->keys.key[1].id);
		else
			log_info("SIGHUP: auth secret: key %08x; no other key is accepted", nl->keys.key[0].id);
		changed++;
	}
	if (!changed) {
		log_info("SIGHUP: nothing to change");
		goto out;
	}
	log_set_level((enum log_level)lvl);
	nl->refs = gw->nthreads - from;
	if (nl->refs == 0)
		goto out;
	ctrl_all(gw, ctl, CTRL_RELOAD, from, nl);
	*cur = nl; /* the workers free the one before once they all have this one */
	nl = NULL;
out:
	if (nc) {
		free(nc->listen.v);
		free(nc->listen_tls.v);
	}
	free(nc);
	gw_live_free(nl);
}

/* systemd: READY=1 once the listeners are up and every link too (or
 * GW_READY_WAIT_MS passed: a backend being down must not fail the start);
 * STATUS= every few seconds; WATCHDOG=1 only while every worker's loop is
 * turning (its loop counter moved since the last one), so a wedged thread
 * gets the service restarted after WatchdogSec. */
#define GW_READY_WAIT_MS 10000
struct notify_state {
	int ready;
	uint64_t ready_by_ms, next_status_ms;
	struct sdn_watch wd;
	struct log_rl stuck_rl;
};
_Static_assert(GW_MAX_THREADS <= SDN_MAX_LOOPS, "the watchdog watches every worker");

static void notify_tick(struct gw *gw, struct sdnotify *n, struct notify_state *s, unsigned joined, int stopping)
{
	if (n->fd < 0)
		return;
	uint64_t now = clock_mono_ns() / 1000000;
	uint64_t conns = 0, logged = 0, up = 0, want = (uint64_t)gw->nthreads * gw->cluster.nlinks;
	for (unsigned t = 0; t < gw->nthreads; t++) {
		conns += cnt_load(&gw->w[t].cnt, offsetof(struct gw_counters, conns));
		logged += cnt_load(&gw->w[t].cnt, offsetof(struct gw_counters, logged_in));
		up += cnt_load(&gw->w[t].cnt, offsetof(struct gw_counters, link.up));
	}
	if (!s->ready && (up >= want || now >= s->ready_by_ms)) {
		s->ready = 1;
		if (up < want)
			log_warn("ready with %llu of %llu backend links up (the rest keep trying)", (unsigned long long)up,
				 (unsigned long long)want);
		sdn_send(n, "READY=1\nSTATUS=%llu connections, %llu logged in, %llu/%llu backend links up",
			 (unsigned long long)conns, (unsigned long long)logged, (unsigned long long)up,
			 (unsigned long long)want);
		s->next_status_ms = now + 5000;
	} else if (s->ready && !stopping && now >= s->next_status_ms) {
		sdn_send(n, "STATUS=%llu connections, %llu logged in, %llu/%llu backend links up",
			 (unsigned long long)conns, (unsigned long long)logged, (unsigned long long)up,
			 (unsigned long long)want);
		s->next_status_ms = now + 5000;
	}
	uint64_t loops[GW_MAX_THREADS], period;
	uint8_t done[GW_MAX_THREADS];
	for (unsigned t = 0; t < gw->nthreads; t++) {
		loops[t] = cnt_load(&gw->w[t].cnt, offsetof(struct gw_counters, loops));
		done[t] = t < joined || __atomic_load_n(&gw->w[t].finished, __ATOMIC_ACQUIRE);
	}
	/* a loop turns at least once a tick */
	unsigned stuck = sdn_watchdog(n, &s->wd, loops, done, gw->nthreads, now, 2 * GW_TICK_MS, &period);
	uint64_t held;
	if (stuck && log_rl_allow(&s->stuck_rl, &held))
		log_error("thread %u has not turned its loop for %llu ms: WATCHDOG=1 withheld (systemd restarts the "
			  "service after WatchdogSec)",
			  stuck - 1, (unsigned long long)period);
}

/* The options, over the config struct cfg (main builds a second table over
 * a fresh struct to reload). */
static size_t gw_options(struct gw_config *cfg, struct opt *out)
{
	const struct opt opts[] = {
		{"listen", OPT_LIST, &cfg->listen, "127.0.0.1:5222", 0, 0,
		 "client listener IP:PORT (0.0.0.0:PORT for all addresses; one SO_REUSEPORT socket per thread); "
		 "IP:PORT,proxy behind a load balancer that starts each connection with a PROXY protocol v1 or v2 "
		 "header; \"off\": no plain listener (TLS only)", 0},
		{"listen-tls", OPT_LIST, &cfg->listen_tls, NULL, 0, 0,
		 "TLS 1.3 client listener IP:PORT (ALPN \"" TLS_ALPN "\"); needs --tls-cert and --tls-key", 0},
		{"tls-cert", OPT_STR, &cfg->tls_cert, NULL, 0, 0,
		 "PEM certificate of the TLS listeners, the chain after it; SIGHUP reads it again (renewals)", OPT_RELOAD},
		{"tls-key", OPT_STR, &cfg->tls_key, NULL, 0, 0, "PEM private key of --tls-cert", OPT_RELOAD},
		{"tls-ticket-period", OPT_MS, &cfg->tls_ticket_period_ms, "1h", 0, 7 * 86400000ll,
		 "session tickets: the ticket key changes this often, a ticket resumes during its period and the "
		 "next; 0: no tickets (every reconnect a full handshake)", OPT_RELOAD},
		{"tls-ticket-key-file", OPT_STR, &cfg->tls_ticket_key_file, NULL, 0, 0,
		 "file whose contents (>= 16 bytes) the ticket keys are derived from: gateways behind one name "
		 "share it so a ticket from one resumes on another; default: random per process", OPT_RELOAD},
		{"tls-max-handshakes", OPT_INT, &cfg->tls_max_handshakes, "1024", 1, 1000000,
		 "TLS handshakes in progress per thread; a connection starting one more is closed (counted)", OPT_RELOAD},
		{"tls-handshake-timeout", OPT_MS, &cfg->tls_handshake_timeout_ms, "5s", 100, 3600000,
		 "close a TLS connection whose handshake is not done by then (inside --login-timeout)", OPT_RELOAD},
		{"stats-listen", OPT_STR, &cfg->stats_listen, "127.0.0.1:9100", 0, 0,
		 "HTTP stats endpoint (/metrics, /stats, /healthz); \"off\" to disable", 0},
		{"auth-secret-file", OPT_STR, &cfg->secret_file, NULL, 0, 0,
		 "file holding the HMAC secret tokens are signed with (required; >= 16 bytes)", OPT_RELOAD},
		{"auth-secret-previous-file", OPT_STR, &cfg->secret_prev_file, NULL, 0, 0,
		 "the secret before the current one, still accepted while tokens signed with it are in use (rotation)",
		 OPT_RELOAD},
		{"threads", OPT_INT, &cfg->threads, "0", 0, GW_MAX_THREADS, "worker threads; 0 = online CPUs", 0},
		{"node", OPT_INT, &cfg->node, "1", 1, MSGID_MAX_NODE, "node id, unique among gateways and backends", 0},
		{"login-timeout", OPT_MS, &cfg->login_timeout_ms, "10s", 100, 3600000,
		 "close connections that have not logged in by then", OPT_RELOAD},
		{"keepalive", OPT_MS, &cfg->keepalive_ms, "300s", 1000, 86400000,
		 "ping a silent connection after this; close it after twice this", OPT_RELOAD},
		{"write-stall", OPT_MS, &cfg->write_stall_ms, "30s", 100, 3600000,
		 "close a connection whose send makes no progress for this long", OPT_RELOAD},
		{"drain-timeout", OPT_MS, &cfg->drain_ms, "10s", 0, 3600000,
		 "on SIGTERM: time between goaway and closing the rest", OPT_RELOAD},
		{"goaway-spread", OPT_MS, &cfg->goaway_spread_ms, "5s", 0, 3600000,
		 "reconnect delays in goaway frames are spread over 0..this", OPT_RELOAD},
		{"goaway-hint", OPT_STR, &cfg->goaway_hint, "", 0, 0, "host:port clients should reconnect to", OPT_RELOAD},
		{"max-queue", OPT_SIZE, &cfg->max_queue, "256k", 1024, 1 << 30,
		 "output bytes queued per connection before it is cut off as a slow consumer", OPT_RELOAD},
		{"rate-frames", OPT_INT, &cfg->rate_frames, "2000", 0, 100000000,
		 "frames per second per connection before it is cut off (0 = no limit)", OPT_RELOAD},
		{"rate-bytes", OPT_SIZE, &cfg->rate_bytes, "4m", 0, 1ll << 40,
		 "bytes per second per connection before it is cut off (0 = no limit)", OPT_RELOAD},
		{"max-body", OPT_INT, &cfg->max_body, "16384", 1, PROTO_MAX_BODY, "largest message body accepted", OPT_RELOAD},
		{"max-conns-per-source", OPT_INT, &cfg->src_max_conns, "0", 0, 100000000,
		 "connections one source address (an IPv4 address, an IPv6 /64; behind a ,proxy listener the "
		 "header's) may hold; more get ERROR source_limit (0 = no limit)",
		 OPT_RELOAD},
		{"accept-rate-per-source", OPT_INT, &cfg->src_accept_rate, "0", 0, 100000000,
		 "new connections a second from one source address; more get ERROR source_limit (0 = no limit)",
		 OPT_RELOAD},
		{"recv-buffer", OPT_SIZE, &cfg->recv_buf, "4k", 256, 1 << 20, "bytes per provided receive buffer", 0},
		{"recv-pool", OPT_SIZE, &cfg->recv_pool, "32m", 64 << 10, 1ll << 34,
		 "bytes of receive buffers for all threads together (idle connections hold none)", 0},
		{"backlog", OPT_INT, &cfg->backlog, "4096", 16, 1 << 20, "listen backlog (capped by net.core.somaxconn)", 0},
		{"sndbuf", OPT_SIZE, &cfg->sndbuf, "64k", 0, 1 << 30,
		 "SO_SNDBUF of client sockets (the kernel doubles it): the most a connection holds in the kernel; 0 = "
		 "kernel autotuning, up to net.ipv4.tcp_wmem's maximum per connection", 0},
		{"rcvbuf", OPT_SIZE, &cfg->rcvbuf, "0", 0, 1 << 30, "SO_RCVBUF of client sockets; 0 = kernel autotuning", 0},
		{"slots", OPT_INT, &cfg->slots, "0", 0, CONNREF_SLOT_MAX,
		 "direct descriptors per thread; 0 = min(RLIMIT_NOFILE, 1048576)", 0},
		{"log-level", OPT_STR, &cfg->log_level, "info", 0, 0, "error, warn, info or debug", OPT_RELOAD},
		{"cluster", OPT_STR, &cfg->cluster_file, NULL, 0, 0,
		 "cluster file listing the backends (\"backend ID IP:PORT [threads N]\") and gateways (\"gateway ID\", this one "
		 "included); without it messages for users not connected here get ERROR no_route", 0},
		{"cluster-secret-file", OPT_STR, &cfg->cluster_secret_file, NULL, 0, 0,
		 "secret(s) the dist links authenticate with, one per line (the first signs; a second is also "
		 "accepted, for rotation); required with --cluster; the path is fixed, SIGHUP reads the file again", 0},
		{"link-queue", OPT_SIZE, &cfg->link_queue, "16m", 64 << 10, 1ll << 34,
		 "bytes queued per backend link (per thread) before senders get ERROR try_again", 0},
		{"link-batch", OPT_SIZE, &cfg->link_batch, "256k", 0, DIST_MAX_FRAME - 64,
		 "largest batch on a backend link; bigger iterations are split (0: no batching, for comparison)", 0},
		{"link-sockbuf", OPT_SIZE, &cfg->link_sockbuf, "1m", 0, 1 << 30, "SO_SNDBUF/SO_RCVBUF of backend links", 0},
		{"store-timeout", OPT_MS, &cfg->store_timeout_ms, "10s", 100, 3600000,
		 "a message not acknowledged by its backend by then gets ERROR try_again", OPT_RELOAD},
		{"inject-stall", OPT_STR, &cfg->inject_stall, NULL, 0, 0,
		 "test hook, never in production: THREAD:DURATION makes that worker stop turning its loop "
		 "DURATION after start (to test the systemd watchdog)", 0},
	};
	_Static_assert(sizeof opts / sizeof opts[0] <= GW_OPTS_MAX, "GW_OPTS_MAX is too small");
	memcpy(out, opts, sizeof opts);
	return sizeof opts / sizeof opts[0];
}

int main(int argc, char **argv)
{
	static struct gw gw;
	struct gw_config *cfg = &gw.cfg;
	struct opt opts[GW_OPTS_MAX];
	char err[512];
	int ssl_mem = sslmem_init(err, sizeof err); /* before anything allocates in OpenSSL */
	size_t nopts = gw_options(cfg, opts);
	int r = opts_parse(opts, nopts, argc, argv, usage, err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "gateway: %s\n", err);
		return 2;
	}
	int lvl = log_level_parse(cfg->log_level);
	if (lvl < 0) {
		fprintf(stderr, "gateway: --log-level: '%s' is not error, warn, info or debug\n", cfg->log_level);
		return 2;
	}
	log_init("gateway", (enum log_level)lvl);
	if (ssl_mem != 0)
		log_warn("%s: TLS handshakes' memory may stay resident after them", err);
	if (!cfg->secret_file) {
		fprintf(stderr, "gateway: --auth-secret-file is required (see --help; tools/mint-token --new-secret FILE makes one)\n");
		return 2;
	}
	struct gw_live *live = aligned_alloc(64, (sizeof *live + 63) & ~(size_t)63);
	if (!live)
		return 1;
	memset(live, 0, sizeof *live);
	live->cfg = *cfg;
	gw.live = live; /* reachable from here until the workers take it */
	if (load_keys(cfg, &live->keys, err, sizeof err) != 0) {
		log_error("%s", err);
		return 2; /* a configuration error: restarting will not help */
	}
	/* the listeners: --listen's (plain; "off" for none), then --listen-tls's */
	size_t nall = cfg->listen.n + cfg->listen_tls.n;
	gw.listen = calloc(nall ? nall : 1, sizeof *gw.listen);
	gw.listen_proxy = calloc(nall ? nall : 1, 1);
	gw.listen_tls = calloc(nall ? nall : 1, 1);
	if (!gw.listen || !gw.listen_proxy || !gw.listen_tls)
		return 1;
	for (size_t i = 0; i < nall; i++) {
		int tls = i >= cfg->listen.n;
		const char *v = tls ? cfg->listen_tls.v[i - cfg->listen.n] : cfg->listen.v[i];
		if (!tls && strcmp(v, "off") == 0)
			continue;
		/* IP:PORT, or IP:PORT,proxy: behind a load balancer speaking PROXY */
		char a1[128];
		snprintf(a1, sizeof a1, "%s", v);
		char *comma = strchr(a1, ',');
		if (comma && tls) {
			fprintf(stderr, "gateway: --listen-tls %s: a TLS listener takes no options (no PROXY header before "
					"TLS yet)\n", v);
			return 2;
		}
		if (comma) {
			if (strcmp(comma, ",proxy") != 0) {
				fprintf(stderr, "gateway: --listen %s: after the address only \",proxy\" may follow\n", v);
				return 2;
			}
			*comma = 0;
			gw.listen_proxy[gw.nlisten] = 1;
		}
		gw.listen_tls[gw.nlisten] = (uint8_t)tls;
		if (addr_parse(a1, &gw.listen[gw.nlisten], err, sizeof err) != 0) {
			fprintf(stderr, "gateway: --listen%s: %s\n", tls ? "-tls" : "", err);
			return 2;
		}
		gw.nlisten++;
	}
	if (gw.nlisten == 0) {
		fprintf(stderr, "gateway: no listener: --listen off needs a --listen-tls\n");
		return 2;
	}
	if (cfg->listen_tls.n) {
		if (!cfg->tls_cert || !cfg->tls_key) {
			fprintf(stderr, "gateway: --listen-tls needs --tls-cert and --tls-key (tools/tls-selfsigned DIR makes "
					"a pair for local runs)\n");
			return 2;
		}
		if (tls_ticket_secret(NULL, gw.ticket_secret, err, sizeof err) != 0 ||
		    !(live->tls = make_tls(cfg, gw.ticket_secret, err, sizeof err))) {
			fprintf(stderr, "gateway: TLS: %s\n", err);
			return 2;
		}
		char info[512];
		log_info("TLS certificate %s", tls_ctx_cert_info(live->tls, info, sizeof info));
	}
	if (cfg->cluster_file && cluster_load(&gw.cluster, cfg->cluster_file, err, sizeof err) != 0) {
		fprintf(stderr, "gateway: --cluster: %s\n", err);
		return 2;
	}
	if (cluster_find(&gw.cluster, (uint32_t)cfg->node) >= 0) {
		fprintf(stderr, "gateway: --node %lld is a backend's id in the cluster file; node ids must be unique\n",
			(long long)cfg->node);
		return 2;
	}
	if (cfg->cluster_file && !cluster_is_gateway(&gw.cluster, (uint32_t)cfg->node)) {
		fprintf(stderr,
			"gateway: --node %lld is not listed in %s; add a \"gateway %lld\" line (backends refuse "
			"unlisted gateways)\n",
			(long long)cfg->node, cfg->cluster_file, (long long)cfg->node);
		return 2;
	}
	if (cfg->cluster_file && !cfg->cluster_secret_file) {
		fprintf(stderr, "gateway: --cluster needs --cluster-secret-file (the dist links are authenticated; "
				"tools/mint-token --new-secret FILE makes one)\n");
		return 2;
	}
	if (cfg->cluster_file && peerauth_load(&live->cluster, cfg->cluster_secret_file, err, sizeof err) != 0) {
		fprintf(stderr, "gateway: --cluster-secret-file: %s\n", err);
		return 2;
	}
	/* SO_REUSEPORT would let this gateway share a port with another one
	 * already listening there, silently splitting its traffic: refuse. A bind
	 * without SO_REUSEPORT fails on a port with a listener, and only then. */
	for (size_t i = 0; i < gw.nlisten; i++) {
		int fd = socket(gw.listen[i].ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, (const struct sockaddr *)&gw.listen[i].ss, gw.listen[i].len) != 0 && errno == EADDRINUSE) {
			char a[64];
			fprintf(stderr, "gateway: %s is in use by another process (another gateway?)\n",
				addr_str(&gw.listen[i], a, sizeof a));
			close(fd);
			return 1;
		}
		close(fd);
	}
	gw.stall_thread = -1;
	if (cfg->inject_stall) {
		unsigned t;
		char dur[32];
		if (sscanf(cfg->inject_stall, "%u:%31s", &t, dur) != 2 || opts_parse_ms(dur, &gw.stall_after_ms) != 0) {
			fprintf(stderr, "gateway: --inject-stall: want THREAD:DURATION, e.g. 1:5s\n");
			return 2;
		}
		gw.stall_thread = (int)t;
		log_warn("test hook: thread %u will stop turning its loop after %lld ms (--inject-stall)", t,
			 (long long)gw.stall_after_ms);
	}
	struct sdnotify sdn;
	if (sdn_open(&sdn, err, sizeof err) != 0)
		log_warn("systemd notifications off: %s", err);
	struct addr stats_addr;
	int stats_on = strcmp(cfg->stats_listen, "off") != 0;
	if (stats_on && addr_parse(cfg->stats_listen, &stats_addr, err, sizeof err) != 0) {
		fprintf(stderr, "gateway: --stats-listen: %s\n", err);
		return 2;
	}

	/* the fixed-file table of each ring is capped by RLIMIT_NOFILE */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	uint64_t cap = rl.rlim_cur > CONNREF_SLOT_MAX ? CONNREF_SLOT_MAX : rl.rlim_cur;
	if (cfg->slots) {
		if ((uint64_t)cfg->slots > cap) {
			log_error("--slots %lld is over RLIMIT_NOFILE (%llu): a ring's table cannot be larger",
				  (long long)cfg->slots, (unsigned long long)cap);
			return 2;
		}
		cap = (uint64_t)cfg->slots;
	}
	if (cap <= GW_SLOT_RESERVE + 16) {
		log_error("RLIMIT_NOFILE (%llu) leaves no room for connections", (unsigned long long)rl.rlim_cur);
		return 1;
	}
	gw.slots = (uint32_t)cap;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	gw.nthreads = cfg->threads ? (unsigned)cfg->threads : (unsigned)(cpus > 0 ? cpus : 1);
	if (gw.nthreads > GW_MAX_THREADS)
		gw.nthreads = GW_MAX_THREADS;
	live->refs = gw.nthreads;

	gw.w = calloc(gw.nthreads, sizeof *gw.w);
	gw.ring_fds = calloc(gw.nthreads, sizeof *gw.ring_fds);
	if (!gw.w || !gw.ring_fds)
		return 1;
	gw.started_wall_ms = clock_wall_ms();

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGPIPE);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* workers inherit it; main waits for them */

	if (srclim_init(&gw.srclim, (uint64_t)gw.nthreads * gw.slots) != 0) {
		log_error("per-source table: out of memory");
		return 1;
	}
	pthread_barrier_init(&gw.start, NULL, gw.nthreads + 1);
	for (unsigned i = 0; i < gw.nthreads; i++) {
		gw.w[i].gw = &gw;
		gw.w[i].id = i;
		if (pthread_create(&gw.w[i].thread, NULL, worker_main, &gw.w[i]) != 0) {
			log_error("cannot start thread %u", i);
			return 1;
		}
	}
	pthread_barrier_wait(&gw.start);
	if (gw.start_failed) {
		for (unsigned i = 0; i < gw.nthreads; i++)
			pthread_join(gw.w[i].thread, NULL);
		log_error("start-up failed (see above)");
		return 1;
	}
	char a[64];
	log_info("version %s, node %lld: %u threads x %u connections = %llu capacity (RLIMIT_NOFILE %llu per ring table)",
		 CHAT_VERSION, (long long)cfg->node, gw.nthreads, gw.slots - GW_SLOT_RESERVE,
		 (unsigned long long)gw.nthreads * (gw.slots - GW_SLOT_RESERVE), (unsigned long long)rl.rlim_cur);
	for (size_t i = 0; i < gw.nlisten; i++)
		log_info("listening on %s%s", addr_str(&gw.listen[i], a, sizeof a),
			 gw.listen_tls[i]     ? " (TLS 1.3, ALPN " TLS_ALPN ")"
			 : gw.listen_proxy[i] ? " (PROXY protocol: every connection starts with its header)"
					      : "");
	if (gw.cluster.n)
		log_info("%zu backend(s) with %zu thread(s) in all from %s; every thread links to each", gw.cluster.n,
			 gw.cluster.nlinks, cfg->cluster_file);
	else
		log_info("no --cluster: local delivery only (no_route for users not connected here)");
	struct io_uring ctl;
	if (io_uring_queue_init(64, &ctl, 0) != 0) {
		log_error("cannot create the control ring");
		return 1;
	}
	struct httpd *httpd = NULL;
	if (stats_on) {
		httpd = httpd_start(&stats_addr, gw_stats_http, &gw, err, sizeof err);
		if (!httpd) {
			/* a node nobody can scrape or health-check is not started:
			 * --stats-listen off is the way to run without */
			log_error("--stats-listen %s: %s (--stats-listen off runs without it)", cfg->stats_listen, err);
			ctrl_all(&gw, &ctl, CTRL_STOP, 0, NULL);
			for (unsigned i = 0; i < gw.nthreads; i++)
				pthread_join(gw.w[i].thread, NULL);
			io_uring_queue_exit(&ctl);
			return 1;
		}
		log_info("stats on http://%s/metrics (also /stats, /healthz)", addr_str(&stats_addr, a, sizeof a));
	}
	int signals = 0;
	unsigned joined = 0;
	struct notify_state ns = {.ready_by_ms = clock_mono_ns() / 1000000 + GW_READY_WAIT_MS};
	uint64_t tick_ns = 200ull * 1000 * 1000;
	if (sdn.watchdog_us && sdn.watchdog_us * 1000 / 4 < tick_ns)
		tick_ns = sdn.watchdog_us * 1000 / 4 > 50000000ull ? sdn.watchdog_us * 1000 / 4 : 50000000ull;
	while (joined < gw.nthreads) {
		notify_tick(&gw, &sdn, &ns, joined, signals);
		struct timespec ts = {(time_t)(tick_ns / 1000000000ull), (long)(tick_ns % 1000000000ull)};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGHUP) {
			if (signals)
				log_info("SIGHUP while draining: ignored");
			else
				reload(&gw, &ctl, joined, argc, argv, &live);
		} else if (sig == SIGUSR2) {
			if (signals || __atomic_load_n(&gw_draining, __ATOMIC_RELAXED) != GW_SERVING) {
				log_info("SIGUSR2: already %s", signals ? "draining" : "a lame duck");
			} else {
				log_info("SIGUSR2: lame duck: not accepting, clients told to go away, those who stay served; "
					 "SIGTERM to drain and exit");
				__atomic_store_n(&gw_draining, GW_LAMEDUCK, __ATOMIC_RELAXED);
				sdn_send(&sdn, "STATUS=lame duck: not accepting, clients told to go away");
				ctrl_all(&gw, &ctl, CTRL_LAMEDUCK, joined, NULL);
			}
		} else if (sig == SIGUSR1) {
			log_info("SIGUSR1: nothing to reopen (logs go to stderr); SIGHUP reloads the configuration");
		} else if (sig == SIGINT || sig == SIGTERM) {
			signals++;
			if (signals == 1) {
				log_info("%s: draining (again to stop at once)", sig == SIGINT ? "SIGINT" : "SIGTERM");
				__atomic_store_n(&gw_draining, GW_DRAINING, __ATOMIC_RELAXED);
				sdn_send(&sdn, "STOPPING=1\nSTATUS=draining: goaway sent, closing the rest in %lld ms",
					 (long long)cfg->drain_ms);
				ctrl_all(&gw, &ctl, CTRL_DRAIN, joined, NULL);
			} else if (signals == 2) {
				log_info("stopping now");
				ctrl_all(&gw, &ctl, CTRL_STOP, joined, NULL);
			}
		}
		/* reap threads that finished (all of them finish only after a drain) */
		while (joined < gw.nthreads && pthread_tryjoin_np(gw.w[joined].thread, NULL) == 0)
			joined++;
	}
	httpd_stop(httpd);
	io_uring_queue_exit(&ctl);
	uint64_t accepted = 0;
	for (unsigned i = 0; i < gw.nthreads; i++)
		accepted += gw.w[i].cnt.accepted;
	log_info("stopped cleanly (%llu connections accepted in %llu s)", (unsigned long long)accepted,
		 (unsigned long long)((clock_wall_ms() - gw.started_wall_ms) / 1000));
	free(gw.w);
	free(gw.ring_fds);
	free(gw.listen);
	free(gw.listen_proxy);
	free(gw.listen_tls);
	free(cfg->listen.v);
	free(cfg->listen_tls.v);
	gw_live_free(live); /* every worker has finished with it */
	sdn_close(&sdn);
	return 0;
}
