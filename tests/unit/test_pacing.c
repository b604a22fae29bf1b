/*
 * test_pacing.c: daemon/pacing.c, the flush interval of one dataset from
 * the destination's budget.
 *
 * First each rule of the law alone (pacing.h): off and no budget never
 * move the interval; a 429 doubles it up to max; a budget running low
 * raises it, headroom brings it back to base; a batch closed by
 * size does not raise it; the reset places the answer in the window; a
 * reload clamps. Then the promise itself: a fleet of pacers sharing one
 * fixed window limiter, in simulated time, for several fleet sizes: the
 * total settles under the limit without coordination, the 429s stop, the
 * total does not swing once settled, and headroom brings every interval
 * back.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pacing.h"
#include "testutil.h"

static const pacing_opts on = {.on = 1, .base_ms = 1000, .max_ms = 10000};

static sink_budget budget(uint64_t limit, uint64_t remaining, uint64_t reset_ms)
{
    return (sink_budget){.limit = limit, .remaining = remaining, .reset_ms = reset_ms};
}

START_TEST(test_pacing_off_and_silent_never_move)
{
    pacer p = {0};
    pacing_opts off = on;
    off.on = 0;
    sink_budget full = budget(10, 0, 1000), none = {0};
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(pacer_answer(&p, &off, &full, 1, 0), 0);
        ck_assert_int_eq(pacer_answer(&p, &on, &none, 0, 0), 0);
    }
    ck_assert_uint_eq(pacer_interval_ms(&p, &off), 1000);
    ck_assert_uint_eq(pacer_interval_ms(&p, &on), 1000);
    ck_assert_int_eq(pacer_state(&p, &off), PACING_OFF);
    ck_assert_int_eq(pacer_state(&p, &on), PACING_NORMAL);
    ck_assert_str_eq(pacing_state_name(PACING_OFF), "off");
    ck_assert_str_eq(pacing_state_name(PACING_NORMAL), "normal");
    ck_assert_str_eq(pacing_state_name(PACING_RATE_LIMITED), "rate_limited");
}
END_TEST

/* A 429 halves the rate: about 1, 2, 4, 8 s, then max (the leak takes 3%
 * of the stretch); a 429 without any budget headers counts too. */
START_TEST(test_pacing_throttled_doubles_to_max)
{
    pacer p = {0};
    sink_budget none = {0};
    const double want[] = {2000, 4000, 8000, 10000, 10000};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(pacer_answer(&p, &on, &none, 1, 0), i < 4);
        ck_assert_double_eq_tol((double)pacer_interval_ms(&p, &on), want[i], want[i] * 0.08);
    }
    ck_assert_int_eq(pacer_state(&p, &on), PACING_RATE_LIMITED);
}
END_TEST

/* More than half the budget gone (with the 1 s window) raises T, the more
 * the less is left: by exp(UP * 0.2) with 60% used, exp(UP) with all of
 * it; half or less is headroom: at base nothing moves, from max T comes
 * back, by steps that shrink as T does, to base, where the state is
 * normal again. */
START_TEST(test_pacing_low_raises_headroom_lowers)
{
    pacer p = {0};
    ck_assert_int_eq(pacer_answer(&p, &on, &(sink_budget){10, 5, 1000}, 0, 0), 0);
    ck_assert_uint_eq(pacer_interval_ms(&p, &on), 1000);
    ck_assert_int_eq(pacer_answer(&p, &on, &(sink_budget){10, 4, 1000}, 0, 0), 1);
    ck_assert_uint_eq(pacer_interval_ms(&p, &on), (uint64_t)llround(1000 * exp(PACING_UP * 0.2)));
    ck_assert_int_eq(pacer_state(&p, &on), PACING_RATE_LIMITED);
    pacer spent = {0};
    pacer_answer(&spent, &on, &(sink_budget){10, 0, 1000}, 0, 0);
    ck_assert_uint_eq(pacer_interval_ms(&spent, &on), (uint64_t)llround(1000 * exp(PACING_UP)));
    pacer barely = {0}; /* 51 of 100: the smallest step, a tenth of UP */
    pacer_answer(&barely, &on, &(sink_budget){100, 49, 1000}, 0, 0);
    ck_assert_uint_eq(pacer_interval_ms(&barely, &on), (uint64_t)llround(1000 * exp(PACING_UP * 0.1)));
    for (int i = 0; i < 20; i++)
        pacer_answer(&p, &on, &(sink_budget){10, 0, 1000}, 0, 0);
    ck_assert_uint_eq(pacer_interval_ms(&p, &on), 10000);
    sink_budget half = budget(10, 5, 1000);
    uint64_t t = 10000, steps = 0, last = 0;
    while (t > 1000 && steps < 1000) {
        pacer_answer(&p, &on, &half, 0, 0);
        uint64_t next = pacer_interval_ms(&p, &on);
        ck_assert_uint_lt(next, t);
        if (steps)
            ck_assert_uint_le(t - next, last); /* the longest come back first */
        last = t - next;
        t = next;
        steps++;
    }
    ck_assert_uint_eq(t, 1000);
    ck_assert_int_eq(pacer_state(&p, &on), PACING_NORMAL);
    ck_assert_uint_lt(steps, 40);
    ck_assert_uint_gt(steps, 10);
}
END_TEST

/* A batch that closed by size: a longer interval would not make fewer
 * requests, so neither "low" nor a 429 raises T; headroom still lowers
 * it. */
START_TEST(test_pacing_closed_by_size_does_not_wind_up)
{
    pacer p = {0};
    sink_budget low = budget(100, 0, 1000), none = {0};
    pacer_answer(&p, &on, &none, 1, 0);
    pacer_answer(&p, &on, &none, 1, 0);
    uint64_t t = pacer_interval_ms(&p, &on);
    ck_assert_uint_gt(t, 3700);
    pacer_answer(&p, &on, &low, 0, 1);
    pacer_answer(&p, &on, &none, 1, 1);
    ck_assert_uint_le(pacer_interval_ms(&p, &on), t);
    t = pacer_interval_ms(&p, &on);
    ck_assert_int_eq(pacer_answer(&p, &on, &low, 0, 0), 1);
    ck_assert_uint_gt(pacer_interval_ms(&p, &on), t);
    t = pacer_interval_ms(&p, &on);
    ck_assert_int_eq(pacer_answer(&p, &on, &(sink_budget){100, 100, 1000}, 0, 1), 1);
    ck_assert_uint_lt(pacer_interval_ms(&p, &on), t);
}
END_TEST

/* The reset places the answer in the window: the same use early in a
 * 10 s window runs low, late in it does not. The window's length is the
 * longest reset seen; without a reset, the whole window has run. */
START_TEST(test_pacing_reset_places_the_window)
{
    pacer p = {0};
    pacer_answer(&p, &on, &(sink_budget){100, 99, 10000}, 0, 0);
    ck_assert_uint_eq(p.window_s, 10);
    pacer early = p, late = p;
    /* 30 of 100 used: at most 2 s into the window, on pace for 150 (low);
     * up to 10 s into it, for 30 (not low) */
    pacer_answer(&early, &on, &(sink_budget){100, 70, 9000}, 0, 0);
    pacer_answer(&late, &on, &(sink_budget){100, 70, 1000}, 0, 0);
    ck_assert_uint_gt(pacer_interval_ms(&early, &on), 1000);
    ck_assert_uint_eq(pacer_interval_ms(&late, &on), 1000);
    pacer q = {0};
    pacer_answer(&q, &on, &(sink_budget){10, 5, 0}, 0, 0);
    ck_assert_uint_eq(pacer_interval_ms(&q, &on), 1000);
    pacer_answer(&q, &on, &(sink_budget){10, 4, 0}, 0, 0);
    ck_assert_uint_gt(pacer_interval_ms(&q, &on), 1000);
    ck_assert_uint_eq(q.window_s, 0);
}
END_TEST

/* New limits (a reload) hold at once, before any answer. */
START_TEST(test_pacing_limits_clamp)
{
    pacer p = {0};
    sink_budget none = {0};
    for (int i = 0; i < 6; i++)
        pacer_answer(&p, &on, &none, 1, 0);
    ck_assert_uint_eq(pacer_interval_ms(&p, &on), 10000);
    pacing_opts lower = {.on = 1, .base_ms = 1000, .max_ms = 3000};
    ck_assert_uint_eq(pacer_interval_ms(&p, &lower), 3000);
    pacing_opts higher_base = {.on = 1, .base_ms = 5000, .max_ms = 2000};
    ck_assert_uint_eq(pacer_interval_ms(&p, &higher_base), 5000); /* max < base: base */
    ck_assert_int_eq(pacer_state(&p, &higher_base), PACING_NORMAL);
    pacer fresh = {0};
    ck_assert_uint_eq(pacer_interval_ms(&fresh, &lower), 1000);
}
END_TEST

/* ---- a fleet sharing one limit, in simulated time ---------------------- */

/* Deterministic: the same run on every machine. */
static uint64_t rng_state;
static double rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

typedef struct sim_host {
    pacer p;
    double open_ms;     /* the open batch's first row */
    double due_ms;      /* its interval, drawn when it opened */
    double retry_at;    /* a refused batch waits for this; < 0: none */
    int queued;         /* batches closed behind the refused one */
} sim_host;

typedef struct sim_result {
    double pct_429;         /* 429s among requests from 30 s to the raise */
    double rate[6];         /* accepted requests per second, in the six 10 s
                               before the raise */
    uint64_t min_t, max_t;  /* hosts' intervals at the raise */
    double base_again_s;    /* after the raise, when every host was at
                               base; -1: never */
} sim_result;

/* One request of host x at now in window w (used counts the window's);
 * returns 1 when it was accepted. As sink.c does: a refused batch waits
 * for the window's end or the new interval, whichever is later, and up to
 * as long again. */
static int sim_request(sim_host *x, double now, long w, uint64_t *used, uint64_t limit)
{
    int ok = ++*used <= limit;
    sink_budget b = {limit, ok ? limit - *used : 0, 1000};
    pacer_answer(&x->p, &on, &b, !ok, 0);
    if (!ok) {
        double end = (double)(w + 1) * 1000 - now, t = (double)pacer_interval_ms(&x->p, &on);
        double wait = end > t ? end : t;
        x->retry_at = now + wait * (1 + rnd());
    }
    return ok;
}

/* n hosts with steady traffic flush every T (their pacer's, jittered 10%
 * as batch.c does; the first phase uniform); one fixed window of limit
 * requests per second, shared; a refused batch is sent again as
 * sim_request says, with the batches queued behind it and the open one
 * merged into it, as sink.c does while rate limited. At raise_ms the limit becomes 10 times
 * larger. 1 ms steps. */
static sim_result simulate(int n, uint64_t limit, double raise_ms, double end_ms)
{
    static sim_host h[64];
    ck_assert_int_le(n, 64);
    rng_state = 42;
    for (int i = 0; i < n; i++) {
        memset(&h[i], 0, sizeof(h[i]));
        h[i].due_ms = 1 + rnd() * (double)(on.base_ms - 1);
        h[i].retry_at = -1;
    }
    long window = -1;
    uint64_t used = 0, reqs = 0, refused = 0;
    sim_result r = {.base_again_s = -1, .min_t = UINT64_MAX};
    for (double now = 0; now < end_ms; now += 1) {
        if (now == raise_ms) {
            for (int i = 0; i < n; i++) {
                uint64_t t = pacer_interval_ms(&h[i].p, &on);
                r.min_t = t < r.min_t ? t : r.min_t;
                r.max_t = t > r.max_t ? t : r.max_t;
            }
            limit *= 10;
        }
        if (now > raise_ms && r.base_again_s < 0) {
            int all = 1;
            for (int i = 0; i < n && all; i++)
                all = pacer_interval_ms(&h[i].p, &on) == on.base_ms;
            if (all)
                r.base_again_s = (now - raise_ms) / 1000;
        }
        long w = (long)(now / 1000);
        if (w != window) {
            window = w;
            used = 0;
        }
        int counted = now >= 30000 && now < raise_ms;
        for (int i = 0; i < n; i++) {
            sim_host *x = &h[i];
            int sends = 0, oks = 0;
            if (now - x->open_ms >= x->due_ms) { /* steady traffic: the next opens at once */
                x->open_ms = now;
                x->due_ms = (double)pacer_interval_ms(&x->p, &on) * (0.9 + 0.2 * rnd());
                if (x->retry_at >= 0) {
                    x->queued++;
                } else {
                    sends++;
                    oks += sim_request(x, now, w, &used, limit);
                }
            }
            if (x->retry_at >= 0 && now >= x->retry_at) {
                /* the batches queued behind and the open one go with it,
                 * merged (sink.c) */
                x->retry_at = -1;
                x->queued = 0;
                x->open_ms = now;
                x->due_ms = (double)pacer_interval_ms(&x->p, &on) * (0.9 + 0.2 * rnd());
                sends++;
                oks += sim_request(x, now, w, &used, limit);
            }
            if (counted) {
                reqs += (uint64_t)sends;
                refused += (uint64_t)(sends - oks);
            }
            if (now >= raise_ms - 60000 && now < raise_ms)
                r.rate[(int)((now - (raise_ms - 60000)) / 10000)] += 0.1 * oks;
        }
    }
    r.pct_429 = 100.0 * (double)refused / (double)(reqs ? reqs : 1);
    return r;
}

/* Fleets of 4 to 45 hosts flushing every second against 10 requests/s
 * (0.4 to 4.5 times the limit): after 30 s under 3% of the requests
 * are refused; the total settles at 50 to 80% of the limit and stays
 * within 25% of its mean (no swings); the hosts' intervals are within
 * base and max. A fleet under half the limit is left alone. When the
 * limit is raised, every host is back at base within two minutes. */
static const int fleet_sizes[] = {4, 12, 30, 45};

START_TEST(test_pacing_fleet_settles_under_shared_limit)
{
    int n = fleet_sizes[_i];
    sim_result r = simulate(n, 10, 200000, 330000);
    double lo = 1e9, hi = 0, mean = 0;
    for (int b = 0; b < 6; b++) {
        lo = r.rate[b] < lo ? r.rate[b] : lo;
        hi = r.rate[b] > hi ? r.rate[b] : hi;
        mean += r.rate[b] / 6;
    }
    ck_assert_msg(r.pct_429 < 3.0, "n=%d: %.2f%% 429s after 30 s", n, r.pct_429);
    if (n == 4) {
        ck_assert_uint_eq(r.max_t, 1000);
        ck_assert_double_eq_tol(mean, n, 0.3);
        return;
    }
    ck_assert_msg(mean >= 5 && mean <= 8, "n=%d: %.2f requests/s", n, mean);
    ck_assert_msg(hi - mean <= mean / 4 && mean - lo <= mean / 4,
                  "n=%d: swings from %.1f to %.1f requests/s", n, lo, hi);
    ck_assert_uint_le(r.max_t, 10000);
    ck_assert_uint_ge(r.min_t, 1000);
    ck_assert_msg(r.base_again_s >= 0 && r.base_again_s < 120,
                  "n=%d: back at base %.0f s after the limit was raised", n, r.base_again_s);
}
END_TEST

Suite *pacing_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("pacing", NULL, NULL, &tc);
    tcase_add_test(tc, test_pacing_off_and_silent_never_move);
    tcase_add_test(tc, test_pacing_throttled_doubles_to_max);
    tcase_add_test(tc, test_pacing_low_raises_headroom_lowers);
    tcase_add_test(tc, test_pacing_closed_by_size_does_not_wind_up);
    tcase_add_test(tc, test_pacing_reset_places_the_window);
    tcase_add_test(tc, test_pacing_limits_clamp);
    tcase_add_loop_test(tc, test_pacing_fleet_settles_under_shared_limit, 0, N(fleet_sizes));
    return s;
}
