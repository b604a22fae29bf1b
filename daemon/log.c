/* log.c: key=value lines on stderr. See log.h. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "hex.h"

#define LOG_BURST 5

static enum log_level min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) { min_level = level; }

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -EINVAL;
}

/* fmt is checked at log_write's and log_limited's callers. */
static void log_vwrite(enum log_level level, const char *event,
                       uint64_t suppressed, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void log_vwrite(enum log_level level, const char *event,
                       uint64_t suppressed, const char *fmt, va_list ap)
{
    char line[2048];
    uint64_t now = clock_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03uZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (unsigned)(now % 1000),
                     level_names[level], event);
    if (fmt && *fmt && n < (int)sizeof(line) - 1) {
        line[n++] = ' ';
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        n = m < 0 ? n : n + m;
    }
    if (n >= (int)sizeof(line) - 32)
        n = (int)sizeof(line) - 32; /* truncated: keep room for the tail */
    if (suppressed)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " suppressed=%llu",
                      (unsigned long long)suppressed);
    line[n++] = '\n';
    /* One write(2) per line so concurrent lines never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_write(enum log_level level, const char *event, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, event, 0, fmt, ap);
    va_end(ap);
}

void log_limited(log_limit *limit, enum log_level level, const char *event,
                 const char *fmt, ...)
{
    if (level < min_level)
        return;
    uint64_t now = clock_wall_ms();
    if (now - limit->window_ms >= 1000) {
        limit->window_ms = now;
        limit->printed = 0;
    }
    if (limit->printed >= LOG_BURST) {
        limit->suppressed++;
        return;
    }
    limit->printed++;
    uint64_t sup = limit->suppressed;
    limit->suppressed = 0;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, event, sup, fmt, ap);
    va_end(ap);
}

char *log_quote(char *out, unsigned n, const char *s, unsigned max_in)
{
    int plain = 1;
    unsigned len = 0;
    while (len < max_in && s[len])
        len++;
    for (unsigned i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            plain = 0;
    }
    if (n == 0)
        return out;
    unsigned o = 0;
    if (plain && len > 0) {
        for (unsigned i = 0; i < len && o + 1 < n; i++)
            out[o++] = s[i];
        out[o] = '\0';
        return out;
    }
    if (o + 1 < n)
        out[o++] = '"';
    for (unsigned i = 0; i < len && o + 6 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < ' ' || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            hex_byte(out + o, c);
            o += 2;
        } else {
            out[o++] = (char)c;
        }
    }
    if (o + 1 < n)
        out[o++] = '"';
    out[o < n ? o : n - 1] = '\0';
    return out;
}
