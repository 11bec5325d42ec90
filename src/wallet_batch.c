/* wallet_batch.c: the I/O shell around the pure wallet planner.
 *
 * A batch of wallet commands is decided in rounds. One round is at most five
 * round trips, whatever the batch's size:
 *   1. the ledger, for every open command's key ($in);
 *   2. the wallets of the owners that still need deciding ($in; the live
 *      ones and those holding markers, as the per-message snapshot);
 *   3. the ledger again, AFTER the wallets, for the keys step 1 did not find
 *      and every marker's key (Invariant B: a marker is trusted as "entry
 *      missing" only on a ledger read made after it was seen);
 *   4. one unordered bulk of guarded updates, at most one per wallet,
 *      carrying every marker the round decided for it;
 *   5. one unordered insertMany of the ledger entries.
 * The plan (wallet_plan.h) says which result depends on which update and
 * which entry. A result is final, and answered, once both are written: its
 * update matched and its entry was stored under its own _id. Everything else
 * is planned again next round from fresh facts, which is always safe: the
 * protocol's state (markers, ledger) says what happened to it. In particular
 * a bulk reply gives only the total nMatched, so when it is short every
 * update of the round counts as lost: the winners' decisions are then found
 * as markers next round (and their entries completed), the losers are decided
 * again. A duplicate key on an entry is read back at once (one $in for all
 * of the round's): stored under the entry's own _id (another writer
 * completed our marker first) it counts as written and the result is
 * answered; under another _id the entry lost, and its command goes to the
 * next round, which undoes the marker and answers from the ledger. (A sixth
 * round trip, the prune, and a seventh only when an entry hit a duplicate.)
 *
 * Failures: a retryable database error leaves every open command RETRY (the
 * pipeline backs off and hands them back); a command the planner cannot
 * decide now (RETRY: e.g. more than 8 wallet documents for its owner) is
 * RETRY with its reason, and so is every later command of its owner, its
 * idempotencyKey or its Kafka key (per-key order). The planner keeps order
 * per owner and per idempotencyKey; the shell adds the Kafka key: a round
 * writes nothing for a command while an earlier one with the same Kafka key
 * is undecided in it (RETRY or deferred), so effects follow offset order per
 * Kafka key even when producers do not key by owner. Any other error (a write
 * error that is not a duplicate key, a malformed plan) falls back to the
 * per-message protocol for the open commands, which classifies failures one
 * message at a time: a permanent failure dead-letters only its message. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "wallet.h"
#include "wallet_plan.h"

#define MAX_STALLED 8 /* rounds in a row that answer nothing: retry later */
#define MAX_ROUNDS 32 /* rounds per call: the rest is handed back (the pipeline's
                         outputs, revokes and shutdown wait for a call to end) */
#define MARKERS "pendingTransactions"

#define NO_KAFKA_KEY SIZE_MAX

typedef struct {
    ww_command_t cmd;
    size_t item;   /* index in the batch */
    size_t kkey;   /* Kafka message key: index of its first command (NO_KAFKA_KEY: none) */
    bool open;     /* not answered, not RETRY */
} bcmd_t;

typedef struct {
    bson_t **v;
    size_t n, cap, limit; /* limit: refuse more than this (0: none) */
    bool over;
} docs_t;

static void docs_clear(docs_t *d) {
    for (size_t i = 0; i < d->n; i++) bson_destroy(d->v[i]);
    free(d->v);
    memset(d, 0, sizeof *d);
}

static bool collect(const bson_t *doc, void *vctx) {
    docs_t *d = vctx;
    if (d->limit && d->n >= d->limit) {
        d->over = true;
        return false;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        bson_t **v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            d->over = true;
            return false;
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = bson_copy(doc);
    return true;
}

static const char *doc_str(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* A small open-addressing set of strings (borrowed), for the round's keys
 * and owners. */
typedef struct {
    const char **slot;
    size_t cap;
} strset_t;

static bool set_init(strset_t *s, size_t n) {
    s->cap = 16;
    while (s->cap < n * 2 + 2) s->cap *= 2;
    s->slot = calloc(s->cap, sizeof *s->slot);
    return s->slot != NULL;
}

static uint32_t str_hash(const char *k, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* Adds s; true when it was not there. The set must not be full (sized for n). */
static bool set_add(strset_t *s, const char *k) {
    size_t i = str_hash(k, strlen(k)) & (s->cap - 1);
    while (s->slot[i]) {
        if (strcmp(s->slot[i], k) == 0) return false;
        i = (i + 1) & (s->cap - 1);
    }
    s->slot[i] = k;
    return true;
}

static bool set_has(const strset_t *s, const char *k) {
    size_t i = str_hash(k, strlen(k)) & (s->cap - 1);
    while (s->slot[i]) {
        if (strcmp(s->slot[i], k) == 0) return true;
        i = (i + 1) & (s->cap - 1);
    }
    return false;
}

static void append_in(bson_t *filter, const char *field, const char *const *vals, size_t n,
                      bool oid) {
    bson_t cond, in;
    BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);
    char idx[16];
    const char *ikey;
    for (size_t i = 0; i < n; i++) {
        bson_uint32_to_string((uint32_t)i, &ikey, idx, sizeof idx);
        if (oid) {
            bson_oid_t o;
            bson_oid_init_from_string(&o, vals[i]);
            BSON_APPEND_OID(&in, ikey, &o);
        } else {
            BSON_APPEND_UTF8(&in, ikey, vals[i]);
        }
    }
    bson_append_array_end(&cond, &in);
    bson_append_document_end(filter, &cond);
}

/* find {field: {$in: vals}} (+ the wallets' snapshot condition) in one
 * round trip: the first batch holds every answer. */
static bool find_in(ww_db_t *db, const char *coll, const char *field, const char *const *vals,
                    size_t n, bool wallets, docs_t *out, ww_error_t *error) {
    if (n == 0) return true;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    append_in(&filter, field, vals, n, wallets);
    if (wallets) ww_wallet_append_snapshot_filter(&filter);
    int64_t expect = out->limit ? (int64_t)out->limit + 1 : (int64_t)n + 1;
    BSON_APPEND_INT64(&opts, "batchSize", expect);
    bool ok = ww_db_find(db, coll, &filter, &opts, collect, out, error);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

typedef struct {
    ww_wallet_ctx_t *ctx;
    ww_batch_item_t *items;
    bcmd_t *cmds;
    size_t n;
} batch_t;

/* Kafka message keys are bytes (not strings): each command gets the index
 * of the first command with the same key, so "same Kafka key" is an integer
 * comparison. Out of memory: every keyed command shares one group, which
 * only holds back more than needed. */
static void group_kafka_keys(batch_t *b) {
    size_t cap = 16;
    while (cap < b->n * 2 + 2) cap *= 2;
    size_t *slot = malloc(cap * sizeof *slot);
    if (slot)
        for (size_t i = 0; i < cap; i++) slot[i] = NO_KAFKA_KEY;
    size_t first_keyed = NO_KAFKA_KEY;
    for (size_t i = 0; i < b->n; i++) {
        const ww_msg_t *m = b->items[b->cmds[i].item].msg;
        b->cmds[i].kkey = NO_KAFKA_KEY;
        if (!m->key) continue;
        if (first_keyed == NO_KAFKA_KEY) first_keyed = i;
        if (!slot) {
            b->cmds[i].kkey = first_keyed;
            continue;
        }
        size_t h = str_hash((const char *)m->key, m->key_len) & (cap - 1);
        for (;; h = (h + 1) & (cap - 1)) {
            if (slot[h] == NO_KAFKA_KEY) {
                slot[h] = i;
                b->cmds[i].kkey = i;
                break;
            }
            const ww_msg_t *o = b->items[b->cmds[slot[h]].item].msg;
            if (o->key_len == m->key_len && memcmp(o->key, m->key, m->key_len) == 0) {
                b->cmds[i].kkey = slot[h];
                break;
            }
        }
    }
    free(slot);
}

/* Who is held back: every command after a held one that shares its owner,
 * idempotencyKey or Kafka key (transitively, in batch order). */
typedef struct {
    strset_t owners, keys;
    bool *kkeys; /* by Kafka key group */
    bool ok;     /* false (out of memory): everything after the first is held */
} hold_t;

static void hold_init(hold_t *h, size_t n) {
    memset(h, 0, sizeof *h);
    h->kkeys = calloc(n ? n : 1, sizeof *h->kkeys);
    h->ok = h->kkeys && set_init(&h->owners, n) && set_init(&h->keys, n);
}

static bool hold_hits(const hold_t *h, const bcmd_t *c) {
    return !h->ok || set_has(&h->owners, c->cmd.owner_user_id) ||
           set_has(&h->keys, c->cmd.idempotency_key) ||
           (c->kkey != NO_KAFKA_KEY && h->kkeys[c->kkey]);
}

static void hold_add(hold_t *h, const bcmd_t *c) {
    if (!h->ok) return;
    set_add(&h->owners, c->cmd.owner_user_id);
    set_add(&h->keys, c->cmd.idempotency_key);
    if (c->kkey != NO_KAFKA_KEY) h->kkeys[c->kkey] = true;
}

static void hold_clear(hold_t *h) {
    free(h->owners.slot);
    free(h->keys.slot);
    free(h->kkeys);
    memset(h, 0, sizeof *h);
}

/* Marks command i RETRY (why), and every later open command that shares
 * its owner, idempotencyKey or Kafka key, transitively: nothing overtakes it. */
static void retry_from(batch_t *b, size_t first, const ww_error_t *why) {
    hold_t h;
    hold_init(&h, b->n);
    for (size_t i = first; i < b->n; i++) {
        bcmd_t *c = &b->cmds[i];
        if (!c->open || (i != first && !hold_hits(&h, c))) continue;
        c->open = false;
        b->items[c->item].status = WW_ITEM_RETRY;
        b->items[c->item].error = *why;
        hold_add(&h, c);
    }
    hold_clear(&h);
}

/* Every open command: RETRY with why (a retryable infrastructure error). */
static void retry_all(batch_t *b, const ww_error_t *why) {
    for (size_t i = 0; i < b->n; i++)
        if (b->cmds[i].open) {
            b->cmds[i].open = false;
            b->items[b->cmds[i].item].status = WW_ITEM_RETRY;
            b->items[b->cmds[i].item].error = *why;
        }
}

/* The per-message protocol for every open command, in order. */
static void fall_back(batch_t *b) {
    size_t m = 0;
    ww_batch_item_t *sub = calloc(b->n ? b->n : 1, sizeof *sub);
    if (!sub) {
        ww_error_t e;
        ww_error_set(&e, WW_ERR_SYSTEM, 0, true, "out of memory");
        retry_all(b, &e);
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->cmds[i].open) sub[m++].msg = b->items[b->cmds[i].item].msg;
    ww_handle_each(ww_wallet_handle, b->ctx, sub, m);
    m = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->cmds[i].open) {
            b->cmds[i].open = false;
            b->items[b->cmds[i].item] = sub[m++];
        }
    free(sub);
}

typedef struct {
    docs_t ledger, wallets;
    const char **keys, **owners, **more; /* borrowed strings */
    size_t n_keys, n_owners, n_more;
    ww_wallet_plan_input_t *in;
    size_t *in_cmd; /* in[j] is b->cmds[in_cmd[j]] */
    size_t n_in;
    strset_t found;
} round_t;

static void round_clear(round_t *r) {
    docs_clear(&r->ledger);
    docs_clear(&r->wallets);
    free(r->keys);
    free(r->owners);
    free(r->more);
    free(r->in);
    free(r->in_cmd);
    free(r->found.slot);
    memset(r, 0, sizeof *r);
}

/* Steps 1-3: the facts for the open commands. 0 ok, 1 retryable error, 2 other error. */
static int read_facts(batch_t *b, round_t *r, ww_error_t *err) {
    size_t n = b->n;
    r->keys = calloc(n, sizeof *r->keys);
    r->owners = calloc(n, sizeof *r->owners);
    r->in = calloc(n, sizeof *r->in);
    r->in_cmd = calloc(n, sizeof *r->in_cmd);
    strset_t seen;
    memset(&seen, 0, sizeof seen);
    if (!r->keys || !r->owners || !r->in || !r->in_cmd || !set_init(&seen, n) ||
        !set_init(&r->found, n))
        goto oom;
    for (size_t i = 0; i < n; i++) {
        bcmd_t *c = &b->cmds[i];
        if (!c->open) continue;
        ww_wallet_plan_input_t *in = &r->in[r->n_in];
        const ww_msg_t *m = b->items[c->item].msg;
        in->cmd = &c->cmd;
        in->topic = m->topic;
        in->partition = m->partition;
        in->offset = m->offset;
        r->in_cmd[r->n_in++] = i;
        if (set_add(&seen, c->cmd.idempotency_key)) r->keys[r->n_keys++] = c->cmd.idempotency_key;
    }
    /* 1. the ledger for the keys */
    if (!find_in(b->ctx->db, WW_TRANSACTIONS, "idempotencyKey", r->keys, r->n_keys, false,
                 &r->ledger, err))
        goto db_error;
    strset_t wnf; /* keys found as wallet_not_found */
    if (!set_init(&wnf, r->ledger.n)) goto oom;
    for (size_t i = 0; i < r->ledger.n; i++) {
        const char *k = doc_str(r->ledger.v[i], "idempotencyKey");
        const char *st = doc_str(r->ledger.v[i], "status");
        if (k) set_add(&r->found, k);
        if (k && st && strcmp(st, "wallet_not_found") == 0) set_add(&wnf, k);
    }
    /* 2. the wallets of owners with a key to decide (or a wallet_not_found to
     * re-check: its lost markers are undone in the owner's update) */
    free(seen.slot);
    seen.slot = NULL;
    if (!set_init(&seen, n)) goto oom;
    for (size_t j = 0; j < r->n_in; j++) {
        const ww_command_t *cmd = r->in[j].cmd;
        bool need = !set_has(&r->found, cmd->idempotency_key) ||
                    set_has(&wnf, cmd->idempotency_key);
        if (need && set_add(&seen, cmd->owner_user_id)) r->owners[r->n_owners++] = cmd->owner_user_id;
    }
    free(wnf.slot);
    r->wallets.limit = r->n_owners * (WW_WALLET_PLAN_MAX_WALLETS + 1) + 1;
    if (!find_in(b->ctx->db, WW_WALLETS, "ownerUserId", r->owners, r->n_owners, true, &r->wallets,
                 err))
        goto db_error;
    if (r->wallets.over) {
        free(seen.slot);
        seen.slot = NULL;
        ww_error_set(err, WW_ERR_INTERNAL, 0, false,
                     "too many wallet documents for one read: deciding one command at a time");
        return 2;
    }
    /* 3. after the wallets: the keys not found and every marker's key */
    size_t n_marks = 0;
    for (size_t w = 0; w < r->wallets.n; w++) {
        bson_iter_t it, arr;
        if (bson_iter_init_find(&it, r->wallets.v[w], MARKERS) && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &arr))
            while (bson_iter_next(&arr)) n_marks++;
    }
    r->more = calloc(r->n_keys + n_marks + 1, sizeof *r->more);
    free(seen.slot);
    seen.slot = NULL;
    if (!r->more || !set_init(&seen, r->n_keys + n_marks)) goto oom;
    for (size_t i = 0; i < r->n_keys; i++)
        if (!set_has(&r->found, r->keys[i]) && set_add(&seen, r->keys[i]))
            r->more[r->n_more++] = r->keys[i];
    for (size_t w = 0; w < r->wallets.n; w++) {
        bson_iter_t it, arr, mk;
        if (!(bson_iter_init_find(&it, r->wallets.v[w], MARKERS) && BSON_ITER_HOLDS_ARRAY(&it) &&
              bson_iter_recurse(&it, &arr)))
            continue;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &mk) ||
                !bson_iter_find(&mk, "idempotencyKey") || !BSON_ITER_HOLDS_UTF8(&mk))
                continue;
            const char *k = bson_iter_utf8(&mk, NULL);
            if (!set_has(&r->found, k) && set_add(&seen, k)) r->more[r->n_more++] = k;
        }
    }
    free(seen.slot);
    seen.slot = NULL;
    r->ledger.limit = 0;
    if (!find_in(b->ctx->db, WW_TRANSACTIONS, "idempotencyKey", r->more, r->n_more, false,
                 &r->ledger, err))
        return err->retryable ? 1 : 2;
    if (r->ledger.over) goto oom;
    return 0;
oom:
    free(seen.slot);
    ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory reading a batch's facts");
    return 1;
db_error:
    free(seen.slot);
    return err->retryable ? 1 : 2;
}

/* Fault injection for the crash-window tests (docs/testing.md): with
 * WW_FAULT_KILL_AFTER_BULK_UPDATE=N in the environment, the process kills
 * itself (SIGKILL) right after its N-th guarded bulk update, before the
 * round's insertMany: markers written, ledger entries missing. */
static long fault_kill_after;
static atomic_long fault_updates;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static void fault_init(void) {
    const char *v = getenv("WW_FAULT_KILL_AFTER_BULK_UPDATE");
    if (v && *v) fault_kill_after = strtol(v, NULL, 10);
}

static void fault_point_after_update(void) {
    pthread_once(&fault_once, fault_init);
    if (fault_kill_after > 0 && atomic_fetch_add(&fault_updates, 1) + 1 == fault_kill_after) {
        ww_warn("wallet", "fault injection: SIGKILL after a guarded bulk update "
                "(WW_FAULT_KILL_AFTER_BULK_UPDATE)", WW_INT("update", fault_kill_after));
        raise(SIGKILL);
    }
}

/* The tests' hook before each insertMany (wallet.h). */
static ww_wallet_batch_hook_fn test_hook;
static void *test_hook_ctx;

void ww_wallet_batch_set_test_hook(ww_wallet_batch_hook_fn fn, void *ctx) {
    test_hook = fn;
    test_hook_ctx = ctx;
}

static int cmp_oid(const void *a, const void *b) { return memcmp(a, b, sizeof(bson_oid_t)); }

/* Step 6, housekeeping: the markers whose entries this round stored are
 * dropped from their wallets at once (a marker may go once the ledger holds
 * its entry: Invariant B), so an idle wallet does not keep a round's worth
 * of them until its next command. Guarded by the version the round's update
 * wrote, and not bumping it: a writer that read the wallet before sees the
 * same version and balance and may write its own marker list over this one,
 * which at worst puts back markers whose entries exist (pruned later). A
 * failure changes nothing that matters: the next update prunes them. */
static void prune_markers(batch_t *b, const ww_wallet_plan_t *plan, const int *slot,
                          const bool *dup) {
    bson_oid_t *ids = calloc(plan->n_inserts + 1, sizeof *ids);
    bson_t *f = calloc(plan->n_updates + 1, sizeof *f);
    bson_t *u = calloc(plan->n_updates + 1, sizeof *u);
    const bson_t **fp = calloc(plan->n_updates + 1, sizeof *fp);
    const bson_t **up = calloc(plan->n_updates + 1, sizeof *up);
    size_t n_ids = 0, n = 0;
    if (!ids || !f || !u || !fp || !up) goto out;
    for (size_t i = 0; i < plan->n_inserts; i++) {
        bson_iter_t it;
        if (slot[i] >= 0 && !dup[i] && bson_iter_init_find(&it, &plan->inserts[i].doc, "_id") &&
            BSON_ITER_HOLDS_OID(&it))
            bson_oid_copy(bson_iter_oid(&it), &ids[n_ids++]);
    }
    if (n_ids == 0) goto out;
    qsort(ids, n_ids, sizeof *ids, cmp_oid);
    for (size_t w = 0; w < plan->n_updates; w++) {
        const ww_wallet_plan_update_t *pu = &plan->updates[w];
        bson_iter_t it, arr, m;
        if (!bson_iter_init(&it, &pu->update) || !bson_iter_find_descendant(&it, "$set." MARKERS, &arr) ||
            !BSON_ITER_HOLDS_ARRAY(&arr) || !bson_iter_recurse(&arr, &m))
            continue;
        bson_t *upd = &u[n], set, keep;
        bson_init(upd);
        BSON_APPEND_DOCUMENT_BEGIN(upd, "$set", &set);
        BSON_APPEND_ARRAY_BEGIN(&set, MARKERS, &keep);
        uint32_t kept = 0, dropped = 0;
        char idx[16];
        const char *ikey;
        while (bson_iter_next(&m)) {
            bson_iter_t d;
            if (BSON_ITER_HOLDS_DOCUMENT(&m) && bson_iter_recurse(&m, &d) &&
                bson_iter_find(&d, "_id") && BSON_ITER_HOLDS_OID(&d) &&
                bsearch(bson_iter_oid(&d), ids, n_ids, sizeof *ids, cmp_oid)) {
                dropped++;
                continue;
            }
            bson_uint32_to_string(kept++, &ikey, idx, sizeof idx);
            bson_append_iter(&keep, ikey, -1, &m);
        }
        bson_append_array_end(&set, &keep);
        bson_append_document_end(upd, &set);
        if (dropped == 0) {
            bson_destroy(upd);
            continue;
        }
        bson_oid_t wid;
        bson_oid_init_from_string(&wid, pu->wallet_id);
        bson_init(&f[n]);
        BSON_APPEND_OID(&f[n], "_id", &wid);
        BSON_APPEND_INT64(&f[n], "version", pu->version_after);
        fp[n] = &f[n];
        up[n] = &u[n];
        n++;
    }
    if (n) {
        int64_t matched;
        ww_error_t err;
        ww_error_clear(&err);
        if (!ww_db_bulk_update_one(b->ctx->db, WW_WALLETS, fp, up, n, &matched, &err))
            ww_debug("wallet", "batch: pruning markers failed (the next update prunes them)",
                     WW_STR("error", err.message));
    }
out:
    for (size_t i = 0; i < n; i++) {
        bson_destroy(&f[i]);
        bson_destroy(&u[i]);
    }
    free(ids);
    free(f);
    free(u);
    free(fp);
    free(up);
}

/* The contract's step 2 (wallet_plan.h): an entry refused as a duplicate
 * key is read back, all of the round's at once (one $in). Stored under its
 * own _id (another writer completed our marker between the bulk update and
 * the insertMany, or a retried insert): already recorded, dup[i] is
 * cleared and its result is final. Under another _id: the entry lost (step
 * 6), dup[i] stays and its command is planned again, which undoes the
 * marker. If the read fails, every dup[i] stays: planning them again is
 * always safe (the next round finds the entry in the ledger). */
static void read_back_duplicates(batch_t *b, const ww_wallet_plan_t *plan, bool *dup) {
    const char **keys = calloc(plan->n_inserts + 1, sizeof *keys);
    docs_t stored;
    memset(&stored, 0, sizeof stored);
    size_t nk = 0;
    if (!keys) return;
    for (size_t i = 0; i < plan->n_inserts; i++)
        if (dup[i]) keys[nk++] = plan->inserts[i].key;
    ww_error_t err;
    ww_error_clear(&err);
    if (nk == 0) goto out;
    stored.limit = nk;
    if (!find_in(b->ctx->db, WW_TRANSACTIONS, "idempotencyKey", keys, nk, false, &stored, &err) ||
        stored.over) {
        ww_debug("wallet", "batch: reading duplicate ledger entries back failed (planned again)",
                 WW_STR("error", err.message));
        goto out;
    }
    for (size_t i = 0; i < plan->n_inserts; i++) {
        if (!dup[i]) continue;
        bson_iter_t mine, theirs;
        if (!bson_iter_init_find(&mine, &plan->inserts[i].doc, "_id") || !BSON_ITER_HOLDS_OID(&mine))
            continue;
        for (size_t d = 0; d < stored.n; d++) {
            const char *k = doc_str(stored.v[d], "idempotencyKey");
            if (!k || strcmp(k, plan->inserts[i].key) != 0) continue;
            if (bson_iter_init_find(&theirs, stored.v[d], "_id") && BSON_ITER_HOLDS_OID(&theirs) &&
                bson_oid_equal(bson_iter_oid(&mine), bson_iter_oid(&theirs)))
                dup[i] = false; /* already recorded: ours */
            break;
        }
    }
out:
    docs_clear(&stored);
    free(keys);
}

/* Steps 4-6 and the answers. 0 ok, 1 retryable error, 2 other error. */
static int write_and_answer(batch_t *b, round_t *r, const ww_wallet_plan_t *plan,
                            size_t *answered, ww_error_t *err) {
    int rc = 0;
    const bson_t **f = calloc(plan->n_updates + 1, sizeof *f);
    const bson_t **u = calloc(plan->n_updates + 1, sizeof *u);
    const bson_t **docs = calloc(plan->n_inserts + 1, sizeof *docs);
    int *slot = calloc(plan->n_inserts + 1, sizeof *slot); /* insert -> docs index, -1 unsent */
    bool *dup = calloc(plan->n_inserts + 1, sizeof *dup);
    if (!f || !u || !docs || !slot || !dup) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory writing a batch");
        rc = 1;
        goto out;
    }
    /* 4. the guarded updates */
    for (size_t i = 0; i < plan->n_updates; i++) {
        f[i] = &plan->updates[i].filter;
        u[i] = &plan->updates[i].update;
    }
    int64_t matched = 0;
    if (!ww_db_bulk_update_one(b->ctx->db, WW_WALLETS, f, u, plan->n_updates, &matched, err)) {
        rc = err->retryable ? 1 : 2;
        goto out;
    }
    bool all_matched = matched == (int64_t)plan->n_updates;
    if (plan->n_updates) fault_point_after_update();
    if (!all_matched)
        ww_info("wallet", "batch: another writer moved first; re-planning from fresh reads",
                WW_INT("matched", matched), WW_UINT("updates", plan->n_updates));
    if (plan->n_stuck)
        ww_warn("wallet", "batch: decisions the ledger overruled left on soft-deleted wallets "
                "for an operator", WW_UINT("wallets", plan->n_stuck), WW_STR("first", plan->stuck));
    for (size_t i = 0; all_matched && i < plan->n_updates; i++)
        if (plan->updates[i].n_undone)
            ww_warn("wallet", "markers whose key the ledger holds under another entry were "
                    "undone (decided twice; the ledger's outcome stands)",
                    WW_STR("owner", plan->updates[i].owner),
                    WW_STR("wallet", plan->updates[i].wallet_id),
                    WW_UINT("undone", plan->updates[i].n_undone));
    /* 5. the ledger entries whose update (if any) is written */
    size_t nd = 0;
    for (size_t i = 0; i < plan->n_inserts; i++) {
        slot[i] = -1;
        if (plan->inserts[i].update < 0 || all_matched) {
            slot[i] = (int)nd;
            docs[nd++] = &plan->inserts[i].doc;
        }
    }
    bool *dupd = calloc(nd + 1, sizeof *dupd);
    if (!dupd) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory writing a batch");
        rc = 1;
        goto out;
    }
    if (test_hook && nd) test_hook(test_hook_ctx, docs, nd);
    if (!ww_db_insert_many(b->ctx->db, WW_TRANSACTIONS, docs, nd, dupd, err)) {
        free(dupd);
        rc = err->retryable ? 1 : 2;
        goto out;
    }
    for (size_t i = 0; i < plan->n_inserts; i++) dup[i] = slot[i] >= 0 && dupd[slot[i]];
    free(dupd);
    read_back_duplicates(b, plan, dup);
    for (size_t i = 0; i < plan->n_inserts; i++)
        if (slot[i] >= 0 && !dup[i] && plan->inserts[i].orphan)
            ww_info("wallet", "completed an interrupted command", WW_STR("key", plan->inserts[i].key));
    if (all_matched) prune_markers(b, plan, slot, dup);
    /* the answers that are final */
    for (size_t j = 0; j < r->n_in; j++) {
        const ww_wallet_plan_result_t *pr = &plan->results[j];
        if (pr->status != WW_WALLET_PLAN_DECIDED) continue;
        if (pr->update >= 0 && !all_matched) continue;
        if (pr->entry >= 0 && (slot[pr->entry] < 0 || dup[pr->entry])) continue;
        bcmd_t *c = &b->cmds[r->in_cmd[j]];
        if (!c->open) continue; /* behind a RETRY of its Kafka key: answered later */
        ww_batch_item_t *it = &b->items[c->item];
        if (!ww_wallet_answer(b->ctx, it->msg, &c->cmd, &pr->result, &it->outs, &it->error)) {
            *err = it->error;
            rc = 1;
            goto out;
        }
        it->status = WW_ITEM_DONE;
        c->open = false;
        (*answered)++;
    }
out:
    free(f);
    free(u);
    free(docs);
    free(slot);
    free(dup);
    return rc;
}

/* Plans the round's open commands (r->in) from its facts. A command the
 * planner cannot decide in this call (RETRY) is retried with every later
 * command of its owner, idempotencyKey or Kafka key (retry_from). Then no
 * command may be written while an earlier one with the same Kafka key is
 * undecided in this round (RETRY or DEFERRED): the planner keeps order per
 * owner and per idempotencyKey only, and producers need not key by owner.
 * Such commands, and every later one they block, are left out of the
 * round and the rest is planned again (same facts: the decisions of what
 * stays are the same, as each depends only on earlier commands of its owner
 * and key, all kept). 0 ok, 1 retryable error, 2 other error. */
static int plan_round(batch_t *b, round_t *r, ww_wallet_plan_t *plan, ww_error_t *err) {
    for (;;) {
        ww_wallet_plan_facts_t facts = {
            .cmds = r->in, .n_cmds = r->n_in,
            .ledger = (const bson_t *const *)r->ledger.v, .n_ledger = r->ledger.n,
            .wallets = (const bson_t *const *)r->wallets.v, .n_wallets = r->wallets.n,
            .owners = r->owners, .n_owners = r->n_owners,
            .now_ms = ww_clock_now_ms(),
        };
        if (!ww_wallet_plan(&facts, plan, err)) return err->retryable ? 1 : 2;
        for (size_t j = 0; j < r->n_in; j++)
            if (plan->results[j].status == WW_WALLET_PLAN_RETRY && b->cmds[r->in_cmd[j]].open) {
                ww_error_t why;
                ww_error_set(&why, WW_ERR_DB, 0, true, "%s", plan->results[j].reason);
                retry_from(b, r->in_cmd[j], &why);
            }
        /* which decided commands come after an undecided one of their Kafka key */
        bool *held = calloc(r->n_in + 1, sizeof *held);
        if (!held) {
            ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory planning a batch");
            return 1;
        }
        hold_t h;
        hold_init(&h, b->n);
        size_t held_decided = 0;
        for (size_t j = 0; j < r->n_in; j++) {
            const bcmd_t *c = &b->cmds[r->in_cmd[j]];
            bool decided = plan->results[j].status == WW_WALLET_PLAN_DECIDED;
            if (c->open && decided && !hold_hits(&h, c)) continue;
            held[j] = true;
            held_decided += decided; /* planned, with writes: plan again without it */
            hold_add(&h, c);
        }
        hold_clear(&h);
        if (held_decided == 0) { /* the planner's own order is enough: the plan stands */
            free(held);
            return 0;
        }
        size_t kept = 0;
        for (size_t j = 0; j < r->n_in; j++) {
            if (held[j]) continue;
            r->in[kept] = r->in[j];
            r->in_cmd[kept++] = r->in_cmd[j];
        }
        free(held);
        r->n_in = kept;
        ww_wallet_plan_destroy(plan);
    }
}

void ww_wallet_handle_batch(void *vctx, ww_batch_item_t *items, size_t n) {
    ww_wallet_ctx_t *ctx = vctx;
    if (ctx->dry_run || ww_db_use_transactions(ctx->db)) {
        /* predictions and the transactional mode stay one message at a time */
        ww_handle_each(ww_wallet_handle, ctx, items, n);
        return;
    }
    bcmd_t *cmds = calloc(n ? n : 1, sizeof *cmds);
    if (!cmds) {
        for (size_t i = 0; i < n; i++) {
            items[i].status = WW_ITEM_RETRY;
            ww_error_set(&items[i].error, WW_ERR_SYSTEM, 0, true, "out of memory");
        }
        return;
    }
    batch_t b = {.ctx = ctx, .items = items, .cmds = cmds, .n = 0};
    for (size_t i = 0; i < n; i++) {
        ww_batch_item_t *it = &items[i];
        bcmd_t *c = &cmds[b.n];
        int parsed = ww_wallet_parse(ctx, it->msg, &c->cmd, &it->outs, &it->error);
        if (parsed == 0) {
            it->status = WW_ITEM_DONE;
        } else if (parsed > 0) {
            c->item = i;
            c->open = true;
            b.n++;
        } else {
            /* out of memory: this one and everything after it later (order) */
            for (size_t j = i; j < n; j++) {
                items[j].status = WW_ITEM_RETRY;
                items[j].error = it->error;
                ww_outputs_clear(&items[j].outs);
            }
            break;
        }
    }

    group_kafka_keys(&b);

    /* Rounds until everything is answered. A round answers at least the
     * first open command of each owner unless another writer keeps winning
     * (or the planner keeps deferring): after MAX_STALLED such rounds in a
     * row the rest waits for the pipeline's backoff. */
    for (int stalled = 0, round = 0;; round++) {
        size_t open = 0;
        for (size_t i = 0; i < b.n; i++) open += b.cmds[i].open;
        if (open == 0) break;
        ww_error_t err;
        ww_error_clear(&err);
        if (round == MAX_ROUNDS) {
            ww_error_set(&err, WW_ERR_DB, 0, true, "%zu command(s) left after %d rounds "
                         "(one wallet's long chain): continuing after a short pause", open,
                         MAX_ROUNDS);
            retry_all(&b, &err);
            break;
        }
        if (stalled == MAX_STALLED) {
            ww_error_set(&err, WW_ERR_DB, 0, true, "%zu command(s) still undecided after %d "
                         "rounds (contention on their wallets)", open, MAX_STALLED);
            retry_all(&b, &err);
            break;
        }
        round_t r;
        memset(&r, 0, sizeof r);
        int rc = read_facts(&b, &r, &err);
        ww_wallet_plan_t plan;
        memset(&plan, 0, sizeof plan);
        size_t answered = 0;
        if (rc == 0) rc = plan_round(&b, &r, &plan, &err);
        if (rc == 0) rc = write_and_answer(&b, &r, &plan, &answered, &err);
        ww_wallet_plan_destroy(&plan);
        round_clear(&r);
        stalled = answered ? 0 : stalled + 1;
        if (rc == 1) {
            retry_all(&b, &err);
            break;
        }
        if (rc == 2) {
            ww_warn("wallet", "batch: deciding the batch's open commands one at a time",
                    WW_STR("error", err.message));
            fall_back(&b);
            break;
        }
    }
    free(cmds);
}
