/*
 * memory.h: the memory budget of the delivery path, a hard bound at
 * --max-memory.
 *
 * What it covers: batch buffers (open, closed, queued, in flight, waiting
 * for a spool write, read back from the spool, split halves) and what a
 * sink backend derives from them (a compressed body and the compressor's
 * state). Whoever allocates one of these reserves its size here first and
 * allocates only when the reservation succeeded, and whoever frees it
 * releases the same size; batch_buf_open, batch_buf_new and batch_buf_free
 * do that for every batch buffer. Nothing else adjusts the account. Fixed
 * structures allocated once (the receive buffer, one scratch row, tables)
 * are not batch memory and are not counted.
 *
 * The bound: memory_used() never passes the cap, whatever the send rate,
 * the sink's speed or the number of requests in flight, because a
 * reservation that would pass it is refused (-ENOMEM) and the caller does
 * not allocate. (Before issue 10 reserve never refused and the cap was a
 * policy asked after the fact; 123 MB were seen against a 64 MiB cap.)
 *
 * Two kinds of reservation, so that receiving always finds room:
 *   - open batch buffers (memory_reserve_open) may use the whole cap;
 *   - everything else (memory_reserve) must leave room for a fresh open
 *     buffer of every dataset: the headroom, less what open buffers hold.
 * When a batch closes its bytes stop being open (memory_seal) and count as
 * held. The policy (sink.c) keeps a closed batch in memory only while
 * memory_room() is not negative, and sends it to the spool otherwise; what
 * each holder does when refused is written where it reserves.
 *
 * This module only counts and refuses. It owns no buffer. Thread-safe:
 * buffers are made and freed on threadpool workers too (spool reads,
 * compression), so the account is lock-free atomics.
 */
#ifndef BF_MEMORY_H
#define BF_MEMORY_H

#include <stdint.h>

/* The cap, in bytes (--max-memory). 0: no cap (every reservation
 * succeeds; unit tests). */
void memory_set_cap(uint64_t bytes);
uint64_t memory_cap(void);

/* Bytes kept for open batch buffers: one full buffer per dataset. */
void memory_set_headroom(uint64_t bytes);
uint64_t memory_headroom(void);

/* Count n bytes of held memory as in use, if they fit under the cap with
 * the headroom still free for open buffers. Returns 0, or -ENOMEM (nothing
 * counted: do not allocate). */
int memory_reserve(uint64_t n);

/* Count n bytes of an open batch buffer, if they fit under the cap.
 * Returns 0 or -ENOMEM. */
int memory_reserve_open(uint64_t n);

/* n bytes of an open buffer become held (the batch closed). */
void memory_seal(uint64_t n);

/* Count n bytes, reserved earlier, as free again; open: they were an open
 * buffer's still. */
void memory_release(uint64_t n);
void memory_release_open(uint64_t n);

/* Bytes reserved and not yet released, and the largest that ever was. */
uint64_t memory_used(void);
uint64_t memory_peak(void);
void memory_reset_peak(void); /* peak := used (tests) */

/* Room left for held memory: the cap less what is used, less the headroom
 * open buffers do not hold yet. Negative when closed batches already eat
 * into that headroom. No cap: INT64_MAX. */
int64_t memory_room(void);

#endif /* BF_MEMORY_H */
