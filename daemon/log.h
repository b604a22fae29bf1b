/*
 * log.h: one line per event on stderr, for journald: key=value, with a level.
 *
 *   ts=2026-11-29T18:33:25.123Z level=warn event=reject reason=truncated ...
 *
 * Values with spaces, quotes or '=' are quoted. Repeated lines go through a
 * log_limit (one per call site) so a flood of bad datagrams costs a counter
 * bump, not a write(2): at most `burst` lines per second are printed, then the
 * next printed line carries suppressed=N. Secrets (the token) are never
 * passed to these functions.
 *
 * Two more shapes of the same line:
 *   - LOG_FORMAT_JSON (--log-format json, for log shippers): one JSON object
 *     per line, {"ts":...,"level":...,"event":...} and then every key=value
 *     field, each value a string (a field keeps one type whatever its
 *     value); bytes that are not UTF-8 become U+FFFD.
 *   - under systemd (log_set_priority_prefix, when log_stderr_is_journal),
 *     every line starts with its syslog priority as sd-daemon.h's SD_ERR
 *     ... SD_DEBUG prefixes do ("<3>" error, "<4>" warn, "<6>" info, "<7>"
 *     debug), which journald strips and stores as PRIORITY=, so
 *     `journalctl -p warning` shows warnings and errors only.
 */
#ifndef BF_LOG_H
#define BF_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

typedef struct log_limit {
    uint64_t window_ms; /* start of the current one-second window */
    unsigned printed;   /* lines printed in this window */
    uint64_t suppressed;
} log_limit;

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Lines below `level` are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);
/* Parse "debug", "info", "warn", "error"; returns -EINVAL when unknown. */
int log_level_parse(const char *s);

/* Parse "text", "json"; returns -EINVAL when unknown. Default
 * LOG_FORMAT_TEXT. */
int log_format_parse(const char *s);
void log_set_format(enum log_format format);

/* Hold the lines logged from now on (up to 8; more are written at once)
 * until log_release writes them: main holds while the configuration is
 * read, so the lines config_load logs come out in the format and with the
 * prefix that configuration sets. One thread only (at start). */
void log_hold(void);
void log_release(void);

/* Is stderr the journal's stream? systemd sets JOURNAL_STREAM to the
 * device and inode of the stream it connects to stderr (and stdout); a
 * stderr redirected elsewhere by the unit or a wrapper does not match. */
int log_stderr_is_journal(void);
/* Start every line with its syslog priority ("<4>"); default off. */
void log_set_priority_prefix(int on);

/* fmt is a printf format for the key=value pairs after event=NAME. */
void log_write(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As log_write, through limit: at most 5 lines per second per limit. */
void log_limited(log_limit *limit, enum log_level level, const char *event,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Write s as a log value into out (size n), quoting and escaping it when it
 * holds spaces, quotes, '=' or control bytes; at most max_in bytes of s.
 * Returns out. */
char *log_quote(char *out, unsigned n, const char *s, unsigned max_in);

#define log_debug(ev, ...) log_write(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_write(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_write(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_write(LOG_ERROR, ev, __VA_ARGS__)

#endif /* BF_LOG_H */
