/* mbuf.h: a growable text buffer for rendering stats and HTTP replies.
 * Off the message path (stats thread, tools). Out of memory sets `oom` and
 * drops further text rather than failing every caller. */
#ifndef RUNTIME_MBUF_H
#define RUNTIME_MBUF_H

#include <stddef.h>

struct mbuf {
	char *p;
	size_t len, cap;
	int oom;
};

void mbuf_printf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mbuf_put(struct mbuf *b, const char *s, size_t n);
void mbuf_free(struct mbuf *b);

#endif
