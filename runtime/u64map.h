/* u64map.h: open-addressing hash map from non-zero u64 keys to u64 values.
 * Linear probing with backward-shift deletion (no tombstones), load <= 1/2,
 * doubling on growth. 16 bytes per slot. One owner thread; no locking.
 * Used for per-thread directories (user -> connection) and backend tables. */
#ifndef RUNTIME_U64MAP_H
#define RUNTIME_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct u64map_ent {
	uint64_t key; /* 0 = empty */
	uint64_t val;
};

struct u64map {
	struct u64map_ent *e;
	size_t mask; /* slots - 1 */
	size_t count;
};

/* 64-bit mixer (splitmix64 finaliser): ids in, well-spread hashes out. */
static inline uint64_t hash64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* Empty map with room for about `hint` keys. Returns 0 or -ENOMEM. */
int u64map_init(struct u64map *m, size_t hint);
void u64map_free(struct u64map *m);

/* Pointer to the value of key, or NULL. Valid until the next put/del. */
uint64_t *u64map_get(const struct u64map *m, uint64_t key);

/* Insert or replace (a zeroed or freed map is set up first). Returns 0, or
 * -ENOMEM (map unchanged), -EINVAL for key 0. */
int u64map_put(struct u64map *m, uint64_t key, uint64_t val);

/* Remove key; returns 1 if it was there. */
int u64map_del(struct u64map *m, uint64_t key);

/* Iterate: *pos starts at 0; returns the next entry or NULL. Do not put/del
 * while iterating. */
const struct u64map_ent *u64map_next(const struct u64map *m, size_t *pos);

/* Bytes of memory held. */
size_t u64map_bytes(const struct u64map *m);

#endif
