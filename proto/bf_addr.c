/* bf_addr.c: HOST:PORT to a socket address. See bf_addr.h. */
#include "bf_addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* "1".."65535" (or "0" with BF_ADDR_BIND): 1 to 5 digits, nothing else. */
static int parse_port(const char *s, unsigned flags, unsigned *port)
{
    size_t n = strlen(s);
    unsigned long p = 0;
    if (n == 0 || n > 5)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        p = p * 10 + (unsigned long)(s[i] - '0');
    }
    if (p > 65535 || (p == 0 && !(flags & BF_ADDR_BIND)))
        return -EINVAL;
    *port = (unsigned)p;
    return 0;
}

/* "unix:/PATH": an absolute path that fits sun_path with its NUL. */
static int parse_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    size_t n = strlen(path);
    if (path[0] != '/' || n >= sizeof(sun->sun_path))
        return -EINVAL;
    memset(ss, 0, sizeof(*ss));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int bf_addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_UNIX)
        return 1;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family != AF_INET6)
        return 0;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

int bf_addr_parse(const char *s, unsigned flags, struct sockaddr_storage *ss,
                  socklen_t *len)
{
    char host[INET6_ADDRSTRLEN];
    if (strncmp(s, "unix:", 5) == 0)
        return parse_unix(s + 5, ss, len);
    const char *port, *h = s;
    size_t hlen;
    int bracketed = s[0] == '[';

    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return -EINVAL;
        hlen = (size_t)(colon - s);
        port = colon + 1;
        if (memchr(s, ':', hlen)) /* a bare IPv6 address: its port is a guess */
            return -EINVAL;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    unsigned p;
    if (parse_port(port, flags, &p) < 0)
        return -EINVAL;

    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (!bracketed && strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (!bracketed && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)p);
        *len = sizeof(*sin);
    } else if (bracketed && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)p);
        *len = sizeof(*sin6);
    } else {
        return -EINVAL;
    }
    return 0;
}
