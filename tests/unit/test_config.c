/*
 * test_config.c: daemon/config.c: defaults, the three sources and their
 * precedence (flag > environment > file > default), size suffixes, bounds,
 * and every kind of error naming what is wrong.
 *
 * The environment is process-wide: every test starts and ends with no
 * BIRDFEEDER_* or TINYBIRD_* variable set, so tests also pass with
 * CK_FORK=no. Config files go to a temporary directory.
 */
#include <check.h>
#include <grp.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "testutil.h"

extern char **environ;

/* As in config.c, unless the build sets it (make install may). */
#ifndef BF_DATADIR
#define BF_DATADIR "/usr/local/share/birdfeeder"
#endif

static char tmpdir[64];
static char file_path[128];

static void clear_env(void)
{
    char *names[256];
    int n = 0;
    for (char **e = environ; *e && n < 256; e++)
        if (strncmp(*e, "BIRDFEEDER_", 11) == 0 || strncmp(*e, "TINYBIRD_", 9) == 0)
            names[n++] = strndup(*e, strcspn(*e, "="));
    for (int i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    /* The context's directories (paths.h): systemd's, so the defaults are
     * the same whoever runs the tests. */
    setenv("STATE_DIRECTORY", "/srv/bf-state", 1);
    setenv("RUNTIME_DIRECTORY", "/srv/bf-run", 1);
}

static void config_setup(void)
{
    clear_env();
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "config");
    snprintf(file_path, sizeof(file_path), "%s/birdfeeder.json", tmpdir);
}

static void config_teardown(void)
{
    clear_env();
    tu_rmtree(tmpdir);
}

/* Mode 0600: a config file holding a token must be private. */
static void write_config(const char *text)
{
    tu_write_private(file_path, text, strlen(text));
}

/* A private file under tmpdir named name holding text; its path in out. */
static void write_secret(char *out, size_t n, const char *name, const char *text)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
    tu_write_private(out, text, strlen(text));
}

/* config_load with argv = birdfeederd followed by the NULL-terminated
 * arguments. err gets the message. */
static enum config_result load(bf_config *cfg, char *err, size_t n, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = strdup("birdfeederd");
    va_start(ap, n);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        ck_assert_int_lt(argc, 31);
        argv[argc++] = strdup(a);
    }
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    enum config_result r = config_load(cfg, argc, argv, err, n);
    for (int i = 0; i < argc; i++) /* getopt permutes, never replaces */
        free(argv[i]);
    return r;
}

#define LOAD_OK(cfg, err, ...)                                                 \
    do {                                                                       \
        enum config_result r_ = load(cfg, err, sizeof(err), __VA_ARGS__);      \
        ck_assert_msg(r_ == CONFIG_OK, "config_load: %d: %s", r_, err);        \
    } while (0)

/* Expect CONFIG_ERROR with both needles in the message. */
static void must_fail(const char *n1, const char *n2, ...)
{
    bf_config cfg;
    char err[512];
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = strdup("birdfeederd");
    va_start(ap, n2);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = strdup(a);
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    enum config_result r = config_load(&cfg, argc, argv, err, sizeof(err));
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    config_free(&cfg);
    ck_assert_msg(r == CONFIG_ERROR, "expected an error naming '%s', got %d", n1, r);
    ck_assert_msg(strstr(err, n1) != NULL, "'%s' lacks '%s'", err, n1);
    if (n2)
        ck_assert_msg(strstr(err, n2) != NULL, "'%s' lacks '%s'", err, n2);
}

START_TEST(test_config_defaults)
{
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:8190");
    ck_assert_str_eq(cfg.tinybird_url, "https://api.tinybird.co");
    ck_assert_ptr_null(cfg.token);
    /* The installed catalog when there is one, else the built-in one. */
    if (access(BF_DATADIR "/catalog.json", F_OK) == 0)
        ck_assert_str_eq(cfg.catalog, BF_DATADIR "/catalog.json");
    else
        ck_assert_ptr_null(cfg.catalog);
    ck_assert_str_eq(cfg.out, "-");
    ck_assert_str_eq(cfg.ip_hash_key_file, "/srv/bf-state/ip-hash.key");
    ck_assert_str_eq(cfg.stats_socket, "/srv/bf-run/stats.sock");
    ck_assert_str_eq(cfg.spool_dir, "/srv/bf-state/spool");
    ck_assert_str_eq(cfg.state_dir, "/srv/bf-state");
    ck_assert_str_eq(cfg.state_from, "STATE_DIRECTORY");
    ck_assert_str_eq(cfg.runtime_dir, "/srv/bf-run");
    ck_assert_str_eq(cfg.runtime_from, "RUNTIME_DIRECTORY");
    ck_assert_int_eq(config_source(&cfg, "spool-dir"), CONFIG_SRC_DEFAULT);
    ck_assert_str_eq(cfg.log_level, "info");
    ck_assert_ptr_null(cfg.config_file);
    ck_assert_uint_eq(cfg.flush_bytes, 4194304);
    ck_assert_uint_eq(cfg.flush_interval_ms, 1000);
    ck_assert_uint_eq(cfg.max_flush_interval_ms, 10000);
    ck_assert_str_eq(cfg.pacing, "on");
    ck_assert_uint_eq(cfg.stats_interval_ms, 1000);
    ck_assert_uint_eq(cfg.max_datagram, 8192);
    ck_assert_uint_eq(cfg.rcvbuf_bytes, 16777216);
    ck_assert_uint_eq(cfg.http_timeout_ms, 10000);
    ck_assert_uint_eq(cfg.max_inflight, 4);
    ck_assert_uint_eq(cfg.shutdown_timeout_ms, 5000);
    ck_assert_uint_eq(cfg.max_memory, 67108864);
    ck_assert_uint_eq(cfg.max_spool_bytes, 1073741824);
    ck_assert_uint_eq(cfg.spool_segment_bytes, 16777216);
    ck_assert_uint_eq(cfg.max_dead_letter_bytes, 67108864);
    ck_assert_uint_eq(cfg.backoff_min_ms, 500);
    ck_assert_uint_eq(cfg.backoff_max_ms, 60000);
    ck_assert_uint_eq(cfg.max_event_age_ms, 7 * 86400000ull);
    ck_assert_uint_eq(cfg.max_event_skew_ms, 5 * 60000ull);
    ck_assert_int_eq(cfg.check_only, 0);
    config_free(&cfg);
    ck_assert_ptr_null(cfg.listen);
    config_free(&cfg); /* twice is harmless */
}
END_TEST

/* flush-bytes from each source: the flag beats the environment beats the
 * file beats the default. */
static const struct {
    const char *file, *env, *flag;
    uint64_t want;
} precedence[] = {
    {NULL, NULL, NULL, 4194304},
    {"1MiB", NULL, NULL, 1048576},
    {NULL, "2MiB", NULL, 2097152},
    {NULL, NULL, "3MiB", 3145728},
    {"1MiB", "2MiB", NULL, 2097152},
    {"1MiB", NULL, "3MiB", 3145728},
    {NULL, "2MiB", "3MiB", 3145728},
    {"1MiB", "2MiB", "3MiB", 3145728},
    {"1MiB", "", NULL, 1048576},   /* an empty variable is unset */
};

START_TEST(test_config_precedence)
{
    bf_config cfg;
    char err[512], text[128], flag[64];
    const char *file = precedence[_i].file, *env = precedence[_i].env,
               *fl = precedence[_i].flag;
    if (file) {
        snprintf(text, sizeof(text), "{\"flush-bytes\": \"%s\"}", file);
        write_config(text);
    }
    if (env)
        setenv("BIRDFEEDER_FLUSH_BYTES", env, 1);
    snprintf(flag, sizeof(flag), "--flush-bytes=%s", fl ? fl : "");
    if (file && fl)
        LOAD_OK(&cfg, err, "--config", file_path, flag, NULL);
    else if (file)
        LOAD_OK(&cfg, err, "--config", file_path, NULL);
    else if (fl)
        LOAD_OK(&cfg, err, flag, NULL);
    else
        LOAD_OK(&cfg, err, NULL);
    ck_assert_msg(cfg.flush_bytes == precedence[_i].want, "case %d: %llu", _i,
                  (unsigned long long)cfg.flush_bytes);
    if (file)
        ck_assert_str_eq(cfg.config_file, file_path);
    config_free(&cfg);
}
END_TEST

/* The token: --token, BIRDFEEDER_TOKEN, TINYBIRD_API_KEY, TINYBIRD_TOKEN. */
static const struct {
    const char *flag, *bf, *api_key, *tb_token;
    const char *want; /* NULL: no token */
} tokens[] = {
    {NULL, NULL, NULL, NULL, NULL},
    {NULL, NULL, NULL, "t-token", "t-token"},
    {NULL, NULL, "t-key", NULL, "t-key"},
    {NULL, NULL, "t-key", "t-token", "t-key"},
    {NULL, NULL, "", "t-token", "t-token"},
    {NULL, "t-bf", "t-key", "t-token", "t-bf"},
    {"t-flag", "t-bf", "t-key", "t-token", "t-flag"},
    {"", NULL, "t-key", NULL, NULL},   /* an empty flag value: no token */
};

START_TEST(test_config_token_sources)
{
    bf_config cfg;
    char err[512], flag[64];
    if (tokens[_i].bf)
        setenv("BIRDFEEDER_TOKEN", tokens[_i].bf, 1);
    if (tokens[_i].api_key)
        setenv("TINYBIRD_API_KEY", tokens[_i].api_key, 1);
    if (tokens[_i].tb_token)
        setenv("TINYBIRD_TOKEN", tokens[_i].tb_token, 1);
    if (tokens[_i].flag) {
        snprintf(flag, sizeof(flag), "--token=%s", tokens[_i].flag);
        LOAD_OK(&cfg, err, flag, NULL);
    } else {
        LOAD_OK(&cfg, err, NULL);
    }
    if (tokens[_i].want)
        ck_assert_msg(cfg.token && strcmp(cfg.token, tokens[_i].want) == 0,
                      "case %d: token %s", _i, cfg.token ? cfg.token : "(null)");
    else
        ck_assert_msg(cfg.token == NULL, "case %d: token %s", _i, cfg.token);
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_tinybird_url_sources)
{
    bf_config cfg;
    char err[512];
    setenv("TINYBIRD_URL", "https://api.eu.tinybird.co", 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.tinybird_url, "https://api.eu.tinybird.co");
    config_free(&cfg);
    setenv("TINYBIRD_API_URL", "https://api.us-east.tinybird.co//", 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.tinybird_url, "https://api.us-east.tinybird.co");
    config_free(&cfg);
    setenv("BIRDFEEDER_TINYBIRD_URL", "http://localhost:8001/", 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.tinybird_url, "http://localhost:8001");
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_file_keys)
{
    bf_config cfg;
    char err[512];
    write_config("{\n"
                 "  \"listen\": \"127.0.0.1:9999\",\n"
                 "  \"flush_interval_ms\": 250,\n"
                 "  \"flush-interval-ms\": 300,\n"
                 "  \"max-datagram\": \"16KiB\",\n"
                 "  \"max_inflight\": 8,\n"
                 "  \"stats_socket\": \"\",\n"
                 "  \"ip_hash_key_file\": \"/tmp/k\",\n"
                 "  \"log-level\": \"debug\",\n"
                 "  \"token\": \"from-file\"\n"
                 "}\n");
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:9999");
    /* Both spellings name one option; the later key wins. */
    ck_assert_uint_eq(cfg.flush_interval_ms, 300);
    ck_assert_uint_eq(cfg.max_datagram, 16384);
    ck_assert_uint_eq(cfg.max_inflight, 8);
    ck_assert_str_eq(cfg.stats_socket, "");
    ck_assert_str_eq(cfg.ip_hash_key_file, "/tmp/k");
    ck_assert_str_eq(cfg.log_level, "debug");
    ck_assert_str_eq(cfg.token, "from-file");
    ck_assert_str_eq(cfg.config_file, file_path);
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_file_from_env)
{
    bf_config cfg;
    char err[512], other[160];
    write_config("{\"max_inflight\": 9}");
    setenv("BIRDFEEDER_CONFIG", file_path, 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_uint_eq(cfg.max_inflight, 9);
    ck_assert_str_eq(cfg.config_file, file_path);
    config_free(&cfg);
    /* --config beats BIRDFEEDER_CONFIG. */
    snprintf(other, sizeof(other), "%s/other.json", tmpdir);
    FILE *f = fopen(other, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"max_inflight\": 10}", f);
    fclose(f);
    LOAD_OK(&cfg, err, "--config", other, NULL);
    ck_assert_uint_eq(cfg.max_inflight, 10);
    ck_assert_str_eq(cfg.config_file, other);
    config_free(&cfg);
}
END_TEST

/* Paths chosen by context never override a source that set them, and
 * each option remembers its source. */
START_TEST(test_config_sources_and_context_paths)
{
    bf_config cfg;
    char err[512];
    write_config("{\"spool_dir\": \"/f/spool\", \"token\": \"tf\"}");
    setenv("BIRDFEEDER_STATS_SOCKET", "/e/stats.sock", 1);
    LOAD_OK(&cfg, err, "--config", file_path, "--ip-hash-key-file", "/g/key",
            "--catalog", "/c.json", NULL);
    ck_assert_str_eq(cfg.spool_dir, "/f/spool");
    ck_assert_str_eq(cfg.stats_socket, "/e/stats.sock");
    ck_assert_str_eq(cfg.ip_hash_key_file, "/g/key");
    ck_assert_str_eq(cfg.catalog, "/c.json");
    ck_assert_int_eq(config_source(&cfg, "spool-dir"), CONFIG_SRC_FILE);
    ck_assert_int_eq(config_source(&cfg, "token"), CONFIG_SRC_FILE);
    ck_assert_int_eq(config_source(&cfg, "stats-socket"), CONFIG_SRC_ENV);
    ck_assert_int_eq(config_source(&cfg, "ip-hash-key-file"), CONFIG_SRC_FLAG);
    ck_assert_int_eq(config_source(&cfg, "stats_socket"), CONFIG_SRC_ENV);
    ck_assert_int_eq(config_source(&cfg, "listen"), CONFIG_SRC_DEFAULT);
    ck_assert_int_eq(config_source(&cfg, "no-such-option"), CONFIG_SRC_DEFAULT);
    ck_assert_str_eq(config_source_name(CONFIG_SRC_ENV), "environment");
    ck_assert_str_eq(config_source_name(CONFIG_SRC_FILE), "file");
    config_free(&cfg);
    /* The token from the environment (TINYBIRD_API_KEY) beats the file. */
    setenv("TINYBIRD_API_KEY", "te", 1);
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_str_eq(cfg.token, "te");
    ck_assert_int_eq(config_source(&cfg, "token"), CONFIG_SRC_ENV);
    config_free(&cfg);
    /* No context at all (no systemd, HOME unusable, not root) only fails
     * when a path is left to it. */
    if (geteuid() != 0) {
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
        char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        setenv("HOME", "relative", 1);
        unsetenv("XDG_STATE_HOME");
        unsetenv("XDG_RUNTIME_DIR");
        /* getpwuid's home may still be found: then it is used. */
        enum config_result r = load(&cfg, err, sizeof(err), NULL);
        ck_assert(r == CONFIG_OK || strstr(err, "no state directory"));
        config_free(&cfg);
        if (home)
            setenv("HOME", home, 1);
        free(home);
    }
}
END_TEST

/* config_take moves the named options (value and source) and leaves the
 * others; what it gives back is freed with the source. */
START_TEST(test_config_take)
{
    bf_config run, fresh;
    char err[512];
    LOAD_OK(&run, err, "--token", "old", "--max-inflight", "2", "--kafka-property", "a=1",
            NULL);
    write_config("{\"token\": \"new\", \"max_inflight\": 5, \"listen\": \"127.0.0.1:9\", "
                 "\"kafka-property\": [\"b=2\", \"c=3\"]}");
    LOAD_OK(&fresh, err, "--config", file_path, NULL);
    static const char *const names[] = {"token", "max-inflight", "kafka-property", "no-such",
                                        NULL};
    config_take(&run, &fresh, names);
    /* a list moves with its count */
    ck_assert_uint_eq(run.kafka_properties.n, 2);
    ck_assert_str_eq(run.kafka_properties.v[1], "c=3");
    ck_assert_uint_eq(fresh.kafka_properties.n, 1);
    ck_assert_str_eq(fresh.kafka_properties.v[0], "a=1");
    ck_assert_str_eq(run.token, "new");
    ck_assert_uint_eq(run.max_inflight, 5);
    ck_assert_int_eq(config_source(&run, "token"), CONFIG_SRC_FILE);
    ck_assert_str_eq(run.listen, "127.0.0.1:8190"); /* not named: kept */
    ck_assert_str_eq(fresh.token, "old");
    ck_assert_int_eq(config_source(&fresh, "token"), CONFIG_SRC_FLAG);
    config_free(&fresh);
    config_free(&run);
}
END_TEST

/* A reload runs config_load again with the same argv: an edited file is
 * read anew, flags keep priority. */
START_TEST(test_config_reload)
{
    bf_config cfg;
    char err[512];
    write_config("{\"max_inflight\": 2, \"flush_bytes\": 8192}");
    LOAD_OK(&cfg, err, "--config", file_path, "--flush-bytes", "16384", NULL);
    ck_assert_uint_eq(cfg.max_inflight, 2);
    ck_assert_uint_eq(cfg.flush_bytes, 16384);
    config_free(&cfg);
    write_config("{\"max_inflight\": 3, \"flush_bytes\": 9000}");
    LOAD_OK(&cfg, err, "--config", file_path, "--flush-bytes", "16384", NULL);
    ck_assert_uint_eq(cfg.max_inflight, 3);
    ck_assert_uint_eq(cfg.flush_bytes, 16384);
    config_free(&cfg);
    /* And a different argv right after: nothing left over from getopt. */
    LOAD_OK(&cfg, err, "--max-inflight=7", NULL);
    ck_assert_uint_eq(cfg.max_inflight, 7);
    ck_assert_uint_eq(cfg.flush_bytes, 4194304);
    ck_assert_ptr_null(cfg.config_file);
    config_free(&cfg);
}
END_TEST

static const struct {
    const char *opt, *value;
    uint64_t want;
    size_t offset;
} sizes[] = {
    {"max-memory", "4MiB", 4194304, offsetof(bf_config, max_memory)},
    {"max-memory", "4M", 4194304, offsetof(bf_config, max_memory)},
    {"max-memory", "4mib", 4194304, offsetof(bf_config, max_memory)},
    {"max-memory", "4MB", 4194304, offsetof(bf_config, max_memory)},
    {"max-memory", "512k", 524288, offsetof(bf_config, max_memory)},
    {"max-memory", "512K", 524288, offsetof(bf_config, max_memory)},
    {"max-memory", "512KiB", 524288, offsetof(bf_config, max_memory)},
    {"max-memory", "1g", 1073741824, offsetof(bf_config, max_memory)},
    {"max-memory", "2GiB", 2147483648ull, offsetof(bf_config, max_memory)},
    {"max-memory", "65536", 65536, offsetof(bf_config, max_memory)},
    {"flush-bytes", "10000000", 10000000, offsetof(bf_config, flush_bytes)},
    {"flush-bytes", "4096", 4096, offsetof(bf_config, flush_bytes)},
    {"flush-bytes", "9MiB", 9437184, offsetof(bf_config, flush_bytes)},
    {"max-datagram", "8KiB", 8192, offsetof(bf_config, max_datagram)},
    {"max-datagram", "65507", 65507, offsetof(bf_config, max_datagram)},
    {"max-datagram", "64", 64, offsetof(bf_config, max_datagram)},
    {"max-inflight", "64", 64, offsetof(bf_config, max_inflight)},
    {"shutdown-timeout-ms", "0", 0, offsetof(bf_config, shutdown_timeout_ms)},
    {"max-event-age", "7d", 604800000, offsetof(bf_config, max_event_age_ms)},
    {"max-event-age", "36h", 129600000, offsetof(bf_config, max_event_age_ms)},
    {"max-event-age", "0", 0, offsetof(bf_config, max_event_age_ms)},
    {"max-event-skew", "5m", 300000, offsetof(bf_config, max_event_skew_ms)},
    {"max-event-skew", "90s", 90000, offsetof(bf_config, max_event_skew_ms)},
    {"max-event-skew", "250ms", 250, offsetof(bf_config, max_event_skew_ms)},
    {"max-event-skew", "1500", 1500, offsetof(bf_config, max_event_skew_ms)},
};

START_TEST(test_config_size_suffix)
{
    bf_config cfg;
    char err[512], flag[96];
    snprintf(flag, sizeof(flag), "--%s=%s", sizes[_i].opt, sizes[_i].value);
    /* flush-bytes is kept to an eighth of max-memory: room for 10 MB. */
    if (!strcmp(sizes[_i].opt, "flush-bytes"))
        LOAD_OK(&cfg, err, flag, "--max-memory=1GiB", NULL);
    else
        LOAD_OK(&cfg, err, flag, NULL);
    uint64_t got = *(uint64_t *)((char *)&cfg + sizes[_i].offset);
    ck_assert_msg(got == sizes[_i].want, "%s: %llu", flag, (unsigned long long)got);
    config_free(&cfg);
}
END_TEST

static const struct {
    const char *opt, *value, *why;
} bad_values[] = {
    {"max-memory", "4 MiB", "not a size"},
    {"max-memory", "4Mi", "not a size"},
    {"max-memory", "4MiBs", "not a size"},
    {"max-memory", "4x", "not a size"},
    {"max-memory", "", "not a size"},
    {"max-memory", "-1", "not a size"},
    {"max-memory", "+1", "not a size"},
    {"max-memory", " 1", "not a size"},
    {"max-memory", "0x10000", "not a size"},
    {"max-memory", "1T", "not a size"},
    {"max-memory", "1.5M", "not a size"},
    {"max-memory", "MiB", "not a size"},
    {"max-memory", "99999999999999999999", "not a size"},
    {"max-memory", "18446744073709551615k", "not a size"},
    {"flush-interval-ms", "1k", "not a non-negative integer"},
    {"flush-interval-ms", "5s", "not a non-negative integer"},
    {"max-event-age", "7days", "not a duration"},
    {"max-event-age", "7D", "not a duration"},
    {"max-event-age", "1w", "not a duration"},
    {"max-event-age", "d", "not a duration"},
    {"max-event-age", "3651d", "out of range"},
    {"max-event-skew", "213503982335d", "not a duration"},
    {"max-inflight", "4M", "not a non-negative integer"},
    {"flush-bytes", "20000000", "out of range"},
    {"flush-bytes", "4095", "out of range"},
    {"flush-bytes", "10MiB", "out of range"},
    {"max-inflight", "0", "out of range"},
    {"max-inflight", "65", "out of range"},
    {"max-datagram", "65508", "out of range"},
    {"max-datagram", "63", "out of range"},
    {"flush-interval-ms", "9", "out of range"},
    {"max-memory", "64GiB", NULL}, /* the top of its range: fine */
    {"metrics-listen", "9190", "not A.B.C.D:PORT"},
    {"metrics-listen", "example.org:9190", "not A.B.C.D:PORT"},
    {"metrics-listen", "0.0.0.0:9190", "not a loopback address"},
    {"metrics-listen", "unix:/run/m.sock", "not A.B.C.D:PORT"},
    {"metrics-listen", "[::]:9190", "not a loopback address"},
    {"metrics-listen", "192.0.2.1:9190", "not a loopback address"},
    {"metrics-listen", "127.0.0.1:9190", NULL},
    {"metrics-listen", "[::1]:0", NULL},
    {"metrics-listen", "", NULL}, /* off */
};

START_TEST(test_config_bad_value)
{
    char flag[96], name[64];
    snprintf(flag, sizeof(flag), "--%s=%s", bad_values[_i].opt, bad_values[_i].value);
    snprintf(name, sizeof(name), "'%s'", bad_values[_i].opt);
    if (!bad_values[_i].why) {
        bf_config cfg;
        char err[512];
        LOAD_OK(&cfg, err, flag, NULL);
        config_free(&cfg);
        return;
    }
    must_fail(name, bad_values[_i].why, flag, NULL);
}
END_TEST

START_TEST(test_config_bad_value_sources)
{
    /* The message names the source too. */
    setenv("BIRDFEEDER_MAX_INFLIGHT", "100", 1);
    must_fail("'max-inflight'", "environment", NULL);
    unsetenv("BIRDFEEDER_MAX_INFLIGHT");
    write_config("{\"flush_bytes\": 20000000}");
    must_fail("'flush-bytes'", file_path, "--config", file_path, NULL);
    must_fail("'flush-bytes'", "flag", "--flush-bytes", "20000000", NULL);
}
END_TEST

static const struct {
    const char *text, *n1, *n2;
} bad_files[] = {
    {"{\"flush-byte\": 8192}", "unknown key", "'flush-byte'"},
    {"{\"listen\": \"x:1\", \"Listen\": \"y:2\"}", "unknown key", "'Listen'"},
    {"{\"config\": \"/etc/x.json\"}", "unknown key", "'config'"},
    {"{\"listen\": 8190}", "'listen'", "a string"},
    {"{\"flush-bytes\": -1}", "'flush-bytes'", "non-negative integer"},
    {"{\"flush-bytes\": true}", "'flush-bytes'", "non-negative integer"},
    {"{\"flush-bytes\": 1.5}", "'flush-bytes'", "non-negative integer"},
    {"{\"flush-bytes\": null}", "'flush-bytes'", NULL},
    {"{\"token\": [\"x\"]}", "'token'", "a string"},
    {"[\"listen\"]", "must be a JSON object", NULL},
    {"listen = 1", "birdfeeder.json", NULL},
    {"", "birdfeeder.json", NULL},
    {"{\"listen\": \"a:1\", \"listen\": \"b:2\"}", "birdfeeder.json", "duplicate"},
};

START_TEST(test_config_bad_file)
{
    write_config(bad_files[_i].text);
    must_fail(bad_files[_i].n1, bad_files[_i].n2, "--config", file_path, NULL);
}
END_TEST

START_TEST(test_config_missing_file)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/nope.json", tmpdir);
    /* The path and the reason, not jansson's "path:-1: unable to open". */
    must_fail(path, "No such file or directory", "--config", path, NULL);
    setenv("BIRDFEEDER_CONFIG", path, 1);
    must_fail(path, "No such file or directory", NULL);
    bf_config cfg;
    char err[512];
    ck_assert_int_eq(load(&cfg, err, sizeof(err), NULL), CONFIG_ERROR);
    ck_assert_msg(strstr(err, ":-1:") == NULL, "%s", err);
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_bad_flags)
{
    must_fail("unknown option", "--bogus", "--bogus", NULL);
    must_fail("unknown option", "--bogus", "--listen=1.2.3.4:5", "--bogus=1", NULL);
    must_fail("unknown option", "-x", "-x", NULL);
    must_fail("needs a value", "--listen", "--listen", NULL);
    must_fail("needs a value", "--config", "--config", NULL);
    must_fail("unexpected argument", "'extra'", "extra", NULL);
    must_fail("unexpected argument", "'extra'", "--max-inflight", "2", "extra", NULL);
    /* --help takes no value. */
    must_fail("unknown option", "--help=yes", "--help=yes", NULL);
}
END_TEST

START_TEST(test_config_bad_short_flag_names_it)
{
    /* Short options are not defined at all; "-xy" must name "-x", not
     * whatever argv element came before. */
    must_fail("unknown option '-x", NULL, "-xy", NULL);
}
END_TEST

/* --stats-socket-group: a name or a number, resolved at load; '' none; an
 * unknown name an error; by default birdfeeder when that group exists. */
START_TEST(test_config_stats_socket_group)
{
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--stats-socket-group", "root", NULL);
    ck_assert_int_eq(cfg.stats_socket_gid, 0);
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--stats-socket-group", "4242", NULL);
    ck_assert_int_eq(cfg.stats_socket_gid, 4242);
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--stats-socket-group", "", NULL);
    ck_assert_int_eq(cfg.stats_socket_gid, -1);
    config_free(&cfg);
    LOAD_OK(&cfg, err, NULL);
    struct group *bf = getgrnam("birdfeeder");
    ck_assert_int_eq(cfg.stats_socket_gid, bf ? (long)bf->gr_gid : -1);
    if (bf)
        ck_assert_str_eq(cfg.stats_socket_group, "birdfeeder");
    else
        ck_assert_ptr_null(cfg.stats_socket_group);
    config_free(&cfg);
    must_fail("'stats-socket-group'", "no group 'no-such-group-x'", "--stats-socket-group",
              "no-such-group-x", NULL);
    must_fail("'stats-socket-group'", NULL, "--stats-socket-group", "12x", NULL);
}
END_TEST

START_TEST(test_config_cross_checks)
{
    must_fail("'tinybird-url'", "ftp://api.tinybird.co", "--tinybird-url",
              "ftp://api.tinybird.co", NULL);
    must_fail("'tinybird-url'", NULL, "--tinybird-url", "api.tinybird.co", NULL);
    must_fail("'tinybird-url'", NULL, "--tinybird-url", "", NULL);
    must_fail("'log-level'", "'loud'", "--log-level", "loud", NULL);
    must_fail("'log-format'", "'logfmt'", "--log-format", "logfmt", NULL);
    must_fail("'backoff-min-ms'", NULL, "--backoff-min-ms", "5000", "--backoff-max-ms",
              "1000", NULL);
    must_fail("'pacing'", "'auto'", "--pacing", "auto", NULL);
    must_fail("'pacing'", "'On'", "--pacing", "On", NULL);
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--tinybird-url", "http://127.0.0.1:8001", "--log-level",
            "error", "--log-format", "json", "--pacing", "off", NULL);
    ck_assert_str_eq(cfg.log_format, "json");
    ck_assert_str_eq(cfg.pacing, "off");
    ck_assert_uint_eq(cfg.flush_bytes_asked, 0);
    config_free(&cfg);
    /* flush-bytes past an eighth of max-memory is lowered, and what was
     * asked is kept for main's log line. */
    LOAD_OK(&cfg, err, "--max-memory", "1MiB", "--flush-bytes", "512KiB", NULL);
    ck_assert_uint_eq(cfg.flush_bytes, 131072);
    ck_assert_uint_eq(cfg.flush_bytes_asked, 524288);
    config_free(&cfg);
    /* A ceiling under the interval is raised to it: nothing to stretch. */
    LOAD_OK(&cfg, err, "--flush-interval-ms", "20000", NULL);
    ck_assert_uint_eq(cfg.max_flush_interval_ms, 20000);
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--flush-interval-ms", "200", "--max-flush-interval-ms", "500", NULL);
    ck_assert_uint_eq(cfg.max_flush_interval_ms, 500);
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_flag_forms)
{
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--flush-bytes=8192", "--listen", "[::1]:7000", "--stats-socket=",
            "--check-config", "--out", "/tmp/o.ndjson", NULL);
    ck_assert_uint_eq(cfg.flush_bytes, 8192);
    ck_assert_str_eq(cfg.listen, "[::1]:7000");
    ck_assert_str_eq(cfg.stats_socket, "");
    ck_assert_str_eq(cfg.out, "/tmp/o.ndjson");
    ck_assert_int_eq(cfg.check_only, 1);
    config_free(&cfg);
    /* A repeated flag: the last one wins. */
    LOAD_OK(&cfg, err, "--max-inflight=2", "--max-inflight=3", NULL);
    ck_assert_uint_eq(cfg.max_inflight, 3);
    config_free(&cfg);
    /* Empty environment values are unset, not "". */
    setenv("BIRDFEEDER_LISTEN", "", 1);
    setenv("BIRDFEEDER_OUT", "/tmp/env.ndjson", 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:8190");
    ck_assert_str_eq(cfg.out, "/tmp/env.ndjson");
    config_free(&cfg);
}
END_TEST

START_TEST(test_config_diff)
{
    bf_config a, b;
    char err[512], out[256];
    LOAD_OK(&a, err, NULL);
    LOAD_OK(&b, err, NULL);
    memset(out, 'X', sizeof(out));
    config_diff(&a, &b, NULL, out, sizeof(out));
    ck_assert_str_eq(out, "");
    config_free(&b);
    LOAD_OK(&b, err, "--flush-bytes=8192", "--listen=127.0.0.1:1", "--token=t", NULL);
    config_diff(&a, &b, NULL, out, sizeof(out));
    ck_assert_str_eq(out, "listen,token,flush-bytes"); /* in table order */
    config_diff(&b, &a, NULL, out, sizeof(out));
    ck_assert_str_eq(out, "listen,token,flush-bytes");
    static const char *const skip[] = {"token", NULL};
    config_diff(&a, &b, skip, out, sizeof(out));
    ck_assert_str_eq(out, "listen,flush-bytes");
    /* Among names only: what a reload applied of what changed. */
    static const char *const among[] = {"token", "flush-bytes", "max-memory", NULL};
    config_diff_among(&a, &b, among, out, sizeof(out));
    ck_assert_str_eq(out, "token,flush-bytes");
    config_diff_among(&a, &b, NULL, out, sizeof(out));
    ck_assert_str_eq(out, "");
    /* A small buffer: whole names only, always terminated, never past n. */
    memset(out, 'X', sizeof(out));
    config_diff(&a, &b, NULL, out, 14);
    ck_assert_str_eq(out, "listen,token");
    ck_assert_int_eq(out[14], 'X');
    config_diff(&a, &b, NULL, out, 1);
    ck_assert_str_eq(out, "");
    config_free(&a);
    config_free(&b);
}
END_TEST

/* Run config_load with stdout in a file; returns what it printed. */
static char *capture_stdout(const char *arg, enum config_result *r)
{
    char path[160], err[512];
    static char buf[16384];
    snprintf(path, sizeof(path), "%s/stdout", tmpdir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    bf_config cfg;
    *r = load(&cfg, err, sizeof(err), arg, NULL);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    config_free(&cfg);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

START_TEST(test_config_help)
{
    enum config_result r;
    const char *out = capture_stdout("--help", &r);
    ck_assert_int_eq(r, CONFIG_EXIT_OK);
    ck_assert_msg(strstr(out, "usage: birdfeederd") != NULL, "%s", out);
    ck_assert(strstr(out, "--flush-bytes BYTES") != NULL);
    ck_assert(strstr(out, "--flush-interval-ms N") != NULL);
    ck_assert(strstr(out, "TINYBIRD_API_KEY TINYBIRD_TOKEN") != NULL);
    ck_assert(strstr(out, "--config FILE") != NULL);
}
END_TEST

START_TEST(test_config_version)
{
    enum config_result r;
    const char *out = capture_stdout("--version", &r);
    ck_assert_int_eq(r, CONFIG_EXIT_OK);
    ck_assert_msg(strncmp(out, "birdfeederd ", 12) == 0, "%s", out);
    ck_assert(strstr(out, "(protocol v1)\n") != NULL);
}
END_TEST

/* ---- issue 11: the token off the command line, files kept private ---- */

/* --token-file: the first line, its newline (LF or CRLF) left out. */
static const struct {
    const char *text, *want;
} token_files[] = {
    {"p.tok-1\n", "p.tok-1"},
    {"p.tok-2", "p.tok-2"},
    {"p.tok-3\r\n", "p.tok-3"},
    {"p.tok-4\nsecond line ignored\n", "p.tok-4"},
};

START_TEST(test_config_token_file)
{
    bf_config cfg;
    char err[512], path[160], flag[200];
    write_secret(path, sizeof(path), "token", token_files[_i].text);
    snprintf(flag, sizeof(flag), "--token-file=%s", path);
    LOAD_OK(&cfg, err, flag, NULL);
    ck_assert_str_eq(cfg.token, token_files[_i].want);
    ck_assert_str_eq(cfg.token_file, path);
    ck_assert_str_eq(cfg.token_source, "--token-file");
    config_free(&cfg);
}
END_TEST

/* A token file that is empty, unreadable, not private, or not one line of
 * a header-safe token is refused, naming the file and what is wrong. */
START_TEST(test_config_token_file_refused)
{
    char path[160], flag[200];
    snprintf(flag, sizeof(flag), "--token-file=%s/missing", tmpdir);
    must_fail("missing", "No such file", flag, NULL);
    static const struct {
        const char *name, *text, *why;
    } bad[] = {
        {"empty", "", "empty"},
        {"blank", "\nsecond\n", "empty"},
        {"space", "p.tok en\n", "not a Tinybird token"},
        {"ctl", "p.tok\x01\n", "not a Tinybird token"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_secret(path, sizeof(path), bad[i].name, bad[i].text);
        snprintf(flag, sizeof(flag), "--token-file=%s", path);
        must_fail(path, bad[i].why, flag, NULL);
    }
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    write_secret(path, sizeof(path), "big", big);
    snprintf(flag, sizeof(flag), "--token-file=%s", path);
    must_fail(path, "longer than", flag, NULL);
    /* Readable by group or others: refused with the mode, as ssh does. */
    static const unsigned modes[] = {0644, 0640, 0604, 0660, 0602};
    write_secret(path, sizeof(path), "open", "p.tok\n");
    snprintf(flag, sizeof(flag), "--token-file=%s", path);
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char want[16];
        ck_assert_int_eq(chmod(path, modes[i]), 0);
        snprintf(want, sizeof(want), "mode %04o", modes[i]);
        must_fail(path, want, flag, NULL);
    }
    ck_assert_int_eq(chmod(path, 0400), 0);
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, flag, NULL);
    ck_assert_str_eq(cfg.token, "p.tok");
    config_free(&cfg);
    /* A directory is not a token file. */
    snprintf(flag, sizeof(flag), "--token-file=%s", tmpdir);
    must_fail(tmpdir, "not a regular file", flag, NULL);
    /* Both flags: say which to keep. */
    snprintf(flag, sizeof(flag), "--token-file=%s", path);
    must_fail("--token-file", "--token", flag, "--token=x", NULL);
}
END_TEST

/* Which source gives the token, highest first: --token-file, --token,
 * BIRDFEEDER_TOKEN_FILE, the systemd credential, the environment's token,
 * the config file's token-file, its token. */
enum { S_FLAG_FILE = 1, S_FLAG = 2, S_ENV_FILE = 4, S_CRED = 8, S_ENV = 16,
       S_CONF_FILE = 32, S_CONF = 64 };
static const struct {
    unsigned sources;
    const char *want, *source;
} token_order[] = {
    {S_FLAG_FILE | S_ENV_FILE | S_CRED | S_ENV | S_CONF_FILE | S_CONF, "t-flag-file",
     "--token-file"},
    {S_FLAG | S_ENV_FILE | S_CRED | S_ENV | S_CONF_FILE | S_CONF, "t-flag", "--token"},
    {S_ENV_FILE | S_CRED | S_ENV | S_CONF_FILE | S_CONF, "t-env-file",
     "BIRDFEEDER_TOKEN_FILE"},
    {S_CRED | S_ENV | S_CONF_FILE | S_CONF, "t-cred", "credential"},
    {S_ENV | S_CONF_FILE | S_CONF, "t-env", "environment"},
    {S_CONF_FILE | S_CONF, "t-conf-file", "file token-file"},
    {S_CONF, "t-conf", "file"},
    {0, NULL, NULL},
};

START_TEST(test_config_token_precedence)
{
    unsigned src = token_order[_i].sources;
    char err[512], p[160], flag_file[200], flag[64], conf[512], cred_dir[160];
    write_secret(p, sizeof(p), "flag-file", "t-flag-file\n");
    snprintf(flag_file, sizeof(flag_file), "--token-file=%s", p);
    snprintf(flag, sizeof(flag), "--token=t-flag");
    if (src & S_ENV_FILE) {
        write_secret(p, sizeof(p), "env-file", "t-env-file\n");
        setenv("BIRDFEEDER_TOKEN_FILE", p, 1);
    }
    snprintf(cred_dir, sizeof(cred_dir), "%s/creds", tmpdir);
    ck_assert_int_eq(mkdir(cred_dir, 0700), 0);
    setenv("CREDENTIALS_DIRECTORY", cred_dir, 1);
    if (src & S_CRED)
        write_secret(p, sizeof(p), "creds/tinybird-token", "t-cred\n");
    if (src & S_ENV)
        setenv("TINYBIRD_API_KEY", "t-env", 1);
    write_secret(p, sizeof(p), "conf-file", "t-conf-file\n");
    snprintf(conf, sizeof(conf), "{%s%s%s%s%s}",
             src & S_CONF_FILE ? "\"token-file\": \"" : "",
             src & S_CONF_FILE ? p : "", src & S_CONF_FILE ? "\"" : "",
             (src & S_CONF_FILE) && (src & S_CONF) ? ", " : "",
             src & S_CONF ? "\"token\": \"t-conf\"" : "");
    write_config(conf);
    bf_config cfg;
    const char *a1 = src & S_FLAG_FILE ? flag_file : src & S_FLAG ? flag : "--config";
    const char *a2 = a1[2] == 'c' ? file_path : "--config";
    const char *a3 = a1[2] == 'c' ? NULL : file_path;
    LOAD_OK(&cfg, err, a1, a2, a3, NULL);
    if (token_order[_i].want) {
        ck_assert_msg(cfg.token && strcmp(cfg.token, token_order[_i].want) == 0,
                      "case %d: token %s", _i, cfg.token ? cfg.token : "(null)");
        ck_assert_str_eq(cfg.token_source, token_order[_i].source);
    } else {
        ck_assert_ptr_null(cfg.token);
    }
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
}
END_TEST

/* The systemd credential is private by construction (its directory is the
 * service's alone) and may show an ACL's mask as group bits: its mode is
 * not checked. A CREDENTIALS_DIRECTORY without tinybird-token is no
 * source; an empty tinybird-token means no token (and hides those below:
 * the operator chose the file sink). */
START_TEST(test_config_token_credential)
{
    bf_config cfg;
    char err[512], p[160];
    setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_ptr_null(cfg.token);
    config_free(&cfg);
    /* An empty credential: no token (the unit loads it either way). */
    write_secret(p, sizeof(p), "tinybird-token", "");
    setenv("TINYBIRD_API_KEY", "t-env", 1);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_ptr_null(cfg.token);
    config_free(&cfg);
    unsetenv("TINYBIRD_API_KEY");
    write_secret(p, sizeof(p), "tinybird-token", "p.cred\n");
    ck_assert_int_eq(chmod(p, 0440), 0);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_str_eq(cfg.token, "p.cred");
    ck_assert_str_eq(cfg.token_file, p);
    ck_assert_str_eq(cfg.token_source, "credential");
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
}
END_TEST

/* The Kafka password as the credential kafka-password: taken when Kafka is
 * the sink and no --kafka-password-file is given; a flag wins; without
 * Kafka it is not looked at. */
START_TEST(test_config_kafka_password_credential)
{
    bf_config cfg;
    char err[512], p[160];
    write_secret(p, sizeof(p), "kafka-password", "pw\n");
    setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
    LOAD_OK(&cfg, err, "--kafka-brokers", "127.0.0.1:9092", NULL);
    ck_assert_str_eq(cfg.kafka_password_file, p);
    ck_assert_int_eq(cfg.kafka_password_credential, 1);
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--kafka-brokers", "127.0.0.1:9092", "--kafka-password-file",
            "/etc/kafka.pw", NULL);
    ck_assert_str_eq(cfg.kafka_password_file, "/etc/kafka.pw");
    ck_assert_int_eq(cfg.kafka_password_credential, 0);
    config_free(&cfg);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_ptr_null(cfg.kafka_password_file);
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
}
END_TEST

/* What a reload's log line says of the token, for each source: a new one
 * is "changed"; the same one from where a reload does not look again (the
 * environment, a flag, the credential) says how to change it. */
START_TEST(test_config_token_note)
{
    bf_config now, fresh;
    char err[512], p[160], flag[200];
    LOAD_OK(&now, err, NULL);
    LOAD_OK(&fresh, err, NULL);
    ck_assert_str_eq(config_token_note(&now, &fresh), "unchanged"); /* none */
    config_free(&fresh);
    LOAD_OK(&fresh, err, "--token=p.new", NULL);
    ck_assert_str_eq(config_token_note(&now, &fresh), "changed");
    config_free(&now);
    LOAD_OK(&now, err, "--token=p.new", NULL);
    ck_assert_ptr_nonnull(strstr(config_token_note(&now, &fresh), "from a flag; restart"));
    config_free(&now);
    config_free(&fresh);

    setenv("TINYBIRD_API_KEY", "p.env", 1);
    LOAD_OK(&now, err, NULL);
    LOAD_OK(&fresh, err, NULL);
    ck_assert_ptr_nonnull(strstr(config_token_note(&now, &fresh), "from the environment"));
    config_free(&now);
    config_free(&fresh);
    unsetenv("TINYBIRD_API_KEY");

    write_secret(p, sizeof(p), "token", "p.file\n");
    snprintf(flag, sizeof(flag), "--token-file=%s", p);
    LOAD_OK(&now, err, flag, NULL);
    LOAD_OK(&fresh, err, flag, NULL);
    ck_assert_str_eq(config_token_note(&now, &fresh), "unchanged"); /* read again */
    config_free(&fresh);
    write_secret(p, sizeof(p), "token", "p.file2\n");
    LOAD_OK(&fresh, err, flag, NULL);
    ck_assert_str_eq(config_token_note(&now, &fresh), "changed");
    config_free(&now);
    config_free(&fresh);

    write_config("{\"token\": \"p.conf\"}");
    LOAD_OK(&now, err, "--config", file_path, NULL);
    LOAD_OK(&fresh, err, "--config", file_path, NULL);
    ck_assert_str_eq(config_token_note(&now, &fresh), "unchanged");
    config_free(&now);
    config_free(&fresh);

    setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
    write_secret(p, sizeof(p), "tinybird-token", "p.cred\n");
    LOAD_OK(&now, err, NULL);
    LOAD_OK(&fresh, err, NULL);
    ck_assert_ptr_nonnull(strstr(config_token_note(&now, &fresh),
                                 "systemd copies the credential at start"));
    config_free(&now);
    config_free(&fresh);
    unsetenv("CREDENTIALS_DIRECTORY");
}
END_TEST

/* A reload runs config_load again: a changed token file is read again. */
START_TEST(test_config_token_file_reread)
{
    bf_config cfg;
    char err[512], p[160], flag[200];
    write_secret(p, sizeof(p), "token", "p.first\n");
    snprintf(flag, sizeof(flag), "--token-file=%s", p);
    LOAD_OK(&cfg, err, flag, NULL);
    ck_assert_str_eq(cfg.token, "p.first");
    config_free(&cfg);
    write_secret(p, sizeof(p), "token", "p.second\n");
    LOAD_OK(&cfg, err, flag, NULL);
    ck_assert_str_eq(cfg.token, "p.second");
    config_free(&cfg);
}
END_TEST

/* --token still works, with a warning that names the risk; the warning
 * never holds the token. */
START_TEST(test_config_token_flag_warns)
{
    char log_path[160];
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    int saved = tu_stderr_to(log_path);
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--token=p.visible-secret", NULL);
    ck_assert_str_eq(cfg.token, "p.visible-secret");
    ck_assert_str_eq(cfg.token_source, "--token");
    config_free(&cfg);
    setenv("TINYBIRD_API_KEY", "p.env-secret", 1);
    LOAD_OK(&cfg, err, NULL);
    config_free(&cfg);
    tu_stderr_restore(saved, log_path);
    char *log = tu_read_file(log_path, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg(strstr(log, "level=warn event=token_on_command_line") &&
                      strstr(log, "/proc/PID/cmdline"), "log: %s", log);
    ck_assert_msg(!strstr(log, "visible-secret") && !strstr(log, "env-secret"), "log: %s",
                  log);
    /* Once: the environment's token is not warned about. */
    ck_assert_ptr_null(strstr(strstr(log, "token_on_command_line") + 1,
                              "token_on_command_line"));
    free(log);
}
END_TEST

/* The config file: one others may write (they could point tinybird-url
 * at their own server and receive the token), one owned by someone else,
 * and one holding a token that group or others may read, are refused; one
 * the group may write is said in the log. */
START_TEST(test_config_file_mode)
{
    bf_config cfg;
    char err[512], want[64];
    write_config("{\"max_inflight\": 3}");
    ck_assert_int_eq(chmod(file_path, 0644), 0);
    LOAD_OK(&cfg, err, "--config", file_path, NULL); /* no token: may be read */
    ck_assert_uint_eq(cfg.max_inflight, 3);
    config_free(&cfg);
    static const unsigned writable[] = {0666, 0646, 0602};
    for (size_t i = 0; i < sizeof(writable) / sizeof(writable[0]); i++) {
        ck_assert_int_eq(chmod(file_path, writable[i]), 0);
        snprintf(want, sizeof(want), "mode %04o lets others write", writable[i]);
        must_fail(file_path, want, "--config", file_path, NULL);
    }
    /* Group write: warned, not refused (a group per user is common). */
    char log_path[160];
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    int saved = tu_stderr_to(log_path);
    ck_assert_int_eq(chmod(file_path, 0664), 0);
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    config_free(&cfg);
    tu_stderr_restore(saved, log_path);
    char *log = tu_read_file(log_path, NULL);
    ck_assert_msg(log && strstr(log, "level=warn event=file_group_writable") &&
                      strstr(log, "mode=0664"), "log: %s", log ? log : "");
    free(log);
    write_config("{\"token\": \"p.in-file\"}");
    static const unsigned readable[] = {0644, 0640, 0604};
    for (size_t i = 0; i < sizeof(readable) / sizeof(readable[0]); i++) {
        ck_assert_int_eq(chmod(file_path, readable[i]), 0);
        snprintf(want, sizeof(want), "mode %04o lets group or others read", readable[i]);
        must_fail("config file holding a token", want, "--config", file_path, NULL);
    }
    ck_assert_int_eq(chmod(file_path, 0600), 0);
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_str_eq(cfg.token, "p.in-file");
    config_free(&cfg);
}
END_TEST

/* Issue 11, finding 9: http:// sends the token in clear, so only to a
 * loopback host (a local test server); anything else needs https://. */
static const struct {
    const char *url;
    int ok;
} urls[] = {
    {"https://api.tinybird.co", 1},
    {"https://api.us-east.aws.tinybird.co/", 1},
    {"http://127.0.0.1:8001", 1},
    {"http://127.0.0.1", 1},
    {"http://127.9.8.7:1/", 1},
    {"http://localhost:8001", 1},
    {"http://LOCALHOST", 1},
    {"http://[::1]:8001", 1},
    {"http://[0:0:0:0:0:0:0:1]/", 1},
    {"http://api.tinybird.co", 0},
    {"http://api.tinybird.co:80/", 0},
    {"http://10.0.0.1:8001", 0},
    {"http://128.0.0.1", 0},
    {"http://[::2]:8001", 0},
    {"http://[::ffff:127.0.0.1]", 1},  /* IPv4-mapped: 127.0.0.1 */
    {"http://127.0.0.1.evil.example", 0},
    {"http://localhost.evil.example", 0},
    {"http://127.0.0.1@evil.example", 0},
    {"http://evil.example#@127.0.0.1", 0},
    {"http://[::1", 0},
    {"http://", 0},
};

START_TEST(test_config_tinybird_url_loopback_only)
{
    if (!urls[_i].ok) {
        must_fail("'tinybird-url'", "loopback", "--tinybird-url", urls[_i].url, NULL);
        return;
    }
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--tinybird-url", urls[_i].url, NULL);
    config_free(&cfg);
}
END_TEST

/* ---- issue 11: several --listen; --allow-remote ------------------------- */

/* Each --listen flag adds an address; the environment and the file give
 * the whole list (comma-separated, or a JSON array); a higher source
 * replaces a lower one's list. */
START_TEST(test_config_listen_list)
{
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, "--listen", "127.0.0.1:1", "--listen=unix:/run/b.sock", NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:1,unix:/run/b.sock");
    config_free(&cfg);
    write_config("{\"listen\": [\"127.0.0.1:2\", \"unix:/run/c.sock\"]}");
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:2,unix:/run/c.sock");
    config_free(&cfg);
    setenv("BIRDFEEDER_LISTEN", "127.0.0.1:3,[::1]:3", 1);
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:3,[::1]:3");
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--config", file_path, "--listen", "unix:/run/d.sock", NULL);
    ck_assert_str_eq(cfg.listen, "unix:/run/d.sock");
    config_free(&cfg);
    write_config("{\"listen\": [\"127.0.0.1:2\", 7]}");
    must_fail("'listen'", "an array of strings", "--config", file_path, NULL);
}
END_TEST

/* --allow-remote is a flag (or =yes/no); true/false in the file; yes/no,
 * 1/0, true/false, on/off in the environment. */
START_TEST(test_config_allow_remote)
{
    bf_config cfg;
    char err[512];
    LOAD_OK(&cfg, err, NULL);
    ck_assert_uint_eq(cfg.allow_remote, 0);
    config_free(&cfg);
    LOAD_OK(&cfg, err, "--allow-remote", NULL);
    ck_assert_uint_eq(cfg.allow_remote, 1);
    config_free(&cfg);
    setenv("BIRDFEEDER_ALLOW_REMOTE", "yes", 1);
    LOAD_OK(&cfg, err, "--allow-remote=no", NULL);
    ck_assert_uint_eq(cfg.allow_remote, 0);
    config_free(&cfg);
    LOAD_OK(&cfg, err, NULL);
    ck_assert_uint_eq(cfg.allow_remote, 1);
    config_free(&cfg);
    unsetenv("BIRDFEEDER_ALLOW_REMOTE");
    write_config("{\"allow-remote\": true}");
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_uint_eq(cfg.allow_remote, 1);
    config_free(&cfg);
    write_config("{\"allow-remote\": 1}");
    must_fail("'allow-remote'", "true or false", "--config", file_path, NULL);
    must_fail("'allow-remote'", "'maybe' is not yes or no", "--allow-remote=maybe", NULL);
    /* It gates --metrics-listen too (every listening socket). */
    LOAD_OK(&cfg, err, "--metrics-listen", "0.0.0.0:9190", "--allow-remote", NULL);
    ck_assert_str_eq(cfg.metrics_listen, "0.0.0.0:9190");
    config_free(&cfg);
    /* Nothing follows it as a value: "--allow-remote yes" is an argument. */
    must_fail("unexpected argument", "'yes'", "--allow-remote", "yes", NULL);
}
END_TEST

/* A repeatable KEY=VALUE option (OPT_PAIRS): the file's entries (array or object), then the
 * environment's words, then the flags, in that order; a reload starts
 * afresh; bad forms are refused with the option named. */
START_TEST(test_config_repeatable_list)
{
    bf_config cfg;
    char err[512];
    write_config("{\"kafka-property\": [\"a=1\", \"b=2\"]}");
    setenv("BIRDFEEDER_KAFKA_PROPERTY", "c=3  d=4", 1);
    LOAD_OK(&cfg, err, "--config", file_path, "--kafka-property", "a=5",
            "--kafka-property=e=6", NULL);
    unsetenv("BIRDFEEDER_KAFKA_PROPERTY");
    const char *want[] = {"a=1", "b=2", "c=3", "d=4", "a=5", "e=6"};
    ck_assert_uint_eq(cfg.kafka_properties.n, 6);
    for (size_t i = 0; i < 6; i++)
        ck_assert_str_eq(cfg.kafka_properties.v[i], want[i]);
    bf_config again;
    LOAD_OK(&again, err, "--config", file_path, NULL);
    ck_assert_uint_eq(again.kafka_properties.n, 2);
    char diff[256];
    config_diff(&cfg, &again, NULL, diff, sizeof(diff));
    ck_assert_str_eq(diff, "kafka-property");
    config_free(&again);
    config_free(&cfg);
    ck_assert_uint_eq(cfg.kafka_properties.n, 0);
    write_config("{\"kafka_property\": {\"security.protocol\": \"SASL_SSL\"}}");
    LOAD_OK(&cfg, err, "--config", file_path, NULL);
    ck_assert_uint_eq(cfg.kafka_properties.n, 1);
    ck_assert_str_eq(cfg.kafka_properties.v[0], "security.protocol=SASL_SSL");
    config_free(&cfg);
    static const char *const bad[] = {
        "{\"kafka-property\": \"a=1\"}", "{\"kafka-property\": [1]}",
        "{\"kafka-property\": [\"noequals\"]}", "{\"kafka-property\": {\"a\": 1}}",
        "{\"kafka-property\": [\"=x\"]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_config(bad[i]);
        ck_assert_int_eq(load(&cfg, err, sizeof(err), "--config", file_path, NULL),
                         CONFIG_ERROR);
        ck_assert_msg(strstr(err, "kafka-property"), "%s: %s", bad[i], err);
        config_free(&cfg);
    }
}
END_TEST

Suite *config_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("config", config_setup, config_teardown, &tc);
    tcase_add_test(tc, test_config_defaults);
    tcase_add_loop_test(tc, test_config_precedence, 0, N(precedence));
    tcase_add_loop_test(tc, test_config_token_sources, 0, N(tokens));
    tcase_add_test(tc, test_config_tinybird_url_sources);
    tcase_add_test(tc, test_config_file_keys);
    tcase_add_test(tc, test_config_file_from_env);
    tcase_add_test(tc, test_config_reload);
    tcase_add_test(tc, test_config_sources_and_context_paths);
    tcase_add_test(tc, test_config_take);
    tcase_add_loop_test(tc, test_config_size_suffix, 0, N(sizes));
    tcase_add_loop_test(tc, test_config_bad_value, 0, N(bad_values));
    tcase_add_test(tc, test_config_bad_value_sources);
    tcase_add_loop_test(tc, test_config_bad_file, 0, N(bad_files));
    tcase_add_test(tc, test_config_missing_file);
    tcase_add_test(tc, test_config_bad_flags);
    tcase_add_test(tc, test_config_bad_short_flag_names_it);
    tcase_add_test(tc, test_config_cross_checks);
    tcase_add_test(tc, test_config_stats_socket_group);
    tcase_add_test(tc, test_config_flag_forms);
    tcase_add_test(tc, test_config_diff);
    tcase_add_test(tc, test_config_help);
    tcase_add_test(tc, test_config_version);
    tcase_add_loop_test(tc, test_config_token_file, 0, N(token_files));
    tcase_add_test(tc, test_config_token_file_refused);
    tcase_add_loop_test(tc, test_config_token_precedence, 0, N(token_order));
    tcase_add_test(tc, test_config_token_credential);
    tcase_add_test(tc, test_config_kafka_password_credential);
    tcase_add_test(tc, test_config_token_file_reread);
    tcase_add_test(tc, test_config_token_note);
    tcase_add_test(tc, test_config_token_flag_warns);
    tcase_add_test(tc, test_config_file_mode);
    tcase_add_loop_test(tc, test_config_tinybird_url_loopback_only, 0, N(urls));
    tcase_add_test(tc, test_config_listen_list);
    tcase_add_test(tc, test_config_allow_remote);
    tcase_add_test(tc, test_config_repeatable_list);
    return s;
}
