/* wheel.c: see wheel.h. */
#include "runtime/wheel.h"

#include <errno.h>
#include <stdlib.h>

static inline struct wheel_node *node(const struct wheel *w, uint32_t idx)
{
	return (struct wheel_node *)(w->base + (size_t)idx * w->stride + w->offset);
}

int wheel_init(struct wheel *w, unsigned bits, void *base, size_t stride, size_t offset, uint32_t now)
{
	w->heads = calloc((size_t)1 << bits, sizeof *w->heads);
	if (!w->heads)
		return -ENOMEM;
	w->mask = (1u << bits) - 1;
	w->now = now ? now : 1;
	w->base = base;
	w->stride = stride;
	w->offset = offset;
	w->count = 0;
	w->expired = NULL;
	w->expired_cap = 0;
	return 0;
}

void wheel_free(struct wheel *w)
{
	free(w->heads);
	free(w->expired);
	w->heads = NULL;
	w->expired = NULL;
}

static void unlink_node(struct wheel *w, uint32_t idx, struct wheel_node *n)
{
	if (n->prev)
		node(w, n->prev - 1)->next = n->next;
	else
		w->heads[n->deadline & w->mask] = n->next;
	if (n->next)
		node(w, n->next - 1)->prev = n->prev;
	n->next = n->prev = 0;
	n->deadline = 0;
	w->count--;
	(void)idx;
}

void wheel_del(struct wheel *w, uint32_t idx)
{
	struct wheel_node *n = node(w, idx);
	if (n->deadline)
		unlink_node(w, idx, n);
}

void wheel_add(struct wheel *w, uint32_t idx, uint32_t deadline)
{
	struct wheel_node *n = node(w, idx);
	if (n->deadline)
		unlink_node(w, idx, n);
	if (deadline <= w->now)
		deadline = w->now + 1;
	uint32_t b = deadline & w->mask;
	n->deadline = deadline;
	n->prev = 0;
	n->next = w->heads[b];
	if (n->next)
		node(w, n->next - 1)->prev = idx + 1;
	w->heads[b] = idx + 1;
	w->count++;
}

uint32_t wheel_deadline(const struct wheel *w, uint32_t idx)
{
	return node(w, idx)->deadline;
}

/* Detach the due nodes of bucket b into w->expired[*n..]. */
static int collect(struct wheel *w, uint32_t b, uint32_t now, size_t *n)
{
	uint32_t i = w->heads[b];
	while (i) {
		struct wheel_node *nd = node(w, i - 1);
		uint32_t next = nd->next;
		if (nd->deadline <= now) {
			if (*n == w->expired_cap) {
				size_t cap = w->expired_cap ? w->expired_cap * 2 : 256;
				uint32_t *e = realloc(w->expired, cap * sizeof *e);
				if (!e)
					return -ENOMEM;
				w->expired = e;
				w->expired_cap = cap;
			}
			unlink_node(w, i - 1, nd);
			w->expired[(*n)++] = i - 1;
		}
		i = next;
	}
	return 0;
}

long wheel_advance(struct wheel *w, uint32_t now, void (*fn)(void *arg, uint32_t idx), void *arg)
{
	if (now <= w->now)
		return 0;
	size_t n = 0;
	int err = 0;
	if (now - w->now > w->mask) {
		/* a jump of a whole turn or more: every bucket may hold due nodes */
		for (uint32_t b = 0; b <= w->mask && !err; b++)
			err = collect(w, b, now, &n);
		if (!err)
			w->now = now;
	} else {
		while (w->now < now && !err) {
			err = collect(w, (w->now + 1) & w->mask, w->now + 1, &n);
			if (!err)
				w->now++;
		}
	}
	for (size_t i = 0; i < n; i++)
		fn(arg, w->expired[i]);
	return err ? err : (long)n;
}
