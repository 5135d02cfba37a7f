/* main.c: the loadgen binary: options, phases, the live line, the reports.
 *
 * Phases (main thread drives them; workers read lg->phase each iteration):
 *   ramp   connect and log in every connection at --connect-rate, until all
 *          are logged in or --ramp-timeout passes;
 *   run    the scenario for --duration (hold, chat, churn, storm);
 *   drain  stop sending, wait up to --drain for deliveries in flight;
 *   stop   workers exit; figures are merged and reported.
 * A live line goes to stderr every second; the final report to stdout, and
 * optionally JSON (--report), CSV (--csv) and an SVG plot (--svg).
 * Exit status: 0, or 1 when messages were lost, the error rate passed
 * --max-error-rate, or the connection target was not reached; 3 when the
 * run was fine but --report, --csv or --svg could not be written.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "loadgen/lg.h"
#include "runtime/sslmem.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/metrics.h"

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
	(void)sig;
	interrupted++;
}

struct totals {
#define TOTAL_FIELD(f) uint64_t f;
	LG_COUNTERS(TOTAL_FIELD)
#undef TOTAL_FIELD
	uint64_t cerr[4], errors[PROTO_E_CODES], err_total, p50_ns, p99_ns;
};

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void sum(const struct lg *lg, struct totals *s)
{
	memset(s, 0, sizeof *s);
	uint64_t wsum50 = 0, wn = 0;
	for (unsigned i = 0; i < lg->nthreads; i++) {
		const struct lg_counters *c = &lg->t[i].cnt;
#define S(f) s->f += ld(&c->f);
		LG_COUNTERS(S)
#undef S
		for (int k = 0; k < 4; k++)
			s->cerr[k] += ld(&c->connect_errors[k]);
		for (int k = 0; k < PROTO_E_CODES; k++) {
			s->errors[k] += ld(&c->errors[k]);
			s->err_total += ld(&c->errors[k]);
		}
		uint64_t n = ld(&c->lat_count);
		wsum50 += ld(&c->p50_ns) * n; /* p50: weighted mean over threads (approximate, live line only) */
		if (ld(&c->p99_ns) > s->p99_ns)
			s->p99_ns = ld(&c->p99_ns); /* p99: the worst thread's of the last second */
		wn += n;
	}
	s->p50_ns = wn ? wsum50 / wn : 0;
}

struct sample {
	double t;
	uint64_t open, logged_in, connects, sent, delivered, errors;
	/* doubles, so the plot code can take any of them by offset */
	double open_d, logged_in_d, connect_rate, send_rate, deliver_rate, p50_us, p99_us, watch_cpu, watch_rss_mb;
};

struct watch {
	int pid;
	double cpu_s;  /* utime + stime */
	double rss_kb;
};

static int watch_read(int pid, struct watch *w)
{
	char path[64], buf[2048];
	w->pid = pid;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	w->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	f = fopen(path, "r");
	w->rss_kb = 0;
	if (f) {
		char line[256];
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "VmRSS: %lf", &w->rss_kb) == 1)
				break;
		fclose(f);
	}
	return 0;
}


static const char *const scen_names[] = {"idle", "chat", "churn", "storm", "group"};

/* A tick step near range / target: 1, 2 or 5 times a power of ten. */
static double nice_step(double range, int target)
{
	double raw = range > 0 ? range / target : 1, mag = pow(10, floor(log10(raw))), r = raw / mag;
	return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/* 1500 -> "1.5k", 2000000 -> "2M". */
static const char *short_num(double v, char *b, size_t n)
{
	if (v >= 1e6)
		snprintf(b, n, "%.4gM", v / 1e6);
	else if (v >= 1e3)
		snprintf(b, n, "%.4gk", v / 1e3);
	else
		snprintf(b, n, "%.4g", v);
	return b;
}

static double sample_at(const struct sample *s, size_t off)
{
	return *(const double *)((const char *)s + off);
}

/* One panel: two series over time, gridlines and labelled ticks on both
 * axes, a legend; logy: a logarithmic y axis in decades (latency, where p50
 * and p99 differ by orders of magnitude). The first series is drawn dashed
 * over the second, so equal lines (sent and delivered when all keep up)
 * both show. */
static void svg_panel(FILE *f, const struct sample *s, size_t n, int y0, const char *title, const char *unit,
		      size_t off1, const char *l1, size_t off2, const char *l2, int logy)
{
	const int x0 = 90, w = 680, h = 150;
	double mx = 0, mn = INFINITY, tmax = n ? s[n - 1].t : 1;
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 2; k++) {
			double v = sample_at(&s[i], k ? off2 : off1);
			if (v > mx)
				mx = v;
			if (v > 0 && v < mn)
				mn = v;
		}
	if (tmax <= 0)
		tmax = 1;
	double lo = 0, hi, step;
	if (logy) {
		lo = pow(10, floor(log10(isfinite(mn) ? mn : 1)));
		hi = pow(10, ceil(log10(mx > lo ? mx : lo * 10)));
		if (hi <= lo)
			hi = lo * 10;
		step = 10; /* a factor: one gridline per decade */
	} else {
		step = nice_step(mx > 0 ? mx : 1, 4);
		hi = ceil((mx > 0 ? mx : 1) / step) * step;
	}
#define YPOS(v) (logy ? y0 + h - (log10((v) > lo ? (v) : lo) - log10(lo)) / (log10(hi) - log10(lo)) * h \
		      : y0 + h - (v) / hi * h)
	char b[48];
	fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">%s%s</text>\n", x0, y0 - 10, title,
		logy ? " (log scale)" : "");
	for (double v = logy ? lo : 0; v <= hi * 1.0001; v = logy ? v * step : v + step) {
		double y = YPOS(v);
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", x0, y, x0 + w, y);
		if (strcmp(unit, "us") == 0) /* a time: in its own unit */
			snprintf(b, sizeof b, "%.4g %s", v >= 1e6 ? v / 1e6 : v >= 1e3 ? v / 1e3 : v,
				 v >= 1e6 ? "s" : v >= 1e3 ? "ms" : "us");
		else {
			char num[16];
			snprintf(b, sizeof b, "%s%s%s", short_num(v, num, sizeof num), *unit ? " " : "", unit);
		}
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%s</text>\n", x0 - 6, y + 4, b);
	}
	double ts = nice_step(tmax, 8);
	for (double t = 0; t <= tmax * 1.0001; t += ts) {
		double x = x0 + t / tmax * w;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>\n", x, y0, x, y0 + h);
		fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.4g</text>\n", x, y0 + h + 14, t);
	}
	fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">seconds</text>\n", x0 + w, y0 + h + 28);
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#666\"/>\n", x0, y0, w, h);
	static const char *const colors[2] = {"#1f77b4", "#d62728"};
	const size_t offs[2] = {off1, off2};
	const char *labels[2] = {l1, l2};
	for (int k = 1; k >= 0; k--) { /* the first series last: on top */
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"", colors[k], k ? "2.5" : "1.5",
			k ? "" : " stroke-dasharray=\"6,3\"");
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%.1f,%.1f ", x0 + s[i].t / tmax * w, YPOS(sample_at(&s[i], offs[k])));
		fprintf(f, "\"/>\n");
	}
#undef YPOS
	/* legend, inside the panel at its top right */
	int lx = x0 + w - 150, ly = y0 + 8;
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"142\" height=\"40\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n",
		lx, ly);
	for (int k = 0; k < 2; k++) {
		int yy = ly + 14 + k * 16;
		fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"%s\"%s/>\n", lx + 8, yy - 4,
			lx + 36, yy - 4, colors[k], k ? "2.5" : "1.5", k ? "" : " stroke-dasharray=\"6,3\"");
		fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">%s</text>\n", lx + 44, yy, labels[k]);
	}
}

/* Returns 0, or -1 (logged) when the file could not be written. */
static int write_svg(const char *path, const struct sample *s, size_t n, const char *title)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		log_error("--svg %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"680\" font-family=\"sans-serif\">\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"70\" y=\"20\" font-size=\"15\">%s</text>\n",
		title);
	svg_panel(f, s, n, 60, "connections", "", offsetof(struct sample, open_d), "open",
		  offsetof(struct sample, logged_in_d), "logged in", 0);
	svg_panel(f, s, n, 270, "messages per second", "/s", offsetof(struct sample, send_rate), "sent",
		  offsetof(struct sample, deliver_rate), "delivered", 0);
	svg_panel(f, s, n, 480, "delivery latency (worst thread, per second)", "us", offsetof(struct sample, p50_us), "p50",
		  offsetof(struct sample, p99_us), "p99", 1);
	fprintf(f, "</svg>\n");
	if (ferror(f) | fclose(f)) {
		log_error("--svg %s: write failed", path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct lg lg;
	struct lg_config *cfg = &lg.cfg;
	const char *sources = NULL;
	const struct opt opts[] = {
		{"targets", OPT_LIST, &cfg->targets, "127.0.0.1:5222", 0, 0,
		 "gateway address IP:PORT; repeat (or several IP aliases) to spread connections", 0},
		{"sources", OPT_STR, &sources, NULL, 0, 0,
		 "source IPv4 addresses: A.B.C.D-E.F.G.H or A.B.C.D/NN (bound with IP_BIND_ADDRESS_NO_PORT)", 0},
		{"secret-file", OPT_STR, &cfg->secret_file, NULL, 0, 0, "the gateway's --auth-secret-file (tokens are minted from it)", 0},
		{"scenario", OPT_STR, &cfg->scenario_name, "idle", 0, 0, "idle (hold), chat (1:1), churn, storm, group (needs gateways with backends)", 0},
		{"group-size", OPT_INT, &cfg->group_size, "10", 2, PROTO_MAX_GROUP_OP + 1,
		 "group: users per group (the first creates it and sends, the rest receive)", 0},
		{"connections", OPT_INT, &cfg->connections, "1000", 1, 100000000, "clients to simulate", 0},
		{"threads", OPT_INT, &cfg->threads, "0", 0, LG_MAX_THREADS,
		 "threads (rings); 0 = max(CPUs, enough rings for the connections under RLIMIT_NOFILE)", 0},
		{"connect-rate", OPT_INT, &cfg->connect_rate, "20000", 0, 100000000, "new connections per second (0 = unpaced)", 0},
		{"inflight", OPT_INT, &cfg->inflight, "512", 1, 1000000, "connects in flight per thread", 0},
		{"ramp-timeout", OPT_MS, &cfg->ramp_timeout_ms, "120s", 100, 86400000, "give up ramping after this", 0},
		{"duration", OPT_MS, &cfg->duration_ms, "10s", 0, 86400000 * 7ll, "length of the run phase", 0},
		{"drain", OPT_MS, &cfg->drain_ms, "3s", 0, 3600000, "after the run: wait this long for deliveries in flight", 0},
		{"rate", OPT_DOUBLE, &cfg->rate, "1", 0, 1000000, "chat: messages per second per user; group: per group (open loop)", 0},
		{"size", OPT_INT, &cfg->size, "32", LG_BODY_MIN, PROTO_MAX_BODY, "chat: message body bytes", 0},
		{"receipts", OPT_FLAG, &cfg->receipts, NULL, 0, 0, "send a delivered receipt for every message", 0},
		{"ping-interval", OPT_MS, &cfg->ping_ms, "60s", 0, 86400000, "keepalive ping per connection (0 = never)", 0},
		{"churn-rate", OPT_INT, &cfg->churn_rate, "100", 0, 10000000, "churn: reconnects per second", 0},
		{"storm-at", OPT_MS, &cfg->storm_at_ms, "2s", 0, 86400000, "storm: when (into the run) everyone reconnects", 0},
		{"user-base", OPT_INT, &cfg->user_base, "1", 1, 1ll << 60, "user id of connection 0", 0},
		{"token-ttl", OPT_MS, &cfg->ttl_ms, "24h", 1000, 86400000ll * 365, "validity of minted tokens", 0},
		{"recv-buffer", OPT_SIZE, &cfg->recv_buf, "4k", 256, 1 << 20, "bytes per provided receive buffer", 0},
		{"recv-pool", OPT_SIZE, &cfg->recv_pool, "32m", 64 << 10, 1ll << 34, "receive buffer bytes, all threads", 0},
		{"rcvbuf", OPT_SIZE, &cfg->rcvbuf, "0", 0, 1 << 30, "SO_RCVBUF of client sockets (0 = autotuning)", 0},
		{"max-queue", OPT_SIZE, &cfg->max_queue, "1m", 4096, 1 << 30, "output bytes queued per connection", 0},
		{"max-error-rate", OPT_DOUBLE, &cfg->max_error_rate, "0.001", 0, 1, "exit 1 above this error fraction", 0},
		{"inject-drop", OPT_INT, &cfg->inject_drop, "0", 0, 1ll << 40, "test hook: ignore every Nth delivery (must be reported as loss)", 0},
		{"inject-dup", OPT_INT, &cfg->inject_dup, "0", 0, 1ll << 40, "test hook: count every Nth delivery twice (must be reported as duplicate)", 0},
		{"watch-pid", OPT_INT, &cfg->watch_pid, "0", 0, 1 << 30, "also report this process's CPU and RSS (the gateway)", 0},
		{"report", OPT_STR, &cfg->report, NULL, 0, 0, "write every figure and the configuration as JSON here", 0},
		{"csv", OPT_STR, &cfg->csv, NULL, 0, 0, "write the per-second time series as CSV here", 0},
		{"svg", OPT_STR, &cfg->svg, NULL, 0, 0, "plot connections, message rate and latency over time (SVG)", 0},
		{"quiet", OPT_FLAG, &cfg->quiet, NULL, 0, 0, "no live line", 0},
		{"tls", OPT_FLAG, &cfg->tls, NULL, 0, 0,
		 "connect with TLS 1.3 (ALPN chat) to the gateways' --listen-tls ports; needs --tls-ca or --tls-insecure", 0},
		{"tls-ca", OPT_STR, &cfg->tls_ca, NULL, 0, 0, "--tls: verify the gateways' certificate against this PEM file", 0},
		{"tls-name", OPT_STR, &cfg->tls_name, "localhost", 0, 0, "--tls: the server name sent (SNI) and verified", 0},
		{"tls-insecure", OPT_FLAG, &cfg->tls_insecure, NULL, 0, 0,
		 "--tls: do not verify the certificate (measurements only, never against a real service)", 0},
		{"tls-resume", OPT_FLAG, &cfg->tls_resume, NULL, 0, 0,
		 "--tls: resume with session tickets (each thread keeps the latest ticket and every handshake it starts "
		 "offers it), so reconnects cost resumed handshakes",
		 0},
	};
	char err[512];
	int r = opts_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
			   "usage: loadgen --secret-file FILE [--targets IP:PORT ...] [--scenario idle|chat|churn|storm] [options]\n"
			   "\nSimulates chat clients against gateways and reports what it saw: connections,\n"
			   "message rates, loss/duplicates/reordering, delivery latency percentiles.",
			   err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 2;
	}
	log_init("loadgen", LOG_INFO);
	int sc = -1;
	for (int i = 0; i < 5; i++)
		if (strcmp(cfg->scenario_name, scen_names[i]) == 0)
			sc = i;
	if (sc < 0) {
		fprintf(stderr, "loadgen: --scenario: '%s' is not idle, chat, churn, storm or group\n", cfg->scenario_name);
		return 2;
	}
	cfg->scenario = (enum lg_scenario)sc;
	if (cfg->scenario == SC_IDLE)
		cfg->rate = 0;
	if (!cfg->secret_file) {
		fprintf(stderr, "loadgen: --secret-file is required (the gateway's --auth-secret-file)\n");
		return 2;
	}
	if (token_secret_load(&lg.secret, cfg->secret_file, err, sizeof err) != 0) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 2;
	}
	if (cfg->tls) {
		char e2[256];
		if (sslmem_init(e2, sizeof e2) != 0)
			log_warn("%s: TLS handshakes' memory may stay resident after them", e2);
		if (!cfg->tls_ca && !cfg->tls_insecure) {
			fprintf(stderr, "loadgen: --tls needs --tls-ca FILE (or --tls-insecure to skip verification)\n");
			return 2;
		}
		struct tls_client_opts to = {.ca_file = cfg->tls_insecure ? NULL : cfg->tls_ca,
					     .server_name = cfg->tls_name,
					     .resume = cfg->tls_resume};
		if (!(lg.tls = tls_client_new(&to, err, sizeof err))) {
			fprintf(stderr, "loadgen: --tls: %s\n", err);
			return 2;
		}
	} else if (cfg->tls_ca || cfg->tls_insecure || cfg->tls_resume) {
		fprintf(stderr, "loadgen: --tls-ca, --tls-insecure and --tls-resume go with --tls\n");
		return 2;
	}
	randombytes_buf(&lg.cmid_base, sizeof lg.cmid_base);
	lg.cmid_base = (lg.cmid_base & 0xffffffffull) << 20; /* room for 2^20 messages per user per run before wrap matters */
	lg.ntargets = cfg->targets.n;
	lg.targets = calloc(lg.ntargets, sizeof *lg.targets);
	for (size_t i = 0; i < lg.ntargets; i++)
		if (addr_parse(cfg->targets.v[i], &lg.targets[i], err, sizeof err) != 0) {
			fprintf(stderr, "loadgen: --targets: %s\n", err);
			return 2;
		}
	if (sources && addr_parse_v4_range(sources, &lg.src_first, &lg.src_count, err, sizeof err) != 0) {
		fprintf(stderr, "loadgen: --sources: %s\n", err);
		return 2;
	}

	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	uint64_t per_ring = (rl.rlim_cur > CONNREF_SLOT_MAX ? CONNREF_SLOT_MAX : rl.rlim_cur) - 64;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t need = ((uint64_t)cfg->connections + per_ring - 1) / per_ring;
	lg.nthreads = cfg->threads ? (unsigned)cfg->threads : (unsigned)(need > (uint64_t)cpus ? need : (uint64_t)cpus);
	if (lg.nthreads > (uint64_t)cfg->connections)
		lg.nthreads = (unsigned)cfg->connections;
	lg.per = (uint32_t)(((uint64_t)cfg->connections + lg.nthreads - 1) / lg.nthreads);
	if (lg.per > per_ring) {
		fprintf(stderr, "loadgen: %u connections per thread exceed a ring's %llu slots (RLIMIT_NOFILE); use --threads >= %llu\n",
			lg.per, (unsigned long long)per_ring, (unsigned long long)need);
		return 2;
	}
	uint64_t pairs = lg.ntargets * (lg.src_count ? lg.src_count : 1);
	if ((uint64_t)cfg->connections > pairs * (lg.src_count ? LG_PORTS : 28000))
		log_warn("%lld connections over %llu (source, target) pairs: about %llu each, more ports than a pair has "
			 "(%s); add --sources or --targets",
			 (long long)cfg->connections, (unsigned long long)pairs, (unsigned long long)(cfg->connections / pairs),
			 lg.src_count ? "64511 explicit source ports" : "~28k in the default ip_local_port_range");

	lg.t = calloc(lg.nthreads, sizeof *lg.t);
	if (!lg.t)
		return 1;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	lg.start_ns = clock_mono_ns();
	pthread_barrier_init(&lg.start, NULL, lg.nthreads + 1);
	for (unsigned i = 0; i < lg.nthreads; i++) {
		struct lthread *t = &lg.t[i];
		t->lg = &lg;
		t->id = i;
		t->first = i * lg.per;
		uint64_t end = (uint64_t)t->first + lg.per;
		if (end > (uint64_t)cfg->connections)
			end = (uint64_t)cfg->connections;
		t->n = end > t->first ? (uint32_t)(end - t->first) : 0;
		if (pthread_create(&t->thread, NULL, lg_worker_main, t) != 0) {
			fprintf(stderr, "loadgen: cannot start thread %u\n", i);
			return 1;
		}
	}
	pthread_barrier_wait(&lg.start);
	if (lg.start_failed) {
		for (unsigned i = 0; i < lg.nthreads; i++)
			pthread_join(lg.t[i].thread, NULL);
		return 1;
	}
	log_info("%s: %lld connections over %u threads to %zu target(s)%s; connect rate %lld/s", scen_names[sc],
		 (long long)cfg->connections, lg.nthreads, lg.ntargets, lg.src_count ? " from a source range" : "",
		 (long long)cfg->connect_rate);

	struct watch w0 = {0}, w_ramp = {0}, w_run = {0}, w_end = {0}, wcur = {0};
	if (cfg->watch_pid && watch_read((int)cfg->watch_pid, &w0) != 0) {
		fprintf(stderr, "loadgen: --watch-pid %lld: no such process\n", (long long)cfg->watch_pid);
		cfg->watch_pid = 0;
	}
	size_t ns = 0, scap = 0;
	struct sample *series = NULL;
	struct totals prev = {0}, cur;
	double t_prev = 0, ramp_s = 0, run_s = 0, cpu0 = metrics_cpu_seconds(), cpu_run0 = 0, cpu_run1 = 0;
	uint64_t sent_run0 = 0, deliv_run0 = 0, sent_run1 = 0, deliv_run1 = 0;
	int phase = PH_RAMP;
	uint64_t phase_start = clock_mono_ns(), next_line = phase_start + 1000000000ull;
	int reached = 0;
	for (;;) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
		uint64_t now = clock_mono_ns();
		double in_phase = (double)(now - phase_start) / 1e9;
		sum(&lg, &cur);
		if (interrupted && phase < PH_DRAIN) {
			log_warn("interrupted: draining and reporting");
			phase = PH_DRAIN;
			phase_start = now;
			__atomic_store_n(&lg.phase, PH_DRAIN, __ATOMIC_RELAXED);
		}
		if (phase == PH_RAMP && (cur.logged_in >= (uint64_t)cfg->connections ||
					 in_phase * 1000 >= (double)cfg->ramp_timeout_ms)) {
			reached = cur.logged_in >= (uint64_t)cfg->connections;
			ramp_s = in_phase;
			if (!reached)
				log_warn("ramp timeout: %llu of %lld logged in", (unsigned long long)cur.logged_in,
					 (long long)cfg->connections);
			if (cfg->watch_pid)
				watch_read((int)cfg->watch_pid, &w_ramp);
			phase = PH_RUN;
			phase_start = now;
			cpu_run0 = metrics_cpu_seconds();
			sent_run0 = cur.sent;
			deliv_run0 = cur.delivered;
			w_run = w_ramp;
			__atomic_store_n(&lg.run_start_ns, now, __ATOMIC_RELAXED);
			__atomic_store_n(&lg.phase, PH_RUN, __ATOMIC_RELAXED);
		} else if (phase == PH_RUN && in_phase * 1000 >= (double)cfg->duration_ms) {
			run_s = in_phase;
			cpu_run1 = metrics_cpu_seconds();
			sent_run1 = cur.sent;
			deliv_run1 = cur.delivered;
			if (cfg->watch_pid)
				watch_read((int)cfg->watch_pid, &w_end);
			phase = PH_DRAIN;
			phase_start = now;
			__atomic_store_n(&lg.phase, PH_DRAIN, __ATOMIC_RELAXED);
		} else if (phase == PH_DRAIN &&
			   (in_phase * 1000 >= (double)cfg->drain_ms || interrupted > 1 ||
			    (cfg->scenario != SC_IDLE && cur.delivered + cur.injected_drop >=
				     cur.acked * (cfg->scenario == SC_GROUP ? (uint64_t)cfg->group_size - 1 : 1) &&
			     cur.acked + cur.err_total >= cur.sent && in_phase > 0.2))) {
			break;
		}
		if (now >= next_line) {
			double t = (double)(now - lg.start_ns) / 1e9, dt = t - t_prev;
			if (cfg->watch_pid)
				watch_read((int)cfg->watch_pid, &wcur);
			if (ns == scap) {
				scap = scap ? scap * 2 : 256;
				series = realloc(series, scap * sizeof *series);
			}
			if (series) {
				struct sample *s = &series[ns++];
				memset(s, 0, sizeof *s);
				s->t = t;
				s->open = cur.open;
				s->open_d = (double)cur.open;
				s->logged_in_d = (double)cur.logged_in;
				s->logged_in = cur.logged_in;
				s->connects = cur.connected;
				s->sent = cur.sent;
				s->delivered = cur.delivered;
				s->errors = cur.err_total;
				s->connect_rate = (double)(cur.connected - prev.connected) / dt;
				s->send_rate = (double)(cur.sent - prev.sent) / dt;
				s->deliver_rate = (double)(cur.delivered - prev.delivered) / dt;
				s->p50_us = (double)cur.p50_ns / 1000;
				s->p99_us = (double)cur.p99_ns / 1000;
				s->watch_cpu = wcur.cpu_s;
				s->watch_rss_mb = wcur.rss_kb / 1024;
			}
			if (!cfg->quiet)
				fprintf(stderr,
					"%6.0fs %-5s conns %lld/%llu/%llu +%.0f/s | sent %.0f/s delivered %.0f/s | err %llu | p50 %.0fus p99 %.0fus%s\n",
					t, phase == PH_RAMP ? "ramp" : phase == PH_RUN ? "run" : "drain",
					(long long)cfg->connections, (unsigned long long)cur.open,
					(unsigned long long)cur.logged_in, (double)(cur.connected - prev.connected) / dt,
					(double)(cur.sent - prev.sent) / dt, (double)(cur.delivered - prev.delivered) / dt,
					(unsigned long long)(cur.err_total + cur.logins_failed + cur.cerr[0] + cur.cerr[1] +
							     cur.cerr[2] + cur.cerr[3]),
					(double)cur.p50_ns / 1000, (double)cur.p99_ns / 1000, "");
			prev = cur;
			t_prev = t;
			next_line += 1000000000ull;
		}
	}
	if (phase == PH_DRAIN && run_s == 0) { /* interrupted during ramp or run */
		run_s = (double)(clock_mono_ns() - phase_start) / 1e9;
		cpu_run1 = metrics_cpu_seconds();
		sent_run1 = cur.sent;
		deliv_run1 = cur.delivered;
	}
	__atomic_store_n(&lg.phase, PH_STOP, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < lg.nthreads; i++)
		pthread_join(lg.t[i].thread, NULL);
	sum(&lg, &cur);
	struct hist lat = {0};
	for (unsigned i = 0; i < lg.nthreads; i++)
		hist_merge(&lat, &lg.t[i].lat);
	double cpu_all = metrics_cpu_seconds() - cpu0, cpu_run = cpu_run1 - cpu_run0;
	/* every acknowledged message owes one delivery, a group message one per other member */
	uint64_t fan = cfg->scenario == SC_GROUP ? (uint64_t)cfg->group_size - 1 : 1;
	uint64_t expected = cur.acked * fan;
	uint64_t lost = expected > cur.delivered ? expected - cur.delivered : 0;
	uint64_t attempts = cur.sent + cur.connects;
	uint64_t errs = cur.err_total + cur.group_errors + cur.logins_failed + cur.closed_by_server + cur.cerr[0] + cur.cerr[1] + cur.cerr[2] +
			cur.cerr[3] + cur.blocked;
	double err_rate = attempts ? (double)errs / (double)attempts : 0;
	double msgs_run = (double)(deliv_run1 - deliv_run0);
	double send_rate = run_s > 0 ? (double)(sent_run1 - sent_run0) / run_s : 0;
	double deliv_rate = run_s > 0 ? msgs_run / run_s : 0;

	printf("loadgen: scenario %s, %lld connections, %u threads, %zu target(s)\n", scen_names[sc],
	       (long long)cfg->connections, lg.nthreads, lg.ntargets);
	printf("  connections   logged in %llu of %lld at end of ramp%s; ramp %.1f s (%.0f/s); connect errors %llu; reconnects %llu\n",
	       (unsigned long long)(reached ? (uint64_t)cfg->connections : cur.logged_in), (long long)cfg->connections,
	       reached ? "" : " (NOT REACHED)", ramp_s, ramp_s > 0 ? (double)cfg->connections / ramp_s : 0,
	       (unsigned long long)(cur.cerr[0] + cur.cerr[1] + cur.cerr[2] + cur.cerr[3]),
	       (unsigned long long)cur.reconnects);
	printf("  messages      sent %llu, acked %llu, delivered %llu, lost %llu, duplicated %llu, reordered %llu%s\n",
	       (unsigned long long)cur.sent, (unsigned long long)cur.acked, (unsigned long long)cur.delivered,
	       (unsigned long long)lost, (unsigned long long)cur.dup, (unsigned long long)cur.reordered,
	       cur.injected_drop || cur.injected_dup ? " (with injected faults)" : "");
	printf("  rates         offered %.0f/s, sent %.0f/s, delivered %.0f/s over %.1f s of run\n",
	       cfg->rate * (double)cfg->connections / (cfg->scenario == SC_GROUP ? (double)cfg->group_size : 1.0), send_rate, deliv_rate, run_s);
	printf("  latency       p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us (%llu samples)\n",
	       (double)hist_percentile(&lat, 50) / 1e3, (double)hist_percentile(&lat, 90) / 1e3,
	       (double)hist_percentile(&lat, 99) / 1e3, (double)hist_percentile(&lat, 99.9) / 1e3, (double)lat.max / 1e3,
	       (unsigned long long)lat.count);
	printf("  errors        %llu (rate %.5f):", (unsigned long long)errs, err_rate);
	for (int k = 0; k < PROTO_E_CODES; k++)
		if (cur.errors[k])
			printf(" %s=%llu", k ? proto_err_name((unsigned)k) : "unknown", (unsigned long long)cur.errors[k]);
	if (cur.logins_failed)
		printf(" login_failed=%llu", (unsigned long long)cur.logins_failed);
	if (cur.closed_by_server)
		printf(" closed_by_server=%llu", (unsigned long long)cur.closed_by_server);
	if (cur.blocked)
		printf(" send_blocked=%llu", (unsigned long long)cur.blocked);
	if (cur.skipped)
		printf(" (skipped sends, not logged in: %llu)", (unsigned long long)cur.skipped);
	printf("\n  keepalive     pings sent %llu, pongs received %llu\n", (unsigned long long)cur.pings,
	       (unsigned long long)cur.pongs);
	if (cfg->scenario == SC_GROUP)
		printf("  groups        %llu created (%llu refused), %lld members each: %llu deliveries owed\n",
		       (unsigned long long)cur.groups_created, (unsigned long long)cur.group_errors,
		       (long long)cfg->group_size, (unsigned long long)expected);
	if (cfg->tls)
		printf("  tls           %llu handshakes (%llu resumed, %llu failed), %.3f s of loop time in them (%.0f us each)\n",
		       (unsigned long long)cur.tls_handshakes, (unsigned long long)cur.tls_resumed,
		       (unsigned long long)cur.tls_failed, (double)cur.tls_ns / 1e9,
		       cur.tls_handshakes ? (double)cur.tls_ns / 1e3 / (double)cur.tls_handshakes : 0);
	printf("  loadgen cpu   %.2f s total, %.2f s in run%s", cpu_all, cpu_run, "");
	if (msgs_run > 0)
		printf(" = %.3f s per million messages", cpu_run / msgs_run * 1e6);
	printf("\n");
	double gw_cpu_run = 0, gw_rss_per_conn = 0;
	if (cfg->watch_pid) {
		gw_cpu_run = w_end.cpu_s - w_run.cpu_s;
		gw_rss_per_conn = cur.logged_in ? (w_ramp.rss_kb - w0.rss_kb) * 1024 / (double)(reached ? (uint64_t)cfg->connections : cur.logged_in) : 0;
		printf("  watched pid   %lld: RSS %.1f MB before ramp, %.1f MB after (%.0f bytes per connection); CPU %.2f s during run",
		       (long long)cfg->watch_pid, w0.rss_kb / 1024, w_ramp.rss_kb / 1024, gw_rss_per_conn, gw_cpu_run);
		if (msgs_run > 0)
			printf(" = %.3f s per million messages", gw_cpu_run / msgs_run * 1e6);
		else if (run_s > 0)
			printf(" = %.1f%% of a core while holding", gw_cpu_run / run_s * 100);
		printf("\n");
	}
	int fail = lost > 0 || err_rate > cfg->max_error_rate || !reached;
	printf("  result        %s\n", fail ? (lost ? "FAIL: messages lost" : !reached ? "FAIL: connection target not reached"
							   : "FAIL: error rate over --max-error-rate")
					 : "ok");

	int out_failed = 0; /* an output file could not be written */
	if (cfg->report) {
		FILE *f = fopen(cfg->report, "w");
		if (!f) {
			log_error("--report %s: %s", cfg->report, strerror(errno));
			out_failed = 1;
		} else {
			fprintf(f, "{\"config\":{\"scenario\":\"%s\",\"connections\":%lld,\"threads\":%u,\"targets\":%zu,"
				   "\"sources\":%u,\"connect_rate\":%lld,\"rate_per_user\":%g,\"size\":%lld,\"duration_s\":%g,"
				   "\"ping_interval_s\":%g,\"receipts\":%d,\"inject_drop\":%lld,\"inject_dup\":%lld},\n",
				scen_names[sc], (long long)cfg->connections, lg.nthreads, lg.ntargets, lg.src_count,
				(long long)cfg->connect_rate, cfg->rate, (long long)cfg->size, (double)cfg->duration_ms / 1000,
				(double)cfg->ping_ms / 1000, cfg->receipts, (long long)cfg->inject_drop, (long long)cfg->inject_dup);
			fprintf(f, " \"connections\":{\"reached\":%s,\"logged_in\":%llu,\"ramp_s\":%.3f,\"connects\":%llu,"
				   "\"connect_errors\":{\"refused\":%llu,\"timeout\":%llu,\"addr\":%llu,\"other\":%llu},"
				   "\"reconnects\":%llu,\"goaway\":%llu,\"kicked\":%llu,\"closed_by_server\":%llu,\"logins_failed\":%llu},\n",
				reached ? "true" : "false", (unsigned long long)cur.logged_in, ramp_s,
				(unsigned long long)cur.connects, (unsigned long long)cur.cerr[0], (unsigned long long)cur.cerr[1],
				(unsigned long long)cur.cerr[2], (unsigned long long)cur.cerr[3], (unsigned long long)cur.reconnects,
				(unsigned long long)cur.goaway, (unsigned long long)cur.kicked,
				(unsigned long long)cur.closed_by_server, (unsigned long long)cur.logins_failed);
			fprintf(f, " \"messages\":{\"sent\":%llu,\"acked\":%llu,\"delivered\":%llu,\"lost\":%llu,\"duplicated\":%llu,"
				   "\"reordered\":%llu,\"injected_drop\":%llu,\"injected_dup\":%llu,\"receipts_in\":%llu,"
				   "\"blocked\":%llu,\"skipped\":%llu,\"run_s\":%.3f,\"sent_per_s\":%.1f,\"delivered_per_s\":%.1f,"
				   "\"pings\":%llu,\"pongs\":%llu},\n",
				(unsigned long long)cur.sent, (unsigned long long)cur.acked, (unsigned long long)cur.delivered,
				(unsigned long long)lost, (unsigned long long)cur.dup, (unsigned long long)cur.reordered,
				(unsigned long long)cur.injected_drop, (unsigned long long)cur.injected_dup,
				(unsigned long long)cur.receipts_in, (unsigned long long)cur.blocked,
				(unsigned long long)cur.skipped, run_s, send_rate, deliv_rate, (unsigned long long)cur.pings,
				(unsigned long long)cur.pongs);
			fprintf(f, " \"latency_us\":{\"count\":%llu,\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},\n",
				(unsigned long long)lat.count, (double)hist_percentile(&lat, 50) / 1e3,
				(double)hist_percentile(&lat, 90) / 1e3, (double)hist_percentile(&lat, 99) / 1e3,
				(double)hist_percentile(&lat, 99.9) / 1e3, (double)lat.max / 1e3);
			fprintf(f,
				" \"tls\":{\"on\":%s,\"resume\":%s,\"handshakes\":%llu,\"resumed\":%llu,\"failed\":%llu,"
				"\"loop_s\":%.6f},\n",
				cfg->tls ? "true" : "false", cfg->tls_resume ? "true" : "false",
				(unsigned long long)cur.tls_handshakes, (unsigned long long)cur.tls_resumed,
				(unsigned long long)cur.tls_failed, (double)cur.tls_ns / 1e9);
			fprintf(f, " \"errors\":{\"total\":%llu,\"rate\":%.6f", (unsigned long long)errs, err_rate);
			for (int k = 0; k < PROTO_E_CODES; k++)
				if (cur.errors[k])
					fprintf(f, ",\"%s\":%llu", k ? proto_err_name((unsigned)k) : "unknown", (unsigned long long)cur.errors[k]);
			fprintf(f, "},\n \"cpu\":{\"loadgen_s\":%.3f,\"loadgen_run_s\":%.3f,\"loadgen_s_per_million\":%.4f",
				cpu_all, cpu_run, msgs_run > 0 ? cpu_run / msgs_run * 1e6 : 0);
			if (cfg->watch_pid)
				fprintf(f, ",\"watched_pid\":%lld,\"watched_run_s\":%.3f,\"watched_s_per_million\":%.4f,"
					   "\"watched_rss_before_kb\":%.0f,\"watched_rss_after_ramp_kb\":%.0f,\"watched_rss_per_conn\":%.1f",
					(long long)cfg->watch_pid, gw_cpu_run, msgs_run > 0 ? gw_cpu_run / msgs_run * 1e6 : 0,
					w0.rss_kb, w_ramp.rss_kb, gw_rss_per_conn);
			fprintf(f, "},\n \"result\":\"%s\"}\n", fail ? "fail" : "ok");
			if (ferror(f) | fclose(f)) {
				log_error("--report %s: write failed", cfg->report);
				out_failed = 1;
			}
		}
	}
	if (cfg->csv && series) {
		FILE *f = fopen(cfg->csv, "w");
		if (f) {
			fprintf(f, "t_s,open,logged_in,connects_per_s,sent_per_s,delivered_per_s,errors,p50_us,p99_us,watched_cpu_s,watched_rss_mb\n");
			for (size_t i = 0; i < ns; i++)
				fprintf(f, "%.2f,%llu,%llu,%.0f,%.0f,%.0f,%llu,%.1f,%.1f,%.2f,%.1f\n", series[i].t,
					(unsigned long long)series[i].open, (unsigned long long)series[i].logged_in,
					series[i].connect_rate, series[i].send_rate, series[i].deliver_rate,
					(unsigned long long)series[i].errors, series[i].p50_us, series[i].p99_us,
					series[i].watch_cpu, series[i].watch_rss_mb);
			if (ferror(f) | fclose(f)) {
				log_error("--csv %s: write failed", cfg->csv);
				out_failed = 1;
			}
		} else {
			log_error("--csv %s: %s", cfg->csv, strerror(errno));
			out_failed = 1;
		}
	}
	if (cfg->svg && series) {
		char title[160];
		snprintf(title, sizeof title, "loadgen %s: %lld connections, %g msg/s per user", scen_names[sc],
			 (long long)cfg->connections, cfg->rate);
		if (write_svg(cfg->svg, series, ns, title) != 0)
			out_failed = 1;
	}
	free(series);
	free(lg.t);
	free(lg.targets);
	tls_ctx_free(lg.tls);
	return fail ? 1 : out_failed ? 3 : 0;
}
