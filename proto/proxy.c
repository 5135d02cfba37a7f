/* proxy.c: see proxy.h. */
#include "proto/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";

int proxy_sniff(const uint8_t *buf, size_t len)
{
	size_t a = len < 6 ? len : 6, b = len < 12 ? len : 12;
	return (len && memcmp(buf, v1_sig, a) == 0) || (len && memcmp(buf, v2_sig, b) == 0);
}

/* A decimal port, 0..65535, no sign, no leading zero but "0" itself. */
static int port_of(const char *s, uint16_t *out)
{
	if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 5)
		return -1;
	unsigned v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

static long parse_v1(const uint8_t *buf, size_t len, struct proxy_hdr *h)
{
	/* the CRLF, within the longest line (107 bytes, CRLF included) */
	size_t end = 0, lim = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	while (end + 1 < lim && !(buf[end] == '\r' && buf[end + 1] == '\n'))
		end++;
	if (end + 1 >= lim) {
		if (len >= PROXY_V1_MAX)
			return PROXY_BAD;
		h->need = (uint32_t)len + 1;
		return PROXY_NEED_MORE;
	}
	char line[PROXY_V1_MAX + 1];
	memcpy(line, buf, end);
	line[end] = 0;
	for (size_t i = 0; i < end; i++)
		if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
			return PROXY_BAD;
	long total = (long)end + 2;
	if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == 0 || line[13] == ' ')) {
		h->local = 1; /* the rest of the line is to be ignored */
		return total;
	}
	char proto[8], src[64], dst[64], sp[8], dp[8], extra;
	if (sscanf(line, "PROXY %7s %63s %63s %7s %7s%c", proto, src, dst, sp, dp, &extra) != 5)
		return PROXY_BAD;
	/* exactly one space between fields (sscanf skips runs of them) */
	for (size_t i = 0; i + 1 < end; i++)
		if (line[i] == ' ' && line[i + 1] == ' ')
			return PROXY_BAD;
	int fam = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
	if (!fam || inet_pton(fam, src, h->src) != 1 || inet_pton(fam, dst, h->dst) != 1 || port_of(sp, &h->sport) ||
	    port_of(dp, &h->dport))
		return PROXY_BAD;
	h->family = fam;
	return total;
}

static long parse_v2(const uint8_t *buf, size_t len, struct proxy_hdr *h)
{
	if (len < 16) {
		h->need = 16;
		return PROXY_NEED_MORE;
	}
	uint8_t vc = buf[12], fp = buf[13];
	size_t body = ((size_t)buf[14] << 8) | buf[15], total = 16 + body;
	if ((vc >> 4) != 2 || (vc & 0x0f) > 1 || total > PROXY_V2_MAX)
		return PROXY_BAD;
	if (len < total) {
		h->need = (uint32_t)total;
		return PROXY_NEED_MORE;
	}
	const uint8_t *a = buf + 16;
	if ((vc & 0x0f) == 0) { /* LOCAL: the proxy's own connection (a health check) */
		h->local = 1;
		return (long)total;
	}
	if (fp == 0x00) { /* unspecified: no address (the spec: accept, use the real one) */
		h->local = 1;
		return (long)total;
	}
	/* TCP over IPv4 or IPv6: source, destination, then the two ports; UDP or
	 * unix sockets have no business on a chat listener */
	size_t al = fp == 0x11 ? 4 : fp == 0x21 ? 16 : 0;
	if (!al || body < 2 * al + 4)
		return PROXY_BAD;
	h->family = al == 4 ? AF_INET : AF_INET6;
	memcpy(h->src, a, al);
	memcpy(h->dst, a + al, al);
	h->sport = (uint16_t)((a[2 * al] << 8) | a[2 * al + 1]);
	h->dport = (uint16_t)((a[2 * al + 2] << 8) | a[2 * al + 3]);
	return (long)total; /* TLVs after the addresses are skipped */
}

long proxy_parse(const uint8_t *buf, size_t len, struct proxy_hdr *h)
{
	memset(h, 0, sizeof *h);
	if (len == 0) {
		h->need = 1;
		return PROXY_NEED_MORE;
	}
	if (!proxy_sniff(buf, len))
		return PROXY_BAD;
	if (buf[0] == 'P') {
		if (len < 6) {
			h->need = 6;
			return PROXY_NEED_MORE;
		}
		return parse_v1(buf, len, h);
	}
	if (len < 12) {
		h->need = 12;
		return PROXY_NEED_MORE;
	}
	return parse_v2(buf, len, h);
}

const char *proxy_src_str(const struct proxy_hdr *h, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	if (h->local || !h->family || !inet_ntop(h->family, h->src, ip, sizeof ip))
		snprintf(out, cap, "unknown");
	else
		snprintf(out, cap, h->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, h->sport);
	return out;
}
