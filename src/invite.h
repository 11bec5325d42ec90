/* invite.h: invite life-cycle events (created, used, revoked, expired) applied
 * to the `invites` collection, once in effect, plus the expiry sweeper.
 *
 * The contract, the state diagram and the idempotency argument are in
 * docs/invites.md; invite.c carries the short version next to the code.
 * Layers, so each can be tested on its own:
 *   - ww_invite_parse():   bytes -> ww_invite_event_t (no I/O);
 *   - ww_invite_decide():  (stored state, event) -> outcome (pure);
 *   - ww_invite_apply():   read the invite, decide, one guarded write;
 *   - ww_invite_handle():  the pipeline handler (result event, dead letter);
 *   - ww_invite_sweeper_*: a thread that marks overdue active invites expired. */
#ifndef WW_INVITE_H
#define WW_INVITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "command.h"
#include "db.h"
#include "error.h"
#include "json.h"
#include "overlay.h"
#include "pipeline.h"

#define WW_INVITES "invites"

#define WW_INVITE_EVENT_ID_MAX 128 /* eventId: 1..128 of [A-Za-z0-9._:-] */
#define WW_INVITE_CODE_MAX 64      /* code, parentCode: 1..64 of [A-Za-z0-9._-] */
#define WW_INVITE_ROLE_MAX 32      /* role: 1..32 of [A-Za-z0-9_-] */
#define WW_INVITE_USER_ID_LEN 24   /* ObjectId hex (stored lowercase) */
#define WW_INVITE_FINGERPRINT_LEN 65
#define WW_INVITE_EVENTS_MAX 8     /* recorded event ids read per invite (2 in practice) */
#define WW_INVITE_TTL_SECONDS 2592000 /* 30 days after expiresAt, expired invites go */

/* Parse failures use the stable reasons of command.h (ww_command_reason_t,
 * ww_command_reason_name): too_large, invalid_json, ..., missing_field,
 * unknown_field, wrong_type, invalid_value. */

typedef enum {
    WW_INVITE_CREATED = 1, /* "invite.created" */
    WW_INVITE_USED,        /* "invite.used" */
    WW_INVITE_REVOKED,     /* "invite.revoked" */
    WW_INVITE_EXPIRED      /* "invite.expired" */
} ww_invite_event_type_t;

typedef enum {
    WW_INVITE_NONE = 0, /* no such invite */
    WW_INVITE_ACTIVE,
    WW_INVITE_STATUS_USED,
    WW_INVITE_STATUS_REVOKED,
    WW_INVITE_STATUS_EXPIRED
} ww_invite_status_t;

/* One validated event (schemas/invite-event.schema.json). Fields that do not
 * belong to the event's type are zero. */
typedef struct {
    ww_invite_event_type_t type;
    char event_id[WW_INVITE_EVENT_ID_MAX + 1];
    char code[WW_INVITE_CODE_MAX + 1];
    /* invite.created */
    char parent_code[WW_INVITE_CODE_MAX + 1];
    char role[WW_INVITE_ROLE_MAX + 1];
    int64_t expires_at_ms;
    bool has_created_at;
    int64_t created_at_ms;
    bool has_created_by;
    char created_by_user_id[WW_INVITE_USER_ID_LEN + 1];
    /* invite.used */
    char used_by_user_id[WW_INVITE_USER_ID_LEN + 1];
    /* invite.used / revoked / expired */
    int64_t occurred_at_ms;
    /* SHA-256 (hex) of the event's canonical payload without its timestamps
     * createdAt/occurredAt (a producer's retry may re-stamp them); see
     * docs/invites.md. Two events with one eventId and different
     * fingerprints are a conflict. */
    char fingerprint[WW_INVITE_FINGERPRINT_LEN];
} ww_invite_event_t;

/* Parses and validates buf[0..len). limits may be NULL (64 KiB, depth 8).
 * *out is always initialised (zeroed on failure). On failure error has
 * domain WW_ERR_INPUT, a ww_command_reason_t code, retryable false and a
 * message naming the field; only out-of-memory gives WW_ERR_SYSTEM. */
bool ww_invite_parse(const char *buf, size_t len, const ww_json_limits_t *limits,
                     ww_invite_event_t *out, ww_error_t *error);

const char *ww_invite_event_type_name(ww_invite_event_type_t type);
/* "active", "used", "revoked", "expired"; NULL for WW_INVITE_NONE. */
const char *ww_invite_status_name(ww_invite_status_t status);
bool ww_invite_status_from_name(const char *name, ww_invite_status_t *out);

/* ---- the state machine (pure) ------------------------------------------------ */

typedef struct {
    char event_id[WW_INVITE_EVENT_ID_MAX + 1];
    char fingerprint[WW_INVITE_FINGERPRINT_LEN];
} ww_invite_seen_t;

/* What is stored for one invite, as far as decisions need it. */
typedef struct {
    ww_invite_status_t status; /* WW_INVITE_NONE: not found */
    char parent_code[WW_INVITE_CODE_MAX + 1];
    char role[WW_INVITE_ROLE_MAX + 1];
    bool has_expires_at;
    int64_t expires_at_ms;
    bool has_created_by;
    char created_by_user_id[WW_INVITE_USER_ID_LEN + 1];
    bool has_used_by;
    char used_by_user_id[WW_INVITE_USER_ID_LEN + 1];
    size_t n_seen; /* event ids applied to this invite (processedEvents) */
    ww_invite_seen_t seen[WW_INVITE_EVENTS_MAX];
} ww_invite_state_t;

typedef enum {
    WW_INVITE_APPLIED = 1, /* state changes: from -> to */
    WW_INVITE_DUPLICATE,   /* already done: nothing changes */
    WW_INVITE_REJECTED,    /* contradicts the stored state: nothing changes */
    WW_INVITE_INVALID,     /* the message did not parse (handler only) */
    WW_INVITE_NOT_FOUND    /* no invite with this code: dead-lettered */
} ww_invite_outcome_t;

/* "applied", "duplicate", "rejected", "invalid"; NOT_FOUND is reported as
 * "rejected" (with error code invite_not_found). */
const char *ww_invite_outcome_name(ww_invite_outcome_t outcome);

typedef struct {
    ww_invite_outcome_t outcome;
    ww_invite_status_t from; /* APPLIED: the status the write must find (NONE = insert) */
    ww_invite_status_t to;   /* the invite's status after (NONE when there is no invite) */
    char error_code[48];     /* empty unless REJECTED / NOT_FOUND */
    char error_message[WW_ERROR_MSG_MAX];
} ww_invite_decision_t;

/* Decides what `ev` does to an invite in state `cur`. No I/O, no clock:
 * "used after expiresAt" compares the event's occurredAt with expiresAt, so
 * a replay decides the same way. Rules (docs/invites.md):
 *   - no invite: created -> applied (active); anything else -> not_found;
 *   - eventId already applied: same fingerprint -> duplicate, else
 *     rejected conflict;
 *   - created on an existing invite: same parentCode/role/expiresAt/
 *     createdByUserId -> duplicate, else rejected conflict;
 *   - active: used (occurredAt < expiresAt) / revoked / expired -> applied;
 *     used at or after expiresAt -> rejected invite_expired;
 *   - final states: the same effect again (used by the same user, revoked
 *     again, expired again) -> duplicate; anything else -> rejected with
 *     invite_used / invite_revoked / invite_expired. */
void ww_invite_decide(const ww_invite_state_t *cur, const ww_invite_event_t *ev,
                      ww_invite_decision_t *d);

/* ---- database ------------------------------------------------------------------ */

typedef struct {
    ww_invite_decision_t decision;
    bool has_invite_id;
    char invite_id[25];
} ww_invite_result_t;


/* Applies one parsed event at processing time now_ms. Returns false with a
 * retryable error when the database is unavailable (running it again is
 * safe), or a permanent error when the stored invite cannot be used. */
bool ww_invite_apply(ww_db_t *db, const ww_invite_event_t *ev, int64_t now_ms,
                     ww_invite_result_t *result, ww_error_t *error);

/* Marks active invites whose expiresAt <= now_ms as expired, at most `batch`
 * per round trip, until none is left or `max_rounds` rounds ran. *expired
 * gets the number changed. Idempotent and safe with several workers. */
bool ww_invite_sweep(ww_db_t *db, int64_t now_ms, int32_t batch, int max_rounds,
                     int64_t *expired, ww_error_t *error);

/* ---- pipeline handler ------------------------------------------------------------ */

typedef struct {
    ww_db_t *db;
    const char *results_topic;
    const char *dlq_topic;
    int32_t max_message_bytes;
    bool dry_run; /* predict outcomes read-only; no writes, no outputs */
    /* dry run: the invite states the run's predictions made (overlay.h),
     * read over the stored ones by every later event of the run; borrowed.
     * NULL in a dry run: every event is answered not_predicted. */
    ww_overlay_t *dry;
} ww_invite_ctx_t;

/* The pipeline handler for the invite events topic (ctx: ww_invite_ctx_t). */
bool ww_invite_handle(void *ctx, const ww_msg_t *msg, ww_outputs_t *outs, ww_error_t *error);

/* The batch handler: a batch of events decided in rounds of at most three
 * round trips (invites $in, one insertMany, one bulk of guarded transitions;
 * a fourth, the touched invites read back, when the bulk is short);
 * the same decisions as ww_invite_handle one event at a time. A dry run
 * decides the same way against the stored invites with ctx->dry laid over
 * them, records the changes there, and produces nothing (outs.outcome only);
 * ww_invite_handle's dry run is a batch of one. */
void ww_invite_handle_batch(void *ctx, ww_batch_item_t *items, size_t n);

/* Test hook (tests/integration only; NULL in production): the batch handler
 * calls fn right before each round's bulk of transitions, after it read the
 * invites and decided. A test uses it to change an invite in that window
 * (another writer moving first), which makes the bulk short. The twin of
 * ww_wallet_batch_set_test_hook (wallet.h). Not thread-safe: set it while no
 * batch runs. */
typedef void (*ww_invite_batch_hook_fn)(void *ctx);
void ww_invite_batch_set_test_hook(ww_invite_batch_hook_fn fn, void *ctx);

/* Tests only: sets the process-wide estimates behind insert first and update
 * first (invite.c) so a test knows which way the next first round goes; they
 * move again with every batch. */
void ww_invite_batch_set_test_estimates(bool insert_first, bool update_first);

/* ---- the sweeper thread ---------------------------------------------------------- */

typedef struct ww_invite_sweeper ww_invite_sweeper_t;

/* Starts a thread that runs ww_invite_sweep every interval_ms (> 0) with
 * the given batch size. Borrows db (it must outlive the sweeper). Returns
 * NULL and an error when the thread cannot be started. */
ww_invite_sweeper_t *ww_invite_sweeper_start(ww_db_t *db, int32_t interval_ms, int32_t batch,
                                             ww_error_t *error);
/* Stops the thread (waits for a round in progress) and frees it. NULL-safe. */
void ww_invite_sweeper_stop(ww_invite_sweeper_t *s);

#endif
