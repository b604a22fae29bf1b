/* log.c: key=value lines on stderr. See log.h. */
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bf_json.h"
#include "clock.h"
#include "hex.h"

#define LOG_BURST 5
#define LOG_LINE_MAX 2048 /* a text line, newline included */

/* Set on the loop thread, read by whichever thread logs (spool workers). */
static _Atomic int min_level = LOG_INFO;
static _Atomic int format = LOG_FORMAT_TEXT;
static _Atomic int priority_prefix;
static const char *const level_names[] = {"debug", "info", "warn", "error"};
/* syslog priorities, as sd-daemon.h's SD_DEBUG, SD_INFO, SD_WARNING, SD_ERR */
static const char *const level_prefixes[] = {"<7>", "<6>", "<4>", "<3>"};
static const char *const format_names[] = {"text", "json"};

#define LOAD(v) atomic_load_explicit(&(v), memory_order_relaxed)
#define STORE(v, x) atomic_store_explicit(&(v), (x), memory_order_relaxed)

void log_set_level(enum log_level level) { STORE(min_level, (int)level); }
void log_set_format(enum log_format f) { STORE(format, (int)f); }
void log_set_priority_prefix(int on) { STORE(priority_prefix, on != 0); }

static int name_index(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -EINVAL;
}

int log_level_parse(const char *s) { return name_index(s, level_names, 4); }
int log_format_parse(const char *s) { return name_index(s, format_names, 2); }

int log_stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char end;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu%c", &dev, &ino, &end) != 2 ||
        fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* A value as log_quote wrote it, from *p (past the '='): quoted with \"
 * \\ \xHH escapes, or bare up to a space. The bytes go to out (room for
 * strlen(*p)); *p moves past the value. Returns their length. */
static size_t logfmt_value(const char **p, char *out)
{
    const char *s = *p;
    size_t n = 0;
    if (*s != '"') {
        while (*s && *s != ' ')
            out[n++] = *s++;
        *p = s;
        return n;
    }
    for (s++; *s && *s != '"'; s++) {
        if (*s == '\\' && s[1] == 'x' && hex_value((unsigned char)s[2]) >= 0 && hex_value((unsigned char)s[3]) >= 0) {
            out[n++] = (char)(hex_value((unsigned char)s[2]) << 4 | hex_value((unsigned char)s[3]));
            s += 3;
        } else if (*s == '\\' && s[1]) {
            out[n++] = *++s;
        } else {
            out[n++] = *s;
        }
    }
    *p = *s ? s + 1 : s;
    return n;
}

/* The JSON form of a line: ts, level, event, then the key=value fields in
 * their order (what does not parse as fields ends up whole in "msg").
 * Returns the bytes written to out (size n), newline included, or 0 when
 * it cannot be made (out of memory), and the text line is written instead. */
static size_t json_line(char *out, size_t n, const char *ts, enum log_level level,
                        const char *event, const char *fields, uint64_t suppressed)
{
    char val[LOG_LINE_MAX];
    json_t *o = json_object();
    if (!o)
        return 0;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "event", bf_json_text(event, strlen(event)));
    for (const char *p = fields; *p;) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ' && *p != '"')
            p++;
        if (p == k || *p != '=') { /* not key=value: keep the rest whole */
            if (*k)
                json_object_set_new(o, "msg", bf_json_text(k, strlen(k)));
            break;
        }
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(p - k), k);
        p++;
        size_t vl = logfmt_value(&p, val);
        json_object_set_new(o, key, bf_json_text(val, vl));
    }
    if (suppressed) {
        snprintf(val, sizeof(val), "%llu", (unsigned long long)suppressed);
        json_object_set_new(o, "suppressed", json_string(val));
    }
    size_t len = json_dumpb(o, out, n - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (len == 0 || len > n - 1)
        return 0;
    out[len++] = '\n';
    return len;
}

/* One line, in the format and with the prefix set now. */
static void emit(enum log_level level, const char *event, uint64_t now, const char *fields,
                 uint64_t suppressed)
{
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(now % 1000));
    const char *pri = LOAD(priority_prefix) ? level_prefixes[level] : "";
    size_t pl = strlen(pri);

    /* JSON: every escape of a field may take 6 bytes. */
    char line[6 * LOG_LINE_MAX + 512];
    memcpy(line, pri, pl);
    size_t n = LOAD(format) == LOG_FORMAT_JSON
                   ? json_line(line + pl, sizeof(line) - pl, ts, level, event, fields,
                               suppressed)
                   : 0;
    if (n) {
        n += pl;
    } else {
        size_t max = pl + LOG_LINE_MAX;
        n = pl + (size_t)snprintf(line + pl, LOG_LINE_MAX, "ts=%s level=%s event=%s", ts,
                                  level_names[level], event);
        if (*fields && n < max - 1)
            n += (size_t)snprintf(line + n, max - n, " %s", fields);
        if (n >= max - 32)
            n = max - 32; /* truncated: keep room for the tail */
        if (suppressed)
            n += (size_t)snprintf(line + n, max - n, " suppressed=%llu",
                                  (unsigned long long)suppressed);
        line[n++] = '\n';
    }
    /* One write(2) per line so concurrent lines never interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

/* Lines logged while the configuration is read, before the format and the
 * prefix are known (log_hold): written by log_release. */
#define HELD_MAX 8
static struct held_line {
    enum log_level level;
    const char *event; /* a string literal at every call site */
    uint64_t ms, suppressed;
    char fields[LOG_LINE_MAX];
} held[HELD_MAX];
static unsigned nheld;
static int holding;

void log_hold(void)
{
    holding = 1;
}

void log_release(void)
{
    holding = 0;
    for (unsigned i = 0; i < nheld; i++)
        if ((int)held[i].level >= LOAD(min_level)) /* the level set meanwhile */
            emit(held[i].level, held[i].event, held[i].ms, held[i].fields,
                 held[i].suppressed);
    nheld = 0;
}

/* fmt is checked at log_write's and log_limited's callers. */
static void log_vwrite(enum log_level level, const char *event,
                       uint64_t suppressed, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void log_vwrite(enum log_level level, const char *event,
                       uint64_t suppressed, const char *fmt, va_list ap)
{
    char fields[LOG_LINE_MAX] = "";
    if (fmt && *fmt)
        vsnprintf(fields, sizeof(fields), fmt, ap);
    uint64_t now = clock_wall_ms();
    if (holding && nheld < HELD_MAX) {
        struct held_line *h = &held[nheld++];
        *h = (struct held_line){.level = level, .event = event, .ms = now,
                                .suppressed = suppressed};
        memcpy(h->fields, fields, sizeof(fields));
        return;
    }
    emit(level, event, now, fields, suppressed);
}

void log_write(enum log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < LOAD(min_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, event, 0, fmt, ap);
    va_end(ap);
}

void log_limited(log_limit *limit, enum log_level level, const char *event,
                 const char *fmt, ...)
{
    if ((int)level < LOAD(min_level))
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
