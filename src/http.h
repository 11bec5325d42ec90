/* http.h: the HTTP sidecar: health, liveness, readiness and metrics.
 *
 * Endpoints (GET and HEAD; any other method is 405 with "Allow: GET, HEAD";
 * query strings are ignored; unknown paths are 404 {"error":"not found"}):
 *   /api/health, /health  200 {"status":"ok",...} when MongoDB is connected,
 *                         else 503 {"status":"degraded",...}; both carry
 *                         "timestamp" (ISO-8601 UTC, ms) and
 *                         "database":{"status":<name>,"readyState":<0..3>}
 *                         (the Node backend's contract) plus "kafka"
 *                         ({"status":"up"|"down"|"not_started","inGroup",
 *                         "assignedPartitions"}: reported, never decisive),
 *                         "version" and "uptimeSeconds".
 *   /livez                200 {"status":"ok"} while the consume loop progressed
 *                         within the liveness threshold (ww_health_live), else
 *                         503 {"status":"stalled","lastProgressMsAgo":N}.
 *   /readyz               200 {"status":"ok"} when MongoDB is connected, Kafka
 *                         is ready (ww_health_kafka_ready: brokers reachable
 *                         and the member in its group, outages shorter than
 *                         the Kafka unready threshold tolerated) and the
 *                         worker is running;
 *                         else 503 {"status":"not_ready","notReady":[...]}
 *                         naming "database", "kafka" and/or "startup".
 *   /metrics              the metrics registry, text format 0.0.4.
 * Handlers read only health.h and metrics.h: they never touch Kafka or MongoDB.
 * Every response the handler sends is counted in
 * wallet_worker_http_requests_total{code}. */
#ifndef WW_HTTP_H
#define WW_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define WW_HTTP_DEFAULT_LISTEN ":8080"
#define WW_HTTP_DEFAULT_LIVENESS_MS 30000
#define WW_HTTP_DEFAULT_KAFKA_UNREADY_MS 10000
#define WW_HTTP_DEFAULT_MAX_CONNECTIONS 64
#define WW_HTTP_DEFAULT_MAX_PER_IP 16
#define WW_HTTP_DEFAULT_TIMEOUT_S 10
#define WW_HTTP_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define WW_HTTP_MEMORY_LIMIT (16 * 1024) /* per connection: request line + headers */

/* Zero/NULL fields take the defaults above. */
typedef struct {
    /* "127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080", "localhost:8080", or
     * ":8080" for all interfaces (IPv6 dual-stack, IPv4 if IPv6 is off).
     * Port 0 picks an ephemeral port (see ww_http_port). */
    const char *listen;
    int64_t liveness_threshold_ms;
    int64_t kafka_unready_after_ms; /* /readyz tolerates a Kafka outage this long */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned connection_timeout_s; /* idle connections are closed after this */
    int64_t request_timeout_ms;    /* a request (headers, body, response) must be done within this */
    const char *version;           /* reported by /api/health; copied */
} ww_http_config_t;

/* A parsed listen address: family is 4, 6, or 0 for all interfaces; host is
 * the numeric address ("" for all interfaces). */
typedef struct {
    int family;
    char host[48];
    uint16_t port;
} ww_http_listen_addr_t;

/* Parses cfg->listen's syntax (numeric addresses only, plus "localhost").
 * Returns false with a WW_ERR_CONFIG error on anything else. */
bool ww_http_parse_listen(const char *listen, ww_http_listen_addr_t *out, ww_error_t *error);

typedef struct ww_http ww_http_t;

/* Binds the address and starts the sidecar's thread. Returns a handle the
 * caller owns and releases with ww_http_stop, or NULL with error set
 * (WW_ERR_CONFIG for a bad setting, WW_ERR_HTTP for bind/listen/start). */
ww_http_t *ww_http_start(const ww_http_config_t *cfg, ww_error_t *error);

/* The bound port (useful with port 0); 0 for NULL. */
uint16_t ww_http_port(const ww_http_t *http);

/* Closes the listen socket and every connection, joins the thread and frees
 * the handle. NULL is a no-op. */
void ww_http_stop(ww_http_t *http);

#endif
