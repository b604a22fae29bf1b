/*
 * cli/main.c: the `birdfeeder` command line tool: usage and the command
 * table.
 *
 *   birdfeeder send [--to HOST:PORT] [--rate N] [--repeat N]  < events.ndjson
 *   birdfeeder encode                                         < events.ndjson
 *   birdfeeder decode                                         < datagrams.hex
 *   birdfeeder stats [--socket PATH] [--once] [--json | --prom]
 *   birdfeeder dead-letter list|replay [--spool-dir DIR] [--config FILE]
 *
 * For people and scripts: send test or backfill events to the daemon, see
 * the bytes an event becomes, read datagrams captured off the wire, and
 * watch the daemon's stats socket. Events are read and written as the JSON
 * objects of proto/PROTOCOL.md. Each subcommand is one entry in `commands`
 * below and lives in a file of its own: send.c, codec.c (encode, decode),
 * stats.c (with stats_view.c, stats_term.c for the live view's terminal,
 * and daemon/stats_prom.c for --prom), dead_letter.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bf_client.h"
#include "bf_proto.h"
#include "cli.h"

const char cli_usage[] =
    "usage: " PROG " <command> [options]\n"
    "\n"
    "Send events to the birdfeeder daemon, and read or write protocol v1\n"
    "datagrams (proto/PROTOCOL.md). Events are JSON objects, one per line:\n"
    "  {\"dataset\":\"image_events\",\"model\":\"flux\",\"width\":1024}\n"
    "\n"
    "commands:\n"
    "  send [--to HOST:PORT] [--rate N] [--repeat N]\n"
    "        Read events from stdin, check each one as the daemon would, and\n"
    "        send each good one as one datagram. Bad lines are reported\n"
    "        on stderr and skipped; a field the protocol does not have is\n"
    "        named once (it would not reach Tinybird). Ends with \"sent N,\n"
    "        invalid N, dropped N to HOST:PORT\" on stderr; exits 1 if any line\n"
    "        was invalid or any datagram was refused (nothing listening).\n"
    "          --to HOST:PORT  daemon address: A.B.C.D:PORT, [IPv6]:PORT,\n"
    "                          localhost:PORT or unix:/PATH, a Unix datagram\n"
    "                          socket (default $" BF_CLIENT_ADDR_ENV ", else\n"
    "                          " BF_CLIENT_DEFAULT_ADDR ")\n"
    "          --rate N        at most N datagrams per second (default: no pause)\n"
    "          --repeat N      send every event N times (simple load; default 1)\n"
    "  encode\n"
    "        Read events from stdin and print each datagram `send` would send\n"
    "        (prompt cut to 120 characters) as one line of lowercase hex;\n"
    "        unknown fields are named once on stderr, as for send.\n"
    "  decode\n"
    "        Read datagrams from stdin, one per line in hex (spaces allowed),\n"
    "        and print each as one JSON line, or \"error: <reason>\" when the\n"
    "        daemon would reject it (with its default limit of 8192 bytes).\n"
    "        Exits 1 if any line was rejected.\n"
    "  stats [--socket PATH] [--once] [--json | --prom]\n"
    "        Watch the daemon's stats socket: a view redrawn at every line\n"
    "        the daemon writes (each --stats-interval-ms), with rates per\n"
    "        second and the last minute's event rate as a sparkline; it\n"
    "        reconnects when the daemon restarts. On a terminal q quits.\n"
    "          --socket PATH   the daemon's --stats-socket (default\n"
    "                          $BIRDFEEDER_STATS_SOCKET, else the daemon's\n"
    "                          default for this user: /run/birdfeeder/stats.sock\n"
    "                          as root, ~/.local/state/birdfeeder/run/stats.sock\n"
    "                          or $XDG_RUNTIME_DIR/birdfeeder/stats.sock)\n"
    "          --once          print one view and exit (rates over about 1 s)\n"
    "          --json          print the JSON lines as received (with --once:\n"
    "                          one line)\n"
    "          --prom          print one Prometheus text exposition and exit\n"
    "        Exits 1 when the socket cannot be read.\n"
    "  dead-letter list|replay [--spool-dir DIR] [--config FILE]\n"
    "                          [--tinybird-url URL]\n"
    "        The batches whose rows Tinybird refused (400, 422), which the\n"
    "        daemon keeps in <spool-dir>/dead-letter.ndjson. list prints one\n"
    "        line per batch: when, dataset, status, rows, the answer. replay\n"
    "        sends each again, straight to the Events API with the daemon's\n"
    "        configuration (its --config, TINYBIRD_API_KEY, TINYBIRD_API_URL),\n"
    "        once the cause is fixed, and removes only what Tinybird accepted;\n"
    "        a batch refused again stays with its new answer. The spool\n"
    "        directory is the daemon's: by context as for birdfeederd, or\n"
    "        --spool-dir. replay exits 1 when any batch was kept.\n"
    "  help  Print this text (also --help).\n"
    "  --version\n"
    "        Print the version and the protocol version.\n";

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs(cli_usage, stdout);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf(PROG " %s (protocol v%d)\n", BF_VERSION, BF_PROTO_VERSION);
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
    {"dead-letter", cmd_dead_letter},
    {"help", cmd_help},
    {"--help", cmd_help},
    {"-h", cmd_help},
    {"--version", cmd_version},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(cli_usage, stderr);
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
