/* tests/unit/testutil.h: helpers shared by the test_*.c suites.
 *
 * Header only (static inline): the Makefile builds tests/unit/main.c and
 * tests/unit/test_*.c, nothing else in this folder. Every helper asserts with
 * Check, so a failure fails the calling test. */
#ifndef BF_TESTUTIL_H
#define BF_TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

#include "batch.h"
#include "bf_proto.h"
#include "catalog.h"
#include "enrich.h"

/* Every suite's constructor, one per line of suites.def (main.c runs them). */
#define BF_SUITE(name) Suite *name##_suite(void);
#include "suites.def"
#undef BF_SUITE

#define CATALOG_PATH "daemon/catalog.json"
#define TEST_KEY "0123456789abcdef0123456789abcdef" /* 32 bytes of key */

/* Element count of an array, as an int (tcase_add_loop_test's bound). */
#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A suite holding one test case, both called name, with the checked
 * fixture setup/teardown (either may be NULL). *tc gets the test case for
 * tcase_add_test. */
static inline Suite *tu_suite(const char *name, SFun setup, SFun teardown, TCase **tc)
{
    Suite *s = suite_create(name);
    *tc = tcase_create(name);
    if (setup || teardown)
        tcase_add_checked_fixture(*tc, setup, teardown);
    suite_add_tcase(s, *tc);
    return s;
}

/* ---- bf_str ------------------------------------------------------------ */

/* s holds exactly the bytes of lit. */
static inline int str_is(bf_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}
#define ck_assert_bfstr(s, lit)                                                \
    ck_assert_msg(str_is(s, lit), "%s is '%.*s', want '%s'", #s, (int)(s).len, \
                  (s).ptr ? (s).ptr : "", lit)

/* ---- temp directories and files ---------------------------------------- */

/* Make a fresh directory /tmp/bf-<name>-XXXXXX; dir (size bytes) gets its path. */
static inline void tu_mkdtemp(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "/tmp/bf-%s-XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static inline int tu_rm_entry(const char *path, const struct stat *sb, int flag,
                              struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove dir and everything below it (best effort, as rm -rf). */
static inline void tu_rmtree(const char *dir)
{
    nftw(dir, tu_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Create (or truncate) path holding the len bytes of text. */
static inline void tu_write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* tu_write_file, then mode 0600: for the files the daemon keeps secret (a
 * key, a token, a config holding a token) and refuses when others may
 * read them. */
static inline void tu_write_private(const char *path, const char *text, size_t len)
{
    tu_write_file(path, text, len);
    ck_assert_int_eq(chmod(path, 0600), 0);
}

/* The whole of path, NUL-terminated, in a new buffer (caller frees);
 * *len (when not NULL) gets its length. NULL when it cannot be read. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Size of path in bytes, -1 when it does not exist. */
static inline long long tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Send stderr (the daemon's log lines) to path, created or truncated, so a
 * suite stays quiet and a test can read the lines back. Returns the saved
 * stderr for tu_stderr_restore. With BF_TEST_STDERR=1 in the environment
 * nothing is redirected and -1 is returned: then a sanitizer's report from
 * a failing test shows on the terminal (otherwise it is in path, in the
 * /tmp/bf-* directory the dead test left). */
static inline int tu_stderr_to(const char *path)
{
    const char *keep = getenv("BF_TEST_STDERR");
    if (keep && *keep && strcmp(keep, "0") != 0)
        return -1;
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
    return saved;
}

/* Put stderr back (saved from tu_stderr_to). Lines of path that are not the
 * daemon's ("ts=..."), such as valgrind's reports, are copied to the real
 * stderr, so they are not lost with the test's directory. */
static inline void tu_stderr_restore(int saved, const char *path)
{
    if (saved < 0)
        return;
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    int mid = 0, show = 0; /* mid: the rest of a line longer than the buffer */
    while (fgets(line, sizeof(line), f)) {
        if (!mid)
            show = strncmp(line, "ts=", 3) != 0;
        if (show)
            fputs(line, stderr);
        mid = strchr(line, '\n') == NULL;
    }
    fclose(f);
}

/* ---- clocks and running a loop ------------------------------------------ */

/* Monotonic and wall clocks in milliseconds. */
static inline uint64_t tu_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline uint64_t tu_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void tu_tick(uv_timer_t *t)
{
    (void)t;
}

/* Turn loop until pred(arg) holds or timeout_ms (monotonic) passed; returns
 * pred's last answer. A 2 ms timer of its own keeps uv_run from blocking
 * longer than that (work from other threads wakes the loop anyway); it is
 * closed before this returns. pred must not use ck_assert when the test
 * has replaced Check's file descriptors. */
static inline int tu_run_until(uv_loop_t *loop, int (*pred)(void *), void *arg,
                               uint64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tu_tick, 2, 2);
    uint64_t end = tu_mono_ms() + timeout_ms;
    int ok;
    while (!(ok = pred(arg)) && tu_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* the close completes in this turn */
    return ok;
}

static inline int tu_never(void *arg)
{
    (void)arg;
    return 0;
}

/* Turn loop for ms milliseconds. */
static inline void tu_run_for(uv_loop_t *loop, uint64_t ms)
{
    tu_run_until(loop, tu_never, NULL, ms);
}

/* A counter and the value tu_run_until_u64 waits for. */
typedef struct tu_at_least {
    const volatile uint64_t *v;
    uint64_t want;
} tu_at_least;

static inline int tu_pred_at_least(void *arg)
{
    const tu_at_least *a = arg;
    return *a->v >= a->want;
}

/* Turn loop until *v >= want or timeout_ms passed; returns whether it got
 * there. */
static inline int tu_run_until_u64(uv_loop_t *loop, const volatile uint64_t *v,
                                   uint64_t want, uint64_t timeout_ms)
{
    tu_at_least a = {v, want};
    return tu_run_until(loop, tu_pred_at_least, &a, timeout_ms);
}

/* ---- batches written by hand -------------------------------------------- */

/* The NDJSON of n rows {"id":"<tag>-<i>","n":<i>} (i from 0) into out (size
 * cap); returns its length. */
static inline size_t tu_rows(char *out, size_t cap, int n, const char *tag)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        int w = snprintf(out + len, cap - len, "{\"id\":\"%s-%04d\",\"n\":%d}\n", tag, i, i);
        ck_assert_int_lt(w, (int)(cap - len));
        len += (size_t)w;
    }
    if (len < cap)
        out[len] = '\0';
    return len;
}

/* A batch of dataset ds holding tu_rows(n, tag), cap == len (1 when
 * empty), counted in the memory account as batch_buf_new does (open:
 * as batch.c makes one, batch_buf_open, and then seals it). */
static inline batch_buf *tu_batch_as(unsigned ds, int n, const char *tag, int open)
{
    char tmp[16384];
    size_t len = tu_rows(tmp, sizeof(tmp), n, tag);
    batch_buf *b = open ? batch_buf_open(ds, len ? len : 1) : batch_buf_new(ds, len ? len : 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b->data, tmp, len);
    b->len = len;
    b->rows = (uint64_t)n;
    if (open)
        batch_buf_seal(b);
    return b;
}

static inline batch_buf *tu_batch(unsigned ds, int n, const char *tag)
{
    return tu_batch_as(ds, n, tag, 0);
}

/* The same as batch.c closes it: an open buffer, filled, then sealed. */
static inline batch_buf *tu_batch_closed(unsigned ds, int n, const char *tag)
{
    return tu_batch_as(ds, n, tag, 1);
}

/* One spool record as docs/delivery.md describes it, written by the test
 * into out (room for 24 + len bytes):
 * "BFS1" | u32 length | u32 crc32 | u8 dataset | 3 bytes 0 | u64 rows | rows,
 * little endian; the crc covers the 12 header bytes after it and the rows.
 * Returns the record's length. */
static inline size_t tu_spool_record(unsigned char *out, unsigned ds, uint64_t rows,
                                     const char *payload, size_t len)
{
    memset(out, 0, 24);
    memcpy(out, "BFS1", 4);
    for (int i = 0; i < 4; i++)
        out[4 + i] = (unsigned char)(len >> (8 * i));
    out[12] = (unsigned char)ds;
    for (int i = 0; i < 8; i++)
        out[16 + i] = (unsigned char)(rows >> (8 * i));
    memcpy(out + 24, payload, len);
    uLong c = crc32(0L, out + 12, 12);
    c = crc32(c, (const Bytef *)payload, (uInt)len);
    for (int i = 0; i < 4; i++)
        out[8 + i] = (unsigned char)(c >> (8 * i));
    return 24 + len;
}

/* A done callback that counts its calls in *(uint64_t *)arg. */
static inline void tu_count_cb(void *arg)
{
    (*(uint64_t *)arg)++;
}

/* ---- enrich context on the shipped catalog ------------------------------- */

/* Write TEST_KEY to key_path (mode 0600: a key others may read is
 * refused), open an enrich context on it (*ctx) and set the shipped
 * catalog (*cat) on it. */
static inline void tu_enrich_open(const char *key_path, enrich_ctx **ctx, catalog **cat)
{
    char err[256];
    tu_write_private(key_path, TEST_KEY "\n", strlen(TEST_KEY) + 1);
    ck_assert_msg(enrich_new(key_path, ctx, err, sizeof(err)) == 0, "enrich_new: %s", err);
    ck_assert_msg(catalog_load(CATALOG_PATH, cat, err, sizeof(err)) == 0, "catalog_load: %s",
                  err);
    enrich_set_catalog(*ctx, *cat);
}

static inline void tu_enrich_close(enrich_ctx **ctx, catalog **cat)
{
    enrich_free(*ctx);
    *ctx = NULL;
    catalog_free(*cat);
    *cat = NULL;
}

#endif
