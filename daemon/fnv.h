/* fnv.h: FNV-1a, 32 bits, for the slot of a table: catalog names and
 * enrich's IP cache. Fast on short keys and not collision-resistant: use it
 * where a collision costs a probe or a recomputation, never correctness. */
#ifndef BF_FNV_H
#define BF_FNV_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t fnv1a32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

#endif /* BF_FNV_H */
