/* memory.c: one atomic account of the delivery path's buffers. See memory.h. */
#include "memory.h"

#include <stdatomic.h>

static _Atomic uint64_t used;
static _Atomic uint64_t cap;

void memory_set_cap(uint64_t bytes)
{
    atomic_store_explicit(&cap, bytes, memory_order_relaxed);
}

uint64_t memory_cap(void)
{
    return atomic_load_explicit(&cap, memory_order_relaxed);
}

void memory_reserve(uint64_t n)
{
    atomic_fetch_add_explicit(&used, n, memory_order_relaxed);
}

void memory_release(uint64_t n)
{
    atomic_fetch_sub_explicit(&used, n, memory_order_relaxed);
}

uint64_t memory_used(void)
{
    return atomic_load_explicit(&used, memory_order_relaxed);
}

int memory_over_cap(void)
{
    uint64_t c = memory_cap();
    return c && memory_used() > c;
}
