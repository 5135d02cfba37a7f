/* codec.h: internal to proto/: the bounded reader and the two-pass writer
 * that client.c and dist.c build their frames with. Not part of the API. */
#ifndef PROTO_CODEC_H
#define PROTO_CODEC_H

#include "proto/client.h"
#include "proto/wire.h"

/* ---- reading ---------------------------------------------------------------
 * A reader over one complete frame. Errors are sticky: the first bad read
 * sets `bad` and moves p to end, so later reads fail too and nothing reads
 * past the frame. The frame is complete, so "ends inside a field" is an error
 * (BAD_FIELD) here, never "need more". */
struct rd {
	const uint8_t *p, *end;
	int bad;
};

static inline void rd_fail(struct rd *r)
{
	r->bad = 1;
	r->p = r->end;
}

static inline uint64_t rd_uv(struct rd *r)
{
	uint64_t v = 0;
	if (wire_uv_get(&r->p, r->end, &v) != 1)
		rd_fail(r);
	return v;
}

static inline uint32_t rd_uv32(struct rd *r)
{
	uint64_t v = rd_uv(r);
	if (v > UINT32_MAX)
		rd_fail(r);
	return (uint32_t)v;
}

static inline uint8_t rd_u8(struct rd *r)
{
	if (r->p >= r->end) {
		rd_fail(r);
		return 0;
	}
	return *r->p++;
}

/* Length-prefixed bytes of min..max length. */
static inline struct proto_bytes rd_bytes(struct rd *r, uint32_t min, uint32_t max)
{
	struct proto_bytes b = {0};
	uint64_t n = rd_uv(r);
	if (r->bad || n < min || n > max || n > (uint64_t)(r->end - r->p)) {
		rd_fail(r);
		return b;
	}
	b.p = r->p;
	b.len = (uint32_t)n;
	r->p += n;
	return b;
}

/* The rest of the frame, min..max bytes. */
static inline struct proto_bytes rd_rest(struct rd *r, uint32_t min, uint32_t max)
{
	struct proto_bytes b = {r->p, (uint32_t)(r->end - r->p)};
	if (r->bad || b.len < min || b.len > max)
		rd_fail(r);
	r->p = r->end;
	return b;
}

static inline void rd_nonzero(struct rd *r, uint64_t v)
{
	if (v == 0)
		rd_fail(r);
}

/* ---- writing ---------------------------------------------------------------
 * The payload writer runs twice: once with p == NULL to count, once to write.
 * Encoding validates with the same rules as parsing (`bad`). */
struct wr {
	uint8_t *p;
	size_t n;
	int bad;
};

static inline void wr_u8(struct wr *w, uint8_t v)
{
	if (w->p)
		*w->p++ = v;
	w->n++;
}

static inline void wr_uv(struct wr *w, uint64_t v)
{
	if (w->p)
		w->p = wire_uv_put(w->p, v);
	w->n += wire_uv_size(v);
}

static inline void wr_raw(struct wr *w, const uint8_t *src, uint32_t len)
{
	if (w->p && len) {
		memcpy(w->p, src, len);
		w->p += len;
	}
	w->n += len;
}

static inline void wr_check(struct wr *w, int ok)
{
	if (!ok)
		w->bad = 1;
}

static inline void wr_bytes(struct wr *w, struct proto_bytes b, uint32_t min, uint32_t max)
{
	wr_check(w, b.len >= min && b.len <= max && (b.p || !b.len));
	wr_uv(w, b.len);
	wr_raw(w, b.p, b.len);
}

static inline void wr_rest(struct wr *w, struct proto_bytes b, uint32_t min, uint32_t max)
{
	wr_check(w, b.len >= min && b.len <= max && (b.p || !b.len));
	wr_raw(w, b.p, b.len);
}

/* A member list: count (<= max) then count non-zero varint user ids. */
static inline void rd_members(struct rd *r, uint32_t max, uint32_t *count, struct proto_bytes *list)
{
	uint64_t n = rd_uv(r);
	if (n > max) {
		rd_fail(r);
		n = 0;
	}
	*count = (uint32_t)n;
	list->p = r->p;
	for (uint64_t i = 0; i < n && !r->bad; i++)
		rd_nonzero(r, rd_uv(r));
	list->len = r->bad ? 0 : (uint32_t)(r->p - list->p);
}

/* Writes a member list given as already-encoded varints, checking that it
 * holds exactly count non-zero ids and nothing else. */
static inline void wr_members(struct wr *w, uint32_t count, struct proto_bytes list, uint32_t max)
{
	const uint8_t *pos = list.p;
	uint64_t u;
	uint32_t n = 0;
	while (list.p && proto_members_next(&list, &pos, &u)) {
		wr_check(w, u != 0);
		n++;
	}
	/* a NULL list must be empty (and NULL + 0 is not computed: it is UB) */
	wr_check(w, count <= max && n == count && (list.p ? pos == list.p + list.len : list.len == 0));
	wr_uv(w, count);
	wr_raw(w, list.p, list.len);
}

/* ---- framing -----------------------------------------------------------------
 * Both protocols frame the same way: L (a minimal varint, 1..max), then L
 * bytes: a type byte and its payload. */

/* Check the frame at buf[0..len): returns its size (> 0) once it is whole
 * and its type is allowed (allowed[type] & mask), with the payload at
 * buf + *hdr + 1 .. buf + size; PROTO_NEED_MORE with *need (the prefix's
 * full length once known, else len + 1); or -code: TOO_BIG as soon as the
 * prefix is complete, BAD_FRAME, BAD_TYPE as soon as the type byte is here. */
static inline long frame_check(const uint8_t *buf, size_t len, uint32_t max, const uint8_t allowed[256], unsigned mask,
			       uint32_t *need, unsigned *hdr)
{
	uint32_t flen;
	if (len == 0) { /* before any pointer arithmetic: buf may be NULL */
		*need = 1;
		return PROTO_NEED_MORE;
	}
	switch (wire_frame_head(buf, buf + len, max, &flen, hdr)) {
	case WIRE_HEAD_OK:
		break;
	case WIRE_HEAD_MORE:
		*need = (uint32_t)len + 1;
		return PROTO_NEED_MORE;
	case WIRE_HEAD_TOO_BIG:
		return -PROTO_E_TOO_BIG;
	default:
		return -PROTO_E_BAD_FRAME;
	}
	if (len > *hdr && !(allowed[buf[*hdr]] & mask))
		return -PROTO_E_BAD_TYPE;
	size_t total = *hdr + (size_t)flen;
	if (len < total) {
		*need = (uint32_t)total;
		return PROTO_NEED_MORE;
	}
	return (long)total;
}

/* Encode one frame of `type` whose payload enc(w, f) writes (called twice:
 * to size, then to write), L limited to max. Returns the bytes it takes,
 * written only when cap is at least that; 0 when enc refuses it or it is
 * over max. Inlined with enc known, so no indirect call is left. */
static inline size_t frame_encode(uint8_t type, void (*enc)(struct wr *, const void *), const void *f, uint8_t *buf,
				  size_t cap, uint32_t max)
{
	struct wr w = {NULL, 0, 0};
	enc(&w, f);
	if (w.bad || w.n + 1 > max)
		return 0;
	uint32_t flen = (uint32_t)w.n + 1;
	size_t total = wire_uv_size(flen) + flen;
	if (cap < total)
		return total;
	uint8_t *p = wire_uv_put(buf, flen);
	*p++ = type;
	w = (struct wr){p, 0, 0};
	enc(&w, f);
	return total;
}

#endif
