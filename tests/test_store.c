/* test_store.c: criterion unit tests of the backend's LMDB store
 * (backend/store.h): durability across reopen and across a process that dies
 * without closing, aborted writes, mailbox scan order and bounds, shared group
 * messages and their reference counts, receipts, dedup and its incremental
 * prune, groups and their persisted id counter, and a full map.
 *
 * Every test gets its own directory under /tmp (the store itself lives in a
 * subdirectory that store_open has to create), removed afterwards.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <lmdb.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/store.h"
#include "proto/client.h"
#include "proto/wire.h"
#include "runtime/cluster.h"

#define MAP_BYTES (16u << 20)

static char tmpdir[64];
static char dbdir[96];
static struct store *st;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tmpdir, "/tmp/test_store.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	snprintf(dbdir, sizeof dbdir, "%s/db", tmpdir);
	st = NULL;
}

static void teardown(void)
{
	if (st)
		store_close(st);
	st = NULL;
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store, .init = setup, .fini = teardown);

static struct store *open_map(size_t map)
{
	char err[256] = "";
	struct store *s = store_open(dbdir, map, err, sizeof err);
	cr_assert_not_null(s, "store_open: %s", err);
	return s;
}

/* Close the test's store and open it again, as a restart does. */
static void reopen(void)
{
	store_close(st);
	st = open_map(MAP_BYTES);
}

/* ---- helpers ---------------------------------------------------------------- */

static struct store_msg msg(uint64_t smid, uint64_t from, uint64_t to, const char *body)
{
	return (struct store_msg){
		.smid = smid,
		.from = from,
		.to = to,
		.time_ms = 1700000000000u + smid,
		.kind = STORE_MSG,
		.body = (const uint8_t *)body,
		.len = (uint32_t)strlen(body),
	};
}

/* Put a 1:1 message to `to` with a generous bound. */
static void put1(uint64_t smid, uint64_t from, uint64_t to, const char *body)
{
	struct store_msg m = msg(smid, from, to, body);
	size_t added = 99;
	cr_assert_eq(store_put(st, &m, &to, 1, 1000, &added), 0);
	cr_assert_eq(added, 1);
}

static void commit(void)
{
	cr_assert_eq(store_commit(st), 0);
}

/* What a scan saw: copies, since the store's pointers last for the call. */
#define SEEN_MAX 64
struct seen {
	size_t n, stop_after; /* stop_after 0: never stop */
	struct store_msg m[SEEN_MAX];
	char body[SEEN_MAX][64];
};

static int collect(void *arg, const struct store_msg *m)
{
	struct seen *s = arg;
	cr_assert_lt(s->n, SEEN_MAX);
	cr_assert_lt(m->len, sizeof s->body[0]);
	s->m[s->n] = *m;
	memcpy(s->body[s->n], m->body, m->len);
	s->body[s->n][m->len] = 0;
	s->m[s->n].body = NULL;
	s->n++;
	return s->stop_after && s->n >= s->stop_after;
}

static long scan(uint64_t user, uint64_t after, size_t max, struct seen *s)
{
	size_t stop = s->stop_after;
	memset(s, 0, sizeof *s);
	s->stop_after = stop;
	return store_scan(st, user, after, max, collect, s);
}

static struct store_stats stats(void)
{
	struct store_stats x;
	store_get_stats(st, &x);
	return x;
}

/* ---- open, reopen, abort ------------------------------------------------------- */

Test(store, open_creates_dir_and_reopen_keeps_committed_data)
{
	st = open_map(MAP_BYTES);
	struct stat sb;
	cr_assert_eq(stat(dbdir, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0700, "data dir mode %o", sb.st_mode & 0777);

	cr_assert_eq(store_begin(st), 0);
	cr_assert_eq(store_begin(st), 0, "begin with a txn open is a no-op");
	put1(10, 1, 2, "kept");
	commit();
	cr_assert_eq(store_commit(st), 0, "commit without a txn is a no-op");

	/* Aborted: gone. */
	cr_assert_eq(store_begin(st), 0);
	put1(11, 1, 2, "aborted");
	store_abort(st);
	store_abort(st); /* twice is harmless */

	/* Implicit txn, never committed, then close: gone too. */
	put1(12, 1, 2, "closed uncommitted");
	reopen();

	struct seen s = { 0 };
	cr_assert_eq(scan(2, 0, 100, &s), 1);
	cr_assert_eq(s.m[0].smid, 10);
	cr_assert_str_eq(s.body[0], "kept");
	cr_assert_eq(store_count(st, 2), 1);
	struct store_stats x = stats();
	cr_assert_eq(x.messages, 1);
	cr_assert_eq(x.mailbox_entries, 1);
	cr_assert_eq(x.map_bytes, MAP_BYTES);
	cr_assert_gt(x.map_used_bytes, 0);
	cr_assert_leq(x.map_used_bytes, x.map_bytes);
	store_abort(st);
}

Test(store, open_failure_reports_error)
{
	char err[256] = "";
	/* The parent does not exist: mkdir of the last component fails. */
	snprintf(dbdir, sizeof dbdir, "%s/no/such", tmpdir);
	cr_assert_null(store_open(dbdir, MAP_BYTES, err, sizeof err));
	cr_assert_neq(strstr(err, "No such file"), NULL, "err: %s", err);

	/* A file where the directory should be. */
	snprintf(dbdir, sizeof dbdir, "%s/file", tmpdir);
	FILE *f = fopen(dbdir, "w");
	cr_assert_not_null(f);
	fclose(f);
	err[0] = 0;
	cr_assert_null(store_open(dbdir, MAP_BYTES, err, sizeof err));
	cr_assert_neq(err[0], 0);
}

/* The test's data dir opened with LMDB itself, to write what another
 * version would have. */
static MDB_env *raw_env(void)
{
	MDB_env *env;
	cr_assert_eq(mdb_env_create(&env), 0);
	cr_assert_eq(mdb_env_set_maxdbs(env, 16), 0);
	cr_assert_eq(mdb_env_set_mapsize(env, MAP_BYTES), 0);
	cr_assert_eq(mdb_env_open(env, dbdir, 0, 0600), 0);
	return env;
}

/* ...after a store was made there (and closed). */
static MDB_env *store_made_then_raw(void)
{
	st = open_map(MAP_BYTES);
	store_close(st);
	st = NULL;
	return raw_env();
}

/* A store of another format (format 1: message ids of the old layout) is
 * refused with a message that says what to do, and left untouched. */
Test(store, other_format_is_refused)
{
	MDB_env *env = store_made_then_raw();
	MDB_txn *txn;
	MDB_dbi meta;
	cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	uint32_t one = 1;
	MDB_val k = {6, "format"}, v = {4, &one};
	cr_assert_eq(mdb_put(txn, meta, &k, &v, 0), 0);
	cr_assert_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	char err[256] = "";
	cr_assert_null(store_open(dbdir, MAP_BYTES, err, sizeof err));
	cr_assert(strstr(err, "data format 1, this backend reads formats 2 and 3 only"), "err: %s", err);
	cr_assert(strstr(err, "drain that store"), "err: %s", err);
}

/* A format-2 store (dedup records in the tree `dedup`, keyed by
 * (from, cmid)) opens as format 3: its records are in the log, found as
 * before, the old tree is gone, and a backend of format 2 would now refuse
 * it rather than miss them. */
static int dedup_has(uint64_t from, uint64_t cmid);

/* The test's data dir as format 2 left it, with n dedup records of sender 7
 * (cmid c: smid 1000 + c) in the tree `dedup`, and no log. */
static void make_format_2(uint64_t n)
{
	MDB_env *env = store_made_then_raw();
	MDB_txn *txn;
	MDB_dbi meta, dedup;
	cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	cr_assert_eq(mdb_drop(txn, meta, 0), 0); /* as format 2 left it: no dlog yet */
	uint32_t two = 2;
	MDB_val k = {6, "format"}, v = {4, &two};
	cr_assert_eq(mdb_put(txn, meta, &k, &v, 0), 0);
	MDB_dbi dlog;
	cr_assert_eq(mdb_dbi_open(txn, "dlog", 0, &dlog), 0);
	cr_assert_eq(mdb_drop(txn, dlog, 1), 0);
	cr_assert_eq(mdb_dbi_open(txn, "dedup", MDB_CREATE, &dedup), 0);
	for (uint64_t c = 1; c <= n; c++) {
		uint8_t kb[16];
		uint64_t smid = 1000 + c;
		wire_be64_put(kb, 7); /* the key: be64(from) be64(cmid) */
		wire_be64_put(kb + 8, c);
		MDB_val dk = {16, kb}, dv = {8, &smid};
		cr_assert_eq(mdb_put(txn, dedup, &dk, &dv, 0), 0);
	}
	cr_assert_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* The format record and whether the tree `dedup` is there, read with LMDB. */
static uint32_t raw_format(int *has_dedup_tree)
{
	MDB_env *env = raw_env();
	MDB_txn *txn;
	MDB_dbi meta, dedup;
	cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	*has_dedup_tree = mdb_dbi_open(txn, "dedup", 0, &dedup) == 0;
	cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	MDB_val k = {6, "format"}, v;
	cr_assert_eq(mdb_get(txn, meta, &k, &v), 0);
	uint32_t fmt;
	memcpy(&fmt, v.mv_data, 4);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return fmt;
}

Test(store, format_2_dedup_records_move_into_the_log)
{
	make_format_2(300);
	char err[256] = "";
	st = store_open(dbdir, MAP_BYTES, err, sizeof err);
	cr_assert_not_null(st, "format 2 refused: %s", err);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_get(st, 7, 150, &smid), 0);
	cr_assert_eq(smid, 1150);
	cr_assert_eq(stats().dedup_entries, 300);
	cr_assert_eq(store_dedup_prune(st, 1101, 1000), 100, "the moved records are in smid order");
	cr_assert(!dedup_has(7, 100));
	cr_assert(dedup_has(7, 101));
	commit();
	store_close(st);
	st = NULL;

	int tree;
	cr_assert_eq(raw_format(&tree), 3);
	cr_assert(!tree, "the old tree is still there");
}

/* The review of the upgrade: LMDB frees the old tree's pages only once the
 * transaction that moves its records commits, so a store whose map cannot
 * hold both is refused, with what to do, and stays format 2 (the previous
 * version still reads it). */
Test(store, format_2_upgrade_without_room_says_what_to_do)
{
	make_format_2(300000); /* about 10 of the map's 16 MiB */
	char err[400] = "";
	cr_assert_null(store_open(dbdir, MAP_BYTES, err, sizeof err));
	cr_assert(strstr(err, "start once with a larger --store-size"), "err: %s", err);
	cr_log_info("%s", err);
	int tree;
	cr_assert_eq(raw_format(&tree), 2);
	cr_assert(tree, "the records are gone");
	st = store_open(dbdir, 4 * MAP_BYTES, err, sizeof err);
	cr_assert_not_null(st, "with room: %s", err);
	cr_assert(dedup_has(7, 300000));
	cr_assert_eq(stats().dedup_entries, 300000);
}

/* ---- put and scan ----------------------------------------------------------------- */

Test(store, put_then_scan_returns_every_field)
{
	st = open_map(MAP_BYTES);
	struct store_msg m = {
		.smid = 0x0123456789abcdefu,
		.from = 0xfedcba9876543210u,
		.to = 77,
		.group = 0,
		.time_ms = 1712345678901u,
		.ref = 0,
		.kind = STORE_MSG,
		.body = (const uint8_t *)"hello, world",
		.len = 12,
	};
	uint64_t to = 77;
	size_t added = 0;
	cr_assert_eq(store_put(st, &m, &to, 1, 10, &added), 0);
	cr_assert_eq(added, 1);
	commit();

	struct seen s = { 0 };
	cr_assert_eq(scan(77, 0, 10, &s), 1);
	cr_assert_eq(s.m[0].smid, m.smid);
	cr_assert_eq(s.m[0].from, m.from);
	cr_assert_eq(s.m[0].to, m.to);
	cr_assert_eq(s.m[0].group, 0);
	cr_assert_eq(s.m[0].time_ms, m.time_ms);
	cr_assert_eq(s.m[0].ref, 0);
	cr_assert_eq(s.m[0].kind, STORE_MSG);
	cr_assert_eq(s.m[0].len, 12);
	cr_assert_str_eq(s.body[0], "hello, world");
	/* Not in anybody else's mailbox. */
	cr_assert_eq(scan(76, 0, 10, &s), 0);
	cr_assert_eq(scan(78, 0, 10, &s), 0);
}

Test(store, put_rejects_bad_input_and_reused_smid)
{
	st = open_map(MAP_BYTES);
	uint64_t to = 5;
	struct store_msg m = msg(1, 1, 5, "a");
	m.kind = 9;
	cr_assert_eq(store_put(st, &m, &to, 1, 10, NULL), -EINVAL);
	m = msg(1, 1, 5, "a");
	m.body = NULL;
	cr_assert_eq(store_put(st, &m, &to, 1, 10, NULL), -EINVAL);
	m = msg(1, 1, 5, "a");
	cr_assert_eq(store_put(st, &m, &to, 1, 10, NULL), 0);
	cr_assert_eq(store_put(st, &m, &to, 1, 10, NULL), -EEXIST);
	cr_assert_eq(store_count(st, 5), 1);
	/* An empty body with no pointer is fine. */
	m = msg(2, 1, 5, "");
	m.body = NULL;
	cr_assert_eq(store_put(st, &m, &to, 1, 10, NULL), 0);
	/* No recipients: nothing stored. */
	m = msg(3, 1, 5, "b");
	size_t added = 9;
	cr_assert_eq(store_put(st, &m, NULL, 0, 10, &added), 0);
	cr_assert_eq(added, 0);
	commit();
	cr_assert_eq(stats().messages, 2);
}

Test(store, scan_order_after_and_max)
{
	st = open_map(MAP_BYTES);
	static const uint64_t smids[] = { 500, 3, 90000, 1, 4294967296u, 77 };
	for (size_t i = 0; i < sizeof smids / sizeof smids[0]; i++) {
		char b[32];
		snprintf(b, sizeof b, "m%llu", (unsigned long long)smids[i]);
		put1(smids[i], 1, 7, b);
	}
	/* Neighbours on both sides (one at the top of the smid range), so that
	 * a scan running past its user would see them. */
	put1(2, 1, 8, "next user");
	put1(UINT64_MAX, 1, 6, "previous user");
	commit();

	static const uint64_t want[] = { 1, 3, 77, 500, 90000, 4294967296u };
	struct seen s = { 0 };
	cr_assert_eq(scan(7, 0, 100, &s), 6);
	for (size_t i = 0; i < 6; i++) {
		cr_assert_eq(s.m[i].smid, want[i], "entry %zu", i);
		char b[32];
		snprintf(b, sizeof b, "m%llu", (unsigned long long)want[i]);
		cr_assert_str_eq(s.body[i], b);
	}
	cr_assert_eq(scan(7, 3, 100, &s), 4, "after is exclusive");
	cr_assert_eq(s.m[0].smid, 77);
	cr_assert_eq(scan(7, 4, 100, &s), 4);
	cr_assert_eq(s.m[0].smid, 77);
	cr_assert_eq(scan(7, 0, 2, &s), 2);
	cr_assert_eq(s.m[0].smid, 1);
	cr_assert_eq(s.m[1].smid, 3);
	cr_assert_eq(scan(7, 500, 2, &s), 2);
	cr_assert_eq(s.m[0].smid, 90000);
	cr_assert_eq(s.m[1].smid, 4294967296u);
	cr_assert_eq(scan(7, 4294967296u, 100, &s), 0);
	cr_assert_eq(scan(7, 0, 0, &s), 0);
	cr_assert_eq(scan(6, 0, 100, &s), 1);
	cr_assert_eq(s.m[0].smid, UINT64_MAX);
	cr_assert_eq(scan(6, UINT64_MAX, 100, &s), 0);
	cr_assert_eq(scan(8, 0, 100, &s), 1);
	cr_assert_eq(s.m[0].smid, 2);

	/* The callback stops the walk; the stopping call is counted. */
	s.stop_after = 2;
	cr_assert_eq(scan(7, 0, 100, &s), 2);
	cr_assert_eq(s.n, 2);
}

struct pager {
	size_t n;
	uint64_t last;
	int ordered;
};

static int page_one(void *arg, const struct store_msg *m)
{
	struct pager *p = arg;
	if (p->n && m->smid <= p->last)
		p->ordered = 0;
	p->last = m->smid;
	p->n++;
	return 0;
}

/* A mailbox spanning many pages, between two neighbours, read page by page
 * the way the backend does (after = the last smid seen). */
Test(store, scan_pages_through_a_large_mailbox)
{
	st = open_map(MAP_BYTES);
	for (uint64_t i = 1; i <= 3000; i++) {
		uint64_t to = 4 + i % 3; /* users 4, 5, 6 interleaved */
		struct store_msg m = msg(i, 1, to, "page");
		cr_assert_eq(store_put(st, &m, &to, 1, 5000, NULL), 0);
	}
	commit();
	struct pager p = { .ordered = 1 };
	long n;
	int calls = 0;
	do {
		n = store_scan(st, 5, p.last, 64, page_one, &p);
		cr_assert_geq(n, 0);
		calls++;
	} while (n == 64);
	cr_assert_eq(p.n, 1000);
	cr_assert(p.ordered);
	cr_assert_eq(p.last, 2998);
	cr_assert_eq(calls, 16); /* 15 full pages and a last one of 40 */
}

Test(store, counts_follow_puts_and_acks)
{
	st = open_map(MAP_BYTES);
	cr_assert_eq(store_count(st, 3), 0);
	for (uint64_t i = 1; i <= 5; i++)
		put1(i, 1, 3, "x");
	cr_assert_eq(store_count(st, 3), 5);
	commit();
	cr_assert_eq(store_count(st, 3), 5);
	cr_assert_eq(store_ack(st, 3, 2, NULL, NULL), 0);
	cr_assert_eq(store_ack(st, 3, 4, NULL, NULL), 0);
	cr_assert_eq(store_count(st, 3), 3);
	commit();
	reopen();
	cr_assert_eq(store_count(st, 3), 3);
	for (uint64_t i = 1; i <= 5; i += 2)
		cr_assert_eq(store_ack(st, 3, i, NULL, NULL), 0);
	cr_assert_eq(store_count(st, 3), 0);
	commit();
	struct store_stats x = stats();
	cr_assert_eq(x.messages, 0);
	cr_assert_eq(x.mailbox_entries, 0);
	/* Back to zero, the mailbox takes mail again from scratch. */
	put1(9, 1, 3, "again");
	cr_assert_eq(store_count(st, 3), 1);
}

Test(store, ack_unknown_entry_is_notfound)
{
	st = open_map(MAP_BYTES);
	cr_assert_eq(store_ack(st, 1, 1, NULL, NULL), STORE_E_NOTFOUND);
	put1(5, 1, 2, "x");
	cr_assert_eq(store_ack(st, 3, 5, NULL, NULL), STORE_E_NOTFOUND, "someone else's message");
	cr_assert_eq(store_ack(st, 2, 6, NULL, NULL), STORE_E_NOTFOUND, "another smid");
	cr_assert_eq(store_ack(st, 2, 5, NULL, NULL), 0);
	cr_assert_eq(store_ack(st, 2, 5, NULL, NULL), STORE_E_NOTFOUND, "acked twice");
	cr_assert_eq(store_count(st, 2), 0);
}

/* ---- bounds and group messages --------------------------------------------------- */

Test(store, mailbox_bound)
{
	st = open_map(MAP_BYTES);
	const uint32_t max = 2;
	uint64_t a = 100, b = 200;
	for (uint64_t i = 1; i <= 2; i++) {
		struct store_msg m = msg(i, 1, a, "fill");
		cr_assert_eq(store_put(st, &m, &a, 1, max, NULL), 0);
	}
	struct store_msg m = msg(3, 1, a, "one too many");
	size_t added = 9;
	cr_assert_eq(store_put(st, &m, &a, 1, max, &added), STORE_E_FULL);
	cr_assert_eq(added, 0);
	cr_assert_eq(store_count(st, a), 2);
	cr_assert_eq(stats().messages, 2, "nothing stored for a full mailbox");

	/* b holds one: room for one more. */
	struct store_msg mb = msg(4, 1, b, "b1");
	cr_assert_eq(store_put(st, &mb, &b, 1, max, NULL), 0);

	/* To a (full), b (one left), c (empty): two added, stored once. */
	uint64_t rc3[] = { a, b, 300 };
	struct store_msg g = msg(5, 1, 0, "group");
	g.group = 42;
	added = 0;
	cr_assert_eq(store_put(st, &g, rc3, 3, max, &added), 0);
	cr_assert_eq(added, 2);
	cr_assert_eq(store_count(st, a), 2);
	cr_assert_eq(store_count(st, b), 2);
	cr_assert_eq(store_count(st, 300), 1);
	cr_assert_eq(stats().messages, 4);

	/* Now a and b are both full: nothing added, nothing stored, no error. */
	uint64_t rc2[] = { a, b };
	g.smid = 6;
	added = 9;
	cr_assert_eq(store_put(st, &g, rc2, 2, max, &added), 0);
	cr_assert_eq(added, 0);
	cr_assert_eq(stats().messages, 4);
	struct seen s = { 0 };
	cr_assert_eq(scan(a, 0, 10, &s), 2);
	cr_assert_eq(s.m[1].smid, 2);

	/* A bound of 0 refuses everything. */
	struct store_msg z = msg(7, 1, 400, "z");
	uint64_t u = 400;
	cr_assert_eq(store_put(st, &z, &u, 1, 0, NULL), STORE_E_FULL);
}

Test(store, group_message_stored_once_until_last_ack)
{
	st = open_map(MAP_BYTES);
	uint64_t members[] = { 11, 12, 13, 12 }; /* 12 twice: one entry */
	struct store_msg g = msg(1000, 11, 0, "to the group");
	g.group = 5;
	size_t added = 0;
	cr_assert_eq(store_put(st, &g, members, 4, 100, &added), 0);
	cr_assert_eq(added, 3);
	commit();
	struct store_stats x = stats();
	cr_assert_eq(x.messages, 1);
	cr_assert_eq(x.mailbox_entries, 3);
	cr_assert_eq(store_count(st, 12), 1);

	for (size_t i = 0; i < 3; i++) {
		struct seen s = { 0 };
		cr_assert_eq(scan(members[i], 0, 10, &s), 1);
		cr_assert_eq(s.m[0].smid, 1000);
		cr_assert_eq(s.m[0].group, 5);
		cr_assert_str_eq(s.body[0], "to the group");
	}

	cr_assert_eq(store_ack(st, 11, 1000, NULL, NULL), 0);
	commit();
	cr_assert_eq(stats().messages, 1);
	reopen(); /* the refcount is durable too */
	cr_assert_eq(store_ack(st, 13, 1000, NULL, NULL), 0);
	commit();
	cr_assert_eq(stats().messages, 1);
	struct seen s = { 0 };
	cr_assert_eq(scan(12, 0, 10, &s), 1, "the last member still reads it");
	cr_assert_str_eq(s.body[0], "to the group");
	cr_assert_eq(store_ack(st, 12, 1000, NULL, NULL), 0);
	commit();
	x = stats();
	cr_assert_eq(x.messages, 0, "gone after the last ack");
	cr_assert_eq(x.mailbox_entries, 0);
	cr_assert_eq(store_ack(st, 12, 1000, NULL, NULL), STORE_E_NOTFOUND);
}

/* The body of large_group_message_body, byte i = i * 31 + 7. */
#define BIG_BODY 20000

static int check_big(void *arg, const struct store_msg *m)
{
	int *ok = arg;
	*ok = m->len == BIG_BODY;
	for (size_t i = 0; *ok && i < m->len; i++)
		*ok = m->body[i] == (uint8_t)(i * 31 + 7);
	return 0;
}

Test(store, large_group_message_body)
{
	/* A body far bigger than a page lives on LMDB overflow pages; the
	 * refcount rewrite on each ack must keep it intact. */
	st = open_map(MAP_BYTES);
	static uint8_t body[BIG_BODY];
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = (uint8_t)(i * 31 + 7);
	uint64_t members[] = { 1, 2, 3 };
	struct store_msg g = { .smid = 9, .from = 1, .group = 2, .kind = STORE_MSG, .body = body, .len = sizeof body };
	cr_assert_eq(store_put(st, &g, members, 3, 10, NULL), 0);
	commit();
	cr_assert_eq(store_ack(st, 1, 9, NULL, NULL), 0);
	cr_assert_eq(store_ack(st, 2, 9, NULL, NULL), 0);
	commit();
	int ok = 0;
	cr_assert_eq(store_scan(st, 3, 0, 10, check_big, &ok), 1);
	cr_assert_eq(ok, 1);
}

/* ---- receipts -------------------------------------------------------------------- */

Test(store, receipts_are_mailbox_items)
{
	st = open_map(MAP_BYTES);
	put1(10, 1, 2, "message");
	struct store_msg r = {
		.smid = 11,
		.from = 2, /* the reader */
		.to = 1,   /* the sender, whose mailbox gets it */
		.time_ms = 1234,
		.ref = 10,
		.kind = STORE_RECEIPT,
		.rkind = 2, /* PROTO_RCPT_READ */
	};
	uint64_t to = 1;
	cr_assert_eq(store_put(st, &r, &to, 1, 10, NULL), 0);
	put1(12, 3, 1, "later message");
	commit();

	struct seen s = { 0 };
	cr_assert_eq(scan(1, 0, 10, &s), 2);
	cr_assert_eq(s.m[0].smid, 11);
	cr_assert_eq(s.m[0].kind, STORE_RECEIPT);
	cr_assert_eq(s.m[0].rkind, 2);
	cr_assert_eq(s.m[0].ref, 10);
	cr_assert_eq(s.m[0].from, 2);
	cr_assert_eq(s.m[0].to, 1);
	cr_assert_eq(s.m[0].time_ms, 1234);
	cr_assert_eq(s.m[0].len, 0);
	cr_assert_eq(s.m[1].kind, STORE_MSG);
	cr_assert_eq(s.m[1].rkind, 0);
	cr_assert_eq(store_count(st, 1), 2);
	cr_assert_eq(store_ack(st, 1, 11, NULL, NULL), 0);
	commit();
	cr_assert_eq(stats().messages, 2);
}

/* ---- dedup ----------------------------------------------------------------------- */

Test(store, dedup_get_put)
{
	st = open_map(MAP_BYTES);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_get(st, 1, 2, &smid), STORE_E_NOTFOUND);
	cr_assert_eq(store_dedup_put(st, 1, 2, 500), 0);
	cr_assert_eq(store_dedup_put(st, 2, 1, 600), 0);
	cr_assert_eq(store_dedup_get(st, 1, 2, &smid), 0);
	cr_assert_eq(smid, 500);
	commit();
	reopen();
	cr_assert_eq(store_dedup_get(st, 2, 1, &smid), 0);
	cr_assert_eq(smid, 600);
	cr_assert_eq(store_dedup_get(st, 1, 1, &smid), STORE_E_NOTFOUND);
	cr_assert_eq(stats().dedup_entries, 2);
}

/* from's cmids lo..hi-1, each with smid base + cmid */
static void dedup_fill(uint64_t from, uint64_t lo, uint64_t hi, uint64_t base)
{
	for (uint64_t c = lo; c < hi; c++)
		cr_assert_eq(store_dedup_put(st, from, c, base + c), 0);
}

static int dedup_has(uint64_t from, uint64_t cmid)
{
	uint64_t smid;
	int rc = store_dedup_get(st, from, cmid, &smid);
	cr_assert(rc == 0 || rc == STORE_E_NOTFOUND);
	return rc == 0;
}

Test(store, dedup_prune_by_smid)
{
	st = open_map(MAP_BYTES);
	dedup_fill(1, 1, 101, 0);   /* smid 1..100 */
	dedup_fill(2, 1, 101, 100); /* smid 101..200 */
	commit();
	cr_assert_eq(store_dedup_prune(st, 51, 1000), 50);
	commit();
	cr_assert_eq(stats().dedup_entries, 150);
	cr_assert(!dedup_has(1, 50));
	cr_assert(dedup_has(1, 51));
	cr_assert(dedup_has(2, 1));
	cr_assert_eq(store_dedup_prune(st, 151, 1000), 100);
	cr_assert(!dedup_has(1, 100));
	cr_assert(!dedup_has(2, 50));
	cr_assert(dedup_has(2, 51));
	cr_assert_eq(store_dedup_prune(st, 0, 1000), 0);
	cr_assert_eq(store_dedup_prune(st, 300, 0), 0);
	commit();
	reopen(); /* the index is rebuilt from what is left */
	cr_assert(!dedup_has(2, 50));
	cr_assert(dedup_has(2, 100));
	cr_assert_eq(stats().dedup_entries, 50);
}

/* Thousands of records over many LMDB pages, in steps: each call takes the
 * oldest (the cursor must not skip the record after a deleted one at a page
 * boundary), and what is left is always the newest. */
Test(store, dedup_prune_takes_the_oldest_in_steps)
{
	st = open_map(MAP_BYTES);
	for (uint64_t from = 1; from <= 3; from++)
		dedup_fill(from, 0, 1000, from * 1000 + 1); /* smid 1001..3999 */
	commit();
	long total = 0;
	for (int i = 0; i < 200; i++) {
		long n = store_dedup_prune(st, 3001, 37);
		cr_assert(n >= 0 && n <= 37, "call %d: %ld", i, n);
		total += n;
		uint64_t left = 3000 - (uint64_t)total;
		cr_assert_eq(stats().dedup_entries, left);
		if (n == 0)
			break;
	}
	cr_assert_eq(total, 2000);
	for (uint64_t from = 1; from <= 3; from++)
		for (uint64_t c = 0; c < 1000; c++)
			cr_assert_eq(dedup_has(from, c), from == 3, "from %llu cmid %llu", (unsigned long long)from,
				     (unsigned long long)c);
	commit();
	cr_assert_eq(store_dedup_prune(st, UINT64_MAX, 100000), 1000);
	commit();
	cr_assert_eq(stats().dedup_entries, 0);
	cr_assert_eq(store_dedup_prune(st, UINT64_MAX, 7), 0, "empty");
}

/* A (from, cmid) recorded again names its newest smid; pruning the older
 * record does not forget the newer one. */
Test(store, dedup_newest_record_wins_and_outlives_the_older)
{
	st = open_map(MAP_BYTES);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_put(st, 1, 5, 10), 0);
	cr_assert_eq(store_dedup_put(st, 1, 5, 20), 0);
	cr_assert_eq(store_dedup_get(st, 1, 5, &smid), 0);
	cr_assert_eq(smid, 20);
	commit();
	reopen();
	cr_assert_eq(store_dedup_get(st, 1, 5, &smid), 0);
	cr_assert_eq(smid, 20, "rebuilt from the log: the newest record");
	cr_assert_eq(store_dedup_prune(st, 15, 100), 1);
	cr_assert_eq(store_dedup_get(st, 1, 5, &smid), 0);
	cr_assert_eq(smid, 20);
	cr_assert_eq(store_dedup_prune(st, 25, 100), 1);
	cr_assert_eq(store_dedup_get(st, 1, 5, &smid), STORE_E_NOTFOUND);
	cr_assert_eq(store_dedup_put(st, 1, 6, 0), -EINVAL, "smid 0 is no message");
}

/* hash64 (runtime/u64map.h) undone: a sender who knows the hash can choose
 * cmids whose keys land where it wants. */
static uint64_t unxorshift(uint64_t y, int s)
{
	uint64_t x = y;
	for (int i = 0; i <= 64 / s; i++)
		x = y ^ (x >> s);
	return x;
}

static uint64_t mul_inverse(uint64_t a)
{
	uint64_t x = a;
	for (int i = 0; i < 6; i++)
		x *= 2 - a * x;
	return x;
}

static uint64_t hash64_inverse(uint64_t y)
{
	y = unxorshift(y, 31);
	y *= mul_inverse(0x94d049bb133111ebull);
	y = unxorshift(y, 27);
	y *= mul_inverse(0xbf58476d1ce4e5b9ull);
	return unxorshift(y, 30);
}

/* The review of the dedup log: its index is a hash table of the cmids that
 * senders choose. With the unkeyed key hash64(hash64(from) ^ cmid), 1,000
 * cmids computed from the public hash all fell into one slot of the table
 * (at every size up to 2^32 slots), and each insert and delete walked
 * them. With a secret per open the same cmids spread, and two opens key
 * the same cmid differently. */
Test(store, dedup_index_keys_cannot_be_chosen_by_senders)
{
	st = open_map(MAP_BYTES);
	enum { N = 1000 };
	uint64_t from = 42;
	static uint8_t slot_seen[1 << 16];
	memset(slot_seen, 0, sizeof slot_seen);
	unsigned slots = 0;
	for (uint64_t i = 1; i <= N; i++) {
		uint64_t key = hash64_inverse(i << 32);          /* u64map's slot: hash64(key) & mask: 0 */
		uint64_t cmid = hash64_inverse(key) ^ hash64(from); /* the unkeyed key of (from, cmid) */
		cr_assert_eq(hash64(hash64(hash64(from) ^ cmid)) & 0xffffffffu, 0, "the unkeyed key's slot");
		unsigned slot = (unsigned)(hash64(store_dedup_index_key(st, from, cmid)) & 0xffff);
		slots += !slot_seen[slot];
		slot_seen[slot] = 1;
	}
	cr_assert_gt(slots, N * 9 / 10, "1,000 chosen cmids fill only %u of 65,536 slots", slots);
	uint64_t k1 = store_dedup_index_key(st, 1, 2);
	reopen();
	cr_assert_neq(store_dedup_index_key(st, 1, 2), k1, "the same key after another open");
}

/* The index in memory goes with the transaction: what an abort drops, it
 * drops (puts and prunes alike). */
Test(store, dedup_index_follows_commit_and_abort)
{
	st = open_map(MAP_BYTES);
	cr_assert_eq(store_dedup_put(st, 1, 5, 10), 0);
	store_abort(st);
	cr_assert(!dedup_has(1, 5), "an aborted put is still found");
	cr_assert_eq(store_dedup_put(st, 1, 5, 10), 0);
	commit();
	cr_assert_eq(store_dedup_prune(st, 100, 100), 1);
	cr_assert(!dedup_has(1, 5));
	store_abort(st);
	cr_assert(dedup_has(1, 5), "an aborted prune forgot the record");
	cr_assert_eq(stats().dedup_entries, 1);
}

/* The index holds a hash: a hit is checked against the log's record, so
 * another (from, cmid) never passes for a resend. Two records of one smid
 * (which only a caller's mistake can write) are such a case. */
Test(store, dedup_hit_is_checked_against_the_record)
{
	st = open_map(MAP_BYTES);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_put(st, 1, 5, 10), 0);
	cr_assert_eq(store_dedup_put(st, 2, 7, 10), 0); /* the log's record of 10 is now (2, 7) */
	cr_assert_eq(store_dedup_get(st, 1, 5, &smid), STORE_E_NOTFOUND);
	cr_assert_eq(store_dedup_get(st, 2, 7, &smid), 0);
	cr_assert_eq(smid, 10);
}

/* ---- groups ---------------------------------------------------------------------- */

Test(store, groups_create_get_set_delete)
{
	st = open_map(MAP_BYTES);
	uint64_t mem[] = { 7, 8, 9 };
	uint64_t owner = 0;
	const uint64_t *got = NULL;
	size_t n = 0;
	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), STORE_E_NOTFOUND);
	cr_assert_eq(store_group_create(st, 1, 7, mem, 3), 0);
	cr_assert_eq(store_group_create(st, 1, 8, mem, 2), STORE_E_EXISTS);
	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), 0);
	cr_assert_eq(owner, 7);
	cr_assert_eq(n, 3);
	cr_assert_eq(got[0], 7);
	cr_assert_eq(got[2], 9);
	commit();

	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), 0);
	/* The list stays valid until the txn ends, writes in between or not. */
	uint64_t mem2[] = { 8, 10 };
	cr_assert_eq(store_group_set(st, 1, 8, mem2, 2), 0);
	cr_assert_eq(store_group_create(st, 2, 1, mem2, 2), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(got[0], 7);
	cr_assert_eq(got[1], 8);
	cr_assert_eq(got[2], 9);
	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), 0);
	cr_assert_eq(owner, 8);
	cr_assert_eq(n, 2);
	cr_assert_eq(got[1], 10);
	commit();
	reopen();

	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), 0);
	cr_assert_eq(owner, 8);
	cr_assert_eq(n, 2);
	cr_assert_eq(store_group_set(st, 3, 1, mem, 1), STORE_E_NOTFOUND, "set does not create");
	cr_assert_eq(stats().groups, 2);
	cr_assert_eq(store_group_delete(st, 1), 0);
	cr_assert_eq(store_group_delete(st, 1), STORE_E_NOTFOUND);
	cr_assert_eq(store_group_get(st, 1, &owner, &got, &n), STORE_E_NOTFOUND);
	cr_assert_eq(store_group_create(st, 1, 9, mem + 2, 1), 0, "a deleted id can be created again");
	commit();
	cr_assert_eq(stats().groups, 2);

	/* An empty member list. */
	cr_assert_eq(store_group_create(st, 4, 1, NULL, 0), 0);
	cr_assert_eq(store_group_get(st, 4, &owner, &got, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(got);
}

Test(store, group_large_member_list)
{
	st = open_map(MAP_BYTES);
	enum { N = 5000 };
	static uint64_t mem[N];
	for (size_t i = 0; i < N; i++)
		mem[i] = 0x1000000000000000u + i * 3;
	cr_assert_eq(store_group_create(st, 77, mem[0], mem, N), 0);
	commit();
	uint64_t owner;
	const uint64_t *got;
	size_t n;
	cr_assert_eq(store_group_get(st, 77, &owner, &got, &n), 0);
	cr_assert_eq(n, N);
	cr_assert_eq(owner, mem[0]);
	cr_assert_eq((uintptr_t)got % _Alignof(uint64_t), 0);
	cr_assert_eq(memcmp(got, mem, sizeof mem), 0);
}

/* A second process on the same --data-dir ran beside the first (LMDB lets
 * it); now the directory is locked: the second open is refused, clearly,
 * and the directory opens again once the first has closed it. */
Test(store, data_dir_is_locked_while_open)
{
	st = open_map(MAP_BYTES);
	char err[256] = "";
	struct store *second = store_open(dbdir, MAP_BYTES, err, sizeof err);
	cr_assert_null(second, "a second store on the same directory opened");
	cr_assert(strstr(err, "in use by another process"), "error: %s", err);
	/* the same from another process (a second backend) */
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char e2[256];
		struct store *o = store_open(dbdir, MAP_BYTES, e2, sizeof e2);
		_exit(o == NULL && strstr(e2, "in use") ? 0 : 1);
	}
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "another process opened a locked data dir");
	reopen(); /* closed, then opened again: the lock went with the close */
}

Test(store, group_next_id_persisted)
{
	st = open_map(MAP_BYTES);
	uint64_t gid = 0;
	cr_assert_eq(store_group_next_id(st, 3, 0, 1, &gid), 0);
	cr_assert_eq(gid, ((uint64_t)3 << 48) | 1);
	cr_assert_eq(store_group_next_id(st, 3, 0, 1, &gid), 0);
	cr_assert_eq(gid, ((uint64_t)3 << 48) | 2);
	commit();

	/* Aborted: the id was never used durably, so it comes again. */
	cr_assert_eq(store_group_next_id(st, 3, 0, 1, &gid), 0);
	cr_assert_eq(gid, ((uint64_t)3 << 48) | 3);
	store_abort(st);
	reopen();
	/* the largest node the layout holds (runtime/cluster.h), and its id
	 * still a valid SEND recipient (bit 63 clear: node 0xffff set it before) */
	cr_assert_eq(store_group_next_id(st, CLUSTER_GID_NODE_MAX, 0, 1, &gid), 0);
	cr_assert_eq(gid, ((uint64_t)CLUSTER_GID_NODE_MAX << 48) | 3);
	cr_assert_leq(gid, PROTO_MAX_USER);
	cr_assert_eq(cluster_group_node(gid), CLUSTER_GID_NODE_MAX);
	cr_assert_eq(store_group_next_id(st, CLUSTER_GID_NODE_MAX + 1, 0, 1, &gid), -EINVAL);
	commit();
	reopen();
	cr_assert_eq(store_group_next_id(st, 1, 0, 1, &gid), 0);
	cr_assert_eq(gid, ((uint64_t)1 << 48) | 4);
}

/* A node thread's group ids name it (counter % threads == thread), so a
 * gateway finds the thread from the id alone (cluster_group_link). */
Test(store, group_ids_name_their_node_thread)
{
	st = open_map(MAP_BYTES);
	uint64_t gid = 0;
	for (int i = 1; i <= 3; i++) {
		cr_assert_eq(store_group_next_id(st, 7, 2, 3, &gid), 0);
		cr_assert_eq(gid & CLUSTER_GID_COUNTER_MAX, (uint64_t)i * 3 + 2);
		cr_assert_eq(cluster_group_node(gid), 7);
	}
	cr_assert_eq(store_group_next_id(st, 7, 3, 3, &gid), -EINVAL);
	cr_assert_eq(store_group_next_id(st, 7, 0, 0, &gid), -EINVAL);
	commit();
}

/* ---- full map ---------------------------------------------------------------------- */

/* Fill a 128 KiB map with 3000-byte messages to user 2 in the open txn until a
 * put fails; returns that put's result. 128 KiB leaves room for the nine
 * databases and a few pages (16 KiB is too small for LMDB to open at all). */
static int fill_map(uint64_t first_smid)
{
	static char big[3000];
	memset(big, 'x', sizeof big - 1);
	int rc = 0;
	for (uint64_t smid = first_smid; smid < first_smid + 1000 && rc == 0; smid++) {
		struct store_msg m = msg(smid, 1, 2, big);
		uint64_t to = 2;
		rc = store_put(st, &m, &to, 1, 100000, NULL);
	}
	return rc;
}

Test(store, map_full_is_enospc_and_recoverable)
{
	st = open_map(128u << 10);
	put1(1, 1, 2, "before");
	commit();

	cr_assert_eq(fill_map(100), -ENOSPC);
	store_abort(st);

	/* Still usable: the old data is there and a small write commits. */
	put1(2, 1, 2, "after");
	commit();
	struct seen s = { 0 };
	cr_assert_eq(scan(2, 0, 10, &s), 2);
	cr_assert_str_eq(s.body[0], "before");
	cr_assert_str_eq(s.body[1], "after");
	struct store_stats x = stats();
	cr_assert_eq(x.messages, 2);
	cr_assert_eq(x.map_bytes, 128u << 10);
	cr_assert_leq(x.map_used_bytes, x.map_bytes);
}

/* A put that could fill the map is refused before it writes anything (at
 * 90% of the map; a transaction's copy-on-write needs that headroom, so it
 * is meaningful for maps of more than a few pages), so the rest of the
 * iteration's transaction survives: the
 * group created before it and a dedup entry after it both commit. (LMDB
 * itself ruins a whole transaction when a write fails with MDB_MAP_FULL.) */
Test(store, nearly_full_put_refused_transaction_survives)
{
	st = open_map(1u << 20); /* room for the headroom to matter: 26 pages */
	put1(1, 1, 2, "before");
	commit();

	uint64_t owner;
	const uint64_t *mem;
	size_t n;
	uint64_t u = 5;
	cr_assert_eq(store_group_create(st, 9, 5, &u, 1), 0);
	cr_assert_eq(fill_map(100), -ENOSPC);
	cr_assert_eq(store_dedup_put(st, 1, 1, 1), 0);
	cr_assert_eq(store_commit(st), 0);

	cr_assert_eq(store_group_get(st, 9, &owner, &mem, &n), 0);
	cr_assert_eq(owner, 5);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_get(st, 1, 1, &smid), 0);
	cr_assert_eq(smid, 1);
	/* the messages stored before the refusal are there; acking one frees room */
	uint32_t c = store_count(st, 2);
	cr_assert_gt(c, 1);
	cr_assert_eq(store_ack(st, 2, 1, NULL, NULL), 0);
	cr_assert_eq(store_commit(st), 0);
	cr_assert_eq(store_count(st, 2), c - 1);
}

/* ---- crash --------------------------------------------------------------------------- */

Test(store, committed_data_survives_a_crash)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* The child: its own environment (LMDB's must not cross a
		 * fork), commits in several transactions, leaves one open, and
		 * dies without store_close. No criterion asserts here. */
		char err[256];
		struct store *s = store_open(dbdir, MAP_BYTES, err, sizeof err);
		if (!s)
			_exit(2);
		for (uint64_t i = 1; i <= 30; i++) {
			struct store_msg m = msg(i, 1, 9, "durable");
			uint64_t to = 9;
			if (store_put(s, &m, &to, 1, 1000, NULL) != 0)
				_exit(3);
			if (i % 10 == 0 && store_commit(s) != 0)
				_exit(4);
		}
		struct store_msg m = msg(31, 1, 9, "never committed");
		uint64_t to = 9;
		if (store_put(s, &m, &to, 1, 1000, NULL) != 0)
			_exit(5);
		_exit(0);
	}
	int status = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);

	st = open_map(MAP_BYTES);
	struct seen s = { 0 };
	cr_assert_eq(scan(9, 0, SEEN_MAX, &s), 30);
	for (size_t i = 0; i < 30; i++)
		cr_assert_eq(s.m[i].smid, i + 1);
	cr_assert_eq(store_count(st, 9), 30);
	struct store_stats x = stats();
	cr_assert_eq(x.messages, 30);
	/* And the reopened store writes as usual. */
	put1(40, 1, 9, "after the crash");
	commit();
	cr_assert_eq(store_count(st, 9), 31);
}

/* ---- requests, faults, per-sender counts, stored receipts (issue 9) --------------------- */

static uint32_t mailbox_of(uint64_t user)
{
	return store_count(st, user);
}

/* A request that fails in its own (nested) transaction is undone alone: the
 * iteration's other writes, before and after it, commit. */
Test(store, isolated_request_failure_is_undone_alone)
{
	st = open_map(MAP_BYTES);
	put1(1, 1, 2, "before");
	store_inject(st, STORE_OP_MSG, -ENOSPC, 1);
	cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 8, 64), 0);
	struct store_msg m = msg(2, 1, 3, "fails");
	uint64_t to = 3;
	cr_assert_eq(store_put(st, &m, &to, 1, 100, NULL), -ENOSPC);
	/* the request's transaction refuses everything after its failure, as LMDB's does */
	cr_assert_eq(store_dedup_put(st, 1, 2, 2), -ENOSPC);
	cr_assert_eq(store_req_end(st, 0), 0, "the iteration's transaction stays usable");
	cr_assert_eq(store_failed(st), 0);
	put1(3, 1, 4, "after");
	commit();
	cr_assert_eq(mailbox_of(2), 1);
	cr_assert_eq(mailbox_of(3), 0, "the failed request left its mailbox entry");
	cr_assert_eq(mailbox_of(4), 1);
	uint64_t smid = 0;
	cr_assert_eq(store_dedup_get(st, 1, 2, &smid), STORE_E_NOTFOUND);
}

/* The per-user counts live in memory (store.h "Counts"): they follow the
 * transaction (a dropped request, an abort) and come back from the data
 * after a reopen. */
Test(store, counts_follow_the_transaction_and_survive_reopen)
{
	st = open_map(MAP_BYTES);
	put1(1, 1, 2, "a");
	put1(2, 1, 3, "b");
	cr_assert_eq(store_rcpt_put(st, 7, 8, 100, PROTO_RCPT_READ, 64, 100, NULL), 0);
	commit();
	cr_assert_eq(mailbox_of(2), 1);
	cr_assert_eq(store_sender_count(st, 1), 2);
	/* a request whose nested transaction is dropped after its put changed the counts */
	store_inject(st, STORE_OP_DEDUP, -ENOSPC, 1);
	cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 8, 64), 0);
	struct store_msg m = msg(3, 1, 2, "dropped");
	uint64_t to = 2;
	cr_assert_eq(store_put(st, &m, &to, 1, 100, NULL), 0);
	cr_assert_eq(mailbox_of(2), 2, "inside the request");
	cr_assert_eq(store_sender_count(st, 1), 3);
	cr_assert_eq(store_dedup_put(st, 1, 3, 3), -ENOSPC);
	cr_assert_eq(store_req_end(st, 0), 0);
	cr_assert_eq(mailbox_of(2), 1, "the dropped request's count change went with it");
	cr_assert_eq(store_sender_count(st, 1), 2);
	/* an aborted transaction: its counts go too */
	put1(4, 5, 2, "aborted");
	cr_assert_eq(store_rcpt_put(st, 7, 9, 101, PROTO_RCPT_READ, 64, 100, NULL), 0);
	cr_assert_eq(mailbox_of(2), 2);
	store_abort(st);
	cr_assert_eq(mailbox_of(2), 1);
	cr_assert_eq(store_sender_count(st, 5), 0);
	cr_assert_eq(store_rcpt_count(st, 7), 1);
	/* a delete, committed */
	uint64_t from = 0;
	cr_assert_eq(store_ack(st, 2, 1, &from, NULL), 0);
	cr_assert_eq(from, 1);
	commit();
	cr_assert_eq(mailbox_of(2), 0);
	cr_assert_eq(store_sender_count(st, 1), 1);
	/* a group message counts once per member mailbox for its sender */
	uint64_t members[3] = {20, 21, 22};
	struct store_msg g = msg(5, 30, 0, "group");
	size_t added = 0;
	cr_assert_eq(store_put(st, &g, members, 3, 100, &added), 0);
	cr_assert_eq(added, 3);
	put1(6, 0, 0, "user 0 is a key like any other"); /* the in-memory maps' keys are user + 1 */
	commit();
	cr_assert_eq(mailbox_of(0), 1);
	reopen();
	cr_assert_eq(mailbox_of(0), 1);
	cr_assert_eq(store_sender_count(st, 0), 1);
	cr_assert_eq(mailbox_of(2), 0);
	cr_assert_eq(mailbox_of(3), 1);
	cr_assert_eq(mailbox_of(21), 1);
	cr_assert_eq(store_sender_count(st, 1), 1);
	cr_assert_eq(store_sender_count(st, 30), 3, "rebuilt from the message's references");
	cr_assert_eq(store_rcpt_count(st, 7), 1);
	cr_assert_eq(stats().senders, 3);
	store_abort(st);
}

/* An I/O error outside an isolated request fails the iteration: nothing of
 * it commits, and the next iteration starts clean. */
Test(store, io_error_in_the_transaction_fails_the_commit)
{
	st = open_map(MAP_BYTES);
	put1(1, 1, 2, "committed");
	commit();
	put1(2, 1, 2, "same iteration as the failure");
	store_inject(st, STORE_OP_MSG, -EIO, 1);
	cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 8, 64), 0);
	struct store_msg m = msg(3, 1, 5, "fails");
	uint64_t to = 5;
	cr_assert_eq(store_put(st, &m, &to, 1, 100, NULL), -EIO);
	cr_assert_eq(store_req_end(st, 0), -EIO, "a failure written straight into the transaction");
	cr_assert_eq(store_failed(st), -EIO);
	cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 1, 1), -EIO, "no request in a failed transaction");
	cr_assert_eq(store_commit(st), -EIO);
	cr_assert_eq(mailbox_of(2), 1, "the failed iteration's other write committed");
	put1(4, 1, 6, "next iteration");
	commit();
	cr_assert_eq(mailbox_of(6), 1);
}

/* Each kind of write can be failed (for the backend's fault tests). */
Test(store, every_kind_of_write_can_fail)
{
	st = open_map(MAP_BYTES);
	put1(1, 1, 2, "x");
	uint64_t mem = 9, gid = 0;
	cr_assert_eq(store_group_create(st, 1ull << 48 | 1, 1, &mem, 1), 0);
	cr_assert_eq(store_rcpt_put(st, 7, 8, 100, PROTO_RCPT_READ, 64, 100, NULL), 0);
	commit();
	static const struct {
		unsigned op;
		const char *what;
	} kinds[] = {{STORE_OP_MSG, "msg"}, {STORE_OP_GROUP, "group"}, {STORE_OP_DEDUP, "dedup"},
		     {STORE_OP_RECEIPT, "receipt"}, {STORE_OP_DELETE, "delete"}};
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		store_inject(st, kinds[k].op, -ENOSPC, 1);
		cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 8, 64), 0);
		int r;
		struct store_msg m = msg(10 + k, 1, 3, "y");
		uint64_t to = 3;
		switch (kinds[k].op) {
		case STORE_OP_MSG: r = store_put(st, &m, &to, 1, 100, NULL); break;
		case STORE_OP_GROUP: r = store_group_next_id(st, 1, 0, 1, &gid); break;
		case STORE_OP_DEDUP: r = store_dedup_put(st, 1, 5, 5); break;
		case STORE_OP_RECEIPT: r = store_rcpt_put(st, 7, 8, 101, PROTO_RCPT_READ, 64, 100, NULL); break;
		default: r = store_ack(st, 2, 1, NULL, NULL); break;
		}
		cr_assert_eq(r, -ENOSPC, "%s: %d", kinds[k].what, r);
		cr_assert_eq(store_req_end(st, 0), 0, "%s", kinds[k].what);
		commit();
	}
	cr_assert_eq(mailbox_of(2), 1, "the failed delete left the entry");
	cr_assert_eq(store_rcpt_count(st, 7), 1);
}

/* Requests that add data are refused at 90% of the map, before writing;
 * deletes still run. */
Test(store, admission_refused_near_full_deletes_run)
{
	st = open_map(1u << 20);
	cr_assert_eq(fill_map(100), -ENOSPC); /* up to the 90% guard, no request */
	commit();
	cr_assert_eq(store_req_begin(st, STORE_REQ_ADMIT, 4, 64), -ENOSPC);
	cr_assert_eq(store_req_begin(st, STORE_REQ_DRAIN, 4, 0), 0);
	cr_assert_eq(store_ack(st, 2, 100, NULL, NULL), 0);
	cr_assert_eq(store_req_end(st, 1), 0);
	commit();
}

/* A full map inside an isolated request: the real thing, not injected. The
 * map is filled to the admission guard, then a request is let through (as a
 * drain) that writes more than the space left: LMDB's MDB_MAP_FULL fails that
 * request alone, and the transaction commits everything else. */
Test(store, real_map_full_in_a_request_fails_it_alone)
{
	st = open_map(1u << 20);
	put1(1, 1, 2, "kept");
	static char big[3000];
	memset(big, 'z', sizeof big - 1);
	uint64_t smid = 10;
	for (;; smid++) {
		int r = store_req_begin(st, STORE_REQ_ADMIT, 4, sizeof big);
		if (r == -ENOSPC)
			break;
		cr_assert_eq(r, 0);
		struct store_msg m = msg(smid, 1, 3, big);
		uint64_t to = 3;
		r = store_put(st, &m, &to, 1, 100000, NULL);
		cr_assert_eq(r, 0, "put %llu before the guard: %d", (unsigned long long)smid, r);
		cr_assert_eq(store_req_end(st, 1), 0);
	}
	uint32_t before = mailbox_of(3);
	static uint8_t huge[400 << 10];
	memset(huge, 'h', sizeof huge);
	cr_assert_eq(store_req_begin(st, STORE_REQ_DRAIN, 4, sizeof huge), 0);
	struct store_msg m = msg(smid + 1, 1, 3, "");
	m.body = huge;
	m.len = sizeof huge;
	uint64_t to = 3;
	cr_assert_eq(store_put(st, &m, &to, 1, 100000, NULL), -ENOSPC, "400 KiB fit a full 1 MiB map");
	cr_assert_eq(store_req_end(st, 0), 0, "the map-full request was not isolated");
	cr_assert_eq(store_failed(st), 0);
	commit();
	cr_assert_eq(mailbox_of(2), 1);
	cr_assert_eq(mailbox_of(3), before, "everything before the failed request committed");
}

/* Per-sender counts follow puts (one per mailbox entry) and acks. */
Test(store, sender_counts)
{
	st = open_map(MAP_BYTES);
	put1(1, 7, 2, "a");
	put1(2, 7, 3, "b");
	struct store_msg g = msg(3, 7, 0, "group");
	uint64_t members[3] = {4, 5, 6};
	cr_assert_eq(store_put(st, &g, members, 3, 100, NULL), 0);
	cr_assert_eq(store_sender_count(st, 7), 5);
	cr_assert_eq(store_sender_count(st, 8), 0);
	uint64_t from = 0;
	cr_assert_eq(store_ack(st, 2, 1, &from, NULL), 0);
	cr_assert_eq(from, 7, "the message's sender");
	cr_assert_eq(store_ack(st, 5, 3, &from, NULL), 0);
	cr_assert_eq(from, 7);
	cr_assert_eq(store_sender_count(st, 7), 3);
	cr_assert_eq(store_ack(st, 5, 3, &from, NULL), STORE_E_NOTFOUND);
	cr_assert_eq(from, 0);
	commit();
	reopen();
	cr_assert_eq(store_sender_count(st, 7), 3, "counts are durable");
}

struct rseen {
	struct store_rcpt r[128];
	size_t n, stop_at;
};

static int rcpt_cb(void *arg, const struct store_rcpt *r)
{
	struct rseen *s = arg;
	if (s->stop_at && s->n == s->stop_at)
		return 1;
	s->r[s->n++] = *r;
	return 0;
}

Test(store, receipts_coalesce_per_message_and_peer)
{
	st = open_map(MAP_BYTES);
	int dropped = -1;
	cr_assert_eq(store_rcpt_put(st, 1, 2, 100, PROTO_RCPT_DELIVERED, 3, 10, &dropped), 0);
	cr_assert_eq(dropped, 0);
	/* the same message again: one record, the stronger kind wins */
	cr_assert_eq(store_rcpt_put(st, 1, 2, 100, PROTO_RCPT_READ, 3, 10, NULL), 0);
	cr_assert_eq(store_rcpt_put(st, 1, 2, 100, PROTO_RCPT_DELIVERED, 3, 10, NULL), 0);
	cr_assert_eq(store_rcpt_count(st, 1), 1);
	/* at most 3 per (owner, peer): the oldest gives way */
	cr_assert_eq(store_rcpt_put(st, 1, 2, 101, PROTO_RCPT_READ, 3, 10, NULL), 0);
	cr_assert_eq(store_rcpt_put(st, 1, 2, 102, PROTO_RCPT_READ, 3, 10, NULL), 0);
	cr_assert_eq(store_rcpt_put(st, 1, 2, 103, PROTO_RCPT_READ, 3, 10, &dropped), 0);
	cr_assert_eq(dropped, 1);
	cr_assert_eq(store_rcpt_count(st, 1), 3);
	/* one older than all kept for that peer is dropped itself */
	cr_assert_eq(store_rcpt_put(st, 1, 2, 50, PROTO_RCPT_READ, 3, 10, &dropped), 0);
	cr_assert_eq(dropped, 1);
	/* other peers have their own bound; the owner's total is bounded too */
	for (uint64_t p = 3; p < 10; p++)
		cr_assert_eq(store_rcpt_put(st, 1, p, 200, PROTO_RCPT_READ, 3, 10, NULL), 0);
	cr_assert_eq(store_rcpt_count(st, 1), 10);
	cr_assert_eq(store_rcpt_put(st, 1, 20, 300, PROTO_RCPT_READ, 3, 10, NULL), STORE_E_FULL);
	cr_assert_eq(store_rcpt_count(st, 1), 10);
	/* scanning: in (peer, smid) order, resumable, refused ones come again */
	struct rseen s = {.stop_at = 2};
	struct store_rcpt_pos pos = {0};
	cr_assert_eq(store_rcpt_scan(st, 1, &pos, 100, rcpt_cb, &s), 3);
	cr_assert_eq(s.n, 2);
	cr_assert(s.r[0].peer == 2 && s.r[0].smid == 101 && s.r[1].smid == 102, "order");
	s.stop_at = 0;
	cr_assert_eq(store_rcpt_scan(st, 1, &pos, 100, rcpt_cb, &s), 8);
	cr_assert_eq(s.n, 10);
	cr_assert(s.r[2].peer == 2 && s.r[2].smid == 103 && s.r[2].kind == PROTO_RCPT_READ, "the refused one came next");
	cr_assert_eq(s.r[3].peer, 3);
	/* deletes */
	cr_assert_eq(store_rcpt_del(st, 1, 2, 101), 0);
	cr_assert_eq(store_rcpt_del(st, 1, 2, 101), STORE_E_NOTFOUND);
	cr_assert_eq(store_rcpt_count(st, 1), 9);
	cr_assert_eq(store_rcpt_count(st, 2), 0, "another owner");
	commit();
	struct store_stats x;
	store_get_stats(st, &x);
	cr_assert_eq(x.receipts, 9);
}
