/* main.c: the wallet-worker executable. Parses argv, wires the modules
 * together, owns the start/stop order and the signals. No logic lives here.
 *
 * Start: config -> log level -> metrics -> HTTP sidecar (health answers from
 * the first second) -> MongoDB pool (connecting in the background) -> indexes
 * -> pipeline workers -> Kafka consumer/producer -> consume loop.
 * Stop (SIGTERM/SIGINT): leave the loop -> drain in-flight work (bounded) and
 * commit -> join the workers (late outputs dropped) -> leave the group -> flush
 * results -> close MongoDB
 * -> stop the sidecar. Reverse order of creation. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__ /* defined by the headers above */
#include <malloc.h>
#endif

#include "bus.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "doctor.h"
#include "health.h"
#include "http.h"
#include "invite.h" /* invites */
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "migrate.h"
#include "replay.h"
#include "version.h"
#include "wallet.h"

static volatile int stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "wallet-worker %s: applies wallet commands from Kafka to MongoDB, exactly once in "
            "effect.\n\n"
            "Usage: wallet-worker [run] [options]\n"
            "       wallet-worker replay --topic T [range] [--publish WHAT] [--dry-run] [options]\n"
            "       wallet-worker apply --file F|- [--kind wallet|invite] [--dry-run] [--strict] [options]\n"
            "       wallet-worker migrate [--dry-run | --check] [--wait-s N] [options]\n"
            "       wallet-worker doctor [--json] [--marker-age-minutes N] [options]\n"
            "       wallet-worker --help | --version\n\n"
            "Commands:\n"
            "  run      consume, apply, publish results (the default)\n"
            "  replay   process a range of a topic again, with a private consumer (the live\n"
            "           group's offsets are untouched). The database: a second replay changes\n"
            "           nothing in it (every command is already decided: `duplicate`). Kafka:\n"
            "           each replay publishes again what --publish selects, a second time too.\n"
            "           Replaying a dead-letter topic re-drives the original bytes.\n"
            "             --topic T                  wallet or invite topic, or their DLQ\n"
            "             --publish WHAT             results (default): one result event per\n"
            "                                        message, no dead letters (the live worker\n"
            "                                        wrote them already); both: results and\n"
            "                                        dead letters (a DLQ re-drive that keeps\n"
            "                                        still-invalid messages, with their original\n"
            "                                        ww.source.* and ww.redrive.count);\n"
            "                                        dead-letters; none: only the database\n"
            "             --from-beginning           (default) from each partition's first offset\n"
            "             --from-timestamp RFC3339   from the first message at or after it\n"
            "             --from-offsets P:O,...     only these partitions, from these offsets\n"
            "             --to-timestamp RFC3339     up to (excluding) the first message at or after it\n"
            "             --to-offsets P:O,...       up to (excluding) these offsets\n"
            "                                        default end: the end offsets at start time\n"
            "             --kind wallet|invite       when T is not one of the configured topics\n"
            "  apply    the same pipeline over an NDJSON file, one message per line, without\n"
            "           Kafka: results to stdout, rejections to stderr as FILE:LINE: code: reason\n"
            "             --file F | --file -        the file, or standard input\n"
            "             --kind wallet|invite       (default wallet)\n"
            "             --strict                   exit 1 when any line was rejected (default: 0)\n"
            "             a missing --file is a usage error (exit 2); --dry-run reports the\n"
            "             same FILE:LINE rejections as the real run\n"
            "  migrate  apply pending schema migrations (indexes, in order, recorded in\n"
            "           schema_migrations; safe when several run at once; refuses when an applied\n"
            "           migration was changed). --dry-run lists what would be done. `run` does\n"
            "           this at start unless AUTO_MIGRATE=false. --check writes nothing and\n"
            "           exits 3 when migrations are pending, 0 when none are. It waits for an\n"
            "           unreachable database for up to --wait-s N seconds (default 60; exit 1\n"
            "           after), with a line on stderr every 5 s. migrate and doctor read only\n"
            "           MONGODB_URI, DB_POOL_MAX and LOG_LEVEL; other settings are not checked.\n"
            "  doctor   read-only check of MONGODB_URI: the migrations' indexes and records,\n"
            "           the query plans of the hot queries (explain), the ledger's consistency\n"
            "           (old decision markers, negative or non-integer balances, ledger entries\n"
            "           whose walletId and status disagree). Exit 0 all well, 1 problems found,\n"
            "           2 usage error. Each problem says what to do (docs/troubleshooting.md).\n"
            "             --json                     one machine-readable report on stdout\n"
            "             --marker-age-minutes N     markers older than this are reported\n"
            "                                        (default 15)\n"
            "  replay and apply also take:\n"
            "             --dry-run                  validate and predict outcomes; write nothing\n"
            "             --max-retry-ms N           give up on a message after N ms of database\n"
            "                                        or broker failures (default 120000)\n"
            "           A summary (what was published: results published, dead letters written,\n"
            "           and what was held back; outcomes in alphabetical order; per partition;\n"
            "           elapsed, rate) ends the run and a progress line is kept on stderr. Exit 0 only when every message was\n"
            "           processed (rejections are processed; infrastructure failures are not).\n\n"
            "Options (each also read from the environment variable shown; flags win):\n",
            WW_VERSION);
    ww_config_print_help(out);
    fprintf(out,
            "\nExit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a runtime failure,\n"
            "2 on invalid configuration, 3 from migrate --check with migrations pending.\n"
            "Health: GET /api/health, /livez, /readyz, /metrics on HTTP_ADDR.\n"
            "Documentation: docs/configuration.md, docs/operations.md.\n");
}

static void stamp_progress(void) { ww_health_progress(ww_clock_mono_ms()); }

/* Waits for the database (for up to wait_ms; -1 = until stopped), brings
 * the schema up to date (the unique ledger index is what makes wallet
 * commands exactly-once: never run without it) or, with AUTO_MIGRATE=false,
 * checks that it is, and checks that DB_TRANSACTIONS=on can be honoured.
 * False when stopped, out of time, the schema is not what this build needs
 * or transactions were asked for where there are none (*fatal: do not retry;
 * the exit status, 2 for the configuration). */
static bool prepare_db(const ww_config_t *cfg, ww_db_t *db, int64_t wait_ms, int *fatal,
                       ww_error_t *err) {
    int64_t deadline = wait_ms < 0 ? INT64_MAX : ww_clock_mono_ms() + wait_ms;
    bool txn = false;
    const char *txn_why = "";
    *fatal = 0;
    for (int attempt = 0; !stop_requested; attempt++) {
        bool ok;
        if (cfg->auto_migrate) {
            ww_migrate_options_t mo = {.progress = stamp_progress};
            ok = ww_migrate_run(db, &mo, NULL, err);
        } else {
            int pending = 0;
            ok = ww_migrate_check(db, &pending, err);
            if (ok && pending) {
                ww_error_set(err, WW_ERR_CONFIG, 0, false,
                             "%d schema migration(s) pending and AUTO_MIGRATE=false: run "
                             "`wallet-worker migrate` first", pending);
                ok = false;
            }
        }
        if (!ok && !err->retryable) {
            *fatal = 1;
            return false;
        }
        if (ok && ww_db_transactions_supported(db, &txn, &txn_why, err)) break;
        if (ww_clock_mono_ms() >= deadline) return false;
        if (attempt == 0 || attempt % 10 == 0)
            ww_warn("main", "waiting for the database", WW_STR("error", err->message));
        ww_health_progress(ww_clock_mono_ms());
        ww_clock_sleep_ms(1000, &stop_requested);
    }
    if (stop_requested) return false;
    if (cfg->db_transactions && !txn) {
        ww_error_set(err, WW_ERR_CONFIG, 0, false,
                     "DB_TRANSACTIONS=on, but the deployment cannot run transactions: %s; use "
                     "a replica set or mongos, or DB_TRANSACTIONS=off", txn_why);
        *fatal = 2;
        return false;
    }
    ww_db_set_use_transactions(db, cfg->db_transactions);
    if (cfg->db_transactions)
        ww_info("main", "DB_TRANSACTIONS=on: wallet update and ledger entry commit "
                "together, write concern majority", WW_STR("deployment", txn_why));
    else
        ww_info("main", "DB_TRANSACTIONS=off: single-document protocol");
    return true;
}

/* `wallet-worker migrate [--dry-run | --check]`. --check writes nothing and
 * exits 3 when migrations are pending, 0 when none are (1: the database could
 * not be checked). */
static int migrate_cmd(const ww_config_t *cfg, bool dry_run, bool check, int wait_s) {
    ww_error_t err;
    ww_error_clear(&err);
    /* an index build on a large collection can take minutes: a long socket
     * timeout here (unless the URI sets one) so it is not cut off */
    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    dbo.pool_max = cfg->db_pool_max;
    dbo.socket_timeout_ms = 3600000;
    ww_db_t *db = ww_db_new(cfg->mongodb_uri, &dbo, &err);
    if (!db) {
        fprintf(stderr, "wallet-worker: %s\n", err.message);
        return 2;
    }
    ww_migrate_options_t mo = {.dry_run = dry_run, .report = stdout};
    int applied = 0, status = 1;
    int64_t started = ww_clock_mono_ms(), deadline = started + (int64_t)wait_s * 1000;
    int64_t next_note = started; /* a progress line on the first failure, then every 5 s */
    for (;;) {
        ww_error_clear(&err);
        if (check) {
            int pending = 0;
            if (ww_migrate_check(db, &pending, &err)) {
                printf("%s: %d migration(s) pending\n", ww_db_name(db), pending);
                status = pending > 0 ? 3 : 0;
                break;
            }
        } else if (ww_migrate_run(db, &mo, &applied, &err)) {
            printf("%s: %d migration(s) %s\n", ww_db_name(db), applied,
                   dry_run ? "pending" : "applied now");
            status = 0;
            break;
        }
        int64_t now = ww_clock_mono_ms();
        if (!err.retryable || stop_requested || now > deadline) {
            fprintf(stderr, "wallet-worker: migrate: %s%s\n",
                    err.retryable && now > deadline ? "gave up waiting for the database: " : "",
                    err.message);
            break;
        }
        if (now >= next_note) {
            /* the error names the server, never the URI's credentials */
            fprintf(stderr, "wallet-worker: migrate: waiting for the database: %lld s of %d s: "
                    "%s\n", (long long)((now - started) / 1000), wait_s, err.message);
            next_note = now + 5000;
        }
        ww_clock_sleep_ms(1000, &stop_requested);
    }
    ww_db_destroy(db);
    return status;
}

static int run(const ww_config_t *cfg) {
    int status = 1;
    ww_http_t *http = NULL;
    ww_db_t *db = NULL;
    ww_pipeline_t *pipe = NULL;
    ww_bus_t *bus = NULL;
    ww_invite_sweeper_t *sweeper = NULL; /* invites */
    ww_error_t err;
    ww_error_clear(&err);

    ww_health_set_started(ww_clock_mono_ms());
    ww_metrics_init(WW_VERSION, ww_bus_library_version(), ww_db_driver_version());

    ww_http_config_t hc;
    memset(&hc, 0, sizeof hc);
    hc.listen = cfg->http_addr;
    hc.liveness_threshold_ms = cfg->liveness_threshold_ms;
    hc.kafka_unready_after_ms = cfg->kafka_unready_after_ms;
    hc.version = WW_VERSION;
    http = ww_http_start(&hc, &err);
    if (!http) {
        ww_err("main", "cannot start the HTTP sidecar", WW_STR("addr", cfg->http_addr), WW_STR("error", err.message));
        goto done;
    }

    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    dbo.pool_max = cfg->db_pool_max;
    dbo.auth_fail_exit_s = cfg->db_auth_fail_exit_s;
    db = ww_db_new(cfg->mongodb_uri, &dbo, &err);
    if (!db) {
        ww_err("main", "cannot use the database", WW_STR("error", err.message));
        status = 2;
        goto done;
    }
    ww_info("main", "database", WW_STR("database", ww_db_name(db)), WW_INT("maxPoolSize", ww_db_pool_max(db)),
            WW_INT("serverSelectionTimeoutMS", ww_db_server_selection_ms(db)),
            WW_INT("socketTimeoutMS", ww_db_socket_timeout_ms(db)));

    int fatal = 0;
    if (!prepare_db(cfg, db, -1, &fatal, &err)) {
        if (fatal) ww_err("main", "cannot start", WW_STR("error", err.message));
        status = fatal ? fatal : stop_requested ? 0 : 1;
        goto done;
    }

    ww_wallet_ctx_t wallet = {.db = db,
                              .results_topic = cfg->results_topic,
                              .dlq_topic = cfg->dlq_topic,
                              .max_message_bytes = cfg->max_message_bytes};
    /* invites */
    ww_invite_ctx_t invite = {.db = db,
                              .results_topic = cfg->invite_results_topic,
                              .dlq_topic = cfg->invite_dlq_topic,
                              .max_message_bytes = cfg->max_message_bytes};
    /* PIPELINES chooses what this worker consumes (one group balances the
     * partitions of all its topics together; separate deployments per
     * pipeline scale them separately) */
    ww_route_t routes[2];
    const char *topics[2];
    size_t n_routes = 0;
    if (cfg->run_wallet) {
        routes[n_routes] = (ww_route_t){.topic = cfg->commands_topic, .dlq_topic = cfg->dlq_topic,
                                        .handle = ww_wallet_handle,
                                        .handle_batch = ww_wallet_handle_batch, .ctx = &wallet};
        topics[n_routes++] = cfg->commands_topic;
    }
    if (cfg->run_invite) { /* invites */
        routes[n_routes] = (ww_route_t){.topic = cfg->invite_events_topic,
                                        .dlq_topic = cfg->invite_dlq_topic,
                                        .handle = ww_invite_handle,
                                        .handle_batch = ww_invite_handle_batch, .ctx = &invite};
        topics[n_routes++] = cfg->invite_events_topic;
    }
    ww_pipeline_config_t pc;
    ww_pipeline_config_defaults(&pc);
    pc.workers = cfg->worker_threads;
    pc.batch_max = cfg->batch_max;
    pc.shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    pipe = ww_pipeline_new(&pc, routes, n_routes, &err);
    if (!pipe) {
        ww_err("main", "cannot start the pipeline", WW_STR("error", err.message));
        goto done;
    }

    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = cfg->kafka_brokers;
    bc.group_id = cfg->kafka_group_id;
    bc.auto_commit_interval_ms = cfg->kafka_commit_interval_ms;
    bc.security_protocol = cfg->kafka_security_protocol;
    bc.sasl_mechanism = cfg->kafka_sasl_mechanism;
    bc.sasl_username = cfg->kafka_sasl_username;
    bc.sasl_password = cfg->kafka_sasl_password;
    bc.ssl_ca_location = cfg->kafka_ssl_ca_location;
    ww_bus_hooks_t hooks = ww_pipeline_bus_hooks(pipe);
    bus = ww_bus_new(&bc, &hooks, &err);
    if (!bus) {
        ww_err("main", "cannot start the Kafka client", WW_STR("error", err.message));
        status = err.domain == WW_ERR_CONFIG ? 2 : 1;
        goto done;
    }
    ww_pipeline_attach(pipe, bus);
    if (!ww_bus_subscribe(bus, topics, n_routes, &err)) {
        ww_err("main", "cannot subscribe", WW_STR("error", err.message));
        goto done;
    }
    ww_health_set_running(true);
    char topic_list[520];
    snprintf(topic_list, sizeof topic_list, "%s%s%s", topics[0], n_routes > 1 ? "," : "",
             n_routes > 1 ? topics[1] : "");
    ww_info("main", "running", WW_STR("group", cfg->kafka_group_id), WW_STR("topics", topic_list),
            WW_INT("workers", cfg->worker_threads));

    /* invites: the sweeper runs on its own thread, never on the consume path */
    if (cfg->run_invite && cfg->invite_sweep_interval_ms > 0) {
        sweeper = ww_invite_sweeper_start(db, cfg->invite_sweep_interval_ms,
                                          cfg->invite_sweep_batch, &err);
        if (!sweeper) {
            ww_err("main", "cannot start the invite sweeper", WW_STR("error", err.message));
            goto done;
        }
    }

    ww_pipeline_run(pipe, &stop_requested);
    if (ww_bus_fatal(bus)) {
        ww_err("main", "stopping after a fatal Kafka error; restart to continue");
        status = 1;
    } else {
        status = 0;
    }

done:
    /* DB_AUTH_FAIL_EXIT_S: db.c stopped us with SIGTERM; a crash loop, not a clean stop */
    if (ww_db_auth_gave_up()) status = 1;
    ww_health_set_running(false);
    ww_invite_sweeper_stop(sweeper); /* invites: before the pipeline and the pool go */
    /* Workers are joined before the bus goes: a handler finishing late (slow
     * database) must not produce into a destroyed producer. */
    ww_pipeline_stop_workers(pipe);
    ww_bus_destroy(bus, cfg->shutdown_timeout_ms);
    ww_pipeline_destroy(pipe);
    ww_db_destroy(db);
    ww_http_stop(http);
    ww_info("main", "stopped", WW_INT("status", status));
    return status;
}

/* ---- replay / apply ------------------------------------------------------- */

typedef struct {
    bool is_apply;
    const char *topic;
    const char *file;
    const char *kind; /* "wallet", "invite" or NULL (from the topic) */
    bool dry_run;
    bool strict; /* apply: exit 1 when any line was rejected */
    bool check;  /* migrate: exit 3 when migrations are pending */
    int wait_s;  /* migrate: how long to wait for the database (0: 60 s) */
    ww_replay_config_t rc;
} batch_opts_t;

/* Parses one replay/apply flag at argv[*i]; false when it is not one. Sets
 * *bad with a message when it is one but its value is wrong. */
static bool batch_flag(batch_opts_t *o, int argc, char **argv, int *i, ww_error_t *bad) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int64_t ts;
#define NEEDS_VALUE()                                                                   \
    do {                                                                                \
        if (!v) {                                                                       \
            ww_error_set(bad, WW_ERR_CONFIG, 0, false, "%s: needs a value", a);         \
            return true;                                                                \
        }                                                                               \
        *i += 2;                                                                        \
    } while (0)
    if (strcmp(a, "--dry-run") == 0) {
        o->dry_run = true;
        ++*i;
    } else if (strcmp(a, "--strict") == 0 && o->is_apply) {
        o->strict = true;
        ++*i;
    } else if (strcmp(a, "--publish") == 0 && !o->is_apply) {
        NEEDS_VALUE();
        if (!ww_replay_parse_publish(v, &o->rc.publish))
            ww_error_set(bad, WW_ERR_CONFIG, 0, false,
                         "--publish: \"%.32s\" is not results, dead-letters, both or none", v);
    } else if (strcmp(a, "--from-beginning") == 0) {
        o->rc.from = WW_FROM_BEGINNING;
        ++*i;
    } else if (strcmp(a, "--topic") == 0) {
        NEEDS_VALUE();
        o->topic = v;
    } else if (strcmp(a, "--file") == 0) {
        NEEDS_VALUE();
        o->file = v;
    } else if (strcmp(a, "--kind") == 0) {
        NEEDS_VALUE();
        if (strcmp(v, "wallet") != 0 && strcmp(v, "invite") != 0)
            ww_error_set(bad, WW_ERR_CONFIG, 0, false, "--kind: \"%.32s\" is not wallet or invite", v);
        o->kind = v;
    } else if (strcmp(a, "--from-timestamp") == 0 || strcmp(a, "--to-timestamp") == 0) {
        NEEDS_VALUE();
        if (!ww_clock_parse_rfc3339(v, strlen(v), &ts)) {
            ww_error_set(bad, WW_ERR_CONFIG, 0, false, "%s: \"%.64s\" is not an RFC 3339 date-time",
                         a, v);
        } else if (a[2] == 'f') {
            o->rc.from = WW_FROM_TIMESTAMP;
            o->rc.from_ts_ms = ts;
        } else {
            o->rc.to = WW_TO_TIMESTAMP;
            o->rc.to_ts_ms = ts;
        }
    } else if (strcmp(a, "--from-offsets") == 0) {
        NEEDS_VALUE();
        if (ww_replay_parse_offsets(v, o->rc.from_offsets, bad)) o->rc.from = WW_FROM_OFFSETS;
    } else if (strcmp(a, "--to-offsets") == 0) {
        NEEDS_VALUE();
        if (ww_replay_parse_offsets(v, o->rc.to_offsets, bad)) o->rc.to = WW_TO_OFFSETS;
    } else if (strcmp(a, "--max-retry-ms") == 0) {
        NEEDS_VALUE();
        char *end;
        long n = strtol(v, &end, 10);
        if (*end || n < 0 || n > 86400000)
            ww_error_set(bad, WW_ERR_CONFIG, 0, false, "--max-retry-ms: \"%.32s\" is not 0..86400000", v);
        o->rc.max_retry_ms = (int32_t)n;
    } else {
        return false;
    }
#undef NEEDS_VALUE
    return true;
}

static int batch(const ww_config_t *cfg, batch_opts_t *o) {
    ww_error_t err;
    ww_error_clear(&err);
    bool wallet;
    if (o->kind) {
        wallet = strcmp(o->kind, "wallet") == 0;
    } else if (o->is_apply) {
        wallet = true;
    } else if (strcmp(o->topic, cfg->commands_topic) == 0 || strcmp(o->topic, cfg->dlq_topic) == 0) {
        wallet = true;
    } else if (strcmp(o->topic, cfg->invite_events_topic) == 0 ||
               strcmp(o->topic, cfg->invite_dlq_topic) == 0) {
        wallet = false;
    } else {
        fprintf(stderr, "wallet-worker: replay: topic \"%.64s\" is not a configured wallet or "
                "invite topic: say --kind wallet or --kind invite\n", o->topic);
        return 2;
    }
    int status = 1;
    ww_overlay_t *dry = NULL;
    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    dbo.pool_max = cfg->db_pool_max;
    ww_db_t *db = ww_db_new(cfg->mongodb_uri, &dbo, &err);
    if (!db) {
        fprintf(stderr, "wallet-worker: %s\n", err.message);
        return 2;
    }
    int fatal = 0;
    if (!prepare_db(cfg, db, o->rc.max_retry_ms, &fatal, &err)) {
        if (fatal == 2) {
            fprintf(stderr, "wallet-worker: %s\n", err.message);
            status = 2;
        } else if (!stop_requested) {
            fprintf(stderr, "wallet-worker: database unavailable: %s\n", err.message);
        }
        goto done;
    }

    char label[300];
    if (o->is_apply) {
        const char *base = strrchr(o->file, '/');
        snprintf(label, sizeof label, "file:%s", strcmp(o->file, "-") == 0 ? "stdin"
                                                  : base ? base + 1 : o->file);
    }
    /* a dry run's predictions "write" here, for the whole run (overlay.h) */
    dry = o->dry_run ? ww_overlay_new(0) : NULL;
    if (o->dry_run && !dry) {
        fprintf(stderr, "wallet-worker: out of memory\n");
        goto done;
    }
    ww_wallet_ctx_t wctx = {.db = db, .results_topic = cfg->results_topic,
                            .dlq_topic = cfg->dlq_topic,
                            .max_message_bytes = cfg->max_message_bytes, .dry_run = o->dry_run,
                            .dry = dry};
    ww_invite_ctx_t ictx = {.db = db, .results_topic = cfg->invite_results_topic,
                            .dlq_topic = cfg->invite_dlq_topic,
                            .max_message_bytes = cfg->max_message_bytes, .dry_run = o->dry_run,
                            .dry = dry};
    ww_replay_config_t *rc = &o->rc;
    ww_bus_config_t kafka;
    ww_bus_config_defaults(&kafka);
    kafka.security_protocol = cfg->kafka_security_protocol;
    kafka.sasl_mechanism = cfg->kafka_sasl_mechanism;
    kafka.sasl_username = cfg->kafka_sasl_username;
    kafka.sasl_password = cfg->kafka_sasl_password;
    kafka.ssl_ca_location = cfg->kafka_ssl_ca_location;
    rc->kafka = &kafka;
    rc->brokers = cfg->kafka_brokers;
    rc->topic = o->topic;
    rc->file = o->file;
    rc->dry_run = o->dry_run;
    rc->to_kafka = !o->is_apply;
    rc->workers = cfg->worker_threads;
    rc->max_line_bytes = cfg->max_message_bytes;
    rc->progress = isatty(STDERR_FILENO) || getenv("WW_PROGRESS") != NULL;
    rc->route.topic = o->is_apply ? label : o->topic;
    rc->route.dlq_topic = wallet ? cfg->dlq_topic : cfg->invite_dlq_topic;
    rc->route.handle = wallet ? ww_wallet_handle : ww_invite_handle;
    rc->route.handle_batch = wallet ? ww_wallet_handle_batch : ww_invite_handle_batch;
    rc->batch_max = cfg->batch_max;
    rc->route.ctx = wallet ? (void *)&wctx : (void *)&ictx;

    ww_replay_summary_t *sum = calloc(1, sizeof *sum);
    if (!sum) goto done;
    bool ok = ww_replay_run(rc, sum, &stop_requested, &err);
    if (!ok) fprintf(stderr, "wallet-worker: %s\n", err.message);
    if (ok) ww_replay_print_summary(rc, sum, o->is_apply ? stderr : stdout);
    status = ok && sum->not_processed == 0 && !stop_requested ? 0 : 1;
    if (status == 0 && o->strict && sum->rejected > 0) {
        fprintf(stderr, "wallet-worker: apply --strict: %llu line(s) rejected\n",
                (unsigned long long)sum->rejected);
        status = 1;
    }
    free(sum);
done:
    ww_overlay_destroy(dry);
    ww_db_destroy(db);
    return status;
}

/* ---- doctor ------------------------------------------------------------------ */

typedef struct {
    bool json;
    int marker_age_minutes;
} doctor_opts_t;

/* Parses one doctor flag at argv[*i]; false when it is not one. */
static bool doctor_flag(doctor_opts_t *o, int argc, char **argv, int *i, ww_error_t *bad) {
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        o->json = true;
        ++*i;
        return true;
    }
    if (strcmp(a, "--marker-age-minutes") != 0) return false;
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < 1 || n > 525600)
        ww_error_set(bad, WW_ERR_CONFIG, 0, false,
                     "--marker-age-minutes: \"%.32s\" is not 1..525600", v ? v : "");
    o->marker_age_minutes = (int)n;
    *i += v ? 2 : 1;
    return true;
}

/* `wallet-worker doctor`: 0 all well, 1 problems (or the database could not
 * be read), 2 a bad URI. */
static int doctor_cmd(const ww_config_t *cfg, const doctor_opts_t *o) {
    ww_error_t err;
    ww_error_clear(&err);
    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    dbo.pool_max = cfg->db_pool_max;
    ww_db_t *db = ww_db_new(cfg->mongodb_uri, &dbo, &err);
    if (!db) {
        fprintf(stderr, "wallet-worker: %s\n", err.message);
        return 2;
    }
    ww_doctor_report_t *r = calloc(1, sizeof *r);
    int status = 1;
    ww_doctor_options_t opts = {.marker_age_minutes = o->marker_age_minutes};
    if (!r) goto done;
    if (!ww_doctor_run(db, &opts, r, &err)) {
        fprintf(stderr, "wallet-worker: doctor: cannot read the database: %s\n", err.message);
        goto done;
    }
    if (o->json)
        ww_doctor_print_json(r, stdout);
    else
        ww_doctor_print_text(r, stdout);
    status = r->problems ? 1 : 0;
done:
    free(r);
    ww_db_destroy(db);
    return status;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("wallet-worker %s (librdkafka %s, libmongoc %s)\n", WW_VERSION,
                   ww_bus_library_version(), ww_db_driver_version());
            return 0;
        }
    }
    int i = 1;
    const char *command = "run";
    if (i < argc && argv[i][0] != '-') command = argv[i++];
    bool is_batch = strcmp(command, "replay") == 0 || strcmp(command, "apply") == 0;
#ifdef __GLIBC__
    /* replay and apply: a round's buffers (a 512-key $in and its reply, a
     * bulk, an insertMany) are a few hundred KiB, and glibc's trim threshold
     * (twice its self-adjusting mmap threshold) gave them back to the kernel
     * after a round and faulted them in again in the next: about a tenth of
     * replay's CPU. Keep them in the heap. Not for `run`: 16 MiB kept per
     * arena adds up against a container's memory limit. */
    if (is_batch) {
        mallopt(M_MMAP_THRESHOLD, 4 << 20);
        mallopt(M_TRIM_THRESHOLD, 16 << 20);
    }
#endif
    bool is_migrate = strcmp(command, "migrate") == 0;
    bool is_doctor = strcmp(command, "doctor") == 0;
    if (strcmp(command, "run") != 0 && !is_batch && !is_migrate && !is_doctor) {
        fprintf(stderr, "wallet-worker: unknown command \"%.64s\" (see --help)\n", command);
        return 2;
    }
    batch_opts_t *bo = calloc(1, sizeof *bo);
    if (!bo) return 1;
    ww_replay_config_defaults(&bo->rc);
    bo->is_apply = strcmp(command, "apply") == 0;

    ww_db_global_init(); /* before the URI check: libmongoc parses it */
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    doctor_opts_t doc_opts = {.marker_age_minutes = WW_DOCTOR_DEFAULT_MARKER_AGE_MINUTES};
    /* migrate and doctor read the database settings only: a bad HTTP_ADDR or
     * Kafka setting in a shared environment must not stop them */
    ww_config_scope_t scope = is_migrate || is_doctor ? WW_CONFIG_DATABASE_TOOL : WW_CONFIG_ALL;
    bool cfg_ok = ww_config_from_env_scoped(&cfg, scope, &err);
    while (cfg_ok && i < argc) {
        int before = i;
        cfg_ok = ww_config_from_args(&cfg, argc, argv, &i, &err);
        if (!cfg_ok || i >= argc || i != before) continue;
        if (is_migrate && strcmp(argv[i], "--dry-run") == 0) {
            bo->dry_run = true;
            i++;
            continue;
        }
        if (is_doctor && doctor_flag(&doc_opts, argc, argv, &i, &err)) {
            cfg_ok = err.domain == WW_ERR_NONE;
            continue;
        }
        if (is_migrate && strcmp(argv[i], "--check") == 0) {
            bo->check = true;
            i++;
            continue;
        }
        if (is_migrate && strcmp(argv[i], "--wait-s") == 0) {
            const char *v = i + 1 < argc ? argv[i + 1] : "";
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > 86400) {
                ww_error_set(&err, WW_ERR_CONFIG, 0, false, "--wait-s: \"%.32s\" is not 1..86400", v);
                cfg_ok = false;
            }
            bo->wait_s = (int)n;
            i += 2;
            continue;
        }
        if (is_batch && batch_flag(bo, argc, argv, &i, &err)) {
            cfg_ok = err.domain == WW_ERR_NONE;
            continue;
        }
        ww_error_set(&err, WW_ERR_CONFIG, 0, false, "unknown option \"%.64s\" (see --help)", argv[i]);
        cfg_ok = false;
    }
    if (cfg_ok && strcmp(command, "replay") == 0 && !bo->topic)
        ww_error_set(&err, WW_ERR_CONFIG, 0, false, "replay: --topic is required"), cfg_ok = false;
    if (cfg_ok && bo->is_apply && !bo->file)
        ww_error_set(&err, WW_ERR_CONFIG, 0, false, "apply: --file is required"), cfg_ok = false;
    ww_http_listen_addr_t listen_addr;
    if (cfg_ok && ww_config_validate_scoped(&cfg, scope, &err) &&
        ww_db_check_uri(cfg.mongodb_uri, &err) && scope == WW_CONFIG_ALL &&
        !ww_http_parse_listen(cfg.http_addr, &listen_addr, &err)) {
        char why[WW_ERROR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err.message);
        ww_error_set(&err, WW_ERR_CONFIG, 0, false, "HTTP_ADDR: %s", why);
        cfg_ok = false;
    }
    if (cfg_ok && err.domain == WW_ERR_NONE && !is_migrate && !is_doctor) {
        /* Kafka settings librdkafka refuses: say so now, before any wait */
        ww_bus_config_t bc;
        ww_bus_config_defaults(&bc);
        bc.brokers = cfg.kafka_brokers;
        bc.security_protocol = cfg.kafka_security_protocol;
        bc.sasl_mechanism = cfg.kafka_sasl_mechanism;
        bc.sasl_username = cfg.kafka_sasl_username;
        bc.sasl_password = cfg.kafka_sasl_password;
        bc.ssl_ca_location = cfg.kafka_ssl_ca_location;
        ww_log_level_t level = cfg.log_level;
        ww_log_set_level(WW_LOG_OFF); /* the probe client has nothing to say */
        if (!ww_bus_check_config(&bc, &err)) cfg_ok = false;
        ww_log_set_level(level);
    }
    if (!cfg_ok || err.domain != WW_ERR_NONE) {
        fprintf(stderr, "wallet-worker: %s\n", err.message);
        free(bo);
        ww_db_global_cleanup();
        return 2;
    }
    ww_log_set_level(cfg.log_level);
    ww_log_set_format(cfg.log_format);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status;
    if (is_migrate) {
        if (cfg.log_level == WW_LOG_INFO) ww_log_set_level(WW_LOG_WARN);
        status = migrate_cmd(&cfg, bo->dry_run, bo->check, bo->wait_s > 0 ? bo->wait_s : 60);
    } else if (is_doctor) {
        if (cfg.log_level == WW_LOG_INFO) ww_log_set_level(WW_LOG_WARN); /* the report says it */
        status = doctor_cmd(&cfg, &doc_opts);
    } else if (is_batch) {
        if (cfg.log_level == WW_LOG_INFO) ww_log_set_level(WW_LOG_WARN); /* the summary says it */
        status = batch(&cfg, bo);
    } else {
        ww_info("main", "starting", WW_STR("version", WW_VERSION), WW_INT("pid", getpid()));
        ww_config_log(&cfg);
        status = run(&cfg);
    }
    free(bo);
    ww_db_global_cleanup();
    return status;
}
