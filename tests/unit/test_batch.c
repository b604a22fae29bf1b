/*
 * test_batch.c: daemon/batch.c: batches closed by size, by age, on demand
 * and on close; new sizes from a reload; one batch per dataset; the
 * counters.
 *
 * Each test runs a loop of its own (uv_loop_init); at the end every handle
 * is closed and uv_loop_close() must return 0, as in libuv's own tests, so
 * a handle left open fails the test. The flush callback keeps the batches
 * it receives; tests free them.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "batch.h"
#include "row.h"
#include "memory.h"
#include "stats.h"
#include "testutil.h"

static uv_loop_t loop;
static batch_buf *got[256];
static int ngot;
static void *got_arg;
static int marker;

static void on_flush(batch_buf *b, void *arg)
{
    ck_assert_int_lt(ngot, 256);
    got[ngot++] = b;
    got_arg = arg;
}

static void batch_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    ngot = 0;
    got_arg = NULL;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void start_jittered(uint64_t flush_bytes, uint64_t interval_ms, int phase_jitter)
{
    batch_opts o = {
        .flush_bytes = flush_bytes,
        .flush_interval_ms = interval_ms,
        .phase_jitter = phase_jitter,
        .row_max = row_max_bytes(8192),
        .on_flush = on_flush,
        .arg = &marker,
    };
    ck_assert_int_eq(batch_init(&loop, &o), 0);
}

static void start(uint64_t flush_bytes, uint64_t interval_ms)
{
    start_jittered(flush_bytes, interval_ms, 0);
}

/* batch_close, run the loop until the handles are closed, close it. */
static void finish(void)
{
    batch_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    for (int i = 0; i < ngot; i++)
        batch_buf_free(got[i]);
    ngot = 0;
    ck_assert_uint_eq(memory_used(), 0);
}

/* A row as enrich would make it; the event and the id live in *slot. */
typedef struct row_slot {
    bf_event ev;
    bf_row row;
    char id[32];
} row_slot;

static void make_row(row_slot *s, unsigned ds, int n)
{
    bf_event_init(&s->ev, ds);
    BF_SET_STR(&s->ev, model, "m", 1);
    if (ds == BF_DATASET_image_events)
        BF_SET_STR(&s->ev, prompt, "a prompt", 8);
    snprintf(s->id, sizeof(s->id), "%s-%04d", ds == BF_DATASET_image_events ? "img" : "llm",
             n);
    BF_SET_STR(&s->ev, id, s->id, strlen(s->id));
    memset(&s->row, 0, sizeof(s->row));
    bf_row *r = &s->row;
    r->dataset = ds;
    r->model = s->ev.model;
    r->username = (bf_str){"", 0};
    r->provider = "P";
    r->provider_len = 1;
    r->id = s->ev.id;
    r->user_id = (bf_str){"u", 1};
    r->tier = (bf_str){"t", 1};
    r->status = (bf_str){"success", 7};
    r->prompt = s->ev.prompt;
    r->error_message = (bf_str){"", 0};
    r->start_ms = r->end_ms = 1700000000000ull + (uint64_t)n;
}

/* Append one row; returns its formatted length. */
static size_t append(unsigned ds, int n)
{
    row_slot s;
    char buf[4096];
    make_row(&s, ds, n);
    size_t len = row_format(buf, &s.row);
    ck_assert_int_eq(batch_append(&s.row), 0);
    return len;
}

/* Every line of b is one row of its dataset, with ids prefix-first..last. */
static void check_lines(const batch_buf *b, int first, int last)
{
    ck_assert_uint_gt(b->len, 0);
    ck_assert_uint_le(b->len, b->cap);
    ck_assert_int_eq(b->data[b->len - 1], '\n');
    const char *p = b->data, *end = b->data + b->len;
    int k = first;
    uint64_t lines = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        ck_assert_ptr_nonnull(nl);
        json_error_t e;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &e);
        ck_assert_msg(o != NULL, "line %llu: %s", (unsigned long long)lines, e.text);
        char want[32];
        snprintf(want, sizeof(want), "%s-%04d",
                 b->dataset == BF_DATASET_image_events ? "img" : "llm", k++);
        ck_assert_str_eq(json_string_value(json_object_get(o, "id")), want);
        /* The dataset's own columns only. */
        if (b->dataset == BF_DATASET_image_events) {
            ck_assert_ptr_nonnull(json_object_get(o, "prompt"));
            ck_assert_ptr_null(json_object_get(o, "prompt_tokens"));
        } else {
            ck_assert_ptr_nonnull(json_object_get(o, "prompt_tokens"));
            ck_assert_ptr_null(json_object_get(o, "prompt"));
        }
        json_decref(o);
        lines++;
        p = nl + 1;
    }
    ck_assert_uint_eq(lines, b->rows);
    ck_assert_int_eq(k - 1, last);
}

START_TEST(test_batch_flush_by_size)
{
    const uint64_t fb = 4096;
    const unsigned ds = BF_DATASET_llm_events;
    start(fb, 60000);
    size_t total = 0, last = 0;
    int n = 0;
    while (ngot == 0) {
        last = append(ds, n++);
        total += last;
        ck_assert_int_lt(n, 1000);
    }
    ck_assert_int_eq(ngot, 1);
    batch_buf *b = got[0];
    ck_assert_ptr_eq(got_arg, &marker);
    ck_assert_uint_eq(b->dataset, ds);
    /* Closed by the row that did not fit: that row opened the next batch,
     * and the closed one never passes flush_bytes. */
    ck_assert_uint_eq(b->rows, (uint64_t)n - 1);
    ck_assert_uint_eq(b->len, total - last);
    ck_assert_uint_le(b->len, fb);
    ck_assert_uint_gt(b->len + last, fb);
    ck_assert_uint_eq(b->cap, fb); /* exactly flush_bytes: what memory.h counts */
    ck_assert_int_eq(b->full, 1); /* and it says so (pacing reads it) */
    check_lines(b, 0, n - 2);
    ck_assert_uint_eq(stats.rows_batched[ds], (uint64_t)n);
    ck_assert_uint_eq(stats.bytes_batched[ds], total);
    ck_assert_uint_eq(stats.batches[ds], 1);
    ck_assert_uint_eq(stats.rows_batched[BF_DATASET_image_events], 0);
    ck_assert_uint_eq(memory_used(), b->cap + fb); /* the callee's and the open one */

    /* The next row joins the open batch. */
    total += append(ds, n++);
    ck_assert_int_eq(ngot, 1);
    batch_flush_all();
    ck_assert_int_eq(ngot, 2);
    ck_assert_uint_eq(got[1]->rows, 2);
    check_lines(got[1], n - 2, n - 1);
    ck_assert_uint_eq(stats.batches[ds], 2);
    ck_assert_uint_eq(stats.bytes_batched[ds], total);
    finish();
}
END_TEST

START_TEST(test_batch_flush_by_age)
{
    const unsigned ds = BF_DATASET_image_events;
    start(1000000, 20);
    uint64_t t0 = uv_now(&loop);
    for (int i = 0; i < 3; i++)
        append(ds, i);
    ck_assert_int_eq(ngot, 0);
    /* The timer is the only active handle: uv_run returns once it fired. */
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(ngot, 1);
    ck_assert_uint_eq(got[0]->rows, 3);
    ck_assert_uint_eq(got[0]->first_ms, t0);
    ck_assert_uint_ge(uv_now(&loop) - t0, 20);
    ck_assert_int_eq(got[0]->full, 0);
    check_lines(got[0], 0, 2);
    ck_assert_uint_eq(stats.batches[ds], 1);

    /* One-shot: it starts again with the next batch's first row. */
    ck_assert_int_eq(uv_run(&loop, UV_RUN_NOWAIT), 0);
    ck_assert_int_eq(ngot, 1);
    uint64_t t1 = uv_now(&loop);
    append(ds, 3);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(ngot, 2);
    ck_assert_uint_eq(got[1]->rows, 1);
    ck_assert_uint_ge(uv_now(&loop) - t1, 20);
    check_lines(got[1], 3, 3);
    finish();
}
END_TEST

/* A batch closed by size stops its timer: the next batch (opened by the
 * row that did not fit) lives its whole interval, not the rest of the
 * closed one's. */
START_TEST(test_batch_size_flush_stops_timer)
{
    start(4096, 20);
    int n = 0;
    while (ngot == 0)
        append(BF_DATASET_llm_events, n++);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* the new batch's timer */
    ck_assert_int_eq(ngot, 2);
    ck_assert_uint_eq(got[1]->rows, 1);
    ck_assert_uint_ge(got[1]->close_ms - got[1]->first_ms, 20);
    ck_assert_int_eq(uv_loop_alive(&loop), 0);
    /* The same after batch_flush_all. */
    append(BF_DATASET_image_events, 0);
    ck_assert_int_ne(uv_loop_alive(&loop), 0);
    batch_flush_all();
    ck_assert_int_eq(uv_loop_alive(&loop), 0);
    finish();
}
END_TEST

/* A reload's sizes: a larger flush size closes the open batch first
 * (sized for the old one: appending past it would overflow), and the next
 * batch has room for the new size; a larger row size (max-datagram) too,
 * and the scratch row grows with it; the same sizes change nothing. */
START_TEST(test_batch_reconfigure)
{
    const unsigned ds = BF_DATASET_llm_events;
    start(4096, 60000);
    append(ds, 0);
    batch_opts o = {.flush_bytes = 4096, .flush_interval_ms = 60000,
                    .row_max = row_max_bytes(8192), .on_flush = on_flush, .arg = &marker};
    batch_reconfigure(&o); /* the same: the batch stays open */
    ck_assert_int_eq(ngot, 0);
    o.flush_bytes = 65536;
    batch_reconfigure(&o);
    ck_assert_int_eq(ngot, 1);
    ck_assert_uint_eq(got[0]->rows, 1);
    ck_assert_ptr_eq(got_arg, &marker); /* the callback is kept */
    append(ds, 1);
    ck_assert_uint_eq(memory_used() - got[0]->cap, 65536); /* exactly flush_bytes */
    o.row_max = row_max_bytes(16384);
    batch_reconfigure(&o);
    ck_assert_int_eq(ngot, 2);
    check_lines(got[1], 1, 1);
    append(ds, 2);
    /* The scratch row grew with row_max; buffers stay flush_bytes. */
    ck_assert_uint_eq(memory_used() - got[0]->cap - got[1]->cap, 65536);
    finish();
}
END_TEST

START_TEST(test_batch_per_dataset)
{
    start(1000000, 60000);
    for (int i = 0; i < 5; i++) {
        append(BF_DATASET_image_events, i);
        if (i < 2)
            append(BF_DATASET_llm_events, i);
    }
    ck_assert_int_eq(ngot, 0);
    batch_flush_all();
    ck_assert_int_eq(ngot, 2);
    batch_buf *img = got[0]->dataset == BF_DATASET_image_events ? got[0] : got[1];
    batch_buf *llm = img == got[0] ? got[1] : got[0];
    ck_assert_uint_eq(img->dataset, BF_DATASET_image_events);
    ck_assert_uint_eq(llm->dataset, BF_DATASET_llm_events);
    ck_assert_uint_eq(img->rows, 5);
    ck_assert_uint_eq(llm->rows, 2);
    check_lines(img, 0, 4);
    check_lines(llm, 0, 1);
    ck_assert_uint_eq(stats.rows_batched[BF_DATASET_image_events], 5);
    ck_assert_uint_eq(stats.rows_batched[BF_DATASET_llm_events], 2);
    ck_assert_uint_eq(stats.bytes_batched[BF_DATASET_image_events], img->len);
    ck_assert_uint_eq(stats.bytes_batched[BF_DATASET_llm_events], llm->len);
    ck_assert_uint_eq(stats.batches[BF_DATASET_image_events], 1);
    ck_assert_uint_eq(stats.batches[BF_DATASET_llm_events], 1);
    ck_assert_uint_eq(memory_used(), img->cap + llm->cap);
    finish();
}
END_TEST

START_TEST(test_batch_flush_all_empty)
{
    start(4096, 60000);
    batch_flush_all();
    ck_assert_int_eq(ngot, 0);
    for (unsigned ds = 1; ds < BF_DATASET_MAX; ds++)
        ck_assert_uint_eq(stats.batches[ds], 0);
    ck_assert_uint_eq(memory_used(), 0);
    finish();
}
END_TEST

START_TEST(test_batch_close_flushes_pending)
{
    start(1000000, 60000);
    append(BF_DATASET_llm_events, 0);
    append(BF_DATASET_llm_events, 1);
    batch_close();
    ck_assert_int_eq(ngot, 1);
    ck_assert_uint_eq(got[0]->rows, 2);
    check_lines(got[0], 0, 1);
    batch_close(); /* twice: nothing more */
    ck_assert_int_eq(ngot, 1);
    finish();
}
END_TEST

START_TEST(test_batch_buf_new_free)
{
    batch_buf *b = batch_buf_new(BF_DATASET_llm_events, 1000);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->dataset, BF_DATASET_llm_events);
    ck_assert_uint_eq(b->cap, 1000);
    ck_assert_uint_eq(b->len, 0);
    ck_assert_uint_eq(b->rows, 0);
    ck_assert_ptr_nonnull(b->data);
    ck_assert_uint_eq(memory_used(), 1000);
    batch_buf *c = batch_buf_new(BF_DATASET_image_events, 24);
    ck_assert_uint_eq(memory_used(), 1024);
    batch_buf_free(b);
    ck_assert_uint_eq(memory_used(), 24);
    batch_buf_free(c);
    ck_assert_uint_eq(memory_used(), 0);
    batch_buf_free(NULL);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* Run the loop until the next batch closes; returns its age then. */
static uint64_t age_at_close(unsigned ds, int n)
{
    int before = ngot;
    uint64_t t0 = uv_now(&loop);
    append(ds, n);
    while (ngot == before)
        uv_run(&loop, UV_RUN_ONCE);
    return uv_now(&loop) - t0;
}

/* The policy's interval holds from the next batch; an open batch is held
 * to it at once: a shorter one closes it now when it is older, a longer
 * one keeps it open longer. Jitter draws each batch's interval within
 * interval +- jitter. Datasets are apart. */
START_TEST(test_batch_set_interval)
{
    const unsigned ds = BF_DATASET_llm_events;
    start(1000000, 40);
    batch_set_interval(ds, 120, 0);
    uint64_t age = age_at_close(ds, 0);
    ck_assert_msg(age >= 120 && age < 400, "closed after %llu ms", (unsigned long long)age);
    /* An open batch: made older than the new, shorter interval. */
    append(ds, 1);
    tu_run_for(&loop, 60);
    ck_assert_int_eq(ngot, 1);
    batch_set_interval(ds, 30, 0);
    ck_assert_int_eq(ngot, 2); /* closed at once */
    check_lines(got[1], 1, 1);
    /* Longer: the open batch waits for it. */
    append(ds, 2);
    batch_set_interval(ds, 150, 0);
    tu_run_for(&loop, 80);
    ck_assert_int_eq(ngot, 2);
    while (ngot == 2)
        uv_run(&loop, UV_RUN_ONCE);
    /* Jitter: each draw within 100 +- 50. */
    batch_set_interval(ds, 100, 50);
    for (int i = 0; i < 6; i++) {
        age = age_at_close(ds, 10 + i);
        ck_assert_msg(age >= 50 && age < 300, "closed after %llu ms", (unsigned long long)age);
    }
    /* The other dataset kept the start's interval. */
    age = age_at_close(BF_DATASET_image_events, 0);
    ck_assert_msg(age >= 40 && age < 300, "closed after %llu ms", (unsigned long long)age);
    batch_set_interval(0, 10, 0);               /* no dataset 0: ignored */
    batch_set_interval(BF_DATASET_MAX, 10, 0);  /* out of range: ignored */
    /* batch_flush: that dataset's open batch only, at once. */
    batch_set_interval(ds, 60000, 0);
    append(ds, 20);
    append(BF_DATASET_image_events, 21);
    int before = ngot;
    batch_flush(ds);
    ck_assert_int_eq(ngot, before + 1);
    ck_assert_uint_eq(got[ngot - 1]->dataset, ds);
    batch_flush(ds); /* empty: nothing */
    batch_flush(0);
    ck_assert_int_eq(ngot, before + 1);
    finish();
}
END_TEST

/* With phase_jitter, each dataset's first batch closes after a uniform
 * part of the interval, the next ones after the whole of it. */
START_TEST(test_batch_phase_jitter)
{
    const unsigned ds = BF_DATASET_image_events;
    uint64_t shortest = UINT64_MAX;
    for (int run = 0; run < 8; run++) {
        if (run) /* batch_setup made the first */
            ck_assert_int_eq(uv_loop_init(&loop), 0);
        start_jittered(1000000, 200, 1);
        uint64_t first = age_at_close(ds, 0);
        ck_assert_uint_le(first, 200 + 100);
        shortest = first < shortest ? first : shortest;
        if (run == 0) {
            uint64_t next = age_at_close(ds, 1);
            ck_assert_uint_ge(next, 200);
        }
        finish();
    }
    /* Eight draws from (0, 200]: all of them over 150 has odds 1 in 65536. */
    ck_assert_uint_lt(shortest, 150);
}
END_TEST

Suite *batch_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("batch", batch_setup, NULL, &tc);
    tcase_add_test(tc, test_batch_flush_by_size);
    tcase_add_test(tc, test_batch_flush_by_age);
    tcase_add_test(tc, test_batch_set_interval);
    tcase_add_test(tc, test_batch_phase_jitter);
    tcase_add_test(tc, test_batch_size_flush_stops_timer);
    tcase_add_test(tc, test_batch_reconfigure);
    tcase_add_test(tc, test_batch_per_dataset);
    tcase_add_test(tc, test_batch_flush_all_empty);
    tcase_add_test(tc, test_batch_close_flushes_pending);
    tcase_add_test(tc, test_batch_buf_new_free);
    return s;
}
