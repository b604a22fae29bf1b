/*
 * cli/dead_letter.c: `birdfeeder dead-letter list|replay`: the batches whose
 * rows Tinybird refused (400, 422: a schema the rows do not fit), which the
 * daemon keeps in <spool-dir>/dead-letter.ndjson (daemon/spool.h: a header
 * line {"dead_letter":{...}}, then the rows as sent).
 *
 *   list     one line per batch: when, dataset, status, rows, the answer
 *   replay   POST each batch again, straight to the Events API with the
 *            daemon's configuration (token, --tinybird-url, as config_load
 *            reads them: flags here, the environment, --config FILE), once
 *            the cause is fixed; only what Tinybird accepted is removed
 *
 * replay renames each file it works on to dead-letter.replay-PID-N.ndjson
 * first, so the daemon, which opens dead-letter.ndjson anew for every
 * batch it refuses, keeps appending to a new file meanwhile; a batch that
 * is refused again goes back to dead-letter.ndjson with its new answer, and
 * the renamed file is removed at the end. A replay that was cut short
 * leaves its file, which the next list and replay read first: a batch is
 * then sent again (at-least-once; the datasources collapse repeated rows
 * by id). Refused for us, not the rows (401, 403, 404), a retryable answer
 * or no answer stops the replay: the rest is kept unsent.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"

#define DL_NAME "dead-letter.ndjson"

/* One refused batch: its header's fields and its rows as they were sent. */
typedef struct dl_batch {
    json_t *head;       /* the "dead_letter" object */
    char *rows;         /* NDJSON, each row ending in '\n' */
    size_t len;
    unsigned long nrows; /* rows found (the header's count when whole) */
    int torn;           /* the file ended inside it */
} dl_batch;

typedef struct dl_file {
    char path[PATH_MAX];
    dl_batch *b;
    size_t n, cap;
} dl_file;

static void dl_file_free(dl_file *f)
{
    for (size_t i = 0; i < f->n; i++) {
        json_decref(f->b[i].head);
        free(f->b[i].rows);
    }
    free(f->b);
    f->b = NULL;
    f->n = f->cap = 0;
}

/* Read path into f. Lines that are neither a header nor a row of one are
 * reported and skipped. Returns 0, -ENOENT when there is no such file, or
 * another negative errno. */
static int dl_read(const char *path, dl_file *f)
{
    FILE *in = fopen(path, "re");
    if (!in)
        return -errno;
    snprintf(f->path, sizeof(f->path), "%s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0, want = 0;
    dl_batch *cur = NULL;
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        json_t *o = NULL;
        json_t *head = NULL;
        if (!want || line[0] == '{') {
            o = json_loadb(line, (size_t)n, JSON_DISABLE_EOF_CHECK, NULL);
            head = json_object_get(o, "dead_letter");
        }
        if (json_is_object(head)) {
            if (cur && want)
                cur->torn = 1;
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 16;
                dl_batch *nb = realloc(f->b, f->cap * sizeof(*nb));
                if (!nb) {
                    json_decref(o);
                    break;
                }
                f->b = nb;
            }
            cur = &f->b[f->n++];
            *cur = (dl_batch){.head = json_incref(head)};
            want = (unsigned long)json_integer_value(json_object_get(head, "rows"));
        } else if (cur && want) {
            char *r = realloc(cur->rows, cur->len + (size_t)n + 1);
            if (!r) {
                json_decref(o);
                break;
            }
            cur->rows = r;
            memcpy(r + cur->len, line, (size_t)n);
            cur->len += (size_t)n;
            if (r[cur->len - 1] != '\n')
                r[cur->len++] = '\n';
            cur->nrows++;
            want--;
        } else {
            fprintf(stderr, PROG ": %s:%lu: neither a dead_letter header nor one of its "
                            "rows: skipped\n", path, lineno);
        }
        json_decref(o);
    }
    if (cur && want)
        cur->torn = 1;
    free(line);
    fclose(in);
    return 0;
}

/* The files a replay or a list reads, oldest first: what a cut-short replay
 * left, then the rotated file, then the current one. */
static size_t dl_paths(const char *dir, char (*out)[PATH_MAX], size_t max)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max)
        if (strncmp(e->d_name, "dead-letter.replay-", 19) == 0)
            snprintf(out[n++], PATH_MAX, "%s/%s", dir, e->d_name);
    if (d)
        closedir(d);
    if (n > 1)
        qsort(out, n, PATH_MAX, (int (*)(const void *, const void *))strcmp);
    if (n < max)
        snprintf(out[n++], PATH_MAX, "%s/dead-letter.1.ndjson", dir);
    if (n < max)
        snprintf(out[n++], PATH_MAX, "%s/" DL_NAME, dir);
    return n;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void print_when(FILE *out, json_int_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char buf[32];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
    fputs(buf, out);
}

/* The answer on one line, at most max bytes of it. */
static void print_answer(FILE *out, const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] && i < max; i++)
        fputc(s[i] == '\n' || s[i] == '\r' || s[i] == '\t' ? ' ' : s[i], out);
    if (s[i])
        fputs("...", out);
}

/* ---- options: the daemon's configuration ---------------------------- */

typedef struct dl_opts {
    int replay;
    bf_config cfg;
} dl_opts;

/* Parse argv (argv[0] "dead-letter", then list|replay and options) and
 * load the daemon's configuration with the options given here. Returns 0,
 * or the exit status to return. */
static int dl_parse(int argc, char **argv, dl_opts *o)
{
    static const struct option opts[] = {
        {"spool-dir", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"tinybird-url", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char usage[] =
        "usage: " PROG " dead-letter list|replay [--spool-dir DIR] [--config FILE]\n"
        "                  [--tinybird-url URL]\n";
    if (argc < 2 || (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "replay") != 0)) {
        fputs(usage, stderr);
        return 2;
    }
    o->replay = strcmp(argv[1], "replay") == 0;
    /* What config_load reads: the daemon's own option names. */
    char *cargv[8] = {(char *)"birdfeeder"};
    int cargc = 1, opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *flag = opt == 's' ? "--spool-dir" : opt == 'c' ? "--config"
                           : opt == 'u' ? "--tinybird-url" : NULL;
        if (opt == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        if (!flag || cargc > 6) {
            fputs(usage, stderr);
            return 2;
        }
        cargv[cargc++] = (char *)flag;
        cargv[cargc++] = optarg;
    }
    if (optind != argc) {
        fprintf(stderr, PROG " dead-letter: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    char err[512];
    if (config_load(&o->cfg, cargc, cargv, err, sizeof(err)) != CONFIG_OK) {
        fprintf(stderr, PROG " dead-letter: %s\n", err);
        config_free(&o->cfg);
        return 2;
    }
    return 0;
}

/* ---- list ------------------------------------------------------------ */

static int dl_list(const dl_opts *o)
{
    char paths[64][PATH_MAX];
    size_t np = dl_paths(o->cfg.spool_dir, paths, 64);
    unsigned long batches = 0, rows = 0;
    for (size_t p = 0; p < np; p++) {
        dl_file f = {0};
        int rc = dl_read(paths[p], &f);
        if (rc == -ENOENT)
            continue;
        if (rc < 0) {
            fprintf(stderr, PROG ": %s: %s\n", paths[p], strerror(-rc));
            return 1;
        }
        for (size_t i = 0; i < f.n; i++) {
            const json_t *h = f.b[i].head;
            printf("%4lu  ", ++batches);
            print_when(stdout, json_integer_value(json_object_get(h, "ts_ms")));
            printf("  %-12s  %3d  %5lu rows%s  ", jstr(h, "dataset"),
                   (int)json_integer_value(json_object_get(h, "status")), f.b[i].nrows,
                   f.b[i].torn ? " (torn)" : "");
            print_answer(stdout, jstr(h, "response"), 160);
            putchar('\n');
            rows += f.b[i].nrows;
        }
        dl_file_free(&f);
    }
    fprintf(stderr, "%lu batches, %lu rows in %s\n", batches, rows, o->cfg.spool_dir);
    return 0;
}

/* ---- replay ----------------------------------------------------------- */

typedef struct dl_answer {
    long status;            /* 0: no answer */
    char body[4096];
    size_t len;
    char error[CURL_ERROR_SIZE];
} dl_answer;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    dl_answer *a = arg;
    size_t take = size * n;
    if (take > sizeof(a->body) - 1 - a->len)
        take = sizeof(a->body) - 1 - a->len;
    memcpy(a->body + a->len, p, take);
    a->len += take;
    a->body[a->len] = '\0';
    return size * n;
}

/* POST one batch's rows to the Events API; the answer in *a. */
static void dl_post(CURL *curl, const bf_config *cfg, const dl_batch *b, dl_answer *a)
{
    char url[1024], auth[4096];
    memset(a, 0, sizeof(*a));
    snprintf(url, sizeof(url), "%s/v0/events?name=%s&wait=true", cfg->tinybird_url,
             jstr(b->head, "dataset"));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->token);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
    struct curl_slist *h2 = h ? curl_slist_append(h, auth) : NULL;
    explicit_bzero(auth, sizeof(auth));
    if (!h2) {
        curl_slist_free_all(h);
        snprintf(a->error, sizeof(a->error), "out of memory");
        return;
    }
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h2);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, b->rows ? b->rows : "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "birdfeeder-dead-letter/1");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)cfg->http_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, a->error);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(h2);
}

/* Append b to the dead-letter file again: one write, as the daemon does,
 * with the new answer when there is one. */
static int dl_keep(const char *dir, dl_batch *b, const dl_answer *a)
{
    if (a && a->status) {
        json_object_set_new(b->head, "status", json_integer((json_int_t)a->status));
        json_object_set_new(b->head, "response", json_string(a->body));
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        json_object_set_new(b->head, "ts_ms",
                            json_integer((json_int_t)now.tv_sec * 1000 + now.tv_nsec / 1000000));
    }
    json_object_set_new(b->head, "rows", json_integer((json_int_t)b->nrows));
    json_t *wrap = json_pack("{s:O}", "dead_letter", b->head);
    char *text = wrap ? json_dumps(wrap, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(wrap);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" DL_NAME, dir);
    int fd = text ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    int rc = fd < 0 ? -1 : 0;
    if (fd >= 0) {
        static char nl[] = "\n";
        struct iovec iov[3] = {{text, strlen(text)}, {nl, 1}, {b->rows, b->len}};
        ssize_t want = (ssize_t)(iov[0].iov_len + 1 + b->len);
        rc = writev(fd, iov, 3) == want ? 0 : -1;
        if (close(fd) < 0)
            rc = -1;
    }
    free(text);
    if (rc < 0)
        fprintf(stderr, PROG ": writing %s: %s\n", path, strerror(errno));
    return rc;
}

static int dl_replay(const dl_opts *o)
{
    const bf_config *cfg = &o->cfg;
    if (!cfg->token) {
        fprintf(stderr, PROG " dead-letter replay: no token: set TINYBIRD_API_KEY (or "
                        "give the daemon's --config)\n");
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, PROG ": libcurl initialisation failed\n");
        return 1;
    }
    CURL *curl = curl_easy_init();
    char paths[64][PATH_MAX];
    size_t np = dl_paths(cfg->spool_dir, paths, 64);
    unsigned long ok_b = 0, ok_r = 0, quarantined = 0, kept_b = 0, kept_r = 0;
    int stop = !curl, failed = 0;
    for (size_t p = 0; p < np && !failed; p++) {
        /* Take the file away from the daemon first (unless a cut-short
         * replay left it: then it is ours already). */
        char mine[PATH_MAX];
        if (strstr(paths[p], "dead-letter.replay-")) {
            memcpy(mine, paths[p], strlen(paths[p]) + 1);
        } else {
            int len = snprintf(mine, sizeof(mine), "%s/dead-letter.replay-%ld-%zu.ndjson",
                               cfg->spool_dir, (long)getpid(), p);
            if (len < 0 || (size_t)len >= sizeof(mine) || rename(paths[p], mine) < 0) {
                if (errno != ENOENT) {
                    fprintf(stderr, PROG ": %s: %s\n", paths[p], strerror(errno));
                    failed = 1;
                }
                continue;
            }
        }
        dl_file f = {0};
        int rc = dl_read(mine, &f);
        if (rc < 0) {
            fprintf(stderr, PROG ": %s: %s\n", mine, strerror(-rc));
            failed = 1;
            break;
        }
        for (size_t i = 0; i < f.n; i++) {
            dl_batch *b = &f.b[i];
            dl_answer a = {0};
            if (!stop)
                dl_post(curl, cfg, b, &a);
            json_t *counts = a.status >= 200 && a.status < 300
                                 ? json_loads(a.body, 0, NULL) : NULL;
            if (a.status >= 200 && a.status < 300) {
                ok_b++;
                ok_r += b->nrows;
                quarantined += (unsigned long)json_integer_value(
                    json_object_get(counts, "quarantined_rows"));
                json_decref(counts);
                continue;
            }
            if (!stop) {
                fprintf(stderr, PROG ": %s %s: %ld rows refused again: %s%s\n",
                        jstr(b->head, "dataset"), a.status ? "answered" : "no answer",
                        (long)b->nrows, a.status ? "" : a.error, a.status ? a.body : "");
                /* Refusing us, busy, or gone: sending the rest now would
                 * only be refused the same way. */
                if (a.status == 0 || a.status == 401 || a.status == 403 ||
                    a.status == 404 || a.status == 408 || a.status == 429 ||
                    a.status >= 500)
                    stop = 1;
            }
            kept_b++;
            kept_r += b->nrows;
            if (dl_keep(cfg->spool_dir, b, a.status ? &a : NULL) < 0)
                failed = 1;
        }
        dl_file_free(&f);
        if (!failed && unlink(mine) < 0)
            fprintf(stderr, PROG ": %s: %s\n", mine, strerror(errno));
    }
    if (curl)
        curl_easy_cleanup(curl);
    curl_global_cleanup();
    fprintf(stderr, "replayed to %s: accepted %lu batches (%lu rows, %lu quarantined), "
                    "kept %lu batches (%lu rows)%s\n",
            cfg->tinybird_url, ok_b, ok_r, quarantined, kept_b, kept_r,
            stop && kept_b ? "; stopped at the first refusal" : "");
    return failed || kept_b ? 1 : 0;
}

int cmd_dead_letter(int argc, char **argv)
{
    dl_opts o = {0};
    int rc = dl_parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = o.replay ? dl_replay(&o) : dl_list(&o);
    config_free(&o.cfg);
    return rc;
}
