/* harness.c: see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

extern char **environ;

int64_t h_now_ms(void) { return ww_clock_mono_ms(); }
void h_sleep_ms(int ms) { ww_clock_sleep_ms(ms, NULL); }

/* A port for the worker's sidecar, free now. It is taken from 24000-26999:
 * below the kernel's ephemeral range (32768-60999 by default), where an
 * outgoing connection could take the port between this probe and a
 * worker's (re)start, and away from every stack's ports (docs/testing.md).
 * The search starts at a pid-derived port, so tests running at once rarely
 * probe the same ones. */
static int free_port(void) {
    enum { LO = 24000, SPAN = 3000 };
    int start = (int)(getpid() % SPAN);
    for (int i = 0; i < SPAN; i++) {
        int port = LO + (start + i) % SPAN;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) break;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    fail_msg("harness: no free port in %d-%d", LO, LO + SPAN - 1);
    return -1;
}

static void on_delivery(void *ctx, void *opaque, const ww_error_t *error) {
    (void)ctx;
    (void)opaque;
    if (error) fprintf(stderr, "harness: delivery failed: %s\n", error->message);
}

static void reap_leftovers(void);

void h_env_init(h_env_t *env, const char *test_name) {
    reap_leftovers(); /* of a test that failed before stopping them */
    memset(env, 0, sizeof *env);
    const char *b = getenv("KAFKA_BROKERS");
    const char *u = getenv("MONGODB_URI");
    const char *impl = getenv("MONGO_IMPL");
    if (!b || !u) {
        fail_msg("KAFKA_BROKERS and MONGODB_URI must be set: run through scripts/test.sh or "
                 "eval \"$(scripts/stack.sh env)\" first");
    }
    snprintf(env->brokers, sizeof env->brokers, "%s", b);
    snprintf(env->mongo_impl, sizeof env->mongo_impl, "%s", impl ? impl : "unknown");
    snprintf(env->stack_sh, sizeof env->stack_sh, "%s/scripts/stack.sh", WW_SOURCE_DIR);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(env->run_id, sizeof env->run_id, "%s-%d-%ld", test_name, (int)getpid(),
             (long)(ts.tv_nsec / 1000) % 100000);
    snprintf(env->db_name, sizeof env->db_name, "it_%d_%ld", (int)getpid(),
             (long)(ts.tv_nsec / 1000) % 100000);
    /* swap the URI's database for ours: mongodb://host:port/<db>[?opts] */
    const char *scheme_end = strstr(u, "://");
    const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;
    const char *query = strchr(u, '?');
    int host_len = path ? (int)(path - u) : (query ? (int)(query - u) : (int)strlen(u));
    snprintf(env->uri, sizeof env->uri, "%.*s/%s%s", host_len, u, env->db_name,
             query ? query : "");
    snprintf(env->commands_topic, sizeof env->commands_topic, "it.%s.commands", env->run_id);
    snprintf(env->results_topic, sizeof env->results_topic, "it.%s.results", env->run_id);
    snprintf(env->dlq_topic, sizeof env->dlq_topic, "it.%s.dlq", env->run_id);
    env->http_port = free_port();

    ww_log_set_level(WW_LOG_WARN);
    ww_db_global_init();
    ww_error_t err;
    env->db = ww_db_new(env->uri, NULL, &err);
    if (!env->db) fail_msg("db: %s", err.message);
    bool up = false;
    for (int i = 0; i < 60 && !up; i++) {
        up = ww_db_ping(env->db, &err);
        if (!up) h_sleep_ms(500);
    }
    if (!up) fail_msg("MongoDB-compatible server (%s) not answering: %s", env->mongo_impl,
                      err.message);

    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = env->brokers;
    bc.consumer = false;
    /* the broker's own default limit (1 MiB + 12), above the worker's: tests
     * can send what an upstream producer can */
    bc.message_max_bytes = 1048588;
    ww_bus_hooks_t hooks = {.on_delivery = on_delivery};
    env->producer = ww_bus_new(&bc, &hooks, &err);
    if (!env->producer) fail_msg("producer: %s", err.message);
    char iev[160], ires[160], idlq[160];
    snprintf(iev, sizeof iev, "it.%s.invites", env->run_id);
    snprintf(ires, sizeof ires, "it.%s.invite-results", env->run_id);
    snprintf(idlq, sizeof idlq, "it.%s.invite-dlq", env->run_id);
    const char *topics[] = {env->commands_topic, env->results_topic, env->dlq_topic, iev, ires, idlq};
    int parts[] = {4, 4, 1, 2, 2, 1};
    for (int i = 0; i < 6; i++)
        if (!ww_bus_create_topic(env->producer, topics[i], parts[i], 15000, &err))
            fail_msg("Kafka at %s: %s", env->brokers, err.message);
}

void h_env_destroy(h_env_t *env) {
    ww_error_t err;
    if (env->db) {
        ww_db_drop_database(env->db, &err);
        ww_db_destroy(env->db);
    }
    ww_bus_destroy(env->producer, 10000);
    env->db = NULL;
    env->producer = NULL;
}

static pid_t spawn(const h_env_t *env, const char *const *args, const char *const *extra,
                   const char *stdin_path, const char *out_path, const char *err_path);

/* Every process this harness started and has not reaped. A test that fails
 * mid-way (cmocka longjmps out of it) never stops its workers: they are
 * killed when the next test sets up, and at exit, instead of running on. */
#define MAX_SPAWNED 64
static pid_t spawned[MAX_SPAWNED];

static void forget(pid_t pid) {
    for (int i = 0; i < MAX_SPAWNED; i++)
        if (spawned[i] == pid) spawned[i] = 0;
}

static void reap_leftovers(void) {
    for (int i = 0; i < MAX_SPAWNED; i++) {
        if (spawned[i] <= 0) continue;
        if (kill(spawned[i], SIGKILL) == 0)
            fprintf(stderr, "harness: killed leftover process %d\n", (int)spawned[i]);
        waitpid(spawned[i], NULL, 0);
        spawned[i] = 0;
    }
}

static void remember(pid_t pid) {
    static bool registered;
    if (!registered) {
        atexit(reap_leftovers);
        registered = true;
    }
    for (int i = 0; i < MAX_SPAWNED; i++)
        if (spawned[i] == 0) {
            spawned[i] = pid;
            return;
        }
    fail_msg("harness: more than %d processes alive", MAX_SPAWNED);
}

pid_t h_worker_start(const h_env_t *env, const char *log_path, const char *const *extra) {
    return spawn(env, NULL, extra, NULL, log_path, log_path);
}

int h_run_cli(const h_env_t *env, const char *const *args, const char *const *extra,
              const char *stdin_path, const char *out_path, const char *err_path, int timeout_ms) {
    pid_t pid = spawn(env, args, extra, stdin_path, out_path, err_path);
    int64_t deadline = h_now_ms() + timeout_ms;
    while (h_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            forget(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        h_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    forget(pid);
    return -1;
}

static pid_t spawn(const h_env_t *env, const char *const *args, const char *const *extra,
                   const char *stdin_path, const char *out_path, const char *err_path) {
    char e_brokers[300], e_uri[700], e_http[64], e_cmd[160], e_res[160], e_dlq[160], e_group[160];
    snprintf(e_brokers, sizeof e_brokers, "KAFKA_BROKERS=%s", env->brokers);
    snprintf(e_uri, sizeof e_uri, "MONGODB_URI=%s", env->uri);
    snprintf(e_http, sizeof e_http, "HTTP_ADDR=127.0.0.1:%d", env->http_port);
    snprintf(e_cmd, sizeof e_cmd, "WALLET_COMMANDS_TOPIC=%s", env->commands_topic);
    snprintf(e_res, sizeof e_res, "WALLET_RESULTS_TOPIC=%s", env->results_topic);
    snprintf(e_dlq, sizeof e_dlq, "WALLET_DLQ_TOPIC=%s", env->dlq_topic);
    snprintf(e_group, sizeof e_group, "KAFKA_GROUP_ID=it-%s", env->run_id);
    /* this run's own invite topics too, so no test reads another's */
    char e_iev[160], e_ires[160], e_idlq[160];
    snprintf(e_iev, sizeof e_iev, "INVITE_EVENTS_TOPIC=it.%s.invites", env->run_id);
    snprintf(e_ires, sizeof e_ires, "INVITE_RESULTS_TOPIC=it.%s.invite-results", env->run_id);
    snprintf(e_idlq, sizeof e_idlq, "INVITE_DLQ_TOPIC=it.%s.invite-dlq", env->run_id);
    const char *base[] = {e_brokers, e_uri, e_http, e_cmd, e_res, e_dlq, e_group, e_iev, e_ires, e_idlq,
                          "PATH=/usr/bin:/bin", "LOG_LEVEL=info",
                          /* libmongoc creates /dev/shm/mongoc-<pid> when it is loaded; a
                           * SIGKILLed worker leaves its file, and a later process given the
                           * same pid prints a warning on stderr before main runs */
                          "MONGOC_DISABLE_SHM=1"};
    char *envp[64];
    size_t n = 0;
    /* extras override the base settings of the same name */
    for (size_t i = 0; extra && extra[i] && n < 40; i++) envp[n++] = (char *)extra[i];
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        size_t name_len = (size_t)(strchr(base[i], '=') - base[i]);
        bool overridden = false;
        for (size_t k = 0; extra && extra[k]; k++)
            if (strncmp(extra[k], base[i], name_len + 1) == 0) overridden = true;
        if (!overridden) envp[n++] = (char *)base[i];
    }
    /* pass sanitizer options through */
    for (char **e = environ; *e && n < 63; e++)
        if (strncmp(*e, "ASAN_OPTIONS=", 13) == 0 || strncmp(*e, "UBSAN_OPTIONS=", 14) == 0 ||
            strncmp(*e, "LSAN_OPTIONS=", 13) == 0)
            envp[n++] = *e;
    envp[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int in = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
        if (in >= 0) {
            dup2(in, 0);
            close(in);
        }
        int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            close(fd);
        }
        fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        char *argv[32];
        int argc = 0;
        argv[argc++] = (char *)WW_WORKER_BIN;
        for (size_t k = 0; args && args[k] && argc < 31; k++) argv[argc++] = (char *)args[k];
        argv[argc] = NULL;
        execve(WW_WORKER_BIN, argv, envp);
        _exit(127);
    }
    if (pid > 0) remember(pid);
    return pid;
}

bool h_worker_alive(pid_t pid) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) forget(pid);
    return r == 0;
}

int h_worker_stop(pid_t pid, int sig, int timeout_ms) {
    kill(pid, sig);
    int64_t deadline = h_now_ms() + timeout_ms;
    while (h_now_ms() < deadline) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            forget(pid);
            if (WIFEXITED(st)) return WEXITSTATUS(st);
            if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
            return -1;
        }
        h_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    forget(pid);
    return -1;
}

int h_http_get(int port, const char *path, char *body, size_t cap) {
    if (cap) body[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                     path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    char buf[65536];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    int status = 0;
    if (strncmp(buf, "HTTP/1.", 7) == 0) status = atoi(buf + 9);
    const char *b = strstr(buf, "\r\n\r\n");
    if (b && cap) snprintf(body, cap, "%s", b + 4);
    return status;
}

bool h_wait_http(int port, const char *path, int status, int timeout_ms) {
    int64_t deadline = h_now_ms() + timeout_ms;
    char body[4096];
    while (h_now_ms() < deadline) {
        if (h_http_get(port, path, body, sizeof body) == status) return true;
        h_sleep_ms(100);
    }
    return false;
}

void h_produce(h_env_t *env, const char *topic, const char *key, const char *value) {
    ww_error_t err;
    if (!ww_bus_produce(env->producer, topic, key, key ? strlen(key) : 0, value,
                        value ? strlen(value) : 0, NULL, 0, NULL, &err))
        fail_msg("produce: %s", err.message);
}

void h_flush(h_env_t *env) {
    /* re-create the producer: destroy flushes everything queued */
    ww_bus_destroy(env->producer, 30000);
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = env->brokers;
    bc.consumer = false;
    bc.message_max_bytes = 1048588;
    ww_bus_hooks_t hooks = {.on_delivery = on_delivery};
    ww_error_t err;
    env->producer = ww_bus_new(&bc, &hooks, &err);
    if (!env->producer) fail_msg("producer: %s", err.message);
}

size_t h_read_topic(const h_env_t *env, const char *topic, size_t want, int timeout_ms,
                    h_msg_cb cb, void *ctx) {
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = env->brokers;
    char group[200];
    static int seq;
    snprintf(group, sizeof group, "reader-%s-%d", env->run_id, ++seq);
    bc.group_id = group;
    bc.producer = false;
    ww_error_t err;
    ww_bus_t *c = ww_bus_new(&bc, NULL, &err);
    if (!c) fail_msg("reader: %s", err.message);
    const char *topics[] = {topic};
    ww_bus_subscribe(c, topics, 1, &err);
    size_t n = 0;
    int64_t deadline = h_now_ms() + timeout_ms;
    while (n < want && h_now_ms() < deadline) {
        ww_msg_t *m = ww_bus_poll(c, 200);
        if (!m) continue;
        if (cb) cb(m, ctx);
        n++;
        ww_msg_destroy(m);
    }
    ww_bus_destroy(c, 0);
    return n;
}

int64_t h_topic_messages(const h_env_t *env, const char *topic) {
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = env->brokers;
    bc.group_id = NULL;
    bc.producer = false;
    ww_error_t err;
    ww_bus_t *c = ww_bus_new(&bc, NULL, &err);
    if (!c) fail_msg("watermarks: %s", err.message);
    int32_t n = 0;
    if (!ww_bus_partition_count(c, topic, &n, 10000, &err)) fail_msg("%s", err.message);
    int64_t total = 0;
    for (int32_t p = 0; p < n; p++) {
        int64_t lo, hi;
        if (!ww_bus_watermarks(c, topic, p, &lo, &hi, 10000, &err)) fail_msg("%s", err.message);
        total += hi - lo;
    }
    ww_bus_destroy(c, 0);
    return total;
}

int h_stack(const h_env_t *env, const char *arg) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s' %s >/dev/null 2>&1", env->stack_sh, arg);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *h_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t r = fread(buf, 1, (size_t)n, f);
    buf[r] = '\0';
    fclose(f);
    return buf;
}

int h_count_in_file(const char *path, const char *needle) {
    char *s = h_read_file(path);
    if (!s) return 0;
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    free(s);
    return n;
}

int64_t h_count(h_env_t *env, const char *collection, const bson_t *query) {
    bson_t cmd = BSON_INITIALIZER, reply, empty = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd, "count", collection);
    BSON_APPEND_DOCUMENT(&cmd, "query", query ? query : &empty);
    ww_error_t err;
    int64_t n = -1;
    if (ww_db_command(env->db, &cmd, &reply, &err)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, &reply, "n")) n = bson_iter_as_int64(&it);
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    bson_destroy(&empty);
    return n;
}

typedef struct {
    bson_string_t *s;
    size_t n;
} digest_t;

static bool digest_doc(const bson_t *doc, void *ctx) {
    digest_t *d = ctx;
    char *j = bson_as_canonical_extended_json(doc, NULL);
    bson_string_append(d->s, j);
    bson_string_append(d->s, "\n");
    bson_free(j);
    d->n++;
    return true;
}

char *h_digest(h_env_t *env, const char *const *collections, size_t n, size_t *n_last) {
    digest_t d = {bson_string_new(""), 0};
    bson_t all = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    ww_error_t err;
    for (size_t i = 0; i < n; i++) {
        d.n = 0;
        if (!ww_db_find(env->db, collections[i], &all, &opts, digest_doc, &d, &err))
            fail_msg("digest of %s: %s", collections[i], err.message);
    }
    if (n_last) *n_last = d.n;
    bson_destroy(&all);
    bson_destroy(&opts);
    return bson_string_free(d.s, false);
}
