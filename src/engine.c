/* engine.c: see engine.h for the design. */
#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fnv.h"
#include "log.h"
#include "metrics.h"

typedef struct {
    void *item;
    const ww_msg_t *msg;
    const void *key;
    size_t key_len;
    size_t route;
} job_t;

typedef struct {
    job_t j;
    bool held;            /* decided (end, outs): waits behind an earlier retry of its key */
    bool gave_up;         /* past its deadline or interrupted */
    ww_engine_end_t end;  /* held: DONE or FAILED */
    int64_t first_fail_ms; /* -1: has not failed yet */
    ww_outputs_t outs;    /* held: what it produces */
    ww_error_t error;     /* FAILED / retrying: why */
} slot_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond, space;
    job_t *ring;
    int cap, head, count;
    pthread_t thread;
    struct ww_engine *eng;
    unsigned seed;
    job_t *batch;           /* batch_max: taken from the ring */
    slot_t *slots;          /* batch_max: one route's share */
    ww_batch_item_t *items; /* batch_max: what the handler sees */
} worker_t;

struct ww_engine {
    ww_engine_config_t cfg;
    ww_engine_sink_t sink;
    ww_route_t *routes;
    size_t n_routes;
    worker_t *workers;
    int n_workers;
    atomic_bool quit;
    atomic_int active;
    bool joined;
};

uint32_t ww_engine_hash(const void *data, size_t n) { return ww_fnv1a(data, n); }

static int64_t backoff_ms(const ww_engine_t *eng, int attempt, unsigned *seed) {
    int64_t d = eng->cfg.retry_base_ms;
    for (int i = 0; i < attempt && d < eng->cfg.retry_max_ms; i++) d *= 2;
    if (d > eng->cfg.retry_max_ms) d = eng->cfg.retry_max_ms;
    /* full jitter on the upper half: spreads retries of many workers */
    return d / 2 + (int64_t)(rand_r(seed) % (unsigned)(d / 2 + 1));
}

void ww_handle_each(ww_handle_fn handle, void *ctx, ww_batch_item_t *items, size_t n) {
    size_t i = 0;
    for (; i < n; i++) {
        ww_batch_item_t *it = &items[i];
        ww_error_clear(&it->error);
        ww_outputs_clear(&it->outs);
        if (handle(ctx, it->msg, &it->outs, &it->error)) {
            it->status = WW_ITEM_DONE;
            continue;
        }
        ww_outputs_clear(&it->outs);
        if (!it->error.retryable) {
            it->status = WW_ITEM_FAILED;
            continue;
        }
        it->status = WW_ITEM_RETRY;
        break;
    }
    /* after a retryable failure nothing later runs: the key order holds */
    for (size_t j = i + 1; j < n; j++) {
        items[j].status = WW_ITEM_RETRY;
        items[j].error = items[i].error;
    }
}

static bool same_key(const job_t *a, const job_t *b) {
    return a->key && b->key && a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

static void finish(ww_engine_t *eng, slot_t *s, ww_engine_end_t end, const ww_error_t *err) {
    eng->sink.finish(eng->sink.ctx, s->j.item, s->j.msg, &s->outs, end, err);
    ww_outputs_clear(&s->outs); /* whatever the sink did not take over */
}

/* Takes the handler's verdicts: decided items are held (with their outputs),
 * undecided ones keep their error. Returns the index of the first to retry
 * (n: none). */
static size_t take_verdicts(ww_engine_t *eng, const ww_route_t *r, slot_t *sl, size_t n,
                            ww_batch_item_t *items, int64_t now) {
    size_t first = n, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (sl[i].held) continue;
        ww_batch_item_t *it = &items[m++];
        const ww_msg_t *msg = sl[i].j.msg;
        if (it->status == WW_ITEM_DONE) {
            sl[i].outs = it->outs;
            sl[i].end = WW_ENGINE_DONE;
            sl[i].held = true;
        } else if (it->status == WW_ITEM_FAILED) {
            ww_err(eng->cfg.name, "permanent failure: dead-lettering", WW_STR("topic", msg->topic),
                   WW_INT("partition", msg->partition), WW_INT("offset", msg->offset),
                   WW_STR("error", it->error.message));
            ww_outputs_clear(&it->outs);
            memset(&sl[i].outs, 0, sizeof sl[i].outs);
            if (r->dlq_topic)
                ww_outputs_dead_letter(&sl[i].outs, r->dlq_topic, msg, "processing_failed",
                                       it->error.message);
            sl[i].outs.outcome = "failed";
            sl[i].error = it->error;
            sl[i].end = WW_ENGINE_FAILED;
            sl[i].held = true;
        } else {
            ww_outputs_clear(&it->outs);
            sl[i].error = it->error;
            if (!sl[i].error.message[0])
                ww_error_set(&sl[i].error, WW_ERR_INTERNAL, 0, true, "not decided");
            if (sl[i].first_fail_ms < 0) sl[i].first_fail_ms = now;
            if (first == n) first = i;
        }
    }
    return first;
}

/* Finishes, in order, what no earlier retry of its key holds back; keeps the
 * rest at the front of sl. Returns how many are kept. */
static size_t release(ww_engine_t *eng, slot_t *sl, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool go = sl[i].held || sl[i].gave_up;
        for (size_t j = 0; j < k && go; j++)
            if (!sl[j].held && !sl[j].gave_up && same_key(&sl[j].j, &sl[i].j)) go = false;
        if (!go) {
            sl[k++] = sl[i];
        } else if (sl[i].gave_up) {
            finish(eng, &sl[i], WW_ENGINE_GAVE_UP, &sl[i].error);
        } else {
            finish(eng, &sl[i], sl[i].end, sl[i].end == WW_ENGINE_FAILED ? &sl[i].error : NULL);
        }
    }
    return k;
}

/* One route's share of a batch, in queue order, until every message is
 * finished, dropped or given up. */
static void process_batch(ww_engine_t *eng, worker_t *w, const ww_route_t *r, slot_t *sl,
                          size_t n) {
    ww_batch_item_t *items = w->items;
    for (int attempt = 0;; attempt++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (eng->sink.gone && eng->sink.gone(eng->sink.ctx, sl[i].j.item)) {
                ww_outputs_clear(&sl[i].outs);
                finish(eng, &sl[i], WW_ENGINE_DROPPED, NULL);
            } else {
                sl[k++] = sl[i];
            }
        }
        n = k;
        if (n == 0) return;
        /* the handler sees the messages not decided yet, in order */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (sl[i].held) continue;
            memset(&items[m], 0, sizeof items[m]);
            items[m].msg = sl[i].j.msg;
            m++;
        }
        ww_metrics_observe_batch(r->topic, m);
        if (r->handle_batch)
            r->handle_batch(r->ctx, items, m);
        else
            ww_handle_each(r->handle, r->ctx, items, m);
        size_t first = take_verdicts(eng, r, sl, n, items, ww_clock_mono_ms());
        int64_t delay = 0;
        ww_error_t why;
        if (first < n) {
            why = sl[first].error;
            delay = backoff_ms(eng, attempt, &w->seed);
            bool interrupted = eng->cfg.interrupt && *eng->cfg.interrupt;
            int64_t now = ww_clock_mono_ms();
            for (size_t i = 0; i < n; i++)
                if (!sl[i].held && (interrupted || (eng->cfg.retry_deadline_ms > 0 &&
                                                    now + delay > sl[i].first_fail_ms +
                                                                      eng->cfg.retry_deadline_ms)))
                    sl[i].gave_up = true;
        }
        n = release(eng, sl, n);
        if (n == 0) return; /* everything finished or given up */
        size_t retrying = 0;
        for (size_t i = 0; i < n; i++) retrying += !sl[i].held;
        const ww_msg_t *fm = NULL;
        for (size_t i = 0; i < n && !fm; i++)
            if (!sl[i].held) fm = sl[i].j.msg;
        ww_metrics_inc_retry(ww_error_domain_name(why.domain));
        if (attempt == 0 || attempt % 10 == 0)
            ww_warn(eng->cfg.name, "retrying", WW_STR("topic", fm->topic),
                    WW_INT("partition", fm->partition), WW_INT("offset", fm->offset),
                    WW_UINT("messages", retrying), WW_UINT("held", n - retrying),
                    WW_INT("attempt", attempt + 1), WW_INT("delay_ms", delay),
                    WW_STR("error", why.message));
        ww_clock_sleep_ms(delay, eng->cfg.interrupt);
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    ww_engine_t *eng = w->eng;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (w->count == 0 && !atomic_load(&eng->quit)) pthread_cond_wait(&w->cond, &w->lock);
        if (w->count == 0) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        /* everything waiting, up to batch_max: no linger */
        size_t n = 0;
        while (w->count > 0 && n < (size_t)eng->cfg.batch_max) {
            w->batch[n++] = w->ring[w->head];
            w->head = (w->head + 1) % w->cap;
            w->count--;
        }
        pthread_cond_broadcast(&w->space);
        pthread_mutex_unlock(&w->lock);
        atomic_fetch_add(&eng->active, 1);
        /* each route's share, in queue order */
        for (size_t r = 0; r < eng->n_routes; r++) {
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                if (w->batch[i].route != r) continue;
                slot_t *s = &w->slots[m++];
                memset(s, 0, sizeof *s);
                s->j = w->batch[i];
                s->first_fail_ms = -1;
            }
            if (m) process_batch(eng, w, &eng->routes[r], w->slots, m);
        }
        atomic_fetch_sub(&eng->active, 1);
    }
    return NULL;
}

bool ww_engine_submit(ww_engine_t *eng, void *item, const ww_msg_t *msg, size_t route,
                      const void *key, size_t key_len, bool wait) {
    uint32_t h = key ? ww_engine_hash(key, key_len)
                     : ww_engine_hash(&msg->partition, sizeof msg->partition);
    worker_t *w = &eng->workers[h % (uint32_t)eng->n_workers];
    pthread_mutex_lock(&w->lock);
    while (w->count == w->cap) {
        if (!wait) {
            pthread_mutex_unlock(&w->lock);
            return false;
        }
        pthread_cond_wait(&w->space, &w->lock);
    }
    w->ring[(w->head + w->count) % w->cap] =
        (job_t){.item = item, .msg = msg, .key = key, .key_len = key_len, .route = route};
    w->count++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return true;
}

int ww_engine_busy(const ww_engine_t *eng) {
    return atomic_load(&((ww_engine_t *)eng)->active);
}

/* What a worker slot holds (its thread joined or never started). */
static void worker_free(worker_t *w) {
    free(w->ring);
    free(w->batch);
    free(w->slots);
    free(w->items);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->space);
}

ww_engine_t *ww_engine_new(const ww_engine_config_t *cfg, const ww_route_t *routes,
                           size_t n_routes, const ww_engine_sink_t *sink, ww_error_t *error) {
    ww_engine_t *eng = calloc(1, sizeof *eng);
    if (!eng) goto oom;
    eng->cfg = *cfg;
    if (!eng->cfg.name) eng->cfg.name = "engine";
    if (eng->cfg.retry_base_ms < 2) eng->cfg.retry_base_ms = 2;
    if (eng->cfg.retry_max_ms < eng->cfg.retry_base_ms) eng->cfg.retry_max_ms = eng->cfg.retry_base_ms;
    if (eng->cfg.batch_max < 1) eng->cfg.batch_max = 1;
    eng->sink = *sink;
    eng->routes = calloc(n_routes ? n_routes : 1, sizeof *routes);
    if (!eng->routes) goto oom;
    memcpy(eng->routes, routes, n_routes * sizeof *routes);
    eng->n_routes = n_routes;
    eng->n_workers = cfg->workers > 0 ? cfg->workers : 1;
    eng->workers = calloc((size_t)eng->n_workers, sizeof *eng->workers);
    if (!eng->workers) goto oom;
    for (int i = 0; i < eng->n_workers; i++) {
        worker_t *w = &eng->workers[i];
        size_t bm = (size_t)eng->cfg.batch_max;
        w->eng = eng;
        w->cap = cfg->queue_depth > 0 ? cfg->queue_depth : 64;
        if (w->cap < eng->cfg.batch_max) w->cap = eng->cfg.batch_max;
        w->ring = calloc((size_t)w->cap, sizeof *w->ring);
        w->batch = calloc(bm, sizeof *w->batch);
        w->slots = calloc(bm, sizeof *w->slots);
        w->items = calloc(bm, sizeof *w->items);
        w->seed = (unsigned)time(NULL) ^ (unsigned)(i * 7919);
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        pthread_cond_init(&w->space, NULL);
        if (!w->ring || !w->batch || !w->slots || !w->items ||
            pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            ww_error_set(error, WW_ERR_SYSTEM, 0, false, "cannot start worker thread %d", i);
            worker_free(w);
            eng->n_workers = i;
            ww_engine_destroy(eng);
            return NULL;
        }
    }
    return eng;
oom:
    ww_error_set(error, WW_ERR_SYSTEM, 0, false, "out of memory");
    if (eng) {
        free(eng->routes);
        free(eng->workers);
    }
    free(eng);
    return NULL;
}

void ww_engine_stop(ww_engine_t *eng) {
    if (!eng || eng->joined) return;
    atomic_store(&eng->quit, true);
    for (int i = 0; i < eng->n_workers; i++) {
        worker_t *w = &eng->workers[i];
        pthread_mutex_lock(&w->lock);
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
    for (int i = 0; i < eng->n_workers; i++) pthread_join(eng->workers[i].thread, NULL);
    eng->joined = true;
}

void ww_engine_destroy(ww_engine_t *eng) {
    if (!eng) return;
    ww_engine_stop(eng);
    for (int i = 0; i < eng->n_workers; i++) worker_free(&eng->workers[i]);
    free(eng->workers);
    free(eng->routes);
    free(eng);
}
