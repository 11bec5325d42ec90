/* main.c: the wallet-worker executable. Parses argv, wires the modules
 * together, owns the start/stop order and the signals. No logic lives here.
 *
 * Start: config -> log level -> metrics -> HTTP sidecar (health answers from
 * the first second) -> MongoDB pool (connecting in the background) -> indexes
 * -> pipeline workers -> Kafka consumer/producer -> consume loop.
 * Stop (SIGTERM/SIGINT): leave the loop -> drain in-flight work (bounded) and
 * commit -> leave the group -> flush results -> stop workers -> close MongoDB
 * -> stop the sidecar. Reverse order of creation. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "health.h"
#include "http.h"
#include "invite.h" /* invites */
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
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
            "       wallet-worker --help | --version\n\n"
            "Commands:\n"
            "  run        consume, apply, publish results (the default)\n\n"
            "Options (each also read from the environment variable shown; flags win):\n",
            WW_VERSION);
    ww_config_print_help(out);
    fprintf(out,
            "\nExit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a runtime failure,\n"
            "2 on invalid configuration. Health: GET /api/health, /livez, /readyz, /metrics\n"
            "on HTTP_ADDR. Documentation: docs/configuration.md, docs/operations.md.\n");
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
    hc.version = WW_VERSION;
    http = ww_http_start(&hc, &err);
    if (!http) {
        ww_err("main", "cannot start the HTTP sidecar on %s: %s", cfg->http_addr, err.message);
        goto done;
    }

    ww_db_options_t dbo;
    ww_db_options_defaults(&dbo);
    dbo.pool_max = cfg->db_pool_max;
    db = ww_db_new(cfg->mongodb_uri, &dbo, &err);
    if (!db) {
        ww_err("main", "%s", err.message);
        status = 2;
        goto done;
    }
    ww_info("main", "database=%s maxPoolSize=%d serverSelectionTimeoutMS=%d socketTimeoutMS=%d",
            ww_db_name(db), ww_db_pool_max(db), ww_db_server_selection_ms(db),
            ww_db_socket_timeout_ms(db));

    /* The unique ledger index is what makes the protocol exactly-once: wait
     * for the database rather than run without it. */
    for (int attempt = 0; !stop_requested; attempt++) {
        if (ww_wallet_ensure_indexes(db, &err) &&
            ww_invite_ensure_indexes(db, &err) /* invites */)
            break;
        if (attempt == 0 || attempt % 10 == 0)
            ww_warn("main", "waiting for the database to create indexes: %s", err.message);
        ww_health_progress(ww_clock_mono_ms());
        ww_clock_sleep_ms(1000, &stop_requested);
    }
    if (stop_requested) {
        status = 0;
        goto done;
    }
    bool txn = false;
    if (ww_db_transactions_supported(db, &txn, &err)) {
        ww_db_set_use_transactions(db, txn);
        if (txn)
            ww_info("main", "transactions available (replica set or mongos): wallet update and "
                    "ledger entry commit together, write concern majority");
        else
            ww_info("main", "transactions not available (standalone or MongoDB-compatible "
                    "server): single-document protocol only");
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
    ww_route_t routes[] = {
        {.topic = cfg->commands_topic, .dlq_topic = cfg->dlq_topic, .handle = ww_wallet_handle,
         .ctx = &wallet},
        {.topic = cfg->invite_events_topic, .dlq_topic = cfg->invite_dlq_topic, /* invites */
         .handle = ww_invite_handle, .ctx = &invite},
    };
    ww_pipeline_config_t pc;
    ww_pipeline_config_defaults(&pc);
    pc.workers = cfg->worker_threads;
    pc.shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    pipe = ww_pipeline_new(&pc, routes, sizeof routes / sizeof routes[0], &err);
    if (!pipe) {
        ww_err("main", "%s", err.message);
        goto done;
    }

    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = cfg->kafka_brokers;
    bc.group_id = cfg->kafka_group_id;
    ww_bus_hooks_t hooks = ww_pipeline_bus_hooks(pipe);
    bus = ww_bus_new(&bc, &hooks, &err);
    if (!bus) {
        ww_err("main", "%s", err.message);
        status = err.domain == WW_ERR_CONFIG ? 2 : 1;
        goto done;
    }
    ww_pipeline_attach(pipe, bus);
    const char *topics[] = {cfg->commands_topic, cfg->invite_events_topic}; /* invites */
    if (!ww_bus_subscribe(bus, topics, sizeof topics / sizeof topics[0], &err)) {
        ww_err("main", "%s", err.message);
        goto done;
    }
    ww_health_set_running(true);
    ww_info("main", "running group=%s topics=%s,%s workers=%d", cfg->kafka_group_id,
            cfg->commands_topic, cfg->invite_events_topic, cfg->worker_threads);

    /* invites: the sweeper runs on its own thread, never on the consume path */
    if (cfg->invite_sweep_interval_ms > 0) {
        sweeper = ww_invite_sweeper_start(db, cfg->invite_sweep_interval_ms,
                                          cfg->invite_sweep_batch, &err);
        if (!sweeper) {
            ww_err("main", "%s", err.message);
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
    ww_health_set_running(false);
    ww_invite_sweeper_stop(sweeper); /* invites: before the pipeline and the pool go */
    ww_bus_destroy(bus, cfg->shutdown_timeout_ms);
    ww_pipeline_destroy(pipe);
    ww_db_destroy(db);
    ww_http_stop(http);
    ww_info("main", "stopped status=%d", status);
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
    if (strcmp(command, "run") != 0) {
        fprintf(stderr, "wallet-worker: unknown command \"%.64s\" (see --help)\n", command);
        return 2;
    }

    ww_db_global_init(); /* before the URI check: libmongoc parses it */
    ww_config_t cfg;
    ww_error_t err;
    ww_error_clear(&err);
    ww_config_defaults(&cfg);
    if (!ww_config_from_env(&cfg, &err) || !ww_config_from_args(&cfg, argc, argv, &i, &err) ||
        !ww_config_validate(&cfg, &err) || !ww_db_check_uri(cfg.mongodb_uri, &err)) {
        fprintf(stderr, "wallet-worker: %s\n", err.message);
        ww_db_global_cleanup();
        return 2;
    }
    if (i < argc) {
        fprintf(stderr, "wallet-worker: unknown option \"%.64s\" (see --help)\n", argv[i]);
        ww_db_global_cleanup();
        return 2;
    }
    ww_log_set_level(cfg.log_level);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ww_info("main", "wallet-worker %s starting pid=%d", WW_VERSION, (int)getpid());
    ww_config_log(&cfg);
    int status = run(&cfg);
    ww_db_global_cleanup();
    return status;
}
