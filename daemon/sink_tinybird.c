/* sink_tinybird.c: gzip, POST and classify. See sink_tinybird.h. */
#include "sink_tinybird.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "compress.h"
#include "http.h"
#include "log.h"
#include "memory.h"

/* What the backend keeps in job->priv: the work request while compressing,
 * then the compressed body for every attempt. */
typedef struct tb_body {
    uv_work_t work;
    sink_job *job;
    gz_body gz;            /* data NULL: not compressed (yet, or gzip failed) */
    int gz_rc;             /* gz_run's result */
} tb_body;

static struct {
    uv_loop_t *loop;
    char base[256];                /* the API base URL: the region host */
    char url[BF_DATASET_MAX][512];
    size_t token_len;              /* of the token sent; 0: none */
    int aborting;
} tb;

static log_limit gzip_limit, reject_limit, quarantine_limit;

/* Threadpool: gzip the batch (compress.h: igzip level 1; on a loaded
 * 2-core host the CPU matters more than the last 10% of size). */
static void compress_work(uv_work_t *w)
{
    tb_body *t = w->data;
    /* Receiving comes first: a worker that shares a core with the loop
     * thread must not halve its share and let the socket buffer overflow.
     * At nice 10 the loop keeps ~90% of a contended core; gzip catches up
     * when it is idle. (Linux nice is per thread.) */
    static __thread int niced;
    if (!niced) {
        niced = 1;
        setpriority(PRIO_PROCESS, 0, 10);
    }
    t->gz_rc = gz_run(&t->gz, t->job->b->data, t->job->b->len);
}

static void on_posted(const http_result *res, void *arg);

/* POST the job's body: gzip when there is one, else the plain rows. */
static int post(sink_job *j)
{
    tb_body *t = j->priv;
    const char *body = t->gz.data ? (const char *)t->gz.data : j->b->data;
    size_t len = t->gz.data ? t->gz.len : j->b->len;
    int rc = http_post(tb.url[j->b->dataset], body, len, t->gz.data ? "gzip" : NULL,
                       on_posted, j);
    if (rc < 0) {
        stats.http[0]++; /* no response: counted as a transport error */
        return rc;
    }
    stats.bytes_sent += len;
    return 0;
}

static void answer_retry(sink_job *j, const char *why)
{
    sink_answer a = {.cls = SINK_RETRY, .wait_ms = -1, .detail = why};
    sink_job_done(j, &a);
}

static void compress_done(uv_work_t *w, int status)
{
    tb_body *t = w->data;
    sink_job *j = t->job;
    (void)status;
    if (t->gz_rc < 0) /* the plain body is still valid, only larger */
        log_limited(&gzip_limit, LOG_WARN, "gzip_failed",
                    "dataset=%s bytes=%zu error=\"%s\" note=\"sending uncompressed\"",
                    bf_dataset_name(j->b->dataset), j->b->len, strerror(-t->gz_rc));
    if (tb.aborting) { /* the deadline passed while it was compressing */
        answer_retry(j, "aborted");
        return;
    }
    int rc = post(j);
    if (rc < 0)
        answer_retry(j, "could not start request");
}

static int tb_submit(sink_job *j)
{
    tb_body *t = j->priv;
    if (t)
        return post(j); /* a retry: compressed already (or sent plain) */
    if (!(t = calloc(1, sizeof(*t))))
        return -ENOMEM;
    /* The compressor's memory is reserved before any work is queued: when
     * the account refuses, the policy waits for room (sink_backend.h). */
    int rc = gz_begin(&t->gz, j->b->len);
    if (rc == -ENOMEM) {
        free(t);
        return -ENOMEM;
    }
    t->job = j;
    j->priv = t;
    t->work.data = t;
    if (rc < 0) { /* a cap too small for the compressor: plain rows */
        log_limited(&gzip_limit, LOG_WARN, "gzip_skipped",
                    "dataset=%s bytes=%zu note=\"--max-memory too small for the "
                    "compressor; sending uncompressed\"", bf_dataset_name(j->b->dataset),
                    j->b->len);
        return post(j);
    }
    if (uv_queue_work(tb.loop, &t->work, compress_work, compress_done) < 0) {
        gz_free(&t->gz);
        return post(j);
    }
    return 0;
}

static void tb_forget(sink_job *j)
{
    tb_body *t = j->priv;
    gz_free(&t->gz);
    free(t);
    j->priv = NULL;
}

/* successful_rows and quarantined_rows from a 2xx body; every row counts
 * as delivered when the body does not say. */
static void parse_counts(const http_result *res, sink_job *j, sink_answer *a)
{
    a->rows_ok = j->b->rows;
    json_t *doc = json_loadb(res->body, res->body_len, 0, NULL);
    if (!doc)
        return;
    json_t *s = json_object_get(doc, "successful_rows");
    json_t *q = json_object_get(doc, "quarantined_rows");
    if (json_is_integer(s))
        a->rows_ok = (uint64_t)json_integer_value(s);
    if (json_is_integer(q))
        a->rows_quarantined = (uint64_t)json_integer_value(q);
    json_decref(doc);
    if (a->rows_quarantined) {
        const char *ds = bf_dataset_name(j->b->dataset);
        log_limited(&quarantine_limit, LOG_WARN, "rows_quarantined",
                    "dataset=%s rows=%llu hint=\"the datasource schema and "
                    "birdfeederd disagree; see %s_quarantine\"",
                    ds, (unsigned long long)a->rows_quarantined, ds);
    }
}

/* What a person reads when Tinybird refuses us: what was sent (a token or
 * none, its length, never itself; which host; which datasource) and what to
 * check. */
static const char *hold_hint(char *out, size_t n, long status, const char *ds)
{
    if (status == 404)
        snprintf(out, n, "datasource %s was not found at %s: push "
                         "tinybird/datasources/%s.datasource to the workspace, or, if it "
                         "is there, the workspace is on another region host "
                         "(TINYBIRD_API_URL)", ds, tb.base, ds);
    else if (tb.token_len)
        snprintf(out, n, "%s refused the token sent for %s (a token of %zu characters): "
                         "it is wrong, expired, of another workspace or region, or lacks "
                         "DATASOURCE:APPEND on %s", tb.base, ds, tb.token_len, ds);
    else
        snprintf(out, n, "no token was sent to %s for %s: set TINYBIRD_API_KEY", tb.base,
                 ds);
    return out;
}

static void on_posted(const http_result *res, void *arg)
{
    sink_job *j = arg;
    long st = res->status;
    stats.http[st > 0 && st < STATS_HTTP_CODES ? st : 0]++;
    sink_answer a = {.status = st, .wait_ms = -1, .detail = res->error};

    if (st >= 200 && st < 300) {
        a.cls = SINK_DONE;
        parse_counts(res, j, &a);
    } else if (st == 413) {
        a.cls = SINK_TOO_LARGE;
    } else if (st == 429 || st == 408 || st >= 500 || st == 0) {
        a.cls = SINK_RETRY;
        a.throttled = st == 429;
        if (st == 429 && res->retry_after_s >= 0)
            a.wait_ms = res->retry_after_s * 1000;
        else if (st == 429 && res->ratelimit_reset_s >= 0)
            a.wait_ms = res->ratelimit_reset_s * 1000;
    } else if (st == 401 || st == 403 || st == 404) {
        /* Tinybird refuses us, not the rows: the batch is held. */
        char hint[768];
        a.cls = SINK_HOLD;
        a.hold = st == 404 ? SINK_HOLD_NOT_FOUND : SINK_HOLD_UNAUTHORIZED;
        a.hint = hold_hint(hint, sizeof(hint), st, bf_dataset_name(j->b->dataset));
        a.detail = res->body;
        sink_job_done(j, &a);
        return;
    } else {
        char body[256];
        log_quote(body, sizeof(body), res->body, 200);
        log_limited(&reject_limit, LOG_ERROR, "send_rejected",
                    "dataset=%s status=%ld rows=%llu hint=\"the rows were refused\" "
                    "body=%s",
                    bf_dataset_name(j->b->dataset), st, (unsigned long long)j->b->rows,
                    body);
        a.cls = SINK_REJECT;
        a.drop = DROP_http_rejected;
        a.detail = res->body;
    }
    if (res->ratelimit_limit > 0 && res->ratelimit_remaining >= 0)
        a.budget = (sink_budget){
            .limit = (uint64_t)res->ratelimit_limit,
            .remaining = (uint64_t)res->ratelimit_remaining,
            .reset_ms = res->ratelimit_reset_s > 0 ? (uint64_t)res->ratelimit_reset_s * 1000 : 0};
    sink_job_done(j, &a);
}

static http_opts http_options(const sink_tinybird_opts *o)
{
    return (http_opts){.token = o->token, .timeout_ms = o->timeout_ms,
                       .connect_timeout_ms = o->timeout_ms < 5000 ? o->timeout_ms : 5000};
}

/* The URLs and what the hints say, from o. */
static int set_target(const sink_tinybird_opts *o, char *err, size_t n)
{
    if (strlen(o->url) >= sizeof(tb.base)) {
        snprintf(err, n, "tinybird url longer than %zu bytes", sizeof(tb.base) - 1);
        return -EINVAL;
    }
    snprintf(tb.base, sizeof(tb.base), "%s", o->url);
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        snprintf(tb.url[id], sizeof(tb.url[id]), "%s/v0/events?name=%s&wait=true",
                 tb.base, bf_dataset_name(id));
    tb.token_len = o->token ? strlen(o->token) : 0;
    return 0;
}

static int tb_start(uv_loop_t *loop, const void *opts, char *err, size_t n)
{
    memset(&tb, 0, sizeof(tb));
    tb.loop = loop;
    int rc = set_target(opts, err, n);
    if (rc < 0)
        return rc;
    http_opts ho = http_options(opts);
    return http_init(loop, &ho, err, n);
}

/* A reload: a new token or region host for the batches sent from now on
 * (a URL is copied by curl when a request starts). */
static int tb_reconfigure(const void *opts, char *err, size_t n)
{
    http_opts ho = http_options(opts);
    int rc = http_reconfigure(&ho, err, n);
    return rc < 0 ? rc : set_target(opts, err, n);
}

static void tb_abort(void)
{
    tb.aborting = 1;
    http_abort_all(); /* each answers now, through on_posted */
}

static void tb_close(void)
{
    http_close();
}

const sink_backend sink_tinybird = {
    .name = "tinybird",
    .max_inflight = 0,
    .start = tb_start,
    .submit = tb_submit,
    .forget = tb_forget,
    .abort = tb_abort,
    .close = tb_close,
    .reconfigure = tb_reconfigure,
};
