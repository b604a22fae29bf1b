/* bf_jsonscan.c: one JSON object into a bf_event, jansson's rules, no
 * tree. See bf_jsonscan.h. */
#include "bf_jsonscan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

typedef struct bf_jsonscan_key {
    const char *ptr;
    uint32_t len, obj, hash;
} bf_jsonscan_key;

enum kind { K_STR, K_INT, K_REAL, K_TRUE, K_FALSE, K_NULL, K_OBJ, K_ARR };

/* A value of the top-level object, kept until the syntax is known good. */
typedef struct top_field {
    unsigned tag;          /* fields.def tag; 0: "dataset" */
    const char *key;       /* not terminated: klen bytes */
    size_t klen;
    enum kind kind;
    const char *s;         /* K_STR */
    size_t slen;
    int64_t i;             /* K_INT */
    double d;              /* K_REAL */
} top_field;

typedef struct scan {
    const unsigned char *p, *end;
    bf_jsonscan_buf *sb;
    size_t text_len, nkeys, mask;
    uint32_t next_obj;
    top_field top[BF_F_MAX + 1];
    unsigned ntop;
    int top_is_object;
} scan;

/* Slots of the key table for len input bytes: a key takes at least 4
 * bytes ("":0), and the table stays at most half full. */
static size_t slots_for(size_t len)
{
    size_t slots = 64;
    while (slots < 2 * (len / 4 + 2))
        slots *= 2;
    return slots;
}

/* Room for what len input bytes can need: decoded strings and number text
 * are never longer than their input. */
static int reserve(bf_jsonscan_buf *sb, size_t len)
{
    size_t text = 2 * len + 64, keys = len / 4 + 2, slots = slots_for(len);
    if (sb->text_cap < text) {
        char *t = realloc(sb->text, text);
        if (!t)
            return -1;
        sb->text = t;
        sb->text_cap = text;
    }
    if (sb->keys_cap < keys) {
        bf_jsonscan_key *k = realloc(sb->keys, keys * sizeof(*k));
        if (!k)
            return -1;
        sb->keys = k;
        sb->keys_cap = keys;
    }
    if (sb->slots_cap < slots) {
        uint32_t *s = realloc(sb->slots, slots * sizeof(*s));
        if (!s)
            return -1;
        sb->slots = s;
        sb->slots_cap = slots;
    }
    return 0;
}

void bf_jsonscan_free(bf_jsonscan_buf *sb)
{
    free(sb->text);
    free(sb->keys);
    free(sb->slots);
    memset(sb, 0, sizeof(*sb));
}

static void skip_ws(scan *sc)
{
    while (sc->p < sc->end &&
           (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Four hex digits at p (end bounds it). Returns the value or -1. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Bytes that end a plain run in a string: '"', '\\', controls, non-ASCII. */
static const unsigned char stop[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(1), R16(1),
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x22 '"' */
    R16(0), R16(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x5c '\\' */
    R16(0), R16(0),
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1),
#undef R16
};

/* The string at sc->p (at its opening quote) into *out, *len: the input
 * itself when it has no escape, else a decoded copy in the scan buffer.
 * Returns 0 or -1 (not valid JSON under the rules above). */
static int scan_string(scan *sc, const char **out, size_t *len)
{
    const unsigned char *p = sc->p + 1, *end = sc->end, *start = p;
    char *o = NULL; /* set once an escape forces a copy */
    for (;;) {
        const unsigned char *run = p;
        while (p < end && !stop[*p])
            p++;
        if (o && p > run) {
            memcpy(o, run, (size_t)(p - run));
            o += p - run;
        }
        if (p >= end)
            return -1;
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1; /* a raw control character */
        if (c >= 0x80) {
            size_t k = bf_utf8_seq(p, (size_t)(end - p));
            if (!k)
                return -1;
            if (o) {
                memcpy(o, p, k);
                o += k;
            }
            p += k;
            continue;
        }
        /* A backslash: from here on the string is a copy. */
        if (!o) {
            o = sc->sb->text + sc->text_len;
            memcpy(o, start, (size_t)(p - start));
            o += p - start;
        }
        if (end - p < 2)
            return -1;
        c = p[1];
        p += 2;
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            long cp = hex4(p, end);
            if (cp < 0)
                return -1;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* must pair with a low surrogate */
                if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
                    return -1;
                long lo = hex4(p + 2, end);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
                return -1; /* a lone low surrogate; \u0000 (no NUL in strings) */
            }
            o += put_utf8(o, (unsigned long)cp);
            break;
        }
        default:
            return -1;
        }
    }
    if (o) {
        *out = sc->sb->text + sc->text_len;
        *len = (size_t)(o - *out);
        sc->text_len += *len;
    } else {
        *out = (const char *)start;
        *len = (size_t)(p - start);
    }
    sc->p = p + 1;
    return 0;
}

/* A number at sc->p: JSON's grammar; an integer (no fraction, no
 * exponent) must fit int64_t, a real must not overflow a double. */
static int scan_number(scan *sc, enum kind *kind, int64_t *iv, double *dv)
{
    const unsigned char *p = sc->p, *end = sc->end, *start = p;
    int neg = 0, real = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return -1; /* a leading zero */
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && *p == '.') {
        real = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return -1;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return -1;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    sc->p = p;
    if (!real) {
        uint64_t u = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (const unsigned char *q = start + neg; q < p; q++) {
            unsigned dgt = (unsigned)(*q - '0');
            if (u > (lim - dgt) / 10)
                return -1; /* jansson: too big (negative) integer */
            u = u * 10 + dgt;
        }
        *kind = K_INT;
        *iv = neg ? (int64_t)(0 - u) : (int64_t)u;
        return 0;
    }
    /* strtod wants a terminated string: copy the token (the daemon and the
     * CLI keep the "C" locale, so '.' is the decimal point). */
    char *t = sc->sb->text + sc->text_len;
    size_t n = (size_t)(p - start);
    memcpy(t, start, n);
    t[n] = '\0';
    errno = 0;
    double d = strtod(t, NULL);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE)
        return -1; /* jansson: real number overflow */
    *kind = K_REAL;
    *dv = d;
    return 0;
}

static uint32_t key_hash(uint32_t obj, const char *s, size_t n)
{
    uint32_t h = 2166136261u ^ obj;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Remember key k of object obj; -1 when that object has it already. */
static int key_add(scan *sc, uint32_t obj, const char *k, size_t n)
{
    bf_jsonscan_buf *sb = sc->sb;
    uint32_t h = key_hash(obj, k, n);
    size_t mask = sc->mask;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t e = sb->slots[i];
        if (!e) {
            bf_jsonscan_key *nk = &sb->keys[sc->nkeys];
            *nk = (bf_jsonscan_key){k, (uint32_t)n, obj, h};
            sb->slots[i] = (uint32_t)++sc->nkeys;
            return 0;
        }
        const bf_jsonscan_key *x = &sb->keys[e - 1];
        if (x->hash == h && x->obj == obj && x->len == n && memcmp(x->ptr, k, n) == 0)
            return -1;
    }
}

/* The tag of a known field name, or 0: bf_field_lookup unrolled from
 * fields.def, so that most keys are told apart by their length alone. */
static unsigned field_tag(const char *k, size_t n)
{
#define BF_DATASET(id, name)
#define BF_FIELD(tag, name, type, max, ds)                                    \
    if (n == sizeof(#name) - 1 && memcmp(k, #name, n) == 0)                    \
        return tag;
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
    return 0;
}

static int scan_value(scan *sc, unsigned depth, top_field *f);

static int expect_literal(scan *sc, const char *lit, size_t n)
{
    if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, lit, n) != 0)
        return -1;
    sc->p += n;
    return 0;
}

/* After a member of an object or array: 1 when a ',' says another one
 * follows, 0 when close ends it, -1 otherwise. */
static int next_member(scan *sc, char close)
{
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == ',') {
        sc->p++;
        skip_ws(sc);
        return 1;
    }
    if (sc->p < sc->end && *sc->p == (unsigned char)close) {
        sc->p++;
        return 0;
    }
    return -1;
}

/* The object at sc->p ('{'); top: the datagram's own object, whose known
 * fields are kept for the semantic pass. */
static int scan_object(scan *sc, unsigned depth, int top)
{
    uint32_t obj = ++sc->next_obj;
    sc->p++;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        return 0;
    }
    for (;;) {
        if (sc->p >= sc->end || *sc->p != '"')
            return -1;
        const char *k;
        size_t kn;
        if (scan_string(sc, &k, &kn) < 0 || key_add(sc, obj, k, kn) < 0)
            return -1;
        skip_ws(sc);
        if (sc->p >= sc->end || *sc->p != ':')
            return -1;
        sc->p++;
        skip_ws(sc);
        top_field tmp, *f = &tmp;
        unsigned tag = 0;
        if (top) {
            static const char ds[] = "dataset";
            tag = field_tag(k, kn);
            if (tag || (kn == sizeof(ds) - 1 && memcmp(k, ds, kn) == 0))
                f = &sc->top[sc->ntop++]; /* each key once: bounded */
        }
        f->tag = tag;
        f->key = k;
        f->klen = kn;
        if (scan_value(sc, depth + 1, f) < 0)
            return -1;
        int more = next_member(sc, '}');
        if (more <= 0)
            return more;
    }
}

static int scan_array(scan *sc, unsigned depth)
{
    sc->p++;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == ']') {
        sc->p++;
        return 0;
    }
    for (;;) {
        top_field tmp;
        if (scan_value(sc, depth + 1, &tmp) < 0)
            return -1;
        int more = next_member(sc, ']');
        if (more <= 0)
            return more;
    }
}

/* One value at sc->p into f (its kind and scalar). depth counts values
 * from 1 for the top-level one, as jansson's parser does. */
static int scan_value(scan *sc, unsigned depth, top_field *f)
{
    if (depth > MAX_DEPTH || sc->p >= sc->end)
        return -1;
    switch (*sc->p) {
    case '{':
        f->kind = K_OBJ;
        return scan_object(sc, depth, 0);
    case '[':
        f->kind = K_ARR;
        return scan_array(sc, depth);
    case '"':
        f->kind = K_STR;
        return scan_string(sc, &f->s, &f->slen);
    }
    int rc;
    switch (*sc->p) {
    case 't':
        f->kind = K_TRUE;
        rc = expect_literal(sc, "true", 4);
        break;
    case 'f':
        f->kind = K_FALSE;
        rc = expect_literal(sc, "false", 5);
        break;
    case 'n':
        f->kind = K_NULL;
        rc = expect_literal(sc, "null", 4);
        break;
    default:
        rc = scan_number(sc, &f->kind, &f->i, &f->d);
    }
    /* jansson's lexer gives back the byte after a number or a literal, and
     * a NUL given back reads as its empty buffer: one NUL right there is
     * skipped. Kept, so that both accept the same inputs. */
    if (rc == 0 && sc->p < sc->end && *sc->p == '\0')
        sc->p++;
    return rc;
}

/* bf_json.c's set_field, over a scanned value. */
static bf_reason set_field(bf_event *ev, const top_field *f)
{
    const bf_field_info *fi = &bf_fields[f->tag];
    char *slot = (char *)ev + fi->offset;
    uint64_t n;
    if (fi->type == BF_TYPE_STR) {
        if (f->kind != K_STR)
            return BF_R_bad_type;
        bf_str *s = (bf_str *)slot;
        s->ptr = f->s;
        s->len = f->slen;
    } else {
        switch (f->kind) {
        case K_TRUE:
        case K_FALSE:
            if (fi->type != BF_TYPE_BOOL)
                return BF_R_bad_type;
            n = f->kind == K_TRUE;
            break;
        case K_INT:
            if (f->i < 0)
                return BF_R_out_of_range;
            n = (uint64_t)f->i;
            break;
        case K_REAL:
            if (f->d < 0)
                return BF_R_out_of_range;
            if (f->d != floor(f->d) || f->d >= 18446744073709551616.0)
                return BF_R_bad_type;
            n = (uint64_t)f->d;
            break;
        default:
            return BF_R_bad_type;
        }
        if (fi->type == BF_TYPE_BOOL && n > 1)
            return BF_R_bad_type;
        *(uint64_t *)slot = n;
    }
    ev->present |= (uint64_t)1 << f->tag;
    return BF_OK;
}

bf_reason bf_jsonscan(bf_jsonscan_buf *sb, const void *buf, size_t len, bf_event *ev,
                      const char **bad_key)
{
    bf_event_init(ev, BF_DATASET_NONE);
    if (bad_key)
        *bad_key = "(root)";
    if (len > UINT32_MAX / 2 || reserve(sb, len) < 0)
        return BF_R_bad_json;
    scan sc = {.p = buf, .end = (const unsigned char *)buf + len, .sb = sb,
               .mask = slots_for(len) - 1};
    memset(sb->slots, 0, (sc.mask + 1) * sizeof(*sb->slots));
    skip_ws(&sc);
    int rc;
    if (sc.p < sc.end && *sc.p == '{') {
        sc.top_is_object = 1;
        rc = scan_object(&sc, 1, 1);
    } else if (sc.p < sc.end && *sc.p == '[') {
        rc = scan_array(&sc, 1); /* valid JSON, but not an event */
    } else {
        rc = -1;
    }
    skip_ws(&sc);
    if (rc < 0 || sc.p != sc.end || !sc.top_is_object)
        return BF_R_bad_json;

    const top_field *ds = NULL;
    for (unsigned i = 0; i < sc.ntop; i++)
        if (!sc.top[i].tag)
            ds = &sc.top[i];
    if (bad_key)
        *bad_key = "dataset";
    if (!ds || ds->kind == K_NULL)
        return BF_R_missing_field;
    if (ds->kind != K_STR)
        return BF_R_bad_type;
    ev->dataset = (uint8_t)bf_dataset_lookup(ds->s, ds->slen);
    if (ev->dataset == BF_DATASET_NONE)
        return BF_R_unknown_dataset;
    for (unsigned i = 0; i < sc.ntop; i++) {
        const top_field *f = &sc.top[i];
        if (!f->tag || f->kind == K_NULL)
            continue;
        bf_reason r = set_field(ev, f);
        if (r != BF_OK) {
            if (bad_key) { /* a terminated copy, for log lines */
                char *k = sb->text + sc.text_len;
                memcpy(k, f->key, f->klen);
                k[f->klen] = '\0';
                *bad_key = k;
            }
            return r;
        }
    }
    if (bad_key)
        *bad_key = NULL;
    return BF_OK;
}
