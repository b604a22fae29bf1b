/*
 * tests/bench/shim.c: what the C client shim costs a service per event.
 * Sends --count events of the bench mix (tests/bench/mix.h) with
 * bf_client_send to --to, then prints
 *   {"events":N,"cpu_us_per_event":X,"sent":N,"dropped":N}
 * where CPU is this process's user+system time over the send loop only,
 * encode_us_per_event the same for bf_client_encode alone (the shim's
 * part, without the system call), and bare_sendto_us_per_event the same
 * for a plain sendto(2) loop of the same datagrams, already encoded, to
 * the same address: the kernel's floor under any UDP sender, against
 * which the shim's cost is read (on loopback the sending system call
 * also runs the receiving side of the network stack).
 * `make bench` runs it under strace -c as well, with --count 0 and N and
 * --bare 0, to count the shim's system calls per event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "bf_addr.h"
#include "bf_client.h"
#include "mix.h"

#define VARIANTS 1024

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    const char *to = NULL, *count_s = "200000", *bare_s = "1";
    bench_args(argc, argv, 1,
               (const struct bench_opt[]){{"--to", &to}, {"--count", &count_s},
                                          {"--bare", &bare_s}, {0}},
               "[--to HOST:PORT] [--count N] [--bare 0|1]");
    unsigned long count = strtoul(count_s, NULL, 10);
    int bare_on = strcmp(bare_s, "0") != 0; /* --bare 0: the shim's loop only (strace counts its calls) */
    int err;
    bf_client *c = bf_client_open(to, &err);
    if (!c) {
        fprintf(stderr, "bench-shim: cannot open %s (%d)\n", to ? to : "default", err);
        return 1;
    }
    static bf_event evs[VARIANTS];
    static mix_bufs bufs[VARIANTS];
    for (unsigned i = 0; i < VARIANTS; i++)
        mix_event(i, 1000, &evs[i], &bufs[i]);
    /* The shim's own part, without the system call: the encoding. */
    static uint8_t out[8192];
    size_t sink = 0;
    double e0 = cpu_s();
    for (unsigned long i = 0; i < count; i++)
        sink += bf_client_encode(&evs[i % VARIANTS], out, sizeof(out));
    double enc = cpu_s() - e0;
    double c0 = cpu_s();
    for (unsigned long i = 0; i < count; i++)
        bf_client_send(c, &evs[i % VARIANTS]);
    double cpu = cpu_s() - c0;

    /* The floor: the same datagrams, encoded beforehand, by sendto alone. */
    static uint8_t wire[VARIANTS][1500];
    static size_t wlen[VARIANTS];
    for (unsigned i = 0; i < VARIANTS; i++)
        wlen[i] = bf_client_encode(&evs[i], wire[i], sizeof(wire[i]));
    struct sockaddr_storage ss;
    socklen_t sl;
    double bare = 0;
    if (bare_on && to && bf_addr_parse(to, 0, &ss, &sl) == 0) {
        int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            perror("bench-shim: socket");
            return 1;
        }
        double b0 = cpu_s();
        for (unsigned long i = 0; i < count; i++) {
            unsigned k = (unsigned)(i % VARIANTS);
            (void)sendto(fd, wire[k], wlen[k], MSG_DONTWAIT, (struct sockaddr *)&ss, sl);
        }
        bare = cpu_s() - b0;
        close(fd);
    }
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    printf("{\"events\":%lu,\"cpu_us_per_event\":%.3f,\"encode_us_per_event\":%.3f,"
           "\"bare_sendto_us_per_event\":%.3f,\"sent\":%llu,\"dropped\":%llu,\"bytes\":%zu}\n",
           count, count ? 1e6 * cpu / (double)count : 0.0,
           count ? 1e6 * enc / (double)count : 0.0,
           count ? 1e6 * bare / (double)count : 0.0, (unsigned long long)st.sent,
           (unsigned long long)st.dropped, sink);
    bf_client_close(c);
    return 0;
}
