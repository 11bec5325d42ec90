/* wallet.h: wallet commands (debit, credit) applied exactly once in effect.
 *
 * The protocol and the argument for why every crash point is safe are in
 * docs/wallet-protocol.md; wallet.c carries the short version next to the
 * code. In brief, per command with key K for owner O:
 *   1. K in the ledger (transactions, unique idempotencyKey)? Then it was
 *      decided before: duplicate (same fingerprint) or conflict.
 *   2. Snapshot O's wallet(s): balance, version, decision markers.
 *   3. Read the ledger again for K and for every marker (after the snapshot:
 *      this order is what makes a zombie harmless).
 *   4. A marker for K means K was decided but its ledger entry may be
 *      missing: write it from the marker. Otherwise decide (applied or
 *      insufficient_funds) and record the decision in the wallet with one
 *      conditional single-document update guarded by the snapshot's version
 *      and balance: {$set balance, version+1, markers (pruned) + marker K}.
 *      No match = someone moved first: start again.
 *   5. Insert the ledger entry built from the marker (its _id was chosen in
 *      the marker, so every writer writes the same entry). */
#ifndef WW_WALLET_H
#define WW_WALLET_H

#include <bson/bson.h>
#include <stdbool.h>

#include "bus.h"
#include "command.h"
#include "db.h"
#include "error.h"
#include "overlay.h"
#include "pipeline.h"

#define WW_WALLETS "wallets"
#define WW_TRANSACTIONS "transactions"

typedef enum {
    WW_OUTCOME_APPLIED = 1,
    WW_OUTCOME_DUPLICATE,
    WW_OUTCOME_CONFLICT,
    WW_OUTCOME_INSUFFICIENT_FUNDS,
    WW_OUTCOME_WALLET_NOT_FOUND,
    WW_OUTCOME_INVALID,
    WW_OUTCOME_FAILED /* not processable against the stored data; dead-lettered, not recorded */
} ww_outcome_t;

const char *ww_outcome_name(ww_outcome_t outcome);

/* What happened to one command: enough to write its result event. */
typedef struct {
    ww_outcome_t outcome;
    ww_outcome_t original;  /* for duplicate/conflict: the key's first outcome */
    bool has_wallet;
    char wallet_id[25];
    bool has_transaction;
    char transaction_id[25];
    bool has_balance;
    int64_t amount_paise;
    int64_t balance_after_paise;
    char error_code[48];    /* empty when applied/duplicate */
    char error_message[WW_ERROR_MSG_MAX];
} ww_wallet_result_t;

typedef struct {
    ww_db_t *db;
    const char *results_topic;
    const char *dlq_topic;
    int32_t max_message_bytes;
    bool dry_run; /* predict outcomes read-only; no writes, no outputs */
    /* dry run: what the run's predictions "wrote" so far (overlay.h), read
     * over the database by every later prediction of the run; borrowed, one
     * per run, shared by its workers. NULL in a dry run: nothing is
     * predicted (every command is answered not_predicted). */
    ww_overlay_t *dry;
} ww_wallet_ctx_t;

/* Applies one parsed command. Returns false with a retryable error when the
 * database is unavailable (nothing is lost: running it again is safe), or a
 * permanent error when the wallet's stored data cannot be used. */
bool ww_wallet_apply(ww_db_t *db, const ww_command_t *cmd, const char *topic, int32_t partition,
                     int64_t offset, ww_wallet_result_t *result, ww_error_t *error);

/* The pipeline handler for the wallet commands topic (ctx: ww_wallet_ctx_t),
 * one message at a time (DB_TRANSACTIONS=on, the batch shell's fallback; a
 * dry run goes through the batch handler with a batch of one). */
bool ww_wallet_handle(void *ctx, const ww_msg_t *msg, ww_outputs_t *outs, ww_error_t *error);

/* The batch handler (wallet_batch.c): a whole batch decided by the planner
 * (wallet_plan.h) in a few round trips per round. A dry run (ctx->dry_run)
 * plans the same rounds from the same reads with ctx->dry laid over them,
 * and records the plans' writes there instead of in the database: each
 * item's outs.outcome is the predicted outcome; the only outputs are the
 * dead letters the real run would write (invalid, not_predicted), for
 * apply to report; nothing is published. */
void ww_wallet_handle_batch(void *ctx, ww_batch_item_t *items, size_t n);

/* Test hook (tests/integration only; NULL in production): the batch shell
 * calls fn right before each round's insertMany, after its guarded bulk
 * update, with the ledger entries it is about to insert (borrowed). A test
 * uses it to see what a round writes, or to play a concurrent writer in
 * that window (the in-process twin of WW_FAULT_KILL_AFTER_BULK_UPDATE).
 * Not thread-safe: set it while no batch runs. */
typedef void (*ww_wallet_batch_hook_fn)(void *ctx, const bson_t *const *entries, size_t n);
void ww_wallet_batch_set_test_hook(ww_wallet_batch_hook_fn fn, void *ctx);

/* The wallet documents a snapshot reads, besides the owner condition: the
 * live one ({deletedAt: null}) and every one holding markers. */
void ww_wallet_append_snapshot_filter(bson_t *filter);

/* The pieces both handlers share. ww_wallet_parse: 1 = parsed into *cmd;
 * 0 = invalid, answered in outs (dead letter + result event); -1 = a
 * retryable error (out of memory). ww_wallet_answer adds the result event
 * (and, for `failed`, the dead letter) of a decided command. */
int ww_wallet_parse(ww_wallet_ctx_t *ctx, const ww_msg_t *msg, ww_command_t *cmd,
                    ww_outputs_t *outs, ww_error_t *error);
bool ww_wallet_answer(ww_wallet_ctx_t *ctx, const ww_msg_t *msg, const ww_command_t *cmd,
                      const ww_wallet_result_t *r, ww_outputs_t *outs, ww_error_t *error);

#endif
