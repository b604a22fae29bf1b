/* batch.c: per-dataset batches. See batch.h. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "jitter.h"
#include "log.h"
#include "memory.h"
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
    char *scratch;   /* one row, for the last rows of a buffer */
    int closed;
} bt;

static log_limit full_limit;

static void slot_flush(batch_slot *s)
{
    batch_buf *b = s->buf;
    if (!b)
        return;
    s->buf = NULL;
    b->close_ms = uv_now(bt.loop);
    batch_buf_seal(b);
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
    free(bt.scratch);
    if (!(bt.scratch = malloc(opts->row_max)))
        return UV_ENOMEM;
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

/* A new open buffer for s of cap bytes, or NULL with the row counted as
 * dropped (no room under the cap, or no memory). */
static batch_buf *slot_open(batch_slot *s, size_t cap)
{
    batch_buf *b = batch_buf_open(s->dataset, cap);
    if (!b) {
        /* Refused: memory is full of batches waiting for the sink or for
         * the spool's writes; the policy spools what arrives, so room
         * comes back as soon as the disk catches up. */
        int full = memory_room() < 0 || memory_used() + cap > memory_cap();
        stats_drop(full ? DROP_memory_full : DROP_no_memory, s->dataset, 1);
        log_limited(&full_limit, LOG_ERROR, full ? "memory_full" : "no_memory",
                    "dataset=%s used=%llu cap=%llu", bf_dataset_name(s->dataset),
                    (unsigned long long)memory_used(), (unsigned long long)memory_cap());
        return NULL;
    }
    b->first_ms = uv_now(bt.loop);
    s->buf = b;
    arm(s);
    return b;
}

int batch_append(const bf_row *row)
{
    batch_slot *s = &bt.slots[row->dataset];
    batch_buf *b = s->buf;
    size_t n;
    if (b && b->cap - b->len >= bt.o.row_max) {
        /* The usual case: room for any row, format in place. */
        n = row_format(b->data + b->len, row);
    } else {
        /* Near the end of a buffer (or none open): format aside, close the
         * batch if the row does not fit, then copy. Buffers are exactly
         * flush_bytes, so the memory account holds what the cap allows. */
        n = row_format(bt.scratch, row);
        if (b && b->cap - b->len < n) {
            b->full = 1;
            slot_flush(s);
            b = NULL;
        }
        if (!b && !(b = slot_open(s, n > bt.o.flush_bytes ? n : bt.o.flush_bytes)))
            return UV_ENOMEM;
        memcpy(b->data + b->len, bt.scratch, n);
    }
    b->len += n;
    b->rows++;
    stats.rows_batched[s->dataset]++;
    stats.bytes_batched[s->dataset] += n;
    if (b->len >= bt.o.flush_bytes) {
        b->full = 1;
        slot_flush(s);
    }
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
    if (opts->row_max > bt.o.row_max) { /* a larger max-datagram */
        char *sc = realloc(bt.scratch, opts->row_max);
        if (!sc)
            return; /* keep the old sizes: rows still fit the old scratch */
        bt.scratch = sc;
    }
    bt.o.flush_bytes = opts->flush_bytes;
    bt.o.row_max = opts->row_max;
}

int batch_must_wait(void)
{
    /* Room for the rows one read can bring (16 datagrams, possibly a new
     * buffer or two for each dataset): the headroom, free. */
    uint64_t cap = memory_cap();
    return cap && memory_used() + memory_headroom() > cap;
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
    free(bt.scratch);
    bt.scratch = NULL;
}
