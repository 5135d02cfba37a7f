/* tclient.c: blocking test client library (see tclient.h). */
#include "tests/tclient.h"
#include "runtime/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define TC_SEND_TIMEOUT_MS 5000
#define TC_KILL_WAIT_MS 5000

const char *tc_status_name(long st)
{
	switch (st) {
	case TC_TIMEOUT: return "timeout";
	case TC_EOF: return "eof";
	case TC_TRUNCATED: return "eof inside a frame";
	case TC_RESET: return "connection reset";
	case TC_IOERR: return "i/o error";
	case TC_EXITED: return "server exited";
	default: break;
	}
	if (st < 0 && st >= -PROTO_E_BAD_FIELD)
		return proto_err_name((unsigned)-st);
	return st > 0 ? "ok" : "unknown";
}

int64_t tc_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t tc_wall_s(void)
{
	return (uint64_t)time(NULL);
}

void tc_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int remaining(int64_t deadline)
{
	int64_t r = deadline - tc_now_ms();
	return r < 0 ? 0 : r > INT32_MAX ? INT32_MAX : (int)r;
}

/* ---- ports ------------------------------------------------------------------- */

/* Bind a TCP socket to 127.0.0.1:port (0: any free port); with `reuse`,
 * SO_REUSEADDR and SO_REUSEPORT first. Returns the fd (port in *got) or -1. */
static int bind_loopback(unsigned port, int reuse, unsigned *got)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (reuse) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	*got = ntohs(a.sin_port);
	return fd;
}

/* When the kernel has no port left to give (the ephemeral range is taken,
 * e.g. by a load test on the same host), try ports below (or above) the
 * ephemeral range, which nothing gets without asking for it. Other processes
 * of this library are kept off a port by an flock on a per-port lock file,
 * held as long as the reservation; a port some other program uses fails the
 * exclusive bind. Returns the lock file's fd (port in *got) or -1. */
static int reserve_outside_ephemeral(unsigned *got)
{
	unsigned lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%u %u", &lo, &hi) != 2)
			lo = 32768, hi = 60999;
		fclose(f);
	}
	unsigned first = 10000, last = lo > 11000 ? lo - 1 : 0;
	if (!last) {
		first = hi + 1;
		last = 65535;
	}
	if (first >= last)
		return -1;
	char dir[64], path[96];
	snprintf(dir, sizeof dir, "/tmp/tclient-ports-%u", (unsigned)getuid());
	mkdir(dir, 0700);
	unsigned span = last - first + 1;
	unsigned start = (unsigned)((uint64_t)getpid() * 7919u + (uint64_t)tc_now_ms()) % span;
	for (unsigned i = 0; i < span && i < 4000; i++) {
		unsigned port = first + (start + i) % span;
		snprintf(path, sizeof path, "%s/%u.lock", dir, port);
		int lk = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (lk < 0)
			return -1;
		if (flock(lk, LOCK_EX | LOCK_NB) != 0) {
			close(lk);
			continue;
		}
		unsigned p;
		int fd = bind_loopback(port, 0, &p); /* exclusive: fails on any user of the port */
		if (fd < 0) {
			close(lk);
			continue;
		}
		close(fd);
		*got = port;
		return lk;
	}
	errno = EADDRINUSE;
	return -1;
}

unsigned tc_port_reserve(int *fd_out)
{
	unsigned port = 0;
	int fd = bind_loopback(0, 1, &port);
	if (fd < 0 && errno == EADDRINUSE)
		fd = reserve_outside_ephemeral(&port);
	if (fd < 0)
		return 0;
	if (fd_out)
		*fd_out = fd;
	else
		close(fd);
	return port;
}

unsigned tc_port_reserve_n(unsigned n, int *fds)
{
	for (int attempt = 0; attempt < 64; attempt++) {
		unsigned first = tc_port_reserve(&fds[0]), k;
		if (!first)
			return 0;
		for (k = 1; k < n; k++) {
			unsigned got;
			/* exclusive first: that fails on any user of the port, a
			 * reservation included; then held the way tc_port_reserve holds */
			int probe = first + k > 65535 ? -1 : bind_loopback(first + k, 0, &got);
			if (probe < 0)
				break;
			close(probe);
			if ((fds[k] = bind_loopback(first + k, 1, &got)) < 0)
				break;
		}
		if (k == n)
			return first;
		while (k)
			tc_port_release(fds[--k]);
	}
	errno = EADDRINUSE;
	return 0;
}

void tc_port_release(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---- server process --------------------------------------------------------------- */

/* The watchdog: a forked child that blocks reading a pipe whose write end
 * only this process holds. A byte means "stopped in order"; EOF without one
 * means this process died, and the server is killed. Only async-signal-safe
 * calls after fork. */
static pid_t start_watchdog(pid_t server, int *wfd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	pid_t w = fork();
	if (w < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (w == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = SIG_DFL;
		for (int sig = 1; sig < 32; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				sigaction(sig, &sa, NULL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* hold no other descriptor: a test's sockets must close when it closes them */
		int keep = p[0];
		if (keep > 3)
			close_range(3, (unsigned)keep - 1, 0);
		if (close_range((unsigned)keep + 1, ~0u, 0) != 0) {
			for (int fd = keep + 1; fd < 65536; fd++)
				close(fd);
		}
		char b;
		ssize_t r;
		do
			r = read(keep, &b, 1);
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			kill(server, SIGKILL);
		_exit(0);
	}
	close(p[0]);
	*wfd = p[1];
	return w;
}

static void end_watchdog(struct tc_server *s)
{
	if (s->wd_fd >= 0) {
		ssize_t r;
		do
			r = write(s->wd_fd, "x", 1);
		while (r < 0 && errno == EINTR);
		close(s->wd_fd);
		s->wd_fd = -1;
	}
	if (s->watchdog > 0) {
		int st;
		while (waitpid(s->watchdog, &st, 0) < 0 && errno == EINTR)
			;
		s->watchdog = 0;
	}
}

int tc_server_start(struct tc_server *s, const char *path, char *const argv[], const char *log_path)
{
	/* stdout and stderr into the same file (opened once) */
	return tc_server_start_split(s, path, argv, log_path, log_path);
}

static int reap(struct tc_server *s, int flags)
{
	if (s->reaped)
		return 1;
	if (s->pid <= 0)
		return 0;
	int st;
	pid_t r;
	do
		r = waitpid(s->pid, &st, flags);
	while (r < 0 && errno == EINTR);
	if (r == s->pid) {
		s->reaped = 1;
		s->status = st;
		return 1;
	}
	return 0;
}

int tc_server_running(struct tc_server *s)
{
	return s->pid > 0 && !reap(s, WNOHANG);
}

int tc_server_wait(struct tc_server *s, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	for (;;) {
		if (s->pid <= 0 || reap(s, WNOHANG))
			return 0;
		if (tc_now_ms() >= deadline)
			return TC_TIMEOUT;
		tc_sleep_ms(5);
	}
}

int tc_server_signal(struct tc_server *s, int sig)
{
	if (s->pid <= 0 || s->reaped)
		return 0;
	return kill(s->pid, sig);
}

int tc_server_stop(struct tc_server *s, int timeout_ms)
{
	if (s->pid <= 0)
		return -1;
	if (!reap(s, WNOHANG)) {
		kill(s->pid, SIGTERM);
		if (tc_server_wait(s, timeout_ms) != 0) {
			kill(s->pid, SIGKILL);
			tc_server_wait(s, TC_KILL_WAIT_MS);
		}
	}
	end_watchdog(s);
	return s->reaped ? s->status : -1;
}

static int connect_loopback(unsigned port, int timeout_ms, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return TC_IOERR;
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		if (errno != EINPROGRESS) {
			close(fd);
			return TC_IOERR;
		}
		struct pollfd pf = {fd, POLLOUT, 0};
		int r;
		do
			r = poll(&pf, 1, timeout_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0) {
			close(fd);
			return TC_TIMEOUT;
		}
		int err = 0;
		socklen_t len = sizeof err;
		if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
			close(fd);
			errno = err;
			return TC_IOERR;
		}
	}
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

int tc_wait_accept(unsigned port, int timeout_ms, struct tc_server *s)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	for (;;) {
		if (s && !tc_server_running(s))
			return TC_EXITED;
		int fd = connect_loopback(port, 200, 0);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (tc_now_ms() >= deadline)
			return TC_TIMEOUT;
		tc_sleep_ms(20);
	}
}

char *tc_server_log_tail(const struct tc_server *s, char *out, size_t cap)
{
	if (!cap)
		return out;
	out[0] = 0;
	int fd = open(s->log_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return out;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t from = end > (off_t)(cap - 1) ? end - (off_t)(cap - 1) : 0;
	ssize_t n = pread(fd, out, cap - 1, from);
	close(fd);
	out[n > 0 ? n : 0] = 0;
	return out;
}

/* ---- connections -------------------------------------------------------------------- */

/* Receive buffers of connections still open: a test may end (and its process
 * exit) with connections open on purpose; they are freed at exit, so the
 * sanitizer build's leak check sees the test client clean up after itself. */
#define TC_LIVE_MAX 4096
static uint8_t *tc_live[TC_LIVE_MAX];

static void tc_free_live(void)
{
	for (size_t i = 0; i < TC_LIVE_MAX; i++) {
		free(tc_live[i]);
		tc_live[i] = NULL;
	}
}

static void tc_track(uint8_t *buf, int add)
{
	static int registered;
	if (!registered) {
		atexit(tc_free_live);
		registered = 1;
	}
	for (size_t i = 0; i < TC_LIVE_MAX; i++) {
		if (add ? tc_live[i] == NULL : tc_live[i] == buf) {
			tc_live[i] = add ? buf : NULL;
			return;
		}
	}
}

/* ---- TLS ------------------------------------------------------------------------ */

static struct tls_ctx *tc_tls_ctx;
static __thread struct tls_thread *tc_tls_th;

int tc_tls_use(const char *ca_file)
{
	char err[512];
	tls_ctx_free(tc_tls_ctx);
	tc_tls_ctx = NULL;
	if (!ca_file)
		return 0;
	struct tls_client_opts o = {.ca_file = ca_file, .server_name = "localhost"};
	if (!(tc_tls_ctx = tls_client_new(&o, err, sizeof err))) {
		fprintf(stderr, "tclient: TLS: %s\n", err);
		return -1;
	}
	return 0;
}

int tc_tls_on(void)
{
	return tc_tls_ctx != NULL;
}

int tc_tls_test_mode(const char *dir, char *cert, char *key, size_t cap)
{
	if (!getenv("GW_TEST_TLS"))
		return 0;
	if ((size_t)snprintf(cert, cap, "%s/cert.pem", dir) >= cap || (size_t)snprintf(key, cap, "%s/key.pem", dir) >= cap)
		return -1;
	char *mk[] = {"tools/tls-selfsigned", (char *)dir, NULL};
	if (tc_run(mk[0], mk, "/dev/null", "/dev/null", 20000) != 0) {
		fprintf(stderr, "tclient: tools/tls-selfsigned %s failed\n", dir);
		return -1;
	}
	return tc_tls_use(cert) == 0 ? 1 : -1;
}

static struct tls_thread *tls_th(void)
{
	char err[256];
	if (!tc_tls_th && !(tc_tls_th = tls_thread_new(err, sizeof err)))
		fprintf(stderr, "tclient: TLS: %s\n", err);
	return tc_tls_th;
}

static int send_all(int fd, const uint8_t *b, size_t n, int64_t deadline);
static int plain_in(struct tc_conn *c, uint8_t *raw, size_t n);

/* The client's handshake, blocking until deadline; records after it are
 * opened into c->buf. Returns 0 or a TC_* code. */
static int tls_client_handshake(struct tc_conn *c, int64_t deadline)
{
	struct tls_thread *th = tls_th();
	if (!th || !(c->tls = calloc(1, sizeof *c->tls)) || tls_conn_start(th, c->tls, tc_tls_ctx) != 0)
		return TC_IOERR;
	static __thread uint8_t in[1 << 16];
	size_t n = 0;
	for (;;) {
		size_t used = 0, outn = 0;
		const uint8_t *out;
		unsigned why;
		int h = tls_handshake(th, c->tls, in, n, &used, &out, &outn, &why);
		if (outn && send_all(c->fd, out, outn, deadline) != 0)
			return TC_RESET;
		if (h == TLS_HS_FAIL) {
			fprintf(stderr, "tclient: TLS handshake failed: %s\n", tls_hs_fail_name(why));
			return TC_IOERR;
		}
		if (h == TLS_HS_DONE)
			return n > used ? plain_in(c, in + used, n - used) : 0;
		struct pollfd pf = {c->fd, POLLIN, 0};
		int left = remaining(deadline);
		if (!left)
			return TC_TIMEOUT;
		if (poll(&pf, 1, left) < 0 && errno != EINTR)
			return TC_IOERR;
		ssize_t r = recv(c->fd, in, sizeof in, MSG_DONTWAIT);
		if (r == 0)
			return TC_EOF;
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return errno == ECONNRESET ? TC_RESET : TC_IOERR;
		n = r > 0 ? (size_t)r : 0;
	}
}

/* Received record bytes: their plaintext is appended to c->buf. Returns
 * 0, or TC_EOF at the peer's close_notify (c->eof set), TC_RESET at its
 * fatal alert, TC_IOERR on a bad record. */
static int plain_in(struct tc_conn *c, uint8_t *raw, size_t n)
{
	const uint8_t *p;
	size_t pn;
	int r = tls_open(tls_th(), c->tls, raw, n, &p, &pn);
	if (pn > TC_BUF_CAP - c->len)
		return TC_IOERR; /* fill leaves room for a whole record */
	memcpy(c->buf + c->len, p, pn);
	c->len += pn;
	if (tls_wants_write(c->tls)) { /* the server asked for our KeyUpdate */
		uint8_t rec[64];
		size_t m = tls_seal(tls_th(), c->tls, rec, 0, rec);
		if (!m || send_all(c->fd, rec, m, tc_now_ms() + TC_SEND_TIMEOUT_MS) != 0)
			return TC_IOERR;
	}
	if (r == 1) {
		c->eof = 1;
		return TC_EOF;
	}
	return r == 0 ? 0 : r == 2 ? TC_RESET : TC_IOERR;
}

int tc_connect(struct tc_conn *c, unsigned port, int rcvbuf, int timeout_ms)
{
	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->buf = malloc(TC_BUF_CAP);
	if (!c->buf)
		return TC_IOERR;
	tc_track(c->buf, 1);
	int fd = connect_loopback(port, timeout_ms, rcvbuf);
	if (fd < 0) {
		tc_track(c->buf, 0);
		free(c->buf);
		c->buf = NULL;
		return fd;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	c->fd = fd;
	if (tc_tls_ctx) {
		int r = tls_client_handshake(c, tc_now_ms() + timeout_ms);
		if (r != 0 && r != TC_EOF) {
			tc_close(c);
			return r;
		}
	}
	return 0;
}

int tc_connect_plain(struct tc_conn *c, unsigned port, int rcvbuf, int timeout_ms)
{
	struct tls_ctx *tls = tc_tls_ctx;
	tc_tls_ctx = NULL;
	int r = tc_connect(c, port, rcvbuf, timeout_ms);
	tc_tls_ctx = tls;
	return r;
}

void tc_close(struct tc_conn *c)
{
	if (c->tls) {
		tls_conn_free(c->tls);
		free(c->tls);
		c->tls = NULL;
	}
	if (c->buf) {
		if (c->fd >= 0)
			close(c->fd);
		tc_track(c->buf, 0);
		free(c->buf);
	}
	c->buf = NULL;
	c->fd = -1;
}

int tc_shutdown_wr(struct tc_conn *c)
{
	if (c->fd < 0)
		return -1;
	if (c->tls) {
		uint8_t a[TLS_OVERHEAD + 2];
		size_t n = tls_alert(tls_th(), c->tls, TLS_A_CLOSE_NOTIFY, a);
		if (n && send_all(c->fd, a, n, tc_now_ms() + TC_SEND_TIMEOUT_MS) != 0)
			return -1;
	}
	return shutdown(c->fd, SHUT_WR);
}

int tc_send_raw(struct tc_conn *c, const void *p, size_t n, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	if (c->fd < 0)
		return TC_IOERR;
	if (!c->tls)
		return send_all(c->fd, p, n, deadline);
	uint8_t *rec = malloc(tls_seal_bound(c->tls, n));
	size_t m = rec ? tls_seal(tls_th(), c->tls, n ? p : rec, n, rec) : 0;
	int r = m ? send_all(c->fd, rec, m, deadline) : n ? TC_IOERR : 0;
	free(rec);
	return r;
}

static int send_all(int fd, const uint8_t *b, size_t n, int64_t deadline)
{
	struct tc_conn cc = {.fd = fd}, *c = &cc;
	while (n) {
		ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			b += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int left = remaining(deadline);
			if (!left)
				return TC_TIMEOUT;
			struct pollfd pf = {c->fd, POLLOUT, 0};
			if (poll(&pf, 1, left) < 0 && errno != EINTR)
				return TC_IOERR;
			continue;
		}
		return (errno == EPIPE || errno == ECONNRESET) ? TC_RESET : TC_IOERR;
	}
	return 0;
}

int tc_send_frame(struct tc_conn *c, const struct proto_frame *f)
{
	uint8_t buf[PROTO_MAX_FRAME_BYTES];
	size_t n = proto_encode(f, buf, sizeof buf);
	if (n == 0 || n > sizeof buf)
		return TC_IOERR;
	return tc_send_raw(c, buf, n, TC_SEND_TIMEOUT_MS);
}

size_t tc_pending(const struct tc_conn *c)
{
	return c->len - c->off;
}

/* Read more input, waiting until deadline. Returns bytes read (> 0), 0 at
 * EOF (c->eof set), TC_TIMEOUT, TC_RESET or TC_IOERR. */
static long fill(struct tc_conn *c, int64_t deadline)
{
	if (c->fd < 0)
		return TC_IOERR;
	if (c->eof)
		return 0;
	if (c->off && c->off == c->len)
		c->off = c->len = 0;
	if (c->len == TC_BUF_CAP) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
		if (c->len == TC_BUF_CAP)
			return TC_IOERR; /* cannot happen: a frame fits */
	}
	if (c->tls && TC_BUF_CAP - c->len < 2 * TLS_RECORD_MAX) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	for (;;) {
		if (c->tls) {
			/* records: their plaintext goes to c->buf (a carried record's
			 * plaintext may exceed what one recv brings) */
			static __thread uint8_t raw[TLS_RECORD_MAX];
			size_t before = c->len;
			ssize_t r = recv(c->fd, raw, sizeof raw, MSG_DONTWAIT);
			if (r > 0) {
				int st = plain_in(c, raw, (size_t)r);
				if (st == TC_EOF || c->len > before)
					return c->len > before ? (long)(c->len - before) : 0;
				if (st < 0)
					return st;
				continue; /* a partial record, or only a ticket */
			}
			if (r == 0) {
				c->eof = 1;
				return 0;
			}
		} else {
			ssize_t r = recv(c->fd, c->buf + c->len, TC_BUF_CAP - c->len, MSG_DONTWAIT);
			if (r > 0) {
				c->len += (size_t)r;
				return r;
			}
			if (r == 0) {
				c->eof = 1;
				return 0;
			}
		}
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET || errno == EPIPE)
			return TC_RESET;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return TC_IOERR;
		int left = remaining(deadline);
		if (!left)
			return TC_TIMEOUT;
		struct pollfd pf = {c->fd, POLLIN, 0};
		if (poll(&pf, 1, left) < 0 && errno != EINTR)
			return TC_IOERR;
	}
}

long tc_recv_frame(struct tc_conn *c, struct tc_frame *out, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	if (!c->buf)
		return TC_IOERR;
	for (;;) {
		size_t have = c->len - c->off;
		if (have) {
			struct proto_frame f;
			long r = proto_parse(c->buf + c->off, have, PROTO_FROM_SERVER, &f);
			if (r < 0)
				return r;
			if (r > 0) {
				memcpy(out->raw, c->buf + c->off, (size_t)r);
				out->size = (uint32_t)r;
				long again = proto_parse(out->raw, (size_t)r, PROTO_FROM_SERVER, &out->f);
				c->off += (size_t)r;
				return again == r ? r : TC_IOERR;
			}
		}
		if (c->eof)
			return have ? TC_TRUNCATED : TC_EOF;
		long n = fill(c, deadline);
		if (n < 0)
			return n;
	}
}

long tc_expect_eof(struct tc_conn *c, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	if (!c->buf)
		return TC_IOERR;
	if (tc_pending(c))
		return (long)tc_pending(c);
	long n = fill(c, deadline);
	if (n < 0)
		return n;
	return n == 0 ? 0 : (long)tc_pending(c);
}

long tc_drain_until_close(struct tc_conn *c, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	long dropped = 0;
	if (!c->buf)
		return TC_IOERR;
	for (;;) {
		dropped += (long)tc_pending(c);
		c->off = c->len = 0;
		long n = fill(c, deadline);
		if (n == 0 || n == TC_RESET)
			return dropped;
		if (n < 0)
			return n == TC_TIMEOUT ? TC_TIMEOUT : n;
	}
}

/* ---- logins --------------------------------------------------------------------- */

int tc_secret_new(const char *path, struct token_secret *s)
{
	uint8_t key[32];
	char hex[2 * sizeof key + 2];
	if (sodium_init() < 0)
		return -1;
	randombytes_buf(key, sizeof key);
	for (size_t i = 0; i < sizeof key; i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	hex[2 * sizeof key] = '\n';
	hex[2 * sizeof key + 1] = 0;
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	size_t n = strlen(hex);
	ssize_t w = write(fd, hex, n);
	if (close(fd) != 0 || w != (ssize_t)n)
		return -1;
	return s ? tc_secret_load(path, s) : 0;
}

int tc_secret_load(const char *path, struct token_secret *s)
{
	char err[256];
	return token_secret_load(s, path, err, sizeof err) == 0 ? 0 : -1;
}

size_t tc_enc_login(uint8_t *buf, size_t cap, const struct token_secret *s, uint64_t user, uint64_t expiry,
		    uint8_t version)
{
	uint8_t tok[TOKEN_LEN];
	token_mint(s, user, expiry ? expiry : tc_wall_s() + 3600, tok);
	struct proto_frame f = {.type = PROTO_LOGIN};
	f.login.version = version;
	f.login.flags = 0;
	f.login.user = user;
	f.login.token = (struct proto_bytes){tok, TOKEN_LEN};
	f.login.resume = 0;
	size_t n = proto_encode(&f, buf, cap);
	return n <= cap ? n : 0;
}

long tc_login(struct tc_conn *c, const struct token_secret *s, uint64_t user, struct tc_frame *res,
	      int timeout_ms)
{
	return tc_login_v(c, s, user, 1, res, timeout_ms);
}

long tc_login_v(struct tc_conn *c, const struct token_secret *s, uint64_t user, uint8_t version,
		struct tc_frame *res, int timeout_ms)
{
	uint8_t buf[128];
	size_t n = tc_enc_login(buf, sizeof buf, s, user, 0, version);
	if (!n)
		return TC_IOERR;
	int r = tc_send_raw(c, buf, n, timeout_ms);
	if (r != 0)
		return r;
	return tc_recv_frame(c, res, timeout_ms);
}

/* ---- HTTP --------------------------------------------------------------------- */

int tc_http_get(unsigned port, const char *path, int timeout_ms, char *body, size_t cap)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	if (cap)
		body[0] = 0;
	struct tc_conn c;
	int r = tc_connect_plain(&c, port, 0, timeout_ms); /* stats endpoints are plain HTTP */
	if (r != 0)
		return r;
	char req[512];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
	if (n < 0 || (size_t)n >= sizeof req) {
		tc_close(&c);
		return TC_IOERR;
	}
	r = tc_send_raw(&c, req, (size_t)n, remaining(deadline));
	if (r != 0) {
		tc_close(&c);
		return r;
	}
	while (!c.eof) {
		long got = fill(&c, deadline);
		if (got < 0) {
			tc_close(&c);
			return (int)got;
		}
	}
	/* the whole response is in c.buf[0..len) (stats pages are far smaller than the buffer) */
	size_t len = c.len;
	char *resp = malloc(len + 1);
	if (!resp) {
		tc_close(&c);
		return TC_IOERR;
	}
	memcpy(resp, c.buf, len);
	resp[len] = 0;
	tc_close(&c);
	int status = 0;
	if (sscanf(resp, "HTTP/%*d.%*d %d", &status) != 1) {
		free(resp);
		return TC_IOERR;
	}
	char *b = strstr(resp, "\r\n\r\n");
	if (b && cap) {
		b += 4;
		size_t bl = len - (size_t)(b - resp);
		if (bl > cap - 1)
			bl = cap - 1;
		memcpy(body, b, bl);
		body[bl] = 0;
	}
	free(resp);
	return status;
}

int64_t tc_json_num(const char *json, const char *key)
{
	char pat[128];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(json, pat);
	if (!p)
		return -1;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	if (*p < '0' || *p > '9')
		return -1;
	return strtoll(p, NULL, 10);
}

/* ---- one-shot child processes (added for test_loadgen) --------------------------- */

int tc_server_start_split(struct tc_server *s, const char *path, char *const argv[], const char *out_path,
			  const char *err_path)
{
	memset(s, 0, sizeof *s);
	s->wd_fd = -1;
	snprintf(s->log_path, sizeof s->log_path, "%s", err_path); /* tc_server_log_tail shows stderr */
	int outfd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (outfd < 0)
		return -1;
	int errfd = strcmp(out_path, err_path) == 0 ? outfd : open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (errfd < 0) {
		close(outfd);
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outfd, 1);
	posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	posix_spawnattr_init(&at);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	int e = posix_spawn(&pid, path, &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (errfd != outfd)
		close(errfd);
	close(outfd);
	if (e != 0) {
		errno = e;
		return -1;
	}
	s->pid = pid;
	s->watchdog = start_watchdog(pid, &s->wd_fd);
	if (s->watchdog < 0) {
		e = errno;
		s->watchdog = 0;
		kill(pid, SIGKILL);
		tc_server_wait(s, TC_KILL_WAIT_MS);
		errno = e;
		return -1;
	}
	return 0;
}

int tc_run(const char *path, char *const argv[], const char *out_path, const char *err_path, int timeout_ms)
{
	struct tc_server s;
	if (tc_server_start_split(&s, path, argv, out_path, err_path) != 0)
		return -1;
	int timed_out = tc_server_wait(&s, timeout_ms) != 0;
	if (timed_out) {
		tc_server_signal(&s, SIGKILL);
		tc_server_wait(&s, TC_KILL_WAIT_MS);
	}
	end_watchdog(&s);
	if (timed_out)
		return TC_TIMEOUT;
	if (!s.reaped)
		return -1;
	if (WIFEXITED(s.status))
		return WEXITSTATUS(s.status);
	return WIFSIGNALED(s.status) ? 128 + WTERMSIG(s.status) : -1;
}

char *tc_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	for (;;) {
		if (!b) {
			close(fd);
			return NULL;
		}
		if (cap - n < 2) {
			char *g = realloc(b, cap * 2);
			if (!g) {
				free(b);
				close(fd);
				return NULL;
			}
			b = g;
			cap *= 2;
		}
		ssize_t r = read(fd, b + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(b);
			close(fd);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	b[n] = 0;
	if (len)
		*len = n;
	return b;
}

const char *tc_build_dir(void)
{
	static char dir[PATH_MAX];
	const char *e = getenv("GW_BUILD_DIR");
	if (e && *e)
		return e;
	if (!dir[0]) {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		snprintf(dir, sizeof dir, "build");
		if (n > 0) {
			exe[n] = 0;
			char *s = strrchr(exe, '/'); /* .../tests/test_NAME */
			if (s) {
				*s = 0;
				s = strrchr(exe, '/'); /* .../tests */
				if (s && strcmp(s, "/tests") == 0) {
					*s = 0;
					snprintf(dir, sizeof dir, "%s", exe);
				}
			}
		}
	}
	return dir;
}
