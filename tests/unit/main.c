/* tests/unit/main.c: the one Check runner for every module's suite.
 * Forks each test (CK_FORK default) so a crash fails one test, not the run. */
#include <check.h>
#include <stdlib.h>

#include "testutil.h" /* declares every suite of suites.def */

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define BF_SUITE(name) srunner_add_suite(sr, name##_suite());
#include "suites.def"
#undef BF_SUITE
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
