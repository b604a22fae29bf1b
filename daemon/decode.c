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
    decode_release(d);
    if (len > 0 && buf[0] == '{') {
        /* JSON_ALLOW_NUL is off: a NUL inside a string is bad_json. */
        d->doc = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
        if (!d->doc)
            r = BF_R_bad_json;
        else if ((r = bf_event_from_json(d->doc, ev, &key)) == BF_OK)
            r = bf_validate(ev);
    } else if ((r = bf_decode(buf, len, ev)) == BF_OK) {
        r = bf_validate(ev);
    }
    if (detail)
        *detail = key;
    return r;
}
