/*
 * bf_jsonscan.h: a JSON datagram (one object) straight into a bf_event,
 * without building a tree: the daemon's JSON path.
 *
 * The rules are jansson's, as bf_json_decode (bf_json.h) applies them with
 * JSON_REJECT_DUPLICATES, so both give the same outcome for every input:
 * exactly one object or array, whitespace around it; RFC 8259 syntax;
 * strings of valid UTF-8 (no overlongs, surrogates or values past U+10FFFF)
 * with valid escapes, no lone or misordered surrogate escapes, no \u0000
 * and no raw control characters; integers from -2^63 to 2^63-1, reals that
 * do not overflow a double; no key twice in any object, at any depth, after
 * decoding escapes; at most 2048 values deep (and jansson's one quirk: a
 * NUL byte right after a number or a literal is skipped). Anything else is
 * bad_json.
 * Then the same semantic order as bf_event_from_json: "dataset" first
 * (missing_field, bad_type, unknown_dataset), then each known field in the
 * object's order (bad_type, out_of_range); null values count as absent.
 * proto/vectors/vectors.json, tests/unit and the fuzz_json target (which
 * compares the decoder with jansson's tree) hold it to that.
 *
 * Why not a library: jansson has no public streaming layer, and yajl (the
 * Debian streaming parser) neither rejects lone surrogate escapes, overlong
 * or surrogate UTF-8, nor limits depth as jansson does, and its upstream is
 * unmaintained; meeting these rules around it would mean re-scanning every
 * string. This scanner is one pass over the bytes, libc only.
 *
 * Strings of the event borrow the input when they hold no escape, else the
 * scan buffer's decoded copy: both must outlive the event. Never allocates
 * but to grow the scan buffer to the largest input seen.
 */
#ifndef BF_JSONSCAN_H
#define BF_JSONSCAN_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"

/* What the scanner keeps between inputs; zero-initialise, free with
 * bf_jsonscan_free. */
typedef struct bf_jsonscan_buf {
    char *text;            /* decoded strings, number text */
    size_t text_cap;
    struct bf_jsonscan_key *keys; /* every key seen, for duplicates */
    uint32_t *slots;       /* open-addressing table over keys */
    size_t keys_cap, slots_cap;
} bf_jsonscan_buf;

/* Scan buf (len bytes) into ev. Returns BF_OK or the reject reason, and in
 * *bad_key (when not NULL) the key at fault, "dataset", or "(root)" for
 * input that does not parse to an object; NULL on BF_OK. Values are not
 * validated against their limits: call bf_validate(). BF_R_bad_json also
 * when the scan buffer cannot grow (out of memory). */
bf_reason bf_jsonscan(bf_jsonscan_buf *sb, const void *buf, size_t len, bf_event *ev,
                      const char **bad_key);

void bf_jsonscan_free(bf_jsonscan_buf *sb);

#endif /* BF_JSONSCAN_H */
