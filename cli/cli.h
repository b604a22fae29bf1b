/*
 * cli/cli.h: what the files of the `birdfeeder` command line tool share.
 *
 * One file per command (send.c, codec.c, stats.c, dead_letter.c), main.c
 * for the command table, events.c for reading events from standard input,
 * stats_view.c for the human rendering of a stats line, stats_term.c for
 * the live view's terminal (the Prometheus rendering is the daemon's own
 * writer, daemon/stats_prom.c, so /metrics and --prom never differ).
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

/* The event rate of the last minute, for the live view's sparkline: the
 * datagrams received in each second, as the lines' counters tell. */
#define RATE_SECONDS 60
typedef struct rate_history {
    double events[RATE_SECONDS]; /* second s at s % RATE_SECONDS */
    long long newest;            /* the newest second held; -1: none yet */
    long long first;             /* the first second measured */
} rate_history;

/* Count the datagrams received between two lines of one daemon, spread
 * over the seconds between their ts_ms. */
void rate_history_add(rate_history *h, const json_t *prev, const json_t *cur);

/* One snapshot and, for rates, the one before it (prev NULL: no rates). */
typedef struct stats_view {
    const json_t *cur, *prev;
    double dt;  /* seconds between prev and cur */
    const rate_history *rates; /* NULL: no sparkline */
    unsigned cols;             /* the terminal's width, 0: unknown */
    int utf8;                  /* the sparkline may use block characters */
} stats_view;

/* One human-readable frame (the live view's, and the --once output). */
void view_print(const stats_view *v, FILE *out, const char *path);

/* ---- stats_term.c: the live view's terminal ----------------------------- */

/* Take the terminal when stdout is one: the alternate screen, no cursor,
 * no line wrap; and when stdin is one too, cbreak mode (a key arrives
 * without Enter and is not echoed; Ctrl-C and Ctrl-Z still work). Whatever
 * ends the process gives it back as it was: term_give_back, exit (atexit),
 * SIGINT, SIGTERM, SIGHUP, SIGQUIT (then the signal's own end); Ctrl-Z
 * gives it back while stopped and takes it again on continue. Returns
 * TERM_KEYS (screen and keys), TERM_SCREEN (screen only), or 0 when stdout
 * is not a terminal (nothing changed). */
enum { TERM_SCREEN = 1, TERM_KEYS = 2 };
int term_take(void);
void term_give_back(void);

/* The window's size (SIGWINCH changes it); 0 and 0 when unknown. */
void term_size(unsigned *cols, unsigned *rows);

/* Whether the screen must be drawn again (resized, continued); reading
 * clears it. */
int term_redraw_pending(void);

/* Draw text (lines ending in '\n') from the top left: each line cut to
 * cols columns (never wrapped), at most rows lines (the first ones: the
 * header stays), the rest of the screen cleared. 0: no limit. */
void term_draw(const char *text, size_t len, unsigned cols, unsigned rows);

/* One byte from stdin (call when poll says it is readable), or -1. */
int term_key(void);

#endif /* BF_CLI_H */
