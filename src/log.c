/* log.c: see log.h. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"

volatile int ww_log_min_level = WW_LOG_INFO;
static volatile int log_format = WW_LOG_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const format_names[] = {"logfmt", "json"};

bool ww_log_parse_level(const char *name, ww_log_level_t *out) {
    for (int i = 0; i <= WW_LOG_OFF; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (ww_log_level_t)i;
            return true;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = WW_LOG_WARN;
        return true;
    }
    return false;
}

void ww_log_set_level(ww_log_level_t level) { ww_log_min_level = (int)level; }

const char *ww_log_level_name(ww_log_level_t level) {
    return (level >= WW_LOG_DEBUG && level <= WW_LOG_OFF) ? level_names[level] : "?";
}

bool ww_log_parse_format(const char *name, ww_log_format_t *out) {
    for (int i = 0; i <= WW_LOG_JSON; i++) {
        if (strcasecmp(name, format_names[i]) == 0) {
            *out = (ww_log_format_t)i;
            return true;
        }
    }
    return false;
}

void ww_log_set_format(ww_log_format_t format) { log_format = (int)format; }

const char *ww_log_format_name(ww_log_format_t format) {
    return (format == WW_LOG_LOGFMT || format == WW_LOG_JSON) ? format_names[format] : "?";
}

/* ---- the line builder ---------------------------------------------------- */

/* Room kept free for what closes a cut line: `" truncated=true\n` or
 * `","truncated":"true"}\n`. */
#define CLOSING_ROOM 32

typedef struct {
    char *p;
    size_t len, cap; /* cap excludes CLOSING_ROOM */
    bool full;
} out_t;

static void put(out_t *o, const char *s, size_t n) {
    if (o->full) return;
    if (n > o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0xFF >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static bool logfmt_needs_quotes(const char *s) {
    if (!*s) return true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7F || *p == '=' || *p == '"' || *p == '\\') return true;
    return false;
}

/* Writes s escaped for the inside of a JSON string or a quoted logfmt value
 * (the same escapes suit both). A cut never splits an escape or a UTF-8
 * sequence: put() writes each unit whole or sets full. */
static void put_escaped(out_t *o, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n > 0 && !o->full) {
        unsigned c = *p;
        char esc[8];
        size_t k;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(o, esc, 2);
            k = 1;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            put(o, esc, 2);
            k = 1;
        } else if (c < 0x20 || c == 0x7F) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(o, esc, 6);
            k = 1;
        } else if ((k = utf8_len(p, n)) > 0) {
            put(o, (const char *)p, k);
        } else {
            put(o, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte that is not UTF-8 */
            k = 1;
        }
        p += k;
        n -= k;
    }
}

static void put_key(out_t *o, const char *key) {
    char k[64];
    size_t n = 0;
    for (const char *s = key && *key ? key : "_"; *s && n < sizeof k; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        k[n++] = ok ? c : '_';
    }
    put(o, k, n);
}

static void put_field(out_t *o, ww_log_format_t format, bool first, const char *key, const char *value) {
    /* a key is never cut: a cut line ends inside a value */
    if (o->full || o->cap - o->len < (key ? strnlen(key, 64) : 1) + 8) {
        o->full = true;
        return;
    }
    if (format == WW_LOG_JSON) {
        put(o, first ? "{\"" : ",\"", 2);
        put_key(o, key);
        put(o, "\":\"", 3);
        put_escaped(o, value);
        put(o, "\"", 1);
    } else {
        if (!first) put(o, " ", 1);
        put_key(o, key);
        put(o, "=", 1);
        if (logfmt_needs_quotes(value)) {
            put(o, "\"", 1);
            put_escaped(o, value);
            put(o, "\"", 1);
        } else {
            put_escaped(o, value);
        }
    }
}

size_t ww_log_format_line(char *out, ww_log_format_t format, const char *ts, ww_log_level_t level,
                          const char *module, const char *msg, const ww_log_kv_t *kv, size_t n) {
    out_t o = {.p = out, .len = 0, .cap = WW_LOG_LINE_MAX - CLOSING_ROOM, .full = false};
    put_field(&o, format, true, "ts", ts);
    put_field(&o, format, false, "level", ww_log_level_name(level));
    put_field(&o, format, false, "module", module ? module : "-");
    put_field(&o, format, false, "msg", msg ? msg : "");
    for (size_t i = 0; i < n && !o.full; i++) {
        char num[32];
        const char *v = num;
        switch (kv[i].type) {
        case WW_LOG_KV_INT: snprintf(num, sizeof num, "%lld", kv[i].v.i); break;
        case WW_LOG_KV_UINT: snprintf(num, sizeof num, "%llu", kv[i].v.u); break;
        default: v = kv[i].v.s ? kv[i].v.s : "-"; break;
        }
        put_field(&o, format, false, kv[i].key, v);
    }
    /* The closing is written into the reserved room, so it always fits. A cut
     * line is inside a value that may or may not be quoted: close the quote
     * only when one is open (an unquoted logfmt value was cut whole). */
    o.cap = WW_LOG_LINE_MAX;
    if (o.full) {
        o.full = false;
        bool open = false;
        for (size_t i = 0; i < o.len; i++) {
            if (out[i] == '\\') i++;
            else if (out[i] == '"') open = !open;
        }
        if (open) put(&o, "\"", 1);
        if (format == WW_LOG_JSON) put(&o, ",\"truncated\":\"true\"", 19);
        else put(&o, " truncated=true", 15);
    }
    put(&o, format == WW_LOG_JSON ? "}\n" : "\n", format == WW_LOG_JSON ? 2 : 1);
    return o.len;
}

void ww_log_emit(ww_log_level_t level, const char *module, const char *msg, const ww_log_kv_t *kv,
                 size_t n) {
    char line[WW_LOG_LINE_MAX];
    char ts[40];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    size_t len = ww_log_format_line(line, (ww_log_format_t)log_format, ts, level, module, msg, kv, n);
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
