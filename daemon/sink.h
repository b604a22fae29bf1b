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
 * Memory: batch buffers count against the cap in memory.h; with a spool, a
 * batch submitted while the account is over the cap goes to the spool
 * instead of the queue. The policy owns the spool (spool.h): it opens it,
 * replays it oldest first while the destination is healthy (no dataset
 * backing off, nothing waiting, memory under half the cap) and closes it.
 * At shutdown whatever is not acknowledged by the deadline is spooled, or,
 * without a spool, counted as dropped.shutdown.
 *
 * The policy owns every batch passed to sink_submit, on every path.
 */
#ifndef BF_SINK_H
#define BF_SINK_H

#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"
#include "sink_backend.h"
#include "spool.h"

typedef struct sink_opts {
    const sink_backend *backend;
    const void *backend_opts;  /* the backend's own options struct */
    const spool_opts *spool;   /* NULL: no spool */
    unsigned max_inflight;     /* jobs in progress per dataset */
    uint64_t backoff_min_ms, backoff_max_ms; /* 0: 500 ms and 60 s */
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
 * in-flight limit and the backoff bounds; held datasets probe at once. The
 * backend and the spool themselves change at a restart only: -EINVAL, or
 * -ENOTSUP for a backend without reconfigure, with the reason in err (size
 * n) and nothing changed. */
int sink_reconfigure(const sink_opts *opts, char *err, size_t n);

/* The delivery state, the worst across datasets: "unauthorized" or
 * "not_found" (a hold), "retrying" (backing off after failures), "ok".
 * sink_state_hint: the held dataset's hint, or NULL; valid until the next
 * answer. */
const char *sink_state(void);
const char *sink_state_hint(void);

#endif /* BF_SINK_H */
