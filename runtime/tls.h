/* tls.h: TLS 1.3 with the handshake in libssl and the record layer here,
 * in the owner thread's loop, at a fixed 128 bytes per connection.
 *
 * The shape is kernel TLS's. A connection starts with an SSL object over
 * two memory BIOs (tls_conn_start): the caller feeds it what the socket
 * received and sends what it wrote (tls_handshake). When the handshake is
 * done the application traffic secrets, which libssl hands to its key-log
 * callback, are kept; the SSL object is freed. From then on records are
 * opened and sealed here with libcrypto's AEAD (EVP), the key and IV
 * derived from the kept secret with libcrypto's TLS13-KDF (HKDF-Expand-
 * Label), and kept in the thread's small cache of derived keys (by secret:
 * a busy connection derives once per key, a cold one at its next call). So
 * an idle connection holds its two secrets, two sequence numbers and a few
 * bytes of state, nothing else; the cipher and KDF contexts and the key
 * cache belong to the thread (struct tls_thread).
 *
 * What the record layer does (RFC 8446 section 5):
 * - records of up to 2^14 bytes of plaintext, in place: tls_open decrypts
 *   the complete records of a receive buffer where they lie and packs their
 *   plaintext at its start; a record cut by the end of the buffer waits in
 *   a carry sized to it;
 * - inner content types: application data is handed on; an alert ends the
 *   connection (close_notify cleanly); a KeyUpdate moves the receive key
 *   on and, when the peer asks, ours too (sent before the next data); a
 *   NewSessionTicket is taken by a client that resumes (below) and dropped
 *   by one that does not; every other handshake
 *   message, a bad length, a bad tag or an unexpected type is fatal, with
 *   the alert RFC 8446 names for it;
 * - our send key is updated before 2^23 records (TLS_TX_RECORDS_PER_KEY),
 *   under AES-GCM's limit of 2^24.5.
 *
 * Roles: a server context (certificate, key, stateless session tickets
 * whose key rotates, two keys accepted) or a client context (CA file or
 * none, optional resumption). The ALPN protocol id is TLS_ALPN.
 *
 * Threads: a struct tls_ctx is immutable once made and may be shared;
 * struct tls_thread and the struct tls_conns it works on belong to one
 * thread. Once TLS_S_OPEN a tls_conn can move to another thread between
 * calls (a plain copy of its 128 bytes); during the handshake it must stay
 * where tls_conn_start put it (libssl's key log writes into it there).
 */
#ifndef RUNTIME_TLS_H
#define RUNTIME_TLS_H

#include <stddef.h>
#include <stdint.h>

#define TLS_ALPN "chat"           /* ALPN protocol id of the chat protocol */
#define TLS_MAX_PLAIN 16384u      /* plaintext per record */
#define TLS_MAX_CIPHER (TLS_MAX_PLAIN + 256u)
#define TLS_HDR 5u
#define TLS_TAG 16u
#define TLS_RECORD_MAX (TLS_HDR + TLS_MAX_CIPHER)
#define TLS_OVERHEAD (TLS_HDR + 1u + TLS_TAG) /* per record we seal: header, inner type, tag */
#define TLS_TX_RECORDS_PER_KEY (1ull << 23)

/* Alert descriptions (RFC 8446 6) used here. */
enum tls_alert {
	TLS_A_CLOSE_NOTIFY = 0,
	TLS_A_UNEXPECTED_MESSAGE = 10,
	TLS_A_BAD_RECORD_MAC = 20,
	TLS_A_RECORD_OVERFLOW = 22,
	TLS_A_HANDSHAKE_FAILURE = 40,
	TLS_A_DECODE_ERROR = 50,
	TLS_A_INTERNAL_ERROR = 80,
	TLS_A_USER_CANCELED = 90,
	TLS_A_NO_APPLICATION_PROTOCOL = 120,
};

/* Why a handshake failed (counted by the caller, named by tls_hs_fail_name). */
#define TLS_HS_FAILS(X) \
	X(protocol, "the peer's messages were malformed or refused (alert sent)") \
	X(alpn, "no common ALPN protocol") \
	X(version, "not TLS 1.3") \
	X(internal, "out of memory or a library error")
enum tls_hs_fail {
#define TLS_HS_FAIL_ENUM(name, text) TLS_HSF_##name,
	TLS_HS_FAILS(TLS_HS_FAIL_ENUM)
#undef TLS_HS_FAIL_ENUM
	TLS_HS_FAIL_REASONS
};
const char *tls_hs_fail_name(unsigned reason);

/* Client resumption (tls_client_opts.resume): libssl alone can turn a
 * ticket into a session (the resumption secret never leaves its SSL
 * object), and an SSL object is what a connection must not keep. So each
 * thread holds one session, which every handshake it starts offers, and
 * when it has none (or it is past half its lifetime, or the server refused
 * it) the next connection whose handshake completes becomes the thread's
 * donor: its SSL object stays (one per thread, not per connection) until
 * its server's NewSessionTicket arrives through tls_open, which seals the
 * message again as the record that SSL object expects next (same receive
 * key, its own sequence number) and lets libssl read it. A donor whose
 * ticket has not come in 2 s is replaced by the next handshake. A ticket is
 * thus offered by many connections of a thread (RFC 8446 C.4 asks clients
 * not to reuse one: this is for load generation and tests, and servers that
 * take stateless tickets, as ours does, accept it). */

/* ---- contexts (immutable, shareable) -------------------------------------- */
struct tls_ctx;

struct tls_server_opts {
	const char *cert_file;   /* PEM, the chain after the leaf */
	const char *key_file;    /* PEM */
	int64_t ticket_period_s; /* the ticket key changes this often; 0: no tickets */
	const uint8_t *ticket_secret; /* 32 bytes the ticket keys are derived from (NULL: random) */
};

/* The 32-byte secret ticket keys are derived from: SHA-256 of a file's
 * contents (at least 16 bytes; gateways behind one name share the file so
 * a ticket from one resumes on another), or, with file NULL, random bytes
 * (tickets last as long as the process). Returns 0, or -1 with err. */
int tls_ticket_secret(const char *file, uint8_t out[32], char *err, size_t errlen);

/* One line about a server context's certificate, for logs and to tell a
 * reload that changed it: subject, expiry and SHA-256 fingerprint. */
const char *tls_ctx_cert_info(const struct tls_ctx *ctx, char *buf, size_t cap);

/* Returns NULL with a message in err. */
struct tls_ctx *tls_server_new(const struct tls_server_opts *o, char *err, size_t errlen);

struct tls_client_opts {
	const char *ca_file; /* verify the server against it; NULL: do not verify (--tls-insecure) */
	const char *server_name; /* SNI and the name checked; NULL: none */
	int resume; /* resume with session tickets (see "Client resumption" above) */
};
struct tls_ctx *tls_client_new(const struct tls_client_opts *o, char *err, size_t errlen);

/* Drop the caller's reference. Handshakes started on ctx keep it alive
 * until they end, so a reload may free the old context at once. */
void tls_ctx_free(struct tls_ctx *ctx);

/* ---- per thread ------------------------------------------------------------- */
struct tls_thread; /* opaque */
struct tls_thread *tls_thread_new(char *err, size_t errlen);
void tls_thread_free(struct tls_thread *th);

/* ---- per connection --------------------------------------------------------- */
enum tls_state { TLS_S_NONE = 0, TLS_S_HANDSHAKE, TLS_S_OPEN, TLS_S_CLOSED };

#define TLS_F_SERVER 0x01u   /* our role */
#define TLS_F_KU_SEND 0x02u  /* a KeyUpdate of ours goes out before the next data */
#define TLS_F_KU_ASK 0x04u   /* ...and asks the peer to update too */
#define TLS_F_RESUMED 0x08u  /* the handshake resumed a session */
#define TLS_F_CLOSE_SENT 0x10u /* our close_notify or fatal alert went out: nothing more */
#define TLS_F_TICKET 0x20u   /* client: the thread's donor, its ticket awaited (ticket_id) */

struct carry;
struct tls_conn {
	uint8_t rx_secret[48], tx_secret[48]; /* current application traffic secrets */
	uint64_t rx_seq, tx_seq;
	union {
		void *ssl;           /* TLS_S_HANDSHAKE: the SSL object */
		struct carry *part;  /* TLS_S_OPEN: a record cut by the end of a receive */
	};
	uint8_t state;   /* enum tls_state */
	uint8_t suite;   /* 1 AES-128-GCM/SHA-256, 2 AES-256-GCM/SHA-384, 3 ChaCha20-Poly1305/SHA-256 */
	uint8_t flags;   /* TLS_F_* */
	uint8_t got;     /* handshake: which secrets the key log has given (bits 0, 1) */
	uint32_t ticket_id; /* TLS_F_TICKET: which of the thread's donors this is */
};
_Static_assert(sizeof(struct tls_conn) == 128, "a TLS connection's state is 128 bytes");

/* Start a handshake on tc (zeroed by the caller) with ctx. Returns 0, or -1
 * (out of memory, counted as internal). */
int tls_conn_start(struct tls_thread *th, struct tls_conn *tc, const struct tls_ctx *ctx);

/* Free whatever tc holds (the SSL object, a carried record) and wipe its
 * secrets. Leaves state TLS_S_NONE. */
void tls_conn_free(struct tls_conn *tc);

/* Handshake results. */
#define TLS_HS_MORE 0 /* needs more input (send *out first) */
#define TLS_HS_DONE 1 /* done: *used bytes of the input were the handshake's;
		       * the rest is records for tls_open */
#define TLS_HS_FAIL (-1) /* failed: send *out (libssl's alert), then close; *why says why */

/* Feed n received bytes to the handshake. *out / *outn: what to send now
 * (valid until the next call on th). */
int tls_handshake(struct tls_thread *th, struct tls_conn *tc, const uint8_t *in, size_t n, size_t *used,
		  const uint8_t **out, size_t *outn, unsigned *why);

/* Client side: the connection starts the handshake (ClientHello) without
 * input: call tls_handshake with n = 0. */

/* Open the records in buf[0..n) (received bytes, TLS_S_OPEN). The
 * plaintext of every complete record is packed at *plain (in buf, or in
 * the thread's scratch when a carried record completes; valid until the
 * next call on th). Returns 0 (more to come), 1 when the peer closed
 * (close_notify: the plaintext before it is good; answer with ours), 2 on
 * the peer's fatal alert (close, send nothing), or -alert for a fatal
 * error: send tls_alert() with it and close (the plaintext before the bad
 * record is good). */
int tls_open(struct tls_thread *th, struct tls_conn *tc, uint8_t *buf, size_t n, const uint8_t **plain,
	     size_t *plain_len);

/* Whether tc may still send: the handshake is done and neither our
 * close_notify nor a fatal alert of ours went out. The peer's close_notify
 * (TLS_S_CLOSED) closes only its direction: we may answer, then close. */
static inline int tls_can_send(const struct tls_conn *tc)
{
	return (tc->state == TLS_S_OPEN || tc->state == TLS_S_CLOSED) && tc->suite && !(tc->flags & TLS_F_CLOSE_SENT);
}

/* Whether tc has something to send even without data (a KeyUpdate). */
static inline int tls_wants_write(const struct tls_conn *tc)
{
	return (tc->flags & TLS_F_KU_SEND) != 0;
}

/* Bytes tls_seal(n) writes at most. */
size_t tls_seal_bound(const struct tls_conn *tc, size_t n);

/* Seal n bytes of plaintext (n may be 0 for a pending KeyUpdate alone) into
 * as few records as the record size allows, at out (tls_seal_bound bytes).
 * Returns the bytes written, or 0 on a library error or when
 * !tls_can_send (close then). */
size_t tls_seal(struct tls_thread *th, struct tls_conn *tc, const uint8_t *in, size_t n, uint8_t *out);

/* One alert record (close_notify warning, or a fatal one) into out
 * (TLS_OVERHEAD + 2 bytes). After it, nothing more is sealed. Returns the
 * bytes written, or 0 when nothing may be sent (already sent one). */
size_t tls_alert(struct tls_thread *th, struct tls_conn *tc, unsigned desc, uint8_t *out);

/* Ask for a KeyUpdate of ours (ask_peer: update_requested). */
void tls_key_update(struct tls_conn *tc, int ask_peer);

/* The suite's IANA name, for logs. */
const char *tls_suite_name(unsigned suite);

#endif
