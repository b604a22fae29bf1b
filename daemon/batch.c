/* batch.c: per-dataset batches. See batch.h. */
#include "batch.h"

#include <stdlib.h>

#include "jitter.h"
#include "row.h"
#include "stats.h"

typedef struct batch_slot {
    batch_buf *buf;  /* open batch, or NULL */
    uv_timer_t timer;
    unsigned dataset;
    uint64_t interval_ms, jitter_ms; /* batch_set_interval */
    uint64_t due_ms;   /* the open batch's interval, drawn when it opened */
    int first;         /* the first batch is yet to open (phase jitter) */
} batch_slot;

static struct {
    uv_loop_t *loop;
    batch_opts o;
    batch_slot slots[BF_DATASET_MAX];
    int closed;
} bt;

static void slot_flush(batch_slot *s)
{
    batch_buf *b = s->buf;
    if (!b)
        return;
    s->buf = NULL;
    b->close_ms = uv_now(bt.loop);
    uv_timer_stop(&s->timer);
    stats.batches[b->dataset]++;
    bt.o.on_flush(b, bt.o.arg);
}

static void on_timer(uv_timer_t *t)
{
    slot_flush(t->data);
}

/* A newly opened batch draws its interval: the dataset's, give or take its
 * jitter; the very first one a uniform part of it (batch_opts). */
static void arm(batch_slot *s)
{
    uint64_t lo = s->interval_ms > s->jitter_ms ? s->interval_ms - s->jitter_ms : 1;
    s->due_ms = lo + jitter_upto(s->interval_ms + s->jitter_ms - lo);
    if (s->first) {
        s->first = 0;
        s->due_ms = 1 + jitter_upto(s->interval_ms - 1);
    }
    uv_timer_start(&s->timer, on_timer, s->due_ms, 0);
}

void batch_set_interval(unsigned dataset, uint64_t interval_ms, uint64_t jitter_ms)
{
    if (dataset == 0 || dataset >= BF_DATASET_MAX || bt.closed)
        return;
    batch_slot *s = &bt.slots[dataset];
    s->interval_ms = interval_ms ? interval_ms : 1;
    s->jitter_ms = jitter_ms;
    if (!s->buf)
        return;
    uint64_t age = uv_now(bt.loop) - s->buf->first_ms;
    s->due_ms = s->interval_ms;
    if (age >= s->due_ms)
        slot_flush(s);
    else
        uv_timer_start(&s->timer, on_timer, s->due_ms - age, 0);
}

int batch_init(uv_loop_t *loop, const batch_opts *opts)
{
    bt.loop = loop;
    bt.o = *opts;
    bt.closed = 0;
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        batch_slot *s = &bt.slots[id];
        s->dataset = id;
        s->buf = NULL;
        s->interval_ms = opts->flush_interval_ms;
        s->jitter_ms = 0;
        s->first = opts->phase_jitter;
        int rc = uv_timer_init(loop, &s->timer);
        if (rc < 0)
            return rc;
        s->timer.data = s;
    }
    return 0;
}

int batch_append(const bf_row *row)
{
    batch_slot *s = &bt.slots[row->dataset];
    if (!s->buf) {
        s->buf = batch_buf_new(s->dataset, bt.o.flush_bytes + bt.o.row_max);
        if (!s->buf) {
            stats_drop(DROP_no_memory, s->dataset, 1);
            return UV_ENOMEM;
        }
        s->buf->first_ms = uv_now(bt.loop);
        arm(s);
    }
    batch_buf *b = s->buf;
    size_t n = row_format(b->data + b->len, row);
    b->len += n;
    b->rows++;
    stats.rows_batched[s->dataset]++;
    stats.bytes_batched[s->dataset] += n;
    if (b->len >= bt.o.flush_bytes)
        slot_flush(s);
    return 0;
}

void batch_flush(unsigned dataset)
{
    if (dataset && dataset < BF_DATASET_MAX && !bt.closed)
        slot_flush(&bt.slots[dataset]);
}

void batch_reconfigure(const batch_opts *opts)
{
    if (opts->flush_bytes != bt.o.flush_bytes || opts->row_max != bt.o.row_max)
        batch_flush_all();
    bt.o.flush_bytes = opts->flush_bytes;
    bt.o.row_max = opts->row_max;
}

void batch_flush_all(void)
{
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        slot_flush(&bt.slots[id]);
}

void batch_close(void)
{
    if (bt.closed)
        return;
    bt.closed = 1;
    batch_flush_all();
    for (unsigned id = 1; id < BF_DATASET_MAX; id++)
        uv_close((uv_handle_t *)&bt.slots[id].timer, NULL);
}
