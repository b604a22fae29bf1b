/* hex.h: lowercase hexadecimal digits, for what enrich writes (ids, ip
 * hashes, the key file) and the \xNN and \u00NN escapes of log and row,
 * and their value, for what enrich and the CLI read (%XX, 0x, hex input). */
#ifndef BF_HEX_H
#define BF_HEX_H

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

/* The value of hex digit c (either case), or -1. */
static inline int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 32;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

#endif /* BF_HEX_H */
