/* httpd.c: see httpd.h. */
#include "runtime/httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "runtime/log.h"

struct httpd {
	int fd;
	int stop_pipe[2];
	unsigned port;
	pthread_t thread;
	httpd_handler handler;
	void *arg;
};

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void serve(struct httpd *h, int c)
{
	struct timeval tv = {2, 0};
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	char req[4096];
	size_t len = 0;
	while (len < sizeof req - 1) {
		ssize_t r = recv(c, req + len, sizeof req - 1 - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		req[len] = 0;
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[len] = 0;
	char path[256] = "";
	int status;
	const char *ctype = "text/plain; charset=utf-8";
	struct mbuf body = {0};
	if (sscanf(req, "GET %255s HTTP/", path) != 1) {
		status = 400;
		mbuf_printf(&body, "only GET is served\n");
	} else {
		char *q = strchr(path, '?');
		if (q)
			*q = 0;
		status = h->handler(h->arg, path, &body, &ctype);
	}
	const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 503 ? "Service Unavailable"
			   : "Bad Request";
	char head[256];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, reason, ctype, body.len);
	send_all(c, head, (size_t)n);
	if (body.len)
		send_all(c, body.p, body.len);
	mbuf_free(&body);
}

static void *run(void *arg)
{
	struct httpd *h = arg;
	log_thread("stats");
	struct pollfd pf[2] = {{h->fd, POLLIN, 0}, {h->stop_pipe[0], POLLIN, 0}};
	for (;;) {
		int r = poll(pf, 2, -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || pf[1].revents)
			break;
		if (pf[0].revents & POLLIN) {
			int c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0) {
				if (errno == EMFILE || errno == ENFILE)
					usleep(100000);
				continue;
			}
			serve(h, c);
			close(c);
		}
	}
	return NULL;
}

struct httpd *httpd_start(const struct addr *a, httpd_handler handler, void *arg, char *err, size_t errlen)
{
	struct httpd *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->handler = handler;
	h->arg = arg;
	h->fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (h->fd < 0 || setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(h->fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(h->fd, 64) != 0) {
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
