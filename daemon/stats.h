/*
 * stats.h: counters and gauges for every stage, and the stats socket.
 *
 * Every key of the stats line is a row of stats.def. Counters live in one
 * global struct, each bumped by the module that counts it and only from
 * the loop thread (threadpool work reports back through its after-work
 * callback), so they need no atomics. Gauges stay with the module that owns
 * them; stats reads them when it writes a line.
 *
 * The stats socket is a Unix stream socket: every connected client gets one
 * JSON object per line every interval. A client that does not read loses
 * lines (its write queue is capped) and is closed when it falls far behind,
 * so it can never slow the pipeline.
 */
#ifndef BF_STATS_H
#define BF_STATS_H

#include <stdint.h>
#include <uv.h>

#include "bf_proto.h"

enum bf_drop {
#define BF_DROP(name, desc) DROP_##name,
#include "drops.def"
#undef BF_DROP
    DROP_MAX
};

enum { STATS_HTTP_CODES = 600 }; /* index 0: transport error, no status */
/* Receipt-to-acknowledgement delay histogram: bucket i holds delays up to
 * 2^(i/4) ms (about 19% apart), so p50 and p99 are within 19%. */
enum { STATS_LAT_BUCKETS = 96 };

/* The array length of each index of a BF_STAT_MAP in stats.def. */
#define STATS_INDEX_LEN_dataset BF_DATASET_MAX
#define STATS_INDEX_LEN_reason BF_R_MAX
#define STATS_INDEX_LEN_drop DROP_MAX
#define STATS_INDEX_LEN_status STATS_HTTP_CODES

/* The counters of stats.def (its FIELD and MAP rows), then what stats.c
 * keeps for itself. Gauges other modules own are not here: stats reads
 * them through the readers stats.def names. */
typedef struct bf_stats {
#define BF_STAT_FIELD(key, type, prom, help) uint64_t key;
#define BF_STAT_MAP(key, index, label, prom, help) uint64_t key[STATS_INDEX_LEN_##index];
#include "stats.def"
    uint64_t start_ms;             /* wall clock at start */
    /* Delay histograms, in rows: the current window and the one before, so
     * percentiles cover the last one to two windows (LAT_WINDOW_MS). */
    uint64_t lat[2][STATS_LAT_BUCKETS];
    unsigned lat_cur;
    uint64_t lat_window_start_ms;
} bf_stats;

extern bf_stats stats;

const char *stats_drop_name(enum bf_drop d);

/* Count n rows lost for reason d, with a rate-limited warn line. */
void stats_drop(enum bf_drop d, unsigned dataset, uint64_t n);

/* The totals across datasets and reasons that the snapshot, the final log
 * line and systemd's STATUS= all report. */
typedef struct stats_totals {
    uint64_t accepted, rejected, delivered, dropped;
} stats_totals;
stats_totals stats_total(void);

/* Record that rows rows were acknowledged delay_ms after receipt.
 * now_ms is loop time, to turn the window. */
void stats_latency(uint64_t delay_ms, uint64_t rows, uint64_t now_ms);

/* The stats line as a new JSON object (caller owns it): every row of
 * stats.def in its order, gauges read from their owners now (after the
 * stats_on_refresh function). For the stats socket and GET /metrics. */
struct json_t;
struct json_t *stats_snapshot(void);

/* Start the stats socket at path, created with mode 0660 (never wider,
 * not even for a moment), writing a line every interval_ms to at most
 * max_clients clients at once (0: 16); one more is closed as it connects,
 * and a client that writes anything is closed. A socket file nobody
 * answers on (left by a crashed run) is replaced; one a running daemon
 * answers on is left alone (-EADDRINUSE), and so is anything that is not a
 * socket (-EEXIST). path NULL or "": counters only, no socket.
 * Returns 0, or a negative errno (libuv's codes are the same) with a
 * message in err (size n). */
int stats_start(uv_loop_t *loop, const char *path, unsigned interval_ms,
                unsigned max_clients, char *err, size_t n);

/* What stats_start checks before it binds, changing nothing: path fits a
 * socket address, its directory exists and is writable (named with the
 * real reason, which a failed bind hides), no daemon answers on it, and
 * nothing that is not a socket is there.
 * Returns 0 or a negative errno with a message in err (size n). */
int stats_check_socket(const char *path, char *err, size_t n);
/* A reload: a new interval between lines (the next line comes one
 * interval from now) and a new cap on clients (0: 16; clients already
 * connected past a lower cap stay, new ones are refused). */
void stats_reconfigure(unsigned interval_ms, unsigned max_clients);

/* Give the stats socket to group gid, mode 0660, so that the group's
 * members connect without root (an operators' group); name is for the
 * message. gid < 0, or no socket: nothing. Called after stats_start, and
 * again by a reload. Returns 0, or a negative errno with a message in err
 * (size n): the daemon's user must be root or in the group. */
int stats_socket_group(long gid, const char *name, char *err, size_t n);

/* Send a last line to clients, close them and the socket, unlink it. */
void stats_stop(void);

/* Called by stats_snapshot before it reads the gauges, so they are fresh. */
typedef void (*stats_refresh_fn)(void *arg);
void stats_on_refresh(stats_refresh_fn fn, void *arg);

#endif /* BF_STATS_H */
