/* engine.h: the batch engine the live pipeline, `replay` and `apply` share.
 *
 * DESIGN
 * - N worker threads, each with a bounded queue. A message goes to worker
 *   FNV-1a(key) % N (the partition number when it has no key), so one key is
 *   handled by one thread, in submission order, while keys run in parallel.
 * - A worker takes everything waiting in its queue (up to batch_max, no
 *   linger), splits it per route (in queue order) and hands each share to the
 *   route's batch handler (pipeline.h: DONE / RETRY / FAILED per item).
 * - FAILED: the engine dead-letters the message (reason processing_failed, to
 *   the route's dlq_topic when it has one) and it counts as finished.
 * - RETRY: the undecided part goes back to the handler after a backoff
 *   (capped exponential, jitter), in order, until it is decided, given up by
 *   the sink (`gone`: revoked, shutting down), interrupted, or past its own
 *   retry deadline (retry_deadline_ms after that message's first failure).
 * - A message decided (DONE or FAILED) while an earlier message with the same
 *   key is still to be retried is HELD with its outputs and finished right
 *   after that one: one key's outputs leave in order.
 * - What happens to a finished message (produce, commit, print, count) is the
 *   sink's business: the engine calls sink.finish exactly once per submitted
 *   item, from a worker thread. The engine never frees an item. */
#ifndef WW_ENGINE_H
#define WW_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "error.h"
#include "pipeline.h"

typedef enum {
    WW_ENGINE_DONE = 1, /* the handler finished it: outs describe it */
    WW_ENGINE_FAILED,   /* permanent failure: outs hold its dead letter (if any), error why */
    WW_ENGINE_DROPPED,  /* the sink's gone() said so: not processed, no outputs */
    WW_ENGINE_GAVE_UP,  /* retryable failure past the deadline or interrupted: error why */
} ww_engine_end_t;

typedef struct {
    void *ctx;
    /* One item is over. DONE / FAILED: takes over *outs (clears it or keeps
     * the buffers and zeroes *outs); DROPPED / GAVE_UP: *outs is empty.
     * error: NULL for DONE and DROPPED. Called once per item, from the
     * item's worker thread, after every earlier item of the same key. */
    void (*finish)(void *ctx, void *item, const ww_msg_t *msg, ww_outputs_t *outs,
                   ww_engine_end_t end, const ww_error_t *error);
    /* May be NULL. Asked before every attempt (the first too) for each item
     * not finished yet: true drops it (revoked partition, shutdown deadline). */
    bool (*gone)(void *ctx, void *item);
} ww_engine_sink_t;

typedef struct {
    const char *name;          /* log module ("pipeline", "replay") */
    int32_t workers;           /* threads (at least 1) */
    int32_t queue_depth;       /* per worker; at least batch_max */
    int32_t batch_max;         /* messages per handler call (at least 1) */
    int32_t retry_base_ms;     /* first backoff (at least 2) */
    int32_t retry_max_ms;      /* backoff cap */
    int32_t retry_deadline_ms; /* 0: retry until gone; else give a message up this long
                                  after its first retryable failure */
    volatile int *interrupt;   /* may be NULL: non-zero cuts a backoff short and gives up
                                  the messages waiting for a retry */
} ww_engine_config_t;

typedef struct ww_engine ww_engine_t;

/* Starts the worker threads. Routes are copied (their strings and ctx must
 * outlive the engine). NULL with an error when a thread cannot start. */
ww_engine_t *ww_engine_new(const ww_engine_config_t *cfg, const ww_route_t *routes,
                           size_t n_routes, const ww_engine_sink_t *sink, ww_error_t *error);

/* Queues item (borrowed until its finish) with its message (borrowed, the
 * same lifetime) for routes[route]. key/key_len: the order key (NULL: none;
 * dispatched by msg->partition and never held behind another message), it
 * must live as long as the item. When the worker's queue is full: waits for
 * room when `wait`, else returns false (the caller keeps the item). With
 * wait=false it is safe under the caller's own locks (it takes only the
 * worker's); with wait=true it may block until the sink finished items, so
 * never hold a lock the sink takes. */
bool ww_engine_submit(ww_engine_t *eng, void *item, const ww_msg_t *msg, size_t route,
                      const void *key, size_t key_len, bool wait);

/* Workers inside a batch right now (a shutdown log line). */
int ww_engine_busy(const ww_engine_t *eng);

/* Lets the workers finish every queued item (each ends in sink.finish: make
 * gone() true first to drop them quickly) and joins them. Idempotent. */
void ww_engine_stop(ww_engine_t *eng);

/* Stops (if still running) and frees. NULL is a no-op. */
void ww_engine_destroy(ww_engine_t *eng);

/* FNV-1a, the dispatch hash (also for tools that must route like the worker). */
uint32_t ww_engine_hash(const void *data, size_t n);

#endif
