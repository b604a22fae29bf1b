/* fnv.h: hash_words, eight bytes at a time, for the slot of a table: the
 * catalog's model names, enrich's caches (IP addresses and referrers as
 * sent); key_equal for the compare after a probe. (Named for the FNV-1a
 * it replaced: four instructions a byte.) Fast and not collision-resistant:
 * use them where a collision costs a probe or a recomputation, never
 * correctness. */
#ifndef BF_FNV_H
#define BF_FNV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* 32 bits of a multiply-and-fold hash of len bytes, read eight at a time
 * (the last eight again when len is not a multiple: no byte loop past the
 * first word), so a 70-byte URL costs a dozen multiplies where FNV-1a
 * spends four instructions a byte. Native byte order: a slot, never stored. */
static inline uint32_t hash_words(const void *data, size_t len)
{
    const unsigned char *p = data;
    const uint64_t k = 0xff51afd7ed558ccdull;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)len * k), w;
    if (len < 8) {
        /* 4 to 7 bytes as two overlapping halves, 1 to 3 as first, middle
         * and last (with len mixed in above, every byte counts). */
        if (len >= 4) {
            uint32_t lo, hi;
            memcpy(&lo, p, 4);
            memcpy(&hi, p + len - 4, 4);
            w = (uint64_t)hi << 32 | lo;
        } else {
            w = len ? (uint64_t)p[0] << 16 | (uint64_t)p[len / 2] << 8 | p[len - 1] : 0;
        }
        h = (h ^ w) * k;
    } else {
        size_t i = 0;
        for (; len - i > 8; i += 8) {
            memcpy(&w, p + i, 8);
            h = (h ^ w) * k;
            h ^= h >> 29;
        }
        memcpy(&w, p + len - 8, 8);
        h = (h ^ w) * k;
    }
    h ^= h >> 32;
    h *= 0xc4ceb9fe1a85ec53ull;
    return (uint32_t)(h >> 32);
}

/* Whether the first w bytes and the last w bytes of x and y agree (w is 4
 * or 8, n at least w and at most 2 * w: the two words overlap or touch,
 * so together they are all n bytes). A constant w makes each memcpy one
 * load. */
static inline __attribute__((always_inline)) int
ends_equal(const unsigned char *x, const unsigned char *y, size_t n, size_t w)
{
    uint64_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    memcpy(&a0, x, w);
    memcpy(&b0, y, w);
    memcpy(&a1, x + n - w, w);
    memcpy(&b1, y + n - w, w);
    return !((a0 ^ b0) | (a1 ^ b1));
}

/* Whether the n bytes at a and b are the same, for keys of up to 16
 * bytes (model names, IPv4 addresses): two overlapping words of 8 or 4
 * bytes, never a byte outside either key; longer keys by memcmp. */
static inline int key_equal(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    if (n > 16)
        return memcmp(x, y, n) == 0;
    if (n >= 8)
        return ends_equal(x, y, n, 8);
    if (n >= 4)
        return ends_equal(x, y, n, 4);
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

#endif /* BF_FNV_H */
