/* sslmem.h: OpenSSL's memory in an arena of its own.
 *
 * A TLS handshake allocates tens of kilobytes in libssl and frees them when
 * it ends (runtime/tls.h keeps 128 bytes per connection after it). Mixed into
 * the allocator's shared arenas with the connections' small long-lived
 * allocations, those freed pages stay resident (measured: 9 KB of gateway RSS
 * per TLS connection after a ramp, against 200 bytes allocated). So every
 * OpenSSL allocation goes to one jemalloc arena whose freed pages return to
 * the kernel within a second (a background thread purges them; the other
 * arenas' after jemalloc's usual 10 s): after a reconnect storm the process
 * gives the handshakes' memory back. Thread caches stay on (without them a
 * handshake took 2x as long, measured with the loadgen).
 *
 * Call sslmem_init first thing in main, before anything uses OpenSSL (it
 * must be the first to allocate). Without jemalloc (the sanitizer build) it
 * does nothing.
 */
#ifndef RUNTIME_SSLMEM_H
#define RUNTIME_SSLMEM_H

#include <stddef.h>

/* Returns 0, or -1 with a reason in err (OpenSSL allocated already, or the
 * arena could not be made); OpenSSL then uses the default allocator. */
int sslmem_init(char *err, size_t errlen);

#endif
