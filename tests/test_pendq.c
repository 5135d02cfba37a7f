/* test_pendq.c: criterion tests of gateway/pendq.h, the requests waiting for
 * a backend's answer. */
#include <criterion/criterion.h>

#include "gateway/pendq.h"

static struct gw_pendq q;

static void setup(void)
{
	cr_assert_eq(pendq_init(&q), 0);
}

static void teardown(void)
{
	pendq_free(&q);
}

TestSuite(pendq, .init = setup, .fini = teardown);

static void push(uint64_t ref)
{
	struct gw_pend p = {.oconn = 1000 + ref, .ref = ref, .othread = (uint32_t)(ref % 3), .tick = (uint32_t)ref};
	cr_assert_eq(pendq_push(&q, &p), 0);
}

static int answer(uint64_t ref, struct gw_pend *lost, size_t max, size_t *n)
{
	struct gw_pend hit;
	int r = pendq_answered(&q, (uint32_t)(ref % 3), 1000 + ref, ref, &hit, lost, max, n);
	cr_assert(!r || (hit.ref == ref && hit.oconn == 1000 + ref), "the entry answered is not the one handed back");
	return r;
}

Test(pendq, answers_in_order)
{
	for (uint64_t r = 1; r <= 1000; r++)
		push(r);
	struct gw_pend lost[8];
	size_t n;
	for (uint64_t r = 1; r <= 1000; r++) {
		cr_assert_eq(answer(r, lost, 8, &n), 1, "answer %llu", (unsigned long long)r);
		cr_assert_eq(n, 0);
	}
	cr_assert_eq(q.len, 0);
	cr_assert_null(pendq_oldest(&q));
}

/* Before: only the first 64 entries were searched, so after a lost answer
 * the later ones stayed behind and timed out into a try_again after their
 * ACK. Now the entries before the answered one come back as lost, at once. */
Test(pendq, a_lost_answer_is_handed_back_whatever_the_depth)
{
	for (uint64_t r = 1; r <= 500; r++)
		push(r);
	struct gw_pend lost[64];
	size_t n;
	/* the answer of 1 was lost; 2 arrives */
	cr_assert_eq(answer(2, lost, 64, &n), 1);
	cr_assert_eq(n, 1);
	cr_assert_eq(lost[0].ref, 1);
	/* answers 3..100 were lost; 101 arrives, deep in the queue */
	cr_assert_eq(answer(101, lost, 64, &n), 1);
	cr_assert_eq(n, 64, "at most max handed back at once");
	cr_assert_eq(lost[0].ref, 3);
	cr_assert_eq(lost[63].ref, 66);
	cr_assert_eq(pendq_oldest(&q)->ref, 67, "the rest wait for the timeout");
	/* the next answer hands back the other lost ones */
	cr_assert_eq(answer(102, lost, 64, &n), 1);
	cr_assert_eq(n, 100 - 66);
	cr_assert_eq(lost[0].ref, 67);
	for (uint64_t r = 103; r <= 500; r++) {
		cr_assert_eq(answer(r, lost, 64, &n), 1, "answer %llu", (unsigned long long)r);
		cr_assert_eq(n, 0);
	}
	cr_assert_eq(q.len, 0);
}

Test(pendq, an_answer_for_nothing_changes_nothing)
{
	for (uint64_t r = 1; r <= 10; r++)
		push(r);
	struct gw_pend lost[4];
	size_t n = 99;
	cr_assert_eq(answer(77, lost, 4, &n), 0, "no such entry");
	cr_assert_eq(n, 0);
	cr_assert_eq(q.len, 10);
	/* timed out (popped) first, answered later */
	pendq_pop(&q);
	cr_assert_eq(answer(1, lost, 4, &n), 0, "its entry timed out already");
	cr_assert_eq(q.len, 9);
	cr_assert_eq(pendq_oldest(&q)->ref, 2);
}

Test(pendq, duplicate_keys_and_growth)
{
	/* the same (thread, conn, ref) twice: a client resending before the answer */
	for (int k = 0; k < 3; k++)
		for (uint64_t r = 1; r <= 300; r++)
			push(r);
	cr_assert_eq(q.len, 900);
	struct gw_pend lost[1];
	size_t n;
	cr_assert_eq(answer(1, lost, 1, &n), 1);
	cr_assert_eq(n, 0);
	cr_assert_eq(answer(1, lost, 1, &n), 1, "the second copy of 1 (299 entries ahead of it lost)");
	cr_assert_eq(n, 1, "bounded by max");
	cr_assert_eq(q.len, 900 - 3);
}
