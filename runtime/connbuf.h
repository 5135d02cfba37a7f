/* connbuf.h: the connection plumbing the gateway and the loadgen share:
 * per-connection output buffers (with TLS sealing under them), the lists of
 * slots an iteration visits at its end (flush, re-arm), and the sizing of a
 * thread's provided-buffer ring.
 *
 * Output: frames are appended to a connection's struct obuf during an
 * iteration and leave with one send at its end. On a TLS connection
 * data[0..sealed) is ready for the wire (handshake bytes, sealed records)
 * and data[sealed..len) is plaintext, sealed into as few records as it fits
 * just before the send (obuf_seal). A plain connection leaves sealed at 0
 * and never calls obuf_seal or obuf_put_wire.
 *
 * Slot lists: a slot is pushed once per iteration (the caller keeps a
 * "queued" flag per connection), visited and the list emptied at the end.
 *
 * Single-threaded: every object here belongs to one loop thread.
 */
#ifndef RUNTIME_CONNBUF_H
#define RUNTIME_CONNBUF_H

#include <stddef.h>
#include <stdint.h>

struct tls_thread;
struct tls_conn;

struct obuf {
	uint32_t len, cap, off; /* bytes queued, room, bytes a send has taken */
	uint32_t since;         /* the caller's: when the send started (the gateway's write-stall check) */
	uint32_t sealed;        /* TLS: data[0..sealed) is for the wire as it is */
	uint8_t data[];
};

/* Room for n more bytes in *o (NULL: a new buffer), grown by doubling from
 * 256 bytes. Returns *o, or NULL out of memory (*o unchanged). */
struct obuf *obuf_reserve(struct obuf **o, size_t n);

/* Bytes waiting in *o and in flight in s (either may be NULL). */
static inline uint32_t obuf_queued(const struct obuf *o, const struct obuf *s)
{
	return (o ? o->len : 0) + (s ? s->len - s->off : 0);
}

/* TLS: append n bytes for the wire after what is queued (plaintext queued
 * before them is sealed first, with th and tc). Returns the bytes *o grew
 * by, or -1 (out of memory, or sealing failed). */
long obuf_put_wire(struct obuf **o, struct tls_thread *th, struct tls_conn *tc, const uint8_t *p, size_t n);

/* TLS: seal the plaintext queued in *o, and a KeyUpdate of ours that is
 * due, into as few records as it fits (one new buffer; the wire bytes
 * before it are copied). Without sending keys (the handshake not done, or
 * our close_notify sent) the plaintext is dropped. Returns the change in
 * (*o)->len (negative when plaintext was dropped), or LONG_MIN on failure
 * (out of memory, a library error: close the connection). */
long obuf_seal(struct obuf **o, struct tls_thread *th, struct tls_conn *tc);

/* A growable list of slots. */
struct slotlist {
	uint32_t *v;
	size_t n, cap;
};

/* Append slot. Returns 0, or -1 out of memory (the list is unchanged). */
int slotlist_push(struct slotlist *l, uint32_t slot);

void slotlist_free(struct slotlist *l);

/* Entries of one thread's provided-buffer ring: a power of two in
 * [64, 32768], pool bytes shared by `threads` rings of `size`-byte buffers
 * (the smallest ring holds 64 whatever the pool). */
unsigned bufring_entries_for(uint64_t pool, unsigned threads, unsigned size);

/* A per-slot table of n entries of `size` bytes, zeroed: anonymous memory
 * reserved, not committed (MAP_NORESERVE), so a table sized for every slot
 * costs only the pages its connections touch. NULL with errno on failure.
 * slot_table_unmap takes the same n and size (a NULL table is a no-op). */
void *slot_table_map(size_t n, size_t size);
void slot_table_unmap(void *t, size_t n, size_t size);

#endif
