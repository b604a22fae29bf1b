/* file_check.c: is a file the daemon's own? See file_check.h. */
#include "file_check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int file_check(int fd, const char *path, const char *what, unsigned flags, char *err,
               size_t n)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        snprintf(err, n, "%s %s: %s", what, path, strerror(e));
        return -e;
    }
    int dir = (flags & FILE_CHECK_DIR) != 0;
    if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        snprintf(err, n, "%s %s: not a %s", what, path, dir ? "directory" : "regular file");
        return -EINVAL;
    }
    uid_t me = geteuid();
    if (st.st_uid != me && (st.st_uid != 0 || (flags & FILE_CHECK_OWN_ONLY))) {
        snprintf(err, n, "%s %s: owned by uid %u, not by this user (uid %u)%s", what,
                 path, (unsigned)st.st_uid, (unsigned)me,
                 flags & FILE_CHECK_OWN_ONLY ? "" : " or root");
        return -EPERM;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    int secret = (flags & FILE_CHECK_SECRET) != 0;
    if (mode & (secret ? 077u : 002u)) {
        snprintf(err, n, "%s %s: mode %04o lets %s %s it; chmod %s %s", what, path, mode,
                 secret ? "group or others" : "others", secret ? "read" : "write",
                 secret ? "go-rwx" : "o-w", path);
        return -EPERM;
    }
    /* Group write is common where every user has a group of their own
     * (umask 002): said, not refused. */
    if (mode & 020u)
        log_warn("file_group_writable", "what=\"%s\" path=%s mode=%04o hint=\"whoever "
                 "is in group %u may change it; chmod g-w it\"", what, path, mode,
                 (unsigned)st.st_gid);
    return 0;
}
