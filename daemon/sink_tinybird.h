/*
 * sink_tinybird.h: the backend that POSTs batches to Tinybird's Events API
 * (sink_backend.h has the contract it keeps).
 *
 * Each batch is gzipped on the libuv threadpool (compress.h: ISA-L igzip
 * level 1, off the loop, the workers at nice 10 so they never take the
 * loop's core) and POSTed through http.c to
 * {url}/v0/events?name=<dataset>&wait=true. The compressed body is kept in
 * the job, counted in memory.h, so a retry does not compress again. When
 * the account refuses the compressor's memory, submit returns -ENOMEM (the
 * policy waits for room); when the rows compress so badly that the body
 * must grow and that is refused, they are sent uncompressed. The answer is classified:
 *
 *   2xx                       done; successful_rows and quarantined_rows
 *                             from the response body
 *   413                       too large
 *   429                       retry after Retry-After, else
 *                             X-RateLimit-Reset, else the policy's backoff
 *   408, 5xx, no response     retry with the policy's backoff
 *   401, 403                  hold, unauthorized: the token is refused
 *   404                       hold, not found: the datasource is not at this
 *                             region host
 *   other 4xx (400, 422)      reject (dropped.http_rejected): the rows are
 *                             refused, and kept as dead letters
 *
 * A hold's hint says what was sent: a token or none (its length, never
 * itself), the region host, the datasource. reconfigure takes a new token,
 * URL and timeout for the batches sent from then on.
 */
#ifndef BF_SINK_TINYBIRD_H
#define BF_SINK_TINYBIRD_H

#include <stdint.h>

#include "sink_backend.h"

typedef struct sink_tinybird_opts {
    const char *url;       /* base URL, no trailing slash; copied (at most
                              255 bytes) */
    const char *token;     /* sent as a bearer token; copied */
    uint64_t timeout_ms;   /* one whole request */
} sink_tinybird_opts;

extern const sink_backend sink_tinybird;

#endif /* BF_SINK_TINYBIRD_H */
