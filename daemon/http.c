/* http.c: libcurl multi socket API driven by libuv. See http.h. */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define BODY_MAX (64 * 1024)

static log_limit multi_limit;

typedef struct http_req {
    CURL *easy;
    http_done_cb done;
    void *arg;
    int64_t retry_after_s, ratelimit_limit, ratelimit_remaining, ratelimit_reset_s;
    char *body;
    size_t body_len;
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers;
    struct http_req *prev, *next; /* in-progress list, for http_abort_all */
} http_req;

typedef struct poll_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct poll_ctx *prev, *next; /* all polls, so http_close finds them */
} poll_ctx;

static struct {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *auth;              /* "Authorization: Bearer <token>" or NULL */
    uint64_t timeout_ms, connect_timeout_ms;
    http_req *reqs;
    poll_ctx *polls;
    unsigned inflight;
    int closing;
    int timer_open;          /* ht.timer needs uv_close */
    int global;              /* curl_global_init succeeded */
} ht;

static void req_free(http_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r);
}

static void check_multi_info(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(ht.multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        http_req *r;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        http_result res = {0};
        res.retry_after_s = r->retry_after_s;
        res.ratelimit_limit = r->ratelimit_limit;
        res.ratelimit_remaining = r->ratelimit_remaining;
        res.ratelimit_reset_s = r->ratelimit_reset_s;
        if (msg->data.result == CURLE_OK) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
        } else {
            res.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(msg->data.result);
        }
        res.body = r->body ? r->body : "";
        res.body_len = r->body_len;
        /* Unlink and remove before the callback, which may post again. */
        if (r->prev)
            r->prev->next = r->next;
        else
            ht.reqs = r->next;
        if (r->next)
            r->next->prev = r->prev;
        ht.inflight--;
        CURLMcode mc = curl_multi_remove_handle(ht.multi, r->easy);
        if (mc != CURLM_OK)
            log_limited(&multi_limit, LOG_ERROR, "curl_multi_failed",
                        "call=remove_handle error=\"%s\"", curl_multi_strerror(mc));
        r->done(&res, r->arg);
        req_free(r);
    }
}

/* Tell curl what happened on fd (or that its timer fired), then collect
 * finished transfers. A failure here leaves curl's state as it was: the
 * transfers it concerns end by their own timeouts, so it delays answers but
 * loses nothing; it is logged, rate-limited. */
static void socket_action(curl_socket_t fd, int flags)
{
    int running;
    CURLMcode mc = curl_multi_socket_action(ht.multi, fd, flags, &running);
    if (mc != CURLM_OK)
        log_limited(&multi_limit, LOG_ERROR, "curl_multi_failed", "call=socket_action error=\"%s\"",
                    curl_multi_strerror(mc));
    check_multi_info();
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    poll_ctx *c = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    socket_action(c->fd, flags);
}

static void on_timeout(uv_timer_t *t)
{
    (void)t;
    socket_action(CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arm the timer; calling back into curl
 * from here is not allowed. uv_timer_start fails only on a closing handle. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    (void)userp;
    if (timeout_ms < 0)
        uv_timer_stop(&ht.timer);
    else
        uv_timer_start(&ht.timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void poll_close(poll_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        ht.polls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_poll_closed);
}

/* CURLMOPT_SOCKETFUNCTION: a uv_poll_t per socket. Returning -1 makes curl
 * fail every transfer in progress (curl >= 7.85), which the sink retries:
 * better than a transfer that waits on a socket nobody watches. */
static int socket_cb(CURL *easy, curl_socket_t s, int action, void *userp,
                     void *socketp)
{
    (void)easy;
    (void)userp;
    poll_ctx *c = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (c) {
            poll_close(c);
            curl_multi_assign(ht.multi, s, NULL);
        }
        return 0;
    }
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c) {
            log_limited(&multi_limit, LOG_ERROR, "curl_socket_failed", "error=\"out of memory\"");
            return -1;
        }
        c->fd = s;
        int rc = uv_poll_init_socket(ht.loop, &c->poll, s);
        if (rc < 0) {
            log_limited(&multi_limit, LOG_ERROR, "curl_socket_failed",
                        "call=uv_poll_init_socket error=\"%s\"", uv_strerror(rc));
            free(c);
            return -1;
        }
        c->poll.data = c;
        c->next = ht.polls;
        if (ht.polls)
            ht.polls->prev = c;
        ht.polls = c;
        curl_multi_assign(ht.multi, s, c);
    }
    int events = 0;
    if (action & CURL_POLL_IN)
        events |= UV_READABLE;
    if (action & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    int rc = uv_poll_start(&c->poll, events, on_poll);
    if (rc < 0) {
        log_limited(&multi_limit, LOG_ERROR, "curl_socket_failed",
                    "call=uv_poll_start error=\"%s\"", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    http_req *r = userp;
    size_t n = size * nmemb, room = BODY_MAX - r->body_len;
    size_t take = n < room ? n : room;
    if (take) {
        char *nb = realloc(r->body, r->body_len + take + 1);
        if (!nb)
            return n; /* the body is informational; keep the transfer */
        memcpy(nb + r->body_len, data, take);
        r->body = nb;
        r->body_len += take;
        r->body[r->body_len] = '\0';
    }
    return n;
}

/* A header's value as a non-negative integer (at most 1000000), or -1
 * when it does not start with a digit. */
static int64_t header_number(const char *v, size_t len)
{
    int64_t x = 0;
    size_t i = 0;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i == len || v[i] < '0' || v[i] > '9')
        return -1; /* an HTTP-date Retry-After is treated as absent */
    for (; i < len && v[i] >= '0' && v[i] <= '9' && x < 1000000; i++)
        x = x * 10 + (v[i] - '0');
    return x;
}

/* The numeric headers a response may carry, and where each goes. */
static const struct {
    const char *name; /* lower case, with the colon */
    size_t off;       /* of its int64_t in http_req */
} number_headers[] = {
    {"retry-after:", offsetof(http_req, retry_after_s)},
    {"x-ratelimit-limit:", offsetof(http_req, ratelimit_limit)},
    {"x-ratelimit-remaining:", offsetof(http_req, ratelimit_remaining)},
    {"x-ratelimit-reset:", offsetof(http_req, ratelimit_reset_s)},
};

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    http_req *r = userp;
    size_t n = size * nmemb;
    for (size_t k = 0; k < sizeof(number_headers) / sizeof(number_headers[0]); k++) {
        size_t len = strlen(number_headers[k].name);
        if (n > len && strncasecmp(data, number_headers[k].name, len) == 0) {
            *(int64_t *)((char *)r + number_headers[k].off) =
                header_number(data + len, n - len);
            break;
        }
    }
    return n;
}

int http_init(uv_loop_t *loop, const http_opts *opts, char *err, size_t n)
{
    memset(&ht, 0, sizeof(ht));
    ht.loop = loop;
    ht.timeout_ms = opts->timeout_ms;
    ht.connect_timeout_ms = opts->connect_timeout_ms;
    int rc = uv_timer_init(loop, &ht.timer);
    if (rc < 0) {
        snprintf(err, n, "timer: %s", uv_strerror(rc));
        return rc;
    }
    ht.timer_open = 1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, n, "libcurl initialisation failed");
        return -ENOMEM;
    }
    ht.global = 1;
    if (!(ht.multi = curl_multi_init())) {
        snprintf(err, n, "libcurl initialisation failed");
        return -ENOMEM;
    }
    if ((rc = http_reconfigure(opts, err, n)) < 0)
        return rc;
    /* Up to 16 connections stay open for reuse. */
    CURLMcode mc;
    if ((mc = curl_multi_setopt(ht.multi, CURLMOPT_SOCKETFUNCTION, socket_cb)) ||
        (mc = curl_multi_setopt(ht.multi, CURLMOPT_TIMERFUNCTION, timer_cb)) ||
        (mc = curl_multi_setopt(ht.multi, CURLMOPT_MAXCONNECTS, 16L))) {
        snprintf(err, n, "libcurl: %s", curl_multi_strerror(mc));
        return -EINVAL;
    }
    return 0;
}

int http_reconfigure(const http_opts *opts, char *err, size_t n)
{
    char *auth = NULL;
    if (opts->token) {
        size_t len = strlen(opts->token) + sizeof("Authorization: Bearer ");
        if (!(auth = malloc(len))) {
            snprintf(err, n, "out of memory");
            return -ENOMEM;
        }
        snprintf(auth, len, "Authorization: Bearer %s", opts->token);
    }
    /* Requests in progress hold their own copy (curl_slist_append). */
    if (ht.auth)
        explicit_bzero(ht.auth, strlen(ht.auth));
    free(ht.auth);
    ht.auth = auth;
    ht.timeout_ms = opts->timeout_ms;
    ht.connect_timeout_ms = opts->connect_timeout_ms;
    return 0;
}

/* The options of one POST; the first that curl refuses is returned. */
static CURLcode set_post_options(http_req *r, const char *url, const char *body,
                                 size_t len)
{
    CURL *e = r->easy;
    CURLcode cc;
#define SET(opt, val)                                                          \
    if ((cc = curl_easy_setopt(e, opt, val)) != CURLE_OK)                      \
        return cc;
    SET(CURLOPT_URL, url);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    SET(CURLOPT_HTTPHEADER, r->headers);
    SET(CURLOPT_USERAGENT, "birdfeederd/" BF_VERSION);
    SET(CURLOPT_TIMEOUT_MS, (long)ht.timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)ht.connect_timeout_ms);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_PRIVATE, r);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#undef SET
    return CURLE_OK;
}


int http_post(const char *url, const char *body, size_t len,
              const char *content_encoding, http_done_cb done, void *arg)
{
    if (ht.closing || !ht.multi)
        return -ESHUTDOWN;
    http_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->done = done;
    r->arg = arg;
    r->retry_after_s = r->ratelimit_limit = r->ratelimit_remaining =
        r->ratelimit_reset_s = -1;
    r->easy = curl_easy_init();
    if (!r->easy) {
        free(r);
        return -ENOMEM;
    }
    /* "Expect:" turns off the 100-continue round trip before large bodies. */
    char ce[64];
    const char *lines[4] = {"Content-Type: application/x-ndjson", "Expect:",
                            ht.auth, NULL};
    if (content_encoding) {
        snprintf(ce, sizeof(ce), "Content-Encoding: %s", content_encoding);
        lines[3] = ce;
    }
    for (int i = 0; i < 4; i++) {
        if (!lines[i])
            continue;
        struct curl_slist *t = curl_slist_append(r->headers, lines[i]);
        if (!t) {
            req_free(r);
            return -ENOMEM;
        }
        r->headers = t;
    }
    CURLcode cc = set_post_options(r, url, body, len);
    if (cc != CURLE_OK) {
        log_limited(&multi_limit, LOG_ERROR, "curl_setopt_failed", "error=\"%s\"",
                    curl_easy_strerror(cc));
        req_free(r);
        return cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    }
    CURLMcode mc = curl_multi_add_handle(ht.multi, r->easy);
    if (mc != CURLM_OK) {
        log_limited(&multi_limit, LOG_ERROR, "curl_multi_failed", "call=add_handle error=\"%s\"",
                    curl_multi_strerror(mc));
        req_free(r);
        return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    }
    r->next = ht.reqs;
    if (ht.reqs)
        ht.reqs->prev = r;
    ht.reqs = r;
    ht.inflight++;
    return 0;
}

void http_abort_all(void)
{
    while (ht.reqs) {
        http_req *r = ht.reqs;
        ht.reqs = r->next;
        if (ht.reqs)
            ht.reqs->prev = NULL;
        ht.inflight--;
        curl_multi_remove_handle(ht.multi, r->easy);
        http_result res = {.status = 0, .error = "aborted", .retry_after_s = -1,
                           .ratelimit_limit = -1, .ratelimit_remaining = -1,
                           .ratelimit_reset_s = -1, .body = "", .body_len = 0};
        r->done(&res, r->arg);
        req_free(r);
    }
}

unsigned http_inflight(void) { return ht.inflight; }

void http_close(void)
{
    ht.closing = 1;
    if (ht.multi) {
        http_abort_all();
        /* Closing the multi handle closes its cached connections. */
        curl_multi_cleanup(ht.multi);
        ht.multi = NULL;
    }
    while (ht.polls) /* any curl did not report removed */
        poll_close(ht.polls);
    if (ht.timer_open) {
        ht.timer_open = 0;
        uv_timer_stop(&ht.timer);
        uv_close((uv_handle_t *)&ht.timer, NULL);
    }
    if (ht.auth)
        explicit_bzero(ht.auth, strlen(ht.auth));
    free(ht.auth);
    ht.auth = NULL;
    if (ht.global) {
        ht.global = 0;
        curl_global_cleanup();
    }
}
