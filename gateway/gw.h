/* gw.h: the gateway's types, shared by its modules (main, worker, session,
 * stats). Not a public API.
 *
 * Shape: N worker threads, each owning one io_uring, its listeners, a
 * fixed-file table of `slots` direct sockets, the connections in it, a timing
 * wheel and its counters. A user's connection lives on the user's *home*
 * thread (a hash of the user id): after LOGIN the accepting thread moves the
 * socket there with MSG_RING (SEND_FD). So each thread's directory holds only
 * its own users, a second login is found on the same thread, and a message
 * for a user is one hop: to the recipient's home thread, as a record in a
 * per-iteration batch posted with MSG_RING. No locks, no shared mutable state.
 *
 * Connection states (conn.state):
 *
 *   FREE --accept--> NEW --LOGIN, home here--> LIVE --conn_end--> CLOSING --> FREE
 *                     |                          ^
 *                     +--LOGIN, home elsewhere--> HANDOFF --SEND_FD ok--> FREE (here)
 *                                                    `--> (home thread) LIVE
 *
 * CLOSING has sub-states in conn.flags; conn_end (worker.c) is the only way
 * in from NEW or LIVE:
 *
 *   conn_end(last frame) --> lingering (CF_LINGER): the last frame flushes,
 *       recv reads and drops (GW_LINGER_BYTES at most), then shutdown(WR)
 *       (CF_SHUT in flight, CF_SHUT_DONE) and the peer's FIN or the
 *       backstop timer (GW_LINGER_TICKS) --> cut
 *   conn_end(no frame), or a lingering one cut --> cut: operations
 *       cancelled, output dropped
 *   cut, nothing in flight (no CF_RECV, CF_SEND, CF_SHUT) --> conn_reap
 *       submits the close (CF_CLOSE) --> its completion frees the slot.
 * conn_reads() says whether a connection takes input (NEW, LIVE, lingering).
 */
#ifndef GATEWAY_GW_H
#define GATEWAY_GW_H

#include <assert.h>
#include <stdlib.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>

#include "proto/client.h"
#include "runtime/addr.h"
#include "runtime/carry.h"
#include "runtime/cluster.h"
#include "runtime/connbuf.h"
#include "runtime/counter.h"
#include "runtime/link.h"
#include "runtime/metrics.h"
#include "runtime/msgid.h"
#include "runtime/opts.h"
#include "runtime/peerauth.h"
#include "runtime/srclimit.h"
#include "runtime/tls.h"
#include "runtime/token.h"
#include "runtime/u64map.h"
#include "runtime/uring.h"
#include "runtime/wheel.h"
#include "gateway/xthread.h"

#define GW_TICK_MS 100u          /* timing wheel tick */
#define GW_WHEEL_BITS 13u        /* 8192 buckets x 100 ms = 819 s per turn */
#define GW_SLOT_RESERVE 64u      /* table slots kept free to answer "server full" */
#define GW_MAX_THREADS MSGID_MAX_THREADS /* the threads of a node its msgids tell apart */
#define GW_BATCH_MAX 4096u       /* completions handled per iteration before flushing */
/* Accepts armed per listener per thread. Each is a single-shot accept with
 * its own address buffer (a multishot accept gives no peer address, and the
 * kernel has no io_uring getpeername): connections taken per listener per
 * loop iteration, at most. */
#define GW_ACCEPTS 64u
_Static_assert(GW_ACCEPTS <= 64, "a listener's armed accepts are bits of a uint64_t");
#define GW_LINGER_TICKS 20u      /* after a fatal error frame: read and drop for 2 s, then close */
#define GW_LINGER_BYTES (64u << 10) /* ...but at most this much: a peer that sends more is cut at once */
/* Per link: the bound of the state lane (session announcements), apart
 * from --link-queue: a 16th of it, at least 64 KiB (1 MiB by default). */
#define GW_STATE_LANE(link_queue) ((size_t)(link_queue) / 16 > (64u << 10) ? (size_t)(link_queue) / 16 : (size_t)(64u << 10))
#define GW_RESYNC_PER_ITER 8192u    /* sessions announced per link per loop iteration in a resync */

/* ---- configuration (read-only after start) -------------------------------- */
struct gw_config {
	struct opt_list listen;
	struct opt_list listen_tls;
	const char *tls_cert, *tls_key, *tls_ticket_key_file;
	int64_t tls_max_handshakes; /* per thread */
	int64_t tls_handshake_timeout_ms;
	int64_t tls_ticket_period_ms; /* 0: no session tickets */
	const char *stats_listen;
	const char *secret_file, *secret_prev_file;
	int64_t threads;
	int64_t node;
	int64_t login_timeout_ms;
	int64_t keepalive_ms;
	int64_t write_stall_ms;
	int64_t drain_ms;
	int64_t goaway_spread_ms;
	const char *goaway_hint;
	int64_t max_queue;     /* bytes of output queued per connection */
	int64_t rate_frames;   /* per connection per second, 0 = off */
	int64_t rate_bytes;    /* per connection per second, 0 = off */
	int64_t max_body;
	int64_t recv_buf;      /* bytes per provided buffer */
	int64_t recv_pool;     /* bytes of provided buffers, all threads */
	int64_t backlog;
	int64_t sndbuf, rcvbuf;
	int64_t slots;         /* fixed-file table per thread (0 = from RLIMIT_NOFILE) */
	const char *log_level;
	const char *cluster_file; /* backends; NULL: local delivery only */
	const char *inject_stall; /* tests: "THREAD:DURATION", that worker stops turning its loop then */
	const char *cluster_secret_file;
	int64_t link_queue, link_batch, link_sockbuf, store_timeout_ms;
	int64_t src_max_conns, src_accept_rate; /* per source address (runtime/srclimit.h), 0 = no limit */
};

/* ---- counters: per thread, written by the owner only ---------------------- */
/* Why connections close: the enum and the /metrics label (stats.c). */
#define GW_CLOSE_REASONS(X) \
	X(PEER, "peer")                   /* client closed or reset */ \
	X(ERROR, "error")                 /* socket error */ \
	X(PROTOCOL, "protocol")           /* malformed frame or state violation */ \
	X(AUTH, "auth")                   /* login refused */ \
	X(LOGIN_TIMEOUT, "login_timeout") \
	X(IDLE, "idle") \
	X(KICKED, "kicked") \
	X(SLOW, "slow_consumer") \
	X(RATE, "rate_limited") \
	X(STALL, "write_stall") \
	X(SHUTDOWN, "shutdown") \
	X(FULL, "full") \
	X(SOURCE, "source_limit")         /* over a per-source limit */ \
	X(TLS, "tls")                     /* TLS handshake failed, bad record, or the peer's alert */
enum gw_close_reason {
#define GW_CLOSE_ENUM(name, label) CLOSE_##name,
	GW_CLOSE_REASONS(GW_CLOSE_ENUM)
#undef GW_CLOSE_ENUM
	CLOSE_REASONS
};

struct gw_counters {
	uint64_t accepted, rejected_full, accept_errors, handoffs_out, handoffs_in, handoff_failed;
	uint64_t closed[CLOSE_REASONS];
	uint64_t logins_ok, logins_auth, logins_expired, logins_version;
	uint64_t frames_in[PROTO_FRAME_TYPES], frames_out[PROTO_FRAME_TYPES];
	uint64_t bytes_in, bytes_out;
	uint64_t parse_errors[PROTO_E_FATAL_LIMIT];
	uint64_t deliver_local, deliver_cross, deliver_remote, deliver_offline, no_route;
	uint64_t receipts_routed, kicks, slow_consumers, rate_limited, enobufs, prelogin_too_big, linger_cut;
	uint64_t receipts_dropped, receipt_acks, admin_kicks, proxy_headers;
	uint64_t xbatches_out, xbatches_in, xrecords_out, xrecords_in;
	uint64_t loops, cqes, sends;
	uint64_t routed_remote, stored_acks, store_refused, store_timeouts, link_try_again, sessions_out, answers_lost;
	uint64_t resyncs, session_announce_deferred;
	uint64_t relayed_handoffs, relayed_handoff_acks, relayed_receipts, relay_dropped; /* backend to backend */
	uint64_t src_too_many, src_too_fast; /* connections refused by the per-source limits */
	/* TLS listeners: handshakes done (of which resumed with a ticket),
	 * failed by reason, timed out, refused over --tls-max-handshakes;
	 * loop time spent in them; records refused (bad tag, length, type);
	 * fatal alerts and close_notify from clients; KeyUpdates received */
	uint64_t tls_hs_done, tls_hs_resumed, tls_hs_failed[TLS_HS_FAIL_REASONS], tls_hs_timeouts, tls_hs_limited;
	uint64_t tls_hs_ns, tls_bad_records, tls_alerts_in, tls_close_notify_in;
	/* gauges */
	uint64_t conns, logged_in, queue_bytes, queue_max, wheel_size, dir_size, partial_bufs;
	uint64_t tls_conns, tls_handshaking;
	uint64_t pending_stores;
	struct link_stats link; /* all this thread's links (runtime/link.h LINK_STATS) */
	/* latency measured here (runtime/metrics.h): SEND handled to DELIVER
	 * queued, on this thread and through another; a request's ROUTE queued
	 * to the backend's answer (its durable commit included) */
	struct metrics_lat lat_local, lat_cross, lat_backend;
} __attribute__((aligned(64)));

/* One link's figures, published by its thread each tick for /stats. */
struct gw_link_pub {
	uint64_t state, node, thread, pending; /* thread: the backend's */
	struct link_stats st;
};


/* ---- buffers ---------------------------------------------------------------- */

/* Output: struct obuf (runtime/connbuf.h), `since` the tick its send
 * started (write-stall check). */


/* An armed accept's peer address. */
struct gw_accept {
	struct sockaddr_in6 sa; /* large enough for either family */
	socklen_t len;
};

/* A login moving to the user's home thread with the socket. */
struct handoff {
	uint64_t user, resume;
	uint32_t len; /* bytes received after LOGIN, to be processed there */
	uint32_t rl_bytes; /* the rate limit window moves along */
	uint16_t rl_frames, rl_window;
	uint8_t version;
	uint8_t src_counted; /* the source count (srclimit) moves with the socket */
	uint8_t tls;         /* a TLS connection: its record state moves in tc */
	uint32_t wire;       /* TLS: bytes for the wire queued before the move (a session ticket): data[0..wire) */
	struct src src;
	struct tls_conn tc;
	uint8_t data[];      /* [wire bytes][len bytes of input after LOGIN] */
} __attribute__((aligned(16)));

/* ---- connection -------------------------------------------------------------- */
enum conn_state { CS_FREE = 0, CS_NEW, CS_HANDOFF, CS_LIVE, CS_CLOSING };

#define CF_RECV 0x0001u      /* a recv is armed */
#define CF_MULTI 0x0002u     /* ...and it is multishot */
#define CF_SEND 0x0004u      /* a send is in flight */
#define CF_SHUT 0x0008u      /* a shutdown is in flight */
#define CF_CLOSE 0x0010u     /* close submitted */
#define CF_QUEUED 0x0020u    /* on the flush list */
#define CF_PING 0x0040u      /* keepalive ping sent, answer pending */
#define CF_LINGER 0x0080u    /* closing after an error frame: flush, shutdown, drain input */
#define CF_REARM 0x0100u     /* recv to re-arm at the end of the iteration (ENOBUFS) */
#define CF_GOAWAY 0x0200u    /* goaway sent */
#define CF_SHUT_DONE 0x0400u /* shutdown(WR) done */
#define CF_V2 0x0800u        /* LIVE: speaks protocol 2 (DELIVER with cmid, acks stored receipts) */
#define CF_PROXY 0x1000u     /* NEW, from a ",proxy" listener: the PROXY header is still to come */
#define CF_SRC 0x2000u       /* counted in the per-source table (gw.srclim): released when it ends */
#define CF_TLS 0x4000u       /* from a TLS listener: bytes go through w->tls[slot] both ways */

/* One connection; the index in the array is its fixed-file slot. All zeros
 * is a free slot. 64 bytes: a million of them is 64 MB. */
struct conn {
	uint64_t user;
	struct obuf *out; /* waiting to be sent */
	union {
		struct obuf *sending;     /* in flight */
		struct handoff *handoff;  /* CS_HANDOFF: moving with the socket */
	};
	struct carry *in; /* a partial frame carried between receives (runtime/carry.h) */
	struct wheel_node tn;
	uint32_t gen;
	uint32_t last_rx; /* tick of the last receive (NEW: of the accept, for the login timeout) */
	uint32_t rl_bytes;
	uint16_t rl_frames;
	uint16_t rl_window;
	uint16_t flags;
	uint8_t state : 3;  /* enum conn_state */
	uint8_t reason : 5; /* enum gw_close_reason once closing */
	/* messages delivered and not yet answered by a receipt (at most 255):
	 * that many receipts pass --rate-frames uncounted, so a client that
	 * answers every message it gets is never cut for answering fast */
	uint8_t rcpt_owed;
};
static_assert(CS_CLOSING < 8 && CLOSE_REASONS <= 32, "conn state and close reason fit their bits");
static_assert(sizeof(struct conn) == 64, "struct conn is one cache line");

/* ---- cross-thread records ------------------------------------------------
 * Batched per destination thread during an iteration and posted as one
 * pointer with MSG_RING at its end; the receiver frees the batch. */
enum xm_type { XM_DELIVER = 1, XM_RESULT, XM_RECEIPT };
enum xr_what { XR_SEND = 0, XR_GROUP = 1 };

struct xm_hdr {
	uint16_t type;
	uint16_t pad;
	uint32_t size; /* whole record, multiple of 8 */
};

struct xm_deliver { /* deliver to `to` (on the receiving thread) and answer with XM_RESULT */
	struct xm_hdr h;
	uint64_t from, to, smid, time_ms, cmid;
	uint64_t t0_ns;       /* when the sender's SEND was handled (CLOCK_MONOTONIC) */
	uint32_t oslot, ogen; /* sender's connection on the sending thread */
	uint32_t body_len;
	uint32_t pad;
	uint8_t body[];
};

struct xm_result { /* outcome of a send or group request, for the sender's connection */
	struct xm_hdr h;
	uint64_t cmid, smid; /* XR_GROUP: request id, group id */
	uint32_t oslot, ogen;
	uint32_t status;     /* 0 done, else a proto_err code */
	uint8_t what;        /* enum xr_what */
	uint8_t ack;         /* XR_SEND done: PROTO_ACK_ACCEPTED or PROTO_ACK_STORED */
	uint16_t pad;
};

struct xm_receipt { /* tell `to` that `from` received/read `smid` */
	struct xm_hdr h;
	uint64_t from, to, smid;
	uint32_t kind, pad;
};

struct xbatch {
	uint32_t len, cap; /* bytes of records */
	uint16_t src, dst;
	uint32_t pad;
	uint8_t data[];
} __attribute__((aligned(16)));

/* ---- worker --------------------------------------------------------------- */
struct gw;

struct worker {
	struct gw_counters cnt; /* first: its own cache lines */
	struct gw *gw;
	struct gw_live *settings; /* the configuration this worker runs with (see struct gw_live) */
	unsigned id;
	pthread_t thread;
	struct io_uring ring;
	struct bufring br;
	struct conn *conns;
	uint32_t slots;    /* fixed-file table size */
	uint32_t capacity; /* connections accepted before "server full" */
	uint32_t live;     /* slots in use */
	uint32_t closing;  /* ...of which closing (they do not count against capacity) */
	uint32_t input_slot; /* connection whose input session_input is handling (UINT32_MAX: none) */
	struct src *peers; /* per slot: where the connection comes from, since when */
	struct tls_conn *tls; /* per slot: TLS record state (touched only for CF_TLS connections) */
	struct tls_thread *tls_th;
	uint32_t tls_hs;   /* TLS handshakes in progress (--tls-max-handshakes) */
	int *lfd;          /* listener fds, one per --listen */
	uint64_t *larmed;  /* per listener: which of its GW_ACCEPTS accepts are armed (bit k) */
	struct gw_accept *acc; /* GW_ACCEPTS per listener: each armed accept's peer address */
	struct u64map dir; /* user -> connref_make(slot, gen), for users whose home is here */
	struct wheel wheel;
	struct slotlist flush; /* slots with output to send this iteration */
	struct slotlist rearm; /* slots whose recv must be re-armed */
	struct xbatch **xout; /* per destination thread */
	struct msgid_gen ids;
	uint64_t start_ns, now_ns, wall_ms;
	uint32_t tick;
	uint64_t rng;
	int draining, stopping, lameduck;
	int finished; /* set (release) as worker_main returns: the watchdog stops watching it */
	/* Cross-thread posts this worker made (a batch counts 1; a login move 2:
	 * its arrival at the home thread and its completion here) and completions
	 * of them it consumed (a batch read or back as failed; a move arrived, or
	 * its completion here: 1 when it moved, 2 when it failed); written by this
	 * worker only, read by the others (relaxed; drained and left_loop
	 * release/acquire) so that at exit no worker closes its ring while a post
	 * to it is in flight (worker.c, quiesce). drained: this worker's drain is
	 * over (no connection left, or given up on); every worker keeps turning
	 * its loop until all are drained, so none drops what another still sends. */
	uint64_t xposted, xtaken;
	int drained, left_loop;
	uint32_t drain_deadline, hard_stop; /* ticks: close the rest; give up on them */
	const char *ring_mode;
	/* dist link: one per backend */
	struct link *links;
	struct gw_pendq *pend; /* per link: requests waiting for the backend's answer */
	struct gw_resync *resync; /* per link: session announcements still to send (dist.c) */
	struct gw_link_pub *pub;
};

/* What the workers read of the configuration: the start-up config with the
 * reloadable options (OPT_RELOAD in gateway/main.c) as of the last SIGHUP,
 * and the auth keys. Immutable once published: a reload makes a new one and
 * hands it to every worker with MSG_RING (CTRL_RELOAD, take_live in worker.c);
 * the last worker to let go of the old one frees it. */
struct gw_live {
	struct gw_config cfg;
	struct token_keys keys; /* current auth secret, and the previous one during a rotation */
	struct peerauth_keys cluster; /* the cluster secret(s) (--cluster-secret-file): links authenticate with them */
	struct tls_ctx *tls;    /* TLS listeners' certificate, key and ticket keys; NULL: none */
	unsigned refs;          /* workers holding it */
};

static inline void gw_live_free(struct gw_live *l)
{
	if (l)
		tls_ctx_free(l->tls); /* handshakes begun with it keep its SSL_CTX */
	free(l);
}

struct gw {
	struct gw_config cfg;   /* as started; workers read w->settings->cfg */
	int stall_thread;       /* --inject-stall: this worker wedges (-1: none)... */
	int64_t stall_after_ms; /* ...this long after start */
	struct gw_live *live;   /* the first one, which every worker starts with */
	struct addr *listen; /* parsed cfg.listen */
	uint8_t *listen_proxy; /* per listener: ",proxy": connections start with a PROXY header */
	uint8_t *listen_tls;   /* per listener: from --listen-tls */
	uint8_t ticket_secret[32]; /* this process's, when no --tls-ticket-key-file names one */
	size_t nlisten;
	unsigned nthreads;
	uint32_t slots;
	struct worker *w;
	int *ring_fds; /* written before the start barrier, read-only after */
	pthread_barrier_t start;
	int start_failed;
	uint64_t started_wall_ms;
	struct cluster cluster; /* n == 0: no backends */
	struct srclim srclim; /* connections and accept rate per source address, all threads */
};

/* ---- worker.c ------------------------------------------------------------ */
void *worker_main(void *arg);

/* The worker's set-up and teardown, and the two halves of its loop around
 * the one submit-and-wait, as in Redis's aeMain:
 *   worker_before_wait: everything the iteration produced leaves (returned
 *     buffers, re-armed receives and accepts, batches for other threads,
 *     sends, dist links); returns 0 once a drain is over (stop the loop);
 *   submit and wait, once, up to the next tick;
 *   worker_after_wait: every completion is dispatched, then timers, links
 *     and the drain's deadlines.
 * worker_main is set-up, then these in a loop; the gateway fuzzer drives
 * them itself. */
int worker_setup(struct worker *w, char *err, size_t errlen);
void worker_teardown(struct worker *w);
int worker_before_wait(struct worker *w);
void worker_after_wait(struct worker *w);

/* Commands from the main thread (MSG_RING res). */
enum gw_ctrl {
	CTRL_DRAIN = 1,
	CTRL_STOP = 2,
	CTRL_RELOAD = 3, /* pointer: the new struct gw_live */
	CTRL_LAMEDUCK = 4,
	CTRL_ADMIN = 5, /* pointer: a struct gw_admin (gateway/admin.h) */
};

/* user_data kinds */
enum gw_ud {
	UD_ACCEPT = 1, /* slot = listener index */
	UD_RECV,
	UD_SEND,
	UD_SHUT,
	UD_CLOSE,
	UD_CANCEL,
	UD_XIN,        /* pointer: an xbatch from another thread */
	UD_XFAIL,      /* pointer: our xbatch that MSG_RING could not post */
	UD_HANDOFF_IN, /* pointer: a handoff; res = the new slot */
	UD_HANDOFF_OUT,/* slot/gen: result of our SEND_FD */
	UD_CTRL,       /* res = enum gw_ctrl */
	UD_LINK,       /* slot = link index (runtime/link.c encodes its own op) */
};

/* Append one frame to a connection's output (sent at the end of the
 * iteration, together with everything else queued for it). Returns 0, or -1
 * when the connection takes no more output (closing) or was just cut off as a
 * slow consumer (over --max-queue). */
int conn_out_frame(struct worker *w, uint32_t slot, const struct proto_frame *f);

/* Append n bytes ready for the wire (TLS handshake bytes, a moved
 * connection's sealed records) after what is queued; queued plaintext is
 * sealed first. Returns 0, or -1 out of memory. */
int conn_out_wire(struct worker *w, uint32_t slot, const uint8_t *p, size_t n);

/* Mark slot a TLS connection with record state tc (copied: a moved
 * connection's), or NULL: a new one, handshake to come. */
void conn_set_tls(struct worker *w, uint32_t slot, const struct tls_conn *tc);

/* The one door out (see the state diagram at the top): end the connection
 * in slot, counted under why. With a last frame (ERROR, LOGIN_RESULT,
 * KICKED: whatever ends it) it lingers: the frame is queued past the output
 * bound, nothing after it, input is read and dropped, then shutdown and
 * close. Without one, or on a connection already closing, it closes now
 * (pending output dropped, operations cancelled). No effect on a FREE slot,
 * a socket being handed off, or one whose close was submitted. */
void conn_end(struct worker *w, uint32_t slot, enum gw_close_reason why, const struct proto_frame *last);

static inline void conn_close(struct worker *w, uint32_t slot, enum gw_close_reason why)
{
	conn_end(w, slot, why, NULL);
}

/* conn_end with ERROR code (a fatal one) and text as the last frame. */
void conn_fail(struct worker *w, uint32_t slot, unsigned code, enum gw_close_reason why, const char *text);

/* A new socket in the fixed-file slot (accepted; fuzzers add their own),
 * from peer; proxy: it came through a ",proxy" listener (its PROXY header
 * names the source, and the limits are applied when it has come); tls: it
 * came through a --listen-tls listener (the worker has TLS state). */
void worker_adopt(struct worker *w, uint32_t slot, const struct src *peer, int proxy, int tls);

/* Apply the per-source limits (--max-conns-per-source,
 * --accept-rate-per-source) to a new connection whose peer (w->peers[slot])
 * is known: admitted (counted, CF_SRC), 0; or refused with ERROR
 * source_limit and closed, -1. */
int conn_admit_source(struct worker *w, uint32_t slot);

/* The LOGIN_RESULT this gateway answers with (status, agreed version). */
struct proto_frame conn_login_result(const struct worker *w, unsigned status, uint8_t version);

/* conn_end with LOGIN_RESULT status as the last frame. */
void conn_refuse_login(struct worker *w, uint32_t slot, unsigned status);

/* conn_end with KICKED as the last frame: reason PROTO_KICK_ELSEWHERE (a
 * newer login) or PROTO_KICK_ADMIN (the admin interface). */
void conn_kick(struct worker *w, uint32_t slot, unsigned reason);

/* Output bytes queued for the connection (waiting and in flight). */
uint32_t conn_queued(const struct conn *c);

static inline struct conn *conn_of(struct worker *w, uint32_t slot)
{
	return &w->conns[slot];
}

/* Whether c takes input: NEW, LIVE, or CLOSING while it lingers (input read
 * and dropped); not once its close is submitted. */
static inline int conn_reads(const struct conn *c)
{
	return !(c->flags & CF_CLOSE) &&
	       (c->state == CS_NEW || c->state == CS_LIVE || (c->state == CS_CLOSING && (c->flags & CF_LINGER)));
}

/* Free the connection's partial-frame carry, if any (and count it). Only
 * session_input calls it for the connection whose input it is handling. */
void conn_input_drop(struct worker *w, uint32_t slot);

/* Arm the connection's recv (multishot when logged in). */
void conn_arm_recv(struct worker *w, uint32_t slot);

/* Schedule the connection's timer check at the right next tick. */
void conn_timer_update(struct worker *w, uint32_t slot);

/* ---- session.c ------------------------------------------------------------ */

/* Handle received bytes for a connection (NEW or LIVE). Returns 0 normally,
 * or -1 when the connection stopped taking input (closing or handed off). */
int session_input(struct worker *w, uint32_t slot, const uint8_t *p, size_t n);

/* Count n bytes received against --rate-bytes (a TLS connection's, as
 * they came off the wire). 0, or -1 when that closed the connection. */
int session_rate_bytes(struct worker *w, uint32_t slot, size_t n);

/* A handed-off connection arrived at its home thread in `slot`. */
void session_handoff_in(struct worker *w, uint32_t slot, struct handoff *h);

/* Process one batch of records from another thread (frees nothing). */
void session_xbatch(struct worker *w, const struct xbatch *b);

/* A LIVE connection is going away: drop it from the directory. */
void session_gone(struct worker *w, uint32_t slot);

/* ---- dist.c: the links to the backends ------------------------------------ */
int gw_dist_setup(struct worker *w, char *err, size_t errlen);
void gw_dist_teardown(struct worker *w);
/* A reload (take_live): the links authenticate with w->settings' cluster
 * keys from their next handshake on; links up stay up. */
void gw_dist_rekey(struct worker *w);
void gw_dist_complete(struct worker *w, const struct io_uring_cqe *cqe);
void gw_dist_tick(struct worker *w);  /* every iteration */
void gw_dist_flush(struct worker *w); /* end of iteration */
int gw_dist_on(const struct worker *w); /* backends configured */

/* Send a message to the backend that owns its recipient (to) or group.
 * The answer comes later as a STORE_ACK (to thread othread, connection
 * oconn). Returns 0 when queued, else the proto_err code to answer now. */
unsigned gw_dist_route(struct worker *w, uint32_t othread, uint64_t oconn, uint64_t cmid, uint64_t from, uint64_t to,
		       uint64_t group, const uint8_t *body, uint32_t len);

/* A receipt from user `from` about message smid of user `to` to backend
 * thread link li (cluster_msg_link / cluster_user_link) with these DIST_RCPT_* flags. */
void gw_dist_receipt(struct worker *w, int li, uint8_t flags, uint8_t kind, uint64_t from, uint64_t to, uint64_t smid);

/* User `user` has the receipt from `peer` about smid: to every backend that
 * may keep it (the one that stored smid, and user's owner). */
void gw_dist_receipt_ack(struct worker *w, uint64_t user, uint64_t peer, uint64_t smid);

/* Session up/down to every backend (acks: the client acknowledges stored receipts). */
void gw_dist_session(struct worker *w, int up, uint64_t user, uint64_t oconn, uint64_t resume, int acks);

/* A client GROUP request. Returns 0 when queued, else an error code. */
unsigned gw_dist_group(struct worker *w, uint32_t slot, const struct proto_frame *f);

/* ---- session.c hooks used by dist.c ---------------------------------------- */
/* The slot of the live connection of a user at home here, or UINT32_MAX. */
uint32_t session_find(struct worker *w, uint64_t user);
/* A malloc'd list of the users at home here (*n of them), or NULL (OOM). */
uint64_t *session_users(struct worker *w, size_t *n);
/* Answer the sender of a message or group request living on this thread. */
void session_answer(struct worker *w, uint32_t slot, uint32_t gen, uint8_t what, uint64_t ref, uint64_t id,
		    unsigned status, uint8_t ack);
/* Deliver a message from a backend to a user at home here. */
void session_deliver_remote(struct worker *w, const struct dist_frame *f);
/* A receipt for a user at home here, from backend index li. */
void session_receipt_remote(struct worker *w, int li, const struct dist_frame *f);
/* The backend saw this session log in elsewhere. */
void session_kick_remote(struct worker *w, const struct dist_frame *f);

/* Home thread of a user. */
static inline unsigned gw_home(const struct gw *gw, uint64_t user)
{
	return (unsigned)(((hash64(user) >> 32) * (uint64_t)gw->nthreads) >> 32);
}

/* ---- stats.c -------------------------------------------------------------- */
struct mbuf;
struct httpd_req;
int gw_stats_http(void *arg, const struct httpd_req *req, struct mbuf *body, const char **ctype);

/* The node's phase, set by main, read by the stats thread (/healthz,
 * /metrics): serving, lame duck (SIGUSR2: not accepting, GOAWAY sent,
 * serving who stays) or draining (SIGTERM). */
enum { GW_SERVING = 0, GW_LAMEDUCK = 1, GW_DRAINING = 2 };
extern int gw_draining;

#endif
