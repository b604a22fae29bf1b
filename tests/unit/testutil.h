/* tests/unit/testutil.h: helpers shared by the test_*.c suites.
 *
 * Header only (static inline): the Makefile builds tests/unit/main.c and
 * tests/unit/test_*.c, nothing else in this folder. Every helper asserts with
 * Check, so a failure fails the calling test. */
#ifndef BF_TESTUTIL_H
#define BF_TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_proto.h"
#include "catalog.h"
#include "enrich.h"

/* Every suite's constructor, one per line of suites.def (main.c runs them). */
#define BF_SUITE(name) Suite *name##_suite(void);
#include "suites.def"
#undef BF_SUITE

#define CATALOG_PATH "daemon/catalog.json"
#define TEST_KEY "0123456789abcdef0123456789abcdef" /* 32 bytes of key */

/* Element count of an array, as an int (tcase_add_loop_test's bound). */
#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A suite holding one test case, both called name, with the checked
 * fixture setup/teardown (either may be NULL). *tc gets the test case for
 * tcase_add_test. */
static inline Suite *tu_suite(const char *name, SFun setup, SFun teardown, TCase **tc)
{
    Suite *s = suite_create(name);
    *tc = tcase_create(name);
    if (setup || teardown)
        tcase_add_checked_fixture(*tc, setup, teardown);
    suite_add_tcase(s, *tc);
    return s;
}

/* ---- bf_str ------------------------------------------------------------ */

/* s holds exactly the bytes of lit. */
static inline int str_is(bf_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}
#define ck_assert_bfstr(s, lit)                                                \
    ck_assert_msg(str_is(s, lit), "%s is '%.*s', want '%s'", #s, (int)(s).len, \
                  (s).ptr ? (s).ptr : "", lit)

/* ---- temp directories and files ---------------------------------------- */

/* Make a fresh directory /tmp/bf-<name>-XXXXXX; dir (size bytes) gets its path. */
static inline void tu_mkdtemp(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "/tmp/bf-%s-XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static inline int tu_rm_entry(const char *path, const struct stat *sb, int flag,
                              struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove dir and everything below it (best effort, as rm -rf). */
static inline void tu_rmtree(const char *dir)
{
    nftw(dir, tu_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Create (or truncate) path holding the len bytes of text. */
static inline void tu_write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---- enrich context on the shipped catalog ------------------------------- */

/* Write TEST_KEY to key_path, open an enrich context on it (*ctx) and set
 * the shipped catalog (*cat) on it. */
static inline void tu_enrich_open(const char *key_path, enrich_ctx **ctx, catalog **cat)
{
    char err[256];
    tu_write_file(key_path, TEST_KEY "\n", strlen(TEST_KEY) + 1);
    *ctx = enrich_new(key_path, err, sizeof(err));
    ck_assert_msg(*ctx != NULL, "enrich_new: %s", err);
    *cat = catalog_load(CATALOG_PATH, err, sizeof(err));
    ck_assert_msg(*cat != NULL, "catalog_load: %s", err);
    enrich_set_catalog(*ctx, *cat);
}

static inline void tu_enrich_close(enrich_ctx **ctx, catalog **cat)
{
    enrich_free(*ctx);
    *ctx = NULL;
    catalog_free(*cat);
    *cat = NULL;
}

#endif
