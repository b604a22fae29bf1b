/*
 * test_decode.c: proto/bf_decoder.c: datagrams, binary (made by the C
 * encoder, bf_encode) and JSON, to validated events; every reject reason
 * through bf_decode_datagram with the field it names; JSON text lines as
 * the CLI reads them; the JSON document's lifetime.
 *
 * Every test decodes with the fixture's decoder `d`, which the teardown
 * releases (so a test that fails half-way leaks nothing either).
 * Datagrams are copied into buffers of their exact size so AddressSanitizer
 * sees any read past the end.
 */
#include <check.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_proto.h"
#include "bf_decoder.h"
#include "testutil.h"

static bf_decoder d;

static void decode_setup(void)
{
    memset(&d, 0, sizeof(d));
}

static void decode_teardown(void)
{
    bf_decoder_release(&d);
}

/* bf_decode_datagram on an exact-size copy of buf. *copy is for the caller
 * to free once done with ev (binary events borrow it). */
static bf_reason decode_copy(const void *buf, size_t len, bf_event *ev,
                             const char **detail, uint8_t **copy)
{
    *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(*copy);
    if (len)
        memcpy(*copy, buf, len);
    return bf_decode_datagram(&d, *copy, len, ev, detail);
}

START_TEST(test_decode_binary_image)
{
    bf_event in, out;
    uint8_t buf[512], *copy;
    const char *detail = "unset";
    bf_event_init(&in, BF_DATASET_image_events);
    BF_SET_STR(&in, model, "flux", 4);
    BF_SET_STR(&in, user_id, "u-1", 3);
    BF_SET_STR(&in, prompt, "a caf\xc3\xa9 at dusk", 15);
    BF_SET_U64(&in, width, 1024);
    BF_SET_U64(&in, height, 768);
    BF_SET_U64(&in, start_time, 1700000000000ull);
    BF_SET_U64(&in, end_time, 1700000001500ull);
    BF_SET_U64(&in, cached, 1);
    BF_SET_STR(&in, status, "success", 7);
    size_t n = bf_encode(&in, buf, sizeof(buf));
    ck_assert_uint_gt(n, BF_HEADER_LEN);
    ck_assert_int_eq(decode_copy(buf, n, &out, &detail, &copy), BF_OK);
    ck_assert_ptr_null(detail);
    ck_assert_ptr_null(d.scan.text); /* binary: nothing held */
    ck_assert_int_eq(out.dataset, BF_DATASET_image_events);
    ck_assert_uint_eq(out.present, in.present);
    ck_assert_bfstr(out.model, "flux");
    ck_assert_bfstr(out.user_id, "u-1");
    ck_assert_bfstr(out.prompt, "a caf\xc3\xa9 at dusk");
    ck_assert_bfstr(out.status, "success");
    ck_assert_uint_eq(out.width, 1024);
    ck_assert_uint_eq(out.height, 768);
    ck_assert_uint_eq(out.start_time, 1700000000000ull);
    ck_assert_uint_eq(out.end_time, 1700000001500ull);
    ck_assert_uint_eq(out.cached, 1);
    /* Strings borrow the datagram. */
    ck_assert(out.model.ptr >= (const char *)copy && out.model.ptr < (const char *)copy + n);
    bf_decoder_release(&d);
    free(copy);
}
END_TEST

START_TEST(test_decode_binary_llm)
{
    bf_event in, out;
    uint8_t buf[512], *copy;
    bf_event_init(&in, BF_DATASET_llm_events);
    BF_SET_STR(&in, model, "gpt-5-nano", 10);
    BF_SET_U64(&in, prompt_tokens, 4294967295ull);
    BF_SET_U64(&in, completion_tokens, 12);
    BF_SET_U64(&in, cached_tokens, 3);
    BF_SET_U64(&in, stream, 1);
    BF_SET_STR(&in, ip, "2001:db8::1", 11);
    size_t n = bf_encode(&in, buf, sizeof(buf));
    ck_assert_int_eq(decode_copy(buf, n, &out, NULL, &copy), BF_OK);
    ck_assert_int_eq(out.dataset, BF_DATASET_llm_events);
    ck_assert_uint_eq(out.present, in.present);
    ck_assert_bfstr(out.model, "gpt-5-nano");
    ck_assert_bfstr(out.ip, "2001:db8::1");
    ck_assert_uint_eq(out.prompt_tokens, 4294967295ull);
    ck_assert_uint_eq(out.completion_tokens, 12);
    ck_assert_uint_eq(out.cached_tokens, 3);
    ck_assert_uint_eq(out.stream, 1);
    free(copy);
}
END_TEST

START_TEST(test_decode_json)
{
    static const char text[] =
        " {\"dataset\": \"llm_events\", \"model\": \"gpt-5-nano\", \"prompt_tokens\": 12,"
        " \"stream\": true, \"cached\": 0, \"user_id\": \"u\\u00e9\", \"tier\": null,"
        " \"unknown_key\": [1, 2], \"start_time\": 1700000000000.0} ";
    bf_event ev;
    uint8_t *copy;
    const char *detail = "unset";
    /* A leading space is not JSON ('{' must come first): bad_magic. */
    ck_assert_int_eq(decode_copy(text, sizeof(text) - 1, &ev, &detail, &copy),
                     BF_R_bad_magic);
    free(copy);
    ck_assert_int_eq(decode_copy(text + 1, sizeof(text) - 2, &ev, &detail, &copy),
                     BF_OK);
    ck_assert_ptr_null(detail);
    ck_assert_ptr_nonnull(d.scan.text); /* escaped strings are decoded here */
    ck_assert_int_eq(ev.dataset, BF_DATASET_llm_events);
    ck_assert_bfstr(ev.model, "gpt-5-nano");
    ck_assert_bfstr(ev.user_id, "u\xc3\xa9");
    ck_assert_uint_eq(ev.prompt_tokens, 12);
    ck_assert_uint_eq(ev.stream, 1);
    ck_assert(BF_HAS(&ev, cached));
    ck_assert_uint_eq(ev.cached, 0);
    ck_assert(!BF_HAS(&ev, tier)); /* null is absent */
    ck_assert_uint_eq(ev.start_time, 1700000000000ull);
    /* No tree: a plain string borrows the datagram, as a binary one does;
     * one with an escape borrows the decoder's scan buffer. */
    ck_assert(ev.model.ptr >= (const char *)copy &&
              ev.model.ptr < (const char *)copy + sizeof(text) - 2);
    ck_assert(ev.user_id.ptr >= d.scan.text &&
              ev.user_id.ptr < d.scan.text + d.scan.text_cap);
    free(copy);
    bf_decoder_release(&d);
    ck_assert_ptr_null(d.scan.text);
    bf_decoder_release(&d); /* twice is harmless */
    ck_assert_ptr_null(d.scan.text);
}
END_TEST

/* Every reason, through bf_decode_datagram, and the field it names. */
#define J(lit) lit, sizeof(lit) - 1
static const struct {
    const char *name;
    const char *buf;
    size_t len;
    bf_reason want;
    const char *detail; /* NULL: none */
} rejects[] = {
    {"empty", "", 0, BF_R_empty, NULL},
    {"bad magic", J("xyz"), BF_R_bad_magic, NULL},
    {"json array", J("[{\"dataset\":\"image_events\"}]"), BF_R_bad_magic, NULL},
    {"bad version", J("\xbf\xfd\x02\x01"), BF_R_bad_version, NULL},
    {"truncated header", J("\xbf\xfd\x01"), BF_R_truncated, NULL},
    {"truncated string", J("\xbf\xfd\x01\x01\x2a\x05" "fl"), BF_R_truncated, NULL},
    {"bad varint", J("\xbf\xfd\x01\x01\x30\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"),
     BF_R_bad_varint, NULL},
    {"bad wire type", J("\xbf\xfd\x01\x01\x2b"), BF_R_bad_wire_type, NULL},
    {"binary bad type", J("\xbf\xfd\x01\x01\x28\x01"), BF_R_bad_type, NULL},
    {"binary unknown dataset", J("\xbf\xfd\x01\x09\x2a\x01m"), BF_R_unknown_dataset,
     NULL},
    {"binary missing model", J("\xbf\xfd\x01\x01\x60\x80\x08"), BF_R_missing_field,
     "model"},
    {"binary out of range", J("\xbf\xfd\x01\x01\x2a\x01m\x60\x80\x80\x04"),
     BF_R_out_of_range, "width"},
    {"bad json", J("{not json"), BF_R_bad_json, "(root)"},
    {"json trailing", J("{\"dataset\":\"image_events\",\"model\":\"m\"} x"),
     BF_R_bad_json, "(root)"},
    {"json duplicate key", J("{\"dataset\":\"image_events\",\"model\":\"a\",\"model\":\"b\"}"),
     BF_R_bad_json, "(root)"},
    {"json NUL", J("{\"dataset\":\"image_events\",\"model\":\"a\\u0000b\"}"),
     BF_R_bad_json, "(root)"},
    {"json invalid UTF-8", J("{\"dataset\":\"image_events\",\"model\":\"\xff\"}"),
     BF_R_bad_json, "(root)"},
    {"json missing dataset", J("{\"model\":\"flux\"}"), BF_R_missing_field, "dataset"},
    {"json missing model", J("{\"dataset\":\"image_events\"}"), BF_R_missing_field,
     "model"},
    {"json empty model", J("{\"dataset\":\"image_events\",\"model\":\"\"}"),
     BF_R_missing_field, "model"},
    {"json unknown dataset", J("{\"dataset\":\"video_events\",\"model\":\"m\"}"),
     BF_R_unknown_dataset, "dataset"},
    {"json dataset not a string", J("{\"dataset\":1,\"model\":\"m\"}"), BF_R_bad_type,
     "dataset"},
    {"json bad type string", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"width\":\"wide\"}"),
     BF_R_bad_type, "width"},
    {"json bad type model", J("{\"dataset\":\"image_events\",\"model\":5}"),
     BF_R_bad_type, "model"},
    {"json bad type bool", J("{\"dataset\":\"llm_events\",\"model\":\"m\",\"stream\":2}"),
     BF_R_bad_type, "stream"},
    {"json bad type fraction", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"steps\":1.5}"),
     BF_R_bad_type, "steps"},
    {"json too long", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"tier\":"
                        "\"012345678901234567890123456789012\"}"),
     BF_R_too_long, "tier"},
    {"json out of range", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"width\":65536}"),
     BF_R_out_of_range, "width"},
    {"json negative", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"height\":-1}"),
     BF_R_out_of_range, "height"},
    {"json bad status", J("{\"dataset\":\"image_events\",\"model\":\"m\",\"status\":\"ok\"}"),
     BF_R_bad_value, "status"},
    {"json times out of order",
     J("{\"dataset\":\"image_events\",\"model\":\"m\",\"start_time\":2,\"end_time\":1}"),
     BF_R_bad_value, "end_time"},
    {"binary control char", J("\xbf\xfd\x01\x01\x12\x02u\x01\x2a\x01m"),
     BF_R_control_char, "user_id"},
    {"binary NUL in id", J("\xbf\xfd\x01\x01\x0a\x01\x00\x2a\x01m"),
     BF_R_control_char, "id"},
    {"json control char", J("{\"dataset\":\"image_events\",\"model\":\"m\\u0007\"}"),
     BF_R_control_char, "model"},
};
#undef J

START_TEST(test_decode_reject)
{
    bf_event ev;
    uint8_t *copy;
    const char *detail = "unset";
    bf_reason r = decode_copy(rejects[_i].buf, rejects[_i].len, &ev, &detail, &copy);
    ck_assert_msg(r == rejects[_i].want, "%s: got %s, want %s", rejects[_i].name,
                  bf_reason_name(r), bf_reason_name(rejects[_i].want));
    if (rejects[_i].detail)
        ck_assert_msg(detail && strcmp(detail, rejects[_i].detail) == 0,
                      "%s: detail '%s', want '%s'", rejects[_i].name,
                      detail ? detail : "(null)", rejects[_i].detail);
    else
        ck_assert_msg(detail == NULL, "%s: detail '%s'", rejects[_i].name, detail);
    bf_decoder_release(&d);
    free(copy);
}
END_TEST

/* Every reason in reasons.def is reachable through bf_decode_datagram but
 * oversize and peer_not_allowed (counted by receive, before decoding),
 * stale_time and future_time (enrich, on the time of receipt; test_enrich). */
START_TEST(test_decode_reject_covers_reasons)
{
    int seen[BF_R_MAX] = {0};
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++)
        seen[rejects[i].want] = 1;
    for (int r = 1; r < BF_R_MAX; r++)
        if (r != BF_R_oversize && r != BF_R_stale_time && r != BF_R_future_time &&
            r != BF_R_peer_not_allowed)
            ck_assert_msg(seen[r], "no case for reason %s", bf_reason_name((bf_reason)r));
}
END_TEST

/* A JSON reject's detail is a copy in the decoder: valid after the
 * datagram is gone, until release. */
START_TEST(test_decode_detail_lives_until_release)
{
    static const char text[] = "{\"dataset\":\"image_events\",\"model\":\"m\","
                               "\"a_key_that_is_unknown\":1,\"width\":[]}";
    bf_event ev;
    uint8_t *copy;
    const char *detail = NULL;
    ck_assert_int_eq(decode_copy(text, sizeof(text) - 1, &ev, &detail, &copy),
                     BF_R_bad_type);
    free(copy);
    ck_assert_ptr_nonnull(d.scan.text);
    ck_assert_str_eq(detail, "width");
    bf_decoder_release(&d);
    ck_assert_ptr_null(d.scan.text);
}
END_TEST

/* The scan buffer is kept and reused from one decode to the next (no
 * allocation per datagram once grown); release frees it; many cycles leak
 * nothing (valgrind and ASan check the frees). */
START_TEST(test_decode_release_frees)
{
    bf_event ev;
    char text[256];
    uint8_t bin[128];
    for (int i = 0; i < 2000; i++) {
        int len = snprintf(text, sizeof(text),
                           "{\"dataset\":\"image_events\",\"model\":\"m%d\","
                           "\"prompt\":\"p%d\",\"width\":%d}",
                           i, i, i % 3 == 0 ? 70000 : i);
        bf_reason want = i % 3 == 0 ? BF_R_out_of_range : BF_OK;
        ck_assert_int_eq(bf_decode_datagram(&d, (const uint8_t *)text, (size_t)len, &ev,
                                         NULL),
                         want);
        ck_assert_ptr_nonnull(d.scan.text);
        const char *kept = d.scan.text;
        if (i % 5 == 0) {
            /* A binary datagram in between leaves the buffer alone. */
            bf_event b;
            bf_event_init(&b, BF_DATASET_llm_events);
            BF_SET_STR(&b, model, "x", 1);
            size_t n = bf_encode(&b, bin, sizeof(bin));
            ck_assert_int_eq(bf_decode_datagram(&d, bin, n, &ev, NULL), BF_OK);
            ck_assert_ptr_eq(d.scan.text, kept);
        }
        if (i % 7 == 0)
            bf_decoder_release(&d);
    }
    bf_decoder_release(&d);
    ck_assert_ptr_null(d.scan.text);
}
END_TEST

/* JSON text as the CLI reads a line: whitespace around the object is
 * allowed (a datagram must start with '{'), and every reject names a
 * field, "(root)" when the text does not parse. */
static const struct {
    const char *text;
    bf_reason want;
    const char *detail;
} json_lines[] = {
    {" \t{\"dataset\":\"image_events\",\"model\":\"flux\"} ", BF_OK, NULL},
    {"{\"dataset\":\"llm_events\",\"model\":\"m\",\"stream\":true}", BF_OK, NULL},
    {"", BF_R_bad_json, "(root)"},
    {"not json", BF_R_bad_json, "(root)"},
    {"[1]", BF_R_bad_json, "(root)"},
    {"{\"model\":\"flux\"}", BF_R_missing_field, "dataset"},
    {" {\"dataset\":\"image_events\"}", BF_R_missing_field, "model"},
    {"{\"dataset\":\"image_events\",\"model\":\"m\",\"width\":65536}",
     BF_R_out_of_range, "width"},
    {"{\"dataset\":\"image_events\",\"model\":\"m\",\"start_time\":2,\"end_time\":1}",
     BF_R_bad_value, "end_time"},
};

START_TEST(test_decode_json_text)
{
    bf_event ev;
    const char *detail = "unset";
    const char *text = json_lines[_i].text;
    bf_reason r = bf_decode_json_text(&d, text, strlen(text), &ev, &detail);
    ck_assert_msg(r == json_lines[_i].want, "'%s': got %s, want %s", text,
                  bf_reason_name(r), bf_reason_name(json_lines[_i].want));
    if (json_lines[_i].detail)
        ck_assert_str_eq(detail, json_lines[_i].detail);
    else
        ck_assert_ptr_null(detail);
    if (r == BF_OK) /* the event borrows the text */
        ck_assert(ev.model.ptr >= text && ev.model.ptr < text + strlen(text));
}
END_TEST

/* Round trip: events built at random, encoded by the C encoder, come back
 * equal through bf_decode_datagram. */
START_TEST(test_decode_binary_roundtrip)
{
    unsigned seed = 7;
    static const char *const models[] = {"flux", "gpt-5-nano", "m"};
    for (int round = 0; round < 300; round++) {
        bf_event in, out;
        uint8_t buf[1024];
        char text[64];
            seed = seed * 1103515245u + 12345u;
        unsigned ds = 1 + (seed >> 16) % 2;
        bf_event_init(&in, ds);
        const char *m = models[(seed >> 8) % 3];
        BF_SET_STR(&in, model, m, strlen(m));
        snprintf(text, sizeof(text), "user-%u", seed % 1000);
        BF_SET_STR(&in, user_id, text, strlen(text));
        BF_SET_U64(&in, start_time, (uint64_t)(seed % 4000000000u) * 1000);
        BF_SET_U64(&in, duration_ms, seed % 100000);
        if (ds == BF_DATASET_image_events) {
            BF_SET_U64(&in, width, seed % 65536);
            BF_SET_U64(&in, steps, seed % 10001);
        } else {
            BF_SET_U64(&in, prompt_tokens, seed);
            BF_SET_U64(&in, stream, seed & 1);
        }
        size_t n = bf_encode(&in, buf, sizeof(buf));
        ck_assert_int_eq(bf_decode_datagram(&d, buf, n, &out, NULL), BF_OK);
        ck_assert_uint_eq(out.present, in.present);
        ck_assert_int_eq(out.dataset, ds);
        ck_assert(str_is(out.model, m));
        ck_assert(str_is(out.user_id, text));
        ck_assert_uint_eq(out.start_time, in.start_time);
        ck_assert_uint_eq(out.duration_ms, in.duration_ms);
        ck_assert_uint_eq(out.width, in.width);
        ck_assert_uint_eq(out.steps, in.steps);
        ck_assert_uint_eq(out.prompt_tokens, in.prompt_tokens);
        ck_assert_uint_eq(out.stream, in.stream);
    }
}
END_TEST

Suite *decode_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("decode", decode_setup, decode_teardown, &tc);
    tcase_add_test(tc, test_decode_binary_image);
    tcase_add_test(tc, test_decode_binary_llm);
    tcase_add_test(tc, test_decode_json);
    tcase_add_loop_test(tc, test_decode_json_text, 0, N(json_lines));
    tcase_add_loop_test(tc, test_decode_reject, 0, N(rejects));
    tcase_add_test(tc, test_decode_reject_covers_reasons);
    tcase_add_test(tc, test_decode_detail_lives_until_release);
    tcase_add_test(tc, test_decode_release_frees);
    tcase_add_test(tc, test_decode_binary_roundtrip);
    return s;
}
