/* be.h: the backend node's types, shared by its modules. Not a public API.
 *
 * A backend runs one or more node threads (the cluster file's `threads`),
 * shared nothing: each is an event loop (io_uring) with its own listener
 * (the listed port + its number), its own durable store (store.h, LMDB)
 * and one link per gateway thread (runtime/link.h), and owns its part of
 * the backend's users and groups (runtime/cluster.h). `struct be` is one
 * node thread. Each
 * - keeps the session directory of the users it owns: which gateway node,
 *   thread and connection each is on, from SESSION_UP/DOWN (a gateway thread
 *   tells only the user's owner), dropped for a gateway thread whose link is
 *   lost;
 * - stores every message routed to it durably before acknowledging it (one
 *   write transaction per loop iteration: group commit; links are held until
 *   the commit returns), then routes it to the recipient's gateway thread if
 *   the recipient is online, else keeps it until the recipient logs in;
 * - deletes a stored message when its recipient's client acknowledges it
 *   (delivered receipt), and routes receipts to the original sender;
 * - owns groups: member lists denormalised in one record, a group message
 *   stored once and referenced from every member's mailbox here;
 * - hands what it stores for users it does not own (a group's members owned
 *   elsewhere) to their owner, through a gateway (HANDOFF), deleting each
 *   entry once the owner has stored its copy (HANDOFF_ACK): the mailbox is
 *   the outbox, and a user's messages are delivered by its owner only.
 * Scaling out is by adding backends (rendezvous hashing moves ~1/n users).
 */
#ifndef BACKEND_BE_H
#define BACKEND_BE_H

#include <liburing.h>
#include <pthread.h>
#include <stdint.h>

#include "backend/store.h"
#include "runtime/addr.h"
#include "runtime/cluster.h"
#include "runtime/counter.h"
#include "runtime/link.h"
#include "runtime/metrics.h"
#include "runtime/msgid.h"
#include "runtime/opts.h"
#include "runtime/peerauth.h"
#include "runtime/u64map.h"

#define BE_MAX_LINKS 4096u
#define BE_MAX_HANDSHAKES 64u  /* links not yet authenticated at once; past it the oldest is closed */
#define BE_FLUSH_PER_USER 256u /* stored messages sent per user per iteration at login */
#define BE_WINDOW_MSGS 256u    /* stored messages sent at login and not yet acknowledged, per user */
#define BE_RCPT_PER_PEER 64u   /* stored receipts kept per (user, peer): older ones give way */
#define BE_BUDGET_MAX 65536u   /* senders with a partly spent budget tracked before idle ones are swept */
#define BE_REWIND_NS 1000000000ull /* a user's handoffs go again at most this often for a lost one */

struct be_config {
	const char *listen, *stats_listen, *cluster_file, *cluster_secret_file, *data_dir, *log_level;
	int64_t node, store_size, store_min_free, mailbox_max, max_group, link_queue, link_batch, link_sockbuf, dedup_window_ms;
	int64_t sender_max, receipt_max, fanout_rate, login_window, login_stall_ms;
	const char *inject_store_fault; /* tests: "OPS:ERR:COUNT" (store_inject) */
};

struct be_counters {
	uint64_t links_accepted, links_lost, sessions, sessions_up, sessions_down, kicks, links_busy;
	uint64_t routed_in, stored, dedup_hits, mailbox_full, store_errors, delivered_online, delivered_login;
	uint64_t store_full, sender_limited, fanout_limited, requests_failed, commits_failed, commits_failed_disk;
	uint64_t store_full_disk, store_disk_free, store_disk_reserve;
	uint64_t receipts_unverified, receipts_dropped, receipts_acked;
	uint64_t group_msgs, group_fanout, group_ops, receipts_in, receipts_deleted, receipts_forwarded, receipts_stored;
	uint64_t commits, commit_ns_total, commit_ns_max, loops, cqes, malformed;
	uint64_t backlog;
	uint64_t handoffs_sent, handoffs_in, handoffs_stored, handoffs_acked, handoff_users, receipts_relayed;
	uint64_t store_messages, store_mailbox, store_groups, store_receipts, store_used_bytes;
	uint64_t store_dedup_records, store_dedup_index_bytes;
	struct link_stats link; /* all links (runtime/link.h LINK_STATS), slots since reused included */
	struct metrics_lat lat_commit; /* commit durations (runtime/metrics.h) */
} __attribute__((aligned(64)));

/* Counters of what a commit makes true: a failed commit puts them back to
 * what they were when its transaction began, so they count what committed. */
#define BE_COMMITTED_COUNTERS(X)                                                                        \
	X(stored) X(group_msgs) X(group_fanout) X(delivered_online) X(receipts_deleted) X(receipts_stored) \
	X(receipts_acked)
#define BE_COMMITTED_FIELD(f) uint64_t f;
struct be_committed {
	BE_COMMITTED_COUNTERS(BE_COMMITTED_FIELD)
};


/* A user whose stored messages (then stored receipts) are still being sent
 * after login: one entry per user, however many SESSION_UPs came. The same
 * for a user owned elsewhere whose entries here are being handed off (then
 * the window is of handoffs not yet acknowledged, on gateway link `link`). */
struct be_backlog {
	uint64_t user, after;      /* messages: the last smid sent */
	struct store_rcpt_pos rpos; /* receipts: the last one sent */
	int receipts;               /* messages done, receipts now */
	/* the window: sent at this login, no delivered receipt yet */
	uint32_t inflight;
	uint64_t inflight_bytes, progress_ns; /* progress: the last send or acknowledgement */
	uint64_t stall_after; /* the window was reset after a stall: receipts up to here are not in it */
	uint32_t link;        /* handoffs: the link they go out on (UINT32_MAX: none yet) */
	int more;             /* handoffs: entries past `after` may wait (a scan has not found the end) */
	int lost;             /* handoffs: an ack showed an older one lost: all go again (at most every BE_REWIND_NS) */
	uint64_t rewound_ns;  /* handoffs: when a lost one last sent everything again */
};

struct be {
	struct be_counters cnt;
	struct be_config cfg;
	const struct cluster *cluster; /* read-only, shared by the node threads */
	struct peerauth_keys keys; /* the cluster secret(s) */
	int self; /* this node's index in the cluster */
	uint32_t thread, threads; /* this node thread's number, and how many the node runs */
	uint32_t link_self;       /* cluster link index of this node thread */
	struct be *all;           /* the node's threads, [0, threads): read at start-up and by the stats thread */
	struct store *store;
	struct io_uring ring;
	int lfd;
	int accepting;
	struct link *links; /* BE_MAX_LINKS slots */
	uint32_t *link_sessions; /* per link slot: directory entries on it (a link lost with none costs no walk) */
	struct link_stats retired; /* counters of link slots since reused */
	uint32_t nlinks;    /* slots in use (high-water) */
	struct u64map peers; /* (gateway node << 16 | thread) + 1 -> link index */
	struct u64map dir;   /* user -> link index << 48 | conn (48 bits) */
	struct be_backlog *backlog;
	size_t nbacklog, backlog_cap;
	struct u64map backlog_of; /* user -> index in backlog */
	struct be_backlog *hand;  /* users owned elsewhere with entries here (handoff) */
	size_t nhand, hand_cap;
	struct u64map hand_of; /* user -> index in hand */
	struct u64map budget;     /* sender -> fan-out budget: tokens << 32 | ms (see node.c) */
	struct msgid_gen ids;
	uint64_t now_ns, wall_ms;
	int in_txn, draining, stop;
	struct be_committed txn_base; /* BE_COMMITTED_COUNTERS when the transaction began */
	uint64_t txn_smid0;           /* the first smid stored in it (0: none yet) */
	uint64_t next_publish;
	pthread_t thread_id;
	int ring_fd; /* for the main thread's control messages */
	pthread_barrier_t *start; /* the node's threads and the main thread */
	int start_failed;
	int finished; /* set (release) as be_main returns: the watchdog stops watching it */
	uint64_t started_wall_ms;
	const char *ring_mode;
};

enum be_ud { BU_ACCEPT = 1, BU_LINK, BU_CTRL };
/* Control messages from the main thread (MSG_RING, BU_CTRL): RELOAD
 * carries a malloc'd struct be_reload the node thread takes and frees. */
enum be_ctrl { BE_CTRL_DRAIN = 1, BE_CTRL_STOP = 2, BE_CTRL_RELOAD = 3 };

/* BE_CTRL_RELOAD's pointer: the whole new configuration and cluster keys. */
struct be_reload {
	struct be_config cfg;
	struct peerauth_keys keys;
};

struct mbuf;

void *be_main(void *arg);

/* The node's set-up (its ring, tables; accepting when lfd >= 0) and
 * teardown, one loop iteration (wait up to wait_ns for completions, handle
 * them, commit, then release and flush the links), and a new gateway
 * connection (an accepted fd, owned by the node from here). be_main runs
 * these; the link fuzzer drives them itself. */
int be_setup(struct be *b, char *err, size_t errlen);
void be_teardown(struct be *b);
void be_turn(struct be *b, uint64_t wait_ns);
void be_attach(struct be *b, int fd);
struct httpd_req;
int be_stats_http(void *arg, const struct httpd_req *req, struct mbuf *body, const char **ctype);
extern int be_draining;

#endif
