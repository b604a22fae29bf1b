/* bf_proto.c: protocol v1 codec. See bf_proto.h for the format and contracts. */
#include "bf_proto.h"
#include "bf_decoder.h" /* bf_decode_validate, defined here */

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

const bf_field_info bf_fields[BF_F_MAX] = {
#define BF_DATASET(id, name)
#define BF_FIELD(tag, name, type, max, ds)                                    \
    [tag] = {#name, BF_TYPE_##type, (uint64_t)(max), BF_DS_##ds,               \
             offsetof(bf_event, name)},
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
};

static const char *const dataset_names[BF_DATASET_MAX] = {
#define BF_DATASET(id, name) [id] = #name,
#define BF_FIELD(tag, name, type, max, ds)
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
};

static const char *const reason_names[BF_R_MAX] = {
    [BF_OK] = "ok",
#define BF_REASON(name, desc) [BF_R_##name] = #name,
#include "reasons.def"
#undef BF_REASON
};

static const char *const reason_descs[BF_R_MAX] = {
    [BF_OK] = "accepted",
#define BF_REASON(name, desc) [BF_R_##name] = desc,
#include "reasons.def"
#undef BF_REASON
};

const char *bf_dataset_name(unsigned id)
{
    return id < BF_DATASET_MAX ? dataset_names[id] : NULL;
}

unsigned bf_dataset_lookup(const char *name, size_t len)
{
    for (unsigned id = 1; id < BF_DATASET_MAX; id++) {
        const char *n = dataset_names[id];
        if (n && strlen(n) == len && memcmp(n, name, len) == 0)
            return id;
    }
    return BF_DATASET_NONE;
}

unsigned bf_field_lookup(const char *name, size_t len)
{
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const char *n = bf_fields[tag].name;
        if (n && strlen(n) == len && memcmp(n, name, len) == 0)
            return tag;
    }
    return 0;
}

const char *bf_reason_name(bf_reason r)
{
    return (unsigned)r < BF_R_MAX ? reason_names[r] : "unknown";
}

const char *bf_reason_desc(bf_reason r)
{
    return (unsigned)r < BF_R_MAX ? reason_descs[r] : "unknown";
}

void bf_event_init(bf_event *ev, unsigned dataset)
{
    memset(ev, 0, sizeof(*ev));
    ev->dataset = (uint8_t)dataset;
}

size_t bf_varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int bf_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *q = *p;
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (q >= end)
            return -1;
        uint8_t b = *q++;
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (shift == 63 && b > 1)
            return -2;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *p = q;
            *v = x;
            return 0;
        }
    }
    return -2;
}

static inline const void *field_ptr(const bf_event *ev, unsigned tag)
{
    return (const char *)ev + bf_fields[tag].offset;
}

size_t bf_encode(const bf_event *ev, uint8_t *out, size_t cap)
{
    /* Worst case per field: key (2) + varint (10); strings are checked
     * against cap before copying. */
    if (cap < BF_HEADER_LEN)
        return 0;
    size_t n = 0;
    out[n++] = BF_MAGIC0;
    out[n++] = BF_MAGIC1;
    out[n++] = BF_PROTO_VERSION;
    out[n++] = ev->dataset;
    uint8_t tmp[20];
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name || !((ev->present >> tag) & 1u))
            continue;
        size_t k;
        if (f->type == BF_TYPE_STR) {
            const bf_str *s = field_ptr(ev, tag);
            k = bf_varint_put(tmp, (uint64_t)tag << 3 | BF_WT_BYTES);
            k += bf_varint_put(tmp + k, s->len);
            if (cap - n < k || cap - n - k < s->len)
                return 0;
            memcpy(out + n, tmp, k);
            n += k;
            if (s->len)
                memcpy(out + n, s->ptr, s->len);
            n += s->len;
        } else {
            const uint64_t *v = field_ptr(ev, tag);
            k = bf_varint_put(tmp, (uint64_t)tag << 3 | BF_WT_VARINT);
            k += bf_varint_put(tmp + k, *v);
            if (cap - n < k)
                return 0;
            memcpy(out + n, tmp, k);
            n += k;
        }
    }
    return n;
}

/* Identifiers are keys and labels downstream (dedup, sorting keys, logs):
 * no NUL and no control character in them, so what one sender writes
 * cannot end a string early or forge a line. Other strings (prompt,
 * error_message) may hold newlines and tabs; the row escapes them. */
#define IDENT_MASK ((uint64_t)1 << BF_F_id | (uint64_t)1 << BF_F_user_id |            \
                    (uint64_t)1 << BF_F_tier | (uint64_t)1 << BF_F_model)

static int has_control(bf_str s);

#if defined(__SSE2__)
/* Bit i set when byte i of the 16 at u is below 0x20, DEL, or past ASCII
 * (a signed compare below 0x20 catches both ends). */
static inline unsigned ctrl_bits16(const uint8_t *u)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)u);
    __m128i m = _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

/* has_control() for a string inside a datagram that ends at end: 16 bytes
 * at a time (SSE2), the last block read whole when the datagram holds it
 * (the bytes past the string masked off), else as the 16 bytes that end
 * the string; without SSE2, eight bytes at a time the same way. So an
 * identifier of a few bytes costs one test. A flagged block (a byte past
 * ASCII, which may be a C1 control's first byte, flags one) is looked at
 * byte by byte. */
static inline __attribute__((always_inline)) int ident_control(const char *str, size_t len,
                                                             const uint8_t *end)
{
    const uint8_t *u = (const uint8_t *)str;
#if defined(__SSE2__)
    size_t i = 0;
    for (; len - i >= 16; i += 16)
        if (ctrl_bits16(u + i))
            return has_control((bf_str){str, len});
    if (i < len) {
        size_t rem = len - i;
        unsigned bits;
        if (end - (u + i) >= 16)
            bits = ctrl_bits16(u + i) & ((1u << rem) - 1);
        else if (len >= 16)
            bits = ctrl_bits16(u + len - 16) >> (16 - rem);
        else
            return has_control((bf_str){str, len});
        if (bits)
            return has_control((bf_str){str, len});
    }
    return 0;
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t x;
        if (len - i < 8) {
            if (end - (u + i) < 8)
                return has_control((bf_str){str, len});
            uint64_t keep = (~0ull) >> (64 - 8 * (len - i));
            memcpy(&x, u + i, 8);
            x = (x & keep) | (ones * ' ' & ~keep);
        } else {
            memcpy(&x, u + i, 8);
        }
        if (((x - ones * 0x20) | (x + ones) | x) & high)
            return has_control((bf_str){str, len});
    }
    return 0;
#else
    (void)u;
    (void)end;
    return has_control((bf_str){str, len});
#endif
}

/* One varint; one or two bytes inline (every key of tags 1 to 15, short
 * lengths and values, widths and most durations), up to eight bytes (a 56-bit time in milliseconds)
 * from one little-endian load when eight bytes are left, longer ones by
 * bf_varint_get. */
static inline int varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *v = *p;
        *pp = p + 1;
        return 0;
    }
    if (end - p >= 2 && p[1] < 0x80) { /* widths, short durations and counts */
        *v = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
        *pp = p + 2;
        return 0;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t stop = ~w & 0x8080808080808080ull; /* bytes with no continuation bit */
        if (stop) {
            /* The bytes up to the first stop, their 7-bit groups packed. */
            uint64_t x = w & (stop ^ (stop - 1)) & 0x7f7f7f7f7f7f7f7full;
            x = (x & 0x007f007f007f007full) | (x & 0x7f007f007f007f00ull) >> 1;
            x = (x & 0x00003fff00003fffull) | (x & 0x3fff00003fff0000ull) >> 2;
            x = (x & 0x000000000fffffffull) | (x & 0x0fffffff00000000ull) >> 4;
            *v = x;
            *pp = p + __builtin_ctzll(stop) / 8 + 1;
            return 0;
        }
    }
#endif
    return bf_varint_get(pp, end, v);
}

/* The key of each field with its own wire type, by key: the fields the
 * decoding loop stores without looking further; any other key (an
 * unknown tag, a wrong wire type) takes the general way. */
enum { K_NONE, K_STR, K_U64 };
typedef struct key_info {
    uint16_t offset; /* offsetof(bf_event, name) */
    uint8_t kind;    /* K_* */
    uint64_t max;    /* fields.def */
} key_info;

static const key_info keys[BF_F_MAX << 3] = {
#define KEY_STR(tag, name, max) [(tag) << 3 | BF_WT_BYTES] = {offsetof(bf_event, name), K_STR, max},
#define KEY_U64(tag, name, max) [(tag) << 3 | BF_WT_VARINT] = {offsetof(bf_event, name), K_U64, max},
#define KEY_BOOL KEY_U64
#define BF_DATASET(id, name)
#define BF_FIELD(tag, name, type, max, ds) KEY_##type(tag, name, (uint64_t)(max))
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
#undef KEY_STR
#undef KEY_U64
#undef KEY_BOOL
};

/* The wire format into ev, and what the value checks need of the values
 * while they are at hand: in *over a bit per tag whose value is over its
 * limit, in *ctrl a bit per identifier holding a control character. A
 * repeated tag keeps its last value, so its bits follow the last value. */
static inline __attribute__((always_inline)) bf_reason
decode_wire(const uint8_t *buf, size_t len, bf_event *ev, uint64_t *over, uint64_t *ctrl)
{
    *over = *ctrl = 0;
    if (len == 0)
        return BF_R_empty;
    if (buf[0] != BF_MAGIC0 || (len > 1 && buf[1] != BF_MAGIC1))
        return BF_R_bad_magic;
    if (len < BF_HEADER_LEN)
        return BF_R_truncated;
    if (buf[2] != BF_PROTO_VERSION)
        return BF_R_bad_version;
#if defined(__SSE2__)
    /* bf_event_init as seventeen 16-byte stores: gcc's memset of the 264
     * bytes is a rep stos of 33 words, 42 instructions with its setup. */
    {
        char *e = (char *)ev;
        const __m128i z = _mm_setzero_si128();
#pragma GCC unroll 32
        for (size_t o = 0; o + 16 <= sizeof(*ev); o += 16)
            _mm_storeu_si128((__m128i *)(void *)(e + o), z);
        if (sizeof(*ev) % 16)
            _mm_storeu_si128((__m128i *)(void *)(e + sizeof(*ev) - 16), z);
        ev->dataset = buf[3];
    }
#else
    bf_event_init(ev, buf[3]);
#endif
    if (!bf_dataset_name(buf[3]))
        return BF_R_unknown_dataset;

    const uint8_t *p = buf + BF_HEADER_LEN, *end = buf + len;
    uint64_t ov = 0, ct = 0;
    int rc;
    /* The canonical form first (fields in ascending tag order, each once,
     * as the shims write it): each field of fields.def in turn, when the
     * next key is its own, decoded with its key, limit and kind known at
     * compile time, instead of through the key table; the first key that
     * is not the next one's goes to the general loop below, which takes
     * any order from there. Both store and check a field the same way. */
#define FAST_KEY(tag, wt)                                                           \
    ((tag) < 16 ? p < end && p[0] == ((tag) << 3 | (wt))                            \
                : end - p >= 2 && p[0] == ((((tag) << 3 | (wt)) & 0x7f) | 0x80) &&  \
                      p[1] == ((tag) << 3 | (wt)) >> 7)
#define FAST_STR(tag, name, max)                                                    \
    if (FAST_KEY(tag, BF_WT_BYTES)) {                                               \
        uint64_t v;                                                                 \
        p += (tag) < 16 ? 1 : 2;                                                    \
        if ((rc = varint(&p, end, &v)) != 0)                                        \
            return rc == -1 ? BF_R_truncated : BF_R_bad_varint;                     \
        if (v > (uint64_t)(end - p))                                                \
            return BF_R_truncated;                                                  \
        ev->name.ptr = (const char *)p;                                             \
        ev->name.len = (size_t)v;                                                   \
        p += v;                                                                     \
        if ((max) && v > (uint64_t)(max))                                           \
            ov |= (uint64_t)1 << (tag);                                             \
        if ((IDENT_MASK >> (tag)) & 1u && ident_control(ev->name.ptr, (size_t)v, end)) \
            ct |= (uint64_t)1 << (tag);                                             \
        ev->present |= (uint64_t)1 << (tag);                                        \
    }
#define FAST_U64(tag, name, max)                                                    \
    if (FAST_KEY(tag, BF_WT_VARINT)) {                                              \
        uint64_t v;                                                                 \
        p += (tag) < 16 ? 1 : 2;                                                    \
        if ((rc = varint(&p, end, &v)) != 0)                                        \
            return rc == -1 ? BF_R_truncated : BF_R_bad_varint;                     \
        ev->name = v;                                                               \
        if (v > (uint64_t)(max))                                                    \
            ov |= (uint64_t)1 << (tag);                                             \
        ev->present |= (uint64_t)1 << (tag);                                        \
    }
#define FAST_BOOL FAST_U64
#define BF_DATASET(id, name)
#define BF_FIELD(tag, name, type, max, ds) FAST_##type(tag, name, max)
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
#undef FAST_BOOL
#undef FAST_U64
#undef FAST_STR
#undef FAST_KEY
    while (p < end) {
        uint64_t key, v;
        /* Keys of one byte (tags 1 to 15) and two (16 to 2047). */
        if (p[0] < 0x80) {
            key = p[0];
            p++;
        } else if (end - p >= 2 && p[1] < 0x80) {
            key = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
            p += 2;
        } else if ((rc = bf_varint_get(&p, end, &key)) != 0) {
            return rc == -1 ? BF_R_truncated : BF_R_bad_varint;
        }
        uint64_t tag = key >> 3;
        if (key < sizeof(keys) / sizeof(keys[0]) && keys[key].kind != K_NONE) {
            const key_info *k = &keys[key];
            uint64_t bit = (uint64_t)1 << tag;
            if ((rc = varint(&p, end, &v)) != 0)
                return rc == -1 ? BF_R_truncated : BF_R_bad_varint;
            if (k->kind == K_U64) {
                *(uint64_t *)((char *)ev + k->offset) = v;
                ov = v > k->max ? ov | bit : ov & ~bit;
            } else {
                if (v > (uint64_t)(end - p))
                    return BF_R_truncated;
                bf_str *s = (bf_str *)((char *)ev + k->offset);
                s->ptr = (const char *)p;
                s->len = (size_t)v;
                p += v;
                ov = k->max && v > k->max ? ov | bit : ov & ~bit;
                if (bit & IDENT_MASK)
                    ct = ident_control(s->ptr, s->len, end) ? ct | bit : ct & ~bit;
            }
            ev->present |= bit;
            continue;
        }
        /* An unknown tag (skipped), or a known one with another wire type. */
        unsigned wt = (unsigned)(key & 7);
        int known = tag < BF_F_MAX && bf_fields[tag].name;
        switch (wt) {
        case BF_WT_VARINT:
            if ((rc = varint(&p, end, &v)) != 0)
                return rc == -1 ? BF_R_truncated : BF_R_bad_varint;
            if (known)
                return BF_R_bad_type; /* a string field */
            break;
        case BF_WT_BYTES:
            if ((rc = varint(&p, end, &v)) != 0)
                return rc == -1 ? BF_R_truncated : BF_R_bad_varint;
            if (v > (uint64_t)(end - p))
                return BF_R_truncated;
            if (known)
                return BF_R_bad_type; /* an integer field */
            p += v;
            break;
        case BF_WT_FIXED64:
        case BF_WT_FIXED32: {
            size_t w = wt == BF_WT_FIXED64 ? 8 : 4;
            if (known)
                return BF_R_bad_type; /* no v1 field uses a fixed type */
            if ((size_t)(end - p) < w)
                return BF_R_truncated;
            p += w;
            break;
        }
        default:
            return BF_R_bad_wire_type;
        }
    }
    *over = ov;
    *ctrl = ct;
    return BF_OK;
}

bf_reason bf_decode(const uint8_t *buf, size_t len, bf_event *ev)
{
    uint64_t over, ctrl;
    return decode_wire(buf, len, ev, &over, &ctrl);
}

/* s holds a C0 control (NUL included), DEL, or a C1 control in UTF-8
 * (U+0080..U+009F, C2 80..C2 9F). */
static int has_control(bf_str s)
{
    const unsigned char *u = (const unsigned char *)s.ptr;
    size_t i = 0;
    /* Eight bytes at a time while all of them are printable ASCII (a byte
     * below 0x20 or from 0x7f up flags the word: then byte by byte). */
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    for (; s.len - i >= 8; i += 8) {
        uint64_t x;
        memcpy(&x, u + i, 8);
        if (((x - ones * 0x20) | (x + ones) | x) & high)
            break;
    }
    for (; i < s.len; i++)
        if (u[i] < 0x20 || u[i] == 0x7f ||
            (u[i] == 0xc2 && i + 1 < s.len && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f))
            return 1;
    return 0;
}

static int str_eq(bf_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* The value checks, in their order: the dataset, model, the limits (the
 * lowest tag of the event's dataset in over), the identifiers' control
 * characters (the lowest tag in ctrl), status, the times. */
static inline __attribute__((always_inline)) bf_reason
check_values(const bf_event *ev, uint64_t over, uint64_t ctrl, unsigned *tag)
{
    unsigned bad = 0;
    bf_reason r = BF_OK;

    if (!bf_dataset_name(ev->dataset)) {
        r = BF_R_unknown_dataset;
        goto out;
    }
    bad = BF_F_model;
    if (!BF_HAS(ev, model) || ev->model.len == 0) {
        r = BF_R_missing_field;
        goto out;
    }
    unsigned ds_bit = 1u << ev->dataset; /* a known id, so < 32 */
    for (; over; over &= over - 1) {
        bad = (unsigned)__builtin_ctzll(over);
        if (bf_fields[bad].datasets & ds_bit) {
            r = bf_fields[bad].type == BF_TYPE_STR ? BF_R_too_long : BF_R_out_of_range;
            goto out;
        }
    }
    if (ctrl) {
        bad = (unsigned)__builtin_ctzll(ctrl);
        r = BF_R_control_char;
        goto out;
    }
    /* An empty status counts as absent (JSON senders often send ""). */
    bad = BF_F_status;
    if (BF_HAS(ev, status) && ev->status.len &&
        !str_eq(ev->status, "success") &&
        !str_eq(ev->status, "error")) {
        r = BF_R_bad_value;
        goto out;
    }
    bad = BF_F_end_time;
    if (BF_HAS(ev, start_time) && BF_HAS(ev, end_time) &&
        ev->end_time < ev->start_time)
        r = BF_R_bad_value;
out:
    if (tag)
        *tag = r == BF_OK ? 0 : bad;
    return r;
}

bf_reason bf_validate_detail(const bf_event *ev, unsigned *tag)
{
    uint64_t over = 0, ctrl = 0;
    for (uint64_t m = ev->present & (((uint64_t)1 << BF_F_MAX) - 1); m; m &= m - 1) {
        unsigned t = (unsigned)__builtin_ctzll(m);
        const bf_field_info *f = &bf_fields[t];
        if (!f->name)
            continue;
        if (f->type == BF_TYPE_STR) {
            const bf_str *s = field_ptr(ev, t);
            if (f->max && s->len > f->max)
                over |= (uint64_t)1 << t;
            if ((IDENT_MASK >> t) & 1u && has_control(*s))
                ctrl |= (uint64_t)1 << t;
        } else if (*(const uint64_t *)field_ptr(ev, t) > f->max) {
            over |= (uint64_t)1 << t;
        }
    }
    return check_values(ev, over, ctrl, tag);
}

bf_reason bf_decode_validate(const uint8_t *buf, size_t len, bf_event *ev, unsigned *tag)
{
    uint64_t over, ctrl;
    bf_reason r = decode_wire(buf, len, ev, &over, &ctrl);
    if (r != BF_OK) {
        if (tag)
            *tag = BF_F_MAX; /* no field: a framing error */
        return r;
    }
    return check_values(ev, over, ctrl, tag);
}

bf_reason bf_validate(const bf_event *ev)
{
    return bf_validate_detail(ev, NULL);
}

size_t bf_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t want;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        want = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        want = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        want = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < want || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < want; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return want;
}

size_t bf_utf8_prefix(const char *s, size_t len, size_t max_chars)
{
    if (len <= max_chars)
        return len; /* every character is at least one byte */
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, chars = 0;
    while (i < len && chars < max_chars) {
        /* Eight ASCII bytes are eight characters (a 400-byte prompt of
         * plain text is cut in 15 steps instead of 120). */
        if (len - i >= 8 && max_chars - chars >= 8) {
            uint64_t x;
            memcpy(&x, u + i, 8);
            if (!(x & 0x8080808080808080ull)) {
                i += 8;
                chars += 8;
                continue;
            }
        }
        size_t k = bf_utf8_seq(u + i, len - i);
        i += k ? k : 1;
        chars++;
    }
    return i;
}
