/*
 * birdfeeder.c: the `birdfeeder` command line tool.
 *
 *   birdfeeder send [--to HOST:PORT] [--rate N] [--repeat N]  < events.ndjson
 *   birdfeeder encode                                         < events.ndjson
 *   birdfeeder decode                                         < datagrams.hex
 *   birdfeeder stats [--socket PATH] [--once] [--json | --prom]
 *
 * For people and scripts: send test or backfill events to the daemon, see
 * the bytes an event becomes, read datagrams captured off the wire, and
 * watch the daemon's stats socket. Events are read and written as the JSON
 * objects of proto/PROTOCOL.md. Each subcommand is one entry in `commands`
 * below.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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
    "  stats [--socket PATH] [--once] [--json | --prom]\n"
    "        Watch the daemon's stats socket: a view redrawn at every line\n"
    "        the daemon writes (each --stats-interval-ms), with rates per\n"
    "        second; it reconnects when the daemon restarts.\n"
    "          --socket PATH   the daemon's --stats-socket (default\n"
    "                          $BIRDFEEDER_STATS_SOCKET, else\n"
    "                          /run/birdfeeder/stats.sock)\n"
    "          --once          print one view and exit (rates over about 1 s)\n"
    "          --json          print the JSON lines as received (with --once:\n"
    "                          one line)\n"
    "          --prom          print one Prometheus text exposition and exit\n"
    "        Exits 1 when the socket cannot be read.\n"
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

/* The next good event of the input, skipping blank lines and counting (and
 * reporting) bad ones in *invalid. Returns 1 with *doc owning ev's strings,
 * or 0 at the end of the input. */
static int cli_next_event(line_reader *lr, bf_event *ev, json_t **doc,
                          unsigned long *invalid)
{
    char *line;
    size_t len;
    while ((line = line_read(lr, &len))) {
        if (line_is_blank(line, len))
            continue;
        if (cli_read_event(lr, line, len, ev, doc) == 0)
            return 1;
        (*invalid)++;
    }
    return 0;
}

/* A line whose event does not fit one datagram. */
static void cli_report_oversize(const line_reader *lr, unsigned long *invalid)
{
    fprintf(stderr, PROG ": line %lu: %s: (root)\n", lr->lineno,
            bf_reason_name(BF_R_oversize));
    (*invalid)++;
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
    bf_event ev;
    json_t *doc;
    while (cli_next_event(&lr, &ev, &doc, &invalid)) {
        for (unsigned long i = 0; i < repeat; i++) {
            if (rate)
                cli_pace(&next_ns, rate);
            if (bf_client_send(c, &ev) == -EMSGSIZE) {
                cli_report_oversize(&lr, &invalid);
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
    bf_event ev;
    json_t *doc;
    while (cli_next_event(&lr, &ev, &doc, &invalid)) {
        size_t n = bf_client_encode(&ev, buf, sizeof(buf));
        json_decref(doc);
        if (n == 0) {
            cli_report_oversize(&lr, &invalid);
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

/* ---------------------------------------------------------------------
 * stats: a view of the daemon's stats socket (daemon/stats.h).
 *
 * The daemon writes one JSON object per line to every client, at once on
 * connect and then every --stats-interval-ms. Counters only grow while one
 * daemon runs; rates are the difference of two lines over the difference of
 * their ts_ms. Keys this version does not know are ignored by the views and
 * exported as gauges by --prom, so a newer daemon never breaks the tool.
 * --------------------------------------------------------------------- */

#define STATS_SOCKET_ENV "BIRDFEEDER_STATS_SOCKET"
#define STATS_DEFAULT_SOCKET "/run/birdfeeder/stats.sock"
#define STATS_LINE_MAX (1024 * 1024)   /* longer: not our daemon */
#define STATS_ONCE_SPAN_MS 1000        /* --once: rates over about this */
#define STATS_ONCE_WAIT_MS 5000        /* --once: then totals only */
#define STATS_CONNECT_WAIT_MS 10000    /* first line after connecting */
#define STATS_MIN_SPAN_MS 100          /* shorter spans give no rates */

/* A connection to the stats socket and the bytes read but not yet returned
 * as lines. The line stats_read_line returns is valid until the next call. */
typedef struct stats_conn {
    int fd;
    char *buf;
    size_t start, len, cap;  /* unreturned bytes are buf[start, len) */
} stats_conn;

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Connect to the Unix stream socket at path. Returns 0 or -errno. */
static int stats_connect(stats_conn *c, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    c->fd = -1;
    c->start = c->len = 0;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    c->fd = fd;
    return 0;
}

static void stats_disconnect(stats_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->start = c->len = 0;
}

/* Next line (without '\n', NUL-terminated) within timeout_ms (-1: no limit).
 * Returns 1 with *line set, 0 on timeout, -1 when the daemon closed the
 * socket or it failed (errno set; 0 for a clean end). */
static int stats_read_line(stats_conn *c, int timeout_ms, char **line)
{
    int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    for (;;) {
        char *nl = c->len > c->start ? memchr(c->buf + c->start, '\n', c->len - c->start)
                                     : NULL;
        if (nl) {
            *nl = '\0';
            *line = c->buf + c->start;
            c->start = (size_t)(nl - c->buf) + 1;
            return 1;
        }
        if (c->start > 0) { /* keep the partial line at the front */
            memmove(c->buf, c->buf + c->start, c->len - c->start);
            c->len -= c->start;
            c->start = 0;
        }
        if (c->cap - c->len < 4096) {
            if (c->cap >= STATS_LINE_MAX) {
                errno = EMSGSIZE;
                return -1;
            }
            size_t cap = c->cap ? c->cap * 2 : 16384;
            char *b = realloc(c->buf, cap);
            if (!b)
                return -1;
            c->buf = b;
            c->cap = cap;
        }
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                return 0;
            wait = (int)left;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = 0;
            return -1;
        }
        c->len += (size_t)n;
    }
}

/* The line as a JSON object, or NULL (message on stderr). */
static json_t *stats_parse(const char *line)
{
    json_error_t e;
    json_t *o = json_loads(line, 0, &e);
    if (!json_is_object(o)) {
        fprintf(stderr, PROG " stats: not a stats line (%s): %.80s\n",
                o ? "not an object" : e.text, line);
        json_decref(o);
        return NULL;
    }
    return o;
}

static double jnum(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static unsigned long long jint(const json_t *o, const char *key)
{
    double v = jnum(o, key);
    return v > 0 ? (unsigned long long)v : 0;
}

/* Sum of the numbers of object o[key] (a per-dataset or per-reason map). */
static unsigned long long jsum(const json_t *o, const char *key)
{
    const char *k;
    json_t *v;
    double s = 0;
    json_object_foreach(json_object_get(o, key), k, v)
        if (json_is_number(v))
            s += json_number_value(v);
    return (unsigned long long)s;
}

/* One snapshot and, for rates, the one before it (prev NULL: no rates). */
typedef struct stats_view {
    const json_t *cur, *prev;
    double dt;  /* seconds between prev and cur */
} stats_view;

/* Per-second rate of counter value now, given its earlier value; < 0: none. */
static double view_rate(const stats_view *v, double now, double before)
{
    if (!v->prev || v->dt <= 0 || now < before)
        return -1;
    return (now - before) / v->dt;
}

static char *fmt_rate(char *buf, size_t n, double r)
{
    if (r < 0)
        snprintf(buf, n, "-");
    else if (r >= 100 || r == 0)
        snprintf(buf, n, "%.0f", r);
    else
        snprintf(buf, n, "%.1f", r);
    return buf;
}

static char *fmt_bytes(char *buf, size_t n, double b)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%.0f B", b);
    else
        snprintf(buf, n, "%.1f %s", b, unit[u]);
    return buf;
}

static char *fmt_duration(char *buf, size_t n, double ms)
{
    unsigned long long s = (unsigned long long)(ms / 1000);
    if (ms < 10000)
        snprintf(buf, n, "%.1fs", ms / 1000);
    else if (s < 3600)
        snprintf(buf, n, "%llum%02llus", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, n, "%lluh%02llum", s / 3600, s / 60 % 60);
    else
        snprintf(buf, n, "%llud%02lluh", s / 86400, s / 3600 % 24);
    return buf;
}

/* "name  total  rate/s" and the start of the detail column. */
static void view_row(const stats_view *v, FILE *out, const char *name,
                     double total, double before)
{
    char r[32];
    fprintf(out, "%-12s %12.0f %10s/s", name, total,
            fmt_rate(r, sizeof(r), view_rate(v, total, before)));
}

/* Detail: "key N, key N (r/s)" for each non-zero entry of the map at key;
 * with_rates adds each entry's own rate. */
static void view_map(const stats_view *v, FILE *out, const char *key, int with_rates)
{
    const char *k;
    json_t *val;
    int first = 1;
    json_t *before = v->prev ? json_object_get(v->prev, key) : NULL;
    json_object_foreach(json_object_get(v->cur, key), k, val) {
        double now = json_is_number(val) ? json_number_value(val) : 0;
        if (now == 0)
            continue;
        fprintf(out, "%s%s %.0f", first ? "  " : ", ", k, now);
        first = 0;
        double r = view_rate(v, now, jnum(before, k));
        char rb[32];
        if (with_rates && r >= 0)
            fprintf(out, " (%s/s)", fmt_rate(rb, sizeof(rb), r));
    }
}

/* A counter row: total, rate, optional map detail. */
static void view_counter(const stats_view *v, FILE *out, const char *name,
                         const char *key, const char *map, int map_rates)
{
    double now = map ? (double)jsum(v->cur, map) : jnum(v->cur, key);
    double before = !v->prev ? 0 : map ? (double)jsum(v->prev, map) : jnum(v->prev, key);
    view_row(v, out, name, now, before);
    if (map)
        view_map(v, out, map, map_rates);
    fputc('\n', out);
}

/* Latency: any object with p50/p99 members, such as ack_delay_ms (receipt
 * to acknowledgement by Tinybird, over the last window_s seconds). Nothing
 * when the daemon has none. */
static void view_latency(const stats_view *v, FILE *out)
{
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)v->cur, k, val) {
        json_t *p50 = json_object_get(val, "p50"), *p99 = json_object_get(val, "p99");
        if (!json_is_number(p50) && !json_is_number(p99))
            continue;
        size_t kl = strlen(k);
        const char *unit = kl > 3 && strcmp(k + kl - 3, "_ms") == 0 ? " ms" : "";
        fprintf(out, "%-12s p50 %.0f%s, p99 %.0f%s (%.*s", "latency",
                json_number_value(p50), unit, json_number_value(p99), unit,
                (int)(*unit ? kl - 3 : kl), k);
        json_t *w = json_object_get(val, "window_s");
        if (json_is_number(w))
            fprintf(out, ", last %.0f s", json_number_value(w));
        fputs(")\n", out);
    }
}

/* One human-readable frame (also the --once output). */
static void view_print(const stats_view *v, FILE *out, const char *path)
{
    const json_t *c = v->cur;
    char a[32], b[32], d[32];
    double ts = jnum(c, "ts_ms");
    time_t secs = (time_t)(ts / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
    fprintf(out, "birdfeederd %s  up %s  at %s", path,
            fmt_duration(a, sizeof(a), jnum(c, "uptime_ms")), when);
    if (v->prev)
        fprintf(out, "  rates over %.1fs\n", v->dt);
    else
        fprintf(out, "  totals only\n");
    fprintf(out, "%-12s %12s %12s\n", "", "total", "rate");

    double rb = jnum(c, "received_bytes");
    view_row(v, out, "received", jnum(c, "received"), v->prev ? jnum(v->prev, "received") : 0);
    fprintf(out, "  %s\n", fmt_bytes(a, sizeof(a), rb));
    view_counter(v, out, "accepted", NULL, "accepted", 0);
    view_counter(v, out, "rejected", NULL, "rejected", 1);
    view_counter(v, out, "batched", NULL, "rows_batched", 0);
    view_counter(v, out, "delivered", NULL, "rows_delivered", 0);
    view_counter(v, out, "dropped", NULL, "dropped", 1);
    view_counter(v, out, "quarantined", NULL, "rows_quarantined", 0);
    view_counter(v, out, "dead-letter", "rows_dead_lettered", NULL, 0);
    view_counter(v, out, "requests", NULL, "http", 1);
    view_counter(v, out, "retries", "retries", NULL, 0);
    view_row(v, out, "bytes sent", jnum(c, "bytes_sent"),
             v->prev ? jnum(v->prev, "bytes_sent") : 0);
    fprintf(out, "  %s gzip of %s NDJSON\n", fmt_bytes(a, sizeof(a), jnum(c, "bytes_sent")),
            fmt_bytes(b, sizeof(b), (double)jsum(c, "bytes_batched")));
    fprintf(out, "%-12s unknown_model %llu, ip_invalid %llu, utf8_replaced %llu\n",
            "enrich", jint(c, "unknown_model"), jint(c, "ip_invalid"),
            jint(c, "utf8_replaced"));
    fprintf(out, "%-12s %s in %llu segments; spooled %llu, replayed %llu, torn %llu\n",
            "spool", fmt_bytes(a, sizeof(a), jnum(c, "spool_bytes")),
            jint(c, "spool_segments"), jint(c, "rows_spooled"),
            jint(c, "rows_replayed"), jint(c, "spool_torn"));
    double mem = jnum(c, "memory_bytes"), cap = jnum(c, "memory_cap");
    fprintf(out, "%-12s %s of %s (%.0f%%); %llu requests in flight\n", "memory",
            fmt_bytes(a, sizeof(a), mem), fmt_bytes(b, sizeof(b), cap),
            cap > 0 ? 100 * mem / cap : 0, jint(c, "inflight_requests"));
    fprintf(out, "%-12s queue %s of rcvbuf %s; kernel drops %llu", "socket",
            fmt_bytes(a, sizeof(a), jnum(c, "socket_queue_bytes")),
            fmt_bytes(b, sizeof(b), jnum(c, "rcvbuf_bytes")), jint(c, "kernel_drops"));
    double kr = v->prev ? view_rate(v, jnum(c, "kernel_drops"), jnum(v->prev, "kernel_drops")) : -1;
    if (kr > 0)
        fprintf(out, " (%s/s)", fmt_rate(d, sizeof(d), kr));
    fputc('\n', out);
    double last = jnum(c, "last_flush_ok_ms");
    if (last <= 0)
        fprintf(out, "%-12s never\n", "last flush");
    else
        fprintf(out, "%-12s %s ago\n", "last flush",
                fmt_duration(a, sizeof(a), ts > last ? ts - last : 0));
    view_latency(v, out);
}

/* --prom: the known keys, with Prometheus names, types and help. A map
 * value becomes one sample per entry with the label named here. */
static const struct prom_family {
    const char *key;
    const char *name;   /* after "birdfeeder_" */
    const char *type;
    const char *label;  /* for maps */
    double scale;       /* 0: as is */
    const char *help;
} prom_families[] = {
    {"uptime_ms", "uptime_seconds", "gauge", NULL, 0.001, "Seconds since the daemon started."},
    {"received", "received_total", "counter", NULL, 0, "Datagrams read from the UDP socket."},
    {"received_bytes", "received_bytes_total", "counter", NULL, 0, "Bytes of the datagrams read."},
    {"rejected", "rejected_total", "counter", "reason", 0, "Datagrams rejected, by reason (proto/reasons.def)."},
    {"accepted", "accepted_total", "counter", "dataset", 0, "Events accepted, by dataset."},
    {"unknown_model", "unknown_model_total", "counter", NULL, 0, "Accepted events whose model is not in the catalog."},
    {"ip_invalid", "ip_invalid_total", "counter", NULL, 0, "Accepted events with an unparseable ip (hashed as empty)."},
    {"utf8_replaced", "utf8_replaced_total", "counter", NULL, 0, "Accepted events with invalid UTF-8 replaced."},
    {"rows_batched", "rows_batched_total", "counter", "dataset", 0, "Rows added to batches, by dataset."},
    {"bytes_batched", "bytes_batched_total", "counter", "dataset", 0, "NDJSON bytes batched (uncompressed), by dataset."},
    {"batches", "batches_total", "counter", "dataset", 0, "Batches closed for sending, by dataset."},
    {"bytes_sent", "bytes_sent_total", "counter", NULL, 0, "Request body bytes sent (compressed)."},
    {"http", "http_requests_total", "counter", "status", 0, "Requests to Tinybird by HTTP status (error: no response)."},
    {"retries", "retries_total", "counter", NULL, 0, "Requests retried."},
    {"rows_delivered", "rows_delivered_total", "counter", "dataset", 0, "Rows Tinybird acknowledged, by dataset."},
    {"rows_quarantined", "rows_quarantined_total", "counter", "dataset", 0, "Rows Tinybird put in quarantine, by dataset."},
    {"dropped", "rows_dropped_total", "counter", "reason", 0, "Accepted rows lost, by reason (daemon/drops.def)."},
    {"rows_spooled", "rows_spooled_total", "counter", NULL, 0, "Rows written to the disk spool."},
    {"rows_replayed", "rows_replayed_total", "counter", NULL, 0, "Rows read back from the disk spool."},
    {"rows_dead_lettered", "rows_dead_lettered_total", "counter", NULL, 0, "Rows written to dead-letter.ndjson."},
    {"spool_torn", "spool_torn_records_total", "counter", NULL, 0, "Torn or corrupt spool records skipped."},
    {"kernel_drops", "kernel_drops_total", "counter", NULL, 0, "Datagrams the kernel dropped (receive buffer full)."},
    {"spool_bytes", "spool_bytes", "gauge", NULL, 0, "Bytes in the disk spool."},
    {"spool_segments", "spool_segments", "gauge", NULL, 0, "Segment files in the disk spool."},
    {"memory_bytes", "memory_bytes", "gauge", NULL, 0, "Batch memory waiting and in flight."},
    {"memory_cap", "memory_cap_bytes", "gauge", NULL, 0, "Batch memory cap (--max-memory)."},
    {"socket_queue_bytes", "socket_queue_bytes", "gauge", NULL, 0, "Bytes waiting in the UDP receive queue."},
    {"rcvbuf_bytes", "rcvbuf_bytes", "gauge", NULL, 0, "UDP receive buffer granted (SO_RCVBUF)."},
    {"inflight_requests", "inflight_requests", "gauge", NULL, 0, "Requests to Tinybird in flight."},
    {"last_flush_ok_ms", "last_flush_ok_timestamp_seconds", "gauge", NULL, 0.001, "Unix time of the last acknowledged batch (0: never)."},
    {"ack_delay_ms", "ack_delay_seconds", "gauge", "quantile", 0.001, "Delay from receipt to acknowledgement by Tinybird, recent window."},
};

static void prom_escape(FILE *out, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", out);
        else if (*s == '\n')
            fputs("\\n", out);
        else if (quote && *s == '"')
            fputs("\\\"", out);
        else
            fputc(*s, out);
    }
}

/* A metric name part: [a-zA-Z0-9_], anything else becomes '_'. */
static void prom_name(char *out, size_t n, const char *name)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '_';
        out[i] = ok ? ch : '_';
    }
    out[i] = '\0';
}

static void prom_value(FILE *out, const json_t *v, double scale)
{
    if (json_is_integer(v) && scale == 0)
        fprintf(out, "%lld\n", (long long)json_integer_value(v));
    else if (scale) /* ms to seconds */
        fprintf(out, "%.3f\n", json_number_value(v) * scale);
    else
        fprintf(out, "%.15g\n", json_number_value(v));
}

/* "p50" -> "0.5", "p99" -> "0.99", "p999" -> "0.999"; else the key. */
static const char *prom_quantile(char *buf, size_t n, const char *key)
{
    if (key[0] == 'p' && key[1] >= '0' && key[1] <= '9' &&
        strspn(key + 1, "0123456789") == strlen(key + 1)) {
        snprintf(buf, n, "0.%s", key + 1);
        size_t l = strlen(buf); /* 0.50 -> 0.5 */
        while (l > 3 && buf[l - 1] == '0')
            buf[--l] = '\0';
        return buf;
    }
    return key;
}

/* The label value for map key k, or NULL when k is no sample (a quantile
 * map's other keys: window_s). q is scratch space. */
static const char *prom_label_value(const char *label, const char *k, char *q, size_t n)
{
    if (strcmp(label, "quantile") != 0)
        return k;
    const char *lv = prom_quantile(q, n, k);
    return lv == k ? NULL : lv;
}

/* One family: HELP, TYPE and its samples; nothing for a map without
 * numbers (http before the first request). */
static void prom_family_print(FILE *out, const char *name, const char *type,
                              const char *help, const char *label, double scale,
                              const json_t *v)
{
    const char *k;
    json_t *e;
    char q[32];
    int samples = !json_is_object(v);
    json_object_foreach((json_t *)v, k, e)
        samples |= json_is_number(e) && prom_label_value(label, k, q, sizeof(q));
    if (!samples)
        return;
    fprintf(out, "# HELP birdfeeder_%s ", name);
    prom_escape(out, help, 0);
    fprintf(out, "\n# TYPE birdfeeder_%s %s\n", name, type);
    if (!json_is_object(v)) {
        fprintf(out, "birdfeeder_%s ", name);
        prom_value(out, v, scale);
        return;
    }
    json_object_foreach((json_t *)v, k, e) {
        const char *lv = prom_label_value(label, k, q, sizeof(q));
        if (!json_is_number(e) || !lv)
            continue;
        fprintf(out, "birdfeeder_%s{%s=\"", name, label);
        prom_escape(out, lv, 1);
        fputs("\"} ", out);
        prom_value(out, e, scale);
    }
}

/* Does map o hold numbers named like p50, p99? */
static int prom_is_quantiles(const json_t *o)
{
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)o, k, e) {
        char q[32];
        if (json_is_number(e) && prom_quantile(q, sizeof(q), k) != k)
            return 1;
    }
    return 0;
}

/* Prometheus text exposition (format 0.0.4) of one snapshot. */
static void prom_print(const json_t *snap, FILE *out)
{
    size_t nf = sizeof(prom_families) / sizeof(prom_families[0]);
    for (size_t i = 0; i < nf; i++) {
        const struct prom_family *f = &prom_families[i];
        json_t *v = json_object_get(snap, f->key);
        if (json_is_number(v) || (f->label && json_is_object(v)))
            prom_family_print(out, f->name, f->type, f->help, f->label, f->scale, v);
    }
    /* Keys this version does not know: gauges, so nothing is claimed. */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)snap, k, v) {
        int known = strcmp(k, "ts_ms") == 0;
        for (size_t i = 0; i < nf && !known; i++)
            known = strcmp(k, prom_families[i].key) == 0;
        size_t kl = strlen(k);
        if (!known && kl > 6 && strcmp(k + kl - 6, "_total") == 0) {
            char base[128]; /* rejected_total: the sum of map rejected */
            snprintf(base, sizeof(base), "%.*s", (int)(kl - 6), k);
            known = json_is_object(json_object_get(snap, base));
        }
        if (known || !(json_is_number(v) || json_is_object(v)))
            continue;
        char name[128], help[192];
        prom_name(name, sizeof(name), k);
        snprintf(help, sizeof(help), "Stats key %s (no description in this birdfeeder).", k);
        prom_family_print(out, name, "gauge", help,
                          json_is_object(v) && prom_is_quantiles(v) ? "quantile" : "key",
                          0, v);
    }
}

static void stats_connect_error(const char *path, int err)
{
    fprintf(stderr, PROG " stats: cannot connect to %s: %s", path, strerror(-err));
    if (err == -ENOENT || err == -ECONNREFUSED)
        fprintf(stderr, " (is birdfeederd running, with --stats-socket %s?)", path);
    else if (err == -EACCES)
        fprintf(stderr, " (the socket is mode 0660: run as root or its group)");
    fputc('\n', stderr);
}

/* --once: the first line, then lines until STATS_ONCE_SPAN_MS of daemon time
 * passed (rates) or STATS_ONCE_WAIT_MS of ours (totals only). */
static int stats_once(stats_conn *c, const char *path, int prom)
{
    char *line;
    if (stats_read_line(c, STATS_CONNECT_WAIT_MS, &line) <= 0) {
        fprintf(stderr, PROG " stats: no stats line from %s\n", path);
        return 1;
    }
    json_t *first = stats_parse(line);
    if (!first)
        return 1;
    if (prom) {
        prom_print(first, stdout);
        json_decref(first);
        return 0;
    }
    json_t *last = NULL;
    int64_t deadline = mono_ms() + STATS_ONCE_WAIT_MS;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0 || stats_read_line(c, (int)left, &line) <= 0)
            break;
        json_t *o = stats_parse(line);
        if (!o)
            break;
        json_decref(last);
        last = o;
        if (jnum(last, "ts_ms") - jnum(first, "ts_ms") >= STATS_ONCE_SPAN_MS)
            break;
    }
    stats_view v = {.cur = last ? last : first, .prev = last ? first : NULL};
    if (last) {
        v.dt = (jnum(last, "ts_ms") - jnum(first, "ts_ms")) / 1000;
        if (v.dt <= 0 || jnum(last, "uptime_ms") < jnum(first, "uptime_ms"))
            v.prev = NULL; /* same instant, or another daemon */
    }
    view_print(&v, stdout, path);
    json_decref(first);
    json_decref(last);
    return 0;
}

/* --json: the lines exactly as the daemon wrote them. */
static int stats_json(stats_conn *c, const char *path, int once)
{
    char *line;
    int r;
    while ((r = stats_read_line(c, once ? STATS_CONNECT_WAIT_MS : -1, &line)) > 0) {
        puts(line);
        if (fflush(stdout) != 0 || once)
            return ferror(stdout) ? 2 : 0;
    }
    if (r == 0 || errno) {
        fprintf(stderr, PROG " stats: %s: %s\n", path,
                r == 0 ? "no stats line" : strerror(errno));
        return 1;
    }
    return 0; /* the daemon stopped */
}

/* The live view: a frame per line, redrawn in place on a terminal. When the
 * daemon goes away the view says so and reconnects. */
static int stats_live(stats_conn *c, const char *path)
{
    int tty = isatty(STDOUT_FILENO);
    json_t *prev = NULL;
    for (;;) {
        char *line;
        int r = stats_read_line(c, -1, &line);
        json_t *cur = r > 0 ? stats_parse(line) : NULL;
        if (!cur) {
            json_decref(prev);
            prev = NULL;
            stats_disconnect(c);
            if (tty)
                fputs("\033[H\033[2J", stdout);
            printf("birdfeederd %s: connection closed, reconnecting...\n", path);
            fflush(stdout);
            while (stats_connect(c, path) < 0)
                sleep(1);
            continue;
        }
        stats_view v = {.cur = cur, .prev = prev};
        int keep_prev = 0;
        if (prev) {
            v.dt = (jnum(cur, "ts_ms") - jnum(prev, "ts_ms")) / 1000;
            if (jnum(cur, "uptime_ms") < jnum(prev, "uptime_ms")) {
                v.prev = NULL; /* another daemon */
            } else if (v.dt * 1000 < STATS_MIN_SPAN_MS) {
                /* The line sent on connect and the first tick can be a few
                 * ms apart: no rates from that, wait for a longer span. */
                v.prev = NULL;
                keep_prev = 1;
            }
        }
        if (tty)
            fputs("\033[H\033[2J", stdout); /* home, clear */
        view_print(&v, stdout, path);
        if (tty)
            fputs("(Ctrl-C quits)\n", stdout);
        else
            fputc('\n', stdout);
        if (fflush(stdout) != 0) {
            json_decref(cur);
            json_decref(prev);
            return 2;
        }
        if (keep_prev) {
            json_decref(cur);
        } else {
            json_decref(prev);
            prev = cur;
        }
    }
}

static int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"once", no_argument, NULL, '1'},
        {"json", no_argument, NULL, 'j'},
        {"prom", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv(STATS_SOCKET_ENV);
    int once = 0, json = 0, prom = 0, opt;
    if (!path || !*path)
        path = STATS_DEFAULT_SOCKET;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case '1':
            once = 1;
            break;
        case 'j':
            json = 1;
            break;
        case 'p':
            prom = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("usage: " PROG " stats [--socket PATH] [--once] [--json | --prom]\n",
                  stderr);
            return 2;
        }
    }
    if (optind != argc || (json && prom)) {
        fprintf(stderr, PROG " stats: %s\n",
                optind != argc ? "unexpected argument" : "--json or --prom, not both");
        return 2;
    }
    stats_conn c = {.fd = -1};
    int rc = stats_connect(&c, path);
    if (rc < 0) {
        stats_connect_error(path, rc);
        return 1;
    }
    if (json)
        rc = stats_json(&c, path, once);
    else if (prom || once)
        rc = stats_once(&c, path, prom);
    else
        rc = stats_live(&c, path);
    stats_disconnect(&c);
    free(c.buf);
    return rc;
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
    {"stats", cmd_stats},
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
