/* log.c: see log.h. */
#include "runtime/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum log_level log_level_max = LOG_INFO;
static const char *log_prog = "?";
static int log_journal; /* set by log_init, before threads: stderr is the journal's stream */
static __thread char log_tname[16] = "main";

void log_init(const char *prog, enum log_level max)
{
	log_prog = prog;
	log_set_level(max);
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	log_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
		      (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_set_level(enum log_level max)
{
	__atomic_store_n(&log_level_max, max, __ATOMIC_RELAXED);
}

void log_thread(const char *name)
{
	snprintf(log_tname, sizeof log_tname, "%s", name);
}

int log_level_parse(const char *s)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	static const char prio[] = {'3', '4', '6', '7'}; /* syslog: err, warning, info, debug */
	char line[1024];
	int n;
	if (log_journal) {
		n = snprintf(line, sizeof line, "<%c>%s[%s] %s: ", prio[lvl & 3], log_prog, log_tname, names[lvl & 3]);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%s] %s: ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_prog,
			     log_tname, names[lvl & 3]);
	}
	if (n < 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof line - 2)
		len = sizeof line - 2; /* truncated */
	line[len++] = '\n';
	ssize_t w = write(2, line, len);
	(void)w;
}

int log_rl_allow(struct log_rl *rl, uint64_t *held)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	uint64_t s = (uint64_t)ts.tv_sec + 1; /* never 0, so a zeroed state allows the first line */
	if (s != rl->second) {
		*held = rl->held;
		rl->held = 0;
		rl->second = s;
		return 1;
	}
	rl->held++;
	return 0;
}
