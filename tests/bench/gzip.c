/*
 * tests/bench/gzip.c: the compression lever, measured. Compresses one
 * batch of NDJSON rows (a file, as the daemon would batch them: up to
 * --flush-bytes, default 4 MiB, made by repeating the file) with zlib,
 * libdeflate and ISA-L igzip at their fastest levels, all to standard
 * gzip, and prints for each: ns per input byte (best of --rounds),
 * output/input ratio, and whether zlib inflates the output back to the
 * input.
 *
 *   bench-gzip ROWS.ndjson [--bytes 4194304] [--rounds 20]
 */
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "args.h"

static size_t zlib_gz(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int level)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_in = (uint8_t *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t len = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? len : 0;
}

static size_t deflate_gz(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int level)
{
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    size_t len = c ? libdeflate_gzip_compress(c, in, n, out, cap) : 0;
    libdeflate_free_compressor(c);
    return len;
}

static size_t isal_gz(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int level)
{
    static uint8_t lvl_buf[ISAL_DEF_LVL1_DEFAULT];
    struct isal_zstream z;
    isal_deflate_init(&z);
    z.gzip_flag = IGZIP_GZIP;
    z.level = (uint32_t)level;
    z.level_buf = level ? lvl_buf : NULL;
    z.level_buf_size = level ? sizeof(lvl_buf) : 0;
    z.end_of_stream = 1;
    z.flush = NO_FLUSH;
    z.next_in = (uint8_t *)in;
    z.avail_in = (uint32_t)n;
    z.next_out = out;
    z.avail_out = (uint32_t)cap;
    if (isal_deflate(&z) != COMP_OK || z.internal_state.state != ZSTATE_END)
        return 0;
    return z.total_out;
}

static int inflates_to(const uint8_t *gz, size_t n, const uint8_t *want, size_t len)
{
    uint8_t *back = malloc(len + 1);
    z_stream z;
    memset(&z, 0, sizeof(z));
    inflateInit2(&z, 15 + 16);
    z.next_in = (uint8_t *)gz;
    z.avail_in = (uInt)n;
    z.next_out = back;
    z.avail_out = (uInt)len + 1;
    int ok = inflate(&z, Z_FINISH) == Z_STREAM_END && z.total_out == len &&
             memcmp(back, want, len) == 0;
    inflateEnd(&z);
    free(back);
    return ok;
}

int main(int argc, char **argv)
{
    const char *bytes_s = "4194304", *rounds_s = "20";
    const char *usage = "ROWS.ndjson [--bytes N] [--rounds N]";
    if (argc < 2 || !strncmp(argv[1], "--", 2)) {
        fprintf(stderr, "usage: %s %s\n", argv[0], usage);
        return 2;
    }
    bench_args(argc, argv, 2,
               (const struct bench_opt[]){{"--bytes", &bytes_s}, {"--rounds", &rounds_s}, {0}},
               usage);
    size_t bytes = strtoul(bytes_s, NULL, 10);
    int rounds = atoi(rounds_s);
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    uint8_t *src = malloc(64u << 20);
    size_t got = fread(src, 1, 64u << 20, f);
    fclose(f);
    if (!got)
        return 1;
    uint8_t *in = malloc(bytes);
    for (size_t o = 0; o < bytes; o += got)
        memcpy(in + o, src, bytes - o < got ? bytes - o : got);
    size_t cap = bytes + bytes / 8 + 65536;
    uint8_t *out = malloc(cap);
    struct {
        const char *name;
        size_t (*fn)(const uint8_t *, size_t, uint8_t *, size_t, int);
        int level;
    } libs[] = {
        {"zlib level 1", zlib_gz, 1},       {"zlib level 6", zlib_gz, 6},
        {"libdeflate level 1", deflate_gz, 1}, {"isa-l igzip level 0", isal_gz, 0},
        {"isa-l igzip level 1", isal_gz, 1},
    };
    printf("%zu bytes of rows, best of %d rounds\n", bytes, rounds);
    for (size_t k = 0; k < sizeof(libs) / sizeof(libs[0]); k++) {
        double best = 1e30;
        size_t len = 0;
        for (int r = 0; r < rounds; r++) {
            double t = now_s();
            len = libs[k].fn(in, bytes, out, cap, libs[k].level);
            t = now_s() - t;
            if (t < best)
                best = t;
        }
        printf("%-20s %6.2f ns/byte  ratio %.3f  %s\n", libs[k].name, best * 1e9 / (double)bytes,
               (double)len / (double)bytes,
               len && inflates_to(out, len, in, bytes) ? "gunzips ok" : "BAD OUTPUT");
    }
    return 0;
}
