/*
 * receive.h: the listening sockets, UDP and Unix datagram. Reads datagrams
 * in batches (recvmmsg: through libuv's UV_UDP_RECVMMSG for UDP, directly
 * for Unix sockets, whose senders' credentials come in a control message)
 * into one reused buffer, so receiving allocates nothing per datagram, and
 * hands each to a callback on the loop thread.
 *
 * The sockets are either bound to the --listen addresses or, under systemd
 * socket activation, the datagram sockets passed in LISTEN_FDS (UDP, or
 * Unix from ListenDatagram=/path), which keep queueing while the daemon
 * restarts. No socket reaches beyond loopback unless allow_remote; a Unix
 * socket bound here is born mode 0660 (its group socket_group) and, when
 * allow_uid or allow_gid is set, passes on only datagrams whose sender the
 * kernel vouches for (SO_PASSCRED); the others count as
 * rejected.peer_not_allowed.
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

/* At most this many sockets (--listen values, or passed by systemd). */
#define RECEIVE_LISTEN_MAX 8

typedef struct receive_opts {
    const char *listen;      /* addresses as proto/bf_addr.h reads them,
                                comma-separated; port 0: any free port (see
                                receive_address) */
    int allow_remote;        /* addresses beyond loopback allowed (warned) */
    const char *socket_group;/* group of the unix: sockets; NULL: ours */
    const char *allow_uid;   /* users (names or numbers, comma-separated)
                                unix: sockets accept; NULL: any */
    const char *allow_gid;   /* groups, likewise; with allow_uid, either */
    uint64_t rcvbuf;         /* SO_RCVBUF to ask for */
    size_t max_datagram;     /* larger: rejected.oversize, cb not called */
    receive_cb cb;
    void *arg;
    /* NULL, or asked before each read: nonzero leaves the datagrams in the
     * kernel's buffer until the next loop turn (memory is full). */
    int (*wait)(void *arg);
} receive_opts;

/* Open (or adopt) the sockets and start reading. On error returns a
 * negative libuv error with a message in err (size n); call receive_close
 * in every case, which releases the handles, the buffer, and removes the
 * Unix sockets bound here. */
int receive_start(uv_loop_t *loop, const receive_opts *opts, char *err, size_t n);

/* Whether receive_start could use listen (every address parses and is
 * loopback or allowed, or systemd passes the sockets), changing nothing: 0,
 * or a negative errno with a message in err (size n). */
int receive_check_listen(const char *listen, int allow_remote, char *err, size_t n);

/* Whether the users and groups opts names (allow_uid, allow_gid,
 * socket_group) exist, and the kernel can name the allowed ones to the
 * daemon (in a user namespace, such as systemd's PrivateUsers=yes, a sender
 * outside its map arrives as 65534): 0, or UV_EINVAL with a message in err
 * (size n). */
int receive_check_names(const receive_opts *opts, char *err, size_t n);

/* 1 while the sockets are read from the loop: after receive_start, before
 * receive_stop_and_drain. For the health check. */
int receive_reading(void);

/* New options from a reload, on the sockets as they are (never rebound):
 * the receive buffer asked for (SO_RCVBUF; the granted size is the gauge),
 * the largest datagram accepted, and --allow-uid/--allow-gid. listen,
 * allow_remote, socket_group and cb are not changed. -1 with err when an
 * allowed user or group does not resolve: the old ones stay (the buffer
 * and size still apply). */
int receive_reconfigure(const receive_opts *opts, char *err, size_t n);

/* The bound addresses, comma-separated: "HOST:PORT", "[IPv6]:PORT",
 * "unix:/PATH" (for logs and tests). */
const char *receive_address(void);

/* Stop reading from the loop, then read what the socket already holds
 * (non-blocking, until the queue is empty) through the callback. */
void receive_stop_and_drain(void);

/* Read the socket's queue length and drop count (SO_MEMINFO) for the
 * readers below; the stats timer runs it before each line. Nothing when the
 * socket is closed: the readers keep the last values. */
void receive_refresh_gauges(void);

/* The gauges receive owns, for stats (daemon/stats.def): the sockets'
 * count of datagrams the kernel dropped and the bytes waiting in their
 * queues (summed), both as of the last receive_refresh_gauges, and the
 * SO_RCVBUF granted at start to the first (as the kernel reports it,
 * doubled). Each is 0 until
 * the first receive_start sets it. */
uint64_t receive_kernel_drops(void);
uint64_t receive_queue_bytes(void);
uint64_t receive_rcvbuf_bytes(void);

void receive_close(void);

#endif /* BF_RECEIVE_H */
