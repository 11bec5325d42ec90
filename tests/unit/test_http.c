/* test_http.c: the sidecar over real sockets on 127.0.0.1, with a tiny raw
 * HTTP/1.1 client (no curl), so what is checked is what goes on the wire. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

/* ---- a tiny HTTP client --------------------------------------------- */

typedef struct {
    int status;         /* 0: no response (connection refused/closed/reset) */
    char head[8192];    /* status line + headers */
    char body[65536];
    size_t body_len;
} resp_t;

static int connect_to(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req raw and reads until the server closes. Returns *r (status 0 when
 * nothing parseable came back). */
static resp_t *http_raw(uint16_t port, const char *req, size_t len, resp_t *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_to(port);
    if (fd < 0) return r;
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break; /* the server may hang up on an oversized request */
        off += (size_t)n;
    }
    static char raw[sizeof r->head + sizeof r->body];
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, raw + got, sizeof raw - 1 - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
        if (got == sizeof raw - 1) break;
    }
    close(fd);
    raw[got] = '\0';
    char *end = strstr(raw, "\r\n\r\n");
    if (!end || strncmp(raw, "HTTP/1.1 ", 9) != 0) return r;
    size_t head_len = (size_t)(end - raw) + 2; /* keep the last header's CRLF */
    assert_true(head_len < sizeof r->head);
    memcpy(r->head, raw, head_len);
    r->status = (int)strtol(raw + 9, NULL, 10);
    r->body_len = got - head_len - 2;
    memcpy(r->body, end + 4, r->body_len);
    return r;
}

static resp_t *http_req(uint16_t port, const char *method, const char *path, resp_t *r) {
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                     method, path);
    return http_raw(port, req, (size_t)n, r);
}

/* The value of header name (case-insensitive), or NULL. */
static const char *header(const resp_t *r, const char *name, char *out, size_t cap) {
    size_t nlen = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            h += nlen + 1;
            while (*h == ' ') h++;
            const char *e = strstr(h, "\r\n");
            snprintf(out, cap, "%.*s", (int)(e - h), h);
            return out;
        }
    }
    return NULL;
}

static void assert_header(const resp_t *r, const char *name, const char *want) {
    char v[256];
    if (!header(r, name, v, sizeof v)) fail_msg("no %s header in:\n%s", name, r->head);
    assert_string_equal(v, want);
}

static json_object *parse_body(const resp_t *r) {
    json_object *j = json_tokener_parse(r->body);
    if (!j) fail_msg("body is not JSON: %.*s", (int)r->body_len, r->body);
    return j;
}

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v)) fail_msg("no \"%s\" in %s", key, json_object_to_json_string(o));
    return v;
}

static const char *get_str(json_object *o, const char *key) {
    json_object *v = get(o, key);
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static int64_t get_int(json_object *o, const char *key) {
    json_object *v = get(o, key);
    assert_true(json_object_is_type(v, json_type_int));
    return json_object_get_int64(v);
}

static void sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- fixtures ------------------------------------------------------- */

static ww_http_t *start(const char *listen, int64_t liveness_ms) {
    ww_http_config_t cfg = {.listen = listen, .liveness_threshold_ms = liveness_ms, .version = "1.2.3-test"};
    ww_error_t err;
    ww_error_clear(&err);
    ww_http_t *h = ww_http_start(&cfg, &err);
    if (!h) fail_msg("ww_http_start: %s", err.message);
    assert_true(ww_http_port(h) > 0);
    return h;
}

static int setup(void **state) {
    ww_health_reset();
    ww_health_set_started(ww_clock_mono_ms());
    ww_metrics_reset();
    ww_metrics_init("1.2.3-test", "2.3.0", "1.24.2");
    *state = start("127.0.0.1:0", 30000);
    return 0;
}

static int teardown(void **state) {
    ww_http_stop(*state);
    return 0;
}

#define PORT(state) ww_http_port((ww_http_t *)*(state))

/* ---- /api/health ---------------------------------------------------- */

static void assert_timestamp(const char *ts) {
    /* 2026-11-26T08:52:17.123Z: UTC, millisecond precision, near now. */
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[4] == '-' && ts[7] == '-' && ts[10] == 'T' && ts[13] == ':' && ts[16] == ':' &&
                ts[19] == '.' && ts[23] == 'Z');
    int64_t ms;
    assert_true(ww_clock_parse_rfc3339(ts, 24, &ms));
    int64_t skew = ms - ww_clock_now_ms();
    assert_true(skew > -5000 && skew < 5000);
}

static void test_http_health_ok_when_db_connected(void **state) {
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_kafka(WW_KAFKA_UP, ww_clock_mono_ms());
    ww_health_set_consumer(true, 3, ww_clock_mono_ms());
    resp_t r;
    http_req(PORT(state), "GET", "/api/health", &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Cache-Control", "no-store");
    json_object *j = parse_body(&r);
    assert_string_equal(get_str(j, "status"), "ok");
    assert_timestamp(get_str(j, "timestamp"));
    json_object *db = get(j, "database");
    assert_string_equal(get_str(db, "status"), "connected");
    assert_int_equal(get_int(db, "readyState"), 1);
    json_object *kafka = get(j, "kafka");
    assert_string_equal(get_str(kafka, "status"), "up");
    assert_true(json_object_get_boolean(get(kafka, "inGroup")));
    assert_int_equal(get_int(kafka, "assignedPartitions"), 3);
    assert_string_equal(get_str(j, "version"), "1.2.3-test");
    assert_true(get_int(j, "uptimeSeconds") >= 0);
    json_object_put(j);
}

static void test_http_health_degraded_unless_connected(void **state) {
    static const struct {
        ww_db_state_t state;
        const char *name;
    } cases[] = {{WW_DB_DISCONNECTED, "disconnected"},
                 {WW_DB_CONNECTING, "connecting"},
                 {WW_DB_DISCONNECTING, "disconnecting"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_health_set_db_state(cases[i].state);
        resp_t r;
        http_req(PORT(state), "GET", "/api/health", &r);
        assert_int_equal(r.status, 503);
        assert_header(&r, "Content-Type", "application/json");
        json_object *j = parse_body(&r);
        assert_string_equal(get_str(j, "status"), "degraded");
        assert_timestamp(get_str(j, "timestamp"));
        json_object *db = get(j, "database");
        assert_string_equal(get_str(db, "status"), cases[i].name);
        assert_int_equal(get_int(db, "readyState"), (int)cases[i].state);
        /* the consumer starts only after MongoDB: Kafka is not "down" then */
        assert_string_equal(get_str(get(j, "kafka"), "status"), "not_started");
        json_object_put(j);
    }
}

/* Wrong SASL credentials or an untrusted CA (bus.c) are named in the Kafka
 * member while Kafka is not up, and only the cause (no reason text). */
static void test_http_health_names_the_kafka_security_cause(void **state) {
    static const struct {
        ww_kafka_cause_t cause;
        ww_kafka_state_t kstate;
        const char *want; /* NULL: no "error" member */
    } cases[] = {{WW_KAFKA_CAUSE_AUTH, WW_KAFKA_DOWN, "authentication"},
                 {WW_KAFKA_CAUSE_TLS, WW_KAFKA_DOWN, "tls"},
                 {WW_KAFKA_CAUSE_AUTH, WW_KAFKA_NOT_STARTED, "authentication"},
                 {WW_KAFKA_CAUSE_AUTH, WW_KAFKA_UP, NULL},
                 {WW_KAFKA_CAUSE_NONE, WW_KAFKA_DOWN, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ww_health_reset();
        ww_health_set_db_state(WW_DB_CONNECTED);
        if (cases[i].kstate != WW_KAFKA_NOT_STARTED) ww_health_set_kafka(cases[i].kstate, ww_clock_mono_ms());
        ww_health_set_kafka_cause(cases[i].cause);
        resp_t r;
        http_req(PORT(state), "GET", "/api/health", &r);
        json_object *j = parse_body(&r);
        json_object *kafka = get(j, "kafka"), *e = NULL;
        assert_string_equal(get_str(kafka, "status"), ww_kafka_state_name(cases[i].kstate));
        bool has = json_object_object_get_ex(kafka, "error", &e);
        if (cases[i].want) {
            assert_true(has);
            assert_string_equal(json_object_get_string(e), cases[i].want);
        } else {
            assert_false(has);
        }
        json_object_put(j);
    }
    ww_health_reset();
}

static void test_http_health_alias_and_query_string(void **state) {
    ww_health_set_db_state(WW_DB_CONNECTED);
    resp_t r;
    assert_int_equal(http_req(PORT(state), "GET", "/health", &r)->status, 200);
    json_object *j = parse_body(&r);
    assert_string_equal(get_str(get(j, "database"), "status"), "connected");
    json_object_put(j);
    assert_int_equal(http_req(PORT(state), "GET", "/api/health?verbose=1&x=%00", &r)->status, 200);
}

/* ---- /livez --------------------------------------------------------- */

static void test_http_livez_ok_then_stalled(void **state) {
    ww_http_t *h = start("127.0.0.1:0", 100);
    resp_t r;
    ww_health_progress(ww_clock_mono_ms());
    http_req(ww_http_port(h), "GET", "/livez", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    sleep_ms(250);
    http_req(ww_http_port(h), "GET", "/livez", &r);
    assert_int_equal(r.status, 503);
    json_object *j = parse_body(&r);
    assert_string_equal(get_str(j, "status"), "stalled");
    assert_true(get_int(j, "lastProgressMsAgo") >= 200);
    json_object_put(j);

    ww_health_progress(ww_clock_mono_ms()); /* the loop recovers */
    assert_int_equal(http_req(ww_http_port(h), "GET", "/livez", &r)->status, 200);
    ww_http_stop(h);
}

static void test_http_livez_counts_from_start_before_first_progress(void **state) {
    ww_http_t *h = start("127.0.0.1:0", 1000);
    resp_t r;
    ww_health_set_started(ww_clock_mono_ms()); /* just started, no progress yet */
    assert_int_equal(http_req(ww_http_port(h), "GET", "/livez", &r)->status, 200);
    ww_health_set_started(ww_clock_mono_ms() - 10000); /* started long ago, stuck in start-up */
    http_req(ww_http_port(h), "GET", "/livez", &r);
    assert_int_equal(r.status, 503);
    json_object *j = parse_body(&r);
    assert_true(get_int(j, "lastProgressMsAgo") >= 10000);
    json_object_put(j);
    ww_http_stop(h);
}

/* ---- /readyz -------------------------------------------------------- */

static void test_http_readyz_needs_db_group_and_running(void **state) {
    resp_t r;
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"database\",\"kafka\",\"startup\"]}");

    ww_health_set_db_state(WW_DB_CONNECTED);
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"kafka\",\"startup\"]}");

    ww_health_set_kafka(WW_KAFKA_UP, ww_clock_mono_ms());
    ww_health_set_consumer(true, 0, ww_clock_mono_ms()); /* in the group, nothing assigned: fine */
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"startup\"]}");

    ww_health_set_running(true);
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    ww_health_set_db_state(WW_DB_CONNECTING);
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"database\"]}");

    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_running(false);
    ww_health_set_consumer(false, 0, ww_clock_mono_ms() - 60000); /* left a minute ago */
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"kafka\",\"startup\"]}");
}

/* A Kafka outage makes the worker unready only once it lasted longer than
 * the threshold (10 s by default), and readiness returns with the brokers;
 * /api/health reports the state at once and keeps its database status code. */
static void test_http_readyz_turns_unready_after_kafka_down_threshold(void **state) {
    resp_t r;
    int64_t now = ww_clock_mono_ms();
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_running(true);
    ww_health_set_kafka(WW_KAFKA_UP, now - 120000);
    ww_health_set_consumer(true, 2, now - 120000);
    assert_int_equal(http_req(PORT(state), "GET", "/readyz", &r)->status, 200);

    ww_health_set_kafka(WW_KAFKA_DOWN, now - 9000); /* down for 9 s: tolerated */
    assert_int_equal(http_req(PORT(state), "GET", "/readyz", &r)->status, 200);
    http_req(PORT(state), "GET", "/api/health", &r);
    assert_int_equal(r.status, 200); /* the database decides the status code */
    json_object *j = parse_body(&r);
    assert_string_equal(get_str(j, "status"), "ok");
    assert_string_equal(get_str(get(j, "kafka"), "status"), "down");
    json_object_put(j);

    ww_health_set_kafka(WW_KAFKA_UP, now - 60000);
    ww_health_set_kafka(WW_KAFKA_DOWN, now - 11000); /* down for 11 s */
    ww_health_set_kafka(WW_KAFKA_DOWN, now);         /* a later report keeps the first time */
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"kafka\"]}");

    ww_health_set_kafka(WW_KAFKA_UP, ww_clock_mono_ms()); /* back */
    assert_int_equal(http_req(PORT(state), "GET", "/readyz", &r)->status, 200);
}

/* Out of the group (session lost): inGroup false at once, unready after the
 * threshold, ready again on the next assignment. */
static void test_http_readyz_turns_unready_after_group_lost(void **state) {
    resp_t r;
    int64_t now = ww_clock_mono_ms();
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_running(true);
    ww_health_set_kafka(WW_KAFKA_UP, now - 120000);
    ww_health_set_consumer(true, 4, now - 120000);
    ww_health_set_consumer(false, 0, now - 2000);
    assert_int_equal(http_req(PORT(state), "GET", "/readyz", &r)->status, 200);
    http_req(PORT(state), "GET", "/api/health", &r);
    json_object *j = parse_body(&r);
    assert_false(json_object_get_boolean(get(get(j, "kafka"), "inGroup")));
    json_object_put(j);

    ww_health_set_consumer(true, 4, now - 120000);
    ww_health_set_consumer(false, 0, now - 10001);
    ww_health_set_consumer(false, 0, now); /* still out: the clock does not restart */
    http_req(PORT(state), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"notReady\":[\"kafka\"]}");

    ww_health_set_consumer(true, 4, ww_clock_mono_ms());
    assert_int_equal(http_req(PORT(state), "GET", "/readyz", &r)->status, 200);
}

/* The threshold comes from the sidecar's configuration. */
static void test_http_readyz_kafka_threshold_is_configurable(void **state) {
    (void)state;
    ww_http_config_t cfg = {.listen = "127.0.0.1:0", .kafka_unready_after_ms = 60000};
    ww_error_t err;
    ww_http_t *h = ww_http_start(&cfg, &err);
    assert_non_null(h);
    int64_t now = ww_clock_mono_ms();
    ww_health_set_db_state(WW_DB_CONNECTED);
    ww_health_set_running(true);
    ww_health_set_consumer(true, 1, now - 120000);
    ww_health_set_kafka(WW_KAFKA_DOWN, now - 30000);
    resp_t r;
    assert_int_equal(http_req(ww_http_port(h), "GET", "/readyz", &r)->status, 200);
    ww_http_stop(h);
}

/* ---- /metrics, methods, paths --------------------------------------- */

static void test_http_metrics_content_type_and_build_info(void **state) {
    resp_t r;
    http_req(PORT(state), "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r.body, "\nwallet_worker_build_info{version=\"1.2.3-test\",librdkafka=\"2.3.0\","
                                   "libmongoc=\"1.24.2\"} 1\n"));
    assert_non_null(strstr(r.body, "# TYPE wallet_worker_http_requests_total counter\n"));
}

static void test_http_responses_are_counted_by_code(void **state) {
    resp_t r;
    http_req(PORT(state), "GET", "/livez", &r);
    http_req(PORT(state), "GET", "/livez", &r);
    http_req(PORT(state), "GET", "/nope", &r);
    http_req(PORT(state), "POST", "/livez", &r);
    assert_int_equal(ww_metrics_http_count(200), 2);
    assert_int_equal(ww_metrics_http_count(404), 1);
    assert_int_equal(ww_metrics_http_count(405), 1);
    http_req(PORT(state), "GET", "/metrics", &r);
    assert_non_null(strstr(r.body, "\nwallet_worker_http_requests_total{code=\"200\"} 2\n"));
    assert_non_null(strstr(r.body, "\nwallet_worker_http_requests_total{code=\"404\"} 1\n"));
}

static void test_http_head_has_headers_but_no_body(void **state) {
    static const char *const paths[] = {"/api/health", "/health", "/livez", "/readyz", "/metrics"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp_t get_r, head_r;
        http_req(PORT(state), "GET", paths[i], &get_r);
        http_req(PORT(state), "HEAD", paths[i], &head_r);
        assert_int_equal(head_r.status, get_r.status);
        assert_int_equal(head_r.body_len, 0);
        char a[256], b[256];
        assert_non_null(header(&head_r, "Content-Type", a, sizeof a));
        assert_string_equal(a, header(&get_r, "Content-Type", b, sizeof b));
        assert_non_null(header(&head_r, "Content-Length", a, sizeof a));
        assert_true(strtol(a, NULL, 10) > 0);
    }
}

static void test_http_other_methods_are_405_with_allow(void **state) {
    static const char *const methods[] = {"PUT", "DELETE", "PATCH", "OPTIONS"};
    resp_t r;
    static const char post[] = "POST /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                               "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    http_raw(PORT(state), post, sizeof post - 1, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD");
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        http_req(PORT(state), methods[i], "/metrics", &r);
        assert_int_equal(r.status, 405);
        assert_header(&r, "Allow", "GET, HEAD");
        assert_string_equal(r.body, "{\"error\":\"method not allowed\"}");
    }
}

static void test_http_unknown_path_is_404_json(void **state) {
    static const char *const paths[] = {"/", "/nope", "/api/health/", "/healthz", "/metrics/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp_t r;
        http_req(PORT(state), "GET", paths[i], &r);
        assert_int_equal(r.status, 404);
        assert_header(&r, "Content-Type", "application/json");
        assert_string_equal(r.body, "{\"error\":\"not found\"}");
    }
}

static void test_http_keep_alive_serves_several_requests(void **state) {
    int fd = connect_to(PORT(state));
    assert_true(fd >= 0);
    const char first[] = "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const char second[] = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(fd, first, sizeof first - 1, MSG_NOSIGNAL), (ssize_t)sizeof first - 1);
    sleep_ms(100); /* let the first response go out before the second request */
    send(fd, second, sizeof second - 1, MSG_NOSIGNAL);
    char buf[8192];
    size_t got = 0;
    for (ssize_t n; got < sizeof buf - 1 && (n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0;)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    const char *one = strstr(buf, "HTTP/1.1 200 OK\r\n");
    assert_non_null(one);
    if (!strstr(one + 1, "HTTP/1.1 503 ")) fail_msg("no second response on the connection:\n%s", buf);
}

static void test_http_refused_request_body_is_not_read(void **state) {
    /* Announces 1 GiB and sends none of it: the 405/404 must come at once. */
    static const char *const reqs[] = {
        "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n\r\n"};
    static const int want[] = {405, 404};
    for (int i = 0; i < 2; i++) {
        int64_t t0 = ww_clock_mono_ms();
        resp_t r;
        http_raw(PORT(state), reqs[i], strlen(reqs[i]), &r);
        assert_int_equal(r.status, want[i]);
        assert_true(ww_clock_mono_ms() - t0 < 2000);
    }
}

/* ---- limits ---------------------------------------------------------- */

static void assert_still_answers(uint16_t port) {
    resp_t r;
    int64_t deadline = ww_clock_mono_ms() + 5000;
    while (http_req(port, "GET", "/livez", &r)->status == 0 && ww_clock_mono_ms() < deadline) sleep_ms(50);
    assert_int_equal(r.status, 200);
}

static void test_http_long_url_is_refused(void **state) {
    size_t url_len = 20 * 1024;
    char *req = malloc(url_len + 128);
    assert_non_null(req);
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', url_len);
    size_t n = 5 + url_len;
    n += (size_t)snprintf(req + n, 128, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    resp_t r;
    http_raw(PORT(state), req, n, &r);
    if (r.status != 0 && r.status != 414 && r.status != 431) fail_msg("status %d for a 20 KiB URL", r.status);
    free(req);
    assert_still_answers(PORT(state));
}

static void test_http_huge_header_is_refused(void **state) {
    size_t value_len = 20 * 1024;
    char *req = malloc(value_len + 128);
    assert_non_null(req);
    size_t n = (size_t)snprintf(req, 128, "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
    memset(req + n, 'b', value_len);
    n += value_len;
    n += (size_t)snprintf(req + n, 128, "\r\nConnection: close\r\n\r\n");
    resp_t r;
    http_raw(PORT(state), req, n, &r);
    if (r.status != 0 && r.status != 414 && r.status != 431) fail_msg("status %d for a 20 KiB header", r.status);
    free(req);
    assert_still_answers(PORT(state));
}

static void test_http_survives_idle_connection_flood(void **state) {
    enum { IDLE = 100 };
    int fds[IDLE];
    int opened = 0;
    for (int i = 0; i < IDLE; i++) {
        fds[i] = connect_to(PORT(state));
        if (fds[i] >= 0) opened++;
    }
    assert_true(opened > WW_HTTP_DEFAULT_MAX_CONNECTIONS); /* beyond the limit */
    sleep_ms(200);
    for (int i = 0; i < IDLE; i++)
        if (fds[i] >= 0) close(fds[i]);
    assert_still_answers(PORT(state));
}

/* Slowloris: connections that send a byte now and then and never finish
 * their headers. They reset any idle timeout, so only a total deadline and
 * room kept for new requests keep probes answering (issue 14). */
typedef struct {
    uint16_t port;
    int n;
    int fds[128];
    atomic_bool stop;
    atomic_int reopened;
    pthread_t thread;
} slowloris_t;

/* A connection from 127.0.0.<host> that has sent the start of a request. */
static int slow_open(uint16_t port, int host) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)host - 1);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char start[] = "GET /livez HTTP/1.1\r\nHost: x\r\n";
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 ||
        send(fd, start, sizeof start - 1, MSG_NOSIGNAL) <= 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Every second, one more header byte on every connection; a connection the
 * server closed is opened again, as an attacker would. */
static void *slowloris_run(void *arg) {
    slowloris_t *s = arg;
    while (!atomic_load(&s->stop)) {
        for (int i = 0; i < s->n && !atomic_load(&s->stop); i++) {
            struct pollfd p = {.fd = s->fds[i], .events = POLLIN};
            char c;
            bool closed = s->fds[i] < 0 || (poll(&p, 1, 0) > 0 && recv(s->fds[i], &c, 1, MSG_DONTWAIT) <= 0) ||
                          send(s->fds[i], "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT) <= 0;
            if (closed) {
                if (s->fds[i] >= 0) close(s->fds[i]);
                s->fds[i] = slow_open(s->port, 1 + i % 6);
                atomic_fetch_add(&s->reopened, 1);
            }
        }
        for (int t = 0; t < 10 && !atomic_load(&s->stop); t++) sleep_ms(100);
    }
    return NULL;
}

static void slowloris_start(slowloris_t *s, uint16_t port, int n) {
    memset(s, 0, sizeof *s);
    s->port = port;
    s->n = n;
    int opened = 0;
    for (int i = 0; i < n; i++) opened += (s->fds[i] = slow_open(port, 1 + i % 6)) >= 0;
    assert_int_equal(opened, n); /* the kernel's backlog takes what the server does not */
    assert_int_equal(pthread_create(&s->thread, NULL, slowloris_run, s), 0);
}

static void slowloris_stop(slowloris_t *s) {
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->n; i++)
        if (s->fds[i] >= 0) close(s->fds[i]);
}

/* One GET /livez from 127.0.0.1 (where some of the slow connections come
 * from too): the status, or 0 when nothing came back within limit_ms. */
static int probe_livez(uint16_t port, int64_t limit_ms, int64_t *took_ms) {
    int64_t t0 = ww_clock_mono_ms();
    int status = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t sent = 0;
    char buf[1024];
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) goto done;
    for (;;) {
        int64_t left = t0 + limit_ms - ww_clock_mono_ms();
        if (left <= 0) goto done;
        struct pollfd p = {.fd = fd, .events = sent < sizeof req - 1 ? POLLOUT : POLLIN};
        if (poll(&p, 1, (int)left) <= 0) continue;
        if (sent < sizeof req - 1) {
            ssize_t n = send(fd, req + sent, sizeof req - 1 - sent, MSG_NOSIGNAL);
            if (n <= 0 && errno != EAGAIN) goto done;
            if (n > 0) sent += (size_t)n;
            continue;
        }
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n < 0 && errno == EAGAIN) continue;
        if (n <= 0) break;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") || got == sizeof buf - 1) break;
    }
    buf[got] = '\0';
    if (strncmp(buf, "HTTP/1.1 ", 9) == 0) status = (int)strtol(buf + 9, NULL, 10);
done:
    close(fd);
    *took_ms = ww_clock_mono_ms() - t0;
    return status;
}

static void test_http_livez_answers_under_slowloris(void **state) {
    ww_health_progress(ww_clock_mono_ms());
    slowloris_t s;
    slowloris_start(&s, PORT(state), 90);
    sleep_ms(2500); /* the attack runs: every connection has trickled */
    for (int i = 0; i < 5; i++) {
        ww_health_progress(ww_clock_mono_ms());
        int64_t took;
        int status = probe_livez(PORT(state), 3000, &took);
        if (status != 200) {
            slowloris_stop(&s);
            fail_msg("probe %d under 90 slow connections: status %d after %" PRId64 " ms", i + 1, status, took);
        }
        sleep_ms(1000); /* a kubelet's period, shortened */
    }
    slowloris_stop(&s);
}

/* A request must be complete within the deadline however steadily it
 * trickles in: the connection is closed, not kept alive by each byte. */
static void test_http_trickled_request_is_closed_at_the_deadline(void **state) {
    (void)state;
    ww_http_config_t cfg = {.listen = "127.0.0.1:0", .request_timeout_ms = 1000};
    ww_error_t err;
    ww_http_t *h = ww_http_start(&cfg, &err);
    assert_non_null(h);
    int fd = slow_open(ww_http_port(h), 1);
    assert_true(fd >= 0);
    int64_t t0 = ww_clock_mono_ms();
    bool closed = false;
    while (!closed && ww_clock_mono_ms() - t0 < 5000) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char c;
        closed = (poll(&p, 1, 200) > 0 && recv(fd, &c, 1, MSG_DONTWAIT) <= 0) ||
                 send(fd, "X", 1, MSG_NOSIGNAL) <= 0;
    }
    int64_t took = ww_clock_mono_ms() - t0;
    close(fd);
    ww_http_stop(h);
    assert_true(closed);
    if (took < 900 || took > 2500) fail_msg("closed after %" PRId64 " ms, deadline 1000 ms", took);
}

static void test_http_stop_is_prompt_with_open_connections(void **state) {
    ww_http_t *h = start("127.0.0.1:0", 30000);
    int fds[5];
    for (int i = 0; i < 5; i++) fds[i] = connect_to(ww_http_port(h));
    const char partial[] = "GET /livez HTTP/1.1\r\nHost: x\r\n"; /* never finished */
    assert_true(send(fds[0], partial, sizeof partial - 1, MSG_NOSIGNAL) > 0);
    sleep_ms(50);
    int64_t t0 = ww_clock_mono_ms();
    ww_http_stop(h);
    assert_true(ww_clock_mono_ms() - t0 < 1000);
    for (int i = 0; i < 5; i++)
        if (fds[i] >= 0) close(fds[i]);
    ww_http_stop(NULL); /* no-op */
}

static void test_http_stop_releases_the_port(void **state) {
    ww_http_t *h = start("127.0.0.1:0", 30000);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)ww_http_port(h));
    ww_http_stop(h);
    h = start(listen, 30000);
    resp_t r;
    assert_int_equal(http_req(ww_http_port(h), "GET", "/livez", &r)->status, 200);
    ww_http_stop(h);
}

/* ---- addresses ------------------------------------------------------ */

static void test_http_parse_listen_addresses(void **state) {
    static const struct {
        const char *in;
        int family;
        const char *host;
        uint16_t port;
    } good[] = {{"127.0.0.1:8080", 4, "127.0.0.1", 8080}, {"0.0.0.0:8080", 4, "0.0.0.0", 8080},
                {"[::1]:8080", 6, "::1", 8080},          {"[::]:9", 6, "::", 9},
                {":8080", 0, "", 8080},                  {":0", 0, "", 0},
                {"localhost:65535", 4, "127.0.0.1", 65535}};
    static const char *const bad[] = {"",          "8080",         "127.0.0.1",      "127.0.0.1:",
                                      "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:80a", "127.0.0.1:123456",
                                      "::1:8080",  "[::1]8080",    "[::1",           "[]:80",
                                      "example.com:80", "1.2.3.4.5:80", "[127.0.0.1]:80", " :80"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ww_http_listen_addr_t a;
        ww_error_t err;
        if (!ww_http_parse_listen(good[i].in, &a, &err)) fail_msg("rejected %s: %s", good[i].in, err.message);
        assert_int_equal(a.family, good[i].family);
        assert_string_equal(a.host, good[i].host);
        assert_int_equal(a.port, good[i].port);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ww_http_listen_addr_t a;
        ww_error_t err;
        ww_error_clear(&err);
        if (ww_http_parse_listen(bad[i], &a, &err)) fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(err.domain, WW_ERR_CONFIG);
    }
    ww_http_listen_addr_t a;
    assert_false(ww_http_parse_listen(NULL, &a, NULL));
}

static void test_http_all_interfaces_listen(void **state) {
    ww_http_t *h = start(":0", 30000); /* dual-stack, or IPv4 when IPv6 is off */
    resp_t r;
    assert_int_equal(http_req(ww_http_port(h), "GET", "/livez", &r)->status, 200);
    ww_http_stop(h);
}

static void test_http_start_errors(void **state) {
    ww_http_config_t cfg = {.listen = "example.com:80"};
    ww_error_t err;
    ww_error_clear(&err);
    assert_null(ww_http_start(&cfg, &err));
    assert_int_equal(err.domain, WW_ERR_CONFIG);

    ww_http_t *h = start("127.0.0.1:0", 30000);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)ww_http_port(h));
    cfg.listen = listen;
    ww_error_clear(&err);
    assert_null(ww_http_start(&cfg, &err));
    assert_int_equal(err.domain, WW_ERR_HTTP);
    assert_int_equal(err.code, EADDRINUSE);
    assert_non_null(strstr(err.message, listen));
    ww_http_stop(h);
}

int main(void) {
    ww_log_set_level(WW_LOG_WARN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_http_health_ok_when_db_connected),
        T(test_http_health_degraded_unless_connected),
        T(test_http_health_names_the_kafka_security_cause),
        T(test_http_health_alias_and_query_string),
        T(test_http_livez_ok_then_stalled),
        T(test_http_livez_counts_from_start_before_first_progress),
        T(test_http_readyz_needs_db_group_and_running),
        T(test_http_readyz_turns_unready_after_kafka_down_threshold),
        T(test_http_readyz_turns_unready_after_group_lost),
        T(test_http_readyz_kafka_threshold_is_configurable),
        T(test_http_metrics_content_type_and_build_info),
        T(test_http_responses_are_counted_by_code),
        T(test_http_head_has_headers_but_no_body),
        T(test_http_other_methods_are_405_with_allow),
        T(test_http_unknown_path_is_404_json),
        T(test_http_keep_alive_serves_several_requests),
        T(test_http_refused_request_body_is_not_read),
        T(test_http_long_url_is_refused),
        T(test_http_huge_header_is_refused),
        T(test_http_survives_idle_connection_flood),
        T(test_http_livez_answers_under_slowloris),
        T(test_http_trickled_request_is_closed_at_the_deadline),
        T(test_http_stop_is_prompt_with_open_connections),
        T(test_http_stop_releases_the_port),
        T(test_http_parse_listen_addresses),
        T(test_http_all_interfaces_listen),
        T(test_http_start_errors),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
