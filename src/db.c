/* db.c: see db.h. */
#include "db.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dbauth.h"
#include "dbmon.h"
#include "health.h"
#include "log.h"
#include "metrics.h"

struct ww_db {
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char *db_name;
    char redacted_uri[512];

    /* connection monitoring, written by libmongoc's monitor threads */
    pthread_mutex_t mon_lock;
    ww_dbmon_t mon;
    bool closing; /* ww_db_destroy: the pool's own teardown is not an outage */ /* which lines to log (dbmon.h) */
    const char *topology; /* libmongoc's static name of the last topology type */
    /* A flapping connection (every failed operation resets it, the next
     * heartbeat restores it) must not flood the log: at most
     * TRANSITION_BURST transition lines per TRANSITION_WINDOW_MS, then one
     * "suppressed" line; health keeps tracking every transition. */
    bool use_transactions;
    int64_t window_start;
    int window_lines;
    int suppressed;
};

#define TRANSITION_BURST 6
#define TRANSITION_WINDOW_MS 60000

void ww_db_options_defaults(ww_db_options_t *opts) {
    opts->pool_max = 50;
    opts->server_selection_ms = 5000;
    opts->socket_timeout_ms = 45000;
    opts->heartbeat_ms = 5000;
}

/* ---- error translation ------------------------------------------------- */

/* Server error codes that mean "the deployment is busy or changing", not
 * "this operation is wrong": retry them with backoff. */
static bool retryable_server_code(uint32_t code) {
    switch (code) {
    case 6:     /* HostUnreachable */
    case 7:     /* HostNotFound */
    case 89:    /* NetworkTimeout */
    case 91:    /* ShutdownInProgress */
    case 112:   /* WriteConflict */
    case 189:   /* PrimarySteppedDown */
    case 262:   /* ExceededTimeLimit */
    case 9001:  /* SocketException */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 13436: /* NotPrimaryOrSecondary */
    case 64:    /* WriteConcernFailed (wtimeout) */
    case 50:    /* MaxTimeMSExpired */
        return true;
    default: return false;
    }
}

/* ---- authentication failures (dbauth.h) ---------------------------------
 * Process-global, like health.h: translate() sees every failure but not the
 * handle. op_failed tells op_end() whether its operation succeeded. */
static pthread_mutex_t auth_lock = PTHREAD_MUTEX_INITIALIZER;
static ww_dbauth_t auth;
static atomic_bool auth_gave_up;
static _Thread_local bool op_failed;

bool ww_db_auth_gave_up(void) { return atomic_load(&auth_gave_up); }

static bool is_auth_error(const bson_error_t *be) {
    return (be->domain == MONGOC_ERROR_CLIENT && be->code == MONGOC_ERROR_CLIENT_AUTHENTICATE) ||
           (be->domain == MONGOC_ERROR_SERVER && be->code == 18 /* AuthenticationFailed */);
}

static void auth_failed(const char *reason) {
    ww_metrics_inc_db_auth_failure();
    ww_health_set_db_auth_failing(true);
    int64_t now = ww_clock_mono_ms();
    pthread_mutex_lock(&auth_lock);
    unsigned act = ww_dbauth_failure(&auth, now);
    long long for_s = (long long)((now - auth.failing_since) / 1000);
    unsigned long long n = (unsigned long long)auth.failures;
    pthread_mutex_unlock(&auth_lock);
    bool give_up = (act & WW_DBAUTH_EXIT) && !atomic_exchange(&auth_gave_up, true);
    if (act & WW_DBAUTH_LOG)
        ww_err("db",
               give_up ? "authentication failed: the server refuses the credentials in MONGODB_URI "
                         "(user name, password, authSource); giving up: exit 1 (DB_AUTH_FAIL_EXIT_S)"
                       : "authentication failed: the server refuses the credentials in MONGODB_URI "
                         "(user name, password, authSource)",
               WW_STR("reason", reason), WW_INT("failing_for_s", for_s), WW_UINT("failures", n));
    if (give_up) kill(getpid(), SIGTERM); /* the orderly stop; main exits 1 */
}

static void auth_ok(void) {
    if (!ww_health_db_auth_failing()) return;
    pthread_mutex_lock(&auth_lock);
    bool ended = ww_dbauth_success(&auth);
    pthread_mutex_unlock(&auth_lock);
    if (ended) {
        ww_health_set_db_auth_failing(false);
        ww_info("db", "authenticated: the server accepts the credentials again");
    }
}

static void translate(const bson_error_t *be, const bson_t *reply, const char *what,
                      ww_error_t *error) {
    bool retry = false;
    op_failed = true;
    if (is_auth_error(be)) auth_failed(be->message);
    switch (be->domain) {
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_CLIENT: /* e.g. "pool exhausted" or client-side timeouts */
        retry = true;
        break;
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_WRITE_CONCERN:
    case MONGOC_ERROR_COLLECTION:
    case MONGOC_ERROR_QUERY:
    case MONGOC_ERROR_COMMAND:
        retry = retryable_server_code(be->code);
        break;
    default: break;
    }
    if (reply && (mongoc_error_has_label(reply, "TransientTransactionError") ||
                  mongoc_error_has_label(reply, "RetryableWriteError")))
        retry = true;
    ww_error_set(error, WW_ERR_DB, (int32_t)be->code, retry, "%s: %s", what, be->message);
}

/* ---- monitoring --------------------------------------------------------- */

/* Under mon_lock. True when a transition line may be written now. */
static bool transition_log_allowed(ww_db_t *db) {
    int64_t now = ww_clock_mono_ms();
    if (now - db->window_start >= TRANSITION_WINDOW_MS) {
        if (db->suppressed)
            ww_warn("db", "connection flapping: state changes not logged", WW_INT("suppressed", db->suppressed),
                    WW_INT("window_s", TRANSITION_WINDOW_MS / 1000));
        db->window_start = now;
        db->window_lines = 0;
        db->suppressed = 0;
    }
    if (db->window_lines < TRANSITION_BURST) {
        db->window_lines++;
        return true;
    }
    if (db->suppressed++ == 0)
        ww_warn("db", "connection flapping: further state changes are not logged for a while",
                WW_INT("window_s", TRANSITION_WINDOW_MS / 1000));
    return false;
}

/* Under mon_lock: writes the line dbmon decided (rate-limited). */
static void log_transition(ww_db_t *db, ww_dbmon_line_t line, const char *topology) {
    if (line == WW_DBMON_NONE || !transition_log_allowed(db)) return;
    switch (line) {
    case WW_DBMON_CONNECTED:
        ww_info("db", "connected", WW_STR("uri", db->redacted_uri), WW_STR("topology", topology));
        break;
    case WW_DBMON_RECONNECTED:
        ww_info("db", "reconnected", WW_STR("uri", db->redacted_uri), WW_STR("topology", topology));
        break;
    case WW_DBMON_DISCONNECTED:
        ww_warn("db", "disconnected (attempting reconnection)", WW_STR("uri", db->redacted_uri));
        break;
    default: break;
    }
}

static void on_topology_changed(const mongoc_apm_topology_changed_t *event) {
    ww_db_t *db = mongoc_apm_topology_changed_get_context(event);
    const mongoc_topology_description_t *td =
        mongoc_apm_topology_changed_get_new_description(event);
    bool writable = mongoc_topology_description_has_writable_server(td);

    pthread_mutex_lock(&db->mon_lock);
    bool was_writable = db->mon.writable;
    db->topology = mongoc_topology_description_type(td);
    if (!db->closing)
        log_transition(db, ww_dbmon_topology(&db->mon, writable, ww_clock_mono_ms()),
                       db->topology);
    /* health follows every transition at once; only the log waits for an
     * outage to be over (dbmon.h) */
    if (writable && !was_writable) ww_health_set_db_state(WW_DB_CONNECTED);
    if (!writable && was_writable) ww_health_set_db_state(WW_DB_DISCONNECTED);
    pthread_mutex_unlock(&db->mon_lock);
}

/* Every command sent to the server, by name: wallet_worker_db_round_trips_total. */
static void on_command_started(const mongoc_apm_command_started_t *event) {
    ww_metrics_inc_db_round_trip(mongoc_apm_command_started_get_command_name(event));
}

static void on_heartbeat_succeeded(const mongoc_apm_server_heartbeat_succeeded_t *event) {
    ww_db_t *db = mongoc_apm_server_heartbeat_succeeded_get_context(event);
    pthread_mutex_lock(&db->mon_lock);
    log_transition(db, ww_dbmon_heartbeat(&db->mon, true, ww_clock_mono_ms()),
                   db->topology ? db->topology : "Unknown");
    pthread_mutex_unlock(&db->mon_lock);
}

static void on_heartbeat_failed(const mongoc_apm_server_heartbeat_failed_t *event) {
    ww_db_t *db = mongoc_apm_server_heartbeat_failed_get_context(event);
    bson_error_t be;
    mongoc_apm_server_heartbeat_failed_get_error(event, &be);
    const mongoc_host_list_t *host = mongoc_apm_server_heartbeat_failed_get_host(event);

    pthread_mutex_lock(&db->mon_lock);
    if (ww_dbmon_heartbeat(&db->mon, false, ww_clock_mono_ms()) == WW_DBMON_ERROR)
        ww_err("db", db->mon.ever_connected ? "error" : "error (still connecting)",
               WW_STR("host", host ? host->host_and_port : "?"), WW_STR("reason", be.message));
    /* Before the first connection Mongoose reports "connecting" (2); once a
     * connection attempt has failed it reports "disconnected" (0). */
    if (!db->mon.writable) ww_health_set_db_state(WW_DB_DISCONNECTED);
    pthread_mutex_unlock(&db->mon_lock);
}

/* Set while parse_uri parses. */
static _Thread_local bool quiet_uri_check;

static void route_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                             void *data) {
    (void)data;
    if (quiet_uri_check) return;
    ww_log_level_t l;
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL: l = WW_LOG_ERROR; break;
    case MONGOC_LOG_LEVEL_WARNING: l = WW_LOG_WARN; break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO: l = WW_LOG_INFO; break;
    default: return; /* debug/trace: far too chatty, and may carry URIs */
    }
    /* Servers without sessions (FerretDB) refuse the endSessions sent at
     * shutdown: expected, not worth a warning. */
    if (strstr(message, "endSessions")) l = WW_LOG_DEBUG;
    /* no shared memory for its performance counters (sandboxes, sanitizers):
     * harmless, and not worth a line before a configuration error */
    if (strstr(message, "Falling back to malloc for counters")) l = WW_LOG_DEBUG;
    WW_LOG(l, "mongoc", message, WW_STR("domain", domain));
}

void ww_db_global_init(void) {
    /* the handler first: mongoc_init itself may speak */
    mongoc_log_set_handler(route_mongoc_log, NULL);
    mongoc_init();
}

void ww_db_global_cleanup(void) { mongoc_cleanup(); }

const char *ww_db_driver_version(void) { return mongoc_get_version(); }

/* ---- URI display --------------------------------------------------------
 * The one way a MongoDB URI reaches a log line or a message: rebuilt from
 * the parsed mongoc_uri_t, never copied from the text. Whatever was written
 * is only shown if it is known to be harmless: the password and every string
 * option value not on the list below become "***"; a host or database name
 * with a character no host or database has (a password written unescaped,
 * "user:p@ss@host", parses as host "ss@host") becomes "***"; an unparseable
 * URI is not shown at all. */

typedef struct {
    char *out;
    size_t cap, len; /* cap > 0; out[len] == '\0' */
} sbuf_t;

static void put(sbuf_t *b, const char *s) {
    for (; *s && b->len + 1 < b->cap; s++) b->out[b->len++] = *s;
    b->out[b->len] = '\0';
}

static bool all_in(const char *s, const char *extra) {
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(extra, *s)))
            return false;
    return true;
}

/* s when every character is in [A-Za-z0-9] or extra, else "***". */
static void put_checked(sbuf_t *b, const char *s, const char *extra) { put(b, all_in(s, extra) ? s : "***"); }

/* String options whose values are settings, not secrets (lower case, as
 * libmongoc keeps them). Numbers and booleans are always shown. */
static bool shown_string_option(const char *key) {
    static const char *const keys[] = {"appname", "replicaset", "readpreference", "w", "authsource",
                                       "authmechanism", "tlscafile", "tlscertificatekeyfile",
                                       "compressors", "readconcernlevel", "srvservicename"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(key, keys[i]) == 0) return true;
    return false;
}

static void put_options(sbuf_t *b, const bson_t *doc, char *sep) {
    bson_iter_t it;
    if (!doc || !bson_iter_init(&it, doc)) return;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        char num[32];
        const char *value = "***";
        if (BSON_ITER_HOLDS_BOOL(&it)) value = bson_iter_bool(&it) ? "true" : "false";
        else if (BSON_ITER_HOLDS_INT32(&it)) value = (snprintf(num, sizeof num, "%d", bson_iter_int32(&it)), num);
        else if (BSON_ITER_HOLDS_UTF8(&it) && shown_string_option(key)) value = bson_iter_utf8(&it, NULL);
        /* authMechanismProperties (a document) stays "***" whole */
        put(b, sep);
        *sep = '&';
        put_checked(b, key, "_");
        put(b, "=");
        put_checked(b, value, "-._,:/ ");
    }
}

static void redact_parsed(const mongoc_uri_t *uri, sbuf_t *b) {
    const char *srv = mongoc_uri_get_srv_hostname(uri);
    put(b, srv ? "mongodb+srv://" : "mongodb://");
    const char *user = mongoc_uri_get_username(uri);
    if (user && *user) {
        put_checked(b, user, "-._");
        put(b, mongoc_uri_get_password(uri) ? ":***@" : "@");
    }
    if (srv) put_checked(b, srv, "-.");
    for (const mongoc_host_list_t *h = srv ? NULL : mongoc_uri_get_hosts(uri); h; h = h->next) {
        put_checked(b, h->host_and_port, "-._:[]%/");
        if (h->next) put(b, ",");
    }
    put(b, "/");
    const char *db = mongoc_uri_get_database(uri);
    if (db) put_checked(b, db, "-_");
    char sep[2] = "?";
    put_options(b, mongoc_uri_get_options(uri), sep);
    put_options(b, mongoc_uri_get_credentials(uri), sep);
}

/* Parses with libmongoc's log muted: its warnings may quote option values. */
static mongoc_uri_t *parse_uri(const char *uri_string, bson_error_t *be) {
    quiet_uri_check = true;
    mongoc_uri_t *uri = uri_string ? mongoc_uri_new_with_error(uri_string, be) : NULL;
    quiet_uri_check = false;
    /* libmongoc takes "u:p@ss@host" as host "ss@host": a password with an
     * unescaped '@', which would then be in every connection error line. */
    for (const mongoc_host_list_t *h = uri ? mongoc_uri_get_hosts(uri) : NULL; h; h = h->next)
        if (strchr(h->host_and_port, '@')) {
            mongoc_uri_destroy(uri);
            return NULL;
        }
    return uri;
}

void ww_db_redact_uri(const char *uri_string, char *out, size_t outlen) {
    if (outlen == 0) return;
    sbuf_t b = {out, outlen, 0};
    out[0] = '\0';
    bson_error_t be;
    mongoc_uri_t *uri = parse_uri(uri_string, &be);
    if (!uri) {
        put(&b, "(not a valid MongoDB URI, not shown)");
        return;
    }
    redact_parsed(uri, &b);
    mongoc_uri_destroy(uri);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void default_int(mongoc_uri_t *uri, const char *key, int32_t value) {
    if (!mongoc_uri_has_option(uri, key)) mongoc_uri_set_option_as_int32(uri, key, value);
}

bool ww_db_check_uri(const char *uri_string, ww_error_t *error) {
    bson_error_t be;
    mongoc_uri_t *uri = parse_uri(uri_string, &be);
    if (!uri) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "MONGODB_URI: not a valid MongoDB URI (percent-encode "
                     "'@', ':', '/' and '%%' in the user name and password)");
        return false;
    }
    mongoc_uri_destroy(uri);
    return true;
}

ww_db_t *ww_db_new(const char *uri_string, const ww_db_options_t *opts, ww_error_t *error) {
    ww_db_options_t defaults;
    if (!opts) {
        ww_db_options_defaults(&defaults);
        opts = &defaults;
    }
    bson_error_t be;
    mongoc_uri_t *uri = parse_uri(uri_string, &be);
    if (!uri) {
        /* be.message may quote the URI; never echo it (it may hold a password) */
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "MONGODB_URI: not a valid MongoDB URI (percent-encode "
                     "'@', ':', '/' and '%%' in the user name and password)");
        return NULL;
    }
    mongoc_uri_t *as_written = mongoc_uri_copy(uri);
    default_int(uri, MONGOC_URI_MAXPOOLSIZE, opts->pool_max);
    default_int(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, opts->server_selection_ms);
    default_int(uri, MONGOC_URI_SOCKETTIMEOUTMS, opts->socket_timeout_ms);
    default_int(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, opts->heartbeat_ms);
    if (!mongoc_uri_get_option_as_utf8(uri, MONGOC_URI_APPNAME, NULL))
        mongoc_uri_set_appname(uri, "wallet-worker");

    ww_db_t *db = bson_malloc0(sizeof *db);
    db->uri = uri;
    const char *name = mongoc_uri_get_database(uri);
    db->db_name = bson_strdup(name && *name ? name : "wallet");
    /* as written, without the defaults added above */
    sbuf_t shown = {db->redacted_uri, sizeof db->redacted_uri, 0};
    redact_parsed(as_written, &shown);
    mongoc_uri_destroy(as_written);
    pthread_mutex_init(&db->mon_lock, NULL);
    /* an outage ends after this long writable and a good heartbeat (dbmon.h) */
    int32_t hb = mongoc_uri_get_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 10000);
    ww_dbmon_init(&db->mon, hb < 3000 ? hb : 3000);
    ww_health_set_db_state(WW_DB_CONNECTING);
    pthread_mutex_lock(&auth_lock);
    ww_dbauth_init(&auth, (int64_t)opts->auth_fail_exit_s * 1000, 0);
    pthread_mutex_unlock(&auth_lock);

    db->window_start = ww_clock_mono_ms();
    db->pool = mongoc_client_pool_new_with_error(uri, &be);
    if (!db->pool) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "MONGODB_URI: %s", be.message);
        ww_db_destroy(db);
        return NULL;
    }
    mongoc_client_pool_set_error_api(db->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_apm_callbacks_t *cbs = mongoc_apm_callbacks_new();
    mongoc_apm_set_topology_changed_cb(cbs, on_topology_changed);
    mongoc_apm_set_server_heartbeat_failed_cb(cbs, on_heartbeat_failed);
    mongoc_apm_set_server_heartbeat_succeeded_cb(cbs, on_heartbeat_succeeded);
    mongoc_apm_set_command_started_cb(cbs, on_command_started);
    mongoc_client_pool_set_apm_callbacks(db->pool, cbs, db);
    mongoc_apm_callbacks_destroy(cbs);

    /* The pool starts its monitor threads on the first pop: do it now so the
     * health state moves without waiting for the first command. */
    mongoc_client_t *c = mongoc_client_pool_pop(db->pool);
    mongoc_client_pool_push(db->pool, c);
    return db;
}

void ww_db_destroy(ww_db_t *db) {
    if (!db) return;
    if (db->pool) {
        /* destroying the pool removes its server from the topology: say
         * nothing about it (it would read as an outage: one `disconnected`
         * line at every shutdown that comes soon after a reconnection) */
        pthread_mutex_lock(&db->mon_lock);
        db->closing = true;
        pthread_mutex_unlock(&db->mon_lock);
        ww_health_set_db_state(WW_DB_DISCONNECTING);
        mongoc_client_pool_destroy(db->pool);
        ww_health_set_db_state(WW_DB_DISCONNECTED);
    }
    mongoc_uri_destroy(db->uri);
    pthread_mutex_destroy(&db->mon_lock);
    bson_free(db->db_name);
    bson_free(db);
}

const char *ww_db_name(const ww_db_t *db) { return db->db_name; }
void ww_db_set_use_transactions(ww_db_t *db, bool use) { db->use_transactions = use; }
bool ww_db_use_transactions(const ww_db_t *db) { return db->use_transactions; }
int32_t ww_db_pool_max(const ww_db_t *db) {
    return mongoc_uri_get_option_as_int32(db->uri, MONGOC_URI_MAXPOOLSIZE, 100);
}
int32_t ww_db_server_selection_ms(const ww_db_t *db) {
    return mongoc_uri_get_option_as_int32(db->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 30000);
}
int32_t ww_db_socket_timeout_ms(const ww_db_t *db) {
    return mongoc_uri_get_option_as_int32(db->uri, MONGOC_URI_SOCKETTIMEOUTMS, 300000);
}

/* ---- operations --------------------------------------------------------- */

typedef struct {
    ww_db_t *db;
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    const char *op;
    int64_t started_us;
} op_t;

static void op_begin(op_t *o, ww_db_t *db, const char *collection, const char *op) {
    o->db = db;
    o->op = op;
    o->client = mongoc_client_pool_pop(db->pool);
    o->coll = collection ? mongoc_client_get_collection(o->client, db->db_name, collection) : NULL;
    o->started_us = bson_get_monotonic_time();
    op_failed = false;
}

static void op_end(op_t *o) {
    double secs = (double)(bson_get_monotonic_time() - o->started_us) / 1e6;
    ww_metrics_observe_db(o->op, secs);
    if (!op_failed) auth_ok();
    if (o->coll) mongoc_collection_destroy(o->coll);
    mongoc_client_pool_push(o->db->pool, o->client);
}

bool ww_db_ping(ww_db_t *db, ww_error_t *error) {
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    bool ok = ww_db_command(db, &cmd, &reply, error);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

bool ww_db_transactions_supported(ww_db_t *db, bool *supported, const char **why,
                                  ww_error_t *error) {
    *supported = false;
    *why = "no answer from the server";
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    bool ok = ww_db_command(db, &cmd, &reply, error);
    if (!ok && !(error && error->retryable)) {
        /* servers that predate `hello` (and mongo-java-server) know isMaster */
        bson_destroy(&reply);
        bson_reinit(&cmd);
        BSON_APPEND_INT32(&cmd, "isMaster", 1);
        ok = ww_db_command(db, &cmd, &reply, error);
    }
    if (ok) {
        bson_iter_t it;
        bool rs = bson_iter_init_find(&it, &reply, "setName") && BSON_ITER_HOLDS_UTF8(&it);
        bool mongos = bson_iter_init_find(&it, &reply, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
                      strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0;
        bool sessions = bson_iter_init_find(&it, &reply, "logicalSessionTimeoutMinutes") &&
                        BSON_ITER_HOLDS_NUMBER(&it);
        int64_t wire = bson_iter_init_find(&it, &reply, "maxWireVersion") &&
                               BSON_ITER_HOLDS_NUMBER(&it)
                           ? bson_iter_as_int64(&it)
                           : 0;
        /* transactions: replica sets from MongoDB 4.0 (wire 7), mongos from 4.2 (wire 8) */
        if (!rs && !mongos)
            *why = "the server is not a replica-set member or mongos";
        else if (!sessions)
            *why = "the server does not support sessions";
        else if (wire < (mongos ? 8 : 7))
            *why = "the server is older than MongoDB 4.0 (replica set) or 4.2 (mongos)";
        else {
            *supported = true;
            *why = rs ? "replica set" : "mongos";
        }
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

bool ww_db_command(ww_db_t *db, const bson_t *command, bson_t *reply, ww_error_t *error) {
    op_t o;
    op_begin(&o, db, NULL, "command");
    bson_error_t be;
    bool ok = mongoc_client_write_command_with_opts(o.client, db->db_name, command, NULL, reply,
                                                    &be);
    if (!ok) translate(&be, reply, "command", error);
    op_end(&o);
    return ok;
}

bool ww_db_find_one(ww_db_t *db, const char *collection, const bson_t *filter,
                    const bson_t *opts, bson_t *out, bool *found, ww_error_t *error) {
    *found = false;
    bson_t fopts = BSON_INITIALIZER;
    if (opts) bson_concat(&fopts, opts);
    BSON_APPEND_INT64(&fopts, "limit", 1);
    BSON_APPEND_BOOL(&fopts, "singleBatch", true);
    op_t o;
    op_begin(&o, db, collection, "find");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(o.coll, filter, &fopts, NULL);
    const bson_t *doc;
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out);
        *found = true;
    }
    bson_error_t be;
    const bson_t *reply = NULL;
    bool ok = !mongoc_cursor_error_document(cur, &be, &reply);
    if (!ok) {
        translate(&be, reply, "find", error);
        if (*found) {
            bson_destroy(out);
            *found = false;
        }
    }
    mongoc_cursor_destroy(cur);
    op_end(&o);
    bson_destroy(&fopts);
    return ok;
}

bool ww_db_find(ww_db_t *db, const char *collection, const bson_t *filter, const bson_t *opts,
                ww_db_doc_cb cb, void *ctx, ww_error_t *error) {
    op_t o;
    op_begin(&o, db, collection, "find");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(o.coll, filter, opts, NULL);
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc))
        if (!cb(doc, ctx)) break;
    bson_error_t be;
    const bson_t *reply = NULL;
    bool ok = !mongoc_cursor_error_document(cur, &be, &reply);
    if (!ok) translate(&be, reply, "find", error);
    mongoc_cursor_destroy(cur);
    op_end(&o);
    return ok;
}

bool ww_db_insert_one(ww_db_t *db, const char *collection, const bson_t *doc, bool *duplicate,
                      ww_error_t *error) {
    *duplicate = false;
    op_t o;
    op_begin(&o, db, collection, "insert");
    bson_error_t be;
    bson_t reply;
    bool ok = mongoc_collection_insert_one(o.coll, doc, NULL, &reply, &be);
    if (!ok && be.code == WW_DB_DUPLICATE_KEY) {
        *duplicate = true;
        ok = true;
    } else if (!ok) {
        translate(&be, &reply, "insert", error);
    }
    bson_destroy(&reply);
    op_end(&o);
    return ok;
}

static int64_t reply_int(const bson_t *reply, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static bool update(ww_db_t *db, const char *collection, bool many, const bson_t *filter,
                   const bson_t *upd, const bson_t *opts, int64_t *matched, int64_t *modified,
                   ww_error_t *error) {
    op_t o;
    op_begin(&o, db, collection, many ? "update_many" : "update");
    bson_error_t be;
    bson_t reply;
    bool ok = many ? mongoc_collection_update_many(o.coll, filter, upd, opts, &reply, &be)
                   : mongoc_collection_update_one(o.coll, filter, upd, opts, &reply, &be);
    if (ok) {
        if (matched) *matched = reply_int(&reply, "matchedCount");
        if (modified) *modified = reply_int(&reply, "modifiedCount");
    } else {
        translate(&be, &reply, many ? "updateMany" : "updateOne", error);
    }
    bson_destroy(&reply);
    op_end(&o);
    return ok;
}

bool ww_db_update_one(ww_db_t *db, const char *collection, const bson_t *filter,
                      const bson_t *upd, const bson_t *opts, int64_t *matched,
                      int64_t *modified, ww_error_t *error) {
    return update(db, collection, false, filter, upd, opts, matched, modified, error);
}

bool ww_db_update_many(ww_db_t *db, const char *collection, const bson_t *filter,
                       const bson_t *upd, const bson_t *opts, int64_t *matched,
                       int64_t *modified, ww_error_t *error) {
    return update(db, collection, true, filter, upd, opts, matched, modified, error);
}

/* ---- bulk writes ----------------------------------------------------------
 * One unordered bulk is one `update` or `insert` command on the wire (below
 * maxWriteBatchSize and 48 MB: the callers' batches are far smaller). */

static mongoc_bulk_operation_t *unordered_bulk(mongoc_collection_t *coll,
                                               mongoc_client_session_t *session,
                                               bson_error_t *be) {
    bson_t bopts = BSON_INITIALIZER; /* parsed at creation */
    BSON_APPEND_BOOL(&bopts, "ordered", false);
    mongoc_bulk_operation_t *bulk = NULL;
    if (!session || mongoc_client_session_append(session, &bopts, be))
        bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &bopts);
    bson_destroy(&bopts);
    return bulk;
}

/* One unordered bulk of updateOne on coll (in session's transaction when
 * session is set); *matched is the reply's total nMatched. */
static bool bulk_update_on(mongoc_collection_t *coll, mongoc_client_session_t *session,
                           const bson_t *const *filters, const bson_t *const *updates, size_t n,
                           int64_t *matched, ww_error_t *error) {
    bson_error_t be;
    mongoc_bulk_operation_t *bulk = unordered_bulk(coll, session, &be);
    bool ok = bulk != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = mongoc_bulk_operation_update_one_with_opts(bulk, filters[i], updates[i], NULL, &be);
    bson_t reply = BSON_INITIALIZER;
    if (ok) {
        bson_destroy(&reply);
        ok = mongoc_bulk_operation_execute(bulk, &reply, &be) != 0;
        *matched = reply_int(&reply, "nMatched");
    }
    if (!ok) translate(&be, &reply, "bulk update", error);
    bson_destroy(&reply);
    if (bulk) mongoc_bulk_operation_destroy(bulk);
    return ok;
}

/* One unordered bulk of inserts on coll (in session's transaction when
 * session is set). Duplicate keys are per document (duplicate[i]); any other
 * write error, or a reply that does not account for every document, fails. */
static bool insert_many_on(mongoc_collection_t *coll, mongoc_client_session_t *session,
                           const bson_t *const *docs, size_t n, bool *duplicate,
                           ww_error_t *error) {
    bson_error_t be;
    mongoc_bulk_operation_t *bulk = unordered_bulk(coll, session, &be);
    bool ok = bulk != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = mongoc_bulk_operation_insert_with_opts(bulk, docs[i], NULL, &be);
    bson_t reply = BSON_INITIALIZER;
    bool executed = false;
    if (ok) {
        bson_destroy(&reply);
        ok = mongoc_bulk_operation_execute(bulk, &reply, &be) != 0;
        executed = true;
    }
    if (!ok && executed) {
        /* Write errors are per document. Duplicate keys are answers (the
         * caller reads the stored entry back); any other error fails the
         * call, and so does a reply without writeErrors (network, write
         * concern, ...): nothing tells which documents were written. */
        bson_iter_t it, arr, one;
        size_t dups = 0, others = 0;
        if (bson_iter_init_find(&it, &reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &arr)) {
            while (bson_iter_next(&arr)) {
                int64_t idx = -1, code = 0;
                if (BSON_ITER_HOLDS_DOCUMENT(&arr) && bson_iter_recurse(&arr, &one))
                    while (bson_iter_next(&one)) {
                        if (strcmp(bson_iter_key(&one), "index") == 0 && BSON_ITER_HOLDS_NUMBER(&one))
                            idx = bson_iter_as_int64(&one);
                        else if (strcmp(bson_iter_key(&one), "code") == 0 &&
                                 BSON_ITER_HOLDS_NUMBER(&one))
                            code = bson_iter_as_int64(&one);
                    }
                if (code == WW_DB_DUPLICATE_KEY && idx >= 0 && (size_t)idx < n) {
                    duplicate[idx] = true;
                    dups++;
                } else {
                    others++;
                }
            }
        }
        bool wc_errors = bson_iter_init_find(&it, &reply, "writeConcernErrors") &&
                         BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr) &&
                         bson_iter_next(&arr);
        /* every document accounted for: inserted or a duplicate (a bulk
         * split in parts that failed half-way would leave some unsent).
         * mongo-java-server counts the duplicates in nInserted as well
         * (docs/testing.md): nInserted == n with dups > 0 is only possible
         * there, and also means every document was sent. */
        size_t inserted = (size_t)reply_int(&reply, "nInserted");
        bool complete = inserted + dups == n || inserted == n;
        if (dups > 0 && others == 0 && !wc_errors && complete) {
            ok = true;
        } else {
            for (size_t i = 0; i < n; i++) duplicate[i] = false;
            translate(&be, &reply, "insertMany", error);
        }
    } else if (!ok) {
        translate(&be, &reply, "insertMany", error);
    }
    bson_destroy(&reply);
    if (bulk) mongoc_bulk_operation_destroy(bulk);
    return ok;
}

bool ww_db_bulk_update_one(ww_db_t *db, const char *collection, const bson_t *const *filters,
                           const bson_t *const *updates, size_t n, int64_t *matched,
                           ww_error_t *error) {
    *matched = 0;
    if (n == 0) return true;
    op_t o;
    op_begin(&o, db, collection, "bulk_update");
    bool ok = bulk_update_on(o.coll, NULL, filters, updates, n, matched, error);
    op_end(&o);
    return ok;
}

bool ww_db_insert_many(ww_db_t *db, const char *collection, const bson_t *const *docs, size_t n,
                       bool *duplicate, ww_error_t *error) {
    for (size_t i = 0; i < n; i++) duplicate[i] = false;
    if (n == 0) return true;
    op_t o;
    op_begin(&o, db, collection, "insert_many");
    bool ok = insert_many_on(o.coll, NULL, docs, n, duplicate, error);
    op_end(&o);
    return ok;
}

bool ww_db_delete_many(ww_db_t *db, const char *collection, const bson_t *filter,
                       int64_t *deleted, ww_error_t *error) {
    op_t o;
    op_begin(&o, db, collection, "delete");
    bson_error_t be;
    bson_t reply;
    bool ok = mongoc_collection_delete_many(o.coll, filter, NULL, &reply, &be);
    if (ok && deleted) *deleted = reply_int(&reply, "deletedCount");
    if (!ok) translate(&be, &reply, "deleteMany", error);
    bson_destroy(&reply);
    op_end(&o);
    return ok;
}

bool ww_db_drop_database(ww_db_t *db, ww_error_t *error) {
    op_t o;
    op_begin(&o, db, NULL, "command");
    mongoc_database_t *d = mongoc_client_get_database(o.client, db->db_name);
    bson_error_t be;
    bool ok = mongoc_database_drop(d, &be);
    if (!ok) translate(&be, NULL, "dropDatabase", error);
    mongoc_database_destroy(d);
    op_end(&o);
    return ok;
}

/* ---- transactions --------------------------------------------------------- */

struct ww_db_txn {
    ww_db_t *db;
    mongoc_client_t *client;
    mongoc_client_session_t *session;
};

typedef struct {
    ww_db_txn_t *txn;
    ww_db_txn_fn fn;
    void *ctx;
    ww_error_t *error;
} txn_call_t;

static bool txn_cb(mongoc_client_session_t *session, void *vctx, bson_t **reply,
                   bson_error_t *be) {
    (void)session;
    txn_call_t *c = vctx;
    *reply = NULL;
    ww_error_clear(c->error);
    if (c->fn(c->txn, c->ctx, c->error)) return true;
    /* Hand libmongoc an error it understands; a retryable one carries the
     * TransientTransactionError label so the whole callback is re-run. */
    bson_set_error(be, MONGOC_ERROR_TRANSACTION, MONGOC_ERROR_TRANSACTION_INVALID_STATE, "%s",
                   c->error->message);
    if (c->error->retryable) {
        *reply = bson_new();
        bson_t labels;
        BSON_APPEND_ARRAY_BEGIN(*reply, "errorLabels", &labels);
        BSON_APPEND_UTF8(&labels, "0", "TransientTransactionError");
        bson_append_array_end(*reply, &labels);
    }
    return false;
}

bool ww_db_with_transaction(ww_db_t *db, ww_db_txn_fn fn, void *ctx, ww_error_t *error) {
    ww_error_t local;
    if (!error) error = &local;
    op_t o;
    op_begin(&o, db, NULL, "transaction");
    bson_error_t be;
    bool ok = false;
    mongoc_client_session_t *session = mongoc_client_start_session(o.client, NULL, &be);
    if (!session) {
        translate(&be, NULL, "startSession", error);
        op_end(&o);
        return false;
    }
    mongoc_transaction_opt_t *topts = mongoc_transaction_opts_new();
    mongoc_write_concern_t *wc = mongoc_write_concern_new();
    mongoc_write_concern_set_wmajority(wc, 10000);
    mongoc_read_concern_t *rc = mongoc_read_concern_new();
    mongoc_read_concern_set_level(rc, MONGOC_READ_CONCERN_LEVEL_SNAPSHOT);
    mongoc_transaction_opts_set_write_concern(topts, wc);
    mongoc_transaction_opts_set_read_concern(topts, rc);
    ww_db_txn_t txn = {db, o.client, session};
    txn_call_t call = {&txn, fn, ctx, error};
    bson_t reply;
    ok = mongoc_client_session_with_transaction(session, txn_cb, topts, &call, &reply, &be);
    if (!ok && error->domain == WW_ERR_NONE) translate(&be, &reply, "transaction", error);
    bson_destroy(&reply);
    mongoc_read_concern_destroy(rc);
    mongoc_write_concern_destroy(wc);
    mongoc_transaction_opts_destroy(topts);
    mongoc_client_session_destroy(session);
    op_end(&o);
    return ok;
}

bool ww_db_txn_update_one(ww_db_txn_t *txn, const char *collection, const bson_t *filter,
                          const bson_t *update, int64_t *matched, ww_error_t *error) {
    mongoc_collection_t *coll =
        mongoc_client_get_collection(txn->client, txn->db->db_name, collection);
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t be;
    bool ok = mongoc_client_session_append(txn->session, &opts, &be) &&
              mongoc_collection_update_one(coll, filter, update, &opts, &reply, &be);
    if (ok && matched) *matched = reply_int(&reply, "matchedCount");
    if (!ok) translate(&be, &reply, "updateOne", error);
    bson_destroy(&reply);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return ok;
}

bool ww_db_txn_insert_one(ww_db_txn_t *txn, const char *collection, const bson_t *doc,
                          bool *duplicate, ww_error_t *error) {
    *duplicate = false;
    mongoc_collection_t *coll =
        mongoc_client_get_collection(txn->client, txn->db->db_name, collection);
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t be;
    bool ok = mongoc_client_session_append(txn->session, &opts, &be) &&
              mongoc_collection_insert_one(coll, doc, &opts, &reply, &be);
    if (!ok && be.code == WW_DB_DUPLICATE_KEY) {
        /* In a transaction a duplicate aborts it: report it, the caller
         * aborts and starts over (and then finds the existing entry). */
        *duplicate = true;
        ww_error_set(error, WW_ERR_DB, WW_DB_DUPLICATE_KEY, false, "duplicate key");
        ok = false;
    } else if (!ok) {
        translate(&be, &reply, "insert", error);
    }
    bson_destroy(&reply);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return ok;
}

bool ww_db_txn_bulk_update_one(ww_db_txn_t *txn, const char *collection,
                               const bson_t *const *filters, const bson_t *const *updates,
                               size_t n, int64_t *matched, ww_error_t *error) {
    *matched = 0;
    if (n == 0) return true;
    mongoc_collection_t *coll =
        mongoc_client_get_collection(txn->client, txn->db->db_name, collection);
    bool ok = bulk_update_on(coll, txn->session, filters, updates, n, matched, error);
    mongoc_collection_destroy(coll);
    return ok;
}

bool ww_db_txn_insert_many(ww_db_txn_t *txn, const char *collection, const bson_t *const *docs,
                           size_t n, bool *duplicate, ww_error_t *error) {
    for (size_t i = 0; i < n; i++) duplicate[i] = false;
    if (n == 0) return true;
    mongoc_collection_t *coll =
        mongoc_client_get_collection(txn->client, txn->db->db_name, collection);
    bool ok = insert_many_on(coll, txn->session, docs, n, duplicate, error);
    mongoc_collection_destroy(coll);
    return ok;
}

/* ---- read-only inspection (doctor) ------------------------------------------ */

bool ww_db_read_command(ww_db_t *db, const bson_t *command, bson_t *reply, ww_error_t *error) {
    op_t o;
    op_begin(&o, db, NULL, "command");
    bson_error_t be;
    bool ok = mongoc_client_read_command_with_opts(o.client, db->db_name, command, NULL, NULL,
                                                   reply, &be);
    if (!ok) translate(&be, reply, "command", error);
    op_end(&o);
    return ok;
}

bool ww_db_list_indexes(ww_db_t *db, const char *collection, ww_db_doc_cb cb, void *ctx,
                        ww_error_t *error) {
    op_t o;
    op_begin(&o, db, collection, "command");
    mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(o.coll, NULL);
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc))
        if (!cb(doc, ctx)) break;
    bson_error_t be;
    const bson_t *reply = NULL;
    bool ok = !mongoc_cursor_error_document(cur, &be, &reply);
    if (!ok && be.code == 26) ok = true; /* NamespaceNotFound: no collection, no indexes */
    if (!ok) translate(&be, reply, "listIndexes", error);
    mongoc_cursor_destroy(cur);
    op_end(&o);
    return ok;
}

bool ww_db_explain_find(ww_db_t *db, const char *collection, const bson_t *filter,
                        const bson_t *sort, bson_t *reply, bool *unavailable, ww_error_t *error) {
    *unavailable = false;
    bson_t cmd = BSON_INITIALIZER, find;
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "explain", &find);
    BSON_APPEND_UTF8(&find, "find", collection);
    BSON_APPEND_DOCUMENT(&find, "filter", filter);
    if (sort) BSON_APPEND_DOCUMENT(&find, "sort", sort);
    bson_append_document_end(&cmd, &find);
    BSON_APPEND_UTF8(&cmd, "verbosity", "queryPlanner");
    ww_error_t e;
    ww_error_clear(&e);
    bool ok = ww_db_read_command(db, &cmd, reply, &e);
    /* 59 CommandNotFound (mongo-java-server), 115 CommandNotSupported, 238
     * NotImplemented: this server cannot say how it runs a query */
    if (!ok && !e.retryable && (e.code == 59 || e.code == 115 || e.code == 238)) {
        *unavailable = true;
        ok = true;
    } else if (!ok && error) {
        *error = e;
    }
    bson_destroy(&cmd);
    return ok;
}
