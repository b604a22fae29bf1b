/*
 * memory.h: the memory budget of the delivery path, counted against
 * --max-memory.
 *
 * What it covers: batch buffers (open, closed, waiting, in flight, read back
 * from the spool) and the compressed bodies a sink backend keeps for them.
 * Whoever allocates one of these reserves its size here, and whoever frees
 * it releases the same size; batch_buf_new and batch_buf_free do that for
 * every batch buffer. Nothing else adjusts the account.
 *
 * This module only counts. It owns no buffer and decides nothing: the sink's
 * policy asks memory_over_cap() whether a new batch may wait in memory, and
 * stats reads memory_used() and memory_cap() for its gauges.
 *
 * Thread-safe: buffers are made and freed on threadpool workers too (spool
 * reads, compression), so the account is one relaxed atomic.
 */
#ifndef BF_MEMORY_H
#define BF_MEMORY_H

#include <stdint.h>

/* The cap, in bytes (--max-memory). 0: no cap was set. */
void memory_set_cap(uint64_t bytes);
uint64_t memory_cap(void);

/* Count n bytes as in use. Never fails: the cap is a policy the caller
 * applies before allocating, not a limit this call enforces. */
void memory_reserve(uint64_t n);

/* Count n bytes, reserved earlier, as free again. */
void memory_release(uint64_t n);

/* Bytes reserved and not yet released. */
uint64_t memory_used(void);

/* memory_used() is past a non-zero cap. */
int memory_over_cap(void);

#endif /* BF_MEMORY_H */
