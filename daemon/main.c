/*
 * main.c: birdfeederd. Wires the stages together and owns the lifecycle:
 *
 *   receive -> decode (+validate) -> enrich -> batch (row) -> sink (http)
 *
 * plus config, catalog, stats and log. Everything runs on one libuv loop;
 * only gzip and file writes go to the threadpool (and librdkafka runs
 * threads of its own, whose reports come back on the loop).
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "batch.h"
#include "catalog.h"
#include "config.h"
#include "bf_decoder.h"
#include "enrich.h"
#include "log.h"
#include "memory.h"
#include "metrics.h"
#include "paths.h"
#include "receive.h"
#include "row.h"
#include "sink.h"
#include "secret.h"
#include "sink_file.h"
#include "sink_kafka.h"
#include "sink_tinybird.h"
#include "spool.h"
#include "stats.h"

static struct {
    uv_loop_t *loop;
    bf_config cfg;
    int argc;
    char **argv;
    catalog *cat;
    enrich_ctx *enrich;
    bf_decoder dec;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t watchdog;
    uv_timer_t status;
    uint64_t status_received; /* stats.received at the last STATUS= */
    int stopping;
} app;

static log_limit reject_limits[BF_R_MAX];

static void on_datagram(const uint8_t *buf, size_t len, uint64_t recv_ms, void *arg)
{
    (void)arg;
    bf_event ev;
    const char *detail;
    bf_reason r = bf_decode_datagram(&app.dec, buf, len, &ev, &detail);
    if (r != BF_OK) {
        stats.rejected[r]++;
        log_limited(&reject_limits[r], LOG_WARN, "reject",
                    "reason=%s field=%s bytes=%zu", bf_reason_name(r),
                    detail ? detail : "-", len);
        return;
    }
    bf_row row;
    r = enrich_event(app.enrich, &ev, recv_ms, &row);
    if (r != BF_OK) { /* the start time is outside the window */
        stats.rejected[r]++;
        int64_t off = (int64_t)(row.start_ms - recv_ms);
        log_limited(&reject_limits[r], LOG_WARN, "reject",
                    "reason=%s field=start_time bytes=%zu dataset=%s start_ms=%llu "
                    "offset_s=%lld%s", bf_reason_name(r), len, bf_dataset_name(ev.dataset),
                    (unsigned long long)row.start_ms, (long long)(off / 1000),
                    row.start_ms < 100000000000ull
                        ? " hint=\"epoch seconds sent as milliseconds?\"" : "");
        return;
    }
    stats.accepted[ev.dataset]++;
    batch_append(&row);
}

/* Receiving waits while new batches might not fit under --max-memory and
 * the spool is about to free memory by writing batches out: a short wait,
 * the kernel's buffer holding the datagrams, instead of rows dropped as
 * memory_full. (Memory held by batches waiting for the sink frees only
 * with the sink: then receiving goes on and closed batches go to disk.) */
static int wait_for_room(void *arg)
{
    (void)arg;
    return batch_must_wait() && spool_writing_bytes() > 0;
}

static void on_flush(batch_buf *b, void *arg)
{
    (void)arg;
    sink_submit(b);
}

/* The policy paces each dataset's flushes; batch applies the interval. */
static void on_interval(unsigned dataset, uint64_t interval_ms, uint64_t jitter_ms, void *arg)
{
    (void)arg;
    batch_set_interval(dataset, interval_ms, jitter_ms);
}

static void on_close_open(unsigned dataset, void *arg)
{
    (void)arg;
    batch_flush(dataset);
}

static void refresh_gauges(void *arg)
{
    (void)arg;
    receive_refresh_gauges();
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_drained(void *arg)
{
    (void)arg;
    sink_close();
    metrics_stop();
    stats_stop();
    receive_close();
    uv_walk(app.loop, close_walk, NULL); /* signals and timers left */
    stats_totals t = stats_total();
    log_info("stopped", "received=%llu accepted=%llu rejected=%llu delivered=%llu "
                        "dropped=%llu spooled=%llu replayed=%llu",
             (unsigned long long)stats.received, (unsigned long long)t.accepted,
             (unsigned long long)t.rejected, (unsigned long long)t.delivered,
             (unsigned long long)t.dropped, (unsigned long long)stats.rows_spooled,
             (unsigned long long)stats.rows_replayed);
}

static void shutdown_start(const char *why)
{
    if (app.stopping)
        return;
    app.stopping = 1;
    sd_notify(0, "STOPPING=1");
    log_info("stopping", "signal=%s deadline_ms=%llu", why,
             (unsigned long long)app.cfg.shutdown_timeout_ms);
    receive_stop_and_drain(); /* what the kernel already holds is ours */
    batch_close();            /* every open batch goes to the sink */
    sink_drain(uv_now(app.loop) + app.cfg.shutdown_timeout_ms, on_drained, NULL);
}

/* The log options of cfg, and the one note config_load leaves for the log
 * (it cannot log before the format is known). */
static void log_apply(const bf_config *cfg)
{
    log_set_level((enum log_level)log_level_parse(cfg->log_level));
    log_set_format((enum log_format)log_format_parse(cfg->log_format));
    if (cfg->flush_bytes_asked)
        log_info("flush_bytes_lowered", "from=%llu to=%llu reason=max_memory",
                 (unsigned long long)cfg->flush_bytes_asked,
                 (unsigned long long)cfg->flush_bytes);
}

/* The sink's options from cfg, in structs the caller provides (they
 * borrow cfg's strings): the one mapping start and reload share.
 * --kafka-brokers picks Kafka, else a token picks Tinybird, else the rows go
 * to a local file, which needs no spool: there is no outage to wait out.
 * The Kafka password is not read here: start reads its file once (the
 * Kafka sink takes new options at a restart only). */
typedef struct sink_config {
    sink_opts so;
    sink_tinybird_opts to;
    sink_file_opts fo;
    sink_kafka_opts ko;
    spool_opts po;
} sink_config;

static const sink_opts *sink_options(const bf_config *cfg, sink_config *sc)
{
    int kafka = cfg->kafka_brokers != NULL;
    sc->po = (spool_opts){.dir = cfg->spool_dir, .max_bytes = cfg->max_spool_bytes,
                          .segment_bytes = cfg->spool_segment_bytes,
                          .dead_letter_max = cfg->max_dead_letter_bytes};
    sc->to = (sink_tinybird_opts){.url = cfg->tinybird_url, .token = cfg->token,
                                  .timeout_ms = cfg->http_timeout_ms};
    sc->fo = (sink_file_opts){.path = cfg->out};
    sc->ko = (sink_kafka_opts){.brokers = cfg->kafka_brokers,
                               .topic_prefix = cfg->kafka_topic_prefix,
                               .compression = cfg->kafka_compression,
                               .properties = (const char *const *)cfg->kafka_properties.v,
                               .n_properties = cfg->kafka_properties.n,
                               .max_memory = cfg->max_memory};
    sc->so = (sink_opts){.backend = kafka ? &sink_kafka : cfg->token ? &sink_tinybird
                                                                     : &sink_file,
                         .backend_opts = kafka        ? (const void *)&sc->ko
                                         : cfg->token ? (const void *)&sc->to
                                                      : (const void *)&sc->fo,
                         .spool = kafka || cfg->token ? &sc->po : NULL,
                         .max_inflight = (unsigned)cfg->max_inflight,
                         .backoff_min_ms = cfg->backoff_min_ms,
                         .backoff_max_ms = cfg->backoff_max_ms,
                         .pacing = {.on = strcmp(cfg->pacing, "on") == 0,
                                    .base_ms = cfg->flush_interval_ms,
                                    .max_ms = cfg->max_flush_interval_ms,
                                    .flush_bytes = cfg->flush_bytes},
                         .on_interval = on_interval,
                         .close_open = on_close_open};
    return &sc->so;
}

/* batch's and receive's options from cfg: the one mapping start and reload
 * share, as sink_options is the sink's. */
static batch_opts batch_options(const bf_config *cfg)
{
    return (batch_opts){.flush_bytes = cfg->flush_bytes,
                        .flush_interval_ms = cfg->flush_interval_ms,
                        .phase_jitter = 1,
                        .row_max = row_max_bytes(cfg->max_datagram),
                        .on_flush = on_flush};
}

static receive_opts receive_options(const bf_config *cfg)
{
    return (receive_opts){.listen = cfg->listen, .allow_remote = (int)cfg->allow_remote,
                          .socket_group = cfg->socket_group, .allow_uid = cfg->allow_uid,
                          .allow_gid = cfg->allow_gid, .rcvbuf = cfg->rcvbuf_bytes,
                          .max_datagram = cfg->max_datagram, .cb = on_datagram,
                          .wait = wait_for_room};
}

/* The stats socket's group for cfg; none: the daemon's own (as a socket
 * it makes gets, and as a reload from a group back to none must restore). */
static void stats_group_apply(const bf_config *cfg, int at_start)
{
    char err[512];
    long gid = cfg->stats_socket_gid;
    const char *name = cfg->stats_socket_group;
    if (gid < 0 && at_start)
        return;
    if (gid < 0) {
        gid = (long)getegid();
        name = "(the daemon's own)";
    }
    if (stats_socket_group(gid, name, err, sizeof(err)) < 0)
        log_error("stats_socket_group_failed", "error=\"%s\" note=\"readable by the "
                                               "daemon's own group only\"", err);
}

/* What a reload applies, by the module that takes it through its own
 * x_reconfigure; the sink's set only when sink_reconfigure took it, the
 * allowed peers only when each name resolves. What
 * is in no list binds a socket or names a path or a key (listen,
 * allow-remote, socket-group, stats-socket, metrics-listen, spool-dir,
 * ip-hash-key-file) or is a setting of the running Kafka producer
 * (kafka-*: sink_kafka.h): the log line names it for a restart. */
static const char *const reload_always[] = {
    "catalog", "max-event-age", "max-event-skew",       /* enrich */
    "log-level", "log-format",                          /* log */
    "max-memory",                                       /* memory */
    "flush-bytes", "max-datagram",                      /* batch, receive */
    "rcvbuf",                                           /* receive */
    "stats-interval-ms", "stats-max-clients", "stats-socket-group", /* stats */
    "shutdown-timeout-ms",                              /* main, at SIGTERM */
    NULL};
static const char *const reload_sink[] = {
    "token", "token-file", "tinybird-url", "http-timeout-ms", "out", /* the backend */
    "max-inflight", "backoff-min-ms", "backoff-max-ms", /* the policy, */
    "pacing", "flush-interval-ms", "max-flush-interval-ms", /* and its pacing */
    "max-spool-bytes", "spool-segment-bytes", "max-dead-letter-bytes", /* spool */
    NULL};
static const char *const reload_receive[] = {"allow-uid", "allow-gid", NULL}; /* if known */

/* The memory account's cap and the headroom it keeps for a full open
 * batch of every dataset and one closed batch of each on its way to the
 * spool, so receiving always finds a buffer while closed batches wait
 * (memory.h). At most half the cap: config keeps flush-bytes to an eighth
 * of it. At start and at every reload (flush-bytes may change). */
static void memory_apply(const bf_config *c)
{
    memory_set_cap(c->max_memory);
    memory_set_headroom(2 * (uint64_t)(BF_DATASET_MAX - 1) * c->flush_bytes);
}

/* The one place a fresh configuration meets the running daemon (SIGHUP):
 * each module takes what it owns (x_reconfigure), so the batch thresholds,
 * the memory and spool caps, the backoff, the token and region host, the
 * log level and format, the catalog and the event time window change with
 * no restart and no event lost; held datasets probe at once. What shapes a
 * socket or a path is named for a restart rather than half-applied. fresh
 * gives up what applied. */
static void apply_config(bf_config *fresh, catalog *cat)
{
    enrich_set_catalog(app.enrich, cat);
    enrich_set_time_window(app.enrich, fresh->max_event_age_ms, fresh->max_event_skew_ms);
    catalog_free(app.cat);
    app.cat = cat;
    log_apply(fresh);
    memory_apply(fresh);
    batch_opts bo = batch_options(fresh);
    batch_reconfigure(&bo);
    receive_opts ro = receive_options(fresh);
    char rerr[512] = "";
    int receive_ok = receive_reconfigure(&ro, rerr, sizeof(rerr)) == 0; /* checked, */
    if (!receive_ok) /* unless a user went between the check and now */
        log_error("reload_failed", "what=allow-uid/allow-gid error=\"%s\" keeping=old", rerr);
    stats_reconfigure((unsigned)fresh->stats_interval_ms, (unsigned)fresh->stats_max_clients);
    stats_group_apply(fresh, 0);
    char err[512] = "", changed[512], restart[512];
    sink_config sc;
    int sink_ok = sink_reconfigure(sink_options(fresh, &sc), err, sizeof(err)) == 0;

    const char *applied[sizeof(reload_always) / sizeof(*reload_always) +
                         sizeof(reload_receive) / sizeof(*reload_receive) +
                         sizeof(reload_sink) / sizeof(*reload_sink)];
    size_t k = 0;
    for (const char *const *nm = reload_always; *nm; nm++)
        applied[k++] = *nm;
    for (const char *const *nm = reload_receive; receive_ok && *nm; nm++)
        applied[k++] = *nm;
    for (const char *const *nm = reload_sink; sink_ok && *nm; nm++)
        applied[k++] = *nm;
    applied[k] = NULL;
    const char *token = config_token_note(&app.cfg, fresh);
    config_diff_among(&app.cfg, fresh, applied, changed, sizeof(changed));
    config_diff(&app.cfg, fresh, applied, restart, sizeof(restart));
    config_take(&app.cfg, fresh, applied);
    if (sink_ok)
        app.cfg.token_source = fresh->token_source; /* static text */
    log_info("reloaded", "changed=%s catalog=%s models=%zu token=\"%s\" token_from=\"%s\" "
                         "sink=\"%s%s\" restart_needed=%s",
             *changed ? changed : "none", catalog_name(app.cfg.catalog), catalog_size(cat),
             token, app.cfg.token_source ? app.cfg.token_source
                                         : config_source_name(config_source(&app.cfg, "token")),
             sink_ok ? "reconfigured" : "kept: ", sink_ok ? "" : err,
             *restart ? restart : "none");
}

static void reload(void)
{
    char err[512];
    bf_config fresh;
    if (config_load(&fresh, app.argc, app.argv, err, sizeof(err)) != CONFIG_OK) {
        log_error("reload_failed", "what=config error=\"%s\" keeping=old", err);
        config_free(&fresh);
        return;
    }
    receive_opts ro = receive_options(&fresh);
    if (receive_check_names(&ro, err, sizeof(err)) < 0) {
        log_error("reload_failed", "what=config error=\"%s\" keeping=old", err);
        config_free(&fresh);
        return;
    }
    catalog *cat;
    if (catalog_load(fresh.catalog, &cat, err, sizeof(err)) < 0) {
        log_error("reload_failed", "what=catalog error=\"%s\" keeping=old", err);
        config_free(&fresh);
        return;
    }
    apply_config(&fresh, cat);
    config_free(&fresh);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (signum == SIGHUP)
        reload();
    else
        shutdown_start(signum == SIGTERM ? "TERM" : "INT");
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    /* Fed from the loop itself: a stuck loop stops feeding and systemd
     * restarts us. */
    sd_notify(0, "WATCHDOG=1");
}

/* STATUS= for `systemctl status`: a short summary every 5 s. */
static void on_status(uv_timer_t *timer)
{
    (void)timer;
    stats_totals t = stats_total();
    uint64_t rate = (stats.received - app.status_received) / 5;
    app.status_received = stats.received;
    const char *hint = sink_state_hint();
    sd_notifyf(0, "STATUS=%llu events/s; delivered %llu, dropped %llu, spool %llu bytes; "
                  "sink_state=%s%s%s",
               (unsigned long long)rate, (unsigned long long)t.delivered,
               (unsigned long long)t.dropped, (unsigned long long)spool_bytes(),
               sink_state(), hint ? ": " : "", hint ? hint : "");
}

static int fail(const char *what, const char *err)
{
    log_error("start_failed", "what=%s error=\"%s\"", what, err);
    return 1;
}

static int by_context(const bf_config *cfg, const char *option)
{
    return config_source(cfg, option) == CONFIG_SRC_DEFAULT;
}

/* After a failure with a path the context chose: say where it came from
 * and how to choose another (appended to err, size n). */
static void context_hint(const bf_config *cfg, const char *option, char *err, size_t n)
{
    if (!by_context(cfg, option) || strcmp(option, "catalog") == 0)
        return;
    int state = strcmp(option, "stats-socket") != 0;
    size_t len = strlen(err);
    snprintf(err + len, n - len, " (the %s directory, from %s; set %s, or give --%s)",
             state ? "state" : "runtime", state ? cfg->state_from : cfg->runtime_from,
             state ? "XDG_STATE_HOME" : "XDG_RUNTIME_DIR", option);
}

/* The stats socket's directory: the runtime directory, created when the
 * context chose it; one named by a flag must exist. */
static int make_runtime_dir(const bf_config *cfg, char *err, size_t n)
{
    if (!*cfg->stats_socket || !by_context(cfg, "stats-socket"))
        return 0;
    return paths_make_dir(cfg->runtime_dir, 0750, err, n);
}

/* --check-config: everything a start would do that can fail, in the same
 * order, changing nothing. Returns 0 when the daemon would start, else 1
 * with the first failure on stderr. Problems a start lives with (the
 * stats socket) are warnings. */
static int check_start(const bf_config *cfg)
{
    char err[512], dir[PATHS_MAX];
    const char *what = NULL;
    int rc = enrich_check_key(cfg->ip_hash_key_file, err, sizeof(err));
    if (rc == -ENOENT) { /* to be created: its directory must allow it */
        paths_dirname(cfg->ip_hash_key_file, dir, sizeof(dir));
        rc = paths_check_dir("ip hash key directory", dir, 0, err, sizeof(err));
    }
    if (rc < 0) {
        what = "ip_hash_key";
        context_hint(cfg, "ip-hash-key-file", err, sizeof(err));
    }
    if (!what && cfg->kafka_brokers && cfg->kafka_password_file) {
        char *pw = NULL;
        if (secret_read_file(cfg->kafka_password_file, "Kafka password file",
                             !cfg->kafka_password_credential, &pw, err, sizeof(err)) < 0)
            what = "kafka_password_file";
        if (pw) {
            explicit_bzero(pw, strlen(pw));
            free(pw);
        }
    }
    if (!what && (cfg->token || cfg->kafka_brokers) &&
        (paths_check_dir("spool directory", cfg->spool_dir, 0, err, sizeof(err)) < 0 ||
         spool_check_lock(cfg->spool_dir, err, sizeof(err)) < 0)) {
        what = "spool";
        context_hint(cfg, "spool-dir", err, sizeof(err));
    }
    receive_opts ro = receive_options(cfg);
    if (!what && (receive_check_listen(cfg->listen, (int)cfg->allow_remote, err,
                                       sizeof(err)) < 0 ||
                  receive_check_names(&ro, err, sizeof(err)) < 0))
        what = "listen";
    if (what) {
        fprintf(stderr, "birdfeederd: check failed: %s: %s\n", what, err);
        return 1;
    }
    if (*cfg->stats_socket) {
        int made = by_context(cfg, "stats-socket");
        rc = made ? paths_check_dir("runtime directory", cfg->runtime_dir, 0, err,
                                    sizeof(err))
                  : 0;
        /* A directory still to be made holds no socket yet. */
        if (rc == 0 && (!made || access(cfg->runtime_dir, F_OK) == 0))
            rc = stats_check_socket(cfg->stats_socket, err, sizeof(err));
        if (rc < 0) {
            context_hint(cfg, "stats-socket", err, sizeof(err));
            fprintf(stderr, "birdfeederd: warning: %s: the daemon starts without its "
                            "stats socket\n", err);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    app.argc = argc;
    app.argv = argv;
    /* What config_load logs waits for the format and prefix it sets. */
    log_hold();
    enum config_result loaded = config_load(&app.cfg, argc, argv, err, sizeof(err));
    log_set_priority_prefix(log_stderr_is_journal());
    if (loaded == CONFIG_OK)
        log_apply(&app.cfg);
    log_release();
    switch (loaded) {
    case CONFIG_EXIT_OK:
        config_free(&app.cfg);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "birdfeederd: %s\n", err);
        config_free(&app.cfg);
        return 2;
    case CONFIG_OK:
        break;
    }
    bf_config *cfg = &app.cfg;

    if (catalog_load(cfg->catalog, &app.cat, err, sizeof(err)) < 0) {
        if (cfg->check_only)
            fprintf(stderr, "birdfeederd: check failed: catalog: %s\n", err);
        return fail("catalog", err);
    }
    if (cfg->check_only) {
        int bad = check_start(cfg);
        if (!bad) {
            config_print(cfg);
            printf("birdfeederd: configuration OK%s%s; catalog %s: %zu models; "
                   "state directory %s (from %s)\n",
                   cfg->config_file ? " in " : "", cfg->config_file ? cfg->config_file : "",
                   catalog_name(cfg->catalog), catalog_size(app.cat), cfg->state_dir,
                   cfg->state_from);
        }
        catalog_free(app.cat);
        config_free(cfg);
        return bad;
    }
    /* The key's directory (the state directory, unless a flag says) is
     * made with its parents; so is the spool's, by spool_open. */
    char dir[PATHS_MAX];
    paths_dirname(cfg->ip_hash_key_file, dir, sizeof(dir));
    if (paths_make_dir(dir, 0700, err, sizeof(err)) < 0 ||
        enrich_new(cfg->ip_hash_key_file, &app.enrich, err, sizeof(err)) < 0) {
        context_hint(cfg, "ip-hash-key-file", err, sizeof(err));
        return fail("ip_hash_key", err);
    }
    enrich_set_catalog(app.enrich, app.cat);
    enrich_set_time_window(app.enrich, cfg->max_event_age_ms, cfg->max_event_skew_ms);

    app.loop = uv_default_loop();
    /* Stats are for ops; the pipeline runs without them. */
    int rc = make_runtime_dir(cfg, err, sizeof(err));
    if (rc == 0)
        rc = stats_start(app.loop, cfg->stats_socket, (unsigned)cfg->stats_interval_ms,
                         (unsigned)cfg->stats_max_clients, err, sizeof(err));
    if (rc < 0) {
        context_hint(cfg, "stats-socket", err, sizeof(err));
        log_error("stats_socket_failed", "path=%s error=\"%s\" note=\"running without "
                                         "the stats socket\"", cfg->stats_socket, err);
    } else {
        stats_group_apply(cfg, 1);
    }
    stats_on_refresh(refresh_gauges, NULL);
    if (cfg->metrics_listen && *cfg->metrics_listen &&
        (rc = metrics_start(app.loop, cfg->metrics_listen, err, sizeof(err))) < 0)
        log_error("metrics_failed", "error=\"%s\"", err); /* as the stats socket */

    memory_apply(cfg);
    /* Batch buffers and bodies are large and short-lived: give each its own
     * mapping, returned to the kernel when freed, instead of letting
     * glibc's dynamic threshold move them into per-thread arenas that keep
     * the pages (RSS of 130 MB and more at a 64 MiB cap). */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    sink_config sc;
    const sink_opts *so = sink_options(cfg, &sc);
    char *kafka_password = NULL;
    if (cfg->kafka_brokers && cfg->kafka_password_file &&
        secret_read_file(cfg->kafka_password_file, "Kafka password file",
                         !cfg->kafka_password_credential, &kafka_password, err, sizeof(err)) < 0)
        return fail("kafka_password_file", err);
    sc.ko.password = kafka_password;
    rc = sink_start(app.loop, so, err, sizeof(err));
    if (kafka_password) { /* librdkafka keeps its own copy */
        explicit_bzero(kafka_password, strlen(kafka_password));
        free(kafka_password);
    }
    if (rc < 0) {
        if (so->backend == &sink_tinybird)
            context_hint(cfg, "spool-dir", err, sizeof(err));
        return fail(so->backend == &sink_tinybird ? "spool" : "sink", err);
    }
    log_info("paths", "context=%s state=%s runtime=%s catalog=%s models=%zu "
                      "ip_hash_key_file=%s spool_dir=%s stats_socket=%s "
                      "stats_socket_group=%s",
             cfg->state_from, cfg->state_dir, cfg->runtime_dir, catalog_name(cfg->catalog),
             catalog_size(app.cat), cfg->ip_hash_key_file,
             so->spool ? cfg->spool_dir : "-",
             *cfg->stats_socket ? cfg->stats_socket : "-",
             cfg->stats_socket_gid >= 0 ? cfg->stats_socket_group : "-");
    if (cfg->kafka_brokers)
        log_info("sink", "mode=kafka brokers=%s topic_prefix=\"%s\" compression=%s%s",
                 cfg->kafka_brokers,
                 cfg->kafka_topic_prefix ? cfg->kafka_topic_prefix : "",
                 cfg->kafka_compression,
                 cfg->token ? " note=\"--kafka-brokers is set: the token is not used\""
                            : "");
    else if (cfg->token)
        log_info("sink", "mode=tinybird url=%s token_from=\"%s\"", cfg->tinybird_url,
                 cfg->token_source);
    else
        log_info("sink", "mode=file out=%s note=\"no TINYBIRD_API_KEY: writing "
                         "NDJSON locally, nothing is sent to Tinybird\"",
                 cfg->out);

    batch_opts bo = batch_options(cfg);
    if ((rc = batch_init(app.loop, &bo)) < 0)
        return fail("batch", uv_strerror(rc));
    sink_set_pacing(&sc.so.pacing); /* batch hears each dataset's interval */

    receive_opts ro = receive_options(cfg);
    if (receive_start(app.loop, &ro, err, sizeof(err)) < 0)
        return fail("listen", err);

    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_init(app.loop, &app.sigint);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_init(app.loop, &app.sighup);
    uv_signal_start(&app.sighup, on_signal, SIGHUP);

    uint64_t wd_usec;
    if (sd_watchdog_enabled(0, &wd_usec) > 0) {
        uv_timer_init(app.loop, &app.watchdog);
        uv_timer_start(&app.watchdog, on_watchdog, wd_usec / 2000, wd_usec / 2000);
    }
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s, sink %s", receive_address(),
               so->backend->name);
    uv_timer_init(app.loop, &app.status);
    uv_timer_start(&app.status, on_status, 5000, 5000);

    uv_run(app.loop, UV_RUN_DEFAULT);

    rc = uv_loop_close(app.loop);
    if (rc < 0)
        log_error("loop_close", "error=\"%s\"", uv_strerror(rc));
    bf_decoder_release(&app.dec); /* its scan buffer, kept between datagrams */
    enrich_free(app.enrich);
    catalog_free(app.cat);
    config_free(cfg);
    return 0;
}
