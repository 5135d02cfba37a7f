/* httpc.c: see httpc.h. */
#include "runtime/httpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

char *httpc_request(const struct addr *a, const char *method, const char *path, int *status)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0) {
		close(fd);
		return NULL;
	}
	char req[600];
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nContent-Length: 0\r\n\r\n", method, path);
	if (n < 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return NULL;
	}
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	for (; buf;) {
		if (len + 1 >= cap) {
			if (cap >= (16u << 20))
				break;
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
		}
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = 0;
	char *body = strstr(buf, "\r\n\r\n");
	int st = 0;
	if (!body || sscanf(buf, "HTTP/1.%*d %d", &st) != 1) {
		free(buf);
		return NULL;
	}
	*status = st;
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
}
