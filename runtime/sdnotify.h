/* sdnotify.h: telling systemd how the service is doing (sd_notify(3)).
 *
 * The protocol is a datagram of "NAME=value" lines to the unix socket named
 * by $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace); that is
 * all libsystemd's sd_notify does, so it is written here rather than linked.
 * A unit with Type=notify waits for READY=1; STOPPING=1 says a stop began;
 * STATUS= is what `systemctl status` shows; with WatchdogSec= the manager
 * sets $WATCHDOG_USEC and restarts the service when WATCHDOG=1 does not
 * come at least that often.
 *
 * Without $NOTIFY_SOCKET (not started by systemd, or Type=simple) every call
 * does nothing. Thread: the main thread only (one socket, no locking).
 */
#ifndef RUNTIME_SDNOTIFY_H
#define RUNTIME_SDNOTIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct sdnotify {
	int fd; /* -1: not under systemd */
	struct sockaddr_un addr;
	socklen_t len;
	uint64_t watchdog_us; /* $WATCHDOG_USEC for this process, 0: no watchdog */
};

/* Read $NOTIFY_SOCKET and $WATCHDOG_USEC (honouring $WATCHDOG_PID). Returns
 * 0, also when not under systemd, or -1 with a reason in err (a socket
 * address that cannot be used). */
int sdn_open(struct sdnotify *n, char *err, size_t errlen);

/* Send one notification ("READY=1", "STATUS=...", several lines joined by
 * '\n'). Returns 0, or -1 when it could not be sent (logged by the caller). */
int sdn_send(struct sdnotify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void sdn_close(struct sdnotify *n);

/* The watchdog, for a process whose threads each count their loop turns:
 * WATCHDOG=1 goes out (at half the watchdog interval, at least every
 * min_period_ms) only while every counter moved since the last check, so a
 * wedged thread gets the service restarted. */
#define SDN_MAX_LOOPS 256
struct sdn_watch {
	int primed;
	uint64_t next_ms;
	uint64_t last[SDN_MAX_LOOPS];
};

/* Call often (at least every min_period_ms); loops[i] for i < n are the
 * threads' counters (n <= SDN_MAX_LOOPS), done[i] (NULL: none) set for a
 * thread that has finished (a drain ends threads one by one: those are not
 * wedged). Returns 0 when nothing was due or WATCHDOG=1 was sent, or 1 + the
 * index of a thread whose loop has not turned for *period_ms (WATCHDOG=1
 * withheld: the caller logs it). */
unsigned sdn_watchdog(struct sdnotify *n, struct sdn_watch *w, const uint64_t *loops, const uint8_t *done,
		      unsigned nloops, uint64_t now_ms, uint64_t min_period_ms, uint64_t *period_ms);

#endif
