/*
 * batch.h: per-dataset NDJSON batches and the thresholds that close them.
 *
 * A batch is one buffer of flush_bytes (an open buffer in memory.h),
 * allocated when its first row arrives; rows are formatted straight into
 * it while it has room for a largest row, and the last few aside and
 * copied, so a batch never passes flush_bytes (a single row larger than
 * that gets a buffer of its own size). It is closed when the next row does
 * not fit, when it is full, or its dataset's interval after its first row,
 * and handed whole to the flush callback, which owns it from then on. The
 * interval is flush_interval_ms until the delivery policy says otherwise
 * (batch_set_interval: the policy decides, batch applies).
 */
#ifndef BF_BATCH_H
#define BF_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"
#include "bf_proto.h"
#include "enrich.h"

/* Called with each closed batch; the callee owns b (batch_buf_free). */
typedef void (*batch_flush_cb)(batch_buf *b, void *arg);

typedef struct batch_opts {
    uint64_t flush_bytes;
    uint64_t flush_interval_ms;
    /* Each dataset's first batch closes after a uniform part of the
     * interval instead, so that a fleet restarted together does not flush
     * in step: with steady traffic a batch opens as the last one closes,
     * so that first phase stays. */
    int phase_jitter;
    size_t row_max;        /* row_max_bytes(max_datagram) */
    batch_flush_cb on_flush;
    void *arg;
} batch_opts;

/* Returns 0 or a negative libuv error. */
int batch_init(uv_loop_t *loop, const batch_opts *opts);

/* New sizes, from a reload: flush_bytes and row_max (the rest of opts is
 * not changed; the interval comes from the policy, batch_set_interval).
 * When either changes, each open batch is closed first and goes out as it
 * is (its buffer was opened for the old flush_bytes). */
void batch_reconfigure(const batch_opts *opts);

/* Format row into its dataset's batch; may close the batch (on_flush runs
 * before this returns). Returns 0, or UV_ENOMEM when no buffer could be
 * had: the row is lost and counted as dropped.memory_full (the memory
 * account refused: --max-memory is full of batches waiting for the sink or
 * the spool's writes) or dropped.no_memory (malloc failed). */
int batch_append(const bf_row *row);

/* From now on, batches of dataset close interval_ms after their first row,
 * give or take a uniform jitter_ms (each batch draws its own). An open
 * batch is held to it at once: closed now if it is already older. */
void batch_set_interval(unsigned dataset, uint64_t interval_ms, uint64_t jitter_ms);

/* Close dataset's batch now, if it holds rows (the policy is about to send
 * what the dataset holds); on_flush runs before this returns. */
void batch_flush(unsigned dataset);

/* Nonzero when the open buffers' headroom is not free under --max-memory
 * now: receiving should wait for room (completions free it) rather than
 * read rows that would be dropped as memory_full. */
int batch_must_wait(void);

/* Close every non-empty batch now (shutdown, or a test). */
void batch_flush_all(void);

/* Stop the timers and close their handles; pending rows are flushed first. */
void batch_close(void);

#endif /* BF_BATCH_H */
