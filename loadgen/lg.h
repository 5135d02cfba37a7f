/* lg.h: the load generator's types, shared by its modules. Not a public API.
 *
 * Shape: like the gateway, one io_uring per thread with the client sockets in
 * its fixed-file table, so one process holds a million connections under
 * RLIMIT_NOFILE 20000 (threads x table). Thread t owns connections
 * [t*per, (t+1)*per); connection i is user user_base + i, and in the chat
 * scenario sends to user (i ^ 1)'s id, its peer, which sends back.
 *
 * Every message body carries the sender's sequence number and its scheduled
 * send time; receivers check order and duplicates per sender and record the
 * latency (now - scheduled time) in a log-linear histogram. Sending is open
 * loop: the schedule never waits for replies, and latency is measured from
 * the scheduled time, so a stall shows up as latency instead of hiding it
 * (no coordinated omission).
 *
 * Group scenario: users come in blocks of --group-size; the first of each
 * block creates a group of its block (GROUP create) and sends to it, the
 * others receive (each member has one sender, so the same order check
 * applies). Groups live in backends: run it against gateways with --cluster.
 *
 * Connection states: IDLE -> CONNECTING [-> TLS] -> LOGIN -> LIVE -> CLOSING
 * -> IDLE (IDLE connections wait in the connect queue or on a reconnect
 * timer; TLS: the handshake, with --tls).
 *
 * Output and its TLS sealing, the flush and re-arm lists and the buffer
 * ring's size are the gateway's code (runtime/connbuf.h); a TLS connection's
 * record state is 128 bytes in a per-thread table (runtime/tls.h).
 */
#ifndef LOADGEN_LG_H
#define LOADGEN_LG_H

#include <assert.h>
#include <liburing.h>
#include <pthread.h>
#include <stdint.h>

#include "proto/client.h"
#include "runtime/addr.h"
#include "runtime/carry.h"
#include "runtime/connbuf.h"
#include "runtime/counter.h"
#include "runtime/hist.h"
#include "runtime/opts.h"
#include "runtime/tls.h"
#include "runtime/token.h"
#include "runtime/uring.h"
#include "runtime/wheel.h"

#define LG_TICK_MS 10u
#define LG_WHEEL_BITS 16u /* 65536 x 10 ms = 655 s per turn */
#define LG_MAX_THREADS 256u
#define LG_BODY_MIN 12u /* seq (4) + scheduled time (8) */
#define LG_PORT_FIRST 1024u /* explicit source ports (with --sources): 1024..65534 */
#define LG_PORTS 64511u

enum lg_scenario { SC_IDLE, SC_CHAT, SC_CHURN, SC_STORM, SC_GROUP };

struct lg_config {
	int64_t connections, threads, connect_rate, inflight, duration_ms, ramp_timeout_ms, size;
	double rate; /* messages per second per user */
	int64_t ping_ms, churn_rate, storm_at_ms, user_base, drain_ms, inject_drop, inject_dup;
	int64_t recv_buf, recv_pool, rcvbuf, max_queue, watch_pid, ttl_ms, group_size;
	double max_error_rate;
	int receipts, quiet;
	int tls, tls_insecure;      /* --tls: TLS 1.3 to the targets; verify against --tls-ca unless --tls-insecure */
	int tls_resume;             /* --tls-resume: session tickets (runtime/tls.h, client resumption) */
	const char *tls_ca, *tls_name;
	const char *secret_file, *scenario_name, *report, *csv, *svg;
	struct opt_list targets, sources;
	enum lg_scenario scenario;
};

/* The per-thread counters that main sums (one list: the struct fields,
 * the totals and the sum come from it). tls_*: --tls handshakes done,
 * resumed, failed (any reason), loop time in them. */
#define LG_COUNTERS(X) \
	X(connects) X(connected) X(logins_ok) X(logins_failed) X(closed_by_server) X(goaway) X(kicked) \
	X(reconnects) X(sent) X(acked) X(delivered) X(dup) X(reordered) X(injected_drop) X(injected_dup) \
	X(receipts_in) X(bytes_in) X(bytes_out) X(pings) X(pongs) X(skipped) X(blocked) X(open) X(logged_in) \
	X(loops) X(cqes) X(groups_created) X(group_errors) X(tls_handshakes) X(tls_resumed) X(tls_failed) X(tls_ns)

/* Per-thread counters: written by the owner, read by main (relaxed). */
struct lg_counters {
#define LG_COUNTER_FIELD(f) uint64_t f;
	LG_COUNTERS(LG_COUNTER_FIELD)
#undef LG_COUNTER_FIELD
	uint64_t connect_errors[4]; /* refused, timeout, addr, other */
	uint64_t errors[PROTO_E_CODES];
	uint64_t p50_ns, p99_ns, lat_count; /* last interval, published once a second */
} __attribute__((aligned(64)));


enum lc_state { LS_IDLE = 0, LS_CONNECTING, LS_TLS, LS_LOGIN, LS_LIVE, LS_CLOSING };

#define LF_RECV 0x01u
#define LF_SEND 0x02u
#define LF_CLOSE 0x04u
#define LF_QUEUED 0x08u   /* on the flush list */
#define LF_INQ 0x10u      /* in the connect queue */
#define LF_RECONNECT 0x20u /* reconnect once closed */
#define LF_WAS_LIVE 0x40u
#define LF_REARM 0x80u    /* recv to re-arm once buffers are back (ENOBUFS) */

struct lconn {
	uint32_t gen;
	uint32_t seq_out; /* next sequence number to send */
	uint32_t expect;  /* next sequence number expected from the peer */
	uint32_t connects;
	uint64_t window;  /* bit i: expect-1-i was received */
	struct obuf *out, *sending;
	struct carry *in; /* a partial frame carried between receives */
	struct wheel_node tn;
	uint8_t state, flags;
	uint16_t pad;
};
static_assert(sizeof(struct lconn) == 64, "struct lconn is one cache line");

struct lg;

struct lthread {
	struct lg_counters cnt;
	struct lg *lg;
	unsigned id;
	pthread_t thread;
	struct io_uring ring;
	struct bufring br;
	struct lconn *c;
	uint32_t first, n; /* connection indices [first, first+n) */
	uint32_t *queue;   /* connect queue (ring of slots) */
	uint32_t qhead, qlen;
	uint32_t inflight; /* connects in flight */
	struct slotlist flush;
	struct slotlist rearm; /* slots whose recv ended with ENOBUFS */
	struct tls_conn *tls;  /* --tls: per slot */
	struct tls_thread *tls_th;
	struct wheel wheel;
	struct hist lat, lat_interval;
	uint64_t start_ns, now_ns, t0_send, sched_done, sender_rr;
	uint64_t connect_credit_ns;
	uint32_t tick;
	uint64_t rng;
	int stop, draining_sends, storm_done;
	uint64_t interval_end_ns;
	uint64_t deliver_frames;
	uint64_t *gid; /* group scenario: per slot, the group a creator sends to (0: none yet) */
	const char *ring_mode;
};

struct lg {
	struct lg_config cfg;
	struct token_secret secret;
	struct tls_ctx *tls; /* --tls: the client context */
	struct addr *targets;
	size_t ntargets;
	uint32_t src_first, src_count; /* IPv4 sources, host order; count 0 = let the kernel pick */
	unsigned nthreads;
	uint32_t per; /* connections per thread */
	struct lthread *t;
	int *ring_fds;
	pthread_barrier_t start;
	int start_failed;
	uint64_t start_ns;
	/* set by main, read by workers (relaxed): phase control */
	int phase; /* 0 ramp, 1 run (send), 2 drain (stop sending), 3 stop */
	uint64_t run_start_ns;
	uint64_t cmid_base; /* random per run, so cmids never repeat across runs */
};

enum lg_phase { PH_RAMP = 0, PH_RUN = 1, PH_DRAIN = 2, PH_STOP = 3 };

void *lg_worker_main(void *arg);

/* user_data kinds */
enum lg_ud { LU_CONNECT = 1, LU_RECV, LU_SEND, LU_CLOSE, LU_CANCEL, LU_CTRL };

#endif
