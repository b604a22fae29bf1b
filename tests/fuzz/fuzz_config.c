/*
 * fuzz_config.c: the config loader on a JSON file (--config FILE).
 *
 * Promises checked, for any file content:
 *   - config_load returns CONFIG_OK or CONFIG_ERROR with a message, and
 *     config_free releases everything either way (ASan's leak check);
 *   - an accepted configuration keeps the cross-field rules: a URL that
 *     starts with http:// or https:// and ends without '/', flush-bytes at
 *     most a quarter of max-memory, backoff-min at most backoff-max, a log
 *     level that parses, no empty token;
 *   - what config_print shows, written back as a config file (less the
 *     token, which it hides), loads to the same configuration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "fuzz_util.h"
#include "log.h"

extern char **environ;

static char path[4200], path2[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_log();
    /* Only the file may set options: drop what the environment would. */
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "BIRDFEEDER_", 11) && strncmp(*e, "TINYBIRD_", 9))
                continue;
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
            again = 1;
            break;
        }
    }
    snprintf(path, sizeof(path), "%s/config.json", fuzz_tmpdir());
    snprintf(path2, sizeof(path2), "%s/printed.json", fuzz_tmpdir());
    return 0;
}

static enum config_result load(bf_config *cfg, const char *file, char *err, size_t n)
{
    char prog[] = "birdfeederd", opt[] = "--config";
    char *argv[] = {prog, opt, (char *)file, NULL};
    err[0] = '\0';
    return config_load(cfg, 3, argv, err, n);
}

/* config_print's JSON for cfg, as a string the caller frees. */
static char *printed(const bf_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    FUZZ_CHECK(mem, "open_memstream");
    FILE *saved = stdout;
    stdout = mem;
    config_print(cfg);
    stdout = saved;
    fclose(mem);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bf_config cfg, cfg2;
    char err[512];
    fuzz_write_file(path, data, size);
    enum config_result rc = load(&cfg, path, err, sizeof(err));
    FUZZ_CHECK(rc == CONFIG_OK || rc == CONFIG_ERROR, "config_load returned %d", (int)rc);
    if (rc != CONFIG_OK) {
        FUZZ_CHECK(err[0] && memchr(err, '\0', sizeof(err)), "an error with no message");
        config_free(&cfg);
        return 0;
    }
    size_t ul = strlen(cfg.tinybird_url);
    FUZZ_CHECK((strncmp(cfg.tinybird_url, "http://", 7) == 0 ||
                strncmp(cfg.tinybird_url, "https://", 8) == 0) &&
                   cfg.tinybird_url[ul - 1] != '/',
               "tinybird-url '%s'", cfg.tinybird_url);
    FUZZ_CHECK(cfg.flush_bytes <= cfg.max_memory / 4, "flush-bytes %llu, max-memory %llu",
               (unsigned long long)cfg.flush_bytes, (unsigned long long)cfg.max_memory);
    FUZZ_CHECK(cfg.backoff_min_ms <= cfg.backoff_max_ms, "backoff %llu > %llu",
               (unsigned long long)cfg.backoff_min_ms,
               (unsigned long long)cfg.backoff_max_ms);
    FUZZ_CHECK(log_level_parse(cfg.log_level) >= 0, "log-level '%s'", cfg.log_level);
    FUZZ_CHECK(!cfg.token || *cfg.token, "an empty token");

    /* Printed, written back without the token and the unset options. */
    char *text = printed(&cfg);
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    FUZZ_CHECK(json_is_object(o), "config_print is not a JSON object (%s): %s", jerr.text,
               text);
    json_object_del(o, "token");
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(o, tmp, key, v) {
        if (json_is_null(v))
            json_object_del(o, key);
    }
    FUZZ_CHECK(json_dump_file(o, path2, JSON_COMPACT) == 0, "writing %s", path2);
    json_decref(o);
    rc = load(&cfg2, path2, err, sizeof(err));
    FUZZ_CHECK(rc == CONFIG_OK, "the printed configuration does not load: %s\n%s", err, text);
    static const char *const skip[] = {"token", NULL};
    char diff[1024];
    config_diff(&cfg, &cfg2, skip, diff, sizeof(diff));
    FUZZ_CHECK(!diff[0], "printed and loaded again, these differ: %s\n%s", diff, text);
    free(text);
    config_free(&cfg2);
    config_free(&cfg);
    return 0;
}
