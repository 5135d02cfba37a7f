/* test_tls.c: runtime/tls against libssl's own TLS 1.3 (a client whose
 * record layer is OpenSSL's), in memory: handshakes for the three suites,
 * records both ways, records cut at every byte, bad tags and lengths,
 * KeyUpdate both ways, alerts, resumption with a ticket, and our own client
 * against our own server. */
#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/carry.h"
#include "runtime/tls.h"

static char dir[] = "/tmp/test_tls.XXXXXX", cert[256], key[256];

static void make_cert(void)
{
	cr_assert(mkdtemp(dir));
	snprintf(cert, sizeof cert, "%s/cert.pem", dir);
	snprintf(key, sizeof key, "%s/key.pem", dir);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "tools/tls-selfsigned %s 2 >/dev/null", dir); /* run from the repository root */
	cr_assert_eq(system(cmd), 0, "tools/tls-selfsigned failed");
}

static void rm_cert(void)
{
	unlink(cert);
	unlink(key);
	rmdir(dir);
}

TestSuite(tls, .init = make_cert, .fini = rm_cert);

/* An OpenSSL client over memory BIOs. */
struct peer {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in, *out; /* in: what we feed it; out: what it wrote */
};

static void peer_new(struct peer *p, const char *suites, const char *alpn, int max_version)
{
	p->ctx = SSL_CTX_new(TLS_client_method());
	cr_assert(p->ctx);
	SSL_CTX_set_min_proto_version(p->ctx, max_version == TLS1_2_VERSION ? TLS1_2_VERSION : TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(p->ctx, max_version);
	if (suites)
		cr_assert(SSL_CTX_set_ciphersuites(p->ctx, suites));
	if (alpn)
		SSL_CTX_set_alpn_protos(p->ctx, (const unsigned char *)alpn, (unsigned)strlen(alpn));
	/* no client cache: freeing the context would flush it, which marks its
	 * sessions not resumable */
	SSL_CTX_set_session_cache_mode(p->ctx, SSL_SESS_CACHE_OFF);
	p->ssl = SSL_new(p->ctx);
	p->in = BIO_new(BIO_s_mem());
	p->out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(p->in, -1);
	BIO_set_mem_eof_return(p->out, -1);
	SSL_set_bio(p->ssl, p->in, p->out);
	SSL_set_connect_state(p->ssl);
}

static void peer_free(struct peer *p)
{
	SSL_free(p->ssl);
	SSL_CTX_free(p->ctx);
}

/* Take what the peer wrote. */
static size_t peer_take(struct peer *p, uint8_t *buf, size_t cap)
{
	int n = BIO_read(p->out, buf, (int)cap);
	return n > 0 ? (size_t)n : 0;
}

static void peer_give(struct peer *p, const uint8_t *b, size_t n)
{
	if (n)
		cr_assert_eq(BIO_write(p->in, b, (int)n), (int)n);
}

struct srv {
	struct tls_ctx *ctx;
	struct tls_thread *th;
	struct tls_conn tc;
};

static void srv_new(struct srv *s, int64_t ticket_period)
{
	char err[512];
	struct tls_server_opts o = {.cert_file = cert, .key_file = key, .ticket_period_s = ticket_period};
	s->ctx = tls_server_new(&o, err, sizeof err);
	cr_assert(s->ctx, "%s", err);
	s->th = tls_thread_new(err, sizeof err);
	cr_assert(s->th, "%s", err);
	memset(&s->tc, 0, sizeof s->tc);
	cr_assert_eq(tls_conn_start(s->th, &s->tc, s->ctx), 0);
}

static void srv_free(struct srv *s)
{
	tls_conn_free(&s->tc);
	tls_thread_free(s->th);
	tls_ctx_free(s->ctx);
}

static uint8_t buf[1 << 20];

/* Run the handshake to its end. Returns TLS_HS_DONE or TLS_HS_FAIL; any
 * record bytes after the client's Finished are fed to tls_open into
 * (*extra, *extran). */
static int handshake(struct srv *s, struct peer *p, unsigned *why)
{
	for (int round = 0; round < 10; round++) {
		int r = SSL_do_handshake(p->ssl);
		(void)r;
		size_t n = peer_take(p, buf, sizeof buf);
		if (!n)
			return -2; /* the peer gave up */
		size_t used;
		const uint8_t *out;
		size_t outn;
		int h = tls_handshake(s->th, &s->tc, buf, n, &used, &out, &outn, why);
		peer_give(p, out, outn);
		if (h == TLS_HS_FAIL)
			return h;
		if (h == TLS_HS_DONE) {
			cr_assert_eq(used, n, "bytes after the client's Finished");
			return h;
		}
	}
	return -3;
}

/* The client's handshake finishes once it has read our flight. */
static void peer_settle(struct peer *p)
{
	uint8_t b[16];
	int r = SSL_read(p->ssl, b, sizeof b); /* takes the tickets too */
	cr_assert(r <= 0);
	cr_assert_eq(SSL_get_error(p->ssl, r), SSL_ERROR_WANT_READ);
}

/* Client -> server: SSL_write each piece, then tls_open all of it. */
static size_t to_server(struct srv *s, struct peer *p, const char *msg, uint8_t *plain, int *ret)
{
	cr_assert_eq(SSL_write(p->ssl, msg, (int)strlen(msg)), (int)strlen(msg));
	size_t n = peer_take(p, buf, sizeof buf);
	const uint8_t *pl;
	size_t pn;
	*ret = tls_open(s->th, &s->tc, buf, n, &pl, &pn);
	memcpy(plain, pl, pn);
	return pn;
}

/* Server -> client: seal, give, SSL_read. */
static void to_client(struct srv *s, struct peer *p, const char *msg)
{
	static uint8_t sealed[1 << 17];
	size_t n = strlen(msg);
	cr_assert_leq(tls_seal_bound(&s->tc, n), sizeof sealed);
	size_t m = tls_seal(s->th, &s->tc, (const uint8_t *)msg, n, sealed);
	cr_assert_gt(m, 0);
	peer_give(p, sealed, m);
	char got[1 << 16];
	size_t have = 0;
	while (have < n) {
		int r = SSL_read(p->ssl, got + have, (int)(sizeof got - have));
		cr_assert_gt(r, 0, "SSL_read: %d", SSL_get_error(p->ssl, r));
		have += (size_t)r;
	}
	cr_assert_eq(have, n);
	cr_assert(memcmp(got, msg, n) == 0);
}

static void round_trip(const char *suite, unsigned want_suite)
{
	struct srv s;
	struct peer p;
	unsigned why;
	srv_new(&s, 3600);
	peer_new(&p, suite, "\x04" "chat", TLS1_3_VERSION);
	cr_assert_eq(handshake(&s, &p, &why), TLS_HS_DONE);
	if (want_suite)
		cr_assert_eq(s.tc.suite, want_suite, "%s", tls_suite_name(s.tc.suite));
	else
		cr_assert(s.tc.suite >= 1 && s.tc.suite <= 3);
	cr_assert_eq(s.tc.state, TLS_S_OPEN);
	cr_assert_eq(s.tc.tx_seq, 1, "one session ticket went out under the application key");
	peer_settle(&p);
	uint8_t plain[4096];
	int ret;
	size_t n = to_server(&s, &p, "hello gateway", plain, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_eq(n, 13);
	cr_assert(memcmp(plain, "hello gateway", 13) == 0);
	to_client(&s, &p, "hello client");
	to_client(&s, &p, "and again");
	n = to_server(&s, &p, "second", plain, &ret);
	cr_assert_eq(n, 6);
	peer_free(&p);
	srv_free(&s);
}

Test(tls, aes128_gcm) { round_trip("TLS_AES_128_GCM_SHA256", 1); }
Test(tls, aes256_gcm) { round_trip("TLS_AES_256_GCM_SHA384", 2); }
Test(tls, chacha20_poly1305) { round_trip("TLS_CHACHA20_POLY1305_SHA256", 3); }
Test(tls, no_alpn_is_accepted) { round_trip(NULL, 0); }

Test(tls, state_is_128_bytes) { cr_assert_eq(sizeof(struct tls_conn), 128); }

static void ready(struct srv *s, struct peer *p, const char *suite)
{
	unsigned why;
	srv_new(s, 3600);
	peer_new(p, suite, "\x04" "chat", TLS1_3_VERSION);
	cr_assert_eq(handshake(s, p, &why), TLS_HS_DONE);
	peer_settle(p);
}

Test(tls, records_cut_at_every_byte)
{
	const char *suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"};
	for (unsigned si = 0; si < 2; si++) {
		struct srv s;
		struct peer p;
		ready(&s, &p, suites[si]);
		/* three records: 5 bytes, 300 bytes, 5 bytes */
		static uint8_t wire[4096];
		char big[301];
		memset(big, 'x', 300);
		big[300] = 0;
		const char *msgs[] = {"one..", big, "three"};
		size_t wn = 0;
		for (unsigned i = 0; i < 3; i++) {
			SSL_write(p.ssl, msgs[i], (int)strlen(msgs[i]));
			wn += peer_take(&p, wire + wn, sizeof wire - wn);
		}
		uint64_t seq0 = s.tc.rx_seq;
		for (size_t cut = 0; cut <= wn; cut++) {
			/* every split of the same three records, as fresh copies of the state */
			struct tls_conn save = s.tc;
			static uint8_t a[4096], b[4096], got[4096];
			size_t gn = 0;
			memcpy(a, wire, cut);
			memcpy(b, wire + cut, wn - cut);
			const uint8_t *pl;
			size_t pn;
			cr_assert_eq(tls_open(s.th, &s.tc, a, cut, &pl, &pn), 0);
			memcpy(got, pl, pn);
			gn = pn;
			cr_assert_eq(tls_open(s.th, &s.tc, b, wn - cut, &pl, &pn), 0, "cut at %zu", cut);
			memcpy(got + gn, pl, pn);
			gn += pn;
			cr_assert_eq(gn, 310, "cut at %zu: %zu bytes", cut, gn);
			cr_assert(memcmp(got, "one..", 5) == 0 && got[5] == 'x' && memcmp(got + 305, "three", 5) == 0);
			cr_assert_eq(s.tc.rx_seq, seq0 + 3);
			cr_assert_null(s.tc.part);
			s.tc = save;
		}
		/* and one byte at a time */
		static uint8_t got[4096];
		size_t gn = 0;
		for (size_t i = 0; i < wn; i++) {
			uint8_t one = wire[i];
			const uint8_t *pl;
			size_t pn;
			cr_assert_eq(tls_open(s.th, &s.tc, &one, 1, &pl, &pn), 0);
			memcpy(got + gn, pl, pn);
			gn += pn;
		}
		cr_assert_eq(gn, 310);
		peer_free(&p);
		srv_free(&s);
	}
}

Test(tls, flipped_tag_bit_is_bad_record_mac)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	SSL_write(p.ssl, "good", 4);
	SSL_write(p.ssl, "evil", 4);
	size_t n = peer_take(&p, buf, sizeof buf);
	buf[n - 1] ^= 0x01; /* the last tag byte of the second record */
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(s.th, &s.tc, buf, n, &pl, &pn), -TLS_A_BAD_RECORD_MAC);
	cr_assert_eq(pn, 4, "the good record before it is handed on");
	cr_assert(memcmp(pl, "good", 4) == 0);
	uint8_t a[64];
	size_t an = tls_alert(s.th, &s.tc, TLS_A_BAD_RECORD_MAC, a);
	cr_assert_eq(an, TLS_OVERHEAD + 2);
	cr_assert_eq(tls_alert(s.th, &s.tc, TLS_A_CLOSE_NOTIFY, a), 0, "one alert, then nothing");
	peer_give(&p, a, an);
	uint8_t b[16];
	cr_assert_leq(SSL_read(p.ssl, b, sizeof b), 0);
	unsigned long e = ERR_get_error();
	cr_assert_str_eq(ERR_reason_error_string(e), "sslv3 alert bad record mac");
	ERR_clear_error();
	peer_free(&p);
	srv_free(&s);
}

Test(tls, bad_lengths_and_types)
{
	struct {
		uint8_t rec[8];
		size_t n;
		int want;
	} cases[] = {
		{{23, 3, 3, 0x41, 0x01}, 5, -TLS_A_RECORD_OVERFLOW},   /* 16641 bytes of ciphertext */
		{{23, 3, 3, 0, 3, 1, 2, 3}, 8, -TLS_A_DECODE_ERROR},    /* shorter than a tag */
		{{22, 3, 3, 0, 1, 1}, 6, -TLS_A_UNEXPECTED_MESSAGE},    /* a plaintext handshake record */
		{{20, 3, 3, 0, 1, 1}, 6, -TLS_A_UNEXPECTED_MESSAGE},    /* change_cipher_spec after the handshake */
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct srv s;
		struct peer p;
		ready(&s, &p, NULL);
		const uint8_t *pl;
		size_t pn;
		memcpy(buf, cases[i].rec, cases[i].n);
		cr_assert_eq(tls_open(s.th, &s.tc, buf, cases[i].n, &pl, &pn), cases[i].want, "case %u", i);
		cr_assert_eq(s.tc.state, TLS_S_CLOSED);
		peer_free(&p);
		srv_free(&s);
	}
}

Test(tls, client_key_update_is_answered)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, "TLS_AES_256_GCM_SHA384");
	cr_assert_eq(SSL_key_update(p.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
	uint8_t plain[256];
	int ret;
	size_t n = to_server(&s, &p, "after update", plain, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_eq(n, 12);
	cr_assert_eq(s.tc.rx_seq, 1, "the new key's first record");
	cr_assert(tls_wants_write(&s.tc), "update_requested: ours must follow");
	/* our answer goes out before the next data; the client reads through it */
	to_client(&s, &p, "data under our new key");
	cr_assert_not(tls_wants_write(&s.tc));
	cr_assert_eq(s.tc.tx_seq, 1);
	n = to_server(&s, &p, "more", plain, &ret);
	cr_assert_eq(n, 4);
	peer_free(&p);
	srv_free(&s);
}

Test(tls, key_update_not_requested_and_ours)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	cr_assert_eq(SSL_key_update(p.ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
	uint8_t plain[256];
	int ret;
	to_server(&s, &p, "x", plain, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_not(tls_wants_write(&s.tc));
	/* ours, asking the peer: it answers with its own */
	tls_key_update(&s.tc, 1);
	to_client(&s, &p, "rekeyed");
	size_t n = to_server(&s, &p, "answered", plain, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_eq(n, 8);
	cr_assert_eq(s.tc.rx_seq, 1, "the peer's KeyUpdate moved our receive key");
	peer_free(&p);
	srv_free(&s);
}

Test(tls, send_key_updates_before_the_record_limit)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	/* pretend 2^23 - 1 records went out; the client does not count them,
	 * so this reads as a gap in the sequence to it: check our side only */
	s.tc.tx_seq = TLS_TX_RECORDS_PER_KEY - 1;
	uint8_t sealed[256];
	size_t m = tls_seal(s.th, &s.tc, (const uint8_t *)"x", 1, sealed);
	cr_assert_eq(m, 2 * TLS_OVERHEAD + 5 + 1, "a KeyUpdate record, then the data");
	cr_assert_eq(s.tc.tx_seq, 1);
	peer_free(&p);
	srv_free(&s);
}

Test(tls, close_notify_both_ways)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	uint8_t a[64];
	size_t an = tls_alert(s.th, &s.tc, TLS_A_CLOSE_NOTIFY, a);
	cr_assert_gt(an, 0);
	peer_give(&p, a, an);
	uint8_t b[16];
	int r = SSL_read(p.ssl, b, sizeof b);
	cr_assert_eq(SSL_get_error(p.ssl, r), SSL_ERROR_ZERO_RETURN);
	cr_assert_eq(SSL_shutdown(p.ssl), 1);
	size_t n = peer_take(&p, buf, sizeof buf);
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(s.th, &s.tc, buf, n, &pl, &pn), 1);
	peer_free(&p);
	srv_free(&s);
}

/* The peer's close_notify closes its direction only: what we still had to
 * say goes out, then our close_notify (the gateway's answer to a client
 * that sent a request and closed). */
Test(tls, answer_after_the_peers_close_notify)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	cr_assert_eq(SSL_write(p.ssl, "last", 4), 4);
	cr_assert_eq(SSL_shutdown(p.ssl), 0, "our close_notify sent, the server's awaited");
	size_t n = peer_take(&p, buf, sizeof buf);
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(s.th, &s.tc, buf, n, &pl, &pn), 1);
	cr_assert_eq(pn, 4);
	cr_assert(tls_can_send(&s.tc));
	to_client(&s, &p, "answer");
	uint8_t a[64];
	size_t an = tls_alert(s.th, &s.tc, TLS_A_CLOSE_NOTIFY, a);
	cr_assert_gt(an, 0);
	cr_assert_not(tls_can_send(&s.tc));
	cr_assert_eq(tls_seal(s.th, &s.tc, (const uint8_t *)"x", 1, buf), 0, "nothing after our close_notify");
	peer_give(&p, a, an);
	cr_assert_eq(SSL_shutdown(p.ssl), 1, "the client saw our close_notify");
	peer_free(&p);
	srv_free(&s);
}

Test(tls, peer_fatal_alert)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	/* a record the client cannot open makes it send bad_record_mac */
	uint8_t sealed[256];
	size_t m = tls_seal(s.th, &s.tc, (const uint8_t *)"zz", 2, sealed);
	sealed[m - 1] ^= 1;
	peer_give(&p, sealed, m);
	uint8_t b[16];
	cr_assert_leq(SSL_read(p.ssl, b, sizeof b), 0);
	ERR_clear_error();
	size_t n = peer_take(&p, buf, sizeof buf);
	cr_assert_gt(n, 0);
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(s.th, &s.tc, buf, n, &pl, &pn), 2);
	peer_free(&p);
	srv_free(&s);
}

/* A client the server must refuse, for the reason named. */
static void expect_hs_fail(const char *alpn, int max_version, unsigned want)
{
	struct srv s;
	struct peer p;
	unsigned why;
	srv_new(&s, 0);
	peer_new(&p, NULL, alpn, max_version);
	cr_assert_eq(handshake(&s, &p, &why), TLS_HS_FAIL);
	cr_assert_eq(why, want, "%s", tls_hs_fail_name(why));
	peer_free(&p);
	srv_free(&s);
}

Test(tls, wrong_alpn_fails) { expect_hs_fail("\x02h2", TLS1_3_VERSION, TLS_HSF_alpn); }
Test(tls, tls12_fails) { expect_hs_fail(NULL, TLS1_2_VERSION, TLS_HSF_version); }

Test(tls, garbage_fails)
{
	struct srv s;
	srv_new(&s, 0);
	const char g[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	size_t used, outn;
	const uint8_t *out;
	unsigned why;
	cr_assert_eq(tls_handshake(s.th, &s.tc, (const uint8_t *)g, sizeof g - 1, &used, &out, &outn, &why), TLS_HS_FAIL);
	cr_assert_eq(why, TLS_HSF_protocol);
	srv_free(&s);
}

/* Free a peer whose session is to be resumed: a connection freed without
 * a shutdown marks its session not resumable (libssl's "bad session"). */
static void peer_free_keep_session(struct peer *p)
{
	SSL_set_shutdown(p->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	peer_free(p);
}

Test(tls, resumption_with_a_ticket)
{
	struct srv s;
	struct peer p;
	ready(&s, &p, NULL);
	SSL_SESSION *sess = SSL_get1_session(p.ssl);
	cr_assert(sess && SSL_SESSION_is_resumable(sess));
	cr_assert_not(s.tc.flags & TLS_F_RESUMED);
	peer_free_keep_session(&p);
	/* a second connection, on another thread's state: the ticket key is
	 * derived from the context's secret and the period, not stored */
	char err[256];
	struct srv s2 = {.ctx = s.ctx, .th = tls_thread_new(err, sizeof err)};
	cr_assert(s2.th, "%s", err);
	cr_assert_eq(tls_conn_start(s2.th, &s2.tc, s.ctx), 0);
	peer_new(&p, NULL, "\x04" "chat", TLS1_3_VERSION);
	cr_assert_eq(SSL_set_session(p.ssl, sess), 1);
	unsigned why;
	cr_assert_eq(handshake(&s2, &p, &why), TLS_HS_DONE);
	cr_assert(s2.tc.flags & TLS_F_RESUMED);
	cr_assert(SSL_session_reused(p.ssl));
	peer_settle(&p);
	uint8_t plain[64];
	int ret;
	cr_assert_eq(to_server(&s2, &p, "resumed", plain, &ret), 7);
	to_client(&s2, &p, "yes");
	peer_free_keep_session(&p);
	tls_conn_free(&s2.tc);
	tls_thread_free(s2.th);
	/* another server (another ticket secret) does not take it: a full handshake */
	struct srv s3;
	srv_new(&s3, 3600);
	peer_new(&p, NULL, "\x04" "chat", TLS1_3_VERSION);
	SSL_set_session(p.ssl, sess);
	cr_assert_eq(handshake(&s3, &p, &why), TLS_HS_DONE);
	cr_assert_not(s3.tc.flags & TLS_F_RESUMED);
	cr_assert_not(SSL_session_reused(p.ssl));
	peer_free(&p);
	srv_free(&s3);
	SSL_SESSION_free(sess);
	srv_free(&s);
}

/* A reload frees the old context while handshakes begun on it go on: the
 * ticket callback at their end still reads it (use after free under ASan
 * before the context lived as long as its SSL_CTX). */
Test(tls, context_freed_during_a_handshake)
{
	struct srv s;
	struct peer p;
	srv_new(&s, 3600);
	peer_new(&p, NULL, "\x04" "chat", TLS1_3_VERSION);
	SSL_do_handshake(p.ssl);
	size_t n = peer_take(&p, buf, sizeof buf), used, outn;
	const uint8_t *out;
	unsigned why;
	cr_assert_eq(tls_handshake(s.th, &s.tc, buf, n, &used, &out, &outn, &why), TLS_HS_MORE);
	peer_give(&p, out, outn);
	tls_ctx_free(s.ctx);
	s.ctx = NULL;
	SSL_do_handshake(p.ssl);
	n = peer_take(&p, buf, sizeof buf);
	cr_assert_eq(tls_handshake(s.th, &s.tc, buf, n, &used, &out, &outn, &why), TLS_HS_DONE);
	cr_assert_eq(s.tc.tx_seq, 1, "the ticket was made with the freed context's key");
	peer_give(&p, out, outn);
	peer_settle(&p);
	SSL_SESSION *sess = SSL_get1_session(p.ssl);
	cr_assert(SSL_SESSION_is_resumable(sess));
	SSL_SESSION_free(sess);
	peer_free(&p);
	srv_free(&s);
}

Test(tls, no_tickets_when_the_period_is_0)
{
	struct srv s;
	struct peer p;
	unsigned why;
	srv_new(&s, 0);
	peer_new(&p, NULL, "\x04" "chat", TLS1_3_VERSION);
	cr_assert_eq(handshake(&s, &p, &why), TLS_HS_DONE);
	cr_assert_eq(s.tc.tx_seq, 0, "no ticket record");
	peer_settle(&p);
	SSL_SESSION *sess = SSL_get1_session(p.ssl);
	cr_assert_not(SSL_SESSION_is_resumable(sess));
	SSL_SESSION_free(sess);
	peer_free(&p);
	srv_free(&s);
}

/* Our client's handshake with our server (s->tc started), to its end.
 * What the server wrote last (its ticket, if any) is left in s2c. */
static uint8_t c2s[65536], s2c[65536];
static size_t ours_handshake(struct srv *s, struct tls_thread *cth, struct tls_conn *cc, const struct tls_ctx *cctx)
{
	size_t used, outn;
	const uint8_t *out;
	unsigned why;
	size_t c2sn = 0, s2cn = 0;
	cr_assert_eq(tls_conn_start(cth, cc, cctx), 0);
	cr_assert_eq(tls_handshake(cth, cc, NULL, 0, &used, &out, &outn, &why), TLS_HS_MORE);
	memcpy(c2s, out, outn);
	c2sn = outn;
	int sdone = 0, cdone = 0;
	for (int round = 0; round < 6 && !(sdone && cdone); round++) {
		if (c2sn && !sdone) {
			int h = tls_handshake(s->th, &s->tc, c2s, c2sn, &used, &out, &outn, &why);
			cr_assert_neq(h, TLS_HS_FAIL, "%s", tls_hs_fail_name(why));
			memcpy(s2c, out, outn);
			s2cn = outn;
			c2sn = 0;
			sdone = h == TLS_HS_DONE;
		}
		if (s2cn && !cdone) {
			int h = tls_handshake(cth, cc, s2c, s2cn, &used, &out, &outn, &why);
			cr_assert_neq(h, TLS_HS_FAIL, "%s", tls_hs_fail_name(why));
			memcpy(c2s, out, outn);
			c2sn = outn;
			cdone = h == TLS_HS_DONE;
			cr_assert_eq(used, s2cn);
			s2cn = 0;
		}
	}
	cr_assert(sdone && cdone);
	return s2cn;
}

static struct tls_thread *new_thread(void)
{
	char err[512];
	struct tls_thread *th = tls_thread_new(err, sizeof err);
	cr_assert(th, "%s", err);
	return th;
}

static struct tls_ctx *our_client(int resume)
{
	char err[512];
	struct tls_client_opts co = {.ca_file = cert, .server_name = "localhost", .resume = resume};
	struct tls_ctx *cctx = tls_client_new(&co, err, sizeof err);
	cr_assert(cctx, "%s", err);
	return cctx;
}

/* Data both ways on an open pair. */
static void both_ways(struct srv *s, struct tls_thread *cth, struct tls_conn *cc)
{
	const uint8_t *pl;
	size_t pn;
	size_t m = tls_seal(s->th, &s->tc, (const uint8_t *)"down", 4, s2c);
	cr_assert_eq(tls_open(cth, cc, s2c, m, &pl, &pn), 0);
	cr_assert(pn == 4 && memcmp(pl, "down", 4) == 0);
	m = tls_seal(cth, cc, (const uint8_t *)"up", 2, c2s);
	cr_assert_eq(tls_open(s->th, &s->tc, c2s, m, &pl, &pn), 0);
	cr_assert(pn == 2 && memcmp(pl, "up", 2) == 0);
}

Test(tls, our_client_and_our_server)
{
	struct srv s;
	srv_new(&s, 3600);
	struct tls_ctx *cctx = our_client(0);
	struct tls_thread *cth = new_thread();
	struct tls_conn cc = {0};
	size_t s2cn = ours_handshake(&s, cth, &cc, cctx);
	cr_assert_eq(s.tc.tx_seq, 1);
	cr_assert_gt(s2cn, 0, "the server's last call wrote its session ticket");
	cr_assert_not(cc.flags & TLS_F_TICKET, "no resumption asked: no donor");
	/* the client's record layer takes the ticket (and drops it) */
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(cth, &cc, s2c, s2cn, &pl, &pn), 0);
	cr_assert_eq(pn, 0);
	cr_assert_eq(cc.rx_seq, 1);
	both_ways(&s, cth, &cc);
	tls_conn_free(&cc);
	tls_thread_free(cth);
	tls_ctx_free(cctx);
	srv_free(&s);
}

/* The server's ticket and a data record after it reach the client cut at
 * `cut` (n: no cut). The ticket must be taken and the data read. */
static void take_ticket(struct srv *s, struct tls_thread *cth, struct tls_conn *cc, size_t s2cn, size_t cut)
{
	size_t m = tls_seal(s->th, &s->tc, (const uint8_t *)"hello", 5, s2c + s2cn);
	cr_assert_gt(m, 0);
	size_t n = s2cn + m;
	if (cut > n)
		cut = n;
	uint8_t got[16];
	size_t gn = 0;
	const uint8_t *pl;
	size_t pn;
	cr_assert_eq(tls_open(cth, cc, s2c, cut, &pl, &pn), 0, "cut %zu", cut);
	memcpy(got, pl, pn);
	gn = pn;
	if (cut < n) {
		cr_assert_eq(tls_open(cth, cc, s2c + cut, n - cut, &pl, &pn), 0, "cut %zu", cut);
		memcpy(got + gn, pl, pn);
		gn += pn;
	}
	cr_assert(gn == 5 && memcmp(got, "hello", 5) == 0, "cut %zu", cut);
	cr_assert_not(cc->flags & TLS_F_TICKET, "cut %zu: the ticket was taken", cut);
	cr_assert_eq(cc->rx_seq, 2);
}

Test(tls, our_client_resumes_with_a_ticket_it_took)
{
	struct srv s;
	srv_new(&s, 3600);
	struct tls_ctx *cctx = our_client(1);
	struct tls_thread *cth = new_thread();
	struct tls_conn cc = {0};
	size_t s2cn = ours_handshake(&s, cth, &cc, cctx);
	cr_assert_not(cc.flags & TLS_F_RESUMED);
	cr_assert(cc.flags & TLS_F_TICKET, "the thread has no session: this connection is its donor");
	take_ticket(&s, cth, &cc, s2cn, SIZE_MAX);
	both_ways(&s, cth, &cc);
	tls_conn_free(&cc);
	tls_conn_free(&s.tc);
	/* the next connections of the thread resume, and need no donor */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tls_conn_start(s.th, &s.tc, s.ctx), 0);
		s2cn = ours_handshake(&s, cth, &cc, cctx);
		cr_assert(cc.flags & TLS_F_RESUMED, "connection %d", i);
		cr_assert(s.tc.flags & TLS_F_RESUMED, "connection %d", i);
		cr_assert_not(cc.flags & TLS_F_TICKET);
		const uint8_t *pl;
		size_t pn;
		cr_assert_eq(tls_open(cth, &cc, s2c, s2cn, &pl, &pn), 0, "its new ticket is dropped");
		cr_assert_eq(pn, 0);
		both_ways(&s, cth, &cc);
		tls_conn_free(&cc);
		tls_conn_free(&s.tc);
	}
	/* a server that cannot open the ticket (another ticket secret): a full
	 * handshake, the session is dropped, and this connection takes the
	 * new server's ticket */
	struct srv s2;
	srv_new(&s2, 3600);
	s2cn = ours_handshake(&s2, cth, &cc, cctx);
	cr_assert_not(cc.flags & TLS_F_RESUMED);
	cr_assert(cc.flags & TLS_F_TICKET);
	take_ticket(&s2, cth, &cc, s2cn, SIZE_MAX);
	tls_conn_free(&cc);
	tls_conn_free(&s2.tc);
	cr_assert_eq(tls_conn_start(s2.th, &s2.tc, s2.ctx), 0);
	ours_handshake(&s2, cth, &cc, cctx);
	cr_assert(cc.flags & TLS_F_RESUMED);
	tls_conn_free(&cc);
	srv_free(&s2);
	tls_thread_free(cth);
	tls_ctx_free(cctx);
	srv_free(&s);
}

Test(tls, ticket_taken_whatever_the_cut)
{
	/* the ticket record (then data) cut at every byte, so that its record
	 * completes in the carry, or the data's does after the ticket */
	struct srv s;
	srv_new(&s, 3600);
	struct tls_ctx *cctx = our_client(1);
	size_t n = 0;
	for (size_t cut = 1; cut == 1 || cut < n; cut++) {
		struct tls_thread *cth = new_thread(); /* no session: a donor each time */
		struct tls_conn cc = {0};
		size_t s2cn = ours_handshake(&s, cth, &cc, cctx);
		n = s2cn + 5 + TLS_OVERHEAD;
		cr_assert(cc.flags & TLS_F_TICKET);
		take_ticket(&s, cth, &cc, s2cn, cut);
		tls_conn_free(&cc);
		tls_conn_free(&s.tc);
		cr_assert_eq(tls_conn_start(s.th, &s.tc, s.ctx), 0);
		ours_handshake(&s, cth, &cc, cctx);
		cr_assert(cc.flags & TLS_F_RESUMED, "cut %zu", cut);
		tls_conn_free(&cc);
		tls_conn_free(&s.tc);
		cr_assert_eq(tls_conn_start(s.th, &s.tc, s.ctx), 0);
		tls_thread_free(cth);
	}
	tls_ctx_free(cctx);
	srv_free(&s);
}

Test(tls, key_cache_slot_shared_by_two_connections)
{
	/* two connections whose secrets share a cache slot (the first four
	 * bytes), used in turn: each call must use its own keys */
	char err[256];
	struct tls_thread *th = tls_thread_new(err, sizeof err);
	cr_assert(th, "%s", err);
	struct tls_conn tx[2], rx[2];
	memset(tx, 0, sizeof tx);
	memset(rx, 0, sizeof rx);
	for (unsigned i = 0; i < 2; i++) {
		tx[i].state = rx[i].state = TLS_S_OPEN;
		tx[i].suite = rx[i].suite = 1;
		memset(tx[i].tx_secret, 0x33, sizeof tx[i].tx_secret);
		tx[i].tx_secret[9] = (uint8_t)i;
		memcpy(rx[i].rx_secret, tx[i].tx_secret, sizeof rx[i].rx_secret);
	}
	for (unsigned round = 0; round < 6; round++) {
		unsigned i = round % 2, j = 1 - i;
		uint8_t rec[128];
		const uint8_t *pl;
		size_t pn;
		size_t m = tls_seal(th, &tx[i], (const uint8_t *)"abc", 3, rec);
		struct tls_conn wrong = rx[j];
		wrong.rx_seq = rx[i].rx_seq;
		uint8_t copy[128];
		memcpy(copy, rec, m);
		cr_assert_eq(tls_open(th, &wrong, copy, m, &pl, &pn), -TLS_A_BAD_RECORD_MAC, "round %u", round);
		cr_assert_eq(tls_open(th, &rx[i], rec, m, &pl, &pn), 0, "round %u", round);
		cr_assert_eq(pn, 3);
	}
	tls_thread_free(th);
}
