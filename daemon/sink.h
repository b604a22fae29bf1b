/*
 * sink.h: the delivery policy. Closed batches come in through sink_submit;
 * the policy queues them per dataset and hands them to one backend
 * (sink_backend.h: Tinybird, or a local file), which answers each with a
 * class. The policy alone decides what follows:
 *
 *   done        counted as delivered (and quarantined), receipt-to-ack delay
 *               recorded; the backoff of its dataset resets
 *   retry       the dataset waits (the backend's asked-for wait, else an
 *               exponential backoff: uniform in half to all of a ceiling that
 *               doubles from backoff_min_ms to backoff_max_ms), then sends
 *               one request at a time until one succeeds, so a recovering
 *               destination is not met with every queued batch at once
 *   too large   split in halves at the newline nearest the middle, each sent
 *               again; one row that is still too large is dropped
 *               (dropped.too_large)
 *   reject      never retried: counted as dropped.<reason the backend gave>,
 *               and with a spool kept in its dead-letter file
 *   hold        the destination refuses us, not the rows (a token, a
 *               region, a missing datasource: sink_state unauthorized or
 *               not_found, with the backend's hint): the dataset keeps
 *               this batch and every later one (memory, then the spool,
 *               under the usual caps) and probes with one batch per
 *               backoff_max_ms until it goes through; nothing is dropped
 *               or dead-lettered. At shutdown its batches are spooled at
 *               once, and sink_reconfigure (new options: a new token)
 *               probes at once.
 *
 * Memory: batch buffers count against the hard cap in memory.h. With a
 * spool, a closed batch waits in memory only while memory_room() is not
 * negative (room is left for every dataset's next open buffer), and goes to
 * the spool otherwise. When the account refuses what a job needs next (the
 * backend's compressed body, a split half), the job goes back to the front
 * of its queue and its dataset waits MEMORY_WAIT_MS for room; no retry is
 * counted. The policy owns the spool (spool.h): it opens it,
 * replays it oldest first while the destination is healthy (no dataset
 * backing off, nothing waiting, memory under half the cap) and closes it.
 * At shutdown whatever is not acknowledged by the deadline is spooled, or,
 * without a spool, counted as dropped.shutdown.
 *
 * Pacing: the policy also decides how long each dataset's batches stay
 * open. From the budget the backend reports with every answer (Tinybird's
 * X-RateLimit-* headers, 429s) a pacer per dataset (pacing.h: the law and
 * why it converges for a fleet sharing one limit) stretches the interval
 * up to pacing.max_ms while the destination's shared limit is near, and
 * brings it back to pacing.base_ms with headroom; on_interval tells the
 * batch stage (main.c wires it to batch_set_interval). When a dataset
 * refused for the rate limit may send again, its next request carries all
 * it holds: the refused batch, those that closed behind it, and the open
 * one (close_open), merged up to pacing.flush_bytes. A wait the
 * destination asked for (Retry-After) is spread by up to one rate window
 * more, so that the hosts a window refused do not all come back at the
 * start of the next.
 *
 * The policy owns every batch passed to sink_submit, on every path.
 */
#ifndef BF_SINK_H
#define BF_SINK_H

#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"
#include "pacing.h"
#include "sink_backend.h"
#include "spool.h"

/* The interval batches of dataset should now stay open, give or take
 * jitter_ms (see batch_set_interval). */
typedef void (*sink_interval_cb)(unsigned dataset, uint64_t interval_ms, uint64_t jitter_ms,
                                 void *arg);
/* Close dataset's open batch now and submit it (see batch_flush): the
 * policy is about to send what the dataset holds. */
typedef void (*sink_close_cb)(unsigned dataset, void *arg);

typedef struct sink_opts {
    const sink_backend *backend;
    const void *backend_opts;  /* the backend's own options struct */
    const spool_opts *spool;   /* NULL: no spool */
    unsigned max_inflight;     /* jobs in progress per dataset */
    uint64_t backoff_min_ms, backoff_max_ms; /* 0: 500 ms and 60 s */
    pacing_opts pacing;        /* base_ms 0: no pacing, as off */
    sink_interval_cb on_interval; /* NULL: nobody to tell */
    sink_close_cb close_open;  /* NULL: nobody to ask */
    void *interval_arg;        /* for both */
} sink_opts;

/* Open the spool (when given; replaying what an earlier run left) and start
 * the backend. Returns 0, or a negative errno with a message in err (size n).
 * Either way call sink_close before closing the loop. */
int sink_start(uv_loop_t *loop, const sink_opts *opts, char *err, size_t n);

/* Queue b for delivery; the policy owns it from here, whatever happens. */
void sink_submit(batch_buf *b);

/* Deliver what is queued and in progress, cutting backoff waits short; when
 * nothing is left, or deadline_ms (loop time) passes, spool the rest (or,
 * without a spool, count it as dropped.shutdown), wait for the spool's
 * writes and call done. */
void sink_drain(uint64_t deadline_ms, void (*done)(void *arg), void *arg);

/* Close the backend, the spool and every handle; after sink_drain's done. */
void sink_close(void);

/* How long the dataset failing the longest has been failing: loop time
 * since its first retry with no success after it (now_ms - that time), and
 * that dataset in *dataset; 0 (and *dataset 0) when every dataset's last
 * answer was a success. For the health check. */
uint64_t sink_failing_ms(uint64_t now_ms, unsigned *dataset);

/* Batches queued or in progress, for tests and the drain. */
unsigned sink_pending(void);

/* Apply fresh options to the running policy and backend (a reload): the
 * backend's own (through its reconfigure: jobs from now on use them), the
 * in-flight limit, the backoff bounds and the spool's caps (spool.h);
 * held datasets probe at once. The backend, the spool's use and its
 * directory change at a restart only: -EINVAL, or
 * -ENOTSUP for a backend without reconfigure, with the reason in err (size
 * n) and nothing changed. */
int sink_reconfigure(const sink_opts *opts, char *err, size_t n);

/* The delivery state, the worst across datasets: "unauthorized" or
 * "not_found" (a hold), "retrying" (backing off after failures), "ok".
 * sink_state_hint: the held dataset's hint, or NULL; valid until the next
 * answer. */
const char *sink_state(void);
const char *sink_state_hint(void);

/* New pacing limits (a reload of --pacing, --flush-interval-ms or
 * --max-flush-interval-ms): each dataset's interval is kept within them,
 * and on_interval hears of every one that moved. */
void sink_set_pacing(const pacing_opts *p);

/* A dataset's current flush interval and why, for the stats. */
uint64_t sink_flush_interval_ms(unsigned dataset);
const char *sink_pacing(unsigned dataset);

#endif /* BF_SINK_H */
