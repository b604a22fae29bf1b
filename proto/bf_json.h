/*
 * bf_json.h: protocol v1 events as JSON objects (jansson).
 *
 * The same field names as fields.def, plus "dataset" as a name. Used by the
 * daemon for JSON datagrams (first byte '{'), and by the CLI to read events
 * and print decoded ones.
 */
#ifndef BF_JSON_H
#define BF_JSON_H

#include <jansson.h>

#include "bf_proto.h"

/* Fill ev from a JSON object. Strings in ev borrow from obj: keep obj alive
 * (a reference) while ev is used. Unknown keys are ignored; null values count
 * as absent. Integers must be non-negative JSON integers (or integral reals);
 * booleans true/false (or 0/1). On error returns the reason and, when
 * bad_key is not NULL, points *bad_key at the offending key (borrowed from
 * obj) or at "dataset"/"model"/"(root)". Values are not validated against
 * their limits: call bf_validate() for that. */
bf_reason bf_event_from_json(json_t *obj, bf_event *ev, const char **bad_key);

/* Decode a JSON datagram as the daemon does: buf (len bytes, first byte '{')
 * must be exactly one JSON object, whitespace around it allowed; then
 * bf_event_from_json(). Anything that does not parse, including invalid
 * UTF-8, a NUL escape, an integer over 2^63-1, a repeated key or trailing
 * text, is bad_json. Values are not validated.
 * *doc receives the parsed document, or NULL when nothing parsed; the
 * strings of ev and *bad_key borrow from it, so the caller json_decref()s
 * *doc once done with them, on success and on failure alike. */
bf_reason bf_json_decode(const void *buf, size_t len, bf_event *ev,
                         json_t **doc, const char **bad_key);

/* A new JSON object with the dataset name (or its number when unknown) and
 * every present field, in tag order. Each byte of a string that is not part
 * of a valid UTF-8 sequence becomes U+FFFD, as in the daemon's rows, so the
 * result always dumps. Integers over 2^63-1 (never valid in v1) come out
 * negative: validate first. The caller owns the result (json_decref).
 * Returns NULL on allocation failure. */
json_t *bf_event_to_json(const bf_event *ev);

/* A new JSON string of the n bytes at s; each byte that is not part of a
 * valid UTF-8 sequence becomes U+FFFD (the rule of bf_event_to_json, also
 * the daemon's JSON log lines). NULL on allocation failure. */
json_t *bf_json_text(const char *s, size_t n);

#endif /* BF_JSON_H */
