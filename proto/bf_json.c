/* bf_json.c: JSON <-> bf_event. See bf_json.h. */
#include "bf_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bf_reason set_field(bf_event *ev, unsigned tag, json_t *v)
{
    const bf_field_info *f = &bf_fields[tag];
    char *slot = (char *)ev + f->offset;
    uint64_t n;

    if (f->type == BF_TYPE_STR) {
        if (!json_is_string(v))
            return BF_R_bad_type;
        bf_str *s = (bf_str *)slot;
        s->ptr = json_string_value(v);
        s->len = json_string_length(v);
    } else {
        if (json_is_boolean(v)) {
            if (f->type != BF_TYPE_BOOL)
                return BF_R_bad_type;
            n = json_is_true(v);
        } else if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            if (i < 0)
                return BF_R_out_of_range;
            n = (uint64_t)i;
        } else if (json_is_real(v)) {
            double d = json_real_value(v);
            if (d < 0)
                return BF_R_out_of_range;
            if (d != floor(d) || d >= 18446744073709551616.0)
                return BF_R_bad_type;
            n = (uint64_t)d;
        } else {
            return BF_R_bad_type;
        }
        if (f->type == BF_TYPE_BOOL && n > 1)
            return BF_R_bad_type;
        *(uint64_t *)slot = n;
    }
    ev->present |= (uint64_t)1 << tag;
    return BF_OK;
}

bf_reason bf_event_from_json(json_t *obj, bf_event *ev, const char **bad_key)
{
    const char *key;
    json_t *v;

    bf_event_init(ev, BF_DATASET_NONE);
    if (bad_key)
        *bad_key = "(root)";
    if (!json_is_object(obj))
        return BF_R_bad_json;

    json_t *ds = json_object_get(obj, "dataset");
    if (bad_key)
        *bad_key = "dataset";
    if (!ds || json_is_null(ds))
        return BF_R_missing_field;
    if (!json_is_string(ds))
        return BF_R_bad_type;
    ev->dataset = (uint8_t)bf_dataset_lookup(json_string_value(ds),
                                             json_string_length(ds));
    if (ev->dataset == BF_DATASET_NONE)
        return BF_R_unknown_dataset;

    json_object_foreach(obj, key, v) {
        unsigned tag = bf_field_lookup(key, strlen(key));
        if (!tag || json_is_null(v))
            continue;
        bf_reason r = set_field(ev, tag, v);
        if (r != BF_OK) {
            if (bad_key)
                *bad_key = key;
            return r;
        }
    }
    if (bad_key)
        *bad_key = NULL;
    return BF_OK;
}

bf_reason bf_json_decode(const void *buf, size_t len, bf_event *ev,
                         json_t **doc, const char **bad_key)
{
    json_error_t error;

    /* An object or array at the top (arrays fail in bf_event_from_json), no
     * NUL in strings, nothing but whitespace after the value, and no key
     * twice: which of two values a sender meant is a guess we don't make. */
    *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &error);
    if (!*doc) {
        bf_event_init(ev, BF_DATASET_NONE);
        if (bad_key)
            *bad_key = "(root)";
        return BF_R_bad_json;
    }
    return bf_event_from_json(*doc, ev, bad_key);
}

/* Bytes that are not UTF-8 become U+FFFD, as the daemon's row writer does
 * (daemon/row.c), so the decoded view shows what would reach Tinybird. */
json_t *bf_json_text(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    if (n == 0)
        return json_string("");
    while (i < n && (k = bf_utf8_seq(p + i, n - i)) != 0)
        i += k;
    if (i == n)
        return json_stringn_nocheck(s, n);

    /* Rare: copy with replacements (3 bytes out per bad byte at most). */
    char *out = malloc(n * 3);
    if (!out)
        return NULL;
    size_t o = 0;
    for (i = 0; i < n;) {
        k = bf_utf8_seq(p + i, n - i);
        if (k) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *v = json_stringn(out, o);
    free(out);
    return v;
}

json_t *bf_event_to_json(const bf_event *ev)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    const char *ds = bf_dataset_name(ev->dataset);
    if (json_object_set_new(o, "dataset", ds ? json_string(ds)
                                              : json_integer(ev->dataset)))
        goto fail;
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name || !((ev->present >> tag) & 1u))
            continue;
        const char *slot = (const char *)ev + f->offset;
        json_t *v;
        if (f->type == BF_TYPE_STR) {
            v = bf_json_text(((const bf_str *)slot)->ptr, ((const bf_str *)slot)->len);
        } else if (f->type == BF_TYPE_BOOL) {
            v = json_boolean(*(const uint64_t *)slot);
        } else {
            v = json_integer((json_int_t) * (const uint64_t *)slot);
        }
        if (!v || json_object_set_new(o, f->name, v))
            goto fail;
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}
