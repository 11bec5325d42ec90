/* wallet_plan.c: the pure wallet planner; see wallet_plan.h and
 * docs/wallet-protocol.md ("Batches").
 *
 * DESIGN (how one pass stays equal to "one command at a time")
 * - Keys and owners are interned first (sorted arrays, binary search), so
 *   each has one state record: what is known about a key (a ledger entry, an
 *   orphaned marker, a decision of this batch, blocked) and about an owner
 *   (its wallets, its live wallet's running balance, pending effects, the
 *   markers it will keep, whether an earlier command of it was left
 *   undecided).
 * - Per owner, before any command: markers are matched with the ledger.
 *   Complete markers are pruned, orphaned ones get their entry inserted and
 *   stay (pending), lost ones are undone in the running balance.
 * - Then the commands, in order, each through the per-message steps:
 *   decided before (in the ledger, by an orphaned marker, or earlier in this
 *   batch) -> answer from that decision; else decide on the owner's live
 *   wallet against the running balance, unless its outcome depends on an
 *   effect that is not in the ledger yet, or the wallet's marker budget is
 *   spent: then defer it, and everything after it on its key and owner.
 * - Every bson_t lives in storage that never moves (arrays sized up front):
 *   a bson_t must not be copied by value.
 * Helpers that also live in wallet.c (reading exact integers, the ledger
 * entry, results from an entry) are copied here while wallet.c is being
 * changed elsewhere; wiring the planner in removes wallet.c's copies. */
#include "wallet_plan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARKERS "pendingTransactions"
#define BALANCE_MAX INT64_C(9007199254740991) /* 2^53-1 */

const char *ww_wallet_plan_status_name(ww_wallet_plan_status_t status) {
    switch (status) {
    case WW_WALLET_PLAN_DECIDED: return "decided";
    case WW_WALLET_PLAN_DEFERRED: return "deferred";
    case WW_WALLET_PLAN_RETRY: return "retry";
    }
    return "unknown";
}

/* ---- reading stored documents (as wallet.c) ------------------------------------- */

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

static bool doc_missing_or_null(const bson_t *doc, const char *key) {
    bson_iter_t it;
    return !bson_iter_init_find(&it, doc, key) || BSON_ITER_HOLDS_NULL(&it);
}

static bool same_id(const bson_t *a, const bson_t *b) {
    bson_oid_t x, y;
    return doc_oid(a, "_id", &x) && doc_oid(b, "_id", &y) && bson_oid_equal(&x, &y);
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

/* ---- the ledger entry and results (as wallet.c) ---------------------------------- */

static void build_ledger(bson_t *doc, const ww_wallet_plan_input_t *in, const bson_oid_t *txid,
                         ww_outcome_t outcome, const bson_oid_t *wallet_id,
                         const bson_oid_t *owner, bool has_balance, int64_t balance_after,
                         int64_t now_ms) {
    const ww_command_t *cmd = in->cmd;
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
    if (cmd->has_reference) {
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
    if (cmd->has_occurred_at) bson_append_date_time(doc, "occurredAt", -1, cmd->occurred_at_ms);
    bson_t src;
    bson_append_document_begin(doc, "source", -1, &src);
    BSON_APPEND_UTF8(&src, "topic", in->topic ? in->topic : "");
    BSON_APPEND_INT32(&src, "partition", in->partition);
    BSON_APPEND_INT64(&src, "offset", in->offset);
    bson_append_document_end(doc, &src);
    bson_append_date_time(doc, "createdAt", -1, now_ms);
    bson_append_date_time(doc, "updatedAt", -1, now_ms);
}

static bool result_from_ledger(const bson_t *entry, ww_wallet_result_t *r) {
    const char *status = doc_str(entry, "status");
    ww_outcome_t o;
    if (!status || !outcome_from_name(status, &o)) return false;
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

static void set_failed(ww_wallet_plan_result_t *pr, const ww_command_t *cmd, const char *msg) {
    memset(&pr->result, 0, sizeof pr->result);
    pr->status = WW_WALLET_PLAN_DECIDED;
    pr->dead_letter = true;
    pr->result.outcome = WW_OUTCOME_FAILED;
    pr->result.amount_paise = cmd->amount_paise;
    snprintf(pr->result.error_code, sizeof pr->result.error_code, "processing_failed");
    snprintf(pr->result.error_message, sizeof pr->result.error_message, "%s", msg);
}

/* Decided before: duplicate (same fingerprint) or conflict. */
static void answer_repeat(ww_wallet_plan_result_t *pr, const ww_command_t *cmd,
                          const bson_t *entry) {
    ww_wallet_result_t *r = &pr->result;
    memset(r, 0, sizeof *r);
    r->amount_paise = cmd->amount_paise;
    if (!result_from_ledger(entry, r)) {
        set_failed(pr, cmd, "ledger entry has no usable status");
        return;
    }
    pr->status = WW_WALLET_PLAN_DECIDED;
    const char *fp = doc_str(entry, "fingerprint");
    if (fp && strcmp(fp, cmd->fingerprint) == 0) {
        r->outcome = WW_OUTCOME_DUPLICATE;
        set_rejection(r, r->original);
    } else {
        r->outcome = WW_OUTCOME_CONFLICT;
        r->amount_paise = cmd->amount_paise;
        r->has_transaction = false;
        r->has_balance = false;
        snprintf(r->error_code, sizeof r->error_code, "conflict");
        snprintf(r->error_message, sizeof r->error_message,
                 "idempotencyKey was already used with a different payload");
    }
}

/* The entry's own outcome (a decision reported for the first time). */
static void answer_first(ww_wallet_plan_result_t *pr, const ww_command_t *cmd,
                         const bson_t *entry) {
    ww_wallet_result_t *r = &pr->result;
    memset(r, 0, sizeof *r);
    r->amount_paise = cmd->amount_paise;
    if (!result_from_ledger(entry, r)) {
        set_failed(pr, cmd, "ledger entry has no usable status");
        return;
    }
    pr->status = WW_WALLET_PLAN_DECIDED;
    r->outcome = r->original;
    set_rejection(r, r->outcome);
}

/* ---- interning ------------------------------------------------------------------------ */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts and deduplicates v[0..*n). */
static void intern(const char **v, size_t *n) {
    if (*n == 0) return;
    qsort(v, *n, sizeof v[0], cmp_str_ptr);
    size_t w = 1;
    for (size_t i = 1; i < *n; i++)
        if (strcmp(v[i], v[w - 1]) != 0) v[w++] = v[i];
    *n = w;
}

static int find_str(const char *const *v, size_t n, const char *s) {
    const char *const *p = bsearch(&s, v, n, sizeof v[0], cmp_str_ptr);
    return p ? (int)(p - v) : -1;
}

/* ---- state --------------------------------------------------------------------------- */

typedef enum { K_NONE = 0, K_LEDGER, K_ORPHAN, K_BATCH } kkind_t;

typedef struct {
    kkind_t kind;
    const bson_t *entry; /* K_LEDGER: the stored entry; K_ORPHAN: the marker */
    int insert;          /* K_ORPHAN / K_BATCH: the insert writing it */
    int update;          /* K_BATCH: the update it needs */
    int owner;           /* K_ORPHAN: the owner whose wallet holds the marker */
    bool reported;       /* K_ORPHAN: its owner's command was answered */
    bool blocked;        /* an earlier command of this key was not decided */
} kstate_t;

typedef struct {
    const bson_t *doc;
    bson_oid_t id;
    int owner;
} wal_t;

typedef struct {
    bson_t view; /* in place: never moved */
    const char *key;
    int wal;     /* index in wal_t[] of the document holding it */
    bool has_wid;
    bson_oid_t wid;
    bool in_ledger, lost;
    bool credit, applied;
    int64_t amount;
} mark_t;

typedef struct {
    bool read;
    int wals[WW_WALLET_PLAN_MAX_WALLETS];
    size_t n_wals;
    int live;           /* index in wal_t[]; -1: none */
    bool usable;        /* the live wallet's balance and version can be read */
    char unusable[WW_ERROR_MSG_MAX];
    bool version_null;  /* guard on version: null (none in the snapshot) */
    int64_t version;
    int64_t balance0;   /* the snapshot's balance (the guard) */
    int64_t balance;    /* running: after undo and this batch's decisions */
    int64_t pend_credit, pend_debit; /* applied effects not in the ledger yet */
    size_t first_mark, n_marks;      /* this owner's markers in mark_t[] */
    size_t kept;        /* markers the live wallet keeps (not in the ledger yet) */
    size_t n_undone;
    bool undo_below_zero; /* a lost credit's undo left the balance below zero */
    int news[WW_WALLET_PLAN_PER_WALLET]; /* inserts of this round's decisions */
    size_t n_new;
    int update;         /* -1 until the live wallet needs one */
    bool retry;
    char retry_reason[WW_ERROR_MSG_MAX];
    bool blocked;       /* an earlier command of this owner was not decided */
    bool decided_any;   /* decided on its live wallet (today: orphans completed) */
} own_t;

typedef struct {
    const ww_wallet_plan_facts_t *f;
    ww_wallet_plan_t *plan;
    const char **keys;
    size_t n_keys;
    kstate_t *ks;
    const char **owner_hex;
    size_t n_owners;
    own_t *os;
    wal_t *wals;
    size_t n_wals;
    char (*wal_owner)[25]; /* owner hex of wals[i] */
    int *by_owner;         /* wallet indexes grouped by owner */
    int *owner_of;         /* owner index of wals[i] (-1: none) */
    size_t *group;         /* by_owner's start per owner, then a fill count per owner */
    mark_t *marks;
    size_t n_marks, cap_marks;
    size_t cap_inserts;
} planner_t;

static void new_id(const planner_t *p, bson_oid_t *out) {
    if (p->f->new_id)
        p->f->new_id(p->f->id_ctx, out);
    else
        bson_oid_init(out, NULL);
}

static int add_insert(planner_t *p, const char *key, int update, bool orphan) {
    ww_wallet_plan_insert_t *in = &p->plan->inserts[p->plan->n_inserts];
    snprintf(in->key, sizeof in->key, "%s", key);
    in->update = update;
    in->orphan = orphan;
    return (int)p->plan->n_inserts++;
}

static int owner_update(planner_t *p, own_t *o) {
    if (o->update < 0) o->update = (int)p->plan->n_updates++;
    return o->update;
}

/* ---- per owner, before the commands ------------------------------------------------ */

static bool has_markers(const bson_t *doc) {
    bson_iter_t it, arr;
    return bson_iter_init_find(&it, doc, MARKERS) && BSON_ITER_HOLDS_ARRAY(&it) &&
           bson_iter_recurse(&it, &arr) && bson_iter_next(&arr);
}

/* The snapshot of one owner, as wallet.c reads it: the live wallet(s) and
 * every document holding markers (a soft-deleted wallet without markers holds
 * no decision and cannot gain one), by _id. More than MAX_WALLETS of them is
 * never decided on a partial view: the owner's commands are retried. */
static void select_owner_wallets(planner_t *p, int oi, int *all, size_t n_all) {
    own_t *o = &p->os[oi];
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++) {
        const bson_t *doc = p->wals[all[i]].doc;
        if (doc_missing_or_null(doc, "deletedAt") || has_markers(doc)) all[n++] = all[i];
    }
    for (size_t i = 1; i < n; i++) { /* insertion sort by _id: a handful per owner */
        int v = all[i];
        size_t j = i;
        while (j > 0 && bson_oid_compare(&p->wals[all[j - 1]].id, &p->wals[v].id) > 0) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = v;
    }
    if (n > WW_WALLET_PLAN_MAX_WALLETS) {
        o->retry = true;
        snprintf(o->retry_reason, sizeof o->retry_reason,
                 "owner %s: more than %d live or marker-holding wallet documents",
                 p->owner_hex[oi], WW_WALLET_PLAN_MAX_WALLETS);
        n = WW_WALLET_PLAN_MAX_WALLETS;
    }
    o->n_wals = n;
    memcpy(o->wals, all, n * sizeof all[0]);
}

static void collect_marks(planner_t *p, int oi) {
    own_t *o = &p->os[oi];
    o->first_mark = p->n_marks;
    size_t total = 0;
    for (size_t w = 0; w < o->n_wals; w++) {
        const wal_t *wl = &p->wals[o->wals[w]];
        bson_iter_t it, arr;
        if (!bson_iter_init_find(&it, wl->doc, MARKERS)) continue;
        if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr)) continue;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) continue;
            if (++total > WW_WALLET_PLAN_OWNER_MARKERS || p->n_marks >= p->cap_marks) {
                o->retry = true;
                snprintf(o->retry_reason, sizeof o->retry_reason,
                         "too many pending markers on one owner");
                continue;
            }
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&arr, &len, &data);
            mark_t *m = &p->marks[p->n_marks];
            if (!bson_init_static(&m->view, data, len)) continue;
            m->key = doc_str(&m->view, "idempotencyKey");
            if (!m->key) continue;
            m->wal = o->wals[w];
            m->has_wid = doc_oid(&m->view, "walletId", &m->wid);
            const char *st = doc_str(&m->view, "status");
            const char *type = doc_str(&m->view, "type");
            m->applied = st && strcmp(st, "applied") == 0;
            m->credit = !(type && strcmp(type, "debit") == 0);
            m->amount = 0;
            doc_int(&m->view, "amountPaise", &m->amount);
            int k = find_str(p->keys, p->n_keys, m->key);
            const kstate_t *ks = &p->ks[k];
            m->in_ledger = ks->kind == K_LEDGER;
            m->lost = m->in_ledger && !same_id(&m->view, ks->entry);
            p->n_marks++;
        }
    }
    o->n_marks = p->n_marks - o->first_mark;
}

static void prepare_live(planner_t *p, own_t *o) {
    o->live = -1;
    for (size_t w = 0; w < o->n_wals && o->live < 0; w++)
        if (doc_missing_or_null(p->wals[o->wals[w]].doc, "deletedAt")) o->live = o->wals[w];
    if (o->live < 0) return;
    const bson_t *doc = p->wals[o->live].doc;
    o->usable = true;
    if (!doc_int(doc, "availablePaise", &o->balance0)) {
        o->usable = false;
        snprintf(o->unusable, sizeof o->unusable,
                 "wallet of %.24s: availablePaise is missing or not an exact integer",
                 p->owner_hex[o - p->os]);
        return;
    }
    bson_iter_t vit;
    o->version = 0;
    o->version_null = doc_missing_or_null(doc, "version"); /* none yet: guard on null */
    if (!o->version_null && bson_iter_init_find(&vit, doc, "version") &&
        !read_exact_int(&vit, &o->version)) {
        o->usable = false;
        snprintf(o->unusable, sizeof o->unusable, "wallet %.24s: version is not an integer",
                 p->owner_hex[o - p->os]);
        return;
    }
    o->balance = o->balance0;
}

/* Markers against the ledger: lost ones undone (or the owner retried when
 * that is impossible), orphans completed and kept, complete ones pruned. */
static void settle_marks(planner_t *p, int oi) {
    own_t *o = &p->os[oi];
    for (size_t i = 0; i < o->n_marks; i++) {
        const mark_t *m = &p->marks[o->first_mark + i];
        if (!m->lost) continue;
        if (m->wal == o->live && !o->usable) {
            o->retry = true;
            snprintf(o->retry_reason, sizeof o->retry_reason,
                     "key %s was decided twice and its wallet cannot be corrected now", m->key);
        }
    }
    if (o->retry) return;
    const bson_oid_t *live_id = o->live >= 0 ? &p->wals[o->live].id : NULL;
    for (size_t i = 0; i < o->n_marks; i++) {
        const mark_t *m = &p->marks[o->first_mark + i];
        bool on_live = live_id && m->has_wid && bson_oid_equal(&m->wid, live_id);
        if (m->lost) { /* never reported: give the effect back, drop the marker */
            if (m->wal != o->live) continue; /* another document: undo_elsewhere() */
            if (m->applied) o->balance += m->credit ? -m->amount : m->amount;
            if (m->applied && m->credit && o->balance < 0) o->undo_below_zero = true;
            o->n_undone++;
            continue;
        }
        if (m->in_ledger) continue; /* complete: pruned */
        int k = find_str(p->keys, p->n_keys, m->key);
        kstate_t *ks = &p->ks[k];
        if (ks->kind == K_NONE) { /* an orphan: write its entry (the same document) */
            ks->kind = K_ORPHAN;
            ks->entry = &m->view;
            ks->owner = oi;
            ks->insert = add_insert(p, m->key, -1, true);
            bson_copy_to(&m->view, &p->plan->inserts[ks->insert].doc);
        }
        if (on_live && o->usable) {
            o->kept++;
            if (m->applied) {
                if (m->credit)
                    o->pend_credit += m->amount;
                else
                    o->pend_debit += m->amount;
            }
        }
    }
}

/* ---- per command ------------------------------------------------------------------- */

static void defer(planner_t *p, size_t i, kstate_t *ks, own_t *o, ww_wallet_plan_status_t st,
                  const char *reason) {
    ww_wallet_plan_result_t *pr = &p->plan->results[i];
    pr->status = st;
    snprintf(pr->reason, sizeof pr->reason, "%s", reason);
    ks->blocked = true;
    o->blocked = true;
}

/* The outcome of cmd at balance b (and the balance after). */
static ww_outcome_t outcome_at(const ww_command_t *cmd, int64_t b, int64_t *after) {
    *after = b;
    if (cmd->type == WW_COMMAND_DEBIT) {
        if (b < cmd->amount_paise) return WW_OUTCOME_INSUFFICIENT_FUNDS;
        *after = b - cmd->amount_paise;
        return WW_OUTCOME_APPLIED;
    }
    if (b > BALANCE_MAX - cmd->amount_paise) return WW_OUTCOME_INVALID;
    *after = b + cmd->amount_paise;
    return WW_OUTCOME_APPLIED;
}

static void decide_on_wallet(planner_t *p, size_t i, kstate_t *ks, own_t *o) {
    const ww_wallet_plan_input_t *in = &p->f->cmds[i];
    const ww_command_t *cmd = in->cmd;
    ww_wallet_plan_result_t *pr = &p->plan->results[i];
    if (!o->usable) {
        set_failed(pr, cmd, o->unusable);
        return;
    }
    if (o->n_new >= WW_WALLET_PLAN_PER_WALLET ||
        o->kept + o->n_new >= WW_WALLET_PLAN_MAX_MARKERS) {
        defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "the wallet's marker budget for this round "
              "is spent");
        return;
    }
    /* decide only what stands whether or not the pending effects stand */
    int64_t after, ignored;
    ww_outcome_t outcome = outcome_at(cmd, o->balance, &after);
    if (outcome_at(cmd, o->balance - o->pend_credit, &ignored) != outcome ||
        outcome_at(cmd, o->balance + o->pend_debit, &ignored) != outcome) {
        defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "its outcome depends on a decision whose "
              "ledger entry is not written yet");
        return;
    }
    const wal_t *wl = &p->wals[o->live];
    bson_oid_t owner, txid;
    bson_oid_init_from_string(&owner, cmd->owner_user_id);
    new_id(p, &txid);
    int u = owner_update(p, o);
    int e = add_insert(p, cmd->idempotency_key, u, false);
    bson_t *doc = &p->plan->inserts[e].doc;
    build_ledger(doc, in, &txid, outcome, &wl->id, &owner, true, after, p->f->now_ms);
    if (outcome == WW_OUTCOME_APPLIED) {
        if (cmd->type == WW_COMMAND_CREDIT)
            o->pend_credit += cmd->amount_paise;
        else
            o->pend_debit += cmd->amount_paise;
    }
    o->balance = after;
    o->news[o->n_new++] = e;
    o->decided_any = true;
    ks->kind = K_BATCH;
    ks->insert = e;
    ks->update = u;
    answer_first(pr, cmd, doc);
    pr->update = u;
    pr->entry = e;
}

static void plan_command(planner_t *p, size_t i) {
    const ww_wallet_plan_input_t *in = &p->f->cmds[i];
    const ww_command_t *cmd = in->cmd;
    ww_wallet_plan_result_t *pr = &p->plan->results[i];
    kstate_t *ks = &p->ks[find_str(p->keys, p->n_keys, cmd->idempotency_key)];
    int oi = find_str(p->owner_hex, p->n_owners, cmd->owner_user_id);
    own_t *o = &p->os[oi];

    /* 1. decided before: earlier in this batch, or in the ledger */
    if (ks->kind == K_BATCH) {
        answer_repeat(pr, cmd, &p->plan->inserts[ks->insert].doc);
        pr->update = ks->update;
        pr->entry = ks->insert;
        return;
    }
    if (ks->blocked) {
        defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "after an undecided command with the same "
              "idempotencyKey");
        return;
    }
    if (ks->kind == K_LEDGER) {
        const char *st = doc_str(ks->entry, "status");
        /* wallet_not_found takes the full path (lost markers are undone in
         * the owner's update); its answer does not depend on the wallet */
        if (st && strcmp(st, "wallet_not_found") == 0) {
            if (!o->read) {
                defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "its owner's wallets were not read");
                return;
            }
            if (o->retry) {
                defer(p, i, ks, o, WW_WALLET_PLAN_RETRY, o->retry_reason);
                return;
            }
        }
        answer_repeat(pr, cmd, ks->entry);
        return;
    }
    /* 2. an orphaned marker: decided, its entry is being written now */
    if (ks->kind == K_ORPHAN) {
        if (ks->owner == oi) {
            if (o->retry) {
                defer(p, i, ks, o, WW_WALLET_PLAN_RETRY, o->retry_reason);
                return;
            }
            if (o->blocked) { /* whether it is reported first depends on what comes before */
                defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "after an undecided command of the "
                      "same owner");
                return;
            }
            const char *fp = doc_str(ks->entry, "fingerprint");
            if (fp && strcmp(fp, cmd->fingerprint) == 0 && !ks->reported && !o->decided_any)
                answer_first(pr, cmd, ks->entry);
            else
                answer_repeat(pr, cmd, ks->entry);
            ks->reported = true;
        } else {
            answer_repeat(pr, cmd, ks->entry);
        }
        pr->entry = ks->insert;
        return;
    }
    /* 3. a new key: decide */
    if (!o->read) {
        defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "its owner's wallets were not read");
        return;
    }
    if (o->retry) {
        defer(p, i, ks, o, WW_WALLET_PLAN_RETRY, o->retry_reason);
        return;
    }
    if (o->blocked) {
        defer(p, i, ks, o, WW_WALLET_PLAN_DEFERRED, "after an undecided command of the same "
              "owner");
        return;
    }
    if (o->live < 0) { /* no live wallet: the ledger insert is the decision */
        bson_oid_t owner, txid;
        bson_oid_init_from_string(&owner, cmd->owner_user_id);
        new_id(p, &txid);
        int e = add_insert(p, cmd->idempotency_key, -1, false);
        bson_t *doc = &p->plan->inserts[e].doc;
        build_ledger(doc, in, &txid, WW_OUTCOME_WALLET_NOT_FOUND, NULL, &owner, false, 0,
                     p->f->now_ms);
        ks->kind = K_BATCH;
        ks->insert = e;
        ks->update = -1;
        answer_first(pr, cmd, doc);
        pr->entry = e;
        return;
    }
    decide_on_wallet(p, i, ks, o);
}

/* ---- the updates ----------------------------------------------------------------------- */

static void build_update(planner_t *p, int oi) {
    own_t *o = &p->os[oi];
    ww_wallet_plan_update_t *u = &p->plan->updates[o->update];
    const wal_t *wl = &p->wals[o->live];
    snprintf(u->owner, sizeof u->owner, "%s", p->owner_hex[oi]);
    bson_oid_to_string(&wl->id, u->wallet_id);
    u->version_after = o->version + 1;
    u->balance_before = o->balance0;
    u->balance_after = o->balance;
    u->n_decisions = o->n_new;
    u->n_undone = o->n_undone;
    u->undo_below_zero = o->undo_below_zero;

    bson_t *filter = &u->filter, *upd = &u->update, set, arr;
    bson_init(filter);
    bson_init(upd);
    BSON_APPEND_OID(filter, "_id", &wl->id);
    if (o->version_null)
        BSON_APPEND_NULL(filter, "version");
    else
        BSON_APPEND_INT64(filter, "version", o->version);
    BSON_APPEND_INT64(filter, "availablePaise", o->balance0);
    BSON_APPEND_NULL(filter, "deletedAt");
    BSON_APPEND_DOCUMENT_BEGIN(upd, "$set", &set);
    BSON_APPEND_INT64(&set, "availablePaise", o->balance);
    BSON_APPEND_INT64(&set, "version", o->version + 1);
    BSON_APPEND_ARRAY_BEGIN(&set, MARKERS, &arr);
    uint32_t n = 0;
    char idx[16];
    const char *ikey;
    for (size_t i = 0; i < o->n_marks; i++) { /* kept: not in the ledger yet */
        const mark_t *m = &p->marks[o->first_mark + i];
        if (m->in_ledger || !m->has_wid || !bson_oid_equal(&m->wid, &wl->id)) continue;
        bson_uint32_to_string(n++, &ikey, idx, sizeof idx);
        BSON_APPEND_DOCUMENT(&arr, ikey, &m->view);
    }
    for (size_t i = 0; i < o->n_new; i++) {
        bson_uint32_to_string(n++, &ikey, idx, sizeof idx);
        BSON_APPEND_DOCUMENT(&arr, ikey, &p->plan->inserts[o->news[i]].doc);
    }
    bson_append_array_end(&set, &arr);
    bson_append_date_time(&set, "updatedAt", -1, p->f->now_ms);
    bson_append_document_end(upd, &set);
    u->n_markers = n;
}

/* Lost markers on the owner's other documents (a wallet soft-deleted after
 * the decision, or a second live one): the ledger wins there too (step 6),
 * so each such document gets its own guarded update that gives the amounts
 * back and drops the lost markers (complete ones too; orphans stay until
 * their entries are in the ledger). It is guarded by the document's exact
 * version, balance and deletedAt (a soft-deleted wallet stays deleted, and
 * gains no marker: n_decisions is 0). It decides nothing, and nothing on the
 * live wallet depends on it. When the amount cannot be given back (the
 * balance is unusable, or would go below zero: the backend spent or moved
 * it when deleting) the markers are left for an operator (plan.stuck). */
static void undo_elsewhere(planner_t *p, int oi) {
    own_t *o = &p->os[oi];
    for (size_t w = 0; w < o->n_wals; w++) {
        int wi = o->wals[w];
        if (wi == o->live) continue;
        const wal_t *wl = &p->wals[wi];
        int64_t delta = 0;
        size_t undone = 0;
        for (size_t i = 0; i < o->n_marks; i++) {
            const mark_t *m = &p->marks[o->first_mark + i];
            if (m->wal != wi || !m->lost) continue;
            if (m->applied) delta += m->credit ? -m->amount : m->amount;
            undone++;
        }
        if (undone == 0) continue;
        int64_t balance = 0, version = 0;
        bson_iter_t vit;
        bool version_null = doc_missing_or_null(wl->doc, "version");
        bool usable = doc_int(wl->doc, "availablePaise", &balance) &&
                      (version_null || (bson_iter_init_find(&vit, wl->doc, "version") &&
                                        read_exact_int(&vit, &version)));
        if (!usable || balance + delta < 0) {
            char id[25];
            bson_oid_to_string(&wl->id, id);
            if (p->plan->n_stuck++ == 0)
                snprintf(p->plan->stuck, sizeof p->plan->stuck,
                         "wallet %s (owner %s): %zu decision(s) the ledger overruled cannot be "
                         "undone (%s)", id, p->owner_hex[oi], undone,
                         usable ? "the balance would go below zero" : "unusable balance or "
                         "version");
            continue;
        }
        ww_wallet_plan_update_t *u = &p->plan->updates[p->plan->n_updates++];
        snprintf(u->owner, sizeof u->owner, "%s", p->owner_hex[oi]);
        bson_oid_to_string(&wl->id, u->wallet_id);
        u->version_after = version + 1;
        u->balance_before = balance;
        u->balance_after = balance + delta;
        u->n_undone = undone;
        bson_t *filter = &u->filter, *upd = &u->update, set, arr;
        bson_init(filter);
        bson_init(upd);
        BSON_APPEND_OID(filter, "_id", &wl->id);
        if (version_null)
            BSON_APPEND_NULL(filter, "version");
        else
            BSON_APPEND_INT64(filter, "version", version);
        BSON_APPEND_INT64(filter, "availablePaise", balance);
        bson_iter_t dit;
        if (bson_iter_init_find(&dit, wl->doc, "deletedAt"))
            bson_append_iter(filter, "deletedAt", -1, &dit);
        else
            BSON_APPEND_NULL(filter, "deletedAt");
        BSON_APPEND_DOCUMENT_BEGIN(upd, "$set", &set);
        BSON_APPEND_INT64(&set, "availablePaise", balance + delta);
        BSON_APPEND_INT64(&set, "version", version + 1);
        BSON_APPEND_ARRAY_BEGIN(&set, MARKERS, &arr);
        uint32_t n = 0;
        char idx[16];
        const char *ikey;
        for (size_t i = 0; i < o->n_marks; i++) { /* kept: not in the ledger yet */
            const mark_t *m = &p->marks[o->first_mark + i];
            if (m->wal != wi || m->in_ledger) continue;
            bson_uint32_to_string(n++, &ikey, idx, sizeof idx);
            BSON_APPEND_DOCUMENT(&arr, ikey, &m->view);
        }
        bson_append_array_end(&set, &arr);
        bson_append_date_time(&set, "updatedAt", -1, p->f->now_ms);
        bson_append_document_end(upd, &set);
        u->n_markers = n;
    }
}

/* ---- entry point ------------------------------------------------------------------------ */

/* Zeroed storage for n elements that may hold a bson_t (128-byte aligned:
 * calloc only guarantees 16). */
static void *zalloc_aligned(size_t n, size_t size, size_t align) {
    if (n == 0) n = 1;
    if (size > SIZE_MAX / n) return NULL;
    size_t bytes = n * size;
    bytes = (bytes + align - 1) / align * align;
    void *p = aligned_alloc(align, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

static bool is_owner_hex(const char *s) {
    if (!s || strlen(s) != WW_COMMAND_OWNER_LEN) return false;
    return strspn(s, "0123456789abcdef") == WW_COMMAND_OWNER_LEN;
}

static size_t count_markers(const bson_t *doc) {
    bson_iter_t it, arr;
    size_t n = 0;
    if (!bson_iter_init_find(&it, doc, MARKERS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr)) n++;
    return n;
}

static bool validate_facts(const ww_wallet_plan_facts_t *f, ww_error_t *error) {
    for (size_t i = 0; i < f->n_cmds; i++) {
        if (!f->cmds[i].cmd || !is_owner_hex(f->cmds[i].cmd->owner_user_id)) {
            ww_error_set(error, WW_ERR_INTERNAL, 0, false, "plan: command %zu is malformed", i);
            return false;
        }
    }
    for (size_t i = 0; i < f->n_owners; i++) {
        if (!is_owner_hex(f->owners[i])) {
            ww_error_set(error, WW_ERR_INTERNAL, 0, false, "plan: owner %zu is not 24 "
                         "lowercase hex digits", i);
            return false;
        }
    }
    return true;
}

/* Wallets with an ObjectId _id and owner (others cannot be guarded), their
 * owners' hex, and the number of markers they carry (the arrays' sizes). */
static bool load_wallets(planner_t *p) {
    const ww_wallet_plan_facts_t *f = p->f;
    p->wals = calloc(f->n_wallets ? f->n_wallets : 1, sizeof *p->wals);
    p->wal_owner = calloc(f->n_wallets ? f->n_wallets : 1, sizeof *p->wal_owner);
    if (!p->wals || !p->wal_owner) return false;
    for (size_t i = 0; i < f->n_wallets; i++) {
        bson_oid_t oid;
        if (!f->wallets[i] || !doc_oid(f->wallets[i], "_id", &p->wals[p->n_wals].id) ||
            !doc_oid(f->wallets[i], "ownerUserId", &oid))
            continue;
        p->wals[p->n_wals].doc = f->wallets[i];
        bson_oid_to_string(&oid, p->wal_owner[p->n_wals]);
        p->cap_marks += count_markers(f->wallets[i]);
        p->n_wals++;
    }
    return true;
}

/* Every key (commands, ledger, markers) and owner (commands, read) once. */
static bool intern_names(planner_t *p) {
    const ww_wallet_plan_facts_t *f = p->f;
    size_t max_keys = f->n_cmds + f->n_ledger + p->cap_marks;
    p->keys = calloc(max_keys ? max_keys : 1, sizeof *p->keys);
    p->owner_hex = calloc(f->n_cmds + f->n_owners + 1, sizeof *p->owner_hex);
    if (!p->keys || !p->owner_hex) return false;
    for (size_t i = 0; i < f->n_cmds; i++) {
        p->keys[p->n_keys++] = f->cmds[i].cmd->idempotency_key;
        p->owner_hex[p->n_owners++] = f->cmds[i].cmd->owner_user_id;
    }
    for (size_t i = 0; i < f->n_ledger; i++) {
        const char *k = f->ledger[i] ? doc_str(f->ledger[i], "idempotencyKey") : NULL;
        if (k) p->keys[p->n_keys++] = k;
    }
    for (size_t i = 0; i < p->n_wals; i++) {
        bson_iter_t it, arr;
        if (!bson_iter_init_find(&it, p->wals[i].doc, MARKERS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
            !bson_iter_recurse(&it, &arr))
            continue;
        while (bson_iter_next(&arr)) {
            bson_iter_t sub;
            if (BSON_ITER_HOLDS_DOCUMENT(&arr) && bson_iter_recurse(&arr, &sub) &&
                bson_iter_find(&sub, "idempotencyKey") && BSON_ITER_HOLDS_UTF8(&sub))
                p->keys[p->n_keys++] = bson_iter_utf8(&sub, NULL);
        }
    }
    for (size_t i = 0; i < f->n_owners; i++) p->owner_hex[p->n_owners++] = f->owners[i];
    intern(p->keys, &p->n_keys);
    intern(p->owner_hex, &p->n_owners);
    return true;
}

static bool allocate(planner_t *p) {
    ww_wallet_plan_t *plan = p->plan;
    size_t n_cmds = p->f->n_cmds;
    p->ks = calloc(p->n_keys ? p->n_keys : 1, sizeof *p->ks);
    p->os = calloc(p->n_owners ? p->n_owners : 1, sizeof *p->os);
    p->marks = zalloc_aligned(p->cap_marks, sizeof *p->marks, _Alignof(bson_t));
    p->by_owner = calloc(p->n_wals ? p->n_wals : 1, sizeof *p->by_owner);
    p->owner_of = calloc(p->n_wals ? p->n_wals : 1, sizeof *p->owner_of);
    p->group = calloc(2 * (p->n_owners + 1), sizeof *p->group);
    p->cap_inserts = n_cmds + p->cap_marks;
    plan->results = calloc(n_cmds ? n_cmds : 1, sizeof *plan->results);
    plan->inserts = zalloc_aligned(p->cap_inserts, sizeof *plan->inserts, _Alignof(bson_t));
    plan->updates = zalloc_aligned(p->n_owners + p->n_wals, sizeof *plan->updates,
                                   _Alignof(bson_t)); /* live wallets + undo elsewhere */
    if (!p->ks || !p->os || !p->marks || !p->by_owner || !p->owner_of || !p->group ||
        !plan->results || !plan->inserts ||
        !plan->updates)
        return false;
    plan->n_results = n_cmds;
    for (size_t i = 0; i < n_cmds; i++) {
        plan->results[i].update = -1;
        plan->results[i].entry = -1;
    }
    return true;
}

/* Per owner read: its wallets (live or holding markers, by _id, at most
 * MAX_WALLETS), its markers against the ledger, its live wallet. */
static void prepare_owners(planner_t *p) {
    const ww_wallet_plan_facts_t *f = p->f;
    for (size_t oi = 0; oi < p->n_owners; oi++) {
        p->os[oi].live = -1;
        p->os[oi].update = -1;
    }
    for (size_t i = 0; i < f->n_owners; i++)
        p->os[find_str(p->owner_hex, p->n_owners, f->owners[i])].read = true;
    /* group the wallets by owner (a counting sort), keeping the facts' order */
    size_t *start = p->group, *fill = p->group + p->n_owners + 1;
    for (size_t w = 0; w < p->n_wals; w++) {
        p->owner_of[w] = find_str(p->owner_hex, p->n_owners, p->wal_owner[w]);
        if (p->owner_of[w] >= 0) start[p->owner_of[w] + 1]++;
    }
    for (size_t oi = 0; oi < p->n_owners; oi++) start[oi + 1] += start[oi];
    for (size_t w = 0; w < p->n_wals; w++) {
        int oi = p->owner_of[w];
        if (oi >= 0) p->by_owner[start[oi] + fill[oi]++] = (int)w;
    }
    for (size_t oi = 0; oi < p->n_owners; oi++)
        if (p->os[oi].read)
            select_owner_wallets(p, (int)oi, p->by_owner + start[oi], start[oi + 1] - start[oi]);
    for (size_t oi = 0; oi < p->n_owners; oi++) {
        own_t *o = &p->os[oi];
        if (!o->read) continue;
        for (size_t w = 0; w < o->n_wals; w++) p->wals[o->wals[w]].owner = (int)oi;
        collect_marks(p, (int)oi);
        prepare_live(p, o);
        settle_marks(p, (int)oi);
    }
}

bool ww_wallet_plan(const ww_wallet_plan_facts_t *f, ww_wallet_plan_t *plan,
                    ww_error_t *error) {
    memset(plan, 0, sizeof *plan);
    planner_t p;
    memset(&p, 0, sizeof p);
    p.f = f;
    p.plan = plan;
    bool ok = false;
    if (!validate_facts(f, error)) goto done;
    if (!load_wallets(&p) || !intern_names(&p) || !allocate(&p)) goto oom;

    /* the ledger: the first entry per key (the unique index admits one) */
    for (size_t i = 0; i < f->n_ledger; i++) {
        const char *k = f->ledger[i] ? doc_str(f->ledger[i], "idempotencyKey") : NULL;
        if (!k) continue;
        kstate_t *ks = &p.ks[find_str(p.keys, p.n_keys, k)];
        if (ks->kind != K_NONE) continue;
        ks->kind = K_LEDGER;
        ks->entry = f->ledger[i];
    }
    prepare_owners(&p);

    for (size_t i = 0; i < f->n_cmds; i++) plan_command(&p, i);

    /* one update per live wallet that changes: decisions, or an undo alone */
    for (size_t oi = 0; oi < p.n_owners; oi++) {
        own_t *o = &p.os[oi];
        if (o->read && !o->retry && o->live >= 0 && o->usable && o->n_undone > 0)
            owner_update(&p, o);
    }
    for (size_t oi = 0; oi < p.n_owners; oi++)
        if (p.os[oi].update >= 0) build_update(&p, (int)oi);
    for (size_t oi = 0; oi < p.n_owners; oi++)
        if (p.os[oi].read && !p.os[oi].retry) undo_elsewhere(&p, (int)oi);

    for (size_t i = 0; i < f->n_cmds; i++) {
        switch (plan->results[i].status) {
        case WW_WALLET_PLAN_DECIDED: plan->n_decided++; break;
        case WW_WALLET_PLAN_DEFERRED: plan->n_deferred++; break;
        case WW_WALLET_PLAN_RETRY: plan->n_retry++; break;
        }
    }
    ok = true;
    goto done;
oom:
    ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory planning a batch");
done:
    free(p.keys);
    free(p.owner_hex);
    free(p.ks);
    free(p.os);
    free(p.marks); /* views only: nothing to destroy */
    free(p.wals);
    free(p.wal_owner);
    free(p.by_owner);
    free(p.owner_of);
    free(p.group);
    return ok;
}

void ww_wallet_plan_destroy(ww_wallet_plan_t *plan) {
    if (!plan) return;
    for (size_t i = 0; i < plan->n_inserts; i++) bson_destroy(&plan->inserts[i].doc);
    for (size_t i = 0; i < plan->n_updates; i++) {
        bson_destroy(&plan->updates[i].filter);
        bson_destroy(&plan->updates[i].update);
    }
    free(plan->results);
    free(plan->inserts);
    free(plan->updates);
    memset(plan, 0, sizeof *plan);
}
