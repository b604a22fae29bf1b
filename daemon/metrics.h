/*
 * metrics.h: GET /metrics and GET /health over HTTP (--metrics-listen), for
 * Prometheus and for whatever watches the host (a load balancer's or an
 * orchestrator's health check, a monitoring agent).
 *
 *   GET /metrics   the stats line as a Prometheus text exposition
 *                  (stats_prom.h: the names of `birdfeeder stats --prom`),
 *                  made from a snapshot taken for the request
 *   GET /health    200 {"status":"ok"}, or 503 with the reasons
 *                  (health.h), as JSON
 *
 * HEAD is answered as GET without the body; other methods get 405, other
 * paths 404.
 *
 * HTTP is libmicrohttpd's, never parsed here. It runs in its external
 * mode on the loop thread: its epoll descriptor is watched by a uv_poll_t
 * and its timeouts by a uv_timer_t, and every request is answered from
 * inside MHD_run on the loop thread, so the answers read the counters and
 * the modules' gauges as the stats socket does: no thread, no lock, no
 * copy, and a snapshot consistent by construction. Connections are few
 * (METRICS_MAX_CONNECTIONS) and idle ones are closed after
 * METRICS_IDLE_TIMEOUT_S, so a client that connects and never sends
 * cannot pile up; an answer is a few kilobytes written without blocking.
 */
#ifndef BF_METRICS_H
#define BF_METRICS_H

#include <stddef.h>
#include <uv.h>

#define METRICS_MAX_CONNECTIONS 16
#define METRICS_IDLE_TIMEOUT_S 10

/* Listen on addr (HOST:PORT as proto/bf_addr.h reads it, port 0: any free
 * port) and serve. Returns 0, or a negative errno with a message in err
 * (size n). Either way call metrics_stop before closing the loop. */
int metrics_start(uv_loop_t *loop, const char *addr, char *err, size_t n);

/* The bound address as "HOST:PORT" ("" when not serving). */
const char *metrics_address(void);

/* Close every connection, the listening socket and the handles. */
void metrics_stop(void);

#endif /* BF_METRICS_H */
