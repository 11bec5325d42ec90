/* it_wallet_faults.c: the wallet invariants hold through faults on the real
 * stack:
 *   - the worker SIGKILLed mid-batch several times, then restarted;
 *   - the MongoDB-compatible server stopped for 10 s mid-run.
 * Invariants, checked over MongoDB and the results topic:
 *   balance = initial - applied debits + applied credits (every wallet),
 *   no negative balance, exactly one ledger entry per distinct key, every key
 *   answered on the results topic, and no marker left behind unbounded. */
#include <bson/bson.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"
#include "wallet.h"
#include "wallet_plan.h"

#define WALLETS 16
#define COMMANDS 480
#define INITIAL 5000

typedef struct {
    char owner[WALLETS][25];
    char keys[COMMANDS][64];
    size_t n_keys; /* distinct */
} workload_t;

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static void seed(h_env_t *env, workload_t *w) {
    ww_error_t err;
    assert_true(ww_migrate_run(env->db, NULL, NULL, &err));
    for (int i = 0; i < WALLETS; i++) {
        snprintf(w->owner[i], sizeof w->owner[i], "%08x%016x", 0xfeed0000u + (unsigned)i, i);
        bson_t doc = BSON_INITIALIZER;
        bson_oid_t id, owner;
        bson_oid_init(&id, NULL);
        bson_oid_init_from_string(&owner, w->owner[i]);
        BSON_APPEND_OID(&doc, "_id", &id);
        BSON_APPEND_OID(&doc, "ownerUserId", &owner);
        /* the shapes the backend may have written */
        if (i % 3 == 0)
            BSON_APPEND_INT32(&doc, "availablePaise", INITIAL);
        else if (i % 3 == 1)
            BSON_APPEND_INT64(&doc, "availablePaise", INITIAL);
        else
            BSON_APPEND_DOUBLE(&doc, "availablePaise", INITIAL);
        BSON_APPEND_INT32(&doc, "version", 0);
        bool dup;
        assert_true(ww_db_insert_one(env->db, WW_WALLETS, &doc, &dup, &err));
        bson_destroy(&doc);
    }
}

/* COMMANDS messages; about one in ten re-sends an earlier one verbatim. */
static void produce_workload(h_env_t *env, workload_t *w, uint32_t seed_value) {
    uint32_t s = seed_value;
    char sent[COMMANDS][300];
    char sent_owner[COMMANDS][25];
    size_t n_sent = 0;
    w->n_keys = 0;
    for (int i = 0; i < COMMANDS; i++) {
        if (n_sent > 10 && lcg(&s) % 10 == 0) {
            size_t j = lcg(&s) % n_sent;
            h_produce(env, env->commands_topic, sent_owner[j], sent[j]);
            continue;
        }
        int wi = (int)(lcg(&s) % WALLETS);
        bool debit = lcg(&s) % 3 != 0;
        long amount = 1 + (long)(lcg(&s) % 1500);
        snprintf(w->keys[w->n_keys], sizeof w->keys[0], "%s-c%d", env->run_id, i);
        snprintf(sent[n_sent], sizeof sent[0],
                 "{\"type\":\"%s\",\"idempotencyKey\":\"%s\",\"ownerUserId\":\"%s\","
                 "\"amountPaise\":%ld}",
                 debit ? "wallet.debit" : "wallet.credit", w->keys[w->n_keys], w->owner[wi],
                 amount);
        snprintf(sent_owner[n_sent], sizeof sent_owner[0], "%s", w->owner[wi]);
        h_produce(env, env->commands_topic, w->owner[wi], sent[n_sent]);
        n_sent++;
        w->n_keys++;
    }
    h_flush(env);
}

static bool wait_ledger(h_env_t *env, int64_t want, int timeout_ms) {
    int64_t deadline = h_now_ms() + timeout_ms;
    int64_t n = -1;
    while (h_now_ms() < deadline) {
        n = h_count(env, WW_TRANSACTIONS, NULL);
        if (n == want) return true;
        h_sleep_ms(250);
    }
    print_message("ledger has %lld entries, want %lld\n", (long long)n, (long long)want);
    return false;
}

typedef struct {
    int64_t applied_delta[WALLETS];
    size_t entries;
    size_t applied, rejected;
    const workload_t *w;
    char seen[COMMANDS];
    bool duplicate_entry;
} ledger_sum_t;

static bool sum_entry(const bson_t *doc, void *ctx) {
    ledger_sum_t *s = ctx;
    bson_iter_t it;
    s->entries++;
    const char *key = bson_iter_init_find(&it, doc, "idempotencyKey") ? bson_iter_utf8(&it, NULL)
                                                                       : "";
    for (size_t k = 0; k < s->w->n_keys; k++)
        if (strcmp(s->w->keys[k], key) == 0) {
            if (s->seen[k]) s->duplicate_entry = true;
            s->seen[k] = 1;
        }
    const char *status = bson_iter_init_find(&it, doc, "status") ? bson_iter_utf8(&it, NULL) : "";
    if (strcmp(status, "applied") != 0) {
        s->rejected++;
        return true;
    }
    s->applied++;
    const char *type = bson_iter_init_find(&it, doc, "type") ? bson_iter_utf8(&it, NULL) : "";
    int64_t amount = bson_iter_init_find(&it, doc, "amountPaise") ? bson_iter_as_int64(&it) : 0;
    char owner[25] = "";
    if (bson_iter_init_find(&it, doc, "ownerUserId") && BSON_ITER_HOLDS_OID(&it))
        bson_oid_to_string(bson_iter_oid(&it), owner);
    for (int i = 0; i < WALLETS; i++)
        if (strcmp(s->w->owner[i], owner) == 0)
            s->applied_delta[i] += strcmp(type, "debit") == 0 ? -amount : amount;
    return true;
}

typedef struct {
    const workload_t *w;
    int64_t balance[WALLETS];
    size_t max_markers;
    bool bad_type;
} wallet_scan_t;

static bool scan_wallet(const bson_t *doc, void *ctx) {
    wallet_scan_t *s = ctx;
    bson_iter_t it, arr;
    char owner[25] = "";
    if (bson_iter_init_find(&it, doc, "ownerUserId")) bson_oid_to_string(bson_iter_oid(&it), owner);
    int64_t bal = 0;
    if (bson_iter_init_find(&it, doc, "availablePaise")) {
        bal = bson_iter_as_int64(&it);
        /* rewritten wallets hold int64; untouched ones keep their shape */
        if (BSON_ITER_HOLDS_DOUBLE(&it) && bal != INITIAL) s->bad_type = true;
    }
    size_t markers = 0;
    if (bson_iter_init_find(&it, doc, "pendingTransactions") && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) markers++;
    if (markers > s->max_markers) s->max_markers = markers;
    for (int i = 0; i < WALLETS; i++)
        if (strcmp(s->w->owner[i], owner) == 0) s->balance[i] = bal;
    return true;
}

typedef struct {
    const workload_t *w;
    char answered[COMMANDS];
} answered_t;

static void mark_answered(const ww_msg_t *m, void *ctx) {
    answered_t *a = ctx;
    json_object *o = json_tokener_parse(m->value);
    json_object *k;
    if (o && json_object_object_get_ex(o, "idempotencyKey", &k) && k) {
        const char *key = json_object_get_string(k);
        for (size_t i = 0; i < a->w->n_keys; i++)
            if (strcmp(a->w->keys[i], key) == 0) a->answered[i] = 1;
    }
    json_object_put(o);
}

static void check_invariants(h_env_t *env, const workload_t *w) {
    ledger_sum_t *ls = calloc(1, sizeof *ls);
    ls->w = w;
    bson_t all = BSON_INITIALIZER;
    ww_error_t err;
    assert_true(ww_db_find(env->db, WW_TRANSACTIONS, &all, NULL, sum_entry, ls, &err));
    assert_int_equal(ls->entries, w->n_keys);
    assert_false(ls->duplicate_entry);
    for (size_t k = 0; k < w->n_keys; k++)
        if (!ls->seen[k]) fail_msg("no ledger entry for %s", w->keys[k]);
    wallet_scan_t ws = {.w = w};
    assert_true(ww_db_find(env->db, WW_WALLETS, &all, NULL, scan_wallet, &ws, &err));
    for (int i = 0; i < WALLETS; i++) {
        if (ws.balance[i] != INITIAL + ls->applied_delta[i])
            fail_msg("wallet %d: balance %lld != %d %+lld", i, (long long)ws.balance[i],
                     INITIAL, (long long)ls->applied_delta[i]);
        assert_true(ws.balance[i] >= 0);
    }
    assert_false(ws.bad_type);
    assert_true(ws.max_markers <= WW_WALLET_PLAN_MAX_MARKERS);
    print_message("invariants hold: %zu keys, %zu applied, %zu rejected\n", w->n_keys,
                  ls->applied, ls->rejected);
    assert_true(ls->applied > 0 && ls->rejected > 0); /* the workload exercises both */

    answered_t *a = calloc(1, sizeof *a);
    a->w = w;
    /* every key answered at least once (re-runs may answer twice) */
    h_read_topic(env, env->results_topic, COMMANDS * 3, 15000, mark_answered, a);
    for (size_t k = 0; k < w->n_keys; k++)
        if (!a->answered[k]) fail_msg("no result event for %s", w->keys[k]);
    free(a);
    free(ls);
    bson_destroy(&all);
}

static void test_wallet_faults_sigkill_mid_batch_keeps_invariants(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "kill");
    workload_t *w = calloc(1, sizeof *w);
    seed(&env, w);
    produce_workload(&env, w, 12345);
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    uint32_t s = 99;
    int kills = 0;
    /* small batches: many of them, so the kills land in the middle */
    const char *const small[] = {"BATCH_MAX=8", NULL};
    for (int round = 0; round < 4; round++) {
        pid_t pid = h_worker_start(&env, log, small);
        /* let it get partitions and work a little, then kill it mid-batch */
        int64_t before = h_count(&env, WW_TRANSACTIONS, NULL);
        int64_t deadline = h_now_ms() + 30000;
        while (h_now_ms() < deadline && h_count(&env, WW_TRANSACTIONS, NULL) < before + 20) h_sleep_ms(20);
        h_sleep_ms((int)(lcg(&s) % 150));
        assert_int_equal(h_worker_stop(pid, SIGKILL, 5000), 128 + SIGKILL);
        kills++;
        print_message("kill %d after ledger grew %lld -> %lld\n", kills, (long long)before,
                      (long long)h_count(&env, WW_TRANSACTIONS, NULL));
    }
    assert_true(h_count(&env, WW_TRANSACTIONS, NULL) < (int64_t)w->n_keys); /* killed before the end */
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(wait_ledger(&env, (int64_t)w->n_keys, 180000));
    h_sleep_ms(1500); /* let the last results be acknowledged */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    check_invariants(&env, w);
    free(w);
    h_env_destroy(&env);
}

typedef struct {
    char **keys;
    size_t n, cap;
    size_t orphans; /* markers whose key the ledger does not hold */
    size_t markers;
} orphan_scan_t;

static bool ledger_key(const bson_t *doc, void *ctx) {
    orphan_scan_t *o = ctx;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "idempotencyKey") || !BSON_ITER_HOLDS_UTF8(&it)) return true;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->keys = realloc(o->keys, o->cap * sizeof *o->keys);
    }
    o->keys[o->n++] = strdup(bson_iter_utf8(&it, NULL));
    return true;
}

static bool wallet_orphans(const bson_t *doc, void *ctx) {
    orphan_scan_t *o = ctx;
    bson_iter_t it, arr, m;
    if (!bson_iter_init_find(&it, doc, "pendingTransactions") || !bson_iter_recurse(&it, &arr))
        return true;
    while (bson_iter_next(&arr)) {
        if (!bson_iter_recurse(&arr, &m) || !bson_iter_find(&m, "idempotencyKey")) continue;
        const char *k = bson_iter_utf8(&m, NULL);
        o->markers++;
        bool found = false;
        for (size_t i = 0; i < o->n && !found; i++) found = strcmp(o->keys[i], k) == 0;
        if (!found) o->orphans++;
    }
    return true;
}

/* The crash window of a batch: killed right after the guarded bulk update,
 * before the insertMany (WW_FAULT_KILL_AFTER_BULK_UPDATE, a fault point in
 * wallet_batch.c). The wallets then hold markers whose ledger entries do not
 * exist; the next worker must complete them (no command applied twice, none
 * lost, every key answered). */
static void test_wallet_faults_sigkill_between_bulk_update_and_insert_many(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "window");
    workload_t *w = calloc(1, sizeof *w);
    seed(&env, w);
    produce_workload(&env, w, 4242);
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    for (int kill_after = 1; kill_after <= 3; kill_after++) {
        char fault[64];
        snprintf(fault, sizeof fault, "WW_FAULT_KILL_AFTER_BULK_UPDATE=%d", kill_after);
        const char *const extra[] = {fault, NULL};
        pid_t pid = h_worker_start(&env, log, extra);
        /* it kills itself: nothing else stops it */
        assert_int_equal(h_worker_stop(pid, 0, 60000), 128 + SIGKILL);
        orphan_scan_t *o = calloc(1, sizeof *o);
        bson_t all = BSON_INITIALIZER;
        ww_error_t err;
        assert_true(ww_db_find(env.db, WW_TRANSACTIONS, &all, NULL, ledger_key, o, &err));
        assert_true(ww_db_find(env.db, WW_WALLETS, &all, NULL, wallet_orphans, o, &err));
        print_message("killed after bulk update %d: %zu ledger entries, %zu markers, %zu of "
                      "them without their entry\n", kill_after, o->n, o->markers, o->orphans);
        assert_true(o->orphans > 0); /* the window really happened */
        for (size_t i = 0; i < o->n; i++) free(o->keys[i]);
        free(o->keys);
        free(o);
        bson_destroy(&all);
    }
    assert_true(h_count(&env, WW_TRANSACTIONS, NULL) < (int64_t)w->n_keys);
    pid_t pid = h_worker_start(&env, log, NULL);
    assert_true(wait_ledger(&env, (int64_t)w->n_keys, 180000));
    h_sleep_ms(1500); /* let the last results be acknowledged */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    assert_true(h_count_in_file(log, "completed an interrupted command") > 0);
    check_invariants(&env, w);
    free(w);
    h_env_destroy(&env);
}

/* Seeds the wallets, starts a worker (extra settings may be NULL), produces
 * the workload and waits until the ledger has some of it: a run in flight. */
static pid_t start_in_flight(h_env_t *env, workload_t *w, const char *log,
                             const char *const *extra, uint32_t seed_value) {
    seed(env, w);
    unlink(log);
    pid_t pid = h_worker_start(env, log, extra);
    assert_true(h_wait_http(env->http_port, "/readyz", 200, 30000));
    produce_workload(env, w, seed_value);
    int64_t deadline = h_now_ms() + 30000;
    while (h_now_ms() < deadline && h_count(env, WW_TRANSACTIONS, NULL) < 30) h_sleep_ms(20);
    return pid;
}

static void test_wallet_faults_database_down_10s_loses_nothing(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "dbdown");
    workload_t *w = calloc(1, sizeof *w);
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    pid_t pid = start_in_flight(&env, w, log, NULL, 777);

    assert_int_equal(h_stack(&env, "mongo-stop"), 0);
    int64_t stopped_at = h_now_ms();
    /* health turns 503 within serverSelectionTimeoutMS + heartbeat (documented: 10 s) */
    assert_true(h_wait_http(env.http_port, "/api/health", 503, 10000));
    print_message("health 503 after %lld ms\n", (long long)(h_now_ms() - stopped_at));
    char body[4096];
    assert_int_equal(h_http_get(env.http_port, "/api/health", body, sizeof body), 503);
    assert_non_null(strstr(body, "\"status\":\"degraded\""));
    assert_non_null(strstr(body, "\"readyState\":0"));
    assert_true(h_worker_alive(pid));
    while (h_now_ms() - stopped_at < 10000) h_sleep_ms(100);
    assert_int_equal(h_stack(&env, "mongo-start"), 0);

    assert_true(h_wait_http(env.http_port, "/api/health", 200, 30000));
    assert_true(wait_ledger(&env, (int64_t)w->n_keys, 180000));
    /* The outage is over once the log says so (a heartbeat after the
     * deployment has been writable for a few seconds: src/dbmon.h); wait for
     * that event instead of guessing how long it takes. */
    int64_t deadline = h_now_ms() + 60000;
    while (h_count_in_file(log, "module=db msg=reconnected") < 1 && h_now_ms() < deadline)
        h_sleep_ms(100);
    h_sleep_ms(1500);
    assert_true(h_worker_alive(pid)); /* waited it out, never exited */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    check_invariants(&env, w);
    /* One disconnected line and one reconnected line for this outage, on
     * every server: flaps inside the outage (an operation failing on the
     * dying server, a stale connection after the restart) stay inside it. */
    assert_int_equal(h_count_in_file(log, "disconnected (attempting reconnection)"), 1);
    assert_int_equal(h_count_in_file(log, "module=db msg=reconnected"), 1);
    free(w);
    h_env_destroy(&env);
}

/* A worker paused for backpressure (database down) whose partitions move
 * away while it is frozen (SIGSTOP past the session timeout: a zombie) and
 * come back later must fetch them again: librdkafka keeps a partition's
 * pause across revoke and re-assignment. Found by scripts/chaos.sh: the
 * partitions stalled for good (nothing lost, nothing committed past them). */
static void test_wallet_faults_zombie_gets_its_paused_partitions_back(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "zombie");
    workload_t *w = calloc(1, sizeof *w);
    seed(&env, w);
    char log1[256], log2[256], http2[64];
    snprintf(log1, sizeof log1, "/tmp/ww-it-%s.w1.log", env.run_id);
    snprintf(log2, sizeof log2, "/tmp/ww-it-%s.w2.log", env.run_id);
    snprintf(http2, sizeof http2, "HTTP_ADDR=127.0.0.1:%d", env.http_port + 1);
    unlink(log1);
    unlink(log2);
    pid_t w1 = h_worker_start(&env, log1, NULL);
    assert_true(h_wait_http(env.http_port, "/readyz", 200, 30000));
    /* backpressure: the database goes away, commands pile up, w1 pauses */
    assert_int_equal(h_stack(&env, "mongo-stop"), 0);
    produce_workload(&env, w, 4242);
    h_sleep_ms(3000);
    const char *second[] = {http2, NULL};
    pid_t w2 = h_worker_start(&env, log2, second);
    int64_t deadline = h_now_ms() + 30000;
    while (h_count_in_file(log2, "module=kafka msg=assigned") < 1 && h_now_ms() < deadline) h_sleep_ms(200);
    /* freeze w1 past the session timeout: w2 takes everything */
    kill(w1, SIGSTOP);
    deadline = h_now_ms() + 30000;
    int before = h_count_in_file(log2, "module=kafka msg=assigned");
    while (h_count_in_file(log2, "module=kafka msg=assigned") == before && h_now_ms() < deadline)
        h_sleep_ms(200);
    h_sleep_ms(1000);
    kill(w1, SIGCONT); /* the zombie wakes: its partitions are lost */
    h_sleep_ms(5000);  /* it rejoins and gets some back */
    /* w2 leaves: its partitions go back to w1, paused from before */
    assert_int_equal(h_worker_stop(w2, SIGTERM, 20000), 0);
    assert_int_equal(h_stack(&env, "mongo-start"), 0);
    assert_true(wait_ledger(&env, (int64_t)w->n_keys, 120000));
    h_sleep_ms(1500);
    assert_int_equal(h_worker_stop(w1, SIGTERM, 15000), 0);
    check_invariants(&env, w);
    free(w);
    h_env_destroy(&env);
}

/* The stack's own pid of the MongoDB-compatible server (stack.sh records it). */
static pid_t mongo_pid(void) {
    const char *dir = getenv("WW_STACK_DIR");
    assert_non_null(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/mongo.pid", dir);
    char *text = h_read_file(path);
    assert_non_null(text);
    pid_t pid = (pid_t)strtol(text, NULL, 10);
    free(text);
    assert_true(pid > 1);
    return pid;
}

/* SIGTERM while handlers are stuck inside database calls (the server frozen,
 * not refusing: calls wait for the socket timeout). The shutdown deadline
 * passes with work in flight; when the server thaws the handlers finish and
 * must not produce into a destroyed producer (use after free, caught by the
 * sanitizer build of this tier): the workers are joined first and their late
 * outputs dropped. A restart then finishes everything: nothing lost. */
static void test_wallet_faults_sigterm_with_handlers_inside_frozen_db(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "frozen");
    workload_t *w = calloc(1, sizeof *w);
    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    const char *extra[] = {"SHUTDOWN_TIMEOUT_MS=1000", NULL};
    pid_t pid = start_in_flight(&env, w, log, extra, 31337);

    pid_t mongo = mongo_pid();
    assert_int_equal(kill(mongo, SIGSTOP), 0);
    h_sleep_ms(1500); /* handlers are now waiting inside database calls */
    assert_int_equal(kill(pid, SIGTERM), 0);
    h_sleep_ms(4000); /* past the shutdown deadline: the bus goes next */
    assert_int_equal(kill(mongo, SIGCONT), 0);
    int status = h_worker_stop(pid, SIGTERM, 90000);
    assert_int_equal(status, 0);
    assert_true(h_count_in_file(log, "left uncommitted") == 1);

    pid = h_worker_start(&env, log, NULL);
    assert_true(wait_ledger(&env, (int64_t)w->n_keys, 180000));
    h_sleep_ms(1500); /* let the last results be acknowledged */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    check_invariants(&env, w);
    free(w);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wallet_faults_sigkill_mid_batch_keeps_invariants),
        cmocka_unit_test(test_wallet_faults_sigkill_between_bulk_update_and_insert_many),
        cmocka_unit_test(test_wallet_faults_database_down_10s_loses_nothing),
        cmocka_unit_test(test_wallet_faults_zombie_gets_its_paused_partitions_back),
        cmocka_unit_test(test_wallet_faults_sigterm_with_handlers_inside_frozen_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
