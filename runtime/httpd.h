/* httpd.h: the small HTTP/1.0 server behind --stats-listen.
 *
 * One thread of its own, one request per connection, GET and POST (the
 * query string carries the parameters; a body is not read), request head
 * <= 4 KiB: it serves operators and scrapers, never the message path.
 * Connections are served concurrently (non-blocking sockets, one poll
 * loop, up to 64 at once, the oldest closed for a new one past that), each
 * with a 2 s deadline from accept to its last byte: idle or trickling
 * clients cannot delay a health check. A well-kept HTTP library
 * (libmicrohttpd) would do too; these ~200 lines are what three GET pages
 * need, with no thread pool and no dependency. The handler runs on the
 * httpd thread and must only read what other threads publish (relaxed
 * atomics).
 */
#ifndef RUNTIME_HTTPD_H
#define RUNTIME_HTTPD_H

#include "runtime/addr.h"
#include "runtime/mbuf.h"

/* One request. */
struct httpd_req {
	const char *method; /* "GET" or "POST" */
	const char *path;   /* "/metrics", without the query */
	const char *query;  /* after '?', "" when none (not decoded) */
	int local;          /* the peer is on a loopback address */
};

/* Fill body for the request; return the HTTP status (200, 404, 405...) and
 * set *ctype. */
typedef int (*httpd_handler)(void *arg, const struct httpd_req *r, struct mbuf *body, const char **ctype);

/* The value of name in a query string ("id=42&x=1"), copied into out (at
 * most cap - 1 bytes, no decoding); NULL when absent. */
const char *httpd_query(const char *query, const char *name, char *out, size_t cap);

struct httpd;

/* Bind, listen and start the thread. Returns NULL with a reason in err. */
struct httpd *httpd_start(const struct addr *a, httpd_handler h, void *arg, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
unsigned httpd_port(const struct httpd *h);

/* Stop the thread and free everything. */
void httpd_stop(struct httpd *h);

#endif
