/* addr.c: see addr.h. */
#include "runtime/addr.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *p, unsigned *port)
{
	char *end;
	if (!*p)
		return -1;
	unsigned long v = strtoul(p, &end, 10);
	if (*end || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

static int parse_ip(const char *host, unsigned port, struct addr *a)
{
	memset(a, 0, sizeof *a);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
	if (!*host || strcmp(host, "*") == 0) {
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_ANY);
		s4->sin_port = htons((uint16_t)port);
		a->len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		a->len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		a->len = sizeof *s6;
		return 0;
	}
	return -1;
}

int addr_parse(const char *s, struct addr *a, char *err, size_t errlen)
{
	char host[128];
	const char *colon;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close == s + 1 || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host)
			goto bad;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = 0;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof host || memchr(s, ':', (size_t)(colon - s)))
			goto bad; /* an IPv6 address needs brackets: "fe80::1:2" is ambiguous */
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	unsigned port;
	if (parse_port(colon + 1, &port) != 0 || parse_ip(host, port, a) != 0)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "bad address '%s' (want IP:PORT, [IPv6]:PORT or :PORT)", s);
	return -1;
}

int addr_parse_host(const char *s, struct addr *a, char *err, size_t errlen)
{
	if (parse_ip(s, 0, a) != 0 || !*s) {
		snprintf(err, errlen, "bad IP address '%s'", s);
		return -1;
	}
	return 0;
}

const char *addr_str(const struct addr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
	}
	return buf;
}

unsigned addr_port(const struct addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

void addr_set_port(struct addr *a, unsigned port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
}

int addr_parse_v4_range(const char *s, uint32_t *first, uint32_t *count, char *err, size_t errlen)
{
	char buf[64];
	struct in_addr a, b;
	if (strlen(s) >= sizeof buf)
		goto bad;
	strcpy(buf, s);
	char *dash = strchr(buf, '-'), *slash = strchr(buf, '/');
	if (dash) {
		*dash = 0;
		if (inet_pton(AF_INET, buf, &a) != 1 || inet_pton(AF_INET, dash + 1, &b) != 1 ||
		    ntohl(b.s_addr) < ntohl(a.s_addr))
			goto bad;
		if (ntohl(b.s_addr) - ntohl(a.s_addr) == UINT32_MAX)
			goto bad; /* the whole address space: the count would not fit */
		*first = ntohl(a.s_addr);
		*count = ntohl(b.s_addr) - ntohl(a.s_addr) + 1;
		return 0;
	}
	if (slash) {
		*slash = 0;
		char *end;
		unsigned long bits = strtoul(slash + 1, &end, 10);
		if (*end || bits < 8 || bits > 32 || inet_pton(AF_INET, buf, &a) != 1)
			goto bad;
		uint32_t n = bits == 32 ? 1u : (1u << (32 - bits));
		*first = ntohl(a.s_addr) & ~(n - 1);
		*count = n;
		return 0;
	}
	if (inet_pton(AF_INET, buf, &a) != 1)
		goto bad;
	*first = ntohl(a.s_addr);
	*count = 1;
	return 0;
bad:
	snprintf(err, errlen, "bad IPv4 range '%s' (want A.B.C.D, A.B.C.D-E.F.G.H or A.B.C.D/NN)", s);
	return -1;
}
