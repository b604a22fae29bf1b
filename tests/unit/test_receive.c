/*
 * test_receive.c: daemon/receive.c: datagrams from a plain UDP socket on
 * loopback arrive intact and in order with their receipt time; oversize
 * ones are counted and not delivered; receive_stop_and_drain reads what
 * the socket already holds; the gauges; bad listen strings; systemd socket
 * activation (LISTEN_FDS, fd 3).
 *
 * Each test runs a loop of its own (uv_loop_init); at the end receive_close,
 * the loop runs until every handle is closed and uv_loop_close() must
 * return 0. Log lines go to a file in the test's directory.
 *
 * The activation tests put a socket on fd 3, where Check may keep the file
 * it reports through (every passing ck_assert writes to it): fd 3 is moved
 * aside first and put back before any assertion, so between the two the
 * tests only record what they see.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "receive.h"
#include "stats.h"
#include "testutil.h"

#define MAXGOT 512

static uv_loop_t loop;
static char tmpdir[64];
static char log_path[128];
static int saved_stderr = -1;
static int marker;

typedef struct dgram {
    uint8_t *buf;
    size_t len;
    uint64_t recv_ms;
} dgram;
static dgram got[MAXGOT];
static int ngot;
static int bad_arg; /* the callback saw an arg other than &marker */

/* No ck_assert here: it runs while fd 3 may not be Check's. */
static void on_dgram(const uint8_t *buf, size_t len, uint64_t recv_ms, void *arg)
{
    if (arg != &marker)
        bad_arg++;
    if (ngot >= MAXGOT)
        return;
    got[ngot].buf = malloc(len ? len : 1);
    if (got[ngot].buf)
        memcpy(got[ngot].buf, buf, len);
    got[ngot].len = len;
    got[ngot].recv_ms = recv_ms;
    ngot++;
}

static void receive_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    ngot = 0;
    bad_arg = 0;
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "receive");
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    saved_stderr = tu_stderr_to(log_path);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void receive_teardown(void)
{
    for (int i = 0; i < ngot; i++)
        free(got[i].buf);
    ngot = 0;
    tu_stderr_restore(saved_stderr, log_path);
    saved_stderr = -1;
    tu_rmtree(tmpdir);
}

static receive_opts opts_for(const char *listen, size_t max_datagram)
{
    return (receive_opts){.listen = listen, .rcvbuf = 1 << 16,
                          .max_datagram = max_datagram, .cb = on_dgram, .arg = &marker};
}

static void start(const char *listen, size_t max_datagram)
{
    char err[256] = "";
    receive_opts o = opts_for(listen, max_datagram);
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "receive_start: %s", err);
}

/* receive_close, run the loop until every handle closed, close it. */
static int close_all(void)
{
    receive_close();
    int r = uv_run(&loop, UV_RUN_DEFAULT);
    return r == 0 ? uv_loop_close(&loop) : -1;
}

static void finish(void)
{
    ck_assert_int_eq(close_all(), 0);
}

/* The port of receive_address()'s first address ("127.0.0.1:PORT"). */
static int bound_port(void)
{
    const char *a = receive_address();
    ck_assert_ptr_nonnull(a);
    char first[128];
    snprintf(first, sizeof(first), "%.*s", (int)strcspn(a, ","), a);
    const char *colon = strrchr(first, ':');
    ck_assert_ptr_nonnull(colon);
    return atoi(colon + 1);
}

/* A plain UDP socket that sends to 127.0.0.1:port. */
static int sender(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Datagram i of a test: len bytes, a pattern that depends on i. */
static void fill(uint8_t *buf, size_t len, int i)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(k * 31 + (size_t)i * 7 + 1);
}

static void send_n(int fd, size_t len, int i)
{
    uint8_t buf[65536];
    fill(buf, len, i);
    ck_assert_int_eq(send(fd, buf, len, 0), (ssize_t)len);
}

static int pred_ngot(void *arg)
{
    return ngot >= *(int *)arg;
}

static int run_until_got(int n, uint64_t timeout_ms)
{
    return tu_run_until(&loop, pred_ngot, &n, timeout_ms);
}

static void check_got(int k, size_t len, int i)
{
    uint8_t want[65536];
    fill(want, len, i);
    ck_assert_uint_eq(got[k].len, len);
    ck_assert_msg(memcmp(got[k].buf, want, len) == 0, "datagram %d differs", k);
}

/* ---- datagrams --------------------------------------------------------- */

START_TEST(test_receive_datagrams_intact)
{
    start("127.0.0.1:0", 1500);
    const char *addr = receive_address();
    ck_assert_int_eq(strncmp(addr, "127.0.0.1:", 10), 0);
    int port = bound_port();
    ck_assert_int_gt(port, 0);
    ck_assert_int_lt(port, 65536);
    int fd = sender(port);
    const size_t sizes[] = {1, 100, 1400, 1500, 0, 7};
    uint64_t t0 = tu_wall_ms(), bytes = 0;
    for (int i = 0; i < N(sizes); i++) {
        send_n(fd, sizes[i], i);
        bytes += sizes[i];
    }
    ck_assert(run_until_got(N(sizes), 2000));
    uint64_t t1 = tu_wall_ms();
    tu_run_for(&loop, 20);
    ck_assert_int_eq(ngot, N(sizes));
    ck_assert_int_eq(bad_arg, 0);
    for (int i = 0; i < N(sizes); i++) {
        check_got(i, sizes[i], i);
        ck_assert_uint_ge(got[i].recv_ms, t0);
        ck_assert_uint_le(got[i].recv_ms, t1);
    }
    ck_assert_uint_eq(stats.received, N(sizes));
    ck_assert_uint_eq(stats.received_bytes, bytes);
    ck_assert_uint_eq(stats.rejected[BF_R_oversize], 0);
    close(fd);
    finish();
}
END_TEST

/* Many datagrams, read in recvmmsg batches (16 at most), in order. They go
 * in rounds of 40, well within the default socket buffer. */
START_TEST(test_receive_many_in_order)
{
    start("127.0.0.1:0", 1500);
    int fd = sender(bound_port());
    for (int round = 0; round < 5; round++) {
        for (int i = round * 40; i < (round + 1) * 40; i++)
            send_n(fd, (size_t)(i % 50) + 10, i);
        ck_assert(run_until_got((round + 1) * 40, 3000));
    }
    tu_run_for(&loop, 20);
    ck_assert_int_eq(ngot, 200);
    for (int i = 0; i < 200; i++)
        check_got(i, (size_t)(i % 50) + 10, i);
    ck_assert_uint_eq(stats.received, 200);
    close(fd);
    finish();
}
END_TEST

/* Larger than max_datagram: counted (received and rejected.oversize), the
 * callback not called; exactly max_datagram is delivered. */
START_TEST(test_receive_oversize)
{
    start("127.0.0.1:0", 100);
    int fd = sender(bound_port());
    send_n(fd, 101, 0);
    send_n(fd, 100, 1);
    send_n(fd, 60000, 2);
    send_n(fd, 99, 3);
    ck_assert(run_until_got(2, 2000));
    tu_run_for(&loop, 30);
    ck_assert_int_eq(ngot, 2);
    check_got(0, 100, 1);
    check_got(1, 99, 3);
    ck_assert_uint_eq(stats.rejected[BF_R_oversize], 2);
    ck_assert_uint_eq(stats.received, 4);
    ck_assert_uint_eq(stats.received_bytes, 101 + 100 + 60000 + 99);
    close(fd);
    finish();
}
END_TEST

/* What the socket holds when reading stops is delivered by the drain, at
 * once; nothing is read from the loop after it. */
START_TEST(test_receive_stop_and_drain)
{
    start("127.0.0.1:0", 100);
    int fd = sender(bound_port());
    for (int i = 0; i < 40; i++) /* more than one recvmmsg call (16) */
        send_n(fd, 50, i);
    send_n(fd, 150, 40); /* oversize, on the drain path too */
    receive_stop_and_drain();
    ck_assert_int_eq(ngot, 40);
    for (int i = 0; i < 40; i++)
        check_got(i, 50, i);
    ck_assert_uint_eq(stats.received, 41);
    ck_assert_uint_eq(stats.rejected[BF_R_oversize], 1);
    ck_assert_int_eq(bad_arg, 0);
    /* Stopped: the loop reads nothing more. */
    send_n(fd, 10, 41);
    tu_run_for(&loop, 50);
    ck_assert_int_eq(ngot, 40);
    /* A second drain reads the queue again. */
    receive_stop_and_drain();
    ck_assert_int_eq(ngot, 41);
    check_got(40, 10, 41);
    receive_stop_and_drain(); /* empty: nothing */
    ck_assert_int_eq(ngot, 41);
    close(fd);
    finish();
    receive_stop_and_drain(); /* after close: no-op */
    ck_assert_int_eq(ngot, 41);
}
END_TEST

/* The receive queue gauge follows the queue (SO_MEMINFO) as of the last
 * refresh; rcvbuf is what the kernel granted. */
START_TEST(test_receive_queue_gauge)
{
    start("127.0.0.1:0", 1500);
    ck_assert_uint_gt(receive_rcvbuf_bytes(), 0);
    int fd = sender(bound_port());
    receive_refresh_gauges();
    ck_assert_uint_eq(receive_queue_bytes(), 0);
    for (int i = 0; i < 5; i++)
        send_n(fd, 1000, i);
    ck_assert_uint_eq(receive_queue_bytes(), 0); /* as of the last refresh */
    receive_refresh_gauges();
    ck_assert_uint_ge(receive_queue_bytes(), 5000);
    ck_assert_uint_eq(receive_kernel_drops(), 0);
    receive_stop_and_drain();
    ck_assert_int_eq(ngot, 5);
    receive_refresh_gauges();
    ck_assert_uint_eq(receive_queue_bytes(), 0);
    for (int i = 0; i < 5; i++)
        send_n(fd, 1000, i);
    receive_refresh_gauges();
    uint64_t queued = receive_queue_bytes();
    ck_assert_uint_ge(queued, 5000);
    close(fd);
    finish();
    receive_refresh_gauges(); /* closed: leaves the gauges alone */
    ck_assert_uint_eq(receive_queue_bytes(), queued);
}
END_TEST

/* ---- listen strings ---------------------------------------------------- */

/* A few the rule refuses (the full table is test_addr.c's), each named in
 * the error. */
static const char *const bad_listen[] = {
    "", "127.0.0.1", "127.0.0.1:", ":5000", "127.0.0.1:65536", "127.0.0.1:-1",
    "127.0.0.1:12x", "256.0.0.1:5000", "::1:5000", "[::1:5000", "x:1",
};

START_TEST(test_receive_bad_listen)
{
    char err[256] = "";
    receive_opts o = opts_for(bad_listen[_i], 1500);
    int rc = receive_start(&loop, &o, err, sizeof(err));
    ck_assert_int_eq(rc, UV_EINVAL);
    char want[128];
    snprintf(want, sizeof(want), "'%s' is not HOST:PORT or unix:/PATH", bad_listen[_i]);
    ck_assert_msg(strstr(err, want) != NULL, "err '%s'", err);
    ck_assert_int_eq(ngot, 0);
    finish(); /* receive_close after a failed start frees what it took */
}
END_TEST

/* localhost is 127.0.0.1, as for the shims. */
START_TEST(test_receive_localhost)
{
    start("localhost:0", 1500);
    ck_assert_int_eq(strncmp(receive_address(), "127.0.0.1:", 10), 0);
    int fd = sender(bound_port());
    send_n(fd, 10, 0);
    ck_assert(run_until_got(1, 2000));
    check_got(0, 10, 0);
    close(fd);
    finish();
}
END_TEST

/* A port in use: the bind error, named. */
START_TEST(test_receive_addr_in_use)
{
    int busy = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(busy, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(busy, (struct sockaddr *)&sa, &sl), 0);
    char listen[64], err[256] = "";
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", ntohs(sa.sin_port));
    receive_opts o = opts_for(listen, 1500);
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EADDRINUSE);
    ck_assert_msg(strstr(err, "binding") && strstr(err, listen), "err '%s'", err);
    close(busy);
    finish();
}
END_TEST

/* IPv6 loopback, when the host has it: "[::1]:PORT". */
START_TEST(test_receive_ipv6)
{
    int probe = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    s6.sin6_addr = in6addr_loopback;
    int have = probe >= 0 && bind(probe, (struct sockaddr *)&s6, sizeof(s6)) == 0;
    if (probe >= 0)
        close(probe);
    if (!have) { /* no IPv6 here: nothing to test */
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        return;
    }
    start("[::1]:0", 1500);
    const char *a = receive_address();
    ck_assert_int_eq(strncmp(a, "[::1]:", 6), 0);
    int port = atoi(a + 6);
    ck_assert_int_gt(port, 0);
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    s6.sin6_port = htons((uint16_t)port);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&s6, sizeof(s6)), 0);
    send_n(fd, 33, 0);
    ck_assert(run_until_got(1, 2000));
    check_got(0, 33, 0);
    close(fd);
    finish();
}
END_TEST

/* ---- socket activation ------------------------------------------------- */

/* A socket of type on 127.0.0.1 (an ephemeral port); *port gets it. */
static int local_socket(int type, int *port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Move whatever is on fd 3 aside (-1: nothing) and put fd there, with
 * LISTEN_FDS=1 and LISTEN_PID for this process, as systemd would. No
 * ck_assert once fd 3 changed: deactivate checks that dup2 worked. */
static int moved_to_3;

static int activate(int fd)
{
    int aside = fcntl(3, F_DUPFD_CLOEXEC, 100);
    moved_to_3 = dup2(fd, 3) == 3;
    close(fd);
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pid, 1);
    return aside;
}

/* Put fd 3 back as it was. */
static void deactivate(int aside)
{
    if (aside >= 0) {
        dup2(aside, 3);
        close(aside);
    } else {
        close(3);
    }
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    ck_assert_msg(moved_to_3, "dup2 to fd 3 failed");
}

START_TEST(test_receive_socket_activation)
{
    int port, port2;
    int fd = local_socket(SOCK_DGRAM, &port);
    /* A buffer systemd set (ReceiveBuffer=) larger than asked for is kept.
     * (SO_RCVBUF: no privilege needed below net.core.rmem_max.) */
    int big = 150000;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big)), 0);
    int s = sender(port);
    /* Queued before the daemon starts (a restart): read after it. */
    send_n(s, 20, 0);
    int other = local_socket(SOCK_DGRAM, &port2); /* --listen is ignored */
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port2);

    int aside = activate(fd);
    /* From here to deactivate: no ck_assert (fd 3 may be Check's). */
    char err[256] = "";
    receive_opts o = opts_for(listen, 1500);
    int rc = receive_start(&loop, &o, err, sizeof(err));
    char addr[64];
    snprintf(addr, sizeof(addr), "%s", receive_address());
    int env_left = getenv("LISTEN_FDS") != NULL || getenv("LISTEN_PID") != NULL;
    int rcvbuf = 0;
    socklen_t rl = sizeof(rcvbuf);
    getsockopt(3, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &rl);
    uint64_t gauge = receive_rcvbuf_bytes();
    if (rc == 0) {
        send(s, "abc", 3, 0);
        run_until_got(2, 2000);
    }
    int closed = close_all();
    int fd3_open = fcntl(3, F_GETFD) >= 0;
    deactivate(aside);

    ck_assert_msg(rc == 0, "receive_start: %s", err);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    ck_assert_str_eq(addr, want);
    ck_assert_int_eq(env_left, 0); /* unset, not passed on to children */
    ck_assert_int_eq(rcvbuf, 2 * big);
    ck_assert_uint_eq(gauge, (uint64_t)rcvbuf);
    ck_assert_int_eq(ngot, 2);
    check_got(0, 20, 0);
    ck_assert_uint_eq(got[1].len, 3);
    ck_assert_int_eq(memcmp(got[1].buf, "abc", 3), 0);
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(fd3_open, 0); /* adopted, so closed with the handle */
    close(s);
    close(other);
}
END_TEST

/* kernel_drops counts what the socket's buffer could not hold, exactly. */
START_TEST(test_receive_kernel_drops)
{
    int port;
    int fd = local_socket(SOCK_DGRAM, &port);
    int small = 4096;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    int s = sender(port);
    int aside = activate(fd);
    char err[256] = "";
    receive_opts o = opts_for("127.0.0.1:0", 1500);
    o.rcvbuf = 0; /* keep the small buffer */
    int rc = receive_start(&loop, &o, err, sizeof(err));
    uint8_t buf[200];
    memset(buf, 'x', sizeof(buf));
    int sent = 0;
    for (int i = 0; i < 300; i++)
        sent += send(s, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf);
    usleep(50 * 1000); /* let loopback's softirq finish */
    receive_stop_and_drain();
    receive_refresh_gauges();
    uint64_t drops = receive_kernel_drops(), queue = receive_queue_bytes();
    int closed = close_all();
    deactivate(aside);

    ck_assert_msg(rc == 0, "receive_start: %s", err);
    ck_assert_int_eq(sent, 300);
    ck_assert_int_gt(ngot, 0);
    ck_assert_int_lt(ngot, 300);
    ck_assert_uint_eq(drops, (uint64_t)(300 - ngot));
    ck_assert_uint_eq(queue, 0);
    ck_assert_uint_eq(stats.received, (uint64_t)ngot);
    ck_assert_int_eq(closed, 0);
    close(s);
}
END_TEST

/* A stream socket on fd 3 is refused, named, and left open. */
START_TEST(test_receive_activation_not_datagram)
{
    int port;
    int fd = local_socket(SOCK_STREAM, &port);
    ck_assert_int_eq(listen(fd, 4), 0);
    int aside = activate(fd);
    char err[256] = "";
    receive_opts o = opts_for("127.0.0.1:0", 1500);
    int rc = receive_start(&loop, &o, err, sizeof(err));
    int closed = close_all();
    int fd3_open = fcntl(3, F_GETFD) >= 0;
    deactivate(aside);

    ck_assert_int_eq(rc, UV_EINVAL);
    ck_assert_str_eq(err, "socket activation: fd 3 is not a datagram socket");
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(fd3_open, 1);
}
END_TEST

/* LISTEN_PID of another process: not ours, --listen is used. */
START_TEST(test_receive_activation_other_pid)
{
    int port;
    int fd = local_socket(SOCK_DGRAM, &port);
    int aside = activate(fd);
    setenv("LISTEN_PID", "1", 1);
    char err[256] = "";
    receive_opts o = opts_for("127.0.0.1:0", 1500);
    int rc = receive_start(&loop, &o, err, sizeof(err));
    char addr[64];
    snprintf(addr, sizeof(addr), "%s", receive_address());
    int closed = close_all();
    int fd3_open = fcntl(3, F_GETFD) >= 0;
    deactivate(aside);

    ck_assert_msg(rc == 0, "receive_start: %s", err);
    char inherited[64];
    snprintf(inherited, sizeof(inherited), "127.0.0.1:%d", port);
    ck_assert_str_ne(addr, inherited);
    ck_assert_int_eq(strncmp(addr, "127.0.0.1:", 10), 0);
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(fd3_open, 1); /* not touched */
}
END_TEST

/* ---- issue 11: loopback only; Unix datagram sockets ---------------------- */

/* Finding 3: an address beyond loopback (every interface, or one of the
 * host's) is refused unless allow_remote, and then said at warn level. */
static const char *const remote[] = {"0.0.0.0:0", "[::]:0"};

START_TEST(test_receive_remote_needs_allow)
{
    char err[256] = "";
    receive_opts o = opts_for(remote[_i], 1500);
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EINVAL);
    ck_assert_msg(strstr(err, "not a loopback address") && strstr(err, "--allow-remote"),
                  "err '%s'", err);
    ck_assert_int_eq(receive_check_listen(remote[_i], 0, err, sizeof(err)), UV_EINVAL);
    ck_assert_int_eq(receive_check_listen(remote[_i], 1, err, sizeof(err)), 0);
    finish();
    if (_i == 1) { /* no IPv6 here: the bind would fail for another reason */
        int probe = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return;
        close(probe);
    }
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o.allow_remote = 1;
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    finish();
    char *log = tu_read_file(log_path, NULL);
    ck_assert_msg(log && strstr(log, "level=warn event=listen_remote"), "log: %s",
                  log ? log : "");
    free(log);
}
END_TEST

/* A Unix datagram socket at path: a sender bound nowhere. */
static int unix_sender(void)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static ssize_t unix_send(int fd, const char *path, const void *buf, size_t len)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    return sendto(fd, buf, len, 0, (struct sockaddr *)&sun, sizeof(sun));
}

/* As unix_send, with the credentials given (root may claim others'). */
/* Send buf to path with one control message (level SOL_SOCKET). */
static ssize_t unix_send_ctl(int fd, const char *path, const void *buf, size_t len,
                             int type, const void *data, size_t datalen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    struct iovec iov = {(void *)buf, len};
    union {
        char b[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    ck_assert_uint_le(CMSG_SPACE(datalen), sizeof(ctl.b));
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr m = {.msg_name = &sun, .msg_namelen = sizeof(sun), .msg_iov = &iov,
                       .msg_iovlen = 1, .msg_control = ctl.b,
                       .msg_controllen = CMSG_SPACE(datalen)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(datalen);
    memcpy(CMSG_DATA(c), data, datalen);
    return sendmsg(fd, &m, 0);
}

static ssize_t unix_send_as(int fd, const char *path, const void *buf, size_t len,
                            uid_t uid, gid_t gid)
{
    struct ucred cred = {.pid = getpid(), .uid = uid, .gid = gid};
    return unix_send_ctl(fd, path, buf, len, SCM_CREDENTIALS, &cred, sizeof(cred));
}

/* Finding 4: --listen unix:/PATH. The socket is born 0660, datagrams come
 * intact, UDP and Unix listen together, and the file goes at close. */
START_TEST(test_receive_unix_socket)
{
    char path[100], listen[200];
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "127.0.0.1:0,unix:%s", path);
    mode_t saved = umask(0); /* the socket's mode must not depend on it */
    start(listen, 1500);
    umask(saved);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 0777, 0660);
    const char *a = receive_address();
    char want[200];
    snprintf(want, sizeof(want), ",unix:%s", path);
    ck_assert_msg(strncmp(a, "127.0.0.1:", 10) == 0 && strstr(a, want), "addr '%s'", a);
    int u = unix_sender(), s = sender(bound_port());
    uint8_t buf[64];
    fill(buf, 40, 1);
    ck_assert_int_eq(unix_send(u, path, buf, 40), 40);
    send_n(s, 20, 2);
    ck_assert(run_until_got(2, 2000));
    int k = got[0].len == 40 ? 0 : 1;
    check_got(k, 40, 1);
    check_got(1 - k, 20, 2);
    ck_assert_uint_eq(stats.received, 2);
    /* Drain at shutdown reads the Unix socket too. */
    fill(buf, 30, 3);
    ck_assert_int_eq(unix_send(u, path, buf, 30), 30);
    receive_stop_and_drain();
    ck_assert_int_eq(ngot, 3);
    check_got(2, 30, 3);
    close(u);
    close(s);
    finish();
    ck_assert_int_eq(lstat(path, &st), -1); /* removed at close */
}
END_TEST

/* Finding 4: with --allow-uid / --allow-gid, only datagrams whose sender
 * the kernel vouches for (SCM_CREDENTIALS) pass; the rest are counted as
 * rejected.peer_not_allowed and logged with the sender. */
START_TEST(test_receive_unix_peer_not_allowed)
{
    char path[100], listen[200], uid[32], gid[32];
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "unix:%s", path);
    snprintf(uid, sizeof(uid), "4242,%u", (unsigned)getuid());
    snprintf(gid, sizeof(gid), "%u", (unsigned)getgid());
    char err[256] = "";
    receive_opts o = opts_for(listen, 1500);
    o.allow_uid = "4242"; /* not us */
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    int u = unix_sender();
    ck_assert_int_eq(unix_send(u, path, "x", 1), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.rejected[BF_R_peer_not_allowed], 1, 2000));
    ck_assert_int_eq(ngot, 0);
    ck_assert_uint_eq(stats.received, 1);
    finish();

    /* Our uid in the list: accepted; our gid alone: accepted too. */
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        o.allow_uid = round == 0 ? uid : NULL;
        o.allow_gid = round == 1 ? gid : NULL;
        ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(unix_send(u, path, "ok", 2), 2);
        ck_assert(run_until_got(round + 1, 2000));
        finish();
    }
    ck_assert_uint_eq(stats.rejected[BF_R_peer_not_allowed], 1);

    /* Root may send with any uid: the check sees the one claimed. */
    if (geteuid() == 0) {
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        o.allow_uid = "0";
        o.allow_gid = NULL;
        ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(unix_send_as(u, path, "n", 1, 65534, 65534), 1);
        ck_assert_int_eq(unix_send_as(u, path, "y", 1, 0, 0), 1);
        ck_assert(tu_run_until_u64(&loop, &stats.rejected[BF_R_peer_not_allowed], 2, 2000));
        ck_assert(run_until_got(3, 2000));
        ck_assert_int_eq(got[2].buf[0], 'y');
        finish();
        char *log = tu_read_file(log_path, NULL);
        ck_assert_msg(strstr(log, "reason=peer_not_allowed") && strstr(log, "uid=65534"),
                      "log: %s", log);
        free(log);
    }
    close(u);
    /* Names, not only numbers; a name that is no user is an error. */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o.allow_uid = "root";
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    finish();
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o.allow_uid = "no-such-user-bf";
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EINVAL);
    ck_assert_msg(strstr(err, "allow-uid") && strstr(err, "no-such-user-bf"), "%s", err);
    finish();
}
END_TEST

/* A reload changes --allow-uid/--allow-gid on the socket as it is; a name
 * that does not resolve keeps the old ones (the reload checks first with
 * receive_check_names, which names the option). --rcvbuf applies to a
 * Unix socket too. */
START_TEST(test_receive_unix_reconfigure)
{
    char path[100], listen[200], uid[32], err[256] = "";
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "unix:%s", path);
    snprintf(uid, sizeof(uid), "%u", (unsigned)getuid());
    receive_opts o = opts_for(listen, 1500);
    o.allow_uid = "4242"; /* not us */
    o.rcvbuf = 1 << 18;
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    int u = unix_sender();
    ck_assert_int_eq(unix_send(u, path, "x", 1), 1);
    ck_assert(tu_run_until_u64(&loop, &stats.rejected[BF_R_peer_not_allowed], 1, 2000));

    o.allow_uid = uid;
    o.rcvbuf = 1 << 15;
    ck_assert_int_eq(receive_reconfigure(&o, err, sizeof(err)), 0);
    ck_assert_uint_eq(receive_rcvbuf_bytes(), 2 << 15); /* smaller: always granted */
    ck_assert_int_eq(unix_send(u, path, "y", 1), 1);
    ck_assert(run_until_got(1, 2000));

    const char *bad[][3] = {{"no-such-user-bf", NULL, NULL},
                            {NULL, "no-such-group-bf", NULL},
                            {NULL, NULL, "no-such-group-bf"}};
    const char *named[] = {"allow-uid", "allow-gid", "socket-group"};
    for (int i = 0; i < 3; i++) {
        receive_opts b = o;
        b.allow_uid = bad[i][0];
        b.allow_gid = bad[i][1];
        b.socket_group = bad[i][2];
        err[0] = '\0';
        ck_assert_int_eq(receive_check_names(&b, err, sizeof(err)), UV_EINVAL);
        ck_assert_msg(strstr(err, named[i]) && strstr(err, "no-such-"), "%s", err);
        if (i < 2) /* the peers of a failed reconfigure are the old ones */
            ck_assert_int_eq(receive_reconfigure(&b, err, sizeof(err)), UV_EINVAL);
    }
    /* No id, or one past uid_t that would wrap to another (0: root). */
    const char *wide[] = {"4294967295", "4294967296", "-1"};
    for (int i = 0; i < 3; i++) {
        receive_opts b = o;
        b.allow_uid = wide[i];
        ck_assert_int_eq(receive_check_names(&b, err, sizeof(err)), UV_EINVAL);
        b.allow_uid = NULL;
        b.allow_gid = wide[i];
        ck_assert_int_eq(receive_check_names(&b, err, sizeof(err)), UV_EINVAL);
    }
    ck_assert_int_eq(receive_check_names(&o, err, sizeof(err)), 0);
    ck_assert_int_eq(unix_send(u, path, "z", 1), 1);
    ck_assert(run_until_got(2, 2000));
    ck_assert_uint_eq(stats.rejected[BF_R_peer_not_allowed], 1);
    close(u);
    finish();
}
END_TEST

static int no_room;
static int wait_room(void *arg)
{
    (void)arg;
    return no_room;
}

/* While the pipeline has no room (opts.wait), neither socket is read: the
 * datagrams wait in the kernel's queues and come once there is room. */
START_TEST(test_receive_waits_for_room)
{
    char path[100], listen[200], err[256] = "";
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "127.0.0.1:0,unix:%s", path);
    receive_opts o = opts_for(listen, 1500);
    o.wait = wait_room;
    no_room = 1;
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    int u = unix_sender(), s = sender(bound_port());
    ck_assert_int_eq(unix_send(u, path, "unix", 4), 4);
    send_n(s, 20, 2);
    ck_assert(!run_until_got(1, 200));
    ck_assert_uint_eq(stats.received, 0);
    no_room = 0;
    ck_assert(run_until_got(2, 2000));
    close(u);
    close(s);
    finish();
}
END_TEST

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* A sender that passes descriptors (SCM_RIGHTS) gets its datagram read,
 * and the daemon keeps none of them (they would add up to EMFILE). */
START_TEST(test_receive_unix_fds_not_kept)
{
    char path[100], listen[200];
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "unix:%s", path);
    start(listen, 1500);
    int u = unix_sender();
    int before = open_fds();
    for (int i = 0; i < 20; i++) {
        int pass = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(pass, 0);
        ck_assert_int_eq(unix_send_ctl(u, path, "fd", 2, SCM_RIGHTS, &pass, sizeof(pass)), 2);
        close(pass);
        /* One at a time: a Unix datagram queue holds few (max_dgram_qlen). */
        ck_assert(run_until_got(i + 1, 2000));
    }
    ck_assert_int_eq(open_fds(), before);
    close(u);
    finish();
}
END_TEST

/* A socket file left by a crashed run is replaced; a live one, or a file
 * that is no socket, is not (the start fails, naming it). */
START_TEST(test_receive_unix_stale_and_busy)
{
    char path[100], listen[200], err[256] = "";
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "unix:%s", path);
    receive_opts o = opts_for(listen, 1500);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int live = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(live, (struct sockaddr *)&sun, sizeof(sun)), 0);
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EADDRINUSE);
    ck_assert_msg(strstr(err, path) && strstr(err, "running"), "%s", err);
    finish();
    close(live); /* the file stays: stale now */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    start(listen, 1500);
    finish();
    tu_write_file(path, "precious", 8);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EEXIST);
    ck_assert_msg(strstr(err, "not a socket"), "%s", err);
    finish();
    ck_assert_int_eq(tu_file_size(path), 8);
}
END_TEST

/* A socket the daemon may not connect to (EACCES: another user's, mode
 * 0600) may be live: it is not removed, and the start fails naming why.
 * Needs root, to be another user in a child. */
START_TEST(test_receive_unix_foreign_socket_kept)
{
    if (geteuid() != 0)
        return;
    char path[100];
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int live = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(live, (struct sockaddr *)&sun, sizeof(sun)), 0);
    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_int_eq(chmod(tmpdir, 0777), 0); /* the child could unlink it */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char listen[200], err[256] = "";
        snprintf(listen, sizeof(listen), "unix:%s", path);
        receive_opts o = opts_for(listen, 1500);
        if (setgid(4242) < 0 || setuid(4242) < 0)
            _exit(10);
        int r = receive_start(&loop, &o, err, sizeof(err));
        receive_close();
        _exit(r == -EACCES && strstr(err, "not replaced") ? 0 : r == 0 ? 11 : 12);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %d", status);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    int u = unix_sender();
    ck_assert_int_eq(unix_send(u, path, "x", 1), 1); /* still the live one */
    char b[4];
    ck_assert_int_eq(recv(live, b, sizeof(b), MSG_DONTWAIT), 1);
    close(u);
    close(live);
    finish();
}
END_TEST

/* --socket-group: the socket's group (0660: its members may send). */
START_TEST(test_receive_unix_socket_group)
{
    char path[100], listen[200], group[32], err[256] = "";
    snprintf(path, sizeof(path), "%s/events.sock", tmpdir);
    snprintf(listen, sizeof(listen), "unix:%s", path);
    gid_t want = geteuid() == 0 ? 65534 : getgid(); /* root may give any group */
    snprintf(group, sizeof(group), "%u", (unsigned)want);
    receive_opts o = opts_for(listen, 1500);
    o.socket_group = group;
    ck_assert_msg(receive_start(&loop, &o, err, sizeof(err)) == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_gid, want);
    ck_assert_uint_eq(st.st_mode & 0777, 0660);
    finish();
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o.socket_group = "no-such-group-bf";
    ck_assert_int_eq(receive_start(&loop, &o, err, sizeof(err)), UV_EINVAL);
    ck_assert_msg(strstr(err, "socket-group") && strstr(err, "no such group"), "%s", err);
    finish();
}
END_TEST

/* ListenDatagram=/path: a Unix socket systemd passes is read, with the
 * senders' credentials (the daemon turns SO_PASSCRED on itself). */
START_TEST(test_receive_activation_unix)
{
    char path[100];
    snprintf(path, sizeof(path), "%s/passed.sock", tmpdir);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    int u = unix_sender();
    char uid[32];
    snprintf(uid, sizeof(uid), "%u", (unsigned)getuid());
    int aside = activate(fd);
    char err[256] = "", addr[200];
    receive_opts o = opts_for("127.0.0.1:0", 1500);
    o.allow_uid = uid;
    int rc = receive_start(&loop, &o, err, sizeof(err));
    snprintf(addr, sizeof(addr), "%s", receive_address());
    if (rc == 0) {
        unix_send(u, path, "act", 3);
        run_until_got(1, 2000);
    }
    int closed = close_all();
    deactivate(aside);

    ck_assert_msg(rc == 0, "receive_start: %s", err);
    char want[200];
    snprintf(want, sizeof(want), "unix:%s", path);
    ck_assert_str_eq(addr, want);
    ck_assert_int_eq(ngot, 1);
    ck_assert_int_eq(memcmp(got[0].buf, "act", 3), 0);
    ck_assert_int_eq(closed, 0);
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0); /* systemd's: not removed */
    close(u);
}
END_TEST

/* Finding 3 for systemd too: a passed UDP socket bound beyond loopback is
 * refused without --allow-remote. */
START_TEST(test_receive_activation_remote_needs_allow)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET}; /* 0.0.0.0, any port */
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int aside = activate(fd);
    char err[256] = "";
    receive_opts o = opts_for("127.0.0.1:0", 1500);
    int rc = receive_start(&loop, &o, err, sizeof(err));
    int closed = close_all();
    deactivate(aside);
    ck_assert_int_eq(rc, UV_EINVAL);
    ck_assert_msg(strstr(err, "socket activation") && strstr(err, "0.0.0.0") &&
                      strstr(err, "--allow-remote"), "err '%s'", err);
    ck_assert_int_eq(closed, 0);
}
END_TEST

Suite *receive_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("receive", receive_setup, receive_teardown, &tc);
    tcase_add_test(tc, test_receive_datagrams_intact);
    tcase_add_test(tc, test_receive_many_in_order);
    tcase_add_test(tc, test_receive_oversize);
    tcase_add_test(tc, test_receive_stop_and_drain);
    tcase_add_test(tc, test_receive_queue_gauge);
    tcase_add_loop_test(tc, test_receive_bad_listen, 0, N(bad_listen));
    tcase_add_test(tc, test_receive_localhost);
    tcase_add_test(tc, test_receive_addr_in_use);
    tcase_add_test(tc, test_receive_ipv6);
    tcase_add_test(tc, test_receive_socket_activation);
    tcase_add_test(tc, test_receive_kernel_drops);
    tcase_add_test(tc, test_receive_activation_not_datagram);
    tcase_add_test(tc, test_receive_activation_other_pid);
    tcase_add_loop_test(tc, test_receive_remote_needs_allow, 0, N(remote));
    tcase_add_test(tc, test_receive_unix_socket);
    tcase_add_test(tc, test_receive_unix_peer_not_allowed);
    tcase_add_test(tc, test_receive_unix_reconfigure);
    tcase_add_test(tc, test_receive_waits_for_room);
    tcase_add_test(tc, test_receive_unix_fds_not_kept);
    tcase_add_test(tc, test_receive_unix_stale_and_busy);
    tcase_add_test(tc, test_receive_unix_foreign_socket_kept);
    tcase_add_test(tc, test_receive_unix_socket_group);
    tcase_add_test(tc, test_receive_activation_unix);
    tcase_add_test(tc, test_receive_activation_remote_needs_allow);
    return s;
}
