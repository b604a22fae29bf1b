/* stats.c: counters, their JSON form, and the stats socket. See stats.h. */
#include "stats.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "memory.h"
#include "spool.h"

bf_stats stats;

/* A client whose unsent lines pass this many bytes skips lines; after
 * MAX_SKIPS skipped lines in a row it is closed. */
#define CLIENT_QUEUE_MAX (64 * 1024)
#define MAX_SKIPS 10

typedef struct stats_client {
    uv_pipe_t pipe;
    struct stats_client *next;
    unsigned skips;
    int closing;
} stats_client;

typedef struct stats_write {
    uv_write_t req;
    char *line;
} stats_write;

static const char *const drop_names[DROP_MAX] = {
#define BF_DROP(name, desc) #name,
#include "drops.def"
#undef BF_DROP
};

static struct {
    uv_loop_t *loop;
    uv_pipe_t server;
    uv_timer_t timer;
    char *path;
    int started;
    stats_client *clients;
    stats_refresh_fn refresh;
    void *refresh_arg;
} st;

static log_limit drop_limit;

const char *stats_drop_name(enum bf_drop d)
{
    return (unsigned)d < DROP_MAX ? drop_names[d] : "unknown";
}

void stats_drop(enum bf_drop d, unsigned dataset, uint64_t n)
{
    if (n == 0)
        return;
    stats.dropped[d] += n;
    const char *ds = bf_dataset_name(dataset);
    log_limited(&drop_limit, LOG_WARN, "drop", "reason=%s dataset=%s rows=%llu",
                stats_drop_name(d), ds ? ds : "-", (unsigned long long)n);
}

void stats_on_refresh(stats_refresh_fn fn, void *arg)
{
    st.refresh = fn;
    st.refresh_arg = arg;
}

static json_t *per_dataset(const uint64_t *v)
{
    json_t *o = json_object();
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        json_object_set_new(o, bf_dataset_name(id), json_integer((json_int_t)v[id]));
    return o;
}

static uint64_t sum_ds(const uint64_t *v)
{
    uint64_t s = 0;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        s += v[id];
    return s;
}

#define LAT_WINDOW_MS 60000

/* Bucket i holds delays up to 2^(i/4) ms: the smallest i with
 * 2^(i/4) >= ms. */
static unsigned lat_bucket(uint64_t ms)
{
    if (ms <= 1)
        return 0;
    double i = ceil(4.0 * log2((double)ms));
    return i < STATS_LAT_BUCKETS - 1 ? (unsigned)i : STATS_LAT_BUCKETS - 1;
}

static double lat_edge(unsigned i)
{
    return exp2(i / 4.0);
}

void stats_latency(uint64_t delay_ms, uint64_t rows, uint64_t now_ms)
{
    if (now_ms - stats.lat_window_start_ms >= LAT_WINDOW_MS) {
        stats.lat_cur ^= 1;
        memset(stats.lat[stats.lat_cur], 0, sizeof(stats.lat[0]));
        stats.lat_window_start_ms = now_ms;
    }
    stats.lat[stats.lat_cur][lat_bucket(delay_ms)] += rows;
}

/* The q-quantile (0..1) of both windows together, in ms; -1 when empty. */
static double lat_quantile(double q)
{
    uint64_t total = 0, acc = 0;
    for (unsigned i = 0; i < STATS_LAT_BUCKETS; i++)
        total += stats.lat[0][i] + stats.lat[1][i];
    if (!total)
        return -1;
    uint64_t want = (uint64_t)(q * (double)total);
    for (unsigned i = 0; i < STATS_LAT_BUCKETS; i++) {
        acc += stats.lat[0][i] + stats.lat[1][i];
        if (acc > want)
            return lat_edge(i);
    }
    return lat_edge(STATS_LAT_BUCKETS - 1);
}

stats_totals stats_total(void)
{
    stats_totals t = {sum_ds(stats.accepted), 0, sum_ds(stats.rows_delivered), 0};
    for (unsigned r = 1; r < BF_R_MAX; r++)
        t.rejected += stats.rejected[r];
    for (unsigned d = 0; d < DROP_MAX; d++)
        t.dropped += stats.dropped[d];
    return t;
}

json_t *stats_snapshot(void)
{
    uint64_t now = clock_wall_ms();
    stats_totals t = stats_total();
    json_t *o = json_object();
#define I(v) json_integer((json_int_t)(v))
    json_object_set_new(o, "ts_ms", I(now));
    json_object_set_new(o, "uptime_ms", I(now - stats.start_ms));
    json_object_set_new(o, "received", I(stats.received));
    json_object_set_new(o, "received_bytes", I(stats.received_bytes));
    json_t *rej = json_object();
    for (unsigned r = 1; r < BF_R_MAX; r++)
        json_object_set_new(rej, bf_reason_name((bf_reason)r), I(stats.rejected[r]));
    json_object_set_new(o, "rejected_total", I(t.rejected));
    json_object_set_new(o, "rejected", rej);
    json_object_set_new(o, "accepted_total", I(t.accepted));
    json_object_set_new(o, "accepted", per_dataset(stats.accepted));
    json_object_set_new(o, "unknown_model", I(stats.unknown_model));
    json_object_set_new(o, "ip_invalid", I(stats.ip_invalid));
    json_object_set_new(o, "utf8_replaced", I(stats.utf8_replaced));
    json_object_set_new(o, "rows_batched", per_dataset(stats.rows_batched));
    json_object_set_new(o, "bytes_batched", per_dataset(stats.bytes_batched));
    json_object_set_new(o, "batches", per_dataset(stats.batches));
    json_object_set_new(o, "bytes_sent", I(stats.bytes_sent));
    json_t *http = json_object();
    for (unsigned c = 0; c < STATS_HTTP_CODES; c++) {
        if (!stats.http[c])
            continue;
        char k[8];
        snprintf(k, sizeof(k), "%u", c);
        json_object_set_new(http, c ? k : "error", I(stats.http[c]));
    }
    json_object_set_new(o, "http", http);
    json_object_set_new(o, "retries", I(stats.retries));
    json_object_set_new(o, "rows_delivered_total", I(t.delivered));
    json_object_set_new(o, "rows_delivered", per_dataset(stats.rows_delivered));
    json_object_set_new(o, "rows_quarantined", per_dataset(stats.rows_quarantined));
    json_t *drop = json_object();
    for (unsigned d = 0; d < DROP_MAX; d++)
        json_object_set_new(drop, drop_names[d], I(stats.dropped[d]));
    json_object_set_new(o, "dropped_total", I(t.dropped));
    json_object_set_new(o, "dropped", drop);
    json_object_set_new(o, "rows_spooled", I(stats.rows_spooled));
    json_object_set_new(o, "rows_replayed", I(stats.rows_replayed));
    json_object_set_new(o, "rows_dead_lettered", I(stats.rows_dead_lettered));
    json_object_set_new(o, "spool_torn", I(stats.spool_torn));
    json_object_set_new(o, "spool_bytes", I(spool_bytes()));
    json_object_set_new(o, "spool_segments", I(spool_segments()));
    json_object_set_new(o, "memory_cap", I(memory_cap()));
    json_object_set_new(o, "kernel_drops", I(stats.kernel_drops));
    json_object_set_new(o, "socket_queue_bytes", I(stats.socket_queue_bytes));
    json_object_set_new(o, "rcvbuf_bytes", I(stats.rcvbuf_bytes));
    json_object_set_new(o, "memory_bytes", I(memory_used()));
    json_object_set_new(o, "inflight_requests", I(http_inflight()));
    json_object_set_new(o, "last_flush_ok_ms", I(stats.last_flush_ok_ms));
    json_t *lat = json_object();
    double p50 = lat_quantile(0.50), p99 = lat_quantile(0.99);
    json_object_set_new(lat, "p50", p50 < 0 ? json_null() : json_integer((json_int_t)p50));
    json_object_set_new(lat, "p99", p99 < 0 ? json_null() : json_integer((json_int_t)p99));
    json_object_set_new(lat, "window_s", I(2 * LAT_WINDOW_MS / 1000));
    json_object_set_new(o, "ack_delay_ms", lat);
#undef I
    return o;
}

static void on_client_closed(uv_handle_t *h)
{
    free(h->data);
}

static void client_close(stats_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    for (stats_client **pp = &st.clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

static void on_written(uv_write_t *req, int status)
{
    stats_write *w = (stats_write *)req;
    if (status < 0 && status != UV_ECANCELED)
        client_close(req->handle->data);
    free(w->line);
    free(w);
}

/* Queue one line to c, unless c is not reading (see CLIENT_QUEUE_MAX). */
static void client_send(stats_client *c, const char *text, size_t len)
{
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) > CLIENT_QUEUE_MAX) {
        if (++c->skips >= MAX_SKIPS) {
            log_warn("stats_client_closed", "reason=not_reading");
            client_close(c);
        }
        return;
    }
    c->skips = 0;
    stats_write *w = malloc(sizeof(*w));
    char *line = w ? malloc(len + 1) : NULL;
    if (!line) {
        free(w);
        return;
    }
    memcpy(line, text, len);
    line[len] = '\n';
    w->line = line;
    uv_buf_t b = uv_buf_init(line, (unsigned)len + 1);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0) {
        free(line);
        free(w);
        client_close(c);
    }
}

/* Send the current counters to one client, or to all when only is NULL. */
static void broadcast(stats_client *only)
{
    if (!st.clients)
        return;
    if (st.refresh)
        st.refresh(st.refresh_arg);
    json_t *o = stats_snapshot();
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return;
    size_t len = strlen(text);
    if (only) {
        client_send(only, text, len);
    } else {
        stats_client *next;
        for (stats_client *c = st.clients; c; c = next) {
            next = c->next;
            client_send(c, text, len);
        }
    }
    free(text);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    broadcast(NULL);
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    (void)s;
    static char sink[256];
    *b = uv_buf_init(sink, sizeof(sink));
}

/* Clients send nothing we act on; reading only notices their EOF. */
static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n < 0)
        client_close(s->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    stats_client *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    if (uv_pipe_init(st.loop, &c->pipe, 0) < 0) {
        free(c);
        return;
    }
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
        uv_close((uv_handle_t *)&c->pipe, on_client_closed);
        return;
    }
    c->next = st.clients;
    st.clients = c;
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_client_read);
    /* A new client sees the counters at once, not after a full interval. */
    broadcast(c);
}

int stats_start(uv_loop_t *loop, const char *path, unsigned interval_ms)
{
    stats.start_ms = clock_wall_ms();
    st.loop = loop;
    if (!path || !*path)
        return 0;
    int rc;
    unlink(path); /* a stale socket from a crashed run */
    if ((rc = uv_pipe_init(loop, &st.server, 0)) < 0)
        return rc;
    if ((rc = uv_pipe_bind(&st.server, path)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&st.server, 16, on_connection)) < 0) {
        uv_close((uv_handle_t *)&st.server, NULL);
        return rc;
    }
    chmod(path, 0660);
    if (!(st.path = strdup(path))) {
        uv_close((uv_handle_t *)&st.server, NULL);
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &st.timer);
    uv_timer_start(&st.timer, on_tick, interval_ms ? interval_ms : 1000,
                   interval_ms ? interval_ms : 1000);
    st.started = 1;
    return 0;
}

void stats_stop(void)
{
    if (!st.started)
        return;
    st.started = 0;
    broadcast(NULL);
    while (st.clients)
        client_close(st.clients);
    uv_timer_stop(&st.timer);
    uv_close((uv_handle_t *)&st.timer, NULL);
    uv_close((uv_handle_t *)&st.server, NULL);
    unlink(st.path);
    free(st.path);
    st.path = NULL;
}
