/* metrics.h: the worker's Prometheus metrics, a fixed set of families.
 *
 * Writers are the consume loop and worker threads; the reader is the HTTP
 * sidecar (GET /metrics). Updates are lock-free once a label set has been
 * seen; a label set's first update takes a per-family mutex. Like the health
 * snapshot, the registry is process-global. No init call is needed before
 * updating; ww_metrics_init() only records build info and the start time.
 *
 * Cardinality is bounded: each labelled family keeps at most
 * WW_METRICS_MAX_SERIES label sets (consumer lag: WW_METRICS_MAX_LAG_SERIES).
 * Updates for further label sets go to one series whose label values are all
 * "other", and each such update adds 1 to wallet_worker_metrics_dropped_series_total.
 * Label values longer than WW_METRICS_LABEL_MAX - 1 bytes are truncated;
 * invalid UTF-8 bytes and control characters other than '\n' become '?'.
 *
 * The families (names and labels are a contract with dashboards and alerts):
 *
 *   wallet_worker_messages_consumed_total{topic}              counter
 *       Kafka messages received by the consume loop.
 *   wallet_worker_messages_processed_total{topic,outcome}     counter
 *       Messages handled, by outcome: applied, duplicate, conflict,
 *       insufficient_funds, wallet_not_found, invalid, rejected, ...
 *   wallet_worker_dead_letters_total{topic,reason}            counter
 *       Messages written to the dead-letter topic, by reason.
 *   wallet_worker_retries_total{operation}                    counter
 *       Retries of a failed retryable operation.
 *   wallet_worker_db_operation_duration_seconds{operation}    histogram
 *       MongoDB operation latency; buckets 0.0005 .. 10 s (WW_METRICS_DB_BUCKETS).
 *   wallet_worker_consumer_lag{topic,partition}               gauge
 *       High watermark minus committed/consumed offset; removed on revoke.
 *   wallet_worker_db_connection_state                         gauge
 *       health.h readyState: 0 disconnected, 1 connected, 2 connecting,
 *       3 disconnecting (read from health at render time).
 *   wallet_worker_db_connected                                gauge 0/1
 *   wallet_worker_kafka_consumer_assigned_partitions          gauge (from health)
 *   wallet_worker_build_info{version,librdkafka,libmongoc}    gauge, always 1
 *   wallet_worker_up                                          gauge, always 1
 *   process_start_time_seconds                                gauge, Unix time
 *   wallet_worker_uptime_seconds                              gauge
 *   wallet_worker_http_requests_total{code}                   counter
 *       Responses of the HTTP sidecar, by status code.
 *   wallet_worker_output_failures_total{topic,reason}        counter
 *       Results / dead letters given up after a permanent produce error
 *       (e.g. too large for the broker); the message is finished anyway.
 *   wallet_worker_unkeyed_messages_total{topic}               counter
 *       Messages consumed without a Kafka key (order not guaranteed).
 *   wallet_worker_uncommitted_messages{topic}                 gauge
 *       Messages fetched and not yet committed (in flight, retrying, or
 *       behind one that is). Unlike the lag, it grows during an outage.
 *   wallet_worker_oldest_uncommitted_age_seconds{topic}       gauge
 *       Seconds since the oldest uncommitted message was fetched; 0 if none.
 *   wallet_worker_db_round_trips_total{op}                    counter
 *       Commands sent to MongoDB (one round trip each: find, getMore,
 *       update, insert, ...), counted by libmongoc's command monitoring.
 *   wallet_worker_batch_size{topic}                           histogram
 *       Messages handed to a handler at once; buckets 1, 2, 4 .. 8192.
 *   wallet_worker_metrics_dropped_series_total                           counter
 *       Updates routed to an "other" series because a family was full.
 */
#ifndef WW_METRICS_H
#define WW_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WW_METRICS_MAX_SERIES 64
#define WW_METRICS_MAX_LAG_SERIES 256
#define WW_METRICS_LABEL_MAX 128                /* bytes per label value, NUL included */
#define WW_METRICS_DB_BUCKETS 14                /* finite buckets; +Inf is extra */
#define WW_METRICS_RENDER_MAX (4u * 1024 * 1024) /* ww_metrics_render_alloc's bound */

/* Records build info (strings are copied; NULL becomes "unknown") and the
 * process start time. Call once at start-up, before other threads run. */
void ww_metrics_init(const char *version, const char *rdkafka_version, const char *mongoc_version);

/* Forgets every series and counter (tests). Not safe while other threads update. */
void ww_metrics_reset(void);

/* Updates. Thread-safe; string arguments are borrowed for the call (NULL is
 * treated as ""). */
void ww_metrics_inc_consumed(const char *topic);
void ww_metrics_inc_processed(const char *topic, const char *outcome);
void ww_metrics_inc_dead_letter(const char *topic, const char *reason);
void ww_metrics_inc_retry(const char *operation);
/* wallet_worker_db_auth_failures_total: one MongoDB authentication failure. */
void ww_metrics_inc_db_auth_failure(void);
void ww_metrics_observe_db(const char *operation, double seconds); /* <0 / NaN count as 0 */
void ww_metrics_inc_db_round_trip(const char *op);
void ww_metrics_observe_batch(const char *topic, size_t n);
void ww_metrics_set_lag(const char *topic, int32_t partition, int64_t lag);
void ww_metrics_remove_lag(const char *topic, int32_t partition); /* no-op if absent */
void ww_metrics_inc_http(int status_code);
void ww_metrics_inc_output_failure(const char *topic, const char *reason);
void ww_metrics_inc_unkeyed(const char *topic);
/* Per topic: messages not yet committed and the age of the oldest (seconds). */
void ww_metrics_set_uncommitted(const char *topic, int64_t messages, int64_t oldest_age_s);

/* Writes the text exposition format 0.0.4 into buf, NUL-terminated and
 * truncated to cap - 1 bytes like snprintf, and returns the length of the
 * full text: a return value >= cap means buf was too small. */
size_t ww_metrics_render(char *buf, size_t cap);

/* Renders into a new malloc'd, NUL-terminated buffer the caller frees; *len
 * (if non-NULL) gets the text length. NULL on allocation failure or when the
 * text would exceed WW_METRICS_RENDER_MAX. */
char *ww_metrics_render_alloc(size_t *len);

/* Getters (tests, diagnostics): the current value, 0 when the series does not
 * exist. Arguments are matched after the same truncation/sanitising as updates. */
uint64_t ww_metrics_consumed_count(const char *topic);
uint64_t ww_metrics_processed_count(const char *topic, const char *outcome);
uint64_t ww_metrics_dead_letter_count(const char *topic, const char *reason);
uint64_t ww_metrics_retry_count(const char *operation);
uint64_t ww_metrics_db_auth_failures(void);
uint64_t ww_metrics_db_observation_count(const char *operation);
uint64_t ww_metrics_http_count(int status_code);
uint64_t ww_metrics_dropped_series(void);
uint64_t ww_metrics_output_failure_count(const char *topic, const char *reason);
uint64_t ww_metrics_unkeyed_count(const char *topic);
uint64_t ww_metrics_db_round_trip_count(const char *op);
/* Batches observed for topic; *sum (if non-NULL) gets their total size. */
uint64_t ww_metrics_batch_count(const char *topic, uint64_t *sum);
/* True and the values set when the topic's series exist. */
bool ww_metrics_uncommitted(const char *topic, int64_t *messages, int64_t *oldest_age_s);
/* True and *lag set when the series exists (and was not removed). */
bool ww_metrics_lag(const char *topic, int32_t partition, int64_t *lag);

#endif
