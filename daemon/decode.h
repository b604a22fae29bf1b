/*
 * decode.h: one datagram, binary (protocol v1) or a JSON object, to a
 * validated bf_event.
 *
 * The binary form decodes in place: the event borrows the datagram. The
 * JSON form parses with jansson and the event borrows the document, which
 * the decoder holds until decode_release (or the next decode).
 */
#ifndef BF_DECODE_H
#define BF_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"

typedef struct decoder {
    struct json_t *doc; /* the last JSON datagram, while its event is used */
} decoder;

/* Decode and validate buf into ev. Returns BF_OK or the reject reason;
 * *detail (when not NULL) names the field at fault or is NULL. ev is valid
 * until the next decode_datagram or decode_release on d. */
bf_reason decode_datagram(decoder *d, const uint8_t *buf, size_t len,
                          bf_event *ev, const char **detail);

/* Drop the JSON document of the last decode, if any. */
void decode_release(decoder *d);

#endif /* BF_DECODE_H */
