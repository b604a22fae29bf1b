/* hex.h: lowercase hexadecimal digits, for what enrich writes (ids, ip
 * hashes, the key file) and the \xNN and \u00NN escapes of log and row,
 * and their value, for what enrich and the CLI read (%XX, 0x, hex input). */
#ifndef BF_HEX_H
#define BF_HEX_H

#include <stdint.h>
#include <string.h>

/* The digit of the low four bits of v. */
static inline char hex_digit(unsigned v)
{
    return "0123456789abcdef"[v & 15];
}

/* Two digits of byte b at p (no terminator); returns p + 2. */
static inline char *hex_byte(char *p, unsigned char b)
{
    p[0] = hex_digit(b >> 4);
    p[1] = hex_digit(b);
    return p + 2;
}

/* The eight digits of v at p, most significant first (no terminator);
 * returns p + 8. One word: the nibbles spread to bytes, each made a digit
 * with adds and a mask, instead of eight lookups. */
static inline char *hex_u32(char *p, uint32_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t x = v;
    x = (x | x << 16) & 0x0000ffff0000ffffull;
    x = (x | x << 8) & 0x00ff00ff00ff00ffull;
    x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full; /* byte i: nibble i, lowest first */
    x = __builtin_bswap64(x);                 /* byte i: nibble 7 - i */
    uint64_t letter = ((x + ones * 6) >> 4) & ones; /* 1 where the nibble is 10 to 15 */
    x += ones * '0' + letter * ('a' - '0' - 10);
    memcpy(p, &x, 8);
#else
    for (int i = 0; i < 8; i++)
        p[i] = hex_digit(v >> (28 - 4 * i));
#endif
    return p + 8;
}

/* The value of hex digit c (either case), or -1. */
static inline int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 32;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

#endif /* BF_HEX_H */
