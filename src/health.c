/* health.c: the process-wide health snapshot (see health.h).
 *
 * DESIGN: every field is an independent C11 atomic written by one subsystem
 * and read by the HTTP thread. No reader needs two fields to agree with each
 * other except consumer membership (in_group + partition count), so those two
 * share one 64-bit word and are published together, and the Kafka state with
 * the time it was entered (state in the low 2 bits, mono ms above), updated
 * by compare-and-swap because the error and stats callbacks of librdkafka
 * and the poll thread all report it. Everything else uses
 * relaxed ordering: a snapshot value carries no data that other memory
 * depends on, and ww_health_progress() runs on every poll of the hot loop. */
#include "health.h"

#include <stdatomic.h>

static atomic_int db_state;           /* ww_db_state_t */
static atomic_int_fast64_t consumer;  /* in_group << 32 | (uint32_t)assigned */
static atomic_int_fast64_t kafka;      /* since_mono << 2 | ww_kafka_state_t */
static atomic_int_fast64_t out_since;  /* mono ms the member left its group; 0 = never joined */
static atomic_int_fast64_t last_progress; /* mono ms, 0 = never */
static atomic_int_fast64_t started;       /* mono ms, 0 = not recorded */
static atomic_bool running;
static atomic_bool db_auth_failing;
static atomic_int kafka_cause;
static atomic_int_fast64_t kafka_unready_ms = WW_HEALTH_DEFAULT_KAFKA_UNREADY_MS;

#define LOAD(obj) atomic_load_explicit(&(obj), memory_order_relaxed)
#define STORE(obj, v) atomic_store_explicit(&(obj), (v), memory_order_relaxed)

const char *ww_db_state_name(ww_db_state_t state) {
    switch (state) {
    case WW_DB_DISCONNECTED: return "disconnected";
    case WW_DB_CONNECTED: return "connected";
    case WW_DB_CONNECTING: return "connecting";
    case WW_DB_DISCONNECTING: return "disconnecting";
    }
    return "unknown";
}

void ww_health_reset(void) {
    STORE(db_state, WW_DB_DISCONNECTED);
    STORE(consumer, 0);
    STORE(kafka, 0);
    STORE(out_since, 0);
    STORE(last_progress, 0);
    STORE(started, 0);
    STORE(running, false);
    STORE(db_auth_failing, false);
    STORE(kafka_cause, WW_KAFKA_CAUSE_NONE);
    STORE(kafka_unready_ms, WW_HEALTH_DEFAULT_KAFKA_UNREADY_MS);
}

void ww_health_set_started(int64_t mono_ms) { STORE(started, mono_ms); }
int64_t ww_health_started(void) { return LOAD(started); }

void ww_health_set_db_state(ww_db_state_t state) {
    /* An out-of-range value would leak into the readyState contract. */
    if (state < WW_DB_DISCONNECTED || state > WW_DB_DISCONNECTING) state = WW_DB_DISCONNECTED;
    STORE(db_state, (int)state);
}

ww_db_state_t ww_health_db_state(void) { return (ww_db_state_t)LOAD(db_state); }
void ww_health_set_db_auth_failing(bool failing) { STORE(db_auth_failing, failing); }
bool ww_health_db_auth_failing(void) { return LOAD(db_auth_failing); }

void ww_health_set_kafka_cause(ww_kafka_cause_t cause) { STORE(kafka_cause, (int)cause); }
ww_kafka_cause_t ww_health_kafka_cause(void) { return (ww_kafka_cause_t)LOAD(kafka_cause); }
const char *ww_kafka_cause_name(ww_kafka_cause_t cause) {
    return cause == WW_KAFKA_CAUSE_AUTH ? "authentication" : cause == WW_KAFKA_CAUSE_TLS ? "tls" : "";
}

void ww_health_set_consumer(bool in_group, int32_t assigned_partitions, int64_t now_mono) {
    int64_t word = ((int64_t)(in_group ? 1 : 0) << 32) | (int64_t)(uint32_t)assigned_partitions;
    int64_t old = atomic_exchange_explicit(&consumer, word, memory_order_relaxed);
    /* the clock starts when membership ends, not on every later report */
    if (!in_group && (old >> 32) != 0) STORE(out_since, now_mono > 0 ? now_mono : 1);
}

bool ww_health_consumer_in_group(void) { return (LOAD(consumer) >> 32) != 0; }

int32_t ww_health_assigned_partitions(void) {
    return (int32_t)(uint32_t)(LOAD(consumer) & 0xffffffff);
}

const char *ww_kafka_state_name(ww_kafka_state_t state) {
    switch (state) {
    case WW_KAFKA_NOT_STARTED: return "not_started";
    case WW_KAFKA_UP: return "up";
    case WW_KAFKA_DOWN: return "down";
    }
    return "unknown";
}

void ww_health_set_kafka(ww_kafka_state_t state, int64_t now_mono) {
    int64_t old = LOAD(kafka);
    int64_t word = (now_mono > 0 ? now_mono : 0) << 2 | (int64_t)(state & 3);
    while ((old & 3) != (int64_t)state) {
        if (atomic_compare_exchange_weak_explicit(&kafka, &old, word, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

ww_kafka_state_t ww_health_kafka_state(void) { return (ww_kafka_state_t)(LOAD(kafka) & 3); }
bool ww_health_kafka_up(void) { return ww_health_kafka_state() == WW_KAFKA_UP; }

bool ww_health_kafka_ready(int64_t now_mono, int64_t unready_after_ms) {
    int64_t k = LOAD(kafka);
    ww_kafka_state_t state = (ww_kafka_state_t)(k & 3);
    if (state == WW_KAFKA_NOT_STARTED) return false;
    if (state == WW_KAFKA_DOWN && now_mono - (k >> 2) > unready_after_ms) return false;
    if (ww_health_consumer_in_group()) return true;
    int64_t left = LOAD(out_since);
    return left != 0 && now_mono - left <= unready_after_ms; /* never joined: not ready */
}

void ww_health_progress(int64_t mono_ms) { STORE(last_progress, mono_ms); }
int64_t ww_health_last_progress(void) { return LOAD(last_progress); }

void ww_health_set_running(bool value) { STORE(running, value); }
bool ww_health_running(void) { return LOAD(running); }

int64_t ww_health_progress_age_ms(int64_t now_mono) {
    int64_t since = LOAD(last_progress);
    if (since == 0) since = LOAD(started);
    if (since == 0) return -1;
    /* Another thread may have stored a later time than the caller's "now". */
    return now_mono > since ? now_mono - since : 0;
}

bool ww_health_live(int64_t now_mono, int64_t threshold_ms) {
    int64_t age = ww_health_progress_age_ms(now_mono);
    return age < 0 || age <= threshold_ms;
}

void ww_health_set_kafka_unready_after_ms(int64_t ms) {
    STORE(kafka_unready_ms, ms > 0 ? ms : WW_HEALTH_DEFAULT_KAFKA_UNREADY_MS);
}
int64_t ww_health_kafka_unready_after_ms(void) { return LOAD(kafka_unready_ms); }

bool ww_health_ready(int64_t now_mono) {
    return ww_health_db_state() == WW_DB_CONNECTED && !ww_health_db_auth_failing() &&
           ww_health_kafka_ready(now_mono, LOAD(kafka_unready_ms)) && ww_health_running();
}
