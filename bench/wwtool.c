/* wwtool.c: a small operator and demo tool for wallet-worker's servers.
 *
 *   wwtool seed-wallet OWNER_HEX BALANCE   (re)create one owner's wallet
 *   wwtool produce TOPIC                   stdin lines -> Kafka messages
 *   wwtool results TOPIC --count N         read a results or dead-letter topic
 *   wwtool wallets OWNER_HEX...            balances and ledgers
 *
 * DESIGN: the tool talks to Kafka and MongoDB only through the worker's own
 * modules (bus.h, db.h; command.h to decide whether a line is a command), so
 * it sees the servers exactly as the worker does and needs no extra client
 * libraries. Every input line and every message it prints is bounded: a line
 * over WWTOOL_LINE_MAX is an error, printed values are truncated. */
#include <bson/bson.h>
#include <errno.h>
#include <json-c/json.h>
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
#include "log.h"
#include "wallet.h"

#define WWTOOL_LINE_MAX (64 * 1024 + 256) /* a command is at most 64 KiB, plus a key */
#define WWTOOL_KEY_MAX 1024               /* Kafka message key given on a line */
#define WWTOOL_COUNT_MAX 1000000
#define WWTOOL_SHOW_VALUE 72              /* bytes of a message value shown */
#define WWTOOL_SHOW_REASON 80             /* bytes of a dead-letter reason shown */
#define WWTOOL_LEDGER_DEFAULT 50

typedef struct {
    const char *brokers;
    const char *mongodb_uri;
    int64_t count;      /* results: messages to wait for (0: not given) */
    int64_t timeout_ms; /* results */
    const char *match;  /* results: substring of key or value */
    int64_t limit;      /* wallets: ledger entries per owner */
    bool verbose;       /* the libraries' warnings and info lines too */
    const char *pos[64];
    int npos;
} opts_t;

static void usage(FILE *out) {
    fprintf(out,
            "wwtool: operator/demo tool for wallet-worker's Kafka topics and MongoDB.\n\n"
            "Usage:\n"
            "  wwtool seed-wallet OWNER_HEX BALANCE_PAISE\n"
            "      Deletes the owner's wallets and ledger entries, then inserts a wallet\n"
            "      {ownerUserId, availablePaise: Int64, version: Int64 0}.\n"
            "  wwtool produce TOPIC\n"
            "      Produces one message per stdin line: KEY<TAB>VALUE, or VALUE alone (key =\n"
            "      ownerUserId when VALUE is a valid command, else none). Prints the count.\n"
            "  wwtool results TOPIC --count N [--timeout-ms T] [--match SUBSTRING]\n"
            "      Reads TOPIC from the beginning (fresh consumer group) and prints one line\n"
            "      per message whose key or value contains SUBSTRING, until N such messages\n"
            "      or T ms (default 30000). Result events and dead letters (ww.error.code\n"
            "      header) are summarised; anything else is shown raw.\n"
            "  wwtool wallets [--limit N] OWNER_HEX...\n"
            "      Each owner's wallet(s) and ledger entries, newest first (default 50).\n\n"
            "Options for every command:\n"
            "  --brokers LIST       Kafka bootstrap servers (env KAFKA_BROKERS, default "
            "127.0.0.1:9092)\n"
            "  --mongodb-uri URI    MongoDB URI (env MONGODB_URI, default "
            "mongodb://127.0.0.1:27017/wallet)\n"
            "  -v, --verbose        also show the Kafka/MongoDB libraries' warnings\n"
            "  -h, --help           this text\n\n"
            "Exit status: 0 ok, 1 failure (server unreachable, fewer results than --count),\n"
            "2 usage error.\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wwtool: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see wwtool --help)\n");
    va_end(ap);
    return 2;
}

/* Parses a whole decimal int64 in [min, max]; false on anything else. */
static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return false;
    *out = (int64_t)v;
    return true;
}

static bool is_owner_hex(const char *s) {
    return strlen(s) == WW_COMMAND_OWNER_LEN &&
           strspn(s, "0123456789abcdefABCDEF") == WW_COMMAND_OWNER_LEN;
}

/* ---- bounded text ------------------------------------------------------- */

typedef struct {
    char buf[1024];
    size_t len;
} text_t;

static void text_add(text_t *t, const char *s, size_t n) {
    size_t room = sizeof t->buf - 1 - t->len;
    if (n > room) n = room;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_str(text_t *t, const char *s) { text_add(t, s, strlen(s)); }

/* Appends bytes for a terminal: control bytes escaped, at most max input
 * bytes (cut on a UTF-8 boundary), "..." when cut. */
static void text_show(text_t *t, const void *v, size_t len, size_t max) {
    const unsigned char *p = v;
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && (p[n] & 0xC0) == 0x80) n--;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            text_str(t, esc);
        } else {
            text_add(t, (const char *)p + i, 1);
        }
    }
    if (n < len) text_str(t, "...");
}

static bool contains(const void *hay, size_t hay_len, const char *needle) {
    size_t n = strlen(needle);
    if (n == 0) return true;
    if (!hay || hay_len < n) return false;
    const char *h = hay;
    for (size_t i = 0; i + n <= hay_len; i++)
        if (h[i] == needle[0] && memcmp(h + i, needle, n) == 0) return true;
    return false;
}

/* ---- connections -------------------------------------------------------- */

static ww_db_t *open_db(const opts_t *o) {
    ww_error_t err;
    ww_error_clear(&err);
    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    ww_db_t *db = ww_db_new(o->mongodb_uri, &dbo, &err);
    if (!db) {
        fprintf(stderr, "wwtool: MongoDB: %s\n", err.message);
        return NULL;
    }
    if (!ww_db_ping(db, &err)) {
        char red[512];
        ww_db_redact_uri(o->mongodb_uri, red, sizeof red);
        fprintf(stderr, "wwtool: MongoDB at %s not answering: %s\n", red, err.message);
        ww_db_destroy(db);
        return NULL;
    }
    return db;
}

typedef struct {
    atomic_long ok;
    atomic_long failed;
    char first_error[256];
    atomic_bool have_error;
} deliveries_t;

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    deliveries_t *d = ctx;
    (void)opaque;
    if (!error) {
        atomic_fetch_add(&d->ok, 1);
        return;
    }
    atomic_fetch_add(&d->failed, 1);
    bool expected = false;
    if (atomic_compare_exchange_strong(&d->have_error, &expected, true))
        snprintf(d->first_error, sizeof d->first_error, "%s", error->message);
}

static void rupees(char *out, size_t cap, int64_t paise) {
    const char *sign = paise < 0 ? "-" : "";
    int64_t a = paise < 0 ? -paise : paise;
    snprintf(out, cap, "%s\u20b9%lld.%02lld", sign, (long long)(a / 100), (long long)(a % 100));
}

/* ---- seed-wallet -------------------------------------------------------- */

static int cmd_seed_wallet(const opts_t *o) {
    if (o->npos != 3) return usage_error("%s", "seed-wallet needs OWNER_HEX BALANCE_PAISE");
    if (!is_owner_hex(o->pos[1]))
        return usage_error("OWNER_HEX must be 24 hex digits, got \"%.64s\"", o->pos[1]);
    int64_t balance;
    if (!parse_i64(o->pos[2], 0, WW_COMMAND_AMOUNT_MAX, &balance))
        return usage_error("BALANCE_PAISE must be an integer 0..2^53-1, got \"%.64s\"",
                           o->pos[2]);
    int rc = 1;
    ww_error_t err;
    ww_error_clear(&err);
    bson_t filter = BSON_INITIALIZER, doc = BSON_INITIALIZER;
    ww_db_t *db = open_db(o);
    if (!db) goto done;

    char owner_hex[WW_COMMAND_OWNER_LEN + 1];
    for (size_t i = 0; i < sizeof owner_hex; i++)
        owner_hex[i] = (char)((o->pos[1][i] >= 'A' && o->pos[1][i] <= 'F') ? o->pos[1][i] + 32
                                                                            : o->pos[1][i]);
    bson_oid_t owner, id;
    bson_oid_init_from_string(&owner, owner_hex);
    bson_oid_init(&id, NULL);
    BSON_APPEND_OID(&filter, "ownerUserId", &owner);
    int64_t old_wallets = 0, old_entries = 0;
    bool dup = false;
    if (!ww_db_delete_many(db, WW_TRANSACTIONS, &filter, &old_entries, &err) ||
        !ww_db_delete_many(db, WW_WALLETS, &filter, &old_wallets, &err)) {
        fprintf(stderr, "wwtool: cannot clear owner %s: %s\n", owner_hex, err.message);
        goto done;
    }
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "availablePaise", balance);
    BSON_APPEND_INT64(&doc, "version", 0);
    if (!ww_db_insert_one(db, WW_WALLETS, &doc, &dup, &err) || dup) {
        fprintf(stderr, "wwtool: cannot insert the wallet: %s\n",
                dup ? "duplicate _id" : err.message);
        goto done;
    }
    char id_hex[25];
    bson_oid_to_string(&id, id_hex);
    char r[48];
    rupees(r, sizeof r, balance);
    printf("seeded wallet %s for owner %s: %s (%lld paise)", id_hex, owner_hex, r,
           (long long)balance);
    if (old_wallets || old_entries)
        printf(", replaced %lld wallet(s) and %lld ledger entries", (long long)old_wallets,
               (long long)old_entries);
    printf("\n");
    rc = 0;
done:
    bson_destroy(&doc);
    bson_destroy(&filter);
    ww_db_destroy(db);
    return rc;
}

/* ---- produce ------------------------------------------------------------ */

static int cmd_produce(const opts_t *o) {
    if (o->npos != 2) return usage_error("%s", "produce needs TOPIC (lines come from stdin)");
    const char *topic = o->pos[1];
    int rc = 1;
    deliveries_t d = {0};
    ww_error_t err;
    ww_error_clear(&err);
    char *line = malloc(WWTOOL_LINE_MAX + 2);
    ww_command_t *cmd = malloc(sizeof *cmd);
    ww_bus_t *bus = NULL;
    long queued = 0, lineno = 0;
    if (!line || !cmd) {
        fprintf(stderr, "wwtool: out of memory\n");
        goto done;
    }
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = o->brokers;
    bc.client_id = "wwtool";
    bc.consumer = false;
    bc.producer = true;
    ww_bus_hooks_t hooks = {.ctx = &d, .on_delivery = on_delivery};
    bus = ww_bus_new(&bc, &hooks, &err);
    if (!bus) {
        fprintf(stderr, "wwtool: Kafka: %s\n", err.message);
        goto done;
    }
    while (fgets(line, WWTOOL_LINE_MAX + 2, stdin)) {
        lineno++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        else if (!feof(stdin)) {
            fprintf(stderr, "wwtool: stdin line %ld is longer than %d bytes\n", lineno,
                    WWTOOL_LINE_MAX);
            goto done;
        }
        if (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
        if (len == 0) continue;
        const char *key = NULL, *value = line;
        size_t key_len = 0, value_len = len;
        const char *tab = memchr(line, '\t', len);
        if (tab) {
            key = line;
            key_len = (size_t)(tab - line);
            value = tab + 1;
            value_len = len - key_len - 1;
            if (key_len > WWTOOL_KEY_MAX) {
                fprintf(stderr, "wwtool: stdin line %ld: key longer than %d bytes\n", lineno,
                        WWTOOL_KEY_MAX);
                goto done;
            }
        } else if (ww_command_parse(value, value_len, NULL, cmd, NULL)) {
            key = cmd->owner_user_id;
            key_len = strlen(cmd->owner_user_id);
        }
        for (;;) {
            if (ww_bus_produce(bus, topic, key, key_len, value, value_len, NULL, 0, NULL, &err))
                break;
            if (!err.retryable) {
                fprintf(stderr, "wwtool: stdin line %ld: %s\n", lineno, err.message);
                goto done;
            }
            ww_clock_sleep_ms(50, NULL); /* local queue full: let it drain */
        }
        queued++;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "wwtool: reading stdin: %s\n", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    ww_bus_destroy(bus, 30000); /* flushes; every message gets its callback */
    bus = NULL;
    long ok = atomic_load(&d.ok), failed = atomic_load(&d.failed);
    if (queued > 0 || rc == 0) {
        printf("produced %ld message(s) to %s", ok, topic);
        if (failed || ok != queued) printf(" (%ld queued, %ld failed)", queued, failed);
        printf("\n");
    }
    if (failed) {
        fprintf(stderr, "wwtool: delivery failed: %s\n", d.first_error);
        rc = 1;
    } else if (rc == 0 && ok != queued) {
        fprintf(stderr, "wwtool: %ld message(s) not delivered within 30 s\n", queued - ok);
        rc = 1;
    }
    free(cmd);
    free(line);
    return rc;
}

/* ---- results ------------------------------------------------------------ */

static const char *jstr(json_object *o, const char *name) {
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static bool jint(json_object *o, const char *name, int64_t *out) {
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_int))
        return false;
    *out = json_object_get_int64(v);
    return true;
}

static void header_text(const ww_msg_t *m, const char *name, text_t *t, size_t max) {
    const void *v;
    size_t len;
    if (ww_msg_header(m, name, &v, &len)) text_show(t, v, len, max);
    else text_str(t, "?");
}

/* One dead letter: code, where it came from, why, and what it was. */
static void print_dead_letter(const ww_msg_t *m) {
    text_t code = {{0}, 0}, line = {{0}, 0};
    header_text(m, "ww.error.code", &code, 48);
    text_str(&line, "p");
    header_text(m, "ww.source.partition", &line, 12);
    text_str(&line, "@");
    header_text(m, "ww.source.offset", &line, 24);
    printf("%-16s %-9s ", code.buf, line.buf);
    line.len = 0;
    line.buf[0] = '\0';
    header_text(m, "ww.error.reason", &line, WWTOOL_SHOW_REASON);
    text_str(&line, "\n                 value: ");
    if (m->value) text_show(&line, m->value, m->value_len, WWTOOL_SHOW_VALUE);
    else text_str(&line, "(null)");
    printf("%s\n", line.buf);
}

/* One result event: status, key, signed amount, balance after, why. */
static bool print_result(const ww_msg_t *m, bool *printed_header) {
    if (!m->value) return false;
    json_tokener *tok = json_tokener_new_ex(16);
    if (!tok) return false;
    json_object *o = json_tokener_parse_ex(tok, m->value, (int)m->value_len);
    bool complete = json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    const char *status = o && complete && json_object_is_type(o, json_type_object)
                             ? jstr(o, "status") : NULL;
    if (!status) {
        json_object_put(o);
        return false;
    }
    if (jstr(o, "eventId") || jstr(o, "inviteStatus")) {
        /* an invite result: code, event type, the invite's state after */
        if (!*printed_header) {
            printf("%-10s %-40s %-16s %-8s  %s\n", "STATUS", "CODE", "EVENT", "INVITE", "NOTE");
            *printed_header = true;
        }
        const char *code = jstr(o, "code"), *type = jstr(o, "type");
        const char *istatus = jstr(o, "inviteStatus");
        json_object *e;
        const char *ecode = json_object_object_get_ex(o, "error", &e) ? jstr(e, "code") : NULL;
        text_t c = {{0}, 0}, t = {{0}, 0}, is = {{0}, 0}, st = {{0}, 0}, n = {{0}, 0};
        text_show(&st, status, strlen(status), 32);
        if (code) text_show(&c, code, strlen(code), 64);
        if (type) text_show(&t, type, strlen(type), 32);
        if (istatus) text_show(&is, istatus, strlen(istatus), 16);
        if (ecode) {
            text_str(&n, "error=");
            text_show(&n, ecode, strlen(ecode), 48);
        }
        printf("%-10s %-40s %-16s %-8s  %s\n", st.buf, c.buf, t.buf, istatus ? is.buf : "-", n.buf);
        json_object_put(o);
        return true;
    }
    if (!*printed_header) {
        printf("%-18s %-42s %9s %9s  %s\n", "STATUS", "IDEMPOTENCY KEY", "AMOUNT", "BALANCE",
               "NOTE");
        *printed_header = true;
    }
    const char *key = jstr(o, "idempotencyKey");
    const char *type = jstr(o, "type");
    char amount[32] = "-", balance[32] = "-";
    int64_t v;
    if (jint(o, "amountPaise", &v))
        snprintf(amount, sizeof amount, "%s%lld",
                 type && strcmp(type, "wallet.debit") == 0 ? "-"
                 : type && strcmp(type, "wallet.credit") == 0 ? "+" : "",
                 (long long)v);
    if (jint(o, "balanceAfterPaise", &v)) snprintf(balance, sizeof balance, "%lld", (long long)v);
    text_t note = {{0}, 0};
    const char *orig = jstr(o, "originalStatus");
    if (orig) {
        text_str(&note, "original=");
        text_show(&note, orig, strlen(orig), 32);
    }
    json_object *e;
    const char *code = json_object_object_get_ex(o, "error", &e) ? jstr(e, "code") : NULL;
    if (code) {
        if (note.len) text_str(&note, " ");
        text_str(&note, "error=");
        text_show(&note, code, strlen(code), 48);
    }
    text_t k = {{0}, 0};
    if (key && *key) text_show(&k, key, strlen(key), 128);
    else text_str(&k, "(no key)");
    text_t st = {{0}, 0};
    text_show(&st, status, strlen(status), 32);
    printf("%-18s %-42s %9s %9s  %s\n", st.buf, k.buf, amount, balance, note.buf);
    json_object_put(o);
    return true;
}

static void print_other(const ww_msg_t *m) {
    text_t t = {{0}, 0};
    char where[48];
    snprintf(where, sizeof where, "p%d@%lld", (int)m->partition, (long long)m->offset);
    text_str(&t, "key=");
    if (m->key) text_show(&t, m->key, m->key_len, 48);
    else text_str(&t, "(none)");
    text_str(&t, " value=");
    if (m->value) text_show(&t, m->value, m->value_len, WWTOOL_SHOW_VALUE);
    else text_str(&t, "(null)");
    printf("%-9s %s\n", where, t.buf);
}

static int cmd_results(const opts_t *o) {
    if (o->npos != 2) return usage_error("%s", "results needs TOPIC");
    if (o->count <= 0) return usage_error("%s", "results needs --count N (N >= 1)");
    const char *topic = o->pos[1];
    ww_error_t err;
    ww_error_clear(&err);
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = o->brokers;
    bc.client_id = "wwtool";
    char group[96];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(group, sizeof group, "wwtool-%ld-%ld-%ld", (long)getpid(), (long)ts.tv_sec,
             (long)(ts.tv_nsec / 1000));
    bc.group_id = group;
    bc.consumer = true;
    bc.producer = false;
    ww_bus_t *bus = ww_bus_new(&bc, NULL, &err);
    if (!bus) {
        fprintf(stderr, "wwtool: Kafka: %s\n", err.message);
        return 1;
    }
    const char *topics[] = {topic};
    if (!ww_bus_subscribe(bus, topics, 1, &err)) {
        fprintf(stderr, "wwtool: %s\n", err.message);
        ww_bus_destroy(bus, 0);
        return 1;
    }
    int64_t seen = 0, shown = 0;
    bool header = false;
    int64_t deadline = ww_clock_mono_ms() + o->timeout_ms;
    while (shown < o->count && ww_clock_mono_ms() < deadline) {
        ww_msg_t *m = ww_bus_poll(bus, 200);
        if (!m) continue;
        seen++;
        if (o->match && !contains(m->key, m->key_len, o->match) &&
            !contains(m->value, m->value_len, o->match)) {
            ww_msg_destroy(m);
            continue;
        }
        const void *v;
        size_t len;
        if (ww_msg_header(m, "ww.error.code", &v, &len)) print_dead_letter(m);
        else if (!print_result(m, &header)) print_other(m);
        fflush(stdout);
        shown++;
        ww_msg_destroy(m);
    }
    ww_bus_destroy(bus, 0);
    if (shown < o->count) {
        fprintf(stderr, "wwtool: %lld of %lld message(s) after %lld ms (%lld read from %s)\n",
                (long long)shown, (long long)o->count, (long long)o->timeout_ms,
                (long long)seen, topic);
        return 1;
    }
    return 0;
}

/* ---- wallets ------------------------------------------------------------ */

static int64_t doc_i64(const bson_t *doc, const char *name, bool *ok) {
    bson_iter_t it;
    *ok = bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_NUMBER(&it);
    return *ok ? bson_iter_as_int64(&it) : 0;
}

static void doc_utf8(const bson_t *doc, const char *name, text_t *t, size_t max) {
    bson_iter_t it;
    uint32_t len = 0;
    if (bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_UTF8(&it)) {
        const char *s = bson_iter_utf8(&it, &len);
        text_show(t, s, len, max);
    } else {
        text_str(t, "-");
    }
}


typedef struct {
    int n;
} count_t;

static bool print_wallet(const bson_t *doc, void *ctx) {
    count_t *c = ctx;
    c->n++;
    bson_iter_t it;
    char id[25] = "?";
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
        bson_oid_to_string(bson_iter_oid(&it), id);
    bool has_bal, has_ver;
    int64_t bal = doc_i64(doc, "availablePaise", &has_bal);
    int64_t ver = doc_i64(doc, "version", &has_ver);
    bool deleted = bson_iter_init_find(&it, doc, "deletedAt") && !BSON_ITER_HOLDS_NULL(&it);
    char r[48] = "?";
    if (has_bal) rupees(r, sizeof r, bal);
    printf("  wallet %s  balance %s (%lld paise)  version %lld%s\n", id, r, (long long)bal,
           (long long)ver, deleted ? "  [deleted]" : "");
    return true;
}

static bool print_entry(const bson_t *doc, void *ctx) {
    count_t *c = ctx;
    if (c->n++ == 0)
        printf("    %-42s %-6s %-18s %9s %9s\n", "IDEMPOTENCY KEY", "TYPE", "STATUS", "AMOUNT",
               "BALANCE");
    text_t key = {{0}, 0}, type = {{0}, 0}, status = {{0}, 0};
    doc_utf8(doc, "idempotencyKey", &key, 128);
    doc_utf8(doc, "type", &type, 16);
    doc_utf8(doc, "status", &status, 32);
    bool ok;
    char amount[32] = "-", balance[32] = "-";
    int64_t v = doc_i64(doc, "amountPaise", &ok);
    if (ok) snprintf(amount, sizeof amount, "%lld", (long long)v);
    v = doc_i64(doc, "balanceAfterPaise", &ok);
    if (ok) snprintf(balance, sizeof balance, "%lld", (long long)v);
    printf("    %-42s %-6s %-18s %9s %9s\n", key.buf, type.buf, status.buf, amount, balance);
    return true;
}

static int cmd_wallets(const opts_t *o) {
    if (o->npos < 2) return usage_error("%s", "wallets needs at least one OWNER_HEX");
    for (int i = 1; i < o->npos; i++)
        if (!is_owner_hex(o->pos[i]))
            return usage_error("OWNER_HEX must be 24 hex digits, got \"%.64s\"", o->pos[i]);
    ww_db_t *db = open_db(o);
    if (!db) return 1;
    int rc = 0;
    for (int i = 1; i < o->npos && rc == 0; i++) {
        char hex[WW_COMMAND_OWNER_LEN + 1];
        for (size_t k = 0; k < sizeof hex; k++)
            hex[k] = (char)((o->pos[i][k] >= 'A' && o->pos[i][k] <= 'F') ? o->pos[i][k] + 32
                                                                          : o->pos[i][k]);
        bson_oid_t owner;
        bson_oid_init_from_string(&owner, hex);
        bson_t filter = BSON_INITIALIZER, wopts = BSON_INITIALIZER, topts = BSON_INITIALIZER, s;
        BSON_APPEND_OID(&filter, "ownerUserId", &owner);
        BSON_APPEND_DOCUMENT_BEGIN(&wopts, "sort", &s);
        BSON_APPEND_INT32(&s, "_id", 1);
        bson_append_document_end(&wopts, &s);
        BSON_APPEND_DOCUMENT_BEGIN(&topts, "sort", &s);
        BSON_APPEND_INT32(&s, "createdAt", -1);
        BSON_APPEND_INT32(&s, "_id", -1);
        bson_append_document_end(&topts, &s);
        BSON_APPEND_INT64(&topts, "limit", o->limit);
        ww_error_t err;
        ww_error_clear(&err);
        count_t wallets = {0}, entries = {0};
        printf("owner %s\n", hex);
        bool ok = ww_db_find(db, WW_WALLETS, &filter, &wopts, print_wallet, &wallets, &err);
        if (ok && wallets.n == 0) printf("  no wallet\n");
        ok = ok && ww_db_find(db, WW_TRANSACTIONS, &filter, &topts, print_entry, &entries, &err);
        if (ok && entries.n == 0) printf("    (no ledger entries)\n");
        if (!ok) {
            fprintf(stderr, "wwtool: owner %s: %s\n", hex, err.message);
            rc = 1;
        }
        bson_destroy(&topts);
        bson_destroy(&wopts);
        bson_destroy(&filter);
    }
    ww_db_destroy(db);
    return rc;
}

/* ---- main --------------------------------------------------------------- */

/* --name value or --name=value; *value NULL when this is not that option. */
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
        *rc = usage_error("option %s needs a value", name);
        return true;
    }
    *value = argv[++*i];
    return true;
}

static int parse_args(int argc, char **argv, opts_t *o) {
    const char *count = NULL, *timeout = NULL, *limit = NULL;
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return -1;
        if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            o->verbose = true;
            continue;
        }
        if (take_opt(argc, argv, &i, "--brokers", &o->brokers, &rc) ||
            take_opt(argc, argv, &i, "--mongodb-uri", &o->mongodb_uri, &rc) ||
            take_opt(argc, argv, &i, "--count", &count, &rc) ||
            take_opt(argc, argv, &i, "--timeout-ms", &timeout, &rc) ||
            take_opt(argc, argv, &i, "--match", &o->match, &rc) ||
            take_opt(argc, argv, &i, "--limit", &limit, &rc)) {
            if (rc) return rc;
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') return usage_error("unknown option \"%.64s\"", a);
        if (o->npos >= (int)(sizeof o->pos / sizeof o->pos[0]))
            return usage_error("%s", "too many arguments");
        o->pos[o->npos++] = a;
    }
    if (count && !parse_i64(count, 1, WWTOOL_COUNT_MAX, &o->count))
        return usage_error("--count must be an integer 1..1000000, got \"%.64s\"", count);
    if (timeout && !parse_i64(timeout, 0, INT32_MAX, &o->timeout_ms))
        return usage_error("--timeout-ms must be an integer 0..2147483647, got \"%.64s\"",
                           timeout);
    if (limit && !parse_i64(limit, 1, 100000, &o->limit))
        return usage_error("--limit must be an integer 1..100000, got \"%.64s\"", limit);
    if (o->npos == 0) return usage_error("%s", "missing command");
    const char *cmd = o->pos[0];
    bool is_results = strcmp(cmd, "results") == 0;
    if (!is_results && (count || timeout || o->match))
        return usage_error("--count, --timeout-ms and --match belong to results, not %.64s",
                           cmd);
    if (limit && strcmp(cmd, "wallets") != 0)
        return usage_error("--limit belongs to wallets, not %.64s", cmd);
    if (!o->brokers || !*o->brokers) return usage_error("%s", "empty --brokers");
    if (!o->mongodb_uri || !*o->mongodb_uri) return usage_error("%s", "empty --mongodb-uri");
    return 0;
}

int main(int argc, char **argv) {
    opts_t o;
    memset(&o, 0, sizeof o);
    o.brokers = getenv("KAFKA_BROKERS");
    o.mongodb_uri = getenv("MONGODB_URI");
    if (!o.brokers || !*o.brokers) o.brokers = "127.0.0.1:9092";
    if (!o.mongodb_uri || !*o.mongodb_uri) o.mongodb_uri = "mongodb://127.0.0.1:27017/wallet";
    o.timeout_ms = 30000;
    o.limit = WWTOOL_LEDGER_DEFAULT;
    int prc = parse_args(argc, argv, &o);
    if (prc < 0) {
        usage(stdout);
        return 0;
    }
    if (prc > 0) return prc;

    /* Errors only unless asked: a tool's output is its answer, not a log (and
     * e.g. FerretDB makes libmongoc warn about endSessions on every close). */
    ww_log_set_level(o.verbose ? WW_LOG_INFO : WW_LOG_ERROR);
    const char *cmd = o.pos[0];
    int rc;
    if (strcmp(cmd, "produce") == 0) {
        rc = cmd_produce(&o);
    } else if (strcmp(cmd, "results") == 0) {
        rc = cmd_results(&o);
    } else if (strcmp(cmd, "seed-wallet") == 0 || strcmp(cmd, "wallets") == 0) {
        ww_db_global_init();
        if (!ww_db_check_uri(o.mongodb_uri, NULL)) {
            ww_db_global_cleanup();
            return usage_error("%s", "--mongodb-uri / MONGODB_URI is not a valid MongoDB URI");
        }
        rc = cmd[0] == 's' ? cmd_seed_wallet(&o) : cmd_wallets(&o);
        ww_db_global_cleanup();
    } else {
        rc = usage_error("unknown command \"%.64s\"", cmd);
    }
    return rc;
}
