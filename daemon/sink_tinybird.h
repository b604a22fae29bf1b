/*
 * sink_tinybird.h: the backend that POSTs batches to Tinybird's Events API
 * (sink_backend.h has the contract it keeps).
 *
 * Each batch is gzipped on the libuv threadpool (off the loop; level 1, the
 * workers at nice 10 so they never take the loop's core) and POSTed through
 * http.c to {url}/v0/events?name=<dataset>&wait=true. The compressed body
 * is kept in the job, counted in memory.h, so a retry does not compress
 * again. The answer is classified:
 *
 *   2xx                       done; successful_rows and quarantined_rows
 *                             from the response body
 *   413                       too large
 *   429                       retry after Retry-After, else
 *                             X-RateLimit-Reset, else the policy's backoff
 *   408, 5xx, no response     retry with the policy's backoff
 *   other 4xx                 reject (dropped.http_rejected), logged with a
 *                             hint for 401/403 (token) and 404 (region host)
 */
#ifndef BF_SINK_TINYBIRD_H
#define BF_SINK_TINYBIRD_H

#include <stdint.h>

#include "sink_backend.h"

typedef struct sink_tinybird_opts {
    const char *url;       /* base URL, no trailing slash; copied */
    const char *token;     /* sent as a bearer token; copied */
    uint64_t timeout_ms;   /* one whole request */
} sink_tinybird_opts;

extern const sink_backend sink_tinybird;

#endif /* BF_SINK_TINYBIRD_H */
