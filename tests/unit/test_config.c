/* test_config.c: the settings table: defaults, environment and flag
 * overrides and their precedence, every rejection naming its setting, the
 * check that docs/configuration.md documents every setting (how MONGODB_URI
 * is shown is test_db.c's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"


#define assert_contains(text, needle)                                                  \
    do {                                                                               \
        if (!strstr((text), (needle)))                                                 \
            fail_msg("\"%s\" does not mention \"%s\"", (text), (needle));              \
    } while (0)

/* Every test starts and ends with none of the settings in the environment. */
static void clear_env(void) {
    for (size_t i = 0; i < ww_config_setting_count(); i++) unsetenv(ww_config_setting_env(i));
}

static int setup(void **state) {
    (void)state;
    clear_env();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    clear_env();
    return 0;
}

/* Runs from_args over a NULL-terminated argument list (argv[0] included). */
static bool parse_args(ww_config_t *cfg, const char *const *args, int *index, ww_error_t *err) {
    char *argv[32];
    int argc = 0;
    while (args[argc] && argc < 31) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    *index = 1;
    return ww_config_from_args(cfg, argc, argv, index, err);
}

/* ---- defaults ------------------------------------------------------------------- */

static void test_config_defaults_are_valid_and_as_documented(void **state) {
    (void)state;
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    assert_true(ww_config_validate(&cfg, &err));
    assert_string_equal(cfg.kafka_brokers, "127.0.0.1:9092");
    assert_string_equal(cfg.kafka_group_id, "wallet-worker");
    assert_string_equal(cfg.mongodb_uri, "mongodb://127.0.0.1:27017/wallet");
    assert_string_equal(cfg.http_addr, "127.0.0.1:8080");
    assert_int_equal(cfg.log_level, WW_LOG_INFO);
    assert_string_equal(cfg.commands_topic, "wallet.commands");
    assert_string_equal(cfg.results_topic, "wallet.results");
    assert_string_equal(cfg.dlq_topic, "wallet.commands.dlq");
    assert_int_equal(cfg.worker_threads, 8);
    assert_int_equal(cfg.max_message_bytes, 65536);
    assert_int_equal(cfg.liveness_threshold_ms, 30000);
    assert_int_equal(cfg.db_pool_max, 50);
    assert_int_equal(cfg.shutdown_timeout_ms, 5000);
    assert_false(cfg.db_transactions); /* opt-in: the transactional mode is not tested here */
}

static void test_config_empty_environment_changes_nothing(void **state) {
    (void)state;
    ww_config_t a, b;
    ww_error_t err;
    ww_config_defaults(&a);
    ww_config_defaults(&b);
    assert_true(ww_config_from_env(&b, &err));
    assert_memory_equal(&a, &b, sizeof a);
    int index;
    const char *args[] = {"wallet-worker", NULL};
    assert_true(parse_args(&b, args, &index, &err));
    assert_int_equal(index, 1);
    assert_memory_equal(&a, &b, sizeof a);
}

/* ---- overrides ------------------------------------------------------------------ */

static void test_config_environment_overrides_defaults(void **state) {
    (void)state;
    setenv("KAFKA_BROKERS", "k1:9092,k2:9092", 1);
    setenv("KAFKA_GROUP_ID", "g-env", 1);
    setenv("MONGODB_URI", "mongodb+srv://cluster.example.net/ledger", 1);
    setenv("HTTP_ADDR", ":9100", 1);
    setenv("LOG_LEVEL", "WARNING", 1);
    setenv("WALLET_COMMANDS_TOPIC", "c", 1);
    setenv("WALLET_RESULTS_TOPIC", "r", 1);
    setenv("WALLET_DLQ_TOPIC", "d", 1);
    setenv("WORKER_THREADS", "64", 1);
    setenv("MAX_MESSAGE_BYTES", "256", 1);
    setenv("LIVENESS_THRESHOLD_MS", "1000", 1);
    setenv("DB_POOL_MAX", "7", 1);
    setenv("SHUTDOWN_TIMEOUT_MS", "0", 1);
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    assert_true(ww_config_from_env(&cfg, &err));
    assert_true(ww_config_validate(&cfg, &err));
    assert_string_equal(cfg.kafka_brokers, "k1:9092,k2:9092");
    assert_string_equal(cfg.kafka_group_id, "g-env");
    assert_string_equal(cfg.mongodb_uri, "mongodb+srv://cluster.example.net/ledger");
    assert_string_equal(cfg.http_addr, ":9100");
    assert_int_equal(cfg.log_level, WW_LOG_WARN);
    assert_string_equal(cfg.commands_topic, "c");
    assert_string_equal(cfg.results_topic, "r");
    assert_string_equal(cfg.dlq_topic, "d");
    assert_int_equal(cfg.worker_threads, 64);
    assert_int_equal(cfg.max_message_bytes, 256);
    assert_int_equal(cfg.liveness_threshold_ms, 1000);
    assert_int_equal(cfg.db_pool_max, 7);
    assert_int_equal(cfg.shutdown_timeout_ms, 0);
}

static void test_config_flags_override_in_both_forms(void **state) {
    (void)state;
    const char *args[] = {"wallet-worker",
                          "--brokers", "b:1",
                          "--group-id=g-flag",
                          "--mongodb-uri", "mongodb://u:p@h:27017/x?maxPoolSize=3",
                          "--http-addr=[::1]:8081",
                          "--log-level", "debug",
                          "--commands-topic=in",
                          "--results-topic", "out",
                          "--dlq-topic=dead",
                          "--worker-threads", "1",
                          "--max-message-bytes=1048576",
                          "--liveness-threshold-ms", "3600000",
                          "--db-pool-max=1000",
                          "--shutdown-timeout-ms", "600000",
                          NULL};
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    int index;
    if (!parse_args(&cfg, args, &index, &err)) fail_msg("%s", err.message);
    int argc = 0;
    while (args[argc]) argc++;
    assert_int_equal(index, argc); /* every argument consumed */
    assert_true(ww_config_validate(&cfg, &err));
    assert_string_equal(cfg.kafka_brokers, "b:1");
    assert_string_equal(cfg.kafka_group_id, "g-flag");
    assert_string_equal(cfg.mongodb_uri, "mongodb://u:p@h:27017/x?maxPoolSize=3");
    assert_string_equal(cfg.http_addr, "[::1]:8081");
    assert_int_equal(cfg.log_level, WW_LOG_DEBUG);
    assert_string_equal(cfg.commands_topic, "in");
    assert_string_equal(cfg.results_topic, "out");
    assert_string_equal(cfg.dlq_topic, "dead");
    assert_int_equal(cfg.worker_threads, 1);
    assert_int_equal(cfg.max_message_bytes, 1048576);
    assert_int_equal(cfg.liveness_threshold_ms, 3600000);
    assert_int_equal(cfg.db_pool_max, 1000);
    assert_int_equal(cfg.shutdown_timeout_ms, 600000);
}

static void test_config_flags_win_over_environment(void **state) {
    (void)state;
    setenv("WORKER_THREADS", "3", 1);
    setenv("KAFKA_GROUP_ID", "from-env", 1);
    setenv("LOG_LEVEL", "error", 1);
    setenv("DB_POOL_MAX", "9", 1);
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    /* the order main() applies them: defaults, environment, flags */
    ww_config_defaults(&cfg);
    assert_true(ww_config_from_env(&cfg, &err));
    const char *args[] = {"wallet-worker", "--worker-threads", "5", "--group-id=from-flag",
                          NULL};
    int index;
    assert_true(parse_args(&cfg, args, &index, &err));
    assert_int_equal(cfg.worker_threads, 5);
    assert_string_equal(cfg.kafka_group_id, "from-flag");
    /* no flag: the environment stays */
    assert_int_equal(cfg.log_level, WW_LOG_ERROR);
    assert_int_equal(cfg.db_pool_max, 9);
    /* no flag, no environment: the default stays */
    assert_string_equal(cfg.kafka_brokers, "127.0.0.1:9092");
}

static void test_config_last_flag_wins(void **state) {
    (void)state;
    const char *args[] = {"wallet-worker", "--worker-threads=2", "--worker-threads", "4", NULL};
    ww_config_t cfg;
    ww_error_t err;
    ww_config_defaults(&cfg);
    int index;
    assert_true(parse_args(&cfg, args, &index, &err));
    assert_int_equal(cfg.worker_threads, 4);
}

static void test_config_log_levels_are_case_insensitive(void **state) {
    (void)state;
    const struct {
        const char *in;
        ww_log_level_t want;
    } cases[] = {{"debug", WW_LOG_DEBUG}, {"INFO", WW_LOG_INFO},   {"Warn", WW_LOG_WARN},
                 {"warning", WW_LOG_WARN}, {"error", WW_LOG_ERROR}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_config_t cfg;
        ww_error_t err;
        ww_config_defaults(&cfg);
        setenv("LOG_LEVEL", cases[i].in, 1);
        assert_true(ww_config_from_env(&cfg, &err));
        assert_int_equal(cfg.log_level, cases[i].want);
    }
}

/* DB_TRANSACTIONS is off unless asked for, by environment or flag, in any case. */
static void test_config_db_transactions_is_an_on_off_switch(void **state) {
    (void)state;
    const struct {
        const char *in;
        bool want;
    } cases[] = {{"on", true}, {"ON", true}, {"off", false}, {"Off", false},
                 {"true", true}, {"false", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_config_t cfg;
        ww_error_t err;
        ww_error_clear(&err);
        ww_config_defaults(&cfg);
        setenv("DB_TRANSACTIONS", cases[i].in, 1);
        if (!ww_config_from_env(&cfg, &err)) fail_msg("%s: %s", cases[i].in, err.message);
        assert_true(ww_config_validate(&cfg, &err));
        assert_int_equal(cfg.db_transactions, cases[i].want);
    }
    unsetenv("DB_TRANSACTIONS");
    /* the flag wins over the environment, in both forms */
    setenv("DB_TRANSACTIONS", "on", 1);
    ww_config_t cfg;
    ww_error_t err;
    ww_config_defaults(&cfg);
    assert_true(ww_config_from_env(&cfg, &err));
    assert_true(cfg.db_transactions);
    const char *args[] = {"wallet-worker", "--db-transactions=off", NULL};
    int index;
    assert_true(parse_args(&cfg, args, &index, &err));
    assert_false(cfg.db_transactions);
    const char *args2[] = {"wallet-worker", "--db-transactions", "on", NULL};
    assert_true(parse_args(&cfg, args2, &index, &err));
    assert_true(cfg.db_transactions);
    /* --help shows it with its default */
    FILE *f = tmpfile();
    assert_non_null(f);
    ww_config_print_help(f);
    long len = ftell(f);
    rewind(f);
    char *help = calloc(1, (size_t)len + 1);
    assert_non_null(help);
    assert_int_equal(fread(help, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    assert_contains(help, "--db-transactions");
    assert_contains(help, "env DB_TRANSACTIONS, default off");
    free(help);
}

/* ---- rejections ----------------------------------------------------------------- */

typedef enum { VIA_ENV, VIA_FLAG } via_t;

typedef struct {
    via_t via;
    const char *name;  /* env var or flag */
    const char *value;
    const char *names; /* what the message must name */
    const char *says;  /* and a word of why */
} bad_case_t;

/* Applies one bad value the way main() would (env or flag, then validate) and
 * checks it is refused with a message naming the setting. */
static void expect_rejected(const bad_case_t *c) {
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    clear_env();
    ww_config_defaults(&cfg);
    bool ok;
    if (c->via == VIA_ENV) {
        setenv(c->name, c->value, 1);
        ok = ww_config_from_env(&cfg, &err) && ww_config_validate(&cfg, &err);
        unsetenv(c->name);
    } else {
        const char *args[] = {"wallet-worker", c->name, c->value, NULL};
        int index;
        ok = parse_args(&cfg, args, &index, &err) && ww_config_validate(&cfg, &err);
    }
    if (ok) fail_msg("%s=\"%.60s\" was accepted", c->name, c->value);
    assert_int_equal(err.domain, WW_ERR_CONFIG);
    assert_false(err.retryable);
    assert_contains(err.message, c->names);
    if (c->says) assert_contains(err.message, c->says);
    /* one line: main() prints it as is */
    assert_null(strchr(err.message, '\n'));
}

static void test_config_invalid_values_are_refused_naming_the_setting(void **state) {
    (void)state;
    static char long_brokers[WW_CONFIG_STR_MAX + 1];
    memset(long_brokers, 'b', WW_CONFIG_STR_MAX);
    long_brokers[WW_CONFIG_STR_MAX] = '\0'; /* 1024 characters: one too many */
    static char long_group[257];
    memset(long_group, 'g', 256);
    long_group[256] = '\0';
    static char long_topic[251];
    memset(long_topic, 't', 250);
    long_topic[250] = '\0';
    const bad_case_t cases[] = {
        /* not an integer */
        {VIA_ENV, "WORKER_THREADS", "zero", "WORKER_THREADS", "not an integer"},
        {VIA_ENV, "WORKER_THREADS", "8x", "WORKER_THREADS", "not an integer"},
        {VIA_ENV, "WORKER_THREADS", "", "WORKER_THREADS", "not an integer"},
        {VIA_ENV, "WORKER_THREADS", "4.5", "WORKER_THREADS", "not an integer"},
        {VIA_ENV, "MAX_MESSAGE_BYTES", "99999999999999999999", "MAX_MESSAGE_BYTES",
         "not an integer"},
        {VIA_FLAG, "--db-pool-max", "lots", "--db-pool-max", "not an integer"},
        /* out of range, both ends of every integer */
        {VIA_ENV, "WORKER_THREADS", "0", "WORKER_THREADS", "outside 1..64"},
        {VIA_ENV, "WORKER_THREADS", "65", "WORKER_THREADS", "outside 1..64"},
        {VIA_ENV, "WORKER_THREADS", "-1", "WORKER_THREADS", "outside"},
        {VIA_ENV, "MAX_MESSAGE_BYTES", "255", "MAX_MESSAGE_BYTES", "outside 256..1048576"},
        {VIA_ENV, "MAX_MESSAGE_BYTES", "1048577", "MAX_MESSAGE_BYTES", "outside"},
        {VIA_ENV, "LIVENESS_THRESHOLD_MS", "999", "LIVENESS_THRESHOLD_MS", "outside"},
        {VIA_ENV, "LIVENESS_THRESHOLD_MS", "3600001", "LIVENESS_THRESHOLD_MS", "outside"},
        {VIA_ENV, "DB_POOL_MAX", "0", "DB_POOL_MAX", "outside 1..1000"},
        {VIA_ENV, "DB_POOL_MAX", "1001", "DB_POOL_MAX", "outside"},
        {VIA_ENV, "SHUTDOWN_TIMEOUT_MS", "-1", "SHUTDOWN_TIMEOUT_MS", "outside"},
        {VIA_ENV, "SHUTDOWN_TIMEOUT_MS", "600001", "SHUTDOWN_TIMEOUT_MS", "outside"},
        {VIA_FLAG, "--worker-threads", "100", "--worker-threads", "outside"},
        /* empty strings */
        {VIA_ENV, "KAFKA_BROKERS", "", "KAFKA_BROKERS", "empty"},
        {VIA_ENV, "KAFKA_GROUP_ID", "", "KAFKA_GROUP_ID", "empty"},
        {VIA_ENV, "MONGODB_URI", "", "MONGODB_URI", "empty"},
        {VIA_ENV, "HTTP_ADDR", "", "HTTP_ADDR", "empty"},
        {VIA_ENV, "WALLET_DLQ_TOPIC", "", "WALLET_DLQ_TOPIC", "empty"},
        {VIA_FLAG, "--commands-topic", "", "--commands-topic", "empty"},
        /* too long */
        {VIA_ENV, "KAFKA_BROKERS", long_brokers, "KAFKA_BROKERS", "longer than 1023"},
        {VIA_ENV, "KAFKA_GROUP_ID", long_group, "KAFKA_GROUP_ID", "longer than 255"},
        {VIA_ENV, "WALLET_RESULTS_TOPIC", long_topic, "WALLET_RESULTS_TOPIC", "longer than 249"},
        {VIA_FLAG, "--mongodb-uri", long_brokers, "--mongodb-uri", "longer than"},
        /* log level */
        {VIA_ENV, "LOG_LEVEL", "loud", "LOG_LEVEL", "debug, info, warn, error"},
        {VIA_ENV, "LOG_LEVEL", "off", "LOG_LEVEL", NULL}, /* the worker always logs errors */
        {VIA_ENV, "LOG_LEVEL", "", "LOG_LEVEL", NULL},
        {VIA_ENV, "LOG_FORMAT", "text", "LOG_FORMAT", "logfmt or json"},
        {VIA_ENV, "LOG_FORMAT", "", "LOG_FORMAT", "logfmt or json"},
        {VIA_FLAG, "--log-level", "trace", "--log-level", NULL},
        /* URI scheme */
        {VIA_ENV, "MONGODB_URI", "postgres://x", "MONGODB_URI", "mongodb://"},
        {VIA_ENV, "MONGODB_URI", "127.0.0.1:27017", "MONGODB_URI", NULL},
        {VIA_ENV, "MONGODB_URI", "MONGODB://h/db", "MONGODB_URI", NULL},
        {VIA_FLAG, "--mongodb-uri", "http://h", "MONGODB_URI", NULL},
        /* HTTP_ADDR: host:port with a port 0..65535 */
        {VIA_ENV, "HTTP_ADDR", "nonsense", "HTTP_ADDR", "host:port"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1", "HTTP_ADDR", "host:port"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1:", "HTTP_ADDR", "host:port"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1:http", "HTTP_ADDR", "port"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1:65536", "HTTP_ADDR", "0..65535"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1:-1", "HTTP_ADDR", "0..65535"},
        {VIA_ENV, "HTTP_ADDR", "127.0.0.1:80x", "HTTP_ADDR", "port"},
        {VIA_FLAG, "--http-addr", "8080", "HTTP_ADDR", NULL},
        /* the commands topic must differ from the output topics */
        {VIA_ENV, "WALLET_RESULTS_TOPIC", "wallet.commands", "WALLET_COMMANDS_TOPIC", NULL},
        {VIA_ENV, "WALLET_DLQ_TOPIC", "wallet.commands", "WALLET_COMMANDS_TOPIC", NULL},
        {VIA_ENV, "WALLET_COMMANDS_TOPIC", "wallet.results", "WALLET_COMMANDS_TOPIC", NULL},
        {VIA_FLAG, "--commands-topic", "wallet.commands.dlq", "WALLET_COMMANDS_TOPIC", NULL},
        /* DB_TRANSACTIONS: on or off */
        {VIA_ENV, "DB_TRANSACTIONS", "maybe", "DB_TRANSACTIONS", "on or off"},
        {VIA_ENV, "DB_TRANSACTIONS", "", "DB_TRANSACTIONS", "on or off"},
        {VIA_ENV, "DB_TRANSACTIONS", "onn", "DB_TRANSACTIONS", "on or off"},
        {VIA_FLAG, "--db-transactions", "2", "--db-transactions", "on or off"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_rejected(&cases[i]);
}

static void test_config_bounds_and_length_limits_are_inclusive(void **state) {
    (void)state;
    static char max_brokers[WW_CONFIG_STR_MAX];
    memset(max_brokers, 'b', WW_CONFIG_STR_MAX - 1);
    max_brokers[WW_CONFIG_STR_MAX - 1] = '\0'; /* 1023 characters: fits */
    const char *args[] = {"wallet-worker",   "--worker-threads=64", "--max-message-bytes=256",
                          "--liveness-threshold-ms=1000", "--db-pool-max=1",
                          "--shutdown-timeout-ms=0", "--http-addr=0.0.0.0:0",
                          "--brokers", max_brokers, NULL};
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    int index;
    if (!parse_args(&cfg, args, &index, &err)) fail_msg("%s", err.message);
    assert_true(ww_config_validate(&cfg, &err));
    assert_int_equal(cfg.worker_threads, 64);
    assert_int_equal(cfg.max_message_bytes, 256);
    assert_int_equal(cfg.liveness_threshold_ms, 1000);
    assert_int_equal(cfg.db_pool_max, 1);
    assert_int_equal(cfg.shutdown_timeout_ms, 0);
    assert_int_equal(strlen(cfg.kafka_brokers), WW_CONFIG_STR_MAX - 1);
}

static void test_config_a_rejected_value_names_the_first_bad_setting(void **state) {
    (void)state;
    /* environment is applied in table order; the first bad one is reported */
    setenv("MONGODB_URI", "", 1);
    setenv("WORKER_THREADS", "0", 1);
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    assert_false(ww_config_from_env(&cfg, &err));
    assert_contains(err.message, "MONGODB_URI");
}

static void test_config_flag_without_value_is_refused(void **state) {
    (void)state;
    const char *args[] = {"wallet-worker", "--brokers", "h:1", "--group-id", NULL};
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    int index;
    assert_false(parse_args(&cfg, args, &index, &err));
    assert_contains(err.message, "--group-id");
    assert_contains(err.message, "needs a value");
    /* `--flag=` is an explicit empty value, refused as such */
    const char *args2[] = {"wallet-worker", "--brokers=", NULL};
    assert_false(parse_args(&cfg, args2, &index, &err));
    assert_contains(err.message, "--brokers");
    assert_contains(err.message, "empty");
}

static void test_config_unknown_flag_stops_parsing_at_its_index(void **state) {
    (void)state;
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    int index;
    const char *args[] = {"wallet-worker", "--brokers", "h:1", "--no-such-flag",
                          "--group-id",    "g",         NULL};
    assert_true(parse_args(&cfg, args, &index, &err));
    assert_int_equal(index, 3);
    assert_string_equal(cfg.kafka_brokers, "h:1");
    assert_string_equal(cfg.kafka_group_id, "wallet-worker"); /* after the stop: untouched */

    /* a flag that only starts like a known one is unknown */
    const char *args2[] = {"wallet-worker", "--brokersx", "h:2", NULL};
    assert_true(parse_args(&cfg, args2, &index, &err));
    assert_int_equal(index, 1);
    assert_string_equal(cfg.kafka_brokers, "h:1");

    /* a positional argument stops it too; so does a short option */
    const char *args3[] = {"wallet-worker", "--worker-threads=2", "extra", NULL};
    assert_true(parse_args(&cfg, args3, &index, &err));
    assert_int_equal(index, 2);
    assert_int_equal(cfg.worker_threads, 2);
    const char *args4[] = {"wallet-worker", "-b", "h:3", NULL};
    assert_true(parse_args(&cfg, args4, &index, &err));
    assert_int_equal(index, 1);
}

/* ---- docs/configuration.md documents every setting ------------------------------ */

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

#define MAX_CELLS 8
#define CELL_MAX 512

/* Splits a Markdown table row "| a | b | ... |" into trimmed cells. Returns the
 * number of cells, 0 when the line is not a table row. */
static int split_row(const char *line, size_t len, char cells[MAX_CELLS][CELL_MAX]) {
    while (len && (*line == ' ' || *line == '\t')) line++, len--;
    if (len == 0 || line[0] != '|') return 0;
    int n = 0;
    size_t i = 1;
    while (i < len && n < MAX_CELLS) {
        size_t start = i;
        while (i < len && line[i] != '|') i++;
        if (i >= len) break; /* text after the last '|' is not a cell */
        size_t a = start, b = i;
        while (a < b && (line[a] == ' ' || line[a] == '\t')) a++;
        while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t' || line[b - 1] == '\r')) b--;
        size_t cl = b - a < CELL_MAX - 1 ? b - a : CELL_MAX - 1;
        memcpy(cells[n], line + a, cl);
        cells[n][cl] = '\0';
        n++;
        i++;
    }
    return n;
}

/* --help as a string: it prints each setting's default straight from the table. */
static char *render_help(void) {
    FILE *f = tmpfile();
    assert_non_null(f);
    ww_config_print_help(f);
    long len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    char *text = malloc((size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    return text;
}

/* The table's default for env, read back from the --help text
 * ("env NAME, default VALUE"). */
static const char *table_default(const char *help, const char *env) {
    static char value[CELL_MAX];
    char needle[160];
    snprintf(needle, sizeof needle, "env %s, default ", env);
    const char *p = strstr(help, needle);
    if (!p) fail_msg("--help does not show the default of %s", env);
    p += strlen(needle);
    size_t n = strcspn(p, "\n");
    if (n >= sizeof value) n = sizeof value - 1;
    memcpy(value, p, n);
    value[n] = '\0';
    return value;
}

static void test_config_every_setting_is_documented(void **state) {
    (void)state;
    const char *path = WW_SOURCE_DIR "/docs/configuration.md";
    char *doc = read_all(path);
    if (!doc) fail_msg("cannot read %s", path);
    char *help = render_help();
    size_t n = ww_config_setting_count();
    assert_true(n > 0);
    int rows[64] = {0};
    assert_true(n <= sizeof rows / sizeof rows[0]);
    static char cells[MAX_CELLS][CELL_MAX];
    const char *line = doc;
    while (*line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        int nc = split_row(line, len, cells);
        if (nc >= 2) {
            bool known = false;
            for (size_t i = 0; i < n; i++) {
                char env[128], flag[128];
                snprintf(env, sizeof env, "`%s`", ww_config_setting_env(i));
                snprintf(flag, sizeof flag, "`%s`", ww_config_setting_flag(i));
                if (strcmp(cells[0], env) != 0) continue;
                known = true;
                rows[i]++;
                if (!strstr(cells[1], flag))
                    fail_msg("docs/configuration.md: the row of %s does not name its flag %s "
                             "in the second column", env, flag);
                char def[CELL_MAX + 8];
                const char *want = table_default(help, ww_config_setting_env(i));
                /* an empty default is written "(not set...)" */
                bool unset_ok = strcmp(want, "(not set)") == 0 && nc >= 3 &&
                        strncmp(cells[2], "(not set", 8) == 0;
                snprintf(def, sizeof def, "`%s`", want);
                if (!unset_ok && (nc < 3 || strcmp(cells[2], def) != 0))
                    fail_msg("docs/configuration.md: the default of %s is \"%s\", not %s",
                             env, nc < 3 ? "" : cells[2], def);
            }
            /* a row that documents a flag must be a setting that exists */
            if (!known && strncmp(cells[1], "`--", 3) == 0)
                fail_msg("docs/configuration.md documents %s %s, which is not a setting",
                         cells[0], cells[1]);
        }
        line = eol ? eol + 1 : line + len;
    }
    for (size_t i = 0; i < n; i++) {
        if (rows[i] == 0)
            fail_msg("docs/configuration.md: no table row starts with `%s` (flag `%s`): "
                     "document the setting",
                     ww_config_setting_env(i), ww_config_setting_flag(i));
        if (rows[i] > 1)
            fail_msg("docs/configuration.md: %d table rows start with `%s`; keep one",
                     rows[i], ww_config_setting_env(i));
    }
    free(doc);
    free(help);
}

/* Kafka security: the combinations that make sense, and nothing else. */
static void test_config_kafka_security_rules(void **state) {
    (void)state;
    struct {
        const char *proto, *mech, *user, *pass;
        bool ok;
        const char *names;
    } cases[] = {
        {"plaintext", "", "", "", true, NULL},
        {"ssl", "", "", "", true, NULL},
        {"SASL_SSL", "SCRAM-SHA-512", "app", "pw", true, NULL},
        {"sasl_plaintext", "PLAIN", "app", "", true, NULL},
        {"bogus", "", "", "", false, "KAFKA_SECURITY_PROTOCOL"},
        {"sasl_ssl", "", "app", "pw", false, "KAFKA_SASL_MECHANISM"},
        {"sasl_ssl", "PLAIN", "", "pw", false, "KAFKA_SASL_MECHANISM"},
        {"plaintext", "PLAIN", "app", "pw", false, "KAFKA_SECURITY_PROTOCOL"},
        {"ssl", "", "", "pw", false, "KAFKA_SECURITY_PROTOCOL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_config_t cfg;
        ww_config_defaults(&cfg);
        snprintf(cfg.kafka_security_protocol, sizeof cfg.kafka_security_protocol, "%s", cases[i].proto);
        snprintf(cfg.kafka_sasl_mechanism, sizeof cfg.kafka_sasl_mechanism, "%s", cases[i].mech);
        snprintf(cfg.kafka_sasl_username, sizeof cfg.kafka_sasl_username, "%s", cases[i].user);
        snprintf(cfg.kafka_sasl_password, sizeof cfg.kafka_sasl_password, "%s", cases[i].pass);
        ww_error_t err;
        ww_error_clear(&err);
        bool ok = ww_config_validate(&cfg, &err);
        if (ok != cases[i].ok)
            fail_msg("case %zu (%s/%s): validate=%d, want %d (%s)", i, cases[i].proto,
                     cases[i].mech, ok, cases[i].ok, err.message);
        if (!ok) assert_non_null(strstr(err.message, cases[i].names));
    }
}

/* The start-up settings lines never show the SASL password or the MongoDB one. */
static void test_config_log_hides_secrets(void **state) {
    (void)state;
    ww_config_t cfg;
    ww_config_defaults(&cfg);
    snprintf(cfg.kafka_security_protocol, sizeof cfg.kafka_security_protocol, "sasl_ssl");
    snprintf(cfg.kafka_sasl_mechanism, sizeof cfg.kafka_sasl_mechanism, "PLAIN");
    snprintf(cfg.kafka_sasl_username, sizeof cfg.kafka_sasl_username, "app");
    snprintf(cfg.kafka_sasl_password, sizeof cfg.kafka_sasl_password, "KafkaS3cretPw");
    snprintf(cfg.mongodb_uri, sizeof cfg.mongodb_uri, "mongodb://u:MongoS3cretPw@h/db");
    char path[] = "/tmp/ww-test-config-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    ww_log_set_level(WW_LOG_INFO);
    ww_config_log(&cfg);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = read_all(path);
    unlink(path);
    assert_non_null(text);
    assert_null(strstr(text, "KafkaS3cretPw"));
    assert_null(strstr(text, "MongoS3cretPw"));
    assert_non_null(strstr(text, "setting KAFKA_SASL_PASSWORD=***"));
    assert_non_null(strstr(text, "setting MONGODB_URI=mongodb://u:***@h:27017/db"));
    assert_non_null(strstr(text, "setting KAFKA_SASL_USERNAME=app"));
    free(text);
}

static void test_config_pipelines(void **state) {
    (void)state;
    struct {
        const char *value;
        bool ok, wallet, invite;
    } cases[] = {
        {"wallet,invite", true, true, true}, {"invite,wallet", true, true, true},
        {"wallet", true, true, false},       {"invite", true, false, true},
        {"wallet,", true, true, false},      {"", false, false, false},
        {"payments", false, false, false},   {"wallet,payments", false, false, false},
        {"WALLET", false, false, false},     {",", false, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_config_t cfg;
        ww_config_defaults(&cfg);
        snprintf(cfg.pipelines, sizeof cfg.pipelines, "%s", cases[i].value);
        ww_error_t err;
        ww_error_clear(&err);
        bool ok = ww_config_validate(&cfg, &err);
        if (ok != cases[i].ok) fail_msg("PIPELINES=\"%s\": %d, want %d", cases[i].value, ok, cases[i].ok);
        if (ok) {
            assert_int_equal(cfg.run_wallet, cases[i].wallet);
            assert_int_equal(cfg.run_invite, cases[i].invite);
        } else {
            assert_non_null(strstr(err.message, "PIPELINES"));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_kafka_security_rules),
        cmocka_unit_test(test_config_pipelines),
        cmocka_unit_test(test_config_log_hides_secrets),
        cmocka_unit_test_setup_teardown(test_config_defaults_are_valid_and_as_documented, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_empty_environment_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_environment_overrides_defaults, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_flags_override_in_both_forms, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_flags_win_over_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_last_flag_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_db_transactions_is_an_on_off_switch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_log_levels_are_case_insensitive, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_invalid_values_are_refused_naming_the_setting,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_bounds_and_length_limits_are_inclusive, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_a_rejected_value_names_the_first_bad_setting,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_flag_without_value_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_unknown_flag_stops_parsing_at_its_index,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_every_setting_is_documented, setup, teardown),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
