/* test_metrics.c: the Prometheus registry's text output, bounds and thread
 * safety, and promtool's verdict on a fully populated scrape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "metrics.h"

static char *render(void) {
    char *text = ww_metrics_render_alloc(NULL);
    assert_non_null(text);
    return text;
}

#define assert_contains(text, needle)                                                  \
    do {                                                                               \
        if (!strstr((text), (needle)))                                                 \
            fail_msg("missing:\n%s\n--- in render:\n%s", (needle), (text));            \
    } while (0)

#define assert_not_contains(text, needle)                                              \
    do {                                                                               \
        if (strstr((text), (needle))) fail_msg("unexpected:\n%s", (needle));           \
    } while (0)

static int setup(void **state) {
    ww_health_reset();
    ww_metrics_reset();
    ww_metrics_init("1.2.3", "2.3.0", "1.24.2");
    return 0;
}

static void test_metrics_every_family_has_help_and_type(void **state) {
    static const char *const families[][2] = {
        {"wallet_worker_messages_consumed_total", "counter"},
        {"wallet_worker_messages_processed_total", "counter"},
        {"wallet_worker_dead_letters_total", "counter"},
        {"wallet_worker_retries_total", "counter"},
        {"wallet_worker_db_operation_duration_seconds", "histogram"},
        {"wallet_worker_consumer_lag", "gauge"},
        {"wallet_worker_db_connection_state", "gauge"},
        {"wallet_worker_db_connected", "gauge"},
        {"wallet_worker_ready", "gauge"},
        {"wallet_worker_kafka_consumer_assigned_partitions", "gauge"},
        {"wallet_worker_build_info", "gauge"},
        {"wallet_worker_up", "gauge"},
        {"process_start_time_seconds", "gauge"},
        {"wallet_worker_uptime_seconds", "gauge"},
        {"wallet_worker_http_requests_total", "counter"},
        {"wallet_worker_metrics_dropped_series_total", "counter"},
    };
    char *text = render();
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char help[160], type[160];
        snprintf(help, sizeof help, "# HELP %s ", families[i][0]);
        snprintf(type, sizeof type, "\n# TYPE %s %s\n", families[i][0], families[i][1]);
        assert_contains(text, help);
        assert_contains(text, type);
    }
    /* Families without series yet: HELP and TYPE, nothing else. */
    assert_contains(text, "# TYPE wallet_worker_messages_consumed_total counter\n"
                          "# HELP wallet_worker_messages_processed_total ");
    assert_contains(text, "\nwallet_worker_up 1\n");
    assert_contains(text, "\nwallet_worker_db_connection_state 0\n");
    assert_contains(text, "\nwallet_worker_db_connected 0\n");
    assert_contains(text, "\nwallet_worker_metrics_dropped_series_total 0\n");
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
}

static void test_metrics_counters_exact_text(void **state) {
    for (int i = 0; i < 3; i++) ww_metrics_inc_consumed("wallet.commands");
    ww_metrics_inc_processed("wallet.commands", "applied");
    ww_metrics_inc_processed("wallet.commands", "applied");
    ww_metrics_inc_processed("wallet.commands", "duplicate");
    ww_metrics_inc_dead_letter("wallet.commands", "invalid_json");
    ww_metrics_inc_retry("mongo.transaction");
    ww_metrics_inc_http(200);
    ww_metrics_inc_http(503);
    ww_metrics_inc_http(200);
    char *text = render();
    assert_contains(text,
                    "# HELP wallet_worker_messages_consumed_total Kafka messages received by the consume loop.\n"
                    "# TYPE wallet_worker_messages_consumed_total counter\n"
                    "wallet_worker_messages_consumed_total{topic=\"wallet.commands\"} 3\n"
                    "# HELP wallet_worker_messages_processed_total Messages handled, by outcome.\n"
                    "# TYPE wallet_worker_messages_processed_total counter\n"
                    "wallet_worker_messages_processed_total{topic=\"wallet.commands\",outcome=\"applied\"} 2\n"
                    "wallet_worker_messages_processed_total{topic=\"wallet.commands\",outcome=\"duplicate\"} 1\n"
                    "# HELP wallet_worker_dead_letters_total ");
    assert_contains(text, "\nwallet_worker_dead_letters_total{topic=\"wallet.commands\",reason=\"invalid_json\"} 1\n");
    assert_contains(text, "\nwallet_worker_retries_total{operation=\"mongo.transaction\"} 1\n");
    assert_contains(text, "\nwallet_worker_http_requests_total{code=\"200\"} 2\n"
                          "wallet_worker_http_requests_total{code=\"503\"} 1\n");
    free(text);

    assert_int_equal(ww_metrics_consumed_count("wallet.commands"), 3);
    assert_int_equal(ww_metrics_processed_count("wallet.commands", "applied"), 2);
    assert_int_equal(ww_metrics_processed_count("wallet.commands", "conflict"), 0);
    assert_int_equal(ww_metrics_dead_letter_count("wallet.commands", "invalid_json"), 1);
    assert_int_equal(ww_metrics_retry_count("mongo.transaction"), 1);
    assert_int_equal(ww_metrics_http_count(200), 2);
    assert_int_equal(ww_metrics_http_count(404), 0);
}

static void test_metrics_histogram_buckets_are_cumulative(void **state) {
    ww_metrics_observe_db("apply", 0.0003);  /* le 0.0005 */
    ww_metrics_observe_db("apply", 0.0005);  /* on the bound: le 0.0005 */
    ww_metrics_observe_db("apply", 0.002);   /* le 0.0025 */
    ww_metrics_observe_db("apply", 0.7);     /* le 1 */
    ww_metrics_observe_db("apply", 20.0);    /* +Inf only */
    ww_metrics_observe_db("apply", -1.0);    /* clamped to 0 */
    char *text = render();
    assert_contains(text,
                    "# TYPE wallet_worker_db_operation_duration_seconds histogram\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.0005\"} 3\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.001\"} 3\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.0025\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.005\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.01\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.025\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.05\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.1\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.25\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"0.5\"} 4\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"1\"} 5\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"2.5\"} 5\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"5\"} 5\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"10\"} 5\n"
                    "wallet_worker_db_operation_duration_seconds_bucket{operation=\"apply\",le=\"+Inf\"} 6\n"
                    "wallet_worker_db_operation_duration_seconds_sum{operation=\"apply\"} 20.7028\n"
                    "wallet_worker_db_operation_duration_seconds_count{operation=\"apply\"} 6\n");
    free(text);
    assert_int_equal(ww_metrics_db_observation_count("apply"), 6);
    assert_int_equal(ww_metrics_db_observation_count("find"), 0);
}

static void test_metrics_label_values_are_escaped(void **state) {
    ww_metrics_inc_processed("a\"b", "x\\y\nz");
    char *text = render();
    assert_contains(text,
                    "\nwallet_worker_messages_processed_total{topic=\"a\\\"b\",outcome=\"x\\\\y\\nz\"} 1\n");
    free(text);
    assert_int_equal(ww_metrics_processed_count("a\"b", "x\\y\nz"), 1);
}

static void test_metrics_invalid_utf8_and_controls_become_question_marks(void **state) {
    ww_metrics_inc_dead_letter("t\xc3\xa9", "bad\xff\x01\xc3(\xed\xa0\x80!");
    char *text = render();
    /* é survives; 0xff, 0x01, a cut 2-byte sequence and a surrogate do not. */
    assert_contains(text, "{topic=\"t\xc3\xa9\",reason=\"bad\?\?\?(\?\?\?!\"} 1\n");
    free(text);
}

static void test_metrics_long_label_values_are_truncated(void **state) {
    char topic[300];
    memset(topic, 'a', sizeof topic - 1);
    topic[sizeof topic - 1] = '\0';
    ww_metrics_inc_consumed(topic);
    char *text = render();
    char expect[200];
    snprintf(expect, sizeof expect, "{topic=\"%.*s\"} 1\n", WW_METRICS_LABEL_MAX - 1, topic);
    assert_contains(text, expect);
    free(text);
}

static void test_metrics_bounded_series_go_to_other(void **state) {
    char topic[32];
    for (int i = 0; i < WW_METRICS_MAX_SERIES + 10; i++) {
        snprintf(topic, sizeof topic, "topic-%d", i);
        ww_metrics_inc_consumed(topic);
    }
    ww_metrics_inc_consumed("topic-0"); /* a known series still counts normally */
    char *text = render();
    assert_contains(text, "\nwallet_worker_messages_consumed_total{topic=\"topic-0\"} 2\n");
    snprintf(topic, sizeof topic, "{topic=\"topic-%d\"} 1\n", WW_METRICS_MAX_SERIES - 1);
    assert_contains(text, topic);
    snprintf(topic, sizeof topic, "{topic=\"topic-%d\"}", WW_METRICS_MAX_SERIES);
    assert_not_contains(text, topic);
    assert_contains(text, "\nwallet_worker_messages_consumed_total{topic=\"other\"} 10\n");
    assert_contains(text, "\nwallet_worker_metrics_dropped_series_total 10\n");
    free(text);
    assert_int_equal(ww_metrics_dropped_series(), 10);
    assert_int_equal(ww_metrics_consumed_count("other"), 10);
}

static void test_metrics_literal_other_label_shares_the_overflow_series(void **state) {
    ww_metrics_inc_retry("other");
    char *text = render();
    assert_contains(text, "\nwallet_worker_retries_total{operation=\"other\"} 1\n");
    assert_contains(text, "\nwallet_worker_metrics_dropped_series_total 0\n");
    free(text);
}

static void test_metrics_lag_set_and_remove(void **state) {
    ww_metrics_set_lag("wallet.commands", 0, 5);
    ww_metrics_set_lag("wallet.commands", 1, 7);
    ww_metrics_set_lag("wallet.commands", 1, 4);
    char *text = render();
    assert_contains(text, "# TYPE wallet_worker_consumer_lag gauge\n"
                          "wallet_worker_consumer_lag{topic=\"wallet.commands\",partition=\"0\"} 5\n"
                          "wallet_worker_consumer_lag{topic=\"wallet.commands\",partition=\"1\"} 4\n");
    free(text);

    ww_metrics_remove_lag("wallet.commands", 0);
    ww_metrics_remove_lag("wallet.commands", 9); /* unknown: no-op */
    int64_t lag = -1;
    assert_false(ww_metrics_lag("wallet.commands", 0, &lag));
    assert_true(ww_metrics_lag("wallet.commands", 1, &lag));
    assert_int_equal(lag, 4);
    text = render();
    assert_not_contains(text, "partition=\"0\"");
    assert_contains(text, "partition=\"1\"} 4\n");
    free(text);

    ww_metrics_set_lag("wallet.commands", 0, 0); /* reassigned */
    text = render();
    assert_contains(text, "{topic=\"wallet.commands\",partition=\"0\"} 0\n");
    free(text);
}

static void test_metrics_state_gauges_follow_health(void **state) {
    ww_health_set_db_state(WW_DB_CONNECTING);
    ww_health_set_consumer(true, 3, 1);
    char *text = render();
    assert_contains(text, "\nwallet_worker_db_connection_state 2\n");
    assert_contains(text, "\nwallet_worker_db_connected 0\n");
    assert_contains(text, "\nwallet_worker_kafka_consumer_assigned_partitions 3\n");
    free(text);
    ww_health_set_db_state(WW_DB_CONNECTED);
    text = render();
    assert_contains(text, "\nwallet_worker_db_connection_state 1\n");
    assert_contains(text, "\nwallet_worker_db_connected 1\n");
    free(text);
}

/* wallet_worker_ready is /readyz's rule: all three conditions, and Kafka's
 * grace period (KAFKA_UNREADY_AFTER_MS) counts as ready. */
static void test_metrics_ready_gauge_follows_readyz_rule(void **state) {
    int64_t now = ww_clock_mono_ms();
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_kafka(WW_KAFKA_UP, now);
    ww_health_set_consumer(true, 2, now);
    char *text = render();
    assert_contains(text, "\nwallet_worker_ready 0\n"); /* start-up not finished */
    free(text);
    ww_health_set_running(true);
    text = render();
    assert_contains(text, "\nwallet_worker_ready 1\n");
    free(text);
    ww_health_set_db_state(WW_DB_DISCONNECTED);
    text = render();
    assert_contains(text, "\nwallet_worker_ready 0\n");
    free(text);
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_kafka_unready_after_ms(60000);
    ww_health_set_kafka(WW_KAFKA_DOWN, now - 30000); /* down 30 s, within 60 s */
    text = render();
    assert_contains(text, "\nwallet_worker_ready 1\n");
    free(text);
    ww_health_set_kafka_unready_after_ms(10000);     /* 30 s > 10 s */
    text = render();
    assert_contains(text, "\nwallet_worker_ready 0\n");
    free(text);
}

static void test_metrics_build_info_is_escaped(void **state) {
    ww_metrics_init("1.2.3", "2.3.0", "1.24\"x");
    char *text = render();
    assert_contains(text, "\nwallet_worker_build_info{version=\"1.2.3\",librdkafka=\"2.3.0\","
                          "libmongoc=\"1.24\\\"x\"} 1\n");
    assert_contains(text, "\nprocess_start_time_seconds 1");
    assert_contains(text, "\nwallet_worker_uptime_seconds ");
    free(text);
}

static void test_metrics_render_truncates_like_snprintf(void **state) {
    ww_metrics_inc_consumed("wallet.commands");
    /* uptime_seconds moves between calls, so lengths may differ by a few
     * bytes from one render to the next: allow that, nothing more */
    size_t need = ww_metrics_render(NULL, 0);
    assert_true(need > 1000);
    char small[32];
    size_t need_small = ww_metrics_render(small, sizeof small);
    assert_true(need_small + 16 >= need && need_small <= need + 16);
    assert_int_equal(strlen(small), sizeof small - 1);
    char *full = malloc(need + 64);
    assert_non_null(full);
    size_t got = ww_metrics_render(full, need + 64);
    assert_true(got + 16 >= need && got <= need + 16);
    assert_int_equal(strlen(full), got); /* fitted: the whole text, NUL-terminated */
    assert_memory_equal(small, full, sizeof small - 1);
    free(full);
}

/* Writers on several threads, a reader rendering meanwhile: nothing lost. */
enum { WRITERS = 4, PER_WRITER = 50000 };
static atomic_int writers_done;

static void *writer(void *arg) {
    int id = (int)(intptr_t)arg;
    char topic[16];
    snprintf(topic, sizeof topic, "t%d", id % 2);
    for (int i = 0; i < PER_WRITER; i++) {
        ww_metrics_inc_processed(topic, "applied");
        ww_metrics_inc_consumed("shared");
        ww_metrics_observe_db("apply", 0.001);
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void test_metrics_concurrent_updates_are_exact(void **state) {
    pthread_t threads[WRITERS];
    atomic_store(&writers_done, 0);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, writer, (void *)(intptr_t)i), 0);
    while (atomic_load(&writers_done) < WRITERS) free(render());
    for (int i = 0; i < WRITERS; i++) pthread_join(threads[i], NULL);
    assert_int_equal(ww_metrics_consumed_count("shared"), WRITERS * PER_WRITER);
    assert_int_equal(ww_metrics_processed_count("t0", "applied"), WRITERS / 2 * PER_WRITER);
    assert_int_equal(ww_metrics_processed_count("t1", "applied"), WRITERS / 2 * PER_WRITER);
    assert_int_equal(ww_metrics_db_observation_count("apply"), WRITERS * PER_WRITER);
    assert_int_equal(ww_metrics_dropped_series(), 0);
}

/* The real parser's verdict, lint included. promtool is a build dependency:
 * without it this test fails rather than skips. */
static void test_metrics_promtool_accepts_render(void **state) {
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        fail_msg("promtool not found in PATH: install it (Debian: prometheus package, "
                 "/usr/bin/promtool); this test must not be skipped");
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_consumer(true, 2, 1);
    ww_metrics_init("1.2.3", "2.3.0", "1.24\"x\\y");
    char topic[32];
    for (int i = 0; i < WW_METRICS_MAX_SERIES + 2; i++) {
        snprintf(topic, sizeof topic, "topic-%d", i);
        ww_metrics_inc_consumed(topic);
    }
    ww_metrics_inc_processed("wallet.commands", "applied");
    ww_metrics_inc_processed("wa\"llet\n", "insufficient_funds");
    ww_metrics_inc_dead_letter("wallet.commands", "invalid\xff");
    ww_metrics_inc_retry("mongo.transaction");
    ww_metrics_observe_db("apply", 0.003);
    ww_metrics_observe_db("find", 12.5);
    ww_metrics_set_lag("wallet.commands", 0, 12);
    ww_metrics_set_lag("wallet.commands", 1, -1);
    ww_metrics_inc_http(200);

    char path[] = "/tmp/ww-test-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *text = render();
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);

    char cmd[128], out[4096] = "";
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("promtool check metrics failed (status %d):\n%s\n--- input:\n%s", status, out, text);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_metrics_every_family_has_help_and_type, setup),
        cmocka_unit_test_setup(test_metrics_counters_exact_text, setup),
        cmocka_unit_test_setup(test_metrics_histogram_buckets_are_cumulative, setup),
        cmocka_unit_test_setup(test_metrics_label_values_are_escaped, setup),
        cmocka_unit_test_setup(test_metrics_invalid_utf8_and_controls_become_question_marks, setup),
        cmocka_unit_test_setup(test_metrics_long_label_values_are_truncated, setup),
        cmocka_unit_test_setup(test_metrics_bounded_series_go_to_other, setup),
        cmocka_unit_test_setup(test_metrics_literal_other_label_shares_the_overflow_series, setup),
        cmocka_unit_test_setup(test_metrics_lag_set_and_remove, setup),
        cmocka_unit_test_setup(test_metrics_state_gauges_follow_health, setup),
        cmocka_unit_test_setup(test_metrics_ready_gauge_follows_readyz_rule, setup),
        cmocka_unit_test_setup(test_metrics_build_info_is_escaped, setup),
        cmocka_unit_test_setup(test_metrics_render_truncates_like_snprintf, setup),
        cmocka_unit_test_setup(test_metrics_concurrent_updates_are_exact, setup),
        cmocka_unit_test_setup(test_metrics_promtool_accepts_render, setup),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
