/* hex.h: lowercase hexadecimal digits, for what enrich writes (ids, ip
 * hashes, the key file) and the \xNN and \u00NN escapes of log and row. */
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

#endif /* BF_HEX_H */
