/* jitter.h: uniform random spreads for waits and timers, so that hosts
 * and datasets that started or failed together do not act in step. Not
 * for anything secret. */
#ifndef BF_JITTER_H
#define BF_JITTER_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

/* Uniform in [0, n]. */
static inline uint64_t jitter_upto(uint64_t n)
{
    uint64_t r;
    if (n == 0)
        return 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
        r = (uint64_t)rand() << 31 ^ (uint64_t)rand();
    return n == UINT64_MAX ? r : r % (n + 1);
}

#endif /* BF_JITTER_H */
