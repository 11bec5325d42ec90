/* config.c: see config.h. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db.h"

typedef enum { T_STR, T_INT, T_LEVEL, T_LOGFMT, T_BOOL, T_SWITCH /* a bool spelled on/off */ } setting_type_t;

typedef struct {
    const char *env;
    const char *flag;
    setting_type_t type;
    size_t offset;
    size_t size;     /* T_STR: buffer size */
    int64_t min, max; /* T_INT bounds */
    const char *def;
    bool secret;     /* value is redacted when logged */
    const char *help;
    bool optional;   /* T_STR: the empty string means "not set" */
} setting_t;

#define STR(field, env, flag, def, secret, help) \
    {env, flag, T_STR, offsetof(ww_config_t, field), sizeof(((ww_config_t *)0)->field), 0, 0, def, secret, help, false}
#define INT(field, env, flag, def, lo, hi, help) \
    {env, flag, T_INT, offsetof(ww_config_t, field), 0, lo, hi, def, false, help, false}

static const setting_t settings[] = {
    STR(kafka_brokers, "KAFKA_BROKERS", "--brokers", "127.0.0.1:9092", false,
        "Kafka bootstrap servers, host:port[,host:port...]"),
    STR(kafka_group_id, "KAFKA_GROUP_ID", "--group-id", "wallet-worker", false,
        "Kafka consumer group; workers sharing it split the partitions"),
    STR(mongodb_uri, "MONGODB_URI", "--mongodb-uri", "mongodb://127.0.0.1:27017/wallet", true,
        "MongoDB connection string; its path names the database (password never logged)"),
    STR(http_addr, "HTTP_ADDR", "--http-addr", "127.0.0.1:8080", false,
        "listen address of the health/metrics sidecar, IP:port, [IPv6]:port or localhost:port (\":8080\" = all interfaces; a host name is refused)"),
    {"LOG_LEVEL", "--log-level", T_LEVEL, offsetof(ww_config_t, log_level), 0, 0, 0, "info", false,
     "debug, info, warn or error", false},
    {"LOG_FORMAT", "--log-format", T_LOGFMT, offsetof(ww_config_t, log_format), 0, 0, 0, "logfmt", false,
     "logfmt (key=value, values quoted and escaped) or json (one object per line)", false},
    STR(commands_topic, "WALLET_COMMANDS_TOPIC", "--commands-topic", "wallet.commands", false,
        "topic of incoming wallet commands"),
    STR(results_topic, "WALLET_RESULTS_TOPIC", "--results-topic", "wallet.results", false,
        "topic the result of every processed command is published to"),
    STR(dlq_topic, "WALLET_DLQ_TOPIC", "--dlq-topic", "wallet.commands.dlq", false,
        "dead-letter topic for invalid wallet commands"),
    INT(worker_threads, "WORKER_THREADS", "--worker-threads", "8", 1, 64,
        "commands processed concurrently (different wallets; one wallet stays in order)"),
    INT(batch_max, "BATCH_MAX", "--batch-max", "512", 1, 8192,
        "messages a worker thread decides at once (group commit; no linger: a batch is "
        "what is waiting)"),
    INT(max_message_bytes, "MAX_MESSAGE_BYTES", "--max-message-bytes", "65536", 256, 1048576,
        "largest accepted message value; larger ones are dead-lettered as too_large"),
    INT(liveness_threshold_ms, "LIVENESS_THRESHOLD_MS", "--liveness-threshold-ms", "30000", 1000,
        3600000, "/livez fails when the consume loop made no progress for this long"),
    INT(kafka_unready_after_ms, "KAFKA_UNREADY_AFTER_MS", "--kafka-unready-after-ms", "10000",
        1000, 3600000,
        "/readyz fails once the brokers are unreachable, or the member is out of its group, "
        "for this long"),
    INT(kafka_commit_interval_ms, "KAFKA_COMMIT_INTERVAL_MS", "--kafka-commit-interval-ms",
        "1000", 100, 3600000,
        "how often the offsets of finished messages are committed (revoke and shutdown also "
        "commit)"),
    INT(db_pool_max, "DB_POOL_MAX", "--db-pool-max", "50", 1, 1000,
        "MongoDB connection pool size, unless MONGODB_URI sets maxPoolSize"),
    INT(db_auth_fail_exit_s, "DB_AUTH_FAIL_EXIT_S", "--db-auth-fail-exit-s", "0", 0, 86400,
        "exit 1 once MongoDB has refused the credentials for this many seconds without a "
        "success in between (0: keep retrying; /readyz is 503 meanwhile)"),
    INT(shutdown_timeout_ms, "SHUTDOWN_TIMEOUT_MS", "--shutdown-timeout-ms", "5000", 0, 600000,
        "on SIGTERM/SIGINT, how long in-flight commands may take to finish"),
    /* invites */
    STR(invite_events_topic, "INVITE_EVENTS_TOPIC", "--invite-events-topic", "invite.events",
        false, "topic of incoming invite events (created, used, revoked, expired)"),
    STR(invite_results_topic, "INVITE_RESULTS_TOPIC", "--invite-results-topic", "invite.results",
        false, "topic the result of every processed invite event is published to"),
    STR(invite_dlq_topic, "INVITE_DLQ_TOPIC", "--invite-dlq-topic", "invite.events.dlq", false,
        "dead-letter topic for invalid invite events and events for unknown invites"),
    INT(invite_sweep_interval_ms, "INVITE_SWEEP_INTERVAL_MS", "--invite-sweep-interval-ms",
        "60000", 0, 86400000,
        "how often active invites past expiresAt are marked expired (0 disables the sweeper)"),
    INT(invite_sweep_batch, "INVITE_SWEEP_BATCH", "--invite-sweep-batch", "500", 1, 10000,
        "invites the sweeper expires per database round trip"),
    {"AUTO_MIGRATE", "--auto-migrate", T_BOOL, offsetof(ww_config_t, auto_migrate), 0, 0, 0, "true",
     false, "apply pending schema migrations at start; false: refuse to start until "
            "`wallet-worker migrate` has run", false},
    /* Kafka security: passed to librdkafka as security.protocol,
     * sasl.mechanism, sasl.username, sasl.password, ssl.ca.location */
    {"KAFKA_SECURITY_PROTOCOL", "--kafka-security-protocol", T_STR,
     offsetof(ww_config_t, kafka_security_protocol), sizeof(((ww_config_t *)0)->kafka_security_protocol),
     0, 0, "plaintext", false, "plaintext, ssl, sasl_plaintext or sasl_ssl", false},
    {"KAFKA_SASL_MECHANISM", "--kafka-sasl-mechanism", T_STR,
     offsetof(ww_config_t, kafka_sasl_mechanism), sizeof(((ww_config_t *)0)->kafka_sasl_mechanism),
     0, 0, "", false, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with sasl_*)", true},
    {"KAFKA_SASL_USERNAME", "--kafka-sasl-username", T_STR,
     offsetof(ww_config_t, kafka_sasl_username), sizeof(((ww_config_t *)0)->kafka_sasl_username),
     0, 0, "", false, "SASL user name", true},
    {"KAFKA_SASL_PASSWORD", "--kafka-sasl-password", T_STR,
     offsetof(ww_config_t, kafka_sasl_password), sizeof(((ww_config_t *)0)->kafka_sasl_password),
     0, 0, "", true, "SASL password (never logged; prefer the environment to the flag)", true},
    {"KAFKA_SSL_CA_LOCATION", "--kafka-ssl-ca-location", T_STR,
     offsetof(ww_config_t, kafka_ssl_ca_location), sizeof(((ww_config_t *)0)->kafka_ssl_ca_location),
     0, 0, "", false, "CA certificate file to verify the brokers (ssl, sasl_ssl)", true},
    STR(pipelines, "PIPELINES", "--pipelines", "wallet,invite", false,
        "which pipelines this worker runs: wallet, invite, or both (comma-separated)"),
    {"DB_TRANSACTIONS", "--db-transactions", T_SWITCH, offsetof(ww_config_t, db_transactions), 0, 0,
     0, "off", false, "on: wallet update and ledger entry in one transaction (replica set or "
     "mongos only, else exit 2; not exercised by this project's tests); off: single-document "
     "protocol", false},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

static bool apply(ww_config_t *cfg, const setting_t *s, const char *value, const char *source,
                  ww_error_t *error) {
    char *field = (char *)cfg + s->offset;
    switch (s->type) {
    case T_STR: {
        size_t len = strlen(value);
        if (len == 0 && !s->optional) {
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: must not be empty", source);
            return false;
        }
        if (len >= s->size) {
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: longer than %zu characters", source,
                         s->size - 1);
            return false;
        }
        memcpy(field, value, len + 1);
        return true;
    }
    case T_INT: {
        errno = 0;
        char *end = NULL;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: \"%.32s\" is not an integer", source,
                         value);
            return false;
        }
        if (v < s->min || v > s->max) {
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: %lld is outside %lld..%lld", source, v,
                         (long long)s->min, (long long)s->max);
            return false;
        }
        *(int32_t *)(void *)field = (int32_t)v;
        return true;
    }
    case T_BOOL:
    case T_SWITCH: {
        static const char *const yes[] = {"true", "1", "yes", "on"};
        static const char *const no[] = {"false", "0", "no", "off"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(bool *)(void *)field = strcasecmp(value, yes[i]) == 0;
                return true;
            }
        }
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: \"%.32s\" is not %s", source, value,
                     s->type == T_SWITCH ? "on or off" : "true or false");
        return false;
    }
    case T_LEVEL: {
        ww_log_level_t level;
        if (!ww_log_parse_level(value, &level) || level == WW_LOG_OFF) {
            ww_error_set(error, WW_ERR_CONFIG, 0, false,
                         "%s: \"%.32s\" is not one of debug, info, warn, error", source, value);
            return false;
        }
        *(ww_log_level_t *)(void *)field = level;
        return true;
    }
    case T_LOGFMT: {
        ww_log_format_t format;
        if (!ww_log_parse_format(value, &format)) {
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: \"%.32s\" is not logfmt or json",
                         source, value);
            return false;
        }
        *(ww_log_format_t *)(void *)field = format;
        return true;
    }
    }
    return false;
}

void ww_config_defaults(ww_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        bool ok = apply(cfg, &settings[i], settings[i].def, settings[i].env, NULL);
        (void)ok; /* defaults are valid by construction; test_config checks it */
    }
}

static bool in_scope(const setting_t *s, ww_config_scope_t scope) {
    static const char *const database_tool[] = {"MONGODB_URI", "DB_POOL_MAX", "LOG_LEVEL"};
    if (scope == WW_CONFIG_ALL) return true;
    for (size_t i = 0; i < sizeof database_tool / sizeof database_tool[0]; i++)
        if (strcmp(s->env, database_tool[i]) == 0) return true;
    return false;
}

bool ww_config_from_env(ww_config_t *cfg, ww_error_t *error) {
    return ww_config_from_env_scoped(cfg, WW_CONFIG_ALL, error);
}

bool ww_config_from_env_scoped(ww_config_t *cfg, ww_config_scope_t scope, ww_error_t *error) {
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (!in_scope(&settings[i], scope)) continue;
        const char *v = getenv(settings[i].env);
        if (v && !apply(cfg, &settings[i], v, settings[i].env, error)) return false;
    }
    return true;
}

bool ww_config_from_args(ww_config_t *cfg, int argc, char **argv, int *index, ww_error_t *error) {
    while (*index < argc) {
        const char *arg = argv[*index];
        const setting_t *s = NULL;
        const char *value = NULL;
        for (size_t i = 0; i < N_SETTINGS && !s; i++) {
            size_t fl = strlen(settings[i].flag);
            if (strncmp(arg, settings[i].flag, fl) == 0) {
                if (arg[fl] == '\0') {
                    s = &settings[i];
                } else if (arg[fl] == '=') {
                    s = &settings[i];
                    value = arg + fl + 1;
                }
            }
        }
        if (!s) return true; /* not ours: the caller decides */
        if (!value) {
            if (*index + 1 >= argc) {
                ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: needs a value", s->flag);
                return false;
            }
            value = argv[++*index];
        }
        if (!apply(cfg, s, value, s->flag, error)) return false;
        ++*index;
    }
    return true;
}

/* "wallet,invite" -> flags; false on anything else */
static bool parse_pipelines(const char *list, bool *wallet, bool *invite) {
    *wallet = *invite = false;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 6 && strncmp(p, "wallet", 6) == 0)
            *wallet = true;
        else if (n == 6 && strncmp(p, "invite", 6) == 0)
            *invite = true;
        else
            return false;
        p += n;
        if (*p == ',') p++;
    }
    return *wallet || *invite;
}

bool ww_config_validate(ww_config_t *cfg, ww_error_t *error) {
    return ww_config_validate_scoped(cfg, WW_CONFIG_ALL, error);
}

bool ww_config_validate_scoped(ww_config_t *cfg, ww_config_scope_t scope, ww_error_t *error) {
    if (strncmp(cfg->mongodb_uri, "mongodb://", 10) != 0 &&
        strncmp(cfg->mongodb_uri, "mongodb+srv://", 14) != 0) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "MONGODB_URI: must start with mongodb:// or mongodb+srv://");
        return false;
    }
    if (scope == WW_CONFIG_DATABASE_TOOL) return true; /* nothing else is used */
    if (!parse_pipelines(cfg->pipelines, &cfg->run_wallet, &cfg->run_invite)) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "PIPELINES: \"%.32s\" is not wallet, invite or wallet,invite", cfg->pipelines);
        return false;
    }
    /* http_addr: host:port with a port; the sidecar checks the host itself */
    const char *colon = strrchr(cfg->http_addr, ':');
    if (!colon || colon[1] == '\0') {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "HTTP_ADDR: \"%.64s\" is not host:port",
                     cfg->http_addr);
        return false;
    }
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || port < 0 || port > 65535) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "HTTP_ADDR: port \"%.16s\" is not 0..65535",
                     colon + 1);
        return false;
    }
    static const char *const protocols[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
    bool known = false;
    for (size_t i = 0; i < 4; i++) known |= strcasecmp(cfg->kafka_security_protocol, protocols[i]) == 0;
    if (!known) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "KAFKA_SECURITY_PROTOCOL: \"%.32s\" is not plaintext, ssl, sasl_plaintext or "
                     "sasl_ssl", cfg->kafka_security_protocol);
        return false;
    }
    bool sasl = strncasecmp(cfg->kafka_security_protocol, "sasl_", 5) == 0;
    if (sasl && (!cfg->kafka_sasl_mechanism[0] || !cfg->kafka_sasl_username[0])) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "KAFKA_SASL_MECHANISM: %s needs KAFKA_SASL_MECHANISM and KAFKA_SASL_USERNAME",
                     cfg->kafka_security_protocol);
        return false;
    }
    if (!sasl && (cfg->kafka_sasl_mechanism[0] || cfg->kafka_sasl_username[0] ||
                  cfg->kafka_sasl_password[0])) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false,
                     "KAFKA_SECURITY_PROTOCOL: SASL settings are given but the protocol is %s",
                     cfg->kafka_security_protocol);
        return false;
    }
    /* every topic has one role: a shared name would feed one handler the
     * other's messages (or its own results) */
    const struct {
        const char *env, *value;
    } topics[] = {
        {"WALLET_COMMANDS_TOPIC", cfg->commands_topic},
        {"WALLET_RESULTS_TOPIC", cfg->results_topic},
        {"WALLET_DLQ_TOPIC", cfg->dlq_topic},
        {"INVITE_EVENTS_TOPIC", cfg->invite_events_topic},
        {"INVITE_RESULTS_TOPIC", cfg->invite_results_topic},
        {"INVITE_DLQ_TOPIC", cfg->invite_dlq_topic},
    };
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
        for (size_t j = i + 1; j < sizeof topics / sizeof topics[0]; j++)
            if (strcmp(topics[i].value, topics[j].value) == 0) {
                ww_error_set(error, WW_ERR_CONFIG, 0, false, "%s: \"%.64s\" is also %s",
                             topics[j].env, topics[j].value, topics[i].env);
                return false;
            }
    return true;
}

void ww_config_print_help(FILE *out) {
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_t *s = &settings[i];
        fprintf(out, "  %-26s %s\n  %-26s env %s, default %s\n", s->flag, s->help, "", s->env,
                s->def[0] ? s->def : "(not set)");
    }
}

void ww_config_log(const ww_config_t *cfg) {
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_t *s = &settings[i];
        const char *field = (const char *)cfg + s->offset;
        char buf[WW_CONFIG_STR_MAX];
        switch (s->type) {
        case T_STR:
            if (s->secret && strstr(field, "://"))
                ww_db_redact_uri(field, buf, sizeof buf);
            else if (s->secret)
                snprintf(buf, sizeof buf, "%s", field[0] ? "***" : "");
            else
                snprintf(buf, sizeof buf, "%s", field);
            break;
        case T_INT: snprintf(buf, sizeof buf, "%d", *(const int32_t *)(const void *)field); break;
        case T_BOOL: snprintf(buf, sizeof buf, "%s", *(const bool *)(const void *)field ? "true" : "false"); break;
        case T_SWITCH: snprintf(buf, sizeof buf, "%s", *(const bool *)(const void *)field ? "on" : "off"); break;
        case T_LEVEL:
            snprintf(buf, sizeof buf, "%s",
                     ww_log_level_name(*(const ww_log_level_t *)(const void *)field));
            break;
        case T_LOGFMT:
            snprintf(buf, sizeof buf, "%s",
                     ww_log_format_name(*(const ww_log_format_t *)(const void *)field));
            break;
        }
        ww_info("config", "setting", WW_STR(s->env, buf));
    }
}

size_t ww_config_setting_count(void) { return N_SETTINGS; }
const char *ww_config_setting_env(size_t i) { return i < N_SETTINGS ? settings[i].env : NULL; }
const char *ww_config_setting_flag(size_t i) { return i < N_SETTINGS ? settings[i].flag : NULL; }
