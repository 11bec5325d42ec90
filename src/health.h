/* health.h: the snapshot the HTTP sidecar serves.
 *
 * DESIGN: the sidecar must never call Kafka or MongoDB on its request path,
 * so the worker pushes state here as it changes (db.c from libmongoc's
 * topology-monitoring callbacks, bus.c from rebalances, the consume loop on
 * every iteration) and the sidecar only reads. All fields are C11 atomics:
 * readers and writers never block each other. One process, one snapshot:
 * the state is process-global, like the process it describes. */
#ifndef WW_HEALTH_H
#define WW_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

/* Mongoose's connection.readyState numbering, kept for the backend's contract. */
typedef enum {
    WW_DB_DISCONNECTED = 0,
    WW_DB_CONNECTED = 1,
    WW_DB_CONNECTING = 2,
    WW_DB_DISCONNECTING = 3
} ww_db_state_t;

const char *ww_db_state_name(ww_db_state_t state); /* "connected", ... */

void ww_health_reset(void);              /* back to start-up state (tests) */
void ww_health_set_started(int64_t mono_ms);
void ww_health_set_db_state(ww_db_state_t state);
ww_db_state_t ww_health_db_state(void);
/* MongoDB refuses our credentials (db.c, dbauth.h): /readyz fails while set,
 * whatever the connection state says (the server itself answers). */
void ww_health_set_db_auth_failing(bool failing);
bool ww_health_db_auth_failing(void);

/* Kafka as the consumer sees it. NOT_STARTED until the consumer exists (the
 * worker waits for MongoDB first), then UP / DOWN as librdkafka reports its
 * broker connections. */
typedef enum { WW_KAFKA_NOT_STARTED = 0, WW_KAFKA_UP = 1, WW_KAFKA_DOWN = 2 } ww_kafka_state_t;

const char *ww_kafka_state_name(ww_kafka_state_t state); /* "up", "down", "not_started" */

/* Records a state at now_mono; the time is kept only when the state changes
 * (so "down since" is the first down report, not the latest). */
void ww_health_set_kafka(ww_kafka_state_t state, int64_t now_mono);
ww_kafka_state_t ww_health_kafka_state(void);
bool ww_health_kafka_up(void); /* state == UP */

/* Why the brokers cannot be used, when librdkafka says so (bus.c): wrong
 * SASL credentials or a TLS handshake failure (the CA). Shown by /api/health
 * while Kafka is not up; cleared when the brokers are reachable again. No
 * detail beyond the cause (the reason text may name the user). */
typedef enum { WW_KAFKA_CAUSE_NONE = 0, WW_KAFKA_CAUSE_AUTH, WW_KAFKA_CAUSE_TLS } ww_kafka_cause_t;
void ww_health_set_kafka_cause(ww_kafka_cause_t cause);
ww_kafka_cause_t ww_health_kafka_cause(void);
const char *ww_kafka_cause_name(ww_kafka_cause_t cause); /* "authentication", "tls", "" */

/* Consumer group membership: in_group with n assigned partitions, as of
 * now_mono (leaving the group starts the out-of-group clock). */
void ww_health_set_consumer(bool in_group, int32_t assigned_partitions, int64_t now_mono);
bool ww_health_consumer_in_group(void);
int32_t ww_health_assigned_partitions(void);

/* The Kafka rule behind /readyz: false before the consumer has started or
 * first joined its group, and false once the brokers have been unreachable,
 * or the member out of its group, for longer than unready_after_ms. A
 * shorter outage keeps the worker ready (librdkafka reconnects and rejoins by
 * itself; a blip must not take every replica out of rotation at once). */
bool ww_health_kafka_ready(int64_t now_mono, int64_t unready_after_ms);

/* The consume loop calls this every iteration (idle polls included): /livez
 * fails when it has not been called for longer than the liveness threshold. */
void ww_health_progress(int64_t mono_ms);
int64_t ww_health_last_progress(void);
int64_t ww_health_started(void);

/* Set once the process has finished starting (sidecar may answer earlier). */
void ww_health_set_running(bool running);
bool ww_health_running(void);

/* Milliseconds since the consume loop last progressed, measured from the
 * start time while it has not progressed yet; -1 when neither is known
 * (ww_health_set_started was never called). now_mono is ww_clock_mono_ms(). */
int64_t ww_health_progress_age_ms(int64_t now_mono);

/* The liveness rule behind /livez: true while the progress age is at most
 * threshold_ms. Unknown age (nothing recorded yet) counts as live: a process
 * still wiring itself up has not had the chance to stall. */
bool ww_health_live(int64_t now_mono, int64_t threshold_ms);

/* The whole /readyz rule, also exported as the wallet_worker_ready gauge so an
 * alert sees what the kubelet sees: database connected (and authenticated), Kafka ready (with the
 * threshold set below) and start-up finished. The sidecar sets the threshold
 * from KAFKA_UNREADY_AFTER_MS when it starts; <= 0 restores the default. */
#define WW_HEALTH_DEFAULT_KAFKA_UNREADY_MS 10000
void ww_health_set_kafka_unready_after_ms(int64_t ms);
int64_t ww_health_kafka_unready_after_ms(void);
bool ww_health_ready(int64_t now_mono);

#endif
