/* it_health.c: the running worker's sidecar: /metrics passes promtool,
 * hostile requests get the right status, and the worker keeps working.
 * (Health turning 503 while the database is down and back to 200 after, with
 * one disconnected and one reconnected log line, is asserted by
 * it_wallet_faults' database-outage test.) With the broker stopped, /readyz
 * turns 503 once KAFKA_UNREADY_AFTER_MS has passed, /api/health says Kafka is
 * down and stays 200 (MongoDB is fine), and both recover with the broker.
 * Every metric the alert rules and the Grafana dashboard (deploy/) use is one
 * the running worker exports. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static int raw_request(int port, const char *req, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    size_t len = strlen(req), off = 0;
    while (off < len) {
        ssize_t w = write(fd, req + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, out + n, cap - 1 - n)) > 0) n += (size_t)r;
    out[n] = '\0';
    close(fd);
    return strncmp(out, "HTTP/1.", 7) == 0 ? atoi(out + 9) : 0;
}

static void test_health_sidecar_of_the_running_worker(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "health");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));

    /* /metrics is valid Prometheus text */
    char *body = malloc(1 << 20);
    assert_int_equal(h_http_get(env.http_port, "/metrics", body, 1 << 20), 200);
    assert_non_null(strstr(body, "wallet_worker_build_info{"));
    assert_non_null(strstr(body, "wallet_worker_db_connected 1"));
    assert_non_null(strstr(body, "wallet_worker_db_operation_duration_seconds_bucket"));
    char path[128];
    snprintf(path, sizeof path, "/tmp/ww-it-%s.metrics", env.run_id);
    FILE *f = fopen(path, "w");
    fputs(body, f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);

    /* methods, paths, sizes */
    char out[8192];
    assert_int_equal(raw_request(env.http_port,
                                 "POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 "Connection: close\r\n\r\n", out, sizeof out), 405);
    assert_non_null(strstr(out, "Allow: GET, HEAD"));
    assert_int_equal(raw_request(env.http_port,
                                 "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 out, sizeof out), 405);
    assert_int_equal(raw_request(env.http_port,
                                 "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 out, sizeof out), 404);
    size_t big = 64 * 1024;
    char *req = malloc(big + 128);
    strcpy(req, "GET /api/health?");
    memset(req + strlen(req), 'a', big);
    strcpy(req + 16 + big, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    int s = raw_request(env.http_port, req, out, sizeof out);
    print_message("64 KiB URL -> %d\n", s);
    assert_true(s == 414 || s == 431 || s == 0);
    free(req);

    /* a flood of idle connections, beyond the limit */
    int fds[200];
    for (int i = 0; i < 200; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env.http_port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(fds[i], (struct sockaddr *)&a, sizeof a);
    }
    for (int i = 0; i < 200; i++) close(fds[i]);
    assert_true(h_wait_http(env.http_port, "/api/health", 200, 15000));
    assert_true(h_worker_alive(pid));

    /* and the worker still does its job */
    char v[512];
    snprintf(v, sizeof v, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-after\","
             "\"ownerUserId\":\"0123456789abcdef01234567\",\"amountPaise\":5}", env.run_id);
    h_produce(&env, env.commands_topic, "0123456789abcdef01234567", v);
    h_flush(&env);
    assert_int_equal(h_read_topic(&env, env.results_topic, 1, 30000, NULL, NULL), 1);
    /* the outcome was counted */
    assert_int_equal(h_http_get(env.http_port, "/metrics", body, 1 << 20), 200);
    assert_non_null(strstr(body, "outcome=\"wallet_not_found\"} 1"));
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    free(body);
    unlink(path);
    h_env_destroy(&env);
}

/* deploy/prometheus and deploy/grafana name only metrics a live worker exports
 * (tests/deploy/check_metric_names.py; a histogram's _bucket/_sum/_count count
 * as the histogram), and every expression parses (promtool). */
static void test_health_rules_and_dashboard_use_exported_metrics(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "health-names");
    char log[256], path[128], cmd[1024];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    snprintf(path, sizeof path, "/tmp/ww-it-%s.metrics", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    char *body = malloc(1 << 20);
    assert_int_equal(h_http_get(env.http_port, "/metrics", body, 1 << 20), 200);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    free(body);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    snprintf(cmd, sizeof cmd,
             "python3 %s/tests/deploy/check_metric_names.py %s/deploy/prometheus/wallet-worker-rules.yml "
             "%s/deploy/grafana/wallet-worker.json %s",
             WW_SOURCE_DIR, WW_SOURCE_DIR, WW_SOURCE_DIR, path);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    unlink(path);
    h_env_destroy(&env);
}

static bool kafka_status_is(int port, const char *status, char *body, size_t cap) {
    char want[64];
    snprintf(want, sizeof want, "\"kafka\":{\"status\":\"%s\"", status);
    return h_http_get(port, "/api/health", body, cap) == 200 && strstr(body, want) != NULL;
}

static void test_health_kafka_outage_turns_unready_after_threshold(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "health-kafka");
    char log[256], body[2048];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    const char *extra[] = {"KAFKA_UNREADY_AFTER_MS=3000", NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 60000));
    assert_true(kafka_status_is(env.http_port, "up", body, sizeof body));
    assert_non_null(strstr(body, "\"inGroup\":true"));

    int64_t stopped_at = h_now_ms();
    assert_int_equal(h_stack(&env, "kafka-stop"), 0);
    /* reported at once (within librdkafka's statistics interval) ... */
    int64_t deadline = h_now_ms() + 15000;
    bool down = false;
    while (!(down = kafka_status_is(env.http_port, "down", body, sizeof body)) &&
           h_now_ms() < deadline)
        h_sleep_ms(100);
    /* ... unready only past the threshold, and within it plus a margin */
    bool unready = h_wait_http(env.http_port, "/readyz", 503, 3000 + 15000);
    int64_t unready_after = h_now_ms() - stopped_at;
    int health_during = h_http_get(env.http_port, "/api/health", body, sizeof body);
    bool ok_during = strstr(body, "\"status\":\"ok\"") != NULL;

    /* the broker comes back before anything is asserted: the next test needs it */
    assert_int_equal(h_stack(&env, "kafka-start"), 0);
    assert_true(down);
    assert_true(unready);
    print_message("unready %lld ms after the broker stopped\n", (long long)unready_after);
    assert_true(unready_after >= 3000);
    assert_int_equal(health_during, 200); /* MongoDB is fine: the database contract holds */
    assert_true(ok_during);

    assert_true(h_wait_http(env.http_port, "/readyz", 200, 120000));
    assert_true(kafka_status_is(env.http_port, "up", body, sizeof body));
    assert_true(h_worker_alive(pid));
    assert_int_equal(h_worker_stop(pid, SIGTERM, 30000), 0);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_sidecar_of_the_running_worker),
        cmocka_unit_test(test_health_kafka_outage_turns_unready_after_threshold),
        cmocka_unit_test(test_health_rules_and_dashboard_use_exported_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
