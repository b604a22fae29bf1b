/* pacing.c: the flush interval of one dataset from the destination's
 * budget. See pacing.h for the law and why. */
#include "pacing.h"

#include <math.h>

static double max_of(const pacing_opts *o)
{
    return (double)(o->max_ms > o->base_ms ? o->max_ms : o->base_ms);
}

static double clamp_t(double t, const pacing_opts *o)
{
    double lo = (double)o->base_ms, hi = max_of(o);
    return t < lo ? lo : t > hi ? hi : t;
}

/* How low the budget runs against the time to its reset, from 0 (not
 * low) to 1 (spent). The least share of its limit the window will use by
 * its end at the pace so far: used over the longest it can have run (reset
 * is rounded up to whole seconds), times its length; low past
 * 1 - LOW_WATER. */
static double how_low(pacer *p, const sink_budget *b)
{
    uint64_t reset_s = (b->reset_ms + 999) / 1000;
    if (reset_s > p->window_s)
        p->window_s = reset_s;
    double w = p->window_s ? (double)p->window_s : 1.0;
    double ran = reset_s ? w - (double)reset_s + 1 : w;
    double used = b->remaining < b->limit ? (double)(b->limit - b->remaining) : 0;
    double over = (used * w / ran / (double)b->limit - (1 - PACING_LOW_WATER)) / PACING_LOW_WATER;
    return over <= 0 ? 0 : over > 1 ? 1 : over;
}

int pacer_answer(pacer *p, const pacing_opts *o, const sink_budget *b, int throttled,
                 int full)
{
    if (!o->on || (!throttled && !b->limit))
        return 0;
    double before = clamp_t(p->t_ms, o), t = before;
    double stretch = log(t / (double)o->base_ms); /* 0 at base */
    /* Closed by size: a longer interval would not make fewer requests. */
    int may_raise = !full;
    double step, low = throttled ? 0 : how_low(p, b);
    if (throttled) {
        step = log(2);
    } else if (low > 0) {
        step = PACING_UP * (low > 0.1 ? low : 0.1);
    } else {
        double f = exp(stretch);
        step = -PACING_DOWN * (f < PACING_DOWN_CAP ? f : PACING_DOWN_CAP);
    }
    step -= PACING_LEAK * stretch;
    if (step < 0 || may_raise)
        t *= exp(step);
    p->t_ms = clamp_t(t, o);
    return llround(p->t_ms) != llround(before);
}

uint64_t pacer_interval_ms(const pacer *p, const pacing_opts *o)
{
    return o->on ? (uint64_t)llround(clamp_t(p->t_ms, o)) : o->base_ms;
}

pacing_state pacer_state(const pacer *p, const pacing_opts *o)
{
    if (!o->on)
        return PACING_OFF;
    return pacer_interval_ms(p, o) > o->base_ms ? PACING_RATE_LIMITED : PACING_NORMAL;
}

const char *pacing_state_name(pacing_state s)
{
    return s == PACING_OFF ? "off" : s == PACING_NORMAL ? "normal" : "rate_limited";
}
