/* sink_kafka.c: one message per row through librdkafka. See sink_kafka.h. */
#include "sink_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "memory.h"

/* What librdkafka holds for one message beyond the payload we lend it: its
 * message struct with the key, and the copy of the payload into a produce
 * request (rows are far below msg.copy.max.size), counted in memory.h from
 * produce to report. An upper estimate: the copy exists only while the
 * message is in a request, so while brokers are away the account counts
 * more than is held and the spool takes new batches sooner, the safe side
 * of a memory bound. */
#define KF_MSG_OVERHEAD 256

enum row_state { ROW_TODO, ROW_SENT, ROW_DONE, ROW_REFUSED };

/* job->priv: where each row starts and what became of it. */
typedef struct kf_job {
    sink_job *job;
    uint32_t *off;         /* rows + 1 offsets into job->b->data */
    uint8_t *st;           /* enum row_state, per row */
    uint64_t rows;
    uint64_t outstanding;  /* produced, report not yet in */
    int producing;         /* submit's loop runs: no answer yet */
    int err;               /* the last error seen (rd_kafka_resp_err_t) */
    int held;              /* 0, or 1 + sink_hold: a row's report said the
                              destination refuses the sender */
    size_t acct;           /* bytes of off and st, in memory.h */
    struct kf_job *next;   /* on kf.ready */
} kf_job;

static struct {
    uv_loop_t *loop;
    /* Made once at start from the options (which are borrowed only during
     * start): a new producer after a fatal error starts from a copy. */
    rd_kafka_conf_t *conf;
    char topic_name[BF_DATASET_MAX][256];
    char brokers[512];     /* for hints */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    rd_kafka_topic_t *topic[BF_DATASET_MAX];
    int pipe[2];
    uv_poll_t poll;
    int poll_on;
    uv_timer_t later;      /* answers for attempts that produced nothing */
    int later_on;
    kf_job *ready;
    uint64_t outstanding;  /* across jobs */
    int fatal;             /* the producer must be made anew */
} kf = {.pipe = {-1, -1}};

static log_limit kafka_log_limit, error_limit, refuse_limit, produce_limit;

/* ---- rows ---- */

size_t sink_kafka_row_key(const char *row, size_t len, const char **key)
{
    static const char lead[] = "{\"id\":\"";
    size_t ll = sizeof(lead) - 1;
    if (len <= ll || memcmp(row, lead, ll) != 0)
        return 0;
    for (size_t i = ll; i < len; i++) {
        if (row[i] == '\\')
            i++;
        else if (row[i] == '"') {
            *key = row + ll;
            return i - ll;
        }
    }
    return 0;
}

/* What one message holds in librdkafka, in memory.h's account. */
static uint64_t msg_bytes(size_t len, size_t key_len)
{
    return (uint64_t)len + key_len + KF_MSG_OVERHEAD;
}

/* Row offsets and states for j->b, reserved first; NULL when memory.h
 * refused them or the allocation failed (nothing held then). */
static kf_job *kf_job_new(sink_job *j)
{
    const batch_buf *b = j->b;
    uint64_t rows = 0;
    for (const char *p = b->data, *end = b->data + b->len;
         (p = memchr(p, '\n', (size_t)(end - p))); p++)
        rows++;
    size_t acct = sizeof(kf_job) + (rows + 1) * sizeof(uint32_t) + rows;
    if (memory_reserve(acct) < 0)
        return NULL;
    kf_job *k = calloc(1, sizeof(*k));
    if (k) {
        k->off = malloc((rows + 1) * sizeof(*k->off));
        k->st = calloc(rows ? rows : 1, 1);
    }
    if (!k || !k->off || !k->st) {
        if (k) {
            free(k->off);
            free(k->st);
        }
        free(k);
        memory_release(acct);
        return NULL;
    }
    uint64_t r = 0;
    k->off[0] = 0;
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] == '\n')
            k->off[++r] = (uint32_t)(i + 1);
    k->rows = rows;
    k->job = j;
    k->acct = acct;
    return k;
}

/* The row a delivery report's payload starts, by its offset. */
static uint64_t row_of(const kf_job *k, const void *payload)
{
    uint32_t at = (uint32_t)((const char *)payload - k->job->b->data);
    uint64_t lo = 0, hi = k->rows;
    while (hi - lo > 1) {
        uint64_t mid = (lo + hi) / 2;
        if (k->off[mid] <= at)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- answers ---- */

/* What a failed row means: refused for good (counted and dropped), the
 * sender refused (a hold: a person has to fix the credentials or create the
 * topic; the rows wait), or try again. */
enum fate { FATE_RETRY, FATE_REFUSED, FATE_HOLD_NOT_FOUND, FATE_HOLD_UNAUTHORIZED };

static enum fate fate_of(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return FATE_HOLD_NOT_FOUND;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
        return FATE_HOLD_UNAUTHORIZED;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return FATE_REFUSED;
    default:
        return FATE_RETRY;
    }
}

/* Mark row r of k failed with err; a refusal is counted and logged. */
static void row_failed(kf_job *k, uint64_t r, rd_kafka_resp_err_t err, const char *topic)
{
    stats.kafka_delivery_errors++;
    k->err = err;
    enum fate f = fate_of(err);
    k->st[r] = f == FATE_REFUSED ? ROW_REFUSED : ROW_TODO;
    if (f == FATE_HOLD_NOT_FOUND)
        k->held = 1 + SINK_HOLD_NOT_FOUND;
    else if (f == FATE_HOLD_UNAUTHORIZED && !k->held)
        k->held = 1 + SINK_HOLD_UNAUTHORIZED;
    if (f == FATE_REFUSED)
        log_limited(&refuse_limit, LOG_ERROR, "kafka_refused",
                    "topic=%s error=\"%s\" hint=\"a row is larger than the topic's "
                    "max.message.bytes, or the broker's policy refuses it\"",
                    topic, rd_kafka_err2str(err));
}

/* Every report of the attempt is in: answer j. */
static void answer(kf_job *k)
{
    uint64_t todo = 0, done = 0, refused = 0;
    for (uint64_t r = 0; r < k->rows; r++) {
        todo += k->st[r] == ROW_TODO;
        done += k->st[r] == ROW_DONE;
        refused += k->st[r] == ROW_REFUSED;
    }
    sink_answer a = {.status = k->err, .wait_ms = -1, .drop = DROP_kafka_rejected,
                     .detail = k->err ? rd_kafka_err2str(k->err) : NULL};
    static char hint[1024]; /* valid during sink_job_done */
    if (todo && k->held) {
        a.cls = SINK_HOLD;
        a.hold = (sink_hold)(k->held - 1);
        const batch_buf *b = k->job->b;
        snprintf(hint, sizeof(hint), "topic %s at brokers %s: %s",
                 kf.topic_name[b->dataset], kf.brokers,
                 a.hold == SINK_HOLD_NOT_FOUND
                     ? "the topic does not exist; create it (or fix --kafka-topic-prefix)"
                     : "the cluster refuses the producer; check sasl.username and "
                       "--kafka-password-file, and that the user has WRITE and "
                       "IDEMPOTENT_WRITE on the topic");
        a.hint = hint;
    } else if (todo) {
        a.cls = SINK_RETRY;
    } else if (refused && !done) {
        a.cls = SINK_REJECT;
    } else {
        a.cls = SINK_DONE;
        a.rows_ok = done;
        a.rows_dropped = refused;
    }
    sink_job_done(k->job, &a); /* k may be freed from here on */
}

static void on_later(uv_timer_t *t)
{
    (void)t;
    while (kf.ready) {
        kf_job *k = kf.ready;
        kf.ready = k->next;
        k->next = NULL;
        answer(k);
    }
}

/* The delivery report of one message, on the loop thread (rd_kafka_poll). */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    kf_job *k = m->_private;
    memory_release(msg_bytes(m->len, m->key_len));
    kf.outstanding--;
    k->outstanding--;
    uint64_t r = row_of(k, m->payload);
    if (!m->err)
        k->st[r] = ROW_DONE;
    else
        row_failed(k, r, m->err, m->rkt ? rd_kafka_topic_name(m->rkt) : "-");
    if (!k->outstanding && !k->producing)
        answer(k);
}

/* ---- librdkafka's own events ---- */

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    char msg[512];
    log_quote(msg, sizeof(msg), buf, 400);
    /* syslog levels: 0-3 errors, 4 warnings, 5-6 notices, 7 debug. */
    enum log_level lv = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN
                        : level <= 6 ? LOG_INFO : LOG_DEBUG;
    log_limited(&kafka_log_limit, lv, "kafka_log", "facility=%s msg=%s", fac, msg);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    char why[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        log_quote(why, sizeof(why), fatal, 240);
        log_error("kafka_fatal", "error=\"%s\" reason=%s note=\"the producer is made "
                                 "anew once its messages are reported\"",
                  rd_kafka_err2str(orig), why);
        kf.fatal = 1;
        return;
    }
    log_quote(why, sizeof(why), reason, 400);
    log_limited(&error_limit, LOG_WARN, "kafka_error", "error=\"%s\" reason=%s",
                rd_kafka_err2str(err), why);
}

static void serve(void)
{
    while (kf.rk && rd_kafka_poll(kf.rk, 0) > 0)
        ;
}

static void on_pipe(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)status;
    (void)events;
    char buf[64];
    while (read(kf.pipe[0], buf, sizeof(buf)) > 0)
        ;
    serve();
}

/* ---- the producer ---- */

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, char *err, size_t n)
{
    char e[256];
    if (rd_kafka_conf_set(c, k, v, e, sizeof(e)) == RD_KAFKA_CONF_OK)
        return 0;
    snprintf(err, n, "kafka setting %s: %s", k, e);
    return -EINVAL;
}

static void topics_destroy(void)
{
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        if (kf.topic[id]) {
            rd_kafka_topic_destroy(kf.topic[id]);
            kf.topic[id] = NULL;
        }
}

static void producer_destroy(void)
{
    topics_destroy();
    if (kf.mainq) {
        rd_kafka_queue_destroy(kf.mainq);
        kf.mainq = NULL;
    }
    if (kf.rk) {
        rd_kafka_destroy(kf.rk);
        kf.rk = NULL;
    }
}

/* The producer's configuration from o, into kf.conf (a template). */
static int conf_make(const sink_kafka_opts *o, char *err, size_t n)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char kb[32];
    /* librdkafka's queue holds (by reference) batches the policy already
     * counts against --max-memory; it can never need more than the cap. */
    snprintf(kb, sizeof(kb), "%llu",
             (unsigned long long)(o->max_memory ? (o->max_memory + 1023) / 1024 : 1048576));
    int rc = 0;
    const char *const fixed[][2] = {
        {"bootstrap.servers", o->brokers},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"compression.codec", o->compression},
        {"queue.buffering.max.kbytes", kb},
        {"queue.buffering.max.messages", "0"},
        {"log.queue", "true"},
        /* Java's partitioner: the same id lands where a Java producer's
         * would, run after run. */
        {"partitioner", "murmur2_random"},
        /* Defaults --kafka-property may change: a report within 30 s, so
         * an outage comes back to the policy as a retry. */
        {"message.timeout.ms", "30000"},
        {"client.id", "birdfeederd"},
    };
    for (size_t i = 0; rc == 0 && i < sizeof(fixed) / sizeof(fixed[0]); i++)
        rc = conf_set(c, fixed[i][0], fixed[i][1], err, n);
    for (size_t i = 0; rc == 0 && i < o->n_properties; i++) {
        const char *kv = o->properties[i], *eq = strchr(kv, '=');
        char key[256];
        snprintf(key, sizeof(key), "%.*s", eq ? (int)(eq - kv) : 0, kv);
        rc = eq ? conf_set(c, key, eq + 1, err, n) : -EINVAL;
    }
    if (rc == 0 && o->password)
        rc = conf_set(c, "sasl.password", o->password, err, n);
    if (rc < 0) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_conf_set_log_cb(c, on_log);
    rd_kafka_conf_set_error_cb(c, on_error);
    kf.conf = c;
    return 0;
}

static int producer_new(char *err, size_t n)
{
    rd_kafka_conf_t *c = rd_kafka_conf_dup(kf.conf);
    char e[512];
    kf.rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
    if (!kf.rk) {
        rd_kafka_conf_destroy(c);
        snprintf(err, n, "kafka producer: %s", e);
        return -EINVAL;
    }
    kf.fatal = 0;
    rd_kafka_set_log_queue(kf.rk, NULL); /* log lines to the main queue */
    kf.mainq = rd_kafka_queue_get_main(kf.rk);
    rd_kafka_queue_io_event_enable(kf.mainq, kf.pipe[1], "1", 1);
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        if (!(kf.topic[id] = rd_kafka_topic_new(kf.rk, kf.topic_name[id], NULL))) {
            snprintf(err, n, "kafka topic %s: %s", kf.topic_name[id],
                     rd_kafka_err2str(rd_kafka_last_error()));
            return -EINVAL;
        }
    return 0;
}

/* After a fatal error, and once nothing is outstanding: a new producer. */
static int producer_renew(void)
{
    if (!kf.fatal || kf.outstanding)
        return kf.fatal ? -EIO : 0;
    char err[256];
    producer_destroy(); /* nothing outstanding: no report is lost */
    int rc = producer_new(err, sizeof(err));
    if (rc < 0) {
        log_limited(&produce_limit, LOG_ERROR, "kafka_renew_failed", "error=\"%s\"", err);
        producer_destroy();
        kf.fatal = 1;
        return rc;
    }
    log_info("kafka_renewed", "note=\"new idempotent producer after a fatal error\"");
    return 0;
}

/* ---- the backend ---- */

static int kf_submit(sink_job *j)
{
    int rc = producer_renew();
    if (rc < 0)
        return rc;
    kf_job *k = j->priv;
    if (!k) {
        if (!(k = kf_job_new(j)))
            return -ENOMEM;
        j->priv = k;
    }
    const batch_buf *b = j->b;
    rd_kafka_topic_t *t = kf.topic[b->dataset];
    /* What librdkafka will hold for the rows still to send, reserved at
     * once: refused, nothing is produced and the policy waits for room. */
    uint64_t need = 0;
    for (uint64_t r = 0; r < k->rows; r++)
        if (k->st[r] == ROW_TODO) {
            const char *key = NULL;
            size_t len = k->off[r + 1] - k->off[r] - 1;
            need += msg_bytes(len, sink_kafka_row_key(b->data + k->off[r], len, &key));
        }
    if (need && memory_reserve(need) < 0)
        return -ENOMEM;
    uint64_t produced = 0;
    rd_kafka_resp_err_t stop = RD_KAFKA_RESP_ERR_NO_ERROR;
    k->producing = 1;
    k->err = 0;
    k->held = 0;
    for (uint64_t r = 0; r < k->rows && !stop; r++) {
        if (k->st[r] != ROW_TODO)
            continue;
        char *row = b->data + k->off[r];
        size_t len = k->off[r + 1] - k->off[r] - 1; /* without its newline */
        const char *key = NULL;
        size_t key_len = sink_kafka_row_key(row, len, &key);
        /* Not copied: the row lives in job->b until the job is answered. */
        rd_kafka_resp_err_t e = rd_kafka_producev(
            kf.rk, RD_KAFKA_V_RKT(t), RD_KAFKA_V_VALUE(row, len),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_OPAQUE(k), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            k->st[r] = ROW_SENT;
            k->outstanding++;
            kf.outstanding++;
            produced++;
            need -= msg_bytes(len, key_len); /* released on its report */
        } else if (fate_of(e) != FATE_RETRY) {
            row_failed(k, r, e, rd_kafka_topic_name(t));
        } else { /* queue full, fatal: the rest waits for the next attempt */
            stop = e;
            k->err = e;
        }
    }
    memory_release(need); /* what the rows not produced would have held */
    k->producing = 0;
    stats.kafka_messages += produced;
    if (stop)
        log_limited(&produce_limit, LOG_WARN, "kafka_produce_stopped",
                    "dataset=%s error=\"%s\" produced=%llu",
                    bf_dataset_name(b->dataset), rd_kafka_err2str(stop),
                    (unsigned long long)produced);
    if (k->outstanding)
        return 0; /* the last report answers */
    if (stop)
        return stop == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -ENOBUFS : -EIO;
    /* Nothing to wait for (every row done or refused already): answer from
     * the loop, never from inside submit. */
    k->next = kf.ready;
    kf.ready = k;
    uv_timer_start(&kf.later, on_later, 0, 0);
    return 0;
}

static void kf_forget(sink_job *j)
{
    kf_job *k = j->priv;
    memory_release(k->acct);
    free(k->off);
    free(k->st);
    free(k);
    j->priv = NULL;
}

static int kf_start(uv_loop_t *loop, const void *opts, char *err, size_t n)
{
    const sink_kafka_opts *o = opts;
    kf.loop = loop;
    kf.ready = NULL;
    kf.outstanding = 0;
    uv_timer_init(loop, &kf.later);
    kf.later_on = 1;
    if (pipe2(kf.pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        int e = errno;
        snprintf(err, n, "kafka: pipe: %s", strerror(e));
        return -e;
    }
    int rc = uv_poll_init(loop, &kf.poll, kf.pipe[0]);
    if (rc < 0) {
        snprintf(err, n, "kafka: uv_poll_init: %s", uv_strerror(rc));
        return rc;
    }
    kf.poll_on = 1;
    uv_poll_start(&kf.poll, UV_READABLE, on_pipe);
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        snprintf(kf.topic_name[id], sizeof(kf.topic_name[id]), "%s%s",
                 o->topic_prefix ? o->topic_prefix : "", bf_dataset_name(id));
    snprintf(kf.brokers, sizeof(kf.brokers), "%s", o->brokers);
    if ((rc = conf_make(o, err, n)) < 0)
        return rc;
    return producer_new(err, n);
}

static void kf_abort(void)
{
    /* Purged messages are reported (__PURGE_QUEUE, __PURGE_INFLIGHT) through
     * the main queue, so their jobs are answered on the loop as usual. A
     * purged in-flight message may still have reached the broker: it is
     * spooled and sent again (docs/delivery.md, duplicates). */
    if (kf.rk)
        rd_kafka_purge(kf.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    serve();
}

static void kf_close(void)
{
    serve();
    producer_destroy();
    if (kf.conf) { /* it holds the password: librdkafka's copy, freed here */
        rd_kafka_conf_destroy(kf.conf);
        kf.conf = NULL;
    }
    if (kf.poll_on) {
        kf.poll_on = 0;
        uv_close((uv_handle_t *)&kf.poll, NULL);
    }
    if (kf.later_on) {
        kf.later_on = 0;
        uv_close((uv_handle_t *)&kf.later, NULL);
    }
    for (int i = 0; i < 2; i++)
        if (kf.pipe[i] >= 0) {
            close(kf.pipe[i]);
            kf.pipe[i] = -1;
        }
}

const sink_backend sink_kafka = {
    .name = "kafka",
    .max_inflight = 0,
    .start = kf_start,
    .submit = kf_submit,
    .forget = kf_forget,
    .abort = kf_abort,
    .close = kf_close,
    /* No reconfigure: a reload applies the policy's own options (backoff,
     * in flight, pacing, spool caps) and the running producer keeps the
     * settings it was made with (a new one would have to take over its
     * outstanding messages and its idempotence state); main.c names the
     * Kafka options that changed for a restart (restart_needed). */
};
