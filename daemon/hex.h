/* hex.h: lowercase hexadecimal digits, for what enrich writes (ids, ip
 * hashes, the key file) and the \xNN and \u00NN escapes of log and row,
 * and their value, for what enrich and the CLI read (%XX, 0x, hex input). */
#ifndef BF_HEX_H
#define BF_HEX_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* The sixteen digits of the eight bytes at b, in their order (b[0]'s
 * two first; no terminator); returns p + 16. With SSE2 one register: the
 * high and low nibbles interleaved, made digits by a compare and adds. */
static inline char *hex_8bytes(char *p, const unsigned char *b)
{
#if defined(__SSE2__)
    const __m128i f = _mm_set1_epi8(0x0f);
    __m128i x = _mm_loadl_epi64((const __m128i *)(const void *)b);
    __m128i n = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), f), _mm_and_si128(x, f));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)),
                                   _mm_set1_epi8('a' - '0' - 10));
    n = _mm_add_epi8(n, _mm_add_epi8(_mm_set1_epi8('0'), letter));
    _mm_storeu_si128((__m128i *)(void *)p, n);
#else
    for (int i = 0; i < 8; i++)
        hex_byte(p + 2 * i, b[i]);
#endif
    return p + 16;
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
