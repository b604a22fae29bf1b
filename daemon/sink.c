/* sink.c: gzip, POST, classify, retry; or append to a file. See sink.h. */
#include "sink.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "memory.h"
#include "spool.h"
#include "stats.h"

typedef struct flight {
    batch_buf *b;          /* the NDJSON rows; owned */
    unsigned char *gz;     /* gzip of b, once compressed; owned */
    size_t gz_len, gz_cap;
    unsigned attempts;
    uint64_t spool_ref;    /* segment it was replayed from; 0: live */
    uv_work_t work;
    struct flight *next;
} flight;

typedef struct ds_state {
    unsigned dataset;
    flight *head, *tail;   /* waiting to be sent, oldest first */
    unsigned inflight;     /* compressing or posting */
    uint64_t backoff_ms;   /* next backoff ceiling; 0 after a success */
    int paused;            /* waiting on timer before sending again */
    int probing;           /* after a failure: one request at a time until
                              one succeeds, so a recovering sink is not met
                              with every queued batch at once */
    uv_timer_t timer;
    char url[512];
} ds_state;

static struct {
    uv_loop_t *loop;
    sink_opts o;
    int file_mode;
    uv_file out_fd;
    int out_busy;          /* a write is in progress (file mode) */
    uv_fs_t out_req;
    flight *out_cur;
    size_t out_off;
    ds_state ds[BF_DATASET_MAX];
    int draining, aborting;
    void (*drain_done)(void *);
    void *drain_arg;
    uv_timer_t drain_timer;
    uv_timer_t replay_timer;
    unsigned replaying;    /* replayed batches queued or in flight */
    int spool_flushing;    /* drain: waiting for the spool's writes */
    int started;
} sk;

static log_limit fail_limit, reject_limit, quarantine_limit;

static void pump(ds_state *d);
static void check_drained(void);
static void pump_spool(void);

/* A flight reached its end (delivered, or dropped and counted): a replayed
 * one releases its rows in the spool. */
static void flight_settled(flight *f)
{
    if (f->spool_ref) {
        spool_ack(f->spool_ref, f->b->rows);
        sk.replaying--;
    }
}

/* Shutdown, or memory over the cap: a live batch goes to the spool; a
 * replayed one is still in the spool and is simply let go. */
static void flight_to_spool(flight *f)
{
    if (f->spool_ref) {
        sk.replaying--;
    } else if (sk.o.spool) {
        spool_append(f->b);
        f->b = NULL;
    } else {
        stats_drop(DROP_shutdown, f->b->dataset, f->b->rows);
    }
}

static void flight_free(flight *f)
{
    if (f->gz) {
        memory_release(f->gz_cap);
        free(f->gz);
    }
    if (f->b)
        batch_buf_free(f->b);
    free(f);
}

static void push_front(ds_state *d, flight *f)
{
    f->next = d->head;
    d->head = f;
    if (!d->tail)
        d->tail = f;
}

static void push_back(ds_state *d, flight *f)
{
    f->next = NULL;
    if (d->tail)
        d->tail->next = f;
    else
        d->head = f;
    d->tail = f;
}

static flight *pop_front(ds_state *d)
{
    flight *f = d->head;
    if (f) {
        d->head = f->next;
        if (!d->head)
            d->tail = NULL;
        f->next = NULL;
    }
    return f;
}

unsigned sink_pending(void)
{
    unsigned n = 0;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        n += sk.ds[id].inflight;
        for (flight *f = sk.ds[id].head; f; f = f->next)
            n++;
    }
    return n + (sk.out_cur != NULL);
}

/* ---- file mode: one write at a time, in order ---- */

static void file_write_next(void);

static void on_file_written(uv_fs_t *req)
{
    flight *f = sk.out_cur;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n < 0) {
        log_limited(&fail_limit, LOG_ERROR, "out_write_failed", "error=%s rows=%llu",
                    uv_strerror((int)n), (unsigned long long)f->b->rows);
        stats_drop(DROP_out_write, f->b->dataset, f->b->rows);
    } else if (sk.out_off + (size_t)n < f->b->len) {
        sk.out_off += (size_t)n; /* short write: send the rest */
        uv_buf_t buf = uv_buf_init(f->b->data + sk.out_off,
                                   (unsigned)(f->b->len - sk.out_off));
        uv_fs_write(sk.loop, &sk.out_req, sk.out_fd, &buf, 1, -1, on_file_written);
        return;
    } else {
        stats.rows_delivered[f->b->dataset] += f->b->rows;
        stats.bytes_sent += f->b->len;
        stats.last_flush_ok_ms = clock_wall_ms();
    }
    sk.out_cur = NULL;
    sk.out_busy = 0;
    flight_free(f);
    file_write_next();
    check_drained();
}

static void file_write_next(void)
{
    if (sk.out_busy)
        return;
    /* Datasets share one file; take the oldest head across them. */
    ds_state *best = NULL;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        if (sk.ds[id].head &&
            (!best || sk.ds[id].head->b->first_ms < best->head->b->first_ms))
            best = &sk.ds[id];
    if (!best)
        return;
    flight *f = pop_front(best);
    sk.out_cur = f;
    sk.out_off = 0;
    sk.out_busy = 1;
    uv_buf_t buf = uv_buf_init(f->b->data, (unsigned)f->b->len);
    int rc = uv_fs_write(sk.loop, &sk.out_req, sk.out_fd, &buf, 1, -1, on_file_written);
    if (rc < 0) {
        sk.out_req.result = rc;
        on_file_written(&sk.out_req);
    }
}

/* ---- Tinybird mode ---- */


/* Threadpool: gzip the batch. Level 1: on a loaded 2-core host the CPU
 * matters more than the last 10% of size. */
static void compress_work(uv_work_t *w)
{
    flight *f = w->data;
    /* Receiving comes first: a worker that shares a core with the loop
     * thread must not halve its share and let the socket buffer overflow.
     * At nice 10 the loop keeps ~90% of a contended core; gzip catches up
     * when it is idle. (Linux nice is per thread.) */
    static __thread int niced;
    if (!niced) {
        niced = 1;
        setpriority(PRIO_PROCESS, 0, 10);
    }
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return;
    size_t cap = deflateBound(&z, f->b->len);
    unsigned char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return;
    }
    z.next_in = (unsigned char *)f->b->data;
    z.avail_in = (uInt)f->b->len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&z);
        free(out);
        return;
    }
    f->gz = out;
    f->gz_len = z.total_out;
    f->gz_cap = cap;
    deflateEnd(&z);
}

static void on_posted(const http_result *res, void *arg);

static void post(ds_state *d, flight *f)
{
    f->attempts++;
    const char *body = f->gz ? (const char *)f->gz : f->b->data;
    size_t len = f->gz ? f->gz_len : f->b->len;
    if (http_post(d->url, body, len, f->gz ? "gzip" : NULL, on_posted, f) < 0) {
        /* Could not even start: treat as a transport failure. */
        http_result res = {.status = 0, .error = "could not start request",
                           .retry_after_s = -1, .ratelimit_reset_s = -1,
                           .body = "", .body_len = 0};
        on_posted(&res, f);
        return;
    }
    stats.bytes_sent += len;
}

static void compress_done(uv_work_t *w, int status)
{
    flight *f = w->data;
    (void)status;
    if (f->gz)
        memory_reserve(f->gz_cap);
    ds_state *d = &sk.ds[f->b->dataset];
    if (sk.aborting) { /* the deadline passed while it was compressing */
        d->inflight--;
        flight_to_spool(f);
        flight_free(f);
        check_drained();
        return;
    }
    /* Without gzip (allocation failed) the plain body is still valid. */
    post(d, f);
}

static void on_resume(uv_timer_t *t)
{
    ds_state *d = t->data;
    d->paused = 0;
    pump(d);
}

/* Wait ms before this dataset sends again (a drain waits 100 ms at most:
 * the backoff is cut short, not the retry). */
static uint64_t pause_for(ds_state *d, uint64_t ms)
{
    if (sk.draining && ms > 100)
        ms = 100;
    d->paused = 1;
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
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
        r = (uint32_t)rand();
    return d->backoff_ms / 2 + (uint64_t)r % (d->backoff_ms / 2 + 1);
}

/* Split f's rows at the newline nearest the middle into two new flights,
 * queued at the front in order. Returns -1 when f holds one row. */
static int split_flight(ds_state *d, flight *f)
{
    batch_buf *b = f->b;
    if (b->rows < 2)
        return -1;
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
        return -1;
    size_t cut = (size_t)(nl - b->data) + 1;
    uint64_t rows1 = 0;
    for (const char *p = b->data; p < b->data + cut; p++)
        rows1 += *p == '\n';
    batch_buf *b2 = batch_buf_new(b->dataset, b->len - cut);
    flight *f2 = calloc(1, sizeof(*f2));
    if (!b2 || !f2) {
        batch_buf_free(b2);
        free(f2);
        return -1;
    }
    memcpy(b2->data, b->data + cut, b->len - cut);
    b2->len = b->len - cut;
    b2->rows = b->rows - rows1;
    b2->first_ms = b->first_ms;
    b2->close_ms = b->close_ms;
    b->len = cut;
    b->rows = rows1;
    if (f->gz) {
        memory_release(f->gz_cap);
        free(f->gz);
        f->gz = NULL;
    }
    f2->b = b2;
    f2->spool_ref = f->spool_ref;
    if (f2->spool_ref)
        sk.replaying++; /* each half settles on its own */
    push_front(d, f2);
    push_front(d, f);
    return 0;
}

static void count_delivered(flight *f, const http_result *res)
{
    unsigned ds = f->b->dataset;
    uint64_t ok = f->b->rows, quarantined = 0;
    json_t *j = json_loadb(res->body, res->body_len, 0, NULL);
    if (j) {
        json_t *s = json_object_get(j, "successful_rows");
        json_t *q = json_object_get(j, "quarantined_rows");
        if (json_is_integer(s))
            ok = (uint64_t)json_integer_value(s);
        if (json_is_integer(q))
            quarantined = (uint64_t)json_integer_value(q);
        json_decref(j);
    }
    stats.rows_delivered[ds] += ok;
    if (quarantined) {
        stats.rows_quarantined[ds] += quarantined;
        log_limited(&quarantine_limit, LOG_WARN, "rows_quarantined",
                    "dataset=%s rows=%llu hint=\"the datasource schema and "
                    "birdfeederd disagree; see %s_quarantine\"",
                    bf_dataset_name(ds), (unsigned long long)quarantined,
                    bf_dataset_name(ds));
    }
    stats.last_flush_ok_ms = clock_wall_ms();
}

static void on_posted(const http_result *res, void *arg)
{
    flight *f = arg;
    ds_state *d = &sk.ds[f->b->dataset];
    long st = res->status;
    d->inflight--;
    stats.http[st > 0 && st < STATS_HTTP_CODES ? st : 0]++;

    if (st >= 200 && st < 300) {
        d->probing = 0;
        count_delivered(f, res);
        /* Rows arrived between first_ms and close_ms: half the rows are
         * counted at each end. Replayed batches lost their receipt times. */
        if (!f->spool_ref) {
            uint64_t now = uv_now(sk.loop), half = f->b->rows / 2;
            stats_latency(now - f->b->first_ms, half, now);
            stats_latency(now - f->b->close_ms, f->b->rows - half, now);
        }
        d->backoff_ms = 0;
        flight_settled(f);
        flight_free(f);
    } else if (sk.aborting) {
        flight_to_spool(f);
        flight_free(f);
    } else if (st == 413) {
        if (split_flight(d, f) < 0) {
            log_limited(&reject_limit, LOG_ERROR, "row_too_large",
                        "dataset=%s bytes=%zu", bf_dataset_name(d->dataset), f->b->len);
            stats_drop(DROP_too_large, f->b->dataset, f->b->rows);
            flight_settled(f);
            flight_free(f);
        }
    } else if (st == 429 || st == 408 || st >= 500 || st == 0) {
        uint64_t wait;
        if (st == 429 && res->retry_after_s >= 0)
            wait = (uint64_t)res->retry_after_s * 1000;
        else if (st == 429 && res->ratelimit_reset_s >= 0)
            wait = (uint64_t)res->ratelimit_reset_s * 1000;
        else
            wait = next_backoff(d);
        stats.retries++;
        d->probing = 1;
        push_front(d, f);
        wait = pause_for(d, wait);
        log_limited(&fail_limit, LOG_WARN, "send_retry",
                    "dataset=%s status=%ld error=\"%s\" attempt=%u wait_ms=%llu",
                    bf_dataset_name(d->dataset), st, res->error ? res->error : "",
                    f->attempts, (unsigned long long)wait);
    } else {
        const char *hint = st == 403   ? "the token is wrong or lacks DATASOURCE:APPEND"
                           : st == 404 ? "the datasource is missing, or the token's "
                                         "workspace is on another region host"
                           : st == 401 ? "the token is missing"
                                       : "the rows were refused";
        char body[256];
        log_quote(body, sizeof(body), res->body, 200);
        log_limited(&reject_limit, LOG_ERROR, "send_rejected",
                    "dataset=%s status=%ld rows=%llu hint=\"%s\" body=%s",
                    bf_dataset_name(d->dataset), st, (unsigned long long)f->b->rows,
                    hint, body);
        stats_drop(DROP_http_rejected, f->b->dataset, f->b->rows);
        flight_settled(f);
        if (sk.o.spool) { /* kept for a person to look at, not retried */
            spool_dead_letter(f->b, st, res->body);
            f->b = NULL;
        }
        flight_free(f);
    }
    pump(d);
    pump_spool();
    check_drained();
}

static void pump(ds_state *d)
{
    if (sk.file_mode) {
        file_write_next();
        return;
    }
    unsigned limit = d->probing ? 1 : sk.o.max_inflight;
    while (!d->paused && !sk.aborting && d->inflight < limit && d->head) {
        flight *f = pop_front(d);
        d->inflight++;
        if (f->gz) { /* a retry: compressed already */
            post(d, f);
            continue;
        }
        f->work.data = f;
        if (uv_queue_work(sk.loop, &f->work, compress_work, compress_done) < 0)
            post(d, f);
    }
}

static void submit(batch_buf *b, uint64_t ref)
{
    flight *f = calloc(1, sizeof(*f));
    if (!f) {
        stats_drop(DROP_no_memory, b->dataset, b->rows);
        if (ref)
            spool_ack(ref, b->rows);
        batch_buf_free(b);
        return;
    }
    f->b = b;
    f->spool_ref = ref;
    if (ref)
        sk.replaying++;
    if (sk.aborting) { /* past the shutdown deadline (a spool read landing) */
        flight_to_spool(f);
        flight_free(f);
        check_drained();
        return;
    }
    ds_state *d = &sk.ds[b->dataset];
    push_back(d, f);
    pump(d);
}

void sink_submit(batch_buf *b)
{
    /* Over the memory cap, a whole new batch waits on disk instead; the
     * ones already queued keep their place. */
    if (sk.o.spool && !sk.file_mode && memory_over_cap()) {
        spool_append(b);
        return;
    }
    submit(b, 0);
}

void sink_submit_replay(batch_buf *b, uint64_t ref)
{
    submit(b, ref);
    pump_spool(); /* keep reading while there is room */
}

/* Read the spool back while the sink is healthy: nothing backing off or
 * waiting, memory under half the cap, at most max_inflight replayed
 * batches out at once (reads themselves go one at a time). */
static void pump_spool(void)
{
    if (!sk.o.spool || sk.file_mode || sk.draining)
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

int sink_start(uv_loop_t *loop, const sink_opts *opts, char *err, size_t n)
{
    memset(&sk, 0, sizeof(sk));
    sk.loop = loop;
    sk.o = *opts;
    sk.out_fd = -1; /* nothing to close until the file is open */
    if (!sk.o.backoff_min_ms)
        sk.o.backoff_min_ms = 500;
    if (!sk.o.backoff_max_ms)
        sk.o.backoff_max_ms = 60000;
    sk.file_mode = opts->token == NULL;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        d->dataset = id;
        uv_timer_init(loop, &d->timer);
        d->timer.data = d;
        snprintf(d->url, sizeof(d->url), "%s/v0/events?name=%s&wait=true",
                 opts->url, bf_dataset_name(id));
    }
    uv_timer_init(loop, &sk.drain_timer);
    uv_timer_init(loop, &sk.replay_timer);
    if (sk.o.spool && !sk.file_mode)
        uv_timer_start(&sk.replay_timer, on_replay_tick, 200, 200);
    sk.started = 1;
    if (sk.file_mode) {
        if (strcmp(opts->out_path, "-") == 0) {
            sk.out_fd = STDOUT_FILENO;
        } else {
            int fd = open(opts->out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
            if (fd < 0) {
                snprintf(err, n, "opening --out %s: %m", opts->out_path);
                return -1;
            }
            sk.out_fd = fd;
        }
        return 0;
    }
    http_opts ho = {.token = opts->token, .timeout_ms = opts->timeout_ms,
                    .connect_timeout_ms = opts->timeout_ms < 5000 ? opts->timeout_ms : 5000};
    return http_init(loop, &ho, err, n);
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
     * flight settles first and calls check_drained again. */
    if (sk.drain_done && !sink_pending())
        drain_finish();
}

static void check_drained(void)
{
    if (!sk.draining || !sk.drain_done || sk.spool_flushing || sink_pending())
        return;
    /* Whatever was spooled on the way must be on disk before we exit. */
    if (sk.o.spool) {
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
    if (!sk.file_mode)
        http_abort_all(); /* callbacks count their rows as dropped.shutdown */
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        ds_state *d = &sk.ds[id];
        uv_timer_stop(&d->timer);
        flight *f;
        while ((f = pop_front(d))) {
            flight_to_spool(f);
            flight_free(f);
        }
    }
    /* Compressions in the threadpool and a file write in progress finish on
     * their own; check_drained runs again from their callbacks. */
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
        pump(d);
    }
    uint64_t now = uv_now(sk.loop);
    uv_timer_start(&sk.drain_timer, on_drain_deadline,
                   deadline_ms > now ? deadline_ms - now : 0, 0);
    check_drained();
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
    if (sk.file_mode) {
        if (sk.out_fd > STDOUT_FILENO)
            close(sk.out_fd);
        else if (sk.out_fd == STDOUT_FILENO)
            fsync(STDOUT_FILENO);
    } else {
        http_close();
    }
}
