/* test_proxy.c: criterion unit tests of the PROXY protocol header parser
 * (proto/proxy.h): versions 1 and 2 as HAProxy's spec has them, every cut
 * of a header asks for more, and what is out of spec is refused. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/proxy.h"

static long parse(const void *p, size_t n, struct proxy_hdr *h)
{
	return proxy_parse((const uint8_t *)p, n, h);
}

/* Every strict prefix of a header is NEED_MORE, asking for more than it has. */
static void prefixes_need_more(const void *p, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		struct proxy_hdr h;
		cr_assert_eq(parse(p, k, &h), PROXY_NEED_MORE, "prefix of %zu of %zu bytes", k, n);
		cr_assert_gt(h.need, k);
		cr_assert_leq(h.need, n, "prefix %zu asks for %u of a %zu-byte header", k, h.need, n);
	}
}

Test(proxy, v1_tcp4_and_tcp6)
{
	struct proxy_hdr h;
	char s[64];
	const char v4[] = "PROXY TCP4 192.168.0.1 10.0.0.11 56324 443\r\nLOGIN...";
	long n = parse(v4, sizeof v4 - 1, &h);
	cr_assert_eq(n, (long)strlen("PROXY TCP4 192.168.0.1 10.0.0.11 56324 443\r\n"));
	cr_assert_eq(h.family, AF_INET);
	cr_assert_eq(h.sport, 56324);
	cr_assert_eq(h.dport, 443);
	cr_assert_str_eq(proxy_src_str(&h, s, sizeof s), "192.168.0.1:56324");
	prefixes_need_more(v4, (size_t)n);
	const char v6[] = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
	cr_assert_eq(parse(v6, sizeof v6 - 1, &h), (long)sizeof v6 - 1);
	cr_assert_eq(h.family, AF_INET6);
	cr_assert_eq(h.dport, 65535);
	cr_assert_str_eq(proxy_src_str(&h, s, sizeof s), "[2001:db8::1]:0");
	const char unk[] = "PROXY UNKNOWN whatever follows\r\n";
	cr_assert_eq(parse(unk, sizeof unk - 1, &h), (long)sizeof unk - 1);
	cr_assert(h.local);
	cr_assert_str_eq(proxy_src_str(&h, s, sizeof s), "unknown");
}

Test(proxy, v1_refusals)
{
	static const char *const bad[] = {
		"PROXY TCP4 192.168.0.1 10.0.0.11 65536 443\r\n", /* port range */
		"PROXY TCP4 192.168.0.1 10.0.0.11 056 443\r\n",   /* leading zero */
		"PROXY TCP4 192.168.0.1 10.0.0.11 -1 443\r\n",
		"PROXY TCP4 192.168.0.1  10.0.0.11 1 443\r\n",    /* two spaces */
		"PROXY TCP4 ::1 10.0.0.11 1 2\r\n",               /* family and address disagree */
		"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",           /* a field too many */
		"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
		"PROXY TCP4 1.2.3.\xff 1.2.3.4 1 2\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXX TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
	};
	struct proxy_hdr h;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(parse(bad[i], strlen(bad[i]), &h), PROXY_BAD, "accepted: %s", bad[i]);
	/* no CRLF within the longest line (107 bytes) */
	char long_line[200];
	memset(long_line, 'x', sizeof long_line);
	memcpy(long_line, "PROXY UNKNOWN ", 14);
	cr_assert_eq(parse(long_line, 106, &h), PROXY_NEED_MORE);
	cr_assert_eq(parse(long_line, sizeof long_line, &h), PROXY_BAD);
	memcpy(long_line + 105, "\r\n", 2);
	cr_assert_eq(parse(long_line, sizeof long_line, &h), 107, "a 107-byte line is the longest allowed");
}

static size_t v2(uint8_t *b, uint8_t vc, uint8_t fp, const uint8_t *body, size_t len)
{
	memcpy(b, "\r\n\r\n\0\r\nQUIT\n", 12);
	b[12] = vc;
	b[13] = fp;
	b[14] = (uint8_t)(len >> 8);
	b[15] = (uint8_t)len;
	memcpy(b + 16, body, len);
	return 16 + len;
}

Test(proxy, v2_families_local_and_tlvs)
{
	uint8_t b[600], body[300];
	struct proxy_hdr h;
	char s[64];
	static const uint8_t a4[12] = {10, 1, 2, 3, 192, 168, 0, 1, 0x1f, 0x90, 0x01, 0xbb};
	size_t n = v2(b, 0x21, 0x11, a4, sizeof a4);
	cr_assert_eq(parse(b, n, &h), (long)n);
	cr_assert_eq(h.family, AF_INET);
	cr_assert_str_eq(proxy_src_str(&h, s, sizeof s), "10.1.2.3:8080");
	cr_assert_eq(h.dport, 443);
	prefixes_need_more(b, n);
	uint8_t a6[36] = {0};
	a6[15] = 1; /* ::1 */
	a6[32] = 0x12, a6[33] = 0x34;
	n = v2(b, 0x21, 0x21, a6, sizeof a6);
	cr_assert_eq(parse(b, n, &h), (long)n);
	cr_assert_str_eq(proxy_src_str(&h, s, sizeof s), "[::1]:4660");
	/* TLVs after the addresses are skipped, and count in the size */
	memcpy(body, a4, sizeof a4);
	memset(body + sizeof a4, 0x04, 40);
	n = v2(b, 0x21, 0x11, body, sizeof a4 + 40);
	cr_assert_eq(parse(b, n + 5, &h), (long)n, "the header ends where its length says");
	/* LOCAL (a health check by the proxy itself), UNSPEC */
	n = v2(b, 0x20, 0x00, body, 0);
	cr_assert_eq(parse(b, n, &h), 16);
	cr_assert(h.local);
	n = v2(b, 0x21, 0x00, body, 0);
	cr_assert_eq(parse(b, n, &h), 16);
	cr_assert(h.local);
}

Test(proxy, v2_refusals)
{
	uint8_t b[70000], body[600] = {0};
	struct proxy_hdr h;
	size_t n = v2(b, 0x11, 0x11, body, 12); /* version 1 in the v2 format */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x22, 0x11, body, 12); /* command 2 */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x21, 0x12, body, 12); /* UDP */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x21, 0x31, body, 216); /* unix sockets */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x21, 0x11, body, 11); /* too short for IPv4 */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x21, 0x21, body, 35); /* too short for IPv6 */
	cr_assert_eq(parse(b, n, &h), PROXY_BAD);
	n = v2(b, 0x21, 0x11, body, 500); /* longer than this gateway takes */
	cr_assert_eq(parse(b, 16, &h), PROXY_BAD, "the length is refused as soon as it is known");
	b[3] = 0;                          /* a broken signature */
	cr_assert_eq(parse(b, 16, &h), PROXY_BAD);
}

Test(proxy, sniff_tells_headers_from_frames)
{
	cr_assert(proxy_sniff((const uint8_t *)"PR", 2));
	cr_assert(proxy_sniff((const uint8_t *)"\r\n\r\n\0\r", 6));
	/* a LOGIN of 80 bytes starts with 'P', then its type 0x01 */
	cr_assert(!proxy_sniff((const uint8_t *)"P\x01", 2));
	cr_assert(!proxy_sniff((const uint8_t *)"\r\x01", 2));
	struct proxy_hdr h;
	cr_assert_eq(parse("P\x01", 2, &h), PROXY_BAD);
	cr_assert_eq(parse("", 0, &h), PROXY_NEED_MORE);
}
