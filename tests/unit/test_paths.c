/*
 * test_paths.c: daemon/paths.c: the state and runtime directories by
 * context (systemd, root, XDG, HOME), mkdir -p with modes, and the checks
 * that change nothing.
 *
 * The variables paths.c reads are process-wide: each test starts and ends
 * with them unset (HOME is restored), so tests also pass with CK_FORK=no.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"
#include "testutil.h"

static const char *const vars[] = {"STATE_DIRECTORY", "RUNTIME_DIRECTORY",
                                   "XDG_STATE_HOME", "XDG_RUNTIME_DIR"};
static char tmpdir[64];
static char *saved_home;

static void paths_setup(void)
{
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    const char *h = getenv("HOME");
    saved_home = h ? strdup(h) : NULL;
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "paths");
}

static void paths_teardown(void)
{
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    if (saved_home)
        setenv("HOME", saved_home, 1);
    free(saved_home);
    tu_rmtree(tmpdir);
}

/* One row of paths.h's table: environment in, directories out. */
static const struct {
    int root;
    const char *state_dir, *runtime_dir, *xdg_state, *xdg_runtime, *home;
    const char *state, *state_from, *runtime, *runtime_from;
} cases[] = {
    /* systemd wins for root and others; the first of a list */
    {1, "/var/lib/birdfeeder", "/run/birdfeeder", NULL, NULL, "/root",
     "/var/lib/birdfeeder", "STATE_DIRECTORY", "/run/birdfeeder", "RUNTIME_DIRECTORY"},
    {0, "/srv/a:/srv/b", "/run/x:/run/y", "/x", "/r", "/h",
     "/srv/a", "STATE_DIRECTORY", "/run/x", "RUNTIME_DIRECTORY"},
    /* root outside systemd, whatever XDG says */
    {1, NULL, NULL, "/x", "/run/user/0", "/root",
     "/var/lib/birdfeeder", "root", "/run/birdfeeder", "root"},
    /* each directory on its own */
    {1, "/s", NULL, NULL, NULL, "/root", "/s", "STATE_DIRECTORY", "/run/birdfeeder", "root"},
    /* other users: XDG, then HOME; runtime under the state directory */
    {0, NULL, NULL, "/x", "/run/user/1000", "/h",
     "/x/birdfeeder", "XDG_STATE_HOME", "/run/user/1000/birdfeeder", "XDG_RUNTIME_DIR"},
    {0, NULL, NULL, NULL, NULL, "/home/u",
     "/home/u/.local/state/birdfeeder", "HOME",
     "/home/u/.local/state/birdfeeder/run", "state"},
    /* relative XDG values do not count (the spec), nor empty systemd ones */
    {0, "", "", "rel", "rel", "/h",
     "/h/.local/state/birdfeeder", "HOME", "/h/.local/state/birdfeeder/run", "state"},
};

START_TEST(test_paths_resolve)
{
    const char *vals[] = {cases[_i].state_dir, cases[_i].runtime_dir, cases[_i].xdg_state,
                          cases[_i].xdg_runtime};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (vals[i])
            setenv(vars[i], vals[i], 1);
    setenv("HOME", cases[_i].home, 1);
    bf_paths p;
    paths_resolve(&p, cases[_i].root);
    ck_assert_str_eq(p.state, cases[_i].state);
    ck_assert_str_eq(p.state_from, cases[_i].state_from);
    ck_assert_str_eq(p.runtime, cases[_i].runtime);
    ck_assert_str_eq(p.runtime_from, cases[_i].runtime_from);
}
END_TEST

/* A home that does not fit leaves "", never a cut path. */
START_TEST(test_paths_too_long)
{
    char home[PATHS_MAX];
    memset(home, 'h', sizeof(home) - 1);
    home[0] = '/';
    home[sizeof(home) - 1] = '\0';
    setenv("HOME", home, 1);
    setenv("XDG_STATE_HOME", home, 1);
    bf_paths p;
    paths_resolve(&p, 0);
    ck_assert_str_eq(p.state, "");
    ck_assert_str_eq(p.state_from, "none");
    ck_assert_str_eq(p.runtime, "");
    ck_assert_str_eq(p.runtime_from, "none");
}
END_TEST

START_TEST(test_paths_make_dir)
{
    char dir[160], err[512];
    mode_t old = umask(022);
    snprintf(dir, sizeof(dir), "%s/a/b/c", tmpdir);
    ck_assert_msg(paths_make_dir(dir, 0700, err, sizeof(err)) == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0700);
    char parent[160];
    snprintf(parent, sizeof(parent), "%s/a/b", tmpdir);
    ck_assert_int_eq(stat(parent, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0755);
    /* Again: nothing to do. A trailing slash is the same directory. */
    ck_assert_int_eq(paths_make_dir(dir, 0700, err, sizeof(err)), 0);
    strcat(dir, "/");
    ck_assert_int_eq(paths_make_dir(dir, 0700, err, sizeof(err)), 0);
    /* A file in the way is named. */
    char file[160], below[200];
    snprintf(file, sizeof(file), "%s/file", tmpdir);
    tu_write_file(file, "x", 1);
    snprintf(below, sizeof(below), "%s/d", file);
    ck_assert_int_eq(paths_make_dir(below, 0700, err, sizeof(err)), -ENOTDIR);
    ck_assert_msg(strstr(err, file) != NULL, "%s", err);
    ck_assert_int_eq(paths_make_dir(file, 0700, err, sizeof(err)), -ENOTDIR);
    ck_assert_int_eq(paths_make_dir("", 0700, err, sizeof(err)), -EINVAL);
    umask(old);
}
END_TEST

START_TEST(test_paths_check_dir)
{
    char dir[160], err[512];
    /* Exists and writable. */
    ck_assert_msg(paths_check_dir("spool directory", tmpdir, 1, err, sizeof(err)) == 0,
                  "%s", err);
    /* Missing under a writable directory: creatable, and not created. */
    snprintf(dir, sizeof(dir), "%s/x/y", tmpdir);
    ck_assert_msg(paths_check_dir("spool directory", dir, 0, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(access(dir, F_OK), -1);
    /* Missing where it must exist. */
    ck_assert_int_eq(paths_check_dir("stats socket directory", dir, 1, err, sizeof(err)),
                     -ENOENT);
    ck_assert_msg(strstr(err, "stats socket directory") && strstr(err, "No such file"),
                  "%s", err);
    /* Under a file. */
    char file[160];
    snprintf(file, sizeof(file), "%s/file", tmpdir);
    tu_write_file(file, "x", 1);
    snprintf(dir, sizeof(dir), "%s/file/z", tmpdir);
    ck_assert_int_eq(paths_check_dir("spool directory", dir, 0, err, sizeof(err)),
                     -ENOTDIR);
    ck_assert_msg(strstr(err, file) != NULL, "%s", err);
    ck_assert_int_eq(paths_check_dir("spool directory", file, 0, err, sizeof(err)),
                     -ENOTDIR);
    /* Not writable (root writes anywhere: then there is nothing to see). */
    if (geteuid() != 0) {
        char ro[160];
        snprintf(ro, sizeof(ro), "%s/ro", tmpdir);
        ck_assert_int_eq(mkdir(ro, 0555), 0);
        snprintf(dir, sizeof(dir), "%s/ro/spool", tmpdir);
        ck_assert_int_eq(paths_check_dir("spool directory", dir, 0, err, sizeof(err)),
                         -EACCES);
        ck_assert_msg(strstr(err, "cannot be created") && strstr(err, ro), "%s", err);
        ck_assert_int_eq(paths_check_dir("spool directory", ro, 0, err, sizeof(err)),
                         -EACCES);
        ck_assert_msg(strstr(err, "not writable"), "%s", err);
    }
}
END_TEST

START_TEST(test_paths_dirname)
{
    char out[64];
    paths_dirname("/var/lib/birdfeeder/ip-hash.key", out, sizeof(out));
    ck_assert_str_eq(out, "/var/lib/birdfeeder");
    paths_dirname("/key", out, sizeof(out));
    ck_assert_str_eq(out, "/");
    paths_dirname("key", out, sizeof(out));
    ck_assert_str_eq(out, ".");
    paths_dirname("run/stats.sock", out, sizeof(out));
    ck_assert_str_eq(out, "run");
}
END_TEST

Suite *paths_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("paths", paths_setup, paths_teardown, &tc);
    tcase_add_loop_test(tc, test_paths_resolve, 0, N(cases));
    tcase_add_test(tc, test_paths_too_long);
    tcase_add_test(tc, test_paths_make_dir);
    tcase_add_test(tc, test_paths_check_dir);
    tcase_add_test(tc, test_paths_dirname);
    return s;
}
