/* connref.h: a connection reference (slot + generation), one layout for
 * every place that names a connection.
 *
 * A thread keeps its connections in a table of slots, and slots are reused,
 * so a reference names the slot and the generation of the connection in it:
 * a per-slot counter moved on (connref_next_gen) each time a connection in
 * the slot is freed. A stale reference (a completion of a closed
 * connection's operation, a cross-thread or backend answer for a connection
 * since closed) carries an older generation and is dropped by the one who
 * holds the slot. Generations wrap at CONNREF_GEN_BITS; kept with
 * connref_next_gen they are always below 2^CONNREF_GEN_BITS, so every
 * comparison is a plain ==.
 *
 * Where the layout travels: io_uring user_data (runtime/uring.h: kind,
 * generation, slot), the dist link's conn fields (varints, opaque to
 * backends, whose directory keeps their low CONNREF_BITS beside a link
 * index), the gateway's user directory and its cross-thread records.
 * Changing a width is an edit here; _Static_asserts in uring.h and
 * backend/node.c guard what is packed beside it.
 *
 * Thread safety: pure functions.
 */
#ifndef RUNTIME_CONNREF_H
#define RUNTIME_CONNREF_H

#include <stdint.h>

#define CONNREF_SLOT_BITS 20u /* the kernel's limit on a ring's fixed-file table: 2^20 */
#define CONNREF_GEN_BITS 28u
#define CONNREF_BITS (CONNREF_SLOT_BITS + CONNREF_GEN_BITS)
#define CONNREF_MASK ((UINT64_C(1) << CONNREF_BITS) - 1)
#define CONNREF_GEN_MASK ((UINT32_C(1) << CONNREF_GEN_BITS) - 1)
#define CONNREF_SLOT_MAX (UINT32_C(1) << CONNREF_SLOT_BITS) /* slots per table, at most */

/* The generation after gen (wraps to 0 past CONNREF_GEN_MASK). */
static inline uint32_t connref_next_gen(uint32_t gen)
{
	return (gen + 1) & CONNREF_GEN_MASK;
}

/* The reference of the connection of generation gen in slot (< CONNREF_SLOT_MAX). */
static inline uint64_t connref_make(uint32_t slot, uint32_t gen)
{
	return ((uint64_t)(gen & CONNREF_GEN_MASK) << CONNREF_SLOT_BITS) | (slot & (CONNREF_SLOT_MAX - 1));
}

static inline uint32_t connref_slot(uint64_t ref)
{
	return (uint32_t)(ref & (CONNREF_SLOT_MAX - 1));
}

static inline uint32_t connref_gen(uint64_t ref)
{
	return (uint32_t)(ref >> CONNREF_SLOT_BITS) & CONNREF_GEN_MASK;
}

#endif
