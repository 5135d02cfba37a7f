/* peerauth.h: how the two ends of a dist link prove they hold the cluster
 * secret (PROTOCOL.md 4.2, HELLO and AUTH).
 *
 * Each side sends HELLO with a fresh 32-byte random nonce and the id of the
 * key it signs with; once it has the peer's HELLO it sends
 *
 *   AUTH mac = HMAC-SHA256(key, "GWDL2 auth" || dir || u8 len(I) || I || u8 len(R) || R)
 *
 * where I and R are the connecting and the accepting side's HELLO frames as
 * sent (prefix included), dir is 1 for the MAC of the connecting side and 2
 * for the accepting side's (so a MAC cannot be reflected), and key is the one
 * the sender's HELLO names. Both nonces are in the transcript, so a recorded
 * AUTH is useless on another connection. HMAC and randomness come from
 * libsodium; nothing here is hand-written crypto.
 *
 * Keys: the cluster secret file holds one or two secrets, one per line (each
 * line's bytes without its newline are the key, at least
 * PEERAUTH_SECRET_MIN of them: `mint-token --new-secret` writes 64 hex
 * characters). The first line signs; every line is accepted. So a secret is
 * rotated with no link refused: add the new one as a second line everywhere,
 * then swap the lines everywhere, then drop the old one. A key's id is the
 * first 4 bytes (big-endian) of SHA-256("GWDL key id" || key): it tells the
 * peer which key to check with and reveals nothing about the key.
 *
 * Loaded keys are read-only: any thread may use them.
 */
#ifndef RUNTIME_PEERAUTH_H
#define RUNTIME_PEERAUTH_H

#include <stddef.h>
#include <stdint.h>

#define PEERAUTH_NONCE 32u
#define PEERAUTH_MAC 32u
#define PEERAUTH_SECRET_MIN 32u
#define PEERAUTH_SECRET_MAX 1024u
#define PEERAUTH_KEYS 2u
#define PEERAUTH_DIR_CONNECT 1u /* the MAC of the side that connected */
#define PEERAUTH_DIR_ACCEPT 2u  /* ...and of the side that accepted */

struct peerauth_keys {
	unsigned n; /* 1 or 2; key 0 signs */
	uint32_t id[PEERAUTH_KEYS];
	size_t len[PEERAUTH_KEYS];
	uint8_t key[PEERAUTH_KEYS][PEERAUTH_SECRET_MAX];
};

/* Load the secret file (see above). Returns 0, or -1 with a reason in err. */
int peerauth_load(struct peerauth_keys *k, const char *path, char *err, size_t errlen);

/* Add a key directly (tests, fuzzers): the first one added signs. Returns 0,
 * or -1 when two are held already or len is out of range. */
int peerauth_add(struct peerauth_keys *k, const uint8_t *key, size_t len);

/* The id of a key (see above). */
uint32_t peerauth_key_id(const uint8_t *key, size_t len);

/* The id of the signing key. */
static inline uint32_t peerauth_sign_id(const struct peerauth_keys *k)
{
	return k->id[0];
}

/* Whether a key with this id is held. */
int peerauth_has(const struct peerauth_keys *k, uint32_t id);

/* A reload read the secret file again: whether next holds other keys than
 * cur; if so, logs which key signs and which are accepted now. */
int peerauth_reloaded(const struct peerauth_keys *cur, const struct peerauth_keys *next);

/* Fill out with PEERAUTH_NONCE random bytes. */
void peerauth_nonce(uint8_t out[PEERAUTH_NONCE]);

/* The MAC of direction dir over the two HELLOs (each at most 255 bytes) with
 * the key of this id. Returns 0, or -1 when no such key is held. */
int peerauth_mac(const struct peerauth_keys *k, uint32_t id, unsigned dir, const uint8_t *hello_connect, size_t nc,
		 const uint8_t *hello_accept, size_t na, uint8_t out[PEERAUTH_MAC]);

/* Check a received MAC in constant time. Returns 0 when it is right, -1
 * otherwise (no such key, or a wrong MAC). */
int peerauth_verify(const struct peerauth_keys *k, uint32_t id, unsigned dir, const uint8_t *hello_connect, size_t nc,
		    const uint8_t *hello_accept, size_t na, const uint8_t mac[PEERAUTH_MAC]);

#endif
