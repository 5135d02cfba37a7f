/* test_tls_gateway.c: the gateway's TLS listeners end to end, with clients
 * nobody here wrote (Debian's `openssl s_client`, Python's ssl module) and
 * with hostile ones (bad records, stalled and half-done handshakes, TLS 1.2,
 * a foreign ALPN id), beside this project's own TLS client (tests/tclient.h
 * over runtime/tls). The rest of the gateway's suite runs over TLS as
 * test_gateway_tls.
 *
 * Each test starts a gateway with a plain and a TLS listener, a certificate
 * made for it (tools/tls-selfsigned, run from the repository root as
 * `ninja test` does) and its own secret, ports and log under
 * $builddir/tests/tls-e2e/.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/client.h"
#include "runtime/tls.h"
#include "tests/tclient.h"

extern char **environ;

#define RECV_MS 3000
#define START_MS 5000

static struct {
	struct tc_server srv;
	unsigned tls, plain, stats; /* ports */
	int fds[3];
	char dir[PATH_MAX], log[PATH_MAX + 64], secret_path[PATH_MAX + 64];
	char cert_dir[PATH_MAX + 64], cert[PATH_MAX + 96], key[PATH_MAX + 96];
	struct token_secret secret;
	int started;
} G = {.fds = {-1, -1, -1}};

static char *log_tail(void)
{
	static char buf[3000];
	return tc_server_log_tail(&G.srv, buf, sizeof buf);
}

static void make_cert(const char *dir)
{
	char *argv[] = {"tools/tls-selfsigned", (char *)dir, NULL};
	cr_assert_eq(tc_run(argv[0], argv, "/dev/null", "/dev/null", 20000), 0, "tools/tls-selfsigned %s failed", dir);
}

/* Start the gateway: a plain and a TLS listener, the test's certificate,
 * plus the extra NULL-terminated options. */
static void start(const char *first, ...)
{
	const char *bd = tc_build_dir();
	const char *name = criterion_current_test ? criterion_current_test->name : "test";
	char gw_path[PATH_MAX + 32], l_plain[48], l_tls[48], l_stats[48];
	snprintf(gw_path, sizeof gw_path, "%s/gateway/gateway", bd);
	snprintf(G.dir, sizeof G.dir, "%s/tests/tls-e2e", bd);
	mkdir(G.dir, 0755);
	snprintf(G.log, sizeof G.log, "%s/%s.log", G.dir, name);
	snprintf(G.secret_path, sizeof G.secret_path, "%s/%s.%d.secret", G.dir, name, (int)getpid());
	snprintf(G.cert_dir, sizeof G.cert_dir, "%s/%s.%d.tls", G.dir, name, (int)getpid());
	snprintf(G.cert, sizeof G.cert, "%s/cert.pem", G.cert_dir);
	snprintf(G.key, sizeof G.key, "%s/key.pem", G.cert_dir);
	make_cert(G.cert_dir);
	cr_assert_eq(tc_secret_new(G.secret_path, &G.secret), 0);
	G.tls = tc_port_reserve(&G.fds[0]);
	G.plain = tc_port_reserve(&G.fds[1]);
	G.stats = tc_port_reserve(&G.fds[2]);
	cr_assert(G.tls && G.plain && G.stats, "no free port");
	snprintf(l_tls, sizeof l_tls, "127.0.0.1:%u", G.tls);
	snprintf(l_plain, sizeof l_plain, "127.0.0.1:%u", G.plain);
	snprintf(l_stats, sizeof l_stats, "127.0.0.1:%u", G.stats);
	const char *argv[48] = {gw_path, "--listen", l_plain, "--listen-tls", l_tls, "--tls-cert", G.cert, "--tls-key",
				G.key, "--stats-listen", l_stats, "--auth-secret-file", G.secret_path, "--threads", "2",
				"--drain-timeout", "500ms"};
	size_t n = 17;
	va_list ap;
	va_start(ap, first);
	for (const char *a = first; a && n < 46; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	cr_assert_eq(tc_server_start(&G.srv, gw_path, (char *const *)argv, G.log), 0, "cannot start %s", gw_path);
	G.started = 1;
	int64_t deadline = tc_now_ms() + START_MS;
	char body[64];
	int st;
	do {
		cr_assert(tc_server_running(&G.srv), "gateway exited at start-up; log:\n%s", log_tail());
		st = tc_http_get(G.stats, "/healthz", 1000, body, sizeof body);
		if (st != 200)
			tc_sleep_ms(20);
	} while (st != 200 && tc_now_ms() < deadline);
	cr_assert_eq(st, 200, "stats endpoint not up; log:\n%s", log_tail());
	cr_assert_eq(tc_tls_use(G.cert), 0);
}

static void fini(void)
{
	if (G.started) {
		int st = tc_server_stop(&G.srv, 5000);
		if (st != -1 && WIFSIGNALED(st))
			cr_log_error("gateway ended by signal %d; log %s", WTERMSIG(st), G.log);
		G.started = 0;
	}
	for (int i = 0; i < 3; i++) {
		tc_port_release(G.fds[i]);
		G.fds[i] = -1;
	}
	tc_tls_use(NULL);
	unlink(G.secret_path);
	unlink(G.cert);
	unlink(G.key);
	rmdir(G.cert_dir);
}

TestSuite(tls_gateway, .fini = fini, .timeout = 60);

static int64_t stat_num(const char *key)
{
	static char body[1 << 16];
	int st = tc_http_get(G.stats, "/stats", 2000, body, sizeof body);
	cr_assert_eq(st, 200, "/stats: %d", st);
	return tc_json_num(body, key);
}

static int64_t wait_stat(const char *key, int64_t want, int ms)
{
	int64_t deadline = tc_now_ms() + ms, v;
	while ((v = stat_num(key)) < want && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	return v;
}

/* ---- frames ---------------------------------------------------------------- */

static size_t enc(const struct proto_frame *f, uint8_t *buf, size_t cap)
{
	size_t n = proto_encode(f, buf, cap);
	cr_assert(n > 0 && n <= cap, "encode %s", proto_type_name(f->type));
	return n;
}

static size_t enc_send(uint8_t *buf, size_t cap, uint64_t cmid, uint64_t to, const char *body)
{
	struct proto_frame f = {.type = PROTO_SEND};
	f.send.cmid = cmid;
	f.send.to = to;
	f.send.body = (struct proto_bytes){(const uint8_t *)body, (uint32_t)strlen(body)};
	return enc(&f, buf, cap);
}

static size_t enc_ping(uint8_t *buf, size_t cap, const char *data)
{
	struct proto_frame f = {.type = PROTO_PING};
	f.ping.data = (struct proto_bytes){(const uint8_t *)data, (uint32_t)strlen(data)};
	return enc(&f, buf, cap);
}

/* Next frame of type `type` on c (skipping others, e.g. a server PING). */
static void expect_frame(struct tc_conn *c, struct tc_frame *fr, uint8_t type, const char *what)
{
	for (int i = 0; i < 8; i++) {
		long r = tc_recv_frame(c, fr, RECV_MS);
		cr_assert_gt(r, 0, "%s: no %s: %s", what, proto_type_name(type), tc_status_name(r));
		if (fr->f.type == type)
			return;
	}
	cr_assert_fail("%s: no %s among the frames received", what, proto_type_name(type));
}

static void login(struct tc_conn *c, uint64_t user)
{
	struct tc_frame fr;
	long r = tc_login(c, &G.secret, user, &fr, RECV_MS);
	cr_assert_gt(r, 0, "login %llu: %s", (unsigned long long)user, tc_status_name(r));
	cr_assert(fr.f.type == PROTO_LOGIN_RESULT && fr.f.login_result.status == 0, "login %llu refused",
		  (unsigned long long)user);
}

static void open_login(struct tc_conn *c, unsigned port, uint64_t user)
{
	int r = tc_connect(c, port, 0, RECV_MS);
	cr_assert_eq(r, 0, "connect to %u: %s", port, tc_status_name(r));
	login(c, user);
}

static void ping_ok(struct tc_conn *c, const char *what)
{
	uint8_t buf[64];
	cr_assert_eq(tc_send_raw(c, buf, enc_ping(buf, sizeof buf, "p"), 2000), 0, "%s: send", what);
	struct tc_frame fr;
	expect_frame(c, &fr, PROTO_PONG, what);
}

static void expect_deliver(struct tc_conn *c, const char *body, const char *what)
{
	struct tc_frame fr;
	expect_frame(c, &fr, PROTO_DELIVER, what);
	cr_assert(fr.f.deliver.body.len == strlen(body) && memcmp(fr.f.deliver.body.p, body, strlen(body)) == 0,
		  "%s: body \"%.*s\", want \"%s\"", what, (int)fr.f.deliver.body.len, (const char *)fr.f.deliver.body.p,
		  body);
}

/* ---- openssl s_client --------------------------------------------------------- */

/* s_client with stdin from a pipe of ours and stdout (the server's bytes,
 * -quiet: nothing else) to a file we parse frames from. */
struct sclient {
	pid_t pid;
	int in;
	char out[PATH_MAX + 96], err[PATH_MAX + 96];
	size_t off; /* of out parsed */
	uint8_t buf[1 << 16];
	size_t len;
};

static void sc_start(struct sclient *s, const char *tag, const char *const *extra)
{
	char connect[48];
	snprintf(connect, sizeof connect, "127.0.0.1:%u", G.tls);
	snprintf(s->out, sizeof s->out, "%s/%s.out", G.cert_dir, tag);
	snprintf(s->err, sizeof s->err, "%s/%s.err", G.cert_dir, tag);
	const char *argv[32] = {"openssl", "s_client", "-connect", connect, "-servername", "localhost", "-CAfile",
				G.cert, "-verify_return_error", "-quiet", "-no_ign_eof"};
	size_t n = 11;
	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	int p[2];
	cr_assert_eq(pipe(p), 0);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	posix_spawn_file_actions_addopen(&fa, 1, s->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, 2, s->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int r = posix_spawnp(&s->pid, "openssl", &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	cr_assert_eq(r, 0, "cannot run openssl s_client: %s", strerror(r));
	s->in = p[1];
	s->off = s->len = 0;
}

/* Write one chunk to s_client's stdin: it reads it with one read() (and
 * takes a chunk starting with 'k' as its KeyUpdate command, so frames are
 * written apart from commands, with a pause). */
static void sc_write(struct sclient *s, const void *p, size_t n)
{
	cr_assert_eq(write(s->in, p, n), (ssize_t)n, "write to s_client: %s", strerror(errno));
	tc_sleep_ms(100);
}

/* The next frame s_client printed (its stdout is the server's bytes). */
static void sc_frame(struct sclient *s, struct proto_frame *f, uint8_t type, const char *what)
{
	int64_t deadline = tc_now_ms() + RECV_MS;
	for (;;) {
		long r = s->len ? proto_parse(s->buf, s->len, PROTO_FROM_SERVER, f) : 0;
		cr_assert_geq(r, 0, "%s: s_client printed bytes that are not a frame", what);
		if (r > 0 && f->type != type) {
			memmove(s->buf, s->buf + r, s->len - (size_t)r);
			s->len -= (size_t)r;
			continue;
		}
		if (r > 0) {
			/* f points into buf: keep it until the next call */
			static uint8_t keep[sizeof s->buf];
			memcpy(keep, s->buf, (size_t)r);
			memmove(s->buf, s->buf + r, s->len - (size_t)r);
			s->len -= (size_t)r;
			cr_assert_eq(proto_parse(keep, (size_t)r, PROTO_FROM_SERVER, f), r);
			return;
		}
		int fd = open(s->out, O_RDONLY);
		cr_assert_geq(fd, 0);
		ssize_t got = pread(fd, s->buf + s->len, sizeof s->buf - s->len, (off_t)s->off);
		close(fd);
		if (got > 0) {
			s->off += (size_t)got;
			s->len += (size_t)got;
			continue;
		}
		char *err = tc_read_file(s->err, NULL);
		cr_assert(tc_now_ms() < deadline, "%s: no %s from s_client; its stderr:\n%s", what, proto_type_name(type),
			  err ? err : "");
		free(err);
		tc_sleep_ms(20);
	}
}

/* Close s_client's stdin (it sends close_notify and exits); its status.
 * refused: its handshake is refused, it exits by itself: wait for that
 * first (an early end of its input would race the server's alert). */
static int sc_end_(struct sclient *s, int refused)
{
	int st = 0;
	for (int i = 0; refused && i < 250; i++) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			close(s->in);
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		tc_sleep_ms(20);
	}
	close(s->in);
	for (int i = 0; i < 300; i++) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		tc_sleep_ms(20);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &st, 0);
	return -1;
}

static int sc_end(struct sclient *s)
{
	return sc_end_(s, 0);
}

static int file_has(const char *path, const char *what)
{
	char *t = tc_read_file(path, NULL);
	int yes = t && strstr(t, what) != NULL;
	free(t);
	return yes;
}

/* s_client as user a, our TLS client as b: LOGIN, messages both ways,
 * s_client's KeyUpdate command (update requested: ours comes back), more
 * messages under the new keys, then s_client's close_notify at the end of
 * its input. */
static void s_client_session(const char *suite, const char *want_cipher)
{
	start(NULL);
	struct tc_conn b;
	open_login(&b, G.tls, 2002);
	struct sclient s;
	const char *extra[] = {"-ciphersuites", suite, "-alpn", TLS_ALPN, NULL};
	sc_start(&s, "a", extra);
	uint8_t buf[512];
	struct proto_frame f;
	sc_write(&s, buf, tc_enc_login(buf, sizeof buf, &G.secret, 2001, 0, 1));
	sc_frame(&s, &f, PROTO_LOGIN_RESULT, "s_client login");
	cr_assert_eq(f.login_result.status, 0, "s_client login refused");
	sc_write(&s, buf, enc_send(buf, sizeof buf, 1, 2002, "from s_client"));
	expect_deliver(&b, "from s_client", "our client gets s_client's message");
	sc_frame(&s, &f, PROTO_ACK, "s_client's ACK");
	cr_assert_eq(tc_send_raw(&b, buf, enc_send(buf, sizeof buf, 7, 2001, "to s_client"), 2000), 0);
	sc_frame(&s, &f, PROTO_DELIVER, "s_client gets a message");
	cr_assert(f.deliver.body.len == 11 && memcmp(f.deliver.body.p, "to s_client", 11) == 0);
	/* KeyUpdate, update_requested: both directions change keys */
	sc_write(&s, "k\n", 2);
	cr_assert(file_has(s.err, "KEYUPDATE"), "s_client did not take its KeyUpdate command");
	sc_write(&s, buf, enc_send(buf, sizeof buf, 2, 2002, "after keyupdate"));
	expect_deliver(&b, "after keyupdate", "a message under s_client's new key");
	cr_assert_eq(tc_send_raw(&b, buf, enc_send(buf, sizeof buf, 8, 2001, "new keys here"), 2000), 0);
	sc_frame(&s, &f, PROTO_DELIVER, "a message under the gateway's new key");
	cr_assert(f.deliver.body.len == 13 && memcmp(f.deliver.body.p, "new keys here", 13) == 0);
	cr_assert_eq(sc_end(&s), 0, "s_client's exit status");
	cr_assert_geq(wait_stat("tls_alerts_close_notify", 1, 2000), 1, "s_client's close_notify was counted");
	char *err = tc_read_file(s.err, NULL);
	cr_log_info("s_client (%s) stderr: %s", suite, err ? err : "");
	free(err);
	(void)want_cipher;
	cr_assert_eq(stat_num("tls_handshakes"), 2);
	cr_assert_eq(stat_num("closed_tls"), 0);
	ping_ok(&b, "our client after s_client left");
	tc_close(&b);
}

Test(tls_gateway, s_client_aes_gcm) { s_client_session("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"); }
Test(tls_gateway, s_client_chacha20) { s_client_session("TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256"); }

/* Handshakes that must fail, each counted under its reason. */
Test(tls_gateway, refused_handshakes_are_counted)
{
	start(NULL);
	struct sclient s;
	const char *tls12[] = {"-tls1_2", NULL};
	sc_start(&s, "tls12", tls12);
	cr_assert_neq(sc_end_(&s, 1), 0, "a TLS 1.2 client is refused");
	cr_assert(file_has(s.err, "alert protocol version"), "the alert names the reason");
	const char *h2[] = {"-alpn", "h2", NULL};
	sc_start(&s, "h2", h2);
	cr_assert_neq(sc_end_(&s, 1), 0, "a client without the chat ALPN id is refused");
	cr_assert(file_has(s.err, "no application protocol"), "the alert names the reason");
	struct tc_conn g;
	cr_assert_eq(tc_connect_plain(&g, G.tls, 0, 2000), 0);
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	cr_assert_eq(tc_send_raw(&g, junk, sizeof junk - 1, 2000), 0);
	cr_assert_geq(tc_drain_until_close(&g, 3000), 0, "garbage on the TLS port: closed");
	tc_close(&g);
	cr_assert_eq(wait_stat("tls_handshake_failed_version", 1, 2000), 1);
	cr_assert_eq(wait_stat("tls_handshake_failed_alpn", 1, 2000), 1);
	cr_assert_eq(wait_stat("tls_handshake_failed_protocol", 1, 2000), 1);
	cr_assert_eq(stat_num("tls_handshakes"), 0);
	int64_t deadline = tc_now_ms() + 2000;
	while (stat_num("tls_conns") != 0 && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	/* each failed handshake gave its place back once (it was taken twice, and
	 * the count wrapped to 2^32 - 1, refusing every handshake after) */
	cr_assert_eq(stat_num("tls_handshaking"), 0);
	/* the gateway serves on */
	struct tc_conn c;
	open_login(&c, G.tls, 3001);
	ping_ok(&c, "after the refused handshakes");
	tc_close(&c);
}

/* A record with a flipped bit: that connection gets bad_record_mac and is
 * closed; another connection is unharmed. */
Test(tls_gateway, bad_record_closes_only_that_connection)
{
	start(NULL);
	struct tc_conn x, y;
	open_login(&x, G.tls, 4001);
	open_login(&y, G.tls, 4002);
	uint8_t buf[64], rec[256];
	char err[256];
	struct tls_thread *th = tls_thread_new(err, sizeof err);
	cr_assert(th, "%s", err);
	size_t n = enc_ping(buf, sizeof buf, "x");
	size_t m = tls_seal(th, x.tls, buf, n, rec);
	cr_assert_gt(m, 0);
	rec[m - 3] ^= 0x10; /* in the tag */
	cr_assert_eq(send(x.fd, rec, m, MSG_NOSIGNAL), (ssize_t)m);
	struct tc_frame fr;
	long r = tc_recv_frame(&x, &fr, RECV_MS);
	cr_assert_eq(r, TC_RESET, "the gateway's fatal alert ends the connection: %s", tc_status_name(r));
	cr_assert_eq(wait_stat("tls_bad_records", 1, 2000), 1);
	cr_assert_eq(stat_num("closed_tls"), 1);
	ping_ok(&y, "the other connection");
	tls_thread_free(th);
	tc_close(&x);
	tc_close(&y);
}

/* --rate-bytes counts what comes off the wire: a client sending one tiny
 * frame per record (23 bytes of record for 3 of frame) is cut by it, though
 * its frames alone stay under the limit. */
Test(tls_gateway, rate_limit_counts_record_bytes)
{
	start("--rate-bytes", "8k", "--rate-frames", "0", NULL);
	struct tc_conn c, other;
	open_login(&c, G.tls, 9001);
	open_login(&other, G.tls, 9002);
	uint8_t ping[16];
	size_t pn = enc_ping(ping, sizeof ping, "");
	int r = 0;
	for (int i = 0; i < 600 && r == 0; i++)
		r = tc_send_raw(&c, ping, pn, 2000); /* one record each */
	cr_log_info("%zu bytes of frames in 600 records", 600 * pn);
	cr_assert_lt(600 * pn, 8192, "the frames alone are under the limit");
	struct tc_frame fr;
	long got;
	do
		got = tc_recv_frame(&c, &fr, RECV_MS);
	while (got > 0 && fr.f.type == PROTO_PONG);
	cr_assert(got > 0 && fr.f.type == PROTO_ERROR && fr.f.error.code == PROTO_E_RATE_LIMITED,
		  "cut for its record bytes: %s", got > 0 ? proto_type_name(fr.f.type) : tc_status_name(got));
	cr_assert_eq(wait_stat("rate_limited", 1, 2000), 1);
	ping_ok(&other, "another connection");
	tc_close(&c);
	tc_close(&other);
}

/* A silent socket on the TLS port is closed at --tls-handshake-timeout; a
 * handshake begun and not finished counts against --tls-max-handshakes
 * until it ends. */
Test(tls_gateway, handshake_timeout_and_limit)
{
	start("--tls-handshake-timeout", "600ms", "--tls-max-handshakes", "2", "--threads", "1", NULL);
	struct tc_conn idle;
	cr_assert_eq(tc_connect_plain(&idle, G.tls, 0, 2000), 0);
	int64_t t0 = tc_now_ms();
	cr_assert_geq(tc_drain_until_close(&idle, 3000), 0, "a silent connection is closed");
	int64_t took = tc_now_ms() - t0;
	cr_assert(took >= 400 && took < 2000, "closed after %lld ms, want about 600", (long long)took);
	tc_close(&idle);
	cr_assert_eq(wait_stat("tls_handshake_failed_timeout", 1, 2000), 1);
	/* two half ClientHellos hold the two handshake places */
	static const uint8_t part[] = {0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00, 0x00, 0x7c, 0x03, 0x03};
	struct tc_conn h[3];
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tc_connect_plain(&h[i], G.tls, 0, 2000), 0);
		cr_assert_eq(tc_send_raw(&h[i], part, sizeof part, 2000), 0);
		if (i < 2)
			cr_assert_eq(wait_stat("tls_handshaking", i + 1, 2000), i + 1);
	}
	cr_assert_geq(tc_drain_until_close(&h[2], 2000), 0, "the third handshake is refused at once");
	cr_assert_eq(stat_num("tls_handshake_failed_limit"), 1);
	tc_close(&h[0]);
	int64_t deadline = tc_now_ms() + 2000;
	while (stat_num("tls_handshaking") > 1 && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	cr_assert_eq(stat_num("tls_handshaking"), 1, "a closed handshake gives its place back");
	struct tc_conn c;
	open_login(&c, G.tls, 5001);
	ping_ok(&c, "a full handshake in the freed place");
	tc_close(&c);
	tc_close(&h[1]);
	tc_close(&h[2]);
}

/* Python's ssl module through a relay (tests/tls_relay.py): frames both
 * ways, a session ticket from the first connection resumes the second. */
Test(tls_gateway, python_ssl_with_resumption)
{
	start(NULL);
	char out[PATH_MAX + 96], err[PATH_MAX + 96], port[16], ca[PATH_MAX + 96];
	snprintf(out, sizeof out, "%s/relay.out", G.cert_dir);
	snprintf(err, sizeof err, "%s/relay.err", G.cert_dir);
	snprintf(port, sizeof port, "%u", G.tls);
	snprintf(ca, sizeof ca, "%s", G.cert);
	char *argv[] = {"tests/tls_relay.py", port, ca, "2", NULL};
	struct tc_server relay;
	cr_assert_eq(tc_server_start_split(&relay, argv[0], argv, out, err), 0, "cannot run tests/tls_relay.py");
	unsigned rport = 0;
	for (int i = 0; i < 250 && !rport; i++) {
		char *t = tc_read_file(out, NULL);
		if (t && strchr(t, '\n'))
			rport = (unsigned)atoi(t);
		free(t);
		if (!rport)
			tc_sleep_ms(20);
	}
	cr_assert(rport, "the relay did not start");
	struct tc_conn peer;
	open_login(&peer, G.tls, 6002);
	for (int round = 0; round < 2; round++) {
		struct tc_conn c;
		cr_assert_eq(tc_connect_plain(&c, rport, 0, 2000), 0);
		login(&c, 6001);
		uint8_t buf[256];
		cr_assert_eq(tc_send_raw(&c, buf, enc_send(buf, sizeof buf, 1, 6002, "from python"), 2000), 0);
		expect_deliver(&peer, "from python", "python's message");
		cr_assert_eq(tc_send_raw(&peer, buf, enc_send(buf, sizeof buf, 2, 6001, "to python"), 2000), 0);
		expect_deliver(&c, "to python", "a message to python");
		tc_close(&c); /* the relay sends close_notify */
		cr_assert_geq(wait_stat("tls_alerts_close_notify", round + 1, 3000), round + 1);
	}
	cr_assert_eq(tc_server_wait(&relay, 5000), 0, "the relay exits after two connections");
	char *t = tc_read_file(out, NULL);
	cr_log_info("relay: %s", t ? t : "");
	cr_assert(t && strstr(t, "conn 0 reused=0 version=TLSv1.3 alpn=chat"), "first connection: %s", t);
	cr_assert(t && strstr(t, "conn 1 reused=1"), "the second connection resumed with the ticket: %s", t);
	cr_assert(t && strstr(t, "closed 1 by=client close_notify=1"), "close_notify both ways: %s", t);
	free(t);
	cr_assert_eq(stat_num("tls_resumed"), 1);
	tc_close(&peer);
}

/* SIGHUP reads the certificate files again: new connections get the new
 * certificate, connections up stay up. */
Test(tls_gateway, sighup_reloads_the_certificate)
{
	start(NULL);
	struct tc_conn old;
	open_login(&old, G.tls, 7001);
	char nd[PATH_MAX + 96], nc[PATH_MAX + 128], nk[PATH_MAX + 128];
	snprintf(nd, sizeof nd, "%s/new", G.cert_dir);
	make_cert(nd);
	snprintf(nc, sizeof nc, "%s/cert.pem", nd);
	snprintf(nk, sizeof nk, "%s/key.pem", nd);
	cr_assert_eq(rename(nk, G.key), 0);
	cr_assert_eq(rename(nc, G.cert), 0);
	rmdir(nd);
	tc_server_signal(&G.srv, SIGHUP);
	int64_t deadline = tc_now_ms() + 3000;
	while (!file_has(G.log, "SIGHUP: TLS certificate now") && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	cr_assert(file_has(G.log, "SIGHUP: TLS certificate now"), "reload not logged:\n%s", log_tail());
	cr_assert_eq(tc_tls_use(G.cert), 0); /* trust only the new one */
	struct tc_conn c;
	open_login(&c, G.tls, 7002);
	ping_ok(&c, "a connection with the new certificate");
	ping_ok(&old, "a connection from before the reload");
	/* a broken certificate file: the reload is refused, the running one stays */
	FILE *f = fopen(G.cert, "w");
	cr_assert(f);
	fputs("not a certificate\n", f);
	fclose(f);
	tc_server_signal(&G.srv, SIGHUP);
	deadline = tc_now_ms() + 3000;
	while (!file_has(G.log, "configuration refused") && tc_now_ms() < deadline)
		tc_sleep_ms(20);
	cr_assert(file_has(G.log, "configuration refused, the running one stays: TLS"), "%s", log_tail());
	struct tc_conn d;
	open_login(&d, G.tls, 7003);
	tc_close(&d);
	tc_close(&c);
	tc_close(&old);
}

/* Plain and TLS clients of one gateway talk to each other, on one thread
 * and across threads (the login moves with its TLS state). */
Test(tls_gateway, plain_and_tls_clients_together)
{
	start(NULL);
	struct tc_conn t[4], p;
	for (int i = 0; i < 4; i++)
		open_login(&t[i], G.tls, 8001 + (uint64_t)i);
	tc_tls_use(NULL);
	open_login(&p, G.plain, 8100);
	uint8_t buf[256];
	for (int i = 0; i < 4; i++) {
		char body[32];
		snprintf(body, sizeof body, "plain to %d", i);
		cr_assert_eq(tc_send_raw(&p, buf, enc_send(buf, sizeof buf, 1 + (uint64_t)i, 8001 + (uint64_t)i, body), 2000), 0);
		expect_deliver(&t[i], body, "plain to TLS");
		snprintf(body, sizeof body, "tls %d to plain", i);
		cr_assert_eq(tc_send_raw(&t[i], buf, enc_send(buf, sizeof buf, 1, 8100, body), 2000), 0);
		expect_deliver(&p, body, "TLS to plain");
	}
	cr_assert_eq(stat_num("tls_conns"), 4);
	cr_assert_eq(stat_num("tls_handshakes"), 4);
	for (int i = 0; i < 4; i++)
		tc_close(&t[i]);
	tc_close(&p);
}

/* The loadgen and the files of its run. */
struct lg_files {
	char lg[PATH_MAX + 32], target[48], out[PATH_MAX + 96], err[PATH_MAX + 96], report[PATH_MAX + 96];
};
static void lg_files(struct lg_files *L)
{
	snprintf(L->lg, sizeof L->lg, "%s/loadgen/loadgen", tc_build_dir());
	snprintf(L->target, sizeof L->target, "127.0.0.1:%u", G.tls);
	snprintf(L->out, sizeof L->out, "%s/lg.out", G.cert_dir);
	snprintf(L->err, sizeof L->err, "%s/lg.err", G.cert_dir);
	snprintf(L->report, sizeof L->report, "%s/lg.json", G.cert_dir);
}

/* The loadgen over TLS (the same connection engine as the gateway's:
 * runtime/connbuf + runtime/tls): a chat run without loss, every
 * connection a TLS handshake; and --tls without a CA is refused. */
Test(tls_gateway, loadgen_chat_over_tls)
{
	start(NULL);
	struct lg_files L;
	lg_files(&L);
	char *lg = L.lg, *target = L.target, *out = L.out, *err = L.err, *report = L.report;
	char *argv[] = {lg, "--secret-file", G.secret_path, "--targets", target, "--tls", "--tls-ca", G.cert,
			"--scenario", "chat", "--connections", "200", "--rate", "5", "--duration", "2s", "--receipts",
			"--quiet", "--report", report, NULL};
	int st = tc_run(lg, argv, out, err, 60000);
	char *o = tc_read_file(out, NULL), *j = tc_read_file(report, NULL);
	cr_assert_eq(st, 0, "loadgen --tls failed (%d):\n%s", st, o ? o : "");
	cr_assert(j && strstr(j, "\"tls\":{\"on\":true,\"resume\":false,\"handshakes\":200,\"resumed\":0,\"failed\":0"),
		  "report: %s", j);
	cr_assert(o && strstr(o, "lost 0, duplicated 0"), "%s", o);
	free(o);
	free(j);
	cr_assert_eq(stat_num("tls_handshakes"), 200);
	cr_assert_eq(stat_num("closed_tls"), 0);
	char *bad[] = {lg, "--secret-file", G.secret_path, "--targets", target, "--tls", NULL};
	cr_assert_eq(tc_run(lg, bad, out, err, 10000), 2, "--tls without --tls-ca or --tls-insecure");
	cr_assert(file_has(err, "--tls needs --tls-ca"));
	char *bad2[] = {lg, "--secret-file", G.secret_path, "--targets", target, "--tls-resume", NULL};
	cr_assert_eq(tc_run(lg, bad2, out, err, 10000), 2, "--tls-resume without --tls");
	cr_assert(file_has(err, "go with --tls"));
}

/* A number from the loadgen's JSON report: "key":N after `section`. */
static long long report_num(const char *j, const char *section, const char *key)
{
	const char *s = j ? strstr(j, section) : NULL;
	char k[64];
	snprintf(k, sizeof k, "\"%s\":", key);
	const char *p = s ? strstr(s, k) : NULL;
	cr_assert(p, "no %s in %s of the report: %s", key, section, j ? j : "(none)");
	return strtoll(p + strlen(k), NULL, 10);
}

/* loadgen --tls-resume: with churn, the reconnects resume with the
 * ticket the thread took (the gateway counts the same resumptions), and
 * nothing is lost. */
Test(tls_gateway, loadgen_reconnects_resume)
{
	start(NULL);
	struct lg_files L;
	lg_files(&L);
	char *lg = L.lg, *target = L.target, *out = L.out, *err = L.err, *report = L.report;
	char *argv[] = {lg, "--secret-file", G.secret_path, "--targets", target, "--tls", "--tls-ca", G.cert,
			"--tls-resume", "--threads", "2", "--scenario", "churn", "--connections", "40", "--churn-rate",
			"100", "--rate", "0", "--duration", "3s", "--quiet", "--report", report, NULL};
	int st = tc_run(lg, argv, out, err, 60000);
	char *o = tc_read_file(out, NULL), *j = tc_read_file(report, NULL);
	cr_assert_eq(st, 0, "loadgen --tls --tls-resume failed (%d):\n%s", st, o ? o : "");
	long long hs = report_num(j, "\"tls\"", "handshakes"), res = report_num(j, "\"tls\"", "resumed");
	cr_assert_eq(report_num(j, "\"tls\"", "failed"), 0, "%s", j);
	cr_assert(strstr(j, "\"resume\":true"), "%s", j);
	cr_assert_gt(hs, 100, "churn reconnected: %s", j);
	/* the first 40 come before any ticket; after them, every reconnect
	 * but the few a donor waits on resumes */
	cr_assert_geq(res, hs - 40 - 10, "resumed %lld of %lld: %s", res, hs, j);
	cr_assert_eq(stat_num("tls_resumed"), res, "the gateway counts as many resumed");
	cr_assert_eq(stat_num("tls_handshakes"), hs);
	cr_assert_eq(stat_num("closed_tls"), 0);
	free(o);
	free(j);
}
