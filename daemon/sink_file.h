/*
 * sink_file.h: the backend that appends batches as NDJSON to a local file
 * or stdout, for running without a Tinybird token (sink_backend.h has the
 * contract it keeps).
 *
 * One write at a time (max_inflight 1), so the policy hands over the
 * oldest batch of any dataset first and the file reads in order. A failed
 * write is a reject counted as dropped.out_write; nothing is retried. A
 * reload opens the path again (a new one, or the same after a log
 * rotation moved the file) and the next write goes there; a path that
 * cannot be opened leaves the old file in use.
 */
#ifndef BF_SINK_FILE_H
#define BF_SINK_FILE_H

#include "sink_backend.h"

typedef struct sink_file_opts {
    const char *path;      /* appended to (created 0640), or "-" for stdout */
} sink_file_opts;

extern const sink_backend sink_file;

#endif /* BF_SINK_FILE_H */
