/* bf_decoder.c: binary or JSON datagram to a validated event. See
 * bf_decoder.h. */
#include "bf_decoder.h"

#include "bf_json.h"

void bf_decoder_release(bf_decoder *d)
{
    bf_jsonscan_free(&d->scan);
}

/* Validate a decoded event; the field at fault in *detail. */
static bf_reason validate(bf_reason r, const bf_event *ev, const char *key,
                          const char **detail)
{
    unsigned tag = 0;
    if (r == BF_OK && (r = bf_validate_detail(ev, &tag)) != BF_OK)
        key = tag && tag < BF_F_MAX ? bf_fields[tag].name : "dataset";
    if (detail)
        *detail = key;
    return r;
}

bf_reason bf_decode_datagram(bf_decoder *d, const uint8_t *buf, size_t len,
                             bf_event *ev, const char **detail)
{
    const char *key = NULL;
    if (len > 0 && buf[0] == '{') {
        /* Two statements: key is set by the scan, and the order in which
         * a call's arguments are evaluated is unspecified. */
        bf_reason r = bf_jsonscan(&d->scan, buf, len, ev, &key);
        return validate(r, ev, key, detail);
    }
    unsigned tag = 0;
    bf_reason r = bf_decode_validate(buf, len, ev, &tag);
    if (detail)
        *detail = r == BF_OK || tag >= BF_F_MAX ? NULL
                  : tag ? bf_fields[tag].name : "dataset";
    return r;
}

bf_reason bf_decode_json_text(bf_decoder *d, const char *text, size_t len,
                              bf_event *ev, const char **detail)
{
    const char *key = NULL;
    bf_reason r = bf_jsonscan(&d->scan, text, len, ev, &key);
    return validate(r, ev, key, detail);
}
