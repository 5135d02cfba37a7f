/* httpd.c: see httpd.h.
 *
 * One thread, one poll() loop over the listener and up to HTTPD_MAX_CONN
 * client sockets, all non-blocking. A connection reads its request head
 * (at most 4 KiB), gets its whole answer rendered at once, writes it as the
 * socket takes it and is closed; it has HTTPD_DEADLINE_MS in all, from
 * accept to the last byte. So no client, idle or trickling, delays another
 * by more than one handler call, and when every slot is taken the oldest
 * connection gives way to the new one (a health check is never locked out
 * by a few idle sockets).
 */
#include "runtime/httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/log.h"

#define HTTPD_MAX_CONN 64
/* The kernel's accept queue: well above HTTPD_MAX_CONN, so that a burst of
 * connections (scrapers, or idle ones that the oldest-gives-way rule will
 * close) does not overflow it. An overflowing queue drops the handshake's
 * last ACK, and the next connection, /healthz included, waits for the
 * kernel's 1 s retransmission (seen as a 1,031 ms /healthz in
 * gateway/stats_endpoint_not_held_by_slow_clients). */
#define HTTPD_BACKLOG 1024
#define HTTPD_HEAD_MAX 4096
#define HTTPD_DEADLINE_MS 2000

struct hconn {
	int fd; /* -1: free */
	int local; /* the peer is on a loopback address */
	int64_t deadline_ms, opened_ms;
	size_t in;            /* bytes of head read */
	char head[HTTPD_HEAD_MAX + 1];
	struct mbuf out;      /* the answer, once rendered */
	size_t sent;
	int answering;
};

struct httpd {
	int fd;
	int stop_pipe[2];
	unsigned port;
	pthread_t thread;
	httpd_handler handler;
	void *arg;
	struct hconn c[HTTPD_MAX_CONN];
	uint64_t evicted, timed_out;
	int64_t accept_after_ms; /* out of file descriptors: do not accept before this */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hc_close(struct hconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	mbuf_free(&c->out);
	c->out = (struct mbuf){0};
	c->in = c->sent = 0;
	c->answering = 0;
}

/* Render the answer to the request head in c->head. */
static void render(struct httpd *h, struct hconn *c)
{
	c->head[c->in] = 0;
	char method[8] = "", path[256] = "";
	int status;
	const char *ctype = "text/plain; charset=utf-8";
	struct mbuf body = {0};
	if (sscanf(c->head, "%7[A-Z] %255s HTTP/", method, path) != 2 ||
	    (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)) {
		status = 400;
		mbuf_printf(&body, "only GET and POST are served\n");
	} else {
		char *q = strchr(path, '?');
		if (q)
			*q++ = 0;
		struct httpd_req r = {method, path, q ? q : "", c->local};
		status = h->handler(h->arg, &r, &body, &ctype);
	}
	const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 503 ? "Service Unavailable"
			   : status == 403 ? "Forbidden" : status == 405 ? "Method Not Allowed" : status == 504 ? "Gateway Timeout"
			   : "Bad Request";
	mbuf_printf(&c->out,
		    "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
		    reason, ctype, body.len);
	if (body.len)
		mbuf_put(&c->out, body.p, body.len);
	mbuf_free(&body);
	c->answering = 1;
	c->sent = 0;
}

/* Read what is there; render once the head is complete (or full, or the peer
 * stopped sending). Returns -1 when the connection is done. */
static int hc_read(struct httpd *h, struct hconn *c)
{
	for (;;) {
		ssize_t r = recv(c->fd, c->head + c->in, HTTPD_HEAD_MAX - c->in, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (r <= 0) {
			if (r == 0 && c->in) {
				render(h, c); /* a request without its blank line: answer what came */
				return 0;
			}
			return -1;
		}
		c->in += (size_t)r;
		c->head[c->in] = 0;
		if (strstr(c->head, "\r\n\r\n") || strstr(c->head, "\n\n") || c->in == HTTPD_HEAD_MAX) {
			render(h, c);
			return 0;
		}
	}
}

/* Write what the socket takes. Returns -1 when the connection is done. */
static int hc_write(struct hconn *c)
{
	while (c->sent < c->out.len) {
		ssize_t w = send(c->fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w <= 0)
			return -1;
		c->sent += (size_t)w;
	}
	return -1; /* all sent: close */
}

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return ss->ss_family == AF_UNIX;
}

const char *httpd_query(const char *query, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *p = query; p && *p;) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			size_t vl = len - nl - 1;
			if (vl >= cap)
				vl = cap - 1;
			memcpy(out, p + nl + 1, vl);
			out[vl] = 0;
			return out;
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

static void on_accept(struct httpd *h)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(h->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* the listener stays readable: stop polling it for a while
				 * rather than spin (nginx's answer) */
				log_rl(LOG_WARN, "stats endpoint: accept: %s; pausing 100 ms", strerror(errno));
				h->accept_after_ms = now_ms() + 100;
			}
			return;
		}
		struct hconn *slot = NULL, *oldest = NULL;
		for (int i = 0; i < HTTPD_MAX_CONN && !slot; i++) {
			if (h->c[i].fd < 0)
				slot = &h->c[i];
			else if (!oldest || h->c[i].opened_ms < oldest->opened_ms)
				oldest = &h->c[i];
		}
		if (!slot) {
			/* every slot taken: the oldest connection gives way */
			h->evicted++;
			log_rl(LOG_WARN, "stats endpoint: %d connections open; closing the oldest", HTTPD_MAX_CONN);
			hc_close(oldest);
			slot = oldest;
		}
		slot->fd = fd;
		slot->local = is_loopback(&ss);
		slot->opened_ms = now_ms();
		slot->deadline_ms = slot->opened_ms + HTTPD_DEADLINE_MS;
	}
}

static void *run(void *arg)
{
	struct httpd *h = arg;
	log_thread("stats");
	struct pollfd pf[HTTPD_MAX_CONN + 2];
	int map[HTTPD_MAX_CONN + 2];
	for (;;) {
		int64_t now = now_ms(), next = -1;
		nfds_t n = 0;
		int accepting = now >= h->accept_after_ms;
		if (!accepting)
			next = h->accept_after_ms;
		pf[n++] = (struct pollfd){h->fd, (short)(accepting ? POLLIN : 0), 0};
		pf[n++] = (struct pollfd){h->stop_pipe[0], POLLIN, 0};
		for (int i = 0; i < HTTPD_MAX_CONN; i++) {
			struct hconn *c = &h->c[i];
			if (c->fd < 0)
				continue;
			if (now >= c->deadline_ms) {
				h->timed_out++;
				hc_close(c);
				continue;
			}
			if (next < 0 || c->deadline_ms < next)
				next = c->deadline_ms;
			map[n] = i;
			pf[n++] = (struct pollfd){c->fd, (short)(c->answering ? POLLOUT : POLLIN), 0};
		}
		int r = poll(pf, n, next < 0 ? -1 : (int)(next - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || pf[1].revents)
			break;
		for (nfds_t k = 2; k < n; k++) {
			if (!pf[k].revents)
				continue;
			struct hconn *c = &h->c[map[k]];
			int done = 0;
			if (!c->answering)
				done = hc_read(h, c) != 0;
			if (!done && c->answering)
				done = hc_write(c) != 0;
			if (done)
				hc_close(c);
		}
		if (pf[0].revents & POLLIN)
			on_accept(h);
	}
	for (int i = 0; i < HTTPD_MAX_CONN; i++)
		hc_close(&h->c[i]);
	return NULL;
}

struct httpd *httpd_start(const struct addr *a, httpd_handler handler, void *arg, char *err, size_t errlen)
{
	struct httpd *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (int i = 0; i < HTTPD_MAX_CONN; i++)
		h->c[i].fd = -1;
	h->handler = handler;
	h->arg = arg;
	h->fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	if (h->fd < 0 || setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(h->fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(h->fd, HTTPD_BACKLOG) != 0) {
		char s[64];
		snprintf(err, errlen, "stats listener %s: %s", addr_str(a, s, sizeof s), strerror(errno));
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	getsockname(h->fd, (struct sockaddr *)&ss, &sl);
	struct addr bound = {ss, sl};
	h->port = addr_port(&bound);
	if (pipe2(h->stop_pipe, O_CLOEXEC) != 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (pthread_create(&h->thread, NULL, run, h) != 0) {
		snprintf(err, errlen, "cannot start the stats thread");
		close(h->stop_pipe[0]);
		close(h->stop_pipe[1]);
		goto fail;
	}
	return h;
fail:
	if (h->fd >= 0)
		close(h->fd);
	free(h);
	return NULL;
}

unsigned httpd_port(const struct httpd *h)
{
	return h->port;
}

void httpd_stop(struct httpd *h)
{
	if (!h)
		return;
	ssize_t w = write(h->stop_pipe[1], "x", 1);
	(void)w;
	pthread_join(h->thread, NULL);
	close(h->stop_pipe[0]);
	close(h->stop_pipe[1]);
	close(h->fd);
	free(h);
}
