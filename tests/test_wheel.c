/* test_wheel.c: criterion unit tests of the hashed timing wheel
 * (runtime/wheel.h).
 *
 * The nodes live inside test objects at a non-zero offset, with canaries on
 * both sides, so a wheel that computes a node address wrongly corrupts a
 * canary. Every callback is recorded with the tick the wheel had reached, so
 * the tests check not only that a timer fires but when.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/wheel.h"

#define CANARY 0x5a5a5a5a5a5a5a5aull

struct obj {
	uint64_t head; /* canary */
	struct wheel_node tn;
	uint64_t tail; /* canary */
	uint32_t fired;
};

/* ---- recording callbacks ------------------------------------------------------ */

#define MAX_FIRES 65536

struct fire {
	uint32_t idx, tick;
};

struct rec {
	struct wheel *w;
	struct obj *objs;
	size_t nobj;
	struct fire f[MAX_FIRES];
	size_t n;
	/* actions for the scripted callbacks */
	uint32_t rearm_self_delta; /* 0 = no */
	uint32_t del_other, del_other_of;     /* idx + 1 to delete when del_other_of-1 fires */
	uint32_t rearm_other, rearm_other_of; /* idx + 1 to re-arm when ..._of - 1 fires */
	uint32_t rearm_other_at;
	uint32_t arm_new, arm_new_of, arm_new_at;
};

static struct rec R;

static void rec_reset(struct wheel *w, struct obj *objs, size_t nobj)
{
	memset(&R, 0, sizeof R);
	R.w = w;
	R.objs = objs;
	R.nobj = nobj;
}

static void on_fire(void *arg, uint32_t idx)
{
	struct rec *r = arg;
	cr_assert_lt(idx, r->nobj, "callback for idx %u out of range", idx);
	cr_assert_lt(r->n, (size_t)MAX_FIRES);
	r->f[r->n].idx = idx;
	r->f[r->n].tick = r->w->now;
	r->n++;
	r->objs[idx].fired++;
	if (r->rearm_self_delta)
		wheel_add(r->w, idx, r->w->now + r->rearm_self_delta);
	if (r->del_other_of == idx + 1)
		wheel_del(r->w, r->del_other - 1);
	if (r->rearm_other_of == idx + 1)
		wheel_add(r->w, r->rearm_other - 1, r->rearm_other_at);
	if (r->arm_new_of == idx + 1)
		wheel_add(r->w, r->arm_new - 1, r->arm_new_at);
}

static struct obj *objs_new(size_t n)
{
	struct obj *o = calloc(n, sizeof *o);
	cr_assert_not_null(o);
	for (size_t i = 0; i < n; i++)
		o[i].head = o[i].tail = CANARY;
	return o;
}

static void check_canaries(const struct obj *o, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(o[i].head, CANARY, "object %zu: head canary overwritten", i);
		cr_assert_eq(o[i].tail, CANARY, "object %zu: tail canary overwritten", i);
	}
}

static void wheel_setup(struct wheel *w, unsigned bits, struct obj *o, size_t n, uint32_t now)
{
	cr_assert_eq(wheel_init(w, bits, o, sizeof *o, offsetof(struct obj, tn), now), 0);
	rec_reset(w, o, n);
}

/* Advance one tick at a time to `to`; returns the total callbacks. */
static long step_to(struct wheel *w, uint32_t to)
{
	long total = 0;
	while (w->now < to) {
		long r = wheel_advance(w, w->now + 1, on_fire, &R);
		cr_assert_geq(r, 0);
		total += r;
	}
	return total;
}

/* The tick idx fired at, or 0 if it did not (the k-th firing, k from 0). */
static uint32_t fired_at(uint32_t idx, unsigned k)
{
	for (size_t i = 0; i < R.n; i++)
		if (R.f[i].idx == idx && k-- == 0)
			return R.f[i].tick;
	return 0;
}

/* ---- basics ------------------------------------------------------------------- */

Test(wheel, init_and_zeroed_objects_need_no_init)
{
	enum { N = 1000 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 6, o, N, 1);
	cr_assert_eq(w.count, 0);
	cr_assert_eq(w.now, 1);
	cr_assert_eq(w.mask, 63);
	for (uint32_t i = 0; i < N; i++) {
		cr_assert_eq(wheel_deadline(&w, i), 0);
		wheel_del(&w, i); /* not armed: nothing happens */
	}
	cr_assert_eq(w.count, 0);
	cr_assert_eq(wheel_advance(&w, 500, on_fire, &R), 0);
	cr_assert_eq(R.n, 0);
	for (uint32_t i = 0; i < N; i += 7)
		wheel_add(&w, i, 500 + i);
	cr_assert_eq(w.count, (N + 6) / 7);
	check_canaries(o, N);
	wheel_free(&w);
	cr_assert_null(w.heads);
	free(o);
}

Test(wheel, init_now_zero_means_one)
{
	struct obj *o = objs_new(2);
	struct wheel w;
	wheel_setup(&w, 4, o, 2, 0);
	cr_assert_eq(w.now, 1);
	wheel_add(&w, 0, 1); /* at the current tick: next tick */
	cr_assert_eq(wheel_deadline(&w, 0), 2);
	wheel_free(&w);
	free(o);
}

Test(wheel, fires_at_deadline_not_before)
{
	enum { N = 8 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1);
	wheel_add(&w, 3, 5);
	wheel_add(&w, 4, 2);
	wheel_add(&w, 5, 16); /* last bucket before the wheel turns */
	cr_assert_eq(wheel_deadline(&w, 3), 5);
	cr_assert_eq(w.count, 3);
	for (uint32_t t = 2; t <= 20; t++) {
		long r = wheel_advance(&w, t, on_fire, &R);
		long want = (t == 2 || t == 5 || t == 16) ? 1 : 0;
		cr_assert_eq(r, want, "tick %u: %ld callbacks, want %ld", t, r, want);
	}
	cr_assert_eq(R.n, 3);
	cr_assert_eq(fired_at(4, 0), 2);
	cr_assert_eq(fired_at(3, 0), 5);
	cr_assert_eq(fired_at(5, 0), 16);
	for (uint32_t i = 0; i < N; i++) {
		cr_assert_eq(wheel_deadline(&w, i), 0);
		cr_assert_leq(o[i].fired, 1);
	}
	cr_assert_eq(w.count, 0);
	check_canaries(o, N);
	wheel_free(&w);
	free(o);
}

/* The callback sees the node already disarmed. */
static void expect_disarmed(void *arg, uint32_t idx)
{
	struct wheel *w = arg;
	cr_assert_eq(wheel_deadline(w, idx), 0, "node %u still armed inside its callback", idx);
}

Test(wheel, node_is_disarmed_before_callback)
{
	struct obj *o = objs_new(4);
	struct wheel w;
	wheel_setup(&w, 3, o, 4, 1);
	for (uint32_t i = 0; i < 4; i++)
		wheel_add(&w, i, 3);
	cr_assert_eq(wheel_advance(&w, 3, expect_disarmed, &w), 4);
	cr_assert_eq(w.count, 0);
	wheel_free(&w);
	free(o);
}

Test(wheel, advance_to_same_or_earlier_tick_does_nothing)
{
	struct obj *o = objs_new(2);
	struct wheel w;
	wheel_setup(&w, 4, o, 2, 10);
	wheel_add(&w, 0, 11);
	cr_assert_eq(wheel_advance(&w, 10, on_fire, &R), 0);
	cr_assert_eq(wheel_advance(&w, 5, on_fire, &R), 0);
	cr_assert_eq(w.now, 10);
	cr_assert_eq(wheel_deadline(&w, 0), 11);
	cr_assert_eq(wheel_advance(&w, 11, on_fire, &R), 1);
	wheel_free(&w);
	free(o);
}

/* Deadlines several turns ahead share a bucket with nearer ones and must be
 * skipped until their own turn. */
Test(wheel, deadlines_beyond_one_turn_fire_on_time)
{
	enum { N = 16 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1); /* 16 buckets */
	const uint32_t dl[N] = {17, 18, 2, 33, 34, 1 + 16 * 5, 100, 101, 16, 32, 48, 49, 257, 258, 3, 19};
	for (uint32_t i = 0; i < N; i++)
		wheel_add(&w, i, dl[i]);
	cr_assert_eq(w.count, N);
	cr_assert_eq(step_to(&w, 300), N);
	for (uint32_t i = 0; i < N; i++) {
		cr_assert_eq(o[i].fired, 1, "node %u fired %u times", i, o[i].fired);
		cr_assert_eq(fired_at(i, 0), dl[i], "node %u (deadline %u) fired at tick %u", i, dl[i], fired_at(i, 0));
	}
	check_canaries(o, N);
	wheel_free(&w);
	free(o);
}

/* Steps of several ticks (below a turn): a timer fires in the first advance
 * that reaches its deadline. */
Test(wheel, multi_tick_steps_fire_in_the_right_advance)
{
	enum { N = 64 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1);
	for (uint32_t i = 0; i < N; i++)
		wheel_add(&w, i, 2 + i * 5);
	uint32_t t = 1;
	while (t < 400) {
		uint32_t prev = t;
		t += 1 + (t * 7) % 15; /* 1..15 ticks */
		size_t before = R.n;
		wheel_advance(&w, t, on_fire, &R);
		for (size_t k = before; k < R.n; k++) {
			uint32_t d = 2 + R.f[k].idx * 5;
			cr_assert(d > prev && d <= t, "node with deadline %u fired in advance (%u, %u]", d, prev, t);
		}
	}
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(o[i].fired, 1);
	wheel_free(&w);
	free(o);
}

Test(wheel, del_prevents_firing)
{
	enum { N = 10 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1);
	for (uint32_t i = 0; i < N; i++)
		wheel_add(&w, i, 5); /* all in one bucket: delete head, middle, tail */
	wheel_del(&w, 9); /* head of the bucket list (last added) */
	wheel_del(&w, 0); /* tail */
	wheel_del(&w, 4); /* middle */
	wheel_del(&w, 4); /* twice: no-op */
	cr_assert_eq(w.count, N - 3);
	cr_assert_eq(wheel_deadline(&w, 4), 0);
	cr_assert_eq(step_to(&w, 40), N - 3);
	cr_assert_eq(o[0].fired + o[4].fired + o[9].fired, 0);
	for (uint32_t i = 1; i < 9; i++)
		if (i != 4)
			cr_assert_eq(o[i].fired, 1);
	/* a node deleted and re-added is live again */
	wheel_add(&w, 4, 50);
	wheel_del(&w, 4);
	wheel_add(&w, 4, 45);
	cr_assert_eq(step_to(&w, 60), 1);
	cr_assert_eq(fired_at(4, 0), 45);
	cr_assert_eq(w.count, 0);
	check_canaries(o, N);
	wheel_free(&w);
	free(o);
}

Test(wheel, rearm_moves_the_timer)
{
	enum { N = 4 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1);
	wheel_add(&w, 0, 5);
	wheel_add(&w, 0, 10); /* later */
	wheel_add(&w, 1, 30);
	wheel_add(&w, 1, 3); /* earlier */
	wheel_add(&w, 2, 7);
	wheel_add(&w, 2, 7 + 16); /* same bucket, next turn */
	wheel_add(&w, 3, 9);
	wheel_add(&w, 3, 9); /* same deadline: still one node */
	cr_assert_eq(w.count, 4);
	cr_assert_eq(wheel_deadline(&w, 0), 10);
	cr_assert_eq(wheel_deadline(&w, 1), 3);
	cr_assert_eq(step_to(&w, 100), 4);
	cr_assert_eq(fired_at(0, 0), 10);
	cr_assert_eq(fired_at(1, 0), 3);
	cr_assert_eq(fired_at(2, 0), 23);
	cr_assert_eq(fired_at(3, 0), 9);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(o[i].fired, 1);
	cr_assert_eq(w.count, 0);
	wheel_free(&w);
	free(o);
}

Test(wheel, past_deadline_fires_on_next_advance)
{
	enum { N = 4 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 100);
	wheel_add(&w, 0, 50);  /* in the past */
	wheel_add(&w, 1, 100); /* now */
	wheel_add(&w, 2, 0);   /* 0 is "not armed" as a stored value, but as an argument it is just the past */
	wheel_add(&w, 3, 101);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(wheel_deadline(&w, i), 101, "node %u deadline %u", i, wheel_deadline(&w, i));
	cr_assert_eq(w.count, 4);
	cr_assert_eq(wheel_advance(&w, 101, on_fire, &R), 4);
	/* also through a big jump */
	wheel_add(&w, 0, 7);
	cr_assert_eq(wheel_advance(&w, 5000, on_fire, &R), 1);
	cr_assert_eq(fired_at(0, 1), 5000);
	wheel_free(&w);
	free(o);
}

/* ---- big jumps -------------------------------------------------------------------- */

Test(wheel, big_jump_fires_everything_due_and_keeps_the_rest)
{
	enum { N = 300 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 4, o, N, 1);
	for (uint32_t i = 0; i < N; i++)
		wheel_add(&w, i, 2 + i); /* 2 .. 301 */
	long r = wheel_advance(&w, 101, on_fire, &R); /* jump of 100 > 16 */
	cr_assert_eq(r, 100);
	cr_assert_eq(w.now, 101);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t d = 2 + i;
		cr_assert_eq(o[i].fired, d <= 101 ? 1u : 0u, "deadline %u", d);
		cr_assert_eq(wheel_deadline(&w, i), d <= 101 ? 0u : d);
	}
	cr_assert_eq(w.count, N - 100);
	/* the rest still fire exactly at their deadline */
	size_t before = R.n;
	cr_assert_eq(step_to(&w, 400), N - 100);
	for (size_t k = before; k < R.n; k++)
		cr_assert_eq(R.f[k].tick, 2 + R.f[k].idx);
	cr_assert_eq(w.count, 0);
	check_canaries(o, N);
	wheel_free(&w);
	free(o);
}

/* Jumps of exactly mask, mask+1 and mask+2 ticks: the boundary between the
 * bucket-by-bucket walk and the whole-wheel scan. */
Test(wheel, jump_boundaries_around_one_turn)
{
	for (uint32_t jump = 14; jump <= 18; jump++) {
		enum { N = 64 };
		struct obj *o = objs_new(N);
		struct wheel w;
		wheel_setup(&w, 4, o, N, 10);
		for (uint32_t i = 0; i < N; i++)
			wheel_add(&w, i, 11 + i); /* 11 .. 74 */
		long r = wheel_advance(&w, 10 + jump, on_fire, &R);
		cr_assert_eq(r, (long)jump, "jump %u: %ld fired", jump, r);
		for (uint32_t i = 0; i < N; i++)
			cr_assert_eq(o[i].fired, 11 + i <= 10 + jump ? 1u : 0u, "jump %u node %u", jump, i);
		cr_assert_eq(step_to(&w, 100), N - (long)jump);
		for (uint32_t i = 0; i < N; i++)
			cr_assert_eq(o[i].fired, 1);
		wheel_free(&w);
		free(o);
	}
}

Test(wheel, huge_jump_with_multi_turn_deadlines)
{
	enum { N = 2000 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 3, o, N, 1); /* 8 buckets: every bucket holds many turns */
	for (uint32_t i = 0; i < N; i++)
		wheel_add(&w, i, 2 + (i * 7919u) % 5000);
	cr_assert_eq(wheel_advance(&w, 100000, on_fire, &R), N);
	cr_assert_eq(w.count, 0);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(o[i].fired, 1);
	wheel_free(&w);
	free(o);
}

/* ---- callbacks that change the wheel ------------------------------------------------ */

Test(wheel, callback_rearms_itself_periodic)
{
	struct obj *o = objs_new(1);
	struct wheel w;
	wheel_setup(&w, 4, o, 1, 1);
	R.rearm_self_delta = 3;
	wheel_add(&w, 0, 4);
	cr_assert_eq(step_to(&w, 40), 13); /* 4, 7, ..., 40 */
	for (unsigned k = 0; k < 13; k++)
		cr_assert_eq(fired_at(0, k), 4 + 3 * k);
	cr_assert_eq(wheel_deadline(&w, 0), 43);
	cr_assert_eq(w.count, 1);
	/* re-arming in a big jump: the new deadline is after the new now, so it
	 * does not fire again within the same advance */
	cr_assert_eq(wheel_advance(&w, 1000, on_fire, &R), 1);
	cr_assert_eq(wheel_deadline(&w, 0), 1003);
	wheel_free(&w);
	free(o);
}

Test(wheel, callback_deletes_a_later_node)
{
	struct obj *o = objs_new(3);
	struct wheel w;
	wheel_setup(&w, 4, o, 3, 1);
	wheel_add(&w, 0, 5);
	wheel_add(&w, 1, 8);
	wheel_add(&w, 2, 5 + 16); /* same bucket as node 0, a turn later */
	R.del_other_of = 0 + 1;
	R.del_other = 1 + 1;
	cr_assert_eq(step_to(&w, 6), 1);
	cr_assert_eq(wheel_deadline(&w, 1), 0);
	cr_assert_eq(w.count, 1);
	R.del_other_of = 0;
	cr_assert_eq(step_to(&w, 50), 1);
	cr_assert_eq(o[1].fired, 0);
	cr_assert_eq(fired_at(2, 0), 21);
	wheel_free(&w);
	free(o);
}

/* Documented: a node disarmed by an earlier callback of the same advance is
 * still called if it was already due; the count must not go wrong. */
Test(wheel, callback_deletes_a_node_due_in_the_same_advance)
{
	struct obj *o = objs_new(2);
	struct wheel w;
	wheel_setup(&w, 4, o, 2, 1);
	wheel_add(&w, 0, 4);
	wheel_add(&w, 1, 5);
	/* advance 1 -> 6 collects node 0 (tick 4) before node 1 (tick 5); node
	 * 0's callback deletes node 1, which is already due */
	R.del_other_of = 0 + 1;
	R.del_other = 1 + 1;
	cr_assert_eq(wheel_advance(&w, 6, on_fire, &R), 2);
	cr_assert_eq(R.f[0].idx, 0);
	cr_assert_eq(R.f[1].idx, 1);
	cr_assert_eq(o[0].fired, 1);
	cr_assert_eq(o[1].fired, 1);
	cr_assert_eq(w.count, 0);
	cr_assert_eq(wheel_deadline(&w, 1), 0);
	wheel_free(&w);
	free(o);
}

Test(wheel, callback_rearms_a_node_due_in_the_same_advance)
{
	struct obj *o = objs_new(2);
	struct wheel w;
	wheel_setup(&w, 4, o, 2, 1);
	wheel_add(&w, 0, 5);
	wheel_add(&w, 1, 4);
	/* advance 1 -> 6 collects node 1 (tick 4) before node 0 (tick 5), so node
	 * 1's callback runs first and re-arms node 0, which is already due */
	R.rearm_other_of = 1 + 1;
	R.rearm_other = 0 + 1;
	R.rearm_other_at = 20;
	cr_assert_eq(wheel_advance(&w, 6, on_fire, &R), 2);
	cr_assert_eq(R.f[0].idx, 1);
	cr_assert_eq(R.f[1].idx, 0);
	cr_assert_eq(o[0].fired, 1, "documented: still called in this advance");
	cr_assert_eq(wheel_deadline(&w, 0), 20, "the re-arm made by the callback stands");
	cr_assert_eq(w.count, 1);
	R.rearm_other_of = 0;
	cr_assert_eq(step_to(&w, 30), 1);
	cr_assert_eq(fired_at(0, 1), 20);
	cr_assert_eq(w.count, 0);
	wheel_free(&w);
	free(o);
}

Test(wheel, callback_arms_a_node_in_the_past)
{
	struct obj *o = objs_new(2);
	struct wheel w;
	wheel_setup(&w, 4, o, 2, 1);
	wheel_add(&w, 0, 3);
	R.arm_new_of = 0 + 1;
	R.arm_new = 1 + 1;
	R.arm_new_at = 1; /* before now: next advance, not this one */
	cr_assert_eq(wheel_advance(&w, 10, on_fire, &R), 1);
	cr_assert_eq(o[1].fired, 0);
	cr_assert_eq(wheel_deadline(&w, 1), 11);
	cr_assert_eq(wheel_advance(&w, 11, on_fire, &R), 1);
	cr_assert_eq(fired_at(1, 0), 11);
	wheel_free(&w);
	free(o);
}

/* ---- count ----------------------------------------------------------------------- */

Test(wheel, count_stays_consistent)
{
	enum { N = 500 };
	struct obj *o = objs_new(N);
	struct wheel w;
	wheel_setup(&w, 5, o, N, 1);
	size_t armed = 0;
	for (uint32_t i = 0; i < N; i++) {
		wheel_add(&w, i, 2 + i % 97);
		armed++;
	}
	cr_assert_eq(w.count, armed);
	for (uint32_t i = 0; i < N; i += 3) /* re-arm: no change */
		wheel_add(&w, i, 200 + i);
	cr_assert_eq(w.count, armed);
	for (uint32_t i = 1; i < N; i += 5) {
		wheel_del(&w, i);
		wheel_del(&w, i);
		armed--;
	}
	cr_assert_eq(w.count, armed);
	long fired = wheel_advance(&w, 50, on_fire, &R);
	cr_assert_eq(w.count, armed - (size_t)fired);
	size_t live = 0;
	for (uint32_t i = 0; i < N; i++)
		live += wheel_deadline(&w, i) != 0;
	cr_assert_eq(w.count, live);
	step_to(&w, 2000);
	cr_assert_eq(w.count, 0);
	wheel_free(&w);
	free(o);
}

/* ---- randomized against a reference model ------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

#define RN 10000u

static uint32_t ref_dl[RN]; /* reference deadline, 0 = not armed */
static uint8_t ref_due[RN]; /* due in the current advance */
static uint32_t ref_called[RN];

struct rctx {
	struct wheel *w;
	size_t calls;
};

/* Random callback: sometimes re-arms itself, re-arms or deletes another node. */
static void rand_fire(void *arg, uint32_t idx)
{
	struct rctx *c = arg;
	cr_assert_lt(idx, RN);
	cr_assert(ref_due[idx], "node %u called but not due (ref deadline %u, now %u)", idx, ref_dl[idx], c->w->now);
	ref_called[idx]++;
	cr_assert_eq(ref_called[idx], 1, "node %u called twice in one advance", idx);
	c->calls++;
	uint32_t now = c->w->now;
	switch (rnd(6)) {
	case 0: { /* re-arm self */
		uint32_t d = now + rnd(600);
		wheel_add(c->w, idx, d);
		ref_dl[idx] = d > now ? d : now + 1;
		break;
	}
	case 1: { /* delete another */
		uint32_t j = rnd(RN);
		wheel_del(c->w, j);
		ref_dl[j] = 0;
		break;
	}
	case 2: { /* re-arm another (possibly one still to be called) */
		uint32_t j = rnd(RN), d = now - 5 + rnd(400);
		wheel_add(c->w, j, d);
		ref_dl[j] = d > now ? d : now + 1;
		break;
	}
	default:
		break;
	}
}

Test(wheel, randomized_against_reference)
{
	struct obj *o = objs_new(RN);
	struct wheel w;
	cr_assert_eq(wheel_init(&w, 8, o, sizeof *o, offsetof(struct obj, tn), 1), 0);
	rng_state = 0x9e3779b97f4a7c15ull;
	memset(ref_dl, 0, sizeof ref_dl);
	struct rctx c = {.w = &w};
	size_t total_fired = 0;
	for (int op = 0; op < 60000; op++) {
		uint32_t k = rnd(100);
		if (k < 55) {
			uint32_t i = rnd(RN);
			/* mostly within a few turns, sometimes in the past */
			uint32_t d = w.now + rnd(3000);
			if (rnd(20) == 0)
				d = w.now > 10 ? w.now - rnd(10) : 1;
			wheel_add(&w, i, d);
			ref_dl[i] = d > w.now ? d : w.now + 1;
		} else if (k < 75) {
			uint32_t i = rnd(RN);
			wheel_del(&w, i);
			ref_dl[i] = 0;
		} else {
			uint32_t jump = rnd(50) == 0 ? 256 + rnd(2000) : 1 + rnd(40);
			uint32_t to = w.now + jump;
			size_t due = 0;
			for (uint32_t i = 0; i < RN; i++) {
				ref_due[i] = ref_dl[i] && ref_dl[i] <= to;
				ref_called[i] = 0;
				if (ref_due[i]) {
					ref_dl[i] = 0; /* disarmed before the callbacks */
					due++;
				}
			}
			c.calls = 0;
			long r = wheel_advance(&w, to, rand_fire, &c);
			cr_assert_eq(r, (long)due, "op %d advance to %u: %ld fired, reference %zu", op, to, r, due);
			cr_assert_eq(c.calls, due);
			total_fired += due;
			for (uint32_t i = 0; i < RN; i++)
				ref_due[i] = 0;
		}
		if (op % 5000 == 0 || op == 59999) {
			size_t armed = 0;
			for (uint32_t i = 0; i < RN; i++) {
				cr_assert_eq(wheel_deadline(&w, i), ref_dl[i], "op %d node %u", op, i);
				armed += ref_dl[i] != 0;
			}
			cr_assert_eq(w.count, armed, "op %d", op);
		}
	}
	cr_assert_gt(total_fired, 10000, "the random walk fired too little to mean much (%zu)", total_fired);
	/* drain: everything left fires exactly at its deadline */
	rec_reset(&w, o, RN);
	uint32_t end = w.now + 4000;
	while (w.now < end) {
		size_t before = R.n;
		wheel_advance(&w, w.now + 1, on_fire, &R);
		for (size_t x = before; x < R.n; x++) {
			cr_assert_eq(ref_dl[R.f[x].idx], R.f[x].tick, "node %u deadline %u fired at %u", R.f[x].idx,
				     ref_dl[R.f[x].idx], R.f[x].tick);
			ref_dl[R.f[x].idx] = 0;
		}
	}
	for (uint32_t i = 0; i < RN; i++)
		cr_assert_eq(ref_dl[i], 0, "node %u never fired", i);
	cr_assert_eq(w.count, 0);
	check_canaries(o, RN);
	wheel_free(&w);
	free(o);
}
