/*
 * test_sink.c: the delivery policy (daemon/sink.c) and its two backends.
 *
 * First over a scripted backend written against sink_backend.h alone (as a
 * new backend would be): what each answer class makes the policy do, a
 * submit that cannot start, forget before a split, oldest-first under a
 * backend's own limit, and abort at the deadline. Then the file backend
 * (sink_file.c: batches appended in order) and the Tinybird backend
 * (sink_tinybird.c) against the loopback server of testhttp.h: gzip bodies,
 * 2xx counting, retries (5xx, 408, no answer), 429 waits, 413 splits, 4xx
 * dead letters, max_inflight and the probe after a failure, the memory cap
 * spilling to the spool, replay of a spool left by an earlier run, and
 * sink_drain (delivering, cutting backoffs short, spooling what the
 * deadline catches).
 *
 * Each test runs a loop of its own (uv_loop_init); at the end sink_drain's
 * done has run, sink_close (which closes the spool too, as in main.c), the
 * loop runs until every handle is closed and uv_loop_close() must return 0;
 * every batch was freed (memory_used() is 0). Log lines go to a file.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "batch.h"
#include "sink.h"
#include "sink_file.h"
#include "sink_tinybird.h"
#include "spool.h"
#include "http.h"
#include "memory.h"
#include "stats.h"
#include "testhttp.h"
#include "testutil.h"

#define LLM BF_DATASET_llm_events
#define IMG BF_DATASET_image_events

static uv_loop_t loop;
static th_server srv;
static int srv_on;
static int spool_on;
static char tmpdir[64];
static char spool_dir[128];
static char out_path[128];
static char log_path[128];
static int saved_stderr = -1;
static uint64_t drained;       /* sink_drain's done calls */
static uint64_t drained_at_ms; /* tu_mono_ms() then */
static uint64_t delivered_at_done;

static void sink_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    memory_set_cap(64 << 20);
    memory_set_headroom(0);
    srv_on = spool_on = 0;
    drained = drained_at_ms = delivered_at_done = 0;
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "sink");
    snprintf(spool_dir, sizeof(spool_dir), "%s/spool", tmpdir);
    snprintf(out_path, sizeof(out_path), "%s/out.ndjson", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    saved_stderr = tu_stderr_to(log_path);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void sink_teardown(void)
{
    tu_stderr_restore(saved_stderr, log_path);
    saved_stderr = -1;
    tu_rmtree(tmpdir);
}

static spool_opts spool_o;
static sink_tinybird_opts tb_o;
static sink_file_opts file_o;

/* The sink opens (and closes) the spool: options for it. */
static void use_spool(void)
{
    spool_o = (spool_opts){.dir = spool_dir, .max_bytes = 1 << 24,
                           .segment_bytes = 1 << 20, .dead_letter_max = 1 << 20};
    spool_on = 1;
}

static void on_replay_unused(batch_buf *b, uint64_t ref, void *arg)
{
    (void)ref;
    (void)arg;
    batch_buf_free(b);
    ck_abort_msg("the spool read a record in a run that reads none");
}

/* An earlier run that left batches in the spool: open it alone, append,
 * wait for the writes, close it, and let the loop settle. */
static void seed_spool(batch_buf **b, int n)
{
    char err[256] = "";
    use_spool();
    ck_assert_msg(spool_open(&loop, &spool_o, on_replay_unused, NULL, err, sizeof(err)) == 0,
                  "spool_open: %s", err);
    for (int i = 0; i < n; i++)
        spool_append(b[i]);
    uint64_t flushed = 0;
    spool_flush(tu_count_cb, &flushed);
    ck_assert(tu_run_until_u64(&loop, &flushed, 1, 3000));
    spool_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
}

/* Rows a spool holds, read by opening it alone (then closed again). */
static uint64_t spool_rows_on_disk(void)
{
    char err[256] = "";
    ck_assert_msg(spool_open(&loop, &spool_o, on_replay_unused, NULL, err, sizeof(err)) == 0,
                  "spool_open: %s", err);
    uint64_t rows = spool_rows_unread();
    spool_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    return rows;
}

/* File-mode options writing to path. */
static sink_opts file_opts_for(const char *path)
{
    file_o = (sink_file_opts){.path = path};
    return (sink_opts){.backend = &sink_file, .backend_opts = &file_o, .max_inflight = 4};
}

/* Tinybird-mode options against url; tests adjust them. */
static sink_opts tb_opts_for(const char *url)
{
    tb_o = (sink_tinybird_opts){.url = url, .token = "tok-123", .timeout_ms = 5000};
    return (sink_opts){.backend = &sink_tinybird, .backend_opts = &tb_o,
                       .spool = spool_on ? &spool_o : NULL, .max_inflight = 4,
                       .backoff_min_ms = 50, .backoff_max_ms = 200};
}

/* Tinybird-mode options against srv (started here). */
static sink_opts http_opts_for(void)
{
    th_start(&srv);
    srv_on = 1;
    return tb_opts_for(srv.url);
}

static void start(const sink_opts *o)
{
    char err[256] = "";
    ck_assert_msg(sink_start(&loop, o, err, sizeof(err)) == 0, "sink_start: %s", err);
}

static void on_drained(void *arg)
{
    (*(uint64_t *)arg)++;
    drained_at_ms = tu_mono_ms();
    delivered_at_done = stats.rows_delivered[LLM] + stats.rows_delivered[IMG];
}

/* sink_drain with a deadline ms from now; turn the loop until done ran. */
static void drain(uint64_t ms)
{
    uv_update_time(&loop); /* the deadline from now, not the loop's last turn */
    sink_drain(uv_now(&loop) + ms, on_drained, &drained);
    ck_assert_msg(tu_run_until_u64(&loop, &drained, 1, ms + 5000), "sink_drain: no done");
}

/* After drain: close as main.c does; every handle closed, every batch freed. */
static void finish(void)
{
    tu_run_for(&loop, 20);
    ck_assert_uint_eq(drained, 1); /* exactly once */
    ck_assert_uint_eq(sink_pending(), 0);
    sink_close(); /* and the spool */
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    if (srv_on)
        th_stop(&srv);
    ck_assert_uint_eq(memory_used(), 0);
}

static uint64_t delivered(void)
{
    return stats.rows_delivered[LLM] + stats.rows_delivered[IMG];
}

static int pred_delivered(void *arg)
{
    return delivered() >= *(uint64_t *)arg;
}

static int run_until_delivered(uint64_t rows, uint64_t timeout_ms)
{
    return tu_run_until(&loop, pred_delivered, &rows, timeout_ms);
}

/* The rows of tu_batch(.., n, tag). */
static const char *rows_of(int n, const char *tag, size_t *len)
{
    static char out[16384];
    *len = tu_rows(out, sizeof(out), n, tag);
    return out;
}

/* Request i's body, gunzipped, is exactly tu_rows(n, tag). */
static void check_body(int i, int n, const char *tag)
{
    const th_req *q = th_req_at(&srv, i);
    ck_assert_header(q, "Content-Encoding", "gzip");
    size_t len, want_len;
    char *plain = th_gunzip(q->body, q->body_len, &len);
    ck_assert_msg(plain != NULL, "request %d: body is not gzip", i);
    const char *want = rows_of(n, tag, &want_len);
    ck_assert_uint_eq(len, want_len);
    ck_assert_msg(memcmp(plain, want, len) == 0, "request %d: rows differ", i);
    free(plain);
}

/* Request i's body is exactly tu_rows(n, tag), not compressed (a cap too
 * small for the compressor's state). */
static void check_body_plain(int i, int n, const char *tag)
{
    const th_req *q = th_req_at(&srv, i);
    size_t want_len;
    const char *want = rows_of(n, tag, &want_len);
    ck_assert_uint_eq(q->body_len, want_len);
    ck_assert_msg(memcmp(q->body, want, want_len) == 0, "request %d: rows differ", i);
}

/* ---- the policy over a scripted backend -------------------------------- */

/* A backend written against sink_backend.h alone, as a third one (Kafka)
 * would be: it answers each job from a script on the next loop turn
 * (never from inside submit), records the order of submissions, and keeps a
 * marker in job->priv so the tests see when the policy calls forget. */
typedef struct fake_step {
    int submit_rc;         /* < 0: submit fails with it (no answer) */
    sink_class cls;
    int64_t wait_ms;
    enum bf_drop drop;
    int64_t rows_ok;       /* -1: every row of the batch */
    uint64_t quarantined;
    int hang;              /* answered only by abort */
    sink_budget budget;    /* reported with the answer */
    int throttled;
} fake_step;

static struct {
    uv_loop_t *loop;
    uv_timer_t timer;
    fake_step script[16];
    int nscript, pos;          /* pos: the step the next submit takes */
    sink_job *waiting[16];
    fake_step steps[16];       /* the step each waiting job answers with */
    int nwaiting;
    sink_job *hung[16];
    int nhung;
    char order[32][32];        /* the first id of each submitted batch */
    uint64_t submit_ms[32];
    int nsubmits, forgets, marker;
} fk;

static void fake_answer_all(uv_timer_t *t)
{
    (void)t;
    int n = fk.nwaiting;
    fk.nwaiting = 0;
    for (int i = 0; i < n; i++) {
        sink_job *j = fk.waiting[i];
        const fake_step *st = &fk.steps[i];
        sink_answer a = {.cls = st->cls, .status = 7, .wait_ms = st->wait_ms,
                         .drop = st->drop, .detail = "scripted",
                         .rows_ok = st->rows_ok < 0 ? j->b->rows : (uint64_t)st->rows_ok,
                         .rows_quarantined = st->quarantined, .budget = st->budget,
                         .throttled = st->throttled};
        sink_job_done(j, &a);
    }
}

static int fake_start(uv_loop_t *l, const void *opts, char *err, size_t n)
{
    (void)opts;
    (void)err;
    (void)n;
    fk.loop = l;
    return uv_timer_init(l, &fk.timer);
}

static int fake_submit(sink_job *j)
{
    fake_step st = fk.pos < fk.nscript ? fk.script[fk.pos] : (fake_step){.rows_ok = -1};
    fk.pos++;
    int k = fk.nsubmits++;
    ck_assert_int_lt(k, 32);
    snprintf(fk.order[k], sizeof(fk.order[k]), "%.*s", 9, j->b->data + 7);
    fk.submit_ms[k] = uv_now(fk.loop);
    if (st.submit_rc < 0)
        return st.submit_rc;
    j->priv = &fk.marker;
    if (st.hang) {
        fk.hung[fk.nhung++] = j;
        return 0;
    }
    fk.steps[fk.nwaiting] = st;
    fk.waiting[fk.nwaiting++] = j;
    uv_timer_start(&fk.timer, fake_answer_all, 0, 0);
    return 0;
}

static void fake_forget(sink_job *j)
{
    ck_assert_ptr_eq(j->priv, &fk.marker);
    fk.forgets++;
    j->priv = NULL;
}

static void fake_abort(void)
{
    for (int i = 0; i < fk.nhung; i++) {
        fk.steps[fk.nwaiting] = (fake_step){.cls = SINK_RETRY, .wait_ms = -1};
        fk.waiting[fk.nwaiting++] = fk.hung[i];
    }
    fk.nhung = 0;
    fake_answer_all(NULL);
}

static void fake_close(void)
{
    uv_close((uv_handle_t *)&fk.timer, NULL);
}

static const sink_backend fake_backend = {
    .name = "fake", .start = fake_start, .submit = fake_submit,
    .forget = fake_forget, .abort = fake_abort, .close = fake_close};

/* Policy options over the fake backend with steps as its script. */
static sink_opts fake_opts(const fake_step *steps, int n, unsigned backend_limit)
{
    static sink_backend be;
    memset(&fk, 0, sizeof(fk));
    if (n)
        memcpy(fk.script, steps, (size_t)n * sizeof(*steps));
    fk.nscript = n;
    be = fake_backend;
    be.max_inflight = backend_limit;
    return (sink_opts){.backend = &be, .spool = spool_on ? &spool_o : NULL,
                       .max_inflight = 4, .backoff_min_ms = 50, .backoff_max_ms = 200};
}

/* done: the backend's row counts are what the policy counts. */
START_TEST(test_sink_policy_done_counts_backend_rows)
{
    fake_step st[2] = {{.cls = SINK_DONE, .rows_ok = 3, .quarantined = 1},
                       {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 2, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 4, "pa"));
    sink_submit(tu_batch(IMG, 2, "pb"));
    ck_assert(run_until_delivered(5, 2000));
    ck_assert_uint_eq(stats.rows_delivered[LLM], 3);
    ck_assert_uint_eq(stats.rows_quarantined[LLM], 1);
    ck_assert_uint_eq(stats.rows_delivered[IMG], 2);
    ck_assert_int_eq(fk.nsubmits, 2);
    ck_assert_int_eq(fk.forgets, 2); /* priv given back on every end */
    ck_assert_uint_ne(stats.last_flush_ok_ms, 0);
    drain(1000);
    finish();
}
END_TEST

/* A submit that cannot start is never answered: the policy retries it
 * after its backoff, like a transport failure. */
START_TEST(test_sink_policy_submit_failure_retried)
{
    fake_step st[2] = {{.submit_rc = -EIO}, {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 2, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "sf"));
    ck_assert(run_until_delivered(2, 2000));
    ck_assert_int_eq(fk.nsubmits, 2);
    ck_assert_uint_eq(stats.retries, 1);
    uint64_t gap = fk.submit_ms[1] - fk.submit_ms[0];
    ck_assert_msg(gap >= 25 && gap <= 150, "retried after %llu ms", (unsigned long long)gap);
    drain(1000);
    finish();
}
END_TEST

/* retry with an asked-for wait: the policy waits that long, not its
 * backoff (50 ms here), spread by up to as long again (at most a rate
 * window, 1 s), so that hosts refused together come back apart. */
START_TEST(test_sink_policy_retry_waits_as_asked)
{
    fake_step st[2] = {{.cls = SINK_RETRY, .wait_ms = 300}, {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 2, 0);
    o.backoff_max_ms = 1000; /* the cap, above the wait asked for */
    start(&o);
    sink_submit(tu_batch(LLM, 1, "rw"));
    ck_assert(run_until_delivered(1, 3000));
    uint64_t gap = fk.submit_ms[1] - fk.submit_ms[0];
    ck_assert_msg(gap >= 295 && gap < 900, "resent after %llu ms", (unsigned long long)gap);
    ck_assert_int_eq(fk.forgets, 1); /* kept across the retry, given back at the end */
    drain(1000);
    finish();
}
END_TEST

static int pred_submits(void *arg)
{
    return fk.nsubmits >= *(int *)arg;
}

/* sink_failing_ms (the health check's backing_off): from the first retry
 * since the last success, not reset by the retries after it; 0 once a
 * success comes. */
START_TEST(test_sink_policy_failing_since_first_retry)
{
    fake_step st[5] = {{.cls = SINK_RETRY, .wait_ms = 100},
                       {.cls = SINK_DONE, .rows_ok = -1},
                       {.cls = SINK_RETRY, .wait_ms = 100},
                       {.cls = SINK_RETRY, .wait_ms = 100},
                       {.hang = 1}};
    sink_opts o = fake_opts(st, 5, 0);
    start(&o);
    unsigned ds = 99;
    ck_assert_uint_eq(sink_failing_ms(uv_now(&loop), &ds), 0);
    ck_assert_uint_eq(ds, 0);
    sink_submit(tu_batch(LLM, 1, "fa"));
    ck_assert(run_until_delivered(1, 3000));
    ck_assert_uint_eq(sink_failing_ms(uv_now(&loop), &ds), 0);
    ck_assert_uint_eq(ds, 0);

    sink_submit(tu_batch(IMG, 1, "fb"));
    int four = 4, five = 5;
    ck_assert(tu_run_until(&loop, pred_submits, &four, 3000)); /* first retry */
    uint64_t now1 = uv_now(&loop), f1 = sink_failing_ms(now1, &ds);
    ck_assert(tu_run_until(&loop, pred_submits, &five, 3000)); /* second retry */
    uint64_t now2 = uv_now(&loop), f2 = sink_failing_ms(now2, &ds);
    ck_assert_uint_eq(ds, IMG);
    /* Since the first retry's answer: after its submit, before the resend. */
    ck_assert_msg(f2 <= now2 - fk.submit_ms[2] && f2 >= now2 - fk.submit_ms[3],
                  "failing for %llu ms", (unsigned long long)f2);
    ck_assert_uint_eq(f2 - f1, now2 - now1); /* the second retry kept it */
    ck_assert_uint_eq(sink_failing_ms(now2 + 60000, &ds), f2 + 60000);
    drain(100); /* abort answers the hung job */
    finish();
}
END_TEST

/* Issue 11, finding 11: an asked-for wait is honoured up to
 * backoff_max_ms (200 ms here, then spread), not for the 10^7 s a
 * Retry-After may say; the log line keeps the raw value. */
START_TEST(test_sink_policy_retry_wait_capped)
{
    fake_step st[2] = {{.cls = SINK_RETRY, .wait_ms = 9999999000}, {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 2, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 1, "cap"));
    ck_assert(run_until_delivered(1, 3000));
    uint64_t gap = fk.submit_ms[1] - fk.submit_ms[0];
    ck_assert_msg(gap >= 195 && gap < 1000, "resent after %llu ms", (unsigned long long)gap);
    drain(1000);
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_msg(strstr(log, "event=send_retry") &&
                      strstr(log, "asked_ms=9999999000 capped=backoff-max-ms"),
                  "log: %s", log);
    /* The cap, then the spread of up to as long again (a fleet refused
     * together comes back apart). */
    const char *w = strstr(log, "wait_ms=");
    ck_assert_ptr_nonnull(w);
    long wait = strtol(w + 8, NULL, 10);
    ck_assert_msg(wait >= 200 && wait <= 400, "wait_ms=%ld", wait);
    free(log);
}
END_TEST

/* reject: the rows go to the counter the backend named, and with a spool
 * to the dead-letter file; nothing is retried. */
START_TEST(test_sink_policy_reject_counts_backend_reason)
{
    use_spool();
    fake_step st[1] = {{.cls = SINK_REJECT, .drop = DROP_out_write}};
    sink_opts o = fake_opts(st, 1, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 3, "rj"));
    ck_assert(tu_run_until_u64(&loop, &stats.dropped[DROP_out_write], 3, 2000));
    ck_assert_uint_eq(stats.dropped[DROP_http_rejected], 0);
    drain(1000);
    ck_assert_uint_eq(stats.rows_dead_lettered, 3);
    ck_assert_int_eq(fk.nsubmits, 1);
    char path[256];
    snprintf(path, sizeof(path), "%s/dead-letter.ndjson", spool_dir);
    size_t len;
    char *text = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "\"status\":7") && strstr(text, "\"response\":\"scripted\"") &&
                      strstr(text, "rj-0002"), "dead letter: %s", text);
    free(text);
    finish();
}
END_TEST

/* too large: the backend's derived state is forgotten before the split,
 * and each half is submitted on its own. */
START_TEST(test_sink_policy_too_large_forgets_then_splits)
{
    fake_step st[1] = {{.cls = SINK_TOO_LARGE}};
    sink_opts o = fake_opts(st, 1, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 4, "tl"));
    ck_assert(run_until_delivered(4, 2000));
    ck_assert_int_eq(fk.nsubmits, 3);
    ck_assert_str_eq(fk.order[1], "tl-0000\",");
    ck_assert_str_eq(fk.order[2], "tl-0002\",");
    ck_assert_int_eq(fk.forgets, 3);
    drain(1000);
    finish();
}
END_TEST

/* A backend that takes one job at a time gets the oldest batch of any
 * dataset first. */
START_TEST(test_sink_policy_backend_limit_oldest_first)
{
    sink_opts o = fake_opts(NULL, 0, 1);
    start(&o);
    batch_buf *a = tu_batch(IMG, 1, "o1"), *b = tu_batch(LLM, 1, "o2"),
              *c = tu_batch(IMG, 1, "o4"), *d = tu_batch(LLM, 1, "o3");
    a->first_ms = 1;
    b->first_ms = 30;
    c->first_ms = 40;
    d->first_ms = 35;
    sink_submit(a); /* taken at once */
    sink_submit(b);
    sink_submit(c);
    sink_submit(d);
    ck_assert_uint_eq(sink_pending(), 4);
    ck_assert(run_until_delivered(4, 2000));
    const char *want[4] = {"o1-0000\",", "o2-0000\",", "o3-0000\",", "o4-0000\","};
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(fk.order[i], want[i]);
    drain(1000);
    finish();
}
END_TEST

/* hold: the dataset's batches wait (the other dataset goes on), one probe
 * at a time; at shutdown they go to the spool at once, no probe. */
START_TEST(test_sink_policy_hold_keeps_and_spools_at_drain)
{
    use_spool();
    fake_step st[1] = {{.cls = SINK_HOLD}};
    sink_opts o = fake_opts(st, 1, 0);
    o.backoff_max_ms = 60000;
    start(&o);
    sink_submit(tu_batch(LLM, 2, "ha"));
    ck_assert(tu_run_until_u64(&loop, &stats.holds, 1, 2000));
    ck_assert_str_eq(sink_state(), "not_found"); /* SINK_HOLD_NOT_FOUND is 0 */
    sink_submit(tu_batch(LLM, 3, "hb"));
    sink_submit(tu_batch(IMG, 1, "hc"));
    ck_assert(run_until_delivered(1, 2000)); /* the other dataset is not held */
    tu_run_for(&loop, 100);
    ck_assert_int_eq(fk.nsubmits, 2);
    ck_assert_uint_eq(sink_pending(), 2);
    ck_assert_uint_eq(stats.rows_spooled, 0);
    uint64_t t0 = tu_mono_ms();
    drain(5000);
    ck_assert_uint_lt(tu_mono_ms() - t0, 1000); /* no waiting on the hold */
    ck_assert_int_eq(fk.nsubmits, 2);
    ck_assert_uint_eq(stats.rows_spooled, 5);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    finish();
    ck_assert_int_eq(uv_loop_init(&loop), 0); /* the next run finds them */
    ck_assert_uint_eq(spool_rows_on_disk(), 5);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* The deadline: the backend's abort answers what is in progress, and the
 * policy spools it. */
START_TEST(test_sink_policy_abort_spools_in_progress)
{
    use_spool();
    fake_step st[1] = {{.hang = 1}};
    sink_opts o = fake_opts(st, 1, 0);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "ab"));
    ck_assert_uint_eq(sink_pending(), 1);
    drain(50);
    ck_assert_uint_eq(stats.rows_spooled, 2);
    ck_assert_uint_eq(spool_rows_unread(), 2);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    finish();
}
END_TEST

/* ---- file mode --------------------------------------------------------- */

/* A backend without reconfigure (the fake has none, as Kafka) keeps its
 * own options until a restart, but a reload still applies the policy's:
 * here a lower backoff ceiling cuts a long wait at once. */
START_TEST(test_sink_policy_reconfigure_without_backend_hook)
{
    fake_step st[2] = {{.cls = SINK_RETRY, .wait_ms = -1}, {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 2, 0);
    o.backoff_min_ms = 20000;
    o.backoff_max_ms = 40000;
    start(&o);
    sink_submit(tu_batch(LLM, 1, "rc"));
    ck_assert(tu_run_until_u64(&loop, &stats.retries, 1, 2000));
    sink_opts fresh = o;
    fresh.backoff_min_ms = 50;
    fresh.backoff_max_ms = 100;
    char err[256] = "";
    ck_assert_msg(sink_reconfigure(&fresh, err, sizeof(err)) == 0, "%s", err);
    uint64_t t0 = tu_mono_ms();
    ck_assert(run_until_delivered(1, 3000));
    ck_assert_uint_lt(tu_mono_ms() - t0, 2000);
    drain(1000);
    finish();
}
END_TEST

START_TEST(test_sink_file_in_order)
{
    tu_write_file(out_path, "old\n", 4); /* appended to, not replaced */
    sink_opts o = file_opts_for(out_path);
    start(&o);
    batch_buf *b[3] = {tu_batch(LLM, 2, "a"), tu_batch(LLM, 3, "b"), tu_batch(IMG, 1, "c")};
    for (int i = 0; i < 3; i++)
        b[i]->first_ms = b[i]->close_ms = (uint64_t)(i + 1);
    uint64_t t0 = tu_wall_ms();
    for (int i = 0; i < 3; i++)
        sink_submit(b[i]);
    drain(2000);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 5);
    ck_assert_uint_eq(stats.rows_delivered[IMG], 1);
    ck_assert_uint_eq(delivered_at_done, 6); /* done came after the writes */
    char want[4096];
    size_t n = 0, l;
    memcpy(want, "old\n", 4);
    n = 4;
    const char *tags[3] = {"a", "b", "c"};
    const int rows[3] = {2, 3, 1};
    for (int i = 0; i < 3; i++) {
        const char *r = rows_of(rows[i], tags[i], &l);
        memcpy(want + n, r, l);
        n += l;
    }
    size_t got_len;
    char *got = tu_read_file(out_path, &got_len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(got_len, n);
    ck_assert_int_eq(memcmp(got, want, n), 0);
    free(got);
    ck_assert_uint_eq(stats.bytes_sent, n - 4);
    ck_assert_uint_ge(stats.last_flush_ok_ms, t0);
    ck_assert_uint_eq(stats.dropped[DROP_out_write], 0);
    finish();
}
END_TEST

/* Datasets share the file: the oldest waiting batch (first_ms) goes next. */
START_TEST(test_sink_file_oldest_first_across_datasets)
{
    sink_opts o = file_opts_for(out_path);
    start(&o);
    batch_buf *d = tu_batch(IMG, 1, "d"), *e = tu_batch(LLM, 1, "e"),
              *f = tu_batch(IMG, 1, "f");
    d->first_ms = 10;
    e->first_ms = 30;
    f->first_ms = 20;
    sink_submit(d); /* written at once */
    sink_submit(e); /* these two wait: f is older */
    sink_submit(f);
    ck_assert_uint_eq(sink_pending(), 3);
    drain(2000);
    size_t l;
    char *got = tu_read_file(out_path, &l);
    char want[256];
    size_t n = 0, k;
    const char *tags[3] = {"d", "f", "e"};
    for (int i = 0; i < 3; i++) {
        const char *r = rows_of(1, tags[i], &k);
        memcpy(want + n, r, k);
        n += k;
    }
    ck_assert_uint_eq(l, n);
    ck_assert_int_eq(memcmp(got, want, n), 0);
    free(got);
    finish();
}
END_TEST

/* Nothing submitted: the drain's done runs at once. */
START_TEST(test_sink_file_drain_empty)
{
    sink_opts o = file_opts_for(out_path);
    start(&o);
    sink_drain(uv_now(&loop) + 1000, on_drained, &drained);
    ck_assert_uint_eq(drained, 1);
    ck_assert_int_eq(tu_file_size(out_path), 0);
    finish();
}
END_TEST

/* Regression test (the daemon failed it until fixed): when the --out file
 * cannot be opened, sink_start fails with the policy's timers already
 * initialised (so sink_close must run for uv_loop_close to succeed), and
 * closing must not close fd 0 (an fd left at 0 by a memset once did). */
START_TEST(test_sink_file_open_error)
{
    char bad[192], err[256] = "";
    snprintf(bad, sizeof(bad), "%s/no/such/dir/out.ndjson", tmpdir);
    sink_opts o = file_opts_for(bad);
    int in = dup(STDIN_FILENO);
    ck_assert_int_ge(in, 0);
    ck_assert_int_eq(sink_start(&loop, &o, err, sizeof(err)), -ENOENT);
    ck_assert_msg(strstr(err, "opening --out") && strstr(err, bad), "err '%s'", err);
    sink_close();
    int stdin_open = fcntl(STDIN_FILENO, F_GETFD) >= 0;
    dup2(in, STDIN_FILENO);
    close(in);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_msg(stdin_open, "sink_close closed fd 0");
}
END_TEST

/* Issue 11, finding 8: --out is opened with O_NOFOLLOW. A symlink there
 * (to a file of someone else's choosing) made the daemon append every row
 * to its target; now sink_start refuses, saying so. */
START_TEST(test_sink_file_out_symlink_refused)
{
    char link[192], target[192], err[256] = "";
    snprintf(target, sizeof(target), "%s/target", tmpdir);
    snprintf(link, sizeof(link), "%s/out-link.ndjson", tmpdir);
    tu_write_file(target, "", 0);
    ck_assert_int_eq(symlink(target, link), 0);
    sink_opts o = file_opts_for(link);
    ck_assert_int_eq(sink_start(&loop, &o, err, sizeof(err)), -ELOOP);
    ck_assert_msg(strstr(err, link) && strstr(err, "symbolic link"), "err '%s'", err);
    sink_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_int_eq(tu_file_size(target), 0);
}
END_TEST

/* Failed writes (here: no space left) are counted as dropped.out_write,
 * every batch's rows, and the drain still ends. */
START_TEST(test_sink_file_write_error)
{
    if (access("/dev/full", W_OK) != 0) { /* no /dev/full here: nothing to test */
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        return;
    }
    sink_opts o = file_opts_for("/dev/full");
    start(&o);
    sink_submit(tu_batch(LLM, 3, "full"));
    sink_submit(tu_batch(IMG, 2, "full"));
    drain(2000);
    ck_assert_uint_eq(stats.dropped[DROP_out_write], 5);
    ck_assert_uint_eq(delivered(), 0);
    ck_assert_uint_eq(stats.last_flush_ok_ms, 0);
    finish();
}
END_TEST

/* Pacing: what the policy told the batch stage, in order. */
static struct {
    unsigned dataset[64];
    uint64_t interval[64], jitter[64];
    int n;
    int closes;          /* close_open calls */
    uint64_t close_ms;   /* the last one's loop time */
} told;

static void on_close_open(unsigned dataset, void *arg)
{
    ck_assert_ptr_eq(arg, &told);
    ck_assert_uint_eq(dataset, LLM);
    told.closes++;
    told.close_ms = uv_now(&loop);
}

static void on_interval(unsigned dataset, uint64_t interval_ms, uint64_t jitter_ms, void *arg)
{
    ck_assert_ptr_eq(arg, &told);
    ck_assert_int_lt(told.n, 64);
    told.dataset[told.n] = dataset;
    told.interval[told.n] = interval_ms;
    told.jitter[told.n++] = jitter_ms;
}

static void pace_opts(sink_opts *o, int on, uint64_t base_ms)
{
    memset(&told, 0, sizeof(told));
    o->pacing = (pacing_opts){.on = on, .base_ms = base_ms, .max_ms = 10 * base_ms};
    o->on_interval = on_interval;
    o->close_open = on_close_open;
    o->interval_arg = &told;
}

/* The budget of every answer, any class, paces its dataset: low budgets
 * and a 429 stretch the interval, told to the batch stage with a tenth of
 * it as jitter; the stats read it. A batch refused for the rate limit
 * waits the new interval and takes the open batch along. The other
 * dataset is not touched. A reload of the limits tells every dataset,
 * clamped. */
START_TEST(test_sink_policy_paces_from_budget)
{
    fake_step st[4] = {{.cls = SINK_DONE, .rows_ok = -1, .budget = {10, 2, 1000}},
                       {.cls = SINK_RETRY, .wait_ms = 1, .throttled = 1,
                        .budget = {10, 0, 1000}},
                       {.cls = SINK_DONE, .rows_ok = -1, .budget = {10, 3, 1000}},
                       {.cls = SINK_DONE, .rows_ok = -1}};
    sink_opts o = fake_opts(st, 4, 1);
    pace_opts(&o, 1, 100);
    start(&o);
    ck_assert_uint_eq(sink_flush_interval_ms(LLM), 100);
    ck_assert_str_eq(sink_pacing(LLM), "normal");
    sink_submit(tu_batch(LLM, 1, "p1"));
    sink_submit(tu_batch(LLM, 1, "p2"));
    sink_submit(tu_batch(LLM, 1, "p3"));
    ck_assert(run_until_delivered(3, 5000));
    ck_assert_int_eq(fk.nsubmits, 4);
    ck_assert_int_eq(told.n, 3); /* low, 429, low; the last said nothing */
    /* The refused batch went again once the wait was over, and asked the
     * batch stage for the open batch first, to take it along; its wait was
     * the doubled interval at least. */
    ck_assert_int_eq(told.closes, 1);
    ck_assert_uint_eq(told.close_ms, fk.submit_ms[2]);
    ck_assert_uint_ge(fk.submit_ms[2] - fk.submit_ms[1], told.interval[1] - 5);
    uint64_t last = 100;
    for (int i = 0; i < told.n; i++) {
        ck_assert_uint_eq(told.dataset[i], LLM);
        ck_assert_uint_gt(told.interval[i], last);
        ck_assert_uint_eq(told.jitter[i], told.interval[i] / 10);
        last = told.interval[i];
    }
    ck_assert_uint_gt(last, 300); /* x1.8, x2, x1.5 */
    ck_assert_uint_eq(sink_flush_interval_ms(LLM), last);
    ck_assert_str_eq(sink_pacing(LLM), "rate_limited");
    ck_assert_uint_eq(sink_flush_interval_ms(IMG), 100);
    ck_assert_str_eq(sink_pacing(IMG), "normal");
    /* stats reads them through the policy */
    json_t *snap = stats_snapshot();
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(snap, "flush_interval_ms"),
                                                        "llm_events")), (json_int_t)last);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(snap, "pacing"),
                                                       "llm_events")), "rate_limited");
    json_decref(snap);
    told.n = 0;
    sink_set_pacing(&(pacing_opts){.on = 1, .base_ms = 100, .max_ms = 200});
    ck_assert_int_eq(told.n, BF_DATASET_MAX - 1);
    for (int i = 0; i < told.n; i++)
        ck_assert_uint_eq(told.interval[i], told.dataset[i] == LLM ? 200 : 100);
    told.n = 0;
    sink_set_pacing(&(pacing_opts){.on = 0, .base_ms = 100, .max_ms = 200});
    ck_assert_uint_eq(told.interval[0], 100);
    ck_assert_uint_eq(told.jitter[0], 0); /* off: exactly the interval */
    ck_assert_str_eq(sink_pacing(LLM), "off");
    drain(1000);
    finish();
}
END_TEST

/* --pacing off: budgets and 429s change nothing; nobody is told. */
START_TEST(test_sink_policy_pacing_off)
{
    fake_step st[2] = {{.cls = SINK_RETRY, .wait_ms = 1, .throttled = 1, .budget = {10, 0, 1000}},
                       {.cls = SINK_DONE, .rows_ok = -1, .budget = {10, 0, 1000}}};
    sink_opts o = fake_opts(st, 2, 0);
    pace_opts(&o, 0, 1000);
    start(&o);
    sink_submit(tu_batch(LLM, 1, "off"));
    ck_assert(run_until_delivered(1, 3000));
    ck_assert_int_eq(told.n, 0);
    ck_assert_uint_eq(sink_flush_interval_ms(LLM), 1000);
    ck_assert_str_eq(sink_pacing(LLM), "off");
    drain(1000);
    finish();
}
END_TEST

/* ---- Tinybird mode: answers ------------------------------------------- */

/* 200: the body's successful_rows and quarantined_rows are counted; the
 * request is a gzip of the rows, to the dataset's URL, with the token. */
START_TEST(test_sink_http_200_counts)
{
    sink_opts o = http_opts_for();
    th_resp r = {.status = 200, .body = "{\"successful_rows\":3,\"quarantined_rows\":2}"};
    th_script(&srv, &r, 1);
    start(&o);
    uint64_t t0 = tu_wall_ms();
    batch_buf *b = tu_batch(LLM, 5, "q");
    b->first_ms = b->close_ms = uv_now(&loop);
    sink_submit(b);
    ck_assert(tu_run_until_u64(&loop, &stats.http[200], 1, 3000));
    ck_assert_uint_eq(stats.rows_delivered[LLM], 3);
    ck_assert_uint_eq(stats.rows_quarantined[LLM], 2);
    ck_assert_uint_eq(stats.rows_delivered[IMG], 0);
    ck_assert_uint_ge(stats.last_flush_ok_ms, t0);
    ck_assert_uint_eq(stats.retries, 0);
    ck_assert_uint_eq(http_inflight(), 0);
    const th_req *q = th_req_at(&srv, 0);
    ck_assert_str_eq(q->method, "POST");
    ck_assert_str_eq(q->target, "/v0/events?name=llm_events&wait=true");
    ck_assert_header(q, "Authorization", "Bearer tok-123");
    ck_assert_header(q, "Content-Type", "application/x-ndjson");
    check_body(0, 5, "q");
    ck_assert_uint_eq(stats.bytes_sent, q->body_len);
    /* The delay histogram got every row. */
    uint64_t lat = 0;
    for (unsigned i = 0; i < STATS_LAT_BUCKETS; i++)
        lat += stats.lat[0][i] + stats.lat[1][i];
    ck_assert_uint_eq(lat, 5);
    ck_assert_uint_eq(sink_pending(), 0);
    drain(1000);
    finish();
}
END_TEST

/* Each dataset has its own URL; a body without counts counts every row. */
START_TEST(test_sink_http_per_dataset)
{
    sink_opts o = http_opts_for();
    start(&o);
    sink_submit(tu_batch(IMG, 2, "img"));
    sink_submit(tu_batch(LLM, 3, "llm"));
    ck_assert(run_until_delivered(5, 3000));
    ck_assert_uint_eq(stats.rows_delivered[IMG], 2);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 3);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 2);
    for (int i = 0; i < 2; i++) {
        const th_req *q = th_req_at(&srv, i);
        if (strcmp(q->target, "/v0/events?name=image_events&wait=true") == 0)
            check_body(i, 2, "img");
        else {
            ck_assert_str_eq(q->target, "/v0/events?name=llm_events&wait=true");
            check_body(i, 3, "llm");
        }
    }
    drain(1000);
    finish();
}
END_TEST

/* Transient failures: the same batch (the same gzip bytes) is sent again
 * after the backoff, and delivered. */
static const struct {
    th_resp first;
    int counter; /* stats.http index it lands in */
} transient[] = {
    {{.status = 503, .body = "down"}, 503},
    {{.status = 500, .body = "oops"}, 500},
    {{.status = 408}, 408},
    {{.hangup = 1}, 0},
    {{.status = 429}, 429}, /* no Retry-After, no X-RateLimit-Reset: the backoff */
};

START_TEST(test_sink_http_transient_retried)
{
    sink_opts o = http_opts_for();
    th_resp r[2] = {transient[_i].first, {.status = 200, .body = "{}"}};
    th_script(&srv, r, 2);
    start(&o);
    sink_submit(tu_batch(LLM, 4, "t"));
    ck_assert(run_until_delivered(4, 3000));
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 2);
    ck_assert_uint_eq(stats.http[transient[_i].counter], 1);
    ck_assert_uint_eq(stats.http[200], 1);
    ck_assert_uint_eq(stats.retries, 1);
    const th_req *a = th_req_at(&srv, 0), *b = th_req_at(&srv, 1);
    ck_assert_uint_eq(a->body_len, b->body_len);
    ck_assert_int_eq(memcmp(a->body, b->body, a->body_len), 0);
    check_body(1, 4, "t");
    /* Full jitter between half and all of backoff_min (50 ms). */
    ck_assert_uint_ge(b->t_ms - a->t_ms, 25);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 4);
    drain(1000);
    finish();
}
END_TEST

/* 429 with Retry-After: the dataset waits that long, not the backoff. */
START_TEST(test_sink_http_429_retry_after)
{
    sink_opts o = http_opts_for();
    o.backoff_max_ms = 5000; /* the cap, above the Retry-After */
    th_resp r[2] = {{.status = 429, .headers = "Retry-After: 1\r\n"}, {.status = 200}};
    th_script(&srv, r, 2);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "w"));
    ck_assert(run_until_delivered(2, 4000));
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 2);
    uint64_t gap = th_req_at(&srv, 1)->t_ms - th_req_at(&srv, 0)->t_ms;
    ck_assert_msg(gap >= 1000 && gap < 2500, "resent after %llu ms", (unsigned long long)gap);
    ck_assert_uint_eq(stats.http[429], 1);
    ck_assert_uint_eq(stats.retries, 1);
    drain(1000);
    finish();
}
END_TEST

/* 429 with X-RateLimit-Reset only: that wait (0 s here), not the backoff
 * (at least 2.5 s here). */
START_TEST(test_sink_http_429_ratelimit_reset)
{
    sink_opts o = http_opts_for();
    o.backoff_min_ms = 5000;
    o.backoff_max_ms = 10000;
    th_resp r[2] = {{.status = 429, .headers = "X-RateLimit-Reset: 0\r\n"}, {.status = 200}};
    th_script(&srv, r, 2);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "w"));
    ck_assert(run_until_delivered(2, 2000));
    uint64_t gap = th_req_at(&srv, 1)->t_ms - th_req_at(&srv, 0)->t_ms;
    ck_assert_uint_lt(gap, 1000);
    ck_assert_uint_eq(stats.retries, 1);
    drain(1000);
    finish();
}
END_TEST

/* The Tinybird backend reports X-RateLimit-* of any answer as the budget
 * and a 429 as throttled: the policy stretches the dataset's interval. */
START_TEST(test_sink_http_ratelimit_headers_pace)
{
    sink_opts o = http_opts_for();
    pace_opts(&o, 1, 100);
    th_resp r[3] = {
        {.status = 200, .headers = "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 6\r\n"
                                   "X-RateLimit-Reset: 1\r\n"},
        {.status = 200, .headers = "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 1\r\n"
                                   "X-RateLimit-Reset: 1\r\n"},
        {.status = 429, .headers = "Retry-After: 0\r\n"}};
    th_script(&srv, r, 3);
    start(&o);
    sink_submit(tu_batch(LLM, 1, "h1"));
    ck_assert(run_until_delivered(1, 3000));
    ck_assert_int_eq(told.n, 0); /* 4 of 10 used: headroom at base */
    sink_submit(tu_batch(LLM, 1, "h2"));
    ck_assert(run_until_delivered(2, 3000));
    ck_assert_int_eq(told.n, 1); /* 9 of 10: low */
    ck_assert_uint_eq(told.interval[0], (uint64_t)llround(100 * exp(PACING_UP * 0.8)));
    sink_submit(tu_batch(LLM, 1, "h3"));
    ck_assert(run_until_delivered(3, 5000));
    ck_assert_int_eq(told.n, 2); /* the 429 (then a 200 without headers) */
    ck_assert_uint_gt(told.interval[1], 2 * told.interval[0] - 30);
    ck_assert_uint_eq(stats.http[429], 1);
    drain(1000);
    finish();
}
END_TEST

/* Other 4xx: never retried; counted as dropped.http_rejected; a hint in the
 * log for 401, 403 and 404. */
static const struct {
    int status;
    const char *hint;
} rejects[] = {
    {400, "the rows were refused"},
    {422, "the rows were refused"},
};

START_TEST(test_sink_http_4xx_not_retried)
{
    sink_opts o = http_opts_for();
    th_resp r = {.status = rejects[_i].status, .body = "{\"error\":\"no\"}"};
    th_script(&srv, &r, 1);
    start(&o);
    sink_submit(tu_batch(LLM, 3, "x"));
    ck_assert(tu_run_until_u64(&loop, &stats.dropped[DROP_http_rejected], 3, 3000));
    tu_run_for(&loop, 200); /* well past the backoff: nothing more is sent */
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 1);
    ck_assert_uint_eq(stats.dropped[DROP_http_rejected], 3);
    ck_assert_uint_eq(stats.retries, 0);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 0);
    ck_assert_uint_eq(stats.rows_dead_lettered, 0); /* no spool */
    ck_assert_uint_eq(stats.http[rejects[_i].status], 1);
    if (saved_stderr >= 0) { /* the log went to log_path (not BF_TEST_STDERR) */
        char *log = tu_read_file(log_path, NULL);
        ck_assert_ptr_nonnull(log);
        ck_assert_msg(strstr(log, rejects[_i].hint) != NULL, "no hint '%s' in the log",
                      rejects[_i].hint);
        ck_assert_ptr_null(strstr(log, "tok-123")); /* the token is never logged */
        free(log);
    }
    drain(1000);
    finish();
}
END_TEST

/* With a spool, a refused batch goes to the dead-letter file: a header line
 * with the status and response, then the rows as sent. */
START_TEST(test_sink_http_400_dead_letter)
{
    use_spool();
    sink_opts o = http_opts_for();
    th_resp r = {.status = 400, .body = "{\"error\":\"column n: not an int\"}"};
    th_script(&srv, &r, 1);
    start(&o);
    sink_submit(tu_batch(IMG, 2, "dl"));
    ck_assert(tu_run_until_u64(&loop, &stats.rows_dead_lettered, 2, 3000));
    ck_assert_uint_eq(stats.dropped[DROP_http_rejected], 2);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 1);
    char path[256];
    snprintf(path, sizeof(path), "%s/dead-letter.ndjson", spool_dir);
    char *text = tu_read_file(path, NULL);
    ck_assert_ptr_nonnull(text);
    char *nl = strchr(text, '\n');
    ck_assert_ptr_nonnull(nl);
    json_error_t e;
    json_t *h = json_loadb(text, (size_t)(nl - text), 0, &e);
    ck_assert_msg(h != NULL, "header: %s", e.text);
    json_t *d = json_object_get(h, "dead_letter");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "status")), 400);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "rows")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(d, "dataset")), "image_events");
    ck_assert_str_eq(json_string_value(json_object_get(d, "response")),
                     "{\"error\":\"column n: not an int\"}");
    json_decref(h);
    size_t l;
    ck_assert_str_eq(nl + 1, rows_of(2, "dl", &l));
    free(text);
    ck_assert_uint_eq(stats.rows_spooled, 0); /* not for replay */
    drain(1000);
    finish();
}
END_TEST

/* The rows of tu_rows(n, tag) from first to last, as one string. */
static void rows_range(char *out, size_t cap, int n, const char *tag, int first, int last)
{
    size_t l;
    const char *all = rows_of(n, tag, &l), *p = all;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *nl = strchr(p, '\n');
        if (i >= first && i <= last)
            snprintf(out + strlen(out), cap - strlen(out), "%.*s", (int)(nl - p + 1), p);
        p = nl + 1;
    }
}

/* The plain bodies of requests 0.. are these row ranges of tu_rows(n, tag). */
static void check_ranges(int n, const char *tag, const int (*ranges)[2], int count)
{
    ck_assert_int_eq(th_counts_now(&srv).nreqs, count);
    for (int i = 0; i < count; i++) {
        char want[1024];
        rows_range(want, sizeof(want), n, tag, ranges[i][0], ranges[i][1]);
        const th_req *q = th_req_at(&srv, i);
        size_t k;
        char *plain = th_gunzip(q->body, q->body_len, &k);
        ck_assert_ptr_nonnull(plain);
        ck_assert_msg(strcmp(plain, want) == 0, "request %d: '%s', want '%s'", i, plain, want);
        free(plain);
    }
}

/* 413: the batch is split in two at a newline, each half sent on its own,
 * in order: two rows make two requests of one row each. */
START_TEST(test_sink_http_413_split)
{
    sink_opts o = http_opts_for();
    o.max_inflight = 1; /* one request at a time: a fixed order */
    th_resp r = {.status = 413};
    th_script(&srv, &r, 1);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "s"));
    ck_assert(run_until_delivered(2, 3000));
    tu_run_for(&loop, 50);
    const int ranges[3][2] = {{0, 1}, {0, 0}, {1, 1}};
    check_ranges(2, "s", ranges, 3);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 2);
    ck_assert_uint_eq(stats.http[413], 1);
    ck_assert_uint_eq(stats.http[200], 2);
    ck_assert_uint_eq(stats.retries, 0);
    ck_assert_uint_eq(stats.dropped[DROP_too_large], 0);
    drain(1000);
    finish();
}
END_TEST

/* A half that is still too large is split again. Three rows of one length:
 * rows 0-1 and row 2, then row 0 and row 1. */
START_TEST(test_sink_http_413_split_again)
{
    sink_opts o = http_opts_for();
    o.max_inflight = 1;
    th_resp r[2] = {{.status = 413}, {.status = 413}};
    th_script(&srv, r, 2);
    start(&o);
    sink_submit(tu_batch(LLM, 3, "s"));
    ck_assert(run_until_delivered(3, 3000));
    tu_run_for(&loop, 50);
    const int ranges[5][2] = {{0, 2}, {0, 1}, {0, 0}, {1, 1}, {2, 2}};
    check_ranges(3, "s", ranges, 5);
    ck_assert_uint_eq(stats.http[413], 2);
    ck_assert_uint_eq(stats.http[200], 3);
    ck_assert_uint_eq(stats.dropped[DROP_too_large], 0);
    drain(1000);
    finish();
}
END_TEST

/* Regression test (the daemon failed it until fixed): split_job (then split_flight) looked for the first
 * newline at or after len/2, so when the middle falls just after a newline
 * (rows of one length, an even count) it skips that newline for the next
 * one: four rows split 3 + 1, not 2 + 2 as "the newline nearest the
 * middle" (sink.h, docs/delivery.md) says. Fix: take both the last
 * newline before mid (memrchr) and the first at or after it, not counting
 * the final one, and cut at the closer. */
START_TEST(test_sink_http_413_split_nearest_middle)
{
    sink_opts o = http_opts_for();
    o.max_inflight = 1;
    th_resp r = {.status = 413};
    th_script(&srv, &r, 1);
    start(&o);
    sink_submit(tu_batch(LLM, 4, "s"));
    ck_assert(run_until_delivered(4, 3000));
    tu_run_for(&loop, 50);
    const int ranges[3][2] = {{0, 3}, {0, 1}, {2, 3}};
    check_ranges(4, "s", ranges, 3);
    drain(1000);
    finish();
}
END_TEST

START_TEST(test_sink_http_413_single_row)
{
    sink_opts o = http_opts_for();
    th_resp r = {.status = 413};
    th_default(&srv, r);
    start(&o);
    sink_submit(tu_batch(LLM, 1, "big"));
    ck_assert(tu_run_until_u64(&loop, &stats.dropped[DROP_too_large], 1, 3000));
    tu_run_for(&loop, 100);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 1);
    ck_assert_uint_eq(stats.dropped[DROP_too_large], 1);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 0);
    drain(1000);
    finish();
}
END_TEST

/* ---- Tinybird mode: concurrency ---------------------------------------- */

/* At most max_inflight requests per dataset at once. */
START_TEST(test_sink_http_max_inflight)
{
    sink_opts o = http_opts_for();
    o.max_inflight = 2;
    th_default(&srv, (th_resp){.status = 200, .body = "{}", .delay_ms = 150});
    start(&o);
    const char *tags[5] = {"m0", "m1", "m2", "m3", "m4"};
    for (int i = 0; i < 5; i++)
        sink_submit(tu_batch(LLM, 1, tags[i]));
    ck_assert_uint_eq(sink_pending(), 5);
    ck_assert(run_until_delivered(5, 5000));
    th_counts c = th_counts_now(&srv);
    ck_assert_int_eq(c.nreqs, 5);
    ck_assert_int_eq(c.max_outstanding, 2);
    /* Each batch exactly once. */
    int seen[5] = {0};
    for (int i = 0; i < 5; i++) {
        const th_req *q = th_req_at(&srv, i);
        size_t k;
        char *plain = th_gunzip(q->body, q->body_len, &k);
        ck_assert_ptr_nonnull(plain);
        for (int j = 0; j < 5; j++) {
            char id[32];
            snprintf(id, sizeof(id), "\"%s-0000\"", tags[j]);
            seen[j] += strstr(plain, id) != NULL;
        }
        free(plain);
    }
    for (int j = 0; j < 5; j++)
        ck_assert_int_eq(seen[j], 1);
    drain(1000);
    finish();
}
END_TEST

/* 401, 403 and 404 are Tinybird refusing us, not the rows: the batches
 * are held, nothing is dropped or dead-lettered, one probe goes out per
 * backoff ceiling, and the hint says what was sent. Then the next answer
 * is a 200 and everything held is delivered. */
static const struct {
    int status;
    const char *state;
    const char *hint[3];
} holds[] = {
    {401, "unauthorized", {"refused the token sent for llm_events",
                           "(a token of 7 characters)", "DATASOURCE:APPEND on llm_events"}},
    {403, "unauthorized", {"refused the token sent for llm_events",
                           "(a token of 7 characters)", "DATASOURCE:APPEND on llm_events"}},
    {404, "not_found", {"datasource llm_events was not found at http://127.0.0.1:",
                        "tinybird/datasources/llm_events.datasource",
                        "another region host"}},
};

START_TEST(test_sink_http_refusal_holds)
{
    use_spool();
    sink_opts o = http_opts_for();
    th_resp r[2] = {{.status = holds[_i].status, .body = "{\"error\":\"no\"}"},
                    {.status = holds[_i].status, .body = "{\"error\":\"no\"}"}};
    th_script(&srv, r, 2);
    th_default(&srv, (th_resp){.status = 200, .body = "{}"});
    start(&o);
    ck_assert_str_eq(sink_state(), "ok");
    sink_submit(tu_batch(LLM, 3, "h1"));
    ck_assert(tu_run_until_u64(&loop, &stats.holds, 1, 3000));
    ck_assert_str_eq(sink_state(), holds[_i].state);
    const char *hint = sink_state_hint();
    ck_assert_ptr_nonnull(hint);
    for (int k = 0; k < 3; k++)
        ck_assert_msg(strstr(hint, holds[_i].hint[k]), "hint '%s' lacks '%s'", hint,
                      holds[_i].hint[k]);
    ck_assert_ptr_null(strstr(hint, "tok-123"));
    for (int i = 0; i < 3; i++) /* later batches wait with it */
        sink_submit(tu_batch(LLM, 2, "h2"));
    ck_assert(run_until_delivered(9, 5000));
    /* Three requests refused-refused-accepted for the first batch, alone,
     * at the ceiling (200 ms, no jitter), then the rest. */
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 6);
    check_body(2, 3, "h1");
    for (int i = 1; i < 3; i++) {
        uint64_t gap = th_req_at(&srv, i)->t_ms - th_req_at(&srv, i - 1)->t_ms;
        ck_assert_msg(gap >= 190, "probe %d after %llu ms", i, (unsigned long long)gap);
    }
    ck_assert_uint_eq(stats.holds, 2);
    ck_assert_uint_eq(stats.retries, 0);
    ck_assert_uint_eq(stats.dropped[DROP_http_rejected], 0);
    ck_assert_uint_eq(stats.rows_dead_lettered, 0);
    ck_assert_str_eq(sink_state(), "ok");
    ck_assert_ptr_null(sink_state_hint());
    if (saved_stderr >= 0) {
        char *log = tu_read_file(log_path, NULL);
        ck_assert_ptr_nonnull(log);
        ck_assert_msg(strstr(log, "event=sink_held dataset=llm_events sink_state=") &&
                          strstr(log, holds[_i].state) && strstr(log, "event=sink_resumed"),
                      "log: %s", log);
        ck_assert_ptr_null(strstr(log, "tok-123")); /* the token is never logged */
        free(log);
    }
    drain(1000);
    char path[256];
    snprintf(path, sizeof(path), "%s/dead-letter.ndjson", spool_dir);
    ck_assert_int_eq(tu_file_size(path), -1);
    finish();
}
END_TEST

/* Without a token the hint says none was sent. */
START_TEST(test_sink_http_refusal_hint_without_token)
{
    sink_opts o = http_opts_for();
    tb_o.token = NULL;
    th_default(&srv, (th_resp){.status = 401});
    start(&o);
    sink_submit(tu_batch(IMG, 1, "nt"));
    ck_assert(tu_run_until_u64(&loop, &stats.holds, 1, 3000));
    ck_assert_str_eq(sink_state(), "unauthorized");
    ck_assert_msg(strstr(sink_state_hint(), "no token was sent to http://127.0.0.1:") &&
                      strstr(sink_state_hint(), "for image_events"),
                  "%s", sink_state_hint());
    char auth[64];
    ck_assert(!th_header(th_req_at(&srv, 0), "Authorization", auth, sizeof(auth)));
    drain(200); /* held, no spool: counted at the deadline */
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 1);
    finish();
}
END_TEST

/* A new token (sink_reconfigure) is tried at once, not at the next probe,
 * and goes with every request from then on. */
START_TEST(test_sink_http_reconfigure_new_token)
{
    use_spool();
    sink_opts o = http_opts_for();
    o.backoff_max_ms = 60000; /* the next probe would be a minute away */
    th_resp r = {.status = 403};
    th_script(&srv, &r, 1);
    th_default(&srv, (th_resp){.status = 200, .body = "{}"});
    start(&o);
    sink_submit(tu_batch(LLM, 2, "rt"));
    ck_assert(tu_run_until_u64(&loop, &stats.holds, 1, 3000));
    sink_submit(tu_batch(IMG, 1, "ri")); /* the other dataset is not held */
    ck_assert(tu_run_until_u64(&loop, &stats.rows_delivered[IMG], 1, 3000));
    tu_run_for(&loop, 100);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 0);
    char err[256] = "";
    sink_opts fresh = o;
    sink_tinybird_opts fresh_tb = tb_o;
    fresh_tb.token = "tok-456";
    fresh.backend_opts = &fresh_tb;
    uint64_t t0 = tu_mono_ms();
    ck_assert_msg(sink_reconfigure(&fresh, err, sizeof(err)) == 0, "%s", err);
    ck_assert(run_until_delivered(3, 3000));
    ck_assert_uint_lt(tu_mono_ms() - t0, 2000);
    int n = th_counts_now(&srv).nreqs;
    ck_assert_header(th_req_at(&srv, 0), "Authorization", "Bearer tok-123");
    ck_assert_header(th_req_at(&srv, n - 1), "Authorization", "Bearer tok-456");
    ck_assert_str_eq(sink_state(), "ok");
    /* The backend and the spool change at a restart only. */
    sink_opts other = file_opts_for(out_path);
    ck_assert_int_eq(sink_reconfigure(&other, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "restart"), "%s", err);
    drain(1000);
    finish();
}
END_TEST

/* A probe still out with the old token when the new one comes is sent
 * again as soon as it is refused, not a backoff ceiling later. */
START_TEST(test_sink_http_reconfigure_while_probing)
{
    sink_opts o = http_opts_for();
    o.backoff_max_ms = 60000;
    th_resp r[2] = {{.status = 401}, {.status = 401, .delay_ms = 300}};
    th_script(&srv, r, 2);
    th_default(&srv, (th_resp){.status = 200, .body = "{}"});
    start(&o);
    sink_submit(tu_batch(LLM, 1, "wp"));
    ck_assert(tu_run_until_u64(&loop, &stats.holds, 1, 3000));
    char err[256] = "";
    /* A reload with the same (bad) token: probes at once, slowly refused. */
    ck_assert_int_eq(sink_reconfigure(&o, err, sizeof(err)), 0);
    ck_assert(th_run_until_reqs(&loop, &srv, 2, 3000));
    sink_tinybird_opts fresh_tb = tb_o;
    fresh_tb.token = "tok-789";
    sink_opts fresh = o;
    fresh.backend_opts = &fresh_tb;
    ck_assert_int_eq(sink_reconfigure(&fresh, err, sizeof(err)), 0);
    ck_assert(run_until_delivered(1, 3000));
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 3);
    ck_assert_header(th_req_at(&srv, 2), "Authorization", "Bearer tok-789");
    drain(1000);
    finish();
}
END_TEST

/* After a failure, one request at a time until one succeeds; then
 * max_inflight again. */
START_TEST(test_sink_http_probe_after_failure)
{
    sink_opts o = http_opts_for();
    o.max_inflight = 3;
    th_resp r = {.status = 503};
    th_script(&srv, &r, 1);
    th_default(&srv, (th_resp){.status = 200, .body = "{}", .delay_ms = 100});
    start(&o);
    sink_submit(tu_batch(LLM, 1, "a"));
    ck_assert(tu_run_until_u64(&loop, &stats.http[503], 1, 3000));
    for (int i = 0; i < 3; i++) /* they wait with it */
        sink_submit(tu_batch(LLM, 1, "b"));
    ck_assert(run_until_delivered(4, 5000));
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 5);
    const th_req *probe = th_req_at(&srv, 1);
    check_body(1, 1, "a"); /* the failed batch goes first, alone */
    for (int i = 2; i < 5; i++)
        ck_assert_uint_ge(th_req_at(&srv, i)->t_ms, probe->t_ms + 100);
    ck_assert_int_eq(th_counts_now(&srv).max_outstanding, 3);
    drain(1000);
    finish();
}
END_TEST

/* ---- memory cap and spool ---------------------------------------------- */

/* A batch closed while the account has no room left for the open
 * buffers' headroom goes to the spool; it is replayed once the sink is
 * healthy and memory under half the cap, and its segment deleted once
 * delivered. */
START_TEST(test_sink_memory_cap_spools)
{
    use_spool();
    sink_opts o = http_opts_for();
    batch_buf *a = tu_batch_closed(LLM, 3, "live");
    /* Room for a held and one open buffer of the same size, with half a
     * buffer to spare; the headroom is that one open buffer. */
    memory_set_cap(a->cap * 2 + a->cap / 2);
    memory_set_headroom(a->cap);
    start(&o);
    sink_submit(a);
    ck_assert_uint_eq(sink_pending(), 1);
    batch_buf *b = tu_batch_closed(LLM, 3, "spill"); /* room is now negative */
    ck_assert_int_lt(memory_room(), 0);
    sink_submit(b);
    ck_assert_uint_eq(sink_pending(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_spooled, 3, 3000));
    ck_assert_uint_eq(stats.rows_spooled, 3);
    ck_assert(run_until_delivered(6, 5000));
    ck_assert_uint_eq(stats.rows_replayed, 3);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 2);
    /* A cap of a few hundred bytes never holds igzip's state: sent plain. */
    check_body_plain(0, 3, "live");
    check_body_plain(1, 3, "spill");
    drain(2000); /* waits for the spool's writes: the segment's unlink */
    ck_assert_uint_eq(spool_segments(), 0);
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", spool_dir);
    ck_assert_int_eq(tu_file_size(seg), -1);
    finish();
}
END_TEST

/* A spool left by an earlier run is replayed at start and emptied. */
START_TEST(test_sink_replays_spool_at_start)
{
    /* The earlier run: two batches spooled, the spool closed. */
    batch_buf *old[2] = {tu_batch(LLM, 2, "old1"), tu_batch(IMG, 1, "old2")};
    seed_spool(old, 2);
    ck_assert_uint_eq(spool_rows_on_disk(), 3);
    /* This run. */
    memset(&stats, 0, sizeof(stats));
    sink_opts o = http_opts_for();
    start(&o);
    ck_assert_uint_eq(spool_rows_unread(), 3);
    ck_assert(run_until_delivered(3, 3000));
    ck_assert_uint_eq(stats.rows_replayed, 3);
    ck_assert_uint_eq(stats.rows_delivered[LLM], 2);
    ck_assert_uint_eq(stats.rows_delivered[IMG], 1);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 2);
    for (int i = 0; i < 2; i++) {
        if (strstr(th_req_at(&srv, i)->target, "name=llm_events"))
            check_body(i, 2, "old1");
        else
            check_body(i, 1, "old2");
    }
    drain(2000);
    ck_assert_uint_eq(spool_segments(), 0);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", spool_dir);
    ck_assert_int_eq(tu_file_size(seg), -1);
    finish();
}
END_TEST

/* Issue 11, finding 5: a spool record with no payload and a row count of
 * 5, answered 413, was split: memchr from the middle of nothing read
 * before the buffer (ASan: heap-buffer-overflow). Such a record is now
 * skipped when read back (spool_corrupt), and a split never takes a batch
 * of fewer than two lines; the good record after it is split and
 * delivered. */
START_TEST(test_sink_spool_empty_record_413)
{
    unsigned char buf[4096];
    size_t off = 0, len;
    const char *rows = rows_of(2, "good", &len);
    char good[1024];
    memcpy(good, rows, len);
    off += tu_spool_record(buf + off, LLM, 5, "", 0);
    off += tu_spool_record(buf + off, LLM, 2, good, len);
    use_spool();
    ck_assert_int_eq(mkdir(spool_dir, 0700), 0);
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", spool_dir);
    tu_write_file(seg, (const char *)buf, off);
    sink_opts o = http_opts_for();
    o.max_inflight = 1;
    th_resp r = {.status = 413};
    th_script(&srv, &r, 1);
    start(&o);
    ck_assert(run_until_delivered(2, 3000));
    tu_run_for(&loop, 50);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 3); /* 2 rows, 413, then 1 + 1 */
    ck_assert_uint_eq(stats.http[413], 1);
    ck_assert_uint_eq(stats.dropped[DROP_too_large], 0);
    drain(2000);
    ck_assert_uint_eq(spool_segments(), 0);
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_msg(strstr(log, "event=spool_corrupt") && strstr(log, "why=\"no rows\""),
                  "log: %s", log);
    free(log);
}
END_TEST

/* A replayed batch in flight when the deadline passes is let go, not
 * spooled again and not dropped: its rows stay in the spool, and a
 * restarted daemon finds every row. */
START_TEST(test_sink_drain_keeps_replayed_in_spool)
{
    batch_buf *old[2] = {tu_batch(LLM, 2, "k1"), tu_batch(LLM, 3, "k2")};
    seed_spool(old, 2);
    sink_opts o = http_opts_for();
    th_default(&srv, (th_resp){.never = 1});
    start(&o);
    ck_assert(th_run_until_reqs(&loop, &srv, 2, 3000)); /* both replayed, hung */
    ck_assert_uint_eq(stats.rows_replayed, 5);
    sink_submit(tu_batch(IMG, 1, "live"));
    drain(200);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    ck_assert_uint_eq(stats.rows_spooled, 5 + 1); /* again: the live one only */
    finish();
    /* The next run finds all six rows. */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_uint_eq(spool_rows_on_disk(), 6);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* ---- drain ------------------------------------------------------------- */

/* What is queued and in flight is delivered; done runs after it. */
START_TEST(test_sink_drain_delivers)
{
    sink_opts o = http_opts_for();
    th_default(&srv, (th_resp){.status = 200, .body = "{}", .delay_ms = 100});
    start(&o);
    for (int i = 0; i < 3; i++)
        sink_submit(tu_batch(i == 1 ? IMG : LLM, 2, "dr"));
    uint64_t t0 = tu_mono_ms();
    drain(3000);
    ck_assert_uint_eq(delivered_at_done, 6);
    ck_assert_uint_lt(drained_at_ms - t0, 2000); /* not the deadline */
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    finish();
}
END_TEST

/* A drain cuts a long backoff short: the batch goes out at once, and a
 * failure during the drain waits 100 ms, not the backoff. */
START_TEST(test_sink_drain_cuts_backoff)
{
    sink_opts o = http_opts_for();
    o.backoff_min_ms = 5000;
    o.backoff_max_ms = 10000;
    th_resp r[2] = {{.status = 503}, {.status = 503}};
    th_script(&srv, r, 2);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "cb"));
    ck_assert(tu_run_until_u64(&loop, &stats.http[503], 1, 3000));
    uint64_t t0 = tu_mono_ms();
    drain(4000);
    ck_assert_uint_eq(delivered_at_done, 2);
    ck_assert_uint_lt(drained_at_ms - t0, 1000);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 3);
    ck_assert_uint_lt(th_req_at(&srv, 1)->t_ms - t0, 100); /* at once */
    uint64_t gap = th_req_at(&srv, 2)->t_ms - th_req_at(&srv, 1)->t_ms;
    ck_assert_msg(gap >= 95 && gap < 600, "resent after %llu ms", (unsigned long long)gap);
    ck_assert_uint_eq(stats.retries, 2);
    finish();
}
END_TEST

/* Server down (connection refused) until the deadline: everything is
 * spooled, nothing dropped, done runs once the spool's writes are done. */
START_TEST(test_sink_drain_refused_spools)
{
    use_spool();
    int fd;
    int port = th_refusing_port(&fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    sink_opts o = tb_opts_for(url);
    start(&o);
    sink_submit(tu_batch(LLM, 2, "r1"));
    sink_submit(tu_batch(IMG, 3, "r2"));
    sink_submit(tu_batch(LLM, 1, "r3"));
    uint64_t t0 = tu_mono_ms();
    drain(300);
    ck_assert_uint_ge(drained_at_ms - t0, 290);
    ck_assert_uint_eq(stats.rows_spooled, 6); /* on disk before done */
    ck_assert_uint_eq(spool_rows_unread(), 6);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    ck_assert_uint_eq(delivered(), 0);
    ck_assert_uint_gt(stats.http[0], 2); /* it kept trying, 100 ms apart at most */
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", spool_dir);
    ck_assert_int_gt(tu_file_size(seg), 0);
    close(fd);
    finish();
}
END_TEST

/* A server that never answers: the requests in flight at the deadline are
 * aborted and their batches spooled. */
START_TEST(test_sink_drain_hung_spools)
{
    use_spool();
    sink_opts o = http_opts_for();
    th_default(&srv, (th_resp){.never = 1});
    start(&o);
    sink_submit(tu_batch(LLM, 2, "h1"));
    sink_submit(tu_batch(IMG, 4, "h2"));
    ck_assert(th_run_until_reqs(&loop, &srv, 2, 3000));
    ck_assert_uint_eq(sink_pending(), 2);
    uint64_t t0 = tu_mono_ms();
    drain(200);
    ck_assert_uint_ge(drained_at_ms - t0, 190);
    ck_assert_uint_eq(stats.rows_spooled, 6);
    ck_assert_uint_eq(spool_rows_unread(), 6);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 0);
    ck_assert_uint_eq(stats.http[0], 2); /* the two aborted */
    finish();
}
END_TEST

/* Without a spool, what the deadline catches is counted as dropped.shutdown. */
START_TEST(test_sink_drain_no_spool_drops)
{
    sink_opts o = http_opts_for();
    th_default(&srv, (th_resp){.never = 1});
    start(&o);
    sink_submit(tu_batch(LLM, 2, "n1"));
    sink_submit(tu_batch(LLM, 5, "n2"));
    ck_assert(th_run_until_reqs(&loop, &srv, 2, 3000));
    drain(100);
    ck_assert_uint_eq(stats.dropped[DROP_shutdown], 7);
    ck_assert_uint_eq(stats.rows_spooled, 0);
    finish();
}
END_TEST

Suite *sink_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("sink", sink_setup, sink_teardown, &tc);
    tcase_add_test(tc, test_sink_policy_done_counts_backend_rows);
    tcase_add_test(tc, test_sink_policy_failing_since_first_retry);
    tcase_add_test(tc, test_sink_policy_submit_failure_retried);
    tcase_add_test(tc, test_sink_policy_retry_waits_as_asked);
    tcase_add_test(tc, test_sink_policy_retry_wait_capped);
    tcase_add_test(tc, test_sink_policy_reject_counts_backend_reason);
    tcase_add_test(tc, test_sink_policy_too_large_forgets_then_splits);
    tcase_add_test(tc, test_sink_policy_backend_limit_oldest_first);
    tcase_add_test(tc, test_sink_policy_abort_spools_in_progress);
    tcase_add_test(tc, test_sink_policy_reconfigure_without_backend_hook);
    tcase_add_test(tc, test_sink_policy_hold_keeps_and_spools_at_drain);
    tcase_add_test(tc, test_sink_policy_paces_from_budget);
    tcase_add_test(tc, test_sink_policy_pacing_off);
    tcase_add_test(tc, test_sink_file_in_order);
    tcase_add_test(tc, test_sink_file_oldest_first_across_datasets);
    tcase_add_test(tc, test_sink_file_drain_empty);
    tcase_add_test(tc, test_sink_file_open_error);
    tcase_add_test(tc, test_sink_file_out_symlink_refused);
    tcase_add_test(tc, test_sink_file_write_error);
    tcase_add_test(tc, test_sink_http_200_counts);
    tcase_add_test(tc, test_sink_http_per_dataset);
    tcase_add_loop_test(tc, test_sink_http_transient_retried, 0, N(transient));
    tcase_add_test(tc, test_sink_http_429_retry_after);
    tcase_add_test(tc, test_sink_http_429_ratelimit_reset);
    tcase_add_test(tc, test_sink_http_ratelimit_headers_pace);
    tcase_add_loop_test(tc, test_sink_http_4xx_not_retried, 0, N(rejects));
    tcase_add_test(tc, test_sink_http_400_dead_letter);
    tcase_add_test(tc, test_sink_http_413_split);
    tcase_add_test(tc, test_sink_http_413_split_again);
    tcase_add_test(tc, test_sink_http_413_split_nearest_middle);
    tcase_add_test(tc, test_sink_http_413_single_row);
    tcase_add_test(tc, test_sink_http_max_inflight);
    tcase_add_test(tc, test_sink_http_probe_after_failure);
    tcase_add_loop_test(tc, test_sink_http_refusal_holds, 0, N(holds));
    tcase_add_test(tc, test_sink_http_refusal_hint_without_token);
    tcase_add_test(tc, test_sink_http_reconfigure_new_token);
    tcase_add_test(tc, test_sink_http_reconfigure_while_probing);
    tcase_add_test(tc, test_sink_memory_cap_spools);
    tcase_add_test(tc, test_sink_replays_spool_at_start);
    tcase_add_test(tc, test_sink_spool_empty_record_413);
    tcase_add_test(tc, test_sink_drain_keeps_replayed_in_spool);
    tcase_add_test(tc, test_sink_drain_delivers);
    tcase_add_test(tc, test_sink_drain_cuts_backoff);
    tcase_add_test(tc, test_sink_drain_refused_spools);
    tcase_add_test(tc, test_sink_drain_hung_spools);
    tcase_add_test(tc, test_sink_drain_no_spool_drops);
    return s;
}
