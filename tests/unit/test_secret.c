/*
 * test_secret.c: daemon/secret.c: a secret read from a file only its owner
 * may read (file_check's rule); one trailing newline dropped; empty,
 * oversized, open to the group or others, or not a regular file: refused
 * with the file named.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "secret.h"
#include "testutil.h"

static char tmpdir[64], path[128];

static void secret_setup(void)
{
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "secret");
    snprintf(path, sizeof(path), "%s/pw", tmpdir);
}

static void secret_teardown(void)
{
    tu_rmtree(tmpdir);
}

static const struct {
    const char *text;
    mode_t mode;
    const char *want; /* NULL: refused */
    const char *err;  /* in the message when refused */
} cases[] = {
    {"s3cret\n", 0600, "s3cret", NULL},
    {"s3cret\r\n", 0400, "s3cret", NULL},
    {"two words\n\n", 0600, "two words\n", NULL}, /* one newline only */
    {"s3cret\n", 0640, NULL, "chmod go-rwx"},
    {"s3cret\n", 0604, NULL, "chmod go-rwx"},
    {"\n", 0600, NULL, "empty"},
    {"", 0600, NULL, "empty"},
};

START_TEST(test_secret_read_file)
{
    tu_write_file(path, cases[_i].text, strlen(cases[_i].text));
    ck_assert_int_eq(chmod(path, cases[_i].mode), 0);
    char *out = (char *)1, err[256] = "";
    int rc = secret_read_file(path, "test secret", 1, &out, err, sizeof(err));
    if (cases[_i].want) {
        ck_assert_msg(rc == 0, "%s", err);
        ck_assert_str_eq(out, cases[_i].want);
        free(out);
    } else {
        ck_assert_int_lt(rc, 0);
        ck_assert_ptr_null(out);
        ck_assert_msg(strstr(err, cases[_i].err) && strstr(err, path) &&
                          strstr(err, "test secret"),
                      "%s", err);
    }
}
END_TEST

START_TEST(test_secret_refuses_missing_large_and_dirs)
{
    char *out, err[256];
    ck_assert_int_lt(secret_read_file(path, "s", 1, &out, err, sizeof(err)), 0); /* missing */
    ck_assert_ptr_null(out);
    ck_assert_int_lt(secret_read_file(tmpdir, "s", 1, &out, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "regular file"), "%s", err);
    static char big[5000];
    memset(big, 'x', sizeof(big));
    tu_write_file(path, big, sizeof(big));
    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_int_lt(secret_read_file(path, "s", 1, &out, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "larger than"), "%s", err);
}
END_TEST

/* A systemd credential (check 0) shows as group-readable (root, with an
 * ACL for the unit's user): read; the same file as a plain secret file is
 * refused. */
START_TEST(test_secret_credential_skips_the_mode_check)
{
    tu_write_file(path, "pw\n", 3);
    ck_assert_int_eq(chmod(path, 0440), 0);
    char *out = NULL, err[256] = "";
    ck_assert_int_lt(secret_read_file(path, "s", 1, &out, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "group"), "%s", err);
    ck_assert_msg(secret_read_file(path, "s", 0, &out, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(out, "pw");
    free(out);
}
END_TEST

Suite *secret_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("secret", secret_setup, secret_teardown, &tc);
    tcase_add_loop_test(tc, test_secret_read_file, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, test_secret_refuses_missing_large_and_dirs);
    tcase_add_test(tc, test_secret_credential_skips_the_mode_check);
    return s;
}
