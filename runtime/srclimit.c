/* srclimit.c: see srclimit.h. */
#include "runtime/srclimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void src_set(struct src *s, int fam, const uint8_t *addr, uint16_t port)
{
	uint32_t since = s->since;
	memset(s, 0, sizeof *s);
	s->since = since;
	s->port = port;
	if (fam == AF_INET) {
		s->fam = SRC_IPV4;
		memcpy(s->a, addr, 4);
	} else if (fam == AF_INET6 && memcmp(addr, v4mapped, sizeof v4mapped) == 0) {
		s->fam = SRC_IPV4;
		memcpy(s->a, addr + 12, 4);
	} else if (fam == AF_INET6) {
		s->fam = SRC_IPV6;
		memcpy(s->a, addr, 8);
	}
}

void src_from_sockaddr(struct src *s, const struct sockaddr *sa, socklen_t len)
{
	if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		src_set(s, AF_INET, (const uint8_t *)&in->sin_addr, ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		src_set(s, AF_INET6, in6->sin6_addr.s6_addr, ntohs(in6->sin6_port));
	} else {
		src_set(s, 0, NULL, 0);
	}
}

const char *src_str(const struct src *s, char *out, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	if (s->fam == SRC_IPV4 && inet_ntop(AF_INET, s->a, a, sizeof a)) {
		snprintf(out, cap, "%s:%u", a, s->port);
	} else if (s->fam == SRC_IPV6) {
		uint8_t full[16] = {0};
		memcpy(full, s->a, 8);
		if (inet_ntop(AF_INET6, full, a, sizeof a))
			snprintf(out, cap, "%s/64 port %u", a, s->port);
		else
			snprintf(out, cap, "unknown");
	} else {
		snprintf(out, cap, "unknown");
	}
	return out;
}

int srclim_init(struct srclim *l, uint64_t capacity)
{
	memset(l, 0, sizeof *l);
	if (sodium_init() < 0)
		return -1;
	uint64_t want = capacity / 2, n = 1024;
	while (n < want && n < (1u << 22))
		n <<= 1;
	l->mask = (uint32_t)n - 1;
	l->conns = calloc(2 * n, sizeof *l->conns);
	l->tries = calloc(2 * n, sizeof *l->tries);
	if (!l->conns || !l->tries) {
		srclim_free(l);
		return -1;
	}
	randombytes_buf(l->key, sizeof l->key);
	return 0;
}

void srclim_free(struct srclim *l)
{
	free(l->conns);
	free(l->tries);
	l->conns = l->tries = NULL;
}

/* The source's counter in each row. */
static void slots(const struct srclim *l, const struct src *s, uint32_t *i0, uint32_t *i1)
{
	uint8_t in[9], h[crypto_shorthash_BYTES];
	in[0] = s->fam;
	memcpy(in + 1, s->a, 8);
	crypto_shorthash(h, in, sizeof in, l->key);
	uint32_t x, y;
	memcpy(&x, h, 4);
	memcpy(&y, h + 4, 4);
	*i0 = x & l->mask;
	*i1 = l->mask + 1 + (y & l->mask);
}

#define TRY_COUNT_BITS 20u
#define TRY_COUNT_MAX ((1u << TRY_COUNT_BITS) - 1)

/* One more attempt in this second's window of counter *p; returns the
 * attempts in the window so far. */
static uint32_t try_add(uint32_t *p, uint32_t window)
{
	uint32_t v = __atomic_load_n(p, __ATOMIC_RELAXED), nv;
	do {
		uint32_t n = (v >> TRY_COUNT_BITS) == window ? (v & TRY_COUNT_MAX) : 0;
		if (n < TRY_COUNT_MAX)
			n++;
		nv = window << TRY_COUNT_BITS | n;
	} while (!__atomic_compare_exchange_n(p, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return nv & TRY_COUNT_MAX;
}

enum src_verdict srclim_admit(struct srclim *l, const struct src *s, uint32_t now_s, uint32_t max_conns,
			      uint32_t max_rate)
{
	if (s->fam == SRC_UNKNOWN || !l->conns)
		return SRC_OK;
	uint32_t i0, i1, window = now_s & 0xfffu;
	slots(l, s, &i0, &i1);
	uint32_t t0 = try_add(&l->tries[i0], window), t1 = try_add(&l->tries[i1], window);
	if (max_rate && (t0 < t1 ? t0 : t1) > max_rate)
		return SRC_TOO_FAST;
	/* count first, then look: threads admitting the same source at once
	 * do not all slip under the limit (each counter is exact; taken in
	 * either order, at most one per other thread gets past it) */
	uint32_t c0 = __atomic_add_fetch(&l->conns[i0], 1, __ATOMIC_RELAXED);
	uint32_t c1 = __atomic_add_fetch(&l->conns[i1], 1, __ATOMIC_RELAXED);
	if (max_conns && (c0 < c1 ? c0 : c1) > max_conns) {
		__atomic_sub_fetch(&l->conns[i0], 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&l->conns[i1], 1, __ATOMIC_RELAXED);
		return SRC_TOO_MANY;
	}
	return SRC_OK;
}

void srclim_release(struct srclim *l, const struct src *s)
{
	if (s->fam == SRC_UNKNOWN || !l->conns)
		return;
	uint32_t i0, i1;
	slots(l, s, &i0, &i1);
	__atomic_sub_fetch(&l->conns[i0], 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&l->conns[i1], 1, __ATOMIC_RELAXED);
}

uint32_t srclim_count(const struct srclim *l, const struct src *s)
{
	if (s->fam == SRC_UNKNOWN || !l->conns)
		return 0;
	uint32_t i0, i1;
	slots(l, s, &i0, &i1);
	uint32_t c0 = __atomic_load_n(&l->conns[i0], __ATOMIC_RELAXED), c1 = __atomic_load_n(&l->conns[i1], __ATOMIC_RELAXED);
	return c0 < c1 ? c0 : c1;
}
