/*
 * tests/unit/testhttp.h: a small HTTP/1.1 server for test_http.c and
 * test_sink.c, on 127.0.0.1 (an ephemeral port), in a thread of the test.
 *
 * It answers requests from a script of canned responses, in the order the
 * requests complete, then with a default response; it keeps every request
 * (method, target, header lines, body, the connection it came on, when it
 * was complete) for the test to look at. One poll(2) loop serves every
 * connection, so requests in flight at once are counted (max_outstanding),
 * and an answer can be delayed, withheld, or replaced by a hang-up.
 *
 * Threads: the connections belong to the server thread; the script, the
 * requests and the counters are shared under mu, and the test reads them
 * through the functions below. A request, once counted in nreqs, is not
 * written again until th_stop, so th_req_at's pointer can be read freely.
 * The server never writes while holding mu, so a test turning its loop is
 * never blocked behind a slow client. Header only, static inline, like
 * testutil.h.
 */
#ifndef BF_TESTHTTP_H
#define BF_TESTHTTP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <zlib.h>

#include "testutil.h"

#define TH_SCRIPT_MAX 32
#define TH_REQS_MAX 64
#define TH_CONNS_MAX 16

typedef struct th_resp {
    int status;
    const char *headers; /* extra header lines, each ending "\r\n"; NULL: none */
    const char *body;    /* NULL: empty */
    size_t body_len;     /* 0: strlen(body) */
    int close;           /* send "Connection: close", then close */
    unsigned delay_ms;   /* answer this long after the request is complete */
    int never;           /* never answer; the connection stays open */
    int hangup;          /* close the connection instead of answering */
} th_resp;

typedef struct th_req {
    char method[16];
    char target[512];
    char *head;      /* the header lines after the request line, CRLF each */
    char *body;      /* body_len bytes, NUL-terminated */
    size_t body_len;
    int conn;        /* 1 for the first connection accepted, and so on */
    uint64_t t_ms;   /* tu_mono_ms() when the request was complete */
} th_req;

typedef struct th_conn {
    int fd, id;
    char *buf;
    size_t len, cap;
    int waiting;     /* a request is complete and not answered yet */
    th_resp resp;
    uint64_t due_ms;
} th_conn;

typedef struct th_server {
    int lfd, port, wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    /* shared, under mu */
    th_resp script[TH_SCRIPT_MAX];
    int nscript, next;
    th_resp dflt;
    th_req reqs[TH_REQS_MAX];
    int nreqs;
    int accepted, outstanding, max_outstanding, answered;
    int stop;
    /* the server thread's own */
    th_conn conns[TH_CONNS_MAX];
    char url[64];    /* "http://127.0.0.1:PORT", set by th_start */
} th_server;

/* Counters of the moment, copied under the mutex. */
typedef struct th_counts {
    int nreqs, accepted, outstanding, max_outstanding, answered;
} th_counts;

static inline const char *th_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static inline void th_send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the client went away */
        p += w;
        n -= (size_t)w;
    }
}

static inline void th_conn_close(th_server *s, th_conn *c)
{
    if (c->waiting) {
        pthread_mutex_lock(&s->mu);
        s->outstanding--;
        pthread_mutex_unlock(&s->mu);
    }
    close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static inline void th_answer(th_server *s, th_conn *c)
{
    const th_resp *r = &c->resp;
    if (r->hangup) {
        th_conn_close(s, c);
        return;
    }
    size_t blen = r->body ? (r->body_len ? r->body_len : strlen(r->body)) : 0;
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n",
                     r->status, th_reason(r->status), blen, r->headers ? r->headers : "",
                     r->close ? "Connection: close\r\n" : "");
    th_send_all(c->fd, head, (size_t)n);
    if (blen)
        th_send_all(c->fd, r->body, blen);
    pthread_mutex_lock(&s->mu);
    c->waiting = 0;
    s->outstanding--;
    s->answered++;
    pthread_mutex_unlock(&s->mu);
    if (r->close)
        th_conn_close(s, c);
}

/* Content-Length of a header block (0 when absent). */
static inline size_t th_content_length(const char *head, size_t len)
{
    static const char name[] = "\r\ncontent-length:";
    for (size_t i = 0; i + sizeof(name) - 1 < len; i++)
        if (strncasecmp(head + i, name, sizeof(name) - 1) == 0)
            return (size_t)strtoull(head + i + sizeof(name) - 1, NULL, 10);
    return 0;
}

/* Take one complete request off c's buffer, record it and pick its answer.
 * Returns 0 when the buffer does not hold a whole request yet. */
static inline int th_take_request(th_server *s, th_conn *c)
{
    if (c->len == 0)
        return 0;
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - c->buf) + 4;
    size_t cl = th_content_length(c->buf, hlen);
    if (c->len < hlen + cl)
        return 0;
    th_req q;
    memset(&q, 0, sizeof(q));
    char *eol = memmem(c->buf, hlen, "\r\n", 2);
    char line[1024];
    size_t ll = (size_t)(eol - c->buf) < sizeof(line) - 1 ? (size_t)(eol - c->buf)
                                                           : sizeof(line) - 1;
    memcpy(line, c->buf, ll);
    line[ll] = '\0';
    if (sscanf(line, "%15s %511s", q.method, q.target) != 2)
        q.method[0] = q.target[0] = '\0';
    q.head = strndup(eol + 2, (size_t)(c->buf + hlen - (eol + 2)));
    q.body = malloc(cl + 1);
    if (q.body) {
        memcpy(q.body, c->buf + hlen, cl);
        q.body[cl] = '\0';
    }
    q.body_len = cl;
    q.conn = c->id;
    q.t_ms = tu_mono_ms();
    memmove(c->buf, c->buf + hlen + cl, c->len - hlen - cl);
    c->len -= hlen + cl;

    pthread_mutex_lock(&s->mu);
    if (s->nreqs < TH_REQS_MAX) {
        s->reqs[s->nreqs++] = q;
    } else {
        free(q.head);
        free(q.body);
    }
    c->resp = s->next < s->nscript ? s->script[s->next++] : s->dflt;
    c->waiting = 1;
    if (++s->outstanding > s->max_outstanding)
        s->max_outstanding = s->outstanding;
    pthread_mutex_unlock(&s->mu);
    c->due_ms = q.t_ms + c->resp.delay_ms;
    return 1;
}

static inline void th_read_conn(th_server *s, th_conn *c)
{
    char tmp[65536];
    ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        th_conn_close(s, c);
        return;
    }
    if (c->len + (size_t)n > c->cap) {
        size_t cap = c->cap ? c->cap : 65536;
        while (cap < c->len + (size_t)n)
            cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
            th_conn_close(s, c);
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, tmp, (size_t)n);
    c->len += (size_t)n;
}

/* Answer what is due; returns the poll timeout until the next answer. */
static inline int th_answer_due(th_server *s)
{
    int timeout = -1;
    for (int i = 0; i < TH_CONNS_MAX; i++) {
        th_conn *c = &s->conns[i];
        for (;;) {
            if (c->fd < 0)
                break;
            if (!c->waiting && !th_take_request(s, c))
                break;
            if (c->resp.never)
                break;
            uint64_t now = tu_mono_ms();
            if (c->due_ms > now) {
                int t = (int)(c->due_ms - now);
                if (timeout < 0 || t < timeout)
                    timeout = t;
                break;
            }
            th_answer(s, c);
        }
    }
    return timeout;
}

static inline void *th_main(void *arg)
{
    th_server *s = arg;
    for (;;) {
        int timeout = th_answer_due(s);
        struct pollfd p[2 + TH_CONNS_MAX];
        int idx[2 + TH_CONNS_MAX], np = 0;
        p[np].fd = s->wake[0];
        p[np++].events = POLLIN;
        p[np].fd = s->lfd;
        p[np++].events = POLLIN;
        for (int i = 0; i < TH_CONNS_MAX; i++) {
            if (s->conns[i].fd < 0)
                continue;
            p[np].fd = s->conns[i].fd;
            p[np].events = POLLIN;
            idx[np++] = i;
        }
        if (poll(p, (nfds_t)np, timeout) < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        if (p[1].revents & POLLIN) {
            int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                int slot = -1;
                for (int i = 0; i < TH_CONNS_MAX && slot < 0; i++)
                    if (s->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                } else {
                    pthread_mutex_lock(&s->mu);
                    s->conns[slot].id = ++s->accepted;
                    pthread_mutex_unlock(&s->mu);
                    s->conns[slot].fd = fd;
                }
            }
        }
        for (int k = 2; k < np; k++)
            if (p[k].revents && s->conns[idx[k]].fd == p[k].fd)
                th_read_conn(s, &s->conns[idx[k]]);
    }
    return NULL;
}

/* Start the server; it answers 200 "{}" until told otherwise. */
static inline void th_start(th_server *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < TH_CONNS_MAX; i++)
        s->conns[i].fd = -1;
    s->dflt.status = 200;
    s->dflt.body = "{}";
    ck_assert_int_eq(pthread_mutex_init(&s->mu, NULL), 0);
    ck_assert_int_eq(pipe2(s->wake, O_CLOEXEC), 0);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s->lfd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(s->lfd, 64), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, th_main, s), 0);
}

/* Stop the thread, close every socket, free the requests. */
static inline void th_stop(th_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    ck_assert_int_eq(write(s->wake[1], "x", 1), 1);
    ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
    for (int i = 0; i < TH_CONNS_MAX; i++)
        if (s->conns[i].fd >= 0)
            th_conn_close(s, &s->conns[i]);
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    for (int i = 0; i < s->nreqs; i++) {
        free(s->reqs[i].head);
        free(s->reqs[i].body);
    }
    pthread_mutex_destroy(&s->mu);
}

/* Append n responses to the script (answered in order, then the default). */
static inline void th_script(th_server *s, const th_resp *r, int n)
{
    pthread_mutex_lock(&s->mu);
    ck_assert_int_le(s->nscript + n, TH_SCRIPT_MAX);
    memcpy(s->script + s->nscript, r, (size_t)n * sizeof(*r));
    s->nscript += n;
    pthread_mutex_unlock(&s->mu);
}

static inline void th_default(th_server *s, th_resp r)
{
    pthread_mutex_lock(&s->mu);
    s->dflt = r;
    pthread_mutex_unlock(&s->mu);
}

static inline th_counts th_counts_now(th_server *s)
{
    pthread_mutex_lock(&s->mu);
    th_counts c = {s->nreqs, s->accepted, s->outstanding, s->max_outstanding, s->answered};
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* Request i (0 for the first), which must have arrived. */
static inline const th_req *th_req_at(th_server *s, int i)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreqs;
    pthread_mutex_unlock(&s->mu);
    ck_assert_msg(i < n, "request %d asked for, %d arrived", i, n);
    return &s->reqs[i];
}

/* The value of header name in q (first occurrence), copied into out (size
 * n) without surrounding blanks; returns 1 when present, else 0. */
static inline int th_header(const th_req *q, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *l = q->head; l && *l;) {
        const char *e = strstr(l, "\r\n");
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        if (ll > nl && l[nl] == ':' && strncasecmp(l, name, nl) == 0) {
            const char *v = l + nl + 1, *ve = l + ll;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            snprintf(out, n, "%.*s", (int)(ve - v), v);
            return 1;
        }
        l = e ? e + 2 : l + ll;
    }
    return 0;
}

#define ck_assert_header(q, name, want)                                         \
    do {                                                                        \
        char hv_[512];                                                          \
        ck_assert_msg(th_header(q, name, hv_, sizeof(hv_)), "no %s header", name); \
        ck_assert_str_eq(hv_, want);                                            \
    } while (0)

typedef struct th_wait {
    th_server *s;
    int n;
} th_wait;

static inline int th_pred_reqs(void *arg)
{
    th_wait *w = arg;
    return th_counts_now(w->s).nreqs >= w->n;
}

/* Turn loop until n requests arrived (or timeout_ms); returns whether they did. */
static inline int th_run_until_reqs(uv_loop_t *loop, th_server *s, int n,
                                    uint64_t timeout_ms)
{
    th_wait w = {s, n};
    return tu_run_until(loop, th_pred_reqs, &w, timeout_ms);
}

/* A TCP port on 127.0.0.1 that refuses connections: bound, never listening,
 * so nothing else can take it while *fd stays open. */
static inline int th_refusing_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(*fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(*fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(*fd, (struct sockaddr *)&sa, &sl), 0);
    return ntohs(sa.sin_port);
}

/* gunzip len bytes into a new NUL-terminated buffer (caller frees), *out_len
 * its length; NULL when data is not one complete gzip stream. */
static inline char *th_gunzip(const char *data, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return NULL;
    size_t cap = len * 4 + 1024, n = 0;
    char *out = malloc(cap + 1);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    int rc = Z_OK;
    while (out && rc == Z_OK) {
        if (n == cap) {
            cap *= 2;
            char *no = realloc(out, cap + 1);
            if (!no) {
                free(out);
                out = NULL;
                break;
            }
            out = no;
        }
        z.next_out = (Bytef *)out + n;
        z.avail_out = (uInt)(cap - n);
        rc = inflate(&z, Z_NO_FLUSH);
        n = cap - z.avail_out;
        if (rc == Z_BUF_ERROR && z.avail_in == 0)
            break;
        if (rc == Z_BUF_ERROR)
            rc = Z_OK;
    }
    int complete = rc == Z_STREAM_END && z.avail_in == 0;
    inflateEnd(&z);
    if (!out || !complete) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

#endif /* BF_TESTHTTP_H */
