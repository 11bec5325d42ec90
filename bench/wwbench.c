/* wwbench.c: the benchmark driver behind scripts/bench.sh.
 *
 *   wwbench topics TOPIC...            create per-run topics (--partitions P)
 *   wwbench seed                       insert the workload's wallets (batched)
 *   wwbench run                        produce the wallet workload, match every result,
 *                                      measure throughput, latency, the worker's CPU/RSS
 *   wwbench ceiling                    the same commands through ww_wallet_apply()
 *                                      directly (no Kafka), same threads, same routing
 *   wwbench raw-bulk                   the minimum writes for the same commands: per
 *                                      batch one unordered bulk of guarded $inc updates
 *                                      and one unordered ledger insert, no reads
 *   wwbench invites-produce            produce the invite workload (pre-fills a topic)
 *   wwbench await-results              wait for N invite results; first->last throughput
 *   wwbench await-docs                 wait until a collection holds N documents
 *
 * Every subcommand prints ONE JSON object on stdout (its figures) and a human line on
 * stderr; scripts/bench.sh assembles them. Exit 0 ok, 1 the run failed (missing or
 * wrong results, server unreachable), 2 usage.
 *
 * DESIGN
 * - The workload is a pure function of its parameters and --seed: `run` and `ceiling`
 *   regenerate the identical message list (keys, values, Kafka keys, expected
 *   outcome), so the ceiling applies exactly what the worker was sent.
 * - Latency is measured in this process: the monotonic time just before each
 *   produce() against the arrival of its result at this process's consumer. A
 *   result is matched to its command by idempotencyKey (by the Kafka key when an
 *   invalid message had none); a key sent twice (a duplicate) is matched in order,
 *   which is the order the worker answers one key in. The produce time is NOT put in
 *   the command's `reference`: reference is part of the fingerprint, so a resent
 *   command with a new timestamp would be a conflict, not a duplicate.
 * - Like wwtool, it reaches Kafka and MongoDB only through bus.h and db.h. */
#include <bson/bson.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "command.h"
#include "db.h"
#include "error.h"
#include "invite.h"
#include "log.h"
#include "migrate.h"
#include "wallet.h"

#define VALUE_MAX 512           /* a generated message value */
#define MATCH_MAX 96            /* a generated idempotency key / Kafka key */
#define INSUFFICIENT_AMOUNT INT64_C(9000000000000) /* more than any seeded balance */
#define SEED_BATCH 1000
#define OWNER_PREFIX "0000be4c" /* 8 + 16 hex digits = an ObjectId */

/* ---- options -------------------------------------------------------------- */

typedef struct {
    const char *brokers;
    const char *mongodb_uri;
    const char *run_id;      /* key prefix: [A-Za-z0-9._-] */
    int64_t commands;
    int64_t wallets;
    double zipf;
    double dup_share, insufficient_share, invalid_share;
    uint64_t seed;
    int64_t balance;
    int64_t partitions;
    int64_t threads;
    int64_t batch;           /* raw-bulk: commands per batch (the engine's BATCH_MAX) */
    int64_t rate;            /* run: messages/s, 0 = as fast as possible */
    int64_t bucket_ms;
    int64_t idle_timeout_s;
    int64_t count;           /* await-*, invites-produce */
    long worker_pid;
    const char *topic;       /* invites-produce, await-results, await-docs (collection) */
    const char *commands_topic;
    const char *results_topic;
    const char *series;      /* run, await-*: time series file */
    const char *pos[64];
    int npos;
} opts_t;

static void usage(FILE *out) {
    fprintf(out,
            "wwbench: benchmark driver for wallet-worker (used by scripts/bench.sh).\n\n"
            "  wwbench topics [--partitions P] TOPIC...\n"
            "  wwbench seed [workload]\n"
            "  wwbench run --commands-topic T --results-topic R [workload] [--rate N]\n"
            "              [--worker-pid PID] [--series FILE] [--bucket-ms MS] [--idle-timeout-s S]\n"
            "  wwbench ceiling [workload] [--threads T] [--partitions P]\n"
            "  wwbench raw-bulk [workload] [--threads T] [--batch N (512)]\n"
            "  wwbench invites-produce --topic T --count N --run-id ID\n"
            "  wwbench await-results --topic T --count N [--series FILE] [--idle-timeout-s S]\n"
            "  wwbench await-docs --topic COLLECTION --count N [--series FILE] [--idle-timeout-s S]\n\n"
            "Workload: --commands N (100000) --wallets W (10000) --zipf S (0.8; 0 = uniform)\n"
            "  --dup-share F (0.05) --insufficient-share F (0.05) --invalid-share F (0.01)\n"
            "  --seed N (1) --balance PAISE (1000000000) --run-id ID (bench)\n"
            "Servers: --brokers (KAFKA_BROKERS), --mongodb-uri (MONGODB_URI).\n"
            "Each subcommand prints one JSON object on stdout. Exit 0 ok, 1 failed, 2 usage.\n");
}

static int usage_error(const char *what, const char *arg) {
    fprintf(stderr, "wwbench: %s%s%s (see wwbench --help)\n", what, arg ? ": " : "",
            arg ? arg : "");
    return 2;
}

static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_share(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0 && v <= 1.0)) return false;
    *out = v;
    return true;
}

static bool valid_run_id(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n <= 40 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* ---- time and /proc --------------------------------------------------------- */

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct {
    bool ok;
    double cpu_s;     /* utime + stime */
    int64_t hwm_kib;  /* VmHWM: peak resident set */
    int64_t rss_kib;  /* VmRSS now */
} proc_t;

static proc_t proc_read(long pid) {
    proc_t p = {0};
    if (pid <= 0) return p;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return p;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')'); /* comm may hold spaces: fields start after it */
    if (!s) return p;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    char *tok = s + 1;
    int field = 2;
    unsigned long long ut = 0, st = 0;
    while (*tok && field < 15) {
        while (*tok == ' ') tok++;
        field++;
        char *endp = tok;
        while (*endp && *endp != ' ') endp++;
        if (field == 14) ut = strtoull(tok, NULL, 10);
        if (field == 15) st = strtoull(tok, NULL, 10);
        tok = endp;
    }
    long hz = sysconf(_SC_CLK_TCK);
    p.cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f) return p;
    while (fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, "VmHWM:", 6) == 0) p.hwm_kib = strtoll(buf + 6, NULL, 10);
        if (strncmp(buf, "VmRSS:", 6) == 0) p.rss_kib = strtoll(buf + 6, NULL, 10);
    }
    fclose(f);
    p.ok = true;
    return p;
}

/* ---- the workload ------------------------------------------------------------ */

typedef enum {
    EXP_APPLIED = 0,
    EXP_DUPLICATE,
    EXP_INSUFFICIENT,
    EXP_INVALID,
    EXP_N
} expect_t;

static const char *const EXP_NAMES[EXP_N] = {"applied", "duplicate", "insufficient_funds",
                                             "invalid"};

typedef struct {
    char match[MATCH_MAX];   /* idempotencyKey, or the Kafka key when there is none */
    char kkey[MATCH_MAX];    /* Kafka key (owner hex for commands) */
    char *value;
    uint16_t value_len;
    uint8_t expect;
} gmsg_t;

typedef struct {
    int64_t n;
    gmsg_t *m;
    int64_t counts[EXP_N];
} workload_t;

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static void owner_hex(int64_t w, char out[WW_COMMAND_OWNER_LEN + 1]) {
    snprintf(out, WW_COMMAND_OWNER_LEN + 1, OWNER_PREFIX "%016llx", (unsigned long long)w);
}

static void workload_free(workload_t *wl) {
    if (!wl->m) return;
    for (int64_t i = 0; i < wl->n; i++) free(wl->m[i].value);
    free(wl->m);
    wl->m = NULL;
}

static bool set_value(gmsg_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool set_value(gmsg_t *g, const char *fmt, ...) {
    char buf[VALUE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return false;
    g->value = malloc((size_t)n + 1);
    if (!g->value) return false;
    memcpy(g->value, buf, (size_t)n + 1);
    g->value_len = (uint16_t)n;
    return true;
}

/* Wallet w's rank under the skew: a Zipf(s) rank drawn from the CDF, mapped
 * through a fixed permutation so the hot wallets spread over partitions. */
static bool workload_build(const opts_t *o, workload_t *wl) {
    memset(wl, 0, sizeof *wl);
    int64_t n = o->commands, w = o->wallets;
    wl->m = calloc((size_t)n, sizeof *wl->m);
    double *cdf = malloc((size_t)w * sizeof *cdf);
    int64_t *perm = malloc((size_t)w * sizeof *perm);
    int64_t *valid = malloc((size_t)n * sizeof *valid);
    bool ok = false;
    if (!wl->m || !cdf || !perm || !valid) goto done;
    wl->n = n;
    uint64_t rs = o->seed * 0x2545F4914F6CDD1Dull + 1;
    double sum = 0;
    for (int64_t r = 0; r < w; r++) {
        sum += o->zipf == 0.0 ? 1.0 : pow((double)(r + 1), -o->zipf);
        cdf[r] = sum;
    }
    for (int64_t r = 0; r < w; r++) perm[r] = r;
    for (int64_t r = w - 1; r > 0; r--) {
        int64_t j = (int64_t)(rng_next(&rs) % (uint64_t)(r + 1));
        int64_t t = perm[r];
        perm[r] = perm[j];
        perm[j] = t;
    }
    int64_t nvalid = 0;
    for (int64_t i = 0; i < n; i++) {
        gmsg_t *g = &wl->m[i];
        double u = rng_unit(&rs);
        double x = rng_unit(&rs) * sum;
        int64_t lo = 0, hi = w - 1;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        char owner[WW_COMMAND_OWNER_LEN + 1];
        owner_hex(perm[lo], owner);
        snprintf(g->match, sizeof g->match, "%s-%lld", o->run_id, (long long)i);
        snprintf(g->kkey, sizeof g->kkey, "%s", owner);
        bool made;
        if (u < o->invalid_share) {
            g->expect = EXP_INVALID;
            switch (i % 4) {
            case 0: /* not JSON: the result carries the Kafka key */
                snprintf(g->kkey, sizeof g->kkey, "%s", g->match);
                made = set_value(g, "not json %lld", (long long)i);
                break;
            case 1:
                made = set_value(g, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s\","
                                    "\"ownerUserId\":\"%s\",\"amountPaise\":\"12\"}",
                                 g->match, owner);
                break;
            case 2:
                snprintf(g->kkey, sizeof g->kkey, "%s", g->match);
                made = set_value(g, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s\","
                                    "\"ownerUserId\":{\"$ne\":null},\"amountPaise\":100}",
                                 g->match);
                break;
            default:
                made = set_value(g, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s\","
                                    "\"ownerUserId\":\"%s\",\"amountPaise\":100,\"extra\":1}",
                                 g->match, owner);
                break;
            }
        } else if (u < o->invalid_share + o->dup_share && nvalid > 0) {
            const gmsg_t *orig = &wl->m[valid[rng_next(&rs) % (uint64_t)nvalid]];
            g->expect = EXP_DUPLICATE;
            memcpy(g->match, orig->match, sizeof g->match);
            memcpy(g->kkey, orig->kkey, sizeof g->kkey);
            made = set_value(g, "%s", orig->value);
        } else {
            bool insufficient = u < o->invalid_share + o->dup_share + o->insufficient_share;
            bool debit = insufficient || (rng_next(&rs) & 1);
            int64_t amount = insufficient ? INSUFFICIENT_AMOUNT
                                          : 1 + (int64_t)(rng_next(&rs) % 1000);
            g->expect = insufficient ? EXP_INSUFFICIENT : EXP_APPLIED;
            made = set_value(g,
                             "{\"type\":\"wallet.%s\",\"idempotencyKey\":\"%s\","
                             "\"ownerUserId\":\"%s\",\"amountPaise\":%lld,"
                             "\"reference\":{\"bench\":\"%s\",\"seq\":%lld}}",
                             debit ? "debit" : "credit", g->match, owner, (long long)amount,
                             o->run_id, (long long)i);
            valid[nvalid++] = i;
        }
        if (!made) goto done;
        wl->counts[g->expect]++;
    }
    ok = true;
done:
    free(valid);
    free(perm);
    free(cdf);
    if (!ok) {
        fprintf(stderr, "wwbench: out of memory building the workload\n");
        workload_free(wl);
    }
    return ok;
}

/* ---- key -> message index (FIFO per key) --------------------------------------- */

typedef struct {
    const char *key; /* borrowed from the workload */
    int64_t head;    /* next index awaiting its result, -1 when none */
    int64_t tail;
} slot_t;

typedef struct {
    slot_t *slots;
    size_t cap;
    int64_t *next; /* per message: the next one with the same key */
} matcher_t;

static uint32_t fnv1a(const void *p, size_t n) {
    const unsigned char *k = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 16777619u;
    return h;
}

static slot_t *matcher_slot(matcher_t *mt, const char *key, size_t len, bool create) {
    size_t i = fnv1a(key, len) & (mt->cap - 1);
    for (;;) {
        slot_t *s = &mt->slots[i];
        if (!s->key) {
            if (!create) return NULL;
            return s;
        }
        if (strlen(s->key) == len && memcmp(s->key, key, len) == 0) return s;
        i = (i + 1) & (mt->cap - 1);
    }
}

static bool matcher_build(matcher_t *mt, const workload_t *wl) {
    mt->cap = 16;
    while (mt->cap < (size_t)wl->n * 2) mt->cap <<= 1;
    mt->slots = calloc(mt->cap, sizeof *mt->slots);
    mt->next = malloc((size_t)wl->n * sizeof *mt->next);
    if (!mt->slots || !mt->next) return false;
    for (int64_t i = 0; i < wl->n; i++) {
        const char *k = wl->m[i].match;
        slot_t *s = matcher_slot(mt, k, strlen(k), true);
        mt->next[i] = -1;
        if (!s->key) {
            s->key = k;
            s->head = s->tail = i;
        } else {
            mt->next[s->tail] = i;
            s->tail = i;
        }
    }
    return true;
}

static int64_t matcher_take(matcher_t *mt, const char *key, size_t len) {
    slot_t *s = matcher_slot(mt, key, len, false);
    if (!s || s->head < 0) return -1;
    int64_t i = s->head;
    s->head = mt->next[i];
    return i;
}

static void matcher_free(matcher_t *mt) {
    free(mt->slots);
    free(mt->next);
}

/* ---- statistics --------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double p50, p95, p99, max, mean; /* ms */
} lat_t;

static lat_t latency_stats(int64_t *us, int64_t n) {
    lat_t l = {0};
    if (n <= 0) return l;
    qsort(us, (size_t)n, sizeof *us, cmp_i64);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)us[i];
#define PCT(q) ((double)us[(int64_t)ceil((q) * (double)n) - 1 < 0 ? 0 : (int64_t)ceil((q) * (double)n) - 1] / 1000.0)
    l.p50 = PCT(0.50);
    l.p95 = PCT(0.95);
    l.p99 = PCT(0.99);
#undef PCT
    l.max = (double)us[n - 1] / 1000.0;
    l.mean = sum / (double)n / 1000.0;
    return l;
}

/* Counts per time bucket since t0, for the throughput plot. */
typedef struct {
    int64_t *produced, *done;
    double *cpu; /* the worker's CPU seconds at the end of each bucket (-1 unknown) */
    size_t n, cap;
    int64_t bucket_us;
} series_t;

static bool series_at(series_t *s, size_t b) {
    if (b < s->cap) {
        if (b >= s->n) s->n = b + 1;
        return true;
    }
    size_t cap = s->cap ? s->cap : 256;
    while (cap <= b) cap *= 2;
    int64_t *p = realloc(s->produced, cap * sizeof *p);
    if (!p) return false;
    s->produced = p;
    int64_t *d = realloc(s->done, cap * sizeof *d);
    if (!d) return false;
    s->done = d;
    double *c = realloc(s->cpu, cap * sizeof *c);
    if (!c) return false;
    s->cpu = c;
    for (size_t i = s->cap; i < cap; i++) {
        s->produced[i] = s->done[i] = 0;
        s->cpu[i] = -1;
    }
    s->cap = cap;
    if (b >= s->n) s->n = b + 1;
    return true;
}

static void series_write(const series_t *s, const char *path, int64_t last_us) {
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "wwbench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    double bs = (double)s->bucket_us / 1e6;
    size_t nb = last_us >= 0 ? (size_t)(last_us / s->bucket_us) + 1 : s->n;
    if (nb > s->n) nb = s->n;
    fprintf(f, "# t_end_s\tproduced_per_s\tdone_per_s\tworker_cpu_pct\n");
    double prev_cpu = -1;
    for (size_t b = 0; b < nb; b++) {
        double cpu_pct = -1;
        if (s->cpu[b] >= 0 && prev_cpu >= 0) cpu_pct = (s->cpu[b] - prev_cpu) / bs * 100.0;
        if (s->cpu[b] >= 0) prev_cpu = s->cpu[b];
        fprintf(f, "%.3f\t%.1f\t%.1f\t", (double)(b + 1) * bs, (double)s->produced[b] / bs,
                (double)s->done[b] / bs);
        if (cpu_pct >= 0) fprintf(f, "%.1f\n", cpu_pct);
        else fprintf(f, "NaN\n");
    }
    fclose(f);
}

static void series_free(series_t *s) {
    free(s->produced);
    free(s->done);
    free(s->cpu);
}

/* ---- connections -------------------------------------------------------------- */

static ww_db_t *open_db(const opts_t *o) {
    ww_error_t err;
    ww_error_clear(&err);
    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    ww_db_t *db = ww_db_new(o->mongodb_uri, &dbo, &err);
    if (!db) {
        fprintf(stderr, "wwbench: MongoDB: %s\n", err.message);
        return NULL;
    }
    if (!ww_db_ping(db, &err)) {
        fprintf(stderr, "wwbench: MongoDB not answering: %s\n", err.message);
        ww_db_destroy(db);
        return NULL;
    }
    return db;
}

typedef struct {
    atomic_long ok, failed;
    atomic_bool assigned;
} busctx_t;

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    busctx_t *b = ctx;
    (void)opaque;
    atomic_fetch_add(!error ? &b->ok : &b->failed, 1);
}

static void on_assign(void *ctx, const ww_partition_t *parts, size_t n) {
    busctx_t *b = ctx;
    (void)parts;
    (void)n;
    atomic_store(&b->assigned, true);
}

static void on_revoke(void *ctx, const ww_partition_t *parts, size_t n, bool lost) {
    (void)ctx;
    (void)parts;
    (void)n;
    (void)lost;
}

static ww_bus_t *open_bus(const opts_t *o, busctx_t *bc, bool consumer, const char *topic) {
    ww_error_t err;
    ww_error_clear(&err);
    ww_bus_config_t cfg;
    ww_bus_config_defaults(&cfg);
    cfg.brokers = o->brokers;
    cfg.client_id = "wwbench";
    char group[128];
    if (consumer) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(group, sizeof group, "wwbench-%ld-%ld-%ld", (long)getpid(), (long)ts.tv_sec,
                 (long)(ts.tv_nsec / 1000));
        cfg.group_id = group;
    }
    cfg.consumer = consumer;
    cfg.producer = !consumer;
    ww_bus_hooks_t hooks = {
        .ctx = bc, .on_assign = on_assign, .on_revoke = on_revoke, .on_delivery = on_delivery};
    ww_bus_t *bus = ww_bus_new(&cfg, &hooks, &err);
    if (!bus) {
        fprintf(stderr, "wwbench: Kafka: %s\n", err.message);
        return NULL;
    }
    if (consumer) {
        const char *topics[] = {topic};
        if (!ww_bus_subscribe(bus, topics, 1, &err)) {
            fprintf(stderr, "wwbench: subscribe %s: %s\n", topic, err.message);
            ww_bus_destroy(bus, 0);
            return NULL;
        }
    }
    return bus;
}

/* Polls until the group assigned us the topic (so no result is read late). */
static bool await_assignment(ww_bus_t *bus, busctx_t *bc, int64_t timeout_ms) {
    int64_t deadline = ww_clock_mono_ms() + timeout_ms;
    while (!atomic_load(&bc->assigned)) {
        if (ww_clock_mono_ms() > deadline) {
            fprintf(stderr, "wwbench: no partition assignment within %lld ms\n",
                    (long long)timeout_ms);
            return false;
        }
        ww_msg_t *m = ww_bus_poll(bus, 100);
        if (m) {
            fprintf(stderr, "wwbench: the results topic is not empty; use a fresh topic\n");
            ww_msg_destroy(m);
            return false;
        }
    }
    return true;
}

static bool produce_one(ww_bus_t *bus, const char *topic, const char *key, const char *value,
                        size_t value_len) {
    ww_error_t err;
    for (;;) {
        ww_error_clear(&err);
        if (ww_bus_produce(bus, topic, key, strlen(key), value, value_len, NULL, 0, NULL, &err))
            return true;
        if (!err.retryable) {
            fprintf(stderr, "wwbench: produce: %s\n", err.message);
            return false;
        }
        ww_clock_sleep_ms(5, NULL);
    }
}

/* ---- topics ------------------------------------------------------------------- */

static int cmd_topics(const opts_t *o) {
    if (o->npos < 2) return usage_error("topics needs at least one TOPIC", NULL);
    busctx_t bc = {0};
    ww_bus_t *bus = open_bus(o, &bc, false, NULL);
    if (!bus) return 1;
    int rc = 0;
    for (int i = 1; i < o->npos && rc == 0; i++) {
        ww_error_t err;
        ww_error_clear(&err);
        if (!ww_bus_create_topic(bus, o->pos[i], (int)o->partitions, 30000, &err)) {
            fprintf(stderr, "wwbench: create topic %s: %s\n", o->pos[i], err.message);
            rc = 1;
        }
    }
    ww_bus_destroy(bus, 1000);
    if (rc == 0) printf("{\"topics\":%d,\"partitions\":%lld}\n", o->npos - 1, (long long)o->partitions);
    return rc;
}

/* ---- seed --------------------------------------------------------------------- */

static int cmd_seed(const opts_t *o) {
    ww_db_t *db = open_db(o);
    if (!db) return 1;
    int rc = 1;
    int64_t t0 = mono_us();
    for (int64_t w0 = 0; w0 < o->wallets; w0 += SEED_BATCH) {
        bson_t cmd = BSON_INITIALIZER, docs, reply;
        BSON_APPEND_UTF8(&cmd, "insert", WW_WALLETS);
        BSON_APPEND_ARRAY_BEGIN(&cmd, "documents", &docs);
        for (int64_t w = w0; w < o->wallets && w < w0 + SEED_BATCH; w++) {
            char hex[WW_COMMAND_OWNER_LEN + 1], idx[24];
            owner_hex(w, hex);
            bson_oid_t owner, id;
            bson_oid_init_from_string(&owner, hex);
            bson_oid_init(&id, NULL);
            bson_t d;
            snprintf(idx, sizeof idx, "%lld", (long long)(w - w0));
            BSON_APPEND_DOCUMENT_BEGIN(&docs, idx, &d);
            BSON_APPEND_OID(&d, "_id", &id);
            BSON_APPEND_OID(&d, "ownerUserId", &owner);
            BSON_APPEND_INT64(&d, "availablePaise", o->balance);
            BSON_APPEND_INT64(&d, "version", 0);
            bson_append_document_end(&docs, &d);
        }
        bson_append_array_end(&cmd, &docs);
        BSON_APPEND_BOOL(&cmd, "ordered", true);
        ww_error_t err;
        ww_error_clear(&err);
        bool ok = ww_db_command(db, &cmd, &reply, &err);
        bson_iter_t it;
        if (ok && bson_iter_init_find(&it, &reply, "writeErrors")) {
            ok = false;
            snprintf(err.message, sizeof err.message, "writeErrors in the insert reply");
        }
        bson_destroy(&reply);
        bson_destroy(&cmd);
        if (!ok) {
            fprintf(stderr, "wwbench: seeding wallets %lld..: %s\n", (long long)w0, err.message);
            goto done;
        }
    }
    double s = (double)(mono_us() - t0) / 1e6;
    printf("{\"wallets\":%lld,\"seed_s\":%.3f}\n", (long long)o->wallets, s);
    fprintf(stderr, "wwbench: seeded %lld wallets in %.2f s\n", (long long)o->wallets, s);
    rc = 0;
done:
    ww_db_destroy(db);
    return rc;
}

/* ---- run: the worker, end to end ----------------------------------------------- */

typedef struct {
    const opts_t *o;
    const workload_t *wl;
    ww_bus_t *bus;
    int64_t *sent_us;        /* per message: monotonic µs just before produce */
    atomic_llong produced;
    atomic_int failed;
    int64_t t0_us;
    series_t *series;
    pthread_mutex_t *series_lock;
} producer_t;

static void *producer_main(void *arg) {
    producer_t *p = arg;
    const workload_t *wl = p->wl;
    for (int64_t i = 0; i < wl->n; i++) {
        if (p->o->rate > 0) {
            int64_t due = p->t0_us + i * 1000000 / p->o->rate;
            int64_t now = mono_us();
            if (due > now) {
                struct timespec ts = {(time_t)((due - now) / 1000000),
                                      (long)((due - now) % 1000000) * 1000};
                nanosleep(&ts, NULL);
            }
        }
        const gmsg_t *g = &wl->m[i];
        int64_t now = mono_us();
        p->sent_us[i] = now;
        if (!produce_one(p->bus, p->o->commands_topic, g->kkey, g->value, g->value_len)) {
            atomic_store(&p->failed, 1);
            return NULL;
        }
        pthread_mutex_lock(p->series_lock);
        if (series_at(p->series, (size_t)((now - p->t0_us) / p->series->bucket_us)))
            p->series->produced[(now - p->t0_us) / p->series->bucket_us]++;
        pthread_mutex_unlock(p->series_lock);
        atomic_store(&p->produced, i + 1);
    }
    return NULL;
}

static const char *jstr(json_object *o, const char *name) {
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int cmd_run(const opts_t *o) {
    if (!o->commands_topic || !o->results_topic)
        return usage_error("run needs --commands-topic and --results-topic", NULL);
    workload_t wl;
    if (!workload_build(o, &wl)) return 1;
    int rc = 1;
    matcher_t mt = {0};
    series_t series = {0};
    series.bucket_us = o->bucket_ms * 1000;
    pthread_mutex_t series_lock = PTHREAD_MUTEX_INITIALIZER;
    int64_t *sent_us = calloc((size_t)wl.n, sizeof *sent_us);
    int64_t *lat_us = malloc((size_t)wl.n * sizeof *lat_us);
    bool *answered = calloc((size_t)wl.n, sizeof *answered);
    busctx_t pc = {0}, cc = {0};
    ww_bus_t *prod = NULL, *cons = NULL;
    bool producer_started = false;
    pthread_t pt;
    producer_t pr = {0};
    if (!sent_us || !lat_us || !answered || !matcher_build(&mt, &wl)) {
        fprintf(stderr, "wwbench: out of memory\n");
        goto done;
    }
    cons = open_bus(o, &cc, true, o->results_topic);
    if (!cons || !await_assignment(cons, &cc, 60000)) goto done;
    prod = open_bus(o, &pc, false, NULL);
    if (!prod) goto done;

    proc_t w0 = proc_read(o->worker_pid);
    if (o->worker_pid > 0 && !w0.ok) {
        fprintf(stderr, "wwbench: cannot read /proc/%ld (is the worker running?)\n",
                o->worker_pid);
        goto done;
    }
    pr.o = o;
    pr.wl = &wl;
    pr.bus = prod;
    pr.sent_us = sent_us;
    pr.series = &series;
    pr.series_lock = &series_lock;
    pr.t0_us = mono_us();
    int64_t t0 = pr.t0_us;
    if (pthread_create(&pt, NULL, producer_main, &pr) != 0) {
        fprintf(stderr, "wwbench: cannot start the producer thread\n");
        goto done;
    }
    producer_started = true;

    int64_t got = 0, matched = 0, unmatched = 0, wrong = 0, nlat = 0;
    int64_t by_status[EXP_N + 1] = {0}; /* + other */
    int64_t last_us = -1, last_progress = mono_us(), produced_done_us = -1;
    size_t cpu_bucket = 0;
    char first_wrong[256] = "";
    while (matched < wl.n) {
        ww_msg_t *m = ww_bus_poll(cons, 100);
        int64_t now = mono_us();
        if (produced_done_us < 0 && atomic_load(&pr.produced) == wl.n) produced_done_us = now;
        /* the worker's CPU at each bucket boundary, for the plot */
        size_t b = (size_t)((now - t0) / series.bucket_us);
        if (o->worker_pid > 0 && b >= cpu_bucket) {
            proc_t pnow = proc_read(o->worker_pid);
            pthread_mutex_lock(&series_lock);
            if (pnow.ok && series_at(&series, b)) series.cpu[b] = pnow.cpu_s;
            pthread_mutex_unlock(&series_lock);
            cpu_bucket = b + 1;
        }
        if (atomic_load(&pr.failed)) goto done;
        if (!m) {
            if (now - last_progress > o->idle_timeout_s * 1000000) {
                fprintf(stderr,
                        "wwbench: no result for %lld s: %lld of %lld results (%lld produced)\n",
                        (long long)o->idle_timeout_s, (long long)matched, (long long)wl.n,
                        (long long)atomic_load(&pr.produced));
                break;
            }
            continue;
        }
        got++;
        last_progress = now;
        json_tokener *tok = json_tokener_new_ex(16);
        json_object *j = tok && m->value ? json_tokener_parse_ex(tok, m->value, (int)m->value_len)
                                         : NULL;
        if (tok) json_tokener_free(tok);
        const char *key = j ? jstr(j, "idempotencyKey") : NULL;
        const char *status = j ? jstr(j, "status") : NULL;
        size_t klen = key ? strlen(key) : 0;
        if (!key && m->key) {
            key = m->key;
            klen = m->key_len;
        }
        int64_t i = key ? matcher_take(&mt, key, klen) : -1;
        if (i < 0) {
            unmatched++;
        } else {
            matched++;
            answered[i] = true;
            lat_us[nlat++] = now - sent_us[i];
            int s = EXP_N;
            for (int k = 0; k < EXP_N; k++)
                if (status && strcmp(status, EXP_NAMES[k]) == 0) s = k;
            by_status[s]++;
            if (s != wl.m[i].expect) {
                if (wrong++ == 0)
                    snprintf(first_wrong, sizeof first_wrong, "%s: expected %s, got %.40s",
                             wl.m[i].match, EXP_NAMES[wl.m[i].expect], status ? status : "?");
            }
            last_us = now - t0;
            pthread_mutex_lock(&series_lock);
            if (series_at(&series, (size_t)(last_us / series.bucket_us)))
                series.done[last_us / series.bucket_us]++;
            pthread_mutex_unlock(&series_lock);
        }
        json_object_put(j);
        ww_msg_destroy(m);
    }
    proc_t w1 = proc_read(o->worker_pid);
    pthread_join(pt, NULL);
    producer_started = false;
    if (produced_done_us < 0) produced_done_us = mono_us();
    ww_bus_destroy(prod, 30000);
    prod = NULL;
    long delivered = atomic_load(&pc.ok), dfailed = atomic_load(&pc.failed);
    series_write(&series, o->series, last_us);

    double elapsed = last_us > 0 ? (double)last_us / 1e6 : 0;
    double produce_s = (double)(produced_done_us - t0) / 1e6;
    lat_t l = latency_stats(lat_us, nlat);
    double cpu = (w0.ok && w1.ok) ? w1.cpu_s - w0.cpu_s : -1;
    printf("{\"commands\":%lld,\"wallets\":%lld,\"zipf\":%g,\"dup_share\":%g,"
           "\"insufficient_share\":%g,\"invalid_share\":%g,\"rate_limit\":%lld,"
           "\"expected\":{\"applied\":%lld,\"duplicate\":%lld,\"insufficient_funds\":%lld,"
           "\"invalid\":%lld},"
           "\"results\":%lld,\"matched\":%lld,\"unmatched\":%lld,\"wrong_outcome\":%lld,"
           "\"by_status\":{\"applied\":%lld,\"duplicate\":%lld,\"insufficient_funds\":%lld,"
           "\"invalid\":%lld,\"other\":%lld},"
           "\"delivered\":%ld,\"delivery_failed\":%ld,"
           "\"produce_s\":%.3f,\"elapsed_s\":%.3f,\"throughput_cps\":%.1f,"
           "\"latency_ms\":{\"p50\":%.2f,\"p95\":%.2f,\"p99\":%.2f,\"max\":%.2f,\"mean\":%.2f},"
           "\"worker_cpu_s\":%.2f,\"worker_cpu_ms_per_1k\":%.1f,\"worker_cpu_util\":%.3f,"
           "\"worker_rss_peak_kib\":%lld}\n",
           (long long)wl.n, (long long)o->wallets, o->zipf, o->dup_share,
           o->insufficient_share, o->invalid_share, (long long)o->rate,
           (long long)wl.counts[EXP_APPLIED], (long long)wl.counts[EXP_DUPLICATE],
           (long long)wl.counts[EXP_INSUFFICIENT], (long long)wl.counts[EXP_INVALID],
           (long long)got, (long long)matched, (long long)unmatched, (long long)wrong,
           (long long)by_status[EXP_APPLIED], (long long)by_status[EXP_DUPLICATE],
           (long long)by_status[EXP_INSUFFICIENT], (long long)by_status[EXP_INVALID],
           (long long)by_status[EXP_N], delivered, dfailed, produce_s, elapsed,
           elapsed > 0 ? (double)matched / elapsed : 0.0, l.p50, l.p95, l.p99, l.max, l.mean,
           cpu, cpu >= 0 && matched ? cpu * 1000.0 / (double)matched * 1000.0 : -1.0,
           cpu >= 0 && elapsed > 0 ? cpu / elapsed : -1.0,
           (long long)(w1.ok ? w1.hwm_kib : -1));
    fprintf(stderr, "wwbench: %lld/%lld results in %.2f s: %.0f commands/s, p50 %.1f ms, "
            "p99 %.1f ms\n", (long long)matched, (long long)wl.n, elapsed,
            elapsed > 0 ? (double)matched / elapsed : 0.0, l.p50, l.p99);
    rc = 0;
    if (matched < wl.n) {
        fprintf(stderr, "wwbench: FAILED: %lld command(s) got no result\n",
                (long long)(wl.n - matched));
        for (int64_t i = 0, shown = 0; i < wl.n && shown < 5; i++)
            if (!answered[i]) {
                fprintf(stderr, "wwbench:   no result for %s\n", wl.m[i].match);
                shown++;
            }
        rc = 1;
    }
    if (wrong) {
        fprintf(stderr, "wwbench: FAILED: %lld result(s) with an unexpected outcome, first: %s\n",
                (long long)wrong, first_wrong);
        rc = 1;
    }
    if (unmatched) {
        fprintf(stderr, "wwbench: FAILED: %lld result(s) matching no command sent\n",
                (long long)unmatched);
        rc = 1;
    }
    if (dfailed || delivered != wl.n) {
        fprintf(stderr, "wwbench: FAILED: %ld of %lld commands acknowledged by Kafka\n",
                delivered, (long long)wl.n);
        rc = 1;
    }
done:
    if (producer_started) {
        /* error path: let the producer finish queueing before the bus goes away */
        pthread_join(pt, NULL);
    }
    ww_bus_destroy(prod, 5000);
    ww_bus_destroy(cons, 0);
    series_free(&series);
    matcher_free(&mt);
    free(answered);
    free(lat_us);
    free(sent_us);
    workload_free(&wl);
    return rc;
}

/* ---- ceiling: the same database work without Kafka ------------------------------ */

typedef struct {
    ww_db_t *db;
    const workload_t *wl;
    const opts_t *o;
    int64_t *idx; /* the messages this thread owns, in order */
    int64_t n;
    int64_t *lat_us;
    int64_t by_status[EXP_N + 1];
    int64_t wrong;
    int64_t retries;
    char first_wrong[256];
    bool failed;
    char error[MATCH_MAX + WW_ERROR_MSG_MAX + 8];
} cthread_t;

static void *ceiling_main(void *arg) {
    cthread_t *t = arg;
    ww_json_limits_t lim = {.max_bytes = 65536, .max_depth = 8};
    ww_command_t *cmd = malloc(sizeof *cmd);
    if (!cmd) {
        t->failed = true;
        snprintf(t->error, sizeof t->error, "out of memory");
        return NULL;
    }
    for (int64_t k = 0; k < t->n; k++) {
        int64_t i = t->idx[k];
        const gmsg_t *g = &t->wl->m[i];
        int64_t t0 = mono_us();
        int s = EXP_N;
        ww_error_t err;
        ww_error_clear(&err);
        if (!ww_command_parse(g->value, g->value_len, &lim, cmd, &err)) {
            s = EXP_INVALID;
        } else {
            ww_wallet_result_t r;
            int tries = 0;
            for (;;) {
                ww_error_clear(&err);
                if (ww_wallet_apply(t->db, cmd, "wwbench.ceiling", 0, i, &r, &err)) break;
                if (!err.retryable || ++tries > 50) {
                    t->failed = true;
                    snprintf(t->error, sizeof t->error, "%s: %s", g->match, err.message);
                    free(cmd);
                    return NULL;
                }
                t->retries++;
                ww_clock_sleep_ms(100, NULL);
            }
            switch (r.outcome) {
            case WW_OUTCOME_APPLIED: s = EXP_APPLIED; break;
            case WW_OUTCOME_DUPLICATE: s = EXP_DUPLICATE; break;
            case WW_OUTCOME_INSUFFICIENT_FUNDS: s = EXP_INSUFFICIENT; break;
            default: s = EXP_N; break;
            }
        }
        t->lat_us[k] = mono_us() - t0;
        t->by_status[s]++;
        if (s != g->expect && t->wrong++ == 0)
            snprintf(t->first_wrong, sizeof t->first_wrong, "%s: expected %s, got %s", g->match,
                     EXP_NAMES[g->expect], s < EXP_N ? EXP_NAMES[s] : "other");
    }
    free(cmd);
    return NULL;
}

static int cmd_ceiling(const opts_t *o) {
    workload_t wl;
    if (!workload_build(o, &wl)) return 1;
    int rc = 1;
    int nt = (int)o->threads;
    cthread_t *ts = calloc((size_t)nt, sizeof *ts);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    int64_t *all_lat = malloc((size_t)wl.n * sizeof *all_lat);
    ww_db_t *db = NULL;
    int started = 0;
    if (!ts || !th || !all_lat) goto done;
    for (int k = 0; k < nt; k++) {
        ts[k].idx = malloc((size_t)wl.n * sizeof *ts[k].idx);
        ts[k].lat_us = malloc((size_t)wl.n * sizeof *ts[k].lat_us);
        if (!ts[k].idx || !ts[k].lat_us) goto done;
    }
    /* route like the pipeline: FNV-1a of the Kafka key, modulo the threads */
    for (int64_t i = 0; i < wl.n; i++) {
        const char *k = wl.m[i].kkey;
        cthread_t *t = &ts[fnv1a(k, strlen(k)) % (uint32_t)nt];
        t->idx[t->n++] = i;
    }
    db = open_db(o);
    if (!db) goto done;
    ww_error_t err;
    ww_error_clear(&err);
    /* the schema exactly as the worker brings it up at start */
    if (!ww_migrate_run(db, NULL, NULL, &err)) {
        fprintf(stderr, "wwbench: schema migrations: %s\n", err.message);
        goto done;
    }
    int64_t t0 = mono_us();
    for (; started < nt; started++) {
        ts[started].db = db;
        ts[started].wl = &wl;
        ts[started].o = o;
        if (pthread_create(&th[started], NULL, ceiling_main, &ts[started]) != 0) {
            fprintf(stderr, "wwbench: cannot start a thread\n");
            break;
        }
    }
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    double elapsed = (double)(mono_us() - t0) / 1e6;
    if (started < nt) goto done;
    int64_t by[EXP_N + 1] = {0}, wrong = 0, retries = 0, n = 0;
    const char *first_wrong = NULL;
    bool failed = false;
    for (int k = 0; k < nt; k++) {
        for (int s = 0; s <= EXP_N; s++) by[s] += ts[k].by_status[s];
        wrong += ts[k].wrong;
        retries += ts[k].retries;
        if (!first_wrong && ts[k].wrong) first_wrong = ts[k].first_wrong;
        if (ts[k].failed) {
            fprintf(stderr, "wwbench: ceiling thread %d failed: %s\n", k, ts[k].error);
            failed = true;
        }
        memcpy(all_lat + n, ts[k].lat_us, (size_t)ts[k].n * sizeof *all_lat);
        n += ts[k].n;
    }
    int64_t busiest = 0;
    for (int k = 0; k < nt; k++)
        if (ts[k].n > busiest) busiest = ts[k].n;
    lat_t l = latency_stats(all_lat, n);
    printf("{\"commands\":%lld,\"threads\":%d,\"elapsed_s\":%.3f,\"throughput_cps\":%.1f,"
           "\"by_status\":{\"applied\":%lld,\"duplicate\":%lld,\"insufficient_funds\":%lld,"
           "\"invalid\":%lld,\"other\":%lld},\"wrong_outcome\":%lld,\"db_retries\":%lld,"
           "\"busiest_thread_share\":%.3f,"
           "\"service_ms\":{\"p50\":%.2f,\"p95\":%.2f,\"p99\":%.2f,\"max\":%.2f,\"mean\":%.2f}}\n",
           (long long)wl.n, nt, elapsed, elapsed > 0 ? (double)wl.n / elapsed : 0.0,
           (long long)by[EXP_APPLIED], (long long)by[EXP_DUPLICATE],
           (long long)by[EXP_INSUFFICIENT], (long long)by[EXP_INVALID], (long long)by[EXP_N],
           (long long)wrong, (long long)retries, (double)busiest / (double)wl.n, l.p50, l.p95,
           l.p99, l.max, l.mean);
    fprintf(stderr, "wwbench: ceiling: %lld commands on %d threads in %.2f s: %.0f commands/s\n",
            (long long)wl.n, nt, elapsed, elapsed > 0 ? (double)wl.n / elapsed : 0.0);
    rc = failed ? 1 : 0;
    if (wrong) {
        fprintf(stderr, "wwbench: FAILED: %lld unexpected outcome(s), first: %s\n",
                (long long)wrong, first_wrong);
        rc = 1;
    }
done:
    if (rc != 0 && !started) fprintf(stderr, "wwbench: ceiling did not run\n");
    ww_db_destroy(db);
    if (ts)
        for (int k = 0; k < nt; k++) {
            free(ts[k].idx);
            free(ts[k].lat_us);
        }
    free(all_lat);
    free(th);
    free(ts);
    workload_free(&wl);
    return rc;
}

/* ---- raw-bulk: the minimum writes, no reads, no Kafka ------------------------------
 *
 * The floor under any worker design: for each batch of a thread's commands (up to
 * --batch, the engine's BATCH_MAX), one unordered bulk of guarded $inc updates (one
 * per wallet the batch decides for) and one unordered insert of the ledger entries
 * (one per decided command: applied or insufficient_funds). Nothing is read: the
 * outcome comes from the workload generator, which knows it; duplicates and invalid
 * messages write nothing. The guard is the balance ($gte the batch's debits), as the
 * worker's is; no version is known without a read. A write error, a short matched
 * count or a duplicate key fails the run: none can happen on a fresh seeded database,
 * and the writes are not idempotent, so nothing is retried. */

typedef struct {
    char owner[WW_COMMAND_OWNER_LEN + 1];
    int64_t net;    /* applied credits - applied debits */
    int64_t debits; /* applied debits: the guard */
} rwallet_t;

typedef struct {
    ww_db_t *db;
    const workload_t *wl;
    const opts_t *o;
    int64_t *idx; /* the messages this thread owns, in order */
    int64_t n;
    int64_t bulks, updates, inserts, skipped;
    bool failed;
    char error[MATCH_MAX + WW_ERROR_MSG_MAX + 64];
} rthread_t;

static rwallet_t *rwallet_find(rwallet_t *ws, int64_t *nw, const char *owner) {
    for (int64_t k = 0; k < *nw; k++)
        if (memcmp(ws[k].owner, owner, WW_COMMAND_OWNER_LEN) == 0) return &ws[k];
    rwallet_t *w = &ws[(*nw)++];
    memcpy(w->owner, owner, sizeof w->owner);
    w->net = w->debits = 0;
    return w;
}

static void raw_ledger(bson_t *docs, int64_t k, const ww_command_t *cmd, bool applied,
                       const char *topic, int64_t offset, int64_t now_ms) {
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)k);
    bson_t d, ref, src;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, cmd->owner_user_id);
    BSON_APPEND_DOCUMENT_BEGIN(docs, key, &d);
    BSON_APPEND_OID(&d, "_id", &id);
    BSON_APPEND_UTF8(&d, "idempotencyKey", cmd->idempotency_key);
    BSON_APPEND_UTF8(&d, "type", cmd->type == WW_COMMAND_DEBIT ? "debit" : "credit");
    BSON_APPEND_UTF8(&d, "status", applied ? "applied" : "insufficient_funds");
    BSON_APPEND_NULL(&d, "walletId"); /* unknown without a read */
    BSON_APPEND_OID(&d, "ownerUserId", &owner);
    BSON_APPEND_INT64(&d, "amountPaise", cmd->amount_paise);
    BSON_APPEND_NULL(&d, "balanceAfterPaise");
    BSON_APPEND_UTF8(&d, "fingerprint", cmd->fingerprint);
    if (cmd->has_reference) {
        BSON_APPEND_DOCUMENT_BEGIN(&d, "reference", &ref);
        for (size_t r = 0; r < cmd->reference_count; r++) {
            const ww_command_ref_t *e = &cmd->reference[r];
            if (e->kind == WW_COMMAND_REF_STRING)
                bson_append_utf8(&ref, e->key, -1, e->str, (int)e->str_len);
            else if (e->kind == WW_COMMAND_REF_INT)
                bson_append_int64(&ref, e->key, -1, e->i);
            else
                bson_append_bool(&ref, e->key, -1, e->b);
        }
        bson_append_document_end(&d, &ref);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&d, "source", &src);
    BSON_APPEND_UTF8(&src, "topic", topic);
    BSON_APPEND_INT32(&src, "partition", 0);
    BSON_APPEND_INT64(&src, "offset", offset);
    bson_append_document_end(&d, &src);
    bson_append_date_time(&d, "createdAt", -1, now_ms);
    bson_append_date_time(&d, "updatedAt", -1, now_ms);
    bson_append_document_end(docs, &d);
}

/* Runs one write command; *n from the reply. Any writeError fails it. */
static bool raw_write(ww_db_t *db, const bson_t *cmd, int64_t *n, char *why, size_t whylen) {
    bson_t reply;
    ww_error_t err;
    ww_error_clear(&err);
    bool ok = ww_db_command(db, cmd, &reply, &err);
    bson_iter_t it;
    if (!ok) {
        snprintf(why, whylen, "%s", err.message);
    } else if (bson_iter_init_find(&it, &reply, "writeErrors")) {
        ok = false;
        bson_iter_t a, e, f;
        int32_t code = 0;
        if (BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &a) && bson_iter_next(&a) &&
            BSON_ITER_HOLDS_DOCUMENT(&a) && bson_iter_recurse(&a, &e) &&
            bson_iter_find_descendant(&e, "code", &f) && BSON_ITER_HOLDS_INT32(&f))
            code = bson_iter_int32(&f);
        snprintf(why, whylen, "write error in the bulk reply (first code %d)", (int)code);
    } else if (bson_iter_init_find(&it, &reply, "n") && BSON_ITER_HOLDS_NUMBER(&it)) {
        *n = bson_iter_as_int64(&it);
    } else {
        ok = false;
        snprintf(why, whylen, "no n in the bulk reply");
    }
    bson_destroy(&reply);
    return ok;
}

static void *raw_bulk_main(void *arg) {
    rthread_t *t = arg;
    ww_json_limits_t lim = {.max_bytes = 65536, .max_depth = 8};
    int64_t batch = t->o->batch;
    ww_command_t *cmd = malloc(sizeof *cmd);
    rwallet_t *ws = malloc((size_t)batch * sizeof *ws);
    if (!cmd || !ws) {
        t->failed = true;
        snprintf(t->error, sizeof t->error, "out of memory");
        goto done;
    }
    for (int64_t b0 = 0; b0 < t->n && !t->failed; b0 += batch) {
        int64_t nw = 0, nd = 0, now_ms = ww_clock_now_ms();
        bson_t ins = BSON_INITIALIZER, docs;
        BSON_APPEND_UTF8(&ins, "insert", WW_TRANSACTIONS);
        BSON_APPEND_ARRAY_BEGIN(&ins, "documents", &docs);
        for (int64_t k = b0; k < t->n && k < b0 + batch; k++) {
            int64_t i = t->idx[k];
            const gmsg_t *g = &t->wl->m[i];
            ww_error_t err;
            ww_error_clear(&err);
            if (g->expect == EXP_DUPLICATE || g->expect == EXP_INVALID ||
                !ww_command_parse(g->value, g->value_len, &lim, cmd, &err)) {
                t->skipped++;
                continue;
            }
            bool applied = g->expect == EXP_APPLIED;
            rwallet_t *w = rwallet_find(ws, &nw, cmd->owner_user_id);
            if (applied && cmd->type == WW_COMMAND_DEBIT) {
                w->net -= cmd->amount_paise;
                w->debits += cmd->amount_paise;
            } else if (applied) {
                w->net += cmd->amount_paise;
            }
            raw_ledger(&docs, nd++, cmd, applied, "wwbench.raw-bulk", i, now_ms);
        }
        bson_append_array_end(&ins, &docs);
        BSON_APPEND_BOOL(&ins, "ordered", false);
        if (nw > 0) {
            bson_t upd = BSON_INITIALIZER, ups;
            BSON_APPEND_UTF8(&upd, "update", WW_WALLETS);
            BSON_APPEND_ARRAY_BEGIN(&upd, "updates", &ups);
            for (int64_t k = 0; k < nw; k++) {
                char key[24];
                snprintf(key, sizeof key, "%lld", (long long)k);
                bson_t u, q, gte, op, inc;
                bson_oid_t owner;
                bson_oid_init_from_string(&owner, ws[k].owner);
                BSON_APPEND_DOCUMENT_BEGIN(&ups, key, &u);
                BSON_APPEND_DOCUMENT_BEGIN(&u, "q", &q);
                BSON_APPEND_OID(&q, "ownerUserId", &owner);
                BSON_APPEND_NULL(&q, "deletedAt");
                BSON_APPEND_DOCUMENT_BEGIN(&q, "availablePaise", &gte);
                BSON_APPEND_INT64(&gte, "$gte", ws[k].debits);
                bson_append_document_end(&q, &gte);
                bson_append_document_end(&u, &q);
                BSON_APPEND_DOCUMENT_BEGIN(&u, "u", &op);
                BSON_APPEND_DOCUMENT_BEGIN(&op, "$inc", &inc);
                BSON_APPEND_INT64(&inc, "availablePaise", ws[k].net);
                BSON_APPEND_INT64(&inc, "version", 1);
                bson_append_document_end(&op, &inc);
                bson_append_document_end(&u, &op);
                bson_append_document_end(&ups, &u);
            }
            bson_append_array_end(&upd, &ups);
            BSON_APPEND_BOOL(&upd, "ordered", false);
            int64_t matched = 0;
            if (!raw_write(t->db, &upd, &matched, t->error, sizeof t->error)) {
                t->failed = true;
            } else if (matched != nw) {
                t->failed = true;
                snprintf(t->error, sizeof t->error, "guarded updates: %lld of %lld matched",
                         (long long)matched, (long long)nw);
            }
            t->bulks++;
            t->updates += nw;
            bson_destroy(&upd);
        }
        if (nd > 0 && !t->failed) {
            int64_t inserted = 0;
            if (!raw_write(t->db, &ins, &inserted, t->error, sizeof t->error)) {
                t->failed = true;
            } else if (inserted != nd) {
                t->failed = true;
                snprintf(t->error, sizeof t->error, "ledger insert: %lld of %lld inserted",
                         (long long)inserted, (long long)nd);
            }
            t->bulks++;
            t->inserts += nd;
        }
        bson_destroy(&ins);
    }
done:
    free(ws);
    free(cmd);
    return NULL;
}

static int cmd_raw_bulk(const opts_t *o) {
    workload_t wl;
    if (!workload_build(o, &wl)) return 1;
    int rc = 1;
    int nt = (int)o->threads;
    rthread_t *ts = calloc((size_t)nt, sizeof *ts);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    ww_db_t *db = NULL;
    int started = 0;
    if (!ts || !th) goto done;
    for (int k = 0; k < nt; k++) {
        ts[k].idx = malloc((size_t)wl.n * sizeof *ts[k].idx);
        if (!ts[k].idx) goto done;
    }
    /* the same routing as the worker and the ceiling */
    for (int64_t i = 0; i < wl.n; i++) {
        const char *k = wl.m[i].kkey;
        rthread_t *t = &ts[fnv1a(k, strlen(k)) % (uint32_t)nt];
        t->idx[t->n++] = i;
    }
    db = open_db(o);
    if (!db) goto done;
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_migrate_run(db, NULL, NULL, &err)) {
        fprintf(stderr, "wwbench: schema migrations: %s\n", err.message);
        goto done;
    }
    int64_t t0 = mono_us();
    for (; started < nt; started++) {
        ts[started].db = db;
        ts[started].wl = &wl;
        ts[started].o = o;
        if (pthread_create(&th[started], NULL, raw_bulk_main, &ts[started]) != 0) {
            fprintf(stderr, "wwbench: cannot start a thread\n");
            break;
        }
    }
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    double elapsed = (double)(mono_us() - t0) / 1e6;
    if (started < nt) goto done;
    int64_t bulks = 0, updates = 0, inserts = 0, skipped = 0;
    bool failed = false;
    for (int k = 0; k < nt; k++) {
        bulks += ts[k].bulks;
        updates += ts[k].updates;
        inserts += ts[k].inserts;
        skipped += ts[k].skipped;
        if (ts[k].failed) {
            fprintf(stderr, "wwbench: raw-bulk thread %d failed: %s\n", k, ts[k].error);
            failed = true;
        }
    }
    int64_t decided = wl.counts[EXP_APPLIED] + wl.counts[EXP_INSUFFICIENT];
    if (!failed && inserts != decided) {
        fprintf(stderr, "wwbench: raw-bulk: %lld ledger entries for %lld decided commands\n",
                (long long)inserts, (long long)decided);
        failed = true;
    }
    printf("{\"commands\":%lld,\"threads\":%d,\"batch\":%lld,\"elapsed_s\":%.3f,"
           "\"throughput_cps\":%.1f,\"bulks\":%lld,\"guarded_updates\":%lld,"
           "\"ledger_inserts\":%lld,\"no_write\":%lld,\"round_trips_per_command\":%.4f}\n",
           (long long)wl.n, nt, (long long)o->batch, elapsed,
           elapsed > 0 ? (double)wl.n / elapsed : 0.0, (long long)bulks, (long long)updates,
           (long long)inserts, (long long)skipped, (double)bulks / (double)wl.n);
    fprintf(stderr, "wwbench: raw-bulk: %lld commands on %d threads in %.2f s: %.0f commands/s "
            "(%lld bulks)\n", (long long)wl.n, nt, elapsed,
            elapsed > 0 ? (double)wl.n / elapsed : 0.0, (long long)bulks);
    rc = failed ? 1 : 0;
done:
    if (rc != 0 && !started) fprintf(stderr, "wwbench: raw-bulk did not run\n");
    ww_db_destroy(db);
    if (ts)
        for (int k = 0; k < nt; k++) free(ts[k].idx);
    free(th);
    free(ts);
    workload_free(&wl);
    return rc;
}

/* ---- invites -------------------------------------------------------------------- */

/* count events: the first 60% create one invite each; then, one per invite,
 * 5 of 8 are used and 3 of 8 revoked. Keyed by code: a code's events stay in
 * order. Every event is expected to be applied. */
static int cmd_invites_produce(const opts_t *o) {
    if (!o->topic) return usage_error("invites-produce needs --topic", NULL);
    busctx_t bc = {0};
    ww_bus_t *bus = open_bus(o, &bc, false, NULL);
    if (!bus) return 1;
    int64_t created = o->count * 6 / 10;
    if (created < 1) created = 1;
    int rc = 0;
    int64_t t0 = mono_us();
    for (int64_t i = 0; i < o->count && rc == 0; i++) {
        char code[MATCH_MAX], value[VALUE_MAX];
        int64_t c = i < created ? i : (i - created) % created;
        snprintf(code, sizeof code, "%s-c%lld", o->run_id, (long long)c);
        int n;
        if (i < created) {
            n = snprintf(value, sizeof value,
                         "{\"type\":\"invite.created\",\"eventId\":\"%s-e%lld\",\"code\":\"%s\","
                         "\"parentCode\":\"AGENCY-1\",\"role\":\"brand\","
                         "\"expiresAt\":\"2099-01-01T00:00:00.000Z\","
                         "\"createdAt\":\"2026-01-01T00:00:00.000Z\","
                         "\"createdByUserId\":\"" OWNER_PREFIX "%016llx\"}",
                         o->run_id, (long long)i, code, (unsigned long long)c);
        } else if ((i - created) % 8 < 5) {
            n = snprintf(value, sizeof value,
                         "{\"type\":\"invite.used\",\"eventId\":\"%s-e%lld\",\"code\":\"%s\","
                         "\"usedByUserId\":\"" OWNER_PREFIX "%016llx\","
                         "\"occurredAt\":\"2026-02-01T00:00:00.000Z\"}",
                         o->run_id, (long long)i, code, (unsigned long long)(i + 1000000));
        } else {
            n = snprintf(value, sizeof value,
                         "{\"type\":\"invite.revoked\",\"eventId\":\"%s-e%lld\",\"code\":\"%s\","
                         "\"occurredAt\":\"2026-02-01T00:00:00.000Z\"}",
                         o->run_id, (long long)i, code);
        }
        if (n < 0 || (size_t)n >= sizeof value) rc = 1;
        else if (!produce_one(bus, o->topic, code, value, (size_t)n)) rc = 1;
    }
    ww_bus_destroy(bus, 30000);
    long ok = atomic_load(&bc.ok);
    if (ok != o->count) {
        fprintf(stderr, "wwbench: %ld of %lld invite events acknowledged\n", ok,
                (long long)o->count);
        rc = 1;
    }
    double s = (double)(mono_us() - t0) / 1e6;
    if (rc == 0) {
        printf("{\"events\":%lld,\"created\":%lld,\"produce_s\":%.3f}\n", (long long)o->count,
               (long long)created, s);
        fprintf(stderr, "wwbench: produced %lld invite events in %.2f s\n", (long long)o->count, s);
    }
    return rc;
}

/* Throughput between the first and the last of count completions. */
typedef struct {
    int64_t first_us, last_us, n;
    series_t series;
} span_t;

static void span_add(span_t *sp, int64_t now, int64_t k) {
    if (sp->n == 0) sp->first_us = now;
    sp->n += k;
    sp->last_us = now;
    if (series_at(&sp->series, (size_t)((now - sp->first_us) / sp->series.bucket_us)))
        sp->series.done[(now - sp->first_us) / sp->series.bucket_us] += k;
}

static int cmd_await_results(const opts_t *o) {
    if (!o->topic || o->count <= 0) return usage_error("await-results needs --topic and --count", NULL);
    busctx_t bc = {0};
    ww_bus_t *bus = open_bus(o, &bc, true, o->topic);
    if (!bus) return 1;
    if (!await_assignment(bus, &bc, 60000)) {
        ww_bus_destroy(bus, 0);
        return 1;
    }
    /* the caller starts the worker once this line is out */
    fprintf(stderr, "wwbench: await-results: assigned, waiting for %lld on %s\n",
            (long long)o->count, o->topic);
    printf("{\"ready\":true}\n");
    fflush(stdout);
    span_t sp = {0};
    sp.series.bucket_us = o->bucket_ms * 1000;
    int64_t applied = 0, other = 0, last_progress = mono_us(), pmin = -1, pmax = -1;
    /* the idle timer starts only at the first result (the worker starts meanwhile) */
    int64_t start_deadline = mono_us() + 120 * 1000000LL;
    while (sp.n < o->count) {
        ww_msg_t *m = ww_bus_poll(bus, 100);
        int64_t now = mono_us();
        if (!m) {
            if ((sp.n == 0 && now > start_deadline) ||
                (sp.n > 0 && now - last_progress > o->idle_timeout_s * 1000000)) {
                fprintf(stderr, "wwbench: await-results: %lld of %lld after waiting\n",
                        (long long)sp.n, (long long)o->count);
                break;
            }
            continue;
        }
        last_progress = now;
        json_tokener *tok = json_tokener_new_ex(16);
        json_object *j = tok && m->value ? json_tokener_parse_ex(tok, m->value, (int)m->value_len)
                                         : NULL;
        if (tok) json_tokener_free(tok);
        const char *st = j ? jstr(j, "status") : NULL;
        if (st && strcmp(st, "applied") == 0) applied++;
        else other++;
        const char *pa = j ? jstr(j, "processedAt") : NULL;
        int64_t pms;
        if (pa && ww_clock_parse_rfc3339(pa, strlen(pa), &pms)) {
            if (pmin < 0 || pms < pmin) pmin = pms;
            if (pms > pmax) pmax = pms;
        }
        json_object_put(j);
        ww_msg_destroy(m);
        span_add(&sp, now, 1);
    }
    ww_bus_destroy(bus, 0);
    series_write(&sp.series, o->series, sp.last_us - sp.first_us);
    /* Results reach a consumer in fetch batches, so for small counts the arrival
     * span says little; the worker's own processedAt stamps (ms) give the span
     * over which it decided the events. */
    double ps = pmax > pmin ? (double)(pmax - pmin) / 1000.0 : 0.0;
    double as = (double)(sp.last_us - sp.first_us) / 1e6;
    printf("{\"count\":%lld,\"done\":%lld,\"applied\":%lld,\"other\":%lld,"
           "\"processed_span_s\":%.3f,\"throughput_per_s\":%.1f,"
           "\"arrival_first_to_last_s\":%.3f,\"arrival_throughput_per_s\":%.1f}\n",
           (long long)o->count, (long long)sp.n, (long long)applied, (long long)other, ps,
           ps > 0 ? (double)(sp.n - 1) / ps : 0.0, as,
           as > 0 ? (double)(sp.n - 1) / as : 0.0);
    series_free(&sp.series);
    if (sp.n < o->count || other) {
        fprintf(stderr, "wwbench: FAILED: %lld of %lld results, %lld not applied\n",
                (long long)sp.n, (long long)o->count, (long long)other);
        return 1;
    }
    return 0;
}

static bool count_docs(ww_db_t *db, const char *coll, int64_t *n, ww_error_t *err) {
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "count", coll);
    bool ok = ww_db_command(db, &cmd, &reply, err);
    bson_iter_t it;
    if (ok && bson_iter_init_find(&it, &reply, "n") && BSON_ITER_HOLDS_NUMBER(&it))
        *n = bson_iter_as_int64(&it);
    else ok = false;
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

static int cmd_await_docs(const opts_t *o) {
    if (!o->topic || o->count <= 0)
        return usage_error("await-docs needs --topic COLLECTION and --count", NULL);
    ww_db_t *db = open_db(o);
    if (!db) return 1;
    printf("{\"ready\":true}\n");
    fflush(stdout);
    span_t sp = {0};
    sp.series.bucket_us = o->bucket_ms * 1000;
    int64_t last = 0, first_batch = 0, last_progress = mono_us();
    int64_t start_deadline = mono_us() + 180 * 1000000LL;
    int rc = 1;
    for (;;) {
        int64_t n = 0;
        ww_error_t err;
        ww_error_clear(&err);
        if (!count_docs(db, o->topic, &n, &err)) n = last;
        int64_t now = mono_us();
        if (n > last) {
            if (last == 0) first_batch = n;
            span_add(&sp, now, n - last);
            last = n;
            last_progress = now;
        }
        if (n >= o->count) {
            rc = 0;
            break;
        }
        if ((last == 0 && now > start_deadline) ||
            (last > 0 && now - last_progress > o->idle_timeout_s * 1000000)) {
            fprintf(stderr, "wwbench: await-docs: %lld of %lld documents in %s\n",
                    (long long)last, (long long)o->count, o->topic);
            break;
        }
        ww_clock_sleep_ms(50, NULL);
    }
    ww_db_destroy(db);
    series_write(&sp.series, o->series, sp.last_us - sp.first_us);
    /* documents land in batches: the rate is what arrived after the first
     * observation, over the time since it */
    double s = (double)(sp.last_us - sp.first_us) / 1e6;
    printf("{\"count\":%lld,\"done\":%lld,\"first_batch\":%lld,\"first_to_last_s\":%.3f,"
           "\"throughput_per_s\":%.1f}\n",
           (long long)o->count, (long long)sp.n, (long long)first_batch, s,
           s > 0 ? (double)(sp.n - first_batch) / s : 0.0);
    series_free(&sp.series);
    return rc;
}

/* ---- main ------------------------------------------------------------------------- */

static bool take_opt(int argc, char **argv, int *i, const char *name, const char **value,
                     int *rc) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return false;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return true;
    }
    if (argv[*i][n] != '\0') return false;
    if (*i + 1 >= argc) {
        *rc = usage_error("option needs a value", name);
        return true;
    }
    *value = argv[++*i];
    return true;
}

int main(int argc, char **argv) {
    opts_t o;
    memset(&o, 0, sizeof o);
    o.brokers = getenv("KAFKA_BROKERS");
    o.mongodb_uri = getenv("MONGODB_URI");
    if (!o.brokers || !*o.brokers) o.brokers = "127.0.0.1:9092";
    if (!o.mongodb_uri || !*o.mongodb_uri) o.mongodb_uri = "mongodb://127.0.0.1:27017/wallet";
    o.run_id = "bench";
    o.commands = 100000;
    o.wallets = 10000;
    o.zipf = 0.8;
    o.dup_share = 0.05;
    o.insufficient_share = 0.05;
    o.invalid_share = 0.01;
    o.seed = 1;
    o.balance = 1000000000;
    o.partitions = 4;
    o.threads = 8;
    o.batch = 512;
    o.bucket_ms = 1000;
    o.idle_timeout_s = 60;
    struct {
        const char *name;
        const char *v;
    } raw[] = {{"--commands", NULL},  {"--wallets", NULL},   {"--zipf", NULL},
               {"--dup-share", NULL}, {"--insufficient-share", NULL},
               {"--invalid-share", NULL}, {"--seed", NULL}, {"--balance", NULL},
               {"--partitions", NULL}, {"--threads", NULL}, {"--rate", NULL},
               {"--bucket-ms", NULL}, {"--idle-timeout-s", NULL}, {"--count", NULL},
               {"--worker-pid", NULL}, {"--batch", NULL}};
    enum { COMMANDS, WALLETS, ZIPF, DUP, INSUF, INVAL, SEED, BALANCE, PARTS, THREADS, RATE,
           BUCKET, IDLE, COUNT, PID, BATCH, NRAW };
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        bool took = false;
        for (int k = 0; k < NRAW && !took; k++) took = take_opt(argc, argv, &i, raw[k].name, &raw[k].v, &rc);
        if (!took)
            took = take_opt(argc, argv, &i, "--brokers", &o.brokers, &rc) ||
                   take_opt(argc, argv, &i, "--mongodb-uri", &o.mongodb_uri, &rc) ||
                   take_opt(argc, argv, &i, "--run-id", &o.run_id, &rc) ||
                   take_opt(argc, argv, &i, "--topic", &o.topic, &rc) ||
                   take_opt(argc, argv, &i, "--commands-topic", &o.commands_topic, &rc) ||
                   take_opt(argc, argv, &i, "--results-topic", &o.results_topic, &rc) ||
                   take_opt(argc, argv, &i, "--series", &o.series, &rc);
        if (rc) return rc;
        if (took) continue;
        if (a[0] == '-' && a[1]) return usage_error("unknown option", a);
        if (o.npos >= (int)(sizeof o.pos / sizeof o.pos[0])) return usage_error("too many arguments", NULL);
        o.pos[o.npos++] = a;
    }
    int64_t v;
#define INT_OPT(K, MIN, MAX, FIELD)                                                       \
    if (raw[K].v) {                                                                       \
        if (!parse_i64(raw[K].v, MIN, MAX, &v)) return usage_error("bad value for " #K, raw[K].v); \
        FIELD = v;                                                                        \
    }
    INT_OPT(COMMANDS, 1, 10000000, o.commands)
    INT_OPT(WALLETS, 1, 1000000, o.wallets)
    INT_OPT(SEED, 0, INT64_MAX, o.seed)
    INT_OPT(BALANCE, 0, 1000000000000LL, o.balance)
    INT_OPT(PARTS, 1, 256, o.partitions)
    INT_OPT(THREADS, 1, 64, o.threads)
    INT_OPT(RATE, 0, 10000000, o.rate)
    INT_OPT(BUCKET, 10, 60000, o.bucket_ms)
    INT_OPT(IDLE, 1, 3600, o.idle_timeout_s)
    INT_OPT(COUNT, 1, 10000000, o.count)
    INT_OPT(PID, 1, INT32_MAX, o.worker_pid)
    INT_OPT(BATCH, 1, 10000, o.batch)
#undef INT_OPT
    if (raw[ZIPF].v) {
        char *end = NULL;
        errno = 0;
        o.zipf = strtod(raw[ZIPF].v, &end);
        if (errno || end == raw[ZIPF].v || *end || !(o.zipf >= 0 && o.zipf <= 5))
            return usage_error("--zipf must be 0..5", raw[ZIPF].v);
    }
    if ((raw[DUP].v && !parse_share(raw[DUP].v, &o.dup_share)) ||
        (raw[INSUF].v && !parse_share(raw[INSUF].v, &o.insufficient_share)) ||
        (raw[INVAL].v && !parse_share(raw[INVAL].v, &o.invalid_share)))
        return usage_error("a share must be a number 0..1", NULL);
    if (o.dup_share + o.insufficient_share + o.invalid_share > 1.0)
        return usage_error("the shares add up to more than 1", NULL);
    if (!valid_run_id(o.run_id)) return usage_error("--run-id must be 1..40 of [A-Za-z0-9._-]", o.run_id);
    if (o.balance < 1000 * o.commands)
        return usage_error("--balance must cover 1000 paise per command (debits must not run dry)", NULL);
    if (o.npos == 0) return usage_error("missing command", NULL);

    ww_log_set_level(WW_LOG_ERROR);
    ww_db_global_init();
    const char *cmd = o.pos[0];
    int rc;
    if (strcmp(cmd, "topics") == 0) rc = cmd_topics(&o);
    else if (strcmp(cmd, "seed") == 0) rc = cmd_seed(&o);
    else if (strcmp(cmd, "run") == 0) rc = cmd_run(&o);
    else if (strcmp(cmd, "ceiling") == 0) rc = cmd_ceiling(&o);
    else if (strcmp(cmd, "raw-bulk") == 0) rc = cmd_raw_bulk(&o);
    else if (strcmp(cmd, "invites-produce") == 0) rc = o.count > 0 ? cmd_invites_produce(&o) : usage_error("invites-produce needs --count", NULL);
    else if (strcmp(cmd, "await-results") == 0) rc = cmd_await_results(&o);
    else if (strcmp(cmd, "await-docs") == 0) rc = cmd_await_docs(&o);
    else rc = usage_error("unknown command", cmd);
    ww_db_global_cleanup();
    return rc;
}
