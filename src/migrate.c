/* migrate.c: see migrate.h. */
#include "migrate.h"

#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "sha256.h"

#define INVITE_TTL_SECONDS 2592000 /* 30 days; matches invite.h */

typedef enum { STEP_CREATE = 1, STEP_DROP_UNLESS } step_kind_t;

typedef struct {
    step_kind_t kind;
    const char *collection;
    const char *name;    /* index name (create) */
    const char *keys[4]; /* NULL-terminated */
    int dirs[4];
    bool unique;
    bool ttl_expired; /* expireAfterSeconds=30d + partialFilterExpression {status:"expired"} */
} step_t;

typedef struct {
    int version;
    const char *name;
    const char *description;
    const step_t *steps;
    size_t n_steps;
} migration_t;

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const step_t ledger_steps[] = {
    {STEP_CREATE, "transactions", "idempotencyKey_1", {"idempotencyKey"}, {1}, true, false},
    {STEP_CREATE, "transactions", "walletId_1", {"walletId"}, {1}, false, false},
    {STEP_CREATE, "transactions", "walletId_1_createdAt_-1", {"walletId", "createdAt"}, {1, -1},
     false, false},
    {STEP_CREATE, "wallets", "ownerUserId_1", {"ownerUserId"}, {1}, false, false},
};

static const step_t invite_steps[] = {
    {STEP_CREATE, "invites", "code_1", {"code"}, {1}, true, false},
    {STEP_CREATE, "invites", "parentCode_1_status_1_createdAt_-1",
     {"parentCode", "status", "createdAt"}, {1, 1, -1}, false, false},
    {STEP_CREATE, "invites", "status_1_expiresAt_1", {"status", "expiresAt"}, {1, 1}, false,
     false},
    /* the backend's old duplicate single-field expiresAt index (Mongoose's
     * duplicate-index warning) goes; the TTL index below replaces it */
    {STEP_DROP_UNLESS, "invites", NULL, {"expiresAt"}, {1}, false, true},
    {STEP_CREATE, "invites", "expiresAt_1", {"expiresAt"}, {1}, false, true},
};

static const step_t user_steps[] = {
    {STEP_CREATE, "users", "brandCode_1_roles_1_deletedAt_1", {"brandCode", "roles", "deletedAt"},
     {1, 1, 1}, false, false},
    {STEP_CREATE, "users", "mediatorCode_1_roles_1_deletedAt_1",
     {"mediatorCode", "roles", "deletedAt"}, {1, 1, 1}, false, false},
    {STEP_CREATE, "users", "roles_1_status_1_deletedAt_1", {"roles", "status", "deletedAt"},
     {1, 1, 1}, false, false},
};

/* The backend audit's future work: campaigns are looked up by the agency codes
 * allowed to run them (an array: the index is multikey). */
static const step_t campaign_steps[] = {
    {STEP_CREATE, "campaigns", "allowedAgencyCodes_1", {"allowedAgencyCodes"}, {1}, false, false},
};

static const migration_t migrations[] = {
    {1, "ledger_indexes",
     "transactions: unique idempotencyKey, walletId, {walletId, createdAt:-1}; wallets: ownerUserId",
     ledger_steps, N(ledger_steps)},
    {2, "invite_indexes",
     "invites: unique code, agency hierarchy, {status, expiresAt}, 30-day TTL on expired invites; "
     "drops the old duplicate expiresAt index",
     invite_steps, N(invite_steps)},
    {3, "user_indexes", "users: the backend audit's compound indexes on roles and deletedAt",
     user_steps, N(user_steps)},
    {4, "campaign_indexes", "campaigns: multikey allowedAgencyCodes (the backend audit's backlog)",
     campaign_steps, N(campaign_steps)},
};

int ww_migrate_count(void) { return (int)N(migrations); }
const char *ww_migrate_name(int i) { return migrations[i].name; }
int ww_migrate_version(int i) { return migrations[i].version; }

/* ---- the index definitions, for doctor ------------------------------------------- */

/* The k-th step of the given kind across all migrations, in order. */
static bool nth_step(step_kind_t kind, int n, const migration_t **m_out, const step_t **s_out) {
    for (size_t i = 0; i < N(migrations); i++)
        for (size_t k = 0; k < migrations[i].n_steps; k++)
            if (migrations[i].steps[k].kind == kind && n-- == 0) {
                *m_out = &migrations[i];
                *s_out = &migrations[i].steps[k];
                return true;
            }
    return false;
}

static int count_steps(step_kind_t kind) {
    int n = 0;
    for (size_t i = 0; i < N(migrations); i++)
        for (size_t k = 0; k < migrations[i].n_steps; k++) n += migrations[i].steps[k].kind == kind;
    return n;
}

static void describe(step_kind_t kind, int i, ww_migrate_index_t *out) {
    memset(out, 0, sizeof *out);
    const migration_t *m;
    const step_t *s;
    if (!nth_step(kind, i, &m, &s)) return;
    out->version = m->version;
    out->collection = s->collection;
    out->name = s->name;
    for (int k = 0; k < 4; k++) {
        out->keys[k] = s->keys[k];
        out->dirs[k] = s->dirs[k];
    }
    out->unique = s->unique;
    /* a drop step's TTL flag names the index it spares, not the duplicate */
    if (kind == STEP_CREATE && s->ttl_expired) {
        out->ttl_seconds = INVITE_TTL_SECONDS;
        out->partial_status = "expired";
    }
}

int ww_migrate_index_count(void) { return count_steps(STEP_CREATE); }
void ww_migrate_index(int i, ww_migrate_index_t *out) { describe(STEP_CREATE, i, out); }
int ww_migrate_duplicate_count(void) { return count_steps(STEP_DROP_UNLESS); }
void ww_migrate_duplicate(int i, ww_migrate_index_t *out) { describe(STEP_DROP_UNLESS, i, out); }

/* ---- checksums ------------------------------------------------------------------ */

/* The canonical rendering: one line per step. Part of the on-disk contract:
 * changing it changes every checksum. */
static size_t render_step(const step_t *s, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "%s %s %s", s->kind == STEP_CREATE ? "create" : "drop-unless",
                                s->collection, s->name ? s->name : "-");
    for (int k = 0; k < 4 && s->keys[k] && n < cap; k++)
        n += (size_t)snprintf(out + n, cap - n, " %s:%d", s->keys[k], s->dirs[k]);
    if (n < cap)
        n += (size_t)snprintf(out + n, cap - n, "%s%s\n", s->unique ? " unique" : "",
                              s->ttl_expired ? " ttl=2592000 partial=status:expired" : "");
    return n < cap ? n : cap - 1;
}

void ww_migrate_checksum(int i, char out[65]) {
    const migration_t *m = &migrations[i];
    ww_sha256_t ctx;
    ww_sha256_init(&ctx);
    char line[512];
    int n = snprintf(line, sizeof line, "v1 %d %s\n", m->version, m->name);
    ww_sha256_update(&ctx, line, (size_t)n);
    for (size_t k = 0; k < m->n_steps; k++) {
        size_t len = render_step(&m->steps[k], line, sizeof line);
        ww_sha256_update(&ctx, line, len);
    }
    uint8_t d[WW_SHA256_DIGEST_LEN];
    ww_sha256_final(&ctx, d);
    for (int k = 0; k < WW_SHA256_DIGEST_LEN; k++) snprintf(out + 2 * k, 3, "%02x", d[k]);
}

/* ---- steps ---------------------------------------------------------------------- */

/* Server codes for "this index option is not available here": 238
 * NotImplemented (FerretDB), 197 InvalidIndexSpecificationOption, 67
 * CannotCreateIndex. */
static bool option_unsupported(int32_t code) { return code == 238 || code == 197 || code == 67; }

static void append_keys(bson_t *doc, const char *field, const step_t *s) {
    bson_t key;
    BSON_APPEND_DOCUMENT_BEGIN(doc, field, &key);
    for (int k = 0; k < 4 && s->keys[k]; k++) BSON_APPEND_INT32(&key, s->keys[k], s->dirs[k]);
    bson_append_document_end(doc, &key);
}

static bool create_index(ww_db_t *db, const step_t *s, ww_error_t *error) {
    bson_t cmd = BSON_INITIALIZER, reply, arr, ix;
    BSON_APPEND_UTF8(&cmd, "createIndexes", s->collection);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &ix);
    append_keys(&ix, "key", s);
    BSON_APPEND_UTF8(&ix, "name", s->name);
    if (s->unique) BSON_APPEND_BOOL(&ix, "unique", true);
    if (s->ttl_expired) {
        bson_t pfe;
        BSON_APPEND_INT32(&ix, "expireAfterSeconds", INVITE_TTL_SECONDS);
        BSON_APPEND_DOCUMENT_BEGIN(&ix, "partialFilterExpression", &pfe);
        BSON_APPEND_UTF8(&pfe, "status", "expired");
        bson_append_document_end(&ix, &pfe);
    }
    bson_append_document_end(&arr, &ix);
    bson_append_array_end(&cmd, &arr);
    ww_error_t e;
    ww_error_clear(&e);
    bool ok = ww_db_command(db, &cmd, &reply, &e);
    if (!ok && !e.retryable && s->ttl_expired && option_unsupported(e.code)) {
        ww_warn("migrate",
                "index not created: the server does not support its options; expired invites "
                "will NOT be deleted automatically on this server",
                WW_STR("collection", s->collection), WW_STR("index", s->name),
                WW_INT("expireAfterSeconds", INVITE_TTL_SECONDS),
                WW_STR("partialFilterExpression", "{status:\"expired\"}"), WW_INT("code", e.code),
                WW_STR("error", e.message));
        ok = true;
    } else if (!ok && !e.retryable && (e.code == 85 || e.code == 86)) {
        /* IndexOptionsConflict / IndexKeySpecsConflict: an index with this
         * name or key exists with other options, made by someone else */
        ww_warn("migrate", "index not created: an index with this name or key exists with other "
                "options; left as it is", WW_STR("collection", s->collection), WW_STR("index", s->name),
                WW_STR("error", e.message));
        ok = true;
    } else if (!ok && error) {
        *error = e;
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

/* true when `key` (a document) equals the step's key pattern */
static bool same_keys(const bson_t *key, const step_t *s) {
    bson_iter_t it;
    int k = 0;
    if (!bson_iter_init(&it, key)) return false;
    while (bson_iter_next(&it)) {
        if (k >= 4 || !s->keys[k] || strcmp(bson_iter_key(&it), s->keys[k]) != 0) return false;
        if (!BSON_ITER_HOLDS_NUMBER(&it) || bson_iter_as_int64(&it) != s->dirs[k]) return false;
        k++;
    }
    return k < 4 ? s->keys[k] == NULL : true;
}

/* the index has the 30-day TTL on expired invites exactly */
static bool is_ttl_expired(const bson_t *ix) {
    bson_iter_t it, pf;
    if (!bson_iter_init_find(&it, ix, "expireAfterSeconds") || !BSON_ITER_HOLDS_NUMBER(&it) ||
        bson_iter_as_int64(&it) != INVITE_TTL_SECONDS)
        return false;
    if (!bson_iter_init_find(&it, ix, "partialFilterExpression") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &pf) || !bson_iter_find(&pf, "status") ||
        !BSON_ITER_HOLDS_UTF8(&pf))
        return false;
    return strcmp(bson_iter_utf8(&pf, NULL), "expired") == 0;
}

/* Drops every index on the collection with the step's key pattern that is
 * not the TTL-on-expired index (the backend's plain duplicate). */
static bool drop_unless(ww_db_t *db, const step_t *s, bool dry_run, FILE *report,
                        ww_error_t *error) {
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "listIndexes", s->collection);
    ww_error_t e;
    ww_error_clear(&e);
    bool ok = ww_db_command(db, &cmd, &reply, &e);
    bson_destroy(&cmd);
    if (!ok) {
        bson_destroy(&reply);
        if (e.code == 26) return true; /* NamespaceNotFound: no collection, nothing to drop */
        if (error) *error = e;
        return false;
    }
    char victims[8][128];
    int n = 0;
    bson_iter_t it, cur, batch;
    if (bson_iter_init_find(&it, &reply, "cursor") && bson_iter_recurse(&it, &cur) &&
        bson_iter_find(&cur, "firstBatch") && bson_iter_recurse(&cur, &batch)) {
        while (bson_iter_next(&batch) && n < 8) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&batch)) continue;
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&batch, &len, &data);
            bson_t ix, key;
            if (!bson_init_static(&ix, data, len)) continue;
            bson_iter_t f;
            if (!bson_iter_init_find(&f, &ix, "key") || !BSON_ITER_HOLDS_DOCUMENT(&f)) continue;
            bson_iter_document(&f, &len, &data);
            if (!bson_init_static(&key, data, len) || !same_keys(&key, s)) continue;
            if (s->ttl_expired && is_ttl_expired(&ix)) continue;
            if (bson_iter_init_find(&f, &ix, "name") && BSON_ITER_HOLDS_UTF8(&f))
                snprintf(victims[n++], sizeof victims[0], "%s", bson_iter_utf8(&f, NULL));
        }
    }
    bson_destroy(&reply);
    for (int i = 0; i < n && ok; i++) {
        if (report)
            fprintf(report, "  %s index %s.%s (the old duplicate expiresAt index)\n",
                    dry_run ? "would drop" : "dropping", s->collection, victims[i]);
        ww_info("migrate", dry_run ? "would drop index" : "dropping index",
                WW_STR("collection", s->collection), WW_STR("index", victims[i]));
        if (dry_run) continue;
        bson_t drop = BSON_INITIALIZER, r2;
        BSON_APPEND_UTF8(&drop, "dropIndexes", s->collection);
        BSON_APPEND_UTF8(&drop, "index", victims[i]);
        ww_error_clear(&e);
        ok = ww_db_command(db, &drop, &r2, &e) || e.code == 27; /* 27: already gone */
        if (!ok && error) *error = e;
        bson_destroy(&r2);
        bson_destroy(&drop);
    }
    return ok;
}

/* ---- records and the lock ----------------------------------------------------------- */

typedef struct {
    int version[64];
    char checksum[64][65];
    int n;
} applied_t;

static bool collect_applied(const bson_t *doc, void *ctx) {
    applied_t *a = ctx;
    bson_iter_t it;
    if (a->n >= 64 || !bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&it))
        return true; /* the lock document, or something foreign */
    a->version[a->n] = (int)bson_iter_as_int64(&it);
    a->checksum[a->n][0] = '\0';
    if (bson_iter_init_find(&it, doc, "checksum") && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(a->checksum[a->n], 65, "%s", bson_iter_utf8(&it, NULL));
    a->n++;
    return true;
}

static bool read_applied(ww_db_t *db, applied_t *a, ww_error_t *error) {
    a->n = 0;
    bson_t all = BSON_INITIALIZER;
    bool ok = ww_db_find(db, WW_SCHEMA_MIGRATIONS, &all, NULL, collect_applied, a, error);
    bson_destroy(&all);
    return ok;
}

static const char *applied_checksum(const applied_t *a, int version) {
    for (int i = 0; i < a->n; i++)
        if (a->version[i] == version) return a->checksum[i];
    return NULL;
}

/* Pending count; fails on a checksum mismatch. */
static bool compare(const applied_t *a, int *pending, ww_error_t *error) {
    *pending = 0;
    for (int i = 0; i < ww_migrate_count(); i++) {
        const char *have = applied_checksum(a, migrations[i].version);
        if (!have) {
            ++*pending;
            continue;
        }
        char want[65];
        ww_migrate_checksum(i, want);
        if (strcmp(have, want) != 0) {
            ww_error_set(error, WW_ERR_DB, 0, false,
                         "migration %03d_%s was applied with checksum %.12s..., this build "
                         "defines it as %.12s...: refusing to run against a schema it did not make",
                         migrations[i].version, migrations[i].name, have, want);
            return false;
        }
    }
    for (int i = 0; i < a->n; i++) {
        bool known = false;
        for (int k = 0; k < ww_migrate_count(); k++) known |= migrations[k].version == a->version[i];
        if (!known)
            ww_warn("migrate", "migration is applied but unknown to this build (a newer "
                    "version ran here?)", WW_INT("version", a->version[i]));
    }
    return true;
}

bool ww_migrate_check(ww_db_t *db, int *pending, ww_error_t *error) {
    applied_t *a = bson_malloc0(sizeof *a);
    bool ok = read_applied(db, a, error) && compare(a, pending, error);
    bson_free(a);
    return ok;
}

#define LOCK_LEASE_MS 600000

static bool take_lock(ww_db_t *db, const char *owner, bool *taken, ww_error_t *error) {
    *taken = false;
    int64_t now = ww_clock_now_ms();
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", "lock");
    BSON_APPEND_UTF8(&doc, "owner", owner);
    BSON_APPEND_DATE_TIME(&doc, "expiresAt", now + LOCK_LEASE_MS);
    bool dup;
    bool ok = ww_db_insert_one(db, WW_SCHEMA_MIGRATIONS, &doc, &dup, error);
    bson_destroy(&doc);
    if (!ok) return false;
    if (!dup) {
        *taken = true;
        return true;
    }
    /* held: take it over only if its lease ran out (its holder died) */
    bson_t filter = BSON_INITIALIZER, upd = BSON_INITIALIZER, lt, set;
    BSON_APPEND_UTF8(&filter, "_id", "lock");
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "expiresAt", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now);
    bson_append_document_end(&filter, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_UTF8(&set, "owner", owner);
    BSON_APPEND_DATE_TIME(&set, "expiresAt", now + LOCK_LEASE_MS);
    bson_append_document_end(&upd, &set);
    int64_t matched = 0;
    ok = ww_db_update_one(db, WW_SCHEMA_MIGRATIONS, &filter, &upd, NULL, &matched, NULL, error);
    *taken = ok && matched == 1;
    bson_destroy(&filter);
    bson_destroy(&upd);
    return ok;
}

static void release_lock(ww_db_t *db, const char *owner) {
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", "lock");
    BSON_APPEND_UTF8(&filter, "owner", owner);
    ww_error_t e;
    int64_t n;
    if (!ww_db_delete_many(db, WW_SCHEMA_MIGRATIONS, &filter, &n, &e))
        ww_warn("migrate", "could not release the migration lock (it expires by itself)",
                WW_STR("error", e.message));
    bson_destroy(&filter);
}

static bool record(ww_db_t *db, int i, const char *owner, int64_t took_ms, ww_error_t *error) {
    char sum[65];
    ww_migrate_checksum(i, sum);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_INT32(&doc, "_id", migrations[i].version);
    BSON_APPEND_UTF8(&doc, "name", migrations[i].name);
    BSON_APPEND_UTF8(&doc, "description", migrations[i].description);
    BSON_APPEND_UTF8(&doc, "checksum", sum);
    BSON_APPEND_DATE_TIME(&doc, "appliedAt", ww_clock_now_ms());
    BSON_APPEND_UTF8(&doc, "appliedBy", owner);
    BSON_APPEND_INT64(&doc, "durationMs", took_ms);
    bool dup;
    bool ok = ww_db_insert_one(db, WW_SCHEMA_MIGRATIONS, &doc, &dup, error);
    bson_destroy(&doc);
    return ok; /* dup: another migrator recorded the same thing */
}

bool ww_migrate_run(ww_db_t *db, const ww_migrate_options_t *opts, int *applied,
                    ww_error_t *error) {
    ww_migrate_options_t defaults = {0};
    if (!opts) opts = &defaults;
    int32_t lock_wait = opts->lock_wait_ms > 0 ? opts->lock_wait_ms : 120000;
    if (applied) *applied = 0;
    char owner[128], host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "%s:%d", host, (int)getpid());

    applied_t *a = bson_malloc0(sizeof *a);
    int pending = 0;
    bool ok = read_applied(db, a, error) && compare(a, &pending, error);
    if (!ok || pending == 0 || opts->dry_run) goto dry;

    bool taken = false;
    int64_t deadline = ww_clock_mono_ms() + lock_wait;
    for (;;) {
        ok = take_lock(db, owner, &taken, error);
        if (!ok || taken) break;
        /* someone else is migrating: wait, and maybe find it all done */
        if (opts->progress) opts->progress();
        ww_clock_sleep_ms(500, NULL);
        ok = read_applied(db, a, error) && compare(a, &pending, error);
        if (!ok || pending == 0) goto out;
        if (ww_clock_mono_ms() > deadline) {
            ww_error_set(error, WW_ERR_DB, 0, true,
                         "another process holds the migration lock (schema_migrations {_id: "
                         "\"lock\"}); it expires by itself after %d s", LOCK_LEASE_MS / 1000);
            ok = false;
            goto out;
        }
    }
    if (!ok) goto out;
    /* under the lock: what is still pending? */
    ok = read_applied(db, a, error) && compare(a, &pending, error);
    for (int i = 0; ok && i < ww_migrate_count(); i++) {
        if (applied_checksum(a, migrations[i].version)) continue;
        int64_t t0 = ww_clock_mono_ms();
        for (size_t k = 0; ok && k < migrations[i].n_steps; k++) {
            const step_t *s = &migrations[i].steps[k];
            if (opts->progress) opts->progress();
            ok = s->kind == STEP_CREATE ? create_index(db, s, error)
                                        : drop_unless(db, s, false, opts->report, error);
        }
        if (ok) ok = record(db, i, owner, ww_clock_mono_ms() - t0, error);
        if (ok) {
            if (applied) ++*applied;
            ww_info("migrate", "applied", WW_INT("version", migrations[i].version),
                    WW_STR("name", migrations[i].name), WW_INT("ms", ww_clock_mono_ms() - t0));
            if (opts->report)
                fprintf(opts->report, "applied   %03d_%s: %s\n", migrations[i].version,
                        migrations[i].name, migrations[i].description);
        }
    }
    release_lock(db, owner);
    goto out;

dry:
    if (ok && opts->report) {
        for (int i = 0; i < ww_migrate_count(); i++) {
            bool done = applied_checksum(a, migrations[i].version) != NULL;
            fprintf(opts->report, "%s %03d_%s: %s\n", done ? "applied  " : "pending  ",
                    migrations[i].version, migrations[i].name, migrations[i].description);
            if (done || !opts->dry_run) continue;
            for (size_t k = 0; k < migrations[i].n_steps; k++) {
                const step_t *s = &migrations[i].steps[k];
                char line[512];
                render_step(s, line, sizeof line);
                if (s->kind == STEP_DROP_UNLESS) {
                    ww_error_t e;
                    if (!drop_unless(db, s, true, opts->report, &e)) fprintf(opts->report,
                        "  (cannot list indexes: %s)\n", e.message);
                } else {
                    fprintf(opts->report, "  would %s", line);
                }
            }
        }
    }
    if (ok && applied && opts->dry_run) *applied = pending;
out:
    bson_free(a);
    return ok;
}
