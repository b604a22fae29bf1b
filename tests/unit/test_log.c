/*
 * test_log.c: daemon/log.c: log_quote, levels, the line format, the JSON
 * format, the syslog priority prefix under journald, and the per-call-site
 * rate limit of log_limited.
 *
 * Lines go to fd 2 with one write(2) each; tests point fd 2 at a temporary
 * file with dup2 and read the lines back.
 */
#include <check.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "testutil.h"

/* ---- capturing stderr -------------------------------------------------- */

static FILE *cap_file;
static int cap_saved = -1;

static void capture_start(void)
{
    cap_file = tmpfile();
    ck_assert_ptr_nonnull(cap_file);
    cap_saved = dup(STDERR_FILENO);
    ck_assert_int_ge(cap_saved, 0);
    ck_assert_int_ge(dup2(fileno(cap_file), STDERR_FILENO), 0);
}

/* Stop capturing; returns what was written (static buffer). */
static const char *capture_end(void)
{
    static char buf[65536];
    dup2(cap_saved, STDERR_FILENO);
    close(cap_saved);
    cap_saved = -1;
    rewind(cap_file);
    size_t n = fread(buf, 1, sizeof(buf) - 1, cap_file);
    buf[n] = '\0';
    fclose(cap_file);
    cap_file = NULL;
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The k-th line (0-based) of s, without its newline (static buffer). */
static const char *line_at(const char *s, int k)
{
    static char line[16384];
    for (; k > 0 && s; k--) {
        s = strchr(s, '\n');
        if (s)
            s++;
    }
    ck_assert_ptr_nonnull(s);
    size_t n = strcspn(s, "\n");
    ck_assert_uint_lt(n, sizeof(line));
    memcpy(line, s, n);
    line[n] = '\0';
    return line;
}

static void log_setup(void)
{
    log_set_level(LOG_INFO);
}

static void log_teardown(void)
{
    if (cap_saved >= 0)
        capture_end();
    log_set_level(LOG_INFO);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_priority_prefix(0);
    unsetenv("JOURNAL_STREAM");
}

/* ---- log_quote --------------------------------------------------------- */

static const struct {
    const char *in;
    unsigned max_in, n;
    const char *want;
} quote_cases[] = {
    {"plain", 100, 64, "plain"},
    {"a.b-c_d/e:f", 100, 64, "a.b-c_d/e:f"},
    {"caf\xc3\xa9", 100, 64, "caf\xc3\xa9"},           /* UTF-8 is plain */
    {"", 100, 64, "\"\""},                             /* empty: quoted */
    {"a b", 100, 64, "\"a b\""},
    {"k=v", 100, 64, "\"k=v\""},
    {"say \"hi\"", 100, 64, "\"say \\\"hi\\\"\""},
    {"back\\slash", 100, 64, "\"back\\\\slash\""},
    {"tab\there", 100, 64, "\"tab\\x09here\""},
    {"nl\n", 100, 64, "\"nl\\x0a\""},
    {"cr\rlf", 100, 64, "\"cr\\x0dlf\""},
    {"\x01\x1f", 100, 64, "\"\\x01\\x1f\""},
    {"del\x7f", 100, 64, "\"del\\x7f\""},
    {"abcdef", 3, 64, "abc"},                          /* max_in */
    {"ab cd", 2, 64, "ab"},                            /* space past max_in */
    {"ab cd", 3, 64, "\"ab \""},
    {"abcdef", 100, 4, "abc"},                         /* n: plain, cut */
    {"abcdef", 100, 1, ""},
    {"a b c d e f", 100, 8, "\"a\""},                  /* quoted, cut, closed */
    {"a b", 100, 3, "\"\""},
    {"a b", 100, 2, "\""},
    {"a b", 100, 1, ""},
};

START_TEST(test_log_quote_table)
{
    char buf[80];
    unsigned n = quote_cases[_i].n;
    memset(buf, 0xAA, sizeof(buf));
    char *r = log_quote(buf, n, quote_cases[_i].in, quote_cases[_i].max_in);
    ck_assert_ptr_eq(r, buf);
    ck_assert_msg(strcmp(buf, quote_cases[_i].want) == 0, "case %d: got [%s], want [%s]",
                  _i, buf, quote_cases[_i].want);
    for (size_t k = n; k < sizeof(buf); k++) /* nothing past n */
        ck_assert_msg((unsigned char)buf[k] == 0xAA, "case %d: wrote byte %zu", _i, k);
}
END_TEST

/* Any input, any size: NUL-terminated within n, and a quoted value is
 * closed. */
START_TEST(test_log_quote_bounds)
{
    static const char *const ins[] = {"x", "a b c", "\"\"\"\"", "\x01\x02\x03\x04",
                                      "plain-but-long-enough-to-cut", "=", ""};
    for (size_t i = 0; i < sizeof(ins) / sizeof(ins[0]); i++)
        for (unsigned n = 1; n < 40; n++) {
            char buf[48];
            memset(buf, 0xAA, sizeof(buf));
            log_quote(buf, n, ins[i], 1000);
            void *nul = memchr(buf, '\0', n);
            ck_assert_msg(nul != NULL, "'%s' n=%u: no NUL", ins[i], n);
            for (size_t k = n; k < sizeof(buf); k++)
                ck_assert((unsigned char)buf[k] == 0xAA);
            size_t len = strlen(buf);
            if (buf[0] == '"' && len >= 2)
                ck_assert_msg(buf[len - 1] == '"', "'%s' n=%u: [%s] unclosed", ins[i],
                              n, buf);
        }
    /* n = 0 writes nothing. */
    char one = 'Z';
    ck_assert_ptr_eq(log_quote(&one, 0, "abc", 3), &one);
    ck_assert_int_eq(one, 'Z');
}
END_TEST

/* ---- levels and lines -------------------------------------------------- */

static const struct {
    const char *s;
    int want;
} level_cases[] = {
    {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN},
    {"error", LOG_ERROR}, {"WARN", -EINVAL},   {"warning", -EINVAL},
    {"", -EINVAL},        {"info ", -EINVAL}, {"err", -EINVAL},
};

START_TEST(test_log_level_parse)
{
    ck_assert_int_eq(log_level_parse(level_cases[_i].s), level_cases[_i].want);
}
END_TEST

START_TEST(test_log_line_format)
{
    regex_t re;
    capture_start();
    log_write(LOG_WARN, "test_event", "k=%s n=%d", "v", 42);
    log_write(LOG_INFO, "bare", NULL);
    log_error("macro", "x=1");
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 3);
    ck_assert_int_eq(regcomp(&re,
                             "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z level=warn event=test_event k=v n=42$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    ck_assert_msg(regexec(&re, line_at(out, 0), 0, NULL, 0) == 0, "line: %s",
                  line_at(out, 0));
    regfree(&re);
    ck_assert_msg(strstr(line_at(out, 1), " level=info event=bare") != NULL &&
                      strcmp(line_at(out, 1) + strlen(line_at(out, 1)) - 10,
                             "event=bare") == 0,
                  "line: %s", line_at(out, 1));
    ck_assert(strstr(line_at(out, 2), " level=error event=macro x=1") != NULL);
}
END_TEST

START_TEST(test_log_level_filter)
{
    capture_start();
    log_debug("d", "a=1");  /* below the default (info) */
    log_info("i", "a=2");
    log_set_level(LOG_WARN);
    log_info("i", "a=3");
    log_warn("w", "a=4");
    log_set_level(LOG_DEBUG);
    log_debug("d", "a=5");
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 3);
    ck_assert(strstr(line_at(out, 0), "event=i a=2") != NULL);
    ck_assert(strstr(line_at(out, 1), "event=w a=4") != NULL);
    ck_assert(strstr(line_at(out, 2), "level=debug event=d a=5") != NULL);
}
END_TEST

START_TEST(test_log_long_line_truncated)
{
    char *big = malloc(5001);
    ck_assert_ptr_nonnull(big);
    memset(big, 'v', 5000);
    big[5000] = '\0';
    log_limit lim = {0};
    capture_start();
    log_warn("long", "value=%s", big);
    lim.suppressed = 12345; /* as if many were suppressed before */
    log_limited(&lim, LOG_WARN, "long", "value=%s", big);
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 2);
    const char *l0 = line_at(out, 0);
    ck_assert_uint_le(strlen(l0) + 1, 2048);
    ck_assert(strncmp(l0, "ts=", 3) == 0);
    const char *l1 = line_at(out, 1);
    ck_assert_uint_le(strlen(l1) + 1, 2048);
    /* The tail survives truncation. */
    size_t n1 = strlen(l1);
    ck_assert_msg(n1 >= 17 && strcmp(l1 + n1 - 17, " suppressed=12345") == 0,
                  "line end: %s", l1 + (n1 > 40 ? n1 - 40 : 0));
    free(big);
}
END_TEST

/* ---- the JSON format ------------------------------------------------------ */

START_TEST(test_log_format_parse)
{
    ck_assert_int_eq(log_format_parse("text"), LOG_FORMAT_TEXT);
    ck_assert_int_eq(log_format_parse("json"), LOG_FORMAT_JSON);
    ck_assert_int_eq(log_format_parse("JSON"), -EINVAL);
    ck_assert_int_eq(log_format_parse("logfmt"), -EINVAL);
    ck_assert_int_eq(log_format_parse(""), -EINVAL);
}
END_TEST

/* Line k of out as a JSON object (the caller decrefs). */
static json_t *json_line_at(const char *out, int k)
{
    json_error_t e;
    const char *line = line_at(out, k);
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(json_is_object(o), "line %d is not a JSON object (%s): %s", k, e.text,
                  line);
    return o;
}

static const char *jget(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "key %s: not a string", key);
    return json_string_value(v);
}

/* ts, level, event first; then every field, in order, as strings;
 * quoted values unescaped; bytes that are not UTF-8 as U+FFFD. */
START_TEST(test_log_json_line)
{
    char q[128];
    log_set_format(LOG_FORMAT_JSON);
    log_limit lim = {.suppressed = 7};
    capture_start();
    log_warn("reject", "reason=%s bytes=%d detail=%s", "truncated", 12,
             log_quote(q, sizeof(q), "a \"b\"\tc=\\ \xff\xc3\xa9", 100));
    log_limited(&lim, LOG_ERROR, "send_rejected", "status=403");
    log_info("bare", NULL);
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 3);

    json_t *o = json_line_at(out, 0);
    const char *want_keys[] = {"ts", "level", "event", "reason", "bytes", "detail"};
    const char *key;
    json_t *v;
    size_t i = 0;
    json_object_foreach(o, key, v) {
        ck_assert_uint_lt(i, N(want_keys));
        ck_assert_str_eq(key, want_keys[i++]);
    }
    ck_assert_uint_eq(i, N(want_keys));
    regex_t re;
    ck_assert_int_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                  "\\.[0-9]{3}Z$", REG_EXTENDED | REG_NOSUB), 0);
    ck_assert_msg(regexec(&re, jget(o, "ts"), 0, NULL, 0) == 0, "ts %s", jget(o, "ts"));
    regfree(&re);
    ck_assert_str_eq(jget(o, "level"), "warn");
    ck_assert_str_eq(jget(o, "event"), "reject");
    ck_assert_str_eq(jget(o, "reason"), "truncated");
    ck_assert_str_eq(jget(o, "bytes"), "12");
    ck_assert_str_eq(jget(o, "detail"), "a \"b\"\tc=\\ \xef\xbf\xbd\xc3\xa9");
    json_decref(o);

    o = json_line_at(out, 1);
    ck_assert_str_eq(jget(o, "level"), "error");
    ck_assert_str_eq(jget(o, "status"), "403");
    ck_assert_str_eq(jget(o, "suppressed"), "7");
    json_decref(o);

    o = json_line_at(out, 2);
    ck_assert_uint_eq(json_object_size(o), 3);
    ck_assert_str_eq(jget(o, "event"), "bare");
    json_decref(o);
}
END_TEST

/* Whatever a call site formats, the line is one valid JSON object: text
 * that is not key=value is kept whole in "msg", and a field as long as the
 * text line allows, all control bytes, still fits. */
START_TEST(test_log_json_any_text)
{
    char *big = malloc(3000);
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < 2999; i++)
        big[i] = (char)(1 + i % 31);
    big[2999] = '\0';
    log_set_format(LOG_FORMAT_JSON);
    capture_start();
    log_warn("odd", "k=v then words =x \"unclosed");
    log_warn("odd", "k=\"unclosed value");
    log_warn("odd", "raw=%s", big);
    log_warn("odd", "k=\"\\x4");
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 4);
    json_t *o = json_line_at(out, 0);
    ck_assert_str_eq(jget(o, "k"), "v");
    ck_assert_str_eq(jget(o, "msg"), "then words =x \"unclosed");
    json_decref(o);
    o = json_line_at(out, 1);
    ck_assert_str_eq(jget(o, "k"), "unclosed value");
    json_decref(o);
    o = json_line_at(out, 2);
    ck_assert_uint_gt(strlen(jget(o, "raw")), 1900); /* cut as the text line is */
    json_decref(o);
    o = json_line_at(out, 3);
    ck_assert_str_eq(jget(o, "k"), "x4");
    json_decref(o);
    free(big);
}
END_TEST

/* ---- the priority prefix (journald) ---------------------------------------- */

START_TEST(test_log_priority_prefix)
{
    log_set_level(LOG_DEBUG);
    log_set_priority_prefix(1);
    capture_start();
    log_debug("d", "a=1");
    log_info("i", "a=2");
    log_warn("w", "a=3");
    log_error("e", "a=4");
    log_set_format(LOG_FORMAT_JSON);
    log_warn("wj", "a=5");
    log_set_priority_prefix(0);
    log_warn("plain", "a=6");
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 6);
    static const char *const want[] = {"<7>ts=", "<6>ts=", "<4>ts=", "<3>ts=",
                                       "<4>{\"ts\":", "{\"ts\":"};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(strncmp(line_at(out, i), want[i], strlen(want[i])) == 0,
                      "line %d: %s", i, line_at(out, i));
}
END_TEST

/* JOURNAL_STREAM must name stderr itself (device:inode), as systemd sets
 * it; anything else is not the journal. */
START_TEST(test_log_stderr_is_journal)
{
    char v[64];
    struct stat st;
    capture_start();
    ck_assert_int_eq(fstat(STDERR_FILENO, &st), 0);
    unsetenv("JOURNAL_STREAM");
    int unset = log_stderr_is_journal();
    snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    int same = log_stderr_is_journal();
    snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", v, 1);
    int other = log_stderr_is_journal();
    snprintf(v, sizeof(v), "%llu:%llux", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    int junk = log_stderr_is_journal();
    setenv("JOURNAL_STREAM", "", 1);
    int empty = log_stderr_is_journal();
    capture_end();
    ck_assert_int_eq(unset, 0);
    ck_assert_int_eq(same, 1);
    ck_assert_int_eq(other, 0);
    ck_assert_int_eq(junk, 0);
    ck_assert_int_eq(empty, 0);
}
END_TEST

/* ---- held lines (while the configuration is read) ------------------------ */

/* Held lines come out at log_release in the format, the prefix and the
 * level set meanwhile, in order; past 8 a line is written at once rather
 * than lost. */
START_TEST(test_log_hold_release)
{
    capture_start();
    log_hold();
    log_info("early", "n=1");
    log_warn("early", "n=2");
    const char *none = capture_end();
    ck_assert_int_eq(count_lines(none), 0);
    capture_start();
    log_set_format(LOG_FORMAT_JSON);
    log_set_priority_prefix(1);
    log_set_level(LOG_WARN);
    log_release();
    log_warn("after", "n=3");
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 2); /* the info line is below warn now */
    ck_assert_msg(strncmp(line_at(out, 0), "<4>{\"ts\":", 9) == 0, "%s", line_at(out, 0));
    ck_assert(strstr(line_at(out, 0), "\"event\":\"early\",\"n\":\"2\"") != NULL);
    ck_assert(strstr(line_at(out, 1), "\"event\":\"after\"") != NULL);

    log_set_format(LOG_FORMAT_TEXT);
    log_set_priority_prefix(0);
    log_set_level(LOG_INFO);
    capture_start();
    log_hold();
    for (int i = 0; i < 10; i++)
        log_info("many", "i=%d", i);
    const char *over = capture_end();
    ck_assert_int_eq(count_lines(over), 2); /* 8 held, 2 written */
    capture_start();
    log_release();
    out = capture_end();
    ck_assert_int_eq(count_lines(out), 8);
    ck_assert(strstr(line_at(out, 7), "event=many i=7") != NULL);
}
END_TEST

/* ---- log_limited --------------------------------------------------------- */

START_TEST(test_log_limited_burst_then_suppressed)
{
    log_limit lim = {0};
    capture_start();
    for (int i = 0; i < 8; i++)
        log_limited(&lim, LOG_WARN, "flood", "i=%d", i);
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 5);
    for (int i = 0; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof(want), "event=flood i=%d", i);
        ck_assert_msg(strstr(line_at(out, i), want) != NULL, "line %d: %s", i,
                      line_at(out, i));
        ck_assert(strstr(line_at(out, i), "suppressed") == NULL);
    }
    ck_assert_uint_eq(lim.printed, 5);
    ck_assert_uint_eq(lim.suppressed, 3);

    /* A second later (moved back rather than slept): the next line carries
     * the count, which then starts again from zero. */
    lim.window_ms -= 1000;
    capture_start();
    log_limited(&lim, LOG_WARN, "flood", "i=%d", 8);
    log_limited(&lim, LOG_WARN, "flood", "i=%d", 9);
    out = capture_end();
    ck_assert_int_eq(count_lines(out), 2);
    ck_assert_msg(strstr(line_at(out, 0), "event=flood i=8 suppressed=3") != NULL,
                  "line: %s", line_at(out, 0));
    ck_assert(strstr(line_at(out, 1), "suppressed") == NULL);
    ck_assert_uint_eq(lim.suppressed, 0);
    ck_assert_uint_eq(lim.printed, 2);
}
END_TEST

START_TEST(test_log_limited_per_site)
{
    log_limit a = {0}, b = {0};
    capture_start();
    for (int i = 0; i < 7; i++) {
        log_limited(&a, LOG_WARN, "a", NULL);
        log_limited(&b, LOG_WARN, "b", NULL);
    }
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 10); /* 5 each */
    ck_assert_uint_eq(a.suppressed, 2);
    ck_assert_uint_eq(b.suppressed, 2);
}
END_TEST

START_TEST(test_log_limited_below_level_not_counted)
{
    log_limit lim = {0};
    capture_start();
    for (int i = 0; i < 10; i++)
        log_limited(&lim, LOG_DEBUG, "quiet", NULL);
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 0);
    ck_assert_uint_eq(lim.suppressed, 0);
    ck_assert_uint_eq(lim.printed, 0);
}
END_TEST

/* The real clock: after a second the burst is allowed again. */
START_TEST(test_log_limited_window_real_time)
{
    log_limit lim = {0};
    capture_start();
    for (int i = 0; i < 6; i++)
        log_limited(&lim, LOG_WARN, "tick", NULL);
    usleep(1050 * 1000);
    log_limited(&lim, LOG_WARN, "tick", NULL);
    const char *out = capture_end();
    ck_assert_int_eq(count_lines(out), 6);
    ck_assert(strstr(line_at(out, 5), "event=tick suppressed=1") != NULL);
}
END_TEST

Suite *log_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("log", log_setup, log_teardown, &tc);
    tcase_add_loop_test(tc, test_log_quote_table, 0, N(quote_cases));
    tcase_add_test(tc, test_log_quote_bounds);
    tcase_add_loop_test(tc, test_log_level_parse, 0, N(level_cases));
    tcase_add_test(tc, test_log_line_format);
    tcase_add_test(tc, test_log_level_filter);
    tcase_add_test(tc, test_log_long_line_truncated);
    tcase_add_test(tc, test_log_format_parse);
    tcase_add_test(tc, test_log_json_line);
    tcase_add_test(tc, test_log_json_any_text);
    tcase_add_test(tc, test_log_priority_prefix);
    tcase_add_test(tc, test_log_stderr_is_journal);
    tcase_add_test(tc, test_log_hold_release);
    tcase_add_test(tc, test_log_limited_burst_then_suppressed);
    tcase_add_test(tc, test_log_limited_per_site);
    tcase_add_test(tc, test_log_limited_below_level_not_counted);
    tcase_add_test(tc, test_log_limited_window_real_time);
    return s;
}
