/*
 * tests/bench/payload.c: the payload file of `make bench`, events like the
 * services send, so that the bare receiver and birdfeederd are fed the very
 * same datagrams by tests/bench/loadgen.c.
 *
 *   bench-payload --format binary|json [--count N] [--clients N] > FILE
 *
 * The mix is tests/bench/mix.h. The binary form cuts image prompts to 120
 * characters with the C shim's encoder (bf_client_encode); a JSON sender
 * has no shim and sends them whole (400 bytes), and the daemon cuts them.
 * --clients N draws client addresses from N (default 1000); --clients 0
 * gives every event an address of its own.
 *
 * File format: for each datagram a 2-byte little-endian length, then the
 * bytes. The same arguments give the same file, but for the start times
 * (an hour before the run, tests/bench/mix.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bf_client.h"
#include "mix.h"

/* JSON text of one event (plain ASCII values: nothing to escape). */
static size_t json_event(char *out, size_t cap, const bf_event *ev)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, cap - o, "{\"dataset\":\"%s\"", bf_dataset_name(ev->dataset));
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name || !((ev->present >> tag) & 1u))
            continue;
        const char *slot = (const char *)ev + f->offset;
        if (f->type == BF_TYPE_STR) {
            const bf_str *s = (const bf_str *)slot;
            o += (size_t)snprintf(out + o, cap - o, ",\"%s\":\"%.*s\"", f->name, (int)s->len,
                                  s->ptr);
        } else if (f->type == BF_TYPE_BOOL) {
            o += (size_t)snprintf(out + o, cap - o, ",\"%s\":%s", f->name,
                                  *(const uint64_t *)slot ? "true" : "false");
        } else {
            o += (size_t)snprintf(out + o, cap - o, ",\"%s\":%llu", f->name,
                                  (unsigned long long)*(const uint64_t *)slot);
        }
    }
    o += (size_t)snprintf(out + o, cap - o, "}");
    return o;
}

int main(int argc, char **argv)
{
    const char *format = "binary", *count_s = "4096", *clients_s = "1000";
    bench_args(argc, argv, 1,
               (const struct bench_opt[]){{"--format", &format}, {"--count", &count_s},
                                          {"--clients", &clients_s}, {0}},
               "--format binary|json [--count N] [--clients N]");
    int json = !strcmp(format, "json");
    unsigned count = (unsigned)atoi(count_s), clients = (unsigned)atoi(clients_s);
    for (unsigned i = 0; i < count; i++) {
        bf_event ev;
        mix_bufs m;
        mix_event(i, clients, &ev, &m);
        uint8_t out[8192];
        size_t n = json ? json_event((char *)out, sizeof(out), &ev)
                        : bf_client_encode(&ev, out, sizeof(out));
        if (!n || n > 65535) {
            fprintf(stderr, "bench-payload: event %u does not encode\n", i);
            return 1;
        }
        uint8_t len[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
        fwrite(len, 1, 2, stdout);
        fwrite(out, 1, n, stdout);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
