/* cli/send.c: `birdfeeder send`: events from standard input to the daemon,
 * one datagram each, through the C shim (bf_client). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf_client.h"
#include "cli.h"

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

int cmd_send(int argc, char **argv)
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
            fputs(cli_usage, stdout);
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
    bf_decoder dec = {0};
    bf_event ev;
    while (cli_next_event(&lr, &dec, &ev, &invalid)) {
        for (unsigned long i = 0; i < repeat; i++) {
            if (rate)
                cli_pace(&next_ns, rate);
            if (bf_client_send(c, &ev) == -EMSGSIZE) {
                cli_report_oversize(&lr, &invalid);
                break;
            }
        }
    }
    bf_decoder_release(&dec);
    free(lr.buf);

    /* The last datagram's fate: nothing listening shows as ECONNREFUSED on
     * the socket, which a next send would have reported. */
    int pending = bf_client_check(c);
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    bf_client_close(c);
    unsigned long long refused = pending == -ECONNREFUSED;
    if (refused && st.sent)
        st.sent--;
    const char *env = getenv(BF_CLIENT_ADDR_ENV);
    const char *addr = to ? to : env && *env ? env : BF_CLIENT_DEFAULT_ADDR;
    fprintf(stderr, "sent %llu, invalid %lu, dropped %llu to %s\n",
            (unsigned long long)st.sent, invalid,
            (unsigned long long)(st.dropped + st.failed + refused), addr);
    if (refused || st.dropped + st.failed)
        fprintf(stderr, PROG ": %s: %s: is birdfeederd listening there? (--to, $"
                        BF_CLIENT_ADDR_ENV ")\n", addr,
                refused ? "connection refused: nothing listens on that port"
                        : "datagrams dropped: refused (nothing listening) or the "
                          "socket buffer was full");
    return invalid || refused || st.dropped + st.failed ? 1 : 0;
}
