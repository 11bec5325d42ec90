/* test_doctor.c: the doctor's pure checks, table-driven over hand-made facts:
 * index sets and migration records (schema), explain replies of MongoDB (classic
 * and SBE), FerretDB and mongo-java-server (plans), wallet documents and ledger
 * entries (ledger). Also: every finding code has advice whose anchor is a
 * heading of docs/troubleshooting.md, and the --json report parses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor.h"
#include "migrate.h"

static ww_doctor_report_t *report(void) {
    static ww_doctor_report_t r;
    memset(&r, 0, sizeof r);
    r.marker_age_minutes = 15;
    return &r;
}

static int count_code(const ww_doctor_report_t *r, const char *code, ww_doctor_level_t level) {
    int n = 0;
    for (int i = 0; i < r->n_findings; i++)
        n += strcmp(r->findings[i].code, code) == 0 && r->findings[i].level == level;
    return n;
}

static const ww_doctor_finding_t *find_code(const ww_doctor_report_t *r, const char *code) {
    for (int i = 0; i < r->n_findings; i++)
        if (strcmp(r->findings[i].code, code) == 0) return &r->findings[i];
    return NULL;
}

/* ---- schema facts ---------------------------------------------------------- */

/* The listIndexes document of a migration's index, as MongoDB lists it. */
static void index_doc(const ww_migrate_index_t *m, bson_t *doc) {
    bson_t key, pfe;
    bson_init(doc);
    BSON_APPEND_INT32(doc, "v", 2);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "key", &key);
    for (int k = 0; k < 4 && m->keys[k]; k++) BSON_APPEND_DOUBLE(&key, m->keys[k], m->dirs[k]);
    bson_append_document_end(doc, &key);
    BSON_APPEND_UTF8(doc, "name", m->name);
    if (m->unique) BSON_APPEND_BOOL(doc, "unique", true);
    if (m->ttl_seconds) BSON_APPEND_INT32(doc, "expireAfterSeconds", m->ttl_seconds);
    if (m->partial_status) {
        BSON_APPEND_DOCUMENT_BEGIN(doc, "partialFilterExpression", &pfe);
        BSON_APPEND_UTF8(&pfe, "status", m->partial_status);
        bson_append_document_end(doc, &pfe);
    }
}

static void add_index(ww_doctor_schema_facts_t *f, const ww_migrate_index_t *m) {
    bson_t doc;
    index_doc(m, &doc);
    assert_true(ww_doctor_index_from_bson(m->collection, &doc, &f->indexes[f->n_indexes++]));
    bson_destroy(&doc);
}

/* A database migrated by this build: every index, every record. */
static ww_doctor_schema_facts_t *migrated(bool ttl_supported) {
    static ww_doctor_schema_facts_t f;
    memset(&f, 0, sizeof f);
    f.ttl_partial_supported = ttl_supported;
    bson_t id = BSON_INITIALIZER, key;
    BSON_APPEND_DOCUMENT_BEGIN(&id, "key", &key);
    BSON_APPEND_INT32(&key, "_id", 1);
    bson_append_document_end(&id, &key);
    BSON_APPEND_UTF8(&id, "name", "_id_");
    assert_true(ww_doctor_index_from_bson("transactions", &id, &f.indexes[f.n_indexes++]));
    bson_destroy(&id);
    for (int i = 0; i < ww_migrate_index_count(); i++) {
        ww_migrate_index_t m;
        ww_migrate_index(i, &m);
        if (m.ttl_seconds && !ttl_supported) continue; /* FerretDB: never created */
        add_index(&f, &m);
    }
    for (int i = 0; i < ww_migrate_count(); i++) {
        char sum[65];
        ww_migrate_checksum(i, sum);
        bson_t rec = BSON_INITIALIZER;
        BSON_APPEND_INT32(&rec, "_id", ww_migrate_version(i));
        BSON_APPEND_UTF8(&rec, "name", ww_migrate_name(i));
        BSON_APPEND_UTF8(&rec, "checksum", sum);
        assert_true(ww_doctor_applied_from_bson(&rec, &f.applied[f.n_applied++]));
        bson_destroy(&rec);
    }
    bson_t lock = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&lock, "_id", "lock");
    ww_doctor_applied_t ignored;
    assert_false(ww_doctor_applied_from_bson(&lock, &ignored));
    bson_destroy(&lock);
    return &f;
}

static void drop_index(ww_doctor_schema_facts_t *f, const char *name) {
    for (int i = 0; i < f->n_indexes; i++)
        if (strcmp(f->indexes[i].name, name) == 0) {
            f->indexes[i] = f->indexes[--f->n_indexes];
            return;
        }
    fail_msg("no index %s", name);
}

static ww_doctor_index_t *index_named(ww_doctor_schema_facts_t *f, const char *name) {
    for (int i = 0; i < f->n_indexes; i++)
        if (strcmp(f->indexes[i].name, name) == 0) return &f->indexes[i];
    fail_msg("no index %s", name);
    return NULL;
}

static void test_doctor_migration_4_is_the_multikey_campaign_index(void **state) {
    (void)state;
    assert_int_equal(ww_migrate_count(), 4);
    assert_int_equal(ww_migrate_version(3), 4);
    assert_string_equal(ww_migrate_name(3), "campaign_indexes");
    ww_migrate_index_t m;
    ww_migrate_index(ww_migrate_index_count() - 1, &m);
    assert_string_equal(m.collection, "campaigns");
    assert_string_equal(m.name, "allowedAgencyCodes_1");
    assert_string_equal(m.keys[0], "allowedAgencyCodes");
    assert_null(m.keys[1]);
    assert_false(m.unique);
    /* adding migration 4 moved no checksum of 1-3 (databases migrated by the
     * previous build stay valid); 4's is pinned so an edit is noticed */
    static const char *const pinned[] = {
        "4b7894f9d488a95554a1f2135d9626023ad4007c620be302dd1bbad476224918",
        "fffa9421d10c78f2524c5bebd4b3aadd0c738b1931f7d636292af8eb48ab8891",
        "0ca5de647c0927263cd247e512c093ef5776265bc02963dc81fc78ae0cc2f901",
        "53005ffb199128db6b343520fbf65d7332bf9cfb5e545726a3533beba2818f95",
    };
    for (int i = 0; i < 4; i++) {
        char sum[65];
        ww_migrate_checksum(i, sum);
        assert_string_equal(sum, pinned[i]);
    }
    ww_migrate_duplicate(0, &m);
    assert_string_equal(m.collection, "invites");
    assert_string_equal(m.keys[0], "expiresAt");
    assert_int_equal(m.ttl_seconds, 0);
}

typedef struct {
    const char *name;
    bool ttl_supported;
    void (*mutate)(ww_doctor_schema_facts_t *f);
    const char *code; /* NULL: no problem at all */
    const char *subject_has;
    const char *note; /* a note expected, or NULL */
} schema_case_t;

static void m_none(ww_doctor_schema_facts_t *f) { (void)f; }
static void m_drop_ledger_key(ww_doctor_schema_facts_t *f) { drop_index(f, "idempotencyKey_1"); }
static void m_drop_campaigns(ww_doctor_schema_facts_t *f) { drop_index(f, "allowedAgencyCodes_1"); }
static void m_drop_ttl(ww_doctor_schema_facts_t *f) { drop_index(f, "expiresAt_1"); }
static void m_tamper(ww_doctor_schema_facts_t *f) { f->applied[1].checksum[0] ^= 1; }
static void m_rename(ww_doctor_schema_facts_t *f) { snprintf(f->applied[0].name, 64, "ledger"); }
static void m_pending(ww_doctor_schema_facts_t *f) {
    f->n_applied--; /* migration 4 not applied, and so no index */
    drop_index(f, "allowedAgencyCodes_1");
}
static void m_unknown(ww_doctor_schema_facts_t *f) {
    f->applied[f->n_applied].version = 99;
    snprintf(f->applied[f->n_applied++].name, 64, "future");
}
static void m_not_unique(ww_doctor_schema_facts_t *f) {
    index_named(f, "idempotencyKey_1")->unique = false;
}
static void m_other_keys(ww_doctor_schema_facts_t *f) {
    index_named(f, "walletId_1_createdAt_-1")->dirs[1] = 1;
}
static void m_ttl_wrong(ww_doctor_schema_facts_t *f) {
    index_named(f, "expiresAt_1")->ttl_seconds = 60;
}
static void m_ttl_on_ledger(ww_doctor_schema_facts_t *f) {
    index_named(f, "walletId_1")->ttl_seconds = 3600;
}
static void m_partial_missing(ww_doctor_schema_facts_t *f) {
    index_named(f, "expiresAt_1")->has_partial = false;
}
/* the backend's old set: a plain expiresAt index instead of the TTL one */
static void m_audit_duplicate(ww_doctor_schema_facts_t *f) {
    ww_migrate_index_t m;
    ww_migrate_duplicate(0, &m);
    m.name = "expiresAt_plain";
    add_index(f, &m);
}
static void m_same_keys_twice(ww_doctor_schema_facts_t *f) {
    ww_doctor_index_t copy = *index_named(f, "ownerUserId_1");
    snprintf(copy.name, sizeof copy.name, "owner_again");
    f->indexes[f->n_indexes++] = copy;
}
static void m_other_name(ww_doctor_schema_facts_t *f) {
    snprintf(index_named(f, "code_1")->name, 128, "invite_code_unique");
}

static const schema_case_t schema_cases[] = {
    {"clean, MongoDB", true, m_none, NULL, NULL, NULL},
    {"clean, FerretDB (no TTL)", false, m_none, NULL, NULL, "ttl_unsupported"},
    {"dropped ledger index", true, m_drop_ledger_key, "index_missing",
     "transactions.idempotencyKey_1", NULL},
    {"dropped ledger index, FerretDB", false, m_drop_ledger_key, "index_missing",
     "transactions.idempotencyKey_1", NULL},
    {"dropped campaigns index", true, m_drop_campaigns, "index_missing",
     "campaigns.allowedAgencyCodes_1", NULL},
    {"dropped TTL index where TTL works", true, m_drop_ttl, "index_missing", "invites.expiresAt_1",
     NULL},
    {"tampered checksum", true, m_tamper, "migration_changed", "002_invite_indexes", NULL},
    {"renamed record", true, m_rename, "migration_changed", "001_ledger_indexes", NULL},
    {"pending migration", true, m_pending, "migration_pending", "004_campaign_indexes", NULL},
    {"unknown migration", true, m_unknown, NULL, NULL, "migration_unknown"},
    {"ledger index not unique", true, m_not_unique, "index_differs",
     "transactions.idempotencyKey_1", NULL},
    {"keys differ", true, m_other_keys, "index_differs", "transactions.walletId_1_createdAt_-1",
     NULL},
    {"TTL seconds differ", true, m_ttl_wrong, "index_differs", "invites.expiresAt_1", NULL},
    {"TTL on a ledger index", true, m_ttl_on_ledger, "index_differs", "transactions.walletId_1",
     NULL},
    {"partial filter missing", true, m_partial_missing, "index_differs", "invites.expiresAt_1",
     NULL},
    {"the audit's duplicate", true, m_audit_duplicate, "duplicate_index", "invites.expiresAt_plain",
     NULL},
    {"the audit's duplicate, FerretDB", false, m_audit_duplicate, "duplicate_index",
     "invites.expiresAt_plain", NULL},
    {"same keys twice", true, m_same_keys_twice, "duplicate_index", "wallets.owner_again", NULL},
    {"same index, other name", true, m_other_name, NULL, NULL, "index_other_name"},
};

static void test_doctor_schema_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof schema_cases / sizeof schema_cases[0]; c++) {
        const schema_case_t *t = &schema_cases[c];
        ww_doctor_schema_facts_t *f = migrated(t->ttl_supported);
        t->mutate(f);
        ww_doctor_report_t *r = report();
        ww_doctor_check_schema(f, r);
        print_message("case %s: %d problem(s)\n", t->name, r->problems);
        for (int i = 0; i < r->n_findings; i++)
            print_message("  %s %s %s\n", r->findings[i].code, r->findings[i].subject,
                          r->findings[i].detail);
        if (!t->code) {
            assert_int_equal(r->problems, 0);
        } else {
            const ww_doctor_finding_t *fd = find_code(r, t->code);
            assert_non_null(fd);
            assert_int_equal(fd->level, WW_DOCTOR_PROBLEM);
            assert_string_equal(fd->section, "schema");
            assert_non_null(strstr(fd->subject, t->subject_has));
        }
        if (t->note) assert_int_equal(count_code(r, t->note, WW_DOCTOR_NOTE), 1);
    }
}

static void test_doctor_pending_migration_hides_its_indexes(void **state) {
    (void)state;
    ww_doctor_schema_facts_t *f = migrated(true);
    m_pending(f);
    ww_doctor_report_t *r = report();
    ww_doctor_check_schema(f, r);
    assert_int_equal(r->problems, 1); /* the migration, not also its index */
    assert_int_equal(r->migrations_pending, 1);
    assert_int_equal(r->migrations_applied, ww_migrate_count() - 1);
}

/* ---- plans ---------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *json; /* the explain reply; NULL: explain unavailable */
    const char *verdict;
    bool problem;
    const char *plan_has;
} plan_case_t;

static const plan_case_t plan_cases[] = {
    {"classic IXSCAN",
     "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"FETCH\", \"inputStage\": {\"stage\": "
     "\"IXSCAN\", \"indexName\": \"idempotencyKey_1\"}}}, \"ok\": 1}",
     "uses_index", false, "FETCH > IXSCAN(idempotencyKey_1)"},
    {"SBE queryPlan",
     "{\"queryPlanner\": {\"winningPlan\": {\"queryPlan\": {\"stage\": \"FETCH\", \"inputStage\": "
     "{\"stage\": \"IXSCAN\", \"indexName\": \"idempotencyKey_1\"}}, \"slotBasedPlan\": {}}}}",
     "uses_index", false, "IXSCAN(idempotencyKey_1)"},
    {"express",
     "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"EXPRESS_IXSCAN\", \"indexName\": "
     "\"idempotencyKey_1\"}}}",
     "uses_index", false, "EXPRESS_IXSCAN"},
    {"collection scan",
     "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"COLLSCAN\", \"direction\": \"forward\"}}}",
     "collection_scan", true, "COLLSCAN"},
    {"another index",
     "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"SORT\", \"inputStage\": {\"stage\": "
     "\"FETCH\", \"inputStage\": {\"stage\": \"IXSCAN\", \"indexName\": \"walletId_1\"}}}}}",
     "other_index", true, "SORT > FETCH > IXSCAN(walletId_1)"},
    {"rejected plans do not count",
     "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"COLLSCAN\"}, \"rejectedPlans\": "
     "[{\"stage\": \"IXSCAN\", \"indexName\": \"idempotencyKey_1\"}]}}",
     "collection_scan", true, "COLLSCAN"},
    {"no collection", "{\"queryPlanner\": {\"winningPlan\": {\"stage\": \"EOF\"}}}",
     "no_collection", false, "EOF"},
    {"FerretDB SQLite",
     "{\"queryPlanner\": {\"Plan\": [\"id=2 parent=0 notused=0 detail=SCAN transactions_8db4\"]}, "
     "\"explainVersion\": \"1\", \"ok\": 1}",
     "sqlite_plan", false, "SCAN transactions_8db4"},
    {"something else", "{\"queryPlanner\": {\"mystery\": 1}}", "unrecognised", false, "mystery"},
    {"mongo-java-server", NULL, "unavailable", false, "explain unavailable"},
};

static void test_doctor_plan_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof plan_cases / sizeof plan_cases[0]; c++) {
        const plan_case_t *t = &plan_cases[c];
        bson_t reply = BSON_INITIALIZER;
        if (t->json) {
            bson_error_t be;
            bson_destroy(&reply);
            assert_true(bson_init_from_json(&reply, t->json, -1, &be));
        }
        ww_doctor_report_t *r = report();
        ww_doctor_check_plan(r, "ledger_by_idempotency_key", "transactions", "idempotencyKey_1",
                             &reply, t->json == NULL);
        print_message("case %s: %s %s\n", t->name, r->plans[0].verdict, r->plans[0].plan);
        assert_int_equal(r->n_plans, 1);
        assert_string_equal(r->plans[0].verdict, t->verdict);
        assert_non_null(strstr(r->plans[0].plan, t->plan_has));
        assert_int_equal(r->problems, t->problem ? 1 : 0);
        assert_int_equal(r->n_findings, strcmp(t->verdict, "uses_index") == 0 ? 0 : 1);
        if (t->problem) assert_string_equal(r->findings[0].code, "plan_no_index");
        bson_destroy(&reply);
    }
}

/* ---- ledger ------------------------------------------------------------------ */

#define NOW 1700000000000LL
#define MIN 60000LL

static void wallet(bson_t *w, const char *balance_json, const char *markers_json) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"_id\": {\"$oid\": \"65f000000000000000000001\"}%s%s%s%s}",
             balance_json ? ", \"availablePaise\": " : "", balance_json ? balance_json : "",
             markers_json ? ", \"pendingTransactions\": " : "", markers_json ? markers_json : "");
    bson_error_t be;
    if (!bson_init_from_json(w, json, -1, &be)) fail_msg("%s: %s", json, be.message);
}

typedef struct {
    const char *balance; /* extended JSON; NULL: missing */
    const char *code;    /* NULL: no problem */
} balance_case_t;

static const balance_case_t balance_cases[] = {
    {"{\"$numberLong\": \"5000\"}", NULL},
    {"{\"$numberInt\": \"0\"}", NULL},
    {"{\"$numberDouble\": \"100.0\"}", NULL},
    {"{\"$numberInt\": \"-1\"}", "negative_balance"},
    {"{\"$numberLong\": \"-250\"}", "negative_balance"},
    {"{\"$numberDouble\": \"-3.0\"}", "negative_balance"},
    {"{\"$numberDouble\": \"10.5\"}", "fractional_balance"},
    {"{\"$numberDouble\": \"1e300\"}", "fractional_balance"},
    {"{\"$numberDouble\": \"NaN\"}", "fractional_balance"},
    {"\"100\"", "unusable_balance"},
    {"null", "unusable_balance"},
    {NULL, "unusable_balance"},
};

static void test_doctor_balance_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof balance_cases / sizeof balance_cases[0]; c++) {
        const balance_case_t *t = &balance_cases[c];
        bson_t w;
        wallet(&w, t->balance, NULL);
        ww_doctor_report_t *r = report();
        ww_doctor_marker_t *old = NULL;
        size_t n = 0, cap = 0;
        ww_doctor_check_wallet(r, &w, NOW, 15 * MIN, &old, &n, &cap);
        print_message("balance %s -> %s\n", t->balance ? t->balance : "(missing)",
                      r->n_findings ? r->findings[0].code : "ok");
        assert_int_equal(r->wallets_checked, 1);
        if (!t->code) {
            assert_int_equal(r->problems, 0);
        } else {
            assert_int_equal(r->problems, 1);
            assert_string_equal(r->findings[0].code, t->code);
            assert_string_equal(r->findings[0].subject, "wallet 65f000000000000000000001");
        }
        assert_int_equal(n, 0);
        bson_free(old);
        bson_destroy(&w);
    }
}

/* one marker, `age_min` old (-1: no createdAt), checked against a ledger that
 * holds its key under ledger_id (NULL: not at all) */
typedef struct {
    const char *name;
    int age_min;
    const char *ledger_id;
    const char *code; /* NULL: nothing at all */
    ww_doctor_level_t level;
} marker_case_t;

#define MARKER_ID "65f0000000000000000000aa"

static const marker_case_t marker_cases[] = {
    {"young, no entry (in flight)", 1, NULL, NULL, WW_DOCTOR_NOTE},
    {"old, no entry", 20, NULL, "stale_marker", WW_DOCTOR_PROBLEM},
    {"no createdAt, no entry", -1, NULL, "stale_marker", WW_DOCTOR_PROBLEM},
    {"old, entry is the marker's", 20, MARKER_ID, "markers_prunable", WW_DOCTOR_NOTE},
    {"old, entry is another", 20, "65f0000000000000000000bb", "lost_marker", WW_DOCTOR_PROBLEM},
    {"young, entry is another", 2, "65f0000000000000000000bb", NULL, WW_DOCTOR_NOTE},
};

static void test_doctor_marker_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof marker_cases / sizeof marker_cases[0]; c++) {
        const marker_case_t *t = &marker_cases[c];
        char markers[512], created[96] = "";
        if (t->age_min >= 0)
            snprintf(created, sizeof created, ", \"createdAt\": {\"$date\": {\"$numberLong\": "
                     "\"%lld\"}}", NOW - t->age_min * MIN);
        snprintf(markers, sizeof markers,
                 "[{\"_id\": {\"$oid\": \"%s\"}, \"idempotencyKey\": \"k-1\", \"status\": "
                 "\"applied\"%s}]", MARKER_ID, created);
        bson_t w;
        wallet(&w, "{\"$numberLong\": \"10\"}", markers);
        ww_doctor_report_t *r = report();
        ww_doctor_marker_t *old = NULL;
        size_t n = 0, cap = 0;
        ww_doctor_check_wallet(r, &w, NOW, 15 * MIN, &old, &n, &cap);
        assert_int_equal(r->markers_seen, 1);
        ww_doctor_ledger_key_t ledger[3] = {{"a-0", "65f0000000000000000000cc"},
                                            {"z-9", "65f0000000000000000000dd"}};
        size_t n_ledger = 2;
        if (t->ledger_id) {
            snprintf(ledger[2].key, sizeof ledger[2].key, "k-1");
            snprintf(ledger[2].id, sizeof ledger[2].id, "%s", t->ledger_id);
            n_ledger = 3;
        }
        ww_doctor_sort_ledger(ledger, n_ledger);
        ww_doctor_check_markers(r, old, n, ledger, n_ledger, 15);
        ww_doctor_note_prunable(r);
        print_message("marker %s -> %s\n", t->name, r->n_findings ? r->findings[0].code : "ok");
        if (!t->code) {
            assert_int_equal(r->n_findings, 0);
        } else {
            assert_int_equal(r->n_findings, 1);
            assert_string_equal(r->findings[0].code, t->code);
            assert_int_equal(r->findings[0].level, t->level);
            if (t->level == WW_DOCTOR_PROBLEM) {
                assert_non_null(strstr(r->findings[0].subject, "65f000000000000000000001"));
                assert_non_null(strstr(r->findings[0].subject, "k-1"));
            }
        }
        bson_free(old);
        bson_destroy(&w);
    }
}

typedef struct {
    const char *json;
    bool problem;
} entry_case_t;

static const entry_case_t entry_cases[] = {
    {"{\"status\": \"applied\", \"walletId\": {\"$oid\": \"65f000000000000000000001\"}}", false},
    {"{\"status\": \"insufficient_funds\", \"walletId\": {\"$oid\": \"65f000000000000000000001\"}}",
     false},
    {"{\"status\": \"invalid\", \"walletId\": {\"$oid\": \"65f000000000000000000001\"}}", false},
    {"{\"status\": \"wallet_not_found\", \"walletId\": null}", false},
    {"{\"status\": \"wallet_not_found\"}", false},
    {"{\"status\": \"applied\", \"walletId\": null}", true},
    {"{\"status\": \"insufficient_funds\"}", true},
    {"{\"status\": \"wallet_not_found\", \"walletId\": {\"$oid\": \"65f000000000000000000001\"}}",
     true},
    {"{\"status\": \"refunded\", \"walletId\": {\"$oid\": \"65f000000000000000000001\"}}", true},
    {"{\"walletId\": {\"$oid\": \"65f000000000000000000001\"}}", true},
};

static void test_doctor_ledger_entry_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof entry_cases / sizeof entry_cases[0]; c++) {
        char json[512];
        snprintf(json, sizeof json, "{\"_id\": \"t%zu\", \"idempotencyKey\": \"k\", %s", c,
                 entry_cases[c].json + 1);
        bson_t e;
        bson_error_t be;
        assert_true(bson_init_from_json(&e, json, -1, &be));
        ww_doctor_report_t *r = report();
        ww_doctor_check_ledger_entry(r, &e);
        print_message("entry %s -> %d\n", json, r->problems);
        assert_int_equal(r->problems, entry_cases[c].problem ? 1 : 0);
        if (entry_cases[c].problem) assert_string_equal(r->findings[0].code, "ledger_contradiction");
        bson_destroy(&e);
    }
}

/* ---- advice, the cap, the JSON --------------------------------------------- */

static const char *const all_codes[] = {
    "index_missing", "index_differs", "index_other_name", "ttl_unsupported", "duplicate_index",
    "migration_pending", "migration_changed", "migration_unknown", "plan_no_index",
    "plan_unavailable", "plan_sqlite", "plan_unrecognised", "plan_no_collection",
    "stale_marker", "lost_marker", "markers_prunable", "negative_balance", "fractional_balance",
    "unusable_balance", "ledger_contradiction",
};

/* GitHub's anchor of a heading: lower case, spaces to '-', only [a-z0-9_-] kept */
static void anchor_of(const char *heading, char *out, size_t cap) {
    size_t n = 0;
    for (const char *p = heading; *p && n + 1 < cap; p++) {
        unsigned char ch = (unsigned char)*p;
        if (isalnum(ch) || ch == '-' || ch == '_')
            out[n++] = (char)tolower(ch);
        else if (ch == ' ')
            out[n++] = '-';
    }
    out[n] = '\0';
}

static void test_doctor_every_code_has_advice_and_a_troubleshooting_section(void **state) {
    (void)state;
    FILE *f = fopen(WW_SOURCE_DIR "/docs/troubleshooting.md", "r");
    assert_non_null(f);
    char anchors[64][160];
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f) && n < 64) {
        if (strncmp(line, "#", 1) != 0) continue;
        char *h = line;
        while (*h == '#') h++;
        while (*h == ' ') h++;
        h[strcspn(h, "\n")] = '\0';
        anchor_of(h, anchors[n++], sizeof anchors[0]);
    }
    fclose(f);
    for (size_t c = 0; c < sizeof all_codes / sizeof all_codes[0]; c++) {
        const char *action, *anchor;
        ww_doctor_advice(all_codes[c], &action, &anchor);
        assert_string_not_equal(action, "see docs/troubleshooting.md");
        bool found = false;
        for (int i = 0; i < n; i++) found |= strcmp(anchors[i], anchor) == 0;
        if (!found) fail_msg("code %s: no heading in troubleshooting.md for #%s", all_codes[c], anchor);
    }
}

static void test_doctor_findings_past_the_cap_are_counted(void **state) {
    (void)state;
    ww_doctor_report_t *r = report();
    for (int i = 0; i < WW_DOCTOR_MAX_FINDINGS + 5; i++)
        ww_doctor_add(r, "ledger", "negative_balance", WW_DOCTOR_PROBLEM, "wallet", "%d", i);
    assert_int_equal(r->n_findings, WW_DOCTOR_MAX_FINDINGS);
    assert_int_equal(r->not_listed, 5);
    assert_int_equal(r->problems, WW_DOCTOR_MAX_FINDINGS + 5);
}

static void test_doctor_json_report_is_one_object(void **state) {
    (void)state;
    ww_doctor_schema_facts_t *f = migrated(true);
    m_drop_ledger_key(f);
    ww_doctor_report_t *r = report();
    snprintf(r->database, sizeof r->database, "wallet");
    snprintf(r->server, sizeof r->server, "MongoDB 7.0.0");
    ww_doctor_check_schema(f, r);
    bson_t empty = BSON_INITIALIZER;
    ww_doctor_check_plan(r, "ledger_by_idempotency_key", "transactions", "idempotencyKey_1", &empty,
                         true);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ww_doctor_print_json(r, out);
    fclose(out);
    json_object *o = json_tokener_parse(buf);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "ok", &v));
    assert_false(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(o, "problems", &v));
    assert_int_equal(json_object_get_int(v), 1);
    assert_true(json_object_object_get_ex(o, "findings", &v));
    json_object *first = json_object_array_get_idx(v, 0), *field;
    assert_true(json_object_object_get_ex(first, "code", &field));
    assert_string_equal(json_object_get_string(field), "index_missing");
    assert_true(json_object_object_get_ex(first, "doc", &field));
    assert_non_null(strstr(json_object_get_string(field), "docs/troubleshooting.md#doctor-"));
    assert_true(json_object_object_get_ex(o, "plans", &v));
    assert_true(json_object_object_get_ex(json_object_array_get_idx(v, 0), "verdict", &field));
    assert_string_equal(json_object_get_string(field), "unavailable");
    json_object_put(o);
    free(buf);

    /* the text report names the problem and where to read about it */
    out = open_memstream(&buf, &len);
    ww_doctor_print_text(r, out);
    fclose(out);
    assert_non_null(strstr(buf, "PROBLEM index_missing: transactions.idempotencyKey_1"));
    assert_non_null(strstr(buf, "explain unavailable"));
    assert_non_null(strstr(buf, "PROBLEMS: 1 problem(s)"));
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doctor_migration_4_is_the_multikey_campaign_index),
        cmocka_unit_test(test_doctor_schema_table),
        cmocka_unit_test(test_doctor_pending_migration_hides_its_indexes),
        cmocka_unit_test(test_doctor_plan_table),
        cmocka_unit_test(test_doctor_balance_table),
        cmocka_unit_test(test_doctor_marker_table),
        cmocka_unit_test(test_doctor_ledger_entry_table),
        cmocka_unit_test(test_doctor_every_code_has_advice_and_a_troubleshooting_section),
        cmocka_unit_test(test_doctor_findings_past_the_cap_are_counted),
        cmocka_unit_test(test_doctor_json_report_is_one_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
