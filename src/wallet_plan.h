/* wallet_plan.h: the pure wallet planner. A whole batch of wallet commands
 * decided at once, from facts read by a shell, with no I/O, no clock and no
 * pool inside (docs/wallet-protocol.md, "Batches").
 *
 * It decides exactly what the per-message protocol of wallet.c decides
 * (applied, duplicate, conflict, insufficient_funds, wallet_not_found,
 * invalid for a credit past 2^53-1, failed for unusable stored data), with
 * the same ledger entries, markers and guards, but for many commands and
 * many wallets in one go:
 *
 *   facts in   the batch's parsed commands (offset order per key), the
 *              ledger entries found for the batch's keys and for every
 *              marker key of the snapshot (read AFTER the wallets:
 *              Invariant B), the wallet documents of the owners read (the
 *              live ones and those holding markers), the list of owners
 *              read, now;
 *   plan out   ledger entries to insert (one unordered insertMany), at most
 *              one guarded update per wallet carrying all of the batch's
 *              markers for it (one unordered bulk), and one result per
 *              command: decided (result event; dead letter for `failed`),
 *              deferred (plan again next round) or retry (back off).
 *
 * THE SHELL'S CONTRACT (what the batched I/O must do with a plan)
 *   1. Send every update (unordered bulk). Find the updates whose guard lost
 *      (a short nMatched: re-read those wallets).
 *   2. Insert every entry whose `update` is -1 or matched (unordered
 *      insertMany). A duplicate-key error on an entry: read the stored entry
 *      back; the same _id means "already recorded"; another _id means the
 *      entry lost (the wallet_not_found race of the protocol's step 6).
 *   3. A decided result is final, and may be produced, when its `update`
 *      (if any) matched and its `entry` (if any) is stored with its own _id.
 *      Every other command (deferred, retry, lost guard, lost entry) is
 *      planned again from fresh facts, in its original order, after the
 *      writes of this round. Re-planning only those is enough: a result
 *      names the one update and the one entry it depends on.
 *
 * DESIGN
 * - The same decision as one command at a time, in order. Every command of
 *   a key and of an owner is decided after the earlier ones of that key and
 *   owner, against the state they left (balance, markers, decided keys). A
 *   command not decided this round blocks the later commands of its key and
 *   of its owner, so what is decided is always a prefix per key and per
 *   owner, and the next round continues from where this one stopped.
 * - Decisions stack only on money that cannot be undone under them.
 *   Today's protocol writes every orphaned marker's ledger entry before it
 *   decides on top of it, so a decision is never made on an effect that a
 *   lost ledger race (step 6) would undo. In a batch, the earlier decisions
 *   of the batch (and orphans) are not in the ledger yet. The planner
 *   therefore decides a command only when its outcome is the same whether
 *   or not those pending effects stand (the balance anywhere between
 *   "every pending credit undone" and "every pending debit undone");
 *   otherwise it defers it to the next round, by which time they are in the
 *   ledger. A debit made affordable by a credit of the same batch is thus
 *   applied one round later, never against money that might vanish, and no
 *   undo of the worker's own decisions can take a balance below zero. Only
 *   another writer of the wallet (the Node backend knows nothing of markers)
 *   can spend a credit that then loses the ledger race; its undo on the live
 *   wallet then takes the balance below zero by what was spent: the ledger's outcome stands, as
 *   a reversal would, and the shell logs it as an error for an operator.
 * - Orphaned markers (decided, ledger entry missing: a crash between the
 *   update and the insert) are completed by inserting their entry in the
 *   same insertMany, and kept in the wallet's marker array until a later
 *   round sees the entry and prunes them (a marker is pruned only once the
 *   ledger holds its entry: Invariant B). Lost markers (their key is in the
 *   ledger under another _id) are undone inside the wallet's guarded update;
 *   on a wallet soft-deleted since, by an update of that document alone
 *   (guarded by its deletedAt), or left for an operator (n_stuck).
 * - MAX_MARKERS stays meaningful: at most WW_WALLET_PLAN_PER_WALLET new
 *   decisions per wallet per round, and never more than
 *   WW_WALLET_PLAN_MAX_MARKERS markers on a wallet after the update.
 * - Where a single command would not see something a batch sees (an
 *   orphaned marker of another owner carrying the same key), the planner
 *   answers from the earlier decision (conflict) instead of deciding the key
 *   twice and undoing one of them. */
#ifndef WW_WALLET_PLAN_H
#define WW_WALLET_PLAN_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "error.h"
#include "wallet.h"

#define WW_WALLET_PLAN_MAX_MARKERS 64 /* markers on one wallet document (wallet.c's MAX_MARKERS) */
#define WW_WALLET_PLAN_PER_WALLET 32  /* new decisions per wallet per round, below MAX_MARKERS */
#define WW_WALLET_PLAN_MAX_WALLETS 8  /* live or marker-holding documents per owner; more: retry */
#define WW_WALLET_PLAN_OWNER_MARKERS 128 /* markers per owner beyond which it is retried */

/* One command of the batch. Borrowed: cmd and topic outlive the plan call. */
typedef struct {
    const ww_command_t *cmd;
    const char *topic;
    int32_t partition;
    int64_t offset;
} ww_wallet_plan_input_t;

/* Gives a fresh ObjectId for a new ledger entry (NULL: bson_oid_init). */
typedef void (*ww_wallet_plan_id_fn)(void *ctx, bson_oid_t *out);

/* Everything the planner knows. All borrowed; none is modified. */
typedef struct {
    const ww_wallet_plan_input_t *cmds; /* the batch, in offset order per key */
    size_t n_cmds;
    /* Ledger entries for the batch's keys and the wallets' marker keys, read
     * after the wallets. Entries read earlier may be added (an entry never
     * changes); extra entries are ignored. */
    const bson_t *const *ledger;
    size_t n_ledger;
    /* The wallet documents of the owners below: at least every live one and
     * every one holding markers (wallet.c's snapshot); soft-deleted ones
     * without markers may be included and are ignored. */
    const bson_t *const *wallets;
    size_t n_wallets;
    /* Owners (24 lowercase hex) whose wallets were read. A command that needs
     * its owner's wallets when they were not read is deferred. */
    const char *const *owners;
    size_t n_owners;
    int64_t now_ms; /* createdAt / updatedAt of everything written */
    ww_wallet_plan_id_fn new_id;
    void *id_ctx;
} ww_wallet_plan_facts_t;

typedef enum {
    WW_WALLET_PLAN_DECIDED = 1, /* result below; final once its writes are done */
    WW_WALLET_PLAN_DEFERRED,    /* not planned this round: plan again next round */
    WW_WALLET_PLAN_RETRY        /* cannot be decided now (today: a retryable error): back off */
} ww_wallet_plan_status_t;

typedef struct {
    ww_wallet_plan_status_t status;
    ww_wallet_result_t result; /* DECIDED: what the result event says */
    bool dead_letter;          /* DECIDED `failed`: dead-letter as processing_failed with
                                  result.error_message; nothing is recorded for the key */
    int update;                /* index in plan.updates this result needs (-1: none) */
    int entry;                 /* index in plan.inserts this result reports or repeats (-1) */
    char reason[WW_ERROR_MSG_MAX]; /* DEFERRED / RETRY: why */
} ww_wallet_plan_result_t;

/* One guarded update: {_id, version (null when the snapshot had none),
 * availablePaise, deletedAt: null} -> {$set availablePaise, version+1,
 * pendingTransactions, updatedAt}. An undo on a soft-deleted wallet (lost
 * markers only, n_decisions 0) is guarded by its exact deletedAt instead. */
typedef struct {
    char owner[WW_COMMAND_OWNER_LEN + 1];
    char wallet_id[25];
    bson_t filter;
    bson_t update;
    int64_t version_after;
    int64_t balance_before;
    int64_t balance_after;
    size_t n_decisions; /* markers added by this round */
    size_t n_undone;    /* lost markers undone (log a warning per undo) */
    bool undo_below_zero; /* undoing a lost credit took the balance below zero:
                             another writer had spent it (log an error) */
    size_t n_markers;   /* markers on the wallet after the update */
} ww_wallet_plan_update_t;

/* One ledger entry to insert (the same document as its marker, if any). */
typedef struct {
    bson_t doc;
    char key[WW_COMMAND_KEY_MAX + 1];
    int update;     /* insert only if plan.updates[update] matched; -1: insert anyway */
    bool orphan;    /* completes a marker of an earlier round (a crash window) */
} ww_wallet_plan_insert_t;

typedef struct {
    ww_wallet_plan_result_t *results; /* n_results == facts.n_cmds, in input order */
    size_t n_results;
    ww_wallet_plan_update_t *updates;
    size_t n_updates;
    ww_wallet_plan_insert_t *inserts;
    size_t n_inserts;
    size_t n_decided, n_deferred, n_retry;
    /* Lost markers on a soft-deleted wallet that cannot be undone (its balance
     * is unusable, or giving the amount back would take it below zero): left
     * as they are, for an operator (the shell logs `stuck`); they block
     * nothing, the live wallet does not depend on them. */
    size_t n_stuck;
    char stuck[WW_ERROR_MSG_MAX];
} ww_wallet_plan_t;

/* Plans a batch. *plan is always initialised (release it with
 * ww_wallet_plan_destroy, also after a failure). Returns false only when
 * memory runs out (WW_ERR_SYSTEM, retryable) or the facts are malformed
 * (WW_ERR_INTERNAL: a command without cmd, an owner that is not 24 hex).
 * Stored data that cannot be used (a balance of 10.5) is not an error of
 * the plan: the commands that need it are decided `failed`. */
bool ww_wallet_plan(const ww_wallet_plan_facts_t *facts, ww_wallet_plan_t *plan,
                    ww_error_t *error);

/* Frees what a plan holds (not the struct itself). NULL-safe, idempotent. */
void ww_wallet_plan_destroy(ww_wallet_plan_t *plan);

/* "decided", "deferred", "retry". */
const char *ww_wallet_plan_status_name(ww_wallet_plan_status_t status);

#endif
