/*
 * sink_backend.h: the contract between the delivery policy (sink.c) and the
 * backends that carry batches to one destination (sink_tinybird.c,
 * sink_file.c, sink_kafka.c, and any later one).
 *
 * The policy owns every batch and decides everything about it: when it is
 * sent, how many are out at once, how long it waits after a failure, when it
 * is split, spooled, dead-lettered or dropped. A backend carries one batch at
 * a time per job to its destination and classifies the outcome, as Fluent
 * Bit's output plugins do:
 *
 *   SINK_DONE       delivered: rows_ok rows accepted, rows_quarantined of
 *                   them set aside by the destination (still delivered),
 *                   and rows_dropped refused for good by a destination that
 *                   takes rows one by one and took the others (counted as
 *                   dropped.<drop>; not dead-lettered, since the batch
 *                   holds the delivered rows too)
 *   SINK_RETRY      not delivered, may succeed later; wait_ms is the wait the
 *                   destination asked for (429 Retry-After), or -1 for the
 *                   policy's own backoff
 *   SINK_REJECT     refused for good, never to be retried: the rows are
 *                   counted as dropped.<drop>, and with a spool kept in the
 *                   dead-letter file with status and detail
 *   SINK_TOO_LARGE  larger than the destination takes in one piece: the
 *                   policy splits the batch in halves and submits each
 *   SINK_HOLD       the destination refuses the sender, not the rows:
 *                   credentials missing, wrong or without the permission
 *                   (hold SINK_HOLD_UNAUTHORIZED: a bad token, bad SASL
 *                   credentials), or the destination is not where the
 *                   sender looks (SINK_HOLD_NOT_FOUND: a datasource or
 *                   topic missing, the wrong region or cluster). A person
 *                   has to change the configuration; the batch is good.
 *                   The policy keeps it and every later batch of the
 *                   dataset (memory, then the spool), and probes with one
 *                   batch at a time at the backoff ceiling. hint says what
 *                   was sent and what to check (never a secret)
 *
 * With any class, a backend whose destination tells how much more it takes
 * (Tinybird's X-RateLimit-* headers) reports it in budget, and a refusal
 * for the destination's rate limit (429) sets throttled; the policy paces
 * the dataset's flushes from them (pacing.h). A destination that says
 * nothing (a file, Kafka) leaves both zero.
 *
 * A backend must:
 *   - answer every job that submit() accepted (returned 0) exactly once,
 *     through sink_job_done(), on the loop thread, and never from inside
 *     submit() itself;
 *   - return a negative errno from submit() when it cannot start, and then
 *     never answer that job (the policy retries it after a backoff), or
 *     -ENOMEM when memory.h refused what it needs for the job (the policy
 *     then waits for room, without counting a retry);
 *   - reserve in memory.h before it allocates anything it derives from a
 *     batch, and take a refusal as above;
 *   - treat job->b as read-only and borrowed: valid until it answers;
 *   - keep what it derives from a batch (a compressed body) in job->priv
 *     only, and free it (releasing its reservation) in forget();
 *   - when the destination took some rows of a job and failed the rest
 *     for now, answer SINK_RETRY and send only the rest when the policy
 *     submits the job again (which rows are done is derived state, kept
 *     in job->priv); forget() means all of the job is to be sent again;
 *   - count its own protocol's figures (bytes_sent, http statuses) and log
 *     its own protocol's details (a refused batch's answer, quarantined
 *     rows), rate-limited; a hold's hint goes in the answer, and the policy
 *     reports it with the state (log, stats, systemd's STATUS=).
 * A backend must not:
 *   - retry, wait, split, spool or drop anything on its own;
 *   - free, change or keep job->b, or keep the job after answering it;
 *   - block the loop thread (slow work goes to the threadpool or to the
 *     destination library's own threads, and answers come back on the loop).
 *
 * Adding a backend: a sink_<name>.c with its options struct and a const
 * sink_backend, and a line in main.c choosing it. The policy does not
 * change.
 */
#ifndef BF_SINK_BACKEND_H
#define BF_SINK_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"
#include "stats.h"

/* One batch on its way. The policy allocates it and owns it, and b with it. */
typedef struct sink_job {
    batch_buf *b;          /* the rows; read-only for the backend */
    void *priv;            /* the backend's, kept across retries until forget */
    /* The policy's own fields: a backend neither reads nor writes them. */
    unsigned attempts;
    unsigned generation;   /* the backend options it was submitted under */
    uint64_t spool_ref;    /* spool segment it was replayed from; 0: live */
    int split;             /* a half of a batch the destination found too
                              large: never merged again */
    struct sink_job *next;
} sink_job;

typedef enum sink_class {
    SINK_DONE,
    SINK_RETRY,
    SINK_REJECT,
    SINK_TOO_LARGE,
    SINK_HOLD,
} sink_class;

/* Why the destination refuses the sender (SINK_HOLD). */
typedef enum sink_hold {
    SINK_HOLD_NOT_FOUND,
    SINK_HOLD_UNAUTHORIZED,
} sink_hold;

/* The destination's request budget for this dataset after this request,
 * as it reported it: limit 0 means it said nothing, and then the other
 * fields mean nothing either. */
typedef struct sink_budget {
    uint64_t limit;        /* requests it takes per window */
    uint64_t remaining;    /* of those, left in the current window */
    uint64_t reset_ms;     /* until the window ends (0: not said) */
} sink_budget;

/* What a backend says about one job. Pointers are valid during
 * sink_job_done only. */
typedef struct sink_answer {
    sink_class cls;
    long status;               /* the destination's status code, 0 if none */
    uint64_t rows_ok;          /* SINK_DONE */
    uint64_t rows_quarantined; /* SINK_DONE */
    uint64_t rows_dropped;     /* SINK_DONE: refused rows, counted as drop */
    int64_t wait_ms;           /* SINK_RETRY: asked-for wait, -1: backoff */
    enum bf_drop drop;         /* SINK_REJECT, rows_dropped: their counter */
    sink_hold hold;            /* SINK_HOLD: why */
    const char *hint;          /* SINK_HOLD: for a person, or NULL */
    const char *detail;        /* error text or response body, or NULL */
    sink_budget budget;        /* any class; zero: not reported */
    int throttled;             /* SINK_RETRY: refused for the rate limit */
} sink_answer;

typedef struct sink_backend {
    const char *name;      /* "tinybird", "file", "kafka": for logs */
    /* Jobs in progress at once across all datasets; 0: no limit but the
     * policy's per dataset. At 1 the policy submits the oldest batch of
     * any dataset first (one ordered output). */
    unsigned max_inflight;
    /* opts is the backend's own options struct (sink_<name>_opts).
     * Returns 0, or a negative errno with a message in err (size n); close
     * is called in either case. */
    int (*start)(uv_loop_t *loop, const void *opts, char *err, size_t n);
    /* Start carrying job->b. 0: an answer follows; < 0: none will. */
    int (*submit)(sink_job *job);
    /* Free job->priv (and set it NULL). Called for a job that is not in
     * progress, before the policy changes or frees its batch. */
    void (*forget)(sink_job *job);
    /* The shutdown deadline passed: answer every job in progress, now or
     * as soon as work it handed to another thread ends (SINK_RETRY). */
    void (*abort)(void);
    /* Release everything; no job is in progress. */
    void (*close)(void);
    /* Optional (NULL: the backend's options apply at start only; a reload
     * still applies the policy's). Use opts (the same struct start took,
     * fresh values) for the jobs submitted from now on; jobs in progress
     * finish as they started. Returns 0, or a negative errno with a message
     * in err (size n), the old options kept. */
    int (*reconfigure)(const void *opts, char *err, size_t n);
} sink_backend;

/* A backend's answer for job (see above): exactly once per accepted job,
 * on the loop thread. The policy owns job again from this call on. */
void sink_job_done(sink_job *job, const sink_answer *a);

#endif /* BF_SINK_BACKEND_H */
