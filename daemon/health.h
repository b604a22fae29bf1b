/*
 * health.h: is the daemon doing its job? The answer behind GET /health
 * (metrics.c), made from what the modules already know.
 *
 * Healthy: the UDP socket is being read and delivery works. Each way to be
 * unhealthy has a name, given in the answer with its figures:
 *
 *   not_receiving      the socket is not read: stopping (SIGTERM), or not
 *                      yet listening
 *   sink_unauthorized  the destination refuses the token (sink_state
 *                      unauthorized: 401, 403): every batch is held
 *   sink_not_found     the destination has no such datasource or region
 *                      (sink_state not_found: 404): every batch is held
 *   backing_off        a dataset has been failing (retrying, backing off)
 *                      for more than HEALTH_BACKOFF_MS without a success
 *   spool_nearly_full  the spool holds more than HEALTH_SPOOL_PERCENT of
 *                      --max-spool-bytes: past the cap the oldest rows go
 *   memory_at_cap      batch memory is full: no room is left beside the
 *                      open batches' headroom (memory.h), so new batches
 *                      go to the spool instead of the queue (the hard
 *                      bound keeps memory_bytes itself under the cap)
 */
#ifndef BF_HEALTH_H
#define BF_HEALTH_H

#include <jansson.h>
#include <stdint.h>

#define HEALTH_BACKOFF_MS 60000
#define HEALTH_SPOOL_PERCENT 90

/* What the answer is made from. */
typedef struct health_state {
    int receiving;             /* receive_reading() */
    const char *sink_state;    /* sink_state(), NULL: "ok" */
    const char *sink_hint;     /* sink_state_hint(), or NULL */
    uint64_t failing_ms;       /* sink_failing_ms() */
    unsigned failing_dataset;  /* its dataset */
    uint64_t spool_bytes, spool_cap;   /* cap 0: no spool */
    uint64_t memory_bytes, memory_cap; /* cap 0: no cap */
    int memory_full;         /* memory_room() < 0: closed batches are spooled */
} health_state;

/* The state now, read from receive, sink, spool and memory on the loop
 * thread; now_ms is loop time (uv_now). */
health_state health_read(uint64_t now_ms);

/* The answer for s, a new JSON object (the caller owns it), and *healthy
 * 1 or 0:
 *   {"status":"ok"}
 *   {"status":"unhealthy","reasons":[{"reason":"backing_off",
 *     "dataset":"image_events","failing_s":75}, ...]}
 * The strings of s are borrowed. 
 * NULL when out of memory. */
json_t *health_answer(const health_state *s, int *healthy);

#endif /* BF_HEALTH_H */
