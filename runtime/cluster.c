/* cluster.c: see cluster.h. */
#include "runtime/cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/msgid.h"
#include "runtime/u64map.h"

static void owners_build(struct cluster *c);

int cluster_load(struct cluster *c, const char *path, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot open cluster file %s: %s", path, strerror(errno));
		return -1;
	}
	char line[512];
	int lineno = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char kind[32], node[32], addr[128], extra[8];
		int k = sscanf(line, "%31s %31s %127s %7s", kind, node, addr, extra);
		if (k <= 0)
			continue;
		char *end;
		unsigned long id = k >= 2 ? strtoul(node, &end, 10) : 0;
		int is_gw = strcmp(kind, "gateway") == 0;
		if ((is_gw ? k != 2 : k != 3 || strcmp(kind, "backend") != 0) || *end || id < 1 || id > MSGID_MAX_NODE) {
			snprintf(err, errlen,
				 "%s:%d: want \"backend NODE_ID IP:PORT\" or \"gateway NODE_ID\" with NODE_ID 1..%u", path,
				 lineno, MSGID_MAX_NODE);
			fclose(f);
			return -1;
		}
		if (c->kind[id] != CLUSTER_NONE) {
			snprintf(err, errlen, "%s:%d: node %lu listed twice (ids are unique across backends and gateways)",
				 path, lineno, id);
			fclose(f);
			return -1;
		}
		if (is_gw) {
			c->kind[id] = CLUSTER_GATEWAY;
			c->ngateways++;
			continue;
		}
		if (c->n == CLUSTER_MAX_BACKENDS) {
			snprintf(err, errlen, "%s:%d: more than %u backends", path, lineno, CLUSTER_MAX_BACKENDS);
			fclose(f);
			return -1;
		}
		struct cluster_node *n = &c->nodes[c->n];
		char e2[160];
		if (addr_parse(addr, &n->addr, e2, sizeof e2) != 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
			fclose(f);
			return -1;
		}
		n->node = (uint32_t)id;
		n->seed = hash64(0x6261636b656e64ull ^ id); /* depends on the node id only, not on order */
		c->n++;
		c->kind[id] = (uint16_t)c->n;
	}
	fclose(f);
	if (c->n == 0) {
		snprintf(err, errlen, "%s: no backends listed", path);
		return -1;
	}
	owners_build(c);
	return 0;
}

/* The owner of every bucket: the backend with the highest
 * hash64(bucket ^ seed) (rendezvous hashing over buckets). */
static void owners_build(struct cluster *c)
{
	for (uint32_t k = 0; k < CLUSTER_BUCKETS; k++) {
		size_t best = 0;
		uint64_t best_h = 0;
		for (size_t i = 0; i < c->n; i++) {
			uint64_t h = hash64(k ^ c->nodes[i].seed);
			if (i == 0 || h > best_h) {
				best_h = h;
				best = i;
			}
		}
		c->owner[k] = (uint16_t)best;
	}
}

size_t cluster_user_owner(const struct cluster *c, uint64_t user)
{
	return c->owner[cluster_bucket(user)];
}

int cluster_is_gateway(const struct cluster *c, uint32_t node)
{
	return node <= MSGID_MAX_NODE && c->kind[node] == CLUSTER_GATEWAY;
}

int cluster_find(const struct cluster *c, uint32_t node)
{
	if (node > MSGID_MAX_NODE)
		return -1;
	unsigned k = c->kind[node];
	return k == CLUSTER_NONE || k == CLUSTER_GATEWAY ? -1 : (int)k - 1;
}
