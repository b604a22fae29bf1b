/*
 * stats_prom.h: a stats line as a Prometheus text exposition (format
 * 0.0.4). The one writer of the naming rules: the daemon's GET /metrics
 * (metrics.c) writes the snapshot it just made (stats_snapshot), and
 * `birdfeeder stats --prom` (cli/stats.c) writes a line it read from the
 * stats socket, so both expose the same families.
 *
 * Names, types, labels and help come from daemon/stats.def: the family
 * birdfeeder_<prom> for every row with a Prometheus name; a map's entries
 * are its samples, labelled by the row's label; a quantiles object gives
 * quantile="0.5" and "0.99" of a summary (its quantiles only: promtool
 * refuses a quantile label on a gauge); a name ending in _seconds exports a value the
 * line keeps in ms. A map without numbers (http before the first request)
 * writes no family. Keys stats.def does not know (a newer daemon's line
 * read by an older CLI) are exported as gauges named after the key (or a
 * summary, for an object of p50, p99...), so nothing is claimed about them.
 *
 * jansson and libc only: the CLI links this file too.
 */
#ifndef BF_STATS_PROM_H
#define BF_STATS_PROM_H

#include <jansson.h>
#include <stdio.h>

/* The Content-Type of what stats_prom_write writes. */
#define STATS_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Write the exposition of snap (a stats line as a JSON object) to out.
 * snap is borrowed; write errors are left in out's error flag. */
void stats_prom_write(const json_t *snap, FILE *out);

#endif /* BF_STATS_PROM_H */
