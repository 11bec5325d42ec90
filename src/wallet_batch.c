/* wallet_batch.c: the I/O shell around the pure wallet planner.
 *
 * A batch of wallet commands is decided in rounds. One round is at most five
 * round trips, whatever the batch's size:
 *   1. (ledger first only) the ledger, for every open command's key ($in);
 *   2. the wallets of the owners that still need deciding ($in; the live
 *      ones and those holding markers, as the per-message snapshot);
 *   3. the ledger, AFTER the wallets, for the keys not found yet and every
 *      marker's key (Invariant B: a marker is trusted as "entry missing"
 *      only on a ledger read made after it was seen);
 *   4. one unordered bulk of guarded updates, at most one per wallet,
 *      carrying every marker the round decided for it;
 *   5. one unordered insertMany of the ledger entries;
 *   (6.) the prune of the markers whose entries step 5 stored, owed by the
 *      thread and sent inside its next bulk of step 4 (no round trip).
 * Step 1 is skipped (snapshot first) while recent rounds found few of their
 * keys in the ledger: see ledger_first().
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
 * next round, which undoes the marker and answers from the ledger (a sixth
 * round trip, only when an entry hit a duplicate).
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
#include "fnv.h"
#include "log.h"
#include "metrics.h"
#include "strmap.h"
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

/* A set of strings (borrowed) for the round's keys and owners: the shared
 * string map (strmap.h), sized once for at most n strings. */
typedef ww_strmap_t strset_t;

static bool set_init(strset_t *s, size_t n) { return ww_strmap_init(s, n); }
static void set_free(strset_t *s) { ww_strmap_destroy(s); }

/* Adds k; true when it was not there (and there was room). */
static bool set_add(strset_t *s, const char *k) {
    size_t before = s->n;
    return ww_strmap_put(s, k, before) == before && s->n == before + 1;
}

static bool set_has(const strset_t *s, const char *k) {
    return ww_strmap_get(s, k) != WW_STRMAP_NONE;
}

static uint32_t str_hash(const char *k, size_t len) { return ww_fnv1a(k, len); }

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
    set_free(&h->owners);
    set_free(&h->keys);
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
    set_free(&r->found);
    memset(r, 0, sizeof *r);
}

/* Calls fn with the idempotencyKey of every marker on the wallets read
 * (strings borrowed from the documents); stops when fn returns false.
 * Returns the number of markers (all of them when fn is NULL). */
static size_t each_marker_key(const docs_t *wallets, bool (*fn)(const char *key, void *ctx),
                              void *ctx) {
    size_t n = 0;
    for (size_t w = 0; w < wallets->n; w++) {
        bson_iter_t it, arr, mk;
        if (!(bson_iter_init_find(&it, wallets->v[w], MARKERS) && BSON_ITER_HOLDS_ARRAY(&it) &&
              bson_iter_recurse(&it, &arr)))
            continue;
        while (bson_iter_next(&arr)) {
            n++;
            if (!fn) continue;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &mk) ||
                !bson_iter_find(&mk, "idempotencyKey") || !BSON_ITER_HOLDS_UTF8(&mk))
                continue;
            if (!fn(bson_iter_utf8(&mk, NULL), ctx)) return n;
        }
    }
    return n;
}

typedef struct {
    round_t *r;
    strset_t *seen;
} more_t;

/* A marker's key for read 3, unless found or already listed. */
static bool add_more(const char *k, void *vctx) {
    more_t *m = vctx;
    if (!set_has(&m->r->found, k) && set_add(m->seen, k)) m->r->more[m->r->n_more++] = k;
    return true;
}

/* How the facts are read. Ledger first (3 reads): the ledger for the keys,
 * the wallets of the owners with a key not found (or found as
 * wallet_not_found), the ledger again for the keys not found and the
 * markers; a round of duplicates (a replay) then costs one read. Snapshot
 * first (2 reads): the wallets of every owner, then the ledger for every key
 * and marker; a round of new commands saves a read. Both read the ledger
 * after the wallets for every key they decide (Invariant B). The choice
 * follows the share of keys found in the ledger by recent rounds (an
 * estimate shared by the process's workers; a wrong guess costs a read,
 * never a decision). */
static atomic_uint found_permille; /* recent rounds' keys found in the ledger, per mille */

static bool ledger_first(void) { return atomic_load_explicit(&found_permille, memory_order_relaxed) >= 500; }

static void note_found(size_t found, size_t keys) {
    if (keys == 0) return;
    unsigned now = (unsigned)(found * 1000 / keys), old = atomic_load_explicit(&found_permille, memory_order_relaxed);
    atomic_store_explicit(&found_permille, (old + now) / 2, memory_order_relaxed);
}

/* Steps 1-3: the facts for the open commands. 0 ok, 1 retryable error, 2 other error. */
static int read_facts(batch_t *b, round_t *r, ww_error_t *err) {
    size_t n = b->n;
    bool first_ledger = ledger_first();
    r->keys = calloc(n, sizeof *r->keys);
    r->owners = calloc(n, sizeof *r->owners);
    r->in = calloc(n, sizeof *r->in);
    r->in_cmd = calloc(n, sizeof *r->in_cmd);
    strset_t seen, wnf; /* wnf: keys found as wallet_not_found */
    memset(&seen, 0, sizeof seen);
    memset(&wnf, 0, sizeof wnf);
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
    /* 1. ledger first: the ledger for the keys */
    if (first_ledger &&
        !find_in(b->ctx->db, WW_TRANSACTIONS, "idempotencyKey", r->keys, r->n_keys, false,
                 &r->ledger, err))
        goto db_error;
    if (!set_init(&wnf, r->ledger.n)) goto oom;
    for (size_t i = 0; i < r->ledger.n; i++) {
        const char *k = doc_str(r->ledger.v[i], "idempotencyKey");
        const char *st = doc_str(r->ledger.v[i], "status");
        if (k) set_add(&r->found, k);
        if (k && st && strcmp(st, "wallet_not_found") == 0) set_add(&wnf, k);
    }
    /* 2. the wallets of owners with a key to decide (or a wallet_not_found to
     * re-check: its lost markers are undone in the owner's update) */
    set_free(&seen);
    if (!set_init(&seen, n)) goto oom;
    for (size_t j = 0; j < r->n_in; j++) {
        const ww_command_t *cmd = r->in[j].cmd;
        bool need = !set_has(&r->found, cmd->idempotency_key) ||
                    set_has(&wnf, cmd->idempotency_key);
        if (need && set_add(&seen, cmd->owner_user_id)) r->owners[r->n_owners++] = cmd->owner_user_id;
    }
    set_free(&wnf);
    r->wallets.limit = r->n_owners * (WW_WALLET_PLAN_MAX_WALLETS + 1) + 1;
    if (!find_in(b->ctx->db, WW_WALLETS, "ownerUserId", r->owners, r->n_owners, true, &r->wallets,
                 err))
        goto db_error;
    if (r->wallets.over) {
        set_free(&seen);
        ww_error_set(err, WW_ERR_INTERNAL, 0, false,
                     "too many wallet documents for one read: deciding one command at a time");
        return 2;
    }
    /* 3. after the wallets: the keys not found and every marker's key */
    size_t n_marks = each_marker_key(&r->wallets, NULL, NULL);
    r->more = calloc(r->n_keys + n_marks + 1, sizeof *r->more);
    set_free(&seen);
    if (!r->more || !set_init(&seen, r->n_keys + n_marks)) goto oom;
    for (size_t i = 0; i < r->n_keys; i++)
        if (!set_has(&r->found, r->keys[i]) && set_add(&seen, r->keys[i]))
            r->more[r->n_more++] = r->keys[i];
    more_t mctx = {r, &seen};
    each_marker_key(&r->wallets, add_more, &mctx);
    set_free(&seen);
    size_t before = r->ledger.n;
    r->ledger.limit = 0;
    if (!find_in(b->ctx->db, WW_TRANSACTIONS, "idempotencyKey", r->more, r->n_more, false,
                 &r->ledger, err))
        return err->retryable ? 1 : 2;
    if (r->ledger.over) goto oom;
    /* the share of the round's keys that were already in the ledger */
    size_t found = 0;
    if (first_ledger) {
        found = before;
    } else {
        strset_t keys;
        if (set_init(&keys, r->n_keys)) {
            for (size_t i = 0; i < r->n_keys; i++) set_add(&keys, r->keys[i]);
            for (size_t i = 0; i < r->ledger.n; i++) {
                const char *k = doc_str(r->ledger.v[i], "idempotencyKey");
                found += k && set_has(&keys, k);
            }
            set_free(&keys);
        }
    }
    note_found(found, r->n_keys);
    return 0;
oom:
    set_free(&seen);
    set_free(&wnf);
    ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory reading a batch's facts");
    return 1;
db_error:
    set_free(&seen);
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
 * dropped from their wallets (a marker may go once the ledger holds its
 * entry under the marker's _id: Invariant B). The prune of a wallet is
 * {_id} -> {$pullAll: {pendingTransactions: [those markers, byte for byte
 * as written]}}: no version guard and no version bump, so it matches
 * whenever the wallet exists, whatever else moved it (a guarded prune that
 * missed would make the bulk it rides in look short, and cost its round a
 * re-plan). A writer that read the wallet before the prune may write its
 * own marker list over it, which at worst puts back markers whose entries
 * exist (pruned later). It costs no round trip of its own: the prunes are
 * OWED by the thread that decided the round and sent with its next bulk of
 * guarded updates (for the wallets that bulk does not update itself: an
 * update drops the completed markers anyway). A prune never sent (the
 * thread stops, an error, no later write) changes nothing that matters: the
 * wallet's next update drops the markers. */
typedef struct {
    const ww_wallet_ctx_t *ctx; /* whose prunes (ctx and database: an address can be reused) */
    const ww_db_t *db;
    bson_t *f, *u;
    char (*wallet)[25];
    const bson_t **fp, **up; /* views for the bulk */
    size_t n, cap;
} owed_t;

static pthread_key_t owed_key;
static pthread_once_t owed_once = PTHREAD_ONCE_INIT;

static void owed_clear(owed_t *o) {
    for (size_t i = 0; i < o->n; i++) {
        bson_destroy(&o->f[i]);
        bson_destroy(&o->u[i]);
    }
    o->n = 0;
}

static void owed_free(void *v) {
    owed_t *o = v;
    if (!o) return;
    owed_clear(o);
    free(o->f);
    free(o->u);
    free(o->wallet);
    free(o->fp);
    free(o->up);
    free(o);
}

static void owed_init(void) { (void)pthread_key_create(&owed_key, owed_free); }

/* This thread's owed prunes (created on first use), or NULL without memory. */
static owed_t *owed_get(void) {
    pthread_once(&owed_once, owed_init);
    owed_t *o = pthread_getspecific(owed_key);
    if (!o && (o = calloc(1, sizeof *o)) && pthread_setspecific(owed_key, o) != 0) {
        free(o);
        o = NULL;
    }
    return o;
}

static bool owed_mine(const owed_t *o, const batch_t *b) {
    return o->ctx == b->ctx && o->db == b->ctx->db;
}

static bool owed_reserve(owed_t *o, size_t n) {
    if (n <= o->cap) return true;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < n) cap *= 2;
    bson_t *f = realloc(o->f, cap * sizeof *f);
    if (f) o->f = f;
    bson_t *u = realloc(o->u, cap * sizeof *u);
    if (u) o->u = u;
    char(*w)[25] = realloc(o->wallet, cap * sizeof *w);
    if (w) o->wallet = w;
    const bson_t **fp = realloc(o->fp, cap * sizeof *fp);
    if (fp) o->fp = fp;
    const bson_t **up = realloc(o->up, cap * sizeof *up);
    if (up) o->up = up;
    if (!f || !u || !w || !fp || !up) return false;
    o->cap = cap;
    return true;
}

/* The bulk of a round: its guarded updates, then the prunes this thread owes
 * (for this ctx, of wallets the round does not update). *fp / *up are
 * reallocated to hold them; *n is the bulk's size. The owed prunes stay in
 * `o` until owed_clear after the bulk. False when memory runs out (the
 * prunes are then dropped, harmless). */
static bool with_owed(batch_t *b, const ww_wallet_plan_t *plan, owed_t *o, const bson_t ***fp,
                      const bson_t ***up, size_t *n) {
    *n = plan->n_updates;
    if (!o || o->n == 0) return true;
    if (!owed_mine(o, b) || plan->n_updates == 0) {
        if (!owed_mine(o, b)) owed_clear(o); /* another database: not ours to send */
        return true; /* nothing to piggyback on: stay owed */
    }
    const bson_t **f = realloc(*fp, (plan->n_updates + o->n + 1) * sizeof *f);
    if (f) *fp = f;
    const bson_t **u = realloc(*up, (plan->n_updates + o->n + 1) * sizeof *u);
    if (u) *up = u;
    if (!f || !u) {
        owed_clear(o);
        return false;
    }
    strset_t updated; /* the wallets this round updates itself */
    if (!set_init(&updated, plan->n_updates)) {
        owed_clear(o);
        return false;
    }
    for (size_t w = 0; w < plan->n_updates; w++) set_add(&updated, plan->updates[w].wallet_id);
    for (size_t i = 0; i < o->n; i++) {
        if (set_has(&updated, o->wallet[i])) continue;
        f[*n] = &o->f[i];
        u[*n] = &o->u[i];
        (*n)++;
    }
    set_free(&updated);
    return true;
}

/* Sends this thread's owed prunes now, in a bulk of their own (the
 * transactional mode, whose rounds have no plain bulk to carry them). */
static void flush_owed(batch_t *b) {
    owed_t *o = owed_get();
    if (!o || o->n == 0 || !owed_mine(o, b)) return;
    for (size_t i = 0; i < o->n; i++) {
        o->fp[i] = &o->f[i];
        o->up[i] = &o->u[i];
    }
    int64_t matched;
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_db_bulk_update_one(b->ctx->db, WW_WALLETS, o->fp, o->up, o->n, &matched, &err))
        ww_debug("wallet", "batch: pruning markers failed (the next update prunes them)",
                 WW_STR("error", err.message));
    owed_clear(o);
}

static void owe_prunes(batch_t *b, const ww_wallet_plan_t *plan, const int *slot,
                       const bool *dup) {
    owed_t *o = owed_get();
    if (!o) return;
    if (!owed_mine(o, b)) owed_clear(o);
    o->ctx = b->ctx;
    o->db = b->ctx->db;
    bson_oid_t *ids = calloc(plan->n_inserts + 1, sizeof *ids);
    size_t n_ids = 0;
    if (!ids || !owed_reserve(o, o->n + plan->n_updates)) goto out;
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
        /* {$pullAll: {pendingTransactions: [the completed markers, as written]}} */
        bson_t *upd = &o->u[o->n], pull, drop;
        bson_init(upd);
        BSON_APPEND_DOCUMENT_BEGIN(upd, "$pullAll", &pull);
        BSON_APPEND_ARRAY_BEGIN(&pull, MARKERS, &drop);
        uint32_t dropped = 0;
        char idx[16];
        const char *ikey;
        while (bson_iter_next(&m)) {
            bson_iter_t d;
            if (BSON_ITER_HOLDS_DOCUMENT(&m) && bson_iter_recurse(&m, &d) &&
                bson_iter_find(&d, "_id") && BSON_ITER_HOLDS_OID(&d) &&
                bsearch(bson_iter_oid(&d), ids, n_ids, sizeof *ids, cmp_oid)) {
                bson_uint32_to_string(dropped++, &ikey, idx, sizeof idx);
                bson_append_iter(&drop, ikey, -1, &m);
            }
        }
        bson_append_array_end(&pull, &drop);
        bson_append_document_end(upd, &pull);
        if (dropped == 0) {
            bson_destroy(upd);
            continue;
        }
        bson_oid_t wid;
        bson_oid_init_from_string(&wid, pu->wallet_id);
        bson_init(&o->f[o->n]);
        BSON_APPEND_OID(&o->f[o->n], "_id", &wid);
        memcpy(o->wallet[o->n], pu->wallet_id, sizeof o->wallet[0]);
        o->n++;
    }
out:
    free(ids);
}

/* DB_TRANSACTIONS=on: a round's guarded updates and ledger entries commit
 * together or not at all (one transaction per round, so one per batch in
 * the common one-round case). There is no crash window between them, and a
 * lost guard or a taken key aborts everything the round wrote: the round's
 * commands are all planned again from fresh reads, as after a short bulk.
 * NOT EXERCISED BY THE TEST SUITE: no server it runs against has
 * transactions (docs/testing.md). */
typedef struct {
    const bson_t *const *f, *const *u;
    size_t n_updates;
    const bson_t *const *docs;
    size_t n_docs;
    bool *dup;
    bool lost; /* a guard lost or an entry's key was taken: aborted, re-plan */
} txn_writes_t;

static bool txn_writes(ww_db_txn_t *txn, void *vctx, ww_error_t *err) {
    txn_writes_t *t = vctx;
    t->lost = false; /* the callback is run again on a transient error */
    memset(t->dup, 0, t->n_docs * sizeof *t->dup);
    int64_t matched = 0;
    if (!ww_db_txn_bulk_update_one(txn, WW_WALLETS, t->f, t->u, t->n_updates, &matched, err))
        return false;
    if (matched != (int64_t)t->n_updates) {
        t->lost = true;
        ww_error_set(err, WW_ERR_DB, 0, false, "%lld of %zu guarded updates matched",
                     (long long)matched, t->n_updates);
        return false;
    }
    if (!ww_db_txn_insert_many(txn, WW_TRANSACTIONS, t->docs, t->n_docs, t->dup, err))
        return false;
    for (size_t i = 0; i < t->n_docs; i++)
        if (t->dup[i]) {
            t->lost = true;
            ww_error_set(err, WW_ERR_DB, WW_DB_DUPLICATE_KEY, false,
                         "a ledger entry's idempotencyKey is taken");
            return false;
        }
    return true;
}

/* Steps 4-5 in one transaction. 0 ok (*all_matched says whether anything
 * was written; slot[] -1 for every entry when not), 1 retryable, 2 other. */
static int write_in_transaction(batch_t *b, const ww_wallet_plan_t *plan, const bson_t **f,
                                const bson_t **u, const bson_t **docs, int *slot,
                                bool *all_matched, ww_error_t *err) {
    bool *dupd = calloc(plan->n_inserts + 1, sizeof *dupd);
    if (!dupd) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory writing a batch");
        return 1;
    }
    for (size_t i = 0; i < plan->n_inserts; i++) {
        slot[i] = (int)i;
        docs[i] = &plan->inserts[i].doc;
    }
    txn_writes_t t = {f, u, plan->n_updates, docs, plan->n_inserts, dupd, false};
    bool ok = ww_db_with_transaction(b->ctx->db, txn_writes, &t, err);
    free(dupd);
    *all_matched = ok;
    if (ok) return 0;
    if (!t.lost) return err->retryable ? 1 : 2;
    ww_info("wallet", "batch: transaction aborted (another writer moved first); re-planning",
            WW_STR("why", err->message), WW_UINT("updates", plan->n_updates));
    for (size_t i = 0; i < plan->n_inserts; i++) slot[i] = -1;
    ww_error_clear(err);
    return 0;
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
    bool all_matched = false;
    if (ww_db_use_transactions(b->ctx->db)) {
        rc = write_in_transaction(b, plan, f, u, docs, slot, &all_matched, err);
        if (rc != 0) goto out;
        goto written;
    }
    int64_t matched = 0;
    owed_t *owed = owed_get();
    size_t n_bulk = plan->n_updates; /* + the prunes owed by the last round */
    if (!with_owed(b, plan, owed, &f, &u, &n_bulk)) n_bulk = plan->n_updates; /* dropped */
    bool bulk_ok = f && u &&
                   ww_db_bulk_update_one(b->ctx->db, WW_WALLETS, f, u, n_bulk, &matched, err);
    if (owed && owed_mine(owed, b) && plan->n_updates > 0)
        owed_clear(owed); /* sent, made moot by this round's updates, or lost: harmless */
    if (!bulk_ok) {
        if (err->domain == WW_ERR_NONE)
            ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory writing a batch");
        rc = err->retryable ? 1 : 2;
        goto out;
    }
    all_matched = matched == (int64_t)n_bulk;
    if (plan->n_updates) fault_point_after_update();
    if (!all_matched)
        ww_info("wallet", "batch: another writer moved first; re-planning from fresh reads",
                WW_INT("matched", matched), WW_UINT("updates", plan->n_updates),
                WW_UINT("prunes", n_bulk - plan->n_updates));
    if (plan->n_stuck)
        ww_warn("wallet", "batch: decisions the ledger overruled left on soft-deleted wallets "
                "for an operator", WW_UINT("wallets", plan->n_stuck), WW_STR("first", plan->stuck));
    for (size_t i = 0; all_matched && i < plan->n_updates; i++) {
        const ww_wallet_plan_update_t *up = &plan->updates[i];
        if (!up->n_undone) continue;
        if (up->undo_below_zero) /* the planner never builds on a lost credit: another writer did */
            ww_err("wallet", "a lost credit was undone after another writer had spent it: the "
                   "ledger's outcome stands (a reversal) and the balance is below zero",
                   WW_STR("owner", up->owner), WW_STR("wallet", up->wallet_id),
                   WW_INT("balance", up->balance_after), WW_UINT("undone", up->n_undone));
        else
            ww_warn("wallet", "markers whose key the ledger holds under another entry were "
                    "undone (decided twice; the ledger's outcome stands)",
                    WW_STR("owner", up->owner), WW_STR("wallet", up->wallet_id),
                    WW_UINT("undone", up->n_undone));
    }
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
written:
    if (all_matched) {
        owe_prunes(b, plan, slot, dup);
        if (ww_db_use_transactions(b->ctx->db)) flush_owed(b); /* no bulk to ride on */
    }
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

/* Parses the batch: invalid messages answered (DONE), the others open in
 * b->cmds. False when memory ran out (every item RETRY or answered). */
static bool parse_batch(batch_t *b, ww_batch_item_t *items, size_t n) {
    b->cmds = calloc(n ? n : 1, sizeof *b->cmds);
    if (!b->cmds) {
        for (size_t i = 0; i < n; i++) {
            items[i].status = WW_ITEM_RETRY;
            ww_error_set(&items[i].error, WW_ERR_SYSTEM, 0, true, "out of memory");
        }
        return false;
    }
    b->items = items;
    b->n = 0;
    for (size_t i = 0; i < n; i++) {
        ww_batch_item_t *it = &items[i];
        bcmd_t *c = &b->cmds[b->n];
        int parsed = ww_wallet_parse(b->ctx, it->msg, &c->cmd, &it->outs, &it->error);
        if (parsed == 0) {
            it->status = WW_ITEM_DONE;
        } else if (parsed > 0) {
            c->item = i;
            c->open = true;
            b->n++;
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
    group_kafka_keys(b);
    return true;
}

/* One round: reads, plan, writes, answers. 0 ok, 1 retryable error, 2
 * another error (the caller falls back), 3 (dry runs) nothing more can be
 * predicted. *answered counts the commands answered. */
typedef int (*round_fn)(batch_t *b, size_t *answered, ww_error_t *err);

static int real_round(batch_t *b, size_t *answered, ww_error_t *err) {
    round_t r;
    memset(&r, 0, sizeof r);
    ww_wallet_plan_t plan;
    memset(&plan, 0, sizeof plan);
    int rc = read_facts(b, &r, err);
    if (rc == 0) rc = plan_round(b, &r, &plan, err);
    if (rc == 0) rc = write_and_answer(b, &r, &plan, answered, err);
    ww_wallet_plan_destroy(&plan);
    round_clear(&r);
    return rc;
}

/* Rounds until everything is answered. A round answers at least the first
 * open command of each owner unless another writer keeps winning (or the
 * planner keeps deferring): after MAX_STALLED such rounds in a row, or
 * MAX_ROUNDS in all, the rest waits for the pipeline's backoff (RETRY), as
 * after a retryable error. Returns 0, or the round's 2 or 3 with the open
 * commands still open for the caller (err says why). */
static int rounds(batch_t *b, round_fn round_once, ww_error_t *err) {
    for (int stalled = 0, round = 0;; round++) {
        size_t open = 0;
        for (size_t i = 0; i < b->n; i++) open += b->cmds[i].open;
        if (open == 0) return 0;
        ww_error_clear(err);
        if (round == MAX_ROUNDS) {
            ww_error_set(err, WW_ERR_DB, 0, true, "%zu command(s) left after %d rounds "
                         "(one wallet's long chain): continuing after a short pause", open,
                         MAX_ROUNDS);
            retry_all(b, err);
            return 0;
        }
        if (stalled == MAX_STALLED) {
            ww_error_set(err, WW_ERR_DB, 0, true, "%zu command(s) still undecided after %d "
                         "rounds (contention on their wallets)", open, MAX_STALLED);
            retry_all(b, err);
            return 0;
        }
        size_t answered = 0;
        int rc = round_once(b, &answered, err);
        stalled = answered ? 0 : stalled + 1;
        if (rc == 1) {
            retry_all(b, err);
            return 0;
        }
        if (rc != 0) return rc;
    }
}

static void dry_handle_batch(ww_wallet_ctx_t *ctx, ww_batch_item_t *items, size_t n);

void ww_wallet_handle_batch(void *vctx, ww_batch_item_t *items, size_t n) {
    ww_wallet_ctx_t *ctx = vctx;
    if (ctx->dry_run) {
        dry_handle_batch(ctx, items, n);
        return;
    }
    batch_t b = {.ctx = ctx};
    if (!parse_batch(&b, items, n)) return;
    ww_error_t err;
    if (rounds(&b, real_round, &err) == 2) {
        ww_warn("wallet", "batch: deciding the batch's open commands one at a time",
                WW_STR("error", err.message));
        fall_back(&b);
    }
    free(b.cmds);
}

/* ---- dry runs: the same rounds, written to the run's overlay ----------------------
 * A dry run reads what a real round reads (the three reads above: the
 * database is never written, so it holds what it held when the run began),
 * lays over it what the run's earlier predictions "wrote" (ctx->dry: ledger
 * entries under "L:" + key, wallet documents under "W:" + _id), plans with
 * the same planner, and records the plan's writes in the overlay as the
 * database would have taken them: each guarded update checked against the
 * document it would find, an entry refused when its key is taken. The
 * answers follow the real round's rule, and what is left is planned again
 * next round, so later commands (of this batch or of later ones, on any
 * worker) are decided exactly as the real run decides them. Not done: the
 * markers' housekeeping prune (the next planned update drops markers whose
 * entries exist, and the planner ignores them meanwhile).
 * The overlay is locked from the merge to the last write of a round; the
 * database reads happen before, outside the lock. A full overlay (its cap,
 * WW_OVERLAY_MAX_BYTES) stops the predictions: every command not yet
 * answered, in this batch and in every later one, is answered
 * `not_predicted` with the reason (apply prints it as a rejected line). */

#define DRY_LEDGER "L:"
#define DRY_WALLET "W:"

static const bson_t *dry_get(ww_overlay_t *ov, const char *prefix, const char *name,
                             bson_t *view) {
    char key[8 + WW_COMMAND_KEY_MAX + 1];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    size_t len = 0;
    const uint8_t *data = ww_overlay_get(ov, key, &len);
    return data && bson_init_static(view, data, len) ? view : NULL;
}

static bool doc_id_hex(const bson_t *doc, char out[25]) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it)) return false;
    bson_oid_to_string(bson_iter_oid(&it), out);
    return true;
}

typedef struct {
    ww_overlay_t *ov;
    round_t *r;
    bool ok;
} dry_marks_t;

/* A marker's entry predicted by the run, added to the ledger facts. */
static bool dry_add_marked(const char *k, void *vctx) {
    dry_marks_t *d = vctx;
    bson_t view;
    if (dry_get(d->ov, DRY_LEDGER, k, &view) && (!collect(&view, &d->r->ledger) ||
                                                   d->r->ledger.over))
        d->ok = false;
    return d->ok;
}

/* The overlay over a round's facts (lock held): the wallets it holds
 * replace the stored ones, its entries join the ledger read for the
 * commands' keys and every marker's key. False when memory runs out. */
static bool dry_merge(ww_overlay_t *ov, round_t *r) {
    bson_t view;
    for (size_t w = 0; w < r->wallets.n; w++) {
        char id[25];
        if (!doc_id_hex(r->wallets.v[w], id) || !dry_get(ov, DRY_WALLET, id, &view)) continue;
        bson_t *copy = bson_copy(&view);
        if (!copy) return false;
        bson_destroy(r->wallets.v[w]);
        r->wallets.v[w] = copy;
    }
    for (size_t i = 0; i < r->n_keys; i++)
        if (dry_get(ov, DRY_LEDGER, r->keys[i], &view) && (!collect(&view, &r->ledger) ||
                                                         r->ledger.over))
            return false;
    dry_marks_t dm = {ov, r, true};
    each_marker_key(&r->wallets, dry_add_marked, &dm);
    return dm.ok;
}

/* Whether doc matches a guard of the planner's: every field equal, a null
 * matching a missing field (what the server would do with these filters). */
static bool dry_guard_matches(const bson_t *filter, const bson_t *doc) {
    bson_iter_t f, d;
    if (!bson_iter_init(&f, filter)) return false;
    while (bson_iter_next(&f)) {
        bool has = bson_iter_init_find(&d, doc, bson_iter_key(&f));
        if (BSON_ITER_HOLDS_NULL(&f)) {
            if (has && !BSON_ITER_HOLDS_NULL(&d)) return false;
        } else if (!has) {
            return false;
        } else if (BSON_ITER_HOLDS_OID(&f)) {
            if (!BSON_ITER_HOLDS_OID(&d) || !bson_oid_equal(bson_iter_oid(&f), bson_iter_oid(&d)))
                return false;
        } else if (BSON_ITER_HOLDS_NUMBER(&f)) {
            if (!BSON_ITER_HOLDS_NUMBER(&d)) return false;
            if (BSON_ITER_HOLDS_DOUBLE(&d)) {
                if (bson_iter_double(&d) != (double)bson_iter_as_int64(&f)) return false;
            } else if (bson_iter_as_int64(&d) != bson_iter_as_int64(&f)) {
                return false;
            }
        } else if (BSON_ITER_HOLDS_DATE_TIME(&f)) { /* deletedAt of a soft-deleted wallet */
            if (!BSON_ITER_HOLDS_DATE_TIME(&d) ||
                bson_iter_date_time(&d) != bson_iter_date_time(&f))
                return false;
        } else {
            return false; /* not a guard the planner builds */
        }
    }
    return true;
}

/* doc with update's $set applied (the only operator the planner uses),
 * appended to out (empty). */
static bool dry_apply_set(const bson_t *doc, const bson_t *update, bson_t *out) {
    bson_iter_t u, it, s;
    uint32_t len;
    const uint8_t *data;
    bson_t set;
    if (!bson_iter_init_find(&u, update, "$set") || !BSON_ITER_HOLDS_DOCUMENT(&u)) return false;
    bson_iter_document(&u, &len, &data);
    if (!bson_init_static(&set, data, len) || !bson_iter_init(&it, doc)) return false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (bson_iter_init_find(&s, &set, k))
            bson_append_iter(out, k, -1, &s);
        else
            bson_append_iter(out, k, -1, &it);
    }
    if (!bson_iter_init(&it, &set)) return false;
    while (bson_iter_next(&it))
        if (!bson_iter_init_find(&s, doc, bson_iter_key(&it)))
            bson_append_iter(out, bson_iter_key(&it), -1, &it);
    return true;
}

/* What a dry run answers for a decided command: its predicted outcome (a
 * `failed` one as the pipeline's processing_failed dead letter). */
static void dry_answer(batch_t *b, bcmd_t *c, const ww_wallet_plan_result_t *pr) {
    ww_batch_item_t *it = &b->items[c->item];
    if (pr->dead_letter) {
        it->status = WW_ITEM_FAILED;
        ww_error_set(&it->error, WW_ERR_DB, 0, false, "%s", pr->result.error_message);
    } else {
        it->status = WW_ITEM_DONE;
        it->outs.outcome = ww_outcome_name(pr->result.outcome);
    }
    c->open = false;
}

/* Every open command: not predicted, why (reported as a rejected line). */
static void dry_not_predicted(batch_t *b, const char *why) {
    for (size_t i = 0; i < b->n; i++) {
        bcmd_t *c = &b->cmds[i];
        if (!c->open) continue;
        ww_batch_item_t *it = &b->items[c->item];
        c->open = false;
        ww_outputs_clear(&it->outs);
        if (!ww_outputs_dead_letter(&it->outs, b->ctx->dlq_topic, it->msg, "not_predicted", why)) {
            it->status = WW_ITEM_RETRY;
            ww_error_set(&it->error, WW_ERR_SYSTEM, 0, true, "out of memory");
            continue;
        }
        it->outs.outcome = "not_predicted";
        it->status = WW_ITEM_DONE;
    }
}

/* The plan's writes into the overlay, as the database would take them, and
 * the answers that are final (lock held). 0 ok, 1 out of memory, 3 full. */
static int dry_write_and_answer(batch_t *b, round_t *r, const ww_wallet_plan_t *plan,
                                size_t *answered) {
    ww_overlay_t *ov = b->ctx->dry;
    int rc = 1;
    bson_t **after = calloc(plan->n_updates + 1, sizeof *after);
    bool *stored = calloc(plan->n_inserts + 1, sizeof *stored);
    char key[8 + WW_COMMAND_KEY_MAX + 1];
    if (!after || !stored) goto out;
    bool all_matched = true;
    size_t need = 0;
    for (size_t i = 0; i < plan->n_updates; i++) {
        const ww_wallet_plan_update_t *u = &plan->updates[i];
        const bson_t *cur = NULL;
        char id[25];
        for (size_t w = 0; w < r->wallets.n && !cur; w++)
            if (doc_id_hex(r->wallets.v[w], id) && strcmp(id, u->wallet_id) == 0)
                cur = r->wallets.v[w];
        if (!cur || !dry_guard_matches(&u->filter, cur)) {
            all_matched = false;
            continue;
        }
        after[i] = bson_new();
        if (!after[i] || !dry_apply_set(cur, &u->update, after[i])) goto out;
        snprintf(key, sizeof key, DRY_WALLET "%s", u->wallet_id);
        need += ww_overlay_cost(key, after[i]->len);
    }
    for (size_t i = 0; i < plan->n_inserts; i++) {
        const ww_wallet_plan_insert_t *in = &plan->inserts[i];
        snprintf(key, sizeof key, DRY_LEDGER "%s", in->key);
        stored[i] = (in->update < 0 || all_matched) && !ww_overlay_get(ov, key, NULL);
        if (stored[i]) need += ww_overlay_cost(key, in->doc.len);
    }
    rc = 3;
    if (!ww_overlay_reserve(ov, need)) goto out;
    for (size_t i = 0; i < plan->n_updates; i++) {
        if (!after[i]) continue;
        snprintf(key, sizeof key, DRY_WALLET "%s", plan->updates[i].wallet_id);
        if (!ww_overlay_put(ov, key, bson_get_data(after[i]), after[i]->len)) goto out;
    }
    for (size_t i = 0; i < plan->n_inserts; i++) {
        if (!stored[i]) continue;
        snprintf(key, sizeof key, DRY_LEDGER "%s", plan->inserts[i].key);
        if (!ww_overlay_put(ov, key, bson_get_data(&plan->inserts[i].doc),
                            plan->inserts[i].doc.len))
            goto out;
    }
    for (size_t j = 0; j < r->n_in; j++) {
        const ww_wallet_plan_result_t *pr = &plan->results[j];
        bcmd_t *c = &b->cmds[r->in_cmd[j]];
        if (pr->status != WW_WALLET_PLAN_DECIDED || !c->open) continue;
        if (pr->update >= 0 && !all_matched) continue;
        if (pr->entry >= 0 && !stored[pr->entry]) continue;
        dry_answer(b, c, pr);
        (*answered)++;
    }
    rc = 0;
out:
    for (size_t i = 0; after && i < plan->n_updates; i++) bson_destroy(after[i]);
    free(after);
    free(stored);
    return rc;
}

/* One dry round. 0 ok, 1 retryable error, 2 cannot be predicted (err), 3
 * the overlay is full. */
static int dry_round(batch_t *b, size_t *answered, ww_error_t *err) {
    ww_overlay_t *ov = b->ctx->dry;
    round_t r;
    memset(&r, 0, sizeof r);
    ww_wallet_plan_t plan;
    memset(&plan, 0, sizeof plan);
    /* a full overlay predicts nothing more: no need to read (or to wait
     * for an unreachable database) first */
    ww_overlay_lock(ov);
    bool full = ww_overlay_full(ov);
    ww_overlay_unlock(ov);
    if (full) return 3;
    int rc = read_facts(b, &r, err);
    if (rc != 0) goto out;
    ww_overlay_lock(ov);
    if (ww_overlay_full(ov)) {
        rc = 3;
    } else if (!dry_merge(ov, &r)) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory reading a batch's facts");
        rc = 1;
    } else {
        rc = plan_round(b, &r, &plan, err);
    }
    if (rc == 0) {
        rc = dry_write_and_answer(b, &r, &plan, answered);
        if (rc == 1) ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory predicting a batch");
    }
    ww_overlay_unlock(ov);
out:
    ww_wallet_plan_destroy(&plan);
    round_clear(&r);
    return rc;
}

static void dry_handle_batch(ww_wallet_ctx_t *ctx, ww_batch_item_t *items, size_t n) {
    batch_t b = {.ctx = ctx};
    if (!parse_batch(&b, items, n)) return;
    char why[WW_ERROR_MSG_MAX + 64];
    if (!ctx->dry) {
        dry_not_predicted(&b, "dry run without its prediction state (internal error)");
        free(b.cmds);
        return;
    }
    ww_error_t err;
    int rc = rounds(&b, dry_round, &err);
    if (rc == 2) {
        snprintf(why, sizeof why, "the dry run cannot predict this command: %s", err.message);
        dry_not_predicted(&b, why);
    } else if (rc == 3) {
        snprintf(why, sizeof why, "the dry run's memory for predicted writes is full (%zu "
                 "bytes): this and every later command are not predicted; dry-run a "
                 "shorter range or file", ww_overlay_max_bytes(ctx->dry));
        static atomic_flag said = ATOMIC_FLAG_INIT; /* once per process (one run) */
        if (!atomic_flag_test_and_set(&said))
            ww_err("wallet", "dry run: prediction memory full; not predicting further "
                   "commands", WW_UINT("max_bytes", ww_overlay_max_bytes(ctx->dry)));
        dry_not_predicted(&b, why);
    }
    free(b.cmds);
}
