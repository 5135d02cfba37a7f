/* wire.h: byte-level primitives shared by the client and dist formats.
 *
 * Unsigned LEB128 varints ("uv" in PROTOCOL.md): 7 bits per byte, least
 * significant group first, high bit set on every byte but the last. Only the
 * minimal encoding is accepted (no trailing 0x80 0x00 padding), so every value
 * has exactly one encoding and parse(encode(x)) == x byte for byte.
 *
 * Everything here is inline, allocation-free and reads only inside [p, end).
 */
#ifndef PROTO_WIRE_H
#define PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Bytes a varint of value v takes (1..10). */
static inline unsigned wire_uv_size(uint64_t v)
{
	unsigned n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Write v at p (caller guarantees wire_uv_size(v) bytes); returns the end. */
static inline uint8_t *wire_uv_put(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Read a varint from [*pp, end). On success stores the value, advances *pp and
 * returns 1. Returns 0 when the input ends inside the varint, -1 when it is
 * malformed: longer than 10 bytes, over 64 bits, or not minimally encoded. */
static inline int wire_uv_get(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
	const uint8_t *p = *pp;
	if (p < end && p[0] < 0x80) { /* fast path: one byte */
		*out = p[0];
		*pp = p + 1;
		return 1;
	}
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (p >= end)
			return 0;
		uint8_t b = *p++;
		if (shift == 63 && b > 1)
			return -1; /* more than 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (b < 0x80) {
			if (b == 0 && shift != 0)
				return -1; /* non-minimal: a final zero group */
			*out = v;
			*pp = p;
			return 1;
		}
	}
	return -1; /* an 11th byte would be needed */
}

/* Result of wire_frame_head(). */
enum wire_head {
	WIRE_HEAD_OK = 1,
	WIRE_HEAD_MORE = 0,     /* the prefix is incomplete: need at least one more byte */
	WIRE_HEAD_BAD = -1,     /* non-minimal prefix, or a zero length */
	WIRE_HEAD_TOO_BIG = -2, /* the length is over max */
};

/* Frame prefix: a varint L (1..max, at most 3 bytes since every max here is
 * below 2^21) giving the bytes that follow (type byte + payload). On OK stores
 * L and the prefix size. Decides TOO_BIG as soon as the prefix is complete,
 * before the payload arrives, and as soon as a third continuation bit shows. */
static inline int wire_frame_head(const uint8_t *p, const uint8_t *end, uint32_t max, uint32_t *len,
				  unsigned *hdr)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < 3; i++) {
		if (p + i >= end)
			return WIRE_HEAD_MORE;
		uint8_t b = p[i];
		v |= (uint32_t)(b & 0x7f) << (7 * i);
		if (b < 0x80) {
			if (b == 0 && i != 0)
				return WIRE_HEAD_BAD;
			if (v == 0)
				return WIRE_HEAD_BAD;
			if (v > max)
				return WIRE_HEAD_TOO_BIG;
			*len = v;
			*hdr = i + 1;
			return WIRE_HEAD_OK;
		}
	}
	return WIRE_HEAD_TOO_BIG; /* >= 2^21 */
}

/* Big-endian fixed-width helpers (used by tokens and the dist hello magic). */
static inline void wire_be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t wire_be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

#endif
