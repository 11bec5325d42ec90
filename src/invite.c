/* invite.c: see invite.h and docs/invites.md.
 *
 * DESIGN (why it is correct without multi-document transactions)
 * - The invite document is the only place where decisions about its code are
 *   serialised. Creation is an insert guarded by the unique {code: 1} index;
 *   every later change is ONE conditional single-document update whose
 *   filter names the status the decision was made from:
 *     updateOne({_id, status: "active"}, {$set: {status, ...},
 *                $push: {processedEvents: {eventId, type, fingerprint}}})
 *   Only `active` has outgoing transitions, so of two writers (two events, a
 *   zombie consumer whose partition moved on, the sweeper) at most one can
 *   match; the loser sees matched = 0, reads the invite again and decides
 *   again from what is there now.
 * - The event's id is recorded in the same update that makes its change, so
 *   "applied" and "recorded" cannot be separated by a crash: a replay finds
 *   the id and answers duplicate, also after later transitions (a replayed
 *   invite.created after the invite was used is still a duplicate).
 * - processedEvents is bounded without pruning: only applied events are
 *   recorded, and an invite has at most two (created + the one transition
 *   out of active), because used / revoked / expired are final. No marker is
 *   ever removed, so a zombie cannot slip through a pruning window.
 *   Duplicates and rejections change nothing and record nothing: they are
 *   decided again, the same way, on a replay (final states are final).
 * - invite_not_found is the one answer that is not final: the event is
 *   dead-lettered, and replaying it once the invite exists applies it.
 * - The sweeper writes {_id: {$in: ids}, status: "active", expiresAt:
 *   {$lte: now}} -> expired, the same guard, so it is idempotent, safe with
 *   several workers, and cannot overwrite a transition made meanwhile.
 * - Caveat: FerretDB 1.24 does not apply conditional updates atomically
 *   (docs/testing.md (g)); there, the guarantee holds only
 *   while one writer at a time touches an invite, which the pipeline's
 *   routing by code provides for events (not against a zombie or the
 *   sweeper racing a transition). MongoDB and mongo-java-server enforce it. */
#include "invite.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "sha256.h"
#include "strmap.h"

#define SEEN "processedEvents"
#define MAX_ATTEMPTS 32 /* guarded-write races before giving up (retryable) */
#define ECHO_BUF (3 * WW_COMMAND_ECHO_MAX + 8)

/* ---- names ------------------------------------------------------------------------ */

static const char *const TYPE_NAMES[] = {NULL, "invite.created", "invite.used",
                                         "invite.revoked", "invite.expired"};
static const char *const STATUS_NAMES[] = {NULL, "active", "used", "revoked", "expired"};

const char *ww_invite_event_type_name(ww_invite_event_type_t type) {
    return type >= WW_INVITE_CREATED && type <= WW_INVITE_EXPIRED ? TYPE_NAMES[type] : "unknown";
}

const char *ww_invite_status_name(ww_invite_status_t status) {
    return status >= WW_INVITE_ACTIVE && status <= WW_INVITE_STATUS_EXPIRED ? STATUS_NAMES[status]
                                                                            : NULL;
}

bool ww_invite_status_from_name(const char *name, ww_invite_status_t *out) {
    for (int s = WW_INVITE_ACTIVE; name && s <= WW_INVITE_STATUS_EXPIRED; s++) {
        if (strcmp(name, STATUS_NAMES[s]) == 0) {
            *out = (ww_invite_status_t)s;
            return true;
        }
    }
    return false;
}

const char *ww_invite_outcome_name(ww_invite_outcome_t outcome) {
    switch (outcome) {
    case WW_INVITE_APPLIED: return "applied";
    case WW_INVITE_DUPLICATE: return "duplicate";
    case WW_INVITE_REJECTED: return "rejected";
    case WW_INVITE_INVALID: return "invalid";
    case WW_INVITE_NOT_FOUND: return "rejected";
    }
    return "unknown";
}

/* ---- parsing (no I/O) ------------------------------------------------------------- */

static void echo(const char *s, size_t len, char *out) {
    ww_json_echo(s, len, WW_COMMAND_ECHO_MAX, out, ECHO_BUF);
}

static const char *describe(json_object *v) {
    switch (json_object_get_type(v)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_int: return "an integer";
    case json_type_double: return "a number";
    case json_type_string: return "a string";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    }
    return "an unknown value";
}

static bool get_string(json_object *v, const char *field, const char **s, size_t *len,
                       ww_error_t *error) {
    if (!json_object_is_type(v, json_type_string)) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_WRONG_TYPE, false,
                     "%s: must be a string, got %s", field, describe(v));
        return false;
    }
    *s = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    return true;
}

typedef enum { CS_EVENT_ID, CS_CODE, CS_ROLE } charset_t;

static bool in_charset(unsigned char c, charset_t cs) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
        c == '-')
        return true;
    if (cs == CS_ROLE) return false;
    if (c == '.') return true;
    return cs == CS_EVENT_ID && c == ':';
}

static const char *charset_text(charset_t cs) {
    switch (cs) {
    case CS_EVENT_ID: return "A-Z a-z 0-9 . _ : -";
    case CS_CODE: return "A-Z a-z 0-9 . _ -";
    case CS_ROLE: return "A-Z a-z 0-9 _ -";
    }
    return "?";
}

/* A bounded identifier: 1..max bytes of the charset, copied to out. */
static bool parse_ident(json_object *v, const char *field, charset_t cs, size_t max, char *out,
                        ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    char e[ECHO_BUF];
    if (!get_string(v, field, &s, &len, error)) return false;
    if (len == 0 || len > max) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "%s: must be 1 to %zu characters, got %zu bytes", field, max, len);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!in_charset((unsigned char)s[i], cs)) {
            echo(s, len, e);
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                         "%s: byte %zu is not one of %s in \"%s\"", field, i, charset_text(cs), e);
            return false;
        }
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool parse_user_id(json_object *v, const char *field, char *out, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, field, &s, &len, error)) return false;
    bool ok = len == WW_INVITE_USER_ID_LEN;
    for (size_t i = 0; ok && i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) ok = false;
        out[i] = c;
    }
    if (!ok) {
        char e[ECHO_BUF];
        echo(s, len, e);
        memset(out, 0, WW_INVITE_USER_ID_LEN + 1);
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "%s: must be %d hex digits (an ObjectId), got \"%s\" (%zu bytes)", field,
                     WW_INVITE_USER_ID_LEN, e, len);
        return false;
    }
    out[len] = '\0';
    return true;
}

static bool parse_time(json_object *v, const char *field, int64_t *ms, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, field, &s, &len, error)) return false;
    if (!ww_clock_parse_rfc3339(s, len, ms)) {
        char e[ECHO_BUF];
        echo(s, len, e);
        *ms = 0;
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "%s: must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z, got \"%s\"",
                     field, e);
        return false;
    }
    return true;
}

/* Fields per type, in the order they are checked; required ones first. */
typedef struct {
    const char *fields[8];
    size_t n_required;
} shape_t;

static const shape_t SHAPES[] = {
    [WW_INVITE_CREATED] = {{"type", "eventId", "code", "parentCode", "role", "expiresAt",
                            "createdAt", "createdByUserId"},
                           6},
    [WW_INVITE_USED] = {{"type", "eventId", "code", "usedByUserId", "occurredAt"}, 5},
    [WW_INVITE_REVOKED] = {{"type", "eventId", "code", "occurredAt"}, 4},
    [WW_INVITE_EXPIRED] = {{"type", "eventId", "code", "occurredAt"}, 4},
};

static bool parse_type(json_object *v, ww_invite_event_t *ev, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, "type", &s, &len, error)) return false;
    for (int t = WW_INVITE_CREATED; t <= WW_INVITE_EXPIRED; t++) {
        if (len == strlen(TYPE_NAMES[t]) && memcmp(s, TYPE_NAMES[t], len) == 0) {
            ev->type = (ww_invite_event_type_t)t;
            return true;
        }
    }
    char e[ECHO_BUF];
    echo(s, len, e);
    ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                 "type: must be one of invite.created, invite.used, invite.revoked, "
                 "invite.expired, got \"%s\"",
                 e);
    return false;
}

static void compute_fingerprint(ww_invite_event_t *ev) {
    /* Every value is from a restricted charset (no JSON escaping needed), so
     * this is the RFC 8785 form of the object; keys in sorted order. */
    char buf[512];
    int n;
    switch (ev->type) {
    case WW_INVITE_CREATED: {
        char ts[32], by[64] = "";
        ww_clock_format_iso8601(ev->expires_at_ms, ts, sizeof ts);
        if (ev->has_created_by)
            snprintf(by, sizeof by, "\"createdByUserId\":\"%s\",", ev->created_by_user_id);
        n = snprintf(buf, sizeof buf,
                     "{\"code\":\"%s\",%s\"expiresAt\":\"%s\",\"parentCode\":\"%s\","
                     "\"role\":\"%s\",\"type\":\"invite.created\"}",
                     ev->code, by, ts, ev->parent_code, ev->role);
        break;
    }
    case WW_INVITE_USED:
        n = snprintf(buf, sizeof buf,
                     "{\"code\":\"%s\",\"type\":\"invite.used\",\"usedByUserId\":\"%s\"}",
                     ev->code, ev->used_by_user_id);
        break;
    default:
        n = snprintf(buf, sizeof buf, "{\"code\":\"%s\",\"type\":\"%s\"}", ev->code,
                     ww_invite_event_type_name(ev->type));
        break;
    }
    if (n < 0 || (size_t)n >= sizeof buf) n = 0; /* cannot happen: bounded fields */
    ww_sha256_hex(buf, (size_t)n, ev->fingerprint);
}

bool ww_invite_parse(const char *buf, size_t len, const ww_json_limits_t *limits,
                     ww_invite_event_t *out, ww_error_t *error) {
    bool ok = false;
    json_object *root = NULL, *v;
    if (!out) {
        ww_error_set(error, WW_ERR_INTERNAL, 0, false, "ww_invite_parse: out is NULL");
        return false;
    }
    memset(out, 0, sizeof *out);
    if (!ww_json_parse_object(buf, len, limits, &root, error)) {
        if (error && error->domain == WW_ERR_INPUT && error->code == WW_JSON_NUMBER_RANGE)
            error->code = WW_COMMAND_INVALID_VALUE;
        goto done;
    }
    /* the type decides which fields belong */
    if (!json_object_object_get_ex(root, "type", &v)) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_MISSING_FIELD, false,
                     "missing field \"type\"");
        goto done;
    }
    if (!parse_type(v, out, error)) goto done;
    const shape_t *shape = &SHAPES[out->type];
    json_object_object_foreach(root, key, val) {
        (void)val;
        bool known = false;
        for (size_t i = 0; i < 8 && shape->fields[i]; i++)
            if (strcmp(key, shape->fields[i]) == 0) known = true;
        if (!known) {
            char e[ECHO_BUF];
            echo(key, strlen(key), e);
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_UNKNOWN_FIELD, false,
                         "unknown field \"%s\" for %s", e, TYPE_NAMES[out->type]);
            goto done;
        }
    }
    for (size_t i = 0; i < shape->n_required; i++) {
        if (!json_object_object_get_ex(root, shape->fields[i], NULL)) {
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_MISSING_FIELD, false,
                         "missing field \"%s\" (required for %s)", shape->fields[i],
                         TYPE_NAMES[out->type]);
            goto done;
        }
    }
    json_object_object_get_ex(root, "eventId", &v);
    if (!parse_ident(v, "eventId", CS_EVENT_ID, WW_INVITE_EVENT_ID_MAX, out->event_id, error))
        goto done;
    json_object_object_get_ex(root, "code", &v);
    if (!parse_ident(v, "code", CS_CODE, WW_INVITE_CODE_MAX, out->code, error)) goto done;
    switch (out->type) {
    case WW_INVITE_CREATED:
        json_object_object_get_ex(root, "parentCode", &v);
        if (!parse_ident(v, "parentCode", CS_CODE, WW_INVITE_CODE_MAX, out->parent_code, error))
            goto done;
        json_object_object_get_ex(root, "role", &v);
        if (!parse_ident(v, "role", CS_ROLE, WW_INVITE_ROLE_MAX, out->role, error)) goto done;
        json_object_object_get_ex(root, "expiresAt", &v);
        if (!parse_time(v, "expiresAt", &out->expires_at_ms, error)) goto done;
        if (json_object_object_get_ex(root, "createdAt", &v)) {
            if (!parse_time(v, "createdAt", &out->created_at_ms, error)) goto done;
            out->has_created_at = true;
        }
        if (json_object_object_get_ex(root, "createdByUserId", &v)) {
            if (!parse_user_id(v, "createdByUserId", out->created_by_user_id, error)) goto done;
            out->has_created_by = true;
        }
        break;
    case WW_INVITE_USED:
        json_object_object_get_ex(root, "usedByUserId", &v);
        if (!parse_user_id(v, "usedByUserId", out->used_by_user_id, error)) goto done;
        /* fall through */
    case WW_INVITE_REVOKED:
    case WW_INVITE_EXPIRED:
        json_object_object_get_ex(root, "occurredAt", &v);
        if (!parse_time(v, "occurredAt", &out->occurred_at_ms, error)) goto done;
        break;
    }
    compute_fingerprint(out);
    ok = true;
done:
    if (!ok) memset(out, 0, sizeof *out);
    json_object_put(root);
    return ok;
}

/* ---- the state machine (pure) ------------------------------------------------------ */

static void reject(ww_invite_decision_t *d, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject(ww_invite_decision_t *d, const char *code, const char *fmt, ...) {
    d->outcome = WW_INVITE_REJECTED;
    snprintf(d->error_code, sizeof d->error_code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->error_message, sizeof d->error_message, fmt, ap);
    va_end(ap);
}

/* invite_used / invite_revoked / invite_expired for a final status. */
static void reject_final(ww_invite_decision_t *d, ww_invite_status_t st,
                         ww_invite_event_type_t type) {
    char code[48];
    snprintf(code, sizeof code, "invite_%s", STATUS_NAMES[st]);
    reject(d, code, "the invite is already %s (final); %s cannot change it", STATUS_NAMES[st],
           TYPE_NAMES[type]);
}

void ww_invite_decide(const ww_invite_state_t *cur, const ww_invite_event_t *ev,
                      ww_invite_decision_t *d) {
    memset(d, 0, sizeof *d);
    d->to = cur->status;
    d->from = cur->status;

    if (cur->status == WW_INVITE_NONE) {
        if (ev->type == WW_INVITE_CREATED) {
            d->outcome = WW_INVITE_APPLIED;
            d->to = WW_INVITE_ACTIVE;
            return;
        }
        d->outcome = WW_INVITE_NOT_FOUND;
        snprintf(d->error_code, sizeof d->error_code, "invite_not_found");
        snprintf(d->error_message, sizeof d->error_message,
                 "no invite with code \"%s\" (%s before invite.created?)", ev->code,
                 TYPE_NAMES[ev->type]);
        return;
    }

    /* already decided? before "can it apply?" */
    for (size_t i = 0; i < cur->n_seen && i < WW_INVITE_EVENTS_MAX; i++) {
        if (strcmp(cur->seen[i].event_id, ev->event_id) != 0) continue;
        if (strcmp(cur->seen[i].fingerprint, ev->fingerprint) == 0) {
            d->outcome = WW_INVITE_DUPLICATE;
        } else {
            reject(d, "conflict", "eventId \"%s\" was already applied to this invite with a "
                   "different payload", ev->event_id);
        }
        return;
    }

    if (ev->type == WW_INVITE_CREATED) {
        bool same = strcmp(cur->parent_code, ev->parent_code) == 0 &&
                    strcmp(cur->role, ev->role) == 0 && cur->has_expires_at &&
                    cur->expires_at_ms == ev->expires_at_ms &&
                    (!cur->has_created_by || !ev->has_created_by ||
                     strcmp(cur->created_by_user_id, ev->created_by_user_id) == 0);
        if (same)
            d->outcome = WW_INVITE_DUPLICATE;
        else
            reject(d, "conflict", "invite \"%s\" already exists with a different parentCode, "
                   "role, expiresAt or createdByUserId", ev->code);
        return;
    }

    if (cur->status == WW_INVITE_ACTIVE) {
        if (ev->type == WW_INVITE_USED && cur->has_expires_at &&
            ev->occurred_at_ms >= cur->expires_at_ms) {
            char exp[32], at[32];
            ww_clock_format_iso8601(cur->expires_at_ms, exp, sizeof exp);
            ww_clock_format_iso8601(ev->occurred_at_ms, at, sizeof at);
            reject(d, "invite_expired", "the invite expired at %s; it was used at %s", exp, at);
            return;
        }
        d->outcome = WW_INVITE_APPLIED;
        d->from = WW_INVITE_ACTIVE;
        d->to = ev->type == WW_INVITE_USED      ? WW_INVITE_STATUS_USED
                : ev->type == WW_INVITE_REVOKED ? WW_INVITE_STATUS_REVOKED
                                                : WW_INVITE_STATUS_EXPIRED;
        return;
    }

    /* a final state: the same effect again is a duplicate, anything else is refused */
    bool same_effect = false;
    switch (ev->type) {
    case WW_INVITE_USED:
        same_effect = cur->status == WW_INVITE_STATUS_USED && cur->has_used_by &&
                      strcmp(cur->used_by_user_id, ev->used_by_user_id) == 0;
        break;
    case WW_INVITE_REVOKED: same_effect = cur->status == WW_INVITE_STATUS_REVOKED; break;
    case WW_INVITE_EXPIRED: same_effect = cur->status == WW_INVITE_STATUS_EXPIRED; break;
    case WW_INVITE_CREATED: break; /* handled above */
    }
    if (same_effect)
        d->outcome = WW_INVITE_DUPLICATE;
    else if (ev->type == WW_INVITE_USED && cur->status == WW_INVITE_STATUS_USED)
        reject(d, "invite_used", "the invite was already used by another user");
    else
        reject_final(d, cur->status, ev->type);
}

/* ---- reading the stored invite ------------------------------------------------------ */

static const char *doc_str(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* Copies a stored string that must fit; one that does not gets "\x01" so it
 * equals no valid event value. */
static void copy_stored(char *out, size_t cap, const char *s) {
    if (!s) {
        out[0] = '\0';
    } else if (strlen(s) < cap) {
        memcpy(out, s, strlen(s) + 1);
    } else {
        out[0] = '\x01';
        out[1] = '\0';
    }
}

/* An ObjectId (or its 24-hex string form, as a backend may have written it). */
static bool doc_user_id(const bson_t *doc, const char *key, char out[25]) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key)) return false;
    if (BSON_ITER_HOLDS_OID(&it)) {
        bson_oid_to_string(bson_iter_oid(&it), out);
        return true;
    }
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        uint32_t len;
        const char *s = bson_iter_utf8(&it, &len);
        if (len == 24 && bson_oid_is_valid(s, len)) {
            for (int i = 0; i < 24; i++)
                out[i] = (s[i] >= 'A' && s[i] <= 'F') ? (char)(s[i] - 'A' + 'a') : s[i];
            out[24] = '\0';
            return true;
        }
    }
    return false;
}

static bool state_from_doc(const bson_t *doc, ww_invite_state_t *st, char invite_id[25],
                           ww_error_t *error) {
    memset(st, 0, sizeof *st);
    bson_iter_t it;
    invite_id[0] = '\0';
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
        bson_oid_to_string(bson_iter_oid(&it), invite_id);
    const char *status = doc_str(doc, "status");
    if (!ww_invite_status_from_name(status, &st->status)) {
        ww_error_set(error, WW_ERR_DB, 0, false, "invite has no usable status (\"%.32s\")",
                     status ? status : "");
        return false;
    }
    copy_stored(st->parent_code, sizeof st->parent_code, doc_str(doc, "parentCode"));
    copy_stored(st->role, sizeof st->role, doc_str(doc, "role"));
    if (bson_iter_init_find(&it, doc, "expiresAt") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        st->has_expires_at = true;
        st->expires_at_ms = bson_iter_date_time(&it);
    }
    st->has_created_by = doc_user_id(doc, "createdBy", st->created_by_user_id);
    st->has_used_by = doc_user_id(doc, "usedBy", st->used_by_user_id);
    bson_iter_t arr;
    if (bson_iter_init_find(&it, doc, SEEN) && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr) && st->n_seen < WW_INVITE_EVENTS_MAX) {
            bson_iter_t f;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &f)) continue;
            ww_invite_seen_t *s = &st->seen[st->n_seen];
            memset(s, 0, sizeof *s);
            while (bson_iter_next(&f)) {
                if (!BSON_ITER_HOLDS_UTF8(&f)) continue;
                const char *k = bson_iter_key(&f);
                const char *v = bson_iter_utf8(&f, NULL);
                if (strcmp(k, "eventId") == 0) copy_stored(s->event_id, sizeof s->event_id, v);
                if (strcmp(k, "fingerprint") == 0)
                    copy_stored(s->fingerprint, sizeof s->fingerprint, v);
            }
            if (s->event_id[0]) st->n_seen++;
        }
    }
    return true;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* One processedEvents entry; write_id (an update first's, else NULL) names
 * the write that recorded it. */
static void append_seen(bson_t *parent, const char *key, const ww_invite_event_t *ev,
                        int64_t now_ms, const bson_oid_t *write_id) {
    bson_t s;
    bson_append_document_begin(parent, key, -1, &s);
    BSON_APPEND_UTF8(&s, "eventId", ev->event_id);
    BSON_APPEND_UTF8(&s, "type", TYPE_NAMES[ev->type]);
    BSON_APPEND_UTF8(&s, "fingerprint", ev->fingerprint);
    BSON_APPEND_DATE_TIME(&s, "appliedAt", now_ms);
    if (write_id) BSON_APPEND_OID(&s, "writeId", write_id);
    bson_append_document_end(parent, &s);
}

static void append_oid_hex(bson_t *doc, const char *key, const char *hex) {
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, hex);
    BSON_APPEND_OID(doc, key, &oid);
}

/* The invite document an invite.created inserts, with _id id. */
static void build_invite(bson_t *doc, const ww_invite_event_t *ev, const bson_oid_t *id,
                         int64_t now_ms) {
    bson_t arr;
    bson_init(doc);
    BSON_APPEND_OID(doc, "_id", id);
    BSON_APPEND_UTF8(doc, "code", ev->code);
    BSON_APPEND_UTF8(doc, "parentCode", ev->parent_code);
    BSON_APPEND_UTF8(doc, "role", ev->role);
    BSON_APPEND_UTF8(doc, "status", "active");
    BSON_APPEND_DATE_TIME(doc, "expiresAt", ev->expires_at_ms);
    if (ev->has_created_by) append_oid_hex(doc, "createdBy", ev->created_by_user_id);
    BSON_APPEND_DATE_TIME(doc, "createdAt", ev->has_created_at ? ev->created_at_ms : now_ms);
    BSON_APPEND_DATE_TIME(doc, "updatedAt", now_ms);
    BSON_APPEND_ARRAY_BEGIN(doc, SEEN, &arr);
    append_seen(&arr, "0", ev, now_ms, NULL);
    bson_append_array_end(doc, &arr);
}

/* The update of a transition to `to` by ev (initialises update). */
static void transition_update(bson_t *update, const ww_invite_event_t *ev,
                              ww_invite_status_t to, int64_t now_ms,
                              const bson_oid_t *write_id) {
    bson_t set, push;
    bson_init(update);
    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", STATUS_NAMES[to]);
    BSON_APPEND_DATE_TIME(&set, "updatedAt", now_ms);
    if (ev->type == WW_INVITE_USED) {
        append_oid_hex(&set, "usedBy", ev->used_by_user_id);
        BSON_APPEND_DATE_TIME(&set, "usedAt", ev->occurred_at_ms);
    } else if (ev->type == WW_INVITE_REVOKED) {
        BSON_APPEND_DATE_TIME(&set, "revokedAt", ev->occurred_at_ms);
    }
    bson_append_document_end(update, &set);
    BSON_APPEND_DOCUMENT_BEGIN(update, "$push", &push);
    append_seen(&push, SEEN, ev, now_ms, write_id);
    bson_append_document_end(update, &push);
}

/* The guarded transition out of `from`: filter and update. */
static void build_transition(bson_t *filter, bson_t *update, const char *invite_id,
                             const ww_invite_event_t *ev, ww_invite_status_t from,
                             ww_invite_status_t to, int64_t now_ms) {
    bson_oid_t id;
    bson_init(filter);
    bson_oid_init_from_string(&id, invite_id);
    BSON_APPEND_OID(filter, "_id", &id);
    BSON_APPEND_UTF8(filter, "status", STATUS_NAMES[from]);
    transition_update(update, ev, to, now_ms, NULL);
}

/* The transition of an unread invite: the filter holds only where
 * ww_invite_decide would apply ev (an active invite with an ObjectId _id
 * that has not seen ev's eventId; for `used`, one whose expiresAt is a date
 * after occurredAt), so a match is the decision `applied` from active. It is
 * stricter than the decision in places (an expiresAt that is not a date, a
 * seen list longer than the decision reads): those miss, and are read and
 * decided next round. The update is build_transition's, and its
 * processedEvents entry carries write_id: the round's, which tells the
 * round's own write from an earlier application of the same event when a
 * short bulk is read back. */
static void blind_transition(bson_t *filter, bson_t *update, const ww_invite_event_t *ev,
                             ww_invite_status_t to, int64_t now_ms,
                             const bson_oid_t *write_id) {
    bson_t c;
    bson_init(filter);
    BSON_APPEND_UTF8(filter, "code", ev->code);
    BSON_APPEND_UTF8(filter, "status", STATUS_NAMES[WW_INVITE_ACTIVE]);
    /* strings, not arrays holding them (an array status is unusable stored
     * data to the decision; an array code is not found by the read) */
    BSON_APPEND_DOCUMENT_BEGIN(filter, "code.0", &c);
    BSON_APPEND_BOOL(&c, "$exists", false);
    bson_append_document_end(filter, &c);
    BSON_APPEND_DOCUMENT_BEGIN(filter, "status.0", &c);
    BSON_APPEND_BOOL(&c, "$exists", false);
    bson_append_document_end(filter, &c);
    BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &c);
    BSON_APPEND_UTF8(&c, "$type", "objectId");
    bson_append_document_end(filter, &c);
    BSON_APPEND_DOCUMENT_BEGIN(filter, SEEN ".eventId", &c);
    BSON_APPEND_UTF8(&c, "$ne", ev->event_id);
    bson_append_document_end(filter, &c);
    if (ev->type == WW_INVITE_USED) {
        BSON_APPEND_DOCUMENT_BEGIN(filter, "expiresAt", &c);
        BSON_APPEND_DATE_TIME(&c, "$gt", ev->occurred_at_ms);
        bson_append_document_end(filter, &c);
    }
    transition_update(update, ev, to, now_ms, write_id);
}

/* invite.created: the insert; *duplicate when the code exists already. */
static bool insert_invite(ww_db_t *db, const ww_invite_event_t *ev, int64_t now_ms,
                          char invite_id[25], bool *duplicate, ww_error_t *error) {
    bson_t doc;
    bson_oid_t id;
    bson_oid_init(&id, NULL);
    build_invite(&doc, ev, &id, now_ms);
    bool ok = ww_db_insert_one(db, WW_INVITES, &doc, duplicate, error);
    if (ok && !*duplicate) bson_oid_to_string(&id, invite_id);
    bson_destroy(&doc);
    return ok;
}

/* One guarded transition out of `from`; *matched false = someone moved first. */
static bool transition(ww_db_t *db, const char *invite_id, const ww_invite_event_t *ev,
                       ww_invite_status_t from, ww_invite_status_t to, int64_t now_ms,
                       bool *matched, ww_error_t *error) {
    bson_t filter, update;
    build_transition(&filter, &update, invite_id, ev, from, to, now_ms);
    int64_t n_matched = 0;
    bool ok = ww_db_update_one(db, WW_INVITES, &filter, &update, NULL, &n_matched, NULL, error);
    *matched = ok && n_matched > 0;
    bson_destroy(&filter);
    bson_destroy(&update);
    return ok;
}

/* Reads the invite for ev->code into st (zeroed when there is none). */
static bool load_state(ww_db_t *db, const ww_invite_event_t *ev, ww_invite_state_t *st,
                       ww_invite_result_t *r, ww_error_t *error) {
    bson_t filter = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&filter, "code", ev->code);
    bool found = false;
    bool ok = ww_db_find_one(db, WW_INVITES, &filter, NULL, &doc, &found, error);
    bson_destroy(&filter);
    if (!ok) return false;
    memset(st, 0, sizeof *st);
    r->has_invite_id = false;
    if (!found) return true;
    ok = state_from_doc(&doc, st, r->invite_id, error);
    bson_destroy(&doc);
    if (!ok) {
        /* permanent: the pipeline dead-letters as processing_failed */
        ww_error_set(error, WW_ERR_DB, 0, false, "invite %s: stored status is unusable",
                     ev->code);
        return false;
    }
    r->has_invite_id = r->invite_id[0] != '\0';
    return true;
}

bool ww_invite_apply(ww_db_t *db, const ww_invite_event_t *ev, int64_t now_ms,
                     ww_invite_result_t *r, ww_error_t *error) {
    memset(r, 0, sizeof *r);
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        ww_invite_state_t st;
        if (!load_state(db, ev, &st, r, error)) return false;
        ww_invite_decide(&st, ev, &r->decision);
        if (r->decision.outcome != WW_INVITE_APPLIED) return true;

        bool raced = false;
        if (r->decision.from == WW_INVITE_NONE) {
            bool dup = false;
            if (!insert_invite(db, ev, now_ms, r->invite_id, &dup, error)) return false;
            raced = dup;
            r->has_invite_id = !dup;
        } else {
            bool matched = false;
            if (!r->has_invite_id) {
                ww_error_set(error, WW_ERR_DB, 0, false, "invite %s has no ObjectId _id",
                             ev->code);
                return false;
            }
            if (!transition(db, r->invite_id, ev, r->decision.from, r->decision.to, now_ms,
                            &matched, error))
                return false;
            raced = !matched;
        }
        if (!raced) return true;
        /* someone decided first (another event, a zombie, the sweeper): look again */
        ww_metrics_inc_retry("invite_contention");
    }
    ww_error_set(error, WW_ERR_DB, 0, true, "invite %s: too much contention, will retry",
                 ev->code);
    return false;
}

/* ---- the sweep ----------------------------------------------------------------------------- */

#define SWEEP_BATCH_MAX 10000

typedef struct {
    bson_oid_t ids[SWEEP_BATCH_MAX];
    size_t n;
    size_t cap;
} id_batch_t;

static bool collect_id(const bson_t *doc, void *ctx) {
    id_batch_t *b = ctx;
    bson_iter_t it;
    if (b->n >= b->cap) return false;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
        bson_oid_copy(bson_iter_oid(&it), &b->ids[b->n++]);
    return true;
}

static void append_overdue(bson_t *filter, int64_t now_ms) {
    bson_t lte;
    BSON_APPEND_UTF8(filter, "status", "active");
    BSON_APPEND_DOCUMENT_BEGIN(filter, "expiresAt", &lte);
    BSON_APPEND_DATE_TIME(&lte, "$lte", now_ms);
    bson_append_document_end(filter, &lte);
}

/* One round: find up to `batch` overdue ids, then one guarded updateMany. */
static bool sweep_round(ww_db_t *db, int64_t now_ms, id_batch_t *b, int64_t *changed,
                        ww_error_t *error) {
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj, sort;
    append_overdue(&filter, now_ms);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "expiresAt", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", (int64_t)b->cap);
    b->n = 0;
    *changed = 0;
    bool ok = ww_db_find(db, WW_INVITES, &filter, &opts, collect_id, b, error);
    bson_destroy(&filter);
    bson_destroy(&opts);
    if (!ok || b->n == 0) return ok;

    bson_t upd_filter = BSON_INITIALIZER, idc, in, update = BSON_INITIALIZER, set;
    BSON_APPEND_DOCUMENT_BEGIN(&upd_filter, "_id", &idc);
    BSON_APPEND_ARRAY_BEGIN(&idc, "$in", &in);
    for (size_t i = 0; i < b->n; i++) {
        char k[16];
        const char *key;
        bson_uint32_to_string((uint32_t)i, &key, k, sizeof k);
        BSON_APPEND_OID(&in, key, &b->ids[i]);
    }
    bson_append_array_end(&idc, &in);
    bson_append_document_end(&upd_filter, &idc);
    append_overdue(&upd_filter, now_ms);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", "expired");
    BSON_APPEND_DATE_TIME(&set, "updatedAt", now_ms);
    bson_append_document_end(&update, &set);
    ok = ww_db_update_many(db, WW_INVITES, &upd_filter, &update, NULL, NULL, changed, error);
    bson_destroy(&upd_filter);
    bson_destroy(&update);
    return ok;
}

static bool sweep(ww_db_t *db, int64_t now_ms, int32_t batch, int max_rounds,
                  volatile int *stop, int64_t *expired, ww_error_t *error) {
    *expired = 0;
    id_batch_t *b = malloc(sizeof *b);
    if (!b) {
        ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory");
        return false;
    }
    b->cap = batch < 1 ? 1 : batch > SWEEP_BATCH_MAX ? SWEEP_BATCH_MAX : (size_t)batch;
    bool ok = true;
    for (int round = 0; ok && round < max_rounds && !(stop && *stop); round++) {
        int64_t changed = 0;
        ok = sweep_round(db, now_ms, b, &changed, error);
        if (ok) *expired += changed;
        if (b->n < b->cap) break; /* nothing more is overdue */
    }
    free(b);
    return ok;
}

bool ww_invite_sweep(ww_db_t *db, int64_t now_ms, int32_t batch, int max_rounds,
                     int64_t *expired, ww_error_t *error) {
    return sweep(db, now_ms, batch, max_rounds, NULL, expired, error);
}

/* ---- the sweeper thread ---------------------------------------------------------------- */

#define SWEEP_ROUNDS_PER_TICK 100 /* bounds one tick; the next tick continues */

struct ww_invite_sweeper {
    ww_db_t *db;
    int32_t interval_ms;
    int32_t batch;
    volatile int stop;
    pthread_t thread;
};

static void *sweeper_main(void *arg) {
    ww_invite_sweeper_t *s = arg;
    bool failing = false;
    while (!s->stop) {
        int64_t expired = 0;
        ww_error_t err;
        ww_error_clear(&err);
        if (sweep(s->db, ww_clock_now_ms(), s->batch, SWEEP_ROUNDS_PER_TICK, &s->stop, &expired,
                  &err)) {
            if (failing) ww_info("invite", "sweeper: database available again");
            failing = false;
            if (expired > 0) ww_info("invite", "sweeper", WW_INT("expired", expired));
        } else if (!failing) {
            /* once per outage; the next tick tries again */
            ww_warn("invite", "sweeper failed (retrying)", WW_STR("error", err.message),
                    WW_INT("interval_ms", s->interval_ms));
            failing = true;
        }
        ww_clock_sleep_ms(s->interval_ms, &s->stop);
    }
    return NULL;
}

ww_invite_sweeper_t *ww_invite_sweeper_start(ww_db_t *db, int32_t interval_ms, int32_t batch,
                                             ww_error_t *error) {
    if (!db || interval_ms <= 0 || batch <= 0) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "invite sweeper: interval_ms and batch must be > 0");
        return NULL;
    }
    ww_invite_sweeper_t *s = calloc(1, sizeof *s);
    if (!s) {
        ww_error_set(error, WW_ERR_SYSTEM, 0, false, "out of memory");
        return NULL;
    }
    s->db = db;
    s->interval_ms = interval_ms;
    s->batch = batch;
    int rc = pthread_create(&s->thread, NULL, sweeper_main, s);
    if (rc != 0) {
        ww_error_set(error, WW_ERR_SYSTEM, rc, false, "invite sweeper: pthread_create: %s",
                     strerror(rc));
        free(s);
        return NULL;
    }
    ww_info("invite", "sweeper started", WW_INT("interval_ms", interval_ms), WW_INT("batch", batch));
    return s;
}

void ww_invite_sweeper_stop(ww_invite_sweeper_t *s) {
    if (!s) return;
    s->stop = 1;
    pthread_join(s->thread, NULL);
    free(s);
}

/* ---- the handler ----------------------------------------------------------------------------- */

static json_object *str_or_null(const char *s) {
    return s && s[0] ? json_object_new_string(s) : NULL;
}

static bool add_result(ww_outputs_t *outs, const char *topic, const char *key, size_t key_len,
                       const char *event_id, const char *type, const char *code,
                       const char *status, ww_invite_status_t invite_status,
                       const char *error_code, const char *error_message, const ww_msg_t *msg) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "eventId", str_or_null(event_id));
    json_object_object_add(o, "type", str_or_null(type));
    json_object_object_add(o, "code", str_or_null(code));
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "inviteStatus", str_or_null(ww_invite_status_name(invite_status)));
    char ts[32];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    json_object_object_add(o, "processedAt", json_object_new_string(ts));
    json_object *src = json_object_new_object();
    json_object_object_add(src, "topic", json_object_new_string(msg->topic));
    json_object_object_add(src, "partition", json_object_new_int(msg->partition));
    json_object_object_add(src, "offset", json_object_new_int64(msg->offset));
    json_object_object_add(o, "source", src);
    if (error_code && error_code[0]) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string(error_code));
        json_object_object_add(e, "message", json_object_new_string(error_message));
        json_object_object_add(o, "error", e);
    }
    size_t len;
    const char *text = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    bool ok = ww_outputs_add(outs, topic, key, key_len, text, len) != NULL;
    json_object_put(o);
    return ok;
}

/* The original bytes to the dead-letter topic, with the wallet's headers
 * (and a re-drive's original source and count): one implementation. */
static bool add_dead_letter(ww_outputs_t *outs, const char *dlq_topic, const ww_msg_t *msg,
                            const char *reason, const char *detail) {
    return ww_outputs_dead_letter(outs, dlq_topic, msg, reason, detail) != NULL;
}

/* Best effort for an invalid message: eventId, type and code when each is
 * present and well-formed, so the producer can correlate the result. */
static void salvage(const ww_msg_t *msg, size_t max, char *event_id, char *type, char *code) {
    json_object *root = NULL, *v;
    ww_json_limits_t lim = {.max_bytes = max, .max_depth = 8};
    if (!msg->value || !ww_json_parse_object(msg->value, msg->value_len, &lim, &root, NULL))
        return;
    if (json_object_object_get_ex(root, "eventId", &v) &&
        !parse_ident(v, "eventId", CS_EVENT_ID, WW_INVITE_EVENT_ID_MAX, event_id, NULL))
        event_id[0] = '\0';
    if (json_object_object_get_ex(root, "code", &v) &&
        !parse_ident(v, "code", CS_CODE, WW_INVITE_CODE_MAX, code, NULL))
        code[0] = '\0';
    ww_invite_event_t ev;
    if (json_object_object_get_ex(root, "type", &v) && parse_type(v, &ev, NULL))
        snprintf(type, 32, "%s", TYPE_NAMES[ev.type]);
    json_object_put(root);
}

static bool answer(ww_invite_ctx_t *ctx, const ww_msg_t *msg, const ww_invite_event_t *ev,
                   const ww_invite_result_t *r, ww_outputs_t *outs, ww_error_t *error);

bool ww_invite_handle(void *vctx, const ww_msg_t *msg, ww_outputs_t *outs, ww_error_t *error) {
    ww_invite_ctx_t *ctx = vctx;
    ww_invite_event_t ev;
    ww_error_t perr;
    ww_error_clear(&perr);
    ww_json_limits_t lim = {.max_bytes = (size_t)ctx->max_message_bytes, .max_depth = 8};
    bool parsed = false;
    if (ww_message_precheck(msg, ctx->max_message_bytes, &perr)) {
        parsed = ww_invite_parse(msg->value, msg->value_len, &lim, &ev, &perr);
        if (!parsed && perr.domain != WW_ERR_INPUT) {
            if (error) *error = perr; /* out of memory: retry */
            return false;
        }
    }

    if (!parsed && ctx->dry_run) {
        /* the dead letter the real run would write, for apply --dry-run to report */
        if (!add_dead_letter(outs, ctx->dlq_topic, msg, ww_command_reason_name(perr.code),
                             perr.message))
            goto oom;
        outs->outcome = "invalid";
        return true;
    }
    if (!parsed) {
        const char *reason = ww_command_reason_name(perr.code);
        char event_id[WW_INVITE_EVENT_ID_MAX + 1] = "", type[32] = "",
             code[WW_INVITE_CODE_MAX + 1] = "";
        if (perr.code != WW_COMMAND_TOO_LARGE) salvage(msg, lim.max_bytes, event_id, type, code);
        const char *rkey = code[0] ? code : msg->key;
        size_t rkey_len = code[0] ? strlen(code) : msg->key_len;
        if (!add_dead_letter(outs, ctx->dlq_topic, msg, reason, perr.message) ||
            !add_result(outs, ctx->results_topic, rkey, rkey_len, event_id, type, code, "invalid",
                        WW_INVITE_NONE, reason, perr.message, msg))
            goto oom;
        ww_info("invite", "invalid", WW_STR("topic", msg->topic), WW_INT("partition", msg->partition),
                WW_INT("offset", msg->offset), WW_STR("reason", reason), WW_STR("detail", perr.message));
        ww_metrics_inc_dead_letter(msg->topic, reason);
        ww_metrics_inc_processed(msg->topic, "invalid");
        outs->outcome = "invalid";
        return true;
    }

    ww_invite_result_t r;
    if (ctx->dry_run) { /* one prediction engine: the batch's, over the run's overlay */
        ww_batch_item_t it;
        memset(&it, 0, sizeof it);
        it.msg = msg;
        ww_invite_handle_batch(ctx, &it, 1);
        if (it.status == WW_ITEM_DONE) {
            *outs = it.outs;
            return true;
        }
        ww_outputs_clear(&it.outs);
        if (error) *error = it.error;
        return false;
    }
    if (!ww_invite_apply(ctx->db, &ev, ww_clock_now_ms(), &r, error)) return false;
    return answer(ctx, msg, &ev, &r, outs, error);
oom:
    ww_outputs_clear(outs);
    ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory building outputs");
    return false;
}

/* The result event (and the dead letter of invite_not_found) of a decided event. */
static bool answer(ww_invite_ctx_t *ctx, const ww_msg_t *msg, const ww_invite_event_t *evp,
                   const ww_invite_result_t *rp, ww_outputs_t *outs, ww_error_t *error) {
    const ww_invite_event_t ev = *evp;
    const ww_invite_decision_t *d = &rp->decision;
    if (d->outcome == WW_INVITE_NOT_FOUND &&
        !add_dead_letter(outs, ctx->dlq_topic, msg, d->error_code, d->error_message))
        goto oom;
    if (!add_result(outs, ctx->results_topic, ev.code, strlen(ev.code), ev.event_id,
                    TYPE_NAMES[ev.type], ev.code, ww_invite_outcome_name(d->outcome), d->to,
                    d->error_code, d->error_message, msg))
        goto oom;
    if (d->outcome == WW_INVITE_NOT_FOUND) {
        ww_info("invite", "dead-letter", WW_STR("reason", "invite_not_found"), WW_STR("code", ev.code),
                WW_STR("eventId", ev.event_id), WW_STR("type", TYPE_NAMES[ev.type]),
                WW_INT("partition", msg->partition), WW_INT("offset", msg->offset));
        ww_metrics_inc_dead_letter(msg->topic, "invite_not_found");
    }
    ww_metrics_inc_processed(msg->topic, ww_invite_outcome_name(d->outcome));
    outs->outcome = d->outcome == WW_INVITE_NOT_FOUND ? "invite_not_found"
                                                     : ww_invite_outcome_name(d->outcome);
    ww_debug("invite", ww_invite_outcome_name(d->outcome), WW_STR("code", ev.code),
             WW_STR("eventId", ev.event_id), WW_STR("type", TYPE_NAMES[ev.type]),
             WW_STR("inviteStatus", d->to ? STATUS_NAMES[d->to] : "none"),
             WW_STR("error", d->error_code[0] ? d->error_code : "-"), WW_INT("partition", msg->partition),
             WW_INT("offset", msg->offset));
    return true;
oom:
    ww_outputs_clear(outs);
    ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory building outputs");
    return false;
}

/* ---- batches ------------------------------------------------------------------------------
 * A batch of events in rounds of at most three round trips: the invites of
 * every open event's code ($in), one unordered insertMany of the invites that
 * `created` events make, one unordered bulk of guarded transitions. The first
 * round does not read the codes whose first event is `created` (insert first:
 * see insert_first()) or a transition (update first: see update_first()). Each
 * event is decided by ww_invite_decide against the state read; per code, the
 * round stops at the first event that changes the state (the later ones
 * depend on whether that write stands, and are decided next round from a
 * fresh read). An event that changes nothing (duplicate, rejected,
 * not_found) is final at once: no write of its code is pending before it.
 * A write that did not stand (a duplicate code, a short bulk: someone moved
 * first) sends its event to the next round, as ww_invite_apply starts over. */

#define BATCH_STALLED_MAX 8

typedef struct {
    ww_invite_event_t ev;
    size_t item;
    bool open;
} ievent_t;

typedef struct {
    bson_t **v;
    size_t n, cap;
    bool over; /* out of memory: the read is incomplete */
} idocs_t;

static bool collect_invite(const bson_t *doc, void *vctx) {
    idocs_t *d = vctx;
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


static void retry_open(ww_batch_item_t *items, ievent_t *evs, size_t n, const ww_error_t *why) {
    for (size_t i = 0; i < n; i++)
        if (evs[i].open) {
            evs[i].open = false;
            items[evs[i].item].status = WW_ITEM_RETRY;
            items[evs[i].item].error = *why;
        }
}

static bool answer_event(ww_invite_ctx_t *ctx, ww_batch_item_t *items, ievent_t *e,
                         const ww_invite_result_t *r, size_t *answered, ww_error_t *err) {
    ww_batch_item_t *it = &items[e->item];
    if (!answer(ctx, it->msg, &e->ev, r, &it->outs, &it->error)) {
        *err = it->error;
        return false;
    }
    it->status = WW_ITEM_DONE;
    e->open = false;
    (*answered)++;
    return true;
}

/* True when the invite of ev's code read back records ev's eventId with its
 * fingerprint (and, write_id not NULL, written by write_id: this round's own
 * update first, not an earlier application): the transition that carried it
 * was written. */
static bool recorded(const idocs_t *back, const ww_invite_event_t *ev,
                     const bson_oid_t *write_id) {
    for (size_t i = 0; i < back->n; i++) {
        const char *code = doc_str(back->v[i], "code");
        bson_iter_t it, arr, f;
        if (!code || strcmp(code, ev->code) != 0) continue;
        if (!bson_iter_init_find(&it, back->v[i], SEEN) || !BSON_ITER_HOLDS_ARRAY(&it) ||
            !bson_iter_recurse(&it, &arr))
            continue;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &f)) continue;
            bool id = false, fp = false, by = write_id == NULL;
            while (bson_iter_next(&f)) {
                const char *k = bson_iter_key(&f);
                if (BSON_ITER_HOLDS_UTF8(&f) && strcmp(k, "eventId") == 0)
                    id = strcmp(bson_iter_utf8(&f, NULL), ev->event_id) == 0;
                else if (BSON_ITER_HOLDS_UTF8(&f) && strcmp(k, "fingerprint") == 0)
                    fp = strcmp(bson_iter_utf8(&f, NULL), ev->fingerprint) == 0;
                else if (write_id && BSON_ITER_HOLDS_OID(&f) && strcmp(k, "writeId") == 0)
                    by = bson_oid_equal(bson_iter_oid(&f), write_id);
            }
            if (id && fp && by) return true;
        }
    }
    return false;
}

/* The invites of codes ($in), into found. False on a read error (err set);
 * running out of memory is a retryable error. */
static bool read_invites(ww_invite_ctx_t *ctx, const char *const *codes, size_t n_codes,
                         idocs_t *found, ww_error_t *err) {
    if (n_codes == 0) return true;
    bson_t filter = BSON_INITIALIZER, cond, in, opts = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "code", &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);
    char idx[16];
    const char *ikey;
    for (size_t c = 0; c < n_codes; c++) {
        bson_uint32_to_string((uint32_t)c, &ikey, idx, sizeof idx);
        BSON_APPEND_UTF8(&in, ikey, codes[c]);
    }
    bson_append_array_end(&cond, &in);
    bson_append_document_end(&filter, &cond);
    BSON_APPEND_INT64(&opts, "batchSize", (int64_t)n_codes + 1);
    bool ok = ww_db_find(ctx->db, WW_INVITES, &filter, &opts, collect_invite, found, err);
    bson_destroy(&filter);
    bson_destroy(&opts);
    if (ok && found->over) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory reading a batch's invites");
        ok = false;
    }
    return ok;
}

/* The tests' hook before each bulk of transitions (invite.h). */
static ww_invite_batch_hook_fn test_hook;
static void *test_hook_ctx;

void ww_invite_batch_set_test_hook(ww_invite_batch_hook_fn fn, void *ctx) {
    test_hook = fn;
    test_hook_ctx = ctx;
}

/* Insert first: a round inserts the invite of a code whose first open event
 * is invite.created without reading the code first. A stored insert means no
 * invite had the code, which is what the read would have said (the decision
 * is `applied` either way); a duplicate code leaves the event open, and the
 * next round reads and decides it as before. The choice follows the share
 * of such codes that recent first rounds found taken, by the insert or by the
 * read when reading first (an estimate shared by the
 * process's workers, as wallet_batch.c's ledger_first(): a replay of
 * invite events, all taken, goes back to reading first; a wrong guess costs
 * a round trip, never a decision). */
static atomic_uint taken_permille; /* recent first inserts whose code was taken, per mille */

static bool insert_first(void) {
    return atomic_load_explicit(&taken_permille, memory_order_relaxed) <= 500;
}

static void note_taken(size_t taken, size_t tried) {
    if (tried == 0) return;
    unsigned now = (unsigned)(taken * 1000 / tried),
             old = atomic_load_explicit(&taken_permille, memory_order_relaxed);
    atomic_store_explicit(&taken_permille, (old + now) / 2, memory_order_relaxed);
}

/* Update first, likewise: the first round sends the transition of a code
 * whose first event is used / revoked / expired without reading the invite,
 * as an update whose filter holds exactly when ww_invite_decide would apply
 * it (blind_transition()); an update that did not match leaves its event
 * open for the next round's read. Follows the share of such transitions
 * that recent first rounds saw miss (by the bulk, or by the read when
 * reading first). */
static atomic_uint missed_permille; /* recent first transitions that did not apply, per mille */

static bool update_first(void) {
    return atomic_load_explicit(&missed_permille, memory_order_relaxed) <= 500;
}

static void note_missed(size_t missed, size_t tried) {
    if (tried == 0) return;
    unsigned now = (unsigned)(missed * 1000 / tried),
             old = atomic_load_explicit(&missed_permille, memory_order_relaxed);
    atomic_store_explicit(&missed_permille, (old + now) / 2, memory_order_relaxed);
}

void ww_invite_batch_set_test_estimates(bool insert_first_on, bool update_first_on) {
    atomic_store(&taken_permille, insert_first_on ? 0u : 1000u);
    atomic_store(&missed_permille, update_first_on ? 0u : 1000u);
}

/* One round. 0 ok, 1 retryable error, 2 another error (err set). *answered
 * counts finals. */
static int invite_round(ww_invite_ctx_t *ctx, ww_batch_item_t *items, ievent_t *evs, size_t n,
                        bool first_round, size_t *answered, ww_error_t *err) {
    int rc = 0;
    idocs_t found = {0};
    const char **codes = calloc(n + 1, sizeof *codes);
    const char **read_codes = calloc(n + 1, sizeof *read_codes);
    bool *unread = calloc(n + 1, sizeof *unread); /* per code: inserted without a read */
    bool *created_first = calloc(n + 1, sizeof *created_first); /* first round, first event created */
    bool *tx_first = calloc(n + 1, sizeof *tx_first); /* first round, first event a transition */
    bool *upd_blind = calloc(n + 1, sizeof *upd_blind); /* per update: of an unread invite */
    bool *counted = calloc(n + 1, sizeof *counted);     /* per code: in the estimate */
    ww_invite_result_t *res = calloc(n + 1, sizeof *res);
    int *write = calloc(n + 1, sizeof *write);  /* event -> insert (>= 0) or update (< -1: -2-i) */
    char *blocked = calloc(n + 1, 1);          /* per event: its code has a write pending */
    bson_t *ins = calloc(n + 1, sizeof *ins), *flt = calloc(n + 1, sizeof *flt),
           *upd = calloc(n + 1, sizeof *upd);
    const bson_t **insp = calloc(n + 1, sizeof *insp), **fp = calloc(n + 1, sizeof *fp),
                 **up = calloc(n + 1, sizeof *up);
    bool *dup = calloc(n + 1, sizeof *dup);
    size_t *code_of = calloc(n + 1, sizeof *code_of); /* event -> index in codes */
    size_t *stored = calloc(n + 1, sizeof *stored);   /* code -> index in found, or NONE */
    char *pending = calloc(n + 1, 1);                 /* per code: a write or a block is pending */
    ww_strmap_t by_code = {0};
    size_t n_codes = 0, n_ins = 0, n_upd = 0;
    if (!codes || !read_codes || !unread || !created_first || !tx_first || !upd_blind ||
        !counted || !res || !write || !blocked || !ins || !flt || !upd ||
        !insp || !fp || !up || !dup || !code_of || !stored || !pending ||
        !ww_strmap_init(&by_code, n)) {
        ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory deciding a batch");
        rc = 1;
        goto out;
    }
    bool blind = first_round && insert_first();     /* insert created codes unread */
    bool blind_tx = first_round && update_first();  /* transitions of unread invites */
    for (size_t i = 0; i < n; i++) {
        if (!evs[i].open) continue;
        code_of[i] = ww_strmap_put(&by_code, evs[i].ev.code, n_codes);
        if (code_of[i] == n_codes) {
            stored[n_codes] = WW_STRMAP_NONE;
            created_first[n_codes] = first_round && evs[i].ev.type == WW_INVITE_CREATED;
            tx_first[n_codes] = first_round && evs[i].ev.type != WW_INVITE_CREATED;
            unread[n_codes] = (blind && created_first[n_codes]) || (blind_tx && tx_first[n_codes]);
            codes[n_codes++] = evs[i].ev.code;
        }
    }
    /* 1. the invites (but those of the codes inserted unread) */
    {
        size_t n_read = 0;
        for (size_t c = 0; c < n_codes; c++)
            if (!unread[c]) read_codes[n_read++] = codes[c];
        bool ok = read_invites(ctx, read_codes, n_read, &found, err);
        if (!ok) {
            rc = 1;
            if (!err->retryable) {
                /* permanent read failure: every open event fails alone */
                for (size_t i = 0; i < n; i++)
                    if (evs[i].open) {
                        evs[i].open = false;
                        items[evs[i].item].status = WW_ITEM_FAILED;
                        items[evs[i].item].error = *err;
                    }
                rc = 0;
            }
            goto out;
        }
    }
    for (size_t d = 0; d < found.n; d++) { /* the first invite read of each code */
        const char *c = doc_str(found.v[d], "code");
        size_t ci = c ? ww_strmap_get(&by_code, c) : WW_STRMAP_NONE;
        if (ci != WW_STRMAP_NONE && stored[ci] == WW_STRMAP_NONE) stored[ci] = d;
    }
    if (first_round && !blind) { /* would inserting first have found them taken? */
        size_t tried = 0, taken = 0;
        for (size_t c = 0; c < n_codes; c++)
            if (created_first[c]) {
                tried++;
                taken += stored[c] != WW_STRMAP_NONE;
            }
        note_taken(taken, tried);
    }
    /* 2. decide, in order; the first state change of a code blocks the rest */
    int64_t now_ms = ww_clock_now_ms();
    bson_oid_t write_id; /* this round's updates first */
    bson_oid_init(&write_id, NULL);
    size_t tx_tried = 0, tx_missed = 0;
    for (size_t i = 0; i < n; i++) {
        write[i] = -1;
        if (!evs[i].open) continue;
        size_t ci = code_of[i];
        if (pending[ci]) {
            blocked[i] = 1;
            continue;
        }
        ievent_t *ev = &evs[i];
        if (unread[ci] && ev->ev.type != WW_INVITE_CREATED) { /* update first */
            ww_invite_decision_t *d = &res[i].decision;
            memset(d, 0, sizeof *d);
            d->outcome = WW_INVITE_APPLIED;
            d->from = WW_INVITE_ACTIVE;
            d->to = ev->ev.type == WW_INVITE_USED      ? WW_INVITE_STATUS_USED
                    : ev->ev.type == WW_INVITE_REVOKED ? WW_INVITE_STATUS_REVOKED
                                                       : WW_INVITE_STATUS_EXPIRED;
            blind_transition(&flt[n_upd], &upd[n_upd], &ev->ev, d->to, now_ms, &write_id);
            fp[n_upd] = &flt[n_upd];
            up[n_upd] = &upd[n_upd];
            upd_blind[n_upd] = true;
            write[i] = -2 - (int)n_upd++;
            goto next;
        }
        const bson_t *doc = stored[ci] == WW_STRMAP_NONE ? NULL : found.v[stored[ci]];
        ww_invite_state_t st;
        memset(&st, 0, sizeof st);
        ww_error_t serr;
        ww_error_clear(&serr);
        if (doc && !state_from_doc(doc, &st, res[i].invite_id, &serr)) {
            /* the stored invite is unusable: this event fails alone */
            ww_error_set(&items[ev->item].error, WW_ERR_DB, 0, false,
                         "invite %s: stored status is unusable", ev->ev.code);
            items[ev->item].status = WW_ITEM_FAILED;
            ev->open = false;
            blocked[i] = 1; /* not answered below; later events of the code go on, as one at a time */
            goto next;
        }
        res[i].has_invite_id = doc && res[i].invite_id[0];
        ww_invite_decide(&st, &ev->ev, &res[i].decision);
        if (tx_first[ci] && !counted[ci]) { /* reading first: would the update first apply? */
            counted[ci] = true;
            tx_tried++;
            tx_missed += !(res[i].decision.outcome == WW_INVITE_APPLIED &&
                           res[i].decision.from == WW_INVITE_ACTIVE);
        }
        if (res[i].decision.outcome != WW_INVITE_APPLIED) goto next; /* final, below */
        if (res[i].decision.from == WW_INVITE_NONE) {
            bson_oid_t id;
            bson_oid_init(&id, NULL);
            bson_oid_to_string(&id, res[i].invite_id);
            res[i].has_invite_id = true;
            build_invite(&ins[n_ins], &ev->ev, &id, now_ms);
            insp[n_ins] = &ins[n_ins];
            write[i] = (int)n_ins++;
        } else if (!res[i].has_invite_id) {
            ww_error_set(&items[ev->item].error, WW_ERR_DB, 0, false,
                         "invite %s has no ObjectId _id", ev->ev.code);
            items[ev->item].status = WW_ITEM_FAILED;
            ev->open = false;
            blocked[i] = 1;
        } else {
            build_transition(&flt[n_upd], &upd[n_upd], res[i].invite_id, &ev->ev,
                             res[i].decision.from, res[i].decision.to, now_ms);
            fp[n_upd] = &flt[n_upd];
            up[n_upd] = &upd[n_upd];
            write[i] = -2 - (int)n_upd++;
        }
    next:
        /* a later event of the code waits for this one's write */
        if (evs[i].open && (blocked[i] || write[i] != -1)) pending[ci] = 1;
    }
    /* 3. the inserts, and their answers (before the bulk: whatever happens to
     * it, an invite this round created is answered `applied`) */
    if (!ww_db_insert_many(ctx->db, WW_INVITES, insp, n_ins, dup, err)) {
        rc = err->retryable ? 1 : 2;
        goto out;
    }
    size_t tried = 0, taken = 0;
    for (size_t i = 0; i < n; i++) {
        if (!evs[i].open || blocked[i]) continue;
        if (write[i] >= 0 && unread[code_of[i]]) {
            tried++;
            taken += dup[write[i]]; /* left open: the next round reads and decides it */
        }
        if (write[i] >= 0 && !dup[write[i]] &&
            !answer_event(ctx, items, &evs[i], &res[i], answered, err)) {
            rc = 1;
            goto out;
        }
    }
    note_taken(taken, tried);
    /* 4. the transitions. The reply gives only the total matched: when it
     * is short, the touched invites are read back, and a transition is ours
     * when its invite records this eventId with this fingerprint (an eventId
     * is applied once). The others are decided again next round. */
    int64_t matched = 0;
    if (test_hook && n_upd) test_hook(test_hook_ctx);
    if (!ww_db_bulk_update_one(ctx->db, WW_INVITES, fp, up, n_upd, &matched, err)) {
        rc = err->retryable ? 1 : 2;
        goto out;
    }
    bool all_matched = matched == (int64_t)n_upd;
    idocs_t back = {0};
    if (!all_matched) {
        ww_metrics_inc_retry("invite_contention");
        bson_t filter = BSON_INITIALIZER, cond, in;
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "code", &cond);
        BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);
        char idx[16];
        const char *ikey;
        uint32_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (evs[i].open && write[i] <= -2) {
                bson_uint32_to_string(k++, &ikey, idx, sizeof idx);
                BSON_APPEND_UTF8(&in, ikey, evs[i].ev.code);
            }
        bson_append_array_end(&cond, &in);
        bson_append_document_end(&filter, &cond);
        bool ok = ww_db_find(ctx->db, WW_INVITES, &filter, NULL, collect_invite, &back, err);
        bson_destroy(&filter);
        if (ok && back.over) {
            ww_error_set(err, WW_ERR_SYSTEM, 0, true, "out of memory reading invites back");
            ok = false;
        }
        if (!ok) {
            for (size_t i = 0; i < back.n; i++) bson_destroy(back.v[i]);
            free(back.v);
            rc = err->retryable ? 1 : 2;
            goto out;
        }
    }
    /* 5. the answers that are final */
    for (size_t i = 0; i < n && rc == 0; i++) {
        ievent_t *e = &evs[i];
        if (!e->open || blocked[i] || write[i] >= 0) continue; /* inserts: answered or next round */
        if (write[i] <= -2 && !all_matched &&
            !recorded(&back, &e->ev, upd_blind[-2 - write[i]] ? &write_id : NULL)) {
            if (upd_blind[-2 - write[i]]) tx_missed++;
            continue; /* someone moved first, or update first missed: next round */
        }
        if (!answer_event(ctx, items, e, &res[i], answered, err)) rc = 1;
    }
    if (blind_tx) {
        size_t blind_upd = 0;
        for (size_t u = 0; u < n_upd; u++) blind_upd += upd_blind[u];
        note_missed(tx_missed, blind_upd);
    } else if (first_round) {
        note_missed(tx_missed, tx_tried);
    }
    for (size_t i = 0; i < back.n; i++) bson_destroy(back.v[i]);
    free(back.v);
out:
    for (size_t i = 0; i < found.n; i++) bson_destroy(found.v[i]);
    free(found.v);
    for (size_t i = 0; i < n_ins; i++) bson_destroy(&ins[i]);
    for (size_t i = 0; i < n_upd; i++) {
        bson_destroy(&flt[i]);
        bson_destroy(&upd[i]);
    }
    free(codes);
    free(read_codes);
    free(unread);
    free(created_first);
    free(tx_first);
    free(upd_blind);
    free(counted);
    free(res);
    free(write);
    free(blocked);
    free(ins);
    free(flt);
    free(upd);
    free(insp);
    free(fp);
    free(up);
    free(dup);
    free(code_of);
    free(stored);
    free(pending);
    ww_strmap_destroy(&by_code);
    return rc;
}

static void dry_invite_batch(ww_invite_ctx_t *ctx, ww_batch_item_t *items, ievent_t *evs,
                             size_t n);

void ww_invite_handle_batch(void *vctx, ww_batch_item_t *items, size_t n) {
    ww_invite_ctx_t *ctx = vctx;
    ievent_t *evs = calloc(n ? n : 1, sizeof *evs);
    if (!evs) {
        for (size_t i = 0; i < n; i++) {
            items[i].status = WW_ITEM_RETRY;
            ww_error_set(&items[i].error, WW_ERR_SYSTEM, 0, true, "out of memory");
        }
        return;
    }
    size_t m = 0;
    ww_json_limits_t lim = {.max_bytes = (size_t)ctx->max_message_bytes, .max_depth = 8};
    for (size_t i = 0; i < n; i++) {
        ww_batch_item_t *it = &items[i];
        ww_error_t perr;
        ww_error_clear(&perr);
        if (ww_message_precheck(it->msg, ctx->max_message_bytes, &perr) &&
            ww_invite_parse(it->msg->value, it->msg->value_len, &lim, &evs[m].ev, &perr)) {
            evs[m].item = i;
            evs[m].open = true;
            m++;
            continue;
        }
        /* invalid (answered by the one-message handler) or out of memory */
        if (perr.domain == WW_ERR_INPUT &&
            ww_invite_handle(ctx, it->msg, &it->outs, &it->error)) {
            it->status = WW_ITEM_DONE;
            continue;
        }
        for (size_t j = i; j < n; j++) {
            ww_outputs_clear(&items[j].outs);
            items[j].status = WW_ITEM_RETRY;
            ww_error_set(&items[j].error, WW_ERR_SYSTEM, 0, true, "out of memory");
        }
        break;
    }
    if (ctx->dry_run) {
        dry_invite_batch(ctx, items, evs, m);
        free(evs);
        return;
    }
    for (int stalled = 0, rounds = 0;;) {
        size_t open = 0;
        for (size_t i = 0; i < m; i++) open += evs[i].open;
        if (open == 0) break;
        ww_error_t err;
        ww_error_clear(&err);
        if (stalled == BATCH_STALLED_MAX) {
            ww_error_set(&err, WW_ERR_DB, 0, true, "invite events still undecided after %d "
                         "rounds: too much contention, will retry", BATCH_STALLED_MAX);
            retry_open(items, evs, m, &err);
            break;
        }
        size_t answered = 0;
        int rc = invite_round(ctx, items, evs, m, rounds++ == 0, &answered, &err);
        if (rc == 1) {
            retry_open(items, evs, m, &err);
            break;
        }
        if (rc == 2) {
            /* not infrastructure (a write error that is not a duplicate
             * key): one event at a time, so only the event at fault is
             * dead-lettered */
            ww_warn("invite", "batch: deciding the batch's open events one at a time",
                    WW_STR("error", err.message));
            ww_batch_item_t *sub = calloc(m ? m : 1, sizeof *sub);
            size_t k = 0;
            if (!sub) {
                ww_error_set(&err, WW_ERR_SYSTEM, 0, true, "out of memory");
                retry_open(items, evs, m, &err);
                break;
            }
            for (size_t i = 0; i < m; i++)
                if (evs[i].open) sub[k++].msg = items[evs[i].item].msg;
            ww_handle_each(ww_invite_handle, ctx, sub, k);
            k = 0;
            for (size_t i = 0; i < m; i++)
                if (evs[i].open) {
                    evs[i].open = false;
                    items[evs[i].item] = sub[k++];
                }
            free(sub);
            break;
        }
        stalled = answered ? 0 : stalled + 1;
    }
    free(evs);
}

/* ---- dry runs ------------------------------------------------------------------------------
 * The events in order, each decided by ww_invite_decide against the state a
 * real run would find: the stored invite (one $in read for the batch's
 * codes, before the lock), or the state this run's predictions left it in
 * ("I:" + code in ctx->dry, which wins). An applied event's change is
 * recorded there, as the insert or guarded transition would have written
 * it, so a `used` after its `created` in the same file (or a later batch,
 * or another worker) is predicted as the real run decides it. A full
 * overlay stops the predictions (not_predicted, with the reason). */

#define DRY_INVITE "I:"

static void dry_not_predicted(ww_invite_ctx_t *ctx, ww_batch_item_t *items, ievent_t *evs,
                              size_t n, const char *why) {
    for (size_t i = 0; i < n; i++) {
        if (!evs[i].open) continue;
        ww_batch_item_t *it = &items[evs[i].item];
        evs[i].open = false;
        ww_outputs_clear(&it->outs);
        if (!add_dead_letter(&it->outs, ctx->dlq_topic, it->msg, "not_predicted", why)) {
            it->status = WW_ITEM_RETRY;
            ww_error_set(&it->error, WW_ERR_SYSTEM, 0, true, "out of memory");
            continue;
        }
        it->outs.outcome = "not_predicted";
        it->status = WW_ITEM_DONE;
    }
}

/* The state after an applied decision, as the write would leave it. */
static void dry_record(ww_invite_state_t *st, const ww_invite_event_t *ev,
                       const ww_invite_decision_t *d) {
    if (d->from == WW_INVITE_NONE) {
        memset(st, 0, sizeof *st);
        memcpy(st->parent_code, ev->parent_code, sizeof st->parent_code);
        memcpy(st->role, ev->role, sizeof st->role);
        st->has_expires_at = true;
        st->expires_at_ms = ev->expires_at_ms;
        st->has_created_by = ev->has_created_by;
        memcpy(st->created_by_user_id, ev->created_by_user_id, sizeof st->created_by_user_id);
    }
    st->status = d->to;
    if (ev->type == WW_INVITE_USED) {
        st->has_used_by = true;
        memcpy(st->used_by_user_id, ev->used_by_user_id, sizeof st->used_by_user_id);
    }
    if (st->n_seen < WW_INVITE_EVENTS_MAX) {
        memcpy(st->seen[st->n_seen].event_id, ev->event_id, sizeof st->seen[0].event_id);
        memcpy(st->seen[st->n_seen].fingerprint, ev->fingerprint, sizeof st->seen[0].fingerprint);
        st->n_seen++;
    }
}

static void dry_invite_batch(ww_invite_ctx_t *ctx, ww_batch_item_t *items, ievent_t *evs,
                             size_t n) {
    ww_error_t err;
    ww_error_clear(&err);
    if (!ctx->dry) {
        dry_not_predicted(ctx, items, evs, n, "dry run without its prediction state (internal "
                          "error)");
        return;
    }
    idocs_t found = {0};
    const char **codes = calloc(n + 1, sizeof *codes);
    ww_strmap_t by_code; /* code -> the first invite read with it */
    memset(&by_code, 0, sizeof by_code);
    size_t n_codes = 0;
    if (!codes || !ww_strmap_init(&by_code, n)) {
        free(codes);
        ww_error_set(&err, WW_ERR_SYSTEM, 0, true, "out of memory");
        retry_open(items, evs, n, &err);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (evs[i].open && ww_strmap_put(&by_code, evs[i].ev.code, n_codes) == n_codes)
            codes[n_codes++] = evs[i].ev.code;
    bool ok = read_invites(ctx, codes, n_codes, &found, &err);
    free(codes);
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            if (evs[i].open && !err.retryable) { /* as a real run: each event fails alone */
                evs[i].open = false;
                items[evs[i].item].status = WW_ITEM_FAILED;
                items[evs[i].item].error = err;
            }
        retry_open(items, evs, n, &err);
        goto out;
    }
    /* the map now says code -> index in found (NONE: no invite) */
    ww_strmap_destroy(&by_code);
    if (!ww_strmap_init(&by_code, found.n)) {
        ww_error_set(&err, WW_ERR_SYSTEM, 0, true, "out of memory reading a batch's invites");
        retry_open(items, evs, n, &err);
        goto out;
    }
    for (size_t d = 0; d < found.n; d++) {
        const char *c = doc_str(found.v[d], "code");
        if (c) ww_strmap_put(&by_code, c, d);
    }
    ww_overlay_lock(ctx->dry);
    for (size_t i = 0; i < n; i++) {
        ievent_t *e = &evs[i];
        ww_batch_item_t *it = &items[e->item];
        if (!e->open) continue;
        if (ww_overlay_full(ctx->dry)) break;
        char key[8 + WW_INVITE_CODE_MAX + 1], id[25] = "";
        snprintf(key, sizeof key, DRY_INVITE "%s", e->ev.code);
        ww_invite_state_t st;
        memset(&st, 0, sizeof st);
        size_t len = 0;
        const void *known = ww_overlay_get(ctx->dry, key, &len);
        size_t at = ww_strmap_get(&by_code, e->ev.code);
        const bson_t *doc = at == WW_STRMAP_NONE ? NULL : found.v[at];
        if (known && len == sizeof st) {
            memcpy(&st, known, sizeof st);
        } else if (doc && !state_from_doc(doc, &st, id, &err)) {
            ww_error_set(&it->error, WW_ERR_DB, 0, false, "invite %s: stored status is unusable",
                         e->ev.code);
            it->status = WW_ITEM_FAILED;
            e->open = false;
            continue;
        }
        ww_invite_decision_t d;
        ww_invite_decide(&st, &e->ev, &d);
        if (d.outcome == WW_INVITE_APPLIED && d.from != WW_INVITE_NONE && !known && doc &&
            !id[0]) {
            /* as the real run: a stored invite without an ObjectId _id fails */
            ww_error_set(&it->error, WW_ERR_DB, 0, false, "invite %s has no ObjectId _id",
                         e->ev.code);
            it->status = WW_ITEM_FAILED;
            e->open = false;
            continue;
        }
        if (d.outcome == WW_INVITE_NOT_FOUND &&
            !add_dead_letter(&it->outs, ctx->dlq_topic, it->msg, d.error_code, d.error_message)) {
            it->status = WW_ITEM_RETRY; /* out of memory */
            ww_error_set(&it->error, WW_ERR_SYSTEM, 0, true, "out of memory");
            e->open = false;
            continue;
        }
        if (d.outcome == WW_INVITE_APPLIED) {
            if (!ww_overlay_reserve(ctx->dry, ww_overlay_cost(key, sizeof st))) break;
            dry_record(&st, &e->ev, &d);
            if (!ww_overlay_put(ctx->dry, key, &st, sizeof st)) break;
        }
        it->outs.outcome = d.outcome == WW_INVITE_NOT_FOUND ? "invite_not_found"
                                                           : ww_invite_outcome_name(d.outcome);
        it->status = WW_ITEM_DONE;
        e->open = false;
    }
    bool full = ww_overlay_full(ctx->dry);
    ww_overlay_unlock(ctx->dry);
    ww_strmap_destroy(&by_code);
    if (full) {
        char why[160];
        snprintf(why, sizeof why, "the dry run's memory for predicted writes is full (%zu bytes): "
                 "this and every later event are not predicted; dry-run a shorter range or file",
                 ww_overlay_max_bytes(ctx->dry));
        dry_not_predicted(ctx, items, evs, n, why);
    }
out:
    ww_strmap_destroy(&by_code);
    for (size_t i = 0; i < found.n; i++) bson_destroy(found.v[i]);
    free(found.v);
}
