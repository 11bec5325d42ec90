/* it_wallet_protocol.c: the wallet protocol's crash windows and races, driven
 * directly against the real MongoDB-compatible server. Each test builds the
 * state a crash or a competing worker would leave (by deleting the ledger
 * entry that a crashed worker never wrote, or inserting the one a competitor
 * did) and checks that the next attempt finishes the job exactly once. */
#include <bson/bson.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "wallet.h"

static h_env_t env;

static int setup(void **state) {
    (void)state;
    h_env_init(&env, "proto");
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    h_env_destroy(&env);
    return 0;
}

static void make_wallet(const char *owner_hex, int64_t balance, bool deleted) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "availablePaise", balance);
    BSON_APPEND_INT64(&doc, "version", 7);
    if (deleted) BSON_APPEND_DATE_TIME(&doc, "deletedAt", 1700000000000);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
}

static ww_command_t cmd(const char *type, const char *key, const char *owner, int64_t amount) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"type\":\"%s\",\"idempotencyKey\":\"%s-%s\",\"ownerUserId\":\"%s\","
             "\"amountPaise\":%lld}",
             type, env.run_id, key, owner, (long long)amount);
    ww_command_t c;
    ww_error_t err;
    assert_true(ww_command_parse(json, strlen(json), NULL, &c, &err));
    return c;
}

static ww_wallet_result_t apply(const ww_command_t *c) {
    ww_wallet_result_t r;
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_wallet_apply(env.db, c, "t", 0, 1, &r, &err)) fail_msg("apply: %s", err.message);
    return r;
}

static int64_t live_balance(const char *owner_hex, size_t *markers) {
    bson_t filter = BSON_INITIALIZER, doc;
    bson_oid_t owner;
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&filter, "ownerUserId", &owner);
    BSON_APPEND_NULL(&filter, "deletedAt");
    bool found;
    ww_error_t err;
    assert_true(ww_db_find_one(env.db, WW_WALLETS, &filter, NULL, &doc, &found, &err));
    assert_true(found);
    bson_iter_t it, arr;
    assert_true(bson_iter_init_find(&it, &doc, "availablePaise"));
    int64_t b = bson_iter_as_int64(&it);
    *markers = 0;
    if (bson_iter_init_find(&it, &doc, "pendingTransactions") && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) ++*markers;
    bson_destroy(&doc);
    bson_destroy(&filter);
    return b;
}

static void delete_ledger(const ww_command_t *c) {
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "idempotencyKey", c->idempotency_key);
    int64_t n;
    ww_error_t err;
    assert_true(ww_db_delete_many(env.db, WW_TRANSACTIONS, &filter, &n, &err));
    assert_int_equal(n, 1);
    bson_destroy(&filter);
}

static int64_t ledger_entries(const ww_command_t *c) {
    bson_t q = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&q, "idempotencyKey", c->idempotency_key);
    int64_t n = h_count(&env, WW_TRANSACTIONS, &q);
    bson_destroy(&q);
    assert_true(n >= 0);
    return n;
}

/* Crash after the wallet update, before the ledger insert: the retry writes
 * the ledger entry from the marker and does not move money again. */
static void test_protocol_crash_before_ledger_is_finished_once(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0001";
    make_wallet(o, 1000, false);
    ww_command_t c = cmd("wallet.debit", "crash1", o, 300);
    ww_wallet_result_t first = apply(&c);
    assert_int_equal(first.outcome, WW_OUTCOME_APPLIED);
    delete_ledger(&c); /* the crash: the marker is in the wallet, no ledger entry */
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 700);
    assert_int_equal(markers, 1);
    ww_wallet_result_t again = apply(&c);
    assert_int_equal(again.outcome, WW_OUTCOME_APPLIED); /* first report of this key */
    assert_string_equal(again.transaction_id, first.transaction_id); /* same entry */
    assert_int_equal(again.balance_after_paise, 700);
    assert_int_equal(live_balance(o, &markers), 700); /* not debited twice */
    assert_int_equal(ledger_entries(&c), 1);
    ww_wallet_result_t third = apply(&c);
    assert_int_equal(third.outcome, WW_OUTCOME_DUPLICATE);
}

/* The next command on the wallet completes an orphaned marker and prunes it. */
static void test_protocol_next_command_completes_orphan_and_prunes(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0002";
    make_wallet(o, 1000, false);
    ww_command_t c1 = cmd("wallet.debit", "orphan1", o, 100);
    ww_command_t c2 = cmd("wallet.credit", "orphan2", o, 50);
    assert_int_equal(apply(&c1).outcome, WW_OUTCOME_APPLIED);
    delete_ledger(&c1);
    assert_int_equal(apply(&c2).outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(ledger_entries(&c1), 1); /* written by c2's worker */
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 950);
    assert_int_equal(markers, 1); /* only c2's, c1's pruned */
    assert_int_equal(apply(&c1).outcome, WW_OUTCOME_DUPLICATE);
    assert_int_equal(live_balance(o, &markers), 950);
}

/* Same key, different payload: conflict, nothing changes. */
static void test_protocol_conflict_changes_nothing(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0003";
    make_wallet(o, 1000, false);
    ww_command_t c = cmd("wallet.debit", "conf", o, 100);
    ww_command_t c_other = cmd("wallet.debit", "conf", o, 200);
    assert_int_equal(apply(&c).outcome, WW_OUTCOME_APPLIED);
    ww_wallet_result_t r = apply(&c_other);
    assert_int_equal(r.outcome, WW_OUTCOME_CONFLICT);
    assert_int_equal(r.original, WW_OUTCOME_APPLIED);
    assert_string_equal(r.error_code, "conflict");
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 900);
    /* a rejected key stays rejected even after the balance allows it */
    ww_command_t big = cmd("wallet.debit", "big", o, 5000);
    assert_int_equal(apply(&big).outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    ww_command_t credit = cmd("wallet.credit", "topup", o, 10000);
    assert_int_equal(apply(&credit).outcome, WW_OUTCOME_APPLIED);
    ww_wallet_result_t again = apply(&big);
    assert_int_equal(again.outcome, WW_OUTCOME_DUPLICATE);
    assert_int_equal(again.original, WW_OUTCOME_INSUFFICIENT_FUNDS);
    assert_int_equal(live_balance(o, &markers), 10900);
}

/* A competitor recorded wallet_not_found for the key (the owner had no
 * wallet when it looked); our decision must yield and be undone. */
static void test_protocol_wallet_not_found_race_undoes_our_effect(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0004";
    make_wallet(o, 1000, false);
    ww_command_t c = cmd("wallet.debit", "race", o, 400);
    assert_int_equal(apply(&c).outcome, WW_OUTCOME_APPLIED);
    delete_ledger(&c);
    /* the competitor's entry */
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, o);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_UTF8(&doc, "idempotencyKey", c.idempotency_key);
    BSON_APPEND_UTF8(&doc, "type", "debit");
    BSON_APPEND_UTF8(&doc, "status", "wallet_not_found");
    BSON_APPEND_NULL(&doc, "walletId");
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "amountPaise", 400);
    BSON_APPEND_NULL(&doc, "balanceAfterPaise");
    BSON_APPEND_UTF8(&doc, "fingerprint", c.fingerprint);
    bool dup;
    ww_error_t err;
    /* a later command on the wallet must not resurrect our marker as an entry */
    ww_command_t later = cmd("wallet.credit", "later", o, 1);
    assert_true(ww_db_insert_one(env.db, WW_TRANSACTIONS, &doc, &dup, &err));
    bson_destroy(&doc);
    ww_wallet_result_t r = apply(&c);
    assert_int_equal(r.outcome, WW_OUTCOME_DUPLICATE);
    assert_int_equal(r.original, WW_OUTCOME_WALLET_NOT_FOUND);
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 1000); /* the 400 came back */
    assert_int_equal(markers, 0);
    assert_int_equal(apply(&later).outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(live_balance(o, &markers), 1001);
    assert_int_equal(ledger_entries(&c), 1);
}

/* A decision recorded in a wallet that was then soft-deleted is found and
 * finished there; the owner's new wallet is not charged for it. */
static void test_protocol_marker_in_deleted_wallet_is_honoured(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0005";
    make_wallet(o, 1000, false);
    ww_command_t c = cmd("wallet.debit", "moved", o, 250);
    assert_int_equal(apply(&c).outcome, WW_OUTCOME_APPLIED);
    delete_ledger(&c);
    /* soft-delete the wallet, open a new one */
    bson_t filter = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bson_oid_t owner;
    bson_oid_init_from_string(&owner, o);
    BSON_APPEND_OID(&filter, "ownerUserId", &owner);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_DATE_TIME(&set, "deletedAt", 1700000000000);
    bson_append_document_end(&upd, &set);
    ww_error_t err;
    assert_true(ww_db_update_many(env.db, WW_WALLETS, &filter, &upd, NULL, NULL, NULL, &err));
    bson_destroy(&filter);
    bson_destroy(&upd);
    make_wallet(o, 5000, false);
    ww_wallet_result_t r = apply(&c);
    assert_int_equal(r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(r.balance_after_paise, 750); /* the old wallet's decision */
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 5000);
    assert_int_equal(ledger_entries(&c), 1);
}

/* Stored numbers the backend may have written: int32 and integral doubles
 * are read exactly; a fractional balance is refused, not rounded. */
static void test_protocol_unusable_balance_is_a_permanent_error(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0006";
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, o);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_DOUBLE(&doc, "availablePaise", 10.5);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
    ww_command_t c = cmd("wallet.debit", "frac", o, 1);
    ww_wallet_result_t r;
    ww_error_clear(&err);
    assert_false(ww_wallet_apply(env.db, &c, "t", 0, 1, &r, &err));
    assert_false(err.retryable);
    assert_non_null(strstr(err.message, "availablePaise"));
}

/* Wallets written without a version field (older backend documents) are
 * updated, and get one. */
static void test_protocol_wallet_without_version_field(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0007";
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, o);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT32(&doc, "availablePaise", 800);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
    ww_command_t c = cmd("wallet.debit", "nover", o, 300);
    ww_wallet_result_t r = apply(&c);
    assert_int_equal(r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(r.balance_after_paise, 500);
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 500);
    ww_command_t c2 = cmd("wallet.debit", "nover2", o, 100);
    assert_int_equal(apply(&c2).outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(live_balance(o, &markers), 400);
}

/* ---- documents planted by hand ------------------------------------------------ */

/* A marker as a deciding worker stores it: the complete ledger entry. */
static void build_marker(bson_t *m, const bson_oid_t *txid, const bson_oid_t *wallet,
                         const char *owner_hex, const char *key, const char *fingerprint,
                         int64_t amount, int64_t balance_after) {
    bson_oid_t owner;
    bson_oid_init_from_string(&owner, owner_hex);
    bson_init(m);
    BSON_APPEND_OID(m, "_id", txid);
    BSON_APPEND_UTF8(m, "idempotencyKey", key);
    BSON_APPEND_UTF8(m, "type", "debit");
    BSON_APPEND_UTF8(m, "status", "applied");
    BSON_APPEND_OID(m, "walletId", wallet);
    BSON_APPEND_OID(m, "ownerUserId", &owner);
    BSON_APPEND_INT64(m, "amountPaise", amount);
    BSON_APPEND_INT64(m, "balanceAfterPaise", balance_after);
    BSON_APPEND_UTF8(m, "fingerprint", fingerprint);
    bson_t src;
    BSON_APPEND_DOCUMENT_BEGIN(m, "source", &src);
    BSON_APPEND_UTF8(&src, "topic", "t");
    BSON_APPEND_INT32(&src, "partition", 0);
    BSON_APPEND_INT64(&src, "offset", 1);
    bson_append_document_end(m, &src);
    BSON_APPEND_DATE_TIME(m, "createdAt", 1700000000000);
    BSON_APPEND_DATE_TIME(m, "updatedAt", 1700000000000);
}

/* A wallet with the given _id (their order is the snapshot's sort order) and
 * an optional marker. */
static void plant_wallet(const char *id_hex, const char *owner_hex, int64_t balance, bool deleted,
                         const bson_t *marker) {
    bson_t doc = BSON_INITIALIZER, arr;
    bson_oid_t id, owner;
    bson_oid_init_from_string(&id, id_hex);
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "availablePaise", balance);
    BSON_APPEND_INT64(&doc, "version", 3);
    if (deleted) BSON_APPEND_DATE_TIME(&doc, "deletedAt", 1700000000000);
    BSON_APPEND_ARRAY_BEGIN(&doc, "pendingTransactions", &arr);
    if (marker) BSON_APPEND_DOCUMENT(&arr, "0", marker);
    bson_append_array_end(&doc, &arr);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    assert_false(dup);
    bson_destroy(&doc);
}

static bool ledger_entry_id(const ww_command_t *c, bson_oid_t *id) {
    bson_t q = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&q, "idempotencyKey", c->idempotency_key);
    bool found;
    ww_error_t err;
    assert_true(ww_db_find_one(env.db, WW_TRANSACTIONS, &q, NULL, &doc, &found, &err));
    bson_destroy(&q);
    if (!found) return false;
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &doc, "_id") && BSON_ITER_HOLDS_OID(&it));
    bson_oid_copy(bson_iter_oid(&it), id);
    bson_destroy(&doc);
    return true;
}

/* A worker decided the key with one payload and crashed before the ledger
 * insert; the key then arrives with another payload. The marker's decision
 * is finished (its ledger entry written) and the command is a conflict,
 * answered as such, not a failure with no reason. */
static void test_protocol_marker_with_another_fingerprint_is_a_conflict(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0008";
    const char *w = "bbbbbbbbbbbbbbbbbbbb0008";
    ww_command_t c = cmd("wallet.debit", "fpmark", o, 200);
    bson_oid_t wid, txid;
    bson_oid_init_from_string(&wid, w);
    bson_oid_init(&txid, NULL);
    bson_t marker;
    build_marker(&marker, &txid, &wid, o, c.idempotency_key,
                 "0000000000000000000000000000000000000000000000000000000000000000", 300, 700);
    plant_wallet(w, o, 700, false, &marker);
    bson_destroy(&marker);

    ww_wallet_result_t r;
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_wallet_apply(env.db, &c, "t", 0, 1, &r, &err))
        fail_msg("apply failed (retryable=%d): \"%s\"", err.retryable, err.message);
    assert_int_equal(r.outcome, WW_OUTCOME_CONFLICT);
    assert_int_equal(r.original, WW_OUTCOME_APPLIED);
    assert_string_equal(r.error_code, "conflict");
    assert_int_equal(r.amount_paise, 200); /* the rejected command's own amount */
    assert_false(r.has_transaction);
    /* the marker's decision is in the ledger, under the marker's _id */
    bson_oid_t stored;
    assert_true(ledger_entry_id(&c, &stored));
    assert_true(bson_oid_equal(&stored, &txid));
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 700); /* no money moved */
    /* and the next delivery says the same, from the ledger */
    assert_int_equal(apply(&c).outcome, WW_OUTCOME_CONFLICT);
    assert_int_equal(ledger_entries(&c), 1);
}

/* An owner with more wallet documents than one snapshot holds (the backend
 * soft-deletes and re-creates): the live wallet sorts last and is still
 * found, rather than the key being recorded wallet_not_found for good. */
static void test_protocol_live_wallet_behind_many_deleted_ones_is_found(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa0009";
    char id[25];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "bbbbbbbbbbbbbbbbbbbb09%02d", i);
        plant_wallet(id, o, 0, true, NULL);
    }
    plant_wallet("bbbbbbbbbbbbbbbbbbbb0999", o, 1000, false, NULL);
    ww_command_t c = cmd("wallet.debit", "many", o, 300);
    ww_wallet_result_t r = apply(&c);
    assert_int_equal(r.outcome, WW_OUTCOME_APPLIED);
    assert_string_equal(r.wallet_id, "bbbbbbbbbbbbbbbbbbbb0999");
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 700);
}

/* More documents that the protocol must read (the live wallet and every
 * wallet holding markers) than one snapshot holds: the command is refused
 * with a retryable error that names the owner, and logged; nothing is
 * decided on the partial view. Once an operator fixes the data it goes
 * through. */
static void test_protocol_too_many_wallets_with_markers_fail_loudly(void **state) {
    (void)state;
    const char *o = "aaaaaaaaaaaaaaaaaaaa000a";
    char id[25], key[96];
    for (int i = 0; i < 9; i++) {
        snprintf(id, sizeof id, "bbbbbbbbbbbbbbbbbbbb0a%02d", i);
        snprintf(key, sizeof key, "%s-old%d", env.run_id, i);
        bson_oid_t wid, txid;
        bson_oid_init_from_string(&wid, id);
        bson_oid_init(&txid, NULL);
        bson_t marker;
        build_marker(&marker, &txid, &wid, o, key,
                     "1111111111111111111111111111111111111111111111111111111111111111", 1, 0);
        plant_wallet(id, o, 0, true, &marker);
        bson_destroy(&marker);
    }
    plant_wallet("bbbbbbbbbbbbbbbbbbbb0aff", o, 1000, false, NULL);
    ww_command_t c = cmd("wallet.debit", "toomany", o, 300);

    /* this process's log lines go to a file for the duration of the call */
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s-toomany.log", env.run_id);
    int fd = open(log, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    ww_wallet_result_t r;
    ww_error_t err;
    ww_error_clear(&err);
    bool ok = ww_wallet_apply(env.db, &c, "t", 0, 1, &r, &err);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    if (ok) fail_msg("decided %s on a partial snapshot", ww_outcome_name(r.outcome));
    assert_true(err.retryable);
    assert_non_null(strstr(err.message, o));
    assert_true(h_count_in_file(log, o) >= 1);
    assert_true(h_count_in_file(log, "level=error module=wallet ") >= 1);
    unlink(log);
    assert_int_equal(ledger_entries(&c), 0);
    size_t markers;
    assert_int_equal(live_balance(o, &markers), 1000);

    /* the fix: two of the old wallets are removed */
    bson_t filter = BSON_INITIALIZER, in;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &in);
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    bson_oid_t a, b;
    bson_oid_init_from_string(&a, "bbbbbbbbbbbbbbbbbbbb0a00");
    bson_oid_init_from_string(&b, "bbbbbbbbbbbbbbbbbbbb0a01");
    BSON_APPEND_OID(&arr, "0", &a);
    BSON_APPEND_OID(&arr, "1", &b);
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&filter, &in);
    int64_t n = 0;
    assert_true(ww_db_delete_many(env.db, WW_WALLETS, &filter, &n, &err));
    assert_int_equal(n, 2);
    bson_destroy(&filter);
    r = apply(&c);
    assert_int_equal(r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(live_balance(o, &markers), 700);
}

/* DB_TRANSACTIONS=on asks for the transactional mode; neither of our servers
 * is a replica set, so the worker refuses to start: exit 2, one clear line. */
static void test_protocol_transactions_on_without_replica_set_exits_2(void **state) {
    (void)state;
    char out[256], errp[256];
    snprintf(out, sizeof out, "/tmp/ww-it-%s-txn.out", env.run_id);
    snprintf(errp, sizeof errp, "/tmp/ww-it-%s-txn.err", env.run_id);
    /* a value that is not on/off: exit 2 before connecting */
    const char *bad[] = {"DB_TRANSACTIONS=maybe", NULL};
    assert_int_equal(h_run_cli(&env, NULL, bad, NULL, out, errp, 30000), 2);
    assert_int_equal(h_count_in_file(errp, "DB_TRANSACTIONS: \"maybe\" is not on or off"), 1);
    const char *extra[] = {"DB_TRANSACTIONS=on", NULL};
    int st = h_run_cli(&env, NULL, extra, NULL, out, errp, 120000);
    char *text = h_read_file(errp);
    print_message("exit %d\n%s", st, text ? text : "");
    assert_int_equal(st, 2);
    assert_non_null(text);
    assert_non_null(strstr(text, "DB_TRANSACTIONS=on, but the deployment cannot run "
                                  "transactions: the server is not a replica-set member"));
    /* the worker said it once, as its last word before stopping */
    assert_int_equal(h_count_in_file(errp, "cannot run transactions"), 1);
    free(text);
    unlink(out);
    unlink(errp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_crash_before_ledger_is_finished_once),
        cmocka_unit_test(test_protocol_next_command_completes_orphan_and_prunes),
        cmocka_unit_test(test_protocol_conflict_changes_nothing),
        cmocka_unit_test(test_protocol_wallet_not_found_race_undoes_our_effect),
        cmocka_unit_test(test_protocol_marker_in_deleted_wallet_is_honoured),
        cmocka_unit_test(test_protocol_unusable_balance_is_a_permanent_error),
        cmocka_unit_test(test_protocol_wallet_without_version_field),
        cmocka_unit_test(test_protocol_marker_with_another_fingerprint_is_a_conflict),
        cmocka_unit_test(test_protocol_live_wallet_behind_many_deleted_ones_is_found),
        cmocka_unit_test(test_protocol_too_many_wallets_with_markers_fail_loudly),
        cmocka_unit_test(test_protocol_transactions_on_without_replica_set_exits_2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
