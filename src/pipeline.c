/* pipeline.c: see pipeline.h for the design. */
#include "pipeline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "engine.h"
#include "command.h"
#include "sha256.h"
#include "health.h"
#include "log.h"
#include "metrics.h"

typedef struct part part_t;
typedef struct entry entry_t;

typedef struct {
    entry_t *e;
    int idx;
} delivery_t;

struct entry {
    part_t *part;
    int64_t offset;
    entry_t *next;       /* partition deque, offset order */
    entry_t *held_next;  /* held list (not yet dispatched) */
    entry_t *redo_next;  /* outputs to produce again */
    int refs;            /* deque + worker + undelivered outputs */
    bool processed;      /* handler finished successfully */
    bool done;           /* processed and every output acknowledged */
    bool abandoned;      /* partition revoked / shutdown: never counts as done */
    bool in_redo;        /* on p->redo (at most once: the list never cycles) */
    int redo_attempts;   /* outputs produced again (log every 60th) */
    int pending;         /* outputs not yet acknowledged */
    int64_t fetched_ms;  /* monotonic: the uncommitted-age gauge */
    bool failed_out[WW_OUT_MAX]; /* under p->lock */
    ww_msg_t *msg;
    const ww_route_t *route;
    ww_outputs_t outs;
    delivery_t dl[WW_OUT_MAX];
};

struct part {
    char topic[250];
    int32_t partition;
    bool assigned;
    entry_t *head, *tail;
    part_t *next;
};

struct ww_pipeline {
    ww_pipeline_config_t cfg;
    ww_route_t *routes;
    size_t n_routes;
    ww_bus_t *bus;

    pthread_mutex_t lock; /* parts, entries, held and redo lists */
    pthread_cond_t changed;
    part_t *parts;
    entry_t *held_head, *held_tail;
    entry_t *redo;
    bool paused;

    ww_engine_t *engine;  /* the workers */
    atomic_bool quit;     /* shutting down: produce nothing more */
    atomic_bool stopping; /* shutdown deadline passed: give up retries, drop late outputs */
    bool workers_joined;
    atomic_uint_fast64_t done_count;
    int64_t unkeyed_warned_at, unkeyed_since_warn; /* poll thread */
};

/* ---- outputs ------------------------------------------------------------ */

ww_out_t *ww_outputs_add(ww_outputs_t *outs, const char *topic, const void *key, size_t key_len,
                         const void *value, size_t value_len) {
    if (outs->n >= WW_OUT_MAX) return NULL;
    if (!key) key_len = 0;
    if (!value) value_len = 0;
    ww_out_t *o = &outs->out[outs->n];
    memset(o, 0, sizeof *o);
    snprintf(o->topic, sizeof o->topic, "%s", topic);
    if (key_len) {
        o->key = malloc(key_len);
        if (!o->key) return NULL;
        memcpy(o->key, key, key_len);
        o->key_len = key_len;
    }
    if (value_len) {
        o->value = malloc(value_len);
        if (!o->value) {
            free(o->key);
            o->key = NULL;
            return NULL;
        }
        memcpy(o->value, value, value_len);
        o->value_len = value_len;
    }
    outs->n++;
    return o;
}

bool ww_out_add_header(ww_out_t *out, const char *name, const void *value, size_t value_len) {
    if (out->n_headers >= WW_OUT_HEADERS_MAX) return false;
    ww_out_header_t *h = &out->headers[out->n_headers];
    snprintf(h->name, sizeof h->name, "%s", name);
    h->value = malloc(value_len ? value_len : 1);
    if (!h->value) return false;
    memcpy(h->value, value, value_len);
    h->value_len = value_len;
    out->n_headers++;
    return true;
}

void ww_outputs_clear(ww_outputs_t *outs) {
    for (size_t i = 0; i < outs->n; i++) {
        free(outs->out[i].key);
        free(outs->out[i].value);
        for (size_t h = 0; h < outs->out[i].n_headers; h++) free(outs->out[i].headers[h].value);
    }
    memset(outs, 0, sizeof *outs);
}

/* ---- entries (all under p->lock) ------------------------------------------ */

static void entry_unref(entry_t *e) {
    if (--e->refs > 0) return;
    ww_msg_destroy(e->msg);
    ww_outputs_clear(&e->outs);
    free(e);
}

static void mark_done(ww_pipeline_t *p, entry_t *e) {
    e->done = true;
    atomic_fetch_add(&p->done_count, 1);
    pthread_cond_broadcast(&p->changed);
}

static part_t *find_part(ww_pipeline_t *p, const char *topic, int32_t partition, bool create) {
    for (part_t *pt = p->parts; pt; pt = pt->next)
        if (pt->partition == partition && strcmp(pt->topic, topic) == 0) return pt;
    if (!create) return NULL;
    part_t *pt = calloc(1, sizeof *pt);
    if (!pt) return NULL;
    snprintf(pt->topic, sizeof pt->topic, "%s", topic);
    pt->partition = partition;
    pt->next = p->parts;
    p->parts = pt;
    return pt;
}

/* ---- producing outputs ---------------------------------------------------- */

typedef enum {
    PRODUCE_QUEUED,   /* the delivery report will tell */
    PRODUCE_LATER,    /* retryable (queue full for long, topic missing): redo list */
    PRODUCE_GIVEN_UP, /* refused for good (too large, ...): finished without it */
    PRODUCE_ABANDON,  /* shutting down / fatal: the message stays uncommitted */
} produce_result_t;

/* Under p->lock. An output that can never be produced must not hold its
 * message back: the commit would stall on it forever (every restart too). */
static void output_given_up(ww_pipeline_t *p, entry_t *e, int i, const ww_error_t *err) {
    const ww_out_t *o = &e->outs.out[i];
    ww_err("pipeline", "output given up: the message is finished without it", WW_STR("topic", o->topic),
           WW_STR("source_topic", e->msg->topic), WW_INT("source_partition", e->msg->partition),
           WW_INT("source_offset", e->msg->offset), WW_UINT("bytes", o->key_len + o->value_len),
           WW_STR("error", err->message));
    ww_metrics_inc_output_failure(o->topic, ww_bus_error_name(err->code));
    (void)p;
}

/* Under p->lock: output i is settled (delivered or given up). */
static void output_settled(ww_pipeline_t *p, entry_t *e) {
    e->pending--;
    if (e->pending == 0 && !e->abandoned) mark_done(p, e);
    entry_unref(e);
}

static produce_result_t produce_one(ww_pipeline_t *p, entry_t *e, int i, ww_error_t *err) {
    ww_out_t *o = &e->outs.out[i];
    ww_header_t hdrs[WW_OUT_HEADERS_MAX];
    for (size_t h = 0; h < o->n_headers; h++) {
        hdrs[h].name = o->headers[h].name;
        hdrs[h].value = o->headers[h].value;
        hdrs[h].value_len = o->headers[h].value_len;
    }
    ww_error_clear(err);
    for (int attempt = 0;; attempt++) {
        if (ww_bus_produce(p->bus, o->topic, o->key, o->key_len, o->value, o->value_len, hdrs,
                           o->n_headers, &e->dl[i], err))
            return PRODUCE_QUEUED;
        if (ww_bus_error_permanent(err)) return PRODUCE_GIVEN_UP;
        if (!err->retryable || atomic_load(&p->quit)) {
            ww_err("pipeline", "cannot queue output", WW_STR("topic", o->topic), WW_STR("error", err->message));
            return PRODUCE_ABANDON;
        }
        /* a full queue usually drains within a second; longer, or a missing
         * topic, goes to the redo list (the poll loop retries every second) */
        if (attempt >= 100) return PRODUCE_LATER;
        ww_clock_sleep_ms(10, NULL);
    }
}

/* Under p->lock: output i goes (back) on the redo list, the entry at most once. */
static void redo_later(ww_pipeline_t *p, entry_t *e, int i, const ww_error_t *err) {
    if (e->redo_attempts++ % 60 == 0)
        ww_err("pipeline", "output not produced (retrying every second)", WW_STR("topic", e->outs.out[i].topic),
               WW_STR("error", err->message), WW_INT("attempt", e->redo_attempts));
    e->failed_out[i] = true;
    if (!e->in_redo) {
        e->in_redo = true;
        e->redo_next = p->redo;
        p->redo = e;
    }
    ww_metrics_inc_retry("produce");
}

/* Produces output i of e (not under the lock) and settles what cannot be queued. */
static void produce_output(ww_pipeline_t *p, entry_t *e, int i) {
    ww_error_t err;
    produce_result_t r = produce_one(p, e, i, &err);
    if (r == PRODUCE_QUEUED) return;
    pthread_mutex_lock(&p->lock);
    if (r == PRODUCE_LATER) {
        redo_later(p, e, i, &err);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    if (r == PRODUCE_GIVEN_UP) {
        output_given_up(p, e, i, &err);
    } else {
        /* could not even queue it: undone, re-run after restart */
        e->abandoned = true;
    }
    output_settled(p, e);
    pthread_mutex_unlock(&p->lock);
}

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    ww_pipeline_t *p = ctx;
    delivery_t *d = opaque;
    entry_t *e = d->e;
    pthread_mutex_lock(&p->lock);
    if (!error) {
        output_settled(p, e);
    } else if (!error->retryable) {
        output_given_up(p, e, d->idx, error);
        output_settled(p, e);
    } else if (atomic_load(&p->quit)) {
        /* purged at shutdown: the message stays uncommitted */
        e->abandoned = true;
        output_settled(p, e);
    } else {
        /* Broker trouble (e.g. the topic is missing): keep the entry undone
         * and produce this output again from the poll loop. */
        ww_err("pipeline", "delivery failed (will retry)", WW_STR("topic", e->outs.out[d->idx].topic),
               WW_STR("error", error->message));
        redo_later(p, e, d->idx, error);
    }
    pthread_mutex_unlock(&p->lock);
}

/* ---- workers -------------------------------------------------------------- */

bool ww_message_precheck(const ww_msg_t *msg, int32_t max_bytes, ww_error_t *error) {
    if (!msg->value || msg->value_len == 0) {
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_INVALID_JSON, false, "empty message");
        return false;
    }
    if (msg->value_len > (size_t)max_bytes) {
        /* the real size, also when only a prefix was kept (apply) */
        uint64_t size = msg->full_len > msg->value_len ? msg->full_len : msg->value_len;
        ww_error_set(error, WW_ERR_INPUT, WW_COMMAND_TOO_LARGE, false,
                     "message of %llu bytes is larger than %d", (unsigned long long)size,
                     max_bytes);
        return false;
    }
    return true;
}

/* A plain decimal number (no sign, no space) of at most 19 digits and at
 * most max; false otherwise. */
static bool parse_decimal(const void *v, size_t len, uint64_t max, uint64_t *out) {
    const unsigned char *p = v;
    if (!p || len == 0 || len > 19) return false;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        n = n * 10 + (uint64_t)(p[i] - '0'); /* 19 digits cannot overflow */
    }
    if (n > max) return false;
    *out = n;
    return true;
}

static bool legal_topic(const void *v, size_t len) {
    const unsigned char *p = v;
    if (!p || len == 0 || len > 249) return false;
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == '_' || p[i] == '-'))
            return false;
    return true;
}

bool ww_dlq_origin_parse(const ww_header_t *headers, size_t n, ww_dlq_origin_t *origin) {
    memset(origin, 0, sizeof *origin);
    origin->timestamp_ms = -1;
    const ww_header_t *topic = NULL, *part = NULL, *off = NULL, *ts = NULL, *count = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (!name) continue;
        if (strcmp(name, "ww.source.topic") == 0) topic = &headers[i];
        else if (strcmp(name, "ww.source.partition") == 0) part = &headers[i];
        else if (strcmp(name, "ww.source.offset") == 0) off = &headers[i];
        else if (strcmp(name, "ww.source.timestamp") == 0) ts = &headers[i];
        else if (strcmp(name, "ww.redrive.count") == 0) count = &headers[i];
    }
    uint64_t v;
    if (count && parse_decimal(count->value, count->value_len, UINT64_MAX, &v))
        origin->redrives = v > WW_REDRIVE_COUNT_MAX ? WW_REDRIVE_COUNT_MAX : (uint32_t)v;
    uint64_t p, o;
    if (!topic || !part || !off || !legal_topic(topic->value, topic->value_len) ||
        !parse_decimal(part->value, part->value_len, INT32_MAX, &p) ||
        !parse_decimal(off->value, off->value_len, INT64_MAX, &o))
        return false;
    memcpy(origin->topic, topic->value, topic->value_len);
    origin->topic[topic->value_len] = '\0';
    origin->partition = (int32_t)p;
    origin->offset = (int64_t)o;
    if (ts && parse_decimal(ts->value, ts->value_len, INT64_MAX, &v)) origin->timestamp_ms = (int64_t)v;
    return true;
}

/* A re-drive (msg read from dlq_topic): the origin its headers name, or the
 * message's own place when they do not parse. */
static void redrive_origin(const ww_msg_t *m, ww_dlq_origin_t *origin) {
    static const char *const names[] = {"ww.source.topic", "ww.source.partition",
                                        "ww.source.offset", "ww.source.timestamp",
                                        "ww.redrive.count"};
    ww_header_t h[5];
    size_t n = 0;
    for (size_t i = 0; i < 5; i++) {
        const void *v;
        size_t len;
        if (ww_msg_header(m, names[i], &v, &len)) h[n++] = (ww_header_t){names[i], v, len};
    }
    if (ww_dlq_origin_parse(h, n, origin)) return;
    snprintf(origin->topic, sizeof origin->topic, "%s", m->topic);
    origin->partition = m->partition;
    origin->offset = m->offset;
    origin->timestamp_ms = m->timestamp_ms;
}

ww_out_t *ww_outputs_dead_letter(ww_outputs_t *outs, const char *dlq_topic, const ww_msg_t *m,
                                 const char *code, const char *reason) {
    /* A copy the producer would refuse is truncated: otherwise the dead
     * letter could never be written and its message never finish. */
    bool truncate = m->key_len + m->value_len + WW_DLQ_HEADROOM > WW_BUS_MESSAGE_MAX;
    size_t keep = truncate ? WW_DLQ_TRUNCATED_BYTES : m->value_len;
    if (keep > m->value_len) keep = m->value_len;
    ww_out_t *o = ww_outputs_add(outs, dlq_topic, m->key, m->key_len, m->value, keep);
    if (!o) return NULL;
    char num[32];
    if (truncate) {
        char hex[WW_SHA256_HEX_LEN];
        ww_sha256_hex(m->value, m->value_len, hex);
        ww_out_add_header(o, "ww.truncated", "true", 4);
        int len = snprintf(num, sizeof num, "%zu", m->value_len);
        ww_out_add_header(o, "ww.original.size", num, (size_t)len);
        ww_out_add_header(o, "ww.original.sha256", hex, strlen(hex));
    }
    ww_out_add_header(o, "ww.error.code", code, strlen(code));
    ww_out_add_header(o, "ww.error.reason", reason, strlen(reason));
    /* a re-drive keeps where the message first came from */
    bool redrive = m->topic && dlq_topic && strcmp(m->topic, dlq_topic) == 0;
    ww_dlq_origin_t from = {.partition = m->partition, .offset = m->offset,
                            .timestamp_ms = m->timestamp_ms};
    if (redrive)
        redrive_origin(m, &from);
    else
        snprintf(from.topic, sizeof from.topic, "%s", m->topic ? m->topic : "");
    ww_out_add_header(o, "ww.source.topic", from.topic, strlen(from.topic));
    int n = snprintf(num, sizeof num, "%d", from.partition);
    ww_out_add_header(o, "ww.source.partition", num, (size_t)n);
    n = snprintf(num, sizeof num, "%lld", (long long)from.offset);
    ww_out_add_header(o, "ww.source.offset", num, (size_t)n);
    if (from.timestamp_ms >= 0) {
        n = snprintf(num, sizeof num, "%lld", (long long)from.timestamp_ms);
        ww_out_add_header(o, "ww.source.timestamp", num, (size_t)n);
    }
    if (redrive) {
        uint32_t count = from.redrives < WW_REDRIVE_COUNT_MAX ? from.redrives + 1 : from.redrives;
        n = snprintf(num, sizeof num, "%u", count);
        ww_out_add_header(o, "ww.redrive.count", num, (size_t)n);
    }
    return o;
}

/* Settles a processed (or given-up) entry: takes over its outputs and
 * produces them, or drops it when it was not finished. */
static void finish_entry(ww_pipeline_t *p, entry_t *e, ww_outputs_t *outs, bool finished) {
    pthread_mutex_lock(&p->lock);
    if (finished && atomic_load(&p->stopping)) {
        /* Finished after the shutdown deadline: the producer may be going
         * away. Its outputs are dropped and the message stays uncommitted:
         * it is processed again (idempotently) after the restart. */
        finished = false;
        e->abandoned = true;
    }
    if (!finished) {
        /* given up: revoked or shutting down; the offset stays unstored */
        if (outs) ww_outputs_clear(outs);
        entry_unref(e);
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    e->processed = true;
    e->outs = *outs;
    memset(outs, 0, sizeof *outs);
    e->pending = (int)e->outs.n;
    e->refs += (int)e->outs.n;
    if (e->outs.n == 0 && !e->abandoned) mark_done(p, e);
    pthread_mutex_unlock(&p->lock);

    for (size_t i = 0; i < e->outs.n; i++) {
        e->dl[i].e = e;
        e->dl[i].idx = (int)i;
        produce_output(p, e, (int)i);
    }
    pthread_mutex_lock(&p->lock);
    entry_unref(e); /* the worker's reference */
    pthread_mutex_unlock(&p->lock);
}

/* ---- the engine's sink ------------------------------------------------------ */

/* The engine's verdict on an entry: produce its outputs, or drop it (revoked,
 * shutting down: the offset stays unstored). */
static void engine_finish(void *ctx, void *item, const ww_msg_t *msg, ww_outputs_t *outs,
                          ww_engine_end_t end, const ww_error_t *error) {
    ww_pipeline_t *p = ctx;
    entry_t *e = item;
    (void)error;
    if (end == WW_ENGINE_FAILED && outs->n > 0) {
        ww_metrics_inc_dead_letter(msg->topic, "processing_failed");
        ww_metrics_inc_processed(msg->topic, "failed");
    }
    bool finished = end == WW_ENGINE_DONE || end == WW_ENGINE_FAILED;
    finish_entry(p, e, finished ? outs : NULL, finished);
}

/* Revoked, or the shutdown deadline passed: given up (outputs dropped). */
static bool engine_gone(void *ctx, void *item) {
    ww_pipeline_t *p = ctx;
    entry_t *e = item;
    if (atomic_load(&p->stopping)) return true;
    pthread_mutex_lock(&p->lock);
    bool gone = e->abandoned;
    pthread_mutex_unlock(&p->lock);
    return gone;
}

/* ---- dispatch -------------------------------------------------------------- */

/* Under p->lock; false when the worker's queue is full. */
static bool dispatch(ww_pipeline_t *p, entry_t *e) {
    return ww_engine_submit(p->engine, e, e->msg, (size_t)(e->route - p->routes), e->msg->key,
                            e->msg->key_len, false);
}

static const ww_route_t *route_for(ww_pipeline_t *p, const char *topic) {
    for (size_t i = 0; i < p->n_routes; i++)
        if (strcmp(p->routes[i].topic, topic) == 0) return &p->routes[i];
    return NULL;
}

/* Takes ownership of msg. */
/* A message without a key lands on any partition: its order against the
 * owner's other messages is not guaranteed. Counted, and said once a minute
 * (poll thread only). */
static void note_unkeyed(ww_pipeline_t *p, const ww_msg_t *msg) {
    ww_metrics_inc_unkeyed(msg->topic);
    p->unkeyed_since_warn++;
    int64_t now = ww_clock_mono_ms();
    if (p->unkeyed_warned_at && now - p->unkeyed_warned_at < 60000) return;
    ww_warn("pipeline", "message without a Kafka key: its order against the same owner's other messages "
            "is not guaranteed; producers should key by owner", WW_STR("topic", msg->topic),
            WW_INT("partition", msg->partition), WW_INT("offset", msg->offset),
            WW_INT("since_last_line", p->unkeyed_since_warn));
    p->unkeyed_warned_at = now;
    p->unkeyed_since_warn = 0;
}

static void accept(ww_pipeline_t *p, ww_msg_t *msg) {
    ww_metrics_inc_consumed(msg->topic);
    if (!msg->key || msg->key_len == 0) note_unkeyed(p, msg);
    const ww_route_t *route = route_for(p, msg->topic);
    entry_t *e = calloc(1, sizeof *e);
    pthread_mutex_lock(&p->lock);
    part_t *pt = find_part(p, msg->topic, msg->partition, false);
    if (!route || !pt || !pt->assigned || !e) {
        /* not ours (late message of a revoked partition): its next owner reads it */
        pthread_mutex_unlock(&p->lock);
        free(e);
        ww_msg_destroy(msg);
        return;
    }
    e->part = pt;
    e->offset = msg->offset;
    e->msg = msg;
    e->route = route;
    e->refs = 2; /* deque + worker */
    e->fetched_ms = ww_clock_mono_ms();
    if (pt->tail)
        pt->tail->next = e;
    else
        pt->head = e;
    pt->tail = e;
    bool hold = p->held_head != NULL;
    if (!hold && !dispatch(p, e)) hold = true;
    if (hold) {
        if (p->held_tail)
            p->held_tail->held_next = e;
        else
            p->held_head = e;
        p->held_tail = e;
    }
    pthread_mutex_unlock(&p->lock);
    if (hold) {
        /* backpressure: stop fetching until the workers catch up */
        if (!p->paused) ww_debug("pipeline", "workers busy: pausing fetch");
        ww_bus_pause_all(p->bus);
        p->paused = true;
    }
}

/* Dispatches held entries in order; resumes fetching once all are out. */
static void drain_held(ww_pipeline_t *p) {
    pthread_mutex_lock(&p->lock);
    while (p->held_head) {
        entry_t *e = p->held_head;
        if (!e->abandoned && !dispatch(p, e)) break;
        p->held_head = e->held_next;
        if (!p->held_head) p->held_tail = NULL;
        e->held_next = NULL;
        if (e->abandoned) entry_unref(e); /* the worker reference it never used */
    }
    bool empty = p->held_head == NULL;
    pthread_mutex_unlock(&p->lock);
    if (empty && p->paused) {
        ww_bus_resume_all(p->bus);
        p->paused = false;
        ww_debug("pipeline", "resumed fetch");
    }
}

/* Produces failed outputs again. The list is taken whole and each entry's
 * failed outputs are read and cleared under the lock; a delivery failing
 * again meanwhile puts its entry on the new list (once). */
static void redo_outputs(ww_pipeline_t *p) {
    pthread_mutex_lock(&p->lock);
    entry_t *list = p->redo;
    p->redo = NULL;
    pthread_mutex_unlock(&p->lock);
    for (entry_t *e = list, *next; e; e = next) {
        bool again[WW_OUT_MAX] = {false};
        pthread_mutex_lock(&p->lock);
        next = e->redo_next;
        e->redo_next = NULL;
        e->in_redo = false;
        int n_again = 0;
        for (size_t i = 0; i < e->outs.n; i++) {
            again[i] = e->failed_out[i];
            e->failed_out[i] = false;
            n_again += again[i];
        }
        if (e->abandoned) {
            /* revoked: its next owner answers it; nothing to produce (the
             * last settle may free e) */
            for (int k = 0; k < n_again; k++) output_settled(p, e);
            pthread_mutex_unlock(&p->lock);
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < WW_OUT_MAX; i++)
            if (again[i]) produce_output(p, e, i);
    }
}

/* Stores the contiguous done prefix of every assigned partition. */
static void store_offsets(ww_pipeline_t *p) {
    for (;;) {
        char topic[250];
        int32_t partition = -1;
        int64_t next = -1;
        pthread_mutex_lock(&p->lock);
        for (part_t *pt = p->parts; pt && partition < 0; pt = pt->next) {
            if (!pt->assigned || !pt->head || !pt->head->done) continue;
            while (pt->head && pt->head->done) {
                entry_t *e = pt->head;
                next = e->offset + 1;
                pt->head = e->next;
                if (!pt->head) pt->tail = NULL;
                entry_unref(e);
            }
            snprintf(topic, sizeof topic, "%s", pt->topic);
            partition = pt->partition;
        }
        pthread_mutex_unlock(&p->lock);
        if (partition < 0) return;
        ww_error_t err;
        if (!ww_bus_store_offset(p->bus, topic, partition, next, &err))
            ww_warn("pipeline", "offset not stored", WW_STR("error", err.message));
        else
            ww_debug("pipeline", "stored", WW_STR("topic", topic), WW_INT("partition", partition),
                     WW_INT("offset", next));
    }
}

/* Publishes, per route topic, the messages not yet committed (fetched and
 * not part of a stored done prefix) and the age of the oldest. Returns the
 * total. The deques are bounded by the worker queues and the fetch pause. */
static int64_t publish_uncommitted(ww_pipeline_t *p, int64_t now) {
    int64_t total = 0;
    pthread_mutex_lock(&p->lock);
    for (size_t r = 0; r < p->n_routes; r++) {
        int64_t n = 0, oldest = now;
        for (part_t *pt = p->parts; pt; pt = pt->next) {
            if (!pt->assigned || strcmp(pt->topic, p->routes[r].topic) != 0) continue;
            for (entry_t *e = pt->head; e; e = e->next) {
                n++;
                if (e->fetched_ms < oldest) oldest = e->fetched_ms;
            }
        }
        ww_metrics_set_uncommitted(p->routes[r].topic, n, (now - oldest) / 1000);
        total += n;
    }
    pthread_mutex_unlock(&p->lock);
    return total;
}

/* true when no entry of the given partitions (all when parts==NULL) is
 * dispatched and unfinished. Under p->lock. */
static bool quiet(ww_pipeline_t *p, const ww_partition_t *parts, size_t n) {
    for (part_t *pt = p->parts; pt; pt = pt->next) {
        if (!pt->assigned) continue;
        bool match = parts == NULL;
        for (size_t i = 0; i < n && !match; i++)
            match = parts[i].partition == pt->partition && strcmp(parts[i].topic, pt->topic) == 0;
        if (!match) continue;
        for (entry_t *e = pt->head; e; e = e->next)
            if (!e->done && !e->abandoned) return false;
    }
    return true;
}

/* Abandons undispatched (held) entries of the matching partitions. */
static void abandon_held(ww_pipeline_t *p, const ww_partition_t *parts, size_t n) {
    for (entry_t *e = p->held_head; e; e = e->held_next) {
        bool match = parts == NULL;
        for (size_t i = 0; i < n && !match; i++)
            match = parts[i].partition == e->part->partition &&
                    strcmp(parts[i].topic, e->part->topic) == 0;
        if (match) e->abandoned = true;
    }
}

static void wait_quiet(ww_pipeline_t *p, const ww_partition_t *parts, size_t n, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    abandon_held(p, parts, n);
    while (!quiet(p, parts, n))
        if (pthread_cond_timedwait(&p->changed, &p->lock, &deadline) != 0) break;
    pthread_mutex_unlock(&p->lock);
}

/* ---- rebalance hooks (poll thread) ------------------------------------------ */

static void on_assign(void *ctx, const ww_partition_t *parts, size_t n) {
    ww_pipeline_t *p = ctx;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        part_t *pt = find_part(p, parts[i].topic, parts[i].partition, true);
        if (pt) {
            pt->assigned = true;
            pt->head = pt->tail = NULL;
        }
    }
    pthread_mutex_unlock(&p->lock);
}

static void on_revoke(void *ctx, const ww_partition_t *parts, size_t n, bool lost) {
    ww_pipeline_t *p = ctx;
    /* Lost partitions already belong to someone else: do not wait for them. */
    wait_quiet(p, parts, n, lost ? 0 : p->cfg.shutdown_timeout_ms);
    if (!lost) store_offsets(p);
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        part_t *pt = find_part(p, parts[i].topic, parts[i].partition, false);
        if (!pt) continue;
        for (entry_t *e = pt->head, *next; e; e = next) {
            next = e->next;
            if (!e->done) e->abandoned = true;
            e->next = NULL;
            entry_unref(e);
        }
        pt->head = pt->tail = NULL;
        pt->assigned = false;
    }
    /* held entries of these partitions leave the held list now */
    entry_t **link = &p->held_head;
    p->held_tail = NULL;
    while (*link) {
        entry_t *e = *link;
        if (e->abandoned) {
            *link = e->held_next;
            entry_unref(e);
        } else {
            p->held_tail = e;
            link = &e->held_next;
        }
    }
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

/* ---- public ---------------------------------------------------------------- */

void ww_pipeline_config_defaults(ww_pipeline_config_t *cfg) {
    cfg->workers = 8;
    cfg->queue_depth = 64;
    cfg->shutdown_timeout_ms = 5000;
    cfg->retry_base_ms = 100;
    cfg->retry_max_ms = 10000;
    cfg->batch_max = 512;
}

ww_pipeline_t *ww_pipeline_new(const ww_pipeline_config_t *cfg, const ww_route_t *routes,
                               size_t n_routes, ww_error_t *error) {
    if (n_routes == 0 || n_routes > WW_PIPELINE_MAX_ROUTES) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "between 1 and %d routes, not %zu",
                     WW_PIPELINE_MAX_ROUTES, n_routes);
        return NULL;
    }
    ww_pipeline_t *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->cfg = *cfg;
    if (p->cfg.retry_base_ms < 2) p->cfg.retry_base_ms = 2;
    if (p->cfg.retry_max_ms < p->cfg.retry_base_ms) p->cfg.retry_max_ms = p->cfg.retry_base_ms;
    p->routes = calloc(n_routes, sizeof *routes);
    if (!p->routes) goto oom;
    memcpy(p->routes, routes, n_routes * sizeof *routes);
    p->n_routes = n_routes;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    ww_engine_config_t ec = {.name = "pipeline", .workers = cfg->workers,
                             .queue_depth = cfg->queue_depth, .batch_max = cfg->batch_max,
                             .retry_base_ms = p->cfg.retry_base_ms,
                             .retry_max_ms = p->cfg.retry_max_ms};
    ww_engine_sink_t sink = {.ctx = p, .finish = engine_finish, .gone = engine_gone};
    p->engine = ww_engine_new(&ec, p->routes, n_routes, &sink, error);
    if (!p->engine) {
        ww_pipeline_destroy(p);
        return NULL;
    }
    return p;
oom:
    ww_error_set(error, WW_ERR_SYSTEM, 0, false, "out of memory");
    if (p) free(p->routes);
    free(p);
    return NULL;
}

ww_bus_hooks_t ww_pipeline_bus_hooks(ww_pipeline_t *p) {
    ww_bus_hooks_t h = {.ctx = p, .on_assign = on_assign, .on_revoke = on_revoke,
                        .on_delivery = on_delivery};
    return h;
}

void ww_pipeline_attach(ww_pipeline_t *p, ww_bus_t *bus) { p->bus = bus; }

void ww_pipeline_run(ww_pipeline_t *p, volatile int *stop) {
    int64_t next_lag = 0, next_gauge = 0, next_redo = 0;
    while (!*stop && !ww_bus_fatal(p->bus)) {
        int64_t now = ww_clock_mono_ms();
        ww_health_progress(now);
        if (p->held_head || p->paused) drain_held(p);
        if (p->redo && now >= next_redo) {
            redo_outputs(p);
            next_redo = now + 1000;
        }
        ww_msg_t *m = ww_bus_poll(p->bus, 100);
        if (m) accept(p, m);
        store_offsets(p);
        if (now >= next_gauge) {
            publish_uncommitted(p, now);
            next_gauge = now + 1000;
        }
        if (now >= next_lag) {
            ww_bus_update_lag(p->bus);
            next_lag = now + 5000;
        }
    }
    /* Drain: finish what is in flight (bounded), store, commit. */
    ww_info("pipeline", "stopping: waiting for in-flight messages",
            WW_INT("timeout_ms", p->cfg.shutdown_timeout_ms));
    wait_quiet(p, NULL, 0, p->cfg.shutdown_timeout_ms);
    atomic_store(&p->stopping, true);
    store_offsets(p);
    /* What did not finish in time is given up now (it stays uncommitted and
     * is redelivered to whoever owns the partition next), so leaving the
     * group below does not wait for it a second time. */
    int64_t left = publish_uncommitted(p, ww_clock_mono_ms());
    pthread_mutex_lock(&p->lock);
    for (part_t *pt = p->parts; pt; pt = pt->next)
        for (entry_t *e = pt->head; e; e = e->next)
            if (!e->done) e->abandoned = true;
    pthread_mutex_unlock(&p->lock);
    ww_info("pipeline", "stopping: message(s) left uncommitted are processed again, "
            "idempotently, by the partition's next owner", WW_INT("left_uncommitted", left));
    ww_error_t err;
    if (!ww_bus_commit_stored(p->bus, &err)) ww_warn("pipeline", "commit failed", WW_STR("error", err.message));
}

void ww_pipeline_stop_workers(ww_pipeline_t *p) {
    if (!p || p->workers_joined) return;
    atomic_store(&p->stopping, true);
    atomic_store(&p->quit, true);
    int busy = p->engine ? ww_engine_busy(p->engine) : 0;
    if (busy)
        ww_info("pipeline", "waiting for worker thread(s) still inside a handler (at most "
                "the database socket timeout); their late outputs are dropped", WW_INT("busy", busy));
    /* queued entries are dropped by the workers (stopping), each through finish_entry */
    ww_engine_stop(p->engine);
    p->workers_joined = true;
}

void ww_pipeline_destroy(ww_pipeline_t *p) {
    if (!p) return;
    ww_pipeline_stop_workers(p);
    ww_engine_destroy(p->engine);
    pthread_mutex_lock(&p->lock);
    /* outputs still waiting to be produced again hold their entry */
    for (entry_t *e = p->redo, *next; e; e = next) {
        next = e->redo_next;
        int n = 0;
        for (size_t i = 0; i < e->outs.n; i++) n += e->failed_out[i];
        e->abandoned = true;
        for (int k = 0; k < n; k++) output_settled(p, e); /* the last may free e */
    }
    p->redo = NULL;
    for (entry_t *e = p->held_head, *next; e; e = next) {
        next = e->held_next;
        entry_unref(e);
    }
    for (part_t *pt = p->parts, *next; pt; pt = next) {
        next = pt->next;
        for (entry_t *e = pt->head, *en; e; e = en) {
            en = e->next;
            entry_unref(e);
        }
        free(pt);
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(p->routes);
    free(p);
}

uint64_t ww_pipeline_done_count(const ww_pipeline_t *p) {
    return atomic_load(&((ww_pipeline_t *)p)->done_count);
}
