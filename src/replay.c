/* replay.c: see replay.h. */
#define _GNU_SOURCE /* memmem */
#include "replay.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bus.h"
#include "clock.h"
#include "engine.h"
#include "lines.h"
#include "log.h"

/* One message in flight: owned by the run until the engine finishes it. */
typedef struct {
    ww_msg_t *kafka; /* owned Kafka message, or NULL */
    ww_msg_t file;   /* a file line (value owned in buf) */
    char *buf;
    const void *key; /* the order key (in kafka, buf or file.offset), or NULL */
    size_t key_len;
} item_t;

typedef struct run run_t;

struct run {
    const ww_replay_config_t *cfg;
    ww_replay_summary_t *s;
    volatile int *stop;
    ww_bus_t *producer;
    ww_engine_t *eng; /* the workers: the live pipeline's batch engine */
    pthread_mutex_t lock; /* summary and stdout/stderr */
    atomic_long inflight;        /* produced, not yet acknowledged */
    atomic_long delivery_failed;
    atomic_ulong results_delivered, dead_letters_delivered;
};

/* The opaque of a produced output: which counter its delivery goes to. */
#define OUT_RESULT ((void *)1)
#define OUT_DEAD_LETTER ((void *)2)

void ww_replay_config_defaults(ww_replay_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->from = WW_FROM_BEGINNING;
    cfg->to = WW_TO_END;
    for (int i = 0; i < WW_REPLAY_MAX_PARTITIONS; i++) cfg->from_offsets[i] = cfg->to_offsets[i] = -1;
    cfg->max_line_bytes = 65536;
    cfg->workers = 8;
    cfg->batch_max = 512;
    cfg->max_retry_ms = 120000;
    cfg->progress = true;
    cfg->to_kafka = true;
    cfg->publish = WW_PUBLISH_RESULTS;
}

static const char *const publish_names[] = {"none", "results", "dead-letters", "both"};

bool ww_replay_parse_publish(const char *s, ww_publish_t *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, publish_names[i]) == 0) {
            *out = (ww_publish_t)i;
            return true;
        }
    return false;
}

const char *ww_replay_publish_name(ww_publish_t p) {
    return (unsigned)p < 4 ? publish_names[p] : "?";
}

bool ww_replay_parse_offsets(const char *spec, int64_t *offsets, ww_error_t *error) {
    for (int i = 0; i < WW_REPLAY_MAX_PARTITIONS; i++) offsets[i] = -1;
    const char *p = spec;
    int n = 0;
    while (*p) {
        char *end;
        errno = 0;
        long part = strtol(p, &end, 10);
        if (errno || end == p || *end != ':' || part < 0 || part >= WW_REPLAY_MAX_PARTITIONS)
            goto bad;
        p = end + 1;
        long long off = strtoll(p, &end, 10);
        if (errno || end == p || off < 0 || (*end != ',' && *end != '\0')) goto bad;
        offsets[part] = off;
        n++;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) goto bad;
    return true;
bad:
    ww_error_set(error, WW_ERR_CONFIG, 0, false,
                 "offsets \"%.64s\": expected PARTITION:OFFSET[,PARTITION:OFFSET...]", spec);
    return false;
}

/* ---- summary ---------------------------------------------------------------- */

static void count_outcome(run_t *e, const char *name) {
    ww_replay_summary_t *s = e->s;
    if (!name) name = "processed";
    for (size_t i = 0; i < s->n_outcomes; i++)
        if (strcmp(s->outcomes[i].name, name) == 0) {
            s->outcomes[i].count++;
            return;
        }
    if (s->n_outcomes < WW_REPLAY_MAX_OUTCOMES) {
        snprintf(s->outcomes[s->n_outcomes].name, sizeof s->outcomes[0].name, "%s", name);
        s->outcomes[s->n_outcomes++].count = 1;
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const struct ww_replay_outcome *)a)->name,
                  ((const struct ww_replay_outcome *)b)->name);
}

/* What this run did with its outputs, in words. */
static void print_published(const ww_replay_config_t *cfg, const ww_replay_summary_t *s,
                            FILE *out) {
    if (!cfg->to_kafka)
        fprintf(out, "  output: %s, rejections to stderr\n",
                cfg->dry_run ? "no results (dry run)" : "results to stdout");
    else if (cfg->dry_run)
        fprintf(out, "  published: nothing (dry run)\n");
    else
        fprintf(out, "  published: %s (--publish %s)\n",
                cfg->publish == WW_PUBLISH_BOTH      ? "results and dead letters"
                : cfg->publish == WW_PUBLISH_RESULTS ? "results only, no dead letters"
                : cfg->publish == WW_PUBLISH_DEAD_LETTERS ? "dead letters only, no results"
                                                          : "nothing",
                ww_replay_publish_name(cfg->publish));
    const char *verb = cfg->to_kafka ? "published" : "printed";
    fprintf(out, "  %-24s %10llu\n", cfg->to_kafka ? "results published" : "results printed",
            (unsigned long long)s->results_out);
    fprintf(out, "  %-24s %10llu\n", cfg->to_kafka ? "dead letters written" : "rejections printed",
            (unsigned long long)s->dead_letters_out);
    char label[32];
    snprintf(label, sizeof label, "results not %s", verb);
    if (s->results_held)
        fprintf(out, "  %-24s %10llu\n", label, (unsigned long long)s->results_held);
    if (s->dead_letters_held)
        fprintf(out, "  %-24s %10llu\n", "dead letters not written",
                (unsigned long long)s->dead_letters_held);
}

void ww_replay_print_summary(const ww_replay_config_t *cfg, const ww_replay_summary_t *s,
                             FILE *out) {
    double secs = (double)s->elapsed_ms / 1000.0;
    fprintf(out, "%s%s: %llu message(s) processed", cfg->dry_run ? "dry run of " : "",
            cfg->file ? cfg->file : cfg->topic, (unsigned long long)s->processed);
    if (s->total) fprintf(out, " of %llu", (unsigned long long)s->total);
    fprintf(out, " in %.1f s (%.0f msg/s)\n", secs,
            secs > 0 ? (double)s->processed / secs : 0.0);
    print_published(cfg, s, out);
    /* alphabetical: the same order in every run, whatever came first */
    struct ww_replay_outcome sorted[WW_REPLAY_MAX_OUTCOMES];
    size_t n = s->n_outcomes < WW_REPLAY_MAX_OUTCOMES ? s->n_outcomes : WW_REPLAY_MAX_OUTCOMES;
    memcpy(sorted, s->outcomes, n * sizeof sorted[0]);
    qsort(sorted, n, sizeof sorted[0], by_name);
    fprintf(out, "  %-24s %10s\n", "outcome", "count");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-24s %10llu\n", sorted[i].name, (unsigned long long)sorted[i].count);
    if (s->not_processed)
        fprintf(out, "  %-24s %10llu\n", "NOT PROCESSED", (unsigned long long)s->not_processed);
    if (!cfg->file && s->n_partitions) {
        fprintf(out, "  %-10s %14s %14s %10s\n", "partition", "from", "to", "messages");
        for (int32_t p = 0; p < s->n_partitions; p++) {
            if (s->partitions[p].to <= s->partitions[p].from && !s->partitions[p].count) continue;
            fprintf(out, "  %-10d %14lld %14lld %10llu\n", p, (long long)s->partitions[p].from,
                    (long long)s->partitions[p].to, (unsigned long long)s->partitions[p].count);
        }
    }
}

/* ---- outputs ------------------------------------------------------------------ */

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    run_t *e = ctx;
    if (error) {
        atomic_fetch_add(&e->delivery_failed, 1);
        ww_err("replay", "output not delivered", WW_STR("error", error->message));
    } else {
        atomic_fetch_add(opaque == OUT_DEAD_LETTER ? &e->dead_letters_delivered
                                                   : &e->results_delivered, 1);
    }
    atomic_fetch_sub(&e->inflight, 1);
}

static const char *header(const ww_out_t *o, const char *name, size_t *len) {
    for (size_t h = 0; h < o->n_headers; h++)
        if (strcmp(o->headers[h].name, name) == 0) {
            *len = o->headers[h].value_len;
            return o->headers[h].value;
        }
    *len = 0;
    return "";
}

/* apply: a dead letter is printed as FILE:LINE: code: reason and counted as a
 * rejected line; false when o is not a dead letter. Called with e->lock held. */
static bool is_dead_letter(const run_t *e, const ww_out_t *o) {
    return e->cfg->route.dlq_topic && strcmp(o->topic, e->cfg->route.dlq_topic) == 0;
}

static bool print_rejection(run_t *e, const ww_msg_t *m, const ww_out_t *o) {
    const ww_replay_config_t *cfg = e->cfg;
    if (!is_dead_letter(e, o)) return false;
    size_t cl, rl;
    const char *code = header(o, "ww.error.code", &cl);
    const char *reason = header(o, "ww.error.reason", &rl);
    fprintf(stderr, "%s:%lld: %.*s: %.*s\n", cfg->file, (long long)m->offset, (int)cl, code,
            (int)rl, reason);
    e->s->rejected++;
    e->s->dead_letters_out++;
    return true;
}

/* A dry run: outputs are discarded (counted as held back), but apply's
 * rejections are reported exactly as the real run reports them. */
static void dry_run_outputs(run_t *e, const ww_msg_t *m, const ww_outputs_t *outs) {
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < outs->n; i++) {
        const ww_out_t *o = &outs->out[i];
        if (!e->cfg->to_kafka && print_rejection(e, m, o)) continue;
        if (is_dead_letter(e, o))
            e->s->dead_letters_held++;
        else
            e->s->results_held++;
    }
    pthread_mutex_unlock(&e->lock);
}

static void emit(run_t *e, const ww_msg_t *m, ww_outputs_t *outs) {
    const ww_replay_config_t *cfg = e->cfg;
    for (size_t i = 0; i < outs->n; i++) {
        ww_out_t *o = &outs->out[i];
        bool dead_letter = is_dead_letter(e, o);
        if (cfg->to_kafka &&
            !(cfg->publish & (dead_letter ? WW_PUBLISH_DEAD_LETTERS : WW_PUBLISH_RESULTS))) {
            pthread_mutex_lock(&e->lock);
            if (dead_letter)
                e->s->dead_letters_held++;
            else
                e->s->results_held++;
            pthread_mutex_unlock(&e->lock);
            continue;
        }
        if (cfg->to_kafka) {
            ww_header_t hdrs[WW_OUT_HEADERS_MAX];
            for (size_t h = 0; h < o->n_headers; h++) {
                hdrs[h].name = o->headers[h].name;
                hdrs[h].value = o->headers[h].value;
                hdrs[h].value_len = o->headers[h].value_len;
            }
            ww_error_t err;
            atomic_fetch_add(&e->inflight, 1);
            while (!ww_bus_produce(e->producer, o->topic, o->key, o->key_len, o->value,
                                   o->value_len, hdrs, o->n_headers,
                                   dead_letter ? OUT_DEAD_LETTER : OUT_RESULT, &err)) {
                if (!err.retryable) {
                    atomic_fetch_sub(&e->inflight, 1);
                    atomic_fetch_add(&e->delivery_failed, 1);
                    ww_err("replay", "output not queued", WW_STR("error", err.message));
                    break;
                }
                ww_clock_sleep_ms(10, NULL);
            }
            continue;
        }
        /* apply: results to stdout, dead letters as errors with the line */
        pthread_mutex_lock(&e->lock);
        if (!print_rejection(e, m, o)) {
            fwrite(o->value, 1, o->value_len, stdout);
            fputc('\n', stdout);
            e->s->results_out++;
        }
        pthread_mutex_unlock(&e->lock);
    }
}

/* ---- workers ------------------------------------------------------------------ */

/* One message finished (ok) or given up (!ok, err says why): its outputs and
 * the summary. */
static void finish(run_t *e, const ww_msg_t *m, ww_outputs_t *outs, bool ok,
                   const ww_error_t *err) {
    const ww_replay_config_t *cfg = e->cfg;
    if (ok && !cfg->dry_run) emit(e, m, outs);
    else if (ok) dry_run_outputs(e, m, outs);
    pthread_mutex_lock(&e->lock);
    if (ok) {
        e->s->processed++;
        count_outcome(e, outs->outcome);
        if (!cfg->file && m->partition >= 0 && m->partition < WW_REPLAY_MAX_PARTITIONS)
            e->s->partitions[m->partition].count++;
    } else {
        e->s->not_processed++;
        ww_err("replay", "not processed", WW_INT("partition", m->partition), WW_INT("offset", m->offset),
               WW_STR("error", err->message));
    }
    pthread_mutex_unlock(&e->lock);
    ww_outputs_clear(outs);
}

/* The engine's sink: a message is over (decided, dead-lettered, or given up
 * after max_retry_ms of retryable failures or at *stop). */
static void engine_finish(void *ctx, void *item, const ww_msg_t *msg, ww_outputs_t *outs,
                          ww_engine_end_t end, const ww_error_t *error) {
    run_t *e = ctx;
    item_t *it = item;
    bool ok = end == WW_ENGINE_DONE || end == WW_ENGINE_FAILED;
    ww_error_t why;
    if (!ok && !error) {
        ww_error_set(&why, WW_ERR_INTERNAL, 0, false, "given up");
        error = &why;
    }
    finish(e, msg, outs, ok, error);
    ww_msg_destroy(it->kafka);
    free(it->buf);
    free(it);
}

/* Queues it for the workers; blocks while its worker's queue is full (no
 * group here: nobody to keep polling for). */
static void dispatch(run_t *e, item_t *it) {
    const ww_msg_t *m = it->kafka ? it->kafka : &it->file;
    ww_engine_submit(e->eng, it, m, 0, it->key, it->key_len, true);
}

static bool start_workers(run_t *e, ww_error_t *error) {
    const ww_replay_config_t *cfg = e->cfg;
    ww_engine_config_t ec = {
        .name = "replay",
        .workers = cfg->workers,
        .queue_depth = cfg->batch_max,
        .batch_max = cfg->batch_max,
        .retry_base_ms = 100,
        .retry_max_ms = 10000,
        /* 0 = give up at the first failure (the engine's 0 means never) */
        .retry_deadline_ms = cfg->max_retry_ms > 0 ? cfg->max_retry_ms : 1,
        .interrupt = e->stop,
    };
    ww_engine_sink_t sink = {.ctx = e, .finish = engine_finish};
    e->eng = ww_engine_new(&ec, &cfg->route, 1, &sink, error);
    return e->eng != NULL;
}

static void progress(run_t *e, int64_t started, uint64_t done_bytes, uint64_t total_bytes) {
    pthread_mutex_lock(&e->lock);
    uint64_t processed = e->s->processed + e->s->not_processed;
    uint64_t total = e->s->total;
    pthread_mutex_unlock(&e->lock);
    double secs = (double)(ww_clock_mono_ms() - started) / 1000.0;
    double rate = secs > 0 ? (double)processed / secs : 0;
    double pct = total ? 100.0 * (double)processed / (double)total
                       : (total_bytes ? 100.0 * (double)done_bytes / (double)total_bytes : 0);
    if (total && rate > 0)
        fprintf(stderr, "\rprogress: %llu/%llu %.1f%% %.0f msg/s ETA %.0fs   ",
                (unsigned long long)processed, (unsigned long long)total, pct, rate,
                (double)(total - processed) / rate);
    else
        fprintf(stderr, "\rprogress: %llu %.1f%% %.0f msg/s   ", (unsigned long long)processed,
                pct, rate);
    fflush(stderr);
}

/* ---- sources -------------------------------------------------------------------- */

static bool run_topic(run_t *e, ww_error_t *error) {
    const ww_replay_config_t *cfg = e->cfg;
    ww_replay_summary_t *s = e->s;
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    if (cfg->kafka) bc = *cfg->kafka;
    bc.brokers = cfg->brokers;
    bc.group_id = NULL;
    bc.producer = false;
    ww_bus_t *c = ww_bus_new(&bc, NULL, error);
    if (!c) return false;
    bool ok = false;
    int32_t n = 0;
    int64_t *start = NULL, *end = NULL;
    bool *done = NULL;
    if (!ww_bus_partition_count(c, cfg->topic, &n, 10000, error)) goto out;
    if (n > WW_REPLAY_MAX_PARTITIONS) n = WW_REPLAY_MAX_PARTITIONS;
    start = calloc((size_t)n, sizeof *start);
    end = calloc((size_t)n, sizeof *end);
    done = calloc((size_t)n, sizeof *done);
    if (!start || !end || !done) goto out;
    if (cfg->from == WW_FROM_TIMESTAMP &&
        !ww_bus_offsets_for_time(c, cfg->topic, n, cfg->from_ts_ms, start, 10000, error))
        goto out;
    if (cfg->to == WW_TO_TIMESTAMP &&
        !ww_bus_offsets_for_time(c, cfg->topic, n, cfg->to_ts_ms, end, 10000, error))
        goto out;
    s->n_partitions = n;
    for (int32_t p = 0; p < n; p++) {
        int64_t lo, hi;
        if (!ww_bus_watermarks(c, cfg->topic, p, &lo, &hi, 10000, error)) goto out;
        if (cfg->from == WW_FROM_BEGINNING) start[p] = lo;
        if (cfg->from == WW_FROM_OFFSETS) start[p] = cfg->from_offsets[p]; /* -1: not listed */
        if (cfg->to == WW_TO_END) end[p] = hi;
        if (cfg->to == WW_TO_OFFSETS) end[p] = cfg->to_offsets[p] >= 0 ? cfg->to_offsets[p] : hi;
        if (end[p] > hi) end[p] = hi;
        if (start[p] >= 0 && start[p] < lo) {
            ww_warn("replay", "earlier offsets are gone (retention); starting at the first one kept",
                    WW_INT("partition", p), WW_INT("offset", lo));
            start[p] = lo;
        }
        if (start[p] < 0 || start[p] >= end[p]) {
            done[p] = true;
            start[p] = -1;
        } else {
            s->total += (uint64_t)(end[p] - start[p]);
        }
        s->partitions[p].from = start[p] < 0 ? 0 : start[p];
        s->partitions[p].to = start[p] < 0 ? 0 : end[p];
    }
    if (s->total && !ww_bus_assign(c, cfg->topic, n, start, error)) goto out;
    ww_info("replay", "replaying", WW_STR("topic", cfg->topic), WW_INT("partitions", n),
            WW_UINT("messages", s->total), WW_STR("dry_run", cfg->dry_run ? "yes" : "no"));

    int64_t started = ww_clock_mono_ms(), next_progress = started + 1000;
    int32_t remaining = 0;
    for (int32_t p = 0; p < n; p++) remaining += !done[p];
    while (remaining > 0 && !*e->stop) {
        int32_t eofp;
        int64_t eofo;
        ww_msg_t *m = ww_bus_poll_range(c, 100, &eofp, &eofo);
        if (m) {
            int32_t p = m->partition;
            if (p < 0 || p >= n || done[p] || m->offset >= end[p]) {
                ww_msg_destroy(m);
            } else {
                if (m->offset >= end[p] - 1) {
                    done[p] = true;
                    remaining--;
                }
                item_t *it = calloc(1, sizeof *it);
                if (!it) {
                    ww_msg_destroy(m);
                    ww_error_set(error, WW_ERR_SYSTEM, 0, false, "out of memory");
                    goto out;
                }
                it->kafka = m;
                it->key = m->key; /* none: by partition, as live */
                it->key_len = m->key_len;
                dispatch(e, it);
            }
        } else if (eofp >= 0 && eofp < n && !done[eofp] && eofo >= end[eofp]) {
            done[eofp] = true; /* the range ended on records that are not messages */
            remaining--;
        }
        if (cfg->progress && ww_clock_mono_ms() >= next_progress) {
            progress(e, started, 0, 0);
            next_progress += 1000;
        }
    }
    ok = true;
out:
    free(start);
    free(end);
    free(done);
    ww_bus_destroy(c, 0);
    return ok;
}

/* The key a line is ordered by: its ownerUserId or code string when there is
 * one (keeps one wallet's or invite's lines in order), else the whole line. */
static void line_key(item_t *it, const char *line, size_t len) {
    static const char *const fields[] = {"\"ownerUserId\"", "\"code\""};
    for (size_t f = 0; f < 2; f++) {
        const char *k = memmem(line, len, fields[f], strlen(fields[f]));
        if (!k) continue;
        const char *q = memchr(k + strlen(fields[f]), '"', len - (size_t)(k - line) - strlen(fields[f]));
        if (!q) continue;
        const char *qe = memchr(q + 1, '"', len - (size_t)(q + 1 - line));
        if (qe) {
            it->key = q + 1;
            it->key_len = (size_t)(qe - q - 1);
            return;
        }
    }
    it->key = line;
    it->key_len = len;
}

static bool run_file(run_t *e, ww_error_t *error) {
    const ww_replay_config_t *cfg = e->cfg;
    bool is_stdin = strcmp(cfg->file, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(cfg->file, "rb");
    if (!f) {
        ww_error_set(error, WW_ERR_SYSTEM, errno, false, "%s: %s", cfg->file, strerror(errno));
        return false;
    }
    uint64_t total_bytes = 0, done_bytes = 0;
    struct stat st;
    if (!is_stdin && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
        total_bytes = (uint64_t)st.st_size;
    ww_lines_t *lines = ww_lines_new(f, (size_t)cfg->max_line_bytes, error);
    if (!lines) {
        if (!is_stdin) fclose(f);
        return false;
    }
    int64_t started = ww_clock_mono_ms(), next_progress = started + 1000;
    bool ok = true;
    ww_line_t line;
    while (!*e->stop) {
        ww_lines_result_t got = ww_lines_next(lines, &line, error);
        if (got == WW_LINES_ERROR) {
            if (error) {
                char why[sizeof error->message];
                snprintf(why, sizeof why, "%s", error->message);
                ww_error_set(error, WW_ERR_SYSTEM, error->code, false, "%s: %s", cfg->file, why);
            }
            ok = false;
            break;
        }
        if (got == WW_LINES_END) break;
        done_bytes += line.consumed;
        if (line.real_len == 0) continue; /* blank line */
        /* Every other line goes to the handler with its real bytes: one with
         * a NUL is rejected by the parser (invalid_encoding), one over the
         * limit keeps its first max+1 bytes, still too large for the handler,
         * so its rejection can show how it began. */
        item_t *it = calloc(1, sizeof *it);
        if (it) it->buf = malloc(line.len);
        if (!it || !it->buf) {
            free(it);
            ww_error_set(error, WW_ERR_SYSTEM, ENOMEM, false, "out of memory at line %lld",
                         (long long)line.number);
            ok = false;
            break;
        }
        memcpy(it->buf, line.bytes, line.len);
        it->file.topic = cfg->route.topic;
        it->file.partition = 0;
        it->file.offset = line.number;
        it->file.value = it->buf;
        it->file.value_len = line.len;
        it->file.full_len = line.real_len; /* a too_large rejection names the real size */
        it->file.timestamp_ms = -1;
        if (line.too_long) { /* only its first bytes are kept: ordered by nothing */
            it->key = &it->file.offset;
            it->key_len = sizeof it->file.offset;
        } else {
            line_key(it, it->buf, line.len);
        }
        dispatch(e, it);
        if (cfg->progress && ww_clock_mono_ms() >= next_progress) {
            progress(e, started, done_bytes, total_bytes);
            next_progress += 1000;
        }
    }
    ww_lines_destroy(lines);
    if (!is_stdin) fclose(f);
    return ok;
}

bool ww_replay_run(const ww_replay_config_t *cfg, ww_replay_summary_t *summary,
                   volatile int *stop, ww_error_t *error) {
    memset(summary, 0, sizeof *summary);
    run_t e;
    memset(&e, 0, sizeof e);
    e.cfg = cfg;
    e.s = summary;
    e.stop = stop;
    pthread_mutex_init(&e.lock, NULL);
    int64_t t0 = ww_clock_mono_ms();
    bool ok = false;
    if (cfg->to_kafka && !cfg->dry_run && cfg->publish != WW_PUBLISH_NONE) {
        ww_bus_config_t bc;
        ww_bus_config_defaults(&bc);
        if (cfg->kafka) bc = *cfg->kafka;
        bc.brokers = cfg->brokers;
        bc.consumer = false;
        ww_bus_hooks_t hooks = {.ctx = &e, .on_delivery = on_delivery};
        e.producer = ww_bus_new(&bc, &hooks, error);
        if (!e.producer) goto out;
    }
    if (!start_workers(&e, error)) goto out;
    ok = cfg->file ? run_file(&e, error) : run_topic(&e, error);
    ww_engine_stop(e.eng); /* every queued message finished */
    if (e.producer) {
        /* every output acknowledged before we report success */
        int64_t deadline = ww_clock_mono_ms() + 60000;
        while (atomic_load(&e.inflight) > 0 && ww_clock_mono_ms() < deadline)
            ww_clock_sleep_ms(2, NULL);
        if (atomic_load(&e.inflight) > 0 || atomic_load(&e.delivery_failed) > 0) {
            ww_err("replay", "output(s) not delivered",
                   WW_INT("outputs", atomic_load(&e.inflight) + atomic_load(&e.delivery_failed)));
            summary->not_processed += (uint64_t)(atomic_load(&e.inflight) +
                                                 atomic_load(&e.delivery_failed));
        }
        summary->results_out = atomic_load(&e.results_delivered);
        summary->dead_letters_out = atomic_load(&e.dead_letters_delivered);
    }
    if (cfg->progress) {
        progress(&e, t0, 1, 1);
        fputc('\n', stderr);
    }
out:
    ww_engine_destroy(e.eng);
    ww_bus_destroy(e.producer, 10000);
    summary->elapsed_ms = ww_clock_mono_ms() - t0;
    if (*stop && summary->total > summary->processed + summary->not_processed)
        summary->not_processed = summary->total - summary->processed;
    pthread_mutex_destroy(&e.lock);
    return ok;
}
