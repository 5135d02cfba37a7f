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

static void mac(const struct token_secret *s, uint64_t user, uint64_t expiry, uint8_t out[32])
{
	uint8_t msg[6 + 16];
	memcpy(msg, "gwtok1", 6);
	wire_be64_put(msg + 6, user);
	wire_be64_put(msg + 14, expiry);
	crypto_auth_hmacsha256_state st = s->keyed; /* the key is absorbed once, at load */
	crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
	crypto_auth_hmacsha256_final(&st, out);
}

void token_mint(const struct token_secret *s, uint64_t user, uint64_t expiry, uint8_t out[TOKEN_LEN])
{
	wire_be64_put(out, expiry);
	mac(s, user, expiry, out + 8);
}

enum token_result token_verify(const struct token_secret *s, uint64_t user, const uint8_t *tok, size_t len,
			       uint64_t now_s)
{
	if (len != TOKEN_LEN)
		return TOKEN_BAD;
	uint64_t expiry = wire_be64_get(tok);
	uint8_t want[32];
	mac(s, user, expiry, want);
	if (crypto_verify_32(want, tok + 8) != 0)
		return TOKEN_BAD;
	if (expiry < now_s)
		return TOKEN_EXPIRED;
	return TOKEN_OK;
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
