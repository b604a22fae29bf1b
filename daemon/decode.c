/* decode.c: binary or JSON datagram to a validated event. See decode.h. */
#include "decode.h"

#include <jansson.h>

#include "bf_json.h"

void decode_release(decoder *d)
{
    if (d->doc) {
        json_decref(d->doc);
        d->doc = NULL;
    }
}

bf_reason decode_datagram(decoder *d, const uint8_t *buf, size_t len,
                          bf_event *ev, const char **detail)
{
    bf_reason r;
    const char *key = NULL;
    unsigned tag = 0;
    decode_release(d);
    /* The same entry points the CLI and the golden vectors use, so the
     * vectors test exactly this path. */
    if (len > 0 && buf[0] == '{')
        r = bf_json_decode(buf, len, ev, &d->doc, &key);
    else
        r = bf_decode(buf, len, ev);
    if (r == BF_OK && (r = bf_validate_detail(ev, &tag)) != BF_OK)
        key = tag && tag < BF_F_MAX ? bf_fields[tag].name : "dataset";
    if (detail)
        *detail = key;
    return r;
}
