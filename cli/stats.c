/*
 * cli/stats.c: `birdfeeder stats`: a view of the daemon's stats socket
 * (daemon/stats.h; its keys are daemon/stats.def): the connection, and the --once, --json, --prom and live
 * modes. The frames are drawn by stats_view.c, the exposition by the
 * daemon's own writer (daemon/stats_prom.c, the one behind GET /metrics).
 *
 * The daemon writes one JSON object per line to every client, at once on
 * connect and then every --stats-interval-ms. Counters only grow while one
 * daemon runs; rates are the difference of two lines over the difference of
 * their ts_ms. Keys this version does not know are ignored by the views and
 * exported as gauges by --prom, so a newer daemon never breaks the tool.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "paths.h"
#include "stats_prom.h"

#define STATS_SOCKET_ENV "BIRDFEEDER_STATS_SOCKET"
/* Else the daemon's default for the user running this: <runtime>/stats.sock
 * (daemon/paths.h: /run/birdfeeder as root, $RUNTIME_DIRECTORY under
 * systemd, else $XDG_RUNTIME_DIR/birdfeeder or <state>/run). */
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
        int wait = -1; /* past the deadline: one look without waiting */
        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            wait = left > 0 ? (int)left : 0;
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

static void stats_connect_error(const char *path, int err)
{
    fprintf(stderr, PROG " stats: cannot connect to %s: %s", path, strerror(-err));
    if (err == -ENOENT || err == -ECONNREFUSED)
        fprintf(stderr, " (is birdfeederd running, with --stats-socket %s?)", path);
    else if (err == -EACCES) {
        /* Name the socket's group: joining it is the way without sudo. */
        struct stat st;
        struct group *g = stat(path, &st) == 0 ? getgrgid(st.st_gid) : NULL;
        if (g)
            fprintf(stderr, " (the socket is mode 0660, group %s: run as root, or join "
                            "the group: sudo usermod -aG %s $USER, then log in again)",
                    g->gr_name, g->gr_name);
        else
            fprintf(stderr, " (the socket is mode 0660: run as root or as its group)");
    }
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
        stats_prom_write(first, stdout);
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

/* Wait until the socket (fd; -1: none) has bytes or, on a terminal, a
 * key was pressed, or timeout_ms (-1: no limit) passed, or a signal came
 * (a resize). Returns 'q' to quit, else 0. */
static int live_wait(int fd, int keys, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = STDIN_FILENO, .events = POLLIN}};
    if (poll(p, keys ? 2 : 1, timeout_ms) <= 0 || !keys || !(p[1].revents & (POLLIN | POLLHUP)))
        return 0;
    int ch = term_key();
    return ch == 'q' || ch == 'Q' || ch < 0 ? 'q' : 0; /* stdin closed: quit too */
}

/* Show one frame: on a terminal cut to its window (header first), else
 * written whole with a blank line after it. */
static int live_show(int tty, const char *text, size_t len)
{
    if (!tty) {
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
        return fflush(stdout) == 0 ? 0 : -1;
    }
    unsigned cols, rows;
    term_size(&cols, &rows);
    term_draw(text, len, cols, rows);
    return 0;
}

/* The live view: a frame per line. On a terminal (stats_term.c) it holds
 * the screen: `q` quits at once, a frame is cut to the window so a small
 * one keeps the header, and the event rate of the last minute is drawn as
 * a sparkline. When the daemon goes away the view says so and reconnects. */
static int stats_live(stats_conn *c, const char *path)
{
    int term = term_take(), tty = term != 0, keys = term == TERM_KEYS;
    setlocale(LC_CTYPE, "");
    int utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
    rate_history rates = {.newest = -1};
    json_t *prev = NULL;
    char *frame = NULL;
    size_t frame_len = 0;
    int rc = 0;
    for (;;) {
        if (tty && term_redraw_pending() && frame)
            live_show(tty, frame, frame_len);
        char *line;
        int r = stats_read_line(c, 0, &line);
        if (r == 0) {
            if (live_wait(c->fd, keys, -1) == 'q')
                break;
            continue;
        }
        json_t *cur = r > 0 ? stats_parse(line) : NULL;
        if (!cur) {
            json_decref(prev);
            prev = NULL;
            rates = (rate_history){.newest = -1};
            stats_disconnect(c);
            static const char gone[] = "birdfeederd %s: connection closed, reconnecting...\n";
            char text[512];
            int n = snprintf(text, sizeof(text), gone, path);
            live_show(tty, text, n > 0 && (size_t)n < sizeof(text) ? (size_t)n : 0);
            int quit = 0;
            while (!quit && stats_connect(c, path) < 0)
                quit = live_wait(-1, keys, 1000) == 'q';
            if (quit)
                break;
            continue;
        }
        stats_view v = {.cur = cur, .prev = prev, .rates = &rates, .utf8 = utf8};
        int keep_prev = 0;
        if (prev) {
            v.dt = (jnum(cur, "ts_ms") - jnum(prev, "ts_ms")) / 1000;
            if (jnum(cur, "uptime_ms") < jnum(prev, "uptime_ms")) {
                v.prev = NULL; /* another daemon */
                rates = (rate_history){.newest = -1};
            } else if (v.dt * 1000 < STATS_MIN_SPAN_MS) {
                /* The line sent on connect and the first tick can be a few
                 * ms apart: no rates from that, wait for a longer span. */
                v.prev = NULL;
                keep_prev = 1;
            } else {
                rate_history_add(&rates, prev, cur);
            }
        }
        unsigned rows;
        if (tty)
            term_size(&v.cols, &rows);
        free(frame);
        frame = NULL;
        FILE *out = open_memstream(&frame, &frame_len);
        if (out) {
            view_print(&v, out, path);
            if (tty)
                fputs(keys ? "(q quits)\n" : "(Ctrl-C quits)\n", out);
        }
        if (!out || fclose(out) != 0 || live_show(tty, frame, frame_len) < 0) {
            json_decref(cur);
            rc = 2;
            break;
        }
        if (keep_prev) {
            json_decref(cur);
        } else {
            json_decref(prev);
            prev = cur;
        }
    }
    json_decref(prev);
    free(frame);
    if (tty)
        term_give_back();
    return rc;
}

int cmd_stats(int argc, char **argv)
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
    static char by_context[PATHS_MAX + 16];
    if (!path || !*path) {
        bf_paths p;
        paths_resolve(&p, geteuid() == 0);
        snprintf(by_context, sizeof(by_context), "%s/stats.sock",
                 *p.runtime ? p.runtime : "/run/birdfeeder");
        path = by_context;
    }
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
            fputs(cli_usage, stdout);
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
