/*
 * test_proto.c: protocol v1 codec (proto/bf_proto.c, proto/bf_json.c).
 *
 * Most cases come from proto/vectors/vectors.json, written by an independent
 * Python encoder (proto/vectors/gen_vectors.py): each vector is one loop
 * iteration, so a failure names the vector. The file is found at $BF_VECTORS,
 * else proto/vectors/vectors.json from the working directory (the repo root).
 *
 * Datagrams are copied into buffers of their exact size so that
 * AddressSanitizer sees any read past the end.
 */
#include <check.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_decoder.h"
#include "bf_json.h"
#include "bf_jsonscan.h"
#include "bf_proto.h"
#include "testutil.h"

/* Loaded once in proto_suite(), before Check forks the tests; left for the
 * process exit to free (the loop counts must be known up front). */
static json_t *vectors;
static char vectors_error[512];

static const char *vectors_path(void)
{
    const char *p = getenv("BF_VECTORS");
    return p && *p ? p : "proto/vectors/vectors.json";
}

static void vectors_load(void)
{
    json_error_t error;
    vectors = json_load_file(vectors_path(), 0, &error);
    if (!vectors)
        snprintf(vectors_error, sizeof(vectors_error), "%s:%d: %s",
                 vectors_path(), error.line, error.text);
    else if (!json_is_array(vectors) || json_array_size(vectors) == 0)
        snprintf(vectors_error, sizeof(vectors_error), "%s: not a non-empty array",
                 vectors_path());
}

static json_t *vector_at(size_t i)
{
    return json_array_get(vectors, i);
}

static const char *vector_name(json_t *v)
{
    const char *n = json_string_value(json_object_get(v, "name"));
    return n ? n : "(unnamed)";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The datagram of a vector ("hex" or "json") in a malloc'd buffer of exactly
 * *len bytes (one byte when empty, never read). The caller frees it. */
static uint8_t *vector_bytes(json_t *v, size_t *len)
{
    const char *hex = json_string_value(json_object_get(v, "hex"));
    const char *text = json_string_value(json_object_get(v, "json"));
    uint8_t *buf;

    if (text) {
        *len = strlen(text);
        buf = malloc(*len ? *len : 1);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, text, *len);
        return buf;
    }
    ck_assert_msg(hex != NULL, "%s: neither hex nor json", vector_name(v));
    size_t n = strlen(hex);
    ck_assert_msg(n % 2 == 0, "%s: odd hex length", vector_name(v));
    *len = n / 2;
    buf = malloc(*len ? *len : 1);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < *len; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        ck_assert_msg(hi >= 0 && lo >= 0, "%s: not lowercase hex", vector_name(v));
        buf[i] = (uint8_t)(hi << 4 | lo);
    }
    return buf;
}

/* ev and want hold the same fields with the same values. */
static void same_event(const bf_event *ev, const bf_event *want, const char *what)
{
    ck_assert_msg(ev->dataset == want->dataset && ev->present == want->present,
                  "%s: the scanner's event differs from jansson's", what);
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name || !((want->present >> tag) & 1u))
            continue;
        const char *a = (const char *)ev + f->offset, *b = (const char *)want + f->offset;
        if (f->type == BF_TYPE_STR) {
            const bf_str *x = (const bf_str *)a, *y = (const bf_str *)b;
            ck_assert_msg(x->len == y->len && memcmp(x->ptr, y->ptr, x->len) == 0,
                          "%s: %s differs", what, f->name);
        } else {
            ck_assert_msg(*(const uint64_t *)a == *(const uint64_t *)b, "%s: %s differs",
                          what, f->name);
        }
    }
}

/* bf_decode then bf_validate_detail, and bf_decode_validate, which checks
 * the values as it decodes them: the same reason, the same field at fault
 * (BF_F_MAX for a framing error) and, when accepted, the same event. */
static bf_reason decode_both(const uint8_t *buf, size_t len, bf_event *ev)
{
    bf_event one;
    unsigned t1 = BF_F_MAX, t2 = 12345;
    bf_reason r1 = bf_decode(buf, len, ev);
    if (r1 == BF_OK)
        r1 = bf_validate_detail(ev, &t1);
    bf_reason r2 = bf_decode_validate(buf, len, &one, &t2);
    ck_assert_msg(r1 == r2 && t1 == t2, "bf_decode+bf_validate_detail: %s (tag %u); "
                  "bf_decode_validate: %s (tag %u)", bf_reason_name(r1), t1,
                  bf_reason_name(r2), t2);
    if (r1 == BF_OK || r1 > BF_R_unknown_dataset) /* decoded whole */
        same_event(&one, ev, "bf_decode_validate");
    return r1;
}

/* Decode and validate one datagram the way the daemon does: a first byte
 * '{' is JSON, scanned by bf_jsonscan (the daemon's path) and parsed by
 * jansson (bf_json_decode, the reference), which must agree. *doc (maybe
 * NULL) is for the caller to json_decref. */
static bf_reason datagram_check(const uint8_t *buf, size_t len, bf_event *ev,
                                json_t **doc)
{
    bf_reason r;
    *doc = NULL;
    if (len > 0 && buf[0] == '{') {
        static bf_jsonscan_buf sb;
        bf_event scanned;
        const char *k1 = NULL, *k2 = NULL;
        r = bf_json_decode(buf, len, ev, doc, &k1);
        bf_reason r2 = bf_jsonscan(&sb, buf, len, &scanned, &k2);
        ck_assert_msg(r2 == r, "'%.*s': scanner %s, jansson %s", (int)len, (const char *)buf,
                      bf_reason_name(r2), bf_reason_name(r));
        ck_assert_msg((!k1 && !k2) || (k1 && k2 && strcmp(k1, k2) == 0),
                      "'%.*s': scanner names %s, jansson %s", (int)len, (const char *)buf,
                      k2 ? k2 : "-", k1 ? k1 : "-");
        if (r == BF_OK)
            same_event(&scanned, ev, "vector");
        bf_jsonscan_free(&sb);
    } else {
        return decode_both(buf, len, ev);
    }
    return r == BF_OK ? bf_validate(ev) : r;
}

static char *json_text(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ck_assert_ptr_nonnull(s);
    return s;
}

static int vector_is_canonical(json_t *v)
{
    return json_object_get(v, "hex") && json_object_get(v, "event") &&
           !json_is_true(json_object_get(v, "decode_only"));
}

START_TEST(test_proto_vectors_load)
{
    ck_assert_msg(vectors_error[0] == '\0', "%s", vectors_error);
    size_t i;
    json_t *v;
    json_array_foreach(vectors, i, v) {
        const char *name = vector_name(v);
        int has_hex = json_is_string(json_object_get(v, "hex"));
        int has_json = json_is_string(json_object_get(v, "json"));
        int has_event = json_is_object(json_object_get(v, "event"));
        const char *reject = json_string_value(json_object_get(v, "reject"));
        ck_assert_msg(json_object_get(v, "name"), "vector %zu has no name", i);
        ck_assert_msg(has_hex + has_json == 1, "%s: wants hex or json", name);
        ck_assert_msg(has_event + (reject != NULL) == 1,
                      "%s: wants event or reject", name);
        if (reject) {
            int known = 0;
            for (int r = 1; r < BF_R_MAX; r++)
                known |= strcmp(bf_reason_name((bf_reason)r), reject) == 0;
            ck_assert_msg(known, "%s: unknown reason %s", name, reject);
        }
    }
}
END_TEST

/* decode(datagram) then validate: the event, or the reject reason. */
START_TEST(test_proto_vector_decode)
{
    json_t *v = vector_at((size_t)_i);
    const char *name = vector_name(v);
    size_t len;
    uint8_t *buf = vector_bytes(v, &len);
    bf_event ev;
    json_t *doc;
    bf_reason r = datagram_check(buf, len, &ev, &doc);
    json_t *want = json_object_get(v, "event");

    if (want) {
        ck_assert_msg(r == BF_OK, "%s: rejected as %s", name, bf_reason_name(r));
        json_t *got = bf_event_to_json(&ev);
        ck_assert_ptr_nonnull(got);
        char *g = json_text(got), *w = json_text(want);
        ck_assert_msg(json_equal(got, want), "%s:\n got  %s\n want %s", name, g, w);
        free(g);
        free(w);
        json_decref(got);
    } else {
        const char *reject = json_string_value(json_object_get(v, "reject"));
        ck_assert_msg(strcmp(bf_reason_name(r), reject) == 0,
                      "%s: got %s, want %s", name, bf_reason_name(r), reject);
    }
    json_decref(doc);
    free(buf);
}
END_TEST

/* encode(event) is the vector's bytes exactly, and needs all of them. */
START_TEST(test_proto_vector_encode)
{
    json_t *v = vector_at((size_t)_i);
    if (!vector_is_canonical(v))
        return;
    const char *name = vector_name(v);
    size_t len;
    uint8_t *want = vector_bytes(v, &len);
    bf_event ev;
    const char *key = NULL;

    bf_reason r = bf_event_from_json(json_object_get(v, "event"), &ev, &key);
    ck_assert_msg(r == BF_OK, "%s: from_json %s at %s", name, bf_reason_name(r), key);
    ck_assert_msg(bf_validate(&ev) == BF_OK, "%s: %s", name,
                  bf_reason_name(bf_validate(&ev)));

    uint8_t *out = malloc(len);
    ck_assert_ptr_nonnull(out);
    size_t n = bf_encode(&ev, out, len);
    ck_assert_msg(n == len, "%s: encoded %zu bytes, want %zu", name, n, len);
    ck_assert_msg(memcmp(out, want, len) == 0, "%s: bytes differ", name);
    free(out);

    /* One byte short: nothing, and no write past the smaller buffer. */
    out = malloc(len - 1);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(bf_encode(&ev, out, len - 1), 0);
    free(out);
    free(want);
}
END_TEST

/* Every prefix of a valid binary datagram either decodes (it ends on a field
 * boundary) or is truncated; nothing else, and no read past its end. */
START_TEST(test_proto_vector_prefixes)
{
    json_t *v = vector_at((size_t)_i);
    if (!json_object_get(v, "hex") || !json_object_get(v, "event"))
        return;
    const char *name = vector_name(v);
    size_t len;
    uint8_t *full = vector_bytes(v, &len);
    for (size_t k = BF_HEADER_LEN; k < len; k++) {
        uint8_t *p = malloc(k);
        ck_assert_ptr_nonnull(p);
        memcpy(p, full, k);
        bf_event ev;
        bf_reason r = bf_decode(p, k, &ev);
        ck_assert_msg(r == BF_OK || r == BF_R_truncated,
                      "%s: prefix %zu gives %s", name, k, bf_reason_name(r));
        free(p);
    }
    free(full);
}
END_TEST

/* Single-byte changes to a full datagram never crash the decoder and always
 * give a known reason. */
START_TEST(test_proto_mutations)
{
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x05, 0x07, 0x7f,
                                     0x80, 0xbf, 0xfd, 0xff};
    size_t i, len = 0;
    json_t *v, *full = NULL;
    json_array_foreach(vectors, i, v) {
        if (strcmp(vector_name(v), "image full") == 0)
            full = v;
    }
    ck_assert_ptr_nonnull(full);
    uint8_t *orig = vector_bytes(full, &len);
    uint8_t *p = malloc(len);
    ck_assert_ptr_nonnull(p);
    for (i = 0; i < len; i++) {
        for (size_t j = 0; j < sizeof(values); j++) {
            memcpy(p, orig, len);
            p[i] = values[j];
            bf_event ev;
            json_t *doc;
            bf_reason r = datagram_check(p, len, &ev, &doc);
            ck_assert_int_lt(r, BF_R_MAX);
            json_decref(doc);
        }
    }
    free(p);
    free(orig);
}
END_TEST

/* Each reason of reasons.def has a reject vector, except those that are a
 * matter of the daemon, not of the bytes: oversize (its size limit),
 * stale_time and future_time (the time of receipt; test_enrich). */
START_TEST(test_proto_vectors_cover_reasons)
{
    for (int r = 1; r < BF_R_MAX; r++) {
        if (r == BF_R_oversize || r == BF_R_stale_time || r == BF_R_future_time ||
            r == BF_R_peer_not_allowed)
            continue; /* counted by receive or enrich, not by decoding */
        int seen = 0;
        size_t i;
        json_t *v;
        json_array_foreach(vectors, i, v) {
            const char *rej = json_string_value(json_object_get(v, "reject"));
            seen |= rej && strcmp(rej, bf_reason_name((bf_reason)r)) == 0;
        }
        ck_assert_msg(seen, "no vector rejects as %s", bf_reason_name((bf_reason)r));
    }
}
END_TEST

START_TEST(test_proto_varint_lengths)
{
    static const struct {
        uint64_t v;
        size_t len;
    } cases[] = {
        {0, 1},           {1, 1},           {127, 1},
        {128, 2},         {16383, 2},       {16384, 3},
        {(1u << 21) - 1, 3}, {1u << 21, 4}, {UINT32_MAX, 5},
        {4102444800000ull, 6}, {(uint64_t)1 << 56, 9},
        {((uint64_t)1 << 63) - 1, 9}, {(uint64_t)1 << 63, 10}, {UINT64_MAX, 10},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *buf = malloc(cases[i].len);
        uint8_t tmp[10];
        ck_assert_ptr_nonnull(buf);
        size_t n = bf_varint_put(tmp, cases[i].v);
        ck_assert_uint_eq(n, cases[i].len);
        memcpy(buf, tmp, n);

        const uint8_t *p = buf;
        uint64_t got = 0;
        ck_assert_int_eq(bf_varint_get(&p, buf + n, &got), 0);
        ck_assert_ptr_eq(p, buf + n);
        ck_assert_uint_eq(got, cases[i].v);

        /* Every shorter read is truncated and leaves p where it was. */
        for (size_t k = 0; k < n; k++) {
            p = buf;
            ck_assert_int_eq(bf_varint_get(&p, buf + k, &got), -1);
            ck_assert_ptr_eq(p, buf);
        }
        free(buf);
    }
}
END_TEST

START_TEST(test_proto_varint_known_bytes)
{
    uint8_t out[10];
    ck_assert_uint_eq(bf_varint_put(out, 300), 2);
    ck_assert_uint_eq(out[0], 0xac);
    ck_assert_uint_eq(out[1], 0x02);
    ck_assert_uint_eq(bf_varint_put(out, UINT64_MAX), 10);
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(out[i], 0xff);
    ck_assert_uint_eq(out[9], 0x01);
}
END_TEST

START_TEST(test_proto_varint_overflow)
{
    static const uint8_t eleven[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t over64[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0x02};
    static const uint8_t zeros11[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x00};
    const uint8_t *p;
    uint64_t v;

    p = eleven;
    ck_assert_int_eq(bf_varint_get(&p, eleven + sizeof(eleven), &v), -2);
    ck_assert_ptr_eq(p, eleven);
    p = over64;
    ck_assert_int_eq(bf_varint_get(&p, over64 + sizeof(over64), &v), -2);
    p = zeros11;
    ck_assert_int_eq(bf_varint_get(&p, zeros11 + sizeof(zeros11), &v), -2);
    /* Ten bytes of 0xff with no end: too long beats truncated. */
    p = eleven;
    ck_assert_int_eq(bf_varint_get(&p, eleven + 10, &v), -2);
}
END_TEST

START_TEST(test_proto_varint_overlong_accepted)
{
    /* Non-minimal forms decode (as protobuf's do); only canonical ones are
     * ever written. Ten bytes with a last byte of 0 is still 64 bits. */
    static const uint8_t zero10[] = {0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t one3[] = {0x81, 0x80, 0x00};
    const uint8_t *p = zero10;
    uint64_t v = 99;
    ck_assert_int_eq(bf_varint_get(&p, zero10 + sizeof(zero10), &v), 0);
    ck_assert_uint_eq(v, 0);
    p = one3;
    ck_assert_int_eq(bf_varint_get(&p, one3 + sizeof(one3), &v), 0);
    ck_assert_uint_eq(v, 1);
    ck_assert_ptr_eq(p, one3 + 3);
}
END_TEST

START_TEST(test_proto_reason_names)
{
    ck_assert_str_eq(bf_reason_name(BF_OK), "ok");
    for (int r = 1; r < BF_R_MAX; r++) {
        const char *n = bf_reason_name((bf_reason)r);
        const char *d = bf_reason_desc((bf_reason)r);
        ck_assert_ptr_nonnull(n);
        ck_assert_ptr_nonnull(d);
        ck_assert_msg(n[0] && strcmp(n, "unknown") && strcmp(n, "ok"),
                      "reason %d has name '%s'", r, n);
        ck_assert_msg(strlen(d) > 5, "reason %s has no description", n);
        for (const char *c = n; *c; c++)
            ck_assert_msg((*c >= 'a' && *c <= 'z') || *c == '_',
                          "reason '%s' is not a lower_snake name", n);
        for (int s = 1; s < r; s++)
            ck_assert_str_ne(n, bf_reason_name((bf_reason)s));
    }
    ck_assert_str_eq(bf_reason_name(BF_R_MAX), "unknown");
    ck_assert_str_eq(bf_reason_name((bf_reason)-1), "unknown");
    ck_assert_str_eq(bf_reason_desc(BF_R_MAX), "unknown");
    ck_assert_str_eq(bf_reason_name(BF_R_truncated), "truncated");
}
END_TEST

START_TEST(test_proto_field_lookup)
{
    unsigned nfields = 0;
    ck_assert_uint_le(BF_F_MAX, 64); /* bf_event.present has 64 bits */
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const char *n = bf_fields[tag].name;
        if (!n)
            continue;
        nfields++;
        ck_assert_uint_eq(bf_field_lookup(n, strlen(n)), tag);
        /* Lengths matter: a prefix or a longer name is not the field. */
        ck_assert_uint_eq(bf_field_lookup(n, strlen(n) - 1), 0);
        char longer[64];
        snprintf(longer, sizeof(longer), "%sx", n);
        ck_assert_uint_eq(bf_field_lookup(longer, strlen(longer)), 0);
        ck_assert(bf_fields[tag].datasets != 0);
        ck_assert((bf_fields[tag].datasets & ~BF_DS_ALL) == 0);
    }
    ck_assert_uint_eq(nfields, 21);
    ck_assert_uint_eq(bf_fields[0].name == NULL, 1);
    ck_assert_uint_eq(bf_field_lookup("model", 5), BF_F_model);
    ck_assert_uint_eq(bf_field_lookup("model_xyz", 5), BF_F_model);
    ck_assert_uint_eq(bf_field_lookup("dataset", 7), 0);
    ck_assert_uint_eq(bf_field_lookup("", 0), 0);
    ck_assert_uint_eq(bf_field_lookup("Model", 5), 0);
    ck_assert_uint_eq(bf_fields[BF_F_width].type, BF_TYPE_U64);
    ck_assert_uint_eq(bf_fields[BF_F_cached].type, BF_TYPE_BOOL);
    ck_assert_uint_eq(bf_fields[BF_F_prompt].type, BF_TYPE_STR);
    ck_assert_uint_eq(bf_fields[BF_F_prompt].datasets, BF_DS_IMAGE);
    ck_assert_uint_eq(bf_fields[BF_F_stream].datasets, BF_DS_LLM);
    ck_assert_uint_eq(bf_fields[BF_F_id].max, 64);
}
END_TEST

START_TEST(test_proto_dataset_lookup)
{
    ck_assert_str_eq(bf_dataset_name(BF_DATASET_image_events), "image_events");
    ck_assert_str_eq(bf_dataset_name(BF_DATASET_llm_events), "llm_events");
    ck_assert_ptr_null(bf_dataset_name(0));
    ck_assert_ptr_null(bf_dataset_name(3));
    ck_assert_ptr_null(bf_dataset_name(255));
    ck_assert_ptr_null(bf_dataset_name(~0u));
    ck_assert_uint_eq(bf_dataset_lookup("image_events", 12), 1);
    ck_assert_uint_eq(bf_dataset_lookup("llm_events", 10), 2);
    ck_assert_uint_eq(bf_dataset_lookup("image_events_x", 12), 1);
    ck_assert_uint_eq(bf_dataset_lookup("image_event", 11), BF_DATASET_NONE);
    ck_assert_uint_eq(bf_dataset_lookup("images", 6), BF_DATASET_NONE);
    ck_assert_uint_eq(bf_dataset_lookup("", 0), BF_DATASET_NONE);
}
END_TEST

/* A tiny deterministic PRNG, so a failing case can be replayed. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random events of both datasets (any values, valid or not) survive
 * encode then decode unchanged. */
START_TEST(test_proto_roundtrip_random)
{
    static char text[4096];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = (char)(rng_next(&seed) & 0xff);
    for (int round = 0; round < 2000; round++) {
        bf_event ev;
        bf_event_init(&ev, 1 + (unsigned)(rng_next(&seed) % 2));
        for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
            const bf_field_info *f = &bf_fields[tag];
            if (!f->name || rng_next(&seed) % 3 == 0)
                continue;
            char *slot = (char *)&ev + f->offset;
            if (f->type == BF_TYPE_STR) {
                bf_str *s = (bf_str *)slot;
                s->len = (size_t)(rng_next(&seed) % 300);
                s->ptr = text + rng_next(&seed) % (sizeof(text) - s->len);
            } else {
                int bits = (int)(rng_next(&seed) % 65);
                uint64_t x = rng_next(&seed);
                *(uint64_t *)slot = bits == 64 ? x : x & (((uint64_t)1 << bits) - 1);
            }
            ev.present |= (uint64_t)1 << tag;
        }
        uint8_t buf[8192];
        size_t n = bf_encode(&ev, buf, sizeof(buf));
        ck_assert_uint_gt(n, 0);
        bf_event back;
        ck_assert_int_eq(bf_decode(buf, n, &back), BF_OK);
        ck_assert_uint_eq(back.dataset, ev.dataset);
        ck_assert_uint_eq(back.present, ev.present);
        for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
            const bf_field_info *f = &bf_fields[tag];
            if (!f->name || !((ev.present >> tag) & 1u))
                continue;
            const char *a = (const char *)&ev + f->offset;
            const char *b = (const char *)&back + f->offset;
            if (f->type == BF_TYPE_STR) {
                const bf_str *sa = (const bf_str *)a, *sb = (const bf_str *)b;
                ck_assert_uint_eq(sa->len, sb->len);
                ck_assert(memcmp(sa->ptr, sb->ptr, sa->len) == 0);
            } else {
                ck_assert_uint_eq(*(const uint64_t *)a, *(const uint64_t *)b);
            }
        }
        /* Re-encoding the decoded event gives the same bytes. */
        uint8_t again[8192];
        ck_assert_uint_eq(bf_encode(&back, again, sizeof(again)), n);
        ck_assert(memcmp(buf, again, n) == 0);
    }
}
END_TEST

/* One string or number field of tag as wire bytes at p. */
static size_t put_field(uint8_t *p, unsigned tag, const char *str, uint64_t num)
{
    size_t n = 0;
    if (bf_fields[tag].type == BF_TYPE_STR) {
        size_t len = strlen(str);
        n += bf_varint_put(p + n, (uint64_t)tag << 3 | BF_WT_BYTES);
        n += bf_varint_put(p + n, len);
        memcpy(p + n, str, len);
        return n + len;
    }
    n += bf_varint_put(p + n, (uint64_t)tag << 3 | BF_WT_VARINT);
    return n + bf_varint_put(p + n, num);
}

/* bf_decode_validate checks limits and control characters as it decodes:
 * a repeated field is judged by its last value, a field of the other
 * dataset not at all, two faults in the order bf_validate_detail finds
 * them; then datagrams of random fields (values good and bad, repeats,
 * unknown tags, wrong types), each cut at every length, agree with
 * bf_decode then bf_validate_detail. */
START_TEST(test_proto_decode_validate_same)
{
    static const struct {
        const char *what;
        unsigned ds, tags[4];
        const char *strs[4];
        uint64_t nums[4];
        bf_reason want;
        unsigned field;
    } cases[] = {
        {"control char, then clean", 1, {BF_F_user_id, BF_F_user_id}, {"a\x01", "ab"}, {0}, BF_OK, 0},
        {"clean, then control char", 1, {BF_F_user_id, BF_F_user_id}, {"ab", "a\x1f"}, {0},
         BF_R_control_char, BF_F_user_id},
        {"C1 control in tier", 2, {BF_F_tier}, {"x\xc2\x85y"}, {0}, BF_R_control_char, BF_F_tier},
        {"too long, then short", 1, {BF_F_tier, BF_F_tier},
         {"0123456789012345678901234567890123456789", "ok"}, {0}, BF_OK, 0},
        {"over, then in range", 1, {BF_F_width, BF_F_width}, {0}, {70000, 640}, BF_OK, 0},
        {"in range, then over", 1, {BF_F_width, BF_F_width}, {0}, {640, 70000},
         BF_R_out_of_range, BF_F_width},
        {"width of llm_events ignored", 2, {BF_F_width}, {0}, {70000}, BF_OK, 0},
        {"limits before control chars", 1, {BF_F_id, BF_F_steps}, {"\x7f"}, {0, 10001},
         BF_R_out_of_range, BF_F_steps},
        {"lowest tag first", 2, {BF_F_cached_tokens, BF_F_username},
         {"", "0123456789012345678901234567890123456789012345678901234567890123456789"
              "0123456789012345678901234567890123456789012345678901234567890123456789"},
         {1ull << 40}, BF_R_too_long, BF_F_username},
        {"id then model", 1, {BF_F_model, BF_F_id}, {"m\n", "i\t"}, {0}, BF_R_control_char,
         BF_F_id},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        uint8_t buf[512] = {BF_MAGIC0, BF_MAGIC1, BF_PROTO_VERSION, (uint8_t)cases[c].ds};
        size_t n = BF_HEADER_LEN;
        int has_model = 0;
        for (int k = 0; k < 4 && cases[c].tags[k]; k++) {
            n += put_field(buf + n, cases[c].tags[k], cases[c].strs[k] ? cases[c].strs[k] : "",
                           cases[c].nums[k]);
            has_model |= cases[c].tags[k] == BF_F_model;
        }
        if (!has_model)
            n += put_field(buf + n, BF_F_model, "flux", 0);
        bf_event ev;
        unsigned tag = 0;
        bf_reason r = bf_decode_validate(buf, n, &ev, &tag);
        ck_assert_msg(r == cases[c].want && tag == cases[c].field, "%s: %s (tag %u)",
                      cases[c].what, bf_reason_name(r), tag);
        decode_both(buf, n, &ev);
    }

    static const char *const strs[] = {"", "x", "user_1234", "flux", "a\x01", "\x7f",
                                       "0123456789012345678901234567890123456789",
                                       "caf\xc3\xa9", "\xc2\x9f", "seed", "success", "error"};
    uint64_t seed = 0x51ed2701ull;
    for (int round = 0; round < 3000; round++) {
        uint8_t buf[1024] = {BF_MAGIC0, BF_MAGIC1, BF_PROTO_VERSION,
                             (uint8_t)(1 + rng_next(&seed) % 3)};
        size_t n = BF_HEADER_LEN;
        int fields = (int)(rng_next(&seed) % 12);
        for (int k = 0; k < fields; k++) {
            unsigned tag = 1 + (unsigned)(rng_next(&seed) % (BF_F_MAX + 2));
            uint64_t x = rng_next(&seed);
            if (tag >= BF_F_MAX || rng_next(&seed) % 16 == 0) { /* unknown or mistyped */
                unsigned wt = (unsigned)(x % 8);
                n += bf_varint_put(buf + n, (uint64_t)tag << 3 | wt);
                n += bf_varint_put(buf + n, x >> 59);
                continue;
            }
            if (tag == BF_F_start_time || tag == BF_F_end_time)
                x %= 5000000000000ull;
            else
                x >>= rng_next(&seed) % 64;
            n += put_field(buf + n, tag, strs[x % (sizeof(strs) / sizeof(strs[0]))], x);
        }
        if (rng_next(&seed) % 4)
            n += put_field(buf + n, BF_F_model, strs[rng_next(&seed) % 4], 0);
        for (size_t cut = 0; cut <= n; cut++) {
            uint8_t *p = malloc(cut ? cut : 1);
            ck_assert_ptr_nonnull(p);
            memcpy(p, buf, cut);
            bf_event ev;
            decode_both(p, cut, &ev);
            free(p);
        }
    }
}
END_TEST

/* Integer values of one to ten bytes, the last field or not, and
 * overlong forms, decode to what bf_varint_get reads; a varint cut by the
 * end of the datagram is truncated. */
START_TEST(test_proto_decode_varint_forms)
{
    static const uint8_t overlong[][4] = {{0x80, 0x00}, {0xff, 0x00}, {0x80, 0x80, 0x00},
                                          {0x81, 0x80, 0x80, 0x00}};
    for (int i = 0; i < 64 * 3 + 4; i++) {
        for (int last = 0; last < 2; last++) {
            uint8_t buf[64] = {BF_MAGIC0, BF_MAGIC1, BF_PROTO_VERSION, 1};
            size_t n = BF_HEADER_LEN;
            if (last)
                n += put_field(buf + n, BF_F_model, "flux", 0);
            buf[n++] = BF_F_duration_ms << 3 | BF_WT_VARINT;
            uint8_t *val = buf + n;
            if (i < 64 * 3) {
                uint64_t v = (1ull << (i / 3)) - 1 + (uint64_t)(i % 3); /* 2^k - 1, 2^k, 2^k + 1 */
                n += bf_varint_put(buf + n, v);
            } else {
                memcpy(buf + n, overlong[i - 64 * 3], 4);
                n += i - 64 * 3 < 2 ? 2 : i - 64 * 3 == 2 ? 3 : 4;
            }
            const uint8_t *q = val;
            uint64_t want;
            ck_assert_int_eq(bf_varint_get(&q, buf + n, &want), 0);
            ck_assert_ptr_eq(q, buf + n);
            if (!last)
                n += put_field(buf + n, BF_F_model, "flux", 0);
            bf_event ev;
            bf_reason r = bf_decode(buf, n, &ev);
            ck_assert_msg(r == BF_OK && ev.duration_ms == want, "case %d: %s, %llu want %llu",
                          i, bf_reason_name(r), (unsigned long long)ev.duration_ms,
                          (unsigned long long)want);
            decode_both(buf, n, &ev);
            if (last) /* cut inside the varint */
                for (size_t cut = (size_t)(val - buf); cut < n; cut++)
                    ck_assert_int_eq(bf_decode(buf, cut, &ev), BF_R_truncated);
        }
    }
}
END_TEST

/* The decoder takes the canonical order (ascending tags, each once) by a
 * path of its own and any other order by its general loop: the same
 * fields, values good and bad (over a limit, a control character, a wrong
 * type, an unknown tag), in ascending order, reversed, shuffled and
 * rotated, with and without a repeat or an unknown field after them,
 * decode to the same reason, field and event; and cut at every length
 * both ways agree with bf_decode then bf_validate_detail. */
START_TEST(test_proto_decode_any_order)
{
    static const char *const strs[] = {"", "u", "user_1234", "flux", "a\x01", "success",
                                       "0123456789012345678901234567890123456789",
                                       "caf\xc3\xa9", "seed"};
    uint64_t seed = 0x0dde5eedull;
    for (int round = 0; round < 2000; round++) {
        /* One piece of wire per field, ascending by tag. */
        uint8_t piece[BF_F_MAX + 1][80];
        size_t plen[BF_F_MAX + 1], np = 0;
        for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
            if (tag != BF_F_model && rng_next(&seed) % 3 == 0)
                continue;
            uint64_t x = rng_next(&seed);
            if (x % 29 == 0) { /* the wrong wire type */
                size_t n = bf_varint_put(piece[np],
                                         (uint64_t)tag << 3 | (bf_fields[tag].type == BF_TYPE_STR
                                                                   ? BF_WT_VARINT
                                                                   : BF_WT_BYTES));
                piece[np][n++] = 0;
                plen[np++] = n;
                continue;
            }
            uint64_t num = x % 5 == 0 ? x >> (x % 64) : (x >> 8) % 70000;
            plen[np] = put_field(piece[np], tag, strs[(x >> 20) % 9], num);
            np++;
        }
        if (rng_next(&seed) % 4 == 0) { /* an unknown tag among them */
            plen[np] = bf_varint_put(piece[np], (uint64_t)40 << 3 | BF_WT_VARINT);
            plen[np] += bf_varint_put(piece[np] + plen[np], rng_next(&seed) % 1000);
            np++;
        }
        uint8_t extra[80];
        size_t elen = 0;
        if (rng_next(&seed) % 2) /* a repeat after them */
            elen = put_field(extra, 1 + (unsigned)(rng_next(&seed) % (BF_F_MAX - 1)),
                             strs[rng_next(&seed) % 9], rng_next(&seed) % 100000);
        bf_event want;
        unsigned want_tag = 0;
        bf_reason want_r = BF_OK;
        uint8_t *want_buf = NULL; /* want's strings point into it */
        for (int order = 0; order < 4; order++) {
            size_t idx[BF_F_MAX + 1];
            for (size_t i = 0; i < np; i++)
                idx[i] = order == 1 ? np - 1 - i : order == 3 ? (i + 1) % np : i;
            if (order == 2)
                for (size_t i = np; i > 1; i--) {
                    size_t j = (size_t)(rng_next(&seed) % i), t = idx[i - 1];
                    idx[i - 1] = idx[j];
                    idx[j] = t;
                }
            uint8_t tmp[2048] = {BF_MAGIC0, BF_MAGIC1, BF_PROTO_VERSION,
                                 (uint8_t)(1 + round % 2)};
            size_t n = BF_HEADER_LEN;
            for (size_t i = 0; i < np; i++) {
                memcpy(tmp + n, piece[idx[i]], plen[idx[i]]);
                n += plen[idx[i]];
            }
            memcpy(tmp + n, extra, elen);
            n += elen;
            uint8_t *buf = malloc(n);
            ck_assert_ptr_nonnull(buf);
            memcpy(buf, tmp, n);
            bf_event ev;
            unsigned tag = 0;
            bf_reason r = bf_decode_validate(buf, n, &ev, &tag);
            if (order == 0) {
                want = ev;
                want_r = r;
                want_tag = tag;
            } else {
                ck_assert_msg(r == want_r && tag == want_tag, "round %d order %d: %s (tag %u), "
                              "ascending %s (tag %u)", round, order, bf_reason_name(r), tag,
                              bf_reason_name(want_r), want_tag);
                if (r == BF_OK || r > BF_R_unknown_dataset)
                    same_event(&ev, &want, "another order");
            }
            if (round % 50 == 0)
                for (size_t cut = 0; cut <= n; cut++)
                    decode_both(buf, cut, &ev);
            if (order == 0)
                want_buf = buf;
            else
                free(buf);
        }
        free(want_buf);
    }
}
END_TEST

/* An identifier's control characters are found wherever they stand: in a
 * user_id of 2 to 44 bytes, the last field (so the datagram ends with it)
 * or followed by a 22-byte one, a NUL, 0x1f, DEL or a C1 control at every
 * offset (every place of the 16-byte blocks the checker reads, of the last
 * block read whole and of the one read back from the end), and a clean
 * character past ASCII there accepted; each datagram in a buffer of its
 * exact size, agreeing with bf_decode then bf_validate_detail. */
START_TEST(test_proto_decode_validate_control_every_offset)
{
    static const char *const odd[] = {"\0", "\x1f", "\x7f", "\xc2\x85", "\xc3\xa9"};
    for (size_t len = 1; len <= 40; len++) {
        for (size_t pos = 0; pos <= len; pos++) {
            for (size_t k = 0; k < sizeof(odd) / sizeof(odd[0]); k++) {
                for (int after = 0; after < 2; after++) {
                    uint8_t tmp[128] = {BF_MAGIC0, BF_MAGIC1, BF_PROTO_VERSION, 1};
                    size_t n = BF_HEADER_LEN;
                    n += put_field(tmp + n, BF_F_model, "flux", 0);
                    size_t ol = k == 0 ? 1 : strlen(odd[k]), sl = len + ol;
                    n += bf_varint_put(tmp + n, (uint64_t)BF_F_user_id << 3 | BF_WT_BYTES);
                    n += bf_varint_put(tmp + n, sl);
                    for (size_t i = 0; i < sl; i++)
                        tmp[n + i] = (uint8_t)('a' + i % 26);
                    memcpy(tmp + n + pos, odd[k], ol);
                    n += sl;
                    if (after)
                        n += put_field(tmp + n, BF_F_prompt, "a prompt of 20 bytes", 0);
                    uint8_t *buf = malloc(n);
                    ck_assert_ptr_nonnull(buf);
                    memcpy(buf, tmp, n);
                    bf_event ev;
                    unsigned tag = 0;
                    bf_reason want = k == 4 ? BF_OK : BF_R_control_char;
                    bf_reason r = bf_decode_validate(buf, n, &ev, &tag);
                    ck_assert_msg(r == want, "len %zu pos %zu odd %zu after %d: %s", len, pos,
                                  k, after, bf_reason_name(r));
                    ck_assert_uint_eq(tag, want == BF_OK ? 0 : BF_F_user_id);
                    decode_both(buf, n, &ev);
                    free(buf);
                }
            }
        }
    }
}
END_TEST

START_TEST(test_proto_encode_small_cap)
{
    bf_event ev;
    bf_event_init(&ev, BF_DATASET_llm_events);
    BF_SET_STR(&ev, model, "m", 1);
    for (size_t cap = 0; cap < BF_HEADER_LEN + 3; cap++) {
        uint8_t *out = malloc(cap ? cap : 1);
        ck_assert_ptr_nonnull(out);
        ck_assert_uint_eq(bf_encode(&ev, out, cap), 0);
        free(out);
    }
    uint8_t out[BF_HEADER_LEN + 3];
    ck_assert_uint_eq(bf_encode(&ev, out, sizeof(out)), sizeof(out));
}
END_TEST

START_TEST(test_proto_validate_detail)
{
    bf_event ev;
    unsigned tag = 99;

    bf_event_init(&ev, 7);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_unknown_dataset);
    ck_assert_uint_eq(tag, 0);

    bf_event_init(&ev, BF_DATASET_image_events);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_missing_field);
    ck_assert_uint_eq(tag, BF_F_model);

    BF_SET_STR(&ev, model, "flux", 4);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_OK);
    ck_assert_uint_eq(tag, 0);

    BF_SET_U64(&ev, steps, 10001);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_out_of_range);
    ck_assert_uint_eq(tag, BF_F_steps);
    BF_SET_U64(&ev, steps, 10000);

    BF_SET_STR(&ev, tier, "0123456789012345678901234567890123", 33);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_too_long);
    ck_assert_uint_eq(tag, BF_F_tier);
    BF_SET_STR(&ev, tier, "seed", 4);

    BF_SET_STR(&ev, status, "fail", 4);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_bad_value);
    ck_assert_uint_eq(tag, BF_F_status);
    BF_SET_STR(&ev, status, "", 0);

    BF_SET_U64(&ev, start_time, 2000);
    BF_SET_U64(&ev, end_time, 1999);
    ck_assert_int_eq(bf_validate_detail(&ev, &tag), BF_R_bad_value);
    ck_assert_uint_eq(tag, BF_F_end_time);
    ck_assert_int_eq(bf_validate(&ev), BF_R_bad_value);
    BF_SET_U64(&ev, end_time, 2000);
    ck_assert_int_eq(bf_validate_detail(&ev, NULL), BF_OK);
}
END_TEST

/* A field of the other dataset is ignored downstream, so its limit is not
 * checked: llm_events may carry width 70000, image_events may not. */
START_TEST(test_proto_validate_other_dataset)
{
    bf_event ev;
    bf_event_init(&ev, BF_DATASET_llm_events);
    BF_SET_STR(&ev, model, "m", 1);
    BF_SET_U64(&ev, width, 70000);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    ev.dataset = BF_DATASET_image_events;
    ck_assert_int_eq(bf_validate(&ev), BF_R_out_of_range);
    ev.present &= ~((uint64_t)1 << BF_F_width);
    BF_SET_U64(&ev, stream, 5);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    ev.dataset = BF_DATASET_llm_events;
    ck_assert_int_eq(bf_validate(&ev), BF_R_out_of_range);
}
END_TEST

START_TEST(test_proto_json_bad_key)
{
    static const struct {
        const char *text;
        bf_reason r;
        const char *key;
    } cases[] = {
        {"[1]", BF_R_bad_json, "(root)"},
        {"\"x\"", BF_R_bad_json, "(root)"},
        {"{}", BF_R_missing_field, "dataset"},
        {"{\"dataset\":[]}", BF_R_bad_type, "dataset"},
        {"{\"dataset\":\"nope\"}", BF_R_unknown_dataset, "dataset"},
        {"{\"dataset\":\"image_events\",\"width\":\"1\"}", BF_R_bad_type, "width"},
        {"{\"dataset\":\"image_events\",\"steps\":-3}", BF_R_out_of_range, "steps"},
        {"{\"dataset\":\"image_events\",\"cached\":0.5}", BF_R_bad_type, "cached"},
        {"{\"dataset\":\"image_events\",\"width\":1e300}", BF_R_bad_type, "width"},
        {"{\"dataset\":\"image_events\",\"stream\":true}", BF_OK, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = json_loads(cases[i].text, JSON_DECODE_ANY, NULL);
        ck_assert_ptr_nonnull(doc);
        bf_event ev;
        const char *key = "unset";
        bf_reason r = bf_event_from_json(doc, &ev, &key);
        ck_assert_msg(r == cases[i].r, "%s: got %s", cases[i].text, bf_reason_name(r));
        if (cases[i].key)
            ck_assert_str_eq(key, cases[i].key);
        else
            ck_assert_ptr_null(key);
        json_decref(doc);
    }
}
END_TEST

START_TEST(test_proto_json_decode_doc)
{
    bf_event ev;
    json_t *doc = (json_t *)1;
    const char *key = NULL;
    static const char bad[] = "{\"dataset\":";
    ck_assert_int_eq(bf_json_decode(bad, strlen(bad), &ev, &doc, &key), BF_R_bad_json);
    ck_assert_ptr_null(doc);
    ck_assert_str_eq(key, "(root)");

    /* Not NUL-terminated: only len bytes are read. */
    static const char good[] = "{\"dataset\":\"llm_events\",\"model\":\"m\"}garbage";
    size_t len = strlen(good) - strlen("garbage");
    char *copy = malloc(len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, good, len);
    ck_assert_int_eq(bf_json_decode(copy, len, &ev, &doc, &key), BF_OK);
    free(copy);
    ck_assert_ptr_nonnull(doc);
    ck_assert_uint_eq(ev.dataset, BF_DATASET_llm_events);
    ck_assert_uint_eq(ev.model.len, 1);
    ck_assert_int_eq(ev.model.ptr[0], 'm'); /* borrowed from doc */
    json_decref(doc);
}
END_TEST

/* Each byte that is not part of a valid UTF-8 sequence comes out as U+FFFD
 * (as the daemon writes rows), so the JSON always dumps. */
START_TEST(test_proto_to_json_invalid_utf8)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"ok", 2, "ok"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"\xf0\x9f\x90\x88", 4, "\xf0\x9f\x90\x88"},
        {"a\xff" "b", 3, "a\xef\xbf\xbd" "b"},
        {"\xc0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", 4,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"x\xe2\x82", 3, "x\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2\x82x", 3, "\xef\xbf\xbd\xef\xbf\xbdx"},
        {"\xf0\x9f\x90", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe0\x80\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf8\x88\x80\x80\x80", 5,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xef\xbf\xbf", 3, "\xef\xbf\xbf"}, /* U+FFFF is valid */
        {"\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf"},
        {"\x80", 1, "\xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bf_event ev;
        bf_event_init(&ev, BF_DATASET_image_events);
        BF_SET_STR(&ev, prompt, cases[i].in, cases[i].len);
        json_t *j = bf_event_to_json(&ev);
        ck_assert_ptr_nonnull(j);
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        ck_assert_msg(s != NULL, "case %zu does not dump", i);
        free(s);
        ck_assert_str_eq(json_string_value(json_object_get(j, "prompt")),
                         cases[i].out);
        json_decref(j);
    }
}
END_TEST

START_TEST(test_proto_to_json_unknown_dataset)
{
    bf_event ev;
    bf_event_init(&ev, 9);
    BF_SET_U64(&ev, cached, 1);
    json_t *j = bf_event_to_json(&ev);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dataset")), 9);
    ck_assert(json_is_true(json_object_get(j, "cached")));
    ck_assert_uint_eq(json_object_size(j), 2);
    json_decref(j);
}
END_TEST

Suite *proto_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("proto", NULL, NULL, &tc);
    vectors_load();
    int n = vectors ? (int)json_array_size(vectors) : 0;

    tcase_add_test(tc, test_proto_vectors_load);
    tcase_add_loop_test(tc, test_proto_vector_decode, 0, n);
    tcase_add_loop_test(tc, test_proto_vector_encode, 0, n);
    tcase_add_loop_test(tc, test_proto_vector_prefixes, 0, n);
    tcase_add_test(tc, test_proto_vectors_cover_reasons);
    tcase_add_test(tc, test_proto_mutations);
    tcase_add_test(tc, test_proto_varint_lengths);
    tcase_add_test(tc, test_proto_varint_known_bytes);
    tcase_add_test(tc, test_proto_varint_overflow);
    tcase_add_test(tc, test_proto_varint_overlong_accepted);
    tcase_add_test(tc, test_proto_reason_names);
    tcase_add_test(tc, test_proto_field_lookup);
    tcase_add_test(tc, test_proto_dataset_lookup);
    tcase_add_test(tc, test_proto_roundtrip_random);
    tcase_add_test(tc, test_proto_decode_varint_forms);
    tcase_add_test(tc, test_proto_decode_validate_same);
    tcase_add_test(tc, test_proto_decode_any_order);
    tcase_add_test(tc, test_proto_decode_validate_control_every_offset);
    tcase_add_test(tc, test_proto_encode_small_cap);
    tcase_add_test(tc, test_proto_validate_detail);
    tcase_add_test(tc, test_proto_validate_other_dataset);
    tcase_add_test(tc, test_proto_json_bad_key);
    tcase_add_test(tc, test_proto_json_decode_doc);
    tcase_add_test(tc, test_proto_to_json_invalid_utf8);
    tcase_add_test(tc, test_proto_to_json_unknown_dataset);
    return s;
}
