/*
 * test_sink_kafka.c: the Kafka backend (daemon/sink_kafka.c) under the
 * delivery policy, against librdkafka's mock cluster in this process (3
 * brokers): rows keyed by id, batches delivered and their memory released,
 * and at the deadline, with the brokers down, the purge answering every job
 * so the policy spools it. Integration tests (tests/integration/
 * test_kafka.py) read the rows back with kcat and inject broker errors.
 */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "memory.h"
#include "sink.h"
#include "sink_kafka.h"
#include "spool.h"
#include "stats.h"
#include "testutil.h"

static uv_loop_t loop;
static rd_kafka_t *mrk;
static rd_kafka_mock_cluster_t *mc;
static char tmpdir[64], spool_dir[128], log_path[128];
static int saved_stderr = -1;
static uint64_t drained;

static void kafka_setup(void)
{
    memset(&stats, 0, sizeof(stats));
    memory_set_cap(64 << 20);
    drained = 0;
    tu_mkdtemp(tmpdir, sizeof(tmpdir), "kafka");
    snprintf(spool_dir, sizeof(spool_dir), "%s/spool", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    saved_stderr = tu_stderr_to(log_path);
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
    mrk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    ck_assert_ptr_nonnull(mrk);
    mc = rd_kafka_mock_cluster_new(mrk, 3);
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "t.image_events", 3, 3), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "t.llm_events", 3, 3), 0);
}

static void kafka_teardown(void)
{
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    tu_stderr_restore(saved_stderr, log_path);
    saved_stderr = -1;
    tu_rmtree(tmpdir);
}

static const struct {
    const char *row, *key;
} keys[] = {
    {"{\"id\":\"abc\",\"n\":1}", "abc"},
    {"{\"id\":\"a\\\"b\",\"n\":1}", "a\\\"b"}, /* an escaped quote stays in */
    {"{\"id\":\"\",\"n\":1}", ""},
    {"{\"n\":1,\"id\":\"abc\"}", NULL},        /* id not first: no key */
    {"{\"id\":\"unterminated", NULL},
    {"{\"id\":\"", NULL},
    {"", NULL},
};

START_TEST(test_sink_kafka_row_key)
{
    const char *row = keys[_i].row, *key = NULL;
    size_t n = sink_kafka_row_key(row, strlen(row), &key);
    if (!keys[_i].key) {
        ck_assert_uint_eq(n, 0);
    } else {
        ck_assert_uint_eq(n, strlen(keys[_i].key));
        if (n)
            ck_assert(memcmp(key, keys[_i].key, n) == 0);
    }
}
END_TEST

static void start(int with_spool, const char *timeout_ms)
{
    static spool_opts po;
    static sink_kafka_opts ko;
    static const char *props[2];
    static char timeout_kv[64];
    snprintf(timeout_kv, sizeof(timeout_kv), "message.timeout.ms=%s", timeout_ms);
    props[0] = timeout_kv;
    props[1] = "log_level=0";
    po = (spool_opts){.dir = spool_dir, .max_bytes = 1 << 24, .segment_bytes = 1 << 20,
                      .dead_letter_max = 1 << 20};
    ko = (sink_kafka_opts){.brokers = rd_kafka_mock_cluster_bootstraps(mc),
                           .topic_prefix = "t.", .compression = "lz4",
                           .properties = props, .n_properties = 2,
                           .max_memory = 64 << 20};
    sink_opts so = {.backend = &sink_kafka, .backend_opts = &ko,
                    .spool = with_spool ? &po : NULL, .max_inflight = 4,
                    .backoff_min_ms = 50, .backoff_max_ms = 100};
    char err[256] = "";
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_msg(sink_start(&loop, &so, err, sizeof(err)) == 0, "sink_start: %s", err);
}

static void finish(void)
{
    sink_close();
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_uint_eq(memory_used(), 0);
}

START_TEST(test_sink_kafka_delivers_and_releases)
{
    start(0, "10000");
    sink_submit(tu_batch(BF_DATASET_image_events, 50, "img"));
    sink_submit(tu_batch(BF_DATASET_llm_events, 30, "llm"));
    ck_assert_uint_gt(memory_used(), 0);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_delivered[BF_DATASET_llm_events], 30,
                               10000));
    ck_assert(tu_run_until_u64(&loop, &stats.rows_delivered[BF_DATASET_image_events], 50,
                               10000));
    ck_assert_uint_eq(stats.kafka_messages, 80);
    ck_assert_uint_eq(stats.kafka_delivery_errors, 0);
    ck_assert_uint_eq(sink_pending(), 0);
    sink_drain(uv_now(&loop) + 1000, tu_count_cb, &drained);
    ck_assert(tu_run_until_u64(&loop, &drained, 1, 3000));
    finish();
}
END_TEST

START_TEST(test_sink_kafka_deadline_purges_into_the_spool)
{
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(mc, b);
    start(1, "60000");
    sink_submit(tu_batch(BF_DATASET_image_events, 40, "img"));
    sink_submit(tu_batch(BF_DATASET_llm_events, 20, "llm"));
    tu_run_for(&loop, 100);
    ck_assert_uint_eq(stats.kafka_messages, 60); /* produced, not reported */
    uint64_t t0 = tu_mono_ms();
    sink_drain(uv_now(&loop) + 300, tu_count_cb, &drained);
    ck_assert(tu_run_until_u64(&loop, &drained, 1, 5000));
    ck_assert_uint_lt(tu_mono_ms() - t0, 2000); /* the purge answers at once */
    ck_assert_uint_eq(stats.rows_spooled, 60);
    ck_assert_uint_eq(stats.rows_delivered[BF_DATASET_image_events], 0);
    finish();
}
END_TEST

/* What librdkafka would hold is reserved before anything is produced: with
 * no room the batch waits (nothing produced, no retry counted) and goes
 * when the cap allows it. */
START_TEST(test_sink_kafka_waits_for_memory)
{
    start(0, "10000");
    memory_set_cap(4096); /* the batch fits, its messages' share does not */
    sink_submit(tu_batch(BF_DATASET_image_events, 50, "mem"));
    tu_run_for(&loop, 300);
    ck_assert_uint_eq(stats.kafka_messages, 0);
    ck_assert_uint_eq(stats.retries, 0);
    ck_assert_uint_le(memory_used(), 4096);
    memory_set_cap(64 << 20);
    ck_assert(tu_run_until_u64(&loop, &stats.rows_delivered[BF_DATASET_image_events], 50,
                               10000));
    ck_assert_uint_eq(stats.kafka_messages, 50);
    sink_drain(uv_now(&loop) + 1000, tu_count_cb, &drained);
    ck_assert(tu_run_until_u64(&loop, &drained, 1, 3000));
    finish();
}
END_TEST

Suite *sink_kafka_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("sink_kafka", kafka_setup, kafka_teardown, &tc);
    tcase_add_loop_test(tc, test_sink_kafka_row_key, 0, (int)(sizeof(keys) / sizeof(keys[0])));
    tcase_add_test(tc, test_sink_kafka_delivers_and_releases);
    tcase_add_test(tc, test_sink_kafka_deadline_purges_into_the_spool);
    tcase_add_test(tc, test_sink_kafka_waits_for_memory);
    return s;
}
