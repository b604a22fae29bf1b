/* row.c: NDJSON row writer. See row.h. */
#include "row.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "hex.h"
#include "stats.h"

static const char *const image_columns[] = {
    "id", "user_id", "username", "tier", "model", "provider", "start_time",
    "end_time", "duration_ms", "status", "error_message", "prompt", "width",
    "height", "steps", "cached", "cost_usd", "referrer", "ip", "ip_hash", NULL};
static const char *const llm_columns[] = {
    "id", "user_id", "username", "tier", "model", "provider", "start_time",
    "end_time", "duration_ms", "status", "error_message", "prompt_tokens",
    "completion_tokens", "cached_tokens", "total_tokens", "stream", "cached",
    "cost_usd", "referrer", "ip", "ip_hash", NULL};

const char *const *row_columns(unsigned dataset)
{
    switch (dataset) {
    case BF_DATASET_image_events: return image_columns;
    case BF_DATASET_llm_events: return llm_columns;
    default: return NULL;
    }
}

size_t row_max_bytes(size_t max_datagram)
{
    /* 6x for escapes, plus ~30 columns of names, numbers and timestamps. */
    return max_datagram * 6 + 2048;
}

/* Civil date from days since 1970-01-01 (H. Hinnant's algorithm): plain
 * integer arithmetic, no gmtime_r, no time zone lookups; this runs twice
 * per row. */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400) + (*m <= 2);
}

/* "00".."99": numbers are written two digits at a time. */
static const char digits2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static void put2(char *p, unsigned v) /* v < 100 */
{
    memcpy(p, digits2 + 2 * v, 2);
}

/* The date of the last day formatted on this thread ("YYYY-MM-DD "): a
 * row's two times, and the rows of a batch, fall on the same day. */
static _Thread_local struct {
    uint64_t day; /* days since 1970-01-01, plus one; 0: none yet */
    char text[11];
} date_cache;

/* The last second one caller formatted, "YYYY-MM-DD HH:MM:SS." (20 bytes):
 * rows come in the order of their start times, about a second's worth of
 * them per second; end times mostly miss. */
typedef struct sec_memo {
    uint64_t secs; /* seconds since 1970-01-01, plus one; 0: none yet */
    char text[20];
} sec_memo;

static _Thread_local sec_memo start_memo, end_memo, other_memo;

/* "YYYY-MM-DD HH:MM:SS.mmm" at out (23 bytes, no terminator); inline in
 * row_format, which writes two per row, each with its own memo. */
static inline __attribute__((always_inline)) void put_time(char *out, uint64_t ms, sec_memo *m)
{
    uint64_t secs = ms / 1000;
    if (m->secs != secs + 1) {
        uint64_t day = secs / 86400;
        if (date_cache.day != day + 1) {
            int y;
            unsigned mo, d;
            civil_from_days((int64_t)day, &y, &mo, &d);
            put2(date_cache.text, (unsigned)y / 100 % 100);
            put2(date_cache.text + 2, (unsigned)y % 100);
            date_cache.text[4] = '-';
            put2(date_cache.text + 5, mo);
            date_cache.text[7] = '-';
            put2(date_cache.text + 8, d);
            date_cache.text[10] = ' ';
            date_cache.day = day + 1;
        }
        char *t = m->text;
        memcpy(t, date_cache.text, 11);
        unsigned sod = (unsigned)(secs - day * 86400), h = sod / 3600,
                 rest = sod - h * 3600, mi = rest / 60;
        put2(t + 11, h);
        t[13] = ':';
        put2(t + 14, mi);
        t[16] = ':';
        put2(t + 17, rest - mi * 60);
        t[19] = '.';
        m->secs = secs + 1;
    }
    memcpy(out, m->text, 20);
    unsigned frac = (unsigned)(ms - secs * 1000);
    out[20] = (char)('0' + frac / 100);
    put2(out + 21, frac % 100);
}

void row_format_time(char *out, uint64_t ms)
{
    put_time(out, ms, &other_memo);
    out[23] = '\0';
}

static char *put_lit(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define LIT(p, s) put_lit(p, s, sizeof(s) - 1)

/* 10^n for n = 0 to 19. */
static const uint64_t pow10_u64[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
    100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
    10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
    100000000000000000ull, 1000000000000000000ull, 10000000000000000000ull};

/* Digits in v (1 for 0): from its bit length, 1233 / 4096 being just under
 * log10(2), then one compare. */
static inline unsigned count_digits(uint64_t v)
{
    uint64_t w = v | 1;
    unsigned t = (unsigned)(64 - __builtin_clzll(w)) * 1233 >> 12;
    return t + (w >= pow10_u64[t]);
}

/* The n lowest decimal digits of v (leading zeros included) at p, written
 * from the right two at a time. */
static inline void put_digits(char *p, uint64_t v, unsigned n)
{
    char *q = p + n;
    for (; n >= 2; n -= 2) {
        q -= 2;
        put2(q, (unsigned)(v % 100));
        v /= 100;
    }
    if (n)
        q[-1] = (char)('0' + v % 10);
}

/* The n (at most 8) lowest decimal digits of v < 10^8, leading zeros
 * included, at p: eight digits from 32-bit halves written to a word, the
 * last n stored as a whole word (out has room past them). */
static inline void put_digits8(char *p, unsigned v, unsigned n)
{
    char w[16];
    memset(w + 8, '0', 8); /* stored past the digits, then overwritten */
    unsigned hi = v / 10000, lo = v % 10000;
    put2(w, hi / 100);
    put2(w + 2, hi % 100);
    put2(w + 4, lo / 100);
    put2(w + 6, lo % 100);
    memcpy(p, w + 8 - n, 8);
}

/* v in decimal. Below 10^4 (sizes, steps, token counts) and 10^6
 * (durations) by compares; below 10^8 by put_digits8. */
static inline __attribute__((always_inline)) char *put_u64(char *p, uint64_t v)
{
    /* Sizes, steps and token counts: below 10,000, by compares. */
    if (v < 100) {
        if (v < 10) {
            *p = (char)('0' + v);
            return p + 1;
        }
        put2(p, (unsigned)v);
        return p + 2;
    }
    if (v < 10000) {
        unsigned hi = (unsigned)v / 100, lo = (unsigned)v % 100;
        if (hi < 10) {
            *p = (char)('0' + hi);
            put2(p + 1, lo);
            return p + 3;
        }
        put2(p, hi);
        put2(p + 2, lo);
        return p + 4;
    }
    if (v < 1000000) { /* durations: five or six digits, the last four of lo */
        unsigned hi = (unsigned)v / 10000, lo = (unsigned)v % 10000;
        if (hi < 10) {
            *p++ = (char)('0' + hi);
        } else {
            put2(p, hi);
            p += 2;
        }
        put2(p, lo / 100);
        put2(p + 2, lo % 100);
        return p + 4;
    }
    unsigned n = count_digits(v);
    if (v < 100000000) {
        put_digits8(p, (unsigned)v, n);
    } else {
        put_digits(p, v, n);
    }
    return p + n;
}

/* Cost in USD as a plain decimal with at most 12 places ("0.000217"):
 * rounded to a picodollar, formatted with integers (snprintf's %g is the
 * dearest call in a row otherwise, and may choose exponent notation). The
 * fraction's trailing zeros go 6, 3, 2 and 1 at a time (at most 11 of
 * them: four tests), then its digits, leading zeros included. */
static char *put_cost(char *p, double usd)
{
    if (!(usd > 0) || usd >= 1e7) { /* 0, NaN, or not a plausible cost */
        *p++ = '0';
        return p;
    }
    uint64_t pico = (uint64_t)(usd * 1e12 + 0.5);
    uint64_t whole = pico / 1000000000000ull, frac = pico - whole * 1000000000000ull;
    p = put_u64(p, whole);
    if (frac) {
        unsigned n = 12;
        if (frac % 1000000 == 0) {
            frac /= 1000000;
            n -= 6;
        }
        if (frac % 1000 == 0) {
            frac /= 1000;
            n -= 3;
        }
        if (frac % 100 == 0) {
            frac /= 100;
            n -= 2;
        }
        if (frac % 10 == 0) {
            frac /= 10;
            n -= 1;
        }
        *p++ = '.';
        if (n <= 8) { /* at most 8 digits left: 32-bit halves */
            put_digits8(p, (unsigned)frac, n);
        } else {
            put_digits(p, frac, n);
        }
        p += n;
    }
    return p;
}

/* Bytes that can be copied into a JSON string as they are: printable
 * ASCII and DEL, but '"' and '\\'. Runs of them are copied with one memcpy. */
static const unsigned char plain[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0), /* 0x00-0x1f: control */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x22 '"' */
    R16(1), R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x5c '\\' */
    R16(1),
    R16(1), /* 0x70-0x7f, DEL included (JSON allows it) */
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0),
#undef R16
};

/* Nonzero when one of the 8 bytes in x needs more than a copy: a control
 * byte, '"', '\\' or a byte past ASCII (the classic has-less-than and
 * has-zero-byte tricks: exact for "any byte", which is all we ask). */
static inline uint64_t word_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x) & high;
}

#if defined(__SSE2__)
/* Bit i set when byte i of x needs more than a copy (see word_special):
 * a signed compare below 0x20 catches both the controls and the bytes
 * past ASCII. */
static inline unsigned special_bits(__m128i x)
{
    __m128i m = _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                             _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

/* Index of the first of the 16 bytes at s that needs more than a copy
 * (see word_special), or 16 when none does: special_bits with SSE2
 * (x86-64's baseline), else word_special per word, and a flagged word
 * looked at byte by byte (it holds one such byte at least). */
static inline unsigned first_special16(const unsigned char *s)
{
#if defined(__SSE2__)
    unsigned bits = special_bits(_mm_loadu_si128((const __m128i *)(const void *)s));
    return bits ? (unsigned)__builtin_ctz(bits) : 16;
#else
    for (unsigned k = 0; k < 16; k += 8) {
        uint64_t x;
        memcpy(&x, s + k, 8);
        if (word_special(x))
            for (unsigned j = k;; j++)
                if (!plain[s[j]])
                    return j;
    }
    return 16;
#endif
}

/* The byte at u[*i], which is not plain: an escape, a whole UTF-8
 * sequence, or U+FFFD for a byte that starts none. */
static inline char *put_special(char *p, const unsigned char *u, size_t len, size_t *i,
                                int *replaced)
{
    unsigned char c = u[*i];
    if (c < 0x80) {
        *p++ = '\\';
        switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\n': *p++ = 'n'; break;
        case '\r': *p++ = 'r'; break;
        case '\t': *p++ = 't'; break;
        default: /* other control characters */
            p = LIT(p, "u00");
            p = hex_byte(p, c);
        }
        (*i)++;
        return p;
    }
    size_t k = bf_utf8_seq(u + *i, len - *i); /* 2 to 4 here, or 0 */
    if (k) {
        memcpy(p, u + *i, k);
        *i += k;
        return p + k;
    }
    *replaced = 1;
    (*i)++;
    return LIT(p, "\xEF\xBF\xBD");
}

/* The rest of a JSON string's text from u[i] (the quotes are the
 * caller's: row_format's literals carry them with the keys): escapes,
 * and U+FFFD for bytes that are not UTF-8. Plain text is copied 16 bytes
 * at a time (out has room for row_max_bytes, so a block is stored whole
 * before its clean part is counted); a tail of 4 to 15 bytes is tested and
 * copied as two overlapping words; what is flagged, and the last bytes, go
 * byte by byte. Out of line: put_str's fast cases are the usual ones. */
static __attribute__((noinline)) char *put_str_rest(char *p, const unsigned char *u,
                                                    size_t i, size_t len, int *replaced)
{
    while (len - i >= 16) {
        unsigned n = first_special16(u + i);
        memcpy(p, u + i, 16);
        p += n;
        i += n;
        if (n < 16)
            p = put_special(p, u, len, &i, replaced);
    }
    size_t rem = len - i;
    if (rem >= 8) {
        uint64_t a, b;
        memcpy(&a, u + i, 8);
        memcpy(&b, u + len - 8, 8);
        if (!(word_special(a) | word_special(b))) {
            memcpy(p, &a, 8);
            memcpy(p + rem - 8, &b, 8);
            p += rem;
            i = len;
        }
    } else if (rem >= 4) {
        uint32_t a, b;
        memcpy(&a, u + i, 4);
        memcpy(&b, u + len - 4, 4);
        if (!(word_special(a | (uint64_t)b << 32))) {
            memcpy(p, &a, 4);
            memcpy(p + rem - 4, &b, 4);
            p += rem;
            i = len;
        }
    }
    while (i < len) {
        if (plain[u[i]])
            *p++ = (char)u[i++];
        else
            p = put_special(p, u, len, &i, replaced);
    }
    return p;
}

/* A JSON string's text, without its quotes (see put_str_rest), inline for
 * what most strings are: none, or 4 to 16 bytes with nothing to escape,
 * tested as one SSE2 register of
 * two overlapping words and stored as those words; longer ones while
 * their 16-byte blocks are clean, the last bytes as the 16 that end the
 * string (the bytes before them were copied as they are, so storing them
 * again changes nothing). Anything else from where it stands. */
static inline __attribute__((always_inline)) char *put_str(char *p, const char *s, size_t len,
                                                           int *replaced)
{
    const unsigned char *u = (const unsigned char *)s;
    if (len == 0)
        return p;
#if defined(__SSE2__)
    if (len - 4 <= 12) { /* 4 to 16 bytes */
        uint64_t a, b;
        if (len >= 8) {
            memcpy(&a, u, 8);
            memcpy(&b, u + len - 8, 8);
        } else {
            uint32_t a4, b4;
            memcpy(&a4, u, 4);
            memcpy(&b4, u + len - 4, 4);
            /* The unused halves: spaces, which are plain. */
            a = a4 | 0x2020202000000000ull;
            b = b4 | 0x2020202000000000ull;
        }
        if (!special_bits(_mm_set_epi64x((long long)b, (long long)a))) {
            if (len >= 8) {
                memcpy(p, &a, 8);
                memcpy(p + len - 8, &b, 8);
            } else {
                memcpy(p, &a, 4);
                memcpy(p + len - 4, &b, 4);
            }
            return p + len;
        }
        return put_str_rest(p, u, 0, len, replaced);
    }
    if (len > 16) {
        size_t i = 0;
        for (; len - i >= 16; i += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
            if (special_bits(x))
                return put_str_rest(p + i, u, i, len, replaced);
            _mm_storeu_si128((__m128i *)(void *)(p + i), x);
        }
        if (i < len) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(u + len - 16));
            if (special_bits(x) >> (16 - (len - i)))
                return put_str_rest(p + i, u, i, len, replaced);
            _mm_storeu_si128((__m128i *)(void *)(p + len - 16), x);
        }
        return p + len;
    }
#endif
    return put_str_rest(p, u, 0, len, replaced);
}

/* Column names with the quotes around string values: a string column is
 * S(p, "name") and its text, up to the next literal, which closes it. */
#define KEY(p, name) LIT(p, ",\"" name "\":")
#define S(p, name) LIT(p, "\",\"" name "\":\"")
#define S_AFTER_NUM(p, name) LIT(p, ",\"" name "\":\"")
#define KEY_AFTER_STR(p, name) LIT(p, "\",\"" name "\":")

size_t row_format(char *out, const bf_row *row)
{
    char *p = out;
    int replaced = 0;

    p = LIT(p, "{\"id\":\"");
    p = put_str(p, row->id.ptr, row->id.len, &replaced);
    p = S(p, "user_id");
    p = put_str(p, row->user_id.ptr, row->user_id.len, &replaced);
    p = S(p, "username");
    p = put_str(p, row->username.ptr, row->username.len, &replaced);
    p = S(p, "tier");
    p = put_str(p, row->tier.ptr, row->tier.len, &replaced);
    p = S(p, "model");
    p = put_str(p, row->model.ptr, row->model.len, &replaced);
    p = S(p, "provider");
    p = put_str(p, row->provider, row->provider_len, &replaced);
    p = S(p, "start_time");
    put_time(p, row->start_ms, &start_memo);
    p = S(p + 23, "end_time");
    put_time(p, row->end_ms, &end_memo);
    p = KEY_AFTER_STR(p + 23, "duration_ms");
    p = put_u64(p, row->duration_ms);
    p = S_AFTER_NUM(p, "status");
    p = put_str(p, row->status.ptr, row->status.len, &replaced);
    p = S(p, "error_message");
    p = put_str(p, row->error_message.ptr, row->error_message.len, &replaced);
    if (row->dataset == BF_DATASET_image_events) {
        p = S(p, "prompt");
        p = put_str(p, row->prompt.ptr, row->prompt.len, &replaced);
        p = KEY_AFTER_STR(p, "width");
        p = put_u64(p, row->width);
        p = KEY(p, "height");
        p = put_u64(p, row->height);
        p = KEY(p, "steps");
        p = put_u64(p, row->steps);
    } else {
        p = KEY_AFTER_STR(p, "prompt_tokens");
        p = put_u64(p, row->prompt_tokens);
        p = KEY(p, "completion_tokens");
        p = put_u64(p, row->completion_tokens);
        p = KEY(p, "cached_tokens");
        p = put_u64(p, row->cached_tokens);
        p = KEY(p, "total_tokens");
        p = put_u64(p, row->total_tokens);
        p = KEY(p, "stream");
        p = row->stream ? LIT(p, "true") : LIT(p, "false");
    }
    p = KEY(p, "cached");
    p = row->cached ? LIT(p, "true") : LIT(p, "false");
    p = KEY(p, "cost_usd");
    p = put_cost(p, row->cost_usd);
    p = S_AFTER_NUM(p, "referrer");
    p = put_str(p, row->referrer, row->referrer_len, &replaced);
    p = S(p, "ip");
    p = put_str(p, row->ip, row->ip_len, &replaced);
    p = S(p, "ip_hash");
    p = put_str(p, row->ip_hash, row->ip_hash[0] ? IP_HASH_HEX : 0, &replaced);
    p = LIT(p, "\"}\n");
    if (replaced)
        stats.utf8_replaced++;
    return (size_t)(p - out);
}
