/* addr.h: "host:port" strings to socket addresses and back.
 * Accepts "1.2.3.4:80", "[::1]:80", ":80" and "*:80" (any IPv4 address),
 * and a bare host for addr_parse_host(). Numeric addresses only (no DNS on
 * start-up paths). Pure functions, any thread. */
#ifndef RUNTIME_ADDR_H
#define RUNTIME_ADDR_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Parse "host:port". Returns 0, or -1 with a reason in err. */
int addr_parse(const char *s, struct addr *a, char *err, size_t errlen);

/* Parse a numeric host without a port (port 0). */
int addr_parse_host(const char *s, struct addr *a, char *err, size_t errlen);

/* Format as "host:port" into buf (at least 64 bytes); returns buf. */
const char *addr_str(const struct addr *a, char *buf, size_t len);

/* Port of a, and set the port. */
unsigned addr_port(const struct addr *a);
void addr_set_port(struct addr *a, unsigned port);

/* Parse an IPv4 range "A.B.C.D-E.F.G.H", "A.B.C.D/NN" or a single address
 * into *first and *count (host-order first address). Returns 0 or -1. */
int addr_parse_v4_range(const char *s, uint32_t *first, uint32_t *count, char *err, size_t errlen);

#endif
