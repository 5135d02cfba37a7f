/* store.h: the backend's durable store, on LMDB (Debian's liblmdb).
 *
 * What it keeps, in one LMDB environment under --data-dir:
 *   msgs    smid -> message (from, to, group, time, kind, body) and a
 *           reference count: a group message is stored once and referenced
 *           from each member's mailbox (the talk's pg2 lesson applied to
 *           storage); deleted when the last reference goes.
 *   mbox    (user, smid) -> nothing: a user's undelivered messages, in smid
 *           order (smids from one backend increase over time).
 *   counts  user -> number of mailbox entries (for the per-user bound).
 *   dedup   (from, cmid) -> smid: a resent message (the client retried after
 *           a lost ack) gets its first smid back and is not stored twice.
 *   groups  gid -> owner and the member list, denormalised in one value.
 *   meta    counters that must survive restarts (next group id).
 *
 * Group commit: the backend's loop opens one write transaction per iteration
 * (store_begin), does every write of that iteration in it, and commits
 * (store_commit: durable on disk when it returns, fsync) before it sends any
 * acknowledgement that depends on those writes.
 *
 * Errors: functions return 0 on success, a positive STORE_E_* for an
 * expected refusal, or -errno / an LMDB error mapped to -EIO on failure (then
 * the caller aborts the transaction). Single thread: the backend's loop.
 */
#ifndef BACKEND_STORE_H
#define BACKEND_STORE_H

#include <stddef.h>
#include <stdint.h>

enum store_err {
	STORE_OK = 0,
	STORE_E_FULL = 1,     /* a recipient's mailbox is at its bound */
	STORE_E_NOTFOUND = 2, /* no such mailbox entry, message or group */
	STORE_E_EXISTS = 3,   /* group id already used */
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

/* Store message m (m->smid set by the caller) once and add it to the
 * mailboxes of rcpt[0..n). Refused with -ENOSPC, before anything is written,
 * when the store's pages pass 90% of the map (deletes still work, and free
 * space again). A recipient whose mailbox holds mailbox_max
 * entries or more is skipped; with n == 1 that is STORE_E_FULL and nothing is
 * stored. *added (may be NULL) gets the number of mailboxes it went into; with
 * none (all full) nothing is stored. */
int store_put(struct store *s, const struct store_msg *m, const uint64_t *rcpt, size_t n, uint32_t mailbox_max,
	      size_t *added);

/* Remove (user, smid) from the user's mailbox, dropping the message when no
 * mailbox references it any more. STORE_E_NOTFOUND if absent. */
int store_ack(struct store *s, uint64_t user, uint64_t smid);

/* Call fn for the user's mailbox entries with smid > after, in smid order,
 * at most max of them; fn returns 0 to go on, non-zero to stop. The struct
 * and body are valid during the call only, and fn must not write to the
 * store. Returns the number of calls of fn (the one that returned non-zero
 * included) or -errno. */
long store_scan(struct store *s, uint64_t user, uint64_t after, size_t max,
		int (*fn)(void *arg, const struct store_msg *m), void *arg);

/* Mailbox entries of a user (0 also when the store fails). */
uint32_t store_count(struct store *s, uint64_t user);

/* Dedup of resent messages: look up / record (from, cmid) -> smid. */
int store_dedup_get(struct store *s, uint64_t from, uint64_t cmid, uint64_t *smid);
int store_dedup_put(struct store *s, uint64_t from, uint64_t cmid, uint64_t smid);
/* Forget dedup entries whose smid is below `before` (smids encode time),
 * visiting at most max entries per call (incremental). Returns how many were
 * deleted, or -errno. */
long store_dedup_prune(struct store *s, uint64_t before, size_t max);

/* Groups. Member lists are user ids; the owner is a member. */
int store_group_create(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n);
/* *members points into LMDB memory, valid until the txn ends. */
int store_group_get(struct store *s, uint64_t gid, uint64_t *owner, const uint64_t **members, size_t *n);
/* Replace the member list (the caller computes it). */
int store_group_set(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n);
int store_group_delete(struct store *s, uint64_t gid);
/* Allocate the next group id (persisted; never reused). Ids are
 * (node << 48) | counter so that two backends never hand out the same id. */
int store_group_next_id(struct store *s, uint32_t node, uint64_t *gid);

struct store_stats {
	uint64_t messages, mailbox_entries, dedup_entries, groups, map_used_bytes, map_bytes;
	uint64_t commits, commit_ns_total, commit_ns_max;
};
void store_get_stats(struct store *s, struct store_stats *st);

#endif
