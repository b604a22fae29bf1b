/* enrich.c: catalog, cost, ip, id, timestamps, truncation. See enrich.h. */
#include "enrich.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_check.h"
#include "fnv.h"
#include "hex.h"
#include "stats.h"

/* Recent addresses and their results: the same clients send many requests,
 * and an HMAC costs more than the rest of the row. Keyed by the ip field as
 * sent, so a hit skips parsing too (another spelling of the same address
 * is a miss that computes the same result). Four ways per set: clients
 * that share a set are not evicted by each other's requests unless five
 * of them take turns (with two ways, 1,000 clients missed one request in
 * twelve). A miss replaces the ways of its set in turn, the first way
 * keeping the count: empty ways fill first and nothing moves (one counter
 * for the whole cache replaced live ways of sets with empty ones). The
 * hash of the text is kept, so that a probe compares texts only when the
 * hashes agree. */
#define IP_CACHE_SLOTS 4096
#define IP_CACHE_WAYS 4

typedef struct ip_entry {
    uint32_t tag;             /* hash_words of the text: most ways differ here */
    uint8_t tlen;             /* bytes of text; 0: empty */
    uint8_t next;             /* first way of a set: the way a miss replaces */
    uint8_t alen;             /* strlen(anon) */
    char text[64];            /* the ip field (fields.def: at most 64 bytes) */
    char anon[48];
    char hash[IP_HASH_HEX + 1];
} ip_entry;

/* Referrers and their origins, keyed by the referrer as sent: the same
 * pages send most requests, and the WHATWG parse costs more than the rest
 * of the event. Two ways per set (the IP cache has four): a miss moves
 * way 0 to way 1 and takes way 0. Referrers longer than REF_TEXT_MAX, or
 * whose origin is longer than REF_ORIGIN_MAX, are parsed every time. */
#define REF_CACHE_SLOTS 1024
#define REF_CACHE_WAYS 2
#define REF_TEXT_MAX 190
#define REF_ORIGIN_MAX 96

typedef struct ref_entry {
    uint16_t tlen;            /* bytes of text; 0: empty */
    uint16_t olen;
    char text[REF_TEXT_MAX];
    char origin[REF_ORIGIN_MAX];
} ref_entry;

struct enrich_ctx {
    const catalog *cat;
    ip_entry *ip_cache;       /* IP_CACHE_SLOTS entries */
    ref_entry *ref_cache;     /* REF_CACHE_SLOTS entries */
    /* HMAC-SHA256 (RFC 2104) from its two keyed states: SHA-256 having
     * absorbed the key XOR ipad (inner) and XOR opad (outer), made once;
     * each address copies them into work. EVP_MAC would re-key, look up
     * parameters and allocate per call: 8,000 instructions against 5,000. */
    EVP_MD *sha256;
    EVP_MD_CTX *inner, *outer, *work;
    uint64_t rng[4];      /* xoshiro256** for ids; seeded from getrandom */
    uint64_t max_age_ms, max_skew_ms; /* the start time window; 0: open */
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Read the key from an open fd: its bytes, less a trailing newline. */
static int read_key(int fd, const char *path, unsigned char *key, size_t *klen,
                    char *err, size_t n)
{
    /* Whoever reads the key can reverse ip_hash for any address they
     * guess: it is a secret, like an ssh key. */
    int rc = file_check(fd, path, "ip hash key", FILE_CHECK_SECRET, err, n);
    if (rc < 0)
        return rc;
    ssize_t k = read(fd, key, 256);
    if (k < 0) {
        int e = errno;
        snprintf(err, n, "reading ip hash key %s: %s", path, strerror(e));
        return -e;
    }
    while (k > 0 && (key[k - 1] == '\n' || key[k - 1] == '\r'))
        k--;
    if (k < 16) {
        snprintf(err, n, "ip hash key %s: needs at least 16 bytes", path);
        return -EINVAL;
    }
    *klen = (size_t)k;
    return 0;
}

int enrich_check_key(const char *key_file, char *err, size_t n)
{
    int fd = open(key_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "opening ip hash key %s: %s", key_file, strerror(e));
        return -e;
    }
    unsigned char key[256];
    size_t klen;
    int rc = read_key(fd, key_file, key, &klen, err, n);
    close(fd);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* Read the key, or create it. The file holds text (64 hex digits when we
 * made it); its bytes, less a trailing newline, are the HMAC key. */
static int load_key(const char *path, unsigned char *key, size_t *klen,
                    char *err, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        unsigned char raw[32];
        char hex[65];
        if (getrandom(raw, sizeof(raw), 0) != sizeof(raw)) {
            int e = errno;
            snprintf(err, n, "getrandom: %s", strerror(e));
            return -e;
        }
        for (int i = 0; i < 32; i++)
            hex_byte(hex + 2 * i, raw[i]);
        hex[64] = '\n';
        /* Written whole to a temporary name, then link(2)ed into place:
         * a crash never leaves a short key behind, and of two daemons
         * starting at once only one key wins (link fails with EEXIST). The
         * temporary name is random and made with O_EXCL (mkostemp, 0600),
         * so nothing planted at a guessable name (a symlink to a file the
         * key would be written into) is ever opened. */
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
        int w = mkostemp(tmp, O_CLOEXEC);
        if (w < 0) {
            int e = errno;
            snprintf(err, n, "creating ip hash key %s: %s", tmp, strerror(e));
            return -e;
        }
        ssize_t k = write(w, hex, 65);
        int bad = k != 65 || fsync(w) < 0;
        int e = k >= 0 && k != 65 ? EIO : errno;
        close(w);
        if (!bad && link(tmp, path) < 0 && errno != EEXIST) {
            bad = 1;
            e = errno;
        }
        if (bad) {
            snprintf(err, n, "writing ip hash key %s: %s", path,
                     e == EIO && k >= 0 ? "short write" : strerror(e));
            unlink(tmp);
            return -e;
        }
        unlink(tmp);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "opening ip hash key %s: %s", path, strerror(e));
        return -e;
    }
    int rc = read_key(fd, path, key, klen, err, n);
    close(fd);
    return rc;
}

/* The two keyed states of HMAC-SHA256 for key (klen bytes; a key longer
 * than SHA-256's 64-byte block is hashed first, as RFC 2104 says). */
static int hmac_keys(enrich_ctx *ctx, const unsigned char *key, size_t klen)
{
    unsigned char block[64] = {0}, pad[64];
    unsigned int dlen = 0;
    ctx->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx->inner = EVP_MD_CTX_new();
    ctx->outer = EVP_MD_CTX_new();
    ctx->work = EVP_MD_CTX_new();
    int ok = ctx->sha256 && ctx->inner && ctx->outer && ctx->work;
    if (ok && klen > sizeof(block))
        ok = EVP_Digest(key, klen, block, &dlen, ctx->sha256, NULL);
    else if (ok)
        memcpy(block, key, klen);
    for (size_t i = 0; ok && i < sizeof(pad); i++)
        pad[i] = block[i] ^ 0x36;
    ok = ok && EVP_DigestInit_ex(ctx->inner, ctx->sha256, NULL) &&
         EVP_DigestUpdate(ctx->inner, pad, sizeof(pad));
    for (size_t i = 0; ok && i < sizeof(pad); i++)
        pad[i] = block[i] ^ 0x5c;
    ok = ok && EVP_DigestInit_ex(ctx->outer, ctx->sha256, NULL) &&
         EVP_DigestUpdate(ctx->outer, pad, sizeof(pad));
    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(pad, sizeof(pad));
    return ok ? 0 : -ENOSYS;
}

/* HMAC-SHA256 of data (n bytes) into mac (32 bytes). */
static int hmac(enrich_ctx *ctx, const unsigned char *data, size_t n, unsigned char *mac)
{
    unsigned char ih[32];
    unsigned int len = 0;
    int ok = EVP_MD_CTX_copy_ex(ctx->work, ctx->inner) &&
             EVP_DigestUpdate(ctx->work, data, n) &&
             EVP_DigestFinal_ex(ctx->work, ih, &len) && len == sizeof(ih) &&
             EVP_MD_CTX_copy_ex(ctx->work, ctx->outer) &&
             EVP_DigestUpdate(ctx->work, ih, sizeof(ih)) &&
             EVP_DigestFinal_ex(ctx->work, mac, &len) && len == 32;
    return ok ? 0 : -EINVAL;
}

int enrich_new(const char *key_file, enrich_ctx **out, char *err, size_t n)
{
    unsigned char key[256];
    size_t klen;
    *out = NULL;
    int rc = load_key(key_file, key, &klen, err, n);
    if (rc < 0)
        return rc;
    enrich_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        snprintf(err, n, "out of memory");
        return -ENOMEM;
    }
    ctx->ip_cache = calloc(IP_CACHE_SLOTS, sizeof(ip_entry));
    ctx->ref_cache = calloc(REF_CACHE_SLOTS, sizeof(ref_entry));
    int mem = ctx->ip_cache && ctx->ref_cache;
    if (!mem || hmac_keys(ctx, key, klen) < 0) {
        snprintf(err, n, "%s", mem ? "OpenSSL SHA-256 unavailable" : "out of memory");
        rc = mem ? -ENOSYS : -ENOMEM;
        OPENSSL_cleanse(key, sizeof(key));
        enrich_free(ctx);
        return rc;
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (getrandom(ctx->rng, sizeof(ctx->rng), 0) != sizeof(ctx->rng)) {
        int e = errno;
        snprintf(err, n, "getrandom: %s", strerror(e));
        enrich_free(ctx);
        return -e;
    }
    *out = ctx;
    return 0;
}

void enrich_free(enrich_ctx *ctx)
{
    if (!ctx)
        return;
    EVP_MD_CTX_free(ctx->inner);
    EVP_MD_CTX_free(ctx->outer);
    EVP_MD_CTX_free(ctx->work);
    EVP_MD_free(ctx->sha256);
    free(ctx->ip_cache);
    free(ctx->ref_cache);
    free(ctx);
}

void enrich_set_catalog(enrich_ctx *ctx, const catalog *cat) { ctx->cat = cat; }

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* ---- referrer: the origin of a URL, by the WHATWG URL Standard ----
 *
 * Only what an origin needs: scheme, then (special schemes) any run of '/'
 * and '\', then the authority up to the first '/', '?', '#' or '\'; the
 * userinfo is what comes before its last '@'; then host and port. Browsers
 * parse this way, so "https://user:pa?ss@host/" has the host "user" and the
 * port "pa", which is no port: the URL is invalid and the referrer "". */

/* WHATWG's forbidden domain code points, which fail a host: C0 controls,
 * space, # % / : < > ? @ [ \ ] ^ | and DEL. */
static int host_forbidden(unsigned char c)
{
    return c <= ' ' || c == 0x7f || (c < 0x80 && strchr("#%/:<>?@[\\]^|", c));
}

/* One IPv4 part ("0x1f", "017", "255"); -1 when it is not a number. */
static int64_t ipv4_number(const char *s, size_t n)
{
    unsigned radix = 10;
    if (n == 0)
        return -1;
    if (n >= 2 && s[0] == '0' && (s[1] | 32) == 'x') {
        radix = 16;
        s += 2;
        n -= 2;
    } else if (n >= 2 && s[0] == '0') {
        radix = 8;
        s++;
        n--;
    }
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hex_value((unsigned char)s[i]);
        if (d < 0 || (unsigned)d >= radix)
            return -1;
        v = v * radix + d;
        if (v > 0xffffffffll)
            v = 0x100000000ll; /* too large whatever follows */
    }
    return v;
}

/* WHATWG "ends in a number": the last dot-separated part (a trailing dot
 * aside) is all digits or 0x-hex. Such a host must be an IPv4 address. */
static int ends_in_number(const char *h, size_t n)
{
    if (n && h[n - 1] == '.') /* one trailing dot is allowed */
        n--;
    const char *dot = memrchr(h, '.', n);
    const char *last = dot ? dot + 1 : h;
    size_t ll = (size_t)(h + n - last), k = 0;
    while (k < ll && last[k] >= '0' && last[k] <= '9')
        k++;
    if (ll && k == ll)
        return 1;
    return ll >= 2 && last[0] == '0' && (last[1] | 32) == 'x' &&
           ipv4_number(last, ll) >= 0;
}

/* WHATWG IPv4 parser ("0x7f.1" is 127.0.0.1); dotted decimal into out
 * (16 bytes). Returns the length, or 0 when it is not an IPv4 address. */
static size_t ipv4_host(const char *h, size_t n, char *out)
{
    int64_t num[4];
    unsigned parts = 0;
    if (n && h[n - 1] == '.') /* one trailing dot is allowed */
        n--;
    for (size_t i = 0; i <= n;) {
        const char *dot = memchr(h + i, '.', n - i);
        size_t pl = dot ? (size_t)(dot - h) - i : n - i;
        if (parts == 4 || (num[parts] = ipv4_number(h + i, pl)) < 0)
            return 0;
        parts++;
        i += pl + 1;
    }
    uint64_t v = (uint64_t)num[parts - 1];
    if (v >= 1ull << (8 * (5 - parts)))
        return 0;
    for (unsigned i = 0; i + 1 < parts; i++) {
        if (num[i] > 255)
            return 0;
        v += (uint64_t)num[i] << (8 * (3 - i));
    }
    return (size_t)snprintf(out, 16, "%u.%u.%u.%u", (unsigned)(v >> 24) & 255,
                            (unsigned)(v >> 16) & 255, (unsigned)(v >> 8) & 255,
                            (unsigned)v & 255);
}

/* "[...]" by WHATWG's IPv6 serialiser: lowercase hex, the first longest run
 * of two or more zero pieces as "::", no dotted IPv4 tail. Into out (48
 * bytes); returns the length, or 0 when it is not an IPv6 address. */
static size_t ipv6_host(const char *h, size_t n, char *out)
{
    char text[64];
    unsigned char a[16];
    if (n < 2 || h[0] != '[' || h[n - 1] != ']' || n - 2 >= sizeof(text))
        return 0;
    memcpy(text, h + 1, n - 2);
    text[n - 2] = '\0';
    if (inet_pton(AF_INET6, text, a) != 1)
        return 0;
    unsigned piece[8];
    int best = -1, best_len = 1;
    for (int i = 0; i < 8; i++)
        piece[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    for (int i = 0; i < 8;) {
        int k = i;
        while (k < 8 && piece[k] == 0)
            k++;
        if (k - i > best_len) {
            best = i;
            best_len = k - i;
        }
        i = k > i ? k : i + 1;
    }
    size_t o = 0;
    out[o++] = '[';
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            o += (size_t)snprintf(out + o, 4, i == 0 ? "::" : ":");
            i += best_len - 1;
            continue;
        }
        o += (size_t)snprintf(out + o, 6, "%x%s", piece[i], i < 7 ? ":" : "");
    }
    out[o++] = ']';
    out[o] = '\0';
    return o;
}

size_t enrich_referrer(const char *url, size_t len, char *out)
{
    const unsigned char *u = (const unsigned char *)url;
    size_t i = 0, end = len;
    /* Leading and trailing C0 controls and spaces are stripped; tabs and
     * newlines anywhere are ignored (skipped as they come). */
    while (i < end && u[i] <= ' ')
        i++;
    while (end > i && u[end - 1] <= ' ')
        end--;
#define URL_SKIP(c) ((c) == '\t' || (c) == '\n' || (c) == '\r')
    char scheme[8];
    size_t sl = 0;
    for (;; i++) {
        if (i == end)
            goto none; /* no "scheme:": a relative URL, with no base */
        unsigned char c = u[i];
        if (URL_SKIP(c))
            continue;
        if (c == ':' && sl)
            break;
        int alpha = (c | 32) >= 'a' && (c | 32) <= 'z';
        if (!alpha && (!sl || !((c >= '0' && c <= '9') || c == '+' || c == '-' ||
                                c == '.')))
            goto none;
        if (sl == 5)
            goto none; /* longer than "https": not one we keep */
        scheme[sl++] = (char)lower(c);
    }
    scheme[sl] = '\0';
    int https = strcmp(scheme, "https") == 0;
    if (!https && strcmp(scheme, "http") != 0)
        goto none; /* only http and https: no javascript:, data:, file: */
    /* Special schemes skip any run of slashes and backslashes. */
    for (i++; i < end && (u[i] == '/' || u[i] == '\\' || URL_SKIP(u[i])); i++)
        ;
    /* The authority; hp keeps what follows its last '@' (host and port), at
     * most REFERRER_MAX bytes, so that host below (the same size) always
     * has room for its NUL; a longer one could not make an origin anyway. */
    char hp[REFERRER_MAX];
    size_t hl = 0;
    int overlong = 0;
    for (; i < end; i++) {
        unsigned char c = u[i];
        if (URL_SKIP(c))
            continue;
        if (c == '/' || c == '?' || c == '#' || c == '\\')
            break;
        if (c == '@') {
            hl = 0;
            overlong = 0;
        } else if (hl < sizeof(hp)) {
            hp[hl++] = (char)c;
        } else {
            overlong = 1;
        }
    }
#undef URL_SKIP
    if (overlong || hl == 0)
        goto none; /* too long to keep, or no host (after "user@" too) */
    /* Host and port: the first ':' outside brackets. */
    size_t hostlen = 0;
    int br = 0;
    while (hostlen < hl && (hp[hostlen] != ':' || br)) {
        if (hp[hostlen] == '[')
            br = 1;
        else if (hp[hostlen] == ']')
            br = 0;
        hostlen++;
    }
    if (hostlen == 0)
        goto none;
    unsigned long port = 0;
    int has_port = 0;
    for (size_t k = hostlen + 1; k < hl; k++) {
        if (hp[k] < '0' || hp[k] > '9')
            goto none; /* "user:pa": not a port, so not a URL */
        port = port * 10 + (unsigned long)(hp[k] - '0');
        if (port > 65535)
            goto none;
        has_port = 1;
    }
    if (has_port && port == (https ? 443ul : 80ul))
        has_port = 0; /* the scheme's default port is not written */
    char host[REFERRER_MAX + 1];
    size_t o = 0;
    if (hp[0] == '[') {
        char v6[48];
        if (!(o = ipv6_host(hp, hostlen, v6)))
            goto none;
        memcpy(host, v6, o + 1);
    } else {
        /* Percent-decoded, lowercased; a byte past ASCII would need IDNA
         * (xn--), which the daemon does not do: refused instead. */
        for (size_t k = 0; k < hostlen; k++) {
            unsigned char c = (unsigned char)hp[k];
            if (c == '%' && k + 2 < hostlen &&
                hex_value((unsigned char)hp[k + 1]) >= 0 &&
                hex_value((unsigned char)hp[k + 2]) >= 0) {
                c = (unsigned char)(hex_value((unsigned char)hp[k + 1]) * 16 +
                                    hex_value((unsigned char)hp[k + 2]));
                k += 2;
            }
            if (c >= 0x80 || host_forbidden(c))
                goto none;
            host[o++] = (char)lower(c);
        }
        host[o] = '\0';
        if (ends_in_number(host, o)) {
            char v4[16];
            if (!(o = ipv4_host(host, o, v4)))
                goto none;
            memcpy(host, v4, o + 1);
        }
    }
    char portbuf[8] = "";
    if (has_port)
        snprintf(portbuf, sizeof(portbuf), ":%lu", port);
    size_t total = sl + 3 + o + strlen(portbuf);
    if (total > REFERRER_MAX)
        goto none;
    size_t pl = strlen(portbuf);
    memcpy(out, scheme, sl);
    memcpy(out + sl, "://", 3);
    memcpy(out + sl + 3, host, o);
    memcpy(out + sl + 3 + o, portbuf, pl + 1);
    return total;
none:
    out[0] = '\0';
    return 0;
}

/* enrich_referrer_cached, inline in enrich_event. */
static inline __attribute__((always_inline)) size_t ref_cached(enrich_ctx *ctx, const char *url,
                                                              size_t len, char *out)
{
    if (len == 0 || len > REF_TEXT_MAX)
        return enrich_referrer(url, len, out);
    ref_entry *set = &ctx->ref_cache[hash_words(url, len) & (REF_CACHE_SLOTS - REF_CACHE_WAYS)];
    for (int w = 0; w < REF_CACHE_WAYS; w++) {
        if (set[w].tlen == len && memcmp(set[w].text, url, len) == 0) {
            memcpy(out, set[w].origin, REF_ORIGIN_MAX); /* fixed: no call; out has room */
            out[set[w].olen] = '\0';
            return set[w].olen;
        }
    }
    size_t olen = enrich_referrer(url, len, out);
    if (olen <= REF_ORIGIN_MAX) {
        set[1] = set[0];
        set[0].tlen = (uint16_t)len;
        memcpy(set[0].text, url, len);
        set[0].olen = (uint16_t)olen;
        memcpy(set[0].origin, out, olen);
    }
    return olen;
}

size_t enrich_referrer_cached(enrich_ctx *ctx, const char *url, size_t len, char *out)
{
    return ref_cached(ctx, url, len, out);
}

/* An IPv6 address that carries an IPv4 one is that IPv4 address: its /48
 * would keep the IPv4 whole (6to4) or its hash would differ from the same
 * client's over IPv4. When addr is one, its IPv4 goes to addr[0..3] and 1
 * is returned. The kinds (RFC 4291, 3056, 6052, 4380):
 *   ::ffff:a.b.c.d    IPv4-mapped
 *   ::a.b.c.d         IPv4-compatible (not :: and ::1)
 *   64:ff9b::a.b.c.d  NAT64 well-known prefix (/96)
 *   2002:AABB:CCDD::  6to4: the IPv4 in bits 16-47
 *   2001:0:...:WWXX:YYZZ  Teredo: the client's IPv4 XOR-ed, last 32 bits */
static int embedded_ipv4(unsigned char *addr)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff},
                               compat[12] = {0},
                               nat64[12] = {0, 0x64, 0xff, 0x9b};
    unsigned char v4[4];
    if (memcmp(addr, mapped, 12) == 0 || memcmp(addr, nat64, 12) == 0 ||
        (memcmp(addr, compat, 12) == 0 &&
         !(addr[12] == 0 && addr[13] == 0 && addr[14] == 0 && addr[15] <= 1))) {
        memcpy(v4, addr + 12, 4);
    } else if (addr[0] == 0x20 && addr[1] == 0x02) {
        memcpy(v4, addr + 2, 4);
    } else if (addr[0] == 0x20 && addr[1] == 0x01 && addr[2] == 0 && addr[3] == 0) {
        for (int i = 0; i < 4; i++)
            v4[i] = (unsigned char)~addr[12 + i];
    } else {
        return 0;
    }
    memcpy(addr, v4, 4);
    return 1;
}

static char *put_dec(char *p, unsigned v) /* 0 to 255 */
{
    if (v >= 100)
        *p++ = (char)('0' + v / 100);
    if (v >= 10)
        *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* The anonymised address as inet_ntop writes it (glibc's inet_ntop4 goes
 * through sprintf): IPv4 "a.b.c.0"; IPv6 its /48, whose last five pieces
 * are zero, so RFC 5952's longest run of zeros is always the tail: the
 * pieces up to the last nonzero one of the first three, then "::". */
static size_t anon_text(const unsigned char *addr, size_t alen, char *out)
{
    char *p = out;
    if (alen == 4) {
        for (int i = 0; i < 3; i++) {
            p = put_dec(p, addr[i]);
            *p++ = '.';
        }
        *p++ = '0';
    } else {
        int last = -1;
        for (int i = 0; i < 3; i++)
            if (addr[2 * i] | addr[2 * i + 1])
                last = i;
        for (int i = 0; i <= last; i++) {
            unsigned v = (unsigned)addr[2 * i] << 8 | addr[2 * i + 1];
            int started = 0;
            for (int sh = 12; sh >= 0; sh -= 4) {
                if (started || (v >> sh) & 15 || sh == 0) {
                    *p++ = hex_digit(v >> sh);
                    started = 1;
                }
            }
            if (i < last)
                *p++ = ':';
        }
        *p++ = ':';
        *p++ = ':';
    }
    *p = '\0';
    return (size_t)(p - out);
}

/* enrich_ip, returning the length of the anonymised address (a row
 * writes it without strlen). */
static inline __attribute__((always_inline)) int ip_anon(enrich_ctx *ctx, const char *ip,
                                                         size_t len, char *out, char *hash)
{
    char text[64 + 1]; /* the longest ip fields.def accepts, and a NUL */
    unsigned char addr[16];
    size_t alen;
    out[0] = hash[0] = '\0';
    if (len == 0 || len >= sizeof(text))
        return -EINVAL;
    uint32_t tag = hash_words(ip, len);
    ip_entry *set = &ctx->ip_cache[tag & (IP_CACHE_SLOTS - IP_CACHE_WAYS)];
    for (int w = 0; w < IP_CACHE_WAYS; w++) {
        if (set[w].tag == tag && set[w].tlen == len && key_equal(set[w].text, ip, len)) {
            memcpy(out, set[w].anon, sizeof(set[w].anon));
            memcpy(hash, set[w].hash, sizeof(set[w].hash));
            return set[w].alen;
        }
    }
    /* A NUL inside would end the text early and hide trailing bytes
     * (what is cached passed this). */
    if (memchr(ip, '\0', len))
        return -EINVAL;
    memcpy(text, ip, len);
    text[len] = '\0';
    char *s = text;
    if (s[0] == '[') { /* "[2001:db8::1]" */
        s++;
        char *close = strchr(s, ']');
        if (!close || close[1] != '\0') /* "]" ends it: no ":port" */
            return -EINVAL;
        *close = '\0';
    }
    char *zone = strchr(s, '%'); /* fe80::1%eth0 */
    if (zone)
        *zone = '\0';
    if (inet_pton(AF_INET, s, addr) == 1) {
        alen = 4;
    } else if (inet_pton(AF_INET6, s, addr) == 1) {
        alen = embedded_ipv4(addr) ? 4 : 16;
    } else {
        return -EINVAL;
    }
    /* The hash is of the full binary address, so "::ffff:1.2.3.4",
     * "2002:102:304::1" and "1.2.3.4" hash alike. */
    unsigned char mac[32];
    if (hmac(ctx, addr, alen, mac) < 0)
        return -EINVAL;
    hex_8bytes(hash, mac);
    hex_8bytes(hash + 16, mac + 8);
    hash[IP_HASH_HEX] = '\0';
    size_t olen = anon_text(addr, alen, out);
    ip_entry *e = &set[set[0].next++ & (IP_CACHE_WAYS - 1)];
    e->tag = tag;
    e->tlen = (uint8_t)len;
    e->alen = (uint8_t)olen;
    memcpy(e->text, ip, len);
    memcpy(e->anon, out, sizeof(e->anon));
    memcpy(e->hash, hash, sizeof(e->hash));
    return (int)olen;
}

int enrich_ip(enrich_ctx *ctx, const char *ip, size_t len, char *out, char *hash)
{
    int rc = ip_anon(ctx, ip, len, out, hash);
    return rc < 0 ? rc : 0;
}

/* failed: the row's status is "error" (given, or implied by an error
 * message), so a failed image costs nothing. */
static double row_cost(const bf_event *ev, const catalog_model *m, int failed)
{
    if (!m || ev->cached)
        return 0.0; /* a cache hit costs nothing */
    if (m->per_image > 0 && ev->dataset == BF_DATASET_image_events)
        return failed ? 0.0 : m->per_image;
    /* cached_tokens belongs to llm_events; elsewhere it is ignored. */
    uint64_t prompt = ev->prompt_tokens,
             cached = ev->dataset == BF_DATASET_llm_events ? ev->cached_tokens : 0;
    if (cached > prompt)
        cached = prompt; /* cached tokens are part of the prompt */
    return ((double)(prompt - cached) * m->prompt_per_mtok +
            (double)cached * m->cached_prompt_per_mtok +
            (double)ev->completion_tokens * m->completion_per_mtok) / 1e6;
}

static bf_str str_or(bf_str s, int has, const char *def)
{
    if (has && s.len)
        return s;
    return (bf_str){def, strlen(def)};
}

void enrich_set_time_window(enrich_ctx *ctx, uint64_t max_age_ms, uint64_t max_skew_ms)
{
    ctx->max_age_ms = max_age_ms;
    ctx->max_skew_ms = max_skew_ms;
}

bf_reason enrich_event(enrich_ctx *ctx, const bf_event *ev, uint64_t recv_ms,
                       bf_row *row)
{
    row->dataset = ev->dataset;
    /* Timestamps: fill what is missing from what is given; a sender that
     * gives only duration_ms is taken to send when the request ended. */
    int hs = BF_HAS(ev, start_time), he = BF_HAS(ev, end_time),
        hd = BF_HAS(ev, duration_ms);
    uint64_t d = hd ? ev->duration_ms : 0;
    if (hs) {
        row->start_ms = ev->start_time;
        row->end_ms = he ? ev->end_time : row->start_ms + d;
    } else if (he) {
        row->end_ms = ev->end_time;
        row->start_ms = d <= row->end_ms ? row->end_ms - d : 0;
    } else {
        row->end_ms = recv_ms;
        row->start_ms = d <= recv_ms ? recv_ms - d : 0;
    }
    row->duration_ms = hd ? d : row->end_ms - row->start_ms;
    if (row->duration_ms > UINT32_MAX)
        row->duration_ms = UINT32_MAX;
    /* The start time is the partition key: a row dated 1970 (seconds sent
     * as milliseconds) lands in a partition the TTL deletes at the next
     * merge, and rows far apart make one insert span many partitions. */
    if (ctx->max_age_ms && row->start_ms + ctx->max_age_ms < recv_ms)
        return BF_R_stale_time;
    if (ctx->max_skew_ms && row->start_ms > recv_ms + ctx->max_skew_ms)
        return BF_R_future_time;

    row->model = ev->model;
    row->username = BF_HAS(ev, username) ? ev->username : (bf_str){"", 0};
    row->width = ev->width;
    row->height = ev->height;
    row->steps = ev->steps;
    row->prompt_tokens = ev->prompt_tokens;
    row->completion_tokens = ev->completion_tokens;
    row->cached_tokens = ev->cached_tokens;
    row->stream = ev->stream != 0;
    row->cached = ev->cached != 0;

    const catalog_model *m = catalog_find(ctx->cat, ev->model.ptr, ev->model.len);
    if (!m)
        stats.unknown_model++;
    row->provider = m ? m->provider : "unknown";
    row->provider_len = m ? m->provider_len : sizeof("unknown") - 1;

    if (BF_HAS(ev, id) && ev->id.len) {
        row->id = ev->id;
    } else {
        /* "pllns_" and 96 random bits as 24 hex digits, sixteen at a time
         * (the second sixteen written whole into id_buf, the id cut at 30). */
        uint64_t r[2] = {rng_next(ctx->rng), rng_next(ctx->rng)};
        char *p = row->id_buf;
        memcpy(p, "pllns_", 6);
        hex_8bytes(p + 6, (const unsigned char *)&r[0]);
        hex_8bytes(p + 22, (const unsigned char *)&r[1]);
        p[30] = '\0';
        row->id = (bf_str){row->id_buf, 30};
    }

    int has_user = BF_HAS(ev, user_id) && ev->user_id.len;
    row->user_id = str_or(ev->user_id, has_user, "anonymous");
    row->tier = str_or(ev->tier, BF_HAS(ev, tier), has_user ? "" : "anonymous");
    int has_err = BF_HAS(ev, error_message) && ev->error_message.len;
    row->status = str_or(ev->status, BF_HAS(ev, status),
                         has_err ? "error" : "success");
    row->cost_usd = row_cost(ev, m, row->status.len == 5 &&
                                        memcmp(row->status.ptr, "error", 5) == 0);
    row->prompt = ev->prompt;
    row->prompt.len = BF_HAS(ev, prompt)
                          ? bf_utf8_prefix(ev->prompt.ptr, ev->prompt.len,
                                               BF_PROMPT_MAX_CHARS)
                          : 0;
    row->error_message = ev->error_message;
    row->error_message.len =
        has_err ? bf_utf8_prefix(ev->error_message.ptr, ev->error_message.len,
                                     ERROR_MAX_CHARS)
                : 0;
    row->total_tokens = ev->prompt_tokens + ev->completion_tokens;
    if (row->total_tokens > UINT32_MAX)
        row->total_tokens = UINT32_MAX;

    row->referrer_len = BF_HAS(ev, referrer)
                            ? ref_cached(ctx, ev->referrer.ptr, ev->referrer.len, row->referrer)
                            : (row->referrer[0] = '\0', 0);

    int alen = 0;
    if (BF_HAS(ev, ip) && ev->ip.len) {
        if ((alen = ip_anon(ctx, ev->ip.ptr, ev->ip.len, row->ip, row->ip_hash)) < 0) {
            stats.ip_invalid++;
            alen = 0;
        }
    } else {
        row->ip[0] = row->ip_hash[0] = '\0';
    }
    row->ip_len = (size_t)alen;
    return BF_OK;
}
