/* dbmon.h: the database connection's log contract, decided by a pure state
 * machine (no clock, no libmongoc): events in, the line to log out.
 *
 * The contract (the backend's audit asked for connection event logging
 * without storms): one "connected" line the first time a writable server is
 * found; then, per outage, one "disconnected" line when the deployment stops
 * being writable and one "reconnected" line when it is back, never a
 * "reconnected" without a "disconnected" before it; one "error" line (the
 * heartbeat's reason) per outage, and one while still connecting.
 *
 * DESIGN: libmongoc reports flaps inside one outage. An application
 * operation failing on a dying server marks it Unknown, the monitor's next
 * heartbeat may still reach it (its listener closes last) and mark it
 * writable, then the next heartbeat fails; after a restart, operations on
 * connections opened before the outage fail the same way. Logging every
 * topology transition turned one outage into two "disconnected" lines. So an
 * outage ends only when a heartbeat succeeds while the deployment has been
 * writable for at least `settle_ms` without interruption: a flap (writable for
 * less than that, or only between two failed heartbeats) stays inside the
 * outage. Health (health.h) still tracks every transition immediately: this
 * decides log lines only. */
#ifndef WW_DBMON_H
#define WW_DBMON_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    WW_DBMON_NONE = 0,
    WW_DBMON_CONNECTED,    /* first writable server */
    WW_DBMON_DISCONNECTED, /* an outage begins */
    WW_DBMON_RECONNECTED,  /* the outage is over */
    WW_DBMON_ERROR,        /* a failed heartbeat's reason, once per outage */
} ww_dbmon_line_t;

typedef struct {
    int64_t settle_ms;
    bool ever_connected;
    bool writable;
    bool outage;       /* "disconnected" logged, "reconnected" not yet */
    bool error_logged; /* the "error" line of this outage / of start-up */
    int64_t writable_since;
} ww_dbmon_t;

void ww_dbmon_init(ww_dbmon_t *m, int64_t settle_ms);
/* The topology changed: a writable server exists (or not) at `now` (ms). */
ww_dbmon_line_t ww_dbmon_topology(ww_dbmon_t *m, bool writable, int64_t now_ms);
/* A server heartbeat succeeded (ok) or failed at `now` (ms). */
ww_dbmon_line_t ww_dbmon_heartbeat(ww_dbmon_t *m, bool ok, int64_t now_ms);

#endif
