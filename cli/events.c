/* cli/events.c: events read from standard input, one JSON object a line,
 * decoded and checked by the daemon's own decoder (proto/bf_decoder.h).
 * See cli.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_decoder.h"
#include "bf_proto.h"
#include "cli.h"

char *line_read(line_reader *lr, size_t *len)
{
    ssize_t n = getline(&lr->buf, &lr->cap, stdin);
    if (n < 0)
        return NULL;
    lr->lineno++;
    while (n > 0 && (lr->buf[n - 1] == '\n' || lr->buf[n - 1] == '\r'))
        n--;
    lr->buf[n] = '\0';
    *len = (size_t)n;
    return lr->buf;
}

int line_is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

/* Keys the protocol does not have are dropped by the decoder: a typo
 * ("widht") would vanish without a word. Each such name is named once a
 * run (the first 64 names; then none), with the line it was first on. */
static void warn_unknown(const line_reader *lr, const char *line, size_t len)
{
    static char *seen[64];
    static size_t nseen;
    const char *key;
    json_t *v;
    /* The decoder scans without a tree (proto/bf_jsonscan.h); the keys of
     * an accepted line are read again here, where speed does not matter. */
    json_t *doc = json_loadb(line, len, 0, NULL);
    json_object_foreach(doc, key, v) {
        if (strcmp(key, "dataset") == 0 || bf_field_lookup(key, strlen(key)))
            continue;
        size_t i = 0;
        while (i < nseen && strcmp(seen[i], key) != 0)
            i++;
        if (i < nseen || nseen == sizeof(seen) / sizeof(seen[0]))
            continue;
        if (!(seen[nseen] = strdup(key)))
            continue;
        nseen++;
        fprintf(stderr, PROG ": line %lu: unknown field \"%s\" ignored: not in the "
                        "protocol (proto/PROTOCOL.md); named once\n", lr->lineno, key);
    }
    json_decref(doc);
}

int cli_next_event(line_reader *lr, bf_decoder *dec, bf_event *ev,
                   unsigned long *invalid)
{
    char *line;
    size_t len;
    while ((line = line_read(lr, &len))) {
        if (line_is_blank(line, len))
            continue;
        const char *key;
        bf_reason r = bf_decode_json_text(dec, line, len, ev, &key);
        if (r == BF_OK) {
            warn_unknown(lr, line, len);
            return 1;
        }
        fprintf(stderr, PROG ": line %lu: %s: %s\n", lr->lineno, bf_reason_name(r), key);
        (*invalid)++;
    }
    return 0;
}

void cli_report_oversize(const line_reader *lr, unsigned long *invalid)
{
    fprintf(stderr, PROG ": line %lu: %s: (root)\n", lr->lineno,
            bf_reason_name(BF_R_oversize));
    (*invalid)++;
}
