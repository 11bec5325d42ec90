/* doctor.h: `wallet-worker doctor`: is this database in the shape the worker
 * needs (indexes, migrations, query plans), and is the ledger consistent?
 * Read-only.
 *
 * DESIGN
 * - The checks are pure functions over facts (ww_doctor_check_*): index
 *   documents as listIndexes returns them, migration records, explain replies,
 *   wallet documents, the ledger entries of marker keys. They take `now` and
 *   append findings to a report; they do no I/O, so the unit tests drive them
 *   from tables of hand-made documents.
 * - ww_doctor_run is the thin shell: it reads the facts (one listIndexes per
 *   collection, the schema_migrations records, one explain per hot query, one
 *   pass over the wallets with a projection, the ledger entries of old
 *   markers in $in batches, the ledger entries whose walletId and status
 *   disagree) and calls the checks.
 * - What the expected indexes are comes from migrate.c (ww_migrate_index):
 *   one place defines every index.
 * - A finding is a PROBLEM (exit 1) or a NOTE (printed, exit 0). Every code
 *   has one piece of advice and one docs/troubleshooting.md section. */
#ifndef WW_DOCTOR_H
#define WW_DOCTOR_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "db.h"
#include "error.h"

#define WW_DOCTOR_MAX_FINDINGS 200
#define WW_DOCTOR_MAX_INDEXES 128
#define WW_DOCTOR_MAX_APPLIED 64
#define WW_DOCTOR_MAX_PLANS 16
#define WW_DOCTOR_DEFAULT_MARKER_AGE_MINUTES 15

typedef enum { WW_DOCTOR_NOTE = 0, WW_DOCTOR_PROBLEM = 1 } ww_doctor_level_t;

typedef struct {
    const char *section; /* "schema", "plans", "ledger" (static) */
    const char *code;    /* e.g. "index_missing" (static; see ww_doctor_advice) */
    ww_doctor_level_t level;
    char subject[192];   /* what it is about: an index, a migration, a wallet */
    char detail[384];
} ww_doctor_finding_t;

typedef struct {
    char query[48];      /* e.g. "ledger_by_idempotency_key" */
    char collection[32];
    char expected[64];   /* the index it should use */
    const char *verdict; /* "uses_index", "other_index", "collection_scan", "no_collection",
                            "sqlite_plan" (FerretDB), "unrecognised", "unavailable" (static) */
    char used_index[128];
    char plan[384];      /* the winning plan's stages, or the server's own plan text */
} ww_doctor_plan_t;

typedef struct {
    ww_doctor_finding_t findings[WW_DOCTOR_MAX_FINDINGS];
    int n_findings;
    int not_listed; /* findings past WW_DOCTOR_MAX_FINDINGS (still counted below) */
    int problems;
    int notes;
    ww_doctor_plan_t plans[WW_DOCTOR_MAX_PLANS];
    int n_plans;
    char server[96];
    char database[64];
    int migrations_applied;
    int migrations_pending;
    int64_t wallets_checked;
    int64_t markers_seen;
    int64_t markers_old;
    int64_t markers_prunable;
    int64_t prunable_wallets;
    int64_t ledger_contradictions_checked;
    int marker_age_minutes;
} ww_doctor_report_t;

/* Appends a finding (printf-style detail). Counts it even when the list is full. */
void ww_doctor_add(ww_doctor_report_t *r, const char *section, const char *code,
                   ww_doctor_level_t level, const char *subject, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* What to do about a finding of this code, and the docs/troubleshooting.md
 * anchor that explains it (both static, never NULL). */
void ww_doctor_advice(const char *code, const char **action, const char **anchor);

/* ---- schema --------------------------------------------------------------- */

/* One index as listIndexes describes it. */
typedef struct {
    char collection[32];
    char name[128];
    char keys[4][64];
    int dirs[4];
    int n_keys;       /* 5: more than 4 fields, or a non-numeric direction ("text", "2d") */
    bool unique;
    int64_t ttl_seconds; /* -1: no expireAfterSeconds */
    bool has_partial;
    char partial_status[64]; /* the {status: X} of a partialFilterExpression, "" otherwise */
} ww_doctor_index_t;

typedef struct {
    int version;
    char name[64];
    char checksum[65];
} ww_doctor_applied_t;

typedef struct {
    ww_doctor_index_t indexes[WW_DOCTOR_MAX_INDEXES];
    int n_indexes;
    ww_doctor_applied_t applied[WW_DOCTOR_MAX_APPLIED];
    int n_applied;
    bool ttl_partial_supported; /* false on FerretDB, which refuses both options */
} ww_doctor_schema_facts_t;

/* Reads one listIndexes document; false when it has no key document. */
bool ww_doctor_index_from_bson(const char *collection, const bson_t *doc, ww_doctor_index_t *out);
/* Reads one schema_migrations record; false for the lock or a foreign document. */
bool ww_doctor_applied_from_bson(const bson_t *doc, ww_doctor_applied_t *out);

/* Every index the migrations define exists with the same keys and options,
 * no duplicate the audit named (or any two indexes with one key pattern), the
 * applied migrations match this build's names and checksums, pending listed. */
void ww_doctor_check_schema(const ww_doctor_schema_facts_t *f, ww_doctor_report_t *r);

/* ---- query plans ---------------------------------------------------------- */

/* Classifies an explain reply (or records "unavailable") into r->plans and
 * adds a problem when the winning plan does not use `expected`. */
void ww_doctor_check_plan(ww_doctor_report_t *r, const char *query, const char *collection,
                          const char *expected, const bson_t *explain_reply, bool unavailable);

/* ---- ledger consistency ----------------------------------------------------- */

/* A marker (a wallet's pendingTransactions entry) old enough to matter. */
typedef struct {
    char wallet_id[25];
    char key[160];
    char marker_id[25];
    int64_t age_ms; /* -1: no createdAt */
} ww_doctor_marker_t;

/* A ledger entry of one of those keys: its key and _id. */
typedef struct {
    char key[160];
    char id[25];
} ww_doctor_ledger_key_t;

/* Balance checks on one wallet (negative, not an exact integer, unusable);
 * appends its markers older than max_age_ms to *old (a bson_realloc'd array
 * with *n_old / *cap_old, the caller frees it). */
void ww_doctor_check_wallet(ww_doctor_report_t *r, const bson_t *wallet, int64_t now_ms,
                            int64_t max_age_ms, ww_doctor_marker_t **old, size_t *n_old,
                            size_t *cap_old);

/* Old markers against the ledger entries of their keys (`ledger` sorted by
 * key with ww_doctor_sort_ledger): complete (prunable: counted), lost (the
 * key is in the ledger under another _id), or a half-written decision. May be
 * called once per batch of markers; ww_doctor_note_prunable then adds the one
 * note for the prunable ones. */
void ww_doctor_sort_ledger(ww_doctor_ledger_key_t *ledger, size_t n);
void ww_doctor_check_markers(ww_doctor_report_t *r, const ww_doctor_marker_t *old, size_t n_old,
                             const ww_doctor_ledger_key_t *ledger, size_t n_ledger,
                             int marker_age_minutes);
void ww_doctor_note_prunable(ww_doctor_report_t *r);

/* One ledger entry whose walletId and status must agree: applied,
 * insufficient_funds and invalid name a wallet, wallet_not_found does not,
 * and the status is one of those four. */
void ww_doctor_check_ledger_entry(ww_doctor_report_t *r, const bson_t *entry);

/* ---- the shell and the output ----------------------------------------------- */

typedef struct {
    int marker_age_minutes; /* default WW_DOCTOR_DEFAULT_MARKER_AGE_MINUTES */
    int64_t now_ms;         /* 0: the clock */
} ww_doctor_options_t;

/* Reads the facts and runs every check into *r (initialised here). False
 * only when the database could not be read (error set). */
bool ww_doctor_run(ww_db_t *db, const ww_doctor_options_t *opts, ww_doctor_report_t *r,
                   ww_error_t *error);

void ww_doctor_print_text(const ww_doctor_report_t *r, FILE *out);
void ww_doctor_print_json(const ww_doctor_report_t *r, FILE *out);

#endif
