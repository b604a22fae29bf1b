/* cli/stats_prom.c: one stats line as a Prometheus text exposition
 * (format 0.0.4), for `birdfeeder stats --prom`. See cli.h. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* --prom: the known keys, with Prometheus names, types and help. A map
 * value becomes one sample per entry with the label named here. */
static const struct prom_family {
    const char *key;
    const char *name;   /* after "birdfeeder_" */
    const char *type;
    const char *label;  /* for maps */
    double scale;       /* 0: as is */
    const char *help;
} prom_families[] = {
    {"uptime_ms", "uptime_seconds", "gauge", NULL, 0.001, "Seconds since the daemon started."},
    {"received", "received_total", "counter", NULL, 0, "Datagrams read from the UDP socket."},
    {"received_bytes", "received_bytes_total", "counter", NULL, 0, "Bytes of the datagrams read."},
    {"rejected", "rejected_total", "counter", "reason", 0, "Datagrams rejected, by reason (proto/reasons.def)."},
    {"accepted", "accepted_total", "counter", "dataset", 0, "Events accepted, by dataset."},
    {"unknown_model", "unknown_model_total", "counter", NULL, 0, "Accepted events whose model is not in the catalog."},
    {"ip_invalid", "ip_invalid_total", "counter", NULL, 0, "Accepted events with an unparseable ip (hashed as empty)."},
    {"utf8_replaced", "utf8_replaced_total", "counter", NULL, 0, "Accepted events with invalid UTF-8 replaced."},
    {"rows_batched", "rows_batched_total", "counter", "dataset", 0, "Rows added to batches, by dataset."},
    {"bytes_batched", "bytes_batched_total", "counter", "dataset", 0, "NDJSON bytes batched (uncompressed), by dataset."},
    {"batches", "batches_total", "counter", "dataset", 0, "Batches closed for sending, by dataset."},
    {"bytes_sent", "bytes_sent_total", "counter", NULL, 0, "Request body bytes sent (compressed)."},
    {"http", "http_requests_total", "counter", "status", 0, "Requests to Tinybird by HTTP status (error: no response)."},
    {"retries", "retries_total", "counter", NULL, 0, "Requests retried."},
    {"rows_delivered", "rows_delivered_total", "counter", "dataset", 0, "Rows Tinybird acknowledged, by dataset."},
    {"rows_quarantined", "rows_quarantined_total", "counter", "dataset", 0, "Rows Tinybird put in quarantine, by dataset."},
    {"dropped", "rows_dropped_total", "counter", "reason", 0, "Accepted rows lost, by reason (daemon/drops.def)."},
    {"rows_spooled", "rows_spooled_total", "counter", NULL, 0, "Rows written to the disk spool."},
    {"rows_replayed", "rows_replayed_total", "counter", NULL, 0, "Rows read back from the disk spool."},
    {"rows_dead_lettered", "rows_dead_lettered_total", "counter", NULL, 0, "Rows written to dead-letter.ndjson."},
    {"spool_torn", "spool_torn_records_total", "counter", NULL, 0, "Torn or corrupt spool records skipped."},
    {"kernel_drops", "kernel_drops_total", "counter", NULL, 0, "Datagrams the kernel dropped (receive buffer full)."},
    {"spool_bytes", "spool_bytes", "gauge", NULL, 0, "Bytes in the disk spool."},
    {"spool_segments", "spool_segments", "gauge", NULL, 0, "Segment files in the disk spool."},
    {"memory_bytes", "memory_bytes", "gauge", NULL, 0, "Batch memory waiting and in flight."},
    {"memory_cap", "memory_cap_bytes", "gauge", NULL, 0, "Batch memory cap (--max-memory)."},
    {"socket_queue_bytes", "socket_queue_bytes", "gauge", NULL, 0, "Bytes waiting in the UDP receive queue."},
    {"rcvbuf_bytes", "rcvbuf_bytes", "gauge", NULL, 0, "UDP receive buffer granted (SO_RCVBUF)."},
    {"inflight_requests", "inflight_requests", "gauge", NULL, 0, "Requests to Tinybird in flight."},
    {"last_flush_ok_ms", "last_flush_ok_timestamp_seconds", "gauge", NULL, 0.001, "Unix time of the last acknowledged batch (0: never)."},
    {"ack_delay_ms", "ack_delay_seconds", "gauge", "quantile", 0.001, "Delay from receipt to acknowledgement by Tinybird, recent window."},
};

static void prom_escape(FILE *out, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", out);
        else if (*s == '\n')
            fputs("\\n", out);
        else if (quote && *s == '"')
            fputs("\\\"", out);
        else
            fputc(*s, out);
    }
}

/* A metric name part: [a-zA-Z0-9_], anything else becomes '_'. */
static void prom_name(char *out, size_t n, const char *name)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '_';
        out[i] = ok ? ch : '_';
    }
    out[i] = '\0';
}

static void prom_value(FILE *out, const json_t *v, double scale)
{
    if (json_is_integer(v) && scale == 0)
        fprintf(out, "%lld\n", (long long)json_integer_value(v));
    else if (scale) /* ms to seconds */
        fprintf(out, "%.3f\n", json_number_value(v) * scale);
    else
        fprintf(out, "%.15g\n", json_number_value(v));
}

/* "p50" -> "0.5", "p99" -> "0.99", "p999" -> "0.999"; else the key. */
static const char *prom_quantile(char *buf, size_t n, const char *key)
{
    if (key[0] == 'p' && key[1] >= '0' && key[1] <= '9' &&
        strspn(key + 1, "0123456789") == strlen(key + 1)) {
        snprintf(buf, n, "0.%s", key + 1);
        size_t l = strlen(buf); /* 0.50 -> 0.5 */
        while (l > 3 && buf[l - 1] == '0')
            buf[--l] = '\0';
        return buf;
    }
    return key;
}

/* The label value for map key k, or NULL when k is no sample (a quantile
 * map's other keys: window_s). q is scratch space. */
static const char *prom_label_value(const char *label, const char *k, char *q, size_t n)
{
    if (strcmp(label, "quantile") != 0)
        return k;
    const char *lv = prom_quantile(q, n, k);
    return lv == k ? NULL : lv;
}

/* One family: HELP, TYPE and its samples; nothing for a map without
 * numbers (http before the first request). */
static void prom_family_print(FILE *out, const char *name, const char *type,
                              const char *help, const char *label, double scale,
                              const json_t *v)
{
    const char *k;
    json_t *e;
    char q[32];
    int samples = !json_is_object(v);
    json_object_foreach((json_t *)v, k, e)
        samples |= json_is_number(e) && prom_label_value(label, k, q, sizeof(q));
    if (!samples)
        return;
    fprintf(out, "# HELP birdfeeder_%s ", name);
    prom_escape(out, help, 0);
    fprintf(out, "\n# TYPE birdfeeder_%s %s\n", name, type);
    if (!json_is_object(v)) {
        fprintf(out, "birdfeeder_%s ", name);
        prom_value(out, v, scale);
        return;
    }
    json_object_foreach((json_t *)v, k, e) {
        const char *lv = prom_label_value(label, k, q, sizeof(q));
        if (!json_is_number(e) || !lv)
            continue;
        fprintf(out, "birdfeeder_%s{%s=\"", name, label);
        prom_escape(out, lv, 1);
        fputs("\"} ", out);
        prom_value(out, e, scale);
    }
}

/* Does map o hold numbers named like p50, p99? */
static int prom_is_quantiles(const json_t *o)
{
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)o, k, e) {
        char q[32];
        if (json_is_number(e) && prom_quantile(q, sizeof(q), k) != k)
            return 1;
    }
    return 0;
}

/* Prometheus text exposition (format 0.0.4) of one snapshot. */
void prom_print(const json_t *snap, FILE *out)
{
    size_t nf = sizeof(prom_families) / sizeof(prom_families[0]);
    for (size_t i = 0; i < nf; i++) {
        const struct prom_family *f = &prom_families[i];
        json_t *v = json_object_get(snap, f->key);
        if (json_is_number(v) || (f->label && json_is_object(v)))
            prom_family_print(out, f->name, f->type, f->help, f->label, f->scale, v);
    }
    /* Keys this version does not know: gauges, so nothing is claimed. */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)snap, k, v) {
        int known = strcmp(k, "ts_ms") == 0;
        for (size_t i = 0; i < nf && !known; i++)
            known = strcmp(k, prom_families[i].key) == 0;
        size_t kl = strlen(k);
        if (!known && kl > 6 && strcmp(k + kl - 6, "_total") == 0) {
            char base[128]; /* rejected_total: the sum of map rejected */
            snprintf(base, sizeof(base), "%.*s", (int)(kl - 6), k);
            known = json_is_object(json_object_get(snap, base));
        }
        if (known || !(json_is_number(v) || json_is_object(v)))
            continue;
        char name[128], help[192];
        prom_name(name, sizeof(name), k);
        snprintf(help, sizeof(help), "Stats key %s (no description in this birdfeeder).", k);
        prom_family_print(out, name, "gauge", help,
                          json_is_object(v) && prom_is_quantiles(v) ? "quantile" : "key",
                          0, v);
    }
}
