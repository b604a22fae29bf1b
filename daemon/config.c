/* config.c: the option table and its three sources. See config.h. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_addr.h"
#include "file_check.h"
#include "secret.h"
#include "log.h"
#include "paths.h"

#ifndef BF_DATADIR
#define BF_DATADIR "/usr/local/share/birdfeeder"
#endif

/* OPT_DURATION: milliseconds, written with a unit (ms, s, m, h, d) or as a
 * bare number of milliseconds. OPT_LIST: text, several values joined by
 * ','; each flag adds one, and a source (environment, file) gives them all
 * at once. OPT_BOOL: a flag without value (or =yes/no); true/false in the
 * file; stored as 0 or 1. OPT_PAIRS is repeatable KEY=VALUE settings whose
 * values may hold commas (a bf_strlist): each flag, each element of a JSON
 * array (or each key of a JSON object) and each whitespace-separated word
 * of the environment variable adds one, and the sources add up (the file's
 * first, then the environment's, then the flags'). */
enum opt_type { OPT_STR, OPT_SIZE, OPT_MS, OPT_UINT, OPT_DURATION, OPT_LIST, OPT_BOOL,
                OPT_PAIRS };

typedef struct option_def {
    const char *name;   /* flag and JSON key */
    enum opt_type type;
    size_t offset;
    const char *def;    /* default as text; NULL: unset */
    uint64_t min, max;  /* numbers only */
    const char *env;    /* extra environment names, besides BIRDFEEDER_X */
    const char *help;
} option_def;

static int is_text(const option_def *o)
{
    return o->type == OPT_STR || o->type == OPT_LIST;
}

/* Defaults that depend on where the daemon runs (paths.h) start with one
 * of these in the table: the state or runtime directory, or the installed
 * catalog when there is one (else the built-in catalog, cfg->catalog NULL). */
#define STATE_DEF "<state>/"
#define RUNTIME_DEF "<runtime>/"
#define CATALOG_DEF "<installed or built-in>"
#define GROUP_DEF "<birdfeeder if it exists>"
#define OPERATORS_GROUP "birdfeeder"
#define INSTALLED_CATALOG BF_DATADIR "/catalog.json"

static int by_context(const option_def *o)
{
    return o->def && o->def[0] == '<';
}

#define OFF(m) offsetof(bf_config, m)
static const option_def options[] = {
    {"listen", OPT_LIST, OFF(listen), "127.0.0.1:8190", 0, 0, NULL,
     "where to receive datagrams: UDP A.B.C.D:PORT, [IPv6]:PORT or "
     "localhost:PORT (port 0: any free port), or a Unix datagram socket "
     "unix:/PATH (mode 0660, --socket-group; senders' uids checked with "
     "--allow-uid/--allow-gid). Give it several times, or comma-separated, "
     "to listen on several. Loopback only unless --allow-remote"},
    {"allow-remote", OPT_BOOL, OFF(allow_remote), "no", 0, 1, NULL,
     "allow addresses beyond loopback for every listening socket (any host "
     "that reaches one could send events and costs); logged at warn level"},
    {"socket-group", OPT_STR, OFF(socket_group), NULL, 0, 0, NULL,
     "group (name or number) of the unix: sockets, which are mode 0660: its "
     "members may send; default the daemon's group"},
    {"allow-uid", OPT_LIST, OFF(allow_uid), NULL, 0, 0, NULL,
     "users (names or numbers, comma-separated) whose datagrams a unix: "
     "socket accepts, by the kernel's SCM_CREDENTIALS; others count as "
     "rejected.peer_not_allowed. Unset with --allow-gid unset: any sender "
     "that may open the socket"},
    {"allow-gid", OPT_LIST, OFF(allow_gid), NULL, 0, 0, NULL,
     "groups (names or numbers) whose datagrams a unix: socket accepts, by "
     "the sender's effective group in SCM_CREDENTIALS (supplementary groups "
     "do not count); with --allow-uid, either one admits"},
    {"tinybird-url", OPT_STR, OFF(tinybird_url), "https://api.tinybird.co", 0, 0,
     "TINYBIRD_API_URL TINYBIRD_URL", "Tinybird API base URL (region host)"},
    {"token", OPT_STR, OFF(token), NULL, 0, 0, "TINYBIRD_API_KEY TINYBIRD_TOKEN",
     "Tinybird token with DATASOURCE:APPEND. As a flag every local user can "
     "read it (/proc/PID/cmdline, warned): prefer --token-file, the systemd "
     "credential tinybird-token or the environment. Without one, batches go "
     "to --out"},
    {"token-file", OPT_STR, OFF(token_file), NULL, 0, 0, NULL,
     "file whose first line is the Tinybird token; refused when group or "
     "others may read it. Under systemd, LoadCredential=tinybird-token:PATH "
     "is read without this option ($CREDENTIALS_DIRECTORY/tinybird-token)"},
    {"catalog", OPT_STR, OFF(catalog), CATALOG_DEF, 0, 0, NULL,
     "model catalog (JSON): provider and prices per model; replaces the one "
     "built into birdfeederd (daemon/catalog.json at build time)"},
    {"out", OPT_STR, OFF(out), "-", 0, 0, NULL,
     "NDJSON output file when there is no token ('-' is stdout); appended "
     "to, never through a symlink"},
    {"ip-hash-key-file", OPT_STR, OFF(ip_hash_key_file), STATE_DEF "ip-hash.key", 0,
     0, NULL, "secret key for ip_hash; created with mode 0600 when missing, "
     "refused when group or others may read it"},
    {"stats-socket", OPT_STR, OFF(stats_socket), RUNTIME_DEF "stats.sock", 0, 0, NULL,
     "Unix socket streaming one JSON stats line per interval ('' off)"},
    {"stats-socket-group", OPT_STR, OFF(stats_socket_group), GROUP_DEF, 0, 0, NULL,
     "group given the stats socket (mode 0660), so that its members read "
     "stats without root: a name or a number ('' none: the daemon's own "
     "group)"},
    {"metrics-listen", OPT_STR, OFF(metrics_listen), "", 0, 0, NULL,
     "HOST:PORT to serve GET /metrics (Prometheus) and GET /health on over "
     "HTTP, for example 127.0.0.1:9190; loopback only unless --allow-remote "
     "('' off)"},
    {"spool-dir", OPT_STR, OFF(spool_dir), STATE_DEF "spool", 0, 0, NULL,
     "where batches wait on disk (memory cap, outage at shutdown) and "
     "refused batches are kept (dead-letter.ndjson); one daemon at a time"},
    {"log-level", OPT_STR, OFF(log_level), "info", 0, 0, NULL,
     "debug, info, warn or error"},
    {"log-format", OPT_STR, OFF(log_format), "text", 0, 0, NULL,
     "text (key=value lines) or json (one JSON object per line, for log "
     "shippers); under systemd each line starts with its syslog priority"},
    {"flush-bytes", OPT_SIZE, OFF(flush_bytes), "4MiB", 4096, 10000000, NULL,
     "close a batch at this many NDJSON bytes (at most 10 MB)"},
    {"flush-interval-ms", OPT_MS, OFF(flush_interval_ms), "1000", 10, 3600000,
     NULL, "close a batch this long after its first event"},
    {"max-flush-interval-ms", OPT_MS, OFF(max_flush_interval_ms), "10000", 10,
     3600000, NULL,
     "pacing: while the destination's shared rate limit is near, a dataset's "
     "batches stay open up to this long (bigger batches, fewer requests; "
     "never past flush-bytes)"},
    {"pacing", OPT_STR, OFF(pacing), "on", 0, 0, NULL,
     "on: stretch flush intervals from the rate-limit headers (see "
     "docs/scale.md); off: always flush-interval-ms"},
    {"stats-interval-ms", OPT_MS, OFF(stats_interval_ms), "1000", 10, 3600000,
     NULL, "how often the stats socket writes a line"},
    {"stats-max-clients", OPT_UINT, OFF(stats_max_clients), "16", 1, 1024, NULL,
     "stats socket clients served at once; one more is closed as it "
     "connects, and a client that writes anything is closed"},
    {"max-datagram", OPT_SIZE, OFF(max_datagram), "8KiB", 64, 65507, NULL,
     "largest datagram accepted; larger ones count as oversize"},
    {"rcvbuf", OPT_SIZE, OFF(rcvbuf_bytes), "16MiB", 65536, 1073741824, NULL,
     "SO_RCVBUF to ask for (raise net.core.rmem_max to get it all)"},
    {"http-timeout-ms", OPT_MS, OFF(http_timeout_ms), "10000", 100, 600000, NULL,
     "whole-request timeout for one POST"},
    {"max-inflight", OPT_UINT, OFF(max_inflight), "4", 1, 64, NULL,
     "requests in flight per dataset"},
    {"max-memory", OPT_SIZE, OFF(max_memory), "64MiB", 65536, 68719476736ull,
     NULL, "memory for batches waiting and in flight; past it new batches "
     "go to the spool (flush-bytes is lowered to an eighth of it)"},
    {"max-spool-bytes", OPT_SIZE, OFF(max_spool_bytes), "1GiB", 65536,
     1099511627776ull, NULL,
     "disk for the spool; past it the oldest segment is deleted (counted)"},
    {"spool-segment-bytes", OPT_SIZE, OFF(spool_segment_bytes), "16MiB", 4096,
     1073741824, NULL, "a spool segment file is closed past this size"},
    {"max-dead-letter-bytes", OPT_SIZE, OFF(max_dead_letter_bytes), "64MiB", 4096,
     1099511627776ull, NULL,
     "dead-letter.ndjson is rotated (one old copy kept) past this size"},
    {"backoff-min-ms", OPT_MS, OFF(backoff_min_ms), "500", 1, 3600000, NULL,
     "first retry backoff ceiling; waits are uniform in half to all of the "
     "ceiling, which doubles per failure"},
    {"backoff-max-ms", OPT_MS, OFF(backoff_max_ms), "60000", 1, 3600000, NULL,
     "largest retry backoff"},
    {"max-event-age", OPT_DURATION, OFF(max_event_age_ms), "7d", 0, 3650 * 86400000ull,
     NULL, "reject events (stale_time) whose start time is older than this when "
     "received: the datasources' 180-day TTL would delete them at the next merge, "
     "and one batch must not span many monthly partitions; 0 turns the check off"},
    {"max-event-skew", OPT_DURATION, OFF(max_event_skew_ms), "5m", 0, 365 * 86400000ull,
     NULL, "reject events (future_time) whose start time is further than this "
     "ahead of the time of receipt; 0 turns the check off"},
    {"shutdown-timeout-ms", OPT_MS, OFF(shutdown_timeout_ms), "5000", 0, 600000,
     NULL, "on SIGTERM, how long to keep flushing before giving up"},
    {"kafka-brokers", OPT_STR, OFF(kafka_brokers), NULL, 0, 0, NULL,
     "Kafka bootstrap brokers HOST:PORT[,...]: when set, batches go to Kafka "
     "(one message per row, keyed by id) instead of Tinybird's Events API"},
    {"kafka-topic-prefix", OPT_STR, OFF(kafka_topic_prefix), NULL, 0, 0, NULL,
     "prepended to the dataset name to make each Kafka topic (none: the "
     "topic is the dataset name)"},
    {"kafka-compression", OPT_STR, OFF(kafka_compression), "lz4", 0, 0, NULL,
     "Kafka message set compression: none, gzip, snappy, lz4 or zstd"},
    {"kafka-password-file", OPT_STR, OFF(kafka_password_file), NULL, 0, 0, NULL,
     "file holding the SASL password (sasl.password), readable by its owner "
     "only; under systemd, without this option, the credential kafka-password "
     "is read ($CREDENTIALS_DIRECTORY/kafka-password)"},
    {"kafka-property", OPT_PAIRS, OFF(kafka_properties), NULL, 0, 0, NULL,
     "a librdkafka setting passed through, such as security.protocol=SASL_SSL, "
     "sasl.mechanism, sasl.username, ssl.ca.location; repeatable (a JSON array "
     "or object in the file, whitespace-separated in the environment)"},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(N_OPTIONS <= CONFIG_OPTIONS_MAX, "raise CONFIG_OPTIONS_MAX");

static const char *const source_names[] = {"default", "file", "environment", "flag"};

static void errf(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* A listening address (option opt) must parse, and be loopback unless
 * allow_remote: any host could otherwise read or send what it serves. */
static int check_listen(const char *opt, const char *addr, int allow_remote, char *err,
                        size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (bf_addr_parse(addr, BF_ADDR_BIND, &ss, &len) < 0 || ss.ss_family == AF_UNIX) {
        errf(err, n, "option '%s': '%s' is not A.B.C.D:PORT, [IPv6]:PORT or "
                     "localhost:PORT", opt, addr);
        return -1;
    }
    if (!bf_addr_is_loopback((struct sockaddr *)&ss)) {
        if (!allow_remote) {
            errf(err, n, "option '%s': '%s' is not a loopback address; other hosts "
                         "could reach it (give --allow-remote to allow it)", opt, addr);
            return -1;
        }
        log_warn("listen_remote", "option=%s addr=%s note=\"--allow-remote: any host "
                                  "that reaches this address can read what it serves\"",
                 opt, addr);
    }
    return 0;
}

/* "4MiB", "4M", "512k", "4194304" -> bytes (binary multiples); "7d",
 * "5m", "90s", "250ms", "1000" -> milliseconds (OPT_DURATION). */
static int parse_number(const char *s, enum opt_type type, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul = 1;
    if (type == OPT_SIZE && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': mul = 1024; break;
        case 'm': mul = 1024 * 1024; break;
        case 'g': mul = 1024 * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (strcasecmp(end, "ib") == 0 || strcasecmp(end, "b") == 0)
            end += strlen(end);
    }
    if (type == OPT_DURATION && *end) {
        static const struct {
            const char *unit;
            uint64_t ms;
        } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
                     {"d", 86400000}};
        size_t u = 0;
        while (u < sizeof(units) / sizeof(units[0]) && strcmp(end, units[u].unit) != 0)
            u++;
        if (u == sizeof(units) / sizeof(units[0]))
            return -1;
        mul = units[u].ms;
        end += strlen(end);
    }
    if (*end || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* "1", "yes", "true", "on" and "0", "no", "false", "off", any case. */
static int parse_bool(const char *s, uint64_t *out)
{
    static const char *const yes[] = {"1", "yes", "true", "on"}, *const no[] = {
        "0", "no", "false", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return (*out = 1), 0;
        if (strcasecmp(s, no[i]) == 0)
            return (*out = 0), 0;
    }
    return -1;
}

/* Set one option from text, remembering where it came from. src names
 * the source for error messages (the file's path for the file). */
static int set_option(bf_config *cfg, const option_def *o, const char *val,
                      enum config_source from, const char *src, char *err, size_t n)
{
    char *slot = (char *)cfg + o->offset;
    int again = cfg->source[o - options] == from && from == CONFIG_SRC_FLAG;
    cfg->source[o - options] = (unsigned char)from;
    if (o->type == OPT_LIST && again && *(char **)slot) {
        /* Another flag of a list: one more value. */
        char *old = *(char **)slot, *joined = malloc(strlen(old) + strlen(val) + 2);
        if (!joined) {
            errf(err, n, "out of memory");
            return -1;
        }
        sprintf(joined, "%s,%s", old, val);
        free(old);
        *(char **)slot = joined;
        return 0;
    }
    if (o->type == OPT_BOOL) {
        uint64_t b;
        if (parse_bool(val, &b) < 0) {
            errf(err, n, "%s: option '%s': '%s' is not yes or no", src, o->name, val);
            return -1;
        }
        *(uint64_t *)slot = b;
        return 0;
    }
    if (o->type == OPT_PAIRS) {
        const char *eq = strchr(val, '=');
        if (!eq || eq == val) {
            errf(err, n, "%s: option '%s': '%s' is not KEY=VALUE", src, o->name, val);
            return -1;
        }
        bf_strlist *l = (bf_strlist *)slot;
        char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
        char *copy = v ? strdup(val) : NULL;
        if (v)
            l->v = v;
        if (!copy) {
            errf(err, n, "out of memory");
            return -1;
        }
        l->v[l->n++] = copy;
        return 0;
    }
    if (is_text(o)) {
        char *copy = strdup(val);
        if (!copy) {
            errf(err, n, "out of memory");
            return -1;
        }
        free(*(char **)slot);
        *(char **)slot = copy;
        return 0;
    }
    uint64_t v;
    if (parse_number(val, o->type, &v) < 0) {
        errf(err, n, "%s: option '%s': '%s' is not a %s", src, o->name, val,
             o->type == OPT_SIZE       ? "size (bytes, or with K/M/G suffix)"
             : o->type == OPT_DURATION ? "duration (ms, or with ms/s/m/h/d)"
                                       : "non-negative integer");
        return -1;
    }
    if (v < o->min || v > o->max) {
        errf(err, n, "%s: option '%s': %llu is out of range [%llu, %llu]", src,
             o->name, (unsigned long long)v, (unsigned long long)o->min,
             (unsigned long long)o->max);
        return -1;
    }
    *(uint64_t *)slot = v;
    return 0;
}

static const option_def *find_option(const char *key)
{
    char norm[64];
    size_t i;
    for (i = 0; key[i] && i < sizeof(norm) - 1; i++)
        norm[i] = key[i] == '_' ? '-' : key[i];
    norm[i] = '\0';
    for (size_t k = 0; k < N_OPTIONS; k++)
        if (strcmp(options[k].name, norm) == 0)
            return &options[k];
    return NULL;
}

/* ["a", "b"] as "a,b" (new; NULL when not all strings, or empty). */
static char *join_strings(json_t *arr)
{
    size_t len = 0, i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        if (!json_is_string(e))
            return NULL;
        len += strlen(json_string_value(e)) + 1;
    }
    char *out = len ? malloc(len) : NULL;
    if (!out)
        return NULL;
    out[0] = '\0';
    json_array_foreach(arr, i, e) {
        if (i)
            strcat(out, ",");
        strcat(out, json_string_value(e));
    }
    return out;
}

/* A repeatable option in the JSON file: ["KEY=VALUE", ...] or
 * {"KEY": "VALUE", ...}. */
static int load_pairs(bf_config *cfg, const option_def *o, json_t *v, const char *path,
                     char *err, size_t n)
{
    size_t i;
    json_t *e;
    const char *key;
    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                errf(err, n, "%s: key '%s': expected strings KEY=VALUE", path, o->name);
                return -1;
            }
            if (set_option(cfg, o, json_string_value(e), CONFIG_SRC_FILE, path, err,
                           n) < 0)
                return -1;
        }
        return 0;
    }
    if (!json_is_object(v)) {
        errf(err, n, "%s: key '%s': expected an array of KEY=VALUE strings or an "
                     "object", path, o->name);
        return -1;
    }
    json_object_foreach(v, key, e) {
        char kv[1024];
        if (!json_is_string(e) ||
            (size_t)snprintf(kv, sizeof(kv), "%s=%s", key, json_string_value(e)) >=
                sizeof(kv)) {
            errf(err, n, "%s: key '%s': '%s' needs a string value (under 1 KiB)", path,
                 o->name, key);
            return -1;
        }
        if (set_option(cfg, o, kv, CONFIG_SRC_FILE, path, err, n) < 0)
            return -1;
    }
    return 0;
}

static int load_file(bf_config *cfg, const char *path, char *err, size_t n)
{
    /* Opened here so a missing or unreadable file is named with the
     * reason, not as jansson's "path:-1: unable to open". */
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        errf(err, n, "config file %s: %s", path, strerror(e));
        return -1;
    }
    json_error_t jerr;
    int fd = fileno(f);
    if (file_check(fd, path, "config file", 0, err, n) < 0) {
        fclose(f);
        return -1;
    }
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        errf(err, n, "%s:%d: %s", path, jerr.line, jerr.text);
        fclose(f);
        return -1;
    }
    /* A token in the file: the file is a secret too. */
    if (json_object_get(root, "token") &&
        file_check(fd, path, "config file holding a token", FILE_CHECK_SECRET, err, n) < 0) {
        json_decref(root);
        fclose(f);
        return -1;
    }
    fclose(f);
    if (!json_is_object(root)) {
        errf(err, n, "%s: the config must be a JSON object", path);
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v) {
        const option_def *o = find_option(key);
        char num[32];
        if (!o) {
            errf(err, n, "%s: unknown key '%s'", path, key);
            rc = -1;
            break;
        }
        if (o->type == OPT_PAIRS) {
            if (load_pairs(cfg, o, v, path, err, n) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        const char *text;
        char *list = NULL;
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v) && !is_text(o) && o->type != OPT_BOOL &&
                   json_integer_value(v) >= 0) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
            text = num;
        } else if (json_is_boolean(v) && o->type == OPT_BOOL) {
            text = json_is_true(v) ? "yes" : "no";
        } else if (json_is_array(v) && o->type == OPT_LIST &&
                   (text = list = join_strings(v)) != NULL) {
        } else {
            errf(err, n, "%s: key '%s': expected %s", path, key,
                 o->type == OPT_STR    ? "a string"
                 : o->type == OPT_LIST ? "a string or an array of strings"
                 : o->type == OPT_BOOL ? "true or false"
                                       : "a non-negative integer");
            rc = -1;
            break;
        }
        rc = set_option(cfg, o, text, CONFIG_SRC_FILE, path, err, n);
        free(list);
        if (rc < 0)
            break;
    }
    json_decref(root);
    return rc;
}

static int load_env(bf_config *cfg, char *err, size_t n)
{
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option_def *o = &options[k];
        char name[80] = "BIRDFEEDER_";
        size_t len = strlen(name);
        for (const char *p = o->name; *p && len < sizeof(name) - 1; p++)
            name[len++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        name[len] = '\0';
        const char *val = getenv(name);
        /* The service-side names (TINYBIRD_API_KEY ...) come after ours. */
        if ((!val || !*val) && o->env) {
            char list[128];
            snprintf(list, sizeof(list), "%s", o->env);
            for (char *save, *e = strtok_r(list, " ", &save); e && (!val || !*val);
                 e = strtok_r(NULL, " ", &save))
                val = getenv(e);
        }
        if (!val || !*val)
            continue;
        if (o->type != OPT_PAIRS) {
            if (set_option(cfg, o, val, CONFIG_SRC_ENV, "environment", err, n) < 0)
                return -1;
            continue;
        }
        char *words = strdup(val);
        if (!words) {
            errf(err, n, "out of memory");
            return -1;
        }
        int rc = 0;
        for (char *save, *w = strtok_r(words, " \t\n", &save); w && rc == 0;
             w = strtok_r(NULL, " \t\n", &save))
            rc = set_option(cfg, o, w, CONFIG_SRC_ENV, "environment", err, n);
        free(words);
        if (rc < 0)
            return -1;
    }
    return 0;
}

void config_usage(void)
{
    printf("usage: birdfeederd [options]\n\n"
           "Receives one datagram per event (UDP on loopback, or a Unix socket),\n"
           "enriches the events and sends them in batches to Tinybird's Events API.\n\n"
           "Each option can also be set as BIRDFEEDER_<NAME> in the environment\n"
           "or as a key of the JSON file given with --config; the flag beats\n"
           "the environment beats the file.\n\n");
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option_def *o = &options[k];
        printf("  --%s%s\n      %s\n", o->name,
               is_text(o)                ? " VALUE"
               : o->type == OPT_PAIRS    ? " KEY=VALUE"
               : o->type == OPT_BOOL     ? "[=BOOL]"
               : o->type == OPT_SIZE     ? " BYTES"
               : o->type == OPT_DURATION ? " DURATION"
                                         : " N",
               o->help);
        if (o->def && strcmp(o->def, CATALOG_DEF) == 0)
            printf("      default (by context): %s when installed, else the built-in "
                   "catalog\n", INSTALLED_CATALOG);
        else if (o->def && strcmp(o->def, GROUP_DEF) == 0)
            printf("      default (by context): %s when that group exists, else none\n",
                   OPERATORS_GROUP);
        else if (by_context(o))
            printf("      default (by context): %s\n", o->def);
        else if (o->def)
            printf("      default: %s\n", o->def);
        if (o->env)
            printf("      environment: %s\n", o->env);
    }
    printf("  --config FILE\n      JSON config file (also BIRDFEEDER_CONFIG)\n"
           "  --check-config\n      check everything a start would (the configuration, the\n"
           "      catalog, the key file, the directories, the listen address), print\n"
           "      the effective values (token hidden) as JSON, exit 0 when the\n"
           "      daemon would start, else 1 naming the first failure\n"
           "  --help, --version\n\n"
           "Defaults by context:\n"
           "  <state>    $STATE_DIRECTORY under systemd; /var/lib/birdfeeder as root;\n"
           "             else $XDG_STATE_HOME/birdfeeder (~/.local/state/birdfeeder)\n"
           "  <runtime>  $RUNTIME_DIRECTORY under systemd; /run/birdfeeder as root;\n"
           "             else $XDG_RUNTIME_DIR/birdfeeder, else <state>/run\n"
           "  Directories chosen this way are created with their parents (mode\n"
           "  0700, runtime 0750).\n\n");
    bf_paths p;
    paths_resolve(&p, geteuid() == 0);
    printf("Here: <state> is %s (from %s), <runtime> is %s (from %s);\n"
           "the catalog without --catalog is %s.\n",
           *p.state ? p.state : "(none)", p.state_from,
           *p.runtime ? p.runtime : "(none)", p.runtime_from,
           access(INSTALLED_CATALOG, F_OK) == 0 ? INSTALLED_CATALOG " (installed)"
                                                : "the built-in one");
}

/* A KEY=VALUE list as a JSON array, values of keys that name a password or
 * a secret shown as "(set)". */
static json_t *pairs_json(const bf_strlist *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n; i++) {
        const char *kv = l->v[i], *eq = strchr(kv, '=');
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        if (strcasestr(key, "password") || strcasestr(key, "secret")) {
            char masked[300];
            snprintf(masked, sizeof(masked), "%s=(set)", key);
            json_array_append_new(a, json_string(masked));
        } else {
            json_array_append_new(a, json_string(kv));
        }
    }
    return a;
}

void config_print(const bf_config *cfg)
{
    json_t *o = json_object();
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option_def *opt = &options[k];
        const char *slot = (const char *)cfg + opt->offset;
        json_t *v;
        if (opt->type == OPT_PAIRS) {
            v = pairs_json((const bf_strlist *)slot);
        } else if (is_text(opt)) {
            const char *str = *(char *const *)slot;
            if (str && opt->offset == offsetof(bf_config, token))
                str = "(set)"; /* never print a secret */
            v = str ? json_string(str) : json_null();
        } else if (opt->type == OPT_BOOL) {
            v = json_boolean(*(const uint64_t *)slot);
        } else {
            v = json_integer((json_int_t) * (const uint64_t *)slot);
        }
        json_object_set_new(o, opt->name, v);
    }
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
}

/* The options whose values differ between a and b, among those named in
 * list (among) or all but those (!among). */
static void diff(const bf_config *a, const bf_config *b, const char *const *list, int among,
                 char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option_def *o = &options[k];
        int listed = 0;
        for (const char *const *l = list; l && *l; l++)
            listed |= strcmp(*l, o->name) == 0;
        if (listed != among)
            continue;
        const char *pa = (const char *)a + o->offset, *pb = (const char *)b + o->offset;
        int same;
        if (o->type == OPT_PAIRS) {
            const bf_strlist *la = (const bf_strlist *)pa, *lb = (const bf_strlist *)pb;
            same = la->n == lb->n;
            for (size_t i = 0; same && i < la->n; i++)
                same = strcmp(la->v[i], lb->v[i]) == 0;
        } else if (is_text(o)) {
            const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
            same = (!sa && !sb) || (sa && sb && strcmp(sa, sb) == 0);
        } else {
            same = *(const uint64_t *)pa == *(const uint64_t *)pb;
        }
        if (same)
            continue;
        if (used + strlen(o->name) + 2 > n)
            break; /* a cut list, never one with a hole in it */
        used += (size_t)snprintf(out + used, n - used, "%s%s", used ? "," : "", o->name);
    }
}

/* ---- the token ---- */

#define TOKEN_MAX 4096 /* secret.h: a secret file holds at most 4 KiB */

/* The token must fit in an HTTP header line as it is: visible ASCII. */
static int token_ok(const char *t, const char *from, char *err, size_t n)
{
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p <= ' ' || *p >= 0x7f) {
            errf(err, n, "the token from %s holds a space, a control or a "
                         "non-ASCII byte at offset %zu: not a Tinybird token",
                 from, (size_t)(p - (const unsigned char *)t));
            return -1;
        }
    return 0;
}

/* The first line of path (without its newline) in *out, newly allocated.
 * The file is read as every secret is (secret.h: check, size, one
 * trailing newline); then only its first line is the token. */
static int read_token_file(const char *path, int check, char **out, char *err,
                           size_t n)
{
    char *buf = NULL;
    int rc = secret_read_file(path, "token file", check, &buf, err, n);
    if (rc == -EFBIG)
        errf(err, n, "token file %s: longer than %d bytes", path, TOKEN_MAX);
    if (rc < 0)
        return -1;
    size_t tl = strcspn(buf, "\n");
    if (tl > 0 && buf[tl - 1] == '\r')
        tl--;
    buf[tl] = '\0';
    if (tl == 0) {
        errf(err, n, "token file %s: the first line is empty", path);
        free(buf);
        return -1;
    }
    if (token_ok(buf, path, err, n) < 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

static int empty_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
}

/* The token and token-file options as one source (file, environment or
 * flags) set them; each owned. */
typedef struct token_level {
    char *token, *file;
} token_level;

static void level_take(bf_config *cfg, token_level *lv)
{
    free(lv->token);
    free(lv->file);
    lv->token = cfg->token;
    lv->file = cfg->token_file;
    cfg->token = cfg->token_file = NULL;
}

static void level_free(token_level *lv)
{
    free(lv->token);
    free(lv->file);
    lv->token = lv->file = NULL;
}

/* The Kafka password as a systemd credential (LoadCredential=kafka-password:
 * /etc/birdfeeder/kafka.password), when no --kafka-password-file is given:
 * the unit's dynamic user cannot open a root-only file itself, and systemd
 * hands the credential to it alone. */
static int resolve_kafka_password(bf_config *cfg, char *err, size_t n)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    cfg->kafka_password_credential = 0;
    if (!cfg->kafka_brokers || !*cfg->kafka_brokers || cfg->kafka_password_file || !dir ||
        !*dir)
        return 0;
    char cred[4200];
    snprintf(cred, sizeof(cred), "%s/kafka-password", dir);
    if (access(cred, F_OK) < 0)
        return 0;
    if (!(cfg->kafka_password_file = strdup(cred))) {
        errf(err, n, "out of memory");
        return -1;
    }
    cfg->kafka_password_credential = 1;
    cfg->source[find_option("kafka-password-file") - options] = CONFIG_SRC_ENV;
    return 0;
}

/* Pick the token by the order config.h states; lv[0] is the config file,
 * lv[1] the environment, lv[2] the flags. */
static int resolve_token(bf_config *cfg, token_level lv[3], char *err, size_t n)
{
    char cred[4200] = "";
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir && *dir) {
        snprintf(cred, sizeof(cred), "%s/tinybird-token", dir);
        if (access(cred, F_OK) < 0)
            cred[0] = '\0';
    }
    if (lv[2].file && lv[2].token) {
        errf(err, n, "give --token-file or --token, not both");
        return -1;
    }
    struct {
        const char *file, *token, *source;
        int check;
        enum config_source level;
    } order[] = {
        {lv[2].file, NULL, "--token-file", 1, CONFIG_SRC_FLAG},
        {NULL, lv[2].token, "--token", 0, CONFIG_SRC_FLAG},
        {lv[1].file, NULL, "BIRDFEEDER_TOKEN_FILE", 1, CONFIG_SRC_ENV},
        {cred[0] ? cred : NULL, NULL, "credential", 0, CONFIG_SRC_ENV},
        {NULL, lv[1].token, "environment", 0, CONFIG_SRC_ENV},
        {lv[0].file, NULL, "file token-file", 1, CONFIG_SRC_FILE},
        {NULL, lv[0].token, "file", 0, CONFIG_SRC_FILE},
    };
    size_t tok = (size_t)(find_option("token") - options);
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        if (order[k].file == cred && empty_file(cred)) {
            /* The unit loads the credential whether or not there is a
             * token: an empty one runs the daemon without (file sink). */
            cfg->token_source = NULL;
            cfg->source[tok] = CONFIG_SRC_ENV;
            return 0;
        }
        if (order[k].file) {
            if (read_token_file(order[k].file, order[k].check, &cfg->token, err, n) < 0)
                return -1;
            if (!(cfg->token_file = strdup(order[k].file))) {
                errf(err, n, "out of memory");
                return -1;
            }
        } else if (order[k].token) {
            /* An empty value means no token (and hides the ones below). */
            if (*order[k].token) {
                if (token_ok(order[k].token, order[k].source, err, n) < 0)
                    return -1;
                if (!(cfg->token = strdup(order[k].token))) {
                    errf(err, n, "out of memory");
                    return -1;
                }
            }
        } else {
            continue;
        }
        cfg->token_source = cfg->token ? order[k].source : NULL;
        cfg->source[tok] = (unsigned char)order[k].level;
        if (k == 1 && cfg->token)
            log_warn("token_on_command_line",
                     "hint=\"every local user can read --token in /proc/PID/cmdline; "
                     "use --token-file, LoadCredential=tinybird-token or "
                     "TINYBIRD_API_KEY\"");
        return 0;
    }
    return 0;
}

void config_diff(const bf_config *a, const bf_config *b, const char *const *skip,
                 char *out, size_t n)
{
    diff(a, b, skip, 0, out, n);
}

void config_diff_among(const bf_config *a, const bf_config *b, const char *const *names,
                       char *out, size_t n)
{
    diff(a, b, names, 1, out, n);
}

void config_free(bf_config *cfg)
{
    for (size_t k = 0; k < N_OPTIONS; k++)
        if (is_text(&options[k])) {
            char **slot = (char **)((char *)cfg + options[k].offset);
            free(*slot);
            *slot = NULL;
        } else if (options[k].type == OPT_PAIRS) {
            bf_strlist *l = (bf_strlist *)((char *)cfg + options[k].offset);
            for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
            free(l->v);
            l->v = NULL;
            l->n = 0;
        }
    free(cfg->config_file);
    cfg->config_file = NULL;
    free(cfg->state_dir);
    free(cfg->runtime_dir);
    cfg->state_dir = cfg->runtime_dir = NULL;
}

void config_take(bf_config *dst, bf_config *src, const char *const *names)
{
    for (const char *const *nm = names; *nm; nm++) {
        const option_def *o = find_option(*nm);
        if (!o)
            continue;
        size_t k = (size_t)(o - options);
        char *pd = (char *)dst + o->offset, *ps = (char *)src + o->offset;
        if (is_text(o)) {
            char *t = *(char **)pd;
            *(char **)pd = *(char **)ps;
            *(char **)ps = t;
        } else if (o->type == OPT_PAIRS) { /* the pointer and its count */
            bf_strlist t = *(bf_strlist *)pd;
            *(bf_strlist *)pd = *(bf_strlist *)ps;
            *(bf_strlist *)ps = t;
        } else {
            uint64_t t = *(uint64_t *)pd;
            *(uint64_t *)pd = *(uint64_t *)ps;
            *(uint64_t *)ps = t;
        }
        unsigned char t = dst->source[k];
        dst->source[k] = src->source[k];
        src->source[k] = t;
    }
}

enum config_source config_source(const bf_config *cfg, const char *name)
{
    const option_def *o = find_option(name);
    return o ? (enum config_source)cfg->source[o - options] : CONFIG_SRC_DEFAULT;
}

const char *config_source_name(enum config_source src)
{
    return (unsigned)src < sizeof(source_names) / sizeof(source_names[0])
               ? source_names[src] : "default";
}

/* The running token comes from one source; a reload re-reads the config
 * file and token files, while systemd copies the credential at start and
 * the environment and flags are the process's own. */
const char *config_token_note(const bf_config *now, const bf_config *fresh)
{
    enum config_source src = config_source(fresh, "token");
    int same = (!now->token && !fresh->token) ||
               (now->token && fresh->token && strcmp(now->token, fresh->token) == 0);
    if (!same)
        return "changed";
    if (fresh->token_source && strcmp(fresh->token_source, "credential") == 0)
        return "unchanged: systemd copies the credential at start; restart the "
               "daemon to read /etc/birdfeeder/token again";
    if (fresh->token_file)
        return "unchanged"; /* read again from its file */
    if (src == CONFIG_SRC_ENV)
        return "unchanged: it comes from the environment, which a reload does not read "
               "again; restart the daemon with the new token";
    if (src == CONFIG_SRC_FLAG)
        return "unchanged: it comes from a flag; restart the daemon with the new token";
    return "unchanged";
}

/* cfg->stats_socket_gid from the group's name or number; an unknown group
 * given explicitly is an error (a typo would leave operators locked out). */
static int resolve_group(bf_config *cfg, char *err, size_t n)
{
    const char *g = cfg->stats_socket_group;
    cfg->stats_socket_gid = -1;
    if (!g || !*g)
        return 0;
    struct group *gr = getgrnam(g);
    char *end;
    errno = 0;
    unsigned long num = strtoul(g, &end, 10);
    if (gr)
        cfg->stats_socket_gid = (long)gr->gr_gid;
    else if (isdigit((unsigned char)*g) && !*end && !errno && num < 0x7fffffffUL)
        cfg->stats_socket_gid = (long)num;
    else {
        errf(err, n, "option 'stats-socket-group': no group '%s' on this host (groupadd "
                     "it, or '' for none)", g);
        return -1;
    }
    return 0;
}

/* The defaults that depend on the context (paths.h), for the options no
 * source set: DIR/name under the state or runtime directory, and the
 * installed catalog when there is one (else NULL: the built-in one). */
static int derive_defaults(bf_config *cfg, char *err, size_t n)
{
    bf_paths p;
    paths_resolve(&p, geteuid() == 0);
    cfg->state_from = p.state_from;
    cfg->runtime_from = p.runtime_from;
    if (!(cfg->state_dir = strdup(p.state)) || !(cfg->runtime_dir = strdup(p.runtime))) {
        errf(err, n, "out of memory");
        return -1;
    }
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option_def *o = &options[k];
        if (!by_context(o) || cfg->source[k] != CONFIG_SRC_DEFAULT)
            continue;
        char val[PATHS_MAX + 64];
        if (strcmp(o->def, GROUP_DEF) == 0) {
            if (!getgrnam(OPERATORS_GROUP))
                continue; /* none: the socket keeps the daemon's group */
            snprintf(val, sizeof(val), "%s", OPERATORS_GROUP);
        } else if (strcmp(o->def, CATALOG_DEF) == 0) {
            if (access(INSTALLED_CATALOG, F_OK) < 0)
                continue; /* the built-in catalog */
            snprintf(val, sizeof(val), "%s", INSTALLED_CATALOG);
        } else {
            int state = strncmp(o->def, STATE_DEF, strlen(STATE_DEF)) == 0;
            const char *dir = state ? p.state : p.runtime;
            if (!*dir) {
                errf(err, n, "option '%s': no %s directory to put it in: set HOME or "
                             "XDG_STATE_HOME, or give --%s", o->name,
                     state ? "state" : "runtime", o->name);
                return -1;
            }
            snprintf(val, sizeof(val), "%s/%s", dir, strchr(o->def, '/') + 1);
        }
        if (set_option(cfg, o, val, CONFIG_SRC_DEFAULT, "default", err, n) < 0)
            return -1;
    }
    return 0;
}

static enum config_result check_fields(bf_config *cfg, char *err, size_t n);

/* The host of "HOST[:PORT][/...]" (after "http://") is loopback
 * (bf_addr_is_loopback) or "localhost". No userinfo: "127.0.0.1@evil" is
 * not loopback. */
static int url_host_is_loopback(const char *auth)
{
    char host[64];
    size_t len = strcspn(auth, "/?#");
    if (memchr(auth, '@', len))
        return 0;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    const char *h = auth;
    size_t hl = strcspn(auth, ":/?#");
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', len);
        if (!close)
            return 0;
        h = auth + 1;
        hl = (size_t)(close - h);
    }
    if (hl >= sizeof(host))
        return 0;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (auth[0] != '[' && strcasecmp(host, "localhost") == 0)
        return 1;
    if ((auth[0] == '[' ? inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr)
                        : inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr)) ==
        1) {
        ss.ss_family = auth[0] == '[' ? AF_INET6 : AF_INET;
        return bf_addr_is_loopback((struct sockaddr *)&ss);
    }
    return 0;
}

/* librdkafka settings the daemon makes itself, each from its own option or
 * rule; --kafka-property may not change them. */
static const struct {
    const char *key, *why;
} kafka_reserved[] = {
    {"bootstrap.servers", "use --kafka-brokers"},
    {"metadata.broker.list", "use --kafka-brokers"},
    {"compression.codec", "use --kafka-compression"},
    {"compression.type", "use --kafka-compression"},
    {"sasl.password", "use --kafka-password-file, so the secret is in no argv"},
    {"acks", "the delivery promise needs acks=all"},
    {"request.required.acks", "the delivery promise needs acks=all"},
    {"enable.idempotence", "the delivery promise needs the idempotent producer"},
    {"queue.buffering.max.kbytes", "derived from --max-memory"},
    {"queue.buffering.max.messages", "derived from --max-memory"},
    {"log.queue", "log lines must reach the loop thread"},
};

static int check_kafka(const bf_config *cfg, char *err, size_t n)
{
    for (size_t i = 0; i < cfg->kafka_properties.n; i++) {
        const char *kv = cfg->kafka_properties.v[i];
        size_t kl = (size_t)(strchr(kv, '=') - kv);
        for (size_t r = 0; r < sizeof(kafka_reserved) / sizeof(kafka_reserved[0]); r++)
            if (strlen(kafka_reserved[r].key) == kl &&
                strncmp(kv, kafka_reserved[r].key, kl) == 0) {
                errf(err, n, "option 'kafka-property': %s is set by birdfeederd (%s)",
                     kafka_reserved[r].key, kafka_reserved[r].why);
                return -1;
            }
    }
    static const char *const codecs[] = {"none", "gzip", "snappy", "lz4", "zstd"};
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (strcmp(cfg->kafka_compression, codecs[i]) == 0)
            return 0;
    errf(err, n, "option 'kafka-compression': '%s' is not none, gzip, snappy, lz4 "
                 "or zstd", cfg->kafka_compression);
    return -1;
}

enum config_result config_load(bf_config *cfg, int argc, char **argv, char *err,
                               size_t n)
{
    enum { O_CONFIG = 1000, O_CHECK, O_HELP, O_VERSION };
    struct option longopts[N_OPTIONS + 5];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t k = 0; k < N_OPTIONS; k++) {
        longopts[k] = (struct option){options[k].name,
                                      options[k].type == OPT_BOOL ? optional_argument
                                                                  : required_argument,
                                      NULL, (int)k};
        if (options[k].def && !by_context(&options[k]) &&
            set_option(cfg, &options[k], options[k].def, CONFIG_SRC_DEFAULT, "default",
                       err, n) < 0)
            return CONFIG_ERROR;
    }
    longopts[N_OPTIONS] = (struct option){"config", required_argument, NULL, O_CONFIG};
    longopts[N_OPTIONS + 1] = (struct option){"check-config", no_argument, NULL, O_CHECK};
    longopts[N_OPTIONS + 2] = (struct option){"help", no_argument, NULL, O_HELP};
    longopts[N_OPTIONS + 3] = (struct option){"version", no_argument, NULL, O_VERSION};
    longopts[N_OPTIONS + 4] = (struct option){NULL, 0, NULL, 0};

    /* Pass 1: find --config and the one-shot flags. */
    const char *file = getenv("BIRDFEEDER_CONFIG");
    int c;
    optind = 0; /* glibc: full reinit, so config_load can run again */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (c == O_CONFIG)
            file = optarg;
        else if (c == O_CHECK)
            cfg->check_only = 1;
        else if (c == O_HELP) {
            config_usage();
            return CONFIG_EXIT_OK;
        } else if (c == O_VERSION) {
            printf("birdfeederd %s (protocol v1)\n", BF_VERSION);
            return CONFIG_EXIT_OK;
        } else if (c == '?') {
            /* An unknown short option ("-xy") may leave optind on its own
             * element, so name it by optopt; long ones by argv. */
            if (optopt > ' ' && optopt < 127)
                errf(err, n, "unknown option '-%c' (see --help)", optopt);
            else
                errf(err, n, "unknown option '%s' (see --help)", argv[optind - 1]);
            return CONFIG_ERROR;
        } else if (c == ':') {
            errf(err, n, "option '%s' needs a value", argv[optind - 1]);
            return CONFIG_ERROR;
        }
    }
    if (optind < argc) {
        errf(err, n, "unexpected argument '%s' (see --help)", argv[optind]);
        return CONFIG_ERROR;
    }
    /* The token options are taken out after each source, so the order
     * between sources is known when the token is picked. */
    token_level lv[3] = {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}};
    enum config_result rc = CONFIG_ERROR;
    if (file && *file) {
        cfg->config_file = strdup(file);
        if (load_file(cfg, file, err, n) < 0)
            goto out;
    }
    level_take(cfg, &lv[0]);
    if (load_env(cfg, err, n) < 0)
        goto out;
    level_take(cfg, &lv[1]);
    /* Pass 2: the flags, which win. */
    optind = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (c >= 0 && c < (int)N_OPTIONS &&
            set_option(cfg, &options[c], optarg ? optarg : "yes", CONFIG_SRC_FLAG, "flag",
                       err, n) < 0)
            goto out;
    }
    level_take(cfg, &lv[2]);
    if (resolve_token(cfg, lv, err, n) < 0 || resolve_kafka_password(cfg, err, n) < 0)
        goto out;
    rc = check_fields(cfg, err, n);
out:
    for (int i = 0; i < 3; i++)
        level_free(&lv[i]);
    return rc;
}

/* Cross-field checks, once every source is in. */
static enum config_result check_fields(bf_config *cfg, char *err, size_t n)
{
    size_t ul = cfg->tinybird_url ? strlen(cfg->tinybird_url) : 0;
    while (ul > 0 && cfg->tinybird_url[ul - 1] == '/')
        cfg->tinybird_url[--ul] = '\0';
    if (cfg->kafka_brokers && !*cfg->kafka_brokers) {
        free(cfg->kafka_brokers);
        cfg->kafka_brokers = NULL;
    }
    if (ul > 255) {
        errf(err, n, "option 'tinybird-url': longer than 255 bytes");
        return CONFIG_ERROR;
    }
    if (strncmp(cfg->tinybird_url, "https://", 8) != 0 &&
        !(strncmp(cfg->tinybird_url, "http://", 7) == 0 &&
          url_host_is_loopback(cfg->tinybird_url + 7))) {
        errf(err, n, "option 'tinybird-url': '%s' must start with https:// "
                     "(http:// only to a loopback host, for a local test server: "
                     "the token would cross the network in clear)", cfg->tinybird_url);
        return CONFIG_ERROR;
    }
    /* The memory cap is a hard bound (memory.h): every dataset's open
     * buffer, and one closed batch of each on its way to the spool, must
     * leave room for batches in flight: at most an eighth each. */
    if (cfg->flush_bytes > cfg->max_memory / 8) {
        cfg->flush_bytes_asked = cfg->flush_bytes;
        cfg->flush_bytes = cfg->max_memory / 8;
    }
    if (strcmp(cfg->pacing, "on") != 0 && strcmp(cfg->pacing, "off") != 0) {
        errf(err, n, "option 'pacing': '%s' is not on or off", cfg->pacing);
        return CONFIG_ERROR;
    }
    if (cfg->max_flush_interval_ms < cfg->flush_interval_ms) {
        log_info("max_flush_interval_raised", "from=%llu to=%llu reason=flush_interval_ms",
                 (unsigned long long)cfg->max_flush_interval_ms,
                 (unsigned long long)cfg->flush_interval_ms);
        cfg->max_flush_interval_ms = cfg->flush_interval_ms;
    }
    if (cfg->backoff_min_ms > cfg->backoff_max_ms) {
        errf(err, n, "option 'backoff-min-ms': %llu is more than backoff-max-ms %llu",
             (unsigned long long)cfg->backoff_min_ms,
             (unsigned long long)cfg->backoff_max_ms);
        return CONFIG_ERROR;
    }
    if (check_kafka(cfg, err, n) < 0)
        return CONFIG_ERROR;
    if (log_level_parse(cfg->log_level) < 0) {
        errf(err, n, "option 'log-level': '%s' is not debug, info, warn or error",
             cfg->log_level);
        return CONFIG_ERROR;
    }
    /* Loopback only, as every listening socket, unless --allow-remote. */
    if (cfg->metrics_listen && *cfg->metrics_listen &&
        check_listen("metrics-listen", cfg->metrics_listen, (int)cfg->allow_remote, err,
                     n) < 0)
        return CONFIG_ERROR;
    if (log_format_parse(cfg->log_format) < 0) {
        errf(err, n, "option 'log-format': '%s' is not text or json", cfg->log_format);
        return CONFIG_ERROR;
    }
    if (derive_defaults(cfg, err, n) < 0 || resolve_group(cfg, err, n) < 0)
        return CONFIG_ERROR;
    return CONFIG_OK;
}
