/* spool.c: segmented on-disk spool and dead letters. See spool.h. */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <jansson.h>

#include "clock.h"
#include "file_check.h"
#include "log.h"
#include "memory.h"
#include "paths.h"
#include "stats.h"

#define REC_MAGIC 0x31534642u /* "BFS1" little endian */
#define HDR_LEN 24
#define REC_MAX (64u * 1024 * 1024) /* larger lengths mean a corrupt header */

typedef struct segment {
    uint64_t seq;
    uint64_t bytes;       /* valid bytes (a torn tail is not counted) */
    uint64_t queued;      /* bytes of appends queued or running for it */
    uint64_t read_off;    /* next record to read */
    uint64_t indexed;     /* bytes found at spool_open (their bad records
                             were counted then) */
    uint64_t rows_unread; /* rows in records not yet read */
    uint64_t rows_out;    /* rows read and not yet acknowledged */
    int active;           /* new appends go here */
    int doomed;           /* dropped for space: goes once nothing uses it */
    unsigned pending;     /* queued or running operations that use it */
    int fd;               /* write fd, closed once inactive and idle */
    struct segment *next;
} segment;

enum op_kind { OP_APPEND, OP_READ, OP_UNLINK, OP_DEAD, OP_BARRIER };

/* What reading one record found. */
enum rec_status {
    REC_OK,   /* a batch */
    REC_TORN, /* incomplete, or fails its crc: the rest of the segment too */
    REC_BAD,  /* whole and its crc good, but its rows fail their checks: this
                 record alone is skipped */
    REC_ERR,  /* an I/O error or no memory */
};

/* One record, read. */
typedef struct rec {
    batch_buf *b;       /* REC_OK */
    uint64_t len;       /* REC_OK, REC_BAD: header and payload bytes */
    uint64_t rows;      /* REC_OK, REC_BAD: the header's row count */
    uint64_t lines;     /* REC_OK, REC_BAD: newlines in the payload */
    unsigned dataset;   /* REC_OK, REC_BAD */
    const char *why;    /* REC_BAD: which check failed */
    int framing;        /* REC_BAD: a check index_segment makes too */
    int err;            /* REC_ERR */
} rec;

typedef struct spool_op {
    uv_work_t work;
    enum op_kind kind;
    segment *seg;         /* APPEND, READ */
    batch_buf *b;         /* APPEND, DEAD: written; READ: result */
    char path[300];       /* UNLINK */
    char *text;           /* DEAD: header line */
    int err;              /* errno of the I/O, 0 on success */
    enum rec_status st;   /* READ: what the record was */
    rec r;                /* READ: the record */
    int rotate_err;       /* DEAD: errno of a failed rotation */
    uint64_t off;         /* READ: where */
    void (*done)(void *); /* BARRIER */
    void *done_arg;
    struct spool_op *next;
} spool_op;

static struct {
    uv_loop_t *loop;
    spool_opts o;
    spool_replay_cb cb;
    void *cb_arg;
    segment *segs, *tail;  /* oldest first */
    uint64_t next_seq;
    spool_op *q_head, *q_tail; /* operations waiting for the running one */
    int running;
    int reading;
    int open;
    int lock_fd;           /* DIR/lock, flocked while open; -1 none */
} sp;

static log_limit torn_limit, corrupt_limit, write_limit;

static void seg_path(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%s/%016llx.seg", sp.o.dir, (unsigned long long)seq);
}

uint64_t spool_bytes(void)
{
    uint64_t bytes = 0;
    for (segment *s = sp.segs; s; s = s->next)
        bytes += s->bytes;
    return bytes;
}

uint64_t spool_cap(void)
{
    return sp.open ? sp.o.max_bytes : 0;
}

uint64_t spool_writing_bytes(void)
{
    uint64_t bytes = 0;
    for (segment *s = sp.segs; s; s = s->next)
        bytes += s->queued;
    return bytes;
}

uint64_t spool_segments(void)
{
    uint64_t count = 0;
    for (segment *s = sp.segs; s; s = s->next)
        count++;
    return count;
}

static uint32_t rec_crc(const unsigned char *hdr, const char *payload, size_t len)
{
    uLong c = crc32(0L, hdr + 12, HDR_LEN - 12);
    return (uint32_t)crc32(c, (const Bytef *)payload, (uInt)len);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static int write_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t w = writev(fd, iov, cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Read and check the header of the record at off of fd (size bytes long):
 * magic, a dataset, and a length that stays inside the file. Returns the
 * payload length, or -1 when the record is torn or corrupt. */
static int64_t read_header(int fd, uint64_t off, uint64_t size,
                           unsigned char hdr[HDR_LEN])
{
    if (size - off < HDR_LEN || pread(fd, hdr, HDR_LEN, (off_t)off) != HDR_LEN ||
        get32(hdr) != REC_MAGIC || hdr[12] == 0 || hdr[12] >= BF_DATASET_MAX)
        return -1;
    uint32_t plen = get32(hdr + 4);
    if (plen > REC_MAX || size - off - HDR_LEN < plen)
        return -1;
    return plen;
}

/* The crc is no MAC: a record that is whole may still not be one the
 * daemon wrote (a bug, or someone who could write the directory). Its rows
 * go out verbatim, so they are checked before they do: a payload, ending in
 * a newline, with exactly as many newlines as the header's row count (so a
 * count can neither lie nor wrap a sum); with json, also each line one JSON
 * object (replay only: too slow for a whole spool at start). Returns NULL,
 * or what failed; *lines_out gets the number of newlines, *framing is set
 * when a count or length check failed. */
static const char *rows_check(const char *p, size_t len, uint64_t rows, int json,
                              uint64_t *lines_out, int *framing)
{
    uint64_t lines = 0;
    for (const char *q = p, *end = p + len; (q = memchr(q, '\n', (size_t)(end - q))); q++)
        lines++;
    *lines_out = lines;
    *framing = 1;
    if (len == 0)
        return "no rows";
    if (p[len - 1] != '\n')
        return "last row without a newline";
    if (lines != rows)
        return "row count is not the number of lines";
    *framing = 0;
    for (const char *q = p, *end = p + len; json && q < end;) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        json_t *o = json_loadb(q, (size_t)(nl - q), 0, NULL);
        int ok = json_is_object(o);
        json_decref(o);
        if (!ok)
            return "a row is not one JSON object";
        q = nl + 1;
    }
    return NULL;
}

/* Read one record at off of fd (size bytes long) into *r; json: check each
 * row parses (rows_check). The batch of REC_OK comes from batch_buf_new, so
 * it is counted in the memory account. Runs on a worker thread (and at
 * spool_open). */
static enum rec_status read_record(int fd, uint64_t off, uint64_t size, int json, rec *r)
{
    unsigned char hdr[HDR_LEN];
    memset(r, 0, sizeof(*r));
    int64_t plen = read_header(fd, off, size, hdr);
    if (plen < 0)
        return REC_TORN;
    /* Known before the buffer: a refusal (ENOMEM) says how large it was. */
    r->len = HDR_LEN + (uint64_t)plen;
    r->rows = get64(hdr + 16);
    r->dataset = hdr[12];
    batch_buf *b = batch_buf_new(hdr[12], plen ? (size_t)plen : 1);
    if (!b) {
        r->err = ENOMEM; /* malloc, or the memory account refused */
        return REC_ERR;
    }
    ssize_t got = pread(fd, b->data, (size_t)plen, (off_t)(off + HDR_LEN));
    if (got != plen || rec_crc(hdr, b->data, (size_t)plen) != get32(hdr + 8)) {
        batch_buf_free(b);
        return REC_TORN;
    }
    r->why = rows_check(b->data, (size_t)plen, r->rows, json, &r->lines, &r->framing);
    if (r->why) {
        batch_buf_free(b);
        return REC_BAD;
    }
    b->len = (size_t)plen;
    b->rows = r->rows;
    r->b = b;
    return REC_OK;
}

/* ---- the operation queue: one at a time, in order ---- */

static void op_run_next(void);

static void op_work(uv_work_t *w)
{
    spool_op *op = w->data;
    switch (op->kind) {
    case OP_APPEND: {
        segment *s = op->seg;
        if (s->fd < 0) {
            char path[300];
            seg_path(path, sizeof(path), s->seq);
            /* A new segment is a new file: O_EXCL, so nothing planted at
             * its name (a link elsewhere) is written through. */
            s->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC |
                                   O_NOFOLLOW, 0600);
            if (s->fd < 0) {
                op->err = errno;
                break;
            }
        }
        unsigned char hdr[HDR_LEN] = {0};
        put32(hdr, REC_MAGIC);
        put32(hdr + 4, (uint32_t)op->b->len);
        hdr[12] = (unsigned char)op->b->dataset;
        put64(hdr + 16, op->b->rows);
        put32(hdr + 8, rec_crc(hdr, op->b->data, op->b->len));
        struct iovec iov[2] = {{hdr, HDR_LEN}, {op->b->data, op->b->len}};
        int rc = write_all(s->fd, iov, 2);
        if (rc < 0) {
            op->err = -rc;
            /* Cut back what a partial write left, so the next record starts
             * on a boundary; a crash here is what the crc is for. */
            if (ftruncate(s->fd, (off_t)s->bytes) < 0)
                op->err = errno;
        }
        break;
    }
    case OP_READ: {
        char path[300];
        seg_path(path, sizeof(path), op->seg->seq);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            op->err = errno;
            op->st = REC_ERR;
            break;
        }
        op->st = read_record(fd, op->off, op->seg->bytes, 1, &op->r);
        op->b = op->r.b;
        op->err = op->r.err;
        close(fd);
        break;
    }
    case OP_UNLINK:
        if (unlink(op->path) < 0 && errno != ENOENT)
            op->err = errno;
        break;
    case OP_DEAD: {
        char path[300], old[300];
        snprintf(path, sizeof(path), "%s/dead-letter.ndjson", sp.o.dir);
        struct stat st;
        size_t add = strlen(op->text) + op->b->len;
        if (stat(path, &st) == 0 && (uint64_t)st.st_size + add > sp.o.dead_letter_max) {
            snprintf(old, sizeof(old), "%s/dead-letter.1.ndjson", sp.o.dir);
            /* Keep the newest two files' worth. If the rename fails the file
             * grows past the limit: written, not lost. */
            if (rename(path, old) < 0)
                op->rotate_err = errno;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            op->err = errno;
            break;
        }
        struct iovec iov[2] = {{op->text, strlen(op->text)}, {op->b->data, op->b->len}};
        int rc = write_all(fd, iov, 2);
        if (rc < 0)
            op->err = -rc;
        close(fd);
        break;
    }
    case OP_BARRIER:
        break;
    }
}

static void seg_settle(segment *s);

/* A record of len bytes that this configuration can never hold in memory
 * (left by a run with a larger --flush-bytes): its buffer would not fit
 * beside the open batches' headroom even with nothing else in memory. */
static int never_fits(uint64_t len)
{
    uint64_t cap = memory_cap();
    return cap && len - HDR_LEN + memory_headroom() > cap;
}

/* Skip such a record at off of s and count its rows, rather than block
 * every later record behind it. */
static void skip_too_large(segment *s, uint64_t off, const rec *r)
{
    log_limited(&torn_limit, LOG_ERROR, "spool_record_too_large",
                "segment=%016llx offset=%llu bytes=%llu max_memory=%llu",
                (unsigned long long)s->seq, (unsigned long long)off,
                (unsigned long long)r->len, (unsigned long long)memory_cap());
    uint64_t n = r->rows < s->rows_unread ? r->rows : s->rows_unread;
    s->read_off += r->len;
    s->rows_unread -= n;
    stats_drop(DROP_memory_full, r->dataset, n);
}

static void op_after(uv_work_t *w, int status)
{
    spool_op *op = w->data;
    (void)status;
    sp.running = 0;
    switch (op->kind) {
    case OP_APPEND:
        op->seg->pending--;
        op->seg->queued -= HDR_LEN + op->b->len;
        if (op->seg->doomed) {
            /* Made room for by dropping this segment: these rows too. */
            stats_drop(DROP_spool_full, op->b->dataset, op->b->rows);
        } else if (op->err) {
            log_limited(&write_limit, LOG_ERROR, "spool_write_failed",
                        "dir=%s error=\"%s\" rows=%llu", sp.o.dir, strerror(op->err),
                        (unsigned long long)op->b->rows);
            stats_drop(DROP_spool_write, op->b->dataset, op->b->rows);
        } else {
            op->seg->bytes += HDR_LEN + op->b->len;
            op->seg->rows_unread += op->b->rows;
            stats.rows_spooled += op->b->rows;
        }
        batch_buf_free(op->b);
        seg_settle(op->seg);
        break;
    case OP_READ:
        sp.reading = 0;
        op->seg->pending--;
        if (op->seg->doomed) {
            /* Its rows were counted as dropped when it was doomed. */
            batch_buf_free(op->b);
            seg_settle(op->seg);
        } else if (op->st == REC_BAD) {
            /* Whole but not the daemon's rows: skipped alone. Count and
             * line checks were made (and counted) at spool_open already
             * for what was on disk then. */
            segment *s = op->seg;
            s->read_off += op->r.len;
            if (!(op->r.framing && op->off < s->indexed)) {
                uint64_t n = op->r.lines < s->rows_unread ? op->r.lines : s->rows_unread;
                s->rows_unread -= n;
                stats_drop(DROP_spool_corrupt, op->r.dataset, n);
            }
            log_limited(&corrupt_limit, LOG_WARN, "spool_corrupt",
                        "segment=%016llx offset=%llu why=\"%s\" note=\"record skipped\"",
                        (unsigned long long)s->seq, (unsigned long long)op->off,
                        op->r.why);
            seg_settle(s);
            spool_read_next(); /* the read asked for goes on to the next record */
        } else if (op->st == REC_ERR && op->err == ENOMEM && !never_fits(op->r.len)) {
            /* The account refused its buffer: read it again once there is
             * room (the policy asks again; nothing moved). */
            seg_settle(op->seg);
        } else if (op->st == REC_ERR && op->err == ENOMEM) {
            skip_too_large(op->seg, op->off, &op->r);
            seg_settle(op->seg);
            spool_read_next(); /* as past a bad record: on to the next one */
        } else if (op->b) {
            op->seg->read_off += op->r.len;
            op->seg->rows_unread -= op->b->rows <= op->seg->rows_unread
                                        ? op->b->rows : op->seg->rows_unread;
            op->seg->rows_out += op->b->rows;
            op->b->first_ms = uv_now(sp.loop);
            stats.rows_replayed += op->b->rows;
            sp.cb(op->b, op->seg->seq, sp.cb_arg);
        } else {
            /* Torn or unreadable: the rest of this segment is unusable. */
            stats.spool_torn++;
            log_limited(&torn_limit, LOG_WARN, "spool_torn",
                        "segment=%016llx offset=%llu error=\"%s\" "
                        "note=\"rest of the segment skipped\"",
                        (unsigned long long)op->seg->seq,
                        (unsigned long long)op->off,
                        op->err ? strerror(op->err) : "incomplete or bad crc");
            op->seg->read_off = op->seg->bytes;
            stats_drop(DROP_spool_corrupt, BF_DATASET_NONE, op->seg->rows_unread);
            op->seg->rows_unread = 0;
            seg_settle(op->seg);
        }
        break;
    case OP_DEAD:
        if (op->rotate_err)
            log_limited(&write_limit, LOG_WARN, "dead_letter_rotate_failed",
                        "dir=%s error=\"%s\"", sp.o.dir, strerror(op->rotate_err));
        if (op->err)
            log_limited(&write_limit, LOG_ERROR, "dead_letter_write_failed",
                        "dir=%s error=\"%s\"", sp.o.dir, strerror(op->err));
        else
            stats.rows_dead_lettered += op->b->rows;
        batch_buf_free(op->b);
        free(op->text);
        break;
    case OP_UNLINK:
        if (op->err)
            log_warn("spool_unlink_failed", "path=%s error=\"%s\"", op->path,
                     strerror(op->err));
        break;
    case OP_BARRIER:
        op->done(op->done_arg);
        break;
    }
    free(op);
    op_run_next();
}

static void op_run_next(void)
{
    if (sp.running || !sp.q_head)
        return;
    spool_op *op = sp.q_head;
    sp.q_head = op->next;
    if (!sp.q_head)
        sp.q_tail = NULL;
    sp.running = 1;
    op->work.data = op;
    if (uv_queue_work(sp.loop, &op->work, op_work, op_after) < 0) {
        op_work(&op->work); /* cannot happen with a live loop; stay correct */
        op_after(&op->work, 0);
    }
}

static spool_op *op_new(enum op_kind kind)
{
    spool_op *op = calloc(1, sizeof(*op));
    if (op)
        op->kind = kind;
    return op;
}

static void op_push(spool_op *op)
{
    if (sp.q_tail)
        sp.q_tail->next = op;
    else
        sp.q_head = op;
    sp.q_tail = op;
    op_run_next();
}

/* ---- segments ---- */

static void seg_unlink(segment *s)
{
    for (segment **pp = &sp.segs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    sp.tail = NULL;
    for (segment *t = sp.segs; t; t = t->next)
        sp.tail = t;
    spool_op *op = op_new(OP_UNLINK);
    if (op) {
        seg_path(op->path, sizeof(op->path), s->seq);
        op_push(op);
    }
    free(s);
}

/* After anything that touched s: close its file once it takes no more
 * appends and no operation uses it, and delete it once it is fully read
 * and every row read from it was settled (or it was dropped for space). */
static void seg_settle(segment *s)
{
    if (s->pending)
        return;
    /* The segment being appended to is retired once the reader has caught
     * up with it, so a drained spool leaves no file behind; the next
     * append starts a new one. */
    if (s->active && s->bytes && s->read_off >= s->bytes && s->rows_out == 0)
        s->active = 0;
    if (s->active)
        return;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->rows_out == 0 && (s->doomed || s->read_off >= s->bytes))
        seg_unlink(s);
}

static segment *seg_new(uint64_t seq)
{
    segment *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->seq = seq;
    s->fd = -1;
    if (sp.tail)
        sp.tail->next = s;
    else
        sp.segs = s;
    sp.tail = s;
    return s;
}

/* Bytes the spool holds or will hold once the appends queued or running
 * finish, leaving out segments already dropped. */
static uint64_t live_bytes(void)
{
    uint64_t t = 0;
    for (segment *s = sp.segs; s; s = s->next)
        if (!s->doomed)
            t += s->bytes + s->queued;
    return t;
}

/* Make room for need more bytes under max_bytes by dropping whole
 * segments, oldest first; their unread rows are counted exactly. */
static void make_room(uint64_t need)
{
    for (segment *old = sp.segs; old && live_bytes() + need > sp.o.max_bytes;) {
        segment *next = old->next;
        if (!old->doomed) {
            old->doomed = 1;
            old->active = 0;
            stats_drop(DROP_spool_full, BF_DATASET_NONE, old->rows_unread);
            log_warn("spool_full", "segment=%016llx rows_lost=%llu max_bytes=%llu",
                     (unsigned long long)old->seq, (unsigned long long)old->rows_unread,
                     (unsigned long long)sp.o.max_bytes);
            old->rows_unread = 0;
            old->read_off = old->bytes;
            seg_settle(old);
        }
        old = next;
    }
}

void spool_reconfigure(const spool_opts *opts)
{
    if (!sp.open)
        return;
    sp.o.max_bytes = opts->max_bytes;
    sp.o.segment_bytes = opts->segment_bytes;
    sp.o.dead_letter_max = opts->dead_letter_max;
    make_room(0); /* a lower cap applies now, not at the next append */
}

void spool_append(batch_buf *b)
{
    uint64_t need = HDR_LEN + b->len;
    if (!sp.open || need > sp.o.max_bytes) {
        stats_drop(sp.open ? DROP_spool_full : DROP_spool_write, b->dataset, b->rows);
        batch_buf_free(b);
        return;
    }
    make_room(need);
    /* Rotate on what the segment will hold, queued appends included, so a
     * burst (the shutdown deadline spools every waiting batch at once) is
     * spread over segments of the configured size. */
    if (sp.tail && sp.tail->active && sp.tail->bytes + sp.tail->queued >= sp.o.segment_bytes) {
        sp.tail->active = 0;
        seg_settle(sp.tail);
    }
    segment *s = sp.tail && sp.tail->active ? sp.tail : seg_new(sp.next_seq++);
    spool_op *op = s ? op_new(OP_APPEND) : NULL;
    if (!op) {
        stats_drop(DROP_no_memory, b->dataset, b->rows);
        batch_buf_free(b);
        return;
    }
    s->active = 1;
    s->pending++;
    s->queued += need;
    op->seg = s;
    op->b = b;
    op_push(op);
}

int spool_read_next(void)
{
    if (sp.reading || !sp.open)
        return 0;
    for (segment *s = sp.segs; s; s = s->next) {
        if (s->read_off >= s->bytes)
            continue;
        if (s->doomed)
            continue;
        spool_op *op = op_new(OP_READ);
        if (!op)
            return 0;
        s->pending++;
        op->seg = s;
        op->off = s->read_off;
        sp.reading = 1;
        op_push(op);
        return 1;
    }
    return 0;
}

void spool_ack(uint64_t ref, uint64_t rows)
{
    for (segment *s = sp.segs; s; s = s->next) {
        if (s->seq != ref)
            continue;
        s->rows_out -= rows <= s->rows_out ? rows : s->rows_out;
        seg_settle(s);
        return;
    }
}

/* The dead-letter copy of b could not be made: its rows were counted as
 * dropped already; say that the copy is missing too. */
static void dead_letter_lost(batch_buf *b, const char *why)
{
    log_limited(&write_limit, LOG_ERROR, "dead_letter_write_failed",
                "dir=%s dataset=%s rows=%llu error=\"%s\"", sp.o.dir,
                bf_dataset_name(b->dataset), (unsigned long long)b->rows, why);
    batch_buf_free(b);
}

void spool_dead_letter(batch_buf *b, long status, const char *body)
{
    if (!sp.open) {
        dead_letter_lost(b, "spool not open");
        return;
    }
    spool_op *op = op_new(OP_DEAD);
    if (!op) {
        dead_letter_lost(b, "out of memory");
        return;
    }
    /* One JSON header line, then the refused rows as they were sent. */
    json_t *h = json_pack("{s:{s:I,s:s,s:i,s:I,s:s}}", "dead_letter", "ts_ms",
                          (json_int_t)clock_wall_ms(), "dataset",
                          bf_dataset_name(b->dataset), "status", (int)status, "rows",
                          (json_int_t)b->rows, "response", body ? body : "");
    char *text = h ? json_dumps(h, JSON_COMPACT) : NULL;
    json_decref(h);
    size_t tl = text ? strlen(text) : 0;
    char *line = text ? realloc(text, tl + 2) : NULL;
    if (!line) {
        free(text);
        free(op);
        dead_letter_lost(b, "out of memory");
        return;
    }
    line[tl] = '\n';
    line[tl + 1] = '\0';
    op->text = line;
    op->b = b;
    op_push(op);
}

uint64_t spool_rows_unread(void)
{
    uint64_t n = 0;
    for (segment *s = sp.segs; s; s = s->next)
        n += s->rows_unread;
    return n;
}

void spool_flush(void (*done)(void *arg), void *arg)
{
    spool_op *op = op_new(OP_BARRIER);
    if (!op) {
        done(arg);
        return;
    }
    op->done = done;
    op->done_arg = arg;
    op_push(op);
}

/* Index one segment left by an earlier run: walk its records one at a
 * time, checking each crc, count rows, stop at a torn or corrupt record.
 * Returns 0 or a negative errno (the segment is then left alone on disk). */
static int index_segment(uint64_t seq)
{
    char path[300];
    seg_path(path, sizeof(path), seq);
    /* O_NOFOLLOW: a segment is a file this daemon wrote, never a link to
     * rows someone else chose. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    uint64_t off = 0, rows = 0, size = (uint64_t)st.st_size;
    while (off < size) {
        rec r;
        enum rec_status rs = read_record(fd, off, size, 0, &r);
        if (rs == REC_ERR && r.err == ENOMEM && never_fits(r.len)) {
            /* Indexed, not read: replay skips it and counts its rows. */
            rows += r.rows;
            off += r.len;
            continue;
        }
        if (rs == REC_BAD) {
            stats_drop(DROP_spool_corrupt, r.dataset, r.lines);
            log_warn("spool_corrupt", "segment=%016llx offset=%llu why=\"%s\" "
                                      "note=\"record skipped\"",
                     (unsigned long long)seq, (unsigned long long)off, r.why);
            off += r.len;
            continue;
        }
        if (rs != REC_OK) {
            stats.spool_torn++;
            log_warn("spool_torn", "segment=%016llx offset=%llu size=%llu "
                                   "note=\"torn tail skipped\"",
                     (unsigned long long)seq, (unsigned long long)off,
                     (unsigned long long)size);
            break;
        }
        rows += r.rows;
        off += r.len;
        batch_buf_free(r.b);
    }
    close(fd);
    segment *s = seg_new(seq);
    if (!s)
        return -ENOMEM;
    s->bytes = s->indexed = off;
    s->rows_unread = rows;
    if (off == 0)
        seg_unlink(s);
    return 0;
}

/* DIR/lock: an exclusive flock(2) for as long as the spool is open, so a
 * second daemon given the same directory refuses to start instead of
 * writing the same segments. The holder's PID is written in the file for
 * the message; the kernel drops the lock when the holder exits, however it
 * exits, so a stale file never blocks a start. take: lock it and keep the
 * fd (returned); else only look (O_RDONLY, nothing created) and return 0. */
static int lock_dir(const char *dir, int take, char *err, size_t n)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/lock", dir);
    int fd = take ? open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)
                  : open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        if (!take && (e == ENOENT || e == ENOTDIR))
            return 0; /* no lock file: nobody holds it */
        snprintf(err, n, "spool lock %s: %s", path, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[24] = "";
        ssize_t k = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[k > 0 ? strcspn(pid, "\n") : 0] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            snprintf(err, n, "spool directory %s is in use by birdfeederd pid %s (it "
                             "holds %s): one daemon per spool directory; stop it or "
                             "give this one another --spool-dir", dir,
                     *pid ? pid : "(unknown)", path);
            return -EBUSY;
        }
        snprintf(err, n, "spool lock %s: %s", path, strerror(e));
        return -e;
    }
    if (!take) {
        close(fd); /* releases the lock */
        return 0;
    }
    char pid[24];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("spool_lock_pid", "path=%s error=\"%s\" note=\"locked; the PID is "
                                   "not written\"", path, strerror(errno));
    return fd;
}

int spool_check_lock(const char *dir, char *err, size_t n)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* not there yet: spool_open makes it, ours */
        int rc = file_check(dfd, dir, "spool directory",
                            FILE_CHECK_DIR | FILE_CHECK_OWN_ONLY, err, n);
        close(dfd);
        if (rc < 0)
            return rc;
    }
    return lock_dir(dir, 0, err, n);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int spool_open(uv_loop_t *loop, const spool_opts *opts, spool_replay_cb cb,
               void *arg, char *err, size_t n)
{
    memset(&sp, 0, sizeof(sp));
    sp.loop = loop;
    sp.o = *opts;
    sp.cb = cb;
    sp.cb_arg = arg;
    sp.lock_fd = -1;
    int rc = paths_make_dir(opts->dir, 0700, err, n);
    if (rc < 0)
        return rc;
    /* Records are replayed verbatim, with the token: a directory another
     * user could write is a way to send rows in our name. Checked before
     * anything is created in it (the lock). */
    int dfd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int e = errno;
        snprintf(err, n, "spool directory %s: %s", opts->dir, strerror(e));
        return -e;
    }
    rc = file_check(dfd, opts->dir, "spool directory", FILE_CHECK_DIR | FILE_CHECK_OWN_ONLY,
                    err, n);
    int fd = rc < 0 ? rc : lock_dir(opts->dir, 1, err, n);
    if (fd < 0) {
        close(dfd);
        return fd;
    }
    sp.lock_fd = fd;
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        snprintf(err, n, "spool directory %s: %s", opts->dir, strerror(e));
        close(dfd);
        close(sp.lock_fd);
        sp.lock_fd = -1;
        return -e;
    }
    uint64_t *seqs = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long seq;
        char tail[8];
        if (strlen(e->d_name) != 20 ||
            sscanf(e->d_name, "%16llx.%3s", &seq, tail) != 2 || strcmp(tail, "seg"))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *ns = realloc(seqs, cap * sizeof(*ns));
            if (!ns) { /* starting without some segments would hide them */
                closedir(d);
                free(seqs);
                snprintf(err, n, "spool directory %s: out of memory", opts->dir);
                close(sp.lock_fd);
                sp.lock_fd = -1;
                return -ENOMEM;
            }
            seqs = ns;
        }
        seqs[count++] = seq;
    }
    closedir(d);
    if (count)
        qsort(seqs, count, sizeof(*seqs), cmp_u64);
    sp.open = 1;
    for (size_t i = 0; i < count; i++) {
        rc = index_segment(seqs[i]);
        if (rc < 0) /* left on disk, not replayed by this run */
            log_error("spool_segment_unreadable", "segment=%016llx error=\"%s\"",
                      (unsigned long long)seqs[i], strerror(-rc));
        sp.next_seq = seqs[i] + 1;
    }
    free(seqs);
    if (!sp.next_seq)
        sp.next_seq = 1;
    if (sp.segs)
        log_info("spool_found", "dir=%s segments=%llu bytes=%llu rows=%llu "
                                "note=\"replayed once the sink is healthy\"",
                 opts->dir, (unsigned long long)spool_segments(),
                 (unsigned long long)spool_bytes(),
                 (unsigned long long)spool_rows_unread());
    return 0;
}

void spool_close(void)
{
    segment *s = sp.segs;
    while (s) {
        segment *next = s->next;
        if (s->fd >= 0) {
            fdatasync(s->fd); /* a clean stop leaves nothing torn */
            close(s->fd);
        }
        free(s);
        s = next;
    }
    sp.segs = sp.tail = NULL;
    sp.open = 0;
    if (sp.lock_fd >= 0) {
        close(sp.lock_fd); /* the lock goes with it; the file stays */
        sp.lock_fd = -1;
    }
}
