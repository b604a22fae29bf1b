/*
 * pacing.h: how long one dataset's batches stay open, paced to the
 * destination's rate limit. Part of the delivery policy: sink.c keeps one
 * pacer per dataset, feeds it every answer, and tells batch.c the interval
 * (sink_opts.on_interval). Pure arithmetic: no loop, no clock, no I/O.
 *
 * Tinybird limits requests per datasource and window (100 to 1,000 a
 * second by plan), shared by every client of the workspace. N hosts that
 * flush every T seconds make N/T requests a second, whatever their
 * traffic. A host's lever is T: a longer interval makes bigger batches
 * and fewer requests. No host knows N; each sees, with every answer, how
 * much of the shared window is left (sink_budget), and 429s.
 *
 * The law, for each answer that carries a budget, on the log of T (kept
 * between base, --flush-interval-ms, and max, --max-flush-interval-ms):
 *
 *   low    how low the budget runs against the time to its reset, 0 to 1:
 *          the share of its limit the window will use by its end at the
 *          pace so far, at least (used * W / ran, W the longest reset
 *          seen, ran = W - reset + 1 the longest the window can have run,
 *          reset being rounded up to whole seconds; with W = 1 s, used /
 *          limit), past one half, over one half: 0 until half the budget
 *          is gone, 1 when it is all gone
 *   low > 0:       T = T * exp(UP * max(low, 0.1))        UP 1.0
 *   low = 0:       T = T * exp(-DOWN * min(T / base, 3))  DOWN 0.03
 *   refused (429): T = 2 * T
 *   every answer, besides: T = T * (T / base)^-LEAK        LEAK 0.03
 *
 * Why it converges without coordination, for any N up to what max allows:
 *   - Every host samples the one shared window, so each sees the same
 *     distribution of "low", which moves up with the fleet's total U (for
 *     requests spread over a fixed window, low > 0 for a share 1 - limit /
 *     2U of them once U passes half the limit, and never below). Each
 *     host's log T drifts by E[up step] - E[down step] per answer, the
 *     same function of U for every host: up while U is above the point
 *     where the two balance, down below it, whatever N is. So the total
 *     settles there, at 55 to 70% of the limit (higher when intervals are
 *     long); N only decides how long the intervals are.
 *   - Below half the limit no host ever sees "low": every interval goes
 *     back to base and stays there, with no noise ("come back down when
 *     there is headroom"); from max to base takes one to two minutes. The
 *     down step grows with T (up to 3 times) so that long intervals come
 *     back first, and LEAK draws the hosts' intervals toward each other,
 *     which no shared signal does, at the cost of a slightly higher
 *     balance point when intervals are long.
 *   - No oscillation: near the balance point the steps are small (a tenth
 *     to a fifth of UP, against DOWN) and the drift is proportional to the
 *     distance from it; the loop gain per answer stays well under 1/4,
 *     where a loop with a step of delay (a new interval closes the next
 *     batch) does not overshoot. Far from it the steps are large (an
 *     empty window: UP) and the fleet comes back in a few windows. A
 *     limiter with a sharp signal (sliding window, token bucket) makes
 *     "low" jump from never to always: the total then dithers within one
 *     step below the threshold.
 *   - A 429 is the hard signal, as a loss is for TCP: halve the rate. The
 *     refused batch waits the new T at least (retries count against the
 *     limit too) and then carries all the dataset holds (sink.c).
 *   - Hosts must sample the window at random phases: with steady traffic
 *     and T equal to the window, a host would see the same part of every
 *     window. The batch stage therefore jitters each interval by 10%
 *     while pacing is on (sink.c).
 *
 * One more rule keeps T from winding up: for a batch that closed by size
 * (--flush-bytes) a longer interval would not make fewer requests; its
 * answer does not raise T. A
 * destination that reports no budget (a file, Kafka) never moves T.
 * tests/unit/test_pacing.c runs the law for fleets of 4 to 45 hosts
 * against one simulated limit (and shows each claim above); docs/scale.md
 * has the real fleet's figures.
 */
#ifndef BF_PACING_H
#define BF_PACING_H

#include <stdint.h>

#include "sink_backend.h"

#define PACING_LOW_WATER 0.5 /* "low": less than this share left, pro rata */
#define PACING_UP 1.0
#define PACING_DOWN 0.03
#define PACING_DOWN_CAP 3.0
#define PACING_LEAK 0.03

typedef enum pacing_state {
    PACING_OFF,          /* --pacing off: T stays at base */
    PACING_NORMAL,       /* T is base */
    PACING_RATE_LIMITED, /* T is stretched past base */
} pacing_state;

typedef struct pacing_opts {
    int on;              /* 0: T stays at base_ms */
    uint64_t base_ms;    /* --flush-interval-ms, the shortest T */
    uint64_t max_ms;     /* --max-flush-interval-ms, the longest (a
                            smaller value counts as base_ms) */
    uint64_t flush_bytes; /* --flush-bytes: batches waiting while rate
                             limited are merged up to it (sink.c); 0: no
                             bound but their buffers */
} pacing_opts;

/* One dataset's pacing. Zeroed memory is a pacer at base. */
typedef struct pacer {
    double t_ms;         /* T; 0: base */
    uint64_t window_s;   /* the longest reset seen, whole seconds */
} pacer;

/* One answer for the dataset: its budget (limit 0: none), whether it was
 * refused for the rate limit, and whether its batch closed by size (full).
 * Returns 1 when the interval in whole milliseconds changed. */
int pacer_answer(pacer *p, const pacing_opts *o, const sink_budget *b, int throttled,
                 int full);

/* T in milliseconds, within the limits o gives now (a reload may have
 * moved them). */
uint64_t pacer_interval_ms(const pacer *p, const pacing_opts *o);

pacing_state pacer_state(const pacer *p, const pacing_opts *o);

/* "off", "normal", "rate_limited": as the stats and logs say it. */
const char *pacing_state_name(pacing_state s);

#endif /* BF_PACING_H */
