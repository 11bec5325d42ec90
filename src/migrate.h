/* migrate.h: versioned, ordered schema migrations recorded in the
 * `schema_migrations` collection.
 *
 * DESIGN
 * - Each migration is data: an ordered list of steps (create an index with
 *   these keys and options, drop an index that has this key pattern but not
 *   these options). Its checksum is the SHA-256 of a canonical rendering of
 *   those steps, so changing an applied migration is detected: the worker
 *   refuses to run rather than guess which definition the database has.
 * - Every step is idempotent (creating an existing index is a no-op; a drop
 *   finds nothing the second time) and a migration is recorded by inserting
 *   {_id: version, ...} under the collection's unique _id. So two workers
 *   migrating at once cannot corrupt anything: the worst case is the same
 *   index requested twice. A leased lock document ({_id: "lock"}) makes the
 *   usual case orderly: one migrates, the others wait and find it done.
 * - Index creation is one index per command (FerretDB 1.24 drops the
 *   connection when one command lists several existing indexes). An option
 *   the server does not implement (FerretDB: TTL, partialFilterExpression)
 *   gets ONE warning naming the index and the option, and the migration
 *   continues: on MongoDB the index is created exactly as written. */
#ifndef WW_MIGRATE_H
#define WW_MIGRATE_H

#include <stdbool.h>
#include <stdio.h>

#include "db.h"
#include "error.h"

#define WW_SCHEMA_MIGRATIONS "schema_migrations"

typedef struct {
    bool dry_run;   /* say what would be done; write nothing */
    FILE *report;   /* one line per migration (NULL: log only) */
    int32_t lock_wait_ms; /* how long to wait for another migrator (default 120000) */
    void (*progress)(void); /* called between steps (the worker stamps liveness) */
} ww_migrate_options_t;

/* Applies every pending migration in order. Fails (not retryable) when an
 * applied migration's checksum differs from this build's; retryable when the
 * database is unavailable. *applied (may be NULL) counts what was applied
 * now (or would be, in a dry run). */
bool ww_migrate_run(ww_db_t *db, const ww_migrate_options_t *opts, int *applied,
                    ww_error_t *error);

/* Checks, without writing, that every migration is applied with the right
 * checksum. *pending counts the missing ones; a checksum mismatch fails. */
bool ww_migrate_check(ww_db_t *db, int *pending, ww_error_t *error);

/* The migrations this build knows (for --help and tests). */
int ww_migrate_count(void);
const char *ww_migrate_name(int i);
/* hex checksum of migration i (65 bytes) */
void ww_migrate_checksum(int i, char out[65]);
int ww_migrate_version(int i);

/* One index as the migrations define it (what `doctor` expects to find).
 * Every string is static. */
typedef struct {
    int version;                /* the migration that creates (or drops) it */
    const char *collection;
    const char *name;           /* NULL for a dropped duplicate (matched by key) */
    const char *keys[4];        /* NULL-terminated */
    int dirs[4];
    bool unique;
    int32_t ttl_seconds;        /* expireAfterSeconds; 0: not a TTL index */
    const char *partial_status; /* partialFilterExpression {status: X}; NULL: none */
} ww_migrate_index_t;

/* The indexes the migrations create, in migration order: i in
 * [0, ww_migrate_index_count()). */
int ww_migrate_index_count(void);
void ww_migrate_index(int i, ww_migrate_index_t *out);
/* The duplicates the migrations drop: an index with this key pattern that is
 * not the TTL index of the same key (the backend audit's duplicate). */
int ww_migrate_duplicate_count(void);
void ww_migrate_duplicate(int i, ww_migrate_index_t *out);

#endif
