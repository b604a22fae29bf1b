/* health.c: the reasons of GET /health. See health.h. */
#include "health.h"

#include <stdio.h>
#include <string.h>

#include "bf_proto.h"
#include "memory.h"
#include "receive.h"
#include "sink.h"
#include "spool.h"

health_state health_read(uint64_t now_ms)
{
    health_state s = {.receiving = receive_reading(),
                      .sink_state = sink_state(), .sink_hint = sink_state_hint(),
                      .spool_bytes = spool_bytes(), .spool_cap = spool_cap(),
                      .memory_bytes = memory_used(), .memory_cap = memory_cap(),
                      .memory_full = memory_room() < 0};
    s.failing_ms = sink_failing_ms(now_ms, &s.failing_dataset);
    return s;
}

/* Append {"reason": name, ...figures} to reasons; figures is a new object
 * or NULL. */
static void add_reason(json_t *reasons, const char *name, json_t *figures)
{
    json_t *r = json_pack("{s:s}", "reason", name);
    if (r && figures)
        json_object_update(r, figures);
    json_decref(figures);
    json_array_append_new(reasons, r);
}

#define I(v) ((json_int_t)(v))

json_t *health_answer(const health_state *s, int *healthy)
{
    json_t *reasons = json_array();
    if (!reasons)
        return NULL;
    if (!s->receiving)
        add_reason(reasons, "not_receiving", NULL);
    if (s->sink_state && (!strcmp(s->sink_state, "unauthorized") ||
                          !strcmp(s->sink_state, "not_found"))) {
        char name[32];
        snprintf(name, sizeof(name), "sink_%s", s->sink_state);
        add_reason(reasons, name,
                   s->sink_hint ? json_pack("{s:s}", "hint", s->sink_hint) : NULL);
    }
    if (s->failing_ms > HEALTH_BACKOFF_MS) {
        const char *ds = bf_dataset_name(s->failing_dataset);
        add_reason(reasons, "backing_off",
                   json_pack("{s:s, s:I}", "dataset", ds ? ds : "-", "failing_s",
                             I(s->failing_ms / 1000)));
    }
    if (s->spool_cap && s->spool_bytes * 100 > s->spool_cap * HEALTH_SPOOL_PERCENT)
        add_reason(reasons, "spool_nearly_full",
                   json_pack("{s:I, s:I}", "spool_bytes", I(s->spool_bytes),
                             "max_spool_bytes", I(s->spool_cap)));
    if (s->memory_full || (s->memory_cap && s->memory_bytes >= s->memory_cap))
        add_reason(reasons, "memory_at_cap",
                   json_pack("{s:I, s:I}", "memory_bytes", I(s->memory_bytes),
                             "max_memory", I(s->memory_cap)));

    *healthy = json_array_size(reasons) == 0;
    json_t *o = json_pack("{s:s}", "status", *healthy ? "ok" : "unhealthy");
    if (o && !*healthy)
        json_object_set(o, "reasons", reasons);
    json_decref(reasons);
    return o;
}
