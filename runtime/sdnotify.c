/* sdnotify.c: see sdnotify.h. */
#include "runtime/sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sdn_open(struct sdnotify *n, char *err, size_t errlen)
{
	memset(n, 0, sizeof *n);
	n->fd = -1;
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return 0;
	size_t len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof n->addr.sun_path) {
		snprintf(err, errlen, "NOTIFY_SOCKET '%s' is not a usable unix socket address", path);
		return -1;
	}
	n->addr.sun_family = AF_UNIX;
	memcpy(n->addr.sun_path, path, len);
	if (path[0] == '@')
		n->addr.sun_path[0] = 0; /* the abstract namespace */
	n->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (n->fd < 0) {
		snprintf(err, errlen, "NOTIFY_SOCKET: socket: %s", strerror(errno));
		return -1;
	}
	const char *wd = getenv("WATCHDOG_USEC"), *wp = getenv("WATCHDOG_PID");
	if (wd && (!wp || strtoll(wp, NULL, 10) == (long long)getpid())) {
		char *end;
		unsigned long long us = strtoull(wd, &end, 10);
		if (end != wd && *end == 0)
			n->watchdog_us = us;
	}
	return 0;
}

int sdn_send(struct sdnotify *n, const char *fmt, ...)
{
	if (n->fd < 0)
		return 0;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (len < 0)
		return -1;
	if ((size_t)len >= sizeof msg)
		len = (int)sizeof msg - 1;
	ssize_t r = sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (const struct sockaddr *)&n->addr, n->len);
	return r == len ? 0 : -1;
}

void sdn_close(struct sdnotify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

unsigned sdn_watchdog(struct sdnotify *n, struct sdn_watch *w, const uint64_t *loops, const uint8_t *done,
		      unsigned nloops, uint64_t now_ms, uint64_t min_period_ms, uint64_t *period_ms)
{
	if (n->fd < 0 || !n->watchdog_us || now_ms < w->next_ms)
		return 0;
	uint64_t period = n->watchdog_us / 1000 / 2;
	if (period < min_period_ms)
		period = min_period_ms;
	*period_ms = period;
	w->next_ms = now_ms + period;
	unsigned stuck = 0;
	for (unsigned t = 0; t < nloops && t < SDN_MAX_LOOPS; t++) {
		if (w->primed && loops[t] == w->last[t] && !stuck && !(done && done[t]))
			stuck = t + 1;
		w->last[t] = loops[t];
	}
	w->primed = 1;
	if (!stuck)
		sdn_send(n, "WATCHDOG=1");
	return stuck;
}
