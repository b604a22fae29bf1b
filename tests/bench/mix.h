/*
 * tests/bench/mix.h: the events of `make bench`, like the services send:
 * half image events, half text (llm) events; image prompts of 400 bytes;
 * a referrer with a path and a query on four events in five; user, tier,
 * status (one in fifty an error), times, sizes or tokens. Client addresses
 * come from `clients` addresses, a third of them IPv6, or (clients 0) one
 * per event. Deterministic but for the start times, which count from an
 * hour before the run. Used by bench-payload and bench-shim.
 */
#ifndef BF_BENCH_MIX_H
#define BF_BENCH_MIX_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bf_proto.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t mix_next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static const char *const image_models[] = {"flux", "turbo", "kontext", "seedream", "gptimage"};
static const char *const llm_models[] = {"gpt-5-nano", "gpt-4.1-nano", "deepseek-r1"};
static const char *const tiers[] = {"anonymous", "seed", "flower", "nectar"};
static const char *const referrers[] = {
    "https://app.example.com/gallery/42?utm_source=newsletter&utm_medium=email",
    "https://www.example.org/chat/threads/9f1c2d?tab=history",
    "https://studio.example.net/projects/alpha/canvas",
    "https://example.com/",
    "https://images.example.io/search?q=lighthouse+watercolour&page=3",
};

static const char *const words[] = {
    "a", "watercolour", "of", "the", "lighthouse", "at", "dusk", "with", "gulls",
    "waves", "on", "rocks", "and", "warm", "light", "in", "windows", "cinematic",
    "detailed", "portrait", "city", "street", "rain", "neon", "reflections", "morning",
    "mist", "over", "mountains", "soft", "focus", "35mm", "film", "grain",
};

/* A prompt of exactly n bytes of words. */
static void make_prompt(char *out, size_t n)
{
    size_t o = 0;
    while (o < n) {
        const char *w = words[mix_next() % (sizeof(words) / sizeof(words[0]))];
        size_t k = strlen(w);
        if (o) {
            out[o++] = ' ';
            if (o == n)
                break;
        }
        if (k > n - o)
            k = n - o;
        memcpy(out + o, w, k);
        o += k;
    }
    out[n] = '\0';
}

static void client_ip(char *out, size_t n, unsigned c)
{
    if (c % 3 == 2)
        snprintf(out, n, "2001:db8:%x:%x::%x", 0x100 + c / 7 % 4096, c % 65536, c % 251 + 1);
    else
        snprintf(out, n, "%u.%u.%u.%u", 20 + c / 65536 % 200, c / 256 % 256, c % 256,
                 c * 7 % 250 + 1);
}

/* Strings an event points into; one per event in use. */
typedef struct mix_bufs {
    char prompt[401], ip[64], user[32], username[32];
} mix_bufs;

/* Start times count from here: the payload is made at the start of a
 * bench run, and the daemon rejects start times older than a few days
 * (stale_time) or in the future. */
static uint64_t mix_t0(void)
{
    static uint64_t t0;
    if (!t0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        t0 = (uint64_t)ts.tv_sec * 1000 - 3600 * 1000; /* an hour ago */
    }
    return t0;
}

/* Event i of the mix into ev, its strings in m. */
static void mix_event(unsigned i, unsigned clients, bf_event *ev, mix_bufs *m)
{
    uint64_t t0 = mix_t0();
    unsigned c = clients ? mix_next() % clients : i;
    client_ip(m->ip, sizeof(m->ip), c);
    snprintf(m->user, sizeof(m->user), "user_%u", c * 7919 % 100000);
    snprintf(m->username, sizeof(m->username), "name%u", c % 5000);
    int image = i % 2 == 0;
    bf_event_init(ev, image ? BF_DATASET_image_events : BF_DATASET_llm_events);
    const char *model = image ? image_models[mix_next() % 5] : llm_models[mix_next() % 3];
    BF_SET_STR(ev, model, model, strlen(model));
    BF_SET_STR(ev, user_id, m->user, strlen(m->user));
    if (c % 2)
        BF_SET_STR(ev, username, m->username, strlen(m->username));
    const char *tier = tiers[c % 4];
    BF_SET_STR(ev, tier, tier, strlen(tier));
    BF_SET_STR(ev, ip, m->ip, strlen(m->ip));
    if (mix_next() % 5) {
        const char *r = referrers[mix_next() % 5];
        BF_SET_STR(ev, referrer, r, strlen(r));
    }
    int failed = mix_next() % 50 == 0;
    BF_SET_STR(ev, status, failed ? "error" : "success", failed ? 5 : 7);
    if (failed)
        BF_SET_STR(ev, error_message, "upstream timeout after 30000 ms", 31);
    uint64_t start = t0 + (uint64_t)i * 13, dur = 200 + mix_next() % 20000;
    BF_SET_U64(ev, start_time, start);
    BF_SET_U64(ev, end_time, start + dur);
    BF_SET_U64(ev, duration_ms, dur);
    if (image) {
        make_prompt(m->prompt, 400);
        BF_SET_STR(ev, prompt, m->prompt, 400);
        BF_SET_U64(ev, width, 1024);
        BF_SET_U64(ev, height, mix_next() % 2 ? 1024 : 768);
        BF_SET_U64(ev, steps, 4 + mix_next() % 30);
        BF_SET_U64(ev, cached, mix_next() % 5 == 0);
    } else {
        BF_SET_U64(ev, prompt_tokens, 200 + mix_next() % 4000);
        BF_SET_U64(ev, completion_tokens, 50 + mix_next() % 1000);
        BF_SET_U64(ev, cached_tokens, mix_next() % 2 ? 128 : 0);
        BF_SET_U64(ev, stream, mix_next() % 2);
    }
}

#endif /* BF_BENCH_MIX_H */
