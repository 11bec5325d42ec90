/* command.h: parse and validate one wallet command (bytes in, typed struct out).
 *
 * No I/O and no allocation that outlives a call: the result is a fixed-size
 * struct in caller storage, so the db code can build BSON from plain C values
 * and never sees a json-c object (a string field that arrives as {"$ne": null}
 * is wrong_type here, never a query fragment).
 *
 * The message (schemas/wallet-command.schema.json):
 *   {"type": "wallet.debit" | "wallet.credit",
 *    "idempotencyKey": 1..128 chars of [A-Za-z0-9._:-],
 *    "ownerUserId": 24 hex digits (any case; stored lowercase),
 *    "amountPaise": JSON integer literal, 1..9007199254740991 (2^53-1),
 *    "occurredAt": RFC 3339 date-time (optional),
 *    "reference": {<=16 members; key 1..64 chars of [A-Za-z0-9_-] (no '.' or
 *                  '$': keys are stored as field names); value a string of <=256
 *                  bytes, an int64 integer literal, or a boolean} (optional)}
 * plus the JSON-level rules of json.h (64 KiB, depth 8, strict UTF-8, no NUL,
 * no duplicate keys, exactly one object). No other field is accepted.
 *
 * FINGERPRINT. Two commands with the same idempotencyKey are the same request
 * when their fingerprints are equal (a duplicate) and a conflict otherwise.
 * fingerprint = lowercase hex SHA-256 of the UTF-8 bytes of this canonical
 * JSON text (no whitespace; members in this order, which is sorted order):
 *   {"amountPaise":<int>,"ownerUserId":"<24 lowercase hex>",
 *    "reference":{<members sorted by key, bytewise>},"type":"<type>"}
 * - "reference" is always present: an absent reference and {} are the same;
 * - integers in shortest decimal form ("-0" reads as 0), booleans true/false;
 * - strings escaped as RFC 8785 (JCS): \" \\ \b \f \n \r \t, other bytes below
 *   0x20 as \u00xx (lowercase hex), everything else (incl. non-ASCII) verbatim.
 * So for these value types it is the JCS form of the object, and Python's
 * json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
 * produces the same bytes. idempotencyKey is the lookup key, not part of the
 * fingerprint; occurredAt is deliberately left out because a producer's retry
 * may carry a new timestamp. Changing this form changes every stored
 * fingerprint: treat it as a wire format. */
#ifndef WW_COMMAND_H
#define WW_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "json.h"

#define WW_COMMAND_KEY_MAX 128         /* idempotencyKey characters */
#define WW_COMMAND_OWNER_LEN 24        /* ownerUserId hex digits */
#define WW_COMMAND_AMOUNT_MAX INT64_C(9007199254740991) /* 2^53-1 */
#define WW_COMMAND_REF_MAX 16          /* reference members */
#define WW_COMMAND_REF_KEY_MAX 64      /* reference key characters */
#define WW_COMMAND_REF_STR_MAX 256     /* reference string value bytes (UTF-8) */
#define WW_COMMAND_FINGERPRINT_LEN 65  /* 64 hex digits + NUL */
#define WW_COMMAND_ECHO_MAX 64         /* input bytes an error message may quote */

/* Upper bound of ww_command_render_json()'s output including the NUL: 16
 * reference members of a 64-char key and a 256-byte string that escapes to 6
 * bytes per byte, plus the fixed fields. */
#define WW_COMMAND_JSON_MAX                                                      \
    (512 + WW_COMMAND_KEY_MAX +                                                  \
     WW_COMMAND_REF_MAX * (WW_COMMAND_REF_KEY_MAX + 6 * WW_COMMAND_REF_STR_MAX + 8))

typedef enum {
    WW_COMMAND_DEBIT = 1, /* "wallet.debit": take money out of the owner's wallet */
    WW_COMMAND_CREDIT = 2 /* "wallet.credit": put money in */
} ww_command_type_t;

/* Why a command was rejected: ww_error_t.code (domain WW_ERR_INPUT). The
 * numbers and the names of ww_command_reason_name() are stable: they end up in
 * result events and dead-letter headers. 1..6 are the ww_json_reason_t values;
 * json.c's WW_JSON_NUMBER_RANGE (7) is reported as invalid_value. 7..9 unused. */
typedef enum {
    WW_COMMAND_OK = 0,
    WW_COMMAND_TOO_LARGE = WW_JSON_TOO_LARGE,               /* too_large */
    WW_COMMAND_INVALID_JSON = WW_JSON_INVALID,              /* invalid_json */
    WW_COMMAND_INVALID_ENCODING = WW_JSON_INVALID_ENCODING, /* invalid_encoding */
    WW_COMMAND_TOO_DEEP = WW_JSON_TOO_DEEP,                 /* too_deep */
    WW_COMMAND_NOT_AN_OBJECT = WW_JSON_NOT_AN_OBJECT,       /* not_an_object */
    WW_COMMAND_DUPLICATE_FIELD = WW_JSON_DUPLICATE_KEY,     /* duplicate_field */
    WW_COMMAND_MISSING_FIELD = 10,                          /* missing_field */
    WW_COMMAND_UNKNOWN_FIELD = 11,                          /* unknown_field */
    WW_COMMAND_WRONG_TYPE = 12,    /* wrong_type: e.g. a string where an integer belongs */
    WW_COMMAND_INVALID_VALUE = 13  /* invalid_value: right type, value not allowed
                                      (incl. integers out of range) */
} ww_command_reason_t;

typedef enum {
    WW_COMMAND_REF_STRING = 1,
    WW_COMMAND_REF_INT = 2,
    WW_COMMAND_REF_BOOL = 3
} ww_command_ref_kind_t;

typedef struct {
    char key[WW_COMMAND_REF_KEY_MAX + 1];
    ww_command_ref_kind_t kind;
    /* kind == WW_COMMAND_REF_STRING: valid UTF-8, no NUL, NUL-terminated */
    char str[WW_COMMAND_REF_STR_MAX + 1];
    size_t str_len;
    int64_t i; /* kind == WW_COMMAND_REF_INT */
    bool b;    /* kind == WW_COMMAND_REF_BOOL */
} ww_command_ref_t;

typedef struct {
    ww_command_type_t type;
    char idempotency_key[WW_COMMAND_KEY_MAX + 1];
    char owner_user_id[WW_COMMAND_OWNER_LEN + 1]; /* lowercase hex */
    int64_t amount_paise;                         /* 1..WW_COMMAND_AMOUNT_MAX */
    bool has_occurred_at;
    int64_t occurred_at_ms; /* ms since the Unix epoch, UTC */
    bool has_reference;     /* the field was present (possibly {}) */
    size_t reference_count;
    ww_command_ref_t reference[WW_COMMAND_REF_MAX]; /* sorted by key, keys unique */
    char fingerprint[WW_COMMAND_FINGERPRINT_LEN];   /* see FINGERPRINT above */
} ww_command_t;

/* Parses and validates buf[0..len) (need not be NUL-terminated). limits may be
 * NULL (json.h defaults: 64 KiB, depth 8). *out is always initialised (zeroed
 * on failure). On failure error has domain WW_ERR_INPUT, a ww_command_reason_t
 * code, retryable false, and a message naming the field, e.g.
 * `amountPaise: must be an integer, got a number with a fraction`; at most
 * WW_COMMAND_ECHO_MAX bytes of input are quoted. (Only running out of memory
 * gives WW_ERR_SYSTEM, retryable.) */
bool ww_command_parse(const char *buf, size_t len, const ww_json_limits_t *limits,
                      ww_command_t *out, ww_error_t *error);

/* Stable snake_case name of a reason code ("too_large", "missing_field", ...);
 * "unknown" for anything else. */
const char *ww_command_reason_name(int reason);

/* "wallet.debit" / "wallet.credit" (or "unknown"). */
const char *ww_command_type_name(ww_command_type_t type);

/* Renders cmd as canonical compact JSON (the fingerprint's rules, plus
 * idempotencyKey and occurredAt as "YYYY-MM-DDTHH:MM:SS.mmmZ"; reference only
 * when has_reference) into out. Parsing the output yields an equal command.
 * Returns false, with out set to "" and error WW_ERR_INTERNAL, if outlen is too
 * small; WW_COMMAND_JSON_MAX is always enough. *written (may be NULL) gets the
 * length without the NUL. */
bool ww_command_render_json(const ww_command_t *cmd, char *out, size_t outlen,
                            size_t *written, ww_error_t *error);

/* Recomputes cmd->fingerprint from the other fields (ww_command_parse already
 * did this; for commands built by hand, e.g. in tests). */
void ww_command_compute_fingerprint(ww_command_t *cmd);

#endif
