/* it_wallet.c: wallet commands end to end on the real stack: every outcome,
 * the result events and dead letters as published, the ledger and balances
 * in MongoDB, and a full replay of the topic that changes nothing. */
#include <bson/bson.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "json.h"
#include "migrate.h"
#include "wallet.h"

typedef enum { AS_INT32, AS_INT64, AS_DOUBLE } num_kind_t;

static void seed_wallet(h_env_t *env, const char *owner_hex, num_kind_t kind, int64_t balance,
                        bool deleted) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    switch (kind) {
    case AS_INT32:
        BSON_APPEND_INT32(&doc, "availablePaise", (int32_t)balance);
        BSON_APPEND_INT32(&doc, "version", 0);
        break;
    case AS_INT64:
        BSON_APPEND_INT64(&doc, "availablePaise", balance);
        BSON_APPEND_INT64(&doc, "version", 0);
        break;
    case AS_DOUBLE:
        BSON_APPEND_DOUBLE(&doc, "availablePaise", (double)balance);
        BSON_APPEND_DOUBLE(&doc, "version", 0.0);
        break;
    }
    if (deleted) BSON_APPEND_DATE_TIME(&doc, "deletedAt", 1700000000000);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env->db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
}

static void send_cmd(h_env_t *env, const char *type, const char *key, const char *owner,
                     long long amount) {
    char v[512];
    snprintf(v, sizeof v,
             "{\"type\":\"%s\",\"idempotencyKey\":\"%s-%s\",\"ownerUserId\":\"%s\","
             "\"amountPaise\":%lld}",
             type, env->run_id, key, owner, amount);
    h_produce(env, env->commands_topic, owner, v);
}

/* ---- reading results -------------------------------------------------------- */

#define MAX_RESULTS 256
typedef struct {
    size_t n;
    char key[MAX_RESULTS][160];
    char status[MAX_RESULTS][40];
    char original[MAX_RESULTS][40];
    char error_code[MAX_RESULTS][48];
    long long balance[MAX_RESULTS];
    bool has_balance[MAX_RESULTS];
} results_t;

static FILE *results_dump; /* every result event, validated against the schema */

static void collect_result(const ww_msg_t *m, void *ctx) {
    results_t *r = ctx;
    if (r->n >= MAX_RESULTS) return;
    if (results_dump) fprintf(results_dump, "%.*s\n", (int)m->value_len, (const char *)m->value);
    json_object *o = json_tokener_parse(m->value);
    assert_non_null(o);
    json_object *v;
    size_t i = r->n++;
    r->key[i][0] = r->original[i][0] = r->error_code[i][0] = '\0';
    if (json_object_object_get_ex(o, "idempotencyKey", &v) && v)
        snprintf(r->key[i], sizeof r->key[i], "%s", json_object_get_string(v));
    assert_true(json_object_object_get_ex(o, "status", &v));
    snprintf(r->status[i], sizeof r->status[i], "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "originalStatus", &v))
        snprintf(r->original[i], sizeof r->original[i], "%s", json_object_get_string(v));
    r->has_balance[i] = json_object_object_get_ex(o, "balanceAfterPaise", &v) && v;
    r->balance[i] = r->has_balance[i] ? (long long)json_object_get_int64(v) : 0;
    json_object *e;
    if (json_object_object_get_ex(o, "error", &e) && json_object_object_get_ex(e, "code", &v))
        snprintf(r->error_code[i], sizeof r->error_code[i], "%s", json_object_get_string(v));
    /* the contract's fields are always present */
    assert_true(json_object_object_get_ex(o, "walletId", &v));
    assert_true(json_object_object_get_ex(o, "transactionId", &v));
    assert_true(json_object_object_get_ex(o, "amountPaise", &v));
    assert_true(json_object_object_get_ex(o, "processedAt", &v));
    json_object_put(o);
}

/* index of the n-th (0-based) result for key, -1 if none */
static int find_result(const results_t *r, const h_env_t *env, const char *key, int nth) {
    char full[160];
    snprintf(full, sizeof full, "%s-%s", env->run_id, key);
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->key[i], full) == 0 && nth-- == 0) return (int)i;
    return -1;
}

typedef struct {
    size_t n;
    char code[16][48];
    char partition[16][8];
    char offset[16][24];
    char value[16][256];
    char reason[16][256];
} dlq_t;

static void collect_dlq(const ww_msg_t *m, void *ctx) {
    dlq_t *d = ctx;
    if (d->n >= 16) return;
    const void *v;
    size_t len;
    size_t i = d->n++;
    assert_true(ww_msg_header(m, "ww.error.code", &v, &len));
    snprintf(d->code[i], sizeof d->code[i], "%.*s", (int)len, (const char *)v);
    assert_true(ww_msg_header(m, "ww.error.reason", &v, &len));
    assert_true(len > 0);
    snprintf(d->reason[i], sizeof d->reason[i], "%.*s", (int)len, (const char *)v);
    assert_true(ww_msg_header(m, "ww.source.topic", &v, &len));
    assert_true(ww_msg_header(m, "ww.source.partition", &v, &len));
    snprintf(d->partition[i], sizeof d->partition[i], "%.*s", (int)len, (const char *)v);
    assert_true(ww_msg_header(m, "ww.source.offset", &v, &len));
    snprintf(d->offset[i], sizeof d->offset[i], "%.*s", (int)len, (const char *)v);
    snprintf(d->value[i], sizeof d->value[i], "%.*s", (int)m->value_len, (const char *)m->value);
}

/* ---- database state ------------------------------------------------------------ */

static int64_t wallet_balance(h_env_t *env, const char *owner_hex, bson_type_t *type,
                              int64_t *version) {
    bson_t filter = BSON_INITIALIZER, doc;
    bson_oid_t owner;
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&filter, "ownerUserId", &owner);
    bool found;
    ww_error_t err;
    assert_true(ww_db_find_one(env->db, WW_WALLETS, &filter, NULL, &doc, &found, &err));
    assert_true(found);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &doc, "availablePaise"));
    *type = bson_iter_type(&it);
    int64_t b = bson_iter_as_int64(&it);
    if (version) {
        assert_true(bson_iter_init_find(&it, &doc, "version"));
        *version = bson_iter_as_int64(&it);
    }
    bson_destroy(&doc);
    bson_destroy(&filter);
    return b;
}

static const char *const DIGEST[] = {WW_WALLETS, WW_TRANSACTIONS};

static void ledger_status(h_env_t *env, const char *key, char *status, size_t cap,
                          bool *has_wallet) {
    char full[160];
    snprintf(full, sizeof full, "%s-%s", env->run_id, key);
    bson_t filter = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&filter, "idempotencyKey", full);
    bool found;
    ww_error_t err;
    assert_true(ww_db_find_one(env->db, WW_TRANSACTIONS, &filter, NULL, &doc, &found, &err));
    assert_true(found);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &doc, "status"));
    snprintf(status, cap, "%s", bson_iter_utf8(&it, NULL));
    *has_wallet = bson_iter_init_find(&it, &doc, "walletId") && BSON_ITER_HOLDS_OID(&it);
    assert_true(bson_iter_init_find(&it, &doc, "createdAt") && BSON_ITER_HOLDS_DATE_TIME(&it));
    assert_true(bson_iter_init_find(&it, &doc, "source") && BSON_ITER_HOLDS_DOCUMENT(&it));
    bson_destroy(&doc);
    bson_destroy(&filter);
}

static void expect(const results_t *r, const h_env_t *env, const char *key, int nth,
                   const char *status) {
    int i = find_result(r, env, key, nth);
    if (i < 0) fail_msg("no result #%d for %s", nth, key);
    if (strcmp(r->status[i], status) != 0)
        fail_msg("result #%d for %s: want %s, got %s", nth, key, status, r->status[i]);
}

#define A "a0000000000000000000000a"
#define B "b0000000000000000000000b"
#define C "c0000000000000000000000c"
#define D "d0000000000000000000000d"

static void test_wallet_every_outcome_then_replay_changes_nothing(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "wallet");
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    seed_wallet(&env, A, AS_INT32, 1000, false);
    seed_wallet(&env, B, AS_DOUBLE, 500, false);
    seed_wallet(&env, D, AS_INT64, 900, true); /* soft-deleted: does not exist */

    send_cmd(&env, "wallet.debit", "k1", A, 300);    /* applied, 700 */
    send_cmd(&env, "wallet.debit", "k1", A, 300);    /* duplicate */
    send_cmd(&env, "wallet.debit", "k1", A, 999);    /* conflict */
    send_cmd(&env, "wallet.debit", "k2", A, 5000);   /* insufficient_funds */
    send_cmd(&env, "wallet.debit", "k2", A, 5000);   /* duplicate of a rejection */
    send_cmd(&env, "wallet.credit", "k3", B, 250);   /* applied, 750 */
    send_cmd(&env, "wallet.debit", "k4", C, 1);      /* wallet_not_found: none */
    send_cmd(&env, "wallet.debit", "k5", D, 1);      /* wallet_not_found: deleted */
    send_cmd(&env, "wallet.debit", "k6", A, 700);    /* applied, exactly 0 */
    send_cmd(&env, "wallet.debit", "k7", A, 1);      /* insufficient_funds at 0 */
    h_produce(&env, env.commands_topic, "bad", "this is not json");
    char v[512];
    snprintf(v, sizeof v, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-k8\","
             "\"ownerUserId\":\"" A "\",\"amountPaise\":10.5}", env.run_id);
    h_produce(&env, env.commands_topic, A, v);
    snprintf(v, sizeof v, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-k9\","
             "\"ownerUserId\":{\"$ne\":null},\"amountPaise\":10}", env.run_id);
    h_produce(&env, env.commands_topic, A, v);
    /* a reference key is stored as a field name: '.' would make it a path */
    snprintf(v, sizeof v, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-k10\","
             "\"ownerUserId\":\"" A "\",\"amountPaise\":1,\"reference\":{\"order.id\":\"x\"}}",
             env.run_id);
    h_produce(&env, env.commands_topic, A, v);
    h_flush(&env);
    const size_t total = 14;

    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    pid_t pid = h_worker_start(&env, log, NULL);
    results_t *r = calloc(1, sizeof *r);
    char dump[256];
    snprintf(dump, sizeof dump, "/tmp/ww-it-%s.results.ndjson", env.run_id);
    results_dump = fopen(dump, "w");
    size_t got = h_read_topic(&env, env.results_topic, total, 60000, collect_result, r);
    fclose(results_dump);
    results_dump = NULL;
    assert_int_equal(got, total);
    /* every event as published conforms to schemas/wallet-result.schema.json */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/tools/validate_json.py "
             "%s/schemas/wallet-result.schema.json %s", WW_SOURCE_DIR, WW_SOURCE_DIR, dump);
    assert_int_equal(system(cmd), 0);
    unlink(dump);

    expect(r, &env, "k1", 0, "applied");
    expect(r, &env, "k1", 1, "duplicate");
    expect(r, &env, "k1", 2, "conflict");
    expect(r, &env, "k2", 0, "insufficient_funds");
    expect(r, &env, "k2", 1, "duplicate");
    assert_string_equal(r->original[find_result(r, &env, "k2", 1)], "insufficient_funds");
    expect(r, &env, "k3", 0, "applied");
    expect(r, &env, "k4", 0, "wallet_not_found");
    expect(r, &env, "k5", 0, "wallet_not_found");
    expect(r, &env, "k6", 0, "applied");
    expect(r, &env, "k7", 0, "insufficient_funds");
    expect(r, &env, "k8", 0, "invalid");
    expect(r, &env, "k9", 0, "invalid");
    assert_string_equal(r->error_code[find_result(r, &env, "k8", 0)], "wrong_type");
    assert_string_equal(r->error_code[find_result(r, &env, "k9", 0)], "wrong_type");
    expect(r, &env, "k10", 0, "invalid");
    assert_string_equal(r->error_code[find_result(r, &env, "k10", 0)], "invalid_value");
    assert_int_equal(r->balance[find_result(r, &env, "k1", 0)], 700);
    assert_int_equal(r->balance[find_result(r, &env, "k1", 1)], 700); /* the original result */
    assert_int_equal(r->balance[find_result(r, &env, "k6", 0)], 0);
    /* a conflict reports the rejected command, not the original */
    assert_false(r->has_balance[find_result(r, &env, "k1", 2)]);
    assert_string_equal(r->original[find_result(r, &env, "k1", 2)], "applied");
    assert_string_equal(r->error_code[find_result(r, &env, "k2", 1)], "insufficient_funds");
    assert_int_equal(r->balance[find_result(r, &env, "k3", 0)], 750);

    dlq_t *d = calloc(1, sizeof *d);
    assert_int_equal(h_read_topic(&env, env.dlq_topic, 4, 30000, collect_dlq, d), 4);
    int json_bad = 0, wrong_type = 0, dotted = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->code[i], "invalid_json") == 0) {
            json_bad++;
            assert_string_equal(d->value[i], "this is not json"); /* original bytes */
        }
        if (strcmp(d->code[i], "wrong_type") == 0) wrong_type++;
        if (strcmp(d->code[i], "invalid_value") == 0) {
            dotted++;
            assert_non_null(strstr(d->reason[i], "reference: key \"order.id\" must not contain"));
        }
    }
    assert_int_equal(json_bad, 1);
    assert_int_equal(wrong_type, 2);
    assert_int_equal(dotted, 1);

    /* MongoDB: balances exact and stored as int64, the ledger one entry per key */
    bson_type_t t;
    int64_t version;
    assert_int_equal(wallet_balance(&env, A, &t, &version), 0);
    assert_int_equal(t, BSON_TYPE_INT64);
    /* every guarded update bumps it once; one update may carry several of the
     * batch's decisions (k1, k2, k6, k7): between 1 and 4 updates */
    assert_in_range(version, 1, 4);
    assert_int_equal(wallet_balance(&env, B, &t, NULL), 750);
    assert_int_equal(t, BSON_TYPE_INT64); /* was a double: never written as one */
    const char *keys[] = {"k1", "k2", "k3", "k4", "k5", "k6", "k7"};
    const char *status[] = {"applied", "insufficient_funds", "applied", "wallet_not_found",
                            "wallet_not_found", "applied", "insufficient_funds"};
    const bool with_wallet[] = {true, true, true, false, false, true, true};
    for (size_t i = 0; i < 7; i++) {
        char s[40];
        bool hw;
        ledger_status(&env, keys[i], s, sizeof s, &hw);
        assert_string_equal(s, status[i]);
        assert_int_equal(hw, with_wallet[i]);
    }
    size_t n_ledger;
    char *before = h_digest(&env, DIGEST, 2, &n_ledger);
    assert_int_equal(n_ledger, 7);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);

    /* Replay the whole topic with a new consumer group: nothing changes. */
    char group[200];
    snprintf(group, sizeof group, "KAFKA_GROUP_ID=it-replay-%s", env.run_id);
    const char *extra[] = {group, NULL};
    pid = h_worker_start(&env, log, extra);
    memset(r, 0, sizeof *r);
    assert_int_equal(h_read_topic(&env, env.results_topic, 2 * total, 60000, collect_result, r),
                     2 * total);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    /* The results topic has several partitions: read back, the two runs
     * interleave, so "the second half" is not the replay. A key's results
     * stay in order (one key, one partition): the later half of them are
     * the replay's answers. */
    size_t replayed = 0, first = 0;
    for (size_t i = 0; i < 2 * total; i++) {
        if (strcmp(r->status[i], "invalid") == 0) continue;
        size_t all = 0, earlier = 0;
        for (size_t k = 0; k < 2 * total; k++) {
            if (strcmp(r->key[k], r->key[i]) != 0) continue;
            all++;
            earlier += k < i;
        }
        assert_int_equal(all % 2, 0); /* answered as often in both runs */
        if (earlier < all / 2) {
            first++;
            continue;
        }
        replayed++;
        if (strcmp(r->status[i], "duplicate") != 0 && strcmp(r->status[i], "conflict") != 0)
            fail_msg("replayed result %zu (%s) is %s", i, r->key[i], r->status[i]);
    }
    assert_int_equal(replayed, first);
    assert_true(replayed >= 10); /* k1 x3, k2 x2, k3..k7 */
    char *after = h_digest(&env, DIGEST, 2, &n_ledger);
    assert_string_equal(before, after);
    bson_free(before);
    bson_free(after);
    free(r);
    free(d);
    h_env_destroy(&env);
}

/* LOG_FORMAT=json: an invalid command's line is one valid JSON object whose
 * detail field (it quotes the rejected input) comes back exactly; every other
 * line of the run is valid JSON too. */
static void test_wallet_invalid_command_logs_valid_json(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "wallet-jsonlog");
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    char v[512];
    snprintf(v, sizeof v, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-j1\","
             "\"ownerUserId\":\"not-an-objectid-xyz\",\"amountPaise\":1}", env.run_id);
    h_produce(&env, env.commands_topic, "j1", v);
    /* a quote, a backslash and a newline inside the value */
    snprintf(v, sizeof v, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-j2\","
             "\"ownerUserId\":\"x\\\"y\\\\z\\n\",\"amountPaise\":1}", env.run_id);
    h_produce(&env, env.commands_topic, "j2", v);
    h_flush(&env);

    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    const char *extra[] = {"LOG_FORMAT=json", NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    dlq_t *d = calloc(1, sizeof *d);
    assert_int_equal(h_read_topic(&env, env.dlq_topic, 2, 60000, collect_dlq, d), 2);
    /* the line is written before the dead letter is produced */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);

    static const char *const want[] = {
        "ownerUserId: must be 24 hex digits, got \"not-an-objectid-xyz\" (19 bytes)",
        "ownerUserId: must be 24 hex digits, got \"x\\\"y\\\\z?\" (6 bytes)",
    };
    bool seen[2] = {false, false};
    int lines = 0;
    char *text = h_read_file(log);
    assert_non_null(text);
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        struct json_object *o = NULL;
        if (!ww_json_parse_object(line, (size_t)(nl - line), NULL, &o, &err))
            fail_msg("not a JSON object (%s): %.*s", err.message, (int)(nl - line), line);
        lines++;
        struct json_object *m, *detail;
        if (json_object_object_get_ex(o, "msg", &m) && strcmp(json_object_get_string(m), "invalid") == 0 &&
            json_object_object_get_ex(o, "detail", &detail)) {
            struct json_object *reason, *topic;
            assert_true(json_object_object_get_ex(o, "reason", &reason));
            assert_string_equal(json_object_get_string(reason), "invalid_value");
            assert_true(json_object_object_get_ex(o, "topic", &topic));
            assert_string_equal(json_object_get_string(topic), env.commands_topic);
            for (int k = 0; k < 2; k++)
                if (strcmp(json_object_get_string(detail), want[k]) == 0) seen[k] = true;
        }
        json_object_put(o);
    }
    if (!seen[0] || !seen[1]) fail_msg("no line with the exact detail in %s:\n%s", log, text);
    assert_true(lines > 5); /* start-up lines, settings, the two dead letters, stop */
    free(text);
    free(d);
    unlink(log);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wallet_every_outcome_then_replay_changes_nothing),
        cmocka_unit_test(test_wallet_invalid_command_logs_valid_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
