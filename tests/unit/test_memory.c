/*
 * test_memory.c: daemon/memory.c, the memory account: reserve and release
 * balance, the cap is a hard bound (a reservation past it is refused), the
 * headroom keeps room for open batch buffers, and the account stays exact
 * and within the cap when threads reserve and release at once (spool reads
 * and compression run on workers).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "memory.h"
#include "testutil.h"

static void memory_setup(void)
{
    memory_set_cap(0);
    memory_set_headroom(0);
    memory_reset_peak();
    ck_assert_uint_eq(memory_used(), 0); /* each test starts balanced */
}

START_TEST(test_memory_reserve_release_balance)
{
    memory_reserve(1000);
    memory_reserve(24);
    ck_assert_uint_eq(memory_used(), 1024);
    memory_release(1000);
    ck_assert_uint_eq(memory_used(), 24);
    memory_release(24);
    ck_assert_uint_eq(memory_used(), 0);
}
END_TEST

START_TEST(test_memory_cap_refuses)
{
    ck_assert_uint_eq(memory_cap(), 0);
    ck_assert_int_eq(memory_reserve(1 << 20), 0); /* no cap: never refused */
    ck_assert_int_eq(memory_room(), INT64_MAX);
    memory_release(1 << 20);
    memory_set_cap(4096);
    ck_assert_int_eq(memory_reserve(4000), 0);
    ck_assert_int_eq(memory_reserve(97), -ENOMEM); /* one byte past the cap */
    ck_assert_uint_eq(memory_used(), 4000);          /* nothing counted */
    ck_assert_int_eq(memory_reserve(96), 0);          /* exactly at the cap */
    ck_assert_int_eq(memory_room(), 0);
    ck_assert_int_eq(memory_reserve(1), -ENOMEM);
    ck_assert_int_eq(memory_reserve_open(1), -ENOMEM);
    ck_assert_uint_eq(memory_peak() >= 4096, 1);
    memory_release(4096);
}
END_TEST

START_TEST(test_memory_headroom_for_open_buffers)
{
    memory_set_cap(10000);
    memory_set_headroom(4000); /* two datasets' open buffers of 2000 */
    /* Held memory may not eat the open buffers' room ... */
    ck_assert_int_eq(memory_reserve(6001), -ENOMEM);
    ck_assert_int_eq(memory_reserve(6000), 0);
    ck_assert_int_eq(memory_room(), 0);
    /* ... which open buffers may use up to the cap. */
    ck_assert_int_eq(memory_reserve_open(2000), 0);
    ck_assert_int_eq(memory_reserve_open(2000), 0);
    ck_assert_int_eq(memory_reserve_open(1), -ENOMEM);
    ck_assert_int_eq(memory_room(), 0);
    /* A batch closes: its 2000 bytes are held now, and its dataset's next
     * open buffer needs room again: the held room is negative, so the
     * policy spools. */
    memory_seal(2000);
    ck_assert_int_eq(memory_room(), -2000);
    ck_assert_int_eq(memory_reserve(1), -ENOMEM);
    memory_release(2000);                  /* written to the spool */
    ck_assert_int_eq(memory_room(), 0);
    ck_assert_int_eq(memory_reserve_open(2000), 0); /* the next open buffer */
    memory_release_open(4000);
    memory_release(6000);
    ck_assert_uint_eq(memory_used(), 0);
    ck_assert_int_eq(memory_room(), 6000);
}
END_TEST

enum { THREAD_ROUNDS = 200000 };

static void *churn(void *arg)
{
    uint64_t n = (uint64_t)(uintptr_t)arg;
    uintptr_t refused = 0; /* ck_assert is too slow for this loop */
    for (int i = 0; i < THREAD_ROUNDS; i++) {
        refused += memory_reserve(n) != 0;
        memory_release(n);
        refused += memory_reserve(1) != 0;
    }
    return (void *)refused;
}

/* Threads race for the last room: whoever wins, the cap is never passed. */
static void *race(void *arg)
{
    uint64_t *got = arg;
    uint64_t over = 0;
    for (int i = 0; i < THREAD_ROUNDS; i++) {
        if (memory_reserve(700) == 0) {
            over += memory_used() > 4096;
            memory_release(700);
            got[0]++;
        }
    }
    got[1] = over;
    return NULL;
}

START_TEST(test_memory_threads_never_pass_cap)
{
    memory_set_cap(4096); /* room for five reservations of 700, not six */
    pthread_t t[4];
    uint64_t got[4][2] = {{0}};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, race, got[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_uint_eq(memory_used(), 0);
    ck_assert_uint_le(memory_peak(), 4096);
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_gt(got[i][0], 0);
        ck_assert_uint_eq(got[i][1], 0); /* nobody saw the account past the cap */
    }
}
END_TEST

START_TEST(test_memory_threads_exact)
{
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, (void *)(i * 4096 + 7)), 0);
    for (int i = 0; i < 4; i++) {
        void *refused;
        pthread_join(t[i], &refused);
        ck_assert_ptr_null(refused); /* no cap: nothing refused */
    }
    /* A lost update would leave something other than one byte a round. */
    ck_assert_uint_eq(memory_used(), 4 * THREAD_ROUNDS);
    memory_release(4 * THREAD_ROUNDS);
}
END_TEST

START_TEST(test_memory_batch_buf_refused)
{
    memory_set_cap(1000);
    memory_set_headroom(400);
    ck_assert_ptr_null(batch_buf_new(BF_DATASET_llm_events, 601)); /* headroom */
    batch_buf *o = batch_buf_open(BF_DATASET_llm_events, 1000);    /* whole cap */
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_null(batch_buf_open(BF_DATASET_image_events, 1));
    batch_buf_seal(o);
    ck_assert_int_eq(memory_room(), -400);
    batch_buf_free(o);
    ck_assert_uint_eq(memory_used(), 0);
    ck_assert_int_eq(memory_room(), 600);
}
END_TEST

START_TEST(test_memory_batch_buf_accounts)
{
    batch_buf *b = batch_buf_new(BF_DATASET_llm_events, 100);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(memory_used(), 100);
    batch_buf *z = batch_buf_new(BF_DATASET_llm_events, 0); /* still a buffer */
    ck_assert_ptr_nonnull(z);
    ck_assert_ptr_nonnull(z->data);
    ck_assert_uint_eq(memory_used(), 100);
    batch_buf_free(z);
    batch_buf_free(b);
    ck_assert_uint_eq(memory_used(), 0);
}
END_TEST

Suite *memory_suite(void)
{
    TCase *tc;
    Suite *s = tu_suite("memory", memory_setup, NULL, &tc);
    tcase_add_test(tc, test_memory_reserve_release_balance);
    tcase_add_test(tc, test_memory_cap_refuses);
    tcase_add_test(tc, test_memory_headroom_for_open_buffers);
    tcase_add_test(tc, test_memory_threads_exact);
    tcase_add_test(tc, test_memory_threads_never_pass_cap);
    tcase_add_test(tc, test_memory_batch_buf_refused);
    tcase_add_test(tc, test_memory_batch_buf_accounts);
    return s;
}
