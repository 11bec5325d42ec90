/* db.h: MongoDB access. The only module that includes mongoc.h.
 *
 * DESIGN: the rest of the worker builds its documents with libbson and calls
 * the handful of operations below. Each operation borrows a client from the
 * pool (bounded: maxPoolSize, default 50, the existing backend's audit),
 * records its latency, and translates libmongoc's errors into ww_error_t
 * with `retryable` set for infrastructure trouble (no server, network,
 * not-primary, write conflict, shutdown) so callers wait those out instead of
 * dead-lettering a message.
 *
 * Connection state comes from libmongoc's topology monitoring (SDAM
 * callbacks on the pool's monitor threads): it feeds health.h and is logged
 * once per transition (connected / disconnected / reconnected / error), so a
 * server that stays down produces no log storm. */
#ifndef WW_DB_H
#define WW_DB_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

typedef struct ww_db ww_db_t;

/* MongoDB's duplicate-key error: the ledger's "already recorded". */
#define WW_DB_DUPLICATE_KEY 11000

typedef struct {
    int32_t pool_max;            /* maxPoolSize unless the URI sets it (default 50) */
    int32_t server_selection_ms; /* serverSelectionTimeoutMS unless in URI (5000) */
    int32_t socket_timeout_ms;   /* socketTimeoutMS unless in URI (45000) */
    int32_t heartbeat_ms;        /* heartbeatFrequencyMS unless in URI (5000) */
    int32_t auth_fail_exit_s;    /* DB_AUTH_FAIL_EXIT_S: give up after this long of
                                  * authentication failures (0: never; dbauth.h) */
} ww_db_options_t;

void ww_db_options_defaults(ww_db_options_t *opts);

/* Parses uri, applies the defaults above where the URI is silent, creates the
 * pool and starts monitoring. Does not wait for a server: the state starts as
 * "connecting". Returns NULL and a WW_ERR_CONFIG error when the URI is bad. */
ww_db_t *ww_db_new(const char *uri, const ww_db_options_t *opts, ww_error_t *error);
/* True once authentication has failed for auth_fail_exit_s: db.c then sent
 * SIGTERM to the process (an orderly stop), and the worker must exit 1. */
bool ww_db_auth_gave_up(void);
void ww_db_destroy(ww_db_t *db);

/* Checks that uri parses as a MongoDB URI, without connecting. The error
 * never quotes the URI (it may hold a password). */
bool ww_db_check_uri(const char *uri, ww_error_t *error);

/* Writes into out (never fails; truncates to outlen) a form of uri fit for a
 * log line or a message, rebuilt from libmongoc's parse of it: the password
 * and every string option value that is not a plain setting (appname,
 * replicaSet, readPreference, w, authSource, authMechanism, tlsCAFile,
 * tlsCertificateKeyFile, ...) are "***", authMechanismProperties is "***"
 * whole, a host or database name with characters no such name has is "***",
 * and an unparseable uri (or NULL) is not shown at all. Never echoes text it
 * did not parse. Use it for every MongoDB URI that may be printed. */
void ww_db_redact_uri(const char *uri, char *out, size_t outlen);

const char *ww_db_name(const ww_db_t *db);
/* The effective pool size and timeouts (for logs, docs and tests). */
int32_t ww_db_pool_max(const ww_db_t *db);
int32_t ww_db_server_selection_ms(const ww_db_t *db);
int32_t ww_db_socket_timeout_ms(const ww_db_t *db);

/* One round trip: {ping: 1}. */
bool ww_db_ping(ww_db_t *db, ww_error_t *error);

/* True when the deployment can run multi-document transactions: a replica-set
 * member (MongoDB 4.0+) or mongos (4.2+) with sessions; decided from `hello`,
 * never from a commit answering ok. Sets *supported and *why (a static
 * string: what the server is, or why it cannot); returns false on error. */
bool ww_db_transactions_supported(ww_db_t *db, bool *supported, const char **why,
                                  ww_error_t *error);

/* Whether the wallet protocol wraps its wallet update and ledger insert in a
 * transaction: DB_TRANSACTIONS=on, checked at start against
 * ww_db_transactions_supported. Off by default. */
void ww_db_set_use_transactions(ww_db_t *db, bool use);
bool ww_db_use_transactions(const ww_db_t *db);

/* ---- transactions ------------------------------------------------------
 * Used only with DB_TRANSACTIONS=on, which start-up refuses unless
 * ww_db_transactions_supported() says yes (a replica set or mongos). No
 * server this project tests against supports them: this path is not
 * exercised by the test suite. The callback runs inside a transaction with write concern
 * "majority" and read concern "snapshot"; libmongoc retries the whole
 * callback on TransientTransactionError and the commit on
 * UnknownTransactionCommitResult. The callback returns false to abort (with
 * *error set) -- e.g. a guarded update that matched nothing. */
typedef struct ww_db_txn ww_db_txn_t;
typedef bool (*ww_db_txn_fn)(ww_db_txn_t *txn, void *ctx, ww_error_t *error);
bool ww_db_with_transaction(ww_db_t *db, ww_db_txn_fn fn, void *ctx, ww_error_t *error);
bool ww_db_txn_update_one(ww_db_txn_t *txn, const char *collection, const bson_t *filter,
                          const bson_t *update, int64_t *matched, ww_error_t *error);
bool ww_db_txn_insert_one(ww_db_txn_t *txn, const char *collection, const bson_t *doc,
                          bool *duplicate, ww_error_t *error);
/* The bulk forms of ww_db_bulk_update_one / ww_db_insert_many inside the
 * transaction. A duplicate key is reported per document as outside, but the
 * server has aborted the transaction by then: the caller aborts too. */
bool ww_db_txn_bulk_update_one(ww_db_txn_t *txn, const char *collection,
                               const bson_t *const *filters, const bson_t *const *updates,
                               size_t n, int64_t *matched, ww_error_t *error);
bool ww_db_txn_insert_many(ww_db_txn_t *txn, const char *collection, const bson_t *const *docs,
                           size_t n, bool *duplicate, ww_error_t *error);

/* Finds one document. On success *found says whether one matched and, when
 * it did, `out` is initialised with a copy (the caller destroys it). */
bool ww_db_find_one(ww_db_t *db, const char *collection, const bson_t *filter,
                    const bson_t *opts, bson_t *out, bool *found, ww_error_t *error);

/* Calls cb for every matching document (at most `limit`, 0 = no limit); stops
 * early when cb returns false. */
typedef bool (*ww_db_doc_cb)(const bson_t *doc, void *ctx);
bool ww_db_find(ww_db_t *db, const char *collection, const bson_t *filter, const bson_t *opts,
                ww_db_doc_cb cb, void *ctx, ww_error_t *error);

/* Inserts one document. A duplicate key is not an error: it returns true with
 * *duplicate set (the caller reads the existing document back). */
bool ww_db_insert_one(ww_db_t *db, const char *collection, const bson_t *doc, bool *duplicate,
                      ww_error_t *error);

/* updateOne / updateMany: *matched and *modified from the server's reply. */
bool ww_db_update_one(ww_db_t *db, const char *collection, const bson_t *filter,
                      const bson_t *update, const bson_t *opts, int64_t *matched,
                      int64_t *modified, ww_error_t *error);
bool ww_db_update_many(ww_db_t *db, const char *collection, const bson_t *filter,
                       const bson_t *update, const bson_t *opts, int64_t *matched,
                       int64_t *modified, ww_error_t *error);

/* One unordered bulk of updateOne operations (filters[i], updates[i]): one
 * round trip. *matched is the reply's total nMatched: a bulk reply does not
 * say which filters matched, so a short total means "re-read to find out".
 * Any write error fails the call (the caller cannot tell what happened). */
bool ww_db_bulk_update_one(ww_db_t *db, const char *collection, const bson_t *const *filters,
                           const bson_t *const *updates, size_t n, int64_t *matched,
                           ww_error_t *error);

/* One unordered insertMany: one round trip. A duplicate key is per document
 * and not an error: duplicate[i] says document i was not inserted because
 * its unique key exists (the caller reads the stored one back); every other
 * document was inserted. Any other write error fails the call. */
bool ww_db_insert_many(ww_db_t *db, const char *collection, const bson_t *const *docs, size_t n,
                       bool *duplicate, ww_error_t *error);

bool ww_db_delete_many(ww_db_t *db, const char *collection, const bson_t *filter,
                       int64_t *deleted, ww_error_t *error);

/* Runs a database command (createIndexes, listIndexes, dropIndexes, ...).
 * `reply` is always initialised; the caller destroys it. */
bool ww_db_command(ww_db_t *db, const bson_t *command, bson_t *reply, ww_error_t *error);

/* ---- read-only inspection (doctor) --------------------------------------
 * A read command (buildInfo, explain, ...): sent without write concern, so a
 * URI with w= does not make the server refuse it. `reply` is always
 * initialised; the caller destroys it. */
bool ww_db_read_command(ww_db_t *db, const bson_t *command, bson_t *reply, ww_error_t *error);

/* listIndexes of collection: cb sees every index document (the whole cursor).
 * A collection that does not exist has no indexes: true, no call. */
bool ww_db_list_indexes(ww_db_t *db, const char *collection, ww_db_doc_cb cb, void *ctx,
                        ww_error_t *error);

/* explain (verbosity "queryPlanner") of find(filter).sort(sort) (sort may be
 * NULL). A server without the command (mongo-java-server) is not an error:
 * true with *unavailable set and `reply` holding its answer. `reply` is always
 * initialised; the caller destroys it. */
bool ww_db_explain_find(ww_db_t *db, const char *collection, const bson_t *filter,
                        const bson_t *sort, bson_t *reply, bool *unavailable, ww_error_t *error);

/* Drops the whole database (tests and the demo only). */
bool ww_db_drop_database(ww_db_t *db, ww_error_t *error);

/* Library version, for build info. */
const char *ww_db_driver_version(void);

/* Process-wide set-up of libmongoc (call once from main / test set-up). */
void ww_db_global_init(void);
void ww_db_global_cleanup(void);

#endif
