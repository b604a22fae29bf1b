/*
 * enrich.h: from a validated event to the values of one row.
 *
 * Adds what the sender does not know or must not send: provider and cost
 * from the catalog, an anonymised IP and its keyed hash, an id, complete
 * timestamps, a prompt cut to BF_PROMPT_MAX_CHARS, a referrer cut to its
 * origin.
 * Privacy: the raw IP never leaves this module: bf_row holds only the
 * anonymised form and the hash, and copies the event's other values rather
 * than pointing at the event. The referrer loses credentials, path, query
 * and fragment, where tokens hide.
 */
#ifndef BF_ENRICH_H
#define BF_ENRICH_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"
#include "catalog.h"

#define ERROR_MAX_CHARS 500
#define REFERRER_MAX 256 /* longest origin kept; longer ones become "" */
#define IP_HASH_HEX 32   /* hex digits of HMAC-SHA256 kept (128 bits) */

typedef struct bf_row {
    unsigned dataset;            /* enum bf_dataset */
    /* Copied from the event: the row never points at the event itself,
     * so nothing downstream can reach its raw ip or referrer. */
    bf_str model, username;      /* borrowed from the event's buffer */
    uint64_t width, height, steps;
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
    int stream, cached;
    /* Added or cleaned here. */
    const char *provider;        /* catalog-owned, or "unknown" */
    size_t provider_len;         /* strlen(provider) */
    double cost_usd;
    uint64_t start_ms, end_ms, duration_ms, total_tokens;
    bf_str id, user_id, tier, status, prompt, error_message;
    char id_buf[40];             /* generated id, when the event had none */
    char ip[48];                 /* anonymised; "" when absent or invalid */
    size_t ip_len;               /* strlen(ip) */
    char ip_hash[IP_HASH_HEX + 1]; /* IP_HASH_HEX digits, or "" when ip is */
    char referrer[REFERRER_MAX + 1];
    size_t referrer_len;
} bf_row;

typedef struct enrich_ctx enrich_ctx;

/* Create a context at *out with the ip_hash key read from key_file, which is
 * created (mode 0600, 32 random bytes as hex) when missing so hashes stay
 * stable across restarts. An existing key that group or others may read,
 * or that another user owns, is refused (file_check.h). Returns 0, or a negative errno with a reason in
 * err (size n) and *out NULL. */
int enrich_new(const char *key_file, enrich_ctx **out, char *err, size_t n);
void enrich_free(enrich_ctx *ctx);

/* Whether enrich_new could use key_file as it is, changing nothing: 0 when
 * it holds a usable key; -ENOENT when it does not exist (enrich_new would
 * create it: the caller checks its directory); another negative errno
 * (unreadable, too short: -EINVAL) with the reason in err (size n). */
int enrich_check_key(const char *key_file, char *err, size_t n);

/* Use cat for lookups from now on (not owned; the caller keeps it alive
 * until the next enrich_set_catalog or enrich_free). */
void enrich_set_catalog(enrich_ctx *ctx, const catalog *cat);

/* Start times outside [recv - max_age_ms, recv + max_skew_ms] are
 * rejected by enrich_event from now on; 0 leaves that side open (the
 * default until this is called). */
void enrich_set_time_window(enrich_ctx *ctx, uint64_t max_age_ms, uint64_t max_skew_ms);

/* Fill row from ev (which bf_validate accepted). recv_ms is the wall-clock
 * time of receipt, the default start. Returns BF_OK, or, when the start
 * time the row would get lies outside the time window (an event dated 1970
 * by a sender passing seconds: a partition the TTL deletes at once),
 * BF_R_stale_time or BF_R_future_time; row is then incomplete, not to be
 * used. Otherwise nothing fails; what cannot be used is emptied and counted
 * (stats.ip_invalid, stats.unknown_model). Strings of row borrow the buffer
 * ev's strings point into, which must outlive row. */
bf_reason enrich_event(enrich_ctx *ctx, const bf_event *ev, uint64_t recv_ms,
                       bf_row *row);

/* Exposed for tests. */
/* Origin of a URL into out (size REFERRER_MAX + 1) by the WHATWG URL
 * rules: "http(s)://host[:port]", lowercased, default port left out; ""
 * for any other scheme, a URL that does not parse, a non-ASCII host, or an
 * origin longer than REFERRER_MAX. Reads len bytes of url, NULs included.
 * Returns the length. */
size_t enrich_referrer(const char *url, size_t len, char *out);
/* enrich_referrer() through ctx's cache of recent referrers, keyed by the
 * whole text as sent: the same result, parsed once per text. */
size_t enrich_referrer_cached(enrich_ctx *ctx, const char *url, size_t len, char *out);
/* Anonymise ip (len bytes) into out (48 bytes) and hash it into hash
 * (IP_HASH_HEX + 1): IPv4 to its /24, IPv6 to its /48, and an IPv6 address
 * carrying an IPv4 (mapped, compatible, NAT64, 6to4, Teredo) as that IPv4.
 * Returns 0, or -EINVAL when ip does not parse. */
int enrich_ip(enrich_ctx *ctx, const char *ip, size_t len, char *out, char *hash);

#endif /* BF_ENRICH_H */
