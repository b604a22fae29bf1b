/*
 * fuzz_decode.c: the binary datagram decoder (protocol v1), with an
 * encode/decode round trip.
 *
 * Promises checked, for any bytes:
 *   - decoding never reads outside the datagram (ASan) and gives BF_OK or a
 *     named reason;
 *   - what the wire decoder accepts re-encodes (bf_encode) to bytes that
 *     decode to the same event, with the same verdict from the validator,
 *     and re-encoding those gives the same bytes (the canonical form);
 *   - bf_decode_validate (the daemon's: values checked as they are decoded)
 *     gives the reason and the field at fault that bf_decode then
 *     bf_validate_detail give;
 *   - what the daemon's decoder accepts (decode and validate) also passes
 *     that round trip and decodes again to BF_OK;
 *   - the re-encoding (ascending tags, each once: bf_decode_validate's
 *     canonical-order path) gets from bf_decode_validate the reason and
 *     the field at fault the input got (mostly by its general loop), so
 *     the two paths' limit and identifier checks cannot disagree;
 *   - bf_encode never writes past its cap: asked for one byte less than it
 *     needs, into a buffer of exactly that size, it returns 0.
 */
#include <stdlib.h>
#include <string.h>

#include "bf_decoder.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_log();
    return 0;
}

/* Encode ev into a heap buffer of exactly cap bytes, so ASan sees any
 * write past it. Returns the length (0: did not fit). */
static size_t encode_exact(const bf_event *ev, size_t cap, uint8_t **out)
{
    *out = malloc(cap ? cap : 1);
    FUZZ_CHECK(*out, "out of memory");
    return bf_encode(ev, *out, cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bf_event ev, ev2, ev3;
    if (size > 0 && data[0] == '{')
        return 0; /* a JSON datagram: fuzz_json's */

    bf_reason wire = bf_decode(data, size, &ev);
    FUZZ_CHECK((unsigned)wire < BF_R_MAX, "reason %d", (int)wire);
    bf_reason daemon = fuzz_decode_datagram(0, data, size, &ev3);
    FUZZ_CHECK(wire != BF_OK ? daemon == wire : daemon == bf_validate(&ev),
               "daemon says %s, wire says %s", bf_reason_name(daemon),
               bf_reason_name(wire));
    unsigned t1 = BF_F_MAX, t2 = 0;
    bf_reason r1 = wire == BF_OK ? bf_validate_detail(&ev, &t1) : wire;
    bf_reason r2 = bf_decode_validate(data, size, &ev2, &t2);
    FUZZ_CHECK(r1 == r2 && t1 == t2, "bf_decode_validate says %s (tag %u), bf_decode and "
               "bf_validate_detail %s (tag %u)", bf_reason_name(r2), t2, bf_reason_name(r1), t1);
    if (wire != BF_OK)
        return 0;
    fuzz_check_same_event(&ev, &ev3, "bf_decode then the daemon's decoder");

    /* Every field of a decoded event fits: strings came from a datagram of
     * size bytes, and each field costs at most 2 + 10 bytes of framing. */
    size_t cap = size + 12 * BF_F_MAX + BF_HEADER_LEN;
    uint8_t *enc;
    size_t n = encode_exact(&ev, cap, &enc);
    FUZZ_CHECK(n > 0 && n <= cap, "encode gave %zu (cap %zu)", n, cap);

    bf_reason again = bf_decode(enc, n, &ev2);
    FUZZ_CHECK(again == BF_OK, "re-encoded event decodes as %s", bf_reason_name(again));
    fuzz_check_same_event(&ev, &ev2, "decode, encode, decode");
    FUZZ_CHECK(bf_validate(&ev2) == bf_validate(&ev), "validator: %s then %s",
               bf_reason_name(bf_validate(&ev)), bf_reason_name(bf_validate(&ev2)));
    unsigned t3 = 0;
    bf_reason r3 = bf_decode_validate(enc, n, &ev3, &t3);
    FUZZ_CHECK(r3 == r2 && t3 == t2, "canonical re-encoding: %s (tag %u), the input %s (tag %u)",
               bf_reason_name(r3), t3, bf_reason_name(r2), t2);
    if (daemon == BF_OK) {
        bf_reason r = fuzz_decode_datagram(0, enc, n, &ev3);
        FUZZ_CHECK(r == BF_OK, "the daemon rejects its own re-encoding: %s",
                   bf_reason_name(r));
    }

    /* Canonical: encoding the decoded re-encoding gives the same bytes. */
    uint8_t *enc2;
    size_t n2 = encode_exact(&ev2, n, &enc2);
    FUZZ_CHECK(n2 == n && memcmp(enc, enc2, n) == 0, "second encoding differs (%zu, %zu bytes)",
               n, n2);
    free(enc2);

    /* One byte short: nothing written past the buffer, and 0 returned. */
    size_t short_n = encode_exact(&ev, n - 1, &enc2);
    FUZZ_CHECK(short_n == 0, "encode into %zu bytes returned %zu", n - 1, short_n);
    free(enc2);
    free(enc);
    return 0;
}
