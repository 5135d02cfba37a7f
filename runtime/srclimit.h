/* srclimit.h: where a connection comes from, and limits per source address
 * (connections held, and new connections per second), shared by every worker
 * thread of a process.
 *
 * A source is the client's address as the server knows it: the peer of the
 * accepted socket, or the PROXY header's source on a ",proxy" listener. For
 * IPv6 it is the address's /64 (a host usually holds a whole /64, so a limit
 * per single IPv6 address would limit nothing); IPv4-mapped IPv6 addresses
 * are IPv4. struct src is what a connection keeps of its peer (16 bytes: the
 * source, the port, and since when it is connected).
 *
 * The counts live in a count-min sketch: two rows of 2^k counters, a
 * source's counter in each row chosen by half of a keyed hash (SipHash-2-4,
 * libsodium's crypto_shorthash, with a random key per process, so a client
 * cannot choose addresses whose counters are a victim's). A source's count is
 * the smaller of its two counters: never below the truth, above it only when
 * both are shared with other sources. Rows have at least one counter per two
 * connections of capacity, so at full capacity the excess averages under
 * one; a limit in the tens or more is exact in practice.
 *
 * Two counts per source:
 *   connections: +1 when a connection is admitted, -1 when it ends
 *     (srclim_release); kept whether or not a limit is set, so a limit set
 *     by a reload counts the connections already there;
 *   attempts: connections accepted from it in the current second (fixed
 *     one-second windows, so a burst of up to twice the rate can straddle a
 *     window edge); refused attempts count too: a source that keeps
 *     hammering stays refused.
 * No locks: relaxed atomic adds and compare-and-swaps, touched when a
 * connection starts and ends, never on the message path. Fixed size.
 */
#ifndef RUNTIME_SRCLIMIT_H
#define RUNTIME_SRCLIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SRC_UNKNOWN 0 /* no address (a PROXY LOCAL header, a unix socket): never counted or limited */
#define SRC_IPV4 4
#define SRC_IPV6 6

struct src {
	uint8_t fam;   /* SRC_UNKNOWN, SRC_IPV4 or SRC_IPV6 */
	uint8_t pad;
	uint16_t port; /* host order */
	uint32_t since; /* wall clock seconds (Unix time) when the connection was accepted */
	uint8_t a[8];  /* IPv4: a[0..4); IPv6: the first 8 bytes (the /64) */
};
_Static_assert(sizeof(struct src) == 16, "struct src is 16 bytes per connection");

/* The peer of an accepted socket (sockaddr_in or sockaddr_in6; anything
 * else, or len too short, is SRC_UNKNOWN). `since` is left as it was. */
void src_from_sockaddr(struct src *s, const struct sockaddr *sa, socklen_t len);

/* From raw bytes: fam AF_INET (4 bytes) or AF_INET6 (16 bytes, IPv4-mapped
 * taken as IPv4), anything else SRC_UNKNOWN; port in host order. */
void src_set(struct src *s, int fam, const uint8_t *addr, uint16_t port);

/* "192.0.2.1:5678", "2001:db8:1:2::/64 port 5678", or "unknown". */
const char *src_str(const struct src *s, char *out, size_t cap);

struct srclim {
	uint32_t mask;     /* counters per row - 1 */
	uint32_t *conns;   /* 2 rows */
	uint32_t *tries;   /* 2 rows: window (second & 0xfff) << 20 | attempts */
	uint8_t key[16];   /* the hash key */
};

enum src_verdict { SRC_OK = 0, SRC_TOO_MANY, SRC_TOO_FAST };

/* Size the sketch for `capacity` connections (all threads). Returns 0, or
 * -1 when out of memory. */
int srclim_init(struct srclim *l, uint64_t capacity);
void srclim_free(struct srclim *l);

/* A new connection from s at wall second now_s: count the attempt, then
 * admit it (its connection counted: SRC_OK, release it when it ends) or
 * refuse it: more than max_rate attempts this second (SRC_TOO_FAST), or
 * max_conns connections held already (SRC_TOO_MANY). 0 means no limit. An
 * SRC_UNKNOWN source is neither counted nor refused (SRC_OK, and
 * srclim_release of it does nothing). Threads admitting the same source at
 * the same instant may pass max_conns by one per other thread. */
enum src_verdict srclim_admit(struct srclim *l, const struct src *s, uint32_t now_s, uint32_t max_conns,
			      uint32_t max_rate);

/* A connection srclim_admit admitted has ended. */
void srclim_release(struct srclim *l, const struct src *s);

/* The connections counted for s (an estimate never below the truth). */
uint32_t srclim_count(const struct srclim *l, const struct src *s);

#endif
