/* paths.c: state and runtime directories by context. See paths.h. */
#include "paths.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The first entry of a colon-separated systemd list ("a:b" when the unit
 * names several directories), or NULL when unset or empty. */
static int first_entry(const char *var, char *out, size_t n)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return 0;
    size_t len = strcspn(v, ":");
    if (len == 0 || len >= n)
        return 0;
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

/* An XDG variable counts only when absolute (the XDG base directory spec). */
static const char *xdg(const char *var)
{
    const char *v = getenv(var);
    return v && v[0] == '/' ? v : NULL;
}

/* out (PATHS_MAX) = a followed by b; -1 when it would not fit. */
static int join(char *out, const char *a, const char *b)
{
    int len = snprintf(out, PATHS_MAX, "%s%s", a, b);
    return len >= 0 && len < PATHS_MAX ? 0 : -1;
}

static const char *home(void)
{
    const char *h = getenv("HOME");
    if (h && h[0] == '/')
        return h;
    struct passwd *pw = getpwuid(geteuid());
    return pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
}

void paths_resolve(bf_paths *p, int as_root)
{
    const char *v;
    memset(p, 0, sizeof(*p));
    if (first_entry("STATE_DIRECTORY", p->state, sizeof(p->state))) {
        p->state_from = "STATE_DIRECTORY";
    } else if (as_root) {
        snprintf(p->state, sizeof(p->state), "/var/lib/birdfeeder");
        p->state_from = "root";
    } else if ((v = xdg("XDG_STATE_HOME")) && join(p->state, v, "/birdfeeder") == 0) {
        p->state_from = "XDG_STATE_HOME";
    } else if ((v = home()) && join(p->state, v, "/.local/state/birdfeeder") == 0) {
        p->state_from = "HOME";
    } else {
        p->state[0] = '\0';
        p->state_from = "none";
    }
    if (first_entry("RUNTIME_DIRECTORY", p->runtime, sizeof(p->runtime))) {
        p->runtime_from = "RUNTIME_DIRECTORY";
    } else if (as_root) {
        snprintf(p->runtime, sizeof(p->runtime), "/run/birdfeeder");
        p->runtime_from = "root";
    } else if ((v = xdg("XDG_RUNTIME_DIR")) && join(p->runtime, v, "/birdfeeder") == 0) {
        p->runtime_from = "XDG_RUNTIME_DIR";
    } else if (p->state[0] && join(p->runtime, p->state, "/run") == 0) {
        p->runtime_from = "state";
    } else {
        p->runtime[0] = '\0';
        p->runtime_from = "none";
    }
}

void paths_dirname(const char *path, char *out, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, n, ".");
        return;
    }
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    snprintf(out, n, "%.*s", (int)len, path);
}

int paths_make_dir(const char *dir, mode_t mode, char *err, size_t n)
{
    char buf[PATHS_MAX];
    if (!*dir || strlen(dir) >= sizeof(buf)) {
        snprintf(err, n, "directory '%s': %s", dir, *dir ? "path too long" : "empty path");
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", dir);
    /* Each parent in turn, then dir itself with its own mode. */
    for (char *p = buf + 1;; p++) {
        int last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(buf, last ? mode : 0755) < 0 && errno != EEXIST) {
            int e = errno;
            snprintf(err, n, "creating directory %s: %s", buf, strerror(e));
            return -e;
        }
        if (last)
            break;
        *p = '/';
    }
    struct stat st;
    if (stat(dir, &st) < 0) {
        int e = errno;
        snprintf(err, n, "directory %s: %s", dir, strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, n, "directory %s: %s", dir, strerror(ENOTDIR));
        return -ENOTDIR;
    }
    return 0;
}

int paths_check_dir(const char *what, const char *dir, int must_exist, char *err,
                    size_t n)
{
    char cur[PATHS_MAX];
    struct stat st;
    if (!*dir || strlen(dir) >= sizeof(cur)) {
        snprintf(err, n, "%s '%s': %s", what, dir, *dir ? "path too long" : "empty path");
        return -EINVAL;
    }
    snprintf(cur, sizeof(cur), "%s", dir);
    /* Walk up to the nearest directory that exists: dir itself must be
     * writable, an ancestor must let us create what is missing. */
    for (;;) {
        if (stat(cur, &st) == 0)
            break;
        int e = errno;
        if (e != ENOENT || must_exist) {
            snprintf(err, n, "%s %s: %s", what, cur, strerror(e));
            return -e;
        }
        char up[PATHS_MAX];
        paths_dirname(cur, up, sizeof(up));
        if (strcmp(up, cur) == 0) {
            snprintf(err, n, "%s %s: %s", what, dir, strerror(ENOENT));
            return -ENOENT;
        }
        snprintf(cur, sizeof(cur), "%s", up);
    }
    int is_dir = strcmp(cur, dir) == 0;
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, n, "%s %s: %s%s", what, dir, is_dir ? "" : cur,
                 is_dir ? "not a directory" : " is not a directory");
        return -ENOTDIR;
    }
    if (access(cur, W_OK | X_OK) < 0) {
        int e = errno;
        if (is_dir)
            snprintf(err, n, "%s %s: not writable: %s", what, dir, strerror(e));
        else
            snprintf(err, n, "%s %s: cannot be created: %s is not writable: %s", what,
                     dir, cur, strerror(e));
        return -e;
    }
    return 0;
}
