/*
 * sink.h: delivery of closed batches, to Tinybird or to a local file.
 *
 * Tinybird: each batch is gzipped on the libuv threadpool (off the loop),
 * then POSTed to {url}/v0/events?name=<dataset>&wait=true through http.c,
 * at most max_inflight requests per dataset. The answer decides:
 *   2xx        delivered; successful_rows and quarantined_rows counted
 *   429        the dataset waits Retry-After, else X-RateLimit-Reset, else
 *              the backoff, then the batch is sent again
 *   413        the batch is split in halves, each sent again; one row that
 *              is still too large is dropped (dropped.too_large)
 *   5xx, 408,  exponential backoff, each wait uniform in half to all of a
 *   no answer  ceiling that doubles from 0.5 s to 60 s and resets on success;
 *              then one request at a time until one succeeds
 *   other 4xx  never retried: the batch goes to the dead-letter file with the
 *              status and response (dropped.http_rejected), logged with a
 *              hint for 403 (token) and 404 (region host)
 *
 * Memory: batches waiting and in flight are counted against max_memory;
 * a batch closed while over it goes to the spool instead of the queue. The
 * spool is replayed, oldest first, while the sink is healthy (no dataset
 * backing off, nothing waiting, memory under half the cap). At shutdown
 * whatever is not acknowledged by the deadline is spooled.
 * Without a token, batches are appended to a file (or stdout) in order.
 *
 * The sink owns every batch passed to sink_submit, on every path.
 */
#ifndef BF_SINK_H
#define BF_SINK_H

#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"

typedef struct sink_opts {
    const char *url;          /* Tinybird base URL; ignored without token */
    const char *token;        /* NULL: file mode */
    const char *out_path;     /* file mode: path, or "-" for stdout */
    uint64_t timeout_ms;      /* one request */
    unsigned max_inflight;    /* per dataset */
    uint64_t backoff_min_ms, backoff_max_ms;
    int spool;                /* spool_open succeeded: use it */
} sink_opts;

/* Returns 0, or -1 with a message in err (size n). Either way call
 * sink_close before closing the loop: timers are initialised first. */
int sink_start(uv_loop_t *loop, const sink_opts *opts, char *err, size_t n);

/* Queue b for delivery; the sink owns it from here, whatever happens. */
void sink_submit(batch_buf *b);

/* A batch read back from the spool (ref for spool_ack); the sink owns b. */
void sink_submit_replay(batch_buf *b, uint64_t ref);

/* Deliver what is queued and in flight, cutting backoff waits short; when
 * nothing is left, or deadline_ms (loop time) passes, spool the rest (or,
 * without a spool, count it as dropped.shutdown), wait for the spool's
 * writes and call done. */
void sink_drain(uint64_t deadline_ms, void (*done)(void *arg), void *arg);

/* Close every handle; call after sink_drain's done ran. */
void sink_close(void);

/* Batches queued or in flight, for tests and stats. */
unsigned sink_pending(void);

#endif /* BF_SINK_H */
