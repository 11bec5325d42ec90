/* json.h: strict, bounded parsing of one JSON object from untrusted bytes.
 *
 * json-c builds the tree, but json-c alone is far too lenient for hostile input
 * (checked against json-c 0.16, even with JSON_TOKENER_STRICT|VALIDATE_UTF8):
 *   - duplicate keys are accepted silently, the last one wins;
 *   - integers outside int64 saturate silently (2^63 and 2^64+1 both read back
 *     as INT64_MAX via json_object_get_int64, -2^63-1 as INT64_MIN);
 *   - 'single quoted' strings, NaN, Infinity, -Infinity and "1." are accepted;
 *   - raw control characters inside strings are accepted;
 *   - its UTF-8 check lets overlong forms (C0 80), UTF-16 surrogates (ED A0 80)
 *     and code points above U+10FFFF (F4 90 80 80) through;
 *   - a lone surrogate escape ("\ud800") silently becomes U+FFFD;
 *   - "\u0000" yields an embedded NUL (a key "a\u0000b" is truncated to "a").
 *
 * DESIGN: so the bytes are checked by our own RFC 8259 validator first (strict
 * UTF-8 over the whole buffer, grammar, nesting depth, escapes, int64 range of
 * integer literals) and only then handed to json-c. Duplicate keys are found by
 * counting: the validator counts the members written in the text, and the tree
 * json-c built holds one member per distinct key, so fewer members in the tree
 * than in the text means a duplicate (this also catches "a" vs "\u0061"). Only
 * on that failure path is the text walked again to name the duplicated key.
 *
 * After a successful ww_json_parse_object() a caller may rely on: the value is
 * an object; every string and key is valid UTF-8 without NUL bytes (so
 * strlen() == json_object_get_string_len()); no object has duplicate keys;
 * every json_type_int fits int64 exactly (json_object_get_int64 is exact);
 * every json_type_double is finite; nesting depth <= limits->max_depth. */
#ifndef WW_JSON_H
#define WW_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct json_object;

#define WW_JSON_DEFAULT_MAX_BYTES (64u * 1024u)
#define WW_JSON_DEFAULT_MAX_DEPTH 8
#define WW_JSON_HARD_MAX_BYTES (16u * 1024u * 1024u) /* json-c takes an int length */
#define WW_JSON_HARD_MAX_DEPTH 64                    /* the validator recurses */

/* Reasons, reported in ww_error_t.code with domain WW_ERR_INPUT. */
typedef enum {
    WW_JSON_OK = 0,
    WW_JSON_TOO_LARGE = 1,        /* more than max_bytes */
    WW_JSON_INVALID = 2,          /* not RFC 8259 JSON, empty, truncated, trailing data */
    WW_JSON_INVALID_ENCODING = 3, /* bad UTF-8, BOM, NUL byte, "\u0000", lone surrogate */
    WW_JSON_TOO_DEEP = 4,         /* nesting deeper than max_depth */
    WW_JSON_NOT_AN_OBJECT = 5,    /* valid JSON, but the top level is not an object */
    WW_JSON_DUPLICATE_KEY = 6,    /* some object has the same key twice */
    WW_JSON_NUMBER_RANGE = 7      /* integer literal outside int64, or double overflow */
} ww_json_reason_t;

typedef struct {
    size_t max_bytes; /* 0: WW_JSON_DEFAULT_MAX_BYTES; capped at WW_JSON_HARD_MAX_BYTES */
    int max_depth;    /* <= 0: WW_JSON_DEFAULT_MAX_DEPTH; capped at WW_JSON_HARD_MAX_DEPTH.
                         The top-level object is depth 1, each nested object or
                         array adds one. */
} ww_json_limits_t;

/* Parses buf[0..len) (need not be NUL-terminated) as exactly one JSON object,
 * optionally surrounded by JSON whitespace. limits may be NULL (defaults).
 * On success *out is a new json-c object the caller owns (json_object_put()).
 * On failure *out is NULL and error (domain WW_ERR_INPUT, code a
 * ww_json_reason_t, not retryable) says why and where; messages never echo
 * more than 64 bytes of input. */
bool ww_json_parse_object(const char *buf, size_t len, const ww_json_limits_t *limits,
                          struct json_object **out, ww_error_t *error);

/* Stable snake_case name of a reason ("too_large", ...); "unknown" otherwise. */
const char *ww_json_reason_name(int reason);

/* Copies at most max_bytes of s[0..len) into out (size outlen) for use inside
 * an error or log message: printable ASCII is kept, '"' and '\\' are escaped,
 * every other byte becomes '?', and "..." marks truncation. Always
 * NUL-terminates when outlen > 0. */
void ww_json_echo(const char *s, size_t len, size_t max_bytes, char *out, size_t outlen);

#endif
