/*
 * test_health.c: daemon/health.c, the answer of GET /health: each reason
 * at its edge (backing off 60 s is still healthy, 60.001 s is not; a spool
 * at 90% of its cap is healthy, past it not; memory at its cap is not; a
 * retrying sink is healthy, a held one, unauthorized or not found, not),
 * the figures each reason gives, several reasons at once, and what the
 * state reads from the modules when nothing runs.
 */
#include <check.h>
#include <jansson.h>
#include <string.h>

#include "health.h"
#include "memory.h"
#include "testutil.h"

/* A healthy state: receiving, nothing failing, spool and memory low. */
static health_state fine(void)
{
    return (health_state){.receiving = 1, .spool_bytes = 0, .spool_cap = 1000,
                          .memory_bytes = 10, .memory_cap = 1000};
}

/* The answer for s as compact JSON text (static buffer), and *healthy. */
static const char *answer(const health_state *s, int *healthy)
{
    static char text[1024];
    *healthy = -1;
    json_t *o = health_answer(s, healthy);
    ck_assert_ptr_nonnull(o);
    char *t = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ck_assert_ptr_nonnull(t);
    snprintf(text, sizeof(text), "%s", t);
    free(t);
    json_decref(o);
    return text;
}

/* A state: receiving, failing_ms, failing dataset, spool bytes and cap,
 * memory bytes and cap; the sink ok. */
#define ST(recv, fail, ds, sb, sc, mb, mc)                                        \
    {.receiving = recv, .failing_ms = fail, .failing_dataset = ds, .spool_bytes = sb, \
     .spool_cap = sc, .memory_bytes = mb, .memory_cap = mc}

static const struct {
    const char *name;
    health_state s;
    int healthy;
    const char *body;
} cases[] = {
    {"fine", ST(1, 0, 0, 0, 1000, 10, 1000), 1, "{\"status\":\"ok\"}"},
    {"no spool, no cap", ST(1, 0, 0, 5000, 0, 5000, 0), 1, "{\"status\":\"ok\"}"},
    {"stopping", ST(0, 0, 0, 0, 1000, 0, 1000), 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"not_receiving\"}]}"},
    {"failing 60 s", ST(1, 60000, BF_DATASET_image_events, 0, 1000, 0, 1000), 1,
     "{\"status\":\"ok\"}"},
    {"failing 60.001 s", ST(1, 60001, BF_DATASET_image_events, 0, 1000, 0, 1000), 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"backing_off\","
     "\"dataset\":\"image_events\",\"failing_s\":60}]}"},
    {"spool at 90%", ST(1, 0, 0, 900, 1000, 0, 1000), 1, "{\"status\":\"ok\"}"},
    {"spool past 90%", ST(1, 0, 0, 901, 1000, 0, 1000), 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"spool_nearly_full\","
     "\"spool_bytes\":901,\"max_spool_bytes\":1000}]}"},
    {"memory under cap", ST(1, 0, 0, 0, 1000, 999, 1000), 1, "{\"status\":\"ok\"}"},
    {"memory at cap", ST(1, 0, 0, 0, 1000, 1000, 1000), 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"memory_at_cap\","
     "\"memory_bytes\":1000,\"max_memory\":1000}]}"},
    {"sink retrying", {.receiving = 1, .sink_state = "retrying"}, 1, "{\"status\":\"ok\"}"},
    {"sink ok", {.receiving = 1, .sink_state = "ok"}, 1, "{\"status\":\"ok\"}"},
    {"unauthorized", {.receiving = 1, .sink_state = "unauthorized", .sink_hint = "a 403"}, 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"sink_unauthorized\","
     "\"hint\":\"a 403\"}]}"},
    {"not found", {.receiving = 1, .sink_state = "not_found"}, 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"sink_not_found\"}]}"},
    {"everything", ST(0, 125000, BF_DATASET_llm_events, 1000, 1000, 2000, 1000), 0,
     "{\"status\":\"unhealthy\",\"reasons\":[{\"reason\":\"not_receiving\"},"
     "{\"reason\":\"backing_off\",\"dataset\":\"llm_events\",\"failing_s\":125},"
     "{\"reason\":\"spool_nearly_full\",\"spool_bytes\":1000,\"max_spool_bytes\":1000},"
     "{\"reason\":\"memory_at_cap\",\"memory_bytes\":2000,\"max_memory\":1000}]}"},
};

START_TEST(test_health_answer_table)
{
    int healthy;
    const char *body = answer(&cases[_i].s, &healthy);
    ck_assert_msg(healthy == cases[_i].healthy, "%s: healthy %d", cases[_i].name, healthy);
    ck_assert_msg(strcmp(body, cases[_i].body) == 0, "%s:\n got %s\nwant %s", cases[_i].name,
                  body, cases[_i].body);
}
END_TEST

/* Read from the modules with nothing started: the socket is not read (not
 * yet listening), no dataset fails, no spool; memory as memory.h counts. */
START_TEST(test_health_read_before_start)
{
    memory_set_cap(4096);
    memory_reserve(4096);
    health_state s = health_read(123456);
    memory_release(4096);
    ck_assert_int_eq(s.receiving, 0);
    ck_assert_str_eq(s.sink_state, "ok");
    ck_assert_ptr_null(s.sink_hint);
    ck_assert_uint_eq(s.failing_ms, 0);
    ck_assert_uint_eq(s.spool_cap, 0);
    ck_assert_uint_eq(s.memory_bytes, 4096);
    ck_assert_uint_eq(s.memory_cap, 4096);
    int healthy;
    const char *body = answer(&s, &healthy);
    ck_assert_int_eq(healthy, 0);
    ck_assert_msg(strstr(body, "not_receiving") && strstr(body, "memory_at_cap"), "%s", body);
    health_state f = fine();
    answer(&f, &healthy);
    ck_assert_int_eq(healthy, 1);
}
END_TEST

Suite *health_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("health", NULL, NULL, &tc);
    tcase_add_loop_test(tc, test_health_answer_table, 0, N(cases));
    tcase_add_test(tc, test_health_read_before_start);
    return s;
}
