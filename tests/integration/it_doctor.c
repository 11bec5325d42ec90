/* it_doctor.c: `wallet-worker doctor` on the real server. A clean migrated
 * database passes (with the plan section the server can give: FerretDB's
 * SQLite plans, mongo-java-server's "explain unavailable"); a dropped index, a
 * tampered migration checksum, an old decision marker, a negative balance and
 * a fractional double balance each make it exit 1 naming the problem; the
 * advice for a dropped index repairs it; --json is one object; a bad flag is
 * exit 2. */
#include <bson/bson.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "migrate.h"

static h_env_t env;
static char out_path[256], err_path[256];

static int setup(void **state) {
    (void)state;
    h_env_init(&env, "doctor");
    snprintf(out_path, sizeof out_path, "/tmp/ww-it-%s.out", env.run_id);
    snprintf(err_path, sizeof err_path, "/tmp/ww-it-%s.err", env.run_id);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(out_path);
    unlink(err_path);
    h_env_destroy(&env);
    return 0;
}

static int cli(const char *const *args) {
    unlink(out_path);
    unlink(err_path);
    int st = h_run_cli(&env, args, NULL, NULL, out_path, err_path, 120000);
    char *o = h_read_file(out_path), *e = h_read_file(err_path);
    print_message("exit %d\n%s%s", st, o ? o : "", e ? e : "");
    free(o);
    free(e);
    return st;
}

static int doctor(void) {
    const char *args[] = {"doctor", NULL};
    return cli(args);
}

static bool out_has(const char *needle) { return h_count_in_file(out_path, needle) >= 1; }

/* An empty database, migrated by this build. */
static void fresh_migrated(void) {
    ww_error_t err;
    assert_true(ww_db_drop_database(env.db, &err));
    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run), 0);
}

static bool is_ferretdb(void) { return strcmp(env.mongo_impl, "ferretdb") == 0; }

static void insert(const char *collection, const char *json) {
    bson_t doc;
    bson_error_t be;
    if (!bson_init_from_json(&doc, json, -1, &be)) fail_msg("%s: %s", json, be.message);
    bool dup = false;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, collection, &doc, &dup, &err));
    assert_false(dup);
    bson_destroy(&doc);
}

/* A wallet with an integer balance and one marker `age_min` minutes old. */
static void wallet_with_marker(const char *wid, const char *key, const char *marker_id,
                               int age_min) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"_id\": {\"$oid\": \"%s\"}, \"ownerUserId\": {\"$oid\": \"%s\"}, "
             "\"availablePaise\": {\"$numberLong\": \"900\"}, \"version\": 3, "
             "\"pendingTransactions\": [{\"_id\": {\"$oid\": \"%s\"}, \"idempotencyKey\": \"%s\", "
             "\"type\": \"debit\", \"status\": \"applied\", \"walletId\": {\"$oid\": \"%s\"}, "
             "\"amountPaise\": {\"$numberLong\": \"100\"}, \"createdAt\": {\"$date\": "
             "{\"$numberLong\": \"%lld\"}}}]}",
             wid, wid, marker_id, key, wid, (long long)(ww_clock_now_ms() - (int64_t)age_min * 60000));
    insert("wallets", json);
}

static void test_doctor_clean_database_passes_with_the_servers_plans(void **state) {
    (void)state;
    fresh_migrated();
    /* a healthy wallet whose last marker is complete: prunable, not a problem */
    wallet_with_marker("65f0000000000000000000a1", "k-done", "65f0000000000000000000b1", 90);
    insert("transactions", "{\"_id\": {\"$oid\": \"65f0000000000000000000b1\"}, \"idempotencyKey\": "
                           "\"k-done\", \"status\": \"applied\", \"walletId\": {\"$oid\": "
                           "\"65f0000000000000000000a1\"}}");
    insert("wallets", "{\"_id\": {\"$oid\": \"65f0000000000000000000a2\"}, \"availablePaise\": "
                      "{\"$numberDouble\": \"250.0\"}}");
    assert_int_equal(doctor(), 0);
    assert_true(out_has("schema: ok (migrations: 4 applied, 0 pending)"));
    assert_true(out_has("ledger: ok (2 wallet(s), 1 marker(s), 1 older than 15 min, 1 prunable)"));
    assert_true(out_has("note markers_prunable"));
    assert_true(out_has("OK: 0 problem(s)"));
    /* every hot query is in the plan section, with what this server can say */
    const char *queries[] = {"ledger_by_idempotency_key", "wallets_by_owner",
                             "transactions_by_wallet_newest", "invites_by_code",
                             "invite_sweeper_overdue", "users_by_brand", "users_by_mediator",
                             "users_by_roles_status", "campaigns_by_agency"};
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) assert_true(out_has(queries[i]));
    if (is_ferretdb()) {
        assert_int_equal(h_count_in_file(out_path, "sqlite_plan: SCAN "), 9);
        assert_int_equal(h_count_in_file(out_path, "explain unavailable"), 0);
        assert_true(out_has("note ttl_unsupported: invites.expiresAt_1"));
    } else {
        assert_int_equal(h_count_in_file(out_path, "explain unavailable"), 9);
        assert_int_equal(h_count_in_file(out_path, "ttl_unsupported"), 0);
    }

    /* --json: one object, the same verdicts */
    const char *args[] = {"doctor", "--json", NULL};
    assert_int_equal(cli(args), 0);
    char *o = h_read_file(out_path);
    json_object *j = json_tokener_parse(o);
    assert_non_null(j);
    json_object *v, *plans;
    assert_true(json_object_object_get_ex(j, "ok", &v) && json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(j, "plans", &plans));
    assert_int_equal(json_object_array_length(plans), 9);
    assert_true(json_object_object_get_ex(json_object_array_get_idx(plans, 0), "verdict", &v));
    assert_string_equal(json_object_get_string(v), is_ferretdb() ? "sqlite_plan" : "unavailable");
    json_object_put(j);
    free(o);
}

static void test_doctor_dropped_index_then_the_advice_repairs_it(void **state) {
    (void)state;
    fresh_migrated();
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "dropIndexes", "transactions");
    BSON_APPEND_UTF8(&cmd, "index", "idempotencyKey_1");
    ww_error_t err;
    assert_true(ww_db_command(env.db, &cmd, &reply, &err));
    bson_destroy(&reply);
    bson_destroy(&cmd);
    assert_int_equal(doctor(), 1);
    assert_true(out_has("PROBLEM index_missing: transactions.idempotencyKey_1"));
    assert_true(out_has("docs/troubleshooting.md#doctor-index-missing-or-different"));
    assert_true(out_has("PROBLEMS: 1 problem(s)"));

    /* what it says to do: delete migration 1's record, migrate again */
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_INT32(&filter, "_id", 1);
    int64_t deleted = 0;
    assert_true(ww_db_delete_many(env.db, WW_SCHEMA_MIGRATIONS, &filter, &deleted, &err));
    assert_int_equal(deleted, 1);
    bson_destroy(&filter);
    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run), 0);
    assert_int_equal(doctor(), 0);
}

static void test_doctor_tampered_checksum(void **state) {
    (void)state;
    fresh_migrated();
    bson_t filter = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_INT32(&filter, "_id", 2);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_UTF8(&set, "checksum",
                     "0000000000000000000000000000000000000000000000000000000000000000");
    bson_append_document_end(&upd, &set);
    ww_error_t err;
    int64_t matched = 0;
    assert_true(ww_db_update_one(env.db, WW_SCHEMA_MIGRATIONS, &filter, &upd, NULL, &matched,
                                 NULL, &err));
    assert_int_equal(matched, 1);
    bson_destroy(&filter);
    bson_destroy(&upd);
    assert_int_equal(doctor(), 1);
    assert_true(out_has("PROBLEM migration_changed: migration 002_invite_indexes: applied with "
                        "checksum 000000000000..."));
}

static void test_doctor_old_marker(void **state) {
    (void)state;
    fresh_migrated();
    /* a decision a crashed worker left half-written: marker, no ledger entry */
    wallet_with_marker("65f0000000000000000000c1", "k-stale", "65f0000000000000000000d1", 60);
    assert_int_equal(doctor(), 1);
    assert_true(out_has("PROBLEM stale_marker: wallet 65f0000000000000000000c1 key k-stale"));
    assert_true(out_has("60 min old (older than 15 min), has no ledger entry"));
    /* with a longer horizon it is still in flight */
    const char *patient[] = {"doctor", "--marker-age-minutes", "120", NULL};
    assert_int_equal(cli(patient), 0);
    assert_true(out_has("1 marker(s), 0 older than 120 min"));
}

/* insert command, `n` documents made by make(i) */
static void insert_many(const char *collection, int n, void (*make)(int i, bson_t *doc)) {
    for (int start = 0; start < n; start += 500) {
        bson_t cmd = BSON_INITIALIZER, arr, reply;
        BSON_APPEND_UTF8(&cmd, "insert", collection);
        BSON_APPEND_ARRAY_BEGIN(&cmd, "documents", &arr);
        for (int i = start; i < n && i < start + 500; i++) {
            char k[16];
            const char *key;
            bson_uint32_to_string((uint32_t)(i - start), &key, k, sizeof k);
            bson_t doc;
            make(i, &doc);
            BSON_APPEND_DOCUMENT(&arr, key, &doc);
            bson_destroy(&doc);
        }
        bson_append_array_end(&cmd, &arr);
        ww_error_t err;
        assert_true(ww_db_command(env.db, &cmd, &reply, &err));
        bson_destroy(&reply);
        bson_destroy(&cmd);
    }
}

static void oid_n(int i, int kind, bson_oid_t *oid) {
    char hex[25];
    snprintf(hex, sizeof hex, "66%02d%020d", kind, i);
    bson_oid_init_from_string(oid, hex);
}

static void make_wallet(int i, bson_t *doc) {
    bson_oid_t wid, mid;
    oid_n(i, 1, &wid);
    oid_n(i, 2, &mid);
    char key[32];
    snprintf(key, sizeof key, "bulk-%d", i);
    bson_t arr, m;
    bson_init(doc);
    BSON_APPEND_OID(doc, "_id", &wid);
    BSON_APPEND_INT64(doc, "availablePaise", 100);
    BSON_APPEND_ARRAY_BEGIN(doc, "pendingTransactions", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &m);
    BSON_APPEND_OID(&m, "_id", &mid);
    BSON_APPEND_UTF8(&m, "idempotencyKey", key);
    BSON_APPEND_DATE_TIME(&m, "createdAt", ww_clock_now_ms() - 3600000);
    bson_append_document_end(&arr, &m);
    bson_append_array_end(doc, &arr);
}

static void make_entry(int i, bson_t *doc) {
    bson_oid_t wid, mid;
    oid_n(i, 1, &wid);
    oid_n(i, 2, &mid);
    char key[32];
    snprintf(key, sizeof key, "bulk-%d", i);
    bson_init(doc);
    BSON_APPEND_OID(doc, "_id", &mid);
    BSON_APPEND_UTF8(doc, "idempotencyKey", key);
    BSON_APPEND_UTF8(doc, "status", "applied");
    BSON_APPEND_OID(doc, "walletId", &wid);
}

/* More old markers than one check batch holds (2000): every one is looked up,
 * the stale one among them is found, the complete ones are counted. */
static void test_doctor_many_wallets_checked_in_batches(void **state) {
    (void)state;
    fresh_migrated();
    insert_many("wallets", 4500, make_wallet);
    insert_many("transactions", 4500, make_entry);
    /* the last ledger entry goes: its marker is now a half-written decision */
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "idempotencyKey", "bulk-4321");
    int64_t deleted = 0;
    ww_error_t err;
    assert_true(ww_db_delete_many(env.db, "transactions", &filter, &deleted, &err));
    assert_int_equal(deleted, 1);
    bson_destroy(&filter);
    assert_int_equal(doctor(), 1);
    assert_true(out_has("(4500 wallet(s), 4500 marker(s), 4500 older than 15 min, 4499 prunable)"));
    assert_true(out_has("key bulk-4321: marker"));
    assert_true(out_has("4499 marker(s) on 4499 wallet(s) older than 15 min are complete"));
    assert_true(out_has("PROBLEMS: 1 problem(s)"));
}

static void test_doctor_negative_balance(void **state) {
    (void)state;
    fresh_migrated();
    insert("wallets", "{\"_id\": {\"$oid\": \"65f0000000000000000000e1\"}, \"availablePaise\": "
                      "{\"$numberLong\": \"-500\"}}");
    assert_int_equal(doctor(), 1);
    assert_true(out_has("PROBLEM negative_balance: wallet 65f0000000000000000000e1: "
                        "availablePaise is -500"));
}

static void test_doctor_fractional_double_balance(void **state) {
    (void)state;
    fresh_migrated();
    insert("wallets", "{\"_id\": {\"$oid\": \"65f0000000000000000000f1\"}, \"availablePaise\": "
                      "{\"$numberDouble\": \"10.5\"}}");
    const char *args[] = {"doctor", "--json", NULL};
    assert_int_equal(cli(args), 1);
    char *o = h_read_file(out_path);
    json_object *j = json_tokener_parse(o);
    assert_non_null(j);
    json_object *v, *f;
    assert_true(json_object_object_get_ex(j, "ok", &v));
    assert_false(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(j, "findings", &f));
    bool named = false;
    for (size_t i = 0; i < json_object_array_length(f); i++) {
        json_object *x = json_object_array_get_idx(f, i), *code, *subject;
        if (json_object_object_get_ex(x, "code", &code) &&
            strcmp(json_object_get_string(code), "fractional_balance") == 0 &&
            json_object_object_get_ex(x, "subject", &subject))
            named = strcmp(json_object_get_string(subject), "wallet 65f0000000000000000000f1") == 0;
    }
    assert_true(named);
    json_object_put(j);
    free(o);
}

static void test_doctor_usage_errors_exit_2(void **state) {
    (void)state;
    const char *zero[] = {"doctor", "--marker-age-minutes", "0", NULL};
    assert_int_equal(cli(zero), 2);
    assert_true(h_count_in_file(err_path, "--marker-age-minutes") >= 1);
    const char *bad[] = {"doctor", "--fix", NULL};
    assert_int_equal(cli(bad), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doctor_clean_database_passes_with_the_servers_plans),
        cmocka_unit_test(test_doctor_dropped_index_then_the_advice_repairs_it),
        cmocka_unit_test(test_doctor_tampered_checksum),
        cmocka_unit_test(test_doctor_old_marker),
        cmocka_unit_test(test_doctor_many_wallets_checked_in_batches),
        cmocka_unit_test(test_doctor_negative_balance),
        cmocka_unit_test(test_doctor_fractional_double_balance),
        cmocka_unit_test(test_doctor_usage_errors_exit_2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
