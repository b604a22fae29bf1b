/*
 * test_catalog.c: daemon/catalog.c: the shipped daemon/catalog.json, lookups
 * by exact name and length, and catalogs that must not load.
 *
 * Bad catalogs are written to a temporary directory, one per test. Runs from
 * the repo root (daemon/catalog.json).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "fnv.h"
#include "testutil.h"

static char tmpdir[64];

static void catalog_setup(void)
{
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "catalog");
}

static void catalog_teardown(void)
{
    tu_rmtree(tmpdir);
}

/* Write text to a new file in tmpdir; returns its path (static). */
static const char *write_catalog(const char *text)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/catalog.json", tmpdir);
    tu_write_file(path, text, strlen(text));
    return path;
}

static catalog *must_load(const char *path)
{
    char err[512] = "";
    catalog *c;
    ck_assert_msg(catalog_load(path, &c, err, sizeof(err)) == 0, "catalog_load(%s): %s",
                  path, err);
    ck_assert_ptr_nonnull(c);
    return c;
}

static const catalog_model *find(const catalog *c, const char *name)
{
    return catalog_find(c, name, strlen(name));
}

/* Every model of the shipped catalog, with its prices. */
static const struct {
    const char *name, *provider;
    double per_image, prompt, cached, completion;
} shipped[] = {
    {"flux", "Black Forest Labs", 0.0025, 0, 0, 0},
    {"kontext", "Black Forest Labs", 0.04, 0, 0, 0},
    {"turbo", "Pollinations", 0.002, 0, 0, 0},
    {"seedream", "ByteDance", 0.03, 0, 0, 0},
    {"nanobanana", "Google Vertex", 0.03, 0, 0, 0},
    {"gptimage", "OpenAI (Azure)", 0, 2.00, 2.00, 8.00},
    {"gpt-4.1-nano", "OpenAI (Azure)", 0, 0.10, 0.03, 0.40},
    {"gpt-5-nano", "OpenAI (Azure)", 0, 0.05, 0.01, 0.35},
    {"deepseek-r1", "DeepSeek", 0, 1.35, 1.35, 5.40},
};
#define N_SHIPPED N(shipped)

START_TEST(test_catalog_shipped_size)
{
    catalog *c = must_load(CATALOG_PATH);
    ck_assert_uint_eq(catalog_size(c), N_SHIPPED);
    catalog_free(c);
}
END_TEST

/* Each model, from the file and from the copy built into the daemon. */
START_TEST(test_catalog_shipped_model)
{
    catalog *c = must_load(_i < N_SHIPPED ? CATALOG_PATH : NULL);
    _i %= N_SHIPPED;
    const catalog_model *m = find(c, shipped[_i].name);
    ck_assert_msg(m != NULL, "%s not found", shipped[_i].name);
    ck_assert_str_eq(m->name, shipped[_i].name);
    ck_assert_uint_eq(m->name_len, strlen(shipped[_i].name));
    ck_assert_str_eq(m->provider, shipped[_i].provider);
    ck_assert_uint_eq(m->provider_len, strlen(shipped[_i].provider));
    ck_assert(m->per_image == shipped[_i].per_image);
    ck_assert(m->prompt_per_mtok == shipped[_i].prompt);
    ck_assert(m->cached_prompt_per_mtok == shipped[_i].cached);
    ck_assert(m->completion_per_mtok == shipped[_i].completion);
    /* The same pointer on every lookup: lookups never allocate. */
    ck_assert_ptr_eq(find(c, shipped[_i].name), m);
    catalog_free(c);
}
END_TEST

/* The built-in catalog is daemon/catalog.json, byte for byte, as the
 * Makefile generated it; "built-in" is how logs name it. */
START_TEST(test_catalog_builtin_is_the_file)
{
    size_t len = 0;
    char *text = tu_read_file(CATALOG_PATH, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(catalog_builtin_len, len);
    ck_assert_int_eq(memcmp(catalog_builtin, text, len), 0);
    ck_assert_int_eq(catalog_builtin[len], '\0');
    free(text);
    catalog *c = must_load(NULL);
    ck_assert_uint_eq(catalog_size(c), N_SHIPPED);
    catalog_free(c);
    ck_assert_str_eq(catalog_name(NULL), "built-in");
    ck_assert_str_eq(catalog_name(CATALOG_PATH), CATALOG_PATH);
}
END_TEST

static const struct {
    const char *name;
    size_t len;
} not_found[] = {
    {"flu", 3},           /* prefix */
    {"fluxx", 5},
    {"flux\0", 5},        /* embedded NUL: length counts */
    {"fl\0x", 4},
    {"FLUX", 4},          /* case matters */
    {" flux", 5},
    {"", 0},
    {"gpt-5-nan", 9},
    {"deepseek-r1 ", 12},
    {"unknown", 7},
};

START_TEST(test_catalog_find_exact_length)
{
    catalog *c = must_load(CATALOG_PATH);
    ck_assert_msg(catalog_find(c, not_found[_i].name, not_found[_i].len) == NULL,
                  "case %d found", _i);
    catalog_free(c);
}
END_TEST

START_TEST(test_catalog_find_uses_len)
{
    catalog *c = must_load(CATALOG_PATH);
    /* The name is a prefix of a longer buffer: found by its length. */
    const catalog_model *m = catalog_find(c, "gpt-5-nano-and-more", 10);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->name, "gpt-5-nano");
    m = catalog_find(c, "fluxfluxflux", 4);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->name, "flux");
    catalog_free(c);
}
END_TEST

START_TEST(test_catalog_null)
{
    ck_assert_ptr_null(catalog_find(NULL, "flux", 4));
    ck_assert_uint_eq(catalog_size(NULL), 0);
    catalog_free(NULL);
}
END_TEST

/* Many models: all found through the open-addressing table, none else. */
START_TEST(test_catalog_many_models)
{
    enum { M = 300 };
    size_t cap = 64 * M + 64, n = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    n += (size_t)snprintf(text + n, cap - n, "{\"models\": {");
    for (int i = 0; i < M; i++)
        n += (size_t)snprintf(text + n, cap - n,
                              "%s\"model-%d\": {\"provider\": \"P%d\", "
                              "\"per_image\": %d}",
                              i ? "," : "", i, i, i);
    snprintf(text + n, cap - n, "}}");
    catalog *c = must_load(write_catalog(text));
    free(text);
    ck_assert_uint_eq(catalog_size(c), M);
    for (int i = 0; i < M; i++) {
        char name[32], prov[32];
        snprintf(name, sizeof(name), "model-%d", i);
        snprintf(prov, sizeof(prov), "P%d", i);
        const catalog_model *m = find(c, name);
        ck_assert_msg(m != NULL, "%s not found", name);
        ck_assert_str_eq(m->provider, prov);
        ck_assert(m->per_image == (double)i);
    }
    ck_assert_ptr_null(find(c, "model-300"));
    ck_assert_ptr_null(find(c, "model-"));
    catalog_free(c);
}
END_TEST

START_TEST(test_catalog_empty_models)
{
    catalog *c = must_load(write_catalog("{\"models\": {}}"));
    ck_assert_uint_eq(catalog_size(c), 0);
    ck_assert_ptr_null(find(c, "flux"));
    catalog_free(c);
}
END_TEST

START_TEST(test_catalog_cached_defaults_to_prompt)
{
    catalog *c = must_load(write_catalog(
        "{\"models\": {"
        "\"a\": {\"provider\": \"P\", \"prompt_per_mtok\": 1.5},"
        "\"b\": {\"provider\": \"P\", \"prompt_per_mtok\": 1.5,"
        " \"cached_prompt_per_mtok\": 0},"
        "\"c\": {\"provider\": \"P\", \"prompt_per_mtok\": 3,"
        " \"cached_prompt_per_mtok\": null, \"per_image\": null},"
        "\"d\": {\"provider\": \"P\", \"per_image\": 2}}}"));
    ck_assert(find(c, "a")->cached_prompt_per_mtok == 1.5);
    ck_assert(find(c, "b")->cached_prompt_per_mtok == 0.0); /* explicit 0 kept */
    ck_assert(find(c, "c")->cached_prompt_per_mtok == 3.0); /* null: default */
    ck_assert(find(c, "c")->prompt_per_mtok == 3.0);        /* integer price */
    ck_assert(find(c, "c")->per_image == 0.0);
    ck_assert(find(c, "d")->per_image == 2.0);
    ck_assert(find(c, "d")->cached_prompt_per_mtok == 0.0);
    catalog_free(c);
}
END_TEST

/* Catalogs that must not load, and what the error must name. */
static const struct {
    const char *text;     /* NULL: the file does not exist */
    const char *needle1, *needle2;
} bad[] = {
    {NULL, "catalog.json", NULL},
    {"not json", "catalog.json", NULL},
    {"", "catalog.json", NULL},
    {"{\"models\": {\"flux\": {\"provider\": \"P\"}}", "catalog.json", NULL},
    {"[]", "models", NULL},
    {"{}", "models", NULL},
    {"{\"model\": {}}", "models", NULL},
    {"{\"models\": []}", "models", NULL},
    {"{\"models\": null}", "models", NULL},
    {"{\"models\": {\"m1\": {\"per_image\": 1}}}", "'m1'", "provider"},
    {"{\"models\": {\"m1\": {\"provider\": \"\"}}}", "'m1'", "provider"},
    {"{\"models\": {\"m1\": {\"provider\": 7}}}", "'m1'", "provider"},
    {"{\"models\": {\"m1\": {\"provider\": null}}}", "'m1'", "provider"},
    {"{\"models\": {\"ok\": {\"provider\": \"P\"},"
     " \"neg\": {\"provider\": \"P\", \"per_image\": -1}}}", "'neg'", "per_image"},
    {"{\"models\": {\"m2\": {\"provider\": \"P\", \"prompt_per_mtok\": \"0.1\"}}}",
     "'m2'", "prompt_per_mtok"},
    {"{\"models\": {\"m3\": {\"provider\": \"P\", \"completion_per_mtok\": true}}}",
     "'m3'", "completion_per_mtok"},
    {"{\"models\": {\"m4\": {\"provider\": \"P\", \"cached_prompt_per_mtok\": -0.5}}}",
     "'m4'", "cached_prompt_per_mtok"},
    {"{\"models\": {\"m5\": {\"provider\": \"P\", \"per_image\": [1]}}}", "'m5'",
     "per_image"},
    {"{\"models\": {\"m6\": \"flux\"}}", "'m6'", NULL},
    {"{\"models\": {\"m7\": {\"provider\": \"P\"}, \"m7\": {\"provider\": \"Q\"}}}",
     "m7", NULL},
};

START_TEST(test_catalog_bad_file)
{
    char err[512], path[128];
    if (bad[_i].text) {
        snprintf(path, sizeof(path), "%s", write_catalog(bad[_i].text));
    } else {
        snprintf(path, sizeof(path), "%s/catalog.json", tmpdir); /* not written */
    }
    memset(err, 0, sizeof(err));
    catalog *c = (catalog *)&c; /* must come back NULL */
    /* A file that is not there says so (errno); one that is bad: EINVAL. */
    ck_assert_int_eq(catalog_load(path, &c, err, sizeof(err)),
                     bad[_i].text ? -EINVAL : -ENOENT);
    ck_assert_msg(c == NULL, "case %d loaded", _i);
    ck_assert_msg(strstr(err, bad[_i].needle1) != NULL, "case %d: '%s' lacks '%s'",
                  _i, err, bad[_i].needle1);
    if (bad[_i].needle2)
        ck_assert_msg(strstr(err, bad[_i].needle2) != NULL,
                      "case %d: '%s' lacks '%s'", _i, err, bad[_i].needle2);
}
END_TEST

/* A provider is written into every row: row_max_bytes() only holds when it
 * is short, so a long one is refused at load time. */
START_TEST(test_catalog_provider_too_long)
{
    char text[1024], err[512] = "";
    char prov[CATALOG_PROVIDER_MAX + 2];
    memset(prov, 'p', sizeof(prov) - 1);
    prov[sizeof(prov) - 1] = '\0';
    snprintf(text, sizeof(text),
             "{\"models\": {\"long\": {\"provider\": \"%s\", \"per_image\": 1}}}", prov);
    catalog *none;
    ck_assert_int_eq(catalog_load(write_catalog(text), &none, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(none);
    ck_assert_msg(strstr(err, "'long'") && strstr(err, "provider"), "err: %s", err);
    prov[CATALOG_PROVIDER_MAX] = '\0'; /* exactly the limit: fine */
    snprintf(text, sizeof(text),
             "{\"models\": {\"long\": {\"provider\": \"%s\", \"per_image\": 1}}}", prov);
    catalog *c = must_load(write_catalog(text));
    ck_assert_uint_eq(strlen(find(c, "long")->provider), CATALOG_PROVIDER_MAX);
    catalog_free(c);
}
END_TEST

START_TEST(test_catalog_error_truncated_safely)
{
    char err[8];
    memset(err, 'X', sizeof(err));
    catalog *none;
    ck_assert_int_eq(catalog_load(write_catalog("{}"), &none, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(none);
    ck_assert_ptr_nonnull(memchr(err, '\0', sizeof(err)));
}
END_TEST

/* The slot hash (daemon/fnv.h) reads exactly len bytes, each of which
 * counts: one byte changed anywhere in keys of 1 to 40 bytes changes the
 * hash; the bytes after the key do not. */
START_TEST(test_catalog_hash_reads_every_byte)
{
    char a[48], b[48];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t i = 0; i < len; i++) {
            memset(a, 'm', sizeof(a));
            memcpy(b, a, sizeof(b));
            b[i] ^= 1;
            ck_assert_msg(hash_words(a, len) != hash_words(b, len), "len %zu byte %zu", len, i);
        }
        memcpy(b, a, sizeof(b));
        b[len] = 'x';
        ck_assert_uint_eq(hash_words(a, len), hash_words(b, len));
        ck_assert_uint_ne(hash_words(a, len), hash_words(a, len + 1));
    }
}
END_TEST

/* key_equal (daemon/fnv.h), which compares the catalog's and the IP
 * cache's keys: for keys of 0 to 40 bytes in buffers of their exact size,
 * the same answer as memcmp, equal or with one byte changed anywhere. */
START_TEST(test_catalog_key_equal)
{
    for (size_t n = 0; n <= 40; n++) {
        char *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
        ck_assert(a && b);
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] = (char)('A' + (i * 7) % 50);
        ck_assert(key_equal(a, b, n));
        for (size_t i = 0; i < n; i++) {
            b[i] ^= 0x20;
            ck_assert_msg(!key_equal(a, b, n), "n %zu byte %zu", n, i);
            ck_assert_int_eq(key_equal(a, b, i), memcmp(a, b, i) == 0);
            b[i] ^= 0x20;
        }
        free(a);
        free(b);
    }
}
END_TEST

Suite *catalog_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("catalog", catalog_setup, catalog_teardown, &tc);
    tcase_add_test(tc, test_catalog_shipped_size);
    tcase_add_loop_test(tc, test_catalog_shipped_model, 0, 2 * N_SHIPPED);
    tcase_add_test(tc, test_catalog_builtin_is_the_file);
    tcase_add_loop_test(tc, test_catalog_find_exact_length, 0, N(not_found));
    tcase_add_test(tc, test_catalog_find_uses_len);
    tcase_add_test(tc, test_catalog_null);
    tcase_add_test(tc, test_catalog_many_models);
    tcase_add_test(tc, test_catalog_empty_models);
    tcase_add_test(tc, test_catalog_cached_defaults_to_prompt);
    tcase_add_loop_test(tc, test_catalog_bad_file, 0, N(bad));
    tcase_add_test(tc, test_catalog_provider_too_long);
    tcase_add_test(tc, test_catalog_error_truncated_safely);
    tcase_add_test(tc, test_catalog_hash_reads_every_byte);
    tcase_add_test(tc, test_catalog_key_equal);
    return s;
}
