/* proxy.h: the PROXY protocol header (HAProxy's, versions 1 and 2) a load
 * balancer in front of the gateway sends first on each connection, so the
 * gateway knows the client's address.
 *
 *   v1: "PROXY TCP4 SRC DST SPORT DPORT\r\n" (TCP6, or "PROXY UNKNOWN ...\r\n"),
 *       at most PROXY_V1_MAX bytes;
 *   v2: the 12-byte signature, ver|cmd (0x20 LOCAL, 0x21 PROXY), fam|proto
 *       (0x11 TCP over IPv4, 0x21 TCP over IPv6, 0x00 unspecified), a
 *       big-endian length and that many bytes: the addresses, then TLVs
 *       (skipped). At most PROXY_V2_MAX bytes here.
 *
 * Parsed in place like the client protocol: proxy_parse() never reads
 * outside [buf, buf+len), says how many bytes it needs, or refuses. A header
 * is hostile input like any other: anything out of spec is refused, the
 * connection closed. Pure functions.
 */
#ifndef PROTO_PROXY_H
#define PROTO_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define PROXY_V1_MAX 107u
#define PROXY_V2_MAX 512u /* 16-byte head + addresses + TLVs; longer is refused */
#define PROXY_MAX PROXY_V2_MAX

struct proxy_hdr {
	int local;      /* v2 LOCAL or v1 UNKNOWN: the proxy's own connection, no client address */
	int family;     /* AF_INET, AF_INET6, or 0 (unknown) */
	uint8_t src[16], dst[16]; /* network byte order (4 bytes for AF_INET) */
	uint16_t sport, dport;
	uint32_t need;  /* after PROXY_NEED_MORE: bytes needed in all (a lower bound) */
};

#define PROXY_NEED_MORE 0
#define PROXY_BAD (-1)

/* Parse a header at buf[0..len). Returns its size (> 0) with *h filled,
 * PROXY_NEED_MORE with h->need, or PROXY_BAD (not a valid header). */
long proxy_parse(const uint8_t *buf, size_t len, struct proxy_hdr *h);

/* Whether the bytes at buf[0..len) (len >= 1) begin like a PROXY header,
 * as far as they go. The first two bytes suffice to tell one from a client
 * frame: a LOGIN's second byte is its type, 0x01. */
int proxy_sniff(const uint8_t *buf, size_t len);

/* "1.2.3.4:5678" or "[::1]:5678" for the source ("unknown" when local). */
const char *proxy_src_str(const struct proxy_hdr *h, char *out, size_t cap);

#endif
