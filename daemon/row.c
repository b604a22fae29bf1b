/* row.c: NDJSON row writer. See row.h. */
#include "row.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "stats.h"

static const char *const image_columns[] = {
    "id", "user_id", "username", "tier", "model", "provider", "start_time",
    "end_time", "duration_ms", "status", "error_message", "prompt", "width",
    "height", "steps", "cached", "cost_usd", "referrer", "ip", "ip_hash", NULL};
static const char *const llm_columns[] = {
    "id", "user_id", "username", "tier", "model", "provider", "start_time",
    "end_time", "duration_ms", "status", "error_message", "prompt_tokens",
    "completion_tokens", "cached_tokens", "total_tokens", "stream", "cached",
    "cost_usd", "referrer", "ip", "ip_hash", NULL};

const char *const *row_columns(unsigned dataset)
{
    switch (dataset) {
    case BF_DATASET_image_events: return image_columns;
    case BF_DATASET_llm_events: return llm_columns;
    default: return NULL;
    }
}

size_t row_max_bytes(size_t max_datagram)
{
    /* 6x for escapes, plus ~30 columns of names, numbers and timestamps. */
    return max_datagram * 6 + 2048;
}

/* One second's "YYYY-MM-DD HH:MM:SS" is reused for every row in that second:
 * gmtime_r is the dearest call in a row otherwise. */
void row_format_time(char *out, uint64_t ms)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[20];
    time_t sec = (time_t)(ms / 1000);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%d %H:%M:%S", &tm);
        cached_sec = sec;
    }
    unsigned frac = (unsigned)(ms % 1000);
    memcpy(out, cached, 19);
    out[19] = '.';
    out[20] = (char)('0' + frac / 100);
    out[21] = (char)('0' + frac / 10 % 10);
    out[22] = (char)('0' + frac % 10);
    out[23] = '\0';
}

static char *put_lit(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define LIT(p, s) put_lit(p, s, sizeof(s) - 1)

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* A JSON string: escapes, and U+FFFD for bytes that are not UTF-8. */
static char *put_str(char *p, const char *s, size_t len, int *replaced)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    *p++ = '"';
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *p++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            *p++ = '\\';
            switch (c) {
            case '"': *p++ = '"'; break;
            case '\\': *p++ = '\\'; break;
            case '\n': *p++ = 'n'; break;
            case '\r': *p++ = 'r'; break;
            case '\t': *p++ = 't'; break;
            default:
                p = LIT(p, "u00");
                *p++ = hex[c >> 4];
                *p++ = hex[c & 15];
            }
            i++;
            continue;
        }
        size_t k = enrich_utf8_prefix((const char *)u + i, len - i, 1);
        /* A valid sequence here is 2 to 4 bytes; 1 means an invalid byte. */
        if (k > 1) {
            memcpy(p, u + i, k);
            p += k;
            i += k;
        } else {
            p = LIT(p, "\xEF\xBF\xBD");
            *replaced = 1;
            i++;
        }
    }
    *p++ = '"';
    return p;
}

#define KEY(p, name) LIT(p, ",\"" name "\":")

size_t row_format(char *out, const bf_row *row)
{
    const bf_event *ev = row->ev;
    char *p = out;
    int replaced = 0;
    char ts[24];

    p = LIT(p, "{\"id\":");
    p = put_str(p, row->id.ptr, row->id.len, &replaced);
    p = KEY(p, "user_id");
    p = put_str(p, row->user_id.ptr, row->user_id.len, &replaced);
    p = KEY(p, "username");
    p = put_str(p, ev->username.ptr, BF_HAS(ev, username) ? ev->username.len : 0,
                &replaced);
    p = KEY(p, "tier");
    p = put_str(p, row->tier.ptr, row->tier.len, &replaced);
    p = KEY(p, "model");
    p = put_str(p, ev->model.ptr, ev->model.len, &replaced);
    p = KEY(p, "provider");
    p = put_str(p, row->provider, strlen(row->provider), &replaced);
    p = KEY(p, "start_time");
    row_format_time(ts, row->start_ms);
    *p++ = '"';
    p = put_lit(p, ts, 23);
    *p++ = '"';
    p = KEY(p, "end_time");
    row_format_time(ts, row->end_ms);
    *p++ = '"';
    p = put_lit(p, ts, 23);
    *p++ = '"';
    p = KEY(p, "duration_ms");
    p = put_u64(p, row->duration_ms);
    p = KEY(p, "status");
    p = put_str(p, row->status.ptr, row->status.len, &replaced);
    p = KEY(p, "error_message");
    p = put_str(p, row->error_message.ptr, row->error_message.len, &replaced);
    if (ev->dataset == BF_DATASET_image_events) {
        p = KEY(p, "prompt");
        p = put_str(p, row->prompt.ptr, row->prompt.len, &replaced);
        p = KEY(p, "width");
        p = put_u64(p, ev->width);
        p = KEY(p, "height");
        p = put_u64(p, ev->height);
        p = KEY(p, "steps");
        p = put_u64(p, ev->steps);
    } else {
        p = KEY(p, "prompt_tokens");
        p = put_u64(p, ev->prompt_tokens);
        p = KEY(p, "completion_tokens");
        p = put_u64(p, ev->completion_tokens);
        p = KEY(p, "cached_tokens");
        p = put_u64(p, ev->cached_tokens);
        p = KEY(p, "total_tokens");
        p = put_u64(p, row->total_tokens);
        p = KEY(p, "stream");
        p = ev->stream ? LIT(p, "true") : LIT(p, "false");
    }
    p = KEY(p, "cached");
    p = ev->cached ? LIT(p, "true") : LIT(p, "false");
    p = KEY(p, "cost_usd");
    if (row->cost_usd == 0.0)
        *p++ = '0';
    else
        p += snprintf(p, 32, "%.10g", row->cost_usd);
    p = KEY(p, "referrer");
    p = put_str(p, row->referrer, row->referrer_len, &replaced);
    p = KEY(p, "ip");
    p = put_str(p, row->ip, strlen(row->ip), &replaced);
    p = KEY(p, "ip_hash");
    p = put_str(p, row->ip_hash, strlen(row->ip_hash), &replaced);
    p = LIT(p, "}\n");
    if (replaced)
        stats.utf8_replaced++;
    return (size_t)(p - out);
}
