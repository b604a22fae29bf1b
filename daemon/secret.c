/* secret.c: a secret from a file, checked by file_check. See secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_check.h"

#define SECRET_MAX 4096

int secret_read_file(const char *path, const char *what, int check, char **out,
                     char *err, size_t n)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "%s %s: %s", what, path, strerror(e));
        return -e;
    }
    struct stat st;
    int rc = check ? file_check(fd, path, what, FILE_CHECK_SECRET, err, n) : 0;
    if (rc == 0 && fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, n, "%s %s: %s", what, path, strerror(-rc));
    } else if (rc == 0 && st.st_size > SECRET_MAX) {
        rc = -EFBIG;
        snprintf(err, n, "%s %s: larger than %d bytes", what, path, SECRET_MAX);
    }
    char *buf = rc == 0 ? malloc(SECRET_MAX + 1) : NULL;
    if (rc == 0 && !buf) {
        rc = -ENOMEM;
        snprintf(err, n, "%s %s: out of memory", what, path);
    }
    size_t len = 0;
    while (rc == 0 && len < SECRET_MAX) {
        ssize_t r = read(fd, buf + len, SECRET_MAX - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, n, "%s %s: %s", what, path, strerror(-rc));
        }
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (rc == 0) {
        if (len && buf[len - 1] == '\n')
            len--;
        if (len && buf[len - 1] == '\r')
            len--;
        buf[len] = '\0';
        if (len == 0 || memchr(buf, '\0', len)) {
            rc = -EINVAL;
            snprintf(err, n, "%s %s: %s", what, path, len ? "holds a NUL byte" : "is empty");
        }
    }
    if (rc < 0) {
        if (buf)
            explicit_bzero(buf, SECRET_MAX + 1);
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}
