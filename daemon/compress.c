/* compress.c: gzip with ISA-L igzip level 1. See compress.h. */
#include "compress.h"

#include <errno.h>
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"

/* igzip's stream (~80 KiB, its hash tables) and its level-1 buffer. */
typedef struct gz_work {
    struct isal_zstream z;
    uint8_t level_buf[ISAL_DEF_LVL1_DEFAULT];
} gz_work;

/* The bench's rows compress to about a fifth; a quarter plus a little is
 * enough for nearly every batch, and the rare one that needs more grows. */
static size_t first_cap(size_t len)
{
    return len / 4 + 4096;
}

/* Room that always suffices: stored blocks cost 5 bytes per 64 KiB, plus
 * the gzip header and trailer and igzip's own slack. */
static size_t worst_cap(size_t len)
{
    return len + len / 1024 + 1024;
}

int gz_begin(gz_body *z, size_t len)
{
    memset(z, 0, sizeof(*z));
    size_t cap = first_cap(len);
    uint64_t mc = memory_cap();
    /* A --max-memory this small would hold the state only now and then:
     * it must fit in half of what is left beside the open buffers'
     * headroom, or a batch could wait for it while the rest is held by
     * batches that wait too. */
    uint64_t hr = memory_headroom();
    if (mc && (hr >= mc || sizeof(gz_work) + cap > (mc - hr) / 2))
        return -E2BIG;
    if (memory_reserve(sizeof(gz_work) + cap) < 0)
        return -ENOMEM;
    z->work = malloc(sizeof(gz_work));
    z->data = malloc(cap);
    if (!z->work || !z->data) {
        free(z->work);
        free(z->data);
        memory_release(sizeof(gz_work) + cap);
        memset(z, 0, sizeof(*z));
        return -ENOMEM;
    }
    z->work_bytes = sizeof(gz_work);
    z->cap = cap;
    return 0;
}

static void work_free(gz_body *z)
{
    free(z->work);
    z->work = NULL;
    memory_release(z->work_bytes);
    z->work_bytes = 0;
}

int gz_run(gz_body *z, const void *in, size_t len)
{
    gz_work *w = z->work;
    struct isal_zstream *s = &w->z;
    isal_deflate_init(s);
    s->gzip_flag = IGZIP_GZIP;
    s->level = 1;
    s->level_buf = w->level_buf;
    s->level_buf_size = sizeof(w->level_buf);
    s->end_of_stream = 1;
    s->flush = NO_FLUSH;
    s->next_in = (uint8_t *)in;
    s->avail_in = (uint32_t)len;
    s->next_out = z->data;
    s->avail_out = (uint32_t)z->cap;
    int rc = 0;
    for (int round = 0;; round++) {
        if (round > 64 || isal_deflate(s) != COMP_OK) {
            rc = -EIO;
            break;
        }
        if (s->internal_state.state == ZSTATE_END)
            break;
        if (s->avail_out) /* igzip stopped without wanting more room */
            continue;
        /* Out of room: grow once to the size that always suffices. */
        size_t cap = worst_cap(len);
        if (z->cap >= cap) {
            rc = -EIO;
            break;
        }
        if (memory_reserve(cap - z->cap) < 0) {
            rc = -ENOMEM; /* the caller sends the rows uncompressed */
            break;
        }
        unsigned char *d = realloc(z->data, cap);
        if (!d) {
            memory_release(cap - z->cap);
            rc = -ENOMEM;
            break;
        }
        s->next_out = d + (s->next_out - z->data);
        s->avail_out += (uint32_t)(cap - z->cap);
        z->data = d;
        z->cap = cap;
    }
    size_t out_len = s->total_out;
    work_free(z);
    if (rc < 0) {
        gz_free(z);
        return rc;
    }
    z->len = out_len;
    /* Hold only what the body needs (glibc gives large blocks back). */
    unsigned char *d = realloc(z->data, z->len ? z->len : 1);
    if (d) {
        memory_release(z->cap - z->len);
        z->data = d;
        z->cap = z->len;
    }
    return 0;
}

void gz_free(gz_body *z)
{
    if (z->work)
        work_free(z);
    free(z->data);
    memory_release(z->cap);
    memset(z, 0, sizeof(*z));
}
