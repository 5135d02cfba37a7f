/* counter.h: counters a thread owns and other threads read.
 *
 * Each thread (gateway worker, backend node, loadgen worker) keeps its
 * counters in a struct of uint64_t fields, `cnt`, that only it writes; the
 * stats thread reads them while it runs. A relaxed atomic store of the new
 * value is all that takes: one writer, so no read-modify-write is needed,
 * and no reader ever sees a torn value. Readers use __atomic_load_n (or
 * plain loads of aligned words, which the same guarantee covers on every
 * target we build for).
 *
 *   CNT_ADD(owner, field, n)   owner->cnt.field += n
 *   CNT_SET(owner, field, v)   owner->cnt.field = v
 *   cnt_load(base, off)        a reader's load of the uint64_t at base + off
 *                              (tables of offsetof() rows, the stats thread)
 */
#ifndef RUNTIME_COUNTER_H
#define RUNTIME_COUNTER_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t cnt_load(const void *base, size_t off)
{
	return __atomic_load_n((const uint64_t *)((const char *)base + off), __ATOMIC_RELAXED);
}

#define CNT_ADD(o, field, n) __atomic_store_n(&(o)->cnt.field, (o)->cnt.field + (n), __ATOMIC_RELAXED)
#define CNT_SET(o, field, v) __atomic_store_n(&(o)->cnt.field, (v), __ATOMIC_RELAXED)

#endif
