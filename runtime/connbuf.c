/* connbuf.c: connection output buffers, slot lists and tables, ring sizing (connbuf.h). */
#include "runtime/connbuf.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime/tls.h"
#include "runtime/uring.h"

struct obuf *obuf_reserve(struct obuf **op, size_t n)
{
	struct obuf *o = *op;
	if (o && o->cap - o->len >= n)
		return o;
	size_t need = (o ? o->len : 0) + n + sizeof *o, cap = 256;
	while (cap < need)
		cap *= 2;
	if (cap - sizeof *o > UINT32_MAX)
		return NULL;
	struct obuf *g = realloc(o, cap);
	if (!g)
		return NULL;
	if (!o)
		g->len = g->off = g->since = g->sealed = 0;
	g->cap = (uint32_t)(cap - sizeof *g);
	return *op = g;
}

long obuf_seal(struct obuf **op, struct tls_thread *th, struct tls_conn *tc)
{
	struct obuf *o = *op;
	size_t keep = o ? o->sealed : 0, plain = o ? o->len - o->sealed : 0;
	if (!tls_can_send(tc)) {
		if (plain)
			o->len = o->sealed;
		return -(long)plain;
	}
	if (!plain && !tls_wants_write(tc))
		return 0;
	size_t need = sizeof *o + keep + tls_seal_bound(tc, plain), cap = 256;
	while (cap < need)
		cap *= 2;
	struct obuf *g = malloc(cap);
	if (!g)
		return LONG_MIN;
	static const uint8_t none[1];
	if (keep)
		memcpy(g->data, o->data, keep);
	size_t m = tls_seal(th, tc, plain ? o->data + keep : none, plain, g->data + keep);
	if (m == 0) {
		free(g);
		return LONG_MIN;
	}
	g->off = 0;
	g->since = o ? o->since : 0;
	g->cap = (uint32_t)(cap - sizeof *g);
	g->len = g->sealed = (uint32_t)(keep + m);
	long delta = (long)g->len - (long)(o ? o->len : 0);
	free(o);
	*op = g;
	return delta;
}

long obuf_put_wire(struct obuf **op, struct tls_thread *th, struct tls_conn *tc, const uint8_t *p, size_t n)
{
	long d = 0;
	if (*op && (*op)->sealed < (*op)->len && (d = obuf_seal(op, th, tc)) == LONG_MIN)
		return -1;
	struct obuf *o = obuf_reserve(op, n);
	if (!o)
		return -1;
	memcpy(o->data + o->len, p, n);
	o->len += (uint32_t)n;
	o->sealed = o->len;
	return d + (long)n;
}

int slotlist_push(struct slotlist *l, uint32_t slot)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		uint32_t *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = slot;
	return 0;
}

void slotlist_free(struct slotlist *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

unsigned bufring_entries_for(uint64_t pool, unsigned threads, unsigned size)
{
	unsigned per = (unsigned)(pool / (threads ? threads : 1) / (size ? size : 1));
	unsigned entries = pow2_clamp(per, 64, 32768);
	while (entries > 64 && (uint64_t)entries * size * threads > pool)
		entries /= 2;
	return entries;
}

void *slot_table_map(size_t n, size_t size)
{
	void *t = mmap(NULL, n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return t == MAP_FAILED ? NULL : t;
}

void slot_table_unmap(void *t, size_t n, size_t size)
{
	if (t)
		munmap(t, n * size);
}
