/*
 * secret.h: reading a secret (a password, a token) from a file, so that it
 * is in no argv, no environment and no config print.
 *
 * The file is checked as every secret of the daemon is (file_check.h,
 * FILE_CHECK_SECRET: a regular file, owned by the daemon's user or root, no
 * access for group or others). One trailing newline (or CRLF) is dropped;
 * a file that is empty after that, or larger than 4 KiB, is refused. (The
 * Tinybird token has its own reader in config.c, which also checks that
 * the token fits an HTTP header.) A systemd credential is read with check
 * 0: systemd sets its owner and mode (root, with an ACL for the unit's
 * user, which shows as group-readable), and only the unit can reach it.
 */
#ifndef BF_SECRET_H
#define BF_SECRET_H

#include <stddef.h>

/* Read the secret in path into *out (NUL-terminated, the caller frees it);
 * what names the file in messages ("Kafka password file"); check 0 skips
 * file_check (a systemd credential, above). Returns 0, or a negative errno
 * with a message naming the file in err (size n); *out is then NULL. */
int secret_read_file(const char *path, const char *what, int check, char **out,
                     char *err, size_t n);

#endif /* BF_SECRET_H */
