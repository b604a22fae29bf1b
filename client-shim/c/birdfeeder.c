/*
 * birdfeeder.c: the `birdfeeder` command line tool.
 *
 *   birdfeeder send [--to HOST:PORT] [--rate N] [--repeat N]  < events.ndjson
 *   birdfeeder encode                                         < events.ndjson
 *   birdfeeder decode                                         < datagrams.hex
 *
 * For people and scripts: send test or backfill events to the daemon, see
 * the bytes an event becomes, and read datagrams captured off the wire.
 * Events are read and written as the JSON objects of proto/PROTOCOL.md.
 * Each subcommand is one entry in `commands` below (a `stats` view of the
 * daemon's stats socket is meant to be added there).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf_client.h"
#include "bf_json.h"
#include "bf_proto.h"

#ifndef BF_VERSION
#define BF_VERSION "0.1.0"
#endif

#define PROG "birdfeeder"

static const char usage_text[] =
    "usage: " PROG " <command> [options]\n"
    "\n"
    "Send events to the birdfeeder daemon, and read or write protocol v1\n"
    "datagrams (proto/PROTOCOL.md). Events are JSON objects, one per line:\n"
    "  {\"dataset\":\"image_events\",\"model\":\"flux\",\"width\":1024}\n"
    "\n"
    "commands:\n"
    "  send [--to HOST:PORT] [--rate N] [--repeat N]\n"
    "        Read events from stdin, check each one as the daemon would, and\n"
    "        send each good one as one UDP datagram. Bad lines are reported\n"
    "        on stderr and skipped. Ends with \"sent N, invalid N, dropped N\"\n"
    "        on stderr; exits 1 if any line was invalid.\n"
    "          --to HOST:PORT  daemon address: A.B.C.D:PORT, [IPv6]:PORT or\n"
    "                          localhost:PORT (default $" BF_CLIENT_ADDR_ENV
    ", else\n"
    "                          " BF_CLIENT_DEFAULT_ADDR ")\n"
    "          --rate N        at most N datagrams per second (default: no pause)\n"
    "          --repeat N      send every event N times (simple load; default 1)\n"
    "  encode\n"
    "        Read events from stdin and print each datagram `send` would send\n"
    "        (prompt cut to 120 characters) as one line of lowercase hex.\n"
    "  decode\n"
    "        Read datagrams from stdin, one per line in hex (spaces allowed),\n"
    "        and print each as one JSON line, or \"error: <reason>\" when the\n"
    "        daemon would reject it (with its default limit of 8192 bytes).\n"
    "        Exits 1 if any line was rejected.\n"
    "  help  Print this text (also --help).\n"
    "  --version\n"
    "        Print the version and the protocol version.\n";

/* One line of stdin; buf grows as needed and is reused. */
typedef struct line_reader {
    char *buf;
    size_t cap;
    unsigned long lineno;
} line_reader;

/* Next line without its line end, or NULL at end of input. */
static char *line_read(line_reader *lr, size_t *len)
{
    ssize_t n = getline(&lr->buf, &lr->cap, stdin);
    if (n < 0)
        return NULL;
    lr->lineno++;
    while (n > 0 && (lr->buf[n - 1] == '\n' || lr->buf[n - 1] == '\r'))
        n--;
    lr->buf[n] = '\0';
    *len = (size_t)n;
    return lr->buf;
}

static int line_is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

/* Parse and check one JSON event line as the daemon checks a JSON datagram.
 * On success *doc owns the strings ev points into (json_decref when done);
 * on failure the reason and key are printed and *doc is already released. */
static int cli_read_event(const line_reader *lr, const char *line, size_t len,
                          bf_event *ev, json_t **doc)
{
    const char *key = NULL;
    unsigned tag = 0;
    bf_reason r = bf_json_decode(line, len, ev, doc, &key);

    if (r == BF_OK) {
        r = bf_validate_detail(ev, &tag);
        key = tag ? bf_fields[tag].name : "dataset";
    }
    if (r == BF_OK)
        return 0;
    fprintf(stderr, PROG ": line %lu: %s: %s\n", lr->lineno, bf_reason_name(r),
            key ? key : "(root)");
    json_decref(*doc);
    *doc = NULL;
    return -1;
}

/* Parse a positive decimal count for option opt; exits 2 when bad. */
static unsigned long cli_parse_count(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || s[0] == '-') {
        fprintf(stderr, PROG ": %s wants a positive number, not '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Wait for the next send slot of a 1/rate period. *next_ns is the slot after
 * the last send, on CLOCK_MONOTONIC (0 to start). Slots are absolute, so the
 * pace does not drift with the time spent sending; after a pause in the
 * input the schedule restarts from now instead of bursting to catch up. */
static void cli_pace(int64_t *next_ns, unsigned long rate)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (*next_ns < ts_ns(&now))
        *next_ns = ts_ns(&now);
    struct timespec t = {.tv_sec = (time_t)(*next_ns / 1000000000),
                         .tv_nsec = (long)(*next_ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
    *next_ns += 1000000000 / (int64_t)rate;
}

static int cmd_send(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, 'r'},
        {"repeat", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *to = NULL;
    unsigned long rate = 0, repeat = 1;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 't':
            to = optarg;
            break;
        case 'r':
            rate = cli_parse_count("--rate", optarg);
            if (rate > 1000000000ul) /* under 1 ns apart: no pause at all */
                rate = 0;
            break;
        case 'n':
            repeat = cli_parse_count("--repeat", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("usage: " PROG " send [--to HOST:PORT] [--rate N] [--repeat N]\n",
                  stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, PROG " send: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    int err;
    bf_client *c = bf_client_open(to, &err);
    if (!c) {
        fprintf(stderr, PROG ": cannot open %s: %s\n",
                to ? to : "the daemon address", strerror(-err));
        return 2;
    }

    line_reader lr = {0};
    unsigned long invalid = 0;
    int64_t next_ns = 0;
    char *line;
    size_t len;
    while ((line = line_read(&lr, &len))) {
        bf_event ev;
        json_t *doc;
        if (line_is_blank(line, len))
            continue;
        if (cli_read_event(&lr, line, len, &ev, &doc) < 0) {
            invalid++;
            continue;
        }
        for (unsigned long i = 0; i < repeat; i++) {
            if (rate)
                cli_pace(&next_ns, rate);
            if (bf_client_send(c, &ev) == -EMSGSIZE) {
                fprintf(stderr, PROG ": line %lu: %s: (root)\n", lr.lineno,
                        bf_reason_name(BF_R_oversize));
                invalid++;
                break;
            }
        }
        json_decref(doc);
    }
    free(lr.buf);

    struct bf_client_stats st;
    bf_client_stats(c, &st);
    bf_client_close(c);
    fprintf(stderr, "sent %llu, invalid %lu, dropped %llu\n",
            (unsigned long long)st.sent, invalid,
            (unsigned long long)(st.dropped + st.failed));
    return invalid ? 1 : 0;
}

static int cmd_encode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: " PROG " encode < events.ndjson\n");
        return 2;
    }
    line_reader lr = {0};
    unsigned long invalid = 0;
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    char *line;
    size_t len;
    while ((line = line_read(&lr, &len))) {
        bf_event ev;
        json_t *doc;
        if (line_is_blank(line, len))
            continue;
        if (cli_read_event(&lr, line, len, &ev, &doc) < 0) {
            invalid++;
            continue;
        }
        size_t n = bf_client_encode(&ev, buf, sizeof(buf));
        json_decref(doc);
        if (n == 0) {
            fprintf(stderr, PROG ": line %lu: %s: (root)\n", lr.lineno,
                    bf_reason_name(BF_R_oversize));
            invalid++;
            continue;
        }
        for (size_t i = 0; i < n; i++)
            printf("%02x", buf[i]);
        putchar('\n');
    }
    free(lr.buf);
    return invalid ? 1 : 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Hex (spaces and tabs ignored) to bytes, in place: out may be s. Returns
 * the byte count, or -1 for an odd digit count or a non-hex character. */
static long hex_to_bytes(const char *s, size_t len, uint8_t *out)
{
    long n = 0;
    int hi = -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ' || s[i] == '\t')
            continue;
        int d = hex_digit(s[i]);
        if (d < 0)
            return -1;
        if (hi < 0) {
            hi = d;
        } else {
            out[n++] = (uint8_t)(hi << 4 | d);
            hi = -1;
        }
    }
    return hi < 0 ? n : -1;
}

/* Decode one datagram as the daemon does (JSON when it starts with '{'),
 * then validate; prints the event or "error: <reason>". */
static int cli_decode_datagram(const uint8_t *buf, size_t len)
{
    bf_event ev;
    json_t *doc = NULL;
    bf_reason r;

    if (len > BF_CLIENT_MAX_DATAGRAM)
        r = BF_R_oversize;
    else if (len > 0 && buf[0] == '{')
        r = bf_json_decode(buf, len, &ev, &doc, NULL);
    else
        r = bf_decode(buf, len, &ev);
    if (r == BF_OK)
        r = bf_validate(&ev);

    int rc = -1;
    char *text = NULL;
    if (r == BF_OK) {
        json_t *obj = bf_event_to_json(&ev);
        text = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(obj);
    }
    if (text) {
        puts(text);
        free(text);
        rc = 0;
    } else {
        printf("error: %s\n",
               r == BF_OK ? "out of memory" : bf_reason_name(r));
    }
    json_decref(doc);
    return rc;
}

static int cmd_decode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: " PROG " decode < datagrams.hex\n");
        return 2;
    }
    line_reader lr = {0};
    unsigned long failed = 0;
    char *line;
    size_t len;
    while ((line = line_read(&lr, &len))) {
        if (line_is_blank(line, len))
            continue;
        long n = hex_to_bytes(line, len, (uint8_t *)line);
        if (n < 0) {
            printf("error: not hex\n");
            failed++;
            continue;
        }
        if (cli_decode_datagram((const uint8_t *)line, (size_t)n) < 0)
            failed++;
    }
    free(lr.buf);
    return failed ? 1 : 0;
}

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs(usage_text, stdout);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf(PROG " %s (protocol %d)\n", BF_VERSION, BF_PROTO_VERSION);
    return 0;
}

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"send", cmd_send},
    {"encode", cmd_encode},
    {"decode", cmd_decode},
    {"help", cmd_help},
    {"--help", cmd_help},
    {"-h", cmd_help},
    {"--version", cmd_version},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            /* getopt_long prefixes its messages with argv[0]. */
            static char name[64];
            snprintf(name, sizeof(name), PROG " %s", argv[1]);
            argv[1] = name;
            int rc = commands[i].run(argc - 1, argv + 1);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, PROG ": write error: %s\n", strerror(errno));
                return 2;
            }
            return rc;
        }
    }
    fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " help')\n",
            argv[1]);
    return 2;
}
