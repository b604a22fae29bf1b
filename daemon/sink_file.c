/* sink_file.c: NDJSON batches appended to a file. See sink_file.h. */
#include "sink_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static struct {
    uv_loop_t *loop;
    uv_file fd;            /* -1: not open */
    uv_file next_fd;       /* a reload's new file, taken once no write is in
                              progress; -1: none */
    uv_fs_t req;
    sink_job *cur;         /* the one write in progress */
    size_t off;            /* bytes of cur written so far */
} fs;

static log_limit write_limit;

static int write_rest(void);

static void close_fd(uv_file fd)
{
    if (fd > STDOUT_FILENO)
        close(fd);
    else if (fd == STDOUT_FILENO)
        fsync(STDOUT_FILENO);
}

/* A reload's new file takes over between writes, never inside one. */
static void take_next_fd(void)
{
    if (fs.next_fd < 0 || fs.cur)
        return;
    close_fd(fs.fd);
    fs.fd = fs.next_fd;
    fs.next_fd = -1;
}

static void on_written(uv_fs_t *req)
{
    sink_job *j = fs.cur;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n >= 0 && fs.off + (size_t)n < j->b->len) {
        fs.off += (size_t)n; /* short write: send the rest */
        int rc = write_rest();
        if (rc == 0)
            return;
        n = rc;
    }
    fs.cur = NULL;
    take_next_fd();
    sink_answer a = {.cls = SINK_DONE, .rows_ok = j->b->rows, .wait_ms = -1};
    if (n < 0) {
        log_limited(&write_limit, LOG_ERROR, "out_write_failed", "error=\"%s\" rows=%llu",
                    uv_strerror((int)n), (unsigned long long)j->b->rows);
        a = (sink_answer){.cls = SINK_REJECT, .drop = DROP_out_write, .wait_ms = -1,
                          .detail = uv_strerror((int)n)};
    } else {
        stats.bytes_sent += j->b->len;
    }
    sink_job_done(j, &a);
}

static int write_rest(void)
{
    uv_buf_t buf = uv_buf_init(fs.cur->b->data + fs.off,
                               (unsigned)(fs.cur->b->len - fs.off));
    return uv_fs_write(fs.loop, &fs.req, fs.fd, &buf, 1, -1, on_written);
}

static int file_submit(sink_job *j)
{
    if (fs.cur || fs.fd < 0)
        return -EBUSY; /* max_inflight is 1: the policy never does this */
    fs.cur = j;
    fs.off = 0;
    int rc = write_rest();
    if (rc < 0)
        fs.cur = NULL;
    return rc;
}

/* The file at path ("-": stdout) opened for appending, or a negative
 * errno with a message in err (size n). */
static int open_out(const char *path, char *err, size_t n)
{
    if (strcmp(path, "-") == 0)
        return STDOUT_FILENO;
    /* O_NOFOLLOW: rows are appended to the file named, never through a
     * symlink someone left there to a file of their choosing. */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "opening --out %s: %s", path,
                 e == ELOOP ? "it is a symbolic link (not followed)" : strerror(e));
        return -e;
    }
    return fd;
}

static int file_start(uv_loop_t *loop, const void *opts, char *err, size_t n)
{
    const sink_file_opts *o = opts;
    memset(&fs, 0, sizeof(fs));
    fs.loop = loop;
    fs.next_fd = -1;
    fs.fd = open_out(o->path, err, n);
    return fs.fd < 0 ? fs.fd : 0;
}

/* A reload: --out is opened again (a new path, or the same one moved away
 * by a log rotation); batches from now on go there. */
static int file_reconfigure(const void *opts, char *err, size_t n)
{
    const sink_file_opts *o = opts;
    int fd = open_out(o->path, err, n);
    if (fd < 0)
        return fd;
    if (fs.next_fd >= 0)
        close_fd(fs.next_fd);
    fs.next_fd = fd;
    take_next_fd();
    return 0;
}

static void file_forget(sink_job *j)
{
    (void)j; /* nothing is derived from a batch here */
}

static void file_abort(void)
{
    /* A write in progress is on the threadpool and ends on its own. */
}

static void file_close(void)
{
    close_fd(fs.fd);
    if (fs.next_fd >= 0)
        close_fd(fs.next_fd);
    fs.fd = fs.next_fd = -1;
}

const sink_backend sink_file = {
    .name = "file",
    .max_inflight = 1,
    .start = file_start,
    .submit = file_submit,
    .forget = file_forget,
    .abort = file_abort,
    .close = file_close,
    .reconfigure = file_reconfigure,
};
