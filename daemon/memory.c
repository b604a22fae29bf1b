/* memory.c: the account of the delivery path's buffers, a hard bound at
 * the cap. See memory.h. */
#include "memory.h"

#include <errno.h>
#include <stdatomic.h>

static _Atomic uint64_t used, open_used, peak;
static _Atomic uint64_t cap, headroom;

void memory_set_cap(uint64_t bytes)
{
    atomic_store_explicit(&cap, bytes, memory_order_relaxed);
}

uint64_t memory_cap(void)
{
    return atomic_load_explicit(&cap, memory_order_relaxed);
}

void memory_set_headroom(uint64_t bytes)
{
    atomic_store_explicit(&headroom, bytes, memory_order_relaxed);
}

uint64_t memory_headroom(void)
{
    return atomic_load_explicit(&headroom, memory_order_relaxed);
}

/* What open buffers may still claim of the headroom. */
static uint64_t open_room(void)
{
    uint64_t h = atomic_load_explicit(&headroom, memory_order_relaxed),
             o = atomic_load_explicit(&open_used, memory_order_relaxed);
    return h > o ? h - o : 0;
}

/* Add n to used if used + n + keep stays within the cap: one
 * compare-and-swap loop, so two threads cannot both take the last room. */
static int reserve(uint64_t n, uint64_t keep)
{
    uint64_t c = memory_cap();
    uint64_t u = atomic_load_explicit(&used, memory_order_relaxed);
    do {
        if (c && (keep > c || u > c - keep || n > c - keep - u))
            return -ENOMEM;
    } while (!atomic_compare_exchange_weak_explicit(&used, &u, u + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t p = atomic_load_explicit(&peak, memory_order_relaxed);
    while (u + n > p && !atomic_compare_exchange_weak_explicit(
                            &peak, &p, u + n, memory_order_relaxed, memory_order_relaxed))
        ;
    return 0;
}

int memory_reserve(uint64_t n)
{
    return reserve(n, open_room());
}

int memory_reserve_open(uint64_t n)
{
    int rc = reserve(n, 0);
    if (rc == 0)
        atomic_fetch_add_explicit(&open_used, n, memory_order_relaxed);
    return rc;
}

void memory_seal(uint64_t n)
{
    atomic_fetch_sub_explicit(&open_used, n, memory_order_relaxed);
}

void memory_release(uint64_t n)
{
    atomic_fetch_sub_explicit(&used, n, memory_order_relaxed);
}

void memory_release_open(uint64_t n)
{
    memory_seal(n);
    memory_release(n);
}

uint64_t memory_used(void)
{
    return atomic_load_explicit(&used, memory_order_relaxed);
}

uint64_t memory_peak(void)
{
    return atomic_load_explicit(&peak, memory_order_relaxed);
}

void memory_reset_peak(void)
{
    atomic_store_explicit(&peak, memory_used(), memory_order_relaxed);
}

int64_t memory_room(void)
{
    uint64_t c = memory_cap();
    if (!c)
        return INT64_MAX;
    return (int64_t)c - (int64_t)memory_used() - (int64_t)open_room();
}
