/* it_pipeline.c: the pipeline's promises that no handler can break, on the
 * real stack:
 *   - a message whose dead letter is too large to publish (the broker takes a
 *     value of ~1 MiB, the worker refuses it as too_large, the producer would
 *     refuse the copy) is dead-lettered truncated, with its original size and
 *     sha256, and does not stall its partition: what follows it is processed
 *     and committed;
 *   - stuck work is visible: during a database outage the uncommitted gauge
 *     and the oldest-uncommitted age grow, and return to 0 after it; the
 *     shutdown line says how many messages were left uncommitted. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "sha256.h"

#define BIG 1040000 /* under the broker's 1 MiB default, over the producer's 1,000,000 */

/* The value of `name{topic="<topic>"}` in a /metrics scrape; -1 if absent. */
static int64_t metric(int port, const char *name, const char *topic) {
    size_t cap = 1u << 20;
    char *body = malloc(cap);
    assert_non_null(body);
    int64_t v = -1;
    if (h_http_get(port, "/metrics", body, cap) == 200) {
        char needle[512];
        snprintf(needle, sizeof needle, "\n%s{topic=\"%s\"} ", name, topic);
        const char *p = strstr(body, needle);
        if (p) v = strtoll(p + strlen(needle), NULL, 10);
    }
    free(body);
    return v;
}

/* Polls until metric(...) satisfies cmp against want, or timeout. */
static bool wait_metric(int port, const char *name, const char *topic, char cmp, int64_t want,
                        int timeout_ms) {
    int64_t deadline = h_now_ms() + timeout_ms;
    do {
        int64_t v = metric(port, name, topic);
        if ((cmp == '=' && v == want) || (cmp == '>' && v >= want)) return true;
        h_sleep_ms(200);
    } while (h_now_ms() < deadline);
    print_message("%s{topic=%s} = %lld, wanted %c %lld\n", name, topic,
                  (long long)metric(port, name, topic), cmp, (long long)want);
    return false;
}

typedef struct {
    int n;
    char code[32];
    char truncated[8];
    char size[32];
    char sha[80];
    size_t value_len;
} big_dlq_t;

static void header_str(const ww_msg_t *m, const char *name, char *out, size_t cap) {
    const void *v;
    size_t len;
    out[0] = '\0';
    if (ww_msg_header(m, name, &v, &len)) snprintf(out, cap, "%.*s", (int)len, (const char *)v);
}

static void collect_big(const ww_msg_t *m, void *ctx) {
    big_dlq_t *d = ctx;
    d->n++;
    char code[32];
    header_str(m, "ww.error.code", code, sizeof code);
    if (strcmp(code, "too_large") != 0) return;
    snprintf(d->code, sizeof d->code, "%s", code);
    header_str(m, "ww.truncated", d->truncated, sizeof d->truncated);
    header_str(m, "ww.original.size", d->size, sizeof d->size);
    header_str(m, "ww.original.sha256", d->sha, sizeof d->sha);
    d->value_len = m->value_len;
}

static void test_pipeline_oversized_dead_letter_does_not_stall_partition(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "bigdlq");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));

    /* incompressible printable bytes: a real upstream payload, not lz4 food */
    char *big = malloc(BIG + 1);
    assert_non_null(big);
    uint32_t s = 12345;
    for (size_t i = 0; i < BIG; i++) {
        s = s * 1664525u + 1013904223u;
        big[i] = (char)('a' + (s >> 24) % 26);
    }
    big[BIG] = '\0';
    char hex[WW_SHA256_HEX_LEN];
    ww_sha256_hex(big, BIG, hex);
    /* same key: same partition, the big one first */
    h_produce(&env, env.commands_topic, "same-key", big);
    h_produce(&env, env.commands_topic, "same-key", "not json at all");
    h_produce(&env, env.commands_topic, NULL, "no key: counted, warned about");
    h_flush(&env);
    free(big);

    big_dlq_t *d = calloc(1, sizeof *d);
    /* both dead-lettered; the big one first (one DLQ partition, in order) */
    assert_int_equal(h_read_topic(&env, env.dlq_topic, 3, 60000, collect_big, d), 3);
    assert_int_equal(d->n, 3);
    assert_string_equal(d->code, "too_large");
    assert_string_equal(d->truncated, "true");
    assert_int_equal(strtoll(d->size, NULL, 10), BIG);
    assert_string_equal(d->sha, hex);
    assert_true(d->value_len > 0 && d->value_len < BIG);
    free(d);

    /* nothing left behind: the partition's done prefix passed both */
    assert_true(wait_metric(env.http_port, "wallet_worker_uncommitted_messages",
                            env.commands_topic, '=', 0, 30000));
    assert_int_equal(metric(env.http_port, "wallet_worker_messages_consumed_total",
                            env.commands_topic), 3);
    assert_int_equal(metric(env.http_port, "wallet_worker_unkeyed_messages_total",
                            env.commands_topic), 1);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 20000), 0);
    assert_true(h_count_in_file(log, "left_uncommitted=0") == 1);
    h_env_destroy(&env);
}

static void test_pipeline_stuck_work_is_visible(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "stuck");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    assert_true(wait_metric(env.http_port, "wallet_worker_uncommitted_messages",
                            env.commands_topic, '=', 0, 30000));

    assert_int_equal(h_stack(&env, "mongo-stop"), 0);
    for (int i = 0; i < 5; i++) {
        char key[64], value[300];
        snprintf(key, sizeof key, "%s-s%d", env.run_id, i);
        snprintf(value, sizeof value,
                 "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s\",\"ownerUserId\":"
                 "\"%024d\",\"amountPaise\":100}", key, i + 1);
        h_produce(&env, env.commands_topic, key, value);
    }
    h_flush(&env);
    /* the lag reads 0 (fetched), but the work is visibly stuck */
    assert_true(wait_metric(env.http_port, "wallet_worker_uncommitted_messages",
                            env.commands_topic, '>', 5, 30000));
    assert_true(wait_metric(env.http_port, "wallet_worker_oldest_uncommitted_age_seconds",
                            env.commands_topic, '>', 3, 30000));
    assert_int_equal(h_stack(&env, "mongo-start"), 0);
    assert_true(wait_metric(env.http_port, "wallet_worker_uncommitted_messages",
                            env.commands_topic, '=', 0, 90000));
    assert_true(wait_metric(env.http_port, "wallet_worker_oldest_uncommitted_age_seconds",
                            env.commands_topic, '=', 0, 10000));
    assert_int_equal(h_worker_stop(pid, SIGTERM, 20000), 0);
    assert_int_equal(h_count_in_file(log, "left_uncommitted=0"), 1);
    h_env_destroy(&env);
}

/* Both outputs of one message (result and dead letter) fail with a retryable
 * error (their topics are missing) before the poll loop's next turn: the
 * entry went on the redo list twice, pointed at itself, and the poll loop
 * spun forever. Now it is produced again until the topics exist, then
 * finishes and commits. */
static void test_pipeline_both_outputs_failing_are_retried_not_cycled(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "redo");
    char log[256], res[160], dlq[160], e_res[200], e_dlq[200];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    snprintf(res, sizeof res, "it.%s.late-results", env.run_id);
    snprintf(dlq, sizeof dlq, "it.%s.late-dlq", env.run_id);
    snprintf(e_res, sizeof e_res, "WALLET_RESULTS_TOPIC=%s", res);
    snprintf(e_dlq, sizeof e_dlq, "WALLET_DLQ_TOPIC=%s", dlq);
    unlink(log);
    const char *extra[] = {e_res, e_dlq, NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    h_produce(&env, env.commands_topic, "redo-key", "not json: a result and a dead letter");
    h_flush(&env);
    /* both deliveries fail (unknown topic, after librdkafka's metadata wait) */
    int64_t deadline = h_now_ms() + 120000;
    while (h_count_in_file(log, "delivery failed") < 2 && h_now_ms() < deadline) h_sleep_ms(200);
    assert_true(h_count_in_file(log, "delivery failed") >= 2);
    ww_error_t err;
    assert_true(ww_bus_create_topic(env.producer, res, 1, 15000, &err));
    assert_true(ww_bus_create_topic(env.producer, dlq, 1, 15000, &err));
    /* produced again, delivered, finished, committed; the loop kept turning */
    assert_true(wait_metric(env.http_port, "wallet_worker_uncommitted_messages",
                            env.commands_topic, '=', 0, 120000));
    assert_int_equal(h_read_topic(&env, dlq, 1, 30000, NULL, NULL), 1);
    assert_int_equal(h_read_topic(&env, res, 1, 30000, NULL, NULL), 1);
    assert_int_equal(h_http_get(env.http_port, "/livez", NULL, 0), 200);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 20000), 0);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_oversized_dead_letter_does_not_stall_partition),
        cmocka_unit_test(test_pipeline_stuck_work_is_visible),
        cmocka_unit_test(test_pipeline_both_outputs_failing_are_retried_not_cycled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
