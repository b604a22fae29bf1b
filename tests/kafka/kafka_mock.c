/*
 * kafka_mock.c: a Kafka cluster for the tests, with no broker installed:
 * librdkafka's mock cluster (rdkafka_mock.h), which listens on loopback
 * ports and speaks the Kafka protocol.
 *
 *   kafka-mock [--brokers N] [--partitions P] [--topics a,b,...]
 *
 * starts N brokers (default 3), creates each topic with P partitions
 * (default 3) replicated on every broker, partition p led by broker
 * p % N + 1 (so a broker taken down always leads some), prints one line
 *
 *   bootstrap 127.0.0.1:PORT,127.0.0.1:PORT,...
 *
 * and then reads commands on stdin, one per line, answering "ok" (or
 * "error ...") on stdout:
 *
 *   down ID | up ID               broker ID (1..N) stops / starts answering
 *   errors APIKEY ERR [ERR...]    the next requests of that API (0 Produce)
 *                                 get these error codes, in order
 *   clear APIKEY                  forget the errors still pushed for that API
 *   topic-error TOPIC ERR         metadata for TOPIC answers ERR (0 clears)
 *
 * It exits on EOF or "quit". Rows are read back with kcat (or any
 * consumer) from the bootstrap address.
 *
 *   kafka-mock bench FILE
 *
 * produces the NDJSON rows of FILE (keyed by id, idempotent, acks=all, as
 * birdfeederd does) to a fresh 3-broker mock once per codec and prints the
 * bytes sent to the brokers and the CPU time spent, per codec.
 */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sink_kafka.h" /* sink_kafka_row_key: the daemon's own keying */

static rd_kafka_t *handle(const char *extra_key, const char *extra_val)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "3", err, sizeof(err));
    if (extra_key && rd_kafka_conf_set(c, extra_key, extra_val, err, sizeof(err)))
        fprintf(stderr, "kafka-mock: %s: %s\n", extra_key, err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        exit(1);
    }
    return rk;
}

static rd_kafka_mock_cluster_t *cluster(rd_kafka_t *rk, int brokers, int partitions,
                                        const char *topics)
{
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mock: no mock cluster\n");
        exit(1);
    }
    char *list = strdup(topics), *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (rd_kafka_mock_topic_create(mc, t, partitions, brokers)) {
            fprintf(stderr, "kafka-mock: cannot create topic %s\n", t);
            exit(1);
        }
        else /* partition p led by broker p % N + 1: a broker down is felt */
            for (int p = 0; p < partitions; p++)
                rd_kafka_mock_partition_set_leader(mc, t, p, p % brokers + 1);
    free(list);
    return mc;
}

static int serve(int brokers, int partitions, const char *topics)
{
    rd_kafka_t *rk = handle(NULL, NULL);
    rd_kafka_mock_cluster_t *mc = cluster(rk, brokers, partitions, topics);
    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char line[1024];
    while (fgets(line, sizeof(line), stdin)) {
        char *save = NULL, *cmd = strtok_r(line, " \t\r\n", &save);
        int rc = 0;
        if (!cmd)
            continue;
        if (strcmp(cmd, "quit") == 0)
            break;
        if (strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) {
            char *id = strtok_r(NULL, " \t\r\n", &save);
            int b = id ? atoi(id) : 0;
            rc = b < 1 || b > brokers ? -1
                 : cmd[0] == 'd'      ? (int)rd_kafka_mock_broker_set_down(mc, b)
                                      : (int)rd_kafka_mock_broker_set_up(mc, b);
        } else if (strcmp(cmd, "errors") == 0) {
            char *api = strtok_r(NULL, " \t\r\n", &save);
            rd_kafka_resp_err_t errs[64];
            size_t n = 0;
            for (char *e; n < 64 && (e = strtok_r(NULL, " \t\r\n", &save));)
                errs[n++] = (rd_kafka_resp_err_t)atoi(e);
            if (api && n)
                rd_kafka_mock_push_request_errors_array(mc, (int16_t)atoi(api), n, errs);
            else
                rc = -1;
        } else if (strcmp(cmd, "clear") == 0) {
            char *api = strtok_r(NULL, " \t\r\n", &save);
            if (api)
                rd_kafka_mock_clear_request_errors(mc, (int16_t)atoi(api));
            else
                rc = -1;
        } else if (strcmp(cmd, "topic-error") == 0) {
            char *t = strtok_r(NULL, " \t\r\n", &save), *e = strtok_r(NULL, " \t\r\n", &save);
            if (t && e)
                rd_kafka_mock_topic_set_error(mc, t, (rd_kafka_resp_err_t)atoi(e));
            else
                rc = -1;
        } else {
            rc = -1;
        }
        printf(rc ? "error %s\n" : "ok\n", cmd);
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- bench: bytes and CPU per codec ---- */

static json_int_t txbytes;

static int on_stats(rd_kafka_t *rk, char *js, size_t len, void *opaque)
{
    (void)rk;
    (void)opaque;
    json_t *doc = json_loadb(js, len, 0, NULL), *b;
    const char *name;
    json_int_t sum = 0;
    json_object_foreach(json_object_get(doc, "brokers"), name, b)
        sum += json_integer_value(json_object_get(b, "txbytes"));
    txbytes = sum;
    json_decref(doc);
    return 0;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int bench(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kafka-mock: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char **rows = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        if (!len)
            continue;
        if (n == cap)
            rows = realloc(rows, (cap = cap ? cap * 2 : 1024) * sizeof(*rows));
        rows[n++] = strdup(line);
        bytes += (size_t)len;
    }
    free(line);
    fclose(f);
    printf("rows %zu bytes %zu\n", n, bytes);
    static const char *const codecs[] = {"none", "gzip", "snappy", "lz4", "zstd"};
    for (size_t c = 0; c < sizeof(codecs) / sizeof(codecs[0]); c++) {
        rd_kafka_t *mrk = handle(NULL, NULL);
        rd_kafka_mock_cluster_t *mc = cluster(mrk, 3, 3, "bench");
        char err[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        const char *const kv[][2] = {
            {"bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc)},
            {"enable.idempotence", "true"}, {"acks", "all"},
            {"compression.codec", codecs[c]}, {"partitioner", "murmur2_random"},
            {"queue.buffering.max.messages", "0"},
            {"statistics.interval.ms", "1000"}};
        for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
            if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err))) {
                fprintf(stderr, "kafka-mock: %s\n", err);
                return 1;
            }
        rd_kafka_conf_set_stats_cb(conf, on_stats);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        /* Connect first, so the connection's bytes are not the codec's. */
        const struct rd_kafka_metadata *md;
        rd_kafka_metadata(rk, 1, NULL, &md, 5000);
        rd_kafka_metadata_destroy(md);
        txbytes = 0;
        for (int w = 0; w < 30 && !txbytes; w++)
            rd_kafka_poll(rk, 100);
        json_int_t base = txbytes;
        double t0 = cpu_s();
        for (size_t i = 0; i < n; i++) {
            const char *key = NULL;
            size_t kl = sink_kafka_row_key(rows[i], strlen(rows[i]), &key);
            while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("bench"),
                                     RD_KAFKA_V_VALUE(rows[i], strlen(rows[i])),
                                     RD_KAFKA_V_KEY(key, kl), RD_KAFKA_V_END) ==
                   RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 10);
            rd_kafka_poll(rk, 0);
        }
        rd_kafka_flush(rk, 60000);
        double cpu = cpu_s() - t0;
        json_int_t seen = txbytes;
        for (int w = 0; w < 30 && txbytes == seen; w++)
            rd_kafka_poll(rk, 100); /* the next stats line, after the flush */
        printf("codec %-6s sent_bytes %10lld ratio %5.3f cpu_ms %7.1f\n", codecs[c],
               (long long)(txbytes - base), (double)(txbytes - base) / (double)bytes,
               cpu * 1000);
        fflush(stdout);
        rd_kafka_destroy(rk);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(mrk);
    }
    for (size_t i = 0; i < n; i++)
        free(rows[i]);
    free(rows);
    return 0;
}

int main(int argc, char **argv)
{
    int brokers = 3, partitions = 3;
    const char *topics = "image_events,llm_events";
    if (argc == 3 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2]);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--brokers") == 0)
            brokers = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--partitions") == 0)
            partitions = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--topics") == 0)
            topics = argv[i + 1];
        else {
            fprintf(stderr, "usage: kafka-mock [--brokers N] [--partitions P] "
                            "[--topics a,b] | kafka-mock bench FILE\n");
            return 2;
        }
    }
    return serve(brokers, partitions, topics);
}
