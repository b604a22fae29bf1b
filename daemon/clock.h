/* clock.h: the wall clock in epoch milliseconds, as rows, stats, dead
 * letters and log lines report it. (Timers use the loop's monotonic uv_now
 * instead.) */
#ifndef BF_CLOCK_H
#define BF_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif /* BF_CLOCK_H */
