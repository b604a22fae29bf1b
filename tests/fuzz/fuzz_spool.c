/*
 * fuzz_spool.c: the spool's record reader on a real segment file, and the
 * delivery policy's handling of what it reads back.
 *
 * Input: one flags byte, then the bytes of the segment file.
 *   flags & 1  before writing, put the right crc32 into every record
 *              header the file holds (so the fuzzer gets past the crc and
 *              reaches what a corrupt-but-checksummed record does)
 *   flags & 2  hand every replayed batch to the sink policy, whose backend
 *              here answers "too large" for any batch of two rows or more,
 *              so the policy splits it (issue 11, finding 5)
 *   flags & 4  write the bytes as two segments, cut in the middle
 *
 * The file is opened and replayed through the spool's own API (spool_open,
 * spool_read_next, the replay callback, spool_ack) on a libuv loop.
 * Promises checked:
 *   - no read outside a record or a batch buffer (ASan), no hang;
 *   - every replayed batch has a known dataset and no more bytes than the
 *     file, and the rows replayed, with those of records the replay found
 *     bad (dropped.spool_corrupt), add up to the rows the index counted;
 *   - the memory account is back where it was once all is done;
 *   - every replayed batch is rows lines of one JSON object each, and so
 *     is every half the policy makes of it (issue 11, findings 5 and 6).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "memory.h"
#include "sink.h"
#include "spool.h"
#include "stats.h"

#define HDR_LEN 24
#define REC_MAGIC 0x31534642u /* "BFS1" */
#define MAX_JOBS 64

static uv_loop_t loop;
static char dir[4200];
static size_t file_size;
static uint64_t rows_replayed;
static int split_mode;

/* ---- checks on a batch ---- */

static void check_batch(const batch_buf *b, const char *where)
{
    FUZZ_CHECK(b->dataset > 0 && b->dataset < BF_DATASET_MAX, "%s: dataset %u", where,
               b->dataset);
    FUZZ_CHECK(b->len <= b->cap && b->len <= file_size, "%s: %zu bytes (cap %zu, file %zu)",
               where, b->len, b->cap, file_size);
    uint64_t lines = 0;
    FUZZ_CHECK(b->len > 0 && b->data[b->len - 1] == '\n', "%s: not whole lines", where);
    for (size_t i = 0; i < b->len;) {
        const char *nl = memchr(b->data + i, '\n', b->len - i);
        json_error_t e;
        json_t *o = json_loadb(b->data + i, (size_t)(nl - (b->data + i)), 0, &e);
        FUZZ_CHECK(json_is_object(o), "%s: line %llu is not a JSON object", where,
                   (unsigned long long)lines + 1);
        json_decref(o);
        lines++;
        i = (size_t)(nl - b->data) + 1;
    }
    FUZZ_CHECK(lines == b->rows, "%s: %llu lines, %llu rows", where,
               (unsigned long long)lines, (unsigned long long)b->rows);
}

/* ---- a backend that answers on the next loop turn ---- */

static sink_job *jobs[MAX_JOBS];
static size_t njobs;
static uv_timer_t answer_timer;

static int fb_start(uv_loop_t *l, const void *opts, char *err, size_t n)
{
    (void)l, (void)opts, (void)err, (void)n;
    return 0;
}

static void answer_all(uv_timer_t *t)
{
    (void)t;
    sink_job *now[MAX_JOBS];
    size_t n = njobs;
    memcpy(now, jobs, n * sizeof(*now));
    njobs = 0;
    for (size_t i = 0; i < n; i++) {
        sink_job *j = now[i];
        check_batch(j->b, "sent");
        sink_answer a = {.cls = SINK_DONE, .rows_ok = j->b->rows, .wait_ms = -1};
        if (j->b->rows >= 2) {
            a.cls = SINK_TOO_LARGE;
            a.status = 413;
        }
        sink_job_done(j, &a);
    }
}

static int fb_submit(sink_job *j)
{
    FUZZ_CHECK(njobs < MAX_JOBS, "more jobs in progress than the policy allows");
    jobs[njobs++] = j;
    uv_timer_start(&answer_timer, answer_all, 0, 0);
    return 0;
}

static void fb_forget(sink_job *j) { (void)j; }
static void fb_abort(void) {}
static void fb_close(void) {}

static const sink_backend fake_backend = {
    .name = "fuzz", .start = fb_start, .submit = fb_submit,
    .forget = fb_forget, .abort = fb_abort, .close = fb_close,
};

/* ---- the spool ---- */

static void on_replay(batch_buf *b, uint64_t ref, void *arg)
{
    (void)arg;
    check_batch(b, "replayed");
    rows_replayed += b->rows;
    spool_ack(ref, b->rows);
    if (split_mode)
        sink_submit(b);
    else
        batch_buf_free(b);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Put the right crc into each record header, as spool.h defines it: over
 * the 12 header bytes after the crc, then the payload. */
static void fix_crcs(unsigned char *p, size_t size)
{
    size_t off = 0;
    while (size - off >= HDR_LEN && get32(p + off) == REC_MAGIC) {
        uint32_t plen = get32(p + off + 4);
        if (plen > size - off - HDR_LEN)
            return;
        uLong c = crc32(0L, p + off + 12, HDR_LEN - 12);
        c = crc32(c, p + off + HDR_LEN, plen);
        for (int i = 0; i < 4; i++)
            p[off + 8 + i] = (unsigned char)(c >> (8 * i));
        off += HDR_LEN + plen;
    }
}

static void flushed(void *arg) { *(int *)arg = 1; }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    fuzz_quiet_log();
    snprintf(dir, sizeof(dir), "%s/spool", fuzz_tmpdir());
    FUZZ_CHECK(uv_loop_init(&loop) == 0, "uv_loop_init");
    uv_timer_init(&loop, &answer_timer);
    memory_set_cap(1ull << 30);
    sink_opts so = {.backend = &fake_backend, .max_inflight = 4};
    FUZZ_CHECK(sink_start(&loop, &so, err, sizeof(err)) == 0, "sink_start: %s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    unsigned char *file = malloc(size);
    FUZZ_CHECK(file, "out of memory");
    file_size = size - 1;
    memcpy(file, data + 1, file_size);
    if (flags & 1)
        fix_crcs(file, file_size);
    split_mode = (flags & 2) != 0;

    char path[4300], err[256];
    uv_fs_t req;
    uv_fs_mkdir(NULL, &req, dir, 0700, NULL);
    uv_fs_req_cleanup(&req);
    fuzz_empty_dir(dir);
    size_t cut = flags & 4 ? file_size / 2 : file_size;
    snprintf(path, sizeof(path), "%s/%016x.seg", dir, 1);
    fuzz_write_file(path, file, cut);
    if (cut < file_size) {
        snprintf(path, sizeof(path), "%s/%016x.seg", dir, 2);
        fuzz_write_file(path, file + cut, file_size - cut);
    }
    free(file);

    uint64_t mem0 = memory_used();
    spool_opts o = {.dir = dir, .max_bytes = 1ull << 32, .segment_bytes = 1u << 20,
                    .dead_letter_max = 1u << 20};
    FUZZ_CHECK(spool_open(&loop, &o, on_replay, NULL, err, sizeof(err)) == 0,
               "spool_open: %s", err);
    uint64_t rows_indexed = spool_rows_unread();
    uint64_t corrupt0 = stats.dropped[DROP_spool_corrupt];
    rows_replayed = 0;
    while (spool_read_next())
        uv_run(&loop, UV_RUN_DEFAULT);
    uv_run(&loop, UV_RUN_DEFAULT); /* the policy's answers */
    FUZZ_CHECK(sink_pending() == 0, "%u batches still with the policy", sink_pending());
    uint64_t corrupt = stats.dropped[DROP_spool_corrupt] - corrupt0;
    FUZZ_CHECK(rows_replayed + corrupt == rows_indexed,
               "indexed %llu rows, replayed %llu, found bad %llu",
               (unsigned long long)rows_indexed, (unsigned long long)rows_replayed,
               (unsigned long long)corrupt);
    int done = 0;
    spool_flush(flushed, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    FUZZ_CHECK(done, "spool_flush never finished");
    spool_close();
    FUZZ_CHECK(memory_used() == mem0, "memory account %llu, was %llu",
               (unsigned long long)memory_used(), (unsigned long long)mem0);
    return 0;
}
