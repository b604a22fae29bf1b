/* batch_buf.c: the batch buffer's constructor and destructor. See batch_buf.h. */
#include "batch_buf.h"

#include <stdlib.h>

#include "memory.h"

batch_buf *batch_buf_new(unsigned dataset, size_t cap)
{
    batch_buf *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->data = malloc(cap ? cap : 1);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->dataset = dataset;
    b->cap = cap;
    memory_reserve(cap);
    return b;
}

void batch_buf_free(batch_buf *b)
{
    if (!b)
        return;
    memory_release(b->cap);
    free(b->data);
    free(b);
}
