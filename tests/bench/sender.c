/*
 * tests/bench/sender.c: load generator for `make bench`. Sends events at a
 * fixed rate through the C client shim (one send(2) per event, as a service
 * would) to a daemon on loopback, for a fixed time, then prints a JSON line:
 *   {"sent":N,"dropped":N,"oversize":N,"failed":N,"seconds":S,"rate":R}
 * With --ids PREFIX every event carries the id PREFIX<n>, n = 0, 1, ...
 * in send order, so tests can check the exact set delivered.
 * Pacing: every millisecond, the events due so far are sent, so short
 * stalls are caught up rather than lost; below 1000 events/s it sleeps
 * until the next one is due instead (a fleet of senders stays cheap).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "bf_client.h"

#define VARIANTS 256

int main(int argc, char **argv)
{
    const char *to = "127.0.0.1:8190", *rate_s = "100000", *seconds_s = "5", *ids = NULL;
    bench_args(argc, argv, 1,
               (const struct bench_opt[]){{"--to", &to}, {"--rate", &rate_s},
                                          {"--seconds", &seconds_s}, {"--ids", &ids}, {0}},
               "[--to HOST:PORT] [--rate N] [--seconds S] [--ids PREFIX]");
    double rate = atof(rate_s), seconds = atof(seconds_s);
    int err;
    bf_client *c = bf_client_open(to, &err);
    if (!c) {
        fprintf(stderr, "bench-sender: %s: %s\n", to, strerror(-err));
        return 1;
    }
    /* Realistic events: a prompt near the 120-character cut, an IPv4
     * address, a referrer with a path, user and tier; image and llm mixed. */
    static char prompts[VARIANTS][128], ips[VARIANTS][20], users[VARIANTS][16];
    bf_event evs[VARIANTS];
    for (int i = 0; i < VARIANTS; i++) {
        snprintf(prompts[i], sizeof(prompts[i]),
                 "variant %03d: a watercolour of a lighthouse at dusk with gulls, "
                 "waves on the rocks and warm light in the windows", i);
        snprintf(ips[i], sizeof(ips[i]), "198.51.100.%d", i % 250 + 1);
        snprintf(users[i], sizeof(users[i]), "user_%d", i * 7919 % 1000);
        bf_event *ev = &evs[i];
        int image = i % 4 != 3;
        bf_event_init(ev, image ? BF_DATASET_image_events : BF_DATASET_llm_events);
        const char *model = image ? (i % 2 ? "flux" : "turbo") : "gpt-5-nano";
        BF_SET_STR(ev, model, model, strlen(model));
        BF_SET_STR(ev, user_id, users[i], strlen(users[i]));
        BF_SET_STR(ev, tier, "seed", 4);
        BF_SET_STR(ev, ip, ips[i], strlen(ips[i]));
        BF_SET_STR(ev, referrer, "https://app.example.com/gallery/42", 34);
        BF_SET_STR(ev, status, "success", 7);
        BF_SET_U64(ev, duration_ms, 1000 + (uint64_t)i);
        if (image) {
            BF_SET_STR(ev, prompt, prompts[i], strlen(prompts[i]));
            BF_SET_U64(ev, width, 1024);
            BF_SET_U64(ev, height, 1024);
            BF_SET_U64(ev, steps, 4);
            BF_SET_U64(ev, cached, (uint64_t)(i % 5 == 0));
        } else {
            BF_SET_U64(ev, prompt_tokens, 1000 + (uint64_t)i);
            BF_SET_U64(ev, completion_tokens, 200);
            BF_SET_U64(ev, cached_tokens, 100);
        }
    }
    double t0 = now_s(), end = t0 + seconds;
    uint64_t sent_calls = 0;
    struct timespec tick = {0, 1000000};
    for (;;) {
        double t = now_s();
        if (t >= end)
            break;
        uint64_t due = (uint64_t)((t - t0) * rate);
        while (sent_calls < due) {
            bf_event *ev = &evs[sent_calls % VARIANTS];
            char id[64];
            if (ids) {
                int n = snprintf(id, sizeof(id), "%s%llu", ids,
                                 (unsigned long long)sent_calls);
                BF_SET_STR(ev, id, id, (size_t)n);
            }
            bf_client_send(c, ev);
            sent_calls++;
        }
        double wait = t0 + (double)(sent_calls + 1) / rate - now_s();
        if (wait > 0.001 && wait < end - now_s()) {
            struct timespec until = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&until, NULL);
        } else {
            nanosleep(&tick, NULL);
        }
    }
    double took = now_s() - t0;
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    printf("{\"sent\":%llu,\"dropped\":%llu,\"oversize\":%llu,\"failed\":%llu,"
           "\"seconds\":%.3f,\"rate\":%.0f}\n",
           (unsigned long long)st.sent, (unsigned long long)st.dropped,
           (unsigned long long)st.oversize, (unsigned long long)st.failed, took,
           (double)st.sent / took);
    bf_client_close(c);
    return 0;
}
