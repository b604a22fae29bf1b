/*
 * config.h: every option of birdfeederd, from flags, environment and a JSON
 * file, in that order of precedence (the flag beats the environment beats the
 * file beats the default).
 *
 * The option table in config.c is the one place an option is declared: its
 * flag (--flush-bytes), its JSON key (flush-bytes or flush_bytes), its
 * environment variable (BIRDFEEDER_FLUSH_BYTES, plus TINYBIRD_API_URL and
 * TINYBIRD_API_KEY for the sink), its default, its bounds and its help text.
 */
#ifndef BF_CONFIG_H
#define BF_CONFIG_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* Where an option's value came from. */
enum config_source {
    CONFIG_SRC_DEFAULT, /* built in, or chosen by context (paths.h) */
    CONFIG_SRC_FILE,
    CONFIG_SRC_ENV,
    CONFIG_SRC_FLAG,
};
#define CONFIG_OPTIONS_MAX 64

/* A repeatable option's values, in the order given: the file's first, then
 * the environment's, then the flags' (later entries win where the consumer
 * treats them as KEY=VALUE settings). */
typedef struct bf_strlist {
    char **v;
    size_t n;
} bf_strlist;

typedef struct bf_config {
    char *listen;            /* addresses (bf_addr.h), comma-separated */
    char *socket_group;      /* group of unix: sockets; NULL: ours */
    char *allow_uid, *allow_gid; /* senders unix: sockets accept; NULL: all */
    uint64_t allow_remote;   /* 1: listening beyond loopback allowed */
    char *tinybird_url;      /* base URL, no trailing slash */
    char *token;             /* Tinybird token; NULL: local file sink */
    char *token_file;        /* where the token was read from, or NULL */
    const char *token_source; /* static text naming the token's source, for
                                 the log: "--token-file", "credential", ... */
    char *catalog;           /* model catalog JSON path; NULL: the built-in
                                one (catalog_load_builtin) */
    char *out;               /* NDJSON output without a token; "-" stdout */
    char *ip_hash_key_file;  /* secret for ip_hash; created 0600 if missing */
    char *stats_socket;      /* Unix socket path; "" disables */
    char *stats_socket_group; /* group given the stats socket; NULL or "": none */
    long stats_socket_gid;   /* its gid, resolved by config_load; -1: none */
    char *metrics_listen;    /* HOST:PORT for GET /metrics, /health; "" off */
    char *log_level;
    char *log_format;        /* text or json */
    char *spool_dir;         /* spool and dead letters */
    char *pacing;            /* "on" or "off": flush interval from the rate limit */
    char *config_file;       /* the file these came from, or NULL */
    /* The context's directories (paths.h), which the defaults of spool-dir,
     * ip-hash-key-file (state) and stats-socket (runtime) are under, and
     * what each was taken from (static strings). */
    char *state_dir, *runtime_dir;
    const char *state_from, *runtime_from;
    char *kafka_brokers;     /* HOST:PORT[,...]; set: the Kafka sink */
    char *kafka_topic_prefix;
    char *kafka_compression; /* none, gzip, snappy, lz4 or zstd */
    char *kafka_password_file; /* sasl.password, read at start */
    int kafka_password_credential; /* it is $CREDENTIALS_DIRECTORY/kafka-password */
    bf_strlist kafka_properties; /* librdkafka KEY=VALUE settings */
    uint64_t flush_bytes;    /* NDJSON bytes that close a batch */
    uint64_t flush_interval_ms;
    uint64_t max_flush_interval_ms; /* pacing stretches the interval up to it */
    uint64_t stats_interval_ms;
    uint64_t stats_max_clients; /* stats socket clients at once */
    uint64_t max_datagram;   /* larger datagrams are rejected: oversize */
    uint64_t rcvbuf_bytes;   /* SO_RCVBUF asked for */
    uint64_t http_timeout_ms;
    uint64_t max_inflight;   /* requests in flight per dataset */
    uint64_t shutdown_timeout_ms;
    uint64_t max_memory;     /* batches waiting and in flight */
    uint64_t max_spool_bytes;
    uint64_t spool_segment_bytes;
    uint64_t max_dead_letter_bytes;
    uint64_t backoff_min_ms, backoff_max_ms;
    uint64_t max_event_age_ms, max_event_skew_ms; /* 0: no bound */
    uint64_t flush_bytes_asked; /* flush-bytes as set, when lowered to an
                                   eighth of max-memory; else 0 (main logs
                                   it once the log format is known) */
    int check_only;          /* --check-config: validate and exit */
    unsigned char source[CONFIG_OPTIONS_MAX]; /* enum config_source, by option */
} bf_config;

/* Outcome of config_load: 0 to run, 1 when --help or --version printed
 * (exit 0), or a negative errno for a bad configuration. */
enum config_result { CONFIG_ERROR = -EINVAL, CONFIG_OK = 0, CONFIG_EXIT_OK = 1 };

/* Fill cfg from defaults, the file named by --config (or
 * BIRDFEEDER_CONFIG), the environment and argv. The token is resolved here
 * too, from the first of: --token-file, --token (warned: visible to every
 * local user), BIRDFEEDER_TOKEN_FILE, the systemd credential
 * $CREDENTIALS_DIRECTORY/tinybird-token, the environment's token
 * (BIRDFEEDER_TOKEN, TINYBIRD_API_KEY, TINYBIRD_TOKEN), the config file's
 * token-file, its token. A token file, or a config file holding a token,
 * that group or others may read is refused, as is a config file others may
 * write or one owned by another user. Calling it again with the
 * same argv is how a reload (SIGHUP) picks up an edited file while flags and
 * the environment keep priority. On CONFIG_ERROR a message
 * naming the bad option and why is written to err (size n). --help and
 * --version print and return CONFIG_EXIT_OK. cfg owns its strings in every
 * case: release them with config_free. */
enum config_result config_load(bf_config *cfg, int argc, char **argv,
                               char *err, size_t n);

void config_free(bf_config *cfg);

/* Where option name (as in --help) got its value, and that source's name
 * ("default", "file", "environment", "flag"). An unknown name is
 * CONFIG_SRC_DEFAULT. */
enum config_source config_source(const bf_config *cfg, const char *name);
const char *config_source_name(enum config_source src);

/* For a reload's log line: "changed" when fresh's token differs from
 * now's (the running one), else "unchanged", with why a new token would need
 * a restart when it comes from where a reload does not look again (the
 * environment, a flag, the systemd credential). Static text. */
const char *config_token_note(const bf_config *now, const bf_config *fresh);

/* Print the effective configuration as one JSON object, keyed as the
 * config file is, to stdout; the token is shown as "(set)", never itself. */
void config_print(const bf_config *cfg);

/* Names of the options whose values differ between a and b, leaving out
 * those named in skip (NULL-terminated, or NULL), comma separated, into out
 * (size n); "" when none. For a reload's log line. */
void config_diff(const bf_config *a, const bf_config *b, const char *const *skip,
                 char *out, size_t n);
/* The same among the options named in names only. */
void config_diff_among(const bf_config *a, const bf_config *b, const char *const *names,
                       char *out, size_t n);

/* Move the values (and sources) of the options named in names
 * (NULL-terminated, as in --help) from src into dst, and dst's old ones
 * into src, which config_free then releases: how a reload keeps what it
 * applied. */
void config_take(bf_config *dst, bf_config *src, const char *const *names);

/* Print the usage text (the option table) to stdout. */
void config_usage(void);

#endif /* BF_CONFIG_H */
