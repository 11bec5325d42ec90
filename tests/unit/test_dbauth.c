/* test_dbauth.c: the decision behind MongoDB authentication failures
 * (dbauth.h): an error line at the first failure and at least once a minute
 * while failing, exit only after DB_AUTH_FAIL_EXIT_S of failures with no
 * success in between, and never when it is 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "dbauth.h"

/* Failures every `step` ms from t=0 to `until`: the times of the log lines
 * and of the first exit decision (-1: none). */
typedef struct {
    int64_t logs[64];
    size_t n_logs;
    int64_t exit_at;
} trace_t;

static trace_t fail_every(ww_dbauth_t *a, int64_t from, int64_t step, int64_t until) {
    trace_t t = {.exit_at = -1};
    for (int64_t now = from; now <= until; now += step) {
        unsigned act = ww_dbauth_failure(a, now);
        if ((act & WW_DBAUTH_LOG) && t.n_logs < 64) t.logs[t.n_logs++] = now;
        if ((act & WW_DBAUTH_EXIT) && t.exit_at < 0) t.exit_at = now;
    }
    return t;
}

static void test_dbauth_logs_first_failure_then_at_least_once_a_minute(void **state) {
    (void)state;
    ww_dbauth_t a;
    ww_dbauth_init(&a, 0, 0); /* default period */
    trace_t t = fail_every(&a, 1000, 1000, 1000 + 10 * 60000);
    assert_true(t.n_logs >= 10);
    assert_int_equal(t.logs[0], 1000);
    for (size_t i = 1; i < t.n_logs; i++) {
        assert_true(t.logs[i] - t.logs[i - 1] <= 60000);
        assert_true(t.logs[i] - t.logs[i - 1] >= WW_DBAUTH_LOG_EVERY_MS); /* no storm */
    }
    assert_int_equal(t.exit_at, -1); /* DB_AUTH_FAIL_EXIT_S=0: never */
    assert_int_equal(a.failures, 601);
}

static void test_dbauth_exits_after_the_configured_time(void **state) {
    (void)state;
    ww_dbauth_t a;
    ww_dbauth_init(&a, 5000, 60000);
    trace_t t = fail_every(&a, 100, 700, 20000);
    /* failures at 100, 800, ..., 4300, 5000, 5700: the first at or past 5100 */
    assert_int_equal(t.exit_at, 5700);
    /* the exit decision comes with a line saying why */
    assert_int_equal(t.logs[t.n_logs - 1] >= 5700, 1);
}

static void test_dbauth_success_restarts_the_clock(void **state) {
    (void)state;
    ww_dbauth_t a;
    ww_dbauth_init(&a, 5000, 60000);
    assert_false(ww_dbauth_success(&a)); /* nothing to end */
    trace_t t = fail_every(&a, 0, 1000, 4000);
    assert_int_equal(t.exit_at, -1);
    assert_true(ww_dbauth_success(&a)); /* ends the episode: "authenticated" line */
    assert_false(a.failing);
    /* a new episode starts its own clock and its own first line */
    t = fail_every(&a, 4500, 1000, 9400);
    assert_int_equal(t.exit_at, -1);
    assert_int_equal(t.logs[0], 4500);
    t = fail_every(&a, 9500, 1000, 9500);
    assert_int_equal(t.exit_at, 9500);
}

static void test_dbauth_single_failure_exit_threshold_zero_elapsed(void **state) {
    (void)state;
    ww_dbauth_t a;
    ww_dbauth_init(&a, 1000, 60000);
    assert_int_equal(ww_dbauth_failure(&a, 50), WW_DBAUTH_LOG);
    assert_int_equal(ww_dbauth_failure(&a, 999), 0);
    assert_int_equal(ww_dbauth_failure(&a, 1050), WW_DBAUTH_LOG | WW_DBAUTH_EXIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dbauth_logs_first_failure_then_at_least_once_a_minute),
        cmocka_unit_test(test_dbauth_exits_after_the_configured_time),
        cmocka_unit_test(test_dbauth_success_restarts_the_clock),
        cmocka_unit_test(test_dbauth_single_failure_exit_threshold_zero_elapsed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
