/* metrics.c: see metrics.h. */
#include "runtime/metrics.h"

#include <math.h>
#include <string.h>

static void num(struct mbuf *b, double v)
{
	if (v == floor(v) && fabs(v) < 9e15)
		mbuf_printf(b, "%.0f", v);
	else
		mbuf_printf(b, "%.6g", v);
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
		num(b, vals[i]);
		mbuf_put(b, "\n", 1);
	}
}

void metrics_json_fields(struct mbuf *b, const struct metric_desc *d, size_t n, const double *vals)
{
	for (size_t i = 0; i < n; i++) {
		mbuf_printf(b, "%s\"%s\":", i ? "," : "", d[i].key);
		num(b, vals[i]);
	}
}
