/* cli/events.c: events read from standard input, one JSON object a line,
 * checked as the daemon checks a JSON datagram. See cli.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "bf_json.h"
#include "bf_proto.h"
#include "cli.h"

/* Next line without its line end, or NULL at end of input. */
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

/* Parse and check one JSON event line as the daemon checks a JSON datagram.
 * On success *doc owns the strings ev points into (json_decref when done);
 * on failure the reason and key are printed and *doc is already released. */
static int cli_read_event(const line_reader *lr, const char *line, size_t len,
                          bf_event *ev, json_t **doc)
{
    const char *key = NULL;
    unsigned tag = 0;
    bf_reason r = bf_json_decode(line, len, ev, doc, &key);

    if (r == BF_OK) {
        r = bf_validate_detail(ev, &tag);
        key = tag ? bf_fields[tag].name : "dataset";
    }
    if (r == BF_OK)
        return 0;
    fprintf(stderr, PROG ": line %lu: %s: %s\n", lr->lineno, bf_reason_name(r),
            key ? key : "(root)");
    json_decref(*doc);
    *doc = NULL;
    return -1;
}

/* The next good event of the input, skipping blank lines and counting (and
 * reporting) bad ones in *invalid. Returns 1 with *doc owning ev's strings,
 * or 0 at the end of the input. */
int cli_next_event(line_reader *lr, bf_event *ev, json_t **doc,
                          unsigned long *invalid)
{
    char *line;
    size_t len;
    while ((line = line_read(lr, &len))) {
        if (line_is_blank(line, len))
            continue;
        if (cli_read_event(lr, line, len, ev, doc) == 0)
            return 1;
        (*invalid)++;
    }
    return 0;
}

/* A line whose event does not fit one datagram. */
void cli_report_oversize(const line_reader *lr, unsigned long *invalid)
{
    fprintf(stderr, PROG ": line %lu: %s: (root)\n", lr->lineno,
            bf_reason_name(BF_R_oversize));
    (*invalid)++;
}
