/* u64map.c: see u64map.h. */
#include "runtime/u64map.h"

#include <errno.h>
#include <stdlib.h>

int u64map_init(struct u64map *m, size_t hint)
{
	size_t slots = 16;
	while (slots < hint * 2)
		slots *= 2;
	m->e = calloc(slots, sizeof *m->e);
	if (!m->e)
		return -ENOMEM;
	m->mask = slots - 1;
	m->count = 0;
	return 0;
}

void u64map_free(struct u64map *m)
{
	free(m->e);
	m->e = NULL;
	m->mask = 0;
	m->count = 0;
}

uint64_t *u64map_get(const struct u64map *m, uint64_t key)
{
	if (!key || !m->e)
		return NULL;
	for (size_t i = hash64(key) & m->mask;; i = (i + 1) & m->mask) {
		if (m->e[i].key == key)
			return &m->e[i].val;
		if (!m->e[i].key)
			return NULL;
	}
}

static void insert(struct u64map_ent *e, size_t mask, uint64_t key, uint64_t val)
{
	size_t i = hash64(key) & mask;
	while (e[i].key && e[i].key != key)
		i = (i + 1) & mask;
	e[i].key = key;
	e[i].val = val;
}

static int grow(struct u64map *m)
{
	size_t slots = (m->mask + 1) * 2;
	struct u64map_ent *n = calloc(slots, sizeof *n);
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i <= m->mask; i++)
		if (m->e[i].key)
			insert(n, slots - 1, m->e[i].key, m->e[i].val);
	free(m->e);
	m->e = n;
	m->mask = slots - 1;
	return 0;
}

int u64map_put(struct u64map *m, uint64_t key, uint64_t val)
{
	if (!key)
		return -EINVAL;
	if (!m->e && u64map_init(m, 16) != 0) /* a zeroed or freed map starts over */
		return -ENOMEM;
	uint64_t *v = u64map_get(m, key);
	if (v) {
		*v = val;
		return 0;
	}
	if ((m->count + 1) * 2 > m->mask + 1 && grow(m) != 0)
		return -ENOMEM;
	insert(m->e, m->mask, key, val);
	m->count++;
	return 0;
}

int u64map_del(struct u64map *m, uint64_t key)
{
	if (!key || !m->e)
		return 0;
	size_t i = hash64(key) & m->mask;
	while (m->e[i].key != key) {
		if (!m->e[i].key)
			return 0;
		i = (i + 1) & m->mask;
	}
	/* backward shift: move later entries of the probe run into the hole */
	size_t hole = i;
	for (size_t j = (i + 1) & m->mask; m->e[j].key; j = (j + 1) & m->mask) {
		size_t home = hash64(m->e[j].key) & m->mask;
		/* can e[j] move to hole? only if hole lies cyclically in [home, j) */
		if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
			m->e[hole] = m->e[j];
			hole = j;
		}
	}
	m->e[hole].key = 0;
	m->e[hole].val = 0;
	m->count--;
	return 1;
}

const struct u64map_ent *u64map_next(const struct u64map *m, size_t *pos)
{
	if (!m->e)
		return NULL;
	while (*pos <= m->mask) {
		const struct u64map_ent *e = &m->e[(*pos)++];
		if (e->key)
			return e;
	}
	return NULL;
}

size_t u64map_bytes(const struct u64map *m)
{
	return m->e ? (m->mask + 1) * sizeof *m->e : 0;
}
