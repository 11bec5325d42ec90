/* test_wallet_plan.c: the pure wallet planner (wallet_plan.c), no servers.
 *
 * A small in-memory "database" (wallet documents and ledger entries as BSON)
 * and a shell that does what the batched I/O will do with a plan: apply the
 * guarded updates (a guard that no longer matches loses), insert the
 * entries (unique idempotencyKey), keep the results whose writes stood and
 * plan the rest again. On it:
 *   - a table of in-batch interactions, each with the outcome of every
 *     command after the first round and after completion, and the final
 *     balances;
 *   - crash windows (an orphaned marker, marker + entry, an existing entry),
 *     a lost decision undone, unusable data, a guard that lost, the marker
 *     budget, owners not read;
 *   - a property: for random batches, planning the batch gives the same
 *     outcomes, final balances and ledger as planning the commands one at a
 *     time, and as an independent model of the protocol's rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "wallet_plan.h"

#define OA "0000000000000000000000a1"
#define OB "0000000000000000000000b2"
#define OC "0000000000000000000000c3"
#define OD "0000000000000000000000d4"
#define NOW INT64_C(1798761599000)
#define MAXW 16
#define MAXL 1024
#define MAXC 256
#define TOPIC "wallet.commands"

/* ---- the in-memory database ------------------------------------------------------- */

typedef struct {
    bson_t wallets[MAXW];
    size_t n_wallets;
    bson_t ledger[MAXL];
    size_t n_ledger;
    uint32_t next_id;
    size_t max_markers_seen;
    int crashes;
} db_t;

static void gen_id(void *ctx, bson_oid_t *out) {
    db_t *db = ctx;
    uint8_t b[12] = {0xee, 0, 0, 0, 0, 0, 0, 0};
    uint32_t n = ++db->next_id;
    b[8] = (uint8_t)(n >> 24);
    b[9] = (uint8_t)(n >> 16);
    b[10] = (uint8_t)(n >> 8);
    b[11] = (uint8_t)n;
    bson_oid_init_from_data(out, b);
}

static db_t *db_new(void) {
    size_t bytes = (sizeof(db_t) + _Alignof(db_t) - 1) / _Alignof(db_t) * _Alignof(db_t);
    db_t *db = aligned_alloc(_Alignof(db_t), bytes); /* bson_t wants 128 bytes */
    assert_non_null(db);
    memset(db, 0, bytes);
    return db;
}

static void db_free(db_t *db) {
    for (size_t i = 0; i < db->n_wallets; i++) bson_destroy(&db->wallets[i]);
    for (size_t i = 0; i < db->n_ledger; i++) bson_destroy(&db->ledger[i]);
    free(db);
}

static void wallet_oid(int n, bson_oid_t *out) {
    char hex[25];
    snprintf(hex, sizeof hex, "ffffffffffffffff%08x", (unsigned)n);
    bson_oid_init_from_string(out, hex);
}

#define VERSION_NONE (-1) /* add_wallet: no version field */
#define VERSION_NULL (-2) /* add_wallet: version: null (the backend may write it) */

/* A wallet: id n, owner, balance (int64), version (VERSION_NONE / _NULL), deleted. */
static bson_t *add_wallet(db_t *db, int n, const char *owner, int64_t balance, int64_t version,
                          bool deleted) {
    assert_true(db->n_wallets < MAXW);
    bson_t *w = &db->wallets[db->n_wallets++];
    bson_oid_t id, own;
    wallet_oid(n, &id);
    bson_oid_init_from_string(&own, owner);
    bson_init(w);
    BSON_APPEND_OID(w, "_id", &id);
    BSON_APPEND_OID(w, "ownerUserId", &own);
    BSON_APPEND_INT64(w, "availablePaise", balance);
    if (version >= 0) BSON_APPEND_INT64(w, "version", version);
    if (version == VERSION_NULL) BSON_APPEND_NULL(w, "version");
    if (deleted)
        BSON_APPEND_DATE_TIME(w, "deletedAt", NOW - 1000);
    else
        BSON_APPEND_NULL(w, "deletedAt");
    return w;
}

static bson_t *find_wallet(db_t *db, const bson_oid_t *id) {
    for (size_t i = 0; i < db->n_wallets; i++) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, &db->wallets[i], "_id") && BSON_ITER_HOLDS_OID(&it) &&
            bson_oid_equal(bson_iter_oid(&it), id))
            return &db->wallets[i];
    }
    return NULL;
}

static int64_t wallet_balance(db_t *db, int n) {
    bson_oid_t id;
    wallet_oid(n, &id);
    bson_t *w = find_wallet(db, &id);
    assert_non_null(w);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, w, "availablePaise"));
    return bson_iter_as_int64(&it);
}

static size_t wallet_markers(const bson_t *w) {
    bson_iter_t it, arr;
    size_t n = 0;
    if (!bson_iter_init_find(&it, w, "pendingTransactions") || !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr)) n++;
    return n;
}

/* Replaces a wallet document by itself with the fields of $set set. */
static void apply_set(bson_t *w, const bson_t *update) {
    bson_iter_t it, set;
    assert_true(bson_iter_init_find(&it, update, "$set") && bson_iter_recurse(&it, &set));
    bson_t setdoc;
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    assert_true(bson_init_static(&setdoc, data, len));
    bson_t out = BSON_INITIALIZER;
    bson_iter_t old;
    assert_true(bson_iter_init(&old, w));
    while (bson_iter_next(&old)) {
        bson_iter_t probe;
        if (bson_iter_init_find(&probe, &setdoc, bson_iter_key(&old))) continue;
        bson_append_iter(&out, NULL, 0, &old);
    }
    while (bson_iter_next(&set)) bson_append_iter(&out, NULL, 0, &set);
    bson_destroy(w);
    bson_steal(w, &out);
}

static bool guard_matches(const bson_t *w, const bson_t *filter) {
    bson_iter_t f;
    assert_true(bson_iter_init(&f, filter));
    while (bson_iter_next(&f)) {
        const char *k = bson_iter_key(&f);
        bson_iter_t v;
        bool present = bson_iter_init_find(&v, w, k);
        if (BSON_ITER_HOLDS_NULL(&f)) {
            if (present && !BSON_ITER_HOLDS_NULL(&v)) return false;
        } else if (BSON_ITER_HOLDS_DATE_TIME(&f)) {
            if (!present || !BSON_ITER_HOLDS_DATE_TIME(&v) ||
                bson_iter_date_time(&v) != bson_iter_date_time(&f))
                return false;
        } else if (BSON_ITER_HOLDS_OID(&f)) {
            if (!present || !BSON_ITER_HOLDS_OID(&v) ||
                !bson_oid_equal(bson_iter_oid(&f), bson_iter_oid(&v)))
                return false;
        } else {
            if (!present || !BSON_ITER_HOLDS_NUMBER(&v) ||
                bson_iter_as_int64(&v) != bson_iter_as_int64(&f))
                return false;
            if (BSON_ITER_HOLDS_DOUBLE(&v) && (double)bson_iter_as_int64(&v) != bson_iter_double(&v))
                return false;
        }
    }
    return true;
}

static const bson_t *ledger_find(const db_t *db, const char *key) {
    for (size_t i = 0; i < db->n_ledger; i++) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, &db->ledger[i], "idempotencyKey") &&
            strcmp(bson_iter_utf8(&it, NULL), key) == 0)
            return &db->ledger[i];
    }
    return NULL;
}

/* Inserts under the unique index: *same when the stored entry is this one. */
static void ledger_insert(db_t *db, const bson_t *doc, bool *same) {
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, doc, "idempotencyKey"));
    const bson_t *old = ledger_find(db, bson_iter_utf8(&it, NULL));
    if (old) {
        bson_iter_t a, b;
        *same = bson_iter_init_find(&a, old, "_id") && bson_iter_init_find(&b, doc, "_id") &&
                bson_oid_equal(bson_iter_oid(&a), bson_iter_oid(&b));
        return;
    }
    assert_true(db->n_ledger < MAXL);
    bson_copy_to(doc, &db->ledger[db->n_ledger++]);
    *same = true;
}

/* ---- commands ----------------------------------------------------------------------- */

typedef struct {
    ww_command_t cmds[MAXC];
    ww_wallet_plan_input_t in[MAXC];
    size_t n;
} batch_t;

static size_t add_cmd(batch_t *b, char type, const char *key, const char *owner,
                      int64_t amount) {
    assert_true(b->n < MAXC);
    ww_command_t *c = &b->cmds[b->n];
    memset(c, 0, sizeof *c);
    c->type = type == 'd' ? WW_COMMAND_DEBIT : WW_COMMAND_CREDIT;
    snprintf(c->idempotency_key, sizeof c->idempotency_key, "%s", key);
    snprintf(c->owner_user_id, sizeof c->owner_user_id, "%s", owner);
    c->amount_paise = amount;
    ww_command_compute_fingerprint(c);
    b->in[b->n] = (ww_wallet_plan_input_t){c, TOPIC, 0, (int64_t)b->n};
    return b->n++;
}

/* ---- the shell ------------------------------------------------------------------------ */

typedef struct {
    bool done;
    ww_wallet_result_t r;
    bool dead_letter;
    int rounds; /* the round it was decided in (1 = first) */
} final_t;

typedef struct {
    const char *owners[8]; /* NULL-terminated; NULL list = every command's owner */
    bool lose_guard_of[8]; /* by index in owners: make that wallet's guard lose once */
} shell_opts_t;

/* Facts for cmds[idx[0..n)] from db: every ledger entry, every wallet of the
 * owners read (all the commands' owners unless `owners` says otherwise). */
static void make_facts(db_t *db, const batch_t *b, const size_t *idx, size_t n,
                       const char *const *owners, ww_wallet_plan_input_t *in,
                       const bson_t **ledger, const bson_t **wallets, const char **own,
                       ww_wallet_plan_facts_t *f) {
    size_t n_own = 0;
    for (size_t i = 0; i < n; i++) in[i] = b->in[idx[i]];
    if (owners) {
        for (; owners[n_own]; n_own++) own[n_own] = owners[n_own];
    } else {
        for (size_t i = 0; i < n; i++) {
            bool seen = false;
            for (size_t j = 0; j < n_own; j++)
                seen = seen || strcmp(own[j], in[i].cmd->owner_user_id) == 0;
            if (!seen) own[n_own++] = in[i].cmd->owner_user_id;
        }
    }
    size_t n_w = 0;
    for (size_t i = 0; i < db->n_wallets; i++) {
        bson_iter_t it;
        assert_true(bson_iter_init_find(&it, &db->wallets[i], "ownerUserId"));
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&it), hex);
        for (size_t j = 0; j < n_own; j++)
            if (strcmp(own[j], hex) == 0) wallets[n_w++] = &db->wallets[i];
    }
    for (size_t i = 0; i < db->n_ledger; i++) ledger[i] = &db->ledger[i];
    *f = (ww_wallet_plan_facts_t){.cmds = in, .n_cmds = n, .ledger = ledger,
                                  .n_ledger = db->n_ledger, .wallets = wallets,
                                  .n_wallets = n_w, .owners = own, .n_owners = n_own,
                                  .now_ms = NOW, .new_id = gen_id, .id_ctx = db};
}

/* Writes a plan as the batched shell would; matched[u] / stored[e] say what
 * stood. lose: indexes of updates made to lose (NULL: none). */
static void write_plan(db_t *db, const ww_wallet_plan_t *plan, const bool *lose, bool *matched,
                       bool *stored) {
    for (size_t u = 0; u < plan->n_updates; u++) {
        const ww_wallet_plan_update_t *up = &plan->updates[u];
        bson_oid_t id;
        bson_oid_init_from_string(&id, up->wallet_id);
        bson_t *w = find_wallet(db, &id);
        assert_non_null(w);
        matched[u] = !(lose && lose[u]) && guard_matches(w, &up->filter);
        if (!matched[u]) continue;
        apply_set(w, &up->update);
        size_t m = wallet_markers(w);
        assert_true(m <= WW_WALLET_PLAN_MAX_MARKERS);
        assert_int_equal(m, up->n_markers);
        if (m > db->max_markers_seen) db->max_markers_seen = m;
    }
    for (size_t e = 0; e < plan->n_inserts; e++) {
        stored[e] = false;
        int u = plan->inserts[e].update;
        if (u >= 0 && !matched[u]) continue;
        ledger_insert(db, &plan->inserts[e].doc, &stored[e]);
    }
}

/* Plans, writes and re-plans until every command is decided (or max_rounds
 * ran). Returns the number of rounds. */
static uint32_t rnd(uint32_t n);
static int crash_one_in; /* > 0: a round crashes with probability 1/crash_one_in */

static int run(db_t *db, const batch_t *b, const size_t *idx0, size_t n0, final_t *out,
               const char *const *owners, int max_rounds) {
    size_t idx[MAXC], n = n0;
    memcpy(idx, idx0, n0 * sizeof idx[0]);
    int round = 0;
    while (n > 0 && round < max_rounds) {
        round++;
        ww_wallet_plan_input_t in[MAXC];
        const bson_t *ledger[MAXL], *wallets[MAXW];
        const char *own[MAXC];
        ww_wallet_plan_facts_t f;
        make_facts(db, b, idx, n, owners, in, ledger, wallets, own, &f);
        ww_wallet_plan_t plan;
        ww_error_t err;
        ww_error_clear(&err);
        if (!ww_wallet_plan(&f, &plan, &err)) fail_msg("plan failed: %s", err.message);
        assert_int_equal(plan.n_results, n);
        assert_int_equal(plan.n_decided + plan.n_deferred + plan.n_retry, n);
        bool matched[MAXC + 8] = {0}, stored[MAXL] = {0};
        assert_true(plan.n_updates <= MAXC && plan.n_inserts <= MAXL);
        if (crash_one_in > 0 && rnd((uint32_t)crash_one_in) == 0) {
            /* the worker dies after the bulk update, part-way through the
             * insertMany, before any result: everything is redelivered */
            size_t keep = plan.n_inserts ? rnd((uint32_t)plan.n_inserts + 1) : 0;
            for (size_t u = 0; u < plan.n_updates; u++) {
                bson_oid_t id;
                bson_oid_init_from_string(&id, plan.updates[u].wallet_id);
                bson_t *w = find_wallet(db, &id);
                if (guard_matches(w, &plan.updates[u].filter)) apply_set(w, &plan.updates[u].update);
            }
            for (size_t e = 0; e < keep; e++) {
                bool same;
                ledger_insert(db, &plan.inserts[e].doc, &same);
            }
            ww_wallet_plan_destroy(&plan);
            db->crashes++;
            continue;
        }
        write_plan(db, &plan, NULL, matched, stored);
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            const ww_wallet_plan_result_t *r = &plan.results[i];
            bool final = r->status == WW_WALLET_PLAN_DECIDED &&
                         (r->update < 0 || matched[r->update]) && (r->entry < 0 || stored[r->entry]);
            if (r->status == WW_WALLET_PLAN_RETRY) fail_msg("retry: %s", r->reason);
            if (final) {
                out[idx[i]].done = true;
                out[idx[i]].r = r->result;
                out[idx[i]].dead_letter = r->dead_letter;
                out[idx[i]].rounds = round;
            } else {
                idx[left++] = idx[i];
            }
        }
        n = left;
        ww_wallet_plan_destroy(&plan);
    }
    return round;
}

static int run_all(db_t *db, const batch_t *b, final_t *out) {
    size_t idx[MAXC];
    for (size_t i = 0; i < b->n; i++) idx[i] = i;
    return run(db, b, idx, b->n, out, NULL, 100);
}

/* One command at a time, in order. */
static void run_one_by_one(db_t *db, const batch_t *b, final_t *out) {
    for (size_t i = 0; i < b->n; i++) {
        int rounds = run(db, b, &i, 1, out, NULL, 100);
        assert_int_equal(rounds, 1);
        assert_true(out[i].done);
    }
}

/* One plan, nothing written: for looking at a single round. */
static void plan_once(db_t *db, const batch_t *b, const char *const *owners,
                      ww_wallet_plan_t *plan) {
    size_t idx[MAXC];
    for (size_t i = 0; i < b->n; i++) idx[i] = i;
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, b, idx, b->n, owners, in, ledger, wallets, own, &f);
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_wallet_plan(&f, plan, &err)) fail_msg("plan failed: %s", err.message);
}

static const char *status_of(const ww_wallet_plan_result_t *r) {
    if (r->status != WW_WALLET_PLAN_DECIDED) return ww_wallet_plan_status_name(r->status);
    return ww_outcome_name(r->result.outcome);
}

/* ---- the table: in-batch interactions ----------------------------------------------- */

typedef struct {
    int n;             /* wallet id; 0 ends the list */
    const char *owner;
    int64_t balance;
    bool deleted;
} wspec_t;

typedef struct {
    char type; /* 'd' debit, 'c' credit; 0 ends the list */
    const char *key;
    const char *owner;
    int64_t amount;
} cspec_t;

typedef struct {
    const char *name;
    wspec_t wallets[4];
    cspec_t cmds[8];
    const char *round1[8]; /* first round: an outcome, or "deferred" */
    const char *final[8];  /* after completion: outcome */
    const char *original[8]; /* duplicate / conflict: the key's first outcome (NULL: n/a) */
    int64_t balances[4];   /* final, per wallet above */
} case_t;

static const case_t CASES[] = {
    {"same key twice: the second is a duplicate",
     {{1, OA, 100, false}},
     {{'d', "k1", OA, 30}, {'d', "k1", OA, 30}},
     {"applied", "duplicate"},
     {"applied", "duplicate"},
     {NULL, "applied"},
     {70}},
    {"same key, different payload: conflict, nothing changes",
     {{1, OA, 100, false}},
     {{'d', "k1", OA, 30}, {'d', "k1", OA, 31}, {'c', "k1", OA, 30}},
     {"applied", "conflict", "conflict"},
     {"applied", "conflict", "conflict"},
     {NULL, "applied", "applied"},
     {70}},
    {"a debit made affordable by a credit earlier in the batch (one round later)",
     {{1, OA, 10, false}},
     {{'c', "k1", OA, 50}, {'d', "k2", OA, 40}},
     {"applied", "deferred"},
     {"applied", "applied"},
     {NULL, NULL},
     {20}},
    {"an insufficient debit, then an affordable one",
     {{1, OA, 100, false}},
     {{'d', "k1", OA, 150}, {'d', "k2", OA, 60}},
     {"insufficient_funds", "applied"},
     {"insufficient_funds", "applied"},
     {NULL, NULL},
     {40}},
    {"a rejection is final: the same key after a credit stays insufficient",
     {{1, OA, 10, false}},
     {{'d', "k1", OA, 50}, {'c', "k2", OA, 100}, {'d', "k1", OA, 50}},
     {"insufficient_funds", "applied", "duplicate"},
     {"insufficient_funds", "applied", "duplicate"},
     {NULL, NULL, "insufficient_funds"},
     {110}},
    {"several owners, each on its own wallet",
     {{1, OA, 100, false}, {2, OB, 5, false}, {3, OC, 0, false}},
     {{'d', "k1", OA, 30}, {'d', "k2", OB, 30}, {'c', "k3", OC, 7}, {'d', "k4", OA, 70},
      {'c', "k5", OB, 1}},
     {"applied", "insufficient_funds", "applied", "applied", "applied"},
     {"applied", "insufficient_funds", "applied", "applied", "applied"},
     {NULL},
     {0, 6, 7}},
    {"wallet_not_found next to applied commands",
     {{1, OA, 100, false}},
     {{'d', "k1", OA, 30}, {'c', "k2", OD, 30}, {'c', "k3", OA, 5}, {'c', "k2", OD, 30}},
     {"applied", "wallet_not_found", "applied", "duplicate"},
     {"applied", "wallet_not_found", "applied", "duplicate"},
     {NULL, NULL, NULL, "wallet_not_found"},
     {75}},
    {"a soft-deleted wallet is not found; the live one is used",
     {{1, OB, 500, true}, {2, OB, 20, false}, {3, OC, 900, true}},
     {{'d', "k1", OB, 20}, {'d', "k2", OC, 1}},
     {"applied", "wallet_not_found"},
     {"applied", "wallet_not_found"},
     {NULL},
     {500, 0, 900}},
    {"one key for two owners: the second is a conflict",
     {{1, OA, 100, false}, {2, OB, 100, false}},
     {{'d', "k1", OA, 10}, {'d', "k1", OB, 10}, {'d', "k2", OB, 10}},
     {"applied", "conflict", "applied"},
     {"applied", "conflict", "applied"},
     {NULL, "applied"},
     {90, 90}},
    {"a debit after a debit that drains: decided once the first is in the ledger",
     {{1, OA, 100, false}},
     {{'d', "k1", OA, 60}, {'d', "k2", OA, 50}, {'d', "k3", OA, 40}},
     {"applied", "deferred", "deferred"},
     {"applied", "insufficient_funds", "applied"},
     {NULL},
     {0}},
    {"a credit past 2^53-1 is invalid and recorded",
     {{1, OA, INT64_C(9007199254740990), false}},
     {{'c', "k1", OA, 1}, {'c', "k2", OA, 5}},
     {"applied", "invalid"},
     {"applied", "invalid"},
     {NULL},
     {INT64_C(9007199254740991)}},
};

static void test_wallet_plan_table_of_in_batch_interactions(void **state) {
    (void)state;
    int failures = 0;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const case_t *tc = &CASES[c];
        db_t *db = db_new();
        static batch_t b;
        b.n = 0;
        for (size_t i = 0; i < 4 && tc->wallets[i].n; i++)
            add_wallet(db, tc->wallets[i].n, tc->wallets[i].owner, tc->wallets[i].balance, 1,
                       tc->wallets[i].deleted);
        for (size_t i = 0; i < 8 && tc->cmds[i].type; i++)
            add_cmd(&b, tc->cmds[i].type, tc->cmds[i].key, tc->cmds[i].owner,
                    tc->cmds[i].amount);
        ww_wallet_plan_t plan;
        plan_once(db, &b, NULL, &plan);
        for (size_t i = 0; i < b.n; i++) {
            if (strcmp(status_of(&plan.results[i]), tc->round1[i]) != 0) {
                print_error("%s: command %zu round 1: got %s, want %s\n", tc->name, i,
                            status_of(&plan.results[i]), tc->round1[i]);
                failures++;
            }
        }
        ww_wallet_plan_destroy(&plan);
        final_t out[MAXC];
        memset(out, 0, sizeof out);
        run_all(db, &b, out);
        for (size_t i = 0; i < b.n; i++) {
            const char *got = out[i].done ? ww_outcome_name(out[i].r.outcome) : "undecided";
            if (strcmp(got, tc->final[i]) != 0) {
                print_error("%s: command %zu: got %s, want %s\n", tc->name, i, got, tc->final[i]);
                failures++;
            }
            if (tc->original[i] && strcmp(ww_outcome_name(out[i].r.original), tc->original[i])) {
                print_error("%s: command %zu: original %s, want %s\n", tc->name, i,
                            ww_outcome_name(out[i].r.original), tc->original[i]);
                failures++;
            }
        }
        for (size_t i = 0; i < 4 && tc->wallets[i].n; i++) {
            int64_t got = wallet_balance(db, tc->wallets[i].n);
            if (got != tc->balances[i]) {
                print_error("%s: wallet %d balance %lld, want %lld\n", tc->name,
                            tc->wallets[i].n, (long long)got, (long long)tc->balances[i]);
                failures++;
            }
        }
        /* and the same as one at a time */
        db_t *seq = db_new();
        for (size_t i = 0; i < 4 && tc->wallets[i].n; i++)
            add_wallet(seq, tc->wallets[i].n, tc->wallets[i].owner, tc->wallets[i].balance, 1,
                       tc->wallets[i].deleted);
        final_t one[MAXC];
        memset(one, 0, sizeof one);
        run_one_by_one(seq, &b, one);
        for (size_t i = 0; i < b.n; i++) {
            if (one[i].r.outcome != out[i].r.outcome) {
                print_error("%s: command %zu: batch %s, one by one %s\n", tc->name, i,
                            ww_outcome_name(out[i].r.outcome), ww_outcome_name(one[i].r.outcome));
                failures++;
            }
        }
        db_free(seq);
        db_free(db);
    }
    assert_int_equal(failures, 0);
}

/* ---- the guarded update of one wallet, and what it carries -------------------------- */

static void test_wallet_plan_one_guarded_update_per_wallet(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 100, 7, false);
    add_cmd(&b, 'd', "k1", OA, 30);
    add_cmd(&b, 'c', "k2", OA, 5);
    add_cmd(&b, 'd', "k3", OA, 500);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.n_inserts, 3);
    assert_int_equal(plan.n_decided, 3);
    const ww_wallet_plan_update_t *u = &plan.updates[0];
    assert_int_equal(u->n_decisions, 3);
    assert_int_equal(u->n_markers, 3);
    assert_int_equal(u->balance_before, 100);
    assert_int_equal(u->balance_after, 75);
    assert_int_equal(u->version_after, 8);
    /* the guard: exact version and balance, live */
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &u->filter, "version") && bson_iter_int64(&it) == 7);
    assert_true(bson_iter_init_find(&it, &u->filter, "availablePaise") &&
                bson_iter_int64(&it) == 100);
    assert_true(bson_iter_init_find(&it, &u->filter, "deletedAt") && BSON_ITER_HOLDS_NULL(&it));
    /* every insert is its marker, needs the update, and reports its balance */
    int64_t want_after[3] = {70, 75, 75};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(plan.results[i].update, 0);
        assert_int_equal(plan.results[i].entry, (int)i);
        assert_int_equal(plan.inserts[i].update, 0);
        assert_false(plan.inserts[i].orphan);
        assert_true(plan.results[i].result.has_balance);
        assert_int_equal(plan.results[i].result.balance_after_paise, want_after[i]);
        assert_true(plan.results[i].result.has_transaction);
        assert_string_equal(plan.results[i].result.wallet_id, u->wallet_id);
    }
    assert_int_equal(plan.results[2].result.outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    assert_string_equal(plan.results[2].result.error_code, "insufficient_funds");
    bool matched[1], stored[3];
    write_plan(db, &plan, NULL, matched, stored);
    assert_true(matched[0] && stored[0] && stored[1] && stored[2]);
    /* the markers in the wallet are the ledger entries, byte for byte */
    bson_iter_t arr;
    bson_oid_t wid;
    wallet_oid(1, &wid);
    assert_true(bson_iter_init_find(&it, find_wallet(db, &wid), "pendingTransactions"));
    assert_true(bson_iter_recurse(&it, &arr));
    for (size_t i = 0; i < 3; i++) {
        assert_true(bson_iter_next(&arr));
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&arr, &len, &data);
        assert_int_equal(len, plan.inserts[i].doc.len);
        assert_memory_equal(data, bson_get_data(&plan.inserts[i].doc), len);
    }
    ww_wallet_plan_destroy(&plan);

    /* the next batch prunes them (their entries are in the ledger) */
    b.n = 0;
    add_cmd(&b, 'c', "k4", OA, 1);
    plan_once(db, &b, NULL, &plan);
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.updates[0].n_markers, 1);
    assert_int_equal(plan.updates[0].balance_after, 76);
    ww_wallet_plan_destroy(&plan);
    ww_wallet_plan_destroy(&plan); /* idempotent */
    ww_wallet_plan_destroy(NULL);
    db_free(db);
}

/* ---- crash windows: redelivery after a crash ------------------------------------------ */

/* Plans and writes k1 (debit 30 on OA), optionally losing the entry (a
 * crash between the update and the insertMany). */
static void decide_then_crash(db_t *db, batch_t *b, bool write_entry) {
    size_t idx = add_cmd(b, 'd', "k1", OA, 30);
    ww_wallet_plan_t plan;
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, b, &idx, 1, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    bool stored[1];
    bson_oid_t id;
    bson_oid_init_from_string(&id, plan.updates[0].wallet_id);
    apply_set(find_wallet(db, &id), &plan.updates[0].update);
    if (write_entry) ledger_insert(db, &plan.inserts[0].doc, &stored[0]);
    ww_wallet_plan_destroy(&plan);
}

/* Plans cmds[idx[0..n)] and applies only the updates: a crash before the
 * insertMany leaves their markers orphaned. */
static void crash_after_update(db_t *db, const batch_t *b, const size_t *idx, size_t n) {
    ww_wallet_plan_t plan;
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, b, idx, n, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    for (size_t u = 0; u < plan.n_updates; u++) {
        bson_oid_t id;
        bson_oid_init_from_string(&id, plan.updates[u].wallet_id);
        apply_set(find_wallet(db, &id), &plan.updates[u].update);
    }
    ww_wallet_plan_destroy(&plan);
}

static void test_wallet_plan_orphans_are_pending_and_use_the_marker_budget(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 100, 1, false);
    size_t k1 = add_cmd(&b, 'c', "k1", OA, 50);
    crash_after_update(db, &b, &k1, 1);
    assert_int_equal(wallet_balance(db, 1), 150);
    add_cmd(&b, 'c', "k1", OA, 50);
    add_cmd(&b, 'd', "k7", OA, 120); /* needs k1's 50, whose entry is not written yet */
    ww_wallet_plan_t plan;
    size_t idx[2] = {1, 2};
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, &b, idx, 2, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_string_equal(status_of(&plan.results[1]), "deferred");
    ww_wallet_plan_destroy(&plan);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    assert_int_equal(run(db, &b, idx, 2, out, NULL, 10), 2);
    assert_int_equal(out[2].r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(wallet_balance(db, 1), 30);
    db_free(db);

    /* 40 orphans on a wallet leave room for 24 new markers this round */
    db = db_new();
    b.n = 0;
    add_wallet(db, 1, OA, 0, 1, false);
    size_t first[40];
    char key[32];
    for (size_t i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "o%zu", i);
        first[i] = add_cmd(&b, 'c', key, OA, 1);
    }
    crash_after_update(db, &b, first, WW_WALLET_PLAN_PER_WALLET);
    crash_after_update(db, &b, first + WW_WALLET_PLAN_PER_WALLET, 40 - WW_WALLET_PLAN_PER_WALLET);
    size_t next[40];
    for (size_t i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "n%zu", i);
        next[i] = add_cmd(&b, 'c', key, OA, 1);
    }
    make_facts(db, &b, next, 40, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_int_equal(plan.n_decided, WW_WALLET_PLAN_MAX_MARKERS - 40);
    assert_int_equal(plan.updates[0].n_markers, WW_WALLET_PLAN_MAX_MARKERS);
    assert_int_equal(plan.n_inserts, 40 + WW_WALLET_PLAN_MAX_MARKERS - 40);
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

static void test_wallet_plan_orphaned_marker_is_completed_and_reported(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 100, 1, false);
    decide_then_crash(db, &b, false);
    assert_int_equal(wallet_balance(db, 1), 70);
    assert_int_equal(db->n_ledger, 0);
    /* redelivery: k1 again, k1 once more, then new commands */
    add_cmd(&b, 'd', "k1", OA, 30);
    add_cmd(&b, 'd', "k1", OA, 30);
    add_cmd(&b, 'd', "k2", OA, 20);
    add_cmd(&b, 'd', "k3", OA, 60); /* insufficient only if k1 and k2 stand: waits */
    ww_wallet_plan_t plan;
    size_t idx[4] = {1, 2, 3, 4};
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, &b, idx, 4, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "applied"); /* its first report */
    assert_string_equal(status_of(&plan.results[1]), "duplicate");
    assert_string_equal(status_of(&plan.results[2]), "applied");
    assert_string_equal(status_of(&plan.results[3]), "deferred");
    /* the orphan's entry is the marker itself, inserted whatever the update does */
    assert_int_equal(plan.results[0].entry, 0);
    assert_int_equal(plan.results[0].update, -1);
    assert_true(plan.inserts[0].orphan);
    assert_int_equal(plan.inserts[0].update, -1);
    /* the orphan stays until a later round sees its entry */
    assert_int_equal(plan.updates[0].n_markers, 2);
    assert_int_equal(plan.updates[0].balance_after, 50);
    ww_wallet_plan_destroy(&plan);
    db_free(db);

    /* a new command first: today it would complete the orphan before
     * deciding, so the redelivered k1 is then a duplicate */
    db = db_new();
    b.n = 0;
    add_wallet(db, 1, OA, 100, 1, false);
    decide_then_crash(db, &b, false);
    add_cmd(&b, 'c', "k9", OA, 1);
    add_cmd(&b, 'd', "k1", OA, 30);
    size_t idx2[2] = {1, 2};
    make_facts(db, &b, idx2, 2, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_string_equal(status_of(&plan.results[1]), "duplicate");
    assert_int_equal(plan.results[1].result.original, WW_OUTCOME_APPLIED);
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

static void test_wallet_plan_existing_entry_answers_without_a_wallet(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 100, 1, false);
    decide_then_crash(db, &b, true); /* marker + entry: crashed before the result */
    add_cmd(&b, 'd', "k1", OA, 30);
    add_cmd(&b, 'd', "k1", OA, 31);
    /* the owner's wallets not read: the ledger answers alone */
    const char *none[] = {NULL};
    size_t idx[2] = {1, 2};
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, &b, idx, 2, none, in, ledger, wallets, own, &f);
    ww_wallet_plan_t plan;
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "duplicate");
    assert_int_equal(plan.results[0].result.original, WW_OUTCOME_APPLIED);
    assert_true(plan.results[0].result.has_balance);
    assert_int_equal(plan.results[0].result.balance_after_paise, 70);
    assert_string_equal(status_of(&plan.results[1]), "conflict");
    assert_false(plan.results[1].result.has_transaction);
    assert_int_equal(plan.results[1].result.amount_paise, 31);
    assert_int_equal(plan.n_updates, 0);
    assert_int_equal(plan.n_inserts, 0);
    ww_wallet_plan_destroy(&plan);

    /* a new key of an owner not read is deferred, not wallet_not_found */
    add_cmd(&b, 'd', "k2", OA, 1);
    size_t idx2[2] = {3, 1};
    make_facts(db, &b, idx2, 2, none, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "deferred");
    assert_string_equal(status_of(&plan.results[1]), "duplicate");
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

/* ---- the ledger wins: a lost decision is undone in the wallet's update ------------------ */

/* Wallet 1 of OA (balance 100) holds a marker for k1 (credit 40, applied:
 * balance 140), but another worker had recorded k1 wallet_not_found first
 * (the owner had no wallet then): the marker lost the ledger race. k1 is
 * command 0 of b. */
static void lost_credit_marker(db_t *db, batch_t *b) {
    add_wallet(db, 1, OA, 100, 1, false);
    size_t c0 = add_cmd(b, 'c', "k1", OA, 40);
    {
        ww_wallet_plan_t plan;
        static ww_wallet_plan_input_t in[MAXC];
        static const bson_t *ledger[MAXL], *wallets[MAXW];
        static const char *own[MAXC];
        ww_wallet_plan_facts_t f;
        make_facts(db, b, &c0, 1, NULL, in, ledger, wallets, own, &f);
        assert_true(ww_wallet_plan(&f, &plan, NULL));
        bson_oid_t id;
        bson_oid_init_from_string(&id, plan.updates[0].wallet_id);
        apply_set(find_wallet(db, &id), &plan.updates[0].update);
        ww_wallet_plan_destroy(&plan);
        /* the other worker's entry, as planned with no wallet */
        db_t *empty = db_new();
        make_facts(empty, b, &c0, 1, NULL, in, ledger, wallets, own, &f);
        f.id_ctx = db;
        assert_true(ww_wallet_plan(&f, &plan, NULL));
        assert_int_equal(plan.results[0].result.outcome, WW_OUTCOME_WALLET_NOT_FOUND);
        bool same;
        ledger_insert(db, &plan.inserts[0].doc, &same);
        ww_wallet_plan_destroy(&plan);
        db_free(empty);
    }
    assert_int_equal(wallet_balance(db, 1), 140);
}

static void test_wallet_plan_lost_marker_is_undone(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    lost_credit_marker(db, &b);
    add_cmd(&b, 'c', "k1", OA, 40);
    add_cmd(&b, 'd', "k2", OA, 120);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    size_t idx[2] = {1, 2};
    ww_wallet_plan_t plan;
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    /* an undo alone (no decision on the wallet) is an update too */
    make_facts(db, &b, idx, 1, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "duplicate");
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.updates[0].n_decisions, 0);
    assert_int_equal(plan.updates[0].n_undone, 1);
    assert_int_equal(plan.updates[0].balance_after, 100);
    assert_false(plan.updates[0].undo_below_zero);
    assert_int_equal(plan.updates[0].n_markers, 0);
    ww_wallet_plan_destroy(&plan);
    make_facts(db, &b, idx, 2, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "duplicate");
    assert_int_equal(plan.results[0].result.original, WW_OUTCOME_WALLET_NOT_FOUND);
    /* the 40 never existed: 100 < 120 */
    assert_string_equal(status_of(&plan.results[1]), "insufficient_funds");
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.updates[0].n_undone, 1);
    assert_int_equal(plan.updates[0].balance_after, 100);
    assert_int_equal(plan.updates[0].n_markers, 1); /* k1's marker dropped, k2's added */
    ww_wallet_plan_destroy(&plan);
    run(db, &b, idx, 2, out, NULL, 10);
    assert_int_equal(wallet_balance(db, 1), 100);
    assert_int_equal(out[2].r.outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    db_free(db);
}

/* A lost credit that another writer (the Node backend, which knows nothing of
 * markers) spent before the undo: the ledger's outcome stands, as a reversal
 * would, and the balance goes below zero by what was spent; the worker's own
 * decisions never build on it (the debit after it is insufficient). The
 * shell logs it as an error (wallet_batch.c, wallet.c). */
static void test_wallet_plan_lost_credit_spent_elsewhere_is_reversed(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    lost_credit_marker(db, &b);
    { /* the backend spends 130 of the 140: $inc -130, version + 1 */
        bson_oid_t id;
        wallet_oid(1, &id);
        bson_t *set = BCON_NEW("$set", "{", "availablePaise", BCON_INT64(10), "version",
                               BCON_INT64(3), "}");
        apply_set(find_wallet(db, &id), set);
        bson_destroy(set);
    }
    add_cmd(&b, 'c', "k1", OA, 40);
    add_cmd(&b, 'd', "k2", OA, 5);
    ww_wallet_plan_t plan;
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    size_t idx[2] = {1, 2};
    make_facts(db, &b, idx, 2, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "duplicate");
    assert_string_equal(status_of(&plan.results[1]), "insufficient_funds");
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.updates[0].n_undone, 1);
    assert_int_equal(plan.updates[0].balance_before, 10);
    assert_int_equal(plan.updates[0].balance_after, -30);
    assert_true(plan.updates[0].undo_below_zero); /* the shell's error line */
    ww_wallet_plan_destroy(&plan);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    run(db, &b, idx, 2, out, NULL, 10);
    assert_int_equal(wallet_balance(db, 1), -30);
    assert_int_equal(out[2].r.outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    db_free(db);
}

/* The batch's own decision loses the ledger race after a debit was planned on
 * top of it: the debit had waited, so the undo cannot take the balance below
 * zero, and the debit is decided on the money that really exists. */
static void test_wallet_plan_lost_entry_never_leaves_a_negative_balance(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 10, 1, false);
    add_cmd(&b, 'c', "k1", OA, 50);
    add_cmd(&b, 'd', "k2", OA, 40);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_string_equal(status_of(&plan.results[1]), "deferred");
    /* meanwhile another worker, which saw no wallet, records k1 */
    {
        db_t *empty = db_new();
        size_t c0 = 0;
        ww_wallet_plan_t other;
        static ww_wallet_plan_input_t in[MAXC];
        static const bson_t *ledger[MAXL], *wallets[MAXW];
        static const char *own[MAXC];
        ww_wallet_plan_facts_t f;
        make_facts(empty, &b, &c0, 1, NULL, in, ledger, wallets, own, &f);
        f.id_ctx = db;
        assert_true(ww_wallet_plan(&f, &other, NULL));
        bool same;
        ledger_insert(db, &other.inserts[0].doc, &same);
        ww_wallet_plan_destroy(&other);
        db_free(empty);
    }
    bool matched[1], stored[1];
    write_plan(db, &plan, NULL, matched, stored);
    assert_true(matched[0]);
    assert_false(stored[0]); /* the entry lost: k1's result is not final */
    assert_int_equal(plan.results[0].entry, 0);
    ww_wallet_plan_destroy(&plan);
    assert_int_equal(wallet_balance(db, 1), 60);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    size_t idx[2] = {0, 1};
    run(db, &b, idx, 2, out, NULL, 10);
    assert_int_equal(out[0].r.outcome, WW_OUTCOME_DUPLICATE);
    assert_int_equal(out[0].r.original, WW_OUTCOME_WALLET_NOT_FOUND);
    assert_int_equal(out[1].r.outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    assert_int_equal(wallet_balance(db, 1), 10);
    db_free(db);
}

/* OA's wallet 1 holds a marker for k1 (credit 40) that lost the ledger race
 * (k1 is wallet_not_found there), and was soft-deleted since; wallet 2 is
 * OA's live one. deleted_balance: wallet 1's balance when it was deleted. */
static void lost_marker_on_deleted_wallet(db_t *db, batch_t *b, int64_t deleted_balance) {
    add_wallet(db, 1, OA, 100, 1, false);
    size_t c0 = add_cmd(b, 'c', "k1", OA, 40);
    crash_after_update(db, b, &c0, 1);
    {
        db_t *empty = db_new();
        ww_wallet_plan_t other;
        static ww_wallet_plan_input_t in[MAXC];
        static const bson_t *ledger[MAXL], *wallets[MAXW];
        static const char *own[MAXC];
        ww_wallet_plan_facts_t f;
        make_facts(empty, b, &c0, 1, NULL, in, ledger, wallets, own, &f);
        f.id_ctx = db;
        assert_true(ww_wallet_plan(&f, &other, NULL));
        bool same;
        ledger_insert(db, &other.inserts[0].doc, &same);
        ww_wallet_plan_destroy(&other);
        db_free(empty);
    }
    bson_oid_t id;
    wallet_oid(1, &id);
    bson_t set = BSON_INITIALIZER, upd = BSON_INITIALIZER;
    BSON_APPEND_DATE_TIME(&set, "deletedAt", NOW);
    BSON_APPEND_INT64(&set, "availablePaise", deleted_balance);
    BSON_APPEND_DOCUMENT(&upd, "$set", &set);
    apply_set(find_wallet(db, &id), &upd);
    bson_destroy(&set);
    bson_destroy(&upd);
    add_wallet(db, 2, OA, 5, 1, false);
    add_cmd(b, 'c', "k2", OA, 1);
    add_cmd(b, 'c', "k1", OA, 40);
    add_cmd(b, 'c', "k3", OB, 1);
}

/* A lost decision on a wallet deleted since: the ledger wins there too. The
 * deleted wallet gets its own guarded update (its exact version, balance and
 * deletedAt) giving the 40 back and dropping the marker; the owner's other
 * commands are decided as usual (was: the owner retried forever, as no
 * guarded update requiring deletedAt: null could ever undo it). */
static void test_wallet_plan_lost_marker_on_deleted_wallet_is_undone_there(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    lost_marker_on_deleted_wallet(db, &b, 140);
    ww_wallet_plan_t plan;
    size_t idx[3] = {1, 2, 3};
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, &b, idx, 3, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_string_equal(status_of(&plan.results[1]), "duplicate");
    assert_int_equal(plan.results[1].result.original, WW_OUTCOME_WALLET_NOT_FOUND);
    assert_string_equal(status_of(&plan.results[2]), "wallet_not_found"); /* OB has none */
    assert_int_equal(plan.n_retry, 0);
    assert_int_equal(plan.n_stuck, 0);
    assert_int_equal(plan.n_updates, 2);
    bson_oid_t w1;
    wallet_oid(1, &w1);
    char w1hex[25];
    bson_oid_to_string(&w1, w1hex);
    const ww_wallet_plan_update_t *undo = NULL;
    for (size_t u = 0; u < plan.n_updates; u++)
        if (strcmp(plan.updates[u].wallet_id, w1hex) == 0) undo = &plan.updates[u];
    assert_non_null(undo);
    assert_int_equal(undo->n_decisions, 0);
    assert_int_equal(undo->n_undone, 1);
    assert_int_equal(undo->balance_after, 100);
    assert_int_equal(undo->n_markers, 0);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &undo->filter, "deletedAt") &&
                BSON_ITER_HOLDS_DATE_TIME(&it) && bson_iter_date_time(&it) == NOW);
    ww_wallet_plan_destroy(&plan);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    run(db, &b, idx, 3, out, NULL, 10);
    assert_int_equal(wallet_balance(db, 1), 100); /* the 40 never existed */
    assert_int_equal(wallet_balance(db, 2), 6);
    assert_int_equal(wallet_markers(find_wallet(db, &w1)), 0);
    /* nothing left to undo: a later batch plans no update for wallet 1 */
    make_facts(db, &b, idx, 3, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    for (size_t u = 0; u < plan.n_updates; u++)
        assert_string_not_equal(plan.updates[u].wallet_id, w1hex);
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

/* The same, but the backend moved the money out when it deleted the wallet
 * (balance 0): giving the credit back would take it below zero. The marker
 * is left for an operator (plan.stuck, logged by the shell) and blocks
 * nothing. */
static void test_wallet_plan_lost_marker_on_drained_deleted_wallet_is_left(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    lost_marker_on_deleted_wallet(db, &b, 0);
    ww_wallet_plan_t plan;
    size_t idx[3] = {1, 2, 3};
    static ww_wallet_plan_input_t in[MAXC];
    static const bson_t *ledger[MAXL], *wallets[MAXW];
    static const char *own[MAXC];
    ww_wallet_plan_facts_t f;
    make_facts(db, &b, idx, 3, NULL, in, ledger, wallets, own, &f);
    assert_true(ww_wallet_plan(&f, &plan, NULL));
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_string_equal(status_of(&plan.results[1]), "duplicate");
    assert_int_equal(plan.n_retry, 0);
    assert_int_equal(plan.n_stuck, 1);
    assert_non_null(strstr(plan.stuck, "below zero"));
    assert_int_equal(plan.n_updates, 1); /* the live wallet's only */
    ww_wallet_plan_destroy(&plan);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    run(db, &b, idx, 3, out, NULL, 10);
    assert_int_equal(wallet_balance(db, 1), 0);
    assert_int_equal(wallet_balance(db, 2), 6);
    db_free(db);
}

/* Wallets written by the Node/Mongoose backend may lack `version` or hold
 * `version: null`: both are decided like any other, guarded by
 * `version: null` (which matches both) and set to 1. Not `failed`. */
static void test_wallet_plan_version_null_or_missing_is_decided(void **state) {
    (void)state;
    static const struct {
        int64_t version;
        const char *name;
    } rows[] = {{VERSION_NULL, "version: null"}, {VERSION_NONE, "no version"}, {6, "version 6"}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        db_t *db = db_new();
        static batch_t b;
        b.n = 0;
        add_wallet(db, 1, OA, 100, rows[r].version, false);
        add_cmd(&b, 'd', "k1", OA, 30);
        add_cmd(&b, 'c', "k2", OA, 5);
        ww_wallet_plan_t plan;
        plan_once(db, &b, NULL, &plan);
        for (size_t i = 0; i < 2; i++)
            if (strcmp(status_of(&plan.results[i]), "applied") != 0)
                fail_msg("%s: command %zu is %s (%s)", rows[r].name, i,
                         status_of(&plan.results[i]), plan.results[i].result.error_message);
        assert_int_equal(plan.n_updates, 1);
        bson_iter_t it;
        assert_true(bson_iter_init_find(&it, &plan.updates[0].filter, "version"));
        if (rows[r].version < 0) {
            assert_true(BSON_ITER_HOLDS_NULL(&it));
            assert_int_equal(plan.updates[0].version_after, 1);
        } else {
            assert_int_equal(bson_iter_int64(&it), rows[r].version);
            assert_int_equal(plan.updates[0].version_after, rows[r].version + 1);
        }
        ww_wallet_plan_destroy(&plan);
        final_t out[MAXC];
        memset(out, 0, sizeof out);
        run_all(db, &b, out);
        assert_int_equal(wallet_balance(db, 1), 75);
        db_free(db);
    }
}

/* The snapshot is the live wallet and the documents holding markers: a live
 * wallet behind a dozen soft-deleted ones is found; more than 8 documents
 * that matter are never decided on a partial view. */
static void test_wallet_plan_snapshot_is_live_plus_marker_holders(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    for (int i = 1; i <= 12; i++) add_wallet(db, i, OA, 1000, 1, true);
    add_wallet(db, 13, OA, 50, 1, false);
    add_cmd(&b, 'd', "k1", OA, 20);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_string_equal(status_of(&plan.results[0]), "applied");
    assert_int_equal(plan.results[0].result.balance_after_paise, 30);
    ww_wallet_plan_destroy(&plan);
    db_free(db);

    /* nine soft-deleted wallets holding markers, and the live one */
    db = db_new();
    b.n = 0;
    for (int i = 1; i <= 9; i++) {
        bson_t *w = add_wallet(db, i, OA, 0, 1, true);
        bson_oid_t mid, wid;
        bson_oid_init(&mid, NULL);
        wallet_oid(i, &wid);
        char key[16];
        snprintf(key, sizeof key, "old%d", i);
        bson_t set = BSON_INITIALIZER, upd = BSON_INITIALIZER, arr, m;
        BSON_APPEND_ARRAY_BEGIN(&set, "pendingTransactions", &arr);
        BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &m);
        BSON_APPEND_OID(&m, "_id", &mid);
        BSON_APPEND_UTF8(&m, "idempotencyKey", key);
        BSON_APPEND_UTF8(&m, "status", "applied");
        BSON_APPEND_UTF8(&m, "type", "credit");
        BSON_APPEND_OID(&m, "walletId", &wid);
        BSON_APPEND_INT64(&m, "amountPaise", 1);
        bson_append_document_end(&arr, &m);
        bson_append_array_end(&set, &arr);
        BSON_APPEND_DOCUMENT(&upd, "$set", &set);
        apply_set(w, &upd);
        bson_destroy(&set);
        bson_destroy(&upd);
    }
    add_wallet(db, 10, OA, 50, 1, false);
    add_cmd(&b, 'd', "k1", OA, 20);
    plan_once(db, &b, NULL, &plan);
    assert_string_equal(status_of(&plan.results[0]), "retry");
    assert_non_null(strstr(plan.results[0].reason, OA));
    assert_int_equal(plan.n_updates + plan.n_inserts, 0);
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

/* ---- unusable data, retries ------------------------------------------------------------ */

static void test_wallet_plan_unusable_wallet_fails_only_new_decisions(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    bson_t *w = &db->wallets[db->n_wallets++];
    bson_oid_t id, own;
    wallet_oid(1, &id);
    bson_oid_init_from_string(&own, OA);
    bson_init(w);
    BSON_APPEND_OID(w, "_id", &id);
    BSON_APPEND_OID(w, "ownerUserId", &own);
    BSON_APPEND_DOUBLE(w, "availablePaise", 10.5);
    add_wallet(db, 2, OB, 50, 1, false);
    add_cmd(&b, 'd', "k1", OA, 1);
    add_cmd(&b, 'd', "k2", OB, 10);
    add_cmd(&b, 'd', "k1", OA, 1);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_string_equal(status_of(&plan.results[0]), "failed");
    assert_true(plan.results[0].dead_letter);
    assert_string_equal(plan.results[0].result.error_code, "processing_failed");
    assert_non_null(strstr(plan.results[0].result.error_message, "availablePaise"));
    assert_string_equal(status_of(&plan.results[1]), "applied");
    assert_false(plan.results[1].dead_letter);
    /* nothing was recorded for k1: the same key fails again, not duplicate */
    assert_string_equal(status_of(&plan.results[2]), "failed");
    assert_int_equal(plan.n_updates, 1);
    assert_int_equal(plan.n_inserts, 1);
    ww_wallet_plan_destroy(&plan);
    db_free(db);
}

static void test_wallet_plan_rejects_malformed_facts(void **state) {
    (void)state;
    const char *bad[] = {"0000000000000000000000A1"};
    ww_wallet_plan_facts_t f = {.owners = bad, .n_owners = 1};
    ww_wallet_plan_t plan;
    ww_error_t err;
    ww_error_clear(&err);
    assert_false(ww_wallet_plan(&f, &plan, &err));
    assert_int_equal(err.domain, WW_ERR_INTERNAL);
    ww_wallet_plan_destroy(&plan);
    ww_wallet_plan_input_t in = {NULL, TOPIC, 0, 0};
    ww_wallet_plan_facts_t g = {.cmds = &in, .n_cmds = 1};
    assert_false(ww_wallet_plan(&g, &plan, NULL));
    ww_wallet_plan_destroy(&plan);
    /* an empty batch is an empty plan */
    ww_wallet_plan_facts_t e = {.now_ms = NOW};
    assert_true(ww_wallet_plan(&e, &plan, NULL));
    assert_int_equal(plan.n_results + plan.n_updates + plan.n_inserts, 0);
    ww_wallet_plan_destroy(&plan);
    assert_string_equal(ww_wallet_plan_status_name(WW_WALLET_PLAN_RETRY), "retry");
}

/* ---- a guard that lost: re-plan only that wallet ---------------------------------------- */

static void test_wallet_plan_lost_guard_replans_only_that_wallet(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 100, 1, false);
    add_wallet(db, 2, OB, 100, 1, false);
    add_wallet(db, 3, OC, 100, 1, false);
    add_cmd(&b, 'c', "k1", OA, 10);
    add_cmd(&b, 'd', "k2", OB, 130);
    add_cmd(&b, 'd', "k3", OC, 50);
    add_cmd(&b, 'd', "k2", OB, 130);
    add_cmd(&b, 'd', "k4", OB, 100);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_int_equal(plan.n_updates, 3);
    assert_string_equal(status_of(&plan.results[1]), "insufficient_funds");
    assert_string_equal(status_of(&plan.results[3]), "duplicate");
    int ub = plan.results[1].update;
    assert_true(ub >= 0);
    assert_int_equal(plan.results[3].update, ub); /* a repeat needs what it repeats */
    assert_int_equal(plan.results[4].update, ub);
    assert_string_equal(plan.updates[ub].owner, OB);
    /* the backend credits B meanwhile: B's guard loses, A's and C's win */
    bson_oid_t bid;
    wallet_oid(2, &bid);
    bson_t *bw = find_wallet(db, &bid);
    bson_t set = BSON_INITIALIZER, upd = BSON_INITIALIZER;
    BSON_APPEND_INT64(&set, "availablePaise", 200);
    BSON_APPEND_INT64(&set, "version", 2);
    BSON_APPEND_DOCUMENT(&upd, "$set", &set);
    apply_set(bw, &upd);
    bson_destroy(&set);
    bson_destroy(&upd);
    bool matched[8], stored[16];
    write_plan(db, &plan, NULL, matched, stored);
    size_t replan[MAXC], n = 0;
    for (size_t u = 0; u < plan.n_updates; u++) assert_true(matched[u] == ((int)u != ub));
    for (size_t i = 0; i < plan.n_results; i++) {
        int u = plan.results[i].update;
        if (u >= 0 && !matched[u]) replan[n++] = i;
    }
    assert_int_equal(n, 3);
    assert_int_equal(db->n_ledger, 2); /* k1, k3: B's entries were not written */
    ww_wallet_plan_destroy(&plan);

    /* re-plan B's commands alone from fresh facts */
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    run(db, &b, replan, n, out, NULL, 10);
    /* the same as planning B's commands alone on a copy where B had 200 */
    db_t *alone = db_new();
    add_wallet(alone, 2, OB, 200, 2, false);
    final_t ref[MAXC];
    memset(ref, 0, sizeof ref);
    run(alone, &b, replan, n, ref, NULL, 10);
    for (size_t j = 0; j < n; j++) {
        size_t i = replan[j];
        assert_true(out[i].done && ref[i].done);
        assert_int_equal(out[i].r.outcome, ref[i].r.outcome);
        assert_int_equal(out[i].r.balance_after_paise, ref[i].r.balance_after_paise);
    }
    /* decided again on what B holds now */
    assert_int_equal(out[1].r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(out[3].r.outcome, WW_OUTCOME_DUPLICATE);
    assert_int_equal(out[4].r.outcome, WW_OUTCOME_INSUFFICIENT_FUNDS);
    assert_int_equal(wallet_balance(db, 2), wallet_balance(alone, 2));
    assert_int_equal(wallet_balance(db, 2), 70);
    assert_int_equal(wallet_balance(db, 1), 110);
    assert_int_equal(wallet_balance(db, 3), 50);
    db_free(alone);
    db_free(db);
}

/* ---- the marker budget ----------------------------------------------------------------- */

static void test_wallet_plan_caps_decisions_per_wallet(void **state) {
    (void)state;
    db_t *db = db_new();
    static batch_t b;
    b.n = 0;
    add_wallet(db, 1, OA, 0, 1, false);
    add_wallet(db, 2, OB, 0, 1, false);
    char key[32];
    for (int i = 0; i < 80; i++) {
        snprintf(key, sizeof key, "a%d", i);
        add_cmd(&b, 'c', key, OA, 1);
    }
    add_cmd(&b, 'c', "a3", OA, 1); /* after the cap: waits for its key's round */
    add_cmd(&b, 'c', "b1", OB, 5);
    ww_wallet_plan_t plan;
    plan_once(db, &b, NULL, &plan);
    assert_int_equal(plan.n_decided, WW_WALLET_PLAN_PER_WALLET + 2);
    assert_string_equal(status_of(&plan.results[WW_WALLET_PLAN_PER_WALLET - 1]), "applied");
    assert_string_equal(status_of(&plan.results[WW_WALLET_PLAN_PER_WALLET]), "deferred");
    assert_string_equal(status_of(&plan.results[80]), "duplicate"); /* a3 was decided */
    assert_string_equal(status_of(&plan.results[81]), "applied");   /* other wallets go on */
    ww_wallet_plan_destroy(&plan);
    final_t out[MAXC];
    memset(out, 0, sizeof out);
    int rounds = run_all(db, &b, out);
    assert_int_equal(rounds, 3);
    for (size_t i = 0; i < 80; i++) assert_int_equal(out[i].r.outcome, WW_OUTCOME_APPLIED);
    assert_int_equal(wallet_balance(db, 1), 80);
    assert_true(db->max_markers_seen <= WW_WALLET_PLAN_MAX_MARKERS);
    db_free(db);
}

/* ---- the property: a batch decides as one command at a time ------------------------------ */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void seed_wallets(db_t *db, const int64_t *bal) {
    add_wallet(db, 1, OA, bal[0], 1, false);
    add_wallet(db, 2, OB, bal[1], -1, false); /* no version yet (an older document) */
    add_wallet(db, 3, OD, 999, 4, true);      /* D: soft-deleted, then a live one */
    add_wallet(db, 4, OD, bal[2], 9, false);
    /* C has no wallet */
}

/* The protocol's rules, written out plainly: a key's first outcome is final. */
typedef struct {
    char key[WW_COMMAND_KEY_MAX + 1];
    char fp[WW_COMMAND_FINGERPRINT_LEN];
    ww_outcome_t outcome;
} model_key_t;

static void model(const batch_t *b, const int64_t *bal0, ww_outcome_t *out, int64_t *bal) {
    model_key_t keys[MAXC];
    size_t nk = 0;
    const char *owners[3] = {OA, OB, OD};
    memcpy(bal, bal0, 3 * sizeof bal[0]);
    for (size_t i = 0; i < b->n; i++) {
        const ww_command_t *c = &b->cmds[i];
        model_key_t *k = NULL;
        for (size_t j = 0; j < nk; j++)
            if (strcmp(keys[j].key, c->idempotency_key) == 0) k = &keys[j];
        if (k) {
            out[i] = strcmp(k->fp, c->fingerprint) == 0 ? WW_OUTCOME_DUPLICATE
                                                         : WW_OUTCOME_CONFLICT;
            continue;
        }
        int w = -1;
        for (int j = 0; j < 3; j++)
            if (strcmp(owners[j], c->owner_user_id) == 0) w = j;
        if (w < 0)
            out[i] = WW_OUTCOME_WALLET_NOT_FOUND;
        else if (c->type == WW_COMMAND_DEBIT && bal[w] < c->amount_paise)
            out[i] = WW_OUTCOME_INSUFFICIENT_FUNDS;
        else {
            out[i] = WW_OUTCOME_APPLIED;
            bal[w] += c->type == WW_COMMAND_DEBIT ? -c->amount_paise : c->amount_paise;
        }
        k = &keys[nk++];
        snprintf(k->key, sizeof k->key, "%s", c->idempotency_key);
        snprintf(k->fp, sizeof k->fp, "%s", c->fingerprint);
        k->outcome = out[i];
    }
}

static void test_wallet_plan_batch_equals_one_at_a_time(void **state) {
    (void)state;
    const char *owners[4] = {OA, OB, OC, OD};
    static batch_t b;
    int max_rounds = 0;
    for (int iter = 0; iter < 400; iter++) {
        rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(iter + 1) * 0x100000001b3ULL;
        int64_t bal0[3] = {rnd(200), rnd(200), rnd(50)};
        b.n = 0;
        size_t n = 1 + rnd(iter % 10 == 0 ? 120 : 24);
        for (size_t i = 0; i < n; i++) {
            if (b.n > 0 && rnd(5) == 0) { /* a redelivery, or a reused key */
                const ww_command_t *prev = &b.cmds[rnd((uint32_t)b.n)];
                if (rnd(2))
                    add_cmd(&b, prev->type == WW_COMMAND_DEBIT ? 'd' : 'c', prev->idempotency_key,
                            prev->owner_user_id, prev->amount_paise);
                else
                    add_cmd(&b, rnd(2) ? 'd' : 'c', prev->idempotency_key,
                            owners[rnd(4)], 1 + rnd(150));
                continue;
            }
            char key[16];
            snprintf(key, sizeof key, "p%d-%zu", iter, i);
            add_cmd(&b, rnd(2) ? 'd' : 'c', key, owners[rnd(4)], 1 + rnd(150));
        }
        db_t *batch = db_new(), *seq = db_new();
        seed_wallets(batch, bal0);
        seed_wallets(seq, bal0);
        final_t got[MAXC], one[MAXC];
        memset(got, 0, sizeof got);
        memset(one, 0, sizeof one);
        int rounds = run_all(batch, &b, got);
        if (rounds > max_rounds) max_rounds = rounds;
        run_one_by_one(seq, &b, one);
        ww_outcome_t want[MAXC];
        int64_t bal[3];
        model(&b, bal0, want, bal);
        for (size_t i = 0; i < b.n; i++) {
            if (!got[i].done || got[i].r.outcome != one[i].r.outcome ||
                got[i].r.outcome != want[i] || got[i].r.original != one[i].r.original ||
                got[i].r.balance_after_paise != one[i].r.balance_after_paise ||
                got[i].r.has_balance != one[i].r.has_balance)
                fail_msg("iteration %d command %zu (%s %s %lld): batch %s (after %lld), one by "
                         "one %s (after %lld), model %s", iter, i, b.cmds[i].idempotency_key,
                         b.cmds[i].owner_user_id, (long long)b.cmds[i].amount_paise,
                         ww_outcome_name(got[i].r.outcome), (long long)got[i].r.balance_after_paise,
                         ww_outcome_name(one[i].r.outcome), (long long)one[i].r.balance_after_paise,
                         ww_outcome_name(want[i]));
        }
        int ids[3] = {1, 2, 4};
        for (int w = 0; w < 3; w++) {
            assert_int_equal(wallet_balance(batch, ids[w]), wallet_balance(seq, ids[w]));
            assert_int_equal(wallet_balance(batch, ids[w]), bal[w]);
            assert_true(wallet_balance(batch, ids[w]) >= 0);
        }
        assert_int_equal(wallet_balance(batch, 3), 999);
        /* the same ledger: one entry per key, same status and balance after */
        assert_int_equal(batch->n_ledger, seq->n_ledger);
        for (size_t i = 0; i < seq->n_ledger; i++) {
            bson_iter_t k, s1, s2;
            assert_true(bson_iter_init_find(&k, &seq->ledger[i], "idempotencyKey"));
            const bson_t *e = ledger_find(batch, bson_iter_utf8(&k, NULL));
            assert_non_null(e);
            assert_true(bson_iter_init_find(&s1, e, "status"));
            assert_true(bson_iter_init_find(&s2, &seq->ledger[i], "status"));
            assert_string_equal(bson_iter_utf8(&s1, NULL), bson_iter_utf8(&s2, NULL));
            assert_true(bson_iter_init_find(&s1, e, "balanceAfterPaise"));
            assert_true(bson_iter_init_find(&s2, &seq->ledger[i], "balanceAfterPaise"));
            assert_true(bson_iter_as_int64(&s1) == bson_iter_as_int64(&s2));
        }
        db_free(batch);
        db_free(seq);
    }
    print_message("batch equals one at a time: 400 batches, at most %d rounds\n", max_rounds);
}

/* The same with crashes: some rounds die after the bulk update, part-way
 * through the insertMany, and the batch is planned again. Orphaned markers
 * are completed, nothing is applied twice, and every key ends with the
 * outcome the model gives it (a redelivered decision may be answered as a
 * duplicate of itself, as today after a crash between the insert and the
 * result). */
static void test_wallet_plan_crashes_mid_batch_change_nothing(void **state) {
    (void)state;
    const char *owners[4] = {OA, OB, OC, OD};
    static batch_t b;
    int crashes = 0;
    for (int iter = 0; iter < 300; iter++) {
        rng_state = 0x51ed27a3c0ffee11ULL ^ (uint64_t)(iter + 1) * 0x100000001b3ULL;
        int64_t bal0[3] = {rnd(200), rnd(200), rnd(50)};
        b.n = 0;
        size_t n = 1 + rnd(40);
        for (size_t i = 0; i < n; i++) {
            if (b.n > 0 && rnd(5) == 0) {
                const ww_command_t *prev = &b.cmds[rnd((uint32_t)b.n)];
                add_cmd(&b, prev->type == WW_COMMAND_DEBIT ? 'd' : 'c', prev->idempotency_key,
                        prev->owner_user_id, prev->amount_paise);
                continue;
            }
            char key[16];
            snprintf(key, sizeof key, "c%d-%zu", iter, i);
            add_cmd(&b, rnd(2) ? 'd' : 'c', key, owners[rnd(4)], 1 + rnd(150));
        }
        db_t *db = db_new();
        seed_wallets(db, bal0);
        final_t got[MAXC];
        memset(got, 0, sizeof got);
        crash_one_in = 3;
        run_all(db, &b, got);
        crash_one_in = 0;
        crashes += db->crashes;
        ww_outcome_t want[MAXC];
        int64_t bal[3];
        model(&b, bal0, want, bal);
        for (size_t i = 0; i < b.n; i++) {
            assert_true(got[i].done);
            ww_outcome_t o = got[i].r.outcome;
            if (o == WW_OUTCOME_DUPLICATE && want[i] != WW_OUTCOME_DUPLICATE) o = got[i].r.original;
            if (o != want[i])
                fail_msg("iteration %d command %zu (%s): got %s (original %s), model %s", iter, i,
                         b.cmds[i].idempotency_key, ww_outcome_name(got[i].r.outcome),
                         ww_outcome_name(got[i].r.original), ww_outcome_name(want[i]));
        }
        int ids[3] = {1, 2, 4};
        for (int w = 0; w < 3; w++) assert_int_equal(wallet_balance(db, ids[w]), bal[w]);
        db_free(db);
    }
    assert_true(crashes > 100);
    print_message("crashes mid-batch: %d, all redelivered batches exact\n", crashes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wallet_plan_table_of_in_batch_interactions),
        cmocka_unit_test(test_wallet_plan_one_guarded_update_per_wallet),
        cmocka_unit_test(test_wallet_plan_orphaned_marker_is_completed_and_reported),
        cmocka_unit_test(test_wallet_plan_orphans_are_pending_and_use_the_marker_budget),
        cmocka_unit_test(test_wallet_plan_existing_entry_answers_without_a_wallet),
        cmocka_unit_test(test_wallet_plan_lost_marker_is_undone),
        cmocka_unit_test(test_wallet_plan_lost_credit_spent_elsewhere_is_reversed),
        cmocka_unit_test(test_wallet_plan_lost_entry_never_leaves_a_negative_balance),
        cmocka_unit_test(test_wallet_plan_lost_marker_on_deleted_wallet_is_undone_there),
        cmocka_unit_test(test_wallet_plan_lost_marker_on_drained_deleted_wallet_is_left),
        cmocka_unit_test(test_wallet_plan_version_null_or_missing_is_decided),
        cmocka_unit_test(test_wallet_plan_snapshot_is_live_plus_marker_holders),
        cmocka_unit_test(test_wallet_plan_unusable_wallet_fails_only_new_decisions),
        cmocka_unit_test(test_wallet_plan_rejects_malformed_facts),
        cmocka_unit_test(test_wallet_plan_lost_guard_replans_only_that_wallet),
        cmocka_unit_test(test_wallet_plan_caps_decisions_per_wallet),
        cmocka_unit_test(test_wallet_plan_batch_equals_one_at_a_time),
        cmocka_unit_test(test_wallet_plan_crashes_mid_batch_change_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
