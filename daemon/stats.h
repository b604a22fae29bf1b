/*
 * stats.h: counters and gauges for every stage, and the stats socket.
 *
 * Counters live in one global struct written only from the loop thread
 * (threadpool work reports back through its after-work callback), so they
 * need no atomics. The stats socket is a Unix stream socket: every connected
 * client gets one JSON object per line every interval. A client that does not
 * read loses lines (its write queue is capped) and is closed when it falls
 * far behind, so it can never slow the pipeline.
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

typedef struct bf_stats {
    uint64_t start_ms;             /* wall clock at start */
    uint64_t received;             /* datagrams read from the socket */
    uint64_t received_bytes;
    uint64_t rejected[BF_R_MAX];   /* by reason; [BF_OK] unused */
    uint64_t accepted[BF_DATASET_MAX];
    uint64_t unknown_model;        /* accepted, but not in the catalog */
    uint64_t ip_invalid;           /* ip given but unparseable: emitted "" */
    uint64_t utf8_replaced;        /* events with invalid UTF-8 replaced */
    uint64_t rows_batched[BF_DATASET_MAX];
    uint64_t bytes_batched[BF_DATASET_MAX]; /* NDJSON, uncompressed */
    uint64_t batches[BF_DATASET_MAX];       /* batches closed for sending */
    uint64_t bytes_sent;           /* request bodies as sent (gzip) */
    uint64_t http[STATS_HTTP_CODES];
    uint64_t retries;
    uint64_t rows_delivered[BF_DATASET_MAX];
    uint64_t rows_quarantined[BF_DATASET_MAX];
    uint64_t dropped[DROP_MAX];    /* rows, by reason */
    uint64_t rows_spooled;         /* rows written to the spool */
    uint64_t rows_replayed;        /* rows read back from the spool */
    uint64_t rows_dead_lettered;   /* rows written to the dead-letter file */
    uint64_t spool_torn;           /* torn or corrupt records skipped */
    /* gauges */
    uint64_t kernel_drops;         /* socket drop count (SO_MEMINFO) */
    uint64_t socket_queue_bytes;   /* bytes waiting in the receive queue */
    uint64_t rcvbuf_bytes;         /* SO_RCVBUF granted */
    uint64_t last_flush_ok_ms;     /* wall clock of the last 2xx, 0: never */
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

/* The current counters as a new JSON object (caller owns it). */
struct json_t;
struct json_t *stats_snapshot(void);

/* Start the stats socket at path (unlinks a stale one, mode 0660) writing a
 * line every interval_ms. path NULL or "": counters only, no socket.
 * Returns 0 or a negative libuv error. */
int stats_start(uv_loop_t *loop, const char *path, unsigned interval_ms);
/* Send a last line to clients, close them and the socket, unlink it. */
void stats_stop(void);

/* Called by the stats timer before each snapshot so gauges are fresh. */
typedef void (*stats_refresh_fn)(void *arg);
void stats_on_refresh(stats_refresh_fn fn, void *arg);

#endif /* BF_STATS_H */
