/* test_srclimit.c: criterion tests of runtime/srclimit.h: what a connection
 * keeps of its peer, and the per-source connection and accept-rate counts. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

#include "runtime/srclimit.h"

/* The source of ip (of family fam), port. */
static struct src mk(int fam, const char *ip, uint16_t port)
{
	struct src s = {0};
	uint8_t a[16];
	cr_assert_eq(inet_pton(fam, ip, a), 1, "%s", ip);
	src_set(&s, fam, a, port);
	return s;
}
#define v4(ip, port) mk(AF_INET, ip, port)
#define v6(ip, port) mk(AF_INET6, ip, port)

Test(srclimit, addresses_and_their_text)
{
	char b[80];
	struct src s = v4("192.0.2.1", 5678);
	cr_assert_eq(s.fam, SRC_IPV4);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "192.0.2.1:5678");
	/* IPv4-mapped IPv6 is IPv4: the same source as the plain address */
	s = v6("::ffff:192.0.2.1", 80);
	cr_assert_eq(s.fam, SRC_IPV4);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "192.0.2.1:80");
	/* IPv6 keeps its /64 */
	s = v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 443);
	cr_assert_eq(s.fam, SRC_IPV6);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "2001:db8:1:2::/64 port 443");
	/* from a sockaddr, as accept gives it */
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
	inet_pton(AF_INET6, "::1", &sa.sin6_addr);
	src_from_sockaddr(&s, (struct sockaddr *)&sa, sizeof sa);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "::/64 port 9");
	cr_assert_eq(s.fam, SRC_IPV6);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons(7)};
	inet_pton(AF_INET, "127.0.0.1", &si.sin_addr);
	s.since = 123;
	src_from_sockaddr(&s, (struct sockaddr *)&si, sizeof si);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "127.0.0.1:7");
	cr_assert_eq(s.since, 123, "since is the caller's");
	/* short or foreign addresses are unknown */
	src_from_sockaddr(&s, (struct sockaddr *)&si, 4);
	cr_assert_eq(s.fam, SRC_UNKNOWN);
	cr_assert_str_eq(src_str(&s, b, sizeof b), "unknown");
	src_from_sockaddr(&s, NULL, 0);
	cr_assert_eq(s.fam, SRC_UNKNOWN);
}

Test(srclimit, connection_limit_counts_and_releases)
{
	struct srclim l;
	cr_assert_eq(srclim_init(&l, 1000), 0);
	struct src a = v4("203.0.113.7", 1), b = v4("203.0.113.8", 1);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(srclim_admit(&l, &a, 100, 3, 0), SRC_OK, "connection %d", i);
	cr_assert_eq(srclim_count(&l, &a), 3);
	cr_assert_eq(srclim_admit(&l, &a, 100, 3, 0), SRC_TOO_MANY);
	cr_assert_eq(srclim_count(&l, &a), 3, "a refused connection is not counted");
	cr_assert_eq(srclim_admit(&l, &b, 100, 3, 0), SRC_OK, "another source is not limited by the first");
	srclim_release(&l, &a);
	cr_assert_eq(srclim_count(&l, &a), 2);
	cr_assert_eq(srclim_admit(&l, &a, 100, 3, 0), SRC_OK, "room again after a release");
	/* no limit: counted all the same (a limit set later sees them) */
	for (int i = 0; i < 10; i++)
		cr_assert_eq(srclim_admit(&l, &a, 100, 0, 0), SRC_OK);
	cr_assert_eq(srclim_count(&l, &a), 13);
	cr_assert_eq(srclim_admit(&l, &a, 100, 5, 0), SRC_TOO_MANY);
	srclim_free(&l);
}

Test(srclimit, ipv6_limits_by_slash_64)
{
	struct srclim l;
	cr_assert_eq(srclim_init(&l, 1000), 0);
	struct src a = v6("2001:db8:1:2::1", 1), b = v6("2001:db8:1:2::ffff:2", 1), c = v6("2001:db8:1:3::1", 1);
	cr_assert_eq(srclim_admit(&l, &a, 1, 2, 0), SRC_OK);
	cr_assert_eq(srclim_admit(&l, &b, 1, 2, 0), SRC_OK);
	cr_assert_eq(srclim_admit(&l, &a, 1, 2, 0), SRC_TOO_MANY, "the same /64 shares one count");
	cr_assert_eq(srclim_admit(&l, &c, 1, 2, 0), SRC_OK, "the next /64 is another source");
	srclim_free(&l);
}

Test(srclimit, unknown_sources_are_never_limited)
{
	struct srclim l;
	cr_assert_eq(srclim_init(&l, 1000), 0);
	struct src u = {0};
	for (int i = 0; i < 100; i++)
		cr_assert_eq(srclim_admit(&l, &u, 1, 1, 1), SRC_OK);
	cr_assert_eq(srclim_count(&l, &u), 0);
	srclim_release(&l, &u); /* harmless */
	srclim_free(&l);
}

Test(srclimit, accept_rate_per_second_window)
{
	struct srclim l;
	cr_assert_eq(srclim_init(&l, 1000), 0);
	struct src a = v4("198.51.100.1", 1), b = v4("198.51.100.2", 1);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(srclim_admit(&l, &a, 5000, 0, 5), SRC_OK, "attempt %d", i);
	cr_assert_eq(srclim_admit(&l, &a, 5000, 0, 5), SRC_TOO_FAST);
	cr_assert_eq(srclim_admit(&l, &b, 5000, 0, 5), SRC_OK, "another source has its own rate");
	cr_assert_eq(srclim_count(&l, &a), 5, "only admitted connections are held");
	/* refused attempts count: still refused later in the same second */
	cr_assert_eq(srclim_admit(&l, &a, 5000, 0, 5), SRC_TOO_FAST);
	/* the next second starts a new window */
	for (int i = 0; i < 5; i++)
		cr_assert_eq(srclim_admit(&l, &a, 5001, 0, 5), SRC_OK, "attempt %d in the next second", i);
	cr_assert_eq(srclim_admit(&l, &a, 5001, 0, 5), SRC_TOO_FAST);
	/* a window 4096 s later is not mistaken for this one: it wraps, but a
	 * fresh window is recognised by its second */
	cr_assert_eq(srclim_admit(&l, &a, 5002, 0, 5), SRC_OK);
	srclim_free(&l);
}

/* The count is never below the truth, even with far more sources than
 * counters, and with many sources per counter the excess stays small. */
Test(srclimit, count_min_never_undercounts)
{
	struct srclim l;
	cr_assert_eq(srclim_init(&l, 2048), 0); /* 1024 counters per row */
	enum { N = 8000 };
	static struct src s[N];
	for (int i = 0; i < N; i++) {
		uint8_t a[4] = {10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
		src_set(&s[i], AF_INET, a, 1);
		for (int k = 0; k <= i % 3; k++)
			cr_assert_eq(srclim_admit(&l, &s[i], 1, 0, 0), SRC_OK);
	}
	uint64_t excess = 0;
	for (int i = 0; i < N; i++) {
		uint32_t c = srclim_count(&l, &s[i]);
		cr_assert_geq(c, (uint32_t)(i % 3 + 1), "source %d under-counted", i);
		excess += c - (uint32_t)(i % 3 + 1);
	}
	/* 16,000 connections over 1024 counters a row: ~16 per counter; the
	 * smaller of two is about that */
	cr_assert_lt(excess / N, 30, "mean excess %llu", (unsigned long long)(excess / N));
	for (int i = 0; i < N; i++)
		for (int k = 0; k <= i % 3; k++)
			srclim_release(&l, &s[i]);
	for (int i = 0; i < N; i++)
		cr_assert_eq(srclim_count(&l, &s[i]), 0, "source %d not back to 0", i);
	srclim_free(&l);
}

/* Threads admitting one source at once pass the limit by at most one per
 * other thread (two counters, each exact, incremented in either order). */
static struct srclim shared;
static struct src hot;
static int admitted[4];
static void *hammer(void *arg)
{
	int *n = arg;
	for (int i = 0; i < 20000; i++)
		if (srclim_admit(&shared, &hot, 1, 100, 0) == SRC_OK)
			(*n)++;
	return NULL;
}

Test(srclimit, concurrent_admits_respect_the_limit)
{
	cr_assert_eq(srclim_init(&shared, 1000), 0);
	hot = v4("192.0.2.99", 1);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, &admitted[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	int sum = admitted[0] + admitted[1] + admitted[2] + admitted[3];
	cr_assert(sum >= 100 && sum <= 103, "admitted %d with a limit of 100", sum);
	cr_assert_eq(srclim_count(&shared, &hot), (uint32_t)sum);
	srclim_free(&shared);
}
