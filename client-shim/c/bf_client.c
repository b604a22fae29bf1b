/* bf_client.c: the C client shim. See bf_client.h for the contracts. */
#include "bf_client.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bf_addr.h"

struct bf_client {
    int fd;
    int unix_dgram;                /* sendto addr each time (see open) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    _Atomic uint64_t sent;
    _Atomic uint64_t dropped;
    _Atomic uint64_t oversize;
    _Atomic uint64_t failed;
};

bf_client *bf_client_open(const char *hostport, int *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    bf_client *c = NULL;
    int result;

    if (!hostport) {
        hostport = getenv(BF_CLIENT_ADDR_ENV);
        if (!hostport || !*hostport)
            hostport = BF_CLIENT_DEFAULT_ADDR;
    }
    result = bf_addr_parse(hostport, 0, &ss, &sslen);
    if (result)
        goto fail;
    c = calloc(1, sizeof(*c));
    if (!c) {
        result = -ENOMEM;
        goto fail;
    }
    c->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        result = -errno;
        goto fail;
    }
    /* A Unix socket is sent to by name every time: a daemon that is not
     * running yet is no error at open, and one that restarts (a new socket
     * at the same path) is reached at once, where a connected socket would
     * keep the old, dead peer. UDP is connected: the kernel fills in the
     * address once, and reports ICMP port-unreachable (no daemon) as
     * ECONNREFUSED on a later send. */
    c->unix_dgram = ss.ss_family == AF_UNIX;
    c->addr = ss;
    c->addrlen = sslen;
    if (!c->unix_dgram && connect(c->fd, (struct sockaddr *)&ss, sslen) < 0) {
        result = -errno;
        close(c->fd);
        goto fail;
    }
    atomic_init(&c->sent, 0);
    atomic_init(&c->dropped, 0);
    atomic_init(&c->oversize, 0);
    atomic_init(&c->failed, 0);
    if (err)
        *err = 0;
    return c;
fail:
    free(c);
    if (err)
        *err = result;
    return NULL;
}

size_t bf_client_encode(const bf_event *ev, uint8_t *out, size_t cap)
{
    if (!BF_HAS(ev, prompt))
        return bf_encode(ev, out, cap);
    bf_event cut = *ev;
    cut.prompt.len = bf_utf8_prefix(ev->prompt.ptr, ev->prompt.len,
                                    BF_CLIENT_PROMPT_CHARS);
    return bf_encode(&cut, out, cap);
}

int bf_client_send(bf_client *c, const bf_event *ev)
{
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    size_t n = bf_client_encode(ev, buf, sizeof(buf));

    if (n == 0) {
        atomic_fetch_add_explicit(&c->oversize, 1, memory_order_relaxed);
        return -EMSGSIZE;
    }
    /* MSG_DONTWAIT even though the socket is non-blocking, in case a caller
     * ever dup()s it; MSG_NOSIGNAL so no send can raise SIGPIPE. */
    ssize_t w = c->unix_dgram ? sendto(c->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL,
                                       (const struct sockaddr *)&c->addr, c->addrlen)
                              : send(c->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w >= 0) {
        atomic_fetch_add_explicit(&c->sent, 1, memory_order_relaxed);
        return 0;
    }
    int result = -errno;
    switch (errno) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case ENOBUFS:
    case ECONNREFUSED:
    case ENOENT: /* unix: no socket at the path: no daemon */
        atomic_fetch_add_explicit(&c->dropped, 1, memory_order_relaxed);
        break;
    default:
        atomic_fetch_add_explicit(&c->failed, 1, memory_order_relaxed);
        break;
    }
    return result;
}

int bf_client_check(bf_client *c)
{
    int e = 0;
    socklen_t len = sizeof(e);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        return -errno;
    return -e;
}

void bf_client_stats(const bf_client *c, struct bf_client_stats *out)
{
    out->sent = atomic_load_explicit(&c->sent, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&c->dropped, memory_order_relaxed);
    out->oversize = atomic_load_explicit(&c->oversize, memory_order_relaxed);
    out->failed = atomic_load_explicit(&c->failed, memory_order_relaxed);
}

void bf_client_close(bf_client *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c);
}
