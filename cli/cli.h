/*
 * cli/cli.h: what the files of the `birdfeeder` command line tool share.
 *
 * One file per command (send.c, codec.c, stats.c, dead_letter.c), main.c
 * for the command table, events.c for reading events from standard input, stats_view.c for
 * the human rendering of a stats line (the Prometheus one is the daemon's
 * own writer, daemon/stats_prom.c, so /metrics and --prom never differ).
 * The tool is for people and scripts; services link the shim
 * (client-shim/), never this.
 *
 * Commands take (argc, argv) with argv[0] the command's name and return the
 * process exit status: 0 done, 1 some input was bad or the daemon could not
 * be read, 2 a usage error.
 */
#ifndef BF_CLI_H
#define BF_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "bf_decoder.h"
#include "bf_proto.h"

#define PROG "birdfeeder"

/* The text of `birdfeeder help`. */
extern const char cli_usage[];

int cmd_send(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_dead_letter(int argc, char **argv);

/* ---- events.c: standard input ------------------------------------------ */

/* One line of stdin; buf grows as needed and is reused. Zero-initialise;
 * free(buf) when done. */
typedef struct line_reader {
    char *buf;
    size_t cap;
    unsigned long lineno;
} line_reader;

/* Next line without its line end, or NULL at end of input. The line is
 * lr->buf: valid until the next call. */
char *line_read(line_reader *lr, size_t *len);

/* Only spaces and tabs. */
int line_is_blank(const char *s, size_t len);

/* The next good event of the input, skipping blank lines and counting (and
 * reporting on stderr as "line N: reason: field") bad ones in *invalid.
 * Returns 1 with ev valid until the next call on dec (dec holds the JSON
 * its strings borrow), or 0 at the end of the input. The caller
 * bf_decoder_release()s dec once done. */
int cli_next_event(line_reader *lr, bf_decoder *dec, bf_event *ev,
                   unsigned long *invalid);

/* Report the current line as oversize (does not fit one datagram) on stderr
 * and count it in *invalid. */
void cli_report_oversize(const line_reader *lr, unsigned long *invalid);

/* ---- stats_view.c: one stats line -------------------------------------- */

/* The number at key of object o; 0 when absent or not a number. */
double jnum(const json_t *o, const char *key);
/* jnum as an unsigned integer; 0 when negative. */
unsigned long long jint(const json_t *o, const char *key);
/* Sum of the numbers of object o[key] (a per-dataset or per-reason map). */
unsigned long long jsum(const json_t *o, const char *key);

/* One snapshot and, for rates, the one before it (prev NULL: no rates). */
typedef struct stats_view {
    const json_t *cur, *prev;
    double dt;  /* seconds between prev and cur */
} stats_view;

/* One human-readable frame (the live view's, and the --once output). */
void view_print(const stats_view *v, FILE *out, const char *path);

#endif /* BF_CLI_H */
