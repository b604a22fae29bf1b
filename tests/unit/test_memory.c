/*
 * test_memory.c: daemon/memory.c, the memory account: reserve and release
 * balance, the cap is only asked (never enforced by reserve), and the
 * account stays exact when threads reserve and release at once (spool reads
 * and compression run on workers).
 */
#include <check.h>
#include <pthread.h>

#include "memory.h"
#include "testutil.h"

static void memory_setup(void)
{
    memory_set_cap(0);
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

START_TEST(test_memory_cap_is_asked_not_enforced)
{
    ck_assert_uint_eq(memory_cap(), 0);
    memory_reserve(1 << 20);
    ck_assert_int_eq(memory_over_cap(), 0); /* no cap: never over */
    memory_set_cap(4096);
    ck_assert_uint_eq(memory_cap(), 4096);
    ck_assert_int_eq(memory_over_cap(), 1);
    memory_release(1 << 20);
    memory_reserve(4096);
    ck_assert_int_eq(memory_over_cap(), 0); /* at the cap is not past it */
    memory_reserve(1);
    ck_assert_int_eq(memory_over_cap(), 1);
    ck_assert_uint_eq(memory_used(), 4097); /* reserve never refuses */
    memory_release(4097);
}
END_TEST

enum { THREAD_ROUNDS = 200000 };

static void *churn(void *arg)
{
    uint64_t n = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < THREAD_ROUNDS; i++) {
        memory_reserve(n);
        memory_release(n);
        memory_reserve(1);
    }
    return NULL;
}

START_TEST(test_memory_threads_exact)
{
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, (void *)(i * 4096 + 7)), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* A lost update would leave something other than one byte a round. */
    ck_assert_uint_eq(memory_used(), 4 * THREAD_ROUNDS);
    memory_release(4 * THREAD_ROUNDS);
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
    tcase_add_test(tc, test_memory_cap_is_asked_not_enforced);
    tcase_add_test(tc, test_memory_threads_exact);
    tcase_add_test(tc, test_memory_batch_buf_accounts);
    return s;
}
