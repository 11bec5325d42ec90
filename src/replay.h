/* replay.h: batch reprocessing: a range of a Kafka topic (`replay`) or an
 * NDJSON file (`apply`), through the same handlers as the live pipeline.
 *
 * DESIGN: the handlers are idempotent, so reprocessing is safe; this module
 * makes it usable. A private consumer (no group: the live group's committed
 * offsets are never touched) reads each partition from its start offset to
 * its end offset (exclusive; by default the high watermark when the replay
 * starts), or a file line by line. Messages run on the live pipeline's batch
 * engine (engine.h): N threads, one key in order and keys in parallel, batches
 * of up to batch_max for the route's batch handler, the undecided part retried
 * with the same backoff, and a message decided while an earlier one of its key
 * retries held behind it. The key is the Kafka key (the partition when there
 * is none); for a file line, its ownerUserId or code string (the whole line
 * when it has neither, the line number for a line over the limit). A
 * permanent failure of one message dead-letters it (processing_failed), as
 * live. `replay` produces the
 * outputs `publish` selects (result events, dead letters, both or none) to
 * Kafka as live and counts the rest as held back; `apply` without Kafka
 * writes results to stdout as NDJSON and rejections to stderr with line
 * numbers.
 * Infrastructure failures are retried with backoff (100 ms doubling to 10 s,
 * jitter) for up to max_retry_ms per message, counted from that message's
 * first failure (0: no retry); a message still failing then, or when *stop is
 * set, is counted as not processed, and the run exits non-zero. */
#ifndef WW_REPLAY_H
#define WW_REPLAY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "bus.h"
#include "pipeline.h"

#define WW_REPLAY_MAX_PARTITIONS 1024
#define WW_REPLAY_MAX_OUTCOMES 16

typedef enum { WW_FROM_BEGINNING = 1, WW_FROM_TIMESTAMP, WW_FROM_OFFSETS } ww_replay_from_t;
typedef enum { WW_TO_END = 1, WW_TO_TIMESTAMP, WW_TO_OFFSETS } ww_replay_to_t;

/* What a replay produces to Kafka (a bit set). The default is
 * WW_PUBLISH_RESULTS: results are idempotent answers their consumers already
 * take more than once; dead letters are not (each replay would add another
 * copy of every invalid message to the DLQ). docs/operations.md argues it. */
typedef enum {
    WW_PUBLISH_NONE = 0,
    WW_PUBLISH_RESULTS = 1,
    WW_PUBLISH_DEAD_LETTERS = 2,
    WW_PUBLISH_BOTH = 3
} ww_publish_t;

/* "results", "dead-letters", "both", "none" -> *out; false otherwise. */
bool ww_replay_parse_publish(const char *s, ww_publish_t *out);
/* The name ww_replay_parse_publish accepts for p. */
const char *ww_replay_publish_name(ww_publish_t p);

typedef struct {
    /* where from: a topic range ... */
    const char *brokers;
    const ww_bus_config_t *kafka; /* security settings etc. to copy (may be NULL) */
    const char *topic;
    ww_replay_from_t from;
    int64_t from_ts_ms;
    ww_replay_to_t to;
    int64_t to_ts_ms;
    /* for *_OFFSETS: -1 = partition not listed */
    int64_t from_offsets[WW_REPLAY_MAX_PARTITIONS];
    int64_t to_offsets[WW_REPLAY_MAX_PARTITIONS];
    /* ... or a file ("-" = stdin) */
    const char *file;
    int32_t max_line_bytes;

    ww_route_t route; /* handler + ctx; route.topic labels file messages */
    bool dry_run;     /* outputs are discarded (the handler also writes nothing) */
    bool to_kafka;    /* produce outputs to Kafka (replay); else print them (apply) */
    ww_publish_t publish; /* to_kafka: which outputs are produced (default results) */
    int32_t workers;
    int32_t batch_max;  /* messages a thread hands to the batch handler at once
                           (also each thread's queue) */
    int32_t max_retry_ms; /* per message, from its first retryable failure */
    bool progress;    /* a progress line on stderr, once a second */
} ww_replay_config_t;

void ww_replay_config_defaults(ww_replay_config_t *cfg);

/* "0:10,1:0" -> offsets[0]=10, offsets[1]=0, others -1. */
bool ww_replay_parse_offsets(const char *spec, int64_t *offsets, ww_error_t *error);

typedef struct {
    uint64_t total;          /* messages in the range (0 = unknown, file) */
    uint64_t processed;      /* handled, rejections included */
    uint64_t not_processed;  /* infrastructure failures that outlived the retries */
    uint64_t rejected;       /* apply: lines reported as FILE:LINE: code: reason */
    /* Outputs. replay: delivered to Kafka; apply: results printed on stdout,
     * dead letters printed on stderr as rejections. */
    uint64_t results_out;
    uint64_t dead_letters_out;
    /* made but not published: not selected by --publish, or a dry run */
    uint64_t results_held;
    uint64_t dead_letters_held;
    int64_t elapsed_ms;
    size_t n_outcomes;
    struct ww_replay_outcome {
        char name[32];
        uint64_t count;
    } outcomes[WW_REPLAY_MAX_OUTCOMES]; /* first-seen order; printed sorted */
    int32_t n_partitions;
    struct {
        int64_t from, to; /* [from, to) */
        uint64_t count;
    } partitions[WW_REPLAY_MAX_PARTITIONS];
} ww_replay_summary_t;

/* Runs to the end of the range (or until *stop). False with error when the
 * range could not be set up; the summary says what was (not) processed. */
bool ww_replay_run(const ww_replay_config_t *cfg, ww_replay_summary_t *summary,
                   volatile int *stop, ww_error_t *error);

/* The human summary: a header line, what was published, the outcomes in
 * alphabetical order (stable from run to run), then the partitions. */
void ww_replay_print_summary(const ww_replay_config_t *cfg, const ww_replay_summary_t *s,
                             FILE *out);

#endif
