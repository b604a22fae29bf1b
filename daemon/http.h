/*
 * http.h: HTTP POSTs through the libcurl multi socket API on the libuv loop.
 *
 * One curl multi handle; a uv_poll_t per socket curl opens and one uv_timer_t
 * for curl's timeouts, as in curl's docs/examples/multi-uv.c. Unlike the
 * example, results are checked: an option curl refuses fails http_post; a
 * socket that cannot be watched fails the transfers in progress (they are
 * answered with status 0); a failed curl_multi_socket_action is logged
 * (rate-limited) and its transfers end by their own timeouts. Connections
 * are kept alive in the multi handle's cache, so consecutive batches reuse
 * one TCP (and TLS) connection. Nothing here blocks the loop; name
 * resolution uses curl's threaded resolver.
 */
#ifndef BF_HTTP_H
#define BF_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_result {
    long status;            /* HTTP status; 0 when no response arrived */
    const char *error;      /* curl's message when status is 0, else NULL */
    int64_t retry_after_s;  /* Retry-After seconds, -1 when absent */
    /* X-RateLimit-Limit, -Remaining and -Reset (seconds), -1 when absent */
    int64_t ratelimit_limit, ratelimit_remaining, ratelimit_reset_s;
    const char *body;       /* response body, NUL-terminated, first 64 KiB */
    size_t body_len;
} http_result;

/* Called once per http_post that returned 0; res is valid during the call
 * only. */
typedef void (*http_done_cb)(const http_result *res, void *arg);

typedef struct http_opts {
    const char *token;      /* sent as "Authorization: Bearer ..."; copied */
    uint64_t timeout_ms;    /* whole request */
    uint64_t connect_timeout_ms;
} http_opts;

/* Returns 0, or a negative errno with a message in err (size n). Either
 * way call http_close. */
int http_init(uv_loop_t *loop, const http_opts *opts, char *err, size_t n);

/* Use opts (token, timeouts) for the requests posted from now on; those in
 * progress finish with what they started with. Returns 0, or -ENOMEM with
 * a message in err (size n) and the old options kept. */
int http_reconfigure(const http_opts *opts, char *err, size_t n);

/* POST body (len bytes, borrowed until done runs) to url (copied) with the
 * given Content-Encoding (NULL for none). Returns 0 and later calls done
 * exactly once, or returns a negative errno (-ENOMEM, -EINVAL for an option
 * curl refuses, -ESHUTDOWN once closing) and never calls done. */
int http_post(const char *url, const char *body, size_t len,
              const char *content_encoding, http_done_cb done, void *arg);

/* Abort every transfer in progress: each done callback runs with status 0
 * and error "aborted" before this returns. */
void http_abort_all(void);

/* Number of transfers in progress. */
unsigned http_inflight(void);

/* Close the handles; call after the last transfer finished or was aborted. */
void http_close(void);

#endif /* BF_HTTP_H */
