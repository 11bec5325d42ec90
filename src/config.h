/* config.h: the worker's settings, from the environment with command-line
 * overrides.
 *
 * DESIGN: one table (config.c) describes every setting: its environment
 * variable, its flag, its default, its bounds and one line of help. Parsing,
 * `--help` and the check that docs/configuration.md documents every setting
 * are all driven by that table, so they cannot drift apart. */
#ifndef WW_CONFIG_H
#define WW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "log.h"

#define WW_CONFIG_STR_MAX 1024

typedef struct {
    char kafka_brokers[WW_CONFIG_STR_MAX];
    char kafka_group_id[256];
    char mongodb_uri[WW_CONFIG_STR_MAX];
    char http_addr[256];
    ww_log_level_t log_level;
    ww_log_format_t log_format;

    char commands_topic[250];
    char results_topic[250];
    char dlq_topic[250];

    int32_t worker_threads;        /* concurrent wallets in flight */
    int32_t batch_max;             /* messages per batch (BATCH_MAX) */
    int32_t max_message_bytes;     /* larger messages are dead-lettered */
    int32_t liveness_threshold_ms; /* /livez fails past this without progress */
    int32_t kafka_unready_after_ms;   /* /readyz fails past this without brokers or group */
    int32_t kafka_commit_interval_ms; /* auto-commit of the stored offsets */
    int32_t db_pool_max;           /* maxPoolSize when the URI does not say */
    int32_t db_auth_fail_exit_s;   /* exit 1 after this long of auth failures; 0 = never */
    int32_t shutdown_timeout_ms;   /* how long SIGTERM waits for in-flight work */
    bool auto_migrate;             /* apply pending migrations at start */
    bool db_transactions;          /* DB_TRANSACTIONS=on: the transactional wallet mode */
    char pipelines[64];            /* "wallet,invite": which topics this worker consumes */
    bool run_wallet, run_invite;   /* derived from pipelines by ww_config_validate */

    /* Kafka security (empty = not set) */
    char kafka_security_protocol[32];
    char kafka_sasl_mechanism[32];
    char kafka_sasl_username[256];
    char kafka_sasl_password[256];
    char kafka_ssl_ca_location[WW_CONFIG_STR_MAX];

    /* invites */
    char invite_events_topic[250];
    char invite_results_topic[250];
    char invite_dlq_topic[250];
    int32_t invite_sweep_interval_ms; /* 0: no sweeper */
    int32_t invite_sweep_batch;       /* invites expired per round trip */
} ww_config_t;

/* Which settings a command reads. migrate and doctor use only MONGODB_URI,
 * DB_POOL_MAX and LOG_LEVEL: every other setting (HTTP_ADDR, the Kafka ones)
 * is neither read nor validated for them, so a Job sharing the worker's
 * environment is not stopped by a setting it does not use. */
typedef enum { WW_CONFIG_ALL = 0, WW_CONFIG_DATABASE_TOOL } ww_config_scope_t;

/* Fills cfg with the defaults. */
void ww_config_defaults(ww_config_t *cfg);

/* Applies the environment (getenv) on top of cfg. */
bool ww_config_from_env(ww_config_t *cfg, ww_error_t *error);
/* The same for the settings of `scope` only (the others keep their defaults). */
bool ww_config_from_env_scoped(ww_config_t *cfg, ww_config_scope_t scope, ww_error_t *error);

/* Applies command-line flags on top of cfg. argv[*index] onward; stops at
 * the first argument that is not a known setting flag, leaving *index there.
 * Both `--flag value` and `--flag=value` work. */
bool ww_config_from_args(ww_config_t *cfg, int argc, char **argv, int *index, ww_error_t *error);

/* Checks cross-field rules (e.g. the MongoDB URI parses) and fills the
 * derived fields (run_wallet, run_invite from pipelines). */
bool ww_config_validate(ww_config_t *cfg, ww_error_t *error);
/* The same for the settings of `scope` only. */
bool ww_config_validate_scoped(ww_config_t *cfg, ww_config_scope_t scope, ww_error_t *error);

/* Prints one block per setting (flag, env, default, help) for --help. */
void ww_config_print_help(FILE *out);

/* Logs the effective settings at info, secrets redacted. */
void ww_config_log(const ww_config_t *cfg);

/* For the docs check: the number of settings and each one's env name. */
size_t ww_config_setting_count(void);
const char *ww_config_setting_env(size_t i);
const char *ww_config_setting_flag(size_t i);

#endif
