/* dbauth.h: what to do about MongoDB authentication failures, decided by a
 * pure state machine (no clock, no libmongoc): events in, actions out.
 *
 * The contract (issue 15): wrong credentials must not look like a healthy,
 * idle pod. Every failed authentication counts (the shell bumps
 * wallet_worker_db_auth_failures_total and keeps /readyz at 503 while
 * failing); an error line is written at the first failure and then at least
 * once per `log_every_ms` while failures continue; with exit_after_ms > 0 the
 * worker exits 1 once authentication has failed, with no success in between,
 * for that long (DB_AUTH_FAIL_EXIT_S), so Kubernetes shows a crash loop.
 * One successful operation ends the episode. */
#ifndef WW_DBAUTH_H
#define WW_DBAUTH_H

#include <stdbool.h>
#include <stdint.h>

enum {
    WW_DBAUTH_LOG = 1,  /* write the "authentication failed" error line now */
    WW_DBAUTH_EXIT = 2, /* give up: failing for exit_after_ms */
};

#define WW_DBAUTH_LOG_EVERY_MS 30000

typedef struct {
    int64_t exit_after_ms; /* 0: never exit */
    int64_t log_every_ms;
    bool failing;
    int64_t failing_since;
    int64_t last_log;
    uint64_t failures; /* in this episode */
} ww_dbauth_t;

void ww_dbauth_init(ww_dbauth_t *a, int64_t exit_after_ms, int64_t log_every_ms);
/* An operation failed to authenticate at now_ms: WW_DBAUTH_* flags. */
unsigned ww_dbauth_failure(ww_dbauth_t *a, int64_t now_ms);
/* An operation succeeded: true when this ends a failing episode (log it). */
bool ww_dbauth_success(ww_dbauth_t *a);

#endif
