/* cli/codec.c: `birdfeeder encode` (events to datagrams in hex) and
 * `birdfeeder decode` (datagrams in hex to events). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "bf_client.h"
#include "bf_decoder.h"
#include "bf_json.h"
#include "bf_proto.h"
#include "cli.h"
#include "hex.h"

int cmd_encode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: " PROG " encode < events.ndjson\n");
        return 2;
    }
    line_reader lr = {0};
    unsigned long invalid = 0;
    uint8_t buf[BF_CLIENT_MAX_DATAGRAM];
    bf_decoder dec = {0};
    bf_event ev;
    while (cli_next_event(&lr, &dec, &ev, &invalid)) {
        size_t n = bf_client_encode(&ev, buf, sizeof(buf));
        if (n == 0) {
            cli_report_oversize(&lr, &invalid);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            printf("%02x", buf[i]);
        putchar('\n');
    }
    bf_decoder_release(&dec);
    free(lr.buf);
    return invalid ? 1 : 0;
}

/* Hex (spaces and tabs ignored) to bytes, in place: out may be s. Returns
 * the byte count, or -1 for an odd digit count or a non-hex character. */
static long hex_to_bytes(const char *s, size_t len, uint8_t *out)
{
    long n = 0;
    int hi = -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ' || s[i] == '\t')
            continue;
        int d = hex_value((unsigned char)s[i]);
        if (d < 0)
            return -1;
        if (hi < 0) {
            hi = d;
        } else {
            out[n++] = (uint8_t)(hi << 4 | d);
            hi = -1;
        }
    }
    return hi < 0 ? n : -1;
}

/* Decode and validate one datagram as the daemon does, with its default
 * size limit; prints the event or "error: <reason>". */
static int cli_decode_datagram(const uint8_t *buf, size_t len)
{
    bf_decoder dec = {0};
    bf_event ev;
    bf_reason r = len > BF_CLIENT_MAX_DATAGRAM ? BF_R_oversize
                                               : bf_decode_datagram(&dec, buf, len, &ev, NULL);
    int rc = -1;
    char *text = NULL;
    if (r == BF_OK) {
        json_t *obj = bf_event_to_json(&ev);
        text = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(obj);
    }
    if (text) {
        puts(text);
        free(text);
        rc = 0;
    } else {
        printf("error: %s\n",
               r == BF_OK ? "out of memory" : bf_reason_name(r));
    }
    bf_decoder_release(&dec);
    return rc;
}

int cmd_decode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: " PROG " decode < datagrams.hex\n");
        return 2;
    }
    line_reader lr = {0};
    unsigned long failed = 0;
    char *line;
    size_t len;
    while ((line = line_read(&lr, &len))) {
        if (line_is_blank(line, len))
            continue;
        long n = hex_to_bytes(line, len, (uint8_t *)line);
        if (n < 0) {
            printf("error: not hex\n");
            failed++;
            continue;
        }
        if (cli_decode_datagram((const uint8_t *)line, (size_t)n) < 0)
            failed++;
    }
    free(lr.buf);
    return failed ? 1 : 0;
}
