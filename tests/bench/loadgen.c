/*
 * tests/bench/loadgen.c: the load generator of `make bench`. Sends the
 * datagrams of a payload file (tests/bench/payload.c), in order and round
 * and round, to one loopback UDP address with sendmmsg, at a fixed rate or
 * as fast as it can, for a time or a count; then prints one JSON line:
 *   {"sent":N,"errors":N,"seconds":S,"rate":R}
 *
 *   bench-loadgen --to HOST:PORT --payload FILE [--rate N|0] [--seconds S]
 *                 [--count N]
 *
 * --rate 0 is the sender's maximum. Pacing: every 200 us the datagrams due
 * so far are sent, 64 per sendmmsg call, so short stalls are caught up.
 * The same program feeds the bare receiver and birdfeederd, so the two see
 * the same datagrams at the same rate.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "bf_addr.h"

#define BATCH 64

int main(int argc, char **argv)
{
    const char *to = NULL, *payload = NULL, *rate_s = "0", *seconds_s = "5", *count_s = "0";
    const char *usage = "--to HOST:PORT --payload FILE [--rate N|0] [--seconds S] [--count N]";
    bench_args(argc, argv, 1,
               (const struct bench_opt[]){{"--to", &to}, {"--payload", &payload},
                                          {"--rate", &rate_s}, {"--seconds", &seconds_s},
                                          {"--count", &count_s}, {0}},
               usage);
    if (!to || !payload) {
        fprintf(stderr, "usage: %s %s\n", argv[0], usage);
        return 2;
    }
    double rate = atof(rate_s), seconds = atof(seconds_s);
    uint64_t count = strtoull(count_s, NULL, 10);
    FILE *f = fopen(payload, "rb");
    if (!f) {
        perror(payload);
        return 1;
    }
    static uint8_t data[64 << 20];
    size_t size = fread(data, 1, sizeof(data), f);
    fclose(f);
    size_t n = 0, cap = 1024;
    struct iovec *dg = malloc(cap * sizeof(*dg));
    for (size_t off = 0; dg && off + 2 <= size;) {
        size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;
        if (off + 2 + len > size)
            break;
        if (n == cap)
            dg = realloc(dg, (cap *= 2) * sizeof(*dg));
        if (!dg)
            break;
        dg[n++] = (struct iovec){data + off + 2, len};
        off += 2 + len;
    }
    if (!n) {
        fprintf(stderr, "bench-loadgen: %s: no datagrams\n", payload);
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (bf_addr_parse(to, 0, &ss, &sslen) < 0) {
        fprintf(stderr, "bench-loadgen: %s: not HOST:PORT\n", to);
        return 2;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
        perror("bench-loadgen: socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    uint64_t sent = 0, errors = 0, next = 0;
    double t0 = now_s(), end = t0 + seconds;
    struct timespec tick = {0, 200000};
    for (;;) {
        double t = now_s();
        if ((!count && t >= end) || (count && sent + errors >= count))
            break;
        uint64_t due = rate > 0 ? (uint64_t)((t - t0) * rate) : sent + errors + BATCH;
        if (count && due > count)
            due = count;
        while (sent + errors < due) {
            unsigned k = 0;
            while (k < BATCH && sent + errors + k < due) {
                msgs[k].msg_hdr.msg_iov = &dg[next];
                msgs[k].msg_hdr.msg_iovlen = 1;
                next = next + 1 == n ? 0 : next + 1;
                k++;
            }
            int r = sendmmsg(fd, msgs, k, 0);
            if (r < 0) {
                if (errno != EINTR)
                    errors += k; /* ECONNREFUSED, ENOBUFS: counted, not retried */
                continue;
            }
            sent += (unsigned)r;
            if ((unsigned)r < k) /* the rest of the batch was not taken */
                errors += k - (unsigned)r;
        }
        if (rate > 0)
            nanosleep(&tick, NULL);
    }
    double took = now_s() - t0;
    printf("{\"sent\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rate\":%.0f}\n",
           (unsigned long long)sent, (unsigned long long)errors, took, (double)sent / took);
    close(fd);
    return 0;
}
