/* doctor.c: see doctor.h. The pure checks come first, then the shell that
 * reads the facts, then the two printers. */
#include "doctor.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "migrate.h"

#define WALLETS "wallets"
#define LEDGER "transactions"
#define MARKERS "pendingTransactions"
#define LEDGER_IN_BATCH 200
#define CONTRADICTIONS_MAX 1000
#define MARKERS_PER_CHECK 2000

/* ---- findings and advice ------------------------------------------------------ */

void ww_doctor_add(ww_doctor_report_t *r, const char *section, const char *code,
                   ww_doctor_level_t level, const char *subject, const char *fmt, ...) {
    if (level == WW_DOCTOR_PROBLEM)
        r->problems++;
    else
        r->notes++;
    if (r->n_findings >= WW_DOCTOR_MAX_FINDINGS) {
        r->not_listed++;
        return;
    }
    ww_doctor_finding_t *f = &r->findings[r->n_findings++];
    f->section = section;
    f->code = code;
    f->level = level;
    snprintf(f->subject, sizeof f->subject, "%s", subject);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->detail, sizeof f->detail, fmt, ap);
    va_end(ap);
}

static const struct {
    const char *code;
    const char *action;
    const char *anchor;
} advice[] = {
    {"index_missing",
     "re-run its migration: delete its record (db.schema_migrations.deleteOne({_id: VERSION})) "
     "and run `wallet-worker migrate`; every step is idempotent and re-creates what is missing",
     "doctor-index-missing-or-different"},
    {"index_differs",
     "drop the index (db.COLLECTION.dropIndex(NAME)), then re-run its migration as for a missing "
     "index; the worker relies on the definition in docs/operations.md#migrations",
     "doctor-index-missing-or-different"},
    {"index_other_name", "nothing is required: the same keys and options exist under another name",
     "doctor-index-missing-or-different"},
    {"ttl_unsupported",
     "nothing to do on this server; expired invites are not deleted automatically here",
     "doctor-notes"},
    {"duplicate_index",
     "drop it (db.COLLECTION.dropIndex(NAME)): it slows every write and serves no query another "
     "index does not",
     "doctor-duplicate-index"},
    {"migration_pending", "run `wallet-worker migrate` (or let `run` do it with AUTO_MIGRATE=true)",
     "doctor-migration-pending-changed-or-unknown"},
    {"migration_changed",
     "the worker refuses this database: deploy the build whose definitions match (the record's "
     "appliedBy and appliedAt say when it ran); do not edit schema_migrations to silence it",
     "doctor-migration-pending-changed-or-unknown"},
    {"migration_unknown", "a newer build migrated this database: run that build or a newer one",
     "doctor-migration-pending-changed-or-unknown"},
    {"plan_no_index",
     "check the schema section first (a missing index); otherwise compare the plan with the "
     "expected index and look for a hint, a collation or a filter shape that defeats it",
     "doctor-a-query-does-not-use-its-index"},
    {"plan_unavailable",
     "nothing to do: this server has no explain command; run doctor against MongoDB to check plans",
     "doctor-notes"},
    {"plan_unrecognised",
     "read the server's plan yourself: it is not MongoDB's plan format", "doctor-notes"},
    {"plan_sqlite",
     "nothing to do: FerretDB answers with SQLite's plan (SCAN = the whole table is read, SEARCH "
     "... USING INDEX = an index is used); MongoDB's index choice can only be checked on MongoDB",
     "doctor-notes"},
    {"plan_no_collection", "nothing to do: the collection does not exist yet", "doctor-notes"},
    {"stale_marker",
     "a decision a crashed worker left half-written (the balance moved, the ledger entry is "
     "missing): redelivery of the command or the next command on the wallet completes it; to do "
     "it now, replay the range that holds the key (`wallet-worker replay`, idempotent)",
     "doctor-old-decision-markers"},
    {"lost_marker",
     "the key is in the ledger under another entry (the wallet_not_found race): the next decision "
     "on this wallet, or a replay of the key, gives the amount back and removes the marker",
     "doctor-old-decision-markers"},
    {"markers_prunable",
     "nothing to do: the next decision on each wallet prunes them",
     "doctor-old-decision-markers"},
    {"negative_balance",
     "the worker never writes a balance below zero: find the writer (the wallet's ledger, newest "
     "first, and the backend's logs) and correct the balance; debits fail as insufficient_funds "
     "meanwhile",
     "doctor-negative-fractional-or-unusable-balance"},
    {"fractional_balance",
     "commands on this wallet are dead-lettered as processing_failed: set availablePaise to the "
     "right whole number of paise, then re-drive its dead letters",
     "doctor-negative-fractional-or-unusable-balance"},
    {"unusable_balance",
     "commands on this wallet are dead-lettered as processing_failed: give it an integer "
     "availablePaise, then re-drive its dead letters",
     "doctor-negative-fractional-or-unusable-balance"},
    {"ledger_contradiction",
     "the worker never writes such an entry: find who did; a redelivery of the key is answered "
     "from it as it is",
     "doctor-ledger-entry-contradicts-itself"},
};

void ww_doctor_advice(const char *code, const char **action, const char **anchor) {
    for (size_t i = 0; i < sizeof advice / sizeof advice[0]; i++)
        if (strcmp(advice[i].code, code) == 0) {
            *action = advice[i].action;
            *anchor = advice[i].anchor;
            return;
        }
    *action = "see docs/troubleshooting.md";
    *anchor = "wallet-worker-doctor-reports-a-problem";
}

/* ---- small bson readers ---------------------------------------------------------- */

static const char *doc_str(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* An _id (or other id) as text: ObjectId hex, a string, or a number. */
static void doc_id(const bson_t *doc, const char *key, char *out, size_t cap) {
    bson_iter_t it;
    snprintf(out, cap, "?");
    if (!bson_iter_init_find(&it, doc, key)) return;
    if (BSON_ITER_HOLDS_OID(&it)) {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&it), hex);
        snprintf(out, cap, "%s", hex);
    } else if (BSON_ITER_HOLDS_UTF8(&it)) {
        snprintf(out, cap, "%s", bson_iter_utf8(&it, NULL));
    } else if (BSON_ITER_HOLDS_INT(&it)) {
        snprintf(out, cap, "%lld", (long long)bson_iter_as_int64(&it));
    }
}

static bool sub_doc(const bson_iter_t *it, bson_t *out) {
    uint32_t len;
    const uint8_t *data;
    if (!BSON_ITER_HOLDS_DOCUMENT(it) && !BSON_ITER_HOLDS_ARRAY(it)) return false;
    if (BSON_ITER_HOLDS_DOCUMENT(it))
        bson_iter_document(it, &len, &data);
    else
        bson_iter_array(it, &len, &data);
    return bson_init_static(out, data, len);
}

/* ---- schema ------------------------------------------------------------------- */

bool ww_doctor_index_from_bson(const char *collection, const bson_t *doc, ww_doctor_index_t *out) {
    memset(out, 0, sizeof *out);
    out->ttl_seconds = -1;
    snprintf(out->collection, sizeof out->collection, "%s", collection);
    const char *name = doc_str(doc, "name");
    snprintf(out->name, sizeof out->name, "%s", name ? name : "");
    bson_iter_t it, k;
    bson_t sub;
    if (!bson_iter_init_find(&it, doc, "key") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &k))
        return false;
    while (bson_iter_next(&k)) {
        if (out->n_keys >= 4 || !BSON_ITER_HOLDS_NUMBER(&k)) {
            out->n_keys = 5;
            break;
        }
        snprintf(out->keys[out->n_keys], sizeof out->keys[0], "%s", bson_iter_key(&k));
        out->dirs[out->n_keys++] = (int)bson_iter_as_int64(&k);
    }
    if (bson_iter_init_find(&it, doc, "unique")) out->unique = bson_iter_as_bool(&it);
    if (bson_iter_init_find(&it, doc, "expireAfterSeconds") && BSON_ITER_HOLDS_NUMBER(&it))
        out->ttl_seconds = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, doc, "partialFilterExpression") && sub_doc(&it, &sub)) {
        out->has_partial = true;
        const char *st = doc_str(&sub, "status");
        snprintf(out->partial_status, sizeof out->partial_status, "%s", st ? st : "");
    }
    return true;
}

bool ww_doctor_applied_from_bson(const bson_t *doc, ww_doctor_applied_t *out) {
    memset(out, 0, sizeof *out);
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&it)) return false;
    out->version = (int)bson_iter_as_int64(&it);
    const char *s = doc_str(doc, "name");
    snprintf(out->name, sizeof out->name, "%s", s ? s : "");
    s = doc_str(doc, "checksum");
    snprintf(out->checksum, sizeof out->checksum, "%s", s ? s : "");
    return true;
}

static bool same_keys(const ww_doctor_index_t *ix, const ww_migrate_index_t *want) {
    int n = 0;
    while (n < 4 && want->keys[n]) n++;
    if (ix->n_keys != n) return false;
    for (int k = 0; k < n; k++)
        if (strcmp(ix->keys[k], want->keys[k]) != 0 || ix->dirs[k] != want->dirs[k]) return false;
    return true;
}

static bool same_pattern(const ww_doctor_index_t *a, const ww_doctor_index_t *b) {
    if (a->n_keys != b->n_keys || a->n_keys > 4 || strcmp(a->collection, b->collection) != 0)
        return false;
    for (int k = 0; k < a->n_keys; k++)
        if (strcmp(a->keys[k], b->keys[k]) != 0 || a->dirs[k] != b->dirs[k]) return false;
    return true;
}

static void keys_text(const ww_migrate_index_t *want, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "{");
    for (int k = 0; k < 4 && want->keys[k] && n < cap; k++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s: %d", k ? ", " : "", want->keys[k],
                              want->dirs[k]);
    if (n < cap) snprintf(out + n, cap - n, "}");
}

static void ix_text(const ww_doctor_index_t *ix, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "{");
    for (int k = 0; k < ix->n_keys && k < 4 && n < cap; k++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s: %d", k ? ", " : "", ix->keys[k],
                              ix->dirs[k]);
    if (n < cap) n += (size_t)snprintf(out + n, cap - n, "%s}", ix->n_keys > 4 ? ", ..." : "");
    if (n < cap && ix->unique) n += (size_t)snprintf(out + n, cap - n, " unique");
    if (n < cap && ix->ttl_seconds >= 0)
        n += (size_t)snprintf(out + n, cap - n, " expireAfterSeconds=%lld",
                              (long long)ix->ttl_seconds);
    if (n < cap && ix->has_partial)
        snprintf(out + n, cap - n, " partial={status: \"%s\"}", ix->partial_status);
}

/* Why `ix` is not the index `want` describes ("" when it is). */
static void differences(const ww_doctor_index_t *ix, const ww_migrate_index_t *want, char *out,
                        size_t cap) {
    out[0] = '\0';
    char w[160];
    keys_text(want, w, sizeof w);
    if (!same_keys(ix, want))
        snprintf(out, cap, "keys differ (want %s)", w);
    else if (ix->unique != want->unique)
        snprintf(out, cap, "%s", want->unique ? "not unique" : "unique, not expected to be");
    else if (want->ttl_seconds > 0 && ix->ttl_seconds != want->ttl_seconds)
        snprintf(out, cap, "expireAfterSeconds is not %d", (int)want->ttl_seconds);
    else if (want->ttl_seconds == 0 && ix->ttl_seconds >= 0)
        snprintf(out, cap, "a TTL index (expireAfterSeconds=%lld) deletes documents the worker "
                 "needs", (long long)ix->ttl_seconds);
    else if (want->partial_status &&
             (!ix->has_partial || strcmp(ix->partial_status, want->partial_status) != 0))
        snprintf(out, cap, "partialFilterExpression is not {status: \"%s\"}", want->partial_status);
    else if (!want->partial_status && ix->has_partial)
        snprintf(out, cap, "partial (indexes only some documents)");
}

static const ww_doctor_applied_t *applied_version(const ww_doctor_schema_facts_t *f, int version) {
    for (int i = 0; i < f->n_applied; i++)
        if (f->applied[i].version == version) return &f->applied[i];
    return NULL;
}

static void check_migrations(const ww_doctor_schema_facts_t *f, ww_doctor_report_t *r) {
    char subject[96];
    for (int i = 0; i < ww_migrate_count(); i++) {
        int v = ww_migrate_version(i);
        snprintf(subject, sizeof subject, "migration %03d_%s", v, ww_migrate_name(i));
        const ww_doctor_applied_t *a = applied_version(f, v);
        if (!a) {
            r->migrations_pending++;
            ww_doctor_add(r, "schema", "migration_pending", WW_DOCTOR_PROBLEM, subject,
                          "not applied to this database");
            continue;
        }
        r->migrations_applied++;
        char want[65];
        ww_migrate_checksum(i, want);
        if (a->name[0] && strcmp(a->name, ww_migrate_name(i)) != 0)
            ww_doctor_add(r, "schema", "migration_changed", WW_DOCTOR_PROBLEM, subject,
                          "recorded under the name \"%s\"", a->name);
        else if (strcmp(a->checksum, want) != 0)
            ww_doctor_add(r, "schema", "migration_changed", WW_DOCTOR_PROBLEM, subject,
                          "applied with checksum %.12s..., this build defines it as %.12s...",
                          a->checksum[0] ? a->checksum : "(none)", want);
    }
    for (int i = 0; i < f->n_applied; i++) {
        bool known = false;
        for (int k = 0; k < ww_migrate_count(); k++) known |= ww_migrate_version(k) == f->applied[i].version;
        if (known) continue;
        snprintf(subject, sizeof subject, "migration %03d_%s", f->applied[i].version,
                 f->applied[i].name);
        ww_doctor_add(r, "schema", "migration_unknown", WW_DOCTOR_NOTE, subject,
                      "applied, but this build does not know it");
    }
}

static void check_indexes(const ww_doctor_schema_facts_t *f, ww_doctor_report_t *r) {
    char subject[192], why[256], have[256];
    for (int i = 0; i < ww_migrate_index_count(); i++) {
        ww_migrate_index_t want;
        ww_migrate_index(i, &want);
        if (!applied_version(f, want.version)) continue; /* its migration is the finding */
        snprintf(subject, sizeof subject, "%s.%s", want.collection, want.name);
        const ww_doctor_index_t *named = NULL, *same = NULL;
        for (int k = 0; k < f->n_indexes; k++) {
            const ww_doctor_index_t *ix = &f->indexes[k];
            if (strcmp(ix->collection, want.collection) != 0) continue;
            if (strcmp(ix->name, want.name) == 0) named = ix;
            char d[256];
            differences(ix, &want, d, sizeof d);
            if (!d[0] && !same) same = ix;
        }
        if (named) {
            differences(named, &want, why, sizeof why);
            if (why[0]) {
                ix_text(named, have, sizeof have);
                ww_doctor_add(r, "schema", "index_differs", WW_DOCTOR_PROBLEM, subject,
                              "%s; found %s (migration %03d)", why, have, want.version);
            }
        } else if (same) {
            ww_doctor_add(r, "schema", "index_other_name", WW_DOCTOR_NOTE, subject,
                          "exists as %s", same->name);
        } else if (want.ttl_seconds > 0 && !f->ttl_partial_supported) {
            ww_doctor_add(r, "schema", "ttl_unsupported", WW_DOCTOR_NOTE, subject,
                          "absent: this server refuses expireAfterSeconds and "
                          "partialFilterExpression (migration %03d recorded it with a warning)",
                          want.version);
        } else {
            char k[160];
            keys_text(&want, k, sizeof k);
            ww_doctor_add(r, "schema", "index_missing", WW_DOCTOR_PROBLEM, subject,
                          "missing: %s%s%s (migration %03d)", k, want.unique ? " unique" : "",
                          want.ttl_seconds > 0 ? " TTL" : "", want.version);
        }
    }
    /* duplicates: the audit's (a key pattern allowed only as the TTL index),
     * then any two indexes of one collection with one key pattern */
    bool flagged[WW_DOCTOR_MAX_INDEXES] = {false};
    for (int d = 0; d < ww_migrate_duplicate_count(); d++) {
        ww_migrate_index_t dup, ttl;
        ww_migrate_duplicate(d, &dup);
        for (int k = 0; k < f->n_indexes; k++) {
            const ww_doctor_index_t *ix = &f->indexes[k];
            if (strcmp(ix->collection, dup.collection) != 0 || !same_keys(ix, &dup)) continue;
            bool is_ttl = false;
            for (int c = 0; c < ww_migrate_index_count() && !is_ttl; c++) {
                ww_migrate_index(c, &ttl);
                char why2[256];
                differences(ix, &ttl, why2, sizeof why2);
                is_ttl = ttl.ttl_seconds > 0 && strcmp(ttl.collection, ix->collection) == 0 &&
                         !why2[0];
            }
            if (is_ttl) continue;
            flagged[k] = true;
            snprintf(subject, sizeof subject, "%s.%s", ix->collection, ix->name);
            ix_text(ix, have, sizeof have);
            ww_doctor_add(r, "schema", "duplicate_index", WW_DOCTOR_PROBLEM, subject,
                          "%s: the duplicate the backend's audit named (migration %03d drops it)",
                          have, dup.version);
        }
    }
    for (int a = 0; a < f->n_indexes; a++)
        for (int b = a + 1; b < f->n_indexes; b++) {
            if (flagged[b] || flagged[a] || !same_pattern(&f->indexes[a], &f->indexes[b]))
                continue;
            flagged[b] = true;
            snprintf(subject, sizeof subject, "%s.%s", f->indexes[b].collection,
                     f->indexes[b].name);
            ix_text(&f->indexes[b], have, sizeof have);
            ww_doctor_add(r, "schema", "duplicate_index", WW_DOCTOR_PROBLEM, subject,
                          "%s: the same keys as %s", have, f->indexes[a].name);
        }
}

void ww_doctor_check_schema(const ww_doctor_schema_facts_t *f, ww_doctor_report_t *r) {
    check_migrations(f, r);
    check_indexes(f, r);
}

/* ---- query plans ------------------------------------------------------------------ */

typedef struct {
    char chain[384];
    size_t len;
    char ixscan_expected[128];
    char ixscan_other[128];
    bool collscan;
    bool eof;
    int stages;
} walk_t;

static void walk_plan(const bson_t *doc, walk_t *w, const char *expected, int depth) {
    if (depth > 16) return;
    bson_iter_t it;
    const char *stage = doc_str(doc, "stage");
    if (stage) {
        const char *ixname = doc_str(doc, "indexName");
        w->stages++;
        if (w->len < sizeof w->chain)
            w->len += (size_t)snprintf(w->chain + w->len, sizeof w->chain - w->len, "%s%s%s%s%s",
                                       w->len ? " > " : "", stage, ixname ? "(" : "",
                                       ixname ? ixname : "", ixname ? ")" : "");
        if (strstr(stage, "IXSCAN") && ixname) {
            if (strcmp(ixname, expected) == 0)
                snprintf(w->ixscan_expected, sizeof w->ixscan_expected, "%s", ixname);
            else if (!w->ixscan_other[0])
                snprintf(w->ixscan_other, sizeof w->ixscan_other, "%s", ixname);
        }
        if (strcmp(stage, "COLLSCAN") == 0) w->collscan = true;
        if (strcmp(stage, "EOF") == 0) w->eof = true;
    }
    if (!bson_iter_init(&it, doc)) return;
    while (bson_iter_next(&it)) {
        bson_t sub;
        if (sub_doc(&it, &sub)) walk_plan(&sub, w, expected, depth + 1);
    }
}

/* FerretDB's SQLite handler answers with SQLite's EXPLAIN QUERY PLAN rows:
 * queryPlanner.Plan = ["id=2 parent=0 notused=0 detail=SCAN t", ...]. Writes
 * the details ("SCAN t; SEARCH t USING INDEX i (...)") and returns true when
 * the reply has that shape. */
static bool sqlite_plan(const bson_t *reply, char *out, size_t cap) {
    bson_iter_t it, rows;
    bson_t planner;
    if (!bson_iter_init_find(&it, reply, "queryPlanner") || !sub_doc(&it, &planner) ||
        !bson_iter_init_find(&rows, &planner, "Plan") || !BSON_ITER_HOLDS_ARRAY(&rows) ||
        !bson_iter_recurse(&rows, &it))
        return false;
    size_t n = 0;
    out[0] = '\0';
    while (bson_iter_next(&it)) {
        if (!BSON_ITER_HOLDS_UTF8(&it)) return false;
        const char *row = bson_iter_utf8(&it, NULL), *d = strstr(row, "detail=");
        if (!d) return false;
        if (n < cap) n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "; " : "", d + 7);
    }
    return n > 0;
}

/* The server's queryPlanner (or whole reply) as compact JSON, for a plan
 * this code cannot read (FerretDB's are SQL). */
static void raw_plan(const bson_t *reply, char *out, size_t cap) {
    bson_iter_t it;
    bson_t sub;
    const bson_t *what = reply;
    if (bson_iter_init_find(&it, reply, "queryPlanner") && sub_doc(&it, &sub)) what = &sub;
    size_t len;
    char *json = bson_as_relaxed_extended_json(what, &len);
    snprintf(out, cap, "%s", json ? json : "");
    bson_free(json);
}

void ww_doctor_check_plan(ww_doctor_report_t *r, const char *query, const char *collection,
                          const char *expected, const bson_t *reply, bool unavailable) {
    if (r->n_plans >= WW_DOCTOR_MAX_PLANS) return;
    ww_doctor_plan_t *p = &r->plans[r->n_plans++];
    memset(p, 0, sizeof *p);
    snprintf(p->query, sizeof p->query, "%s", query);
    snprintf(p->collection, sizeof p->collection, "%s", collection);
    snprintf(p->expected, sizeof p->expected, "%s", expected);
    char subject[128];
    snprintf(subject, sizeof subject, "%s (%s)", query, collection);
    if (unavailable) {
        p->verdict = "unavailable";
        snprintf(p->plan, sizeof p->plan, "explain unavailable on this server");
        ww_doctor_add(r, "plans", "plan_unavailable", WW_DOCTOR_NOTE, subject,
                      "explain unavailable on this server");
        return;
    }
    walk_t w;
    memset(&w, 0, sizeof w);
    bson_iter_t it, wp;
    bson_t planner, winning;
    if (bson_iter_init_find(&it, reply, "queryPlanner") && sub_doc(&it, &planner) &&
        bson_iter_init_find(&wp, &planner, "winningPlan") && sub_doc(&wp, &winning))
        walk_plan(&winning, &w, expected, 0);
    if (w.ixscan_expected[0]) {
        p->verdict = "uses_index";
        snprintf(p->used_index, sizeof p->used_index, "%s", w.ixscan_expected);
        snprintf(p->plan, sizeof p->plan, "%s", w.chain);
    } else if (w.ixscan_other[0] || w.collscan) {
        p->verdict = w.ixscan_other[0] ? "other_index" : "collection_scan";
        snprintf(p->used_index, sizeof p->used_index, "%s", w.ixscan_other);
        snprintf(p->plan, sizeof p->plan, "%s", w.chain);
        ww_doctor_add(r, "plans", "plan_no_index", WW_DOCTOR_PROBLEM, subject,
                      "the winning plan is %s, not an IXSCAN of %s", w.chain, expected);
    } else if (w.eof && w.stages == 1) {
        p->verdict = "no_collection";
        snprintf(p->plan, sizeof p->plan, "%s", w.chain);
        ww_doctor_add(r, "plans", "plan_no_collection", WW_DOCTOR_NOTE, subject,
                      "the collection does not exist (plan EOF)");
    } else if (sqlite_plan(reply, p->plan, sizeof p->plan)) {
        p->verdict = "sqlite_plan";
        ww_doctor_add(r, "plans", "plan_sqlite", WW_DOCTOR_NOTE, subject,
                      "FerretDB's SQLite plan: %.300s", p->plan);
    } else {
        p->verdict = "unrecognised";
        raw_plan(reply, p->plan, sizeof p->plan);
        ww_doctor_add(r, "plans", "plan_unrecognised", WW_DOCTOR_NOTE, subject,
                      "the server's plan: %.300s", p->plan);
    }
}

/* ---- ledger consistency ----------------------------------------------------------------- */

/* availablePaise: exact integer (int32, int64, integral double) or not. */
static void check_balance(ww_doctor_report_t *r, const bson_t *wallet, const char *subject) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, wallet, "availablePaise")) {
        ww_doctor_add(r, "ledger", "unusable_balance", WW_DOCTOR_PROBLEM, subject,
                      "availablePaise is missing");
        return;
    }
    switch (bson_iter_type(&it)) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64: {
        int64_t b = bson_iter_as_int64(&it);
        if (b < 0)
            ww_doctor_add(r, "ledger", "negative_balance", WW_DOCTOR_PROBLEM, subject,
                          "availablePaise is %lld", (long long)b);
        return;
    }
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(&it);
        if (!isfinite(d) || d != floor(d) || fabs(d) > 9007199254740991.0)
            ww_doctor_add(r, "ledger", "fractional_balance", WW_DOCTOR_PROBLEM, subject,
                          "availablePaise is the double %.17g, not an exact integer", d);
        else if (d < 0)
            ww_doctor_add(r, "ledger", "negative_balance", WW_DOCTOR_PROBLEM, subject,
                          "availablePaise is %.0f", d);
        return;
    }
    default:
        ww_doctor_add(r, "ledger", "unusable_balance", WW_DOCTOR_PROBLEM, subject,
                      "availablePaise has BSON type %d, not a number", (int)bson_iter_type(&it));
    }
}

void ww_doctor_check_wallet(ww_doctor_report_t *r, const bson_t *wallet, int64_t now_ms,
                            int64_t max_age_ms, ww_doctor_marker_t **old, size_t *n_old,
                            size_t *cap_old) {
    char wid[64], subject[96];
    doc_id(wallet, "_id", wid, sizeof wid);
    snprintf(subject, sizeof subject, "wallet %s", wid);
    r->wallets_checked++;
    check_balance(r, wallet, subject);

    bson_iter_t it, m;
    if (!bson_iter_init_find(&it, wallet, MARKERS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &m))
        return;
    while (bson_iter_next(&m)) {
        bson_t marker;
        if (!BSON_ITER_HOLDS_DOCUMENT(&m) || !sub_doc(&m, &marker)) continue;
        r->markers_seen++;
        bson_iter_t f;
        int64_t age = -1;
        if (bson_iter_init_find(&f, &marker, "createdAt") && BSON_ITER_HOLDS_DATE_TIME(&f))
            age = now_ms - bson_iter_date_time(&f);
        if (age >= 0 && age < max_age_ms) continue; /* in flight, or just decided */
        r->markers_old++;
        if (*n_old == *cap_old) {
            *cap_old = *cap_old ? *cap_old * 2 : 64;
            *old = bson_realloc(*old, *cap_old * sizeof **old);
        }
        ww_doctor_marker_t *o = &(*old)[(*n_old)++];
        memset(o, 0, sizeof *o);
        snprintf(o->wallet_id, sizeof o->wallet_id, "%.24s", wid);
        const char *key = doc_str(&marker, "idempotencyKey");
        snprintf(o->key, sizeof o->key, "%s", key ? key : "");
        doc_id(&marker, "_id", o->marker_id, sizeof o->marker_id);
        o->age_ms = age;
    }
}

static int cmp_ledger(const void *a, const void *b) {
    return strcmp(((const ww_doctor_ledger_key_t *)a)->key, ((const ww_doctor_ledger_key_t *)b)->key);
}

void ww_doctor_sort_ledger(ww_doctor_ledger_key_t *ledger, size_t n) {
    if (n) qsort(ledger, n, sizeof *ledger, cmp_ledger);
}

void ww_doctor_check_markers(ww_doctor_report_t *r, const ww_doctor_marker_t *old, size_t n_old,
                             const ww_doctor_ledger_key_t *ledger, size_t n_ledger,
                             int marker_age_minutes) {
    const char *last_wallet = "";
    for (size_t i = 0; i < n_old; i++) {
        const ww_doctor_marker_t *m = &old[i];
        ww_doctor_ledger_key_t probe;
        snprintf(probe.key, sizeof probe.key, "%s", m->key);
        const ww_doctor_ledger_key_t *e =
            n_ledger ? bsearch(&probe, ledger, n_ledger, sizeof *ledger, cmp_ledger) : NULL;
        char subject[256], age[48];
        snprintf(subject, sizeof subject, "wallet %s key %s", m->wallet_id, m->key);
        if (m->age_ms >= 0)
            snprintf(age, sizeof age, "%lld min old", (long long)(m->age_ms / 60000));
        else
            snprintf(age, sizeof age, "of unknown age (no createdAt)");
        if (e && strcmp(e->id, m->marker_id) == 0) {
            r->markers_prunable++;
            if (strcmp(last_wallet, m->wallet_id) != 0) r->prunable_wallets++;
            last_wallet = m->wallet_id;
        } else if (e) {
            ww_doctor_add(r, "ledger", "lost_marker", WW_DOCTOR_PROBLEM, subject,
                          "marker %s, %s, but the ledger holds the key as entry %s", m->marker_id,
                          age, e->id);
        } else {
            ww_doctor_add(r, "ledger", "stale_marker", WW_DOCTOR_PROBLEM, subject,
                          "marker %s, %s (older than %d min), has no ledger entry", m->marker_id,
                          age, marker_age_minutes);
        }
    }
}

void ww_doctor_note_prunable(ww_doctor_report_t *r) {
    if (r->markers_prunable)
        ww_doctor_add(r, "ledger", "markers_prunable", WW_DOCTOR_NOTE, "markers",
                      "%lld marker(s) on %lld wallet(s) older than %d min are complete (their "
                      "ledger entries exist)",
                      (long long)r->markers_prunable, (long long)r->prunable_wallets,
                      r->marker_age_minutes);
}

void ww_doctor_check_ledger_entry(ww_doctor_report_t *r, const bson_t *entry) {
    char id[64], subject[256];
    doc_id(entry, "_id", id, sizeof id);
    const char *key = doc_str(entry, "idempotencyKey");
    snprintf(subject, sizeof subject, "ledger entry %s key %s", id, key ? key : "(none)");
    r->ledger_contradictions_checked++;
    const char *status = doc_str(entry, "status");
    bson_iter_t it;
    bool has_wallet = bson_iter_init_find(&it, entry, "walletId") && !BSON_ITER_HOLDS_NULL(&it);
    if (!status || (strcmp(status, "applied") != 0 && strcmp(status, "insufficient_funds") != 0 &&
                    strcmp(status, "invalid") != 0 && strcmp(status, "wallet_not_found") != 0)) {
        ww_doctor_add(r, "ledger", "ledger_contradiction", WW_DOCTOR_PROBLEM, subject,
                      "status %s%s%s is not one the worker writes", status ? "\"" : "",
                      status ? status : "missing", status ? "\"" : "");
    } else if (strcmp(status, "wallet_not_found") == 0 && has_wallet) {
        ww_doctor_add(r, "ledger", "ledger_contradiction", WW_DOCTOR_PROBLEM, subject,
                      "status wallet_not_found but walletId is set");
    } else if (strcmp(status, "wallet_not_found") != 0 && !has_wallet) {
        ww_doctor_add(r, "ledger", "ledger_contradiction", WW_DOCTOR_PROBLEM, subject,
                      "status %s but no walletId", status);
    }
}

/* ---- the shell ------------------------------------------------------------------------ */

/* The collections whose indexes the migrations define. */
static int collections(const char **out, int cap) {
    int n = 0;
    for (int i = 0; i < ww_migrate_index_count(); i++) {
        ww_migrate_index_t ix;
        ww_migrate_index(i, &ix);
        bool seen = false;
        for (int k = 0; k < n; k++) seen |= strcmp(out[k], ix.collection) == 0;
        if (!seen && n < cap) out[n++] = ix.collection;
    }
    return n;
}

typedef struct {
    ww_doctor_schema_facts_t *f;
    const char *collection;
} ix_ctx_t;

static bool collect_index(const bson_t *doc, void *vctx) {
    ix_ctx_t *c = vctx;
    if (c->f->n_indexes >= WW_DOCTOR_MAX_INDEXES) return false;
    if (ww_doctor_index_from_bson(c->collection, doc, &c->f->indexes[c->f->n_indexes]))
        c->f->n_indexes++;
    return true;
}

static bool collect_applied(const bson_t *doc, void *vctx) {
    ww_doctor_schema_facts_t *f = vctx;
    if (f->n_applied < WW_DOCTOR_MAX_APPLIED && ww_doctor_applied_from_bson(doc, &f->applied[f->n_applied]))
        f->n_applied++;
    return true;
}

/* buildInfo: which server, and whether it takes TTL and partial indexes
 * (FerretDB refuses both; it says so with a ferretdbVersion field). */
static bool read_server(ww_db_t *db, ww_doctor_report_t *r, bool *ttl_ok, ww_error_t *error) {
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "buildInfo", 1);
    bool ok = ww_db_read_command(db, &cmd, &reply, error);
    if (ok) {
        const char *v = doc_str(&reply, "version"), *fv = doc_str(&reply, "ferretdbVersion");
        *ttl_ok = fv == NULL;
        if (fv)
            snprintf(r->server, sizeof r->server, "FerretDB %s (MongoDB %s compatible)", fv,
                     v ? v : "?");
        else
            snprintf(r->server, sizeof r->server, "server version %s", v ? v : "?");
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

static bool gather_schema(ww_db_t *db, ww_doctor_report_t *r, ww_error_t *error) {
    ww_doctor_schema_facts_t *f = bson_malloc0(sizeof *f);
    bool ok = read_server(db, r, &f->ttl_partial_supported, error);
    const char *colls[16];
    int n = collections(colls, 16);
    for (int i = 0; ok && i < n; i++) {
        ix_ctx_t c = {f, colls[i]};
        ok = ww_db_list_indexes(db, colls[i], collect_index, &c, error);
    }
    bson_t all = BSON_INITIALIZER;
    if (ok) ok = ww_db_find(db, WW_SCHEMA_MIGRATIONS, &all, NULL, collect_applied, f, error);
    bson_destroy(&all);
    if (ok) ww_doctor_check_schema(f, r);
    bson_free(f);
    return ok;
}

/* ---- the hot queries ---- */

static void q_ledger_key(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "idempotencyKey", "doctor-probe");
}
static void q_wallet_owner(bson_t *f, bson_t *s) {
    (void)s;
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "000000000000000000000000");
    BSON_APPEND_OID(f, "ownerUserId", &oid);
}
static void q_tx_by_wallet(bson_t *f, bson_t *s) {
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "000000000000000000000000");
    BSON_APPEND_OID(f, "walletId", &oid);
    BSON_APPEND_INT32(s, "createdAt", -1);
}
static void q_invite_code(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "code", "doctor-probe");
}
static void q_sweeper(bson_t *f, bson_t *s) {
    bson_t lte;
    BSON_APPEND_UTF8(f, "status", "active");
    BSON_APPEND_DOCUMENT_BEGIN(f, "expiresAt", &lte);
    BSON_APPEND_DATE_TIME(&lte, "$lte", 0);
    bson_append_document_end(f, &lte);
    BSON_APPEND_INT32(s, "expiresAt", 1);
}
static void q_users_brand(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "brandCode", "doctor-probe");
    BSON_APPEND_UTF8(f, "roles", "brand");
    BSON_APPEND_NULL(f, "deletedAt");
}
static void q_users_mediator(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "mediatorCode", "doctor-probe");
    BSON_APPEND_UTF8(f, "roles", "mediator");
    BSON_APPEND_NULL(f, "deletedAt");
}
static void q_users_roles(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "roles", "agency");
    BSON_APPEND_UTF8(f, "status", "active");
    BSON_APPEND_NULL(f, "deletedAt");
}
static void q_campaigns(bson_t *f, bson_t *s) {
    (void)s;
    BSON_APPEND_UTF8(f, "allowedAgencyCodes", "doctor-probe");
}

static const struct {
    const char *id;
    const char *collection;
    const char *index;
    void (*build)(bson_t *filter, bson_t *sort);
} hot_queries[] = {
    {"ledger_by_idempotency_key", "transactions", "idempotencyKey_1", q_ledger_key},
    {"wallets_by_owner", "wallets", "ownerUserId_1", q_wallet_owner},
    {"transactions_by_wallet_newest", "transactions", "walletId_1_createdAt_-1", q_tx_by_wallet},
    {"invites_by_code", "invites", "code_1", q_invite_code},
    {"invite_sweeper_overdue", "invites", "status_1_expiresAt_1", q_sweeper},
    {"users_by_brand", "users", "brandCode_1_roles_1_deletedAt_1", q_users_brand},
    {"users_by_mediator", "users", "mediatorCode_1_roles_1_deletedAt_1", q_users_mediator},
    {"users_by_roles_status", "users", "roles_1_status_1_deletedAt_1", q_users_roles},
    {"campaigns_by_agency", "campaigns", "allowedAgencyCodes_1", q_campaigns},
};

static bool gather_plans(ww_db_t *db, ww_doctor_report_t *r, ww_error_t *error) {
    for (size_t i = 0; i < sizeof hot_queries / sizeof hot_queries[0]; i++) {
        bson_t filter = BSON_INITIALIZER, sort = BSON_INITIALIZER, reply;
        hot_queries[i].build(&filter, &sort);
        bool unavailable = false;
        bool ok = ww_db_explain_find(db, hot_queries[i].collection, &filter,
                                     bson_empty(&sort) ? NULL : &sort, &reply, &unavailable, error);
        if (ok)
            ww_doctor_check_plan(r, hot_queries[i].id, hot_queries[i].collection,
                                 hot_queries[i].index, &reply, unavailable);
        bson_destroy(&reply);
        bson_destroy(&sort);
        bson_destroy(&filter);
        if (!ok) return false;
    }
    return true;
}

/* ---- the ledger ---- */

typedef struct {
    ww_doctor_ledger_key_t *keys;
    size_t n, cap;
} ledger_ctx_t;

typedef struct {
    ww_db_t *db;
    ww_doctor_report_t *r;
    int64_t now_ms, max_age_ms;
    ww_doctor_marker_t *old;
    size_t n_old, cap_old;
    ledger_ctx_t ledger;
    bool failed;
    ww_error_t *error;
} wallet_ctx_t;

static bool check_old_markers(wallet_ctx_t *c);

static bool on_wallet(const bson_t *doc, void *vctx) {
    wallet_ctx_t *c = vctx;
    ww_doctor_check_wallet(c->r, doc, c->now_ms, c->max_age_ms, &c->old, &c->n_old, &c->cap_old);
    /* bounded memory: the old markers are checked a batch at a time */
    if (c->n_old >= MARKERS_PER_CHECK && !check_old_markers(c)) {
        c->failed = true;
        return false;
    }
    return true;
}

static bool on_ledger_key(const bson_t *doc, void *vctx) {
    ledger_ctx_t *c = vctx;
    const char *key = doc_str(doc, "idempotencyKey");
    if (!key) return true;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->keys = bson_realloc(c->keys, c->cap * sizeof *c->keys);
    }
    snprintf(c->keys[c->n].key, sizeof c->keys[0].key, "%s", key);
    doc_id(doc, "_id", c->keys[c->n].id, sizeof c->keys[0].id);
    c->n++;
    return true;
}

/* The ledger entries of the old markers' keys, LEDGER_IN_BATCH keys per query. */
static bool read_marker_entries(ww_db_t *db, const wallet_ctx_t *w, ledger_ctx_t *l,
                                ww_error_t *error) {
    bool ok = true;
    for (size_t start = 0; ok && start < w->n_old; start += LEDGER_IN_BATCH) {
        bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, k, in, proj;
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "idempotencyKey", &k);
        BSON_APPEND_ARRAY_BEGIN(&k, "$in", &in);
        for (size_t i = start; i < w->n_old && i < start + LEDGER_IN_BATCH; i++) {
            char idx[16];
            const char *ks;
            bson_uint32_to_string((uint32_t)(i - start), &ks, idx, sizeof idx);
            BSON_APPEND_UTF8(&in, ks, w->old[i].key);
        }
        bson_append_array_end(&k, &in);
        bson_append_document_end(&filter, &k);
        BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
        BSON_APPEND_INT32(&proj, "idempotencyKey", 1);
        bson_append_document_end(&opts, &proj);
        ok = ww_db_find(db, LEDGER, &filter, &opts, on_ledger_key, l, error);
        bson_destroy(&filter);
        bson_destroy(&opts);
    }
    return ok;
}

static bool on_contradiction(const bson_t *doc, void *vctx) {
    ww_doctor_check_ledger_entry(vctx, doc);
    return true;
}

/* Ledger entries whose walletId and status may disagree (a superset; the
 * pure check decides), at most CONTRADICTIONS_MAX. */
static bool read_contradictions(ww_db_t *db, ww_doctor_report_t *r, ww_error_t *error) {
    static const char *const named[] = {"applied", "insufficient_funds", "invalid"};
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, or, a, b, c, ne, in, nin, arr;
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
    BSON_APPEND_UTF8(&a, "status", "wallet_not_found");
    BSON_APPEND_DOCUMENT_BEGIN(&a, "walletId", &ne);
    BSON_APPEND_NULL(&ne, "$ne");
    bson_append_document_end(&a, &ne);
    bson_append_document_end(&or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
    BSON_APPEND_DOCUMENT_BEGIN(&b, "status", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < 3; i++) {
        char idx[4];
        const char *ks;
        bson_uint32_to_string((uint32_t)i, &ks, idx, sizeof idx);
        BSON_APPEND_UTF8(&arr, ks, named[i]);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&b, &in);
    BSON_APPEND_NULL(&b, "walletId");
    bson_append_document_end(&or, &b);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "2", &c);
    BSON_APPEND_DOCUMENT_BEGIN(&c, "status", &nin);
    BSON_APPEND_ARRAY_BEGIN(&nin, "$nin", &arr);
    for (int i = 0; i < 4; i++) {
        char idx[4];
        const char *ks;
        bson_uint32_to_string((uint32_t)i, &ks, idx, sizeof idx);
        BSON_APPEND_UTF8(&arr, ks, i < 3 ? named[i] : "wallet_not_found");
    }
    bson_append_array_end(&nin, &arr);
    bson_append_document_end(&c, &nin);
    bson_append_document_end(&or, &c);
    bson_append_array_end(&filter, &or);
    BSON_APPEND_INT64(&opts, "limit", CONTRADICTIONS_MAX);
    bool ok = ww_db_find(db, LEDGER, &filter, &opts, on_contradiction, r, error);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

/* The ledger entries of the collected old markers, then the check; empties
 * the batch. */
static bool check_old_markers(wallet_ctx_t *c) {
    c->ledger.n = 0;
    if (!read_marker_entries(c->db, c, &c->ledger, c->error)) return false;
    ww_doctor_sort_ledger(c->ledger.keys, c->ledger.n);
    ww_doctor_check_markers(c->r, c->old, c->n_old, c->ledger.keys, c->ledger.n,
                            c->r->marker_age_minutes);
    c->n_old = 0;
    return true;
}

static bool gather_ledger(ww_db_t *db, ww_doctor_report_t *r, int64_t now_ms, ww_error_t *error) {
    wallet_ctx_t w = {.db = db, .r = r, .now_ms = now_ms,
                      .max_age_ms = (int64_t)r->marker_age_minutes * 60000, .error = error};
    bson_t all = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "availablePaise", 1);
    BSON_APPEND_INT32(&proj, MARKERS, 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_INT32(&opts, "batchSize", 1000);
    bool ok = ww_db_find(db, WALLETS, &all, &opts, on_wallet, &w, error) && !w.failed;
    if (ok) ok = check_old_markers(&w);
    if (ok) {
        ww_doctor_note_prunable(r);
        ok = read_contradictions(db, r, error);
    }
    bson_free(w.old);
    bson_free(w.ledger.keys);
    bson_destroy(&all);
    bson_destroy(&opts);
    return ok;
}

bool ww_doctor_run(ww_db_t *db, const ww_doctor_options_t *opts, ww_doctor_report_t *r,
                   ww_error_t *error) {
    memset(r, 0, sizeof *r);
    r->marker_age_minutes = opts && opts->marker_age_minutes > 0
                                ? opts->marker_age_minutes
                                : WW_DOCTOR_DEFAULT_MARKER_AGE_MINUTES;
    int64_t now = opts && opts->now_ms ? opts->now_ms : ww_clock_now_ms();
    snprintf(r->database, sizeof r->database, "%s", ww_db_name(db));
    return gather_schema(db, r, error) && gather_plans(db, r, error) &&
           gather_ledger(db, r, now, error);
}

/* ---- output ---------------------------------------------------------------------------- */

static const char *const sections[] = {"schema", "plans", "ledger"};

static void section_counts(const ww_doctor_report_t *r, const char *section, int *problems,
                           int *notes) {
    *problems = *notes = 0;
    for (int i = 0; i < r->n_findings; i++)
        if (strcmp(r->findings[i].section, section) == 0)
            ++*(r->findings[i].level == WW_DOCTOR_PROBLEM ? problems : notes);
}

void ww_doctor_print_text(const ww_doctor_report_t *r, FILE *out) {
    fprintf(out, "wallet-worker doctor: database %s on %s\n", r->database, r->server);
    for (size_t s = 0; s < 3; s++) {
        int p, n;
        section_counts(r, sections[s], &p, &n);
        fprintf(out, "\n%s: %s", sections[s], p ? "PROBLEMS" : "ok");
        if (s == 0)
            fprintf(out, " (migrations: %d applied, %d pending)", r->migrations_applied,
                    r->migrations_pending);
        if (s == 2)
            fprintf(out, " (%lld wallet(s), %lld marker(s), %lld older than %d min, %lld "
                    "prunable)", (long long)r->wallets_checked, (long long)r->markers_seen,
                    (long long)r->markers_old, r->marker_age_minutes,
                    (long long)r->markers_prunable);
        fputc('\n', out);
        if (s == 1)
            for (int i = 0; i < r->n_plans; i++) {
                const ww_doctor_plan_t *pl = &r->plans[i];
                fprintf(out, "  %-30s %-12s want %-36s %s", pl->query, pl->collection,
                        pl->expected, pl->verdict);
                if (strcmp(pl->verdict, "unrecognised") == 0)
                    fprintf(out, "\n      %.300s\n", pl->plan);
                else
                    fprintf(out, ": %s\n", pl->plan);
            }
        for (int i = 0; i < r->n_findings; i++) {
            const ww_doctor_finding_t *f = &r->findings[i];
            if (strcmp(f->section, sections[s]) != 0) continue;
            if (s == 1 && f->level == WW_DOCTOR_NOTE) continue; /* shown in the plan list */
            const char *action, *anchor;
            ww_doctor_advice(f->code, &action, &anchor);
            fprintf(out, "  %s %s: %s: %s\n", f->level == WW_DOCTOR_PROBLEM ? "PROBLEM" : "note",
                    f->code, f->subject, f->detail);
            fprintf(out, "      what to do: %s (docs/troubleshooting.md#%s)\n", action, anchor);
        }
    }
    if (r->not_listed)
        fprintf(out, "\n%d more finding(s) not listed (use --json for the counts)\n", r->not_listed);
    fprintf(out, "\n%s: %d problem(s), %d note(s)\n", r->problems ? "PROBLEMS" : "OK", r->problems,
            r->notes);
}

void ww_doctor_print_json(const ww_doctor_report_t *r, FILE *out) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(r->problems == 0));
    json_object_object_add(o, "database", json_object_new_string(r->database));
    json_object_object_add(o, "server", json_object_new_string(r->server));
    json_object_object_add(o, "problems", json_object_new_int(r->problems));
    json_object_object_add(o, "notes", json_object_new_int(r->notes));
    json_object_object_add(o, "notListed", json_object_new_int(r->not_listed));
    json_object_object_add(o, "markerAgeMinutes", json_object_new_int(r->marker_age_minutes));
    json_object *mig = json_object_new_object();
    json_object_object_add(mig, "applied", json_object_new_int(r->migrations_applied));
    json_object_object_add(mig, "pending", json_object_new_int(r->migrations_pending));
    json_object_object_add(o, "migrations", mig);
    json_object *plans = json_object_new_array();
    for (int i = 0; i < r->n_plans; i++) {
        const ww_doctor_plan_t *p = &r->plans[i];
        json_object *j = json_object_new_object();
        json_object_object_add(j, "query", json_object_new_string(p->query));
        json_object_object_add(j, "collection", json_object_new_string(p->collection));
        json_object_object_add(j, "expectedIndex", json_object_new_string(p->expected));
        json_object_object_add(j, "verdict", json_object_new_string(p->verdict));
        json_object_object_add(j, "usedIndex",
                               p->used_index[0] ? json_object_new_string(p->used_index) : NULL);
        json_object_object_add(j, "plan", json_object_new_string(p->plan));
        json_object_array_add(plans, j);
    }
    json_object_object_add(o, "plans", plans);
    json_object *led = json_object_new_object();
    json_object_object_add(led, "walletsChecked", json_object_new_int64(r->wallets_checked));
    json_object_object_add(led, "markers", json_object_new_int64(r->markers_seen));
    json_object_object_add(led, "markersOld", json_object_new_int64(r->markers_old));
    json_object_object_add(led, "markersPrunable", json_object_new_int64(r->markers_prunable));
    json_object_object_add(o, "ledger", led);
    json_object *fs = json_object_new_array();
    for (int i = 0; i < r->n_findings; i++) {
        const ww_doctor_finding_t *f = &r->findings[i];
        const char *action, *anchor;
        ww_doctor_advice(f->code, &action, &anchor);
        char doc[160];
        snprintf(doc, sizeof doc, "docs/troubleshooting.md#%s", anchor);
        json_object *j = json_object_new_object();
        json_object_object_add(j, "section", json_object_new_string(f->section));
        json_object_object_add(j, "code", json_object_new_string(f->code));
        json_object_object_add(j, "level", json_object_new_string(
                                               f->level == WW_DOCTOR_PROBLEM ? "problem" : "note"));
        json_object_object_add(j, "subject", json_object_new_string(f->subject));
        json_object_object_add(j, "detail", json_object_new_string(f->detail));
        json_object_object_add(j, "action", json_object_new_string(action));
        json_object_object_add(j, "doc", json_object_new_string(doc));
        json_object_array_add(fs, j);
    }
    json_object_object_add(o, "findings", fs);
    fprintf(out, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
}
