/* enrich.c: catalog, cost, ip, id, timestamps, truncation. See enrich.h. */
#include "enrich.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fnv.h"
#include "hex.h"
#include "stats.h"

/* Recent addresses and their results: the same clients send many requests,
 * and an HMAC costs more than the rest of the row. Direct-mapped, so a
 * lookup is one probe; a collision just recomputes. */
#define IP_CACHE_SLOTS 4096

typedef struct ip_entry {
    uint8_t len;              /* 4 or 16; 0: empty */
    unsigned char addr[16];
    char anon[48];
    char hash[IP_HASH_HEX + 1];
} ip_entry;

struct enrich_ctx {
    const catalog *cat;
    ip_entry *ip_cache;       /* IP_CACHE_SLOTS entries */
    EVP_MAC *mac;
    EVP_MAC_CTX *mac_ctx; /* keyed once; re-initialised per address */
    uint64_t rng[4];      /* xoshiro256** for ids; seeded from getrandom */
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
         * starting at once only one key wins (link fails with EEXIST). */
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
        int w = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
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
    ssize_t k = read(fd, key, 256);
    close(fd);
    while (k > 0 && (key[k - 1] == '\n' || key[k - 1] == '\r'))
        k--;
    if (k < 16) {
        snprintf(err, n, "ip hash key %s: needs at least 16 bytes", path);
        return -EINVAL;
    }
    *klen = (size_t)k;
    return 0;
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
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end()};
    ctx->ip_cache = calloc(IP_CACHE_SLOTS, sizeof(ip_entry));
    ctx->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx->mac_ctx = ctx->mac ? EVP_MAC_CTX_new(ctx->mac) : NULL;
    if (!ctx->ip_cache || !ctx->mac_ctx ||
        !EVP_MAC_init(ctx->mac_ctx, key, klen, params)) {
        snprintf(err, n, "%s", ctx->ip_cache ? "OpenSSL HMAC-SHA256 unavailable"
                                             : "out of memory");
        rc = ctx->ip_cache ? -ENOSYS : -ENOMEM;
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
    EVP_MAC_CTX_free(ctx->mac_ctx);
    EVP_MAC_free(ctx->mac);
    free(ctx->ip_cache);
    free(ctx);
}

void enrich_set_catalog(enrich_ctx *ctx, const catalog *cat) { ctx->cat = cat; }

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

size_t enrich_referrer(const char *url, size_t len, char *out)
{
    size_t i = 0, o = 0;
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    while (i < len && (((url[i] | 32) >= 'a' && (url[i] | 32) <= 'z') ||
                       (i > 0 && ((url[i] >= '0' && url[i] <= '9') || url[i] == '+' ||
                                  url[i] == '-' || url[i] == '.'))))
        i++;
    if (i == 0 || len - i < 3 || memcmp(url + i, "://", 3) != 0)
        goto none;
    size_t auth = i + 3, end = auth;
    while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#')
        end++;
    /* Credentials (user:token@) never leave: keep what follows the last @. */
    for (size_t k = end; k > auth; k--)
        if (url[k - 1] == '@') {
            auth = k;
            break;
        }
    if (end == auth || i + 3 + (end - auth) > REFERRER_MAX)
        goto none;
    for (size_t k = 0; k < i; k++)
        out[o++] = (char)lower((unsigned char)url[k]);
    memcpy(out + o, "://", 3);
    o += 3;
    for (size_t k = auth; k < end; k++) {
        unsigned char c = (unsigned char)url[k];
        if (c <= ' ' || c == '"' || c == '\\' || c >= 0x7f)
            goto none; /* not a host: refuse rather than forward junk */
        out[o++] = (char)lower(c);
    }
    out[o] = '\0';
    return o;
none:
    out[0] = '\0';
    return 0;
}

int enrich_ip(enrich_ctx *ctx, const char *ip, size_t len, char *out, char *hash)
{
    char text[64];
    unsigned char addr[16];
    size_t alen;
    out[0] = hash[0] = '\0';
    /* A NUL inside would end the text early and hide trailing bytes. */
    if (len == 0 || len >= sizeof(text) || memchr(ip, '\0', len))
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
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) { /* ::ffff:a.b.c.d is IPv4 */
            memmove(addr, addr + 12, 4);
            alen = 4;
        } else {
            alen = 16;
        }
    } else {
        return -EINVAL;
    }
    ip_entry *e = &ctx->ip_cache[fnv1a32(addr, alen) & (IP_CACHE_SLOTS - 1)];
    if (e->len == alen && memcmp(e->addr, addr, alen) == 0) {
        memcpy(out, e->anon, sizeof(e->anon));
        memcpy(hash, e->hash, sizeof(e->hash));
        return 0;
    }
    /* The hash is of the full binary address, so "::ffff:1.2.3.4" and
     * "1.2.3.4" hash alike. EVP_MAC_init with a NULL key keeps the key. */
    unsigned char mac[32];
    size_t mlen = 0;
    if (!EVP_MAC_init(ctx->mac_ctx, NULL, 0, NULL) ||
        !EVP_MAC_update(ctx->mac_ctx, addr, alen) ||
        !EVP_MAC_final(ctx->mac_ctx, mac, &mlen, sizeof(mac)))
        return -EINVAL;
    for (int i = 0; i < IP_HASH_HEX / 2; i++)
        hex_byte(hash + 2 * i, mac[i]);
    hash[IP_HASH_HEX] = '\0';
    e->len = (uint8_t)alen;
    memcpy(e->addr, addr, alen);
    if (alen == 4) {
        addr[3] = 0;
        inet_ntop(AF_INET, addr, out, 48);
    } else {
        memset(addr + 6, 0, 10); /* keep the /48 */
        inet_ntop(AF_INET6, addr, out, 48);
    }
    memcpy(e->anon, out, sizeof(e->anon));
    memcpy(e->hash, hash, sizeof(e->hash));
    return 0;
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

void enrich_event(enrich_ctx *ctx, const bf_event *ev, uint64_t recv_ms,
                  bf_row *row)
{
    row->dataset = ev->dataset;
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

    if (BF_HAS(ev, id) && ev->id.len) {
        row->id = ev->id;
    } else {
        uint64_t a = rng_next(ctx->rng), b = rng_next(ctx->rng);
        char *p = row->id_buf;
        memcpy(p, "pllns_", 6);
        p += 6;
        for (int i = 60; i >= 0; i -= 4)
            *p++ = hex_digit((unsigned)(a >> i));
        for (int i = 28; i >= 0; i -= 4)
            *p++ = hex_digit((unsigned)(b >> i));
        *p = '\0';
        row->id = (bf_str){row->id_buf, (size_t)(p - row->id_buf)};
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
                            ? enrich_referrer(ev->referrer.ptr, ev->referrer.len,
                                              row->referrer)
                            : (row->referrer[0] = '\0', 0);

    if (BF_HAS(ev, ip) && ev->ip.len) {
        if (enrich_ip(ctx, ev->ip.ptr, ev->ip.len, row->ip, row->ip_hash) < 0)
            stats.ip_invalid++;
    } else {
        row->ip[0] = row->ip_hash[0] = '\0';
    }
}
