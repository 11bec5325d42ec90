/* log.c: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

volatile int ww_log_min_level = WW_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

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

void ww_log_write(ww_log_level_t level, const char *module, const char *fmt, ...) {
    char line[2048];
    char ts[40];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "%s %-5s %-7s ", ts, ww_log_level_name(level), module);
    if (n < 0) return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + len, sizeof line - len, fmt, ap);
    va_end(ap);
    if (m > 0) len += (size_t)m < sizeof line - len ? (size_t)m : sizeof line - len - 1;
    /* A message never spans lines: the format is one event per line. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    if (len >= sizeof line - 1) {
        len = sizeof line - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
