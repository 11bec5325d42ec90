/* it_secure.c: the production transports on the real stack (scripts/stack.sh
 * starts them, see docs/testing.md): Kafka over SASL_SSL with SCRAM-SHA-512
 * (consume, apply, publish, replay; PLAIN for a replay too), a wrong SASL
 * password and an untrusted CA (a clear error, /readyz 503, the worker alive,
 * the password never logged), MongoDB over TLS with tlsCAFile and with an
 * untrusted CA (FerretDB only: mongo-java-server has no TLS), and wrong
 * MongoDB credentials against the stack's authenticating FerretDB
 * (readyz 503, wallet_worker_db_auth_failures_total, DB_AUTH_FAIL_EXIT_S).
 * A secure listener the stack should have and does not is a failure. */
#include <bson/bson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "wallet.h"

static h_env_t env;
static char log_path[256], out_path[256], err_path[256];
/* The worker a test started and has not stopped yet: a failed assertion
 * leaves it running, and it would hold the sidecar port for the next test. */
static pid_t worker;

/* what scripts/stack.sh env exports for the secure listeners */
static char sasl_brokers[256], ca[512], untrusted_ca[512], scram_user[64], scram_pw[128];
static char plain_user[64], plain_pw[128], auth_user[64], auth_pw[128];
static int auth_port;

static const char *need_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set: the stack has no secure listeners (scripts/stack.sh up, then "
                 "eval \"$(scripts/stack.sh env)\")", name);
    return v;
}

static void read_secret(const char *file_var, char *out, size_t cap) {
    const char *path = need_env(file_var);
    char *s = h_read_file(path);
    if (!s) fail_msg("%s=%s: cannot read it", file_var, path);
    s[strcspn(s, "\r\n")] = '\0';
    snprintf(out, cap, "%s", s);
    free(s);
    assert_true(strlen(out) >= 8);
}

static int setup(void **state) {
    (void)state;
    h_env_init(&env, "secure");
    snprintf(log_path, sizeof log_path, "/tmp/ww-it-%s.log", env.run_id);
    snprintf(out_path, sizeof out_path, "/tmp/ww-it-%s.out", env.run_id);
    snprintf(err_path, sizeof err_path, "/tmp/ww-it-%s.err", env.run_id);
    snprintf(sasl_brokers, sizeof sasl_brokers, "%s", need_env("KAFKA_SASL_SSL_BROKERS"));
    snprintf(ca, sizeof ca, "%s", need_env("WW_TLS_CA"));
    snprintf(untrusted_ca, sizeof untrusted_ca, "%s", need_env("WW_TLS_UNTRUSTED_CA"));
    snprintf(scram_user, sizeof scram_user, "%s", need_env("KAFKA_SCRAM_USER"));
    snprintf(plain_user, sizeof plain_user, "%s", need_env("KAFKA_PLAIN_USER"));
    snprintf(auth_user, sizeof auth_user, "%s", need_env("MONGO_AUTH_USER"));
    auth_port = atoi(need_env("MONGO_AUTH_PORT"));
    read_secret("KAFKA_SCRAM_PASSWORD_FILE", scram_pw, sizeof scram_pw);
    read_secret("KAFKA_PLAIN_PASSWORD_FILE", plain_pw, sizeof plain_pw);
    read_secret("MONGO_AUTH_PASSWORD_FILE", auth_pw, sizeof auth_pw);
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    h_env_destroy(&env);
    return 0;
}

static int stop_leftover(void **state) {
    (void)state;
    if (worker > 0) h_worker_stop(worker, SIGKILL, 5000);
    worker = 0;
    return 0;
}

static pid_t start(const char *const *extra) {
    unlink(log_path);
    worker = h_worker_start(&env, log_path, extra);
    return worker;
}

/* stops the test's worker (sig 0: waits for it to exit by itself) */
static int stop(int sig, int timeout_ms) {
    int st = h_worker_stop(worker, sig, timeout_ms);
    worker = 0;
    return st;
}

/* ---- helpers ------------------------------------------------------------ */

/* The worker's Kafka settings for the SASL_SSL listener. */
typedef struct {
    char brokers[300], proto[64], mech[64], user[128], pw[200], ca[600];
} kafka_sec_t;

static void kafka_sec(kafka_sec_t *k, const char *mech, const char *user, const char *pw,
                      const char *ca_file) {
    snprintf(k->brokers, sizeof k->brokers, "KAFKA_BROKERS=%s", sasl_brokers);
    snprintf(k->proto, sizeof k->proto, "KAFKA_SECURITY_PROTOCOL=sasl_ssl");
    snprintf(k->mech, sizeof k->mech, "KAFKA_SASL_MECHANISM=%s", mech);
    snprintf(k->user, sizeof k->user, "KAFKA_SASL_USERNAME=%s", user);
    snprintf(k->pw, sizeof k->pw, "KAFKA_SASL_PASSWORD=%s", pw);
    snprintf(k->ca, sizeof k->ca, "KAFKA_SSL_CA_LOCATION=%s", ca_file);
}

static bool wait_log(const char *needle, int timeout_ms) {
    int64_t deadline = h_now_ms() + timeout_ms;
    while (h_now_ms() < deadline) {
        if (h_count_in_file(log_path, needle) > 0) return true;
        h_sleep_ms(200);
    }
    char *text = h_read_file(log_path);
    size_t len = text ? strlen(text) : 0;
    print_message("no \"%s\" in %s; its end:\n%s\n", needle, log_path,
                  text ? text + (len > 3000 ? len - 3000 : 0) : "(no file)");
    free(text);
    return false;
}

static void seed(const char *owner_hex, int64_t balance) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "availablePaise", balance);
    BSON_APPEND_INT64(&doc, "version", 0);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
}

static void send_credit(const char *key, const char *owner, long amount) {
    char v[400];
    snprintf(v, sizeof v, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-%s\","
             "\"ownerUserId\":\"%s\",\"amountPaise\":%ld}", env.run_id, key, owner, amount);
    h_produce(&env, env.commands_topic, owner, v);
}

static bool wait_transactions(int64_t want, int timeout_ms) {
    int64_t deadline = h_now_ms() + timeout_ms;
    while (h_count(&env, WW_TRANSACTIONS, NULL) < want && h_now_ms() < deadline) h_sleep_ms(100);
    return h_count(&env, WW_TRANSACTIONS, NULL) == want;
}

/* "  applied    12" in a replay summary; -1 when absent */
static long summary_count(const char *outcome) {
    char *text = h_read_file(out_path);
    assert_non_null(text);
    char needle[64];
    snprintf(needle, sizeof needle, "  %s ", outcome);
    const char *p = strstr(text, needle);
    long n = p ? strtol(p + strlen(needle), NULL, 10) : -1;
    free(text);
    return n;
}

static int replay(const char *const *extra) {
    unlink(out_path);
    unlink(err_path);
    const char *args[] = {"replay", "--topic", env.commands_topic, "--from-beginning", NULL};
    int st = h_run_cli(&env, args, extra, NULL, out_path, err_path, 120000);
    char *o = h_read_file(out_path), *e = h_read_file(err_path);
    print_message("replay exit %d\n--- stdout\n%s--- stderr (tail)\n%s\n", st, o ? o : "",
                  e && strlen(e) > 800 ? e + strlen(e) - 800 : (e ? e : ""));
    free(o);
    free(e);
    return st;
}

/* env.uri with another host:port and options: mongodb://<hostport>/<db><opts> */
static void uri_for(char *out, size_t cap, const char *userinfo, const char *hostport,
                    const char *opts) {
    snprintf(out, cap, "mongodb://%s%s/%s%s", userinfo, hostport, env.db_name, opts);
}

/* Polls /api/health until its body contains needle (the Kafka cause). */
static bool wait_health(const char *needle, int timeout_ms) {
    char body[1024] = "";
    int64_t deadline = h_now_ms() + timeout_ms;
    while (h_now_ms() < deadline) {
        if (h_http_get(env.http_port, "/api/health", body, sizeof body) > 0 && strstr(body, needle))
            return true;
        h_sleep_ms(200);
    }
    print_message("no %s in /api/health: %s\n", needle, body);
    return false;
}

static void assert_worker_degraded_but_alive(pid_t pid, const char *not_ready) {
    char body[512];
    assert_int_equal(h_http_get(env.http_port, "/readyz", body, sizeof body), 503);
    if (not_ready) assert_non_null(strstr(body, not_ready));
    assert_true(h_worker_alive(pid));
    assert_int_equal(h_http_get(env.http_port, "/livez", body, sizeof body), 200);
}

/* ---- Kafka over SASL_SSL ------------------------------------------------- */

static const char O1[] = "64b000000000000000000a01";
static const char O2[] = "64b000000000000000000a02";

static void test_secure_kafka_scram_consume_apply_publish_and_replay(void **state) {
    (void)state;
    seed(O1, 0);
    seed(O2, 0);
    for (int i = 0; i < 6; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%d", i);
        send_credit(k, i % 2 ? O1 : O2, 100 + i);
    }
    h_flush(&env);
    kafka_sec_t k;
    kafka_sec(&k, "SCRAM-SHA-512", scram_user, scram_pw, ca);
    const char *extra[] = {k.brokers, k.proto, k.mech, k.user, k.pw, k.ca, NULL};
    start(extra);
    assert_true(wait_transactions(6, 60000));
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    /* the results were published over SASL_SSL; read them back in plaintext */
    assert_int_equal(h_read_topic(&env, env.results_topic, 6, 30000, NULL, NULL), 6);
    assert_int_equal(stop(SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, "setting KAFKA_SECURITY_PROTOCOL=sasl_ssl"), 1);
    assert_int_equal(h_count_in_file(log_path, scram_pw), 0);

    /* replay over SASL_SSL (SCRAM): the six again as duplicates, two new applied */
    send_credit("r0", O1, 7);
    send_credit("r1", O2, 7);
    h_flush(&env);
    assert_int_equal(replay(extra), 0);
    assert_int_equal(summary_count("duplicate"), 6);
    assert_int_equal(summary_count("applied"), 2);
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, NULL), 8);
    assert_int_equal(h_count_in_file(err_path, scram_pw), 0);

    /* and with the PLAIN user: the same listener, another mechanism */
    kafka_sec_t p;
    kafka_sec(&p, "PLAIN", plain_user, plain_pw, ca);
    const char *plain[] = {p.brokers, p.proto, p.mech, p.user, p.pw, p.ca, NULL};
    assert_int_equal(replay(plain), 0);
    assert_int_equal(summary_count("duplicate"), 8);
    assert_int_equal(h_count_in_file(err_path, plain_pw), 0);
}

static void test_secure_kafka_wrong_password_is_named_and_never_logged(void **state) {
    (void)state;
    char wrong[96];
    snprintf(wrong, sizeof wrong, "not-the-password-%s", env.run_id);
    kafka_sec_t k;
    kafka_sec(&k, "SCRAM-SHA-512", scram_user, wrong, ca);
    const char *extra[] = {k.brokers, k.proto, k.mech, k.user, k.pw, k.ca, NULL};
    pid_t pid = start(extra);
    assert_true(wait_log("SASL authentication error", 30000));
    assert_true(h_count_in_file(log_path, "invalid credentials") > 0);
    assert_worker_degraded_but_alive(pid, "kafka");
    /* the worker's own line, naming the settings to check */
    assert_true(wait_log("SASL authentication failed (retrying): check KAFKA_SASL_USERNAME", 30000));
    assert_worker_degraded_but_alive(pid, "kafka");
    /* /api/health names the cause, not just "down" */
    assert_true(wait_health("\"error\":\"authentication\"", 30000));
    assert_int_equal(stop(SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, wrong), 0);
    assert_int_equal(h_count_in_file(log_path, "KAFKA_SASL_PASSWORD=***"), 1);
}

static void test_secure_kafka_untrusted_ca_is_named(void **state) {
    (void)state;
    kafka_sec_t k;
    kafka_sec(&k, "SCRAM-SHA-512", scram_user, scram_pw, untrusted_ca);
    const char *extra[] = {k.brokers, k.proto, k.mech, k.user, k.pw, k.ca, NULL};
    pid_t pid = start(extra);
    assert_true(wait_log("certificate verify failed", 30000));
    assert_true(wait_log("TLS handshake failed (retrying): check KAFKA_SSL_CA_LOCATION", 30000));
    assert_worker_degraded_but_alive(pid, "kafka");
    assert_true(wait_health("\"error\":\"tls\"", 30000));
    assert_int_equal(stop(SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, scram_pw), 0);
}

/* ---- MongoDB over TLS (FerretDB) ----------------------------------------- */

/* MONGODB_TLS_URI's host:port (FerretDB's TLS listener) */
static void tls_hostport(char *out, size_t cap) {
    const char *u = need_env("MONGODB_TLS_URI");
    const char *h = strstr(u, "://");
    assert_non_null(h);
    h += 3;
    size_t n = strcspn(h, "/?");
    snprintf(out, cap, "%.*s", (int)n, h);
}

static void test_secure_mongo_tls_with_ca_file(void **state) {
    (void)state;
    char hp[128], uri[1200], opts[700], e_uri[1300];
    tls_hostport(hp, sizeof hp);
    snprintf(opts, sizeof opts, "?tls=true&tlsCAFile=%s", ca);
    uri_for(uri, sizeof uri, "", hp, opts);
    snprintf(e_uri, sizeof e_uri, "MONGODB_URI=%s", uri);
    const char O3[] = "64b000000000000000000a03";
    seed(O3, 0);
    send_credit("t0", O3, 5);
    send_credit("t1", O3, 6);
    h_flush(&env);
    int64_t before = h_count(&env, WW_TRANSACTIONS, NULL);
    const char *extra[] = {e_uri, NULL};
    start(extra);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    assert_true(wait_transactions(before + 2, 60000)); /* read back over the plain port */
    assert_true(h_count_in_file(log_path, "tls=true") > 0); /* it did connect over TLS */
    assert_int_equal(stop(SIGTERM, 15000), 0);
}

static void test_secure_mongo_untrusted_ca_is_named(void **state) {
    (void)state;
    char hp[128], uri[1200], opts[700], e_uri[1300];
    tls_hostport(hp, sizeof hp);
    snprintf(opts, sizeof opts, "?tls=true&tlsCAFile=%s", untrusted_ca);
    uri_for(uri, sizeof uri, "", hp, opts);
    snprintf(e_uri, sizeof e_uri, "MONGODB_URI=%s", uri);
    const char *extra[] = {e_uri, NULL};
    pid_t pid = start(extra);
    assert_true(wait_log("certificate verify failed", 30000));
    assert_true(h_count_in_file(log_path, "TLS handshake failed") > 0);
    assert_worker_degraded_but_alive(pid, "database");
    assert_int_equal(stop(SIGTERM, 15000), 0);
}

/* ---- wrong MongoDB credentials (the stack's authenticating FerretDB) ------ */

static void auth_uri(char *e_uri, size_t cap, const char *pw) {
    char userinfo[300], hp[64], uri[1000];
    snprintf(userinfo, sizeof userinfo, "%s:%s@", auth_user, pw);
    snprintf(hp, sizeof hp, "127.0.0.1:%d", auth_port);
    uri_for(uri, sizeof uri, userinfo, hp, "?authSource=wallet_auth");
    snprintf(e_uri, cap, "MONGODB_URI=%s", uri);
}

static long long metric(const char *name) {
    static char body[1 << 20];
    assert_int_equal(h_http_get(env.http_port, "/metrics", body, sizeof body), 200);
    char needle[160];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = strstr(body, needle);
    return p ? strtoll(p + strlen(needle), NULL, 10) : -1;
}

static void test_secure_mongo_wrong_credentials(void **state) {
    (void)state;
    char e_uri[1100];
    /* the right password works: the server really checks, this is not a dead port */
    auth_uri(e_uri, sizeof e_uri, auth_pw);
    const char *good[] = {e_uri, NULL};
    pid_t pid = start(good);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    assert_int_equal(metric("wallet_worker_db_auth_failures_total"), 0);
    assert_int_equal(stop(SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, auth_pw), 0);

    /* a wrong one: named, counted, not ready, alive, retrying, never logged */
    char wrong[96];
    snprintf(wrong, sizeof wrong, "wrong-%s", env.run_id);
    auth_uri(e_uri, sizeof e_uri, wrong);
    const char *bad[] = {e_uri, NULL};
    pid = start(bad);
    assert_true(wait_log("authentication failed", 30000));
    assert_true(h_wait_http(env.http_port, "/readyz", 503, 5000));
    assert_worker_degraded_but_alive(pid, "database_auth");
    long long n1 = metric("wallet_worker_db_auth_failures_total");
    assert_true(n1 >= 1);
    int64_t deadline = h_now_ms() + 20000; /* retried: the count goes on */
    while (metric("wallet_worker_db_auth_failures_total") <= n1 && h_now_ms() < deadline)
        h_sleep_ms(200);
    assert_true(metric("wallet_worker_db_auth_failures_total") > n1);
    assert_true(h_worker_alive(pid));
    assert_int_equal(stop(SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, wrong), 0);

    /* DB_AUTH_FAIL_EXIT_S=3: exit 1, so Kubernetes shows a crash loop */
    const char *give_up[] = {e_uri, "DB_AUTH_FAIL_EXIT_S=3", NULL};
    int64_t t0 = h_now_ms();
    start(give_up);
    int st = stop(0 /* no signal: wait for it to exit by itself */, 30000);
    int64_t took = h_now_ms() - t0;
    print_message("DB_AUTH_FAIL_EXIT_S=3: exit %d after %lld ms\n", st, (long long)took);
    assert_int_equal(st, 1);
    assert_true(took >= 3000);
    assert_true(h_count_in_file(log_path, "giving up: exit 1 (DB_AUTH_FAIL_EXIT_S)") == 1);
    assert_int_equal(h_count_in_file(log_path, wrong), 0);
}

int main(void) {
    const char *impl = getenv("MONGO_IMPL");
    bool ferretdb = impl && strcmp(impl, "ferretdb") == 0;
    const struct CMUnitTest all[] = {
        cmocka_unit_test_teardown(test_secure_kafka_scram_consume_apply_publish_and_replay, stop_leftover),
        cmocka_unit_test_teardown(test_secure_kafka_wrong_password_is_named_and_never_logged, stop_leftover),
        cmocka_unit_test_teardown(test_secure_kafka_untrusted_ca_is_named, stop_leftover),
        cmocka_unit_test_teardown(test_secure_mongo_wrong_credentials, stop_leftover),
        /* FerretDB only (mongo-java-server has no TLS listener): last two */
        cmocka_unit_test_teardown(test_secure_mongo_tls_with_ca_file, stop_leftover),
        cmocka_unit_test_teardown(test_secure_mongo_untrusted_ca_is_named, stop_leftover),
    };
    size_t n = sizeof all / sizeof all[0] - (ferretdb ? 0 : 2);
    return _cmocka_run_group_tests("it_secure", all, n, setup, teardown);
}
