/* it_lifecycle.c: the worker starts against the real stack, connects, serves
 * health, and stops cleanly; bad configuration exits 2; no secret is logged. */
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void test_lifecycle_starts_serves_health_and_stops_on_sigterm(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "life");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/api/health", 200, 30000));
    char body[4096];
    assert_int_equal(h_http_get(env.http_port, "/api/health", body, sizeof body), 200);
    json_object *o = json_tokener_parse(body);
    assert_non_null(o);
    json_object *db, *v;
    assert_true(json_object_object_get_ex(o, "status", &v));
    assert_string_equal(json_object_get_string(v), "ok");
    assert_true(json_object_object_get_ex(o, "database", &db));
    assert_true(json_object_object_get_ex(db, "status", &v));
    assert_string_equal(json_object_get_string(v), "connected");
    assert_true(json_object_object_get_ex(db, "readyState", &v));
    assert_int_equal(json_object_get_int(v), 1);
    json_object_put(o);
    /* ready once it has joined its group and got its partitions */
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    assert_int_equal(h_http_get(env.http_port, "/livez", body, sizeof body), 200);
    assert_true(h_worker_alive(pid));

    int64_t t0 = h_now_ms();
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    int64_t took = h_now_ms() - t0;
    print_message("stopped in %lld ms\n", (long long)took);
    assert_true(took < 10000);
    assert_true(h_count_in_file(log, "module=db msg=connected") >= 1);
    assert_true(h_count_in_file(log, "stopped status=0") == 1);
    /* the HTTP port is released */
    assert_int_equal(h_http_get(env.http_port, "/api/health", body, sizeof body), 0);
    h_env_destroy(&env);
}

static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    char drain[4096]; /* read it all: closing early would SIGPIPE the writer */
    while (fread(drain, 1, sizeof drain, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_lifecycle_invalid_configuration_exits_2_naming_the_setting(void **state) {
    (void)state;
    char out[16384], cmd[1024];
    struct {
        const char *env;
        const char *expect;
    } cases[] = {
        {"WORKER_THREADS=zero", "WORKER_THREADS"},
        {"WORKER_THREADS=0", "WORKER_THREADS"},
        {"MONGODB_URI=postgres://x", "MONGODB_URI"},
        {"HTTP_ADDR=nonsense", "HTTP_ADDR"},
        {"LOG_LEVEL=loud", "LOG_LEVEL"},
        {"MONGODB_URI=mongodb://", "MONGODB_URI"},
        {"HTTP_ADDR=myhost:8080", "HTTP_ADDR: "},
        {"INVITE_EVENTS_TOPIC=wallet.commands", "INVITE_EVENTS_TOPIC"},
        {"AUTO_MIGRATE=perhaps", "AUTO_MIGRATE"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "env %s '%s' 2>&1", cases[i].env, WW_WORKER_BIN);
        int st = run_cmd(cmd, out, sizeof out);
        print_message("%s -> %d: %s", cases[i].env, st, out);
        assert_int_equal(st, 2);
        assert_non_null(strstr(out, cases[i].expect));
        /* exactly one line */
        assert_non_null(strchr(out, '\n'));
        assert_null(strchr(strchr(out, '\n') + 1, '\n'));
    }
    snprintf(cmd, sizeof cmd, "'%s' --no-such-flag 2>&1", WW_WORKER_BIN);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' --help", WW_WORKER_BIN);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "KAFKA_BROKERS"));
    assert_non_null(strstr(out, "MONGODB_URI"));
    snprintf(cmd, sizeof cmd, "'%s' --version", WW_WORKER_BIN);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "wallet-worker "));
}

/* issue 14: a '?' in the password ended the old text scanner's userinfo. */
static void test_lifecycle_password_never_logged(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "secret");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    /* an unreachable server with credentials: connect errors get logged */
    const char *extra[] = {"MONGODB_URI=mongodb://walletapp:Sup3r?S3cretPw@127.0.0.1:1/wallet"
                           "?serverSelectionTimeoutMS=500",
                           NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    /* degraded health while the database is unreachable */
    assert_true(h_wait_http(env.http_port, "/api/health", 503, 20000));
    char body[4096];
    assert_int_equal(h_http_get(env.http_port, "/api/health", body, sizeof body), 503);
    assert_non_null(strstr(body, "\"degraded\""));
    assert_null(strstr(body, "S3cretPw"));
    char *metrics = malloc(1 << 20);
    assert_non_null(metrics);
    assert_int_equal(h_http_get(env.http_port, "/metrics", metrics, 1 << 20), 200);
    assert_null(strstr(metrics, "S3cretPw"));
    free(metrics);
    h_sleep_ms(1500);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    char *text = h_read_file(log);
    assert_non_null(text);
    assert_null(strstr(text, "S3cretPw"));
    assert_non_null(strstr(text, "walletapp:***@"));
    free(text);
    h_env_destroy(&env);
}

/* Credential options (which do nothing with tls=false and no user name, so
 * the test servers need not support them) of a worker that connects: neither the settings line nor the
 * "connected uri=" line nor the sidecar shows their values. */
static void test_lifecycle_credential_options_never_logged(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "credopts");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    char uri[900];
    snprintf(uri, sizeof uri,
             "MONGODB_URI=%s%stls=false&tlsCertificateKeyFilePassword=TlsPw%%3FS3cret&"
             "authMechanismProperties=AWS_SESSION_TOKEN:Sess?Tok3n",
             env.uri, strchr(env.uri, '?') ? "&" : "?");
    const char *extra[] = {uri, NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    char body[4096];
    assert_int_equal(h_http_get(env.http_port, "/api/health", body, sizeof body), 200);
    char *metrics = malloc(1 << 20);
    assert_non_null(metrics);
    assert_int_equal(h_http_get(env.http_port, "/metrics", metrics, 1 << 20), 200);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    char *text = h_read_file(log);
    assert_non_null(text);
    assert_non_null(strstr(text, "module=db msg=connected uri="));
    static const char *const secrets[] = {"S3cret", "Tok3n"};
    for (size_t i = 0; i < 2; i++) {
        if (strstr(text, secrets[i])) fail_msg("log shows %s:\n%s", secrets[i], text);
        assert_null(strstr(body, secrets[i]));
        assert_null(strstr(metrics, secrets[i]));
    }
    free(metrics);
    free(text);
    h_env_destroy(&env);
}

/* PIPELINES=wallet: only the wallet topic, and no invite sweeper. */
static void test_lifecycle_pipelines_choose_the_topics(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "pipes");
    char log[256], want[300];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    const char *extra[] = {"PIPELINES=wallet", "INVITE_SWEEP_INTERVAL_MS=200", NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    h_sleep_ms(1000);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    snprintf(want, sizeof want, "topics=%s workers=", env.commands_topic);
    assert_int_equal(h_count_in_file(log, want), 1);
    assert_int_equal(h_count_in_file(log, "invites partition="), 0);
    assert_int_equal(h_count_in_file(log, "sweeper"), 0);
    h_env_destroy(&env);
}

/* A test that fails mid-way never stops the workers it started (cmocka
 * longjmps out of it): the harness kills them when the next test sets up. */
static void test_lifecycle_harness_reaps_a_failed_tests_workers(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "leftover");
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(h_wait_http(env.http_port, "/livez", 200, 30000));
    h_env_destroy(&env);
    /* as if the test had failed here: the next set-up finds it running */
    h_env_t next;
    h_env_init(&next, "leftover2");
    assert_false(h_worker_alive(pid));
    assert_int_equal(kill(pid, 0), -1); /* gone, and reaped */
    h_env_destroy(&next);
    unlink(log);
}

int main(void) {
    /* the workers this test starts through `env` inherit it: see harness.c */
    setenv("MONGOC_DISABLE_SHM", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_starts_serves_health_and_stops_on_sigterm),
        cmocka_unit_test(test_lifecycle_invalid_configuration_exits_2_naming_the_setting),
        cmocka_unit_test(test_lifecycle_password_never_logged),
        cmocka_unit_test(test_lifecycle_credential_options_never_logged),
        cmocka_unit_test(test_lifecycle_pipelines_choose_the_topics),
        cmocka_unit_test(test_lifecycle_harness_reaps_a_failed_tests_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
