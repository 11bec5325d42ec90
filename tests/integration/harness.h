/* harness.h: what integration tests share: the stack's settings, the worker
 * process, Kafka topics, producing and reading back messages, MongoDB. */
#ifndef WW_HARNESS_H
#define WW_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

#include "bus.h"
#include "db.h"

typedef struct {
    char brokers[256];
    char uri[600];       /* MONGODB_URI with this test's own database */
    char db_name[64];
    char run_id[48];     /* unique per test run: topics and keys carry it */
    char mongo_impl[32];
    char stack_sh[600];
    char commands_topic[128];
    char results_topic[128];
    char dlq_topic[128];
    int http_port;
    ww_db_t *db;
    ww_bus_t *producer;
} h_env_t;

/* Reads KAFKA_BROKERS / MONGODB_URI / MONGO_IMPL, makes a unique run id,
 * database and topics, checks both servers answer (fails the test if not). */
void h_env_init(h_env_t *env, const char *test_name);
void h_env_destroy(h_env_t *env); /* drops the test database */

/* Starts build/wallet-worker for env with stderr to log_path; extra "K=V"
 * strings (NULL-terminated list, may be NULL) are added to its environment. */
pid_t h_worker_start(const h_env_t *env, const char *log_path, const char *const *extra);
/* Sends sig and waits up to timeout_ms; returns the exit status, 128+signal,
 * or -1 on timeout (the process is then killed). */
int h_worker_stop(pid_t pid, int sig, int timeout_ms);
bool h_worker_alive(pid_t pid);

/* Runs `wallet-worker ARGS...` for env (same environment as h_worker_start,
 * plus extra "K=V" strings), with stdin from stdin_path (NULL: /dev/null),
 * waits up to timeout_ms and returns its exit status (-1 on timeout). Its
 * stdout and stderr go to out_path / err_path. */
int h_run_cli(const h_env_t *env, const char *const *args, const char *const *extra,
              const char *stdin_path, const char *out_path, const char *err_path, int timeout_ms);

/* GET http://127.0.0.1:port/path; returns the status (0 on connect failure). */
int h_http_get(int port, const char *path, char *body, size_t cap);
/* Polls until GET returns `status` or timeout_ms passes. */
bool h_wait_http(int port, const char *path, int status, int timeout_ms);

void h_produce(h_env_t *env, const char *topic, const char *key, const char *value);
void h_flush(h_env_t *env);

/* Reads `topic` from the beginning with a fresh group until `want` messages
 * arrived or timeout_ms passed. Returns the count; cb sees each message. */
typedef void (*h_msg_cb)(const ww_msg_t *msg, void *ctx);
size_t h_read_topic(const h_env_t *env, const char *topic, size_t want, int timeout_ms,
                    h_msg_cb cb, void *ctx);

/* Messages in `topic` now (sum over its partitions of high - low watermark;
 * outputs the worker waited for are acknowledged by all replicas, so they
 * are counted). Fails the test when the broker does not answer. */
int64_t h_topic_messages(const h_env_t *env, const char *topic);

/* Documents in `collection` matching query (NULL: all); -1 when the server
 * did not answer (callers poll through outages). */
int64_t h_count(h_env_t *env, const char *collection, const bson_t *query);

/* Every document of the given collections, sorted by _id, as canonical
 * extended JSON, one per line: equal strings mean an identical database.
 * *n_last (may be NULL) counts the last collection's documents. The caller
 * frees the result with bson_free. */
char *h_digest(h_env_t *env, const char *const *collections, size_t n, size_t *n_last);

/* Runs scripts/stack.sh with the given argument (e.g. "mongo-stop"). */
int h_stack(const h_env_t *env, const char *arg);

/* File contents (NUL-terminated, malloc'd) or NULL. */
char *h_read_file(const char *path);
/* Occurrences of needle in the file. */
int h_count_in_file(const char *path, const char *needle);

int64_t h_now_ms(void);
void h_sleep_ms(int ms);

#endif
