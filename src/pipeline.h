/* pipeline.h: the consume -> process -> produce engine.
 *
 * DESIGN
 * - One polling thread (the caller of ww_pipeline_run) and N worker threads
 *   (the batch engine, engine.h, shared with replay and apply; the pipeline
 *   is its sink: it produces what a message finished with and commits).
 *   A message goes to worker hash(key) % N, so one key (an ownerUserId, an
 *   invite code) is always handled by one thread, in offset order, while
 *   different keys run concurrently (that is what the connection pool is
 *   for). Correctness never depends on this routing: the handlers are
 *   idempotent and guard every write; routing only buys ordering.
 * - A message is done when its handler has finished and every output it
 *   produced (result event, dead letter) has been acknowledged by Kafka.
 *   Per partition, only the contiguous prefix of done offsets is stored;
 *   auto-commit then commits it. A crash therefore re-delivers every
 *   message whose effects might not be complete, and the handlers make
 *   re-delivery harmless.
 * - Handlers report infrastructure trouble as a retryable error: the worker
 *   backs off (capped exponential, jitter) and tries again, forever, until
 *   the partition is revoked or the process stops. Its queue fills, the
 *   poller pauses fetching (the member stays in its group) and resumes when
 *   there is room again. Nothing is dropped and no offset moves meanwhile.
 * - On revoke, queued work of the lost partitions is abandoned, in-flight
 *   work gets a bounded time to finish, and the done prefix is stored
 *   before the partitions are handed over. */
#ifndef WW_PIPELINE_H
#define WW_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "error.h"

#define WW_OUT_MAX 2
#define WW_PIPELINE_MAX_ROUTES 8 /* topics one pipeline serves */
#define WW_OUT_HEADERS_MAX 12

typedef struct {
    char name[48];
    char *value;
    size_t value_len;
} ww_out_header_t;

/* One message to produce once the handler is done. Owns its buffers. */
typedef struct {
    char topic[250];
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    size_t n_headers;
    ww_out_header_t headers[WW_OUT_HEADERS_MAX];
} ww_out_t;

typedef struct {
    size_t n;
    ww_out_t out[WW_OUT_MAX];
    const char *outcome; /* set by the handler: a static string ("applied", ...) */
} ww_outputs_t;

/* Adds an output (copies topic, key and value); NULL when full. */
ww_out_t *ww_outputs_add(ww_outputs_t *outs, const char *topic, const void *key, size_t key_len,
                         const void *value, size_t value_len);
/* Adds a header (copies); false when full. */
bool ww_out_add_header(ww_out_t *out, const char *name, const void *value, size_t value_len);
void ww_outputs_clear(ww_outputs_t *outs);

/* The checks every handler makes before parsing: a message must have a value
 * of at most max_bytes. False with an input error (reason invalid_json /
 * too_large, the command reason codes) otherwise. */
bool ww_message_precheck(const ww_msg_t *msg, int32_t max_bytes, ww_error_t *error);

/* Room kept for a dead letter's headers and framing within WW_BUS_MESSAGE_MAX,
 * and how much of a value too large for that is kept. */
#define WW_DLQ_HEADROOM 16384
#define WW_DLQ_TRUNCATED_BYTES 65536

/* Where a dead letter's message originally came from, read back from the
 * ww.source.* and ww.redrive.count headers of a message consumed from a
 * dead-letter topic (a re-drive). */
typedef struct {
    char topic[250];
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1: absent or not a number */
    uint32_t redrives;    /* ww.redrive.count read (0: absent or not a number) */
} ww_dlq_origin_t;

#define WW_REDRIVE_COUNT_MAX 1000000000u /* a forged count saturates here */

/* Pure: the origin from a dead letter's headers (the last of each name wins).
 * True only when ww.source.topic is a legal topic name (1..249 bytes of
 * [A-Za-z0-9._-]) and ww.source.partition / ww.source.offset are plain
 * decimal numbers in range: forged or damaged headers are not trusted. The
 * redrive count is read either way (*origin is always initialised). */
bool ww_dlq_origin_parse(const ww_header_t *headers, size_t n, ww_dlq_origin_t *origin);

/* Adds a dead letter for msg: its original key and bytes, and the headers
 * ww.error.code, ww.error.reason, ww.source.topic/partition/offset (and
 * ww.source.timestamp when known). A message read from dlq_topic itself is a
 * re-drive: its dead letter keeps the ww.source.* of the message's own
 * headers (where it first came from; the DLQ's partition and offset when
 * those do not parse) and carries ww.redrive.count, one more than the
 * message's (1 on the first re-drive). A copy the producer would refuse (key +
 * value + WW_DLQ_HEADROOM > WW_BUS_MESSAGE_MAX) keeps only the first
 * WW_DLQ_TRUNCATED_BYTES of the value and says so: ww.truncated=true,
 * ww.original.size, ww.original.sha256 (hex). NULL when outs is full. */
ww_out_t *ww_outputs_dead_letter(ww_outputs_t *outs, const char *dlq_topic, const ww_msg_t *msg,
                                 const char *code, const char *reason);

/* A handler processes one message of its topic. It returns true when the
 * message is finished (applied, rejected or dead-lettered: described by the
 * outputs it adds). It returns false with error->retryable set when the
 * infrastructure failed (the pipeline retries it later) and false with a
 * permanent error for a failure of this message only (the pipeline
 * dead-letters it to `dlq_topic` with reason "processing_failed"). */
typedef bool (*ww_handle_fn)(void *ctx, const ww_msg_t *msg, ww_outputs_t *outs,
                             ww_error_t *error);

/* ---- batches ---------------------------------------------------------------
 * A worker takes every message waiting in its queue (up to
 * ww_pipeline_config_t.batch_max, no linger: at low load a batch is one
 * message) and hands them to the route's batch handler at once. Each item
 * comes back with a status:
 *   DONE    finished; `outs` describe it (result event, dead letter);
 *   RETRY   infrastructure trouble (error->retryable): the pipeline backs off
 *           and hands the batch's RETRY items to the handler again, in order;
 *   FAILED  a permanent failure of this message only: dead-lettered with
 *           reason processing_failed.
 * An item left PENDING counts as RETRY. The handler keeps each key's order:
 * it never finishes an item while an earlier item with the same Kafka key is
 * RETRY. The items of one call may belong to several topics' routes only
 * when they share the handler; the pipeline groups them per route. */
typedef enum {
    WW_ITEM_PENDING = 0,
    WW_ITEM_DONE,
    WW_ITEM_RETRY,
    WW_ITEM_FAILED
} ww_item_status_t;

typedef struct {
    const ww_msg_t *msg; /* borrowed */
    ww_outputs_t outs;   /* DONE: what to produce (the pipeline takes them over) */
    ww_error_t error;    /* RETRY / FAILED: why */
    ww_item_status_t status;
} ww_batch_item_t;

typedef void (*ww_handle_batch_fn)(void *ctx, ww_batch_item_t *items, size_t n);

/* The batch form of a per-message handler: items in order until the first
 * retryable failure, which leaves it and every later item RETRY (the key
 * order holds trivially). Used for routes without handle_batch. */
void ww_handle_each(ww_handle_fn handle, void *ctx, ww_batch_item_t *items, size_t n);

typedef struct {
    const char *topic;
    const char *dlq_topic;
    ww_handle_fn handle;             /* one message (apply, tools, fallback) */
    ww_handle_batch_fn handle_batch; /* NULL: ww_handle_each over handle */
    void *ctx;
} ww_route_t;

typedef struct {
    int32_t workers;          /* threads */
    int32_t queue_depth;      /* per worker */
    int32_t shutdown_timeout_ms;
    int32_t retry_base_ms;    /* first backoff */
    int32_t retry_max_ms;     /* backoff cap */
    int32_t batch_max;        /* messages per batch (BATCH_MAX); the queue holds at
                                 least this many, so a full queue is one batch */
} ww_pipeline_config_t;

void ww_pipeline_config_defaults(ww_pipeline_config_t *cfg);

typedef struct ww_pipeline ww_pipeline_t;

/* Creates the pipeline and its worker threads. Routes are copied (topic
 * strings must outlive the pipeline). */
ww_pipeline_t *ww_pipeline_new(const ww_pipeline_config_t *cfg, const ww_route_t *routes,
                               size_t n_routes, ww_error_t *error);

/* The hooks to give ww_bus_new (rebalance + delivery); bind with
 * ww_pipeline_attach before the first poll. */
ww_bus_hooks_t ww_pipeline_bus_hooks(ww_pipeline_t *p);
void ww_pipeline_attach(ww_pipeline_t *p, ww_bus_t *bus);

/* Polls and processes until *stop becomes non-zero, then drains in-flight
 * work for up to shutdown_timeout_ms and stores the done offsets. */
void ww_pipeline_run(ww_pipeline_t *p, volatile int *stop);

/* Stops the worker threads and waits for them (after run returned, before
 * the bus is destroyed): a handler still inside a slow database call finishes
 * first, and its late outputs are dropped (the message stays uncommitted and
 * is processed again after a restart). Idempotent. */
void ww_pipeline_stop_workers(ww_pipeline_t *p);

/* Stops the worker threads (if still running) and frees everything. */
void ww_pipeline_destroy(ww_pipeline_t *p);

/* Counters for tests and the shutdown log. */
uint64_t ww_pipeline_done_count(const ww_pipeline_t *p);

#endif
