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

#include "runtime/mbuf.h"

/* METRIC_MAX is a gauge whose value over several threads or links is their
 * largest, not their sum (rendered as a gauge). */
enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_MAX };

struct metric_desc {
	const char *name;   /* Prometheus name, e.g. "gateway_conn_closed_total" */
	const char *labels; /* e.g. "reason=\"idle\"", or NULL */
	const char *key;    /* JSON key, e.g. "conn_closed_idle" */
	enum metric_kind kind;
	const char *help; /* printed with the first row of each name */
};

/* Append the Prometheus text exposition of d[i] = vals[i]. */
void metrics_prom(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals);

/* Append "key": value pairs (comma-separated, no braces) for d[i] = vals[i]. */
void metrics_json_fields(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals);

/* This process's resident set size in bytes (/proc/self/statm), 0 if unknown. */
double metrics_rss_bytes(void);

/* This process's CPU time, user + system, in seconds. */
double metrics_cpu_seconds(void);

#endif
