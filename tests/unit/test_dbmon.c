/* test_dbmon.c: the database connection's log contract (dbmon.h): one
 * "disconnected" and one "reconnected" line per outage, whatever order
 * libmongoc's monitor and failing application operations report the
 * transitions in. Sequences are the ones seen on the test servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "dbmon.h"

/* One event of a sequence: 'W' writable, 'U' unwritable, '+' heartbeat ok,
 * '-' heartbeat failed; at a time in ms. */
typedef struct {
    char ev;
    int64_t at;
} step_t;

typedef struct {
    int connected, disconnected, reconnected, error;
    int order_ok; /* reconnected never without a disconnected before it */
} counts_t;

static counts_t run(const step_t *steps, size_t n) {
    ww_dbmon_t m;
    ww_dbmon_init(&m, 3000);
    counts_t c = {0, 0, 0, 0, 1};
    int open = 0;
    for (size_t i = 0; i < n; i++) {
        ww_dbmon_line_t l = WW_DBMON_NONE;
        switch (steps[i].ev) {
        case 'W': l = ww_dbmon_topology(&m, true, steps[i].at); break;
        case 'U': l = ww_dbmon_topology(&m, false, steps[i].at); break;
        case '+': l = ww_dbmon_heartbeat(&m, true, steps[i].at); break;
        case '-': l = ww_dbmon_heartbeat(&m, false, steps[i].at); break;
        default: fail_msg("bad step %c", steps[i].ev);
        }
        switch (l) {
        case WW_DBMON_CONNECTED: c.connected++; break;
        case WW_DBMON_DISCONNECTED:
            c.disconnected++;
            if (open) c.order_ok = 0;
            open = 1;
            break;
        case WW_DBMON_RECONNECTED:
            c.reconnected++;
            if (!open) c.order_ok = 0;
            open = 0;
            break;
        case WW_DBMON_ERROR: c.error++; break;
        default: break;
        }
    }
    return c;
}

#define RUN(a) run(a, sizeof a / sizeof a[0])

static void test_dbmon_start_then_plain_outage(void **state) {
    (void)state;
    const step_t s[] = {{'-', 0},     {'-', 500},   {'+', 1000},  {'W', 1000},
                        {'+', 6000},  {'-', 11000}, {'U', 11000}, {'-', 16000},
                        {'+', 21000}, {'W', 21000}, {'+', 26000}, {'+', 31000}};
    counts_t c = RUN(s);
    assert_int_equal(c.connected, 1);
    assert_int_equal(c.disconnected, 1);
    assert_int_equal(c.reconnected, 1);
    assert_int_equal(c.error, 2); /* one while connecting, one for the outage */
    assert_true(c.order_ok);
}

/* mongo-java-server stopping: an operation fails first (Unknown), the
 * monitor still reaches the closing server (writable again), then its
 * heartbeats fail; after the restart operations on old connections fail
 * once more before the pool is cleared. Two "disconnected" lines before. */
static void test_dbmon_flaps_inside_one_outage_log_once(void **state) {
    (void)state;
    const step_t s[] = {{'+', 0},      {'W', 0},      {'+', 5000},  /* up */
                        {'U', 9000},   {'+', 9500},   {'W', 9500},  /* op failed, monitor ok */
                        {'-', 10000},  {'U', 10000},  {'-', 15000}, /* really down */
                        {'+', 20000},  {'W', 20000},                /* restarted */
                        {'U', 20100},  {'+', 20600},  {'W', 20600}, /* stale connection */
                        {'+', 25600},  {'+', 30600}};
    counts_t c = RUN(s);
    assert_int_equal(c.connected, 1);
    assert_int_equal(c.disconnected, 1);
    assert_int_equal(c.reconnected, 1);
    assert_int_equal(c.error, 1);
    assert_true(c.order_ok);
}

/* A failing operation on a healthy server (one stale connection): a short
 * outage, still exactly one pair. */
static void test_dbmon_brief_blip_is_one_pair(void **state) {
    (void)state;
    const step_t s[] = {{'+', 0}, {'W', 0}, {'U', 4000}, {'+', 4500}, {'W', 4500},
                        {'+', 9500}, {'+', 14500}};
    counts_t c = RUN(s);
    assert_int_equal(c.disconnected, 1);
    assert_int_equal(c.reconnected, 1);
    assert_int_equal(c.error, 0);
    assert_true(c.order_ok);
}

/* Two real outages, well apart: two pairs. Never "reconnected" alone. */
static void test_dbmon_two_outages_two_pairs(void **state) {
    (void)state;
    const step_t s[] = {{'+', 0},     {'W', 0},     {'-', 5000},  {'U', 5000},
                        {'+', 10000}, {'W', 10000}, {'+', 15000}, {'-', 60000},
                        {'U', 60000}, {'+', 70000}, {'W', 70000}, {'+', 75000}};
    counts_t c = RUN(s);
    assert_int_equal(c.connected, 1);
    assert_int_equal(c.disconnected, 2);
    assert_int_equal(c.reconnected, 2);
    assert_int_equal(c.error, 2);
    assert_true(c.order_ok);
}

/* Never connected: no disconnected / reconnected line at all, one error. */
static void test_dbmon_never_connected_logs_one_error(void **state) {
    (void)state;
    const step_t s[] = {{'-', 0}, {'-', 5000}, {'-', 10000}, {'U', 10000}};
    counts_t c = RUN(s);
    assert_int_equal(c.connected + c.disconnected + c.reconnected, 0);
    assert_int_equal(c.error, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dbmon_start_then_plain_outage),
        cmocka_unit_test(test_dbmon_flaps_inside_one_outage_log_once),
        cmocka_unit_test(test_dbmon_brief_blip_is_one_pair),
        cmocka_unit_test(test_dbmon_two_outages_two_pairs),
        cmocka_unit_test(test_dbmon_never_connected_logs_one_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
