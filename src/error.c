/* error.c: see error.h. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ww_error_clear(ww_error_t *error) {
    if (error) memset(error, 0, sizeof *error);
}

void ww_error_set(ww_error_t *error, ww_error_domain_t domain, int32_t code, bool retryable,
                  const char *fmt, ...) {
    if (!error) return;
    error->domain = domain;
    error->code = code;
    error->retryable = retryable;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof error->message, fmt, ap);
    va_end(ap);
}

const char *ww_error_domain_name(ww_error_domain_t domain) {
    switch (domain) {
    case WW_ERR_NONE: return "none";
    case WW_ERR_CONFIG: return "config";
    case WW_ERR_INPUT: return "input";
    case WW_ERR_DB: return "db";
    case WW_ERR_KAFKA: return "kafka";
    case WW_ERR_HTTP: return "http";
    case WW_ERR_SYSTEM: return "system";
    case WW_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}
