/* token.h: login tokens a gateway verifies without a round trip.
 *
 *   token = be64(expiry) || HMAC-SHA256(secret, "gwtok1" || be64(user) || be64(expiry))
 *
 * 40 bytes; expiry in Unix seconds. HMAC from libsodium (no hand-written
 * crypto); the MAC is compared in constant time. The secret comes from a file
 * shared by gateways and whatever mints tokens (tools/mint-token, loadgen).
 * A loaded secret is read-only, so any thread may verify with it.
 */
#ifndef RUNTIME_TOKEN_H
#define RUNTIME_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define TOKEN_LEN 40u
#define TOKEN_SECRET_MIN 16u  /* bytes */
#define TOKEN_SECRET_MAX 4096u

struct token_secret {
	crypto_auth_hmacsha256_state keyed; /* HMAC state with the key absorbed */
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

/* Check a token presented for `user` at time now_s (Unix seconds). */
enum token_result token_verify(const struct token_secret *s, uint64_t user, const uint8_t *tok, size_t len,
			       uint64_t now_s);

/* Hex helpers for tools: token_hex writes 2*TOKEN_LEN chars plus NUL;
 * token_unhex returns the bytes decoded or -1. */
void token_hex(const uint8_t tok[TOKEN_LEN], char out[2 * TOKEN_LEN + 1]);
int token_unhex(const char *hex, uint8_t *out, size_t cap);

#endif
