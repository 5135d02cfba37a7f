/* store.h: the backend's durable store, on LMDB (Debian's liblmdb).
 *
 * What it keeps, in one LMDB environment under --data-dir:
 *   msgs    smid -> message (from, to, group, time, kind, body) and a
 *           reference count: a group message is stored once and referenced
 *           from each member's mailbox (the talk's pg2 lesson applied to
 *           storage); deleted when the last reference goes.
 *   mbox    (user, smid) -> nothing: a user's undelivered messages, in smid
 *           order (smids from one backend increase over time).
 *   dlog    smid -> (from, cmid), in smid (time) order: a resent message
 *           (the client retried after a lost ack) gets its first smid back
 *           and is not stored twice. Looked up through an index in memory
 *           (hash(from, cmid) -> smid, rebuilt from the log at open: 32 to 64
 *           bytes per record, so per message of the dedup window); appended
 *           at the end and pruned from the front, where a tree keyed by
 *           (from, cmid) wrote a page of its own per message (format 2).
 *   groups  gid -> owner and the member list, denormalised in one value.
 *   meta    counters that must survive restarts (next group id), the format.
 *   rcpts   (owner, peer, smid) -> kind: receipts waiting for user `owner`
 *           ("peer received/read your message smid"), kept apart from the
 *           mailbox and its bound, coalesced per message, bounded per peer.
 *
 * Counts: a user's mailbox entries (the per-user bound), the mailbox
 * entries whose message a user sent (the per-sender bound on undelivered
 * stored messages) and a user's stored receipts are kept in memory, not in
 * LMDB: they follow from mbox, msgs (each message's sender and references)
 * and rcpts, are rebuilt from them at open (linear in what is stored), and
 * change with the transaction (an undo log puts them back when it, or a
 * request's nested transaction, is dropped). That takes two of the four
 * B-trees a message touched at random places, and their pages at every
 * commit, out of the write path (format 2; measured in BENCHMARKS.md "Dist
 * link"). Memory: about 32 to 64 bytes per user with something stored.
 *
 * Group commit: the backend's loop opens one write transaction per iteration
 * (store_begin), does every write of that iteration in it, and commits
 * (store_commit: durable on disk when it returns, fsync) before it sends any
 * acknowledgement that depends on those writes.
 *
 * Requests: the backend brackets each request's writes (a message with its
 * dedup record, a receipt, a group operation) with store_req_begin() and
 * store_req_end(). A request that adds data is refused with -ENOSPC before it
 * writes anything once the store is 90% full (deletes still run, and free
 * space again); and a request near the end of the map runs in a nested
 * transaction of its own, so a write that cannot be done (LMDB's map full)
 * fails that request only, never the iteration's other writes. Away from the
 * end (the common case) requests write straight into the iteration's
 * transaction: the page charge of every request so far proves they fit.
 *
 * The disk: the file system under --data-dir can fill before the map does
 * (a map larger than the disk, other files on it), and LMDB's writes reach
 * the disk only at the commit, which then fails as a whole. So a request
 * that adds data is also refused with -ENOSPC while the file system's free
 * space (sampled when the transaction starts) and the data file's own free
 * pages together are below the reserve,
 * store_disk_reserve(): the larger of store_set_min_free() and four times the
 * most one commit recently grew the file; one that removes data only below
 * an eighth of it. Deletes mostly reuse the file's own free pages, so the
 * store drains while new data waits.
 *
 * Errors: functions return 0 on success, a positive STORE_E_* for an
 * expected refusal, or -errno / an LMDB error mapped to -EIO on failure. A
 * failure inside a request is undone by store_req_end(keep = 0) when the
 * request was isolated; otherwise (an I/O error in the iteration's own
 * transaction) the transaction is unusable: store_failed() says so and
 * store_commit() fails. Single thread: the backend's loop.
 */
#ifndef BACKEND_STORE_H
#define BACKEND_STORE_H

#include <stddef.h>
#include <stdint.h>

enum store_err {
	STORE_OK = 0,
	STORE_E_FULL = 1,     /* a recipient's mailbox is at its bound */
	STORE_E_NOTFOUND = 2, /* no such mailbox entry, message or group */
	STORE_E_EXISTS = 3,   /* group id already used; a copy already in the mailbox */
};

/* Kinds of write, for store_inject(). */
enum store_op {
	STORE_OP_MSG = 1u << 0,     /* message and mailbox puts */
	STORE_OP_GROUP = 1u << 1,   /* group records and ids */
	STORE_OP_DEDUP = 1u << 2,   /* dedup records */
	STORE_OP_RECEIPT = 1u << 3, /* stored receipts */
	STORE_OP_DELETE = 1u << 4,  /* mailbox acks, receipt deletes */
};

enum store_req {
	STORE_REQ_ADMIT, /* adds data: refused at 90% */
	STORE_REQ_DRAIN, /* removes data (it still writes pages): refused at 98% only */
};

enum store_kind { STORE_MSG = 1, STORE_RECEIPT = 2 };

/* A stored item. For STORE_RECEIPT: `from` read/received message `ref` sent by
 * `to`; rkind is the receipt kind (proto_receipt_kind); body is empty. */
struct store_msg {
	uint64_t smid, from, to, group, time_ms, ref;
	uint8_t kind, rkind;
	const uint8_t *body; /* into LMDB memory when read: valid until the next
			      * write in the txn or its end, whichever is first */
	uint32_t len;
};

struct store;

/* Open (creating if needed) the store in directory dir, with a map of
 * map_bytes (the most the data may grow to). Returns NULL with err filled. */
struct store *store_open(const char *dir, size_t map_bytes, char *err, size_t errlen);
void store_close(struct store *s);

/* Begin the iteration's write transaction (no-op when one is open).
 * Returns 0 or -errno. */
int store_begin(struct store *s);
/* Commit it: durable when this returns 0. No-op without an open txn. */
int store_commit(struct store *s);
/* Drop the open transaction's writes. */
void store_abort(struct store *s);

/* Start a request of `writes` LMDB writes carrying `bytes` of values (an
 * upper bound: see the top of this file). Returns 0, -ENOSPC (refused,
 * nothing written), or the error that made the iteration's transaction
 * unusable. Every store call until store_req_end() belongs to the request. */
int store_req_begin(struct store *s, enum store_req kind, size_t writes, size_t bytes);

/* End the request: keep its writes, or drop them (keep = 0; possible when
 * it was isolated, and a no-op for a request that wrote nothing). Returns 0,
 * or the error that made the iteration's transaction unusable. */
int store_req_end(struct store *s, int keep);

/* Free space the file system must keep for new data to be admitted (see
 * the top); set the operator's floor (--store-min-free). */
void store_set_min_free(struct store *s, uint64_t bytes);
uint64_t store_disk_reserve(const struct store *s);
/* Whether new data is refused for the disk now (as of the last sample). */
int store_disk_low(const struct store *s);

/* The first failure of the iteration's transaction (0: none). */
int store_failed(const struct store *s);

/* Tests: make the next `count` writes of the kinds in `ops` fail with err
 * (-ENOSPC as a full map does, -EIO as a disk does), leaving the transaction
 * they ran in unusable as LMDB does; a request started while an -ENOSPC fault
 * is armed is isolated, as one near the end of the map is. count 0 disarms. */
void store_inject(struct store *s, unsigned ops, int err, unsigned count);

/* Store message m (m->smid set by the caller) once and add it to the
 * mailboxes of rcpt[0..n). Refused with -ENOSPC, before anything is written,
 * when the store's pages pass 90% of the map (deletes still work, and free
 * space again). A recipient whose mailbox holds mailbox_max
 * entries or more is skipped; with n == 1 that is STORE_E_FULL and nothing is
 * stored. *added (may be NULL) gets the number of mailboxes it went into; with
 * none (all full) nothing is stored. */
int store_put(struct store *s, const struct store_msg *m, const uint64_t *rcpt, size_t n, uint32_t mailbox_max,
	      size_t *added);

/* Add a copy of message m (m->smid from the node thread that stored it
 * first) to user's mailbox: the message is stored unless it is here
 * already, for another member of its group, in which case it gains a
 * reference. STORE_E_EXISTS when the user's mailbox has it already,
 * STORE_E_FULL when the mailbox is at mailbox_max, -EEXIST when another
 * message has this smid here. Refused with -ENOSPC like store_put. */
int store_put_copy(struct store *s, const struct store_msg *m, uint64_t user, uint32_t mailbox_max);

/* The users with mailbox entries or stored receipts: up to max of them into
 * out (in no order); returns how many there are (more than max: call again
 * with room for them). */
size_t store_users(struct store *s, uint64_t *out, size_t max);

/* Remove (user, smid) from the user's mailbox, dropping the message when no
 * mailbox references it any more. STORE_E_NOTFOUND if absent. *from and *len
 * (each may be NULL) get the message's sender (who a delivered receipt may
 * notify) and its body length. */
int store_ack(struct store *s, uint64_t user, uint64_t smid, uint64_t *from, uint32_t *len);

/* Mailbox entries, in all mailboxes of this store, whose message `from` sent. */
uint32_t store_sender_count(struct store *s, uint64_t from);

/* Stored receipts: "peer received (kind 1) / read (kind 2) owner's message
 * smid", waiting for owner. One record per (owner, peer, smid): a second put
 * keeps the stronger kind. At most per_peer per (owner, peer): a new one
 * replaces the oldest (*dropped = 1; one older than all of them is dropped
 * itself). At most max_total per owner: STORE_E_FULL, nothing written. */
int store_rcpt_put(struct store *s, uint64_t owner, uint64_t peer, uint64_t smid, uint8_t kind, uint32_t per_peer,
		   uint32_t max_total, int *dropped);
/* Delete one; STORE_E_NOTFOUND if absent. */
int store_rcpt_del(struct store *s, uint64_t owner, uint64_t peer, uint64_t smid);

struct store_rcpt {
	uint64_t owner, peer, smid;
	uint8_t kind;
};
/* Where a scan of an owner's receipts goes on: zeroed = from the start. */
struct store_rcpt_pos {
	uint64_t peer, smid;
};
/* Call fn for owner's receipts after *pos, in (peer, smid) order, at most
 * max; *pos follows every one fn took (returned 0 for), so a scan goes on
 * with the one that fn refused. fn must not write. Returns the number of
 * calls (the refused one included) or -errno. */
long store_rcpt_scan(struct store *s, uint64_t owner, struct store_rcpt_pos *pos, size_t max,
		     int (*fn)(void *arg, const struct store_rcpt *r), void *arg);
uint32_t store_rcpt_count(struct store *s, uint64_t owner);

/* Call fn for the user's mailbox entries with smid > after, in smid order,
 * at most max of them; fn returns 0 to go on, non-zero to stop. The struct
 * and body are valid during the call only, and fn must not write to the
 * store. Returns the number of calls of fn (the one that returned non-zero
 * included) or -errno. */
long store_scan(struct store *s, uint64_t user, uint64_t after, size_t max,
		int (*fn)(void *arg, const struct store_msg *m), void *arg);

/* Mailbox entries of a user (0 also when the store fails). */
uint32_t store_count(struct store *s, uint64_t user);

/* Dedup of resent messages: look up / record (from, cmid) -> smid (smid not
 * 0; a second record of (from, cmid) replaces the first in the lookup). */
int store_dedup_get(struct store *s, uint64_t from, uint64_t cmid, uint64_t *smid);
int store_dedup_put(struct store *s, uint64_t from, uint64_t cmid, uint64_t smid);
/* The dedup index's key of (from, cmid) in this open store (keyed by a
 * secret drawn at open; for tests). */
uint64_t store_dedup_index_key(const struct store *s, uint64_t from, uint64_t cmid);
/* Forget dedup records whose smid is below `before` (smids encode time),
 * oldest first, at most max per call (incremental). Returns how many were
 * deleted, or -errno. */
long store_dedup_prune(struct store *s, uint64_t before, size_t max);

/* Groups. Member lists are user ids; the owner is a member. */
int store_group_create(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n);
/* *members points into LMDB memory, valid until the txn ends. */
int store_group_get(struct store *s, uint64_t gid, uint64_t *owner, const uint64_t **members, size_t *n);
/* Replace the member list (the caller computes it). */
int store_group_set(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n);
int store_group_delete(struct store *s, uint64_t gid);
/* Allocate the next group id (persisted; never reused) for node thread
 * `thread` of `threads`. Ids are cluster_group_id(node, counter) with
 * counter % threads == thread (runtime/cluster.h), so that two backends, or
 * two threads of one, never hand out the same id. */
int store_group_next_id(struct store *s, uint32_t node, uint32_t thread, uint32_t threads, uint64_t *gid);

struct store_stats {
	uint64_t messages, mailbox_entries, dedup_entries, groups, receipts, senders, map_used_bytes, map_bytes;
	uint64_t dedup_index_bytes; /* the dedup index's tables, in memory */
	/* commits are counted and timed by the caller (backend_commits_total) */
	/* the disk: what the store can still grow by (free space and the data
	 * file's free pages, when the last transaction started; 0 if unknown),
	 * the reserve new data stops at, and the requests refused for it */
	uint64_t disk_room_bytes, disk_reserve_bytes, refused_disk;
};
void store_get_stats(struct store *s, struct store_stats *st);

#endif
