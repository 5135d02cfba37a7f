/* fuzz_link.c: a stateful libFuzzer target over the dist link
 * (runtime/link.c) and the backend's frame handlers (backend/node.c), with
 * its store (LMDB in a temporary directory, small map).
 *
 * One real backend node (the code the binary runs) on a real io_uring in
 * this process; the input plays a gateway on a socketpair attached to it as
 * an accepted link. The first byte says whether it authenticates first (it
 * holds the cluster secret and reads the backend's HELLO to answer with a
 * real AUTH), or speaks raw from the start. The rest is a program: raw
 * bytes, HELLO, AUTH (real or forged), CREDIT of any size, HEARTBEAT (asking
 * for an echo), and BATCHes of well-formed inner frames with fuzzed fields
 * (ROUTE, SESSION_UP/DOWN, RECEIPT with any flags RELAY included,
 * RECEIPT_ACK, GROUP_OP, HANDOFF and HANDOFF_ACK); the input may
 * read what the backend sent, or never read at all.
 *
 * After every step: the link's queued bytes stay within its bound plus one
 * batch, its credit within LINK_CREDIT_MAX, only the known control slots are
 * pending, nothing but HELLO/AUTH/ERROR was acted on before authentication,
 * the store's transaction never failed, the backlog's and the handoff's
 * indexes agree with them (and only users of other threads are handed off).
 * At the end the peer closes and the link must come to rest, with none of
 * its sessions left in the directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/be.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "runtime/peerauth.h"
#include "fuzz/check.h"


static struct be b;
static char dir[64];
int be_draining;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void cleanup(void)
{
	if (dir[0])
		nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz_link", getenv("FUZZ_LINK_LOG") ? LOG_DEBUG : LOG_ERROR);
	snprintf(dir, sizeof dir, "/tmp/fuzz_link.%d", (int)getpid());
	atexit(cleanup);
	char err[256], path[96];
	snprintf(path, sizeof path, "%s.cluster", dir);
	FILE *f = fopen(path, "w");
	CHECK(f);
	fprintf(f, "backend 11 127.0.0.1:1\nbackend 12 127.0.0.1:2\ngateway 1\ngateway 2\n");
	fclose(f);
	static struct cluster cluster;
	CHECK(cluster_load(&cluster, path, err, sizeof err) == 0);
	b.cluster = &cluster;
	unlink(path);
	uint8_t key[40];
	memset(key, 9, sizeof key);
	CHECK(peerauth_add(&b.keys, key, sizeof key) == 0);
	struct be_config *cfg = &b.cfg;
	cfg->node = 11;
	cfg->mailbox_max = 50;
	cfg->max_group = 16;
	cfg->link_queue = 64 << 10;
	cfg->link_batch = 16 << 10;
	cfg->dedup_window_ms = 600000;
	cfg->sender_max = 40;
	cfg->receipt_max = 30;
	cfg->fanout_rate = 200;
	b.self = cluster_find(&cluster, 11);
	b.thread = 0;
	b.threads = 1;
	b.link_self = cluster.nodes[b.self].link0;
	b.all = &b;
	b.store = store_open(dir, 8u << 20, err, sizeof err);
	CHECK(b.store);
	b.lfd = -1;
	b.now_ns = clock_mono_ns();
	b.wall_ms = clock_wall_ms();
	CHECK(be_setup(&b, err, sizeof err) == 0);
	return 0;
}

static int peer = -1;
static struct link *lk;

static void turn(void)
{
	be_turn(&b, 0);
}

/* Frames the backend sent, parsed as they come (never blocking). */
static uint8_t rx[1 << 16];
static size_t rxn;
static uint8_t hello_peer[LINK_HELLO_MAX];
static size_t hello_peer_len;

static void peer_read(void)
{
	for (;;) {
		ssize_t r = recv(peer, rx + rxn, sizeof rx - rxn, MSG_DONTWAIT);
		if (r <= 0)
			break;
		rxn += (size_t)r;
		size_t off = 0;
		for (;;) {
			struct dist_frame f;
			long n = dist_parse(rx + off, rxn - off, &f);
			if (n == PROTO_NEED_MORE)
				break;
			CHECK(n > 0); /* the backend never sends what it would call malformed */
			if (f.type == DIST_HELLO && (size_t)n <= sizeof hello_peer) {
				memcpy(hello_peer, rx + off, (size_t)n);
				hello_peer_len = (size_t)n;
			}
			off += (size_t)n;
		}
		memmove(rx, rx + off, rxn - off);
		rxn -= off;
		if (rxn == sizeof rx)
			rxn = 0; /* a frame longer than we keep: drop it (cannot happen below 1 MiB batches) */
	}
}

static void peer_send(const uint8_t *p, size_t n)
{
	while (n && peer >= 0) {
		ssize_t r = send(peer, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r <= 0) {
			if (r < 0 && errno == EAGAIN) {
				turn(); /* the backend reads: it drains */
				if (lk->state == LINK_IDLE)
					return;
				continue;
			}
			return;
		}
		p += r;
		n -= (size_t)r;
	}
}

struct rd {
	const uint8_t *p, *end;
};

static unsigned take(struct rd *r)
{
	return r->p < r->end ? *r->p++ : 0;
}

static uint64_t take64(struct rd *r, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes; i++)
		v = v << 8 | take(r);
	return v;
}

static uint8_t hello_mine[LINK_HELLO_MAX];
static size_t hello_mine_len;

static void send_hello(struct rd *in, int valid)
{
	uint8_t nonce[DIST_NONCE];
	for (unsigned i = 0; i < DIST_NONCE; i++)
		nonce[i] = (uint8_t)take(in);
	struct dist_frame f = {.type = DIST_HELLO};
	f.hello.version = DIST_VERSION;
	f.hello.role = valid ? DIST_ROLE_GATEWAY : (uint8_t)(1 + take(in) % 2);
	f.hello.node = valid ? 1 : 1 + take(in) % 4;
	f.hello.threads = valid ? 2 : 1 + take(in) % 300;
	f.hello.thread = valid ? 0 : take(in) % f.hello.threads;
	f.hello.key_id = valid ? peerauth_sign_id(&b.keys) : (uint32_t)take64(in, 4);
	f.hello.nonce = nonce;
	hello_mine_len = dist_encode(&f, hello_mine, sizeof hello_mine);
	peer_send(hello_mine, hello_mine_len);
}

static void send_auth(int real)
{
	uint8_t mac[DIST_MAC];
	memset(mac, 0x5a, sizeof mac);
	if (real)
		peerauth_mac(&b.keys, peerauth_sign_id(&b.keys), PEERAUTH_DIR_CONNECT, hello_mine, hello_mine_len,
			     hello_peer, hello_peer_len, mac);
	struct dist_frame f = {.type = DIST_AUTH};
	f.auth.mac = mac;
	uint8_t buf[64];
	peer_send(buf, dist_encode(&f, buf, sizeof buf));
}

/* One inner frame with fields from the input, users 1..12 (owned by both
 * backends), smids near now from either backend. */
static int inner_frame(struct rd *in, struct dist_frame *f, uint8_t *members, size_t *mlen)
{
	static uint8_t body[2048];
	unsigned t = take(in) % 8;
	unsigned ago = take(in), node = 11 + take(in) % 2;
	uint64_t smid = msgid_make(b.wall_ms - ago, node, take(in));
	memset(f, 0, sizeof *f);
	switch (t) {
	case 0: {
		f->type = DIST_ROUTE;
		f->route.from = 1 + take(in) % 12;
		int group = take(in) & 1;
		f->route.to = group ? 0 : 1 + take(in) % 12;
		f->route.group = group ? ((uint64_t)11 << 48) | (1 + take(in) % 4) : 0;
		f->route.onode = 1;
		f->route.othread = take(in) % 2;
		f->route.oconn = take(in);
		f->route.cmid = take(in) % 8;
		size_t n = 1 + (size_t)take(in) * 8;
		memset(body, 'b', n);
		f->route.body = (struct proto_bytes){body, (uint32_t)n};
		return 0;
	}
	case 1:
	case 2:
		f->type = t == 1 ? DIST_SESSION_UP : DIST_SESSION_DOWN;
		f->session.user = 1 + take(in) % 12;
		f->session.node = 1;
		f->session.thread = take(in) % 2;
		f->session.conn = take(in);
		f->session.flags = t == 1 ? (uint8_t)(take(in) & DIST_SESS_RCPT_ACKS) : 0;
		return 0;
	case 3:
		f->type = DIST_RECEIPT;
		f->receipt.kind = (uint8_t)(1 + take(in) % 2);
		f->receipt.flags = (take(in) & 1) ? DIST_RCPT_RELAY : (uint8_t)(1 + take(in) % 7);
		f->receipt.from = 1 + take(in) % 12;
		f->receipt.to = 1 + take(in) % 12;
		f->receipt.smid = smid;
		return 0;
	case 6: {
		/* a copy from a holder (either backend, either thread: itself too) */
		f->type = DIST_HANDOFF;
		f->route.smid = smid;
		f->route.from = 1 + take(in) % 12;
		f->route.to = 1 + take(in) % 12;
		f->route.group = (take(in) & 1) ? ((uint64_t)11 << 48) | (1 + take(in) % 4) : 0;
		f->route.onode = node;
		f->route.othread = take(in) % 2;
		size_t n = 1 + (size_t)take(in) * 8;
		memset(body, 'h', n);
		f->route.body = (struct proto_bytes){body, (uint32_t)n};
		return 0;
	}
	case 7:
		f->type = DIST_HANDOFF_ACK;
		f->handoff_ack.node = node;
		f->handoff_ack.thread = take(in) % 2;
		f->handoff_ack.user = 1 + take(in) % 12;
		f->handoff_ack.smid = smid;
		return 0;
	case 4:
		f->type = DIST_RECEIPT_ACK;
		f->receipt_ack.user = 1 + take(in) % 12;
		f->receipt_ack.peer = 1 + take(in) % 12;
		f->receipt_ack.smid = smid;
		return 0;
	default: {
		f->type = DIST_GROUP_OP;
		f->group_op.op = (uint8_t)(1 + take(in) % 4);
		f->group_op.req = take(in);
		f->group_op.group = f->group_op.op == PROTO_GROUP_CREATE ? 0 : ((uint64_t)11 << 48) | (1 + take(in) % 4);
		f->group_op.user = 1 + take(in) % 12;
		f->group_op.thread = take(in) % 2;
		f->group_op.conn = take(in);
		unsigned cnt = f->group_op.op == PROTO_GROUP_LEAVE ? 0 : take(in) % 8;
		*mlen = 0;
		for (unsigned i = 0; i < cnt; i++)
			members[(*mlen)++] = (uint8_t)(1 + take(in) % 12);
		f->group_op.count = cnt;
		f->group_op.members = (struct proto_bytes){members, (uint32_t)*mlen};
		return 0;
	}
	}
}

static void check_link(void)
{
	CHECK(lk->credit >= 0 && (uint64_t)lk->credit <= LINK_CREDIT_MAX);
	CHECK(link_queued(lk) <= lk->queue_max + lk->batch_cap + DIST_MAX_INNER);
	CHECK(lk->ctrl < (1u << 6));
	CHECK(lk->rx_len <= lk->rx_cap);
	if (lk->state != LINK_UP)
		CHECK(lk->rx_cap <= LINK_RX_HANDSHAKE || lk->rx == NULL);
	CHECK(store_failed(b.store) == 0);
	CHECK(b.backlog_of.count == b.nbacklog);
	CHECK(b.hand_of.count == b.nhand);
	for (size_t i = 0; i < b.nhand; i++) {
		/* handed off: users of other node threads only */
		CHECK(cluster_user_link(b.cluster, b.hand[i].user) != b.link_self);
		const uint64_t *at = u64map_get(&b.hand_of, b.hand[i].user);
		CHECK(at && *at == i);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd in = {data, data + size};
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	peer = sv[0];
	rxn = 0;
	hello_peer_len = 0;
	uint32_t nl = b.nlinks;
	be_attach(&b, sv[1]);
	uint32_t li;
	for (li = 0; li < b.nlinks && b.links[li].fd != sv[1]; li++)
		;
	CHECK(li < b.nlinks);
	CHECK(b.nlinks <= nl + 1);
	lk = &b.links[li];
	turn();
	int authed = take(&in) & 1, reads = take(&in) & 1, real_auth = 0;
	if (authed) {
		send_hello(&in, 1);
		for (int k = 0; k < 20 && !hello_peer_len; k++) {
			turn();
			peer_read();
		}
		send_auth(1);
		for (int k = 0; k < 20 && lk->state != LINK_UP && lk->state != LINK_IDLE; k++)
			turn();
		CHECK(lk->state == LINK_UP);
	}
	static uint8_t batch[1 << 17];
	for (int steps = 0; in.p < in.end && steps < 48 && lk->state != LINK_IDLE; steps++) {
		unsigned op = take(&in) % 7;
		uint8_t buf[64];
		switch (op) {
		case 0: { /* raw bytes */
			size_t n = take(&in);
			if (n > (size_t)(in.end - in.p))
				n = (size_t)(in.end - in.p);
			peer_send(in.p, n);
			in.p += n;
			break;
		}
		case 1:
			send_hello(&in, take(&in) & 1);
			break;
		case 2: {
			int real = (take(&in) & 1) && hello_peer_len;
			real_auth |= real;
			send_auth(real);
			break;
		}
		case 3: {
			struct dist_frame f = {.type = DIST_CREDIT};
			f.credit.bytes = take64(&in, 1 + take(&in) % 8);
			peer_send(buf, dist_encode(&f, buf, sizeof buf));
			break;
		}
		case 4: { /* heartbeats asking for echoes, many of them */
			struct dist_frame f = {.type = DIST_HEARTBEAT};
			unsigned n = 1 + take(&in) * 8;
			for (unsigned i = 0; i < n; i++) {
				f.heartbeat.seq = i;
				f.heartbeat.t_us = i;
				peer_send(buf, dist_encode(&f, buf, sizeof buf));
			}
			break;
		}
		case 5: { /* a batch of well-formed inner frames */
			struct dist_batch bt;
			dist_batch_init(&bt, batch, sizeof batch);
			unsigned n = 1 + take(&in) % 24;
			uint8_t members[16];
			for (unsigned i = 0; i < n; i++) {
				struct dist_frame f;
				size_t ml = 0;
				inner_frame(&in, &f, members, &ml);
				if (dist_batch_add(&bt, &f) != 0)
					break;
			}
			if (bt.count) {
				size_t bn;
				uint8_t *p = dist_batch_finish(&bt, 1 + take(&in), &bn);
				peer_send(p, bn);
			}
			break;
		}
		case 6:
			if (reads)
				peer_read();
			break;
		}
		turn();
		turn();
		if (reads)
			peer_read();
		check_link();
		if (!authed && !real_auth)
			CHECK(lk->st.frames_in == 0); /* nothing acted on without authentication */
	}
	/* the end: the peer goes; the link must come to rest, its sessions gone */
	close(peer);
	peer = -1;
	for (int k = 0; k < 200 && !(lk->state == LINK_IDLE && link_quiet(lk)); k++)
		be_turn(&b, 2000000);
	CHECK(lk->state == LINK_IDLE && link_quiet(lk));
	size_t pos = 0;
	const struct u64map_ent *e;
	while ((e = u64map_next(&b.dir, &pos)))
		CHECK((uint32_t)((e->val & ~(1ull << 63)) >> 48) != li);
	CHECK(store_failed(b.store) == 0);
	return 0;
}
