/* stats.c: counters, their JSON form (the rows of stats.def), and the stats
 * socket. See stats.h. */
#include "stats.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "memory.h"
#include "paths.h"
#include "receive.h"
#include "sink.h"
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
    unsigned nclients, max_clients;
    stats_refresh_fn refresh;
    void *refresh_arg;
} st;

static log_limit drop_limit, client_limit;

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

/* The indexes of the maps of stats.def: entries [first, end) of the
 * array, each named by key(); a sparse index leaves out zero entries. */
typedef struct stats_index {
    unsigned first, end;
    const char *(*key)(unsigned i, char buf[12]);
    int sparse;
} stats_index;

static const char *dataset_key(unsigned i, char buf[12])
{
    (void)buf;
    return bf_dataset_name(i);
}

static const char *reason_key(unsigned i, char buf[12])
{
    (void)buf;
    return bf_reason_name((bf_reason)i);
}

static const char *drop_key(unsigned i, char buf[12])
{
    (void)buf;
    return drop_names[i];
}

static const char *status_key(unsigned i, char buf[12])
{
    if (i == 0)
        return "error";
    snprintf(buf, 12, "%u", i);
    return buf;
}

static const stats_index index_dataset = {1, BF_DATASET_MAX, dataset_key, 0};
static const stats_index index_reason = {1, BF_R_MAX, reason_key, 0};
static const stats_index index_drop = {0, DROP_MAX, drop_key, 0};
static const stats_index index_status = {0, STATS_HTTP_CODES, status_key, 1};

/* Every map of stats.def with its index, for the sums. */
enum stats_map {
#define BF_STAT_MAP(key, index, label, prom, help) MAP_##key,
#include "stats.def"
    MAP_MAX
};

static const struct {
    const uint64_t *v;
    const stats_index *index;
} maps[MAP_MAX] = {
#define BF_STAT_MAP(key, index, label, prom, help) [MAP_##key] = {stats.key, &index_##index},
#include "stats.def"
};

static uint64_t map_sum(enum stats_map m)
{
    uint64_t s = 0;
    for (unsigned i = maps[m].index->first; i < maps[m].index->end; i++)
        s += maps[m].v[i];
    return s;
}

static json_t *map_json(const uint64_t *v, const stats_index *ix)
{
    json_t *o = json_object();
    char buf[12];
    for (unsigned i = ix->first; i < ix->end; i++)
        if (v[i] || !ix->sparse)
            json_object_set_new(o, ix->key(i, buf), json_integer((json_int_t)v[i]));
    return o;
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
    return (stats_totals){map_sum(MAP_accepted), map_sum(MAP_rejected),
                          map_sum(MAP_rows_delivered), map_sum(MAP_dropped)};
}

/* ack_delay_ms: the quantiles of both windows. */
static json_t *stats_ack_delay(void)
{
    json_t *lat = json_object();
    double p50 = lat_quantile(0.50), p99 = lat_quantile(0.99);
    json_object_set_new(lat, "p50", p50 < 0 ? json_null() : json_integer((json_int_t)p50));
    json_object_set_new(lat, "p99", p99 < 0 ? json_null() : json_integer((json_int_t)p99));
    json_object_set_new(lat, "window_s", json_integer(2 * LAT_WINDOW_MS / 1000));
    return lat;
}

static json_t *text_json(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The readers of the READ_MAP and STATE_MAP rows, one entry i at a time. */
#define BF_STAT_READ_MAP(key, index, label, reader, prom, help)                  \
    static json_t *read_##key(unsigned i) { return json_integer((json_int_t)(reader)); }
#define BF_STAT_STATE_MAP(key, index, label, reader, states, prom, help)         \
    static json_t *read_##key(unsigned i) { return text_json(reader); }
#include "stats.def"

static json_t *read_map(const stats_index *ix, json_t *(*read)(unsigned i))
{
    json_t *o = json_object();
    char buf[12];
    for (unsigned i = ix->first; i < ix->end; i++)
        json_object_set_new(o, ix->key(i, buf), read(i));
    return o;
}

json_t *stats_snapshot(void)
{
    if (st.refresh)
        st.refresh(st.refresh_arg);
    uint64_t now = clock_wall_ms(); /* ts_ms, and what readers may use */
    json_t *o = json_object();
#define SET(key, value) json_object_set_new(o, #key, value);
#define I(v) json_integer((json_int_t)(v))
#define BF_STAT_FIELD(key, type, prom, help) SET(key, I(stats.key))
#define BF_STAT_MAP(key, index, label, prom, help) SET(key, map_json(stats.key, &index_##index))
#define BF_STAT_SUM(key, map, help) SET(key, I(map_sum(MAP_##map)))
#define BF_STAT_READ(key, type, reader, prom, help) SET(key, I(reader))
#define BF_STAT_QUANTILES(key, reader, prom, help) SET(key, reader)
#define BF_STAT_TEXT(key, reader, states, prom, help) SET(key, text_json(reader))
#define BF_STAT_READ_MAP(key, index, label, reader, prom, help)                  \
    SET(key, read_map(&index_##index, read_##key))
#define BF_STAT_STATE_MAP(key, index, label, reader, states, prom, help)         \
    SET(key, read_map(&index_##index, read_##key))
#include "stats.def"
#undef I
#undef SET
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
    st.nclients--;
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

/* Clients only listen. Reading notices their EOF, and a client that
 * writes anything is closed: nothing it sends is read or kept, so it can
 * neither fill a buffer nor keep the loop busy. */
static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n > 0)
        log_limited(&client_limit, LOG_WARN, "stats_client_closed",
                    "reason=wrote bytes=%zd", n);
    if (n != 0)
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
    /* Past --stats-max-clients a client is accepted and closed at once
     * (left in the backlog it would only wait): each costs a line per
     * interval. */
    if (st.nclients >= st.max_clients) {
        log_limited(&client_limit, LOG_WARN, "stats_client_refused",
                    "reason=max_clients max=%u", st.max_clients);
        uv_close((uv_handle_t *)&c->pipe, on_client_closed);
        return;
    }
    st.nclients++;
    c->next = st.clients;
    st.clients = c;
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_client_read);
    /* A new client sees the counters at once, not after a full interval. */
    broadcast(c);
}

int stats_check_socket(const char *path, char *err, size_t n)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, n, "stats socket %s: longer than %zu bytes", path,
                 sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    /* Its directory first: libuv reports a bind in a missing directory as
     * "permission denied". */
    char dir[PATHS_MAX];
    paths_dirname(path, dir, sizeof(dir));
    int rc = paths_check_dir("stats socket directory", dir, 1, err, n);
    if (rc < 0)
        return rc;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "stats socket %s: %s", path, strerror(e));
        return -e;
    }
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(fd);
    if (rc == 0) {
        snprintf(err, n, "stats socket %s: a running daemon answers on it; give this "
                         "one another --stats-socket", path);
        return -EADDRINUSE;
    }
    /* ECONNREFUSED: a file nobody listens on (a crashed run's socket, or
     * something that is no socket at all); ENOENT: none. */
    if (e != ECONNREFUSED && e != ENOENT) {
        snprintf(err, n, "stats socket %s: %s", path, strerror(e));
        return -e;
    }
    struct stat there;
    if (e == ECONNREFUSED && lstat(path, &there) == 0 && !S_ISSOCK(there.st_mode)) {
        snprintf(err, n, "stats socket %s: a file that is not a socket is there "
                         "(not replaced: it is not the daemon's)", path);
        return -EEXIST;
    }
    return 0;
}

int stats_start(uv_loop_t *loop, const char *path, unsigned interval_ms,
                unsigned max_clients, char *err, size_t n)
{
    stats.start_ms = clock_wall_ms();
    st.loop = loop;
    st.max_clients = max_clients ? max_clients : 16;
    if (!path || !*path)
        return 0;
    int rc = stats_check_socket(path, err, n);
    if (rc < 0)
        return rc;
    unlink(path); /* a stale socket from a crashed run: nobody answers on it */
    if ((rc = uv_pipe_init(loop, &st.server, 0)) < 0) {
        snprintf(err, n, "stats socket %s: %s", path, uv_strerror(rc));
        return rc;
    }
    /* The socket is born 0660: a chmod after bind would leave a moment in
     * which any local user could connect. umask is process-wide, and no
     * other thread creates files yet (the threadpool and curl start
     * later). */
    mode_t mask = umask(0117);
    rc = uv_pipe_bind(&st.server, path);
    umask(mask);
    if (rc < 0 || (rc = uv_listen((uv_stream_t *)&st.server, 16, on_connection)) < 0) {
        snprintf(err, n, "stats socket %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&st.server, NULL);
        return rc;
    }
    if (!(st.path = strdup(path))) {
        snprintf(err, n, "out of memory");
        uv_close((uv_handle_t *)&st.server, NULL);
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &st.timer);
    uv_timer_start(&st.timer, on_tick, interval_ms ? interval_ms : 1000,
                   interval_ms ? interval_ms : 1000);
    st.started = 1;
    return 0;
}

void stats_reconfigure(unsigned interval_ms, unsigned max_clients)
{
    st.max_clients = max_clients ? max_clients : 16;
    if (st.started && interval_ms)
        uv_timer_start(&st.timer, on_tick, interval_ms, interval_ms);
}

int stats_socket_group(long gid, const char *name, char *err, size_t n)
{
    if (!st.started || gid < 0)
        return 0;
    if (chown(st.path, (uid_t)-1, (gid_t)gid) < 0 || chmod(st.path, 0660) < 0) {
        int e = errno;
        snprintf(err, n, "stats socket %s: giving it to group %s: %s%s", st.path, name,
                 strerror(e), e == EPERM ? " (the daemon's user is not in that group: "
                                           "Group= or SupplementaryGroups= in the unit)" : "");
        return -e;
    }
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
