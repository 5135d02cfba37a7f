/* test_addr.c: criterion unit tests of address parsing and formatting
 * (runtime/addr.h).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "runtime/addr.h"

static char ERR[256];

static struct addr parse_ok(const char *s)
{
	struct addr a;
	ERR[0] = 0;
	cr_assert_eq(addr_parse(s, &a, ERR, sizeof ERR), 0, "'%s' rejected: %s", s, ERR);
	return a;
}

static void parse_bad(const char *s)
{
	struct addr a;
	ERR[0] = 0;
	cr_assert_eq(addr_parse(s, &a, ERR, sizeof ERR), -1, "'%s' accepted", s);
	cr_assert_not_null(strstr(ERR, "bad address"), "'%s': error '%s'", s, ERR);
	cr_assert_not_null(strstr(ERR, s), "error does not quote the input: %s", ERR);
}

static uint32_t v4(const struct addr *a)
{
	cr_assert_eq(a->ss.ss_family, AF_INET);
	return ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr);
}

static const char *str(const struct addr *a)
{
	static char buf[64];
	return addr_str(a, buf, sizeof buf);
}

/* ---- addr_parse -------------------------------------------------------------------- */

Test(addr, ipv4)
{
	struct addr a = parse_ok("1.2.3.4:80");
	cr_assert_eq(a.len, sizeof(struct sockaddr_in));
	cr_assert_eq(v4(&a), 0x01020304u);
	cr_assert_eq(addr_port(&a), 80);
	cr_assert_str_eq(str(&a), "1.2.3.4:80");
	a = parse_ok("255.255.255.255:65535");
	cr_assert_eq(v4(&a), 0xffffffffu);
	cr_assert_eq(addr_port(&a), 65535);
	a = parse_ok("127.0.0.1:0");
	cr_assert_eq(addr_port(&a), 0);
	cr_assert_eq(v4(&a), 0x7f000001u);
}

Test(addr, ipv6_in_brackets)
{
	struct addr a = parse_ok("[::1]:80");
	cr_assert_eq(a.ss.ss_family, AF_INET6);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in6));
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a.ss;
	cr_assert(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
	cr_assert_eq(addr_port(&a), 80);
	cr_assert_str_eq(str(&a), "[::1]:80");
	a = parse_ok("[2001:db8::a:b]:443");
	cr_assert_eq(addr_port(&a), 443);
	cr_assert_str_eq(str(&a), "[2001:db8::a:b]:443");
	a = parse_ok("[::]:9");
	cr_assert(IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a.ss)->sin6_addr));
	cr_assert_str_eq(str(&a), "[::]:9");
	a = parse_ok("[::ffff:10.1.2.3]:7");
	cr_assert_eq(a.ss.ss_family, AF_INET6);
	cr_assert_str_eq(str(&a), "[::ffff:10.1.2.3]:7");
	/* the longest text form fits the documented 64-byte buffer */
	a = parse_ok("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	cr_assert_str_eq(str(&a), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

Test(addr, any_address_forms)
{
	struct addr a = parse_ok(":80");
	cr_assert_eq(v4(&a), INADDR_ANY);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in));
	cr_assert_eq(addr_port(&a), 80);
	cr_assert_str_eq(str(&a), "0.0.0.0:80");
	a = parse_ok("*:8080");
	cr_assert_eq(v4(&a), INADDR_ANY);
	cr_assert_eq(addr_port(&a), 8080);
	cr_assert_str_eq(str(&a), "0.0.0.0:8080");
}

Test(addr, bad_ports)
{
	parse_bad("1.2.3.4:");
	parse_bad("1.2.3.4:65536");
	parse_bad("1.2.3.4:99999999999999999999999");
	parse_bad("1.2.3.4:-1");
	parse_bad("1.2.3.4:80x");
	parse_bad("1.2.3.4:8 0");
	parse_bad("1.2.3.4:http");
	parse_bad(":");
	parse_bad("*:");
	parse_bad("[::1]:");
	parse_bad("[::1]:70000");
	parse_bad(":65536");
}

Test(addr, missing_port_and_bad_hosts)
{
	parse_bad("1.2.3.4");
	parse_bad("");
	parse_bad("[::1]");
	parse_bad("[::1]80");
	parse_bad("[::1:80");
	parse_bad("localhost:80"); /* numeric only, no DNS */
	parse_bad("256.1.1.1:80");
	parse_bad("1.2.3:80");
	parse_bad("1.2.3.4.5:80");
	parse_bad("[zz::1]:80");
	parse_bad("**:80");
	/* a host longer than the internal buffer */
	char longhost[300];
	memset(longhost, '1', sizeof longhost);
	strcpy(longhost + 200, ":80");
	parse_bad(longhost);
	char longv6[300] = "[";
	memset(longv6 + 1, ':', 200);
	strcpy(longv6 + 201, "]:80");
	parse_bad(longv6);
}

Test(addr, str_round_trip)
{
	const char *in[] = {"1.2.3.4:80", "0.0.0.0:1", "10.255.0.7:65535", "[::1]:80", "[fe80::1:2:3]:12345",
			    "[2001:db8:0:1::]:5"};
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		struct addr a = parse_ok(in[i]);
		cr_assert_str_eq(str(&a), in[i]);
		struct addr b = parse_ok(str(&a));
		cr_assert_eq(a.len, b.len);
		cr_assert_eq(memcmp(&a.ss, &b.ss, a.len), 0, "%s: parse(str(a)) != a", in[i]);
	}
}

Test(addr, str_truncates_safely)
{
	struct addr a = parse_ok("[2001:db8::1]:443");
	char buf[8];
	memset(buf, 'x', sizeof buf);
	cr_assert_eq(addr_str(&a, buf, sizeof buf), buf);
	cr_assert_eq(buf[7], 0);
	cr_assert_str_eq(buf, "[2001:d");
}

Test(addr, port_get_set)
{
	struct addr a = parse_ok("1.2.3.4:80");
	addr_set_port(&a, 443);
	cr_assert_eq(addr_port(&a), 443);
	cr_assert_str_eq(str(&a), "1.2.3.4:443");
	cr_assert_eq(v4(&a), 0x01020304u);
	a = parse_ok("[::1]:80");
	addr_set_port(&a, 65535);
	cr_assert_eq(addr_port(&a), 65535);
	cr_assert_str_eq(str(&a), "[::1]:65535");
	/* network byte order in the sockaddr */
	addr_set_port(&a, 0x1234);
	cr_assert_eq(((const struct sockaddr_in6 *)&a.ss)->sin6_port, htons(0x1234));
}

/* ---- addr_parse_host --------------------------------------------------------------------- */

Test(addr, parse_host)
{
	struct addr a;
	cr_assert_eq(addr_parse_host("10.0.0.1", &a, ERR, sizeof ERR), 0, "%s", ERR);
	cr_assert_eq(v4(&a), 0x0a000001u);
	cr_assert_eq(addr_port(&a), 0);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in));
	cr_assert_eq(addr_parse_host("::1", &a, ERR, sizeof ERR), 0, "%s", ERR);
	cr_assert_eq(a.ss.ss_family, AF_INET6);
	cr_assert_eq(addr_port(&a), 0);
	cr_assert_str_eq(str(&a), "[::1]:0");
	const char *bad[] = {"", "1.2.3.4:80", "host", "1.2.3", "::g"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ERR[0] = 0;
		cr_assert_eq(addr_parse_host(bad[i], &a, ERR, sizeof ERR), -1, "'%s' accepted", bad[i]);
		cr_assert_not_null(strstr(ERR, "bad IP address"), "%s", ERR);
	}
}

/* ---- addr_parse_v4_range ---------------------------------------------------------------- */

static void range_ok(const char *s, uint32_t first, uint32_t count)
{
	uint32_t f = 0xdeadbeef, c = 0xdeadbeef;
	ERR[0] = 0;
	cr_assert_eq(addr_parse_v4_range(s, &f, &c, ERR, sizeof ERR), 0, "'%s' rejected: %s", s, ERR);
	cr_assert_eq(f, first, "'%s': first %#x, want %#x", s, f, first);
	cr_assert_eq(c, count, "'%s': count %u, want %u", s, c, count);
}

static void range_bad(const char *s)
{
	uint32_t f = 0, c = 0;
	ERR[0] = 0;
	cr_assert_eq(addr_parse_v4_range(s, &f, &c, ERR, sizeof ERR), -1, "'%s' accepted (first %#x count %u)", s, f, c);
	cr_assert_not_null(strstr(ERR, "bad IPv4 range"), "%s", ERR);
}

Test(addr, v4_range_dash)
{
	range_ok("10.0.0.1-10.0.0.10", 0x0a000001u, 10);
	range_ok("10.0.0.5-10.0.0.5", 0x0a000005u, 1);
	range_ok("10.0.0.250-10.0.1.5", 0x0a0000fau, 12); /* across an octet */
	range_ok("0.0.0.0-0.0.255.255", 0, 65536);
	range_bad("10.0.0.5-10.0.0.4"); /* backwards */
	range_bad("10.0.0.1-");
	range_bad("-10.0.0.1");
	range_bad("10.0.0.1-10.0.0");
	range_bad("10.0.0.1-10.0.0.300");
	range_bad("10.0.0.1--10.0.0.2");
	range_bad("10.0.0.1 - 10.0.0.2");
}

Test(addr, v4_range_prefix)
{
	range_ok("10.0.0.0/24", 0x0a000000u, 256);
	range_ok("10.0.0.77/24", 0x0a000000u, 256); /* host bits masked off */
	range_ok("192.168.1.1/32", 0xc0a80101u, 1);
	range_ok("192.168.1.3/31", 0xc0a80102u, 2);
	range_ok("10.1.2.3/8", 0x0a000000u, 1u << 24);
	range_ok("172.16.5.4/12", 0xac100000u, 1u << 20);
	range_bad("10.0.0.0/7"); /* wider than /8 is refused */
	range_bad("10.0.0.0/0");
	range_bad("10.0.0.0/33");
	range_bad("10.0.0.0/");
	range_bad("10.0.0.0/24x");
	range_bad("10.0.0.0/-1");
	range_bad("10.0.0/24");
	range_bad("/24");
}

Test(addr, v4_range_single_and_junk)
{
	range_ok("1.2.3.4", 0x01020304u, 1);
	range_ok("255.255.255.255", 0xffffffffu, 1);
	range_bad("");
	range_bad("1.2.3");
	range_bad("::1");
	range_bad("a.b.c.d");
	range_bad("1.2.3.4:80");
	char longs[100];
	memset(longs, '1', sizeof longs - 1);
	longs[sizeof longs - 1] = 0;
	range_bad(longs);
}

/* Regression (fixed; was a bug in runtime/addr.c addr_parse_v4_range): the full space "0.0.0.0-
 * 255.255.255.255" is 2^32 addresses, which a uint32_t count cannot hold:
 * it returns 0 with count = 0 (0xffffffff - 0 + 1 wraps). Any caller that
 * loops `for (i = 0; i < count; i++)` or divides by count misbehaves. Should
 * be refused (or the count widened). Disabled until addr.c decides. */
Test(addr, v4_range_full_space_does_not_wrap)
{
	uint32_t f = 0, c = 0;
	int rc = addr_parse_v4_range("0.0.0.0-255.255.255.255", &f, &c, ERR, sizeof ERR);
	cr_assert(rc == -1 || c != 0, "accepted with count 0");
}

/* Regression (fixed; was a bug in runtime/addr.c addr_parse, non-bracket branch): an IPv6 address
 * without brackets is split at its last colon and accepted, so
 * "fe80::1:2" parses as [fe80::1]:2 and "::1:80" as [::1]:80, silently
 * turning a mistyped address into a different host and port. Also "[]:80"
 * is taken as the IPv4 any address. The header lists the accepted forms;
 * IPv6 needs brackets. Disabled until addr.c refuses these. */
Test(addr, unbracketed_ipv6_is_refused)
{
	parse_bad("fe80::1:2");
	parse_bad("::1:80");
	parse_bad("2001:db8::1:443");
	parse_bad("[]:80");
}
