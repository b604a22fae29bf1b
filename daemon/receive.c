/* receive.c: UDP and Unix datagram receive in batches. See receive.h. */
#include "receive.h"

#include <errno.h>
#include <grp.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

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
#define ALLOW_MAX 64 /* uids and gids in --allow-uid, --allow-gid */

/* One socket: UDP through libuv's uv_udp_t (recvmmsg), or a Unix datagram
 * socket read with recvmmsg here, since libuv's UDP handle takes no
 * AF_UNIX and the sender's credentials come in a control message. */
typedef struct listener {
    int is_unix;
    int activated;        /* passed by systemd */
    int open;             /* the handle is initialised (close it) */
    int fd;               /* unix: ours to close, -1 once closed */
    uv_udp_t udp;
    uv_poll_t poll;
    char addr[128];       /* "127.0.0.1:8190", "[::1]:8190", "unix:/path" */
    char path[108];       /* unix, bound here: unlinked at close */
    uint64_t queue_bytes, kernel_drops; /* at the last refresh */
} listener;

static struct {
    uv_loop_t *loop;
    receive_opts o;
    char *buf;              /* SLOTS * SLOT_SIZE, reused for every batch */
    listener l[RECEIVE_LISTEN_MAX];
    int n;
    char addrs[RECEIVE_LISTEN_MAX * 130];
    uid_t uids[ALLOW_MAX];
    gid_t gids[ALLOW_MAX];
    int nuids, ngids;       /* both 0: every sender the socket's mode admits */
    int reading;            /* sockets read from the loop, not yet stopped */
    /* Gauges, read by stats through the receive_* readers. */
    uint64_t rcvbuf_bytes;  /* SO_RCVBUF granted (the first socket's) */
} rc;

static log_limit oversize_limit, error_limit, peer_limit;

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

static void truncated(void)
{
    stats.received++;
    stats.rejected[BF_R_oversize]++;
    log_limited(&oversize_limit, LOG_WARN, "reject",
                "reason=oversize bytes=truncated max=%zu", rc.o.max_datagram);
}

/* ---- UDP ---- */

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
        truncated();
        return;
    }
    deliver((const uint8_t *)b->base, (size_t)nread);
}

/* ---- Unix: recvmmsg with each sender's credentials ---- */

/* Whether a datagram from cred (NULL: none came) may go on. */
static int peer_allowed(const struct ucred *cred)
{
    if (!rc.nuids && !rc.ngids)
        return 1;
    if (!cred)
        return 0;
    for (int i = 0; i < rc.nuids; i++)
        if (rc.uids[i] == cred->uid)
            return 1;
    for (int i = 0; i < rc.ngids; i++)
        if (rc.gids[i] == cred->gid)
            return 1;
    return 0;
}

/* Point each of the SLOTS headers at its slot of rc.buf, nothing else set. */
static void prepare_slots(struct mmsghdr *msgs, struct iovec *iov)
{
    for (int i = 0; i < SLOTS; i++) {
        iov[i].iov_base = rc.buf + (size_t)i * SLOT_SIZE;
        iov[i].iov_len = SLOT_SIZE;
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Read what fd holds, SLOTS datagrams per recvmmsg, at most rounds calls
 * (0: until the queue is empty). Each datagram's credentials are checked
 * before it is delivered. */
static void unix_read(listener *l, int rounds)
{
    struct mmsghdr msgs[SLOTS];
    struct iovec iov[SLOTS];
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl[SLOTS];
    for (int round = 0; !rounds || round < rounds; round++) {
        /* No room in the pipeline (see on_alloc): the datagrams wait in the
         * socket's queue; the poll reports it readable on the next turn. */
        if (rounds && rc.o.wait && rc.o.wait(rc.o.arg))
            return;
        prepare_slots(msgs, iov);
        for (int i = 0; i < SLOTS; i++) {
            msgs[i].msg_hdr.msg_control = ctl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
        }
        int got = recvmmsg(l->fd, msgs, SLOTS, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            stats.receive_errors++;
            log_limited(&error_limit, LOG_WARN, "receive_error", "addr=%s error=\"%s\"",
                        l->addr, strerror(errno));
        }
        if (got <= 0)
            return;
        for (int i = 0; i < got; i++) {
            struct msghdr *h = &msgs[i].msg_hdr;
            if (h->msg_flags & MSG_TRUNC) {
                truncated();
                continue;
            }
            const struct ucred *cred = NULL;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                    continue;
                if (c->cmsg_type == SCM_CREDENTIALS &&
                    c->cmsg_len >= CMSG_LEN(sizeof(struct ucred)))
                    cred = (const struct ucred *)CMSG_DATA(c);
                /* A sender may pass descriptors too: never keep them (the
                 * credentials fill the buffer, so the kernel mostly
                 * discards them; any that came are closed). */
                if (c->cmsg_type == SCM_RIGHTS)
                    for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(fd));
                        close(fd);
                    }
            }
            if (!peer_allowed(cred)) {
                stats.received++;
                stats.received_bytes += msgs[i].msg_len;
                stats.rejected[BF_R_peer_not_allowed]++;
                log_limited(&peer_limit, LOG_WARN, "reject",
                            "reason=peer_not_allowed addr=%s uid=%ld gid=%ld pid=%ld",
                            l->addr, cred ? (long)cred->uid : -1L,
                            cred ? (long)cred->gid : -1L, cred ? (long)cred->pid : -1L);
                continue;
            }
            deliver((const uint8_t *)iov[i].iov_base, msgs[i].msg_len);
        }
        if (got < SLOTS)
            return;
    }
}

static void on_unix_readable(uv_poll_t *p, int status, int events)
{
    listener *l = p->data;
    (void)events;
    if (status < 0) {
        stats.receive_errors++;
        log_limited(&error_limit, LOG_WARN, "receive_error", "addr=%s error=\"%s\"",
                    l->addr, uv_strerror(status));
        return;
    }
    /* A bounded share per wakeup, as libuv does for UDP: a flood on one
     * socket cannot starve the others or the timers. */
    unix_read(l, 4);
}

/* ---- opening ---- */

static void set_rcvbuf(const listener *l, int fd, uint64_t want)
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
        !l->activated) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        gl = sizeof(got);
        getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
    }
    if (l == &rc.l[0])
        rc.rcvbuf_bytes = (uint64_t)got;
    if ((uint64_t)got / 2 < want)
        log_warn("rcvbuf_capped",
                 "requested=%llu granted=%d hint=\"raise net.core.rmem_max "
                 "(/etc/sysctl.d/99-birdfeeder.conf)\"",
                 (unsigned long long)want, got / 2);
}

/* "127.0.0.1:8190", "[::1]:8190" or "unix:/path" for sa. */
static void name_addr(const struct sockaddr *sa, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_UNIX) {
        snprintf(out, n, "unix:%s", ((const struct sockaddr_un *)sa)->sun_path);
    } else if (sa->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)sa, host, sizeof(host));
        snprintf(out, n, "[%s]:%d", host,
                 ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    } else {
        uv_ip4_name((const struct sockaddr_in *)sa, host, sizeof(host));
        snprintf(out, n, "%s:%d", host, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    }
}

/* Listening beyond loopback lets any host that reaches the address send
 * events, and costs: only with --allow-remote, and said in the log. */
static int check_remote(const struct sockaddr *sa, const char *what, int allow,
                        char *err, size_t n)
{
    if (bf_addr_is_loopback(sa))
        return 0;
    char name[128];
    name_addr(sa, name, sizeof(name));
    if (!allow) {
        snprintf(err, n, "%s %s is not a loopback address: any host that reaches it "
                         "could send events (and costs); give --allow-remote to allow it",
                 what, name);
        return UV_EINVAL;
    }
    log_warn("listen_remote", "addr=%s note=\"--allow-remote: any host that reaches "
                              "this address can send events and costs\"", name);
    return 0;
}

/* Whether the kernel can name a sender with this id (is_uid: a user, else
 * a group) to the daemon. In a user namespace (systemd's PrivateUsers=yes,
 * unshare -U) a sender outside the map arrives as the overflow id (65534):
 * an allowed id outside the map could never match, and the overflow id
 * would match every such sender. -1 with the reason in why (size n), or
 * 0; 0 too when the map cannot be read. */
static int id_nameable(int is_uid, unsigned long id, char *why, size_t n)
{
    FILE *f = fopen(is_uid ? "/proc/self/uid_map" : "/proc/self/gid_map", "re");
    unsigned long inside, outside, count, overflow = 65534;
    int mapped = 0, whole = 0;
    if (!f)
        return 0;
    while (fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3) {
        whole |= inside == 0 && outside == 0 && count == 4294967295UL;
        mapped |= id >= inside && id - inside < count;
    }
    fclose(f);
    if (whole)
        return 0;
    f = fopen(is_uid ? "/proc/sys/kernel/overflowuid" : "/proc/sys/kernel/overflowgid",
              "re");
    if (f) {
        if (fscanf(f, "%lu", &overflow) != 1)
            overflow = 65534;
        fclose(f);
    }
    if (mapped && id != overflow)
        return 0;
    snprintf(why, n, "%s: the daemon runs in a user namespace (PrivateUsers=yes, or "
                     "unshare -U) where the kernel names every sender outside it %lu, %s",
             mapped ? "is the overflow id" : "is outside the daemon's user namespace",
             overflow, mapped ? "so it would admit them all" : "so it could never match");
    return -1;
}

/* A user (is_uid) or group, by name or number: its id, or -1. */
static long lookup_id(const char *s, int is_uid)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s && !*end) /* (uid_t)-1 is no id; past it, one would wrap to another */
        return v < 4294967295UL ? (long)v : -1;
    if (is_uid) {
        struct passwd *p = getpwnam(s);
        return p ? (long)p->pw_uid : -1;
    }
    struct group *g = getgrnam(s);
    return g ? (long)g->gr_gid : -1;
}

/* The users (is_uid) or groups in list, names or numbers, into ids. */
static int parse_ids(const char *list, int is_uid, long *ids, int *count, char *err,
                     size_t n)
{
    char buf[4096];
    *count = 0;
    if (!list || !*list)
        return 0;
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long id = lookup_id(t, is_uid);
        char why[256];
        if (id >= 0 && id_nameable(is_uid, (unsigned long)id, why, sizeof(why)) < 0) {
            snprintf(err, n, "option '%s': '%s' (%ld) %s; give the service "
                             "PrivateUsers=no (docs/operations.md)",
                     is_uid ? "allow-uid" : "allow-gid", t, id, why);
            return UV_EINVAL;
        }
        if (id < 0 || *count == ALLOW_MAX) {
            snprintf(err, n, "option '%s': %s", is_uid ? "allow-uid" : "allow-gid",
                     id < 0 ? (is_uid ? "no such user" : "no such group")
                            : "too many entries");
            if (id < 0)
                snprintf(err + strlen(err), n - strlen(err), " '%s'", t);
            return UV_EINVAL;
        }
        ids[(*count)++] = id;
    }
    return 0;
}

/* --allow-uid and --allow-gid into rc.uids and rc.gids: all of them, or
 * (a name that does not resolve) none, the old ones kept. */
static int set_peers(const receive_opts *o, char *err, size_t n)
{
    long uids[ALLOW_MAX], gids[ALLOW_MAX];
    int nu, ng;
    int r = parse_ids(o->allow_uid, 1, uids, &nu, err, n);
    if (r == 0)
        r = parse_ids(o->allow_gid, 0, gids, &ng, err, n);
    if (r < 0)
        return r;
    for (int i = 0; i < nu; i++)
        rc.uids[i] = (uid_t)uids[i];
    for (int i = 0; i < ng; i++)
        rc.gids[i] = (gid_t)gids[i];
    rc.nuids = nu;
    rc.ngids = ng;
    return 0;
}

int receive_check_names(const receive_opts *o, char *err, size_t n)
{
    long ids[ALLOW_MAX];
    int count;
    int r = parse_ids(o->allow_uid, 1, ids, &count, err, n);
    if (r == 0)
        r = parse_ids(o->allow_gid, 0, ids, &count, err, n);
    if (r == 0 && o->socket_group && *o->socket_group && lookup_id(o->socket_group, 0) < 0) {
        snprintf(err, n, "option 'socket-group': no such group '%s'", o->socket_group);
        r = UV_EINVAL;
    }
    return r;
}

/* A socket file at path from an earlier run: one nobody is bound to goes
 * (connect is refused); a live one, or anything that is not a socket,
 * stays and fails the start. */
static int clear_stale(const char *path, char *err, size_t n)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, n, "listen unix:%s: a file that is not a socket is there (not "
                         "replaced: it is not the daemon's)", path);
        return UV_EEXIST;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        snprintf(err, n, "listen unix:%s: %s", path, strerror(errno));
        return -errno;
    }
    int r = connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0 ? 0 : -errno;
    close(probe);
    if (r == 0) {
        snprintf(err, n, "listen unix:%s: a running daemon is bound to it", path);
        return UV_EADDRINUSE;
    }
    /* Only "refused" says nobody is bound: a socket we may not open
     * (EACCES) may well be live, and is not ours to remove. */
    if (r != -ECONNREFUSED && r != -ENOENT) {
        snprintf(err, n, "listen unix:%s: a socket is there and connecting to it says "
                         "\"%s\" (not replaced: it may be in use)", path, strerror(-r));
        return r;
    }
    unlink(path);
    return 0;
}

/* Bind a Unix datagram socket at sun: mode 0660 from its birth (a umask
 * around bind: a chmod after it would leave a moment open to everyone),
 * then its group. */
static int unix_bind(listener *l, const struct sockaddr_un *sun, socklen_t len,
                     char *err, size_t n)
{
    int r = clear_stale(sun->sun_path, err, n);
    if (r < 0)
        return r;
    l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        r = -errno;
        snprintf(err, n, "listen unix:%s: %s", sun->sun_path, strerror(-r));
        return r;
    }
    /* umask is process-wide; no other thread creates files this early
     * (the threadpool and curl's resolver start once the loop runs). */
    mode_t mask = umask(0117);
    r = bind(l->fd, (const struct sockaddr *)sun, len) < 0 ? -errno : 0;
    umask(mask);
    if (r < 0) {
        snprintf(err, n, "binding unix:%s: %s", sun->sun_path, strerror(-r));
        return r;
    }
    snprintf(l->path, sizeof(l->path), "%s", sun->sun_path);
    if (rc.o.socket_group && *rc.o.socket_group) {
        long gid = lookup_id(rc.o.socket_group, 0);
        if (gid < 0 || chown(l->path, (uid_t)-1, (gid_t)gid) < 0) {
            r = gid < 0 ? UV_EINVAL : -errno;
            snprintf(err, n, "option 'socket-group': %s '%s' for unix:%s%s",
                     gid < 0 ? "no such group" : strerror(-r), rc.o.socket_group,
                     l->path, gid < 0 ? "" : " (the daemon must be a member)");
            return r;
        }
    }
    return 0;
}

/* A Unix datagram socket queues at most net.unix.max_dgram_qlen datagrams
 * (taken when it is made; 10 by default), whatever its buffer: past that
 * a sender gets EAGAIN, a drop it counts. Said once, as rcvbuf_capped is. */
static void check_unix_qlen(void)
{
    static int said;
    FILE *f = said ? NULL : fopen("/proc/sys/net/unix/max_dgram_qlen", "re");
    int q = 0;
    if (!f)
        return;
    said = 1;
    if (fscanf(f, "%d", &q) == 1 && q < 512)
        log_warn("unix_qlen_small",
                 "max_dgram_qlen=%d hint=\"a Unix socket queues this many datagrams; senders "
                 "get EAGAIN (a counted drop) past it: raise net.unix.max_dgram_qlen "
                 "(/etc/sysctl.d/99-birdfeeder.conf) before the socket is made\"", q);
    fclose(f);
}

/* Start reading the Unix datagram socket l->fd (bound here or passed). */
static int unix_start(listener *l, char *err, size_t n)
{
    int on = 1, r;
    check_unix_qlen();
    if (setsockopt(l->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) < 0) {
        r = -errno;
        snprintf(err, n, "%s: SO_PASSCRED: %s", l->addr, strerror(-r));
        return r;
    }
    set_rcvbuf(l, l->fd, rc.o.rcvbuf);
    if ((r = uv_poll_init_socket(rc.loop, &l->poll, l->fd)) < 0) {
        snprintf(err, n, "%s: %s", l->addr, uv_strerror(r));
        return r;
    }
    l->open = 1;
    l->poll.data = l;
    if ((r = uv_poll_start(&l->poll, UV_READABLE, on_unix_readable)) < 0)
        snprintf(err, n, "%s: %s", l->addr, uv_strerror(r));
    return r;
}

/* Open a UDP listener on fd (passed) or bound to ss. */
static int udp_start(listener *l, int fd, const struct sockaddr_storage *ss, char *err,
                     size_t n)
{
    int r;
    unsigned family = fd >= 0 ? AF_UNSPEC : ss->ss_family;
    if ((r = uv_udp_init_ex(rc.loop, &l->udp, family | UV_UDP_RECVMMSG)) < 0) {
        snprintf(err, n, "udp socket: %s", uv_strerror(r));
        return r;
    }
    l->open = 1;
    if (fd >= 0)
        r = uv_udp_open(&l->udp, fd);
    else
        r = uv_udp_bind(&l->udp, (const struct sockaddr *)ss, 0);
    if (r < 0) {
        snprintf(err, n, "%s %s: %s", fd >= 0 ? "adopting socket" : "binding",
                 fd >= 0 ? "LISTEN_FDS" : l->addr, uv_strerror(r));
        return r;
    }
    uv_os_fd_t ufd;
    uv_fileno((uv_handle_t *)&l->udp, &ufd);
    set_rcvbuf(l, ufd, rc.o.rcvbuf);
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (uv_udp_getsockname(&l->udp, (struct sockaddr *)&bound, &blen) == 0)
        name_addr((struct sockaddr *)&bound, l->addr, sizeof(l->addr));
    if (fd >= 0 && (r = check_remote((struct sockaddr *)&bound,
                                     "socket activation: the socket passed is bound to",
                                     rc.o.allow_remote, err, n)) < 0)
        return r;
    if ((r = uv_udp_recv_start(&l->udp, on_alloc, on_recv)) < 0)
        snprintf(err, n, "udp receive: %s", uv_strerror(r));
    return r;
}

/* Each address of the comma-separated list, parsed; cb(ss, len, arg) for
 * each. Returns 0 or the first error, with err set. */
static int each_listen(const char *list, int allow_remote,
                       int (*cb)(const struct sockaddr_storage *, socklen_t, void *),
                       void *arg, char *err, size_t n)
{
    char buf[4096];
    int count = 0;
    snprintf(buf, sizeof(buf), "%s", list ? list : "");
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (bf_addr_parse(t, BF_ADDR_BIND, &ss, &len) < 0) {
            snprintf(err, n, "option 'listen': '%s' is not HOST:PORT or unix:/PATH", t);
            return UV_EINVAL;
        }
        int r = check_remote((struct sockaddr *)&ss, "option 'listen':", allow_remote, err, n);
        if (r < 0)
            return r;
        if (++count > RECEIVE_LISTEN_MAX) {
            snprintf(err, n, "option 'listen': more than %d addresses", RECEIVE_LISTEN_MAX);
            return UV_EINVAL;
        }
        if (cb && (r = cb(&ss, len, arg)) < 0)
            return r;
    }
    if (!count) {
        snprintf(err, n, "option 'listen': '%s' is not HOST:PORT or unix:/PATH",
                 list ? list : "");
        return UV_EINVAL;
    }
    return 0;
}

int receive_check_listen(const char *listen, int allow_remote, char *err, size_t n)
{
    if (sd_listen_fds(0) >= 1)
        return 0; /* systemd passes the sockets: listen is not used */
    return each_listen(listen, allow_remote, NULL, NULL, err, n);
}

typedef struct open_ctx {
    char *err;
    size_t n;
} open_ctx;

static int open_one(const struct sockaddr_storage *ss, socklen_t len, void *arg)
{
    open_ctx *c = arg;
    listener *l = &rc.l[rc.n++];
    l->fd = -1;
    name_addr((const struct sockaddr *)ss, l->addr, sizeof(l->addr));
    if (ss->ss_family != AF_UNIX)
        return udp_start(l, -1, ss, c->err, c->n);
    l->is_unix = 1;
    int r = unix_bind(l, (const struct sockaddr_un *)ss, len, c->err, c->n);
    return r < 0 ? r : unix_start(l, c->err, c->n);
}

/* The sockets systemd passed (fds of them from SD_LISTEN_FDS_START). */
static int adopt(int fds, char *err, size_t n)
{
    if (fds > RECEIVE_LISTEN_MAX) {
        snprintf(err, n, "socket activation: %d sockets passed, at most %d", fds,
                 RECEIVE_LISTEN_MAX);
        return UV_EINVAL;
    }
    for (int i = 0; i < fds; i++) {
        int fd = SD_LISTEN_FDS_START + i, r;
        listener *l = &rc.l[rc.n];
        l->fd = -1;
        l->activated = 1;
        if (sd_is_socket_unix(fd, SOCK_DGRAM, -1, NULL, 0) > 0) {
            struct sockaddr_un sun;
            socklen_t sl = sizeof(sun);
            memset(&sun, 0, sizeof(sun));
            getsockname(fd, (struct sockaddr *)&sun, &sl);
            rc.n++;
            l->is_unix = 1;
            l->fd = fd;
            name_addr((struct sockaddr *)&sun, l->addr, sizeof(l->addr));
            r = unix_start(l, err, n);
        } else if (sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) > 0) {
            rc.n++;
            r = udp_start(l, fd, NULL, err, n);
        } else {
            snprintf(err, n, "socket activation: fd %d is not a datagram socket", fd);
            r = UV_EINVAL;
        }
        if (r < 0)
            return r;
    }
    return 0;
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
    int r = set_peers(opts, err, n);
    if (r < 0)
        return r;
    int fds = sd_listen_fds(1);
    open_ctx c = {err, n};
    r = fds >= 1 ? adopt(fds, err, n)
                 : each_listen(opts->listen, opts->allow_remote, open_one, &c, err, n);
    if (r < 0)
        return r;
    rc.reading = 1;
    size_t used = 0;
    for (int i = 0; i < rc.n; i++) {
        listener *l = &rc.l[i];
        used += (size_t)snprintf(rc.addrs + used, sizeof(rc.addrs) - used, "%s%s",
                                 i ? "," : "", l->addr);
        if (l->is_unix)
            log_info("listening", "addr=%s activated=%s rcvbuf=%llu max_datagram=%zu "
                                  "peers=%s",
                     l->addr, l->activated ? "yes" : "no",
                     (unsigned long long)rc.rcvbuf_bytes, opts->max_datagram,
                     rc.nuids || rc.ngids ? "allow-uid/allow-gid" : "any");
        else
            log_info("listening", "addr=%s activated=%s rcvbuf=%llu max_datagram=%zu",
                     l->addr, l->activated ? "yes" : "no",
                     (unsigned long long)rc.rcvbuf_bytes, opts->max_datagram);
    }
    return 0;
}

int receive_reconfigure(const receive_opts *opts, char *err, size_t n)
{
    rc.o.max_datagram = opts->max_datagram;
    for (int k = 0; k < rc.n && opts->rcvbuf != rc.o.rcvbuf; k++) {
        listener *l = &rc.l[k];
        uv_os_fd_t fd;
        if (l->is_unix && l->fd >= 0)
            set_rcvbuf(l, l->fd, opts->rcvbuf);
        else if (!l->is_unix && l->open && uv_fileno((uv_handle_t *)&l->udp, &fd) == 0)
            set_rcvbuf(l, fd, opts->rcvbuf);
    }
    rc.o.rcvbuf = opts->rcvbuf;
    int r = set_peers(opts, err, n);
    if (r == 0) {
        rc.o.allow_uid = opts->allow_uid;
        rc.o.allow_gid = opts->allow_gid;
    }
    return r;
}

const char *receive_address(void) { return rc.addrs; }

int receive_reading(void) { return rc.reading; }

void receive_stop_and_drain(void)
{
    rc.reading = 0;
    for (int k = 0; k < rc.n; k++) {
        listener *l = &rc.l[k];
        if (!l->open)
            continue;
        if (l->is_unix) {
            uv_poll_stop(&l->poll);
            unix_read(l, 0);
            continue;
        }
        uv_udp_recv_stop(&l->udp);
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&l->udp, &fd) < 0)
            continue;
        struct mmsghdr msgs[SLOTS];
        struct iovec iov[SLOTS];
        for (;;) {
            prepare_slots(msgs, iov);
            int got = recvmmsg(fd, msgs, SLOTS, MSG_DONTWAIT, NULL);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                stats.receive_errors++;
                log_limited(&error_limit, LOG_WARN, "receive_error",
                            "error=\"%s\" during=drain", strerror(errno));
            }
            if (got <= 0)
                break; /* EAGAIN: the queue is empty */
            for (int i = 0; i < got; i++)
                deliver((const uint8_t *)iov[i].iov_base, msgs[i].msg_len);
        }
    }
}

void receive_refresh_gauges(void)
{
    for (int k = 0; k < rc.n; k++) {
        listener *l = &rc.l[k];
        uv_os_fd_t fd = l->fd;
        uint32_t mem[SK_MEMINFO_VARS];
        socklen_t len = sizeof(mem);
        if (!l->open || (!l->is_unix && uv_fileno((uv_handle_t *)&l->udp, &fd) < 0))
            continue;
        if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0) {
            l->queue_bytes = mem[SK_MEMINFO_RMEM_ALLOC];
            if (len > SK_MEMINFO_DROPS * sizeof(uint32_t))
                l->kernel_drops = mem[SK_MEMINFO_DROPS];
        }
    }
}

uint64_t receive_kernel_drops(void)
{
    uint64_t t = 0;
    for (int k = 0; k < rc.n; k++)
        t += rc.l[k].kernel_drops;
    return t;
}

uint64_t receive_queue_bytes(void)
{
    uint64_t t = 0;
    for (int k = 0; k < rc.n; k++)
        t += rc.l[k].queue_bytes;
    return t;
}

uint64_t receive_rcvbuf_bytes(void) { return rc.rcvbuf_bytes; }

static void on_poll_closed(uv_handle_t *h)
{
    listener *l = h->data;
    close(l->fd);
    l->fd = -1;
}

void receive_close(void)
{
    rc.reading = 0;
    for (int k = 0; k < rc.n; k++) {
        listener *l = &rc.l[k];
        if (l->path[0]) { /* ours: the next start binds a new one */
            unlink(l->path);
            l->path[0] = '\0';
        }
        if (l->open) {
            l->open = 0;
            if (l->is_unix)
                uv_close((uv_handle_t *)&l->poll, on_poll_closed);
            else
                uv_close((uv_handle_t *)&l->udp, NULL);
        } else if (l->is_unix && l->fd >= 0 && !l->activated) {
            close(l->fd);
            l->fd = -1;
        }
    }
    free(rc.buf);
    rc.buf = NULL;
}
