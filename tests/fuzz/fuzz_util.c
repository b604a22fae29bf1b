/* fuzz_util.c: helpers for the libFuzzer targets. See fuzz_util.h. */
#include "fuzz_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_decoder.h"
#include "log.h"

#ifndef BF_SRCDIR
#define BF_SRCDIR "."
#endif

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n%s:%d: FUZZ_CHECK(%s) failed: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static char tmpdir[PATH_MAX];

void fuzz_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void remove_tmpdir(void)
{
    if (!tmpdir[0])
        return;
    fuzz_empty_dir(tmpdir);
    rmdir(tmpdir);
}

const char *fuzz_tmpdir(void)
{
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/bf-fuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(remove_tmpdir);
    return tmpdir;
}

void fuzz_write_file(const char *path, const void *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const char *p = data;
    if (fd < 0) {
        perror(path);
        abort();
    }
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
}

const char *fuzz_src_path(const char *rel)
{
    static char path[PATH_MAX];
    const char *root = getenv("BF_FUZZ_SRCDIR");
    snprintf(path, sizeof(path), "%s/%s", root && *root ? root : BF_SRCDIR, rel);
    return path;
}

int fuzz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], want;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            want = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            want = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            want = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < want)
            return 0;
        for (unsigned k = 1; k < want; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        /* Shortest form only, no surrogates, nothing past U+10FFFF. */
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[want] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += want;
    }
    return 1;
}

bf_reason fuzz_decode_datagram(int slot, const uint8_t *buf, size_t len, bf_event *ev)
{
    static bf_decoder d[2];
    return bf_decode_datagram(&d[slot & 1], buf, len, ev, NULL);
}

void fuzz_check_same_event(const bf_event *a, const bf_event *b, const char *what)
{
    FUZZ_CHECK(a->dataset == b->dataset, "%s: dataset %u then %u", what, a->dataset,
               b->dataset);
    FUZZ_CHECK(a->present == b->present, "%s: fields %#llx then %#llx", what,
               (unsigned long long)a->present, (unsigned long long)b->present);
    for (unsigned tag = 1; tag < BF_F_MAX; tag++) {
        const bf_field_info *f = &bf_fields[tag];
        if (!f->name || !((a->present >> tag) & 1u))
            continue;
        const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
        if (f->type == BF_TYPE_STR) {
            const bf_str *sa = (const bf_str *)pa, *sb = (const bf_str *)pb;
            FUZZ_CHECK(sa->len == sb->len &&
                           (sa->len == 0 || memcmp(sa->ptr, sb->ptr, sa->len) == 0),
                       "%s: %s '%.*s' then '%.*s'", what, f->name, (int)sa->len,
                       sa->ptr ? sa->ptr : "", (int)sb->len, sb->ptr ? sb->ptr : "");
        } else {
            uint64_t va = *(const uint64_t *)pa, vb = *(const uint64_t *)pb;
            FUZZ_CHECK(va == vb, "%s: %s %llu then %llu", what, f->name,
                       (unsigned long long)va, (unsigned long long)vb);
        }
    }
}

void fuzz_quiet_log(void)
{
    log_set_level(LOG_ERROR);
}
