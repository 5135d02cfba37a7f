/* wirebuf.h: helpers shared by the parser tests (test_proto.c, test_dist.c).
 *
 * - at_guard(): copy input flush against a PROT_NONE guard page (the
 *   picohttpparser trick): its last byte is the last readable byte of the
 *   mapping, so a parser reading even one byte past `len` segfaults instead
 *   of passing by luck. The includer defines GUARD_SPAN (readable bytes in
 *   front of the guard); the map is made once per test process (criterion
 *   forks each test).
 * - struct pb: a byte builder of PB_CAP bytes (defined by the includer), with
 *   u8, varint, raw and hex-pair appenders.
 * - mkframe(): wrap a payload into a frame (L, type, payload).
 * Everything is static inline: each test file uses what it needs.
 */
#ifndef TESTS_WIREBUF_H
#define TESTS_WIREBUF_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/wire.h"

#ifndef GUARD_SPAN
#error "define GUARD_SPAN before including tests/wirebuf.h"
#endif
#ifndef PB_CAP
#error "define PB_CAP before including tests/wirebuf.h"
#endif

static uint8_t *guard_base;
static size_t guard_span;

/* Copy len bytes so that src[len-1] is the last byte before the guard page;
 * returns where they start. */
static inline const uint8_t *at_guard(const void *src, size_t len)
{
	if (!guard_base) {
		size_t pg = (size_t)sysconf(_SC_PAGESIZE);
		size_t span = (GUARD_SPAN + pg - 1) / pg * pg;
		uint8_t *m = mmap(NULL, span + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(m, MAP_FAILED, "mmap failed");
		cr_assert_eq(mprotect(m + span, pg, PROT_NONE), 0, "mprotect failed");
		guard_base = m;
		guard_span = span;
	}
	cr_assert_leq(len, guard_span, "input of %zu bytes is larger than the guarded area", len);
	uint8_t *p = guard_base + guard_span - len;
	if (len)
		memmove(p, src, len);
	return p;
}

/* A payload or a whole input under construction. Large: static, one per test. */
struct pb {
	uint8_t b[PB_CAP];
	size_t n;
};

static inline void pb_u8(struct pb *p, uint8_t v)
{
	p->b[p->n++] = v;
}

static inline void pb_uv(struct pb *p, uint64_t v)
{
	p->n = (size_t)(wire_uv_put(p->b + p->n, v) - p->b);
}

static inline void pb_raw(struct pb *p, const void *src, size_t n)
{
	memcpy(p->b + p->n, src, n);
	p->n += n;
}

/* Append bytes written as hex pairs separated by spaces ("01 7f ff"). */
static inline void pb_hex(struct pb *p, const char *hex)
{
	while (*hex) {
		if (*hex == ' ') {
			hex++;
			continue;
		}
		char pair[3] = {hex[0], hex[1], 0};
		char *end;
		unsigned long v = strtoul(pair, &end, 16);
		cr_assert(end == pair + 2, "bad hex in test input: \"%s\"", hex);
		pb_u8(p, (uint8_t)v);
		hex += 2;
	}
}

/* Wrap a payload into a frame: L (type + payload), type, payload. */
static inline size_t mkframe(uint8_t *out, uint8_t type, const uint8_t *payload, size_t plen)
{
	uint8_t *p = wire_uv_put(out, (uint64_t)plen + 1);
	*p++ = type;
	if (plen)
		memmove(p, payload, plen);
	return (size_t)(p - out) + plen;
}

#endif
