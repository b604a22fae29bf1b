/*
 * receive.h: the UDP socket. Reads datagrams in batches (recvmmsg through
 * libuv's UV_UDP_RECVMMSG) into one reused buffer, so receiving allocates
 * nothing per datagram, and hands each to a callback on the loop thread.
 *
 * The socket is either bound to --listen or, under systemd socket
 * activation, the datagram socket passed in LISTEN_FDS, which keeps
 * queueing while the daemon restarts.
 */
#ifndef BF_RECEIVE_H
#define BF_RECEIVE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* One datagram: buf is valid during the call only; recv_ms is the wall
 * clock at receipt (epoch milliseconds). */
typedef void (*receive_cb)(const uint8_t *buf, size_t len, uint64_t recv_ms,
                           void *arg);

typedef struct receive_opts {
    const char *listen;      /* HOST:PORT as proto/bf_addr.h reads it; port 0:
                                any free port (see receive_address) */
    uint64_t rcvbuf;         /* SO_RCVBUF to ask for */
    size_t max_datagram;     /* larger: rejected.oversize, cb not called */
    receive_cb cb;
    void *arg;
    /* NULL, or asked before each read: nonzero leaves the datagrams in the
     * kernel's buffer until the next loop turn (memory is full). */
    int (*wait)(void *arg);
} receive_opts;

/* Open (or adopt) the socket and start reading. On error returns a
 * negative libuv error with a message in err (size n); call receive_close
 * in every case, which releases the handle and the buffer. */
int receive_start(uv_loop_t *loop, const receive_opts *opts, char *err, size_t n);

/* Whether receive_start could use listen (it parses, or systemd passes
 * the socket), changing nothing: 0, or a negative errno with a message in
 * err (size n). */
int receive_check_listen(const char *listen, char *err, size_t n);

/* 1 while the socket is read from the loop: after receive_start, before
 * receive_stop_and_drain. For the health check. */
int receive_reading(void);

/* New options from a reload, on the socket as it is (never rebound): the
 * receive buffer asked for (SO_RCVBUF; the granted size is the gauge) and
 * the largest datagram accepted. listen and cb are not changed. */
void receive_reconfigure(const receive_opts *opts);

/* The bound address as "HOST:PORT" (for logs and tests). */
const char *receive_address(void);

/* Stop reading from the loop, then read what the socket already holds
 * (non-blocking, until the queue is empty) through the callback. */
void receive_stop_and_drain(void);

/* Read the socket's queue length and drop count (SO_MEMINFO) for the
 * readers below; the stats timer runs it before each line. Nothing when the
 * socket is closed: the readers keep the last values. */
void receive_refresh_gauges(void);

/* The gauges receive owns, for stats (daemon/stats.def): the socket's
 * count of datagrams the kernel dropped and the bytes waiting in its
 * queue, both as of the last receive_refresh_gauges, and the SO_RCVBUF
 * granted at start (as the kernel reports it, doubled). Each is 0 until
 * the first receive_start sets it. */
uint64_t receive_kernel_drops(void);
uint64_t receive_queue_bytes(void);
uint64_t receive_rcvbuf_bytes(void);

void receive_close(void);

#endif /* BF_RECEIVE_H */
