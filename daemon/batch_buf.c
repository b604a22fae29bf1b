/* batch_buf.c: the batch buffer's constructors and destructor. See
 * batch_buf.h. */
#include "batch_buf.h"

#include <stdlib.h>

#include "memory.h"

static batch_buf *make(unsigned dataset, size_t cap, int open)
{
    if ((open ? memory_reserve_open(cap) : memory_reserve(cap)) < 0)
        return NULL;
    batch_buf *b = calloc(1, sizeof(*b));
    if (b && !(b->data = malloc(cap ? cap : 1))) {
        free(b);
        b = NULL;
    }
    if (!b) {
        if (open)
            memory_release_open(cap);
        else
            memory_release(cap);
        return NULL;
    }
    b->dataset = dataset;
    b->cap = cap;
    b->open = open;
    return b;
}

batch_buf *batch_buf_open(unsigned dataset, size_t cap)
{
    return make(dataset, cap, 1);
}

batch_buf *batch_buf_new(unsigned dataset, size_t cap)
{
    return make(dataset, cap, 0);
}

void batch_buf_seal(batch_buf *b)
{
    if (b->open) {
        memory_seal(b->cap);
        b->open = 0;
    }
}

void batch_buf_free(batch_buf *b)
{
    if (!b)
        return;
    if (b->open)
        memory_release_open(b->cap);
    else
        memory_release(b->cap);
    free(b->data);
    free(b);
}
