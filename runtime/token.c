/* token.c: see token.h. */
#include "runtime/token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proto/wire.h"

void token_secret_set(struct token_secret *s, const uint8_t *key, size_t len)
{
	crypto_auth_hmacsha256_init(&s->keyed, key, len);
	static const char tag[] = "gwtok key id";
	crypto_hash_sha256_state h;
	uint8_t d[crypto_hash_sha256_BYTES];
	crypto_hash_sha256_init(&h);
	crypto_hash_sha256_update(&h, (const uint8_t *)tag, sizeof tag - 1);
	crypto_hash_sha256_update(&h, key, len);
	crypto_hash_sha256_final(&h, d);
	s->id = ((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3];
}

int token_secret_load(struct token_secret *s, const char *path, char *err, size_t errlen)
{
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium failed to initialise");
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open secret file %s: %s", path, strerror(errno));
		return -1;
	}
	uint8_t buf[TOKEN_SECRET_MAX + 2];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof buf - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "cannot read secret file %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof buf)
			break;
	}
	close(fd);
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > TOKEN_SECRET_MAX) {
		snprintf(err, errlen, "secret file %s is over %u bytes", path, TOKEN_SECRET_MAX);
		return -1;
	}
	if (len < TOKEN_SECRET_MIN) {
		snprintf(err, errlen, "secret file %s holds %zu bytes; at least %u are needed", path, len,
			 TOKEN_SECRET_MIN);
		return -1;
	}
	token_secret_set(s, buf, len);
	sodium_memzero(buf, sizeof buf);
	return 0;
}

/* The MAC of the 40-byte format (no key id). */
static void mac_v1(const struct token_secret *s, uint64_t user, uint64_t expiry, uint8_t out[32])
{
	uint8_t msg[6 + 16];
	memcpy(msg, "gwtok1", 6);
	wire_be64_put(msg + 6, user);
	wire_be64_put(msg + 14, expiry);
	crypto_auth_hmacsha256_state st = s->keyed; /* the key is absorbed once, at load */
	crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
	crypto_auth_hmacsha256_final(&st, out);
}

static void mac_v2(const struct token_secret *s, uint32_t kid, uint64_t user, uint64_t expiry, uint8_t out[32])
{
	uint8_t msg[6 + 4 + 16];
	memcpy(msg, "gwtok2", 6);
	msg[6] = (uint8_t)(kid >> 24), msg[7] = (uint8_t)(kid >> 16), msg[8] = (uint8_t)(kid >> 8), msg[9] = (uint8_t)kid;
	wire_be64_put(msg + 10, user);
	wire_be64_put(msg + 18, expiry);
	crypto_auth_hmacsha256_state st = s->keyed;
	crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
	crypto_auth_hmacsha256_final(&st, out);
}

void token_mint(const struct token_secret *s, uint64_t user, uint64_t expiry, uint8_t out[TOKEN_LEN])
{
	out[0] = TOKEN_VERSION;
	out[1] = (uint8_t)(s->id >> 24), out[2] = (uint8_t)(s->id >> 16), out[3] = (uint8_t)(s->id >> 8), out[4] = (uint8_t)s->id;
	wire_be64_put(out + 5, expiry);
	mac_v2(s, s->id, user, expiry, out + 13);
}

uint32_t token_key_id(const uint8_t *tok, size_t len)
{
	if (len != TOKEN_LEN || !tok || tok[0] != TOKEN_VERSION)
		return 0;
	return ((uint32_t)tok[1] << 24) | ((uint32_t)tok[2] << 16) | ((uint32_t)tok[3] << 8) | tok[4];
}

/* TOKEN_BAD, or the token's expiry in *expiry when s signed it. */
static int check(const struct token_secret *s, uint64_t user, const uint8_t *tok, size_t len, uint64_t *expiry)
{
	uint8_t want[32];
	if (len == TOKEN_V1_LEN) {
		*expiry = wire_be64_get(tok);
		mac_v1(s, user, *expiry, want);
		return crypto_verify_32(want, tok + 8) == 0 ? 0 : -1;
	}
	if (len != TOKEN_LEN || tok[0] != TOKEN_VERSION || token_key_id(tok, len) != s->id)
		return -1;
	*expiry = wire_be64_get(tok + 5);
	mac_v2(s, s->id, user, *expiry, want);
	return crypto_verify_32(want, tok + 13) == 0 ? 0 : -1;
}

enum token_result token_verify(const struct token_secret *s, uint64_t user, const uint8_t *tok, size_t len,
			       uint64_t now_s)
{
	uint64_t expiry;
	if (!tok || check(s, user, tok, len, &expiry) != 0)
		return TOKEN_BAD;
	return expiry < now_s ? TOKEN_EXPIRED : TOKEN_OK;
}

enum token_result token_verify_keys(const struct token_keys *k, uint64_t user, const uint8_t *tok, size_t len,
				    uint64_t now_s)
{
	uint32_t kid = token_key_id(tok, len);
	for (unsigned i = 0; i < k->n; i++)
		if (len == TOKEN_V1_LEN || k->key[i].id == kid) {
			enum token_result r = token_verify(&k->key[i], user, tok, len, now_s);
			if (r != TOKEN_BAD || len != TOKEN_V1_LEN)
				return r;
		}
	return TOKEN_BAD;
}

void token_hex(const uint8_t tok[TOKEN_LEN], char out[2 * TOKEN_LEN + 1])
{
	sodium_bin2hex(out, 2 * TOKEN_LEN + 1, tok, TOKEN_LEN);
}

int token_unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;
	const char *end;
	if (sodium_hex2bin(out, cap, hex, strlen(hex), NULL, &n, &end) != 0 || *end != '\0')
		return -1;
	return (int)n;
}
