/* metrics.c: the fixed, bounded Prometheus registry (see metrics.h).
 *
 * DESIGN: each labelled family owns a static array of series slots. Slots are
 * append-only: a new label set is written into slot `used` under the family
 * mutex and then published by a release store of `used + 1`. Label values in
 * a published slot never change (until ww_metrics_reset, which is for tests),
 * so the hot path is: acquire-load `used`, compare labels over at most
 * WW_METRICS_MAX_SERIES slots, relaxed atomic add. Only a label set's first
 * update locks. Once a family is full, unknown label sets go straight to the
 * extra "other" slot without locking.
 *
 * Removing a lag series only clears its `present` flag: the slot keeps its
 * labels, so a lock-free reader can never see a slot change identity, and a
 * partition assigned again reuses its slot.
 *
 * Values are read with relaxed loads while writers keep going, so a scrape is
 * not one instant; each value is itself exact. A histogram's +Inf bucket and
 * _count are both the sum of the bucket counts read, so they always agree.
 * Durations are accumulated as integer nanoseconds (no atomic double needed;
 * 2^64 ns is 584 years of summed latency). */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "health.h"

#define NB WW_METRICS_DB_BUCKETS
#define LMAX WW_METRICS_LABEL_MAX

static const uint64_t bucket_ns[NB] = {
    500000ull,    1000000ull,    2500000ull,    5000000ull,     10000000ull,
    25000000ull,  50000000ull,   100000000ull,  250000000ull,   500000000ull,
    1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull};
static const char *const bucket_le[NB] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                          "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                          "1",      "2.5",   "5",      "10"};

/* wallet_worker_batch_size: messages per handler call (powers of two). */
static const uint64_t batch_bounds[NB] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                          4096, 8192};
static const char *const batch_le[NB] = {"1",   "2",   "4",    "8",    "16",   "32",   "64",
                                         "128", "256", "512", "1024", "2048", "4096", "8192"};

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

typedef struct {
    char labels[2][LMAX];            /* sanitised, unescaped */
    atomic_uint_fast64_t count;      /* counters */
    atomic_int_fast64_t gauge;       /* gauges */
    atomic_bool present;             /* gauges: false once removed */
    atomic_uint_fast64_t buckets[NB + 1]; /* histograms, per bucket; [NB] is (10s, +Inf) */
    atomic_uint_fast64_t sum_ns;
} series_t;

typedef struct {
    const char *name;
    const char *help;
    kind_t kind;
    int nlabels;
    const char *label_names[2];
    const uint64_t *bounds;  /* histograms: NB upper bounds (sum_ns holds the sum in */
    const char *const *le;   /* these units; seconds when bounds is bucket_ns) */
    size_t cap;
    series_t *series;       /* cap + 1 slots; series[cap] is the "other" series */
    atomic_size_t used;     /* slots [0, used) are published */
    atomic_bool other_used;
    pthread_mutex_t lock;   /* serialises slot creation only */
} family_t;

#define FAMILY(var, cap_, kind_, nl, l0, l1, name_, help_)                                \
    static series_t var##_slots[(cap_) + 1];                                                \
    static family_t var = {.name = name_, .help = help_, .kind = kind_, .nlabels = nl,     \
                           .label_names = {l0, l1}, .bounds = bucket_ns, .le = bucket_le,   \
                           .cap = cap_, .series = var##_slots,                              \
                           .lock = PTHREAD_MUTEX_INITIALIZER}

FAMILY(consumed, WW_METRICS_MAX_SERIES, KIND_COUNTER, 1, "topic", NULL,
       "wallet_worker_messages_consumed_total", "Kafka messages received by the consume loop.");
FAMILY(processed, WW_METRICS_MAX_SERIES, KIND_COUNTER, 2, "topic", "outcome",
       "wallet_worker_messages_processed_total", "Messages handled, by outcome.");
FAMILY(dead_letters, WW_METRICS_MAX_SERIES, KIND_COUNTER, 2, "topic", "reason",
       "wallet_worker_dead_letters_total", "Messages sent to the dead-letter topic, by reason.");
FAMILY(retries, WW_METRICS_MAX_SERIES, KIND_COUNTER, 1, "operation", NULL,
       "wallet_worker_retries_total", "Retries of failed retryable operations.");
FAMILY(db_duration, WW_METRICS_MAX_SERIES, KIND_HISTOGRAM, 1, "operation", NULL,
       "wallet_worker_db_operation_duration_seconds", "MongoDB operation latency in seconds.");
FAMILY(lag, WW_METRICS_MAX_LAG_SERIES, KIND_GAUGE, 2, "topic", "partition",
       "wallet_worker_consumer_lag", "Messages between the consumed offset and the high watermark.");
FAMILY(http_requests, WW_METRICS_MAX_SERIES, KIND_COUNTER, 1, "code", NULL,
       "wallet_worker_http_requests_total", "HTTP sidecar responses, by status code.");

FAMILY(output_failures, WW_METRICS_MAX_SERIES, KIND_COUNTER, 2, "topic", "reason",
       "wallet_worker_output_failures_total",
       "Results and dead letters given up after a permanent produce error; their message is "
       "finished and committed.");
FAMILY(unkeyed, WW_METRICS_MAX_SERIES, KIND_COUNTER, 1, "topic", NULL,
       "wallet_worker_unkeyed_messages_total",
       "Messages consumed without a Kafka key: their order against the owner's other "
       "messages is not guaranteed.");
FAMILY(uncommitted, WW_METRICS_MAX_SERIES, KIND_GAUGE, 1, "topic", NULL,
       "wallet_worker_uncommitted_messages",
       "Messages fetched and not yet committed (in flight, retrying, or behind one that is).");
FAMILY(oldest_uncommitted, WW_METRICS_MAX_SERIES, KIND_GAUGE, 1, "topic", NULL,
       "wallet_worker_oldest_uncommitted_age_seconds",
       "Seconds since the oldest message not yet committed was fetched; 0 when none.");

FAMILY(db_round_trips, WW_METRICS_MAX_SERIES, KIND_COUNTER, 1, "op", NULL,
       "wallet_worker_db_round_trips_total",
       "Commands sent to MongoDB (each one round trip), by command name.");
static series_t batch_size_slots[WW_METRICS_MAX_SERIES + 1];
static family_t batch_size = {.name = "wallet_worker_batch_size",
                              .help = "Messages handed to a handler at once, per topic.",
                              .kind = KIND_HISTOGRAM, .nlabels = 1, .label_names = {"topic", NULL},
                              .bounds = batch_bounds, .le = batch_le,
                              .cap = WW_METRICS_MAX_SERIES, .series = batch_size_slots,
                              .lock = PTHREAD_MUTEX_INITIALIZER};

static family_t *const families[] = {&consumed,        &processed,   &dead_letters,
                                     &retries,         &db_duration, &lag,
                                     &http_requests,   &output_failures, &unkeyed,       &uncommitted,
                                     &oldest_uncommitted, &db_round_trips, &batch_size};
#define NFAMILIES (sizeof families / sizeof families[0])

static atomic_uint_fast64_t dropped;
static atomic_uint_fast64_t db_auth_failures; /* no labels: always rendered, 0 included */

/* Build info and start time: written by init, read per scrape. */
static pthread_mutex_t info_lock = PTHREAD_MUTEX_INITIALIZER;
static char info_version[LMAX] = "unknown";
static char info_rdkafka[LMAX] = "unknown";
static char info_mongoc[LMAX] = "unknown";
static int64_t start_wall_ms;
static int64_t start_mono_ms;

/* ---- label values ---------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF), 0 when invalid. p is NUL-terminated, and the
 * checks stop at the first non-continuation byte, so they never read past it. */
static size_t utf8_len(const unsigned char *p) {
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Prometheus rejects a scrape with invalid UTF-8, and label values may come
 * from message content (a reason, a topic name), so bad bytes and control
 * characters become '?'. '\n' survives: rendering escapes it. Truncation
 * never splits a character. */
static void sanitise(const char *in, char out[LMAX]) {
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    size_t o = 0;
    while (*p && o < LMAX - 1) {
        size_t n = utf8_len(p);
        if (n == 0 || (n == 1 && ((*p < 0x20 && *p != '\n') || *p == 0x7f))) {
            out[o++] = '?';
            p++;
            continue;
        }
        if (o + n > LMAX - 1) break;
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
}

/* ---- series lookup ---------------------------------------------------- */

static bool labels_equal(const family_t *f, const series_t *s, char vals[2][LMAX]) {
    for (int i = 0; i < f->nlabels; i++)
        if (strcmp(s->labels[i], vals[i]) != 0) return false;
    return true;
}

static series_t *scan(family_t *f, char vals[2][LMAX], size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        if (labels_equal(f, &f->series[i], vals)) return &f->series[i];
    return NULL;
}

static bool all_other(const family_t *f, char vals[2][LMAX]) {
    for (int i = 0; i < f->nlabels; i++)
        if (strcmp(vals[i], "other") != 0) return false;
    return true;
}

/* The series for raw label values v0, v1. With create, never NULL: a new
 * series when there is room, else the "other" series (counted as dropped).
 * Without create (getters, removal), NULL when the label set is unknown. */
static series_t *lookup(family_t *f, const char *v0, const char *v1, bool create) {
    char vals[2][LMAX];
    sanitise(v0, vals[0]);
    sanitise(v1, vals[1]);
    series_t *other = &f->series[f->cap];
    /* A literal all-"other" label set shares the overflow series, so the
     * scrape never holds two series with identical labels. */
    if (all_other(f, vals)) {
        if (!create) return atomic_load(&f->other_used) ? other : NULL;
        atomic_store(&f->other_used, true);
        return other;
    }
    size_t n = atomic_load_explicit(&f->used, memory_order_acquire);
    series_t *s = scan(f, vals, 0, n);
    if (s || !create) return s;
    if (n < f->cap) {
        pthread_mutex_lock(&f->lock);
        size_t now = atomic_load_explicit(&f->used, memory_order_relaxed);
        s = scan(f, vals, n, now); /* another writer may have added it meanwhile */
        if (!s && now < f->cap) {
            s = &f->series[now];
            memcpy(s->labels, vals, sizeof vals);
            atomic_store_explicit(&f->used, now + 1, memory_order_release);
        }
        pthread_mutex_unlock(&f->lock);
        if (s) return s;
    }
    atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
    atomic_store(&f->other_used, true);
    return other;
}

static void series_clear(series_t *s) {
    memset(s->labels, 0, sizeof s->labels);
    atomic_store(&s->count, 0);
    atomic_store(&s->gauge, 0);
    atomic_store(&s->present, false);
    for (int i = 0; i <= NB; i++) atomic_store(&s->buckets[i], 0);
    atomic_store(&s->sum_ns, 0);
}

/* ---- updates ---------------------------------------------------------- */

static void inc(family_t *f, const char *v0, const char *v1) {
    atomic_fetch_add_explicit(&lookup(f, v0, v1, true)->count, 1, memory_order_relaxed);
}

void ww_metrics_inc_consumed(const char *topic) { inc(&consumed, topic, NULL); }
void ww_metrics_inc_processed(const char *topic, const char *outcome) {
    inc(&processed, topic, outcome);
}
void ww_metrics_inc_dead_letter(const char *topic, const char *reason) {
    inc(&dead_letters, topic, reason);
}
void ww_metrics_inc_retry(const char *operation) { inc(&retries, operation, NULL); }
void ww_metrics_inc_db_auth_failure(void) {
    atomic_fetch_add_explicit(&db_auth_failures, 1, memory_order_relaxed);
}
uint64_t ww_metrics_db_auth_failures(void) { return atomic_load(&db_auth_failures); }
void ww_metrics_inc_output_failure(const char *topic, const char *reason) {
    inc(&output_failures, topic, reason);
}
void ww_metrics_inc_unkeyed(const char *topic) { inc(&unkeyed, topic, NULL); }

void ww_metrics_set_uncommitted(const char *topic, int64_t messages, int64_t oldest_age_s) {
    series_t *s = lookup(&uncommitted, topic, NULL, true);
    atomic_store_explicit(&s->gauge, messages, memory_order_relaxed);
    atomic_store_explicit(&s->present, true, memory_order_release);
    s = lookup(&oldest_uncommitted, topic, NULL, true);
    atomic_store_explicit(&s->gauge, oldest_age_s, memory_order_relaxed);
    atomic_store_explicit(&s->present, true, memory_order_release);
}

bool ww_metrics_uncommitted(const char *topic, int64_t *messages, int64_t *oldest_age_s) {
    series_t *a = lookup(&uncommitted, topic, NULL, false);
    series_t *b = lookup(&oldest_uncommitted, topic, NULL, false);
    if (!a || !b || !atomic_load_explicit(&a->present, memory_order_acquire)) return false;
    if (messages) *messages = atomic_load_explicit(&a->gauge, memory_order_relaxed);
    if (oldest_age_s) *oldest_age_s = atomic_load_explicit(&b->gauge, memory_order_relaxed);
    return true;
}

void ww_metrics_inc_http(int status_code) {
    char code[16];
    snprintf(code, sizeof code, "%d", status_code);
    inc(&http_requests, code, NULL);
}

void ww_metrics_observe_db(const char *operation, double seconds) {
    uint64_t ns = 0;
    if (seconds > 0) /* false for NaN too */
        ns = seconds >= 1e9 ? (uint64_t)1e18 : (uint64_t)llround(seconds * 1e9);
    int b = 0;
    while (b < NB && ns > bucket_ns[b]) b++; /* first bucket with ns <= le */
    series_t *s = lookup(&db_duration, operation, NULL, true);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, ns, memory_order_relaxed);
}

static uint64_t count_of(family_t *f, const char *v0, const char *v1);

void ww_metrics_inc_db_round_trip(const char *op) { inc(&db_round_trips, op, NULL); }

void ww_metrics_observe_batch(const char *topic, size_t n) {
    int b = 0;
    while (b < NB && (uint64_t)n > batch_bounds[b]) b++;
    series_t *s = lookup(&batch_size, topic, NULL, true);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint64_t)n, memory_order_relaxed);
}

uint64_t ww_metrics_db_round_trip_count(const char *op) {
    return count_of(&db_round_trips, op, NULL);
}

uint64_t ww_metrics_batch_count(const char *topic, uint64_t *sum) {
    series_t *s = lookup(&batch_size, topic, NULL, false);
    uint64_t n = 0;
    if (s)
        for (int b = 0; b <= NB; b++) n += atomic_load(&s->buckets[b]);
    if (sum) *sum = s ? atomic_load(&s->sum_ns) : 0;
    return n;
}

void ww_metrics_set_lag(const char *topic, int32_t partition, int64_t value) {
    char p[16];
    snprintf(p, sizeof p, "%" PRId32, partition);
    series_t *s = lookup(&lag, topic, p, true);
    atomic_store_explicit(&s->gauge, value, memory_order_relaxed);
    atomic_store_explicit(&s->present, true, memory_order_release);
}

void ww_metrics_remove_lag(const char *topic, int32_t partition) {
    char p[16];
    snprintf(p, sizeof p, "%" PRId32, partition);
    series_t *s = lookup(&lag, topic, p, false);
    if (s) atomic_store(&s->present, false);
}

/* ---- init / reset ----------------------------------------------------- */

void ww_metrics_init(const char *version, const char *rdkafka_version, const char *mongoc_version) {
    pthread_mutex_lock(&info_lock);
    sanitise(version ? version : "unknown", info_version);
    sanitise(rdkafka_version ? rdkafka_version : "unknown", info_rdkafka);
    sanitise(mongoc_version ? mongoc_version : "unknown", info_mongoc);
    start_wall_ms = ww_clock_now_ms();
    start_mono_ms = ww_clock_mono_ms();
    pthread_mutex_unlock(&info_lock);
}

void ww_metrics_reset(void) {
    for (size_t i = 0; i < NFAMILIES; i++) {
        family_t *f = families[i];
        pthread_mutex_lock(&f->lock);
        for (size_t j = 0; j <= f->cap; j++) series_clear(&f->series[j]);
        atomic_store(&f->used, 0);
        atomic_store(&f->other_used, false);
        pthread_mutex_unlock(&f->lock);
    }
    atomic_store(&dropped, 0);
    atomic_store(&db_auth_failures, 0);
}

/* ---- getters ---------------------------------------------------------- */

static uint64_t count_of(family_t *f, const char *v0, const char *v1) {
    series_t *s = lookup(f, v0, v1, false);
    return s ? atomic_load_explicit(&s->count, memory_order_relaxed) : 0;
}

uint64_t ww_metrics_consumed_count(const char *topic) { return count_of(&consumed, topic, NULL); }
uint64_t ww_metrics_processed_count(const char *topic, const char *outcome) {
    return count_of(&processed, topic, outcome);
}
uint64_t ww_metrics_dead_letter_count(const char *topic, const char *reason) {
    return count_of(&dead_letters, topic, reason);
}
uint64_t ww_metrics_retry_count(const char *operation) { return count_of(&retries, operation, NULL); }
uint64_t ww_metrics_output_failure_count(const char *topic, const char *reason) {
    return count_of(&output_failures, topic, reason);
}
uint64_t ww_metrics_unkeyed_count(const char *topic) { return count_of(&unkeyed, topic, NULL); }
uint64_t ww_metrics_http_count(int status_code) {
    char code[16];
    snprintf(code, sizeof code, "%d", status_code);
    return count_of(&http_requests, code, NULL);
}
uint64_t ww_metrics_dropped_series(void) { return atomic_load(&dropped); }

uint64_t ww_metrics_db_observation_count(const char *operation) {
    series_t *s = lookup(&db_duration, operation, NULL, false);
    uint64_t n = 0;
    if (s)
        for (int b = 0; b <= NB; b++) n += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
    return n;
}

bool ww_metrics_lag(const char *topic, int32_t partition, int64_t *value) {
    char p[16];
    snprintf(p, sizeof p, "%" PRId32, partition);
    series_t *s = lookup(&lag, topic, p, false);
    if (!s || !atomic_load_explicit(&s->present, memory_order_acquire)) return false;
    if (value) *value = atomic_load_explicit(&s->gauge, memory_order_relaxed);
    return true;
}

/* ---- rendering -------------------------------------------------------- */

/* snprintf-style output: counts every byte, stores what fits. */
typedef struct {
    char *buf;
    size_t room; /* bytes that may be stored, excluding the final NUL */
    size_t len;  /* bytes the full text needs */
} sink_t;

static void put(sink_t *s, const char *p, size_t n) {
    if (s->len < s->room) {
        size_t k = s->room - s->len < n ? s->room - s->len : n;
        memcpy(s->buf + s->len, p, k);
    }
    s->len += n;
}

static void puts_(sink_t *s, const char *p) { put(s, p, strlen(p)); }

__attribute__((format(printf, 2, 3))) static void putf(sink_t *s, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(s, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Label value escaping of the text format: backslash, double quote, newline. */
static void put_escaped(sink_t *s, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') puts_(s, "\\\\");
        else if (*v == '"') puts_(s, "\\\"");
        else if (*v == '\n') puts_(s, "\\n");
        else put(s, v, 1);
    }
}

/* Exact decimal seconds from nanoseconds: "20.7043", "3", "0.0005". */
static void put_seconds_ns(sink_t *s, uint64_t ns) {
    char frac[16];
    snprintf(frac, sizeof frac, "%09" PRIu64, ns % 1000000000u);
    size_t n = strlen(frac);
    while (n > 0 && frac[n - 1] == '0') n--;
    putf(s, "%" PRIu64, ns / 1000000000u);
    if (n > 0) {
        put(s, ".", 1);
        put(s, frac, n);
    }
}

static void put_header(sink_t *s, const char *name, const char *type, const char *help) {
    putf(s, "# HELP %s ", name);
    puts_(s, help); /* fixed strings without '\\' or '\n': nothing to escape */
    putf(s, "\n# TYPE %s %s\n", name, type);
}

/* name{l0="v0",l1="v1",le="x"} -- the braces only when there are labels. */
static void put_series_name(sink_t *s, const family_t *f, const char *const labels[2],
                            const char *suffix, const char *le) {
    puts_(s, f->name);
    puts_(s, suffix);
    if (f->nlabels == 0 && !le) return;
    put(s, "{", 1);
    for (int i = 0; i < f->nlabels; i++) {
        if (i) put(s, ",", 1);
        putf(s, "%s=\"", f->label_names[i]);
        put_escaped(s, labels[i]);
        put(s, "\"", 1);
    }
    if (le) {
        if (f->nlabels) put(s, ",", 1);
        putf(s, "le=\"%s\"", le);
    }
    put(s, "}", 1);
}

static void put_series(sink_t *s, const family_t *f, const series_t *ser,
                       const char *const labels[2]) {
    switch (f->kind) {
    case KIND_COUNTER:
        put_series_name(s, f, labels, "", NULL);
        putf(s, " %" PRIuFAST64 "\n", atomic_load_explicit(&ser->count, memory_order_relaxed));
        break;
    case KIND_GAUGE:
        if (!atomic_load_explicit(&ser->present, memory_order_acquire)) return;
        put_series_name(s, f, labels, "", NULL);
        putf(s, " %" PRIdFAST64 "\n", atomic_load_explicit(&ser->gauge, memory_order_relaxed));
        break;
    case KIND_HISTOGRAM: {
        uint64_t cumulative = 0;
        for (int b = 0; b < NB; b++) {
            cumulative += atomic_load_explicit(&ser->buckets[b], memory_order_relaxed);
            put_series_name(s, f, labels, "_bucket", f->le[b]);
            putf(s, " %" PRIu64 "\n", cumulative);
        }
        cumulative += atomic_load_explicit(&ser->buckets[NB], memory_order_relaxed);
        put_series_name(s, f, labels, "_bucket", "+Inf");
        putf(s, " %" PRIu64 "\n", cumulative);
        put_series_name(s, f, labels, "_sum", NULL);
        put(s, " ", 1);
        if (f->bounds == bucket_ns)
            put_seconds_ns(s, atomic_load_explicit(&ser->sum_ns, memory_order_relaxed));
        else
            putf(s, "%" PRIuFAST64, atomic_load_explicit(&ser->sum_ns, memory_order_relaxed));
        put(s, "\n", 1);
        put_series_name(s, f, labels, "_count", NULL);
        putf(s, " %" PRIu64 "\n", cumulative);
        break;
    }
    }
}

static void put_family(sink_t *s, family_t *f) {
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    put_header(s, f->name, type_names[f->kind], f->help);
    size_t n = atomic_load_explicit(&f->used, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        const series_t *ser = &f->series[i];
        const char *const labels[2] = {ser->labels[0], ser->labels[1]};
        put_series(s, f, ser, labels);
    }
    if (atomic_load(&f->other_used)) {
        /* The overflow slot's labels are implied rather than stored. */
        static const char *const other[2] = {"other", "other"};
        put_series(s, f, &f->series[f->cap], other);
    }
}

size_t ww_metrics_render(char *buf, size_t cap) {
    sink_t s = {.buf = buf, .room = cap ? cap - 1 : 0, .len = 0};
    for (size_t i = 0; i < NFAMILIES; i++) put_family(&s, families[i]);

    ww_db_state_t db = ww_health_db_state();
    put_header(&s, "wallet_worker_db_connection_state", "gauge",
               "MongoDB readyState: 0 disconnected, 1 connected, 2 connecting, 3 disconnecting.");
    putf(&s, "wallet_worker_db_connection_state %d\n", (int)db);
    put_header(&s, "wallet_worker_db_connected", "gauge", "1 when MongoDB is connected, else 0.");
    putf(&s, "wallet_worker_db_connected %d\n", db == WW_DB_CONNECTED ? 1 : 0);
    put_header(&s, "wallet_worker_db_auth_failures_total", "counter",
               "MongoDB operations refused because authentication failed (wrong credentials).");
    putf(&s, "wallet_worker_db_auth_failures_total %" PRIuFAST64 "\n",
         (uint_fast64_t)atomic_load_explicit(&db_auth_failures, memory_order_relaxed));
    put_header(&s, "wallet_worker_ready", "gauge",
               "1 when /readyz answers 200 (database connected, Kafka ready, started), else 0.");
    putf(&s, "wallet_worker_ready %d\n", ww_health_ready(ww_clock_mono_ms()) ? 1 : 0);
    put_header(&s, "wallet_worker_kafka_consumer_assigned_partitions", "gauge",
               "Kafka partitions currently assigned to this consumer.");
    putf(&s, "wallet_worker_kafka_consumer_assigned_partitions %" PRId32 "\n",
         ww_health_assigned_partitions());

    pthread_mutex_lock(&info_lock);
    put_header(&s, "wallet_worker_build_info", "gauge",
               "Build information; the value is always 1.");
    puts_(&s, "wallet_worker_build_info{version=\"");
    put_escaped(&s, info_version);
    puts_(&s, "\",librdkafka=\"");
    put_escaped(&s, info_rdkafka);
    puts_(&s, "\",libmongoc=\"");
    put_escaped(&s, info_mongoc);
    puts_(&s, "\"} 1\n");
    int64_t wall = start_wall_ms, mono = start_mono_ms;
    pthread_mutex_unlock(&info_lock);

    put_header(&s, "wallet_worker_up", "gauge", "1 while the worker process is running.");
    puts_(&s, "wallet_worker_up 1\n");
    put_header(&s, "process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch in seconds.");
    puts_(&s, "process_start_time_seconds ");
    put_seconds_ns(&s, wall > 0 ? (uint64_t)wall * 1000000u : 0);
    put(&s, "\n", 1);
    put_header(&s, "wallet_worker_uptime_seconds", "gauge", "Seconds since the worker started.");
    int64_t up_ms = mono > 0 ? ww_clock_mono_ms() - mono : 0;
    puts_(&s, "wallet_worker_uptime_seconds ");
    put_seconds_ns(&s, up_ms > 0 ? (uint64_t)up_ms * 1000000u : 0);
    put(&s, "\n", 1);

    put_header(&s, "wallet_worker_metrics_dropped_series_total", "counter",
               "Updates routed to an \"other\" series because a metric family was full.");
    putf(&s, "wallet_worker_metrics_dropped_series_total %" PRIuFAST64 "\n", atomic_load(&dropped));

    if (cap) buf[s.len < s.room ? s.len : s.room] = '\0';
    return s.len;
}

char *ww_metrics_render_alloc(size_t *len) {
    size_t cap = 16 * 1024;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf) return NULL;
        size_t n = ww_metrics_render(buf, cap);
        if (n < cap) {
            if (len) *len = n;
            return buf;
        }
        free(buf);
        /* Series only get added and are bounded, so this converges; the
         * headroom covers series created between the two renders. */
        if (n >= WW_METRICS_RENDER_MAX) return NULL;
        cap = n + 4096 < WW_METRICS_RENDER_MAX ? n + 4096 : WW_METRICS_RENDER_MAX;
    }
}
