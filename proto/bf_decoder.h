/*
 * bf_decoder.h: one datagram, binary (protocol v1) or a JSON object, to a
 * validated bf_event, with the field at fault when it is rejected.
 *
 * The one decode-and-validate sequence: the daemon runs every datagram
 * through bf_decode_datagram, the CLI its `decode` input the same way and
 * its `send`/`encode` input lines through bf_decode_json_text, and the
 * golden vectors test these entry points.
 *
 * The binary form decodes in place: the event borrows the datagram. The
 * JSON form is scanned without building a tree (bf_jsonscan.h, jansson's
 * rules): the event borrows the input, and the decoder's scan buffer for
 * strings with escapes, which it keeps for the next decode (no allocation
 * per datagram once it has grown to the largest input) until
 * bf_decoder_release. The C shim does not link it (it links bf_proto.c
 * only).
 */
#ifndef BF_DECODER_H
#define BF_DECODER_H

#include <stddef.h>
#include <stdint.h>

#include "bf_jsonscan.h"
#include "bf_proto.h"

/* Zero-initialise ({0}); bf_decoder_release when done with it. */
typedef struct bf_decoder {
    bf_jsonscan_buf scan; /* JSON: decoded strings, keys; kept between decodes */
} bf_decoder;

/* Decode buf (JSON when its first byte is '{', else binary) into ev and
 * validate it. Returns BF_OK or the reject reason; *detail (when not NULL)
 * names the field at fault ("dataset", a field name, or "(root)" for JSON
 * that does not parse) or is NULL when no field is (a binary framing
 * error). ev and *detail stay valid until the next decode or
 * bf_decoder_release on d, and while buf lives. */
bf_reason bf_decode_datagram(bf_decoder *d, const uint8_t *buf, size_t len,
                             bf_event *ev, const char **detail);

/* The same for a JSON object as text (whitespace around it allowed), as the
 * CLI reads an event per line. *detail is never NULL after a reject. */
bf_reason bf_decode_json_text(bf_decoder *d, const char *text, size_t len,
                              bf_event *ev, const char **detail);

/* bf_decode() then bf_validate_detail(), in one pass: the limits and the
 * identifiers' control characters are checked as each value is decoded,
 * the rest after. The same reason and field as the two calls give; *tag
 * (when not NULL) is BF_F_MAX when the datagram's framing is at fault (a
 * bf_decode reason: no field is). Defined in bf_proto.c but not part of
 * libbirdfeeder's API (the shim's map keeps it local). */
bf_reason bf_decode_validate(const uint8_t *buf, size_t len, bf_event *ev, unsigned *tag);

/* Free the decoder's scan buffer; the last event is no longer valid. The
 * decoder may be used again. Idempotent. The daemon calls it once, at
 * exit; a decode reuses the buffer. */
void bf_decoder_release(bf_decoder *d);

#endif /* BF_DECODER_H */
