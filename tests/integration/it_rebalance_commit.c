/* it_rebalance_commit.c: when a second worker joins and partitions move,
 * the first worker commits what it finished on them before it lets them go:
 * read from outside right after the revoke, the group's committed offsets of
 * the revoked partitions are the processed prefix. The periodic commit is
 * set to ten minutes, so only a commit on revoke can explain them.
 *
 * Note: librdkafka (2.0.2, enable.auto.commit=true) also commits the stored
 * offsets of unassigned partitions itself, asynchronously, right after the
 * revoke callback, and waits for that commit before rejoining. That is why
 * the offsets check alone also passed with the old no-op commit; the log
 * line pins the worker's own synchronous commit with the exact offsets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"

#define N_MSGS 40
#define N_PARTS 4 /* the harness creates the commands topic with 4 */

static void test_revoked_partitions_are_committed_before_handover(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "revoke");
    char log_a[256], log_b[256], group[160];
    snprintf(log_a, sizeof log_a, "/tmp/ww-it-%s-a.log", env.run_id);
    snprintf(log_b, sizeof log_b, "/tmp/ww-it-%s-b.log", env.run_id);
    snprintf(group, sizeof group, "it-%s", env.run_id); /* the harness's group for this run */
    unlink(log_a);
    unlink(log_b);
    const char *slow_commit[] = {"KAFKA_COMMIT_INTERVAL_MS=600000", NULL};
    pid_t a = h_worker_start(&env, log_a, slow_commit);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 60000));

    for (int i = 0; i < N_MSGS; i++) {
        char owner[32], v[512];
        snprintf(owner, sizeof owner, "%024x", 0xabc000 + i);
        snprintf(v, sizeof v, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-%d\","
                 "\"ownerUserId\":\"%s\",\"amountPaise\":5}", env.run_id, i, owner);
        h_produce(&env, env.commands_topic, owner, v);
    }
    h_flush(&env);
    assert_int_equal(h_read_topic(&env, env.results_topic, N_MSGS, 60000, NULL, NULL), N_MSGS);

    /* a client of the group that never joins it: reads committed offsets */
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = env.brokers;
    bc.group_id = group;
    bc.client_id = "it-offset-reader";
    bc.producer = false;
    ww_error_t err;
    ww_bus_t *reader = ww_bus_new(&bc, NULL, &err);
    assert_non_null(reader);
    int64_t high[N_PARTS], committed[N_PARTS];
    for (int32_t p = 0; p < N_PARTS; p++) {
        int64_t low;
        assert_true(ww_bus_watermarks(reader, env.commands_topic, p, &low, &high[p], 10000, &err));
    }
    /* all processed, nothing committed yet: the periodic commit is not due */
    assert_true(ww_bus_committed(reader, env.commands_topic, N_PARTS, committed, 10000, &err));
    for (int32_t p = 0; p < N_PARTS; p++) assert_int_equal(committed[p], -1);

    /* B joins: partitions move from A to B */
    const char *b_env[] = {"KAFKA_COMMIT_INTERVAL_MS=600000", "HTTP_ADDR=127.0.0.1:0", NULL};
    pid_t b = h_worker_start(&env, log_b, b_env);
    char needle[300];
    snprintf(needle, sizeof needle, "revoked topic=%s ", env.commands_topic);
    int64_t deadline = h_now_ms() + 60000;
    while (h_count_in_file(log_a, needle) == 0 && h_now_ms() < deadline) h_sleep_ms(10);
    assert_true(h_count_in_file(log_a, needle) > 0);

    /* right after A logged the revoke */
    assert_true(ww_bus_committed(reader, env.commands_topic, N_PARTS, committed, 10000, &err));
    int revoked = 0;
    for (int32_t p = 0; p < N_PARTS; p++) {
        snprintf(needle, sizeof needle, "revoked topic=%s partition=%d", env.commands_topic, p);
        if (h_count_in_file(log_a, needle) == 0) continue;
        revoked++;
        print_message("partition %d: committed %lld, processed up to %lld\n", p,
                      (long long)committed[p], (long long)high[p]);
        assert_int_equal(committed[p], high[p]);
        /* by the worker itself, synchronously, not by librdkafka's commit of
         * unassigned partitions (which comes after the revoke) */
        snprintf(needle, sizeof needle, "msg=\"committed on revoke\" topic=%s partition=%d offset=%lld",
                 env.commands_topic, p, (long long)high[p]);
        assert_int_equal(h_count_in_file(log_a, needle), 1);
    }
    assert_true(revoked > 0);

    assert_int_equal(h_worker_stop(b, SIGTERM, 20000), 0);
    assert_int_equal(h_worker_stop(a, SIGTERM, 20000), 0);
    ww_bus_destroy(reader, 0);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_revoked_partitions_are_committed_before_handover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
