/* bus.h: Kafka access. The only module that includes rdkafka.h.
 *
 * DESIGN: one consumer (a group member, cooperative-sticky assignment, offsets
 * stored only by the application: enable.auto.offset.store=false, then
 * auto-commit commits what was stored) and one idempotent producer (acks=all,
 * no delivery timeout: a broker outage delays results, it never drops them).
 * The pipeline above sees plain structs and callbacks:
 *   - ww_bus_poll() hands out messages; the caller destroys each one;
 *   - rebalances call the hooks on the polling thread, before the assignment
 *     changes, so in-flight work of revoked partitions can be finished and
 *     its offsets stored first;
 *   - every produce() ends in exactly one delivery callback (on the bus's
 *     producer thread) with the caller's opaque pointer. */
#ifndef WW_BUS_H
#define WW_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct ww_bus ww_bus_t;

typedef struct {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* may be NULL */
    size_t key_len;
    const void *value; /* may be NULL (tombstone) */
    size_t value_len;
    int64_t timestamp_ms; /* -1 when unknown */
    void *priv_;          /* the librdkafka message */
    /* apply's over-long lines: value holds only the first bytes of a value of
     * this length (0: value is whole). Kafka messages are always whole. */
    uint64_t full_len;
} ww_msg_t;

typedef struct {
    const char *topic;
    int32_t partition;
} ww_partition_t;

typedef struct {
    const char *name;
    const void *value;
    size_t value_len;
} ww_header_t;

typedef struct {
    void *ctx;
    /* Partitions about to be added to this member's assignment. */
    void (*on_assign)(void *ctx, const ww_partition_t *parts, size_t n);
    /* Partitions about to be taken away. `lost` = the group already gave
     * them to someone else (session timed out): commits would fail. */
    void (*on_revoke)(void *ctx, const ww_partition_t *parts, size_t n, bool lost);
    /* Result of a produce(): error NULL when delivered. Otherwise
     * error->retryable tells whether producing it again can succeed (broker
     * trouble, a missing topic) or not (the message itself was refused, e.g.
     * too large: ww_bus_error_permanent). Runs on the bus's producer thread. */
    void (*on_delivery)(void *ctx, void *opaque, const ww_error_t *error);
} ww_bus_hooks_t;

typedef struct {
    const char *brokers;
    const char *group_id;     /* NULL: no consumer group (producer only, or replay) */
    const char *client_id;
    /* security (NULL or "" = librdkafka's default) */
    const char *security_protocol;
    const char *sasl_mechanism;
    const char *sasl_username;
    const char *sasl_password;
    const char *ssl_ca_location;
    int32_t session_timeout_ms;
    int32_t max_poll_interval_ms;
    int32_t message_max_bytes; /* producer's limit; 0: WW_BUS_MESSAGE_MAX */
    int32_t auto_commit_interval_ms; /* periodic commit of the stored offsets */
    bool consumer;            /* create the consumer side */
    bool producer;            /* create the producer side */
} ww_bus_config_t;

void ww_bus_config_defaults(ww_bus_config_t *cfg);

ww_bus_t *ww_bus_new(const ww_bus_config_t *cfg, const ww_bus_hooks_t *hooks, ww_error_t *error);

/* Checks that librdkafka accepts these settings (builds and drops a client;
 * nothing is contacted), so a bad setting is reported at start, before any
 * waiting for servers. */
bool ww_bus_check_config(const ww_bus_config_t *cfg, ww_error_t *error);
/* Leaves the group (final commit of stored offsets) and flushes the producer
 * for up to flush_timeout_ms. NULL-safe. */
void ww_bus_destroy(ww_bus_t *bus, int flush_timeout_ms);

bool ww_bus_subscribe(ww_bus_t *bus, const char *const *topics, size_t n, ww_error_t *error);

/* Waits up to timeout_ms for a message. NULL when none arrived; consumer
 * errors that are not about one message are logged and absorbed here. */
ww_msg_t *ww_bus_poll(ww_bus_t *bus, int timeout_ms);
void ww_msg_destroy(ww_msg_t *msg);
/* The last header called `name`; false when absent or msg is not from Kafka
 * (priv_ NULL: a file line, a test's message). */
bool ww_msg_header(const ww_msg_t *msg, const char *name, const void **value, size_t *len);

/* Marks everything before next_offset as done; auto-commit commits it. */
bool ww_bus_store_offset(ww_bus_t *bus, const char *topic, int32_t partition,
                         int64_t next_offset, ww_error_t *error);
/* Synchronously commits the stored offsets (shutdown). Revoked partitions
 * are committed by the bus itself: after hooks->on_revoke has stored their
 * done prefix, synchronously, before they are handed over. */
bool ww_bus_commit_stored(ww_bus_t *bus, ww_error_t *error);
/* The group's committed offset of partitions 0..count-1 of topic, read from
 * the broker (-1: none). For tests and tools: a consumer created with the
 * group's id reads them without joining. */
bool ww_bus_committed(ww_bus_t *bus, const char *topic, int32_t count, int64_t *offsets,
                      int timeout_ms, ww_error_t *error);

/* Stops/starts fetching for every assigned partition. While paused, poll()
 * still serves rebalances and keeps the member in its group. */
bool ww_bus_pause_all(ww_bus_t *bus);
bool ww_bus_resume_all(ww_bus_t *bus);

/* The largest message the producer accepts (librdkafka's message.max.bytes,
 * set explicitly): key, value, headers and framing. */
#define WW_BUS_MESSAGE_MAX 1000000

/* Queues a message; delivery is reported through hooks->on_delivery with
 * `opaque`. Returns false with a retryable error when the local queue is
 * full (the caller waits and retries); with a permanent one
 * (ww_bus_error_permanent) when the message itself is refused (too large). */
bool ww_bus_produce(ww_bus_t *bus, const char *topic, const void *key, size_t key_len,
                    const void *value, size_t value_len, const ww_header_t *headers,
                    size_t n_headers, void *opaque, ww_error_t *error);

/* True when a produce or delivery error is about the message itself (too
 * large, invalid): producing the same bytes again fails the same way. */
bool ww_bus_error_permanent(const ww_error_t *error);
/* A short stable name for a Kafka error code (metrics labels). */
const char *ww_bus_error_name(int32_t code);

/* Publishes consumer lag per assigned partition into the metrics (from
 * cached watermarks, no broker round trip). */
void ww_bus_update_lag(ww_bus_t *bus);

/* Creates a topic (Admin API) and waits up to timeout_ms; an existing topic
 * is success. For tests, tools and first-run set-up. */
bool ww_bus_create_topic(ww_bus_t *bus, const char *topic, int partitions, int timeout_ms,
                         ww_error_t *error);

/* ---- reading a fixed range (replay) ----------------------------------------
 * A consumer created with group_id NULL never joins a group and never commits:
 * the live group's offsets are untouched. */

/* Number of partitions of topic (metadata round trip). */
bool ww_bus_partition_count(ww_bus_t *bus, const char *topic, int32_t *count, int timeout_ms,
                            ww_error_t *error);
/* Low and high watermarks of one partition (broker round trip). */
bool ww_bus_watermarks(ww_bus_t *bus, const char *topic, int32_t partition, int64_t *low,
                       int64_t *high, int timeout_ms, ww_error_t *error);
/* The first offset whose timestamp is >= ts_ms, per partition; the high
 * watermark when there is none. offsets[] has `count` entries. */
bool ww_bus_offsets_for_time(ww_bus_t *bus, const char *topic, int32_t count, int64_t ts_ms,
                             int64_t *offsets, int timeout_ms, ww_error_t *error);
/* Like ww_bus_poll for a no-group consumer: when a partition's end was
 * reached, returns NULL with *eof_partition >= 0 and *eof_offset = the
 * offset after the last message. */
ww_msg_t *ww_bus_poll_range(ww_bus_t *bus, int timeout_ms, int32_t *eof_partition,
                            int64_t *eof_offset);
/* Reads exactly these partitions from these offsets (no group). */
bool ww_bus_assign(ww_bus_t *bus, const char *topic, int32_t count, const int64_t *start,
                   ww_error_t *error);
/* Stops reading one partition (its range is done). */
bool ww_bus_unassign_one(ww_bus_t *bus, const char *topic, int32_t partition, ww_error_t *error);

const char *ww_bus_library_version(void);



/* True once librdkafka reported a fatal error (e.g. the idempotent producer
 * was fenced): the process must restart; idempotency makes that safe. */
bool ww_bus_fatal(const ww_bus_t *bus);
#endif
