/* sslmem.c: OpenSSL's allocations in their own jemalloc arena (sslmem.h). */
#include "runtime/sslmem.h"

#include <stdio.h>

#ifdef NO_JEMALLOC
int sslmem_init(char *err, size_t errlen)
{
	(void)err, (void)errlen;
	return 0;
}
#else
#include <jemalloc/jemalloc.h>
#include <openssl/crypto.h>
#include <sys/types.h>

/* Freed pages of the other arenas go back to the kernel after jemalloc's
 * decay time (10 s) even when the process is idle: a background thread
 * purges them (without it an idle gateway keeps a ramp's transient output
 * buffers resident). Read by jemalloc at start-up. */
const char *malloc_conf = "background_thread:true";

#ifndef SSLMEM_DECAY_MS
#define SSLMEM_DECAY_MS 1000
#endif

static int flags; /* MALLOCX_ARENA(the arena) */

static void *ssl_malloc(size_t n, const char *file, int line)
{
	(void)file, (void)line;
	return mallocx(n ? n : 1, flags);
}

static void ssl_free(void *p, const char *file, int line)
{
	(void)file, (void)line;
	if (p)
		dallocx(p, 0);
}

static void *ssl_realloc(void *p, size_t n, const char *file, int line)
{
	if (!p)
		return ssl_malloc(n, file, line);
	if (!n) {
		ssl_free(p, file, line);
		return NULL;
	}
	return rallocx(p, n, flags);
}

int sslmem_init(char *err, size_t errlen)
{
	unsigned arena;
	size_t sz = sizeof arena;
	if (mallctl("arenas.create", &arena, &sz, NULL, 0) != 0) {
		snprintf(err, errlen, "jemalloc: cannot create an arena for OpenSSL");
		return -1;
	}
	ssize_t now = SSLMEM_DECAY_MS; /* freed pages go back to the kernel soon (the background thread) */
	char k[64];
	snprintf(k, sizeof k, "arena.%u.dirty_decay_ms", arena);
	mallctl(k, NULL, NULL, &now, sizeof now);
	snprintf(k, sizeof k, "arena.%u.muzzy_decay_ms", arena);
	mallctl(k, NULL, NULL, &now, sizeof now);
	flags = (int)MALLOCX_ARENA(arena);
	if (!CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free)) {
		snprintf(err, errlen, "OpenSSL allocated before its allocator could be set");
		return -1;
	}
	return 0;
}
#endif
