/* tclient.h: a small blocking client library for end-to-end tests.
 *
 * What it covers:
 * - server processes: start a binary (posix_spawn, argv array, stdout and
 *   stderr to a log file), wait until a port accepts, stop it (SIGTERM, then
 *   SIGKILL as the last resort) and collect its exit status. A watchdog
 *   process kills the server if the test process dies without stopping it
 *   (a crash, or criterion's timeout killing the test), so no server outlives
 *   its test;
 * - loopback ports: reserve a free TCP port (bind port 0) and keep it
 *   reserved while the server under test binds it;
 * - client connections to 127.0.0.1:port: send raw bytes or encoded frames
 *   (proto_encode), receive the next server frame (buffered, proto_parse with
 *   PROTO_FROM_SERVER), expect the peer to close;
 * - logins: mint a token (runtime/token.h) and send LOGIN;
 * - a minimal HTTP/1.0 GET for stats endpoints.
 *
 * Every wait takes a timeout in milliseconds and returns TC_TIMEOUT when it
 * passes: nothing here blocks without a bound. Functions are not thread-safe
 * per object (one tc_conn is used by one thread); different objects are
 * independent. Returned negative values are the TC_* codes below (or, for
 * tc_recv_frame, a negated proto_err parse code).
 */
#ifndef TESTS_TCLIENT_H
#define TESTS_TCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/client.h"
#include "runtime/token.h"

/* Status codes, all negative and below any negated proto_err (-1..-4). */
enum tc_status {
	TC_TIMEOUT = -1000,   /* the bounded wait ran out */
	TC_EOF = -1001,       /* the peer closed (FIN) with no partial frame left */
	TC_TRUNCATED = -1002, /* the peer closed in the middle of a frame */
	TC_RESET = -1003,     /* connection reset (RST) or broken pipe */
	TC_IOERR = -1004,     /* another socket or system error (see errno) */
	TC_EXITED = -1005,    /* the server process exited while we waited for it */
};

/* Name of a TC_* code or proto_err parse code, for messages. Never NULL. */
const char *tc_status_name(long st);

/* Monotonic clock in milliseconds. */
int64_t tc_now_ms(void);

/* Sleep for ms milliseconds (EINTR-safe). */
void tc_sleep_ms(int ms);

/* ---- ports ------------------------------------------------------------------- */

/* Find a free TCP port on 127.0.0.1 by binding port 0.
 * With fd non-NULL the bound socket is kept open (not listening, with
 * SO_REUSEADDR and SO_REUSEPORT set) and stored in *fd: while it is open no
 * other bind to port 0 and no outgoing connection gets that port, yet a server
 * that sets SO_REUSEADDR (or SO_REUSEPORT, same user) can still bind and
 * listen on it. That closes the race between finding a port and the server
 * binding it when tests run in parallel.
 * When no port is left to bind (the ephemeral range is used up, e.g. by a
 * load test on the same host), a port outside the ephemeral range that
 * nothing uses is picked instead, and *fd is an flock'ed lock file
 * (/tmp/tclient-ports-UID/PORT.lock) that keeps other users of this library
 * off that port.
 * Release either with tc_port_release() once the server is stopped. With fd
 * NULL nothing stays reserved. Returns the port, or 0 on error (errno set). */
unsigned tc_port_reserve(int *fd);

/* Release a reservation from tc_port_reserve(); ignores fd < 0. */
void tc_port_release(int fd);

/* n consecutive ports (a backend's node threads listen on port + k): like
 * tc_port_reserve, each held by fds[k] until released. Returns the first,
 * or 0 when no run of n free ports was found. */
unsigned tc_port_reserve_n(unsigned n, int *fds);

/* ---- server process --------------------------------------------------------------- */

struct tc_server {
	pid_t pid;       /* the server; 0 when none was started */
	pid_t watchdog;  /* kills pid if this process dies first; 0 none */
	int wd_fd;       /* write end of the watchdog's pipe; -1 none */
	int reaped;      /* the server's exit status has been collected */
	int status;      /* its raw wait status (use WIFEXITED etc.) once reaped */
	char log_path[512];
};

/* Start `path` with argv (NULL-terminated; argv[0] is conventionally the
 * path) and the current environment. stdin is /dev/null; stdout and stderr
 * go to log_path (created or truncated). The caller keeps ownership of path,
 * argv and log_path (log_path is copied into s). Returns 0, or -1 (errno set)
 * with nothing left running. */
int tc_server_start(struct tc_server *s, const char *path, char *const argv[], const char *log_path);

/* Whether the server still runs (reaps it if it exited). */
int tc_server_running(struct tc_server *s);

/* Wait up to timeout_ms for the server to exit. Returns 0 with s->status set,
 * or TC_TIMEOUT. Returns 0 at once if it was already reaped. */
int tc_server_wait(struct tc_server *s, int timeout_ms);

/* Send a signal to the server (no-op once it was reaped). 0 or -1. */
int tc_server_signal(struct tc_server *s, int sig);

/* Stop the server: SIGTERM, wait up to timeout_ms; then SIGKILL and wait
 * (bounded, 5 s). Also ends the watchdog. Safe to call more than once and on
 * a never-started or already-exited server. Returns the raw wait status, or
 * -1 when there was no server or it could not be reaped. */
int tc_server_stop(struct tc_server *s, int timeout_ms);

/* Wait until 127.0.0.1:port accepts a TCP connection (which is closed at
 * once), trying every 20 ms for up to timeout_ms. With s non-NULL, gives up
 * early with TC_EXITED when that server exits. Returns 0, TC_TIMEOUT or
 * TC_EXITED. Note the probe connection counts as a client of the server. */
int tc_wait_accept(unsigned port, int timeout_ms, struct tc_server *s);

/* Copy the last `cap - 1` bytes (at most) of the server's log into out,
 * NUL-terminated, for failure messages. Returns out ("" if unreadable). */
char *tc_server_log_tail(const struct tc_server *s, char *out, size_t cap);

/* ---- connections -------------------------------------------------------------------- */

#define TC_BUF_CAP (4u * PROTO_MAX_FRAME_BYTES)

struct tls_conn;
struct tc_conn {
	int fd;         /* -1 when closed */
	int eof;        /* the peer's FIN (over TLS: its close_notify) was read */
	size_t off, len; /* unread input is buf[off..len) (plaintext over TLS) */
	uint8_t *buf;   /* TC_BUF_CAP bytes, owned by the conn */
	struct tls_conn *tls; /* over TLS (tc_tls_use): the record state (runtime/tls.h); NULL plain */
};

/* From now on tc_connect speaks TLS 1.3 (the gateway's runtime/tls engine
 * as a client, ALPN "chat", the server verified against ca_file as
 * "localhost"), and sends, receives and shuts down through it; NULL: plain
 * TCP again. For this process (criterion runs each test in its own).
 * Returns 0, or -1 with a reason on stderr. */
int tc_tls_use(const char *ca_file);

/* Whether tc_connect speaks TLS now. */
int tc_tls_on(void);

/* The suites' TLS mode (GW_TEST_TLS set: test_gateway_tls, test_backend_tls):
 * make a self-signed pair for localhost in dir (tools/tls-selfsigned; its
 * paths into cert and key, cap bytes each) and tc_tls_use it. Returns 1 in
 * TLS mode, 0 without GW_TEST_TLS, -1 on failure. */
int tc_tls_test_mode(const char *dir, char *cert, char *key, size_t cap);

/* Connect to 127.0.0.1:port. rcvbuf > 0 sets SO_RCVBUF before connecting (a
 * small window for slow-consumer tests); 0 leaves the kernel default.
 * Sets TCP_NODELAY and, as a backstop behind the poll-based timeouts,
 * SO_RCVTIMEO/SO_SNDTIMEO of 10 s. timeout_ms bounds the connect. Returns 0,
 * or a TC_* code with c->fd = -1. Free with tc_close(). */
int tc_connect(struct tc_conn *c, unsigned port, int rcvbuf, int timeout_ms);

/* tc_connect in plain TCP whatever tc_tls_use says (stats endpoints). */
int tc_connect_plain(struct tc_conn *c, unsigned port, int rcvbuf, int timeout_ms);

/* Close the socket and free the buffer; safe on a closed or zeroed conn
 * (fd 0 with no buffer counts as never opened). */
void tc_close(struct tc_conn *c);

/* Shut down our sending side (FIN; over TLS our close_notify first) but
 * keep reading. 0 or -1. */
int tc_shutdown_wr(struct tc_conn *c);

/* Send all n bytes, waiting up to timeout_ms for socket buffer space.
 * Returns 0, TC_TIMEOUT, TC_RESET (peer gone) or TC_IOERR. */
int tc_send_raw(struct tc_conn *c, const void *p, size_t n, int timeout_ms);

/* Encode f with proto_encode() and send it (5 s bound). Returns 0, a TC_*
 * code, or TC_IOERR when proto_encode() refuses the frame. */
int tc_send_frame(struct tc_conn *c, const struct proto_frame *f);

/* One received frame. The byte views in f point into raw, so a tc_frame must
 * not be copied by value (copy raw and re-parse instead). Large: keep one on
 * the stack or reuse it. */
struct tc_frame {
	struct proto_frame f;
	uint32_t size;                      /* bytes of raw in use (the whole frame) */
	uint8_t raw[PROTO_MAX_FRAME_BYTES]; /* the frame as received, prefix included */
};

/* Receive the next frame, waiting up to timeout_ms for its bytes.
 * Returns its size (> 0) with *out filled (out->f parsed from out->raw);
 * a negated proto_err (-PROTO_E_BAD_FRAME .. -PROTO_E_BAD_FIELD) when the
 * buffered bytes do not parse (they stay buffered; see tc_pending);
 * TC_EOF when the peer closed cleanly at a frame boundary; TC_TRUNCATED when
 * it closed inside a frame; TC_TIMEOUT; TC_RESET; TC_IOERR. */
long tc_recv_frame(struct tc_conn *c, struct tc_frame *out, int timeout_ms);

/* Expect the peer to close: wait up to timeout_ms for EOF with no further
 * input. Returns 0 on a clean EOF; the count of unread bytes (> 0, left
 * buffered) when data came instead; TC_TIMEOUT; TC_RESET; TC_IOERR. */
long tc_expect_eof(struct tc_conn *c, int timeout_ms);

/* Bytes received and not yet returned as frames. */
size_t tc_pending(const struct tc_conn *c);

/* Read and drop whatever arrives until the peer closes (EOF or RST) or
 * timeout_ms passes. Returns the bytes dropped (buffered ones included), or
 * TC_TIMEOUT when the peer did not close in time. */
long tc_drain_until_close(struct tc_conn *c, int timeout_ms);

/* ---- logins --------------------------------------------------------------------- */

/* Write 32 random bytes, hex-encoded (64 characters and a newline), to a new
 * file at path (mode 0600; replaced if it exists) and load them into *s
 * (when s is non-NULL) as token_secret_load() does. Returns 0 or -1. */
int tc_secret_new(const char *path, struct token_secret *s);

/* Load a secret file (token_secret_load). Returns 0 or -1. */
int tc_secret_load(const char *path, struct token_secret *s);

/* Wall-clock Unix seconds. */
uint64_t tc_wall_s(void);

/* Encode a LOGIN frame for `user` with a token minted from s expiring at
 * expiry (Unix seconds; 0 means an hour from now), the given version (any,
 * 0 included) and resume 0, into buf. Returns the frame size, or 0 when it
 * does not fit cap (or user is not a valid user id). */
size_t tc_enc_login(uint8_t *buf, size_t cap, const struct token_secret *s, uint64_t user, uint64_t expiry,
		    uint8_t version);

/* Log in on c as `user` (version 1, token valid for an hour) and receive the
 * answer into *res, waiting up to timeout_ms. Returns what tc_recv_frame()
 * returned: > 0 with the frame in res (a LOGIN_RESULT normally; check
 * res->f.type and res->f.login_result.status), else an error code. */
long tc_login(struct tc_conn *c, const struct token_secret *s, uint64_t user, struct tc_frame *res,
	      int timeout_ms);

/* tc_login speaking protocol `version` (2: DELIVER carries the cmid, stored
 * receipts are delivered until acknowledged with RECEIPT kind 3). */
long tc_login_v(struct tc_conn *c, const struct token_secret *s, uint64_t user, uint8_t version,
		struct tc_frame *res, int timeout_ms);

/* ---- HTTP --------------------------------------------------------------------- */

/* GET http://127.0.0.1:port<path> (plain HTTP, also under tc_tls_use; HTTP/1.0, Connection: close), waiting up to
 * timeout_ms in all. Copies the body (at most cap - 1 bytes) into body,
 * NUL-terminated. The whole response must fit TC_BUF_CAP (about 64 KiB; stats
 * pages do), else TC_IOERR. Returns the HTTP status code (> 0) or a TC_*
 * code. */
int tc_http_get(unsigned port, const char *path, int timeout_ms, char *body, size_t cap);

/* The number after "key": in a JSON text (first occurrence), e.g.
 * tc_json_num(body, "slow_consumers"). Returns -1 when absent. */
int64_t tc_json_num(const char *json, const char *key);

/* ---- one-shot child processes (added for test_loadgen) --------------------------- */

/* Like tc_server_start(), but stdout goes to out_path and stderr to err_path
 * (each created or truncated; the same path for both is allowed). The same
 * watchdog applies: the child is killed if this process dies first. Stop or
 * collect it with tc_server_wait()/tc_server_stop(). Returns 0 or -1. */
int tc_server_start_split(struct tc_server *s, const char *path, char *const argv[], const char *out_path,
			  const char *err_path);

/* Run `path` with argv to completion: stdout to out_path, stderr to err_path
 * (as tc_server_start_split), waiting up to timeout_ms; past that it is killed
 * (SIGKILL). Returns its exit status (0..255), 128 + the signal when a signal
 * ended it, TC_TIMEOUT when it had to be killed, or -1 when it could not be
 * started (errno set). */
int tc_run(const char *path, char *const argv[], const char *out_path, const char *err_path, int timeout_ms);

/* Read a whole file into a new NUL-terminated buffer (free() it); *len gets
 * its size when len is non-NULL. NULL when it cannot be read. */
char *tc_read_file(const char *path, size_t *len);

/* The build directory the binaries under test live in: $GW_BUILD_DIR if
 * set (tests/run sets it), else two levels above this test binary when it
 * sits in BUILDDIR/tests/, else "build". The string is static. */
const char *tc_build_dir(void);

#endif
