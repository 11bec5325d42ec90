/* json.c: see json.h for the contract and why json-c is not trusted alone.
 *
 * DESIGN: four passes over at most max_bytes, each O(n):
 *   1. bytes:   size, BOM, NUL bytes, strict UTF-8 (RFC 3629);
 *   2. grammar: a recursive-descent RFC 8259 validator (depth-bounded, so the
 *               recursion is bounded too) that also counts object members and
 *               notes the first integer literal outside int64;
 *   3. json-c:  builds the tree from bytes already known to be good;
 *   4. tree:    sums members per object (duplicate check), rejects non-finite
 *               doubles.
 * A failure in pass 3 after pass 2 succeeded would mean the two disagree; it is
 * reported as invalid_json with a message starting "json-c", which the fuzz
 * target treats as a bug. */
#include "json.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define ECHO_MAX 64
#define PATH_MAX_LEN 160

typedef struct {
    const unsigned char *p;
    size_t len;
    size_t pos;
    int max_depth;
    size_t members;      /* ':' seen outside strings == object members in the text */
    /* raw key (no quotes) of the current member at each depth; NULL inside arrays */
    const unsigned char *key[WW_JSON_HARD_MAX_DEPTH + 1];
    size_t key_len[WW_JSON_HARD_MAX_DEPTH + 1];
    bool range_found;    /* first integer literal outside int64, reported later */
    size_t range_pos;
    size_t range_len;
    char range_path[PATH_MAX_LEN];
    bool find_dup;       /* second pass: name the duplicated key */
    ww_error_t *error;
} scanner_t;

const char *ww_json_reason_name(int reason) {
    switch (reason) {
    case WW_JSON_OK: return "ok";
    case WW_JSON_TOO_LARGE: return "too_large";
    case WW_JSON_INVALID: return "invalid_json";
    case WW_JSON_INVALID_ENCODING: return "invalid_encoding";
    case WW_JSON_TOO_DEEP: return "too_deep";
    case WW_JSON_NOT_AN_OBJECT: return "not_an_object";
    case WW_JSON_DUPLICATE_KEY: return "duplicate_field";
    case WW_JSON_NUMBER_RANGE: return "number_out_of_range";
    default: return "unknown";
    }
}

void ww_json_echo(const char *s, size_t len, size_t max_bytes, char *out, size_t outlen) {
    if (!out || outlen == 0) return;
    size_t o = 0;
    size_t i = 0;
    for (; s && i < len && i < max_bytes; i++) {
        unsigned char c = (unsigned char)s[i];
        bool esc = c == '"' || c == '\\';
        size_t need = esc ? 2 : 1;
        if (o + need + 1 > outlen) break;
        if (esc) out[o++] = '\\';
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (s && i < len && o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* "reference.n", "items[]": where a value sits, for messages (bounded). */
static void path_push(char *path, size_t cap, const char *key, size_t key_len) {
    size_t used = strlen(path);
    if (used + 1 >= cap) return;
    if (!key) {
        snprintf(path + used, cap - used, "[]");
        return;
    }
    if (used > 0) {
        path[used++] = '.';
        path[used] = '\0';
    }
    ww_json_echo(key, key_len, ECHO_MAX, path + used, cap - used);
}

static void fail(scanner_t *sc, int reason, const char *what) {
    ww_error_set(sc->error, WW_ERR_INPUT, reason, false, "invalid JSON at byte %zu: %s", sc->pos,
                 what);
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF, and
 * no NUL (a C string downstream would be cut short). */
static bool check_bytes(const unsigned char *s, size_t len, ww_error_t *error) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == 0) {
            ww_error_set(error, WW_ERR_INPUT, WW_JSON_INVALID_ENCODING, false,
                         "NUL byte at byte %zu", i);
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            goto bad;
        }
        if (len - i <= n) goto bad;
        if (s[i + 1] < lo || s[i + 1] > hi) goto bad;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) goto bad;
        i += n + 1;
        continue;
    bad:
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_INVALID_ENCODING, false,
                     "invalid UTF-8 at byte %zu", i);
        return false;
    }
    return true;
}

static bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void skip_ws(scanner_t *sc) {
    while (sc->pos < sc->len && is_ws(sc->p[sc->pos])) sc->pos++;
}

static bool at(const scanner_t *sc, unsigned char c) {
    return sc->pos < sc->len && sc->p[sc->pos] == c;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u" at sc->pos (pointing at 'u'). */
static bool read_u_escape(scanner_t *sc, unsigned *cp) {
    if (sc->len - sc->pos < 5) {
        fail(sc, WW_JSON_INVALID, "truncated \\u escape");
        return false;
    }
    unsigned v = 0;
    for (size_t k = 1; k <= 4; k++) {
        int h = hexval(sc->p[sc->pos + k]);
        if (h < 0) {
            fail(sc, WW_JSON_INVALID, "bad hex digit in \\u escape");
            return false;
        }
        v = v * 16 + (unsigned)h;
    }
    sc->pos += 5;
    *cp = v;
    return true;
}

/* sc->pos at the opening quote; on success *start and *end delimit the raw
 * contents (without quotes) and sc->pos is past the closing quote. */
static bool scan_string(scanner_t *sc, size_t *start, size_t *end) {
    sc->pos++;
    *start = sc->pos;
    for (;;) {
        if (sc->pos >= sc->len) {
            fail(sc, WW_JSON_INVALID, "unterminated string");
            return false;
        }
        unsigned char c = sc->p[sc->pos];
        if (c == '"') {
            *end = sc->pos;
            sc->pos++;
            return true;
        }
        if (c < 0x20) {
            fail(sc, WW_JSON_INVALID, "raw control character in string");
            return false;
        }
        if (c != '\\') {
            sc->pos++; /* UTF-8 was checked for the whole buffer already */
            continue;
        }
        sc->pos++;
        if (sc->pos >= sc->len) {
            fail(sc, WW_JSON_INVALID, "unterminated string");
            return false;
        }
        c = sc->p[sc->pos];
        if (strchr("\"\\/bfnrt", c) && c != '\0') {
            sc->pos++;
            continue;
        }
        if (c != 'u') {
            fail(sc, WW_JSON_INVALID, "bad escape in string");
            return false;
        }
        unsigned cp;
        if (!read_u_escape(sc, &cp)) return false;
        if (cp == 0) {
            sc->pos -= 6;
            fail(sc, WW_JSON_INVALID_ENCODING, "\\u0000 is not allowed in strings");
            return false;
        }
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            sc->pos -= 6;
            fail(sc, WW_JSON_INVALID_ENCODING, "unpaired low surrogate escape");
            return false;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (sc->len - sc->pos < 2 || sc->p[sc->pos] != '\\' || sc->p[sc->pos + 1] != 'u') {
                fail(sc, WW_JSON_INVALID_ENCODING, "unpaired high surrogate escape");
                return false;
            }
            sc->pos++;
            if (!read_u_escape(sc, &lo)) return false;
            if (lo < 0xdc00 || lo > 0xdfff) {
                sc->pos -= 6;
                fail(sc, WW_JSON_INVALID_ENCODING, "unpaired high surrogate escape");
                return false;
            }
        }
    }
}

static bool scan_digits(scanner_t *sc) {
    size_t start = sc->pos;
    while (sc->pos < sc->len && sc->p[sc->pos] >= '0' && sc->p[sc->pos] <= '9') sc->pos++;
    if (sc->pos == start) {
        fail(sc, WW_JSON_INVALID, "digit expected");
        return false;
    }
    return true;
}

static bool scan_number(scanner_t *sc, int depth) {
    size_t start = sc->pos;
    bool neg = false;
    if (at(sc, '-')) {
        neg = true;
        sc->pos++;
    }
    size_t int_start = sc->pos;
    if (at(sc, '0')) {
        sc->pos++;
    } else if (sc->pos < sc->len && sc->p[sc->pos] >= '1' && sc->p[sc->pos] <= '9') {
        scan_digits(sc);
    } else {
        fail(sc, WW_JSON_INVALID, "digit expected");
        return false;
    }
    size_t ndigits = sc->pos - int_start;
    bool integral = true;
    if (at(sc, '.')) {
        integral = false;
        sc->pos++;
        if (!scan_digits(sc)) return false;
    }
    if (at(sc, 'e') || at(sc, 'E')) {
        integral = false;
        sc->pos++;
        if (at(sc, '+') || at(sc, '-')) sc->pos++;
        if (!scan_digits(sc)) return false;
    }
    if (integral && !sc->range_found) {
        /* json-c saturates out-of-range integers silently: catch them here. */
        static const char max_pos[] = "9223372036854775807";
        static const char max_neg[] = "9223372036854775808";
        bool over = ndigits > 19 ||
                    (ndigits == 19 &&
                     memcmp(sc->p + int_start, neg ? max_neg : max_pos, 19) > 0);
        if (over) {
            sc->range_found = true;
            sc->range_pos = start;
            sc->range_len = sc->pos - start;
            sc->range_path[0] = '\0';
            for (int d = 1; d <= depth; d++)
                path_push(sc->range_path, sizeof sc->range_path, (const char *)sc->key[d],
                          sc->key_len[d]);
        }
    }
    return true;
}

static bool scan_literal(scanner_t *sc, const char *word) {
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->p + sc->pos, word, n) != 0) {
        fail(sc, WW_JSON_INVALID, "unexpected character");
        return false;
    }
    sc->pos += n;
    return true;
}

static bool scan_value(scanner_t *sc, int depth);

/* Second pass only: decodes a raw key with json-c (escapes included) and
 * reports it if seen already holds it. */
static bool note_key(scanner_t *sc, struct json_object *seen, size_t start, size_t end) {
    bool ok = false;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *str = NULL;
    if (!tok) goto oom;
    /* the raw key with its quotes: a complete JSON string */
    str = json_tokener_parse_ex(tok, (const char *)sc->p + start - 1, (int)(end - start + 2));
    if (!str || !json_object_is_type(str, json_type_string)) goto oom;
    const char *key = json_object_get_string(str);
    if (json_object_object_get_ex(seen, key, NULL)) {
        char echo[3 * ECHO_MAX];
        ww_json_echo(key, (size_t)json_object_get_string_len(str), ECHO_MAX, echo, sizeof echo);
        ww_error_set(sc->error, WW_ERR_INPUT, WW_JSON_DUPLICATE_KEY, false,
                     "duplicate field \"%s\" at byte %zu", echo, start - 1);
        goto done;
    }
    if (json_object_object_add(seen, key, NULL) != 0) goto oom;
    ok = true;
    goto done;
oom:
    ww_error_set(sc->error, WW_ERR_SYSTEM, 0, true, "out of memory checking duplicate keys");
done:
    json_object_put(str);
    json_tokener_free(tok);
    return ok;
}

static bool scan_object(scanner_t *sc, int depth) {
    bool ok = false;
    struct json_object *seen = NULL;
    if (depth > sc->max_depth) {
        ww_error_set(sc->error, WW_ERR_INPUT, WW_JSON_TOO_DEEP, false,
                     "nesting deeper than %d at byte %zu", sc->max_depth, sc->pos);
        goto done;
    }
    if (sc->find_dup && !(seen = json_object_new_object())) {
        ww_error_set(sc->error, WW_ERR_SYSTEM, 0, true, "out of memory checking duplicate keys");
        goto done;
    }
    sc->pos++;
    skip_ws(sc);
    if (at(sc, '}')) {
        sc->pos++;
        ok = true;
        goto done;
    }
    for (;;) {
        size_t ks, ke;
        if (!at(sc, '"')) {
            fail(sc, WW_JSON_INVALID, sc->pos >= sc->len ? "unexpected end of input"
                                                          : "quoted key expected");
            goto done;
        }
        if (!scan_string(sc, &ks, &ke)) goto done;
        if (seen && !note_key(sc, seen, ks, ke)) goto done;
        skip_ws(sc);
        if (!at(sc, ':')) {
            fail(sc, WW_JSON_INVALID, "':' expected after key");
            goto done;
        }
        sc->pos++;
        sc->members++;
        sc->key[depth] = sc->p + ks;
        sc->key_len[depth] = ke - ks;
        skip_ws(sc);
        if (!scan_value(sc, depth)) goto done;
        skip_ws(sc);
        if (at(sc, ',')) {
            sc->pos++;
            skip_ws(sc);
            continue;
        }
        if (at(sc, '}')) {
            sc->pos++;
            ok = true;
            goto done;
        }
        fail(sc, WW_JSON_INVALID, sc->pos >= sc->len ? "unexpected end of input"
                                                      : "',' or '}' expected");
        goto done;
    }
done:
    json_object_put(seen);
    return ok;
}

static bool scan_array(scanner_t *sc, int depth) {
    if (depth > sc->max_depth) {
        ww_error_set(sc->error, WW_ERR_INPUT, WW_JSON_TOO_DEEP, false,
                     "nesting deeper than %d at byte %zu", sc->max_depth, sc->pos);
        return false;
    }
    sc->key[depth] = NULL;
    sc->pos++;
    skip_ws(sc);
    if (at(sc, ']')) {
        sc->pos++;
        return true;
    }
    for (;;) {
        if (!scan_value(sc, depth)) return false;
        skip_ws(sc);
        if (at(sc, ',')) {
            sc->pos++;
            skip_ws(sc);
            continue;
        }
        if (at(sc, ']')) {
            sc->pos++;
            return true;
        }
        fail(sc, WW_JSON_INVALID, sc->pos >= sc->len ? "unexpected end of input"
                                                      : "',' or ']' expected");
        return false;
    }
}

/* depth: nesting of the container holding this value (0 at top level). */
static bool scan_value(scanner_t *sc, int depth) {
    if (sc->pos >= sc->len) {
        fail(sc, WW_JSON_INVALID, "unexpected end of input");
        return false;
    }
    size_t s, e;
    switch (sc->p[sc->pos]) {
    case '{': return scan_object(sc, depth + 1);
    case '[': return scan_array(sc, depth + 1);
    case '"': return scan_string(sc, &s, &e);
    case 't': return scan_literal(sc, "true");
    case 'f': return scan_literal(sc, "false");
    case 'n': return scan_literal(sc, "null");
    default:
        if (sc->p[sc->pos] == '-' || (sc->p[sc->pos] >= '0' && sc->p[sc->pos] <= '9'))
            return scan_number(sc, depth);
        fail(sc, WW_JSON_INVALID, "unexpected character");
        return false;
    }
}

/* Sums the members of every object in the tree; false on a non-finite double. */
/* Sums the members of every object in the tree; false on a non-finite double.
 * path (PATH_MAX_LEN bytes) holds where o sits, for the message. */
static bool walk_tree(struct json_object *o, int depth, char *path, size_t *members,
                      ww_error_t *error) {
    size_t mark = strlen(path);
    bool ok = true;
    if (depth > WW_JSON_HARD_MAX_DEPTH + 1) return true; /* cannot happen: validated */
    switch (json_object_get_type(o)) {
    case json_type_object: {
        *members += (size_t)json_object_object_length(o);
        json_object_object_foreach(o, k, v) {
            path_push(path, PATH_MAX_LEN, k, strlen(k));
            ok = walk_tree(v, depth + 1, path, members, error);
            path[mark] = '\0';
            if (!ok) break;
        }
        break;
    }
    case json_type_array: {
        size_t n = json_object_array_length(o);
        path_push(path, PATH_MAX_LEN, NULL, 0);
        for (size_t i = 0; ok && i < n; i++)
            ok = walk_tree(json_object_array_get_idx(o, i), depth + 1, path, members, error);
        path[mark] = '\0';
        break;
    }
    case json_type_double:
        if (!isfinite(json_object_get_double(o))) {
            char echo[3 * ECHO_MAX];
            const char *txt = json_object_get_string(o);
            ww_json_echo(txt, txt ? strlen(txt) : 0, ECHO_MAX, echo, sizeof echo);
            ww_error_set(error, WW_ERR_INPUT, WW_JSON_NUMBER_RANGE, false,
                         "%s: number %s is outside the range of a double", path, echo);
            ok = false;
        }
        break;
    default: break;
    }
    return ok;
}

bool ww_json_parse_object(const char *buf, size_t len, const ww_json_limits_t *limits,
                          struct json_object **out, ww_error_t *error) {
    bool ok = false;
    struct json_tokener *tok = NULL;
    struct json_object *root = NULL;
    size_t max_bytes = limits && limits->max_bytes ? limits->max_bytes : WW_JSON_DEFAULT_MAX_BYTES;
    int max_depth = limits && limits->max_depth > 0 ? limits->max_depth : WW_JSON_DEFAULT_MAX_DEPTH;
    if (max_bytes > WW_JSON_HARD_MAX_BYTES) max_bytes = WW_JSON_HARD_MAX_BYTES;
    if (max_depth > WW_JSON_HARD_MAX_DEPTH) max_depth = WW_JSON_HARD_MAX_DEPTH;
    if (out) *out = NULL;
    if (!out || (!buf && len > 0)) {
        ww_error_set(error, WW_ERR_INTERNAL, 0, false, "ww_json_parse_object: bad arguments");
        goto done;
    }

    /* 1. bytes */
    if (len > max_bytes) {
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_TOO_LARGE, false,
                     "message is %zu bytes, the limit is %zu", len, max_bytes);
        goto done;
    }
    const unsigned char *p = (const unsigned char *)buf;
    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_INVALID_ENCODING, false,
                     "byte order mark at start of message");
        goto done;
    }
    if (!check_bytes(p, len, error)) goto done;

    /* 2. grammar */
    scanner_t sc = {.p = p, .len = len, .max_depth = max_depth, .error = error};
    skip_ws(&sc);
    if (sc.pos == len) {
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_INVALID, false, "empty message");
        goto done;
    }
    size_t first = sc.pos;
    if (!scan_value(&sc, 0)) goto done;
    skip_ws(&sc);
    if (sc.pos != len) {
        fail(&sc, WW_JSON_INVALID, "trailing data after the JSON value");
        goto done;
    }
    if (p[first] != '{') {
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_NOT_AN_OBJECT, false,
                     "top level must be an object, got %s",
                     p[first] == '[' ? "an array"
                     : p[first] == '"' ? "a string"
                     : p[first] == 't' || p[first] == 'f' ? "a boolean"
                     : p[first] == 'n' ? "null" : "a number");
        goto done;
    }
    if (sc.range_found) {
        char num[3 * ECHO_MAX];
        ww_json_echo((const char *)p + sc.range_pos, sc.range_len, ECHO_MAX, num, sizeof num);
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_NUMBER_RANGE, false,
                     "%s: integer %s does not fit in a signed 64-bit integer", sc.range_path, num);
        goto done;
    }

    /* 3. json-c builds the tree; it must agree with the validator. */
    tok = json_tokener_new_ex(max_depth + 2);
    if (!tok) {
        ww_error_set(error, WW_ERR_SYSTEM, 0, true, "out of memory creating a JSON tokener");
        goto done;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, buf + first, (int)(len - first));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success || !json_object_is_type(root, json_type_object)) {
        ww_error_set(error, WW_ERR_INPUT, WW_JSON_INVALID, false,
                     "json-c rejected validated input: %s", json_tokener_error_desc(jerr));
        goto done;
    }

    /* 4. tree: duplicates and non-finite doubles */
    size_t tree_members = 0;
    char path[PATH_MAX_LEN] = "";
    if (!walk_tree(root, 1, path, &tree_members, error)) goto done;
    if (tree_members != sc.members) {
        scanner_t again = {.p = p, .len = len, .max_depth = max_depth, .error = error,
                           .find_dup = true};
        skip_ws(&again);
        if (scan_value(&again, 0) || error == NULL || error->code != WW_JSON_DUPLICATE_KEY)
            ww_error_set(error, WW_ERR_INPUT, WW_JSON_DUPLICATE_KEY, false,
                         "duplicate field (%zu members in text, %zu distinct)", sc.members,
                         tree_members);
        goto done;
    }

    *out = root;
    root = NULL;
    ok = true;
done:
    json_object_put(root);
    if (tok) json_tokener_free(tok);
    return ok;
}
