/* test_connref.c: criterion unit tests of connection references
 * (runtime/connref.h) and the user_data layout built on them (uring.h). */
#include <criterion/criterion.h>
#include <stdint.h>

#include "runtime/connref.h"
#include "runtime/uring.h"

Test(connref, roundtrip_at_the_edges)
{
	static const uint32_t slots[] = {0, 1, 4095, CONNREF_SLOT_MAX - 1};
	static const uint32_t gens[] = {0, 1, 0x12345, CONNREF_GEN_MASK};
	for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
		for (size_t j = 0; j < sizeof gens / sizeof gens[0]; j++) {
			uint64_t r = connref_make(slots[i], gens[j]);
			cr_assert_leq(r, CONNREF_MASK, "slot %u gen %u: 0x%llx", slots[i], gens[j], (unsigned long long)r);
			cr_assert_eq(connref_slot(r), slots[i]);
			cr_assert_eq(connref_gen(r), gens[j]);
			/* the same generation travels through user_data unchanged */
			uint64_t ud = ud_make(5, gens[j], slots[i]);
			cr_assert_eq(ud_kind(ud), 5);
			cr_assert_eq(ud_gen(ud), gens[j]);
			cr_assert_eq(ud_slot(ud), slots[i]);
		}
}

/* A generation kept with connref_next_gen is always what a reference (and a
 * user_data) gives back, so the holders of a slot compare with == (a gateway
 * compared an unmasked counter with a masked one before). */
Test(connref, next_gen_wraps_inside_the_field)
{
	uint32_t g = CONNREF_GEN_MASK - 1;
	g = connref_next_gen(g);
	cr_assert_eq(g, CONNREF_GEN_MASK);
	g = connref_next_gen(g);
	cr_assert_eq(g, 0, "the generation did not wrap at %u bits", CONNREF_GEN_BITS);
	cr_assert_eq(connref_gen(connref_make(7, g)), g);
	cr_assert_eq(ud_gen(ud_make(1, g, 7)), g);
	cr_assert_neq(connref_make(7, 0), connref_make(7, CONNREF_GEN_MASK));
}

Test(connref, references_of_different_slots_differ)
{
	cr_assert_neq(connref_make(1, 2), connref_make(2, 1));
	cr_assert_neq(connref_make(0, 1), connref_make(CONNREF_SLOT_MAX - 1, 0));
}
