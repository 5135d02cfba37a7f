/* store.c: see store.h. One LMDB environment, six named databases.
 *
 * Keys are big-endian so that LMDB's default memcmp order is numeric order:
 *   msgs    be64(smid)                -> header (MSG_OFF_*), then the body
 *   mbox    be64(user) be64(smid)     -> one zero byte (LMDB allows empty
 *                                        values, but a byte costs nothing and
 *                                        keeps tools such as mdb_dump happy)
 *   counts  be64(user)                -> u32 entries in that user's mailbox
 *   dlog    be64(smid)                -> u64 from, u64 cmid: the dedup
 *                                        records, in time order (see
 *                                        "Dedup" below)
 *   groups  be64(gid)                 -> u64 owner, u64 members[n]
 *   meta    "next_gid"                -> u64 next group counter (from 1)
 *           "format"                  -> u32 layout version (STORE_FORMAT)
 * Values are in host order (the file is not portable across endianness, as
 * LMDB's own is not) and always encoded and decoded with memcpy: LMDB puts
 * values at 2-byte boundaries only, so no pointer into a value is ever cast
 * to a wider type.
 *
 * Transactions: every function but store_get_stats needs the iteration's
 * write transaction and opens it implicitly (store_begin) when none is open,
 * so a read before the first write of an iteration still sees, and is seen
 * by, that iteration's writes; the caller commits or aborts as usual. A
 * failure to open it is returned like any other failure (store_count, which
 * cannot return one, answers 0). store_get_stats uses the open transaction if
 * there is one and otherwise a short read-only one, so that a metrics scrape
 * never leaves a write transaction open behind the loop's back.
 *
 * Errors: MDB_MAP_FULL becomes -ENOSPC (the map, the store's size limit, is
 * full; the file system's own ENOSPC reads the same); other LMDB codes (in
 * LMDB's negative range) become -EIO; system errors, which LMDB returns as
 * positive errno values, become -errno. A failed write leaves LMDB's
 * transaction unusable (every later call on it fails, the commit too): the
 * caller must abort, as store.h says; calls on it and store_commit answer
 * with the first failure's code rather than LMDB's generic MDB_BAD_TXN.
 * Nothing is logged here: the caller logs.
 *
 * Dedup: a (from, cmid) -> smid record per stored message, kept for the
 * dedup window. As a B-tree keyed by (from, cmid) every record landed on a
 * page of its own (the keys are random), and its page was written again at
 * the commit: about 80% of the bytes a commit wrote (6.7 of 8.2 KB per
 * message, BENCHMARKS.md "Dedup records as a log"). Now the records are a
 * log keyed by smid, so they are appended at the end (a page holds a
 * hundred of them) and pruned from the front, and the lookup is an index in
 * memory rebuilt from the log at open: dedup_hash(from, cmid), keyed by a
 * secret of this open, -> smid, in DEDUP_PARTS u64maps (16-byte slots, load
 * <= 1/2). A hit is checked against the log's record, so a hash collision
 * can only miss a resend, never take a new message for one.
 */
#include "backend/store.h"

#include <errno.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "proto/wire.h"
#include "runtime/cluster.h"
#include "runtime/u64map.h"

/* Bumped whenever a key or value layout changes; store_open refuses other
 * values. 2: the smids in keys and values are message ids of layout 3
 * (runtime/msgid.h: the node id moved to bits 23..13), so a format-1
 * store's smids would name other nodes (receipts would go astray). 3: the
 * dedup records are the log `dlog` (format 2's tree `dedup` is moved into
 * it at open, in one transaction). */
#define STORE_FORMAT 3u
#define STORE_FORMAT_DEDUP_TREE 2u /* the one older format store_open upgrades */

/* Message value header: offsets of its fields, then the body at MSG_HDR. */
enum {
	MSG_OFF_REFS = 0,   /* u32: mailboxes that still reference it */
	MSG_OFF_KIND = 4,   /* u8: enum store_kind */
	MSG_OFF_RKIND = 5,  /* u8: receipt kind */
	MSG_OFF_FROM = 8,   /* bytes 6-7: zero padding */
	MSG_OFF_TO = 16,
	MSG_OFF_GROUP = 24,
	MSG_OFF_TIME = 32,
	MSG_OFF_REF = 40,
	MSG_OFF_LEN = 48,   /* u32: body length */
	MSG_HDR = 52,
};

/* A group member list copied out of LMDB by store_group_get; freed when the
 * transaction ends (see there why a copy). */
struct keep {
	struct keep *next;
	uint64_t v[];
};

/* The per-user counts, in memory (see "Counts" in store.h), and the dedup
 * index (see "Dedup" at the top): by enum cnt. */
enum cnt { CNT_MBOX, CNT_SENDERS, CNT_RCPTS, CNT_COUNTS, CNT_DEDUP = CNT_COUNTS };

/* The dedup index is this many tables, by the top byte of the key: a table
 * doubles as it fills, and one table of 33 million entries took 6.7 s to
 * copy into its double (a thread's loop stopped that long); a 256th of it
 * takes 31 ms (this machine). */
#define DEDUP_PARTS 256u

/* What a count was before the open transaction changed it: undone, newest
 * first, when the transaction (or the request's nested one) is dropped. */
struct cnt_undo {
	uint64_t key; /* the map's key: user + 1 (a count), hash (the dedup index) */
	uint64_t old;
	uint8_t map;
};

/* The maps' key of a user: user + 1 (u64map keys are non-zero); 0 for
 * UINT64_MAX, which is no user id. */
static inline uint64_t cnt_key(uint64_t user)
{
	return user + 1;
}

struct store {
	MDB_env *env;
	MDB_dbi msgs, mbox, dlog, groups, meta, rcpts;
	struct u64map cnt[CNT_COUNTS];      /* user -> count, only non-zero ones */
	struct u64map dedup[DEDUP_PARTS];   /* the dedup index (map_of) */
	uint8_t dedup_key[crypto_shorthash_KEYBYTES]; /* dedup_hash's secret */
	struct cnt_undo *undo;       /* count changes of the open transaction */
	size_t nundo, undo_cap, undo_child; /* undo_child: where the request's nested transaction began */
	MDB_txn *txn;         /* the open write transaction, or NULL */
	MDB_txn *child;       /* the request's nested transaction, or NULL */
	int first_err;        /* the first failure of txn, mapped (see txn_err) */
	int child_err;        /* ...and of child */
	/* requests (see store_req_begin) */
	int in_req, req_ok;
	uint64_t map_pages, psize, base_pages; /* base: pages in the file at txn begin */
	uint64_t charge;                       /* upper bound of pages this txn may allocate */
	uint64_t pages_exact, pages_charge;    /* pages counted in this txn, and the charge then */
	int pages_valid;                       /* ...and whether every write since was charged */
	unsigned depth, depth_writes;          /* the charge's depth (depth_sample) and writes since */
	/* fault injection (tests) */
	unsigned fault_ops, fault_left;
	int fault_err;
	struct keep *keep;    /* store_group_get copies, valid until txn ends */
	uint8_t *tmp;         /* scratch for rewriting a message value */
	size_t tmp_cap;
	/* the file system under the data file (see store_set_min_free) */
	int fd;                       /* the data file (LMDB's) */
	int lock_fd;                  /* DIR/LOCK, flock'ed: one process per data dir */
	uint64_t min_free;            /* --store-min-free */
	uint64_t disk_room;           /* free space and the data file's free pages, at the
				       * transaction's start (UINT64_MAX: unknown) */
	uint64_t file_bytes;          /* blocks the data file holds, after the last commit */
	uint64_t growth_max;          /* the most a commit grew it, decaying */
	uint64_t refused_disk;
};

/* ---- small helpers ----------------------------------------------------------- */

/* The table of key in map `map` (enum cnt). */
static struct u64map *map_of(struct store *s, unsigned map, uint64_t key)
{
	return map == CNT_DEDUP ? &s->dedup[key >> 56] : &s->cnt[map];
}

static void maps_free(struct store *s)
{
	for (int i = 0; i < CNT_COUNTS; i++)
		u64map_free(&s->cnt[i]);
	for (unsigned i = 0; i < DEDUP_PARTS; i++)
		u64map_free(&s->dedup[i]);
}

static void room_sample(struct store *s, MDB_txn *txn, uint64_t file_pages, uint64_t psize);
static void undo_to(struct store *s, size_t to);
static uint64_t tree_pages(struct store *s, MDB_txn *txn);

/* The transaction the current request writes into. */
static inline MDB_txn *T(struct store *s)
{
	return s->child ? s->child : s->txn;
}

static int map_err(int rc)
{
	if (rc == MDB_MAP_FULL)
		return -ENOSPC;
	if (rc < 0)
		return -EIO; /* MDB_* codes, all negative */
	return -rc;          /* a system errno */
}

/* A failed write marks an LMDB transaction failed, and every later call on
 * it, commit included, answers MDB_BAD_TXN; answer with the first failure
 * instead (usually -ENOSPC), so that what the caller logs names the cause. */
static int txn_err(struct store *s, int rc)
{
	int *first = s->child ? &s->child_err : &s->first_err;
	if (rc == MDB_BAD_TXN && *first)
		return *first;
	int e = map_err(rc);
	if (!*first)
		*first = e;
	return e;
}

/* A write operation of kind op is about to run: an armed fault fails it as
 * LMDB would (and, like LMDB, leaves its transaction unusable). */
static int fault(struct store *s, unsigned op)
{
	if (!(s->fault_ops & op) || !s->fault_left)
		return 0;
	s->fault_left--;
	int *first = s->child ? &s->child_err : &s->first_err;
	if (!*first)
		*first = s->fault_err;
	return s->fault_err;
}

/* Whether the current transaction (the request's) failed already. */
static int poisoned(struct store *s)
{
	return s->child ? s->child_err : s->first_err;
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof v);
}

static inline uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof v);
}

static inline uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline MDB_val mval(void *p, size_t n)
{
	return (MDB_val){ .mv_size = n, .mv_data = p };
}

/* A mailbox entry's key, in k: be64(user) || be64(smid), so a user's
 * entries are together and in smid order. */
static inline MDB_val mbox_key(uint8_t k[16], uint64_t user, uint64_t smid)
{
	wire_be64_put(k, user);
	wire_be64_put(k + 8, smid);
	return mval(k, 16);
}

static void keep_free(struct store *s)
{
	while (s->keep) {
		struct keep *k = s->keep;
		s->keep = k->next;
		free(k);
	}
}

/* Grow the scratch buffer to at least n bytes. */
static int tmp_reserve(struct store *s, size_t n)
{
	if (n <= s->tmp_cap)
		return 0;
	size_t cap = s->tmp_cap ? s->tmp_cap : 4096;
	while (cap < n)
		cap = cap > SIZE_MAX / 2 ? n : cap * 2;
	uint8_t *p = realloc(s->tmp, cap);
	if (!p)
		return -ENOMEM;
	s->tmp = p;
	s->tmp_cap = cap;
	return 0;
}

/* Decode a msgs value; -EIO when it is not one we wrote (corruption). */
static int msg_decode(const MDB_val *v, uint64_t smid, struct store_msg *m, uint32_t *refs)
{
	if (v->mv_size < MSG_HDR)
		return -EIO;
	const uint8_t *p = v->mv_data;
	uint32_t len = get_u32(p + MSG_OFF_LEN);
	if (v->mv_size - MSG_HDR != len)
		return -EIO;
	if (refs)
		*refs = get_u32(p + MSG_OFF_REFS);
	if (m) {
		m->smid = smid;
		m->kind = p[MSG_OFF_KIND];
		m->rkind = p[MSG_OFF_RKIND];
		m->from = get_u64(p + MSG_OFF_FROM);
		m->to = get_u64(p + MSG_OFF_TO);
		m->group = get_u64(p + MSG_OFF_GROUP);
		m->time_ms = get_u64(p + MSG_OFF_TIME);
		m->ref = get_u64(p + MSG_OFF_REF);
		m->len = len;
		m->body = p + MSG_HDR;
	}
	return 0;
}

static void msg_encode(uint8_t *p, const struct store_msg *m, uint32_t refs)
{
	memset(p, 0, MSG_HDR);
	put_u32(p + MSG_OFF_REFS, refs);
	p[MSG_OFF_KIND] = m->kind;
	p[MSG_OFF_RKIND] = m->rkind;
	put_u64(p + MSG_OFF_FROM, m->from);
	put_u64(p + MSG_OFF_TO, m->to);
	put_u64(p + MSG_OFF_GROUP, m->group);
	put_u64(p + MSG_OFF_TIME, m->time_ms);
	put_u64(p + MSG_OFF_REF, m->ref);
	put_u32(p + MSG_OFF_LEN, m->len);
	if (m->len)
		memcpy(p + MSG_HDR, m->body, m->len);
}

/* The write transaction, opened on first use (see the file comment). */
static int need_txn(struct store *s)
{
	return s->txn ? 0 : store_begin(s);
}

/* need_txn, and the request's transaction must not have failed already
 * (LMDB refuses every call on a failed transaction; so do we, with the
 * first failure's code, also after an injected fault). */
static int ready(struct store *s)
{
	int rc = need_txn(s);
	if (!s->in_req)
		s->pages_valid = 0; /* a write outside a request is not charged (used_permille) */
	return rc ? rc : poisoned(s);
}

/* ---- open / close -------------------------------------------------------------- */

/* A database's pages (the tree's and its overflow pages). */
static uint64_t stat_pages(const MDB_stat *st)
{
	return (uint64_t)st->ms_branch_pages + st->ms_leaf_pages + st->ms_overflow_pages;
}

/* A dedup log record's value, (from, cmid); dlog_val_get: -1 when v is not
 * one (it was not written here). */
enum { DLOG_VAL = 16 };
static void dlog_val_put(uint8_t p[DLOG_VAL], uint64_t from, uint64_t cmid)
{
	put_u64(p, from);
	put_u64(p + 8, cmid);
}

static int dlog_val_get(const MDB_val *v, uint64_t *from, uint64_t *cmid)
{
	if (v->mv_size != DLOG_VAL)
		return -1;
	*from = get_u64(v->mv_data);
	*cmid = get_u64((const uint8_t *)v->mv_data + 8);
	return 0;
}

/* Format 2 kept the dedup records in a tree keyed by (from, cmid): move them
 * into the log and drop the tree, in open_dbs' transaction (all or nothing).
 * *bytes gets the tree's size, taken before the first write (a failed write
 * ends what txn can answer). */
static int dedup_tree_to_log(struct store *s, MDB_txn *txn, uint64_t *bytes)
{
	MDB_dbi old;
	MDB_stat st;
	*bytes = 0;
	int rc = mdb_dbi_open(txn, "dedup", 0, &old);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (mdb_stat(txn, old, &st) == 0)
		*bytes = stat_pages(&st) * st.ms_psize;
	MDB_cursor *c;
	if ((rc = mdb_cursor_open(txn, old, &c)) != 0)
		return rc;
	MDB_val k, v;
	for (int op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
		if (k.mv_size != 16 || v.mv_size != 8)
			continue; /* not a record format 2 wrote */
		uint8_t lk[8], lv[DLOG_VAL];
		wire_be64_put(lk, get_u64(v.mv_data));
		dlog_val_put(lv, wire_be64_get(k.mv_data), wire_be64_get((const uint8_t *)k.mv_data + 8));
		MDB_val nk = mval(lk, 8), nv = mval(lv, sizeof lv);
		if ((rc = mdb_put(txn, s->dlog, &nk, &nv, 0)) != 0)
			break;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? mdb_drop(txn, old, 1) : rc;
}

/* Open the named databases and check (or, when new, write) the format, in
 * the first transaction; a format-2 store is upgraded there. */
static int open_dbs(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, errlen, "store: begin: %s", mdb_strerror(rc));
		return -1;
	}
	static const char *const names[] = {"msgs", "mbox", "dlog", "groups", "meta", "rcpts"};
	MDB_dbi *dbis[] = {&s->msgs, &s->mbox, &s->dlog, &s->groups, &s->meta, &s->rcpts};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		rc = mdb_dbi_open(txn, names[i], MDB_CREATE, dbis[i]);
		if (rc) {
			snprintf(err, errlen, "store: open database %s: %s", names[i], mdb_strerror(rc));
			goto fail;
		}
	}
	MDB_val k = mval("format", 6), v;
	rc = mdb_get(txn, s->meta, &k, &v);
	if (rc == 0 && v.mv_size == 4 && get_u32(v.mv_data) == STORE_FORMAT_DEDUP_TREE) {
		uint64_t tree_bytes;
		if ((rc = dedup_tree_to_log(s, txn, &tree_bytes)) != 0) {
			if (rc == MDB_MAP_FULL)
				snprintf(err, errlen,
					 "store: upgrading to format 3 needs room for a copy of the dedup records (about "
					 "%llu MiB) until it commits, and this store's map is full: start once with a larger "
					 "--store-size (each node thread's store gets its share), or run the previous "
					 "version on it, which still reads it",
					 (unsigned long long)(tree_bytes >> 20) + 1);
			else
				snprintf(err, errlen, "store: moving format 2's dedup records: %s", mdb_strerror(rc));
			goto fail;
		}
		rc = MDB_NOTFOUND; /* written as format 3 below */
	}
	if (rc == MDB_NOTFOUND) {
		uint8_t b[4];
		put_u32(b, STORE_FORMAT);
		v = mval(b, sizeof b);
		rc = mdb_put(txn, s->meta, &k, &v, 0);
	} else if (rc == 0 && (v.mv_size != 4 || get_u32(v.mv_data) != STORE_FORMAT)) {
		snprintf(err, errlen,
			 "store: data format %u, this backend reads formats %u and %u only (format 1: message ids of "
			 "dist version 2; drain that store with the backend that wrote it, or move it away)",
			 v.mv_size == 4 ? get_u32(v.mv_data) : 0, STORE_FORMAT_DEDUP_TREE, STORE_FORMAT);
		goto fail;
	}
	if (rc) {
		snprintf(err, errlen, "store: format record: %s", mdb_strerror(rc));
		goto fail;
	}
	rc = mdb_txn_commit(txn); /* frees txn, failed or not */
	if (rc) {
		snprintf(err, errlen, "store: commit: %s", mdb_strerror(rc));
		return -1;
	}
	return 0;
fail:
	mdb_txn_abort(txn);
	return -1;
}

/* The dedup index's key of (from, cmid): never 0 (u64map's empty key).
 * Keyed (SipHash-2-4, a secret drawn at each open: the index is rebuilt
 * then) because senders choose their cmids: with a public hash one sender
 * could pick cmids whose keys all fall in one run of the table and make
 * every insert and delete there walk it. */
static uint64_t dedup_hash(const struct store *s, uint64_t from, uint64_t cmid)
{
	uint8_t in[16], out[crypto_shorthash_BYTES];
	put_u64(in, from);
	put_u64(in + 8, cmid);
	crypto_shorthash(out, in, sizeof in, s->dedup_key);
	uint64_t h;
	memcpy(&h, out, sizeof h);
	return h ? h : 1;
}

/* The counts, from what the databases hold: a user's mailbox entries, the
 * references of the messages each sender sent, a user's stored receipts;
 * and the dedup index. Linear in the entries stored (the counts: about a
 * second per ten million). */
static int count_rebuild(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		snprintf(err, errlen, "store: counts: %s", mdb_strerror(rc));
		return -1;
	}
	const MDB_dbi dbs[] = {s->mbox, s->msgs, s->rcpts};
	const enum cnt maps[] = {CNT_MBOX, CNT_SENDERS, CNT_RCPTS};
	for (int i = 0; i < 3 && rc == 0; i++) {
		if ((rc = mdb_cursor_open(txn, dbs[i], &c)) != 0)
			break;
		for (int op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
			uint64_t user, add = 1;
			if (maps[i] == CNT_SENDERS) {
				/* a message value: its kind, sender and references */
				if (v.mv_size < MSG_HDR || ((const uint8_t *)v.mv_data)[MSG_OFF_KIND] != STORE_MSG)
					continue;
				user = get_u64((const uint8_t *)v.mv_data + MSG_OFF_FROM);
				add = get_u32((const uint8_t *)v.mv_data + MSG_OFF_REFS);
			} else {
				if (k.mv_size < 8)
					continue;
				user = wire_be64_get(k.mv_data);
			}
			uint64_t key = cnt_key(user);
			if (!add || !key)
				continue;
			uint64_t *p = u64map_get(&s->cnt[maps[i]], key);
			uint64_t n = (p ? *p : 0) + add;
			if (u64map_put(&s->cnt[maps[i]], key, n > UINT32_MAX ? UINT32_MAX : n) != 0) {
				rc = ENOMEM;
				break;
			}
		}
		mdb_cursor_close(c);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	/* the dedup index, from the log in smid order: the newest record of a
	 * (from, cmid) is the one it keeps, as store_dedup_put does */
	if (rc == 0 && (rc = mdb_cursor_open(txn, s->dlog, &c)) == 0) {
		for (int op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
			uint64_t from, cmid;
			if (k.mv_size != 8 || dlog_val_get(&v, &from, &cmid) != 0)
				continue;
			uint64_t h = dedup_hash(s, from, cmid);
			if (u64map_put(map_of(s, CNT_DEDUP, h), h, wire_be64_get(k.mv_data)) != 0) {
				rc = ENOMEM;
				break;
			}
		}
		mdb_cursor_close(c);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	mdb_txn_abort(txn);
	if (rc) {
		snprintf(err, errlen, "store: counts: %s", rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		maps_free(s);
		return -1;
	}
	return 0;
}

struct store *store_open(const char *dir, size_t map_bytes, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "store: mkdir %s: %s", dir, strerror(errno));
		return NULL;
	}
	struct store *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	/* LMDB lets several processes open one environment and serialises their
	 * writers, so a second backend on the same --data-dir would run beside
	 * the first, each with its own dedup and delivery state: refuse it. */
	char lp[PATH_MAX];
	snprintf(lp, sizeof lp, "%s/LOCK", dir);
	s->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		if (e == EWOULDBLOCK)
			snprintf(err, errlen, "store: %s is in use by another process (another backend on this --data-dir?)",
				 dir);
		else
			snprintf(err, errlen, "store: lock %s: %s", lp, strerror(e));
		if (s->lock_fd >= 0)
			close(s->lock_fd);
		free(s);
		return NULL;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "store: libsodium cannot start");
		close(s->lock_fd);
		free(s);
		return NULL;
	}
	randombytes_buf(s->dedup_key, sizeof s->dedup_key);
	int rc = mdb_env_create(&s->env);
	if (rc) {
		snprintf(err, errlen, "store: mdb_env_create: %s", mdb_strerror(rc));
		close(s->lock_fd);
		free(s);
		return NULL;
	}
	if ((rc = mdb_env_set_maxdbs(s->env, 12)) != 0 ||
	    (map_bytes && (rc = mdb_env_set_mapsize(s->env, map_bytes)) != 0)) {
		snprintf(err, errlen, "store: configure: %s", mdb_strerror(rc));
		goto fail;
	}
	/* No MDB_NOSYNC / MDB_NOMETASYNC: mdb_txn_commit fsyncs data and meta
	 * page before it returns, which is what lets the caller ack after it. */
	rc = mdb_env_open(s->env, dir, 0, 0600);
	if (rc) {
		snprintf(err, errlen, "store: open %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	/* A reader slot left by a process that died inside a read transaction
	 * pins old pages forever (the map fills); clear such slots now. */
	int dead;
	rc = mdb_reader_check(s->env, &dead);
	if (rc) {
		snprintf(err, errlen, "store: reader check %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	if (open_dbs(s, err, errlen) != 0 || count_rebuild(s, err, errlen) != 0)
		goto fail;
	s->fd = -1;
	mdb_filehandle_t fd;
	struct stat fst;
	if (mdb_env_get_fd(s->env, &fd) == 0) {
		s->fd = fd;
		if (fstat(fd, &fst) == 0)
			s->file_bytes = (uint64_t)fst.st_blocks * 512;
	}
	MDB_txn *ro;
	MDB_envinfo info;
	MDB_stat est;
	s->disk_room = UINT64_MAX;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &ro) == 0) {
		if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &est) == 0)
			room_sample(s, ro, (uint64_t)info.me_last_pgno + 1, est.ms_psize);
		mdb_txn_abort(ro);
	}
	return s;
fail:
	mdb_env_close(s->env);
	close(s->lock_fd);
	free(s);
	return NULL;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	store_abort(s); /* uncommitted writes are dropped, as on a crash */
	mdb_env_close(s->env);
	close(s->lock_fd);
	maps_free(s);
	free(s->undo);
	free(s->tmp);
	free(s);
}

/* ---- transactions ---------------------------------------------------------------- */

int store_begin(struct store *s)
{
	if (s->txn)
		return 0;
	int rc = mdb_txn_begin(s->env, NULL, 0, &s->txn);
	if (rc) {
		s->txn = NULL;
		return map_err(rc);
	}
	s->first_err = 0;
	s->charge = 0;
	s->pages_valid = 0;
	s->depth = 0; /* looked at by the first request */
	MDB_envinfo info;
	MDB_stat st;
	if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &st) == 0 && st.ms_psize) {
		s->psize = st.ms_psize;
		s->map_pages = info.me_mapsize / st.ms_psize;
		s->base_pages = (uint64_t)info.me_last_pgno + 1;
	} else {
		s->psize = 4096;
		s->map_pages = s->base_pages = 0; /* unknown: every request is isolated */
	}
	room_sample(s, s->txn, s->base_pages, s->psize);
	return 0;
}

static void child_end(struct store *s, int keep)
{
	if (!s->child)
		return;
	if (keep && !s->child_err) {
		int rc = mdb_txn_commit(s->child);
		if (rc && !s->first_err)
			s->first_err = map_err(rc); /* merging into the parent failed: the parent is unusable */
	} else {
		mdb_txn_abort(s->child);
		undo_to(s, s->undo_child); /* its count changes go with it */
	}
	s->child = NULL;
	s->child_err = 0;
}

int store_commit(struct store *s)
{
	if (!s->txn)
		return 0;
	child_end(s, 0);
	s->in_req = 0;
	if (s->first_err) {
		/* a write failed in the transaction itself: nothing of it may stay */
		int e = s->first_err;
		store_abort(s);
		return e;
	}
	int rc = mdb_txn_commit(s->txn);
	/* LMDB frees the transaction whether or not the commit succeeded. */
	s->txn = NULL;
	keep_free(s);
	if (rc) {
		undo_to(s, 0); /* nothing of it is on disk: nor in the counts */
		return txn_err(s, rc);
	}
	s->nundo = 0;
	struct stat fst;
	if (s->fd >= 0 && fstat(s->fd, &fst) == 0) {
		uint64_t now = (uint64_t)fst.st_blocks * 512;
		uint64_t grew = now > s->file_bytes ? now - s->file_bytes : 0;
		s->growth_max -= s->growth_max / 256;
		if (grew > s->growth_max)
			s->growth_max = grew;
		s->file_bytes = now;
	}
	return 0;
}

void store_abort(struct store *s)
{
	child_end(s, 0);
	s->in_req = 0;
	if (s->txn) {
		mdb_txn_abort(s->txn);
		s->txn = NULL;
	}
	undo_to(s, 0);
	keep_free(s);
}

/* ---- mailboxes --------------------------------------------------------------------- */

/* A count per user (CNT_MBOX: mailbox entries; CNT_SENDERS: undelivered
 * entries whose message the user sent; CNT_RCPTS: stored receipts), in
 * memory: derived from the databases at open (count_rebuild), changed with
 * the transaction, put back by the undo log when it is dropped. */
static uint32_t u32_get(struct store *s, enum cnt map, uint64_t user)
{
	uint64_t key = cnt_key(user);
	const uint64_t *v = key ? u64map_get(&s->cnt[map], key) : NULL;
	return v ? (uint32_t)*v : 0;
}

/* Out of memory for a count: the transaction (or the request's nested one)
 * cannot be kept, as after a failed LMDB write. */
static int mem_err(struct store *s)
{
	int *first = s->child ? &s->child_err : &s->first_err;
	if (!*first)
		*first = -ENOMEM;
	return -ENOMEM;
}

/* Set a map's value of key (0 removes it), remembering the old one for undo.
 * Out of memory, a count fails the transaction; the dedup index is left as
 * it was and the call succeeds: an entry it lacks can only miss a resend
 * (stored twice, as without dedup), one it keeps for a pruned record is
 * checked against the log and missed too. */
static int map_set(struct store *s, enum cnt map, uint64_t key, uint64_t n)
{
	struct u64map *m = map_of(s, map, key);
	const uint64_t *at = u64map_get(m, key);
	uint64_t old = at ? *at : 0;
	if (old == n)
		return 0;
	if (s->nundo == s->undo_cap) {
		size_t cap = s->undo_cap ? s->undo_cap * 2 : 256;
		struct cnt_undo *u = realloc(s->undo, cap * sizeof *u);
		if (!u)
			return map == CNT_DEDUP ? 0 : mem_err(s);
		s->undo = u;
		s->undo_cap = cap;
	}
	if (n == 0)
		u64map_del(m, key);
	else if (u64map_put(m, key, n) != 0)
		return map == CNT_DEDUP ? 0 : mem_err(s);
	s->undo[s->nundo++] = (struct cnt_undo){.key = key, .old = old, .map = (uint8_t)map};
	return 0;
}

/* Set a user's count (0 removes it), remembering the old one for undo. */
static int u32_set(struct store *s, enum cnt map, uint64_t user, uint32_t n)
{
	uint64_t key = cnt_key(user);
	return key ? map_set(s, map, key, n) : -EINVAL;
}

/* Put the counts back as they were before undo entry `to`. */
static void undo_to(struct store *s, size_t to)
{
	while (s->nundo > to) {
		const struct cnt_undo *u = &s->undo[--s->nundo];
		if (u->old == 0)
			u64map_del(map_of(s, u->map, u->key), u->key);
		else
			(void)u64map_put(map_of(s, u->map, u->key), u->key, u->old); /* the key was there: no allocation */
	}
}

/* A count for the API: 0 also when the store fails (the caller cannot tell,
 * and a refused write follows anyway). */
static uint32_t count_of(struct store *s, enum cnt map, uint64_t user)
{
	return ready(s) != 0 ? 0 : u32_get(s, map, user);
}

/* Add delta, saturating at 0 (a count that drifted never wraps around) and
 * at 2^32 - 1. */
static int u32_add(struct store *s, enum cnt map, uint64_t user, int64_t delta)
{
	int64_t n = (int64_t)u32_get(s, map, user) + delta;
	return u32_set(s, map, user, n < 0 ? 0 : n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
}

/* Pages in use by every database (free list included) against the map, in
 * per mille. A request that adds data is refused before it writes anything
 * at STORE_FULL_PERMILLE (the rest is headroom for the deletes that free
 * space again); anything is refused at STORE_HARD_PERMILLE. */
#define STORE_FULL_PERMILLE 900u
#define STORE_HARD_PERMILLE 980u
#define STORE_DEPTH 8u /* B-tree depth bound for the page charge (4 KiB pages, far more entries than we hold) */
#define STORE_DEPTH_EVERY 512u /* writes charged between two looks at the trees' depth */

/* Every database, the free list's own pages included, as txn sees them:
 * the pages in use, and the deepest tree (STORE_DEPTH if one cannot say). */
static uint64_t trees_stat(struct store *s, MDB_txn *txn, unsigned *depth)
{
	uint64_t pages = 0;
	unsigned d = 0;
	MDB_dbi dbis[] = {0 /* FREE_DBI: the free list */, 1 /* MAIN_DBI */, s->msgs, s->mbox, s->dlog,
			  s->groups, s->meta, s->rcpts};
	for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
		MDB_stat st;
		if (mdb_stat(txn, dbis[i], &st) != 0) {
			d = STORE_DEPTH;
			continue;
		}
		pages += stat_pages(&st);
		if (st.ms_depth > d)
			d = st.ms_depth;
	}
	if (depth)
		*depth = d;
	return pages;
}

static uint64_t tree_pages(struct store *s, MDB_txn *txn)
{
	return trees_stat(s, txn, NULL);
}

/* The depth the page charge assumes: the deepest tree's now, plus two. A
 * write splits at most one leaf, and a leaf of our keys (at most 24 bytes)
 * splits only after some 25 inserts into it, so STORE_DEPTH_EVERY writes add
 * at most some 20 leaves: not enough to deepen a tree by two levels (a
 * branch page holds well over 50 keys). So looking again every
 * STORE_DEPTH_EVERY writes keeps the bound. Capped at STORE_DEPTH. */
static void depth_sample(struct store *s, MDB_txn *txn)
{
	unsigned d;
	(void)trees_stat(s, txn, &d);
	s->depth = d + 2 < STORE_DEPTH ? d + 2 : STORE_DEPTH;
	s->depth_writes = 0;
}

static uint64_t used_permille(struct store *s)
{
	/* Counting the pages asks every tree (a tenth of a request's cost): an
	 * upper bound does while it is clearly below the lowest threshold. The
	 * pages counted in this transaction plus every request's charge since
	 * is one, as long as every write since belonged to a request (ready()
	 * drops the count otherwise). */
	if (s->txn && s->map_pages && s->pages_valid) {
		uint64_t bound = s->pages_exact + (s->charge - s->pages_charge);
		if (bound * 1000 < s->map_pages * (uint64_t)STORE_FULL_PERMILLE)
			return bound * 1000 / s->map_pages;
	}
	MDB_envinfo info;
	MDB_stat st;
	if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0 || !st.ms_psize)
		return 0;
	uint64_t total = info.me_mapsize / st.ms_psize, pages = tree_pages(s, T(s));
	if (s->txn) {
		s->pages_exact = pages;
		s->pages_charge = s->charge;
		s->pages_valid = 1;
	}
	return total ? pages * 1000 / total : 1000;
}

/* What the store can still grow by, as txn sees it: the file system's free
 * space for unprivileged writers (what LMDB's pwrite can use) and the pages
 * of the file (file_pages of psize) that no tree uses (free, or soon
 * reusable). Unknown (UINT64_MAX) leaves the map's guard only. */
static void room_sample(struct store *s, MDB_txn *txn, uint64_t file_pages, uint64_t psize)
{
	struct statvfs v;
	if (s->fd < 0 || fstatvfs(s->fd, &v) != 0) {
		s->disk_room = UINT64_MAX;
		return;
	}
	uint64_t used = tree_pages(s, txn);
	s->disk_room = (uint64_t)v.f_bavail * v.f_frsize + (file_pages > used ? (file_pages - used) * psize : 0);
}

int store_disk_low(const struct store *s)
{
	return s->disk_room < store_disk_reserve(s);
}

uint64_t store_disk_reserve(const struct store *s)
{
	uint64_t r = 4 * s->growth_max;
	return r > s->min_free ? r : s->min_free;
}

void store_set_min_free(struct store *s, uint64_t bytes)
{
	s->min_free = bytes;
}

static int nearly_full(struct store *s)
{
	return used_permille(s) >= STORE_FULL_PERMILLE;
}

/* ---- requests ------------------------------------------------------------------------ */

int store_req_begin(struct store *s, enum store_req kind, size_t writes, size_t bytes)
{
	int rc = need_txn(s);
	if (rc)
		return rc;
	child_end(s, 0);
	if (s->first_err)
		return s->first_err; /* the iteration's transaction failed already */
	uint64_t used = used_permille(s);
	if (used >= (kind == STORE_REQ_ADMIT ? STORE_FULL_PERMILLE : STORE_HARD_PERMILLE))
		return -ENOSPC; /* nothing written: the transaction stays usable */
	/* The file system fills before the map can (a map bigger than the disk,
	 * or other files): LMDB's writes reach the disk at the commit only, and a
	 * commit that fails loses the whole iteration. So new data stops while
	 * the reserve is still free; deletes, which mostly reuse the file's own
	 * free pages, go on down to an eighth of it. */
	uint64_t reserve = store_disk_reserve(s);
	if (s->disk_room < (kind == STORE_REQ_ADMIT ? reserve : reserve / 8)) {
		s->refused_disk++;
		return -ENOSPC;
	}
	/* An upper bound of the pages this request can make LMDB allocate: per
	 * write a copied root-to-leaf path and a split on every level, plus the
	 * bytes themselves. While the file as it was at the transaction's start,
	 * plus every charge so far, stays below the map's end, no write of this
	 * transaction can fail for want of space, and the request writes straight
	 * into it. Near the end, the request gets a nested transaction of its own,
	 * so that a full map fails this request only. */
	if (!s->depth || s->depth_writes + writes > STORE_DEPTH_EVERY)
		depth_sample(s, T(s));
	s->depth_writes += writes;
	uint64_t pages = (uint64_t)writes * (2 * s->depth + 1) + bytes / (s->psize ? s->psize : 4096) + 2;
	uint64_t margin = s->map_pages / 100 + 16; /* the free list's own pages at commit */
	int edge = !s->map_pages || s->base_pages + s->charge + pages + margin > s->map_pages ||
		   (s->fault_left && s->fault_err == -ENOSPC);
	s->charge += pages;
	if (edge) {
		rc = mdb_txn_begin(s->env, s->txn, 0, &s->child);
		if (rc) {
			s->child = NULL;
			return map_err(rc);
		}
		s->child_err = 0;
		s->undo_child = s->nundo;
	}
	s->in_req = 1;
	return 0;
}

int store_req_end(struct store *s, int keep)
{
	int isolated = s->child != NULL, bad = isolated ? s->child_err : s->first_err;
	child_end(s, keep);
	s->in_req = 0;
	if (bad && !isolated)
		return bad; /* written straight into the transaction: the iteration fails */
	return s->first_err;
}

int store_failed(const struct store *s)
{
	return s->first_err;
}

void store_inject(struct store *s, unsigned ops, int err, unsigned count)
{
	s->fault_ops = ops;
	s->fault_err = err;
	s->fault_left = count;
}

int store_put(struct store *s, const struct store_msg *m, const uint64_t *rcpt, size_t n, uint32_t mailbox_max,
	      size_t *added)
{
	if (added)
		*added = 0;
	if ((m->kind != STORE_MSG && m->kind != STORE_RECEIPT) || (m->len && !m->body) || (n && !rcpt))
		return -EINVAL;
	int rc = ready(s);
	if (rc)
		return rc;
	if (!s->in_req && nearly_full(s))
		return -ENOSPC; /* nothing written: the transaction stays usable */

	uint8_t mk[8];
	wire_be64_put(mk, m->smid);
	MDB_val k = mval(mk, 8), v;
	/* An smid stored twice would share one refcount between two messages:
	 * refuse before writing anything. */
	rc = mdb_get(T(s), s->msgs, &k, &v);
	if (rc == 0)
		return -EEXIST;
	if (rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	if ((rc = fault(s, STORE_OP_MSG)) != 0)
		return rc;

	/* Mailbox entries first: the refcount is known only once the full
	 * mailboxes have been skipped. All of it is one transaction, so the
	 * order is invisible to readers. */
	uint32_t refs = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t c = u32_get(s, CNT_MBOX, rcpt[i]);
		if (c >= mailbox_max)
			continue;
		uint8_t bk[16], one = 0;
		MDB_val ek = mbox_key(bk, rcpt[i], m->smid), ev = mval(&one, 1);
		rc = mdb_put(T(s), s->mbox, &ek, &ev, MDB_NOOVERWRITE);
		if (rc == MDB_KEYEXIST)
			continue; /* the same user twice in rcpt: one entry */
		if (rc)
			return txn_err(s, rc);
		if ((rc = u32_set(s, CNT_MBOX, rcpt[i], c + 1)) != 0)
			return rc;
		refs++;
	}
	if (added)
		*added = refs;
	if (refs == 0)
		return n == 1 ? STORE_E_FULL : 0;
	if (m->kind == STORE_MSG && (rc = u32_add(s, CNT_SENDERS, m->from, refs)) != 0)
		return rc;

	v = mval(NULL, (size_t)MSG_HDR + m->len);
	rc = mdb_put(T(s), s->msgs, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
	if (rc)
		return txn_err(s, rc);
	msg_encode(v.mv_data, m, refs);
	return 0;
}

/* Rewrite message k (its value v, as read in this transaction) with refs
 * references. v points into the map, and the put may overwrite that very
 * page: the rewrite is from a copy, taken before any write. */
static int msg_set_refs(struct store *s, MDB_val *k, const MDB_val *v, uint32_t refs)
{
	int rc = tmp_reserve(s, v->mv_size);
	if (rc)
		return rc;
	memcpy(s->tmp, v->mv_data, v->mv_size);
	put_u32(s->tmp + MSG_OFF_REFS, refs);
	MDB_val nv = mval(s->tmp, v->mv_size);
	rc = mdb_put(T(s), s->msgs, k, &nv, 0);
	return rc ? txn_err(s, rc) : 0;
}

int store_put_copy(struct store *s, const struct store_msg *m, uint64_t user, uint32_t mailbox_max)
{
	if (m->kind != STORE_MSG || !m->smid || (m->len && !m->body))
		return -EINVAL;
	int rc = ready(s);
	if (rc)
		return rc;
	if (!s->in_req && nearly_full(s))
		return -ENOSPC;
	uint8_t mk[8];
	wire_be64_put(mk, m->smid);
	MDB_val k = mval(mk, 8), v;
	rc = mdb_get(T(s), s->msgs, &k, &v);
	if (rc == MDB_NOTFOUND)
		return store_put(s, m, &user, 1, mailbox_max, NULL);
	if (rc)
		return txn_err(s, rc);
	/* another member's copy came first: one more reference to it */
	uint32_t refs;
	struct store_msg have;
	if ((rc = msg_decode(&v, m->smid, &have, &refs)) != 0)
		return rc;
	if (have.kind != STORE_MSG || have.from != m->from)
		return -EEXIST; /* another message under this id: refuse, as store_put does */
	uint8_t bk[16], one = 0;
	MDB_val ek = mbox_key(bk, user, m->smid), ev;
	rc = mdb_get(T(s), s->mbox, &ek, &ev);
	if (rc == 0)
		return STORE_E_EXISTS; /* this user's copy is here already */
	if (rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	uint32_t c = u32_get(s, CNT_MBOX, user);
	if (c >= mailbox_max)
		return STORE_E_FULL;
	if ((rc = fault(s, STORE_OP_MSG)) != 0)
		return rc;
	if ((rc = msg_set_refs(s, &k, &v, refs + 1)) != 0)
		return rc;
	ev = mval(&one, 1);
	if ((rc = mdb_put(T(s), s->mbox, &ek, &ev, MDB_NOOVERWRITE)) != 0)
		return txn_err(s, rc);
	if ((rc = u32_set(s, CNT_MBOX, user, c + 1)) != 0)
		return rc;
	return u32_add(s, CNT_SENDERS, m->from, 1);
}

size_t store_users(struct store *s, uint64_t *out, size_t max)
{
	static const enum cnt maps[] = {CNT_MBOX, CNT_RCPTS};
	size_t n = 0;
	for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
		enum cnt map = maps[i];
		size_t pos = 0;
		const struct u64map_ent *e;
		while ((e = u64map_next(&s->cnt[map], &pos))) {
			if (map == CNT_RCPTS && count_of(s, CNT_MBOX, e->key - 1))
				continue; /* listed already */
			if (n < max)
				out[n] = e->key - 1;
			n++;
		}
	}
	return n;
}

/* Drop one reference to message smid, deleting it at zero; *from gets its
 * sender (0 when the message is missing). */
static int msg_unref(struct store *s, uint64_t smid, uint64_t *from, uint32_t *len)
{
	*from = 0;
	*len = 0;
	uint8_t mk[8];
	wire_be64_put(mk, smid);
	MDB_val k = mval(mk, 8), v;
	int rc = mdb_get(T(s), s->msgs, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0; /* a dangling entry: dropping it is all there is to do */
	if (rc)
		return txn_err(s, rc);
	uint32_t refs;
	struct store_msg m;
	if ((rc = msg_decode(&v, smid, &m, &refs)) != 0)
		return rc;
	*from = m.from;
	*len = m.len;
	int counted = m.kind == STORE_MSG; /* m.from stays valid: copied above; v is not read after a write */
	if (refs <= 1) {
		if ((rc = mdb_del(T(s), s->msgs, &k, NULL)) != 0)
			return txn_err(s, rc);
	} else if ((rc = msg_set_refs(s, &k, &v, refs - 1)) != 0) {
		return rc;
	}
	return counted ? u32_add(s, CNT_SENDERS, *from, -1) : 0;
}

int store_ack(struct store *s, uint64_t user, uint64_t smid, uint64_t *from, uint32_t *len)
{
	uint64_t f0;
	uint32_t l0;
	if (!from)
		from = &f0;
	if (!len)
		len = &l0;
	*from = 0;
	*len = 0;
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_DELETE)) != 0)
		return rc;
	uint8_t bk[16];
	MDB_val k = mbox_key(bk, user, smid);
	rc = mdb_del(T(s), s->mbox, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return STORE_E_NOTFOUND;
	if (rc)
		return txn_err(s, rc);
	uint32_t c = u32_get(s, CNT_MBOX, user);
	/* c == 0 would mean the count drifted below the entries; leave it at 0
	 * rather than wrap around and lock the mailbox as full. */
	if (c > 0 && (rc = u32_set(s, CNT_MBOX, user, c - 1)) != 0)
		return rc;
	return msg_unref(s, smid, from, len);
}

uint32_t store_sender_count(struct store *s, uint64_t from)
{
	return count_of(s, CNT_SENDERS, from);
}

/* ---- stored receipts ------------------------------------------------------------------ */

static void rcpt_key(uint8_t k[24], uint64_t owner, uint64_t peer, uint64_t smid)
{
	wire_be64_put(k, owner);
	wire_be64_put(k + 8, peer);
	wire_be64_put(k + 16, smid);
}

int store_rcpt_put(struct store *s, uint64_t owner, uint64_t peer, uint64_t smid, uint8_t kind, uint32_t per_peer,
		   uint32_t max_total, int *dropped)
{
	int d0;
	if (!dropped)
		dropped = &d0;
	*dropped = 0;
	if (kind == 0 || per_peer == 0)
		return -EINVAL;
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_RECEIPT)) != 0)
		return rc;
	uint8_t kb[24];
	rcpt_key(kb, owner, peer, smid);
	MDB_val k = mval(kb, 24), v;
	rc = mdb_get(T(s), s->rcpts, &k, &v);
	if (rc == 0) {
		/* coalesced: one record per message, the stronger kind (read > delivered) */
		if (v.mv_size == 1 && ((const uint8_t *)v.mv_data)[0] >= kind)
			return 0;
		uint8_t kv = kind;
		MDB_val nv = mval(&kv, 1);
		rc = mdb_put(T(s), s->rcpts, &k, &nv, 0);
		return rc ? txn_err(s, rc) : 0;
	}
	if (rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	uint32_t total = u32_get(s, CNT_RCPTS, owner);
	/* at most per_peer records per (owner, peer): the oldest gives way (an
	 * owner with fewer than per_peer in all cannot have that many from one
	 * peer: no need to count them) */
	uint32_t have = 0;
	uint8_t oldest[24];
	if (total >= per_peer) {
		MDB_cursor *c;
		rc = mdb_cursor_open(T(s), s->rcpts, &c);
		if (rc)
			return txn_err(s, rc);
		uint8_t lo[24];
		rcpt_key(lo, owner, peer, 0);
		MDB_val ck = mval(lo, 24), cv;
		for (rc = mdb_cursor_get(c, &ck, &cv, MDB_SET_RANGE); rc == 0 && have < per_peer;
		     rc = mdb_cursor_get(c, &ck, &cv, MDB_NEXT)) {
			if (ck.mv_size != 24 || memcmp(ck.mv_data, lo, 16) != 0)
				break;
			if (have == 0)
				memcpy(oldest, ck.mv_data, 24);
			have++;
		}
		mdb_cursor_close(c);
		if (rc && rc != MDB_NOTFOUND)
			return txn_err(s, rc);
	}
	if (have >= per_peer) {
		if (memcmp(kb, oldest, 24) < 0) {
			*dropped = 1; /* older than everything kept for this peer */
			return 0;
		}
		MDB_val ok = mval(oldest, 24);
		rc = mdb_del(T(s), s->rcpts, &ok, NULL);
		if (rc)
			return txn_err(s, rc);
		*dropped = 1;
	} else if (total >= max_total) {
		return STORE_E_FULL; /* nothing written */
	} else if ((rc = u32_add(s, CNT_RCPTS, owner, 1)) != 0) {
		return rc;
	}
	uint8_t kv = kind;
	v = mval(&kv, 1);
	rc = mdb_put(T(s), s->rcpts, &k, &v, 0);
	return rc ? txn_err(s, rc) : 0;
}

int store_rcpt_del(struct store *s, uint64_t owner, uint64_t peer, uint64_t smid)
{
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_DELETE)) != 0)
		return rc;
	uint8_t kb[24];
	rcpt_key(kb, owner, peer, smid);
	MDB_val k = mval(kb, 24);
	rc = mdb_del(T(s), s->rcpts, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return STORE_E_NOTFOUND;
	if (rc)
		return txn_err(s, rc);
	return u32_add(s, CNT_RCPTS, owner, -1);
}

long store_rcpt_scan(struct store *s, uint64_t owner, struct store_rcpt_pos *pos, size_t max,
		     int (*fn)(void *arg, const struct store_rcpt *r), void *arg)
{
	int rc = ready(s);
	if (rc)
		return rc;
	if (max == 0)
		return 0;
	MDB_cursor *c;
	rc = mdb_cursor_open(T(s), s->rcpts, &c);
	if (rc)
		return txn_err(s, rc);
	uint8_t kb[24];
	rcpt_key(kb, owner, pos->peer, pos->smid);
	MDB_val k = mval(kb, 24), v;
	long visited = 0;
	int skip_equal = pos->peer != 0 || pos->smid != 0; /* resume after the last one handed out */
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && (size_t)visited < max;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 24 || wire_be64_get(k.mv_data) != owner)
			break;
		struct store_rcpt r;
		r.owner = owner;
		r.peer = wire_be64_get((const uint8_t *)k.mv_data + 8);
		r.smid = wire_be64_get((const uint8_t *)k.mv_data + 16);
		r.kind = v.mv_size == 1 ? ((const uint8_t *)v.mv_data)[0] : 0;
		if (skip_equal && r.peer == pos->peer && r.smid == pos->smid)
			continue;
		visited++;
		if (r.kind && fn(arg, &r) != 0) {
			rc = MDB_NOTFOUND; /* not handed out: *pos stays before it */
			break;
		}
		pos->peer = r.peer;
		pos->smid = r.smid;
	}
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	return visited;
}

uint32_t store_rcpt_count(struct store *s, uint64_t owner)
{
	return count_of(s, CNT_RCPTS, owner);
}

/* The callback must not write to the store: the cursor walks pages that a
 * write could change under it. Entries whose message is missing (they cannot
 * be made by this file; only by damage) are skipped rather than failing the
 * whole mailbox forever. */
long store_scan(struct store *s, uint64_t user, uint64_t after, size_t max,
		int (*fn)(void *arg, const struct store_msg *m), void *arg)
{
	int rc = ready(s);
	if (rc)
		return rc;
	if (max == 0 || after == UINT64_MAX)
		return 0;
	MDB_cursor *c;
	rc = mdb_cursor_open(T(s), s->mbox, &c);
	if (rc)
		return txn_err(s, rc);
	uint8_t bk[16];
	MDB_val k = mbox_key(bk, user, after + 1), v;
	long visited = 0;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && (size_t)visited < max;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16 || wire_be64_get(k.mv_data) != user)
			break; /* past this user's entries */
		uint64_t smid = wire_be64_get((const uint8_t *)k.mv_data + 8);
		uint8_t mk[8];
		memcpy(mk, (const uint8_t *)k.mv_data + 8, 8);
		MDB_val km = mval(mk, 8), vm;
		int r = mdb_get(T(s), s->msgs, &km, &vm);
		if (r == MDB_NOTFOUND)
			continue;
		if (r) {
			rc = r;
			break;
		}
		struct store_msg m;
		if (msg_decode(&vm, smid, &m, NULL) != 0) {
			mdb_cursor_close(c);
			return -EIO;
		}
		visited++;
		if (fn(arg, &m) != 0) {
			rc = MDB_NOTFOUND; /* stopped by the caller: not an error */
			break;
		}
	}
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	return visited;
}

uint32_t store_count(struct store *s, uint64_t user)
{
	return count_of(s, CNT_MBOX, user);
}

/* ---- dedup (see "Dedup" at the top) ------------------------------------------------ */

uint64_t store_dedup_index_key(const struct store *s, uint64_t from, uint64_t cmid)
{
	return dedup_hash(s, from, cmid);
}

/* Whether the log's record of smid is (from, cmid): *yes. */
static int dlog_is(struct store *s, uint64_t smid, uint64_t from, uint64_t cmid, int *yes)
{
	*yes = 0;
	uint8_t kb[8];
	wire_be64_put(kb, smid);
	MDB_val k = mval(kb, 8), v;
	int rc = mdb_get(T(s), s->dlog, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return txn_err(s, rc);
	uint64_t f, c;
	if (dlog_val_get(&v, &f, &c) != 0)
		return -EIO;
	*yes = f == from && c == cmid;
	return 0;
}

int store_dedup_get(struct store *s, uint64_t from, uint64_t cmid, uint64_t *smid)
{
	int rc = ready(s);
	if (rc)
		return rc;
	uint64_t h = dedup_hash(s, from, cmid);
	const uint64_t *at = u64map_get(map_of(s, CNT_DEDUP, h), h);
	if (!at)
		return STORE_E_NOTFOUND;
	uint64_t found = *at;
	int yes;
	if ((rc = dlog_is(s, found, from, cmid, &yes)) != 0)
		return rc;
	if (!yes)
		return STORE_E_NOTFOUND; /* another (from, cmid) of the same hash */
	*smid = found;
	return 0;
}

/* Replaces an existing entry of (from, cmid) in the index (the older log
 * record stays until pruned): the caller looks up first and records only
 * for a message it has just stored. */
int store_dedup_put(struct store *s, uint64_t from, uint64_t cmid, uint64_t smid)
{
	if (!smid)
		return -EINVAL;
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_DEDUP)) != 0)
		return rc;
	uint8_t kb[8], vb[DLOG_VAL];
	wire_be64_put(kb, smid);
	dlog_val_put(vb, from, cmid);
	MDB_val k = mval(kb, 8), v = mval(vb, sizeof vb);
	rc = mdb_put(T(s), s->dlog, &k, &v, 0);
	if (rc)
		return txn_err(s, rc);
	return map_set(s, CNT_DEDUP, dedup_hash(s, from, cmid), smid);
}

/* The log is in smid order: delete from its front while the smid is below
 * `before`, at most max records; the index forgets a record's key when it
 * still names that record. */
long store_dedup_prune(struct store *s, uint64_t before, size_t max)
{
	int rc = ready(s);
	if (rc)
		return rc;
	if (max == 0)
		return 0;
	MDB_cursor *c;
	rc = mdb_cursor_open(T(s), s->dlog, &c);
	if (rc)
		return txn_err(s, rc);
	MDB_val k, v;
	long deleted = 0;
	int err = 0;
	/* after a delete the cursor stands on the next record, and MDB_NEXT
	 * returns that one (LMDB's C_DEL) */
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		uint64_t smid = k.mv_size == 8 ? wire_be64_get(k.mv_data) : 0; /* another size: not ours, gone */
		if ((size_t)deleted == max || smid >= before)
			break;
		uint64_t from, cmid;
		if (dlog_val_get(&v, &from, &cmid) == 0) {
			uint64_t h = dedup_hash(s, from, cmid);
			const uint64_t *at = u64map_get(map_of(s, CNT_DEDUP, h), h);
			if (at && *at == smid && (err = map_set(s, CNT_DEDUP, h, 0)) != 0)
				break;
		}
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
		deleted++;
	}
	mdb_cursor_close(c);
	if (err)
		return err;
	if (rc && rc != MDB_NOTFOUND)
		return txn_err(s, rc);
	return deleted;
}

/* ---- groups ------------------------------------------------------------------------ */

static int group_write(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n,
		       unsigned flags)
{
	if (n && !members)
		return -EINVAL;
	if (n > (UINT32_MAX - 8) / 8)
		return -E2BIG; /* LMDB values are at most 4 GiB */
	int rc = fault(s, STORE_OP_GROUP);
	if (rc)
		return rc;
	uint8_t kb[8];
	wire_be64_put(kb, gid);
	MDB_val k = mval(kb, 8), v = mval(NULL, 8 + n * 8);
	rc = mdb_put(T(s), s->groups, &k, &v, flags | MDB_RESERVE);
	if (rc == MDB_KEYEXIST)
		return STORE_E_EXISTS;
	if (rc)
		return txn_err(s, rc);
	uint8_t *p = v.mv_data;
	put_u64(p, owner);
	if (n)
		memcpy(p + 8, members, n * 8);
	return 0;
}

int store_group_create(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n)
{
	int rc = ready(s);
	return rc ? rc : group_write(s, gid, owner, members, n, MDB_NOOVERWRITE);
}

/* The member list is copied out of LMDB into memory freed when the
 * transaction ends: LMDB values are only 2-byte aligned, so the array cannot
 * be handed out in place, and a pointer into the map would in any case go
 * stale at the next write of the same transaction (LMDB's rule), while the
 * contract promises it until the transaction ends. *members is NULL when the
 * list is empty. */
int store_group_get(struct store *s, uint64_t gid, uint64_t *owner, const uint64_t **members, size_t *n)
{
	int rc = ready(s);
	if (rc)
		return rc;
	uint8_t kb[8];
	wire_be64_put(kb, gid);
	MDB_val k = mval(kb, 8), v;
	rc = mdb_get(T(s), s->groups, &k, &v);
	if (rc == MDB_NOTFOUND)
		return STORE_E_NOTFOUND;
	if (rc)
		return txn_err(s, rc);
	if (v.mv_size < 8 || (v.mv_size - 8) % 8)
		return -EIO;
	size_t cnt = (v.mv_size - 8) / 8;
	const uint64_t *list = NULL;
	if (cnt) {
		struct keep *kp = malloc(sizeof *kp + cnt * 8);
		if (!kp)
			return -ENOMEM;
		memcpy(kp->v, (const uint8_t *)v.mv_data + 8, cnt * 8);
		kp->next = s->keep;
		s->keep = kp;
		list = kp->v;
	}
	*owner = get_u64(v.mv_data);
	*members = list;
	*n = cnt;
	return 0;
}

int store_group_set(struct store *s, uint64_t gid, uint64_t owner, const uint64_t *members, size_t n)
{
	int rc = ready(s);
	if (rc)
		return rc;
	/* Replace only: a set of a deleted group must not bring it back. */
	uint8_t kb[8];
	wire_be64_put(kb, gid);
	MDB_val k = mval(kb, 8), v;
	rc = mdb_get(T(s), s->groups, &k, &v);
	if (rc == MDB_NOTFOUND)
		return STORE_E_NOTFOUND;
	if (rc)
		return txn_err(s, rc);
	return group_write(s, gid, owner, members, n, 0);
}

int store_group_delete(struct store *s, uint64_t gid)
{
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_GROUP)) != 0)
		return rc;
	uint8_t kb[8];
	wire_be64_put(kb, gid);
	MDB_val k = mval(kb, 8);
	rc = mdb_del(T(s), s->groups, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return STORE_E_NOTFOUND;
	return rc ? txn_err(s, rc) : 0;
}

/* The counter is written in the caller's transaction: an id handed out in a
 * transaction that is then aborted may be handed out again, which is safe
 * because nothing that used it was committed either. */
int store_group_next_id(struct store *s, uint32_t node, uint32_t thread, uint32_t threads, uint64_t *gid)
{
	if (node > CLUSTER_GID_NODE_MAX || threads == 0 || thread >= threads)
		return -EINVAL; /* it would not fit the group id (runtime/cluster.h) */
	int rc = ready(s);
	if (rc)
		return rc;
	if ((rc = fault(s, STORE_OP_GROUP)) != 0)
		return rc;
	MDB_val k = mval("next_gid", 8), v;
	uint64_t next = 1;
	rc = mdb_get(T(s), s->meta, &k, &v);
	if (rc == 0) {
		if (v.mv_size != 8)
			return -EIO;
		next = get_u64(v.mv_data);
	} else if (rc != MDB_NOTFOUND) {
		return txn_err(s, rc);
	}
	/* the n-th id of this thread: counter n * threads + thread (never 0) */
	uint64_t counter = next * threads + thread;
	if (next == 0 || next > CLUSTER_GID_COUNTER_MAX / threads || counter > CLUSTER_GID_COUNTER_MAX)
		return -EOVERFLOW;
	uint8_t vb[8];
	put_u64(vb, next + 1);
	v = mval(vb, 8);
	rc = mdb_put(T(s), s->meta, &k, &v, 0);
	if (rc)
		return txn_err(s, rc);
	*gid = cluster_group_id(node, counter);
	return 0;
}

/* ---- stats ------------------------------------------------------------------------- */

static uint64_t entries(MDB_txn *txn, MDB_dbi dbi)
{
	MDB_stat st;
	return mdb_stat(txn, dbi, &st) == 0 ? st.ms_entries : 0;
}

/* Counts come from the open write transaction when there is one (so they
 * include its writes), else from a short read-only one; on failure the
 * database counts stay 0. map_used_bytes is as of the last commit. */
void store_get_stats(struct store *s, struct store_stats *st)
{
	memset(st, 0, sizeof *st);
	st->disk_room_bytes = s->disk_room == UINT64_MAX ? 0 : s->disk_room;
	st->disk_reserve_bytes = store_disk_reserve(s);
	st->refused_disk = s->refused_disk;

	MDB_envinfo info;
	MDB_stat es;
	if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &es) == 0) {
		st->map_used_bytes = ((uint64_t)info.me_last_pgno + 1) * es.ms_psize;
		st->map_bytes = info.me_mapsize;
	}

	MDB_txn *txn = s->txn, *ro = NULL;
	if (!txn) {
		if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &ro) != 0)
			return;
		txn = ro;
	}
	st->messages = entries(txn, s->msgs);
	st->mailbox_entries = entries(txn, s->mbox);
	st->dedup_entries = entries(txn, s->dlog);
	st->groups = entries(txn, s->groups);
	st->receipts = entries(txn, s->rcpts);
	st->senders = s->cnt[CNT_SENDERS].count;
	for (unsigned i = 0; i < DEDUP_PARTS; i++)
		if (s->dedup[i].e)
			st->dedup_index_bytes += (s->dedup[i].mask + 1) * sizeof(struct u64map_ent);
	if (ro)
		mdb_txn_abort(ro);
}
