/* metrics.c: /metrics and /health through libmicrohttpd on the loop. See
 * metrics.h. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_addr.h"
#include "health.h"
#include "log.h"
#include "stats.h"
#include "stats_prom.h"

static struct {
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    int handles;  /* poll and timer initialised */
    char addr[64];
} mx;

static log_limit mhd_limit;

static void run(void);

/* MHD's own messages (a refused connection, a malformed request). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[256], q[300];
    vsnprintf(text, sizeof(text), fmt, ap);
    size_t len = strlen(text);
    while (len && (text[len - 1] == '\n' || text[len - 1] == '.'))
        text[--len] = '\0';
    log_limited(&mhd_limit, LOG_WARN, "metrics_http", "msg=%s",
                log_quote(q, sizeof(q), text, sizeof(text)));
}

/* Queue an answer of len bytes at body (malloc'd; MHD frees it). */
static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *type, char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status,
                                   const char *text)
{
    char *body = strdup(text);
    return body ? answer(c, status, "text/plain; charset=utf-8", body, strlen(text))
                : MHD_NO;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
    char *body = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&body, &len);
    json_t *snap = out ? stats_snapshot() : NULL;
    if (snap)
        stats_prom_write(snap, out);
    json_decref(snap);
    if (!out || fclose(out) != 0 || !snap) {
        free(body);
        return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return answer(c, MHD_HTTP_OK, STATS_PROM_CONTENT_TYPE, body, len);
}

static enum MHD_Result serve_health(struct MHD_Connection *c)
{
    int healthy = 0;
    const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
    health_state hs = health_read(uv_now(mx.loop));
    json_t *o = health_answer(&hs, &healthy);
    size_t len = o ? json_dumpb(o, NULL, 0, flags) : 0;
    char *body = len ? malloc(len + 1) : NULL;
    if (body) {
        json_dumpb(o, body, len, flags);
        body[len++] = '\n';
    }
    json_decref(o);
    if (!body)
        return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return answer(c, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                  "application/json", body, len);
}

/* Every request, on the loop thread (inside MHD_run). MHD calls this once
 * the headers are in, then with each piece of a body, then once more with
 * nothing left: answered then, as an answer queued before the request is
 * read whole makes MHD close the connection (no keep-alive for scrapes). A
 * body is read and ignored. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size,
                                  void **req_cls)
{
    static int seen; /* any non-NULL marker: the headers were seen */
    (void)cls;
    (void)version;
    (void)upload_data;
    if (!*req_cls) {
        *req_cls = &seen;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(c);
    if (strcmp(url, "/health") == 0)
        return serve_health(c);
    if (strcmp(url, "/") == 0)
        return answer_text(c, MHD_HTTP_OK, "birdfeederd: /metrics (Prometheus), "
                                           "/health (200 or 503 with reasons)\n");
    return answer_text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics or /health\n");
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    run();
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)status;
    (void)events;
    run();
}

/* Let MHD do what is ready, then wake it again when it asks: at once when
 * it has more to do, or at its next connection timeout. When it asks for
 * nothing, still run it every METRICS_IDLE_RUN_MS: at the connection limit
 * MHD takes its listening socket out of its epoll set, and puts it back
 * only in a later run once connections have closed, which no event and no
 * timeout of its own would bring. */
#define METRICS_IDLE_RUN_MS 1000

static void run(void)
{
    MHD_run(mx.mhd);
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(mx.mhd, &ms) != MHD_YES || ms > METRICS_IDLE_RUN_MS)
        ms = METRICS_IDLE_RUN_MS;
    uv_timer_start(&mx.timer, on_timer, ms, 0);
}

int metrics_start(uv_loop_t *loop, const char *addr, char *err, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&mx, 0, sizeof(mx));
    mx.loop = loop;
    if (bf_addr_parse(addr, BF_ADDR_BIND, &ss, &sl) < 0) {
        snprintf(err, n, "metrics address '%s': not A.B.C.D:PORT or [IPv6]:PORT", addr);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    errno = 0;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    mx.mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_TIMEOUT_S,
        MHD_OPTION_END);
    if (!mx.mhd) {
        int e = errno ? errno : EADDRINUSE;
        snprintf(err, n, "metrics address %s: %s", addr, strerror(e));
        return -e;
    }
    const union MHD_DaemonInfo *efd = MHD_get_daemon_info(mx.mhd, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *port = MHD_get_daemon_info(mx.mhd, MHD_DAEMON_INFO_BIND_PORT);
    int rc;
    if (!efd || !port) {
        snprintf(err, n, "metrics: libmicrohttpd gives no epoll descriptor");
        return -ENOTSUP;
    }
    uv_timer_init(loop, &mx.timer);
    if ((rc = uv_poll_init(loop, &mx.poll, efd->epoll_fd)) < 0) {
        uv_close((uv_handle_t *)&mx.timer, NULL);
        snprintf(err, n, "metrics: watching libmicrohttpd: %s", uv_strerror(rc));
        return rc;
    }
    mx.handles = 1;
    if ((rc = uv_poll_start(&mx.poll, UV_READABLE, on_poll)) < 0) {
        snprintf(err, n, "metrics: watching libmicrohttpd: %s", uv_strerror(rc));
        return rc;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
    snprintf(mx.addr, sizeof(mx.addr), ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
             (unsigned)port->port);
    run();
    log_info("metrics_listening", "addr=%s paths=/metrics,/health", mx.addr);
    return 0;
}

const char *metrics_address(void) { return mx.addr; }

void metrics_stop(void)
{
    /* libuv must stop watching the epoll descriptor before MHD closes it. */
    if (mx.handles) {
        mx.handles = 0;
        uv_poll_stop(&mx.poll);
        uv_close((uv_handle_t *)&mx.poll, NULL);
        uv_close((uv_handle_t *)&mx.timer, NULL);
    }
    if (mx.mhd) {
        MHD_stop_daemon(mx.mhd);
        mx.mhd = NULL;
    }
    mx.addr[0] = '\0';
}
