/* command.c: see command.h.
 *
 * DESIGN: json.c guarantees the JSON-level invariants (one object, no
 * duplicate keys, strict UTF-8 without NUL, exact int64 integers, bounded size
 * and depth). This file only maps a json-c tree onto ww_command_t, field by
 * field, in a fixed order (unknown fields first, then type, idempotencyKey,
 * ownerUserId, amountPaise, occurredAt, reference) so the reported reason does
 * not depend on the order of the fields in the message. The canonical writer
 * serves both the fingerprint (streamed into SHA-256, no buffer) and
 * ww_command_render_json(). */
#include "command.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sha256.h"

#define ECHO_BUF (3 * WW_COMMAND_ECHO_MAX + 8)

static const char *const KNOWN_FIELDS[] = {"type",        "idempotencyKey", "ownerUserId",
                                           "amountPaise", "occurredAt",     "reference"};

const char *ww_command_reason_name(int reason) {
    switch (reason) {
    case WW_COMMAND_OK: return "ok";
    case WW_COMMAND_TOO_LARGE: return "too_large";
    case WW_COMMAND_INVALID_JSON: return "invalid_json";
    case WW_COMMAND_INVALID_ENCODING: return "invalid_encoding";
    case WW_COMMAND_TOO_DEEP: return "too_deep";
    case WW_COMMAND_NOT_AN_OBJECT: return "not_an_object";
    case WW_COMMAND_DUPLICATE_FIELD: return "duplicate_field";
    case WW_COMMAND_MISSING_FIELD: return "missing_field";
    case WW_COMMAND_UNKNOWN_FIELD: return "unknown_field";
    case WW_COMMAND_WRONG_TYPE: return "wrong_type";
    case WW_COMMAND_INVALID_VALUE: return "invalid_value";
    default: return "unknown";
    }
}

const char *ww_command_type_name(ww_command_type_t type) {
    switch (type) {
    case WW_COMMAND_DEBIT: return "wallet.debit";
    case WW_COMMAND_CREDIT: return "wallet.credit";
    }
    return "unknown";
}

/* ---- errors ------------------------------------------------------------ */

static void echo(const char *s, size_t len, char *out) {
    ww_json_echo(s, len, WW_COMMAND_ECHO_MAX, out, ECHO_BUF);
}

/* "a string", "an object", ... for wrong_type messages. */
static const char *describe(struct json_object *v) {
    switch (json_object_get_type(v)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_int: return "an integer";
    case json_type_string: return "a string";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    case json_type_double: {
        /* json-c keeps the original text of a parsed double */
        const char *txt = json_object_get_string(v);
        if (txt && strchr(txt, '.')) return "a number with a fraction";
        if (txt && (strchr(txt, 'e') || strchr(txt, 'E'))) return "a number with an exponent";
        return "a non-integer number";
    }
    }
    return "an unknown value";
}

static bool wrong_type(ww_error_t *error, const char *field, const char *want,
                       struct json_object *v) {
    ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_WRONG_TYPE, false, "%s: must be %s, got %s",
                 field, want, describe(v));
    return false;
}

/* ---- fields ------------------------------------------------------------ */

static bool get_string(struct json_object *v, const char *field, const char **s, size_t *len,
                       ww_error_t *error) {
    if (!json_object_is_type(v, json_type_string)) return wrong_type(error, field, "a string", v);
    *s = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    return true;
}

static bool parse_type(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    char e[ECHO_BUF];
    if (!get_string(v, "type", &s, &len, error)) return false;
    if (len == strlen("wallet.debit") && memcmp(s, "wallet.debit", len) == 0) {
        cmd->type = WW_COMMAND_DEBIT;
        return true;
    }
    if (len == strlen("wallet.credit") && memcmp(s, "wallet.credit", len) == 0) {
        cmd->type = WW_COMMAND_CREDIT;
        return true;
    }
    echo(s, len, e);
    ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                 "type: must be \"wallet.debit\" or \"wallet.credit\", got \"%s\"", e);
    return false;
}

static bool key_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

static bool parse_idempotency_key(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, "idempotencyKey", &s, &len, error)) return false;
    if (len == 0 || len > WW_COMMAND_KEY_MAX) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "idempotencyKey: must be 1 to %d characters, got %zu bytes",
                     WW_COMMAND_KEY_MAX, len);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!key_char((unsigned char)s[i])) {
            char e[ECHO_BUF];
            echo(s, len, e);
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                         "idempotencyKey: byte %zu is not one of A-Z a-z 0-9 . _ : - in \"%s\"",
                         i, e);
            return false;
        }
    }
    memcpy(cmd->idempotency_key, s, len);
    cmd->idempotency_key[len] = '\0';
    return true;
}

static bool parse_owner(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, "ownerUserId", &s, &len, error)) return false;
    bool ok = len == WW_COMMAND_OWNER_LEN;
    for (size_t i = 0; ok && i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) ok = false;
        cmd->owner_user_id[i] = c;
    }
    if (!ok) {
        char e[ECHO_BUF];
        echo(s, len, e);
        memset(cmd->owner_user_id, 0, sizeof cmd->owner_user_id);
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "ownerUserId: must be %d hex digits, got \"%s\" (%zu bytes)",
                     WW_COMMAND_OWNER_LEN, e, len);
        return false;
    }
    cmd->owner_user_id[len] = '\0';
    return true;
}

static bool parse_amount(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    /* json.c guarantees json_type_int values fit int64 exactly. */
    if (!json_object_is_type(v, json_type_int))
        return wrong_type(error, "amountPaise", "an integer", v);
    int64_t a = json_object_get_int64(v);
    if (a < 1 || a > WW_COMMAND_AMOUNT_MAX) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "amountPaise: must be between 1 and %" PRId64 ", got %" PRId64,
                     WW_COMMAND_AMOUNT_MAX, a);
        return false;
    }
    cmd->amount_paise = a;
    return true;
}

static bool parse_occurred_at(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    const char *s = NULL;
    size_t len = 0;
    if (!get_string(v, "occurredAt", &s, &len, error)) return false;
    if (!ww_clock_parse_rfc3339(s, len, &cmd->occurred_at_ms)) {
        char e[ECHO_BUF];
        echo(s, len, e);
        cmd->occurred_at_ms = 0;
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "occurredAt: must be an RFC 3339 date-time such as "
                     "2026-01-31T12:00:00Z, got \"%s\"",
                     e);
        return false;
    }
    cmd->has_occurred_at = true;
    return true;
}

static bool ref_key_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static bool check_ref_key(const char *k, size_t len, ww_error_t *error) {
    char e[ECHO_BUF];
    echo(k, len, e);
    if (len == 0 || len > WW_COMMAND_REF_KEY_MAX) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "reference: key \"%s\" must be 1 to %d characters, got %zu bytes", e,
                     WW_COMMAND_REF_KEY_MAX, len);
        return false;
    }
    /* The keys are stored as field names of the ledger entry's and the
     * markers' "reference" subdocument: a '.' would make a path of them (and
     * Mongoose and $set treat it so), a '$' an operator. Named apart from the
     * character class below so the reason is clear. */
    if (memchr(k, '.', len) || memchr(k, '$', len)) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "reference: key \"%s\" must not contain '.' or '$' (a reference key "
                     "becomes a stored field name)", e);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!ref_key_char((unsigned char)k[i])) {
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                         "reference: key \"%s\": byte %zu is not one of A-Z a-z 0-9 _ -", e,
                         i);
            return false;
        }
    }
    return true;
}

static int ref_cmp(const void *a, const void *b) {
    return strcmp(((const ww_command_ref_t *)a)->key, ((const ww_command_ref_t *)b)->key);
}

static bool parse_reference(struct json_object *v, ww_command_t *cmd, ww_error_t *error) {
    if (!json_object_is_type(v, json_type_object))
        return wrong_type(error, "reference", "an object", v);
    int n = json_object_object_length(v);
    if (n > WW_COMMAND_REF_MAX) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                     "reference: must have at most %d members, got %d", WW_COMMAND_REF_MAX, n);
        return false;
    }
    size_t count = 0;
    json_object_object_foreach(v, key, val) {
        size_t klen = strlen(key); /* json.c: keys hold no NUL */
        if (!check_ref_key(key, klen, error)) return false;
        ww_command_ref_t *r = &cmd->reference[count];
        char field[sizeof "reference." + WW_COMMAND_REF_KEY_MAX];
        snprintf(field, sizeof field, "reference.%s", key);
        switch (json_object_get_type(val)) {
        case json_type_string: {
            size_t slen = (size_t)json_object_get_string_len(val);
            if (slen > WW_COMMAND_REF_STR_MAX) {
                ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_VALUE, false,
                             "%s: string must be at most %d bytes, got %zu", field,
                             WW_COMMAND_REF_STR_MAX, slen);
                return false;
            }
            r->kind = WW_COMMAND_REF_STRING;
            memcpy(r->str, json_object_get_string(val), slen);
            r->str[slen] = '\0';
            r->str_len = slen;
            break;
        }
        case json_type_int:
            r->kind = WW_COMMAND_REF_INT;
            r->i = json_object_get_int64(val);
            break;
        case json_type_boolean:
            r->kind = WW_COMMAND_REF_BOOL;
            r->b = json_object_get_boolean(val) != 0;
            break;
        default:
            return wrong_type(error, field, "a string, an integer or a boolean", val);
        }
        memcpy(r->key, key, klen + 1);
        count++;
    }
    qsort(cmd->reference, count, sizeof cmd->reference[0], ref_cmp);
    cmd->reference_count = count;
    cmd->has_reference = true;
    return true;
}

/* ---- canonical writer --------------------------------------------------- */

typedef struct {
    char *buf; /* NULL when only hashing */
    size_t cap;
    size_t len;
    bool overflow;
    ww_sha256_t *hash;
} writer_t;

static void w_raw(writer_t *w, const char *s, size_t n) {
    if (w->hash) ww_sha256_update(w->hash, s, n);
    if (!w->buf || w->overflow) return;
    if (n >= w->cap - w->len) { /* keep a byte for the NUL */
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void w_lit(writer_t *w, const char *s) { w_raw(w, s, strlen(s)); }

/* RFC 8785 string escaping. */
static void w_str(writer_t *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    w_raw(w, "\"", 1);
    size_t run = 0; /* start of the current verbatim run */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            if (c >= 0x20) continue;
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        w_raw(w, s + run, i - run);
        w_raw(w, esc, elen);
        run = i + 1;
    }
    w_raw(w, s + run, n - run);
    w_raw(w, "\"", 1);
}

static void w_int(writer_t *w, int64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    if (n > 0) w_raw(w, tmp, (size_t)n);
}

static void w_reference(writer_t *w, const ww_command_t *cmd) {
    w_lit(w, "\"reference\":{");
    size_t n = cmd->reference_count < WW_COMMAND_REF_MAX ? cmd->reference_count
                                                         : WW_COMMAND_REF_MAX;
    for (size_t i = 0; i < n; i++) {
        const ww_command_ref_t *r = &cmd->reference[i];
        if (i) w_lit(w, ",");
        w_str(w, r->key, strnlen(r->key, sizeof r->key));
        w_lit(w, ":");
        switch (r->kind) {
        case WW_COMMAND_REF_STRING:
            w_str(w, r->str, r->str_len <= WW_COMMAND_REF_STR_MAX ? r->str_len : 0);
            break;
        case WW_COMMAND_REF_INT: w_int(w, r->i); break;
        case WW_COMMAND_REF_BOOL: w_lit(w, r->b ? "true" : "false"); break;
        default: w_lit(w, "null"); break; /* not produced by the parser */
        }
    }
    w_lit(w, "},");
}

/* full: the render form; otherwise the fingerprint form (see command.h). */
static void w_command(writer_t *w, const ww_command_t *cmd, bool full) {
    w_lit(w, "{\"amountPaise\":");
    w_int(w, cmd->amount_paise);
    w_lit(w, ",");
    if (full) {
        w_lit(w, "\"idempotencyKey\":");
        w_str(w, cmd->idempotency_key, strnlen(cmd->idempotency_key, sizeof cmd->idempotency_key));
        w_lit(w, ",");
        if (cmd->has_occurred_at) {
            char ts[32];
            ww_clock_format_iso8601(cmd->occurred_at_ms, ts, sizeof ts);
            w_lit(w, "\"occurredAt\":");
            w_str(w, ts, strlen(ts));
            w_lit(w, ",");
        }
    }
    w_lit(w, "\"ownerUserId\":");
    w_str(w, cmd->owner_user_id, strnlen(cmd->owner_user_id, sizeof cmd->owner_user_id));
    w_lit(w, ",");
    if (!full || cmd->has_reference) w_reference(w, cmd);
    w_lit(w, "\"type\":");
    w_lit(w, cmd->type == WW_COMMAND_CREDIT ? "\"wallet.credit\"" : "\"wallet.debit\"");
    w_lit(w, "}");
}

void ww_command_compute_fingerprint(ww_command_t *cmd) {
    static const char hex[] = "0123456789abcdef";
    ww_sha256_t h;
    uint8_t d[WW_SHA256_DIGEST_LEN];
    writer_t w = {.hash = &h};
    ww_sha256_init(&h);
    w_command(&w, cmd, false);
    ww_sha256_final(&h, d);
    for (int i = 0; i < WW_SHA256_DIGEST_LEN; i++) {
        cmd->fingerprint[2 * i] = hex[d[i] >> 4];
        cmd->fingerprint[2 * i + 1] = hex[d[i] & 15];
    }
    cmd->fingerprint[64] = '\0';
}

bool ww_command_render_json(const ww_command_t *cmd, char *out, size_t outlen,
                            size_t *written, ww_error_t *error) {
    if (written) *written = 0;
    if (!cmd || !out || outlen == 0) {
        ww_error_set(error, WW_ERR_INTERNAL, 0, false, "ww_command_render_json: bad arguments");
        return false;
    }
    writer_t w = {.buf = out, .cap = outlen};
    w_command(&w, cmd, true);
    if (w.overflow) {
        out[0] = '\0';
        ww_error_set(error, WW_ERR_INTERNAL, 0, false,
                     "ww_command_render_json: a buffer of %zu bytes is too small", outlen);
        return false;
    }
    out[w.len] = '\0';
    if (written) *written = w.len;
    return true;
}

/* ---- parse -------------------------------------------------------------- */

bool ww_command_parse(const char *buf, size_t len, const ww_json_limits_t *limits,
                      ww_command_t *out, ww_error_t *error) {
    bool ok = false;
    struct json_object *root = NULL;
    struct json_object *v;
    if (!out) {
        ww_error_set(error, WW_ERR_INTERNAL, 0, false, "ww_command_parse: out is NULL");
        return false;
    }
    memset(out, 0, sizeof *out);
    if (!ww_json_parse_object(buf, len, limits, &root, error)) {
        /* Out-of-range numbers are a bad value of some field, not a JSON
         * problem; json.c's message already names the field. */
        if (error && error->domain == WW_ERR_INPUT && error->code == WW_JSON_NUMBER_RANGE)
            error->code = WW_COMMAND_INVALID_VALUE;
        goto done;
    }

    json_object_object_foreach(root, key, val) {
        (void)val;
        bool known = false;
        for (size_t i = 0; i < sizeof KNOWN_FIELDS / sizeof KNOWN_FIELDS[0]; i++)
            if (strcmp(key, KNOWN_FIELDS[i]) == 0) known = true;
        if (!known) {
            char e[ECHO_BUF];
            echo(key, strlen(key), e);
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_UNKNOWN_FIELD, false,
                         "unknown field \"%s\"", e);
            goto done;
        }
    }

    static const char *const REQUIRED[] = {"type", "idempotencyKey", "ownerUserId",
                                           "amountPaise"};
    for (size_t i = 0; i < sizeof REQUIRED / sizeof REQUIRED[0]; i++) {
        if (!json_object_object_get_ex(root, REQUIRED[i], NULL)) {
            ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_MISSING_FIELD, false,
                         "missing field \"%s\"", REQUIRED[i]);
            goto done;
        }
    }
    json_object_object_get_ex(root, "type", &v);
    if (!parse_type(v, out, error)) goto done;
    json_object_object_get_ex(root, "idempotencyKey", &v);
    if (!parse_idempotency_key(v, out, error)) goto done;
    json_object_object_get_ex(root, "ownerUserId", &v);
    if (!parse_owner(v, out, error)) goto done;
    json_object_object_get_ex(root, "amountPaise", &v);
    if (!parse_amount(v, out, error)) goto done;
    if (json_object_object_get_ex(root, "occurredAt", &v) && !parse_occurred_at(v, out, error))
        goto done;
    if (json_object_object_get_ex(root, "reference", &v) && !parse_reference(v, out, error))
        goto done;

    ww_command_compute_fingerprint(out);
    ok = true;
done:
    if (!ok) memset(out, 0, sizeof *out);
    json_object_put(root);
    return ok;
}
