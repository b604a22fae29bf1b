/* cli/stats_view.c: the human view of stats lines, for --once and the
 * live view. See cli.h. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

double jnum(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

unsigned long long jint(const json_t *o, const char *key)
{
    double v = jnum(o, key);
    return v > 0 ? (unsigned long long)v : 0;
}

/* Sum of the numbers of object o[key] (a per-dataset or per-reason map). */
unsigned long long jsum(const json_t *o, const char *key)
{
    const char *k;
    json_t *v;
    double s = 0;
    json_object_foreach(json_object_get(o, key), k, v)
        if (json_is_number(v))
            s += json_number_value(v);
    return (unsigned long long)s;
}

/* Per-second rate of counter value now, given its earlier value; < 0: none. */
static double view_rate(const stats_view *v, double now, double before)
{
    if (!v->prev || v->dt <= 0 || now < before)
        return -1;
    return (now - before) / v->dt;
}

static char *fmt_rate(char *buf, size_t n, double r)
{
    if (r < 0)
        snprintf(buf, n, "-");
    else if (r >= 100 || r == 0)
        snprintf(buf, n, "%.0f", r);
    else
        snprintf(buf, n, "%.1f", r);
    return buf;
}

static char *fmt_bytes(char *buf, size_t n, double b)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%.0f B", b);
    else
        snprintf(buf, n, "%.1f %s", b, unit[u]);
    return buf;
}

static char *fmt_duration(char *buf, size_t n, double ms)
{
    unsigned long long s = (unsigned long long)(ms / 1000);
    if (ms < 10000)
        snprintf(buf, n, "%.1fs", ms / 1000);
    else if (s < 3600)
        snprintf(buf, n, "%llum%02llus", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, n, "%lluh%02llum", s / 3600, s / 60 % 60);
    else
        snprintf(buf, n, "%llud%02lluh", s / 86400, s / 3600 % 24);
    return buf;
}

void rate_history_add(rate_history *h, const json_t *prev, const json_t *cur)
{
    double t0 = jnum(prev, "ts_ms"), t1 = jnum(cur, "ts_ms");
    double events = jnum(cur, "received") - jnum(prev, "received");
    if (t1 <= t0 || events < 0)
        return;
    long long s0 = (long long)(t0 / 1000), s1 = (long long)((t1 - 1) / 1000);
    if (h->newest < 0)
        h->first = s0;
    /* Spread the events over the seconds the span covers, by overlap (only
     * the last minute of a long span is kept). */
    for (long long s = s0 > s1 - RATE_SECONDS ? s0 : s1 - RATE_SECONDS; s <= s1; s++) {
        if (s > h->newest) {
            long long k = h->newest < 0 || s - h->newest > RATE_SECONDS ? s - RATE_SECONDS + 1
                                                                         : h->newest + 1;
            for (; k <= s; k++)
                h->events[((k % RATE_SECONDS) + RATE_SECONDS) % RATE_SECONDS] = 0;
            h->newest = s;
        }
        if (s <= h->newest - RATE_SECONDS)
            continue; /* older than the minute kept */
        double a = (double)s * 1000 > t0 ? (double)s * 1000 : t0;
        double b = (double)(s + 1) * 1000 < t1 ? (double)(s + 1) * 1000 : t1;
        h->events[s % RATE_SECONDS] += events * (b - a) / (t1 - t0);
    }
}

/* The rate (events/s) in second s, or -1 when not measured. */
static double rate_at(const rate_history *h, long long s)
{
    if (h->newest < 0 || s < h->first || s > h->newest || s <= h->newest - RATE_SECONDS)
        return -1;
    return h->events[s % RATE_SECONDS];
}

/* "rate 1m", one character per second of the last minute (per two or more
 * when the window is narrow), the last complete second at the right, then
 * the latest rate and the minute's highest: a drop shows at a glance.
 * Blocks in a UTF-8 terminal, else ASCII. */
static void view_sparkline(const stats_view *v, FILE *out)
{
    static const char *const blocks[] = {" ", "\u2581", "\u2582", "\u2583", "\u2584",
                                         "\u2585", "\u2586", "\u2587", "\u2588"};
    static const char ascii[] = " .:-=+*#@";
    const rate_history *h = v->rates;
    if (!h || h->newest < 0)
        return;
    unsigned room = v->cols > 13 + 26 ? v->cols - 13 - 26 : v->cols ? 10 : RATE_SECONDS;
    unsigned per = (RATE_SECONDS + room - 1) / room; /* seconds per character */
    unsigned chars = (RATE_SECONDS + per - 1) / per;
    long long last = (long long)(jnum(v->cur, "ts_ms") / 1000) - 1; /* complete */
    if (last > h->newest)
        last = h->newest;
    double avg[RATE_SECONDS], max = 0, now = rate_at(h, last);
    for (unsigned c = 0; c < chars; c++) {
        double sum = 0;
        unsigned n = 0;
        for (unsigned k = 0; k < per; k++) {
            double r = rate_at(h, last - (long long)((chars - 1 - c) * per + k));
            if (r >= 0) {
                sum += r;
                n++;
            }
        }
        avg[c] = n ? sum / n : -1;
        max = avg[c] > max ? avg[c] : max;
    }
    fprintf(out, "%-12s ", "rate 1m");
    for (unsigned c = 0; c < chars; c++) {
        unsigned level = 0;
        if (avg[c] > 0 && max > 0) {
            level = (unsigned)(avg[c] / max * 8 + 0.999);
            level = level > 8 ? 8 : level;
        }
        if (v->utf8)
            fputs(blocks[level], out);
        else
            fputc(ascii[level], out);
    }
    char a[32], b[32];
    fprintf(out, " %s/s, max %s/s\n", fmt_rate(a, sizeof(a), now), fmt_rate(b, sizeof(b), max));
}

/* "name  total  rate/s" and the start of the detail column. */
static void view_row(const stats_view *v, FILE *out, const char *name,
                     double total, double before)
{
    char r[32];
    fprintf(out, "%-12s %12.0f %10s/s", name, total,
            fmt_rate(r, sizeof(r), view_rate(v, total, before)));
}

/* Detail: "key N, key N (r/s)" for each non-zero entry of the map at key;
 * with_rates adds each entry's own rate. */
static void view_map(const stats_view *v, FILE *out, const char *key, int with_rates)
{
    const char *k;
    json_t *val;
    int first = 1;
    json_t *before = v->prev ? json_object_get(v->prev, key) : NULL;
    json_object_foreach(json_object_get(v->cur, key), k, val) {
        double now = json_is_number(val) ? json_number_value(val) : 0;
        if (now == 0)
            continue;
        fprintf(out, "%s%s %.0f", first ? "  " : ", ", k, now);
        first = 0;
        double r = view_rate(v, now, jnum(before, k));
        char rb[32];
        if (with_rates && r >= 0)
            fprintf(out, " (%s/s)", fmt_rate(rb, sizeof(rb), r));
    }
}

/* A counter row: total, rate, optional map detail. */
static void view_counter(const stats_view *v, FILE *out, const char *name,
                         const char *key, const char *map, int map_rates)
{
    double now = map ? (double)jsum(v->cur, map) : jnum(v->cur, key);
    double before = !v->prev ? 0 : map ? (double)jsum(v->prev, map) : jnum(v->prev, key);
    view_row(v, out, name, now, before);
    if (map)
        view_map(v, out, map, map_rates);
    fputc('\n', out);
}

/* Latency: any object with p50/p99 members, such as ack_delay_ms (receipt
 * to acknowledgement by Tinybird, over the last window_s seconds). Nothing
 * when the daemon has none. */
static void view_latency(const stats_view *v, FILE *out)
{
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)v->cur, k, val) {
        json_t *p50 = json_object_get(val, "p50"), *p99 = json_object_get(val, "p99");
        if (!json_is_number(p50) && !json_is_number(p99))
            continue;
        size_t kl = strlen(k);
        const char *unit = kl > 3 && strcmp(k + kl - 3, "_ms") == 0 ? " ms" : "";
        fprintf(out, "%-12s p50 %.0f%s, p99 %.0f%s (%.*s", "latency",
                json_number_value(p50), unit, json_number_value(p99), unit,
                (int)(*unit ? kl - 3 : kl), k);
        json_t *w = json_object_get(val, "window_s");
        if (json_is_number(w))
            fprintf(out, ", last %.0f s", json_number_value(w));
        fputs(")\n", out);
    }
}

/* Pacing: each dataset's flush interval and why ("llm_events 3.4s
 * rate_limited"); nothing from a daemon without it. */
static void view_pacing(const stats_view *v, FILE *out)
{
    const json_t *why = json_object_get(v->cur, "pacing");
    const char *k;
    json_t *ms;
    int first = 1;
    json_object_foreach(json_object_get(v->cur, "flush_interval_ms"), k, ms) {
        const json_t *w = json_object_get(why, k);
        char d[32];
        if (first)
            fprintf(out, "%-12s", "pacing");
        fprintf(out, "%s%s %s %s", first ? " " : ", ", k,
                fmt_duration(d, sizeof(d), json_number_value(ms)),
                json_is_string(w) ? json_string_value(w) : "-");
        first = 0;
    }
    if (!first)
        fputc('\n', out);
}

/* One human-readable frame (also the --once output). */
void view_print(const stats_view *v, FILE *out, const char *path)
{
    const json_t *c = v->cur;
    char a[32], b[32], d[32];
    double ts = jnum(c, "ts_ms");
    time_t secs = (time_t)(ts / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
    fprintf(out, "birdfeederd %s  up %s  at %s", path,
            fmt_duration(a, sizeof(a), jnum(c, "uptime_ms")), when);
    if (v->prev)
        fprintf(out, "  rates over %.1fs\n", v->dt);
    else
        fprintf(out, "  totals only\n");
    fprintf(out, "%-12s %12s %12s\n", "", "total", "rate");
    view_sparkline(v, out);

    double rb = jnum(c, "received_bytes");
    view_row(v, out, "received", jnum(c, "received"), v->prev ? jnum(v->prev, "received") : 0);
    fprintf(out, "  %s\n", fmt_bytes(a, sizeof(a), rb));
    view_counter(v, out, "accepted", NULL, "accepted", 0);
    view_counter(v, out, "rejected", NULL, "rejected", 1);
    view_counter(v, out, "batched", NULL, "rows_batched", 0);
    view_counter(v, out, "delivered", NULL, "rows_delivered", 0);
    view_counter(v, out, "dropped", NULL, "dropped", 1);
    view_counter(v, out, "quarantined", NULL, "rows_quarantined", 0);
    view_counter(v, out, "dead-letter", "rows_dead_lettered", NULL, 0);
    view_counter(v, out, "requests", NULL, "http", 1);
    view_counter(v, out, "retries", "retries", NULL, 0);
    view_row(v, out, "bytes sent", jnum(c, "bytes_sent"),
             v->prev ? jnum(v->prev, "bytes_sent") : 0);
    fprintf(out, "  %s gzip of %s NDJSON\n", fmt_bytes(a, sizeof(a), jnum(c, "bytes_sent")),
            fmt_bytes(b, sizeof(b), (double)jsum(c, "bytes_batched")));
    fprintf(out, "%-12s unknown_model %llu, ip_invalid %llu, utf8_replaced %llu\n",
            "enrich", jint(c, "unknown_model"), jint(c, "ip_invalid"),
            jint(c, "utf8_replaced"));
    fprintf(out, "%-12s %s in %llu segments; spooled %llu, replayed %llu, torn %llu\n",
            "spool", fmt_bytes(a, sizeof(a), jnum(c, "spool_bytes")),
            jint(c, "spool_segments"), jint(c, "rows_spooled"),
            jint(c, "rows_replayed"), jint(c, "spool_torn"));
    double mem = jnum(c, "memory_bytes"), cap = jnum(c, "memory_cap");
    fprintf(out, "%-12s %s of %s (%.0f%%); %llu requests in flight\n", "memory",
            fmt_bytes(a, sizeof(a), mem), fmt_bytes(b, sizeof(b), cap),
            cap > 0 ? 100 * mem / cap : 0, jint(c, "inflight_requests"));
    fprintf(out, "%-12s queue %s of rcvbuf %s; kernel drops %llu", "socket",
            fmt_bytes(a, sizeof(a), jnum(c, "socket_queue_bytes")),
            fmt_bytes(b, sizeof(b), jnum(c, "rcvbuf_bytes")), jint(c, "kernel_drops"));
    double kr = v->prev ? view_rate(v, jnum(c, "kernel_drops"), jnum(v->prev, "kernel_drops")) : -1;
    if (kr > 0)
        fprintf(out, " (%s/s)", fmt_rate(d, sizeof(d), kr));
    fputc('\n', out);
    view_pacing(v, out);
    double last = jnum(c, "last_flush_ok_ms");
    if (last <= 0)
        fprintf(out, "%-12s never\n", "last flush");
    else
        fprintf(out, "%-12s %s ago\n", "last flush",
                fmt_duration(a, sizeof(a), ts > last ? ts - last : 0));
    view_latency(v, out);
    /* Older daemons have no sink_state: nothing to show. */
    const char *state = json_string_value(json_object_get(c, "sink_state"));
    const char *hint = json_string_value(json_object_get(c, "sink_hint"));
    if (state)
        fprintf(out, "%-12s %s%s%s\n", "sink", state, hint ? ": " : "", hint ? hint : "");
}
