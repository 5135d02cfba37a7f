/* cluster.h: the cluster file every node reads, and who owns what.
 *
 *   # cluster.conf: one line per node
 *   backend 11 127.0.0.1:7001
 *   backend 12 127.0.0.1:7002 threads 4
 *   gateway 1
 *   gateway 2
 *
 * Every node of the cluster is listed: a backend links only with gateways
 * listed here (and the cluster secret, runtime/peerauth.h), a gateway only
 * with the backend it expects at that address. Node ids are unique across
 * both kinds, 1..2047 (the 11 bits a message id gives them,
 * runtime/msgid.h), with at most 1,024 backends among them.
 *
 * Backend threads: a backend runs `threads` loop threads (default 1, at
 * most CLUSTER_MAX_THREADS), shared nothing: thread k listens on the listed
 * port + k, keeps its own store and directory, and owns its part of the
 * backend's users and groups. A gateway thread holds one link per backend
 * thread: link indexes 0..nlinks-1, a backend's threads numbered from its
 * node's link0 in order.
 *
 * Ownership:
 * - a user belongs to the owner of its bucket (the top 16 bits of
 *   hash64(user)), and a bucket to the backend with the highest
 *   hash64(bucket ^ node seed) (rendezvous hashing over 65,536 buckets,
 *   computed once at load): adding or removing a backend moves only the
 *   buckets of that backend (about 1/n of the users), and finding an owner
 *   is one hash and a table read however many backends there are;
 *   Within its backend, a user belongs to thread
 *   (low 32 bits of hash64(user)) * threads >> 32, bits the bucket does not use;
 * - a group id carries its backend's node id in bits 48..62 (assigned at
 *   creation; cluster_group_id below), so groups never move, and the
 *   backend thread that created it is its counter modulo the threads;
 * - a server message id carries its generator's node id and thread
 *   (runtime/msgid.h), so a receipt finds the backend thread that stored the
 *   message.
 * Changing a backend's thread count moves its users between its threads:
 * the backend refuses a data dir written with another count (backend/main.c).
 * Read-only after loading: any thread may query.
 */
#ifndef RUNTIME_CLUSTER_H
#define RUNTIME_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/addr.h"
#include "runtime/msgid.h"
#include "runtime/u64map.h"

#define CLUSTER_MAX_BACKENDS 1024u
#define CLUSTER_MAX_NODES MSGID_MAX_NODE /* gateways and backends together: ids 1..2047 */
#define CLUSTER_MAX_THREADS 64u          /* loop threads of one backend */
#define CLUSTER_MAX_LINKS 16384u         /* backend threads in all: links per gateway thread */

struct cluster_node {
	uint32_t node;
	struct addr addr; /* thread 0's; thread k listens on its port + k */
	uint64_t seed;
	uint32_t threads, link0; /* loop threads; index of thread 0's link */
};

/* What a node id is, by id (the one index behind cluster_find and
 * cluster_is_gateway: O(1) per message however large the cluster). */
#define CLUSTER_NONE 0       /* not listed */
#define CLUSTER_GATEWAY 0xffffu /* a gateway; else backend index + 1 */

#define CLUSTER_BUCKET_BITS 16u
#define CLUSTER_BUCKETS (1u << CLUSTER_BUCKET_BITS)

struct cluster {
	size_t n; /* backends */
	struct cluster_node nodes[CLUSTER_MAX_BACKENDS];
	size_t ngateways;
	uint16_t kind[MSGID_MAX_NODE + 1]; /* CLUSTER_NONE, CLUSTER_GATEWAY or backend index + 1 */
	uint16_t owner[CLUSTER_BUCKETS];   /* bucket -> index of its backend */
	size_t nlinks;                     /* backend threads in all */
	uint16_t link_node[CLUSTER_MAX_LINKS]; /* link index -> index of its backend */
};

/* A user's bucket (see "Ownership" above). */
static inline uint32_t cluster_bucket(uint64_t user)
{
	return (uint32_t)(hash64(user) >> (64 - CLUSTER_BUCKET_BITS));
}

/* Parse the file. Returns 0, or -1 with a reason (file:line) in err. */
int cluster_load(struct cluster *c, const char *path, char *err, size_t errlen);

/* Index (in nodes[]) of the backend owning a user; c->n must be > 0. */
size_t cluster_user_owner(const struct cluster *c, uint64_t user);

/* Index of the backend with node id `node`, or -1. */
int cluster_find(const struct cluster *c, uint32_t node);

/* Link index of the backend thread owning a user (c->n > 0). */
uint32_t cluster_user_link(const struct cluster *c, uint64_t user);

/* Which of its backend's `threads` threads owns a user. */
static inline uint32_t cluster_user_thread(uint64_t user, uint32_t threads)
{
	return (uint32_t)(((hash64(user) & 0xffffffffu) * threads) >> 32);
}

/* Link index of the backend thread that made server message id smid, or -1
 * when no backend thread of this cluster can have made it (another node, or
 * a thread number past the backend's count). */
int cluster_msg_link(const struct cluster *c, uint64_t smid);

/* Link index of the backend thread owning group gid, or -1. */
int cluster_group_link(const struct cluster *c, uint64_t gid);

/* Which thread of its backend (c->link_node[li]) link li reaches. */
static inline uint32_t cluster_link_thread(const struct cluster *c, uint32_t li)
{
	return li - c->nodes[c->link_node[li]].link0;
}

/* The address of link li's backend thread (thread 0's port + its number). */
struct addr cluster_link_addr(const struct cluster *c, uint32_t li);

/* Whether `node` is listed as a gateway. */
int cluster_is_gateway(const struct cluster *c, uint32_t node);

/* Group id layout, the one place: a per-backend counter in the low 48 bits
 * and the creating backend's node id in bits 48..62. Bit 63 stays clear: a
 * group id is sized like a user id (PROTO_MAX_USER), as SEND's `to` has it. */
#define CLUSTER_GID_COUNTER_BITS 48u
#define CLUSTER_GID_NODE_BITS 15u
#define CLUSTER_GID_COUNTER_MAX ((UINT64_C(1) << CLUSTER_GID_COUNTER_BITS) - 1)
#define CLUSTER_GID_NODE_MAX ((UINT32_C(1) << CLUSTER_GID_NODE_BITS) - 1)
_Static_assert(CLUSTER_GID_COUNTER_BITS + CLUSTER_GID_NODE_BITS == 63, "a group id leaves bit 63 clear");

/* The group id of backend `node`'s counter value (node <= CLUSTER_GID_NODE_MAX,
 * 1 <= counter <= CLUSTER_GID_COUNTER_MAX). */
static inline uint64_t cluster_group_id(uint32_t node, uint64_t counter)
{
	return ((uint64_t)(node & CLUSTER_GID_NODE_MAX) << CLUSTER_GID_COUNTER_BITS) | (counter & CLUSTER_GID_COUNTER_MAX);
}

/* The node id of the backend that created group gid. */
static inline uint32_t cluster_group_node(uint64_t gid)
{
	return (uint32_t)(gid >> CLUSTER_GID_COUNTER_BITS) & CLUSTER_GID_NODE_MAX;
}

#endif
