/*
 * batch_buf.h: a buffer of NDJSON rows for one dataset, the unit that moves
 * from batch to sink to spool and back.
 *
 * batch_buf_new is the only constructor and batch_buf_free the only
 * destructor: together they keep the buffer's capacity in the memory
 * account (memory.h), whichever module or thread makes or frees it.
 * Ownership passes whole with the pointer; each module's header says where
 * its functions take it.
 */
#ifndef BF_BATCH_BUF_H
#define BF_BATCH_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct batch_buf {
    unsigned dataset;      /* enum bf_dataset */
    char *data;            /* NDJSON; every row ends in '\n' */
    size_t len, cap;
    uint64_t rows;
    uint64_t first_ms;     /* loop time (uv_now) of the first row */
    uint64_t close_ms;     /* loop time the batch was closed */
} batch_buf;

/* A new empty buffer of cap bytes (cap > 0) for dataset, reserved in the
 * memory account. NULL when out of memory (nothing reserved then). Safe on
 * any thread. */
batch_buf *batch_buf_new(unsigned dataset, size_t cap);

/* Free b and release its capacity. NULL is a no-op. Safe on any thread. */
void batch_buf_free(batch_buf *b);

#endif /* BF_BATCH_BUF_H */
