/*
 * compress.h: gzip for request bodies, with ISA-L's igzip at level 1.
 *
 * Chosen by measurement (docs/performance.md, tests/bench/gzip.c): on a
 * 4 MiB batch of the bench's rows igzip level 1 takes about a quarter of
 * zlib level 1's time per byte and writes a smaller body (ratio 0.21
 * against 0.22); libdeflate level 1 sits between. The output is standard
 * gzip (RFC 1952), what Tinybird reads with Content-Encoding: gzip.
 *
 * Memory: everything a compression allocates is counted in memory.h. The
 * working state and a first output buffer are reserved and allocated by
 * gz_begin, on the caller's thread, so a refusal is known before any work
 * is queued; gz_run grows the output when the rows compress worse than
 * expected, frees the working state and shrinks the output to its length,
 * keeping the account equal to what is held; gz_free releases the rest.
 */
#ifndef BF_COMPRESS_H
#define BF_COMPRESS_H

#include <stddef.h>

typedef struct gz_body {
    unsigned char *data;   /* the gzip body once gz_run returned 0 */
    size_t len;            /* its length */
    size_t cap;            /* bytes allocated for data, and counted */
    void *work;            /* igzip's state and level buffer, until gz_run ends */
    size_t work_bytes;     /* counted for work */
} gz_body;

/* Reserve and allocate the state (about 360 KiB) and a first output
 * buffer for compressing len bytes into *z. Returns 0, -ENOMEM when the
 * account refused (now; later there may be room) or malloc failed, or
 * -E2BIG when it would take more than half of the cap less the open
 * buffers' headroom (a small --max-memory, where a batch could wait for it
 * forever: send the rows uncompressed); nothing is held on failure. Safe
 * on any thread. */
int gz_begin(gz_body *z, size_t len);

/* Compress in (len bytes, as given to gz_begin) into z->data. Returns 0,
 * or a negative errno (-ENOMEM: more output room was needed and not
 * given; -EIO: igzip failed); on failure z holds no output. Either way the
 * working state is freed. Safe on any thread; runs on the threadpool. */
int gz_run(gz_body *z, const void *in, size_t len);

/* Free what z holds and release it; z is then empty. */
void gz_free(gz_body *z);

#endif /* BF_COMPRESS_H */
