/* pendq.c: see pendq.h. */
#include "gateway/pendq.h"

#include <stdlib.h>

static uint64_t key_of(uint32_t othread, uint64_t oconn, uint64_t ref)
{
	/* never 0: u64map's empty slot */
	return hash64(hash64(oconn ^ ((uint64_t)othread << 40)) ^ ref) | 1;
}

int pendq_init(struct gw_pendq *q)
{
	q->v = NULL;
	q->head = q->len = q->cap = 0;
	return u64map_init(&q->keys, 64);
}

void pendq_free(struct gw_pendq *q)
{
	free(q->v);
	q->v = NULL;
	q->head = q->len = q->cap = 0;
	u64map_free(&q->keys);
}

static void key_add(struct gw_pendq *q, const struct gw_pend *p, int64_t d)
{
	uint64_t k = key_of(p->othread, p->oconn, p->ref);
	uint64_t *n = u64map_get(&q->keys, k);
	if (n) {
		*n += (uint64_t)d;
		if (*n == 0)
			u64map_del(&q->keys, k);
	} else if (d > 0) {
		u64map_put(&q->keys, k, 1); /* on failure the key is only a hint lost: answers are then ignored */
	}
}

int pendq_push(struct gw_pendq *q, const struct gw_pend *p)
{
	if (q->len == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 256;
		struct gw_pend *v = malloc(cap * sizeof *v);
		if (!v)
			return -1;
		for (size_t i = 0; i < q->len; i++)
			v[i] = q->v[(q->head + i) % q->cap];
		free(q->v);
		q->v = v;
		q->head = 0;
		q->cap = cap;
	}
	q->v[(q->head + q->len) % q->cap] = *p;
	q->len++;
	key_add(q, p, 1);
	return 0;
}

const struct gw_pend *pendq_oldest(const struct gw_pendq *q)
{
	return q->len ? &q->v[q->head] : NULL;
}

void pendq_pop(struct gw_pendq *q)
{
	if (!q->len)
		return;
	key_add(q, &q->v[q->head], -1);
	q->head = (q->head + 1) % q->cap;
	q->len--;
}

int pendq_answered(struct gw_pendq *q, uint32_t othread, uint64_t oconn, uint64_t ref, struct gw_pend *hit_out,
		   struct gw_pend *lost, size_t max, size_t *nlost)
{
	*nlost = 0;
	if (!q->len || !u64map_get(&q->keys, key_of(othread, oconn, ref)))
		return 0;
	size_t i;
	for (i = 0; i < q->len; i++) {
		const struct gw_pend *p = &q->v[(q->head + i) % q->cap];
		if (p->othread == othread && p->oconn == oconn && p->ref == ref)
			break;
	}
	if (i == q->len)
		return 0; /* a hash collision with an entry that is not this one */
	/* the entries before it lost their answers; hand back up to max of them */
	size_t give = i < max ? i : max;
	for (size_t k = 0; k < give; k++) {
		lost[k] = q->v[q->head];
		pendq_pop(q);
	}
	*nlost = give;
	/* remove the answered one (now at index i - give) */
	size_t at = i - give;
	struct gw_pend hit = q->v[(q->head + at) % q->cap];
	if (hit_out)
		*hit_out = hit;
	for (size_t j = at; j > 0; j--)
		q->v[(q->head + j) % q->cap] = q->v[(q->head + j - 1) % q->cap];
	q->v[q->head] = hit;
	pendq_pop(q);
	return 1;
}
