/* test_engine.c: the batch engine (engine.c) with a fake batch handler, no
 * servers. A scripted handler says, per message, how many attempts it leaves
 * undecided (RETRY) before its verdict (DONE or FAILED); the sink records the
 * order messages finish in. One worker and a gate (the first message blocks
 * the handler until everything else is queued) make a batch's content, and so
 * the order, deterministic; several workers check per-key order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine.h"

#define MAX_MSGS 512
#define MAX_CALLS 64
#define FOREVER 1000000
#define GATE 0 /* offset of the gate message */

typedef struct {
    char key;          /* 0: no key */
    int retries;       /* attempts left RETRY before the verdict (FOREVER) */
    ww_item_status_t verdict;
} script_t;

typedef struct {
    int64_t offset;
    ww_engine_end_t end;
    size_t outs;
    char dlq_code[32];
    char error[WW_ERROR_MSG_MAX];
} fin_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    script_t script[MAX_MSGS];
    int attempts[MAX_MSGS];
    ww_msg_t msgs[MAX_MSGS];
    char keys[MAX_MSGS];
    bool gate_open;
    bool gate_entered; /* the worker is inside the gate's call */
    int n_calls;
    char calls[MAX_CALLS][128]; /* offsets the handler saw per call: "1,2,3" */
    fin_t fin[MAX_MSGS];
    int n_fin;
    bool dropping; /* sink.gone answers true */
} T;

static void reset(void) {
    pthread_mutex_destroy(&T.lock);
    pthread_cond_destroy(&T.cond);
    memset(&T, 0, sizeof T);
    pthread_mutex_init(&T.lock, NULL);
    pthread_cond_init(&T.cond, NULL);
}

static void fake_batch(void *ctx, ww_batch_item_t *items, size_t n) {
    (void)ctx;
    pthread_mutex_lock(&T.lock);
    if (n && items[0].msg->offset == GATE) {
        T.gate_entered = true;
        pthread_cond_broadcast(&T.cond);
        while (!T.gate_open) pthread_cond_wait(&T.cond, &T.lock);
    }
    if (T.n_calls < MAX_CALLS) {
        char *c = T.calls[T.n_calls];
        c[0] = '\0';
        for (size_t i = 0; i < n; i++)
            snprintf(c + strlen(c), 128 - strlen(c), "%s%lld", i ? "," : "", (long long)items[i].msg->offset);
    }
    T.n_calls++;
    for (size_t i = 0; i < n; i++) {
        int64_t o = items[i].msg->offset;
        const script_t *s = &T.script[o];
        if (T.attempts[o]++ < s->retries) {
            items[i].status = WW_ITEM_RETRY;
            ww_error_set(&items[i].error, WW_ERR_DB, 0, true, "db down for %lld", (long long)o);
        } else if (s->verdict == WW_ITEM_FAILED) {
            items[i].status = WW_ITEM_FAILED;
            ww_error_set(&items[i].error, WW_ERR_INTERNAL, 0, false, "bad data %lld", (long long)o);
        } else {
            items[i].status = WW_ITEM_DONE;
            ww_outputs_add(&items[i].outs, "results", NULL, 0, "r", 1);
        }
    }
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.lock);
}

/* The per-message form (ww_handle_each): same script. */
static bool fake_one(void *ctx, const ww_msg_t *msg, ww_outputs_t *outs, ww_error_t *error) {
    ww_batch_item_t it;
    memset(&it, 0, sizeof it);
    it.msg = msg;
    fake_batch(ctx, &it, 1);
    *outs = it.outs;
    *error = it.error;
    return it.status == WW_ITEM_DONE;
}

static void sink_finish(void *ctx, void *item, const ww_msg_t *msg, ww_outputs_t *outs,
                        ww_engine_end_t end, const ww_error_t *error) {
    (void)ctx;
    assert_ptr_equal(item, msg);
    pthread_mutex_lock(&T.lock);
    fin_t *f = &T.fin[T.n_fin++];
    f->offset = msg->offset;
    f->end = end;
    f->outs = outs->n;
    for (size_t i = 0; i < outs->n; i++)
        for (size_t h = 0; h < outs->out[i].n_headers; h++)
            if (strcmp(outs->out[i].headers[h].name, "ww.error.code") == 0)
                snprintf(f->dlq_code, sizeof f->dlq_code, "%.*s",
                         (int)outs->out[i].headers[h].value_len, outs->out[i].headers[h].value);
    if (error) snprintf(f->error, sizeof f->error, "%s", error->message);
    ww_outputs_clear(outs);
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.lock);
}

static bool sink_gone(void *ctx, void *item) {
    (void)ctx;
    const ww_msg_t *m = item;
    pthread_mutex_lock(&T.lock);
    bool gone = T.dropping && m->offset != GATE;
    pthread_mutex_unlock(&T.lock);
    return gone;
}

static ww_engine_t *start(int workers, int queue, int batch_max, bool per_message,
                          int32_t deadline_ms, volatile int *interrupt) {
    ww_route_t route = {.topic = "cmds", .dlq_topic = "cmds.dlq", .ctx = NULL};
    if (per_message)
        route.handle = fake_one;
    else
        route.handle_batch = fake_batch;
    ww_engine_config_t cfg = {.name = "test", .workers = workers, .queue_depth = queue,
                              .batch_max = batch_max, .retry_base_ms = 2, .retry_max_ms = 8,
                              .retry_deadline_ms = deadline_ms, .interrupt = interrupt};
    ww_engine_sink_t sink = {.finish = sink_finish, .gone = sink_gone};
    ww_error_t err;
    ww_engine_t *eng = ww_engine_new(&cfg, &route, 1, &sink, &err);
    assert_non_null(eng);
    return eng;
}

static void submit(ww_engine_t *eng, int64_t offset, char key) {
    ww_msg_t *m = &T.msgs[offset];
    T.keys[offset] = key;
    m->topic = "cmds";
    m->partition = 0;
    m->offset = offset;
    m->key = key ? &T.keys[offset] : NULL;
    m->key_len = key ? 1 : 0;
    m->timestamp_ms = -1;
    assert_true(ww_engine_submit(eng, m, m, 0, m->key, m->key_len, true));
}

/* The gate alone in the worker's first batch, the worker blocked inside it:
 * what is submitted next waits in the queue and forms the next batch. */
static void submit_gate(ww_engine_t *eng) {
    submit(eng, GATE, 'G');
    pthread_mutex_lock(&T.lock);
    while (!T.gate_entered) pthread_cond_wait(&T.cond, &T.lock);
    pthread_mutex_unlock(&T.lock);
}

static void open_gate(void) {
    pthread_mutex_lock(&T.lock);
    T.gate_open = true;
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.lock);
}

/* ---- one worker, scripted batches: table ----------------------------------------- */

typedef struct {
    const char *name;
    bool per_message;            /* route without handle_batch */
    const char *keys;            /* message i+1's key ('.' = none) */
    script_t script[8];          /* message i+1's script */
    const char *calls[6];        /* what the handler saw after the gate, per call */
    const char *finished;        /* finish order: "3D,1D,2D" (D done, F failed) */
} batch_case_t;

static const batch_case_t batch_cases[] = {
    {"the undecided part is retried in order", false, "ABCDE",
     {{0, 0, WW_ITEM_DONE}, {0, 1, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}, {0, 2, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}},
     {"1,2,3,4,5", "2,4", "4"}, "1D,3D,5D,2D,4D"},
    {"a DONE message waits behind an earlier retry of its key", false, "AAB",
     {{0, 1, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}},
     {"1,2,3", "1"}, "3D,1D,2D"},
    {"a FAILED message waits behind an earlier retry of its key", false, "AAB",
     {{0, 2, WW_ITEM_DONE}, {0, 0, WW_ITEM_FAILED}, {0, 0, WW_ITEM_DONE}},
     {"1,2,3", "1", "1"}, "3D,1D,2F"},
    {"unkeyed messages never wait for each other", false, "..",
     {{0, 1, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}},
     {"1,2", "1"}, "2D,1D"},
    {"FAILED finishes only that message", false, "AAB",
     {{0, 0, WW_ITEM_FAILED}, {0, 0, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}},
     {"1,2,3"}, "1F,2D,3D"},
    {"per-message handler: nothing after a retry runs", true, "ABC",
     {{0, 0, WW_ITEM_DONE}, {0, 1, WW_ITEM_DONE}, {0, 0, WW_ITEM_DONE}},
     {"1", "2", "2", "3"}, "1D,2D,3D"},
};

static void finished_text(char *out, size_t len) {
    out[0] = '\0';
    for (int i = 0; i < T.n_fin; i++) {
        if (T.fin[i].offset == GATE) continue;
        snprintf(out + strlen(out), len - strlen(out), "%s%lld%c", out[0] ? "," : "",
                 (long long)T.fin[i].offset,
                 T.fin[i].end == WW_ENGINE_DONE     ? 'D'
                 : T.fin[i].end == WW_ENGINE_FAILED ? 'F'
                 : T.fin[i].end == WW_ENGINE_DROPPED ? 'X'
                                                     : 'G');
    }
}

static void test_engine_batch_table(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof batch_cases / sizeof batch_cases[0]; c++) {
        const batch_case_t *bc = &batch_cases[c];
        reset();
        size_t n = strlen(bc->keys);
        for (size_t i = 0; i < n; i++) T.script[i + 1] = bc->script[i];
        ww_engine_t *eng = start(1, 64, 64, bc->per_message, 0, NULL);
        submit_gate(eng);
        for (size_t i = 0; i < n; i++) submit(eng, (int64_t)i + 1, bc->keys[i] == '.' ? 0 : bc->keys[i]);
        open_gate();
        ww_engine_stop(eng);
        char got[256];
        finished_text(got, sizeof got);
        print_message("case: %s\n", bc->name);
        assert_string_equal(got, bc->finished);
        int nc = 0;
        while (nc < 6 && bc->calls[nc]) nc++;
        assert_int_equal(T.n_calls, nc + 1); /* the gate's own call first */
        for (int i = 0; i < nc; i++) assert_string_equal(T.calls[i + 1], bc->calls[i]);
        for (int i = 0; i < T.n_fin; i++) {
            if (T.fin[i].end == WW_ENGINE_FAILED) {
                /* dead-lettered with the reason, and nothing else */
                assert_int_equal(T.fin[i].outs, 1);
                assert_string_equal(T.fin[i].dlq_code, "processing_failed");
                assert_non_null(strstr(T.fin[i].error, "bad data"));
            }
        }
        ww_engine_destroy(eng);
    }
}

/* ---- several workers: each key's messages finish in order ------------------------ */

static void test_engine_key_order_across_workers(void **state) {
    (void)state;
    reset();
    const int n = 400;
    for (int i = 1; i <= n; i++) {
        T.script[i].retries = i % 7 == 0 ? 2 : (i % 5 == 0 ? 1 : 0);
        T.script[i].verdict = i % 11 == 0 ? WW_ITEM_FAILED : WW_ITEM_DONE;
    }
    T.gate_open = true;
    ww_engine_t *eng = start(4, 8, 4, false, 0, NULL);
    for (int i = 1; i <= n; i++) submit(eng, i, (char)('a' + i % 9));
    ww_engine_stop(eng);
    assert_int_equal(T.n_fin, n);
    int64_t last[9];
    for (int k = 0; k < 9; k++) last[k] = -1;
    bool seen[401] = {false};
    for (int i = 0; i < T.n_fin; i++) {
        int64_t o = T.fin[i].offset;
        assert_false(seen[o]);
        seen[o] = true;
        assert_true(o > last[o % 9]);
        last[o % 9] = o;
        assert_int_equal(T.fin[i].end, o % 11 == 0 ? WW_ENGINE_FAILED : WW_ENGINE_DONE);
    }
    ww_engine_destroy(eng);
}

/* ---- retry deadline, per message ------------------------------------------------- */

static void test_engine_retry_deadline_per_message(void **state) {
    (void)state;
    reset();
    T.script[1] = (script_t){0, FOREVER, WW_ITEM_DONE}; /* never succeeds */
    T.script[2] = (script_t){0, 0, WW_ITEM_DONE};       /* held behind 1 (same key) */
    T.script[3] = (script_t){0, 2, WW_ITEM_DONE};       /* recovers within the deadline */
    ww_engine_t *eng = start(1, 64, 64, false, 300, NULL);
    int64_t t0 = ww_clock_mono_ms();
    submit_gate(eng);
    submit(eng, 1, 'A');
    submit(eng, 2, 'A');
    submit(eng, 3, 'B');
    open_gate();
    ww_engine_stop(eng);
    int64_t elapsed = ww_clock_mono_ms() - t0;
    char got[256];
    finished_text(got, sizeof got);
    assert_string_equal(got, "3D,1G,2D");
    assert_true(elapsed >= 300 - 8);
    for (int i = 0; i < T.n_fin; i++)
        if (T.fin[i].offset == 1) assert_string_equal(T.fin[i].error, "db down for 1");
    assert_int_equal(T.attempts[3], 3);
    ww_engine_destroy(eng);
}

/* ---- stop and drain -------------------------------------------------------------- */

static void test_engine_stop_drains_queued_messages(void **state) {
    (void)state;
    reset();
    T.gate_open = true;
    ww_engine_t *eng = start(2, 4, 2, false, 0, NULL);
    for (int i = 1; i <= 100; i++) submit(eng, i, (char)('a' + i % 3));
    ww_engine_stop(eng); /* waits for every queued message */
    assert_int_equal(T.n_fin, 100);
    for (int i = 0; i < T.n_fin; i++) assert_int_equal(T.fin[i].end, WW_ENGINE_DONE);
    ww_engine_stop(eng); /* idempotent */
    ww_engine_destroy(eng);
}

static void test_engine_gone_drops_queued_messages(void **state) {
    (void)state;
    reset();
    ww_engine_t *eng = start(1, 64, 64, false, 0, NULL);
    submit_gate(eng);
    for (int i = 1; i <= 5; i++) submit(eng, i, 'A');
    pthread_mutex_lock(&T.lock);
    T.dropping = true; /* revoked / shutdown deadline while they wait */
    pthread_mutex_unlock(&T.lock);
    open_gate();
    ww_engine_stop(eng);
    char got[256];
    finished_text(got, sizeof got);
    assert_string_equal(got, "1X,2X,3X,4X,5X");
    for (int i = 0; i < T.n_fin; i++)
        if (T.fin[i].offset != GATE) assert_int_equal(T.fin[i].outs, 0);
    assert_int_equal(T.n_calls, 1); /* the handler never saw them */
    ww_engine_destroy(eng);
}

static void test_engine_interrupt_gives_up_retries(void **state) {
    (void)state;
    reset();
    static volatile int interrupt;
    interrupt = 0;
    T.gate_open = true;
    T.script[1] = (script_t){0, FOREVER, WW_ITEM_DONE};
    ww_engine_t *eng = start(1, 64, 64, false, 0, &interrupt);
    submit(eng, 1, 'A');
    pthread_mutex_lock(&T.lock);
    while (T.attempts[1] < 3) pthread_cond_wait(&T.cond, &T.lock);
    pthread_mutex_unlock(&T.lock);
    interrupt = 1;
    ww_engine_stop(eng);
    assert_int_equal(T.n_fin, 1);
    assert_int_equal(T.fin[0].end, WW_ENGINE_GAVE_UP);
    ww_engine_destroy(eng);
}

static void test_engine_full_queue_refuses_without_wait(void **state) {
    (void)state;
    reset();
    ww_engine_t *eng = start(1, 2, 2, false, 0, NULL);
    submit_gate(eng);
    submit(eng, 1, 'A'); /* the queue holds two */
    submit(eng, 2, 'A');
    ww_msg_t *m = &T.msgs[3];
    *m = (ww_msg_t){.topic = "cmds", .offset = 3, .timestamp_ms = -1};
    assert_false(ww_engine_submit(eng, m, m, 0, NULL, 0, false)); /* full: the caller keeps it */
    open_gate();
    ww_engine_stop(eng);
    assert_int_equal(T.n_fin, 3);
    ww_engine_destroy(eng);
}

int main(void) {
    pthread_mutex_init(&T.lock, NULL);
    pthread_cond_init(&T.cond, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_batch_table),
        cmocka_unit_test(test_engine_key_order_across_workers),
        cmocka_unit_test(test_engine_retry_deadline_per_message),
        cmocka_unit_test(test_engine_stop_drains_queued_messages),
        cmocka_unit_test(test_engine_gone_drops_queued_messages),
        cmocka_unit_test(test_engine_interrupt_gives_up_retries),
        cmocka_unit_test(test_engine_full_queue_refuses_without_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
