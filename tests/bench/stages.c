/*
 * tests/bench/stages.c: the daemon's per-event stages with no sockets, for
 * callgrind: each datagram of a payload file (bench-payload) is decoded and
 * validated (bf_decode_datagram), enriched (enrich_event) and formatted into
 * its dataset's batch (batch_append), as main.c's on_datagram does, --passes
 * times over the file. The first pass warms the caches (the IP cache, the
 * catalog); the passes after it run inside stages_measure, so
 *
 *   valgrind --tool=callgrind --toggle-collect=stages_measure \
 *       build/bench-stages --payload FILE --passes 4
 *
 * counts exactly the stages' instructions (callgrind_annotate --inclusive=yes
 * splits them by function). The HMAC key is fixed and the receive time is
 * a constant, so --out FILE (the batches as they close, NDJSON) is the
 * same for the same payload but for the generated ids: compare outputs
 * with the id column cut (`sed 's/^{"id":"[^"]*"//'`).
 *
 *   bench-stages --payload FILE [--passes N] [--out FILE] [--key FILE]
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "args.h"
#include "batch.h"
#include "bf_decoder.h"
#include "catalog.h"
#include "enrich.h"
#include "memory.h"
#include "row.h"

static FILE *out;

static void on_flush(batch_buf *b, void *arg)
{
    (void)arg;
    if (out)
        fwrite(b->data, 1, b->len, out);
    batch_buf_free(b);
}

typedef struct payload {
    uint8_t *data;
    size_t len;
} payload;

static uint64_t pass(bf_decoder *dec, enrich_ctx *en, const payload *pl, uint64_t recv_ms,
                     uint64_t *rejected)
{
    uint64_t n = 0;
    for (size_t o = 0; o + 2 <= pl->len; n++) {
        size_t len = (size_t)pl->data[o] | (size_t)pl->data[o + 1] << 8;
        const uint8_t *dg = pl->data + o + 2;
        o += 2 + len;
        bf_event ev;
        bf_row row;
        if (bf_decode_datagram(dec, dg, len, &ev, NULL) != BF_OK ||
            enrich_event(en, &ev, recv_ms, &row) != BF_OK) {
            (*rejected)++;
            continue;
        }
        batch_append(&row);
    }
    return n;
}

/* Kept out of line: callgrind's --toggle-collect names it. */
__attribute__((noinline)) uint64_t stages_measure(bf_decoder *dec, enrich_ctx *en,
                                                  const payload *pl, unsigned passes,
                                                  uint64_t recv_ms, uint64_t *rejected);
__attribute__((noinline)) uint64_t stages_measure(bf_decoder *dec, enrich_ctx *en,
                                                  const payload *pl, unsigned passes,
                                                  uint64_t recv_ms, uint64_t *rejected)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < passes; i++)
        n += pass(dec, en, pl, recv_ms, rejected);
    return n;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *outp = NULL, *key = "/tmp/bench-stages.key", *passes_s = "4";
    static const char usage[] = "--payload FILE [--passes N] [--out FILE] [--key FILE]";
    const struct bench_opt opts[] = {{"--payload", &path}, {"--passes", &passes_s},
                                     {"--out", &outp},       {"--key", &key},
                                     {NULL, NULL}};
    bench_args(argc, argv, 1, opts, usage);
    unsigned passes = (unsigned)atoi(passes_s);
    if (!path) {
        fprintf(stderr, "usage: %s %s\n", argv[0], usage);
        return 2;
    }
    FILE *f = fopen(path, "rb");
    payload pl = {0};
    if (!f || fseek(f, 0, SEEK_END) < 0 || (pl.len = (size_t)ftell(f)) == 0 ||
        !(pl.data = malloc(pl.len)) || fseek(f, 0, SEEK_SET) < 0 ||
        fread(pl.data, 1, pl.len, f) != pl.len) {
        fprintf(stderr, "bench-stages: cannot read %s\n", path);
        return 1;
    }
    fclose(f);
    if (outp && !(out = fopen(outp, "w"))) {
        fprintf(stderr, "bench-stages: cannot write %s\n", outp);
        return 1;
    }
    /* A fixed key, so ip_hash is the same from run to run. */
    static const char hexkey[] = "00112233445566778899aabbccddeeff\n";
    int kfd = open(key, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (kfd < 0 || fchmod(kfd, 0600) < 0 ||
        write(kfd, hexkey, sizeof(hexkey) - 1) != (ssize_t)sizeof(hexkey) - 1 ||
        close(kfd) < 0) {
        fprintf(stderr, "bench-stages: cannot write %s\n", key);
        return 1;
    }
    char err[512];
    catalog *cat;
    enrich_ctx *en;
    if (catalog_load(NULL, &cat, err, sizeof(err)) < 0 ||
        enrich_new(key, &en, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench-stages: %s\n", err);
        return 1;
    }
    enrich_set_catalog(en, cat);
    uv_loop_t loop;
    uv_loop_init(&loop);
    batch_opts bo = {.flush_bytes = 4u << 20, .flush_interval_ms = 1000000,
                     .row_max = row_max_bytes(65507), .on_flush = on_flush};
    if (batch_init(&loop, &bo) < 0) {
        fprintf(stderr, "bench-stages: batch_init failed\n");
        return 1;
    }
    bf_decoder dec = {0};
    /* The start times of the payload are an hour before it was made. */
    uint64_t recv_ms = 0, rejected = 0;
    {
        bf_event ev;
        size_t len = (size_t)pl.data[0] | (size_t)pl.data[1] << 8;
        if (bf_decode_datagram(&dec, pl.data + 2, len, &ev, NULL) == BF_OK)
            recv_ms = ev.start_time + 3600 * 1000;
    }
    uint64_t warm = pass(&dec, en, &pl, recv_ms, &rejected);
    uint64_t n = stages_measure(&dec, en, &pl, passes, recv_ms, &rejected);
    batch_close();
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    printf("{\"datagrams\": %llu, \"measured\": %llu, \"rejected\": %llu}\n",
           (unsigned long long)warm, (unsigned long long)n, (unsigned long long)rejected);
    bf_decoder_release(&dec);
    enrich_free(en);
    catalog_free(cat);
    free(pl.data);
    if (out)
        fclose(out);
    return 0;
}
