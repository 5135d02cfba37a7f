/* mint-token: make login tokens (and secrets) for the gateway.
 *
 *   mint-token --new-secret FILE                  write a fresh random secret (mode 0600)
 *   mint-token --secret-file FILE --user 42       print the token for user 42 (hex)
 *   mint-token --secret-file FILE --user 1 --count 1000 --ttl 1h
 *                                                 print "user token" lines for users 1..1000
 *
 * The token format is in proto/PROTOCOL.md ("Auth tokens").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime/opts.h"
#include "runtime/token.h"

static int new_secret(const char *path)
{
	if (sodium_init() < 0)
		return 1;
	uint8_t key[32];
	char hex[65];
	randombytes_buf(key, sizeof key);
	sodium_bin2hex(hex, sizeof hex, key, sizeof key);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "mint-token: cannot create %s: %s%s\n", path, strerror(errno),
			errno == EEXIST ? " (refusing to overwrite a secret)" : "");
		return 1;
	}
	hex[64] = '\n';
	if (write(fd, hex, 65) != 65 || close(fd) != 0) {
		fprintf(stderr, "mint-token: writing %s: %s\n", path, strerror(errno));
		return 1;
	}
	fprintf(stderr, "mint-token: wrote a new 256-bit secret to %s\n", path);
	return 0;
}

int main(int argc, char **argv)
{
	const char *secret_file = NULL, *new_file = NULL;
	int64_t user = 0, count = 1, ttl_ms = 0, expiry = 0;
	const struct opt opts[] = {
		{"secret-file", OPT_STR, &secret_file, NULL, 0, 0, "the gateway's --auth-secret-file", 0},
		{"new-secret", OPT_STR, &new_file, NULL, 0, 0, "write a new random secret to this file and exit", 0},
		{"user", OPT_INT, &user, "0", 0, INT64_MAX, "user id (>= 1)", 0},
		{"count", OPT_INT, &count, "1", 1, 100000000, "mint for users user .. user+count-1, one \"user token\" line each", 0},
		{"ttl", OPT_MS, &ttl_ms, "24h", 1000, 100ll * 365 * 86400 * 1000, "validity from now", 0},
		{"expiry", OPT_INT, &expiry, "0", 0, INT64_MAX, "absolute expiry, Unix seconds (overrides --ttl)", 0},
	};
	char err[256];
	int r = opts_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
			   "usage: mint-token --secret-file FILE --user ID [--count N] [--ttl 24h]\n"
			   "       mint-token --new-secret FILE\n"
			   "Prints gateway login tokens in hex (PROTOCOL.md, \"Auth tokens\").",
			   err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "mint-token: %s\n", err);
		return 2;
	}
	if (new_file)
		return new_secret(new_file);
	if (!secret_file || user < 1) {
		fprintf(stderr, "mint-token: --secret-file and --user (>= 1) are required (see --help)\n");
		return 2;
	}
	struct token_secret s;
	if (token_secret_load(&s, secret_file, err, sizeof err) != 0) {
		fprintf(stderr, "mint-token: %s\n", err);
		return 1;
	}
	uint64_t exp = expiry ? (uint64_t)expiry : (uint64_t)time(NULL) + (uint64_t)(ttl_ms / 1000);
	for (int64_t i = 0; i < count; i++) {
		uint8_t tok[TOKEN_LEN];
		char hex[2 * TOKEN_LEN + 1];
		token_mint(&s, (uint64_t)(user + i), exp, tok);
		token_hex(tok, hex);
		if (count == 1)
			printf("%s\n", hex);
		else
			printf("%lld %s\n", (long long)(user + i), hex);
	}
	return 0;
}
