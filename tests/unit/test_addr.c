/*
 * test_addr.c: proto/bf_addr.c, the HOST:PORT rule of the daemon's
 * --listen and the shims' addresses, as two tables: must_parse (with the
 * address and port each must give) and must_not_parse; and which
 * addresses are loopback.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "bf_addr.h"
#include "testutil.h"

static const struct {
    const char *s;
    unsigned flags;
    int family;
    const char *host; /* as inet_ntop writes it */
    unsigned port;
} must_parse[] = {
    {"127.0.0.1:8190", 0, AF_INET, "127.0.0.1", 8190},
    {"10.1.2.3:1", 0, AF_INET, "10.1.2.3", 1},
    {"0.0.0.0:65535", 0, AF_INET, "0.0.0.0", 65535},
    {"localhost:8190", 0, AF_INET, "127.0.0.1", 8190},
    {"[::1]:8190", 0, AF_INET6, "::1", 8190},
    {"[2001:db8::1]:443", 0, AF_INET6, "2001:db8::1", 443},
    {"[::ffff:127.0.0.1]:9", 0, AF_INET6, "::ffff:127.0.0.1", 9},
    {"127.0.0.1:08190", 0, AF_INET, "127.0.0.1", 8190}, /* digits, as written */
    /* Port 0 when binding: the kernel picks (the tests' --listen). */
    {"127.0.0.1:0", BF_ADDR_BIND, AF_INET, "127.0.0.1", 0},
    {"localhost:0", BF_ADDR_BIND, AF_INET, "127.0.0.1", 0},
    {"[::1]:0", BF_ADDR_BIND, AF_INET6, "::1", 0},
    {"127.0.0.1:8190", BF_ADDR_BIND, AF_INET, "127.0.0.1", 8190},
    /* Unix datagram sockets (issue 11): an absolute path; host is the path. */
    {"unix:/run/birdfeeder/events.sock", 0, AF_UNIX, "/run/birdfeeder/events.sock", 0},
    {"unix:/x", BF_ADDR_BIND, AF_UNIX, "/x", 0},
    {"unix:/a b:c,d", 0, AF_UNIX, "/a b:c,d", 0},
    {"unix:/012345678901234567890123456789012345678901234567890123456789012345678901"
     "2345678901234567890123456789012345",
     0, AF_UNIX,
     "/012345678901234567890123456789012345678901234567890123456789012345678901"
     "2345678901234567890123456789012345", 0}, /* 107 bytes: the most */
};

static const struct {
    const char *s;
    unsigned flags;
} must_not_parse[] = {
    {"", 0}, {"127.0.0.1", 0}, {"127.0.0.1:", 0}, {":8190", 0},
    {"127.0.0.1:0", 0},               /* port 0 only when binding */
    {"localhost:0", 0}, {"[::1]:0", 0},
    {"127.0.0.1:65536", 0}, {"127.0.0.1:65536", BF_ADDR_BIND},
    {"127.0.0.1:123456", BF_ADDR_BIND}, {"127.0.0.1:-1", BF_ADDR_BIND},
    {"127.0.0.1:+80", 0}, {"127.0.0.1:80x", 0}, {"127.0.0.1:0x50", 0},
    {"127.0.0.1: 80", 0}, {"127.0.0.1 :8190", 0}, {" 127.0.0.1:8190", 0},
    {"127.0.0.1:8190 ", 0},
    {"256.0.0.1:8190", 0}, {"1.2.3:80", 0}, {"1.2.3.4.5:80", 0},
    {"[::1]", 0}, {"[::1", 0}, {"[::1]8190", 0}, {"[::1]:", 0}, {"[::1]:80:80", 0},
    {"::1:8190", BF_ADDR_BIND},       /* bare IPv6: brackets required */
    {"[]:8190", 0}, {"[127.0.0.1]:8190", 0}, {"[localhost]:8190", 0},
    {"[fe80::1%lo]:8190", 0},         /* no zone index */
    {"example.org:8190", 0},          /* no name lookups */
    {"LOCALHOST:8190", 0}, {"localhost.localdomain:8190", 0}, {"x:1", BF_ADDR_BIND},
    {"[0123456789012345678901234567890123456789012345678]:1", 0},
    {"unix:", 0}, {"unix:relative.sock", 0}, {"UNIX:/x", 0}, {"unix:@abstract", 0},
    {"unix:/012345678901234567890123456789012345678901234567890123456789012345678901"
     "23456789012345678901234567890123456", 0}, /* 108 bytes: no room for the NUL */
};


START_TEST(test_addr_must_parse)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const char *s = must_parse[_i].s;
    ck_assert_msg(bf_addr_parse(s, must_parse[_i].flags, &ss, &len) == 0, "'%s' rejected", s);
    ck_assert_int_eq(ss.ss_family, must_parse[_i].family);
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *a = (struct sockaddr_un *)&ss;
        ck_assert_uint_eq(len, offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1);
        ck_assert_str_eq(a->sun_path, must_parse[_i].host);
        return;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        ck_assert_uint_eq(len, sizeof(*a));
        ck_assert_ptr_nonnull(inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)));
        port = ntohs(a->sin_port);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        ck_assert_uint_eq(len, sizeof(*a));
        ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)));
        ck_assert_uint_eq(a->sin6_scope_id, 0);
        port = ntohs(a->sin6_port);
    }
    ck_assert_str_eq(host, must_parse[_i].host);
    ck_assert_uint_eq(port, must_parse[_i].port);
}
END_TEST

START_TEST(test_addr_must_not_parse)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const char *s = must_not_parse[_i].s;
    int rc = bf_addr_parse(s, must_not_parse[_i].flags, &ss, &len);
    ck_assert_msg(rc == -EINVAL, "'%s' (flags %u): %d", s, must_not_parse[_i].flags, rc);
}
END_TEST

/* Loopback: what only this host can reach (--metrics-listen's rule). */
static const struct {
    const char *s;
    int loopback;
} loopbacks[] = {
    {"127.0.0.1:9190", 1}, {"127.255.255.254:1", 1}, {"localhost:9190", 1},
    {"[::1]:9190", 1}, {"[::ffff:127.0.0.1]:9190", 1},
    {"unix:/run/birdfeeder/events.sock", 1}, /* a Unix socket: local by nature */
    {"0.0.0.0:9190", 0}, {"[::]:9190", 0}, {"128.0.0.1:9190", 0},
    {"126.255.255.255:1", 0}, {"10.0.0.1:9190", 0}, {"[::2]:9190", 0},
    {"[::ffff:10.0.0.1]:9190", 0}, {"[::127.0.0.1]:9190", 0}, {"[fe80::1]:9190", 0},
};

START_TEST(test_addr_is_loopback)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert_int_eq(bf_addr_parse(loopbacks[_i].s, BF_ADDR_BIND, &ss, &len), 0);
    ck_assert_msg(bf_addr_is_loopback((struct sockaddr *)&ss) == loopbacks[_i].loopback,
                  "%s", loopbacks[_i].s);
}
END_TEST

Suite *addr_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("addr", NULL, NULL, &tc);
    tcase_add_loop_test(tc, test_addr_must_parse, 0, N(must_parse));
    tcase_add_loop_test(tc, test_addr_must_not_parse, 0, N(must_not_parse));
    tcase_add_loop_test(tc, test_addr_is_loopback, 0, N(loopbacks));
    return s;
}
