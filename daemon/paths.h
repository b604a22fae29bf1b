/*
 * paths.h: where birdfeederd keeps its files when no flag says, by the
 * context it runs in, and the checks that tell whether it can.
 *
 *                state directory              runtime directory
 *   systemd      $STATE_DIRECTORY             $RUNTIME_DIRECTORY
 *   root         /var/lib/birdfeeder          /run/birdfeeder
 *   other users  $XDG_STATE_HOME/birdfeeder   $XDG_RUNTIME_DIR/birdfeeder
 *                (~/.local/state/birdfeeder)  (else <state>/run)
 *
 * Each directory is chosen on its own (a unit with StateDirectory= only
 * still gets /run/birdfeeder as root). The state directory holds the spool
 * and the ip_hash key, the runtime directory the stats socket. Explicit
 * flags (--spool-dir, --ip-hash-key-file, --stats-socket) always win, and
 * the directories named by flags are never created here.
 */
#ifndef BF_PATHS_H
#define BF_PATHS_H

#include <stddef.h>
#include <sys/types.h>

#define PATHS_MAX 1024

typedef struct bf_paths {
    char state[PATHS_MAX];   /* "" when no home can be found */
    char runtime[PATHS_MAX]; /* "" when state is "" and no runtime is set */
    /* What each was taken from, for the start log: "STATE_DIRECTORY",
     * "root", "XDG_STATE_HOME", "HOME", "RUNTIME_DIRECTORY",
     * "XDG_RUNTIME_DIR", "state", or "none". Static strings. */
    const char *state_from, *runtime_from;
} bf_paths;

/* Fill p from the environment as the table above says; as_root picks the
 * root row when no systemd variable is set (the caller passes
 * geteuid() == 0; tests pass either). Never fails: what cannot be found is
 * "" (state_from "none"), and using it is an error the caller names. */
void paths_resolve(bf_paths *p, int as_root);

/* Create dir and its missing parents (mkdir -p): the parents with mode
 * 0755, dir itself with mode (both under the umask). An existing directory
 * is left as it is. Returns 0, or a negative errno with a message naming
 * the directory that could not be made in err (size n). */
int paths_make_dir(const char *dir, mode_t mode, char *err, size_t n);

/* Would the daemon be able to use dir: it is a directory we can write
 * into, or it does not exist and paths_make_dir could create it (the
 * nearest existing ancestor is a directory we can write into), or, when
 * must_exist, it exists. Changes nothing. Returns 0, or a negative errno
 * with the reason in err (size n), naming what (e.g. "spool directory"). */
int paths_check_dir(const char *what, const char *dir, int must_exist, char *err,
                    size_t n);

/* The directory part of path into out (size n): "." for a bare name. */
void paths_dirname(const char *path, char *out, size_t n);

#endif /* BF_PATHS_H */
