/*
 * file_check.h: whether a file or directory the daemon trusts is its own,
 * as ssh decides for keys and config files.
 *
 * The daemon reads secrets (the Tinybird token, the ip_hash key), a config
 * file that steers where the token is sent, and a spool whose records it
 * replays verbatim. Each must be out of other local users' reach: owned by
 * the daemon's user (or root, for files an administrator provisions), not
 * writable by others, and, for a secret, no access at all for group or
 * others. Group write on a file that is not a secret is logged
 * (file_group_writable), not refused: with a group per user (umask 002) it
 * is the norm. The check is made on an open descriptor (fstat), so the file
 * checked is the file then read.
 */
#ifndef BF_FILE_CHECK_H
#define BF_FILE_CHECK_H

#include <stddef.h>

enum file_check_flags {
    FILE_CHECK_DIR = 1,       /* a directory, not a regular file */
    FILE_CHECK_SECRET = 2,    /* no access at all for group and others */
    FILE_CHECK_OWN_ONLY = 4,  /* owned by this user; root is not enough */
};

/* Check the file open at fd (its name path, and what it is for the
 * message: "token file") against flags. Returns 0, or -EPERM (-EINVAL when
 * it is not the kind of file asked for, an errno of fstat otherwise) with a
 * message in err (size n) that names the file, its mode or owner, and the
 * fix. */
int file_check(int fd, const char *path, const char *what, unsigned flags, char *err,
               size_t n);

#endif /* BF_FILE_CHECK_H */
