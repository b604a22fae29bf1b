/*
 * test_client.c: the C client shim (client-shim/c/bf_client.c).
 *
 * Each test sends to a UDP socket of its own bound to an ephemeral loopback
 * port and decodes what arrives, so tests can run in parallel with each
 * other and with a daemon on the default port. The fixture opens that
 * receiver (`rx`, IPv4) and a client connected to it (`c`); the teardown
 * closes both. Which addresses parse is test_addr.c's.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bf_client.h"
#include "bf_proto.h"
#include "testutil.h"

/* A receiving socket on 127.0.0.1 (or ::1); its "host:port" in addr. */
typedef struct receiver {
    int fd;
    char addr[64];
} receiver;

/* Returns 0, or -1 when the address family is not available here. */
static int receiver_open(receiver *rx, int family)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    }
    rx->fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (rx->fd < 0)
        return -1;
    if (bind(rx->fd, (struct sockaddr *)&ss, len) < 0 ||
        getsockname(rx->fd, (struct sockaddr *)&ss, &len) < 0) {
        close(rx->fd);
        return -1;
    }
    if (family == AF_INET6)
        snprintf(rx->addr, sizeof(rx->addr), "[::1]:%u",
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    else
        snprintf(rx->addr, sizeof(rx->addr), "127.0.0.1:%u",
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
    return 0;
}

/* Next datagram within timeout_ms: its length, or -1 when none came. */
static ssize_t receiver_recv(receiver *rx, uint8_t *buf, size_t cap, int timeout_ms)
{
    struct pollfd pfd = {.fd = rx->fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) != 1)
        return -1;
    return recv(rx->fd, buf, cap, MSG_DONTWAIT);
}

static void event_sample(bf_event *ev)
{
    bf_event_init(ev, BF_DATASET_image_events);
    BF_SET_STR(ev, id, "r1", 2);
    BF_SET_STR(ev, model, "flux", 4);
    BF_SET_U64(ev, start_time, 1764441205123ull);
    BF_SET_U64(ev, width, 1024);
    BF_SET_U64(ev, cached, 1);
}

static bf_client *client_open_ok(const char *addr)
{
    int err = 1;
    bf_client *opened = bf_client_open(addr, &err);
    ck_assert_msg(opened != NULL, "open %s: %s", addr ? addr : "(null)", strerror(-err));
    ck_assert_int_eq(err, 0);
    return opened;
}

static receiver rx;
static bf_client *c;

static void client_setup(void)
{
    ck_assert_int_eq(receiver_open(&rx, AF_INET), 0);
    c = client_open_ok(rx.addr);
}

static void client_teardown(void)
{
    bf_client_close(c);
    c = NULL;
    if (rx.fd >= 0)
        close(rx.fd);
}

START_TEST(test_client_send_arrives)
{
    bf_event ev;
    event_sample(&ev);
    ck_assert_int_eq(bf_client_send(c, &ev), 0);

    uint8_t buf[BF_CLIENT_MAX_DATAGRAM + 1], want[BF_CLIENT_MAX_DATAGRAM];
    ssize_t n = receiver_recv(&rx, buf, sizeof(buf), 2000);
    ck_assert_int_gt(n, 0);
    /* The worked example of PROTOCOL.md, byte for byte. */
    size_t wn = bf_encode(&ev, want, sizeof(want));
    ck_assert_uint_eq((size_t)n, wn);
    ck_assert(memcmp(buf, want, wn) == 0);

    bf_event got;
    ck_assert_int_eq(bf_decode(buf, (size_t)n, &got), BF_OK);
    ck_assert_int_eq(bf_validate(&got), BF_OK);
    ck_assert_uint_eq(got.present, ev.present);
    ck_assert_uint_eq(got.width, 1024);
    ck_assert_uint_eq(got.start_time, 1764441205123ull);
    ck_assert_uint_eq(got.model.len, 4);
    ck_assert(memcmp(got.model.ptr, "flux", 4) == 0);

    struct bf_client_stats st;
    bf_client_stats(c, &st);
    ck_assert_uint_eq(st.sent, 1);
    ck_assert_uint_eq(st.dropped + st.oversize + st.failed, 0);
}
END_TEST

START_TEST(test_client_send_ipv6)
{
    receiver rx6;
    if (receiver_open(&rx6, AF_INET6) < 0)
        return; /* no IPv6 loopback in this sandbox: nothing to test */
    bf_client *c6 = client_open_ok(rx6.addr);
    bf_event ev;
    event_sample(&ev);
    ck_assert_int_eq(bf_client_send(c6, &ev), 0);
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    ssize_t n = receiver_recv(&rx6, buf, sizeof(buf), 2000);
    ck_assert_int_gt(n, 0);
    bf_event got;
    ck_assert_int_eq(bf_decode(buf, (size_t)n, &got), BF_OK);
    ck_assert_uint_eq(got.width, 1024);
    bf_client_close(c6);
    close(rx6.fd);
}
END_TEST

START_TEST(test_client_env_addr)
{
    /* Forked test: the environment change dies with it. */
    ck_assert_int_eq(setenv(BF_CLIENT_ADDR_ENV, rx.addr, 1), 0);
    bf_client *from_env = client_open_ok(NULL);
    bf_event ev;
    event_sample(&ev);
    ck_assert_int_eq(bf_client_send(from_env, &ev), 0);
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    ck_assert_int_gt(receiver_recv(&rx, buf, sizeof(buf), 2000), 0);
    bf_client_close(from_env);

    /* Empty means unset: the default address, which opens (nothing need
     * listen there). */
    ck_assert_int_eq(setenv(BF_CLIENT_ADDR_ENV, "", 1), 0);
    bf_client_close(client_open_ok(NULL));
    ck_assert_int_eq(unsetenv(BF_CLIENT_ADDR_ENV), 0);
    bf_client_close(client_open_ok(NULL));
}
END_TEST

/* An address the rule (bf_addr_parse) refuses is -EINVAL; every form it
 * takes opens. The table of both is test_addr.c's. */
START_TEST(test_client_bad_addr)
{
    static const char *const bad[] = {
        "", "127.0.0.1:0", "::1:8190", "example.org:8190", "127.0.0.1 :8190",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int err = 0;
        ck_assert_msg(bf_client_open(bad[i], &err) == NULL, "'%s' opened", bad[i]);
        ck_assert_msg(err == -EINVAL, "'%s': err %d", bad[i], err);
    }
    /* err may be NULL. */
    ck_assert_ptr_null(bf_client_open("nope", NULL));
    bf_client_close(NULL);

    bf_client_close(client_open_ok("localhost:8190"));
    bf_client_close(client_open_ok("127.0.0.1:65535"));
}
END_TEST

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

/* No daemon: the kernel answers port unreachable, the socket reports
 * ECONNREFUSED on a later send, and the client counts a drop. It never
 * blocks (the test's timeout would catch that) and raises no signal. */
START_TEST(test_client_missing_daemon)
{
    close(rx.fd); /* the port is now (almost certainly) free */
    rx.fd = -1;
    signal(SIGPIPE, on_signal);

    bf_event ev;
    event_sample(&ev);
    struct bf_client_stats st = {0};
    int refused = 0;
    for (int i = 0; i < 200 && st.dropped == 0; i++) {
        int rc = bf_client_send(c, &ev);
        ck_assert_msg(rc == 0 || rc == -ECONNREFUSED, "send: %s", strerror(-rc));
        refused += rc == -ECONNREFUSED;
        bf_client_stats(c, &st);
        if (st.dropped == 0)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    ck_assert_uint_ge(st.dropped, 1);
    ck_assert_uint_eq(st.dropped, (uint64_t)refused);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_eq(st.oversize, 0);
    ck_assert_int_eq(got_signal, 0);
}
END_TEST

/* bf_client_check: after the last send, the refusal a next send would
 * report is there to read (a tool exits without a next send); reading it
 * clears it, and a listening daemon leaves nothing. */
START_TEST(test_client_check_reads_the_refusal)
{
    bf_event ev;
    event_sample(&ev);
    ck_assert_int_eq(bf_client_send(c, &ev), 0);
    ck_assert_int_eq(bf_client_check(c), 0); /* rx listens */
    close(rx.fd);
    rx.fd = -1;
    ck_assert_int_eq(bf_client_send(c, &ev), 0);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) { /* loopback: at once, in practice */
        rc = bf_client_check(c);
        if (rc == 0)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    ck_assert_int_eq(rc, -ECONNREFUSED);
    ck_assert_int_eq(bf_client_check(c), 0); /* cleared */
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    ck_assert_uint_eq(st.sent, 2);
    ck_assert_uint_eq(st.dropped, 0);
}
END_TEST

/* A full socket buffer is a drop, not a wait: a receiver that never reads,
 * flooded until EAGAIN/ENOBUFS. */
START_TEST(test_client_full_buffer_drops)
{
    int small = 4096;
    setsockopt(rx.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    bf_event ev;
    event_sample(&ev);
    static char big[6000];
    memset(big, 'e', sizeof(big));
    BF_SET_STR(&ev, error_message, big, sizeof(big));

    /* Loopback mostly drops at the receiver once its buffer is full, so a
     * send may succeed while the datagram is lost; what matters is that no
     * call waits (the test's timeout) and each is counted once. */
    enum { FLOOD = 5000 };
    for (int i = 0; i < FLOOD; i++) {
        int rc = bf_client_send(c, &ev);
        ck_assert_msg(rc == 0 || rc == -EAGAIN || rc == -ENOBUFS, "send: %s",
                      strerror(-rc));
    }
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    ck_assert_uint_eq(st.sent + st.dropped, FLOOD);
    ck_assert_uint_eq(st.failed + st.oversize, 0);
}
END_TEST

START_TEST(test_client_oversize)
{
    bf_event ev;
    event_sample(&ev);
    static char big[BF_CLIENT_MAX_DATAGRAM];
    memset(big, 'x', sizeof(big));
    BF_SET_STR(&ev, error_message, big, sizeof(big));
    ck_assert_int_eq(bf_client_send(c, &ev), -EMSGSIZE);

    /* The largest error_message that still fits goes out whole. */
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM + 16];
    size_t fits = 0;
    for (size_t len = sizeof(big); len > 0; len--) {
        ev.error_message.len = len;
        if (bf_client_encode(&ev, buf, BF_CLIENT_MAX_DATAGRAM)) {
            fits = len;
            break;
        }
    }
    ck_assert_uint_gt(fits, 8000);
    ck_assert_int_eq(bf_client_send(c, &ev), 0);
    ssize_t n = receiver_recv(&rx, buf, sizeof(buf), 2000);
    ck_assert_int_le(n, BF_CLIENT_MAX_DATAGRAM);
    ck_assert_int_ge(n, BF_CLIENT_MAX_DATAGRAM - 1); /* a length varint byte */
    ev.error_message.len = fits + 1;
    ck_assert_int_eq(bf_client_send(c, &ev), -EMSGSIZE);

    struct bf_client_stats st;
    bf_client_stats(c, &st);
    ck_assert_uint_eq(st.oversize, 2);
    ck_assert_uint_eq(st.sent, 1);
    ck_assert_int_eq(receiver_recv(&rx, buf, sizeof(buf), 100), -1);
}
END_TEST

/* Send ev with the given prompt and return the prompt that arrived. */
static size_t send_prompt(const char *prompt, size_t len, uint8_t *buf, size_t cap,
                          const char **out)
{
    bf_event ev;
    event_sample(&ev);
    BF_SET_STR(&ev, prompt, prompt, len);
    ck_assert_int_eq(bf_client_send(c, &ev), 0);
    ssize_t n = receiver_recv(&rx, buf, cap, 2000);
    ck_assert_int_gt(n, 0);
    bf_event got;
    ck_assert_int_eq(bf_decode(buf, (size_t)n, &got), BF_OK);
    ck_assert(BF_HAS(&got, prompt));
    *out = got.prompt.ptr;
    return got.prompt.len;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

START_TEST(test_client_prompt_cut)
{
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    const char *got;
    size_t n;

    /* 1-, 2-, 3- and 4-byte characters in turn, 200 of them: the cut falls
     * after character 120 whatever its width. */
    static const char *const chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac",
                                        "\xf0\x9f\x90\x88"};
    for (size_t shift = 0; shift < 4; shift++) {
        char prompt[1024];
        size_t len = 0, len120 = 0;
        for (size_t i = 0; i < 200; i++) {
            const char *ch = chars[(i + shift) % 4];
            memcpy(prompt + len, ch, strlen(ch));
            len += strlen(ch);
            if (i == BF_CLIENT_PROMPT_CHARS - 1)
                len120 = len;
        }
        n = send_prompt(prompt, len, buf, sizeof(buf), &got);
        ck_assert_uint_eq(n, len120);
        ck_assert_uint_eq(utf8_chars(got, n), BF_CLIENT_PROMPT_CHARS);
        ck_assert(memcmp(got, prompt, n) == 0);
    }

    /* Exactly 120 characters, and fewer: unchanged. */
    char p120[BF_CLIENT_PROMPT_CHARS * 2];
    for (size_t i = 0; i < BF_CLIENT_PROMPT_CHARS; i++)
        memcpy(p120 + 2 * i, "\xc3\xa9", 2);
    n = send_prompt(p120, sizeof(p120), buf, sizeof(buf), &got);
    ck_assert_uint_eq(n, sizeof(p120));
    n = send_prompt("short", 5, buf, sizeof(buf), &got);
    ck_assert_uint_eq(n, 5);
    n = send_prompt("", 0, buf, sizeof(buf), &got);
    ck_assert_uint_eq(n, 0);

    /* A prompt far over the datagram size is cut, not oversize. */
    static char huge[20000];
    memset(huge, 'h', sizeof(huge));
    n = send_prompt(huge, sizeof(huge), buf, sizeof(buf), &got);
    ck_assert_uint_eq(n, BF_CLIENT_PROMPT_CHARS);

    /* Invalid bytes (stray continuation bytes) count as one character each,
     * as the daemon counts them (bf_utf8_prefix), so both cut alike. */
    char odd[300];
    memset(odd, 'o', sizeof(odd));
    odd[119] = (char)0x80;
    odd[120] = (char)0x80;
    n = send_prompt(odd, sizeof(odd), buf, sizeof(buf), &got);
    ck_assert_uint_eq(n, 120);

    /* The caller's event is not changed by the cut. */
    bf_event ev;
    event_sample(&ev);
    BF_SET_STR(&ev, prompt, huge, sizeof(huge));
    bf_client_send(c, &ev);
    ck_assert_uint_eq(ev.prompt.len, sizeof(huge));
}
END_TEST

typedef struct sender_arg {
    bf_client *c;
    int count;
} sender_arg;

static void *sender_main(void *p)
{
    sender_arg *a = p;
    bf_event ev;
    event_sample(&ev);
    for (int i = 0; i < a->count; i++)
        bf_client_send(a->c, &ev);
    return NULL;
}

/* One client shared by threads: every send is counted exactly once. */
START_TEST(test_client_threads)
{
    enum { THREADS = 4, EACH = 2000 };
    pthread_t t[THREADS];
    sender_arg arg = {c, EACH};
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, sender_main, &arg), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    ck_assert_uint_eq(st.sent + st.dropped + st.oversize + st.failed,
                      THREADS * EACH);
    ck_assert_uint_eq(st.oversize + st.failed, 0);
}
END_TEST

/* ---- unix:/PATH (issue 11, finding 4) ----------------------------------- */

/* A Unix datagram socket bound at path (mode of the umask). */
static int unix_receiver(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

/* Open needs no daemon; with none, a send is a counted drop (ENOENT); the
 * datagram then arrives intact; a daemon that restarts (a new socket at
 * the same path) is reached without reopening the client; a full queue
 * is EAGAIN, a drop, never a wait. */
START_TEST(test_client_unix)
{
    char dir[64], path[100], addr[120];
    tu_mkdtemp(dir, sizeof(dir), "client");
    snprintf(path, sizeof(path), "%s/events.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s", path);
    bf_client *u = client_open_ok(addr);
    bf_event ev;
    event_sample(&ev);
    ck_assert_int_eq(bf_client_send(u, &ev), -ENOENT);
    struct bf_client_stats st;
    bf_client_stats(u, &st);
    ck_assert_uint_eq(st.dropped, 1);

    int r1 = unix_receiver(path);
    ck_assert_int_eq(bf_client_send(u, &ev), 0);
    receiver ur = {.fd = r1};
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM], want[BF_CLIENT_MAX_DATAGRAM];
    ssize_t n = receiver_recv(&ur, buf, sizeof(buf), 2000);
    size_t wn = bf_encode(&ev, want, sizeof(want));
    ck_assert_int_eq(n, (ssize_t)wn);
    ck_assert_int_eq(memcmp(buf, want, wn), 0);

    close(r1); /* the daemon stops; its socket file stays */
    ck_assert_int_eq(bf_client_send(u, &ev), -ECONNREFUSED);
    unlink(path);
    int r2 = unix_receiver(path); /* and a new one starts */
    ck_assert_int_eq(bf_client_send(u, &ev), 0);
    ur.fd = r2;
    ck_assert_int_gt(receiver_recv(&ur, buf, sizeof(buf), 2000), 0);

    enum { FLOOD = 2000 };
    for (int i = 0; i < FLOOD; i++) { /* r2 never reads again */
        int rc = bf_client_send(u, &ev);
        ck_assert_msg(rc == 0 || rc == -EAGAIN, "send: %s", strerror(-rc));
    }
    bf_client_stats(u, &st);
    ck_assert_uint_gt(st.dropped, 2); /* the queue filled */
    ck_assert_uint_eq(st.sent + st.dropped, FLOOD + 4);
    ck_assert_uint_eq(st.failed + st.oversize, 0);
    close(r2);
    bf_client_close(u);
    tu_rmtree(dir);
}
END_TEST

Suite *client_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("client", client_setup, client_teardown, &tc);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_client_send_arrives);
    tcase_add_test(tc, test_client_send_ipv6);
    tcase_add_test(tc, test_client_env_addr);
    tcase_add_test(tc, test_client_bad_addr);
    tcase_add_test(tc, test_client_missing_daemon);
    tcase_add_test(tc, test_client_check_reads_the_refusal);
    tcase_add_test(tc, test_client_full_buffer_drops);
    tcase_add_test(tc, test_client_oversize);
    tcase_add_test(tc, test_client_prompt_cut);
    tcase_add_test(tc, test_client_threads);
    tcase_add_test(tc, test_client_unix);
    return s;
}
