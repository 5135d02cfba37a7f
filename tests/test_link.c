/* test_link.c: criterion tests of runtime/link.h, the dist link, driven on a
 * real io_uring in the test process.
 *
 * Two shapes: link to link (an outbound link connects to a loopback
 * listener, the accepted socket is attached to a second link on the same
 * ring: the handshake, batches and credit both ways), and link to a
 * hand-driven peer (a socketpair: one end attached to a link, the test
 * writes raw frames into the other, and may never read it) for what a
 * hostile peer does: frames before authentication, floods of heartbeats,
 * absurd credit grants.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/clock.h"
#include "runtime/link.h"
#include "runtime/peerauth.h"
#include "runtime/uring.h"

enum { UD_L = 3 };

struct side {
	struct link l;
	unsigned ups, downs, frames;
	uint64_t last_from;
	uint8_t first_type, session_after; /* the first frame's type; frames before the first SESSION_UP */
	unsigned sessions, routes_before_last_session; /* SESSION_UPs; ROUTEs seen before the last of them */
};

static struct io_uring ring;
static struct side sides[2];
static struct peerauth_keys keys, other_keys;

static void on_frame(void *arg, struct link *l, const struct dist_frame *f)
{
	struct side *s = arg;
	(void)l;
	if (!s->frames++)
		s->first_type = f->type;
	if (f->type == DIST_SESSION_UP && !s->session_after)
		s->session_after = (uint8_t)(s->frames < 255 ? s->frames : 255);
	if (f->type == DIST_SESSION_UP) {
		s->sessions++;
		s->routes_before_last_session = s->frames - s->sessions;
	}
	if (f->type == DIST_ROUTE)
		s->last_from = f->route.from;
}

static void on_up(void *arg, struct link *l)
{
	(void)l;
	((struct side *)arg)->ups++;
}

static void on_down(void *arg, struct link *l, const char *why)
{
	(void)l;
	(void)why;
	((struct side *)arg)->downs++;
}

static const struct link_ops ops = {NULL, on_frame, on_up, on_down};

static void dispatch(void *arg, const struct io_uring_cqe *cqe)
{
	(void)arg;
	unsigned i = ud_slot(cqe->user_data);
	if (ud_kind(cqe->user_data) == UD_L && i < 2)
		link_complete(&sides[i].l, &ring, cqe, clock_mono_ns());
}

/* One loop iteration of the owner: flush, submit and wait (up to wait_ms), dispatch, tick. */
static void turn(int wait_ms)
{
	uint64_t now = clock_mono_ns();
	for (int i = 0; i < 2; i++)
		link_flush(&sides[i].l, &ring, now);
	struct __kernel_timespec ts = {0, (long long)wait_ms * 1000000};
	struct io_uring_cqe *cqe;
	io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
	ring_dispatch(&ring, 4096, dispatch, NULL);
	now = clock_mono_ns();
	for (int i = 0; i < 2; i++)
		link_tick(&sides[i].l, &ring, now);
}

/* Turn until cond() holds or ms pass; returns whether it held. */
static int turn_until(int (*cond)(void), int ms)
{
	uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000;
	while (!cond()) {
		if (clock_mono_ns() > end)
			return 0;
		turn(5);
	}
	return 1;
}

static void setup(void)
{
	memset(sides, 0, sizeof sides);
	memset(&keys, 0, sizeof keys);
	memset(&other_keys, 0, sizeof other_keys);
	uint8_t k[40];
	memset(k, 'a', sizeof k);
	cr_assert_eq(peerauth_add(&keys, k, sizeof k), 0);
	memset(k, 'b', sizeof k);
	cr_assert_eq(peerauth_add(&other_keys, k, sizeof k), 0);
	cr_assert_eq(ring_init(&ring, 256, 1024, NULL), 0);
	for (int i = 0; i < 2; i++)
		link_init(&sides[i].l, (unsigned)i, UD_L, &ops, &sides[i], &keys, i == 0 ? DIST_ROLE_GATEWAY : DIST_ROLE_BACKEND,
			  (uint32_t)(i + 1), 0, 1, 256 << 10, 1 << 20, 0);
}

static void teardown(void)
{
	/* close both and let their operations finish before freeing */
	for (int i = 0; i < 2; i++) {
		sides[i].l.outbound = 0; /* no reconnect */
		link_close(&sides[i].l, &ring, "test over", clock_mono_ns());
	}
	for (int k = 0; k < 100 && !(link_quiet(&sides[0].l) && link_quiet(&sides[1].l)); k++)
		turn(5);
	for (int i = 0; i < 2; i++)
		link_free(&sides[i].l);
	io_uring_queue_exit(&ring);
}

TestSuite(link, .init = setup, .fini = teardown, .timeout = 20);

/* ---- link to link ------------------------------------------------------------ */

static int lfd = -1;

/* sides[0] connects to a loopback listener; the accepted socket becomes
 * sides[1], accepted after sides[0] has run alone for delay_ms (a peer that
 * is stopped: the kernel completes the connection, nobody answers). */
static void connect_pair_after(int delay_ms)
{
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	cr_assert_eq(listen(lfd, 4), 0);
	socklen_t sl = sizeof sa;
	getsockname(lfd, (struct sockaddr *)&sa, &sl);
	struct addr a;
	memcpy(&a.ss, &sa, sizeof sa);
	a.len = sizeof sa;
	link_connect(&sides[0].l, &ring, &a, clock_mono_ns());
	io_uring_submit(&ring);
	for (uint64_t end = clock_mono_ns() + (uint64_t)delay_ms * 1000000; clock_mono_ns() < end;)
		turn(5);
	struct pollfd pf = {lfd, POLLIN, 0};
	cr_assert_eq(poll(&pf, 1, 2000), 1, "no connection");
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0);
	close(lfd);
	link_attach(&sides[1].l, &ring, fd, clock_mono_ns());
}

static void connect_pair(void)
{
	connect_pair_after(0);
}

static int both_up(void)
{
	return sides[0].l.state == LINK_UP && sides[1].l.state == LINK_UP;
}

static int both_down(void)
{
	return sides[0].l.state != LINK_UP && sides[0].l.state != LINK_HELLO && sides[0].l.state != LINK_AUTH &&
	       sides[1].l.state != LINK_UP && sides[1].l.state != LINK_HELLO && sides[1].l.state != LINK_AUTH;
}

Test(link, handshake_and_batches_both_ways)
{
	connect_pair();
	cr_assert(turn_until(both_up, 3000), "handshake: states %s / %s", link_state_name(sides[0].l.state),
		  link_state_name(sides[1].l.state));
	cr_assert_eq(sides[0].ups, 1);
	cr_assert_eq(sides[1].ups, 1);
	cr_assert_eq(sides[1].l.peer_node, 1);
	cr_assert_eq(sides[0].l.peer_node, 2);
	/* frames both ways */
	for (int i = 0; i < 100; i++) {
		struct dist_frame f = {.type = DIST_ROUTE};
		f.route.from = 1000 + (uint64_t)i;
		f.route.to = 7;
		f.route.body = (struct proto_bytes){(const uint8_t *)"x", 1};
		cr_assert_eq(link_add(&sides[i & 1].l, &f), 0);
	}
	for (int k = 0; k < 100 && (sides[0].frames < 50 || sides[1].frames < 50); k++)
		turn(5);
	cr_assert_eq(sides[1].frames, 50);
	cr_assert_eq(sides[0].frames, 50);
	cr_assert_eq(sides[1].last_from, 1098);
	cr_assert_eq(sides[0].l.st.auth_failures + sides[1].l.st.auth_failures, 0);
	/* the published figures: counters and gauges of both links */
	struct link_stats a, b, sum = {0}, retired = {0};
	link_stats_snapshot(&sides[0].l, &a);
	link_stats_snapshot(&sides[1].l, &b);
	cr_assert_eq(a.up + b.up, 2);
	cr_assert_eq(a.frames_in + b.frames_in, 100);
	cr_assert_eq(a.frames_out + b.frames_out, 100);
	cr_assert_geq(a.batches_out, 1);
	a.rtt_us = 40, b.rtt_us = 900;
	link_stats_merge(&sum, &a);
	link_stats_merge(&sum, &b);
	cr_assert_eq(sum.frames_in, 100);
	cr_assert_eq(sum.bytes_out, a.bytes_out + b.bytes_out);
	cr_assert_eq(sum.up, 2, "a gauge is summed");
	cr_assert_eq(sum.rtt_us, 900, "a MAX row is the largest, not the sum");
	link_stats_retire(&retired, &a);
	cr_assert_eq(retired.frames_in, a.frames_in, "a retired slot keeps its counters");
	cr_assert_eq(retired.up + retired.rtt_us + retired.queue_bytes, 0, "and not its gauges");
	cr_assert_str_eq(link_state_name(LINK_UP), "up");
	cr_assert_str_eq(link_state_name(LINK_AUTH), "auth");
	cr_assert_str_eq(link_state_name(99), "unknown");
}

/* A send takes several queued batches (one sendmsg); through small socket
 * buffers the kernel cuts it anywhere, inside a batch or between two, and
 * the rest follows in order: every frame arrives once, in order. */
Test(link, batches_of_one_send_arrive_whole_and_in_order)
{
	connect_pair();
	cr_assert(turn_until(both_up, 3000), "handshake");
	int small = 4096;
	cr_assert_eq(setsockopt(sides[0].l.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
	static uint8_t body[3000];
	memset(body, 'b', sizeof body);
	enum { BATCHES = 40, PER = 7 };
	for (int b = 0; b < BATCHES; b++) {
		for (int i = 0; i < PER; i++) {
			struct dist_frame f = {.type = DIST_ROUTE};
			f.route.from = 5000 + (uint64_t)(b * PER + i);
			f.route.to = 7;
			f.route.body = (struct proto_bytes){body, sizeof body - (size_t)(b * 13 + i)};
			cr_assert_eq(link_add(&sides[0].l, &f), 0);
		}
		link_flush(&sides[0].l, &ring, clock_mono_ns()); /* a batch each, queued before the sends drain */
	}
	uint64_t before = sides[0].l.st.batches_out;
	for (int k = 0; k < 2000 && sides[1].frames < BATCHES * PER; k++)
		turn(5);
	cr_assert_eq(sides[1].frames, BATCHES * PER, "%u frames of %d arrived; %llu batches out, %llu bytes, credit %lld, stalls %llu, state %s",
		     sides[1].frames, BATCHES * PER, (unsigned long long)sides[0].l.st.batches_out,
		     (unsigned long long)sides[0].l.st.bytes_out, (long long)sides[0].l.credit,
		     (unsigned long long)sides[0].l.st.credit_stalls, link_state_name(sides[1].l.state));
	cr_assert_eq(sides[1].last_from, 5000 + BATCHES * PER - 1, "in order");
	cr_assert_geq(sides[0].l.st.batches_out - before, BATCHES - 1);
	cr_assert_eq(link_queued(&sides[0].l), 0);
	cr_assert_eq(sides[0].l.state, LINK_UP);
	cr_assert_eq(sides[1].l.state, LINK_UP);
}

/* Session announcements are state: added after a queue full of traffic
 * that waited for the peer, they still reach it first (the state lane), so
 * a backend that comes back knows who is online before it works through
 * the backlog, and delivers to them meanwhile. */
Test(link, state_lane_goes_before_queued_traffic)
{
	for (int i = 0; i < 300; i++) {
		struct dist_frame f = {.type = DIST_ROUTE};
		f.route.from = 1000 + (uint64_t)i;
		f.route.to = 7;
		f.route.body = (struct proto_bytes){(const uint8_t *)"waited", 6};
		cr_assert_eq(link_add(&sides[0].l, &f), 0);
		if (i % 100 == 99)
			link_flush(&sides[0].l, &ring, clock_mono_ns()); /* several batches, as over loop iterations */
	}
	struct dist_frame s = {.type = DIST_SESSION_UP};
	s.session.user = 42;
	s.session.node = 1;
	s.session.conn = 5;
	cr_assert_eq(link_add_state(&sides[0].l, &s, 1 << 20), 0);
	size_t q = link_queued(&sides[0].l);
	cr_assert_gt(q, 300 * 6, "both lanes count in link_queued");
	connect_pair();
	for (int k = 0; k < 400 && sides[1].frames < 301; k++)
		turn(5);
	cr_assert_eq(sides[1].frames, 301);
	cr_assert_eq(sides[1].first_type, DIST_SESSION_UP, "the announcement waited behind the traffic");
	cr_assert_eq(sides[1].session_after, 1);
	cr_assert_eq(sides[1].last_from, 1299, "traffic in its order");
	cr_assert_eq(link_queued(&sides[0].l), 0);
}

/* A resync of many sessions does not stall traffic: with batches waiting in
 * both lanes they take turns (state first). */
Test(link, state_lane_takes_turns_with_traffic)
{
	struct dist_frame f = {.type = DIST_ROUTE};
	f.route.to = 7;
	f.route.body = (struct proto_bytes){(const uint8_t *)"waited", 6};
	struct dist_frame s = {.type = DIST_SESSION_UP};
	s.session.node = 1;
	for (int b = 0; b < 3; b++) { /* three batches in each lane */
		for (int i = 0; i < 10; i++) {
			f.route.from = 1000 + (uint64_t)(b * 10 + i);
			cr_assert_eq(link_add(&sides[0].l, &f), 0);
			s.session.user = 1 + (uint64_t)(b * 10 + i);
			cr_assert_eq(link_add_state(&sides[0].l, &s, 1 << 20), 0);
		}
		link_flush(&sides[0].l, &ring, clock_mono_ns());
	}
	connect_pair();
	for (int k = 0; k < 400 && sides[1].frames < 60; k++)
		turn(5);
	cr_assert_eq(sides[1].frames, 60);
	cr_assert_eq(sides[1].first_type, DIST_SESSION_UP);
	cr_assert_eq(sides[1].sessions, 30);
	cr_assert_eq(sides[1].routes_before_last_session, 20, "state, traffic, state, traffic, state, traffic");
	cr_assert_eq(sides[1].last_from, 1029, "traffic in its order");
}

/* What waited in the state lane can be dropped (stale after a reconnect);
 * the traffic stays. */
Test(link, state_lane_dropped_traffic_kept)
{
	struct dist_frame f = {.type = DIST_ROUTE};
	f.route.from = 5;
	f.route.to = 7;
	f.route.body = (struct proto_bytes){(const uint8_t *)"kept", 4};
	cr_assert_eq(link_add(&sides[0].l, &f), 0);
	link_flush(&sides[0].l, &ring, clock_mono_ns());
	size_t q = link_queued(&sides[0].l);
	struct dist_frame s = {.type = DIST_SESSION_UP};
	s.session.user = 9;
	s.session.node = 1;
	for (int i = 0; i < 50; i++)
		cr_assert_eq(link_add_state(&sides[0].l, &s, 1 << 20), 0);
	link_flush(&sides[0].l, &ring, clock_mono_ns());
	cr_assert_gt(link_queued(&sides[0].l), q);
	link_drop_state(&sides[0].l);
	cr_assert_eq(link_queued(&sides[0].l), q);
	connect_pair();
	for (int k = 0; k < 200 && sides[1].frames < 1; k++)
		turn(5);
	for (int k = 0; k < 20; k++)
		turn(5);
	cr_assert_eq(sides[1].frames, 1);
	cr_assert_eq(sides[1].first_type, DIST_ROUTE);
	cr_assert_eq(sides[1].sessions, 0);
}

static int redo_fn(void *arg, struct dist_frame *f)
{
	(void)arg;
	if (f->route.from == 2)
		return 0;
	if (f->route.from == 3)
		f->route.from = 30;
	return 1;
}

/* After a failed commit the backend rebuilds what it held (link_redo_held):
 * what was released before goes as it was, held frames go as fn changed
 * them, dropped ones not at all, and the queue counts only what is left. */
Test(link, redo_held_sends_what_fn_keeps)
{
	connect_pair();
	cr_assert(turn_until(both_up, 3000));
	struct link *l = &sides[0].l;
	l->hold = 1;
	struct dist_frame f = {.type = DIST_ROUTE};
	f.route.to = 7;
	f.route.body = (struct proto_bytes){(const uint8_t *)"body", 4};
	f.route.from = 100;
	cr_assert_eq(link_add(l, &f), 0);
	link_release(l, &ring, clock_mono_ns());
	size_t before = l->st.frames_out;
	for (uint64_t i = 1; i <= 3; i++) {
		f.route.from = i;
		cr_assert_eq(link_add(l, &f), 0);
	}
	cr_assert_eq(link_redo_held(l, redo_fn, NULL), 1, "one frame dropped");
	link_release(l, &ring, clock_mono_ns());
	for (int k = 0; k < 200 && sides[1].frames < 3; k++)
		turn(5);
	for (int k = 0; k < 10; k++)
		turn(5);
	cr_assert_eq(sides[1].frames, 3, "got %u frames, want 100, 1 and 30", sides[1].frames);
	cr_assert_eq(sides[1].last_from, 30, "the changed frame went as it was (from %llu)",
		     (unsigned long long)sides[1].last_from);
	cr_assert_eq(l->st.frames_out, before + 2, "frames_out counts the dropped one or counts twice");
	cr_assert_eq(link_queued(l), 0, "the queue still counts the old batches");
}

Test(link, state_lane_has_a_bound_of_its_own)
{
	struct dist_frame s = {.type = DIST_SESSION_UP};
	s.session.node = 1;
	int n = 0;
	for (; n < 100000; n++) {
		s.session.user = 1 + (uint64_t)n;
		if (link_add_state(&sides[0].l, &s, 64 << 10) != 0)
			break;
	}
	cr_assert_lt(n, 100000, "the state lane has no bound");
	cr_assert_leq(link_queued(&sides[0].l), (64 << 10) + 64);
	/* traffic is bounded apart: the full state lane takes none of its room */
	cr_assert(link_has_room(&sides[0].l, 100 << 10));
}

/* A backend stopped (SIGSTOP) or busy while a gateway reconnects: the
 * connection is taken by the kernel and the HELLO waits unanswered. The
 * gateway keeps waiting, so the link is up the moment the backend runs
 * again; it used to give up after 1 s and reconnect after a backoff of up
 * to 5 s, which was the whole of the time online users waited after a
 * backend stop. */
Test(link, outbound_handshake_waits_for_a_stopped_peer)
{
	connect_pair_after(2500);
	cr_assert_eq(sides[0].downs, 0, "the gateway side gave up on a peer that had not answered yet");
	uint64_t t0 = clock_mono_ns();
	cr_assert(turn_until(both_up, 3000), "handshake: states %s / %s", link_state_name(sides[0].l.state),
		  link_state_name(sides[1].l.state));
	cr_assert_lt(clock_mono_ns() - t0, 1000000000ull, "up only %llu ms after the peer ran",
		     (unsigned long long)((clock_mono_ns() - t0) / 1000000));
	cr_assert_eq(sides[0].l.st.reconnects, 0);
}

Test(link, wrong_key_is_refused_on_both_sides)
{
	sides[1].l.keys = &other_keys;
	connect_pair();
	cr_assert(turn_until(both_down, 3000), "not refused: states %s / %s", link_state_name(sides[0].l.state),
		  link_state_name(sides[1].l.state));
	cr_assert_eq(sides[0].ups + sides[1].ups, 0, "a link came up with the wrong key");
	cr_assert_geq(sides[0].l.st.refused_hello + sides[1].l.st.refused_hello, 1);
}

static struct peerauth_keys a_b, b_a; /* signs with the first, accepts both */

static void two_keys(void)
{
	uint8_t ka[40], kb[40];
	memset(ka, 'a', sizeof ka);
	memset(kb, 'b', sizeof kb);
	memset(&a_b, 0, sizeof a_b);
	memset(&b_a, 0, sizeof b_a);
	cr_assert_eq(peerauth_add(&a_b, ka, sizeof ka), 0);
	cr_assert_eq(peerauth_add(&a_b, kb, sizeof kb), 0);
	cr_assert_eq(peerauth_add(&b_a, kb, sizeof kb), 0);
	cr_assert_eq(peerauth_add(&b_a, ka, sizeof ka), 0);
}

/* Mid-rotation: one side signs with the new key, the other with the old,
 * both accept both: the link comes up. */
Test(link, both_keys_accepted_during_rotation)
{
	two_keys();
	sides[0].l.keys = &a_b;
	sides[1].l.keys = &b_a;
	connect_pair();
	cr_assert(turn_until(both_up, 3000), "rotation: states %s / %s", link_state_name(sides[0].l.state),
		  link_state_name(sides[1].l.state));
}

/* A node that signs with a key its peer does not hold yet is refused. */
Test(link, signer_unknown_to_the_peer_is_refused)
{
	two_keys();
	sides[0].l.keys = &keys; /* 'a' only */
	sides[1].l.keys = &b_a;  /* signs with 'b' */
	connect_pair();
	cr_assert(turn_until(both_down, 3000), "a signer unknown to the peer was accepted");
	cr_assert_eq(sides[0].ups + sides[1].ups, 0);
	cr_assert_geq(sides[0].l.st.refused_hello, 1);
}

/* ---- link to a hand-driven peer ------------------------------------------------ */

static int peer = -1;

/* sides[1] (a backend, accepting) on one end of a socketpair; the test is the gateway. */
static void attach_raw(void)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	peer = sv[0];
	link_attach(&sides[1].l, &ring, sv[1], clock_mono_ns());
	turn(5);
}

static void peer_send(const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(peer, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			turn(5);
			continue;
		}
		cr_assert_gt(w, 0, "send to the link: %s", strerror(errno));
		b += w;
		n -= (size_t)w;
	}
}

/* Read what the link sent, parse it, stop after a frame of type `until`. */
static uint8_t rbuf[1 << 16];
static size_t rlen;
static uint8_t peer_hello[LINK_HELLO_MAX];
static size_t peer_hello_len;

static int peer_read_until(uint8_t until, int ms)
{
	uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000;
	for (;;) {
		while (rlen) {
			struct dist_frame f;
			long n = dist_parse(rbuf, rlen, &f);
			if (n <= 0)
				break;
			if (f.type == DIST_HELLO) {
				memcpy(peer_hello, rbuf, (size_t)n);
				peer_hello_len = (size_t)n;
			}
			memmove(rbuf, rbuf + n, rlen - (size_t)n);
			rlen -= (size_t)n;
			if (f.type == until)
				return 1;
		}
		if (clock_mono_ns() > end)
			return 0;
		turn(5);
		ssize_t r = recv(peer, rbuf + rlen, sizeof rbuf - rlen, MSG_DONTWAIT);
		if (r == 0)
			return 0;
		if (r > 0)
			rlen += (size_t)r;
	}
}

/* HELLO + AUTH as gateway node 1 thread 0, as a real gateway does. */
static void peer_handshake(void)
{
	uint8_t nonce[DIST_NONCE], hello[LINK_HELLO_MAX], mac[DIST_MAC], b[64];
	peerauth_nonce(nonce);
	struct dist_frame h = {.type = DIST_HELLO};
	h.hello.version = DIST_VERSION;
	h.hello.role = DIST_ROLE_GATEWAY;
	h.hello.node = 1;
	h.hello.threads = 1;
	h.hello.key_id = peerauth_sign_id(&keys);
	h.hello.nonce = nonce;
	size_t hn = dist_encode(&h, hello, sizeof hello);
	peer_send(hello, hn);
	cr_assert(peer_read_until(DIST_HELLO, 2000), "no HELLO from the link");
	cr_assert_eq(peerauth_mac(&keys, peerauth_sign_id(&keys), PEERAUTH_DIR_CONNECT, hello, hn, peer_hello,
				  peer_hello_len, mac),
		     0);
	struct dist_frame a = {.type = DIST_AUTH};
	a.auth.mac = mac;
	peer_send(b, dist_encode(&a, b, sizeof b));
	cr_assert(peer_read_until(DIST_AUTH, 2000), "no AUTH from the link");
	for (int k = 0; k < 20 && sides[1].l.state != LINK_UP; k++)
		turn(5);
	cr_assert_eq(sides[1].l.state, LINK_UP);
}

static int raw_link_closed(void)
{
	return sides[1].l.state == LINK_IDLE || sides[1].l.state == LINK_CLOSING;
}

Test(link, frames_before_authentication_close_it)
{
	attach_raw();
	struct dist_frame f = {.type = DIST_HEARTBEAT};
	f.heartbeat.seq = 1;
	uint8_t b[32];
	peer_send(b, dist_encode(&f, b, sizeof b));
	cr_assert(turn_until(raw_link_closed, 2000), "a HEARTBEAT before HELLO was accepted");
	cr_assert_eq(sides[1].l.st.violations, 1);
	cr_assert_eq(sides[1].ups, 0);
	close(peer);
}

Test(link, no_more_than_a_handshake_before_authentication)
{
	attach_raw();
	/* the start of a 1 MiB batch: never buffered before AUTH */
	static uint8_t big[LINK_RX_HANDSHAKE + 64];
	memset(big, 0, sizeof big);
	big[0] = 0x80;
	big[1] = 0x80;
	big[2] = 0x3f; /* L = 0xfc000 */
	big[3] = DIST_BATCH;
	peer_send(big, sizeof big);
	cr_assert(turn_until(raw_link_closed, 2000), "a big frame before AUTH was buffered");
	cr_assert_eq(sides[1].l.st.violations, 1);
	close(peer);
}

Test(link, credit_beyond_any_need_is_a_violation)
{
	attach_raw();
	peer_handshake();
	/* a grant near 2^63: credit += bytes would overflow a signed 64-bit credit */
	struct dist_frame f = {.type = DIST_CREDIT};
	f.credit.bytes = UINT64_MAX - 5;
	uint8_t b[32];
	peer_send(b, dist_encode(&f, b, sizeof b));
	cr_assert(turn_until(raw_link_closed, 2000), "an absurd CREDIT was taken");
	cr_assert_eq(sides[1].l.st.violations, 1);
	close(peer);
}

Test(link, credit_grants_add_up_to_the_limit)
{
	attach_raw();
	peer_handshake();
	struct dist_frame f = {.type = DIST_CREDIT};
	f.credit.bytes = LINK_CREDIT_MAX / 2;
	uint8_t b[32];
	peer_send(b, dist_encode(&f, b, sizeof b));
	for (int k = 0; k < 10; k++)
		turn(5);
	cr_assert_eq(sides[1].l.state, LINK_UP, "a large but possible grant closed the link");
	cr_assert_eq(sides[1].l.credit, (int64_t)(LINK_INITIAL_CREDIT + LINK_CREDIT_MAX / 2));
	peer_send(b, dist_encode(&f, b, sizeof b)); /* past 2^40 in all */
	cr_assert(turn_until(raw_link_closed, 2000), "credit past LINK_CREDIT_MAX was taken");
	close(peer);
}

Test(link, heartbeat_flood_costs_one_pending_echo)
{
	attach_raw();
	peer_handshake();
	int small = 4096;
	setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	enum { N = 100000 };
	static uint8_t flood[N * 8];
	size_t n = 0;
	for (uint64_t i = 1; i <= N; i++) {
		struct dist_frame f = {.type = DIST_HEARTBEAT};
		f.heartbeat.seq = i;
		n += dist_encode(&f, flood + n, sizeof flood - n);
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	peer_send(flood, n); /* never read meanwhile */
	for (int k = 0; k < 20; k++)
		turn(2);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_eq(sides[1].l.state, LINK_UP, "the link closed");
	cr_assert_eq(link_queued(&sides[1].l), 0, "heartbeat echoes were queued as data");
	cr_assert_lt(sides[1].l.ctrl, 1u << 6, "control slots: 0x%x", sides[1].l.ctrl);
	cr_assert_eq(sides[1].l.hb_seq_echo, N, "the pending echo is not the latest request");
	cr_assert_lt(s, 2.0, "100,000 heartbeats took %.2f s", s);
	/* what the link sent meanwhile is a few echoes, not 100,000 */
	unsigned echoes = 0;
	for (int k = 0; k < 50; k++) {
		turn(2);
		ssize_t r = recv(peer, rbuf + rlen, sizeof rbuf - rlen, MSG_DONTWAIT);
		if (r > 0)
			rlen += (size_t)r;
		while (rlen) {
			struct dist_frame f;
			long m = dist_parse(rbuf, rlen, &f);
			if (m <= 0)
				break;
			echoes += f.type == DIST_HEARTBEAT && f.heartbeat.reply;
			memmove(rbuf, rbuf + m, rlen - (size_t)m);
			rlen -= (size_t)m;
		}
	}
	cr_assert_lt(echoes, 1000, "%u echoes for %d requests", echoes, N);
	cr_assert_geq(echoes, 1);
	close(peer);
}
