/* peerauth.c: see peerauth.h. */
#include "runtime/peerauth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "runtime/log.h"


static const char auth_label[] = "GWDL2 auth";
static const char id_label[] = "GWDL key id";

uint32_t peerauth_key_id(const uint8_t *key, size_t len)
{
	crypto_hash_sha256_state st;
	uint8_t h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8_t *)id_label, sizeof id_label - 1);
	crypto_hash_sha256_update(&st, key, len);
	crypto_hash_sha256_final(&st, h);
	return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

int peerauth_add(struct peerauth_keys *k, const uint8_t *key, size_t len)
{
	if (k->n >= PEERAUTH_KEYS || len < PEERAUTH_SECRET_MIN || len > PEERAUTH_SECRET_MAX)
		return -1;
	if (sodium_init() < 0)
		return -1;
	memcpy(k->key[k->n], key, len);
	k->len[k->n] = len;
	k->id[k->n] = peerauth_key_id(key, len);
	k->n++;
	return 0;
}

int peerauth_load(struct peerauth_keys *k, const char *path, char *err, size_t errlen)
{
	memset(k, 0, sizeof *k);
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium failed to initialise");
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open cluster secret file %s: %s", path, strerror(errno));
		return -1;
	}
	static const size_t cap = PEERAUTH_KEYS * (PEERAUTH_SECRET_MAX + 1) + 1;
	uint8_t buf[PEERAUTH_KEYS * (PEERAUTH_SECRET_MAX + 1) + 1];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "cannot read cluster secret file %s: %s", path, strerror(errno));
			close(fd);
			sodium_memzero(buf, sizeof buf);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap) {
			snprintf(err, errlen, "cluster secret file %s is too long (%u secrets of at most %u bytes)", path,
				 PEERAUTH_KEYS, PEERAUTH_SECRET_MAX);
			close(fd);
			sodium_memzero(buf, sizeof buf);
			return -1;
		}
	}
	close(fd);
	int ret = 0;
	size_t at = 0;
	unsigned line = 0;
	while (at < len && ret == 0) {
		const uint8_t *nl = memchr(buf + at, '\n', len - at);
		size_t n = nl ? (size_t)(nl - (buf + at)) : len - at;
		line++;
		if (k->n == PEERAUTH_KEYS) {
			snprintf(err, errlen, "%s:%u: more than %u secrets (one signs, one more may be accepted)", path, line,
				 PEERAUTH_KEYS);
			ret = -1;
		} else if (n < PEERAUTH_SECRET_MIN || n > PEERAUTH_SECRET_MAX) {
			snprintf(err, errlen, "%s:%u: a secret of %zu bytes; each line must hold %u to %u", path, line, n,
				 PEERAUTH_SECRET_MIN, PEERAUTH_SECRET_MAX);
			ret = -1;
		} else {
			peerauth_add(k, buf + at, n);
			if (k->n == 2 && k->id[0] == k->id[1]) {
				snprintf(err, errlen, "%s: the two secrets are the same", path);
				ret = -1;
			}
		}
		at += n + (nl ? 1 : 0);
	}
	sodium_memzero(buf, sizeof buf);
	if (ret == 0 && k->n == 0) {
		snprintf(err, errlen, "cluster secret file %s is empty", path);
		ret = -1;
	}
	if (ret != 0)
		sodium_memzero(k, sizeof *k);
	return ret;
}

int peerauth_has(const struct peerauth_keys *k, uint32_t id)
{
	for (unsigned i = 0; i < k->n; i++)
		if (k->id[i] == id)
			return 1;
	return 0;
}

void peerauth_nonce(uint8_t out[PEERAUTH_NONCE])
{
	randombytes_buf(out, PEERAUTH_NONCE);
}

int peerauth_mac(const struct peerauth_keys *k, uint32_t id, unsigned dir, const uint8_t *hello_connect, size_t nc,
		 const uint8_t *hello_accept, size_t na, uint8_t out[PEERAUTH_MAC])
{
	unsigned i;
	for (i = 0; i < k->n && k->id[i] != id; i++)
		;
	if (i == k->n || nc > 255 || na > 255)
		return -1;
	crypto_auth_hmacsha256_state st;
	uint8_t d = (uint8_t)dir, lc = (uint8_t)nc, la = (uint8_t)na;
	crypto_auth_hmacsha256_init(&st, k->key[i], k->len[i]);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)auth_label, sizeof auth_label - 1);
	crypto_auth_hmacsha256_update(&st, &d, 1);
	crypto_auth_hmacsha256_update(&st, &lc, 1);
	crypto_auth_hmacsha256_update(&st, hello_connect, nc);
	crypto_auth_hmacsha256_update(&st, &la, 1);
	crypto_auth_hmacsha256_update(&st, hello_accept, na);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof st);
	return 0;
}

int peerauth_verify(const struct peerauth_keys *k, uint32_t id, unsigned dir, const uint8_t *hello_connect, size_t nc,
		    const uint8_t *hello_accept, size_t na, const uint8_t mac[PEERAUTH_MAC])
{
	uint8_t want[PEERAUTH_MAC];
	if (peerauth_mac(k, id, dir, hello_connect, nc, hello_accept, na, want) != 0)
		return -1;
	int r = crypto_verify_32(want, mac) == 0 ? 0 : -1;
	sodium_memzero(want, sizeof want);
	return r;
}

int peerauth_reloaded(const struct peerauth_keys *cur, const struct peerauth_keys *next)
{
	int changed = cur->n != next->n;
	for (unsigned i = 0; !changed && i < cur->n; i++)
		changed = cur->id[i] != next->id[i];
	if (!changed)
		return 0;
	if (next->n > 1)
		log_info("SIGHUP: cluster secrets: key %08x signs, key %08x is also accepted (links up stay up; new ones "
			 "use these)",
			 next->id[0], next->id[1]);
	else
		log_info("SIGHUP: cluster secret: key %08x; no other key is accepted (links up stay up; new ones use it)",
			 next->id[0]);
	return 1;
}
