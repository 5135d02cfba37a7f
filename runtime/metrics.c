/* metrics.c: see metrics.h. */
#include "runtime/metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* A value in Prometheus text (prom) or JSON: integers without decimals,
 * fractions with full precision, non-finite values spelled validly. */
static void num(struct mbuf *b, double v, int prom)
{
	if (isnan(v))
		mbuf_printf(b, prom ? "NaN" : "null");
	else if (isinf(v))
		mbuf_printf(b, prom ? (v > 0 ? "+Inf" : "-Inf") : "null");
	else if (v == floor(v) && fabs(v) < 9e15)
		mbuf_printf(b, "%.0f", v);
	else {
		/* the shortest of %.15g and %.17g that reads back as the same double */
		char s[40];
		snprintf(s, sizeof s, "%.15g", v);
		if (strtod(s, NULL) != v)
			snprintf(s, sizeof s, "%.17g", v);
		mbuf_put(b, s, strlen(s));
	}
}

void metrics_prom(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals)
{
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || strcmp(d[i].name, d[i - 1].name) != 0) {
			mbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", d[i].name, d[i].help, d[i].name,
				    d[i].kind == METRIC_COUNTER ? "counter" : "gauge");
		}
		if (d[i].labels)
			mbuf_printf(b, "%s{%s} ", d[i].name, d[i].labels);
		else
			mbuf_printf(b, "%s ", d[i].name);
		num(b, d[i].prom_scale ? vals[i] * d[i].prom_scale : vals[i], 1);
		mbuf_put(b, "\n", 1);
	}
}

void metrics_json_fields(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals)
{
	for (size_t i = 0; i < n; i++) {
		mbuf_printf(b, "%s\"%s\":", i ? "," : "", d[i].key);
		num(b, vals[i], 0);
	}
}

double metrics_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size, res = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (double)res * (double)sysconf(_SC_PAGESIZE);
}

double metrics_cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

void metrics_process_values(uint64_t started_wall_ms, double v[MP_N])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	v[MP_BUILD] = 1;
	v[MP_START] = (double)started_wall_ms / 1000.0;
	v[MP_UPTIME] = now - v[MP_START];
	v[MP_CPU] = metrics_cpu_seconds();
	v[MP_RSS] = metrics_rss_bytes();
	double fds = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)))
			fds += e->d_name[0] != '.';
		closedir(d);
		fds -= 1; /* the descriptor of the listing itself */
	}
	v[MP_FDS] = fds;
	struct rlimit rl;
	v[MP_MAX_FDS] = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;
}

const uint64_t metrics_lat_bounds_ns[METRICS_LAT_N] = {
	10000ull,     25000ull,     50000ull,      100000ull,     250000ull,      500000ull,     1000000ull,
	2500000ull,   5000000ull,   10000000ull,   25000000ull,   50000000ull,    100000000ull,  250000000ull,
	500000000ull, 1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull,
};

void metrics_lat_load(struct metrics_lat *sum, const struct metrics_lat *h)
{
	for (unsigned i = 0; i <= METRICS_LAT_N; i++)
		sum->b[i] += __atomic_load_n(&h->b[i], __ATOMIC_RELAXED);
	sum->count += __atomic_load_n(&h->count, __ATOMIC_RELAXED);
	sum->sum_ns += __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
}

void metrics_prom_lat(struct mbuf *b, const char *name, const char *help, const struct metrics_lat *h)
{
	mbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	uint64_t cum = 0;
	for (unsigned i = 0; i < METRICS_LAT_N; i++) {
		cum += h->b[i];
		mbuf_printf(b, "%s_bucket{le=\"", name);
		num(b, (double)metrics_lat_bounds_ns[i] / 1e9, 1);
		mbuf_printf(b, "\"} %llu\n", (unsigned long long)cum);
	}
	cum += h->b[METRICS_LAT_N];
	mbuf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum ", name, (unsigned long long)cum, name);
	num(b, (double)h->sum_ns / 1e9, 1);
	mbuf_printf(b, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

/* The upper bound of the bucket holding percentile p, in us (the largest
 * bound when it is past them; 0 when empty). */
static double lat_pct_us(const struct metrics_lat *h, double p)
{
	uint64_t total = 0;
	for (unsigned i = 0; i <= METRICS_LAT_N; i++)
		total += h->b[i];
	if (!total)
		return 0;
	uint64_t want = (uint64_t)ceil((double)total * p / 100.0), cum = 0;
	for (unsigned i = 0; i < METRICS_LAT_N; i++) {
		cum += h->b[i];
		if (cum >= want)
			return (double)metrics_lat_bounds_ns[i] / 1e3;
	}
	return (double)metrics_lat_bounds_ns[METRICS_LAT_N - 1] / 1e3;
}

void metrics_json_lat(struct mbuf *b, const char *key, const struct metrics_lat *h)
{
	uint64_t total = 0;
	for (unsigned i = 0; i <= METRICS_LAT_N; i++)
		total += h->b[i];
	mbuf_printf(b, ",\"%s_count\":%llu,\"%s_p50_us\":", key, (unsigned long long)total, key);
	num(b, lat_pct_us(h, 50), 0);
	mbuf_printf(b, ",\"%s_p99_us\":", key);
	num(b, lat_pct_us(h, 99), 0);
}
