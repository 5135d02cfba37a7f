/* tls.c: see tls.h. libssl does the handshake, libcrypto every primitive
 * (AEAD, HKDF-Expand-Label, the ticket cipher and MAC); this file frames
 * records and keeps the sequence numbers. */
#include "runtime/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/carry.h"
#include "runtime/clock.h"

#define CT_CCS 20
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APP 23
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24
#define A_ILLEGAL_PARAMETER 47

/* The three suites, by tls_conn.suite (0 is none). */
static const struct suite {
	uint16_t id;
	uint8_t keylen, hashlen;
	const char *name, *cipher;
} suites[4] = {
	{0, 0, 0, "none", NULL},
	{0x1301, 16, 32, "TLS_AES_128_GCM_SHA256", "AES-128-GCM"},
	{0x1302, 32, 48, "TLS_AES_256_GCM_SHA384", "AES-256-GCM"},
	{0x1303, 32, 32, "TLS_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305"},
};
#define SUITES_LIST "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define IV_LEN 12

static const char *const hs_fail_names[] = {
#define TLS_HS_FAIL_NAME(name, text) #name,
	TLS_HS_FAILS(TLS_HS_FAIL_NAME)
#undef TLS_HS_FAIL_NAME
};

const char *tls_hs_fail_name(unsigned reason)
{
	return reason < TLS_HS_FAIL_REASONS ? hs_fail_names[reason] : "?";
}

const char *tls_suite_name(unsigned suite)
{
	return suite < 4 ? suites[suite].name : "?";
}

struct tls_ctx {
	SSL_CTX *ssl;
	int server;
	int64_t ticket_period_s;
	uint8_t ticket_secret[32];
	char *server_name;
	int resume; /* client: offer the thread's session, keep the tickets that come */
};

/* A ticket key: derived from the context's ticket secret and the period
 * number (epoch), so every thread computes the same keys alone. */
struct ticket_key {
	int64_t epoch; /* -1: empty */
	const struct tls_ctx *ctx;
	uint8_t name[16]; /* epoch (8 bytes, big endian) then a check value */
	uint8_t aes[32], mac[32];
};

struct keys {
	uint8_t key[32], iv[IV_LEN];
};

/* Derived key and IV by the secret they come from: a pure function of
 * (suite, secret), so an entry is right whoever asks; a busy connection
 * derives once per key instead of at every call. */
#define KEY_CACHE 256u
struct key_entry {
	uint8_t suite;
	uint8_t secret[48];
	struct keys k;
};

struct tls_thread {
	struct key_entry kc[KEY_CACHE];
	EVP_CIPHER_CTX *aead;
	EVP_CIPHER *cipher[4];
	EVP_CIPHER *ticket_cipher; /* AES-256-CBC, libssl's ticket format */
	EVP_KDF_CTX *label[2];     /* TLS13-KDF, expand only, "tls13 " prefix: SHA-256, SHA-384 */
	EVP_KDF_CTX *hkdf;         /* HKDF-Expand, SHA-256 (ticket keys) */
	struct ticket_key tk[2];
	uint8_t *scratch, *hsout;
	size_t scratch_cap, hsout_cap;
	/* Client resumption: the session the thread's next handshakes offer,
	 * and the one connection (the donor) whose SSL object is kept after its
	 * handshake until its server's ticket comes, for libssl to turn into a
	 * session (only the SSL object knows the resumption secret). */
	SSL_SESSION *session;
	const struct tls_ctx *session_ctx;
	time_t session_renew; /* get a newer ticket from here on */
	SSL *donor;
	uint32_t donor_id, next_donor_id;
	uint64_t donor_rx;      /* records handed to the donor's libssl */
	uint64_t donor_since_ns;
};

static int ex_thread = -1, ex_ctx = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

/* struct tls_ctx lives as long as its SSL_CTX, which the SSL objects of
 * handshakes in progress hold a reference to (their ticket callback reads
 * it): tls_ctx_free drops our reference, and libssl calls this when the
 * last one goes. */
static void ctx_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct tls_ctx *c = ptr;
	if (!c)
		return;
	OPENSSL_cleanse(c->ticket_secret, sizeof c->ticket_secret);
	free(c->server_name);
	free(c);
}

static void ex_init(void)
{
	ex_thread = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ex_ctx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_gone);
}

static void put_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char lib[256] = "";
	if (e)
		ERR_error_string_n(e, lib, sizeof lib);
	snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", lib);
	ERR_clear_error();
}

/* The length field of the record header at h. */
static inline size_t rec_len(const uint8_t *h)
{
	return (size_t)h[3] << 8 | h[4];
}

static int grow(uint8_t **p, size_t *cap, size_t need)
{
	if (*cap >= need)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	uint8_t *q = realloc(*p, n);
	if (!q)
		return -1;
	*p = q;
	*cap = n;
	return 0;
}

/* ---- thread ---------------------------------------------------------------- */

/* Let the thread's donor SSL object go (client resumption; see
 * client_done), keeping its session resumable. */
static void donor_free(struct tls_thread *th)
{
	if (!th->donor)
		return;
	SSL_set_shutdown(th->donor, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(th->donor);
	th->donor = NULL;
}

struct tls_thread *tls_thread_new(char *err, size_t errlen)
{
	pthread_once(&ex_once, ex_init);
	struct tls_thread *th = calloc(1, sizeof *th);
	if (!th) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	th->tk[0].epoch = th->tk[1].epoch = -1;
	th->aead = EVP_CIPHER_CTX_new();
	for (unsigned i = 1; i < 4; i++)
		th->cipher[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
	th->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	EVP_KDF *k13 = EVP_KDF_fetch(NULL, "TLS13-KDF", NULL), *hk = EVP_KDF_fetch(NULL, "HKDF", NULL);
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	for (unsigned i = 0; i < 2 && k13; i++) {
		th->label[i] = EVP_KDF_CTX_new(k13);
		OSSL_PARAM p[] = {
			OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
			OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, i ? "SHA384" : "SHA256", 0),
			OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, "tls13 ", 6),
			OSSL_PARAM_construct_end(),
		};
		if (th->label[i] && !EVP_KDF_CTX_set_params(th->label[i], p)) {
			EVP_KDF_CTX_free(th->label[i]);
			th->label[i] = NULL;
		}
	}
	if (hk) {
		th->hkdf = EVP_KDF_CTX_new(hk);
		OSSL_PARAM p[] = {
			OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
			OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
			OSSL_PARAM_construct_end(),
		};
		if (th->hkdf && !EVP_KDF_CTX_set_params(th->hkdf, p)) {
			EVP_KDF_CTX_free(th->hkdf);
			th->hkdf = NULL;
		}
	}
	EVP_KDF_free(k13);
	EVP_KDF_free(hk);
	int ok = th->aead && th->ticket_cipher && th->label[0] && th->label[1] && th->hkdf;
	for (unsigned i = 1; i < 4; i++)
		ok = ok && th->cipher[i];
	if (!ok) {
		put_err(err, errlen, "libcrypto lacks AES-GCM, ChaCha20-Poly1305, AES-256-CBC or TLS13-KDF");
		tls_thread_free(th);
		return NULL;
	}
	return th;
}

void tls_thread_free(struct tls_thread *th)
{
	if (!th)
		return;
	EVP_CIPHER_CTX_free(th->aead);
	for (unsigned i = 1; i < 4; i++)
		EVP_CIPHER_free(th->cipher[i]);
	EVP_CIPHER_free(th->ticket_cipher);
	EVP_KDF_CTX_free(th->label[0]);
	EVP_KDF_CTX_free(th->label[1]);
	EVP_KDF_CTX_free(th->hkdf);
	OPENSSL_cleanse(th->tk, sizeof th->tk);
	donor_free(th);
	SSL_SESSION_free(th->session);
	free(th->scratch);
	free(th->hsout);
	free(th);
}

/* HKDF-Expand-Label(secret, label, "", outlen) for the suite's hash. */
static int expand_label(struct tls_thread *th, unsigned suite, const uint8_t *secret, const char *label, uint8_t *out,
			size_t outlen)
{
	const struct suite *s = &suites[suite];
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, s->hashlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label, strlen(label)),
		OSSL_PARAM_construct_end(),
	};
	return EVP_KDF_derive(th->label[s->hashlen == 48], out, outlen, p) > 0 ? 0 : -1;
}

static struct key_entry *key_slot(struct tls_thread *th, const uint8_t *secret)
{
	uint32_t h;
	memcpy(&h, secret, sizeof h); /* a traffic secret is uniformly random */
	return &th->kc[h % KEY_CACHE];
}

static int derive(struct tls_thread *th, unsigned suite, const uint8_t *secret, struct keys *k)
{
	unsigned hl = suites[suite].hashlen;
	struct key_entry *e = key_slot(th, secret);
	if (e->suite == suite && CRYPTO_memcmp(e->secret, secret, hl) == 0) {
		*k = e->k;
		return 0;
	}
	if (expand_label(th, suite, secret, "key", k->key, suites[suite].keylen) ||
	    expand_label(th, suite, secret, "iv", k->iv, IV_LEN))
		return -1;
	e->suite = (uint8_t)suite;
	memcpy(e->secret, secret, hl);
	e->k = *k;
	return 0;
}

/* Forget the keys of a secret no longer in use. */
static void key_forget(struct tls_thread *th, unsigned suite, const uint8_t *secret)
{
	struct key_entry *e = key_slot(th, secret);
	if (suite && e->suite == suite && CRYPTO_memcmp(e->secret, secret, suites[suite].hashlen) == 0)
		OPENSSL_cleanse(e, sizeof *e);
}

static int next_secret(struct tls_thread *th, unsigned suite, uint8_t *secret)
{
	uint8_t n[48];
	if (expand_label(th, suite, secret, "traffic upd", n, suites[suite].hashlen) != 0)
		return -1;
	key_forget(th, suite, secret);
	memcpy(secret, n, suites[suite].hashlen);
	OPENSSL_cleanse(n, sizeof n);
	return 0;
}

static void nonce(const struct keys *k, uint64_t seq, uint8_t *out)
{
	memcpy(out, k->iv, IV_LEN);
	for (unsigned i = 0; i < 8; i++)
		out[IV_LEN - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

/* ---- contexts --------------------------------------------------------------- */

static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
		       unsigned int inlen, void *arg)
{
	(void)s;
	(void)arg;
	static const unsigned char ours[] = "\x04" TLS_ALPN;
	unsigned char *o;
	if (SSL_select_next_proto(&o, outlen, ours, sizeof ours - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

/* libssl's key log: the only place the traffic secrets leave it. Lines are
 * "LABEL <client random hex> <secret hex>"; the application ones are kept. */
static void keylog(const SSL *s, const char *line)
{
	struct tls_conn *tc = SSL_get_app_data(s);
	static const char cl[] = "CLIENT_TRAFFIC_SECRET_0 ", sv[] = "SERVER_TRAFFIC_SECRET_0 ";
	int client = strncmp(line, cl, sizeof cl - 1) == 0;
	if (!tc || (!client && strncmp(line, sv, sizeof sv - 1) != 0))
		return;
	const char *p = strchr(line + sizeof cl - 1, ' ');
	if (!p)
		return;
	/* ours to receive with: the client's secret on a server, the server's on a client */
	int rx = client == ((tc->flags & TLS_F_SERVER) != 0);
	uint8_t *dst = rx ? tc->rx_secret : tc->tx_secret;
	size_t n = 0;
	if (!OPENSSL_hexstr2buf_ex(dst, 48, &n, p + 1, '\0') || (n != 32 && n != 48)) {
		ERR_clear_error();
		return;
	}
	tc->got |= (uint8_t)(rx ? 1 : 2);
}

static void ticket_derive(struct tls_thread *th, const struct tls_ctx *ctx, int64_t epoch, struct ticket_key *k)
{
	static const char info_label[] = "chat-gateway session ticket key ";
	uint8_t info[sizeof info_label - 1 + 8], out[72];
	memcpy(info, info_label, sizeof info_label - 1);
	for (unsigned i = 0; i < 8; i++)
		info[sizeof info_label - 1 + i] = (uint8_t)((uint64_t)epoch >> (56 - 8 * i));
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ctx->ticket_secret, 32),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof info),
		OSSL_PARAM_construct_end(),
	};
	k->epoch = -1;
	if (EVP_KDF_derive(th->hkdf, out, sizeof out, p) <= 0)
		return;
	memcpy(k->name, info + sizeof info_label - 1, 8);
	memcpy(k->name + 8, out + 64, 8);
	memcpy(k->aes, out, 32);
	memcpy(k->mac, out + 32, 32);
	k->epoch = epoch;
	k->ctx = ctx;
	OPENSSL_cleanse(out, sizeof out);
}

static const struct ticket_key *ticket_key(struct tls_thread *th, const struct tls_ctx *ctx, int64_t epoch)
{
	for (unsigned i = 0; i < 2; i++)
		if (th->tk[i].epoch == epoch && th->tk[i].ctx == ctx)
			return &th->tk[i];
	/* replace the older one */
	struct ticket_key *k = &th->tk[th->tk[0].epoch > th->tk[1].epoch ? 1 : 0];
	ticket_derive(th, ctx, epoch, k);
	return k->epoch == epoch ? k : NULL;
}

/* libssl's ticket callback: encrypt with the current period's key; decrypt
 * with it or the previous period's (then ask for a fresh ticket). */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
		     int enc)
{
	struct tls_thread *th = SSL_get_ex_data(s, ex_thread);
	const struct tls_ctx *ctx = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_ctx);
	if (!th || !ctx || ctx->ticket_period_s <= 0)
		return enc ? -1 : 0;
	int64_t now = (int64_t)time(NULL) / ctx->ticket_period_s;
	int64_t epoch = now;
	if (!enc) {
		epoch = 0;
		for (unsigned i = 0; i < 8; i++)
			epoch = (int64_t)(((uint64_t)epoch << 8) | name[i]);
		if (epoch != now && epoch != now - 1)
			return 0; /* expired or not ours: a full handshake */
	}
	const struct ticket_key *k = ticket_key(th, ctx, epoch);
	if (!k)
		return -1;
	if (!enc && CRYPTO_memcmp(k->name, name, 16) != 0)
		return 0;
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->mac, 32),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (enc) {
		memcpy(name, k->name, 16);
		if (RAND_bytes(iv, 16) <= 0 || !EVP_EncryptInit_ex2(cctx, th->ticket_cipher, k->aes, iv, NULL) ||
		    !EVP_MAC_CTX_set_params(hctx, p))
			return -1;
		return 1;
	}
	if (!EVP_DecryptInit_ex2(cctx, th->ticket_cipher, k->aes, iv, NULL) || !EVP_MAC_CTX_set_params(hctx, p))
		return -1;
	return epoch == now ? 1 : 2;
}

static struct tls_ctx *ctx_common(int server, char *err, size_t errlen)
{
	pthread_once(&ex_once, ex_init);
	struct tls_ctx *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->server = server;
	c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!c->ssl || !SSL_CTX_set_ex_data(c->ssl, ex_ctx, c)) {
		put_err(err, errlen, "cannot make a TLS 1.3 context");
		SSL_CTX_free(c->ssl);
		free(c);
		return NULL;
	}
	/* from here on the SSL_CTX owns c (ctx_gone) */
	if (!SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(c->ssl, TLS1_3_VERSION) || !SSL_CTX_set_ciphersuites(c->ssl, SUITES_LIST)) {
		put_err(err, errlen, "cannot make a TLS 1.3 context");
		tls_ctx_free(c);
		return NULL;
	}
	SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(c->ssl, SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_keylog_callback(c->ssl, keylog);
	return c;
}

int tls_ticket_secret(const char *file, uint8_t out[32], char *err, size_t errlen)
{
	if (!file)
		return RAND_bytes(out, 32) == 1 ? 0 : (snprintf(err, errlen, "no random bytes for the ticket secret"), -1);
	FILE *f = fopen(file, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return -1;
	}
	uint8_t b[4096];
	size_t n = fread(b, 1, sizeof b, f);
	int bad = ferror(f);
	fclose(f);
	while (n && (b[n - 1] == '\n' || b[n - 1] == '\r'))
		n--;
	if (bad || n < 16) {
		snprintf(err, errlen, "%s: %s", file, bad ? "cannot read it" : "shorter than 16 bytes");
		OPENSSL_cleanse(b, sizeof b);
		return -1;
	}
	unsigned len = 32;
	int ok = EVP_Digest(b, n, out, &len, EVP_sha256(), NULL);
	OPENSSL_cleanse(b, sizeof b);
	if (!ok) {
		put_err(err, errlen, "SHA-256");
		return -1;
	}
	return 0;
}

const char *tls_ctx_cert_info(const struct tls_ctx *ctx, char *buf, size_t cap)
{
	X509 *x = SSL_CTX_get0_certificate(ctx->ssl);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdn = 0;
	char subj[256] = "?", fp[3 * 32 + 1] = "", until[64] = "?";
	if (!x) {
		snprintf(buf, cap, "no certificate");
		return buf;
	}
	X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
	if (X509_digest(x, EVP_sha256(), md, &mdn))
		for (unsigned i = 0; i < mdn && i < 32; i++)
			snprintf(fp + 3 * i, sizeof fp - 3 * i, "%02X%s", md[i], i + 1 < mdn ? ":" : "");
	BIO *b = BIO_new(BIO_s_mem());
	if (b && ASN1_TIME_print(b, X509_get0_notAfter(x))) {
		int k = BIO_read(b, until, (int)sizeof until - 1);
		until[k > 0 ? k : 0] = 0;
	}
	BIO_free(b);
	snprintf(buf, cap, "%s, valid until %s, SHA-256 %s", subj, until, fp);
	return buf;
}

struct tls_ctx *tls_server_new(const struct tls_server_opts *o, char *err, size_t errlen)
{
	if (!o->cert_file || !o->key_file) {
		snprintf(err, errlen, "a TLS listener needs --tls-cert and --tls-key");
		return NULL;
	}
	struct tls_ctx *c = ctx_common(1, err, errlen);
	if (!c)
		return NULL;
	char what[600];
	if (SSL_CTX_use_certificate_chain_file(c->ssl, o->cert_file) != 1) {
		snprintf(what, sizeof what, "%s: cannot load the certificate (chain)", o->cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(c->ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(what, sizeof what, "%s: cannot load the private key", o->key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(c->ssl) != 1) {
		snprintf(what, sizeof what, "%s does not match the certificate in %s", o->key_file, o->cert_file);
		goto fail;
	}
	SSL_CTX_set_alpn_select_cb(c->ssl, alpn_select, NULL);
	c->ticket_period_s = o->ticket_period_s;
	if (o->ticket_period_s > 0) {
		if (o->ticket_secret)
			memcpy(c->ticket_secret, o->ticket_secret, 32);
		else if (RAND_bytes(c->ticket_secret, 32) <= 0) {
			snprintf(what, sizeof what, "no random bytes for the ticket secret");
			goto fail;
		}
		SSL_CTX_set_tlsext_ticket_key_evp_cb(c->ssl, ticket_cb);
		/* a ticket outlives its key's period by at most one more */
		SSL_CTX_set_timeout(c->ssl, (long)o->ticket_period_s);
		SSL_CTX_set_num_tickets(c->ssl, 1);
	} else {
		SSL_CTX_set_num_tickets(c->ssl, 0);
	}
	return c;
fail:
	put_err(err, errlen, what);
	tls_ctx_free(c);
	return NULL;
}

/* libssl made a session of a ticket the donor's server sent: the
 * thread's next handshakes offer it. Takes the caller's reference. (Not a
 * new-session callback: that needs the client session cache mode, and in
 * it libssl marks a TLS 1.3 session not resumable once it was used.) */
static void take_session(struct tls_thread *th, const struct tls_ctx *ctx, SSL_SESSION *sess)
{
	uint32_t life = SSL_SESSION_get_ticket_lifetime_hint(sess);
	long t = SSL_SESSION_get_timeout(sess);
	if (!life || (t > 0 && (unsigned long)t < life))
		life = t > 0 ? (uint32_t)t : 0;
	SSL_SESSION_free(th->session);
	th->session = sess;
	th->session_ctx = ctx;
	th->session_renew = time(NULL) + life / 2;
}

struct tls_ctx *tls_client_new(const struct tls_client_opts *o, char *err, size_t errlen)
{
	struct tls_ctx *c = ctx_common(0, err, errlen);
	if (!c)
		return NULL;
	c->resume = o->resume != 0;
	static const unsigned char alpn[] = "\x04" TLS_ALPN;
	if (SSL_CTX_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1) != 0) {
		put_err(err, errlen, "cannot set ALPN");
		tls_ctx_free(c);
		return NULL;
	}
	if (o->ca_file) {
		if (SSL_CTX_load_verify_locations(c->ssl, o->ca_file, NULL) != 1) {
			char what[600];
			snprintf(what, sizeof what, "%s: cannot load CA certificates", o->ca_file);
			put_err(err, errlen, what);
			tls_ctx_free(c);
			return NULL;
		}
		SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
	}
	if (o->server_name && !(c->server_name = strdup(o->server_name))) {
		snprintf(err, errlen, "out of memory");
		tls_ctx_free(c);
		return NULL;
	}
	return c;
}

void tls_ctx_free(struct tls_ctx *c)
{
	if (!c)
		return;
	SSL_CTX_free(c->ssl); /* and c with it, once no handshake holds it (ctx_gone) */
}

/* ---- handshake ----------------------------------------------------------------- */

int tls_conn_start(struct tls_thread *th, struct tls_conn *tc, const struct tls_ctx *ctx)
{
	SSL *s = SSL_new(ctx->ssl);
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
	if (!s || !r || !w) {
		SSL_free(s);
		BIO_free(r);
		BIO_free(w);
		ERR_clear_error();
		return -1;
	}
	BIO_set_mem_eof_return(r, -1); /* empty is "try again", not end of file */
	BIO_set_mem_eof_return(w, -1);
	SSL_set_bio(s, r, w);
	SSL_set_app_data(s, tc);
	SSL_set_ex_data(s, ex_thread, th);
	memset(tc, 0, sizeof *tc);
	if (ctx->server) {
		SSL_set_accept_state(s);
		tc->flags = TLS_F_SERVER;
	} else {
		SSL_set_connect_state(s);
		if (ctx->server_name &&
		    (!SSL_set_tlsext_host_name(s, ctx->server_name) ||
		     (SSL_CTX_get_verify_mode(ctx->ssl) != SSL_VERIFY_NONE && !SSL_set1_host(s, ctx->server_name)))) {
			SSL_free(s);
			ERR_clear_error();
			return -1;
		}
		if (ctx->resume && th->session && th->session_ctx == ctx && SSL_SESSION_is_resumable(th->session) &&
		    SSL_set_session(s, th->session) != 1) {
			SSL_free(s);
			ERR_clear_error();
			return -1;
		}
	}
	tc->ssl = s;
	tc->state = TLS_S_HANDSHAKE;
	return 0;
}

void tls_conn_free(struct tls_conn *tc)
{
	if (tc->state == TLS_S_HANDSHAKE)
		SSL_free(tc->ssl);
	else if (tc->part)
		carry_free(&tc->part);
	OPENSSL_cleanse(tc, sizeof *tc); /* zeroes it */
}

static unsigned fail_reason(void)
{
	unsigned long e = ERR_peek_error();
	int r = ERR_GET_REASON(e);
	unsigned why = TLS_HSF_protocol;
	if (r == SSL_R_NO_APPLICATION_PROTOCOL)
		why = TLS_HSF_alpn;
	else if (r == SSL_R_UNSUPPORTED_PROTOCOL || r == SSL_R_WRONG_VERSION_NUMBER || r == SSL_R_VERSION_TOO_LOW ||
		 r == SSL_R_NO_PROTOCOLS_AVAILABLE)
		why = TLS_HSF_version;
	else if (ERR_GET_LIB(e) != ERR_LIB_SSL && e)
		why = TLS_HSF_internal;
	ERR_clear_error();
	return why;
}

/* How long a donor waits for its ticket before a newer handshake takes
 * its place (its connection may have closed, or the server sends none). */
#define DONOR_WAIT_NS 2000000000ull

/* A client's handshake is done. With resumption on, the thread may need a
 * (newer) session: then this connection becomes the donor and its SSL
 * object is kept. Returns the SSL object to free (NULL when kept). */
static SSL *client_done(struct tls_thread *th, struct tls_conn *tc, SSL *s)
{
	const struct tls_ctx *ctx = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_ctx);
	if (!ctx || !ctx->resume)
		return s;
	/* freed without a shutdown, libssl would mark the session it used
	 * (the thread's, when resumed) not resumable */
	SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	if (th->session && (th->session_ctx != ctx || !SSL_session_reused(s))) {
		SSL_SESSION_free(th->session); /* refused (its ticket key is gone, say) */
		th->session = NULL;
	}
	if (th->session && time(NULL) < th->session_renew)
		return s;
	uint64_t now = clock_mono_ns();
	if (th->donor && now - th->donor_since_ns < DONOR_WAIT_NS)
		return s; /* one is waiting already */
	donor_free(th);
	SSL_set_shutdown(s, 0); /* it reads the ticket yet */
	(void)BIO_reset(SSL_get_rbio(s)); /* what follows the handshake comes through tls_open */
	(void)BIO_reset(SSL_get_wbio(s));
	SSL_set_app_data(s, NULL); /* tc is not ours to write to any more */
	th->donor = s;
	th->donor_id = ++th->next_donor_id ? th->next_donor_id : ++th->next_donor_id;
	th->donor_rx = 0;
	th->donor_since_ns = now;
	tc->ticket_id = th->donor_id;
	tc->flags |= TLS_F_TICKET;
	return NULL;
}

int tls_handshake(struct tls_thread *th, struct tls_conn *tc, const uint8_t *in, size_t n, size_t *used,
		  const uint8_t **out, size_t *outn, unsigned *why)
{
	SSL *s = tc->ssl;
	*used = n;
	*out = th->hsout;
	*outn = 0;
	*why = TLS_HSF_internal;
	if (tc->state != TLS_S_HANDSHAKE)
		return TLS_HS_FAIL;
	BIO *rb = SSL_get_rbio(s), *wb = SSL_get_wbio(s);
	if (n && (n > INT32_MAX || BIO_write(rb, in, (int)n) != (int)n)) {
		ERR_clear_error();
		return TLS_HS_FAIL;
	}
	ERR_clear_error();
	int r = SSL_do_handshake(s);
	int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s, r);
	size_t pend = BIO_ctrl_pending(wb);
	if (pend) {
		if (grow(&th->hsout, &th->hsout_cap, pend) != 0 || BIO_read(wb, th->hsout, (int)pend) != (int)pend) {
			ERR_clear_error();
			return TLS_HS_FAIL;
		}
		*out = th->hsout;
		*outn = pend;
	}
	if (r == 1) {
		size_t rest = BIO_ctrl_pending(rb);
		const SSL_CIPHER *ci = SSL_get_current_cipher(s);
		uint16_t id = ci ? (uint16_t)SSL_CIPHER_get_protocol_id(ci) : 0;
		unsigned suite = 0;
		for (unsigned i = 1; i < 4; i++)
			if (suites[i].id == id)
				suite = i;
		if (tc->got != 3 || !suite || rest > n || SSL_version(s) != TLS1_3_VERSION) {
			*why = suite && SSL_version(s) != TLS1_3_VERSION ? TLS_HSF_version : TLS_HSF_internal;
			return TLS_HS_FAIL;
		}
		/* What this call wrote went out under our application key (on a
		 * server, the session tickets after the client's Finished; a client
		 * writes only its Finished, under the handshake key): count those
		 * records, their sequence numbers are used. */
		uint64_t written = 0;
		if (tc->flags & TLS_F_SERVER)
			for (size_t off = 0; off + TLS_HDR <= pend;) {
				written += th->hsout[off] == CT_APP;
				off += TLS_HDR + rec_len(th->hsout + off);
			}
		if (SSL_session_reused(s))
			tc->flags |= TLS_F_RESUMED;
		if (!(tc->flags & TLS_F_SERVER))
			s = client_done(th, tc, s);
		SSL_free(s);
		tc->part = NULL; /* shares the SSL pointer's place */
		tc->suite = (uint8_t)suite;
		tc->rx_seq = 0;
		tc->tx_seq = written;
		tc->got = 0;
		tc->state = TLS_S_OPEN;
		*used = n - rest;
		return TLS_HS_DONE;
	}
	if (e == SSL_ERROR_WANT_READ)
		return TLS_HS_MORE;
	*why = fail_reason();
	return TLS_HS_FAIL;
}

/* ---- records ------------------------------------------------------------------ */

/* Seal one record of inner type `type` from in[0..n) (n <= TLS_MAX_PLAIN)
 * at out, with k (the AEAD keyed already). Returns its size or 0. */
static size_t seal_at(struct tls_thread *th, uint64_t seq, const struct keys *k, uint8_t type, const uint8_t *in,
		      size_t n, uint8_t *out)
{
	size_t len = n + 1 + TLS_TAG;
	uint8_t iv[IV_LEN];
	int ol;
	out[0] = CT_APP;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
	nonce(k, seq, iv);
	if (!EVP_EncryptInit_ex2(th->aead, NULL, NULL, iv, NULL) || !EVP_EncryptUpdate(th->aead, NULL, &ol, out, TLS_HDR) ||
	    (n && !EVP_EncryptUpdate(th->aead, out + TLS_HDR, &ol, in, (int)n)) ||
	    !EVP_EncryptUpdate(th->aead, out + TLS_HDR + n, &ol, &type, 1) ||
	    !EVP_EncryptFinal_ex(th->aead, out + TLS_HDR + n + 1, &ol) ||
	    EVP_CIPHER_CTX_ctrl(th->aead, EVP_CTRL_AEAD_GET_TAG, TLS_TAG, out + TLS_HDR + n + 1) <= 0) {
		ERR_clear_error();
		return 0;
	}
	return TLS_HDR + len;
}

/* seal_at with tc's send sequence number, which it moves on. */
static size_t seal_record(struct tls_thread *th, struct tls_conn *tc, const struct keys *k, uint8_t type,
			  const uint8_t *in, size_t n, uint8_t *out)
{
	size_t r = seal_at(th, tc->tx_seq, k, type, in, n, out);
	tc->tx_seq += r != 0;
	return r;
}

/* The thread's AEAD keyed with secret's key, to encrypt (enc) or decrypt,
 * its IV in k for the per-record nonces. */
static int key_aead(struct tls_thread *th, unsigned suite, const uint8_t *secret, int enc, struct keys *k)
{
	if (derive(th, suite, secret, k) != 0 || !EVP_CipherInit_ex2(th->aead, th->cipher[suite], k->key, NULL, enc, NULL)) {
		ERR_clear_error();
		return -1;
	}
	return 0;
}

/* The thread's AEAD keyed for one direction of tc (enc: our sending
 * side), its IV in k for the per-record nonces. */
static int set_keys(struct tls_thread *th, struct tls_conn *tc, int enc, struct keys *k)
{
	return key_aead(th, tc->suite, enc ? tc->tx_secret : tc->rx_secret, enc, k);
}

size_t tls_seal_bound(const struct tls_conn *tc, size_t n)
{
	(void)tc;
	size_t recs = (n + TLS_MAX_PLAIN - 1) / TLS_MAX_PLAIN;
	return n + recs * TLS_OVERHEAD + (TLS_OVERHEAD + 5); /* + a KeyUpdate */
}

void tls_key_update(struct tls_conn *tc, int ask_peer)
{
	tc->flags |= TLS_F_KU_SEND;
	if (ask_peer)
		tc->flags |= TLS_F_KU_ASK;
}

size_t tls_seal(struct tls_thread *th, struct tls_conn *tc, const uint8_t *in, size_t n, uint8_t *out)
{
	if (!tls_can_send(tc))
		return 0;
	struct keys k;
	size_t o = 0, recs = (n + TLS_MAX_PLAIN - 1) / TLS_MAX_PLAIN;
	if (set_keys(th, tc, 1, &k) != 0)
		return 0;
	if (tc->tx_seq + recs >= TLS_TX_RECORDS_PER_KEY)
		tc->flags |= TLS_F_KU_SEND;
	if (tc->flags & TLS_F_KU_SEND) {
		uint8_t ku[5] = {HS_KEY_UPDATE, 0, 0, 1, (tc->flags & TLS_F_KU_ASK) ? 1 : 0};
		size_t r = seal_record(th, tc, &k, CT_HANDSHAKE, ku, sizeof ku, out);
		if (!r || next_secret(th, tc->suite, tc->tx_secret) != 0 || set_keys(th, tc, 1, &k) != 0)
			goto fail;
		o += r;
		tc->tx_seq = 0;
		tc->flags &= (uint8_t)~(TLS_F_KU_SEND | TLS_F_KU_ASK);
	}
	while (n) {
		size_t m = n < TLS_MAX_PLAIN ? n : TLS_MAX_PLAIN;
		size_t r = seal_record(th, tc, &k, CT_APP, in, m, out + o);
		if (!r)
			goto fail;
		o += r;
		in += m;
		n -= m;
	}
	OPENSSL_cleanse(&k, sizeof k);
	return o;
fail:
	OPENSSL_cleanse(&k, sizeof k);
	return 0;
}

size_t tls_alert(struct tls_thread *th, struct tls_conn *tc, unsigned desc, uint8_t *out)
{
	if (!tls_can_send(tc))
		return 0;
	uint8_t a[2] = {desc == TLS_A_CLOSE_NOTIFY || desc == TLS_A_USER_CANCELED ? 1 : 2, (uint8_t)desc};
	struct keys k;
	size_t r = 0;
	if (set_keys(th, tc, 1, &k) == 0)
		r = seal_record(th, tc, &k, CT_ALERT, a, sizeof a, out);
	OPENSSL_cleanse(&k, sizeof k);
	tc->flags |= TLS_F_CLOSE_SENT;
	return r;
}

/* Open the record at p (header + len bytes, len checked), in place.
 * Returns the inner content type with the plaintext at p + TLS_HDR,
 * *plen bytes; or -alert. */
static int open_record(struct tls_thread *th, struct tls_conn *tc, const struct keys *k, uint8_t *p, size_t len,
		       size_t *plen)
{
	uint8_t iv[IV_LEN];
	int ol;
	if (p[0] != CT_APP)
		return -TLS_A_UNEXPECTED_MESSAGE; /* after the handshake every record is protected */
	if (len < 1 + TLS_TAG)
		return -TLS_A_DECODE_ERROR;
	size_t clen = len - TLS_TAG;
	nonce(k, tc->rx_seq, iv);
	if (!EVP_DecryptInit_ex2(th->aead, NULL, NULL, iv, NULL) || !EVP_DecryptUpdate(th->aead, NULL, &ol, p, TLS_HDR) ||
	    !EVP_DecryptUpdate(th->aead, p + TLS_HDR, &ol, p + TLS_HDR, (int)clen) ||
	    EVP_CIPHER_CTX_ctrl(th->aead, EVP_CTRL_AEAD_SET_TAG, TLS_TAG, p + TLS_HDR + clen) <= 0 ||
	    EVP_DecryptFinal_ex(th->aead, p + TLS_HDR + clen, &ol) <= 0) {
		ERR_clear_error();
		return -TLS_A_BAD_RECORD_MAC;
	}
	if (++tc->rx_seq == 0)
		return -TLS_A_UNEXPECTED_MESSAGE; /* 2^64 records: cannot happen */
	size_t i = clen;
	while (i && p[TLS_HDR + i - 1] == 0)
		i--;
	if (!i)
		return -TLS_A_UNEXPECTED_MESSAGE; /* no content type */
	*plen = i - 1;
	if (*plen > TLS_MAX_PLAIN)
		return -TLS_A_RECORD_OVERFLOW;
	return p[TLS_HDR + i - 1];
}

/* A NewSessionTicket message m[0..n) came to the donor connection tc:
 * sealed again as the record libssl expects next (the same receive key,
 * its own count of records), libssl reads it, and the session it makes is
 * the thread's. The thread's AEAD is left keyed for sending: the caller
 * keys it again. A failure costs only the ticket. */
static void donor_ticket(struct tls_thread *th, struct tls_conn *tc, const uint8_t *m, size_t n)
{
	SSL *s = th->donor;
	if (!(tc->flags & TLS_F_TICKET) || !s || tc->ticket_id != th->donor_id)
		return;
	struct keys k;
	uint8_t one;
	size_t r = 0;
	/* sealed with the receive key: the record as the server sealed it */
	if (grow(&th->hsout, &th->hsout_cap, n + TLS_OVERHEAD) == 0 && key_aead(th, tc->suite, tc->rx_secret, 1, &k) == 0)
		r = seal_at(th, th->donor_rx, &k, CT_HANDSHAKE, m, n, th->hsout);
	OPENSSL_cleanse(&k, sizeof k);
	th->donor_rx++;
	int got = 0;
	if (r && BIO_write(SSL_get_rbio(s), th->hsout, (int)r) == (int)r) {
		const SSL_SESSION *before = SSL_get0_session(s);
		int had = before && SSL_SESSION_has_ticket(before);
		ERR_clear_error();
		int e = SSL_read(s, &one, 1);
		SSL_SESSION *now = SSL_get0_session(s);
		/* a new ticket: the session gained one, or (after a resumption)
		 * libssl made a new session for it; the old one is the thread's,
		 * which holds it, so its address is not reused */
		if (now && SSL_SESSION_has_ticket(now) && (!had || now != before) && SSL_SESSION_is_resumable(now)) {
			SSL_SESSION_up_ref(now);
			take_session(th, SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_ctx), now);
			got = 1;
		} else if (e <= 0 && SSL_get_error(s, e) != SSL_ERROR_WANT_READ) {
			got = 1; /* broken: let it go */
		}
	}
	ERR_clear_error();
	(void)BIO_reset(SSL_get_wbio(s));
	if (r && !got)
		return; /* a ticket libssl did not take yet (a second one may come) */
	donor_free(th);
	tc->flags &= (uint8_t)~TLS_F_TICKET;
}

/* What a non-data record says. Returns 0 to go on, 1 closed by the peer, 2
 * the peer's alert, -alert; *rekey when the receive key moved on. */
static int control(struct tls_thread *th, struct tls_conn *tc, int type, const uint8_t *m, size_t n, int *rekey)
{
	if (type == CT_ALERT) {
		if (n != 2)
			return -TLS_A_DECODE_ERROR;
		if (m[1] == TLS_A_CLOSE_NOTIFY)
			return 1;
		if (m[1] == TLS_A_USER_CANCELED)
			return 0; /* a close_notify follows */
		return 2;
	}
	if (type != CT_HANDSHAKE || n == 0)
		return -TLS_A_UNEXPECTED_MESSAGE;
	while (n) {
		if (n < 4)
			return -TLS_A_DECODE_ERROR; /* messages cut across records are not taken */
		size_t len = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
		if (len > n - 4)
			return -TLS_A_DECODE_ERROR;
		if (m[0] == HS_KEY_UPDATE) {
			if (len != 1)
				return -TLS_A_DECODE_ERROR;
			if (m[4] > 1)
				return -A_ILLEGAL_PARAMETER;
			if (n != 5)
				return -TLS_A_UNEXPECTED_MESSAGE; /* a key change ends its record */
			if (next_secret(th, tc->suite, tc->rx_secret) != 0)
				return -TLS_A_INTERNAL_ERROR;
			tc->rx_seq = 0;
			*rekey = 1;
			tc->flags &= (uint8_t)~TLS_F_TICKET; /* the donor's libssl has the old key */
			if (m[4])
				tc->flags |= TLS_F_KU_SEND; /* answered with update_not_requested */
		} else if (m[0] != HS_NEW_SESSION_TICKET || (tc->flags & TLS_F_SERVER)) {
			return -TLS_A_UNEXPECTED_MESSAGE;
		} else if (tc->flags & TLS_F_TICKET) {
			donor_ticket(th, tc, m, 4 + len);
			*rekey = 1;
		}
		m += 4 + len;
		n -= 4 + len;
	}
	return 0;
}

/* Open the record at p and act on it: CT_APP with its data at p + TLS_HDR
 * (*plen bytes), or control()'s result for anything else (*plen 0). */
static int open_one(struct tls_thread *th, struct tls_conn *tc, const struct keys *k, uint8_t *p, size_t len,
		    size_t *plen, int *rekey)
{
	int type = open_record(th, tc, k, p, len, plen);
	if (type == CT_APP || type < 0)
		return type;
	int r = control(th, tc, type, p + TLS_HDR, *plen, rekey);
	*plen = 0;
	return r;
}

int tls_open(struct tls_thread *th, struct tls_conn *tc, uint8_t *buf, size_t n, const uint8_t **plain,
	     size_t *plain_len)
{
	struct keys k;
	int keyed = 0, ret = 0, rekey = 0;
	size_t head = 0, w = 0, i = 0;
	*plain = buf;
	*plain_len = 0;
	if (tc->state != TLS_S_OPEN)
		return tc->state == TLS_S_CLOSED ? 1 : -TLS_A_INTERNAL_ERROR;
	if (tc->part) {
		/* complete the record carried from the last receive */
		struct carry *c = tc->part;
		if (c->len < TLS_HDR) {
			size_t t = TLS_HDR - c->len < n ? TLS_HDR - c->len : n;
			memcpy(c->data + c->len, buf, t);
			c->len += (uint32_t)t;
			i += t;
			if (c->len < TLS_HDR)
				return 0;
			size_t len = rec_len(c->data);
			if (len > TLS_MAX_CIPHER) {
				ret = -TLS_A_RECORD_OVERFLOW;
				goto out;
			}
			struct carry *g = realloc(c, sizeof *g + TLS_HDR + len);
			if (!g) {
				ret = -TLS_A_INTERNAL_ERROR;
				goto out;
			}
			tc->part = c = g;
			c->cap = c->need = (uint32_t)(TLS_HDR + len);
		}
		size_t t = c->need - c->len < n - i ? c->need - c->len : n - i;
		memcpy(c->data + c->len, buf + i, t);
		c->len += (uint32_t)t;
		i += t;
		if (c->len < c->need)
			return 0;
		if (set_keys(th, tc, 0, &k) != 0) {
			ret = -TLS_A_INTERNAL_ERROR;
			goto out;
		}
		keyed = 1;
		size_t pl;
		int r = open_one(th, tc, &k, c->data, c->len - TLS_HDR, &pl, &rekey);
		if (r == CT_APP) {
			if (grow(&th->scratch, &th->scratch_cap, pl + n) == 0) {
				memcpy(th->scratch, c->data + TLS_HDR, pl);
				head = pl;
			} else {
				ret = -TLS_A_INTERNAL_ERROR;
			}
		} else {
			ret = r;
		}
		carry_free(&tc->part);
		if (ret)
			goto out;
	}
	while (n - i >= TLS_HDR) {
		size_t len = rec_len(buf + i);
		if (len > TLS_MAX_CIPHER) {
			ret = -TLS_A_RECORD_OVERFLOW;
			goto out;
		}
		if (n - i < TLS_HDR + len)
			break;
		if (!keyed || rekey) {
			if (set_keys(th, tc, 0, &k) != 0) {
				ret = -TLS_A_INTERNAL_ERROR;
				goto out;
			}
			keyed = 1;
			rekey = 0;
		}
		size_t pl;
		int r = open_one(th, tc, &k, buf + i, len, &pl, &rekey);
		if (r == CT_APP) {
			memmove(buf + w, buf + i + TLS_HDR, pl);
			w += pl;
		} else {
			ret = r;
		}
		i += TLS_HDR + len;
		if (ret)
			goto out;
	}
	if (i < n) {
		/* a record cut by the end of the buffer: carried, sized to it once
		 * its header is in */
		size_t have = n - i, need = TLS_HDR;
		if (have >= TLS_HDR)
			need = TLS_HDR + rec_len(buf + i);
		struct carry *c = malloc(sizeof *c + need);
		if (!c) {
			ret = -TLS_A_INTERNAL_ERROR;
			goto out;
		}
		memcpy(c->data, buf + i, have);
		c->len = (uint32_t)have;
		c->cap = c->need = (uint32_t)need;
		tc->part = c;
	}
out:
	if (keyed)
		OPENSSL_cleanse(&k, sizeof k);
	if (head) {
		memcpy(th->scratch + head, buf, w);
		*plain = th->scratch;
		*plain_len = head + w;
	} else {
		*plain_len = w;
	}
	if (ret) {
		tc->state = TLS_S_CLOSED;
		if (tc->part)
			carry_free(&tc->part);
	}
	return ret;
}
