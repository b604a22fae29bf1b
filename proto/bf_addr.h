/*
 * bf_addr.h: the HOST:PORT rule, one parser for the daemon's --listen, the
 * C shim's address ($BIRDFEEDER_ADDR, bf_client_open) and so the CLI's
 * --to. The rule (proto/PROTOCOL.md, "Addresses"):
 *
 *   A.B.C.D:PORT     a numeric IPv4 address (four decimal parts)
 *   [IPv6]:PORT      a numeric IPv6 address, in brackets (no zone index)
 *   localhost:PORT   127.0.0.1
 *   unix:/PATH       a Unix datagram socket at an absolute path (at most
 *                    107 bytes): the daemon can tell which user sent what
 *
 * PORT is 1 to 65535 in decimal digits only; 0 ("any free port") only when
 * binding (BF_ADDR_BIND). Nothing else parses: no host names, since a name
 * lookup could block the service the shim runs in, and no spaces.
 *
 * libc only (the C shim links it); never allocates.
 */
#ifndef BF_ADDR_H
#define BF_ADDR_H

#include <sys/socket.h>

/* Flags of bf_addr_parse. */
#define BF_ADDR_BIND 1u /* port 0 allowed: the kernel picks a free port */

/* Is sa a loopback address: 127.0.0.0/8, ::1, an IPv4-mapped
 * ::ffff:127.x.y.z, or a Unix socket (local by nature)? Anything else
 * (0.0.0.0 and :: included) can be reached from other hosts. */
int bf_addr_is_loopback(const struct sockaddr *sa);

/* Parse s into *ss and its length into *len (AF_INET, AF_INET6 or
 * AF_UNIX). Returns 0, or -EINVAL when s does not follow the rule (*ss and
 * *len are then unspecified). */
int bf_addr_parse(const char *s, unsigned flags, struct sockaddr_storage *ss,
                  socklen_t *len);

#endif /* BF_ADDR_H */
