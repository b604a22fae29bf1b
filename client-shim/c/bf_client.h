/*
 * bf_client.h: send birdfeeder events from a C service.
 *
 * One event is one datagram (protocol v1, proto/PROTOCOL.md), UDP or Unix, to
 * the birdfeeder daemon on the same host. Sending is fire-and-forget by design:
 * bf_client_send() never blocks, never raises a signal and never waits for
 * the daemon. When the daemon is down or its socket buffer is full the event
 * is dropped and counted; the service goes on serving.
 *
 * Depends on libc and proto/bf_proto.c, proto/bf_addr.c only (link
 * libbirdfeeder.a, which holds the three).
 *
 * Every int function returns 0 or a negative errno value.
 *
 * Threads: one bf_client may be shared by any number of threads. Sending is
 * one send() on a socket that does not change after open, and the counters
 * are atomic. Only bf_client_close() must not race with anything else.
 *
 *     int err;
 *     bf_client *c = bf_client_open(NULL, &err);   // $BIRDFEEDER_ADDR
 *     bf_event ev;
 *     bf_event_init(&ev, BF_DATASET_image_events);
 *     BF_SET_STR(&ev, model, "flux", 4);
 *     BF_SET_U64(&ev, width, 1024);
 *     bf_client_send(c, &ev);                      // result may be ignored
 *     bf_client_close(c);
 */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"

/* Largest datagram the client sends: the daemon's default limit. */
#define BF_CLIENT_MAX_DATAGRAM 8192

/* Where the daemon listens when neither the caller nor $BIRDFEEDER_ADDR
 * says otherwise. */
#define BF_CLIENT_DEFAULT_ADDR "127.0.0.1:8190"
#define BF_CLIENT_ADDR_ENV "BIRDFEEDER_ADDR"

/* The prompt is cut to this many UTF-8 characters (code points) before
 * encoding, as the daemon cuts it before writing rows: sending more only
 * costs socket buffer. A character is never split. */
#define BF_CLIENT_PROMPT_CHARS BF_PROMPT_MAX_CHARS

typedef struct bf_client bf_client;

/* Counters since open. Every bf_client_send() call adds one to exactly one
 * of them. */
struct bf_client_stats {
    uint64_t sent;     /* handed to the kernel */
    uint64_t dropped;  /* EAGAIN/EWOULDBLOCK, ENOBUFS, ECONNREFUSED (no daemon
                          listening: reported by the kernel on a later send),
                          ENOENT (unix: no socket at the path) */
    uint64_t oversize; /* does not fit BF_CLIENT_MAX_DATAGRAM after the cut */
    uint64_t failed;   /* any other error (EPERM from a firewall, ...) */
};

/* Open a client for the daemon at hostport: "A.B.C.D:PORT", "[IPv6]:PORT" or
 * "localhost:PORT" (127.0.0.1), port 1 to 65535, or "unix:/PATH", the
 * daemon's Unix datagram socket (proto/bf_addr.h; no name lookups, so open
 * never blocks).
 * NULL means $BIRDFEEDER_ADDR when set and not empty, else
 * BF_CLIENT_DEFAULT_ADDR. Creates a non-blocking, close-on-exec datagram
 * socket (UDP: connected; Unix: sent to by path each time, so a daemon
 * that restarts is found again); nothing is sent, so a daemon that is not
 * running is not an error here. Over a Unix socket the daemon knows the
 * sending user (and may accept only some: --allow-uid, --allow-gid), and a
 * full daemon queue is EAGAIN (dropped, counted) rather than silent loss.
 * Returns a client that the caller owns (bf_client_close), or NULL with
 * *err (when err is not NULL) set to -EINVAL for an address that does not
 * parse, -ENOMEM, or the negative errno of socket()/connect(). */
bf_client *bf_client_open(const char *hostport, int *err);

/* Encode ev as one datagram and send it without blocking. ev is only read
 * during the call (its strings may be freed after). The event is not
 * validated here: the daemon counts rejects by reason, call bf_validate()
 * first to catch them in the service.
 * Returns 0 when sent, -EMSGSIZE when oversize, the negative errno of send()
 * otherwise (dropped or failed, see struct bf_client_stats). */
int bf_client_send(bf_client *c, const bf_event *ev);

/* The datagram bf_client_send() would send: prompt cut to
 * BF_CLIENT_PROMPT_CHARS, then bf_encode(). Returns its length, or 0 when it
 * does not fit cap. */
size_t bf_client_encode(const bf_event *ev, uint8_t *out, size_t cap);

/* The error the kernel holds for the socket since the last send, cleared:
 * 0, or a negative errno: -ECONNREFUSED when a datagram found no daemon at
 * the address (on loopback the kernel knows by the time send returns).
 * The next bf_client_send would report it instead of sending (counted
 * dropped); a tool that exits after its last send asks here. The
 * datagram that met it was counted as sent. */
int bf_client_check(bf_client *c);

/* Copy the counters to *out. Each counter is read atomically; the four are
 * not one snapshot while other threads send. */
void bf_client_stats(const bf_client *c, struct bf_client_stats *out);

/* Close the socket and free c. NULL is a no-op. No other call may use c
 * during or after this one. */
void bf_client_close(bf_client *c);

#endif /* BF_CLIENT_H */
