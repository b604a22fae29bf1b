/* stats_prom.c: one stats line as a Prometheus text exposition. See
 * stats_prom.h. */
#include "stats_prom.h"

#include <string.h>

/* Every key of the daemon's stats line, from daemon/stats.def: its
 * Prometheus name (NULL: not exported), type, label (for maps) and help. */
static const struct prom_family {
    const char *key;
    const char *name;   /* after "birdfeeder_" */
    const char *type;
    const char *label;  /* for maps */
    const char *help;
    const char *states; /* a state set's values, space-separated */
} prom_families[] = {
#define BF_STAT_FIELD(key, type, prom, help) {#key, prom, #type, NULL, help, NULL},
#define BF_STAT_MAP(key, index, label, prom, help) {#key, prom, "counter", label, help, NULL},
#define BF_STAT_SUM(key, map, help) {#key, NULL, NULL, NULL, help, NULL},
#define BF_STAT_READ(key, type, reader, prom, help) {#key, prom, #type, NULL, help, NULL},
#define BF_STAT_QUANTILES(key, reader, prom, help) \
    {#key, prom, "summary", "quantile", help, NULL},
#define BF_STAT_TEXT(key, reader, states, prom, help) {#key, prom, "gauge", "state", help, states},
#define BF_STAT_READ_MAP(key, index, label, reader, prom, help) \
    {#key, prom, "gauge", label, help, NULL},
#define BF_STAT_STATE_MAP(key, index, label, reader, states, prom, help) \
    {#key, prom, "gauge", label, help, states},
#include "stats.def"
};

/* stats.def: a name in seconds exports a value kept in ms. */
static double prom_scale(const char *name)
{
    size_t n = strlen(name);
    return n >= 8 && strcmp(name + n - 8, "_seconds") == 0 ? 0.001 : 0;
}

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

/* One state set's samples for the value cur: one per state, 1 for the
 * current one; a map's entry k carries its label first. */
static void prom_state_samples(FILE *out, const struct prom_family *f, const char *k,
                               const char *cur)
{
    for (const char *p = f->states; *p;) {
        size_t len = strcspn(p, " ");
        fprintf(out, "birdfeeder_%s{", f->name);
        if (k) {
            fprintf(out, "%s=\"", f->label);
            prom_escape(out, k, 1);
            fputs("\",", out);
        }
        fprintf(out, "state=\"%.*s\"} %d\n", (int)len, p,
                strlen(cur) == len && strncmp(cur, p, len) == 0);
        p += len;
        p += strspn(p, " ");
    }
}

/* A state set (stats.def BF_STAT_TEXT): one sample per state, 1 for the
 * current one, so an alert can match sink_state{state="unauthorized"}; a
 * map of them (BF_STAT_STATE_MAP) has one set per entry,
 * pacing{dataset="llm_events",state="rate_limited"}. */
static void prom_states_print(FILE *out, const struct prom_family *f, const json_t *v)
{
    const char *k;
    json_t *e;
    int any = json_is_string(v);
    json_object_foreach((json_t *)v, k, e)
        any |= json_is_string(e);
    if (!any)
        return;
    fprintf(out, "# HELP birdfeeder_%s ", f->name);
    prom_escape(out, f->help, 0);
    fprintf(out, "\n# TYPE birdfeeder_%s gauge\n", f->name);
    if (json_is_string(v))
        prom_state_samples(out, f, NULL, json_string_value(v));
    json_object_foreach((json_t *)v, k, e)
        if (json_is_string(e))
            prom_state_samples(out, f, k, json_string_value(e));
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

void stats_prom_write(const json_t *snap, FILE *out)
{
    size_t nf = sizeof(prom_families) / sizeof(prom_families[0]);
    for (size_t i = 0; i < nf; i++) {
        const struct prom_family *f = &prom_families[i];
        json_t *v = json_object_get(snap, f->key);
        if (f->name && f->states && (json_is_string(v) || json_is_object(v)))
            prom_states_print(out, f, v);
        else if (f->name && (json_is_number(v) || (f->label && json_is_object(v))))
            prom_family_print(out, f->name, f->type, f->help, f->label,
                              prom_scale(f->name), v);
    }
    /* Keys this version does not know: gauges, so nothing is claimed. */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)snap, k, v) {
        int known = 0;
        for (size_t i = 0; i < nf && !known; i++)
            known = strcmp(k, prom_families[i].key) == 0;
        size_t kl = strlen(k);
        if (!known && kl > 6 && strcmp(k + kl - 6, "_total") == 0) {
            char base[128]; /* a newer daemon's x_total: the sum of map x */
            snprintf(base, sizeof(base), "%.*s", (int)(kl - 6), k);
            known = json_is_object(json_object_get(snap, base));
        }
        if (known || !(json_is_number(v) || json_is_object(v)))
            continue;
        char name[128], help[192];
        prom_name(name, sizeof(name), k);
        snprintf(help, sizeof(help), "Stats key %s (no description in this birdfeeder).", k);
        int q = json_is_object(v) && prom_is_quantiles(v);
        prom_family_print(out, name, q ? "summary" : "gauge", help, q ? "quantile" : "key", 0,
                          v);
    }
}
