/* fuzz_gateway.c: a stateful libFuzzer target over the gateway's input path.
 *
 * One real gateway worker (gateway/worker.c, session.c, dist.c: the code the
 * binary runs) on a real io_uring in this process, with one thread, tiny
 * receive buffers (256 bytes: every larger frame goes through the
 * partial-frame carry), a tiny --max-queue (slow consumers), a frame rate
 * limit, and a dist link to a backend that does not exist (connection
 * refused: its queue fills and senders get try_again; a real link, not a
 * mock). Client sockets are socketpairs put straight into the ring's
 * fixed-file table and adopted as accepted connections; the kernel's
 * multishot receive then delivers what the input writes into their peer
 * ends, in whatever pieces the socket gives.
 *
 * The input is a program: each step picks an operation and a connection
 * (open, raw bytes, a valid LOGIN, a well-formed SEND split into chunks, a
 * RECEIPT, a GROUP request, read what the gateway sent, close). Users are
 * 1..8, so messages go to oneself, to other local users and to offline ones
 * (then to the dist link). After every step the loop turns and the gauges
 * are checked against the connection table: partial frames, queued bytes,
 * connections, closing ones, logged-in ones. At the end every peer closes,
 * and every connection must be freed with every gauge back at zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/gw.h"
#include "runtime/clock.h"
#include "runtime/log.h"
#include "fuzz/check.h"


#define NCONN 6
#define SLOTS 128u

static struct gw gw;
static struct worker *w;
static int peer[NCONN] = {-1, -1, -1, -1, -1, -1};
static uint32_t slot_of[NCONN];
static char cluster_path[64];

int gw_draining;

static void turn(int wait_ms)
{
	worker_before_wait(w);
	struct __kernel_timespec ts = {0, (long long)wait_ms * 1000000};
	struct io_uring_cqe *cqe;
	io_uring_submit_and_wait_timeout(&w->ring, &cqe, wait_ms ? 1 : 0, wait_ms ? &ts : NULL, NULL);
	worker_after_wait(w);
}

/* Every gauge agrees with the connection table. */
static void check_gauges(void)
{
	uint64_t partial = 0, queued = 0, live = 0, closing = 0, logged = 0;
	for (uint32_t s = 0; s < w->slots; s++) {
		const struct conn *c = &w->conns[s];
		if (c->state == CS_FREE) {
			CHECK(!c->in && !c->out);
			continue;
		}
		live++;
		closing += c->state == CS_CLOSING;
		logged += c->state == CS_LIVE;
		partial += c->in != NULL;
		if (c->out)
			queued += c->out->len;
		if (c->state != CS_HANDOFF && c->sending)
			queued += c->sending->len;
	}
	CHECK(live == w->live);
	CHECK(closing == w->closing);
	/* every counted connection is in the per-source table once: a row's
	 * counters add up to them exactly */
	uint64_t counted = 0, row = 0;
	for (uint32_t s = 0; s < w->slots; s++)
		counted += w->conns[s].state != CS_FREE && (w->conns[s].flags & CF_SRC) && w->peers[s].fam;
	for (uint32_t i = 0; i <= gw.srclim.mask; i++)
		row += gw.srclim.conns[i];
	CHECK(row == counted);
	CHECK(partial == w->cnt.partial_bufs);
	CHECK(queued == w->cnt.queue_bytes);
	CHECK(logged == w->cnt.logged_in);
	CHECK(w->cnt.conns == w->live);
	CHECK(w->input_slot == UINT32_MAX);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz_gateway", getenv("FUZZ_GW_LOG") ? LOG_DEBUG : LOG_ERROR);
	struct gw_config *cfg = &gw.cfg;
	cfg->threads = 1;
	cfg->node = 1;
	cfg->login_timeout_ms = 10000;
	cfg->keepalive_ms = 300000;
	cfg->write_stall_ms = 30000;
	cfg->drain_ms = 1000;
	cfg->max_queue = 256; /* a burst of 4 x this when no send is in flight */
	cfg->rate_frames = 300;
	cfg->rate_bytes = 1 << 20;
	cfg->max_body = 4096;
	cfg->recv_buf = 256;
	cfg->recv_pool = 1 << 16;
	cfg->backlog = 16;
	cfg->link_queue = 64 << 10;
	cfg->link_batch = 16 << 10;
	cfg->link_sockbuf = 0;
	cfg->store_timeout_ms = 10000;
	cfg->src_max_conns = 1;
	CHECK(srclim_init(&gw.srclim, SLOTS) == 0);
	uint8_t key[32];
	memset(key, 7, sizeof key);
	static struct gw_live live;
	token_secret_set(&live.keys.key[0], key, sizeof key);
	live.keys.n = 1;
	live.cfg = *cfg;
	live.refs = 1;
	gw.live = &live;
	/* a backend nobody runs: port 1 refuses */
	snprintf(cluster_path, sizeof cluster_path, "/tmp/fuzz_gateway.%d.cluster", (int)getpid());
	FILE *f = fopen(cluster_path, "w");
	CHECK(f);
	fprintf(f, "backend 11 127.0.0.1:1\ngateway 1\n");
	fclose(f);
	char err[256];
	CHECK(cluster_load(&gw.cluster, cluster_path, err, sizeof err) == 0);
	unlink(cluster_path);
	uint8_t ck[40];
	memset(ck, 9, sizeof ck);
	CHECK(peerauth_add(&live.cluster, ck, sizeof ck) == 0);
	gw.nthreads = 1;
	gw.stall_thread = -1;
	gw.slots = SLOTS;
	gw.nlisten = 0;
	static struct worker one;
	static int ring_fd;
	gw.w = &one;
	gw.ring_fds = &ring_fd;
	w = &one;
	w->gw = &gw;
	w->id = 0;
	w->start_ns = w->now_ns = clock_mono_ns();
	w->tick = 1;
	if (worker_setup(w, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_gateway: set-up: %s\n", err);
		abort();
	}
	ring_fd = w->ring.ring_fd;
	return 0;
}

static void open_conn(int k)
{
	if (peer[k] >= 0)
		return;
	uint32_t s;
	for (s = 0; s < w->slots && w->conns[s].state != CS_FREE; s++)
		;
	if (s == w->slots)
		return;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return;
	int fd = sv[1];
	if (io_uring_register_files_update(&w->ring, s, &fd, 1) != 1) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	close(sv[1]); /* the table holds its own reference */
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	peer[k] = sv[0];
	slot_of[k] = s;
	/* five sources (clients 0 and 5 share one, --max-conns-per-source 1):
	 * the limit is met; odd clients come through a ",proxy" listener */
	struct src from = {0};
	uint8_t ip[4] = {192, 0, 2, (uint8_t)(k % 5)};
	src_set(&from, AF_INET, ip, (uint16_t)(1000 + k));
	worker_adopt(w, s, &from, k & 1, 0);
}

static void close_peer(int k)
{
	if (peer[k] >= 0)
		close(peer[k]);
	peer[k] = -1;
}

/* Write to the gateway in pieces of `chunk` bytes, turning the loop between. */
static void write_peer(int k, const uint8_t *p, size_t n, size_t chunk)
{
	if (peer[k] < 0)
		return;
	if (chunk == 0)
		chunk = n;
	while (n) {
		size_t m = n < chunk ? n : chunk;
		ssize_t r = send(peer[k], p, m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r <= 0) {
			if (r < 0 && errno == EAGAIN) {
				turn(0);
				continue; /* the gateway is reading: it drains */
			}
			return; /* the gateway closed it */
		}
		p += r;
		n -= (size_t)r;
		turn(0);
	}
}

static void read_peer(int k)
{
	static uint8_t sink[1 << 16];
	if (peer[k] < 0)
		return;
	while (recv(peer[k], sink, sizeof sink, MSG_DONTWAIT) > 0)
		;
}

struct rd {
	const uint8_t *p, *end;
};

static unsigned take(struct rd *r)
{
	return r->p < r->end ? *r->p++ : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd in = {data, data + size};
	static uint8_t buf[PROTO_MAX_FRAME_BYTES + 64], body[PROTO_MAX_BODY];
	for (int steps = 0; in.p < in.end && steps < 64; steps++) {
		unsigned op = take(&in) % 8, k = take(&in) % NCONN;
		struct proto_frame f;
		memset(&f, 0, sizeof f);
		size_t n = 0;
		switch (op) {
		case 0:
			open_conn((int)k);
			break;
		case 1: { /* raw bytes */
			size_t len = take(&in);
			if (len > (size_t)(in.end - in.p))
				len = (size_t)(in.end - in.p);
			write_peer((int)k, in.p, len, 1 + take(&in) % 64);
			in.p += len;
			break;
		}
		case 2: { /* a valid LOGIN, version 0..2, in pieces */
			uint8_t tok[TOKEN_LEN];
			uint64_t user = 1 + take(&in) % 8;
			token_mint(&gw.live->keys.key[0], user, (uint64_t)(clock_wall_ms() / 1000) + 3600, tok);
			f.type = PROTO_LOGIN;
			f.login.version = (uint8_t)(take(&in) % 3);
			f.login.user = user;
			f.login.token = (struct proto_bytes){tok, TOKEN_LEN};
			n = proto_encode(&f, buf, sizeof buf);
			write_peer((int)k, buf, n, 1 + take(&in) % 48);
			break;
		}
		case 3: { /* a SEND, possibly large, in receive-sized chunks */
			unsigned to = 1 + take(&in) % 9, group = take(&in) & 1;
			size_t len = 1 + ((size_t)take(&in) << 6) % PROTO_MAX_BODY;
			memset(body, 'a' + (int)(len % 26), len);
			f.type = PROTO_SEND;
			f.send.cmid = take(&in);
			f.send.to = group ? ((uint64_t)11 << 48) | to : to;
			f.send.group = (uint8_t)group;
			f.send.body = (struct proto_bytes){body, (uint32_t)len};
			n = proto_encode(&f, buf, sizeof buf);
			write_peer((int)k, buf, n, 1 + (size_t)take(&in) * 17);
			break;
		}
		case 4: { /* a RECEIPT about some message id */
			f.type = PROTO_RECEIPT;
			f.receipt.kind = (uint8_t)(1 + take(&in) % 3);
			f.receipt.peer = 1 + take(&in) % 9;
			uint64_t smid = 0;
			for (int b = 0; b < 8; b++)
				smid = smid << 8 | take(&in);
			f.receipt.smid = smid ? smid : 1;
			n = proto_encode(&f, buf, sizeof buf);
			write_peer((int)k, buf, n, 0);
			break;
		}
		case 5:
			read_peer((int)k);
			break;
		case 6:
			close_peer((int)k);
			break;
		case 7: { /* a GROUP request */
			uint8_t members[16], *mp = members;
			unsigned cnt = take(&in) % 4;
			for (unsigned i = 0; i < cnt; i++)
				*mp++ = (uint8_t)(1 + take(&in) % 9);
			f.type = PROTO_GROUP;
			f.group.op = (uint8_t)(1 + take(&in) % 4);
			f.group.req = take(&in);
			f.group.group = f.group.op == PROTO_GROUP_CREATE ? 0 : ((uint64_t)11 << 48) | 1;
			f.group.count = f.group.op == PROTO_GROUP_LEAVE ? 0 : cnt;
			f.group.members = (struct proto_bytes){members, f.group.count ? (uint32_t)(mp - members) : 0};
			n = proto_encode(&f, buf, sizeof buf);
			if (n)
				write_peer((int)k, buf, n, 0);
			break;
		}
		}
		turn(0);
		turn(0);
		check_gauges();
	}
	if (getenv("FUZZ_GW_LOG"))
		fprintf(stderr,
			"fuzz_gateway: accepted %llu logins %llu frames in send %llu, slow %llu, closed protocol %llu, "
			"rate %llu, bytes in %llu\n",
			(unsigned long long)w->cnt.accepted, (unsigned long long)w->cnt.logins_ok,
			(unsigned long long)w->cnt.frames_in[PROTO_FI_SEND], (unsigned long long)w->cnt.slow_consumers,
			(unsigned long long)w->cnt.closed[CLOSE_PROTOCOL], (unsigned long long)w->cnt.rate_limited,
			(unsigned long long)w->cnt.bytes_in);
	/* the end: every client goes; every connection must be freed */
	for (int k = 0; k < NCONN; k++)
		close_peer(k);
	for (int i = 0; i < 500 && w->live; i++)
		turn(2);
	check_gauges();
	CHECK(w->live == 0);
	CHECK(w->cnt.partial_bufs == 0);
	CHECK(w->cnt.queue_bytes == 0);
	CHECK(w->cnt.logged_in == 0);
	CHECK(w->dir.count == 0);
	/* the backend "took" what was queued for it, so every input starts with
	 * an empty link queue (a full one refuses before reading a frame) */
	for (size_t i = 0; i < gw.cluster.nlinks; i++)
		link_drop_held(&w->links[i]);
	return 0;
}
