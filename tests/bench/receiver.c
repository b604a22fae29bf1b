/*
 * tests/bench/receiver.c: the bare receiver of `make bench`, the limit
 * birdfeederd is measured against: one thread reading loopback datagrams
 * with recvmmsg, 16 per call into 64 KiB slots and the same SO_RCVBUF as
 * the daemon's default (16 MiB), counting them and their bytes and doing
 * nothing else.
 *
 *   bench-receiver [--listen 127.0.0.1:0] [--rcvbuf BYTES]
 *
 * Prints "listening HOST:PORT" once bound; on SIGTERM or SIGINT prints
 *   {"received":N,"bytes":N,"kernel_drops":N}
 * and exits. kernel_drops is the socket's drop count (SO_MEMINFO), as the
 * daemon's stats report it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sock_diag.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "bf_addr.h"

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#define SLOTS 16
#define SLOT_SIZE (64 * 1024)

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *rcvbuf_s = "16777216";
    bench_args(argc, argv, 1,
               (const struct bench_opt[]){{"--listen", &listen}, {"--rcvbuf", &rcvbuf_s}, {0}},
               "[--listen 127.0.0.1:0] [--rcvbuf BYTES]");
    int rcvbuf = atoi(rcvbuf_s);
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (bf_addr_parse(listen, BF_ADDR_BIND, &ss, &sslen) < 0) {
        fprintf(stderr, "bench-receiver: %s: not HOST:PORT\n", listen);
        return 2;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
        perror("bench-receiver");
        return 1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, host, sizeof(host));
    printf("listening %s:%u\n", host, ntohs(a.sin_port));
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char *buf = malloc(SLOTS * SLOT_SIZE);
    struct mmsghdr msgs[SLOTS];
    struct iovec iov[SLOTS];
    uint64_t received = 0, bytes = 0;
    while (!stop && buf) {
        for (int i = 0; i < SLOTS; i++) {
            iov[i] = (struct iovec){buf + (size_t)i * SLOT_SIZE, SLOT_SIZE};
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, msgs, SLOTS, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            perror("bench-receiver: recvmmsg");
            return 1;
        }
        received += (unsigned)got;
        for (int i = 0; i < got; i++)
            bytes += msgs[i].msg_len;
    }
    uint32_t mem[SK_MEMINFO_VARS] = {0};
    socklen_t ml = sizeof(mem);
    getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &ml);
    printf("{\"received\":%llu,\"bytes\":%llu,\"kernel_drops\":%u}\n",
           (unsigned long long)received, (unsigned long long)bytes, mem[SK_MEMINFO_DROPS]);
    return 0;
}
