/*
 * batch_buf.h: a buffer of NDJSON rows for one dataset, the unit that moves
 * from batch to sink to spool and back.
 *
 * batch_buf_open and batch_buf_new are the only constructors and
 * batch_buf_free the only destructor: together they keep the buffer's
 * capacity in the memory account (memory.h), whichever module or thread
 * makes or frees it. A constructor reserves before it allocates and returns
 * NULL when the account refuses (the cap would be passed) or malloc fails;
 * each caller's header says what it does then. Ownership passes whole with
 * the pointer; each module's header says where its functions take it.
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
    int open;              /* counted as an open buffer (memory.h) */
    int full;              /* closed at flush_bytes, before its interval */
} batch_buf;

/* A new empty open batch (batch.c's): cap bytes (cap > 0), reserved with
 * memory_reserve_open, which may use the whole cap. NULL when refused or
 * out of memory (nothing reserved then). Safe on any thread. */
batch_buf *batch_buf_open(unsigned dataset, size_t cap);

/* A new empty held buffer (a spool read, a split half): reserved with
 * memory_reserve, which leaves the open buffers' headroom free. NULL when
 * refused or out of memory. Safe on any thread. */
batch_buf *batch_buf_new(unsigned dataset, size_t cap);

/* An open batch was closed: its bytes count as held from now on. */
void batch_buf_seal(batch_buf *b);

/* Free b and release its capacity. NULL is a no-op. Safe on any thread. */
void batch_buf_free(batch_buf *b);

#endif /* BF_BATCH_BUF_H */
