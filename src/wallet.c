/* wallet.c: see wallet.h and docs/wallet-protocol.md.
 *
 * DESIGN (why it is safe without multi-document transactions)
 * - The wallet document is the one place where decisions about its keys are
 *   serialised. Every decision (applied or insufficient_funds) is written by a
 *   single-document update guarded by the snapshot's exact version and
 *   balance, and records a marker {the full ledger entry} in the wallet's
 *   `pendingTransactions` array in the same update. Two writers deciding the
 *   same key cannot both succeed: the second one's guard no longer matches,
 *   it starts over and finds the first one's marker or ledger entry.
 * - Markers are removed only by a later guarded update (which bumps the
 *   version) and only once their ledger entry exists. A reader that takes
 *   the wallet snapshot BEFORE reading the ledger therefore always sees a
 *   decided key: either its marker is in the snapshot, or its ledger entry
 *   was written before the marker was pruned, hence before the snapshot,
 *   hence before the ledger read. This is what defeats a zombie (a consumer
 *   whose partition moved on while it was paused): whatever it read earlier,
 *   its guarded update fails once anyone has decided since its snapshot.
 * - The ledger entry is built once, inside the marker, with its _id chosen
 *   there; whoever writes it (the decider, a retry after a crash, or the next
 *   command on the same wallet completing an orphan) writes the same
 *   document, and the unique idempotencyKey index makes it happen once.
 * - wallet_not_found has no wallet to serialise on: its ledger insert is the
 *   decision. If a wallet for the owner appears and another writer applies
 *   the same key concurrently, the applier finds the wallet_not_found entry
 *   when it writes the ledger and undoes its own, never-reported effect. */
#include "wallet.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "json.h"
#include "log.h"
#include "metrics.h"

#define MARKERS "pendingTransactions"
#define MAX_MARKERS 64      /* per wallet; in practice 0-2 (in-flight keys) */
#define MAX_WALLETS 8       /* documents per owner read by a snapshot (live + holding markers) */
#define MAX_ATTEMPTS 64     /* guarded-update races before giving up (retryable) */
#define BALANCE_MAX INT64_C(9007199254740991) /* 2^53-1: exact in every client */

const char *ww_outcome_name(ww_outcome_t outcome) {
    switch (outcome) {
    case WW_OUTCOME_APPLIED: return "applied";
    case WW_OUTCOME_DUPLICATE: return "duplicate";
    case WW_OUTCOME_CONFLICT: return "conflict";
    case WW_OUTCOME_INSUFFICIENT_FUNDS: return "insufficient_funds";
    case WW_OUTCOME_WALLET_NOT_FOUND: return "wallet_not_found";
    case WW_OUTCOME_INVALID: return "invalid";
    case WW_OUTCOME_FAILED: return "failed";
    }
    return "unknown";
}

static bool outcome_from_name(const char *s, ww_outcome_t *out) {
    for (int o = WW_OUTCOME_APPLIED; o <= WW_OUTCOME_FAILED; o++) {
        if (strcmp(s, ww_outcome_name((ww_outcome_t)o)) == 0) {
            *out = (ww_outcome_t)o;
            return true;
        }
    }
    return false;
}

/* ---- reading stored numbers ------------------------------------------------ */

/* int32, int64 or an integral double within 2^53: the shapes the backend's
 * Mongoose models may have written. Anything else is unusable data. */
static bool read_exact_int(const bson_iter_t *it, int64_t *out) {
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32: *out = bson_iter_int32(it); return true;
    case BSON_TYPE_INT64: *out = bson_iter_int64(it); return true;
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(it);
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0)) return false;
        int64_t v = (int64_t)d;
        if ((double)v != d) return false;
        *out = v;
        return true;
    }
    default: return false;
    }
}

static bool doc_int(const bson_t *doc, const char *key, int64_t *out) {
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && read_exact_int(&it, out);
}

static const char *doc_str(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static bool doc_oid(const bson_t *doc, const char *key, bson_oid_t *out) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_OID(&it)) {
        bson_oid_copy(bson_iter_oid(&it), out);
        return true;
    }
    return false;
}

/* A field that is absent or null. */
static bool doc_missing_or_null(const bson_t *doc, const char *key) {
    bson_iter_t it;
    return !bson_iter_init_find(&it, doc, key) || BSON_ITER_HOLDS_NULL(&it);
}

/* ---- the ledger entry ------------------------------------------------------ */

static void append_date_now(bson_t *doc, const char *key, int64_t now_ms) {
    bson_append_date_time(doc, key, -1, now_ms);
}

static void append_reference(bson_t *doc, const ww_command_t *cmd) {
    if (!cmd->has_reference) return;
    bson_t ref;
    bson_append_document_begin(doc, "reference", -1, &ref);
    for (size_t i = 0; i < cmd->reference_count; i++) {
        const ww_command_ref_t *r = &cmd->reference[i];
        switch (r->kind) {
        case WW_COMMAND_REF_STRING:
            bson_append_utf8(&ref, r->key, -1, r->str, (int)r->str_len);
            break;
        case WW_COMMAND_REF_INT: bson_append_int64(&ref, r->key, -1, r->i); break;
        case WW_COMMAND_REF_BOOL: bson_append_bool(&ref, r->key, -1, r->b); break;
        }
    }
    bson_append_document_end(doc, &ref);
}

/* The transactions document for a decision. walletId NULL for
 * wallet_not_found. Built once and stored verbatim in the wallet's marker. */
static void build_ledger(bson_t *doc, const ww_command_t *cmd, const bson_oid_t *txid,
                         ww_outcome_t outcome, const bson_oid_t *wallet_id,
                         const bson_oid_t *owner, bool has_balance, int64_t balance_after,
                         const char *topic, int32_t partition, int64_t offset, int64_t now_ms) {
    bson_init(doc);
    BSON_APPEND_OID(doc, "_id", txid);
    BSON_APPEND_UTF8(doc, "idempotencyKey", cmd->idempotency_key);
    BSON_APPEND_UTF8(doc, "type", cmd->type == WW_COMMAND_DEBIT ? "debit" : "credit");
    BSON_APPEND_UTF8(doc, "status", ww_outcome_name(outcome));
    if (wallet_id)
        BSON_APPEND_OID(doc, "walletId", wallet_id);
    else
        BSON_APPEND_NULL(doc, "walletId");
    BSON_APPEND_OID(doc, "ownerUserId", owner);
    BSON_APPEND_INT64(doc, "amountPaise", cmd->amount_paise);
    if (has_balance)
        BSON_APPEND_INT64(doc, "balanceAfterPaise", balance_after);
    else
        BSON_APPEND_NULL(doc, "balanceAfterPaise");
    BSON_APPEND_UTF8(doc, "fingerprint", cmd->fingerprint);
    append_reference(doc, cmd);
    if (cmd->has_occurred_at) bson_append_date_time(doc, "occurredAt", -1, cmd->occurred_at_ms);
    bson_t src;
    bson_append_document_begin(doc, "source", -1, &src);
    BSON_APPEND_UTF8(&src, "topic", topic ? topic : "");
    BSON_APPEND_INT32(&src, "partition", partition);
    BSON_APPEND_INT64(&src, "offset", offset);
    bson_append_document_end(doc, &src);
    append_date_now(doc, "createdAt", now_ms);
    append_date_now(doc, "updatedAt", now_ms);
}

/* Fills a result from a stored ledger entry (ours or an earlier one). */
static bool result_from_ledger(const bson_t *entry, ww_wallet_result_t *r, ww_error_t *error) {
    const char *status = doc_str(entry, "status");
    ww_outcome_t o;
    if (!status || !outcome_from_name(status, &o)) {
        ww_error_set(error, WW_ERR_DB, 0, false, "ledger entry has no usable status");
        return false;
    }
    r->original = o;
    bson_oid_t oid;
    if (doc_oid(entry, "_id", &oid)) {
        bson_oid_to_string(&oid, r->transaction_id);
        r->has_transaction = true;
    }
    if (doc_oid(entry, "walletId", &oid)) {
        bson_oid_to_string(&oid, r->wallet_id);
        r->has_wallet = true;
    }
    doc_int(entry, "amountPaise", &r->amount_paise);
    r->has_balance = doc_int(entry, "balanceAfterPaise", &r->balance_after_paise);
    return true;
}

static void set_rejection(ww_wallet_result_t *r, ww_outcome_t o) {
    switch (o) {
    case WW_OUTCOME_INSUFFICIENT_FUNDS:
        snprintf(r->error_code, sizeof r->error_code, "insufficient_funds");
        snprintf(r->error_message, sizeof r->error_message,
                 "the wallet's available balance is lower than amountPaise");
        break;
    case WW_OUTCOME_WALLET_NOT_FOUND:
        snprintf(r->error_code, sizeof r->error_code, "wallet_not_found");
        snprintf(r->error_message, sizeof r->error_message,
                 "no live wallet exists for ownerUserId");
        break;
    case WW_OUTCOME_INVALID:
        snprintf(r->error_code, sizeof r->error_code, "balance_limit_exceeded");
        snprintf(r->error_message, sizeof r->error_message,
                 "the credit would take the balance above 2^53-1 paise");
        break;
    default: break;
    }
}

/* The key was decided before: same payload = duplicate (the first result
 * again), different payload = conflict (nothing changes). */
static bool answer_repeat(const ww_command_t *cmd, const bson_t *entry, ww_wallet_result_t *r,
                          ww_error_t *error) {
    if (!result_from_ledger(entry, r, error)) return false;
    const char *fp = doc_str(entry, "fingerprint");
    if (fp && strcmp(fp, cmd->fingerprint) == 0) {
        r->outcome = WW_OUTCOME_DUPLICATE;
        set_rejection(r, r->original);
    } else {
        /* the rejected command's own amount; nothing was recorded for it */
        r->outcome = WW_OUTCOME_CONFLICT;
        r->amount_paise = cmd->amount_paise;
        r->has_transaction = false;
        r->has_balance = false;
        snprintf(r->error_code, sizeof r->error_code, "conflict");
        snprintf(r->error_message, sizeof r->error_message,
                 "idempotencyKey was already used with a different payload");
    }
    return true;
}

/* ---- database steps ---------------------------------------------------------- */

static bool find_ledger(ww_db_t *db, const char *key, bson_t *out, bool *found,
                        ww_error_t *error) {
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "idempotencyKey", key);
    bool ok = ww_db_find_one(db, WW_TRANSACTIONS, &filter, NULL, out, found, error);
    bson_destroy(&filter);
    return ok;
}

typedef struct {
    bson_t docs[MAX_WALLETS];
    size_t n;
    size_t seen; /* documents the query returned: more than MAX_WALLETS = refused */
    int live; /* index of the live wallet, -1 when none */
} wallets_t;

static bool collect_wallet(const bson_t *doc, void *ctx) {
    wallets_t *w = ctx;
    if (++w->seen > MAX_WALLETS) return false;
    bson_copy_to(doc, &w->docs[w->n]);
    if (w->live < 0 && doc_missing_or_null(doc, "deletedAt")) w->live = (int)w->n;
    w->n++;
    return true;
}

static void wallets_destroy(wallets_t *w) {
    for (size_t i = 0; i < w->n; i++) bson_destroy(&w->docs[i]);
    w->n = 0;
}

/* The owner's wallet documents the protocol needs: the live wallet and every
 * document holding markers (a wallet soft-deleted after deciding a key keeps
 * them). A soft-deleted wallet without markers holds no decision and cannot
 * gain one (guarded updates require deletedAt: null), so it is not read.
 * Deciding on part of this set could miss the live wallet or a decided key:
 * more than MAX_WALLETS is a retryable error, logged, never a truncated view. */
void ww_wallet_append_snapshot_filter(bson_t *filter) {
    bson_t or, alt, exists;
    BSON_APPEND_ARRAY_BEGIN(filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &alt);
    BSON_APPEND_NULL(&alt, "deletedAt");
    bson_append_document_end(&or, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&alt, MARKERS ".0", &exists);
    BSON_APPEND_BOOL(&exists, "$exists", true);
    bson_append_document_end(&alt, &exists);
    bson_append_document_end(&or, &alt);
    bson_append_array_end(filter, &or);
}

static bool snapshot_wallets(ww_db_t *db, const bson_oid_t *owner, wallets_t *w,
                             ww_error_t *error) {
    memset(w, 0, sizeof *w);
    w->live = -1;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    BSON_APPEND_OID(&filter, "ownerUserId", owner);
    ww_wallet_append_snapshot_filter(&filter);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", MAX_WALLETS + 1);
    bool ok = ww_db_find(db, WW_WALLETS, &filter, &opts, collect_wallet, w, error);
    bson_destroy(&filter);
    bson_destroy(&opts);
    if (ok && w->seen > MAX_WALLETS) {
        char hex[25];
        bson_oid_to_string(owner, hex);
        ww_err("wallet", "owner has more wallet documents that are live or hold "
               "pendingTransactions than the limit: not deciding on a partial view; the command waits "
               "(retrying) until the data is fixed", WW_STR("owner", hex), WW_INT("limit", MAX_WALLETS));
        ww_error_set(error, WW_ERR_DB, 0, true,
                     "owner %s: more than %d live or marker-holding wallet documents", hex,
                     MAX_WALLETS);
        ok = false;
    }
    if (!ok) wallets_destroy(w);
    return ok;
}

typedef struct {
    bson_t doc; /* the embedded ledger entry */
    const char *key;
    size_t wallet; /* index in wallets_t */
    bool in_ledger; /* the ledger holds this key... */
    bool lost;      /* ...under another entry: this marker's effect must be undone */
} marker_t;

typedef struct {
    marker_t m[MAX_MARKERS * 2];
    size_t n;
} markers_t;

static void markers_destroy(markers_t *ms) {
    for (size_t i = 0; i < ms->n; i++) bson_destroy(&ms->m[i].doc);
    ms->n = 0;
}

static bool collect_markers(const wallets_t *w, markers_t *ms, ww_error_t *error) {
    ms->n = 0;
    for (size_t i = 0; i < w->n; i++) {
        bson_iter_t it, arr;
        if (!bson_iter_init_find(&it, &w->docs[i], MARKERS)) continue;
        if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr)) continue;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) continue;
            if (ms->n >= sizeof ms->m / sizeof ms->m[0]) {
                ww_error_set(error, WW_ERR_DB, 0, true, "too many pending markers on one owner");
                markers_destroy(ms);
                return false;
            }
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&arr, &len, &data);
            marker_t *m = &ms->m[ms->n];
            bson_t view;
            if (!bson_init_static(&view, data, len)) continue;
            /* copy in place: a bson_t must never be copied by value (an
             * allocated one points into itself) */
            bson_copy_to(&view, &m->doc);
            m->key = doc_str(&m->doc, "idempotencyKey");
            if (!m->key) {
                bson_destroy(&m->doc);
                continue;
            }
            m->wallet = i;
            m->in_ledger = false;
            m->lost = false;
            ms->n++;
        }
    }
    return true;
}

typedef struct {
    markers_t *ms;
    const char *key;
    bson_t *key_entry;
    bool *key_found;
} ledger_scan_t;

static bool scan_ledger_doc(const bson_t *doc, void *ctx) {
    ledger_scan_t *s = ctx;
    const char *k = doc_str(doc, "idempotencyKey");
    if (!k) return true;
    if (strcmp(k, s->key) == 0 && !*s->key_found) {
        bson_copy_to(doc, s->key_entry);
        *s->key_found = true;
    }
    for (size_t i = 0; i < s->ms->n; i++) {
        marker_t *m = &s->ms->m[i];
        if (strcmp(m->key, k) != 0) continue;
        m->in_ledger = true;
        bson_oid_t a, b;
        m->lost = !(doc_oid(&m->doc, "_id", &a) && doc_oid(doc, "_id", &b) && bson_oid_equal(&a, &b));
    }
    return true;
}

/* Step 3: one query for the key and every marker's key. */
static bool read_ledger_after_snapshot(ww_db_t *db, const char *key, markers_t *ms,
                                       bson_t *key_entry, bool *key_found, ww_error_t *error) {
    *key_found = false;
    bson_t filter = BSON_INITIALIZER, cond, in;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "idempotencyKey", &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);
    char idx[16];
    const char *ikey;
    uint32_t n = 0;
    bson_uint32_to_string(n, &ikey, idx, sizeof idx);
    BSON_APPEND_UTF8(&in, ikey, key);
    for (size_t i = 0; i < ms->n; i++) {
        bson_uint32_to_string(++n, &ikey, idx, sizeof idx);
        BSON_APPEND_UTF8(&in, ikey, ms->m[i].key);
    }
    bson_append_array_end(&cond, &in);
    bson_append_document_end(&filter, &cond);
    ledger_scan_t s = {ms, key, key_entry, key_found};
    bool ok = ww_db_find(db, WW_TRANSACTIONS, &filter, NULL, scan_ledger_doc, &s, error);
    bson_destroy(&filter);
    if (!ok && *key_found) {
        bson_destroy(key_entry);
        *key_found = false;
    }
    return ok;
}

/* Inserts a ledger entry built in a marker. *same: the stored entry is this
 * one (inserted now, or earlier by another writer); when it is not, *other
 * holds the entry that won (the caller destroys it). */
static bool write_ledger(ww_db_t *db, const bson_t *entry, bool *same, bson_t *other,
                         bool *has_other, ww_error_t *error) {
    *same = false;
    *has_other = false;
    bool dup;
    if (!ww_db_insert_one(db, WW_TRANSACTIONS, entry, &dup, error)) return false;
    if (!dup) {
        *same = true;
        return true;
    }
    const char *key = doc_str(entry, "idempotencyKey");
    bool found;
    if (!find_ledger(db, key, other, &found, error)) return false;
    if (!found) {
        /* A duplicate on some other unique index, not idempotencyKey. */
        ww_error_set(error, WW_ERR_DB, WW_DB_DUPLICATE_KEY, false,
                     "ledger insert hit a unique index other than idempotencyKey");
        return false;
    }
    bson_oid_t a, b;
    *same = doc_oid(entry, "_id", &a) && doc_oid(other, "_id", &b) && bson_oid_equal(&a, &b);
    if (*same)
        bson_destroy(other);
    else
        *has_other = true;
    return true;
}

/* Writes the ledger entries of markers whose entry is missing (orphans of a
 * crash), so they can be pruned. An orphan whose key the ledger already holds
 * under another entry is marked lost (the caller undoes it). */
static bool complete_orphans(ww_db_t *db, markers_t *ms, const char *except, ww_error_t *error) {
    for (size_t i = 0; i < ms->n; i++) {
        marker_t *m = &ms->m[i];
        if (m->in_ledger || strcmp(m->key, except) == 0) continue;
        bool same, has_other;
        bson_t other;
        if (!write_ledger(db, &m->doc, &same, &other, &has_other, error)) return false;
        if (has_other) bson_destroy(&other);
        m->in_ledger = true;
        m->lost = !same;
        if (same) ww_info("wallet", "completed an interrupted command", WW_STR("key", m->key));
    }
    return true;
}

/* The guarded update: matches only if the wallet still has the snapshot's
 * version and balance (and is live). Builds filter and update. */
static void build_guarded(bson_t *filter, bson_t *upd, const bson_t *wallet, int64_t version,
                          int64_t balance, int64_t new_balance, const markers_t *ms,
                          const bson_t *add_marker, const char *drop_key) {
    bson_oid_t wid;
    doc_oid(wallet, "_id", &wid);
    bson_t set, arr;
    bson_init(filter);
    bson_init(upd);
    BSON_APPEND_OID(filter, "_id", &wid);
    /* the guard matches the snapshot as it was: a wallet written without a
     * version (older backend documents) is matched by version: null, which
     * matches a missing field too; after this update it has one */
    if (doc_missing_or_null(wallet, "version"))
        BSON_APPEND_NULL(filter, "version");
    else
        BSON_APPEND_INT64(filter, "version", version);
    BSON_APPEND_INT64(filter, "availablePaise", balance);
    /* live (deletedAt: null) for every decision; an undo on a wallet
     * soft-deleted since is guarded by its exact deletedAt (it stays
     * deleted, and only loses a marker) */
    bson_iter_t del;
    if (bson_iter_init_find(&del, wallet, "deletedAt") && !BSON_ITER_HOLDS_NULL(&del))
        bson_append_iter(filter, "deletedAt", -1, &del);
    else
        BSON_APPEND_NULL(filter, "deletedAt");
    BSON_APPEND_DOCUMENT_BEGIN(upd, "$set", &set);
    BSON_APPEND_INT64(&set, "availablePaise", new_balance);
    BSON_APPEND_INT64(&set, "version", version + 1);
    BSON_APPEND_ARRAY_BEGIN(&set, MARKERS, &arr);
    uint32_t n = 0;
    char idx[16];
    const char *ikey;
    /* keep the markers of this wallet whose ledger entry is still missing */
    for (size_t i = 0; i < ms->n; i++) {
        const marker_t *m = &ms->m[i];
        if (m->in_ledger && !m->lost) continue; /* completed: prune */
        bson_oid_t mw;
        if (!doc_oid(&m->doc, "walletId", &mw) || !bson_oid_equal(&mw, &wid)) continue;
        if (drop_key && strcmp(m->key, drop_key) == 0) continue;
        bson_uint32_to_string(n++, &ikey, idx, sizeof idx);
        BSON_APPEND_DOCUMENT(&arr, ikey, &m->doc);
    }
    if (add_marker) {
        bson_uint32_to_string(n++, &ikey, idx, sizeof idx);
        BSON_APPEND_DOCUMENT(&arr, ikey, add_marker);
    }
    bson_append_array_end(&set, &arr);
    append_date_now(&set, "updatedAt", ww_clock_now_ms());
    bson_append_document_end(upd, &set);
}

static bool guarded_update(ww_db_t *db, const bson_t *wallet, int64_t version, int64_t balance,
                           int64_t new_balance, const markers_t *ms, const bson_t *add_marker,
                           const char *drop_key, bool *matched, ww_error_t *error) {
    bson_t filter, upd;
    build_guarded(&filter, &upd, wallet, version, balance, new_balance, ms, add_marker, drop_key);
    int64_t m = 0;
    bool ok = ww_db_update_one(db, WW_WALLETS, &filter, &upd, NULL, &m, NULL, error);
    *matched = ok && m == 1;
    bson_destroy(&filter);
    bson_destroy(&upd);
    return ok;
}

/* With transactions (replica set / mongos): the guarded update and the
 * ledger insert commit together, with majority write concern. A guard that
 * no longer matches, or a ledger entry that already exists, aborts the
 * transaction and the caller starts over, exactly as without transactions.
 * The marker is still written: the protocol does not change, it only loses
 * its crash window. */
#define TXN_RESTART 1 /* ww_error_t.code of an abort that means "start over" */

typedef struct {
    bson_t *filter, *upd;
    const bson_t *entry;
} txn_decide_t;

static bool decide_in_txn(ww_db_txn_t *txn, void *vctx, ww_error_t *error) {
    txn_decide_t *c = vctx;
    int64_t matched = 0;
    if (!ww_db_txn_update_one(txn, WW_WALLETS, c->filter, c->upd, &matched, error)) return false;
    if (matched != 1) {
        ww_error_set(error, WW_ERR_DB, TXN_RESTART, false, "wallet changed since the snapshot");
        return false;
    }
    bool dup;
    if (!ww_db_txn_insert_one(txn, WW_TRANSACTIONS, c->entry, &dup, error)) {
        if (dup) ww_error_set(error, WW_ERR_DB, TXN_RESTART, false, "key decided meanwhile");
        return false;
    }
    return true;
}

/* Returns false on a real error; *restart when the caller must start over. */
static bool decide_transactional(ww_db_t *db, const bson_t *wallet, int64_t version,
                                 int64_t balance, int64_t new_balance, const markers_t *ms,
                                 const bson_t *entry, bool *restart, ww_error_t *error) {
    bson_t filter, upd;
    build_guarded(&filter, &upd, wallet, version, balance, new_balance, ms, entry, NULL);
    txn_decide_t c = {&filter, &upd, entry};
    ww_error_t e;
    ww_error_clear(&e);
    bool ok = ww_db_with_transaction(db, decide_in_txn, &c, &e);
    *restart = !ok && e.domain == WW_ERR_DB && e.code == TXN_RESTART;
    if (!ok && !*restart && error) *error = e;
    bson_destroy(&filter);
    bson_destroy(&upd);
    return ok || *restart;
}

/* The ledger recorded another decision for this key (wallet_not_found, taken
 * while the owner had no wallet), so the marker's effect on the wallet was
 * never reported and must not stand: give the amount back and drop the
 * marker, with the same guarded update. Idempotent: once the marker is gone
 * there is nothing left to undo. On a wallet soft-deleted since, the same
 * (guarded by its deletedAt), unless the amount cannot be given back (an
 * unusable balance, or one that would go below zero: the backend moved the
 * money out when deleting): then the marker is left for an operator, logged,
 * and *changed is false (it blocks nothing: the live wallet does not depend
 * on it). */
static bool undo_marker(ww_db_t *db, const bson_oid_t *owner, const char *key, bool *changed,
                        ww_error_t *error) {
    bool ignored;
    if (!changed) changed = &ignored;
    *changed = true;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        wallets_t w;
        markers_t ms;
        ms.n = 0;
        if (!snapshot_wallets(db, owner, &w, error)) return false;
        if (!collect_markers(&w, &ms, error)) {
            wallets_destroy(&w);
            return false;
        }
        const marker_t *mk = NULL;
        for (size_t i = 0; i < ms.n && !mk; i++)
            if (strcmp(ms.m[i].key, key) == 0) mk = &ms.m[i];
        bool ok = true, matched = true;
        if (mk) {
            const bson_t *wallet = &w.docs[mk->wallet];
            int64_t b = 0, v = 0, amount = 0;
            doc_int(wallet, "version", &v);
            doc_int(&mk->doc, "amountPaise", &amount);
            const char *st = doc_str(&mk->doc, "status");
            const char *type = doc_str(&mk->doc, "type");
            int64_t delta = 0;
            if (st && strcmp(st, "applied") == 0)
                delta = type && strcmp(type, "debit") == 0 ? amount : -amount;
            bool usable = doc_int(wallet, "availablePaise", &b) &&
                          (doc_missing_or_null(wallet, "version") || doc_int(wallet, "version", &v));
            if (!doc_missing_or_null(wallet, "deletedAt") && (!usable || b + delta < 0)) {
                ww_warn("wallet", "a decision the ledger overruled cannot be undone on its "
                        "soft-deleted wallet (left for an operator)", WW_STR("key", key),
                        WW_STR("reason", usable ? "the balance would go below zero"
                                                : "unusable balance"));
                *changed = false;
                markers_destroy(&ms);
                wallets_destroy(&w);
                return true;
            }
            ok = guarded_update(db, wallet, v, b, b + delta, &ms, NULL, key, &matched, error);
            if (ok && matched && delta < 0 && b + delta < 0) /* another writer spent the lost credit */
                ww_err("wallet", "a lost credit was undone after another writer had spent it: "
                       "the ledger's outcome stands (a reversal) and the balance is below zero",
                       WW_STR("key", key), WW_INT("delta", delta), WW_INT("balance", b + delta));
            else if (ok && matched)
                ww_warn("wallet", "decided twice; the ledger's outcome stands and "
                        "this wallet update was undone", WW_STR("key", key), WW_INT("delta", delta));
        }
        markers_destroy(&ms);
        wallets_destroy(&w);
        if (!ok) return false;
        if (matched) return true;
    }
    ww_error_set(error, WW_ERR_DB, 0, true, "undo of key %s: too much contention", key);
    return false;
}

/* ---- the protocol ---------------------------------------------------------------- */

bool ww_wallet_apply(ww_db_t *db, const ww_command_t *cmd, const char *topic, int32_t partition,
                     int64_t offset, ww_wallet_result_t *r, ww_error_t *error) {
    memset(r, 0, sizeof *r);
    r->amount_paise = cmd->amount_paise;
    bson_oid_t owner;
    bson_oid_init_from_string(&owner, cmd->owner_user_id);

    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        bool ok = false, found = false;
        bson_t entry;

        /* 1. decided before? (fast path for re-deliveries) */
        if (!find_ledger(db, cmd->idempotency_key, &entry, &found, error)) return false;
        if (found) {
            /* wallet_not_found may have raced a decision on a wallet that
             * appeared meanwhile: take the full path, which finds and undoes
             * such a marker; every other outcome is final as it stands */
            const char *st = doc_str(&entry, "status");
            bool full_path = st && strcmp(st, "wallet_not_found") == 0;
            if (!full_path) {
                ok = answer_repeat(cmd, &entry, r, error);
                bson_destroy(&entry);
                return ok;
            }
            bson_destroy(&entry);
        }

        /* 2. snapshot the owner's wallets */
        wallets_t w;
        markers_t ms;
        ms.n = 0;
        if (!snapshot_wallets(db, &owner, &w, error)) return false;
        if (!collect_markers(&w, &ms, error)) goto fail;

        /* 3. the ledger, read after the snapshot */
        if (!read_ledger_after_snapshot(db, cmd->idempotency_key, &ms, &entry, &found, error))
            goto fail;
        bool undone = false;
        for (size_t i = 0; i < ms.n; i++) {
            if (!ms.m[i].lost) continue;
            bool changed;
            if (!undo_marker(db, &owner, ms.m[i].key, &changed, error)) {
                if (found) bson_destroy(&entry);
                goto fail;
            }
            undone = undone || changed;
        }
        if (undone) { /* the wallet changed: look again */
            if (found) bson_destroy(&entry);
            markers_destroy(&ms);
            wallets_destroy(&w);
            continue;
        }
        if (found) { /* decided meanwhile */
            ok = answer_repeat(cmd, &entry, r, error);
            bson_destroy(&entry);
            goto out;
        }

        /* 4a. a marker for this key: decided, ledger entry missing (crash
         *     window, or the decider is still on its way): finish it */
        for (size_t i = 0; i < ms.n; i++) {
            if (strcmp(ms.m[i].key, cmd->idempotency_key) != 0) continue;
            bool same, has_other;
            bson_t other;
            if (!write_ledger(db, &ms.m[i].doc, &same, &other, &has_other, error)) goto fail;
            const bson_t *stored = has_other ? &other : &ms.m[i].doc;
            const char *fp = doc_str(stored, "fingerprint");
            if (fp && strcmp(fp, cmd->fingerprint) == 0 && same) {
                ok = result_from_ledger(stored, r, error);
                r->outcome = r->original;
                set_rejection(r, r->outcome);
            } else {
                /* another payload under a decided key (conflict), or a
                 * decision the ledger overruled (undone first): either way
                 * answered from what is stored */
                ok = (!has_other || undo_marker(db, &owner, cmd->idempotency_key, NULL, error)) &&
                     answer_repeat(cmd, stored, r, error);
            }
            if (has_other) bson_destroy(&other);
            goto out;
        }

        if (w.live < 0) {
            /* no live wallet: the ledger insert is the decision */
            bson_oid_t txid;
            bson_oid_init(&txid, NULL);
            build_ledger(&entry, cmd, &txid, WW_OUTCOME_WALLET_NOT_FOUND, NULL, &owner, false, 0,
                         topic, partition, offset, ww_clock_now_ms());
            bool same, has_other;
            bson_t other;
            ok = write_ledger(db, &entry, &same, &other, &has_other, error);
            if (ok && same) {
                ok = result_from_ledger(&entry, r, error);
                r->outcome = WW_OUTCOME_WALLET_NOT_FOUND;
                set_rejection(r, r->outcome);
            } else if (ok) {
                ok = answer_repeat(cmd, &other, r, error);
            }
            if (has_other) bson_destroy(&other);
            bson_destroy(&entry);
            goto out;
        }

        /* 4b. decide against the live wallet's snapshot */
        const bson_t *wallet = &w.docs[w.live];
        int64_t balance = 0, version = 0;
        if (!doc_int(wallet, "availablePaise", &balance)) {
            ww_error_set(error, WW_ERR_DB, 0, false,
                         "wallet %s: availablePaise is missing or not an exact integer",
                         cmd->owner_user_id);
            goto fail;
        }
        bson_iter_t vit; /* missing or null: none yet (the guard says version: null) */
        if (bson_iter_init_find(&vit, wallet, "version") && !BSON_ITER_HOLDS_NULL(&vit) &&
            !read_exact_int(&vit, &version)) {
            ww_error_set(error, WW_ERR_DB, 0, false, "wallet %s: version is not an integer",
                         cmd->owner_user_id);
            goto fail;
        }
        if (!complete_orphans(db, &ms, cmd->idempotency_key, error)) goto fail;
        bool undone_orphan = false;
        for (size_t i = 0; i < ms.n; i++) {
            if (!ms.m[i].lost) continue;
            bool changed;
            if (!undo_marker(db, &owner, ms.m[i].key, &changed, error)) goto fail;
            undone_orphan = undone_orphan || changed;
        }
        if (undone_orphan) {
            markers_destroy(&ms);
            wallets_destroy(&w);
            continue;
        }

        ww_outcome_t outcome = WW_OUTCOME_APPLIED;
        int64_t new_balance = balance;
        if (cmd->type == WW_COMMAND_DEBIT) {
            if (balance < cmd->amount_paise)
                outcome = WW_OUTCOME_INSUFFICIENT_FUNDS;
            else
                new_balance = balance - cmd->amount_paise;
        } else if (balance > BALANCE_MAX - cmd->amount_paise) {
            outcome = WW_OUTCOME_INVALID;
        } else {
            new_balance = balance + cmd->amount_paise;
        }
        bson_oid_t wid, txid;
        doc_oid(wallet, "_id", &wid);
        bson_oid_init(&txid, NULL);
        build_ledger(&entry, cmd, &txid, outcome, &wid, &owner, true, new_balance, topic,
                     partition, offset, ww_clock_now_ms());
        bool matched;
        if (ww_db_use_transactions(db)) {
            bool restart = false;
            ok = decide_transactional(db, wallet, version, balance, new_balance, &ms, &entry,
                                      &restart, error);
            matched = ok && !restart;
            if (matched) { /* committed with its ledger entry */
                ok = result_from_ledger(&entry, r, error);
                r->outcome = outcome;
                set_rejection(r, outcome);
                bson_destroy(&entry);
                goto out;
            }
        } else {
            ok = guarded_update(db, wallet, version, balance, new_balance, &ms, &entry, NULL,
                                &matched, error);
        }
        if (!ok) {
            bson_destroy(&entry);
            goto fail;
        }
        if (!matched) {
            /* someone changed the wallet since the snapshot: start over */
            bson_destroy(&entry);
            markers_destroy(&ms);
            wallets_destroy(&w);
            ww_metrics_inc_retry("wallet_contention");
            continue;
        }

        /* 5. the ledger entry, from the marker we just recorded */
        bool same, has_other;
        bson_t other;
        ok = write_ledger(db, &entry, &same, &other, &has_other, error);
        if (ok && same) {
            ok = result_from_ledger(&entry, r, error);
            r->outcome = outcome;
            set_rejection(r, outcome);
        } else if (ok) {
            /* Another decision won the ledger (wallet_not_found, taken while
             * this owner had no wallet). Ours was never reported: undo it. */
            ok = undo_marker(db, &owner, cmd->idempotency_key, NULL, error);
            if (ok) ok = answer_repeat(cmd, &other, r, error);
        }
        if (has_other) bson_destroy(&other);
        bson_destroy(&entry);
    out:
        markers_destroy(&ms);
        wallets_destroy(&w);
        return ok;
    fail:
        markers_destroy(&ms);
        wallets_destroy(&w);
        return false;
    }
    ww_error_set(error, WW_ERR_DB, 0, true, "wallet of %s: too much contention, will retry",
                 cmd->owner_user_id);
    return false;
}

/* ---- the handler: bytes in, result event (and dead letter) out --------------------- */

static void add_str_or_null(json_object *o, const char *k, bool has, const char *v) {
    json_object_object_add(o, k, has ? json_object_new_string(v) : NULL);
}

static bool emit_result(ww_outputs_t *outs, const char *results_topic, const char *key,
                        size_t key_len, const ww_command_t *cmd, const ww_wallet_result_t *r,
                        const ww_msg_t *msg) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "idempotencyKey",
                           cmd ? json_object_new_string(cmd->idempotency_key) : NULL);
    json_object_object_add(o, "status", json_object_new_string(ww_outcome_name(r->outcome)));
    add_str_or_null(o, "walletId", r->has_wallet, r->wallet_id);
    add_str_or_null(o, "transactionId", r->has_transaction, r->transaction_id);
    json_object_object_add(o, "amountPaise", cmd ? json_object_new_int64(r->amount_paise) : NULL);
    json_object_object_add(o, "balanceAfterPaise",
                           r->has_balance ? json_object_new_int64(r->balance_after_paise) : NULL);
    char ts[32];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    json_object_object_add(o, "processedAt", json_object_new_string(ts));
    if (cmd) {
        json_object_object_add(o, "type", json_object_new_string(ww_command_type_name(cmd->type)));
        json_object_object_add(o, "ownerUserId", json_object_new_string(cmd->owner_user_id));
    }
    if (r->outcome == WW_OUTCOME_DUPLICATE || r->outcome == WW_OUTCOME_CONFLICT)
        json_object_object_add(o, "originalStatus",
                               json_object_new_string(ww_outcome_name(r->original)));
    json_object *src = json_object_new_object();
    json_object_object_add(src, "topic", json_object_new_string(msg->topic));
    json_object_object_add(src, "partition", json_object_new_int(msg->partition));
    json_object_object_add(src, "offset", json_object_new_int64(msg->offset));
    json_object_object_add(o, "source", src);
    if (r->error_code[0]) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string(r->error_code));
        json_object_object_add(e, "message", json_object_new_string(r->error_message));
        json_object_object_add(o, "error", e);
    }
    size_t len;
    const char *text = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    bool ok = ww_outputs_add(outs, results_topic, key, key_len, text, len) != NULL;
    json_object_put(o);
    return ok;
}

/* Best effort: an invalid message's idempotencyKey, when it has a usable one,
 * so its producer can correlate the result. */
static bool salvage_key(const ww_msg_t *msg, size_t max, ww_command_t *partial) {
    json_object *root = NULL;
    ww_json_limits_t lim = {.max_bytes = max, .max_depth = 8};
    if (!msg->value || !ww_json_parse_object(msg->value, msg->value_len, &lim, &root, NULL))
        return false;
    json_object *k;
    bool ok = false;
    if (json_object_object_get_ex(root, "idempotencyKey", &k) &&
        json_object_is_type(k, json_type_string)) {
        const char *s = json_object_get_string(k);
        size_t n = strlen(s);
        ok = n >= 1 && n <= WW_COMMAND_KEY_MAX && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                              "abcdefghijklmnopqrstuvwxyz"
                                                              "0123456789._:-") == n;
        if (ok) memcpy(partial->idempotency_key, s, n + 1);
    }
    json_object_put(root);
    return ok;
}

int ww_wallet_parse(ww_wallet_ctx_t *ctx, const ww_msg_t *msg, ww_command_t *cmd,
                    ww_outputs_t *outs, ww_error_t *error) {
    ww_error_t perr;
    ww_error_clear(&perr);
    ww_json_limits_t lim = {.max_bytes = (size_t)ctx->max_message_bytes, .max_depth = 8};
    if (ww_message_precheck(msg, ctx->max_message_bytes, &perr)) {
        if (ww_command_parse(msg->value, msg->value_len, &lim, cmd, &perr)) return 1;
        if (perr.domain != WW_ERR_INPUT) {
            if (error) *error = perr; /* out of memory: retry */
            return -1;
        }
    }

    if (ctx->dry_run) {
        /* the dead letter the real run would write, for apply --dry-run to report
         * (a dry run publishes nothing); no metrics: nothing happened */
        if (!ww_outputs_dead_letter(outs, ctx->dlq_topic, msg, ww_command_reason_name(perr.code),
                                    perr.message))
            goto oom;
        outs->outcome = "invalid";
        ww_info("wallet", "invalid (dry run)", WW_STR("topic", msg->topic), WW_INT("partition", msg->partition),
                WW_INT("offset", msg->offset), WW_STR("reason", ww_command_reason_name(perr.code)),
                WW_STR("detail", perr.message));
        return 0;
    }
    const char *reason = ww_command_reason_name(perr.code);
    if (!ww_outputs_dead_letter(outs, ctx->dlq_topic, msg, reason, perr.message)) goto oom;
    ww_wallet_result_t r;
    memset(&r, 0, sizeof r);
    r.outcome = WW_OUTCOME_INVALID;
    snprintf(r.error_code, sizeof r.error_code, "%s", reason);
    snprintf(r.error_message, sizeof r.error_message, "%s", perr.message);
    memset(cmd, 0, sizeof *cmd);
    bool has_key = salvage_key(msg, lim.max_bytes, cmd);
    const char *rkey = has_key ? cmd->idempotency_key : msg->key;
    size_t rkey_len = has_key ? strlen(cmd->idempotency_key) : msg->key_len;
    /* the result carries the key when there is one; nothing else is trusted */
    json_object *o = json_object_new_object();
    json_object_object_add(o, "idempotencyKey",
                           has_key ? json_object_new_string(cmd->idempotency_key) : NULL);
    json_object_object_add(o, "status", json_object_new_string("invalid"));
    json_object_object_add(o, "walletId", NULL);
    json_object_object_add(o, "transactionId", NULL);
    json_object_object_add(o, "amountPaise", NULL);
    json_object_object_add(o, "balanceAfterPaise", NULL);
    char ts[32];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    json_object_object_add(o, "processedAt", json_object_new_string(ts));
    json_object *src = json_object_new_object();
    json_object_object_add(src, "topic", json_object_new_string(msg->topic));
    json_object_object_add(src, "partition", json_object_new_int(msg->partition));
    json_object_object_add(src, "offset", json_object_new_int64(msg->offset));
    json_object_object_add(o, "source", src);
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(r.error_code));
    json_object_object_add(e, "message", json_object_new_string(r.error_message));
    json_object_object_add(o, "error", e);
    size_t len;
    const char *text = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    bool added = ww_outputs_add(outs, ctx->results_topic, rkey, rkey_len, text, len) != NULL;
    json_object_put(o);
    if (!added) goto oom;
    ww_info("wallet", "invalid", WW_STR("topic", msg->topic), WW_INT("partition", msg->partition),
            WW_INT("offset", msg->offset), WW_STR("reason", reason), WW_STR("detail", perr.message));
    ww_metrics_inc_dead_letter(msg->topic, reason);
    ww_metrics_inc_processed(msg->topic, "invalid");
    outs->outcome = "invalid";
    return 0;
oom:
    ww_outputs_clear(outs);
    ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory building outputs");
    return -1;
}

bool ww_wallet_answer(ww_wallet_ctx_t *ctx, const ww_msg_t *msg, const ww_command_t *cmd,
                      const ww_wallet_result_t *r, ww_outputs_t *outs, ww_error_t *error) {
    if (r->outcome == WW_OUTCOME_FAILED) {
        /* This command cannot be processed against the stored data (e.g. a
         * balance that is not whole paise). Nothing was decided or recorded
         * for the key: dead-letter it for a re-drive after the fix, and
         * answer it so its producer is not left waiting. */
        ww_err("wallet", "failed: dead-lettering", WW_STR("key", cmd->idempotency_key),
               WW_STR("owner", cmd->owner_user_id), WW_INT("partition", msg->partition),
               WW_INT("offset", msg->offset), WW_STR("error", r->error_message));
        if (!ww_outputs_dead_letter(outs, ctx->dlq_topic, msg, "processing_failed",
                                    r->error_message))
            goto oom;
        ww_metrics_inc_dead_letter(msg->topic, "processing_failed");
    }
    if (!emit_result(outs, ctx->results_topic, cmd->idempotency_key,
                     strlen(cmd->idempotency_key), cmd, r, msg))
        goto oom;
    ww_metrics_inc_processed(msg->topic, ww_outcome_name(r->outcome));
    outs->outcome = ww_outcome_name(r->outcome);
    ww_debug("wallet", ww_outcome_name(r->outcome), WW_STR("key", cmd->idempotency_key),
             WW_STR("owner", cmd->owner_user_id), WW_INT("amount", cmd->amount_paise),
             WW_INT("partition", msg->partition), WW_INT("offset", msg->offset));
    return true;
oom:
    ww_outputs_clear(outs);
    ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory building outputs");
    return false;
}

bool ww_wallet_handle(void *vctx, const ww_msg_t *msg, ww_outputs_t *outs, ww_error_t *error) {
    ww_wallet_ctx_t *ctx = vctx;
    if (ctx->dry_run) { /* one prediction engine: the planner over the run's overlay */
        ww_batch_item_t it;
        memset(&it, 0, sizeof it);
        it.msg = msg;
        ww_wallet_handle_batch(ctx, &it, 1);
        if (it.status == WW_ITEM_DONE) {
            *outs = it.outs;
            return true;
        }
        ww_outputs_clear(&it.outs);
        if (error) *error = it.error;
        return false;
    }
    ww_command_t cmd;
    int parsed = ww_wallet_parse(ctx, msg, &cmd, outs, error);
    if (parsed <= 0) return parsed == 0;

    ww_wallet_result_t r;
    ww_error_t aerr;
    ww_error_clear(&aerr);
    if (!ww_wallet_apply(ctx->db, &cmd, msg->topic, msg->partition, msg->offset, &r, &aerr)) {
        if (aerr.retryable) { /* infrastructure: the pipeline waits it out */
            if (error) *error = aerr;
            return false;
        }
        memset(&r, 0, sizeof r);
        r.outcome = WW_OUTCOME_FAILED;
        r.amount_paise = cmd.amount_paise;
        snprintf(r.error_code, sizeof r.error_code, "processing_failed");
        snprintf(r.error_message, sizeof r.error_message, "%s", aerr.message);
    }
    return ww_wallet_answer(ctx, msg, &cmd, &r, outs, error);
}
