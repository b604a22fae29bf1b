/*
 * fuzz_row.c: one datagram through decode, validate, enrich and row
 * formatting, as the daemon does it, and the row checked against the
 * dataset's .datasource file.
 *
 * Promises checked, for any datagram the decoder accepts:
 *   - the row fits in row_max_bytes(datagram size) (the buffer is exactly
 *     that size, so ASan sees a write past it), is one line ending in '\n',
 *     is valid UTF-8, and parses as one JSON object (jansson; a NUL byte of
 *     a prompt is written as \u0000, which JSON allows) with no key
 *     twice;
 *   - its keys are exactly row_columns(dataset), which are exactly the
 *     columns of tinybird/datasources/<dataset>.datasource (read here, not
 *     taken from the code under test);
 *   - each value has its column's type and stays in its range: UInt32 in
 *     [0, 2^32), Float64 finite and not negative, Bool true/false, String a
 *     string, DateTime64(3) "YYYY-MM-DD HH:MM:SS.mmm" with a real date;
 *   - prompt and error_message keep at most 120 and 500 characters;
 *   - ip is "" or a network address: an IPv4 /24 or an IPv6 /48 that is a
 *     prefix of the sender's address (so never the address itself when its
 *     host bits are set); an IPv6 address that carries an IPv4 (6to4,
 *     NAT64, IPv4-compatible, Teredo; issue 11, finding 1) comes out as
 *     that IPv4's /24 and hashes as that IPv4;
 *   - ip_hash is 32 lowercase hex digits exactly when ip is not "";
 *   - referrer is "" or an http(s) origin as the WHATWG URL Standard
 *     serialises it (finding 7): no userinfo, path, query or fragment, a
 *     lowercase host without forbidden code points, a port only when not
 *     the default;
 *   - id, user_id, tier and model hold no control characters (finding 10).
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "enrich.h"
#include "fuzz_util.h"
#include "row.h"

#define RECV_MS 1764441205123ull /* 2025-11-29 18:33:25.123 UTC */
#define MAX_COLS 40

typedef struct column {
    char name[64];
    char type[64];
} column;

static column schema[BF_DATASET_MAX][MAX_COLS];
static size_t schema_n[BF_DATASET_MAX];
static enrich_ctx *ctx;
static catalog *cat;

/* The columns of a .datasource file's SCHEMA: lines "`name` Type `json:..`". */
static void load_schema(unsigned ds)
{
    char rel[128];
    snprintf(rel, sizeof(rel), "tinybird/datasources/%s.datasource", bf_dataset_name(ds));
    const char *path = fuzz_src_path(rel);
    FILE *f = fopen(path, "r");
    FUZZ_CHECK(f, "cannot open %s (set BF_FUZZ_SRCDIR)", path);
    char line[512];
    int in_schema = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "SCHEMA", 6) == 0) {
            in_schema = 1;
            continue;
        }
        char *p = line + strspn(line, " \t");
        if (!in_schema || *p != '`') {
            if (in_schema && *p != '\n' && *p != '\0')
                in_schema = 0;
            continue;
        }
        column *c = &schema[ds][schema_n[ds]];
        char *end = strchr(p + 1, '`');
        FUZZ_CHECK(end && schema_n[ds] < MAX_COLS, "%s: bad column line %s", path, line);
        snprintf(c->name, sizeof(c->name), "%.*s", (int)(end - p - 1), p + 1);
        p = end + 1 + strspn(end + 1, " ");
        size_t tl = strcspn(p, " ,\n");
        snprintf(c->type, sizeof(c->type), "%.*s", (int)tl, p);
        schema_n[ds]++;
    }
    fclose(f);
    FUZZ_CHECK(schema_n[ds] > 0, "%s: no SCHEMA columns", path);
    /* The row writer's columns are the datasource's, in any order. */
    const char *const *cols = row_columns(ds);
    size_t n = 0;
    for (; cols[n]; n++) {
        size_t k = 0;
        while (k < schema_n[ds] && strcmp(schema[ds][k].name, cols[n]) != 0)
            k++;
        FUZZ_CHECK(k < schema_n[ds], "row column %s is not in %s", cols[n], path);
    }
    FUZZ_CHECK(n == schema_n[ds], "%zu row columns, %zu in %s", n, schema_n[ds], path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256], key[4200];
    fuzz_quiet_log();
    for (unsigned ds = 1; ds < BF_DATASET_MAX; ds++)
        load_schema(ds);
    snprintf(key, sizeof(key), "%s/ip-hash.key", fuzz_tmpdir());
    FUZZ_CHECK(enrich_new(key, &ctx, err, sizeof(err)) == 0, "enrich_new: %s", err);
    const char *cpath = fuzz_src_path("daemon/catalog.json");
    FUZZ_CHECK(catalog_load(cpath, &cat, err, sizeof(err)) == 0, "catalog: %s", err);
    enrich_set_catalog(ctx, cat);
    return 0;
}

/* Characters (code points) of a valid UTF-8 string. */
static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* "YYYY-MM-DD HH:MM:SS.mmm", a real date and time. */
static int is_datetime64_3(const char *s, size_t n)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 23 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || s[10] != ' ' || !digits(s + 11, 2) || s[13] != ':' ||
        !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2) || s[19] != '.' ||
        !digits(s + 20, 3))
        return 0;
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    /* ClickHouse's DateTime64 reaches 1900 to 2299. */
    return y >= 1900 && y <= 2299 && mo >= 1 && mo <= 12 && d >= 1 &&
           d <= (mo == 2 && !leap ? 28 : mdays[mo - 1]) && num(s + 11, 2) < 24 &&
           num(s + 14, 2) < 60 && num(s + 17, 2) < 60;
}

static void check_value(const column *c, json_t *v)
{
    const char *t = c->type;
    if (strcmp(t, "String") == 0 || strcmp(t, "LowCardinality(String)") == 0) {
        FUZZ_CHECK(json_is_string(v), "%s: not a string", c->name);
    } else if (strcmp(t, "UInt32") == 0) {
        FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) >= 0 &&
                       json_integer_value(v) <= (json_int_t)UINT32_MAX,
                   "%s: %lld is not a UInt32", c->name,
                   json_is_integer(v) ? (long long)json_integer_value(v) : -1LL);
    } else if (strcmp(t, "Float64") == 0) {
        FUZZ_CHECK(json_is_number(v) && isfinite(json_number_value(v)) &&
                       json_number_value(v) >= 0,
                   "%s: not a finite non-negative number", c->name);
    } else if (strcmp(t, "Bool") == 0) {
        FUZZ_CHECK(json_is_boolean(v), "%s: not true or false", c->name);
    } else if (strcmp(t, "DateTime64(3)") == 0) {
        FUZZ_CHECK(json_is_string(v) &&
                       is_datetime64_3(json_string_value(v), json_string_length(v)),
                   "%s: '%s' is not a DateTime64(3)", c->name,
                   json_is_string(v) ? json_string_value(v) : "(not a string)");
    } else {
        fuzz_fail(__FILE__, __LINE__, "known type", "%s: type %s unknown to this target",
                  c->name, t);
    }
}

/* The IPv4 address an IPv6 address carries, by the forms issue 11 names:
 * 6to4 (2002::/16), NAT64 (64:ff9b::/96), IPv4-compatible (::a.b.c.d, but
 * not :: and ::1) and Teredo (2001:0::/32, the client's address inverted
 * in the last 32 bits). Returns 1 with v4 filled, or 0. */
static int embedded_v4(const unsigned char a[16], unsigned char v4[4])
{
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const unsigned char zero[12] = {0};
    if (a[0] == 0x20 && a[1] == 0x02) {
        memcpy(v4, a + 2, 4);
        return 1;
    }
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) {
        for (int i = 0; i < 4; i++)
            v4[i] = (unsigned char)~a[12 + i];
        return 1;
    }
    if (memcmp(a, nat64, 12) == 0 ||
        (memcmp(a, zero, 12) == 0 && (a[12] | a[13] | a[14] || a[15] > 1))) {
        memcpy(v4, a + 12, 4);
        return 1;
    }
    return 0;
}

/* The sender's address as the daemon reads it: "[v6]" brackets and a
 * "%zone" dropped. Returns 4 or 16 with addr filled, or 0. */
static int parse_sender_ip(const bf_str *ip, unsigned char addr[16])
{
    char text[80];
    if (ip->len == 0 || ip->len >= sizeof(text) || memchr(ip->ptr, '\0', ip->len))
        return 0;
    memcpy(text, ip->ptr, ip->len);
    text[ip->len] = '\0';
    char *s = text;
    if (*s == '[') {
        char *close = strchr(++s, ']');
        if (!close || close[1])
            return 0;
        *close = '\0';
    }
    char *zone = strchr(s, '%');
    if (zone)
        *zone = '\0';
    if (inet_pton(AF_INET, s, addr) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, addr) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) != 0)
            return 16;
        memmove(addr, addr + 12, 4);
        return 4;
    }
    return 0;
}

static void check_ip(const bf_event *ev, json_t *row)
{
    const char *ip = json_string_value(json_object_get(row, "ip"));
    const char *hash = json_string_value(json_object_get(row, "ip_hash"));
    FUZZ_CHECK(ip && hash, "ip or ip_hash is not a string");
    unsigned char in[16], out[16], v4[4] = {0};
    int in_len = BF_HAS(ev, ip) ? parse_sender_ip(&ev->ip, in) : 0;
    if (!*ip) {
        FUZZ_CHECK(!*hash, "ip_hash '%s' without an ip", hash);
        FUZZ_CHECK(!in_len, "ip '%.*s' parses but the row has none", (int)ev->ip.len,
                   ev->ip.ptr);
        return;
    }
    FUZZ_CHECK(strlen(hash) == IP_HASH_HEX && strspn(hash, "0123456789abcdef") == IP_HASH_HEX,
               "ip_hash '%s'", hash);
    FUZZ_CHECK(in_len, "row ip '%s' from an unparseable sender ip", ip);
    int carries = in_len == 16 && embedded_v4(in, v4);
    if (inet_pton(AF_INET, ip, out) == 1) {
        FUZZ_CHECK(out[3] == 0, "ip '%s' is not a /24", ip);
        FUZZ_CHECK(memcmp(out, in_len == 4 ? in : v4, 3) == 0 && (in_len == 4 || carries),
                   "ip '%s' is not the /24 of the sender's IPv4", ip);
        if (carries) { /* hashed as the IPv4 it carries */
            char text[16], anon[48], h4[IP_HASH_HEX + 1];
            snprintf(text, sizeof(text), "%u.%u.%u.%u", v4[0], v4[1], v4[2], v4[3]);
            FUZZ_CHECK(enrich_ip(ctx, text, strlen(text), anon, h4) == 0 &&
                           strcmp(anon, ip) == 0 && strcmp(h4, hash) == 0,
                       "ip_hash of '%.*s' is not the hash of %s", (int)ev->ip.len,
                       ev->ip.ptr, text);
        }
        return;
    }
    FUZZ_CHECK(inet_pton(AF_INET6, ip, out) == 1, "ip '%s' is no address", ip);
    static const unsigned char zero[10] = {0};
    FUZZ_CHECK(memcmp(out + 6, zero, 10) == 0, "ip '%s' is not a /48", ip);
    FUZZ_CHECK(in_len == 16 && memcmp(out, in, 6) == 0,
               "ip '%s' is not the /48 of the sender's address", ip);
    FUZZ_CHECK(!carries, "ip '%s': an IPv6 /48 for an address that carries IPv4 %u.%u.%u.%u",
               ip, v4[0], v4[1], v4[2], v4[3]);
}

/* WHATWG's forbidden domain code points: a host holding one is no host. */
static int forbidden_in_host(unsigned char c)
{
    return c <= ' ' || c == 0x7f || strchr("#%/:<>?@[\\]^|", c);
}

/* referrer is "" or an http(s) origin as WHATWG serialises it: lowercase
 * scheme and host, no userinfo, path, query or fragment, a port only when
 * it is not the scheme's default. */
static void check_referrer(json_t *row)
{
    const char *r = json_string_value(json_object_get(row, "referrer"));
    FUZZ_CHECK(r, "referrer is not a string");
    if (!*r)
        return;
    const char *host = strncmp(r, "https://", 8) == 0  ? r + 8
                       : strncmp(r, "http://", 7) == 0 ? r + 7
                                                       : NULL;
    FUZZ_CHECK(host, "referrer '%s' is neither http:// nor https://", r);
    size_t hl;
    if (*host == '[') { /* an IPv6 literal */
        const char *close = strchr(host, ']');
        unsigned char a[16];
        char v6[64];
        FUZZ_CHECK(close && close - host - 1 < (long)sizeof(v6), "referrer '%s': bad [", r);
        snprintf(v6, sizeof(v6), "%.*s", (int)(close - host - 1), host + 1);
        FUZZ_CHECK(inet_pton(AF_INET6, v6, a) == 1, "referrer '%s': no IPv6 in []", r);
        hl = (size_t)(close - host) + 1;
    } else {
        for (hl = 0; host[hl] && host[hl] != ':'; hl++)
            FUZZ_CHECK(!forbidden_in_host((unsigned char)host[hl]) &&
                           !(host[hl] >= 'A' && host[hl] <= 'Z') &&
                           (unsigned char)host[hl] < 0x80,
                       "referrer '%s': byte %#x in its host", r, (unsigned char)host[hl]);
        FUZZ_CHECK(hl > 0, "referrer '%s' has no host", r);
        /* A host whose last label is a number is an IPv4 address, which
         * WHATWG writes as four decimal parts. */
        char h[300];
        snprintf(h, sizeof(h), "%.*s", (int)hl, host);
        const char *dot = strrchr(h, '.');
        const char *last = dot && dot[1] ? dot + 1 : h;
        if (dot && !dot[1]) { /* one trailing dot: the label before it */
            *(char *)dot = '\0';
            last = strrchr(h, '.') ? strrchr(h, '.') + 1 : h;
        }
        unsigned char a4[4];
        char canon[16];
        if (*last && (strspn(last, "0123456789") == strlen(last) ||
                      (strncmp(last, "0x", 2) == 0 &&
                       strspn(last + 2, "0123456789abcdef") == strlen(last + 2))))
            FUZZ_CHECK(inet_pton(AF_INET, h, a4) == 1 &&
                           snprintf(canon, sizeof(canon), "%u.%u.%u.%u", a4[0], a4[1], a4[2],
                                    a4[3]) > 0 && strcmp(canon, h) == 0,
                       "referrer '%s': a numeric host that is not a dotted IPv4", r);
    }
    const char *port = host + hl;
    if (*port) {
        FUZZ_CHECK(*port == ':' && port[1] && strspn(port + 1, "0123456789") == strlen(port + 1),
                   "referrer '%s' is more than an origin", r);
        long p = strtol(port + 1, NULL, 10);
        FUZZ_CHECK(p <= 65535 && p != (host == r + 8 ? 443 : 80) &&
                       (port[1] != '0' || !port[2]),
                   "referrer '%s': port %ld", r, p);
    }
}

/* Identifiers hold no C0 control, DEL or C1 control (issue 11, finding 10):
 * they become keys and labels downstream. */
static void check_identifier(json_t *row, const char *col)
{
    json_t *v = json_object_get(row, col);
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t n = json_string_length(v);
    FUZZ_CHECK(s, "%s is not a string", col);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(s[i] >= 0x20 && s[i] != 0x7f &&
                       !(s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f),
                   "%s holds control byte %#x at %zu", col, s[i], i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bf_event ev;
    bf_row row;
    if (fuzz_decode_datagram(0, data, size, &ev) != BF_OK)
        return 0;
    memset(&row, 0xA5, sizeof(row)); /* enrich must set what the row shows */
    enrich_event(ctx, &ev, RECV_MS, &row);

    size_t cap = row_max_bytes(size);
    char *buf = malloc(cap);
    FUZZ_CHECK(buf, "out of memory");
    size_t n = row_format(buf, &row);
    FUZZ_CHECK(n > 0 && n <= cap && buf[n - 1] == '\n', "row of %zu bytes (cap %zu)", n, cap);
    FUZZ_CHECK(!memchr(buf, '\n', n - 1), "a newline inside the row: %.*s", (int)n, buf);
    FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)buf, n), "row is not UTF-8: %.*s",
               (int)n, buf);
    json_error_t jerr;
    json_t *obj = json_loadb(buf, n - 1, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(json_is_object(obj), "row does not parse (%s): %.*s", jerr.text, (int)n, buf);

    unsigned ds = ev.dataset;
    FUZZ_CHECK(json_object_size(obj) == schema_n[ds], "%zu keys, %zu columns: %.*s",
               json_object_size(obj), schema_n[ds], (int)n, buf);
    for (size_t k = 0; k < schema_n[ds]; k++) {
        json_t *v = json_object_get(obj, schema[ds][k].name);
        FUZZ_CHECK(v, "column %s missing: %.*s", schema[ds][k].name, (int)n, buf);
        check_value(&schema[ds][k], v);
    }
    json_t *p = json_object_get(obj, "prompt");
    FUZZ_CHECK(!p || utf8_chars(json_string_value(p), json_string_length(p)) <=
                         BF_PROMPT_MAX_CHARS, "prompt longer than %d characters",
               BF_PROMPT_MAX_CHARS);
    json_t *e = json_object_get(obj, "error_message");
    FUZZ_CHECK(utf8_chars(json_string_value(e), json_string_length(e)) <= ERROR_MAX_CHARS,
               "error_message longer than %d characters", ERROR_MAX_CHARS);
    check_ip(&ev, obj);
    check_referrer(obj);
    static const char *const idents[] = {"id", "user_id", "tier", "model"};
    for (size_t k = 0; k < sizeof(idents) / sizeof(idents[0]); k++)
        check_identifier(obj, idents[k]);
    json_decref(obj);
    free(buf);
    return 0;
}
