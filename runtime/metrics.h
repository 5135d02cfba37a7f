/* metrics.h: one place renders the numbers (Prometheus text and JSON) from a
 * table of metric descriptions and a parallel array of values.
 *
 * A program keeps per-thread counter structs (written only by their thread,
 * read by the stats thread with relaxed atomic loads), sums them into an array
 * in the order of its table, and hands both here: /metrics, /stats and the
 * console (gwstat, which reads /stats) then always agree.
 */
#ifndef RUNTIME_METRICS_H
#define RUNTIME_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/mbuf.h"
#include "runtime/version.h"

/* METRIC_MAX is a gauge whose value over several threads or links is their
 * largest, not their sum (rendered as a gauge). */
enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_MAX };

struct metric_desc {
	const char *name;   /* Prometheus name, e.g. "gateway_conn_closed_total" */
	const char *labels; /* e.g. "reason=\"idle\"", or NULL */
	const char *key;    /* JSON key, e.g. "conn_closed_idle" */
	enum metric_kind kind;
	const char *help; /* printed with the first row of each name */
	double prom_scale; /* Prometheus value = value x this (base units: 1e-6 for a µs counter
			    * exported in seconds); 0 means 1. JSON keeps the value as is. */
};

/* Append the Prometheus text exposition of d[i] = vals[i]. */
void metrics_prom(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals);

/* Append "key": value pairs (comma-separated, no braces) for d[i] = vals[i]. */
void metrics_json_fields(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals);

/* The rows every program exports about its process, by index: the build
 * (value 1, its version as a label: the --version string), uptime, and
 * Prometheus's standard process_* metrics. JSON keys as below. */
enum { MP_BUILD, MP_UPTIME, MP_START, MP_CPU, MP_RSS, MP_FDS, MP_MAX_FDS, MP_N };
#define METRICS_PROCESS_ROWS(prefix)                                                                            \
	{                                                                                                       \
		{prefix "_build_info", "version=\"" CHAT_VERSION "\"", "build_info", METRIC_GAUGE,                \
		 "Always 1; the version of this build in its label", 0},                                           \
		{prefix "_uptime_seconds", NULL, "uptime_s", METRIC_GAUGE, "Seconds since start", 0},               \
		{"process_start_time_seconds", NULL, "start_time_s", METRIC_GAUGE,                               \
		 "Start time of the process since the Unix epoch", 0},                                             \
		{"process_cpu_seconds_total", NULL, "cpu_s", METRIC_COUNTER, "CPU time of the process (user + system)", 0}, \
		{"process_resident_memory_bytes", NULL, "rss_bytes", METRIC_GAUGE, "Resident set size", 0},         \
		{"process_open_fds", NULL, "open_fds", METRIC_GAUGE, "Open file descriptors", 0},                   \
		{"process_max_fds", NULL, "max_fds", METRIC_GAUGE, "RLIMIT_NOFILE (ring tables of direct descriptors are not counted in open_fds)", 0}, \
	}

/* A latency histogram measured inside a server, exported as a Prometheus
 * histogram: fixed buckets from 10 us to 10 s (1-2.5-5 steps), one writer
 * thread (metrics_lat_add, relaxed atomic stores) and readers summing with
 * metrics_lat_load; values in nanoseconds, exported in seconds. */
#define METRICS_LAT_N 19
extern const uint64_t metrics_lat_bounds_ns[METRICS_LAT_N];
struct metrics_lat {
	uint64_t b[METRICS_LAT_N + 1]; /* the last: over the largest bound */
	uint64_t count, sum_ns;
};

static inline void metrics_lat_add(struct metrics_lat *h, uint64_t ns)
{
	unsigned i = 0;
	while (i < METRICS_LAT_N && ns > metrics_lat_bounds_ns[i])
		i++;
	__atomic_store_n(&h->b[i], h->b[i] + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->sum_ns, h->sum_ns + ns, __ATOMIC_RELAXED);
}

/* *sum += *h, read with relaxed loads (h written by another thread). */
void metrics_lat_load(struct metrics_lat *sum, const struct metrics_lat *h);

/* Append name's Prometheus histogram (name_bucket{le=...}, name_sum in
 * seconds, name_count), or for JSON "key_count", "key_p50_us", "key_p99_us"
 * (bucket upper bounds) with a leading comma. */
void metrics_prom_lat(struct mbuf *b, const char *name, const char *help, const struct metrics_lat *h);
void metrics_json_lat(struct mbuf *b, const char *key, const struct metrics_lat *h);

/* Fill v[0..MP_N) for a process started at started_wall_ms (wall clock). */
void metrics_process_values(uint64_t started_wall_ms, double v[MP_N]);

/* This process's resident set size in bytes (/proc/self/statm), 0 if unknown. */
double metrics_rss_bytes(void);

/* This process's CPU time, user + system, in seconds. */
double metrics_cpu_seconds(void);

#endif
