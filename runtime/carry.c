/* carry.c: see carry.h. */
#include "runtime/carry.h"

#include <stdlib.h>
#include <string.h>

long carry_feed(struct carry **cp, const uint8_t **p, size_t *n, enum proto_dir dir, struct proto_frame *f)
{
	for (;;) {
		struct carry *c = *cp;
		size_t take = c->need - c->len;
		if (take > *n)
			take = *n;
		memcpy(c->data + c->len, *p, take);
		c->len += (uint32_t)take;
		*p += take;
		*n -= take;
		if (c->len < c->need)
			return 0;
		long r = proto_parse(c->data, c->len, dir, f);
		if (r > 0)
			return 1;
		if (r < 0)
			return r;
		/* the length prefix is complete now: size the carry for the whole frame */
		if (f->need > c->cap) {
			struct carry *g = realloc(c, sizeof *g + f->need);
			if (!g)
				return CARRY_NOMEM;
			*cp = c = g;
			c->cap = f->need;
		}
		c->need = f->need;
		if (!*n)
			return 0;
	}
}

long carry_start(struct carry **cp, const uint8_t *p, size_t n, uint32_t need)
{
	uint32_t cap = need > 16 ? need : 16;
	struct carry *c = malloc(sizeof *c + cap);
	if (!c)
		return CARRY_NOMEM;
	c->cap = cap;
	c->len = (uint32_t)n;
	c->need = need;
	memcpy(c->data, p, n);
	*cp = c;
	return 0;
}

void carry_free(struct carry **cp)
{
	free(*cp);
	*cp = NULL;
}
