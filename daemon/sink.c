/* sink.c: the delivery policy over one backend. See sink.h and
 * sink_backend.h. */
#include "sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "jitter.h"
#include "log.h"
#include "memory.h"
#include "stats.h"

typedef struct ds_state {
    unsigned dataset;
    sink_job *head, *tail; /* waiting to be sent, oldest first */
    unsigned inflight;     /* submitted, not yet answered */
    uint64_t backoff_ms;   /* the current backoff ceiling; 0 after a success */
    int paused;            /* waiting on timer before sending again */
    int probing;           /* after a failure: one job at a time until one
                              succeeds */
    int held;              /* 0, or 1 + sink_hold: the destination refuses
                              us, every batch waits (see hold) */
    char hint[768];        /* the held answer's hint */
    uint64_t failing_since_ms; /* loop time of the first retry since the
                                  last success; 0: none */
    uv_timer_t timer;
    pacer pace;            /* its flush interval (pacing.h) */
    pacing_state told;     /* the state last logged */
} ds_state;

static struct {
    uv_loop_t *loop;
    sink_opts o;
    const sink_backend *be;
    int be_started;
    int spool;             /* the spool is open */
    ds_state ds[BF_DATASET_MAX];
    unsigned inflight;     /* across datasets */
    int draining, aborting;
    void (*drain_done)(void *);
    void *drain_arg;
    uv_timer_t drain_timer;
    uv_timer_t replay_timer;
    unsigned replaying;    /* replayed batches queued or in progress */
    int spool_flushing;    /* drain: waiting for the spool's writes */
    int started;
    unsigned generation;   /* bumped by sink_reconfigure */
} sk;

static log_limit retry_limit, large_limit, start_limit, hold_limit, pacing_limit,
    memwait_limit;

static const char *const hold_names[] = {"not_found", "unauthorized"};

/* How long a job waits when memory it needs was refused (memory.h). */
#define MEMORY_WAIT_MS 20

static void pump(void);
static void pump_spool(void);
static void check_drained(void);

/* ---- jobs ---- */

static sink_job *job_new(batch_buf *b, uint64_t ref)
{
    sink_job *j = calloc(1, sizeof(*j));
    if (j) {
        j->b = b;
        j->spool_ref = ref;
        if (ref)
            sk.replaying++;
    }
    return j;
}

static void job_forget(sink_job *j)
{
    if (j->priv)
        sk.be->forget(j);
}

static void job_free(sink_job *j)
{
    job_forget(j);
    batch_buf_free(j->b);
    free(j);
}

/* j reached its end (delivered, or dropped and counted): a replayed one
 * releases its rows in the spool. */
static void job_settled(sink_job *j)
{
    if (j->spool_ref) {
        spool_ack(j->spool_ref, j->b->rows);
        sk.replaying--;
    }
}

/* Shutdown, or memory over the cap: a live batch goes to the spool; a
 * replayed one is still in the spool and is simply let go. Frees j. */
static void job_to_spool(sink_job *j)
{
    if (j->spool_ref) {
        sk.replaying--;
    } else if (sk.spool) {
        spool_append(j->b);
        j->b = NULL;
    } else {
        stats_drop(DROP_shutdown, j->b->dataset, j->b->rows);
    }
    job_free(j);
}

static void push_front(ds_state *d, sink_job *j)
{
    j->next = d->head;
    d->head = j;
    if (!d->tail)
        d->tail = j;
}

static void push_back(ds_state *d, sink_job *j)
{
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
}

static sink_job *pop_front(ds_state *d)
{
    sink_job *j = d->head;
    if (j) {
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        j->next = NULL;
    }
    return j;
}

uint64_t sink_failing_ms(uint64_t now_ms, unsigned *dataset)
{
    uint64_t worst = 0;
    *dataset = 0;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        uint64_t since = sk.ds[id].failing_since_ms;
        if (since && now_ms - since >= worst) {
            worst = now_ms - since;
            *dataset = id;
        }
    }
    return worst;
}

unsigned sink_pending(void)
{
    unsigned n = sk.inflight;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        for (sink_job *j = sk.ds[id].head; j; j = j->next)
            n++;
    return n;
}

/* ---- waiting ---- */

static void on_resume(uv_timer_t *t)
{
    ds_state *d = t->data;
    d->paused = 0;
    /* Refused for the rate limit: the open batch goes with the refused one
     * (merge_waiting), instead of a request of its own soon after. It is
     * submitted, and sent, from inside close_open. */
    if (d->probing && sk.o.close_open && pacer_state(&d->pace, &sk.o.pacing) == PACING_RATE_LIMITED)
        sk.o.close_open(d->dataset, sk.o.interval_arg);
    pump();
}

/* Wait ms before this dataset sends again (a drain waits 100 ms at most:
 * the backoff is cut short, not the retry). Returns the wait. */
static uint64_t pause_for(ds_state *d, uint64_t ms)
{
    if (sk.draining && ms > 100)
        ms = 100;
    d->paused = 1;
    /* From now, not from the loop's last turn: the loop time can be stale
     * by the work done since, and a wait the destination asked for
     * (Retry-After) must not end early. */
    uv_update_time(sk.loop);
    uv_timer_start(&d->timer, on_resume, ms, 0);
    return ms;
}

static uint64_t next_backoff(ds_state *d)
{
    /* Jitter: uniform in [ceiling/2, ceiling], the ceiling doubling per
     * failure, so datasets and hosts that failed together spread out. */
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : sk.o.backoff_min_ms;
    if (d->backoff_ms > sk.o.backoff_max_ms)
        d->backoff_ms = sk.o.backoff_max_ms;
    return d->backoff_ms / 2 + jitter_upto(d->backoff_ms / 2);
}

/* j was not delivered and may be later: back to the front of its queue,
 * and its dataset waits. */
static void retry_later(ds_state *d, sink_job *j, long status, const char *error,
                        int64_t asked_ms, int64_t raw_ms)
{
    /* asked_ms: the wait to keep, from what the destination asked for
     * (raw_ms, logged as it said; spread_wait capped it); -1 for the
     * policy's own backoff. */
    uint64_t wait = asked_ms >= 0 ? (uint64_t)asked_ms : next_backoff(d);
    int capped = raw_ms > (int64_t)sk.o.backoff_max_ms;
    stats.retries++;
    if (!d->failing_since_ms)
        d->failing_since_ms = uv_now(sk.loop) ? uv_now(sk.loop) : 1;
    d->probing = 1;
    push_front(d, j);
    wait = pause_for(d, wait);
    char asked[64] = "";
    if (raw_ms >= 0)
        snprintf(asked, sizeof(asked), " asked_ms=%lld%s", (long long)raw_ms,
                 capped ? " capped=backoff-max-ms" : "");
    log_limited(&retry_limit, LOG_WARN, "send_retry",
                "dataset=%s status=%ld error=\"%s\" attempt=%u wait_ms=%llu%s",
                bf_dataset_name(d->dataset), status, error ? error : "", j->attempts,
                (unsigned long long)wait, asked);
}

/* The destination refuses us, not the rows (a token, a region, a missing
 * datasource): j and every later batch of its dataset wait, in memory and
 * then in the spool as usual, and one probe goes out per backoff ceiling
 * until a person fixes the configuration. A job sent under options a
 * reload has replaced since is probed again at once. At shutdown the
 * batches go to the spool for the next run. */
static void hold(ds_state *d, sink_job *j, const sink_answer *a)
{
    int first = !d->held;
    d->held = 1 + (int)a->hold;
    snprintf(d->hint, sizeof(d->hint), "%s", a->hint ? a->hint : "");
    stats.holds++;
    d->probing = 1;
    d->backoff_ms = sk.o.backoff_max_ms;
    if (sk.draining) {
        job_to_spool(j);
        return;
    }
    push_front(d, j);
    if (d->paused) /* another answer of this dataset set the wait already */
        return;
    uint64_t wait = pause_for(d, j->generation != sk.generation ? 0 : sk.o.backoff_max_ms);
    char hint[800], body[256];
    unsigned queued = 0;
    for (sink_job *q = d->head; q; q = q->next)
        queued++;
    log_quote(body, sizeof(body), a->detail, 200);
    log_limited(&hold_limit, LOG_ERROR, "sink_held",
                "dataset=%s sink_state=%s status=%ld batches_waiting=%u first=%s "
                "next_probe_ms=%llu hint=%s body=%s",
                bf_dataset_name(d->dataset), hold_names[d->held - 1], a->status, queued,
                first ? "yes" : "no", (unsigned long long)wait,
                log_quote(hint, sizeof(hint), d->hint, 760), body);
}

/* A held dataset's probe went through: everything it kept goes now. */
static void resume(ds_state *d)
{
    log_info("sink_resumed", "dataset=%s was=%s", bf_dataset_name(d->dataset),
             hold_names[d->held - 1]);
    d->held = 0;
    d->hint[0] = '\0';
}

/* The memory account refused what j needs next (a split half, or the
 * backend's compressed body): back to the front of its queue, and its
 * dataset waits a moment for in-flight batches and spool writes to free
 * room. Not a failure of the destination: no retry is counted and the
 * backoff is untouched. */
static void wait_for_memory(ds_state *d, sink_job *j, const char *what)
{
    push_front(d, j);
    pause_for(d, MEMORY_WAIT_MS);
    /* Room comes back as answers arrive and spool writes finish. When the
     * account is full of batches that merely wait, nothing would free it:
     * the newest waiting live batch goes to the spool, one per wait. */
    sink_job *newest = NULL, *prev_of = NULL;
    ds_state *from = NULL;
    for (unsigned id = 1; sk.spool && id < BF_DATASET_MAX; id++) {
        sink_job *prev = NULL;
        for (sink_job *q = sk.ds[id].head; q; prev = q, q = q->next)
            if (q != j && !q->spool_ref &&
                (!newest || q->b->first_ms > newest->b->first_ms)) {
                newest = q;
                prev_of = prev;
                from = &sk.ds[id];
            }
    }
    if (newest) {
        if (prev_of)
            prev_of->next = newest->next;
        else
            from->head = newest->next;
        if (from->tail == newest)
            from->tail = prev_of;
        newest->next = NULL;
        job_to_spool(newest);
    }
    log_limited(&memwait_limit, LOG_INFO, "memory_wait",
                "dataset=%s what=%s used=%llu cap=%llu", bf_dataset_name(d->dataset), what,
                (unsigned long long)memory_used(), (unsigned long long)memory_cap());
}

/* ---- splitting ---- */

static uint64_t count_newlines(const char *p, size_t len)
{
    uint64_t n = 0;
    for (const char *end = p + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
    return n;
}

/* Split j's rows at the newline nearest the middle into two jobs, queued
 * at the front in order. Returns -EINVAL when j holds fewer than two rows,
 * counted by its newlines, not by b->rows: the halves' counts come from
 * the bytes, so a batch whose count is wrong (a damaged spool record) can
 * neither send the cut before its buffer nor make a count wrap. Returns
 * -ENOMEM when the second half's buffer was refused (j is untouched then). */
static int split_job(ds_state *d, sink_job *j)
{
    batch_buf *b = j->b;
    if (b->len < 2 || b->data[b->len - 1] != '\n' || count_newlines(b->data, b->len) < 2)
        return -EINVAL;
    /* Cut after the newline nearest the middle, before or after it. The
     * last byte is a newline too, so only earlier ones can cut. */
    size_t mid = b->len / 2;
    const char *after = memchr(b->data + mid, '\n', b->len - mid - 1);
    const char *before = mid ? memrchr(b->data, '\n', mid) : NULL;
    /* First half: up to and including the newline; its size against mid
     * (a tie goes to the later newline). */
    const char *nl = !after ? before
                     : !before ? after
                     : (size_t)(after + 1 - (b->data + mid)) <=
                               (size_t)(b->data + mid - (before + 1))
                         ? after : before;
    if (!nl)
        return -EINVAL;
    size_t cut = (size_t)(nl - b->data) + 1;
    uint64_t rows1 = count_newlines(b->data, cut);
    batch_buf *b2 = batch_buf_new(b->dataset, b->len - cut);
    sink_job *j2 = b2 ? job_new(b2, j->spool_ref) : NULL;
    if (!j2) {
        batch_buf_free(b2);
        return -ENOMEM;
    }
    memcpy(b2->data, b->data + cut, b->len - cut);
    b2->len = b->len - cut;
    b2->rows = count_newlines(b2->data, b2->len);
    b2->first_ms = b->first_ms;
    b2->close_ms = b->close_ms;
    b2->full = b->full;
    b->len = cut;
    b->rows = rows1;
    j->split = j2->split = 1;
    push_front(d, j2); /* each half settles on its own */
    push_front(d, j);
    return 0;
}

/* ---- pacing (pacing.h) ---- */

/* Tell the batch stage d's interval, jittered by 10% while pacing is on
 * (pacing.h: hosts must sample the window at random phases); log when its
 * state changes. */
static void tell_interval(ds_state *d)
{
    uint64_t ms = pacer_interval_ms(&d->pace, &sk.o.pacing);
    pacing_state st = pacer_state(&d->pace, &sk.o.pacing);
    if (st != d->told) {
        d->told = st;
        log_limited(&pacing_limit, LOG_INFO, "pacing",
                    "dataset=%s state=%s interval_ms=%llu", bf_dataset_name(d->dataset),
                    pacing_state_name(st), (unsigned long long)ms);
    }
    if (sk.o.on_interval)
        sk.o.on_interval(d->dataset, ms, st == PACING_OFF ? 0 : ms / 10, sk.o.interval_arg);
}

/* A wait the destination asked for, spread by up to one rate window (at
 * most the wait itself): hosts refused in one window come back across the
 * next instead of all at its start. After a refusal for the rate limit
 * while pacing, the dataset waits its paced interval at least, spread by
 * up to as long again: retries count against the limit too, and a fleet
 * retrying every second would keep it full. */
static int64_t spread_wait(const ds_state *d, const sink_answer *a)
{
    /* What the destination asks is honoured up to --backoff-max-ms: a
     * wrong or hostile "Retry-After: 9999999" must not stall a dataset for
     * months (retry_later logs the raw value). */
    int64_t wait = a->wait_ms > (int64_t)sk.o.backoff_max_ms ? (int64_t)sk.o.backoff_max_ms
                                                              : a->wait_ms;
    uint64_t spread = d->pace.window_s ? d->pace.window_s * 1000 : 1000;
    if (a->throttled && sk.o.pacing.on) {
        uint64_t t = pacer_interval_ms(&d->pace, &sk.o.pacing);
        wait = wait > (int64_t)t ? wait : (int64_t)t;
        spread = (uint64_t)wait;
    }
    if (wait <= 0)
        return wait;
    return wait + (int64_t)jitter_upto(spread < (uint64_t)wait ? spread : (uint64_t)wait);
}

/* While d is rate limited, the live batches waiting behind its head go
 * out with it, in one request, as far as they fit in the head's buffer
 * and in flush_bytes: bigger batches, fewer requests, for the backlog a
 * refusal left too (otherwise each would be a request of its own, sent
 * together when the refused one passes). Batches read from the spool
 * settle their records on their own; halves of a split stay apart. */
static void merge_waiting(ds_state *d)
{
    sink_job *h = d->head;
    if (!h || h->spool_ref || h->split ||
        pacer_state(&d->pace, &sk.o.pacing) != PACING_RATE_LIMITED)
        return;
    size_t room = h->b->cap;
    if (sk.o.pacing.flush_bytes && sk.o.pacing.flush_bytes < room)
        room = (size_t)sk.o.pacing.flush_bytes;
    sink_job *n;
    while ((n = h->next) && !n->spool_ref && !n->split && h->b->len + n->b->len <= room) {
        job_forget(h); /* a compressed body no longer matches */
        memcpy(h->b->data + h->b->len, n->b->data, n->b->len);
        h->b->len += n->b->len;
        h->b->rows += n->b->rows;
        if (n->b->first_ms < h->b->first_ms)
            h->b->first_ms = n->b->first_ms;
        if (n->b->close_ms > h->b->close_ms)
            h->b->close_ms = n->b->close_ms;
        h->next = n->next;
        if (d->tail == n)
            d->tail = h;
        job_free(n);
        stats.batches_merged[d->dataset]++;
    }
}

static void set_pacing(const pacing_opts *p)
{
    sk.o.pacing = *p;
    if (!sk.o.pacing.base_ms)
        sk.o.pacing.on = 0;
}

/* Every dataset's interval within the limits now (a start, a reload). */
static void tell_all(void)
{
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        tell_interval(&sk.ds[id]);
}

void sink_set_pacing(const pacing_opts *p)
{
    set_pacing(p);
    if (sk.started)
        tell_all();
}

uint64_t sink_flush_interval_ms(unsigned dataset)
{
    return dataset && dataset < BF_DATASET_MAX
               ? pacer_interval_ms(&sk.ds[dataset].pace, &sk.o.pacing) : 0;
}

const char *sink_pacing(unsigned dataset)
{
    return pacing_state_name(dataset && dataset < BF_DATASET_MAX
                                 ? pacer_state(&sk.ds[dataset].pace, &sk.o.pacing)
                                 : PACING_OFF);
}

/* ---- answers ---- */

static void count_done(ds_state *d, sink_job *j, const sink_answer *a)
{
    stats.rows_delivered[d->dataset] += a->rows_ok;
    stats.rows_quarantined[d->dataset] += a->rows_quarantined;
    if (a->rows_dropped)
        stats_drop(a->drop, d->dataset, a->rows_dropped);
    stats.last_flush_ok_ms = clock_wall_ms();
    /* Rows arrived between first_ms and close_ms: half the rows are counted
     * at each end. Replayed batches lost their receipt times. */
    if (!j->spool_ref) {
        uint64_t now = uv_now(sk.loop), half = j->b->rows / 2;
        stats_latency(now - j->b->first_ms, half, now);
        stats_latency(now - j->b->close_ms, j->b->rows - half, now);
    }
}

void sink_job_done(sink_job *j, const sink_answer *a)
{
    ds_state *d = &sk.ds[j->b->dataset];
    d->inflight--;
    sk.inflight--;
    /* The pacer first (a refused batch's wait depends on it); the batch
     * stage is told at the end, as telling it may close and submit a
     * batch. */
    int repaced = !sk.aborting &&
                  pacer_answer(&d->pace, &sk.o.pacing, &a->budget, a->throttled, j->b->full);

    if (a->cls == SINK_DONE) {
        if (d->held)
            resume(d);
        d->probing = 0;
        d->backoff_ms = 0;
        d->failing_since_ms = 0;
        count_done(d, j, a);
        job_settled(j);
        job_free(j);
    } else if (sk.aborting) {
        job_to_spool(j);
    } else if (a->cls == SINK_TOO_LARGE) {
        job_forget(j); /* what the backend derived no longer matches */
        int rc = split_job(d, j);
        if (rc == -ENOMEM) {
            wait_for_memory(d, j, "split");
        } else if (rc < 0) {
            log_limited(&large_limit, LOG_ERROR, "row_too_large", "dataset=%s bytes=%zu",
                        bf_dataset_name(d->dataset), j->b->len);
            stats_drop(DROP_too_large, j->b->dataset, j->b->rows);
            job_settled(j);
            job_free(j);
        }
    } else if (a->cls == SINK_RETRY) {
        retry_later(d, j, a->status, a->detail, spread_wait(d, a), a->wait_ms);
    } else if (a->cls == SINK_HOLD) {
        hold(d, j, a);
    } else { /* SINK_REJECT: kept for a person to look at, not retried */
        stats_drop(a->drop, j->b->dataset, j->b->rows);
        job_settled(j);
        if (sk.spool) {
            spool_dead_letter(j->b, a->status, a->detail);
            j->b = NULL;
        }
        job_free(j);
    }
    if (repaced)
        tell_interval(d);
    pump();
    pump_spool();
    check_drained();
}

/* ---- sending ---- */

static unsigned ds_limit(const ds_state *d)
{
    return d->probing ? 1 : sk.o.max_inflight;
}

/* Submit while there is room: the oldest waiting batch of any dataset that
 * is not paused and under its limit first, up to the backend's own limit. */
static void pump(void)
{
    while (!sk.aborting && (!sk.be->max_inflight || sk.inflight < sk.be->max_inflight)) {
        ds_state *best = NULL;
        for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
            ds_state *d = &sk.ds[id];
            if (!d->paused && d->head && d->inflight < ds_limit(d) &&
                (!best || d->head->b->first_ms < best->head->b->first_ms))
                best = d;
        }
        if (!best)
            return;
        merge_waiting(best);
        sink_job *j = pop_front(best);
        j->attempts++;
        j->generation = sk.generation;
        int rc = sk.be->submit(j);
        if (rc == -ENOMEM) { /* the backend's memory was refused: not a failure */
            j->attempts--;
            wait_for_memory(best, j, "backend");
            continue;
        }
        if (rc < 0) { /* could not even start: a transport failure */
            log_limited(&start_limit, LOG_WARN, "send_not_started",
                        "backend=%s dataset=%s error=\"%s\"", sk.be->name,
                        bf_dataset_name(best->dataset), strerror(-rc));
            retry_later(best, j, 0, "could not start", -1, -1);
            continue;
        }
        best->inflight++;
        sk.inflight++;
    }
}

static void submit(batch_buf *b, uint64_t ref)
{
    sink_job *j = job_new(b, ref);
    if (!j) {
        stats_drop(DROP_no_memory, b->dataset, b->rows);
        if (ref)
            spool_ack(ref, b->rows);
        batch_buf_free(b);
        return;
    }
    if (sk.aborting) { /* past the shutdown deadline (a spool read landing) */
        job_to_spool(j);
        check_drained();
        return;
    }
    push_back(&sk.ds[b->dataset], j);
    pump();
}

void sink_submit(batch_buf *b)
{
    /* A closed batch waits in memory only while the account keeps room
     * for a fresh open buffer of every dataset (memory.h); otherwise it
     * waits on disk, and its memory is freed once the spool has written
     * it. The ones already queued keep their place. */
    if (sk.spool && memory_room() < 0) {
        spool_append(b);
        return;
    }
    submit(b, 0);
}

/* ---- the spool ---- */

/* The spool read a batch back (see spool_open). */
static void on_replay(batch_buf *b, uint64_t ref, void *arg)
{
    (void)arg;
    submit(b, ref);
    pump_spool(); /* keep reading while there is room */
}

/* Read the spool back while the destination is healthy: nothing backing
 * off or waiting, memory under half the cap, at most max_inflight replayed
 * batches out at once (reads themselves go one at a time). */
static void pump_spool(void)
{
    if (!sk.spool || sk.draining)
        return;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        if (sk.ds[id].paused || sk.ds[id].head)
            return;
    if (sk.replaying < sk.o.max_inflight && memory_used() < memory_cap() / 2)
        spool_read_next();
}

static void on_replay_tick(uv_timer_t *t)
{
    (void)t;
    pump_spool();
}

/* ---- lifecycle ---- */

/* The policy's numbers, defaults filled in. */
static void set_policy(const sink_opts *opts)
{
    sk.o.max_inflight = opts->max_inflight ? opts->max_inflight : 1;
    sk.o.backoff_min_ms = opts->backoff_min_ms ? opts->backoff_min_ms : 500;
    sk.o.backoff_max_ms = opts->backoff_max_ms ? opts->backoff_max_ms : 60000;
    set_pacing(&opts->pacing);
}

int sink_start(uv_loop_t *loop, const sink_opts *opts, char *err, size_t n)
{
    memset(&sk, 0, sizeof(sk));
    sk.loop = loop;
    sk.o = *opts;
    sk.be = opts->backend;
    set_policy(opts);
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        d->dataset = id;
        uv_timer_init(loop, &d->timer);
        d->timer.data = d;
        d->told = pacer_state(&d->pace, &sk.o.pacing);
    }
    uv_timer_init(loop, &sk.drain_timer);
    uv_timer_init(loop, &sk.replay_timer);
    sk.started = 1;
    int rc;
    if (opts->spool) {
        if ((rc = spool_open(loop, opts->spool, on_replay, NULL, err, n)) < 0)
            return rc;
        sk.spool = 1;
        uv_timer_start(&sk.replay_timer, on_replay_tick, 200, 200);
    }
    sk.be_started = 1;
    return sk.be->start(loop, opts->backend_opts, err, n);
}

static void drain_finish(void)
{
    void (*done)(void *) = sk.drain_done;
    sk.drain_done = NULL;
    uv_timer_stop(&sk.drain_timer);
    done(sk.drain_arg);
}

static void on_spool_flushed(void *arg)
{
    (void)arg;
    sk.spool_flushing = 0;
    /* A spool read that was under way may have landed meanwhile: then its
     * job settles first and calls check_drained again. */
    if (sk.drain_done && !sink_pending())
        drain_finish();
}

static void check_drained(void)
{
    if (!sk.draining || !sk.drain_done || sk.spool_flushing || sink_pending())
        return;
    /* Whatever was spooled on the way must be on disk before we exit. */
    if (sk.spool) {
        sk.spool_flushing = 1;
        spool_flush(on_spool_flushed, NULL);
    } else {
        drain_finish();
    }
}

static void on_drain_deadline(uv_timer_t *t)
{
    (void)t;
    sk.aborting = 1;
    /* Answers for jobs in progress come back through sink_job_done, which
     * spools them now that aborting is set; some arrive later (work on
     * other threads), and check_drained runs again from them. */
    sk.be->abort();
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        uv_timer_stop(&d->timer);
        sink_job *j;
        while ((j = pop_front(d)))
            job_to_spool(j);
    }
    check_drained();
}

void sink_drain(uint64_t deadline_ms, void (*done)(void *arg), void *arg)
{
    sk.draining = 1;
    uv_timer_stop(&sk.replay_timer);
    sk.drain_done = done;
    sk.drain_arg = arg;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        if (d->paused) {
            uv_timer_stop(&d->timer);
            d->paused = 0;
        }
        /* Held: probing again now would be refused again; the next run,
         * with the configuration fixed, sends them. */
        sink_job *j;
        while (d->held && (j = pop_front(d)))
            job_to_spool(j);
    }
    pump();
    uint64_t now = uv_now(sk.loop);
    uv_timer_start(&sk.drain_timer, on_drain_deadline,
                   deadline_ms > now ? deadline_ms - now : 0, 0);
    check_drained();
}

int sink_reconfigure(const sink_opts *opts, char *err, size_t n)
{
    if (opts->backend != sk.be || !opts->spool != !sk.spool) {
        snprintf(err, n, "the sink changes from %s to %s at a restart only", sk.be->name,
                 opts->backend->name);
        return -EINVAL;
    }
    /* A backend without reconfigure keeps its own options until a
     * restart; the policy's apply all the same. */
    int rc = sk.be->reconfigure ? sk.be->reconfigure(opts->backend_opts, err, n) : 0;
    if (rc < 0)
        return rc;
    set_policy(opts);
    tell_all(); /* new pacing limits hold at once */
    if (sk.spool)
        spool_reconfigure(opts->spool); /* its caps; the directory stays */
    sk.generation++;
    /* What a person just fixed (a token, a region host) is tried at once;
     * a probe still out with the old options is sent again when it comes
     * back refused (see hold). A wait longer than the new backoff ceiling
     * is cut to it. */
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        if (d->held && d->paused) {
            uv_timer_stop(&d->timer);
            d->paused = 0;
        } else if (d->paused && uv_timer_get_due_in(&d->timer) > sk.o.backoff_max_ms) {
            uv_timer_start(&d->timer, on_resume, sk.o.backoff_max_ms, 0);
        }
        if (d->backoff_ms > sk.o.backoff_max_ms)
            d->backoff_ms = sk.o.backoff_max_ms;
    }
    pump();
    return 0;
}

/* The worst state across datasets: a hold, then a retry, else ok. */
static const ds_state *worst(void)
{
    const ds_state *w = NULL;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        const ds_state *d = &sk.ds[id];
        int rank = d->held ? 1 + d->held : d->probing;
        int wrank = !w ? 0 : w->held ? 1 + w->held : w->probing;
        if (rank > wrank)
            w = d;
    }
    return w;
}

const char *sink_state(void)
{
    const ds_state *w = worst();
    return !w ? "ok" : w->held ? hold_names[w->held - 1] : "retrying";
}

const char *sink_state_hint(void)
{
    const ds_state *w = worst();
    return w && w->held && w->hint[0] ? w->hint : NULL;
}

void sink_close(void)
{
    if (!sk.started)
        return;
    sk.started = 0;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        uv_close((uv_handle_t *)&sk.ds[id].timer, NULL);
    uv_close((uv_handle_t *)&sk.drain_timer, NULL);
    uv_close((uv_handle_t *)&sk.replay_timer, NULL);
    if (sk.be_started) {
        sk.be_started = 0;
        sk.be->close();
    }
    if (sk.spool) {
        sk.spool = 0;
        spool_close();
    }
}
