/*
 * sink_kafka.h: the backend that produces batches to Kafka through
 * librdkafka (sink_backend.h has the contract it keeps), for fleets whose
 * request rate outgrows the Events API (docs/scale.md).
 *
 * Each row of a batch is one message, without its newline, keyed by the
 * row's id (so a row sent again lands in the same partition), to the topic
 * <topic_prefix><dataset>. The producer is idempotent with acks=all;
 * librdkafka compresses message sets. Payloads are not copied: messages
 * point into job->b, which stays valid until the job is answered, and the
 * job is answered only when every message produced for it has its delivery
 * report.
 *
 * Threads: librdkafka runs its own. Its main queue (delivery reports, errors
 * and, with log.queue, log lines) signals a pipe when it gets an event; a
 * uv_poll_t on the pipe serves the queue with rd_kafka_poll on the loop
 * thread, so every callback (and every answer) runs there.
 *
 * Delivery reports (and produce calls), by row:
 *
 *   success                      the row is done
 *   too large, invalid record,   the row is refused for good (logged)
 *   policy violation
 *   topic missing                the sender is refused: a hold, not_found
 *   not authorized, SASL failed  the sender is refused: a hold, unauthorized
 *   anything else (timeout,      the row is to be sent again
 *   broker down, purged)
 *
 * When the last report of an attempt is in: rows still to send make the
 * answer SINK_HOLD (when a row's report was a hold; hint names the topic,
 * the brokers and what to check) or SINK_RETRY (wait_ms -1), and the next
 * submit of the job produces those rows only (which rows are done is kept
 * in job->priv); no row left, none refused: SINK_DONE; all refused:
 * SINK_REJECT (dropped.kafka_rejected, dead-lettered with a spool); some
 * refused and the others done: SINK_DONE with rows_dropped. status carries
 * the last Kafka error code.
 *
 * Memory: librdkafka's queue (queue.buffering.max.kbytes) is bounded by
 * max_memory; what it holds beyond the batch itself (per message: its
 * struct, the key and the copy into a request) is reserved in memory.h
 * before an attempt produces anything, all at once, and released on each
 * message's report; refused, submit returns -ENOMEM and produces nothing.
 * A full queue ends the attempt early, as a retry.
 *
 * The options are read at start only (the strings are not kept: the
 * producer's configuration is made once, and a new producer starts from a
 * copy of it). There is no reconfigure(): a reload keeps the producer as
 * it is and applies the policy's own options whatever Kafka setting
 * changed; main.c names the changed Kafka options (brokers,
 * prefix, compression, properties, password file) for a restart. A new
 * password in the same file is read at a restart too.
 *
 * abort() purges librdkafka's queues; the purged messages' reports (a
 * retry) follow on the loop. A fatal producer error (idempotence) makes
 * submit fail until the last report is in; then the producer is made anew.
 */
#ifndef BF_SINK_KAFKA_H
#define BF_SINK_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "sink_backend.h"

typedef struct sink_kafka_opts {
    const char *brokers;           /* bootstrap.servers */
    const char *topic_prefix;      /* NULL or "": the dataset name alone */
    const char *compression;       /* compression.codec */
    const char *const *properties; /* KEY=VALUE librdkafka settings, in order */
    /* every string: borrowed during start only */
    size_t n_properties;
    const char *password;          /* sasl.password, or NULL */
    uint64_t max_memory;           /* bounds librdkafka's queue; 0: its default */
} sink_kafka_opts;

extern const sink_backend sink_kafka;

/* The key of one NDJSON row: the text of its leading "id" string, escapes
 * as written. Returns its length and sets *key, or 0 when the row does not
 * start with {"id":"...". For tests and for sink_kafka.c. */
size_t sink_kafka_row_key(const char *row, size_t len, const char **key);

#endif /* BF_SINK_KAFKA_H */
