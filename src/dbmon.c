/* dbmon.c: see dbmon.h. */
#include "dbmon.h"

void ww_dbmon_init(ww_dbmon_t *m, int64_t settle_ms) {
    *m = (ww_dbmon_t){.settle_ms = settle_ms};
}

ww_dbmon_line_t ww_dbmon_topology(ww_dbmon_t *m, bool writable, int64_t now_ms) {
    if (writable == m->writable) return WW_DBMON_NONE;
    m->writable = writable;
    if (writable) {
        m->writable_since = now_ms;
        if (m->ever_connected) return WW_DBMON_NONE; /* confirmed by a heartbeat */
        m->ever_connected = true;
        m->error_logged = false;
        return WW_DBMON_CONNECTED;
    }
    if (!m->ever_connected || m->outage) return WW_DBMON_NONE;
    m->outage = true;
    return WW_DBMON_DISCONNECTED;
}

ww_dbmon_line_t ww_dbmon_heartbeat(ww_dbmon_t *m, bool ok, int64_t now_ms) {
    if (!ok) {
        if (m->error_logged) return WW_DBMON_NONE;
        m->error_logged = true;
        return WW_DBMON_ERROR;
    }
    if (!m->outage || !m->writable || now_ms - m->writable_since < m->settle_ms)
        return WW_DBMON_NONE;
    m->outage = false;
    m->error_logged = false;
    return WW_DBMON_RECONNECTED;
}
