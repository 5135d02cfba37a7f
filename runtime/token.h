/* token.h: login tokens a gateway verifies without a round trip.
 *
 *   token = 0x02 || be32(kid) || be64(expiry)
 *           || HMAC-SHA256(secret, "gwtok2" || be32(kid) || be64(user) || be64(expiry))
 *
 * 45 bytes; expiry in Unix seconds; kid is the key id of the secret that
 * signed it: the first 4 bytes (big-endian) of SHA-256("gwtok key id" ||
 * secret), so a gateway holding the current and the previous secret knows
 * which one to check with, and the id reveals nothing about the key. The
 * 40-byte format before key ids,
 *
 *   token = be64(expiry) || HMAC-SHA256(secret, "gwtok1" || be64(user) || be64(expiry)),
 *
 * is still accepted (checked against every secret held), so tokens minted
 * before an upgrade keep working until they expire. HMAC and SHA-256 from
 * libsodium (no hand-written crypto); MACs are compared in constant time.
 * The secret comes from a file shared by gateways and whatever mints tokens
 * (tools/mint-token, loadgen). A loaded secret is read-only, so any thread
 * may verify with it.
 */
#ifndef RUNTIME_TOKEN_H
#define RUNTIME_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define TOKEN_LEN 45u    /* what token_mint writes */
#define TOKEN_V1_LEN 40u /* the format without a key id, still accepted */
#define TOKEN_VERSION 2u
#define TOKEN_SECRET_MIN 16u  /* bytes */
#define TOKEN_SECRET_MAX 4096u
#define TOKEN_KEYS 2u /* a gateway holds the current and the previous secret */

struct token_secret {
	crypto_auth_hmacsha256_state keyed; /* HMAC state with the key absorbed */
	uint32_t id;                        /* its key id (see above) */
};

/* The secrets a gateway accepts: key[0] is the current one (new tokens are
 * minted with it), key[1], if n is 2, the previous one during a rotation. */
struct token_keys {
	unsigned n;
	struct token_secret key[TOKEN_KEYS];
};

enum token_result {
	TOKEN_OK = 0,
	TOKEN_BAD = 1,     /* wrong length, forged, or for another user */
	TOKEN_EXPIRED = 2, /* genuine but past its expiry */
};

/* Load the secret from a file: its bytes, minus one trailing newline, at
 * least TOKEN_SECRET_MIN of them. Returns 0, or -1 with a reason in err. */
int token_secret_load(struct token_secret *s, const char *path, char *err, size_t errlen);

/* Use secret bytes directly (tests). */
void token_secret_set(struct token_secret *s, const uint8_t *key, size_t len);

/* Write the 40-byte token for (user, expiry) to out. */
void token_mint(const struct token_secret *s, uint64_t user, uint64_t expiry, uint8_t out[TOKEN_LEN]);

/* Check a token presented for `user` at time now_s (Unix seconds) against
 * one secret. */
enum token_result token_verify(const struct token_secret *s, uint64_t user, const uint8_t *tok, size_t len,
			       uint64_t now_s);

/* The same against every secret held: a token with a key id is checked
 * with that key only (an unknown id is TOKEN_BAD); a 40-byte one with each. */
enum token_result token_verify_keys(const struct token_keys *k, uint64_t user, const uint8_t *tok, size_t len,
				    uint64_t now_s);

/* The key id a token names (0 for the 40-byte format or a malformed one). */
uint32_t token_key_id(const uint8_t *tok, size_t len);

/* Hex helpers for tools: token_hex writes 2*TOKEN_LEN chars plus NUL (for a
 * token of TOKEN_LEN bytes);
 * token_unhex returns the bytes decoded or -1. */
void token_hex(const uint8_t tok[TOKEN_LEN], char out[2 * TOKEN_LEN + 1]);
int token_unhex(const char *hex, uint8_t *out, size_t cap);

#endif
