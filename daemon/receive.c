/* receive.c: UDP receive with recvmmsg batches. See receive.h. */
#include "receive.h"

#include <errno.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "bf_addr.h"
#include "clock.h"
#include "log.h"
#include "stats.h"

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

/* libuv gives each datagram of a recvmmsg batch a 64 KiB slot and reads at
 * most 20 per call; 16 slots is past the point where batching pays. */
#define SLOT_SIZE (64 * 1024)
#define SLOTS 16

static struct {
    uv_loop_t *loop;
    uv_udp_t udp;
    receive_opts o;
    char *buf;              /* SLOTS * SLOT_SIZE, reused for every batch */
    char addr[64];
    int open;
    int reading;            /* recv started on the loop, not yet stopped */
    int activated;          /* the socket is systemd's (LISTEN_FDS) */
    /* Gauges, read by stats through the receive_* readers. */
    uint64_t rcvbuf_bytes;  /* SO_RCVBUF granted */
    uint64_t queue_bytes;   /* receive queue at the last refresh */
    uint64_t kernel_drops;  /* the socket's drop count at the last refresh */
} rc;

static log_limit oversize_limit, error_limit;

static void deliver(const uint8_t *p, size_t len)
{
    stats.received++;
    stats.received_bytes += len;
    if (len > rc.o.max_datagram) {
        stats.rejected[BF_R_oversize]++;
        log_limited(&oversize_limit, LOG_WARN, "reject",
                    "reason=oversize bytes=%zu max=%zu", len, rc.o.max_datagram);
        return;
    }
    rc.o.cb(p, len, clock_wall_ms(), rc.o.arg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    /* No buffer while the pipeline has no room (memory full of batches on
     * their way to the spool): libuv then stops reading until the next
     * loop turn, which runs the completions that free memory, and the
     * kernel's buffer holds the datagrams meanwhile. */
    if (rc.o.wait && rc.o.wait(rc.o.arg)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    /* Safe to reuse: every datagram is fully processed inside on_recv. */
    *b = uv_buf_init(rc.buf, SLOTS * SLOT_SIZE);
}

static void on_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *b,
                    const struct sockaddr *addr, unsigned flags)
{
    (void)u;
    if (nread == UV_ENOBUFS && !b->base) /* on_alloc said wait */
        return;
    if (nread < 0) {
        stats.receive_errors++;
        log_limited(&error_limit, LOG_WARN, "receive_error", "error=\"%s\"",
                    uv_strerror((int)nread));
        return;
    }
    /* nread 0 with no addr: the end of a recvmmsg batch, or nothing read. */
    if (!addr)
        return;
    if (flags & UV_UDP_PARTIAL) { /* larger than the 64 KiB slot */
        stats.received++;
        stats.rejected[BF_R_oversize]++;
        log_limited(&oversize_limit, LOG_WARN, "reject",
                    "reason=oversize bytes=truncated max=%zu", rc.o.max_datagram);
        return;
    }
    deliver((const uint8_t *)b->base, (size_t)nread);
}

int receive_check_listen(const char *listen, char *err, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (sd_listen_fds(0) >= 1)
        return 0; /* systemd passes the socket: listen is not used */
    int r = bf_addr_parse(listen, BF_ADDR_BIND, &ss, &sslen);
    if (r < 0)
        snprintf(err, n, "option 'listen': '%s' is not HOST:PORT", listen);
    return r;
}

static void set_rcvbuf(uv_os_fd_t fd, uint64_t want)
{
    int v = want > INT32_MAX / 2 ? INT32_MAX / 2 : (int)want;
    int got = 0;
    socklen_t gl = sizeof(got);
    /* A socket systemd passed may already have a larger buffer
     * (ReceiveBuffer=) than we could set without CAP_NET_ADMIN: keep it.
     * Ours gets what is asked, larger or smaller (a reload). Otherwise
     * SO_RCVBUFFORCE passes net.core.rmem_max when we may; SO_RCVBUF is
     * capped by it. The kernel reports double. */
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl) < 0 || (uint64_t)got / 2 < want ||
        !rc.activated) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        gl = sizeof(got);
        getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
    }
    rc.rcvbuf_bytes = (uint64_t)got;
    if ((uint64_t)got / 2 < want)
        log_warn("rcvbuf_capped",
                 "requested=%llu granted=%d hint=\"raise net.core.rmem_max "
                 "(/etc/sysctl.d/99-birdfeeder.conf)\"",
                 (unsigned long long)want, got / 2);
}

int receive_start(uv_loop_t *loop, const receive_opts *opts, char *err, size_t n)
{
    memset(&rc, 0, sizeof(rc));
    rc.loop = loop;
    rc.o = *opts;
    rc.buf = malloc(SLOTS * SLOT_SIZE);
    if (!rc.buf) {
        snprintf(err, n, "out of memory");
        return UV_ENOMEM;
    }
    int r;
    int fds = sd_listen_fds(1);
    int fd = fds >= 1 ? SD_LISTEN_FDS_START : -1;
    if (fd >= 0 && sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) <= 0) {
        snprintf(err, n, "socket activation: fd %d is not a datagram socket", fd);
        return UV_EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (fd < 0 && (r = bf_addr_parse(opts->listen, BF_ADDR_BIND, &ss, &sslen)) < 0) {
        snprintf(err, n, "option 'listen': '%s' is not HOST:PORT", opts->listen);
        return r;
    }
    unsigned family = fd >= 0 ? AF_UNSPEC : ss.ss_family;
    if ((r = uv_udp_init_ex(loop, &rc.udp, family | UV_UDP_RECVMMSG)) < 0) {
        snprintf(err, n, "udp socket: %s", uv_strerror(r));
        return r;
    }
    rc.open = 1;
    if (fd >= 0)
        r = uv_udp_open(&rc.udp, fd);
    else
        r = uv_udp_bind(&rc.udp, (struct sockaddr *)&ss, 0);
    if (r < 0) {
        snprintf(err, n, "%s %s: %s", fd >= 0 ? "adopting socket" : "binding",
                 fd >= 0 ? "LISTEN_FDS" : opts->listen, uv_strerror(r));
        return r;
    }
    uv_os_fd_t ufd;
    uv_fileno((uv_handle_t *)&rc.udp, &ufd);
    rc.activated = fd >= 0;
    set_rcvbuf(ufd, opts->rcvbuf);

    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_udp_getsockname(&rc.udp, (struct sockaddr *)&bound, &blen) == 0) {
        if (bound.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&bound, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&bound, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        }
    }
    snprintf(rc.addr, sizeof(rc.addr), bound.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
             host, port);
    if ((r = uv_udp_recv_start(&rc.udp, on_alloc, on_recv)) < 0) {
        snprintf(err, n, "udp receive: %s", uv_strerror(r));
        return r;
    }
    rc.reading = 1;
    log_info("listening", "addr=%s activated=%s rcvbuf=%llu max_datagram=%zu",
             rc.addr, fd >= 0 ? "yes" : "no", (unsigned long long)rc.rcvbuf_bytes,
             opts->max_datagram);
    return 0;
}

void receive_reconfigure(const receive_opts *opts)
{
    rc.o.max_datagram = opts->max_datagram;
    uv_os_fd_t fd;
    if (rc.open && opts->rcvbuf != rc.o.rcvbuf &&
        uv_fileno((uv_handle_t *)&rc.udp, &fd) == 0)
        set_rcvbuf(fd, opts->rcvbuf);
    rc.o.rcvbuf = opts->rcvbuf;
}

const char *receive_address(void) { return rc.addr; }

int receive_reading(void) { return rc.reading; }

void receive_stop_and_drain(void)
{
    if (!rc.open)
        return;
    rc.reading = 0;
    uv_udp_recv_stop(&rc.udp);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&rc.udp, &fd) < 0)
        return;
    struct mmsghdr msgs[SLOTS];
    struct iovec iov[SLOTS];
    for (;;) {
        for (int i = 0; i < SLOTS; i++) {
            iov[i].iov_base = rc.buf + (size_t)i * SLOT_SIZE;
            iov[i].iov_len = SLOT_SIZE;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, msgs, SLOTS, MSG_DONTWAIT, NULL);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            stats.receive_errors++;
            log_limited(&error_limit, LOG_WARN, "receive_error",
                        "error=%s during=drain", strerror(errno));
        }
        if (got <= 0)
            break; /* EAGAIN: the queue is empty */
        for (int i = 0; i < got; i++)
            deliver((const uint8_t *)iov[i].iov_base, msgs[i].msg_len);
    }
}

void receive_refresh_gauges(void)
{
    if (!rc.open)
        return;
    uv_os_fd_t fd;
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);
    if (uv_fileno((uv_handle_t *)&rc.udp, &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0) {
        rc.queue_bytes = mem[SK_MEMINFO_RMEM_ALLOC];
        if (len > SK_MEMINFO_DROPS * sizeof(uint32_t))
            rc.kernel_drops = mem[SK_MEMINFO_DROPS];
    }
}

uint64_t receive_kernel_drops(void) { return rc.kernel_drops; }
uint64_t receive_queue_bytes(void) { return rc.queue_bytes; }
uint64_t receive_rcvbuf_bytes(void) { return rc.rcvbuf_bytes; }

void receive_close(void)
{
    if (rc.open) {
        rc.open = rc.reading = 0;
        uv_close((uv_handle_t *)&rc.udp, NULL);
    }
    free(rc.buf);
    rc.buf = NULL;
}
