/* bench_tls.c: the TLS engine (runtime/tls.c) on one core, server side:
 * full and resumed TLS 1.3 handshakes per second (the server's CPU time
 * only; the client is libssl in the same thread, over memory), and the
 * record layer's cost per call for small and large records, per suite,
 * on a busy connection (its keys in the thread's cache) and a cold one.
 * Usage: bench_tls CERT KEY [SECONDS_PER_FIGURE]. Prints one line per
 * figure. */
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/tls.h"

static double cpu(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double wall(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint8_t buf[1 << 17];

/* One handshake: libssl client <-> our server. Returns the server's CPU
 * seconds, or -1. */
static double handshake(SSL_CTX *cctx, SSL_SESSION **sess, struct tls_thread *th, const struct tls_ctx *sctx,
			int *resumed)
{
	SSL *c = SSL_new(cctx);
	BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(in, -1);
	BIO_set_mem_eof_return(out, -1);
	SSL_set_bio(c, in, out);
	SSL_set_connect_state(c);
	if (*sess)
		SSL_set_session(c, *sess);
	struct tls_conn tc;
	double t = 0, t0 = cpu();
	if (tls_conn_start(th, &tc, sctx) != 0)
		return -1;
	t += cpu() - t0;
	int done = 0;
	for (int r = 0; r < 8 && !done; r++) {
		SSL_do_handshake(c);
		int n = BIO_read(out, buf, sizeof buf);
		if (n <= 0)
			break;
		size_t used, outn;
		const uint8_t *o;
		unsigned why;
		t0 = cpu();
		int h = tls_handshake(th, &tc, buf, (size_t)n, &used, &o, &outn, &why);
		t += cpu() - t0;
		if (outn)
			BIO_write(in, o, (int)outn);
		if (h == TLS_HS_FAIL)
			break;
		done = h == TLS_HS_DONE;
	}
	*resumed = (tc.flags & TLS_F_RESUMED) != 0;
	char x[8];
	SSL_read(c, x, sizeof x); /* the ticket */
	if (!*sess) {
		*sess = SSL_get1_session(c);
	}
	SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c);
	t0 = cpu();
	tls_conn_free(&tc);
	t += cpu() - t0;
	return done ? t : -1;
}

int main(int argc, char **argv)
{
	if (argc < 3 || !strcmp(argv[1], "--help")) {
		fprintf(stderr, "usage: bench_tls CERT KEY [SECONDS_PER_FIGURE]\n");
		return argc < 3 ? 2 : 0;
	}
	double secs = argc > 3 ? atof(argv[3]) : 2.0;
	char err[512];
	struct tls_server_opts so = {.cert_file = argv[1], .key_file = argv[2], .ticket_period_s = 3600};
	struct tls_ctx *sctx = tls_server_new(&so, err, sizeof err);
	struct tls_thread *th = tls_thread_new(err, sizeof err);
	if (!sctx || !th) {
		fprintf(stderr, "bench_tls: %s\n", err);
		return 1;
	}
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x04" TLS_ALPN, 5);
	for (int resume = 0; resume < 2; resume++) {
		SSL_SESSION *sess = NULL;
		int res;
		if (resume && handshake(cctx, &sess, th, sctx, &res) < 0)
			return 1;
		double t = 0, w0 = wall();
		long n = 0, reused = 0;
		while (wall() - w0 < secs) {
			SSL_SESSION *s = sess;
			double c = handshake(cctx, &s, th, sctx, &res);
			if (c < 0) {
				fprintf(stderr, "bench_tls: a handshake failed\n");
				return 1;
			}
			if (!resume)
				SSL_SESSION_free(s);
			t += c;
			n++;
			reused += res;
		}
		printf("%-8s handshakes (P-256 certificate, X25519): %6.0f per second of server CPU (%.0f us each; %ld of %ld resumed)\n",
		       resume ? "resumed" : "full", (double)n / t, t / (double)n * 1e6, reused, n);
		SSL_SESSION_free(sess);
	}
	static uint8_t plain[TLS_MAX_PLAIN], rec[TLS_MAX_PLAIN + 256];
	size_t sizes[] = {64, 1024, TLS_MAX_PLAIN};
	for (unsigned suite = 1; suite <= 3; suite++)
		for (unsigned si = 0; si < 4; si++) {
			/* si 3: 64 bytes on a connection seen for the first time (its
			 * keys not in the thread's cache: derived) */
			int cold = si == 3;
			size_t size = sizes[cold ? 0 : si];
			struct tls_conn a = {0}, b = {0};
			a.state = b.state = TLS_S_OPEN;
			a.suite = b.suite = (uint8_t)suite;
			memset(a.tx_secret, 7, sizeof a.tx_secret);
			memcpy(b.rx_secret, a.tx_secret, sizeof b.rx_secret);
			long n = 0;
			double c0 = cpu(), w0 = wall();
			while (wall() - w0 < secs / 4) {
				for (int k = 0; k < 100; k++) {
					if (cold) { /* another secret, the same cache slot */
						a.tx_secret[5]++;
						b.rx_secret[5]++;
					}
					size_t m = tls_seal(th, &a, plain, size, rec);
					const uint8_t *p;
					size_t pn;
					if (!m || tls_open(th, &b, rec, m, &p, &pn) != 0 || pn != size) {
						fprintf(stderr, "bench_tls: record round trip failed\n");
						return 1;
					}
				}
				n += 100;
			}
			double us = (cpu() - c0) / (double)n * 1e6;
			printf("%-28s one %5zu-byte record sealed + opened, %s: %6.2f us (%.0f MB/s)\n",
			       tls_suite_name(suite), size, cold ? "keys derived (a cold connection)" : "keys cached (a busy one)",
			       us, (double)size / us);
		}
	SSL_CTX_free(cctx);
	tls_thread_free(th);
	tls_ctx_free(sctx);
	return 0;
}
