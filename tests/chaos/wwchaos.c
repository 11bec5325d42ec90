/* wwchaos.c: the C half of the fault-injection suite (scripts/chaos.sh is the
 * bash half that starts servers and workers and injects the faults).
 *
 *   wwchaos topics NAME:PARTITIONS...         create topics (existing = ok)
 *   wwchaos seed --owners N --initial B       wallets for owners 0..N-1
 *   wwchaos produce --topic T --run R --first I --count C [--dup-pct D] [--rate R]
 *   wwchaos count                             ledger entries
 *   wwchaos sample --owners N --initial B     in-flight balance rule (below)
 *   wwchaos lag --group G --topic T [--wait-ms W]
 *   wwchaos check --topic T --results R --owners N --initial B
 *   wwchaos digest                            SHA-256 of wallets + ledger
 *   wwchaos mock --worker BIN --owners N --initial B --count C
 *
 * Common options: --brokers (KAFKA_BROKERS), --mongodb-uri (MONGODB_URI).
 * Exit status: 0 ok, 1 an invariant violated (or the operation failed),
 * 2 usage, 3 a server was unavailable (sample: not a violation).
 *
 * DESIGN
 * - The commands topic is the source of truth for "what was sent": check
 *   reads it from offset 0 and derives the distinct idempotency keys, so a
 *   producer that died or a send whose acknowledgement was lost cannot make
 *   the expectation wrong.
 * - Sampling while workers run (sample): a wallet document is read twice
 *   with the ledger read in between. When the wallet's `version` is the
 *   same both times, no decision touched the wallet in that window (every
 *   decision, prune and undo is a guarded update that bumps the version), so
 *   the wallet's decided keys are exactly: its markers (pendingTransactions)
 *   plus the ledger entries with its walletId. The rule checked is
 *     balance == initial + sum(effect of applied markers)
 *                        + sum(effect of applied ledger entries whose key
 *                              has no marker in the wallet).
 *   Wallets whose version moved are re-read (a few rounds) and otherwise
 *   reported as unstable, never as a violation.
 * - Kafka is read and the mock cluster driven with librdkafka directly: this
 *   is a test tool, it needs committed offsets and rdkafka_mock.h, which the
 *   worker's bus.h deliberately does not expose. Producing goes through
 *   bus.h (the idempotent producer the worker uses), MongoDB through db.h. */
#include <bson/bson.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "migrate.h"
#include "sha256.h"
#include "wallet.h"

#define MAX_OWNERS 4096
#define KEY_MAX 128
#define SHOW_VIOLATIONS 25

/* ---- options ------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *value;
} opt_t;

static opt_t g_opts[64];
static int g_nopts;
static const char *g_pos[64];
static int g_npos;

static const char *opt(const char *name, const char *def) {
    for (int i = g_nopts - 1; i >= 0; i--)
        if (strcmp(g_opts[i].name, name) == 0) return g_opts[i].value;
    return def;
}

static int64_t opt_i64(const char *name, int64_t def) {
    const char *v = opt(name, NULL);
    if (!v) return def;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "wwchaos: --%s: \"%s\" is not an integer\n", name, v);
        exit(2);
    }
    return x;
}

static const char *brokers(void) {
    const char *e = getenv("KAFKA_BROKERS");
    return opt("brokers", e ? e : "127.0.0.1:59092");
}

static const char *mongodb_uri(void) {
    const char *e = getenv("MONGODB_URI");
    return opt("mongodb-uri", e ? e : "mongodb://127.0.0.1:57117/chaos");
}

/* ---- violations --------------------------------------------------------- */

static int g_violations;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...) {
    g_violations++;
    if (g_violations > SHOW_VIOLATIONS) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "  VIOLATION: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
}

/* ---- a string map (open addressing) ------------------------------------- */

typedef struct {
    char *key;
    void *val;
} slot_t;

typedef struct {
    slot_t *s;
    size_t cap, n;
} map_t;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void *map_get(const map_t *m, const char *key) {
    if (!m->cap) return NULL;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->s[i].key) return NULL;
        if (strcmp(m->s[i].key, key) == 0) return m->s[i].val;
    }
}

static void map_put(map_t *m, const char *key, void *val) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        slot_t *ns = calloc(ncap, sizeof *ns);
        for (size_t i = 0; i < m->cap; i++)
            if (m->s[i].key)
                for (size_t j = hash_str(m->s[i].key) & (ncap - 1);; j = (j + 1) & (ncap - 1))
                    if (!ns[j].key) {
                        ns[j] = m->s[i];
                        break;
                    }
        free(m->s);
        m->s = ns;
        m->cap = ncap;
    }
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->s[i].key) {
            m->s[i].key = strdup(key);
            m->s[i].val = val;
            m->n++;
            return;
        }
        if (strcmp(m->s[i].key, key) == 0) {
            m->s[i].val = val;
            return;
        }
    }
}

static void map_free(map_t *m, bool free_vals) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].key) {
            free(m->s[i].key);
            if (free_vals) free(m->s[i].val);
        }
    free(m->s);
    memset(m, 0, sizeof *m);
}

/* ---- owners and commands ------------------------------------------------ */

static void owner_hex(int i, char out[25]) {
    snprintf(out, 25, "%08x%016x", 0xc4a05000u, (unsigned)i);
}

/* index of an owner id, or -1 */
static int owner_index(const char *hex) {
    if (strlen(hex) != 24 || strncmp(hex, "c4a05000", 8) != 0) return -1;
    char *end = NULL;
    unsigned long long v = strtoull(hex + 8, &end, 16);
    if (*end || v >= MAX_OWNERS) return -1;
    return (int)v;
}

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* ---- MongoDB ------------------------------------------------------------ */

static ww_db_t *open_db(const char *uri, int attempts) {
    ww_error_t err;
    ww_db_options_t o;
    ww_db_options_defaults(&o);
    o.server_selection_ms = 3000;
    ww_db_t *db = ww_db_new(uri, &o, &err);
    if (!db) {
        fprintf(stderr, "wwchaos: %s\n", err.message);
        return NULL;
    }
    for (int i = 0; i < attempts; i++) {
        if (ww_db_ping(db, &err)) return db;
        if (i + 1 < attempts) ww_clock_sleep_ms(500, NULL);
    }
    fprintf(stderr, "wwchaos: MongoDB not answering: %s\n", err.message);
    ww_db_destroy(db);
    return NULL;
}

static const char *doc_str(const bson_t *d, const char *k) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_UTF8(&it)) return bson_iter_utf8(&it, NULL);
    return "";
}

static int64_t doc_i64(const bson_t *d, const char *k, bool *has) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_NUMBER(&it)) {
        if (has) *has = true;
        return bson_iter_as_int64(&it);
    }
    if (has) *has = false;
    return 0;
}

static void doc_oid(const bson_t *d, const char *k, char out[25]) {
    bson_iter_t it;
    out[0] = '\0';
    if (bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_OID(&it))
        bson_oid_to_string(bson_iter_oid(&it), out);
}

/* A ledger entry or a marker, reduced to what the checks need. */
typedef struct {
    char id[25];
    char key[KEY_MAX];
    char status[32];
    char type[8];
    char wallet[25];
    char owner[25];
    int64_t amount;
    bool has_balance;
    int64_t balance_after;
    int count; /* ledger: entries seen with this key */
} entry_t;

static void entry_from(const bson_t *d, entry_t *e) {
    memset(e, 0, sizeof *e);
    doc_oid(d, "_id", e->id);
    snprintf(e->key, sizeof e->key, "%s", doc_str(d, "idempotencyKey"));
    snprintf(e->status, sizeof e->status, "%s", doc_str(d, "status"));
    snprintf(e->type, sizeof e->type, "%s", doc_str(d, "type"));
    doc_oid(d, "walletId", e->wallet);
    doc_oid(d, "ownerUserId", e->owner);
    e->amount = doc_i64(d, "amountPaise", NULL);
    e->balance_after = doc_i64(d, "balanceAfterPaise", &e->has_balance);
}

static int64_t effect(const entry_t *e) {
    if (strcmp(e->status, "applied") != 0) return 0;
    return strcmp(e->type, "debit") == 0 ? -e->amount : e->amount;
}

typedef struct {
    bool present;
    char id[25];
    char owner[25];
    int64_t version;
    int64_t balance;
    bool balance_ok;
    size_t n_markers;
    entry_t *markers;
} wallet_t;

typedef struct {
    wallet_t w[MAX_OWNERS];
    int extra; /* wallets of owners we did not seed */
} wallets_t;

static bool load_wallet(const bson_t *doc, void *ctx) {
    wallets_t *ws = ctx;
    char owner[25];
    doc_oid(doc, "ownerUserId", owner);
    int i = owner_index(owner);
    if (i < 0) {
        ws->extra++;
        return true;
    }
    wallet_t *w = &ws->w[i];
    if (w->present) { /* a second wallet for one owner: never seeded */
        ws->extra++;
        return true;
    }
    w->present = true;
    doc_oid(doc, "_id", w->id);
    snprintf(w->owner, sizeof w->owner, "%s", owner);
    bool has;
    w->version = doc_i64(doc, "version", &has);
    bson_iter_t it, arr;
    w->balance_ok = bson_iter_init_find(&it, doc, "availablePaise") && BSON_ITER_HOLDS_NUMBER(&it);
    w->balance = w->balance_ok ? bson_iter_as_int64(&it) : 0;
    if (bson_iter_init_find(&it, doc, "pendingTransactions") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        size_t cap = 0;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) continue;
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&arr, &len, &data);
            bson_t m;
            if (!bson_init_static(&m, data, len)) continue;
            if (w->n_markers == cap) {
                cap = cap ? cap * 2 : 4;
                w->markers = realloc(w->markers, cap * sizeof *w->markers);
            }
            entry_from(&m, &w->markers[w->n_markers++]);
        }
    }
    return true;
}

static void wallets_free(wallets_t *ws) {
    for (int i = 0; i < MAX_OWNERS; i++) free(ws->w[i].markers);
    memset(ws, 0, sizeof *ws);
}

static bool read_wallets(ww_db_t *db, wallets_t *ws, ww_error_t *err) {
    wallets_free(ws);
    bson_t all = BSON_INITIALIZER;
    bool ok = ww_db_find(db, WW_WALLETS, &all, NULL, load_wallet, ws, err);
    bson_destroy(&all);
    return ok;
}

typedef struct {
    map_t by_key; /* key -> entry_t* */
    size_t n;
    size_t dup_keys;
} ledger_t;

static bool load_entry(const bson_t *doc, void *ctx) {
    ledger_t *l = ctx;
    entry_t e;
    entry_from(doc, &e);
    l->n++;
    entry_t *have = map_get(&l->by_key, e.key);
    if (have) {
        have->count++;
        l->dup_keys++;
        return true;
    }
    entry_t *p = malloc(sizeof *p);
    *p = e;
    p->count = 1;
    map_put(&l->by_key, e.key, p);
    return true;
}

static bool read_ledger(ww_db_t *db, ledger_t *l, ww_error_t *err) {
    map_free(&l->by_key, true);
    memset(l, 0, sizeof *l);
    bson_t all = BSON_INITIALIZER;
    bool ok = ww_db_find(db, WW_TRANSACTIONS, &all, NULL, load_entry, l, err);
    bson_destroy(&all);
    return ok;
}

static int64_t ledger_count(ww_db_t *db, ww_error_t *err) {
    bson_t cmd = BSON_INITIALIZER, reply, q = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd, "count", WW_TRANSACTIONS);
    BSON_APPEND_DOCUMENT(&cmd, "query", &q);
    int64_t n = -1;
    if (ww_db_command(db, &cmd, &reply, err)) n = doc_i64(&reply, "n", NULL);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    bson_destroy(&q);
    return n;
}

/* ---- Kafka (librdkafka directly) ----------------------------------------- */

static rd_kafka_t *new_rk(rd_kafka_type_t type, const char *bootstrap, const char *group) {
    char errstr[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(c, "log_level", "3", errstr, sizeof errstr);
    rd_kafka_conf_set(c, "log.connection.close", "false", errstr, sizeof errstr);
    if (type == RD_KAFKA_CONSUMER) {
        char g[200];
        snprintf(g, sizeof g, "wwchaos-reader-%d", (int)getpid());
        rd_kafka_conf_set(c, "group.id", group ? group : g, errstr, sizeof errstr);
        rd_kafka_conf_set(c, "enable.auto.commit", "false", errstr, sizeof errstr);
        rd_kafka_conf_set(c, "enable.partition.eof", "false", errstr, sizeof errstr);
        rd_kafka_conf_set(c, "isolation.level", "read_committed", errstr, sizeof errstr);
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "wwchaos: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(c);
    }
    return rk;
}

static int partition_count(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    int n = -1;
    for (int attempt = 0; attempt < 20 && n < 0; attempt++) {
        if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && md->topics[0].err == 0) n = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        if (n < 0) ww_clock_sleep_ms(500, NULL);
    }
    rd_kafka_topic_destroy(t);
    return n;
}

typedef void (*msg_fn)(const rd_kafka_message_t *m, void *ctx);

/* Reads every partition of topic from its low to its high watermark (taken
 * at the start). Returns the number of messages, -1 on failure. */
static int64_t read_topic(const char *bootstrap, const char *topic, msg_fn fn, void *ctx,
                          int timeout_ms) {
    rd_kafka_t *rk = new_rk(RD_KAFKA_CONSUMER, bootstrap, NULL);
    if (!rk) return -1;
    int n = partition_count(rk, topic);
    int64_t count = -1;
    if (n <= 0) {
        fprintf(stderr, "wwchaos: no metadata for topic %s\n", topic);
        goto done;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    int64_t *hi = calloc((size_t)n, sizeof *hi);
    int remaining = 0;
    for (int p = 0; p < n; p++) {
        int64_t lo = 0;
        rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TRANSPORT;
        for (int a = 0; a < 20 && e; a++) {
            e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 5000);
            if (e) ww_clock_sleep_ms(500, NULL);
        }
        if (e) {
            fprintf(stderr, "wwchaos: watermarks %s[%d]: %s\n", topic, p, rd_kafka_err2str(e));
            free(hi);
            rd_kafka_topic_partition_list_destroy(l);
            goto done;
        }
        if (hi[p] > lo) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
            remaining++;
        }
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    count = 0;
    int64_t deadline = ww_clock_mono_ms() + timeout_ms;
    while (remaining > 0 && ww_clock_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (!m->err && m->offset < hi[m->partition]) {
            fn(m, ctx);
            count++;
            if (m->offset + 1 >= hi[m->partition]) remaining--;
        }
        rd_kafka_message_destroy(m);
    }
    if (remaining > 0) {
        fprintf(stderr, "wwchaos: %s: %d partitions not read to their end in time\n", topic,
                remaining);
        count = -1;
    }
    free(hi);
    rd_kafka_assign(rk, NULL);
done:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

/* Total lag of group on topic (committed vs high watermark); -1 on error.
 * A partition without a committed offset counts from its low watermark. */
static int64_t group_lag(const char *bootstrap, const char *group, const char *topic,
                         char *detail, size_t cap) {
    rd_kafka_t *rk = new_rk(RD_KAFKA_CONSUMER, bootstrap, group);
    if (!rk) return -1;
    int64_t total = -1;
    int n = partition_count(rk, topic);
    if (n <= 0) goto done;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
    if (e) {
        snprintf(detail, cap, "committed: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
        goto done;
    }
    total = 0;
    size_t off = 0;
    detail[0] = '\0';
    for (int p = 0; p < n; p++) {
        int64_t lo = 0, hi = 0;
        e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (e) {
            snprintf(detail, cap, "watermarks: %s", rd_kafka_err2str(e));
            total = -1;
            break;
        }
        int64_t c = l->elems[p].offset >= 0 ? l->elems[p].offset : lo;
        total += hi - c;
        if (off < cap)
            off += (size_t)snprintf(detail + off, cap - off, "%s%d:%lld/%lld", p ? " " : "", p,
                                    (long long)c, (long long)hi);
    }
    rd_kafka_topic_partition_list_destroy(l);
done:
    rd_kafka_destroy(rk);
    return total;
}

/* ---- commands: topics ------------------------------------------------------ */

static int cmd_topics(void) {
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = brokers();
    bc.consumer = false;
    ww_error_t err;
    ww_bus_t *bus = ww_bus_new(&bc, NULL, &err);
    if (!bus) {
        fprintf(stderr, "wwchaos: %s\n", err.message);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < g_npos; i++) {
        char name[250];
        snprintf(name, sizeof name, "%s", g_pos[i]);
        char *colon = strrchr(name, ':');
        long parts = 1;
        if (colon) {
            char *end = NULL;
            parts = strtol(colon + 1, &end, 10);
            if (*end || parts < 1 || parts > 1000) {
                fprintf(stderr, "wwchaos: bad partition count in %s\n", g_pos[i]);
                rc = 1;
                continue;
            }
            *colon = '\0';
        }
        if (!ww_bus_create_topic(bus, name, (int)parts, 30000, &err)) {
            fprintf(stderr, "wwchaos: topic %s: %s\n", name, err.message);
            rc = 1;
        }
    }
    ww_bus_destroy(bus, 1000);
    return rc;
}

/* ---- seed ------------------------------------------------------------------ */

static bool seed_wallets(ww_db_t *db, int owners, int64_t initial) {
    ww_error_t err;
    ww_migrate_options_t mo = {0};
    if (!ww_migrate_run(db, &mo, NULL, &err)) { /* the indexes, unique ledger key above all */
        fprintf(stderr, "wwchaos: migrations: %s\n", err.message);
        return false;
    }
    for (int i = 0; i < owners; i++) {
        char hex[25];
        owner_hex(i, hex);
        bson_t doc = BSON_INITIALIZER;
        bson_oid_t id, owner;
        bson_oid_init(&id, NULL);
        bson_oid_init_from_string(&owner, hex);
        BSON_APPEND_OID(&doc, "_id", &id);
        BSON_APPEND_OID(&doc, "ownerUserId", &owner);
        /* the three shapes the backend may have written */
        if (i % 3 == 0 && initial <= INT32_MAX)
            BSON_APPEND_INT32(&doc, "availablePaise", (int32_t)initial);
        else if (i % 3 == 2)
            BSON_APPEND_DOUBLE(&doc, "availablePaise", (double)initial);
        else
            BSON_APPEND_INT64(&doc, "availablePaise", initial);
        BSON_APPEND_INT32(&doc, "version", 0);
        bool dup;
        bool ok = ww_db_insert_one(db, WW_WALLETS, &doc, &dup, &err);
        bson_destroy(&doc);
        if (!ok) {
            fprintf(stderr, "wwchaos: seed: %s\n", err.message);
            return false;
        }
    }
    return true;
}

static int cmd_seed(void) {
    ww_db_t *db = open_db(mongodb_uri(), 60);
    if (!db) return 3;
    int owners = (int)opt_i64("owners", 24);
    int64_t initial = opt_i64("initial", 5000);
    bool ok = seed_wallets(db, owners, initial);
    if (ok) printf("seeded %d wallets of %lld paise\n", owners, (long long)initial);
    ww_db_destroy(db);
    return ok ? 0 : 1;
}

/* ---- produce --------------------------------------------------------------- */

typedef struct {
    atomic_long ok, failed;
} deliveries_t;

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    deliveries_t *d = ctx;
    (void)opaque;
    atomic_fetch_add(!error ? &d->ok : &d->failed, 1);
}

typedef struct {
    char key[25];
    char value[320];
} sent_t;

/* Produces `count` commands with keys RUN-<first+i>; about dup_pct percent of
 * the messages re-send an earlier message verbatim (a duplicated delivery). */
static bool produce_commands(const char *bootstrap, const char *topic, const char *run,
                             int64_t first, int64_t count, int owners, int missing, int dup_pct,
                             int rate, uint32_t seed, int64_t *n_msgs, int64_t *n_dups) {
    deliveries_t d = {0};
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = bootstrap;
    bc.consumer = false;
    ww_bus_hooks_t hooks = {.ctx = &d, .on_delivery = on_delivery};
    ww_error_t err;
    ww_bus_t *bus = ww_bus_new(&bc, &hooks, &err);
    if (!bus) {
        fprintf(stderr, "wwchaos: producer: %s\n", err.message);
        return false;
    }
    sent_t *sent = calloc((size_t)count, sizeof *sent);
    int64_t n_sent = 0, msgs = 0, dups = 0;
    uint32_t s = seed ? seed : (uint32_t)first * 2654435761u + 1;
    int64_t t0 = ww_clock_mono_ms();
    for (int64_t i = 0; i < count;) {
        const sent_t *m;
        if (n_sent > 5 && (int)(lcg(&s) % 100) < dup_pct) {
            m = &sent[lcg(&s) % (uint32_t)n_sent];
            dups++;
        } else {
            int o = (int)(lcg(&s) % (uint32_t)(owners + missing));
            bool debit = lcg(&s) % 3 != 0;
            long amount = 1 + (long)(lcg(&s) % 1500);
            sent_t *w = &sent[n_sent++];
            owner_hex(o, w->key);
            snprintf(w->value, sizeof w->value,
                     "{\"type\":\"%s\",\"idempotencyKey\":\"%s-%lld\",\"ownerUserId\":\"%s\","
                     "\"amountPaise\":%ld}",
                     debit ? "wallet.debit" : "wallet.credit", run, (long long)(first + i),
                     w->key, amount);
            m = w;
            i++;
        }
        for (;;) {
            if (ww_bus_produce(bus, topic, m->key, strlen(m->key), m->value, strlen(m->value),
                               NULL, 0, NULL, &err))
                break;
            ww_clock_sleep_ms(50, NULL); /* local queue full (broker down): wait */
        }
        msgs++;
        if (rate > 0) {
            int64_t due = t0 + msgs * 1000 / rate;
            int64_t now = ww_clock_mono_ms();
            if (due > now) ww_clock_sleep_ms(due - now, NULL);
        }
    }
    ww_bus_destroy(bus, 300000); /* flushes: waits out a broker restart */
    free(sent);
    *n_msgs = msgs;
    *n_dups = dups;
    long ok = atomic_load(&d.ok), failed = atomic_load(&d.failed);
    if (ok != msgs || failed) {
        fprintf(stderr, "wwchaos: %lld produced, %ld acknowledged, %ld failed\n", (long long)msgs,
                ok, failed);
        return false;
    }
    return true;
}

static int cmd_produce(void) {
    const char *topic = opt("topic", NULL), *run = opt("run", NULL);
    if (!topic || !run) {
        fprintf(stderr, "wwchaos produce: --topic and --run are required\n");
        return 2;
    }
    int64_t msgs = 0, dups = 0;
    int64_t first = opt_i64("first", 0), count = opt_i64("count", 100);
    bool ok = produce_commands(brokers(), topic, run, first, count, (int)opt_i64("owners", 24),
                               (int)opt_i64("missing", 2), (int)opt_i64("dup-pct", 10),
                               (int)opt_i64("rate", 0), (uint32_t)opt_i64("seed", 0), &msgs, &dups);
    printf("produced %lld messages: keys %s-%lld..%lld, %lld re-sent verbatim\n", (long long)msgs,
           run, (long long)first, (long long)(first + count - 1), (long long)dups);
    return ok ? 0 : 1;
}

/* ---- count ---------------------------------------------------------------- */

static int cmd_count(void) {
    ww_db_t *db = open_db(mongodb_uri(), 1);
    if (!db) return 3;
    ww_error_t err;
    int64_t n = ledger_count(db, &err);
    ww_db_destroy(db);
    if (n < 0) return 3;
    printf("%lld\n", (long long)n);
    return 0;
}

/* ---- sample: the in-flight rule -------------------------------------------- */

/* Checks one wallet snapshot against the ledger read after it; returns the
 * number of violations. */
static int check_wallet_inflight(const wallet_t *w, int idx, int64_t initial, const ledger_t *l,
                                 const map_t *wallet_keys_unused, size_t *pending) {
    (void)wallet_keys_unused;
    int v = 0;
    int64_t sum = initial;
    map_t marked = {0};
    for (size_t k = 0; k < w->n_markers; k++) {
        const entry_t *m = &w->markers[k];
        if (map_get(&marked, m->key)) {
            violation("wallet %d (%s): two markers for key %s", idx, w->id, m->key);
            v++;
        }
        map_put(&marked, m->key, (void *)m);
        sum += effect(m);
        const entry_t *e = map_get(&l->by_key, m->key);
        if (!e) {
            (*pending)++;
        } else if (strcmp(e->id, m->id) == 0 &&
                   (strcmp(e->status, m->status) != 0 || e->amount != m->amount ||
                    strcmp(e->type, m->type) != 0 || e->balance_after != m->balance_after)) {
            violation("wallet %d: marker for %s differs from its ledger entry (%s %lld -> %s %lld)",
                      idx, m->key, m->status, (long long)m->balance_after, e->status,
                      (long long)e->balance_after);
            v++;
        }
    }
    for (size_t i = 0; i < l->by_key.cap; i++) {
        const entry_t *e = l->by_key.s[i].val;
        if (!l->by_key.s[i].key || strcmp(e->wallet, w->id) != 0) continue;
        if (map_get(&marked, e->key)) continue;
        sum += effect(e);
    }
    map_free(&marked, false);
    if (sum != w->balance) {
        violation("wallet %d (%s) version %lld: balance %lld != initial %lld + applied markers and "
                  "entries = %lld",
                  idx, w->id, (long long)w->version, (long long)w->balance, (long long)initial,
                  (long long)sum);
        v++;
    }
    return v;
}

static int cmd_sample(void) {
    int owners = (int)opt_i64("owners", 24);
    int64_t initial = opt_i64("initial", 5000);
    int rounds = (int)opt_i64("rounds", 6);
    ww_db_t *db = open_db(mongodb_uri(), 1);
    if (!db) {
        printf("sample skipped: database unavailable\n");
        return 3;
    }
    ww_error_t err;
    wallets_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    ledger_t l = {0};
    char *done = calloc((size_t)owners, 1);
    int checked = 0, negative = 0, unstable = 0;
    size_t pending = 0, max_markers = 0;
    int rc = 0;
    for (int r = 0; r < rounds && checked < owners; r++) {
        if (!read_wallets(db, a, &err) || !read_ledger(db, &l, &err) || !read_wallets(db, b, &err)) {
            printf("sample skipped: %s\n", err.message);
            rc = 3;
            goto out;
        }
        if (l.dup_keys) violation("ledger: %zu keys with more than one entry", l.dup_keys);
        for (int i = 0; i < owners; i++) {
            const wallet_t *w1 = &a->w[i], *w2 = &b->w[i];
            if (!w1->present || !w2->present) {
                if (r == 0) violation("wallet of owner %d missing", i);
                done[i] = 1;
                continue;
            }
            if (r == 0 && (w1->balance < 0 || w2->balance < 0)) {
                violation("wallet %d (%s): negative balance %lld", i, w1->id,
                          (long long)(w1->balance < 0 ? w1->balance : w2->balance));
                negative++;
            }
            if (w1->n_markers > max_markers) max_markers = w1->n_markers;
            if (done[i]) continue;
            if (w1->version != w2->version || w1->balance != w2->balance ||
                w1->n_markers != w2->n_markers)
                continue; /* moved while the ledger was read: try again */
            done[i] = 1;
            checked++;
            check_wallet_inflight(w1, i, initial, &l, NULL, &pending);
        }
    }
    unstable = owners - checked;
    for (int i = 0; i < owners; i++)
        if (!a->w[i].present) unstable--;
    if (g_violations) rc = 1;
    printf("sample %s: %d wallets checked (%d still moving, skipped), ledger %zu entries, "
           "%zu markers awaiting their ledger entry, max %zu markers/wallet, %d negative\n",
           rc ? "VIOLATION" : "ok", checked, unstable, l.n, pending, max_markers, negative);
out:
    map_free(&l.by_key, true);
    wallets_free(a);
    wallets_free(b);
    free(a);
    free(b);
    free(done);
    ww_db_destroy(db);
    return rc;
}

/* ---- lag ------------------------------------------------------------------ */

static int cmd_lag(void) {
    const char *group = opt("group", NULL), *topic = opt("topic", NULL);
    if (!group || !topic) {
        fprintf(stderr, "wwchaos lag: --group and --topic are required\n");
        return 2;
    }
    int64_t deadline = ww_clock_mono_ms() + opt_i64("wait-ms", 0);
    char detail[1024];
    int64_t lag;
    for (;;) {
        lag = group_lag(brokers(), group, topic, detail, sizeof detail);
        if (lag == 0 || ww_clock_mono_ms() >= deadline) break;
        ww_clock_sleep_ms(1000, NULL);
    }
    printf("lag %lld (partition:committed/end %s)\n", (long long)lag, detail);
    return lag == 0 ? 0 : 1;
}

/* ---- check: the final invariants ------------------------------------------- */

typedef struct {
    char owner[25];
    char type[8];
    int64_t amount;
    char value[320];
    int sends;     /* copies on the commands topic */
    int results;   /* result events seen */
} sent_cmd_t;

typedef struct {
    map_t by_key; /* key -> sent_cmd_t* */
    int64_t messages;
    int unparsable;
} commands_t;

static void on_command(const rd_kafka_message_t *m, void *ctx) {
    commands_t *c = ctx;
    c->messages++;
    /* payloads are not NUL-terminated: parse a copy */
    char *copy = strndup(m->payload ? (const char *)m->payload : "", m->len);
    json_object *o = json_tokener_parse(copy);
    json_object *k, *t, *ow, *a;
    if (!o || !json_object_object_get_ex(o, "idempotencyKey", &k) ||
        !json_object_object_get_ex(o, "type", &t) ||
        !json_object_object_get_ex(o, "ownerUserId", &ow) ||
        !json_object_object_get_ex(o, "amountPaise", &a)) {
        c->unparsable++;
        json_object_put(o);
        free(copy);
        return;
    }
    const char *key = json_object_get_string(k);
    sent_cmd_t *s = map_get(&c->by_key, key);
    if (s) {
        if (strcmp(s->value, copy) != 0) violation("key %s sent with two different payloads", key);
        s->sends++;
    } else {
        s = calloc(1, sizeof *s);
        snprintf(s->owner, sizeof s->owner, "%s", json_object_get_string(ow));
        snprintf(s->type, sizeof s->type, "%s",
                 strcmp(json_object_get_string(t), "wallet.debit") == 0 ? "debit" : "credit");
        s->amount = json_object_get_int64(a);
        snprintf(s->value, sizeof s->value, "%s", copy);
        s->sends = 1;
        map_put(&c->by_key, key, s);
    }
    json_object_put(o);
    free(copy);
}

typedef struct {
    commands_t *cmds;
    const ledger_t *ledger;
    int64_t messages;
    int64_t first_outcomes, duplicates, unknown;
} results_t;

static void on_result(const rd_kafka_message_t *m, void *ctx) {
    results_t *r = ctx;
    r->messages++;
    char *copy = strndup(m->payload ? (const char *)m->payload : "", m->len);
    json_object *o = json_tokener_parse(copy);
    json_object *k, *st, *orig, *tx, *bal;
    const char *key = o && json_object_object_get_ex(o, "idempotencyKey", &k) && k
                          ? json_object_get_string(k)
                          : NULL;
    sent_cmd_t *s = key ? map_get(&r->cmds->by_key, key) : NULL;
    if (!s) {
        r->unknown++;
        violation("result for an unknown key: %.200s", copy);
        goto done;
    }
    s->results++;
    const entry_t *e = map_get(&r->ledger->by_key, key);
    if (!e) goto done; /* reported by the ledger check */
    const char *status = json_object_object_get_ex(o, "status", &st) ? json_object_get_string(st) : "";
    if (strcmp(status, "duplicate") == 0) {
        r->duplicates++;
        const char *os = json_object_object_get_ex(o, "originalStatus", &orig) && orig
                             ? json_object_get_string(orig)
                             : "";
        if (strcmp(os, e->status) != 0)
            violation("key %s: duplicate result says originalStatus %s, the ledger says %s", key,
                      os, e->status);
    } else {
        r->first_outcomes++;
        if (strcmp(status, e->status) != 0)
            violation("key %s: result %s, the ledger says %s (offset %s[%d]@%lld)", key, status,
                      e->status, rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset);
    }
    if (json_object_object_get_ex(o, "transactionId", &tx) && tx &&
        strcmp(json_object_get_string(tx), e->id) != 0)
        violation("key %s: result transactionId %s, ledger _id %s", key, json_object_get_string(tx),
                  e->id);
    if (json_object_object_get_ex(o, "balanceAfterPaise", &bal) && bal && e->has_balance &&
        json_object_get_int64(bal) != e->balance_after)
        violation("key %s: result balanceAfterPaise %lld, ledger %lld", key,
                  (long long)json_object_get_int64(bal), (long long)e->balance_after);
done:
    json_object_put(o);
    free(copy);
}

/* The final invariants over one database and one pair of topics. */
static int final_check(ww_db_t *db, const char *bootstrap, const char *topic,
                       const char *results_topic, int owners, int64_t initial) {
    ww_error_t err;
    int before = g_violations;
    commands_t cmds = {0};
    int64_t n = read_topic(bootstrap, topic, on_command, &cmds, 120000);
    if (n < 0) {
        violation("could not read the commands topic %s", topic);
        return 1;
    }
    printf("  commands topic: %lld messages, %zu distinct keys (%lld re-sent), %d unparsable\n",
           (long long)cmds.messages, cmds.by_key.n, (long long)(cmds.messages - (int64_t)cmds.by_key.n),
           cmds.unparsable);

    /* ledger: one entry per key, matching its command; nothing else */
    ledger_t l = {0};
    if (!read_ledger(db, &l, &err)) {
        violation("ledger unreadable: %s", err.message);
        return 1;
    }
    wallets_t *ws = calloc(1, sizeof *ws);
    if (!read_wallets(db, ws, &err)) {
        violation("wallets unreadable: %s", err.message);
        free(ws);
        return 1;
    }
    size_t applied = 0, insufficient = 0, not_found = 0, other = 0;
    int64_t delta[MAX_OWNERS] = {0};
    if (l.dup_keys) violation("ledger: %zu extra entries for keys already recorded", l.dup_keys);
    for (size_t i = 0; i < cmds.by_key.cap; i++) {
        if (!cmds.by_key.s[i].key) continue;
        const char *key = cmds.by_key.s[i].key;
        const sent_cmd_t *s = cmds.by_key.s[i].val;
        const entry_t *e = map_get(&l.by_key, key);
        if (!e) {
            violation("key %s (%s %lld for %s): no ledger entry", key, s->type, (long long)s->amount,
                      s->owner);
            continue;
        }
        if (e->count != 1) violation("key %s: %d ledger entries", key, e->count);
        if (strcmp(e->type, s->type) != 0 || e->amount != s->amount || strcmp(e->owner, s->owner) != 0)
            violation("key %s: ledger entry %s %lld for %s, command %s %lld for %s", key, e->type,
                      (long long)e->amount, e->owner, s->type, (long long)s->amount, s->owner);
        int oi = owner_index(s->owner);
        bool has_wallet = oi >= 0 && oi < owners && ws->w[oi].present;
        if (strcmp(e->status, "applied") == 0) {
            applied++;
            if (oi >= 0 && oi < MAX_OWNERS) delta[oi] += effect(e);
        } else if (strcmp(e->status, "insufficient_funds") == 0) {
            insufficient++;
        } else if (strcmp(e->status, "wallet_not_found") == 0) {
            not_found++;
        } else {
            other++;
            violation("key %s: unexpected status %s", key, e->status);
        }
        if (has_wallet != (strcmp(e->status, "wallet_not_found") != 0))
            violation("key %s: status %s but the owner %s a wallet", key, e->status,
                      has_wallet ? "has" : "has no");
        if (has_wallet && strcmp(e->wallet, ws->w[oi].id) != 0)
            violation("key %s: ledger walletId %s, owner's wallet %s", key, e->wallet, ws->w[oi].id);
    }
    for (size_t i = 0; i < l.by_key.cap; i++)
        if (l.by_key.s[i].key && !map_get(&cmds.by_key, l.by_key.s[i].key))
            violation("ledger entry for key %s that was never sent", l.by_key.s[i].key);
    printf("  ledger: %zu entries for %zu keys: %zu applied, %zu insufficient_funds, %zu "
           "wallet_not_found, %zu other\n",
           l.n, cmds.by_key.n, applied, insufficient, not_found, other);

    /* balances: initial + applied effects; never negative; markers complete */
    size_t max_markers = 0, markers = 0;
    for (int i = 0; i < owners; i++) {
        const wallet_t *w = &ws->w[i];
        if (!w->present) {
            violation("wallet of owner %d missing", i);
            continue;
        }
        if (w->balance != initial + delta[i])
            violation("wallet %d (%s): balance %lld != initial %lld %+lld (applied entries)", i,
                      w->id, (long long)w->balance, (long long)initial, (long long)delta[i]);
        if (w->balance < 0) violation("wallet %d (%s): negative balance %lld", i, w->id,
                                      (long long)w->balance);
        markers += w->n_markers;
        if (w->n_markers > max_markers) max_markers = w->n_markers;
        for (size_t k = 0; k < w->n_markers; k++) {
            const entry_t *e = map_get(&l.by_key, w->markers[k].key);
            if (!e || strcmp(e->id, w->markers[k].id) != 0)
                violation("wallet %d: marker for %s has no ledger entry with its _id", i,
                          w->markers[k].key);
        }
    }
    if (ws->extra) violation("%d wallets that were never seeded", ws->extra);
    printf("  balances: %d wallets = initial %lld - applied debits + applied credits; %zu markers "
           "left (max %zu per wallet), all complete\n",
           owners, (long long)initial, markers, max_markers);

    /* results: every key answered, every answer consistent with the ledger */
    results_t r = {.cmds = &cmds, .ledger = &l};
    if (read_topic(bootstrap, results_topic, on_result, &r, 120000) < 0)
        violation("could not read the results topic %s", results_topic);
    size_t unanswered = 0;
    for (size_t i = 0; i < cmds.by_key.cap; i++) {
        const sent_cmd_t *s = cmds.by_key.s[i].val;
        if (cmds.by_key.s[i].key && s->results == 0) {
            unanswered++;
            violation("key %s: no result event", cmds.by_key.s[i].key);
        }
    }
    printf("  results: %lld events (%lld first outcomes, %lld duplicate), %zu keys unanswered; "
           "every outcome equals the ledger's\n",
           (long long)r.messages, (long long)r.first_outcomes, (long long)r.duplicates, unanswered);
    map_free(&cmds.by_key, true);
    map_free(&l.by_key, true);
    wallets_free(ws);
    free(ws);
    return g_violations > before ? 1 : 0;
}

static int cmd_check(void) {
    const char *topic = opt("topic", NULL), *results = opt("results", NULL);
    if (!topic || !results) {
        fprintf(stderr, "wwchaos check: --topic and --results are required\n");
        return 2;
    }
    ww_db_t *db = open_db(mongodb_uri(), 20);
    if (!db) return 3;
    int rc = final_check(db, brokers(), topic, results, (int)opt_i64("owners", 24),
                         opt_i64("initial", 5000));
    ww_db_destroy(db);
    printf("check %s (%d violations)\n", rc ? "FAILED" : "ok", g_violations);
    return rc;
}

/* ---- digest ---------------------------------------------------------------- */

typedef struct {
    ww_sha256_t h;
    int64_t n;
} digest_t;

static bool digest_doc(const bson_t *doc, void *ctx) {
    digest_t *d = ctx;
    ww_sha256_update(&d->h, bson_get_data(doc), doc->len);
    d->n++;
    return true;
}

static int cmd_digest(void) {
    ww_db_t *db = open_db(mongodb_uri(), 20);
    if (!db) return 3;
    ww_error_t err;
    digest_t w = {0}, l = {0};
    ww_sha256_init(&w.h);
    ww_sha256_init(&l.h);
    bson_t all = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    bool ok = ww_db_find(db, WW_WALLETS, &all, &opts, digest_doc, &w, &err) &&
              ww_db_find(db, WW_TRANSACTIONS, &all, &opts, digest_doc, &l, &err);
    bson_destroy(&all);
    bson_destroy(&opts);
    ww_db_destroy(db);
    if (!ok) {
        fprintf(stderr, "wwchaos digest: %s\n", err.message);
        return 3;
    }
    uint8_t a[32], b[32];
    ww_sha256_final(&w.h, a);
    ww_sha256_final(&l.h, b);
    ww_sha256_t all_h;
    ww_sha256_init(&all_h);
    ww_sha256_update(&all_h, a, 32);
    ww_sha256_update(&all_h, b, 32);
    uint8_t c[32];
    ww_sha256_final(&all_h, c);
    printf("digest ");
    for (int i = 0; i < 32; i++) printf("%02x", c[i]);
    printf(" wallets=%lld ledger=%lld\n", (long long)w.n, (long long)l.n);
    return 0;
}

/* ---- mock: the worker against librdkafka's mock cluster ---------------------- */

static pid_t spawn_worker(const char *bin, const char *bootstrap, const char *uri,
                          const char *group, const char *log_path) {
    static char e[12][700];
    snprintf(e[0], sizeof e[0], "KAFKA_BROKERS=%s", bootstrap);
    snprintf(e[1], sizeof e[1], "MONGODB_URI=%s", uri);
    snprintf(e[2], sizeof e[2], "KAFKA_GROUP_ID=%s", group);
    snprintf(e[3], sizeof e[3], "WALLET_COMMANDS_TOPIC=mock.commands");
    snprintf(e[4], sizeof e[4], "WALLET_RESULTS_TOPIC=mock.results");
    snprintf(e[5], sizeof e[5], "WALLET_DLQ_TOPIC=mock.dlq");
    snprintf(e[6], sizeof e[6], "INVITE_EVENTS_TOPIC=mock.invites");
    snprintf(e[7], sizeof e[7], "INVITE_RESULTS_TOPIC=mock.invite-results");
    snprintf(e[8], sizeof e[8], "INVITE_DLQ_TOPIC=mock.invite-dlq");
    snprintf(e[9], sizeof e[9], "HTTP_ADDR=127.0.0.1:0");
    snprintf(e[10], sizeof e[10], "PATH=/usr/bin:/bin");
    snprintf(e[11], sizeof e[11], "INVITE_SWEEP_INTERVAL_MS=0");
    char *envp[16];
    for (int i = 0; i < 12; i++) envp[i] = e[i];
    envp[12] = "LOG_LEVEL=info";
    envp[13] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (in >= 0) dup2(in, 0);
        char *argv[] = {(char *)bin, NULL};
        execve(bin, argv, envp);
        _exit(127);
    }
    return pid;
}

static int stop_worker(pid_t pid, int sig, int timeout_ms) {
    if (pid <= 0) return -1;
    kill(pid, sig);
    int64_t deadline = ww_clock_mono_ms() + timeout_ms;
    int st;
    while (ww_clock_mono_ms() < deadline) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ww_clock_sleep_ms(20, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static bool wait_ledger(ww_db_t *db, int64_t want, int timeout_ms, int64_t *have) {
    ww_error_t err;
    int64_t deadline = ww_clock_mono_ms() + timeout_ms;
    for (;;) {
        *have = ledger_count(db, &err);
        if (*have >= want) return true;
        if (ww_clock_mono_ms() >= deadline) return false;
        ww_clock_sleep_ms(100, NULL);
    }
}

static int count_in_file(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static volatile pid_t g_mock_worker;

static void on_term(int sig) {
    if (g_mock_worker > 0) kill(g_mock_worker, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ApiKeys (rdkafka_protocol.h is not installed). */
#define API_PRODUCE 0
#define API_OFFSET_COMMIT 8

static int cmd_mock(void) {
    const char *bin = opt("worker", NULL), *log_path = opt("log", "/tmp/wwchaos-mock.log");
    if (!bin) {
        fprintf(stderr, "wwchaos mock: --worker is required\n");
        return 2;
    }
    int owners = (int)opt_i64("owners", 12);
    int64_t initial = opt_i64("initial", 5000), count = opt_i64("count", 300);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int rc = 1;
    pid_t pid = -1;
    rd_kafka_t *holder = new_rk(RD_KAFKA_PRODUCER, "", NULL);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(holder, 1);
    if (!mc) {
        fprintf(stderr, "wwchaos mock: cannot create the mock cluster\n");
        rd_kafka_destroy(holder);
        return 1;
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    const char *topics[] = {"mock.commands", "mock.results", "mock.dlq",
                            "mock.invites", "mock.invite-results", "mock.invite-dlq"};
    int parts[] = {4, 4, 1, 1, 1, 1};
    for (int i = 0; i < 6; i++) rd_kafka_mock_topic_create(mc, topics[i], parts[i], 1);

    ww_db_t *db = open_db(mongodb_uri(), 20);
    ww_error_t err;
    if (!db) goto out;
    ww_db_drop_database(db, &err);
    if (!seed_wallets(db, owners, initial)) goto out;
    int64_t msgs = 0, dups = 0;
    if (!produce_commands(bootstrap, "mock.commands", "mock", 0, count, owners, 1, 10, 0, 4242,
                          &msgs, &dups))
        goto out;
    printf("  mock cluster %s (librdkafka %s): %lld commands produced (%lld re-sent)\n", bootstrap,
           rd_kafka_version_str(), (long long)msgs, (long long)dups);

    /* Round 1: Produce and OffsetCommit requests fail (retriable errors), and
     * the worker is SIGKILLed mid-run. */
    rd_kafka_resp_err_t produce_errs[] = {
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,     RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT};
    rd_kafka_resp_err_t commit_errs[] = {
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,         RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT};
    size_t np = sizeof produce_errs / sizeof produce_errs[0];
    size_t nc = sizeof commit_errs / sizeof commit_errs[0];
    rd_kafka_mock_push_request_errors_array(mc, API_PRODUCE, np, produce_errs);
    rd_kafka_mock_push_request_errors_array(mc, API_OFFSET_COMMIT, nc, commit_errs);
    int injected_produce = (int)np, injected_commit = (int)nc;

    unlink(log_path);
    pid = g_mock_worker = spawn_worker(bin, bootstrap, mongodb_uri(), "mock-group", log_path);
    int64_t have = 0;
    if (!wait_ledger(db, count / 3, 60000, &have)) {
        violation("mock: worker made no progress (ledger %lld)", (long long)have);
        goto out;
    }
    int st = stop_worker(pid, SIGKILL, 5000);
    pid = g_mock_worker = -1;
    printf("  round 1: %zu Produce + %zu OffsetCommit errors pushed; worker SIGKILLed (status %d) "
           "at ledger %lld\n",
           np, nc, st, (long long)have);

    /* Round 2: more errors, a new worker, then the broker down for 3 s. */
    rd_kafka_mock_push_request_errors_array(mc, API_PRODUCE, np, produce_errs);
    rd_kafka_mock_push_request_errors_array(mc, API_OFFSET_COMMIT, nc, commit_errs);
    injected_produce += (int)np;
    injected_commit += (int)nc;
    pid = g_mock_worker = spawn_worker(bin, bootstrap, mongodb_uri(), "mock-group", log_path);
    wait_ledger(db, 2 * count / 3, 60000, &have);
    /* A stalled broker: every response held back 3 s. Not set_down/set_up:
     * librdkafka 2.0.2's set_up binds the listener again to the port the
     * kernel first picked, in the ephemeral range, and an outgoing
     * connection (even the worker's own reconnect, connected to itself) can
     * hold that port by then; the bind fails and the mock asserts (seen in
     * CI). The real broker's restart is chaos.sh's kafka-restart fault. */
    rd_kafka_mock_broker_set_rtt(mc, 1, 3000);
    ww_clock_sleep_ms(3000, NULL);
    rd_kafka_mock_broker_set_rtt(mc, 1, 0);
    printf("  round 2: %zu Produce + %zu OffsetCommit errors pushed, new worker; broker stalled 3 s "
           "at ledger %lld\n",
           np, nc, (long long)have);

    /* Drain: every key decided, every offset committed, then a clean stop. */
    commands_t cmds = {0};
    read_topic(bootstrap, "mock.commands", on_command, &cmds, 30000);
    int64_t distinct = (int64_t)cmds.by_key.n;
    map_free(&cmds.by_key, true);
    if (!wait_ledger(db, distinct, 120000, &have))
        violation("mock: ledger stuck at %lld of %lld keys", (long long)have, (long long)distinct);
    char detail[1024] = "";
    int64_t lag = -1, deadline = ww_clock_mono_ms() + 60000;
    while ((lag = group_lag(bootstrap, "mock-group", "mock.commands", detail, sizeof detail)) != 0 &&
           ww_clock_mono_ms() < deadline)
        ww_clock_sleep_ms(500, NULL);
    st = stop_worker(pid, SIGTERM, 20000);
    pid = g_mock_worker = -1;
    if (st != 0) violation("mock: worker exited %d on SIGTERM (log %s)", st, log_path);
    int64_t lag2 = group_lag(bootstrap, "mock-group", "mock.commands", detail, sizeof detail);
    printf("  drained: lag %lld before the stop, %lld after (%s); worker exit %d\n",
           (long long)lag, (long long)lag2, detail, st);
    if (lag2 != 0) violation("mock: committed offsets behind the end: %s", detail);
    printf("  worker log: %d lines about failed commits, %d about produce retries/errors, "
           "%d about brokers down\n",
           count_in_file(log_path, "ommit"), count_in_file(log_path, "roduce"),
           count_in_file(log_path, "brokers down"));
    (void)injected_produce;
    (void)injected_commit;
    rc = final_check(db, bootstrap, "mock.commands", "mock.results", owners, initial);
    if (g_violations) rc = 1;
out:
    if (pid > 0) stop_worker(pid, SIGKILL, 5000);
    g_mock_worker = -1;
    if (db) {
        ww_db_drop_database(db, &err);
        ww_db_destroy(db);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(holder);
    printf("mock %s (%d violations)\n", rc ? "FAILED" : "ok", g_violations);
    return rc;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *out) {
    fprintf(out,
            "wwchaos: seeding, producing and invariant checks for scripts/chaos.sh\n"
            "  topics NAME:PARTS...   seed   produce   count   sample   lag   check   digest   mock\n"
            "See the comment at the top of tests/chaos/wwchaos.c and docs/chaos.md.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            if (i + 1 >= argc || g_nopts >= 64) {
                fprintf(stderr, "wwchaos: %s needs a value\n", argv[i]);
                return 2;
            }
            g_opts[g_nopts].name = argv[i] + 2;
            g_opts[g_nopts++].value = argv[++i];
        } else if (g_npos < 64) {
            g_pos[g_npos++] = argv[i];
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    ww_log_set_level(opt("verbose", NULL) ? WW_LOG_INFO : WW_LOG_ERROR);
    ww_db_global_init();
    const char *c = argv[1];
    int rc;
    if (strcmp(c, "topics") == 0) rc = cmd_topics();
    else if (strcmp(c, "seed") == 0) rc = cmd_seed();
    else if (strcmp(c, "produce") == 0) rc = cmd_produce();
    else if (strcmp(c, "count") == 0) rc = cmd_count();
    else if (strcmp(c, "sample") == 0) rc = cmd_sample();
    else if (strcmp(c, "lag") == 0) rc = cmd_lag();
    else if (strcmp(c, "check") == 0) rc = cmd_check();
    else if (strcmp(c, "digest") == 0) rc = cmd_digest();
    else if (strcmp(c, "mock") == 0) rc = cmd_mock();
    else {
        usage(stderr);
        rc = 2;
    }
    ww_db_global_cleanup();
    return rc;
}
