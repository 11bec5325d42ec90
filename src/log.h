/* log.h: one line per event, `ts level module msg key=value...`, to stderr.
 *
 * The level is checked before anything is formatted, so a debug line costs a
 * comparison when debug is off. Each line is written with a single write(2),
 * so lines from different threads never interleave. librdkafka's and
 * libmongoc's logs are routed here by bus.c and db.c. */
#ifndef WW_LOG_H
#define WW_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { WW_LOG_DEBUG = 0, WW_LOG_INFO, WW_LOG_WARN, WW_LOG_ERROR, WW_LOG_OFF } ww_log_level_t;

extern volatile int ww_log_min_level;

bool ww_log_parse_level(const char *name, ww_log_level_t *out);
void ww_log_set_level(ww_log_level_t level);
const char *ww_log_level_name(ww_log_level_t level);

void ww_log_write(ww_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define WW_LOG(level, module, ...)                                       \
    do {                                                                 \
        if ((int)(level) >= ww_log_min_level) ww_log_write((level), (module), __VA_ARGS__); \
    } while (0)
#define ww_debug(module, ...) WW_LOG(WW_LOG_DEBUG, module, __VA_ARGS__)
#define ww_info(module, ...) WW_LOG(WW_LOG_INFO, module, __VA_ARGS__)
#define ww_warn(module, ...) WW_LOG(WW_LOG_WARN, module, __VA_ARGS__)
#define ww_err(module, ...) WW_LOG(WW_LOG_ERROR, module, __VA_ARGS__)

/* A MongoDB URI is shown only through ww_db_redact_uri (db.h), which works
 * on the parsed URI: no text scanner here can know where a password ends. */

#endif
