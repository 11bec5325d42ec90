/* dbauth.c: see dbauth.h. */
#include "dbauth.h"

void ww_dbauth_init(ww_dbauth_t *a, int64_t exit_after_ms, int64_t log_every_ms) {
    *a = (ww_dbauth_t){.exit_after_ms = exit_after_ms > 0 ? exit_after_ms : 0,
                       .log_every_ms = log_every_ms > 0 ? log_every_ms : WW_DBAUTH_LOG_EVERY_MS};
}

unsigned ww_dbauth_failure(ww_dbauth_t *a, int64_t now_ms) {
    unsigned actions = 0;
    if (!a->failing) {
        a->failing = true;
        a->failing_since = now_ms;
        a->failures = 0;
        a->last_log = now_ms;
        actions |= WW_DBAUTH_LOG;
    } else if (now_ms - a->last_log >= a->log_every_ms) {
        a->last_log = now_ms;
        actions |= WW_DBAUTH_LOG;
    }
    a->failures++;
    if (a->exit_after_ms > 0 && now_ms - a->failing_since >= a->exit_after_ms)
        actions |= WW_DBAUTH_EXIT | WW_DBAUTH_LOG;
    return actions;
}

bool ww_dbauth_success(ww_dbauth_t *a) {
    bool ended = a->failing;
    a->failing = false;
    a->failures = 0;
    return ended;
}
