/* link.h: one end of a distribution link (gateway thread <-> backend node),
 * driven by its owner's io_uring loop. Wire format: proto/dist.h and
 * PROTOCOL.md part 4.
 *
 * Sending: the owner adds frames with link_add() during a loop iteration;
 * they are encoded straight into the batch under construction, and
 * link_flush() at the end of the iteration closes the batch (a size cap
 * closes it earlier; a batch that uses less than half its buffer is shrunk
 * to its size) and sends. One send is in flight at a time; finished batches
 * wait in a queue bounded by queue_max bytes of memory (what the batches
 * hold, headers included), which survives a reconnect: while the peer is
 * unreachable frames wait, and link_add() refuses (-EAGAIN) once the bound is
 * reached, so the owner can answer "try again" instead of growing memory.
 * link_add_state() puts frames that are state rather than traffic (session
 * announcements) in a lane of their own, with its own bound, that is sent
 * before the traffic queue: traffic that waited through an outage can
 * neither crowd them out nor delay them, so a peer that comes back learns
 * the state first. While both lanes have batches they take turns, so a big
 * resync does not stall traffic either. The state lane is not held
 * (link_hold); it survives a reconnect like the traffic queue unless the
 * owner drops it (link_drop_state); ordering holds within each lane.
 *
 * Handshake: each side sends HELLO (identity, key id, nonce); once it has the
 * peer's HELLO and ops->on_hello() accepts the identity, it sends AUTH (an
 * HMAC over both HELLOs with the cluster key, runtime/peerauth.h) and waits
 * for the peer's. Nothing but HELLO, AUTH and ERROR is accepted before the
 * peer's AUTH checks out; the link is UP (ops->on_up) only then. A refused
 * or failed handshake gets ERROR auth_failed and a close, counted in
 * st.refused_hello / st.auth_failures and logged (rate-limited). The whole
 * handshake must finish within LINK_HANDSHAKE_NS on an accepted link and
 * LINK_OUT_HANDSHAKE_NS on an outbound one, and until it has, the link holds
 * a receive buffer of LINK_RX_HANDSHAKE bytes only.
 *
 * Flow control: after the handshake each side may send LINK_INITIAL_CREDIT
 * bytes of batches; the receiver grants more (CREDIT) as it consumes them. A
 * sender out of credit keeps batches queued, so a slow peer slows its
 * senders. A grant that would take the credit past LINK_CREDIT_MAX is a
 * violation (the link closes). Control frames (HELLO, AUTH, ERROR, CREDIT,
 * HEARTBEAT and its echo) travel outside batches, never wait for credit and
 * are never queued: each has one pending slot (a second CREDIT adds to the
 * first, a second echo replaces the first), so a peer that floods heartbeats
 * and never reads costs a fixed few bytes.
 *
 * Liveness: a HEARTBEAT every second asks for an echo (round-trip time); a
 * link with nothing received for LINK_DEAD_NS is closed. An outbound link
 * then reconnects with exponential backoff (100 ms doubling to 5 s, +-25%
 * jitter). Received frames: HELLO, CREDIT and HEARTBEAT are handled here;
 * everything inside batches goes to ops->on_frame.
 *
 * Memory: a receive buffer of LINK_RX_CAP while connected, the batch under
 * construction, and the queue. Owned by the link; freed by link_free().
 * Thread: the owner's thread only.
 */
#ifndef RUNTIME_LINK_H
#define RUNTIME_LINK_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "proto/dist.h"
#include "runtime/addr.h"

#define LINK_INITIAL_CREDIT (4u << 20)
#define LINK_CREDIT_MAX (1ull << 40) /* more is a violation: no peer grants a terabyte */
#define LINK_GRANT_EVERY (1u << 20) /* grant credit once this much was consumed */
#define LINK_RX_CAP (DIST_MAX_FRAME + 4096u)
#define LINK_RX_HANDSHAKE 512u /* receive buffer until the peer is authenticated */
#define LINK_HANDSHAKE_NS 1000000000ull /* two round trips, on any network we link over */
/* An outbound link waits longer: a peer that took the connection and does
 * not answer is most likely stopped or busy (SIGSTOP, a long fsync), and
 * waiting costs one connection; it answers the moment it runs again instead
 * of a backoff later. */
#define LINK_OUT_HANDSHAKE_NS 30000000000ull
#define LINK_HELLO_MAX 96u /* an encoded HELLO (about 55 bytes) */
#define LINK_CTRL_BUF 320u /* every pending control frame at once */
#define LINK_SEND_IOV 16u  /* traffic batches one send takes (one sendmsg): a loop that
			    * turns slowly still sends all it made (one batch per
			    * iteration capped a busy backend's output) */
#define LINK_HEARTBEAT_NS 1000000000ull
#define LINK_DEAD_NS 3000000000ull
#define LINK_BACKOFF_MIN_NS 100000000ull
#define LINK_BACKOFF_MAX_NS 5000000000ull

enum { LINK_LANE_DATA, LINK_LANE_STATE };
#define LINK_STATES(X) X(IDLE, idle) X(CONNECTING, connecting) X(HELLO, hello) X(AUTH, auth) X(UP, up) \
	X(BACKOFF, backoff) X(CLOSING, closing)
enum link_state {
#define LINK_X_(N, name) LINK_##N,
	LINK_STATES(LINK_X_)
#undef LINK_X_
};

/* "up", "backoff", ...; "unknown" for a value outside the enum. */
const char *link_state_name(unsigned state);

struct link;

struct link_ops {
	/* the peer's HELLO (version and role checked already): return NULL to
	 * go on, or why this peer is refused (it gets ERROR auth_failed) */
	const char *(*on_hello)(void *arg, struct link *l, const struct dist_frame *hello);
	/* an inner frame of a received batch (views valid during the call) */
	void (*on_frame)(void *arg, struct link *l, const struct dist_frame *f);
	/* handshake done: the peer's identity is in l->peer_* */
	void (*on_up)(void *arg, struct link *l);
	/* the connection was lost (why: a short reason); queued frames stay.
	 * Also for a connection whose peer never authenticated (l->authed 0). */
	void (*on_down)(void *arg, struct link *l, const char *why);
};

/* A link's figures, the one list both programs publish and render:
 * X(field, KIND, metric, labels, key, help, scale). KIND: COUNTER (counted in
 * struct link_stats since link_init; summed over links), GAUGE (now; summed)
 * or MAX (now; the largest over links). metric and key get the program's
 * prefix ("gateway_", "backend_") and go to runtime/metrics.h (scale: what
 * the Prometheus value is multiplied by, for base units); rows of one
 * metric name stay together (the refusal rows come last so a program can add
 * reasons of its own after them). A new link statistic is a row here and
 * the place in link.c that counts it. */
#define LINK_STATS(X)                                                                                          \
	X(frames_out, COUNTER, "link_frames_total", "dir=\"out\"", "link_frames_out", "Dist link frames", 1)          \
	X(frames_in, COUNTER, "link_frames_total", "dir=\"in\"", "link_frames_in", "Dist link frames", 1)             \
	X(batches_out, COUNTER, "link_batches_total", "dir=\"out\"", "link_batches_out", "Dist link batches", 1)      \
	X(batches_in, COUNTER, "link_batches_total", "dir=\"in\"", "link_batches_in", "Dist link batches", 1)         \
	X(bytes_out, COUNTER, "link_bytes_total", "dir=\"out\"", "link_bytes_out", "Dist link bytes", 1)              \
	X(bytes_in, COUNTER, "link_bytes_total", "dir=\"in\"", "link_bytes_in", "Dist link bytes", 1)                 \
	X(reconnects, COUNTER, "link_reconnects_total", NULL, "link_reconnects", "Dist link connections lost and retried", 1) \
	X(connect_failures, COUNTER, "link_connect_failures_total", NULL, "link_connect_failures",                \
	  "Dist link connection attempts that failed", 1)                                                          \
	X(credit_stalls, COUNTER, "link_credit_stalls_total", NULL, "link_credit_stalls",                         \
	  "Batches held for flow-control credit", 1)                                                                \
	X(refused, COUNTER, "link_queue_refused_total", NULL, "link_queue_refused",                                \
	  "Frames refused: the link's queue was at its bound", 1)                                                  \
	X(violations, COUNTER, "link_violations_total", NULL, "link_violations",                                  \
	  "Links closed for a protocol violation by the peer", 1)                                                   \
	X(up, GAUGE, "links_up", NULL, "links_up", "Dist links up", 1)                                                \
	X(queue_bytes, GAUGE, "link_queue_bytes", NULL, "link_queue_bytes", "Bytes queued on dist links (memory batches hold)", 1) \
	X(rtt_us, MAX, "link_rtt_max_seconds", NULL, "link_rtt_us_max", "Largest dist link round-trip time", 1e-6)    \
	X(refused_hello, COUNTER, "link_refused_total", "reason=\"hello\"", "link_refused_hello",                 \
	  "Link handshakes refused, by reason", 1)                                                                  \
	X(auth_failures, COUNTER, "link_refused_total", "reason=\"auth\"", "link_refused_auth",                   \
	  "Link handshakes refused, by reason", 1)

struct link_stats {
#define LINK_X_(f, kind, metric, labels, key, help, scale) uint64_t f;
	LINK_STATS(LINK_X_)
#undef LINK_X_
};

/* Link l's figures now: its counters (l->st) with the gauges filled in
 * (up and queue_bytes are not kept in l->st; they are read from the link). */
void link_stats_snapshot(const struct link *l, struct link_stats *out);

/* Add *s to *sum: COUNTER and GAUGE rows added, MAX rows the larger. */
void link_stats_merge(struct link_stats *sum, const struct link_stats *s);

/* Add the counters of *s to *sum (a link slot about to be reused hands what
 * it counted to a running total so published counters never go back). */
void link_stats_retire(struct link_stats *sum, const struct link_stats *s);

/* Copy *src to *dst with relaxed atomic stores, for a reader on another
 * thread (the stats thread loads each field with a relaxed load). */
void link_stats_publish(struct link_stats *dst, const struct link_stats *src);

struct link_out; /* a queued batch */
struct peerauth_keys;

struct link {
	/* identity */
	unsigned idx;      /* owner's index, in user_data */
	unsigned ud_kind;  /* owner's user_data kind for link operations */
	uint32_t gen;      /* per connection; stale completions are dropped */
	int fd;
	enum link_state state;
	int outbound;      /* we connect (gateway side) and reconnect */
	struct addr peer;  /* outbound: where to */
	uint8_t my_role, peer_role;
	uint32_t my_node, my_thread, my_threads;
	uint32_t peer_node, peer_thread, peer_threads;
	uint8_t expect_role; /* 0 = any */
	int authed;          /* the peer authenticated on this connection (ops->on_up ran) */
	int close_after_send; /* an ERROR is pending: close once it has left (or after 1 s) */
	/* handshake */
	/* the owner may point it at new keys between events (a reload): links up
	 * stay up, the next handshake uses them (one in flight may fail and retry) */
	const struct peerauth_keys *keys;
	uint8_t nonce[DIST_NONCE];
	uint8_t hello_mine[LINK_HELLO_MAX], hello_peer[LINK_HELLO_MAX];
	uint8_t hello_mine_len, hello_peer_len;
	uint32_t peer_key;
	/* control frames waiting to be sent: one slot each (LC_* bits in link.c) */
	unsigned ctrl;
	uint8_t err_code;
	uint8_t err_len;
	char err_text[96];
	uint64_t ctrl_credit, hb_seq_out, hb_t_out, hb_seq_echo, hb_t_echo;
	uint8_t ctrl_buf[LINK_CTRL_BUF]; /* the control frames of the send in flight */
	int hold;             /* set: only batches up to release_seq leave (control
			       * frames always do): the backend's batches wait until
			       * the writes they acknowledge are committed */
	uint64_t release_seq;
	/* receive */
	uint8_t *rx;
	size_t rx_len, rx_cap;
	int recv_inflight, send_inflight, connect_inflight;
	/* send: lane[LINK_LANE_DATA] traffic, lane[LINK_LANE_STATE] sent first */
	struct link_lane {
		uint8_t *cur; /* batch under construction (DIST_BATCH_HEADROOM + batch_cap) */
		struct dist_batch batch;
		struct link_out *head, *tail;
		size_t bytes; /* memory held by its closed batches */
	} lane[2];
	struct link_out *sending; /* the batches in flight (a chain), or NULL with ctrl_buf */
	int sent_state;           /* the last batch sent was from the state lane */
	struct iovec tx_iov[LINK_SEND_IOV]; /* what the send in flight sends: tx_iov[tx_at..tx_n) */
	unsigned tx_n, tx_at;
	struct msghdr tx_msg;
	uint64_t seq_out;
	int64_t credit;
	uint64_t consumed;
	/* time (monotonic ns) */
	uint64_t last_rx_ns, last_tx_ns, last_hb_ns, since_ns, backoff_ns, retry_at_ns, hb_seq, rng;
	/* settings */
	size_t queue_max, batch_cap;
	int nobatch; /* batch_cap 0: every frame is its own batch and send (a baseline for benchmarks) */
	int sockbuf;
	struct link_stats st;
	const struct link_ops *ops;
	void *arg;
	char name[48]; /* for logs: "backend 2 (127.0.0.1:7000)" */
};

/* Set up an idle link. keys: the cluster keys (kept by pointer, must outlive
 * the link); batch_cap: bytes per batch before it is closed early (<=
 * DIST_MAX_FRAME; 0 turns batching off: one frame per batch and send, to
 * measure what batching buys); queue_max: bound on queued bytes; sockbuf:
 * SO_SNDBUF and SO_RCVBUF (0 = kernel default). */
void link_init(struct link *l, unsigned idx, unsigned ud_kind, const struct link_ops *ops, void *arg,
	       const struct peerauth_keys *keys, uint8_t my_role, uint32_t my_node, uint32_t my_thread,
	       uint32_t my_threads, size_t batch_cap, size_t queue_max, int sockbuf);

/* Outbound: connect to peer now, and reconnect whenever the link is lost. */
void link_connect(struct link *l, struct io_uring *ring, const struct addr *peer, uint64_t now_ns);

/* Inbound: take an accepted socket fd (ownership passes to the link). */
void link_attach(struct link *l, struct io_uring *ring, int fd, uint64_t now_ns);

/* Queue one inner frame into the current batch. Returns 0, -EAGAIN when the
 * queue is at its bound (answer "try again"), or -EINVAL for an invalid frame. */
int link_add(struct link *l, const struct dist_frame *f);

/* Add a state frame to the state lane (see the top), which holds at most
 * `bound` bytes; -EAGAIN past it. */
int link_add_state(struct link *l, const struct dist_frame *f, size_t bound);

/* Drop everything waiting in the state lane (state that a reconnect makes
 * stale: the owner announces afresh). */
void link_drop_state(struct link *l);

/* Whether link_add() would take `bytes` more now. */
int link_has_room(const struct link *l, size_t bytes);

/* End of iteration: close the batch, grant credit, start a send. */
void link_flush(struct link *l, struct io_uring *ring, uint64_t now_ns);

/* With hold set: close the batch under construction and let every batch
 * built so far leave (call right after the commit that covers them). */
void link_release(struct link *l, struct io_uring *ring, uint64_t now_ns);

/* With hold set: drop the batch under construction and every batch built
 * since the last release (what a failed commit must not let leave). */
void link_drop_held(struct link *l);

/* With hold set, instead of dropping: offer every frame built since the last
 * release to fn, in order; fn may change it and returns 1 to keep it, 0 to
 * drop it. The kept frames are built again into new held batches (so they
 * leave at the next link_release) and the old batches are freed. What a
 * failed commit sends instead of what it promised (its answers changed to
 * errors), without closing a link that did nothing wrong. Returns the
 * number of frames dropped (by fn, or for want of room). */
size_t link_redo_held(struct link *l, int (*fn)(void *arg, struct dist_frame *f), void *arg);
/* Heartbeats, dead-peer detection, reconnects. Call every iteration (cheap). */
void link_tick(struct link *l, struct io_uring *ring, uint64_t now_ns);

/* A completion whose user_data kind is l->ud_kind and slot l->idx. */
void link_complete(struct link *l, struct io_uring *ring, const struct io_uring_cqe *cqe, uint64_t now_ns);

/* Close the connection (the link reconnects if outbound). */
void link_close(struct link *l, struct io_uring *ring, const char *why, uint64_t now_ns);

/* Whether nothing is in flight in the kernel (safe to free). */
int link_quiet(const struct link *l);

/* Free buffers and close the fd (after link_quiet(), or at exit). */
void link_free(struct link *l);

/* Bytes of memory queued in both lanes, including what the batches under
 * construction use (their buffers, batch_cap, are allocated once per batch). */
size_t link_queued(const struct link *l);

#endif
