/* log.h: one line per event on stderr, as logfmt (default) or JSON lines.
 *
 *   ts=2026-11-30T13:42:02.123Z level=warn module=wallet msg="invalid command" topic=t partition=0
 *   {"ts":"2026-11-30T13:42:02.123Z","level":"warn","module":"wallet","msg":"invalid command","topic":"t","partition":"0"}
 *
 * A call names a constant message and typed key/value fields:
 *
 *   ww_warn("wallet", "invalid command", WW_STR("topic", msg->topic),
 *           WW_INT("partition", msg->partition), WW_STR("detail", perr.message));
 *
 * DESIGN: the logger, not the caller, quotes and escapes every value (a value
 * is hostile: a dead-letter detail quotes the rejected input), so a logfmt or
 * JSON parser recovers each field exactly. In logfmt a value is quoted when it
 * is empty or holds a space, '=', '"', '\' or a control byte; inside quotes
 * '"', '\', \n, \r, \t are backslash-escaped and other control bytes become
 * \u00XX. In JSON every field is a string member. Bytes that are not UTF-8
 * become U+FFFD in both formats, so a line is always valid UTF-8. A line longer
 * than WW_LOG_LINE_MAX is cut inside a value and ends with truncated=true (it
 * stays parseable). The level is checked before anything is built, so a debug
 * line costs a comparison when debug is off; the field array lives on the
 * caller's stack. Each line is written with a single write(2), so lines from
 * different threads never interleave. librdkafka's and libmongoc's logs are
 * routed here by bus.c and db.c. */
#ifndef WW_LOG_H
#define WW_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { WW_LOG_DEBUG = 0, WW_LOG_INFO, WW_LOG_WARN, WW_LOG_ERROR, WW_LOG_OFF } ww_log_level_t;
typedef enum { WW_LOG_LOGFMT = 0, WW_LOG_JSON } ww_log_format_t;

#define WW_LOG_LINE_MAX 4096

extern volatile int ww_log_min_level;

bool ww_log_parse_level(const char *name, ww_log_level_t *out);
void ww_log_set_level(ww_log_level_t level);
const char *ww_log_level_name(ww_log_level_t level);

/* "logfmt" or "json" (any letter case); false for anything else. */
bool ww_log_parse_format(const char *name, ww_log_format_t *out);
void ww_log_set_format(ww_log_format_t format);
const char *ww_log_format_name(ww_log_format_t format);

typedef enum { WW_LOG_KV_STR = 0, WW_LOG_KV_INT, WW_LOG_KV_UINT } ww_log_kv_type_t;

/* One field. The key is a constant name ([A-Za-z0-9_.-]; other bytes are
 * written as '_'); a NULL string value is written as "-". Borrowed for the
 * duration of the call. */
typedef struct {
    const char *key;
    ww_log_kv_type_t type;
    union {
        const char *s;
        long long i;
        unsigned long long u;
    } v;
} ww_log_kv_t;

#define WW_STR(k, val) ((ww_log_kv_t){.key = (k), .type = WW_LOG_KV_STR, .v = {.s = (val)}})
#define WW_INT(k, val) ((ww_log_kv_t){.key = (k), .type = WW_LOG_KV_INT, .v = {.i = (long long)(val)}})
#define WW_UINT(k, val) \
    ((ww_log_kv_t){.key = (k), .type = WW_LOG_KV_UINT, .v = {.u = (unsigned long long)(val)}})
#define WW_BOOL(k, val) WW_STR((k), (val) ? "true" : "false")

/* Writes one line to stderr (one write(2)); msg may be any text, it is escaped
 * like a value. Callers use the macros below, which check the level first. */
void ww_log_emit(ww_log_level_t level, const char *module, const char *msg, const ww_log_kv_t *kv,
                 size_t n);

/* Formats one line (with its '\n') into out[WW_LOG_LINE_MAX] and returns its
 * length; ts is the timestamp text. Pure: for ww_log_emit and the tests. */
size_t ww_log_format_line(char *out, ww_log_format_t format, const char *ts, ww_log_level_t level,
                          const char *module, const char *msg, const ww_log_kv_t *kv, size_t n);

/* The leading element only makes an empty field list a valid initializer. */
#define WW_LOG(level, module, msg, ...)                                                   \
    do {                                                                                  \
        if ((int)(level) >= ww_log_min_level) {                                           \
            const ww_log_kv_t ww_log_kv_[] = {{.key = NULL}, __VA_ARGS__};                \
            ww_log_emit((level), (module), (msg), ww_log_kv_ + 1,                         \
                        sizeof ww_log_kv_ / sizeof ww_log_kv_[0] - 1);                    \
        }                                                                                 \
    } while (0)
#define ww_debug(module, ...) WW_LOG(WW_LOG_DEBUG, module, __VA_ARGS__)
#define ww_info(module, ...) WW_LOG(WW_LOG_INFO, module, __VA_ARGS__)
#define ww_warn(module, ...) WW_LOG(WW_LOG_WARN, module, __VA_ARGS__)
#define ww_err(module, ...) WW_LOG(WW_LOG_ERROR, module, __VA_ARGS__)

/* A MongoDB URI is shown only through ww_db_redact_uri (db.h), which works
 * on the parsed URI: no text scanner here can know where a password ends. */

#endif
