/*
 * test_spool.c: daemon/spool.c: records on disk in the documented format
 * (docs/delivery.md), replay in order and byte-exact, deletion once read
 * and acknowledged, rotation, the max_bytes bound and its exact drop
 * count, reopening a directory left by an earlier run, torn and corrupt
 * records, dead letters and their rotation, spool_flush.
 *
 * Each test runs a loop of its own (uv_loop_init) and a spool in a fresh
 * temporary directory; at the end spool_flush, spool_close, the loop runs
 * until every handle is closed and uv_loop_close() must return 0. The
 * replay callback keeps the batches it receives; the test frees them, so
 * memory_used() is 0 at the end. Log lines go to a file.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

#include "batch.h"
#include "spool.h"
#include "memory.h"
#include "stats.h"
#include "testutil.h"

#define HDR 24 /* record header bytes */

static uv_loop_t loop;
static char tmpdir[64];
static char dir[128];
static char log_path[128];
static int saved_stderr = -1;
static spool_opts opts;

typedef struct replayed {
    batch_buf *b;
    uint64_t ref;
} replayed;
static replayed rep[64];
static int nrep;
static int auto_read; /* the callback asks for the next record, as the sink does */
static int replay_arg;
static void *replay_arg_seen;

static void on_replay(batch_buf *b, uint64_t ref, void *arg)
{
    ck_assert_int_lt(nrep, N(rep));
    rep[nrep].b = b;
    rep[nrep].ref = ref;
    nrep++;
    replay_arg_seen = arg;
    if (auto_read)
        spool_read_next();
}

static void spool_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    memset(rep, 0, sizeof(rep));
    nrep = 0;
    auto_read = 0;
    replay_arg_seen = NULL;
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "spool");
    snprintf(dir, sizeof(dir), "%s/spool", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    saved_stderr = tu_stderr_to(log_path);
    opts = (spool_opts){.dir = dir, .max_bytes = 1 << 20, .segment_bytes = 1 << 20,
                        .dead_letter_max = 1 << 20};
    ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void spool_teardown(void)
{
    tu_stderr_restore(saved_stderr, log_path);
    saved_stderr = -1;
    tu_rmtree(tmpdir);
}

static void open_spool(void)
{
    char err[256] = "";
    ck_assert_msg(spool_open(&loop, &opts, on_replay, &replay_arg, err, sizeof(err)) == 0,
                  "spool_open: %s", err);
}

static void on_flushed(void *arg)
{
    (*(uint64_t *)arg)++;
}

/* spool_flush and turn the loop until its done ran. */
static void flush_wait(void)
{
    uint64_t done = 0;
    spool_flush(on_flushed, &done);
    ck_assert_msg(tu_run_until_u64(&loop, &done, 1, 5000), "spool_flush: no done");
    ck_assert_uint_eq(done, 1);
}

static void free_replayed(void)
{
    for (int i = 0; i < nrep; i++)
        batch_buf_free(rep[i].b);
    nrep = 0;
}

/* Flush, close the spool, close the loop; the replayed batches are freed. */
static void close_spool(void)
{
    flush_wait();
    spool_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    free_replayed();
}

static void finish(void)
{
    close_spool();
    ck_assert_uint_eq(memory_used(), 0);
}

/* close_spool, then a new loop and the spool opened again on the same dir,
 * counters reset, as a restarted daemon. */
static void reopen(void)
{
    close_spool();
    memset(&stats, 0, sizeof(stats));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    open_spool();
}

/* Text of tu_batch(ds, n, tag), for comparisons; a static buffer. */
static const char *rows_text(int n, const char *tag, size_t *len)
{
    static char out[16384];
    *len = tu_rows(out, sizeof(out), n, tag);
    return out;
}

static void seg_file(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%s/%016llx.seg", dir, (unsigned long long)seq);
}

static long long seg_size(uint64_t seq)
{
    char p[256];
    seg_file(p, sizeof(p), seq);
    return tu_file_size(p);
}

/* Number of *.seg files in dir. */
static int seg_count(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strlen(e->d_name) > 4 && strcmp(e->d_name + strlen(e->d_name) - 4, ".seg") == 0)
            n++;
    closedir(d);
    return n;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* XOR byte off of path with 0x01. */
static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    int c = fgetc(f);
    ck_assert_int_ne(c, EOF);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_int_ne(fputc(c ^ 0x01, f), EOF);
    ck_assert_int_eq(fclose(f), 0);
}

/* Read every record there is, one at a time (auto_read), until nrep is
 * want; then check that nothing more comes. */
static int pred_nrep(void *arg)
{
    return nrep >= *(int *)arg;
}

static void replay_all(int want)
{
    auto_read = 1;
    spool_read_next();
    tu_run_until(&loop, pred_nrep, &want, 3000);
    tu_run_for(&loop, 20); /* and nothing more */
    ck_assert_int_eq(nrep, want);
    auto_read = 0;
    ck_assert_int_eq(spool_read_next(), 0);
}

/* rep[i] holds tu_batch(ds, n, tag)'s rows, from segment ref. */
static void check_replayed(int i, unsigned ds, int n, const char *tag, uint64_t ref)
{
    size_t len;
    const char *want = rows_text(n, tag, &len);
    batch_buf *b = rep[i].b;
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->dataset, ds);
    ck_assert_uint_eq(b->rows, (uint64_t)n);
    ck_assert_uint_eq(b->len, len);
    ck_assert_int_eq(memcmp(b->data, want, len), 0);
    ck_assert_uint_eq(rep[i].ref, ref);
}

/* ---- open, append, the format ----------------------------------------- */

START_TEST(test_spool_open_empty)
{
    open_spool();
    struct stat st;
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 0777, 0700);
    ck_assert_uint_eq(spool_bytes(), 0);
    ck_assert_uint_eq(spool_segments(), 0);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    ck_assert_int_eq(spool_read_next(), 0);
    ck_assert_int_eq(seg_count(), 0);
    finish();
    ck_assert_int_eq(nrep, 0);
}
END_TEST

/* A segment that cannot be opened is named in the log and left on disk,
 * and new segments are numbered after it (so it is never overwritten).
 * Issue 11, finding 8: a segment that is a symlink is such a segment, even
 * when it points at good records elsewhere: they are not replayed (the
 * spool would send rows someone else chose, with the daemon's token). */
START_TEST(test_spool_unreadable_segment_logged_and_kept)
{
    char seg[256], target[256], path[256];
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    unsigned char buf[512];
    const char *rows = "{\"id\":\"planted\"}\n";
    size_t len = tu_spool_record(buf, BF_DATASET_llm_events, 1, rows, strlen(rows));
    snprintf(target, sizeof(target), "%s/elsewhere.seg", tmpdir);
    tu_write_file(target, (const char *)buf, len);
    snprintf(seg, sizeof(seg), "%s/0000000000000005.seg", dir);
    ck_assert_int_eq(symlink(target, seg), 0);
    open_spool();
    ck_assert_uint_eq(spool_segments(), 0);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    spool_append(tu_batch(BF_DATASET_llm_events, 1, "after"));
    flush_wait();
    snprintf(path, sizeof(path), "%s/0000000000000006.seg", dir);
    ck_assert_int_gt(tu_file_size(path), 0);
    struct stat st;
    ck_assert_int_eq(lstat(seg, &st), 0); /* still there */
    replay_all(1);
    ck_assert_ptr_null(memmem(rep[0].b->data, rep[0].b->len, "planted", 7));
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg(strstr(log, "event=spool_segment_unreadable segment=0000000000000005") &&
                      strstr(log, "Too many levels of symbolic links"), "log: %s", log);
    free(log);
}
END_TEST

START_TEST(test_spool_open_error)
{
    char file[128], bad[192], err[256] = "";
    snprintf(file, sizeof(file), "%s/file", tmpdir);
    tu_write_file(file, "x", 1);
    snprintf(bad, sizeof(bad), "%s/sub", file); /* under a regular file */
    opts.dir = bad;
    ck_assert_int_eq(spool_open(&loop, &opts, on_replay, NULL, err, sizeof(err)), -ENOTDIR);
    ck_assert_msg(strstr(err, bad) != NULL, "err '%s'", err);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* Records on disk are exactly the documented format. */
START_TEST(test_spool_append_format)
{
    open_spool();
    batch_buf *in[3] = {tu_batch(BF_DATASET_llm_events, 3, "a"),
                        tu_batch(BF_DATASET_image_events, 1, "b"),
                        tu_batch(BF_DATASET_llm_events, 5, "c")};
    size_t total = 0;
    uint64_t rows = 0;
    for (int i = 0; i < 3; i++) {
        total += HDR + in[i]->len;
        rows += in[i]->rows;
    }
    for (int i = 0; i < 3; i++)
        spool_append(in[i]); /* the spool owns them now */
    flush_wait();
    ck_assert_uint_eq(memory_used(), 0); /* freed once written */
    ck_assert_uint_eq(stats.rows_spooled, rows);
    ck_assert_uint_eq(spool_rows_unread(), rows);
    ck_assert_uint_eq(spool_bytes(), total);
    ck_assert_uint_eq(spool_segments(), 1);
    ck_assert_int_eq(seg_count(), 1);

    char path[256];
    seg_file(path, sizeof(path), 1);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    size_t len;
    unsigned char *f = (unsigned char *)tu_read_file(path, &len);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(len, total);
    const struct {
        unsigned ds;
        int n;
        const char *tag;
    } want[3] = {{BF_DATASET_llm_events, 3, "a"}, {BF_DATASET_image_events, 1, "b"},
                 {BF_DATASET_llm_events, 5, "c"}};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        size_t plen;
        const char *payload = rows_text(want[i].n, want[i].tag, &plen);
        unsigned char rec[8192];
        size_t rl = tu_spool_record(rec, want[i].ds, (uint64_t)want[i].n, payload, plen);
        ck_assert_uint_le(off + rl, len);
        ck_assert_msg(memcmp(f + off, rec, rl) == 0, "record %d differs", i);
        ck_assert_uint_eq(get32(f + off + 4), plen);
        off += rl;
    }
    ck_assert_uint_eq(off, len);
    free(f);
    finish();
}
END_TEST

/* spool_flush's done runs after every write queued before it, never from
 * inside spool_flush. */
START_TEST(test_spool_flush_after_writes)
{
    open_spool();
    uint64_t done = 0;
    spool_flush(on_flushed, &done);
    ck_assert_uint_eq(done, 0);
    ck_assert(tu_run_until_u64(&loop, &done, 1, 2000)); /* idle: at once */
    for (int i = 0; i < 4; i++)
        spool_append(tu_batch(BF_DATASET_llm_events, 2, "f"));
    done = 0;
    spool_flush(on_flushed, &done);
    ck_assert_uint_eq(done, 0);
    ck_assert_uint_eq(stats.rows_spooled, 0);
    ck_assert(tu_run_until_u64(&loop, &done, 1, 2000));
    ck_assert_uint_eq(stats.rows_spooled, 8);
    size_t plen;
    rows_text(2, "f", &plen);
    ck_assert_int_eq(seg_size(1), (long long)(4 * (HDR + plen)));
    finish();
}
END_TEST

/* ---- replay and acknowledgement ---------------------------------------- */

START_TEST(test_spool_replay_in_order)
{
    open_spool();
    spool_append(tu_batch(BF_DATASET_llm_events, 3, "a"));
    spool_append(tu_batch(BF_DATASET_image_events, 1, "b"));
    spool_append(tu_batch(BF_DATASET_llm_events, 5, "c"));
    flush_wait();
    /* One read at a time. */
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert_int_eq(spool_read_next(), 0);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_replayed, 3, 2000));
    ck_assert_int_eq(nrep, 1);
    ck_assert_ptr_eq(replay_arg_seen, &replay_arg);
    check_replayed(0, BF_DATASET_llm_events, 3, "a", 1);
    ck_assert_uint_eq(spool_rows_unread(), 6);
    replay_all(3);
    check_replayed(1, BF_DATASET_image_events, 1, "b", 1);
    check_replayed(2, BF_DATASET_llm_events, 5, "c", 1);
    ck_assert_uint_eq(stats.rows_replayed, 9);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    uint64_t caps = 0;
    for (int i = 0; i < 3; i++)
        caps += rep[i].b->cap;
    ck_assert_uint_eq(memory_used(), caps); /* replayed batches count */

    /* Deleted only once every row read from it was acknowledged. */
    spool_ack(1, 3);
    spool_ack(1, 1);
    flush_wait();
    ck_assert_int_eq(seg_count(), 1);
    ck_assert_uint_eq(spool_segments(), 1);
    spool_ack(1, 5);
    ck_assert_uint_eq(spool_segments(), 0);
    ck_assert_uint_eq(spool_bytes(), 0);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    ck_assert_int_eq(seg_size(1), -1);

    /* The next append starts a new segment. */
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "d"));
    flush_wait();
    ck_assert_int_gt(seg_size(2), 0);
    ck_assert_uint_eq(spool_segments(), 1);
    finish();
}
END_TEST

/* An acknowledgement for a segment that is not there changes nothing. */
START_TEST(test_spool_ack_unknown)
{
    open_spool();
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "a"));
    flush_wait();
    replay_all(1);
    spool_ack(99, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 1);
    spool_ack(1, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* A segment closes once it reaches segment_bytes; appends awaited one by one. */
START_TEST(test_spool_rotation)
{
    size_t plen;
    rows_text(2, "r", &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 2 * rec; /* two records per segment */
    open_spool();
    for (int i = 0; i < 5; i++) {
        spool_append(tu_batch(BF_DATASET_llm_events, 2, "r"));
        flush_wait();
    }
    ck_assert_int_eq(seg_count(), 3);
    ck_assert_int_eq(seg_size(1), (long long)(2 * rec));
    ck_assert_int_eq(seg_size(2), (long long)(2 * rec));
    ck_assert_int_eq(seg_size(3), (long long)rec);
    ck_assert_uint_eq(spool_segments(), 3);
    ck_assert_uint_eq(spool_bytes(), 5 * rec);
    replay_all(5);
    const uint64_t refs[5] = {1, 1, 2, 2, 3};
    for (int i = 0; i < 5; i++)
        check_replayed(i, BF_DATASET_llm_events, 2, "r", refs[i]);
    /* Acknowledging segment 2's rows deletes segment 2 only. */
    spool_ack(2, 2);
    spool_ack(2, 2);
    flush_wait();
    ck_assert_int_eq(seg_size(1), (long long)(2 * rec));
    ck_assert_int_eq(seg_size(2), -1);
    ck_assert_int_eq(seg_size(3), (long long)rec);
    ck_assert_uint_eq(spool_segments(), 2);
    spool_ack(1, 4);
    spool_ack(3, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* Regression test (the daemon failed it until fixed): spool_append rotates only in the
 * append's after-work callback, so appends queued back to back (the
 * shutdown deadline spools every waiting batch at once) all go into the
 * segment that was active when they were queued, however far past
 * segment_bytes it grows. Here five two-record-per-segment appends make
 * one segment of five records. Fix: count the bytes queued for a segment
 * at spool_append time (a per-segment queued_bytes) and start a new
 * segment once bytes + queued_bytes reaches segment_bytes. */
START_TEST(test_spool_rotation_back_to_back)
{
    size_t plen;
    rows_text(2, "r", &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 2 * rec;
    open_spool();
    for (int i = 0; i < 5; i++)
        spool_append(tu_batch(BF_DATASET_llm_events, 2, "r"));
    flush_wait();
    ck_assert_int_eq(seg_size(1), (long long)(2 * rec));
    ck_assert_int_eq(seg_size(2), (long long)(2 * rec));
    ck_assert_int_eq(seg_size(3), (long long)rec);
    finish();
}
END_TEST

/* ---- the max_bytes bound ----------------------------------------------- */

/* Open the spool with one record per segment and a cap of cap_records
 * records, and append n records of 4 rows of tag, whose header says 1, 2,
 * ... n rows (same size, told apart by their row counts). Returns the size
 * of one record. */
static uint64_t spool_of_records(int n, uint64_t cap_records, const char *tag)
{
    size_t plen;
    rows_text(4, tag, &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 1;
    opts.max_bytes = cap_records * rec;
    open_spool();
    for (int i = 1; i <= n; i++) {
        batch_buf *b = tu_batch(BF_DATASET_llm_events, 4, tag);
        b->rows = (uint64_t)i;
        spool_append(b);
        flush_wait();
    }
    ck_assert_int_eq(seg_count(), n);
    return rec;
}

/* Past max_bytes the oldest segment goes; its unread rows are counted as
 * dropped.spool_full, exactly. */
START_TEST(test_spool_max_bytes_drops_oldest)
{
    const uint64_t rec = spool_of_records(3, 3, "m");
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 0);
    batch_buf *b = tu_batch(BF_DATASET_llm_events, 4, "m");
    b->rows = 4;
    spool_append(b);
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 1); /* segment 1's row */
    flush_wait();
    ck_assert_int_eq(seg_size(1), -1);
    ck_assert_int_eq(seg_size(2), (long long)rec);
    ck_assert_int_eq(seg_size(3), (long long)rec);
    ck_assert_int_eq(seg_size(4), (long long)rec);
    ck_assert_uint_eq(spool_bytes(), 3 * rec);
    ck_assert_uint_eq(spool_segments(), 3);
    ck_assert_uint_eq(spool_rows_unread(), 2 + 3 + 4);
    ck_assert_uint_eq(stats.rows_spooled, 1 + 2 + 3 + 4);

    /* Two more: segments 2 and 3 go, 2 + 3 rows. */
    for (int i = 0; i < 2; i++) {
        spool_append(tu_batch(BF_DATASET_llm_events, 4, "m"));
        flush_wait();
    }
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 1 + 2 + 3);
    ck_assert_int_eq(seg_count(), 3);
    ck_assert_uint_eq(spool_rows_unread(), 4 + 4 + 4);

    /* A record larger than max_bytes on its own is dropped, nothing else. */
    batch_buf *big = batch_buf_new(BF_DATASET_llm_events, 3 * rec);
    memset(big->data, 'x', big->cap);
    big->len = big->cap;
    big->rows = 7;
    spool_append(big);
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 1 + 2 + 3 + 7);
    flush_wait();
    ck_assert_int_eq(seg_count(), 3);
    ck_assert_uint_eq(spool_rows_unread(), 12);

    /* The survivors replay in order. */
    replay_all(3);
    for (int i = 0; i < 3; i++)
        check_replayed(i, BF_DATASET_llm_events, 4, "m", (uint64_t)(4 + i));
    finish();
}
END_TEST

/* A reload's lower cap applies at once, oldest segments first, counted;
 * a smaller segment size from the next rotation; dir is not changed. */
START_TEST(test_spool_reconfigure)
{
    const uint64_t rec = spool_of_records(4, 10, "c");
    spool_opts o = opts;
    o.dir = "/nonexistent";
    o.max_bytes = 2 * rec;
    spool_reconfigure(&o);
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 1 + 2); /* now, not later */
    flush_wait();
    ck_assert_int_eq(seg_size(1), -1);
    ck_assert_int_eq(seg_size(2), -1);
    ck_assert_uint_eq(spool_bytes(), 2 * rec);
    ck_assert_uint_eq(spool_rows_unread(), 3 + 4);
    /* Large segments now: the open segment (4) takes the next two. */
    o.max_bytes = 10 * rec;
    o.segment_bytes = 1 << 20;
    spool_reconfigure(&o);
    spool_append(tu_batch(BF_DATASET_llm_events, 4, "c"));
    flush_wait();
    spool_append(tu_batch(BF_DATASET_llm_events, 4, "c"));
    flush_wait();
    ck_assert_int_eq(seg_count(), 2);
    ck_assert_int_eq(seg_size(4), (long long)(3 * rec));
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 3);
    finish();
}
END_TEST

/* A dropped segment with rows out for delivery: only its unread rows are
 * counted; the file goes once the rows out are acknowledged. */
START_TEST(test_spool_max_bytes_rows_out)
{
    size_t plen;
    rows_text(2, "o", &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 2 * rec;
    opts.max_bytes = 2 * rec;
    open_spool();
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "o"));
    flush_wait();
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "o"));
    flush_wait();
    ck_assert_int_eq(spool_read_next(), 1); /* the first record goes out */
    ck_assert(tu_run_until_u64(&loop, &stats.rows_replayed, 2, 2000));
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "o")); /* segment 1 goes */
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 2); /* the unread record */
    flush_wait();
    ck_assert_int_eq(seg_size(1), (long long)(2 * rec)); /* still read from */
    ck_assert_int_eq(seg_size(2), (long long)rec);
    ck_assert_uint_eq(spool_rows_unread(), 2);
    spool_ack(1, 2);
    flush_wait();
    ck_assert_int_eq(seg_size(1), -1);
    ck_assert_int_eq(seg_count(), 1);
    replay_all(2);
    check_replayed(1, BF_DATASET_llm_events, 2, "o", 2);
    ck_assert_uint_eq(stats.dropped[DROP_spool_full], 2);
    finish();
}
END_TEST

/* Regression test (the daemon failed it until fixed): live_bytes() counts written
 * segments and queued appends but not the append running on the
 * threadpool, so appends made back to back overshoot max_bytes by that
 * record. Here max_bytes is two records, three are appended at once, and
 * all three stay on disk. Fix: count the running append too (keep the
 * running op in sp, or a queued-bytes total decremented in op_after). */
START_TEST(test_spool_max_bytes_back_to_back)
{
    size_t plen;
    rows_text(2, "q", &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 1;
    opts.max_bytes = 2 * rec;
    open_spool();
    for (int i = 0; i < 3; i++)
        spool_append(tu_batch(BF_DATASET_llm_events, 2, "q"));
    flush_wait();
    ck_assert_uint_le(spool_bytes(), opts.max_bytes);
    /* Every row appended is either waiting or counted as dropped. */
    ck_assert_uint_eq(spool_rows_unread() + stats.dropped[DROP_spool_full], 6);
    finish();
}
END_TEST

/* After spool_close, appends are counted as dropped.spool_write. */
START_TEST(test_spool_append_closed)
{
    open_spool();
    flush_wait();
    spool_close();
    spool_append(tu_batch(BF_DATASET_llm_events, 3, "z"));
    ck_assert_uint_eq(stats.dropped[DROP_spool_write], 3);
    ck_assert_uint_eq(memory_used(), 0);
    ck_assert_int_eq(spool_read_next(), 0);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_int_eq(seg_count(), 0);
}
END_TEST

/* ---- a directory left by an earlier run --------------------------------- */

START_TEST(test_spool_reopen_replays)
{
    size_t plen;
    rows_text(3, "p", &plen);
    const uint64_t rec = HDR + plen;
    opts.segment_bytes = 2 * rec;
    open_spool();
    for (int i = 0; i < 3; i++) {
        spool_append(tu_batch(i == 1 ? BF_DATASET_image_events : BF_DATASET_llm_events, 3,
                                "p"));
        flush_wait();
    }
    ck_assert_int_eq(seg_count(), 2);
    reopen();
    ck_assert_uint_eq(spool_segments(), 2);
    ck_assert_uint_eq(spool_bytes(), 3 * rec);
    ck_assert_uint_eq(spool_rows_unread(), 9);
    ck_assert_uint_eq(stats.spool_torn, 0);
    ck_assert_uint_eq(stats.rows_spooled, 0);
    /* New appends go to a new segment after the last one found. */
    spool_append(tu_batch(BF_DATASET_llm_events, 1, "n"));
    flush_wait();
    ck_assert_int_gt(seg_size(3), 0);
    replay_all(4);
    check_replayed(0, BF_DATASET_llm_events, 3, "p", 1);
    check_replayed(1, BF_DATASET_image_events, 3, "p", 1);
    check_replayed(2, BF_DATASET_llm_events, 3, "p", 2);
    check_replayed(3, BF_DATASET_llm_events, 1, "n", 3);
    for (int i = 0; i < 4; i++)
        spool_ack(rep[i].ref, rep[i].b->rows);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* A segment written by hand to the documented format is indexed and
 * replayed; names that are not segments are left alone; an empty segment
 * (a crash right after creating it) is removed. */
START_TEST(test_spool_reopen_crafted)
{
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    unsigned char buf[8192];
    size_t l1, l2, off;
    const char *p1 = "{\"id\":\"x-1\"}\n{\"id\":\"x-2\"}\n";
    l1 = strlen(p1);
    const char *p2 = "{\"id\":\"y-1\",\"prompt\":\"a cat\"}\n";
    l2 = strlen(p2);
    off = tu_spool_record(buf, BF_DATASET_llm_events, 2, p1, l1);
    off += tu_spool_record(buf + off, BF_DATASET_image_events, 1, p2, l2);
    char path[256], other[256];
    seg_file(path, sizeof(path), 0xa0);
    tu_write_file(path, (const char *)buf, off);
    seg_file(other, sizeof(other), 0x10); /* empty */
    tu_write_file(other, "", 0);
    const char *keep[] = {"dead-letter.ndjson", "foo.seg", "0000000000000001.segx",
                          "000000000000001.seg"};
    for (int i = 0; i < N(keep); i++) {
        snprintf(other, sizeof(other), "%s/%s", dir, keep[i]);
        tu_write_file(other, "junk", 4);
    }
    open_spool();
    ck_assert_uint_eq(spool_segments(), 1);
    ck_assert_uint_eq(spool_bytes(), off);
    ck_assert_uint_eq(spool_rows_unread(), 3);
    ck_assert_uint_eq(stats.spool_torn, 0);
    flush_wait();
    ck_assert_int_eq(seg_size(0x10), -1);
    replay_all(2);
    ck_assert_uint_eq(rep[0].ref, 0xa0);
    ck_assert_uint_eq(rep[0].b->dataset, BF_DATASET_llm_events);
    ck_assert_uint_eq(rep[0].b->rows, 2);
    ck_assert_uint_eq(rep[0].b->len, l1);
    ck_assert_int_eq(memcmp(rep[0].b->data, p1, l1), 0);
    ck_assert_uint_eq(rep[1].b->dataset, BF_DATASET_image_events);
    ck_assert_uint_eq(rep[1].b->len, l2);
    ck_assert_int_eq(memcmp(rep[1].b->data, p2, l2), 0);
    spool_append(tu_batch(BF_DATASET_llm_events, 1, "n"));
    flush_wait();
    ck_assert_int_gt(seg_size(0xa1), 0);
    for (int i = 0; i < N(keep); i++) {
        snprintf(other, sizeof(other), "%s/%s", dir, keep[i]);
        ck_assert_int_eq(tu_file_size(other), 4);
    }
    finish();
}
END_TEST

/* Three records in segment 1; returns the size of one (all the same). */
static uint64_t three_records(void)
{
    size_t plen;
    rows_text(2, "t", &plen);
    open_spool();
    for (int i = 0; i < 3; i++)
        spool_append(tu_batch(BF_DATASET_llm_events, 2, "t"));
    flush_wait();
    ck_assert_int_eq(seg_size(1), (long long)(3 * (HDR + plen)));
    return HDR + plen;
}

/* A torn tail, cut at each of these offsets into the last record: the
 * record is skipped and counted once, the two before it are replayed, and
 * the segment (torn tail included) is deleted after their acks. */
static const int cuts[] = {1, 3, 4, 8, 12, 20, 23, 24, 25, -1 /* rec - 1 */};

START_TEST(test_spool_torn_tail)
{
    uint64_t rec = three_records();
    close_spool();
    char path[256];
    seg_file(path, sizeof(path), 1);
    long cut = cuts[_i] < 0 ? (long)rec - 1 : cuts[_i];
    ck_assert_int_eq(truncate(path, (off_t)(2 * rec + (uint64_t)cut)), 0);
    memset(&stats, 0, sizeof(stats));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    open_spool();
    ck_assert_uint_eq(stats.spool_torn, 1);
    ck_assert_uint_eq(spool_bytes(), 2 * rec);
    ck_assert_uint_eq(spool_rows_unread(), 4);
    replay_all(2);
    check_replayed(0, BF_DATASET_llm_events, 2, "t", 1);
    check_replayed(1, BF_DATASET_llm_events, 2, "t", 1);
    ck_assert_uint_eq(stats.spool_torn, 1); /* counted once */
    spool_ack(1, 2);
    spool_ack(1, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* One byte flipped in the second record (header or rows): its crc (or
 * magic, or length) no longer matches; it and the rest of the segment are
 * skipped, counted once in spool_torn; the first record is replayed. */
static const int flips[] = {0, 3, 4, 8, 11, 12, 13, 15, 16, 23, 24, 30, -1 /* last */};

START_TEST(test_spool_corrupt_record)
{
    uint64_t rec = three_records();
    close_spool();
    char path[256];
    seg_file(path, sizeof(path), 1);
    long off = flips[_i] < 0 ? (long)(2 * rec - 1) : (long)rec + flips[_i];
    flip_byte(path, off);
    memset(&stats, 0, sizeof(stats));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    open_spool();
    ck_assert_uint_eq(stats.spool_torn, 1);
    ck_assert_uint_eq(spool_bytes(), rec);
    ck_assert_uint_eq(spool_rows_unread(), 2);
    replay_all(1);
    check_replayed(0, BF_DATASET_llm_events, 2, "t", 1);
    spool_ack(1, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* A record that goes bad after it was written and indexed is found when
 * read: counted in spool_torn, no callback, the rest of the segment is
 * skipped; the segment goes once the rows already out are acknowledged. */
START_TEST(test_spool_corrupt_at_read)
{
    uint64_t rec = three_records();
    char path[256];
    seg_file(path, sizeof(path), 1);
    flip_byte(path, (long)(rec + HDR + 5)); /* the second record's rows */
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_replayed, 2, 2000));
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.spool_torn, 1, 2000));
    tu_run_for(&loop, 20);
    ck_assert_int_eq(nrep, 1);
    check_replayed(0, BF_DATASET_llm_events, 2, "t", 1);
    ck_assert_uint_eq(stats.spool_torn, 1);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    ck_assert_int_eq(spool_read_next(), 0);
    flush_wait();
    ck_assert_int_eq(seg_count(), 1);
    spool_ack(1, 2);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0);
    finish();
}
END_TEST

/* ---- dead letters ------------------------------------------------------ */

/* Parse the dead-letter header line at *p (advanced past it). */
static json_t *header_line(const char **p)
{
    const char *nl = strchr(*p, '\n');
    ck_assert_ptr_nonnull(nl);
    json_error_t e;
    json_t *o = json_loadb(*p, (size_t)(nl - *p), 0, &e);
    ck_assert_msg(o != NULL, "header: %s", e.text);
    *p = nl + 1;
    json_t *d = json_object_get(o, "dead_letter");
    ck_assert(json_is_object(d));
    json_incref(d);
    json_decref(o);
    return d;
}

START_TEST(test_spool_dead_letter)
{
    open_spool();
    uint64_t t0 = tu_wall_ms();
    spool_dead_letter(tu_batch(BF_DATASET_llm_events, 2, "d"), 400,
                      "{\"error\":\"bad \\\"row\\\"\"}");
    spool_dead_letter(tu_batch(BF_DATASET_image_events, 1, "e"), 403, NULL);
    flush_wait();
    ck_assert_uint_eq(stats.rows_dead_lettered, 3);
    ck_assert_uint_eq(memory_used(), 0);
    ck_assert_int_eq(seg_count(), 0); /* not in the replay spool */
    ck_assert_uint_eq(spool_rows_unread(), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/dead-letter.ndjson", dir);
    char *text = tu_read_file(path, NULL);
    ck_assert_ptr_nonnull(text);
    const char *p = text;
    json_t *h = header_line(&p);
    ck_assert_str_eq(json_string_value(json_object_get(h, "dataset")), "llm_events");
    ck_assert_int_eq(json_integer_value(json_object_get(h, "status")), 400);
    ck_assert_int_eq(json_integer_value(json_object_get(h, "rows")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(h, "response")),
                     "{\"error\":\"bad \\\"row\\\"\"}");
    json_int_t ts = json_integer_value(json_object_get(h, "ts_ms"));
    /* Milliseconds of the wall clock, between the call and now. */
    ck_assert_int_ge(ts, (json_int_t)t0);
    ck_assert_int_le(ts, (json_int_t)tu_wall_ms());
    ck_assert_uint_eq(json_object_size(h), 5);
    json_decref(h);
    size_t len;
    const char *rows = rows_text(2, "d", &len);
    ck_assert_int_eq(strncmp(p, rows, len), 0);
    p += len;
    h = header_line(&p);
    ck_assert_str_eq(json_string_value(json_object_get(h, "dataset")), "image_events");
    ck_assert_int_eq(json_integer_value(json_object_get(h, "status")), 403);
    ck_assert_str_eq(json_string_value(json_object_get(h, "response")), "");
    json_decref(h);
    rows = rows_text(1, "e", &len);
    ck_assert_str_eq(p, rows);
    free(text);
    finish();
}
END_TEST

/* Past dead_letter_max the file becomes dead-letter.1.ndjson (replacing
 * the older one) and a new one starts. */
START_TEST(test_spool_dead_letter_rotates)
{
    opts.dead_letter_max = 300;
    open_spool();
    char cur[256], old[256];
    snprintf(cur, sizeof(cur), "%s/dead-letter.ndjson", dir);
    snprintf(old, sizeof(old), "%s/dead-letter.1.ndjson", dir);
    spool_dead_letter(tu_batch(BF_DATASET_llm_events, 3, "one"), 400, "first");
    flush_wait();
    long long s1 = tu_file_size(cur);
    ck_assert_int_gt(s1, 150);
    ck_assert_int_lt(s1, 300);
    ck_assert_int_eq(tu_file_size(old), -1);
    spool_dead_letter(tu_batch(BF_DATASET_llm_events, 3, "two"), 400, "second");
    flush_wait();
    ck_assert_int_eq(tu_file_size(old), s1);
    char *t = tu_read_file(old, NULL);
    ck_assert_ptr_nonnull(strstr(t, "\"first\""));
    ck_assert_ptr_nonnull(strstr(t, "one-0002"));
    free(t);
    t = tu_read_file(cur, NULL);
    ck_assert_ptr_null(strstr(t, "first"));
    ck_assert_ptr_nonnull(strstr(t, "\"second\""));
    ck_assert_ptr_nonnull(strstr(t, "two-0002"));
    free(t);
    spool_dead_letter(tu_batch(BF_DATASET_llm_events, 3, "three"), 400, "third");
    flush_wait();
    t = tu_read_file(old, NULL);
    ck_assert_ptr_null(strstr(t, "first"));
    ck_assert_ptr_nonnull(strstr(t, "\"second\""));
    free(t);
    t = tu_read_file(cur, NULL);
    ck_assert_ptr_nonnull(strstr(t, "\"third\""));
    ck_assert_ptr_null(strstr(t, "second"));
    free(t);
    ck_assert_uint_eq(stats.rows_dead_lettered, 9);
    finish();
}
END_TEST

/* ---- issue 11: what the spool trusts ------------------------------------ */

/* Finding 8: a new segment is created with O_EXCL and O_NOFOLLOW, so a
 * link planted at its name (after spool_open looked) is not written
 * through: the rows are counted as dropped.spool_write instead, and the
 * link's target is untouched. */
START_TEST(test_spool_segment_not_written_through_link)
{
    char seg[256], target[256];
    open_spool();
    snprintf(target, sizeof(target), "%s/target", tmpdir);
    tu_write_file(target, "", 0);
    seg_file(seg, sizeof(seg), 1);
    ck_assert_int_eq(symlink(target, seg), 0);
    spool_append(tu_batch(BF_DATASET_llm_events, 2, "x"));
    flush_wait();
    ck_assert_int_eq(tu_file_size(target), 0);
    ck_assert_uint_eq(stats.dropped[DROP_spool_write], 2);
    ck_assert_uint_eq(stats.rows_spooled, 0);
    finish();
}
END_TEST

/* Finding 8: the dead-letter file is opened with O_NOFOLLOW: a link there
 * is not appended through (the copy is lost and logged, its rows were
 * counted as dropped already). */
START_TEST(test_spool_dead_letter_not_through_link)
{
    char link[256], target[256];
    open_spool();
    snprintf(target, sizeof(target), "%s/target", tmpdir);
    tu_write_file(target, "", 0);
    snprintf(link, sizeof(link), "%s/dead-letter.ndjson", dir);
    ck_assert_int_eq(symlink(target, link), 0);
    spool_dead_letter(tu_batch(BF_DATASET_llm_events, 2, "d"), 400, "no");
    flush_wait();
    ck_assert_int_eq(tu_file_size(target), 0);
    ck_assert_uint_eq(stats.rows_dead_lettered, 0);
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_ptr_nonnull(strstr(log, "event=dead_letter_write_failed"));
    free(log);
}
END_TEST

/* Finding 8: the lock file is truncated and gets the PID: a link planted
 * at its name would have had its target clobbered. */
START_TEST(test_spool_lock_not_through_link)
{
    char link[256], target[256], err[256] = "";
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    snprintf(target, sizeof(target), "%s/target", tmpdir);
    tu_write_file(target, "precious", 8);
    snprintf(link, sizeof(link), "%s/lock", dir);
    ck_assert_int_eq(symlink(target, link), 0);
    ck_assert_int_eq(spool_open(&loop, &opts, on_replay, NULL, err, sizeof(err)), -ELOOP);
    ck_assert_msg(strstr(err, link), "err: %s", err);
    ck_assert_int_eq(tu_file_size(target), 8);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* Finding 6: a spool directory others may write, or one another user
 * owns, is refused: its records would be replayed with the token (group
 * write is only logged, as for every file_check). */
START_TEST(test_spool_dir_must_be_private)
{
    char err[256];
    static const unsigned bad[] = {0777, 0707, 0702, 0773};
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[32];
        ck_assert_int_eq(chmod(dir, bad[i]), 0);
        err[0] = '\0';
        ck_assert_int_eq(spool_open(&loop, &opts, on_replay, NULL, err, sizeof(err)),
                         -EPERM);
        snprintf(want, sizeof(want), "mode %04o", bad[i]);
        ck_assert_msg(strstr(err, dir) && strstr(err, want), "err: %s", err);
    }
    ck_assert_int_eq(chmod(dir, 0775), 0); /* others may read, the group write: allowed */
    open_spool();
    close_spool();
    if (geteuid() == 0) { /* root can hand the directory to someone else */
        ck_assert_int_eq(chown(dir, 65534, 65534), 0);
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        err[0] = '\0';
        ck_assert_int_eq(spool_open(&loop, &opts, on_replay, NULL, err, sizeof(err)),
                         -EPERM);
        ck_assert_msg(strstr(err, "owned by uid 65534"), "err: %s", err);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
    }
}
END_TEST

/* Findings 5 and 6: a record whose crc is good but whose rows are not what
 * the daemon writes is skipped alone, and the records around it replay.
 * The crc is no MAC, and the row count came from the file unchecked: a
 * record with no payload and rows 5 reached the 413 split, which read
 * before its buffer; a count of 2^64-1 wrapped the unread sum. */
static const struct {
    const char *name;
    const char *rows;      /* the payload */
    uint64_t count;        /* the header's row count */
    int at_open;           /* caught at spool_open (count and lines) */
    uint64_t dropped;      /* dropped.spool_corrupt */
} bad_records[] = {
    {"no payload, rows 5", "", 5, 1, 0},
    {"no payload, rows 0", "", 0, 1, 0},
    {"count above the lines", "{\"a\":1}\n{\"a\":2}\n", 3, 1, 2},
    {"count below the lines", "{\"a\":1}\n{\"a\":2}\n", 1, 1, 2},
    {"count 2^64-1", "{\"a\":1}\n", UINT64_MAX, 1, 1},
    {"no final newline", "{\"a\":1}\n{\"a\":2}", 2, 1, 1},
    {"not JSON", "not json\n", 1, 0, 1},
    {"two objects on a line", "{\"a\":1}{\"b\":2}\n", 1, 0, 1},
    {"an array", "[1,2]\n", 1, 0, 1},
    {"an empty line", "{\"a\":1}\n\n", 2, 0, 2},
    {"a bare string", "\"s\"\n", 1, 0, 1},
};

START_TEST(test_spool_bad_record_skipped)
{
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    static unsigned char buf[16384];
    size_t off = 0, l1, l3;
    const char *p1 = rows_text(2, "one", &l1);
    char first[4096];
    memcpy(first, p1, l1);
    off += tu_spool_record(buf + off, BF_DATASET_llm_events, 2, first, l1);
    const char *bad = bad_records[_i].rows;
    off += tu_spool_record(buf + off, BF_DATASET_image_events, bad_records[_i].count, bad,
                         strlen(bad));
    const char *p3 = rows_text(3, "three", &l3);
    off += tu_spool_record(buf + off, BF_DATASET_llm_events, 3, p3, l3);
    char path[256];
    seg_file(path, sizeof(path), 7);
    tu_write_file(path, (const char *)buf, off);
    open_spool();
    ck_assert_uint_eq(stats.spool_torn, 0);
    uint64_t at_open = bad_records[_i].at_open ? bad_records[_i].dropped : 0;
    ck_assert_uint_eq(stats.dropped[DROP_spool_corrupt], at_open);
    ck_assert_uint_eq(spool_rows_unread(), 5 + (bad_records[_i].at_open ? 0 : bad_records[_i].count));
    replay_all(2);
    check_replayed(0, BF_DATASET_llm_events, 2, "one", 7);
    check_replayed(1, BF_DATASET_llm_events, 3, "three", 7);
    ck_assert_uint_eq(stats.dropped[DROP_spool_corrupt], bad_records[_i].dropped);
    ck_assert_uint_eq(spool_rows_unread(), 0);
    ck_assert_uint_eq(stats.rows_replayed, 5);
    spool_ack(7, 2);
    spool_ack(7, 3);
    flush_wait();
    ck_assert_int_eq(seg_count(), 0); /* settled: the bad record too */
    finish();
    /* Found at open: logged each time. At replay the line is rate-limited
     * (test_spool_bad_record_logged_at_replay checks it once). */
    if (bad_records[_i].at_open) {
        char *log = tu_read_file(log_path, NULL);
        ck_assert_msg(strstr(log, "event=spool_corrupt segment=0000000000000007"),
                      "log: %s", log);
        free(log);
    }
}
END_TEST

/* A record found bad at replay is logged with the check that failed.
 * (Registered before the loop above: the line is rate-limited, five a
 * second, and with CK_FORK=no, as under valgrind, the loop's would use
 * them up.) */
START_TEST(test_spool_bad_record_logged_at_replay)
{
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    unsigned char buf[256];
    size_t off = tu_spool_record(buf, BF_DATASET_llm_events, 1, "[1]\n", 4);
    char path[256];
    seg_file(path, sizeof(path), 3);
    tu_write_file(path, (const char *)buf, off);
    open_spool();
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.dropped[DROP_spool_corrupt], 1, 2000));
    flush_wait();
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_msg(strstr(log, "event=spool_corrupt segment=0000000000000003 offset=0 "
                              "why=\"a row is not one JSON object\""),
                  "log: %s", log);
    free(log);
}
END_TEST

/* The rows of a segment's rest, lost behind a record that went bad after
 * spool_open, are counted by name (dropped.spool_corrupt). */
START_TEST(test_spool_torn_at_read_counts_rows)
{
    uint64_t rec = three_records();
    char path[256];
    seg_file(path, sizeof(path), 1);
    flip_byte(path, (long)(rec + HDR + 5));
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_replayed, 2, 2000));
    ck_assert_int_eq(spool_read_next(), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.spool_torn, 1, 2000));
    ck_assert_uint_eq(stats.dropped[DROP_spool_corrupt], 4);
    spool_ack(1, 2);
    finish();
}
END_TEST

/* A record this run's --max-memory can never hold (left by a run with a
 * larger --flush-bytes) is skipped and its rows counted as
 * dropped.memory_full, and the read asked for goes on to the record
 * behind it, as it does past a bad record: it does not wait for the
 * policy's next tick. */
START_TEST(test_spool_record_too_large_skipped)
{
    size_t small_len;
    rows_text(1, "s", &small_len);
    open_spool();
    spool_append(tu_batch(BF_DATASET_llm_events, 40, "big"));
    spool_append(tu_batch(BF_DATASET_llm_events, 1, "s"));
    close_spool();
    memset(&stats, 0, sizeof(stats));
    memory_set_headroom(0);
    memory_set_cap(small_len + 64); /* the small record fits, the big one never */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    open_spool();
    replay_all(1);
    check_replayed(0, BF_DATASET_llm_events, 1, "s", 1);
    ck_assert_uint_eq(stats.dropped[DROP_memory_full], 40);
    ck_assert_uint_eq(stats.rows_replayed, 1);
    spool_ack(1, 1);
    free_replayed();
    memory_set_cap(0);
    finish();
}
END_TEST

Suite *spool_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("spool", spool_setup, spool_teardown, &tc);
    tcase_add_test(tc, test_spool_open_empty);
    tcase_add_test(tc, test_spool_open_error);
    tcase_add_test(tc, test_spool_unreadable_segment_logged_and_kept);
    tcase_add_test(tc, test_spool_append_format);
    tcase_add_test(tc, test_spool_flush_after_writes);
    tcase_add_test(tc, test_spool_replay_in_order);
    tcase_add_test(tc, test_spool_ack_unknown);
    tcase_add_test(tc, test_spool_rotation);
    tcase_add_test(tc, test_spool_rotation_back_to_back);
    tcase_add_test(tc, test_spool_max_bytes_drops_oldest);
    tcase_add_test(tc, test_spool_max_bytes_rows_out);
    tcase_add_test(tc, test_spool_reconfigure);
    tcase_add_test(tc, test_spool_max_bytes_back_to_back);
    tcase_add_test(tc, test_spool_append_closed);
    tcase_add_test(tc, test_spool_reopen_replays);
    tcase_add_test(tc, test_spool_reopen_crafted);
    tcase_add_loop_test(tc, test_spool_torn_tail, 0, N(cuts));
    tcase_add_loop_test(tc, test_spool_corrupt_record, 0, N(flips));
    tcase_add_test(tc, test_spool_corrupt_at_read);
    tcase_add_test(tc, test_spool_dead_letter);
    tcase_add_test(tc, test_spool_dead_letter_rotates);
    tcase_add_test(tc, test_spool_segment_not_written_through_link);
    tcase_add_test(tc, test_spool_dead_letter_not_through_link);
    tcase_add_test(tc, test_spool_dir_must_be_private);
    tcase_add_test(tc, test_spool_lock_not_through_link);
    tcase_add_test(tc, test_spool_bad_record_logged_at_replay);
    tcase_add_loop_test(tc, test_spool_bad_record_skipped, 0, N(bad_records));
    tcase_add_test(tc, test_spool_torn_at_read_counts_rows);
    tcase_add_test(tc, test_spool_record_too_large_skipped);
    return s;
}
