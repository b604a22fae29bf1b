/*
 * test_http.c: daemon/http.c against the loopback server of testhttp.h:
 * the done callback (exactly once, status, Retry-After, X-RateLimit-Reset,
 * body), the request as sent (method, target, headers, body), connection
 * reuse, connection refused, the timeout, http_abort_all and http_close.
 *
 * Each test runs a loop of its own (uv_loop_init); at the end http_close,
 * the loop runs until every handle is closed and uv_loop_close() must
 * return 0. The daemon's log lines go to a file in the test's directory.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http.h"
#include "testhttp.h"
#include "testutil.h"

static uv_loop_t loop;
static th_server srv;
static char tmpdir[64];
static char log_path[128];
static int saved_stderr = -1;
static char url[128];

/* What one done callback saw (res is valid during the call only). */
typedef struct seen {
    int calls;
    long status;
    int has_error;
    char error[256];
    int64_t retry_after_s, ratelimit_limit, ratelimit_remaining, ratelimit_reset_s;
    char *body;
    size_t body_len;
    int body_nul;        /* body[body_len] == '\0' */
    uint64_t t_ms;       /* tu_mono_ms() at the call */
    unsigned inflight;   /* http_inflight() during the call */
} seen;

static seen got[8];

static void http_setup(void)
{
    memset(got, 0, sizeof(got));
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "http");
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    saved_stderr = tu_stderr_to(log_path);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    th_start(&srv);
    snprintf(url, sizeof(url), "%s/v0/events?name=llm_events&wait=true", srv.url);
}

static void http_teardown(void)
{
    for (int i = 0; i < N(got); i++)
        free(got[i].body);
    tu_stderr_restore(saved_stderr, log_path);
    saved_stderr = -1;
    tu_rmtree(tmpdir);
}

static void start(const char *token, uint64_t timeout_ms)
{
    char err[256] = "";
    http_opts o = {.token = token, .timeout_ms = timeout_ms, .connect_timeout_ms = 1000};
    ck_assert_msg(http_init(&loop, &o, err, sizeof(err)) == 0, "http_init: %s", err);
}

/* http_close, run the loop until every handle closed, close it; stop the
 * server. */
static void finish(void)
{
    http_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    th_stop(&srv);
}

static void on_done(const http_result *res, void *arg)
{
    seen *g = arg;
    g->calls++;
    g->status = res->status;
    g->has_error = res->error != NULL;
    snprintf(g->error, sizeof(g->error), "%s", res->error ? res->error : "");
    g->retry_after_s = res->retry_after_s;
    g->ratelimit_limit = res->ratelimit_limit;
    g->ratelimit_remaining = res->ratelimit_remaining;
    g->ratelimit_reset_s = res->ratelimit_reset_s;
    free(g->body);
    g->body = malloc(res->body_len + 1);
    ck_assert_ptr_nonnull(res->body);
    memcpy(g->body, res->body, res->body_len);
    g->body[res->body_len] = '\0';
    g->body_len = res->body_len;
    g->body_nul = res->body[res->body_len] == '\0';
    g->t_ms = tu_mono_ms();
    g->inflight = http_inflight();
}

static int pred_calls(void *arg)
{
    return ((seen *)arg)->calls > 0;
}

/* Post body (NUL-terminated) to url; done goes to g. */
static void post(seen *g, const char *body, const char *enc)
{
    ck_assert_int_eq(http_post(url, body, strlen(body), enc, on_done, g), 0);
}

static void wait_done(seen *g, uint64_t timeout_ms)
{
    ck_assert_msg(tu_run_until(&loop, pred_calls, g, timeout_ms),
                  "no done callback in %llu ms", (unsigned long long)timeout_ms);
}

/* ---- the request as sent, the answer as received ------------------------ */

START_TEST(test_http_post_200)
{
    th_resp r = {.status = 200, .headers = "X-Test: 1\r\n",
                 .body = "{\"successful_rows\":2,\"quarantined_rows\":0}"};
    th_script(&srv, &r, 1);
    start("secret-token", 5000);
    ck_assert_uint_eq(http_inflight(), 0);
    post(&got[0], "{\"a\":1}\n{\"a\":2}\n", "gzip");
    ck_assert_uint_eq(http_inflight(), 1);
    ck_assert_int_eq(got[0].calls, 0); /* never from inside http_post */
    wait_done(&got[0], 3000);
    tu_run_for(&loop, 50); /* exactly once */
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_int_eq(got[0].status, 200);
    ck_assert_int_eq(got[0].has_error, 0);
    ck_assert_int_eq(got[0].retry_after_s, -1);
    ck_assert_int_eq(got[0].ratelimit_reset_s, -1);
    ck_assert_str_eq(got[0].body, "{\"successful_rows\":2,\"quarantined_rows\":0}");
    ck_assert_uint_eq(got[0].body_len, strlen(got[0].body));
    ck_assert_int_eq(got[0].body_nul, 1);
    ck_assert_uint_eq(got[0].inflight, 0); /* unlinked before the callback */
    ck_assert_uint_eq(http_inflight(), 0);

    th_counts c = th_counts_now(&srv);
    ck_assert_int_eq(c.nreqs, 1);
    const th_req *q = th_req_at(&srv, 0);
    ck_assert_str_eq(q->method, "POST");
    ck_assert_str_eq(q->target, "/v0/events?name=llm_events&wait=true");
    ck_assert_header(q, "Authorization", "Bearer secret-token");
    ck_assert_header(q, "Content-Type", "application/x-ndjson");
    ck_assert_header(q, "Content-Encoding", "gzip");
    ck_assert_header(q, "Content-Length", "16");
    ck_assert_header(q, "User-Agent", "birdfeederd/" BF_VERSION); /* the Makefile's */
    char v[64];
    ck_assert_int_eq(th_header(q, "Expect", v, sizeof(v)), 0);
    ck_assert_uint_eq(q->body_len, 16);
    ck_assert_str_eq(q->body, "{\"a\":1}\n{\"a\":2}\n");
    finish();
}
END_TEST

/* No token: no Authorization; no encoding: no Content-Encoding. */
START_TEST(test_http_no_token_no_encoding)
{
    start(NULL, 5000);
    post(&got[0], "x\n", NULL);
    wait_done(&got[0], 3000);
    ck_assert_int_eq(got[0].status, 200);
    ck_assert_str_eq(got[0].body, "{}");
    const th_req *q = th_req_at(&srv, 0);
    char v[64];
    ck_assert_int_eq(th_header(q, "Authorization", v, sizeof(v)), 0);
    ck_assert_int_eq(th_header(q, "Content-Encoding", v, sizeof(v)), 0);
    ck_assert_header(q, "Content-Type", "application/x-ndjson");
    ck_assert_str_eq(q->body, "x\n");
    finish();
}
END_TEST

/* A body of 2 MiB goes out at once (no "Expect: 100-continue" round trip,
 * which curl adds to large POSTs unless told not to) and arrives intact. */
START_TEST(test_http_large_body_no_expect)
{
    const size_t len = 2u << 20;
    char *body = malloc(len);
    ck_assert_ptr_nonnull(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (i % 101 == 100) ? '\n' : (char)('a' + (char)(i % 26));
    start("t", 5000);
    uint64_t t0 = tu_mono_ms();
    ck_assert_int_eq(http_post(url, body, len, "gzip", on_done, &got[0]), 0);
    wait_done(&got[0], 5000);
    ck_assert_int_eq(got[0].status, 200);
    /* curl waits 1 s for a "100 Continue" when it sent Expect. */
    ck_assert_uint_lt(tu_mono_ms() - t0, 900);
    const th_req *q = th_req_at(&srv, 0);
    char v[64];
    ck_assert_int_eq(th_header(q, "Expect", v, sizeof(v)), 0);
    ck_assert_uint_eq(q->body_len, len);
    ck_assert_int_eq(memcmp(q->body, body, len), 0);
    free(body);
    finish();
}
END_TEST

/* Retry-After and X-RateLimit-Reset as whole seconds, X-RateLimit-Limit
 * and -Remaining as counts, on any answer; -1 when absent or not a number
 * (an HTTP date). */
static const struct {
    int status;
    const char *headers;
    int64_t retry_after, reset, limit, remaining;
} wait_cases[] = {
    {429, "Retry-After: 7\r\n", 7, -1, -1, -1},
    {429, "X-RateLimit-Reset: 12\r\n", -1, 12, -1, -1},
    {429, "Retry-After: 3\r\nX-RateLimit-Reset: 9\r\nX-RateLimit-Limit: 100\r\n", 3, 9, 100, -1},
    {429, "retry-after:    5\r\nx-ratelimit-reset:\t0\r\n", 5, 0, -1, -1},
    {503, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", -1, -1, -1, -1},
    {429, "Retry-After: \r\n", -1, -1, -1, -1},
    {200, NULL, -1, -1, -1, -1},
    {400, "X-Retry-After-Not: 4\r\n", -1, -1, -1, -1},
    {200, "X-RateLimit-Limit: 1000\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 1\r\n",
     -1, 1, 1000, 0},
    {202, "x-ratelimit-remaining: 37\r\nX-RateLimit-Limit-Other: 5\r\n", -1, -1, -1, 37},
    {200, "X-RateLimit-Remaining: -3\r\nX-RateLimit-Limit: ten\r\n", -1, -1, -1, -1},
};

START_TEST(test_http_wait_headers)
{
    th_resp r = {.status = wait_cases[_i].status, .headers = wait_cases[_i].headers,
                 .body = "{\"error\":\"slow down\"}"};
    th_script(&srv, &r, 1);
    start("t", 5000);
    post(&got[0], "x\n", "gzip");
    wait_done(&got[0], 3000);
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_int_eq(got[0].status, wait_cases[_i].status);
    ck_assert_int_eq(got[0].has_error, 0);
    ck_assert_int_eq(got[0].retry_after_s, wait_cases[_i].retry_after);
    ck_assert_int_eq(got[0].ratelimit_reset_s, wait_cases[_i].reset);
    ck_assert_int_eq(got[0].ratelimit_limit, wait_cases[_i].limit);
    ck_assert_int_eq(got[0].ratelimit_remaining, wait_cases[_i].remaining);
    ck_assert_str_eq(got[0].body, "{\"error\":\"slow down\"}");
    finish();
}
END_TEST

/* Only the first 64 KiB of a body are kept, NUL-terminated. */
START_TEST(test_http_body_capped)
{
    const size_t len = 100 * 1024;
    char *big = malloc(len);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('A' + (char)(i % 23));
    th_resp r = {.status = 500, .body = big, .body_len = len};
    th_script(&srv, &r, 1);
    start("t", 5000);
    post(&got[0], "x\n", NULL);
    wait_done(&got[0], 3000);
    ck_assert_int_eq(got[0].status, 500);
    ck_assert_uint_eq(got[0].body_len, 65536);
    ck_assert_int_eq(got[0].body_nul, 1);
    ck_assert_int_eq(memcmp(got[0].body, big, 65536), 0);
    finish();
    free(big);
}
END_TEST

/* ---- connections ------------------------------------------------------- */

static void on_done_post_again(const http_result *res, void *arg)
{
    on_done(res, arg);
    /* From inside the callback, as the sink does for its next batch. */
    ck_assert_int_eq(http_post(url, "second\n", 7, "gzip", on_done, &got[1]), 0);
}

/* Sequential posts reuse one TCP connection; after "Connection: close"
 * the next one opens another. */
START_TEST(test_http_keepalive_reuse)
{
    th_resp r[3] = {{.status = 200, .body = "{}"},
                    {.status = 200, .body = "{}", .close = 1},
                    {.status = 200, .body = "{}"}};
    th_script(&srv, r, 3);
    start("t", 5000);
    ck_assert_int_eq(http_post(url, "first\n", 6, "gzip", on_done_post_again, &got[0]), 0);
    wait_done(&got[1], 3000);
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_int_eq(got[1].status, 200);
    post(&got[2], "third\n", "gzip");
    wait_done(&got[2], 3000);
    ck_assert_int_eq(got[2].status, 200);
    th_counts c = th_counts_now(&srv);
    ck_assert_int_eq(c.nreqs, 3);
    ck_assert_int_eq(th_req_at(&srv, 0)->conn, 1);
    ck_assert_int_eq(th_req_at(&srv, 1)->conn, 1); /* reused */
    ck_assert_int_eq(th_req_at(&srv, 2)->conn, 2); /* the server closed it */
    ck_assert_int_eq(c.accepted, 2);
    ck_assert_str_eq(th_req_at(&srv, 1)->body, "second\n");
    ck_assert_int_eq(c.max_outstanding, 1);
    finish();
}
END_TEST

/* Posts made together go out together, each on a connection of its own. */
START_TEST(test_http_concurrent)
{
    th_resp r = {.status = 200, .body = "{}", .delay_ms = 150};
    th_default(&srv, r);
    start("t", 5000);
    for (int i = 0; i < 3; i++)
        post(&got[i], "x\n", NULL);
    ck_assert_uint_eq(http_inflight(), 3);
    for (int i = 0; i < 3; i++)
        wait_done(&got[i], 3000);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(got[i].calls, 1);
        ck_assert_int_eq(got[i].status, 200);
    }
    th_counts c = th_counts_now(&srv);
    ck_assert_int_eq(c.nreqs, 3);
    ck_assert_int_eq(c.accepted, 3);
    ck_assert_int_eq(c.max_outstanding, 3);
    ck_assert_uint_eq(http_inflight(), 0);
    finish();
}
END_TEST

/* Nothing listening: status 0 with curl's message, at once. */
START_TEST(test_http_refused)
{
    int fd;
    int port = th_refusing_port(&fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v0/events?name=x", port);
    start("t", 5000);
    uint64_t t0 = tu_mono_ms();
    post(&got[0], "x\n", "gzip");
    wait_done(&got[0], 3000);
    ck_assert_uint_lt(tu_mono_ms() - t0, 1000);
    tu_run_for(&loop, 50);
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_int_eq(got[0].status, 0);
    ck_assert_int_eq(got[0].has_error, 1);
    ck_assert_msg(strlen(got[0].error) > 0, "empty error");
    ck_assert_int_eq(got[0].retry_after_s, -1);
    ck_assert_int_eq(got[0].ratelimit_reset_s, -1);
    ck_assert_uint_eq(got[0].body_len, 0);
    ck_assert_str_eq(got[0].body, "");
    ck_assert_uint_eq(http_inflight(), 0);
    close(fd);
    finish();
}
END_TEST

/* A server that never answers: status 0 once timeout_ms passed. */
START_TEST(test_http_timeout)
{
    th_resp r = {.never = 1};
    th_script(&srv, &r, 1);
    start("t", 300);
    uint64_t t0 = tu_mono_ms();
    post(&got[0], "x\n", "gzip");
    wait_done(&got[0], 3000);
    uint64_t took = got[0].t_ms - t0;
    ck_assert_msg(took >= 290 && took < 1500, "done after %llu ms", (unsigned long long)took);
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_int_eq(got[0].status, 0);
    ck_assert_int_eq(got[0].has_error, 1);
    ck_assert_msg(strstr(got[0].error, "timed out") != NULL, "error '%s'", got[0].error);
    ck_assert_int_eq(th_counts_now(&srv).nreqs, 1); /* it did arrive */
    finish();
}
END_TEST

/* The server hangs up instead of answering: status 0, an error. */
START_TEST(test_http_hangup)
{
    th_resp r = {.hangup = 1};
    th_script(&srv, &r, 1);
    start("t", 5000);
    post(&got[0], "x\n", "gzip");
    wait_done(&got[0], 3000);
    ck_assert_int_eq(got[0].status, 0);
    ck_assert_int_eq(got[0].has_error, 1);
    ck_assert_msg(strlen(got[0].error) > 0, "empty error");
    finish();
}
END_TEST

/* http_abort_all: every done runs with "aborted" before it returns, once. */
START_TEST(test_http_abort_all)
{
    th_resp r = {.never = 1};
    th_default(&srv, r);
    start("t", 10000);
    for (int i = 0; i < 3; i++)
        post(&got[i], "x\n", "gzip");
    ck_assert(th_run_until_reqs(&loop, &srv, 3, 3000));
    ck_assert_uint_eq(http_inflight(), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(got[i].calls, 0);
    http_abort_all();
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(got[i].calls, 1);
        ck_assert_int_eq(got[i].status, 0);
        ck_assert_str_eq(got[i].error, "aborted");
        ck_assert_int_eq(got[i].retry_after_s, -1);
        ck_assert_int_eq(got[i].ratelimit_reset_s, -1);
        ck_assert_uint_eq(got[i].body_len, 0);
    }
    ck_assert_uint_eq(http_inflight(), 0);
    http_abort_all(); /* nothing left: no-op */
    tu_run_for(&loop, 50);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(got[i].calls, 1);
    /* The handle still works after an abort. */
    th_default(&srv, (th_resp){.status = 202, .body = "{}"});
    post(&got[3], "y\n", "gzip");
    wait_done(&got[3], 3000);
    ck_assert_int_eq(got[3].status, 202);
    finish();
}
END_TEST

/* http_close aborts what is in flight; a post after it fails, no callback. */
START_TEST(test_http_close_aborts)
{
    th_resp r = {.never = 1};
    th_default(&srv, r);
    start("t", 10000);
    post(&got[0], "x\n", "gzip");
    ck_assert(th_run_until_reqs(&loop, &srv, 1, 3000));
    http_close();
    ck_assert_int_eq(got[0].calls, 1);
    ck_assert_str_eq(got[0].error, "aborted");
    ck_assert_int_eq(http_post(url, "x\n", 2, NULL, on_done, &got[1]), -ESHUTDOWN);
    http_close(); /* twice: no-op */
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(got[1].calls, 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    th_stop(&srv);
}
END_TEST

Suite *http_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("http", http_setup, http_teardown, &tc);
    tcase_add_test(tc, test_http_post_200);
    tcase_add_test(tc, test_http_no_token_no_encoding);
    tcase_add_test(tc, test_http_large_body_no_expect);
    tcase_add_loop_test(tc, test_http_wait_headers, 0, N(wait_cases));
    tcase_add_test(tc, test_http_body_capped);
    tcase_add_test(tc, test_http_keepalive_reuse);
    tcase_add_test(tc, test_http_concurrent);
    tcase_add_test(tc, test_http_refused);
    tcase_add_test(tc, test_http_timeout);
    tcase_add_test(tc, test_http_hangup);
    tcase_add_test(tc, test_http_abort_all);
    tcase_add_test(tc, test_http_close_aborts);
    return s;
}
