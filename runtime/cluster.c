/* cluster.c: see cluster.h. */
#include "runtime/cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/msgid.h"
#include "runtime/u64map.h"

static void owners_build(struct cluster *c);

/* Whether two addresses name the same host (ports aside). */
static int same_host(const struct addr *a, const struct addr *b)
{
	if (a->ss.ss_family != b->ss.ss_family)
		return 0;
	if (a->ss.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)&b->ss)->sin_addr.s_addr;
	if (a->ss.ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr,
			      &((const struct sockaddr_in6 *)&b->ss)->sin6_addr, sizeof(struct in6_addr)) == 0;
	return 0;
}

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
		char kind[32], node[32], addr[128], tkw[16], tn[16], extra[8];
		int k = sscanf(line, "%31s %31s %127s %15s %15s %7s", kind, node, addr, tkw, tn, extra);
		if (k <= 0)
			continue;
		char *end, *tend = NULL;
		unsigned long id = k >= 2 ? strtoul(node, &end, 10) : 0;
		unsigned long threads = k == 5 ? strtoul(tn, &tend, 10) : 1;
		int is_gw = strcmp(kind, "gateway") == 0;
		if ((is_gw ? k != 2 : (k != 3 && k != 5) || strcmp(kind, "backend") != 0) || *end || id < 1 ||
		    id > MSGID_MAX_NODE ||
		    (k == 5 && (strcmp(tkw, "threads") != 0 || *tend || threads < 1 || threads > CLUSTER_MAX_THREADS))) {
			snprintf(err, errlen,
				 "%s:%d: want \"backend NODE_ID IP:PORT [threads N]\" or \"gateway NODE_ID\" with NODE_ID 1..%u "
				 "and N 1..%u",
				 path, lineno, MSGID_MAX_NODE, CLUSTER_MAX_THREADS);
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
		unsigned p0 = addr_port(&n->addr), p1 = p0 + (unsigned)threads - 1;
		if (p1 > 65535) {
			snprintf(err, errlen, "%s:%d: %lu threads need ports %u..%u", path, lineno, threads, p0, p1);
			fclose(f);
			return -1;
		}
		for (size_t j = 0; j < c->n; j++) {
			const struct cluster_node *o = &c->nodes[j];
			unsigned q0 = addr_port(&o->addr), q1 = q0 + o->threads - 1;
			if (same_host(&n->addr, &o->addr) && p0 <= q1 && q0 <= p1) {
				snprintf(err, errlen, "%s:%d: ports %u..%u of backend %lu overlap ports %u..%u of backend %u",
					 path, lineno, p0, p1, id, q0, q1, o->node);
				fclose(f);
				return -1;
			}
		}
		if (c->nlinks + threads > CLUSTER_MAX_LINKS) {
			snprintf(err, errlen, "%s:%d: more than %u backend threads in all", path, lineno, CLUSTER_MAX_LINKS);
			fclose(f);
			return -1;
		}
		n->node = (uint32_t)id;
		n->seed = hash64(0x6261636b656e64ull ^ id); /* depends on the node id only, not on order */
		n->threads = (uint32_t)threads;
		n->link0 = (uint32_t)c->nlinks;
		for (unsigned long t = 0; t < threads; t++)
			c->link_node[c->nlinks++] = (uint16_t)c->n;
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

uint32_t cluster_user_link(const struct cluster *c, uint64_t user)
{
	const struct cluster_node *n = &c->nodes[c->owner[cluster_bucket(user)]];
	return n->link0 + cluster_user_thread(user, n->threads);
}

int cluster_msg_link(const struct cluster *c, uint64_t smid)
{
	int i = cluster_find(c, msgid_node(smid));
	if (i < 0)
		return -1;
	/* a thread count that is no power of two leaves thread numbers no
	 * thread has: such an id was made by nobody (a client may send anything) */
	unsigned t = msgid_thread(smid, c->nodes[i].threads);
	return t < c->nodes[i].threads ? (int)(c->nodes[i].link0 + t) : -1;
}

int cluster_group_link(const struct cluster *c, uint64_t gid)
{
	int i = cluster_find(c, cluster_group_node(gid));
	if (i < 0)
		return -1;
	uint64_t counter = gid & CLUSTER_GID_COUNTER_MAX;
	return (int)(c->nodes[i].link0 + counter % c->nodes[i].threads);
}

struct addr cluster_link_addr(const struct cluster *c, uint32_t li)
{
	struct addr a = c->nodes[c->link_node[li]].addr;
	addr_set_port(&a, addr_port(&a) + cluster_link_thread(c, li));
	return a;
}

int cluster_find(const struct cluster *c, uint32_t node)
{
	if (node > MSGID_MAX_NODE)
		return -1;
	unsigned k = c->kind[node];
	return k == CLUSTER_NONE || k == CLUSTER_GATEWAY ? -1 : (int)k - 1;
}
