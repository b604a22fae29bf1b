/*
 * fuzz_json.c: the JSON datagram path, through the daemon's decoder entry
 * point (whatever parser sits behind it).
 *
 * The reference is jansson's tree parser with the rules bf_json.h states
 * (one object, no repeated key, no NUL, integers up to 2^63-1, nothing
 * after it). Promises checked, for any datagram starting with '{':
 *   - the decoder calls it bad_json exactly when the reference does not
 *     parse it;
 *   - an accepted event holds exactly the reference's non-null fields of
 *     fields.def, with the same values;
 *   - an accepted event survives two round trips: to JSON text
 *     (bf_event_to_json) and back through the decoder, and to the binary
 *     form (bf_encode) and back through bf_decode, equal each time.
 * The decoder scans JSON without a tree since issue 10 (bf_jsonscan.c),
 * so these hold by testing, not by construction: the reason and the field
 * at fault are also compared with bf_json_decode's (jansson's tree).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bf_decoder.h"
#include "bf_json.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_log();
    return 0;
}

/* ev holds exactly the reference object's fields of fields.def. */
static void check_against_reference(const bf_event *ev, json_t *ref)
{
    json_t *ds = json_object_get(ref, "dataset");
    const char *name = bf_dataset_name(ev->dataset);
    FUZZ_CHECK(json_is_string(ds) && name && strcmp(json_string_value(ds), name) == 0,
               "dataset %s", name ? name : "(none)");
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name)
            continue;
        json_t *v = json_object_get(ref, f->name);
        int present = (ev->present >> tag) & 1u;
        FUZZ_CHECK(present == (v && !json_is_null(v)), "%s: present %d in the event",
                   f->name, present);
        if (!present)
            continue;
        const char *slot = (const char *)ev + f->offset;
        if (f->type == BF_TYPE_STR) {
            const bf_str *s = (const bf_str *)slot;
            FUZZ_CHECK(json_is_string(v) && json_string_length(v) == s->len &&
                           memcmp(json_string_value(v), s->ptr, s->len) == 0,
                       "%s: '%.*s' differs from the reference", f->name, (int)s->len,
                       s->ptr);
            continue;
        }
        uint64_t got = *(const uint64_t *)slot, want;
        if (json_is_boolean(v))
            want = json_is_true(v);
        else if (json_is_integer(v))
            want = (uint64_t)json_integer_value(v);
        else if (json_is_real(v))
            want = (uint64_t)json_real_value(v);
        else
            fuzz_fail(__FILE__, __LINE__, "number", "%s: accepted a %d", f->name,
                      (int)json_typeof(v));
        FUZZ_CHECK(got == want, "%s: %llu, the reference has %llu", f->name,
                   (unsigned long long)got, (unsigned long long)want);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bf_event ev, ev2;
    if (size == 0 || data[0] != '{')
        return 0; /* a binary datagram: fuzz_decode's */

    bf_reason r = fuzz_decode_datagram(0, data, size, &ev);
    FUZZ_CHECK((unsigned)r < BF_R_MAX, "reason %d", (int)r);
    json_error_t jerr;
    json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK((r == BF_R_bad_json) == (ref == NULL || !json_is_object(ref)),
               "decoder: %s; reference: %s", bf_reason_name(r),
               ref ? "an object" : jerr.text);
    /* The same reason and field at fault as bf_json_decode (jansson's tree,
     * the path the daemon took before the scanner) and bf_validate. */
    {
        bf_event tev;
        json_t *doc = NULL;
        const char *k = NULL, *detail = NULL;
        bf_reason want = bf_json_decode(data, size, &tev, &doc, &k);
        if (want == BF_OK)
            want = bf_validate(&tev);
        static bf_decoder d;
        bf_event sev;
        bf_reason got = bf_decode_datagram(&d, data, size, &sev, &detail);
        FUZZ_CHECK(got == r && got == want, "decoder %s, jansson's path %s",
                   bf_reason_name(got), bf_reason_name(want));
        if (want != BF_OK && want != BF_R_bad_json && k && k[0] != '(')
            FUZZ_CHECK(detail && strcmp(detail, k) == 0, "field %s, jansson's path %s",
                       detail ? detail : "-", k);
        json_decref(doc);
    }
    if (r != BF_OK) {
        json_decref(ref);
        return 0;
    }
    check_against_reference(&ev, ref);
    json_decref(ref);

    /* To JSON text and back through the decoder. */
    json_t *obj = bf_event_to_json(&ev);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    FUZZ_CHECK(text, "bf_event_to_json or json_dumps failed");
    json_decref(obj);
    r = fuzz_decode_datagram(1, (const uint8_t *)text, strlen(text), &ev2);
    FUZZ_CHECK(r == BF_OK, "the decoder rejects bf_event_to_json's text: %s (%s)",
               bf_reason_name(r), text);
    fuzz_check_same_event(&ev, &ev2, "JSON, event, JSON text, event");

    /* To the binary form and back. */
    size_t cap = size + 12 * BF_F_MAX + BF_HEADER_LEN;
    uint8_t *bin = malloc(cap);
    FUZZ_CHECK(bin, "out of memory");
    size_t n = bf_encode(&ev, bin, cap);
    FUZZ_CHECK(n > 0, "bf_encode: no room in %zu bytes", cap);
    r = bf_decode(bin, n, &ev2);
    FUZZ_CHECK(r == BF_OK && bf_validate(&ev2) == BF_OK, "binary form: %s",
               bf_reason_name(r));
    fuzz_check_same_event(&ev, &ev2, "JSON, event, binary, event");
    free(bin);
    free(text);
    return 0;
}
