/* test_token.c: criterion unit tests of login tokens (runtime/token.h).
 *
 * The known-answer tests pin the formats of proto/PROTOCOL.md section 3.5:
 *   v2 = 0x02 || be32(kid) || be64(expiry)
 *        || HMAC-SHA256(secret, "gwtok2" || be32(kid) || be64(user) || be64(expiry)),
 *        kid = SHA-256("gwtok key id" || secret)[0..4)
 *   v1 = be64(expiry) || HMAC-SHA256(secret, "gwtok1" || be64(user) || be64(expiry))
 * The expected bytes were computed outside this code base, with python3:
 *   import hmac, hashlib, struct
 *   kid = hashlib.sha256(b"gwtok key id" + key).digest()[:4]
 *   msg = b"gwtok2" + kid + struct.pack(">Q", user) + struct.pack(">Q", expiry)
 *   tok = b"\x02" + kid + struct.pack(">Q", expiry) + hmac.new(key, msg, hashlib.sha256).digest()
 * (v1: msg = b"gwtok1" + ..., tok = struct.pack(">Q", expiry) + mac), the v1
 * ones cross-checked with `openssl dgst -sha256 -hmac KEY`.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/token.h"

static void setup(void)
{
	cr_assert_geq(sodium_init(), 0);
}

TestSuite(token, .init = setup);

static const uint8_t KEY_A[] = "test-secret-0123456789abcdef"; /* 28 bytes + NUL */
#define KEY_A_LEN (sizeof KEY_A - 1)

static void secret(struct token_secret *s, const void *key, size_t len)
{
	token_secret_set(s, key, len);
}

static void unhex_or_die(const char *hex, uint8_t *out, size_t want)
{
	cr_assert_eq(token_unhex(hex, out, want), (int)want, "bad test vector %s", hex);
}

/* ---- known answers ------------------------------------------------------------ */

Test(token, known_answer_short_key)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	cr_assert_eq(s.id, 0x658bac9bu, "key id differs from the PROTOCOL.md 3.5 rule");
	uint8_t tok[TOKEN_LEN], want[TOKEN_LEN];
	static const char hexwant[] = "02658bac9b000000006955b900"
				      "59611cc4bcb2eb485b882e4c8b4f559de827140ce6d6a6020379ba3700b8fa05";
	unhex_or_die(hexwant, want, TOKEN_LEN);
	token_mint(&s, 0x0102030405060708ull, 1767225600ull, tok);
	cr_assert_arr_eq(tok, want, TOKEN_LEN, "token bytes differ from the PROTOCOL.md 3.5 format");
	cr_assert_eq(token_verify(&s, 0x0102030405060708ull, want, TOKEN_LEN, 1767225600ull), TOKEN_OK);
	cr_assert_eq(token_key_id(want, TOKEN_LEN), 0x658bac9bu);
	char hex[2 * TOKEN_LEN + 1];
	token_hex(tok, hex);
	cr_assert_str_eq(hex, hexwant);
	/* the 40-byte format of earlier versions is still accepted */
	uint8_t v1[TOKEN_V1_LEN];
	unhex_or_die("000000006955b900"
		     "ad1c7892ad7f0686f48172c306c2c31e6548aeeb11583eba2d840d2b07529174",
		     v1, TOKEN_V1_LEN);
	cr_assert_eq(token_verify(&s, 0x0102030405060708ull, v1, TOKEN_V1_LEN, 1767225600ull), TOKEN_OK);
	cr_assert_eq(token_verify(&s, 0x0102030405060708ull, v1, TOKEN_V1_LEN, 1767225601ull), TOKEN_EXPIRED);
	cr_assert_eq(token_verify(&s, 0x0102030405060709ull, v1, TOKEN_V1_LEN, 0), TOKEN_BAD);
	cr_assert_eq(token_key_id(v1, TOKEN_V1_LEN), 0);
}

/* A key longer than the SHA-256 block (64 bytes) is hashed first by HMAC. */
Test(token, known_answer_long_key_max_expiry)
{
	uint8_t key[100];
	for (unsigned i = 0; i < sizeof key; i++)
		key[i] = (uint8_t)i;
	struct token_secret s;
	secret(&s, key, sizeof key);
	uint8_t tok[TOKEN_LEN], want[TOKEN_LEN];
	unhex_or_die("029279b2f3ffffffffffffffff"
		     "51835b6198bbfefd3e318b82456db31e876b4a96f38544a63688a7dab884bff2",
		     want, TOKEN_LEN);
	token_mint(&s, 1, UINT64_MAX, tok);
	cr_assert_arr_eq(tok, want, TOKEN_LEN);
	cr_assert_eq(token_verify(&s, 1, tok, TOKEN_LEN, UINT64_MAX), TOKEN_OK);
	uint8_t v1[TOKEN_V1_LEN];
	unhex_or_die("ffffffffffffffff"
		     "0c6aa8a676de147578d8494bab8a21a241142f2bca035fd4109421afc5236ffd",
		     v1, TOKEN_V1_LEN);
	cr_assert_eq(token_verify(&s, 1, v1, TOKEN_V1_LEN, UINT64_MAX), TOKEN_OK);
}

/* ---- mint / verify -------------------------------------------------------------- */

Test(token, round_trip)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	const uint64_t users[] = {1, 2, 1000, 0xffffffffull, UINT64_MAX, 0};
	for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
		uint8_t tok[TOKEN_LEN + 8];
		memset(tok, 0xee, sizeof tok);
		token_mint(&s, users[i], 2000000000ull, tok);
		for (size_t j = TOKEN_LEN; j < sizeof tok; j++)
			cr_assert_eq(tok[j], 0xee, "token_mint wrote past %u bytes", TOKEN_LEN);
		/* version, key id, then the big-endian expiry */
		cr_assert_eq(tok[0], TOKEN_VERSION);
		cr_assert_eq(token_key_id(tok, TOKEN_LEN), s.id);
		cr_assert_eq(tok[5], 0);
		cr_assert_eq(tok[9], 0x77);
		cr_assert_eq(tok[12], 0x00);
		cr_assert_eq(token_verify(&s, users[i], tok, TOKEN_LEN, 1000000000ull), TOKEN_OK);
	}
	/* deterministic, and the same key loaded twice gives the same tokens */
	struct token_secret s2;
	secret(&s2, KEY_A, KEY_A_LEN);
	uint8_t a[TOKEN_LEN], b[TOKEN_LEN];
	token_mint(&s, 77, 123, a);
	token_mint(&s2, 77, 123, b);
	cr_assert_arr_eq(a, b, TOKEN_LEN);
	/* verifying does not disturb the secret */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(token_verify(&s, 77, a, TOKEN_LEN, 100), TOKEN_OK);
}

Test(token, forged_mac_or_expiry_is_bad)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	uint8_t tok[TOKEN_LEN];
	token_mint(&s, 42, 5000, tok);
	for (unsigned byte = 0; byte < TOKEN_LEN; byte++)
		for (unsigned bit = 0; bit < 8; bit++) {
			uint8_t t[TOKEN_LEN];
			memcpy(t, tok, TOKEN_LEN);
			t[byte] ^= (uint8_t)(1u << bit);
			cr_assert_eq(token_verify(&s, 42, t, TOKEN_LEN, 1000), TOKEN_BAD, "bit %u of byte %u flipped: accepted",
				     bit, byte);
		}
	/* pushing the expiry forward without the secret fails the MAC, not "ok" */
	uint8_t t[TOKEN_LEN];
	memcpy(t, tok, TOKEN_LEN);
	t[5] = 0x7f;
	cr_assert_eq(token_verify(&s, 42, t, TOKEN_LEN, 1000), TOKEN_BAD);
	/* an all-zero token */
	memset(t, 0, sizeof t);
	cr_assert_eq(token_verify(&s, 42, t, TOKEN_LEN, 0), TOKEN_BAD);
}

Test(token, wrong_user_is_bad)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	uint8_t tok[TOKEN_LEN];
	token_mint(&s, 1000, 5000, tok);
	cr_assert_eq(token_verify(&s, 1001, tok, TOKEN_LEN, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 999, tok, TOKEN_LEN, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 1000ull | (1ull << 63), tok, TOKEN_LEN, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 0, tok, TOKEN_LEN, 1000), TOKEN_BAD);
	/* wrong user and expired: the MAC fails first */
	cr_assert_eq(token_verify(&s, 1001, tok, TOKEN_LEN, 9000), TOKEN_BAD);
}

Test(token, wrong_length_is_bad)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	uint8_t tok[TOKEN_LEN + 1];
	token_mint(&s, 5, 5000, tok);
	tok[TOKEN_LEN] = 0;
	cr_assert_eq(token_verify(&s, 5, tok, TOKEN_LEN, 1000), TOKEN_OK);
	cr_assert_eq(token_verify(&s, 5, tok, TOKEN_LEN - 1, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 5, tok, TOKEN_LEN + 1, 1000), TOKEN_BAD); /* genuine token plus a byte */
	cr_assert_eq(token_verify(&s, 5, tok, TOKEN_V1_LEN, 1000), TOKEN_BAD); /* a v2 token cut to v1's length */
	cr_assert_eq(token_verify(&s, 5, tok, 0, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 5, NULL, 0, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 5, tok, 8, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify(&s, 5, tok, 32, 1000), TOKEN_BAD);
}

Test(token, expiry_boundaries)
{
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	uint8_t tok[TOKEN_LEN];
	token_mint(&s, 9, 1700000000ull, tok);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 0), TOKEN_OK);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 1699999999ull), TOKEN_OK);
	/* valid through its expiry second: the code rejects only expiry < now */
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 1700000000ull), TOKEN_OK);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 1700000001ull), TOKEN_EXPIRED);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, UINT64_MAX), TOKEN_EXPIRED);
	/* expiry 0 */
	token_mint(&s, 9, 0, tok);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 0), TOKEN_OK);
	cr_assert_eq(token_verify(&s, 9, tok, TOKEN_LEN, 1), TOKEN_EXPIRED);
}

Test(token, different_secrets_do_not_mix)
{
	struct token_secret a, b, c;
	secret(&a, KEY_A, KEY_A_LEN);
	secret(&b, "test-secret-0123456789abcdeF", KEY_A_LEN); /* one byte differs */
	secret(&c, KEY_A, KEY_A_LEN - 1);                        /* a prefix of A */
	uint8_t ta[TOKEN_LEN], tb[TOKEN_LEN], tc[TOKEN_LEN];
	token_mint(&a, 3, 5000, ta);
	token_mint(&b, 3, 5000, tb);
	token_mint(&c, 3, 5000, tc);
	cr_assert_arr_neq(ta, tb, TOKEN_LEN);
	cr_assert_arr_neq(ta, tc, TOKEN_LEN);
	cr_assert_eq(token_verify(&b, 3, ta, TOKEN_LEN, 0), TOKEN_BAD);
	cr_assert_eq(token_verify(&c, 3, ta, TOKEN_LEN, 0), TOKEN_BAD);
	cr_assert_eq(token_verify(&a, 3, tb, TOKEN_LEN, 0), TOKEN_BAD);
	cr_assert_eq(token_verify(&a, 3, tc, TOKEN_LEN, 0), TOKEN_BAD);
	cr_assert_eq(token_verify(&b, 3, tb, TOKEN_LEN, 0), TOKEN_OK);
}

/* A gateway holding the current and the previous secret (a rotation) takes
 * tokens of both, picks the key by id, and refuses a third. */
Test(token, keys_accept_current_and_previous)
{
	struct token_keys k = {.n = 2};
	secret(&k.key[0], KEY_A, KEY_A_LEN);
	secret(&k.key[1], "the-previous-secret-0123456789", 30);
	struct token_secret other;
	secret(&other, "a-third-secret-nobody-holds-00", 30);
	cr_assert_neq(k.key[0].id, k.key[1].id);
	uint8_t cur[TOKEN_LEN], prev[TOKEN_LEN], third[TOKEN_LEN];
	token_mint(&k.key[0], 8, 5000, cur);
	token_mint(&k.key[1], 8, 5000, prev);
	token_mint(&other, 8, 5000, third);
	cr_assert_eq(token_verify_keys(&k, 8, cur, TOKEN_LEN, 1000), TOKEN_OK);
	cr_assert_eq(token_verify_keys(&k, 8, prev, TOKEN_LEN, 1000), TOKEN_OK);
	cr_assert_eq(token_verify_keys(&k, 8, third, TOKEN_LEN, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify_keys(&k, 8, prev, TOKEN_LEN, 6000), TOKEN_EXPIRED);
	cr_assert_eq(token_verify_keys(&k, 9, prev, TOKEN_LEN, 1000), TOKEN_BAD);
	/* a token naming the current key's id but signed by the previous one */
	uint8_t mixed[TOKEN_LEN];
	memcpy(mixed, prev, TOKEN_LEN);
	memcpy(mixed + 1, cur + 1, 4);
	cr_assert_eq(token_verify_keys(&k, 8, mixed, TOKEN_LEN, 1000), TOKEN_BAD);
	/* once the previous secret is dropped, its tokens are refused */
	k.n = 1;
	cr_assert_eq(token_verify_keys(&k, 8, prev, TOKEN_LEN, 1000), TOKEN_BAD);
	cr_assert_eq(token_verify_keys(&k, 8, cur, TOKEN_LEN, 1000), TOKEN_OK);
	/* 40-byte tokens are tried with each key held */
	k.n = 2;
	uint8_t v1[TOKEN_V1_LEN];
	unhex_or_die("000000006955b900"
		     "ad1c7892ad7f0686f48172c306c2c31e6548aeeb11583eba2d840d2b07529174",
		     v1, TOKEN_V1_LEN);
	struct token_keys swapped = {.n = 2, .key = {k.key[1], k.key[0]}};
	cr_assert_eq(token_verify_keys(&swapped, 0x0102030405060708ull, v1, TOKEN_V1_LEN, 0), TOKEN_OK);
	cr_assert_eq(token_verify_keys(&k, 0x0102030405060708ull, v1, TOKEN_V1_LEN, 0), TOKEN_OK);
}

/* ---- token_secret_load ------------------------------------------------------------ */

static char tmpdir[64];

static const char *tmpfile_with(const char *name, const void *data, size_t len)
{
	static char path[128];
	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/test_token.XXXXXX");
		cr_assert_not_null(mkdtemp(tmpdir));
	}
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

static void cleanup(void)
{
	if (!tmpdir[0])
		return;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Token minted with s for a fixed (user, expiry). */
static void sample(const struct token_secret *s, uint8_t out[TOKEN_LEN])
{
	token_mint(s, 123, 456, out);
}

/* Load `data` from a file; expect success and the same tokens as set(key). */
static void expect_load_as(const void *data, size_t len, const void *key, size_t keylen)
{
	const char *p = tmpfile_with("secret", data, len);
	struct token_secret s, ref;
	char err[256] = "";
	cr_assert_eq(token_secret_load(&s, p, err, sizeof err), 0, "load of %zu bytes failed: %s", len, err);
	secret(&ref, key, keylen);
	uint8_t a[TOKEN_LEN], b[TOKEN_LEN];
	sample(&s, a);
	sample(&ref, b);
	cr_assert_arr_eq(a, b, TOKEN_LEN, "file of %zu bytes loaded as a different key", len);
}

static void expect_load_fails(const void *data, size_t len, const char *errpart)
{
	const char *p = tmpfile_with("secret", data, len);
	struct token_secret s;
	char err[256] = "";
	cr_assert_eq(token_secret_load(&s, p, err, sizeof err), -1, "load of %zu bytes succeeded", len);
	cr_assert_not_null(strstr(err, errpart), "error '%s' lacks '%s'", err, errpart);
}

Test(token, load_missing_file, .fini = cleanup)
{
	struct token_secret s;
	char err[256] = "";
	cr_assert_eq(token_secret_load(&s, "/nonexistent/dir/secret", err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "/nonexistent/dir/secret"), "error: %s", err);
	cr_assert_not_null(strstr(err, "cannot open"), "error: %s", err);
	/* a directory opens but cannot be read */
	tmpfile_with("x", "", 0);
	cr_assert_eq(token_secret_load(&s, tmpdir, err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "cannot read"), "error: %s", err);
}

Test(token, load_too_short, .fini = cleanup)
{
	expect_load_fails("", 0, "at least 16");
	expect_load_fails("\n", 1, "at least 16");
	expect_load_fails("0123456789abcde", 15, "holds 15 bytes");
	expect_load_fails("0123456789abcde\n", 16, "holds 15 bytes"); /* 15 + newline */
	expect_load_as("0123456789abcdef", 16, "0123456789abcdef", 16);
	expect_load_as("0123456789abcdef\n", 17, "0123456789abcdef", 16);
}

Test(token, load_too_long, .fini = cleanup)
{
	static uint8_t big[TOKEN_SECRET_MAX + 100];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t)('a' + i % 26);
	expect_load_as(big, TOKEN_SECRET_MAX, big, TOKEN_SECRET_MAX);
	expect_load_fails(big, TOKEN_SECRET_MAX + 1, "over 4096");
	expect_load_fails(big, TOKEN_SECRET_MAX + 2, "over 4096");
	expect_load_fails(big, sizeof big, "over 4096");
	/* exactly the maximum plus a newline is fine */
	big[TOKEN_SECRET_MAX] = '\n';
	expect_load_as(big, TOKEN_SECRET_MAX + 1, big, TOKEN_SECRET_MAX);
	/* one over plus a newline is not */
	big[TOKEN_SECRET_MAX] = 'x';
	big[TOKEN_SECRET_MAX + 1] = '\n';
	expect_load_fails(big, TOKEN_SECRET_MAX + 2, "over 4096");
}

Test(token, load_strips_one_trailing_newline, .fini = cleanup)
{
	const char key[] = "a shared secret of some length";
	const size_t n = sizeof key - 1;
	char withnl[64];
	memcpy(withnl, key, n);
	withnl[n] = '\n';
	withnl[n + 1] = '\n';
	expect_load_as(key, n, key, n);
	expect_load_as(withnl, n + 1, key, n);
	/* with and without the newline: the same tokens */
	struct token_secret s1, s2;
	char err[256];
	cr_assert_eq(token_secret_load(&s1, tmpfile_with("a", key, n), err, sizeof err), 0);
	cr_assert_eq(token_secret_load(&s2, tmpfile_with("b", withnl, n + 1), err, sizeof err), 0);
	uint8_t a[TOKEN_LEN], b[TOKEN_LEN];
	token_mint(&s1, 1, 2, a);
	token_mint(&s2, 1, 2, b);
	cr_assert_arr_eq(a, b, TOKEN_LEN);
	cr_assert_eq(token_verify(&s2, 1, a, TOKEN_LEN, 0), TOKEN_OK);
	/* only one newline goes: two make a key ending in "\n" */
	expect_load_as(withnl, n + 2, withnl, n + 1);
	/* "\r\n": only the "\n" goes */
	withnl[n] = '\r';
	withnl[n + 1] = '\n';
	expect_load_as(withnl, n + 2, withnl, n + 1);
	/* a newline inside the key is key material */
	char mid[] = "0123456789\nabcdefgh";
	expect_load_as(mid, sizeof mid - 1, mid, sizeof mid - 1);
	/* binary keys with NUL bytes */
	uint8_t bin[32];
	for (unsigned i = 0; i < sizeof bin; i++)
		bin[i] = (uint8_t)(i * 37);
	bin[5] = 0;
	expect_load_as(bin, sizeof bin, bin, sizeof bin);
}

Test(token, load_error_fits_small_buffer, .fini = cleanup)
{
	struct token_secret s;
	char err[8];
	memset(err, 'x', sizeof err);
	cr_assert_eq(token_secret_load(&s, "/nonexistent/secret/with/a/long/path", err, sizeof err), -1);
	cr_assert_eq(err[7], 0, "the error is not truncated to the buffer");
	cr_assert_eq(strlen(err), 7);
}

/* ---- hex --------------------------------------------------------------------------- */

Test(token, hex_round_trip)
{
	uint8_t tok[TOKEN_LEN], back[TOKEN_LEN + 4];
	for (unsigned i = 0; i < TOKEN_LEN; i++)
		tok[i] = (uint8_t)(i * 41 + 7);
	tok[0] = 0x00;
	tok[1] = 0xff;
	char hex[2 * TOKEN_LEN + 1];
	memset(hex, 'Z', sizeof hex);
	token_hex(tok, hex);
	cr_assert_eq(strlen(hex), 2 * TOKEN_LEN);
	cr_assert_eq(strncmp(hex, "00ff", 4), 0);
	for (unsigned i = 0; i < 2 * TOKEN_LEN; i++)
		cr_assert(strchr("0123456789abcdef", hex[i]) != NULL, "char %u '%c' is not lower-case hex", i, hex[i]);
	cr_assert_eq(token_unhex(hex, back, sizeof back), (int)TOKEN_LEN);
	cr_assert_arr_eq(back, tok, TOKEN_LEN);
	/* upper case decodes too */
	char up[2 * TOKEN_LEN + 1];
	for (unsigned i = 0; i <= 2 * TOKEN_LEN; i++)
		up[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 'a' + 'A' : hex[i]);
	memset(back, 0, sizeof back);
	cr_assert_eq(token_unhex(up, back, sizeof back), (int)TOKEN_LEN);
	cr_assert_arr_eq(back, tok, TOKEN_LEN);
	/* and a minted token survives hex and verifies */
	struct token_secret s;
	secret(&s, KEY_A, KEY_A_LEN);
	token_mint(&s, 11, 2222, tok);
	token_hex(tok, hex);
	cr_assert_eq(token_unhex(hex, back, TOKEN_LEN), (int)TOKEN_LEN);
	cr_assert_eq(token_verify(&s, 11, back, TOKEN_LEN, 0), TOKEN_OK);
}

Test(token, unhex_rejects_bad_hex)
{
	uint8_t out[TOKEN_LEN];
	cr_assert_eq(token_unhex("0g", out, sizeof out), -1);
	cr_assert_eq(token_unhex("abc", out, sizeof out), -1); /* odd length */
	cr_assert_eq(token_unhex("00 11", out, sizeof out), -1);
	cr_assert_eq(token_unhex("0011\n", out, sizeof out), -1);
	cr_assert_eq(token_unhex("0x00", out, sizeof out), -1);
	cr_assert_eq(token_unhex("zz", out, sizeof out), -1);
	/* longer than the buffer */
	char longhex[2 * (TOKEN_LEN + 1) + 1];
	memset(longhex, 'a', sizeof longhex - 1);
	longhex[sizeof longhex - 1] = 0;
	cr_assert_eq(token_unhex(longhex, out, sizeof out), -1);
	/* short but valid: the byte count comes back */
	cr_assert_eq(token_unhex("a1b2", out, sizeof out), 2);
	cr_assert_eq(out[0], 0xa1);
	cr_assert_eq(out[1], 0xb2);
	cr_assert_eq(token_unhex("", out, sizeof out), 0);
}
