/*
 * spool.h: the disk spool, where batches wait when memory is full, the sink
 * is down at shutdown, or Tinybird refuses them for good (dead letters).
 *
 * Layout: DIR/<16 hex digits>.seg segment files, append-only, each a run of
 * records:
 *
 *   magic "BFS1" | u32 payload length | u32 crc32 | u8 dataset | u8 0 |
 *   u16 0 | u64 rows | payload (NDJSON rows)          (little endian)
 *
 * The crc covers the 12 bytes after it and the payload, so a crash that
 * leaves a torn last record is detected on read, skipped and counted
 * (stats.spool_torn). Segments are replayed oldest first, one record at a
 * time (never a whole segment in memory), and a segment is deleted once
 * every row read from it was acknowledged or dropped by name. Past
 * max_bytes the oldest segment is deleted and its unread rows are counted
 * as dropped.spool_full.
 *
 * All file I/O runs on the libuv threadpool, one operation at a time in
 * order. Segment bookkeeping (offsets, row counts, the list) happens on the
 * loop thread only; the one exception is a segment's write fd, which the
 * worker running its first append opens, and which the loop thread closes
 * only once no operation uses the segment: operations never overlap, so
 * the two never touch it at once.
 * DIR/lock is the lock one daemon holds on the directory (see spool_open).
 * DIR/dead-letter.ndjson (rotated once to dead-letter.1.ndjson past
 * dead_letter_max) holds batches Tinybird refused: a header line
 * {"dead_letter":{...status, response...}} and then the rows.
 */
#ifndef BF_SPOOL_H
#define BF_SPOOL_H

#include <stdint.h>
#include <uv.h>

#include "batch_buf.h"

typedef struct spool_opts {
    const char *dir;
    uint64_t max_bytes;       /* all segments together */
    uint64_t segment_bytes;   /* a segment is closed past this size */
    uint64_t dead_letter_max; /* dead-letter.ndjson rotates past this */
} spool_opts;

/* A replayed batch and where it came from, for spool_ack. */
typedef void (*spool_replay_cb)(batch_buf *b, uint64_t ref, void *arg);

/* Create DIR (0700, with its parents) when missing, check it, lock it
 * (DIR/lock, flock: one daemon per spool directory, held until
 * spool_close) and index the segments already there (left by an earlier
 * run), checking each record's crc. DIR must be this user's and not
 * writable by others (-EPERM otherwise): records are replayed
 * verbatim, with the token. Blocking: runs before the loop starts. Returns
 * 0, or a negative errno with a message in err (size n): -EBUSY, naming the
 * PID, when another process holds the lock. A segment that cannot be read
 * (a symlink, say) is logged and left on disk.
 *
 * The crc finds torn writes, not forged records. So the rows of a record
 * are checked too: a payload ending in a newline, as many newlines as the
 * header's row count (here, for every record), and each line one JSON
 * object (at replay). A record that fails is skipped alone, its lines
 * counted as dropped.spool_corrupt, and logged (spool_corrupt). */
int spool_open(uv_loop_t *loop, const spool_opts *opts, spool_replay_cb cb,
               void *arg, char *err, size_t n);

/* Whether spool_open could check and lock dir now, changing nothing: 0,
 * or -EPERM (not ours, or others may write it), -EBUSY naming the PID that
 * holds it, or another negative errno, with the reason in err. */
int spool_check_lock(const char *dir, char *err, size_t n);

/* New caps from a reload: max_bytes (a lower one drops the oldest
 * segments now, counted as dropped.spool_full), segment_bytes (from the
 * next rotation) and dead_letter_max; dir is not changed. */
void spool_reconfigure(const spool_opts *opts);

/* Write b as one record; the spool owns b from here. Rows that cannot be
 * written are counted (dropped.spool_write, dropped.spool_full). */
void spool_append(batch_buf *b);

/* Start reading the next unread record, when there is one and no read is
 * already under way; cb then receives it. A record whose rows fail their
 * checks (see spool_open) is skipped, counted and logged, and the read goes
 * on to the next one. Returns 1 when a read started. */
int spool_read_next(void);

/* Rows of a replayed batch (ref from cb) reached a final state: delivered,
 * or dropped and counted. */
void spool_ack(uint64_t ref, uint64_t rows);

/* Append b with the response that refused it to the dead-letter file;
 * the spool owns b from here. A copy that cannot be written is logged
 * (dead_letter_write_failed); its rows were counted as dropped already. */
void spool_dead_letter(batch_buf *b, long status, const char *body);

/* Rows waiting in the spool and not yet read for replay. */
uint64_t spool_rows_unread(void);

/* Bytes of valid records in the segment files, and the number of segment
 * files: gauges, read by stats. 0 when the spool is not open. */
uint64_t spool_bytes(void);
uint64_t spool_segments(void);
/* max_bytes (--max-spool-bytes) while the spool is open, else 0. */
uint64_t spool_cap(void);

/* Bytes of appends queued or being written: batches still in memory that
 * the spool frees as it writes them. */
uint64_t spool_writing_bytes(void);

/* Call done once every queued write has finished. */
void spool_flush(void (*done)(void *arg), void *arg);

/* Close files and free the index (after spool_flush's done). */
void spool_close(void);

#endif /* BF_SPOOL_H */
