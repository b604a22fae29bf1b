/*
 * test_row.c: daemon/row.c: NDJSON rows, checked by parsing them back with
 * jansson against the datafiles in tinybird/datasources/ (columns, order,
 * types), timestamps, escaping, UTF-8 repair and the row_max_bytes() bound.
 *
 * Rows are built the way the daemon builds them: bf_decode_datagram (for the
 * size bound), then enrich_event with daemon/catalog.json and a key file in
 * a temporary directory. Runs from the repo root.
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bf_decoder.h"
#include "catalog.h"
#include "enrich.h"
#include "row.h"
#include "stats.h"
#include "testutil.h"

#define DATASOURCE_DIR "tinybird/datasources"
#define RECV_MS 1709210096789ull /* 2024-02-29 12:34:56.789 */

static char tmpdir[64];
static enrich_ctx *ctx;
static catalog *cat;

static void row_setup(void)
{
    char key[128];
    memset(&stats, 0, sizeof(stats));
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "row");
    snprintf(key, sizeof(key), "%s/ip-hash.key", tmpdir);
    tu_enrich_open(key, &ctx, &cat);
}

static void row_teardown(void)
{
    tu_enrich_close(&ctx, &cat);
    tu_rmtree(tmpdir);
}

/* ---- the datafiles --------------------------------------------------- */

typedef struct schema_col {
    char name[64];
    char type[64];
    char path[80];
} schema_col;

/* Parse the SCHEMA block of tinybird/datasources/<dataset>.datasource:
 * the lines after "SCHEMA >" up to the first blank line, each
 * "`name` Type `json:$.name`,". Returns the column count. */
static int schema_load(unsigned dataset, schema_col *cols, int max)
{
    char path[256], line[512];
    snprintf(path, sizeof(path), "%s/%s.datasource", DATASOURCE_DIR,
             bf_dataset_name(dataset));
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    int in_schema = 0, n = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!in_schema) {
            in_schema = strcmp(line, "SCHEMA >") == 0;
            continue;
        }
        if (line[strspn(line, " \t")] == '\0')
            break;
        ck_assert_msg(n < max, "%s: too many columns", path);
        char *b1 = strchr(line, '`');
        char *b2 = b1 ? strchr(b1 + 1, '`') : NULL;
        char *b3 = b2 ? strchr(b2 + 1, '`') : NULL;
        char *b4 = b3 ? strchr(b3 + 1, '`') : NULL;
        ck_assert_msg(b4 != NULL, "%s: cannot parse '%s'", path, line);
        schema_col *c = &cols[n++];
        snprintf(c->name, sizeof(c->name), "%.*s", (int)(b2 - b1 - 1), b1 + 1);
        /* The type: between the name and the json path, trimmed. */
        char *t = b2 + 1, *te = b3;
        while (t < te && *t == ' ')
            t++;
        while (te > t && te[-1] == ' ')
            te--;
        snprintf(c->type, sizeof(c->type), "%.*s", (int)(te - t), t);
        snprintf(c->path, sizeof(c->path), "%.*s", (int)(b4 - b3 - 1), b3 + 1);
    }
    fclose(f);
    ck_assert_msg(in_schema, "%s: no 'SCHEMA >' line", path);
    return n;
}

START_TEST(test_row_columns_match_datasource)
{
    unsigned ds = (unsigned)_i;
    schema_col cols[64];
    int n = schema_load(ds, cols, 64);
    const char *const *want = row_columns(ds);
    ck_assert_ptr_nonnull(want);
    int k = 0;
    for (; want[k]; k++) {
        ck_assert_msg(k < n, "%s: row_columns has '%s', the datafile ends at %d",
                      bf_dataset_name(ds), want[k], n);
        ck_assert_msg(strcmp(want[k], cols[k].name) == 0,
                      "%s: column %d is '%s' in row_columns, '%s' in the datafile",
                      bf_dataset_name(ds), k, want[k], cols[k].name);
        char jp[80];
        snprintf(jp, sizeof(jp), "json:$.%.63s", cols[k].name);
        ck_assert_str_eq(cols[k].path, jp);
    }
    ck_assert_msg(k == n, "%s: %d columns in row_columns, %d in the datafile",
                  bf_dataset_name(ds), k, n);
}
END_TEST

START_TEST(test_row_columns_unknown_dataset)
{
    ck_assert_ptr_null(row_columns(BF_DATASET_NONE));
    ck_assert_ptr_null(row_columns(BF_DATASET_MAX));
    ck_assert_ptr_null(row_columns(255));
}
END_TEST

/* ---- parsing rows back ---------------------------------------------- */

static int is_timestamp(const char *s)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:"
                             "[0-9]{2}\\.[0-9]{3}$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* Check one value against a ClickHouse type of the datafile. */
static void check_type(const char *col, const char *type, json_t *v)
{
    if (strcmp(type, "String") == 0 || strcmp(type, "LowCardinality(String)") == 0) {
        ck_assert_msg(json_is_string(v), "%s: not a string", col);
    } else if (strcmp(type, "DateTime64(3)") == 0) {
        ck_assert_msg(json_is_string(v) && is_timestamp(json_string_value(v)),
                      "%s: not a 'YYYY-MM-DD HH:MM:SS.mmm' string", col);
    } else if (strcmp(type, "UInt32") == 0) {
        ck_assert_msg(json_is_integer(v), "%s: not an integer", col);
        ck_assert_msg(json_integer_value(v) >= 0 &&
                          json_integer_value(v) <= (json_int_t)UINT32_MAX,
                      "%s: %lld is not a UInt32", col,
                      (long long)json_integer_value(v));
    } else if (strcmp(type, "Bool") == 0) {
        ck_assert_msg(json_is_boolean(v), "%s: not true/false", col);
    } else if (strcmp(type, "Float64") == 0) {
        ck_assert_msg(json_is_number(v), "%s: not a number", col);
    } else {
        ck_abort_msg("%s: type '%s' unknown to this test", col, type);
    }
}

/* Parse one formatted row (n bytes at line): exactly one line, one object
 * with every column of the dataset in order, typed as the datafile says,
 * and nothing else. Returns the object (caller decrefs). */
static json_t *check_row(unsigned ds, const char *line, size_t n)
{
    schema_col cols[64];
    int ncols = schema_load(ds, cols, 64);
    ck_assert_uint_gt(n, 2);
    ck_assert_int_eq(line[n - 1], '\n');
    ck_assert_msg(memchr(line, '\n', n - 1) == NULL, "newline inside the row");
    ck_assert_int_eq(line[0], '{');
    json_error_t jerr;
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_msg(o != NULL, "row does not parse: %s: %.*s", jerr.text, (int)n, line);
    ck_assert(json_is_object(o));
    ck_assert_uint_eq(json_object_size(o), (size_t)ncols);
    int k = 0;
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it), k++) {
        const char *key = json_object_iter_key(it);
        ck_assert_msg(k < ncols, "extra key '%s'", key);
        ck_assert_msg(strcmp(key, cols[k].name) == 0, "key %d is '%s', want '%s'", k,
                      key, cols[k].name);
        check_type(key, cols[k].type, json_object_iter_value(it));
    }
    ck_assert_int_eq(k, ncols);
    return o;
}

static char *format(const bf_row *row, size_t *n)
{
    size_t cap = row_max_bytes(8192);
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    *n = row_format(out, row);
    ck_assert_uint_le(*n, cap);
    return out;
}

static const char *sget(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "%s: not a string", key);
    return json_string_value(v);
}

static json_int_t iget(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "%s: not an integer", key);
    return json_integer_value(v);
}

#define S(ev, f, lit) BF_SET_STR(ev, f, lit, sizeof(lit) - 1)

/* An event with every field of its dataset, or only the required ones. */
static void make_event(bf_event *ev, unsigned ds, int full)
{
    bf_event_init(ev, ds);
    if (ds == BF_DATASET_image_events)
        S(ev, model, "flux");
    else
        S(ev, model, "gpt-5-nano");
    if (!full)
        return;
    S(ev, id, "evt-1");
    S(ev, user_id, "u-7");
    S(ev, username, "Ada");
    S(ev, tier, "flower");
    BF_SET_U64(ev, start_time, 1709210096000ull);
    BF_SET_U64(ev, end_time, 1709210097250ull);
    S(ev, status, "success");
    S(ev, referrer, "https://Example.com/x?y");
    S(ev, ip, "192.0.2.33");
    BF_SET_U64(ev, cached, 0);
    if (ds == BF_DATASET_image_events) {
        S(ev, prompt, "a cat");
        BF_SET_U64(ev, width, 1024);
        BF_SET_U64(ev, height, 768);
        BF_SET_U64(ev, steps, 4);
    } else {
        BF_SET_U64(ev, prompt_tokens, 1000);
        BF_SET_U64(ev, completion_tokens, 500);
        BF_SET_U64(ev, cached_tokens, 200);
        BF_SET_U64(ev, stream, 1);
    }
}

START_TEST(test_row_format_columns_and_types)
{
    /* _i: dataset (1, 2) x minimal/full. */
    unsigned ds = 1 + (unsigned)_i / 2;
    int full = _i % 2;
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, ds, full);
    ck_assert_int_eq(bf_validate(&ev), BF_OK);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_decref(check_row(ds, line, n));
    free(line);
}
END_TEST

START_TEST(test_row_format_values_image)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_image_events, 1);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_t *o = check_row(BF_DATASET_image_events, line, n);
    ck_assert_str_eq(sget(o, "id"), "evt-1");
    ck_assert_str_eq(sget(o, "user_id"), "u-7");
    ck_assert_str_eq(sget(o, "username"), "Ada");
    ck_assert_str_eq(sget(o, "tier"), "flower");
    ck_assert_str_eq(sget(o, "model"), "flux");
    ck_assert_str_eq(sget(o, "provider"), "Black Forest Labs");
    ck_assert_str_eq(sget(o, "start_time"), "2024-02-29 12:34:56.000");
    ck_assert_str_eq(sget(o, "end_time"), "2024-02-29 12:34:57.250");
    ck_assert_int_eq(iget(o, "duration_ms"), 1250);
    ck_assert_str_eq(sget(o, "status"), "success");
    ck_assert_str_eq(sget(o, "error_message"), "");
    ck_assert_str_eq(sget(o, "prompt"), "a cat");
    ck_assert_int_eq(iget(o, "width"), 1024);
    ck_assert_int_eq(iget(o, "height"), 768);
    ck_assert_int_eq(iget(o, "steps"), 4);
    ck_assert(json_is_false(json_object_get(o, "cached")));
    ck_assert(json_real_value(json_object_get(o, "cost_usd")) == 0.0025);
    ck_assert_str_eq(sget(o, "referrer"), "https://example.com");
    ck_assert_str_eq(sget(o, "ip"), "192.0.2.0");
    ck_assert_str_eq(sget(o, "ip_hash"), row.ip_hash);
    ck_assert_uint_eq(strlen(row.ip_hash), IP_HASH_HEX);
    json_decref(o);
    free(line);
}
END_TEST

START_TEST(test_row_format_values_llm)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_llm_events, 1);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_t *o = check_row(BF_DATASET_llm_events, line, n);
    ck_assert_str_eq(sget(o, "provider"), "OpenAI (Azure)");
    ck_assert_int_eq(iget(o, "prompt_tokens"), 1000);
    ck_assert_int_eq(iget(o, "completion_tokens"), 500);
    ck_assert_int_eq(iget(o, "cached_tokens"), 200);
    ck_assert_int_eq(iget(o, "total_tokens"), 1500);
    ck_assert(json_is_true(json_object_get(o, "stream")));
    ck_assert(json_is_false(json_object_get(o, "cached")));
    double want = (800 * 0.05 + 200 * 0.01 + 500 * 0.35) / 1e6;
    double got = json_number_value(json_object_get(o, "cost_usd"));
    ck_assert_msg(got > want * (1 - 1e-9) && got < want * (1 + 1e-9), "cost %.17g", got);
    json_decref(o);
    free(line);
}
END_TEST

START_TEST(test_row_format_defaults)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_llm_events, 0);
    BF_SET_U64(&ev, cached, 1);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_t *o = check_row(BF_DATASET_llm_events, line, n);
    ck_assert_str_eq(sget(o, "user_id"), "anonymous");
    ck_assert_str_eq(sget(o, "tier"), "anonymous");
    ck_assert_str_eq(sget(o, "username"), "");
    ck_assert_str_eq(sget(o, "status"), "success");
    ck_assert_str_eq(sget(o, "start_time"), "2024-02-29 12:34:56.789");
    ck_assert_str_eq(sget(o, "end_time"), "2024-02-29 12:34:56.789");
    ck_assert_int_eq(iget(o, "duration_ms"), 0);
    ck_assert(json_is_false(json_object_get(o, "stream")));
    ck_assert(json_is_true(json_object_get(o, "cached")));
    /* A cost of zero is the integer 0 (a Float64 column takes it). */
    ck_assert(json_is_integer(json_object_get(o, "cost_usd")));
    ck_assert_int_eq(iget(o, "cost_usd"), 0);
    ck_assert_str_eq(sget(o, "ip"), "");
    ck_assert_str_eq(sget(o, "ip_hash"), "");
    ck_assert_uint_eq(strlen(sget(o, "id")), 30);
    json_decref(o);
    free(line);
}
END_TEST

/* ---- timestamps ------------------------------------------------------ */

static const struct {
    uint64_t ms;
    const char *want;
} time_cases[] = {
    {0, "1970-01-01 00:00:00.000"},
    {999, "1970-01-01 00:00:00.999"},
    {1000, "1970-01-01 00:00:01.000"},
    {59999, "1970-01-01 00:00:59.999"},
    {7, "1970-01-01 00:00:00.007"},
    {1709210096789ull, "2024-02-29 12:34:56.789"},      /* leap day */
    {1709210096001ull, "2024-02-29 12:34:56.001"},
    {1709210096999ull, "2024-02-29 12:34:56.999"},
    {951782400000ull, "2000-02-29 00:00:00.000"},       /* leap day, /400 */
    {1709251199999ull, "2024-02-29 23:59:59.999"},
    {1709251200000ull, "2024-03-01 00:00:00.000"},
    {4102444799999ull, "2099-12-31 23:59:59.999"},
    {4102444800000ull, "2100-01-01 00:00:00.000"},      /* the largest valid */
};

START_TEST(test_row_format_time_table)
{
    char out[24];
    memset(out, 'X', sizeof(out));
    row_format_time(out, time_cases[_i].ms);
    ck_assert_str_eq(out, time_cases[_i].want);
}
END_TEST

/* row_format_time(ms) is what gmtime_r and strftime say. */
static void check_time(uint64_t ms)
{
    char got[24], want[32];
    row_format_time(got, ms);
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    ck_assert_ptr_nonnull(gmtime_r(&sec, &tm));
    size_t n = strftime(want, sizeof(want), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(want + n, sizeof(want) - n, ".%03u", (unsigned)(ms % 1000));
    ck_assert_msg(strcmp(got, want) == 0, "%llu: %s, gmtime says %s", (unsigned long long)ms,
                  got, want);
}

/* Against the C library, over the whole valid range (to 2100-01-01). */
START_TEST(test_row_format_time_matches_gmtime)
{
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t ms = x % 4102444800001ull;
        if (i < 4)
            ms = i < 2 ? (uint64_t)i : 4102444800000ull - (uint64_t)(i - 2);
        check_time(ms);
    }
    /* In steps of 37 s across midnights, and back and forth between two
     * days: the date kept from the last call is never another day's. */
    for (int i = 0; i < 6000; i++) {
        uint64_t ms = 1767225000000ull + (uint64_t)(i < 3000 ? i : (i % 2) * 3000) * 37001;
        check_time(ms);
    }
}
END_TEST

/* Integers of every number of digits, and at each power of ten. */
START_TEST(test_row_format_numbers)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_image_events, 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    uint64_t p10 = 1;
    for (int d = 0; d <= 20; d++) {
        uint64_t vs[] = {p10 - 1, p10, p10 + 1, p10 * 7 / 3, UINT64_MAX};
        for (size_t k = 0; k < sizeof(vs) / sizeof(vs[0]); k++) {
            row.width = vs[k];
            char *line = format(&row, &n), want[64];
            snprintf(want, sizeof(want), ",\"width\":%llu,", (unsigned long long)vs[k]);
            ck_assert_msg(memmem(line, n, want, strlen(want)) != NULL, "%s: %.*s", want, (int)n,
                          line);
            free(line);
        }
        if (d < 19)
            p10 *= 10;
    }
}
END_TEST

/* ---- cost_usd ---------------------------------------------------------- */

static const struct {
    double usd;
    const char *want;
} cost_text[] = {
    {0.0, "0"},
    {0.0025, "0.0025"},
    {0.04, "0.04"},
    {0.000217, "0.000217"},
    {1.5, "1.5"},
    {2.0, "2"},
    {12345.678, "12345.678"},
    {1e-12, "0.000000000001"},
    {1e-13, "0"},             /* below a picodollar */
    {4e-13, "0"},
    {6e-13, "0.000000000001"}, /* rounded */
    {0.1 + 0.2, "0.3"},       /* no binary noise */
    {23193.0237933, "23193.0237933"},
    {-1.0, "0"},
    {NAN, "0"},
    {INFINITY, "0"},
};

START_TEST(test_row_format_cost_text)
{
    bf_event ev;
    bf_row row;
    size_t n;
    char want[64];
    make_event(&ev, BF_DATASET_llm_events, 0);
    enrich_event(ctx, &ev, RECV_MS, &row);
    row.cost_usd = cost_text[_i].usd;
    char *line = format(&row, &n);
    snprintf(want, sizeof(want), ",\"cost_usd\":%s,", cost_text[_i].want);
    ck_assert_msg(strstr(line, want) != NULL, "%.17g: %.*s", cost_text[_i].usd, (int)n,
                  line);
    json_t *o = check_row(BF_DATASET_llm_events, line, n);
    double got = json_number_value(json_object_get(o, "cost_usd"));
    ck_assert_msg(got == strtod(cost_text[_i].want, NULL), "%.17g parsed as %.17g",
                  cost_text[_i].usd, got);
    json_decref(o);
    free(line);
}
END_TEST

/* ---- escaping and UTF-8 ----------------------------------------------- */

START_TEST(test_row_format_escaping)
{
    static const char nasty[] = "q\"b\\s/n\nr\rt\tb\bf\fc\x01\x1f" "d\x7f" "e\xe2\x80\xa8"
                                "\xf0\x9f\x98\x80";
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_image_events, 0);
    BF_SET_STR(&ev, username, nasty, sizeof(nasty) - 1);
    BF_SET_STR(&ev, prompt, nasty, sizeof(nasty) - 1);
    BF_SET_STR(&ev, error_message, nasty, sizeof(nasty) - 1);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_t *o = check_row(BF_DATASET_image_events, line, n);
    static const char *const keys[] = {"username", "prompt", "error_message"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(o, keys[k]);
        ck_assert_uint_eq(json_string_length(v), sizeof(nasty) - 1);
        ck_assert_msg(memcmp(json_string_value(v), nasty, sizeof(nasty) - 1) == 0,
                      "%s does not round-trip", keys[k]);
    }
    /* The escapes as written. */
    static const char want[] = "q\\\"b\\\\s/n\\nr\\rt\\tb\\u0008f\\u000c"
                               "c\\u0001\\u001fd\x7f" "e\xe2\x80\xa8";
    ck_assert_msg(strstr(line, want) != NULL, "escapes: %.*s", (int)n, line);
    ck_assert_uint_eq(stats.utf8_replaced, 0);
    json_decref(o);
    free(line);
}
END_TEST

/* The escaping of one byte string as the first writer did it, byte by
 * byte, for test_row_format_escape_every_offset. */
static size_t escape_ref(const unsigned char *u, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            out[o++] = '\\';
            out[o++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20) {
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else if (c < 0x80) {
            out[o++] = (char)c;
        } else {
            size_t k = bf_utf8_seq(u + i, len - i);
            if (k) {
                memcpy(out + o, u + i, k);
                o += k;
                i += k;
                continue;
            }
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i++;
    }
    return o;
}

/* Strings of 0 to 48 bytes with a byte to escape, a DEL, a sequence past
 * ASCII or an invalid byte at every offset (every place of the 16-byte
 * blocks and the overlapping tails the writer copies by), each in a
 * buffer of its exact size: written as the byte-by-byte reference does. */
START_TEST(test_row_format_escape_every_offset)
{
    static const char *const odd[] = {"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\xff",
                                      "\xc3\xa9", "\xf0\x9f\x98\x80", "\xe2\x80"};
    for (size_t len = 0; len <= 48; len++) {
        for (size_t pos = 0; pos <= len; pos++) {
            for (size_t k = 0; k < sizeof(odd) / sizeof(odd[0]); k++) {
                size_t ol = strlen(odd[k]), n = len + ol;
                char *str = malloc(n ? n : 1);
                ck_assert_ptr_nonnull(str);
                for (size_t i = 0; i < n; i++)
                    str[i] = (char)('a' + i % 26);
                memcpy(str + pos, odd[k], ol);
                bf_event ev;
                bf_row row;
                size_t got;
                make_event(&ev, BF_DATASET_image_events, 0);
                BF_SET_STR(&ev, username, str, n);
                enrich_event(ctx, &ev, RECV_MS, &row);
                char *line = format(&row, &got);
                char want[512];
                size_t w = (size_t)sprintf(want, ",\"username\":\"");
                w += escape_ref((const unsigned char *)str, n, want + w);
                w += (size_t)sprintf(want + w, "\",\"tier\"");
                ck_assert_msg(memmem(line, got, want, w) != NULL, "len %zu pos %zu odd %zu: %.*s",
                              len, pos, k, (int)got, line);
                free(line);
                free(str);
            }
        }
    }
}
END_TEST

#define B(lit) lit, sizeof(lit) - 1
static const struct {
    const char *in;
    size_t in_len;
    const char *out;
    size_t out_len;
} utf8_cases[] = {
    {B("ok\xff\xfe"), B("ok\xef\xbf\xbd\xef\xbf\xbd")},          /* one per byte */
    {B("a\xe6\x97"), B("a\xef\xbf\xbd\xef\xbf\xbd")},            /* truncated */
    {B("\xc0\xaf" "x"), B("\xef\xbf\xbd\xef\xbf\xbdx")},         /* overlong */
    {B("\xed\xa0\x80"), B("\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd")}, /* surrogate */
    {B("\xf4\x90\x80\x80"),
     B("\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd")},        /* > U+10FFFF */
    {B("\x80" "caf\xc3\xa9"), B("\xef\xbf\xbd" "caf\xc3\xa9")},   /* lone continuation */
    {B("\xe6\x97\xa5\xff"), B("\xe6\x97\xa5\xef\xbf\xbd")},
};
#undef B

START_TEST(test_row_format_invalid_utf8)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_image_events, 0);
    BF_SET_STR(&ev, username, utf8_cases[_i].in, utf8_cases[_i].in_len);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    json_t *o = check_row(BF_DATASET_image_events, line, n);
    json_t *v = json_object_get(o, "username");
    ck_assert_uint_eq(json_string_length(v), utf8_cases[_i].out_len);
    ck_assert_msg(memcmp(json_string_value(v), utf8_cases[_i].out,
                         utf8_cases[_i].out_len) == 0,
                  "case %d: replaced wrongly", _i);
    ck_assert_uint_eq(stats.utf8_replaced, 1);
    json_decref(o);
    free(line);
}
END_TEST

/* utf8_replaced counts rows, not bytes or fields. */
START_TEST(test_row_format_utf8_replaced_per_row)
{
    bf_event ev;
    bf_row row;
    size_t n;
    make_event(&ev, BF_DATASET_image_events, 0);
    BF_SET_STR(&ev, username, "\xff\xff", 2);
    BF_SET_STR(&ev, user_id, "\xfe", 1);
    BF_SET_STR(&ev, prompt, "ok \xc3", 4);
    enrich_event(ctx, &ev, RECV_MS, &row);
    char *line = format(&row, &n);
    ck_assert_uint_eq(stats.utf8_replaced, 1);
    json_decref(check_row(BF_DATASET_image_events, line, n));
    n = row_format(line, &row);
    ck_assert_uint_eq(stats.utf8_replaced, 2);
    make_event(&ev, BF_DATASET_image_events, 1);
    enrich_event(ctx, &ev, RECV_MS, &row);
    n = row_format(line, &row);
    ck_assert_uint_eq(stats.utf8_replaced, 2);
    free(line);
}
END_TEST

/* ---- the size bound --------------------------------------------------- */

/* Fill one string field with as many fill bytes as the datagram still has
 * room for (up to cap), or leave it absent when none fit. */
static void fill_field(bf_event *ev, unsigned tag, char *store, size_t cap,
                       size_t max_datagram, uint8_t *dgram)
{
    bf_str *s = (bf_str *)((char *)ev + bf_fields[tag].offset);
    size_t lo = 0, hi = cap;
    ev->present |= (uint64_t)1 << tag;
    s->ptr = store;
    while (lo < hi) { /* the largest length that still encodes */
        size_t mid = lo + (hi - lo + 1) / 2;
        s->len = mid;
        if (bf_encode(ev, dgram, max_datagram))
            lo = mid;
        else
            hi = mid - 1;
    }
    s->len = lo;
    if (lo == 0 || !bf_encode(ev, dgram, max_datagram)) {
        ev->present &= ~((uint64_t)1 << tag);
        s->len = 0;
    }
}

/* A worst-case catalog entry: a provider of CATALOG_PROVIDER_MAX control
 * bytes (six bytes each once escaped) and prices that print long. */
static catalog *worst_catalog(void)
{
    char text[2048], path[128], err[256];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof(text) - n,
                          "{\"models\": {\"w\": {\"provider\": \"");
    for (int i = 0; i < CATALOG_PROVIDER_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\\u0001");
    snprintf(text + n, sizeof(text) - n,
             "\", \"per_image\": 1.2345678901234e-300,"
             " \"prompt_per_mtok\": 1.2345678901234e-300,"
             " \"completion_per_mtok\": 1.2345678901234e-300}}}");
    snprintf(path, sizeof(path), "%s/worst.json", tmpdir);
    tu_write_file(path, text, strlen(text));
    catalog *c;
    ck_assert_msg(catalog_load(path, &c, err, sizeof(err)) == 0, "%s", err);
    return c;
}

static const size_t bound_sizes[] = {64, 100, 300, 1024, 8192, 65507};
static const unsigned char fills[] = {0x01, 0xff, '"', 0x1f};

/* _i: size x fill x dataset x (unknown model | worst catalog model). */
START_TEST(test_row_format_never_exceeds_bound)
{
    int i = _i;
    size_t max_datagram = bound_sizes[i % 6];
    unsigned char fill = fills[(i / 6) % 4];
    unsigned ds = 1 + (unsigned)((i / 24) % 2);
    int worst_model = (i / 48) % 2;

    char *store = malloc(max_datagram);
    uint8_t *dgram = malloc(max_datagram);
    ck_assert_ptr_nonnull(store);
    ck_assert_ptr_nonnull(dgram);
    memset(store, fill, max_datagram);
    /* Identifiers may not hold control bytes (rejected.control_char): their
     * worst is an invalid byte, three once replaced by U+FFFD. */
    static char ident_store[128];
    memset(ident_store, fill < 0x20 ? 0xff : fill, sizeof(ident_store));

    bf_event ev;
    bf_event_init(&ev, ds);
    /* Integers at their largest valid values first: they take fixed room. */
    BF_SET_U64(&ev, start_time, 4102444800000ull - 4294967295ull);
    BF_SET_U64(&ev, end_time, 4102444800000ull);
    BF_SET_U64(&ev, duration_ms, 4294967295ull);
    BF_SET_U64(&ev, prompt_tokens, 4294967295ull);
    BF_SET_U64(&ev, completion_tokens, 4294967295ull);
    if (ds == BF_DATASET_image_events) {
        BF_SET_U64(&ev, width, 65535);
        BF_SET_U64(&ev, height, 65535);
        BF_SET_U64(&ev, steps, 10000);
    } else {
        BF_SET_U64(&ev, cached_tokens, 4294967295ull);
        BF_SET_U64(&ev, stream, 1);
    }
    if (worst_model)
        BF_SET_STR(&ev, model, "w", 1);
    else
        BF_SET_STR(&ev, model, ident_store, 1);
    if (!bf_encode(&ev, dgram, max_datagram)) { /* 64 bytes: drop integers */
        uint64_t keep = ((uint64_t)1 << BF_F_model);
        ev.present &= keep;
    }
    ck_assert_uint_gt(bf_encode(&ev, dgram, max_datagram), 0);
    if (!worst_model)
        fill_field(&ev, BF_F_model, ident_store, 128, max_datagram, dgram);
    static const unsigned tags[] = {BF_F_id, BF_F_user_id, BF_F_username, BF_F_tier,
                                    BF_F_error_message, BF_F_prompt, BF_F_referrer,
                                    BF_F_ip};
    for (size_t k = 0; k < sizeof(tags) / sizeof(tags[0]); k++) {
        unsigned tag = tags[k];
        size_t cap = bf_fields[tag].max ? bf_fields[tag].max : max_datagram;
        int ident = tag == BF_F_id || tag == BF_F_user_id || tag == BF_F_tier;
        fill_field(&ev, tag, ident ? ident_store : store, cap, max_datagram, dgram);
    }
    size_t dlen = bf_encode(&ev, dgram, max_datagram);
    ck_assert_uint_gt(dlen, 0);
    ck_assert_uint_le(dlen, max_datagram);

    /* Through the daemon's own decoder, as the bound is stated for. */
    bf_decoder dec = {0};
    bf_event got;
    const char *detail;
    ck_assert_int_eq(bf_decode_datagram(&dec, dgram, dlen, &got, &detail), BF_OK);
    catalog *wc = worst_model ? worst_catalog() : NULL;
    if (wc)
        enrich_set_catalog(ctx, wc);
    bf_row row;
    enrich_event(ctx, &got, RECV_MS, &row);
    if (wc)
        ck_assert_uint_eq(strlen(row.provider), CATALOG_PROVIDER_MAX);

    size_t bound = row_max_bytes(max_datagram);
    char *out = malloc(bound); /* exactly the bound: ASan sees any overrun */
    ck_assert_ptr_nonnull(out);
    size_t n = row_format(out, &row);
    ck_assert_msg(n <= bound, "max_datagram %zu fill %02x ds %u: %zu > %zu",
                  max_datagram, fill, ds, n, bound);
    json_decref(check_row(ds, out, n));
    free(out);
    bf_decoder_release(&dec);
    if (wc) {
        enrich_set_catalog(ctx, cat);
        catalog_free(wc);
    }
    free(store);
    free(dgram);
}
END_TEST

Suite *row_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("row", row_setup, row_teardown, &tc);
    tcase_add_loop_test(tc, test_row_columns_match_datasource, 1, BF_DATASET_MAX);
    tcase_add_test(tc, test_row_columns_unknown_dataset);
    tcase_add_loop_test(tc, test_row_format_columns_and_types, 0,
                        2 * (BF_DATASET_MAX - 1));
    tcase_add_test(tc, test_row_format_values_image);
    tcase_add_test(tc, test_row_format_values_llm);
    tcase_add_test(tc, test_row_format_defaults);
    tcase_add_loop_test(tc, test_row_format_time_table, 0, N(time_cases));
    tcase_add_test(tc, test_row_format_time_matches_gmtime);
    tcase_add_loop_test(tc, test_row_format_cost_text, 0, N(cost_text));
    tcase_add_test(tc, test_row_format_escaping);
    tcase_add_test(tc, test_row_format_numbers);
    tcase_add_test(tc, test_row_format_escape_every_offset);
    tcase_add_loop_test(tc, test_row_format_invalid_utf8, 0, N(utf8_cases));
    tcase_add_test(tc, test_row_format_utf8_replaced_per_row);
    tcase_add_loop_test(tc, test_row_format_never_exceeds_bound, 0, 96);
    return s;
}
