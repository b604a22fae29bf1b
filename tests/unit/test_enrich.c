/*
 * test_enrich.c: daemon/enrich.c: UTF-8 prefixes, referrer origins, IP
 * anonymisation and its keyed hash, the ip hash key file, and enrich_event
 * (defaults, ids, timestamps, cost from daemon/catalog.json).
 *
 * Every test gets a fresh temporary directory holding a key file with known
 * bytes, so hashes can be recomputed here with OpenSSL's one-shot HMAC().
 * Runs from the repo root (daemon/catalog.json).
 */
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "enrich.h"
#include "fnv.h"
#include "hex.h"
#include "stats.h"
#include "testutil.h"

static char tmpdir[64];
static char key_path[128];
static enrich_ctx *ctx;
static catalog *cat;

static void enrich_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "enrich");
    snprintf(key_path, sizeof(key_path), "%s/ip-hash.key", tmpdir);
    tu_enrich_open(key_path, &ctx, &cat);
}

static void enrich_teardown(void)
{
    tu_enrich_close(&ctx, &cat);
    tu_rmtree(tmpdir);
}

/* HMAC-SHA256 of the address bytes with key, first 16 bytes as hex. */
static void expected_hash(const char *key, size_t klen, const unsigned char *addr,
                          size_t alen, char out[IP_HASH_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), key, (int)klen, addr, alen, md, &mdlen));
    ck_assert_uint_eq(mdlen, 32);
    for (int i = 0; i < IP_HASH_HEX / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[n] == '\0';
}

/* ---- bf_utf8_prefix (the prompt and error cuts) --------------------- */

static const struct {
    const char *s;
    size_t max_chars;
    size_t want; /* bytes */
} prefix_cases[] = {
    {"hello", 3, 3},
    {"hello", 5, 5},
    {"hello", 99, 5},
    {"hello", 0, 0},
    {"", 5, 0},
    {"h\xc3\xa9llo", 2, 3},                 /* é is two bytes */
    {"h\xc3\xa9llo", 1, 1},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 2, 6}, /* 日本語 */
    {"\xf0\x9f\x98\x80" "a", 1, 4},         /* 4-byte emoji */
    {"\xf0\x9f\x98\x80" "a", 2, 5},
    {"a\xf0\x9f\x98\x80", 1, 1},            /* never half an emoji */
    {"\xff\xfe" "abc", 1, 1},               /* an invalid byte is one char */
    {"\xff\xfe" "abc", 2, 2},
    {"\xff\xfe" "abc", 3, 3},
    {"a\xe6\x97", 2, 2},                    /* truncated sequence at the end */
    {"a\xe6\x97", 3, 3},
    {"\xc0\x80" "x", 1, 1},                 /* overlong: two invalid chars */
    {"\xc0\x80" "x", 2, 2},
    {"\xed\xa0\x80", 1, 1},                 /* surrogate */
    {"\xf4\x90\x80\x80", 1, 1},             /* past U+10FFFF */
    {"\x80\x80" "a", 2, 2},                 /* lone continuation bytes */
    {"\xc3" "a", 1, 1},                     /* lead byte then ASCII */
};

START_TEST(test_enrich_utf8_prefix_table)
{
    const char *s = prefix_cases[_i].s;
    size_t got = bf_utf8_prefix(s, strlen(s), prefix_cases[_i].max_chars);
    ck_assert_msg(got == prefix_cases[_i].want, "case %d: got %zu, want %zu", _i,
                  got, prefix_cases[_i].want);
}
END_TEST

START_TEST(test_enrich_utf8_prefix_120_chars)
{
    char buf[1024];
    size_t n = 0;
    /* 119 ASCII then an emoji: the 120th character is the whole emoji. */
    memset(buf, 'a', 119);
    n = 119;
    memcpy(buf + n, "\xf0\x9f\x98\x80" "b", 5);
    n += 5;
    ck_assert_uint_eq(bf_utf8_prefix(buf, n, BF_PROMPT_MAX_CHARS), 123);
    ck_assert_uint_eq(bf_utf8_prefix(buf, n, 119), 119);
    /* Exactly 120 two-byte characters: all kept, nothing after. */
    for (n = 0; n < 240; n += 2)
        memcpy(buf + n, "\xc3\xa9", 2);
    ck_assert_uint_eq(bf_utf8_prefix(buf, n, BF_PROMPT_MAX_CHARS), 240);
    buf[n++] = 'x';
    ck_assert_uint_eq(bf_utf8_prefix(buf, n, BF_PROMPT_MAX_CHARS), 240);
    /* 121 ASCII: cut to 120. */
    memset(buf, 'z', 121);
    ck_assert_uint_eq(bf_utf8_prefix(buf, 121, BF_PROMPT_MAX_CHARS), 120);
    /* The length is a bound: no read past len even without a NUL. */
    ck_assert_uint_eq(bf_utf8_prefix("\xf0\x9f\x98\x80", 2, 5), 2);
}
END_TEST

/* Random valid UTF-8: a prefix never ends inside a sequence and holds
 * exactly min(max, chars) characters. */
START_TEST(test_enrich_utf8_prefix_never_splits)
{
    static const char *const pieces[] = {"a", "\xc3\xa9", "\xe6\x97\xa5",
                                         "\xf0\x9f\x98\x80", "\x7f", "\xdf\xbf"};
    unsigned seed = 12345;
    for (int round = 0; round < 500; round++) {
        char buf[1024];
        size_t n = 0, chars = 0;
        size_t want_chars;
        while (n < 1000) {
            seed = seed * 1103515245u + 12345u;
            const char *p = pieces[(seed >> 16) % 6];
            memcpy(buf + n, p, strlen(p));
            n += strlen(p);
            chars++;
        }
        want_chars = (size_t)round % 300;
        size_t got = bf_utf8_prefix(buf, n, want_chars);
        ck_assert(got <= n);
        if (got < n)
            ck_assert_msg(((unsigned char)buf[got] & 0xC0) != 0x80,
                          "round %d: cut inside a sequence at %zu", round, got);
        /* Count the characters in the prefix. */
        size_t c = 0;
        for (size_t i = 0; i < got; i++)
            c += ((unsigned char)buf[i] & 0xC0) != 0x80;
        ck_assert_uint_eq(c, want_chars < chars ? want_chars : chars);
    }
}
END_TEST

/* The cut as the first one did it, a character at a time, for
 * test_enrich_utf8_prefix_as_char_by_char. */
static size_t prefix_ref(const char *s, size_t len, size_t max_chars)
{
    size_t i = 0;
    for (size_t chars = 0; i < len && chars < max_chars; chars++) {
        size_t k = bf_utf8_seq((const unsigned char *)s + i, len - i);
        i += k ? k : 1;
    }
    return i;
}

/* Runs of ASCII (which bf_utf8_prefix takes eight bytes at a time) of
 * every length between valid sequences, invalid bytes and cut sequences,
 * cut at every number of characters, in buffers of their exact size:
 * the same length as a character at a time. */
START_TEST(test_enrich_utf8_prefix_as_char_by_char)
{
    static const char *const pieces[] = {"\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80",
                                         "\xff", "\x80", "\xe6\x97", "\x7f"};
    uint64_t seed = 99;
    for (int round = 0; round < 400; round++) {
        char tmp[400];
        size_t n = 0;
        while (n < 300) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t run = (size_t)(seed >> 33) % 20;
            for (size_t k = 0; k < run; k++)
                tmp[n++] = (char)('a' + k % 26);
            const char *p = pieces[(seed >> 40) % 7];
            memcpy(tmp + n, p, strlen(p));
            n += strlen(p);
        }
        char *buf = malloc(n);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, tmp, n);
        for (size_t max = 0; max <= 130; max++) {
            size_t len = (size_t)round % 2 ? n : n - (size_t)round % 7;
            ck_assert_msg(bf_utf8_prefix(buf, len, max) == prefix_ref(buf, len, max),
                          "round %d max %zu: %zu, want %zu", round, max,
                          bf_utf8_prefix(buf, len, max), prefix_ref(buf, len, max));
        }
        free(buf);
    }
}
END_TEST

/* ---- enrich_referrer ------------------------------------------------- */

static const struct {
    const char *url;
    const char *want;
} referrer_cases[] = {
    {"https://user:tok@Example.COM:8080/path?q#f", "https://example.com:8080"},
    {"HTTP://A.B", "http://a.b"},
    {"https://example.com", "https://example.com"},
    {"https://example.com/", "https://example.com"},
    {"https://example.com?x=1", "https://example.com"},
    {"https://example.com#frag", "https://example.com"},
    {"https://a@b@host.io/p", "https://host.io"},
    {"https://[2001:DB8::1]:8443/x", "https://[2001:db8::1]:8443"},
    {"http://[::1]/", "http://[::1]"},
    /* Issue 11, finding 7: userinfo ends at the authority's last '@', and
     * the authority ends at the first / ? # or \. Here it is "user:pa",
     * whose port "pa" is no port: not a URL. */
    {"https://user:pa?ss@host/", ""},
    {"https://user:pa#ss@host/", ""},
    {"https://user:pa/ss@host/", ""},
    {"https://user:1234?ss@host/", "https://user:1234"},
    {"https://us\\er:pa@host/", "https://us"},
    /* Only http and https: other schemes' "hosts" are not origins. */
    {"javascript://example.com/%0Aalert(1)", ""},
    {"vbscript://example.com/", ""},
    {"data://text/html,hi", ""},
    {"data:text/html,hi", ""},
    {"file:///etc/passwd", ""},
    {"ftp://files.example.com/", ""},
    {"android-app://com.example.app/", ""},
    {"svn+ssh://h", ""},
    {"blob:https://example.com/uuid", ""},
    /* Default ports go; others stay; ports are numbers up to 65535. */
    {"https://example.com:443/", "https://example.com"},
    {"http://example.com:80/", "http://example.com"},
    {"http://example.com:443/", "http://example.com:443"},
    {"https://example.com:0080/", "https://example.com:80"},
    {"https://example.com:/", "https://example.com"},
    {"https://example.com:65535", "https://example.com:65535"},
    {"https://example.com:65536/", ""},
    {"https://example.com:99999999999999999999/", ""},
    {"https://example.com:8o/", ""},
    {"https://example.com:-1/", ""},
    /* Slashes and backslashes after a special scheme, tabs and newlines
     * anywhere, C0 controls and spaces at the ends. */
    {"https:/example.com", "https://example.com"},
    {"https:example.com", "https://example.com"},
    {"https:\\\\example.com\\p", "https://example.com"},
    {"https:///path", "https://path"},
    {"https://ex\tample.com/", "https://example.com"},
    {"ht\ntps://exa\rmple.com/", "https://example.com"},
    {"  \x01https://example.com/ \x02", "https://example.com"},
    /* Hosts: percent-decoded, lowercased, IPv4 in every WHATWG form. */
    {"https://ex%61mple.COM/", "https://example.com"},
    {"https://ex%2fample.com/", ""},       /* %2f is '/': forbidden */
    {"https://ex%zzample.com/", ""},       /* a bare % is forbidden */
    {"https://ex%c3%b6.de/", ""},          /* non-ASCII: would need IDNA */
    {"http://0x7f.1/", "http://127.0.0.1"},
    {"http://2130706433/", "http://127.0.0.1"},
    {"http://0177.0.0.01/", "http://127.0.0.1"},
    {"http://1.2.3.4./", "http://1.2.3.4"},
    {"http://2130706433./", "http://127.0.0.1"},
    {"http://example.com./", "http://example.com."},
    {"http://./", "http://."},
    {"http://1.2.3.4../", "http://1.2.3.4.."}, /* not a number: a domain */
    {"http://1.2.3.256/", ""},
    {"http://1.2.3.4../", "http://1.2.3.4.."}, /* not a number: a domain */
    {"http://foo.09/", ""},                /* 09 is bad octal */
    {"http://foo.0x/", ""},              /* ends in a number, not IPv4 */
    {"https://[2001:DB8:0:0:1:0:0:1]/", "https://[2001:db8::1:0:0:1]"},
    {"https://[::ffff:1.2.3.4]/", "https://[::ffff:102:304]"},
    {"https://[0:0:0:0:0:0:0:0]/", "https://[::]"},
    {"https://[1:0:0:2:0:0:0:3]/", "https://[1:0:0:2::3]"},
    {"https://[::1/", ""},
    {"https://[::1]x/", ""},
    {"https://[fe80::1%25eth0]/", ""},
    {"https://[1.2.3.4]/", ""},
    {"example.com/path", ""},             /* no scheme */
    {"//example.com/path", ""},
    {"https://", ""},                     /* scheme only */
    {"https:", ""},
    {"https://user:tok@/path", ""},       /* credentials but no host */
    {"https://user@", ""},
    {"https://:443/", ""},
    {"://example.com", ""},
    {"1http://example.com", ""},          /* scheme must start with a letter */
    {"ht tp://example.com", ""},
    {"https://exa mple.com/", ""},        /* host with a space */
    {"https://ex<ample.com/", ""},
    {"https://ex^ample.com/", ""},
    {"https://ex|ample.com/", ""},
    {"https://ex\"ample.com/", "https://ex\"ample.com"}, /* allowed; row.c escapes */
    {"https://h\xc3\xb6st.de/", ""},      /* raw non-ASCII */
    {"https://host\x7f/", ""},
    {"https://ho\x01st/", ""},
    {"", ""},
};

START_TEST(test_enrich_referrer_table)
{
    const char *url = referrer_cases[_i].url, *want = referrer_cases[_i].want;
    char *out = malloc(REFERRER_MAX + 1);
    ck_assert_ptr_nonnull(out);
    memset(out, 'X', REFERRER_MAX + 1);
    size_t n = enrich_referrer(url, strlen(url), out);
    ck_assert_msg(strcmp(out, want) == 0, "case %d '%s': got '%s', want '%s'", _i,
                  url, out, want);
    ck_assert_uint_eq(n, strlen(want));
    free(out);
}
END_TEST

START_TEST(test_enrich_referrer_long_host)
{
    char url[600], want[300];
    char *out = malloc(REFERRER_MAX + 1); /* exact size, for ASan */
    ck_assert_ptr_nonnull(out);
    /* "https://" + 248 = 256 bytes: the longest origin kept. */
    strcpy(url, "https://");
    memset(url + 8, 'a', 248);
    strcpy(url + 256, "/path");
    memcpy(want, url, 256);
    want[256] = '\0';
    ck_assert_uint_eq(enrich_referrer(url, strlen(url), out), 256);
    ck_assert_str_eq(out, want);
    /* One more byte of host: dropped entirely, never cut. */
    memset(url + 8, 'a', 249);
    strcpy(url + 257, "/path");
    ck_assert_uint_eq(enrich_referrer(url, strlen(url), out), 0);
    ck_assert_str_eq(out, "");
    /* A host of exactly REFERRER_MAX + 1 bytes, the most the parser's
     * buffer holds: refused, with no write past it (the row fuzzer found
     * host[257] = '\0'). */
    memset(url + 8, 'c', REFERRER_MAX + 1);
    strcpy(url + 8 + REFERRER_MAX + 1, "/x");
    ck_assert_uint_eq(enrich_referrer(url, strlen(url), out), 0);
    ck_assert_str_eq(out, "");
    /* A very long host. */
    memset(url + 8, 'b', 500);
    url[508] = '\0';
    ck_assert_uint_eq(enrich_referrer(url, strlen(url), out), 0);
    ck_assert_str_eq(out, "");
    /* A very long scheme. */
    memset(url, 's', 300);
    strcpy(url + 300, "://h");
    ck_assert_uint_eq(enrich_referrer(url, strlen(url), out), 0);
    ck_assert_str_eq(out, "");
    free(out);
}
END_TEST

START_TEST(test_enrich_referrer_respects_len)
{
    char out[REFERRER_MAX + 1];
    const char *url = "https://host.example/more";
    ck_assert_uint_eq(enrich_referrer(url, 12, out), 12);
    ck_assert_str_eq(out, "https://host");
    /* An embedded NUL is a control byte, not the end. */
    ck_assert_uint_eq(enrich_referrer("https://ho\0st", 13, out), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

/* The referrer cache (enrich_referrer_cached) answers what the parser
 * answers for every text, whatever shares its slot: far more referrers
 * than the cache has entries (so sets are shared and ways evicted), texts
 * that differ in their last byte or only in length, the longest text
 * cached and one byte more, origins too long to cache, asked in order
 * then again in a scrambled order with repeats. */
START_TEST(test_enrich_referrer_cache_never_mixes)
{
    enum { N = 5000 };
    static char urls[N][240];
    static size_t lens[N];
    for (int i = 0; i < N; i++) {
        switch (i % 6) {
        case 0: snprintf(urls[i], sizeof(urls[i]), "https://h%d.example/p?q=%d", i / 6, i); break;
        case 1: snprintf(urls[i], sizeof(urls[i]), "https://h%d.example/p?q=%d", i / 6, i - 1);
                urls[i][strlen(urls[i]) - 1] ^= 1; break; /* the last byte differs */
        case 2: snprintf(urls[i], sizeof(urls[i]), "https://h%d.example", i / 6); break;
        case 3: snprintf(urls[i], sizeof(urls[i]), "https://h%d.example/", i / 6); break;
        case 4: snprintf(urls[i], sizeof(urls[i]), "HTTP://H%d.Example:%d/x", i / 6, i % 70000);
                break;
        default: { /* 189 to 192 bytes of text; some origins over 96 bytes */
            int len = 189 + i % 4, host = i % 12 < 6 ? 20 : 100;
            int o = snprintf(urls[i], sizeof(urls[i]), "https://%0*d.example/", host, i);
            memset(urls[i] + o, 'p', (size_t)(len - o));
            urls[i][len] = '\0';
        }
        }
        lens[i] = strlen(urls[i]);
    }
    uint64_t seed = 42;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < N; k++) {
            int i = round == 0 ? k : (int)((seed = seed * 6364136223846793005ull + 1) >> 33) % N;
            char want[REFERRER_MAX + 1], got[REFERRER_MAX + 1];
            size_t wl = enrich_referrer(urls[i], lens[i], want);
            memset(got, 'X', sizeof(got));
            size_t gl = enrich_referrer_cached(ctx, urls[i], lens[i], got);
            ck_assert_msg(gl == wl && strcmp(got, want) == 0, "round %d '%s': cached '%s', "
                          "parsed '%s'", round, urls[i], got, want);
        }
    }
    for (size_t i = 0; i < sizeof(referrer_cases) / sizeof(referrer_cases[0]); i++) {
        const char *url = referrer_cases[i].url;
        char got[REFERRER_MAX + 1];
        for (int twice = 0; twice < 2; twice++) {
            enrich_referrer_cached(ctx, url, strlen(url), got);
            ck_assert_msg(strcmp(got, referrer_cases[i].want) == 0, "'%s': '%s'", url, got);
        }
    }
}
END_TEST

/* ---- enrich_ip ------------------------------------------------------- */

static const struct {
    const char *ip;
    const char *anon;
    int alen;                 /* 4 or 16 */
    unsigned char addr[16];   /* what the hash is taken of */
} ip_cases[] = {
    {"192.168.1.77", "192.168.1.0", 4, {192, 168, 1, 77}},
    {"10.0.0.255", "10.0.0.0", 4, {10, 0, 0, 255}},
    {"1.2.3.4", "1.2.3.0", 4, {1, 2, 3, 4}},
    {"::ffff:1.2.3.4", "1.2.3.0", 4, {1, 2, 3, 4}},
    {"::FFFF:1.2.3.4", "1.2.3.0", 4, {1, 2, 3, 4}},
    {"2001:db8:abcd:1234:5678::1", "2001:db8:abcd::", 16,
     {0x20, 0x01, 0x0d, 0xb8, 0xab, 0xcd, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 1}},
    {"2001:DB8:ABCD:ffff:ffff:ffff:ffff:ffff", "2001:db8:abcd::", 16,
     {0x20, 0x01, 0x0d, 0xb8, 0xab, 0xcd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff}},
    {"[2001:db8::1]", "2001:db8::", 16,
     {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"[::1]", "::", 16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"::1", "::", 16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"fe80::1%eth0", "fe80::", 16,
     {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"[fe80::1%25eth0]", "fe80::", 16,
     {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    /* Issue 11, finding 1: addresses that carry an IPv4 are that IPv4,
     * here 203.0.113.77: anonymised to its /24 and hashed as it. */
    {"2002:cb00:714d::1", "203.0.113.0", 4, {203, 0, 113, 77}},      /* 6to4 */
    {"2002:CB00:714D:ffff:1:2:3:4", "203.0.113.0", 4, {203, 0, 113, 77}},
    {"64:ff9b::203.0.113.77", "203.0.113.0", 4, {203, 0, 113, 77}},  /* NAT64 */
    {"64:ff9b::cb00:714d", "203.0.113.0", 4, {203, 0, 113, 77}},
    {"::203.0.113.77", "203.0.113.0", 4, {203, 0, 113, 77}},         /* compatible */
    {"[::cb00:714d]", "203.0.113.0", 4, {203, 0, 113, 77}},
    {"2001:0:4136:e378:8000:63bf:34ff:8eb2", "203.0.113.0", 4,       /* Teredo */
     {203, 0, 113, 77}},
    {"2001::ffff:ffff", "0.0.0.0", 4, {0, 0, 0, 0}},
    /* Neighbours that carry none stay IPv6 and are cut to the /48. */
    {"::", "::", 16, {0}},
    {"2001:db8:cb00:714d::", "2001:db8:cb00::", 16,
     {0x20, 0x01, 0x0d, 0xb8, 0xcb, 0x00, 0x71, 0x4d, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"2001:1:cb00:714d::", "2001:1:cb00::", 16,
     {0x20, 0x01, 0, 1, 0xcb, 0x00, 0x71, 0x4d, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"64:ff9b:1::cb00:714d", "64:ff9b:1::", 16,  /* local-use NAT64: /48 holds none */
     {0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 0xcb, 0x00, 0x71, 0x4d}},
    {"2003:cb00:714d::1", "2003:cb00:714d::", 16,
     {0x20, 0x03, 0xcb, 0x00, 0x71, 0x4d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
};

/* Every form of one client's address gives one ip and one ip_hash, and no
 * output holds the IPv4's last octet ("77" would be 4d in hex). */
START_TEST(test_enrich_ip_embedded_ipv4_is_the_ipv4)
{
    static const char *const forms[] = {
        "203.0.113.77", "::ffff:203.0.113.77", "2002:cb00:714d::1",
        "2002:cb00:714d:1::", "64:ff9b::cb00:714d", "::203.0.113.77",
        "2001:0:4136:e378:8000:63bf:34ff:8eb2", "[2002:cb00:714d::1]"};
    char want_ip[48], want_hash[IP_HASH_HEX + 1];
    ck_assert_int_eq(enrich_ip(ctx, forms[0], strlen(forms[0]), want_ip, want_hash), 0);
    ck_assert_str_eq(want_ip, "203.0.113.0");
    for (int i = 1; i < N(forms); i++) {
        char ip[48], hash[IP_HASH_HEX + 1];
        ck_assert_int_eq(enrich_ip(ctx, forms[i], strlen(forms[i]), ip, hash), 0);
        ck_assert_msg(strcmp(ip, want_ip) == 0, "%s: ip '%s'", forms[i], ip);
        ck_assert_msg(strcmp(hash, want_hash) == 0, "%s: hash differs", forms[i]);
        ck_assert_msg(!strstr(ip, "714d") && !strstr(ip, "77"), "%s: kept '%s'",
                      forms[i], ip);
    }
}
END_TEST

START_TEST(test_enrich_ip_table)
{
    char out[48], hash[IP_HASH_HEX + 1], want[IP_HASH_HEX + 1];
    const char *ip = ip_cases[_i].ip;
    ck_assert_msg(enrich_ip(ctx, ip, strlen(ip), out, hash) == 0, "%s: -1", ip);
    ck_assert_msg(strcmp(out, ip_cases[_i].anon) == 0, "%s: anonymised '%s', want '%s'",
                  ip, out, ip_cases[_i].anon);
    ck_assert_uint_eq(strlen(hash), IP_HASH_HEX);
    ck_assert_msg(is_lower_hex(hash, IP_HASH_HEX), "%s: hash '%s'", ip, hash);
    expected_hash(TEST_KEY, strlen(TEST_KEY), ip_cases[_i].addr,
                  (size_t)ip_cases[_i].alen, want);
    ck_assert_msg(strcmp(hash, want) == 0, "%s: hash %s, HMAC says %s", ip, hash, want);
}
END_TEST

#define S(lit) {lit, sizeof(lit) - 1}
static const struct {
    const char *s;
    size_t len;
} bad_ips[] = {
    S("not an ip"), S("1.2.3"), S("256.1.1.1"), S("1.2.3.4.5"), S("1.2.3.4:80"),
    S("::g"), S("[::1"), S("::1]"), S("[]"), S("[::1]x"), S("[::1]:8080"),
    S(" 1.2.3.4"), S("1.2.3.4 "), S("%eth0"), S("[1.2.3.4]5"),
    S("1.2.3.4\0" "9.9.9.9"),   /* an embedded NUL is not the end */
    S("::1\0"),
    S("0000000000000000000000000000000000000000000000000000000000001.2.3.4"),
};
#undef S

/* The IP cache answers what a fresh computation answers, whatever shares
 * its slot: 12,000 addresses (three times the cache), IPv4, IPv6 and
 * IPv4-mapped spellings of the same IPv4, in order then scrambled with
 * repeats; each anonymised form from inet_ntop and each hash from
 * OpenSSL's one-shot HMAC. */
START_TEST(test_enrich_ip_cache_never_mixes)
{
    enum { N = 12000 };
    static char ips[N][64];
    /* First pairs of which one is a prefix of the other and whose slots
     * (enrich.c: hash_words & 4092, four ways) are the same, alternated. */
    int pairs = 0;
    for (unsigned a = 0; a < 256 && pairs < 64; a++) {
        for (unsigned b = 1; b < 256 && pairs < 64; b++) {
            char x[64], y[64];
            int xl = snprintf(x, 64, "10.%u.%u.1", a, b), yl = snprintf(y, 64, "%s%u", x, b % 10);
            if ((hash_words(x, (size_t)xl) & 4092) != (hash_words(y, (size_t)yl) & 4092))
                continue;
            snprintf(ips[2 * pairs], 64, "%s", x);
            snprintf(ips[2 * pairs + 1], 64, "%s", y);
            pairs++;
        }
    }
    ck_assert_int_ge(pairs, 8);
    for (int i = 2 * pairs; i < N; i++) {
        unsigned a = 1 + (unsigned)i * 2654435761u % 223, b = (unsigned)i / 256 % 256,
                 c = (unsigned)i % 256;
        switch (i % 3) {
        case 0: snprintf(ips[i], 64, "%u.%u.%u.%u", a, b, c, (unsigned)i % 7); break;
        case 1: snprintf(ips[i], 64, "::ffff:%u.%u.%u.%u", a, b, c, 9u); break;
        default: snprintf(ips[i], 64, "2001:db8:%x:%x::%x", (unsigned)i, (unsigned)i % 13, c);
        }
    }
    uint64_t seed = 7;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < N; k++) {
            int i = round == 0 ? k : (int)((seed = seed * 6364136223846793005ull + 1) >> 33) % N;
            unsigned char addr[16];
            size_t alen = 4;
            char want_anon[48], want_hash[IP_HASH_HEX + 1], out[48], hash[IP_HASH_HEX + 1];
            const char *text = strncmp(ips[i], "::ffff:", 7) == 0 ? ips[i] + 7 : ips[i];
            if (inet_pton(AF_INET, text, addr) != 1) {
                ck_assert_int_eq(inet_pton(AF_INET6, text, addr), 1);
                alen = 16;
            }
            expected_hash(TEST_KEY, strlen(TEST_KEY), addr, alen, want_hash);
            if (alen == 4) {
                addr[3] = 0;
                inet_ntop(AF_INET, addr, want_anon, sizeof(want_anon));
            } else {
                memset(addr + 6, 0, 10);
                inet_ntop(AF_INET6, addr, want_anon, sizeof(want_anon));
            }
            ck_assert_int_eq(enrich_ip(ctx, ips[i], strlen(ips[i]), out, hash), 0);
            ck_assert_msg(strcmp(out, want_anon) == 0 && strcmp(hash, want_hash) == 0,
                          "round %d %s: %s %s, want %s %s", round, ips[i], out, hash,
                          want_anon, want_hash);
        }
    }
}
END_TEST

START_TEST(test_enrich_ip_garbage)
{
    char out[48], hash[IP_HASH_HEX + 1];
    memset(out, 'X', sizeof(out));
    memset(hash, 'X', sizeof(hash));
    ck_assert_msg(enrich_ip(ctx, bad_ips[_i].s, bad_ips[_i].len, out, hash) == -EINVAL,
                  "case %d '%s' parsed as '%s'", _i, bad_ips[_i].s, out);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(hash, "");
}
END_TEST

/* The longest ip the protocol accepts (64 bytes, fields.def) parses:
 * the row fuzzer found a 64-byte scoped address emptied as ip_invalid. */
START_TEST(test_enrich_ip_longest)
{
    char ip[66], out[48], hash[IP_HASH_HEX + 1];
    ck_assert_uint_eq(bf_fields[BF_F_ip].max, 64);
    memcpy(ip, "fe80::1%", 8); /* a zone fills it up to 64 bytes */
    memset(ip + 8, 'z', 56);
    ip[64] = '\0';
    ck_assert_int_eq(enrich_ip(ctx, ip, 64, out, hash), 0);
    ck_assert_str_eq(out, "fe80::");
    ip[64] = 'z'; /* one more: too long, as the validator says too */
    ip[65] = '\0';
    ck_assert_int_eq(enrich_ip(ctx, ip, 65, out, hash), -EINVAL);
}
END_TEST

START_TEST(test_enrich_ip_empty)
{
    char out[48], hash[IP_HASH_HEX + 1];
    ck_assert_int_eq(enrich_ip(ctx, "", 0, out, hash), -EINVAL);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(hash, "");
}
END_TEST

START_TEST(test_enrich_ip_hash_properties)
{
    char out[48], h1[IP_HASH_HEX + 1], h2[IP_HASH_HEX + 1], h3[IP_HASH_HEX + 1];
    ck_assert_int_eq(enrich_ip(ctx, "1.2.3.4", 7, out, h1), 0);
    ck_assert_int_eq(enrich_ip(ctx, "1.2.3.4", 7, out, h2), 0);
    ck_assert_str_eq(h1, h2); /* deterministic */
    ck_assert_int_eq(enrich_ip(ctx, "::ffff:1.2.3.4", 14, out, h2), 0);
    ck_assert_str_eq(h1, h2); /* mapped IPv4 is IPv4 */
    /* Same /24, different address: same anonymised form, different hash. */
    ck_assert_int_eq(enrich_ip(ctx, "1.2.3.5", 7, out, h3), 0);
    ck_assert_str_eq(out, "1.2.3.0");
    ck_assert_str_ne(h1, h3);

    /* Another key: another hash for the same address. */
    char err[256], other[128];
    snprintf(other, sizeof(other), "%s/other.key", tmpdir);
    tu_write_private(other, "fedcba9876543210fedcba9876543210", 32);
    enrich_ctx *c2;
    ck_assert_msg(enrich_new(other, &c2, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(enrich_ip(c2, "1.2.3.4", 7, out, h3), 0);
    ck_assert_str_ne(h1, h3);
    char want[IP_HASH_HEX + 1];
    expected_hash("fedcba9876543210fedcba9876543210", 32,
                  (const unsigned char *)"\x01\x02\x03\x04", 4, want);
    ck_assert_str_eq(h3, want);
    enrich_free(c2);
}
END_TEST

/* ---- the key file ---------------------------------------------------- */

/* Keys of every length the key file may hold (16 to 256 bytes; longer
 * than SHA-256's 64-byte block, HMAC hashes the key first): the hash is
 * OpenSSL's one-shot HMAC with that key. */
START_TEST(test_enrich_ip_hash_key_lengths)
{
    static const size_t lens[] = {16, 63, 64, 65, 100, 128, 256};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char key[257], path[128], err[256], out[48], hash[IP_HASH_HEX + 1],
            want[IP_HASH_HEX + 1];
        for (size_t k = 0; k < lens[i]; k++)
            key[k] = (char)('!' + (k * 7 + i) % 90);
        snprintf(path, sizeof(path), "%s/len%zu.key", tmpdir, lens[i]);
        tu_write_private(path, key, lens[i]);
        enrich_ctx *c;
        ck_assert_msg(enrich_new(path, &c, err, sizeof(err)) == 0, "%zu: %s", lens[i], err);
        ck_assert_int_eq(enrich_ip(c, "2001:db8::7", 11, out, hash), 0);
        expected_hash(key, lens[i], (const unsigned char *)"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07",
                      16, want);
        ck_assert_msg(strcmp(hash, want) == 0, "key of %zu bytes: %s, HMAC says %s", lens[i],
                      hash, want);
        enrich_free(c);
    }
}
END_TEST

START_TEST(test_enrich_key_created_0600)
{
    char err[256], path[160], text[128];
    snprintf(path, sizeof(path), "%s/new.key", tmpdir);
    enrich_ctx *c1;
    ck_assert_msg(enrich_new(path, &c1, err, sizeof(err)) == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    /* 32 random bytes as 64 hex digits and a newline. */
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, sizeof(text), f);
    fclose(f);
    ck_assert_uint_eq(n, 65);
    ck_assert_int_eq(text[64], '\n');
    text[64] = '\0';
    ck_assert(is_lower_hex(text, 64));

    /* The key is the hex text; a second context reuses it. */
    char out[48], h1[IP_HASH_HEX + 1], h2[IP_HASH_HEX + 1], want[IP_HASH_HEX + 1];
    ck_assert_int_eq(enrich_ip(c1, "203.0.113.9", 11, out, h1), 0);
    expected_hash(text, 64, (const unsigned char *)"\xcb\x00\x71\x09", 4, want);
    ck_assert_str_eq(h1, want);
    enrich_ctx *c2;
    ck_assert_msg(enrich_new(path, &c2, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(enrich_ip(c2, "203.0.113.9", 11, out, h2), 0);
    ck_assert_str_eq(h1, h2);
    /* Not rewritten. */
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 65);
    enrich_free(c1);
    enrich_free(c2);
}
END_TEST

START_TEST(test_enrich_key_too_short)
{
    char err[256], path[160];
    enrich_ctx *none;
    snprintf(path, sizeof(path), "%s/short.key", tmpdir);
    tu_write_private(path, "0123456789abcde\n", 16); /* 15 bytes of key */
    err[0] = '\0';
    ck_assert_int_eq(enrich_new(path, &none, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(none);
    ck_assert_msg(strstr(err, path) && strstr(err, "16 bytes"), "err: %s", err);
    tu_write_private(path, "", 0);
    ck_assert_int_eq(enrich_new(path, &none, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(none);
    tu_write_private(path, "\n\n\r\n", 4);
    ck_assert_int_eq(enrich_new(path, &none, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(none);
    /* 16 bytes is enough. */
    tu_write_private(path, "0123456789abcdef\n", 17);
    enrich_ctx *c;
    ck_assert_msg(enrich_new(path, &c, err, sizeof(err)) == 0, "%s", err);
    enrich_free(c);
}
END_TEST

/* Issue 11, finding 8: whoever reads the key can reverse ip_hash for any
 * address they guess. A key group or others may read is refused, naming
 * the file, its mode and the fix, as ssh does with keys. */
static const struct {
    unsigned mode;
    int ok;
} key_modes[] = {
    {0600, 1}, {0400, 1}, {0644, 0}, {0640, 0}, {0604, 0}, {0660, 0}, {0620, 0},
};

START_TEST(test_enrich_key_mode_refused)
{
    char err[256], path[160], mode[16];
    enrich_ctx *c = NULL;
    snprintf(path, sizeof(path), "%s/mode.key", tmpdir);
    tu_write_file(path, TEST_KEY "\n", strlen(TEST_KEY) + 1);
    ck_assert_int_eq(chmod(path, key_modes[_i].mode), 0);
    err[0] = '\0';
    int rc = enrich_new(path, &c, err, sizeof(err));
    if (key_modes[_i].ok) {
        ck_assert_msg(rc == 0, "mode %o: %s", key_modes[_i].mode, err);
        enrich_free(c);
        return;
    }
    ck_assert_int_eq(rc, -EPERM);
    ck_assert_ptr_null(c);
    snprintf(mode, sizeof(mode), "mode %04o", key_modes[_i].mode);
    ck_assert_msg(strstr(err, path) && strstr(err, mode) && strstr(err, "chmod"),
                  "err: %s", err);
}
END_TEST

/* Issue 11, finding 8: the key was first written to "<key>.tmp.<pid>",
 * opened without O_EXCL, so a symlink planted at that guessable name made
 * the daemon write its new key into a file of the planter's choosing. Now
 * the temporary name is random and made with O_EXCL: the planted link and
 * its target are left as they were. */
START_TEST(test_enrich_key_temp_not_followed)
{
    char err[256], path[160], tmp[200], target[160];
    snprintf(path, sizeof(path), "%s/planted.key", tmpdir);
    snprintf(target, sizeof(target), "%s/target", tmpdir);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    tu_write_file(target, "", 0);
    ck_assert_int_eq(symlink(target, tmp), 0);
    enrich_ctx *c;
    ck_assert_msg(enrich_new(path, &c, err, sizeof(err)) == 0, "%s", err);
    enrich_free(c);
    ck_assert_int_eq(tu_file_size(target), 0);
    ck_assert_int_eq(tu_file_size(path), 65);
    struct stat st;
    ck_assert_int_eq(lstat(tmp, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
}
END_TEST

START_TEST(test_enrich_key_unwritable)
{
    char err[256], path[160];
    enrich_ctx *none;
    snprintf(path, sizeof(path), "%s/no/such/dir.key", tmpdir);
    err[0] = '\0';
    ck_assert_int_eq(enrich_new(path, &none, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(none);
    ck_assert_msg(strstr(err, path) != NULL, "err: %s", err);
}
END_TEST

/* ---- enrich_event ---------------------------------------------------- */

#define RECV_MS 1700000000123ull

static void image_event(bf_event *ev, const char *model)
{
    bf_event_init(ev, BF_DATASET_image_events);
    BF_SET_STR(ev, model, model, strlen(model));
}

static void llm_event(bf_event *ev, const char *model)
{
    bf_event_init(ev, BF_DATASET_llm_events);
    BF_SET_STR(ev, model, model, strlen(model));
}

/* The row copies what it needs of the event and points at nothing of the
 * raw ip: no byte run of the row spells it, and no string of the row
 * points into it. */
START_TEST(test_enrich_row_keeps_no_raw_ip)
{
    static const char raw[] = "203.0.113.77";
    bf_event ev;
    bf_row row;
    memset(&row, 0, sizeof(row)); /* memmem reads all of it, unset bytes too */
    image_event(&ev, "flux");
    BF_SET_STR(&ev, ip, raw, strlen(raw));
    BF_SET_STR(&ev, username, "alice", 5);
    BF_SET_U64(&ev, width, 512);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.ip, "203.0.113.0");
    ck_assert_bfstr(row.username, "alice");
    ck_assert_uint_eq(row.width, 512);
    ck_assert_ptr_null(memmem(&row, sizeof(row), raw, strlen(raw)));
    const bf_str *strs[] = {&row.model, &row.username, &row.id, &row.user_id, &row.tier,
                            &row.status, &row.prompt, &row.error_message};
    for (int i = 0; i < N(strs); i++)
        ck_assert_msg(strs[i]->ptr < raw || strs[i]->ptr >= raw + sizeof(raw),
                      "string %d of the row points into the raw ip", i);
}
END_TEST

START_TEST(test_enrich_event_defaults)
{
    bf_event ev;
    bf_row row;
    image_event(&ev, "flux");
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_uint_eq(row.dataset, BF_DATASET_image_events);
    ck_assert_bfstr(row.model, "flux");
    ck_assert_bfstr(row.username, "");
    ck_assert_bfstr(row.user_id, "anonymous");
    ck_assert_bfstr(row.tier, "anonymous");
    ck_assert_bfstr(row.status, "success");
    ck_assert_str_eq(row.provider, "Black Forest Labs");
    ck_assert(row.cost_usd == 0.0025);
    ck_assert_uint_eq(row.prompt.len, 0);
    ck_assert_uint_eq(row.error_message.len, 0);
    ck_assert_uint_eq(row.referrer_len, 0);
    ck_assert_str_eq(row.referrer, "");
    ck_assert_str_eq(row.ip, "");
    ck_assert_str_eq(row.ip_hash, "");
    ck_assert_uint_eq(row.start_ms, RECV_MS);
    ck_assert_uint_eq(row.end_ms, RECV_MS);
    ck_assert_uint_eq(row.duration_ms, 0);
    ck_assert_uint_eq(row.total_tokens, 0);
    ck_assert_uint_eq(stats.unknown_model, 0);
    ck_assert_uint_eq(stats.ip_invalid, 0);
}
END_TEST

START_TEST(test_enrich_event_user_and_tier)
{
    bf_event ev;
    bf_row row;
    /* A user without a tier: tier "" (unknown), not "anonymous". */
    image_event(&ev, "flux");
    BF_SET_STR(&ev, user_id, "u42", 3);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.user_id, "u42");
    ck_assert_bfstr(row.tier, "");
    BF_SET_STR(&ev, tier, "seed", 4);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.tier, "seed");
    /* An empty user_id is no user. */
    image_event(&ev, "flux");
    BF_SET_STR(&ev, user_id, "", 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.user_id, "anonymous");
    ck_assert_bfstr(row.tier, "anonymous");
}
END_TEST

START_TEST(test_enrich_event_status)
{
    bf_event ev;
    bf_row row;
    image_event(&ev, "flux");
    BF_SET_STR(&ev, error_message, "boom", 4);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.status, "error");
    ck_assert_bfstr(row.error_message, "boom");
    /* A given status wins, even with an error message. */
    BF_SET_STR(&ev, status, "success", 7);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.status, "success");
    /* An empty status counts as absent. */
    BF_SET_STR(&ev, status, "", 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.status, "error");
    /* An empty error message is no error. */
    image_event(&ev, "flux");
    BF_SET_STR(&ev, error_message, "", 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.status, "success");
}
END_TEST

START_TEST(test_enrich_event_truncation)
{
    char prompt[300], msg[700];
    bf_event ev;
    bf_row row;
    memset(prompt, 'p', sizeof(prompt));
    memset(msg, 'm', sizeof(msg));
    image_event(&ev, "flux");
    BF_SET_STR(&ev, prompt, prompt, sizeof(prompt));
    BF_SET_STR(&ev, error_message, msg, sizeof(msg));
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_ptr_eq(row.prompt.ptr, prompt);
    ck_assert_uint_eq(row.prompt.len, BF_PROMPT_MAX_CHARS);
    ck_assert_ptr_eq(row.error_message.ptr, msg);
    ck_assert_uint_eq(row.error_message.len, ERROR_MAX_CHARS);
}
END_TEST

START_TEST(test_enrich_event_id_kept)
{
    bf_event ev;
    bf_row row;
    image_event(&ev, "flux");
    BF_SET_STR(&ev, id, "req-123", 7);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_bfstr(row.id, "req-123");
    ck_assert_ptr_eq(row.id.ptr, ev.id.ptr);
    /* An empty id is generated. */
    BF_SET_STR(&ev, id, "", 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_uint_eq(row.id.len, 30);
}
END_TEST

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 31);
}

/* hex_8bytes (hex.h), which writes ids and ip hashes: every byte value
 * in every place, as snprintf's %02x, and nothing past the 16 digits. */
START_TEST(test_enrich_hex_8bytes)
{
    for (unsigned v = 0; v < 256 + 64; v++) {
        unsigned char b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(v < 256 ? (v + (unsigned)i * 37) : (v * 131 + (unsigned)i) * 97);
        char got[18], want[17];
        memset(got, 'X', sizeof(got));
        ck_assert_ptr_eq(hex_8bytes(got, b), got + 16);
        for (int i = 0; i < 8; i++)
            snprintf(want + 2 * i, 3, "%02x", b[i]);
        ck_assert_msg(memcmp(got, want, 16) == 0, "%.16s, want %s", got, want);
        ck_assert(got[16] == 'X' && got[17] == 'X');
    }
}
END_TEST

START_TEST(test_enrich_event_id_generated_unique)
{
    enum { N = 10000 };
    char (*ids)[31] = malloc(sizeof(*ids) * N);
    ck_assert_ptr_nonnull(ids);
    bf_event ev;
    bf_row row;
    llm_event(&ev, "gpt-5-nano");
    for (int i = 0; i < N; i++) {
        enrich_event(ctx, &ev, RECV_MS, &row);
        ck_assert_uint_eq(row.id.len, 30);
        ck_assert_ptr_eq(row.id.ptr, row.id_buf);
        ck_assert_int_eq(memcmp(row.id.ptr, "pllns_", 6), 0);
        ck_assert_msg(is_lower_hex(row.id.ptr + 6, 24), "id %s", row.id.ptr);
        memcpy(ids[i], row.id.ptr, 31);
    }
    qsort(ids, N, sizeof(*ids), cmp_id);
    for (int i = 1; i < N; i++)
        ck_assert_msg(memcmp(ids[i - 1], ids[i], 31) != 0, "duplicate id %s", ids[i]);
    free(ids);
}
END_TEST

static const struct {
    int hs, he, hd;
    uint64_t start, end, dur;
    uint64_t want_start, want_end, want_dur;
} time_cases[] = {
    /* start + end */
    {1, 1, 0, 1000, 1500, 0, 1000, 1500, 500},
    /* start + end + duration: the duration given is kept */
    {1, 1, 1, 1000, 1500, 7, 1000, 1500, 7},
    /* start only: end = start */
    {1, 0, 0, 1000, 0, 0, 1000, 1000, 0},
    /* start + duration */
    {1, 0, 1, 1000, 0, 250, 1000, 1250, 250},
    /* end only */
    {0, 1, 0, 0, 5000, 0, 5000, 5000, 0},
    /* end + duration */
    {0, 1, 1, 0, 5000, 300, 4700, 5000, 300},
    /* end + a duration longer than the epoch: start clamps at 0 */
    {0, 1, 1, 0, 100, 300, 0, 100, 300},
    /* duration only: end is the receive time */
    {0, 0, 1, 0, 0, 400, RECV_MS - 400, RECV_MS, 400},
    /* nothing: start = end = receive time */
    {0, 0, 0, 0, 0, 0, RECV_MS, RECV_MS, 0},
    /* a span past UINT32_MAX ms: duration_ms clamps (UInt32 column) */
    {1, 1, 0, 0, 4102444800000ull, 0, 0, 4102444800000ull, 4294967295ull},
};

/* The start time window (--max-event-age 7d, --max-event-skew 5m): the
 * start the row would get, however it was derived, decides. */
#define DAY_MS 86400000ull
#define MIN_MS 60000ull
static const struct {
    int hs, he, hd;
    uint64_t start, end, dur;
    bf_reason want;
} window_cases[] = {
    {1, 0, 0, RECV_MS, 0, 0, BF_OK},
    {1, 0, 0, RECV_MS - 7 * DAY_MS, 0, 0, BF_OK},          /* exactly the age */
    {1, 0, 0, RECV_MS - 7 * DAY_MS - 1, 0, 0, BF_R_stale_time},
    {1, 0, 0, RECV_MS / 1000, 0, 0, BF_R_stale_time},       /* seconds, not ms */
    {1, 0, 0, RECV_MS + 5 * MIN_MS, 0, 0, BF_OK},          /* exactly the skew */
    {1, 0, 0, RECV_MS + 5 * MIN_MS + 1, 0, 0, BF_R_future_time},
    {1, 0, 0, RECV_MS + 2 * DAY_MS, 0, 0, BF_R_future_time},
    {0, 1, 1, 0, RECV_MS, 8 * DAY_MS, BF_R_stale_time},     /* end - duration */
    {0, 1, 0, 0, RECV_MS / 1000, 0, BF_R_stale_time},       /* end only, seconds */
    {0, 0, 1, 0, 0, 8 * DAY_MS, BF_R_stale_time},           /* receipt - duration */
    {0, 0, 0, 0, 0, 0, BF_OK},                              /* receipt */
};

START_TEST(test_enrich_event_time_window)
{
    bf_event ev;
    bf_row row;
    image_event(&ev, "mystery");
    if (window_cases[_i].hs)
        BF_SET_U64(&ev, start_time, window_cases[_i].start);
    if (window_cases[_i].he)
        BF_SET_U64(&ev, end_time, window_cases[_i].end);
    if (window_cases[_i].hd)
        BF_SET_U64(&ev, duration_ms, window_cases[_i].dur);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    /* Open by default (as before a window is set), and with 0 for both. */
    ck_assert_int_eq(enrich_event(ctx, &ev, RECV_MS, &row), BF_OK);
    enrich_set_time_window(ctx, 0, 0);
    ck_assert_int_eq(enrich_event(ctx, &ev, RECV_MS, &row), BF_OK);
    uint64_t unknown = stats.unknown_model;
    enrich_set_time_window(ctx, 7 * DAY_MS, 5 * MIN_MS);
    bf_reason r = enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_msg(r == window_cases[_i].want, "case %d: %s, want %s", _i, bf_reason_name(r),
                  bf_reason_name(window_cases[_i].want));
    /* A rejected event is counted as nothing else (unknown_model here). */
    ck_assert_uint_eq(stats.unknown_model, unknown + (r == BF_OK));
    enrich_set_time_window(ctx, 0, 0);
}
END_TEST

START_TEST(test_enrich_event_timestamps)
{
    bf_event ev;
    bf_row row;
    image_event(&ev, "flux");
    if (time_cases[_i].hs)
        BF_SET_U64(&ev, start_time, time_cases[_i].start);
    if (time_cases[_i].he)
        BF_SET_U64(&ev, end_time, time_cases[_i].end);
    if (time_cases[_i].hd)
        BF_SET_U64(&ev, duration_ms, time_cases[_i].dur);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_msg(row.start_ms == time_cases[_i].want_start,
                  "case %d: start %llu", _i, (unsigned long long)row.start_ms);
    ck_assert_msg(row.end_ms == time_cases[_i].want_end, "case %d: end %llu", _i,
                  (unsigned long long)row.end_ms);
    ck_assert_msg(row.duration_ms == time_cases[_i].want_dur,
                  "case %d: duration %llu", _i, (unsigned long long)row.duration_ms);
}
END_TEST

/* Costs, in USD; cases name the rule they check. */
static const struct {
    const char *name;
    unsigned dataset;
    const char *model;
    const char *status;     /* NULL: absent */
    const char *error;      /* NULL: absent */
    int cached;
    uint64_t prompt, cached_tokens, completion;
    double want;
} cost_cases[] = {
    {"per image", BF_DATASET_image_events, "flux", NULL, NULL, 0, 0, 0, 0, 0.0025},
    {"per image, success", BF_DATASET_image_events, "kontext", "success", NULL, 0, 0,
     0, 0, 0.04},
    {"per image, tokens ignored", BF_DATASET_image_events, "turbo", NULL, NULL, 0,
     1000, 0, 1000, 0.002},
    {"image error", BF_DATASET_image_events, "flux", "error", NULL, 0, 0, 0, 0, 0.0},
    {"image error message only", BF_DATASET_image_events, "seedream", NULL, "nsfw",
     0, 0, 0, 0, 0.0},
    {"image cache hit", BF_DATASET_image_events, "nanobanana", NULL, NULL, 1, 0, 0,
     0, 0.0},
    {"token-priced image", BF_DATASET_image_events, "gptimage", NULL, NULL, 0, 1000,
     0, 4000, (1000 * 2.00 + 4000 * 8.00) / 1e6},
    {"token-priced image, cache hit", BF_DATASET_image_events, "gptimage", NULL,
     NULL, 1, 1000, 0, 4000, 0.0},
    {"text with cached tokens", BF_DATASET_llm_events, "gpt-5-nano", NULL, NULL, 0,
     1000000, 400000, 2000000, (600000 * 0.05 + 400000 * 0.01 + 2000000 * 0.35) / 1e6},
    {"text, other model", BF_DATASET_llm_events, "gpt-4.1-nano", NULL, NULL, 0, 5000,
     1000, 300, (4000 * 0.10 + 1000 * 0.03 + 300 * 0.40) / 1e6},
    {"cached tokens clamped to prompt", BF_DATASET_llm_events, "gpt-5-nano", NULL,
     NULL, 0, 100, 500, 0, 100 * 0.01 / 1e6},
    {"no cached price: prompt price", BF_DATASET_llm_events, "deepseek-r1", NULL,
     NULL, 0, 1000000, 500000, 1000000, (1000000 * 1.35 + 1000000 * 5.40) / 1e6},
    {"text cache hit", BF_DATASET_llm_events, "gpt-5-nano", NULL, NULL, 1, 1000, 0,
     1000, 0.0},
    {"text error still costs tokens", BF_DATASET_llm_events, "deepseek-r1", "error",
     NULL, 0, 1000, 0, 0, 1000 * 1.35 / 1e6},
    {"image model on llm_events: no tokens, no cost", BF_DATASET_llm_events, "flux",
     NULL, NULL, 0, 0, 0, 0, 0.0},
    {"max tokens", BF_DATASET_llm_events, "deepseek-r1", NULL, NULL, 0, 4294967295ull,
     0, 4294967295ull, (4294967295.0 * 1.35 + 4294967295.0 * 5.40) / 1e6},
};

START_TEST(test_enrich_event_cost)
{
    bf_event ev;
    bf_row row;
    bf_event_init(&ev, cost_cases[_i].dataset);
    BF_SET_STR(&ev, model, cost_cases[_i].model, strlen(cost_cases[_i].model));
    if (cost_cases[_i].status)
        BF_SET_STR(&ev, status, cost_cases[_i].status, strlen(cost_cases[_i].status));
    if (cost_cases[_i].error)
        BF_SET_STR(&ev, error_message, cost_cases[_i].error,
                   strlen(cost_cases[_i].error));
    if (cost_cases[_i].cached)
        BF_SET_U64(&ev, cached, 1);
    if (cost_cases[_i].prompt)
        BF_SET_U64(&ev, prompt_tokens, cost_cases[_i].prompt);
    if (cost_cases[_i].cached_tokens)
        BF_SET_U64(&ev, cached_tokens, cost_cases[_i].cached_tokens);
    if (cost_cases[_i].completion)
        BF_SET_U64(&ev, completion_tokens, cost_cases[_i].completion);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    enrich_event(ctx, &ev, RECV_MS, &row);
    double want = cost_cases[_i].want;
    double tol = want * 1e-12;
    ck_assert_msg(row.cost_usd >= want - tol && row.cost_usd <= want + tol,
                  "%s: cost %.17g, want %.17g", cost_cases[_i].name, row.cost_usd, want);
    ck_assert_uint_eq(stats.unknown_model, 0);
}
END_TEST

/* cached_tokens belongs to llm_events only: an image event that carries it
 * is priced as if it did not (fields.def: ignored downstream). */
START_TEST(test_enrich_event_cost_cached_tokens_llm_only)
{
    char err[256], path[160];
    static const char text[] =
        "{\"models\": {\"img\": {\"provider\": \"P\", \"prompt_per_mtok\": 10,"
        " \"cached_prompt_per_mtok\": 1, \"completion_per_mtok\": 0}}}";
    snprintf(path, sizeof(path), "%s/catalog.json", tmpdir);
    tu_write_file(path, text, strlen(text));
    catalog *c;
    ck_assert_msg(catalog_load(path, &c, err, sizeof(err)) == 0, "%s", err);
    enrich_set_catalog(ctx, c);
    bf_event ev;
    bf_row row;
    image_event(&ev, "img");
    BF_SET_U64(&ev, prompt_tokens, 1000000);
    BF_SET_U64(&ev, cached_tokens, 1000000);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_msg(row.cost_usd == 10.0, "cost %.17g", row.cost_usd);
    ev.dataset = BF_DATASET_llm_events;
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_msg(row.cost_usd == 1.0, "cost %.17g", row.cost_usd);
    enrich_set_catalog(ctx, cat);
    catalog_free(c);
}
END_TEST

START_TEST(test_enrich_event_unknown_model)
{
    bf_event ev;
    bf_row row;
    llm_event(&ev, "mystery-9000");
    BF_SET_U64(&ev, prompt_tokens, 1000);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.provider, "unknown");
    ck_assert(row.cost_usd == 0.0);
    ck_assert_uint_eq(stats.unknown_model, 1);
    /* A prefix of a known name is not that model. */
    llm_event(&ev, "gpt-5");
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.provider, "unknown");
    ck_assert_uint_eq(stats.unknown_model, 2);
    /* No catalog at all: every model is unknown. */
    enrich_set_catalog(ctx, NULL);
    llm_event(&ev, "gpt-5-nano");
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.provider, "unknown");
    ck_assert_uint_eq(stats.unknown_model, 3);
}
END_TEST

START_TEST(test_enrich_event_ip)
{
    bf_event ev;
    bf_row row;
    char want[IP_HASH_HEX + 1];
    image_event(&ev, "flux");
    BF_SET_STR(&ev, ip, "198.51.100.23", 13);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.ip, "198.51.100.0");
    expected_hash(TEST_KEY, strlen(TEST_KEY),
                  (const unsigned char *)"\xc6\x33\x64\x17", 4, want);
    ck_assert_str_eq(row.ip_hash, want);
    ck_assert_uint_eq(stats.ip_invalid, 0);
    /* Invalid: emitted "" and counted. */
    BF_SET_STR(&ev, ip, "198.51.100", 10);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.ip, "");
    ck_assert_str_eq(row.ip_hash, "");
    ck_assert_uint_eq(stats.ip_invalid, 1);
    /* Empty: absent, not invalid. */
    BF_SET_STR(&ev, ip, "", 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.ip, "");
    ck_assert_uint_eq(stats.ip_invalid, 1);
}
END_TEST

START_TEST(test_enrich_event_referrer_and_tokens)
{
    bf_event ev;
    bf_row row;
    static const char url[] = "https://me:secret@App.Example.org/chat?session=abc";
    llm_event(&ev, "gpt-5-nano");
    BF_SET_STR(&ev, referrer, url, strlen(url));
    BF_SET_U64(&ev, prompt_tokens, 4294967295ull);
    BF_SET_U64(&ev, completion_tokens, 4294967295ull);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_str_eq(row.referrer, "https://app.example.org");
    ck_assert_uint_eq(row.referrer_len, 23);
    /* total_tokens is a UInt32 column: clamped. */
    ck_assert_uint_eq(row.total_tokens, 4294967295ull);
    BF_SET_U64(&ev, prompt_tokens, 10);
    BF_SET_U64(&ev, completion_tokens, 32);
    enrich_event(ctx, &ev, RECV_MS, &row);
    ck_assert_uint_eq(row.total_tokens, 42);
}
END_TEST

Suite *enrich_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("enrich", enrich_setup, enrich_teardown, &tc);
    tcase_add_loop_test(tc, test_enrich_utf8_prefix_table, 0, N(prefix_cases));
    tcase_add_test(tc, test_enrich_utf8_prefix_120_chars);
    tcase_add_test(tc, test_enrich_utf8_prefix_never_splits);
    tcase_add_test(tc, test_enrich_utf8_prefix_as_char_by_char);
    tcase_add_loop_test(tc, test_enrich_referrer_table, 0, N(referrer_cases));
    tcase_add_test(tc, test_enrich_referrer_long_host);
    tcase_add_test(tc, test_enrich_referrer_respects_len);
    tcase_add_test(tc, test_enrich_referrer_cache_never_mixes);
    tcase_add_test(tc, test_enrich_ip_cache_never_mixes);
    tcase_add_loop_test(tc, test_enrich_ip_table, 0, N(ip_cases));
    tcase_add_test(tc, test_enrich_ip_embedded_ipv4_is_the_ipv4);
    tcase_add_loop_test(tc, test_enrich_ip_garbage, 0, N(bad_ips));
    tcase_add_test(tc, test_enrich_ip_empty);
    tcase_add_test(tc, test_enrich_ip_hash_properties);
    tcase_add_test(tc, test_enrich_ip_hash_key_lengths);
    tcase_add_test(tc, test_enrich_key_created_0600);
    tcase_add_test(tc, test_enrich_key_too_short);
    tcase_add_loop_test(tc, test_enrich_key_mode_refused, 0, N(key_modes));
    tcase_add_test(tc, test_enrich_key_temp_not_followed);
    tcase_add_test(tc, test_enrich_key_unwritable);
    tcase_add_test(tc, test_enrich_event_defaults);
    tcase_add_test(tc, test_enrich_row_keeps_no_raw_ip);
    tcase_add_test(tc, test_enrich_event_user_and_tier);
    tcase_add_test(tc, test_enrich_event_status);
    tcase_add_test(tc, test_enrich_event_truncation);
    tcase_add_test(tc, test_enrich_event_id_kept);
    tcase_add_test(tc, test_enrich_hex_8bytes);
    tcase_add_test(tc, test_enrich_event_id_generated_unique);
    tcase_add_loop_test(tc, test_enrich_event_timestamps, 0, N(time_cases));
    tcase_add_loop_test(tc, test_enrich_event_time_window, 0, N(window_cases));
    tcase_add_loop_test(tc, test_enrich_event_cost, 0, N(cost_cases));
    tcase_add_test(tc, test_enrich_event_cost_cached_tokens_llm_only);
    tcase_add_test(tc, test_enrich_event_unknown_model);
    tcase_add_test(tc, test_enrich_event_ip);
    tcase_add_test(tc, test_enrich_ip_longest);
    tcase_add_test(tc, test_enrich_event_referrer_and_tokens);
    return s;
}
